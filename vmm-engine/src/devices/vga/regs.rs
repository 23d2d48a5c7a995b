//! The VGA register file behind ports 0x3B0-0x3DF: miscellaneous output,
//! sequencer, CRTC, graphics controller, attribute controller, DAC and the
//! input status registers.
//!
//! Every index the guest writes is masked to the register file's range (as
//! the hardware decodes only so many bits) or, for the CRTC, ignored when out
//! of range. Values are masked to the bits the hardware implements.

/// Sequencer registers.
pub mod sr {
    pub const RESET: usize = 0;
    pub const CLOCK_MODE: usize = 1;
    pub const PLANE_WRITE: usize = 2;
    pub const CHAR_MAP: usize = 3;
    pub const MEMORY_MODE: usize = 4;
    /// Clocking mode: 8-dot characters.
    pub const CLK_8DOTS: u8 = 0x01;
    /// Clocking mode: dot clock / 2 (40-column text, 320-pixel modes).
    pub const CLK_DIV2: u8 = 0x08;
    /// Clocking mode: screen off.
    pub const CLK_SCREEN_OFF: u8 = 0x20;
    /// Memory mode: chain 4.
    pub const MEM_CHAIN4: u8 = 0x08;
}

/// Graphics controller registers.
pub mod gr {
    pub const SR_VALUE: usize = 0;
    pub const SR_ENABLE: usize = 1;
    pub const COMPARE_VALUE: usize = 2;
    pub const DATA_ROTATE: usize = 3;
    pub const PLANE_READ: usize = 4;
    pub const MODE: usize = 5;
    pub const MISC: usize = 6;
    pub const COMPARE_MASK: usize = 7;
    pub const BIT_MASK: usize = 8;
}

/// Attribute controller registers.
pub mod ar {
    pub const MODE: usize = 0x10;
    pub const PLANE_ENABLE: usize = 0x12;
    pub const COLOR_SELECT: usize = 0x14;
    /// Mode control: line graphics enable (9th column copies the 8th).
    pub const MODE_LGE: u8 = 0x04;
    /// Mode control: attribute bit 7 blinks instead of brightening.
    pub const MODE_BLINK: u8 = 0x08;
    /// Mode control: palette bits 5-4 come from the colour select register.
    pub const MODE_P54S: u8 = 0x80;
    /// Index register: palette address source (display enabled).
    pub const INDEX_PAS: u8 = 0x20;
}

/// CRTC registers.
pub mod cr {
    pub const H_DISP_END: usize = 0x01;
    pub const OVERFLOW: usize = 0x07;
    pub const MAX_SCAN: usize = 0x09;
    pub const CURSOR_START: usize = 0x0a;
    pub const CURSOR_END: usize = 0x0b;
    pub const START_HI: usize = 0x0c;
    pub const START_LO: usize = 0x0d;
    pub const CURSOR_HI: usize = 0x0e;
    pub const CURSOR_LO: usize = 0x0f;
    pub const V_RETRACE_END: usize = 0x11;
    pub const V_DISP_END: usize = 0x12;
    pub const OFFSET: usize = 0x13;
    pub const MODE: usize = 0x17;
    pub const LINE_COMPARE: usize = 0x18;
    /// Number of CRTC registers.
    pub const COUNT: usize = 0x19;
}

/// Implemented bits of the sequencer registers.
const SR_MASK: [u8; 8] = [0x03, 0x3d, 0x0f, 0x3f, 0x0e, 0x00, 0x00, 0xff];
/// Implemented bits of the graphics controller registers (9 exist).
const GR_MASK: [u8; 9] = [0x0f, 0x0f, 0x0f, 0x1f, 0x03, 0x7b, 0x0f, 0x0f, 0xff];

/// Misc output: I/O address select (1 = colour, CRTC at 0x3D4).
pub const MISC_COLOR: u8 = 0x01;
/// Input status 1: display enable and vertical retrace.
const ST01_TOGGLE: u8 = 0x09;

/// The VGA register file.
#[derive(Clone)]
pub struct VgaRegs {
    pub misc: u8,
    pub sr_index: u8,
    pub sr: [u8; 8],
    pub gr_index: u8,
    pub gr: [u8; 9],
    pub ar_index: u8,
    pub ar: [u8; 0x15],
    pub ar_flip_flop: bool,
    pub cr_index: u8,
    pub cr: [u8; cr::COUNT],
    pub dac_read_index: u8,
    pub dac_write_index: u8,
    dac_sub_index: u8,
    dac_state: u8,
    dac_cache: [u8; 3],
    pub dac_mask: u8,
    /// 256 entries of R, G, B; 6-bit values unless `dac_8bit`.
    pub palette: [u8; 768],
    /// VBE 8-bit DAC mode (set through the dispi ENABLE register).
    pub dac_8bit: bool,
    fcr: u8,
    st00: u8,
    st01: u8,
}

