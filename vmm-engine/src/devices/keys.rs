//! Host-side keyboard vocabulary: [`KeyCode`] (the keys of a US 105-key PC
//! keyboard), their PS/2 scancode sequences in sets 1, 2 and 3, QEMU
//! `sendkey`-style combo parsing ([`parse_key_combo`]) and text-to-keys
//! conversion for a US layout ([`keys_for_text`]).
//!
//! The keyboard in [`super::i8042`] generates set 2 internally, as a real
//! MF2 keyboard does; the 8042 controller turns it into set 1 when the
//! guest enables translation ([`translate_set2_byte`]). Set 1 (without
//! translation) and set 3 are produced on request of the guest (command
//! 0xF0). Missing: the Japanese/Korean extra keys, multimedia and ACPI
//! keys, typematic repeat (the host sends its own repeats).

use serde::{Deserialize, Serialize};

/// A key of a US PC keyboard, named by position (as the USB HID and
/// QEMU's `QKeyCode` do), not by the character it types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyCode {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
    N,
    O,
    P,
    Q,
    R,
    S,
    T,
    U,
    V,
    W,
    X,
    Y,
    Z,
    Digit0,
    Digit1,
    Digit2,
    Digit3,
    Digit4,
    Digit5,
    Digit6,
    Digit7,
    Digit8,
    Digit9,
    F1,
    F2,
    F3,
    F4,
    F5,
    F6,
    F7,
    F8,
    F9,
    F10,
    F11,
    F12,
    Escape,
    Enter,
    Backspace,
    Tab,
    Space,
    CapsLock,
    NumLock,
    ScrollLock,
    PrintScreen,
    Pause,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    PageUp,
    PageDown,
    Insert,
    Delete,
    ShiftLeft,
    ShiftRight,
    CtrlLeft,
    CtrlRight,
    AltLeft,
    AltRight,
    MetaLeft,
    MetaRight,
    Menu,
    /// `-` / `_`
    Minus,
    /// `=` / `+`
    Equal,
    /// `[` / `{`
    BracketLeft,
    /// `]` / `}`
    BracketRight,
    /// `\` / `|`
    Backslash,
    /// `;` / `:`
    Semicolon,
    /// `'` / `"`
    Apostrophe,
    /// `` ` `` / `~`
    Grave,
    /// `,` / `<`
    Comma,
    /// `.` / `>`
    Dot,
    /// `/` / `?`
    Slash,
    /// The extra key left of Z on ISO keyboards (`<` / `>`).
    Less,
    Kp0,
    Kp1,
    Kp2,
    Kp3,
    Kp4,
    Kp5,
    Kp6,
    Kp7,
    Kp8,
    Kp9,
    KpDecimal,
    KpEnter,
    KpAdd,
    KpSubtract,
    KpMultiply,
    KpDivide,
}

/// Where a key lives in scancode set 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set2 {
    /// One byte; break is `F0 code`.
    Plain(u8),
    /// `E0 code`; break is `E0 F0 code`.
    Ext(u8),
    /// `E0 12 E0 7C`; break `E0 F0 7C E0 F0 12`.
    PrintScreen,
    /// `E1 14 77 E1 F0 14 F0 77` on press, nothing on release.
    Pause,
}

/// Per-key facts: set-2 position, set-1 code (with the E0 flag), set-3 code.
struct Info {
    set2: Set2,
    /// Set-1 make code and whether it carries the E0 prefix (not used for
    /// PrintScreen/Pause, whose sequences are special).
    set1: (bool, u8),
    set3: u8,
}

const fn p(set2: u8, set1: u8, set3: u8) -> Info {
    Info {
        set2: Set2::Plain(set2),
        set1: (false, set1),
        set3,
    }
}

const fn e(set2: u8, set1: u8, set3: u8) -> Info {
    Info {
        set2: Set2::Ext(set2),
        set1: (true, set1),
        set3,
    }
}

