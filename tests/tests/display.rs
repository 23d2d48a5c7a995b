//! The std VGA as real clients drive it: SeaBIOS's banner and a GRUB text
//! menu through `screen_text` and screenshots (compared with QEMU's
//! `screendump` of the same ISO), GRUB's gfxterm at 1024x768 through the
//! VGA BIOS's VBE, and two boot-sector guests (assets/guests/tiny/
//! vga13.asm, vgaplanar.asm) that draw known colours in mode 13h and in
//! planar 640x480. An idle screen keeps its generation.
//! GRUB tests take 40-170 s each on a PVM host; the boot-sector ones a few.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vireo_tests::{guest, require_kvm, Console};
use vmm_engine::Framebuffer;
use vmm_engine::{Vm, VmSpec};

const T: Duration = Duration::from_secs(400);
/// GRUB loading its modules from the CD takes minutes under load.
const T_GRUB: Duration = Duration::from_secs(1000);

fn cd_spec(iso: PathBuf) -> VmSpec {
    let mut s = VmSpec::firmware();
    s.memory_mib = 128;
    s.cdrom = Some(iso);
    s
}

fn run(spec: VmSpec) -> (Vm, Console) {
    require_kvm();
    let vm = Vm::create(spec).expect("creating the VM");
    let con = Console::new(vm.events());
    vm.start().expect("starting the VM");
    (vm, con)
}

/// Polls the text screen until every needle is on it; returns the rows.
fn wait_text(vm: &Vm, needles: &[&str], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = vm.screen_text().unwrap_or_default();
        let all = rows.join("\n");
        if needles.iter().all(|n| all.contains(n)) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needles:?} on the text screen:\n{all}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits for a frame of the given size that has not changed for `quiet`.
