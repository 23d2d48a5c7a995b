//! Device-level tests: the adapter driven through its buses as a guest and
//! the VGA BIOS drive it, then rendered.

use super::*;
use crate::bus::Bus;
use crate::devices::pci::reg;

/// An I/O bus with the adapter's ports and an MMIO bus with its legacy
/// window, wired as the machine wires them (also used by the KVM test).
pub(super) fn buses(vga: &StdVga) -> (Bus, Bus) {
    let io = Bus::new();
    for (d, base, len) in vga.io_devices() {
        io.insert(d, base, len).unwrap();
    }
    let mmio = Bus::new();
    let (d, base, len) = vga.legacy_window();
    mmio.insert(d, base, len).unwrap();
    (io, mmio)
}

struct Rig {
    vga: StdVga,
    h: VgaHandle,
    io: Bus,
    mmio: Bus,
}

impl Rig {
    fn new() -> Rig {
        let vga = StdVga::new(vec![0x55, 0xaa, 0x40, 0xcb]).unwrap();
        let (io, mmio) = buses(&vga);
        let h = vga.handle();
        Rig { vga, h, io, mmio }
    }
    fn outb(&self, port: u16, v: u8) {
        self.io.write(port as u64, &[v]);
    }
    fn outw(&self, port: u16, v: u16) {
        self.io.write(port as u64, &v.to_le_bytes());
    }
    fn inb(&self, port: u16) -> u8 {
        let mut b = [0];
        self.io.read(port as u64, &mut b);
        b[0]
    }
    fn inw(&self, port: u16) -> u16 {
        let mut b = [0; 2];
        self.io.read(port as u64, &mut b);
        u16::from_le_bytes(b)
    }
    fn memw(&self, addr: u64, v: u8) {
        self.mmio.write(addr, &[v]);
    }
    fn memr(&self, addr: u64) -> u8 {
        let mut b = [0];
        self.mmio.read(addr, &mut b);
        b[0]
    }
    fn seq(&self, i: u8, v: u8) {
        self.outb(0x3c4, i);
        self.outb(0x3c5, v);
    }
    fn gr(&self, i: u8, v: u8) {
        self.outb(0x3ce, i);
        self.outb(0x3cf, v);
    }
    fn crtc(&self, i: u8, v: u8) {
        self.outb(0x3d4, i);
        self.outb(0x3d5, v);
    }
    fn dac(&self, i: u8, rgb: [u8; 3]) {
        self.outb(0x3c8, i);
        for c in rgb {
            self.outb(0x3c9, c);
        }
    }
    /// Palette address source on: the display is enabled.
    fn unblank(&self) {
        self.inb(0x3da);
        self.outb(0x3c0, 0x20);
    }
    fn vbe(&self, i: u16, v: u16) {
        self.outw(0x1ce, i);
        self.outw(0x1cf, v);
    }
    fn vbe_get(&self, i: u16) -> u16 {
        self.outw(0x1ce, i);
        self.inw(0x1cf)
    }
    fn vram(&self) -> Arc<Vram> {
        self.h.shared.vram.clone()
    }
    fn plane(&self, p: usize, off: usize) -> u8 {
        self.vram().read_u8(off * 4 + p)
    }

    /// Programs a VGA mode from a BIOS-style parameter table, in the
    /// order SeaBIOS's stdvga_set_mode does.
    fn set_mode(&self, misc: u8, seq: [u8; 4], crtc: &[u8; 25], attr: &[u8; 20], gr: &[u8; 9]) {
        self.inb(0x3da);
        self.outb(0x3c0, 0x00); // palette address source off: blank
        self.seq(0, 0x01);
        for (i, v) in seq.iter().enumerate() {
            self.seq(i as u8 + 1, *v);
        }
        self.seq(0, 0x03);
        self.outb(0x3c2, misc);
        self.crtc(0x11, 0x00);
        for (i, v) in crtc.iter().enumerate() {
            self.crtc(i as u8, *v);
        }
        self.inb(0x3da);
        for (i, v) in attr.iter().enumerate() {
            self.outb(0x3c0, i as u8);
            self.outb(0x3c0, *v);
        }
        self.outb(0x3c0, 0x14);
        self.outb(0x3c0, 0x00);
        for (i, v) in gr.iter().enumerate() {
            self.gr(i as u8, *v);
        }
        // The EGA 64-colour palette in DAC entries 0-63.
        self.outb(0x3c8, 0);
        for i in 0u8..64 {
            let c = |lo: u8, hi: u8| ((i >> lo) & 1) * 0x2a + ((i >> hi) & 1) * 0x15;
            self.outb(0x3c9, c(2, 5));
            self.outb(0x3c9, c(1, 4));
            self.outb(0x3c9, c(0, 3));
        }
        self.inb(0x3da);
        self.outb(0x3c0, 0x20);
    }

    fn set_mode3(&self) {
        self.set_mode(
            0x67,
            [0x00, 0x03, 0x00, 0x02],
            &[
                0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf, 0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00,
                0x00, 0x00, 0x9c, 0x8e, 0x8f, 0x28, 0x1f, 0x96, 0xb9, 0xa3, 0xff,
            ],
            &[
                0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d,
                0x3e, 0x3f, 0x0c, 0x00, 0x0f, 0x08,
            ],
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0e, 0x0f, 0xff],
        );
    }

    fn set_mode12(&self) {
        self.set_mode(
            0xe3,
            [0x01, 0x0f, 0x00, 0x06],
            &[
                0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0x0b, 0x3e, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0xea, 0x8c, 0xdf, 0x28, 0x00, 0xe7, 0x04, 0xe3, 0xff,
            ],
            &[
                0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d,
                0x3e, 0x3f, 0x01, 0x00, 0x0f, 0x00,
            ],
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0f, 0xff],
        );
    }

    fn set_mode13(&self) {
        self.set_mode(
            0x63,
            [0x01, 0x0f, 0x00, 0x0e],
            &[
                0x5f, 0x4f, 0x50, 0x82, 0x54, 0x80, 0xbf, 0x1f, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x9c, 0x8e, 0x8f, 0x28, 0x40, 0x96, 0xb9, 0xa3, 0xff,
            ],
            &[
                0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
                0x0e, 0x0f, 0x41, 0x00, 0x0f, 0x00,
            ],
            &[0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0f, 0xff],
        );
    }

    /// Loads a 16-line font into plane 2 the way the VGA BIOS does.
    fn load_font(&self, glyph: impl Fn(u8, u8) -> u8) {
        self.seq(2, 0x04);
        self.seq(4, 0x07);
        self.gr(4, 0x02);
        self.gr(5, 0x00);
        self.gr(6, 0x04);
        for ch in 0..=255u8 {
            for line in 0..16u8 {
                self.memw(0xa0000 + ch as u64 * 32 + line as u64, glyph(ch, line));
            }
        }
        self.seq(2, 0x03);
        self.seq(4, 0x02);
        self.gr(4, 0x00);
        self.gr(5, 0x10);
        self.gr(6, 0x0e);
    }
}

