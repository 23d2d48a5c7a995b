//! The standard VGA adapter (QEMU's `-vga std`): PCI 1234:1111 with Bochs
//! VBE extensions.
//!
//! What it emulates:
//! - PCI function 1234:1111 rev 2, class 0x030000. BAR0: 16 MiB prefetchable
//!   memory, the linear framebuffer (all of video memory). BAR2: 4 KiB MMIO
//!   ("bochs dispi mmio": VGA ports 0x3C0-0x3DF at 0x400, dispi registers at
//!   0x500, the QEMU extension registers at 0x600). Expansion ROM: the VGA
//!   BIOS bytes given to [`StdVga::new`].
//! - VGA registers at I/O 0x3B0-0x3DF ([`regs`]), the 0xA0000-0xBFFFF window
//!   onto planar memory with all write/read modes, chain-4 and odd/even
//!   ([`planar`]), Bochs VBE at I/O 0x1CE/0x1CF ([`vbe`]).
//! - Rendering into a shared [`Display`]: text modes with the guest's font,
//!   cursor and blink ([`text`]), 16-colour planar, CGA 4-colour and
//!   256-colour modes, VBE 8/15/16/24/32 bpp with virtual width and panning.
//!
//! Video memory is one anonymous host mapping ([`Vram`]). The machine maps
//! it into the guest as a KVM memory slot at BAR0 (through a
//! [`VramMapper`]), so guest framebuffer writes never exit; the first 256 KiB
//! are also the four VGA planes behind the legacy window, as in QEMU.
//!
//! Wiring it into a machine:
//!
//! ```ignore
//! let vga = StdVga::new(std::fs::read("/usr/share/seabios/vgabios-stdvga.bin")?)?;
//! for (dev, base, len) in vga.io_devices() {      // 0x3B0+0x30, 0x1CE+3
//!     pio.insert(dev, base, len)?;
//! }
//! let (dev, base, len) = vga.legacy_window();     // 0xA0000+0x20000
//! mmio.insert(dev, base, len)?;
//! // A KVM slot (with KVM_MEM_LOG_DIRTY_PAGES) over vram_host_addr()/
//! // vram_size(), moved by map(); see kvm_test.rs for a reference.
//! vga.set_mapper(mapper);
//! let handle = vga.handle();       // display thread: handle.render() at 30-60 Hz
//! let display = handle.display();  // UIs: generation(), snapshot()
//! pci_root.add(vga);               // on machine reset: handle.reset()
//! ```
//!
//! Frames: text modes come out at their dot size (720x400 for mode 3,
//! 40-column modes with doubled dots), VGA graphics modes at their logical
//! size with scan doubling removed (mode 13h is 320x200), VBE modes at
//! XRES x YRES. The generation moves only when the picture changes; in text
//! modes the cursor and blinking characters change it about 4 times a
//! second, as they do on a real screen.
//!
//! What is missing: EDID at BAR2 0x000 (reads zeros), big-endian
//! framebuffer (the QEMU byte-order register stays little-endian),
//! horizontal pel panning, the underline attribute, the CGA 160x100 hack,
//! interlace and timing (the retrace bits just alternate on each read),
//! direct KVM mapping of the chain-4 window (mode 13h and banked VBE
//! writes exit to the VMM), partial redraws (a changed frame is converted
//! whole: about 12 ms for 1920x1080x32 in the dev profile).

pub mod planar;
pub mod regs;
pub mod text;
pub mod vbe;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use vm_memory::{MmapRegion, VolatileMemory};

use crate::bus::{BusDevice, SharedDevice};
use crate::devices::pci::{BarKind, BarSpec, PciConfig, PciDevice, ROM_BAR_INDEX};
use crate::devices::{le_bytes_into, le_value};
use crate::display::Display;

use planar::GraphicLayout;
use regs::{ar, gr, sr, VgaRegs};
use text::TextLayout;
use vbe::Vbe;

