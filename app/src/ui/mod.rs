//! The views. Each draws from the model and returns what the user asked for
//! as [`Action`]s; `gui::App::apply` carries them out.

pub mod console;
pub mod details;
pub mod manager;
pub mod serial;
pub mod vm_window;
pub mod wizard;

use crate::connection::RunState;
use crate::model::Action;
use egui::{Key, KeyboardShortcut, Modifiers};

pub const SC_NEW: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::N);
pub const SC_OPEN: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
pub const SC_RUN: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::R);
pub const SC_PAUSE: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::P);
const CS: Modifiers = Modifiers {
    alt: false,
    ctrl: true,
    shift: true,
    mac_cmd: false,
    command: true,
};
pub const SC_SHUTDOWN: KeyboardShortcut = KeyboardShortcut::new(CS, Key::S);
pub const SC_REBOOT: KeyboardShortcut = KeyboardShortcut::new(CS, Key::R);
pub const SC_RESET: KeyboardShortcut = KeyboardShortcut::new(CS, Key::T);
pub const SC_OFF: KeyboardShortcut = KeyboardShortcut::new(CS, Key::F);
pub const SC_DELETE: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::Delete);
pub const SC_QUIT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Q);

/// The toggle between Pause and Resume: its label and what it does.
pub fn pause_or_resume(vm: &str, state: RunState) -> (&'static str, Action) {
    if state == RunState::Paused {
        ("Resume", Action::Resume(vm.to_string()))
    } else {
        ("Pause", Action::Pause(vm.to_string()))
    }
}

/// The Shut Down menu: Shut Down (ACPI), Reboot, Force Reset, Force Off.
pub fn shutdown_menu(ui: &mut egui::Ui, vm: &str, state: RunState) -> Option<Action> {
    shutdown_menu_button(ui, egui::Button::new("Shut Down"), vm, state)
}

/// The Shut Down menu opened from `button`, so a toolbar can draw it in the
/// same style as its other buttons.
pub fn shutdown_menu_button(
    ui: &mut egui::Ui,
    button: egui::Button<'_>,
    vm: &str,
    state: RunState,
) -> Option<Action> {
    let mut action = None;
    ui.add_enabled_ui(state.is_controllable(), |ui| {
        egui::containers::menu::MenuButton::from_button(button).ui(ui, |ui| {
            let ctx = ui.ctx().clone();
            let item = |ui: &mut egui::Ui, label: &str, sc: &KeyboardShortcut| {
                ui.add(egui::Button::new(label).shortcut_text(ctx.format_shortcut(sc)))
                    .clicked()
            };
            if item(ui, "Shut Down (ACPI)", &SC_SHUTDOWN) {
                action = Some(Action::Shutdown(vm.into()));
            }
            if item(ui, "Reboot", &SC_REBOOT) {
                action = Some(Action::Reboot(vm.into()));
            }
            if item(ui, "Force Reset", &SC_RESET) {
                action = Some(Action::ForceReset(vm.into()));
            }
            if item(ui, "Force Off", &SC_OFF) {
                action = Some(Action::ForceOff(vm.into()));
            }
        });
    });
    action
}

/// The colour of a state's dot in the list.
pub fn state_color(state: RunState) -> egui::Color32 {
    match state {
        RunState::Off => egui::Color32::from_gray(0x90),
        RunState::Starting => egui::Color32::from_rgb(0x40, 0x90, 0xd0),
        RunState::Running => egui::Color32::from_rgb(0x3c, 0xb0, 0x4c),
        RunState::Paused => egui::Color32::from_rgb(0xe0, 0xa0, 0x20),
        RunState::Crashed | RunState::FailedToStart => egui::Color32::from_rgb(0xd0, 0x30, 0x30),
    }
}

/// Draws `contents` in a window of its own and returns false once the user
/// has closed it. Under eframe that is an OS window (an egui immediate
/// viewport); where the backend has a single window (egui_kittest) it is an
/// egui window inside the main one, with the same contents.
pub fn own_window(
    ctx: &egui::Context,
    id: egui::Id,
    title: String,
    size: [f32; 2],
    min_size: [f32; 2],
    contents: impl FnOnce(&mut egui::Ui),
) -> bool {
    let mut open = true;
    if ctx.embed_viewports() {
        egui::Window::new(title)
            .id(id)
            .open(&mut open)
            .default_size(size)
            .min_size(min_size)
            .show(ctx, contents);
    } else {
        let builder = egui::ViewportBuilder::default()
            .with_title(title)
            .with_app_id("vireo")
            .with_inner_size(size)
            .with_min_inner_size(min_size);
        let mut contents = Some(contents);
        ctx.show_viewport_immediate(egui::ViewportId(id), builder, |ui, _class| {
            if ui.input(|i| i.viewport().close_requested()) {
                open = false;
            }
            egui::CentralPanel::default().show(ui, |ui| {
                if let Some(c) = contents.take() {
                    c(ui)
                }
            });
        });
    }
    open
}
