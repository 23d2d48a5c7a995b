//! The PIIX3 PCI-to-ISA bridge (function 0 of the south bridge), 8086:7000,
//! class 0x060100, multi-function, at 00:01.0, and the small PIIX3 port
//! registers that live beside it:
//!
//! - [`Piix3`]: the PCI function. Its PIRQ route registers 0x60..0x63 are
//!   the shared state of a [`PciIntxRouter`]: a write there re-routes PCI
//!   INTx at once. The other PIIX3 control registers QEMU models (ISA I/O
//!   recovery 0x4C, XBCS 0x4E, top of memory 0x69, motherboard IRQ/DMA
//!   routing 0x70/0x76, PCSC 0x78, APIC base 0x80, SMI registers 0xA0..)
//!   are read/write storage with their reset values; none has an effect.
//! - [`ResetControl`]: port 0xCF9. Writing a value with RCPU (bit 2) set
//!   requests [`PowerEvent::Reset`] (0x06, the FADT RESET_REG value, is a
//!   hard reset; 0x04 a soft one, also a reset here, as in QEMU). SRST
//!   (bit 1) is stored and reads back. It sits inside the PCI root's
//!   0xCF8..0xD00 range, so give it to
//!   [`PciRoot::set_port_cf9`](super::root::PciRoot::set_port_cf9) rather
//!   than to the bus.
//! - [`SystemControlA`]: port 0x92. Bit 0 (fast reset) requests a reset and
//!   reads back 0; bit 1 (A20 gate) is stored (KVM has no A20 masking).
//! - [`Elcr`]: the edge/level control registers at 0x4D0/0x4D1. With
//!   KVM_CREATE_IRQCHIP the in-kernel PIC claims these two ports itself
//!   (Linux arch/x86/kvm/i8259.c: `picdev_in_range` covers 0x4d0/0x4d1,
//!   with masks 0xf8 and 0xde), so the VM must NOT put this model on its
//!   bus; it exists for a user-space PIC and is unit-tested.

use std::sync::Arc;

use log::debug;

use super::root::PciIntxRouter;
use super::{PciConfig, PciDevice, CMD_BUS_MASTER, CMD_IO, CMD_MEM};
use crate::devices::{BusDevice, PowerEvent, PowerHandle};

pub const DEVICE_PIIX3_ISA: u16 = 0x7000;
/// devfn of the ISA bridge (00:01.0).
pub const PIIX3_DEVFN: u8 = 0x08;
/// First PIRQ route register (PIRQRCA).
pub const PIRQ_ROUTE: usize = 0x60;

/// Port of [`ResetControl`].
pub const RESET_CONTROL_PORT: u64 = 0xcf9;
/// Port of [`SystemControlA`].
pub const SYSTEM_CONTROL_A_PORT: u64 = 0x92;
/// First port of [`Elcr`] (length 2).
pub const ELCR_PORT: u64 = 0x4d0;

/// Storage registers: (offset, reset value).
const STORAGE_REGS: &[(usize, u8)] = &[
    (0x4c, 0x4d), // IORT
    (0x4e, 0x03), // XBCS
    (0x4f, 0x00),
    (0x69, 0x02), // TOM
    (0x6a, 0x00), // MSTAT
    (0x70, 0x80), // MBIRQ0
    (0x71, 0x80), // MBIRQ1
    (0x76, 0x0c), // MBDMA0
    (0x77, 0x0c), // MBDMA1
    (0x78, 0x02), // PCSC
    (0x79, 0x00),
    (0x80, 0x00), // APICBASE
    (0x82, 0x00), // DLC
    (0xa0, 0x08), // SMICNTL
    (0xa2, 0x00), // SMIEN
    (0xa3, 0x00),
    (0xa4, 0x00), // SEE
    (0xa5, 0x00),
    (0xa6, 0x00),
    (0xa7, 0x00),
    (0xa8, 0x0f), // FTMR
    (0xaa, 0x00), // SMIREQ
    (0xab, 0x00),
    (0xac, 0x00), // CTLTMR
    (0xae, 0x00), // CTHTMR
];

/// The PIIX3 ISA bridge function.
pub struct Piix3 {
    config: PciConfig,
    router: Arc<PciIntxRouter>,
}

