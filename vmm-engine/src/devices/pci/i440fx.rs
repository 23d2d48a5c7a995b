//! The i440FX host bridge (PMC), 8086:1237 rev 2, class 0x060000, at 00:00.0.
//!
//! What a guest can do with it here: read its identity, program the seven
//! PAM registers (0x59..0x5F) that decide whether the BIOS and option-ROM
//! segments 0xC0000..0xFFFFF read and write DRAM (shadow RAM) or the
//! ROM/PCI side, and read/write the SMRAM control register 0x72 (stored,
//! with its D_LCK lock honoured; there is no SMM). The DRAM control fields
//! 0x50..0x58 are plain read/write storage so firmware that touches them
//! (SeaBIOS reads and writes the dword at 0x58 around PAM0) is harmless.
//!
//! The decoded PAM state is [`I440fx::pam_state`]; whenever it changes the
//! callback given to [`I440fx::set_pam_callback`] runs, so the VM can remap
//! its BIOS shadow memory. Missing: DRAM row boundaries (0x60..0x67),
//! error reporting, SMM.

use super::{PciConfig, PciDevice};

pub const VENDOR_INTEL: u16 = 0x8086;
pub const DEVICE_I440FX: u16 = 0x1237;
/// devfn of the host bridge (00:00.0).
pub const I440FX_DEVFN: u8 = 0;

/// First PAM register (PAM0, the 0xF0000 segment).
pub const PAM0: usize = 0x59;
/// Number of PAM registers.
pub const PAM_REGS: usize = 7;
/// Number of PAM-controlled segments.
pub const PAM_SEGMENTS: usize = 13;
/// SMRAM control register.
pub const SMRAM: usize = 0x72;

const SMRAM_D_OPEN: u8 = 1 << 6;
const SMRAM_D_CLS: u8 = 1 << 5;
const SMRAM_D_LCK: u8 = 1 << 4;
const SMRAM_G_SMRAME: u8 = 1 << 3;
/// C_BASE_SEG = 010b (0xA0000), read-only.
const SMRAM_DEFAULT: u8 = 0x02;

/// How one PAM segment decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PamMode {
    /// DRAM disabled: reads and writes go to the ROM / PCI side.
    #[default]
    Off,
    /// Reads come from DRAM, writes go to the ROM / PCI side.
    ReadOnly,
    /// Writes go to DRAM, reads come from the ROM / PCI side.
    WriteOnly,
    /// Reads and writes go to DRAM.
    ReadWrite,
}

impl PamMode {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => PamMode::Off,
            1 => PamMode::ReadOnly,
            2 => PamMode::WriteOnly,
            _ => PamMode::ReadWrite,
        }
    }
}

/// Base address and length of PAM segment `i` (0: 0xF0000 64 KiB; 1..=12:
/// 0xC0000 + (i - 1) * 16 KiB). None for `i >= 13`.
pub fn pam_segment(i: usize) -> Option<(u64, u64)> {
    match i {
        0 => Some((0xf0000, 0x10000)),
        1..=12 => Some((0xc0000 + (i as u64 - 1) * 0x4000, 0x4000)),
        _ => None,
    }
}

/// Called with the new PAM state whenever it changes.
pub type PamCallback = Box<dyn Fn(&[PamMode; PAM_SEGMENTS]) + Send>;

/// The i440FX host bridge.
pub struct I440fx {
    config: PciConfig,
    pam_cb: Option<PamCallback>,
}

impl Default for I440fx {
    fn default() -> Self {
        Self::new()
    }
}

impl I440fx {
    pub fn new() -> Self {
        let mut config = PciConfig::new(VENDOR_INTEL, DEVICE_I440FX, 0x060000, 2);
        config.set_header_type(0x00);
        // DRAM control fields: plain storage.
        config.set_wmask(0x50, &[0xff; 9]);
        // PAM0 has only the high nibble; PAM1..6 both nibbles (2 bits each).
        config.set_wmask(PAM0, &[0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]);
        config.regs_mut()[SMRAM] = SMRAM_DEFAULT;
        I440fx {
            config,
            pam_cb: None,
        }
    }

