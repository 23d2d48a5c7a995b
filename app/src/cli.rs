//! The headless runner: `vireo run`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use vmm_engine::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, FirmwareBoot, LinuxBoot, NicSpec,
    ProblemKind, SpecField, SpecProblem, StopReason, Vm, VmEvent, VmSpec,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BootDev {
    /// The CD-ROM first, then the disk.
    Cdrom,
    /// The disk first, then the CD-ROM.
    Disk,
}

/// Boot a VM headless. With --kernel it boots Linux directly; otherwise
/// SeaBIOS boots --cdrom or --disk. Exit status: 0 when the guest powers
/// off (or resets with --no-reboot, or you quit with Ctrl-A x), 1 on a
/// fatal guest fault, 2 on bad input.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Linux kernel (bzImage) to boot directly, without firmware.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(
        long,
        value_name = "CMDLINE",
        default_value = "console=ttyS0",
        requires = "kernel"
    )]
    pub append: String,
    /// ISO image for the ATAPI CD-ROM (booted by SeaBIOS).
    #[arg(long, value_name = "ISO")]
    pub cdrom: Option<PathBuf>,
    /// Disk image: PATH[,format=raw|qcow2][,if=ide|virtio][,readonly=on]. Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<String>,
    /// Network card on a host bridge: bridge=NAME[,mac=52:54:00:xx:xx:xx]. Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub nic: Vec<String>,
    /// Boot order for firmware boot.
    #[arg(long, value_enum, default_value = "cdrom")]
    pub boot: BootDev,
    /// BIOS image (default: Debian's /usr/share/seabios/bios-256k.bin).
    #[arg(long, value_name = "PATH")]
    pub bios: Option<PathBuf>,
    /// Write the firmware's debug output (port 0x402) to this file.
    #[arg(long, value_name = "PATH")]
    pub firmware_log: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, short = 'm', default_value_t = 512, value_name = "MiB")]
    pub memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cpus: u32,
    /// Exit (status 0) when the guest resets, instead of rebooting it.
    #[arg(long)]
    pub no_reboot: bool,
    /// A name for the VM (shown in logs).
    #[arg(long, default_value = "vm")]
    pub name: String,
    /// Serve a control socket here (see `vireo ctl` and docs/CONTROL.md).
    /// With --vm the default is the runtime folder's NAME.sock.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Run without the sandbox (seccomp filters, Landlock, no_new_privs), to debug.
    #[arg(long)]
    pub no_sandbox: bool,
    /// Run the defined VM NAME (from the library, `vireo define`) instead
    /// of one described by the options above.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["kernel", "cdrom", "disk", "nic", "bios"])]
    pub vm: Option<String>,
    /// No terminal: serial output is kept for clients only (how `vireo
    /// start` and the app run a VM process).
    #[arg(long)]
    pub background: bool,
}

/// The spec and control socket of `vireo run --vm NAME`.
fn defined_vm(name: &str, control: Option<PathBuf>) -> Result<(VmSpec, PathBuf), String> {
    let paths = vireo::library::Paths::from_env().map_err(|e| e.to_string())?;
    let lib = vireo::library::Library::new(paths.vms_dir());
    let def = crate::manage::find_definition(&lib, name)?;
    let sock = match control {
        Some(p) => p,
        None => {
            let dir = vireo::vmproc::runtime_dir().map_err(|e| format!("{e:#}"))?;
            vireo::vmproc::socket_path(&dir, name)
        }
    };
    Ok((def.spec, sock))
}