impl Piix3 {
    /// The bridge; its PIRQ registers are `router`'s routes.
    pub fn new(router: Arc<PciIntxRouter>) -> Self {
        let mut config = PciConfig::new(0x8086, DEVICE_PIIX3_ISA, 0x060100, 0);
        config.set_header_type(0x80);
        config.set_u16(0x04, CMD_IO | CMD_MEM | CMD_BUS_MASTER);
        config.set_u16(0x06, 0x0200); // DEVSEL medium
        for &(off, v) in STORAGE_REGS {
            config.regs_mut()[off] = v;
            config.set_wmask(off, &[0xff]);
        }
        for n in 0..4 {
            router.set_route(n, super::root::PIRQ_DISABLED);
        }
        Piix3 { config, router }
    }

    /// Machine reset: registers back to their reset values, PIRQ routing
    /// disabled (asserted PCI lines stop driving their ISA IRQs).
    pub fn reset(&mut self) {
        *self = Self::new(self.router.clone());
    }

    /// The router whose routes this bridge's 0x60..0x63 hold.
    pub fn router(&self) -> &Arc<PciIntxRouter> {
        &self.router
    }
}

impl PciDevice for Piix3 {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(n) = offset
                .checked_add(i)
                .and_then(|o| o.checked_sub(PIRQ_ROUTE))
                .filter(|n| *n < 4)
            {
                *b = self.router.route(n);
            }
        }
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) -> bool {
        let remap = self.config.write(offset, data);
        for (i, &b) in data.iter().enumerate() {
            if let Some(n) = offset
                .checked_add(i)
                .and_then(|o| o.checked_sub(PIRQ_ROUTE))
                .filter(|n| *n < 4)
            {
                // Bits 6:4 are reserved.
                let v = b & 0x8f;
                debug!("piix3: PIRQ{} -> {:#04x}", (b'A' + n as u8) as char, v);
                self.router.set_route(n, v);
            }
        }
        remap
    }

    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

/// A one-byte port at offset 0 whose write can request a machine reset:
/// the part [`ResetControl`] and [`SystemControlA`] share. A write keeps
/// the bits in `keep`; one with `reset_bit` set requests a reset.
/// Reads beyond the byte, and writes to other offsets, are ignored (0xff).
struct ResetLatch {
    value: u8,
    power: PowerHandle,
    keep: u8,
    reset_bit: u8,
    /// For the debug log: how the guest asked for the reset.
    what: &'static str,
}

impl ResetLatch {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = self.value;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (0, Some(&v)) = (offset, data.first()) else {
            return;
        };
        self.value = v & self.keep;
        if v & self.reset_bit != 0 {
            debug!("piix3: {} ({v:#04x})", self.what);
            self.power.request(PowerEvent::Reset);
        }
    }
}

/// The PIIX3 reset control register, port 0xCF9.
pub struct ResetControl(ResetLatch);

const RC_SRST: u8 = 1 << 1;
const RC_RCPU: u8 = 1 << 2;

impl ResetControl {
    pub fn new(power: PowerHandle) -> Self {
        ResetControl(ResetLatch {
            value: 0,
            power,
            keep: RC_SRST,
            reset_bit: RC_RCPU,
            what: "reset through 0xcf9",
        })
    }
    /// The stored register (SRST only).
    pub fn value(&self) -> u8 {
        self.0.value
    }
    /// Machine reset: the register reads 0.
    pub fn reset(&mut self) {
        self.0.value = 0;
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.write(offset, data)
    }
}

/// System Control Port A, port 0x92.
pub struct SystemControlA(ResetLatch);

const SCA_FAST_RESET: u8 = 1 << 0;
const SCA_A20: u8 = 1 << 1;

impl SystemControlA {
    pub fn new(power: PowerHandle) -> Self {
        SystemControlA(ResetLatch {
            value: 0,
            power,
            keep: !SCA_FAST_RESET,
            reset_bit: SCA_FAST_RESET,
            what: "fast reset through port 0x92",
        })
    }
    /// Whether the guest has opened the A20 gate through this port.
    pub fn a20_enabled(&self) -> bool {
        self.0.value & SCA_A20 != 0
    }
}

impl BusDevice for SystemControlA {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.write(offset, data)
    }
}

