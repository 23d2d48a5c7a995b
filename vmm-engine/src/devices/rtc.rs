//! MC146818 CMOS real-time clock and 128 bytes of CMOS RAM, ports 0x70
//! (index; bit 7 masks NMI) and 0x71 (data). Insert at [`RTC_PORT`] with
//! length [`RTC_LEN`]; it interrupts on IRQ 8.
//!
//! Time: the host's UTC wall clock when the RTC is made, then advanced by a
//! monotonic clock, so host clock jumps do not reach the guest. Registers
//! 0..9 (seconds .. year) and 0x32 (century) read the current time in BCD
//! or binary (register B bit 2) and 12- or 24-hour form (bit 1). A guest
//! sets the time either field by field (each write moves the clock, keeping
//! the sub-second phase; SeaBIOS INT 1Ah does this) or with B.SET: while
//! SET is 1 the clock registers are frozen and plain storage, and clearing
//! SET restarts the clock from them. The day-of-week register is derived
//! from the date; writes to it are ignored.
//!
//! Register A: UIP (bit 7) reads 1 during the last 2228 µs (244 µs set-up +
//! 1984 µs update) of every second, and the registers show the new second
//! as UIP falls, so `rtc_updating()`-style loops terminate within 2.3 ms;
//! the divider bits 6:4 are stored only (the clock always runs); the rate
//! bits 3:0 select the periodic interrupt: rate r gives 32768 >> (r - 1) Hz
//! for r = 3..=15, 256 Hz and 128 Hz for r = 1, 2 (as with a 32.768 kHz
//! time base), none for 0. Register B: SET, PIE, AIE, UIE, SQWE, DM,
//! 24/12, DSE (setting SET clears UIE; DSE is stored, no DST switching).
//! Register C: IRQF, PF, AF, UF; PF, AF and UF are set when their event
//! happens whether or not it is enabled; reading C returns and clears
//! them. Register D: VRT (bit 7) always 1.
//!
//! Interrupts: when an enabled event (PIE/PF, AIE/AF, UIE/UF) sets IRQF,
//! IRQ 8 gets one pulse (the PIC input is edge-triggered). While IRQF stays
//! set (C not read yet) further events set their flags but send no new
//! edge, as the real chip's IRQ# output stays asserted until C is read.
//! Events are found lazily on every register access and, for enabled
//! interrupts, by the thread of [`Rtc::start_timer`], which sleeps until
//! the next enabled event and blocks indefinitely when none is enabled (or
//! while IRQF waits for the guest), so an idle RTC costs nothing.
//!
//! CMOS contents the VM fills for SeaBIOS (which reads them as QEMU's `pc`
//! writes them): memory sizes ([`Rtc::set_memory_size`]), CPU count - 1 at
//! 0x5F ([`Rtc::set_cpus`]), boot order at 0x3D/0x38
//! ([`Rtc::set_boot_order`]), no floppy (0x10 = 0), equipment byte 0x14 =
//! 0x06 (FPU, PS/2 mouse). Missing: the CMOS checksum at 0x2E/0x2F (SeaBIOS
//! does not check it), the second 128-byte bank (ports 0x72/0x73), the
//! square-wave output, daylight-saving switching, divider reset/hold.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::debug;

use crate::devices::{BusDevice, IrqLine};

/// First port (index register).
pub const RTC_PORT: u64 = 0x70;
/// Length of the port range (index + data).
pub const RTC_LEN: u64 = 2;
/// The ISA IRQ the RTC raises.
pub const RTC_IRQ: u32 = 8;

pub const REG_SECONDS: usize = 0x00;
pub const REG_SECONDS_ALARM: usize = 0x01;
pub const REG_MINUTES: usize = 0x02;
pub const REG_MINUTES_ALARM: usize = 0x03;
pub const REG_HOURS: usize = 0x04;
pub const REG_HOURS_ALARM: usize = 0x05;
pub const REG_WEEKDAY: usize = 0x06;
pub const REG_DAY: usize = 0x07;
pub const REG_MONTH: usize = 0x08;
pub const REG_YEAR: usize = 0x09;
pub const REG_A: usize = 0x0a;
pub const REG_B: usize = 0x0b;
pub const REG_C: usize = 0x0c;
pub const REG_D: usize = 0x0d;
pub const REG_CENTURY: usize = 0x32;

pub const A_UIP: u8 = 0x80;
pub const B_SET: u8 = 0x80;
pub const B_PIE: u8 = 0x40;
pub const B_AIE: u8 = 0x20;
pub const B_UIE: u8 = 0x10;
pub const B_SQWE: u8 = 0x08;
pub const B_DM_BINARY: u8 = 0x04;
pub const B_24H: u8 = 0x02;
pub const C_IRQF: u8 = 0x80;
pub const C_PF: u8 = 0x40;
pub const C_AF: u8 = 0x20;
pub const C_UF: u8 = 0x10;
pub const D_VRT: u8 = 0x80;

const NS_PER_SEC: i128 = 1_000_000_000;
/// UIP is high for this long before each second boundary.
const UIP_WINDOW_NS: i128 = 244_000 + 1_984_000;

/// A monotonic clock: time since some fixed point.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// QEMU's boot device codes in CMOS 0x3D/0x38.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootDevice {
    Floppy = 1,
    Disk = 2,
    Cdrom = 3,
    Network = 4,
}

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    /// 0 = Sunday.
    weekday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl DateTime {
    fn from_unix(t: i64) -> Self {
        let days = t.div_euclid(86_400);
        let tod = t.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: tod / 3600,
            min: tod / 60 % 60,
            sec: tod % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.min) * 60
            + i64::from(self.sec)
    }
}