fn parse_disk(s: &str) -> Result<DiskSpec, String> {
    let mut parts = s.split(',');
    let path = parts.next().filter(|p| !p.is_empty()).ok_or_else(|| {
        format!("--disk {s:?}: missing the image path (use --disk PATH[,format=qcow2])")
    })?;
    let mut d = DiskSpec {
        path: PathBuf::from(path),
        format: DiskFormat::Raw,
        interface: DiskInterface::Ide,
        readonly: false,
    };
    let mut format_given = false;
    for kv in parts {
        match kv.split_once('=') {
            Some(("format", "raw")) => (d.format, format_given) = (DiskFormat::Raw, true),
            Some(("format", "qcow2")) => (d.format, format_given) = (DiskFormat::Qcow2, true),
            Some(("if", "ide")) => d.interface = DiskInterface::Ide,
            Some(("if", "virtio")) => d.interface = DiskInterface::Virtio,
            Some(("readonly", "on" | "true" | "1")) => d.readonly = true,
            Some(("readonly", "off" | "false" | "0")) => d.readonly = false,
            _ => {
                return Err(format!(
                    "--disk {s:?}: unknown option {kv:?} (known: format=raw|qcow2, if=ide|virtio, readonly=on|off)"
                ))
            }
        }
    }
    if !format_given {
        // A file that cannot be probed keeps raw; the engine's spec check
        // (see `problems`) reports why it cannot be used.
        if let Ok(f) = vmm_engine::disk::probe(&d.path) {
            d.format = f;
        }
    }
    Ok(d)
}

fn parse_nic(s: &str) -> Result<NicSpec, String> {
    let mut bridge = None;
    let mut mac = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("bridge", b)) if !b.is_empty() => bridge = Some(b.to_string()),
            Some(("mac", m)) => mac = Some(m.to_string()),
            _ => {
                return Err(format!(
                "--nic {s:?}: unknown option {kv:?} (use --nic bridge=br0[,mac=52:54:00:12:34:56])"
            ))
            }
        }
    }
    let bridge = bridge.ok_or_else(|| format!("--nic {s:?}: missing bridge=NAME"))?;
    Ok(NicSpec {
        bridge,
        mac: mac.unwrap_or_default(),
    })
}

/// Turns the arguments into a VmSpec, checking what can be checked here.
pub fn spec_from_args(a: &RunArgs) -> Result<VmSpec, String> {
    let boot = match &a.kernel {
        Some(k) => BootSpec::Linux(LinuxBoot {
            kernel: k.clone(),
            initrd: a.initrd.clone(),
            cmdline: a.append.clone(),
        }),
        None => {
            if a.cdrom.is_none() && a.disk.is_empty() && a.bios.is_none() {
                return Err(
                    "nothing to boot: give --kernel, --cdrom or --disk (see vireo run --help)"
                        .into(),
                );
            }
            BootSpec::Firmware(FirmwareBoot {
                bios: a.bios.clone(),
                order: match a.boot {
                    BootDev::Cdrom => BootOrder::CdromFirst,
                    BootDev::Disk => BootOrder::DiskFirst,
                },
            })
        }
    };
    let disks = a
        .disk
        .iter()
        .map(|d| parse_disk(d))
        .collect::<Result<Vec<_>, _>>()?;
    let nics = a
        .nic
        .iter()
        .map(|n| parse_nic(n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VmSpec {
        name: a.name.clone(),
        memory_mib: a.memory,
        cpus: a.cpus,
        boot,
        cdrom: a.cdrom.clone(),
        disks,
        nics,
        firmware_log: a.firmware_log.clone(),
        no_reboot: a.no_reboot,
    })
}

/// Puts a terminal in raw mode and restores it on drop.
pub struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    pub fn enable() -> Self {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a valid termios.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawTerminal { saved: None };
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawTerminal { saved: None };
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            // Keep output post-processing so "\n" still returns the carriage.
            t.c_oflag |= libc::OPOST;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawTerminal { saved: Some(saved) }
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restoring the attributes read in enable().
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

/// What a chunk of stdin means, given QEMU's Ctrl-A escapes.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Guest(Vec<u8>),
    Quit,
    Help,
}

#[derive(Default)]
pub struct EscapeParser {
    pending_escape: bool,
}

impl EscapeParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Input> {
        let mut out = Vec::new();
        let mut guest = Vec::new();
        for &b in bytes {
            if self.pending_escape {
                self.pending_escape = false;
                match b {
                    b'x' | b'X' => {
                        if !guest.is_empty() {
                            out.push(Input::Guest(std::mem::take(&mut guest)));
                        }
                        out.push(Input::Quit);
                        return out;
                    }
                    b'h' | b'H' => {
                        if !guest.is_empty() {
                            out.push(Input::Guest(std::mem::take(&mut guest)));
                        }
                        out.push(Input::Help);
                    }
                    0x01 => guest.push(0x01),
                    other => {
                        guest.push(0x01);
                        guest.push(other);
                    }
                }
            } else if b == 0x01 {
                self.pending_escape = true;
            } else {
                guest.push(b);
            }
        }
        if !guest.is_empty() {
            out.push(Input::Guest(guest));
        }
        out
    }
}