fn font(ch: u8, line: u8) -> u8 {
    ch.rotate_left(line as u32) ^ line
}

const WHITE: [u8; 4] = [0xff, 0xff, 0xff, 0xff];
const BLUE: [u8; 4] = [0x00, 0x00, 0xa8, 0xff];

#[test]
fn pci_identity_bars_and_rom() {
    let mut r = Rig::new();
    let c = r.vga.config();
    assert_eq!(c.vendor_id(), 0x1234);
    assert_eq!(c.device_id(), 0x1111);
    assert_eq!(c.regs()[reg::REVISION], 2);
    assert_eq!(&c.regs()[0x09..0x0c], &[0x00, 0x00, 0x03]);
    let v = &mut r.vga;
    v.config_write(0x10, &[0xff; 4]);
    v.config_write(0x18, &[0xff; 4]);
    v.config_write(0x30, &[0xff; 4]);
    assert_eq!(v.config().u32_at(0x10), 0xff00_0008);
    assert_eq!(v.config().u32_at(0x18), 0xffff_f000);
    assert_eq!(v.config().u32_at(0x30), 0xffff_f801);
    assert_eq!(v.rom(), Some(&[0x55, 0xaa, 0x40, 0xcb][..]));
    let mut b = [0u8; 2];
    v.bar_read(ROM_BAR_INDEX, 2, &mut b);
    assert_eq!(b, [0x40, 0xcb]);
    v.bar_read(ROM_BAR_INDEX, u64::MAX, &mut b);
    assert_eq!(b, [0xff, 0xff]);
    assert!(v.bar_is_ram(BAR_LFB));
    assert!(!v.bar_is_ram(BAR_MMIO));
    assert_eq!(v.vram_size(), 16 << 20);
    assert_ne!(v.vram_host_addr(), 0);
    assert!(StdVga::new(Vec::new()).unwrap().rom().is_none());
    // A display made beforehand receives the frames.
    let d = Display::new();
    let mut v = StdVga::with_display(Vec::new(), d.clone()).unwrap();
    assert!(v.render());
    assert_eq!(d.generation(), 1);
    assert_eq!((d.snapshot().width, d.snapshot().height), (640, 480));
}

#[derive(Default)]
struct FakeMapper {
    mapped: Mutex<Vec<Option<u64>>>,
    /// None: "don't know" (all dirty). Some: returned once, then zeros.
    dirty: Mutex<Option<Vec<u64>>>,
    tracks: bool,
}

impl VramMapper for FakeMapper {
    fn map(&self, guest_addr: Option<u64>) {
        self.mapped.lock().unwrap().push(guest_addr);
    }
    fn dirty_pages(&self) -> Option<Vec<u64>> {
        if !self.tracks {
            return None;
        }
        let mut d = self.dirty.lock().unwrap();
        Some(
            d.replace(vec![0; VRAM_SIZE / 4096 / 64])
                .unwrap_or_default(),
        )
    }
}

#[test]
fn bar0_remap_goes_to_the_mapper() {
    let mut r = Rig::new();
    let m = Arc::new(FakeMapper::default());
    r.vga.set_mapper(m.clone());
    r.vga.bar_remapped(BAR_LFB, Some(0xfd00_0000));
    r.vga.bar_remapped(BAR_MMIO, Some(0xfebf_0000));
    r.vga.bar_remapped(BAR_LFB, None);
    assert_eq!(*m.mapped.lock().unwrap(), vec![Some(0xfd00_0000), None]);
}

#[test]
fn text_mode_renders_font_colours_and_text() {
    let r = Rig::new();
    r.set_mode3();
    r.load_font(font);
    // The font landed in plane 2, 32-byte slots.
    assert_eq!(r.plane(2, b'H' as usize * 32 + 3), font(b'H', 3));
    assert_eq!(r.plane(0, b'H' as usize * 32 + 3), 0);
    // "Hi" in white on blue, through the odd/even window at 0xB8000.
    for (i, b) in [b'H', 0x1f, b'i', 0x1f].iter().enumerate() {
        r.memw(0xb8000 + i as u64, *b);
    }
    assert_eq!(r.plane(0, 0), b'H');
    assert_eq!(r.plane(1, 0), 0x1f);
    assert_eq!(r.plane(0, 1), b'i');
    assert_eq!(r.memr(0xb8002), b'i');
    assert_eq!(r.memr(0xb8003), 0x1f);

    let text = r.h.screen_text().unwrap();
    assert_eq!(text.len(), 25);
    assert_eq!(text[0].len(), 80);
    assert!(text[0].starts_with("Hi "));
    assert_eq!(text[1].trim(), "");

    // Cursor phase off (t = 300 ms).
    assert!(r.h.render_at(300));
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (720, 400));
    for (col, ch) in [(0u32, b'H'), (1, b'i')] {
        for line in 0..16u32 {
            let bits = font(ch, line as u8);
            for x in 0..9u32 {
                let on = x < 8 && bits & (0x80 >> x) != 0;
                let want = if on { WHITE } else { BLUE };
                assert_eq!(
                    fb.pixel(col * 9 + x, line).unwrap(),
                    want,
                    "char {ch} line {line} dot {x}"
                );
            }
        }
    }
    // A blank cell (char 0, attribute 0) is black.
    assert_eq!(fb.pixel(719, 399), Some([0, 0, 0, 0xff]));
}

