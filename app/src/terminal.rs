//! A serial terminal's state: an alacritty_terminal grid fed with the
//! guest's UART output (ANSI colours, cursor movement, scrollback). The
//! model keeps one per VM; `ui::serial` draws it and turns keys into bytes.

use alacritty_terminal::event::VoidListener;
use alacritty_terminal::grid::{Dimensions, Scroll};
use alacritty_terminal::index::{Column, Line};
use alacritty_terminal::term::cell::Flags;
use alacritty_terminal::term::{Config, Term};
use alacritty_terminal::vte::ansi::{Color, NamedColor, Processor, Rgb};
use egui::Color32;

struct Size {
    cols: usize,
    rows: usize,
}

impl Dimensions for Size {
    fn total_lines(&self) -> usize {
        self.rows
    }
    fn screen_lines(&self) -> usize {
        self.rows
    }
    fn columns(&self) -> usize {
        self.cols
    }
}

/// A terminal emulator fed with bytes.
pub struct Terminal {
    term: Term<VoidListener>,
    parser: Processor,
}

impl Terminal {
    pub fn new(cols: usize, rows: usize) -> Terminal {
        let size = Size {
            cols: cols.max(2),
            rows: rows.max(2),
        };
        let config = Config {
            scrolling_history: 5000,
            ..Config::default()
        };
        Terminal {
            term: Term::new(config, &size, VoidListener),
            parser: Processor::new(),
        }
    }

    /// Feeds guest output. A lone `\n` (common on serial consoles) also
    /// returns the carriage, as a serial terminal set to "onlcr" would.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut out = Vec::with_capacity(bytes.len() + 8);
        for &b in bytes {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        self.parser.advance(&mut self.term, &out);
    }

    pub fn columns(&self) -> usize {
        self.term.grid().columns()
    }

    pub fn screen_lines(&self) -> usize {
        self.term.grid().screen_lines()
    }

    /// The visible lines (taking the scroll position into account).
    pub fn visible_lines(&self) -> Vec<String> {
        let grid = self.term.grid();
        let off = grid.display_offset() as i32;
        (0..grid.screen_lines() as i32)
            .map(|r| self.line_text(Line(r - off)))
            .collect()
    }

    fn line_text(&self, line: Line) -> String {
        let grid = self.term.grid();
        let row = &grid[line];
        let mut s: String = (0..grid.columns())
            .filter(|&c| !row[Column(c)].flags.contains(Flags::WIDE_CHAR_SPACER))
            .map(|c| row[Column(c)].c)
            .collect();
        s.truncate(s.trim_end().len());
        s
    }

    /// The whole buffer: scrollback and screen, trailing blank lines removed.
    pub fn text(&self) -> String {
        let grid = self.term.grid();
        let top = grid.topmost_line().0;
        let bottom = grid.bottommost_line().0;
        let mut lines: Vec<String> = (top..=bottom).map(|l| self.line_text(Line(l))).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines.join("\n")
    }

    /// Cursor position on the screen (column, row), if shown at the bottom.
    pub fn cursor(&self) -> Option<(usize, usize)> {
        let grid = self.term.grid();
        if grid.display_offset() != 0 {
            return None;
        }
        let p = grid.cursor.point;
        Some((p.column.0, usize::try_from(p.line.0).ok()?))
    }

    pub fn scroll(&mut self, lines: i32) {
        self.term.scroll_display(Scroll::Delta(lines));
    }

    pub fn scroll_to_bottom(&mut self) {
        self.term.scroll_display(Scroll::Bottom);
    }

    /// The visible rows as runs of text that share one colour pair
    /// (foreground, background), inverse and hidden cells resolved.
    pub fn styled_rows(&self) -> Vec<Vec<(String, Color32, Color32)>> {
        let grid = self.term.grid();
        let off = grid.display_offset() as i32;
        (0..grid.screen_lines() as i32)
            .map(|r| {
                let row = &grid[Line(r - off)];
                let mut runs: Vec<(String, Color32, Color32)> = Vec::new();
                for c in 0..grid.columns() {
                    let cell = &row[Column(c)];
                    if cell.flags.contains(Flags::WIDE_CHAR_SPACER) {
                        continue;
                    }
                    let (mut fg, mut bg) = (color(cell.fg, true), color(cell.bg, false));
                    if cell.flags.contains(Flags::INVERSE) {
                        std::mem::swap(&mut fg, &mut bg);
                    }
                    if cell.flags.contains(Flags::HIDDEN) {
                        fg = bg;
                    }
                    let ch = if cell.c == '\0' { ' ' } else { cell.c };
                    match runs.last_mut() {
                        Some((text, f, b)) if (*f, *b) == (fg, bg) => text.push(ch),
                        _ => runs.push((ch.to_string(), fg, bg)),
                    }
                }
                runs
            })
            .collect()
    }
}

