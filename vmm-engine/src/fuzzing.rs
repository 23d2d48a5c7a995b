//! Harnesses for the whole-device fuzz targets in `fuzz/` (and for the unit
//! tests below, which feed them pseudo-random inputs in every `cargo test`).
//!
//! Each harness builds the real device on a small board of its own: the
//! port and MMIO buses, the PCI root where the device is a PCI function,
//! 1 MiB of guest memory, and interrupt lines that only count. The fuzz
//! input is then read as a program for a hostile guest: register reads and
//! writes of every width at any offset of the device's windows, writes of
//! guest memory (descriptor tables, PRD tables, DMA buffers) and a few
//! device-specific events (a render, a key, a clock tick, a media change).
//!
//! Bounds: at most [`MAX_OPS`] operations per input, every memory write at
//! most 256 bytes, so that an input's work is bounded by its length; a hang
//! is the device's fault and libFuzzer's `-timeout` reports it. Nothing may
//! panic, and the devices reach guest memory only through vm-memory's
//! checked accessors, so an access outside the guest is an error there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::block::{BlockError, DiskImage};
use crate::bus::{Bus, SharedDevice};
use crate::devices::fw_cfg::{FwCfg, FW_CFG_PORT_BASE, FW_CFG_PORT_LEN};
use crate::devices::i8042::{I8042Port, I8042};
use crate::devices::ide::{Channel, Ide, Slot};
use crate::devices::keys::KeyCode;
use crate::devices::pci::i440fx::I440fx;
use crate::devices::pci::piix3::Piix3;
use crate::devices::pci::root::{PciIntxRouter, PciRoot};
use crate::devices::pci::PciDevice;
use crate::devices::rtc::Rtc;
use crate::devices::vga::StdVga;
use crate::devices::{IrqLine, PowerHandle, RecordingIrq};

/// The most operations one input may run.
pub const MAX_OPS: usize = 4096;
/// Guest memory of every board.
pub const MEM_SIZE: usize = 1 << 20;

const PCI_CONFIG_PORT: u64 = 0xcf8;

/// The fuzz input, read front to back; reads past the end give `None`.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.data.split_at_checked(n)?;
        self.data = rest;
        Some(head)
    }
    pub fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Which bus a window is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Pio,
    Mmio,
}

/// A range of addresses the guest program aims at.
#[derive(Clone, Copy, Debug)]
struct Window {
    space: Space,
    base: u64,
    len: u64,
}

/// A board for one input: buses, memory and the windows to aim at.
pub struct Board {
    pub io: Bus,
    pub mmio: Bus,
    pub mem: GuestMemoryMmap<()>,
    windows: Vec<Window>,
    /// What [`Board::insert`] put on the buses, taken off again on drop.
    inserted: Vec<(Space, u64)>,
    /// The PCI root, if any: it holds the buses that hold it, so the
    /// cycle is broken on drop as the platform does at VM teardown.
    root: Option<Arc<Mutex<PciRoot>>>,
    /// How many operations the last [`Board::run`] performed.
    pub ops: usize,
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            root.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        for (space, base) in self.inserted.drain(..) {
            let bus = match space {
                Space::Pio => &self.io,
                Space::Mmio => &self.mmio,
            };
            let _ = bus.remove(base);
        }
    }
}

impl Default for Board {
    fn default() -> Self {
        Self::new()
    }
}

