//! The graphical console: the VM's framebuffer as a texture (uploaded only
//! when the engine's generation changes, updated in place with
//! `TextureHandle::set`), scaled to fit or shown 1:1 (one guest pixel per
//! physical pixel, so it stays sharp at any HiDPI scale) with scrollbars.
//! Clicking the screen captures the keyboard and mouse; Ctrl+Alt releases
//! them, as a hint on screen says. egui keys become [`GuestKey`]s, which the
//! connection turns into PS/2 scancodes.

use crate::connection::{Frame, GuestKey, MOUSE_LEFT, MOUSE_MIDDLE, MOUSE_RIGHT};
use crate::model::Action;
use egui::{Color32, Key, Sense, TextureHandle, TextureOptions, Vec2};

/// Maps an egui key to the PC key in the same place on a US layout.
pub fn guest_key(key: Key) -> Option<GuestKey> {
    use GuestKey as G;
    Some(match key {
        Key::ArrowDown => G::Down,
        Key::ArrowLeft => G::Left,
        Key::ArrowRight => G::Right,
        Key::ArrowUp => G::Up,
        Key::Escape => G::Escape,
        Key::Tab => G::Tab,
        Key::Backspace => G::Backspace,
        Key::Enter => G::Enter,
        Key::Space => G::Space,
        Key::Insert => G::Insert,
        Key::Delete => G::Delete,
        Key::Home => G::Home,
        Key::End => G::End,
        Key::PageUp => G::PageUp,
        Key::PageDown => G::PageDown,
        Key::Comma => G::Char(','),
        Key::Backslash | Key::Pipe => G::Char('\\'),
        Key::Slash | Key::Questionmark => G::Char('/'),
        Key::OpenBracket | Key::OpenCurlyBracket => G::Char('['),
        Key::CloseBracket | Key::CloseCurlyBracket => G::Char(']'),
        Key::Backtick => G::Char('`'),
        Key::Minus => G::Char('-'),
        Key::Period => G::Char('.'),
        Key::Plus | Key::Equals => G::Char('='),
        Key::Semicolon | Key::Colon => G::Char(';'),
        Key::Quote => G::Char('\''),
        Key::F1 => G::F(1),
        Key::F2 => G::F(2),
        Key::F3 => G::F(3),
        Key::F4 => G::F(4),
        Key::F5 => G::F(5),
        Key::F6 => G::F(6),
        Key::F7 => G::F(7),
        Key::F8 => G::F(8),
        Key::F9 => G::F(9),
        Key::F10 => G::F(10),
        Key::F11 => G::F(11),
        Key::F12 => G::F(12),
        other => {
            let name = other.name();
            let mut chars = name.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_alphanumeric() => G::Char(c.to_ascii_lowercase()),
                _ => return None,
            }
        }
    })
}

/// The keys of the Send Key menu, as (label, key sequence).
pub fn send_key_combos() -> Vec<(String, Vec<GuestKey>)> {
    use GuestKey as G;
    let mut v = vec![
        (
            "Ctrl+Alt+Del".to_string(),
            vec![G::LeftCtrl, G::LeftAlt, G::Delete],
        ),
        (
            "Ctrl+Alt+Backspace".to_string(),
            vec![G::LeftCtrl, G::LeftAlt, G::Backspace],
        ),
    ];
    for n in 1..=12u8 {
        v.push((
            format!("Ctrl+Alt+F{n}"),
            vec![G::LeftCtrl, G::LeftAlt, G::F(n)],
        ));
    }
    v.push(("PrintScreen".to_string(), vec![G::PrintScreen]));
    v
}

/// The console view's own state (one per VM window).
pub struct ConsoleView {
    texture: Option<TextureHandle>,
    generation: Option<u64>,
    pub scale_to_fit: bool,
    pub captured: bool,
    modifiers: egui::Modifiers,
    buttons: u8,
    /// How many texture uploads happened (tests check it stays put).
    pub uploads: u64,
}

