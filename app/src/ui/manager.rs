//! The main window, like virt-manager's Manager: a menu bar, a toolbar
//! (New, Open, Run, Pause/Resume, Shut Down menu, Delete), the VM list
//! (name and state, a CPU% sparkline, memory), a status bar, and the
//! Delete confirmation with its "also delete disk images" checkbox.

use crate::connection::RunState;
use crate::library::LibraryEntry;
use crate::model::{Action, Model};
use crate::ui::wizard::ERROR_COLOR;
use crate::ui::{self, shutdown_menu, state_color};
use egui::{Color32, RichText, Sense, Stroke, Vec2};

/// The Delete confirmation dialog's state.
pub struct DeleteDialog {
    pub vm: String,
    pub delete_disks: bool,
}

/// Keyboard shortcuts of the main window (when nothing else wants keys).
pub fn shortcuts(ctx: &egui::Context, model: &Model) -> Vec<Action> {
    let mut out = Vec::new();
    if ctx.egui_wants_keyboard_input() {
        return out;
    }
    let sel = model.selected.clone();
    ctx.input_mut(|i| {
        if i.consume_shortcut(&ui::SC_NEW) {
            out.push(Action::NewVmWizard);
        }
        if i.consume_shortcut(&ui::SC_QUIT) {
            out.push(Action::Quit);
        }
        let Some(vm) = sel else { return };
        let state = model.state(&vm);
        // Ctrl+Shift first: consume_shortcut matches Ctrl+R for Ctrl+Shift+R too.
        let sc: [(&egui::KeyboardShortcut, Action); 9] = [
            (&ui::SC_SHUTDOWN, Action::Shutdown(vm.clone())),
            (&ui::SC_REBOOT, Action::Reboot(vm.clone())),
            (&ui::SC_RESET, Action::ForceReset(vm.clone())),
            (&ui::SC_OFF, Action::ForceOff(vm.clone())),
            (&ui::SC_OPEN, Action::OpenWindow(vm.clone())),
            (
                &egui::KeyboardShortcut::new(egui::Modifiers::NONE, egui::Key::Enter),
                Action::OpenWindow(vm.clone()),
            ),
            (&ui::SC_RUN, Action::Run(vm.clone())),
            (&ui::SC_PAUSE, ui::pause_or_resume(&vm, state).1),
            (&ui::SC_DELETE, Action::AskDelete(vm.clone())),
        ];
        for (s, a) in sc {
            if i.consume_shortcut(s) {
                out.push(a);
            }
        }
    });
    out
}