    /// Machine reset: registers back to power-on values (all PAM segments
    /// Off); the PAM callback runs if that changed the state.
    pub fn reset(&mut self) {
        let before = self.pam_state();
        let cb = self.pam_cb.take();
        *self = Self::new();
        self.pam_cb = cb;
        let after = self.pam_state();
        if after != before {
            if let Some(cb) = &self.pam_cb {
                cb(&after);
            }
        }
    }

    /// Runs `cb` with the new state each time a PAM register changes the
    /// decoding of some segment.
    pub fn set_pam_callback(&mut self, cb: PamCallback) {
        self.pam_cb = Some(cb);
    }

    /// The decoded PAM state: index 0 = 0xF0000..0xFFFFF, 1..=12 = the 16 KiB
    /// pieces of 0xC0000..0xEFFFF in address order.
    pub fn pam_state(&self) -> [PamMode; PAM_SEGMENTS] {
        let r = self.config.regs();
        let mut s = [PamMode::Off; PAM_SEGMENTS];
        s[0] = PamMode::from_bits(r[PAM0] >> 4);
        for i in 1..PAM_REGS {
            let v = r[PAM0 + i];
            s[2 * i - 1] = PamMode::from_bits(v);
            s[2 * i] = PamMode::from_bits(v >> 4);
        }
        s
    }

    /// The SMRAM control register.
    pub fn smram(&self) -> u8 {
        self.config.regs()[SMRAM]
    }

    fn write_smram(&mut self, v: u8) {
        let old = self.smram();
        let new = if old & SMRAM_D_LCK != 0 {
            // Locked: only D_CLS may change; D_OPEN stays clear.
            (old & !SMRAM_D_CLS) | (v & SMRAM_D_CLS)
        } else {
            let mut n =
                (v & (SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME)) | SMRAM_DEFAULT;
            if n & SMRAM_D_LCK != 0 {
                n &= !SMRAM_D_OPEN;
            }
            n
        };
        self.config.regs_mut()[SMRAM] = new;
    }
}