impl Default for VgaRegs {
    fn default() -> Self {
        VgaRegs {
            misc: 0,
            sr_index: 0,
            sr: [0; 8],
            gr_index: 0,
            gr: [0; 9],
            ar_index: 0,
            ar: [0; 0x15],
            ar_flip_flop: false,
            cr_index: 0,
            cr: [0; cr::COUNT],
            dac_read_index: 0,
            dac_write_index: 0,
            dac_sub_index: 0,
            dac_state: 0,
            dac_cache: [0; 3],
            dac_mask: 0xff,
            palette: [0; 768],
            dac_8bit: false,
            fcr: 0,
            st00: 0,
            st01: 0,
        }
    }
}

impl VgaRegs {
    fn color(&self) -> bool {
        self.misc & MISC_COLOR != 0
    }

    /// A port in the mono range while in colour mode (or the reverse) is not
    /// decoded.
    fn decoded(&self, port: u16) -> bool {
        let mono = (0x3b0..=0x3bf).contains(&port);
        let colour = (0x3d0..=0x3df).contains(&port);
        !((mono && self.color()) || (colour && !self.color()))
    }

    /// Reads one byte from I/O port `port` (0x3B0..=0x3DF).
    pub fn read_port(&mut self, port: u16) -> u8 {
        if !self.decoded(port) {
            return 0xff;
        }
        match port {
            0x3c0 => self.ar_index,
            0x3c1 => self
                .ar
                .get((self.ar_index & 0x1f) as usize)
                .copied()
                .unwrap_or(0),
            0x3c2 => self.st00,
            0x3c4 => self.sr_index,
            0x3c5 => self.sr[self.sr_index as usize & 7],
            0x3c6 => self.dac_mask,
            0x3c7 => self.dac_state,
            0x3c8 => self.dac_write_index,
            0x3c9 => {
                let i = self.dac_read_index as usize * 3 + self.dac_sub_index as usize;
                let v = self.palette.get(i).copied().unwrap_or(0);
                self.dac_sub_index += 1;
                if self.dac_sub_index == 3 {
                    self.dac_sub_index = 0;
                    self.dac_read_index = self.dac_read_index.wrapping_add(1);
                }
                v
            }
            0x3ca => self.fcr,
            0x3cc => self.misc,
            0x3ce => self.gr_index,
            0x3cf => self.gr.get(self.gr_index as usize).copied().unwrap_or(0),
            0x3b4 | 0x3d4 => self.cr_index,
            0x3b5 | 0x3d5 => self.cr.get(self.cr_index as usize).copied().unwrap_or(0),
            0x3ba | 0x3da => {
                // Nothing is timed: flip retrace and display-enable on every
                // read so that polling loops in either direction terminate.
                self.st01 ^= ST01_TOGGLE;
                self.ar_flip_flop = false;
                self.st01
            }
            _ => 0,
        }
    }

    /// Writes one byte to I/O port `port`. Returns true when the write may
    /// change what is displayed.
    pub fn write_port(&mut self, port: u16, val: u8) -> bool {
        if !self.decoded(port) {
            return false;
        }
        match port {
            0x3c0 | 0x3c1 => {
                if !self.ar_flip_flop {
                    self.ar_index = val & 0x3f;
                } else {
                    let idx = (self.ar_index & 0x1f) as usize;
                    let v = match idx {
                        0x00..=0x0f => val & 0x3f,
                        0x10 => val & !0x10,
                        0x11 => val,
                        0x12 => val & 0x3f,
                        0x13 => val & 0x0f,
                        0x14 => val & 0x0f,
                        _ => {
                            self.ar_flip_flop = !self.ar_flip_flop;
                            return false;
                        }
                    };
                    self.ar[idx] = v;
                }
                self.ar_flip_flop = !self.ar_flip_flop;
                true
            }
            0x3c2 => {
                self.misc = val & !0x10;
                true
            }
            0x3c4 => {
                self.sr_index = val & 7;
                false
            }
            0x3c5 => {
                let i = self.sr_index as usize & 7;
                self.sr[i] = val & SR_MASK[i];
                true
            }
            0x3c6 => {
                self.dac_mask = val;
                true
            }
            0x3c7 => {
                self.dac_read_index = val;
                self.dac_sub_index = 0;
                self.dac_state = 3;
                false
            }
            0x3c8 => {
                self.dac_write_index = val;
                self.dac_sub_index = 0;
                self.dac_state = 0;
                false
            }
            0x3c9 => {
                let v = if self.dac_8bit { val } else { val & 0x3f };
                self.dac_cache[self.dac_sub_index as usize % 3] = v;
                self.dac_sub_index += 1;
                if self.dac_sub_index >= 3 {
                    let i = self.dac_write_index as usize * 3;
                    if let Some(p) = self.palette.get_mut(i..i + 3) {
                        p.copy_from_slice(&self.dac_cache);
                    }
                    self.dac_sub_index = 0;
                    self.dac_write_index = self.dac_write_index.wrapping_add(1);
                    return true;
                }
                false
            }
            0x3ce => {
                self.gr_index = val & 0x0f;
                false
            }
            0x3cf => {
                let i = self.gr_index as usize;
                match (self.gr.get_mut(i), GR_MASK.get(i)) {
                    (Some(r), Some(m)) => {
                        *r = val & m;
                        true
                    }
                    _ => false,
                }
            }
            0x3b4 | 0x3d4 => {
                self.cr_index = val;
                false
            }
            0x3b5 | 0x3d5 => {
                let i = self.cr_index as usize;
                if i >= cr::COUNT {
                    return false;
                }
                // Write protection of CR0-CR7 (bit 7 of CR11), except the
                // line compare bit 8 in the overflow register.
                if self.cr[cr::V_RETRACE_END] & 0x80 != 0 && i <= cr::OVERFLOW {
                    if i == cr::OVERFLOW {
                        self.cr[i] = (self.cr[i] & !0x10) | (val & 0x10);
                        return true;
                    }
                    return false;
                }
                self.cr[i] = val;
                true
            }
            0x3ba | 0x3da => {
                self.fcr = val & 0x10;
                false
            }
            _ => false,
        }
    }