impl KeyCode {
    /// Every key, in declaration order.
    pub const ALL: &'static [KeyCode] = &[
        KeyCode::A,
        KeyCode::B,
        KeyCode::C,
        KeyCode::D,
        KeyCode::E,
        KeyCode::F,
        KeyCode::G,
        KeyCode::H,
        KeyCode::I,
        KeyCode::J,
        KeyCode::K,
        KeyCode::L,
        KeyCode::M,
        KeyCode::N,
        KeyCode::O,
        KeyCode::P,
        KeyCode::Q,
        KeyCode::R,
        KeyCode::S,
        KeyCode::T,
        KeyCode::U,
        KeyCode::V,
        KeyCode::W,
        KeyCode::X,
        KeyCode::Y,
        KeyCode::Z,
        KeyCode::Digit0,
        KeyCode::Digit1,
        KeyCode::Digit2,
        KeyCode::Digit3,
        KeyCode::Digit4,
        KeyCode::Digit5,
        KeyCode::Digit6,
        KeyCode::Digit7,
        KeyCode::Digit8,
        KeyCode::Digit9,
        KeyCode::F1,
        KeyCode::F2,
        KeyCode::F3,
        KeyCode::F4,
        KeyCode::F5,
        KeyCode::F6,
        KeyCode::F7,
        KeyCode::F8,
        KeyCode::F9,
        KeyCode::F10,
        KeyCode::F11,
        KeyCode::F12,
        KeyCode::Escape,
        KeyCode::Enter,
        KeyCode::Backspace,
        KeyCode::Tab,
        KeyCode::Space,
        KeyCode::CapsLock,
        KeyCode::NumLock,
        KeyCode::ScrollLock,
        KeyCode::PrintScreen,
        KeyCode::Pause,
        KeyCode::Up,
        KeyCode::Down,
        KeyCode::Left,
        KeyCode::Right,
        KeyCode::Home,
        KeyCode::End,
        KeyCode::PageUp,
        KeyCode::PageDown,
        KeyCode::Insert,
        KeyCode::Delete,
        KeyCode::ShiftLeft,
        KeyCode::ShiftRight,
        KeyCode::CtrlLeft,
        KeyCode::CtrlRight,
        KeyCode::AltLeft,
        KeyCode::AltRight,
        KeyCode::MetaLeft,
        KeyCode::MetaRight,
        KeyCode::Menu,
        KeyCode::Minus,
        KeyCode::Equal,
        KeyCode::BracketLeft,
        KeyCode::BracketRight,
        KeyCode::Backslash,
        KeyCode::Semicolon,
        KeyCode::Apostrophe,
        KeyCode::Grave,
        KeyCode::Comma,
        KeyCode::Dot,
        KeyCode::Slash,
        KeyCode::Less,
        KeyCode::Kp0,
        KeyCode::Kp1,
        KeyCode::Kp2,
        KeyCode::Kp3,
        KeyCode::Kp4,
        KeyCode::Kp5,
        KeyCode::Kp6,
        KeyCode::Kp7,
        KeyCode::Kp8,
        KeyCode::Kp9,
        KeyCode::KpDecimal,
        KeyCode::KpEnter,
        KeyCode::KpAdd,
        KeyCode::KpSubtract,
        KeyCode::KpMultiply,
        KeyCode::KpDivide,
    ];

    fn info(self) -> Info {
        use KeyCode::*;
        match self {
            A => p(0x1C, 0x1E, 0x1C),
            B => p(0x32, 0x30, 0x32),
            C => p(0x21, 0x2E, 0x21),
            D => p(0x23, 0x20, 0x23),
            E => p(0x24, 0x12, 0x24),
            F => p(0x2B, 0x21, 0x2B),
            G => p(0x34, 0x22, 0x34),
            H => p(0x33, 0x23, 0x33),
            I => p(0x43, 0x17, 0x43),
            J => p(0x3B, 0x24, 0x3B),
            K => p(0x42, 0x25, 0x42),
            L => p(0x4B, 0x26, 0x4B),
            M => p(0x3A, 0x32, 0x3A),
            N => p(0x31, 0x31, 0x31),
            O => p(0x44, 0x18, 0x44),
            P => p(0x4D, 0x19, 0x4D),
            Q => p(0x15, 0x10, 0x15),
            R => p(0x2D, 0x13, 0x2D),
            S => p(0x1B, 0x1F, 0x1B),
            T => p(0x2C, 0x14, 0x2C),
            U => p(0x3C, 0x16, 0x3C),
            V => p(0x2A, 0x2F, 0x2A),
            W => p(0x1D, 0x11, 0x1D),
            X => p(0x22, 0x2D, 0x22),
            Y => p(0x35, 0x15, 0x35),
            Z => p(0x1A, 0x2C, 0x1A),
            Digit1 => p(0x16, 0x02, 0x16),
            Digit2 => p(0x1E, 0x03, 0x1E),
            Digit3 => p(0x26, 0x04, 0x26),
            Digit4 => p(0x25, 0x05, 0x25),
            Digit5 => p(0x2E, 0x06, 0x2E),
            Digit6 => p(0x36, 0x07, 0x36),
            Digit7 => p(0x3D, 0x08, 0x3D),
            Digit8 => p(0x3E, 0x09, 0x3E),
            Digit9 => p(0x46, 0x0A, 0x46),
            Digit0 => p(0x45, 0x0B, 0x45),
            F1 => p(0x05, 0x3B, 0x07),
            F2 => p(0x06, 0x3C, 0x0F),
            F3 => p(0x04, 0x3D, 0x17),
            F4 => p(0x0C, 0x3E, 0x1F),
            F5 => p(0x03, 0x3F, 0x27),
            F6 => p(0x0B, 0x40, 0x2F),
            F7 => p(0x83, 0x41, 0x37),
            F8 => p(0x0A, 0x42, 0x3F),
            F9 => p(0x01, 0x43, 0x47),
            F10 => p(0x09, 0x44, 0x4F),
            F11 => p(0x78, 0x57, 0x56),
            F12 => p(0x07, 0x58, 0x5E),
            Escape => p(0x76, 0x01, 0x08),
            Enter => p(0x5A, 0x1C, 0x5A),
            Backspace => p(0x66, 0x0E, 0x66),
            Tab => p(0x0D, 0x0F, 0x0D),
            Space => p(0x29, 0x39, 0x29),
            CapsLock => p(0x58, 0x3A, 0x14),
            NumLock => p(0x77, 0x45, 0x76),
            ScrollLock => p(0x7E, 0x46, 0x5F),
            PrintScreen => Info {
                set2: Set2::PrintScreen,
                set1: (true, 0x37),
                set3: 0x57,
            },
            Pause => Info {
                set2: Set2::Pause,
                set1: (false, 0x45),
                set3: 0x62,
            },
            Up => e(0x75, 0x48, 0x63),
            Down => e(0x72, 0x50, 0x60),
            Left => e(0x6B, 0x4B, 0x61),
            Right => e(0x74, 0x4D, 0x6A),
            Home => e(0x6C, 0x47, 0x6E),
            End => e(0x69, 0x4F, 0x65),
            PageUp => e(0x7D, 0x49, 0x6F),
            PageDown => e(0x7A, 0x51, 0x6D),
            Insert => e(0x70, 0x52, 0x67),
            Delete => e(0x71, 0x53, 0x64),
            ShiftLeft => p(0x12, 0x2A, 0x12),
            ShiftRight => p(0x59, 0x36, 0x59),
            CtrlLeft => p(0x14, 0x1D, 0x11),
            CtrlRight => e(0x14, 0x1D, 0x58),
            AltLeft => p(0x11, 0x38, 0x19),
            AltRight => e(0x11, 0x38, 0x39),
            MetaLeft => e(0x1F, 0x5B, 0x8B),
            MetaRight => e(0x27, 0x5C, 0x8C),
            Menu => e(0x2F, 0x5D, 0x8D),
            Minus => p(0x4E, 0x0C, 0x4E),
            Equal => p(0x55, 0x0D, 0x55),
            BracketLeft => p(0x54, 0x1A, 0x54),
            BracketRight => p(0x5B, 0x1B, 0x5B),
            Backslash => p(0x5D, 0x2B, 0x5C),
            Semicolon => p(0x4C, 0x27, 0x4C),
            Apostrophe => p(0x52, 0x28, 0x52),
            Grave => p(0x0E, 0x29, 0x0E),
            Comma => p(0x41, 0x33, 0x41),
            Dot => p(0x49, 0x34, 0x49),
            Slash => p(0x4A, 0x35, 0x4A),
            Less => p(0x61, 0x56, 0x13),
            Kp0 => p(0x70, 0x52, 0x70),
            Kp1 => p(0x69, 0x4F, 0x69),
            Kp2 => p(0x72, 0x50, 0x72),
            Kp3 => p(0x7A, 0x51, 0x7A),
            Kp4 => p(0x6B, 0x4B, 0x6B),
            Kp5 => p(0x73, 0x4C, 0x73),
            Kp6 => p(0x74, 0x4D, 0x74),
            Kp7 => p(0x6C, 0x47, 0x6C),
            Kp8 => p(0x75, 0x48, 0x75),
            Kp9 => p(0x7D, 0x49, 0x7D),
            KpDecimal => p(0x71, 0x53, 0x71),
            KpEnter => e(0x5A, 0x1C, 0x79),
            KpAdd => p(0x79, 0x4E, 0x7C),
            KpSubtract => p(0x7B, 0x4A, 0x84),
            KpMultiply => p(0x7C, 0x37, 0x7E),
            KpDivide => e(0x4A, 0x35, 0x77),
        }
    }

    /// The set-2 bytes a keyboard sends when the key goes down (`pressed`)
    /// or up. Pause sends nothing on release.
    pub fn set2_sequence(self, pressed: bool) -> Vec<u8> {
        match (self.info().set2, pressed) {
            (Set2::Plain(c), true) => vec![c],
            (Set2::Plain(c), false) => vec![0xF0, c],
            (Set2::Ext(c), true) => vec![0xE0, c],
            (Set2::Ext(c), false) => vec![0xE0, 0xF0, c],
            (Set2::PrintScreen, true) => vec![0xE0, 0x12, 0xE0, 0x7C],
            (Set2::PrintScreen, false) => vec![0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12],
            (Set2::Pause, true) => vec![0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77],
            (Set2::Pause, false) => Vec::new(),
        }
    }

    /// The set-1 (XT) bytes, as a keyboard switched to set 1 sends them.
    /// Equal to the set-2 sequence passed through the 8042 translation.
    pub fn set1_sequence(self, pressed: bool) -> Vec<u8> {
        translate_set2(&self.set2_sequence(pressed))
    }

    /// The set-3 bytes: one code on press, `F0 code` on release.
    pub fn set3_sequence(self, pressed: bool) -> Vec<u8> {
        let c = self.info().set3;
        if pressed {
            vec![c]
        } else {
            vec![0xF0, c]
        }
    }

    /// The set-1 (XT) make code and whether it has the E0 prefix, from the
    /// XT tables (for PrintScreen and Pause only the last code of their
    /// longer sequences).
    pub fn set1_make(self) -> (bool, u8) {
        self.info().set1
    }

    /// QEMU `sendkey` name of the key (its `QKeyCode` spelling).
    pub fn qemu_name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }
}

