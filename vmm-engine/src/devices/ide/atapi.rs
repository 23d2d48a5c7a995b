//! ATAPI CD/DVD-ROM: the PACKET protocol (12-byte CDB, byte-count limit,
//! interrupt reason in the sector-count register) over PIO or DMA, and the
//! MMC commands a BIOS, a boot loader and Linux's sr driver use: TEST UNIT
//! READY, REQUEST SENSE, INQUIRY, READ CAPACITY, READ(10)/(12), READ CD
//! (user data only), SEEK, READ TOC (formats 0, 1, 2), MODE SENSE(10)
//! (pages 0x01, 0x2A, 0x3F), GET CONFIGURATION, GET EVENT STATUS
//! NOTIFICATION, PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT, READ DISC
//! INFORMATION, MECHANISM STATUS, SET CD SPEED. Anything else is ILLEGAL
//! REQUEST / INVALID COMMAND OPERATION CODE. The medium is an ISO image of
//! 2048-byte sectors; writes of any kind are refused.

use super::{
    ata::{self, put_string, words_to_bytes},
    padded, status, Chan, Channel, DmaError, DmaReq, Drive, Media, PioEnd, PrdWalker, Slot,
};
use crate::block::DiskImage;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

pub const CD_SECTOR: u64 = 2048;
/// CDs hold at most this many 2048-byte sectors; larger media are DVDs.
const CD_MAX_SECTORS: u64 = 80 * 60 * 75;

/// Sense keys.
pub mod sense {
    pub const NO_SENSE: u8 = 0x00;
    pub const NOT_READY: u8 = 0x02;
    pub const MEDIUM_ERROR: u8 = 0x03;
    pub const ILLEGAL_REQUEST: u8 = 0x05;
    pub const UNIT_ATTENTION: u8 = 0x06;
}

/// Additional sense codes.
pub mod asc {
    pub const ILLEGAL_OPCODE: u8 = 0x20;
    pub const LBA_OUT_OF_RANGE: u8 = 0x21;
    pub const INVALID_FIELD: u8 = 0x24;
    pub const MEDIUM_MAY_HAVE_CHANGED: u8 = 0x28;
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: u8 = 0x39;
    pub const MEDIUM_NOT_PRESENT: u8 = 0x3a;
    pub const MEDIA_REMOVAL_PREVENTED: u8 = 0x53;
    pub const UNRECOVERED_READ_ERROR: u8 = 0x11;
}

/// MMC opcodes.
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const INQUIRY: u8 = 0x12;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const SEEK_10: u8 = 0x2b;
    pub const READ_TOC: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4a;
    pub const READ_DISC_INFORMATION: u8 = 0x51;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_12: u8 = 0xa8;
    pub const SET_CD_SPEED: u8 = 0xbb;
    pub const MECHANISM_STATUS: u8 = 0xbd;
    pub const READ_CD: u8 = 0xbe;
}

/// Interrupt reason bits (in the sector-count register).
pub const IR_COD: u8 = 0x01;
pub const IR_IO: u8 = 0x02;

/// Where the data of an ATAPI data-in phase comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A reply built in memory.
    Reply(Vec<u8>),
    /// Bytes of the medium starting at this byte offset.
    Medium(u64),
}

/// A CD-ROM drive and its medium.
pub(crate) struct Cd {
    image: Option<Arc<dyn DiskImage>>,
    serial: String,
    sense_key: u8,
    asc: u8,
    tray_open: bool,
    locked: bool,
    /// A medium change the guest has not been told about (UNIT ATTENTION).
    changed: bool,
    /// A NEW MEDIA event for GET EVENT STATUS NOTIFICATION.
    new_media_event: bool,
    /// The data-in phase in progress.
    src: Source,
    /// Bytes sent so far and in total.
    sent: u64,
    total: u64,
    /// PACKET with the DMA bit.
    dma: bool,
}