/// For a direct boot, where no firmware runs: sets PIRQA..D to `irqs`, the
/// ISA IRQs the DSDT's `_PRT` names, as SeaBIOS's `piix_isa_bridge_setup`
/// does at boot. Without it every route stays disabled and the INTx of a
/// PCI device (virtio without MSI-X, `pci=nomsi`) reaches nothing.
pub fn program_pirq_routes(router: &PciIntxRouter, irqs: [u8; 4]) {
    for (n, irq) in irqs.iter().enumerate() {
        router.set_route(n, *irq);
    }
}

/// The edge/level control registers (ELCR1 at 0x4D0 for IRQ 0-7, ELCR2 at
/// 0x4D1 for IRQ 8-15). A set bit makes that PIC input level-triggered.
/// IRQ 0, 1, 2, 8 and 13 cannot be level-triggered; their bits read 0.
/// Not for the bus when KVM's in-kernel PIC is used (see the module doc).
#[derive(Default)]
pub struct Elcr {
    value: [u8; 2],
}

const ELCR_MASK: [u8; 2] = [0xf8, 0xde];

impl Elcr {
    pub fn new() -> Self {
        Self::default()
    }
    /// ELCR2 << 8 | ELCR1: bit n = IRQ n is level-triggered.
    pub fn value(&self) -> u16 {
        u16::from_le_bytes(self.value)
    }
    /// Whether ISA IRQ `irq` is level-triggered (false beyond 15).
    pub fn is_level(&self, irq: u32) -> bool {
        irq < 16 && self.value() & (1 << irq) != 0
    }
}