    /// Display start address (in 32-bit planar words).
    pub fn start_addr(&self) -> u32 {
        ((self.cr[cr::START_HI] as u32) << 8) | self.cr[cr::START_LO] as u32
    }

    /// Vertical display end + 1: the number of scanlines shown.
    pub fn vdisp_lines(&self) -> u32 {
        let o = self.cr[cr::OVERFLOW] as u32;
        let v = self.cr[cr::V_DISP_END] as u32 | ((o & 0x02) << 7) | ((o & 0x40) << 3);
        v + 1
    }

    /// Line offset in bytes of interleaved planar memory.
    pub fn line_offset(&self) -> u32 {
        (self.cr[cr::OFFSET] as u32) << 3
    }

    /// The 16-colour attribute palette resolved through the DAC, as RGBA.
    pub fn palette16(&self) -> [[u8; 4]; 16] {
        let mut out = [[0u8; 4]; 16];
        let mode = self.ar[ar::MODE];
        let sel = self.ar[ar::COLOR_SELECT];
        for (i, o) in out.iter_mut().enumerate() {
            let v = self.ar[i];
            let idx = if mode & ar::MODE_P54S != 0 {
                ((sel & 0x0f) << 4) | (v & 0x0f)
            } else {
                ((sel & 0x0c) << 4) | (v & 0x3f)
            };
            *o = self.dac_rgba(idx & self.dac_mask);
        }
        out
    }

