//! PIIX3 IDE: PCI function 8086:7010 at 00:01.1 with two legacy channels
//! (primary 0x1F0-0x1F7 + 0x3F6 on IRQ 14, secondary 0x170-0x177 + 0x376
//! on IRQ 15) and the bus-master DMA registers in BAR4 (16 I/O ports).
//!
//! Each channel has a master and a slave slot; a slot holds an ATA disk
//! ([`ata`]), an ATAPI CD-ROM ([`atapi`]) or nothing. The task-file
//! registers behave as in QEMU's `hw/ide/core.c`: writes go to both drives
//! of a channel, reads come from the selected one, a missing drive reads a
//! status of 0 and ignores commands, the control register's SRST resets
//! both and leaves the signatures (0x14/0xEB for ATAPI) in LBA mid/high.
//!
//! Interrupts: a device interrupt sets the channel's INTRQ and the
//! bus-master status IRQ bit; the line is driven high while INTRQ is set and
//! nIEN is clear; reading the status register (not the alternate status)
//! clears INTRQ, as on hardware.
//!
//! I/O is synchronous: a PIO block is read from the image when the command
//! is written (or when the previous block has been consumed), and a DMA
//! transfer runs to completion inside the port write that starts the bus
//! master (so a vCPU waits for the disk; moving DMA to the I/O thread is
//! future work). Every guest value is checked: sectors past the end of the disk
//! are refused with IDNF, PRD tables are read with vm-memory's checked
//! accessors and walked at most 64 KiB, a fault aborts the command with the
//! bus-master error bit set.
//!
//! The bus master's direction bit is not checked against the command (as
//! in QEMU); the command decides which way the data go.
//!
//! Missing: the PIIX timing registers only store what is written (the
//! decode-enable bits 0x40/0x42 bit 15 start set, as SeaBIOS leaves them,
//! and the ports decode regardless); no native-PCI mode; no SMART, no
//! security, no HPA, no TRIM (DATA SET MANAGEMENT); no READ CD raw sectors;
//! no audio commands.

pub mod ata;
pub mod atapi;

use crate::block::DiskImage;
use crate::bus::{BusDevice, SharedDevice};
use crate::devices::pci::{BarKind, BarSpec, PciConfig, PciDevice};
use crate::devices::IrqLine;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// PCI vendor/device of the PIIX3 IDE function.
pub const VENDOR_ID: u16 = 0x8086;
pub const DEVICE_ID: u16 = 0x7010;
/// Mass storage / IDE / prog-if 0x80 (bus master, both channels compat).
pub const CLASS: u32 = 0x01_01_80;
/// devfn 0x09: device 1, function 1.
pub const DEVFN: u8 = 0x09;

/// Legacy port bases.
pub const PRIMARY_CMD: u64 = 0x1f0;
pub const PRIMARY_CTL: u64 = 0x3f6;
pub const SECONDARY_CMD: u64 = 0x170;
pub const SECONDARY_CTL: u64 = 0x376;
pub const PRIMARY_IRQ: u32 = 14;
pub const SECONDARY_IRQ: u32 = 15;

/// Status register bits.
pub mod status {
    pub const ERR: u8 = 0x01;
    pub const DRQ: u8 = 0x08;
    pub const DSC: u8 = 0x10;
    pub const DF: u8 = 0x20;
    pub const DRDY: u8 = 0x40;
    pub const BSY: u8 = 0x80;
}

/// Error register bits.
pub mod error {
    pub const AMNF: u8 = 0x01;
    pub const ABRT: u8 = 0x04;
    pub const IDNF: u8 = 0x10;
    pub const UNC: u8 = 0x40;
}

/// Device control register bits.
pub const CTL_NIEN: u8 = 0x02;
pub const CTL_SRST: u8 = 0x04;
pub const CTL_HOB: u8 = 0x80;

/// Bus-master command/status bits.
pub const BM_CMD_START: u8 = 0x01;
pub const BM_CMD_READ: u8 = 0x08;
pub const BM_ST_ACTIVE: u8 = 0x01;
pub const BM_ST_ERROR: u8 = 0x02;
pub const BM_ST_INT: u8 = 0x04;