/// Turns the VM process's sandbox on (before any thread starts), or says
/// in the log that it is off.
fn sandbox(a: &RunArgs, spec: &VmSpec, control: Option<&Path>) -> anyhow::Result<()> {
    use vmm_engine::sandbox::{self, LandlockOutcome, SandboxPaths};
    if a.no_sandbox {
        log::warn!(
            "the sandbox is off (--no-sandbox): no seccomp filters, no Landlock, no no_new_privs"
        );
        return Ok(());
    }
    // The control socket's directory is the VM's runtime directory.
    let runtime: Vec<PathBuf> = control
        .and_then(|p| std::path::absolute(p).ok())
        .and_then(|p| p.parent().map(PathBuf::from))
        .into_iter()
        .collect();
    let outcome = sandbox::enable(&SandboxPaths::for_spec(spec, &runtime))
        .map_err(|e| anyhow::anyhow!("{e} (run with --no-sandbox to start without it)"))?;
    match outcome {
        LandlockOutcome::Enforced => log::info!("sandbox on: seccomp per thread, Landlock"),
        LandlockOutcome::PartiallyEnforced => {
            log::info!("sandbox on: seccomp per thread, Landlock (this kernel's older subset)")
        }
        LandlockOutcome::Unsupported => log::info!("sandbox on: seccomp per thread, no Landlock"),
    }
    Ok(())
}

/// The engine's verdict on `spec` ([`VmSpec::check`]), each problem phrased
/// in terms of this command's flags.
pub fn problems(spec: &VmSpec, host: &vmm_engine::HostLimits) -> Vec<String> {
    spec.check(host).iter().map(phrase).collect()
}

/// One spec problem in the CLI's words.
pub fn phrase(p: &SpecProblem) -> String {
    let m = &p.message;
    match (p.field, p.kind) {
        (SpecField::Memory, ProblemKind::TooSmall) => format!("{m} (try --memory 256)"),
        (SpecField::Memory, _) => format!("{m}; choose a smaller --memory"),
        (SpecField::Cpus, ProblemKind::TooSmall) => format!("{m} (try --cpus 1)"),
        (SpecField::Cpus, _) => format!("{m}; choose a smaller --cpus"),
        (SpecField::Kernel, _) => format!("--kernel {m}"),
        (SpecField::Initrd, _) => format!("--initrd {m}"),
        (SpecField::Cmdline, _) => format!("--append: {m}"),
        (SpecField::Cdrom, _) => format!("--cdrom {m}"),
        (SpecField::Disk(_), ProblemKind::TooMany) => format!("--disk {m} (if=virtio)"),
        (SpecField::Disk(_), _) => format!("--disk {m}"),
        (SpecField::Nic(i), _) => format!("--nic number {}: {m}", i + 1),
        (SpecField::Firmware, _) => format!("--bios {m}"),
    }
}

