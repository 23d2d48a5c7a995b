//! ATA hard disk: IDENTIFY DEVICE, PIO and DMA reads and writes (LBA28,
//! LBA48 and CHS), READ/WRITE MULTIPLE, READ VERIFY, FLUSH CACHE, SET
//! FEATURES, INITIALIZE DEVICE PARAMETERS, power-management no-ops and
//! EXECUTE DEVICE DIAGNOSTIC, with the status and error bits QEMU shows.

use super::{
    error, padded, status, Chan, Channel, DmaError, DmaReq, Drive, Media, PioEnd, PrdWalker, Slot,
};
use crate::block::DiskImage;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

/// Command opcodes.
pub mod cmd {
    pub const NOP: u8 = 0x00;
    pub const DEVICE_RESET: u8 = 0x08;
    pub const RECALIBRATE: u8 = 0x10;
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NORETRY: u8 = 0x21;
    pub const READ_SECTORS_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NORETRY: u8 = 0x31;
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const READ_VERIFY: u8 = 0x40;
    pub const READ_VERIFY_NORETRY: u8 = 0x41;
    pub const READ_VERIFY_EXT: u8 = 0x42;
    pub const SEEK: u8 = 0x70;
    pub const EXECUTE_DEVICE_DIAGNOSTIC: u8 = 0x90;
    pub const INITIALIZE_DEVICE_PARAMETERS: u8 = 0x91;
    pub const PACKET: u8 = 0xa0;
    pub const IDENTIFY_PACKET_DEVICE: u8 = 0xa1;
    pub const READ_MULTIPLE: u8 = 0xc4;
    pub const WRITE_MULTIPLE: u8 = 0xc5;
    pub const SET_MULTIPLE_MODE: u8 = 0xc6;
    pub const READ_DMA: u8 = 0xc8;
    pub const READ_DMA_NORETRY: u8 = 0xc9;
    pub const WRITE_DMA: u8 = 0xca;
    pub const WRITE_DMA_NORETRY: u8 = 0xcb;
    pub const STANDBY_IMMEDIATE: u8 = 0xe0;
    pub const IDLE_IMMEDIATE: u8 = 0xe1;
    pub const STANDBY: u8 = 0xe2;
    pub const IDLE: u8 = 0xe3;
    pub const CHECK_POWER_MODE: u8 = 0xe5;
    pub const SLEEP: u8 = 0xe6;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
    pub const IDENTIFY_DEVICE: u8 = 0xec;
    pub const SET_FEATURES: u8 = 0xef;
}

/// Sectors per DRQ block that READ/WRITE MULTIPLE may use at most.
pub const MAX_MULT_SECTORS: u8 = 16;
pub const SECTOR: u64 = 512;
/// Above this many sectors LBA28 and the CHS words report their maxima.
const LBA28_MAX: u64 = 0x0fff_ffff;

/// An ATA disk in a slot.
pub(crate) struct Disk {
    image: Arc<dyn DiskImage>,
    sectors: u64,
    /// Default geometry (IDENTIFY words 1/3/6).
    cyls: u16,
    heads: u16,
    spt: u16,
    /// Current geometry (INITIALIZE DEVICE PARAMETERS; words 54-56).
    cur_heads: u16,
    cur_spt: u16,
    pub(crate) mult_sectors: u8,
    write_cache: bool,
    /// IDENTIFY words 62, 63, 88 (the selected DMA mode lives here).
    dma_words: [u16; 3],
    serial: String,
    /// The PIO transfer in progress.
    xfer_lba: u64,
    xfer_left: u32,
    xfer_block: u32,
    lba48: bool,
}

