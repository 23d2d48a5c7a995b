//! The one set of rules for a VM definition: [`VmSpec::check`] judges a
//! spec against the host ([`HostLimits`]) and names, for each problem, the
//! field at fault and what is wrong with it. The words never name a CLI
//! flag or a GUI label: the CLI and the GUI phrase a problem in their own
//! terms from its [`SpecField`] and [`ProblemKind`]. [`crate::Vm::create`]
//! runs the same check, so nothing a client skips gets through.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::host::HostLimits;
use crate::spec::{BootSpec, DiskInterface, VmSpec};

/// Debian's SeaBIOS, used when a firmware boot names no BIOS image.
pub const DEFAULT_BIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// The IDE controller's places for disks besides the CD-ROM.
pub const MAX_IDE_DISKS: usize = 3;

/// The most vCPUs an i440FX VM has (one APIC ID per vCPU, 8 bits).
pub const MAX_CPUS: u32 = 255;

/// The longest kernel command line, in bytes (the loader's buffer, less the
/// terminating NUL).
pub const MAX_CMDLINE: usize = crate::boot::linux::CMDLINE_MAX - 1;

/// The part of a [`VmSpec`] a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecField {
    Memory,
    Cpus,
    Kernel,
    Initrd,
    Cmdline,
    Cdrom,
    /// `disks[i]`.
    Disk(usize),
    /// `nics[i]`.
    Nic(usize),
    /// The BIOS image of a firmware boot (given, or the default).
    Firmware,
}

/// What sort of problem it is, so a client can add its own hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A number below the least that works.
    TooSmall,
    /// A number (or a length) above what this host or the machine allows.
    TooLarge,
    /// The file cannot be read (missing, or no permission).
    Unreadable,
    /// The path names a directory, not a file.
    NotAFile,
    /// The file is readable but is not what the field needs.
    WrongContent,
    /// The value is malformed (a MAC, the characters of a command line).
    Invalid,
    /// More of a device than the machine has places for.
    TooMany,
}

/// One thing wrong with a definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: SpecField,
    pub kind: ProblemKind,
    /// What is wrong, in words that name no CLI flag or GUI label.
    pub message: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The messages of `problems`, joined into one sentence list.
pub fn describe(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl SpecProblem {
    fn new(field: SpecField, kind: ProblemKind, message: String) -> Self {
        SpecProblem {
            field,
            kind,
            message,
        }
    }
}

impl VmSpec {
    /// Every problem of this definition on a host with `host`'s limits, in
    /// field order; empty when the definition can be built. Files are
    /// looked at (exists, is a file, the ISO and BIOS signatures), not
    /// opened for use: a disk another VM holds is found when it is opened.
    pub fn check(&self, host: &HostLimits) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_memory(self.memory_mib, host, &mut out);
        check_cpus(self.cpus, host, &mut out);
        match &self.boot {
            BootSpec::Linux(l) => {
                if let Err(p) = check_file(&l.kernel, SpecField::Kernel, "kernel") {
                    out.push(p);
                }
                if let Some(i) = &l.initrd {
                    if let Err(p) = check_file(i, SpecField::Initrd, "initrd") {
                        out.push(p);
                    }
                }
                if let Err(p) = check_cmdline(&l.cmdline) {
                    out.push(p);
                }
            }
            BootSpec::Firmware(fw) => {
                let bios = fw.bios.as_deref().unwrap_or(Path::new(DEFAULT_BIOS));
                if let Err(p) = check_bios(bios, fw.bios.is_none()) {
                    out.push(p);
                }
            }
        }
        if let Some(iso) = &self.cdrom {
            if let Err(p) = check_iso(iso) {
                out.push(p);
            }
        }
        let mut ide = 0;
        for (i, d) in self.disks.iter().enumerate() {
            if let Err(p) = check_file(&d.path, SpecField::Disk(i), "disk image") {
                out.push(p);
            }
            if d.interface == DiskInterface::Ide {
                ide += 1;
                if ide == MAX_IDE_DISKS + 1 {
                    out.push(SpecProblem::new(
                        SpecField::Disk(i),
                        ProblemKind::TooMany,
                        format!(
                            "{} is IDE disk number {ide}; the IDE controller holds at most \
                             {MAX_IDE_DISKS} besides the CD-ROM (attach more disks as virtio)",
                            d.path.display()
                        ),
                    ));
                }
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            if n.bridge.is_empty() {
                out.push(SpecProblem::new(
                    SpecField::Nic(i),
                    ProblemKind::Invalid,
                    "a network card needs the name of the host bridge it joins".into(),
                ));
            }
            if !n.mac.is_empty() && crate::net::parse_mac(&n.mac).is_none() {
                out.push(SpecProblem::new(
                    SpecField::Nic(i),
                    ProblemKind::Invalid,
                    format!(
                        "MAC address {:?} is not six hex bytes like 52:54:00:12:34:56",
                        n.mac
                    ),
                ));
            }
        }
        out
    }
}

fn check_memory(mib: u64, host: &HostLimits, out: &mut Vec<SpecProblem>) {
    let p = |kind, msg: String| SpecProblem::new(SpecField::Memory, kind, msg);
    if mib == 0 {
        out.push(p(
            ProblemKind::TooSmall,
            "memory must be at least 1 MiB".into(),
        ));
    } else if mib < 2 {
        out.push(p(
            ProblemKind::TooSmall,
            "memory of 1 MiB is too small to boot anything".into(),
        ));
    } else if let Some(have) = host.memory_mib.filter(|&h| mib > h) {
        out.push(p(
            ProblemKind::TooLarge,
            format!("memory of {mib} MiB is more than this host has ({have} MiB)"),
        ));
    }
}

fn check_cpus(cpus: u32, host: &HostLimits, out: &mut Vec<SpecProblem>) {
    let max = host.max_vcpus.unwrap_or(MAX_CPUS).min(MAX_CPUS);
    if cpus == 0 {
        out.push(SpecProblem::new(
            SpecField::Cpus,
            ProblemKind::TooSmall,
            "a VM needs at least 1 CPU".into(),
        ));
    } else if cpus > max {
        out.push(SpecProblem::new(
            SpecField::Cpus,
            ProblemKind::TooLarge,
            format!("{cpus} CPUs is more than KVM allows here ({max})"),
        ));
    }
}

/// `path` must be a regular file this process can open for reading.
fn check_file(path: &Path, field: SpecField, what: &str) -> Result<File, SpecProblem> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        SpecProblem::new(
            field,
            ProblemKind::Unreadable,
            format!("{shown}: {e} (check the path)"),
        )
    })?;
    // A directory is never an image. Anything else that can be opened and
    // read is the user's choice: a block device (/dev/sr0) or a pipe.
    if meta.is_dir() {
        return Err(SpecProblem::new(
            field,
            ProblemKind::NotAFile,
            format!("{shown}: a directory, not a file; the {what} must be a file"),
        ));
    }
    File::open(path).map_err(|e| {
        SpecProblem::new(
            field,
            ProblemKind::Unreadable,
            format!("{shown}: cannot read the {what}: {e}"),
        )
    })
}