/// How far a PRD table may be walked before the transfer is stopped.
pub const PRD_TABLE_MAX: u64 = 64 * 1024;

/// Which channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Primary = 0,
    Secondary = 1,
}

/// Which drive on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Master = 0,
    Slave = 1,
}

/// What the data port does when the current PIO buffer has been drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PioEnd {
    /// Nothing: no transfer in progress.
    Idle,
    /// A one-shot data-in (IDENTIFY): stop.
    Stop,
    /// ATA PIO read: next block or done.
    AtaRead,
    /// ATA PIO write: commit the block, then next or done.
    AtaWrite,
    /// ATAPI: the 12-byte packet has arrived.
    AtapiPacket,
    /// ATAPI: next DRQ block or completion.
    AtapiData,
}

/// A DMA transfer waiting for the bus master to be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DmaReq {
    AtaRead { lba: u64, sectors: u32 },
    AtaWrite { lba: u64, sectors: u32 },
    Atapi,
}

/// What is plugged into a slot.
pub(crate) enum Media {
    None,
    Disk(ata::Disk),
    Cd(atapi::Cd),
}

/// One drive's registers and transfer state.
pub(crate) struct Drive {
    pub(crate) media: Media,
    pub(crate) slave: bool,
    pub(crate) feature: u8,
    pub(crate) hob_feature: u8,
    pub(crate) nsector: u8,
    pub(crate) hob_nsector: u8,
    pub(crate) sector: u8,
    pub(crate) hob_sector: u8,
    pub(crate) lcyl: u8,
    pub(crate) hob_lcyl: u8,
    pub(crate) hcyl: u8,
    pub(crate) hob_hcyl: u8,
    pub(crate) select: u8,
    pub(crate) status: u8,
    pub(crate) error: u8,
    /// The PIO data buffer and how far the guest got in it.
    pub(crate) buf: Vec<u8>,
    pub(crate) pos: usize,
    pub(crate) end: PioEnd,
    pub(crate) dma: Option<DmaReq>,
}

impl Drive {
    fn new(slave: bool) -> Self {
        let mut d = Drive {
            media: Media::None,
            slave,
            feature: 0,
            hob_feature: 0,
            nsector: 0,
            hob_nsector: 0,
            sector: 0,
            hob_sector: 0,
            lcyl: 0,
            hob_lcyl: 0,
            hcyl: 0,
            hob_hcyl: 0,
            select: 0xa0 | if slave { 0x10 } else { 0 },
            status: 0,
            error: 0,
            buf: Vec::new(),
            pos: 0,
            end: PioEnd::Idle,
            dma: None,
        };
        d.reset();
        d
    }

    pub(crate) fn present(&self) -> bool {
        !matches!(self.media, Media::None)
    }

    pub(crate) fn is_cd(&self) -> bool {
        matches!(self.media, Media::Cd(_))
    }

    /// The signature a reset or diagnostic leaves in the task file.
    pub(crate) fn set_signature(&mut self) {
        self.select &= 0xf0;
        self.nsector = 1;
        self.sector = 1;
        let (l, h) = match self.media {
            Media::Cd(_) => (0x14, 0xeb),
            Media::Disk(_) => (0, 0),
            Media::None => (0xff, 0xff),
        };
        self.lcyl = l;
        self.hcyl = h;
    }

    /// Power-on / SRST reset of this drive.
    pub(crate) fn reset(&mut self) {
        self.feature = 0;
        self.hob_feature = 0;
        self.hob_nsector = 0;
        self.hob_sector = 0;
        self.hob_lcyl = 0;
        self.hob_hcyl = 0;
        self.select = 0xa0 | if self.slave { 0x10 } else { 0 };
        self.transfer_stop();
        self.dma = None;
        self.set_signature();
        self.error = 0x01; // diagnostic passed
        self.status = match &mut self.media {
            Media::Disk(d) => {
                d.reset();
                status::DRDY | status::DSC
            }
            Media::Cd(c) => {
                c.reset();
                0
            }
            Media::None => 0,
        };
    }

