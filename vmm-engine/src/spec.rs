//! What a VM is made of. Serialisable, so the app can keep one file per VM.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A complete VM definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub cpus: u32,
    pub boot: BootSpec,
    /// An ISO on the ATAPI CD-ROM (secondary master).
    #[serde(default)]
    pub cdrom: Option<PathBuf>,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// Where SeaBIOS's debug port 0x402 output goes.
    #[serde(default)]
    pub firmware_log: Option<PathBuf>,
    /// A guest reset ends the VM instead of restarting it.
    #[serde(default)]
    pub no_reboot: bool,
}

impl VmSpec {
    /// A minimal spec booting a kernel directly.
    pub fn linux(kernel: impl Into<PathBuf>) -> Self {
        VmSpec {
            name: "vm".into(),
            memory_mib: 256,
            cpus: 1,
            boot: BootSpec::Linux(LinuxBoot {
                kernel: kernel.into(),
                initrd: None,
                cmdline: "console=ttyS0".into(),
            }),
            cdrom: None,
            disks: Vec::new(),
            nics: Vec::new(),
            firmware_log: None,
            no_reboot: false,
        }
    }

    /// A minimal spec booting through SeaBIOS.
    pub fn firmware() -> Self {
        VmSpec {
            name: "vm".into(),
            memory_mib: 256,
            cpus: 1,
            boot: BootSpec::Firmware(FirmwareBoot::default()),
            cdrom: None,
            disks: Vec::new(),
            nics: Vec::new(),
            firmware_log: None,
            no_reboot: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootSpec {
    /// SeaBIOS boots the CD or a disk.
    Firmware(FirmwareBoot),
    /// Direct Linux boot: bzImage + initrd + command line.
    Linux(LinuxBoot),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct FirmwareBoot {
    /// BIOS image; None means Debian's /usr/share/seabios/bios-256k.bin.
    #[serde(default)]
    pub bios: Option<PathBuf>,
    #[serde(default)]
    pub order: BootOrder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BootOrder {
    /// CD-ROM first, then disk.
    #[default]
    CdromFirst,
    /// Disk first, then CD-ROM.
    DiskFirst,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinuxBoot {
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    #[default]
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiskInterface {
    #[default]
    Ide,
    Virtio,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub path: PathBuf,
    #[serde(default)]
    pub format: DiskFormat,
    #[serde(default)]
    pub interface: DiskInterface,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NicSpec {
    /// Host bridge the TAP joins (e.g. "br100").
    pub bridge: String,
    /// "52:54:00:xx:xx:xx"; kept in the definition so it is stable.
    pub mac: String,
}
