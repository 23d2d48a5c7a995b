//! The PCI root: configuration mechanism #1 and BAR mapping for bus 0, plus
//! PCI INTx routing through the PIIX3's PIRQ registers.
//!
//! [`PciRoot`] is a [`BusDevice`] for ports 0xCF8..0xD00 (insert it at
//! [`PCI_CONFIG_PORT`] with length [`PCI_CONFIG_LEN`]). A 32-bit access at
//! 0xCF8 is the CONFIG_ADDRESS register (bit 31 enable, bus 23:16, device
//! 15:11, function 10:8, register 7:2); 0xCFC..0xCFF is CONFIG_DATA, read
//! and written at any byte offset with 1, 2 or 4 byte accesses. Port 0xCF9
//! lies inside that range but is the PIIX3 reset control register: the root
//! forwards byte accesses there to the device given to
//! [`PciRoot::set_port_cf9`]. Functions that do not exist, other buses and
//! malformed accesses read as all-ones; writes to them are dropped.
//!
//! After every config write that may move a BAR, the root recomputes each
//! BAR's decoded address ([`PciConfig::bar_address`](super::PciConfig::bar_address))
//! and moves its range on the port-I/O bus (I/O BARs) or the MMIO bus
//! (memory BARs and the expansion ROM, which serves [`PciDevice::rom`]
//! read-only). BARs whose [`PciDevice::bar_is_ram`] is true are not put on a
//! bus; the device hears of them through [`PciDevice::bar_remapped`], which
//! is called for every BAR whose mapping changed. A guest-programmed
//! address that overlaps another range, runs past the end of its address
//! space or is otherwise invalid is logged and the BAR stays unmapped; it
//! is retried whenever another BAR moves, so it maps once the overlap goes.
//!
//! [`PciIntxRouter`] turns a device's INTx pin into a level on the ISA IRQ
//! that the PIIX3's PIRQ route register for that pin currently names.
//!
//! Missing: buses behind bridges (type 1 config cycles read all-ones),
//! PCIe extended config space (MMCONFIG), hot-plug.
//!
//! Note on lifetimes: the root holds clones of the buses it maps BARs on,
//! and the port-I/O bus holds the root, so the two keep each other alive
//! (and the buses hold every mapped device). When tearing a VM down, call
//! [`PciRoot::clear`] (unmaps every BAR, drops the devices) and remove the
//! root from the bus (`io_bus.remove(0xCF8)`) to break the cycle.
//!
//! Locking: a config write runs with the root locked and then locks the
//! target device (and, to retry failed mappings, other devices) one at a
//! time. Devices must never lock the root. Callbacks a device runs from
//! `config_write` or `bar_remapped` (the i440FX PAM callback, a RAM BAR's
//! memory-slot update) run under those locks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use log::{debug, warn};

use super::{BarKind, PciDevice, ROM_BAR_INDEX};
use crate::bus::{Bus, BusDevice, SharedDevice};
use crate::devices::IrqLine;

/// Where the root goes on the port-I/O bus.
pub const PCI_CONFIG_PORT: u64 = 0xcf8;
/// Length of the root's port range (0xCF8..0xD00).
pub const PCI_CONFIG_LEN: u64 = 8;

/// A PCI function as the root keeps it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

const NUM_REGIONS: usize = ROM_BAR_INDEX + 1;
const CONFIG_ENABLE: u32 = 1 << 31;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    Io,
    Mmio,
    /// Plain RAM the device maps itself; not on a bus.
    Ram,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    space: Space,
    addr: u64,
    len: u64,
}

struct Slot {
    dev: SharedPciDevice,
    /// What is on a bus (or reported as RAM) now, per BAR.
    mapped: [Option<Mapping>; NUM_REGIONS],
    /// The address last given to `bar_remapped`, per BAR.
    reported: [Option<u64>; NUM_REGIONS],
    /// The last mapping that could not be made, per BAR (log once).
    failed: [Option<Mapping>; NUM_REGIONS],
    /// Some wanted mapping could not be made; retry later.
    pending: bool,
}

/// Configuration mechanism #1 and the BAR mapper for PCI bus 0.
pub struct PciRoot {
    address: u32,
    io_bus: Bus,
    mmio_bus: Bus,
    slots: BTreeMap<u8, Slot>,
    cf9: Option<SharedDevice>,
}

impl PciRoot {
    /// A root that maps I/O BARs on `io_bus` and memory BARs on `mmio_bus`.
    pub fn new(io_bus: Bus, mmio_bus: Bus) -> Self {
        PciRoot {
            address: 0,
            io_bus,
            mmio_bus,
            slots: BTreeMap::new(),
            cf9: None,
        }
    }

    /// Puts `dev` at `devfn` (device << 3 | function) on bus 0, replacing
    /// (and unmapping) whatever was there. Its BARs are mapped at once if
    /// they are already programmed and enabled.
    pub fn add_device(&mut self, devfn: u8, dev: SharedPciDevice) {
        self.remove_device(devfn);
        self.slots.insert(
            devfn,
            Slot {
                dev,
                mapped: [None; NUM_REGIONS],
                reported: [None; NUM_REGIONS],
                failed: [None; NUM_REGIONS],
                pending: true,
            },
        );
        self.reconcile(devfn);
    }

    /// Removes the function at `devfn` and unmaps its BARs.
    pub fn remove_device(&mut self, devfn: u8) {
        if let Some(mut slot) = self.slots.remove(&devfn) {
            let mut dev = slot.dev.lock().unwrap_or_else(|e| e.into_inner());
            for bar in 0..NUM_REGIONS {
                if let Some(m) = slot.mapped[bar].take() {
                    self.unmap(m);
                }
                if slot.reported[bar].take().is_some() {
                    dev.bar_remapped(bar, None);
                }
            }
        }
    }

