//! Vireo's virtual machine monitor: opens /dev/kvm, runs one thread per vCPU
//! and emulates a PC. The app, the headless CLI and the tests are its
//! clients; this file is the public API and nothing else:
//!
//! - [`Vm`] (create, start, pause, resume, power, input, display) built from
//!   a [`VmSpec`] and its parts; [`VmEvent`], [`StopReason`], [`VmState`],
//!   [`VmError`].
//! - [`VmSpec::check`] against [`HostLimits`] gives [`SpecProblem`]s; the
//!   [`host`] module reads the limits and the bridges.
//! - [`input`]: the key vocabulary. [`Display`] and [`Framebuffer`]: the
//!   screen. [`disk`]: make and probe images. [`mac`]: NIC addresses.
//! - [`control`]: the control socket a VM can serve.
//!
//! Device-level tests reach the internals through the `testing` cargo
//! feature (the `testing` module), never through this API.

// The device layer's `pub` items are the vocabulary of the `testing` module
// (and of the unit tests); without that feature many are reached by no
// facade path and would read as dead. With it on (every workspace test
// build), dead-code analysis sees exactly what it saw before the facade.
#![cfg_attr(not(feature = "testing"), allow(dead_code, unused_imports))]

pub(crate) mod acpi;
pub(crate) mod block;
pub(crate) mod boot;
pub(crate) mod bus;
pub(crate) mod check;
pub mod control;
pub(crate) mod cpuid;
pub(crate) mod devices;
pub(crate) mod display;
pub(crate) mod fuzzing;
pub(crate) mod gsi;
pub mod host;
pub(crate) mod memory;
pub(crate) mod net;
pub(crate) mod platform;
pub mod sandbox;
pub(crate) mod spec;
pub(crate) mod vcpu;
pub(crate) mod vm;

pub use check::{check_iso, ProblemKind, SpecField, SpecProblem};
pub use devices::serial::{SerialChunk, SERIAL_SCROLLBACK};
pub use display::{Display, Framebuffer, ScreenshotError};
pub use host::HostLimits;
pub use spec::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, FirmwareBoot, LinuxBoot, NicSpec,
    VmSpec,
};
pub use vm::{StopReason, Vm, VmError, VmEvent, VmState, EVENT_QUEUE};

/// The key vocabulary: key codes, their names, and text as key strokes.
pub mod input {
    pub use crate::devices::keys::{
        key_by_name, keys_for_text, parse_key_combo, KeyCode, KeyError,
    };
}

/// Disk images: make a new one, tell a file's format.
pub mod disk {
    pub use crate::block::create;
    pub use crate::block::probe_format as probe;
    pub use crate::block::BlockError as DiskError;
}

/// MAC addresses for virtio-net cards.
/// Host network interfaces for a VM's NICs: TAPs on a bridge, directly
/// with CAP_NET_ADMIN or through `vireo-net-helper`.
pub mod nic {
    pub use crate::net::{helper, keep_taps_for, open_tap_on_bridge, NetError, Tap};
}

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

/// The engine's insides for device-level integration tests, fuzz targets
/// and test tools (feature `testing`). Not part of the API: nothing here
/// is stable.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub mod devices {
        pub use crate::devices::*;
    }
    pub mod block {
        pub use crate::block::*;
    }
    pub mod boot {
        pub use crate::boot::*;
    }
    pub mod memory {
        pub use crate::memory::*;
    }
    pub mod net {
        pub use crate::net::*;
    }
    /// Whole-device fuzz harnesses (the targets in fuzz/).
    pub mod fuzzing {
        pub use crate::fuzzing::*;
    }
    pub use crate::vm::open_kvm;
}
