//! PCI: a type-0 configuration space with BAR emulation ([`PciConfig`]) and
//! the [`PciDevice`] trait every PCI function implements. The host bridge,
//! config mechanism #1 and the PIIX3 live beside this file.

pub mod i440fx;
pub mod piix3;
pub mod root;

/// Config-space register offsets.
pub mod reg {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const CLASS_PROG: usize = 0x09;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const SUBSYS_VENDOR: usize = 0x2c;
    pub const SUBSYS_ID: usize = 0x2e;
    pub const ROM_BAR: usize = 0x30;
    pub const CAP_PTR: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEM: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
pub const STATUS_CAP_LIST: u16 = 1 << 4;
pub const STATUS_INTX: u16 = 1 << 3;

/// Index used for the expansion ROM BAR in [`PciDevice::bar_read`] and friends.
pub const ROM_BAR_INDEX: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Port I/O.
    Io,
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory; takes this BAR slot and the next.
    Mem64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    pub kind: BarKind,
    /// Size in bytes; a power of two (at least 4 for I/O, 16 for memory).
    pub size: u64,
    pub prefetchable: bool,
}

/// A 256-byte type-0 configuration space. Writes honour a per-byte writable
/// mask; BARs read back their size mask when the guest writes all-ones.
#[derive(Clone)]
pub struct PciConfig {
    regs: [u8; 256],
    wmask: [u8; 256],
    bars: [Option<BarSpec>; 6],
    rom_size: u32,
    last_cap: usize,
    cap_end: usize,
}

