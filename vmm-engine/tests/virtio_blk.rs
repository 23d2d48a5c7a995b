//! virtio-blk through the transport, driven by a Rust "guest" driver.

mod virtio_common;

use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};
use vmm_engine::devices::pci::PciDevice;
use vmm_engine::devices::virtio::blk::{self, Blk};
use vmm_engine::devices::virtio::event_loop::EventLoop;
use vmm_engine::devices::virtio::pci::{common, VirtioPciDevice, NO_VECTOR};
use vmm_engine::devices::virtio::{open_disk, status, F_VERSION_1};
use vmm_engine::devices::RecordingIrq;
use vmm_engine::DiskFormat;

use virtio_common::*;

const T: Duration = Duration::from_secs(10);
const MEM: usize = 512 << 20; // sparse: only touched pages cost
const DISK_SECTORS: u64 = 16384; // 8 MiB
const ALL: u64 = u64::MAX;

struct Setup {
    drv: Driver,
    msi: Arc<RecordingMsi>,
    irq: Arc<RecordingIrq>,
    path: std::path::PathBuf,
    _el: EventLoop,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("vireo-virtio-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

fn setup(tag: &str, read_only: bool, fill: u8) -> Setup {
    let dir = tempdir(tag);
    let path = dir.0.join("disk.raw");
    std::fs::write(&path, vec![fill; (DISK_SECTORS * 512) as usize]).unwrap();
    setup_at(dir, path, read_only)
}

fn setup_at(dir: TempDir, path: std::path::PathBuf, read_only: bool) -> Setup {
    let disk = open_disk(&path, DiskFormat::Raw, read_only).unwrap();
    let el = EventLoop::start("virtio-test").unwrap();
    let msi = RecordingMsi::new();
    let irq = RecordingIrq::new();
    let mem = guest_memory(MEM);
    let dev = VirtioPciDevice::new(
        Box::new(Blk::new(disk, "vireo-serial-0123456789")),
        mem.clone(),
        msi.clone(),
        irq.clone(),
        el.handle(),
    )
    .unwrap();
    let drv = Driver::new(dev, mem, 0x10_0000);
    Setup {
        drv,
        msi,
        irq,
        path,
        _el: el,
        _dir: dir,
    }
}

/// Negotiates everything, sets up queue 0 (vector 1) with MSI-X.
fn ready(s: &mut Setup) -> u64 {
    let f = s.drv.negotiate(ALL);
    s.drv.enable_msix(2);
    s.drv.common_wr(common::MSIX_CONFIG, 2, 0);
    s.drv.setup_queue(0, 64, 1);
    s.drv.driver_ok();
    f
}

/// A device set up by [`setup`] and made [`ready`].
fn ready_setup(tag: &str, read_only: bool, fill: u8) -> Setup {
    let mut s = setup(tag, read_only, fill);
    ready(&mut s);
    s
}

/// A request buffer area: header at +0, status at +16, data at +4096.
struct Req {
    hdr: u64,
    st: u64,
}

fn req_area(d: &mut Driver) -> Req {
    let hdr = d.alloc(16, 16);
    let st = d.alloc(1, 1);
    Req { hdr, st }
}

fn write_hdr(d: &Driver, at: u64, ty: u32, sector: u64) {
    d.mem.write_obj(ty, GuestAddress(at)).unwrap();
    d.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
    d.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
}

/// Runs a request: header, then `data` descriptors, then the status byte.
/// Returns (status, used len).
fn run(d: &mut Driver, ty: u32, sector: u64, data: &[(u64, u32, u16)]) -> (u8, u32) {
    let r = req_area(d);
    write_hdr(d, r.hdr, ty, sector);
    d.mem.write_obj(0xeeu8, GuestAddress(r.st)).unwrap();
    let mut chain = vec![(r.hdr, 16, 0)];
    chain.extend_from_slice(data);
    chain.push((r.st, 1, DESC_F_WRITE));
    let head = d.add_chain(0, &chain);
    d.kick(0);
    let (id, len) = d.wait_used(0, T);
    assert_eq!(id, head);
    (d.mem.read_obj(GuestAddress(r.st)).unwrap(), len)
}

/// Queues, without a kick, a read of sector 0 into the 512 bytes at `buf`.
fn queue_read0(d: &mut Driver, buf: u64) -> Req {
    let r = req_area(d);
    write_hdr(d, r.hdr, blk::T_IN, 0);
    d.add_chain(
        0,
        &[
            (r.hdr, 16, 0),
            (buf, 512, DESC_F_WRITE),
            (r.st, 1, DESC_F_WRITE),
        ],
    );
    r
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn file_bytes(s: &Setup, off: u64, len: usize) -> Vec<u8> {
    let all = std::fs::read(&s.path).unwrap();
    all[off as usize..off as usize + len].to_vec()
}

#[test]
fn pci_identity_features_and_config() {
    let mut s = setup("ident", false, 0);
    let d = &mut s.drv;
    assert_eq!(cfg16(&mut d.dev, 0), 0x1af4);
    assert_eq!(cfg16(&mut d.dev, 2), 0x1042);
    assert_eq!(cfg8(&mut d.dev, 8), 1, "revision 1: modern only");
    assert_eq!(cfg32(&mut d.dev, 8) >> 8, 0x018000);
    assert_eq!(cfg16(&mut d.dev, 0x2c), 0x1af4);
    assert_ne!(cfg16(&mut d.dev, 0x2e), 0);
    assert_eq!(cfg8(&mut d.dev, 0x3d), 1, "INTA");
    // MSI-X: queues + 1 vectors, table and PBA in BAR4.
    let ctrl = cfg16(&mut d.dev, d.msix_cap + 2);
    assert_eq!(ctrl & 0x7ff, 1);
    assert_eq!(cfg32(&mut d.dev, d.msix_cap + 8) & 7, 4);
    assert_eq!(d.notify_mult, 4);
    assert_ne!(d.pci_cfg_cap, 0, "PCI cfg access capability");
    for r in [d.common, d.notify, d.isr, d.device] {
        assert_eq!(r.bar, 4);
        assert!(r.length > 0);
    }
    let f = d.device_features();
    for bit in [32u32, 2, 6, 9, 13, 14] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(f & blk::F_RO, 0);
    assert_eq!(d.common_rd(common::NUM_QUEUES, 2), 1);
    let dev_off = d.device.offset;
    assert_eq!(d.bar_rd(dev_off, 8), DISK_SECTORS, "capacity");
    assert_eq!(d.bar_rd(dev_off + 12, 4), blk::SEG_MAX as u64);
    assert_eq!(d.bar_rd(dev_off + 20, 4), 512, "blk_size");
    assert_eq!(d.bar_rd(dev_off + 40, 4), blk::MAX_DISCARD_SEG as u64);
    // Capacity read as two 32-bit halves gives the same.
    assert_eq!(
        d.bar_rd(dev_off, 4) | d.bar_rd(dev_off + 4, 4) << 32,
        DISK_SECTORS
    );
}

#[test]
fn feature_negotiation_requires_version_1_and_known_bits() {
    let mut s = setup("feat", false, 0);
    let d = &mut s.drv;
    d.set_status(status::ACKNOWLEDGE | status::DRIVER);
    d.write_driver_features(blk::F_FLUSH); // no VERSION_1
    d.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_eq!(d.status() & status::FEATURES_OK, 0);
    d.set_status(0);
    d.set_status(status::ACKNOWLEDGE | status::DRIVER);
    d.write_driver_features(F_VERSION_1 | 1 << 40); // a bit the device lacks
    d.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    assert_eq!(d.status() & status::FEATURES_OK, 0);
    let f = d.negotiate(F_VERSION_1 | blk::F_FLUSH);
    assert_eq!(f, F_VERSION_1 | blk::F_FLUSH);
    d.common_wr(common::DRIVER_FEATURE_SELECT, 4, 0);
    assert_eq!(d.common_rd(common::DRIVER_FEATURE, 4), blk::F_FLUSH);
    // Features are frozen after FEATURES_OK.
    d.common_wr(common::DRIVER_FEATURE, 4, 0);
    assert_eq!(d.common_rd(common::DRIVER_FEATURE, 4), blk::F_FLUSH);
    // DRIVER_OK with no valid queue is fine (no queue enabled); one with a
    // queue outside memory is refused with NEEDS_RESET.
    d.common_wr(common::QUEUE_SELECT, 2, 0);
    d.common_wr(common::QUEUE_DESC, 8, 0x4000_0000);
    d.common_wr(common::QUEUE_ENABLE, 2, 1);
    let st = d.status();
    d.set_status(st | status::DRIVER_OK);
    assert_eq!(d.status() & status::DRIVER_OK, 0);
    assert_ne!(d.status() & status::NEEDS_RESET, 0);
}

#[test]
fn write_flush_read_back() {
    let mut s = ready_setup("rw", false, 0);
    let d = &mut s.drv;
    let data = pattern(3 * 512, 7);
    let buf = d.alloc(4096, 4096);
    d.mem.write_slice(&data, GuestAddress(buf)).unwrap();
    // Data split over two descriptors, as a scatter list.
    let (st, len) = run(d, blk::T_OUT, 5, &[(buf, 1024, 0), (buf + 1024, 512, 0)]);
    assert_eq!((st, len), (blk::S_OK, 1));
    let (st, _) = run(d, blk::T_FLUSH, 0, &[]);
    assert_eq!(st, blk::S_OK);
    assert_eq!(file_bytes(&s, 5 * 512, 3 * 512), data, "on the image");
    let d = &mut s.drv;
    let back = d.alloc(4096, 4096);
    let (st, len) = run(
        d,
        blk::T_IN,
        5,
        &[(back, 512, DESC_F_WRITE), (back + 512, 1024, DESC_F_WRITE)],
    );
    assert_eq!((st, len), (blk::S_OK, 3 * 512 + 1));
    let mut got = vec![0u8; 3 * 512];
    d.mem.read_slice(&mut got, GuestAddress(back)).unwrap();
    assert_eq!(got, data);
    // Each completion was an MSI-X message on vector 1.
    assert!(s.msi.count_data(1) >= 3, "msi: {:?}", s.msi.messages());
    assert!(!s.irq.level(), "INTx stays low with MSI-X on");
}

#[test]
fn last_sector_and_past_the_end() {
    let mut s = ready_setup("end", false, 0x5a);
    let d = &mut s.drv;
    let buf = d.alloc(1024, 4096);
    let (st, _) = run(d, blk::T_IN, DISK_SECTORS - 1, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    let (st, _) = run(d, blk::T_IN, DISK_SECTORS - 1, &[(buf, 1024, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_IOERR, "crosses the end");
    let (st, _) = run(d, blk::T_OUT, DISK_SECTORS, &[(buf, 512, 0)]);
    assert_eq!(st, blk::S_IOERR);
    let (st, _) = run(d, blk::T_IN, u64::MAX / 256, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_IOERR, "sector * 512 overflows");
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 100, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_IOERR, "not a whole sector");
    assert_eq!(
        std::fs::metadata(&s.path).unwrap().len(),
        DISK_SECTORS * 512,
        "image not grown"
    );
}

#[test]
fn discard_and_write_zeroes() {
    let mut s = setup("discard", false, 0xaa);
    let f = ready(&mut s);
    assert_ne!(f & blk::F_DISCARD, 0);
    assert_ne!(f & blk::F_WRITE_ZEROES, 0);
    let d = &mut s.drv;
    let seg = d.alloc(32, 16);
    // Two ranges: sectors 10..14 and 100..101.
    for (i, (sector, n)) in [(10u64, 4u32), (100, 1)].iter().enumerate() {
        let a = seg + 16 * i as u64;
        d.mem.write_obj(*sector, GuestAddress(a)).unwrap();
        d.mem.write_obj(*n, GuestAddress(a + 8)).unwrap();
        d.mem.write_obj(0u32, GuestAddress(a + 12)).unwrap();
    }
    let (st, _) = run(d, blk::T_DISCARD, 0, &[(seg, 32, 0)]);
    assert_eq!(st, blk::S_OK);
    let img = std::fs::read(&s.path).unwrap();
    assert!(img[10 * 512..14 * 512].iter().all(|&b| b == 0));
    assert!(img[100 * 512..101 * 512].iter().all(|&b| b == 0));
    assert!(img[9 * 512..10 * 512].iter().all(|&b| b == 0xaa));
    assert!(img[14 * 512..15 * 512].iter().all(|&b| b == 0xaa));
    // Write zeroes with the UNMAP flag, sectors 200..208.
    let d = &mut s.drv;
    d.mem.write_obj(200u64, GuestAddress(seg)).unwrap();
    d.mem.write_obj(8u32, GuestAddress(seg + 8)).unwrap();
    d.mem.write_obj(1u32, GuestAddress(seg + 12)).unwrap();
    let (st, _) = run(d, blk::T_WRITE_ZEROES, 0, &[(seg, 16, 0)]);
    assert_eq!(st, blk::S_OK);
    // Read back through the device.
    let buf = d.alloc(8 * 512, 4096);
    d.mem
        .write_slice(&[0x77u8; 8 * 512], GuestAddress(buf))
        .unwrap();
    let (st, _) = run(d, blk::T_IN, 200, &[(buf, 8 * 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    let mut got = vec![1u8; 8 * 512];
    d.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert!(got.iter().all(|&b| b == 0));
    // A discard with flags, a range past the end, a ragged segment list.
    d.mem.write_obj(1u32, GuestAddress(seg + 12)).unwrap();
    let (st, _) = run(d, blk::T_DISCARD, 0, &[(seg, 16, 0)]);
    assert_eq!(st, blk::S_UNSUPP, "discard with UNMAP flag");
    d.mem.write_obj(0u32, GuestAddress(seg + 12)).unwrap();
    d.mem
        .write_obj(DISK_SECTORS - 2, GuestAddress(seg))
        .unwrap();
    let (st, _) = run(d, blk::T_DISCARD, 0, &[(seg, 16, 0)]);
    assert_eq!(st, blk::S_IOERR, "range past the end");
    let (st, _) = run(d, blk::T_DISCARD, 0, &[(seg, 12, 0)]);
    assert_eq!(st, blk::S_IOERR, "partial segment");
}

#[test]
fn get_id_and_unsupported() {
    let mut s = ready_setup("id", false, 0);
    let d = &mut s.drv;
    let buf = d.alloc(64, 16);
    let (st, len) = run(d, blk::T_GET_ID, 0, &[(buf, 20, DESC_F_WRITE)]);
    assert_eq!((st, len), (blk::S_OK, 21));
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(buf)).unwrap();
    assert_eq!(&id, b"vireo-serial-0123456");
    let (st, len) = run(d, 99, 0, &[]);
    assert_eq!((st, len), (blk::S_UNSUPP, 1));
}

#[test]
fn read_only_refuses_writes() {
    let mut s = setup("ro", true, 0x3c);
    let f = ready(&mut s);
    assert_ne!(f & blk::F_RO, 0, "RO feature offered");
    let d = &mut s.drv;
    let buf = d.alloc(4096, 4096);
    d.mem
        .write_slice(&[0x11u8; 512], GuestAddress(buf))
        .unwrap();
    let (st, _) = run(d, blk::T_OUT, 0, &[(buf, 512, 0)]);
    assert_eq!(st, blk::S_IOERR);
    let seg = d.alloc(16, 16);
    d.mem.write_obj(0u64, GuestAddress(seg)).unwrap();
    d.mem.write_obj(1u32, GuestAddress(seg + 8)).unwrap();
    let (st, _) = run(d, blk::T_WRITE_ZEROES, 0, &[(seg, 16, 0)]);
    assert_eq!(st, blk::S_IOERR);
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK, "reads still work");
    assert!(std::fs::read(&s.path).unwrap().iter().all(|&b| b == 0x3c));
}

#[test]
fn malformed_chains_get_errors_not_panics() {
    let mut s = ready_setup("bad", false, 0);
    let d = &mut s.drv;
    let buf = d.alloc(4096, 4096);

    // Header too short.
    let r = req_area(d);
    write_hdr(d, r.hdr, blk::T_IN, 0);
    d.add_chain(0, &[(r.hdr, 8, 0), (r.st, 1, DESC_F_WRITE)]);
    d.kick(0);
    d.wait_used(0, T);
    assert_eq!(
        d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(),
        blk::S_IOERR
    );

    // Wrong direction: a device-readable buffer after the writable status.
    let r = req_area(d);
    write_hdr(d, r.hdr, blk::T_OUT, 0);
    d.add_chain(
        0,
        &[
            (r.hdr, 16, 0),
            (buf, 512, DESC_F_WRITE),
            (r.st, 1, DESC_F_WRITE),
            (buf, 512, 0),
        ],
    );
    d.kick(0);
    d.wait_used(0, T);
    // The status is the last writable byte seen: here r.st.
    assert_eq!(
        d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(),
        blk::S_IOERR
    );

    // Data buffer outside guest RAM.
    let (st, _) = run(d, blk::T_IN, 0, &[(0x7_0000_0000, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_IOERR);
    let (st, _) = run(d, blk::T_OUT, 0, &[(u64::MAX - 100, 512, 0)]);
    assert_eq!(st, blk::S_IOERR);

    // Excessive length: 300 MiB inside RAM, over the request limit.
    let big = 128 << 20;
    let (st, _) = run(d, blk::T_IN, 0, &[(big, 300 << 20, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_IOERR);
    // A large request (3 MiB + 512: several internal chunks) works both ways.
    let n = (3 << 20) + 512;
    let data = pattern(n as usize, 99);
    d.mem.write_slice(&data, GuestAddress(big)).unwrap();
    let (st, len) = run(d, blk::T_OUT, 16, &[(big, n, 0)]);
    assert_eq!((st, len), (blk::S_OK, 1));
    let back = big + (64 << 20);
    let (st, len) = run(d, blk::T_IN, 16, &[(back, n, DESC_F_WRITE)]);
    assert_eq!((st, len), (blk::S_OK, n + 1));
    let mut got = vec![0u8; n as usize];
    d.mem.read_slice(&mut got, GuestAddress(back)).unwrap();
    assert!(got == data, "3 MiB request read back");
    let (st, _) = run(d, blk::T_IN, DISK_SECTORS - 8, &[(back, n, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_IOERR, "past the end");

    // A loop: hdr -> data -> status -> data -> status ...
    let r = req_area(d);
    write_hdr(d, r.hdr, blk::T_IN, 0);
    d.mem.write_obj(0xeeu8, GuestAddress(r.st)).unwrap();
    let table = d.desc_table(0);
    let ix = d.take_descs(0, 3);
    write_desc(&d.mem, table, ix[0], r.hdr, 16, DESC_F_NEXT, ix[1]);
    write_desc(
        &d.mem,
        table,
        ix[1],
        r.st,
        1,
        DESC_F_WRITE | DESC_F_NEXT,
        ix[2],
    );
    write_desc(
        &d.mem,
        table,
        ix[2],
        r.st,
        1,
        DESC_F_WRITE | DESC_F_NEXT,
        ix[1],
    );
    d.publish_raw(0, ix[0]);
    d.kick(0);
    let (id, _) = d.wait_used(0, T);
    assert_eq!(id, ix[0]);
    assert_eq!(
        d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(),
        blk::S_IOERR
    );

    // A next index past the table and no writable byte: dropped, len 0.
    let ix = d.take_descs(0, 1);
    write_desc(&d.mem, table, ix[0], r.hdr, 16, DESC_F_NEXT, 5000);
    d.publish_raw(0, ix[0]);
    d.kick(0);
    let (id, len) = d.wait_used(0, T);
    assert_eq!((id, len), (ix[0], 0));

    // An indirect table that points outside RAM.
    let ix = d.take_descs(0, 1);
    write_desc(&d.mem, table, ix[0], 0x9_0000_0000, 64, DESC_F_INDIRECT, 0);
    d.publish_raw(0, ix[0]);
    d.kick(0);
    let (id, len) = d.wait_used(0, T);
    assert_eq!((id, len), (ix[0], 0));

    // A valid request through an indirect table still works afterwards.
    let r = req_area(d);
    write_hdr(d, r.hdr, blk::T_OUT, 3);
    d.mem
        .write_slice(&[0x42u8; 512], GuestAddress(buf))
        .unwrap();
    let ind = d.alloc(48, 16);
    write_desc(&d.mem, ind, 0, r.hdr, 16, DESC_F_NEXT, 1);
    write_desc(&d.mem, ind, 1, buf, 512, DESC_F_NEXT, 2);
    write_desc(&d.mem, ind, 2, r.st, 1, DESC_F_WRITE, 0);
    let ix = d.take_descs(0, 1);
    write_desc(&d.mem, table, ix[0], ind, 48, DESC_F_INDIRECT, 0);
    d.publish_raw(0, ix[0]);
    d.kick(0);
    d.wait_used(0, T);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(), blk::S_OK);
    assert!(file_bytes(&s, 3 * 512, 512).iter().all(|&b| b == 0x42));
}

#[test]
fn reset_returns_queues_to_initial_state() {
    let mut s = ready_setup("reset", false, 0);
    let d = &mut s.drv;
    let buf = d.alloc(512, 512);
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    d.set_status(0);
    assert_eq!(d.status(), 0);
    d.common_wr(common::QUEUE_SELECT, 2, 0);
    assert_eq!(d.common_rd(common::QUEUE_SIZE, 2), blk::QUEUE_SIZE as u64);
    assert_eq!(d.common_rd(common::QUEUE_ENABLE, 2), 0);
    assert_eq!(d.common_rd(common::QUEUE_DESC, 8), 0);
    assert_eq!(d.common_rd(common::QUEUE_DRIVER, 8), 0);
    assert_eq!(d.common_rd(common::QUEUE_DEVICE, 8), 0);
    assert_eq!(d.common_rd(common::QUEUE_MSIX_VECTOR, 2), NO_VECTOR as u64);
    assert_eq!(d.common_rd(common::MSIX_CONFIG, 2), NO_VECTOR as u64);
    d.common_wr(common::DRIVER_FEATURE_SELECT, 4, 1);
    assert_eq!(d.common_rd(common::DRIVER_FEATURE, 4), 0);
    // A fresh queue elsewhere works from index 0 again.
    d.queues.clear();
    ready(&mut s);
    let d = &mut s.drv;
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    assert_eq!(d.used_idx(0), 1);
}

#[test]
fn intx_fallback_and_isr() {
    let mut s = setup("intx", false, 0);
    s.drv.negotiate(ALL);
    s.drv.setup_queue(0, 16, NO_VECTOR);
    s.drv.driver_ok();
    let d = &mut s.drv;
    let buf = d.alloc(512, 512);
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    assert!(wait_for(T, || s.irq.level()), "INTx raised");
    assert_ne!(
        cfg16(&mut s.drv.dev, 6) & (1 << 3),
        0,
        "PCI status INTx bit"
    );
    assert_eq!(s.drv.read_isr() & 1, 1, "ISR queue bit");
    assert_eq!(cfg16(&mut s.drv.dev, 6) & (1 << 3), 0, "INTx bit clear");
    assert!(!s.irq.level(), "ISR read lowers the line");
    assert_eq!(s.drv.read_isr(), 0, "ISR read clears");
    assert!(s.msi.messages().is_empty());
}

#[test]
fn masked_msix_vector_is_pending_then_delivered() {
    let mut s = ready_setup("mask", false, 0);
    let d = &mut s.drv;
    let tbl = (cfg32(&mut d.dev, d.msix_cap + 4) & !7) as u64;
    let pba = (cfg32(&mut d.dev, d.msix_cap + 8) & !7) as u64;
    d.bar_wr(tbl + 16 + 12, 4, 1); // mask vector 1
    let before = s.msi.count_data(1);
    let buf = d.alloc(512, 512);
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    let d = &mut s.drv;
    assert!(wait_for(T, || d.bar_rd(pba, 8) & 2 != 0), "pending bit");
    assert_eq!(s.msi.count_data(1), before);
    d.bar_wr(tbl + 16 + 12, 4, 0); // unmask
    assert_eq!(s.msi.count_data(1), before + 1);
    assert_eq!(d.bar_rd(pba, 8) & 2, 0);
}

#[test]
fn pci_cfg_access_capability_reaches_the_bar() {
    let mut s = setup("cfgcap", false, 0);
    let d = &mut s.drv;
    let c = d.pci_cfg_cap;
    // Read num_queues (2 bytes at common + 0x12) through the window.
    d.dev.config_write(c + 4, &[4]);
    d.dev.config_write(
        c + 8,
        &((d.common.offset + common::NUM_QUEUES) as u32).to_le_bytes(),
    );
    d.dev.config_write(c + 12, &2u32.to_le_bytes());
    assert_eq!(cfg16(&mut d.dev, c + 16), 1);
    // Write the device status through it.
    d.dev.config_write(
        c + 8,
        &((d.common.offset + common::DEVICE_STATUS) as u32).to_le_bytes(),
    );
    d.dev.config_write(c + 12, &1u32.to_le_bytes());
    d.dev.config_write(c + 16, &[status::ACKNOWLEDGE]);
    assert_eq!(d.status(), status::ACKNOWLEDGE);
    // A window past the BAR does nothing.
    d.dev.config_write(c + 8, &0xffff_fff0u32.to_le_bytes());
    d.dev.config_write(c + 16, &[0x55]);
    assert_eq!(d.status(), status::ACKNOWLEDGE);
}

#[test]
fn hostile_register_values_are_ignored() {
    let mut s = setup("hostile", false, 0);
    let d = &mut s.drv;
    d.negotiate(ALL);
    // Select a queue that does not exist, poke everything.
    d.common_wr(common::QUEUE_SELECT, 2, 77);
    assert_eq!(d.common_rd(common::QUEUE_SIZE, 2), 0);
    d.common_wr(common::QUEUE_SIZE, 2, 64);
    d.common_wr(common::QUEUE_ENABLE, 2, 1);
    d.common_wr(common::QUEUE_DESC, 8, 0x1000);
    d.common_wr(common::QUEUE_MSIX_VECTOR, 2, 0);
    assert_eq!(d.common_rd(common::QUEUE_MSIX_VECTOR, 2), NO_VECTOR as u64);
    // Queue 0: not a power of two, too big; a vector past the table.
    d.common_wr(common::QUEUE_SELECT, 2, 0);
    d.common_wr(common::QUEUE_SIZE, 2, 100);
    assert_eq!(d.common_rd(common::QUEUE_SIZE, 2), blk::QUEUE_SIZE as u64);
    d.common_wr(common::QUEUE_SIZE, 2, 1024);
    assert_eq!(d.common_rd(common::QUEUE_SIZE, 2), blk::QUEUE_SIZE as u64);
    d.common_wr(common::QUEUE_MSIX_VECTOR, 2, 9);
    assert_eq!(d.common_rd(common::QUEUE_MSIX_VECTOR, 2), NO_VECTOR as u64);
    // Odd sizes and offsets everywhere in the BAR: no panic.
    for off in (0..0x8000u64).step_by(7) {
        for len in [1usize, 2, 3, 4, 8] {
            let mut b = vec![0u8; len];
            d.dev.bar_read(4, off, &mut b);
            if !(0x14..0x16).contains(&off) && !(0x3000..0x4000).contains(&off) {
                d.dev.bar_write(4, off, &b);
            }
        }
    }
    d.dev.bar_read(4, u64::MAX, &mut [0u8; 4]);
    d.dev.bar_write(4, u64::MAX - 1, &[1, 2, 3, 4]);
    d.dev.bar_write(0, 0, &[1]);
    for off in 0..300usize {
        let mut b = [0u8; 4];
        d.dev.config_read(off, &mut b);
    }
}

/// xorshift64*: a small deterministic generator for the soup tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_descriptor_soup_never_panics_and_every_chain_completes() {
    let mut s = ready_setup("soup", false, 0);
    let d = &mut s.drv;
    let table = d.desc_table(0);
    let all = d.take_descs(0, 64);
    assert_eq!(all.len(), 64);
    // A scratch area the chains may point into (away from the rings).
    let scratch = d.alloc(4 << 20, 4096);
    let scratch_len = 4u64 << 20;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut junk = vec![0u8; scratch_len as usize];
    for (i, b) in junk.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(0x9e37_79b9) as u8 ^ (i >> 9) as u8;
    }
    d.mem.write_slice(&junk, GuestAddress(scratch)).unwrap();
    for round in 0..3000u32 {
        for i in 0..64u16 {
            let (addr, len) = match rng.below(10) {
                0 => (rng.next(), rng.next() as u32),
                1 => (MEM as u64 - rng.below(64), rng.below(4096) as u32),
                2 => (scratch + rng.below(scratch_len), 0),
                _ => {
                    let a = scratch + rng.below(scratch_len);
                    let room = scratch + scratch_len - a;
                    (a, rng.below(room.min(1 << 16) + 1) as u32)
                }
            };
            let flags = rng.below(8) as u16;
            let next = rng.below(72) as u16;
            write_desc(&d.mem, table, i, addr, len, flags, next);
        }
        // Some plausible headers in the scratch area.
        for _ in 0..8 {
            let at = scratch + rng.below(scratch_len / 16) * 16;
            let ty = [0u32, 1, 4, 8, 11, 13, 99][rng.below(7) as usize];
            write_hdr(d, at, ty, rng.below(DISK_SECTORS + 8));
        }
        let head = rng.below(64) as u16;
        d.publish_raw(0, head);
        d.kick(0);
        let (id, len) = d.wait_used(0, T);
        assert_eq!(id, head, "round {round}");
        assert!(
            len as u64 <= blk::MAX_REQUEST_BYTES + 1,
            "round {round}: len {len}"
        );
    }
    // Still serving real requests.
    let buf = d.alloc(512, 512);
    let r = req_area(d);
    write_hdr(d, r.hdr, blk::T_IN, 1);
    for (i, (a, l, f)) in [
        (r.hdr, 16u32, 0u16),
        (buf, 512, DESC_F_WRITE),
        (r.st, 1, DESC_F_WRITE),
    ]
    .iter()
    .enumerate()
    {
        let f = f | if i < 2 { DESC_F_NEXT } else { 0 };
        write_desc(&d.mem, table, i as u16, *a, *l, f, i as u16 + 1);
    }
    d.publish_raw(0, 0);
    d.kick(0);
    assert_eq!(d.wait_used(0, T), (0, 513));
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(), blk::S_OK);
    assert_eq!(
        std::fs::metadata(&s.path).unwrap().len(),
        DISK_SECTORS * 512,
        "the image never grows"
    );
}

#[test]
fn flushed_bytes_survive_kill_9() {
    const CHILD: &str = "VIREO_VIRTIO_FLUSH_CHILD";
    let sectors = |i: u64| (i * 37) % (DISK_SECTORS - 8);
    if let Ok(path) = std::env::var(CHILD) {
        // The child: write 32 requests, flush, say so, and wait to be killed.
        let path = std::path::PathBuf::from(path);
        let dir = TempDir(std::env::temp_dir().join("vireo-virtio-flush-child-unused"));
        let mut s = setup_at(dir, path, false);
        ready(&mut s);
        let d = &mut s.drv;
        let buf = d.alloc(8 * 512, 4096);
        for i in 0..32u64 {
            d.mem
                .write_slice(&pattern(8 * 512, i as u8), GuestAddress(buf))
                .unwrap();
            let (st, _) = run(d, blk::T_OUT, sectors(i), &[(buf, 8 * 512, 0)]);
            assert_eq!(st, blk::S_OK);
        }
        let (st, _) = run(d, blk::T_FLUSH, 0, &[]);
        assert_eq!(st, blk::S_OK);
        use std::io::Write;
        println!("VIREO-FLUSHED");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(60));
        panic!("child was not killed");
    }
    let dir = tempdir("kill9");
    let path = dir.0.join("disk.raw");
    std::fs::write(&path, vec![0u8; (DISK_SECTORS * 512) as usize]).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "flushed_bytes_survive_kill_9", "--nocapture"])
        .env(CHILD, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.contains("VIREO-FLUSHED") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let flushed = rx.recv_timeout(Duration::from_secs(60));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(flushed.is_ok(), "the child never reported its flush");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let img = std::fs::read(&path).unwrap();
    // Later writes may overlap earlier ones: build the expected image.
    let mut want = vec![0u8; img.len()];
    for i in 0..32u64 {
        let o = (sectors(i) * 512) as usize;
        want[o..o + 8 * 512].copy_from_slice(&pattern(8 * 512, i as u8));
    }
    assert!(
        img == want,
        "flushed data missing from the image after kill -9"
    );
}

#[test]
fn throughput_through_the_driver() {
    // Sequential 64 KiB writes then reads of a 32 MiB image, 16 in flight.
    let dir = tempdir("bench");
    let path = dir.0.join("disk.raw");
    let size: u64 = 32 << 20;
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let mut s = setup_at(dir, path, false);
    ready(&mut s);
    let d = &mut s.drv;
    const IO: u64 = 64 << 10;
    const DEPTH: u64 = 16;
    let bufs: Vec<(u64, u64, u64)> = (0..DEPTH)
        .map(|_| (d.alloc(16, 16), d.alloc(1, 1), d.alloc(IO, 4096)))
        .collect();
    for (ty, name) in [(blk::T_OUT, "write"), (blk::T_IN, "read")] {
        let t0 = std::time::Instant::now();
        let n = size / IO;
        let (mut next, mut done, mut inflight) = (0u64, 0u64, 0u64);
        let mut by_head = std::collections::HashMap::new();
        let mut free: Vec<usize> = (0..DEPTH as usize).collect();
        while done < n {
            while inflight < DEPTH && next < n {
                let slot = free.pop().unwrap();
                let (h, st, data) = bufs[slot];
                write_hdr(d, h, ty, next * IO / 512);
                let dflag = if ty == blk::T_IN { DESC_F_WRITE } else { 0 };
                let head = d.add_chain(
                    0,
                    &[(h, 16, 0), (data, IO as u32, dflag), (st, 1, DESC_F_WRITE)],
                );
                by_head.insert(head, slot);
                next += 1;
                inflight += 1;
            }
            d.kick(0);
            while let Some((head, _)) = d.poll_used(0) {
                let slot = by_head.remove(&head).unwrap();
                assert_eq!(
                    d.mem.read_obj::<u8>(GuestAddress(bufs[slot].1)).unwrap(),
                    blk::S_OK
                );
                free.push(slot);
                done += 1;
                inflight -= 1;
            }
            std::thread::yield_now();
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "virtio-blk {name}: {:.0} MB/s, {:.0} requests/s (64 KiB, depth 16, raw)",
            size as f64 / secs / 1e6,
            n as f64 / secs
        );
    }
}

#[test]
fn no_dma_without_bus_mastering() {
    let mut s = ready_setup("busmaster", false, 0x61);
    let d = &mut s.drv;
    d.dev
        .config_write(0x04, &vmm_engine::devices::pci::CMD_MEM.to_le_bytes());
    let buf = d.alloc(512, 512);
    let r = queue_read0(d, buf);
    d.kick(0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        d.used_idx(0),
        0,
        "nothing served while bus mastering is off"
    );
    let cmd = vmm_engine::devices::pci::CMD_MEM | vmm_engine::devices::pci::CMD_BUS_MASTER;
    d.dev.config_write(0x04, &cmd.to_le_bytes());
    d.wait_used(0, T);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(), blk::S_OK);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(buf)).unwrap(), 0x61);
}

#[test]
fn reset_during_io_stops_all_dma() {
    let mut s = ready_setup("resetio", false, 0x5c);
    let d = &mut s.drv;
    let area = d.alloc(21 * 64 * 1024, 4096);
    for i in 0..21u64 {
        let r = req_area(d);
        write_hdr(d, r.hdr, blk::T_IN, i * 128);
        d.add_chain(
            0,
            &[
                (r.hdr, 16, 0),
                (area + i * 65536, 65536, DESC_F_WRITE),
                (r.st, 1, DESC_F_WRITE),
            ],
        );
    }
    d.kick(0);
    d.set_status(0);
    assert_eq!(d.status(), 0);
    // Whatever was done before the reset returned stays; nothing after.
    let (used, size) = {
        let vq = &d.queues[&0];
        (vq.used, vq.size as u64)
    };
    let snap = |d: &Driver| {
        let mut ring = vec![0u8; (4 + 8 * size) as usize];
        d.mem.read_slice(&mut ring, GuestAddress(used)).unwrap();
        let mut data = vec![0u8; 21 * 65536];
        d.mem.read_slice(&mut data, GuestAddress(area)).unwrap();
        (ring, data)
    };
    let before = snap(d);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        snap(d) == before,
        "the device wrote guest memory after reset"
    );
    // And the device comes back.
    d.queues.clear();
    ready(&mut s);
    let d = &mut s.drv;
    let buf = d.alloc(512, 512);
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
}

/// Counts flushes on the way to a real disk.
struct CountingDisk {
    inner: Arc<dyn vmm_engine::devices::virtio::DiskImage>,
    flushes: std::sync::atomic::AtomicU32,
}

impl vmm_engine::devices::virtio::DiskImage for CountingDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(
        &self,
        buf: &mut [u8],
        off: u64,
    ) -> Result<(), vmm_engine::devices::virtio::BlockError> {
        self.inner.read_at(buf, off)
    }
    fn write_at(
        &self,
        buf: &[u8],
        off: u64,
    ) -> Result<(), vmm_engine::devices::virtio::BlockError> {
        self.inner.write_at(buf, off)
    }
    fn flush(&self) -> Result<(), vmm_engine::devices::virtio::BlockError> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.flush()
    }
    fn discard(&self, off: u64, len: u64) -> Result<(), vmm_engine::devices::virtio::BlockError> {
        self.inner.discard(off, len)
    }
    fn write_zeroes(
        &self,
        off: u64,
        len: u64,
    ) -> Result<(), vmm_engine::devices::virtio::BlockError> {
        self.inner.write_zeroes(off, len)
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
}

#[test]
fn write_through_without_flush_feature_write_back_with_it() {
    let dir = tempdir("wt");
    let path = dir.0.join("disk.raw");
    std::fs::write(&path, vec![0u8; (DISK_SECTORS * 512) as usize]).unwrap();
    let disk = Arc::new(CountingDisk {
        inner: open_disk(&path, DiskFormat::Raw, false).unwrap(),
        flushes: Default::default(),
    });
    let el = EventLoop::start("virtio-test").unwrap();
    let mem = guest_memory(MEM);
    let dev = VirtioPciDevice::new(
        Box::new(Blk::new(disk.clone(), "wt")),
        mem.clone(),
        RecordingMsi::new(),
        RecordingIrq::new(),
        el.handle(),
    )
    .unwrap();
    let mut d = Driver::new(dev, mem, 0x10_0000);
    let flushes = || disk.flushes.load(std::sync::atomic::Ordering::SeqCst);
    // As SeaBIOS does: VERSION_1 and BLK_SIZE only, no FLUSH.
    d.negotiate(F_VERSION_1 | 1 << 6);
    d.setup_queue(0, 16, NO_VECTOR);
    d.driver_ok();
    let buf = d.alloc(512, 512);
    let (st, _) = run(&mut d, blk::T_OUT, 0, &[(buf, 512, 0)]);
    assert_eq!(st, blk::S_OK);
    assert_eq!(flushes(), 1, "write-through: the write was made durable");
    let (st, _) = run(&mut d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    assert_eq!(flushes(), 1, "reads do not flush");
    // With FLUSH negotiated, writes are write-back until the driver flushes.
    d.queues.clear();
    d.negotiate(ALL);
    d.setup_queue(0, 16, NO_VECTOR);
    d.driver_ok();
    let (st, _) = run(&mut d, blk::T_OUT, 0, &[(buf, 512, 0)]);
    assert_eq!(st, blk::S_OK);
    assert_eq!(flushes(), 1);
    let (st, _) = run(&mut d, blk::T_FLUSH, 0, &[]);
    assert_eq!(st, blk::S_OK);
    assert_eq!(flushes(), 2);
}

#[test]
fn doorbell_through_the_pci_cfg_window_as_seabios_does_above_4g() {
    let mut s = ready_setup("cfgkick", false, 0x33);
    let d = &mut s.drv;
    let buf = d.alloc(512, 512);
    let r = queue_read0(d, buf);
    // bar = 4, offset = notify of queue 0, length = 2, then a 16-bit write.
    let c = d.pci_cfg_cap;
    d.dev.config_write(c + 4, &[4]);
    d.dev
        .config_write(c + 8, &(d.notify.offset as u32).to_le_bytes());
    d.dev.config_write(c + 12, &2u32.to_le_bytes());
    d.dev.config_write(c + 16, &0u16.to_le_bytes());
    d.wait_used(0, T);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(), blk::S_OK);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(buf)).unwrap(), 0x33);
}

