//! One thread per vCPU: KVM_RUN, and each exit dispatched to the port-I/O
//! or MMIO bus. A vCPU stops when the machine's [`ExitCell`] is set, parks
//! while the machine is paused, and is kicked out of KVM_RUN by a signal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::Duration;

use kvm_bindings::{kvm_regs, kvm_run, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::bus::Bus;

/// Why a machine stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineExit {
    /// ACPI S5 or a KVM system-event shutdown.
    PowerOff,
    /// The guest asked for a reset (or triple-faulted).
    Reset,
    /// The host forced it off.
    ForcedOff,
    /// A fatal guest fault: the report names it and the registers.
    Fault(String),
}

/// The first reason wins; everyone waiting is woken.
#[derive(Default)]
pub struct ExitCell {
    reason: Mutex<Option<MachineExit>>,
    cv: Condvar,
    set: AtomicBool,
}

impl ExitCell {
    pub fn set(&self, r: MachineExit) {
        let mut g = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(r);
            self.set.store(true, Ordering::SeqCst);
        }
        self.cv.notify_all();
    }
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }
    pub fn wait(&self) -> MachineExit {
        let mut g = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = g.clone() {
                return r;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
    #[cfg(test)]
    pub fn get(&self) -> Option<MachineExit> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Pause state shared by the vCPUs of one machine.
#[derive(Default)]
pub struct PauseGate {
    paused: Mutex<bool>,
    cv: Condvar,
    parked: AtomicUsize,
    flag: AtomicBool,
}

impl PauseGate {
    pub fn set_paused(&self, p: bool) {
        let mut g = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        *g = p;
        self.flag.store(p, Ordering::SeqCst);
        self.cv.notify_all();
    }
    pub fn is_paused(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    /// How many vCPUs are parked right now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }
    fn park(&self, exit: &ExitCell) {
        let mut g = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        self.parked.fetch_add(1, Ordering::SeqCst);
        while *g && !exit.is_set() {
            let (ng, _) = self
                .cv
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
            g = ng;
        }
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The signal used to kick a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process.
pub fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler) {
            log::error!("cannot install the vCPU kick signal handler: {e}");
        }
    });
}

/// Everything a vCPU thread needs.
pub struct VcpuContext {
    pub index: usize,
    pub io_bus: Bus,
    pub mmio_bus: Bus,
    pub exit: Arc<ExitCell>,
    pub pause: Arc<PauseGate>,
    /// Counts KVM_RUN exits (for diagnostics and benchmarks).
    pub exits: Arc<AtomicUsize>,
}

/// Runs the vCPU until the machine stops.
pub fn run_vcpu(mut vcpu: VcpuFd, ctx: VcpuContext) {
    let run_ptr: *const kvm_run = vcpu.get_kvm_run();
    // VIREO_EXIT_STATS=1 prints the busiest exit addresses when the vCPU ends.
    let mut stats: Option<std::collections::HashMap<(char, u64), u64>> =
        std::env::var_os("VIREO_EXIT_STATS").map(|_| Default::default());
    let started = std::time::Instant::now();
    loop {
        if ctx.exit.is_set() {
            if let Some(st) = stats.take() {
                let mut v: Vec<_> = st.into_iter().collect();
                v.sort_by_key(|x| std::cmp::Reverse(x.1));
                let total: u64 = v.iter().map(|x| x.1).sum();
                eprintln!(
                    "vCPU {}: {total} exits in {:?}",
                    ctx.index,
                    started.elapsed()
                );
                for ((k, a), n) in v.iter().take(15) {
                    eprintln!("  {k} {a:#x}: {n}");
                }
            }
            return;
        }
        if ctx.pause.is_paused() {
            ctx.pause.park(&ctx.exit);
            continue;
        }
        let res = vcpu.run();
        ctx.exits.fetch_add(1, Ordering::Relaxed);
        if let Some(st) = stats.as_mut() {
            let key = match &res {
                Ok(VcpuExit::IoIn(p, _)) => ('i', *p as u64),
                Ok(VcpuExit::IoOut(p, _)) => ('o', *p as u64),
                Ok(VcpuExit::MmioRead(a, _)) => ('r', *a & !0xfff),
                Ok(VcpuExit::MmioWrite(a, _)) => ('w', *a & !0xfff),
                Ok(_) => ('x', 0),
                Err(_) => ('e', 0),
            };
            *st.entry(key).or_default() += 1;
        }
        match res {
            Ok(VcpuExit::IoIn(port, data)) => {
                // SAFETY: run_ptr points at this vCPU's kvm_run mapping, live for
                // as long as `vcpu`; the kernel filled `io` for this exit.
                let size = unsafe { (*run_ptr).__bindgen_anon_1.io.size } as usize;
                for chunk in data.chunks_mut(size.max(1)) {
                    ctx.io_bus.read(port as u64, chunk);
                }
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                // SAFETY: as above.
                let size = unsafe { (*run_ptr).__bindgen_anon_1.io.size } as usize;
                for chunk in data.chunks(size.max(1)) {
                    ctx.io_bus.write(port as u64, chunk);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                ctx.mmio_bus.read(addr, data);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                ctx.mmio_bus.write(addr, data);
            }
            Ok(VcpuExit::Hlt) => {
                // With the in-kernel LAPIC, HLT does not exit; if it does, the
                // vCPU has nothing left to do.
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(VcpuExit::Shutdown) => {
                log::info!("vCPU {}: triple fault, resetting", ctx.index);
                ctx.exit.set(MachineExit::Reset);
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => ctx.exit.set(MachineExit::Reset),
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => ctx.exit.set(MachineExit::PowerOff),
                other => ctx.exit.set(MachineExit::Fault(fault_report(
                    &vcpu,
                    ctx.index,
                    &format!("guest crash (KVM system event {other})"),
                ))),
            },
            Ok(VcpuExit::InternalError) => {
                // SAFETY: as above; `internal` is the union member for this exit.
                let sub = unsafe { (*run_ptr).__bindgen_anon_1.internal.suberror };
                let what = match sub {
                    1 => "emulation failure (KVM could not emulate an instruction)".to_string(),
                    2 => "simultaneous exceptions (KVM internal error 2)".to_string(),
                    3 => "delivery event failure (KVM internal error 3)".to_string(),
                    n => format!("KVM internal error, suberror {n}"),
                };
                ctx.exit
                    .set(MachineExit::Fault(fault_report(&vcpu, ctx.index, &what)));
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                let what = format!("VM entry failed (hardware reason {reason:#x}, cpu {cpu})");
                ctx.exit
                    .set(MachineExit::Fault(fault_report(&vcpu, ctx.index, &what)));
            }
            Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => {}
            Ok(other) => {
                let what = format!("unhandled KVM exit {other:?}");
                ctx.exit
                    .set(MachineExit::Fault(fault_report(&vcpu, ctx.index, &what)));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                let what = format!("KVM_RUN failed: {e}");
                ctx.exit
                    .set(MachineExit::Fault(fault_report(&vcpu, ctx.index, &what)));
            }
        }
    }
}

/// One short report: the fault and the vCPU's registers.
pub fn fault_report(vcpu: &VcpuFd, index: usize, what: &str) -> String {
    let regs = vcpu.get_regs().ok();
    let sregs = vcpu.get_sregs().ok();
    format_fault(index, what, regs.as_ref(), sregs.as_ref())
}

pub fn format_fault(
    index: usize,
    what: &str,
    regs: Option<&kvm_regs>,
    sregs: Option<&kvm_sregs>,
) -> String {
    let mut s = format!("vCPU {index}: {what}");
    if let Some(r) = regs {
        s.push_str(&format!(
            "\n  RIP={:016x} RSP={:016x} RFLAGS={:08x}\n  RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\n  RSI={:016x} RDI={:016x} RBP={:016x}",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
        ));
    }
    if let Some(sr) = sregs {
        s.push_str(&format!(
            "\n  CS={:04x} base={:x} DS={:04x} SS={:04x} CR0={:x} CR3={:x} CR4={:x} EFER={:x}",
            sr.cs.selector,
            sr.cs.base,
            sr.ds.selector,
            sr.ss.selector,
            sr.cr0,
            sr.cr3,
            sr.cr4,
            sr.efer
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_cell_first_reason_wins() {
        let c = Arc::new(ExitCell::default());
        assert!(!c.is_set());
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.wait());
        c.set(MachineExit::PowerOff);
        c.set(MachineExit::Reset);
        assert_eq!(t.join().unwrap(), MachineExit::PowerOff);
        assert_eq!(c.get(), Some(MachineExit::PowerOff));
    }

    #[test]
    fn fault_report_names_registers() {
        let regs = kvm_regs {
            rip: 0x1234,
            ..Default::default()
        };
        let s = format_fault(1, "emulation failure", Some(&regs), None);
        assert!(s.starts_with("vCPU 1: emulation failure"));
        assert!(s.contains("RIP=0000000000001234"));
    }
}
