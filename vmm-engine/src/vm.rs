//! Building a machine from a [`VmSpec`], owning its threads, and its
//! lifecycle. A [`Vm`] is the handle clients hold; each boot of it is a
//! [`Machine`] (a KVM VM with its memory, devices and vCPU threads). A guest
//! reset tears the machine down and builds a fresh one from the same spec,
//! which resets every device exactly.

use std::os::unix::thread::JoinHandleExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_READONLY, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, MmapRegion};

use crate::boot;
use crate::bus::Bus;
use crate::devices::keys::KeyCode;
use crate::devices::serial::{SerialChunk, SerialRing, SERIAL_SCROLLBACK};
use crate::devices::{IrqLine, PowerEvent, PowerHandle};
use crate::display::Display;
use crate::memory::{
    GuestMem, MemoryLayout, RamSlot, BIOS_SLOT, KVM_IDENTITY_MAP, KVM_TSS, MIB, ONE_MIB,
};
use crate::platform::{self, Platform};
use crate::spec::{BootSpec, VmSpec};
use crate::vcpu::{self, ExitCell, MachineExit, PauseGate, VcpuContext};

pub use crate::check::DEFAULT_BIOS;

/// The lifecycle state of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    Created,
    Running,
    Paused,
    Stopped,
}

/// Why a VM stopped for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest reset and the VM was told not to reboot.
    Reset,
    /// The host forced it off.
    ForcedOff,
    /// A fatal guest fault; the report names it and the vCPU registers.
    Fault(String),
}

/// What a VM tells its clients, in order, on a crossbeam channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    Started,
    Paused,
    Resumed,
    /// Bytes the guest wrote to COM1.
    Serial(Vec<u8>),
    /// The guest reset and the VM restarted.
    Reset,
    /// A fatal fault report (followed by `Stopped(Fault)`).
    Fault(String),
    Stopped(StopReason),
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot use /dev/kvm: {0}. Vireo needs KVM: load the kvm module, and run as root or as a member of the kvm group")]
    KvmUnavailable(String),
    /// The definition breaks the rules of [`VmSpec::check`].
    #[error("{}", crate::check::describe(.0))]
    Spec(Vec<crate::check::SpecProblem>),
    #[error("{0}")]
    InvalidSpec(String),
    #[error(transparent)]
    Boot(#[from] boot::linux::LinuxBootError),
    #[error("firmware: {0}")]
    Firmware(String),
    #[error("KVM: {0}")]
    Kvm(String),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("device setup: {0}")]
    Device(String),
    #[error("the VM was already started")]
    AlreadyStarted,
}

fn kvm_err(what: &str) -> impl Fn(kvm_ioctls::Error) -> VmError + '_ {
    move |e| VmError::Kvm(format!("{what}: {e}"))
}

/// The KVM device: /dev/kvm, or $VIREO_KVM_DEVICE (tests use it to check
/// the message a host without KVM gets).
pub fn kvm_device() -> std::path::PathBuf {
    std::env::var_os("VIREO_KVM_DEVICE")
        .map(Into::into)
        .unwrap_or_else(|| "/dev/kvm".into())
}

/// Opens /dev/kvm with a clear error.
pub fn open_kvm() -> Result<Kvm, VmError> {
    let dev = kvm_device();
    if !dev.exists() {
        return Err(VmError::KvmUnavailable(format!(
            "{} does not exist",
            dev.display()
        )));
    }
    let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes())
        .map_err(|_| VmError::KvmUnavailable("bad device path".into()))?;
    Kvm::new_with_path(c).map_err(|e| VmError::KvmUnavailable(format!("{}: {e}", dev.display())))
}

/// Checks a spec against the host before anything is built: the rules of
/// [`VmSpec::check`], then whether KVM can be used at all.
pub fn validate_spec(spec: &VmSpec) -> Result<(), VmError> {
    let host = crate::host::limits();
    let problems = spec.check(&host);
    if !problems.is_empty() {
        return Err(VmError::Spec(problems));
    }
    match host.kvm_unusable {
        Some(why) => Err(VmError::KvmUnavailable(why)),
        None => Ok(()),
    }
}

