//! The wizard's state and its checks: the fields as typed, what each page
//! needs before Forward, and [`Wizard::build`], which turns them into a
//! [`NewVm`]. Drawing is in `view.rs`.

use crate::library::{check_name, VmDefinition};
use crate::model::{HostInfo, NewVm};
use std::path::{Path, PathBuf};
use vmm_engine::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, FirmwareBoot, LinuxBoot, NicSpec,
    SpecField, SpecProblem, VmSpec,
};

pub const STEP_TITLES: [&str; 5] = [
    "Choose how to install the operating system",
    "Choose memory and CPU settings",
    "Configure storage",
    "Name the VM and choose its network",
    "Ready to begin the installation",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Iso,
    Import,
    Kernel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Create,
    Existing,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    None,
    Bridge,
}

/// Which path field a Browse… dialog fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Field {
    Iso,
    Import,
    Kernel,
    Initrd,
    Existing,
    NewDisk,
}

type FsCheck = (String, u64, Result<(), String>);

/// The wizard's state.
pub struct Wizard {
    pub step: usize,
    pub media: Media,
    pub iso: String,
    pub import: String,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    pub memory: String,
    pub cpus: String,
    pub storage: Storage,
    pub size_gib: String,
    pub format: DiskFormat,
    pub disk_path: String,
    pub(super) disk_path_edited: bool,
    pub existing: String,
    pub name: String,
    pub network: Network,
    pub bridge: String,
    /// An error from Finish (e.g. the disk could not be created).
    pub finish_error: Option<String>,
    pub(super) host: HostInfo,
    pub(super) images_dir: PathBuf,
    pub(super) taken: Vec<String>,
    pub(super) browse: Option<crossbeam_channel::Receiver<(Field, PathBuf)>>,
    pub(super) fs_cache: Option<FsCheck>,
    /// The fields (by label) the user has edited; a field shows its error
    /// once edited or filled.
    pub(super) touched: std::collections::HashSet<String>,
}

impl Wizard {
    /// A fresh wizard; `taken` are the names already in use.
    pub fn new(host: HostInfo, images_dir: PathBuf, taken: Vec<String>) -> Wizard {
        let name = (1..)
            .map(|i| format!("vm{i}"))
            .find(|n| !taken.contains(n))
            .unwrap_or_else(|| "vm".into());
        let mut w = Wizard {
            step: 0,
            media: Media::Iso,
            iso: String::new(),
            import: String::new(),
            kernel: String::new(),
            initrd: String::new(),
            cmdline: "console=ttyS0".into(),
            memory: host
                .limits
                .memory_mib
                .unwrap_or(1024)
                .clamp(2, 1024)
                .to_string(),
            cpus: "1".into(),
            storage: Storage::Create,
            size_gib: "20".into(),
            format: DiskFormat::Qcow2,
            disk_path: String::new(),
            disk_path_edited: false,
            existing: String::new(),
            name,
            network: Network::None,
            bridge: host.bridges.first().cloned().unwrap_or_default(),
            finish_error: None,
            host,
            images_dir,
            taken,
            browse: None,
            fs_cache: None,
            touched: Default::default(),
        };
        w.update_default_path();
        w
    }

    pub(super) fn update_default_path(&mut self) {
        if !self.disk_path_edited {
            let ext = match self.format {
                DiskFormat::Qcow2 => "qcow2",
                DiskFormat::Raw => "img",
            };
            self.disk_path = self
                .images_dir
                .join(format!("{}.{ext}", self.name))
                .display()
                .to_string();
        }
    }

    // ---- checks, one per field ----
    //
    // The rules for a definition are the engine's (`VmSpec::check`): the
    // wizard builds the spec its fields describe and shows each problem
    // under the field it names, in the wizard's words. What is left here is
    // parsing the typed text and what the engine cannot judge before the
    // VM exists: the new disk's path and size, the name, the host bridge.

    /// The engine's problems with the spec the fields describe, minus those
    /// about the disk the wizard is still to create.
    fn spec_problems(&self) -> Vec<SpecProblem> {
        let spec = self.draft_spec();
        let creating = self.storage_used() == Storage::Create;
        spec.check(&self.host.limits)
            .into_iter()
            .filter(|p| !(creating && matches!(p.field, SpecField::Disk(_))))
            .collect()
    }

