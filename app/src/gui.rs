//! The desktop app: [`App`] holds the model and the open views, draws them
//! each frame and applies the actions they return ([`App::apply`] is the one
//! place that changes the model). [`run_gui`] opens the window with eframe.
//!
//! There is no busy repaint: the connection's waker calls
//! `Context::request_repaint` when a VM changes; while a VM runs, the app
//! asks for one repaint a second to sample CPU use.

use crate::connection::{Connection, EngineConnection, RunState};
use crate::library::{Library, Paths};
use crate::model::{Action, HostInfo, Model};
use crate::ui::manager::{self, DeleteDialog};
use crate::ui::vm_window::VmWindow;
use crate::ui::wizard::Wizard;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The whole app: model plus views.
pub struct App {
    pub model: Model,
    pub wizard: Option<Wizard>,
    pub windows: Vec<VmWindow>,
    /// VMs whose serial console has a window of its own.
    pub serial_windows: Vec<String>,
    pub delete: Option<DeleteDialog>,
    notices: (
        crossbeam_channel::Sender<String>,
        crossbeam_channel::Receiver<String>,
    ),
    pub quit_requested: bool,
    waker_set: bool,
}

impl App {
    pub fn new(model: Model) -> App {
        App {
            model,
            wizard: None,
            windows: Vec::new(),
            serial_windows: Vec::new(),
            delete: None,
            notices: crossbeam_channel::unbounded(),
            quit_requested: false,
            waker_set: false,
        }
    }

    /// The default app: the local engine with the user's library.
    pub fn local() -> anyhow::Result<App> {
        let paths = Paths::from_env()?;
        let conn = EngineConnection::new(Library::new(paths.vms_dir()));
        Ok(App::new(Model::new(
            Box::new(conn),
            HostInfo::detect(),
            paths,
        )))
    }

    /// An app over any connection (tests use the in-memory one).
    pub fn with_connection(conn: Box<dyn Connection>, host: HostInfo, paths: Paths) -> App {
        App::new(Model::new(conn, host, paths))
    }