/// The 8042's set-2 to set-1 translation for one byte (without the F0
/// break prefix logic, which belongs to the controller: an F0 is swallowed
/// and the next translated byte gets bit 7 set). Bytes 0x80 and above pass
/// unchanged, except 0x83 (F7) and 0x84 (Alt+SysRq).
pub fn translate_set2_byte(b: u8) -> u8 {
    #[rustfmt::skip]
    const TABLE: [u8; 128] = [
        0xff, 0x43, 0x41, 0x3f, 0x3d, 0x3b, 0x3c, 0x58, 0x64, 0x44, 0x42, 0x40, 0x3e, 0x0f, 0x29, 0x59,
        0x65, 0x38, 0x2a, 0x70, 0x1d, 0x10, 0x02, 0x5a, 0x66, 0x71, 0x2c, 0x1f, 0x1e, 0x11, 0x03, 0x5b,
        0x67, 0x2e, 0x2d, 0x20, 0x12, 0x05, 0x04, 0x5c, 0x68, 0x39, 0x2f, 0x21, 0x14, 0x13, 0x06, 0x5d,
        0x69, 0x31, 0x30, 0x23, 0x22, 0x15, 0x07, 0x5e, 0x6a, 0x72, 0x32, 0x24, 0x16, 0x08, 0x09, 0x5f,
        0x6b, 0x33, 0x25, 0x17, 0x18, 0x0b, 0x0a, 0x60, 0x6c, 0x34, 0x35, 0x26, 0x27, 0x19, 0x0c, 0x61,
        0x6d, 0x73, 0x28, 0x74, 0x1a, 0x0d, 0x62, 0x6e, 0x3a, 0x36, 0x1c, 0x1b, 0x75, 0x2b, 0x63, 0x76,
        0x55, 0x56, 0x77, 0x78, 0x79, 0x7a, 0x0e, 0x7b, 0x7c, 0x4f, 0x7d, 0x4b, 0x47, 0x7e, 0x7f, 0x6f,
        0x52, 0x53, 0x50, 0x4c, 0x4d, 0x48, 0x01, 0x45, 0x57, 0x4e, 0x51, 0x4a, 0x37, 0x49, 0x46, 0x54,
    ];
    match b {
        0x83 => 0x41,
        0x84 => 0x54,
        0x80.. => b,
        _ => TABLE.get(b as usize).copied().unwrap_or(b),
    }
}

