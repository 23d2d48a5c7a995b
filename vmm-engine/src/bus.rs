//! Port-I/O and MMIO buses: an address range maps to a device.
//!
//! A vCPU exit carries an address and a data buffer; the bus finds the device
//! whose range holds the address and calls it with the offset inside that
//! range. Accesses that hit no device read as all-ones and drop writes, as on
//! real hardware.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. `offset` is relative to the base of the range the
/// device was inserted at. Implementations must treat `data.len()` and
/// `offset` as guest-controlled.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    #[error("bus range of zero length at {0:#x}")]
    ZeroLength(u64),
    #[error("no device at {0:#x}")]
    NotFound(u64),
}

#[derive(Clone)]
struct Entry {
    len: u64,
    dev: SharedDevice,
}

/// A bus: a sorted set of non-overlapping ranges. Cloning shares the map.
#[derive(Clone, Default)]
pub struct Bus {
    map: Arc<RwLock<BTreeMap<u64, Entry>>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `dev` at `[base, base+len)`.
    pub fn insert(&self, dev: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength(base));
        }
        let end = base
            .checked_add(len - 1)
            .ok_or(BusError::Overlap { base, len })?;
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        // The last range starting at or before `end` must end before `base`.
        if let Some((&b, e)) = map.range(..=end).next_back() {
            if b + (e.len - 1) >= base {
                return Err(BusError::Overlap { base, len });
            }
        }
        map.insert(base, Entry { len, dev });
        Ok(())
    }

    /// Removes the device whose range starts at `base`.
    pub fn remove(&self, base: u64) -> Result<(), BusError> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&base)
            .map(|_| ())
            .ok_or(BusError::NotFound(base))
    }

    fn resolve(&self, addr: u64) -> Option<(u64, SharedDevice)> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let (&base, e) = map.range(..=addr).next_back()?;
        if addr - base < e.len {
            Some((base, e.dev.clone()))
        } else {
            None
        }
    }

    /// Dispatches a read. Returns false (and fills `data` with 0xff) if no
    /// device claims `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((base, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(addr - base, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write. Returns false if no device claims `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((base, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(addr - base, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as u8).wrapping_add(i as u8);
            }
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatch_by_offset() {
        let bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x2f8, 8).unwrap();
        let mut buf = [0u8; 2];
        assert!(bus.read(0x3fa, &mut buf));
        assert_eq!(buf, [2, 3]);
        assert!(bus.write(0x2ff, &[9]));
        assert_eq!(b.lock().unwrap().last_write, Some((7, vec![9])));
        assert!(a.lock().unwrap().last_write.is_none());
    }

    #[test]
    fn unclaimed_reads_all_ones() {
        let bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a, 0x10, 4).unwrap();
        let mut buf = [0u8; 4];
        assert!(!bus.read(0x14, &mut buf));
        assert_eq!(buf, [0xff; 4]);
        assert!(!bus.read(0xf, &mut buf));
        assert!(!bus.write(0x0, &[1]));
    }

    #[test]
    fn overlaps_are_refused() {
        let bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default())) as SharedDevice;
        bus.insert(d(), 0x100, 0x10).unwrap();
        assert!(matches!(
            bus.insert(d(), 0x10f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d(), 0xf0, 0x11),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d(), u64::MAX, 2),
            Err(BusError::Overlap { .. })
        ));
        assert_eq!(bus.insert(d(), 0x5, 0), Err(BusError::ZeroLength(5)));
        bus.insert(d(), 0x110, 0x10).unwrap();
        bus.insert(d(), 0xf0, 0x10).unwrap();
        bus.remove(0x100).unwrap();
        bus.insert(d(), 0x100, 0x10).unwrap();
        assert_eq!(bus.remove(0x1234), Err(BusError::NotFound(0x1234)));
    }
}
