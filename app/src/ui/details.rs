//! The Details view: the VM's hardware. Memory, CPUs, the CD-ROM, the boot
//! order, each disk's interface (virtio or IDE) and the description can be
//! changed while the VM is shut off; Apply
//! saves the definition.

use crate::library::VmDefinition;
use crate::model::{Action, HostInfo};
use crate::ui::wizard::{check_cpus, check_memory, ERROR_COLOR};
use egui::{RichText, TextEdit};
use vmm_engine::{BootOrder, BootSpec, DiskFormat, DiskInterface};

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
        let em = check_memory(&self.memory, host.memory_mib).err();
        let ec = check_cpus(&self.cpus, host.cpus).err();
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
            if let Some(e) = &em {
                ui.colored_label(ERROR_COLOR, e);
            }
            if let Some(e) = &ec {
                ui.colored_label(ERROR_COLOR, e);
            }
            ui.horizontal(|ui| {
                let valid = em.is_none() && ec.is_none();
                if ui.add_enabled(valid, egui::Button::new("Apply")).clicked() {
                    if let Some(d) = self.edited(def, host) {
                        action = Some(Action::UpdateDefinition(Box::new(d)));
                    }
                }
                if ui.button("Revert").clicked() {
                    self.reset(def);
                }
            });
        });
        action
    }

    /// The definition with the draft applied, if the draft is valid.
    fn edited(&self, def: &VmDefinition, host: &HostInfo) -> Option<VmDefinition> {
        let mut d = def.clone();
        d.spec.memory_mib = check_memory(&self.memory, host.memory_mib).ok()?;
        d.spec.cpus = check_cpus(&self.cpus, host.cpus).ok()?;
        let c = self.cdrom.trim();
        d.spec.cdrom = (!c.is_empty()).then(|| c.into());
        if let (BootSpec::Firmware(f), Some(o)) = (&mut d.spec.boot, self.order) {
            f.order = o;
        }
        for (disk, itf) in d.spec.disks.iter_mut().zip(self.interfaces.iter()) {
            disk.interface = *itf;
        }
        d.description = self.description.clone();
        Some(d)
    }
}