/// An IrqLine over KVM_IRQ_LINE (drives the in-kernel PIC and IOAPIC pin).
pub struct KvmIrq {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl KvmIrq {
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> Arc<Self> {
        Arc::new(KvmIrq { vm, gsi })
    }
}

impl IrqLine for KvmIrq {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            log::warn!("KVM_IRQ_LINE {} failed: {e}", self.gsi);
        }
    }
}

vmm_sys_util::ioctl_io_nr!(KVM_REINJECT_CONTROL, kvm_bindings::KVMIO, 0x71);

/// Drops the PIT's backlog of missed ticks instead of re-injecting them.
/// Where supervisor code is emulated (PVM), interrupts are delivered slowly,
/// and with reinjection IRQ 0 stays pending forever and starves IRQ 1 (the
/// keyboard): see docs/KEYBOARD.md. QEMU's `lost_tick_policy=discard`.
fn pit_reinject_off(vm: &VmFd) {
    let rc = kvm_bindings::kvm_reinject_control {
        pit_reinject: 0,
        ..Default::default()
    };
    // SAFETY: a KVM VM ioctl with a properly sized, initialised struct.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(vm, KVM_REINJECT_CONTROL(), &rc) };
    if ret < 0 {
        log::warn!(
            "KVM_REINJECT_CONTROL failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Who is told when something visible changes (serial, state, display).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// How many events wait for a consumer at most. When the queue is full a
/// serial batch is dropped from the stream (the scrollback ring still has
/// it) and any other event replaces the oldest queued one.
pub const EVENT_QUEUE: usize = 1024;
/// Serial output is sent in batches: a batch goes out when it reaches this
/// many bytes, when the last one went out long enough ago, or on the
/// display thread's next tick (at most ~33 ms later).
const SERIAL_BATCH_BYTES: usize = 4096;
const SERIAL_BATCH_AGE: Duration = Duration::from_millis(10);
/// A batch never holds more than this; bytes beyond it are counted as
/// dropped from the event stream (the ring keeps them).
const SERIAL_BATCH_MAX: usize = 64 * 1024;

/// The guest's serial output: the scrollback ring and the batch not yet
/// sent as an event.
struct SerialOut {
    ring: SerialRing,
    batch: Vec<u8>,
    last_flush: Option<Instant>,
}

struct Shared {
    spec: VmSpec,
    tx: Sender<VmEvent>,
    /// The queue's own receiver, to drop its oldest event when it is full.
    rx: Receiver<VmEvent>,
    /// Events (serial batches and others) dropped because the queue was full.
    dropped_events: AtomicU64,
    serial: Mutex<SerialOut>,
    serial_cv: Condvar,
    state: Mutex<VmState>,
    state_cv: Condvar,
    machine: Mutex<Option<Arc<Machine>>>,
    waker: Mutex<Option<Waker>>,
    final_reason: Mutex<Option<StopReason>>,
    /// Host request that ends the current machine for good.
    forced: std::sync::atomic::AtomicBool,
    display: Display,
}

impl Shared {
    fn emit(&self, ev: VmEvent) {
        use crossbeam_channel::TrySendError;
        if let Err(TrySendError::Full(ev)) = self.tx.try_send(ev) {
            if self.dropped_events.fetch_add(1, Ordering::Relaxed) == 0 {
                log::warn!(
                    "VM {}: the event queue is full ({EVENT_QUEUE}): nobody reads it fast enough; dropping events (serial output stays in the scrollback)",
                    self.spec.name
                );
            }
            if !matches!(ev, VmEvent::Serial(_)) {
                let _ = self.rx.try_recv();
                let _ = self.tx.try_send(ev);
            }
        }
        self.wake();
    }
    fn serial_output(&self, bytes: &[u8]) {
        let batch = {
            let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            s.ring.push(bytes);
            let room = SERIAL_BATCH_MAX.saturating_sub(s.batch.len());
            if room < bytes.len() {
                self.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
            s.batch.extend_from_slice(&bytes[..room.min(bytes.len())]);
            let due = s.batch.len() >= SERIAL_BATCH_BYTES
                || s.last_flush.is_none_or(|t| t.elapsed() >= SERIAL_BATCH_AGE);
            if due {
                s.last_flush = Some(Instant::now());
                std::mem::take(&mut s.batch)
            } else {
                Vec::new()
            }
        };
        self.serial_cv.notify_all();
        if !batch.is_empty() {
            self.emit(VmEvent::Serial(batch));
        }
    }
    /// Sends the serial batch still waiting, if any.
    fn flush_serial(&self) {
        let batch = {
            let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            if s.batch.is_empty() {
                return;
            }
            s.last_flush = Some(Instant::now());
            std::mem::take(&mut s.batch)
        };
        self.emit(VmEvent::Serial(batch));
    }
    fn wake(&self) {
        let w = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(w) = w {
            w();
        }
    }
    fn set_state(&self, s: VmState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
        self.state_cv.notify_all();
    }
    /// Why the VM stopped for good, once it has.
    fn final_reason(&self) -> Option<StopReason> {
        self.final_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn machine(&self) -> Option<Arc<Machine>> {
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A virtual machine: the handle clients hold.
pub struct Vm {
    shared: Arc<Shared>,
    events: Receiver<VmEvent>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    first: Mutex<Option<Machine>>,
    /// Held across a pause or resume (check, act, new state), so that two
    /// callers (a UI and the control socket) can't both pass the check.
    switching: Mutex<()>,
}

impl Vm {
    /// Validates the spec and builds the machine (loads kernel or firmware,
    /// opens disks) without running it, so every input error surfaces here.
    pub fn create(spec: VmSpec) -> Result<Vm, VmError> {
        validate_spec(&spec)?;
        let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            spec,
            tx,
            rx: rx.clone(),
            dropped_events: AtomicU64::new(0),
            serial: Mutex::new(SerialOut {
                ring: SerialRing::new(SERIAL_SCROLLBACK),
                batch: Vec::new(),
                last_flush: None,
            }),
            serial_cv: Condvar::new(),
            state: Mutex::new(VmState::Created),
            state_cv: Condvar::new(),
            machine: Mutex::new(None),
            waker: Mutex::new(None),
            final_reason: Mutex::new(None),
            forced: Default::default(),
            display: Display::new(),
        });
        {
            let weak = Arc::downgrade(&shared);
            shared.display.set_notify(move || {
                if let Some(s) = weak.upgrade() {
                    s.wake();
                }
            });
        }
        let machine = Machine::build(&shared)?;
        Ok(Vm {
            shared,
            events: rx,
            supervisor: Mutex::new(None),
            first: Mutex::new(Some(machine)),
            switching: Mutex::new(()),
        })
    }

    pub fn spec(&self) -> &VmSpec {
        &self.shared.spec
    }

    /// The event stream. Every clone of the receiver shares one queue,
    /// which holds at most [`EVENT_QUEUE`] events (see there).
    pub fn events(&self) -> Receiver<VmEvent> {
        self.events.clone()
    }

    /// How many events were dropped because nobody read the queue.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// The guest's serial output from absolute offset `since` on (at most
    /// `max` bytes), out of the last [`SERIAL_SCROLLBACK`] bytes. With
    /// `wait`, blocks up to that long while there is nothing new.
    pub fn serial_since(&self, since: u64, max: usize, wait: Option<Duration>) -> SerialChunk {
        let sh = &self.shared;
        let mut g = sh.serial.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limit) = wait {
            let until = Instant::now() + limit;
            while g.ring.end() <= since && self.state() != VmState::Stopped {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                g = sh
                    .serial_cv
                    .wait_timeout(g, (until - now).min(Duration::from_millis(200)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        g.ring.since(since, max)
    }

    /// Called whenever serial output, state or the display changes.
    pub fn set_waker(&self, f: Box<dyn Fn() + Send + Sync>) {
        *self.shared.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::from(f));
    }

    pub fn state(&self) -> VmState {
        *self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the vCPUs.
    pub fn start(&self) -> Result<(), VmError> {
        let first = self
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(VmError::AlreadyStarted)?;
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vm-{}", shared.spec.name))
            .spawn(move || supervise(shared, first))
            .map_err(|e| VmError::Device(format!("cannot start the VM thread: {e}")))?;
        *self.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    /// Stops the guest's progress; returns once every vCPU is parked.
    pub fn pause(&self) {
        self.switch(
            VmState::Running,
            |m| m.pause(),
            VmState::Paused,
            VmEvent::Paused,
        );
    }

    pub fn resume(&self) {
        self.switch(
            VmState::Paused,
            |m| m.resume(),
            VmState::Running,
            VmEvent::Resumed,
        );
    }

    /// Pause and resume: if there is a machine and the VM is in state
    /// `from`, applies `act` to the machine, then enters `to` and tells
    /// the listeners `event`; otherwise does nothing.
    fn switch(&self, from: VmState, act: impl FnOnce(&Machine), to: VmState, event: VmEvent) {
        let _one_at_a_time = self.switching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = self.shared.machine() {
            if self.state() == from {
                act(&m);
                self.shared.set_state(to);
                self.shared.emit(event);
            }
        }
    }

    /// Pulls the plug.
    pub fn power_off(&self) {
        self.shared.forced.store(true, Ordering::SeqCst);
        if let Some(m) = self.shared.machine() {
            m.exit.set(MachineExit::ForcedOff);
        }
    }

    /// A hard reset, like the reset button.
    pub fn reset(&self) {
        if let Some(m) = self.shared.machine() {
            m.exit.set(MachineExit::Reset);
        }
    }

    /// Sends host input to the guest's COM1.
    pub fn serial_input(&self, bytes: &[u8]) {
        if let Some(m) = self.shared.machine() {
            m.platform
                .serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .enqueue_input(bytes);
        }
    }

    /// Presses (`pressed`) or releases a key on the PS/2 keyboard.
    pub fn key_event(&self, key: KeyCode, pressed: bool) {
        if let Some(m) = self.shared.machine() {
            m.platform
                .i8042
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .key_event(key, pressed);
            m.kick_while_input_pending();
        }
    }

    /// Moves the PS/2 mouse by (dx, dy) (y grows downwards, as on screen)
    /// with wheel `dz` and the buttons bitmask (1 left, 2 right, 4 middle).
    pub fn mouse_event(&self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        if let Some(m) = self.shared.machine() {
            m.platform
                .i8042
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .mouse_move(dx, dy, dz, buttons);
            m.kick_while_input_pending();
        }
    }

    /// Presses the ACPI power button: the guest decides to shut down.
    pub fn power_button(&self) {
        if let Some(m) = self.shared.machine() {
            m.platform
                .acpi_pm
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .press_power_button();
        }
    }

    /// The guest's screen, shared: `snapshot()` gives RGBA pixels and a
    /// generation that changes only when the picture does. It stays valid
    /// across guest resets.
    pub fn display(&self) -> Display {
        self.shared.display.clone()
    }

    /// The text-mode screen as rows of text, when the guest is in a text mode.
    pub fn screen_text(&self) -> Option<Vec<String>> {
        self.shared.machine()?.platform.vga.screen_text()
    }

    /// Blocks until the VM has stopped for good.
    pub fn wait(&self) -> StopReason {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while *st != VmState::Stopped {
            st = self
                .shared
                .state_cv
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        self.shared.final_reason().unwrap_or(StopReason::ForcedOff)
    }

    /// Like [`Vm::wait`], with a limit.
    pub fn wait_timeout(&self, limit: Duration) -> Option<StopReason> {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while *st != VmState::Stopped {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .shared
                .state_cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(st);
        self.shared.final_reason()
    }

    /// CPU time the guest's vCPU threads have used in the current boot (from
    /// /proc/self/task/TID/schedstat), for a CPU% graph.
    pub fn cpu_time(&self) -> Option<Duration> {
        let m = self.shared.machine()?;
        let tids = m
            .vcpu_tids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut total = 0u64;
        for tid in tids {
            let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
            total += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(Duration::from_nanos(total))
    }

    /// KVM_RUN exits so far in the current machine (diagnostics, benchmarks).
    pub fn exit_count(&self) -> usize {
        self.shared
            .machine()
            .map(|m| m.exits.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.power_off();
        join_taken(&self.supervisor);
    }
}

/// Runs an engine thread's body; a panic in it becomes a fault of the
/// machine (with the panic's message), which stops the VM cleanly.
pub(crate) fn catching_panics(exit: &ExitCell, who: &str, body: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        log::error!("{who} panicked: {msg}");
        exit.set(MachineExit::Fault(format!(
            "internal error: {who} panicked: {msg}"
        )));
    }
}

/// Takes the thread out of `slot`, if one is there, and waits for it to end.
fn join_taken(slot: &Mutex<Option<JoinHandle<()>>>) {
    if let Some(h) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = h.join();
    }
}

/// Runs machines until the VM stops for good.
fn supervise(shared: Arc<Shared>, first: Machine) {
    let mut next = Some(first);
    let mut started = false;
    let reason = loop {
        let machine = match next.take() {
            Some(m) => Arc::new(m),
            None => match Machine::build(&shared) {
                Ok(m) => Arc::new(m),
                Err(e) => break StopReason::Fault(format!("restart after reset failed: {e}")),
            },
        };
        *shared.machine.lock().unwrap_or_else(|e| e.into_inner()) = Some(machine.clone());
        if let Err(e) = machine.start_vcpus() {
            machine.exit.set(MachineExit::Fault(e.to_string()));
        } else {
            shared.set_state(VmState::Running);
            if !started {
                shared.emit(VmEvent::Started);
                started = true;
            }
        }
        let exit = machine.exit.wait();
        machine.stop_vcpus();
        shared.flush_serial();
        *shared.machine.lock().unwrap_or_else(|e| e.into_inner()) = None;
        drop(machine);
        match exit {
            MachineExit::Reset
                if !shared.spec.no_reboot && !shared.forced.load(Ordering::SeqCst) =>
            {
                shared.emit(VmEvent::Reset);
                continue;
            }
            MachineExit::Reset => break StopReason::Reset,
            MachineExit::PowerOff => break StopReason::PowerOff,
            MachineExit::ForcedOff => break StopReason::ForcedOff,
            MachineExit::Fault(report) => {
                log::debug!("{report}");
                shared.emit(VmEvent::Fault(report.clone()));
                break StopReason::Fault(report);
            }
        }
    };
    *shared
        .final_reason
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
    shared.set_state(VmState::Stopped);
    shared.emit(VmEvent::Stopped(reason));
}

/// One boot of a VM.
pub struct Machine {
    /// Keeps the KVM VM (and so its memory slots) alive as long as the
    /// machine, whatever devices still hold clones.
    _vm_fd: Arc<VmFd>,
    /// Owns the guest RAM the KVM slots point into.
    _mem: GuestMem,
    io_bus: Bus,
    mmio_bus: Bus,
    exit: Arc<ExitCell>,
    pause: Arc<PauseGate>,
    exits: Arc<AtomicUsize>,
    vcpus: Mutex<Vec<VcpuFd>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    platform: Platform,
    display_thread: Mutex<Option<JoinHandle<()>>>,
    kicker_active: std::sync::atomic::AtomicBool,
    vcpu_tids: Arc<Mutex<Vec<i32>>>,
    _firmware: Option<MmapRegion>,
    /// Sends the serial batch still waiting (called on each display tick).
    serial_flush: Arc<dyn Fn() + Send + Sync>,
}

impl Machine {
    fn build(shared: &Arc<Shared>) -> Result<Machine, VmError> {
        let spec = &shared.spec;
        let kvm = open_kvm()?;
        let vm_fd = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
        vm_fd
            .set_identity_map_address(KVM_IDENTITY_MAP)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm_fd
            .set_tss_address(KVM_TSS as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm_fd
            .create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        crate::gsi::set_pc_routing(&vm_fd).map_err(kvm_err("KVM_SET_GSI_ROUTING"))?;
        pit_reinject_off(&vm_fd);

        // Guest RAM.
        let layout = MemoryLayout::new(spec.memory_mib * MIB);
        let mem = layout.allocate().map_err(|e| {
            VmError::Memory(format!("cannot allocate {} MiB: {e}", spec.memory_mib))
        })?;
        for slot in layout.kvm_slots() {
            set_ram_slot(&vm_fd, &mem, slot, false)?;
        }

        let exit = Arc::new(ExitCell::default());
        let power = {
            let exit = exit.clone();
            PowerHandle::new(move |ev| match ev {
                PowerEvent::Reset => exit.set(MachineExit::Reset),
                PowerEvent::PowerOff => exit.set(MachineExit::PowerOff),
            })
        };
        let io_bus = Bus::new();
        let mmio_bus = Bus::new();
        let sink_shared = shared.clone();
        let (platform, rsdp) = platform::build(platform::PlatformCtx {
            spec,
            vm_fd: &vm_fd,
            mem: &mem,
            layout: &layout,
            io_bus: &io_bus,
            mmio_bus: &mmio_bus,
            power,
            serial_sink: Box::new(move |b: &[u8]| sink_shared.serial_output(b)),
            display: shared.display.clone(),
        })?;

        // vCPUs.
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::new();
        for i in 0..spec.cpus {
            let v = vm_fd
                .create_vcpu(i as u64)
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            // The kvm_pvm feature probe (a throw-away VM, ~5 s) only matters
            // to a Linux kernel: firmware guests use none of the features it
            // tests, so they skip it.
            let cpuid = match spec.boot {
                crate::spec::BootSpec::Linux(_) => crate::cpuid::for_vcpu(&supported, i, spec.cpus),
                _ => crate::cpuid::for_vcpu_hiding(&supported, i, spec.cpus, &[]),
            };
            v.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
            vcpus.push(v);
        }

        // Boot.
        let mut firmware = None;
        match &spec.boot {
            BootSpec::Linux(l) => {
                let entry = boot::linux::load(
                    &mem,
                    &layout,
                    &l.kernel,
                    l.initrd.as_deref(),
                    &l.cmdline,
                    rsdp,
                )?;
                boot::x86::write_tables(&mem).map_err(|e| VmError::Memory(e.to_string()))?;
                let bsp = &vcpus[0];
                let sregs = bsp.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
                let (sregs, regs) = match entry.mode {
                    boot::linux::EntryMode::Long64 => (
                        boot::x86::long_mode_sregs(sregs),
                        boot::x86::entry_regs(entry.entry, entry.boot_params),
                    ),
                    boot::linux::EntryMode::Pvh32 => (
                        boot::x86::pvh_sregs(sregs),
                        boot::x86::pvh_regs(entry.entry, entry.boot_params),
                    ),
                };
                bsp.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
                bsp.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
                let fpu = kvm_bindings::kvm_fpu {
                    fcw: 0x37f,
                    mxcsr: 0x1f80,
                    ..Default::default()
                };
                bsp.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;
                for v in &vcpus {
                    crate::cpuid::set_lint(v).map_err(kvm_err("KVM_SET_LAPIC"))?;
                }
                // APs wait for the kernel's INIT/SIPI in the in-kernel LAPIC
                // (KVM's default for non-BSPs; said explicitly so an AP never
                // runs from the reset vector, where direct boot has no BIOS).
                for v in vcpus.iter().skip(1) {
                    v.set_mp_state(kvm_bindings::kvm_mp_state {
                        mp_state: kvm_bindings::KVM_MP_STATE_UNINITIALIZED,
                    })
                    .map_err(kvm_err("KVM_SET_MP_STATE"))?;
                }
            }
            BootSpec::Firmware(fw) => {
                let path = fw.bios.clone().unwrap_or_else(|| DEFAULT_BIOS.into());
                firmware = Some(load_firmware(&vm_fd, &mem, &path, BIOS_SLOT)?);
            }
        }

        Ok(Machine {
            _vm_fd: vm_fd,
            _mem: mem,
            io_bus,
            mmio_bus,
            exit,
            pause: Arc::new(PauseGate::default()),
            exits: Arc::new(AtomicUsize::new(0)),
            vcpus: Mutex::new(vcpus),
            threads: Mutex::new(Vec::new()),
            platform,
            display_thread: Mutex::new(None),
            kicker_active: Default::default(),
            vcpu_tids: Default::default(),
            _firmware: firmware,
            serial_flush: {
                let weak = Arc::downgrade(shared);
                Arc::new(move || {
                    if let Some(s) = weak.upgrade() {
                        s.flush_serial();
                    }
                })
            },
        })
    }

    fn start_vcpus(&self) -> Result<(), VmError> {
        vcpu::install_kick_handler();
        let vcpus = std::mem::take(&mut *self.vcpus.lock().unwrap_or_else(|e| e.into_inner()));
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for (index, v) in vcpus.into_iter().enumerate() {
            let ctx = VcpuContext {
                index,
                io_bus: self.io_bus.clone(),
                mmio_bus: self.mmio_bus.clone(),
                exit: self.exit.clone(),
                pause: self.pause.clone(),
                exits: self.exits.clone(),
            };
            let tids = self.vcpu_tids.clone();
            let exit = self.exit.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    crate::sandbox::enter(crate::sandbox::Role::Vcpu);
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    tids.lock().unwrap_or_else(|e| e.into_inner()).push(tid);
                    catching_panics(&exit, &format!("vCPU {index}"), || vcpu::run_vcpu(v, ctx))
                })
                .map_err(|e| VmError::Device(format!("cannot start a vCPU thread: {e}")))?;
            threads.push(t);
        }
        // The display refresher: ~30 Hz, renders only what changed.
        let vga = self.platform.vga.clone();
        let exit = self.exit.clone();
        let flush = self.serial_flush.clone();
        let t = std::thread::Builder::new()
            .name("display".into())
            .spawn(move || {
                crate::sandbox::enter(crate::sandbox::Role::Display);
                catching_panics(&exit.clone(), "the display thread", || {
                    while !exit.is_set() {
                        vga.render();
                        flush();
                        std::thread::sleep(Duration::from_millis(33));
                    }
                })
            })
            .map_err(|e| VmError::Device(format!("cannot start the display thread: {e}")))?;
        *self
            .display_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(())
    }

    fn kick_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for t in threads.iter() {
            if !t.is_finished() {
                // SAFETY: the thread has not been joined, so its pthread_t is valid.
                unsafe {
                    libc::pthread_kill(t.as_pthread_t(), vcpu::kick_signal());
                }
            }
        }
    }

    /// While the keyboard/mouse interrupt is pending, kick the vCPUs every
    /// 100 us for up to 2 s: on hosts that emulate supervisor code (PVM) an
    /// interrupt is only delivered at a VM entry that finds IF=1, so more
    /// entries mean keys reach the guest (docs/KEYBOARD.md).
    fn kick_while_input_pending(self: &Arc<Self>) {
        if self
            .kicker_active
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let m = self.clone();
        let spawned = std::thread::Builder::new()
            .name("input-kick".into())
            .spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && !m.exit.is_set() {
                    let pending = m
                        .platform
                        .i8042
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .irq_asserted();
                    if !pending {
                        break;
                    }
                    m.kick_all();
                    std::thread::sleep(Duration::from_micros(100));
                }
                m.kicker_active
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.kicker_active
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn pause(&self) {
        self.pause.set_paused(true);
        let n = self.threads.lock().unwrap_or_else(|e| e.into_inner()).len();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.pause.parked() < n && !self.exit.is_set() && Instant::now() < deadline {
            self.kick_all();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn resume(&self) {
        self.pause.set_paused(false);
    }

    fn stop_vcpus(&self) {
        self.pause.set_paused(false);
        loop {
            let all_done = self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .all(|t| t.is_finished());
            if all_done {
                break;
            }
            self.kick_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
        join_taken(&self.display_thread);
        self.platform.teardown(&self.io_bus);
    }
}

/// Registers (or re-registers) a KVM slot over guest RAM.
pub(crate) fn set_ram_slot(
    vm_fd: &VmFd,
    mem: &GuestMem,
    slot: RamSlot,
    readonly: bool,
) -> Result<(), VmError> {
    let host = mem
        .get_host_address(GuestAddress(slot.gpa))
        .map_err(|e| VmError::Memory(format!("slot {}: {e}", slot.slot)))?;
    // The whole slot must lie in one region of `mem`.
    mem.get_slice(GuestAddress(slot.gpa), slot.size as usize)
        .map_err(|e| VmError::Memory(format!("slot {}: {e}", slot.slot)))?;
    let r = kvm_userspace_memory_region {
        slot: slot.slot,
        flags: if readonly { KVM_MEM_READONLY } else { 0 },
        guest_phys_addr: slot.gpa,
        memory_size: slot.size,
        userspace_addr: host as u64,
    };
    // SAFETY: the memory is owned by `mem`, which the Machine keeps alive for
    // as long as the VM fd exists.
    unsafe { vm_fd.set_user_memory_region(r) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))
}

/// Removes a KVM slot.
pub(crate) fn delete_slot(vm_fd: &VmFd, slot: u32) -> Result<(), VmError> {
    let r = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: 0,
        userspace_addr: 0,
    };
    // SAFETY: deleting a slot touches no host memory.
    unsafe { vm_fd.set_user_memory_region(r) }.map_err(kvm_err("deleting a memory slot"))
}

/// Maps a BIOS image so it ends at 4 GiB (read-only), and copies its last
/// 128 KiB into RAM at 0xE0000 as the legacy shadow.
fn load_firmware(
    vm_fd: &VmFd,
    mem: &GuestMem,
    path: &Path,
    slot: u32,
) -> Result<MmapRegion, VmError> {
    let data = std::fs::read(path).map_err(|e| {
        VmError::Firmware(format!(
            "cannot read BIOS {}: {e} (install Debian's seabios package, or name another BIOS image)",
            path.display()
        ))
    })?;
    let size = data.len();
    if size == 0 || size % 0x10000 != 0 || size > 16 << 20 {
        return Err(VmError::Firmware(format!(
            "{} is not a BIOS image: its size ({size} bytes) is not a multiple of 64 KiB up to 16 MiB",
            path.display()
        )));
    }
    let region = MmapRegion::new(size).map_err(|e| VmError::Memory(e.to_string()))?;
    // SAFETY: the region was just mapped with `size` bytes and nothing else
    // references it yet.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), region.as_ptr(), size) };
    let r = kvm_userspace_memory_region {
        slot,
        flags: KVM_MEM_READONLY,
        guest_phys_addr: (1u64 << 32) - size as u64,
        memory_size: size as u64,
        userspace_addr: region.as_ptr() as u64,
    };
    // SAFETY: `region` is returned to and kept alive by the Machine.
    unsafe { vm_fd.set_user_memory_region(r) }.map_err(kvm_err("mapping the BIOS"))?;
    let shadow = size.min(128 << 10);
    mem.write_slice(
        &data[size - shadow..],
        GuestAddress(ONE_MIB - shadow as u64),
    )
    .map_err(|e| VmError::Memory(format!("BIOS shadow: {e}")))?;
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_engine_thread_becomes_a_fault_with_its_message() {
        let exit = ExitCell::default();
        catching_panics(&exit, "vCPU 3", || {
            panic!("device exploded at {:#x}", 0x3f8)
        });
        match exit.get() {
            Some(MachineExit::Fault(m)) => {
                assert!(
                    m.contains("vCPU 3 panicked: device exploded at 0x3f8"),
                    "{m}"
                )
            }
            other => panic!("expected a fault, got {other:?}"),
        }
        let calm = ExitCell::default();
        catching_panics(&calm, "display", || {});
        assert!(!calm.is_set());
    }
}