#[test]
fn cursor_blinks_and_idle_generation_is_stable() {
    let r = Rig::new();
    r.set_mode3();
    r.load_font(|_, _| 0);
    r.memw(0xb8001, 0x07);
    let d = r.h.display();
    assert!(r.h.render_at(0)); // cursor on
    let g = d.generation();
    let on = d.snapshot();
    // Cursor lines 13-14 of cell 0 drawn in the foreground (light grey).
    assert_eq!(on.pixel(3, 13), Some([0xa8, 0xa8, 0xa8, 0xff]));
    assert_eq!(on.pixel(3, 12), Some([0, 0, 0, 0xff]));
    // Idle: same phase, no writes.
    assert!(!r.h.render_at(10));
    assert!(!r.h.render_at(20));
    assert_eq!(d.generation(), g);
    // Register and memory writes that change nothing do not bump it.
    r.memw(0xb8001, 0x07);
    r.crtc(0x0e, 0);
    assert!(!r.h.render_at(30));
    assert_eq!(d.generation(), g);
    // Cursor phase off.
    assert!(r.h.render_at(300));
    assert_eq!(d.generation(), g + 1);
    assert_eq!(d.snapshot().pixel(3, 13), Some([0, 0, 0, 0xff]));
    // Cursor disabled (CR0A bit 5): phase changes no longer matter.
    r.crtc(0x0a, 0x20);
    assert!(!r.h.render_at(600));
    assert!(!r.h.render_at(900));
    assert_eq!(d.generation(), g + 1);
    // Moving the cursor away from the start re-renders but shows nothing.
    r.memw(0xb8000 + 161, 0x07);
    r.crtc(0x0a, 0x0d);
    r.crtc(0x0f, 80);
    assert!(r.h.render_at(1100));
    assert_eq!(d.snapshot().pixel(3, 13), Some([0, 0, 0, 0xff]));
    assert_eq!(
        d.snapshot().pixel(3, 16 + 13),
        Some([0xa8, 0xa8, 0xa8, 0xff])
    );
}

#[test]
fn blinking_attribute() {
    let r = Rig::new();
    r.set_mode3();
    r.load_font(|_, _| 0xff);
    r.crtc(0x0a, 0x20); // no cursor
    r.memw(0xb8000, b'X');
    r.memw(0xb8001, 0x9e); // blink, bg 1 (blue), fg yellow
    r.h.render_at(0);
    let yellow = [0xff, 0xff, 0x57, 0xff];
    assert_eq!(r.h.display().snapshot().pixel(0, 0), Some(yellow));
    assert!(r.h.render_at(600));
    assert_eq!(r.h.display().snapshot().pixel(0, 0), Some(BLUE));
    // Blink disabled: bit 7 is a bright background, always shown.
    r.inb(0x3da);
    r.outb(0x3c0, 0x30);
    r.outb(0x3c0, 0x04);
    assert!(r.h.render_at(600));
    assert_eq!(r.h.display().snapshot().pixel(0, 0), Some(yellow));
    // Column 8 of a non-line-graphics char is background: bright blue.
    assert_eq!(
        r.h.display().snapshot().pixel(8, 0),
        Some([0x57, 0x57, 0xff, 0xff])
    );
}

#[test]
fn ninth_column_line_graphics() {
    let r = Rig::new();
    r.set_mode3();
    r.load_font(|_, _| 0x01); // rightmost dot lit on every line
    r.crtc(0x0a, 0x20);
    for (i, ch) in [0xc4u8, b'A', 0xdf, 0xe0].iter().enumerate() {
        r.memw(0xb8000 + 2 * i as u64, *ch);
        r.memw(0xb8001 + 2 * i as u64, 0x07);
    }
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    let grey = [0xa8, 0xa8, 0xa8, 0xff];
    let black = [0, 0, 0, 0xff];
    // Dot 7 lit everywhere; dot 8 copies it only for C0h-DFh.
    for cell in 0..4u32 {
        assert_eq!(fb.pixel(cell * 9 + 7, 5), Some(grey));
    }
    assert_eq!(fb.pixel(8, 5), Some(grey));
    assert_eq!(fb.pixel(9 + 8, 5), Some(black));
    assert_eq!(fb.pixel(18 + 8, 5), Some(grey));
    assert_eq!(fb.pixel(27 + 8, 5), Some(black));
    // Line graphics off (AR10 bit 2): the ninth dot is background.
    r.inb(0x3da);
    r.outb(0x3c0, 0x30);
    r.outb(0x3c0, 0x08);
    r.h.render_at(0);
    assert_eq!(r.h.display().snapshot().pixel(8, 5), Some(black));
}

#[test]
fn text_split_screen_and_scrolled_start() {
    let r = Rig::new();
    r.set_mode3();
    r.load_font(|_, _| 0);
    r.crtc(0x0a, 0x20);
    // Row n of memory starts with the letter 'a' + n.
    for row in 0..30u64 {
        r.memw(0xb8000 + row * 160, b'a' + row as u8);
    }
    // Start one page of 10 rows down: screen row 0 shows memory row 10.
    r.crtc(0x0c, 0x03);
    r.crtc(0x0d, 0x20); // 800 cells
    let t = r.h.screen_text().unwrap();
    assert!(t[0].starts_with('k'), "{:?}", t[0]);
    assert!(t[24].starts_with(' '), "memory row 34 is empty");
    // Line compare at scanline 80: rows 5.. restart at address 0.
    r.crtc(0x18, 80);
    r.crtc(0x07, 0x0f); // clear line compare bit 8 (CR11 protects only bit 4)
    r.crtc(0x09, 0x0f); // clear bit 9, keep 16-line characters
    let t = r.h.screen_text().unwrap();
    assert!(t[4].starts_with('o'));
    assert!(t[5].starts_with('a'));
    assert!(t[6].starts_with('b'));
    // The cursor follows the cell address, not the screen position.
    r.load_font(|_, _| 0);
    r.memw(0xb8001, 0x07);
    r.crtc(0x0a, 0x00);
    r.crtc(0x0b, 0x0f);
    r.crtc(0x0e, 0);
    r.crtc(0x0f, 0);
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    assert_eq!(fb.pixel(0, 5 * 16), Some([0xa8, 0xa8, 0xa8, 0xff]));
    assert_eq!(fb.pixel(0, 0), Some([0, 0, 0, 0xff]));
}