fn to_bcd(v: u32) -> u8 {
    (((v / 10 % 10) << 4) | (v % 10)) as u8
}

fn from_bcd(b: u8) -> Option<u32> {
    let (hi, lo) = (b >> 4, b & 0xf);
    (hi <= 9 && lo <= 9).then_some(u32::from(hi) * 10 + u32::from(lo))
}

/// Wake-ups for the timer thread.
#[derive(Default)]
struct TimerShared {
    state: Mutex<TimerState>,
    cv: Condvar,
}

#[derive(Default)]
struct TimerState {
    generation: u64,
    stop: bool,
}

impl TimerShared {
    fn kick(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.generation = s.generation.wrapping_add(1);
        self.cv.notify_all();
    }
}

/// The RTC's timer thread; dropping it stops and joins the thread.
pub struct RtcTimer {
    shared: Arc<TimerShared>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for RtcTimer {
    fn drop(&mut self) {
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.stop = true;
            self.shared.cv.notify_all();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The MC146818 RTC with its CMOS RAM.
pub struct Rtc {
    index: u8,
    nmi_masked: bool,
    cmos: [u8; 128],
    irq: Arc<dyn IrqLine>,
    clock: Clock,
    /// Guest time (ns since the Unix epoch) at monotonic time `base_mono`.
    base_guest_ns: i128,
    base_mono: Duration,
    /// The guest second whose update events have been processed.
    last_sec: i64,
    /// Periodic interrupt: phase origin and ticks processed since.
    periodic_start: Duration,
    periodic_ticks: u128,
    timer: Arc<TimerShared>,
}

impl Rtc {
    /// An RTC on the host's UTC time, interrupting through `irq` (IRQ 8).
    pub fn new(irq: Arc<dyn IrqLine>) -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let start = Instant::now();
        Self::with_clocks(irq, wall, Arc::new(move || start.elapsed()))
    }

    /// An RTC whose time is `wall` (since the Unix epoch, UTC) now, and
    /// which then advances with the monotonic clock `mono` (tests).
    pub fn with_clocks(irq: Arc<dyn IrqLine>, wall: Duration, mono: Clock) -> Self {
        let now = mono();
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26;
        cmos[REG_B] = B_24H;
        cmos[REG_D] = D_VRT;
        cmos[0x14] = 0x06; // equipment: FPU, PS/2 mouse
                           // Base memory 640 KiB until the VM says otherwise.
        cmos[0x15] = 0x80;
        cmos[0x16] = 0x02;
        let base_guest_ns = wall.as_nanos() as i128;
        let mut rtc = Rtc {
            index: 0,
            nmi_masked: false,
            cmos,
            irq,
            clock: mono,
            base_guest_ns,
            base_mono: now,
            last_sec: 0,
            periodic_start: now,
            periodic_ticks: 0,
            timer: Arc::default(),
        };
        rtc.last_sec = rtc.guest_secs(now);
        rtc
    }

    /// Fills the memory-size bytes the way QEMU's `pc` does: base memory
    /// (0x15/0x16, 640 KiB), extended memory above 1 MiB in KiB (0x17/0x18
    /// and 0x30/0x31, at most 0xFFFF), memory above 16 MiB below 4 GiB in
    /// 64 KiB blocks (0x34/0x35) and memory above 4 GiB in 64 KiB blocks
    /// (0x5B..0x5D).
    pub fn set_memory_size(&mut self, below_4g_bytes: u64, above_4g_bytes: u64) {
        let c = &mut self.cmos;
        c[0x15] = 0x80;
        c[0x16] = 0x02;
        let ext_kib = (below_4g_bytes / 1024).saturating_sub(1024).min(0xffff) as u16;
        c[0x17..0x19].copy_from_slice(&ext_kib.to_le_bytes());
        c[0x30..0x32].copy_from_slice(&ext_kib.to_le_bytes());
        let above_16m = (below_4g_bytes.saturating_sub(16 << 20) / 65_536).min(0xffff) as u16;
        c[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
        let high = (above_4g_bytes / 65_536).min(0xff_ffff) as u32;
        c[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
    }

    /// CMOS 0x5F = number of CPUs - 1, as QEMU sets it.
    pub fn set_cpus(&mut self, cpus: u32) {
        self.cmos[0x5f] = cpus.saturating_sub(1).min(0xff) as u8;
    }

    /// Boot order for SeaBIOS without a fw_cfg "bootorder" file: up to
    /// three devices, first first (0x3D low nibble, 0x3D high nibble, 0x38
    /// high nibble). 0x38 bit 0 is set: no floppy boot-signature check.
    pub fn set_boot_order(&mut self, devices: &[BootDevice]) {
        let code = |i: usize| devices.get(i).map_or(0, |d| *d as u8);
        self.cmos[0x3d] = code(0) | code(1) << 4;
        self.cmos[0x38] = code(2) << 4 | 1;
    }

    /// Machine reset, as on a PC: the CMOS RAM and the time survive (they
    /// are battery-backed); the periodic, alarm and square-wave enables
    /// and the pending flags in C are cleared.
    pub fn reset(&mut self) {
        self.cmos[REG_B] &= !(B_PIE | B_AIE | B_SQWE);
        self.cmos[REG_C] = 0;
        self.index = 0;
        self.nmi_masked = false;
        self.timer.kick();
    }

    /// The selected CMOS index (0..=127).
    pub fn index(&self) -> u8 {
        self.index
    }
    /// Whether the guest masked NMIs through port 0x70 bit 7.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// Reads CMOS register `reg & 0x7f` as the guest would.
    pub fn read_register(&mut self, reg: u8) -> u8 {
        let reg = usize::from(reg & 0x7f);
        let now = (self.clock)();
        self.advance(now);
        match reg {
            REG_A => {
                let uip = if self.uip(now) { A_UIP } else { 0 };
                (self.cmos[REG_A] & !A_UIP) | uip
            }
            REG_C => {
                let v = self.cmos[REG_C];
                self.cmos[REG_C] = 0;
                if v & C_IRQF != 0 {
                    // The timer may have been waiting for this.
                    self.timer.kick();
                }
                v
            }
            REG_D => D_VRT,
            r if Self::is_clock_reg(r) && !self.set_mode() => {
                let dt = DateTime::from_unix(self.guest_secs(now));
                self.encode(&dt, r)
            }
            r => self.cmos[r],
        }
    }

    /// Writes CMOS register `reg & 0x7f` as the guest would.
    pub fn write_register(&mut self, reg: u8, v: u8) {
        let reg = usize::from(reg & 0x7f);
        let now = (self.clock)();
        self.advance(now);
        match reg {
            REG_A => {
                let old = self.cmos[REG_A];
                self.cmos[REG_A] = v & !A_UIP;
                if (old ^ v) & 0x0f != 0 {
                    self.periodic_start = now;
                    self.periodic_ticks = 0;
                }
                self.timer.kick();
            }
            REG_B => self.write_b(v, now),
            REG_C | REG_D => {} // read-only
            r if Self::is_clock_reg(r) => {
                if self.set_mode() {
                    self.cmos[r] = v;
                } else {
                    self.write_clock_field(r, v, now);
                }
            }
            r => self.cmos[r] = v,
        }
    }

    /// Starts the thread that delivers periodic, alarm and update-ended
    /// interrupts. It stops when the returned [`RtcTimer`] is dropped.
    pub fn start_timer(rtc: Arc<Mutex<Rtc>>) -> std::io::Result<RtcTimer> {
        let shared = rtc.lock().unwrap_or_else(|e| e.into_inner()).timer.clone();
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("rtc".into())
            .spawn(move || {
                crate::sandbox::enter(crate::sandbox::Role::Timer);
                timer_loop(rtc, thread_shared)
            })?;
        Ok(RtcTimer {
            shared,
            handle: Some(handle),
        })
    }

    fn is_clock_reg(r: usize) -> bool {
        matches!(
            r,
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH | REG_YEAR
        ) || r == REG_CENTURY
    }

    fn set_mode(&self) -> bool {
        self.cmos[REG_B] & B_SET != 0
    }

    fn binary(&self) -> bool {
        self.cmos[REG_B] & B_DM_BINARY != 0
    }

    fn guest_ns(&self, now: Duration) -> i128 {
        let elapsed = now.saturating_sub(self.base_mono).as_nanos() as i128;
        self.base_guest_ns + elapsed
    }

    fn guest_secs(&self, now: Duration) -> i64 {
        self.guest_ns(now).div_euclid(NS_PER_SEC) as i64
    }

    fn uip(&self, now: Duration) -> bool {
        if self.set_mode() {
            return false;
        }
        self.guest_ns(now).rem_euclid(NS_PER_SEC) >= NS_PER_SEC - UIP_WINDOW_NS
    }

    fn encode_num(&self, v: u32) -> u8 {
        if self.binary() {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode_num(&self, b: u8) -> Option<u32> {
        if self.binary() {
            Some(u32::from(b))
        } else {
            from_bcd(b)
        }
    }

    fn encode_hour(&self, h: u32) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.encode_num(h)
        } else {
            let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
            self.encode_num(h12) | if h >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, b: u8) -> Option<u32> {
        if self.cmos[REG_B] & B_24H != 0 {
            self.decode_num(b).filter(|h| *h < 24)
        } else {
            let h = self.decode_num(b & 0x7f).filter(|h| (1..=12).contains(h))?;
            Some(h % 12 + if b & 0x80 != 0 { 12 } else { 0 })
        }
    }

    fn encode(&self, dt: &DateTime, reg: usize) -> u8 {
        match reg {
            REG_SECONDS => self.encode_num(dt.sec),
            REG_MINUTES => self.encode_num(dt.min),
            REG_HOURS => self.encode_hour(dt.hour),
            REG_WEEKDAY => self.encode_num(dt.weekday + 1),
            REG_DAY => self.encode_num(dt.day),
            REG_MONTH => self.encode_num(dt.month),
            REG_YEAR => self.encode_num(dt.year.rem_euclid(100) as u32),
            REG_CENTURY => self.encode_num(dt.year.div_euclid(100).rem_euclid(100) as u32),
            _ => 0,
        }
    }

    /// Applies one clock register value to `dt`; false if it is invalid.
    fn apply(&self, dt: &mut DateTime, reg: usize, b: u8) -> bool {
        let ok = |v: Option<u32>, lo: u32, hi: u32| v.filter(|v| (lo..=hi).contains(v));
        match reg {
            REG_SECONDS => ok(self.decode_num(b), 0, 59).map(|v| dt.sec = v),
            REG_MINUTES => ok(self.decode_num(b), 0, 59).map(|v| dt.min = v),
            REG_HOURS => self.decode_hour(b).map(|v| dt.hour = v),
            REG_WEEKDAY => Some(()), // derived from the date
            REG_DAY => ok(self.decode_num(b), 1, 31).map(|v| dt.day = v),
            REG_MONTH => ok(self.decode_num(b), 1, 12).map(|v| dt.month = v),
            REG_YEAR => ok(self.decode_num(b), 0, 99)
                .map(|v| dt.year = dt.year.div_euclid(100) * 100 + i64::from(v)),
            REG_CENTURY => ok(self.decode_num(b), 0, 99)
                .map(|v| dt.year = i64::from(v) * 100 + dt.year.rem_euclid(100)),
            _ => None,
        }
        .is_some()
    }

    /// Moves the clock so that it reads `secs` now, keeping the sub-second
    /// phase when `keep_phase`.
    fn rebase(&mut self, secs: i64, now: Duration, keep_phase: bool) {
        let phase = if keep_phase {
            self.guest_ns(now).rem_euclid(NS_PER_SEC)
        } else {
            0
        };
        self.base_guest_ns = i128::from(secs) * NS_PER_SEC + phase;
        self.base_mono = now;
        self.last_sec = secs;
    }

    fn write_clock_field(&mut self, reg: usize, v: u8, now: Duration) {
        let mut dt = DateTime::from_unix(self.guest_secs(now));
        if self.apply(&mut dt, reg, v) {
            self.rebase(dt.to_unix(), now, true);
        } else {
            crate::guest_warn!("rtc: invalid value {v:#04x} for register {reg:#04x}; ignored");
        }
    }

    fn write_b(&mut self, v: u8, now: Duration) {
        let old = self.cmos[REG_B];
        let mut v = v;
        if v & B_SET != 0 {
            v &= !B_UIE;
        }
        self.cmos[REG_B] = v;
        if v & B_SET != 0 && old & B_SET == 0 {
            // Freeze: the clock registers become plain storage holding the
            // current time (in the new format).
            let dt = DateTime::from_unix(self.guest_secs(now));
            for r in [
                REG_SECONDS,
                REG_MINUTES,
                REG_HOURS,
                REG_WEEKDAY,
                REG_DAY,
                REG_MONTH,
                REG_YEAR,
                REG_CENTURY,
            ] {
                self.cmos[r] = self.encode(&dt, r);
            }
        } else if v & B_SET == 0 && old & B_SET != 0 {
            // Restart from what the guest wrote.
            let mut dt = DateTime::from_unix(self.guest_secs(now));
            let mut ok = true;
            for r in [
                REG_CENTURY,
                REG_YEAR,
                REG_MONTH,
                REG_DAY,
                REG_HOURS,
                REG_MINUTES,
                REG_SECONDS,
            ] {
                ok &= self.apply(&mut dt, r, self.cmos[r]);
            }
            if ok {
                self.rebase(dt.to_unix(), now, false);
            } else {
                crate::guest_warn!(
                    "rtc: invalid time written while SET; clock keeps running unchanged"
                );
            }
        }
        self.timer.kick();
    }

    fn periodic_period_ns(&self) -> Option<u128> {
        let r = u32::from(self.cmos[REG_A] & 0x0f);
        let r = match r {
            0 => return None,
            1 | 2 => r + 7,
            r => r,
        };
        // 32768 >> (r - 1) Hz, i.e. 2^(r-1) / 32768 s.
        Some((1u128 << (r - 1)) * 1_000_000_000 / 32_768)
    }

    /// Sets flag `f` in C; if `enable` is set in B and IRQF was clear,
    /// sets IRQF and pulses IRQ 8.
    fn event(&mut self, f: u8, enable: u8) {
        self.cmos[REG_C] |= f;
        if self.cmos[REG_B] & enable != 0 && self.cmos[REG_C] & C_IRQF == 0 {
            self.cmos[REG_C] |= C_IRQF;
            self.irq.pulse();
        }
    }

    /// What the timer thread does when it wakes at `now` (on this
    /// device's clock): the periodic, update and alarm events due by then.
    /// For harnesses that drive the clock themselves.
    pub fn run_timers(&mut self, now: Duration) {
        self.advance(now);
    }

    /// Processes the periodic, update and alarm events due by `now`.
    fn advance(&mut self, now: Duration) {
        if let Some(period) = self.periodic_period_ns() {
            let ticks = now.saturating_sub(self.periodic_start).as_nanos() / period;
            if ticks > self.periodic_ticks {
                self.periodic_ticks = ticks;
                self.event(C_PF, B_PIE);
            }
        }
        if self.set_mode() {
            return;
        }
        let sec = self.guest_secs(now);
        if sec > self.last_sec {
            let from = self
                .last_sec
                .saturating_add(1)
                .max(sec.saturating_sub(86_399));
            self.last_sec = sec;
            self.event(C_UF, B_UIE);
            if (from..=sec).any(|t| self.alarm_matches(t)) {
                self.event(C_AF, B_AIE);
            }
        } else if sec < self.last_sec {
            self.last_sec = sec;
        }
    }

    fn alarm_matches(&self, t: i64) -> bool {
        let tod = t.rem_euclid(86_400) as u32;
        let now = [tod % 60, tod / 60 % 60, tod / 3600];
        let alarm = [
            self.cmos[REG_SECONDS_ALARM],
            self.cmos[REG_MINUTES_ALARM],
            self.cmos[REG_HOURS_ALARM],
        ];
        alarm.iter().zip(now).enumerate().all(|(i, (&a, v))| {
            let cur = if i == 2 {
                self.encode_hour(v)
            } else {
                self.encode_num(v)
            };
            a & 0xc0 == 0xc0 || a == cur
        })
    }

    /// When (on the RTC's monotonic clock) the next enabled interrupt is
    /// due, or None when nothing can interrupt before a register write.
    fn next_deadline(&self) -> Option<Duration> {
        let b = self.cmos[REG_B];
        if self.cmos[REG_C] & C_IRQF != 0 {
            return None; // no new edge until C is read
        }
        let mut next: Option<Duration> = None;
        let mut consider = |d: Duration| {
            next = Some(next.map_or(d, |n| n.min(d)));
        };
        if b & B_PIE != 0 {
            if let Some(period) = self.periodic_period_ns() {
                let ns = (self.periodic_ticks + 1) * period;
                consider(self.periodic_start + duration_from_ns(ns));
            }
        }
        if b & (B_UIE | B_AIE) != 0 && !self.set_mode() {
            let next_ns = i128::from(self.last_sec) + 1;
            let delta = next_ns * NS_PER_SEC - self.base_guest_ns;
            let delta = u128::try_from(delta.max(0)).unwrap_or(0);
            consider(self.base_mono + duration_from_ns(delta));
        }
        next
    }
}

fn duration_from_ns(ns: u128) -> Duration {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX / 2);
    Duration::new(secs, (ns % 1_000_000_000) as u32)
}

fn timer_loop(rtc: Arc<Mutex<Rtc>>, shared: Arc<TimerShared>) {
    debug!("rtc: timer thread started");
    loop {
        let generation = {
            let s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.stop {
                break;
            }
            s.generation
        };
        let wait = {
            let mut r = rtc.lock().unwrap_or_else(|e| e.into_inner());
            let now = (r.clock)();
            r.advance(now);
            r.next_deadline().map(|d| d.saturating_sub(now))
        };
        let start = Instant::now();
        let mut s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stop {
                debug!("rtc: timer thread stopped");
                return;
            }
            if s.generation != generation {
                break;
            }
            match wait {
                None => s = shared.cv.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(w) => {
                    let Some(left) = w.checked_sub(start.elapsed()).filter(|l| !l.is_zero()) else {
                        break;
                    };
                    s = shared
                        .cv
                        .wait_timeout(s, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }
    debug!("rtc: timer thread stopped");
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i as u64) {
                // The index register is write-only.
                Some(0) => 0xff,
                Some(1) => self.read_register(self.index),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => {
                    self.index = b & 0x7f;
                    self.nmi_masked = b & 0x80 != 0;
                }
                Some(1) => self.write_register(self.index, b),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::RecordingIrq;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// 2024-02-29 12:34:56 UTC, a Thursday.
    const LEAP_DAY: u64 = 1_709_210_096;
    const MS: u64 = 1_000_000;

    struct Rig {
        rtc: Rtc,
        irq: Arc<RecordingIrq>,
        now: Arc<AtomicU64>,
    }

    fn rig_at(unix: u64) -> Rig {
        let irq = RecordingIrq::new();
        let now = Arc::new(AtomicU64::new(0));
        let n = now.clone();
        let rtc = Rtc::with_clocks(
            irq.clone(),
            Duration::from_secs(unix),
            Arc::new(move || Duration::from_nanos(n.load(Ordering::SeqCst))),
        );
        Rig { rtc, irq, now }
    }

    impl Rig {
        fn set_ms(&self, ms: u64) {
            self.now.store(ms * MS, Ordering::SeqCst);
        }
        fn set_ns(&self, ns: u64) {
            self.now.store(ns, Ordering::SeqCst);
        }
        /// Through the ports, as a guest does it.
        fn rd(&mut self, reg: u8) -> u8 {
            self.rtc.write(0, &[reg | 0x80]);
            let mut b = [0u8];
            self.rtc.read(1, &mut b);
            b[0]
        }
        fn wr(&mut self, reg: u8, v: u8) {
            self.rtc.write(0, &[reg]);
            self.rtc.write(1, &[v]);
        }
        fn clock(&mut self) -> [u8; 8] {
            [0u8, 2, 4, 6, 7, 8, 9, 0x32].map(|r| self.rd(r))
        }
    }

    #[test]
    fn calendar_math() {
        for t in [0i64, 951_782_400, LEAP_DAY as i64, 4_107_542_400, -86_400] {
            assert_eq!(DateTime::from_unix(t).to_unix(), t);
        }
        let d = DateTime::from_unix(LEAP_DAY as i64);
        assert_eq!((d.year, d.month, d.day), (2024, 2, 29));
        assert_eq!((d.hour, d.min, d.sec, d.weekday), (12, 34, 56, 4));
        assert_eq!(DateTime::from_unix(0).weekday, 4);
        assert_eq!(from_bcd(0x59), Some(59));
        assert_eq!(from_bcd(0x5a), None);
        assert_eq!(to_bcd(7), 0x07);
    }

    #[test]
    fn reset_state_registers() {
        let mut r = rig_at(LEAP_DAY);
        assert_eq!(r.rd(0x0a), 0x26);
        assert_eq!(r.rd(0x0b), 0x02);
        assert_eq!(r.rd(0x0c), 0x00);
        assert_eq!(r.rd(0x0d), 0x80);
        assert_eq!(r.rd(0x10), 0x00, "no floppy");
        assert_eq!(r.rd(0x14), 0x06);
        assert_eq!([r.rd(0x15), r.rd(0x16)], [0x80, 0x02]);
        // D is read-only.
        r.wr(0x0d, 0);
        assert_eq!(r.rd(0x0d), 0x80);
    }

    #[test]
    fn time_in_bcd_binary_and_12h() {
        let mut r = rig_at(LEAP_DAY);
        assert_eq!(r.clock(), [0x56, 0x34, 0x12, 0x05, 0x29, 0x02, 0x24, 0x20]);
        r.wr(0x0b, B_24H | B_DM_BINARY);
        assert_eq!(r.clock(), [56, 34, 12, 5, 29, 2, 24, 20]);
        // 12-hour: 12:34 is 12 PM.
        r.wr(0x0b, 0);
        assert_eq!(r.rd(4), 0x92);
        r.wr(0x0b, B_DM_BINARY);
        assert_eq!(r.rd(4), 0x8c);
        // Midnight is 12 AM, one in the afternoon 1 PM.
        let mut r = rig_at(LEAP_DAY - (12 * 3600 + 34 * 60 + 56));
        r.wr(0x0b, 0);
        assert_eq!(r.rd(4), 0x12);
        r.set_ms(13 * 3600 * 1000);
        assert_eq!(r.rd(4), 0x81);
    }

    #[test]
    fn clock_advances_and_rolls_over_the_century() {
        // 1999-12-31 23:59:59, a Friday.
        let mut r = rig_at(946_684_799);
        assert_eq!(r.clock(), [0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19]);
        r.set_ms(999);
        assert_eq!(r.rd(0), 0x59);
        r.set_ms(1000);
        assert_eq!(r.clock(), [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]);
        r.set_ms(1000 + 86_400_000 * 60);
        assert_eq!(r.clock(), [0x00, 0x00, 0x00, 0x04, 0x01, 0x03, 0x00, 0x20]);
        // Wed 2000-03-01
    }

    #[test]
    fn uip_brackets_each_update() {
        let mut r = rig_at(LEAP_DAY);
        r.set_ms(500);
        assert_eq!(r.rd(0x0a) & A_UIP, 0);
        r.set_ns(997_771_000); // 2229 us before the boundary
        assert_eq!(r.rd(0x0a) & A_UIP, 0);
        r.set_ns(997_773_000);
        assert_eq!(r.rd(0x0a) & A_UIP, A_UIP);
        assert_eq!(r.rd(0), 0x56, "old second while updating");
        r.set_ns(999_999_999);
        assert_eq!(r.rd(0x0a) & A_UIP, A_UIP);
        r.set_ns(1_000_000_000);
        assert_eq!(r.rd(0x0a) & A_UIP, 0);
        assert_eq!(r.rd(0), 0x57, "new second once UIP falls");
        // UIP cannot be written; the rest of A can.
        r.wr(0x0a, 0xff);
        assert_eq!(r.rd(0x0a), 0x7f);
        // While SET, no updates: UIP stays 0.
        r.wr(0x0b, B_SET | B_24H);
        r.set_ns(1_999_000_000);
        assert_eq!(r.rd(0x0a) & A_UIP, 0);
    }

    #[test]
    fn field_writes_move_the_clock() {
        let mut r = rig_at(LEAP_DAY);
        r.set_ms(250);
        // SeaBIOS INT 1Ah/03: seconds, minutes, hours, then B.
        r.wr(0, 0x05);
        r.wr(2, 0x10);
        r.wr(4, 0x08);
        assert_eq!(r.clock()[..3], [0x05, 0x10, 0x08]);
        // The sub-second phase is kept: 750 ms later it is :06.
        r.set_ms(999);
        assert_eq!(r.rd(0), 0x05);
        r.set_ms(1000);
        assert_eq!(r.rd(0), 0x06);
        // Date fields; the weekday follows the date.
        r.wr(7, 0x01);
        r.wr(8, 0x03);
        r.wr(9, 0x25);
        assert_eq!(r.clock()[3..], [0x07, 0x01, 0x03, 0x25, 0x20]); // Sat 2025-03-01
        r.wr(6, 0x02);
        assert_eq!(r.rd(6), 0x07, "weekday writes are ignored");
        r.wr(0x32, 0x19);
        assert_eq!(r.clock()[6..], [0x25, 0x19]);
        // Invalid values are ignored.
        for (reg, v) in [
            (0u8, 0x60u8),
            (0, 0x5a),
            (2, 0x99),
            (4, 0x24),
            (7, 0x00),
            (8, 0x13),
        ] {
            let before = r.clock();
            r.wr(reg, v);
            assert_eq!(r.clock(), before, "reg {reg:#x} = {v:#x}");
        }
        // 12-hour writes: 3 PM.
        r.wr(0x0b, 0);
        r.wr(4, 0x83);
        r.wr(0x0b, B_24H);
        assert_eq!(r.rd(4), 0x15);
    }

    #[test]
    fn set_bit_freezes_and_restarts() {
        let mut r = rig_at(LEAP_DAY);
        r.wr(0x0b, B_SET | B_24H | B_UIE);
        assert_eq!(r.rd(0x0b), B_SET | B_24H, "SET clears UIE");
        r.set_ms(5000);
        assert_eq!(r.rd(0), 0x56, "frozen");
        // Program 2030-06-15 08:00:00 while frozen.
        for (reg, v) in [
            (0, 0x00),
            (2, 0x00),
            (4, 0x08),
            (7, 0x15),
            (8, 0x06),
            (9, 0x30),
        ] {
            r.wr(reg, v);
        }
        assert_eq!(r.rd(4), 0x08);
        r.wr(0x0b, B_24H);
        assert_eq!(r.clock(), [0x00, 0x00, 0x08, 0x07, 0x15, 0x06, 0x30, 0x20]);
        r.set_ms(6000);
        assert_eq!(r.rd(0), 0x01);
        // Garbage while SET: the clock keeps its time.
        r.wr(0x0b, B_SET | B_24H);
        r.wr(8, 0x77);
        r.wr(0x0b, B_24H);
        assert_eq!(r.rd(8), 0x06);
    }

    #[test]
    fn periodic_rates() {
        let mut r = rig_at(LEAP_DAY);
        let mut period = |a: u8| {
            r.wr(0x0a, 0x20 | a);
            r.rtc.periodic_period_ns()
        };
        assert_eq!(period(0), None);
        assert_eq!(period(1), Some(3_906_250)); // 256 Hz
        assert_eq!(period(2), Some(7_812_500)); // 128 Hz
        assert_eq!(period(3), Some(122_070)); // 8192 Hz
        assert_eq!(period(6), Some(976_562)); // 1024 Hz
        assert_eq!(period(15), Some(500_000_000)); // 2 Hz
    }

    #[test]
    fn periodic_flag_and_interrupt() {
        let mut r = rig_at(LEAP_DAY);
        // Update-ended flags come every second too; these checks ignore UF.
        r.wr(0x0a, 0x2f); // 2 Hz
        r.set_ms(499);
        assert_eq!((r.rd(0x0c) & !C_UF), 0);
        r.set_ms(500);
        // PF is set without PIE, but no interrupt.
        assert_eq!((r.rd(0x0c) & !C_UF), C_PF);
        assert_eq!((r.rd(0x0c) & !C_UF), 0, "read clears");
        assert_eq!(r.irq.raised_count(), 0);
        r.wr(0x0b, B_24H | B_PIE);
        r.set_ms(1000);
        r.rtc.advance(Duration::from_millis(1000));
        assert_eq!(r.irq.raised_count(), 1);
        assert!(!r.irq.level(), "a pulse, not a held level");
        // Not read yet: the next period sets flags but sends no new edge.
        r.set_ms(1500);
        r.rtc.advance(Duration::from_millis(1500));
        assert_eq!(r.irq.raised_count(), 1);
        assert_eq!((r.rd(0x0c) & !C_UF), C_IRQF | C_PF);
        r.set_ms(2000);
        r.rtc.advance(Duration::from_millis(2000));
        assert_eq!(r.irq.raised_count(), 2);
        // Changing the rate restarts the phase.
        r.set_ms(2100);
        r.wr(0x0a, 0x2e); // 4 Hz
        assert_eq!((r.rd(0x0c) & !C_UF), C_IRQF | C_PF);
        r.set_ms(2349);
        assert_eq!((r.rd(0x0c) & !C_UF), 0);
        r.set_ms(2350);
        assert_eq!((r.rd(0x0c) & !C_UF), C_IRQF | C_PF);
    }

    #[test]
    fn update_and_alarm_interrupts() {
        let mut r = rig_at(LEAP_DAY); // 12:34:56
        r.wr(0x0a, 0x20); // no periodic flags in the way
        r.wr(0x0b, B_24H | B_UIE);
        r.set_ms(999);
        assert_eq!(r.rd(0x0c), 0);
        r.set_ms(1000);
        assert_eq!(r.rd(0x0c), C_IRQF | C_UF);
        assert_eq!(r.irq.raised_count(), 1);
        // Alarm at 12:35:00 (BCD), AIE only.
        r.wr(0x0b, B_24H | B_AIE);
        r.wr(1, 0x00);
        r.wr(3, 0x35);
        r.wr(5, 0x12);
        r.set_ms(3000); // 12:34:59
        assert_eq!(r.rd(0x0c), C_UF, "UF without UIE: flag only");
        r.set_ms(4000); // 12:35:00
        assert_eq!(r.rd(0x0c), C_IRQF | C_AF | C_UF);
        assert_eq!(r.irq.raised_count(), 2);
        r.set_ms(5000);
        assert_eq!(r.rd(0x0c), C_UF);
        // Don't-care hours and minutes: every minute at :30.
        r.wr(3, 0xc0);
        r.wr(5, 0xff);
        r.wr(1, 0x30);
        r.set_ms(34_000); // 12:35:30
        assert_eq!(r.rd(0x0c), C_IRQF | C_AF | C_UF);
        // A long gap still finds a match inside it.
        r.set_ms(34_000 + 3_600_000);
        assert_eq!(r.rd(0x0c) & C_AF, C_AF);
        // All don't-care: every second.
        r.wr(1, 0xc0);
        r.set_ms(34_000 + 3_601_000);
        assert_eq!(r.rd(0x0c) & C_AF, C_AF);
    }

    #[test]
    fn deadlines_only_for_enabled_events() {
        let mut r = rig_at(LEAP_DAY);
        assert_eq!(r.rtc.next_deadline(), None);
        r.wr(0x0a, 0x26);
        assert_eq!(r.rtc.next_deadline(), None, "rate set but PIE off");
        r.wr(0x0b, B_24H | B_PIE);
        assert_eq!(
            r.rtc.next_deadline(),
            Some(Duration::from_nanos(976_562)),
            "1024 Hz from the rate write"
        );
        r.wr(0x0b, B_24H | B_UIE);
        r.set_ms(200);
        r.rtc.advance(Duration::from_millis(200));
        assert_eq!(r.rtc.next_deadline(), Some(Duration::from_secs(1)));
        r.set_ms(1000);
        r.rtc.advance(Duration::from_millis(1000));
        assert_eq!(r.rtc.next_deadline(), None, "IRQF pending: nothing to do");
        r.rd(0x0c);
        assert_eq!(r.rtc.next_deadline(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn index_port_and_hostile_values() {
        let mut r = rig_at(LEAP_DAY);
        r.rtc.write(0, &[0x8a]);
        assert_eq!(r.rtc.index(), 0x0a);
        assert!(r.rtc.nmi_masked());
        r.rtc.write(0, &[0x0a]);
        assert!(!r.rtc.nmi_masked());
        // Index beyond 127 is masked.
        r.rtc.write(0, &[0xff]);
        assert_eq!(r.rtc.index(), 0x7f);
        r.rtc.write(1, &[0x42]);
        assert_eq!(r.rd(0x7f), 0x42);
        assert_eq!(r.rtc.read_register(0xff), 0x42);
        r.rtc.write_register(0xc0, 0x99); // 0xc0 & 0x7f = 0x40
        assert_eq!(r.rd(0x40), 0x99);
        // The index port is write-only.
        let mut b = [0u8];
        r.rtc.read(0, &mut b);
        assert_eq!(b, [0xff]);
        // A word write at 0x70 is index then data.
        r.rtc.write(0, &[0x41, 0x77]);
        assert_eq!(r.rd(0x41), 0x77);
        // Odd widths and offsets.
        let mut w = [0u8; 4];
        r.rtc.read(0, &mut w);
        assert_eq!(w, [0xff, 0x77, 0xff, 0xff]);
        r.rtc.read(u64::MAX, &mut w);
        assert_eq!(w, [0xff; 4]);
        r.rtc.write(u64::MAX, &[1, 2, 3]);
        r.rtc.write(2, &[1, 2, 3]);
        // C is read-only.
        r.wr(0x0c, 0xff);
        assert_eq!(r.rd(0x0c), 0);
        // Binary mode with out-of-range values: ignored, no panic.
        r.wr(0x0b, B_24H | B_DM_BINARY);
        for reg in [0u8, 2, 4, 7, 8, 9, 0x32] {
            r.wr(reg, 0xff);
        }
        assert_eq!(r.rd(9), 24);
        assert_eq!(r.rd(0x32), 20);
    }

    #[test]
    fn cmos_layout_for_seabios() {
        let mut r = rig_at(LEAP_DAY);
        r.rtc.set_memory_size(256 << 20, 0);
        let b = |r: &mut Rig, lo: u8| u16::from_le_bytes([r.rd(lo), r.rd(lo + 1)]);
        assert_eq!(b(&mut r, 0x15), 640);
        assert_eq!(b(&mut r, 0x17), 0xffff);
        assert_eq!(b(&mut r, 0x30), 0xffff);
        assert_eq!(b(&mut r, 0x34), 0x0f00);
        // SeaBIOS: RamSize = (0x34 << 16 | 0x35 << 24) + 16 MiB.
        let rs = (u32::from(r.rd(0x34)) << 16 | u32::from(r.rd(0x35)) << 24) + (16 << 20);
        assert_eq!(rs, 256 << 20);
        assert_eq!([r.rd(0x5b), r.rd(0x5c), r.rd(0x5d)], [0, 0, 0]);

        r.rtc.set_memory_size(15 << 20, 0);
        assert_eq!(b(&mut r, 0x17), 14 * 1024);
        assert_eq!(b(&mut r, 0x30), 14 * 1024);
        assert_eq!(b(&mut r, 0x34), 0);

        r.rtc.set_memory_size(3 << 30, 5 << 30);
        assert_eq!(b(&mut r, 0x34), 0xbf00);
        let high =
            u64::from(r.rd(0x5b)) << 16 | u64::from(r.rd(0x5c)) << 24 | u64::from(r.rd(0x5d)) << 32;
        assert_eq!(high, 5 << 30);
        r.rtc.set_memory_size(u64::MAX, u64::MAX);
        assert_eq!(b(&mut r, 0x34), 0xffff);
        assert_eq!([r.rd(0x5b), r.rd(0x5c), r.rd(0x5d)], [0xff; 3]);

        r.rtc.set_cpus(4);
        assert_eq!(r.rd(0x5f), 3);
        r.rtc.set_cpus(0);
        assert_eq!(r.rd(0x5f), 0);
        r.rtc.set_cpus(1000);
        assert_eq!(r.rd(0x5f), 0xff);

        r.rtc.set_boot_order(&[BootDevice::Cdrom, BootDevice::Disk]);
        assert_eq!(r.rd(0x3d), 0x23);
        assert_eq!(r.rd(0x38), 0x01);
        r.rtc
            .set_boot_order(&[BootDevice::Disk, BootDevice::Cdrom, BootDevice::Network]);
        assert_eq!(r.rd(0x3d), 0x32);
        assert_eq!(r.rd(0x38), 0x41);
    }

    #[test]
    fn timer_thread_delivers_and_stops() {
        let irq = RecordingIrq::new();
        let rtc = Arc::new(Mutex::new(Rtc::new(irq.clone())));
        let timer = Rtc::start_timer(rtc.clone()).unwrap();
        // 1024 Hz periodic interrupt, as SeaBIOS's rtc_use().
        {
            let mut r = rtc.lock().unwrap();
            r.write_register(0x0a, 0x26);
            r.write_register(0x0b, B_24H | B_PIE);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // Act as the guest's ISR: read C after each edge.
        let mut serviced = 0;
        while serviced < 5 && Instant::now() < deadline {
            if irq.raised_count() > serviced {
                let c = rtc.lock().unwrap().read_register(0x0c);
                assert_eq!(c & (C_IRQF | C_PF), C_IRQF | C_PF);
                serviced += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(serviced, 5, "five periodic interrupts within 5 s");
        // PIE off: no more edges.
        {
            let mut r = rtc.lock().unwrap();
            r.write_register(0x0b, B_24H);
            r.read_register(0x0c);
        }
        let n = irq.raised_count();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(irq.raised_count(), n);
        drop(timer);
        // The thread let go of the RTC.
        assert_eq!(Arc::strong_count(&rtc), 1);
    }

    #[test]
    fn reset_keeps_time_and_cmos() {
        let mut r = rig_at(LEAP_DAY);
        r.rtc.set_cpus(2);
        r.wr(0x0b, B_24H | B_PIE | B_AIE | B_UIE | B_SQWE);
        r.set_ms(1000);
        r.rtc.advance(Duration::from_secs(1));
        r.rtc.reset();
        assert_eq!(r.rd(0x0b), B_24H | B_UIE);
        assert_eq!(r.rd(0x0c), 0);
        assert_eq!(r.rd(0x5f), 1);
        assert_eq!(r.rd(0), 0x57);
    }
}
