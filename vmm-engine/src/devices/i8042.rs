//! The i8042 PS/2 controller ("keyboard controller") with a PS/2 MF2
//! keyboard on its first port and a PS/2 mouse (IntelliMouse-capable) on
//! its auxiliary port, as on a PC: data port 0x60, status/command port
//! 0x64, IRQ 1 for keyboard data and IRQ 12 for mouse data.
//!
//! Model (after QEMU's pckbd.c/ps2.c and the 8042 datasheets):
//! - The controller has one output buffer. Bytes come from three queues,
//!   in this priority: the controller's own replies (0x20, 0xAA, 0xD2,
//!   0xD3, ...), the keyboard, the mouse. A device's bytes are only taken
//!   while its interface is enabled in the command byte; controller replies
//!   always are. Reading port 0x60 empties the buffer and loads the next
//!   byte; reading it empty returns the last byte again (as QEMU does;
//!   GRUB's at_keyboard relies on it). A data byte written to the keyboard
//!   re-enables the keyboard interface, as on a real 8042 and QEMU.
//! - Host events are bounded like a real keyboard's buffer: at most
//!   [`EVENT_LIMIT`] bytes wait (more would make Linux's probe fail); a key
//!   press that does not fit is dropped and reported as such. A release is
//!   queued exactly when its press was, even past the limit, so no key is
//!   left stuck down and no stray break is sent. Mouse motion that does
//!   not fit accumulates and is sent when there is room.
//! - IRQ lines are levels: IRQ 1 is high while the buffer holds a keyboard
//!   (or controller) byte and the command byte enables keyboard interrupts,
//!   IRQ 12 likewise for a mouse byte. Each read lowers the line, so the
//!   next byte makes a new rising edge for the edge-triggered PIC.
//! - The keyboard generates scancode set 2; with the command byte's XLATE
//!   bit the controller translates every keyboard byte to set 1, F0 break
//!   prefixes included (so an identify reply AB 83 reads AB 41, like a
//!   real 8042 and QEMU). Sets 1 and 3 can also be selected in the keyboard.
//! - Output port: bit 0 low resets the machine (0xD1, or pulse commands
//!   0xF0-0xFF with bit 0 clear, 0xFE being the usual one), bit 1 is A20,
//!   which is recorded but has no effect (KVM has no A20 gate).
//!
//! Missing: typematic repeat (the host repeats keys itself), keyboard lock,
//! the controller's password commands, mouse wrap mode beyond echo,
//! timing (everything answers instantly; IBF is never set).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::keys::{translate_set2_byte, KeyCode};
use super::{BusDevice, IrqLine, PowerEvent, PowerHandle};

/// Status register (port 0x64 read) bits.
pub mod status {
    /// Output buffer full: a byte waits at port 0x60.
    pub const OBF: u8 = 0x01;
    /// Input buffer full (never set: writes are handled at once).
    pub const IBF: u8 = 0x02;
    /// System flag: mirrors command byte bit 2, set by a passed self test.
    pub const SYS: u8 = 0x04;
    /// The last write went to port 0x64 (command), not 0x60 (data).
    pub const CMD: u8 = 0x08;
    /// Keyboard not inhibited by the keylock.
    pub const UNLOCKED: u8 = 0x10;
    /// The byte in the output buffer comes from the auxiliary (mouse) port.
    pub const AUXB: u8 = 0x20;
}

/// Command byte ("controller configuration byte") bits.
pub mod ctr {
    /// Raise IRQ 1 for keyboard data.
    pub const KBD_INT: u8 = 0x01;
    /// Raise IRQ 12 for mouse data.
    pub const AUX_INT: u8 = 0x02;
    /// System flag.
    pub const SYS: u8 = 0x04;
    /// Keyboard interface disabled (clock held low).
    pub const KBD_DIS: u8 = 0x10;
    /// Auxiliary interface disabled.
    pub const AUX_DIS: u8 = 0x20;
    /// Translate keyboard set 2 to set 1.
    pub const XLATE: u8 = 0x40;
}

/// Output port bits (0xD0/0xD1).
pub mod outport {
    /// Low: the CPU is held in reset.
    pub const RESET: u8 = 0x01;
    /// A20 gate.
    pub const A20: u8 = 0x02;
    /// Mirrors OBF for the keyboard.
    pub const KBD_OBF: u8 = 0x10;
    /// Mirrors OBF for the mouse.
    pub const AUX_OBF: u8 = 0x20;
}

/// Mouse buttons as they appear in a PS/2 packet's first byte (and, for
/// side/extra, in an IntelliMouse Explorer fourth byte).
pub mod buttons {
    pub const LEFT: u8 = 0x01;
    pub const RIGHT: u8 = 0x02;
    pub const MIDDLE: u8 = 0x04;
    pub const SIDE: u8 = 0x08;
    pub const EXTRA: u8 = 0x10;
}

const ACK: u8 = 0xFA;
const RESEND: u8 = 0xFE;
const BAT_OK: u8 = 0xAA;

/// Hard bound of each device's queue (command replies; they never come
/// near it in practice).
pub const QUEUE_CAPACITY: usize = 256;
/// Most bytes of host events (keys, mouse packets) that may wait in a
/// device's queue plus the controller's output buffer, like a real
/// keyboard's 16-byte buffer. Linux's i8042_flush gives up ("No controller
/// found") when more than 16 bytes are pending at probe time, so this must
/// not grow. An event that does not fit as a whole is dropped; host
/// automation paces itself with [`I8042::key_backlog`].
pub const EVENT_LIMIT: usize = 16;

/// A bounded byte queue.
#[derive(Debug, Default)]
struct ByteQueue {
    q: VecDeque<u8>,
}

impl ByteQueue {
    fn len(&self) -> usize {
        self.q.len()
    }
    fn clear(&mut self) {
        self.q.clear();
    }
    fn pop(&mut self) -> Option<u8> {
        self.q.pop_front()
    }
    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    /// A command reply: drops the byte only if the queue is completely full.
    fn push_reply(&mut self, b: u8) {
        if self.q.len() < QUEUE_CAPACITY {
            self.q.push_back(b);
        }
    }
    /// A host event: all of `bytes` or nothing, within `room` bytes.
    fn push_event(&mut self, bytes: &[u8], room: usize) -> bool {
        if self.q.len() + bytes.len() > room {
            return false;
        }
        self.q.extend(bytes.iter().copied());
        true
    }
}

/// The PS/2 keyboard (an MF2 keyboard, ID AB 83).
#[derive(Debug)]
struct Keyboard {
    queue: ByteQueue,
    /// A command waiting for its parameter byte (0xED, 0xF0, 0xF3).
    pending: Option<u8>,
    scanning: bool,
    /// 1, 2 or 3.
    set: u8,
    leds: u8,
    typematic: u8,
    last_sent: u8,
    /// Keys whose press reached the queue and whose release has not.
    down: Vec<KeyCode>,
}

impl Keyboard {
    fn new() -> Self {
        Self {
            queue: ByteQueue::default(),
            pending: None,
            scanning: true,
            set: 2,
            leds: 0,
            typematic: 0x2B,
            last_sent: 0,
            down: Vec::new(),
        }
    }

    fn defaults(&mut self) {
        self.set = 2;
        self.leds = 0;
        self.typematic = 0x2B;
    }

