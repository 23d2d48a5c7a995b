//! Bochs VBE "dispi" extension: an index/data register pair (I/O 0x1CE /
//! 0x1CF, and BAR2 offset 0x500) that sets linear high-resolution modes.
//!
//! Like QEMU's `vbe_fixup_regs`, every geometry write is clamped so that the
//! visible mode, with its virtual width and offsets, always fits in video
//! memory: a guest cannot make the renderer read past it.

use super::regs::{cr, gr, VgaRegs};

pub const INDEX_ID: usize = 0;
pub const INDEX_XRES: usize = 1;
pub const INDEX_YRES: usize = 2;
pub const INDEX_BPP: usize = 3;
pub const INDEX_ENABLE: usize = 4;
pub const INDEX_BANK: usize = 5;
pub const INDEX_VIRT_WIDTH: usize = 6;
pub const INDEX_VIRT_HEIGHT: usize = 7;
pub const INDEX_X_OFFSET: usize = 8;
pub const INDEX_Y_OFFSET: usize = 9;
pub const INDEX_COUNT: usize = 10;
pub const INDEX_VIDEO_MEMORY_64K: usize = 10;

pub const ID0: u16 = 0xb0c0;
pub const ID5: u16 = 0xb0c5;

pub const ENABLED: u16 = 0x01;
pub const GETCAPS: u16 = 0x02;
pub const DAC_8BIT: u16 = 0x20;
pub const LFB_ENABLED: u16 = 0x40;
pub const NOCLEARMEM: u16 = 0x80;

pub const MAX_XRES: u16 = 2560;
pub const MAX_YRES: u16 = 1600;
pub const MAX_BPP: u16 = 32;

/// The dispi register file and the geometry derived from it.
#[derive(Clone)]
pub struct Vbe {
    pub index: u16,
    pub regs: [u16; INDEX_COUNT],
    /// Bytes per line of the current mode.
    pub line_offset: u32,
    /// Byte offset in video memory of the first visible pixel.
    pub start_addr: u32,
    /// Byte offset of the 64 KiB bank shown at 0xA0000.
    pub bank_offset: u32,
    vram_size: u32,
}

impl Vbe {
    pub fn new(vram_size: u32) -> Self {
        let mut regs = [0u16; INDEX_COUNT];
        regs[INDEX_ID] = ID5;
        Vbe {
            index: 0,
            regs,
            line_offset: 0,
            start_addr: 0,
            bank_offset: 0,
            vram_size,
        }
    }

    pub fn enabled(&self) -> bool {
        self.regs[INDEX_ENABLE] & ENABLED != 0
    }

    pub fn xres(&self) -> u32 {
        self.regs[INDEX_XRES] as u32
    }
    pub fn yres(&self) -> u32 {
        self.regs[INDEX_YRES] as u32
    }
    pub fn bpp(&self) -> u32 {
        self.regs[INDEX_BPP] as u32
    }

    /// Reads the register selected by `index`.
    pub fn read_data(&self) -> u16 {
        let i = self.index as usize;
        if i < INDEX_COUNT {
            if self.regs[INDEX_ENABLE] & GETCAPS != 0 {
                match i {
                    INDEX_XRES => return MAX_XRES,
                    INDEX_YRES => return MAX_YRES,
                    INDEX_BPP => return MAX_BPP,
                    _ => {}
                }
            }
            self.regs[i]
        } else if i == INDEX_VIDEO_MEMORY_64K {
            (self.vram_size >> 16) as u16
        } else {
            0
        }
    }

    /// Writes `val` to the register selected by `index`. Returns the number
    /// of bytes at the start of video memory to clear (a mode switch without
    /// NOCLEARMEM), if any.
    pub fn write_data(&mut self, val: u16, regs: &mut VgaRegs) -> Option<u32> {
        match self.index as usize {
            INDEX_ID if (ID0..=ID5).contains(&val) => self.regs[INDEX_ID] = val,
            i @ (INDEX_XRES | INDEX_YRES | INDEX_BPP | INDEX_VIRT_WIDTH | INDEX_X_OFFSET
            | INDEX_Y_OFFSET) => {
                self.regs[i] = val;
                self.fixup();
                self.update_vga_regs(regs);
            }
            INDEX_BANK => {
                let mut mask = ((self.vram_size >> 16).max(1) - 1) as u16;
                if self.regs[INDEX_BPP] == 4 {
                    // Planar banks address 32-bit words.
                    mask >>= 2;
                }
                let v = val & mask;
                self.regs[INDEX_BANK] = v;
                self.bank_offset = (v as u32) << 16;
            }
            INDEX_ENABLE => {
                let mut clear = None;
                if val & ENABLED != 0 && !self.enabled() {
                    self.regs[INDEX_VIRT_WIDTH] = 0;
                    self.regs[INDEX_X_OFFSET] = 0;
                    self.regs[INDEX_Y_OFFSET] = 0;
                    self.regs[INDEX_ENABLE] |= ENABLED;
                    self.fixup();
                    self.update_vga_regs(regs);
                    if val & NOCLEARMEM == 0 {
                        clear = Some(self.yres() * self.line_offset);
                    }
                } else {
                    self.bank_offset = 0;
                }
                regs.dac_8bit = val & DAC_8BIT != 0;
                self.regs[INDEX_ENABLE] = val;
                if !self.enabled() {
                    self.bank_offset = 0;
                }
                return clear;
            }
            _ => {}
        }
        None
    }