    /// Starts a PIO transfer of `buf`; DRQ is set unless an error is shown.
    pub(crate) fn transfer_start(&mut self, buf: Vec<u8>, end: PioEnd) {
        self.buf = buf;
        self.pos = 0;
        self.end = end;
        if self.status & status::ERR == 0 {
            self.status |= status::DRQ;
        }
    }

    pub(crate) fn transfer_stop(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
        self.end = PioEnd::Idle;
        self.status &= !status::DRQ;
    }

    /// Ends the command with ABRT (and `extra` error bits).
    pub(crate) fn abort(&mut self, extra: u8) {
        self.transfer_stop();
        self.dma = None;
        self.status = status::DRDY | status::ERR;
        self.error = error::ABRT | extra;
    }
}

/// Bus-master registers of one channel.
#[derive(Default)]
pub(crate) struct BusMaster {
    pub(crate) cmd: u8,
    pub(crate) status: u8,
    pub(crate) prd: u32,
}

/// One IDE channel: two drives, the control register, the IRQ line and the
/// bus master.
pub(crate) struct Chan {
    pub(crate) drives: [Drive; 2],
    pub(crate) unit: usize,
    pub(crate) ctl: u8,
    pub(crate) intrq: bool,
    pub(crate) irq: Arc<dyn IrqLine>,
    pub(crate) bm: BusMaster,
}

impl Chan {
    fn new(irq: Arc<dyn IrqLine>) -> Self {
        Chan {
            drives: [Drive::new(false), Drive::new(true)],
            unit: 0,
            ctl: 0,
            intrq: false,
            irq,
            bm: BusMaster::default(),
        }
    }

    fn update_irq(&self) {
        self.irq.set_level(self.intrq && self.ctl & CTL_NIEN == 0);
    }

    /// A device interrupt.
    pub(crate) fn raise_irq(&mut self) {
        self.bm.status |= BM_ST_INT;
        self.intrq = true;
        self.update_irq();
    }

    fn lower_irq(&mut self) {
        if self.intrq {
            self.intrq = false;
            self.update_irq();
        }
    }

    fn any_present(&self) -> bool {
        self.drives.iter().any(|d| d.present())
    }

    fn hob(&self) -> bool {
        self.ctl & CTL_HOB != 0
    }