    fn reply(&mut self, b: u8) {
        self.last_sent = b;
        self.queue.push_reply(b);
    }

    /// A byte from the guest (through port 0x60).
    fn write(&mut self, b: u8) {
        if let Some(cmd) = self.pending.take() {
            match cmd {
                0xED => {
                    self.leds = b & 0x07;
                    self.reply(ACK);
                }
                0xF3 => {
                    self.typematic = b & 0x7F;
                    self.reply(ACK);
                }
                0xF0 => {
                    if b == 0 {
                        let set = self.set;
                        self.reply(ACK);
                        self.reply(set);
                    } else if (1..=3).contains(&b) {
                        self.set = b;
                        self.reply(ACK);
                    } else {
                        self.reply(RESEND);
                    }
                }
                _ => {}
            }
            return;
        }
        match b {
            0xED | 0xF3 | 0xF0 => {
                self.pending = Some(b);
                self.reply(ACK);
            }
            0xEE => self.reply(0xEE),
            0xF2 => {
                self.reply(ACK);
                self.reply(0xAB);
                self.reply(0x83);
            }
            0xF4 => {
                self.scanning = true;
                self.reply(ACK);
            }
            0xF5 => {
                self.defaults();
                self.scanning = false;
                self.reply(ACK);
            }
            0xF6 => {
                self.defaults();
                self.scanning = true;
                self.reply(ACK);
            }
            // Set-3 key type commands: accepted, no effect.
            0xF7..=0xFD => self.reply(ACK),
            0xFE => {
                let last = self.last_sent;
                self.queue.push_reply(last);
            }
            0xFF => {
                self.queue.clear();
                self.defaults();
                self.scanning = true;
                self.reply(ACK);
                self.reply(BAT_OK);
            }
            _ => {
                log::debug!("i8042: unknown keyboard command {b:#04x}");
                self.reply(RESEND);
            }
        }
    }

    /// A press takes at most `room` bytes (the event limit). A release is
    /// sent only for a key whose press was sent, and then always (up to the
    /// hard capacity), so a full queue never leaves a key stuck down.
    fn key_event(&mut self, key: KeyCode, pressed: bool, room: usize) -> bool {
        let was_down = if pressed {
            false
        } else {
            let i = self.down.iter().position(|k| *k == key);
            i.map(|i| self.down.swap_remove(i)).is_some()
        };
        if !self.scanning || (!pressed && !was_down) {
            return false;
        }
        let room = if pressed { room } else { QUEUE_CAPACITY };
        let seq = match self.set {
            1 => key.set1_sequence(pressed),
            3 => key.set3_sequence(pressed),
            _ => key.set2_sequence(pressed),
        };
        let ok = seq.is_empty() || self.queue.push_event(&seq, room);
        if !ok {
            log::debug!("i8042: keyboard queue full, {key:?} dropped");
        } else if pressed && !self.down.contains(&key) {
            self.down.push(key);
        }
        ok
    }
}

/// The PS/2 mouse: a standard 3-button mouse that becomes an IntelliMouse
/// (ID 3, wheel) after the sample-rate knock 200/100/80 and an
/// IntelliMouse Explorer (ID 4, wheel + 2 buttons) after 200/200/80.
#[derive(Debug)]
struct Mouse {
    queue: ByteQueue,
    pending: Option<u8>,
    enabled: bool,
    remote: bool,
    scale21: bool,
    wrap: bool,
    resolution: u8,
    sample_rate: u8,
    id: u8,
    /// Last three sample rates set, for the IntelliMouse knock.
    knock: [u8; 3],
    dx: i32,
    dy: i32,
    dz: i32,
    buttons: u8,
    /// Movement or buttons not yet reported.
    dirty: bool,
    last_sent: u8,
}

impl Mouse {
    fn new() -> Self {
        Self {
            queue: ByteQueue::default(),
            pending: None,
            enabled: false,
            remote: false,
            scale21: false,
            wrap: false,
            resolution: 2,
            sample_rate: 100,
            id: 0,
            knock: [0; 3],
            dx: 0,
            dy: 0,
            dz: 0,
            buttons: 0,
            dirty: false,
            last_sent: 0,
        }
    }

    fn defaults(&mut self) {
        self.enabled = false;
        self.remote = false;
        self.scale21 = false;
        self.resolution = 2;
        self.sample_rate = 100;
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
        self.dirty = false;
    }

    fn reply(&mut self, b: u8) {
        self.last_sent = b;
        self.queue.push_reply(b);
    }

    fn status_byte(&self) -> u8 {
        let mut s = 0;
        if self.remote {
            s |= 0x40;
        }
        if self.enabled {
            s |= 0x20;
        }
        if self.scale21 {
            s |= 0x10;
        }
        if self.buttons & buttons::LEFT != 0 {
            s |= 0x04;
        }
        if self.buttons & buttons::MIDDLE != 0 {
            s |= 0x02;
        }
        if self.buttons & buttons::RIGHT != 0 {
            s |= 0x01;
        }
        s
    }

    fn packet_len(&self) -> usize {
        if self.id == 0 {
            3
        } else {
            4
        }
    }

    fn write(&mut self, b: u8) {
        if let Some(cmd) = self.pending.take() {
            match cmd {
                0xE8 => {
                    self.resolution = b & 0x03;
                    self.reply(ACK);
                }
                0xF3 => {
                    self.sample_rate = b;
                    self.knock = [self.knock[1], self.knock[2], b];
                    match self.knock {
                        [200, 100, 80] if self.id == 0 => self.id = 3,
                        [200, 200, 80] if self.id == 3 => self.id = 4,
                        _ => {}
                    }
                    self.reply(ACK);
                }
                _ => {}
            }
            return;
        }
        if self.wrap && b != 0xEC && b != 0xFF {
            self.reply(b);
            return;
        }
        match b {
            0xE6 => {
                self.scale21 = false;
                self.reply(ACK);
            }
            0xE7 => {
                self.scale21 = true;
                self.reply(ACK);
            }
            0xE8 | 0xF3 => {
                self.pending = Some(b);
                self.reply(ACK);
            }
            0xE9 => {
                let s = self.status_byte();
                let (r, rate) = (self.resolution, self.sample_rate);
                self.reply(ACK);
                self.reply(s);
                self.reply(r);
                self.reply(rate);
            }
            0xEA => {
                self.remote = false;
                self.reply(ACK);
            }
            0xEB => {
                self.reply(ACK);
                let p = self.take_packet(false);
                for byte in p {
                    self.queue.push_reply(byte);
                }
            }
            0xEC => {
                self.wrap = false;
                self.reply(ACK);
            }
            0xEE => {
                self.wrap = true;
                self.reply(ACK);
            }
            0xF0 => {
                self.remote = true;
                self.reply(ACK);
            }
            0xF2 => {
                let id = self.id;
                self.reply(ACK);
                self.reply(id);
            }
            0xF4 => {
                self.enabled = true;
                self.reply(ACK);
            }
            0xF5 => {
                self.enabled = false;
                self.reply(ACK);
            }
            0xF6 => {
                self.defaults();
                self.reply(ACK);
            }
            0xFE => {
                let last = self.last_sent;
                self.queue.push_reply(last);
            }
            0xFF => {
                self.queue.clear();
                self.defaults();
                self.wrap = false;
                self.id = 0;
                self.knock = [0; 3];
                self.reply(ACK);
                self.reply(BAT_OK);
                self.reply(0x00);
            }
            _ => {
                log::debug!("i8042: unknown mouse command {b:#04x}");
                self.reply(RESEND);
            }
        }
    }