    /// Clamps the geometry registers so the mode fits in video memory.
    fn fixup(&mut self) {
        if !self.enabled() {
            return;
        }
        let r = &mut self.regs;
        let bits: u32 = match r[INDEX_BPP] {
            4 | 8 | 16 | 24 | 32 => r[INDEX_BPP] as u32,
            15 => 16,
            _ => {
                r[INDEX_BPP] = 8;
                8
            }
        };
        r[INDEX_XRES] &= !7;
        if r[INDEX_XRES] == 0 {
            r[INDEX_XRES] = 8;
        }
        r[INDEX_XRES] = r[INDEX_XRES].min(MAX_XRES);
        r[INDEX_VIRT_WIDTH] &= !7;
        r[INDEX_VIRT_WIDTH] = r[INDEX_VIRT_WIDTH].min(MAX_XRES).max(r[INDEX_XRES]);

        let linelength = r[INDEX_VIRT_WIDTH] as u32 * bits / 8;
        let maxy = (self.vram_size / linelength.max(1)).min(u16::MAX as u32);
        if r[INDEX_YRES] == 0 {
            r[INDEX_YRES] = 1;
        }
        r[INDEX_YRES] = r[INDEX_YRES].min(MAX_YRES).min(maxy as u16);

        r[INDEX_X_OFFSET] = r[INDEX_X_OFFSET].min(MAX_XRES);
        r[INDEX_Y_OFFSET] = r[INDEX_Y_OFFSET].min(MAX_YRES);
        let x_bytes = r[INDEX_X_OFFSET] as u64 * bits as u64 / 8;
        let span = r[INDEX_YRES] as u64 * linelength as u64;
        let vram = self.vram_size as u64;
        let mut offset = x_bytes + r[INDEX_Y_OFFSET] as u64 * linelength as u64;
        if offset + span > vram {
            // Out of memory: drop the vertical pan, then the horizontal.
            r[INDEX_Y_OFFSET] = 0;
            offset = x_bytes;
            if offset + span > vram {
                r[INDEX_X_OFFSET] = 0;
                offset = 0;
            }
        }
        r[INDEX_VIRT_HEIGHT] = maxy as u16;
        self.line_offset = linelength;
        // The CRTC start address counts 32-bit words.
        self.start_addr = (offset as u32) & !3;
    }

    /// Mirrors the VBE mode into the VGA registers, as QEMU does: graphics
    /// mode, the 64 KiB window at 0xA0000, no CGA addressing, no doubling.
    fn update_vga_regs(&self, regs: &mut VgaRegs) {
        if !self.enabled() {
            return;
        }
        regs.gr[gr::MISC] = (regs.gr[gr::MISC] & !0x0c) | 0x04 | 0x01;
        regs.cr[cr::MODE] |= 3;
        regs.cr[cr::OFFSET] = (self.line_offset >> 3) as u8;
        regs.cr[cr::H_DISP_END] = ((self.xres() >> 3).saturating_sub(1)) as u8;
        let h = self.yres().saturating_sub(1);
        regs.cr[cr::V_DISP_END] = h as u8;
        regs.cr[cr::OVERFLOW] =
            (regs.cr[cr::OVERFLOW] & !0x42) | (((h >> 7) & 0x02) as u8) | (((h >> 3) & 0x40) as u8);
        regs.cr[cr::LINE_COMPARE] = 0xff;
        regs.cr[cr::OVERFLOW] |= 0x10;
        regs.cr[cr::MAX_SCAN] |= 0x40;
        let shift_control = if self.bpp() == 4 { 0 } else { 2 };
        regs.gr[gr::MODE] = (regs.gr[gr::MODE] & !0x60) | (shift_control << 5);
        regs.cr[cr::MAX_SCAN] &= !0x9f;
    }
}

/// Whether any 4 KiB page of `off..off + len` is marked in `bits`; pages
/// past the bitmap count as dirty.
fn range_dirty(bits: &[u64], off: usize, len: usize) -> bool {
    if len == 0 {
        return false;
    }
    let first = off / 4096;
    let last = off.saturating_add(len - 1) / 4096;
    (first..=last).any(|p| bits.get(p / 64).is_none_or(|w| (w >> (p % 64)) & 1 != 0))
}