    /// The first problem with `field`, phrased for the wizard.
    fn problem(&self, problems: &[SpecProblem], field: SpecField) -> Result<(), String> {
        match problems.iter().find(|p| p.field == field) {
            Some(p) => Err(phrase(p)),
            None => Ok(()),
        }
    }

    pub fn check_media(&self) -> Vec<(&'static str, Result<(), String>)> {
        let problems = self.spec_problems();
        match self.media {
            Media::Iso => vec![(
                "iso",
                non_empty(&self.iso, "ISO image")
                    .and_then(|()| self.problem(&problems, SpecField::Cdrom)),
            )],
            Media::Import => vec![("import", self.check_import().map(|_| ()))],
            Media::Kernel => vec![
                (
                    "kernel",
                    non_empty(&self.kernel, "kernel")
                        .and_then(|()| self.problem(&problems, SpecField::Kernel)),
                ),
                ("initrd", self.problem(&problems, SpecField::Initrd)),
                ("cmdline", self.problem(&problems, SpecField::Cmdline)),
            ],
        }
    }

    pub fn check_memory(&self) -> Result<u64, String> {
        let v = parse_memory(&self.memory)?;
        self.problem(&self.spec_problems(), SpecField::Memory)?;
        Ok(v)
    }

    pub fn check_cpus(&self) -> Result<u32, String> {
        let v = parse_cpus(&self.cpus)?;
        self.problem(&self.spec_problems(), SpecField::Cpus)?;
        Ok(v)
    }

    pub(super) fn storage_used(&self) -> Storage {
        if self.media == Media::Import {
            Storage::None
        } else {
            self.storage
        }
    }

    pub fn check_size(&self) -> Result<u64, String> {
        check_size_gib(&self.size_gib)
    }

    /// The new disk's path (free space, writable folder); cached, so the
    /// file system is only asked again when the path or size changes.
    pub(super) fn check_new_disk(&mut self) -> Result<(), String> {
        let bytes = self.check_size().unwrap_or(0);
        if let Some((p, b, r)) = &self.fs_cache {
            if *p == self.disk_path && *b == bytes {
                return r.clone();
            }
        }
        let r = check_new_disk_path(&self.disk_path, bytes);
        self.fs_cache = Some((self.disk_path.clone(), bytes, r.clone()));
        r
    }

    /// The image to import: the engine's file check, then its format probe.
    pub fn check_import(&self) -> Result<DiskFormat, String> {
        non_empty(&self.import, "disk image")?;
        self.problem(&self.spec_problems(), SpecField::Disk(0))?;
        probe(&self.import)
    }

    pub fn check_existing(&self) -> Result<DiskFormat, String> {
        non_empty(&self.existing, "disk image")?;
        self.problem(&self.spec_problems(), SpecField::Disk(0))?;
        probe(&self.existing)
    }

    pub fn check_name(&self) -> Result<(), String> {
        check_name(self.name.trim())?;
        if self.taken.iter().any(|t| t == self.name.trim()) {
            return Err(format!(
                "A VM named \"{}\" already exists: choose another name.",
                self.name.trim()
            ));
        }
        Ok(())
    }

    pub fn check_bridge(&self) -> Result<(), String> {
        if self.network == Network::None {
            return Ok(());
        }
        check_bridge(self.bridge.trim(), &self.host.bridges)?;
        self.problem(&self.spec_problems(), SpecField::Nic(0))
    }

    /// A problem none of the pages has a field for (the BIOS image),
    /// shown on the summary page.
    pub fn check_other(&self) -> Result<(), String> {
        self.problem(&self.spec_problems(), SpecField::Firmware)
    }

    /// Whether the current page may be left with Forward.
    pub fn page_valid(&mut self, step: usize) -> bool {
        match step {
            0 => self.check_media().iter().all(|(_, r)| r.is_ok()),
            1 => self.check_memory().is_ok() && self.check_cpus().is_ok(),
            2 => match self.storage_used() {
                Storage::Create => self.check_size().is_ok() && self.check_new_disk().is_ok(),
                Storage::Existing => self.check_existing().is_ok(),
                Storage::None => true,
            },
            3 => self.check_name().is_ok() && self.check_bridge().is_ok(),
            _ => (0..4).all(|s| self.page_valid(s)) && self.check_other().is_ok(),
        }
    }