impl Board {
    pub fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
            .unwrap_or_else(|e| panic!("1 MiB of guest memory: {e}"));
        Board {
            io: Bus::new(),
            mmio: Bus::new(),
            mem,
            windows: Vec::new(),
            inserted: Vec::new(),
            root: None,
            ops: 0,
        }
    }

    /// Aims the program at `[base, base+len)` on `space`.
    pub fn window(&mut self, space: Space, base: u64, len: u64) {
        self.windows.push(Window { space, base, len });
    }

    /// Puts `dev` on a bus and aims at it.
    pub fn insert(&mut self, space: Space, dev: SharedDevice, base: u64, len: u64) {
        let bus = match space {
            Space::Pio => &self.io,
            Space::Mmio => &self.mmio,
        };
        if let Err(e) = bus.insert(dev, base, len) {
            panic!("the harness's own layout overlaps: {e}");
        }
        self.inserted.push((space, base));
        self.window(space, base, len);
    }

    /// Runs the input as a guest program. Opcode byte `b`:
    /// - `b & 7` in 0..=3: a write; 4, 5: a read; 6: a guest-memory write;
    ///   7: `event(board, arg)` with the next byte.
    /// - bits 3-4: the access width, 1, 2, 4 or 8 bytes (port I/O stops
    ///   at 4, as the vCPU splits wider ones).
    ///
    /// An access then takes a window byte and a 16-bit offset (modulo
    /// the window's length) and, for writes, the value's bytes.
    pub fn run(&mut self, data: &[u8], mut event: impl FnMut(&mut Board, u8)) {
        let mut input = Input::new(data);
        self.ops = 0;
        while self.ops < MAX_OPS {
            let Some(op) = input.u8() else { break };
            self.ops += 1;
            match op & 7 {
                kind @ 0..=5 => {
                    if self.windows.is_empty() {
                        continue;
                    }
                    let (Some(w), Some(off)) = (input.u8(), input.u16()) else {
                        break;
                    };
                    let w = self.windows[w as usize % self.windows.len()];
                    let mut width = 1usize << ((op >> 3) & 3);
                    if w.space == Space::Pio {
                        width = width.min(4);
                    }
                    let addr = w.base + u64::from(off) % w.len;
                    let bus = match w.space {
                        Space::Pio => &self.io,
                        Space::Mmio => &self.mmio,
                    };
                    if kind <= 3 {
                        let Some(v) = input.bytes(width) else { break };
                        bus.write(addr, v);
                    } else {
                        let mut buf = [0u8; 8];
                        bus.read(addr, &mut buf[..width]);
                    }
                }
                6 => {
                    let (Some(addr), Some(len)) = (input.u32(), input.u8()) else {
                        break;
                    };
                    let Some(bytes) = input.bytes(len as usize + 1) else {
                        break;
                    };
                    // Mostly low memory, where small inputs put their
                    // tables; any address is allowed (errors are fine).
                    let addr = if op & 0x80 == 0 {
                        u64::from(addr) % MEM_SIZE as u64
                    } else {
                        u64::from(addr)
                    };
                    let _ = self.mem.write_slice(bytes, GuestAddress(addr));
                }
                _ => {
                    let Some(arg) = input.u8() else { break };
                    event(self, arg);
                }
            }
        }
    }
}

/// An in-memory disk.
pub struct MemDisk {
    data: Mutex<Vec<u8>>,
    read_only: bool,
}

