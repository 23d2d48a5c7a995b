//! Vireo's virtual machine monitor: opens /dev/kvm, runs one thread per vCPU
//! and emulates a PC. The app, the headless CLI and the tests are its
//! clients; this file is the public API and nothing else.

pub mod acpi;
pub mod block;
pub mod boot;
pub mod bus;
pub mod control;
pub mod cpuid;
pub mod devices;
pub mod display;
pub mod memory;
pub mod net;
pub mod platform;
pub mod spec;
pub mod vcpu;
pub mod vm;

pub use devices::serial::{SerialChunk, SERIAL_SCROLLBACK};
pub use spec::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, FirmwareBoot, LinuxBoot, NicSpec,
    VmSpec,
};
pub use vm::{StopReason, Vm, VmError, VmEvent, VmState, EVENT_QUEUE};