impl Cd {
    pub(crate) fn new(image: Option<Arc<dyn DiskImage>>, channel: Channel, slot: Slot) -> Self {
        Cd {
            image,
            serial: format!("VR{:02}{:02}0000000000", channel as u8, slot as u8),
            sense_key: 0,
            asc: 0,
            tray_open: false,
            locked: false,
            changed: false,
            new_media_event: false,
            src: Source::Reply(Vec::new()),
            sent: 0,
            total: 0,
            dma: false,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.sense_key = 0;
        self.asc = 0;
        self.src = Source::Reply(Vec::new());
        self.sent = 0;
        self.total = 0;
        self.dma = false;
        if self.changed {
            self.sense_key = sense::UNIT_ATTENTION;
            self.asc = asc::MEDIUM_MAY_HAVE_CHANGED;
        }
    }

    pub(crate) fn change_media(&mut self, image: Option<Arc<dyn DiskImage>>) {
        let inserted = image.is_some();
        self.image = image;
        self.tray_open = false;
        if inserted {
            self.changed = true;
            self.new_media_event = true;
            self.sense_key = sense::UNIT_ATTENTION;
            self.asc = asc::MEDIUM_MAY_HAVE_CHANGED;
        }
    }

    /// Number of 2048-byte sectors of the medium (0 when none).
    pub(crate) fn sectors(&self) -> u64 {
        match &self.image {
            Some(i) if !self.tray_open => i.size() / CD_SECTOR,
            _ => 0,
        }
    }

    fn present(&self) -> bool {
        self.sectors() > 0
    }

    fn identify(&self) -> Vec<u8> {
        let mut w = [0u16; 256];
        // ATAPI, CD-ROM, removable, DRQ within 50us, 12-byte packets.
        w[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5);
        put_string(&mut w[10..20], &self.serial);
        w[20] = 3;
        w[21] = 512;
        w[22] = 4;
        put_string(&mut w[23..27], "1.0");
        put_string(&mut w[27..47], "VIREO DVD-ROM");
        w[48] = 1;
        w[49] = (1 << 9) | (1 << 8); // LBA, DMA
        w[53] = 7;
        w[62] = 7;
        w[63] = 7;
        w[64] = 3;
        w[65] = 0xb4;
        w[66] = 0xb4;
        w[67] = 0x12c;
        w[68] = 0xb4;
        w[71] = 30;
        w[72] = 30;
        w[80] = 0x1e; // ATA/ATAPI-1 .. 4
        w[88] = 0x3f | (1 << 13);
        words_to_bytes(&w)
    }
}

fn cd(d: &mut Drive) -> Option<&mut Cd> {
    match &mut d.media {
        Media::Cd(c) => Some(c),
        _ => None,
    }
}

fn be16(b: &[u8], at: usize) -> u32 {
    (b.get(at).copied().unwrap_or(0) as u32) << 8 | b.get(at + 1).copied().unwrap_or(0) as u32
}

fn be32(b: &[u8], at: usize) -> u32 {
    be16(b, at) << 16 | be16(b, at + 2)
}

fn lba_to_msf(lba: u64) -> [u8; 3] {
    let l = lba + 150;
    [((l / 75) / 60) as u8, ((l / 75) % 60) as u8, (l % 75) as u8]
}

/// What a packet command does next.
enum Reply {
    /// Completes without data.
    Ok,
    /// CHECK CONDITION with this sense key and ASC.
    Error(u8, u8),
    /// A data-in phase of `len` bytes (clipped to the allocation length).
    Data(Source, u64),
}

impl Chan {
    pub(crate) fn atapi_exec(&mut self, mem: &GuestMemoryMmap<()>, unit: usize, c: u8) {
        let d = &mut self.drives[unit];
        match c {
            ata::cmd::PACKET => {
                // Overlapped commands are not supported.
                if d.feature & 0x02 != 0 {
                    return self.abort_irq(unit, 0);
                }
                let dma = d.feature & 0x01 != 0;
                if let Some(cd) = cd(d) {
                    cd.dma = dma;
                }
                d.error = 0;
                d.status = status::DRDY | status::DSC;
                d.nsector = IR_COD; // command packet, host to device
                d.transfer_start(vec![0; 12], PioEnd::AtapiPacket);
                // No interrupt: the host polls for DRQ before the packet.
                let _ = mem;
            }
            ata::cmd::IDENTIFY_PACKET_DEVICE => {
                let Some(id) = cd(d).map(|c| c.identify()) else {
                    return self.abort_irq(unit, 0);
                };
                d.error = 0;
                d.status = status::DRDY | status::DSC;
                d.transfer_start(id, PioEnd::Stop);
                self.raise_irq();
            }
            ata::cmd::IDENTIFY_DEVICE => {
                // An ATAPI device aborts IDENTIFY DEVICE and shows its
                // signature, which is how drivers tell it from a disk.
                d.abort(0);
                d.set_signature();
                self.raise_irq();
            }
            ata::cmd::DEVICE_RESET => {
                d.transfer_stop();
                d.dma = None;
                d.set_signature();
                d.status = 0;
                d.error = 0x01;
                if let Some(cd) = cd(d) {
                    cd.reset();
                }
            }
            ata::cmd::EXECUTE_DEVICE_DIAGNOSTIC => self.execute_diagnostic(),
            ata::cmd::CHECK_POWER_MODE => {
                d.nsector = 0xff;
                self.complete(unit);
            }
            ata::cmd::SET_FEATURES => match d.feature {
                0x03 | 0x02 | 0x82 | 0x66 | 0xcc | 0x55 | 0xaa => self.complete(unit),
                _ => self.abort_irq(unit, 0),
            },
            ata::cmd::IDLE_IMMEDIATE | ata::cmd::STANDBY_IMMEDIATE | ata::cmd::SLEEP => {
                self.complete(unit)
            }
            ata::cmd::NOP => self.abort_irq(unit, 0),
            // Reads, writes and everything else of the ATA set.
            _ => self.abort_irq(unit, 0),
        }
    }