impl MemDisk {
    pub fn new(size: usize, read_only: bool) -> Arc<Self> {
        Arc::new(MemDisk {
            data: Mutex::new(vec![0u8; size]),
            read_only,
        })
    }
    /// A disk holding `bytes`.
    pub fn with(bytes: Vec<u8>, read_only: bool) -> Arc<Self> {
        Arc::new(MemDisk {
            data: Mutex::new(bytes),
            read_only,
        })
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DiskImage for MemDisk {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        let v = self.lock();
        crate::block::check_range(offset, buf.len() as u64, v.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&v[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let mut v = self.lock();
        crate::block::check_range(offset, buf.len() as u64, v.len() as u64)?;
        let o = offset as usize;
        v[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let mut v = self.lock();
        crate::block::check_range(offset, len, v.len() as u64)?;
        let o = offset as usize;
        v[o..o + len as usize].fill(0);
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// A read-only disk of any size whose bytes are a function of their
/// offset: a DVD-sized medium without the memory.
pub struct PatternDisk {
    size: u64,
}

impl PatternDisk {
    pub fn new(size: u64) -> Arc<Self> {
        Arc::new(PatternDisk { size })
    }
}

impl DiskImage for PatternDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        crate::block::check_range(offset, buf.len() as u64, self.size)?;
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = (at ^ (at >> 11)) as u8;
        }
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
    fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
    fn read_only(&self) -> bool {
        true
    }
}

fn irq() -> Arc<dyn IrqLine> {
    RecordingIrq::new()
}

fn shared<T: Send + 'static>(dev: T) -> Arc<Mutex<T>> {
    Arc::new(Mutex::new(dev))
}

/// A PCI root with the i440FX host bridge and the PIIX3 bridge, its config
/// ports at 0xCF8 aimed at.
fn pci_board(board: &mut Board) -> Arc<Mutex<PciRoot>> {
    let root = shared(PciRoot::new(board.io.clone(), board.mmio.clone()));
    let router = PciIntxRouter::new(Arc::new(|_gsi: u32, _level: bool| {}));
    {
        let mut r = root.lock().unwrap_or_else(|e| e.into_inner());
        r.add_device(0, shared(I440fx::new()));
        r.add_device(1 << 3, shared(Piix3::new(router)));
    }
    board.insert(Space::Pio, root.clone(), PCI_CONFIG_PORT, 8);
    board.root = Some(root.clone());
    root
}

/// Programs a BAR and enables decoding, as firmware would.
fn program_bar(root: &Arc<Mutex<PciRoot>>, devfn: u8, bar: usize, addr: u32, command: u16) {
    let mut r = root.lock().unwrap_or_else(|e| e.into_inner());
    r.config_write(devfn, 0x10 + 4 * bar, &addr.to_le_bytes());
    r.config_write(devfn, 0x04, &command.to_le_bytes());
}

const IDE_DEVFN: u8 = 1 << 3 | 1;
const IDE_BM_PORT: u32 = 0xc000;

/// IDE: an ATA disk on the primary master, an ATAPI drive on the secondary
/// master (a CD or, when the first byte is odd, a DVD-sized medium), the
/// bus master at 0xC000, PCI config space. Event: change or eject the
/// medium.
pub fn fuzz_ide(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut board = Board::new();
    let root = pci_board(&mut board);
    let mut ide = Ide::new(board.mem.clone(), irq(), irq());
    let disk = MemDisk::new(256 << 10, false);
    ide.attach_disk(Channel::Primary, Slot::Master, disk.clone());
    let medium = |big: bool| -> Arc<dyn DiskImage> {
        if big {
            PatternDisk::new(4 << 30)
        } else {
            PatternDisk::new(2 << 20)
        }
    };
    ide.attach_cdrom(
        Channel::Secondary,
        Slot::Master,
        Some(medium(first & 1 != 0)),
    );
    let ide = shared(ide);
    for (base, len, dev) in Ide::legacy_ports(&ide) {
        board.insert(Space::Pio, dev, base, len);
    }
    root.lock()
        .unwrap_or_else(|e| e.into_inner())
        .add_device(IDE_DEVFN, ide.clone());
    program_bar(&root, IDE_DEVFN, 4, IDE_BM_PORT | 1, 0x0005);
    board.window(Space::Pio, IDE_BM_PORT as u64, 16);
    board.run(rest, |_, arg| {
        let media = match arg % 3 {
            0 => None,
            n => Some(medium(n == 2)),
        };
        ide.lock()
            .unwrap_or_else(|e| e.into_inner())
            .change_cdrom_media(Channel::Secondary, Slot::Master, media);
    });
    assert_eq!(disk.size(), 256 << 10, "the disk never changes size");
}

/// fw_cfg with the files a boot has: the selector/data ports and the DMA
/// address registers, descriptors in guest memory.
pub fn fuzz_fw_cfg(data: &[u8]) {
    let mut board = Board::new();
    let mut fw = FwCfg::new(board.mem.clone());
    fw.set_ram_size(MEM_SIZE as u64);
    fw.set_cpus(2);
    fw.set_e820(&[(0, MEM_SIZE as u64, 1)]);
    fw.set_boot_order(&["/pci@i0cf8/ide@1,1/drive@1/disk@0"]);
    fw.set_boot_menu(true, 100);
    for (name, len) in [("etc/acpi/tables", 4096), ("genroms/vga.bin", 512)] {
        if let Err(e) = fw.add_file(name, vec![0x5a; len]) {
            panic!("the harness's own file {name}: {e}");
        }
    }
    board.insert(
        Space::Pio,
        shared(fw),
        u64::from(FW_CFG_PORT_BASE),
        FW_CFG_PORT_LEN,
    );
    board.run(data, |_, _| {});
}

const VGA_DEVFN: u8 = 2 << 3;
const VGA_LFB: u32 = 0xfd00_0000;
const VGA_MMIO: u32 = 0xfebf_0000;

/// Std VGA + Bochs VBE: the VGA and VBE ports, the legacy window at
/// 0xA0000, the MMIO register BAR and PCI config space. Event: a render
/// (at a time taken from the argument, for blinking) and the text dump.
pub fn fuzz_vga(data: &[u8]) {
    let mut board = Board::new();
    let root = pci_board(&mut board);
    let vga = match StdVga::new(Vec::new()) {
        Ok(v) => v,
        Err(e) => panic!("the adapter: {e}"),
    };
    let handle = vga.handle();
    for (dev, base, len) in vga.io_devices() {
        board.insert(Space::Pio, dev, base, len);
    }
    let (win, base, len) = vga.legacy_window();
    board.insert(Space::Mmio, win, base, len);
    root.lock()
        .unwrap_or_else(|e| e.into_inner())
        .add_device(VGA_DEVFN, shared(vga));
    program_bar(&root, VGA_DEVFN, 0, VGA_LFB, 0x0003);
    program_bar(&root, VGA_DEVFN, 2, VGA_MMIO, 0x0003);
    board.window(Space::Mmio, VGA_MMIO as u64, 0x1000);
    // A render converts up to a whole frame: at most 8 per input keep
    // an input's work bounded by the op limit.
    let mut renders = 0;
    board.run(data, |_, arg| {
        if renders < 8 {
            renders += 1;
            handle.render_at(u128::from(arg) * 100);
            let _ = handle.screen_text();
        }
    });
    handle.render_at(0);
}

/// The PCI root with every kind of function Vireo has but virtio (which
/// has its own target): config mechanism #1, BAR sizing and moves of
/// I/O and memory BARs, expansion ROMs, and accesses where BARs land.
pub fn fuzz_pci(data: &[u8]) {
    let mut board = Board::new();
    let root = pci_board(&mut board);
    let ide = shared(Ide::new(board.mem.clone(), irq(), irq()));
    ide.lock().unwrap_or_else(|e| e.into_inner()).attach_disk(
        Channel::Primary,
        Slot::Master,
        MemDisk::new(4096, false),
    );
    let vga = match StdVga::new(vec![0x55, 0xaa, 1, 0]) {
        Ok(v) => v,
        Err(e) => panic!("the adapter: {e}"),
    };
    {
        let mut r = root.lock().unwrap_or_else(|e| e.into_inner());
        r.add_device(IDE_DEVFN, ide.clone() as Arc<Mutex<dyn PciDevice>>);
        r.add_device(VGA_DEVFN, shared(vga));
    }
    // Where the guest is likely to put BARs.
    board.window(Space::Pio, 0xc000, 0x1000);
    board.window(Space::Mmio, 0xfd00_0000, 0x1_0000);
    board.window(Space::Mmio, 0xfebf_0000, 0x1_0000);
    board.window(Space::Mmio, 0xfeb0_0000, 0x1_0000);
    board.run(data, |_, arg| {
        let mut r = root.lock().unwrap_or_else(|e| e.into_inner());
        if arg & 1 == 0 {
            r.reset();
        } else {
            let _ = r.mapped_bar(VGA_DEVFN, (arg as usize >> 1) % 7);
        }
    });
}

/// The i8042 with its keyboard and mouse: ports 0x60 and 0x64, and host
/// input in between (keys and mouse motion). Event: a key (argument: key
/// index and press/release) or, with bit 7 set, a mouse packet.
pub fn fuzz_ps2(data: &[u8]) {
    let mut board = Board::new();
    let (power, _log) = PowerHandle::recording();
    let ctl = I8042::new(irq(), irq(), power);
    board.insert(Space::Pio, shared(I8042Port::data(&ctl)), 0x60, 1);
    board.insert(Space::Pio, shared(I8042Port::command(&ctl)), 0x64, 1);
    board.run(data, |_, arg| {
        let mut c = ctl.lock().unwrap_or_else(|e| e.into_inner());
        if arg & 0x80 == 0 {
            let keys = KeyCode::ALL;
            if let Some(&k) = keys.get((arg as usize >> 1) % keys.len()) {
                c.key_event(k, arg & 1 == 0);
            }
        } else {
            let d = i32::from(arg & 0x0f) - 8;
            c.mouse_move(d * 40, -d * 300, d, arg & 7);
        }
    });
}

/// The MC146818 RTC and CMOS: ports 0x70/0x71 under a clock the input
/// drives. Event: time moves on by the argument squared, in milliseconds
/// (up to about a minute), and the timer thread's work runs.
pub fn fuzz_rtc(data: &[u8]) {
    let Some((wall, rest)) = data.split_at_checked(4) else {
        return;
    };
    let wall = u32::from_le_bytes([wall[0], wall[1], wall[2], wall[3]]);
    let mut board = Board::new();
    let now = Arc::new(AtomicU64::new(0));
    let clock = {
        let now = now.clone();
        Arc::new(move || Duration::from_nanos(now.load(Ordering::SeqCst)))
    };
    let rtc = shared(Rtc::with_clocks(
        irq(),
        Duration::from_secs(u64::from(wall)),
        clock,
    ));
    rtc.lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_memory_size(MEM_SIZE as u64, 0);
    board.insert(Space::Pio, rtc.clone(), 0x70, 2);
    board.run(rest, |_, arg| {
        let step = u64::from(arg) * u64::from(arg) * 1_000_000;
        let t = now.fetch_add(step, Ordering::SeqCst) + step;
        rtc.lock()
            .unwrap_or_else(|e| e.into_inner())
            .run_timers(Duration::from_nanos(t));
    });
}

/// qcow2 images from fuzz input: opened as the block layer opens a
/// user's disk (through imago), then read at offsets the input picks.
/// `dir` holds the image file; the harness reuses one path.
pub fn fuzz_qcow2(data: &[u8], dir: &std::path::Path) {
    let Some((ctl, image)) = data.split_at_checked(16) else {
        return;
    };
    let path = dir.join("fuzz.qcow2");
    let _ = std::fs::remove_file(&path);
    if std::fs::write(&path, image).is_err() {
        return;
    }
    let Ok(disk) = crate::block::open(&path, crate::spec::DiskFormat::Qcow2, true) else {
        return;
    };
    let size = disk.size();
    let mut buf = vec![0u8; 4096];
    for pair in ctl.chunks_exact(4) {
        let at = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
        let offset = u64::from(at) * 512 % size.max(1);
        let len = (size - offset.min(size)).min(buf.len() as u64) as usize;
        let _ = disk.read_at(&mut buf[..len], offset);
    }
    // Reads of the whole device past the end fail, they never panic.
    let _ = disk.read_at(&mut buf[..512], size);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random programs: mostly register accesses with plausible
    /// values, some memory writes and events.
    fn programs(seed: u64, count: usize, len: usize) -> Vec<Vec<u8>> {
        let mut s = seed;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..count)
            .map(|_| (0..len).map(|_| rnd() as u8).collect())
            .collect()
    }

    fn survives(f: impl Fn(&[u8]), seed: u64) {
        for p in programs(seed, 200, 600) {
            f(&p);
        }
        f(&[]);
        f(&[0xff; 4]);
        f(&[7; 3000]);
    }

    #[test]
    fn ide_survives_random_guests() {
        survives(fuzz_ide, 1);
    }

    #[test]
    fn fw_cfg_survives_random_guests() {
        survives(fuzz_fw_cfg, 2);
    }

    #[test]
    fn vga_survives_random_guests() {
        survives(fuzz_vga, 3);
    }

    #[test]
    fn pci_survives_random_guests() {
        survives(fuzz_pci, 4);
    }

    #[test]
    fn ps2_survives_random_guests() {
        survives(fuzz_ps2, 5);
    }

    #[test]
    fn rtc_survives_random_guests() {
        survives(fuzz_rtc, 6);
    }

    #[test]
    fn qcow2_survives_random_images() {
        let dir = tempfile::tempdir().unwrap();
        survives(|d| fuzz_qcow2(d, dir.path()), 7);
        // A real image header with garbage after it.
        let mut img = vec![0u8; 16];
        img.extend_from_slice(b"QFI\xfb\0\0\0\x03");
        img.extend((0..4000u32).map(|i| (i * 7) as u8));
        fuzz_qcow2(&img, dir.path());
    }

    /// Millions of inputs run in one process: a board frees its devices
    /// (the PCI root and the buses hold each other until it is cleared).
    #[test]
    fn boards_free_their_devices() {
        let mut board = Board::new();
        let root = Arc::downgrade(&pci_board(&mut board));
        let ide = shared(Ide::new(board.mem.clone(), irq(), irq()));
        let weak_ide = Arc::downgrade(&ide);
        for (base, len, dev) in Ide::legacy_ports(&ide) {
            board.insert(Space::Pio, dev, base, len);
        }
        if let Some(r) = root.upgrade() {
            r.lock().unwrap().add_device(IDE_DEVFN, ide);
        }
        assert!(root.upgrade().is_some() && weak_ide.upgrade().is_some());
        drop(board);
        assert!(root.upgrade().is_none(), "the PCI root leaked");
        assert!(weak_ide.upgrade().is_none(), "the IDE controller leaked");
    }

    /// The decoder really reaches the device: a program that selects the
    /// fw_cfg signature and reads it runs all its operations.
    #[test]
    fn programs_reach_the_device() {
        let mut board = Board::new();
        let fw = shared(FwCfg::new(board.mem.clone()));
        board.insert(
            Space::Pio,
            fw.clone(),
            u64::from(FW_CFG_PORT_BASE),
            FW_CFG_PORT_LEN,
        );
        // Write 16-bit 0x0000 (the signature) to the selector (offset 0),
        // then read 2 bytes from the data port (offset 1), one at a time.
        let mut prog = vec![0x08, 0, 0, 0, 0, 0];
        for _ in 0..2 {
            prog.extend_from_slice(&[0x04, 0, 1, 0]);
        }
        board.run(&prog, |_, _| {});
        assert_eq!(board.ops, 3);
        // The program's reads took "QE": the data port goes on with "MU".
        let mut b = [0u8; 2];
        board.io.read(u64::from(FW_CFG_PORT_BASE) + 1, &mut b[..1]);
        board.io.read(u64::from(FW_CFG_PORT_BASE) + 1, &mut b[1..]);
        assert_eq!(&b, b"MU");
    }
}