pub fn run(a: RunArgs) -> i32 {
    let made = match &a.vm {
        Some(name) => defined_vm(name, a.control.clone()).map(|(s, c)| (s, Some(c))),
        None => spec_from_args(&a).map(|s| (s, a.control.clone())),
    };
    let (spec, control_path) = match made {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vireo: {e}");
            return 2;
        }
    };
    log::info!("VM {} in process {}", spec.name, std::process::id());
    let problems = problems(&spec, &vmm_engine::host::limits());
    if !problems.is_empty() {
        for p in problems {
            eprintln!("vireo: {p}");
        }
        return 2;
    }
    // TAPs first: the sandbox stops the bridge helper from working later.
    if let Err(e) = vmm_engine::nic::keep_taps_for(&spec.nics) {
        eprintln!("vireo: {e}");
        return 2;
    }
    if let Err(e) = sandbox(&a, &spec, control_path.as_deref()) {
        eprintln!("vireo: {e}");
        return 2;
    }
    let vm = match Vm::create(spec) {
        Ok(vm) => std::sync::Arc::new(vm),
        Err(e) => {
            eprintln!("vireo: {e}");
            return 2;
        }
    };
    let events = vm.events();
    let control = match &control_path {
        Some(p) => match vmm_engine::control::serve(vm.clone(), p) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("vireo: {e}");
                return 2;
            }
        },
        None => None,
    };
    if let Err(e) = vm.start() {
        eprintln!("vireo: {e}");
        return 1;
    }
    let raw = (!a.background).then(RawTerminal::enable);
    let quit_requested = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if !a.background {
        let vm = vm.clone();
        let quit = quit_requested.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut parser = EscapeParser::default();
            let mut buf = [0u8; 1024];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                for i in parser.feed(&buf[..n]) {
                    match i {
                        Input::Guest(b) => vm.serial_input(&b),
                        Input::Quit => {
                            quit.store(true, std::sync::atomic::Ordering::SeqCst);
                            vm.power_off();
                            return;
                        }
                        Input::Help => {
                            let _ = std::io::stderr().write_all(
                                b"\r\nC-a x  quit\r\nC-a C-a  send C-a\r\nC-a h  this help\r\n",
                            );
                        }
                    }
                }
            }
        });
    }
    let mut stdout = std::io::stdout();
    let code = loop {
        match events.recv() {
            Ok(VmEvent::Serial(b)) => {
                if !a.background {
                    let _ = stdout.write_all(&b);
                    let _ = stdout.flush();
                }
            }
            Ok(VmEvent::Stopped(reason)) => {
                if a.background {
                    eprintln!("vireo: {} stopped: {reason:?}", vm.spec().name);
                }
                break match reason {
                    StopReason::PowerOff | StopReason::Reset => 0,
                    StopReason::ForcedOff => {
                        if quit_requested.load(std::sync::atomic::Ordering::SeqCst)
                            || control.as_ref().is_some_and(|c| c.quit_requested())
                        {
                            0
                        } else {
                            1
                        }
                    }
                    StopReason::Fault(_) => 1,
                };
            }
            Ok(VmEvent::Fault(report)) => {
                eprintln!("\nvireo: guest fault: {report}");
            }
            Ok(VmEvent::Reset) => log::info!("guest reset; restarting"),
            Ok(_) => {}
            Err(_) => break 1,
        }
    };
    let _ = stdout.flush();
    drop(control);
    drop(raw);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_problems_are_phrased_with_the_flags() {
        let mut spec = VmSpec::linux("/nonexistent/vmlinuz");
        spec.memory_mib = 0;
        spec.cpus = 0;
        spec.cdrom = Some("/nonexistent.iso".into());
        let host = vmm_engine::HostLimits::unknown();
        assert_eq!(
            problems(&spec, &host),
            vec![
                "memory must be at least 1 MiB (try --memory 256)".to_string(),
                "a VM needs at least 1 CPU (try --cpus 1)".to_string(),
                "--kernel /nonexistent/vmlinuz: No such file or directory (os error 2) (check the path)"
                    .to_string(),
                "--cdrom /nonexistent.iso: No such file or directory (os error 2) (check the path)"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn ctrl_a_escapes() {
        let mut p = EscapeParser::default();
        assert_eq!(p.feed(b"ab"), vec![Input::Guest(b"ab".to_vec())]);
        assert_eq!(p.feed(&[1]), vec![]);
        assert_eq!(p.feed(&[1, b'c']), vec![Input::Guest(vec![1, b'c'])]);
        assert_eq!(
            p.feed(&[b'z', 1, b'x', b'q']),
            vec![Input::Guest(vec![b'z']), Input::Quit]
        );
        let mut p = EscapeParser::default();
        assert_eq!(p.feed(&[1, b'y']), vec![Input::Guest(vec![1, b'y'])]);
    }

    #[test]
    fn disk_and_nic_options() {
        let d = parse_disk("x.img,format=qcow2,if=virtio,readonly=on").unwrap();
        assert_eq!(
            (d.format, d.interface, d.readonly),
            (DiskFormat::Qcow2, DiskInterface::Virtio, true)
        );
        assert!(parse_disk("x.img,bogus=1")
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse_disk("").is_err());
        let n = parse_nic("bridge=br100,mac=52:54:00:00:00:01").unwrap();
        assert_eq!(n.bridge, "br100");
        assert!(parse_nic("mac=1").is_err());
    }
}
