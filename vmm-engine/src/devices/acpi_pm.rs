//! ACPI fixed-hardware PM1 registers at I/O base 0x600 (insert at
//! [`ACPI_PM_BASE`], length [`ACPI_PM_LEN`]):
//!
//! | port  | register                  | width |
//! |-------|---------------------------|-------|
//! | 0x600 | PM1a_STS (write 1 to clear) | 16  |
//! | 0x602 | PM1a_EN                   | 16    |
//! | 0x604 | PM1a_CNT                  | 16    |
//! | 0x608 | PM_TMR (read-only)        | 32    |
//!
//! The FADT must say: PM1a_EVT_BLK 0x600 (PM1_EVT_LEN 4), PM1a_CNT_BLK
//! 0x604 (PM1_CNT_LEN 2), PM_TMR_BLK 0x608 (PM_TMR_LEN 4), SCI_INT 9,
//! SMI_CMD 0 (no SMI: the machine is always in ACPI mode, SCI_EN reads 1),
//! and flag TMR_VAL_EXT (bit 8) CLEAR: the PM timer is 24 bits wide and
//! wraps at 2^24 (bits 31:24 read 0). The \_S5 package is {0, 0}: writing
//! SLP_EN with SLP_TYP 0 (0x2000 to 0x604) powers off. Other sleep types
//! are logged and ignored (no S1..S4).
//!
//! Events: the power button ([`AcpiPm::press_power_button`]) sets
//! PWRBTN_STS. The SCI ([`IrqLine`], level) is high while any status bit
//! that has its enable bit set is set (PWRBTN, SLPBTN, RTC, GBL, TMR);
//! clearing the status or the enable drops it. TMR_STS is set when bit 23
//! of the timer changes (computed when the status is read) but the timer
//! does not raise the SCI on its own: nothing polls it. There is no GPE
//! block (the FADT's GPE0_BLK should be 0) and no sleep button source.
//! Accesses of any width and alignment inside the 12 bytes are served byte
//! by byte; bytes 6 and 7 are reserved and read 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::devices::{BusDevice, IrqLine, PowerEvent, PowerHandle};

/// I/O base of the PM1 block.
pub const ACPI_PM_BASE: u64 = 0x600;
/// Length of the range [`AcpiPm`] answers.
pub const ACPI_PM_LEN: u64 = 12;
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The ISA IRQ the SCI uses.
pub const SCI_IRQ: u32 = 9;

pub const PM1_TMR_STS: u16 = 1 << 0;
pub const PM1_BM_STS: u16 = 1 << 4;
pub const PM1_GBL_STS: u16 = 1 << 5;
pub const PM1_PWRBTN_STS: u16 = 1 << 8;
pub const PM1_SLPBTN_STS: u16 = 1 << 9;
pub const PM1_RTC_STS: u16 = 1 << 10;
pub const PM1_WAK_STS: u16 = 1 << 15;

/// Enable bits (same positions as their status bits).
const EN_MASK: u16 = PM1_TMR_STS | PM1_GBL_STS | PM1_PWRBTN_STS | PM1_SLPBTN_STS | PM1_RTC_STS;
const STS_MASK: u16 = EN_MASK | PM1_BM_STS | PM1_WAK_STS;

pub const CNT_SCI_EN: u16 = 1 << 0;
pub const CNT_BM_RLD: u16 = 1 << 1;
pub const CNT_GBL_RLS: u16 = 1 << 2;
pub const CNT_SLP_EN: u16 = 1 << 13;
const CNT_SLP_TYP_SHIFT: u16 = 10;
const CNT_SLP_TYP_MASK: u16 = 7 << CNT_SLP_TYP_SHIFT;
/// SLP_TYP value for S5 (soft off) on this machine.
pub const SLP_TYP_S5: u16 = 0;

const TMR_MASK: u32 = 0x00ff_ffff;

/// A monotonic clock: time since some fixed point.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The PM1 event, control and timer registers.
pub struct AcpiPm {
    status: u16,
    enable: u16,
    control: u16,
    sci: Arc<dyn IrqLine>,
    sci_level: bool,
    power: PowerHandle,
    clock: Clock,
    /// Timer value when TMR_STS was last cleared (bit 23 reference).
    tmr_ref: u32,
}