    /// Unmaps and drops every function and the 0xCF9 device (VM teardown;
    /// remove the root from the port-I/O bus as well to free it).
    pub fn clear(&mut self) {
        let devfns: Vec<u8> = self.slots.keys().copied().collect();
        for d in devfns {
            self.remove_device(d);
        }
        self.cf9 = None;
    }

    /// The device that answers byte accesses to port 0xCF9 (the PIIX3
    /// reset control register, [`super::piix3::ResetControl`]).
    pub fn set_port_cf9(&mut self, dev: SharedDevice) {
        self.cf9 = Some(dev);
    }

    /// Machine reset: clears CONFIG_ADDRESS and brings every function's
    /// bus ranges in line with its BARs. Reset the functions' config
    /// spaces first (their BARs and command registers), then call this.
    pub fn reset(&mut self) {
        self.address = 0;
        let devfns: Vec<u8> = self.slots.keys().copied().collect();
        for d in devfns {
            self.reconcile(d);
        }
    }

    /// The current CONFIG_ADDRESS register.
    pub fn config_address(&self) -> u32 {
        self.address
    }

    /// Where BAR `bar` of `devfn` is mapped now: its address and length.
    pub fn mapped_bar(&self, devfn: u8, bar: usize) -> Option<(u64, u64)> {
        let m = (*self.slots.get(&devfn)?.mapped.get(bar)?)?;
        Some((m.addr, m.len))
    }

    /// A config read of `data.len()` bytes at register `reg` of `devfn` on
    /// bus 0, as a config cycle would do it. Missing functions read ones.
    pub fn config_read(&self, devfn: u8, reg: usize, data: &mut [u8]) {
        match self.slots.get(&devfn) {
            Some(slot) => slot
                .dev
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .config_read(reg, data),
            None => data.fill(0xff),
        }
    }

    /// A config write; remaps the function's BARs when the write may have
    /// moved them.
    pub fn config_write(&mut self, devfn: u8, reg: usize, data: &[u8]) {
        let Some(slot) = self.slots.get(&devfn) else {
            return;
        };
        let remap = slot
            .dev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_write(reg, data);
        if remap {
            self.reconcile(devfn);
        }
    }

    /// The target of the current CONFIG_ADDRESS plus `byte` (0..=3), or
    /// None when config cycles are disabled or go to another bus.
    fn target(&self, byte: usize) -> Option<(u8, usize)> {
        if self.address & CONFIG_ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        if bus != 0 {
            return None;
        }
        let devfn = (self.address >> 8) as u8;
        let reg = (self.address & 0xfc) as usize + byte;
        Some((devfn, reg))
    }

    /// Brings `devfn`'s bus ranges in line with its BARs, then retries the
    /// BARs of other functions that could not be mapped before.
    fn reconcile(&mut self, devfn: u8) {
        let mut order: Vec<u8> = vec![devfn];
        order.extend(
            self.slots
                .iter()
                .filter(|(d, s)| **d != devfn && s.pending)
                .map(|(d, _)| *d),
        );
        // Pass 1: unmap everything stale, so that moves and swaps inside
        // one device (or between devices) free their ranges first.
        let mut wants: Vec<(u8, [Option<Mapping>; NUM_REGIONS])> = Vec::new();
        for d in order {
            let Some(slot) = self.slots.get_mut(&d) else {
                continue;
            };
            let want: [Option<Mapping>; NUM_REGIONS] = {
                let dev = slot.dev.lock().unwrap_or_else(|e| e.into_inner());
                std::array::from_fn(|bar| desired_mapping(&*dev, bar, d))
            };
            for (mapped, w) in slot.mapped.iter_mut().zip(want.iter()) {
                if *mapped != *w {
                    if let Some(m) = mapped.take() {
                        unmap_from(&self.io_bus, &self.mmio_bus, m);
                    }
                }
            }
            wants.push((d, want));
        }
        // Pass 2: map what is wanted and tell each device what moved.
        for (d, want) in wants {
            let Some(slot) = self.slots.get_mut(&d) else {
                continue;
            };
            let mut pending = false;
            for (bar, w) in want.iter().enumerate() {
                let Some(m) = *w else {
                    continue;
                };
                if slot.mapped[bar] == Some(m) {
                    continue;
                }
                let ok = match m.space {
                    Space::Ram => true,
                    Space::Io | Space::Mmio => {
                        let bus = if m.space == Space::Io {
                            &self.io_bus
                        } else {
                            &self.mmio_bus
                        };
                        let region = Arc::new(Mutex::new(BarRegion {
                            dev: slot.dev.clone(),
                            bar,
                        }));
                        match bus.insert(region, m.addr, m.len) {
                            Ok(()) => true,
                            Err(e) => {
                                // Warn once per address; retries are quiet.
                                let level = if slot.failed[bar] == Some(m) {
                                    log::Level::Debug
                                } else {
                                    log::Level::Warn
                                };
                                log::log!(
                                    level,
                                    "pci {:02x}.{}: BAR {} at {:#x}+{:#x} left unmapped: {}",
                                    d >> 3,
                                    d & 7,
                                    bar,
                                    m.addr,
                                    m.len,
                                    e
                                );
                                slot.failed[bar] = Some(m);
                                false
                            }
                        }
                    }
                };
                if ok {
                    debug!(
                        "pci {:02x}.{}: BAR {} -> {:?} {:#x}+{:#x}",
                        d >> 3,
                        d & 7,
                        bar,
                        m.space,
                        m.addr,
                        m.len
                    );
                    slot.mapped[bar] = Some(m);
                    slot.failed[bar] = None;
                } else {
                    pending = true;
                }
            }
            slot.pending = pending;
            let mut dev = slot.dev.lock().unwrap_or_else(|e| e.into_inner());
            for bar in 0..NUM_REGIONS {
                let now = slot.mapped[bar].map(|m| m.addr);
                if slot.reported[bar] != now {
                    slot.reported[bar] = now;
                    dev.bar_remapped(bar, now);
                }
            }
        }
    }

