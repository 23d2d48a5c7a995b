//! The wizard's state and its checks: the fields as typed, what each page
//! needs before Forward, and [`Wizard::build`], which turns them into a
//! [`NewVm`]. Drawing is in `view.rs`.

use crate::library::{check_name, VmDefinition};
use crate::model::{HostInfo, NewVm};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use vmm_engine::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, FirmwareBoot, LinuxBoot, NicSpec,
    VmSpec,
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
            memory: host.memory_mib.clamp(1, 1024).to_string(),
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

    pub fn check_media(&self) -> Vec<(&'static str, Result<(), String>)> {
        match self.media {
            Media::Iso => vec![("iso", check_iso(&self.iso))],
            Media::Import => vec![("import", check_disk_image(&self.import).map(|_| ()))],
            Media::Kernel => vec![
                ("kernel", check_file(&self.kernel, "kernel")),
                (
                    "initrd",
                    if self.initrd.trim().is_empty() {
                        Ok(())
                    } else {
                        check_file(&self.initrd, "initrd")
                    },
                ),
            ],
        }
    }

    pub fn check_memory(&self) -> Result<u64, String> {
        check_memory(&self.memory, self.host.memory_mib)
    }

    pub fn check_cpus(&self) -> Result<u32, String> {
        check_cpus(&self.cpus, self.host.cpus)
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

    pub fn check_existing(&self) -> Result<DiskFormat, String> {
        check_disk_image(&self.existing)
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
        check_bridge(self.bridge.trim(), &self.host.bridges)
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
            _ => (0..4).all(|s| self.page_valid(s)),
        }
    }

    /// Builds the definition (valid pages assumed; checked again here).
    pub fn build(&mut self) -> Result<NewVm, String> {
        if !(0..4).all(|s| self.page_valid(s)) {
            return Err("Some settings are not valid: go back and fix them.".into());
        }
        let name = self.name.trim().to_string();
        let mut new_disk = None;
        let mut disks = Vec::new();
        let mut owned = Vec::new();
        match self.storage_used() {
            Storage::Create => {
                let path = PathBuf::from(self.disk_path.trim());
                let bytes = self.check_size()?;
                disks.push(DiskSpec {
                    path: path.clone(),
                    format: self.format,
                    interface: DiskInterface::Virtio,
                    readonly: false,
                });
                owned.push(path.clone());
                new_disk = Some((path, self.format, bytes));
            }
            Storage::Existing => disks.push(DiskSpec {
                path: PathBuf::from(self.existing.trim()),
                format: self.check_existing()?,
                interface: DiskInterface::Virtio,
                readonly: false,
            }),
            Storage::None => {}
        }
        let (boot, cdrom) = match self.media {
            Media::Iso => (
                BootSpec::Firmware(FirmwareBoot {
                    bios: None,
                    order: BootOrder::CdromFirst,
                }),
                Some(PathBuf::from(self.iso.trim())),
            ),
            Media::Import => {
                disks.insert(
                    0,
                    DiskSpec {
                        path: PathBuf::from(self.import.trim()),
                        format: check_disk_image(&self.import)?,
                        interface: DiskInterface::Virtio,
                        readonly: false,
                    },
                );
                (
                    BootSpec::Firmware(FirmwareBoot {
                        bios: None,
                        order: BootOrder::DiskFirst,
                    }),
                    None,
                )
            }
            Media::Kernel => (
                BootSpec::Linux(LinuxBoot {
                    kernel: PathBuf::from(self.kernel.trim()),
                    initrd: (!self.initrd.trim().is_empty())
                        .then(|| PathBuf::from(self.initrd.trim())),
                    cmdline: self.cmdline.clone(),
                }),
                None,
            ),
        };
        let nics = match self.network {
            Network::None => Vec::new(),
            Network::Bridge => vec![NicSpec {
                bridge: self.bridge.trim().to_string(),
                mac: random_mac(&name),
            }],
        };
        let spec = VmSpec {
            name,
            memory_mib: self.check_memory()?,
            cpus: self.check_cpus()?,
            boot,
            cdrom,
            disks,
            nics,
            firmware_log: None,
            no_reboot: false,
        };
        let mut def = VmDefinition::new(spec);
        def.owned_disks = owned;
        Ok(NewVm { def, new_disk })
    }
}

