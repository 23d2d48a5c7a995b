//! Emulated devices. Each is a plain struct driven through [`BusDevice`]
//! (or [`pci::PciDevice`]); none calls KVM. Interrupts go out through an
//! [`IrqLine`], power requests through a [`PowerHandle`], so that every
//! device can be unit-tested without /dev/kvm.

pub mod acpi_pm;
pub mod fw_cfg;
pub mod i8042;
pub mod ide;
pub mod keys;
pub mod legacy;
pub mod pci;
pub mod ratelimit;
pub mod rtc;
pub mod serial;
pub mod vga;
pub mod virtio;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

pub use crate::bus::BusDevice;

/// An interrupt line a device can drive.
pub trait IrqLine: Send + Sync {
    /// Drives the line high (asserted) or low.
    fn set_level(&self, high: bool);
    /// An edge: high, then low.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// An [`IrqLine`] that records what was done to it; for tests and for
/// devices that are not wired to anything.
#[derive(Default)]
pub struct RecordingIrq {
    level: AtomicBool,
    raised: AtomicU32,
}

impl RecordingIrq {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Current level of the line.
    pub fn level(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }
    /// How many low-to-high transitions happened.
    pub fn raised_count(&self) -> u32 {
        self.raised.load(Ordering::SeqCst)
    }
}

impl IrqLine for RecordingIrq {
    fn set_level(&self, high: bool) {
        let was = self.level.swap(high, Ordering::SeqCst);
        if high && !was {
            self.raised.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What a device can ask of the machine as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    /// Reset the machine (i8042 pulse, port 0xCF9, ACPI reset register).
    Reset,
    /// Power off (ACPI S5).
    PowerOff,
}

/// A handle through which a device requests a reset or power-off.
#[derive(Clone)]
pub struct PowerHandle(Arc<dyn Fn(PowerEvent) + Send + Sync>);

impl PowerHandle {
    pub fn new(f: impl Fn(PowerEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
    /// A handle that records events into a shared vector (tests).
    pub fn recording() -> (Self, Arc<std::sync::Mutex<Vec<PowerEvent>>>) {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = log.clone();
        (
            Self::new(move |e| l.lock().unwrap_or_else(|p| p.into_inner()).push(e)),
            log,
        )
    }
    pub fn request(&self, ev: PowerEvent) {
        (self.0)(ev)
    }
}

impl std::fmt::Debug for PowerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowerHandle")
    }
}

/// Little-endian helpers for register files: read `data.len()` bytes of
/// `value` starting at byte `shift`.
pub fn le_bytes_into(value: u64, shift: usize, data: &mut [u8]) {
    let bytes = value.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = bytes.get(shift + i).copied().unwrap_or(0);
    }
}

/// Assembles up to 8 little-endian bytes into a u64.
pub fn le_value(data: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, b) in data.iter().take(8).enumerate() {
        v |= (*b as u64) << (8 * i);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_irq_counts_edges() {
        let irq = RecordingIrq::new();
        irq.pulse();
        irq.set_level(true);
        irq.set_level(true);
        assert!(irq.level());
        assert_eq!(irq.raised_count(), 2);
    }

    #[test]
    fn le_helpers() {
        let mut d = [0u8; 2];
        le_bytes_into(0x1122_3344, 1, &mut d);
        assert_eq!(d, [0x33, 0x22]);
        assert_eq!(le_value(&[0x44, 0x33]), 0x3344);
        let (p, log) = PowerHandle::recording();
        p.request(PowerEvent::Reset);
        assert_eq!(*log.lock().unwrap(), vec![PowerEvent::Reset]);
    }
}