/// Size of video memory (BAR0).
pub const VRAM_SIZE: usize = 16 << 20;
/// BAR index of the linear framebuffer.
pub const BAR_LFB: usize = 0;
/// BAR index of the MMIO registers.
pub const BAR_MMIO: usize = 2;
/// Size of BAR2.
pub const MMIO_SIZE: u64 = 0x1000;
/// Base and length of the VGA register block on the port-I/O bus.
pub const VGA_IO_BASE: u64 = 0x3b0;
pub const VGA_IO_LEN: u64 = 0x30;
/// Base and length of the dispi ports (index 0x1CE, data 0x1CF/0x1D0).
pub const VBE_IO_BASE: u64 = 0x1ce;
pub const VBE_IO_LEN: u64 = 3;
/// Base and length of the legacy window on the MMIO bus.
pub const LEGACY_BASE: u64 = 0xa0000;
pub const LEGACY_LEN: u64 = 0x20000;

/// Cursor toggles every 16 frames at 60 Hz; blinking text every 32.
const CURSOR_PERIOD_MS: u128 = 267;
const BLINK_PERIOD_MS: u128 = 533;

#[derive(Debug, thiserror::Error)]
pub enum VgaError {
    #[error("cannot allocate video memory: {0}")]
    Vram(String),
}

/// Maps video memory into the guest as its own memory slot. The machine
/// implements it with KVM_SET_USER_MEMORY_REGION and KVM_GET_DIRTY_LOG.
pub trait VramMapper: Send + Sync {
    /// Maps all of video memory ([`StdVga::vram_host_addr`], [`VRAM_SIZE`])
    /// at guest-physical `guest_addr`, or unmaps it (None), replacing any
    /// previous mapping.
    fn map(&self, guest_addr: Option<u64>);
    /// Pages written by the guest since the last call, one bit per 4 KiB
    /// page (bit `i % 64` of word `i / 64`). None: unknown, treat all as
    /// dirty.
    fn dirty_pages(&self) -> Option<Vec<u64>>;
}

/// Video memory: one anonymous host mapping, shared with the guest.
pub struct Vram {
    region: MmapRegion<()>,
}

impl Vram {
    fn new(size: usize) -> Result<Self, VgaError> {
        let region = MmapRegion::new(size).map_err(|e| VgaError::Vram(e.to_string()))?;
        Ok(Vram { region })
    }

    pub fn size(&self) -> usize {
        self.region.size()
    }

    /// Host virtual address of the mapping.
    pub fn host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// One byte; 0xff outside video memory.
    pub fn read_u8(&self, off: usize) -> u8 {
        self.region
            .get_ref::<u8>(off)
            .map(|r| r.load())
            .unwrap_or(0xff)
    }

    pub fn write_u8(&self, off: usize, v: u8) {
        if let Ok(r) = self.region.get_ref::<u8>(off) {
            r.store(v);
        }
    }

    /// Four bytes little-endian, or None outside video memory.
    pub fn read_u32(&self, off: usize) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read_into(off, &mut b).then_some(u32::from_le_bytes(b))
    }

    pub fn write_u32(&self, off: usize, v: u32) {
        self.write_from(off, &v.to_le_bytes());
    }

    /// Copies `buf.len()` bytes at `off` into `buf`; false (and `buf`
    /// untouched) when the range is not inside video memory.
    pub fn read_into(&self, off: usize, buf: &mut [u8]) -> bool {
        match self.region.get_slice(off, buf.len()) {
            Ok(s) => {
                s.copy_to(buf);
                true
            }
            Err(_) => false,
        }
    }

    /// Copies `buf` to `off`; dropped when the range is not inside.
    pub fn write_from(&self, off: usize, buf: &[u8]) {
        if let Ok(s) = self.region.get_slice(off, buf.len()) {
            s.copy_from(buf);
        }
    }

    /// Zeroes the first `len` bytes (clamped to the size).
    fn clear(&self, len: usize) {
        const ZERO: [u8; 4096] = [0; 4096];
        let len = len.min(self.size());
        let mut off = 0;
        while off < len {
            let n = (len - off).min(ZERO.len());
            self.write_from(off, &ZERO[..n]);
            off += n;
        }
    }
}

/// The device state behind all its bus faces.
pub(crate) struct VgaState {
    regs: VgaRegs,
    vbe: Vbe,
    vram: Arc<Vram>,
    latch: u32,
    /// Something the display shows may have changed through an emulated
    /// access (registers, the legacy window, an MMIO write to BAR0).
    dirty: bool,
    mapper: Option<Arc<dyn VramMapper>>,
}

