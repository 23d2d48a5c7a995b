//! The legacy 0xA0000-0xBFFFF window onto planar video memory, and the
//! rendering of the VGA graphics modes (16-colour planar, CGA 4-colour,
//! 256-colour).
//!
//! Video memory is kept as QEMU keeps it: the four planes interleaved, byte
//! `4 * a + p` holding plane `p` at address `a`. So chain-4 (mode 13h) is a
//! plain byte access, a 32-bit word is one latch load, the font lives at
//! `4 * a + 2` and a text cell (character, attribute) at `4 * a`.

use super::regs::{cr, gr, sr};
use super::VgaState;

/// Expands the low 4 bits of `v` into a byte mask per plane.
fn mask16(v: u8) -> u32 {
    let mut m = 0u32;
    for p in 0..4 {
        if v & (1 << p) != 0 {
            m |= 0xff << (8 * p);
        }
    }
    m
}

impl VgaState {
    /// Converts a window offset (0..0x20000) to a memory offset per the
    /// memory map select in GR6; None when the window is not decoded there.
    fn window_offset(&self, offset: u32) -> Option<u32> {
        let offset = offset & 0x1ffff;
        match (self.regs.gr[gr::MISC] >> 2) & 3 {
            0 => Some(offset),
            1 => (offset < 0x10000).then(|| offset + self.vbe.bank_offset),
            2 => offset.checked_sub(0x10000).filter(|o| *o < 0x8000),
            _ => offset.checked_sub(0x18000).filter(|o| *o < 0x8000),
        }
    }

    /// A CPU read of one byte at `offset` in the 0xA0000 window.
    pub(super) fn mem_read(&mut self, offset: u32) -> u8 {
        let Some(addr) = self.window_offset(offset) else {
            return 0xff;
        };
        let mode = self.regs.gr[gr::MODE];
        if self.sr(sr::MEMORY_MODE) & sr::MEM_CHAIN4 != 0 {
            self.vram.read_u8(addr as usize)
        } else if mode & 0x10 != 0 {
            // Odd/even: even addresses in planes 0/2, odd in 1/3.
            let plane = (self.regs.gr[gr::PLANE_READ] & 2) as u32 | (addr & 1);
            self.vram.read_u8((((addr & !1) << 1) | plane) as usize)
        } else {
            let Some(latch) = self.vram.read_u32(addr as usize * 4) else {
                return 0xff;
            };
            self.latch = latch;
            if mode & 0x08 == 0 {
                let plane = self.regs.gr[gr::PLANE_READ] & 3;
                (latch >> (8 * plane)) as u8
            } else {
                // Read mode 1: a bit is 1 where every plane not masked by
                // colour don't care matches colour compare.
                let mut r = (latch ^ mask16(self.regs.gr[gr::COMPARE_VALUE]))
                    & mask16(self.regs.gr[gr::COMPARE_MASK]);
                r |= r >> 16;
                r |= r >> 8;
                !(r as u8)
            }
        }
    }

    /// A CPU write of one byte at `offset` in the 0xA0000 window.
    pub(super) fn mem_write(&mut self, offset: u32, val: u8) {
        let Some(addr) = self.window_offset(offset) else {
            return;
        };
        let mode = self.regs.gr[gr::MODE];
        let map_mask = self.sr(sr::PLANE_WRITE);
        if self.sr(sr::MEMORY_MODE) & sr::MEM_CHAIN4 != 0 {
            if map_mask & (1 << (addr & 3)) != 0 {
                self.vram.write_u8(addr as usize, val);
                self.dirty = true;
            }
            return;
        }
        if mode & 0x10 != 0 {
            let plane = (self.regs.gr[gr::PLANE_READ] & 2) as u32 | (addr & 1);
            if map_mask & (1 << plane) != 0 {
                self.vram
                    .write_u8((((addr & !1) << 1) | plane) as usize, val);
                self.dirty = true;
            }
            return;
        }
        let g = &self.regs.gr;
        let rotate = |v: u8| v.rotate_right((g[gr::DATA_ROTATE] & 7) as u32);
        let mut bit_mask = g[gr::BIT_MASK];
        let mut v = match mode & 3 {
            0 => {
                let r = rotate(val) as u32 * 0x0101_0101;
                let set_mask = mask16(g[gr::SR_ENABLE]);
                (r & !set_mask) | (mask16(g[gr::SR_VALUE]) & set_mask)
            }
            1 => {
                // Write mode 1: the latches as they are.
                self.store_planes(addr, self.latch, map_mask);
                return;
            }
            2 => mask16(val & 0x0f),
            _ => {
                bit_mask &= rotate(val);
                mask16(g[gr::SR_VALUE])
            }
        };
        match g[gr::DATA_ROTATE] >> 3 {
            1 => v &= self.latch,
            2 => v |= self.latch,
            3 => v ^= self.latch,
            _ => {}
        }
        let bm = bit_mask as u32 * 0x0101_0101;
        v = (v & bm) | (self.latch & !bm);
        self.store_planes(addr, v, map_mask);
    }