    fn read_cmd(&mut self, mem: &GuestMemoryMmap<()>, offset: u64, data: &mut [u8]) {
        if offset == 0 {
            self.read_data(mem, data);
            return;
        }
        let v = self.read_reg(offset);
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn read_reg(&mut self, offset: u64) -> u8 {
        if !self.any_present() {
            return 0;
        }
        let hob = self.hob();
        let d = &self.drives[self.unit & 1];
        match offset {
            1 => {
                if hob {
                    d.hob_feature
                } else {
                    d.error
                }
            }
            2 => {
                if hob {
                    d.hob_nsector
                } else {
                    d.nsector
                }
            }
            3 => {
                if hob {
                    d.hob_sector
                } else {
                    d.sector
                }
            }
            4 => {
                if hob {
                    d.hob_lcyl
                } else {
                    d.lcyl
                }
            }
            5 => {
                if hob {
                    d.hob_hcyl
                } else {
                    d.hcyl
                }
            }
            6 => d.select,
            7 => {
                let st = if d.present() { d.status } else { 0 };
                self.lower_irq();
                st
            }
            _ => 0xff,
        }
    }

    fn alt_status(&self) -> u8 {
        let d = &self.drives[self.unit & 1];
        if d.present() {
            d.status
        } else {
            0
        }
    }

    fn write_cmd(&mut self, mem: &GuestMemoryMmap<()>, offset: u64, data: &[u8]) {
        if offset == 0 {
            self.write_data(mem, data);
            return;
        }
        let Some(&val) = data.first() else {
            return;
        };
        if (1..=6).contains(&offset) {
            self.ctl &= !CTL_HOB;
        }
        match offset {
            1..=5 => {
                for d in self.drives.iter_mut() {
                    let (reg, hob) = match offset {
                        1 => (&mut d.feature, &mut d.hob_feature),
                        2 => (&mut d.nsector, &mut d.hob_nsector),
                        3 => (&mut d.sector, &mut d.hob_sector),
                        4 => (&mut d.lcyl, &mut d.hob_lcyl),
                        _ => (&mut d.hcyl, &mut d.hob_hcyl),
                    };
                    *hob = *reg;
                    *reg = val;
                }
            }
            6 => {
                self.drives[0].select = val & !0x10;
                self.drives[1].select = val | 0x10;
                self.unit = ((val >> 4) & 1) as usize;
            }
            7 => self.exec_command(mem, val),
            _ => {}
        }
    }

    fn write_ctl(&mut self, val: u8) {
        let old = self.ctl;
        if old & CTL_SRST == 0 && val & CTL_SRST != 0 {
            // Reset asserted: busy until released.
            for d in self.drives.iter_mut() {
                d.transfer_stop();
                d.dma = None;
                if d.present() {
                    d.status = status::BSY | status::DSC;
                    d.error = 0x01;
                }
            }
            self.bm.status &= !BM_ST_ACTIVE;
        } else if old & CTL_SRST != 0 && val & CTL_SRST == 0 {
            for d in self.drives.iter_mut() {
                d.reset();
            }
        }
        self.ctl = val;
        self.update_irq();
    }

    fn read_data(&mut self, mem: &GuestMemoryMmap<()>, data: &mut [u8]) {
        let unit = self.unit & 1;
        let d = &mut self.drives[unit];
        if d.status & status::DRQ == 0
            || !matches!(d.end, PioEnd::Stop | PioEnd::AtaRead | PioEnd::AtapiData)
        {
            data.fill(0);
            return;
        }
        for b in data.iter_mut() {
            *b = d.buf.get(d.pos).copied().unwrap_or(0);
            if d.pos < d.buf.len() {
                d.pos += 1;
            }
        }
        if d.pos >= d.buf.len() {
            self.pio_end(mem, unit);
        }
    }

    fn write_data(&mut self, mem: &GuestMemoryMmap<()>, data: &[u8]) {
        let unit = self.unit & 1;
        let d = &mut self.drives[unit];
        if d.status & status::DRQ == 0 || !matches!(d.end, PioEnd::AtaWrite | PioEnd::AtapiPacket) {
            return;
        }
        for &b in data {
            if let Some(slot) = d.buf.get_mut(d.pos) {
                *slot = b;
                d.pos += 1;
            }
        }
        if d.pos >= d.buf.len() {
            self.pio_end(mem, unit);
        }
    }

    /// The PIO buffer of drive `unit` has been drained (or filled).
    fn pio_end(&mut self, mem: &GuestMemoryMmap<()>, unit: usize) {
        let end = self.drives[unit].end;
        match end {
            PioEnd::Idle => {}
            PioEnd::Stop => self.drives[unit].transfer_stop(),
            PioEnd::AtaRead => self.ata_read_next(unit),
            PioEnd::AtaWrite => self.ata_write_block_done(unit),
            PioEnd::AtapiPacket => self.atapi_packet(mem, unit),
            PioEnd::AtapiData => self.atapi_pio_next(unit),
        }
    }

    fn exec_command(&mut self, mem: &GuestMemoryMmap<()>, cmd: u8) {
        let unit = self.unit & 1;
        let d = &mut self.drives[unit];
        if !d.present() {
            // Commands to a missing drive are ignored.
            return;
        }
        // Only DEVICE RESET may interrupt a command in progress.
        if d.status & (status::BSY | status::DRQ) != 0 && cmd != ata::cmd::DEVICE_RESET {
            return;
        }
        if d.is_cd() {
            self.atapi_exec(mem, unit, cmd);
        } else {
            self.ata_exec(mem, unit, cmd);
        }
    }

    /// Ends the command on `unit` with an abort and an interrupt.
    pub(crate) fn abort_irq(&mut self, unit: usize, extra: u8) {
        self.drives[unit].abort(extra);
        self.raise_irq();
    }

    fn read_bm(&self, offset: u64) -> u8 {
        match offset {
            0 => self.bm.cmd,
            2 => self.bm.status,
            4..=7 => self.bm.prd.to_le_bytes()[(offset - 4) as usize],
            _ => 0,
        }
    }

    fn write_bm(&mut self, mem: &GuestMemoryMmap<()>, offset: u64, data: &[u8]) {
        let Some(&val) = data.first() else {
            return;
        };
        match offset {
            0 => {
                let old = self.bm.cmd;
                self.bm.cmd = val & (BM_CMD_START | BM_CMD_READ);
                if old & BM_CMD_START == 0 && val & BM_CMD_START != 0 {
                    self.bm.status |= BM_ST_ACTIVE;
                    self.dma_run(mem);
                } else if old & BM_CMD_START != 0 && val & BM_CMD_START == 0 {
                    // Stopping the engine: a transfer that has not run is
                    // cancelled.
                    self.bm.status &= !BM_ST_ACTIVE;
                }
            }
            2 => {
                // Bits 1 and 2 are write-one-to-clear; 5 and 6 are plain.
                let mut st = self.bm.status;
                st &= !(val & (BM_ST_ERROR | BM_ST_INT));
                st = (st & !0x60) | (val & 0x60);
                self.bm.status = st;
            }
            4..=7 => {
                // Byte-wise writes into the dword; the table is dword aligned.
                let mut bytes = self.bm.prd.to_le_bytes();
                for (i, b) in data.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut((offset - 4) as usize + i) {
                        *slot = *b;
                    }
                }
                self.bm.prd = u32::from_le_bytes(bytes) & !3;
            }
            _ => {}
        }
    }