#[test]
fn text_geometries() {
    let r = Rig::new();
    r.set_mode3();
    // 80x50: 8-line characters.
    r.crtc(0x09, 0x47);
    r.h.render_at(300);
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (720, 400));
    assert_eq!(r.h.screen_text().unwrap().len(), 50);
    // 40x25 with 8-dot characters and the dot clock halved. CR0-7 are
    // write-protected until CR11 bit 7 is cleared.
    r.crtc(0x01, 0x27);
    assert_eq!(r.h.screen_text().unwrap()[0].len(), 80);
    r.crtc(0x11, 0x0e);
    r.crtc(0x09, 0x4f);
    r.crtc(0x01, 0x27);
    r.crtc(0x13, 0x14);
    r.seq(1, 0x09);
    r.memw(0xb8000 + 80, b'Z'); // row 1, col 0 in 40 columns
    r.h.render_at(300);
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (640, 400));
    let t = r.h.screen_text().unwrap();
    assert_eq!((t.len(), t[0].len()), (25, 40));
    assert!(t[1].starts_with('Z'));
    // Non-ASCII codes read as spaces.
    r.memw(0xb8000, 0xc4);
    assert!(r.h.screen_text().unwrap()[0].starts_with(' '));
}

#[test]
fn mode13h_chain4_pixels() {
    let r = Rig::new();
    r.set_mode13();
    r.dac(5, [0x3f, 0x20, 0x00]);
    r.dac(15, [0x3f, 0x3f, 0x3f]);
    let (x, y) = (123u64, 45u64);
    r.memw(0xa0000 + y * 320 + x, 5);
    r.memw(0xa0000 + 319 + 199 * 320, 15);
    assert_eq!(r.memr(0xa0000 + y * 320 + x), 5);
    // Chain-4: plane = address & 3.
    assert_eq!(
        r.plane(((y * 320 + x) & 3) as usize, ((y * 320 + x) >> 2) as usize),
        5
    );
    assert!(r.h.screen_text().is_none());
    assert!(r.h.render_at(0));
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (320, 200));
    assert_eq!(fb.pixel(123, 45), Some([0xff, 0x80, 0x00, 0xff]));
    assert_eq!(fb.pixel(124, 45), Some([0, 0, 0, 0xff]));
    assert_eq!(fb.pixel(319, 199), Some([0xff, 0xff, 0xff, 0xff]));
    // Changing a DAC entry changes the picture.
    let g = r.h.display().generation();
    r.dac(5, [0, 0, 0x3f]);
    assert!(r.h.render_at(0));
    assert_eq!(r.h.display().generation(), g + 1);
    assert_eq!(
        r.h.display().snapshot().pixel(123, 45),
        Some([0, 0, 0xff, 0xff])
    );
}

#[test]
fn mode12h_planar_write_mode_2_and_map_mask() {
    let r = Rig::new();
    r.set_mode12();
    // Write mode 2, one pixel at a time through the bit mask.
    r.gr(5, 0x02);
    let put = |x: u64, y: u64, c: u8| {
        r.gr(8, 0x80 >> (x & 7));
        let a = 0xa0000 + y * 80 + x / 8;
        r.memr(a); // load latches
        r.memw(a, c);
    };
    put(0, 0, 0x0c);
    put(1, 0, 0x0e);
    put(639, 479, 0x0f);
    put(100, 200, 0x09);
    // Map mask: only plane 0 gets written.
    r.seq(2, 0x01);
    put(101, 200, 0x0f);
    r.seq(2, 0x0f);
    r.gr(5, 0x00);
    r.gr(8, 0xff);
    assert_eq!(r.plane(0, 0), 0x00);
    assert_eq!(r.plane(2, 0), 0xc0);
    assert_eq!(r.plane(3, 0), 0xc0);
    assert_eq!(r.plane(1, 0), 0x40);
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (640, 480));
    assert_eq!(fb.pixel(0, 0), Some([0xff, 0x57, 0x57, 0xff])); // light red
    assert_eq!(fb.pixel(1, 0), Some([0xff, 0xff, 0x57, 0xff])); // yellow
    assert_eq!(fb.pixel(2, 0), Some([0, 0, 0, 0xff]));
    assert_eq!(fb.pixel(639, 479), Some(WHITE));
    assert_eq!(fb.pixel(100, 200), Some([0x57, 0x57, 0xff, 0xff]));
    assert_eq!(fb.pixel(101, 200), Some(BLUE));
    // Plane enable in the attribute controller masks planes out.
    r.inb(0x3da);
    r.outb(0x3c0, 0x32);
    r.outb(0x3c0, 0x03);
    r.h.render_at(0);
    assert_eq!(
        r.h.display().snapshot().pixel(639, 479),
        Some([0, 0xa8, 0xa8, 0xff])
    );
}

#[test]
fn write_modes_logic_ops_and_read_modes() {
    let r = Rig::new();
    r.set_mode12();
    let a = 0xa0000u64;
    // Write mode 0 with set/reset on planes 0 and 2 (value 0b0101).
    r.gr(0, 0x05);
    r.gr(1, 0x05);
    r.memw(a, 0x3c);
    assert_eq!(
        [r.plane(0, 0), r.plane(1, 0), r.plane(2, 0), r.plane(3, 0)],
        [0xff, 0x3c, 0xff, 0x3c]
    );
    // Rotate right by 2, bit mask 0x0f: only the low nibble comes from the
    // data, the rest from the latches.
    r.gr(1, 0x00);
    r.gr(3, 0x02);
    r.gr(8, 0x0f);
    r.memr(a);
    r.memw(a, 0x28);
    assert_eq!(
        [r.plane(0, 0), r.plane(1, 0), r.plane(2, 0), r.plane(3, 0)],
        [0xfa, 0x3a, 0xfa, 0x3a]
    );
    // AND / OR / XOR with the latches, chained: 0xfa & 0x0f = 0x0a,
    // | 0x50 = 0x5a, ^ 0xff = 0xa5 (planes 1 and 3: 0x3a -> 0x0a too).
    r.gr(8, 0xff);
    for (op, data, want) in [(1u8, 0x0fu8, 0x0au8), (2, 0x50, 0x5a), (3, 0xff, 0xa5)] {
        r.gr(3, op << 3);
        r.memr(a);
        r.memw(a, data);
        for p in 0..4 {
            assert_eq!(r.plane(p, 0), want, "op {op} plane {p}");
        }
    }
    // Write mode 1 copies the latches to another address.
    r.gr(3, 0);
    r.gr(5, 0x01);
    r.memr(a);
    r.memw(a + 1, 0x00);
    assert_eq!(r.plane(0, 1), r.plane(0, 0));
    assert_eq!(r.plane(1, 1), r.plane(1, 0));
    // Write mode 3: data (rotated) ANDed with the bit mask selects where
    // the set/reset colour goes.
    r.gr(5, 0x03);
    r.gr(0, 0x0f);
    r.gr(8, 0xf0);
    r.memr(a + 2);
    r.memw(a + 2, 0x3c);
    assert_eq!(r.plane(3, 2), 0x30);
    assert_eq!(r.plane(0, 2), 0x30);
    // Read mode 0 returns the plane chosen by GR4.
    r.gr(5, 0x00);
    r.gr(4, 0x01);
    assert_eq!(r.memr(a), r.plane(1, 0));
    // Read mode 1: colour compare 0b1111 over planes 0-3 at a + 2.
    r.gr(5, 0x08);
    r.gr(2, 0x0f);
    r.gr(7, 0x0f);
    assert_eq!(r.memr(a + 2), 0x30);
    // Colour don't care on every plane: all bits match.
    r.gr(7, 0x00);
    assert_eq!(r.memr(a + 2), 0xff);
}

