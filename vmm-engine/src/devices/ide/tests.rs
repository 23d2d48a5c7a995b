//! Register-level tests: each drives the ports as SeaBIOS or Linux would.

use super::atapi::{asc, op, sense};
use super::*;
use crate::block::{self, DiskFormat};
use crate::bus::Bus;
use crate::devices::RecordingIrq;
use vm_memory::{Bytes, GuestAddress};

const MEM: usize = 1 << 20;

struct Rig {
    ide: Ide,
    mem: GuestMemoryMmap<()>,
    irq14: Arc<RecordingIrq>,
    irq15: Arc<RecordingIrq>,
    dir: tempfile::TempDir,
}

/// A raw disk whose every sector starts with its LBA (u32 LE) and is
/// filled with `(lba + i) as u8` after.
fn disk_bytes(sectors: u64, sector_size: u64) -> Vec<u8> {
    let mut v = vec![0u8; (sectors * sector_size) as usize];
    for s in 0..sectors {
        let base = (s * sector_size) as usize;
        for i in 4..sector_size as usize {
            v[base + i] = (s as usize + i) as u8;
        }
        v[base..base + 4].copy_from_slice(&(s as u32).to_le_bytes());
    }
    v
}

fn image(dir: &tempfile::TempDir, name: &str, bytes: &[u8], ro: bool) -> Arc<dyn DiskImage> {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    block::open(&p, DiskFormat::Raw, ro).unwrap()
}

/// A disk of `sectors` at primary master, an ISO of `cd_sectors` (or an
/// empty drive) at secondary master.
fn rig_with(sectors: u64, cd_sectors: Option<u64>) -> Rig {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let irq14 = RecordingIrq::new();
    let irq15 = RecordingIrq::new();
    let mut ide = Ide::new(mem.clone(), irq14.clone(), irq15.clone());
    let dir = tempfile::tempdir().unwrap();
    ide.attach_disk(
        Channel::Primary,
        Slot::Master,
        image(&dir, "disk.img", &disk_bytes(sectors, 512), false),
    );
    let iso = cd_sectors.map(|n| image(&dir, "cd.iso", &disk_bytes(n, 2048), true));
    ide.attach_cdrom(Channel::Secondary, Slot::Master, iso);
    Rig {
        ide,
        mem,
        irq14,
        irq15,
        dir,
    }
}

fn rig() -> Rig {
    rig_with(4096, Some(64))
}

const P: Channel = Channel::Primary;
const S: Channel = Channel::Secondary;

impl Rig {
    fn outb(&mut self, c: Channel, off: u64, v: u8) {
        self.ide.cmd_write(c, off, &[v]);
    }
    fn inb(&mut self, c: Channel, off: u64) -> u8 {
        let mut b = [0u8];
        self.ide.cmd_read(c, off, &mut b);
        b[0]
    }
    fn inw(&mut self, c: Channel) -> u16 {
        let mut b = [0u8; 2];
        self.ide.cmd_read(c, 0, &mut b);
        u16::from_le_bytes(b)
    }
    fn outw(&mut self, c: Channel, v: u16) {
        self.ide.cmd_write(c, 0, &v.to_le_bytes());
    }
    fn status(&mut self, c: Channel) -> u8 {
        self.inb(c, 7)
    }
    fn alt(&mut self, c: Channel) -> u8 {
        let mut b = [0u8];
        self.ide.ctl_read(c, &mut b);
        b[0]
    }
    fn ctl(&mut self, c: Channel, v: u8) {
        self.ide.ctl_write(c, &[v]);
    }
    /// Reads `n` bytes of the data port in 16-bit words.
    fn read_data(&mut self, c: Channel, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n / 2 {
            v.extend_from_slice(&self.inw(c).to_le_bytes());
        }
        v
    }
    /// LBA28 task file for the primary master.
    fn lba28(&mut self, lba: u32, count: u8) {
        self.outb(P, 6, 0xe0 | ((lba >> 24) & 0xf) as u8);
        self.outb(P, 2, count);
        self.outb(P, 3, lba as u8);
        self.outb(P, 4, (lba >> 8) as u8);
        self.outb(P, 5, (lba >> 16) as u8);
    }
    fn lba48(&mut self, lba: u64, count: u16) {
        self.outb(P, 6, 0xe0);
        self.outb(P, 2, (count >> 8) as u8);
        self.outb(P, 3, (lba >> 24) as u8);
        self.outb(P, 4, (lba >> 32) as u8);
        self.outb(P, 5, (lba >> 40) as u8);
        self.outb(P, 2, count as u8);
        self.outb(P, 3, lba as u8);
        self.outb(P, 4, (lba >> 8) as u8);
        self.outb(P, 5, (lba >> 16) as u8);
    }
    fn bm_write(&mut self, off: u64, data: &[u8]) {
        self.ide.bar_write(4, off, data);
    }
    fn bm_read8(&mut self, off: u64) -> u8 {
        let mut b = [0u8];
        self.ide.bar_read(4, off, &mut b);
        b[0]
    }
    /// Writes a PRD table at `table` from `(addr, len, eot)` entries.
    fn prd(&mut self, table: u64, entries: &[(u32, u32, bool)]) {
        for (i, &(a, l, eot)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[0..4].copy_from_slice(&a.to_le_bytes());
            let c = (l & 0xffff) | if eot { 0x8000_0000 } else { 0 };
            e[4..8].copy_from_slice(&c.to_le_bytes());
            self.mem
                .write_slice(&e, GuestAddress(table + 8 * i as u64))
                .unwrap();
        }
    }
    /// Programs the bus master of `chan` for a transfer (as SeaBIOS does).
    fn bm_setup(&mut self, chan: Channel, table: u32, to_memory: bool) {
        let base = chan as u64 * 8;
        self.bm_write(base + 4, &table.to_le_bytes());
        self.bm_write(base, &[if to_memory { BM_CMD_READ } else { 0 }]);
        self.bm_write(base + 2, &[BM_ST_ERROR | BM_ST_INT]);
    }
    fn bm_start(&mut self, chan: Channel, to_memory: bool) {
        let base = chan as u64 * 8;
        let c = if to_memory { BM_CMD_READ } else { 0 };
        self.bm_write(base, &[c | BM_CMD_START]);
    }
    fn bm_status(&mut self, chan: Channel) -> u8 {
        self.bm_read8(chan as u64 * 8 + 2)
    }
    fn disk_file(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("disk.img")).unwrap()
    }
}

fn sector_of(data: &[u8]) -> u32 {
    u32::from_le_bytes([data[0], data[1], data[2], data[3]])
}

// ---------------------------------------------------------------- PCI --

