//! The Details view: the VM's hardware. Memory, CPUs, the CD-ROM, the boot
//! order, each disk's interface (virtio or IDE) and the description can be
//! changed while the VM is shut off; Apply
//! saves the definition.

use crate::library::VmDefinition;
use crate::model::{Action, HostInfo};
use crate::ui::wizard::{parse_cpus, parse_memory, phrase, ERROR_COLOR};
use egui::{RichText, TextEdit};
use vmm_engine::{BootOrder, BootSpec, DiskFormat, DiskInterface, ProblemKind, SpecField};

/// Draft edits of one VM's definition.
#[derive(Default)]
pub struct DetailsView {
    base: Option<VmDefinition>,
    memory: String,
    cpus: String,
    cdrom: String,
    order: Option<BootOrder>,
    /// Per disk: virtio (the default) or IDE, for guests without virtio drivers.
    interfaces: Vec<DiskInterface>,
    description: String,
}

impl DetailsView {
    fn reset(&mut self, def: &VmDefinition) {
        self.base = Some(def.clone());
        self.memory = def.spec.memory_mib.to_string();
        self.cpus = def.spec.cpus.to_string();
        self.cdrom = def
            .spec
            .cdrom
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.order = match &def.spec.boot {
            BootSpec::Firmware(f) => Some(f.order),
            BootSpec::Linux(_) => None,
        };
        self.interfaces = def.spec.disks.iter().map(|d| d.interface).collect();
        self.description = def.description.clone();
    }

    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        def: &VmDefinition,
        host: &HostInfo,
        editable: bool,
    ) -> Option<Action> {
        if self.base.as_ref() != Some(def) {
            self.reset(def);
        }
        let mut action = None;
        if !editable {
            ui.label(
                RichText::new("Shut the VM down to change its hardware.")
                    .color(ui.visuals().weak_text_color()),
            );
        }
        let (edited, errors) = self.edited(def, host);
        ui.add_enabled_ui(editable, |ui| {
            egui::Grid::new("details")
                .num_columns(2)
                .spacing([16.0, 6.0])
                .show(ui, |ui| {
                    ui.label(RichText::new("Name").strong());
                    ui.label(def.name());
                    ui.end_row();
                    let l = ui.label(RichText::new("Memory (MiB)").strong());
                    ui.add(TextEdit::singleline(&mut self.memory).desired_width(120.0))
                        .labelled_by(l.id);
                    ui.end_row();
                    let l = ui.label(RichText::new("CPUs").strong());
                    ui.add(TextEdit::singleline(&mut self.cpus).desired_width(120.0))
                        .labelled_by(l.id);
                    ui.end_row();
                    ui.label(RichText::new("Boot").strong());
                    match &def.spec.boot {
                        BootSpec::Firmware(_) => {
                            ui.horizontal(|ui| {
                                ui.label("BIOS, boot from");
                                if let Some(o) = &mut self.order {
                                    ui.radio_value(o, BootOrder::CdromFirst, "CD-ROM first");
                                    ui.radio_value(o, BootOrder::DiskFirst, "Disk first");
                                }
                            });
                        }
                        BootSpec::Linux(l) => {
                            ui.label(format!("Kernel {} ({})", l.kernel.display(), l.cmdline));
                        }
                    }
                    ui.end_row();
                    let l = ui.label(RichText::new("CD-ROM").strong());
                    ui.add(
                        TextEdit::singleline(&mut self.cdrom)
                            .hint_text("no ISO")
                            .desired_width(320.0),
                    )
                    .labelled_by(l.id);
                    ui.end_row();
                    for (i, d) in def.spec.disks.iter().enumerate() {
                        ui.label(RichText::new(format!("Disk {}", i + 1)).strong());
                        ui.horizontal(|ui| {
                            ui.label(format!(
                                "{} ({}{})",
                                d.path.display(),
                                match d.format {
                                    DiskFormat::Raw => "raw",
                                    DiskFormat::Qcow2 => "qcow2",
                                },
                                if d.readonly { ", read-only" } else { "" }
                            ));
                            if let Some(itf) = self.interfaces.get_mut(i) {
                                ui.radio_value(itf, DiskInterface::Virtio, "virtio");
                                ui.radio_value(itf, DiskInterface::Ide, "IDE");
                            }
                        });
                        ui.end_row();
                    }
                    for (i, n) in def.spec.nics.iter().enumerate() {
                        ui.label(RichText::new(format!("NIC {}", i + 1)).strong());
                        ui.label(format!("bridge {} ({})", n.bridge, n.mac));
                        ui.end_row();
                    }
                    let l = ui.label(RichText::new("Description").strong());
                    ui.add(TextEdit::singleline(&mut self.description).desired_width(320.0))
                        .labelled_by(l.id);
                    ui.end_row();
                });
            for e in &errors {
                ui.colored_label(ERROR_COLOR, e);
            }
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(errors.is_empty(), egui::Button::new("Apply"))
                    .clicked()
                {
                    action = Some(Action::UpdateDefinition(Box::new(edited)));
                }
                if ui.button("Revert").clicked() {
                    self.reset(def);
                }
            });
        });
        action
    }

    /// The definition with the draft applied, and what is wrong with it:
    /// a typed number that does not parse, then the engine's verdict
    /// (`VmSpec::check`) on what this page edits, in the page's words.
    fn edited(&self, def: &VmDefinition, host: &HostInfo) -> (VmDefinition, Vec<String>) {
        let mut errors = Vec::new();
        let mut d = def.clone();
        match parse_memory(&self.memory) {
            Ok(v) => d.spec.memory_mib = v,
            Err(e) => errors.push(e),
        }
        match parse_cpus(&self.cpus) {
            Ok(v) => d.spec.cpus = v,
            Err(e) => errors.push(e),
        }
        let c = self.cdrom.trim();
        d.spec.cdrom = (!c.is_empty()).then(|| c.into());
        if let (BootSpec::Firmware(f), Some(o)) = (&mut d.spec.boot, self.order) {
            f.order = o;
        }
        for (disk, itf) in d.spec.disks.iter_mut().zip(self.interfaces.iter()) {
            disk.interface = *itf;
        }
        d.description = self.description.clone();
        for p in d.spec.check(&host.limits) {
            // A disk's file is not edited here, but its interface is, and
            // the IDE controller has room for only so many disks.
            let edited_here = match p.field {
                SpecField::Memory | SpecField::Cpus | SpecField::Cdrom => true,
                SpecField::Disk(_) => p.kind == ProblemKind::TooMany,
                _ => false,
            };
            if edited_here {
                errors.push(phrase(&p));
            }
        }
        (d, errors)
    }
}