fn wait_frame(vm: &Vm, w: u32, h: u32, quiet: Duration, timeout: Duration) -> Framebuffer {
    let d = vm.display();
    let deadline = Instant::now() + timeout;
    let mut last = (u64::MAX, Instant::now());
    loop {
        let g = d.generation();
        let fb = d.snapshot();
        if (fb.width, fb.height) == (w, h) {
            if g != last.0 {
                last = (g, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return fb;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no steady {w}x{h} frame (now {}x{})",
            fb.width,
            fb.height
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Saves the frame as PNG, reads it back and checks it is the same frame.
fn screenshot(fb: &Framebuffer, path: &Path) {
    fb.save_png(path).expect("saving the screenshot");
    let dec = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut px = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut px).unwrap();
    assert_eq!((info.width, info.height), (fb.width, fb.height));
    assert_eq!(&px[..info.buffer_size()], fb.pixels.as_slice());
}

fn px(fb: &Framebuffer, x: u32, y: u32) -> [u8; 3] {
    let p = fb.pixel(x, y).expect("pixel in the frame");
    [p[0], p[1], p[2]]
}

/// Asserts every pixel of the rectangle has colour `c`.
fn assert_rect(fb: &Framebuffer, x0: u32, y0: u32, x1: u32, y1: u32, c: [u8; 3], what: &str) {
    for y in y0..y1 {
        for x in x0..x1 {
            assert_eq!(px(fb, x, y), c, "{what}: pixel ({x},{y})");
        }
    }
}

/// The generation does not move for `d` while the guest sits idle.
fn assert_idle(vm: &Vm, d: Duration) {
    let g = vm.display().generation();
    std::thread::sleep(d);
    assert_eq!(
        vm.display().generation(),
        g,
        "an idle screen produced new frames"
    );
}

/// The most common colour and how many pixels differ from it.
fn background(fb: &Framebuffer) -> ([u8; 4], usize) {
    let mut counts = std::collections::HashMap::new();
    for p in fb.pixels.chunks_exact(4) {
        *counts.entry([p[0], p[1], p[2], p[3]]).or_insert(0usize) += 1;
    }
    let (bg, n) = counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("a non-empty frame");
    (bg, (fb.width * fb.height) as usize - n)
}

/// Text-mode cell (col, row) of a 720x400 mode 3 screen has foreground
/// pixels of colour `fg` (9x16 cells).
fn cell_has(fb: &Framebuffer, col: u32, row: u32, fg: [u8; 3]) -> bool {
    (row * 16..row * 16 + 16).any(|y| (col * 9..col * 9 + 9).any(|x| px(fb, x, y) == fg))
}

const GREY: [u8; 3] = [0xa8, 0xa8, 0xa8];

#[test]
fn seabios_banner_then_mode_13h_colours() {
    let dir = vireo_tests::work_dir("display-vga13");
    let mut s = cd_spec(guest("tiny", "vga13.iso"));
    s.memory_mib = 32;
    let (vm, mut con) = run(s);
    con.wait_for("VGA13-TEXT", T);

    // SeaBIOS's banner and the guest's own line are on the text screen.
    let rows = wait_text(&vm, &["SeaBIOS", "VIREO-TEXT"], T);
    let all = rows.join("\n");
    assert!(all.contains("Booting from DVD/CD"), "{all}");
    // The screenshot shows them: grey on black glyphs in the cells where
    // the text says they are, and nothing in blank cells.
    let fb = wait_frame(&vm, 720, 400, Duration::from_millis(100), T);
    screenshot(&fb, &dir.join("text.png"));
    for needle in ["SeaBIOS", "VIREO-TEXT"] {
        let (r, line) = rows
            .iter()
            .enumerate()
            .find(|(_, l)| l.contains(needle))
            .unwrap();
        let c = line.find(needle).unwrap();
        for (i, ch) in needle.chars().enumerate() {
            let col = (c + i) as u32;
            assert!(
                cell_has(&fb, col, r as u32, GREY),
                "{ch:?} of {needle:?} at cell ({col},{r}) is not drawn"
            );
        }
    }
    let last = rows.len() as u32 - 1;
    assert!(rows[last as usize].trim().is_empty(), "{all}");
    assert!(!(0..80).any(|c| cell_has(&fb, c, last, GREY)));

    // On to mode 13h.
    vm.serial_input(b"g");
    con.wait_for("VGA13-DONE", T);
    let fb = wait_frame(&vm, 320, 200, Duration::from_millis(300), T);
    screenshot(&fb, &dir.join("mode13.png"));
    let (red, green, blue, sky) = ([255, 0, 0], [0, 255, 0], [0, 0, 255], [87, 168, 255]);
    assert_rect(&fb, 0, 0, 160, 100, red, "top-left");
    assert_rect(&fb, 160, 0, 320, 20, green, "top-right, above the block");
    assert_rect(&fb, 160, 28, 320, 100, green, "top-right, below the block");
    assert_rect(&fb, 160, 20, 200, 28, green, "left of the block");
    assert_rect(&fb, 216, 20, 320, 28, green, "right of the block");
    assert_rect(&fb, 200, 20, 216, 28, sky, "the block");
    assert_rect(&fb, 0, 100, 160, 200, blue, "bottom-left");
    assert_rect(&fb, 160, 100, 320, 200, sky, "bottom-right");

    // The guest halted: graphics, no cursor, so no new frames.
    assert_idle(&vm, Duration::from_millis(1200));
    vm.power_off();
}

#[test]
fn planar_640x480_colours() {
    let dir = vireo_tests::work_dir("display-planar");
    let mut s = cd_spec(guest("tiny", "vgaplanar.iso"));
    s.memory_mib = 32;
    let (vm, mut con) = run(s);
    con.wait_for("VGAPLANAR-DONE", T);
    let fb = wait_frame(&vm, 640, 480, Duration::from_millis(300), T);
    screenshot(&fb, &dir.join("planar.png"));
    // The default EGA palette of mode 12h.
    let blue = [0, 0, 0xa8];
    let green = [0, 0xa8, 0];
    let red = [0xa8, 0, 0];
    let light_blue = [0x57, 0x57, 0xff];
    let yellow = [0xff, 0xff, 0x57];
    let white = [0xff, 0xff, 0xff];
    assert_rect(&fb, 0, 0, 320, 240, blue, "top-left");
    assert_rect(&fb, 320, 0, 640, 100, green, "top-right above white");
    assert_rect(&fb, 320, 105, 640, 240, green, "top-right below white");
    assert_rect(&fb, 320, 100, 400, 105, green, "left of white");
    assert_rect(&fb, 480, 100, 640, 105, green, "right of white");
    // Bit mask 0x0F: in each byte the left 4 pixels kept their colour.
    for x in (400..480).step_by(8) {
        assert_rect(&fb, x, 100, x + 4, 105, green, "masked pixels");
        assert_rect(&fb, x + 4, 100, x + 8, 105, white, "written pixels");
    }
    assert_rect(&fb, 0, 240, 80, 480, red, "bottom-left, left of yellow");
    assert_rect(&fb, 160, 240, 320, 480, red, "bottom-left, right of yellow");
    assert_rect(&fb, 80, 240, 160, 300, red, "above yellow");
    assert_rect(&fb, 80, 310, 160, 480, red, "below yellow");
    assert_rect(&fb, 80, 300, 160, 310, yellow, "yellow block");
    assert_rect(&fb, 320, 240, 640, 480, light_blue, "bottom-right");
    assert_idle(&vm, Duration::from_millis(1200));
    vm.power_off();
}

/// GRUB's gfxterm at 1024x768x32 (VBE through the VGA BIOS) showing a
/// menu without a countdown: the menu loop redraws and refreshes the
/// screen (a bare `echo` may sit in gfxterm's back buffer), then waits.
const GFX_CFG: &str = "serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod all_video
insmod gfxterm
insmod font
loadfont unicode
set gfxmode=1024x768x32
terminal_output gfxterm serial
echo VIREO-GFX
set timeout=-1
menuentry \"gfx entry one\" {
\thalt
}
";

#[test]
fn grub_gfxterm_1024x768() {
    let dir = vireo_tests::work_dir("display-gfx");
    let iso = vireo_tests::grub_iso("display-gfx", GFX_CFG, None);
    let (vm, mut con) = run(cd_spec(iso));
    con.wait_for("VIREO-GFX", T_GRUB);
    con.wait_for("gfx entry one", T_GRUB);
    // GRUB's text appears: many pixels differ from the background, also
    // in the top rows where GRUB's header is.
    let deadline = Instant::now() + T;
    let fb = loop {
        let fb = wait_frame(&vm, 1024, 768, Duration::from_millis(500), T);
        let (_, other) = background(&fb);
        if other > 2000 {
            break fb;
        }
        if Instant::now() > deadline {
            let _ = fb.save_png(&dir.join("gfx-blank.png"));
            panic!("the 1024x768 screen shows no text ({other} non-background pixels)");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let t0 = Instant::now();
    screenshot(&fb, &dir.join("gfx.png"));
    eprintln!(
        "screenshot of a 1024x768 GRUB gfxterm frame (save + verify): {:?}",
        t0.elapsed()
    );
    let (bg, _) = background(&fb);
    let top: usize = (0..64)
        .map(|y| (0..1024).filter(|&x| fb.pixel(x, y).unwrap() != bg).count())
        .sum();
    assert!(top > 100, "no text in the top rows ({top} pixels)");
    assert!(vm.screen_text().is_none(), "VBE mode reported as text");
    // GRUB waits in its menu; gfxterm does not blink: no new frames.
    assert_idle(&vm, Duration::from_millis(1200));
    vm.power_off();
}

/// GRUB's text menu, static (no countdown). Input on serial and keyboard,
/// output on the VGA only.
const MENU_CFG: &str = "serial --unit=0 --speed=115200
terminal_input serial console
terminal_output console
set timeout=-1
set default=0
menuentry \"first entry\" {
\techo PICKED-FIRST
\thalt
}
menuentry \"second entry\" {
\techo PICKED-SECOND
\thalt
}
";

/// QEMU with -vga std on the same ISO and a monitor socket.
struct Qemu {
    child: Child,
    monitor: PathBuf,
}

impl Qemu {
    fn start(iso: &Path, dir: &Path) -> Option<Qemu> {
        let monitor = dir.join("qemu-monitor.sock");
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "kvm", "-M", "pc", "-m", "128", "-nodefaults"])
            .args(["-vga", "std", "-display", "none", "-serial", "null"])
            .arg("-cdrom")
            .arg(iso)
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Qemu { child, monitor })
    }

    /// Runs a monitor command and waits for the prompt after it.
    fn monitor(&self, cmd: &str) -> std::io::Result<()> {
        let mut s = UnixStream::connect(&self.monitor)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut buf = Vec::new();
        // Banner, then the first prompt.
        read_until_prompt(&mut r, &mut buf)?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        buf.clear();
        read_until_prompt(&mut r, &mut buf)
    }

    fn screendump(&self, path: &Path) -> Option<Framebuffer> {
        let _ = std::fs::remove_file(path);
        self.monitor(&format!("screendump {}", path.display()))
            .ok()?;
        read_ppm(&std::fs::read(path).ok()?)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_until_prompt(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut b = [0u8; 1];
    while !buf.ends_with(b"(qemu) ") {
        if r.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(b[0]);
    }
    Ok(())
}

/// A binary PPM (P6, maxval 255) as a frame.
fn read_ppm(data: &[u8]) -> Option<Framebuffer> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while data.get(i)?.is_ascii_whitespace() {
            i += 1;
        }
        if data[i] == b'#' {
            while *data.get(i)? != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while !data.get(i)?.is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(&data[start..i]).ok()?.to_string());
    }
    i += 1;
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    let w: u32 = fields[1].parse().ok()?;
    let h: u32 = fields[2].parse().ok()?;
    let rgb = data.get(i..i + (w * h * 3) as usize)?;
    let mut px = Vec::with_capacity((w * h * 4) as usize);
    for p in rgb.chunks_exact(3) {
        px.extend_from_slice(&[p[0], p[1], p[2], 255]);
    }
    Some(Framebuffer {
        width: w,
        height: h,
        pixels: std::sync::Arc::new(px),
        generation: 0,
    })
}