impl AcpiPm {
    /// The registers; `sci` is IRQ 9 (level), `power` gets S5 requests.
    pub fn new(sci: Arc<dyn IrqLine>, power: PowerHandle) -> Self {
        let start = Instant::now();
        Self::with_clock(sci, power, Arc::new(move || start.elapsed()))
    }

    /// As [`AcpiPm::new`], with the timer driven by `clock` (tests).
    pub fn with_clock(sci: Arc<dyn IrqLine>, power: PowerHandle, clock: Clock) -> Self {
        let mut pm = AcpiPm {
            status: 0,
            enable: 0,
            control: CNT_SCI_EN,
            sci,
            sci_level: false,
            power,
            clock,
            tmr_ref: 0,
        };
        pm.tmr_ref = pm.timer();
        pm
    }

    /// The PM timer: 24 bits at 3.579545 MHz.
    pub fn timer(&self) -> u32 {
        let ns = (self.clock)().as_nanos();
        let ticks = ns * u128::from(PM_TIMER_HZ) / 1_000_000_000;
        (ticks as u32) & TMR_MASK
    }

    /// The user pressed the power button: PWRBTN_STS is set and, if the
    /// guest enabled PWRBTN_EN, the SCI is raised. An ACPI guest then
    /// shuts down and writes S5.
    pub fn press_power_button(&mut self) {
        info!("acpi: power button pressed");
        self.status |= PM1_PWRBTN_STS;
        self.update_sci();
    }

    /// Machine reset: status, enables and sleep type cleared, SCI low.
    pub fn reset(&mut self) {
        self.status = 0;
        self.enable = 0;
        self.control = CNT_SCI_EN;
        self.tmr_ref = self.timer();
        self.update_sci();
    }

    /// PM1a_STS as the guest reads it.
    pub fn status(&mut self) -> u16 {
        if (self.timer() ^ self.tmr_ref) & (1 << 23) != 0 {
            self.status |= PM1_TMR_STS;
        }
        self.status
    }
    pub fn enable(&self) -> u16 {
        self.enable
    }
    /// PM1a_CNT as the guest reads it (SLP_EN and GBL_RLS read 0).
    pub fn control(&self) -> u16 {
        self.control
    }
    /// Whether the SCI is asserted.
    pub fn sci_asserted(&self) -> bool {
        self.sci_level
    }