impl Disk {
    pub(crate) fn new(image: Arc<dyn DiskImage>, channel: Channel, slot: Slot) -> Self {
        let sectors = image.size() / SECTOR;
        let heads = 16u16;
        let spt = 63u16;
        let cyls = (sectors / (heads as u64 * spt as u64)).clamp(1, 16383) as u16;
        Disk {
            image,
            sectors,
            cyls,
            heads,
            spt,
            cur_heads: heads,
            cur_spt: spt,
            mult_sectors: MAX_MULT_SECTORS,
            write_cache: true,
            dma_words: [0x07, 0x07, 0x3f | (1 << 13)],
            serial: format!("VR{:02}{:02}0000000000", channel as u8, slot as u8),
            xfer_lba: 0,
            xfer_left: 0,
            xfer_block: 1,
            lba48: false,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.mult_sectors = MAX_MULT_SECTORS;
        self.xfer_left = 0;
        self.lba48 = false;
        self.cur_heads = self.heads;
        self.cur_spt = self.spt;
    }

    fn cur_cyls(&self) -> u16 {
        let per_cyl = self.cur_heads as u64 * self.cur_spt as u64;
        if per_cyl == 0 {
            return 0;
        }
        (self.sectors / per_cyl).min(16383) as u16
    }

    /// The 256 words of IDENTIFY DEVICE, as bytes.
    pub(crate) fn identify(&self) -> Vec<u8> {
        let mut w = [0u16; 256];
        w[0] = 0x0040;
        w[1] = self.cyls;
        w[3] = self.heads;
        w[4] = 512 * self.spt;
        w[5] = 512;
        w[6] = self.spt;
        put_string(&mut w[10..20], &self.serial);
        w[20] = 3;
        w[21] = 512;
        w[22] = 4;
        put_string(&mut w[23..27], "1.0");
        put_string(&mut w[27..47], "VIREO HARDDISK");
        w[47] = 0x8000 | MAX_MULT_SECTORS as u16;
        w[48] = 1; // dword I/O
        w[49] = (1 << 11) | (1 << 9) | (1 << 8); // IORDY, LBA, DMA
        w[51] = 0x200;
        w[52] = 0x200;
        w[53] = 1 | (1 << 1) | (1 << 2); // words 54-58, 64-70, 88 valid
        let cur_cyls = self.cur_cyls();
        w[54] = cur_cyls;
        w[55] = self.cur_heads;
        w[56] = self.cur_spt;
        let chs = cur_cyls as u32 * self.cur_heads as u32 * self.cur_spt as u32;
        w[57] = chs as u16;
        w[58] = (chs >> 16) as u16;
        if self.mult_sectors != 0 {
            w[59] = 0x100 | self.mult_sectors as u16;
        }
        let lba28 = self.sectors.min(LBA28_MAX) as u32;
        w[60] = lba28 as u16;
        w[61] = (lba28 >> 16) as u16;
        w[62] = self.dma_words[0];
        w[63] = self.dma_words[1];
        w[64] = 0x03; // PIO 3-4
        w[65] = 120;
        w[66] = 120;
        w[67] = 120;
        w[68] = 120;
        w[80] = 0xf0; // ATA-4 .. ATA-7
        w[81] = 0x16;
        w[82] = (1 << 14) | (1 << 5); // NOP, write cache
        w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); // flush ext, flush, LBA48
        w[84] = 1 << 14;
        w[85] = (1 << 14) | if self.write_cache { 1 << 5 } else { 0 };
        w[86] = (1 << 13) | (1 << 12) | (1 << 10);
        w[87] = 1 << 14;
        w[88] = self.dma_words[2];
        w[93] = 1 | (1 << 14) | 0x2000;
        w[100] = self.sectors as u16;
        w[101] = (self.sectors >> 16) as u16;
        w[102] = (self.sectors >> 32) as u16;
        w[103] = (self.sectors >> 48) as u16;
        words_to_bytes(&w)
    }
}

/// Stores an ATA string: two characters a word, the first in the high byte.
pub(crate) fn put_string(words: &mut [u16], s: &str) {
    let b = padded(s, words.len() * 2);
    for (i, w) in words.iter_mut().enumerate() {
        *w = (b[2 * i] as u16) << 8 | b[2 * i + 1] as u16;
    }
}