impl Default for ConsoleView {
    fn default() -> Self {
        ConsoleView {
            texture: None,
            generation: None,
            scale_to_fit: true,
            captured: false,
            modifiers: egui::Modifiers::NONE,
            buttons: 0,
            uploads: 0,
        }
    }
}

/// Guest pixels stay sharp squares when the screen is drawn larger (HiDPI,
/// a big window); drawn smaller, they are averaged, so that one-pixel lines
/// (a text-mode box border) never drop out.
const SCREEN_FILTER: TextureOptions = TextureOptions {
    magnification: egui::TextureFilter::Nearest,
    minification: egui::TextureFilter::Linear,
    ..TextureOptions::NEAREST
};

impl ConsoleView {
    fn update_texture(&mut self, ctx: &egui::Context, vm: &str, frame: &Frame) {
        if self.generation == Some(frame.generation) && self.texture.is_some() {
            return;
        }
        let (w, h) = (frame.width as usize, frame.height as usize);
        let need = w.saturating_mul(h).saturating_mul(4);
        let Some(px) = frame.pixels.get(..need) else {
            return;
        };
        if w == 0 || h == 0 {
            return;
        }
        let image = egui::ColorImage::from_rgba_unmultiplied([w, h], px);
        match &mut self.texture {
            Some(t) => t.set(image, SCREEN_FILTER),
            None => {
                self.texture = Some(ctx.load_texture(format!("console-{vm}"), image, SCREEN_FILTER))
            }
        }
        self.generation = Some(frame.generation);
        self.uploads += 1;
    }

