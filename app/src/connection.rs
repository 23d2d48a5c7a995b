//! How the app talks to VMs: one [`Connection`] trait, so the views never see
//! engine types. The in-process engine ([`EngineConnection`]) is the default;
//! a libvirt connection can be added later beside it. [`MemoryConnection`] is
//! an in-memory connection for UI tests and snapshots (it runs no guest).
//!
//! Nothing here blocks: VM output arrives through [`Connection::poll_events`],
//! which drains channels, and the engine wakes the UI through the waker.

use crate::library::{Library, LibraryEntry, VmDefinition};
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vmm_engine::DiskFormat;

/// A VM's run state as the app shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Defined, not running.
    Off,
    /// Asked to start: the engine is building the VM on a worker thread.
    Starting,
    Running,
    Paused,
    /// Stopped after an error.
    Crashed,
    /// A start that never got the VM running (a bad definition, no KVM).
    FailedToStart,
}

impl RunState {
    pub fn label(self) -> &'static str {
        match self {
            RunState::Off => "Shut off",
            RunState::Starting => "Starting",
            RunState::Running => "Running",
            RunState::Paused => "Paused",
            RunState::Crashed => "Crashed",
            RunState::FailedToStart => "Failed to start",
        }
    }

    /// Starting, running or paused: the VM exists in the engine (or is
    /// about to), so it can't be started again, edited or deleted.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Starting | RunState::Running | RunState::Paused
        )
    }

    /// Crashed, or failed to start: the list shows the error in red.
    pub fn is_failure(self) -> bool {
        matches!(self, RunState::Crashed | RunState::FailedToStart)
    }

    /// Running or paused: pause, resume and the Shut Down menu apply.
    pub fn is_controllable(self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

/// Something a VM did, drained by the model each frame.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnEvent {
    State {
        vm: String,
        state: RunState,
    },
    Serial {
        vm: String,
        bytes: Vec<u8>,
    },
    /// The VM stopped with an error, or failed to start.
    Error {
        vm: String,
        message: String,
    },
}

/// A copy-free view of a VM's framebuffer (RGBA8, `width * height * 4`).
#[derive(Clone, Debug)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub pixels: Arc<Vec<u8>>,
    /// Changes whenever the pixels change.
    pub generation: u64,
}

/// A key on a PC keyboard, independent of egui and of the engine's own key
/// type (the engine connection maps it to PS/2 scancodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestKey {
    Char(char), // 'a'..='z', '0'..='9', and the US punctuation keys: - = [ ] ; ' ` \ , . /
    F(u8),      // 1..=12
    Escape,
    Tab,
    Backspace,
    Enter,
    Space,
    Insert,
    Delete,
    Home,
    End,
    PageUp,
    PageDown,
    Up,
    Down,
    Left,
    Right,
    LeftShift,
    LeftCtrl,
    LeftAlt,
    LeftMeta,
    PrintScreen,
}

/// Mouse buttons bitmask for [`Connection::mouse`].
pub const MOUSE_LEFT: u8 = 1;
pub const MOUSE_RIGHT: u8 = 2;
pub const MOUSE_MIDDLE: u8 = 4;

/// A place VMs live: the local engine, or (later) a libvirt host.
pub trait Connection {
    /// Shown in the title bar, e.g. "Local (Vireo engine)".
    fn label(&self) -> String;
    /// Every defined VM (and broken definitions).
    fn list(&mut self) -> Vec<LibraryEntry>;
    /// Saves (creates or replaces) a definition.
    fn define(&mut self, def: &VmDefinition) -> Result<()>;
    /// Removes a definition and the given disk images.
    fn undefine(&mut self, name: &str, disks: &[std::path::PathBuf]) -> Result<()>;
    /// Creates an empty disk image.
    fn create_disk(&mut self, path: &Path, format: DiskFormat, size_bytes: u64) -> Result<()>;
    /// Says whether a file is a raw or qcow2 image.
    fn probe_disk(&self, path: &Path) -> Result<DiskFormat>;

    fn start(&mut self, def: &VmDefinition) -> Result<()>;
    fn pause(&mut self, vm: &str) -> Result<()>;
    fn resume(&mut self, vm: &str) -> Result<()>;
    /// ACPI power button.
    fn shutdown(&mut self, vm: &str) -> Result<()>;
    /// Guest-visible reboot request (a reset through the platform).
    fn reboot(&mut self, vm: &str) -> Result<()>;
    /// Hard reset.
    fn reset(&mut self, vm: &str) -> Result<()>;
    /// Pulls the plug.
    fn power_off(&mut self, vm: &str) -> Result<()>;