impl VgaState {
    /// A sequencer register as the hardware acts on it: while a VBE mode
    /// of 8 bpp or more is on, chain-4 and all planes are forced (QEMU's
    /// `sr_vbe`).
    fn sr(&self, i: usize) -> u8 {
        let v = self.regs.sr[i & 7];
        if self.vbe.enabled() && self.vbe.bpp() != 4 {
            match i {
                sr::MEMORY_MODE => return v | sr::MEM_CHAIN4,
                sr::PLANE_WRITE => return v | 0x0f,
                _ => {}
            }
        }
        v
    }

    fn io_read(&mut self, port: u16) -> u8 {
        self.regs.read_port(port)
    }

    fn io_write(&mut self, port: u16, val: u8) {
        if self.regs.write_port(port, val) {
            self.dirty = true;
        }
    }

    fn vbe_write(&mut self, val: u16) {
        if let Some(n) = self.vbe.write_data(val, &mut self.regs) {
            self.vram.clear(n as usize);
        }
        self.dirty = true;
    }

    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0x400..=0x41f => {
                for (i, b) in data.iter_mut().enumerate() {
                    let port = 0x3c0 + (offset - 0x400) + i as u64;
                    *b = if port <= 0x3df {
                        self.io_read(port as u16)
                    } else {
                        0
                    };
                }
            }
            0x500..=0x515 => {
                // Each register is 16 bits; a wider read spans several.
                for (i, b) in data.iter_mut().enumerate() {
                    let off = offset + i as u64;
                    *b = if off <= 0x515 {
                        self.vbe.index = ((off - 0x500) >> 1) as u16;
                        (self.vbe.read_data() >> (8 * (off & 1))) as u8
                    } else {
                        0
                    };
                }
            }
            0x600..=0x607 => {
                // QEMU extension registers: region size, byte order (LE).
                let regs: u64 = 8 | (0x1e1e_1e1e << 32);
                le_bytes_into(regs, (offset - 0x600) as usize, data);
            }
            _ => data.fill(0),
        }
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0x400..=0x41f => {
                for (i, b) in data.iter().enumerate() {
                    let port = 0x3c0 + (offset - 0x400) + i as u64;
                    if port <= 0x3df {
                        self.io_write(port as u16, *b);
                    }
                }
            }
            0x500..=0x515 => {
                let mut i = 0;
                while i < data.len() {
                    let off = offset + i as u64;
                    if off > 0x515 {
                        break;
                    }
                    self.vbe.index = ((off - 0x500) >> 1) as u16;
                    let (val, n) = match (off & 1, data.get(i + 1)) {
                        (0, Some(hi)) => (u16::from_le_bytes([data[i], *hi]), 2),
                        (0, None) => (data[i] as u16, 1),
                        _ => ((data[i] as u16) << 8, 1),
                    };
                    self.vbe_write(val);
                    i += n;
                }
            }
            _ => {}
        }
    }

    /// What the display shows now.
    fn mode(&self) -> Mode {
        let blank = self.regs.ar_index & ar::INDEX_PAS == 0
            || self.sr(sr::CLOCK_MODE) & sr::CLK_SCREEN_OFF != 0;
        if blank {
            return Mode::Blank;
        }
        if self.vbe.enabled() && self.vbe.bpp() != 4 {
            return Mode::Vbe(vbe::VbeLayout::from_vbe(&self.vbe));
        }
        if self.regs.gr[gr::MISC] & 1 == 0 {
            Mode::Text(TextLayout::from_state(self))
        } else {
            Mode::Graphic(GraphicLayout::from_state(self))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Blank,
    Text(TextLayout),
    Graphic(GraphicLayout),
    Vbe(vbe::VbeLayout),
}

/// Buffers the renderer reuses from frame to frame.
struct Renderer {
    /// Copy of planar memory for text and VGA graphics modes.
    mem: Vec<u8>,
    /// One VBE scanline as read from video memory.
    row: Vec<u8>,
    /// The frame being drawn (RGBA).
    work: Vec<u8>,
    pal256: [[u8; 4]; 256],
    last_mode: Option<Mode>,
    last_phases: (bool, bool),
    last_size: (u32, u32),
    /// `work` holds exactly the published frame (the last render changed
    /// nothing), so a VBE redraw may convert only the dirty lines.
    work_is_frame: bool,
}

struct Shared {
    state: Mutex<VgaState>,
    renderer: Mutex<Renderer>,
    display: Display,
    vram: Arc<Vram>,
    epoch: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cheap, cloneable handle to the adapter for the display thread and the
/// machine: rendering, screen text, the mapper.
#[derive(Clone)]
pub struct VgaHandle {
    shared: Arc<Shared>,
}

impl VgaHandle {
    /// The display this adapter draws into.
    pub fn display(&self) -> Display {
        self.shared.display.clone()
    }

    /// Host address of video memory (for the KVM memory slot).
    pub fn vram_host_addr(&self) -> u64 {
        self.shared.vram.host_addr()
    }

    /// Size of video memory in bytes.
    pub fn vram_size(&self) -> u64 {
        VRAM_SIZE as u64
    }

    /// Machine reset: registers back to power-on values (all zero, VBE
    /// off, display blanked), video memory kept, as QEMU does.
    pub fn reset(&self) {
        let mut st = lock(&self.shared.state);
        st.regs = VgaRegs::default();
        st.vbe = Vbe::new(VRAM_SIZE as u32);
        st.latch = 0;
        st.dirty = true;
    }

    /// Installs the mapper that puts BAR0 into the guest.
    pub fn set_mapper(&self, mapper: Arc<dyn VramMapper>) {
        lock(&self.shared.state).mapper = Some(mapper);
    }

    /// Converts the current screen to RGBA into the display. Returns true
    /// (and the display's generation moves) only when the picture changed.
    /// Call it 30-60 times a second.
    pub fn render(&self) -> bool {
        let ms = self.shared.epoch.elapsed().as_millis();
        self.render_at(ms)
    }

    /// [`VgaHandle::render`] at a given time (milliseconds since the device
    /// was made), which drives the cursor and text blinking.
    pub fn render_at(&self, now_ms: u128) -> bool {
        let mut rd = lock(&self.shared.renderer);
        let rd = &mut *rd;
        let phases = (
            (now_ms / CURSOR_PERIOD_MS).is_multiple_of(2),
            (now_ms / BLINK_PERIOD_MS).is_multiple_of(2),
        );
        // Ask the mapper outside the state lock: it may take its own
        // locks (the machine's memory slots).
        let mapper = lock(&self.shared.state).mapper.clone();
        let log = mapper.map(|m| m.dirty_pages());
        let logged = match &log {
            None => false,
            Some(Some(bits)) => bits.iter().any(|w| *w != 0),
            Some(None) => true,
        };
        let dirty_bits = log.flatten();
        let mode;
        let pal16;
        let partial;
        {
            let mut st = lock(&self.shared.state);
            mode = st.mode();
            // Only the logged pages changed since a frame still in `work`.
            partial = !st.dirty && rd.last_mode == Some(mode) && rd.work_is_frame;
            let mut need = logged || st.dirty || rd.last_mode != Some(mode);
            if let Mode::Text(t) = &mode {
                if (t.cursor.is_some() && phases.0 != rd.last_phases.0)
                    || (t.blink && phases.1 != rd.last_phases.1)
                {
                    need = true;
                }
            }
            if !need {
                return false;
            }
            st.dirty = false;
            pal16 = st.regs.palette16();
            st.regs.palette256(&mut rd.pal256);
            let copy = match &mode {
                Mode::Text(_) => 256 << 10,
                Mode::Graphic(g) => g.mem_size,
                _ => 0,
            };
            if copy > 0 {
                rd.mem.resize(copy, 0);
                if !st.vram.read_into(0, &mut rd.mem) {
                    rd.mem.fill(0);
                }
            }
        }
        rd.last_mode = Some(mode);
        rd.last_phases = phases;
        let (w, h) = match &mode {
            Mode::Blank => {
                let (w, h) = match rd.last_size {
                    (0, _) | (_, 0) => (640, 480),
                    s => s,
                };
                rd.work.clear();
                rd.work.resize(w as usize * h as usize * 4, 0);
                for px in rd.work.chunks_exact_mut(4) {
                    px[3] = 0xff;
                }
                (w, h)
            }
            Mode::Text(t) => {
                t.draw(&rd.mem, &pal16, phases.0, phases.1, &mut rd.work);
                (t.width(), t.height())
            }
            Mode::Graphic(g) => {
                g.draw(&rd.mem, &pal16, &rd.pal256, &mut rd.work);
                (g.width, g.height)
            }
            Mode::Vbe(v) => {
                let only = dirty_bits.as_deref().filter(|_| partial);
                v.draw(
                    &self.shared.vram,
                    &rd.pal256,
                    &mut rd.row,
                    &mut rd.work,
                    only,
                );
                (v.width, v.height)
            }
        };
        rd.last_size = (w, h);
        let complete = rd.work.len() == w as usize * h as usize * 4;
        let published = self.shared.display.present(w, h, &mut rd.work);
        // Not published: `work` equals the frame on show. Published: `work`
        // now holds an older buffer (or none).
        rd.work_is_frame = complete && !published;
        published
    }

    /// The text on screen, one string per row, when a text mode is shown.
    pub fn screen_text(&self) -> Option<Vec<String>> {
        let st = lock(&self.shared.state);
        if st.vbe.enabled() || st.regs.gr[gr::MISC] & 1 != 0 {
            return None;
        }
        let layout = TextLayout::from_state(&st);
        let mut mem = vec![0u8; 256 << 10];
        st.vram.read_into(0, &mut mem);
        Some(layout.text(&mem))
    }
}

/// The VGA register block at I/O 0x3B0-0x3DF.
struct VgaPorts(Arc<Shared>);

impl BusDevice for VgaPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut st = lock(&self.0.state);
        for (i, b) in data.iter_mut().enumerate() {
            let port = VGA_IO_BASE + offset + i as u64;
            *b = if port < VGA_IO_BASE + VGA_IO_LEN {
                st.io_read(port as u16)
            } else {
                0xff
            };
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut st = lock(&self.0.state);
        for (i, b) in data.iter().enumerate() {
            let port = VGA_IO_BASE + offset + i as u64;
            if port < VGA_IO_BASE + VGA_IO_LEN {
                st.io_write(port as u16, *b);
            }
        }
    }
}

/// The dispi ports: 0x1CE index, 0x1CF (and 0x1D0) data, 16 bits wide.
struct VbePorts(Arc<Shared>);

impl BusDevice for VbePorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let st = lock(&self.0.state);
        let v = if offset == 0 {
            st.vbe.index
        } else {
            st.vbe.read_data()
        };
        le_bytes_into(v as u64, 0, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut st = lock(&self.0.state);
        let v = le_value(data) as u16;
        if offset == 0 {
            st.vbe.index = v;
        } else {
            st.vbe_write(v);
        }
    }
}