/// Translates a whole set-2 sequence to set 1 (F0 prefix -> bit 7).
pub fn translate_set2(seq: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seq.len());
    let mut brk = false;
    for &b in seq {
        if b == 0xF0 {
            brk = true;
            continue;
        }
        let t = translate_set2_byte(b);
        out.push(if brk { t | 0x80 } else { t });
        brk = false;
    }
    out
}

/// QEMU `sendkey` names (QKeyCode) and a few friendly aliases.
const NAMES: &[(&str, KeyCode)] = &[
    ("a", KeyCode::A),
    ("b", KeyCode::B),
    ("c", KeyCode::C),
    ("d", KeyCode::D),
    ("e", KeyCode::E),
    ("f", KeyCode::F),
    ("g", KeyCode::G),
    ("h", KeyCode::H),
    ("i", KeyCode::I),
    ("j", KeyCode::J),
    ("k", KeyCode::K),
    ("l", KeyCode::L),
    ("m", KeyCode::M),
    ("n", KeyCode::N),
    ("o", KeyCode::O),
    ("p", KeyCode::P),
    ("q", KeyCode::Q),
    ("r", KeyCode::R),
    ("s", KeyCode::S),
    ("t", KeyCode::T),
    ("u", KeyCode::U),
    ("v", KeyCode::V),
    ("w", KeyCode::W),
    ("x", KeyCode::X),
    ("y", KeyCode::Y),
    ("z", KeyCode::Z),
    ("0", KeyCode::Digit0),
    ("1", KeyCode::Digit1),
    ("2", KeyCode::Digit2),
    ("3", KeyCode::Digit3),
    ("4", KeyCode::Digit4),
    ("5", KeyCode::Digit5),
    ("6", KeyCode::Digit6),
    ("7", KeyCode::Digit7),
    ("8", KeyCode::Digit8),
    ("9", KeyCode::Digit9),
    ("f1", KeyCode::F1),
    ("f2", KeyCode::F2),
    ("f3", KeyCode::F3),
    ("f4", KeyCode::F4),
    ("f5", KeyCode::F5),
    ("f6", KeyCode::F6),
    ("f7", KeyCode::F7),
    ("f8", KeyCode::F8),
    ("f9", KeyCode::F9),
    ("f10", KeyCode::F10),
    ("f11", KeyCode::F11),
    ("f12", KeyCode::F12),
    ("esc", KeyCode::Escape),
    ("ret", KeyCode::Enter),
    ("backspace", KeyCode::Backspace),
    ("tab", KeyCode::Tab),
    ("spc", KeyCode::Space),
    ("caps_lock", KeyCode::CapsLock),
    ("num_lock", KeyCode::NumLock),
    ("scroll_lock", KeyCode::ScrollLock),
    ("print", KeyCode::PrintScreen),
    ("pause", KeyCode::Pause),
    ("up", KeyCode::Up),
    ("down", KeyCode::Down),
    ("left", KeyCode::Left),
    ("right", KeyCode::Right),
    ("home", KeyCode::Home),
    ("end", KeyCode::End),
    ("pgup", KeyCode::PageUp),
    ("pgdn", KeyCode::PageDown),
    ("insert", KeyCode::Insert),
    ("delete", KeyCode::Delete),
    ("shift", KeyCode::ShiftLeft),
    ("shift_r", KeyCode::ShiftRight),
    ("ctrl", KeyCode::CtrlLeft),
    ("ctrl_r", KeyCode::CtrlRight),
    ("alt", KeyCode::AltLeft),
    ("alt_r", KeyCode::AltRight),
    ("altgr", KeyCode::AltRight),
    ("meta_l", KeyCode::MetaLeft),
    ("meta_r", KeyCode::MetaRight),
    ("menu", KeyCode::Menu),
    ("minus", KeyCode::Minus),
    ("equal", KeyCode::Equal),
    ("bracket_left", KeyCode::BracketLeft),
    ("bracket_right", KeyCode::BracketRight),
    ("backslash", KeyCode::Backslash),
    ("semicolon", KeyCode::Semicolon),
    ("apostrophe", KeyCode::Apostrophe),
    ("grave_accent", KeyCode::Grave),
    ("comma", KeyCode::Comma),
    ("dot", KeyCode::Dot),
    ("slash", KeyCode::Slash),
    ("less", KeyCode::Less),
    ("kp_0", KeyCode::Kp0),
    ("kp_1", KeyCode::Kp1),
    ("kp_2", KeyCode::Kp2),
    ("kp_3", KeyCode::Kp3),
    ("kp_4", KeyCode::Kp4),
    ("kp_5", KeyCode::Kp5),
    ("kp_6", KeyCode::Kp6),
    ("kp_7", KeyCode::Kp7),
    ("kp_8", KeyCode::Kp8),
    ("kp_9", KeyCode::Kp9),
    ("kp_decimal", KeyCode::KpDecimal),
    ("kp_enter", KeyCode::KpEnter),
    ("kp_add", KeyCode::KpAdd),
    ("kp_subtract", KeyCode::KpSubtract),
    ("kp_multiply", KeyCode::KpMultiply),
    ("kp_divide", KeyCode::KpDivide),
    ("asterisk", KeyCode::KpMultiply),
    // Aliases (not QEMU's, but what people type).
    ("escape", KeyCode::Escape),
    ("enter", KeyCode::Enter),
    ("return", KeyCode::Enter),
    ("space", KeyCode::Space),
    ("del", KeyCode::Delete),
    ("ins", KeyCode::Insert),
    ("pageup", KeyCode::PageUp),
    ("pagedown", KeyCode::PageDown),
    ("control", KeyCode::CtrlLeft),
    ("meta", KeyCode::MetaLeft),
    ("super", KeyCode::MetaLeft),
    ("win", KeyCode::MetaLeft),
    ("sysrq", KeyCode::PrintScreen),
    ("printscreen", KeyCode::PrintScreen),
    ("capslock", KeyCode::CapsLock),
];