    /// 2:1 scaling of one delta (stream mode only).
    fn scale(d: i32) -> i32 {
        match d.abs() {
            0 => 0,
            1 | 2 => d.signum(),
            3 => 3 * d.signum(),
            4 => 6 * d.signum(),
            5 => 9 * d.signum(),
            _ => d.saturating_mul(2),
        }
    }

    /// Builds a packet from the accumulated motion and clears it. Deltas
    /// beyond the 9-bit range saturate and set the overflow bits.
    fn take_packet(&mut self, stream: bool) -> Vec<u8> {
        let (mut dx, mut dy) = (self.dx, self.dy);
        if stream && self.scale21 {
            dx = Self::scale(dx);
            dy = Self::scale(dy);
        }
        let x_ovf = !(-256..=255).contains(&dx);
        let y_ovf = !(-256..=255).contains(&dy);
        let dx = dx.clamp(-256, 255);
        let dy = dy.clamp(-256, 255);
        let mut b0 = 0x08 | (self.buttons & 0x07);
        if dx < 0 {
            b0 |= 0x10;
        }
        if dy < 0 {
            b0 |= 0x20;
        }
        if x_ovf {
            b0 |= 0x40;
        }
        if y_ovf {
            b0 |= 0x80;
        }
        let mut p = vec![b0, dx as u8, dy as u8];
        match self.id {
            3 => p.push(self.dz.clamp(-128, 127) as i8 as u8),
            4 => {
                let z = (self.dz.clamp(-8, 7) as u8) & 0x0F;
                p.push(z | ((self.buttons & 0x18) << 1));
            }
            _ => {}
        }
        self.dx = 0;
        self.dy = 0;
        self.dz = 0;
        self.dirty = false;
        p
    }

    /// In stream mode, sends the pending motion if a whole packet fits in
    /// `room`; otherwise it keeps accumulating.
    fn flush(&mut self, room: usize) {
        if !self.enabled || self.remote || !self.dirty || self.pending.is_some() {
            return;
        }
        if self.queue.len() + self.packet_len() > room {
            return;
        }
        let p = self.take_packet(true);
        self.queue.push_event(&p, room);
    }

    fn movement(&mut self, dx: i32, dy: i32, dz: i32, btns: u8, room: usize) {
        if !self.enabled {
            return;
        }
        self.dx = self.dx.saturating_add(dx);
        self.dy = self.dy.saturating_add(dy);
        self.dz = self.dz.saturating_add(dz);
        self.buttons = btns & 0x1F;
        self.dirty = true;
        self.flush(room);
    }
}

/// Where the byte in the output buffer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Kbd,
    Aux,
}

/// The i8042 controller with its keyboard and mouse.
pub struct I8042 {
    /// Controller RAM; byte 0 is the command byte.
    ram: [u8; 32],
    /// Status bits other than OBF/AUXB.
    status: u8,
    outport: u8,
    /// A command (0x60-0x7F, 0xD1-0xD4) waiting for its data byte.
    pending: Option<u8>,
    /// The output buffer.
    out: Option<(u8, Source)>,
    last_out: u8,
    /// Controller replies (not translated), each tagged with its source.
    ctrl_queue: VecDeque<(u8, Source)>,
    /// The translator saw F0 and sets bit 7 of the next byte.
    xlate_break: bool,
    kbd: Keyboard,
    mouse: Mouse,
    kbd_irq: Arc<dyn IrqLine>,
    aux_irq: Arc<dyn IrqLine>,
    kbd_level: bool,
    aux_level: bool,
    power: PowerHandle,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042")
            .field("command_byte", &self.ram[0])
            .field("status", &self.read_status())
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

impl I8042 {
    /// Makes the controller; put it on the port bus with [`I8042Port`].
    pub fn new(
        kbd_irq: Arc<dyn IrqLine>,
        aux_irq: Arc<dyn IrqLine>,
        power: PowerHandle,
    ) -> Arc<Mutex<I8042>> {
        Arc::new(Mutex::new(Self::new_unshared(kbd_irq, aux_irq, power)))
    }

    /// The controller as a plain value (tests, or a caller with its own lock).
    pub fn new_unshared(
        kbd_irq: Arc<dyn IrqLine>,
        aux_irq: Arc<dyn IrqLine>,
        power: PowerHandle,
    ) -> I8042 {
        let mut s = I8042 {
            ram: [0; 32],
            status: 0,
            outport: 0,
            pending: None,
            out: None,
            last_out: 0,
            ctrl_queue: VecDeque::new(),
            xlate_break: false,
            kbd: Keyboard::new(),
            mouse: Mouse::new(),
            kbd_irq,
            aux_irq,
            kbd_level: false,
            aux_level: false,
            power,
        };
        s.reset();
        s
    }

    /// Machine reset: controller, keyboard and mouse back to power-on state.
    pub fn reset(&mut self) {
        self.ram = [0; 32];
        self.ram[0] = ctr::KBD_INT | ctr::AUX_INT;
        self.status = status::CMD | status::UNLOCKED;
        self.outport = outport::RESET | outport::A20 | 0xCC;
        self.pending = None;
        self.out = None;
        self.last_out = 0;
        self.ctrl_queue.clear();
        self.xlate_break = false;
        self.kbd = Keyboard::new();
        self.mouse = Mouse::new();
        self.update();
    }

    /// The command byte.
    pub fn command_byte(&self) -> u8 {
        self.ram[0]
    }

    /// Whether the guest has the A20 gate open (output port bit 1).
    pub fn a20(&self) -> bool {
        self.outport & outport::A20 != 0
    }

    /// Whether an interrupt is asserted (a byte waits in the output buffer
    /// and its IRQ is enabled). On PVM hosts the VMM may kick the vCPU
    /// while this holds, to get the interrupt delivered (docs/KEYBOARD.md).
    pub fn irq_asserted(&self) -> bool {
        self.kbd_level || self.aux_level
    }

    /// The keyboard LEDs last set by the guest (bit 0 scroll, 1 num, 2 caps).
    pub fn leds(&self) -> u8 {
        self.kbd.leds
    }

    /// A host key press or release. Returns false if it was dropped
    /// (scanning disabled by the guest, or the queue full).
    pub fn key_event(&mut self, key: KeyCode, pressed: bool) -> bool {
        let room = self.event_room();
        let ok = self.kbd.key_event(key, pressed, room);
        self.update();
        ok
    }

    /// Presses `keys` in order, then releases them in reverse (a combo such
    /// as ctrl-alt-delete from [`super::keys::parse_key_combo`]). Returns
    /// false if any event was dropped.
    pub fn key_combo(&mut self, keys: &[KeyCode]) -> bool {
        let mut ok = true;
        for k in keys {
            ok &= self.key_event(*k, true);
        }
        for k in keys.iter().rev() {
            ok &= self.key_event(*k, false);
        }
        ok
    }