/// Draws the main window's panels into `ui`.
pub fn show(ui: &mut egui::Ui, model: &Model) -> Vec<Action> {
    let mut actions = Vec::new();
    let sel = model.selected.clone();
    let sel_state = sel.as_deref().map(|s| model.state(s));
    let sel_is_vm = sel
        .as_deref()
        .is_some_and(|s| model.definition(s).is_some());
    let ctx = ui.ctx().clone();
    let fmt = |s: &egui::KeyboardShortcut| ctx.format_shortcut(s);

    egui::Panel::top("menubar").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui
                    .add(egui::Button::new("New VM…").shortcut_text(fmt(&ui::SC_NEW)))
                    .clicked()
                {
                    actions.push(Action::NewVmWizard);
                }
                if ui
                    .add(egui::Button::new("Quit").shortcut_text(fmt(&ui::SC_QUIT)))
                    .clicked()
                {
                    actions.push(Action::Quit);
                }
            });
            ui.menu_button("Virtual Machine", |ui| {
                let Some(vm) = sel.clone().filter(|_| sel_is_vm) else {
                    ui.label("Select a VM first.");
                    return;
                };
                let st = sel_state.unwrap_or(RunState::Off);
                if ui
                    .add(egui::Button::new("Open").shortcut_text(fmt(&ui::SC_OPEN)))
                    .clicked()
                {
                    actions.push(Action::OpenWindow(vm.clone()));
                }
                if ui.button("Serial Console").clicked() {
                    actions.push(Action::OpenSerialWindow(vm.clone()));
                }
                if ui
                    .add_enabled(
                        !st.is_active(),
                        egui::Button::new("Run").shortcut_text(fmt(&ui::SC_RUN)),
                    )
                    .clicked()
                {
                    actions.push(Action::Run(vm.clone()));
                }
                let (l, a) = ui::pause_or_resume(&vm, st);
                if ui
                    .add_enabled(
                        st.is_controllable(),
                        egui::Button::new(l).shortcut_text(fmt(&ui::SC_PAUSE)),
                    )
                    .clicked()
                {
                    actions.push(a);
                }
                if let Some(a) = shutdown_menu(ui, &vm, st) {
                    actions.push(a);
                }
                if ui
                    .add(egui::Button::new("Delete…").shortcut_text(fmt(&ui::SC_DELETE)))
                    .clicked()
                {
                    actions.push(Action::AskDelete(vm.clone()));
                }
            });
        });
    });

    egui::Panel::top("toolbar").show(ui, |ui| {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let big = |t: &str| {
                egui::Button::new(RichText::new(t).size(15.0)).min_size(Vec2::new(64.0, 28.0))
            };
            if ui
                .add(big("New"))
                .on_hover_text(format!("Create a new VM ({})", fmt(&ui::SC_NEW)))
                .clicked()
            {
                actions.push(Action::NewVmWizard);
            }
            ui.separator();
            let st = sel_state.unwrap_or(RunState::Off);
            let vm = sel.clone().unwrap_or_default();
            if ui
                .add_enabled(sel_is_vm, big("Open"))
                .on_hover_text(format!("Open the VM's window ({})", fmt(&ui::SC_OPEN)))
                .clicked()
            {
                actions.push(Action::OpenWindow(vm.clone()));
            }
            if ui
                .add_enabled(sel_is_vm && !st.is_active(), big("Run"))
                .on_hover_text(format!("Start the VM ({})", fmt(&ui::SC_RUN)))
                .clicked()
            {
                actions.push(Action::Run(vm.clone()));
            }
            let (l, a) = ui::pause_or_resume(&vm, st);
            if ui
                .add_enabled(sel_is_vm && st.is_controllable(), big(l))
                .on_hover_text(format!("{l} the VM ({})", fmt(&ui::SC_PAUSE)))
                .clicked()
            {
                actions.push(a);
            }
            // The same style as its neighbours: a menu button of its own
            // would be drawn smaller.
            let shut = if sel_is_vm { st } else { RunState::Off };
            if let Some(a) = ui::shutdown_menu_button(ui, big("Shut Down"), &vm, shut) {
                actions.push(a);
            }
            ui.separator();
            if ui
                .add_enabled(sel_is_vm && !st.is_active(), big("Delete"))
                .on_hover_text(format!("Delete the VM ({})", fmt(&ui::SC_DELETE)))
                .clicked()
            {
                actions.push(Action::AskDelete(vm.clone()));
            }
        });
        ui.add_space(4.0);
    });

    egui::Panel::bottom("statusbar").show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.label(model.conn.label());
            ui.separator();
            let running = model
                .runtime
                .values()
                .filter(|r| r.state.is_controllable())
                .count();
            ui.label(format!("{} VMs, {running} running", model.entries.len()));
            if let Some(n) = &model.notice {
                ui.separator();
                ui.colored_label(ERROR_COLOR, n);
                if ui.small_button("Dismiss").clicked() {
                    actions.push(Action::DismissNotice);
                }
            }
        });
    });

    egui::CentralPanel::default().show(ui, |ui| {
        vm_list(ui, model, &mut actions);
    });
    actions
}

const ROW_H: f32 = 44.0;
const COL_CPU: f32 = 0.55;
const COL_MEM: f32 = 0.80;