    fn state(&self, vm: &str) -> RunState;
    /// The current framebuffer, if the VM has a display.
    fn console(&self, vm: &str) -> Option<Frame>;
    fn serial_input(&mut self, vm: &str, bytes: &[u8]);
    fn key(&mut self, vm: &str, key: GuestKey, pressed: bool);
    fn mouse(&mut self, vm: &str, dx: i32, dy: i32, buttons: u8);
    /// CPU time the VM has used so far.
    fn cpu_time(&self, vm: &str) -> Option<Duration>;
    /// Drains what happened since the last call; never blocks.
    fn poll_events(&mut self) -> Vec<ConnEvent>;
    /// Called from any thread when something changed (used to repaint).
    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>);
}

/// What a start worker hands back: the started VM with its event receiver
/// (taken before `start`, so no event is missed), or why it failed.
type StartResult = std::result::Result<
    (
        vmm_engine::Vm,
        crossbeam_channel::Receiver<vmm_engine::VmEvent>,
    ),
    String,
>;

/// One VM the engine runs for us.
struct EngineVm {
    /// Shared with short-lived workers for the calls that may wait (pause).
    vm: Arc<vmm_engine::Vm>,
    events: crossbeam_channel::Receiver<vmm_engine::VmEvent>,
    crashed: bool,
}

/// The local, in-process engine. VM definitions are kept in a [`Library`];
/// running VMs are `vmm_engine::Vm` handles whose events are drained (never
/// waited on) in [`Connection::poll_events`]. [`Connection::start`] returns
/// at once: `Vm::create` (opening /dev/kvm, mapping guest RAM, loading the
/// firmware, opening and locking the disk images) and `Vm::start` run on a
/// worker thread, which hands the VM back through a channel.
pub struct EngineConnection {
    library: Library,
    vms: HashMap<String, EngineVm>,
    /// VMs being built by a start worker.
    starting: HashMap<String, crossbeam_channel::Receiver<StartResult>>,
    waker: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl EngineConnection {
    pub fn new(library: Library) -> EngineConnection {
        EngineConnection {
            library,
            vms: HashMap::new(),
            starting: HashMap::new(),
            waker: None,
        }
    }

    pub fn library(&self) -> &Library {
        &self.library
    }

    fn running(&self, vm: &str) -> Result<&Arc<vmm_engine::Vm>> {
        match self.vms.get(vm) {
            Some(e) if e.vm.state() != vmm_engine::VmState::Stopped => Ok(&e.vm),
            _ => bail!("{vm} is not running"),
        }
    }
}

/// The engine's PS/2 key for a [`GuestKey`].
pub fn keycode(k: GuestKey) -> Option<vmm_engine::input::KeyCode> {
    use vmm_engine::input::KeyCode as K;
    Some(match k {
        GuestKey::Char(c) => match c.to_ascii_lowercase() {
            'a' => K::A,
            'b' => K::B,
            'c' => K::C,
            'd' => K::D,
            'e' => K::E,
            'f' => K::F,
            'g' => K::G,
            'h' => K::H,
            'i' => K::I,
            'j' => K::J,
            'k' => K::K,
            'l' => K::L,
            'm' => K::M,
            'n' => K::N,
            'o' => K::O,
            'p' => K::P,
            'q' => K::Q,
            'r' => K::R,
            's' => K::S,
            't' => K::T,
            'u' => K::U,
            'v' => K::V,
            'w' => K::W,
            'x' => K::X,
            'y' => K::Y,
            'z' => K::Z,
            '0' => K::Digit0,
            '1' => K::Digit1,
            '2' => K::Digit2,
            '3' => K::Digit3,
            '4' => K::Digit4,
            '5' => K::Digit5,
            '6' => K::Digit6,
            '7' => K::Digit7,
            '8' => K::Digit8,
            '9' => K::Digit9,
            '-' => K::Minus,
            '=' => K::Equal,
            '[' => K::BracketLeft,
            ']' => K::BracketRight,
            '\\' => K::Backslash,
            ';' => K::Semicolon,
            '\'' => K::Apostrophe,
            '`' => K::Grave,
            ',' => K::Comma,
            '.' => K::Dot,
            '/' => K::Slash,
            _ => return None,
        },
        GuestKey::F(n) => match n {
            1 => K::F1,
            2 => K::F2,
            3 => K::F3,
            4 => K::F4,
            5 => K::F5,
            6 => K::F6,
            7 => K::F7,
            8 => K::F8,
            9 => K::F9,
            10 => K::F10,
            11 => K::F11,
            12 => K::F12,
            _ => return None,
        },
        GuestKey::Escape => K::Escape,
        GuestKey::Tab => K::Tab,
        GuestKey::Backspace => K::Backspace,
        GuestKey::Enter => K::Enter,
        GuestKey::Space => K::Space,
        GuestKey::Insert => K::Insert,
        GuestKey::Delete => K::Delete,
        GuestKey::Home => K::Home,
        GuestKey::End => K::End,
        GuestKey::PageUp => K::PageUp,
        GuestKey::PageDown => K::PageDown,
        GuestKey::Up => K::Up,
        GuestKey::Down => K::Down,
        GuestKey::Left => K::Left,
        GuestKey::Right => K::Right,
        GuestKey::LeftShift => K::ShiftLeft,
        GuestKey::LeftCtrl => K::CtrlLeft,
        GuestKey::LeftAlt => K::AltLeft,
        GuestKey::LeftMeta => K::MetaLeft,
        GuestKey::PrintScreen => K::PrintScreen,
    })
}

fn map_event(vm: &str, ev: vmm_engine::VmEvent, crashed: &mut bool) -> Option<ConnEvent> {
    use vmm_engine::{StopReason, VmEvent};
    let state = |state| {
        Some(ConnEvent::State {
            vm: vm.into(),
            state,
        })
    };
    match ev {
        VmEvent::Started | VmEvent::Resumed => {
            *crashed = false;
            state(RunState::Running)
        }
        VmEvent::Paused => state(RunState::Paused),
        VmEvent::Reset => None,
        VmEvent::Serial(bytes) => Some(ConnEvent::Serial {
            vm: vm.into(),
            bytes,
        }),
        VmEvent::Fault(message) => {
            *crashed = true;
            Some(ConnEvent::Error {
                vm: vm.into(),
                message,
            })
        }
        VmEvent::Stopped(StopReason::Fault(message)) => {
            *crashed = true;
            Some(ConnEvent::Error {
                vm: vm.into(),
                message,
            })
        }
        VmEvent::Stopped(_) => state(RunState::Off),
    }
}

impl Connection for EngineConnection {
    fn label(&self) -> String {
        "Local (Vireo engine)".into()
    }