    /// The spec the fields describe as they are now, checked or not (a
    /// number that does not parse counts as 0; its field reports the
    /// parse error first).
    fn draft_spec(&self) -> VmSpec {
        let path = |s: &str| PathBuf::from(s.trim());
        // The format does not matter to the spec check; `build` probes it.
        let disk = |p: PathBuf| DiskSpec {
            path: p,
            format: DiskFormat::Raw,
            interface: DiskInterface::Virtio,
            readonly: false,
        };
        let mut disks = Vec::new();
        match self.storage_used() {
            Storage::Create => disks.push(DiskSpec {
                format: self.format,
                ..disk(path(&self.disk_path))
            }),
            Storage::Existing => disks.push(disk(path(&self.existing))),
            Storage::None => {}
        }
        let firmware = |order| BootSpec::Firmware(FirmwareBoot { bios: None, order });
        let (boot, cdrom) = match self.media {
            Media::Iso => (firmware(BootOrder::CdromFirst), Some(path(&self.iso))),
            Media::Import => {
                disks.insert(0, disk(path(&self.import)));
                (firmware(BootOrder::DiskFirst), None)
            }
            Media::Kernel => (
                BootSpec::Linux(LinuxBoot {
                    kernel: path(&self.kernel),
                    initrd: (!self.initrd.trim().is_empty()).then(|| path(&self.initrd)),
                    cmdline: self.cmdline.clone(),
                }),
                None,
            ),
        };
        let nics = match self.network {
            Network::None => Vec::new(),
            Network::Bridge => vec![NicSpec {
                bridge: self.bridge.trim().to_string(),
                mac: String::new(),
            }],
        };
        VmSpec {
            name: self.name.trim().to_string(),
            memory_mib: parse_memory(&self.memory).unwrap_or(0),
            cpus: parse_cpus(&self.cpus).unwrap_or(0),
            boot,
            cdrom,
            disks,
            nics,
            firmware_log: None,
            no_reboot: false,
        }
    }

    /// Builds the definition (valid pages assumed; checked again here).
    pub fn build(&mut self) -> Result<NewVm, String> {
        if !self.page_valid(4) {
            return Err("Some settings are not valid: go back and fix them.".into());
        }
        let mut spec = self.draft_spec();
        let mut new_disk = None;
        let mut owned = Vec::new();
        match self.storage_used() {
            Storage::Create => {
                let path = spec.disks[0].path.clone();
                owned.push(path.clone());
                new_disk = Some((path, self.format, self.check_size()?));
            }
            Storage::Existing => spec.disks[0].format = self.check_existing()?,
            Storage::None => {}
        }
        if self.media == Media::Import {
            spec.disks[0].format = self.check_import()?;
        }
        for nic in &mut spec.nics {
            nic.mac = vmm_engine::mac::random();
        }
        let mut def = VmDefinition::new(spec);
        def.owned_disks = owned;
        Ok(NewVm { def, new_disk })
    }
}

/// A path field must not be blank.
fn non_empty(path: &str, what: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err(format!("Enter the path of the {what}, or use Browse…"));
    }
    Ok(())
}

/// The engine's format probe (raw or qcow2) of a disk image.
fn probe(path: &str) -> Result<DiskFormat, String> {
    vmm_engine::disk::probe(Path::new(path.trim())).map_err(|e| phrase_text(&e.to_string()))
}

/// A spec problem in the wizard's words: the engine's sentence, begun with
/// a capital and ended with a full stop.
pub fn phrase(p: &SpecProblem) -> String {
    phrase_text(&p.message)
}

fn phrase_text(m: &str) -> String {
    let mut chars = m.trim().chars();
    let mut s: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !s.ends_with(['.', '…']) {
        s.push('.');
    }
    s
}

pub fn parse_memory(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| "Enter the memory as a whole number of MiB.".to_string())
}