    /// Types keys as returned by [`super::keys::keys_for_text`]: each key is
    /// pressed and released, inside Shift when its flag says so. Returns
    /// false if any event was dropped.
    pub fn type_keys(&mut self, keys: &[(KeyCode, bool)]) -> bool {
        let mut ok = true;
        for &(k, shift) in keys {
            if shift {
                ok &= self.key_combo(&[KeyCode::ShiftLeft, k]);
            } else {
                ok &= self.key_combo(&[k]);
            }
        }
        ok
    }

    /// Host mouse motion in screen terms: `dx` grows to the right, `dy`
    /// downwards (the device turns it into PS/2's upward Y), `dz` is the
    /// wheel (positive = towards the user, as PS/2 reports it), `btns` a
    /// mask of [`buttons`]. Ignored while the guest has not enabled the
    /// mouse.
    pub fn mouse_move(&mut self, dx: i32, dy: i32, dz: i32, btns: u8) {
        let room = self.event_room();
        self.mouse.movement(dx, dy.saturating_neg(), dz, btns, room);
        self.update();
    }

    /// Room for host event bytes: the output buffer counts as one.
    fn event_room(&self) -> usize {
        EVENT_LIMIT - usize::from(self.out.is_some())
    }

    /// Bytes of keyboard data the guest has not read yet (queue plus output
    /// buffer). Host automation that types text waits for this to fall
    /// before sending more; [`EVENT_LIMIT`] bytes fit at most.
    pub fn key_backlog(&self) -> usize {
        self.kbd.queue.len() + usize::from(matches!(self.out, Some((_, Source::Kbd))))
    }

    fn read_status(&self) -> u8 {
        let mut s = self.status;
        match self.out {
            Some((_, Source::Kbd)) => s |= status::OBF,
            Some((_, Source::Aux)) => s |= status::OBF | status::AUXB,
            None => {}
        }
        s
    }

    fn ctrl_reply(&mut self, b: u8) {
        if self.ctrl_queue.len() < QUEUE_CAPACITY {
            self.ctrl_queue.push_back((b, Source::Kbd));
        }
    }

    /// Loads the output buffer if it is empty and drives the IRQ lines.
    fn update(&mut self) {
        while self.out.is_none() {
            if let Some(x) = self.ctrl_queue.pop_front() {
                self.out = Some(x);
                break;
            }
            let cb = self.ram[0];
            if cb & ctr::KBD_DIS == 0 {
                if let Some(b) = self.kbd.queue.pop() {
                    if cb & ctr::XLATE != 0 {
                        if b == 0xF0 {
                            self.xlate_break = true;
                            continue;
                        }
                        let mut t = translate_set2_byte(b);
                        if self.xlate_break {
                            t |= 0x80;
                            self.xlate_break = false;
                        }
                        self.out = Some((t, Source::Kbd));
                    } else {
                        self.out = Some((b, Source::Kbd));
                    }
                    break;
                }
            }
            if cb & ctr::AUX_DIS == 0 {
                if self.mouse.queue.is_empty() {
                    self.mouse.flush(EVENT_LIMIT);
                }
                if let Some(b) = self.mouse.queue.pop() {
                    self.out = Some((b, Source::Aux));
                    break;
                }
            }
            break;
        }
        let cb = self.ram[0];
        let kbd = matches!(self.out, Some((_, Source::Kbd))) && cb & ctr::KBD_INT != 0;
        let aux = matches!(self.out, Some((_, Source::Aux))) && cb & ctr::AUX_INT != 0;
        if kbd != self.kbd_level {
            self.kbd_level = kbd;
            self.kbd_irq.set_level(kbd);
        }
        if aux != self.aux_level {
            self.aux_level = aux;
            self.aux_irq.set_level(aux);
        }
    }

    fn read_data(&mut self) -> u8 {
        let v = match self.out.take() {
            Some((b, _)) => {
                self.last_out = b;
                b
            }
            None => self.last_out,
        };
        // Lower the line first so that the next byte is a fresh edge.
        if self.kbd_level {
            self.kbd_level = false;
            self.kbd_irq.set_level(false);
        }
        if self.aux_level {
            self.aux_level = false;
            self.aux_irq.set_level(false);
        }
        self.update();
        v
    }

    fn write_outport(&mut self, v: u8) {
        self.outport = v;
        if v & outport::RESET == 0 {
            log::info!("i8042: output port reset line low, resetting");
            self.power.request(PowerEvent::Reset);
        }
    }

    fn write_command_byte(&mut self, v: u8) {
        let was_xlate = self.ram[0] & ctr::XLATE != 0;
        self.ram[0] = v;
        if v & ctr::SYS != 0 {
            self.status |= status::SYS;
        } else {
            self.status &= !status::SYS;
        }
        if !was_xlate {
            self.xlate_break = false;
        }
    }

    fn write_data(&mut self, v: u8) {
        self.status &= !status::CMD;
        match self.pending.take() {
            Some(c @ 0x60..=0x7F) => {
                let i = usize::from(c - 0x60);
                if i == 0 {
                    self.write_command_byte(v);
                } else if let Some(r) = self.ram.get_mut(i) {
                    *r = v;
                }
            }
            Some(0xD1) => self.write_outport(v),
            Some(0xD2) => self.ctrl_reply(v),
            Some(0xD3) => {
                if self.ctrl_queue.len() < QUEUE_CAPACITY {
                    self.ctrl_queue.push_back((v, Source::Aux));
                }
            }
            Some(0xD4) => self.mouse.write(v),
            _ => {
                // To the keyboard; this also enables its interface, as on a
                // real 8042.
                self.ram[0] &= !ctr::KBD_DIS;
                self.kbd.write(v);
            }
        }
        self.update();
    }

    fn write_command(&mut self, cmd: u8) {
        self.status |= status::CMD;
        // A new command cancels a data byte still expected.
        self.pending = None;
        match cmd {
            0x20..=0x3F => {
                let b = self.ram.get(usize::from(cmd - 0x20)).copied().unwrap_or(0);
                self.ctrl_reply(b);
            }
            0x60..=0x7F | 0xD1..=0xD4 => self.pending = Some(cmd),
            0xA7 => self.ram[0] |= ctr::AUX_DIS,
            0xA8 => self.ram[0] &= !ctr::AUX_DIS,
            0xA9 | 0xAB => self.ctrl_reply(0x00),
            0xAA => {
                self.status |= status::SYS;
                self.ram[0] |= ctr::SYS;
                self.ctrl_reply(0x55);
            }
            0xAD => self.ram[0] |= ctr::KBD_DIS,
            0xAE => self.ram[0] &= !ctr::KBD_DIS,
            // Input port: keyboard not inhibited.
            0xC0 => self.ctrl_reply(0x80),
            0xD0 => {
                let mut v = self.outport & !(outport::KBD_OBF | outport::AUX_OBF);
                match self.out {
                    Some((_, Source::Kbd)) => v |= outport::KBD_OBF,
                    Some((_, Source::Aux)) => v |= outport::AUX_OBF,
                    None => {}
                }
                self.ctrl_reply(v);
            }
            0xDD => self.outport &= !outport::A20,
            0xDF => self.outport |= outport::A20,
            // Test inputs: clock and data lines low.
            0xE0 => self.ctrl_reply(0x00),
            0xF0..=0xFF => {
                if cmd & 0x01 == 0 {
                    log::info!("i8042: reset pulse (command {cmd:#04x})");
                    self.power.request(PowerEvent::Reset);
                }
            }
            _ => log::debug!("i8042: unknown controller command {cmd:#04x}"),
        }
        self.update();
    }
}

/// Port offsets when [`I8042`] itself is used as a bus device spanning
/// 0x60..=0x64: offset 0 is data, offset 4 status/command.
impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.read_data(),
            4 => self.read_status(),
            _ => 0xFF,
        };
        for (i, b) in data.iter_mut().enumerate() {
            *b = if i == 0 { v } else { 0xFF };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else {
            return;
        };
        match offset {
            0 => self.write_data(v),
            4 => self.write_command(v),
            _ => {}
        }
    }
}