impl BusDevice for Elcr {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.value.get(o))
                .copied()
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|o| *o < 2)
            else {
                continue;
            };
            self.value[o] = b & ELCR_MASK[o];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_cfg(d: &mut Piix3, off: usize, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        d.config_read(off, &mut b);
        b
    }

    #[test]
    fn direct_boot_routes_intx_where_the_prt_says() {
        let cfg = crate::acpi::AcpiConfig::default();
        for slot in 1..8u8 {
            for pin in 1..=4u8 {
                let (r, log) = PciIntxRouter::recording();
                let line = r.irq_line_for(slot, pin);
                // Nothing programmed (what a direct boot had): lost.
                line.set_level(true);
                line.set_level(false);
                assert!(log.lock().unwrap().is_empty(), "no route yet");
                program_pirq_routes(&r, cfg.pci_irqs);
                line.set_level(true);
                let prt = u32::from(cfg.pci_irqs[crate::acpi::pirq_of(slot, pin - 1)]);
                assert_eq!(
                    log.lock().unwrap().last().copied(),
                    Some((prt, true)),
                    "slot {slot} pin {pin} raises the _PRT's GSI"
                );
            }
        }
    }

    #[test]
    fn identity() {
        let (r, _) = PciIntxRouter::recording();
        let mut d = Piix3::new(r);
        assert_eq!(read_cfg(&mut d, 0, 4), [0x86, 0x80, 0x00, 0x70]);
        assert_eq!(read_cfg(&mut d, 8, 4), [0x00, 0x00, 0x01, 0x06]);
        assert_eq!(read_cfg(&mut d, 0x0e, 1), [0x80]);
        assert_eq!(read_cfg(&mut d, 0x04, 2), [0x07, 0x00]);
        assert_eq!(read_cfg(&mut d, 0x4c, 1), [0x4d]);
        assert_eq!(read_cfg(&mut d, 0x4e, 1), [0x03]);
        assert_eq!(read_cfg(&mut d, 0x69, 1), [0x02]);
        assert_eq!(read_cfg(&mut d, 0xa8, 1), [0x0f]);
        // Storage registers take writes; identity does not.
        d.config_write(0x4c, &[0x11]);
        assert_eq!(read_cfg(&mut d, 0x4c, 1), [0x11]);
        d.config_write(0x00, &[0, 0, 0, 0]);
        assert_eq!(read_cfg(&mut d, 0, 2), [0x86, 0x80]);
    }

    #[test]
    fn pirq_registers_are_the_router() {
        let (r, _) = PciIntxRouter::recording();
        let mut d = Piix3::new(r.clone());
        assert_eq!(read_cfg(&mut d, 0x60, 4), [0x80; 4]);
        // SeaBIOS: 10, 10, 11, 11, byte by byte.
        for (i, v) in [10u8, 10, 11, 11].iter().enumerate() {
            d.config_write(0x60 + i, &[*v]);
        }
        assert_eq!(read_cfg(&mut d, 0x60, 4), [10, 10, 11, 11]);
        assert_eq!(r.route(2), 11);
        // A dword write; reserved bits 6:4 are dropped.
        d.config_write(0x60, &[0x8a, 0x7b, 0x05, 0x0e]);
        assert_eq!(read_cfg(&mut d, 0x60, 4), [0x8a, 0x0b, 0x05, 0x0e]);
        // A write straddling 0x5f/0x60 reaches PIRQA only.
        d.config_write(0x5f, &[0xaa, 0x09]);
        assert_eq!(r.route(0), 0x09);
        assert_eq!(read_cfg(&mut d, 0x5f, 2), [0x00, 0x09]);
    }

    #[test]
    fn reset_control() {
        let (p, log) = PowerHandle::recording();
        let mut rc = ResetControl::new(p);
        let mut b = [0u8];
        rc.read(0, &mut b);
        assert_eq!(b, [0]);
        rc.write(0, &[0x02]);
        assert!(log.lock().unwrap().is_empty());
        rc.read(0, &mut b);
        assert_eq!(b, [0x02]);
        rc.write(0, &[0x06]);
        assert_eq!(*log.lock().unwrap(), vec![PowerEvent::Reset]);
        rc.write(0, &[0x04]);
        assert_eq!(log.lock().unwrap().len(), 2);
        // Odd widths and offsets: no panic, no reset.
        rc.write(1, &[0x06]);
        rc.write(0, &[]);
        assert_eq!(log.lock().unwrap().len(), 2);
        let mut w = [0u8; 3];
        rc.read(0, &mut w);
        assert_eq!(w, [0x00, 0xff, 0xff]);
    }

    #[test]
    fn system_control_a() {
        let (p, log) = PowerHandle::recording();
        let mut s = SystemControlA::new(p);
        assert!(!s.a20_enabled());
        s.write(0, &[0x02]);
        assert!(s.a20_enabled());
        assert!(log.lock().unwrap().is_empty());
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b, [0x02]);
        s.write(0, &[0x03]);
        assert_eq!(*log.lock().unwrap(), vec![PowerEvent::Reset]);
        s.read(0, &mut b);
        assert_eq!(b, [0x02], "fast reset bit reads back 0");
        s.write(0, &[0x00]);
        assert!(!s.a20_enabled());
        s.write(5, &[0x01]);
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[test]
    fn elcr_masks_reserved_irqs() {
        let mut e = Elcr::new();
        e.write(0, &[0xff]);
        e.write(1, &[0xff]);
        assert_eq!(e.value(), 0xdef8);
        assert!(e.is_level(3) && e.is_level(10) && e.is_level(15));
        for irq in [0, 1, 2, 8, 13, 16, 999] {
            assert!(!e.is_level(irq), "irq {irq}");
        }
        // SeaBIOS programs 10 and 11 level.
        e.write(0, &[0x00, 0x0c]);
        assert_eq!(e.value(), 0x0c00);
        let mut b = [0u8; 3];
        e.read(0, &mut b);
        assert_eq!(b, [0x00, 0x0c, 0xff]);
        e.write(1, &[0xff, 0xff, 0xff]);
        assert_eq!(e.value(), 0xde00);
        e.write(u64::MAX, &[1, 2]);
        e.read(u64::MAX, &mut b);
        assert_eq!(b, [0xff; 3]);
    }

    #[test]
    fn reset_disables_routing() {
        let (r, levels) = PciIntxRouter::recording();
        let mut d = Piix3::new(r.clone());
        d.config_write(0x60, &[10, 10, 11, 11]);
        d.config_write(0x4c, &[0]);
        r.irq_line_for(1, 1).set_level(true);
        assert_eq!(*levels.lock().unwrap(), vec![(10, true)]);
        d.reset();
        assert_eq!(read_cfg(&mut d, 0x60, 4), [0x80; 4]);
        assert_eq!(read_cfg(&mut d, 0x4c, 1), [0x4d]);
        assert_eq!(levels.lock().unwrap().last(), Some(&(10, false)));
        let (p, _) = PowerHandle::recording();
        let mut rc = ResetControl::new(p);
        rc.write(0, &[0x02]);
        rc.reset();
        assert_eq!(rc.value(), 0);
    }
}
