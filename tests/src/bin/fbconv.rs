//! fbconv: the in-process cost of Vireo's VGA renderer on a full
//! 1920x1080x32 frame, for `bench/display.sh`.
//!
//! It builds the standard VGA adapter (`vmm_engine::testing::devices::vga::StdVga`,
//! no KVM, no guest), turns the screen on (attribute index 0x20 at 0x3C0)
//! and sets a Bochs VBE mode through the dispi ports exactly as a guest's
//! `out 0x1CE/0x1CF` would (XRES, YRES, BPP, then ENABLE with the LFB bit),
//! fills video memory through BAR0 with a pattern, and then times, N times
//! each:
//!
//! - `render-changed`: one pixel of the LFB (the last one) is rewritten
//!   through BAR0, which marks the adapter dirty, then
//!   `VgaHandle::render()`: what the display thread does when the guest
//!   changed the screen. It converts the whole frame (BGRX in video memory
//!   to RGBA, `VbeLayout::draw`), compares it with the published frame (to
//!   its last pixel, which differs) and publishes it (`Display::present`).
//! - `render-same`: the same, with the pixel rewritten to its old value:
//!   conversion plus a full compare, nothing published.
//! - `render-idle`: `render()` with nothing written: the cost of an idle
//!   refresh (no mapper here, so not even a dirty-log query).
//! - `png`: `Display::snapshot()` plus `Framebuffer::save_png` of the
//!   frame into a file in the given directory: what the control socket's
//!   `screenshot` command does, without the socket.
//!
//! Output: `info size=WxHx32 n=N png_bytes=B`, one `NAME us=T1,T2,...`
//! line per measure (microseconds), then `NAME median_us=.. min_us=..`. No
//! timing is asserted anywhere.
//!
//! Usage: `fbconv [N [WIDTH HEIGHT [DIR]]]` (defaults: 20, 1920 1080, the
//! system temporary directory).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use vmm_engine::testing::devices::pci::PciDevice;
use vmm_engine::testing::devices::vga::{vbe, StdVga, BAR_LFB, VBE_IO_BASE, VGA_IO_BASE};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fbconv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> Result<T, String> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| format!("bad argument {s:?}")),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, 1, 20)?;
    let width: u16 = arg(&args, 2, 1920)?;
    let height: u16 = arg(&args, 3, 1080)?;
    let dir: PathBuf = arg(&args, 4, std::env::temp_dir())?;
    if n == 0 || width == 0 || height == 0 {
        return Err("N, WIDTH and HEIGHT must be positive".into());
    }

    let mut vga = StdVga::new(Vec::new()).map_err(|e| e.to_string())?;
    let handle = vga.handle();
    let display = handle.display();
    let ports = vga.io_devices();
    let port = |base: u64| {
        ports
            .iter()
            .find(|(_, b, _)| *b == base)
            .map(|(d, _, _)| d.clone())
            .ok_or(format!("no port device at {base:#x}"))
    };
    let (vga_io, dispi) = (port(VGA_IO_BASE)?, port(VBE_IO_BASE)?);
    // Screen on, as the VGA BIOS leaves it: read 0x3DA (attribute
    // flip-flop to index), then index 0x20 (palette address source) at
    // 0x3C0. Without it the adapter shows a blank screen.
    {
        let mut d = vga_io.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = [0u8];
        d.read(0x3da - VGA_IO_BASE, &mut b);
        d.write(0x3c0 - VGA_IO_BASE, &[0x20]);
    }
    let set = |index: usize, value: u16| {
        let mut d = dispi.lock().unwrap_or_else(|e| e.into_inner());
        d.write(0, &(index as u16).to_le_bytes());
        d.write(1, &value.to_le_bytes());
    };
    set(vbe::INDEX_ENABLE, 0);
    set(vbe::INDEX_XRES, width);
    set(vbe::INDEX_YRES, height);
    set(vbe::INDEX_BPP, 32);
    set(vbe::INDEX_ENABLE, vbe::ENABLED | vbe::LFB_ENABLED);

    // A pattern that is not one colour, so compares and PNG encoding do
    // real work: GRUB-like dark background with bands of "text".
    let (w, h) = (width as usize, height as usize);
    let mut row = vec![0u8; w * 4];
    for y in 0..h {
        for (x, p) in row.chunks_exact_mut(4).enumerate() {
            let ink = (y / 16) % 3 == 1 && (x / 8 + y) % 5 < 2;
            let v = if ink { 0xaa } else { 0x00 };
            p.copy_from_slice(&[v, v, v, 0]);
        }
        vga.bar_write(BAR_LFB, (y * w * 4) as u64, &row);
    }
    if !handle.render() {
        return Err("the first render published no frame".into());
    }
    let fb = display.snapshot();
    if (fb.width, fb.height) != (width as u32, height as u32) {
        return Err(format!(
            "rendered {}x{}, wanted {width}x{height} (the mode did not take)",
            fb.width, fb.height
        ));
    }
    drop(fb);

    let last = ((w * h - 1) * 4) as u64;
    let mut samples: Vec<(&str, Vec<u128>)> = Vec::new();

    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        vga.bar_write(BAR_LFB, last, &[i as u8, 0x11, 0x22, 0]);
        let t0 = Instant::now();
        let changed = handle.render();
        t.push(t0.elapsed().as_micros());
        if !changed {
            return Err("render-changed: the frame did not change".into());
        }
    }
    samples.push(("render-changed", t));

    let mut t = Vec::with_capacity(n);
    let keep = [(n - 1) as u8, 0x11, 0x22, 0];
    for _ in 0..n {
        vga.bar_write(BAR_LFB, last, &keep);
        let t0 = Instant::now();
        let changed = handle.render();
        t.push(t0.elapsed().as_micros());
        if changed {
            return Err("render-same: the frame changed".into());
        }
    }
    samples.push(("render-same", t));

    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let changed = handle.render();
        t.push(t0.elapsed().as_micros());
        if changed {
            return Err("render-idle: the frame changed".into());
        }
    }
    samples.push(("render-idle", t));

    let path = dir.join(format!("fbconv-{}.png", std::process::id()));
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        display
            .snapshot()
            .save_png(&path)
            .map_err(|e| format!("save_png {}: {e}", path.display()))?;
        t.push(t0.elapsed().as_micros());
    }
    let png_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    samples.push(("png", t));

    println!("info size={width}x{height}x32 n={n} png_bytes={png_bytes}");
    for (name, t) in &samples {
        let list: Vec<String> = t.iter().map(|v| v.to_string()).collect();
        println!("{name} us={}", list.join(","));
    }
    for (name, t) in &mut samples {
        t.sort_unstable();
        let median = if t.len() % 2 == 1 {
            t[t.len() / 2]
        } else {
            (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2
        };
        println!("{name} median_us={median} min_us={}", t[0]);
    }
    Ok(())
}