fn vm_list(ui: &mut egui::Ui, model: &Model, actions: &mut Vec<Action>) {
    let width = ui.available_width();
    // Header
    let (hdr, _) = ui.allocate_exact_size(Vec2::new(width, 22.0), Sense::hover());
    let p = ui.painter();
    let hfont = egui::FontId::proportional(13.0);
    let hcol = ui.visuals().strong_text_color();
    for (x, t) in [(0.0, "Name"), (COL_CPU, "CPU usage"), (COL_MEM, "Memory")] {
        p.text(
            hdr.left_center() + Vec2::new(8.0 + x * width, 0.0),
            egui::Align2::LEFT_CENTER,
            t,
            hfont.clone(),
            hcol,
        );
    }
    p.hline(
        hdr.x_range(),
        hdr.bottom(),
        ui.visuals().widgets.noninteractive.bg_stroke,
    );

    if model.entries.is_empty() {
        ui.add_space(40.0);
        ui.vertical_centered(|ui| {
            ui.label(RichText::new("No virtual machines yet").size(18.0).strong());
            ui.label(format!(
                "Click New (or press {}) to create one.",
                ui.ctx().format_shortcut(&ui::SC_NEW)
            ));
        });
        return;
    }
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for e in &model.entries {
                row(ui, model, e, width, actions);
            }
        });
}

fn row(ui: &mut egui::Ui, model: &Model, e: &LibraryEntry, width: f32, actions: &mut Vec<Action>) {
    let name = e.name();
    let selected = model.selected.as_deref() == Some(name.as_str());
    let (rect, resp) = ui.allocate_exact_size(Vec2::new(width, ROW_H), Sense::click());
    resp.widget_info(|| egui::WidgetInfo::selected(egui::Role::ListItem, true, selected, &name));
    if resp.clicked() {
        actions.push(Action::Select(name.clone()));
    }
    if resp.double_clicked() && matches!(e, LibraryEntry::Vm(_)) {
        actions.push(Action::OpenWindow(name.clone()));
    }
    let v = ui.visuals().clone();
    let p = ui.painter_at(rect);
    if selected {
        p.rect_filled(rect, 0.0, v.selection.bg_fill);
    } else if resp.hovered() {
        p.rect_filled(rect, 0.0, v.widgets.hovered.weak_bg_fill);
    }
    let text = if selected {
        v.selection.stroke.color
    } else {
        v.text_color()
    };
    let weak = if selected { text } else { v.weak_text_color() };
    // The row's labels go in a child Ui over the row: placing them in `ui`
    // would move its cursor, and rows would overlap.
    let ui = &mut ui.new_child(egui::UiBuilder::new().max_rect(rect));
    let x0 = rect.left() + 8.0;
    match e {
        LibraryEntry::Vm(def) => {
            let rt = model.runtime.get(&name);
            let state = model.state(&name);
            p.circle_filled(
                egui::pos2(x0 + 8.0, rect.center().y),
                6.0,
                state_color(state),
            );
            let sub = match rt.and_then(|r| r.error.as_ref()) {
                Some(err) if state.is_failure() => format!("{}: {err}", state.label()),
                _ => state.label().to_string(),
            };
            let sub_color = if state.is_failure() {
                ERROR_COLOR
            } else {
                weak
            };
            let text_w = COL_CPU * width - 40.0;
            let top = rect.top();
            // The name is painted: the row itself carries it as its label.
            p.text(
                egui::pos2(x0 + 24.0, top + 13.0),
                egui::Align2::LEFT_CENTER,
                &name,
                egui::FontId::proportional(15.0),
                text,
            );
            text_at(
                ui,
                egui::pos2(x0 + 24.0, top + 23.0),
                text_w,
                RichText::new(sub).size(12.0).color(sub_color),
            );
            // CPU sparkline
            let spark = egui::Rect::from_min_size(
                egui::pos2(rect.left() + COL_CPU * width, rect.top() + 8.0),
                Vec2::new((COL_MEM - COL_CPU) * width - 24.0, ROW_H - 16.0),
            );
            p.rect_stroke(
                spark,
                2.0,
                Stroke::new(1.0, v.widgets.noninteractive.bg_stroke.color),
                egui::StrokeKind::Inside,
            );
            if let Some(rt) = rt {
                let n = crate::model::CPU_HISTORY as f32;
                let pts: Vec<egui::Pos2> = rt
                    .cpu_history
                    .iter()
                    .enumerate()
                    .map(|(i, pct)| {
                        let off = n - rt.cpu_history.len() as f32 + i as f32;
                        egui::pos2(
                            spark.left() + 1.0 + off / (n - 1.0) * (spark.width() - 2.0),
                            spark.bottom() - 1.0 - pct / 100.0 * (spark.height() - 2.0),
                        )
                    })
                    .collect();
                if pts.len() >= 2 {
                    p.add(egui::Shape::line(
                        pts,
                        Stroke::new(1.5, Color32::from_rgb(0x3a, 0x8e, 0xe6)),
                    ));
                }
                if let Some(last) = rt.cpu_history.back().filter(|_| state.is_active()) {
                    p.text(
                        spark.right_center() + Vec2::new(-4.0, 0.0),
                        egui::Align2::RIGHT_CENTER,
                        format!("{last:.0}%"),
                        egui::FontId::proportional(11.0),
                        weak,
                    );
                }
            }
            text_at(
                ui,
                egui::pos2(rect.left() + COL_MEM * width + 8.0, rect.top() + 12.0),
                (1.0 - COL_MEM) * width - 16.0,
                RichText::new(format_mib(def.spec.memory_mib))
                    .size(14.0)
                    .color(text),
            );
        }
        LibraryEntry::Broken { path, message } => {
            p.circle_filled(egui::pos2(x0 + 8.0, rect.center().y), 6.0, ERROR_COLOR);
            let text_w = width - 180.0;
            let top = rect.top();
            text_at(
                ui,
                egui::pos2(x0 + 24.0, top + 3.0),
                text_w,
                RichText::new(format!("{name} (can't be loaded)"))
                    .size(15.0)
                    .color(ERROR_COLOR),
            );
            text_at(
                ui,
                egui::pos2(x0 + 24.0, top + 23.0),
                text_w,
                RichText::new(format!("{}: {message}", path.display()))
                    .size(12.0)
                    .color(weak),
            );
            if selected {
                let b = egui::Rect::from_min_size(
                    egui::pos2(rect.right() - 130.0, rect.top() + 8.0),
                    Vec2::new(120.0, ROW_H - 16.0),
                );
                if ui.put(b, egui::Button::new("Remove file")).clicked() {
                    actions.push(Action::DeleteBroken(path.clone()));
                }
            }
        }
    }
}