#[test]
fn pci_identity_and_bar4() {
    let mut r = rig();
    let c = r.ide.config();
    assert_eq!(c.vendor_id(), 0x8086);
    assert_eq!(c.device_id(), 0x7010);
    assert_eq!(&c.regs()[0x09..0x0c], &[0x80, 0x01, 0x01]);
    assert_eq!(c.regs()[0x0e], 0);
    // IDE decode enable bits as SeaBIOS leaves them.
    assert_eq!(c.u16_at(0x40), 0x8000);
    assert_eq!(c.u16_at(0x42), 0x8000);
    // BAR4 is 16 I/O ports.
    r.ide.config_write(0x20, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(r.ide.config().u32_at(0x20), 0xffff_fff1);
    // Other BARs do not exist in compat mode.
    r.ide.config_write(0x10, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(r.ide.config().u32_at(0x10), 0);
    r.ide.config_write(0x20, &0xc001u32.to_le_bytes());
    r.ide.config_write(0x04, &[1, 0]);
    assert_eq!(r.ide.config().bar_address(4), Some(0xc000));
}

#[test]
fn legacy_ports_on_a_bus() {
    let r = rig();
    let ide = Arc::new(Mutex::new(r.ide));
    let ports = Ide::legacy_ports(&ide);
    // The same controller is the PCI function the PCI root owns.
    let pci: Arc<Mutex<dyn PciDevice>> = ide.clone();
    assert_eq!(pci.lock().unwrap().config().device_id(), 0x7010);
    let bus = Bus::new();
    let ranges: Vec<(u64, u64)> = ports.iter().map(|(b, l, _)| (*b, *l)).collect();
    assert_eq!(ranges, vec![(0x1f0, 8), (0x3f6, 1), (0x170, 8), (0x376, 1)]);
    for (b, l, d) in ports {
        bus.insert(d, b, l).unwrap();
    }
    let mut st = [0u8];
    bus.read(0x1f7, &mut st);
    assert_eq!(st[0], 0x50);
    // Secondary master is a CD: status 0 after reset, signature 0x14/0xEB.
    bus.write(0x176, &[0xa0]);
    bus.read(0x174, &mut st);
    assert_eq!(st[0], 0x14);
    bus.read(0x175, &mut st);
    assert_eq!(st[0], 0xeb);
    bus.read(0x376, &mut st);
    assert_eq!(st[0], 0);
    // IDENTIFY through the bus, 32-bit reads of the data port.
    bus.write(0x1f6, &[0xa0]);
    bus.write(0x1f7, &[0xec]);
    let mut w = [0u8; 4];
    bus.read(0x1f0, &mut w);
    assert_eq!(u16::from_le_bytes([w[0], w[1]]), 0x0040);
    bus.read(0x3f6, &mut st);
    assert_eq!(st[0] & status::DRQ, status::DRQ);
}

// ------------------------------------------------------- reset / probe --

#[test]
fn srst_sets_busy_then_signatures() {
    let mut r = rig();
    // Scribble over the task file first.
    r.outb(P, 4, 0x12);
    r.outb(P, 5, 0x34);
    r.ctl(P, CTL_NIEN | CTL_SRST);
    assert_eq!(r.alt(P) & status::BSY, status::BSY);
    r.ctl(P, CTL_NIEN);
    assert_eq!(r.alt(P), status::DRDY | status::DSC);
    assert_eq!(r.inb(P, 1), 0x01, "diagnostic code");
    assert_eq!(
        (r.inb(P, 2), r.inb(P, 3), r.inb(P, 4), r.inb(P, 5)),
        (1, 1, 0, 0)
    );
    // ATAPI signature; READY is not set.
    r.ctl(S, CTL_SRST);
    r.ctl(S, 0);
    r.outb(S, 6, 0xa0);
    assert_eq!((r.inb(S, 4), r.inb(S, 5)), (0x14, 0xeb));
    assert_eq!(r.status(S), 0);
    assert_eq!(r.irq14.raised_count(), 0, "reset raises no interrupt");
}

#[test]
fn seabios_probe_of_missing_slave() {
    let mut r = rig();
    // ata_detect: select the slave, check the registers echo.
    r.outb(P, 6, 0xb0);
    assert_eq!(r.inb(P, 6), 0xb0);
    r.outb(P, 2, 0x55);
    r.outb(P, 3, 0xaa);
    assert_eq!((r.inb(P, 2), r.inb(P, 3)), (0x55, 0xaa));
    // A missing drive: status 0, commands ignored (no DRQ, no IRQ).
    assert_eq!(r.status(P), 0);
    r.outb(P, 7, ata::cmd::IDENTIFY_PACKET_DEVICE);
    r.outb(P, 7, ata::cmd::IDENTIFY_DEVICE);
    assert_eq!(r.status(P), 0);
    assert_eq!(r.irq14.raised_count(), 0);
    // A channel with no drives at all reads 0 everywhere.
    let mut empty = rig();
    empty.ide = Ide::new(empty.mem.clone(), empty.irq14.clone(), empty.irq15.clone());
    empty.outb(P, 2, 0x55);
    assert_eq!(empty.inb(P, 2), 0);
    assert_eq!(empty.status(P), 0);
}

// ------------------------------------------------------------ IDENTIFY --

fn word(id: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([id[2 * i], id[2 * i + 1]])
}

fn ata_string(id: &[u8], from: usize, to: usize) -> String {
    let mut s = String::new();
    for i in from..to {
        let w = word(id, i);
        s.push((w >> 8) as u8 as char);
        s.push((w & 0xff) as u8 as char);
    }
    s.trim_end().to_string()
}

#[test]
fn identify_device() {
    let mut r = rig_with(20480, None);
    r.outb(P, 6, 0xa0);
    r.outb(P, 7, ata::cmd::IDENTIFY_DEVICE);
    assert_eq!(r.irq14.raised_count(), 1);
    assert!(r.irq14.level());
    let st = r.status(P);
    assert_eq!(st, status::DRDY | status::DSC | status::DRQ);
    assert!(!r.irq14.level(), "status read clears INTRQ");
    let id = r.read_data(P, 512);
    assert_eq!(r.alt(P), status::DRDY | status::DSC);
    assert_eq!(word(&id, 0), 0x0040);
    assert_eq!(ata_string(&id, 27, 47), "VIREO HARDDISK");
    assert!(!ata_string(&id, 10, 20).is_empty());
    assert_eq!(word(&id, 60) as u32 | (word(&id, 61) as u32) << 16, 20480);
    assert_eq!(word(&id, 100), 20480);
    assert_ne!(word(&id, 83) & (1 << 10), 0, "LBA48");
    assert_ne!(word(&id, 49) & (1 << 8), 0, "DMA");
    assert_eq!(word(&id, 88), 0x3f | (1 << 13), "UDMA5 selected");
    assert_eq!(word(&id, 63), 0x07);
    assert_eq!(word(&id, 47), 0x8000 | 16);
    // Geometry 16 heads x 63 sectors; 20480 / 1008 = 20 cylinders.
    assert_eq!((word(&id, 1), word(&id, 3), word(&id, 6)), (20, 16, 63));
    // SET FEATURES transfer mode MDMA2 shows in word 63.
    r.outb(P, 1, 0x03);
    r.outb(P, 2, 0x22);
    r.outb(P, 7, ata::cmd::SET_FEATURES);
    assert_eq!(r.status(P), 0x50);
    r.outb(P, 7, ata::cmd::IDENTIFY_DEVICE);
    let id = r.read_data(P, 512);
    assert_eq!(word(&id, 63), 0x07 | (1 << 10));
    assert_eq!(word(&id, 88), 0x3f);
    // Unknown SET FEATURES aborts.
    r.outb(P, 1, 0x77);
    r.outb(P, 7, ata::cmd::SET_FEATURES);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    assert_eq!(r.inb(P, 1), error::ABRT);
}

#[test]
fn identify_on_cd_aborts_and_packet_identify_works() {
    let mut r = rig();
    r.outb(S, 6, 0xa0);
    r.outb(S, 7, ata::cmd::IDENTIFY_DEVICE);
    assert_eq!(r.status(S) & status::ERR, status::ERR);
    assert_eq!(r.inb(S, 1), error::ABRT);
    assert_eq!((r.inb(S, 4), r.inb(S, 5)), (0x14, 0xeb));
    r.outb(S, 7, ata::cmd::IDENTIFY_PACKET_DEVICE);
    assert_eq!(r.status(S), status::DRDY | status::DSC | status::DRQ);
    let id = r.read_data(S, 512);
    assert_eq!((word(&id, 0) >> 8) & 0x1f, 5, "CD-ROM device type");
    assert_eq!(word(&id, 0) >> 14, 2, "ATAPI");
    assert_eq!(word(&id, 0) & 3, 0, "12-byte packets");
    assert_eq!(ata_string(&id, 27, 47), "VIREO DVD-ROM");
    assert_eq!(r.alt(S) & status::DRQ, 0);
    // IDENTIFY PACKET DEVICE on the disk aborts.
    r.outb(P, 6, 0xa0);
    r.outb(P, 7, ata::cmd::IDENTIFY_PACKET_DEVICE);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    assert_eq!(r.inb(P, 1), error::ABRT);
}

// ------------------------------------------------------------- ATA PIO --

#[test]
fn pio_read_sectors_lba28_block_by_block() {
    let mut r = rig();
    r.ctl(P, 0);
    r.lba28(100, 3);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    for i in 0..3u32 {
        assert_eq!(r.irq14.raised_count(), i + 1, "one IRQ per DRQ block");
        assert_eq!(r.status(P), status::DRDY | status::DSC | status::DRQ);
        let data = r.read_data(P, 512);
        assert_eq!(sector_of(&data), 100 + i);
        assert_eq!(data[511], (100 + i as usize + 511) as u8);
    }
    assert_eq!(r.alt(P), status::DRDY | status::DSC);
    assert_eq!(
        r.irq14.raised_count(),
        3,
        "no IRQ after the last read block"
    );
    // Data port is quiet now.
    assert_eq!(r.inw(P), 0);
}

#[test]
fn pio_read_lba48_and_chs() {
    let mut r = rig();
    r.lba48(4000, 2);
    r.outb(P, 7, ata::cmd::READ_SECTORS_EXT);
    assert_eq!(sector_of(&r.read_data(P, 512)), 4000);
    assert_eq!(sector_of(&r.read_data(P, 512)), 4001);
    assert_eq!(r.status(P), 0x50);
    // CHS: cylinder 1, head 2, sector 5 -> (1*16+2)*63 + 4 = 1138.
    r.outb(P, 6, 0xa2);
    r.outb(P, 2, 1);
    r.outb(P, 3, 5);
    r.outb(P, 4, 1);
    r.outb(P, 5, 0);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    assert_eq!(sector_of(&r.read_data(P, 512)), 1138);
    // Sector 0 does not exist in CHS.
    r.outb(P, 3, 0);
    r.outb(P, 2, 1);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    assert_eq!(r.inb(P, 1) & error::IDNF, error::IDNF);
    // After INITIALIZE DEVICE PARAMETERS (4 heads, 17 sectors) CHS follows
    // the new geometry: C1 H0 S1 -> 68.
    r.outb(P, 6, 0xa3);
    r.outb(P, 2, 17);
    r.outb(P, 7, ata::cmd::INITIALIZE_DEVICE_PARAMETERS);
    assert_eq!(r.status(P), 0x50);
    r.outb(P, 6, 0xa0);
    r.outb(P, 2, 1);
    r.outb(P, 3, 1);
    r.outb(P, 4, 1);
    r.outb(P, 5, 0);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    assert_eq!(sector_of(&r.read_data(P, 512)), 68);
}

#[test]
fn pio_write_sectors_and_flush() {
    let mut r = rig();
    r.lba28(7, 2);
    r.outb(P, 7, ata::cmd::WRITE_SECTORS);
    assert_eq!(r.irq14.raised_count(), 0, "no IRQ before the first block");
    assert_eq!(r.alt(P), status::DRDY | status::DSC | status::DRQ);
    for i in 0..256u16 {
        r.outw(P, 0xa500 | i);
    }
    assert_eq!(r.irq14.raised_count(), 1);
    assert_eq!(r.status(P) & status::DRQ, status::DRQ);
    // Second block with 32-bit writes.
    for _ in 0..128 {
        r.ide.cmd_write(P, 0, &0x5a5a_5a5au32.to_le_bytes());
    }
    assert_eq!(r.irq14.raised_count(), 2);
    assert_eq!(r.status(P), 0x50);
    r.outb(P, 7, ata::cmd::FLUSH_CACHE);
    assert_eq!(r.status(P), 0x50);
    let f = r.disk_file();
    assert_eq!(&f[7 * 512..7 * 512 + 2], &[0x00, 0xa5]);
    assert_eq!(&f[7 * 512 + 510..7 * 512 + 512], &[0xff, 0xa5]);
    assert!(f[8 * 512..9 * 512].iter().all(|&b| b == 0x5a));
    assert_eq!(sector_of(&f[9 * 512..]), 9, "neighbour untouched");
}

#[test]
fn read_write_multiple() {
    let mut r = rig();
    // READ MULTIPLE with multiple mode 0 aborts.
    r.outb(P, 6, 0xe0);
    r.outb(P, 2, 0);
    r.outb(P, 7, ata::cmd::SET_MULTIPLE_MODE);
    assert_eq!(r.status(P), 0x50);
    r.lba28(0, 4);
    r.outb(P, 7, ata::cmd::READ_MULTIPLE);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    // Not a power of two / too big: abort.
    r.outb(P, 2, 3);
    r.outb(P, 7, ata::cmd::SET_MULTIPLE_MODE);
    assert_eq!(r.status(P) & status::ERR, status::ERR);
    r.outb(P, 2, 32);
    r.outb(P, 7, ata::cmd::SET_MULTIPLE_MODE);
    assert_eq!(r.status(P) & status::ERR, status::ERR);
    r.outb(P, 2, 4);
    r.outb(P, 7, ata::cmd::SET_MULTIPLE_MODE);
    assert_eq!(r.status(P), 0x50);
    let before = r.irq14.raised_count();
    r.lba28(10, 6);
    r.outb(P, 7, ata::cmd::READ_MULTIPLE);
    assert_eq!(r.status(P), 0x58);
    let a = r.read_data(P, 4 * 512);
    assert_eq!(r.status(P), 0x58);
    assert_eq!(r.irq14.raised_count(), before + 2, "IRQ per 4-sector block");
    let b = r.read_data(P, 2 * 512);
    assert_eq!(sector_of(&a), 10);
    assert_eq!(sector_of(&a[3 * 512..]), 13);
    assert_eq!(sector_of(&b[512..]), 15);
    assert_eq!(r.status(P), 0x50);
    // WRITE MULTIPLE EXT of 5 sectors: blocks of 4 + 1.
    r.lba48(20, 5);
    r.outb(P, 7, ata::cmd::WRITE_MULTIPLE_EXT);
    for _ in 0..5 * 256 {
        assert_eq!(r.alt(P) & status::DRQ, status::DRQ);
        r.outw(P, 0x7777);
    }
    assert_eq!(r.status(P), 0x50);
    let f = r.disk_file();
    assert!(f[20 * 512..25 * 512].iter().all(|&b| b == 0x77));
    assert_eq!(sector_of(&f[25 * 512..]), 25);
}

#[test]
fn out_of_range_sectors_are_refused_without_io() {
    let mut r = rig_with(1000, None);
    let before = r.disk_file();
    for (lba, count, cmd) in [
        (1000u32, 1u8, ata::cmd::READ_SECTORS),
        (999, 2, ata::cmd::WRITE_SECTORS),
        (0, 0, ata::cmd::READ_SECTORS),    // 0 = 256 sectors: fine
        (800, 0, ata::cmd::WRITE_SECTORS), // 800 + 256 > 1000
        (0x0fff_ffff, 1, ata::cmd::READ_DMA),
        (990, 20, ata::cmd::READ_VERIFY),
    ] {
        r.lba28(lba, count);
        r.outb(P, 7, cmd);
        let st = r.status(P);
        if lba == 0 && count == 0 {
            assert_eq!(st & status::DRQ, status::DRQ);
            r.ctl(P, CTL_SRST);
            r.ctl(P, 0);
            continue;
        }
        assert_eq!(st, status::DRDY | status::ERR, "lba {lba} count {count}");
        assert_eq!(r.inb(P, 1), error::IDNF);
        assert_eq!(r.inw(P), 0, "no data phase");
    }
    // LBA48 with a huge address and a huge count.
    r.lba48(u64::MAX >> 16, 0xffff);
    r.outb(P, 7, ata::cmd::WRITE_DMA_EXT);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    assert_eq!(r.disk_file(), before);
}

#[test]
fn misc_commands() {
    let mut r = rig();
    for c in [
        ata::cmd::IDLE_IMMEDIATE,
        ata::cmd::STANDBY_IMMEDIATE,
        ata::cmd::IDLE,
        ata::cmd::RECALIBRATE,
        ata::cmd::FLUSH_CACHE_EXT,
    ] {
        r.outb(P, 6, 0xa0);
        r.outb(P, 7, c);
        assert_eq!(r.status(P), 0x50, "command {c:#x}");
    }
    r.outb(P, 7, ata::cmd::CHECK_POWER_MODE);
    assert_eq!(r.status(P), 0x50);
    assert_eq!(r.inb(P, 2), 0xff);
    // READ VERIFY: no data phase.
    r.lba28(5, 4);
    r.outb(P, 7, ata::cmd::READ_VERIFY);
    assert_eq!(r.status(P), 0x50);
    // Unknown commands, NOP and PACKET on a disk abort.
    for c in [ata::cmd::NOP, ata::cmd::PACKET, 0xb0, 0xff] {
        r.outb(P, 7, c);
        assert_eq!(r.status(P), status::DRDY | status::ERR, "command {c:#x}");
        assert_eq!(r.inb(P, 1), error::ABRT);
    }
    // EXECUTE DEVICE DIAGNOSTIC: signature and code 1.
    r.outb(P, 4, 0x99);
    r.outb(P, 7, ata::cmd::EXECUTE_DEVICE_DIAGNOSTIC);
    assert_eq!(r.status(P), 0x50);
    assert_eq!((r.inb(P, 1), r.inb(P, 4), r.inb(P, 5)), (1, 0, 0));
}

#[test]
fn nien_masks_the_line_not_the_command() {
    let mut r = rig();
    r.ctl(P, CTL_NIEN);
    r.lba28(1, 1);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    assert!(!r.irq14.level(), "nIEN keeps the line low");
    assert_eq!(r.alt(P) & status::DRQ, status::DRQ);
    // Unmasking with INTRQ pending drives the line.
    r.ctl(P, 0);
    assert!(r.irq14.level());
    r.status(P);
    assert!(!r.irq14.level());
    r.read_data(P, 512);
    // The alternate status does not acknowledge.
    r.outb(P, 7, ata::cmd::FLUSH_CACHE);
    assert!(r.irq14.level());
    r.alt(P);
    assert!(r.irq14.level());
    r.status(P);
    assert!(!r.irq14.level());
    assert_eq!(r.irq15.raised_count(), 0);
}

#[test]
fn srst_cancels_a_transfer() {
    let mut r = rig();
    r.lba28(0, 8);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    r.read_data(P, 100);
    r.ctl(P, CTL_SRST);
    r.ctl(P, 0);
    assert_eq!(r.status(P), 0x50);
    assert_eq!(r.inw(P), 0);
    // And a command is accepted again.
    r.lba28(3, 1);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    assert_eq!(sector_of(&r.read_data(P, 512)), 3);
}

#[test]
fn commands_while_busy_are_ignored() {
    let mut r = rig();
    r.lba28(0, 2);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    r.outb(P, 7, ata::cmd::IDENTIFY_DEVICE);
    assert_eq!(sector_of(&r.read_data(P, 512)), 0);
}

// ------------------------------------------------------------- ATA DMA --

#[test]
fn dma_read_and_write_seabios_style() {
    let mut r = rig();
    // Two PRDs: 1 KiB at 0x20000 and 512 bytes at 0x30000 (EOT).
    r.prd(0x1000, &[(0x20000, 1024, false), (0x30000, 512, true)]);
    r.bm_setup(P, 0x1000, true);
    r.lba28(50, 3);
    r.outb(P, 7, ata::cmd::READ_DMA);
    assert_eq!(r.irq14.raised_count(), 0);
    r.bm_start(P, true);
    let bst = r.bm_status(P);
    assert_eq!(bst & (BM_ST_INT | BM_ST_ACTIVE | BM_ST_ERROR), BM_ST_INT);
    r.bm_write(0, &[BM_CMD_READ]);
    assert_eq!(r.alt(P), 0x50);
    assert_eq!(r.irq14.raised_count(), 1);
    let mut got = vec![0u8; 1024];
    r.mem.read_slice(&mut got, GuestAddress(0x20000)).unwrap();
    assert_eq!(sector_of(&got), 50);
    assert_eq!(sector_of(&got[512..]), 51);
    r.mem
        .read_slice(&mut got[..512], GuestAddress(0x30000))
        .unwrap();
    assert_eq!(sector_of(&got), 52);

    // WRITE DMA EXT, bus master started before the command (Linux order
    // is the other way round; both work).
    r.mem
        .write_slice(&[0xc3; 1024], GuestAddress(0x40000))
        .unwrap();
    r.prd(0x1000, &[(0x40000, 1024, true)]);
    r.bm_setup(P, 0x1000, false);
    r.bm_start(P, false);
    r.lba48(300, 2);
    r.outb(P, 7, ata::cmd::WRITE_DMA_EXT);
    assert_eq!(r.bm_status(P) & (BM_ST_INT | BM_ST_ACTIVE), BM_ST_INT);
    assert_eq!(r.status(P), 0x50);
    r.bm_write(0, &[0]);
    let f = r.disk_file();
    assert!(f[300 * 512..302 * 512].iter().all(|&b| b == 0xc3));
    assert_eq!(sector_of(&f[302 * 512..]), 302);
}

#[test]
fn dma_prd_larger_than_transfer_stays_active() {
    let mut r = rig();
    r.prd(0x1000, &[(0x20000, 4096, true)]);
    r.bm_setup(P, 0x1000, true);
    r.lba28(1, 1);
    r.outb(P, 7, ata::cmd::READ_DMA);
    r.bm_start(P, true);
    assert_eq!(
        r.bm_status(P) & (BM_ST_INT | BM_ST_ACTIVE),
        BM_ST_INT | BM_ST_ACTIVE
    );
    assert_eq!(r.status(P), 0x50);
}

#[test]
fn dma_prd_outside_ram_is_an_error() {
    let mut r = rig();
    let before = r.disk_file();
    // Buffer beyond the end of guest memory.
    r.prd(0x1000, &[(0x20000, 512, false), (0xfff0_0000, 512, true)]);
    r.bm_setup(P, 0x1000, true);
    r.lba28(0, 2);
    r.outb(P, 7, ata::cmd::READ_DMA);
    r.bm_start(P, true);
    let bst = r.bm_status(P);
    assert_eq!(
        bst & (BM_ST_ERROR | BM_ST_INT | BM_ST_ACTIVE),
        BM_ST_ERROR | BM_ST_INT
    );
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    assert_eq!(r.inb(P, 1), error::ABRT);
    r.bm_write(0, &[0]);
    // The table itself outside RAM, on a write: the disk is untouched.
    r.bm_setup(P, 0xffff_0000, false);
    r.lba28(0, 1);
    r.outb(P, 7, ata::cmd::WRITE_DMA);
    r.bm_start(P, false);
    assert_eq!(r.bm_status(P) & BM_ST_ERROR, BM_ST_ERROR);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    // A partly-outside buffer straddling the end of RAM.
    r.bm_write(0, &[0]);
    r.prd(0x1000, &[((MEM - 256) as u32, 512, true)]);
    r.bm_setup(P, 0x1000, false);
    r.lba28(0, 1);
    r.outb(P, 7, ata::cmd::WRITE_DMA);
    r.bm_start(P, false);
    assert_eq!(r.bm_status(P) & BM_ST_ERROR, BM_ST_ERROR);
    assert_eq!(r.disk_file(), before);
}

#[test]
fn dma_prd_table_without_eot_stops() {
    let mut r = rig();
    // 64 KiB of 2-byte entries and no EOT: 16 KiB of room for 32 KiB.
    let entries: Vec<(u32, u32, bool)> = (0..8192).map(|_| (0x90000, 2, false)).collect();
    r.prd(0x10000, &entries);
    // Beyond the 64 KiB the guest put a valid-looking EOT entry; it must
    // not be used.
    r.prd(0x20000, &[(0x90000, 0, true)]);
    r.bm_setup(P, 0x10000, true);
    r.lba28(0, 64);
    r.outb(P, 7, ata::cmd::READ_DMA);
    r.bm_start(P, true);
    let bst = r.bm_status(P);
    assert_eq!(bst & (BM_ST_ERROR | BM_ST_ACTIVE), BM_ST_ERROR);
    assert_eq!(bst & BM_ST_INT, BM_ST_INT);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
}

#[test]
fn dma_prd_table_too_short_aborts() {
    let mut r = rig();
    r.prd(0x1000, &[(0x20000, 512, true)]);
    r.bm_setup(P, 0x1000, true);
    r.lba28(0, 4);
    r.outb(P, 7, ata::cmd::READ_DMA);
    r.bm_start(P, true);
    let bst = r.bm_status(P);
    assert_eq!(bst & (BM_ST_ACTIVE | BM_ST_INT), BM_ST_INT);
    assert_eq!(r.status(P), status::DRDY | status::ERR);
    // A PRD count of 0 means 64 KiB.
    r.bm_write(0, &[0]);
    r.prd(0x1000, &[(0x20000, 0, true)]);
    r.bm_setup(P, 0x1000, true);
    r.lba28(0, 128);
    r.outb(P, 7, ata::cmd::READ_DMA);
    r.bm_start(P, true);
    assert_eq!(
        r.bm_status(P) & (BM_ST_ACTIVE | BM_ST_INT | BM_ST_ERROR),
        BM_ST_INT
    );
    let mut got = [0u8; 4];
    r.mem
        .read_slice(&mut got, GuestAddress(0x20000 + 127 * 512))
        .unwrap();
    assert_eq!(u32::from_le_bytes(got), 127);
}

#[test]
fn bm_registers() {
    let mut r = rig();
    r.bm_write(4, &0x1234_5677u32.to_le_bytes());
    let mut d = [0u8; 4];
    r.ide.bar_read(4, 4, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x1234_5674, "table is dword aligned");
    // Secondary channel registers are separate.
    r.ide.bar_read(4, 12, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0);
    // Status: bits 5/6 writable, 1/2 write-one-to-clear.
    r.bm_write(2, &[0x60]);
    assert_eq!(r.bm_status(P), 0x60);
    r.outb(P, 6, 0xa0);
    r.outb(P, 7, ata::cmd::FLUSH_CACHE);
    assert_eq!(r.bm_status(P) & BM_ST_INT, BM_ST_INT);
    r.bm_write(2, &[BM_ST_INT | 0x60]);
    assert_eq!(r.bm_status(P), 0x60);
    // Starting with nothing pending does nothing harmful.
    r.bm_start(P, true);
    assert_eq!(r.bm_status(P) & BM_ST_ACTIVE, BM_ST_ACTIVE);
    r.bm_write(0, &[0]);
    assert_eq!(r.bm_status(P) & BM_ST_ACTIVE, 0);
}

// --------------------------------------------------------------- ATAPI --

/// Sends a packet command by PIO and gathers the data. Returns the data,
/// the final status and the DRQ block sizes.
fn packet(r: &mut Rig, cdb: &[u8], bcl: u16) -> (Vec<u8>, u8, Vec<usize>) {
    r.outb(S, 6, 0xa0);
    r.outb(S, 1, 0);
    r.outb(S, 4, bcl as u8);
    r.outb(S, 5, (bcl >> 8) as u8);
    r.outb(S, 7, ata::cmd::PACKET);
    let st = r.alt(S);
    assert_eq!(st & (status::DRQ | status::BSY), status::DRQ, "packet DRQ");
    assert_eq!(r.inb(S, 2) & 3, atapi::IR_COD, "CoD=1 IO=0 for the packet");
    let mut p = [0u8; 12];
    p[..cdb.len()].copy_from_slice(cdb);
    for c in p.chunks(2) {
        r.outw(S, u16::from_le_bytes([c[0], c[1]]));
    }
    let mut data = Vec::new();
    let mut blocks = Vec::new();
    loop {
        let st = r.status(S);
        if st & status::DRQ == 0 {
            if st & status::ERR == 0 {
                assert_eq!(r.inb(S, 2) & 3, 3, "IO=1 CoD=1 at completion");
            }
            return (data, st, blocks);
        }
        assert_eq!(r.inb(S, 2) & 3, atapi::IR_IO, "data to host");
        let n = r.inb(S, 4) as usize | (r.inb(S, 5) as usize) << 8;
        blocks.push(n);
        data.extend(r.read_data(S, n));
        assert!(blocks.len() < 10_000);
    }
}

fn request_sense(r: &mut Rig) -> (u8, u8) {
    let (d, st, _) = packet(r, &[op::REQUEST_SENSE, 0, 0, 0, 18], 18);
    assert_eq!(st & status::ERR, 0);
    assert_eq!(d.len(), 18);
    assert_eq!(d[0] & 0x7f, 0x70);
    (d[2] & 0x0f, d[12])
}

/// Writes a CDB (padded to 12 bytes) to the data port.
fn send_cdb(r: &mut Rig, cdb: &[u8]) {
    let mut p = [0u8; 12];
    p[..cdb.len()].copy_from_slice(cdb);
    for c in p.chunks(2) {
        r.outw(S, u16::from_le_bytes([c[0], c[1]]));
    }
}

fn read10(lba: u32, n: u16) -> Vec<u8> {
    let mut c = vec![op::READ_10, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&n.to_be_bytes());
    c
}

#[test]
fn atapi_seabios_boot_sequence() {
    let mut r = rig();
    let (_, st, _) = packet(&mut r, &[op::TEST_UNIT_READY], 0);
    assert_eq!(st, status::DRDY | status::DSC);
    let (d, _, _) = packet(&mut r, &[op::INQUIRY, 0, 0, 0, 36], 36);
    assert_eq!(d[0], 0x05);
    assert_eq!(d[1], 0x80);
    assert_eq!(&d[16..29], b"VIREO DVD-ROM");
    let (d, _, _) = packet(&mut r, &[op::READ_CAPACITY], 8);
    assert_eq!(u32::from_be_bytes([d[0], d[1], d[2], d[3]]), 63);
    assert_eq!(u32::from_be_bytes([d[4], d[5], d[6], d[7]]), 2048);
    // READ(10) of sector 17 then 2 sectors with a 2048-byte limit: one
    // DRQ block, one interrupt, per sector.
    let before = r.irq15.raised_count();
    let (d, st, blocks) = packet(&mut r, &read10(17, 2), 2048);
    assert_eq!(st, status::DRDY | status::DSC);
    assert_eq!(blocks, vec![2048, 2048]);
    assert_eq!(
        r.irq15.raised_count() - before,
        3,
        "two blocks + completion"
    );
    assert_eq!(sector_of(&d), 17);
    assert_eq!(sector_of(&d[2048..]), 18);
    assert_eq!(d[2047], (17 + 2047usize) as u8);
    // A big limit: the whole reply in one block (odd limit rounds down).
    let (d, _, blocks) = packet(&mut r, &read10(3, 3), 0xffff);
    assert_eq!(blocks, vec![6144]);
    assert_eq!(sector_of(&d[4096..]), 5);
    let (_, _, blocks) = packet(&mut r, &read10(3, 1), 1001);
    assert_eq!(blocks.iter().sum::<usize>(), 2048);
    assert!(blocks.iter().all(|&b| b <= 1000 && b % 2 == 0));
    // READ(12).
    let (d, _, _) = packet(&mut r, &[op::READ_12, 0, 0, 0, 0, 63, 0, 0, 0, 1], 0xfffe);
    assert_eq!(sector_of(&d), 63);
    // Allocation length clips replies.
    let (d, _, _) = packet(&mut r, &[op::INQUIRY, 0, 0, 0, 8], 0xfffe);
    assert_eq!(d.len(), 8);
}

#[test]
fn atapi_errors_and_sense() {
    let mut r = rig();
    // LBA past the end.
    let (d, st, _) = packet(&mut r, &read10(64, 1), 2048);
    assert!(d.is_empty());
    assert_eq!(st, status::DRDY | status::ERR);
    assert_eq!(r.inb(S, 1) >> 4, sense::ILLEGAL_REQUEST);
    assert_eq!(
        request_sense(&mut r),
        (sense::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE)
    );
    // Sense is cleared once read.
    assert_eq!(request_sense(&mut r), (0, 0));
    // A huge READ(12) count.
    let (_, st, _) = packet(
        &mut r,
        &[op::READ_12, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
        2048,
    );
    assert_eq!(st & status::ERR, status::ERR);
    assert_eq!(
        request_sense(&mut r),
        (sense::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE)
    );
    // WRITE(10) and unknown opcodes.
    for opcode in [op::WRITE_10, 0x55, 0xff, 0x1a] {
        let (_, st, _) = packet(&mut r, &[opcode, 0, 0, 0, 0, 0, 0, 0, 1], 2048);
        assert_eq!(st & status::ERR, status::ERR);
        assert_eq!(
            request_sense(&mut r),
            (sense::ILLEGAL_REQUEST, asc::ILLEGAL_OPCODE)
        );
    }
    // ATA writes to the CD are aborted at the ATA level.
    r.outb(S, 6, 0xe0);
    r.outb(S, 2, 1);
    r.outb(S, 7, ata::cmd::WRITE_SECTORS);
    assert_eq!(r.status(S), status::DRDY | status::ERR);
    assert_eq!(r.inb(S, 1), error::ABRT);
    r.outb(S, 7, ata::cmd::READ_DMA);
    assert_eq!(r.status(S) & status::ERR, status::ERR);
    // Byte count limit 0 for a data command: ATA abort.
    r.outb(S, 6, 0xa0);
    r.outb(S, 4, 0);
    r.outb(S, 5, 0);
    r.outb(S, 7, ata::cmd::PACKET);
    send_cdb(&mut r, &read10(0, 1));
    assert_eq!(r.status(S), status::DRDY | status::ERR);
    assert_eq!(r.inb(S, 1), error::ABRT);
    // Overlapped PACKET aborts.
    r.outb(S, 1, 0x02);
    r.outb(S, 7, ata::cmd::PACKET);
    assert_eq!(r.status(S) & status::ERR, status::ERR);
    // Still usable.
    let (_, st, _) = packet(&mut r, &[op::TEST_UNIT_READY], 0);
    assert_eq!(st, 0x50);
}

#[test]
fn atapi_without_medium() {
    let mut r = rig_with(100, None);
    let (_, st, _) = packet(&mut r, &[op::TEST_UNIT_READY], 0);
    assert_eq!(st & status::ERR, status::ERR);
    assert_eq!(
        request_sense(&mut r),
        (sense::NOT_READY, asc::MEDIUM_NOT_PRESENT)
    );
    let (_, st, _) = packet(&mut r, &read10(0, 1), 2048);
    assert_eq!(st & status::ERR, status::ERR);
    // INQUIRY works without a medium.
    let (d, st, _) = packet(&mut r, &[op::INQUIRY, 0, 0, 0, 36], 36);
    assert_eq!((d.len(), st), (36, 0x50));
    let (d, _, _) = packet(
        &mut r,
        &[op::GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 32],
        32,
    );
    assert_eq!(&d[6..8], &[0, 0], "no current profile");
}

#[test]
fn atapi_media_change_unit_attention() {
    let mut r = rig_with(100, None);
    let iso = image(&r.dir, "new.iso", &disk_bytes(10, 2048), true);
    assert!(r.ide.change_cdrom_media(S, Slot::Master, Some(iso)));
    assert!(!r.ide.change_cdrom_media(P, Slot::Master, None));
    // GESN reports the new medium once.
    let gesn = [op::GET_EVENT_STATUS_NOTIFICATION, 1, 0, 0, 0x10, 0, 0, 0, 8];
    let (d, _, _) = packet(&mut r, &gesn, 8);
    assert_eq!((d[2], d[4], d[5]), (4, 2, 2));
    let (d, _, _) = packet(&mut r, &gesn, 8);
    assert_eq!((d[4], d[5]), (0, 2));
    let (_, st, _) = packet(&mut r, &[op::TEST_UNIT_READY], 0);
    assert_eq!(st & status::ERR, status::ERR);
    assert_eq!(r.inb(S, 1) >> 4, sense::UNIT_ATTENTION);
    let (_, st, _) = packet(&mut r, &[op::TEST_UNIT_READY], 0);
    assert_eq!(st, 0x50);
    let (d, _, _) = packet(&mut r, &[op::READ_CAPACITY], 8);
    assert_eq!(d[3], 9);
    // Async GESN is refused.
    let (_, st, _) = packet(
        &mut r,
        &[op::GET_EVENT_STATUS_NOTIFICATION, 0, 0, 0, 0x10, 0, 0, 0, 8],
        8,
    );
    assert_eq!(st & status::ERR, status::ERR);
}

#[test]
fn atapi_toc_mode_sense_config_disc_info() {
    let mut r = rig();
    // TOC format 0, LBA: track 1 at 0, lead-out at 64.
    let (d, _, _) = packet(&mut r, &[op::READ_TOC, 0, 0, 0, 0, 0, 0, 0, 100, 0], 100);
    assert_eq!(d.len(), 20);
    assert_eq!(u16::from_be_bytes([d[0], d[1]]), 18);
    assert_eq!((d[2], d[3]), (1, 1));
    assert_eq!((d[5], d[6]), (0x14, 1));
    assert_eq!(&d[8..12], &[0, 0, 0, 0]);
    assert_eq!(d[14], 0xaa);
    assert_eq!(&d[16..20], &[0, 0, 0, 64]);
    // MSF: lead-out 64 + 150 frames = 00:02:64.
    let (d, _, _) = packet(&mut r, &[op::READ_TOC, 2, 0, 0, 0, 0, 0, 0, 100, 0], 100);
    assert_eq!(&d[16..20], &[0, 0, 2, 64]);
    // Format 1: session info.
    let (d, _, _) = packet(&mut r, &[op::READ_TOC, 0, 0, 0, 0, 0, 0, 0, 12, 0x40], 12);
    assert_eq!((d.len(), d[1], d[2], d[3]), (12, 0x0a, 1, 1));
    // Format 2: raw TOC, four 11-byte descriptors.
    let (d, _, _) = packet(
        &mut r,
        &[op::READ_TOC, 2, 0, 0, 0, 0, 0, 0xff, 0xff, 0x80],
        0xfffe,
    );
    assert_eq!(d.len(), 4 + 44);
    assert_eq!(d[4 + 3], 0xa0);
    assert_eq!(d[4 + 2 * 11 + 3], 0xa2);
    // Start track past the only track.
    let (_, st, _) = packet(&mut r, &[op::READ_TOC, 0, 0, 0, 0, 0, 5, 0, 100, 0], 100);
    assert_eq!(st & status::ERR, status::ERR);
    assert_eq!(
        request_sense(&mut r),
        (sense::ILLEGAL_REQUEST, asc::INVALID_FIELD)
    );
    // MODE SENSE(10) capabilities page.
    let (d, _, _) = packet(
        &mut r,
        &[op::MODE_SENSE_10, 0, 0x2a, 0, 0, 0, 0, 0, 64, 0],
        64,
    );
    assert_eq!(d.len(), 30);
    assert_eq!(u16::from_be_bytes([d[0], d[1]]), 28);
    assert_eq!((d[8], d[9]), (0x2a, 20));
    let (d, _, _) = packet(
        &mut r,
        &[op::MODE_SENSE_10, 0, 0x01, 0, 0, 0, 0, 0, 64, 0],
        64,
    );
    assert_eq!((d.len(), d[8], d[11]), (16, 0x01, 0x05));
    let (_, st, _) = packet(
        &mut r,
        &[op::MODE_SENSE_10, 0, 0xc1, 0, 0, 0, 0, 0, 64, 0],
        64,
    );
    assert_eq!(st & status::ERR, status::ERR);
    assert_eq!(
        request_sense(&mut r),
        (sense::ILLEGAL_REQUEST, asc::SAVING_PARAMETERS_NOT_SUPPORTED)
    );
    // GET CONFIGURATION: CD-ROM profile current.
    let (d, _, _) = packet(
        &mut r,
        &[op::GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 32],
        32,
    );
    assert_eq!(&d[6..8], &[0, 8]);
    assert_eq!(
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize,
        d.len() - 4
    );
    assert_eq!((d[16], d[17], d[18]), (0, 8, 1));
    // READ DISC INFORMATION.
    let (d, _, _) = packet(
        &mut r,
        &[op::READ_DISC_INFORMATION, 0, 0, 0, 0, 0, 0, 0, 34],
        34,
    );
    assert_eq!((d.len(), d[2], d[4]), (34, 0x0e, 1));
    // PREVENT ALLOW + eject refused while locked, allowed after.
    let (_, st, _) = packet(&mut r, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1], 0);
    assert_eq!(st, 0x50);
    let (_, st, _) = packet(&mut r, &[op::START_STOP_UNIT, 0, 0, 0, 2], 0);
    assert_eq!(st & status::ERR, status::ERR);
    packet(&mut r, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0], 0);
    let (_, st, _) = packet(&mut r, &[op::START_STOP_UNIT, 0, 0, 0, 2], 0);
    assert_eq!(st, 0x50);
    let (_, st, _) = packet(&mut r, &[op::TEST_UNIT_READY], 0);
    assert_eq!(st & status::ERR, status::ERR, "tray open");
    packet(&mut r, &[op::START_STOP_UNIT, 0, 0, 0, 3], 0);
    let (_, st, _) = packet(&mut r, &[op::TEST_UNIT_READY], 0);
    assert_eq!(st, 0x50);
}

#[test]
fn atapi_dma_read() {
    let mut r = rig();
    r.prd(0x1000, &[(0x20000, 4096, true)]);
    r.bm_setup(S, 0x1000, true);
    r.outb(S, 6, 0xa0);
    r.outb(S, 1, 0x01); // DMA
    r.outb(S, 7, ata::cmd::PACKET);
    send_cdb(&mut r, &read10(30, 2));
    assert_eq!(r.alt(S) & status::DRQ, status::DRQ);
    r.bm_start(S, true);
    assert_eq!(
        r.bm_status(S) & (BM_ST_INT | BM_ST_ACTIVE | BM_ST_ERROR),
        BM_ST_INT
    );
    assert_eq!(r.status(S), 0x50);
    assert_eq!(r.inb(S, 2) & 3, 3);
    let mut got = vec![0u8; 4096];
    r.mem.read_slice(&mut got, GuestAddress(0x20000)).unwrap();
    assert_eq!(sector_of(&got), 30);
    assert_eq!(sector_of(&got[2048..]), 31);
    assert_eq!(r.bm_status(P), 0, "primary bus master untouched");
    // DMA reply of a small command into a bigger buffer: stays active.
    r.bm_write(8, &[0]);
    r.bm_setup(S, 0x1000, true);
    r.outb(S, 1, 0x01);
    r.outb(S, 7, ata::cmd::PACKET);
    for c in [op::INQUIRY, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0].chunks(2) {
        r.outw(S, u16::from_le_bytes([c[0], c[1]]));
    }
    r.bm_start(S, true);
    assert_eq!(
        r.bm_status(S) & (BM_ST_INT | BM_ST_ACTIVE),
        BM_ST_INT | BM_ST_ACTIVE
    );
    r.mem
        .read_slice(&mut got[..36], GuestAddress(0x20000))
        .unwrap();
    assert_eq!(&got[16..29], b"VIREO DVD-ROM");
    // DMA with the buffer outside RAM.
    r.bm_write(8, &[0]);
    r.prd(0x1000, &[(0xffff_f000, 4096, true)]);
    r.bm_setup(S, 0x1000, true);
    r.outb(S, 1, 0x01);
    r.outb(S, 7, ata::cmd::PACKET);
    send_cdb(&mut r, &read10(0, 1));
    r.bm_start(S, true);
    assert_eq!(r.bm_status(S) & BM_ST_ERROR, BM_ST_ERROR);
    assert_eq!(r.status(S) & status::ERR, status::ERR);
}

#[test]
fn atapi_device_reset_and_diagnostic() {
    let mut r = rig();
    r.outb(S, 6, 0xa0);
    r.outb(S, 7, ata::cmd::PACKET);
    assert_eq!(r.alt(S) & status::DRQ, status::DRQ);
    // DEVICE RESET is accepted even with DRQ set.
    r.outb(S, 7, ata::cmd::DEVICE_RESET);
    assert_eq!(r.alt(S), 0);
    assert_eq!((r.inb(S, 4), r.inb(S, 5)), (0x14, 0xeb));
    r.outb(S, 4, 0);
    r.outb(S, 7, ata::cmd::EXECUTE_DEVICE_DIAGNOSTIC);
    assert_eq!((r.inb(S, 1), r.inb(S, 4), r.inb(S, 5)), (1, 0x14, 0xeb));
}

// ------------------------------------------------------------- hostile --

#[test]
fn random_register_traffic_never_panics() {
    let mut r = rig();
    // Make PRD pointers land in and out of RAM.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200_000 {
        let v = next();
        let val = (v >> 8) as u8;
        let chan = if v & 1 == 0 { P } else { S };
        let len = [1usize, 2, 4][((v >> 16) % 3) as usize];
        let mut buf = [0u8; 4];
        buf[..len].copy_from_slice(&((v >> 24) as u32).to_le_bytes()[..len]);
        match (v >> 40) % 8 {
            0 => r.ide.cmd_read(chan, (v >> 44) % 8, &mut buf[..len]),
            1 | 2 => r.ide.cmd_write(chan, (v >> 44) % 8, &buf[..len]),
            // SRST now and then; mostly not, so commands get through.
            3 if (v >> 50) % 64 == 0 => r.ide.ctl_write(chan, &[val]),
            3 => r.ide.ctl_write(chan, &[val & !CTL_SRST]),
            4 => r.ide.bar_write(4, (v >> 44) % 16, &buf[..len]),
            5 => r.ide.bar_read(4, (v >> 44) % 16, &mut buf[..len]),
            6 => {
                // Bias towards real commands.
                let cmds = [
                    0x20, 0x24, 0x30, 0xc8, 0xca, 0x25, 0xa0, 0xa1, 0xec, 0xc4, 0xc6,
                ];
                r.ide
                    .cmd_write(chan, 7, &[cmds[((v >> 44) % cmds.len() as u64) as usize]]);
            }
            _ => r.ide.ctl_read(chan, &mut buf[..1]),
        }
    }
    // The machine still works afterwards.
    r.ide.reset();
    r.lba28(2, 1);
    r.outb(P, 7, ata::cmd::READ_SECTORS);
    assert_eq!(sector_of(&r.read_data(P, 512)), 2);
}