    /// Issues a DMA request for `unit`; runs it at once when the bus master
    /// is already started.
    pub(crate) fn dma_request(&mut self, mem: &GuestMemoryMmap<()>, unit: usize, req: DmaReq) {
        let d = &mut self.drives[unit];
        d.dma = Some(req);
        d.status = status::DRDY | status::DSC | status::DRQ;
        if self.bm.cmd & BM_CMD_START != 0 {
            self.dma_run(mem);
        }
    }

    fn dma_run(&mut self, mem: &GuestMemoryMmap<()>) {
        let unit = self.unit & 1;
        let Some(req) = self.drives[unit].dma.take() else {
            return;
        };
        let mut prd = PrdWalker::new(self.bm.prd);
        let result = match req {
            DmaReq::AtaRead { lba, sectors } => {
                self.ata_dma(mem, &mut prd, unit, lba, sectors, true)
            }
            DmaReq::AtaWrite { lba, sectors } => {
                self.ata_dma(mem, &mut prd, unit, lba, sectors, false)
            }
            DmaReq::Atapi => self.atapi_dma(mem, &mut prd, unit),
        };
        match result {
            Ok(()) => {
                if prd.exhausted() {
                    self.bm.status &= !BM_ST_ACTIVE;
                }
            }
            Err(DmaError::Memory) | Err(DmaError::NoEot) => {
                self.bm.status = (self.bm.status & !BM_ST_ACTIVE) | BM_ST_ERROR;
                self.drives[unit].abort(0);
            }
            Err(DmaError::Short) => {
                self.bm.status &= !BM_ST_ACTIVE;
                self.drives[unit].abort(0);
            }
            Err(DmaError::Device) => {
                // The device already set its error state.
                self.bm.status &= !BM_ST_ACTIVE;
            }
        }
        self.raise_irq();
    }

    fn reset(&mut self) {
        for d in self.drives.iter_mut() {
            d.reset();
        }
        self.unit = 0;
        self.ctl = 0;
        self.bm = BusMaster::default();
        self.intrq = false;
        self.update_irq();
    }
}

/// Why a DMA transfer stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DmaError {
    /// A PRD entry or buffer lies outside guest RAM.
    Memory,
    /// The table has no end-of-table entry within [`PRD_TABLE_MAX`].
    NoEot,
    /// The table ended before the transfer did.
    Short,
    /// The disk failed; the drive's status already says so.
    Device,
}

/// Walks a physical region descriptor table in guest memory.
pub(crate) struct PrdWalker {
    table: u64,
    next: u64,
    addr: u64,
    len: u32,
    last: bool,
}

impl PrdWalker {
    pub(crate) fn new(table: u32) -> Self {
        PrdWalker {
            table: table as u64,
            next: 0,
            addr: 0,
            len: 0,
            last: false,
        }
    }

    /// True when the table's last entry has been used up exactly.
    pub(crate) fn exhausted(&self) -> bool {
        self.last && self.len == 0
    }