#[test]
fn memory_map_select() {
    let r = Rig::new();
    r.set_mode3(); // GR6 map 3: 0xB8000-0xBFFFF
    assert_eq!(r.memr(0xa0000), 0xff);
    r.memw(0xa0000, 0x12); // not decoded
    assert_eq!(r.plane(0, 0), 0);
    r.gr(6, 0x0a); // map 2: 0xB0000-0xB7FFF
    r.memw(0xb0000, b'M');
    assert_eq!(r.plane(0, 0), b'M');
    assert_eq!(r.memr(0xb8000), 0xff);
    r.gr(6, 0x02); // map 0: the whole 128 KiB
    r.memw(0xa0004, b'A');
    assert_eq!(r.plane(0, 2), b'A');
}

#[test]
fn vbe_1024x768x32_through_ports_and_bar2() {
    let mut r = Rig::new();
    r.unblank();
    assert_eq!(r.vbe_get(0), 0xb0c5);
    r.vbe(0, 0xb0c0);
    assert_eq!(r.vbe_get(0), 0xb0c0);
    // GETCAPS
    r.vbe(4, 0x02);
    assert_eq!(r.vbe_get(1), 2560);
    assert_eq!(r.vbe_get(2), 1600);
    assert_eq!(r.vbe_get(3), 32);
    r.vbe(4, 0x00);
    assert_eq!(r.vbe_get(0x0a), 256);
    // Fill some of VRAM so the clear on enable is visible.
    r.vram().write_u32(100, 0xdead_beef);

    r.vbe(1, 1024);
    r.vbe(2, 768);
    r.vbe(3, 32);
    r.vbe(4, 0x41);
    assert_eq!(r.vram().read_u32(100), Some(0));
    assert_eq!((r.vbe_get(1), r.vbe_get(2), r.vbe_get(3)), (1024, 768, 32));
    assert_eq!(r.vbe_get(4), 0x41);
    // Guest writes pixels through BAR0 (here via bar_write; under KVM they
    // go straight into the same memory).
    let px = |x: u64, y: u64| (y * 1024 + x) * 4;
    r.vga
        .bar_write(BAR_LFB, px(10, 20), &[0x11, 0x22, 0x33, 0x00]);
    r.vga
        .bar_write(BAR_LFB, px(1023, 767), &[0xff, 0x00, 0x80, 0x00]);
    let mut back = [0u8; 4];
    r.vga.bar_read(BAR_LFB, px(10, 20), &mut back);
    assert_eq!(back, [0x11, 0x22, 0x33, 0x00]);
    assert!(r.h.render_at(0));
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (1024, 768));
    assert_eq!(fb.pixel(10, 20), Some([0x33, 0x22, 0x11, 0xff]));
    assert_eq!(fb.pixel(1023, 767), Some([0x80, 0x00, 0xff, 0xff]));
    assert_eq!(fb.pixel(0, 0), Some([0, 0, 0, 0xff]));
    assert!(!r.h.render_at(0));

    // The same registers through BAR2: 0x500 + 2 * index.
    let mut b = [0u8; 2];
    r.vga.bar_read(BAR_MMIO, 0x500 + 2, &mut b);
    assert_eq!(u16::from_le_bytes(b), 1024);
    // A 32-bit read covers XRES and YRES; a byte read the high half.
    let mut d = [0u8; 4];
    r.vga.bar_read(BAR_MMIO, 0x500 + 2, &mut d);
    assert_eq!(d, [0x00, 0x04, 0x00, 0x03]);
    let mut one = [0u8];
    r.vga.bar_read(BAR_MMIO, 0x500 + 3, &mut one);
    assert_eq!(one, [0x04]);
    // A 32-bit write sets two registers (here YRES and BPP).
    r.vga.bar_write(BAR_MMIO, 0x500 + 4, &[0x00, 0x03, 32, 0]);
    assert_eq!((r.vbe_get(2), r.vbe_get(3)), (768, 32));
    // Pan down one line via BAR2 Y_OFFSET: pixel (10, 20) moves to (10, 19).
    r.vga
        .bar_write(BAR_MMIO, 0x500 + 2 * 9, &1u16.to_le_bytes());
    assert!(r.h.render_at(0));
    assert_eq!(
        r.h.display().snapshot().pixel(10, 19),
        Some([0x33, 0x22, 0x11, 0xff])
    );
    // Virtual width 2048: lines are twice as far apart.
    r.vga
        .bar_write(BAR_MMIO, 0x500 + 2 * 9, &0u16.to_le_bytes());
    r.vga
        .bar_write(BAR_MMIO, 0x500 + 2 * 6, &2048u16.to_le_bytes());
    assert_eq!(r.vbe_get(6), 2048);
    r.vga
        .bar_write(BAR_LFB, (5 * 2048 + 7) * 4, &[0, 0xff, 0, 0]);
    r.h.render_at(0);
    assert_eq!(
        r.h.display().snapshot().pixel(7, 5),
        Some([0, 0xff, 0, 0xff])
    );
    // VGA ports mirror at BAR2 0x400: misc output (0x3C2 write, 0x3CC read).
    r.vga.bar_write(BAR_MMIO, 0x402, &[0x67]);
    let mut m = [0u8];
    r.vga.bar_read(BAR_MMIO, 0x40c, &mut m);
    assert_eq!(m[0], 0x67);
    assert_eq!(r.inb(0x3cc), 0x67);
    // QEMU extension registers.
    let mut q = [0u8; 4];
    r.vga.bar_read(BAR_MMIO, 0x600, &mut q);
    assert_eq!(u32::from_le_bytes(q), 8);
    r.vga.bar_read(BAR_MMIO, 0x604, &mut q);
    assert_eq!(u32::from_le_bytes(q), 0x1e1e_1e1e);
}

