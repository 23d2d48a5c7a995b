//! A VM's window: Run / Pause / Shut Down, Send Key, Take Screenshot, and
//! three views (graphical console, serial console, details) with a status
//! line at the bottom.

use crate::connection::{Frame, RunState};
use crate::model::{Action, Model};
use crate::ui::console::{send_key_combos, ConsoleView};
use crate::ui::details::DetailsView;
use crate::ui::{own_window, pause_or_resume, serial, shutdown_menu};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Console,
    Serial,
    Details,
}

/// One open VM window.
pub struct VmWindow {
    pub vm: String,
    pub tab: Tab,
    pub console: ConsoleView,
    pub details: DetailsView,
}

impl VmWindow {
    pub fn new(vm: &str) -> VmWindow {
        VmWindow {
            vm: vm.to_string(),
            tab: Tab::Console,
            console: ConsoleView::default(),
            details: DetailsView::default(),
        }
    }

    pub fn title(&self) -> String {
        format!("{} - Virtual Machine", self.vm)
    }

    /// Draws the window, its own OS window where the backend has them
    /// (see [`own_window`]).
    pub fn show(&mut self, ctx: &egui::Context, model: &mut Model) -> Vec<Action> {
        let mut actions = Vec::new();
        let open = own_window(
            ctx,
            egui::Id::unique(("vm-window", &self.vm)),
            self.title(),
            [800.0, 560.0],
            [420.0, 300.0],
            |ui| actions.extend(self.show_inside(ui, model)),
        );
        if !open {
            actions.push(Action::CloseWindow(self.vm.clone()));
        }
        actions
    }

    /// The window's toolbar, view tabs, status line and current view, drawn
    /// into `ui` (the snapshot tests draw just this).
    pub fn show_inside(&mut self, ui: &mut egui::Ui, model: &mut Model) -> Vec<Action> {
        let mut actions = Vec::new();
        let frame: Option<Frame> = model.conn.console(&self.vm);
        let state = model.state(&self.vm);
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!state.is_active(), egui::Button::new("Run"))
                .clicked()
            {
                actions.push(Action::Run(self.vm.clone()));
            }
            let (label, act) = pause_or_resume(&self.vm, state);
            if ui
                .add_enabled(state.is_controllable(), egui::Button::new(label))
                .clicked()
            {
                actions.push(act);
            }
            if let Some(a) = shutdown_menu(ui, &self.vm, state) {
                actions.push(a);
            }
            ui.add_enabled_ui(state == RunState::Running, |ui| {
                ui.menu_button("Send Key", |ui| {
                    for (label, keys) in send_key_combos() {
                        if ui.button(label).clicked() {
                            actions.push(Action::SendKeys(self.vm.clone(), keys));
                        }
                    }
                });
            });
            if ui
                .add_enabled(frame.is_some(), egui::Button::new("Take Screenshot"))
                .clicked()
            {
                actions.push(Action::Screenshot(self.vm.clone()));
            }
        });
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tab, Tab::Console, "Console");
            ui.selectable_value(&mut self.tab, Tab::Serial, "Serial");
            ui.selectable_value(&mut self.tab, Tab::Details, "Details");
            if self.tab == Tab::Serial {
                ui.separator();
                if ui
                    .button("Open in a new window")
                    .on_hover_text("The serial console in a terminal window of its own")
                    .clicked()
                {
                    actions.push(Action::OpenSerialWindow(self.vm.clone()));
                }
            }
        });
        ui.separator();
        egui::Panel::bottom(("vm-status", &self.vm)).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(format!("Status: {}", state.label()));
                if let Some(e) = model.runtime.get(&self.vm).and_then(|r| r.error.as_ref()) {
                    ui.colored_label(crate::ui::wizard::ERROR_COLOR, e);
                } else if self.console.captured && self.tab == Tab::Console {
                    ui.label("Press Ctrl+Alt to release the keyboard.");
                }
            });
        });
        egui::CentralPanel::default().show(ui, |ui| match self.tab {
            Tab::Console => {
                actions.extend(self.console.show(ui, &self.vm, frame.as_ref()));
            }
            Tab::Serial => {
                let term = &mut model.runtime_mut(&self.vm).terminal;
                if let Some(a) = serial::show(ui, &self.vm, term) {
                    actions.push(a);
                }
            }
            Tab::Details => {
                if let Some(def) = model.definition(&self.vm).cloned() {
                    let editable = !state.is_active();
                    if let Some(a) = self.details.show(ui, &def, &model.host, editable) {
                        actions.push(a);
                    }
                }
            }
        });
        actions
    }
}