    /// The 256-colour palette (DAC) as RGBA.
    pub fn palette256(&self, out: &mut [[u8; 4]; 256]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.dac_rgba(i as u8 & self.dac_mask);
        }
    }

    /// DAC entry `i` as RGBA with 8-bit channels.
    pub fn dac_rgba(&self, i: u8) -> [u8; 4] {
        let b = i as usize * 3;
        let c = |v: u8| {
            if self.dac_8bit {
                v
            } else {
                // QEMU's widening (`c6_to_8`): the low bit fills the two
                // new ones, so screenshots match QEMU's pixel for pixel.
                let v = v & 0x3f;
                (v << 2) | ((v & 1) * 3)
            }
        };
        [
            c(self.palette[b]),
            c(self.palette[b + 1]),
            c(self.palette[b + 2]),
            0xff,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn colour() -> VgaRegs {
        let mut r = VgaRegs::default();
        r.write_port(0x3c2, 0x67);
        r
    }

    #[test]
    fn misc_output_and_crtc_address_select() {
        let mut r = VgaRegs::default();
        // Mono mode: CRTC at 0x3B4, colour ports are not decoded.
        r.write_port(0x3b4, 0x0e);
        r.write_port(0x3b5, 0x12);
        assert_eq!(r.cr[0x0e], 0x12);
        assert!(!r.write_port(0x3d5, 0x34));
        assert_eq!(r.read_port(0x3d5), 0xff);
        r.write_port(0x3c2, 0x67);
        assert_eq!(r.read_port(0x3cc), 0x67);
        r.write_port(0x3d4, 0x0e);
        r.write_port(0x3d5, 0x34);
        assert_eq!(r.read_port(0x3d5), 0x34);
        assert_eq!(r.read_port(0x3b5), 0xff);
    }

    #[test]
    fn sequencer_and_graphics_masks() {
        let mut r = colour();
        r.write_port(0x3c4, 0xfa); // index masked to 2
        assert_eq!(r.read_port(0x3c4), 2);
        r.write_port(0x3c5, 0xff);
        assert_eq!(r.sr[2], 0x0f);
        r.write_port(0x3c4, 4);
        r.write_port(0x3c5, 0xff);
        assert_eq!(r.read_port(0x3c5), 0x0e);
        r.write_port(0x3ce, 5);
        r.write_port(0x3cf, 0xff);
        assert_eq!(r.read_port(0x3cf), 0x7b);
        // GR index 9..15 exist in the decoder but not as registers.
        r.write_port(0x3ce, 0x0c);
        assert!(!r.write_port(0x3cf, 0x55));
        assert_eq!(r.read_port(0x3cf), 0);
        r.write_port(0x3ce, 0xf8); // masked to 8
        r.write_port(0x3cf, 0x81);
        assert_eq!(r.gr[8], 0x81);
    }

    #[test]
    fn crtc_protection_and_range() {
        let mut r = colour();
        r.write_port(0x3d4, 0x11);
        r.write_port(0x3d5, 0x80);
        r.write_port(0x3d4, 0x01);
        assert!(!r.write_port(0x3d5, 0x4f));
        assert_eq!(r.cr[1], 0);
        r.write_port(0x3d4, 0x07);
        r.write_port(0x3d5, 0xff);
        assert_eq!(r.cr[7], 0x10);
        r.write_port(0x3d4, 0x11);
        r.write_port(0x3d5, 0x00);
        r.write_port(0x3d4, 0x01);
        r.write_port(0x3d5, 0x4f);
        assert_eq!(r.cr[1], 0x4f);
        // Out-of-range index: ignored, reads 0.
        r.write_port(0x3d4, 0xee);
        assert!(!r.write_port(0x3d5, 0x12));
        assert_eq!(r.read_port(0x3d5), 0);
        assert_eq!(r.read_port(0x3d4), 0xee);
    }

    #[test]
    fn attribute_flip_flop() {
        let mut r = colour();
        r.read_port(0x3da); // reset flip-flop
        r.write_port(0x3c0, 0x01); // index 1
        r.write_port(0x3c0, 0xff); // data
        assert_eq!(r.ar[1], 0x3f);
        r.write_port(0x3c0, 0x10 | ar::INDEX_PAS);
        assert_eq!(r.read_port(0x3c0), 0x30);
        r.write_port(0x3c0, 0x0c);
        assert_eq!(r.ar[0x10], 0x0c);
        r.write_port(0x3c0, 0x10);
        assert_eq!(r.read_port(0x3c1), 0x0c);
        // A data write to an index past 0x14 is dropped but still flips.
        r.read_port(0x3da);
        r.write_port(0x3c0, 0x1f);
        assert!(!r.write_port(0x3c0, 0x77));
        assert!(!r.ar_flip_flop);
        assert_eq!(r.read_port(0x3c1), 0);
        // Reading input status 1 resets the flip-flop mid-pair.
        r.write_port(0x3c0, 0x02);
        r.read_port(0x3da);
        r.write_port(0x3c0, 0x03);
        r.write_port(0x3c0, 0x2a);
        assert_eq!(r.ar[3], 0x2a);
        assert_eq!(r.ar[2], 0);
    }

    #[test]
    fn retrace_alternates() {
        let mut r = colour();
        let a = r.read_port(0x3da);
        let b = r.read_port(0x3da);
        assert_ne!(a & 0x08, b & 0x08);
        assert_ne!(a & 0x01, b & 0x01);
        // Mono status port is not decoded in colour mode.
        assert_eq!(r.read_port(0x3ba), 0xff);
    }

    #[test]
    fn dac_auto_increment() {
        let mut r = colour();
        r.write_port(0x3c8, 0xff);
        for v in [0x3f, 0x40 | 0x01, 0x80 | 0x02, 0x10, 0x20, 0x30] {
            r.write_port(0x3c9, v);
        }
        // Entry 255, then wrap to 0; values are 6-bit.
        assert_eq!(&r.palette[765..768], &[0x3f, 0x01, 0x02]);
        assert_eq!(&r.palette[0..3], &[0x10, 0x20, 0x30]);
        assert_eq!(r.read_port(0x3c8), 1);
        r.write_port(0x3c7, 0xff);
        assert_eq!(r.read_port(0x3c7), 3);
        let got: Vec<u8> = (0..6).map(|_| r.read_port(0x3c9)).collect();
        assert_eq!(got, vec![0x3f, 0x01, 0x02, 0x10, 0x20, 0x30]);
        assert_eq!(r.dac_rgba(0), [0x40, 0x80, 0xc0, 0xff]);
        assert_eq!(r.dac_rgba(255), [0xff, 0x07, 0x08, 0xff]);
        r.write_port(0x3c6, 0x00);
        assert_eq!(r.read_port(0x3c6), 0);
    }
}