#[test]
fn vbe_depths_and_banked_window() {
    let r = Rig::new();
    r.unblank();
    for (bpp, bytes, want) in [
        (16u16, vec![0x1f, 0xf8], [0xff, 0x00, 0xff, 0xff]),
        (15, vec![0xe0, 0x03], [0x00, 0xff, 0x00, 0xff]),
        (24, vec![0x01, 0x02, 0x03], [0x03, 0x02, 0x01, 0xff]),
        (8, vec![7], [0xa8, 0xa8, 0xa8, 0xff]),
    ] {
        r.vbe(4, 0);
        r.vbe(1, 640);
        r.vbe(2, 480);
        r.vbe(3, bpp);
        r.vbe(4, 0x01); // enabled, no LFB: banked window
        r.dac(7, [0x2a, 0x2a, 0x2a]);
        // Pixel (0, 300): bank = offset >> 16.
        let bpp_bytes = bytes.len() as u64;
        let off = 300 * 640 * bpp_bytes;
        r.vbe(5, (off >> 16) as u16);
        for (i, b) in bytes.iter().enumerate() {
            r.memw(0xa0000 + (off & 0xffff) + i as u64, *b);
        }
        assert_eq!(r.memr(0xa0000 + (off & 0xffff)), bytes[0]);
        assert_eq!(r.vram().read_u8(off as usize), bytes[0]);
        r.h.render_at(0);
        let fb = r.h.display().snapshot();
        assert_eq!((fb.width, fb.height), (640, 480), "bpp {bpp}");
        assert_eq!(fb.pixel(0, 300), Some(want), "bpp {bpp}");
    }
}

#[test]
fn vbe_big_modes() {
    let r = Rig::new();
    r.unblank();
    r.vbe(1, 1920);
    r.vbe(2, 1080);
    r.vbe(3, 32);
    r.vbe(4, 0x41);
    assert_eq!((r.vbe_get(1), r.vbe_get(2)), (1920, 1080));
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (1920, 1080));

    r.vbe(4, 0);
    r.vbe(1, 4096);
    r.vbe(2, 4096);
    r.vbe(3, 32);
    r.vbe(4, 0xc1);
    let (x, y) = (r.vbe_get(1) as u64, r.vbe_get(2) as u64);
    assert_ne!((x, y), (4096, 4096));
    assert!(x * y * 4 <= 16 << 20);
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width as u64, fb.height as u64), (x, y));
}

#[test]
fn dirty_log_drives_rendering() {
    let r = Rig::new();
    let m = Arc::new(FakeMapper {
        tracks: true,
        ..Default::default()
    });
    r.h.set_mapper(m.clone());
    r.vbe(1, 800);
    r.vbe(2, 600);
    r.vbe(3, 32);
    r.vbe(4, 0x41);
    r.unblank();
    assert!(r.h.render_at(0));
    let g = r.h.display().generation();
    // The guest writes through its KVM mapping: only the dirty log knows.
    r.vram().write_u32(0, 0x00ff_0000);
    assert!(!r.h.render_at(0), "no dirty page logged: nothing redrawn");
    let mut bits = vec![0u64; VRAM_SIZE / 4096 / 64];
    bits[0] = 1;
    *m.dirty.lock().unwrap() = Some(bits);
    assert!(r.h.render_at(0));
    assert_eq!(r.h.display().generation(), g + 1);
    assert_eq!(
        r.h.display().snapshot().pixel(0, 0),
        Some([0xff, 0, 0, 0xff])
    );
}

#[test]
fn unknown_dirty_state_compares_frames() {
    let r = Rig::new();
    r.h.set_mapper(Arc::new(FakeMapper::default()));
    r.vbe(1, 640);
    r.vbe(2, 480);
    r.vbe(3, 32);
    r.vbe(4, 0x41);
    r.unblank();
    assert!(r.h.render_at(0));
    let g = r.h.display().generation();
    assert!(!r.h.render_at(0));
    assert!(!r.h.render_at(5000));
    assert_eq!(r.h.display().generation(), g);
    r.vram().write_u32(4 * 641, 0x0000_ff00);
    assert!(r.h.render_at(0));
    assert_eq!(
        r.h.display().snapshot().pixel(1, 1),
        Some([0, 0xff, 0, 0xff])
    );
}

#[test]
fn blank_when_palette_source_off() {
    let r = Rig::new();
    r.set_mode13();
    r.dac(15, [0x3f, 0x3f, 0x3f]);
    r.memw(0xa0000, 15);
    r.h.render_at(0);
    assert_eq!(r.h.display().snapshot().pixel(0, 0), Some(WHITE));
    r.inb(0x3da);
    r.outb(0x3c0, 0x00);
    assert!(r.h.render_at(0));
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (320, 200));
    assert_eq!(fb.pixel(0, 0), Some([0, 0, 0, 0xff]));
}

/// EGA palette entry `i` (as loaded by `set_mode`) as RGBA.
fn ega(i: u8) -> [u8; 4] {
    let c = |lo: u8, hi: u8| {
        let v = ((i >> lo) & 1) * 0x2a + ((i >> hi) & 1) * 0x15;
        (v << 2) | ((v & 1) * 3)
    };
    [c(2, 5), c(1, 4), c(0, 3), 0xff]
}