    /// The next piece of guest memory, at most `max` bytes long.
    pub(crate) fn next_segment(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        max: usize,
    ) -> Result<(GuestAddress, usize), DmaError> {
        while self.len == 0 {
            if self.last {
                return Err(DmaError::Short);
            }
            if self.next + 8 > PRD_TABLE_MAX {
                return Err(DmaError::NoEot);
            }
            let mut e = [0u8; 8];
            mem.read_slice(&mut e, GuestAddress(self.table + self.next))
                .map_err(|_| DmaError::Memory)?;
            self.next += 8;
            let addr = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1;
            let count = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let len = count & 0xfffe;
            self.addr = addr as u64;
            self.len = if len == 0 { 0x10000 } else { len };
            self.last = count & 0x8000_0000 != 0;
        }
        let n = (self.len as usize).min(max);
        let at = GuestAddress(self.addr);
        self.addr += n as u64;
        self.len -= n as u32;
        Ok((at, n))
    }

    /// Copies `data` into guest memory along the table.
    pub(crate) fn write_all(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        mut data: &[u8],
    ) -> Result<(), DmaError> {
        while !data.is_empty() {
            let (at, n) = self.next_segment(mem, data.len())?;
            let (head, rest) = data.split_at(n);
            mem.write_slice(head, at).map_err(|_| DmaError::Memory)?;
            data = rest;
        }
        Ok(())
    }
}

/// The PIIX3 IDE function. Share it as `Arc<Mutex<Ide>>`: the PCI root uses
/// it as a [`PciDevice`], and [`Ide::legacy_ports`] gives the fixed ports.
pub struct Ide {
    config: PciConfig,
    mem: GuestMemoryMmap<()>,
    chans: [Chan; 2],
}

impl Ide {
    /// A controller with empty slots. `irq14` and `irq15` are the ISA
    /// interrupt lines of the primary and secondary channel.
    pub fn new(mem: GuestMemoryMmap<()>, irq14: Arc<dyn IrqLine>, irq15: Arc<dyn IrqLine>) -> Self {
        let mut config = PciConfig::new(VENDOR_ID, DEVICE_ID, CLASS, 0);
        config.set_header_type(0);
        config.add_bar(
            4,
            BarSpec {
                kind: BarKind::Io,
                size: 16,
                prefetchable: false,
            },
        );
        // IDETIM primary/secondary (decode enable in bit 15), SIDETIM,
        // UDMACTL, UDMATIM: stored as written.
        config.set_wmask(0x40, &[0xff; 5]);
        config.set_wmask(0x48, &[0xff, 0x00, 0xff, 0xff]);
        config.regs_mut()[0x41] = 0x80;
        config.regs_mut()[0x43] = 0x80;
        Ide {
            config,
            mem,
            chans: [Chan::new(irq14), Chan::new(irq15)],
        }
    }

    /// Puts an ATA disk in a slot (replacing whatever was there).
    pub fn attach_disk(&mut self, channel: Channel, slot: Slot, image: Arc<dyn DiskImage>) {
        let c = &mut self.chans[channel as usize];
        let d = &mut c.drives[slot as usize];
        d.media = Media::Disk(ata::Disk::new(image, channel, slot));
        d.reset();
    }

    /// Puts an ATAPI CD-ROM in a slot, with a medium (an ISO opened
    /// read-only) or empty.
    pub fn attach_cdrom(
        &mut self,
        channel: Channel,
        slot: Slot,
        image: Option<Arc<dyn DiskImage>>,
    ) {
        let c = &mut self.chans[channel as usize];
        let d = &mut c.drives[slot as usize];
        d.media = Media::Cd(atapi::Cd::new(image, channel, slot));
        d.reset();
    }

    /// Changes (or ejects, with None) the medium of the CD-ROM in a slot.
    /// The guest sees UNIT ATTENTION / MEDIUM MAY HAVE CHANGED and a media
    /// event. Returns false when the slot holds no CD-ROM.
    pub fn change_cdrom_media(
        &mut self,
        channel: Channel,
        slot: Slot,
        image: Option<Arc<dyn DiskImage>>,
    ) -> bool {
        let c = &mut self.chans[channel as usize];
        match &mut c.drives[slot as usize].media {
            Media::Cd(cd) => {
                cd.change_media(image);
                true
            }
            _ => false,
        }
    }

