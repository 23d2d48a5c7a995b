//! A Rust-side virtio driver that plays the guest: it finds the virtio-pci
//! capabilities in config space, programs BAR4, negotiates features, lays
//! out split virtqueues in a `GuestMemoryMmap`, writes descriptor chains,
//! rings doorbells through `bar_write` and waits for used-ring entries.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_engine::testing::devices::pci::{PciDevice, CMD_BUS_MASTER, CMD_MEM};
use vmm_engine::testing::devices::virtio::pci::{common, VirtioPciDevice};
use vmm_engine::testing::devices::virtio::{status, MsiSink};

pub type Mem = GuestMemoryMmap<()>;

pub const BAR_ADDR: u64 = 0xe000_0000;
pub const MSI_ADDR: u64 = 0xfee0_0000;
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;

pub fn guest_memory(size: usize) -> Mem {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

/// Records MSI messages and wakes waiters.
#[derive(Default)]
pub struct RecordingMsi {
    msgs: Mutex<Vec<(u64, u32)>>,
    cv: Condvar,
}

impl RecordingMsi {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn messages(&self) -> Vec<(u64, u32)> {
        self.msgs.lock().unwrap().clone()
    }
    pub fn count_data(&self, data: u32) -> usize {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.1 == data)
            .count()
    }
}