    fn store_planes(&mut self, addr: u32, v: u32, map_mask: u8) {
        let off = addr as usize * 4;
        let Some(old) = self.vram.read_u32(off) else {
            return;
        };
        let wm = mask16(map_mask);
        self.vram.write_u32(off, (old & !wm) | (v & wm));
        self.dirty = true;
    }
}

/// How a graphics mode's pixels are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Packing {
    /// One bit per plane per pixel, 16 colours (modes 0Dh-12h).
    Planar4,
    /// Two bits per pixel, odd/even (CGA modes 4/5).
    Cga2,
    /// One byte per pixel (mode 13h, mode X).
    Byte8,
}

/// Everything needed to draw a VGA graphics mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct GraphicLayout {
    pub packing: Packing,
    /// Output size in pixels (scan doubling removed).
    pub width: u32,
    pub height: u32,
    /// Scanlines the CRTC shows.
    pub lines: u32,
    /// Byte address of the first pixel in interleaved memory.
    pub start: u32,
    pub line_offset: u32,
    /// Extra repetitions of each line (0 = none).
    pub multi_scan: u32,
    pub crtc_mode: u8,
    pub line_compare: Option<u32>,
    pub plane_enable: u8,
    /// Bytes of video memory the mode addresses (a power of two; addresses
    /// wrap inside it, at 256 KiB for the VGA's own modes).
    pub mem_size: usize,
}

impl GraphicLayout {
    /// The layout from the VGA registers.
    pub fn from_state(st: &VgaState) -> Self {
        let r = &st.regs;
        let shift = (r.gr[gr::MODE] >> 5) & 3;
        let packing = match shift {
            0 => Packing::Planar4,
            1 => Packing::Cga2,
            _ => Packing::Byte8,
        };
        let double_scan = (r.cr[cr::MAX_SCAN] >> 7) as u32;
        let multi_scan = if packing == Packing::Cga2 {
            double_scan
        } else {
            (((r.cr[cr::MAX_SCAN] & 0x1f) as u32 + 1) << double_scan) - 1
        };
        let hdisp = (r.cr[cr::H_DISP_END] as u32 + 1) * 8;
        let mut width = if packing == Packing::Byte8 {
            hdisp / 2
        } else {
            hdisp
        };
        let mut lines = r.vdisp_lines();
        let mut line_offset = r.line_offset();
        let mut start = r.start_addr() * 4;
        let mut line_compare = Some(
            r.cr[cr::LINE_COMPARE] as u32
                | ((r.cr[cr::OVERFLOW] as u32 & 0x10) << 4)
                | ((r.cr[cr::MAX_SCAN] as u32 & 0x40) << 3),
        );
        if st.vbe.enabled() {
            // VBE 4 bpp planar modes: geometry from the dispi registers.
            width = st.vbe.xres();
            lines = st.vbe.yres();
            line_offset = st.vbe.line_offset;
            start = st.vbe.start_addr;
            line_compare = None;
        }
        let height = lines.div_ceil(multi_scan + 1);
        let mem_size = if st.vbe.enabled() {
            let span = start as u64 + line_offset as u64 * lines as u64;
            span.clamp(256 << 10, super::VRAM_SIZE as u64)
                .next_power_of_two()
                .min(super::VRAM_SIZE as u64) as usize
        } else {
            256 << 10
        };
        GraphicLayout {
            mem_size,
            packing,
            width,
            height,
            lines,
            start,
            line_offset,
            multi_scan,
            crtc_mode: r.cr[cr::MODE],
            line_compare,
            plane_enable: r.ar[super::regs::ar::PLANE_ENABLE] & 0x0f,
        }
    }