pub(crate) fn words_to_bytes(w: &[u16]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn disk(d: &mut Drive) -> Option<&mut Disk> {
    match &mut d.media {
        Media::Disk(disk) => Some(disk),
        _ => None,
    }
}

impl Drive {
    /// The starting sector of the command, from LBA or CHS registers;
    /// None for an impossible CHS address.
    fn ata_sector(&self, lba48: bool, disk: &Disk) -> Option<u64> {
        if self.select & 0x40 != 0 {
            if lba48 {
                Some(
                    (self.hob_hcyl as u64) << 40
                        | (self.hob_lcyl as u64) << 32
                        | (self.hob_sector as u64) << 24
                        | (self.hcyl as u64) << 16
                        | (self.lcyl as u64) << 8
                        | self.sector as u64,
                )
            } else {
                Some(
                    ((self.select & 0x0f) as u64) << 24
                        | (self.hcyl as u64) << 16
                        | (self.lcyl as u64) << 8
                        | self.sector as u64,
                )
            }
        } else {
            let cyl = (self.hcyl as u64) << 8 | self.lcyl as u64;
            let head = (self.select & 0x0f) as u64;
            let sec = self.sector as u64;
            let heads = disk.cur_heads as u64;
            let spt = disk.cur_spt as u64;
            if sec == 0 || sec > spt || head >= heads {
                return None;
            }
            Some((cyl * heads + head) * spt + sec - 1)
        }
    }

    /// Writes `sector` back into the address registers, as the drive
    /// leaves them after a transfer.
    fn ata_set_sector(&mut self, sector: u64, lba48: bool, heads: u16, spt: u16) {
        if self.select & 0x40 != 0 {
            if lba48 {
                self.hob_hcyl = (sector >> 40) as u8;
                self.hob_lcyl = (sector >> 32) as u8;
                self.hob_sector = (sector >> 24) as u8;
            } else {
                self.select = (self.select & 0xf0) | ((sector >> 24) & 0x0f) as u8;
            }
            self.hcyl = (sector >> 16) as u8;
            self.lcyl = (sector >> 8) as u8;
            self.sector = sector as u8;
        } else if heads != 0 && spt != 0 {
            let per_cyl = heads as u64 * spt as u64;
            let cyl = sector / per_cyl;
            let r = sector % per_cyl;
            self.hcyl = (cyl >> 8) as u8;
            self.lcyl = cyl as u8;
            self.select = (self.select & 0xf0) | ((r / spt as u64) & 0x0f) as u8;
            self.sector = (r % spt as u64 + 1) as u8;
        }
    }

    /// Sector count of the command: 0 means 256 (LBA28) or 65536 (LBA48).
    fn ata_count(&self, lba48: bool) -> u32 {
        if lba48 {
            let n = (self.hob_nsector as u32) << 8 | self.nsector as u32;
            if n == 0 {
                65536
            } else {
                n
            }
        } else if self.nsector == 0 {
            256
        } else {
            self.nsector as u32
        }
    }
}

enum Rw {
    Read,
    Write,
    Verify,
}

impl Chan {
    pub(crate) fn ata_exec(&mut self, mem: &GuestMemoryMmap<()>, unit: usize, c: u8) {
        {
            let d = &mut self.drives[unit];
            d.status = status::DRDY | status::BSY;
            d.error = 0;
        }
        match c {
            cmd::IDENTIFY_DEVICE => {
                let d = &mut self.drives[unit];
                let Some(disk) = disk(d) else {
                    return self.abort_irq(unit, 0);
                };
                let id = disk.identify();
                d.status = status::DRDY | status::DSC;
                d.transfer_start(id, PioEnd::Stop);
                self.raise_irq();
            }
            cmd::READ_SECTORS | cmd::READ_SECTORS_NORETRY => {
                self.ata_rw(mem, unit, Rw::Read, false, Some(1), false)
            }
            cmd::READ_SECTORS_EXT => self.ata_rw(mem, unit, Rw::Read, true, Some(1), false),
            cmd::READ_MULTIPLE => self.ata_rw(mem, unit, Rw::Read, false, None, false),
            cmd::READ_MULTIPLE_EXT => self.ata_rw(mem, unit, Rw::Read, true, None, false),
            cmd::WRITE_SECTORS | cmd::WRITE_SECTORS_NORETRY => {
                self.ata_rw(mem, unit, Rw::Write, false, Some(1), false)
            }
            cmd::WRITE_SECTORS_EXT => self.ata_rw(mem, unit, Rw::Write, true, Some(1), false),
            cmd::WRITE_MULTIPLE => self.ata_rw(mem, unit, Rw::Write, false, None, false),
            cmd::WRITE_MULTIPLE_EXT => self.ata_rw(mem, unit, Rw::Write, true, None, false),
            cmd::READ_DMA | cmd::READ_DMA_NORETRY => {
                self.ata_rw(mem, unit, Rw::Read, false, Some(1), true)
            }
            cmd::READ_DMA_EXT => self.ata_rw(mem, unit, Rw::Read, true, Some(1), true),
            cmd::WRITE_DMA | cmd::WRITE_DMA_NORETRY => {
                self.ata_rw(mem, unit, Rw::Write, false, Some(1), true)
            }
            cmd::WRITE_DMA_EXT => self.ata_rw(mem, unit, Rw::Write, true, Some(1), true),
            cmd::READ_VERIFY | cmd::READ_VERIFY_NORETRY => {
                self.ata_rw(mem, unit, Rw::Verify, false, Some(1), false)
            }
            cmd::READ_VERIFY_EXT => self.ata_rw(mem, unit, Rw::Verify, true, Some(1), false),
            cmd::FLUSH_CACHE | cmd::FLUSH_CACHE_EXT => {
                let d = &mut self.drives[unit];
                let ok = disk(d).map(|k| k.image.flush().is_ok()).unwrap_or(false);
                if ok {
                    self.complete(unit);
                } else {
                    self.abort_irq(unit, 0);
                }
            }
            cmd::SET_MULTIPLE_MODE => {
                let d = &mut self.drives[unit];
                let n = d.nsector;
                match disk(d) {
                    Some(k) if n <= MAX_MULT_SECTORS && (n == 0 || n.is_power_of_two()) => {
                        k.mult_sectors = n;
                        self.complete(unit);
                    }
                    _ => self.abort_irq(unit, 0),
                }
            }
            cmd::SET_FEATURES => self.ata_set_features(unit),
            cmd::INITIALIZE_DEVICE_PARAMETERS => {
                let d = &mut self.drives[unit];
                let heads = (d.select & 0x0f) as u16 + 1;
                let spt = d.nsector as u16;
                match disk(d) {
                    Some(k) if spt != 0 => {
                        k.cur_heads = heads;
                        k.cur_spt = spt;
                        self.complete(unit);
                    }
                    _ => self.abort_irq(unit, 0),
                }
            }
            cmd::RECALIBRATE..=0x1f | cmd::SEEK..=0x7f => self.complete(unit),
            cmd::STANDBY_IMMEDIATE
            | cmd::IDLE_IMMEDIATE
            | cmd::STANDBY
            | cmd::IDLE
            | cmd::SLEEP
            | 0x94..=0x99 => self.complete(unit),
            cmd::CHECK_POWER_MODE => {
                self.drives[unit].nsector = 0xff; // active or idle
                self.complete(unit);
            }
            cmd::EXECUTE_DEVICE_DIAGNOSTIC => self.execute_diagnostic(),
            _ => self.abort_irq(unit, 0),
        }
    }

    /// Ends a non-data command successfully with an interrupt.
    pub(crate) fn complete(&mut self, unit: usize) {
        let d = &mut self.drives[unit];
        d.status = status::DRDY | status::DSC;
        d.error = 0;
        self.raise_irq();
    }

    /// EXECUTE DEVICE DIAGNOSTIC: both drives show their signatures.
    pub(crate) fn execute_diagnostic(&mut self) {
        for d in self.drives.iter_mut() {
            d.transfer_stop();
            d.dma = None;
            d.set_signature();
            d.error = 0x01;
            d.status = match d.media {
                Media::Disk(_) => status::DRDY | status::DSC,
                _ => 0,
            };
        }
        self.raise_irq();
    }

    fn ata_set_features(&mut self, unit: usize) {
        let d = &mut self.drives[unit];
        let feature = d.feature;
        let n = d.nsector;
        let Some(k) = disk(d) else {
            return self.abort_irq(unit, 0);
        };
        match feature {
            0x02 => k.write_cache = true,
            0x82 => {
                k.write_cache = false;
                if k.image.flush().is_err() {
                    return self.abort_irq(unit, 0);
                }
            }
            0x03 => {
                let val = (n & 0x07) as u16;
                k.dma_words = match n >> 3 {
                    0x00 | 0x01 => [0x07, 0x07, 0x3f],
                    0x02 => [0x07 | (1 << (val + 8)), 0x07, 0x3f],
                    0x04 => [0x07, 0x07 | (1 << (val + 8)), 0x3f],
                    0x08 => [0x07, 0x07, 0x3f | (1 << (val + 8))],
                    _ => return self.abort_irq(unit, 0),
                };
            }
            // Features QEMU accepts and ignores: read look-ahead, reverting
            // to defaults, APM, retries, ECC bytes, acoustic management.
            0xcc | 0x66 | 0xaa | 0x55 | 0x05 | 0x85 | 0x69 | 0x67 | 0x96 | 0x9a | 0x42 | 0xc2
            | 0x44 | 0xbb => {}
            _ => return self.abort_irq(unit, 0),
        }
        self.complete(unit);
    }

    /// Starts a read, write or verify. `block`: sectors per DRQ block
    /// (None = the multiple count).
    fn ata_rw(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        unit: usize,
        rw: Rw,
        lba48: bool,
        block: Option<u32>,
        dma: bool,
    ) {
        let d = &mut self.drives[unit];
        let count = d.ata_count(lba48);
        let Media::Disk(k) = &d.media else {
            return self.abort_irq(unit, 0);
        };
        let block = match block {
            Some(b) => b,
            None if k.mult_sectors == 0 => return self.abort_irq(unit, 0),
            None => k.mult_sectors as u32,
        };
        let Some(lba) = d.ata_sector(lba48, k) else {
            return self.abort_irq(unit, error::IDNF);
        };
        // The whole range must lie on the disk; nothing is read otherwise.
        match lba.checked_add(count as u64) {
            Some(end) if end <= k.sectors => {}
            _ => {
                let d = &mut self.drives[unit];
                d.abort(0);
                d.error = error::IDNF;
                self.raise_irq();
                return;
            }
        }
        if matches!(rw, Rw::Write) && k.image.read_only() {
            return self.abort_irq(unit, 0);
        }
        let d = &mut self.drives[unit];
        if let Some(k) = disk(d) {
            k.lba48 = lba48;
            k.xfer_lba = lba;
            k.xfer_left = count;
            k.xfer_block = block.max(1);
        }
        match rw {
            Rw::Verify => {
                let (heads, spt) = disk(d).map(|k| (k.cur_heads, k.cur_spt)).unwrap_or((0, 0));
                d.ata_set_sector(lba + count as u64 - 1, lba48, heads, spt);
                self.complete(unit);
            }
            Rw::Read if dma => self.dma_request(
                mem,
                unit,
                DmaReq::AtaRead {
                    lba,
                    sectors: count,
                },
            ),
            Rw::Write if dma => self.dma_request(
                mem,
                unit,
                DmaReq::AtaWrite {
                    lba,
                    sectors: count,
                },
            ),
            Rw::Read => {
                d.status = status::DRDY | status::DSC;
                self.ata_read_next(unit);
            }
            Rw::Write => {
                d.status = status::DRDY | status::DSC;
                let n = block.min(count) as usize;
                // The first block is requested without an interrupt.
                d.transfer_start(vec![0; n * SECTOR as usize], PioEnd::AtaWrite);
            }
        }
    }

    /// PIO read: loads the next DRQ block, or ends the command.
    pub(crate) fn ata_read_next(&mut self, unit: usize) {
        let d = &mut self.drives[unit];
        let Media::Disk(k) = &mut d.media else {
            return d.transfer_stop();
        };
        if k.xfer_left == 0 {
            d.transfer_stop();
            d.status = status::DRDY | status::DSC;
            return;
        }
        let n = k.xfer_left.min(k.xfer_block);
        let lba = k.xfer_lba;
        let mut buf = vec![0u8; n as usize * SECTOR as usize];
        if k.image.read_at(&mut buf, lba * SECTOR).is_err() {
            d.abort(error::UNC);
            self.raise_irq();
            return;
        }
        k.xfer_lba += n as u64;
        k.xfer_left -= n;
        let (lba48, heads, spt, left) = (k.lba48, k.cur_heads, k.cur_spt, k.xfer_left);
        d.status = status::DRDY | status::DSC;
        d.ata_set_sector(lba + n as u64 - 1, lba48, heads, spt);
        d.nsector = left as u8;
        d.transfer_start(buf, PioEnd::AtaRead);
        self.raise_irq();
    }

    /// PIO write: the guest filled a block; write it and ask for the next.
    pub(crate) fn ata_write_block_done(&mut self, unit: usize) {
        let d = &mut self.drives[unit];
        let buf = std::mem::take(&mut d.buf);
        let Media::Disk(k) = &mut d.media else {
            return d.transfer_stop();
        };
        let lba = k.xfer_lba;
        let n = (buf.len() as u64 / SECTOR) as u32;
        if k.image.write_at(&buf, lba * SECTOR).is_err() {
            d.abort(0);
            self.raise_irq();
            return;
        }
        k.xfer_lba += n as u64;
        k.xfer_left = k.xfer_left.saturating_sub(n);
        let (lba48, heads, spt, left, block) =
            (k.lba48, k.cur_heads, k.cur_spt, k.xfer_left, k.xfer_block);
        let flush_failed = left == 0 && !k.write_cache && k.image.flush().is_err();
        d.ata_set_sector(lba + n as u64 - 1, lba48, heads, spt);
        d.nsector = left as u8;
        d.status = status::DRDY | status::DSC;
        if flush_failed {
            d.abort(0);
        } else if left == 0 {
            d.transfer_stop();
        } else {
            let n = block.min(left) as usize;
            d.transfer_start(vec![0; n * SECTOR as usize], PioEnd::AtaWrite);
        }
        self.raise_irq();
    }

    /// Runs an ATA DMA transfer along the PRD table.
    pub(crate) fn ata_dma(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        prd: &mut PrdWalker,
        unit: usize,
        lba: u64,
        sectors: u32,
        read: bool,
    ) -> Result<(), DmaError> {
        let d = &mut self.drives[unit];
        let Media::Disk(k) = &mut d.media else {
            return Err(DmaError::Device);
        };
        let image = k.image.clone();
        let write_cache = k.write_cache;
        let mut offset = lba * SECTOR;
        let mut left = sectors as u64 * SECTOR;
        let mut buf = Vec::new();
        while left > 0 {
            let (at, n) = prd.next_segment(mem, left.min(0x10000) as usize)?;
            buf.resize(n, 0);
            if read {
                if image.read_at(&mut buf, offset).is_err() {
                    d.abort(error::UNC);
                    return Err(DmaError::Device);
                }
                vm_memory::Bytes::write_slice(mem, &buf, at).map_err(|_| DmaError::Memory)?;
            } else {
                vm_memory::Bytes::read_slice(mem, &mut buf, at).map_err(|_| DmaError::Memory)?;
                if image.write_at(&buf, offset).is_err() {
                    d.abort(0);
                    return Err(DmaError::Device);
                }
            }
            offset += n as u64;
            left -= n as u64;
        }
        if !read && !write_cache && image.flush().is_err() {
            d.abort(0);
            return Err(DmaError::Device);
        }
        let Media::Disk(k) = &d.media else {
            return Err(DmaError::Device);
        };
        let (lba48, heads, spt) = (k.lba48, k.cur_heads, k.cur_spt);
        d.ata_set_sector(lba + sectors as u64 - 1, lba48, heads, spt);
        d.nsector = 0;
        d.status = status::DRDY | status::DSC;
        d.error = 0;
        Ok(())
    }
}