fn check_file(path: &str, what: &str) -> Result<(), String> {
    let p = path.trim();
    if p.is_empty() {
        return Err(format!("Enter the path of the {what}, or use Browse…."));
    }
    let m = std::fs::metadata(p).map_err(|_| format!("{p} doesn't exist: check the path."))?;
    if !m.is_file() {
        return Err(format!("{p} is not a file."));
    }
    Ok(())
}

/// The file must exist and carry the ISO9660 "CD001" volume descriptor at
/// byte 32769.
pub fn check_iso(path: &str) -> Result<(), String> {
    check_file(path, "ISO image")?;
    let p = path.trim();
    let mut f = std::fs::File::open(p).map_err(|e| format!("Can't read {p}: {e}"))?;
    let mut buf = [0u8; 32774];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("Can't read {p}: {e}")),
        }
    }
    if got < buf.len() || &buf[32769..32774] != b"CD001" {
        return Err(format!(
            "{p} is not an ISO image (no ISO9660 volume descriptor): choose a .iso file."
        ));
    }
    Ok(())
}

/// The file must be a raw or qcow2 image.
pub fn check_disk_image(path: &str) -> Result<DiskFormat, String> {
    check_file(path, "disk image")?;
    crate::connection::probe_disk_file(Path::new(path.trim())).map_err(|e| format!("{e}."))
}

pub fn check_memory(text: &str, host_mib: u64) -> Result<u64, String> {
    let v: u64 = text
        .trim()
        .parse()
        .map_err(|_| "Enter the memory as a whole number of MiB.".to_string())?;
    if v == 0 {
        return Err("Memory must be at least 1 MiB.".into());
    }
    if v > host_mib {
        return Err(format!(
            "The host has only {host_mib} MiB: enter at most {host_mib}."
        ));
    }
    Ok(v)
}

pub fn check_cpus(text: &str, host_cpus: u32) -> Result<u32, String> {
    let v: u32 = text
        .trim()
        .parse()
        .map_err(|_| "Enter the number of CPUs as a whole number.".to_string())?;
    if v == 0 {
        return Err("A VM needs at least 1 CPU.".into());
    }
    if v > host_cpus {
        return Err(format!(
            "The host has only {host_cpus} CPUs: enter at most {host_cpus}."
        ));
    }
    Ok(v)
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

/// A locally administered MAC in QEMU's 52:54:00 range, different for each
/// VM and call.
pub fn random_mac(seed: &str) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(seed.as_bytes());
    let v = h.finish();
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (v >> 16) as u8,
        (v >> 8) as u8,
        v as u8
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_check_needs_cd001_at_32769() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.iso");
        let mut data = vec![0u8; 40000];
        data[32769..32774].copy_from_slice(b"CD001");
        std::fs::write(&p, &data).unwrap();
        assert!(check_iso(p.to_str().unwrap()).is_ok());
        data[32769] = b'X';
        std::fs::write(&p, &data).unwrap();
        assert!(check_iso(p.to_str().unwrap())
            .unwrap_err()
            .contains("not an ISO image"));
        std::fs::write(&p, b"short").unwrap();
        assert!(check_iso(p.to_str().unwrap()).is_err());
        assert!(check_iso("/nonexistent/a.iso")
            .unwrap_err()
            .contains("doesn't exist"));
        assert!(check_iso("").is_err());
    }

    #[test]
    fn memory_cpus_and_size_limits() {
        assert_eq!(check_memory("512", 1024), Ok(512));
        assert!(check_memory("0", 1024).unwrap_err().contains("at least 1"));
        assert!(check_memory("2048", 1024).unwrap_err().contains("1024"));
        assert!(check_memory("x", 1024).is_err());
        assert_eq!(check_cpus("2", 2), Ok(2));
        assert!(check_cpus("3", 2).unwrap_err().contains("only 2 CPUs"));
        assert!(check_cpus("0", 2).is_err());
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
        let host = HostInfo {
            memory_mib: 4096,
            cpus: 4,
            bridges: vec!["br0".into()],
        };
        let mut w = Wizard::new(host, t.path().join("images"), vec!["vm1".into()]);
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