pub const BACKGROUND: Color32 = Color32::from_rgb(0x1e, 0x1e, 0x1e);
pub const FOREGROUND: Color32 = Color32::from_rgb(0xd0, 0xd0, 0xd0);

/// The xterm palette for the 16 ANSI colours.
const ANSI: [Color32; 16] = [
    Color32::from_rgb(0x00, 0x00, 0x00),
    Color32::from_rgb(0xcd, 0x00, 0x00),
    Color32::from_rgb(0x00, 0xcd, 0x00),
    Color32::from_rgb(0xcd, 0xcd, 0x00),
    Color32::from_rgb(0x00, 0x00, 0xee),
    Color32::from_rgb(0xcd, 0x00, 0xcd),
    Color32::from_rgb(0x00, 0xcd, 0xcd),
    Color32::from_rgb(0xe5, 0xe5, 0xe5),
    Color32::from_rgb(0x7f, 0x7f, 0x7f),
    Color32::from_rgb(0xff, 0x00, 0x00),
    Color32::from_rgb(0x00, 0xff, 0x00),
    Color32::from_rgb(0xff, 0xff, 0x00),
    Color32::from_rgb(0x5c, 0x5c, 0xff),
    Color32::from_rgb(0xff, 0x00, 0xff),
    Color32::from_rgb(0x00, 0xff, 0xff),
    Color32::from_rgb(0xff, 0xff, 0xff),
];

fn indexed(i: u8) -> Color32 {
    match i {
        0..=15 => ANSI[i as usize],
        16..=231 => {
            let i = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            Color32::from_rgb(level(i / 36), level((i / 6) % 6), level(i % 6))
        }
        _ => {
            let v = 8 + (i - 232) * 10;
            Color32::from_rgb(v, v, v)
        }
    }
}

/// Maps a cell colour to RGB.
pub fn color(c: Color, is_fg: bool) -> Color32 {
    match c {
        Color::Spec(Rgb { r, g, b }) => Color32::from_rgb(r, g, b),
        Color::Indexed(i) => indexed(i),
        Color::Named(n) => {
            let idx = n as usize;
            if idx < 16 {
                ANSI[idx]
            } else {
                match n {
                    NamedColor::Background => BACKGROUND,
                    NamedColor::Foreground | NamedColor::BrightForeground => FOREGROUND,
                    NamedColor::DimForeground => Color32::from_gray(0xa0),
                    NamedColor::Cursor => FOREGROUND,
                    other => {
                        let base = other.to_bright() as usize;
                        let c = ANSI.get(base).copied().unwrap_or(if is_fg {
                            FOREGROUND
                        } else {
                            BACKGROUND
                        });
                        c.gamma_multiply(0.7)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_newlines() {
        let mut t = Terminal::new(20, 4);
        t.feed(b"hello\nworld");
        assert_eq!(t.visible_lines()[..2], ["hello", "world"]);
        assert_eq!(t.cursor(), Some((5, 1)));
    }

    #[test]
    fn ansi_colours_and_cursor_movement_are_interpreted() {
        let mut t = Terminal::new(20, 4);
        t.feed(b"\x1b[31mred\x1b[0m ok\x1b[2;5HX");
        let lines = t.visible_lines();
        assert_eq!(lines[0], "red ok");
        assert_eq!(lines[1], "    X");
        let grid = t.term.grid();
        assert_eq!(grid[Line(0)][Column(0)].fg, Color::Named(NamedColor::Red));
        assert_eq!(color(grid[Line(0)][Column(0)].fg, true), ANSI[1]);
        assert_eq!(
            grid[Line(0)][Column(4)].fg,
            Color::Named(NamedColor::Foreground)
        );
    }

    #[test]
    fn scrollback_keeps_old_lines() {
        let mut t = Terminal::new(10, 3);
        for i in 0..10 {
            t.feed(format!("line{i}\n").as_bytes());
        }
        assert!(t.text().starts_with("line0\nline1"));
        assert_eq!(t.visible_lines()[1], "line9");
        t.scroll(3);
        assert_eq!(t.visible_lines()[0], "line5");
        assert_eq!(t.cursor(), None);
        t.scroll_to_bottom();
        assert!(t.cursor().is_some());
    }

    #[test]
    fn runs_group_cells_of_one_colour() {
        let mut t = Terminal::new(10, 2);
        t.feed(b"\x1b[31mab\x1b[0mcd");
        let rows = t.styled_rows();
        assert_eq!(rows[0][0], ("ab".to_string(), ANSI[1], BACKGROUND));
        assert_eq!(rows[0][1].0, "cd      ", "the rest of the 10 columns");
        assert_eq!(rows[0][1].1, FOREGROUND);
        assert_eq!(rows.len(), 2);
    }
}