    /// Draws the console; returns the input to send to the guest.
    pub fn show(&mut self, ui: &mut egui::Ui, vm: &str, frame: Option<&Frame>) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(frame) = frame else {
            self.captured = false;
            ui.centered_and_justified(|ui| {
                ui.label("The VM has no display output. Start it, or use the Serial console.");
            });
            return actions;
        };
        self.update_texture(ui.ctx(), vm, frame);
        let Some(tex) = self.texture.clone() else {
            return actions;
        };
        let hint = if self.captured {
            "Keyboard and mouse captured: press Ctrl+Alt to release."
        } else {
            "Click the screen to capture the keyboard and mouse."
        };
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.scale_to_fit, "Scale to fit");
            ui.label(egui::RichText::new(hint).color(if self.captured {
                Color32::from_rgb(0xe0, 0xa0, 0x20)
            } else {
                ui.visuals().weak_text_color()
            }));
        });
        let guest = Vec2::new(frame.width as f32, frame.height as f32);
        let mut resp = None;
        if self.scale_to_fit {
            let avail = ui.available_size();
            let s = (avail.x / guest.x).min(avail.y / guest.y).max(0.01);
            let size = guest * s;
            ui.vertical_centered(|ui| {
                resp =
                    Some(ui.add(egui::Image::new((tex.id(), size)).sense(Sense::click_and_drag())));
            });
        } else {
            let ppp = ui.ctx().pixels_per_point();
            egui::ScrollArea::both()
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    resp = Some(ui.add(
                        egui::Image::new((tex.id(), guest / ppp)).sense(Sense::click_and_drag()),
                    ));
                });
        }
        let Some(resp) = resp else { return actions };
        resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Console screen"));
        let resp = resp.on_hover_cursor(if self.captured {
            egui::CursorIcon::None
        } else {
            egui::CursorIcon::Default
        });
        if resp.clicked() && !self.captured {
            self.captured = true;
            resp.request_focus();
            return actions;
        }
        if self.captured && !resp.has_focus() {
            // Focus went elsewhere (another widget clicked): release.
            if ui.memory(|m| m.focused().is_some()) {
                self.release(vm, &mut actions);
                return actions;
            }
            resp.request_focus();
        }
        if !self.captured {
            return actions;
        }
        ui.memory_mut(|m| {
            m.set_focus_lock_filter(
                resp.id,
                egui::EventFilter {
                    tab: true,
                    horizontal_arrows: true,
                    vertical_arrows: true,
                    escape: true,
                },
            )
        });
        let (events, mods, pointer) =
            ui.input(|i| (i.events.clone(), i.modifiers, i.pointer.clone()));
        for ev in events {
            match ev {
                egui::Event::ModifiersChanged(m) => {
                    if m.ctrl && m.alt {
                        self.release(vm, &mut actions);
                        return actions;
                    }
                    self.sync_modifiers(vm, m, &mut actions);
                }
                egui::Event::Key {
                    key,
                    physical_key,
                    pressed,
                    repeat,
                    modifiers,
                } => {
                    if modifiers.ctrl && modifiers.alt {
                        self.release(vm, &mut actions);
                        return actions;
                    }
                    self.sync_modifiers(vm, modifiers, &mut actions);
                    if let Some(k) = guest_key(physical_key.unwrap_or(key)) {
                        if !repeat || pressed {
                            actions.push(Action::Key(vm.into(), k, pressed));
                        }
                    }
                }
                _ => {}
            }
        }
        if mods.ctrl && mods.alt {
            self.release(vm, &mut actions);
            return actions;
        }
        self.sync_modifiers(vm, mods, &mut actions);
        // Mouse: relative motion in guest pixels and the button mask.
        let shown = resp.rect.size();
        let scale = Vec2::new(guest.x / shown.x.max(1.0), guest.y / shown.y.max(1.0));
        let d = pointer.delta() * scale;
        let mut buttons = 0;
        if pointer.button_down(egui::PointerButton::Primary) {
            buttons |= MOUSE_LEFT;
        }
        if pointer.button_down(egui::PointerButton::Secondary) {
            buttons |= MOUSE_RIGHT;
        }
        if pointer.button_down(egui::PointerButton::Middle) {
            buttons |= MOUSE_MIDDLE;
        }
        let (dx, dy) = (d.x.round() as i32, d.y.round() as i32);
        if dx != 0 || dy != 0 || buttons != self.buttons {
            self.buttons = buttons;
            actions.push(Action::Mouse(vm.into(), dx, dy, buttons));
        }
        actions
    }

    fn sync_modifiers(&mut self, vm: &str, now: egui::Modifiers, out: &mut Vec<Action>) {
        let pairs = [
            (self.modifiers.shift, now.shift, GuestKey::LeftShift),
            (self.modifiers.ctrl, now.ctrl, GuestKey::LeftCtrl),
            (self.modifiers.alt, now.alt, GuestKey::LeftAlt),
        ];
        for (was, is, k) in pairs {
            if was != is {
                out.push(Action::Key(vm.into(), k, is));
            }
        }
        self.modifiers = now;
    }

    fn release(&mut self, vm: &str, out: &mut Vec<Action>) {
        self.sync_modifiers(vm, egui::Modifiers::NONE, out);
        self.captured = false;
        if self.buttons != 0 {
            self.buttons = 0;
            out.push(Action::Mouse(vm.into(), 0, 0, 0));
        }
    }

    /// The texture's generation last uploaded.
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_us_layout_positions() {
        assert_eq!(guest_key(Key::A), Some(GuestKey::Char('a')));
        assert_eq!(guest_key(Key::Num7), Some(GuestKey::Char('7')));
        assert_eq!(guest_key(Key::F12), Some(GuestKey::F(12)));
        assert_eq!(guest_key(Key::Colon), Some(GuestKey::Char(';')));
        assert_eq!(guest_key(Key::ArrowDown), Some(GuestKey::Down));
        assert_eq!(guest_key(Key::Copy), None);
    }

    #[test]
    fn send_key_menu_has_all_combos() {
        let v = send_key_combos();
        assert_eq!(v.len(), 15);
        assert_eq!(
            v[0].1,
            vec![GuestKey::LeftCtrl, GuestKey::LeftAlt, GuestKey::Delete]
        );
        assert!(v.iter().any(|(l, _)| l == "Ctrl+Alt+F12"));
        assert!(v.iter().any(|(l, _)| l == "PrintScreen"));
    }
}
