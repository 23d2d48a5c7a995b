//! The VM process's sandbox (the Firecracker standard): once the machine is
//! built, each thread role installs its own seccomp-bpf allow-list
//! ([`filters`], one file, commented syscall by syscall), `no_new_privs` is
//! set, and Landlock limits which files the process may open.
//!
//! The VM process (`vireo run`) calls [`enable`] once, on its main thread,
//! before anything starts a thread: Landlock and `no_new_privs` then hold
//! for every thread. Each engine thread calls [`enter`] with its role as
//! the first thing it does; without [`enable`] (a library user, an
//! in-process test) that does nothing.
//!
//! A forbidden call traps: the SIGSYS handler writes one line naming the
//! call and the role to stderr ([`FORBIDDEN_MARK`]), then the process dies
//! by SIGSYS, so whoever watches it (the app, the CLI, a test) sees the
//! signal and can name the call with [`death_report`]. Core dumps are off
//! (RLIMIT_CORE 0): a dump would be the guest's memory on disk.

mod filters;
mod landlock_rules;

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use landlock_rules::LandlockOutcome;

/// The thread roles, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// One per vCPU: KVM_RUN and the device exits it dispatches.
    Vcpu,
    /// The virtio I/O event loop.
    IoLoop,
    /// The display refresher.
    Display,
    /// The control socket: its accept loop and client threads.
    Control,
    /// The RTC's interrupt timer.
    Timer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Vcpu,
        Role::IoLoop,
        Role::Display,
        Role::Control,
        Role::Timer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Vcpu => "vcpu",
            Role::IoLoop => "io-loop",
            Role::Display => "display",
            Role::Control => "control",
            Role::Timer => "rtc-timer",
        }
    }
}

/// What the VM process may open, for Landlock.
#[derive(Clone, Debug, Default)]
pub struct SandboxPaths {
    /// Opened for reading only: firmware, the ISO, read-only disks.
    pub read: Vec<PathBuf>,
    /// Opened for reading and writing: writable disks, /dev/kvm,
    /// /dev/net/tun, the runtime directory (control socket, screenshots),
    /// the firmware log.
    pub read_write: Vec<PathBuf>,
}

impl SandboxPaths {
    /// The paths a VM built from `spec` needs, plus `runtime_dirs` (where
    /// its control socket lives).
    pub fn for_spec(spec: &crate::VmSpec, runtime_dirs: &[PathBuf]) -> SandboxPaths {
        use crate::spec::BootSpec;
        let mut p = SandboxPaths::default();
        match &spec.boot {
            BootSpec::Firmware(fw) => {
                p.read.push(
                    fw.bios
                        .clone()
                        .unwrap_or_else(|| crate::vm::DEFAULT_BIOS.into()),
                );
            }
            BootSpec::Linux(l) => {
                p.read.push(l.kernel.clone());
                p.read.extend(l.initrd.clone());
            }
        }
        // The VGA BIOS and the other option ROMs next to SeaBIOS.
        p.read.push("/usr/share/seabios".into());
        p.read.extend(spec.cdrom.clone());
        for d in &spec.disks {
            if d.readonly {
                p.read.push(d.path.clone());
            } else {
                p.read_write.push(d.path.clone());
            }
        }
        // A guest reset rebuilds the machine: it checks the host's memory
        // and reads the bridges again.
        p.read.push("/proc/meminfo".into());
        p.read.push("/sys/class/net".into());
        p.read.push("/sys/devices".into());
        p.read_write.push(crate::vm::kvm_device());
        if !spec.nics.is_empty() {
            p.read_write.push("/dev/net/tun".into());
        }
        if let Some(log) = &spec.firmware_log {
            // The log is created (or truncated) at each boot.
            match log.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => p.read_write.push(dir.into()),
                _ => p.read_write.push(".".into()),
            }
        }
        p.read_write.extend(runtime_dirs.iter().cloned());
        p
    }
}

/// Why the sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox: cannot build the {role} seccomp filter: {source}")]
    Filter {
        role: &'static str,
        source: seccompiler::Error,
    },
    #[error("sandbox: {0}: {1}")]
    Os(&'static str, std::io::Error),
    #[error("sandbox: Landlock: {0}")]
    Landlock(String),
    #[error("sandbox: already enabled in this process")]
    AlreadyEnabled,
}

/// The compiled filters, once [`enable`] ran.
struct Compiled {
    programs: Vec<(Role, seccompiler::BpfProgram)>,
}

static ENABLED: OnceLock<Compiled> = OnceLock::new();

thread_local! {
    /// This thread's role, for the SIGSYS report (0 = none).
    static ROLE: Cell<u8> = const { Cell::new(0) };
}