fn check_cmdline(cmdline: &str) -> Result<(), SpecProblem> {
    if cmdline.len() > MAX_CMDLINE {
        return Err(SpecProblem::new(
            SpecField::Cmdline,
            ProblemKind::TooLarge,
            format!(
                "the kernel command line is {} bytes; the limit is {MAX_CMDLINE}",
                cmdline.len()
            ),
        ));
    }
    if let Some(c) = cmdline.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(SpecProblem::new(
            SpecField::Cmdline,
            ProblemKind::Invalid,
            format!(
                "the kernel command line holds {c:?}; only printable ASCII characters and spaces are allowed"
            ),
        ));
    }
    Ok(())
}

/// A CD-ROM image must be an ISO 9660 image: "CD001" at byte 32769 (the
/// first volume descriptor). The one ISO check: clients call this too.
pub fn check_iso(path: &Path) -> Result<(), SpecProblem> {
    let mut f = check_file(path, SpecField::Cdrom, "CD-ROM image")?;
    let mut magic = [0u8; 5];
    let ok = f.seek(SeekFrom::Start(32769)).is_ok() && f.read_exact(&mut magic).is_ok();
    if !ok || &magic != b"CD001" {
        return Err(SpecProblem::new(
            SpecField::Cdrom,
            ProblemKind::WrongContent,
            format!(
                "{}: not an ISO 9660 image (no CD001 descriptor at byte 32769); an .iso file is needed",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// A BIOS image: a file whose size is a multiple of 64 KiB, up to 16 MiB.
fn check_bios(path: &Path, is_default: bool) -> Result<(), SpecProblem> {
    let f = check_file(path, SpecField::Firmware, "BIOS image").map_err(|mut p| {
        if is_default {
            p.message = format!(
                "{} (the default BIOS; install Debian's seabios package, or name another BIOS image)",
                p.message
            );
        }
        p
    })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if size == 0 || !size.is_multiple_of(0x10000) || size > 16 << 20 {
        return Err(SpecProblem::new(
            SpecField::Firmware,
            ProblemKind::WrongContent,
            format!(
                "{} is not a BIOS image: its size ({size} bytes) is not a multiple of 64 KiB up to 16 MiB",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DiskSpec, NicSpec};
    use std::path::PathBuf;

    fn host() -> HostLimits {
        HostLimits {
            memory_mib: Some(4096),
            max_vcpus: Some(8),
            kvm_unusable: None,
        }
    }

    /// A spec whose files all exist, so each test breaks one thing.
    struct Fixture {
        dir: tempfile::TempDir,
        spec: VmSpec,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"kernel").unwrap();
        let spec = VmSpec::linux(&kernel);
        Fixture { dir, spec }
    }

    fn fields(spec: &VmSpec, host: &HostLimits) -> Vec<(SpecField, ProblemKind)> {
        spec.check(host)
            .into_iter()
            .map(|p| (p.field, p.kind))
            .collect()
    }

    fn iso(dir: &Path, good: bool) -> PathBuf {
        let p = dir.join(if good { "good.iso" } else { "bad.iso" });
        let mut data = vec![0u8; 40000];
        if good {
            data[32769..32774].copy_from_slice(b"CD001");
        }
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn a_good_spec_has_no_problems() {
        let f = fixture();
        assert_eq!(f.spec.check(&host()), vec![]);
    }

    #[test]
    fn memory_rules() {
        let mut f = fixture();
        f.spec.memory_mib = 0;
        let p = f.spec.check(&host());
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].field, p[0].kind),
            (SpecField::Memory, ProblemKind::TooSmall)
        );
        assert!(p[0].message.contains("at least 1 MiB"), "{}", p[0]);
        f.spec.memory_mib = 1;
        let p = f.spec.check(&host());
        assert!(p[0].message.contains("too small to boot"), "{}", p[0]);
        f.spec.memory_mib = 4097;
        let p = f.spec.check(&host());
        assert_eq!(p[0].kind, ProblemKind::TooLarge);
        assert!(
            p[0].message.contains("more than this host has (4096 MiB)"),
            "{}",
            p[0]
        );
        f.spec.memory_mib = 4096;
        assert_eq!(f.spec.check(&host()), vec![]);
        // An unknown host size applies no upper limit.
        f.spec.memory_mib = 1 << 30;
        assert_eq!(f.spec.check(&HostLimits::unknown()), vec![]);
    }

    #[test]
    fn cpu_rules() {
        let mut f = fixture();
        f.spec.cpus = 0;
        assert_eq!(
            fields(&f.spec, &host()),
            vec![(SpecField::Cpus, ProblemKind::TooSmall)]
        );
        f.spec.cpus = 9;
        let p = f.spec.check(&host());
        assert_eq!(
            (p[0].field, p[0].kind),
            (SpecField::Cpus, ProblemKind::TooLarge)
        );
        assert!(
            p[0].message.contains("more than KVM allows here (8)"),
            "{}",
            p[0]
        );
        f.spec.cpus = 8;
        assert_eq!(f.spec.check(&host()), vec![]);
        // The machine's own limit holds whatever KVM says.
        let big = HostLimits {
            max_vcpus: Some(1024),
            ..host()
        };
        f.spec.cpus = 256;
        assert_eq!(
            fields(&f.spec, &big),
            vec![(SpecField::Cpus, ProblemKind::TooLarge)]
        );
        assert_eq!(
            fields(&f.spec, &HostLimits::unknown()),
            vec![(SpecField::Cpus, ProblemKind::TooLarge)]
        );
    }

    #[test]
    fn kernel_and_initrd_must_be_readable_files() {
        let mut f = fixture();
        let BootSpec::Linux(l) = &mut f.spec.boot else {
            unreachable!()
        };
        l.kernel = "/nonexistent/vmlinuz".into();
        l.initrd = Some(f.dir.path().to_path_buf());
        let p = f.spec.check(&host());
        assert_eq!(
            p.iter().map(|p| (p.field, p.kind)).collect::<Vec<_>>(),
            vec![
                (SpecField::Kernel, ProblemKind::Unreadable),
                (SpecField::Initrd, ProblemKind::NotAFile)
            ]
        );
        assert!(
            p[0].message.starts_with("/nonexistent/vmlinuz: "),
            "{}",
            p[0]
        );
    }

    #[test]
    fn cmdline_rules() {
        let mut f = fixture();
        let BootSpec::Linux(l) = &mut f.spec.boot else {
            unreachable!()
        };
        l.cmdline = "x".repeat(MAX_CMDLINE);
        assert_eq!(f.spec.check(&host()), vec![]);
        let BootSpec::Linux(l) = &mut f.spec.boot else {
            unreachable!()
        };
        l.cmdline.push('x');
        assert_eq!(
            fields(&f.spec, &host()),
            vec![(SpecField::Cmdline, ProblemKind::TooLarge)]
        );
        let BootSpec::Linux(l) = &mut f.spec.boot else {
            unreachable!()
        };
        l.cmdline = "console=ttyS0\nquiet".into();
        assert_eq!(
            fields(&f.spec, &host()),
            vec![(SpecField::Cmdline, ProblemKind::Invalid)]
        );
    }

    #[test]
    fn cdrom_must_be_an_iso() {
        let mut f = fixture();
        f.spec.cdrom = Some(iso(f.dir.path(), true));
        assert_eq!(f.spec.check(&host()), vec![]);
        f.spec.cdrom = Some(iso(f.dir.path(), false));
        let p = f.spec.check(&host());
        assert_eq!(
            (p[0].field, p[0].kind),
            (SpecField::Cdrom, ProblemKind::WrongContent)
        );
        assert!(p[0].message.contains("not an ISO 9660 image"), "{}", p[0]);
        // Shorter than the descriptor.
        let short = f.dir.path().join("short.iso");
        std::fs::write(&short, b"CD001").unwrap();
        assert_eq!(
            check_iso(&short).unwrap_err().kind,
            ProblemKind::WrongContent
        );
        assert_eq!(
            check_iso(Path::new("/nonexistent.iso")).unwrap_err().kind,
            ProblemKind::Unreadable
        );
    }

    #[test]
    fn disks_must_exist_and_fit_the_ide_controller() {
        let mut f = fixture();
        let disk = |name: &str, interface| {
            let path = f.dir.path().join(name);
            std::fs::write(&path, [0u8; 512]).unwrap();
            DiskSpec {
                path,
                format: Default::default(),
                interface,
                readonly: false,
            }
        };
        let mut disks: Vec<DiskSpec> = (0..3)
            .map(|i| disk(&format!("d{i}"), DiskInterface::Ide))
            .collect();
        disks.push(disk("v", DiskInterface::Virtio));
        f.spec.disks = disks;
        assert_eq!(f.spec.check(&host()), vec![]);
        f.spec.disks.push(disk("d3", DiskInterface::Ide));
        f.spec.disks.push(DiskSpec {
            path: "/nonexistent.img".into(),
            format: Default::default(),
            interface: DiskInterface::Virtio,
            readonly: false,
        });
        assert_eq!(
            fields(&f.spec, &host()),
            vec![
                (SpecField::Disk(4), ProblemKind::TooMany),
                (SpecField::Disk(5), ProblemKind::Unreadable)
            ]
        );
    }

    #[test]
    fn nics_need_a_bridge_and_a_valid_mac() {
        let mut f = fixture();
        f.spec.nics = vec![
            NicSpec {
                bridge: "br0".into(),
                mac: String::new(),
            },
            NicSpec {
                bridge: "br0".into(),
                mac: "52:54:00:12:34:56".into(),
            },
        ];
        assert_eq!(f.spec.check(&host()), vec![]);
        f.spec.nics.push(NicSpec {
            bridge: String::new(),
            mac: "52:54:00:zz:34:56".into(),
        });
        assert_eq!(
            fields(&f.spec, &host()),
            vec![
                (SpecField::Nic(2), ProblemKind::Invalid),
                (SpecField::Nic(2), ProblemKind::Invalid)
            ]
        );
    }

    #[test]
    fn bios_must_be_a_whole_number_of_64k_blocks() {
        let mut f = fixture();
        let bios = f.dir.path().join("bios.bin");
        std::fs::write(&bios, vec![0u8; 0x20000]).unwrap();
        f.spec.boot = BootSpec::Firmware(crate::spec::FirmwareBoot {
            bios: Some(bios.clone()),
            order: Default::default(),
        });
        assert_eq!(f.spec.check(&host()), vec![]);
        std::fs::write(&bios, vec![0u8; 1000]).unwrap();
        assert_eq!(
            fields(&f.spec, &host()),
            vec![(SpecField::Firmware, ProblemKind::WrongContent)]
        );
        f.spec.boot = BootSpec::Firmware(crate::spec::FirmwareBoot {
            bios: Some("/nonexistent/bios.bin".into()),
            order: Default::default(),
        });
        assert_eq!(
            fields(&f.spec, &host()),
            vec![(SpecField::Firmware, ProblemKind::Unreadable)]
        );
    }

    #[test]
    fn no_message_names_a_cli_flag() {
        let mut f = fixture();
        f.spec.memory_mib = 0;
        f.spec.cpus = 0;
        f.spec.cdrom = Some(iso(f.dir.path(), false));
        f.spec.boot = BootSpec::Firmware(Default::default());
        f.spec.nics = vec![NicSpec {
            bridge: String::new(),
            mac: "x".into(),
        }];
        let problems = f.spec.check(&host());
        assert!(problems.len() >= 4, "{problems:?}");
        for p in problems {
            assert!(!p.message.contains("--"), "{p}");
        }
    }
}
