//! The serial console: an alacritty_terminal grid fed with the guest's UART
//! output (ANSI colours, cursor movement, scrollback), drawn with egui's
//! monospace font. Typed keys become bytes for the guest's UART. "Copy all"
//! puts the whole buffer (scrollback included) on the clipboard; text
//! selection with the mouse is not done yet.

use crate::model::Action;
use alacritty_terminal::event::VoidListener;
use alacritty_terminal::grid::{Dimensions, Scroll};
use alacritty_terminal::index::{Column, Line};
use alacritty_terminal::term::cell::Flags;
use alacritty_terminal::term::{Config, Term};
use alacritty_terminal::vte::ansi::{Color, NamedColor, Processor, Rgb};
use egui::text::{LayoutJob, TextFormat};
use egui::{Color32, FontId, Sense, Vec2};

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

    /// One layout job per visible row.
    fn row_jobs(&self, font: &FontId) -> Vec<LayoutJob> {
        let grid = self.term.grid();
        let off = grid.display_offset() as i32;
        (0..grid.screen_lines() as i32)
            .map(|r| {
                let row = &grid[Line(r - off)];
                let mut job = LayoutJob::default();
                let mut run = String::new();
                let mut run_fmt: Option<(Color32, Color32)> = None;
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
                    if run_fmt != Some((fg, bg)) {
                        if let Some((f, b)) = run_fmt {
                            job.append(&std::mem::take(&mut run), 0.0, fmt(font, f, b));
                        }
                        run_fmt = Some((fg, bg));
                    }
                    run.push(if cell.c == '\0' { ' ' } else { cell.c });
                }
                if let Some((f, b)) = run_fmt {
                    job.append(&run, 0.0, fmt(font, f, b));
                }
                job
            })
            .collect()
    }
}

fn fmt(font: &FontId, fg: Color32, bg: Color32) -> TextFormat {
    TextFormat {
        font_id: font.clone(),
        color: fg,
        background: if bg == BACKGROUND {
            Color32::TRANSPARENT
        } else {
            bg
        },
        ..Default::default()
    }
}

const BACKGROUND: Color32 = Color32::from_rgb(0x1e, 0x1e, 0x1e);
const FOREGROUND: Color32 = Color32::from_rgb(0xd0, 0xd0, 0xd0);

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

/// Turns an egui input event into bytes for the UART.
pub fn event_bytes(ev: &egui::Event) -> Option<Vec<u8>> {
    use egui::{Event, Key};
    match ev {
        Event::Text(t) => Some(t.as_bytes().to_vec()),
        Event::Paste(t) => Some(t.as_bytes().to_vec()),
        Event::Key {
            key,
            pressed: true,
            modifiers,
            ..
        } => {
            if modifiers.ctrl && !modifiers.alt {
                let name = key.name();
                if name.len() == 1 {
                    let b = name.as_bytes()[0].to_ascii_lowercase();
                    if b.is_ascii_lowercase() {
                        return Some(vec![b & 0x1f]);
                    }
                }
            }
            let seq: &[u8] = match key {
                Key::Enter => b"\r",
                Key::Backspace => b"\x7f",
                Key::Tab => b"\t",
                Key::Escape => b"\x1b",
                Key::ArrowUp => b"\x1b[A",
                Key::ArrowDown => b"\x1b[B",
                Key::ArrowRight => b"\x1b[C",
                Key::ArrowLeft => b"\x1b[D",
                Key::Home => b"\x1b[H",
                Key::End => b"\x1b[F",
                Key::Delete => b"\x1b[3~",
                Key::PageUp => b"\x1b[5~",
                Key::PageDown => b"\x1b[6~",
                _ => return None,
            };
            Some(seq.to_vec())
        }
        _ => None,
    }
}

/// Draws the terminal; returns the bytes the user typed as an action.
/// The serial console in a terminal window of its own, titled like
/// virt-manager's ("NAME - Serial Console").
pub fn show_window(ctx: &egui::Context, vm: &str, model: &mut crate::model::Model) -> Vec<Action> {
    let mut actions = Vec::new();
    let open = crate::ui::own_window(
        ctx,
        egui::Id::unique(("serial-window", vm)),
        format!("{vm} - Serial Console"),
        [740.0, 480.0],
        [320.0, 200.0],
        |ui| {
            let term = &mut model.runtime_mut(vm).terminal;
            actions.extend(show(ui, vm, term));
        },
    );
    if !open {
        actions.push(Action::CloseSerialWindow(vm.to_string()));
    }
    actions
}