    /// Draws into `out` (RGBA, resized to `width * height * 4`). `mem` is a
    /// copy of the start of video memory whose length is a power of two.
    pub fn draw(
        &self,
        mem: &[u8],
        pal16: &[[u8; 4]; 16],
        pal256: &[[u8; 4]; 256],
        out: &mut Vec<u8>,
    ) {
        let w = self.width as usize;
        out.resize(w * self.height as usize * 4, 0);
        if mem.is_empty() || w == 0 {
            return;
        }
        let wrap = mem.len() - 1;
        let byte = |a: usize| mem[a & wrap];
        let pmask = mask16(self.plane_enable);
        // The four planes' bytes at `a` (plane n in bits 8n..8n+7), less
        // the planes Color Plane Enable turns off.
        let planes =
            |a: usize| u32::from_le_bytes([byte(a), byte(a + 1), byte(a + 2), byte(a + 3)]) & pmask;
        let mut addr1 = self.start as usize;
        let mut y1 = 0usize;
        let mut multi_run = self.multi_scan;
        let mut row = 0usize;
        for y in 0..self.lines {
            let mut addr = addr1;
            if self.crtc_mode & 1 == 0 {
                let shift = 14 + ((self.crtc_mode >> 6) & 1) as usize;
                addr = (addr & !(1 << shift)) | ((y1 & 1) << shift);
            }
            if self.crtc_mode & 2 == 0 {
                addr = (addr & !0x8000) | ((y1 & 2) << 14);
            }
            if multi_run == self.multi_scan && row < self.height as usize {
                let line = &mut out[row * w * 4..(row + 1) * w * 4];
                match self.packing {
                    Packing::Byte8 => {
                        for (x, px) in line.chunks_exact_mut(4).enumerate() {
                            px.copy_from_slice(&pal256[byte(addr + x) as usize]);
                        }
                    }
                    Packing::Planar4 => {
                        for (g, group) in line.chunks_mut(32).enumerate() {
                            let a = addr + g * 4;
                            let d = planes(a);
                            for (i, px) in group.chunks_exact_mut(4).enumerate() {
                                let bit = 7 - i;
                                let c = ((d >> bit) & 1)
                                    | ((d >> (8 + bit)) & 1) << 1
                                    | ((d >> (16 + bit)) & 1) << 2
                                    | ((d >> (24 + bit)) & 1) << 3;
                                px.copy_from_slice(&pal16[c as usize]);
                            }
                        }
                    }
                    Packing::Cga2 => {
                        for (g, group) in line.chunks_mut(32).enumerate() {
                            let a = addr + g * 4;
                            let d = planes(a);
                            for (i, px) in group.chunks_exact_mut(4).enumerate() {
                                // Pixels 0-3 from planes 0/2, 4-7 from 1/3.
                                let (lo, hi) = if i < 4 { (0, 16) } else { (8, 24) };
                                let sh = 6 - 2 * (i as u32 & 3);
                                let c = ((d >> (lo + sh)) & 3) | (((d >> (hi + sh)) & 3) << 2);
                                px.copy_from_slice(&pal16[c as usize]);
                            }
                        }
                    }
                }
                row += 1;
            }
            if multi_run == 0 {
                let mask = ((self.crtc_mode & 3) ^ 3) as usize;
                if (y1 & mask) == mask {
                    addr1 += self.line_offset as usize;
                }
                y1 += 1;
                multi_run = self.multi_scan;
            } else {
                multi_run -= 1;
            }
            if self.line_compare == Some(y) {
                addr1 = 0;
            }
        }
    }
}