    fn list(&mut self) -> Vec<LibraryEntry> {
        self.library.load_all()
    }

    fn define(&mut self, def: &VmDefinition) -> Result<()> {
        self.library.save(def).map(|_| ())
    }

    fn undefine(&mut self, name: &str, disks: &[std::path::PathBuf]) -> Result<()> {
        if self.state(name).is_active() {
            bail!("{name} is running: shut it down first");
        }
        self.vms.remove(name);
        self.library.delete(name, disks)
    }

    fn create_disk(&mut self, path: &Path, format: DiskFormat, size_bytes: u64) -> Result<()> {
        vmm_engine::disk::create(path, format, size_bytes)
            .map_err(|e| anyhow::anyhow!("can't create the disk image: {e}"))
    }

    fn probe_disk(&self, path: &Path) -> Result<DiskFormat> {
        vmm_engine::disk::probe(path).map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn start(&mut self, def: &VmDefinition) -> Result<()> {
        let name = def.name().to_string();
        match self.state(&name) {
            RunState::Starting => bail!("{name} is already starting"),
            s if s.is_active() => bail!("{name} is already running"),
            _ => {}
        }
        // A stopped VM's handle is dropped (its threads have ended).
        self.vms.remove(&name);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let spec = def.spec.clone();
        let waker = self.waker.clone();
        let worker = std::thread::Builder::new()
            .name(format!("vireo-start-{name}"))
            .spawn(move || {
                let result = (|| {
                    let vm = vmm_engine::Vm::create(spec).map_err(|e| e.to_string())?;
                    if let Some(w) = &waker {
                        let w = w.clone();
                        vm.set_waker(Box::new(move || w()));
                    }
                    let events = vm.events();
                    vm.start().map_err(|e| e.to_string())?;
                    Ok((vm, events))
                })();
                // If the app has gone away, the VM is dropped (powered off).
                let _ = tx.send(result);
                if let Some(w) = &waker {
                    w();
                }
            });
        if let Err(e) = worker {
            bail!("can't start a thread for {name}: {e}");
        }
        self.starting.insert(name, rx);
        Ok(())
    }

    fn pause(&mut self, vm: &str) -> Result<()> {
        // Pausing waits (briefly) until every vCPU has parked; the UI thread
        // doesn't: a worker does, and the Paused event tells the UI.
        let v = self.running(vm)?.clone();
        std::thread::Builder::new()
            .name(format!("vireo-pause-{vm}"))
            .spawn(move || v.pause())
            .map_err(|e| anyhow::anyhow!("can't start a thread to pause {vm}: {e}"))?;
        Ok(())
    }
    fn resume(&mut self, vm: &str) -> Result<()> {
        self.running(vm)?.resume();
        Ok(())
    }
    fn shutdown(&mut self, vm: &str) -> Result<()> {
        // The ACPI power button: the guest decides to shut down.
        self.running(vm)?.power_button();
        Ok(())
    }
    fn reboot(&mut self, vm: &str) -> Result<()> {
        // The engine has no guest-cooperative reboot yet: a reset.
        self.running(vm)?.reset();
        Ok(())
    }
    fn reset(&mut self, vm: &str) -> Result<()> {
        self.running(vm)?.reset();
        Ok(())
    }
    fn power_off(&mut self, vm: &str) -> Result<()> {
        self.running(vm)?.power_off();
        Ok(())
    }
    fn state(&self, vm: &str) -> RunState {
        if self.starting.contains_key(vm) {
            return RunState::Starting;
        }
        match self.vms.get(vm) {
            None => RunState::Off,
            Some(e) => match e.vm.state() {
                vmm_engine::VmState::Created => RunState::Off,
                vmm_engine::VmState::Running => RunState::Running,
                vmm_engine::VmState::Paused => RunState::Paused,
                vmm_engine::VmState::Stopped if e.crashed => RunState::Crashed,
                vmm_engine::VmState::Stopped => RunState::Off,
            },
        }
    }
    fn console(&self, vm: &str) -> Option<Frame> {
        let fb = self.vms.get(vm)?.vm.display().snapshot();
        if fb.width == 0 || fb.height == 0 {
            return None;
        }
        Some(Frame {
            width: fb.width,
            height: fb.height,
            pixels: fb.pixels,
            generation: fb.generation,
        })
    }
    fn serial_input(&mut self, vm: &str, bytes: &[u8]) {
        if let Ok(v) = self.running(vm) {
            v.serial_input(bytes);
        }
    }
    fn key(&mut self, vm: &str, key: GuestKey, pressed: bool) {
        if let (Ok(v), Some(code)) = (self.running(vm), keycode(key)) {
            v.key_event(code, pressed);
        }
    }
    fn mouse(&mut self, vm: &str, dx: i32, dy: i32, buttons: u8) {
        if let Ok(v) = self.running(vm) {
            v.mouse_event(dx, dy, 0, buttons);
        }
    }
    fn cpu_time(&self, vm: &str) -> Option<Duration> {
        self.running(vm).ok()?.cpu_time()
    }
    fn poll_events(&mut self) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (name, rx) in &self.starting {
            match rx.try_recv() {
                Ok(r) => done.push((name.clone(), r)),
                Err(crossbeam_channel::TryRecvError::Empty) => {}
                Err(crossbeam_channel::TryRecvError::Disconnected) => done.push((
                    name.clone(),
                    Err("the start worker ended without an answer".into()),
                )),
            }
        }
        for (name, r) in done {
            self.starting.remove(&name);
            match r {
                Ok((vm, events)) => {
                    self.vms.insert(
                        name,
                        EngineVm {
                            vm: Arc::new(vm),
                            events,
                            crashed: false,
                        },
                    );
                }
                Err(message) => out.push(ConnEvent::Error { vm: name, message }),
            }
        }
        for (name, e) in &mut self.vms {
            while let Ok(ev) = e.events.try_recv() {
                if let Some(c) = map_event(name, ev, &mut e.crashed) {
                    out.push(c);
                }
            }
        }
        out
    }
    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>) {
        for e in self.vms.values() {
            let w = waker.clone();
            e.vm.set_waker(Box::new(move || w()));
        }
        self.waker = Some(waker);
    }
}

