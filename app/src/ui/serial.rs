//! The serial console view: draws a [`Terminal`] with egui's monospace
//! font and turns typed keys into bytes for the guest's UART. "Copy all"
//! puts the whole buffer (scrollback included) on the clipboard; text
//! selection with the mouse is not done yet.

use crate::model::Action;
use crate::terminal::{Terminal, BACKGROUND, FOREGROUND};
use egui::text::{LayoutJob, TextFormat};
use egui::{Color32, FontId, Sense, Vec2};

/// One layout job per visible row.
fn row_jobs(term: &Terminal, font: &FontId) -> Vec<LayoutJob> {
    term.styled_rows()
        .into_iter()
        .map(|runs| {
            let mut job = LayoutJob::default();
            for (text, fg, bg) in runs {
                job.append(&text, 0.0, fmt(font, fg, bg));
            }
            job
        })
        .collect()
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
    for (r, job) in row_jobs(term, &font).into_iter().enumerate() {
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