    /// Draws one frame and applies what the user asked for.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        if !self.waker_set {
            let c = ctx.clone();
            self.model
                .conn
                .set_waker(Arc::new(move || c.request_repaint()));
            self.waker_set = true;
        }
        while let Ok(n) = self.notices.1.try_recv() {
            self.model.notice = Some(n);
        }
        if self.model.poll(Instant::now()) {
            ctx.request_repaint_after(Duration::from_secs(1));
        }

        let mut actions = Vec::new();
        let modal_open = self.wizard.is_some() || self.delete.is_some();
        let capturing = self.windows.iter().any(|w| w.console.captured);
        if !modal_open && !capturing {
            actions.extend(manager::shortcuts(&ctx, &self.model));
        }
        actions.extend(manager::show(ui, &self.model));
        for w in &mut self.windows {
            actions.extend(w.show(&ctx, &mut self.model));
        }
        for vm in &self.serial_windows {
            actions.extend(crate::ui::serial::show_window(&ctx, vm, &mut self.model));
        }
        if let Some(wz) = &mut self.wizard {
            actions.extend(wz.show(&ctx));
        }
        if let Some(d) = &mut self.delete {
            actions.extend(manager::delete_dialog(&ctx, d, &self.model));
        }
        for a in actions {
            self.apply(&ctx, a);
        }
        if self.quit_requested {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn report<T>(&mut self, r: anyhow::Result<T>) {
        if let Err(e) = r {
            self.model.notice = Some(format!("{e:#}"));
        }
    }

    fn open_window(&mut self, vm: &str) {
        if self.model.definition(vm).is_none() {
            return;
        }
        if !self.windows.iter().any(|w| w.vm == vm) {
            self.windows.push(VmWindow::new(vm));
        }
    }

    fn start(&mut self, vm: &str) {
        let Some(def) = self.model.definition(vm).cloned() else {
            return;
        };
        let rt = self.model.runtime_mut(vm);
        rt.error = None;
        // Returns at once: the engine builds and boots the VM on its own
        // threads, and how that went arrives as events (`Model::poll`).
        match self.model.conn.start(&def) {
            Ok(()) => self.model.runtime_mut(vm).state = self.model.conn.state(vm),
            Err(e) => {
                let msg = format!("{e:#}");
                let rt = self.model.runtime_mut(vm);
                rt.error = Some(msg.clone());
                rt.state = RunState::FailedToStart;
                self.model.notice = Some(format!("{vm} could not start: {msg}"));
            }
        }
    }

    /// Carries out one action.
    pub fn apply(&mut self, ctx: &egui::Context, action: Action) {
        match action {
            Action::Select(vm) => self.model.selected = Some(vm),
            Action::OpenWindow(vm) => self.open_window(&vm),
            Action::CloseWindow(vm) => self.windows.retain(|w| w.vm != vm),
            Action::OpenSerialWindow(vm) => {
                if self.model.definition(&vm).is_some() && !self.serial_windows.contains(&vm) {
                    self.serial_windows.push(vm);
                }
            }
            Action::CloseSerialWindow(vm) => self.serial_windows.retain(|w| *w != vm),
            Action::NewVmWizard => {
                if self.wizard.is_none() {
                    self.wizard = Some(Wizard::new(
                        self.model.host.clone(),
                        self.model.paths.images_dir(),
                        self.model.names(),
                    ));
                }
            }
            Action::CancelWizard => self.wizard = None,
            Action::CreateVm(new) => {
                let name = new.def.name().to_string();
                if let Some((path, fmt, size)) = &new.new_disk {
                    if let Some(dir) = path.parent() {
                        if let Err(e) = std::fs::create_dir_all(dir) {
                            self.wizard_error(format!("Can't create {}: {e}", dir.display()));
                            return;
                        }
                    }
                    if let Err(e) = self.model.conn.create_disk(path, *fmt, *size) {
                        self.wizard_error(format!("{e:#}"));
                        return;
                    }
                }
                if let Err(e) = self.model.conn.define(&new.def) {
                    self.wizard_error(format!("Can't save the VM: {e:#}"));
                    return;
                }
                self.wizard = None;
                self.model.refresh();
                self.model.selected = Some(name.clone());
                self.open_window(&name);
                self.start(&name);
            }
            Action::Run(vm) => self.start(&vm),
            Action::Pause(vm) => {
                let r = self.model.conn.pause(&vm);
                self.report(r)
            }
            Action::Resume(vm) => {
                let r = self.model.conn.resume(&vm);
                self.report(r)
            }
            Action::Shutdown(vm) => {
                let r = self.model.conn.shutdown(&vm);
                self.report(r)
            }
            Action::Reboot(vm) => {
                let r = self.model.conn.reboot(&vm);
                self.report(r)
            }
            Action::ForceReset(vm) => {
                let r = self.model.conn.reset(&vm);
                self.report(r)
            }
            Action::ForceOff(vm) => {
                let r = self.model.conn.power_off(&vm);
                self.report(r)
            }
            Action::AskDelete(vm) => {
                if self.model.definition(&vm).is_some() {
                    self.delete = Some(DeleteDialog {
                        vm,
                        delete_disks: false,
                    });
                }
            }
            Action::CancelDelete => self.delete = None,
            Action::Delete { name, delete_disks } => {
                let disks = if delete_disks {
                    self.model
                        .definition(&name)
                        .map(|d| d.disk_paths())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let r = self.model.conn.undefine(&name, &disks);
                self.report(r);
                self.delete = None;
                self.windows.retain(|w| w.vm != name);
                self.model.refresh();
            }
            Action::DeleteBroken(path) => {
                let dir = self.model.paths.vms_dir();
                let r = Library::new(dir).delete_file(&path);
                self.report(r);
                self.model.refresh();
            }
            Action::UpdateDefinition(def) => {
                if self.model.state(def.name()).is_active() {
                    self.model.notice = Some("Shut the VM down before changing it.".into());
                } else {
                    let r = self.model.conn.define(&def);
                    self.report(r);
                    self.model.refresh();
                }
            }
            Action::SerialInput(vm, bytes) => self.model.conn.serial_input(&vm, &bytes),
            Action::Key(vm, k, pressed) => self.model.conn.key(&vm, k, pressed),
            Action::SendKeys(vm, keys) => {
                for k in &keys {
                    self.model.conn.key(&vm, *k, true);
                }
                for k in keys.iter().rev() {
                    self.model.conn.key(&vm, *k, false);
                }
            }
            Action::Mouse(vm, dx, dy, b) => self.model.conn.mouse(&vm, dx, dy, b),
            Action::Screenshot(vm) => self.screenshot(ctx, &vm),
            Action::DismissNotice => self.model.notice = None,
            Action::Quit => self.quit_requested = true,
        }
    }

    fn wizard_error(&mut self, msg: String) {
        match &mut self.wizard {
            Some(w) => w.finish_error = Some(msg),
            None => self.model.notice = Some(msg),
        }
    }

    /// Asks where to save (rfd, on its own thread) and writes a PNG.
    fn screenshot(&mut self, ctx: &egui::Context, vm: &str) {
        let Some(frame) = self.model.conn.console(vm) else {
            self.model.notice = Some(format!("{vm} has no display to capture."));
            return;
        };
        let tx = self.notices.0.clone();
        let ctx = ctx.clone();
        let name = format!("{vm}.png");
        std::thread::spawn(move || {
            let Some(path) = rfd::FileDialog::new()
                .set_file_name(name)
                .add_filter("PNG image", &["png"])
                .save_file()
            else {
                return;
            };
            let msg = match save_png(&path, &frame) {
                Ok(()) => format!("Screenshot saved to {}", path.display()),
                Err(e) => format!("Can't save the screenshot: {e:#}"),
            };
            let _ = tx.send(msg);
            ctx.request_repaint();
        });
    }
}

/// Writes a framebuffer as a PNG.
pub fn save_png(path: &std::path::Path, frame: &crate::connection::Frame) -> anyhow::Result<()> {
    let need = (frame.width as usize)
        .saturating_mul(frame.height as usize)
        .saturating_mul(4);
    let px = frame
        .pixels
        .get(..need)
        .ok_or_else(|| anyhow::anyhow!("the framebuffer is smaller than its size says"))?;
    let img = image::RgbaImage::from_raw(frame.width, frame.height, px.to_vec())
        .ok_or_else(|| anyhow::anyhow!("bad framebuffer size"))?;
    img.save_with_format(path, image::ImageFormat::Png)?;
    Ok(())
}

struct EframeApp(App);

impl eframe::App for EframeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.ui(ui);
    }
}

/// Opens the main window and runs until it is closed.
pub fn run_gui() -> anyhow::Result<()> {
    let app = App::local()?;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Vireo")
            .with_app_id("vireo")
            .with_inner_size([960.0, 640.0])
            .with_min_inner_size([640.0, 400.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Vireo",
        options,
        Box::new(|_cc| Ok(Box::new(EframeApp(app)))),
    )
    .map_err(|e| anyhow::anyhow!("can't open the window: {e}"))
}