/// What a [`MemoryConnection`] VM is doing.
#[derive(Clone, Debug)]
pub struct MemoryVm {
    pub def: VmDefinition,
    pub state: RunState,
    pub cpu: Duration,
    pub frame: Option<Frame>,
    /// Keys and serial bytes the UI sent, for tests to inspect.
    pub keys: Vec<(GuestKey, bool)>,
    pub serial_in: Vec<u8>,
}

/// What a [`MemoryConnection`] holds; tests keep a clone of the connection
/// and look inside with [`MemoryConnection::lock`].
#[derive(Default)]
pub struct MemoryState {
    pub vms: Vec<MemoryVm>,
    pub broken: Vec<LibraryEntry>,
    pub created_disks: Vec<(std::path::PathBuf, DiskFormat, u64)>,
    pub events: Vec<ConnEvent>,
    /// Mouse input the UI sent: (vm, dx, dy, buttons).
    pub mouse: Vec<(String, i32, i32, u8)>,
    /// When set, `start` fails with this message.
    pub fail_start: Option<String>,
}

impl MemoryState {
    pub fn vm(&self, name: &str) -> Option<&MemoryVm> {
        self.vms.iter().find(|v| v.def.name() == name)
    }
    pub fn vm_mut(&mut self, name: &str) -> Result<&mut MemoryVm> {
        match self.vms.iter_mut().find(|v| v.def.name() == name) {
            Some(v) => Ok(v),
            None => bail!("no VM named {name}"),
        }
    }
    fn set(&mut self, name: &str, state: RunState) -> Result<()> {
        self.vm_mut(name)?.state = state;
        self.events.push(ConnEvent::State {
            vm: name.into(),
            state,
        });
        Ok(())
    }
    /// Adds a VM in a given state.
    pub fn add(&mut self, def: VmDefinition, state: RunState) {
        self.vms.push(MemoryVm {
            def,
            state,
            cpu: Duration::ZERO,
            frame: None,
            keys: Vec::new(),
            serial_in: Vec::new(),
        });
    }
}