#[test]
fn cga_mode4_odd_even_scanlines() {
    let r = Rig::new();
    r.set_mode(
        0x63,
        [0x09, 0x03, 0x00, 0x02],
        &[
            0x2d, 0x27, 0x28, 0x90, 0x2b, 0x80, 0xbf, 0x1f, 0x00, 0xc1, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x9c, 0x8e, 0x8f, 0x14, 0x00, 0x96, 0xb9, 0xa2, 0xff,
        ],
        &[
            0x00, 0x13, 0x15, 0x17, 0x02, 0x04, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
            0x16, 0x17, 0x01, 0x00, 0x03, 0x00,
        ],
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x0f, 0x0f, 0xff],
    );
    // Even line 0: pixels 0-3 = colours 3, 2, 1, 0.
    r.memw(0xb8000, 0b11_10_01_00);
    // Odd line 1 lives 8 KiB up; byte 1 holds pixels 4-7.
    r.memw(0xba001, 0b01_00_00_11);
    // Line 2 is the second even line.
    r.memw(0xb8000 + 80, 0b10_00_00_00);
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (320, 200));
    assert_eq!(fb.pixel(0, 0), Some(ega(0x17)));
    assert_eq!(fb.pixel(1, 0), Some(ega(0x15)));
    assert_eq!(fb.pixel(2, 0), Some(ega(0x13)));
    assert_eq!(fb.pixel(3, 0), Some(ega(0x00)));
    assert_eq!(fb.pixel(4, 1), Some(ega(0x13)));
    assert_eq!(fb.pixel(7, 1), Some(ega(0x17)));
    assert_eq!(fb.pixel(0, 1), Some(ega(0x00)));
    assert_eq!(fb.pixel(0, 2), Some(ega(0x15)));
}

#[test]
fn vbe_planar_4bpp_like_seabios() {
    let r = Rig::new();
    // SeaBIOS sets mode 6Ah (800x600x16) first, then enables dispi 4 bpp.
    r.set_mode12();
    r.vbe(3, 4);
    r.vbe(1, 800);
    r.vbe(2, 600);
    r.vbe(5, 0);
    r.vbe(4, 0x01);
    assert_eq!(r.vbe_get(6), 800);
    // Write mode 2, pixel (799, 599) = colour 0x0e.
    r.gr(5, 0x02);
    r.gr(8, 0x01);
    let a = 0xa0000 + 599 * 100 + 99;
    r.memr(a);
    r.memw(a, 0x0e);
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    assert_eq!((fb.width, fb.height), (800, 600));
    assert_eq!(fb.pixel(799, 599), Some(ega(0x3e)));
    assert_eq!(fb.pixel(798, 599), Some(ega(0)));
}

#[test]
fn vbe_8bpp_with_8bit_dac() {
    let r = Rig::new();
    r.unblank();
    r.vbe(1, 640);
    r.vbe(2, 480);
    r.vbe(3, 8);
    r.vbe(4, 0x41 | 0x20);
    r.dac(9, [0xff, 0x80, 0x01]);
    r.outb(0x3c7, 9);
    assert_eq!(r.inb(0x3c9), 0xff);
    r.vram().write_u8(640 * 3 + 2, 9);
    r.h.render_at(0);
    assert_eq!(
        r.h.display().snapshot().pixel(2, 3),
        Some([0xff, 0x80, 0x01, 0xff])
    );
    // Back to 6-bit: values are masked and scaled.
    r.vbe(4, 0x41);
    r.dac(9, [0xff, 0x20, 0x01]);
    r.h.render_at(0);
    assert_eq!(
        r.h.display().snapshot().pixel(2, 3),
        Some([0xff, 0x80, 0x07, 0xff])
    );
}

#[test]
fn reset_returns_to_power_on_state() {
    let r = Rig::new();
    r.unblank();
    r.vbe(1, 800);
    r.vbe(2, 600);
    r.vbe(3, 32);
    r.vbe(4, 0x41);
    r.vram().write_u32(0, 0x00ff_ffff);
    r.h.render_at(0);
    assert_eq!(r.h.display().snapshot().width, 800);
    assert_eq!(r.h.display().snapshot().pixel(0, 0), Some(WHITE));
    r.vga.reset();
    assert_eq!(r.vbe_get(4), 0);
    assert_eq!(r.vbe_get(0), 0xb0c5);
    assert_eq!(r.inb(0x3cc), 0);
    assert!(r.h.render_at(0));
    let fb = r.h.display().snapshot();
    // Blank (palette address source off), same size, black.
    assert_eq!((fb.width, fb.height), (800, 600));
    assert_eq!(fb.pixel(0, 0), Some([0, 0, 0, 0xff]));
}

/// A small deterministic generator for the hostile tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn hostile_guest_cannot_break_it() {
    let mut r = Rig::new();
    // Every mode bit at once.
    r.gr(5, 0xff);
    r.gr(6, 0xff);
    for i in 0..8 {
        r.seq(i, 0xff);
    }
    for i in 0..=255 {
        r.crtc(i, 0xff);
    }
    r.inb(0x3da);
    for i in 0..=255u8 {
        r.outb(0x3c0, i);
        r.outb(0x3c0, 0xff);
    }
    r.h.render_at(0);
    r.h.screen_text();
    let mut g = Lcg(42);
    let sizes = [0usize, 1, 2, 3, 4, 8, 16];
    for _ in 0..20000 {
        let n = sizes[g.next() as usize % sizes.len()];
        let mut buf = vec![g.next() as u8; n];
        match g.next() % 8 {
            0 => {
                let port = 0x3b0 + g.next() % 0x30;
                r.io.write(port, &buf);
            }
            1 => {
                let port = 0x3b0 + g.next() % 0x30;
                r.io.read(port, &mut buf);
            }
            2 => {
                r.outw(0x1ce, g.next() as u16);
                r.io.write(0x1cf + g.next() % 2, &buf);
            }
            3 => {
                r.io.read(0x1ce + g.next() % 3, &mut buf);
            }
            4 => {
                r.mmio.write(0xa0000 + g.next() % 0x20000, &buf);
            }
            5 => {
                r.mmio.read(0xa0000 + g.next() % 0x20000, &mut buf);
            }
            6 => {
                let bar = [0, 2, 1, 6, 5][g.next() as usize % 5];
                let off = if g.next().is_multiple_of(2) {
                    g.next() % 0x1000
                } else {
                    g.next() << 20
                };
                r.vga.bar_write(bar, off, &buf);
            }
            _ => {
                let bar = [0, 2, 6][g.next() as usize % 3];
                r.vga.bar_read(bar, g.next() % (32 << 20), &mut buf);
                r.vga.bar_read(bar, u64::MAX - 1, &mut buf);
            }
        }
        if g.next().is_multiple_of(500) {
            r.h.render_at(g.next() as u128);
            r.h.screen_text();
        }
    }
    // Out-of-range VBE geometry straight at the registers.
    for v in [0u16, 1, 7, 0xffff, 0x8000] {
        for i in 0..16 {
            r.vbe(i, v);
        }
        r.h.render_at(0);
    }
    // Whatever happened, a frame within limits is produced.
    r.vbe(4, 0);
    r.h.render_at(0);
    let fb = r.h.display().snapshot();
    assert_eq!(fb.pixels.len(), fb.width as usize * fb.height as usize * 4);
    assert!(fb.width <= 4608 && fb.height <= 2048);
}