    fn unmap(&self, m: Mapping) {
        unmap_from(&self.io_bus, &self.mmio_bus, m);
    }
}

fn unmap_from(io_bus: &Bus, mmio_bus: &Bus, m: Mapping) {
    let r = match m.space {
        Space::Io => io_bus.remove(m.addr),
        Space::Mmio => mmio_bus.remove(m.addr),
        Space::Ram => Ok(()),
    };
    if let Err(e) = r {
        warn!("pci: unmapping {:#x}: {}", m.addr, e);
    }
}

/// Where BAR `bar` of `dev` should be now, or None when it should not
/// decode (disabled, unprogrammed, or an address the guest got wrong).
fn desired_mapping(dev: &dyn PciDevice, bar: usize, devfn: u8) -> Option<Mapping> {
    let cfg = dev.config();
    let addr = cfg.bar_address(bar)?;
    let (space, len, limit) = if bar == ROM_BAR_INDEX {
        (Space::Mmio, u64::from(cfg.rom_size()), 1u64 << 32)
    } else {
        let spec = cfg.bar_spec(bar)?;
        match spec.kind {
            BarKind::Io => (Space::Io, spec.size, 0x1_0000),
            BarKind::Mem32 => (Space::Mmio, spec.size, 1 << 32),
            BarKind::Mem64 => (Space::Mmio, spec.size, u64::MAX),
        }
    };
    if len == 0 {
        return None;
    }
    match addr.checked_add(len) {
        Some(end) if end <= limit => {}
        _ => {
            crate::guest_warn!(
                "pci {:02x}.{}: BAR {} at {:#x}+{:#x} is outside its address space; unmapped",
                devfn >> 3,
                devfn & 7,
                bar,
                addr,
                len
            );
            return None;
        }
    }
    let space = if dev.bar_is_ram(bar) {
        Space::Ram
    } else {
        space
    };
    Some(Mapping { space, addr, len })
}

/// One BAR of one function on a bus.
struct BarRegion {
    dev: SharedPciDevice,
    bar: usize,
}

impl BusDevice for BarRegion {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if self.bar == ROM_BAR_INDEX {
            let rom = dev.rom().unwrap_or(&[]);
            for (i, b) in data.iter_mut().enumerate() {
                *b = usize::try_from(offset)
                    .ok()
                    .and_then(|o| o.checked_add(i))
                    .and_then(|o| rom.get(o))
                    .copied()
                    .unwrap_or(0);
            }
        } else {
            dev.bar_read(self.bar, offset, data);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if self.bar == ROM_BAR_INDEX {
            return; // ROM: writes are dropped.
        }
        self.dev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bar_write(self.bar, offset, data);
    }
}

/// A CONFIG_DATA access of `len` bytes at byte `byte` of the window is
/// well formed when it is 1, 2 or 4 bytes and stays inside the dword.
fn data_access_ok(byte: usize, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && byte + len <= 4
}