/// An in-memory connection for UI tests and snapshots: VMs change state when
/// asked and record their input; no guest runs. Clones share one state.
#[derive(Clone, Default)]
pub struct MemoryConnection {
    inner: Arc<std::sync::Mutex<MemoryState>>,
}

impl MemoryConnection {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl Connection for MemoryConnection {
    fn label(&self) -> String {
        "In-memory test connection".into()
    }
    fn list(&mut self) -> Vec<LibraryEntry> {
        let st = self.lock();
        let mut v: Vec<LibraryEntry> = st
            .vms
            .iter()
            .map(|v| LibraryEntry::Vm(v.def.clone()))
            .chain(st.broken.iter().cloned())
            .collect();
        v.sort_by_key(|e| e.name());
        v
    }
    fn define(&mut self, def: &VmDefinition) -> Result<()> {
        let mut st = self.lock();
        match st.vm_mut(def.name()) {
            Ok(v) => v.def = def.clone(),
            Err(_) => st.add(def.clone(), RunState::Off),
        }
        Ok(())
    }
    fn undefine(&mut self, name: &str, _disks: &[std::path::PathBuf]) -> Result<()> {
        let mut st = self.lock();
        st.vm_mut(name)?;
        st.vms.retain(|v| v.def.name() != name);
        Ok(())
    }
    fn create_disk(&mut self, path: &Path, format: DiskFormat, size_bytes: u64) -> Result<()> {
        self.lock()
            .created_disks
            .push((path.to_path_buf(), format, size_bytes));
        Ok(())
    }
    fn probe_disk(&self, path: &Path) -> Result<DiskFormat> {
        vmm_engine::disk::probe(path).map_err(|e| anyhow::anyhow!("{e}"))
    }
    fn start(&mut self, def: &VmDefinition) -> Result<()> {
        let mut st = self.lock();
        if let Some(m) = st.fail_start.clone() {
            st.events.push(ConnEvent::Error {
                vm: def.name().into(),
                message: m.clone(),
            });
            bail!("{m}");
        }
        st.set(def.name(), RunState::Running)
    }
    fn pause(&mut self, vm: &str) -> Result<()> {
        self.lock().set(vm, RunState::Paused)
    }
    fn resume(&mut self, vm: &str) -> Result<()> {
        self.lock().set(vm, RunState::Running)
    }
    fn shutdown(&mut self, vm: &str) -> Result<()> {
        self.lock().set(vm, RunState::Off)
    }
    fn reboot(&mut self, vm: &str) -> Result<()> {
        self.lock().set(vm, RunState::Running)
    }
    fn reset(&mut self, vm: &str) -> Result<()> {
        self.lock().set(vm, RunState::Running)
    }
    fn power_off(&mut self, vm: &str) -> Result<()> {
        self.lock().set(vm, RunState::Off)
    }
    fn state(&self, vm: &str) -> RunState {
        self.lock().vm(vm).map(|v| v.state).unwrap_or(RunState::Off)
    }
    fn console(&self, vm: &str) -> Option<Frame> {
        self.lock().vm(vm).and_then(|v| v.frame.clone())
    }
    fn serial_input(&mut self, vm: &str, bytes: &[u8]) {
        if let Ok(v) = self.lock().vm_mut(vm) {
            v.serial_in.extend_from_slice(bytes);
        }
    }
    fn key(&mut self, vm: &str, key: GuestKey, pressed: bool) {
        if let Ok(v) = self.lock().vm_mut(vm) {
            v.keys.push((key, pressed));
        }
    }
    fn mouse(&mut self, vm: &str, dx: i32, dy: i32, buttons: u8) {
        self.lock().mouse.push((vm.into(), dx, dy, buttons));
    }
    fn cpu_time(&self, vm: &str) -> Option<Duration> {
        self.lock().vm(vm).map(|v| v.cpu)
    }
    fn poll_events(&mut self) -> Vec<ConnEvent> {
        std::mem::take(&mut self.lock().events)
    }
    fn set_waker(&mut self, _waker: Arc<dyn Fn() + Send + Sync>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_connection_reports_start_failure_as_event_and_error() {
        let t = tempfile::tempdir().unwrap();
        let mut c = EngineConnection::new(Library::new(t.path()));
        let def = VmDefinition::new(vmm_engine::VmSpec::linux("/nonexistent/bzImage"));
        c.start(&def).unwrap();
        // The worker runs `Vm::create`; until it answers the VM is starting.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ev = loop {
            let ev = c.poll_events();
            if !ev.is_empty() || std::time::Instant::now() > deadline {
                break ev;
            }
            assert_eq!(c.state("vm"), RunState::Starting);
            assert!(c.start(&def).is_err(), "a starting VM can't start twice");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            matches!(&ev[..], [ConnEvent::Error { vm, message }] if vm == "vm" && message.contains("bzImage"))
        );
        assert_eq!(c.state("vm"), RunState::Off);
        assert!(c.poll_events().is_empty());
        assert!(c.pause("vm").is_err());
    }