#[test]
fn random_register_files_render_safely() {
    let r = Rig::new();
    let mut g = Lcg(7);
    for round in 0..300 {
        r.outb(0x3c2, g.next() as u8);
        for i in 0..8 {
            r.seq(i, g.next() as u8);
        }
        for i in 0..9 {
            r.gr(i, g.next() as u8);
        }
        r.crtc(0x11, 0);
        for i in 0..0x19 {
            r.crtc(i, g.next() as u8);
        }
        r.inb(0x3da);
        for i in 0..0x15 {
            r.outb(0x3c0, i);
            r.outb(0x3c0, g.next() as u8);
        }
        r.outb(0x3c0, 0x20);
        if round % 3 == 0 {
            for i in 0..10 {
                r.vbe(i, g.next() as u16);
            }
        } else {
            r.vbe(4, 0);
        }
        for _ in 0..64 {
            r.memw(0xa0000 + g.next() % 0x20000, g.next() as u8);
        }
        r.h.render_at(g.next() as u128);
        r.h.screen_text();
        let fb = r.h.display().snapshot();
        assert_eq!(fb.pixels.len(), fb.width as usize * fb.height as usize * 4);
    }
}

/// Conversion cost of a 1920x1080x32 frame; run with `--ignored
/// --nocapture`. No assertion on time.
#[test]
#[ignore]
fn bench_render_1080p32() {
    let mut r = Rig::new();
    r.vbe(1, 1920);
    r.vbe(2, 1080);
    r.vbe(3, 32);
    r.vbe(4, 0x41);
    r.unblank();
    let n: u32 = 50;
    let t = Instant::now();
    for i in 0..n {
        // Change one pixel so every frame is converted and published.
        r.vga.bar_write(BAR_LFB, 0, &i.to_le_bytes());
        assert!(r.h.render_at(0));
    }
    let per = t.elapsed() / n;
    println!("1920x1080x32 render: {per:?} per frame");
    let t = Instant::now();
    for _ in 0..n {
        r.vga.bar_write(BAR_LFB, 0, &[0; 4]);
        r.h.render_at(0);
    }
    println!("idle-ish render (compare): {:?} per frame", t.elapsed() / n);
}

#[test]
fn handles_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<StdVga>();
    send_sync::<VgaHandle>();
    send_sync::<Display>();
    // The display thread renders while a vCPU thread writes.
    let r = Rig::new();
    r.set_mode3();
    let h = r.h.clone();
    let t = std::thread::spawn(move || {
        for i in 0..50 {
            h.render_at(i);
        }
    });
    for i in 0..2000u64 {
        r.memw(0xb8000 + (i % 4000), i as u8);
    }
    t.join().unwrap();
    r.memw(0xb8000, b'Z');
    assert!(r.h.screen_text().unwrap()[0].starts_with('Z'));
}

/// With KVM's dirty log, a VBE redraw converts only the lines on dirty
/// pages, once the work buffer holds the frame on show (the last render
/// found nothing new); otherwise, and after a register write, everything.
#[test]
fn dirty_log_redraws_only_the_dirty_lines() {
    let r = Rig::new();
    let m = Arc::new(FakeMapper {
        tracks: true,
        ..Default::default()
    });
    r.h.set_mapper(m.clone());
    r.vbe(1, 1024);
    r.vbe(2, 768);
    r.vbe(3, 32);
    r.vbe(4, 0x41);
    r.unblank();
    assert!(r.h.render_at(0));
    // A line is 4 KiB at 1024x32: line y is page y.
    let log = |lines: &[usize]| {
        let mut bits = vec![0u64; VRAM_SIZE / 4096 / 64];
        for y in lines {
            bits[y / 64] |= 1 << (y % 64);
        }
        *m.dirty.lock().unwrap() = Some(bits);
    };
    let black = [0, 0, 0, 0xff];
    // A page written with the same pixels: redrawn, nothing new to show,
    // and the work buffer now holds the frame on show.
    log(&[0]);
    assert!(!r.h.render_at(0));
    r.vram().write_u32(4 * 1024 * 10, 0x00ff_0000);
    r.vram().write_u32(4 * 1024 * 700, 0x0000_ff00);
    log(&[10]);
    assert!(r.h.render_at(0));
    let fb = r.h.display().snapshot();
    assert_eq!(
        fb.pixel(0, 10),
        Some([0xff, 0, 0, 0xff]),
        "a logged line is redrawn"
    );
    assert_eq!(fb.pixel(0, 700), Some(black), "an unlogged one is not");
    // That frame was published, so the next starts from an older buffer
    // and converts everything: line 700 shows up.
    log(&[11]);
    assert!(r.h.render_at(0));
    assert_eq!(
        r.h.display().snapshot().pixel(0, 700),
        Some([0, 0xff, 0, 0xff])
    );
    log(&[0]);
    assert!(!r.h.render_at(0));
    r.vram().write_u32(4 * (1024 * 300 + 5), 0x0000_00ff);
    r.vram().write_u32(4 * (1024 * 301 + 5), 0x00ff_ffff);
    log(&[300]);
    assert!(r.h.render_at(0));
    let fb = r.h.display().snapshot();
    assert_eq!(fb.pixel(5, 300), Some([0, 0, 0xff, 0xff]));
    assert_eq!(fb.pixel(5, 301), Some(black));
    // The full render after that publish brings line 301.
    log(&[0]);
    assert!(r.h.render_at(0));
    assert_eq!(r.h.display().snapshot().pixel(5, 301), Some([0xff; 4]));
    // A register write (the DAC) makes a render full even when the work
    // buffer holds the frame: line 400, never logged, shows up.
    log(&[0]);
    assert!(!r.h.render_at(0));
    r.vram().write_u32(4 * 1024 * 400, 0x00ff_ffff);
    log(&[0]);
    assert!(!r.h.render_at(0), "partial: line 400 not logged");
    r.dac(0, [1, 2, 3]);
    assert!(r.h.render_at(0));
    assert_eq!(r.h.display().snapshot().pixel(0, 400), Some([0xff; 4]));
}