/// What stderr's line starts with when the sandbox stops the process.
pub const FORBIDDEN_MARK: &str = "vireo: sandbox: forbidden system call ";

/// The exit status of a VM process whose thread could not enter its
/// sandbox (it stops rather than run the guest unconfined).
pub const EXIT_SANDBOX_FAILED: i32 = 70;

/// Turns the sandbox on for this process: `no_new_privs`, no core dumps,
/// the SIGSYS reporter, Landlock over `paths`, and the seccomp filters
/// that [`enter`] installs from now on. Call it on the main thread before
/// any thread starts. Returns what Landlock did (the kernel may lack it).
pub fn enable(paths: &SandboxPaths) -> Result<LandlockOutcome, SandboxError> {
    let mut programs = Vec::new();
    for role in Role::ALL {
        let p = filters::compile(role).map_err(|source| SandboxError::Filter {
            role: role.name(),
            source,
        })?;
        programs.push((role, p));
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SandboxError::Os(
            "PR_SET_NO_NEW_PRIVS",
            std::io::Error::last_os_error(),
        ));
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit for the call's duration.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        return Err(SandboxError::Os(
            "RLIMIT_CORE",
            std::io::Error::last_os_error(),
        ));
    }
    install_sigsys_reporter()?;
    let outcome = landlock_rules::restrict(paths)?;
    ENABLED
        .set(Compiled { programs })
        .map_err(|_| SandboxError::AlreadyEnabled)?;
    Ok(outcome)
}

/// Whether [`enable`] ran in this process.
pub fn is_enabled() -> bool {
    ENABLED.get().is_some()
}

/// Called first thing on each engine thread: installs the role's filter
/// when the sandbox is on. A thread that cannot confine itself stops the
/// process ([`EXIT_SANDBOX_FAILED`]) rather than run the guest unconfined.
pub fn enter(role: Role) {
    let Some(c) = ENABLED.get() else {
        return;
    };
    let Some((_, prog)) = c.programs.iter().find(|(r, _)| *r == role) else {
        return;
    };
    ROLE.with(|r| r.set(role as u8 + 1));
    if let Err(e) = seccompiler::apply_filter(prog) {
        log::error!(
            "sandbox: the {} thread cannot install its seccomp filter: {e}; stopping",
            role.name()
        );
        eprintln!(
            "vireo: sandbox: the {} thread cannot install its seccomp filter: {e} \
             (run with --no-sandbox to debug)",
            role.name()
        );
        std::process::exit(EXIT_SANDBOX_FAILED);
    }
}

/// For a thread that runs under the filter it inherited from the thread
/// that started it: records its role for the SIGSYS report.
pub fn inherited(role: Role) {
    if is_enabled() {
        ROLE.with(|r| r.set(role as u8 + 1));
    }
}

/// The name of x86-64 system call `nr`, if it has one.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    let nr = u32::try_from(nr).ok()?;
    syscalls::Sysno::new(nr as usize).map(|s| s.name())
}

/// For whoever watched a VM process die: a sentence saying why, when the
/// sandbox stopped it. `stderr_tail` is the end of what it wrote to stderr.
pub fn death_report(status: std::process::ExitStatus, stderr_tail: &str) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if status.signal() != Some(libc::SIGSYS) {
        return None;
    }
    let named = stderr_tail
        .lines()
        .rev()
        .find_map(|l| l.split_once(FORBIDDEN_MARK).map(|(_, rest)| rest.trim()));
    Some(match named {
        Some(what) => format!("stopped by the sandbox (SIGSYS): forbidden system call {what}"),
        None => "stopped by the sandbox (SIGSYS): a forbidden system call".to_string(),
    })
}