impl PciConfig {
    /// `class` is `base << 16 | sub << 8 | prog_if`.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut c = PciConfig {
            regs: [0; 256],
            wmask: [0; 256],
            bars: [None; 6],
            rom_size: 0,
            last_cap: 0,
            cap_end: 0x40,
        };
        c.set_u16(reg::VENDOR_ID, vendor);
        c.set_u16(reg::DEVICE_ID, device);
        c.regs[reg::REVISION] = revision;
        c.regs[reg::CLASS_PROG] = class as u8;
        c.regs[reg::CLASS_PROG + 1] = (class >> 8) as u8;
        c.regs[reg::CLASS_PROG + 2] = (class >> 16) as u8;
        // Command: I/O, memory, bus master, INTx disable are writable.
        c.set_wmask_u16(
            reg::COMMAND,
            CMD_IO | CMD_MEM | CMD_BUS_MASTER | CMD_INTX_DISABLE,
        );
        c.wmask[reg::INTERRUPT_LINE] = 0xff;
        c
    }

    pub fn vendor_id(&self) -> u16 {
        self.u16_at(reg::VENDOR_ID)
    }
    pub fn device_id(&self) -> u16 {
        self.u16_at(reg::DEVICE_ID)
    }
    pub fn command(&self) -> u16 {
        self.u16_at(reg::COMMAND)
    }
    pub fn interrupt_line(&self) -> u8 {
        self.regs[reg::INTERRUPT_LINE]
    }

    pub fn set_header_type(&mut self, h: u8) {
        self.regs[reg::HEADER_TYPE] = h;
    }
    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_u16(reg::SUBSYS_VENDOR, vendor);
        self.set_u16(reg::SUBSYS_ID, id);
    }
    /// 1 = INTA# ... 4 = INTD#.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.regs[reg::INTERRUPT_PIN] = pin;
    }

    /// Declares BAR `index`. Sizes are rounded up to a power of two.
    pub fn add_bar(&mut self, index: usize, spec: BarSpec) {
        if index >= 6 || (spec.kind == BarKind::Mem64 && index >= 5) {
            return;
        }
        let min = if spec.kind == BarKind::Io { 4 } else { 16 };
        let size = spec.size.max(min).next_power_of_two();
        let spec = BarSpec { size, ..spec };
        self.bars[index] = Some(spec);
        let off = reg::BAR0 + index * 4;
        let (flags, mask): (u32, u64) = match spec.kind {
            BarKind::Io => (1, !(size - 1) & 0xffff_fffc),
            BarKind::Mem32 => ((spec.prefetchable as u32) << 3, !(size - 1) & 0xffff_fff0),
            BarKind::Mem64 => (
                0b100 | ((spec.prefetchable as u32) << 3),
                !(size - 1) & !0xf,
            ),
        };
        self.set_u32(off, flags);
        self.set_wmask_u32(off, mask as u32);
        if spec.kind == BarKind::Mem64 {
            self.bars[index + 1] = None;
            self.set_u32(off + 4, 0);
            self.set_wmask_u32(off + 4, (mask >> 32) as u32);
        }
    }

    /// Declares an expansion ROM of `size` bytes (rounded to a power of two).
    pub fn set_rom_size(&mut self, size: u32) {
        let size = size.max(2048).next_power_of_two();
        self.rom_size = size;
        self.set_wmask_u32(reg::ROM_BAR, !(size - 1) | 1);
    }

    /// Size of the expansion ROM BAR in bytes (0: none).
    pub fn rom_size(&self) -> u32 {
        self.rom_size
    }

    pub fn bar_spec(&self, index: usize) -> Option<BarSpec> {
        self.bars.get(index).copied().flatten()
    }

    /// The address BAR `index` (or [`ROM_BAR_INDEX`]) decodes at, or None
    /// when decoding is off or the BAR is unprogrammed (zero).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let cmd = self.command();
        if index == ROM_BAR_INDEX {
            let v = self.u32_at(reg::ROM_BAR);
            if self.rom_size == 0 || v & 1 == 0 || cmd & CMD_MEM == 0 {
                return None;
            }
            let a = (v & !(self.rom_size - 1) & !1) as u64;
            return (a != 0).then_some(a);
        }
        let spec = self.bar_spec(index)?;
        let off = reg::BAR0 + index * 4;
        let lo = self.u32_at(off) as u64;
        let addr = match spec.kind {
            BarKind::Io => {
                if cmd & CMD_IO == 0 {
                    return None;
                }
                lo & !0x3
            }
            BarKind::Mem32 => {
                if cmd & CMD_MEM == 0 {
                    return None;
                }
                lo & !0xf
            }
            BarKind::Mem64 => {
                if cmd & CMD_MEM == 0 {
                    return None;
                }
                (lo & !0xf) | ((self.u32_at(off + 4) as u64) << 32)
            }
        };
        // An all-ones sizing pattern left in place is not a real address.
        if addr == 0 || addr == (!(spec.size - 1) & self.addr_mask(spec.kind)) {
            return None;
        }
        Some(addr)
    }

    fn addr_mask(&self, kind: BarKind) -> u64 {
        match kind {
            BarKind::Io => 0xffff_fffc,
            BarKind::Mem32 => 0xffff_fff0,
            BarKind::Mem64 => !0xf,
        }
    }

    /// Appends a capability (`id`, then `body`, which excludes the 2-byte
    /// header) to the capability list; returns its offset, or None when
    /// config space is full. `writable` marks body bytes the guest may write.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> Option<usize> {
        let start = self.cap_end;
        let len = (2 + body.len() + 3) & !3;
        if start + len > 256 {
            return None;
        }
        self.regs[start] = id;
        self.regs[start + 1] = 0;
        self.regs[start + 2..start + 2 + body.len()].copy_from_slice(body);
        for (i, m) in writable.iter().take(body.len()).enumerate() {
            self.wmask[start + 2 + i] = *m;
        }
        if self.last_cap == 0 {
            self.regs[reg::CAP_PTR] = start as u8;
            let st = self.u16_at(reg::STATUS) | STATUS_CAP_LIST;
            self.set_u16(reg::STATUS, st);
        } else {
            self.regs[self.last_cap + 1] = start as u8;
        }
        self.last_cap = start;
        self.cap_end = start + len;
        Some(start)
    }

    /// Reads `data.len()` bytes at `offset`; out of range reads as ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.regs.get(offset + i).copied().unwrap_or(0xff);
        }
    }

    /// Writes through the writable mask. Returns true if a BAR, the ROM BAR
    /// or the command register changed (the caller then remaps).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> bool {
        let mut remap = false;
        for (i, &b) in data.iter().enumerate() {
            let o = offset + i;
            if o >= 256 {
                break;
            }
            let old = self.regs[o];
            let m = self.wmask[o];
            let new = (old & !m) | (b & m);
            if new != old {
                self.regs[o] = new;
                if (reg::BAR0..reg::BAR0 + 24).contains(&o)
                    || (reg::ROM_BAR..reg::ROM_BAR + 4).contains(&o)
                    || (reg::COMMAND..reg::COMMAND + 2).contains(&o)
                {
                    remap = true;
                }
            }
            // Status bits are write-one-to-clear (for those below 0x08).
            if o == reg::STATUS + 1 {
                self.regs[o] &= !b;
            }
        }
        remap
    }

    /// Raw access for device-specific registers.
    pub fn regs(&self) -> &[u8; 256] {
        &self.regs
    }
    pub fn regs_mut(&mut self) -> &mut [u8; 256] {
        &mut self.regs
    }
    /// Marks bytes `[offset, offset+mask.len())` writable per `mask`.
    pub fn set_wmask(&mut self, offset: usize, mask: &[u8]) {
        for (i, m) in mask.iter().enumerate() {
            if let Some(w) = self.wmask.get_mut(offset + i) {
                *w = *m;
            }
        }
    }
    /// Sets or clears the INTx status bit.
    pub fn set_intx_status(&mut self, on: bool) {
        let mut st = self.u16_at(reg::STATUS);
        if on {
            st |= STATUS_INTX
        } else {
            st &= !STATUS_INTX
        }
        self.set_u16(reg::STATUS, st);
    }

    pub fn u16_at(&self, o: usize) -> u16 {
        u16::from_le_bytes([self.regs[o], self.regs[o + 1]])
    }
    pub fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes([
            self.regs[o],
            self.regs[o + 1],
            self.regs[o + 2],
            self.regs[o + 3],
        ])
    }
    pub fn set_u16(&mut self, o: usize, v: u16) {
        self.regs[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn set_u32(&mut self, o: usize, v: u32) {
        self.regs[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn set_wmask_u16(&mut self, o: usize, v: u16) {
        self.wmask[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set_wmask_u32(&mut self, o: usize, v: u32) {
        self.wmask[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// A PCI function. The PCI root owns it (behind a mutex), routes config
/// cycles to it and maps its BARs onto the port-I/O and MMIO buses.
pub trait PciDevice: Send {
    fn config(&self) -> &PciConfig;
    fn config_mut(&mut self) -> &mut PciConfig;

    /// A config-space read. The default reads the stored registers.
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data)
    }
    /// A config-space write. The default applies the writable mask. Returns
    /// true when the BAR mapping may have changed.
    fn config_write(&mut self, offset: usize, data: &[u8]) -> bool {
        self.config_mut().write(offset, data)
    }

    /// An access inside BAR `bar` (0..=5, or [`ROM_BAR_INDEX`]).
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);

    /// Called after BAR `bar` moved to `addr` (None: unmapped). Devices whose
    /// BAR is plain RAM in its own KVM slot (the VGA framebuffer) hook this;
    /// such a BAR returns true from [`PciDevice::bar_is_ram`] and is not put on
    /// the MMIO bus.
    fn bar_remapped(&mut self, _bar: usize, _addr: Option<u64>) {}
    fn bar_is_ram(&self, _bar: usize) -> bool {
        false
    }

    /// Expansion ROM contents, if any.
    fn rom(&self) -> Option<&[u8]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PciConfig {
        let mut c = PciConfig::new(0x1234, 0x1111, 0x030000, 2);
        c.add_bar(
            0,
            BarSpec {
                kind: BarKind::Mem32,
                size: 16 << 20,
                prefetchable: true,
            },
        );
        c.add_bar(
            1,
            BarSpec {
                kind: BarKind::Io,
                size: 8,
                prefetchable: false,
            },
        );
        c.add_bar(
            2,
            BarSpec {
                kind: BarKind::Mem64,
                size: 0x4000,
                prefetchable: false,
            },
        );
        c.set_rom_size(0x9000);
        c
    }

    #[test]
    fn identity_registers() {
        let c = cfg();
        let mut d = [0u8; 4];
        c.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1111_1234);
        c.read(8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0300_0002);
        c.read(0x100, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn bar_sizing_and_decoding() {
        let mut c = cfg();
        // Size BAR0: write ones, read back the mask with flags.
        c.write(0x10, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32_at(0x10), 0xff00_0008);
        c.write(0x14, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32_at(0x14), 0xffff_fff9);
        c.write(0x18, &0xffff_ffffu32.to_le_bytes());
        c.write(0x1c, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32_at(0x18), 0xffff_c004);
        assert_eq!(c.u32_at(0x1c), 0xffff_ffff);
        c.write(0x30, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32_at(0x30), 0xffff_0001);
        // Program addresses; nothing decodes until the command enables it.
        assert!(c.write(0x10, &0xfd00_0000u32.to_le_bytes()));
        c.write(0x14, &0xc001u32.to_le_bytes());
        c.write(0x18, &0xfebf_0000u32.to_le_bytes());
        c.write(0x1c, &0u32.to_le_bytes());
        c.write(0x30, &0xfeb0_0001u32.to_le_bytes());
        assert_eq!(c.bar_address(0), None);
        assert!(c.write(4, &[(CMD_IO | CMD_MEM) as u8, 0]));
        assert_eq!(c.bar_address(0), Some(0xfd00_0000));
        assert_eq!(c.bar_address(1), Some(0xc000));
        assert_eq!(c.bar_address(2), Some(0xfebf_0000));
        assert_eq!(c.bar_address(ROM_BAR_INDEX), Some(0xfeb0_0000));
        assert_eq!(c.bar_address(3), None);
    }

    #[test]
    fn read_only_fields_stay() {
        let mut c = cfg();
        c.write(0, &[0, 0, 0, 0]);
        c.write(8, &[9, 9, 9, 9]);
        assert_eq!(c.vendor_id(), 0x1234);
        assert_eq!(c.regs()[reg::CLASS_PROG + 2], 3);
        c.write(reg::INTERRUPT_LINE, &[11]);
        assert_eq!(c.interrupt_line(), 11);
        // Out-of-range writes are dropped, not a panic.
        c.write(0xfe, &[1, 2, 3, 4]);
    }

    #[test]
    fn capability_chain() {
        let mut c = PciConfig::new(0x1af4, 0x1041, 0x020000, 1);
        let a = c
            .add_capability(
                0x09,
                &[0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
                &[],
            )
            .unwrap();
        let b = c
            .add_capability(0x11, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0xff, 0xc0])
            .unwrap();
        assert_eq!(c.regs()[reg::CAP_PTR] as usize, a);
        assert_eq!(c.regs()[a + 1] as usize, b);
        assert_eq!(c.regs()[b + 1], 0);
        assert_ne!(c.u16_at(reg::STATUS) & STATUS_CAP_LIST, 0);
        c.write(b + 2, &[0xff, 0xff]);
        assert_eq!(c.u16_at(b + 2), 0xc0ff);
    }
}