/// One of the i8042's two ports, to put on the port bus:
///
/// ```ignore
/// let i8042 = I8042::new(irq1, irq12, power);
/// pio.insert(Arc::new(Mutex::new(I8042Port::data(&i8042))), 0x60, 1)?;
/// pio.insert(Arc::new(Mutex::new(I8042Port::command(&i8042))), 0x64, 1)?;
/// ```
pub struct I8042Port {
    dev: Arc<Mutex<I8042>>,
    offset: u64,
}

impl I8042Port {
    /// Port 0x60: data.
    pub fn data(dev: &Arc<Mutex<I8042>>) -> Self {
        Self {
            dev: dev.clone(),
            offset: 0,
        }
    }
    /// Port 0x64: status (read) and command (write).
    pub fn command(dev: &Arc<Mutex<I8042>>) -> Self {
        Self {
            dev: dev.clone(),
            offset: 4,
        }
    }
}

impl BusDevice for I8042Port {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if offset == 0 {
            d.read(self.offset, data);
        } else {
            data.fill(0xFF);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if offset == 0 {
            d.write(self.offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::RecordingIrq;

    struct Rig {
        dev: I8042,
        irq1: Arc<RecordingIrq>,
        irq12: Arc<RecordingIrq>,
        power: Arc<Mutex<Vec<PowerEvent>>>,
    }

    fn rig() -> Rig {
        let irq1 = RecordingIrq::new();
        let irq12 = RecordingIrq::new();
        let (p, power) = PowerHandle::recording();
        let dev = I8042::new_unshared(irq1.clone(), irq12.clone(), p);
        Rig {
            dev,
            irq1,
            irq12,
            power,
        }
    }

    /// A fresh controller whose command byte the guest set to `v`.
    fn rig_with_ctr(v: u8) -> Rig {
        let mut r = rig();
        r.set_ctr(v);
        r
    }

    impl Rig {
        /// Presses and releases `k`; whether both events were taken.
        fn tap(&mut self, k: KeyCode) -> bool {
            let down = self.dev.key_event(k, true);
            let up = self.dev.key_event(k, false);
            down && up
        }
        fn status(&mut self) -> u8 {
            let mut d = [0u8];
            self.dev.read(4, &mut d);
            d[0]
        }
        fn data(&mut self) -> u8 {
            let mut d = [0u8];
            self.dev.read(0, &mut d);
            d[0]
        }
        fn cmd(&mut self, c: u8) {
            self.dev.write(4, &[c]);
        }
        fn put(&mut self, v: u8) {
            self.dev.write(0, &[v]);
        }
        fn set_ctr(&mut self, v: u8) {
            self.cmd(0x60);
            self.put(v);
        }
        /// Reads every byte the controller has, returning them.
        fn drain(&mut self) -> Vec<u8> {
            let mut v = Vec::new();
            for _ in 0..1000 {
                if self.status() & status::OBF == 0 {
                    break;
                }
                v.push(self.data());
            }
            v
        }
        fn resets(&self) -> usize {
            self.power
                .lock()
                .unwrap()
                .iter()
                .filter(|e| **e == PowerEvent::Reset)
                .count()
        }
    }

    #[test]
    fn power_on_state() {
        let mut r = rig();
        let s = r.status();
        assert_eq!(s & status::OBF, 0);
        assert_eq!(s & status::IBF, 0);
        assert_ne!(s & status::UNLOCKED, 0);
        assert_eq!(r.dev.command_byte(), ctr::KBD_INT | ctr::AUX_INT);
        assert!(r.dev.a20());
        assert!(!r.irq1.level());
    }

    #[test]
    fn self_test_and_interface_tests() {
        let mut r = rig_with_ctr(0); // no interrupts: just the buffer
        r.cmd(0xAA);
        let s = r.status();
        assert_ne!(s & status::OBF, 0);
        assert_eq!(s & status::AUXB, 0);
        assert_ne!(s & status::SYS, 0);
        assert_ne!(s & status::CMD, 0);
        assert_eq!(r.data(), 0x55);
        assert_eq!(r.status() & status::OBF, 0);
        r.cmd(0xAB);
        assert_eq!(r.data(), 0x00);
        r.cmd(0xA9);
        assert_eq!(r.data(), 0x00);
        r.cmd(0xE0);
        assert_eq!(r.data(), 0x00);
        r.cmd(0xC0);
        assert_eq!(r.data(), 0x80);
        // Reading an empty buffer repeats the last byte.
        assert_eq!(r.data(), 0x80);
    }

    #[test]
    fn command_byte_round_trip_and_enable_bits() {
        let mut r = rig_with_ctr(0x47);
        assert_eq!(r.status() & status::CMD, 0);
        r.cmd(0x20);
        assert_eq!(r.data(), 0x47);
        assert_ne!(r.status() & status::SYS, 0);
        r.cmd(0xAD);
        r.cmd(0xA7);
        r.cmd(0x20);
        assert_eq!(r.data(), 0x47 | ctr::KBD_DIS | ctr::AUX_DIS);
        r.cmd(0xAE);
        r.cmd(0x20);
        assert_eq!(r.data(), 0x47 | ctr::AUX_DIS);
        r.cmd(0xA8);
        r.cmd(0x20);
        assert_eq!(r.data(), 0x47);
        // Other controller RAM bytes.
        r.cmd(0x65);
        r.put(0x99);
        r.cmd(0x25);
        assert_eq!(r.data(), 0x99);
        // SYS clears with the command byte bit.
        r.set_ctr(0x00);
        assert_eq!(r.status() & status::SYS, 0);
    }

    #[test]
    fn keyboard_reset_identify_echo() {
        let mut r = rig_with_ctr(0); // no translation
        r.put(0xFF);
        assert_eq!(r.drain(), vec![0xFA, 0xAA]);
        r.put(0xF2);
        assert_eq!(r.drain(), vec![0xFA, 0xAB, 0x83]);
        r.put(0xEE);
        assert_eq!(r.drain(), vec![0xEE]);
        r.put(0xED);
        r.put(0x07);
        assert_eq!(r.drain(), vec![0xFA, 0xFA]);
        assert_eq!(r.dev.leds(), 7);
        r.put(0xF3);
        r.put(0x20);
        assert_eq!(r.drain(), vec![0xFA, 0xFA]);
        r.put(0x42); // not a command
        assert_eq!(r.drain(), vec![0xFE]);
        // Resend repeats the last byte sent.
        r.put(0xFE);
        assert_eq!(r.drain(), vec![0xFE]);
        // With translation, the ID's second byte reads 0x41, as on QEMU.
        r.set_ctr(ctr::XLATE);
        r.put(0xF2);
        assert_eq!(r.drain(), vec![0xFA, 0xAB, 0x41]);
    }

    #[test]
    fn scancode_set_get_and_set() {
        let mut r = rig_with_ctr(0);
        r.put(0xF0);
        r.put(0x00);
        assert_eq!(r.drain(), vec![0xFA, 0xFA, 0x02]);
        r.put(0xF0);
        r.put(0x01);
        assert_eq!(r.drain(), vec![0xFA, 0xFA]);
        r.put(0xF0);
        r.put(0x00);
        assert_eq!(r.drain(), vec![0xFA, 0xFA, 0x01]);
        r.tap(KeyCode::A);
        assert_eq!(r.drain(), vec![0x1E, 0x9E]);
        r.put(0xF0);
        r.put(0x03);
        r.drain();
        r.tap(KeyCode::F1);
        assert_eq!(r.drain(), vec![0x07, 0xF0, 0x07]);
        r.put(0xF0);
        r.put(0x09); // no such set
        assert_eq!(r.drain(), vec![0xFA, 0xFE]);
        // Translated query, as GRUB's at_keyboard expects from QEMU.
        r.put(0xF0);
        r.put(0x02);
        r.set_ctr(ctr::XLATE);
        r.drain();
        r.put(0xF0);
        r.put(0x00);
        assert_eq!(r.drain(), vec![0xFA, 0xFA, 0x41]);
    }

    #[test]
    fn key_press_set1_with_xlate_set2_without() {
        let mut r = rig_with_ctr(ctr::KBD_INT | ctr::XLATE);
        assert!(r.tap(KeyCode::A));
        assert_eq!(r.drain(), vec![0x1E, 0x9E]);
        r.set_ctr(ctr::KBD_INT);
        r.tap(KeyCode::A);
        assert_eq!(r.drain(), vec![0x1C, 0xF0, 0x1C]);
    }

    #[test]
    fn extended_keys() {
        let mut r = rig_with_ctr(ctr::XLATE);
        r.tap(KeyCode::Up);
        assert_eq!(r.drain(), vec![0xE0, 0x48, 0xE0, 0xC8]);
        r.dev.key_event(KeyCode::Down, true);
        assert_eq!(r.drain(), vec![0xE0, 0x50]);
        r.tap(KeyCode::PrintScreen);
        assert_eq!(
            r.drain(),
            vec![0xE0, 0x2A, 0xE0, 0x37, 0xE0, 0xB7, 0xE0, 0xAA]
        );
        r.set_ctr(0);
        r.tap(KeyCode::Up);
        assert_eq!(r.drain(), vec![0xE0, 0x75, 0xE0, 0xF0, 0x75]);
    }

    /// The bytes a translating controller gives the guest after `feed`
    /// handed its keyboard keys, which the keyboard must have taken.
    fn translated(feed: impl FnOnce(&mut I8042) -> bool) -> Vec<u8> {
        let mut r = rig_with_ctr(ctr::XLATE);
        assert!(feed(&mut r.dev));
        r.drain()
    }

    #[test]
    fn combo_presses_then_releases_in_reverse() {
        let keys = crate::devices::keys::parse_key_combo("ctrl-alt-delete").unwrap();
        assert_eq!(
            translated(|d| d.key_combo(&keys)),
            vec![0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D]
        );
    }

    #[test]
    fn typing_text_with_shift() {
        let keys = crate::devices::keys::keys_for_text("lS\n").unwrap();
        assert_eq!(
            translated(|d| d.type_keys(&keys)),
            vec![0x26, 0xA6, 0x2A, 0x1F, 0x9F, 0xAA, 0x1C, 0x9C]
        );
    }

    #[test]
    fn one_rising_edge_per_byte() {
        let mut r = rig_with_ctr(ctr::KBD_INT | ctr::SYS | ctr::XLATE);
        r.tap(KeyCode::Up);
        r.dev.key_combo(&[KeyCode::ShiftLeft, KeyCode::A]);
        r.dev
            .type_keys(&[(KeyCode::L, false), (KeyCode::Enter, false)]);
        let mut got = Vec::new();
        let mut edges = Vec::new();
        while r.status() & status::OBF != 0 {
            edges.push(r.irq1.raised_count());
            got.push(r.data());
        }
        assert_eq!(
            got,
            vec![0xE0, 0x48, 0xE0, 0xC8, 0x2A, 0x1E, 0x9E, 0xAA, 0x26, 0xA6, 0x1C, 0x9C]
        );
        assert_eq!(edges, (1..=12).collect::<Vec<u32>>());
    }

    #[test]
    fn releases_are_never_lost_and_never_stray() {
        let mut r = rig_with_ctr(ctr::XLATE);
        // A release with no press: nothing.
        assert!(!r.dev.key_event(KeyCode::ShiftLeft, false));
        assert!(r.drain().is_empty());
        // Shift goes down, then presses fill the queue.
        assert!(r.dev.key_event(KeyCode::ShiftLeft, true));
        let mut dropped = None;
        for k in KeyCode::ALL {
            if !r.dev.key_event(*k, true) {
                dropped = Some(*k);
                break;
            }
        }
        let dropped = dropped.expect("the queue never filled");
        assert_eq!(r.dev.key_backlog(), EVENT_LIMIT);
        // Shift's release still goes in; the dropped key's release does not.
        assert!(r.dev.key_event(KeyCode::ShiftLeft, false));
        assert!(!r.dev.key_event(dropped, false));
        let bytes = r.drain();
        assert_eq!(bytes.len(), EVENT_LIMIT + 1);
        assert_eq!(bytes.first(), Some(&0x2A));
        assert_eq!(bytes.last(), Some(&0xAA));
    }

    #[test]
    fn mouse_ack_sets_auxb_and_raises_irq12_only() {
        let mut r = rig();
        r.cmd(0xAA);
        assert_eq!(r.data(), 0x55);
        r.set_ctr(0x47);
        r.cmd(0xD4);
        r.put(0xF4);
        let s = r.status();
        assert_eq!(
            s & (status::OBF | status::AUXB),
            status::OBF | status::AUXB,
            "status {s:#x}"
        );
        assert!(r.irq12.level());
        assert!(!r.irq1.level());
    }

    #[test]
    fn irq1_only_when_enabled_and_one_byte_at_a_time() {
        let mut r = rig_with_ctr(ctr::XLATE); // KBD_INT off
        r.dev.key_event(KeyCode::B, true);
        assert_ne!(r.status() & status::OBF, 0);
        assert!(!r.irq1.level());
        assert_eq!(r.irq1.raised_count(), 0);
        assert_eq!(r.data(), 0x30);

        r.set_ctr(ctr::XLATE | ctr::KBD_INT);
        r.dev.key_event(KeyCode::Up, true); // two bytes
        assert!(r.irq1.level());
        assert!(!r.irq12.level());
        assert_eq!(r.irq1.raised_count(), 1);
        assert_eq!(r.data(), 0xE0);
        // The next byte is loaded and the line raised again: a new edge.
        assert!(r.irq1.level());
        assert_eq!(r.irq1.raised_count(), 2);
        assert!(r.dev.irq_asserted());
        assert_eq!(r.data(), 0x48);
        assert!(!r.irq1.level());
        assert!(!r.dev.irq_asserted());
        assert_eq!(r.status() & status::OBF, 0);
        assert_eq!(r.irq1.raised_count(), 2);

        // Enabling the interrupt with data waiting raises the line.
        r.set_ctr(ctr::XLATE);
        r.dev.key_event(KeyCode::C, true);
        assert!(!r.irq1.level());
        r.set_ctr(ctr::XLATE | ctr::KBD_INT);
        assert!(r.irq1.level());
        assert_eq!(r.data(), 0x2E);
    }

    #[test]
    fn disabled_keyboard_interface_holds_bytes() {
        let mut r = rig_with_ctr(ctr::KBD_INT | ctr::KBD_DIS | ctr::XLATE);
        r.dev.key_event(KeyCode::Escape, true);
        assert_eq!(r.status() & status::OBF, 0);
        assert!(!r.irq1.level());
        r.cmd(0xAE);
        assert_ne!(r.status() & status::OBF, 0);
        assert!(r.irq1.level());
        assert_eq!(r.data(), 0x01);
    }

    #[test]
    fn scanning_disabled_drops_keys() {
        let mut r = rig_with_ctr(0);
        r.put(0xF5);
        assert_eq!(r.drain(), vec![0xFA]);
        assert!(!r.dev.key_event(KeyCode::A, true));
        assert!(r.drain().is_empty());
        r.put(0xF4);
        assert_eq!(r.drain(), vec![0xFA]);
        assert!(r.dev.key_event(KeyCode::A, true));
        assert_eq!(r.drain(), vec![0x1C]);
    }

    #[test]
    fn write_output_buffers_and_aux_flag() {
        let mut r = rig_with_ctr(ctr::KBD_INT | ctr::AUX_INT);
        r.cmd(0xD2);
        r.put(0x5A);
        let s = r.status();
        assert_ne!(s & status::OBF, 0);
        assert_eq!(s & status::AUXB, 0);
        assert!(r.irq1.level());
        assert_eq!(r.data(), 0x5A);
        r.cmd(0xD3);
        r.put(0xA5);
        let s = r.status();
        assert_ne!(s & status::OBF, 0);
        assert_ne!(s & status::AUXB, 0);
        assert!(r.irq12.level());
        assert!(!r.irq1.level());
        r.cmd(0xD0);
        // D0's reply queues behind the aux byte.
        assert_eq!(r.data(), 0xA5);
        assert!(!r.irq12.level());
        let out = r.data();
        assert_eq!(out & (outport::RESET | outport::A20), 0x03);
    }

    #[test]
    fn mouse_reset_id_and_status() {
        let mut r = rig_with_ctr(ctr::AUX_INT);
        let send = |r: &mut Rig, b: u8| {
            r.cmd(0xD4);
            r.put(b);
        };
        send(&mut r, 0xFF);
        assert!(r.irq12.level());
        assert_ne!(r.status() & status::AUXB, 0);
        assert_eq!(r.drain(), vec![0xFA, 0xAA, 0x00]);
        send(&mut r, 0xF2);
        assert_eq!(r.drain(), vec![0xFA, 0x00]);
        send(&mut r, 0xE9);
        assert_eq!(r.drain(), vec![0xFA, 0x00, 0x02, 100]);
        send(&mut r, 0xE8);
        send(&mut r, 0x03);
        send(&mut r, 0xE7);
        send(&mut r, 0xF4);
        send(&mut r, 0xE9);
        assert_eq!(
            r.drain(),
            vec![0xFA, 0xFA, 0xFA, 0xFA, 0xFA, 0x30, 0x03, 100]
        );
        // IntelliMouse knock.
        for rate in [200, 100, 80] {
            send(&mut r, 0xF3);
            send(&mut r, rate);
        }
        r.drain();
        send(&mut r, 0xF2);
        assert_eq!(r.drain(), vec![0xFA, 0x03]);
        send(&mut r, 0xEE); // wrap: echo
        send(&mut r, 0x12);
        send(&mut r, 0xEC);
        assert_eq!(r.drain(), vec![0xFA, 0x12, 0xFA]);
        send(&mut r, 0x01); // unknown
        assert_eq!(r.drain(), vec![0xFE]);
    }

    #[test]
    fn mouse_movement_packets() {
        let mut r = rig_with_ctr(ctr::AUX_INT);
        // Disabled mouse: nothing.
        r.dev.mouse_move(5, 5, 0, 0);
        assert!(r.drain().is_empty());
        r.cmd(0xD4);
        r.put(0xF4);
        assert_eq!(r.drain(), vec![0xFA]);
        r.dev.mouse_move(10, 3, 0, buttons::LEFT); // 3 down = PS/2 -3
        assert!(r.irq12.level());
        assert!(!r.irq1.level());
        assert_eq!(r.drain(), vec![0x08 | 0x20 | 0x01, 10, 0xFD]);
        r.dev
            .mouse_move(-1, -300, 0, buttons::RIGHT | buttons::MIDDLE);
        // X negative; Y saturates at 255 with the overflow bit.
        assert_eq!(r.drain(), vec![0x08 | 0x10 | 0x80 | 0x06, 0xFF, 0xFF]);
        // Remote mode: accumulate, report on 0xEB.
        r.cmd(0xD4);
        r.put(0xF0);
        r.drain();
        r.dev.mouse_move(2, 0, 0, 0);
        r.dev.mouse_move(3, -1, 0, 0);
        assert!(r.drain().is_empty());
        r.cmd(0xD4);
        r.put(0xEB);
        assert_eq!(r.drain(), vec![0xFA, 0x08, 5, 1]);
    }

    #[test]
    fn intellimouse_packet_has_wheel_byte() {
        let mut r = rig_with_ctr(0);
        for b in [0xF3, 200, 0xF3, 100, 0xF3, 80, 0xF4] {
            r.cmd(0xD4);
            r.put(b);
        }
        r.drain();
        r.dev.mouse_move(0, 0, -2, 0);
        assert_eq!(r.drain(), vec![0x08, 0, 0, 0xFE]);
    }

    #[test]
    fn keyboard_bytes_come_before_mouse_bytes() {
        let mut r = rig_with_ctr(ctr::KBD_INT | ctr::AUX_INT | ctr::XLATE);
        r.cmd(0xD4);
        r.put(0xF4);
        assert_eq!(r.data(), 0xFA);
        r.dev.mouse_move(1, -1, 0, 0);
        r.dev.key_event(KeyCode::Enter, true);
        // The first mouse byte was already loaded.
        assert_ne!(r.status() & status::AUXB, 0);
        assert_eq!(r.data(), 0x08);
        assert_eq!(r.status() & status::AUXB, 0);
        assert!(r.irq1.level());
        assert_eq!(r.data(), 0x1C);
        assert_eq!(r.drain(), vec![1, 1]);
    }

    #[test]
    fn reset_via_pulse_and_output_port() {
        let mut r = rig();
        r.cmd(0xFF); // pulses nothing
        r.cmd(0xF1); // bit 0 not pulsed
        assert_eq!(r.resets(), 0);
        r.cmd(0xFE);
        assert_eq!(r.resets(), 1);
        r.cmd(0xF0);
        assert_eq!(r.resets(), 2);
        r.cmd(0xD1);
        r.put(0xDF); // A20 on, reset high: no reset
        assert_eq!(r.resets(), 2);
        r.cmd(0xD1);
        r.put(0xDD); // A20 off
        assert!(!r.dev.a20());
        r.cmd(0xD1);
        r.put(0xDE); // bit 0 clear
        assert_eq!(r.resets(), 3);
        r.cmd(0xDF);
        assert!(r.dev.a20());
    }

    #[test]
    fn queue_overflow_drops_without_panic() {
        let mut r = rig_with_ctr(ctr::KBD_INT);
        let mut accepted = 0;
        for _ in 0..1000 {
            if r.dev.key_event(KeyCode::Up, true) {
                accepted += 1;
            }
        }
        // E0 75 per press: 8 presses fill the 16 bytes.
        assert_eq!(accepted, 8);
        assert_eq!(r.dev.key_backlog(), EVENT_LIMIT);
        // Linux's i8042_flush reads at most 16 bytes and then needs OBF clear.
        let mut flushed = 0;
        while r.status() & status::OBF != 0 && flushed < 17 {
            r.data();
            flushed += 1;
        }
        assert_eq!(flushed, EVENT_LIMIT);
        assert_eq!(r.dev.key_backlog(), 0);
        // Full of keys, a command reply still gets through behind them.
        while r.dev.key_event(KeyCode::A, true) {}
        r.put(0xEE);
        let bytes = r.drain();
        assert_eq!(bytes.last(), Some(&0xEE));
        assert_eq!(bytes.len(), EVENT_LIMIT + 1);
        // Mouse floods: motion accumulates instead of queueing without end.
        r.cmd(0xD4);
        r.put(0xF4);
        assert_eq!(r.drain(), vec![0xFA]);
        for _ in 0..1000 {
            r.dev.mouse_move(1, -1, 1, 7);
        }
        let bytes = r.drain();
        assert!(bytes.len() <= EVENT_LIMIT + 3, "{}", bytes.len());
        assert_eq!(bytes.len() % 3, 0);
        // The motion that did not fit accumulated and came as one more
        // packet once the queue drained: saturated at 255, overflow bits set.
        let last = bytes.chunks(3).last().unwrap();
        assert_eq!(last, &[0x08 | 0x40 | 0x80 | 0x07, 0xFF, 0xFF]);
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut r = rig();
        let mut x: u32 = 12345;
        for _ in 0..20000 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let b = (x >> 16) as u8;
            match (x >> 8) & 7 {
                0 | 1 => r.dev.write(0, &[b]),
                2 => {
                    // Keep the machine out of reset most of the time.
                    if b & 0xF0 != 0xF0 {
                        r.dev.write(4, &[b]);
                    }
                }
                3 => {
                    let mut d = [0u8; 4];
                    r.dev.read(u64::from(b & 7), &mut d);
                }
                4 => r.dev.write(u64::from(b), &[]),
                5 => {
                    r.dev.key_event(
                        KeyCode::ALL[usize::from(b) % KeyCode::ALL.len()],
                        b & 1 == 0,
                    );
                }
                6 => r.dev.mouse_move(i32::MAX, i32::MIN, i32::from(b), b),
                _ => {
                    r.data();
                }
            }
        }
        r.dev.reset();
        assert_eq!(r.status() & status::OBF, 0);
    }

    /// SeaBIOS's ps2_keyboard_setup + __ps2_command, step by step.
    #[test]
    fn seabios_init_sequence_then_a_key() {
        let mut r = rig();
        // i8042_flush, disable both ports, flush, self test, kbd test.
        assert!(r.drain().is_empty());
        r.cmd(0xAD);
        r.cmd(0xA7);
        assert!(r.drain().is_empty());
        r.cmd(0xAA);
        assert_eq!(r.drain(), vec![0x55]);
        r.cmd(0xAB);
        assert_eq!(r.drain(), vec![0x00]);
        // Each ps2_command: CTR with both ports off and no IRQs, then the
        // keyboard port enabled, then the command, then CTR restored.
        let mut ctr = ctr::KBD_DIS | ctr::AUX_DIS;
        let command = |r: &mut Rig, ctr: u8, bytes: &[u8]| -> Vec<u8> {
            r.set_ctr(ctr & !(ctr::KBD_INT | ctr::AUX_INT));
            r.set_ctr((ctr & !(ctr::KBD_INT | ctr::AUX_INT)) & !ctr::KBD_DIS);
            let mut got = Vec::new();
            for b in bytes {
                r.put(*b);
                got.extend(r.drain());
            }
            r.set_ctr(ctr);
            got
        };
        assert_eq!(command(&mut r, ctr, &[0xFF]), vec![0xFA, 0xAA]);
        assert_eq!(command(&mut r, ctr, &[0xF5]), vec![0xFA]);
        assert_eq!(command(&mut r, ctr, &[0xF0, 0x02]), vec![0xFA, 0xFA]);
        ctr = ctr::AUX_DIS | ctr::XLATE | ctr::KBD_INT;
        assert_eq!(command(&mut r, ctr, &[0xF4]), vec![0xFA]);
        assert!(!r.irq1.level());
        // A key now raises IRQ 1 with a set-1 code, as handle_09 expects.
        r.dev.key_event(KeyCode::Down, true);
        assert!(r.irq1.level());
        assert_eq!(r.status() & status::AUXB, 0);
        assert_eq!(r.data(), 0xE0);
        assert!(r.irq1.level());
        assert_eq!(r.data(), 0x50);
        assert!(!r.irq1.level());
    }

    /// GRUB's at_keyboard reads the command byte by polling port 0x60
    /// without looking at OBF: repeated reads must keep returning it.
    #[test]
    fn grub_at_keyboard_controller_read() {
        let mut r = rig_with_ctr(ctr::AUX_DIS | ctr::XLATE | ctr::KBD_INT);
        r.cmd(0x20);
        for _ in 0..5 {
            assert_eq!(r.data(), ctr::AUX_DIS | ctr::XLATE | ctr::KBD_INT);
        }
        // query_mode: F0 00 -> ACK ACK, then the set, translated.
        r.put(0xF0);
        r.put(0x00);
        assert_eq!(r.drain(), vec![0xFA, 0xFA, 0x41]);
    }

    #[test]
    fn port_wrappers_on_a_bus() {
        let irq1 = RecordingIrq::new();
        let irq12 = RecordingIrq::new();
        let (p, _log) = PowerHandle::recording();
        let dev = I8042::new(irq1.clone(), irq12, p);
        let bus = crate::bus::Bus::new();
        bus.insert(Arc::new(Mutex::new(I8042Port::data(&dev))), 0x60, 1)
            .unwrap();
        bus.insert(Arc::new(Mutex::new(I8042Port::command(&dev))), 0x64, 1)
            .unwrap();
        bus.write(0x64, &[0xAA]);
        let mut s = [0u8];
        bus.read(0x64, &mut s);
        assert_ne!(s[0] & status::OBF, 0);
        assert!(irq1.level());
        let mut d = [0u8];
        bus.read(0x60, &mut d);
        assert_eq!(d[0], 0x55);
        dev.lock().unwrap().key_event(KeyCode::Space, true);
        bus.read(0x60, &mut d);
        assert_eq!(d[0], 0x29); // set 2: no XLATE in the power-on command byte
    }
}