pub fn parse_cpus(text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| "Enter the number of CPUs as a whole number.".to_string())
}

/// Size in GiB -> bytes.
pub fn check_size_gib(text: &str) -> Result<u64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| "Enter the disk size in GiB, e.g. 20.".to_string())?;
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return Err("The disk size must be more than 0 GiB.".into());
    }
    if v > 65536.0 {
        return Err("The disk size can be at most 65536 GiB.".into());
    }
    let bytes = (v * 1024.0 * 1024.0 * 1024.0) as u64;
    Ok(bytes.div_ceil(512) * 512)
}

/// The new image's path: not an existing file, in a folder (existing or to
/// be created) that can be written, on a file system with room for it.
pub fn check_new_disk_path(path: &str, bytes: u64) -> Result<(), String> {
    let p = Path::new(path.trim());
    if path.trim().is_empty() {
        return Err("Enter a path for the new disk image.".into());
    }
    if !p.is_absolute() {
        return Err("Enter an absolute path for the disk image.".into());
    }
    if p.exists() {
        return Err(format!(
            "{} already exists: choose another path, or \"Select existing\".",
            p.display()
        ));
    }
    // The nearest folder that exists must be a writable folder.
    let mut dir = p.parent();
    while let Some(d) = dir {
        if d.exists() {
            break;
        }
        dir = d.parent();
    }
    let Some(dir) = dir else {
        return Err("The disk path has no folder.".into());
    };
    if !dir.is_dir() {
        return Err(format!(
            "Can't write the disk image: {} is not a folder.",
            dir.display()
        ));
    }
    if !dir_writable(dir) {
        return Err(format!(
            "Can't write the disk image: the folder {} is not writable.",
            dir.display()
        ));
    }
    if let Some(free) = free_bytes(dir) {
        if bytes > free {
            return Err(format!(
                "Not enough free space: the disk needs {:.1} GiB but {} has {:.1} GiB free.",
                bytes as f64 / GIB,
                dir.display(),
                free as f64 / GIB
            ));
        }
    }
    Ok(())
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn dir_writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string; both calls only read it
    // (and write the plain-data statvfs struct we own).
    unsafe {
        if libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) != 0 {
            return false;
        }
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) == 0 && s.f_flag & libc::ST_RDONLY != 0 {
            return false;
        }
    }
    true
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: as in dir_writable.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
}