#[test]
fn avail_index_far_ahead_sets_needs_reset() {
    let mut s = ready_setup("needsreset", false, 0);
    let d = &mut s.drv;
    let avail = d.queues[&0].avail;
    // The ring holds 64 entries; claim 300 are available.
    d.mem.write_obj(300u16, GuestAddress(avail + 2)).unwrap();
    d.kick_always(0);
    assert!(
        wait_for(T, || d.status() & status::NEEDS_RESET != 0),
        "NEEDS_RESET set"
    );
    assert_eq!(d.used_idx(0), 0, "nothing was served");
    assert!(wait_for(T, || s.msi.count_data(0) >= 1), "config interrupt");
    // A reset clears it and the device works again.
    s.drv.queues.clear();
    ready(&mut s);
    let d = &mut s.drv;
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
    let buf = d.alloc(512, 512);
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
}

/// Runs `f` on its own thread and fails the test if it has not finished
/// within `secs`: a device that spins with its lock held would block the
/// test thread for ever, so the hang is detected here instead.
fn finishes_within<R: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(r) => r,
        Err(_) => panic!("{what}: still blocked after {secs} s (the device's I/O thread hangs)"),
    }
}

/// A second, healthy virtio-blk device on the event loop `el`.
fn neighbour(el: &EventLoop, tag: &str) -> (Driver, TempDir) {
    let dir = tempdir(tag);
    let path = dir.0.join("disk.raw");
    std::fs::write(&path, vec![0x5au8; (DISK_SECTORS * 512) as usize]).unwrap();
    let disk = open_disk(&path, DiskFormat::Raw, false).unwrap();
    let mem = guest_memory(16 << 20);
    let dev = VirtioPciDevice::new(
        Box::new(Blk::new(disk, "neighbour")),
        mem.clone(),
        RecordingMsi::new(),
        RecordingIrq::new(),
        el.handle(),
    )
    .unwrap();
    let mut d = Driver::new(dev, mem, 0x10_0000);
    d.negotiate(ALL);
    d.enable_msix(2);
    d.setup_queue(0, 64, 1);
    d.driver_ok();
    (d, dir)
}