/// The legacy window 0xA0000-0xBFFFF.
struct LegacyWindow(Arc<Shared>);

impl BusDevice for LegacyWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut st = lock(&self.0.state);
        for (i, b) in data.iter_mut().enumerate() {
            *b = st.mem_read(((offset + i as u64) & 0x1ffff) as u32);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut st = lock(&self.0.state);
        for (i, b) in data.iter().enumerate() {
            st.mem_write(((offset + i as u64) & 0x1ffff) as u32, *b);
        }
    }
}

/// The standard VGA PCI function.
pub struct StdVga {
    config: PciConfig,
    rom: Vec<u8>,
    handle: VgaHandle,
}

impl StdVga {
    /// A new adapter with 16 MiB of video memory; `rom` is the VGA BIOS
    /// (Debian's /usr/share/seabios/vgabios-stdvga.bin), served as the PCI
    /// expansion ROM (empty: no ROM BAR).
    pub fn new(rom: Vec<u8>) -> Result<Self, VgaError> {
        Self::with_display(rom, Display::new())
    }

    /// As [`StdVga::new`], drawing into an existing `display` (one a UI
    /// already holds).
    pub fn with_display(rom: Vec<u8>, display: Display) -> Result<Self, VgaError> {
        let mut config = PciConfig::new(0x1234, 0x1111, 0x030000, 2);
        config.set_subsystem(0x1af4, 0x1100);
        config.add_bar(
            BAR_LFB,
            BarSpec {
                kind: BarKind::Mem32,
                size: VRAM_SIZE as u64,
                prefetchable: true,
            },
        );
        config.add_bar(
            BAR_MMIO,
            BarSpec {
                kind: BarKind::Mem32,
                size: MMIO_SIZE,
                prefetchable: false,
            },
        );
        if !rom.is_empty() {
            config.set_rom_size(rom.len().min(u32::MAX as usize) as u32);
        }
        let vram = Arc::new(Vram::new(VRAM_SIZE)?);
        let state = VgaState {
            regs: VgaRegs::default(),
            vbe: Vbe::new(VRAM_SIZE as u32),
            vram: vram.clone(),
            latch: 0,
            dirty: true,
            mapper: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            renderer: Mutex::new(Renderer {
                mem: Vec::new(),
                row: Vec::new(),
                work: Vec::new(),
                pal256: [[0; 4]; 256],
                last_mode: None,
                last_phases: (false, false),
                last_size: (0, 0),
                work_is_frame: false,
            }),
            display,
            vram,
            epoch: Instant::now(),
        });
        Ok(StdVga {
            config,
            rom,
            handle: VgaHandle { shared },
        })
    }

    /// A handle for the display thread and the machine.
    pub fn handle(&self) -> VgaHandle {
        self.handle.clone()
    }

    /// The port-I/O devices to insert: `(device, base, len)` for the VGA
    /// registers (0x3B0, 0x30) and the dispi ports (0x1CE, 3).
    pub fn io_devices(&self) -> Vec<(SharedDevice, u64, u64)> {
        let s = &self.handle.shared;
        vec![
            (
                Arc::new(Mutex::new(VgaPorts(s.clone()))) as SharedDevice,
                VGA_IO_BASE,
                VGA_IO_LEN,
            ),
            (
                Arc::new(Mutex::new(VbePorts(s.clone()))) as SharedDevice,
                VBE_IO_BASE,
                VBE_IO_LEN,
            ),
        ]
    }

    /// The legacy window to insert on the MMIO bus: `(device, 0xA0000,
    /// 0x20000)`.
    pub fn legacy_window(&self) -> (SharedDevice, u64, u64) {
        (
            Arc::new(Mutex::new(LegacyWindow(self.handle.shared.clone()))),
            LEGACY_BASE,
            LEGACY_LEN,
        )
    }

    pub fn display(&self) -> Display {
        self.handle.display()
    }
    pub fn vram_host_addr(&self) -> u64 {
        self.handle.vram_host_addr()
    }
    pub fn vram_size(&self) -> u64 {
        self.handle.vram_size()
    }
    pub fn set_mapper(&self, mapper: Arc<dyn VramMapper>) {
        self.handle.set_mapper(mapper)
    }
    pub fn render(&mut self) -> bool {
        self.handle.render()
    }
    pub fn screen_text(&self) -> Option<Vec<String>> {
        self.handle.screen_text()
    }
    pub fn reset(&self) {
        self.handle.reset()
    }
}