/// Errors of the host-side key helpers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("empty key combination")]
    Empty,
    #[error("unknown key name {0:?}")]
    UnknownKey(String),
    #[error("no key types {0:?} on a US keyboard")]
    UnmappableChar(char),
}

/// Looks up one key by QEMU `sendkey` name (case-insensitive), or an alias.
pub fn key_by_name(name: &str) -> Option<KeyCode> {
    let lower = name.trim().to_ascii_lowercase();
    NAMES.iter().find(|(n, _)| *n == lower).map(|(_, k)| *k)
}

/// Parses a QEMU `sendkey`-style combination such as `ctrl-alt-delete` or
/// `shift-a` into keys, in press order (release them in reverse). `-` is
/// always the separator; the minus key is written `minus`.
pub fn parse_key_combo(combo: &str) -> Result<Vec<KeyCode>, KeyError> {
    let combo = combo.trim();
    if combo.is_empty() {
        return Err(KeyError::Empty);
    }
    combo
        .split('-')
        .map(|part| key_by_name(part).ok_or_else(|| KeyError::UnknownKey(part.to_string())))
        .collect()
}

/// The keys that type `text` on a US layout: each entry is a key and
/// whether Shift must be held for it. `\n` is Enter, `\t` Tab, `\x08`
/// Backspace, `\x1b` Escape.
pub fn keys_for_text(text: &str) -> Result<Vec<(KeyCode, bool)>, KeyError> {
    text.chars().map(key_for_char).collect()
}