impl PciDevice for I440fx {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) -> bool {
        let before = self.pam_state();
        let remap = self.config.write(offset, data);
        // SMRAM has lock semantics the byte mask cannot express.
        if let Some(i) = SMRAM.checked_sub(offset) {
            if let Some(&v) = data.get(i) {
                self.write_smram(v);
            }
        }
        let after = self.pam_state();
        if after != before {
            if let Some(cb) = &self.pam_cb {
                cb(&after);
            }
        }
        remap
    }

    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn read32(d: &mut I440fx, off: usize) -> u32 {
        let mut b = [0u8; 4];
        d.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity() {
        let mut d = I440fx::new();
        assert_eq!(read32(&mut d, 0), 0x1237_8086);
        assert_eq!(read32(&mut d, 8), 0x0600_0002);
        let mut h = [0u8];
        d.config_read(0x0e, &mut h);
        assert_eq!(h[0], 0);
        // No BARs.
        d.config_write(0x10, &[0xff; 4]);
        assert_eq!(read32(&mut d, 0x10), 0);
        // Identity is read-only.
        d.config_write(0, &[0; 4]);
        assert_eq!(read32(&mut d, 0), 0x1237_8086);
    }

    #[test]
    fn pam_segments_layout() {
        assert_eq!(pam_segment(0), Some((0xf0000, 0x10000)));
        assert_eq!(pam_segment(1), Some((0xc0000, 0x4000)));
        assert_eq!(pam_segment(2), Some((0xc4000, 0x4000)));
        assert_eq!(pam_segment(12), Some((0xec000, 0x4000)));
        assert_eq!(pam_segment(13), None);
    }

    #[test]
    fn pam_decoding_and_callback() {
        let mut d = I440fx::new();
        assert_eq!(d.pam_state(), [PamMode::Off; 13]);
        let seen: Arc<Mutex<Vec<[PamMode; 13]>>> = Arc::default();
        let s = seen.clone();
        d.set_pam_callback(Box::new(move |st| s.lock().unwrap().push(*st)));

        // SeaBIOS's make_bios_writable: dwords at 0x58 and 0x5c.
        let lo = u32::from_le_bytes([0x00, 0x30, 0x33, 0x33]);
        let hi = u32::from_le_bytes([0x33, 0x33, 0x33, 0x33]);
        d.config_write(0x58, &lo.to_le_bytes());
        d.config_write(0x5c, &hi.to_le_bytes());
        assert_eq!(d.pam_state(), [PamMode::ReadWrite; 13]);
        assert_eq!(seen.lock().unwrap().len(), 2);
        // 0x60 (DRAM row boundary) is not writable; 0x5c..0x5f were.
        assert_eq!(read32(&mut d, 0x5c), 0x3333_3333);
        assert_eq!(read32(&mut d, 0x60), 0);

        // Make the F segment read-only, C0000 write-only, C4000 off.
        d.config_write(PAM0, &[0x10]);
        d.config_write(PAM0 + 1, &[0x02]);
        let st = d.pam_state();
        assert_eq!(st[0], PamMode::ReadOnly);
        assert_eq!(st[1], PamMode::WriteOnly);
        assert_eq!(st[2], PamMode::Off);
        assert_eq!(st[3], PamMode::ReadWrite);
        assert_eq!(seen.lock().unwrap().last(), Some(&st));

        // Reserved bits are not writable; writing them changes nothing and
        // no callback runs.
        let n = seen.lock().unwrap().len();
        d.config_write(PAM0, &[0x1f]);
        assert_eq!(d.config().regs()[PAM0], 0x10);
        d.config_write(PAM0 + 2, &[0xff]);
        assert_eq!(d.config().regs()[PAM0 + 2], 0x33);
        assert_eq!(seen.lock().unwrap().len(), n);
    }

    #[test]
    fn dram_fields_are_storage() {
        let mut d = I440fx::new();
        d.config_write(0x50, &[1, 2, 3, 4]);
        assert_eq!(read32(&mut d, 0x50), 0x0403_0201);
        d.config_write(0x57, &[0xaa, 0x55]);
        assert_eq!(d.config().regs()[0x57], 0xaa);
        assert_eq!(d.config().regs()[0x58], 0x55);
    }

    #[test]
    fn smram_lock() {
        let mut d = I440fx::new();
        assert_eq!(d.smram(), 0x02);
        // C_BASE_SEG is read-only; reserved bit 7 stays clear.
        d.config_write(SMRAM, &[0xc8 | 0x05]);
        assert_eq!(d.smram(), 0x4a);
        // Lock: D_OPEN is forced clear and stays clear.
        d.config_write(SMRAM, &[0x5a]);
        assert_eq!(d.smram(), 0x1a);
        d.config_write(SMRAM, &[0x42]);
        assert_eq!(d.smram(), 0x1a);
        d.config_write(SMRAM, &[0x3a]);
        assert_eq!(d.smram(), 0x3a);
        // A dword write covering 0x70..0x73 reaches SMRAM too.
        let mut d = I440fx::new();
        d.config_write(0x70, &[0, 0, 0x08, 0]);
        assert_eq!(d.smram(), 0x0a);
    }

    #[test]
    fn hostile_offsets() {
        let mut d = I440fx::new();
        d.config_write(0xfe, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut b = [0u8; 8];
        d.config_read(0xfc, &mut b);
        assert_eq!(&b[4..], &[0xff; 4]);
    }

    #[test]
    fn reset_restores_power_on_state() {
        let mut d = I440fx::new();
        let calls = Arc::new(Mutex::new(0));
        let c = calls.clone();
        d.set_pam_callback(Box::new(move |_| *c.lock().unwrap() += 1));
        d.config_write(PAM0, &[0x30]);
        d.config_write(SMRAM, &[0x10]);
        assert_eq!(*calls.lock().unwrap(), 1);
        d.reset();
        assert_eq!(d.pam_state(), [PamMode::Off; 13]);
        assert_eq!(d.smram(), 0x02, "reset also clears D_LCK");
        assert_eq!(*calls.lock().unwrap(), 2, "callback kept and told");
        d.reset();
        assert_eq!(*calls.lock().unwrap(), 2, "no change, no call");
    }
}