/// SeaBIOS's ata_detect for one channel, step by step (src/hw/ata.c):
/// returns what it found for master and slave.
fn seabios_detect(r: &mut Rig, c: Channel) -> [Option<&'static str>; 2] {
    let mut found = [None, None];
    let mut did_reset = false;
    for slave in 0..2u8 {
        let dh = if slave == 1 { 0xb0 } else { 0xa0 };
        if r.status(c) & status::BSY != 0 {
            continue;
        }
        r.outb(c, 6, dh);
        if r.status(c) & status::BSY != 0 {
            continue;
        }
        r.outb(c, 6, dh);
        let got_dh = r.inb(c, 6);
        r.outb(c, 2, 0x55);
        r.outb(c, 3, 0xaa);
        if r.inb(c, 2) != 0x55 || r.inb(c, 3) != 0xaa || got_dh != dh {
            continue;
        }
        if !did_reset {
            // ata_reset: pulse SRST with nIEN, wait !BSY, reselect.
            r.ctl(c, 0x08 | CTL_NIEN | CTL_SRST);
            r.ctl(c, 0x08 | CTL_NIEN);
            assert_eq!(r.status(c) & status::BSY, 0);
            r.outb(c, 6, dh);
            assert_eq!(r.inb(c, 6), dh);
            r.ctl(c, 0x08);
            did_reset = true;
        }
        // send_ata_identity(IDENTIFY PACKET DEVICE) with nIEN.
        let try_identify = |r: &mut Rig, cmd: u8| -> Option<Vec<u8>> {
            r.ctl(c, 0x08 | CTL_NIEN);
            r.outb(c, 6, dh);
            r.outb(c, 1, 0);
            r.outb(c, 2, 0);
            r.outb(c, 3, 0);
            r.outb(c, 4, 0);
            r.outb(c, 5, 0);
            r.outb(c, 7, cmd);
            let st = r.status(c);
            let out = if st & status::BSY == 0 && st & status::ERR == 0 && st & status::DRQ != 0 {
                let d = r.read_data(c, 512);
                r.alt(c);
                let st = r.status(c);
                assert_eq!(st & (status::BSY | status::DRQ | status::ERR), 0);
                Some(d)
            } else {
                None
            };
            r.ctl(c, 0x08);
            out
        };
        if let Some(id) = try_identify(r, ata::cmd::IDENTIFY_PACKET_DEVICE) {
            assert_eq!((word(&id, 0) >> 8) & 0x1f, 5);
            found[slave as usize] = Some("cdrom");
            continue;
        }
        let st = r.status(c);
        if st == 0 {
            continue;
        }
        assert_eq!(st & status::DRDY, status::DRDY, "await_rdy");
        if let Some(id) = try_identify(r, ata::cmd::IDENTIFY_DEVICE) {
            assert_ne!(word(&id, 83) & (1 << 10), 0);
            found[slave as usize] = Some("disk");
        }
    }
    found
}