fn fill_black(line: &mut [u8]) {
    for px in line.chunks_exact_mut(4) {
        px.copy_from_slice(&[0, 0, 0, 0xff]);
    }
}

/// Everything needed to draw a VBE mode of 8 bpp or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VbeLayout {
    pub width: u32,
    pub height: u32,
    pub bpp: u32,
    pub start: u32,
    pub line_offset: u32,
}

impl VbeLayout {
    pub fn from_vbe(v: &Vbe) -> Self {
        VbeLayout {
            width: v.xres(),
            height: v.yres(),
            bpp: v.bpp(),
            start: v.start_addr,
            line_offset: v.line_offset,
        }
    }

    fn bytes_per_pixel(&self) -> usize {
        match self.bpp {
            15 | 16 => 2,
            24 => 3,
            32 => 4,
            _ => 1,
        }
    }

    /// Draws from video memory into `out` (RGBA); `row` is scratch space
    /// for one scanline. Lines outside video memory come out black.
    ///
    /// With `dirty` (a page bitmap as [`super::VramMapper::dirty_pages`]
    /// gives it), `out` must hold this layout's previous frame: only the
    /// lines that touch a dirty page are converted again.
    pub fn draw(
        &self,
        vram: &super::Vram,
        pal256: &[[u8; 4]; 256],
        row: &mut Vec<u8>,
        out: &mut Vec<u8>,
        dirty: Option<&[u64]>,
    ) {
        let w = self.width as usize;
        let bpp = self.bytes_per_pixel();
        let size = w * self.height as usize * 4;
        let dirty = dirty.filter(|_| out.len() == size);
        out.resize(size, 0);
        if w == 0 {
            return;
        }
        row.resize(w * bpp, 0);
        for (y, line) in out.chunks_exact_mut(w * 4).enumerate() {
            let off = self.start as usize + y * self.line_offset as usize;
            if let Some(bits) = dirty {
                if !range_dirty(bits, off, w * bpp) {
                    continue;
                }
            }
            if bpp == 4 {
                // Straight into the frame, then BGRX -> RGBA in place.
                if vram.read_into(off, line) {
                    for p in line.chunks_exact_mut(4) {
                        p.swap(0, 2);
                        p[3] = 0xff;
                    }
                } else {
                    fill_black(line);
                }
                continue;
            }
            if !vram.read_into(off, row) {
                fill_black(line);
                continue;
            }
            let px = line.chunks_exact_mut(4);
            match self.bpp {
                24 => {
                    for (p, s) in px.zip(row.chunks_exact(3)) {
                        p.copy_from_slice(&[s[2], s[1], s[0], 0xff]);
                    }
                }
                16 => {
                    for (p, s) in px.zip(row.chunks_exact(2)) {
                        let v = u16::from_le_bytes([s[0], s[1]]);
                        let r = ((v >> 11) & 0x1f) as u8;
                        let g = ((v >> 5) & 0x3f) as u8;
                        let b = (v & 0x1f) as u8;
                        p.copy_from_slice(&[
                            (r << 3) | (r >> 2),
                            (g << 2) | (g >> 4),
                            (b << 3) | (b >> 2),
                            0xff,
                        ]);
                    }
                }
                15 => {
                    for (p, s) in px.zip(row.chunks_exact(2)) {
                        let v = u16::from_le_bytes([s[0], s[1]]);
                        let r = ((v >> 10) & 0x1f) as u8;
                        let g = ((v >> 5) & 0x1f) as u8;
                        let b = (v & 0x1f) as u8;
                        p.copy_from_slice(&[
                            (r << 3) | (r >> 2),
                            (g << 3) | (g >> 2),
                            (b << 3) | (b >> 2),
                            0xff,
                        ]);
                    }
                }
                _ => {
                    for (p, s) in px.zip(row.iter()) {
                        p.copy_from_slice(&pal256[*s as usize]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VRAM: u32 = 16 << 20;

    fn set(v: &mut Vbe, r: &mut VgaRegs, i: usize, val: u16) -> Option<u32> {
        v.index = i as u16;
        v.write_data(val, r)
    }
    fn get(v: &mut Vbe, i: usize) -> u16 {
        v.index = i as u16;
        v.read_data()
    }

    #[test]
    fn id_and_memory_size() {
        let mut v = Vbe::new(VRAM);
        let mut r = VgaRegs::default();
        assert_eq!(get(&mut v, INDEX_ID), ID5);
        set(&mut v, &mut r, INDEX_ID, ID0 + 2);
        assert_eq!(get(&mut v, INDEX_ID), 0xb0c2);
        set(&mut v, &mut r, INDEX_ID, 0x1234);
        assert_eq!(get(&mut v, INDEX_ID), 0xb0c2);
        assert_eq!(get(&mut v, INDEX_VIDEO_MEMORY_64K), 256);
        assert_eq!(get(&mut v, 0x55), 0);
        // Writes to unknown indexes are ignored.
        assert_eq!(set(&mut v, &mut r, 0x55, 7), None);
    }

    #[test]
    fn getcaps_reports_maxima() {
        let mut v = Vbe::new(VRAM);
        let mut r = VgaRegs::default();
        set(&mut v, &mut r, INDEX_ENABLE, GETCAPS);
        assert_eq!(get(&mut v, INDEX_XRES), MAX_XRES);
        assert_eq!(get(&mut v, INDEX_YRES), MAX_YRES);
        assert_eq!(get(&mut v, INDEX_BPP), MAX_BPP);
        set(&mut v, &mut r, INDEX_ENABLE, 0);
        assert_eq!(get(&mut v, INDEX_XRES), 0);
    }

    #[test]
    fn mode_set_clamps_and_clears() {
        let mut v = Vbe::new(VRAM);
        let mut r = VgaRegs::default();
        set(&mut v, &mut r, INDEX_XRES, 1920);
        set(&mut v, &mut r, INDEX_YRES, 1080);
        set(&mut v, &mut r, INDEX_BPP, 32);
        assert_eq!(
            set(&mut v, &mut r, INDEX_ENABLE, ENABLED | LFB_ENABLED),
            Some(1920 * 1080 * 4)
        );
        assert!(v.enabled());
        assert_eq!((v.xres(), v.yres(), v.bpp()), (1920, 1080, 32));
        assert_eq!(v.line_offset, 7680);
        assert_eq!(get(&mut v, INDEX_VIRT_WIDTH), 1920);
        assert_eq!(get(&mut v, INDEX_VIRT_HEIGHT) as u32, VRAM / 7680);
        assert_eq!(r.gr[gr::MISC] & 0x0d, 0x05);
        // Offsets pan the view.
        set(&mut v, &mut r, INDEX_Y_OFFSET, 10);
        set(&mut v, &mut r, INDEX_X_OFFSET, 8);
        assert_eq!(v.start_addr, 10 * 7680 + 32);
        // An offset that would run past memory is reset, vertical first.
        set(&mut v, &mut r, INDEX_Y_OFFSET, 1600);
        assert_eq!(v.start_addr, 32);
        assert_eq!(get(&mut v, INDEX_Y_OFFSET), 0);
        assert_eq!(get(&mut v, INDEX_X_OFFSET), 8);
        // Odd bpp becomes 8, odd widths are rounded down.
        set(&mut v, &mut r, INDEX_BPP, 7);
        assert_eq!(v.bpp(), 8);
        set(&mut v, &mut r, INDEX_XRES, 1023);
        assert_eq!(v.xres(), 1016);
        // Enabling again while enabled neither resets nor clears.
        assert_eq!(set(&mut v, &mut r, INDEX_ENABLE, ENABLED), None);
    }

    #[test]
    fn oversized_mode_is_clamped_into_memory() {
        let mut v = Vbe::new(VRAM);
        let mut r = VgaRegs::default();
        set(&mut v, &mut r, INDEX_XRES, 4096);
        set(&mut v, &mut r, INDEX_YRES, 4096);
        set(&mut v, &mut r, INDEX_BPP, 32);
        set(&mut v, &mut r, INDEX_ENABLE, ENABLED | NOCLEARMEM);
        assert!(v.xres() <= MAX_XRES as u32 && v.yres() <= MAX_YRES as u32);
        assert!(v.yres() * v.line_offset <= VRAM);
        assert_ne!((v.xres(), v.yres()), (4096, 4096));
        // A small video memory limits the height instead.
        let mut v = Vbe::new(1 << 20);
        set(&mut v, &mut r, INDEX_XRES, 1024);
        set(&mut v, &mut r, INDEX_YRES, 768);
        set(&mut v, &mut r, INDEX_BPP, 32);
        set(&mut v, &mut r, INDEX_ENABLE, ENABLED);
        assert_eq!(v.yres(), 256);
        assert!(v.yres() * v.line_offset <= 1 << 20);
    }

    #[test]
    fn bank_is_masked() {
        let mut v = Vbe::new(VRAM);
        let mut r = VgaRegs::default();
        set(&mut v, &mut r, INDEX_ENABLE, ENABLED);
        set(&mut v, &mut r, INDEX_BANK, 0xffff);
        assert_eq!(get(&mut v, INDEX_BANK), 0xff);
        assert_eq!(v.bank_offset, 0xff << 16);
        set(&mut v, &mut r, INDEX_ENABLE, 0);
        assert_eq!(v.bank_offset, 0);
    }
}