impl PciDevice for StdVga {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        match bar {
            BAR_LFB => {
                let st = lock(&self.handle.shared.state);
                if !st.vram.read_into(offset as usize, data) {
                    data.fill(0xff);
                }
            }
            BAR_MMIO => lock(&self.handle.shared.state).mmio_read(offset, data),
            ROM_BAR_INDEX => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = usize::try_from(offset)
                        .ok()
                        .and_then(|o| o.checked_add(i))
                        .and_then(|o| self.rom.get(o))
                        .copied()
                        .unwrap_or(0xff);
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match bar {
            BAR_LFB => {
                let mut st = lock(&self.handle.shared.state);
                st.vram.write_from(offset as usize, data);
                st.dirty = true;
            }
            BAR_MMIO => lock(&self.handle.shared.state).mmio_write(offset, data),
            _ => {}
        }
    }

    fn bar_remapped(&mut self, bar: usize, addr: Option<u64>) {
        if bar == BAR_LFB {
            let mapper = lock(&self.handle.shared.state).mapper.clone();
            if let Some(m) = mapper {
                m.map(addr);
            }
        }
    }

    fn bar_is_ram(&self, bar: usize) -> bool {
        bar == BAR_LFB
    }

    fn rom(&self) -> Option<&[u8]> {
        (!self.rom.is_empty()).then_some(self.rom.as_slice())
    }
}

#[cfg(test)]
mod kvm_test;
#[cfg(test)]
mod tests;