impl MsiSink for RecordingMsi {
    fn signal(&self, addr: u64, data: u32) {
        self.msgs.lock().unwrap().push((addr, data));
        self.cv.notify_all();
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Region {
    pub bar: u8,
    pub offset: u64,
    pub length: u64,
}

/// A split virtqueue as the driver sees it.
pub struct Vq {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    avail_idx: u16,
    last_used: u16,
    /// The avail index at the last notification decision.
    kicked_idx: u16,
    pub kicks: u64,
    pub kicks_suppressed: u64,
}

pub struct Driver {
    pub dev: VirtioPciDevice,
    pub mem: Mem,
    pub common: Region,
    pub notify: Region,
    pub isr: Region,
    pub device: Region,
    pub pci_cfg_cap: usize,
    pub notify_mult: u32,
    pub msix_cap: usize,
    pub queues: HashMap<u16, Vq>,
    next_free: u64,
}

impl Driver {
    /// Discovers the capabilities and maps BAR4 at [`BAR_ADDR`]. Guest
    /// memory from `heap` upwards is the driver's to allocate rings in.
    pub fn new(mut dev: VirtioPciDevice, mem: Mem, heap: u64) -> Self {
        let mut common = None;
        let mut notify = None;
        let mut isr = None;
        let mut device = None;
        let mut pci_cfg_cap = 0;
        let mut notify_mult = 0;
        let mut msix_cap = 0;
        let mut ptr = cfg8(&mut dev, 0x34) as usize;
        let mut guard = 0;
        while ptr != 0 {
            guard += 1;
            assert!(guard < 48, "capability list loops");
            let id = cfg8(&mut dev, ptr);
            if id == 0x09 {
                let ty = cfg8(&mut dev, ptr + 3);
                let r = Region {
                    bar: cfg8(&mut dev, ptr + 4),
                    offset: cfg32(&mut dev, ptr + 8) as u64,
                    length: cfg32(&mut dev, ptr + 12) as u64,
                };
                match ty {
                    1 => common = Some(r),
                    2 => {
                        notify = Some(r);
                        notify_mult = cfg32(&mut dev, ptr + 16);
                    }
                    3 => isr = Some(r),
                    4 => device = Some(r),
                    5 => pci_cfg_cap = ptr,
                    _ => {}
                }
            } else if id == 0x11 {
                msix_cap = ptr;
            }
            ptr = cfg8(&mut dev, ptr + 1) as usize;
        }
        // Size and place BAR4 (64-bit), then turn on decoding.
        dev.config_write(0x20, &0xffff_ffffu32.to_le_bytes());
        dev.config_write(0x24, &0xffff_ffffu32.to_le_bytes());
        let lo = cfg32(&mut dev, 0x20);
        let size = !(lo as u64 & !0xf | (cfg32(&mut dev, 0x24) as u64) << 32) + 1;
        assert!(size >= 0x4000, "BAR4 size {size:#x}");
        dev.config_write(0x20, &(BAR_ADDR as u32).to_le_bytes());
        dev.config_write(0x24, &0u32.to_le_bytes());
        dev.config_write(0x04, &(CMD_MEM | CMD_BUS_MASTER).to_le_bytes());
        assert_eq!(dev.config().bar_address(4), Some(BAR_ADDR));
        Driver {
            dev,
            mem,
            common: common.expect("common cfg capability"),
            notify: notify.expect("notify capability"),
            isr: isr.expect("isr capability"),
            device: device.expect("device cfg capability"),
            pci_cfg_cap,
            notify_mult,
            msix_cap,
            queues: HashMap::new(),
            next_free: heap,
        }
    }

    pub fn alloc(&mut self, len: u64, align: u64) -> u64 {
        let a = self.next_free.div_ceil(align) * align;
        self.next_free = a + len;
        use vm_memory::GuestMemoryBackend;
        assert!(
            self.next_free <= self.mem.last_addr().0 + 1,
            "test guest memory exhausted"
        );
        a
    }

    pub fn bar_rd(&mut self, off: u64, len: usize) -> u64 {
        let mut d = vec![0u8; len];
        self.dev.bar_read(4, off, &mut d);
        let mut v = 0u64;
        for (i, b) in d.iter().enumerate() {
            v |= (*b as u64) << (8 * i);
        }
        v
    }
    pub fn bar_wr(&mut self, off: u64, len: usize, v: u64) {
        let b = v.to_le_bytes();
        self.dev.bar_write(4, off, &b[..len]);
    }
    pub fn common_rd(&mut self, off: u64, len: usize) -> u64 {
        self.bar_rd(self.common.offset + off, len)
    }
    pub fn common_wr(&mut self, off: u64, len: usize, v: u64) {
        self.bar_wr(self.common.offset + off, len, v)
    }
    pub fn status(&mut self) -> u8 {
        self.common_rd(common::DEVICE_STATUS, 1) as u8
    }
    pub fn set_status(&mut self, s: u8) {
        self.common_wr(common::DEVICE_STATUS, 1, s as u64)
    }
    pub fn device_features(&mut self) -> u64 {
        self.common_wr(common::DEVICE_FEATURE_SELECT, 4, 0);
        let lo = self.common_rd(common::DEVICE_FEATURE, 4);
        self.common_wr(common::DEVICE_FEATURE_SELECT, 4, 1);
        let hi = self.common_rd(common::DEVICE_FEATURE, 4);
        lo | hi << 32
    }
    pub fn write_driver_features(&mut self, f: u64) {
        self.common_wr(common::DRIVER_FEATURE_SELECT, 4, 0);
        self.common_wr(common::DRIVER_FEATURE, 4, f & 0xffff_ffff);
        self.common_wr(common::DRIVER_FEATURE_SELECT, 4, 1);
        self.common_wr(common::DRIVER_FEATURE, 4, f >> 32);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features (device's & `wanted`),
    /// FEATURES_OK. Returns the negotiated features.
    pub fn negotiate(&mut self, wanted: u64) -> u64 {
        self.set_status(0);
        assert_eq!(self.status(), 0);
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let f = self.device_features() & wanted;
        self.write_driver_features(f);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_ne!(
            self.status() & status::FEATURES_OK,
            0,
            "device refused features {f:#x}"
        );
        f
    }

    /// Turns MSI-X on and points vector `v` at data `v` for each vector.
    pub fn enable_msix(&mut self, vectors: u16) {
        assert_ne!(self.msix_cap, 0);
        let tbl = cfg32(&mut self.dev, self.msix_cap + 4);
        assert_eq!(tbl & 7, 4, "MSI-X table in BAR4");
        let tbl = (tbl & !7) as u64;
        for v in 0..vectors as u64 {
            self.bar_wr(tbl + v * 16, 4, MSI_ADDR);
            self.bar_wr(tbl + v * 16 + 4, 4, 0);
            self.bar_wr(tbl + v * 16 + 8, 4, v);
            self.bar_wr(tbl + v * 16 + 12, 4, 0);
        }
        let ctrl = cfg16(&mut self.dev, self.msix_cap + 2) | 1 << 15;
        self.dev
            .config_write(self.msix_cap + 2, &ctrl.to_le_bytes());
    }

    /// Lays out queue `q` with `size` entries, MSI-X vector `vector`.
    pub fn setup_queue(&mut self, q: u16, size: u16, vector: u16) {
        self.common_wr(common::QUEUE_SELECT, 2, q as u64);
        let max = self.common_rd(common::QUEUE_SIZE, 2) as u16;
        assert!(size <= max, "queue {q}: size {size} > max {max}");
        self.common_wr(common::QUEUE_SIZE, 2, size as u64);
        let desc = self.alloc(16 * size as u64, 16);
        let avail = self.alloc(6 + 2 * size as u64, 2);
        let used = self.alloc(6 + 8 * size as u64, 4);
        for (reg, a) in [
            (common::QUEUE_DESC, desc),
            (common::QUEUE_DRIVER, avail),
            (common::QUEUE_DEVICE, used),
        ] {
            // As Linux does: two 32-bit halves.
            self.common_wr(reg, 4, a & 0xffff_ffff);
            self.common_wr(reg + 4, 4, a >> 32);
        }
        self.common_wr(common::QUEUE_MSIX_VECTOR, 2, vector as u64);
        self.common_wr(common::QUEUE_ENABLE, 2, 1);
        self.queues.insert(
            q,
            Vq {
                size,
                desc,
                avail,
                used,
                free: (0..size).rev().collect(),
                chains: HashMap::new(),
                avail_idx: 0,
                last_used: 0,
                kicked_idx: 0,
                kicks: 0,
                kicks_suppressed: 0,
            },
        );
    }

    pub fn driver_ok(&mut self) {
        let s = self.status();
        self.set_status(s | status::DRIVER_OK);
        assert_ne!(
            self.status() & status::DRIVER_OK,
            0,
            "device refused DRIVER_OK"
        );
    }

    /// Writes a chain of (addr, len, flags-without-NEXT) descriptors and
    /// publishes it in the avail ring. Returns the head index.
    pub fn add_chain(&mut self, q: u16, bufs: &[(u64, u32, u16)]) -> u16 {
        let vq = self.queues.get_mut(&q).expect("queue set up");
        assert!(vq.free.len() >= bufs.len(), "queue {q} out of descriptors");
        let idx: Vec<u16> = (0..bufs.len()).map(|_| vq.free.pop().unwrap()).collect();
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let next = idx.get(i + 1).copied();
            let f = flags | if next.is_some() { DESC_F_NEXT } else { 0 };
            write_desc(&self.mem, vq.desc, idx[i], addr, len, f, next.unwrap_or(0));
        }
        let head = idx[0];
        vq.chains.insert(head, idx);
        Self::publish(&self.mem, vq, head);
        head
    }

    /// Publishes raw descriptors the test wrote itself (malformed chains);
    /// those descriptors are not returned to the free list.
    pub fn publish_raw(&mut self, q: u16, head: u16) {
        let vq = self.queues.get_mut(&q).expect("queue set up");
        vq.free.retain(|&d| d != head);
        Self::publish(&self.mem, vq, head);
    }

    /// Takes descriptor indices out of the free list for hand-made chains.
    pub fn take_descs(&mut self, q: u16, n: usize) -> Vec<u16> {
        let vq = self.queues.get_mut(&q).expect("queue set up");
        (0..n).map(|_| vq.free.pop().unwrap()).collect()
    }

    fn publish(mem: &Mem, vq: &mut Vq, head: u16) {
        let slot = vq.avail + 4 + 2 * (vq.avail_idx % vq.size) as u64;
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        vq.avail_idx = vq.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        mem.write_obj(vq.avail_idx, GuestAddress(vq.avail + 2))
            .unwrap();
    }

    pub fn desc_table(&self, q: u16) -> u64 {
        self.queues[&q].desc
    }

    /// Notifies the device about queue `q` the way Linux does: only if the
    /// device asked for it (avail_event with EVENT_IDX, otherwise the
    /// used ring's NO_NOTIFY flag).
    pub fn kick(&mut self, q: u16) {
        let event_idx = self.dev.acked_features() & (1 << 29) != 0;
        let vq = self.queues.get_mut(&q).expect("queue set up");
        let (new, old) = (vq.avail_idx, vq.kicked_idx);
        vq.kicked_idx = new;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let needed = if event_idx {
            let ev: u16 = self
                .mem
                .read_obj(GuestAddress(vq.used + 4 + 8 * vq.size as u64))
                .unwrap();
            new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            let flags: u16 = self.mem.read_obj(GuestAddress(vq.used)).unwrap();
            flags & 1 == 0
        };
        if needed {
            vq.kicks += 1;
            self.kick_always(q);
        } else {
            vq.kicks_suppressed += 1;
        }
    }

    /// Rings the doorbell unconditionally.
    pub fn kick_always(&mut self, q: u16) {
        let off = self.notify.offset + q as u64 * self.notify_mult as u64;
        self.bar_wr(off, 2, q as u64);
    }

    /// Used entries not yet consumed, without waiting.
    pub fn poll_used(&mut self, q: u16) -> Option<(u16, u32)> {
        let vq = self.queues.get_mut(&q).expect("queue set up");
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let idx: u16 = self.mem.read_obj(GuestAddress(vq.used + 2)).unwrap();
        if idx == vq.last_used {
            return None;
        }
        let slot = vq.used + 4 + 8 * (vq.last_used % vq.size) as u64;
        let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
        vq.last_used = vq.last_used.wrapping_add(1);
        // With EVENT_IDX: interrupt me again at the next completion.
        self.mem
            .write_obj(
                vq.last_used,
                GuestAddress(vq.avail + 4 + 2 * vq.size as u64),
            )
            .unwrap();
        let id = id as u16;
        if let Some(chain) = vq.chains.remove(&id) {
            vq.free.extend(chain);
        }
        Some((id, len))
    }

    /// Waits for the next used entry of queue `q`.
    pub fn wait_used(&mut self, q: u16, timeout: Duration) -> (u16, u32) {
        let t0 = Instant::now();
        loop {
            if let Some(u) = self.poll_used(q) {
                return u;
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out waiting for a used entry on queue {q}"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    pub fn used_idx(&self, q: u16) -> u16 {
        let vq = &self.queues[&q];
        self.mem.read_obj(GuestAddress(vq.used + 2)).unwrap()
    }

    pub fn acked_features_have(&self, f: u64) -> bool {
        self.dev.acked_features() & f == f
    }

    pub fn read_isr(&mut self) -> u8 {
        self.bar_rd(self.isr.offset, 1) as u8
    }
}

pub fn write_desc(mem: &Mem, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let a = table + 16 * i as u64;
    mem.write_obj(addr, GuestAddress(a)).unwrap();
    mem.write_obj(len, GuestAddress(a + 8)).unwrap();
    mem.write_obj(flags, GuestAddress(a + 12)).unwrap();
    mem.write_obj(next, GuestAddress(a + 14)).unwrap();
}

pub fn cfg8(dev: &mut VirtioPciDevice, off: usize) -> u8 {
    let mut d = [0u8; 1];
    dev.config_read(off, &mut d);
    d[0]
}
pub fn cfg16(dev: &mut VirtioPciDevice, off: usize) -> u16 {
    let mut d = [0u8; 2];
    dev.config_read(off, &mut d);
    u16::from_le_bytes(d)
}
pub fn cfg32(dev: &mut VirtioPciDevice, off: usize) -> u32 {
    let mut d = [0u8; 4];
    dev.config_read(off, &mut d);
    u32::from_le_bytes(d)
}

/// Waits until `f` is true or the timeout passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    f()
}
