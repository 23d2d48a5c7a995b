//! Text modes: character/attribute cells in planes 0/1, the font the guest
//! loaded into plane 2, colours through the attribute controller and the
//! DAC, the hardware cursor and blinking.

use super::regs::{ar, cr, sr};
use super::VgaState;

/// Everything needed to draw a text screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TextLayout {
    pub cols: u32,
    pub rows: u32,
    /// Dots per character: 8 or 9.
    pub char_width: u32,
    /// Each dot drawn twice (40-column modes).
    pub double_width: bool,
    /// Scanlines per character row.
    pub char_height: u32,
    /// Start address, in cells.
    pub start: u32,
    /// Cells from one row to the next.
    pub stride: u32,
    /// Cursor cell address, with its first and last scanline; None when
    /// disabled.
    pub cursor: Option<(u32, u32, u32)>,
    /// Scanline after which display restarts at address 0 (split screen).
    pub line_compare: u32,
    pub blink: bool,
    pub line_graphics: bool,
    /// Plane-2 offsets (in bytes of one plane) of fonts B (attr bit 3 = 0)
    /// and A (bit 3 = 1).
    pub font_base: [u32; 2],
}

impl TextLayout {
    pub fn from_state(st: &VgaState) -> Self {
        let r = &st.regs;
        let clock = st.sr(sr::CLOCK_MODE);
        let char_height = (r.cr[cr::MAX_SCAN] & 0x1f) as u32 + 1;
        let cols = r.cr[cr::H_DISP_END] as u32 + 1;
        let rows = (r.vdisp_lines() / char_height).max(1);
        let start = r.start_addr();
        let cursor_addr = ((r.cr[cr::CURSOR_HI] as u32) << 8) | r.cr[cr::CURSOR_LO] as u32;
        let cs = r.cr[cr::CURSOR_START];
        let first = (cs & 0x1f) as u32;
        let last = ((r.cr[cr::CURSOR_END] & 0x1f) as u32).min(char_height - 1);
        let cursor = (cs & 0x20 == 0 && first <= last).then_some((cursor_addr, first, last));
        let line_compare = r.cr[cr::LINE_COMPARE] as u32
            | ((r.cr[cr::OVERFLOW] as u32 & 0x10) << 4)
            | ((r.cr[cr::MAX_SCAN] as u32 & 0x40) << 3);
        let v = st.sr(sr::CHAR_MAP) as u32;
        let font_b = (((v >> 4) & 1) | ((v << 1) & 6)) * 8192;
        let font_a = (((v >> 5) & 1) | ((v >> 1) & 6)) * 8192;
        TextLayout {
            cols,
            rows,
            char_width: if clock & sr::CLK_8DOTS != 0 { 8 } else { 9 },
            double_width: clock & sr::CLK_DIV2 != 0,
            char_height,
            start,
            stride: r.line_offset() / 4,
            cursor,
            line_compare,
            blink: r.ar[ar::MODE] & ar::MODE_BLINK != 0,
            line_graphics: r.ar[ar::MODE] & ar::MODE_LGE != 0,
            font_base: [font_b, font_a],
        }
    }

    pub fn width(&self) -> u32 {
        self.cols * self.char_width * if self.double_width { 2 } else { 1 }
    }
    pub fn height(&self) -> u32 {
        self.rows * self.char_height
    }

    /// The cell address each row starts at: `stride` apart, back to 0
    /// after the row that crosses the line compare scanline.
    fn row_bases(&self) -> impl Iterator<Item = u32> + '_ {
        let mut base = self.start;
        let mut line = 0u32;
        (0..self.rows).map(move |_| {
            let b = base;
            base = base.wrapping_add(self.stride);
            let next = line + self.char_height;
            if line < self.line_compare && next >= self.line_compare {
                base = 0;
            }
            line = next;
            b
        })
    }

    /// The (character, attribute) of the cell at `addr`; `mem` is
    /// interleaved planar memory (its length a power of two).
    fn cell(mem: &[u8], addr: u32) -> (u8, u8) {
        let a = addr as usize * 4;
        let wrap = mem.len().wrapping_sub(1);
        (
            mem.get(a & wrap).copied().unwrap_or(0),
            mem.get((a + 1) & wrap).copied().unwrap_or(0),
        )
    }

    /// The screen's characters, one string per row. Printable ASCII maps
    /// to itself, every other code to a space.
    pub fn text(&self, mem: &[u8]) -> Vec<String> {
        self.row_bases()
            .map(|base| {
                (0..self.cols)
                    .map(|col| match Self::cell(mem, base.wrapping_add(col)).0 {
                        c @ 0x20..=0x7e => c as char,
                        _ => ' ',
                    })
                    .collect()
            })
            .collect()
    }

    /// Draws the screen into `out` (RGBA). `cursor_on` and `blink_on` are
    /// the current phases of the cursor and of blinking characters.
    pub fn draw(
        &self,
        mem: &[u8],
        pal: &[[u8; 4]; 16],
        cursor_on: bool,
        blink_on: bool,
        out: &mut Vec<u8>,
    ) {
        let w = self.width() as usize;
        let dot = if self.double_width { 2 } else { 1 };
        out.resize(w * self.height() as usize * 4, 0);
        if mem.is_empty() {
            return;
        }
        let wrap = mem.len() - 1;
        let cw = self.char_width as usize;
        for (row, base) in self.row_bases().enumerate() {
            let row = row as u32;
            for col in 0..self.cols {
                let addr = base.wrapping_add(col);
                let (ch, attr) = Self::cell(mem, addr);
                let fg_i = attr & 0x0f;
                let (bg_i, blinking) = if self.blink {
                    ((attr >> 4) & 7, attr & 0x80 != 0)
                } else {
                    (attr >> 4, false)
                };
                let bg = pal[bg_i as usize];
                let fg = if blinking && !blink_on {
                    bg
                } else {
                    pal[fg_i as usize]
                };
                let font = self.font_base[((attr >> 3) & 1) as usize] as usize + ch as usize * 32;
                let cursor_lines = match self.cursor {
                    Some((c, first, last)) if cursor_on && c == addr => Some((first, last)),
                    _ => None,
                };
                let dup9 = cw == 9 && self.line_graphics && (0xc0..=0xdf).contains(&ch);
                for line in 0..self.char_height {
                    let mut bits = mem[((font + line as usize) * 4 + 2) & wrap] as u16;
                    let in_cursor =
                        cursor_lines.is_some_and(|(first, last)| (first..=last).contains(&line));
                    if in_cursor {
                        bits = 0xff;
                    }
                    // Ninth column: background, or a copy of the eighth for
                    // line-drawing characters and the cursor.
                    let bits9 = (bits << 1) | if dup9 || in_cursor { bits & 1 } else { 0 };
                    let y = (row * self.char_height + line) as usize;
                    let x0 = col as usize * cw * dot;
                    let start = (y * w + x0) * 4;
                    let Some(px) = out.get_mut(start..start + cw * dot * 4) else {
                        continue;
                    };
                    let top = if cw == 9 { 8 } else { 7 };
                    for (i, p) in px.chunks_exact_mut(4).enumerate() {
                        let bit = top - i / dot;
                        let on = (if cw == 9 { bits9 } else { bits }) >> bit & 1 != 0;
                        p.copy_from_slice(if on { &fg } else { &bg });
                    }
                }
            }
        }
    }
}