    /// Ends a packet command successfully.
    fn atapi_ok(&mut self, unit: usize) {
        let d = &mut self.drives[unit];
        d.transfer_stop();
        d.error = 0;
        d.status = status::DRDY | status::DSC;
        d.nsector = (d.nsector & !7) | IR_IO | IR_COD;
        self.raise_irq();
    }

    /// Ends a packet command with CHECK CONDITION.
    fn atapi_error(&mut self, unit: usize, key: u8, code: u8) {
        let d = &mut self.drives[unit];
        d.transfer_stop();
        d.dma = None;
        d.error = key << 4;
        d.status = status::DRDY | status::ERR;
        d.nsector = (d.nsector & !7) | IR_IO | IR_COD;
        if let Some(c) = cd(d) {
            c.sense_key = key;
            c.asc = code;
        }
        self.raise_irq();
    }

    /// The 12-byte packet has been written: run it.
    pub(crate) fn atapi_packet(&mut self, mem: &GuestMemoryMmap<()>, unit: usize) {
        let d = &mut self.drives[unit];
        let packet = std::mem::take(&mut d.buf);
        d.transfer_stop();
        let Some(c) = cd(d) else {
            return;
        };
        let opcode = packet.first().copied().unwrap_or(0);
        let reply = c.command(&packet);
        match reply {
            Reply::Ok => self.atapi_ok(unit),
            Reply::Error(k, a) => self.atapi_error(unit, k, a),
            Reply::Data(_, 0) => self.atapi_ok(unit),
            Reply::Data(src, len) => {
                let d = &mut self.drives[unit];
                let bcl = (d.hcyl as u32) << 8 | d.lcyl as u32;
                let Some(c) = cd(d) else {
                    return;
                };
                c.src = src;
                c.sent = 0;
                c.total = len;
                if c.dma {
                    let _ = opcode;
                    self.dma_request(mem, unit, DmaReq::Atapi);
                } else if bcl == 0 {
                    // A data command with no byte count limit is an ATA
                    // level error.
                    self.abort_irq(unit, 0);
                } else {
                    self.atapi_pio_next(unit);
                }
            }
        }
    }