#[test]
fn seabios_detects_disk_and_cdrom() {
    let mut r = rig();
    assert_eq!(seabios_detect(&mut r, P), [Some("disk"), None]);
    assert_eq!(seabios_detect(&mut r, S), [Some("cdrom"), None]);
    // A disk as slave is found too.
    let img = image(&r.dir, "slave.img", &disk_bytes(64, 512), false);
    r.ide.attach_disk(S, Slot::Slave, img);
    assert_eq!(seabios_detect(&mut r, S), [Some("cdrom"), Some("disk")]);
    // nIEN was in force throughout the identify commands.
    assert_eq!(r.irq14.raised_count(), 0);
}

#[test]
fn ata_disk_on_a_qcow2_image() {
    let mut r = rig();
    let path = r.dir.path().join("d.qcow2");
    block::create(&path, DiskFormat::Qcow2, 8 << 20).unwrap();
    {
        let img = block::open(&path, DiskFormat::Qcow2, false).unwrap();
        r.ide.attach_disk(P, Slot::Slave, img);
        r.outb(P, 6, 0xf0);
        r.outb(P, 7, ata::cmd::IDENTIFY_DEVICE);
        let id = r.read_data(P, 512);
        assert_eq!(word(&id, 100), 16384);
        // WRITE SECTORS at LBA 5000, then READ SECTORS back.
        r.outb(P, 6, 0xf0);
        r.outb(P, 2, 1);
        r.outb(P, 3, (5000 & 0xff) as u8);
        r.outb(P, 4, (5000 >> 8) as u8);
        r.outb(P, 5, 0);
        r.outb(P, 7, ata::cmd::WRITE_SECTORS);
        for i in 0..256u16 {
            r.outw(P, i.wrapping_mul(0x0101));
        }
        assert_eq!(r.status(P), 0x50);
        r.outb(P, 2, 1);
        r.outb(P, 3, (5000 & 0xff) as u8);
        r.outb(P, 4, (5000 >> 8) as u8);
        r.outb(P, 7, ata::cmd::READ_SECTORS);
        let back = r.read_data(P, 512);
        assert_eq!(u16::from_le_bytes([back[6], back[7]]), 0x0303);
        r.outb(P, 7, ata::cmd::FLUSH_CACHE);
        assert_eq!(r.status(P), 0x50);
        // Detach by replacing the slot so the image is closed.
        r.ide.attach_cdrom(P, Slot::Slave, None);
    }
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&path)
        .output()
        .expect("this test needs qemu-img: apt-get install qemu-utils");
    assert!(out.status.success(), "{out:?}");
}