/// A bridge must be named and exist on the host.
pub fn check_bridge(name: &str, bridges: &[String]) -> Result<(), String> {
    if name.is_empty() {
        return Err("Enter the bridge device name, e.g. br0.".into());
    }
    if !bridges.iter().any(|b| b == name) {
        return Err(format!(
            "There is no bridge named {name} on this host. Create one with: sudo ip link add {name} type bridge && sudo ip link set {name} up"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostInfo {
        HostInfo {
            limits: vmm_engine::HostLimits {
                memory_mib: Some(4096),
                max_vcpus: Some(4),
                kvm_unusable: None,
            },
            bridges: vec!["br0".into()],
        }
    }

    fn wizard(t: &tempfile::TempDir) -> Wizard {
        Wizard::new(host(), t.path().join("images"), vec!["vm1".into()])
    }

    #[test]
    fn the_iso_field_shows_the_engines_verdict() {
        let t = tempfile::tempdir().unwrap();
        let mut w = wizard(&t);
        assert_eq!(
            w.check_media()[0].1,
            Err("Enter the path of the ISO image, or use Browse…".into())
        );
        let p = t.path().join("x.iso");
        let mut data = vec![0u8; 40000];
        data[32769..32774].copy_from_slice(b"CD001");
        std::fs::write(&p, &data).unwrap();
        w.iso = p.display().to_string();
        assert_eq!(w.check_media()[0].1, Ok(()));
        data[32769] = b'X';
        std::fs::write(&p, &data).unwrap();
        let e = w.check_media()[0].1.clone().unwrap_err();
        let engine = vmm_engine::check_iso(&p).unwrap_err();
        assert_eq!(e, phrase(&engine));
        assert!(e.contains("not an ISO 9660 image"), "{e}");
        assert!(e.ends_with('.'), "{e}");
        w.iso = "/nonexistent/a.iso".into();
        let e = w.check_media()[0].1.clone().unwrap_err();
        assert!(
            e.contains("/nonexistent/a.iso") && e.contains("check the path"),
            "{e}"
        );
    }

    #[test]
    fn memory_and_cpus_follow_the_engines_rules() {
        let t = tempfile::tempdir().unwrap();
        let mut w = wizard(&t);
        w.memory = "512".into();
        assert_eq!(w.check_memory(), Ok(512));
        w.memory = "0".into();
        assert_eq!(
            w.check_memory(),
            Err("Memory must be at least 1 MiB.".into())
        );
        // The wizard used to accept 1 MiB, which the engine then refused.
        w.memory = "1".into();
        assert!(w.check_memory().unwrap_err().contains("too small to boot"));
        w.memory = "4097".into();
        assert!(w
            .check_memory()
            .unwrap_err()
            .contains("more than this host has (4096 MiB)"));
        w.memory = "x".into();
        assert!(w.check_memory().unwrap_err().contains("whole number"));
        w.cpus = "4".into();
        assert_eq!(w.check_cpus(), Ok(4));
        w.cpus = "5".into();
        assert!(w
            .check_cpus()
            .unwrap_err()
            .contains("more than KVM allows here (4)"));
        w.cpus = "0".into();
        assert_eq!(w.check_cpus(), Err("A VM needs at least 1 CPU.".into()));
        assert!(!w.page_valid(1));
    }

    #[test]
    fn size_limits() {
        assert_eq!(check_size_gib("1"), Ok(1 << 30));
        assert!(check_size_gib("0").is_err());
        assert!(check_size_gib("-1").is_err());
        assert!(check_size_gib("NaN").is_err());
    }

    #[test]
    fn new_disk_path_checks() {
        let t = tempfile::tempdir().unwrap();
        let ok = t.path().join("sub/dir/a.qcow2");
        assert!(check_new_disk_path(ok.to_str().unwrap(), 1 << 30).is_ok());
        let file = t.path().join("afile");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_new_disk_path(file.to_str().unwrap(), 1)
            .unwrap_err()
            .contains("already exists"));
        let under_file = file.join("a.qcow2");
        assert!(check_new_disk_path(under_file.to_str().unwrap(), 1)
            .unwrap_err()
            .contains("not a folder"));
        assert!(check_new_disk_path(ok.to_str().unwrap(), u64::MAX / 2)
            .unwrap_err()
            .contains("Not enough free space"));
        assert!(check_new_disk_path("rel/a.qcow2", 1).is_err());
    }

    #[test]
    fn bridge_check_hints_how_to_create_one() {
        let b = vec!["br0".to_string()];
        assert!(check_bridge("br0", &b).is_ok());
        let e = check_bridge("br100", &b).unwrap_err();
        assert!(e.contains("ip link add br100 type bridge"), "{e}");
        assert!(check_bridge("", &b).is_err());
    }

    #[test]
    fn build_makes_an_iso_vm_with_a_new_disk() {
        let t = tempfile::tempdir().unwrap();
        let iso = t.path().join("x.iso");
        let mut data = vec![0u8; 40000];
        data[32769..32774].copy_from_slice(b"CD001");
        std::fs::write(&iso, &data).unwrap();
        let mut w = wizard(&t);
        assert_eq!(w.name, "vm2");
        assert!(!w.page_valid(0));
        w.iso = iso.display().to_string();
        w.size_gib = "1".into();
        w.network = Network::Bridge;
        let v = w.build().unwrap();
        assert_eq!(v.def.spec.name, "vm2");
        assert_eq!(v.def.spec.cdrom.as_deref(), Some(iso.as_path()));
        let disk = t.path().join("images/vm2.qcow2");
        assert_eq!(v.new_disk, Some((disk.clone(), DiskFormat::Qcow2, 1 << 30)));
        assert_eq!(v.def.spec.disks[0].path, disk);
        assert_eq!(v.def.spec.nics[0].bridge, "br0");
        assert!(v.def.spec.nics[0].mac.starts_with("52:54:00:"));
    }
}