    /// PIO data-in: offers the next DRQ block, or completes.
    pub(crate) fn atapi_pio_next(&mut self, unit: usize) {
        let d = &mut self.drives[unit];
        let mut bcl = (d.hcyl as u64) << 8 | d.lcyl as u64;
        let Media::Cd(c) = &mut d.media else {
            return d.transfer_stop();
        };
        let left = c.total - c.sent;
        if left == 0 {
            return self.atapi_ok(unit);
        }
        if bcl == 0xffff {
            bcl = 0xfffe;
        }
        let mut size = left;
        if size > bcl {
            // A limit smaller than what is left must be even.
            size = bcl & !1;
        }
        if size == 0 {
            return self.abort_irq(unit, 0);
        }
        let mut buf = vec![0u8; size as usize];
        if c.fill(&mut buf, c.sent).is_err() {
            return self.atapi_error(unit, sense::MEDIUM_ERROR, asc::UNRECOVERED_READ_ERROR);
        }
        c.sent += size;
        d.lcyl = size as u8;
        d.hcyl = (size >> 8) as u8;
        d.nsector = (d.nsector & !7) | IR_IO;
        d.status = status::DRDY | status::DSC;
        d.transfer_start(buf, PioEnd::AtapiData);
        self.raise_irq();
    }

    /// DMA data-in along the PRD table.
    pub(crate) fn atapi_dma(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        prd: &mut PrdWalker,
        unit: usize,
    ) -> Result<(), DmaError> {
        let d = &mut self.drives[unit];
        let Some(c) = cd(d) else {
            return Err(DmaError::Device);
        };
        let mut buf = Vec::new();
        while c.sent < c.total {
            let n = (c.total - c.sent).min(0x10000) as usize;
            buf.resize(n, 0);
            if c.fill(&mut buf, c.sent).is_err() {
                c.sense_key = sense::MEDIUM_ERROR;
                c.asc = asc::UNRECOVERED_READ_ERROR;
                d.status = status::DRDY | status::ERR;
                d.error = sense::MEDIUM_ERROR << 4;
                d.nsector = (d.nsector & !7) | IR_IO | IR_COD;
                return Err(DmaError::Device);
            }
            prd.write_all(mem, &buf)?;
            c.sent += n as u64;
        }
        d.error = 0;
        d.status = status::DRDY | status::DSC;
        d.nsector = (d.nsector & !7) | IR_IO | IR_COD;
        Ok(())
    }
}

impl Cd {
    /// Copies data-phase bytes `[at, at + out.len())` into `out`.
    fn fill(&self, out: &mut [u8], at: u64) -> Result<(), ()> {
        match &self.src {
            Source::Reply(r) => {
                let start = usize::try_from(at).map_err(|_| ())?;
                let end = start.checked_add(out.len()).ok_or(())?;
                let src = r.get(start..end).ok_or(())?;
                out.copy_from_slice(src);
                Ok(())
            }
            Source::Medium(base) => {
                let img = self.image.as_ref().ok_or(())?;
                let off = base.checked_add(at).ok_or(())?;
                img.read_at(out, off).map_err(|_| ())
            }
        }
    }

    fn set_sense(&mut self, key: u8, code: u8) {
        self.sense_key = key;
        self.asc = code;
    }

