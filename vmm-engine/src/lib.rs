//! Vireo's virtual machine monitor: opens /dev/kvm, runs one thread per vCPU
//! and emulates a PC. The app, the headless CLI and the tests are its
//! clients; this file is the public API and nothing else.

pub mod acpi;
pub mod block;
pub mod boot;
pub mod bus;
pub mod check;
pub mod control;
pub mod cpuid;
pub mod devices;
pub mod display;
pub mod gsi;
pub mod host;
pub mod memory;
pub mod net;
pub mod platform;
pub mod spec;
pub mod vcpu;
pub mod vm;

pub use check::{check_iso, ProblemKind, SpecField, SpecProblem};
pub use devices::serial::{SerialChunk, SERIAL_SCROLLBACK};
pub use host::HostLimits;
pub use spec::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, FirmwareBoot, LinuxBoot, NicSpec,
    VmSpec,
};
pub use vm::{StopReason, Vm, VmError, VmEvent, VmState, EVENT_QUEUE};

/// Disk images: make a new one, tell a file's format.
pub mod disk {
    pub use crate::block::create;
    pub use crate::block::probe_format as probe;
    pub use crate::block::BlockError as DiskError;
}

/// MAC addresses for virtio-net cards.
pub mod mac {
    /// A random locally administered unicast MAC in QEMU's 52:54:00 range,
    /// written "52:54:00:xx:xx:xx". Generate it once per NIC and keep it in
    /// the VM's definition.
    pub fn random() -> String {
        crate::net::format_mac(&crate::net::random_mac())
    }
    /// Parses "52:54:00:12:34:56" (hex, either case).
    pub fn parse(s: &str) -> Option<[u8; 6]> {
        crate::net::parse_mac(s)
    }
}