pub fn show(ui: &mut egui::Ui, vm: &str, term: &mut Terminal) -> Option<Action> {
    let mut action = None;
    ui.horizontal(|ui| {
        if ui.button("Copy all").clicked() {
            ui.ctx().copy_text(term.text());
        }
        if ui.button("Scroll to end").clicked() {
            term.scroll_to_bottom();
        }
    });
    let font = FontId::monospace(13.0);
    let probe = ui
        .painter()
        .layout_no_wrap("M".into(), font.clone(), FOREGROUND);
    let cell = Vec2::new(probe.size().x, probe.size().y);
    let want = Vec2::new(
        cell.x * term.columns() as f32 + 8.0,
        cell.y * term.screen_lines() as f32 + 8.0,
    );
    let (rect, resp) = ui.allocate_exact_size(want, Sense::click());
    let id = resp.id;
    resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Terminal, true, "Serial console"));
    if resp.clicked() {
        resp.request_focus();
    }
    let focused = resp.has_focus();
    if focused {
        ui.memory_mut(|m| {
            m.set_focus_lock_filter(
                id,
                egui::EventFilter {
                    tab: true,
                    horizontal_arrows: true,
                    vertical_arrows: true,
                    escape: true,
                },
            )
        });
        let mut bytes = Vec::new();
        ui.input(|i| {
            for ev in &i.events {
                if let Some(b) = event_bytes(ev) {
                    bytes.extend(b);
                }
            }
        });
        if !bytes.is_empty() {
            term.scroll_to_bottom();
            action = Some(Action::SerialInput(vm.to_string(), bytes));
        }
    }
    if resp.hovered() {
        let dy = ui.input(|i| i.smooth_scroll_delta.y);
        let lines = (dy / cell.y).round() as i32;
        if lines != 0 {
            term.scroll(lines);
        }
    }
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, BACKGROUND);
    if focused {
        painter.rect_stroke(
            rect,
            2.0,
            egui::Stroke::new(1.0, ui.visuals().selection.stroke.color),
            egui::StrokeKind::Inside,
        );
    }
    let origin = rect.min + Vec2::splat(4.0);
    for (r, job) in term.row_jobs(&font).into_iter().enumerate() {
        let galley = ui.painter().layout_job(job);
        painter.galley(
            origin + Vec2::new(0.0, r as f32 * cell.y),
            galley,
            FOREGROUND,
        );
    }
    if let Some((c, r)) = term.cursor() {
        let min = origin + Vec2::new(c as f32 * cell.x, r as f32 * cell.y);
        let cur = egui::Rect::from_min_size(min, cell);
        if focused {
            painter.rect_filled(cur, 0.0, FOREGROUND.gamma_multiply(0.6));
        } else {
            painter.rect_stroke(
                cur,
                0.0,
                egui::Stroke::new(1.0, FOREGROUND),
                egui::StrokeKind::Inside,
            );
        }
    }
    ui.label(if focused {
        "Typing goes to the guest's serial port. Click outside to stop."
    } else {
        "Click the terminal to type into the guest's serial port."
    });
    action
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
    fn keys_become_uart_bytes() {
        use egui::{Event, Key, Modifiers};
        let key = |key, modifiers| Event::Key {
            key,
            physical_key: None,
            pressed: true,
            repeat: false,
            modifiers,
        };
        assert_eq!(event_bytes(&Event::Text("a".into())), Some(b"a".to_vec()));
        assert_eq!(
            event_bytes(&key(Key::Enter, Modifiers::NONE)),
            Some(b"\r".to_vec())
        );
        assert_eq!(event_bytes(&key(Key::C, Modifiers::CTRL)), Some(vec![3]));
        assert_eq!(
            event_bytes(&key(Key::ArrowUp, Modifiers::NONE)),
            Some(b"\x1b[A".to_vec())
        );
        assert_eq!(event_bytes(&key(Key::A, Modifiers::NONE)), None);
    }
}