/// Reads sector 0 of the neighbour and checks its contents.
fn neighbour_reads(d: &mut Driver) {
    let buf = d.alloc(512, 512);
    let (st, _) = run(d, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
    assert_eq!(st, blk::S_OK);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(buf)).unwrap(), 0x5a);
}

#[test]
fn driver_ok_and_doorbell_on_a_queue_never_enabled_do_not_hang_the_io_thread() {
    // The hostile guest of issue 12: it sets queue 0 up as a driver would
    // but never enables it, sets DRIVER_OK (which catches up on doorbells)
    // and rings the doorbell. Before the fix the I/O thread spun for ever
    // in Blk::process with the device lock held.
    let mut s = setup("notready", false, 0x11);
    let (mut other, _dir) = neighbour(&s._el, "notready-nb");
    finishes_within(60, "hostile guest", move || {
        let d = &mut s.drv;
        d.negotiate(ALL);
        d.enable_msix(2);
        d.common_wr(common::QUEUE_SELECT, 2, 0);
        d.common_wr(common::QUEUE_SIZE, 2, 64);
        for (reg, a) in [
            (common::QUEUE_DESC, 0x20_0000u64),
            (common::QUEUE_DRIVER, 0x20_1000),
            (common::QUEUE_DEVICE, 0x20_2000),
        ] {
            d.common_wr(reg, 8, a);
        }
        // An avail index that is not the device's, as garbage would be.
        d.mem.write_obj(7u16, GuestAddress(0x2)).unwrap();
        d.mem.write_obj(7u16, GuestAddress(0x20_1002)).unwrap();
        let st = d.status();
        d.set_status(st | status::DRIVER_OK);
        d.kick_always(0);
        // The other device on the same I/O thread is served after the
        // hostile doorbell, so the thread went past it.
        neighbour_reads(&mut other);
        // The hostile device still answers its registers, and works
        // again after a reset.
        assert_ne!(s.drv.status() & status::DRIVER_OK, 0);
        ready(&mut s);
        let buf = s.drv.alloc(512, 512);
        let (st, _) = run(&mut s.drv, blk::T_IN, 0, &[(buf, 512, DESC_F_WRITE)]);
        assert_eq!(st, blk::S_OK);
        assert_eq!(s.drv.mem.read_obj::<u8>(GuestAddress(buf)).unwrap(), 0x11);
    });
}