    /// Machine reset: every drive and both bus masters.
    pub fn reset(&mut self) {
        for c in self.chans.iter_mut() {
            c.reset();
        }
    }

    /// The legacy fixed port ranges as bus devices, for the port-I/O bus:
    /// `(base, len, device)` for 0x1F0/8, 0x3F6/1, 0x170/8, 0x376/1.
    pub fn legacy_ports(ide: &Arc<Mutex<Ide>>) -> Vec<(u64, u64, SharedDevice)> {
        let port = |chan: usize, ctl: bool| -> SharedDevice {
            Arc::new(Mutex::new(LegacyPort {
                ide: ide.clone(),
                chan,
                ctl,
            }))
        };
        vec![
            (PRIMARY_CMD, 8, port(0, false)),
            (PRIMARY_CTL, 1, port(0, true)),
            (SECONDARY_CMD, 8, port(1, false)),
            (SECONDARY_CTL, 1, port(1, true)),
        ]
    }

    /// A command-block register access (offset 0..8) on `chan`.
    pub fn cmd_read(&mut self, chan: Channel, offset: u64, data: &mut [u8]) {
        let Ide { chans, mem, .. } = self;
        chans[chan as usize].read_cmd(mem, offset, data);
    }
    pub fn cmd_write(&mut self, chan: Channel, offset: u64, data: &[u8]) {
        let Ide { chans, mem, .. } = self;
        chans[chan as usize].write_cmd(mem, offset, data);
    }
    /// The control block: alternate status on read, device control on write.
    pub fn ctl_read(&mut self, chan: Channel, data: &mut [u8]) {
        let v = self.chans[chan as usize].alt_status();
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }
    pub fn ctl_write(&mut self, chan: Channel, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.chans[chan as usize].write_ctl(v);
        }
    }

    fn bm_read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset + i as u64;
            *b = match self.chans.get((o / 8) as usize) {
                Some(c) => c.read_bm(o % 8),
                None => 0xff,
            };
        }
    }

    fn bm_write(&mut self, offset: u64, data: &[u8]) {
        let Ide { chans, mem, .. } = self;
        let ch = (offset / 8) as usize;
        let off = offset % 8;
        let Some(c) = chans.get_mut(ch) else {
            return;
        };
        if (4..8).contains(&off) {
            let n = data.len().min((8 - off) as usize);
            c.write_bm(mem, off, &data[..n]);
            return;
        }
        // Byte registers: a wider write covers the following ones too.
        for (i, b) in data.iter().enumerate() {
            let o = off + i as u64;
            if o >= 4 {
                break;
            }
            c.write_bm(mem, o, std::slice::from_ref(b));
        }
    }
}

fn chan_of(i: usize) -> Channel {
    if i == 0 {
        Channel::Primary
    } else {
        Channel::Secondary
    }
}

/// One legacy port range of the controller, for the port-I/O bus.
struct LegacyPort {
    ide: Arc<Mutex<Ide>>,
    chan: usize,
    ctl: bool,
}

impl BusDevice for LegacyPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut ide = self.ide.lock().unwrap_or_else(|p| p.into_inner());
        if self.ctl {
            ide.ctl_read(chan_of(self.chan), data);
        } else {
            ide.cmd_read(chan_of(self.chan), offset, data);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut ide = self.ide.lock().unwrap_or_else(|p| p.into_inner());
        if self.ctl {
            ide.ctl_write(chan_of(self.chan), data);
        } else {
            ide.cmd_write(chan_of(self.chan), offset, data);
        }
    }
}

impl PciDevice for Ide {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar == 4 {
            self.bm_read(offset, data);
        } else {
            data.fill(0xff);
        }
    }
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == 4 {
            self.bm_write(offset, data);
        }
    }
}

/// Pads `s` with spaces to `len` bytes, as ATA strings are.
pub(crate) fn padded(s: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(len).collect();
    v.resize(len, b' ');
    v
}

#[cfg(test)]
mod tests;