    fn update_sci(&mut self) {
        let level = self.status & self.enable & EN_MASK != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    fn write_status(&mut self, clear: u16) {
        let clear = clear & STS_MASK;
        if clear & PM1_TMR_STS != 0 {
            self.tmr_ref = self.timer();
        }
        self.status &= !clear;
        self.update_sci();
    }

    fn write_enable(&mut self, v: u16) {
        self.enable = v & EN_MASK;
        self.update_sci();
    }

    fn write_control(&mut self, v: u16) {
        // SCI_EN stays 1; SLP_EN and GBL_RLS are write-only actions.
        self.control = CNT_SCI_EN | (v & (CNT_BM_RLD | CNT_SLP_TYP_MASK));
        if v & CNT_GBL_RLS != 0 {
            debug!("acpi: GBL_RLS written (no firmware lock to release)");
        }
        if v & CNT_SLP_EN != 0 {
            let typ = (v & CNT_SLP_TYP_MASK) >> CNT_SLP_TYP_SHIFT;
            if typ == SLP_TYP_S5 {
                info!("acpi: guest entered S5, powering off");
                self.power.request(PowerEvent::PowerOff);
            } else {
                crate::guest_warn!(
                    "acpi: guest asked for sleep type {typ}, which is not supported; ignored"
                );
            }
        }
    }

    /// The 12 bytes of the block; `timer` is sampled once per access.
    fn register_bytes(&mut self) -> [u8; 12] {
        let mut b = [0u8; 12];
        let st = self.status();
        b[0..2].copy_from_slice(&st.to_le_bytes());
        b[2..4].copy_from_slice(&self.enable.to_le_bytes());
        b[4..6].copy_from_slice(&self.control.to_le_bytes());
        b[8..12].copy_from_slice(&self.timer().to_le_bytes());
        b
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let regs = self.register_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| regs.get(o))
                .copied()
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Gather the written bytes per 16-bit register: (value, byte mask).
        let mut regs = [(0u16, 0u16); 3];
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i as u64).filter(|o| *o < 6) else {
                continue;
            };
            let (v, m) = &mut regs[(o / 2) as usize];
            let shift = (o % 2) * 8;
            *v |= u16::from(b) << shift;
            *m |= 0xff << shift;
        }
        let [(sv, sm), (ev, em), (cv, cm)] = regs;
        if sm != 0 {
            // Write-one-to-clear: unwritten bytes clear nothing.
            self.write_status(sv & sm);
        }
        if em != 0 {
            self.write_enable((self.enable & !em) | (ev & em));
        }
        if cm != 0 {
            self.write_control((self.control & !cm) | (cv & cm));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::RecordingIrq;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Rig {
        pm: AcpiPm,
        sci: Arc<RecordingIrq>,
        events: Arc<std::sync::Mutex<Vec<PowerEvent>>>,
        now_ns: Arc<AtomicU64>,
    }

    fn rig() -> Rig {
        let sci = RecordingIrq::new();
        let (power, events) = PowerHandle::recording();
        let now_ns = Arc::new(AtomicU64::new(0));
        let n = now_ns.clone();
        let pm = AcpiPm::with_clock(
            sci.clone(),
            power,
            Arc::new(move || Duration::from_nanos(n.load(Ordering::SeqCst))),
        );
        Rig {
            pm,
            sci,
            events,
            now_ns,
        }
    }

    fn r16(pm: &mut AcpiPm, off: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    fn r32(pm: &mut AcpiPm, off: u64) -> u32 {
        let mut b = [0u8; 4];
        pm.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn reset_values() {
        let mut r = rig();
        assert_eq!(r16(&mut r.pm, 0), 0);
        assert_eq!(r16(&mut r.pm, 2), 0);
        assert_eq!(r16(&mut r.pm, 4), CNT_SCI_EN);
        assert_eq!(r16(&mut r.pm, 6), 0);
        assert_eq!(r32(&mut r.pm, 8), 0);
        assert!(!r.sci.level());
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz_and_wraps_at_24_bits() {
        let mut r = rig();
        r.now_ns.store(1_000_000_000, Ordering::SeqCst);
        assert_eq!(r32(&mut r.pm, 8), 3_579_545);
        r.now_ns.store(1_000, Ordering::SeqCst);
        assert_eq!(r32(&mut r.pm, 8), 3); // 3.58 ticks
                                          // 2^24 ticks = 4.687 s: wraps.
        let wrap_ns = (1u64 << 24) * 1_000_000_000 / PM_TIMER_HZ + 1;
        r.now_ns.store(wrap_ns, Ordering::SeqCst);
        assert!(r32(&mut r.pm, 8) < 4);
        r.now_ns.store(10 * 1_000_000_000, Ordering::SeqCst);
        assert_eq!(r32(&mut r.pm, 8), 35_795_450 & 0xff_ffff);
        // Byte reads of the timer, and it is read-only.
        let mut b = [0u8; 1];
        r.pm.read(11, &mut b);
        assert_eq!(b, [0]);
        r.pm.read(8, &mut b);
        assert_eq!(b[0], (35_795_450u32 & 0xff) as u8);
        r.pm.write(8, &[0, 0, 0, 0]);
        assert_eq!(r32(&mut r.pm, 8), 35_795_450 & 0xff_ffff);
    }

    #[test]
    fn tmr_sts_on_bit_23_toggle() {
        let mut r = rig();
        // Bit 23 flips after 2^23 ticks (2.34 s).
        r.now_ns.store(2_000_000_000, Ordering::SeqCst);
        assert_eq!(r16(&mut r.pm, 0) & PM1_TMR_STS, 0);
        r.now_ns.store(2_400_000_000, Ordering::SeqCst);
        assert_ne!(r16(&mut r.pm, 0) & PM1_TMR_STS, 0);
        // The timer alone never raises the SCI here.
        r.pm.write(2, &PM1_TMR_STS.to_le_bytes());
        r.pm.write(0, &PM1_TMR_STS.to_le_bytes());
        assert_eq!(r16(&mut r.pm, 0) & PM1_TMR_STS, 0);
    }

    #[test]
    fn power_button_raises_sci_when_enabled() {
        let mut r = rig();
        r.pm.press_power_button();
        assert_eq!(r16(&mut r.pm, 0), PM1_PWRBTN_STS);
        assert!(!r.sci.level(), "not enabled yet");
        // Enabling with the status pending raises the SCI.
        r.pm.write(2, &PM1_PWRBTN_STS.to_le_bytes());
        assert_eq!(r16(&mut r.pm, 2), PM1_PWRBTN_STS);
        assert!(r.sci.level());
        // Writing 0 to the status clears nothing.
        r.pm.write(0, &[0, 0]);
        assert!(r.sci.level());
        // W1C through a byte write to the high byte.
        r.pm.write(1, &[0x01]);
        assert_eq!(r16(&mut r.pm, 0), 0);
        assert!(!r.sci.level());
        // Press again with the enable already set.
        r.pm.press_power_button();
        assert!(r.sci.level());
        assert_eq!(r.sci.raised_count(), 2);
        // Disabling drops the SCI but keeps the status.
        r.pm.write(2, &[0, 0]);
        assert!(!r.sci.level());
        assert_eq!(r16(&mut r.pm, 0), PM1_PWRBTN_STS);
        assert!(r.events.lock().unwrap().is_empty());
    }

    #[test]
    fn enable_mask_and_dword_event_access() {
        let mut r = rig();
        // A dword write at 0x600: status (clear nothing) + enable.
        r.pm.write(0, &[0, 0, 0xff, 0xff]);
        assert_eq!(r16(&mut r.pm, 2), EN_MASK);
        r.pm.press_power_button();
        let mut d = [0u8; 4];
        r.pm.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), u32::from(EN_MASK) << 16 | 0x100);
        // Reserved status bits cannot be set or cleared into existence.
        r.pm.write(0, &[0xff, 0xff]);
        assert_eq!(r16(&mut r.pm, 0), 0);
    }

    #[test]
    fn s5_powers_off() {
        let mut r = rig();
        r.pm.write(4, &0x2000u16.to_le_bytes());
        assert_eq!(*r.events.lock().unwrap(), vec![PowerEvent::PowerOff]);
        // SLP_EN reads back 0, SCI_EN stays 1.
        assert_eq!(r16(&mut r.pm, 4), CNT_SCI_EN);
    }

    #[test]
    fn s5_by_byte_write_and_other_sleep_types() {
        let mut r = rig();
        // Other sleep types: stored, not acted on.
        r.pm.write(4, &(CNT_SLP_EN | 5 << 10).to_le_bytes());
        r.pm.write(4, &(CNT_SLP_EN | 1 << 10).to_le_bytes());
        assert!(r.events.lock().unwrap().is_empty());
        assert_eq!(r16(&mut r.pm, 4), CNT_SCI_EN | 1 << 10);
        // Writing SCI_EN 0 does not leave ACPI mode.
        r.pm.write(4, &[0x00]);
        assert_eq!(r16(&mut r.pm, 4) & CNT_SCI_EN, CNT_SCI_EN);
        // High byte only: SLP_EN | SLP_TYP 0.
        r.pm.write(5, &[0x20]);
        assert_eq!(*r.events.lock().unwrap(), vec![PowerEvent::PowerOff]);
    }

    #[test]
    fn hostile_accesses() {
        let mut r = rig();
        let mut big = [0u8; 16];
        r.pm.read(0, &mut big);
        assert_eq!(&big[12..], &[0xff; 4]);
        r.pm.read(u64::MAX, &mut big);
        assert_eq!(big, [0xff; 16]);
        r.pm.write(u64::MAX - 1, &[0xff; 8]);
        r.pm.write(6, &[0xff, 0xff, 0xff]);
        r.pm.write(3, &[0xff, 0x20, 0x20]);
        // The write covering 0x603..0x605 set enables and SLP_EN|S5.
        assert_eq!(*r.events.lock().unwrap(), vec![PowerEvent::PowerOff]);
        assert_eq!(r16(&mut r.pm, 6), 0);
    }

    #[test]
    fn reset_clears_and_drops_sci() {
        let mut r = rig();
        r.pm.write(2, &PM1_PWRBTN_STS.to_le_bytes());
        r.pm.write(4, &(1u16 << 10).to_le_bytes());
        r.pm.press_power_button();
        assert!(r.sci.level());
        r.pm.reset();
        assert!(!r.sci.level());
        assert_eq!(r16(&mut r.pm, 0), 0);
        assert_eq!(r16(&mut r.pm, 2), 0);
        assert_eq!(r16(&mut r.pm, 4), CNT_SCI_EN);
    }
}