/// A disk whose reads wait at a gate the test opens: a request is in
/// flight for as long as the test wants.
struct GatedDisk {
    inner: Arc<dyn vmm_engine::devices::virtio::DiskImage>,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl vmm_engine::devices::virtio::DiskImage for GatedDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), blk_err::BlockError> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.gate.lock().unwrap().recv();
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), blk_err::BlockError> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), blk_err::BlockError> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), blk_err::BlockError> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), blk_err::BlockError> {
        self.inner.write_zeroes(offset, len)
    }
    fn read_only(&self) -> bool {
        false
    }
}

mod blk_err {
    pub use vmm_engine::devices::virtio::BlockError;
}

#[test]
fn avail_index_moved_past_the_ring_while_a_request_is_in_flight_stops_the_device() {
    let dir = tempdir("inflight");
    let path = dir.0.join("disk.raw");
    std::fs::write(&path, vec![0x22u8; (DISK_SECTORS * 512) as usize]).unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (open, gate_rx) = std::sync::mpsc::channel();
    let disk = Arc::new(GatedDisk {
        inner: open_disk(&path, DiskFormat::Raw, false).unwrap(),
        entered: std::sync::Mutex::new(entered_tx),
        gate: std::sync::Mutex::new(gate_rx),
    });
    let el = EventLoop::start("virtio-test").unwrap();
    let mem = guest_memory(16 << 20);
    let msi = RecordingMsi::new();
    let dev = VirtioPciDevice::new(
        Box::new(Blk::new(disk, "gated")),
        mem.clone(),
        msi.clone(),
        RecordingIrq::new(),
        el.handle(),
    )
    .unwrap();
    let mut d = Driver::new(dev, mem, 0x10_0000);
    d.negotiate(ALL);
    d.enable_msix(2);
    d.common_wr(common::MSIX_CONFIG, 2, 0);
    d.setup_queue(0, 64, 1);
    d.driver_ok();
    let (mut other, _dir2) = neighbour(&el, "inflight-nb");
    let buf = d.alloc(512, 512);
    let r = queue_read0(&mut d, buf);
    d.kick(0);
    // The read is now inside the disk, under the device lock.
    entered.recv_timeout(T).expect("the read reached the disk");
    let avail = d.queues[&0].avail;
    d.mem
        .write_obj(1u16 + 300, GuestAddress(avail + 2))
        .unwrap();
    open.send(()).unwrap();
    finishes_within(60, "device with a broken ring", move || {
        // Owned here: on a hang, the test fails without joining the loop.
        let _el = el;
        assert!(
            wait_for(T, || d.status() & status::NEEDS_RESET != 0),
            "NEEDS_RESET set"
        );
        // The request in flight completed; nothing past it was served.
        assert_eq!(d.used_idx(0), 1);
        assert_eq!(d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(), blk::S_OK);
        assert!(wait_for(T, || msi.count_data(0) >= 1), "config interrupt");
        neighbour_reads(&mut other);
        drop(open);
    });
}

#[test]
fn more_chains_than_one_wake_serves_all_complete_after_yielding() {
    // 80 requests and one doorbell: the device serves CHAINS_PER_WAKE of
    // them, yields the I/O thread, and is woken again for the rest.
    let mut s = ready_setup("budget", false, 0x33);
    s.drv.queues.clear();
    s.drv.negotiate(ALL);
    s.drv.enable_msix(2);
    s.drv.setup_queue(0, 256, 1);
    s.drv.driver_ok();
    let n = 80u16;
    assert!(n as usize > vmm_engine::devices::virtio::CHAINS_PER_WAKE);
    let d = &mut s.drv;
    let mut reqs = Vec::new();
    for _ in 0..n {
        let buf = d.alloc(512, 512);
        reqs.push((queue_read0(d, buf), buf));
    }
    d.kick_always(0);
    assert!(
        wait_for(T, || d.used_idx(0) == n),
        "all {n} requests served"
    );
    for (r, buf) in reqs {
        assert_eq!(d.mem.read_obj::<u8>(GuestAddress(r.st)).unwrap(), blk::S_OK);
        assert_eq!(d.mem.read_obj::<u8>(GuestAddress(buf)).unwrap(), 0x33);
    }
}