    /// Decodes and runs one packet command.
    fn command(&mut self, p: &[u8]) -> Reply {
        let opcode = p.first().copied().unwrap_or(0);
        // Commands that may run while a unit attention is pending; they do
        // not consume it (REQUEST SENSE reports it).
        let allow_ua = matches!(
            opcode,
            op::REQUEST_SENSE
                | op::INQUIRY
                | op::GET_CONFIGURATION
                | op::GET_EVENT_STATUS_NOTIFICATION
        );
        if !allow_ua {
            if self.sense_key == sense::UNIT_ATTENTION && self.changed {
                self.changed = false;
                return Reply::Error(sense::UNIT_ATTENTION, asc::MEDIUM_MAY_HAVE_CHANGED);
            }
            // Sense data describe the last command only.
            self.set_sense(sense::NO_SENSE, 0);
        }
        let needs_medium = matches!(
            opcode,
            op::TEST_UNIT_READY
                | op::READ_CAPACITY
                | op::READ_10
                | op::READ_12
                | op::READ_CD
                | op::SEEK_10
                | op::READ_TOC
                | op::READ_DISC_INFORMATION
        );
        if needs_medium && !self.present() {
            return Reply::Error(sense::NOT_READY, asc::MEDIUM_NOT_PRESENT);
        }
        let total = self.sectors();
        match opcode {
            op::TEST_UNIT_READY => Reply::Ok,
            op::REQUEST_SENSE => {
                let alloc = p.get(4).copied().unwrap_or(0) as u64;
                let mut b = vec![0u8; 18];
                b[0] = 0x70 | 0x80;
                b[2] = self.sense_key;
                b[7] = 10;
                b[12] = self.asc;
                if self.sense_key == sense::UNIT_ATTENTION {
                    self.changed = false;
                }
                self.set_sense(sense::NO_SENSE, 0);
                reply(b, alloc)
            }
            op::INQUIRY => {
                if p.get(1).copied().unwrap_or(0) & 1 != 0 {
                    // No vital product data pages.
                    return Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD);
                }
                let alloc = be16(p, 3) as u64;
                let mut b = vec![0u8; 36];
                b[0] = 0x05; // CD/DVD device
                b[1] = 0x80; // removable
                b[2] = 0x00;
                b[3] = 0x21;
                b[4] = 31;
                b[8..16].copy_from_slice(&padded("VIREO", 8));
                b[16..32].copy_from_slice(&padded("VIREO DVD-ROM", 16));
                b[32..36].copy_from_slice(&padded("1.0", 4));
                reply(b, alloc)
            }
            op::READ_CAPACITY => {
                let mut b = vec![0u8; 8];
                b[0..4].copy_from_slice(&((total - 1).min(0xffff_ffff) as u32).to_be_bytes());
                b[4..8].copy_from_slice(&(CD_SECTOR as u32).to_be_bytes());
                reply(b, 8)
            }
            op::READ_10 | op::READ_12 => {
                let lba = be32(p, 2) as u64;
                let count = if opcode == op::READ_10 {
                    be16(p, 7) as u64
                } else {
                    be32(p, 6) as u64
                };
                self.read(lba, count, total)
            }
            op::READ_CD => {
                let lba = be32(p, 2) as u64;
                let count = (p.get(6).copied().unwrap_or(0) as u64) << 16 | be16(p, 7) as u64;
                match p.get(9).copied().unwrap_or(0) & 0xf8 {
                    0x00 => Reply::Ok,
                    0x10 => self.read(lba, count, total),
                    _ => Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD),
                }
            }
            op::SEEK_10 => {
                if be32(p, 2) as u64 >= total {
                    Reply::Error(sense::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE)
                } else {
                    Reply::Ok
                }
            }
            op::READ_TOC => self.read_toc(p, total),
            op::MODE_SENSE_10 => self.mode_sense(p),
            op::GET_CONFIGURATION => {
                if p.get(2).copied().unwrap_or(0) != 0 || p.get(3).copied().unwrap_or(0) != 0 {
                    return Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD);
                }
                let alloc = be16(p, 7) as u64;
                let mut b = vec![0u8; 20];
                let current: u16 = if !self.present() {
                    0
                } else if total > CD_MAX_SECTORS {
                    0x0010
                } else {
                    0x0008
                };
                b[6..8].copy_from_slice(&current.to_be_bytes());
                // Feature 0: profile list.
                b[10] = 0x03; // persistent, current
                b[11] = 8;
                b[12..14].copy_from_slice(&0x0010u16.to_be_bytes());
                b[14] = (current == 0x0010) as u8;
                b[16..18].copy_from_slice(&0x0008u16.to_be_bytes());
                b[18] = (current == 0x0008) as u8;
                let len = b.len() as u32 - 4;
                b[0..4].copy_from_slice(&len.to_be_bytes());
                reply(b, alloc)
            }
            op::GET_EVENT_STATUS_NOTIFICATION => {
                if p.get(1).copied().unwrap_or(0) & 1 == 0 {
                    // Only polled mode.
                    return Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD);
                }
                let alloc = be16(p, 7) as u64;
                let class = p.get(4).copied().unwrap_or(0);
                let mut b = vec![0u8; 4];
                b[3] = 1 << 4; // media class supported
                if class & (1 << 4) != 0 {
                    b[2] = 4; // media class
                    let event = if self.new_media_event && !self.tray_open {
                        self.new_media_event = false;
                        2 // new media
                    } else {
                        0
                    };
                    let media_status = if self.tray_open {
                        1
                    } else if self.image.is_some() {
                        2
                    } else {
                        0
                    };
                    b.extend_from_slice(&[event, media_status, 0, 0]);
                } else {
                    b[2] = 0x80; // no event available
                }
                let len = (b.len() - 4) as u16;
                b[0..2].copy_from_slice(&len.to_be_bytes());
                reply(b, alloc)
            }
            op::PREVENT_ALLOW_MEDIUM_REMOVAL => {
                self.locked = p.get(4).copied().unwrap_or(0) & 1 != 0;
                Reply::Ok
            }
            op::START_STOP_UNIT => {
                let b4 = p.get(4).copied().unwrap_or(0);
                let start = b4 & 1 != 0;
                let loej = b4 & 2 != 0;
                if b4 & 0xf0 == 0 && loej {
                    if !start && !self.tray_open && self.locked {
                        let key = if self.image.is_some() {
                            sense::NOT_READY
                        } else {
                            sense::ILLEGAL_REQUEST
                        };
                        return Reply::Error(key, asc::MEDIA_REMOVAL_PREVENTED);
                    }
                    self.tray_open = !start;
                }
                Reply::Ok
            }
            op::READ_DISC_INFORMATION => {
                if p.get(1).copied().unwrap_or(0) & 7 != 0 {
                    return Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD);
                }
                let alloc = be16(p, 7) as u64;
                let mut b = vec![0u8; 34];
                b[1] = 32;
                b[2] = 0x0e; // last session complete, disc finalized
                b[3] = 1;
                b[4] = 1;
                b[5] = 1;
                b[6] = 1;
                b[7] = 0x20;
                reply(b, alloc)
            }
            op::MECHANISM_STATUS => {
                let alloc = be16(p, 8) as u64;
                let mut b = vec![0u8; 8];
                b[5] = 1;
                reply(b, alloc)
            }
            op::SET_CD_SPEED => Reply::Ok,
            _ => Reply::Error(sense::ILLEGAL_REQUEST, asc::ILLEGAL_OPCODE),
        }
    }

    fn read(&mut self, lba: u64, count: u64, total: u64) -> Reply {
        match lba.checked_add(count) {
            Some(end) if end <= total => {}
            _ => return Reply::Error(sense::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE),
        }
        if count == 0 {
            return Reply::Ok;
        }
        Reply::Data(Source::Medium(lba * CD_SECTOR), count * CD_SECTOR)
    }

    fn read_toc(&mut self, p: &[u8], total: u64) -> Reply {
        let alloc = be16(p, 7) as u64;
        let format = p.get(9).copied().unwrap_or(0) >> 6 | (p.get(2).copied().unwrap_or(0) & 0x0f);
        let msf = p.get(1).copied().unwrap_or(0) & 2 != 0;
        let start_track = p.get(6).copied().unwrap_or(0);
        let addr = |lba: u64| -> [u8; 4] {
            if msf {
                let m = lba_to_msf(lba);
                [0, m[0], m[1], m[2]]
            } else {
                (lba as u32).to_be_bytes()
            }
        };
        match format {
            0 => {
                if start_track > 1 && start_track != 0xaa {
                    return Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD);
                }
                let mut b = vec![0u8, 0, 1, 1];
                if start_track <= 1 {
                    b.extend_from_slice(&[0, 0x14, 1, 0]);
                    b.extend_from_slice(&addr(0));
                }
                b.extend_from_slice(&[0, 0x16, 0xaa, 0]);
                b.extend_from_slice(&addr(total));
                let len = (b.len() - 2) as u16;
                b[0..2].copy_from_slice(&len.to_be_bytes());
                reply(b, alloc)
            }
            1 => {
                // One session, whose first track is track 1 at LBA 0.
                let mut b = vec![0u8; 12];
                b[1] = 0x0a;
                b[2] = 1;
                b[3] = 1;
                b[5] = 0x14;
                b[6] = 1;
                reply(b, alloc)
            }
            2 => {
                let mut b = vec![0u8, 0, 1, 1];
                let lead_out = lba_to_msf(total);
                let start = lba_to_msf(0);
                for (point, pm) in [
                    (0xa0u8, [1u8, 0, 0]),
                    (0xa1, [1, 0, 0]),
                    (0xa2, lead_out),
                    (1, start),
                ] {
                    b.extend_from_slice(&[1, 0x14, 0, point, 0, 0, 0, 0, pm[0], pm[1], pm[2]]);
                }
                let len = (b.len() - 2) as u16;
                b[0..2].copy_from_slice(&len.to_be_bytes());
                reply(b, alloc)
            }
            _ => Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD),
        }
    }

    fn mode_sense(&mut self, p: &[u8]) -> Reply {
        let alloc = be16(p, 7) as u64;
        let b2 = p.get(2).copied().unwrap_or(0);
        let control = b2 >> 6;
        let code = b2 & 0x3f;
        if control == 3 {
            return Reply::Error(sense::ILLEGAL_REQUEST, asc::SAVING_PARAMETERS_NOT_SUPPORTED);
        }
        if control != 0 {
            return Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD);
        }
        let error_page = [0x01u8, 6, 0x00, 0x05, 0, 0, 0, 0];
        let mut caps = [0u8; 22];
        caps[0] = 0x2a;
        caps[1] = 20;
        caps[2] = 0x3b; // reads CD-R/RW, DVD-ROM/R/RAM
        caps[4] = 0x71; // audio play, multisession, mode 2 forms
        caps[5] = 3 << 5;
        caps[6] = 1 | (1 << 3) | (1 << 5) | if self.locked { 1 << 1 } else { 0 };
        caps[8..10].copy_from_slice(&704u16.to_be_bytes());
        caps[11] = 2;
        caps[12..14].copy_from_slice(&512u16.to_be_bytes());
        caps[14..16].copy_from_slice(&704u16.to_be_bytes());
        let mut b = vec![0u8; 8];
        b[2] = 0x70; // medium type: no disc / door closed
        match code {
            0x01 => b.extend_from_slice(&error_page),
            0x2a => b.extend_from_slice(&caps),
            0x3f => {
                b.extend_from_slice(&error_page);
                b.extend_from_slice(&caps);
            }
            _ => return Reply::Error(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD),
        }
        let len = (b.len() - 2) as u16;
        b[0..2].copy_from_slice(&len.to_be_bytes());
        reply(b, alloc)
    }
}

fn reply(b: Vec<u8>, alloc: u64) -> Reply {
    let len = (b.len() as u64).min(alloc);
    Reply::Data(Source::Reply(b), len)
}
