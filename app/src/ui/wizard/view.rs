//! Drawing the wizard: one page per step, each field with its label and,
//! once the user has touched it, the message that says what to fix.

use super::form::{Field, Media, Network, Storage, Wizard, STEP_TITLES};
use crate::model::Action;
use egui::{Color32, RichText, TextEdit};
use vmm_engine::DiskFormat;

pub const ERROR_COLOR: Color32 = Color32::from_rgb(0xd0, 0x30, 0x30);

impl Wizard {
    fn browse(&mut self, ctx: &egui::Context, field: Field) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.browse = Some(rx);
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let d = rfd::FileDialog::new();
            let picked = match field {
                Field::Iso => d.add_filter("ISO images", &["iso"]).pick_file(),
                Field::NewDisk => d.save_file(),
                _ => d.pick_file(),
            };
            if let Some(p) = picked {
                let _ = tx.send((field, p));
            }
            ctx.request_repaint();
        });
    }

    fn poll_browse(&mut self) {
        let Some(rx) = &self.browse else { return };
        if let Ok((field, p)) = rx.try_recv() {
            let s = p.display().to_string();
            match field {
                Field::Iso => self.iso = s,
                Field::Import => self.import = s,
                Field::Kernel => self.kernel = s,
                Field::Initrd => self.initrd = s,
                Field::Existing => self.existing = s,
                Field::NewDisk => {
                    self.disk_path = s;
                    self.disk_path_edited = true;
                }
            }
            self.browse = None;
        }
    }

    /// Draws the wizard window.
    pub fn show(&mut self, ctx: &egui::Context) -> Option<Action> {
        self.poll_browse();
        let mut action = None;
        let mut open = true;
        egui::Window::new("New VM")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .fixed_size([520.0, 380.0])
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| {
                ui.heading(STEP_TITLES[self.step]);
                ui.label(format!("Step {} of 5", self.step + 1));
                ui.separator();
                egui::ScrollArea::vertical()
                    .max_height(280.0)
                    .auto_shrink([false, false])
                    .show(ui, |ui| match self.step {
                        0 => self.page_media(ui),
                        1 => self.page_memory(ui),
                        2 => self.page_storage(ui),
                        3 => self.page_name(ui),
                        _ => self.page_summary(ui),
                    });
                ui.separator();
                let valid = self.page_valid(self.step);
                ui.horizontal(|ui| {
                    if ui.button("Cancel").clicked() {
                        action = Some(Action::CancelWizard);
                    }
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui
                            .add_enabled(self.step == 4 && valid, egui::Button::new("Finish"))
                            .clicked()
                        {
                            match self.build() {
                                Ok(v) => action = Some(Action::CreateVm(Box::new(v))),
                                Err(e) => self.finish_error = Some(e),
                            }
                        }
                        if ui
                            .add_enabled(self.step < 4 && valid, egui::Button::new("Forward"))
                            .clicked()
                        {
                            self.step += 1;
                        }
                        if ui
                            .add_enabled(self.step > 0, egui::Button::new("Back"))
                            .clicked()
                        {
                            self.step -= 1;
                            self.finish_error = None;
                        }
                    });
                });
            });
        if !open {
            action = Some(Action::CancelWizard);
        }
        action
    }

    fn page_media(&mut self, ui: &mut egui::Ui) {
        ui.radio_value(&mut self.media, Media::Iso, "Local install media (ISO)");
        ui.radio_value(&mut self.media, Media::Import, "Import existing disk image");
        ui.radio_value(&mut self.media, Media::Kernel, "Direct kernel boot");
        ui.add_space(8.0);
        let checks = self.check_media();
        let err = |key: &str| {
            checks
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, r)| r.clone().err())
        };
        match self.media {
            Media::Iso => {
                let e = err("iso");
                path_field(ui, "ISO image path", &mut self.iso, e.as_deref())
                    .then(|| self.browse(ui.ctx(), Field::Iso));
            }
            Media::Import => {
                let e = err("import");
                path_field(ui, "Disk image path", &mut self.import, e.as_deref())
                    .then(|| self.browse(ui.ctx(), Field::Import));
            }
            Media::Kernel => {
                let (ek, ei) = (err("kernel"), err("initrd"));
                path_field(ui, "Kernel path", &mut self.kernel, ek.as_deref())
                    .then(|| self.browse(ui.ctx(), Field::Kernel));
                path_field(
                    ui,
                    "Initrd path (optional)",
                    &mut self.initrd,
                    ei.as_deref(),
                )
                .then(|| self.browse(ui.ctx(), Field::Initrd));
                text_field(ui, "Kernel command line", &mut self.cmdline, None);
            }
        }
    }

    fn page_memory(&mut self, ui: &mut egui::Ui) {
        let (em, ec) = (self.check_memory().err(), self.check_cpus().err());
        text_field(ui, "Memory (MiB)", &mut self.memory, em.as_deref());
        ui.weak(format!(
            "Up to {} MiB available on the host.",
            self.host.memory_mib
        ));
        ui.add_space(8.0);
        text_field(ui, "CPUs", &mut self.cpus, ec.as_deref());
        ui.weak(format!(
            "Up to {} CPUs available on the host.",
            self.host.cpus
        ));
    }

    fn page_storage(&mut self, ui: &mut egui::Ui) {
        if self.media == Media::Import {
            ui.label(format!(
                "The imported disk image is the VM's disk:\n{}",
                self.import.trim()
            ));
            return;
        }
        ui.radio_value(&mut self.storage, Storage::Create, "Create a disk image");
        ui.radio_value(&mut self.storage, Storage::Existing, "Select existing");
        ui.radio_value(&mut self.storage, Storage::None, "No disk");
        ui.add_space(8.0);
        match self.storage {
            Storage::Create => {
                let es = self.check_size().err();
                text_field(ui, "Size (GiB)", &mut self.size_gib, es.as_deref());
                ui.horizontal(|ui| {
                    ui.label("Format");
                    let before = self.format;
                    ui.radio_value(&mut self.format, DiskFormat::Qcow2, "qcow2");
                    ui.radio_value(&mut self.format, DiskFormat::Raw, "raw");
                    if before != self.format {
                        self.update_default_path();
                    }
                });
                let ep = self.check_new_disk().err();
                let before = self.disk_path.clone();
                if path_field(ui, "Disk image path", &mut self.disk_path, ep.as_deref()) {
                    self.browse(ui.ctx(), Field::NewDisk);
                }
                if before != self.disk_path {
                    self.disk_path_edited = true;
                }
            }
            Storage::Existing => {
                let e = self.check_existing().err();
                if path_field(
                    ui,
                    "Existing disk image path",
                    &mut self.existing,
                    e.as_deref(),
                ) {
                    self.browse(ui.ctx(), Field::Existing);
                }
            }
            Storage::None => {
                ui.label("The VM gets no disk.");
            }
        }
    }

    fn page_name(&mut self, ui: &mut egui::Ui) {
        let en = self.check_name().err();
        let before = self.name.clone();
        text_field(ui, "Name", &mut self.name, en.as_deref());
        if before != self.name {
            self.update_default_path();
        }
        ui.add_space(8.0);
        ui.label("Network");
        ui.radio_value(&mut self.network, Network::None, "None");
        ui.radio_value(&mut self.network, Network::Bridge, "Bridge device");
        if self.network == Network::Bridge {
            ui.horizontal(|ui| {
                let l = ui.label("Bridge");
                egui::ComboBox::from_id_salt("bridge-list")
                    .selected_text(if self.host.bridges.is_empty() {
                        "no bridges on this host".to_string()
                    } else {
                        "Choose a host bridge".to_string()
                    })
                    .show_ui(ui, |ui| {
                        for b in self.host.bridges.clone() {
                            ui.selectable_value(&mut self.bridge, b.clone(), b);
                        }
                    })
                    .response
                    .labelled_by(l.id);
            });
            let eb = self.check_bridge().err();
            text_field(ui, "Device name", &mut self.bridge, eb.as_deref());
        }
    }

    fn page_summary(&mut self, ui: &mut egui::Ui) {
        let rows: Vec<(&str, String)> = vec![
            ("Name", self.name.trim().to_string()),
            (
                "Install",
                match self.media {
                    Media::Iso => format!("ISO {}", self.iso.trim()),
                    Media::Import => format!("Import {}", self.import.trim()),
                    Media::Kernel => format!("Kernel {}", self.kernel.trim()),
                },
            ),
            ("Memory", format!("{} MiB", self.memory.trim())),
            ("CPUs", self.cpus.trim().to_string()),
            (
                "Storage",
                match self.storage_used() {
                    Storage::Create => format!(
                        "new {} GiB {} at {}",
                        self.size_gib.trim(),
                        fmt_name(self.format),
                        self.disk_path.trim()
                    ),
                    Storage::Existing => self.existing.trim().to_string(),
                    Storage::None if self.media == Media::Import => self.import.trim().to_string(),
                    Storage::None => "none".into(),
                },
            ),
            (
                "Network",
                match self.network {
                    Network::None => "none".into(),
                    Network::Bridge => format!("bridge {}", self.bridge.trim()),
                },
            ),
        ];
        egui::Grid::new("summary")
            .num_columns(2)
            .spacing([16.0, 6.0])
            .show(ui, |ui| {
                for (k, v) in rows {
                    ui.label(RichText::new(k).strong());
                    ui.label(v);
                    ui.end_row();
                }
            });
        ui.add_space(8.0);
        ui.label("Finish creates the disk, saves the VM and starts it.");
        if let Some(e) = &self.finish_error {
            ui.colored_label(ERROR_COLOR, e);
        }
    }
}

fn fmt_name(f: DiskFormat) -> &'static str {
    match f {
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Raw => "raw",
    }
}

/// A labelled one-line text field with its error under it.
fn text_field(ui: &mut egui::Ui, label: &str, text: &mut String, error: Option<&str>) {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(TextEdit::singleline(text).desired_width(260.0))
            .labelled_by(l.id);
    });
    if let Some(e) = error {
        ui.colored_label(ERROR_COLOR, e);
    }
}

/// A labelled path field with a Browse… button; returns true on Browse.
fn path_field(ui: &mut egui::Ui, label: &str, text: &mut String, error: Option<&str>) -> bool {
    let mut browse = false;
    let l = ui.label(label);
    ui.horizontal(|ui| {
        ui.add(TextEdit::singleline(text).desired_width(380.0))
            .labelled_by(l.id);
        browse = ui.button("Browse…").clicked();
    });
    if let Some(e) = error {
        ui.colored_label(ERROR_COLOR, e);
    }
    browse
}