    #[test]
    fn engine_connection_creates_disks_with_the_block_layer() {
        let t = tempfile::tempdir().unwrap();
        let mut c = EngineConnection::new(Library::new(t.path()));
        let p = t.path().join("d.qcow2");
        c.create_disk(&p, DiskFormat::Qcow2, 1 << 30).unwrap();
        assert_eq!(c.probe_disk(&p).unwrap(), DiskFormat::Qcow2);
        assert!(
            c.create_disk(&p, DiskFormat::Raw, 1 << 20).is_err(),
            "never overwrites"
        );
    }

    #[test]
    fn engine_events_map_to_connection_events() {
        use vmm_engine::{StopReason, VmEvent};
        let mut crashed = false;
        assert_eq!(
            map_event("a", VmEvent::Started, &mut crashed),
            Some(ConnEvent::State {
                vm: "a".into(),
                state: RunState::Running
            })
        );
        assert_eq!(
            map_event("a", VmEvent::Serial(b"x".to_vec()), &mut crashed),
            Some(ConnEvent::Serial {
                vm: "a".into(),
                bytes: b"x".to_vec()
            })
        );
        assert_eq!(
            map_event("a", VmEvent::Stopped(StopReason::PowerOff), &mut crashed),
            Some(ConnEvent::State {
                vm: "a".into(),
                state: RunState::Off
            })
        );
        assert!(!crashed);
        assert!(matches!(
            map_event("a", VmEvent::Stopped(StopReason::Fault("triple fault".into())), &mut crashed),
            Some(ConnEvent::Error { message, .. }) if message == "triple fault"
        ));
        assert!(crashed);
    }
}