fn key_for_char(c: char) -> Result<(KeyCode, bool), KeyError> {
    use KeyCode::*;
    const LETTERS: [KeyCode; 26] = [
        A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q, R, S, T, U, V, W, X, Y, Z,
    ];
    const DIGITS: [KeyCode; 10] = [
        Digit0, Digit1, Digit2, Digit3, Digit4, Digit5, Digit6, Digit7, Digit8, Digit9,
    ];
    let letter = |c: char, shift| {
        let i = (c.to_ascii_lowercase() as u8).wrapping_sub(b'a') as usize;
        LETTERS.get(i).map(|k| (*k, shift))
    };
    let digit = |c: char| {
        let i = (c as u8).wrapping_sub(b'0') as usize;
        DIGITS.get(i).map(|k| (*k, false))
    };
    let r = match c {
        'a'..='z' => letter(c, false),
        'A'..='Z' => letter(c, true),
        '0'..='9' => digit(c),
        ' ' => Some((Space, false)),
        '\n' | '\r' => Some((Enter, false)),
        '\t' => Some((Tab, false)),
        '\x08' => Some((Backspace, false)),
        '\x1b' => Some((Escape, false)),
        '-' => Some((Minus, false)),
        '_' => Some((Minus, true)),
        '=' => Some((Equal, false)),
        '+' => Some((Equal, true)),
        '[' => Some((BracketLeft, false)),
        '{' => Some((BracketLeft, true)),
        ']' => Some((BracketRight, false)),
        '}' => Some((BracketRight, true)),
        '\\' => Some((Backslash, false)),
        '|' => Some((Backslash, true)),
        ';' => Some((Semicolon, false)),
        ':' => Some((Semicolon, true)),
        '\'' => Some((Apostrophe, false)),
        '"' => Some((Apostrophe, true)),
        '`' => Some((Grave, false)),
        '~' => Some((Grave, true)),
        ',' => Some((Comma, false)),
        '<' => Some((Comma, true)),
        '.' => Some((Dot, false)),
        '>' => Some((Dot, true)),
        '/' => Some((Slash, false)),
        '?' => Some((Slash, true)),
        '!' => Some((Digit1, true)),
        '@' => Some((Digit2, true)),
        '#' => Some((Digit3, true)),
        '$' => Some((Digit4, true)),
        '%' => Some((Digit5, true)),
        '^' => Some((Digit6, true)),
        '&' => Some((Digit7, true)),
        '*' => Some((Digit8, true)),
        '(' => Some((Digit9, true)),
        ')' => Some((Digit0, true)),
        _ => None,
    };
    r.ok_or(KeyError::UnmappableChar(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_key_once_with_a_name() {
        let mut seen = std::collections::HashSet::new();
        for k in KeyCode::ALL {
            assert!(seen.insert(*k), "{k:?} twice");
            assert!(!k.qemu_name().is_empty(), "{k:?} has no sendkey name");
            assert_eq!(key_by_name(k.qemu_name()), Some(*k));
        }
        // 105 variants in the enum; ALL must hold each.
        assert_eq!(seen.len(), 105);
    }

    #[test]
    fn set2_codes_are_unique() {
        let mut seen = std::collections::HashMap::new();
        for k in KeyCode::ALL {
            let seq = k.set2_sequence(true);
            if let Some(other) = seen.insert(seq.clone(), *k) {
                panic!("{k:?} and {other:?} share {seq:02x?}");
            }
        }
    }

    #[test]
    fn set3_codes_are_unique() {
        let mut seen = std::collections::HashMap::new();
        for k in KeyCode::ALL {
            let seq = k.set3_sequence(true);
            if let Some(other) = seen.insert(seq.clone(), *k) {
                panic!("{k:?} and {other:?} share {seq:02x?}");
            }
        }
    }

    #[test]
    fn translation_matches_xt_codes_for_every_key() {
        for k in KeyCode::ALL {
            if matches!(k, KeyCode::PrintScreen | KeyCode::Pause) {
                continue;
            }
            let (ext, code) = k.set1_make();
            let want_make: Vec<u8> = if ext { vec![0xE0, code] } else { vec![code] };
            let want_break: Vec<u8> = if ext {
                vec![0xE0, code | 0x80]
            } else {
                vec![code | 0x80]
            };
            assert_eq!(k.set1_sequence(true), want_make, "{k:?} make");
            assert_eq!(k.set1_sequence(false), want_break, "{k:?} break");
        }
    }

    #[test]
    fn special_sequences() {
        assert_eq!(KeyCode::Up.set2_sequence(true), vec![0xE0, 0x75]);
        assert_eq!(KeyCode::Up.set2_sequence(false), vec![0xE0, 0xF0, 0x75]);
        assert_eq!(KeyCode::Up.set1_sequence(true), vec![0xE0, 0x48]);
        assert_eq!(KeyCode::Up.set1_sequence(false), vec![0xE0, 0xC8]);
        assert_eq!(
            KeyCode::PrintScreen.set1_sequence(true),
            vec![0xE0, 0x2A, 0xE0, 0x37]
        );
        assert_eq!(
            KeyCode::PrintScreen.set1_sequence(false),
            vec![0xE0, 0xB7, 0xE0, 0xAA]
        );
        assert_eq!(
            KeyCode::Pause.set1_sequence(true),
            vec![0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]
        );
        assert!(KeyCode::Pause.set2_sequence(false).is_empty());
        assert_eq!(KeyCode::A.set3_sequence(false), vec![0xF0, 0x1C]);
        assert_eq!(KeyCode::F7.set2_sequence(true), vec![0x83]);
        assert_eq!(KeyCode::F7.set1_sequence(true), vec![0x41]);
    }

    #[test]
    fn combos() {
        assert_eq!(
            parse_key_combo("ctrl-alt-delete").unwrap(),
            vec![KeyCode::CtrlLeft, KeyCode::AltLeft, KeyCode::Delete]
        );
        assert_eq!(parse_key_combo("RET").unwrap(), vec![KeyCode::Enter]);
        assert_eq!(
            parse_key_combo("shift-f10").unwrap(),
            vec![KeyCode::ShiftLeft, KeyCode::F10]
        );
        assert_eq!(parse_key_combo(""), Err(KeyError::Empty));
        assert_eq!(
            parse_key_combo("ctrl-bogus"),
            Err(KeyError::UnknownKey("bogus".into()))
        );
        assert_eq!(
            parse_key_combo("ctrl--"),
            Err(KeyError::UnknownKey("".into()))
        );
    }

    #[test]
    fn text() {
        assert_eq!(
            keys_for_text("lS\n").unwrap(),
            vec![
                (KeyCode::L, false),
                (KeyCode::S, true),
                (KeyCode::Enter, false)
            ]
        );
        assert_eq!(
            keys_for_text("a_1!?").unwrap(),
            vec![
                (KeyCode::A, false),
                (KeyCode::Minus, true),
                (KeyCode::Digit1, false),
                (KeyCode::Digit1, true),
                (KeyCode::Slash, true)
            ]
        );
        assert_eq!(keys_for_text("é"), Err(KeyError::UnmappableChar('é')));
        assert!(keys_for_text("").unwrap().is_empty());
    }
}