impl BusDevice for PciRoot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            1 if data.len() == 1 => match &self.cf9 {
                Some(d) => d.lock().unwrap_or_else(|e| e.into_inner()).read(0, data),
                None => data.fill(0xff),
            },
            4..=7 => {
                let byte = (offset - 4) as usize;
                match self.target(byte) {
                    Some((devfn, reg)) if data_access_ok(byte, data.len()) => {
                        self.config_read(devfn, reg, data)
                    }
                    _ => data.fill(0xff),
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                // Bits 30:24 and 1:0 are reserved and read as zero.
                self.address = v & 0x80ff_fffc;
            }
            1 if data.len() == 1 => {
                if let Some(d) = &self.cf9 {
                    d.lock().unwrap_or_else(|e| e.into_inner()).write(0, data);
                }
            }
            4..=7 => {
                let byte = (offset - 4) as usize;
                if let Some((devfn, reg)) = self.target(byte) {
                    if data_access_ok(byte, data.len()) {
                        self.config_write(devfn, reg, data);
                    } else {
                        debug!(
                            "pci: dropped {}-byte config write at {:#x}",
                            data.len(),
                            0xcfc + byte
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sets the level of an ISA IRQ / GSI (the in-kernel PIC + IOAPIC).
pub type GsiSetter = Arc<dyn Fn(u32, bool) + Send + Sync>;

/// The PIIX3's PCI interrupt router: four PIRQ lines, each routed by the
/// PIIX3 register 0x60 + n to an ISA IRQ (bit 7 set: disabled; IRQs 0, 1,
/// 2, 8 and 13 are reserved and treated as disabled). Several devices may
/// share a PIRQ and several PIRQs may share an ISA IRQ: an ISA IRQ is high
/// while any source routed to it is asserted. Changing a route moves an
/// asserted level from the old IRQ to the new one.
pub struct PciIntxRouter {
    state: Mutex<RouterState>,
    set_gsi: GsiSetter,
}

struct RouterState {
    routes: [u8; 4],
    /// Asserted sources per PIRQ.
    counts: [u32; 4],
    /// The level last driven on each ISA IRQ.
    levels: [bool; 16],
}

/// Default PIRQ route register value: routing disabled.
pub const PIRQ_DISABLED: u8 = 0x80;

/// The (ISA IRQ, level) pairs a recording router drove, in order (tests).
#[cfg(test)]
pub(crate) type RecordedLevels = Arc<Mutex<Vec<(u32, bool)>>>;

#[cfg(test)]
impl PciIntxRouter {
    /// A router that records every level it drives (tests).
    pub(crate) fn recording() -> (Arc<Self>, RecordedLevels) {
        let log: RecordedLevels = Arc::default();
        let l = log.clone();
        let r = PciIntxRouter::new(Arc::new(move |gsi, lvl| l.lock().unwrap().push((gsi, lvl))));
        (r, log)
    }
}

impl PciIntxRouter {
    /// A router that drives ISA IRQ levels through `set_gsi`.
    pub fn new(set_gsi: GsiSetter) -> Arc<Self> {
        Arc::new(PciIntxRouter {
            state: Mutex::new(RouterState {
                routes: [PIRQ_DISABLED; 4],
                counts: [0; 4],
                levels: [false; 16],
            }),
            set_gsi,
        })
    }

    /// The PIRQ (0 = A .. 3 = D) used by `pin` (the INTERRUPT_PIN value:
    /// 1 = INTA# .. 4 = INTD#) of a device in `slot` on bus 0. This is
    /// QEMU's and SeaBIOS's `(slot + pin - 2) & 3` for a 1-based pin, i.e.
    /// `(slot + p - 1) & 3` with p = 0 for INTA#.
    pub fn pirq_for(slot: u8, pin: u8) -> usize {
        (usize::from(slot) + usize::from(pin) + 2) & 3
    }

    /// The ISA IRQ a route register value selects, if enabled and valid.
    pub fn route_target(value: u8) -> Option<u32> {
        if value & 0x80 != 0 {
            return None;
        }
        match value & 0x0f {
            0 | 1 | 2 | 8 | 13 => None,
            irq => Some(u32::from(irq)),
        }
    }

    /// Route register 0x60 + `pirq` (pirq is masked to 0..=3).
    pub fn route(&self, pirq: usize) -> u8 {
        self.lock().routes[pirq & 3]
    }

    /// Writes route register 0x60 + `pirq` (masked to 0..=3).
    pub fn set_route(&self, pirq: usize, value: u8) {
        let mut st = self.lock();
        st.routes[pirq & 3] = value;
        self.drive(&mut st);
    }

    /// The interrupt line for `pin` (1..=4) of the device in `slot`.
    /// A pin outside 1..=4 gives a line that goes nowhere.
    pub fn irq_line_for(self: &Arc<Self>, slot: u8, pin: u8) -> Arc<dyn IrqLine> {
        if !(1..=4).contains(&pin) {
            warn!("pci: slot {slot} has no interrupt pin {pin}; its line is unconnected");
            return Arc::new(NullLine);
        }
        Arc::new(PirqLine {
            router: self.clone(),
            pirq: Self::pirq_for(slot, pin),
            asserted: Mutex::new(false),
        })
    }

    /// Whether PIRQ `pirq` has an asserted source.
    pub fn pirq_asserted(&self, pirq: usize) -> bool {
        self.lock().counts[pirq & 3] > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn adjust(&self, pirq: usize, assert: bool) {
        let mut st = self.lock();
        let c = &mut st.counts[pirq & 3];
        *c = if assert {
            c.saturating_add(1)
        } else {
            c.saturating_sub(1)
        };
        self.drive(&mut st);
    }

    /// Recomputes every ISA IRQ's level and drives those that changed.
    fn drive(&self, st: &mut RouterState) {
        let mut want = [false; 16];
        for n in 0..4 {
            if st.counts[n] > 0 {
                if let Some(irq) = Self::route_target(st.routes[n]) {
                    want[irq as usize] = true;
                }
            }
        }
        for (irq, (&w, level)) in want.iter().zip(st.levels.iter_mut()).enumerate() {
            if w != *level {
                *level = w;
                (self.set_gsi)(irq as u32, w);
            }
        }
    }
}

/// One device's INTx pin, feeding a PIRQ.
struct PirqLine {
    router: Arc<PciIntxRouter>,
    pirq: usize,
    asserted: Mutex<bool>,
}

impl IrqLine for PirqLine {
    fn set_level(&self, high: bool) {
        let mut a = self.asserted.lock().unwrap_or_else(|e| e.into_inner());
        if *a != high {
            *a = high;
            self.router.adjust(self.pirq, high);
        }
    }
}

struct NullLine;

impl IrqLine for NullLine {
    fn set_level(&self, _high: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::{BarSpec, PciConfig, CMD_IO, CMD_MEM};

    #[derive(Default)]
    struct Log {
        remapped: Vec<(usize, Option<u64>)>,
        writes: Vec<(usize, u64, Vec<u8>)>,
    }

    struct Fake {
        config: PciConfig,
        rom: Vec<u8>,
        ram_bar: Option<usize>,
        log: Arc<Mutex<Log>>,
    }

    fn fake(ram_bar: Option<usize>) -> (Arc<Mutex<Fake>>, Arc<Mutex<Log>>) {
        let mut config = PciConfig::new(0x1af4, 0x1000, 0x020000, 0);
        config.add_bar(
            0,
            BarSpec {
                kind: BarKind::Io,
                size: 0x20,
                prefetchable: false,
            },
        );
        config.add_bar(
            1,
            BarSpec {
                kind: BarKind::Mem32,
                size: 0x1000,
                prefetchable: false,
            },
        );
        config.add_bar(
            2,
            BarSpec {
                kind: BarKind::Mem64,
                size: 0x4000,
                prefetchable: true,
            },
        );
        config.set_rom_size(0x800);
        let log = Arc::new(Mutex::new(Log::default()));
        let dev = Fake {
            config,
            rom: vec![0x55, 0xaa, 0x04, 0x42],
            ram_bar,
            log: log.clone(),
        };
        (Arc::new(Mutex::new(dev)), log)
    }

    impl PciDevice for Fake {
        fn config(&self) -> &PciConfig {
            &self.config
        }
        fn config_mut(&mut self) -> &mut PciConfig {
            &mut self.config
        }
        fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (bar as u8) << 4 | (offset as u8 + i as u8);
            }
        }
        fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.log
                .lock()
                .unwrap()
                .writes
                .push((bar, offset, data.to_vec()));
        }
        fn bar_remapped(&mut self, bar: usize, addr: Option<u64>) {
            self.log.lock().unwrap().remapped.push((bar, addr));
        }
        fn bar_is_ram(&self, bar: usize) -> bool {
            self.ram_bar == Some(bar)
        }
        fn rom(&self) -> Option<&[u8]> {
            Some(&self.rom)
        }
    }

    struct Machine {
        io: Bus,
        mmio: Bus,
        root: Arc<Mutex<PciRoot>>,
    }

    fn machine() -> Machine {
        let io = Bus::new();
        let mmio = Bus::new();
        let root = Arc::new(Mutex::new(PciRoot::new(io.clone(), mmio.clone())));
        io.insert(root.clone(), PCI_CONFIG_PORT, PCI_CONFIG_LEN)
            .unwrap();
        Machine { io, mmio, root }
    }

    impl Machine {
        fn select(&self, devfn: u8, reg: u8) {
            let a = 0x8000_0000u32 | u32::from(devfn) << 8 | u32::from(reg);
            self.io.write(0xcf8, &a.to_le_bytes());
        }
        fn cfg_read32(&self, devfn: u8, reg: u8) -> u32 {
            self.select(devfn, reg);
            let mut d = [0u8; 4];
            self.io.read(0xcfc, &mut d);
            u32::from_le_bytes(d)
        }
        fn cfg_write32(&self, devfn: u8, reg: u8, v: u32) {
            self.select(devfn, reg);
            self.io.write(0xcfc, &v.to_le_bytes());
        }
        fn cfg_write16(&self, devfn: u8, reg: u8, v: u16) {
            self.select(devfn, reg & !3);
            self.io.write(0xcfc + u64::from(reg & 3), &v.to_le_bytes());
        }
    }

    #[test]
    fn config_address_register() {
        let m = machine();
        let mut d = [0u8; 4];
        m.io.write(0xcf8, &0xffff_ffffu32.to_le_bytes());
        m.io.read(0xcf8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x80ff_fffc);
        // Byte and word writes to 0xcf8 do not touch the address.
        m.io.write(0xcf8, &[0]);
        m.io.write(0xcf8, &[0, 0]);
        assert_eq!(m.root.lock().unwrap().config_address(), 0x80ff_fffc);
        // Byte reads of 0xcf8..0xcfb (not a dword at 0xcf8) read ones.
        let mut b = [0u8; 1];
        m.io.read(0xcf8, &mut b);
        assert_eq!(b, [0xff]);
        m.io.read(0xcfa, &mut b);
        assert_eq!(b, [0xff]);
    }

    #[test]
    fn config_data_any_byte_offset() {
        let m = machine();
        let (dev, _) = fake(None);
        m.root.lock().unwrap().add_device(0x18, dev);
        assert_eq!(m.cfg_read32(0x18, 0), 0x1000_1af4);
        m.select(0x18, 0);
        let mut b = [0u8; 1];
        for (i, want) in [0xf4, 0x1a, 0x00, 0x10].iter().enumerate() {
            m.io.read(0xcfc + i as u64, &mut b);
            assert_eq!(b[0], *want, "byte {i}");
        }
        let mut w = [0u8; 2];
        m.io.read(0xcfe, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1000);
        m.io.read(0xcfd, &mut w);
        assert_eq!(w, [0x1a, 0x00]);
        // Class code at 0x08 through a byte read at 0xcff.
        m.select(0x18, 0x08);
        m.io.read(0xcff, &mut b);
        assert_eq!(b, [0x02]);
        // Interrupt line writable through a byte write at 0xcfc.
        m.select(0x18, 0x3c);
        m.io.write(0xcfc, &[11]);
        assert_eq!(m.cfg_read32(0x18, 0x3c) & 0xff, 11);
    }

    #[test]
    fn missing_functions_and_buses_read_ones() {
        let m = machine();
        let (dev, _) = fake(None);
        m.root.lock().unwrap().add_device(0x18, dev);
        assert_eq!(m.cfg_read32(0x20, 0), 0xffff_ffff);
        assert_eq!(m.cfg_read32(0x19, 0), 0xffff_ffff);
        // Bus 1, same devfn.
        m.io.write(0xcf8, &(0x8001_1800u32).to_le_bytes());
        let mut d = [0u8; 4];
        m.io.read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Enable bit clear.
        m.io.write(0xcf8, &(0x0000_1800u32).to_le_bytes());
        m.io.read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Writes there go nowhere (and do not panic).
        m.io.write(0xcfc, &[1, 2, 3, 4]);
        m.cfg_write32(0x20, 0x10, 0x1234);
        assert_eq!(m.cfg_read32(0x18, 0x3c) & 0xff, 0);
    }

    #[test]
    fn weird_widths_at_cfc() {
        let m = machine();
        let (dev, _) = fake(None);
        m.root.lock().unwrap().add_device(0x18, dev);
        m.select(0x18, 0x3c);
        let mut three = [0u8; 3];
        m.io.read(0xcfc, &mut three);
        assert_eq!(three, [0xff; 3]);
        let mut eight = [0u8; 8];
        m.io.read(0xcfc, &mut eight);
        assert_eq!(eight, [0xff; 8]);
        let mut four = [0u8; 4];
        m.io.read(0xcfe, &mut four);
        assert_eq!(four, [0xff; 4]);
        let mut two = [0u8; 2];
        m.io.read(0xcff, &mut two);
        assert_eq!(two, [0xff; 2]);
        let mut none: [u8; 0] = [];
        m.io.read(0xcfc, &mut none);
        // Malformed writes are dropped.
        m.io.write(0xcfc, &[7, 7, 7]);
        m.io.write(0xcfc, &[7; 8]);
        m.io.write(0xcff, &[7, 7]);
        m.io.write(0xcfc, &[]);
        assert_eq!(m.cfg_read32(0x18, 0x3c) & 0xff, 0);
    }

    fn program_bars(m: &Machine, devfn: u8, io: u32, mem: u32, mem64: u64, rom: u32) {
        m.cfg_write32(devfn, 0x10, io);
        m.cfg_write32(devfn, 0x14, mem);
        m.cfg_write32(devfn, 0x18, mem64 as u32);
        m.cfg_write32(devfn, 0x1c, (mem64 >> 32) as u32);
        m.cfg_write32(devfn, 0x30, rom);
    }

    #[test]
    fn bars_map_move_and_unmap() {
        let m = machine();
        let (dev, log) = fake(None);
        m.root.lock().unwrap().add_device(0x18, dev);
        program_bars(&m, 0x18, 0xc000, 0xfebf_0000, 0x1_0000_0000, 0xfeb0_0001);
        // Nothing decodes before the command register enables it.
        let mut b = [0u8; 2];
        assert!(!m.io.read(0xc000, &mut b));
        assert!(log.lock().unwrap().remapped.is_empty());
        m.cfg_write16(0x18, 0x04, CMD_IO | CMD_MEM);

        assert!(m.io.read(0xc002, &mut b));
        assert_eq!(b, [0x02, 0x03]);
        assert!(m.io.read(0xc01f, &mut b[..1]));
        assert!(!m.io.read(0xc020, &mut b[..1]));
        assert!(m.mmio.read(0xfebf_000e, &mut b));
        assert_eq!(b, [0x1e, 0x1f]);
        assert!(m.mmio.read(0xfebf_0fff, &mut b[..1]));
        assert!(!m.mmio.read(0xfebf_1000, &mut b[..1]));
        assert!(m.mmio.read(0x1_0000_0002, &mut b));
        assert_eq!(b, [0x22, 0x23]);
        let mut r = [0u8; 4];
        assert!(m.mmio.read(0xfeb0_0000, &mut r));
        assert_eq!(r, [0x55, 0xaa, 0x04, 0x42]);
        assert!(m.mmio.read(0xfeb0_07fe, &mut b));
        assert_eq!(b, [0, 0], "ROM beyond its contents reads 0");
        // ROM writes are dropped; BAR writes reach the device.
        m.mmio.write(0xfeb0_0000, &[0, 0]);
        assert!(m.mmio.read(0xfeb0_0000, &mut r));
        assert_eq!(r[0], 0x55);
        m.io.write(0xc004, &[9]);
        assert_eq!(log.lock().unwrap().writes, vec![(0, 4, vec![9])]);
        {
            let mut l = log.lock().unwrap();
            l.remapped.sort();
            assert_eq!(
                l.remapped,
                vec![
                    (0, Some(0xc000)),
                    (1, Some(0xfebf_0000)),
                    (2, Some(0x1_0000_0000)),
                    (6, Some(0xfeb0_0000)),
                ]
            );
            l.remapped.clear();
        }
        assert_eq!(
            m.root.lock().unwrap().mapped_bar(0x18, 1),
            Some((0xfebf_0000, 0x1000))
        );

        // Move the I/O BAR: the old range goes away.
        m.cfg_write32(0x18, 0x10, 0xd000);
        assert!(!m.io.read(0xc000, &mut b));
        assert!(m.io.read(0xd000, &mut b));
        assert_eq!(log.lock().unwrap().remapped, vec![(0, Some(0xd000))]);

        // Memory decode off: memory BARs and ROM go, I/O stays.
        m.cfg_write16(0x18, 0x04, CMD_IO);
        assert!(!m.mmio.read(0xfebf_0000, &mut b));
        assert!(!m.mmio.read(0xfeb0_0000, &mut b));
        assert!(m.io.read(0xd000, &mut b));
        // Sizing a BAR (all-ones) unmaps it.
        m.cfg_write32(0x18, 0x10, 0xffff_ffff);
        assert!(!m.io.read(0xd000, &mut b));
        assert_eq!(m.cfg_read32(0x18, 0x10), 0xffff_ffe1);
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x18, 0), None);

        // Removing the device unmaps what is left.
        m.cfg_write32(0x18, 0x10, 0xd000);
        m.root.lock().unwrap().remove_device(0x18);
        assert!(!m.io.read(0xd000, &mut b));
        assert_eq!(m.cfg_read32(0x18, 0), 0xffff_ffff);
    }

    #[test]
    fn overlapping_bars_stay_unmapped_until_free() {
        let m = machine();
        let (a, _) = fake(None);
        let (b, blog) = fake(None);
        m.root.lock().unwrap().add_device(0x18, a);
        m.root.lock().unwrap().add_device(0x20, b);
        program_bars(&m, 0x18, 0xc000, 0xfe00_0000, 0, 0);
        m.cfg_write16(0x18, 0x04, CMD_IO | CMD_MEM);
        // Device b: I/O BAR overlapping a's (0xc010 inside 0xc000+0x20),
        // memory BAR exactly on a's.
        program_bars(&m, 0x20, 0xc010, 0xfe00_0000, 0, 0);
        m.cfg_write16(0x20, 0x04, CMD_IO | CMD_MEM);
        let mut d = [0u8; 1];
        assert!(m.io.read(0xc010, &mut d));
        assert_eq!(d, [0x10], "a still answers");
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x20, 0), None);
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x20, 1), None);
        assert!(blog.lock().unwrap().remapped.is_empty());
        // a moves away: b's BARs map on the retry.
        m.cfg_write32(0x18, 0x10, 0xe000);
        assert_eq!(
            m.root.lock().unwrap().mapped_bar(0x20, 0),
            Some((0xc000, 0x20))
        );
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x20, 1), None);
        m.cfg_write16(0x18, 0x04, 0);
        assert_eq!(
            m.root.lock().unwrap().mapped_bar(0x20, 1),
            Some((0xfe00_0000, 0x1000))
        );
        assert!(m.mmio.read(0xfe00_0001, &mut d));
        assert_eq!(d, [0x11]);
    }

    #[test]
    fn bars_over_fixed_devices_and_out_of_range() {
        let m = machine();
        let (a, _) = fake(None);
        m.root.lock().unwrap().add_device(0x18, a);
        // I/O BAR over the PCI config ports themselves.
        program_bars(&m, 0x18, 0xce0, 0, 0, 0);
        m.cfg_write16(0x18, 0x04, CMD_IO | CMD_MEM);
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x18, 0), None);
        assert_eq!(m.cfg_read32(0x18, 0), 0x1000_1af4, "config still works");
        // I/O BAR above 64 KiB.
        m.cfg_write32(0x18, 0x10, 0x0001_0000);
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x18, 0), None);
        // The low bits are not writable: 0xfff0 decodes as 0xffe0, which
        // ends exactly at 64 KiB.
        m.cfg_write32(0x18, 0x10, 0xfff0);
        assert_eq!(
            m.root.lock().unwrap().mapped_bar(0x18, 0),
            Some((0xffe0, 0x20))
        );
        // A 64-bit BAR at the very top of the address space.
        m.cfg_write32(0x18, 0x18, 0xffff_c000);
        m.cfg_write32(0x18, 0x1c, 0xffff_fffe);
        assert_eq!(
            m.root.lock().unwrap().mapped_bar(0x18, 2),
            Some((0xffff_fffe_ffff_c000, 0x4000))
        );
        // 0xffffffff_ffffc000 is the sizing pattern; not mapped.
        m.cfg_write32(0x18, 0x1c, 0xffff_ffff);
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x18, 2), None);
    }

    #[test]
    fn ram_bars_are_reported_not_mapped() {
        let m = machine();
        let (a, log) = fake(Some(1));
        m.root.lock().unwrap().add_device(0x18, a);
        m.cfg_write32(0x18, 0x14, 0xfd00_0000);
        m.cfg_write16(0x18, 0x04, CMD_MEM);
        let mut d = [0u8; 1];
        assert!(!m.mmio.read(0xfd00_0000, &mut d));
        assert_eq!(log.lock().unwrap().remapped, vec![(1, Some(0xfd00_0000))]);
        m.cfg_write32(0x18, 0x14, 0xfc00_0000);
        m.cfg_write16(0x18, 0x04, 0);
        assert_eq!(
            log.lock().unwrap().remapped,
            vec![(1, Some(0xfd00_0000)), (1, Some(0xfc00_0000)), (1, None)]
        );
    }

    #[test]
    fn port_cf9_is_forwarded() {
        let m = machine();
        let (p, events) = crate::devices::PowerHandle::recording();
        let rc = Arc::new(Mutex::new(super::super::piix3::ResetControl::new(p)));
        m.root.lock().unwrap().set_port_cf9(rc);
        m.io.write(0xcf9, &[0x02]);
        let mut b = [0u8; 1];
        m.io.read(0xcf9, &mut b);
        assert_eq!(b, [0x02]);
        assert!(events.lock().unwrap().is_empty());
        m.io.write(0xcf9, &[0x06]);
        assert_eq!(
            *events.lock().unwrap(),
            vec![crate::devices::PowerEvent::Reset]
        );
        // A word at 0xcf9 is not the reset register.
        m.io.write(0xcf9, &[0x06, 0]);
        assert_eq!(events.lock().unwrap().len(), 1);
    }

    #[test]
    fn pirq_swizzle_matches_seabios() {
        // SeaBIOS piix_pci_slot_get_irq: pci_irqs[(pin - 1 + slot - 1) & 3].
        for slot in 0..32u8 {
            for pin in 1..=4u8 {
                let want = (usize::from(pin) - 1 + usize::from(slot) + 3) & 3;
                assert_eq!(PciIntxRouter::pirq_for(slot, pin), want);
            }
        }
        assert_eq!(PciIntxRouter::pirq_for(1, 1), 0); // 00:01 INTA -> PIRQA
        assert_eq!(PciIntxRouter::pirq_for(3, 1), 2); // 00:03 INTA -> PIRQC
        assert_eq!(PciIntxRouter::pirq_for(0, 1), 3);
    }

    #[test]
    fn intx_routes_and_shares() {
        let (r, levels) = PciIntxRouter::recording();
        // Slot 3 INTA and slot 7 INTA both use PIRQC.
        let a = r.irq_line_for(3, 1);
        let b = r.irq_line_for(7, 1);
        // Disabled route: nothing is driven.
        a.set_level(true);
        assert!(levels.lock().unwrap().is_empty());
        assert!(r.pirq_asserted(2));
        // Enabling the route drives the asserted level at once.
        r.set_route(2, 11);
        assert_eq!(*levels.lock().unwrap(), vec![(11, true)]);
        b.set_level(true);
        a.set_level(true); // repeated: still one source
        a.set_level(false);
        assert_eq!(
            *levels.lock().unwrap(),
            vec![(11, true)],
            "b still holds it"
        );
        b.set_level(false);
        assert_eq!(*levels.lock().unwrap(), vec![(11, true), (11, false)]);
        b.set_level(false);
        assert_eq!(levels.lock().unwrap().len(), 2);
        // A pulse is a rise and a fall.
        a.pulse();
        assert_eq!(&levels.lock().unwrap()[2..], &[(11, true), (11, false)]);
    }

    #[test]
    fn intx_route_change_moves_the_level() {
        let (r, levels) = PciIntxRouter::recording();
        for (n, irq) in [10u8, 10, 11, 11].iter().enumerate() {
            r.set_route(n, *irq);
        }
        let a = r.irq_line_for(1, 1); // PIRQA -> 10
        let b = r.irq_line_for(1, 2); // PIRQB -> 10
        a.set_level(true);
        b.set_level(true);
        a.set_level(false);
        assert_eq!(
            *levels.lock().unwrap(),
            vec![(10, true)],
            "shared ISA IRQ ORed"
        );
        levels.lock().unwrap().clear();
        r.set_route(1, 5);
        assert_eq!(*levels.lock().unwrap(), vec![(5, true), (10, false)]);
        levels.lock().unwrap().clear();
        // Disabled and reserved targets drop the level.
        r.set_route(1, 0x85);
        assert_eq!(*levels.lock().unwrap(), vec![(5, false)]);
        for reserved in [0u8, 1, 2, 8, 13] {
            r.set_route(1, reserved);
            assert!(PciIntxRouter::route_target(reserved).is_none());
        }
        assert_eq!(levels.lock().unwrap().len(), 1);
        r.set_route(1, 15);
        assert_eq!(levels.lock().unwrap().last(), Some(&(15, true)));
        // Out-of-range PIRQ indexes are masked, not a panic.
        r.set_route(7, 3);
        assert_eq!(r.route(3), 3);
        // Pins outside 1..=4 go nowhere.
        let n = levels.lock().unwrap().len();
        r.irq_line_for(2, 0).set_level(true);
        r.irq_line_for(2, 9).set_level(true);
        assert_eq!(levels.lock().unwrap().len(), n);
    }

    #[test]
    fn i440fx_and_piix3_through_the_ports() {
        use crate::devices::pci::i440fx::{I440fx, PamMode, I440FX_DEVFN};
        use crate::devices::pci::piix3::{Piix3, PIIX3_DEVFN};
        let m = machine();
        let (router, levels) = PciIntxRouter::recording();
        let host = Arc::new(Mutex::new(I440fx::new()));
        let pam_seen = Arc::new(Mutex::new(None));
        let seen = pam_seen.clone();
        host.lock()
            .unwrap()
            .set_pam_callback(Box::new(move |st| *seen.lock().unwrap() = Some(*st)));
        m.root
            .lock()
            .unwrap()
            .add_device(I440FX_DEVFN, host.clone());
        m.root.lock().unwrap().add_device(
            PIIX3_DEVFN,
            Arc::new(Mutex::new(Piix3::new(router.clone()))),
        );
        // Enumeration as SeaBIOS does it.
        assert_eq!(m.cfg_read32(0x00, 0), 0x1237_8086);
        assert_eq!(m.cfg_read32(0x08, 0), 0x7000_8086);
        assert_eq!(m.cfg_read32(0x08, 0x0c) >> 16 & 0xff, 0x80);
        assert_eq!(m.cfg_read32(0x09, 0), 0xffff_ffff);
        // PIRQ routing through 0xcfc + n byte writes.
        m.select(PIIX3_DEVFN, 0x60);
        for (i, irq) in [10u8, 10, 11, 11].iter().enumerate() {
            m.io.write(0xcfc + i as u64, &[*irq]);
        }
        assert_eq!(m.cfg_read32(PIIX3_DEVFN, 0x60), 0x0b0b_0a0a);
        let line = router.irq_line_for(3, 1); // PIRQC
        line.set_level(true);
        assert_eq!(*levels.lock().unwrap(), vec![(11, true)]);
        // PAM through a dword at 0x58.
        m.cfg_write32(I440FX_DEVFN, 0x58, 0x3333_3000);
        let st = pam_seen.lock().unwrap().expect("PAM callback ran");
        assert_eq!(st[0], PamMode::ReadWrite);
        assert_eq!(st[1], PamMode::ReadWrite);
        assert_eq!(st[4], PamMode::ReadWrite, "0xcc000: PAM2 high nibble");
        assert_eq!(st[5], PamMode::Off, "0xd0000 is PAM3, not written yet");
        assert_eq!(host.lock().unwrap().pam_state(), st);
    }

    #[test]
    fn reset_remaps_from_config() {
        let m = machine();
        let (a, log) = fake(None);
        m.root.lock().unwrap().add_device(0x18, a.clone());
        program_bars(&m, 0x18, 0xc000, 0, 0, 0);
        m.cfg_write16(0x18, 0x04, CMD_IO);
        assert!(m.root.lock().unwrap().mapped_bar(0x18, 0).is_some());
        // The device resets its config space behind the root's back.
        a.lock().unwrap().config_mut().set_u16(0x04, 0);
        m.root.lock().unwrap().reset();
        assert_eq!(m.root.lock().unwrap().config_address(), 0);
        assert_eq!(m.root.lock().unwrap().mapped_bar(0x18, 0), None);
        assert_eq!(log.lock().unwrap().remapped.last(), Some(&(0, None)));
        let mut b = [0u8; 1];
        assert!(!m.io.read(0xc000, &mut b));
    }
}