fn install_sigsys_reporter() -> Result<(), SandboxError> {
    // SAFETY: a zeroed sigaction is valid; the handler only does
    // async-signal-safe work (a stack buffer, write(2), a trapped call).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        // RESETHAND: the handler runs once, then SIGSYS is fatal again.
        // NODEFER: the second trap is not blocked inside the handler.
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(SandboxError::Os(
                "sigaction(SIGSYS)",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// A small fixed buffer for the handler's line (no allocation there).
struct LineBuf {
    buf: [u8; 160],
    len: usize,
}

impl LineBuf {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }
    fn push_num(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // siginfo_t for SIGSYS (asm-generic/siginfo.h): after si_signo,
    // si_errno, si_code and padding (16 bytes) come _call_addr (8 bytes)
    // and then the int _syscall.
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let nr = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() } as i64;
    let mut line = LineBuf {
        buf: [0; 160],
        len: 0,
    };
    line.push(FORBIDDEN_MARK.as_bytes());
    line.push(syscall_name(nr).unwrap_or("unknown").as_bytes());
    line.push(b" (number ");
    line.push_num(nr as u64);
    line.push(b") on the ");
    let role = ROLE.with(|r| r.get());
    let role_name = Role::ALL
        .get(usize::from(role).wrapping_sub(1))
        .map(|r| r.name())
        .unwrap_or("unnamed");
    line.push(role_name.as_bytes());
    line.push(b" thread\n");
    // SAFETY: write(2) from a valid buffer; execve with null arguments
    // is forbidden in every role, so it traps again, and with the handler
    // reset (SA_RESETHAND) that second SIGSYS ends the process.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::syscall(libc::SYS_execve, 0usize, 0usize, 0usize);
        // Not reached while a filter is installed; never return into the
        // trapped call.
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// Test-only probes for the control socket (command `sandbox-probe`),
/// served only when the VM process's environment has
/// `VIREO_TEST_SANDBOX_PROBES=1` (tests set it; nothing else does).
pub fn probes_enabled() -> bool {
    std::env::var_os("VIREO_TEST_SANDBOX_PROBES").is_some_and(|v| v == "1")
}

/// Runs a probe: `"try":"execve"` replaces the process with
/// `/bin/sh -c 'exit 42'` (the sandbox forbids it: death by SIGSYS);
/// `"try":"open"` opens `"path"` for reading (Landlock answers EACCES
/// outside the allow-list).
pub fn probe(
    req: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, String> {
    match req.get("try").and_then(|v| v.as_str()) {
        Some("execve") => {
            let sh = c"/bin/sh";
            let argv = [
                sh.as_ptr(),
                c"-c".as_ptr(),
                c"exit 42".as_ptr(),
                std::ptr::null(),
            ];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated strings and arrays, valid for the call.
            unsafe { libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            Err(format!(
                "execve failed: {}",
                std::io::Error::last_os_error()
            ))
        }
        Some("open") => {
            let path = req
                .get("path")
                .and_then(|v| v.as_str())
                .ok_or("missing 'path'")?;
            match std::fs::File::open(path) {
                Ok(_) => Ok(serde_json::json!({ "opened": path })),
                Err(e) => Err(format!(
                    "open {path}: {e} (errno {})",
                    e.raw_os_error().unwrap_or(0)
                )),
            }
        }
        _ => Err("'try' must be \"execve\" or \"open\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn syscall_names() {
        assert_eq!(syscall_name(libc::SYS_execve), Some("execve"));
        assert_eq!(syscall_name(libc::SYS_ioctl), Some("ioctl"));
        assert_eq!(syscall_name(-1), None);
        assert_eq!(syscall_name(100_000), None);
    }

    #[test]
    fn death_reports_name_the_call() {
        let sigsys = std::process::ExitStatus::from_raw(libc::SIGSYS);
        let tail = format!("booting\n{FORBIDDEN_MARK}execve (number 59) on the control thread\n");
        assert_eq!(
            death_report(sigsys, &tail).as_deref(),
            Some(
                "stopped by the sandbox (SIGSYS): forbidden system call execve (number 59) \
                 on the control thread"
            )
        );
        assert!(death_report(sigsys, "").unwrap().contains("SIGSYS"));
        let killed = std::process::ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(death_report(killed, &tail), None);
        let exited = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(death_report(exited, &tail), None);
    }

    #[test]
    fn paths_for_a_spec() {
        let mut spec = crate::VmSpec::firmware();
        spec.cdrom = Some("/isos/grub.iso".into());
        spec.disks.push(crate::DiskSpec {
            path: "/vms/a.qcow2".into(),
            format: crate::DiskFormat::Qcow2,
            interface: crate::DiskInterface::Virtio,
            readonly: false,
        });
        spec.disks.push(crate::DiskSpec {
            path: "/vms/ro.img".into(),
            format: crate::DiskFormat::Raw,
            interface: crate::DiskInterface::Ide,
            readonly: true,
        });
        let p = SandboxPaths::for_spec(&spec, &["/run/user/1/vireo".into()]);
        let has = |v: &[PathBuf], s: &str| v.iter().any(|x| x == std::path::Path::new(s));
        assert!(has(&p.read, crate::vm::DEFAULT_BIOS));
        assert!(has(&p.read, "/isos/grub.iso"));
        assert!(has(&p.read, "/vms/ro.img"));
        assert!(!has(&p.read_write, "/vms/ro.img"));
        assert!(has(&p.read_write, "/vms/a.qcow2"));
        assert!(has(&p.read_write, "/run/user/1/vireo"));
        assert!(has(&p.read_write, "/dev/kvm"));
        assert!(!has(&p.read_write, "/dev/net/tun"), "no NIC, no TAP");
    }
}