/// The share of equal pixels of two frames of the same size. "Equal"
/// allows each channel to differ by up to `tol` (0: exactly equal). Vireo
/// widens the 6-bit DAC values to 8 bits as QEMU does (`v << 2 | (v & 1) *
/// 3`), so the two pictures can match exactly.
fn equal_share(a: &Framebuffer, b: &Framebuffer, tol: u8) -> f64 {
    if (a.width, a.height) != (b.width, b.height) {
        return 0.0;
    }
    let same = a
        .pixels
        .chunks_exact(4)
        .zip(b.pixels.chunks_exact(4))
        .filter(|(p, q)| (0..3).all(|i| p[i].abs_diff(q[i]) <= tol))
        .count();
    same as f64 / (a.width * a.height) as f64
}

#[test]
fn grub_text_menu_readable_and_matches_qemu_screendump() {
    let dir = vireo_tests::work_dir("display-menu");
    let iso = vireo_tests::grub_iso("display-menu", MENU_CFG, None);
    let (vm, _con) = run(cd_spec(iso.clone()));

    let rows = wait_text(&vm, &["first entry", "second entry", "GNU GRUB"], T_GRUB);
    let all = rows.join("\n");
    let fb = wait_frame(&vm, 720, 400, Duration::from_millis(1500), T);
    let rows = vm.screen_text().unwrap_or_default();
    assert_eq!(rows.join("\n"), all, "the menu changed while settling");
    screenshot(&fb, &dir.join("vireo-menu.png"));
    // The menu text is drawn where screen_text says.
    let (r, line) = rows
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("second entry"))
        .unwrap();
    let c = line.find("second entry").unwrap() as u32;
    let (_, other) = background(&fb);
    assert!(
        other > 1000,
        "a near-uniform menu screen ({other} other pixels)"
    );
    for i in 0.."second".len() as u32 {
        let cell: Vec<[u8; 4]> = (r as u32 * 16..r as u32 * 16 + 16)
            .flat_map(|y| ((c + i) * 9..(c + i) * 9 + 9).map(move |x| (x, y)))
            .map(|(x, y)| fb.pixel(x, y).unwrap())
            .collect();
        let first = cell[0];
        assert!(
            cell.iter().any(|p| *p != first),
            "cell ({}, {r}) of 'second' is flat",
            c + i
        );
    }

    // QEMU boots the same ISO (afterwards, not to slow Vireo's boot down)
    // as the reference picture. Its screendump is polled until it matches
    // or its time is up; the best share seen is reported.
    vm.pause();
    let t_qemu = Instant::now();
    let qemu = Qemu::start(&iso, &dir)
        .expect("starting qemu-system-x86_64 (Debian package qemu-system-x86)");
    let deadline = Instant::now() + T_GRUB;
    let mut best = 0.0f64;
    let mut best_dump = None;
    while Instant::now() < deadline {
        if let Some(q) = qemu.screendump(&dir.join("qemu.ppm")) {
            let share = equal_share(&fb, &q, 0);
            if share > best {
                best = share;
                best_dump = Some(q);
            }
            if best >= 0.99 {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let near = match &best_dump {
        Some(q) => {
            let _ = q.save_png(&dir.join("qemu-menu.png"));
            equal_share(&fb, q, 3)
        }
        None => 0.0,
    };
    eprintln!(
        "Vireo vs QEMU screendump of the GRUB text menu: {:.4}% exactly equal pixels, {:.4}% within 3 per channel (QEMU run {:?})",
        best * 100.0,
        near * 100.0,
        t_qemu.elapsed()
    );
    assert!(
        best >= 0.99,
        "Vireo's menu screenshot matches QEMU's screendump in only {:.3}% of pixels (see {})",
        best * 100.0,
        dir.display()
    );
    vm.resume();
    vm.power_off();
}