/// A non-interactive, accessible label at a fixed place (clicks go to the row).
fn text_at(ui: &mut egui::Ui, pos: egui::Pos2, width: f32, text: RichText) {
    let rect = egui::Rect::from_min_size(pos, Vec2::new(width.max(10.0), 20.0));
    ui.scope_builder(
        egui::UiBuilder::new()
            .max_rect(rect)
            .layout(egui::Layout::left_to_right(egui::Align::Center)),
        |ui| {
            ui.add(egui::Label::new(text).selectable(false).truncate());
        },
    );
}

fn format_mib(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// The Delete confirmation.
pub fn delete_dialog(ctx: &egui::Context, d: &mut DeleteDialog, model: &Model) -> Option<Action> {
    let mut action = None;
    let disks = model
        .definition(&d.vm)
        .map(|def| def.disk_paths())
        .unwrap_or_default();
    egui::Window::new("Delete VM")
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
        .show(ctx, |ui| {
            ui.label(format!(
                "Delete the VM \"{}\"? Its definition is removed.",
                d.vm
            ));
            ui.add_enabled(
                !disks.is_empty(),
                egui::Checkbox::new(&mut d.delete_disks, "Also delete disk images"),
            );
            for p in &disks {
                ui.label(RichText::new(format!("  {}", p.display())).monospace());
            }
            ui.horizontal(|ui| {
                if ui.button("Cancel").clicked() {
                    action = Some(Action::CancelDelete);
                }
                if ui
                    .button(RichText::new("Delete").color(ERROR_COLOR))
                    .clicked()
                {
                    action = Some(Action::Delete {
                        name: d.vm.clone(),
                        delete_disks: d.delete_disks,
                    });
                }
            });
        });
    action
}
