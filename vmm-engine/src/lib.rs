//! Vireo's virtual machine monitor: opens /dev/kvm, runs one thread per vCPU
//! and emulates a PC. The app, the headless CLI and the tests are its
//! clients; this file is the public API and nothing else.

pub mod bus;
pub mod devices;
pub mod net;
pub mod spec;

pub use spec::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, FirmwareBoot, LinuxBoot, NicSpec,
    VmSpec,
};
