//! The real VGA BIOS (Debian's vgabios-stdvga.bin) driving the device under
//! KVM: option ROM init, int 10h mode 3 and teletype output, a VBE mode
//! with the linear framebuffer mapped as a KVM memory slot with dirty-page
//! logging, exactly as the machine wires it.
//!
//! Needs /dev/kvm and the ROM, so it is ignored by default:
//! `cargo test -p vmm-engine --lib devices::vga::kvm_test -- --ignored`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuExit, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::*;

const ROM_PATH: &str = "/usr/share/seabios/vgabios-stdvga.bin";
const LFB: u64 = 0xe000_0000;
const VRAM_SLOT: u32 = 2;

/// The guest program, at 0000:7C00 (nasm source abridged; bytes below).
/// Each stage ends with `out 0xfN, ax` and the harness checks the device
/// state at that point:
///
/// ```text
///     cli / ds = es = ss = 0 / sp = 0x7000
///     point all 256 IVT vectors at an IRET
///     mov ax, 0x0010 ; call 0xc000:0x0003      ; ROM init, AX = BDF 00:02.0
///     mov ax, 0x0003 ; int 0x10                ; text mode 3
///     mov ax, 0x0e48 ; mov bx, 7 ; int 0x10    ; teletype 'H'
///     mov ax, 0x0e69 ; int 0x10                ; teletype 'i'
///     out 0xf0, al
///     mov ax, 0x1112 ; mov bl, 0 ; int 0x10    ; 8x8 font: 80x50
///     out 0xf5, al
///     mov ax, 0x0012 ; int 0x10                ; 640x480x16
///     mov ax, 0x0c0e ; bh=0 cx=100 dx=50 ; int 0x10   ; write pixel 14
///     mov ah, 0x0d   ; bh=0 cx=100 dx=50 ; int 0x10   ; read it back
///     out 0xf3, ax
///     mov ax, 0x0013 ; int 0x10                ; 320x200x256
///     mov ax, 0x0c0f ; bh=0 cx=200 dx=150 ; int 0x10  ; write pixel 15
///     mov ah, 0x0d   ; bh=0 cx=200 dx=150 ; int 0x10  ; read it back
///     out 0xf4, ax
///     mov ax, 0x4f02 ; mov bx, 0x4118 ; int 0x10  ; VBE 1024x768, LFB
///     out 0xf1, ax                             ; AX = VBE status
///     big real mode for FS (flat 4 GiB data segment)
///     mov dword [fs:0xe0000000 + 0x14028], 0x00123456   ; into the LFB
///     out 0xf2, al
///     hlt
/// ```
const STUB: [u8; 214] = [
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x70, 0x31, 0xff, 0xb9, 0x00,
    0x01, 0xc7, 0x05, 0xbc, 0x7c, 0xc7, 0x45, 0x02, 0x00, 0x00, 0x83, 0xc7, 0x04, 0xe2, 0xf2, 0xb8,
    0x10, 0x00, 0x9a, 0x03, 0x00, 0x00, 0xc0, 0xb8, 0x03, 0x00, 0xcd, 0x10, 0xb8, 0x48, 0x0e, 0xbb,
    0x07, 0x00, 0xcd, 0x10, 0xb8, 0x69, 0x0e, 0xcd, 0x10, 0xe6, 0xf0, 0xb8, 0x12, 0x11, 0xb3, 0x00,
    0xcd, 0x10, 0xe6, 0xf5, 0xb8, 0x12, 0x00, 0xcd, 0x10, 0xb8, 0x0e, 0x0c, 0xb7, 0x00, 0xb9, 0x64,
    0x00, 0xba, 0x32, 0x00, 0xcd, 0x10, 0xb4, 0x0d, 0xb7, 0x00, 0xb9, 0x64, 0x00, 0xba, 0x32, 0x00,
    0xcd, 0x10, 0xe7, 0xf3, 0xb8, 0x13, 0x00, 0xcd, 0x10, 0xb8, 0x0f, 0x0c, 0xb7, 0x00, 0xb9, 0xc8,
    0x00, 0xba, 0x96, 0x00, 0xcd, 0x10, 0xb4, 0x0d, 0xb7, 0x00, 0xb9, 0xc8, 0x00, 0xba, 0x96, 0x00,
    0xcd, 0x10, 0xe7, 0xf4, 0xb8, 0x02, 0x4f, 0xbb, 0x18, 0x41, 0xcd, 0x10, 0xe7, 0xf1, 0xfa, 0x0f,
    0x01, 0x16, 0xd0, 0x7c, 0x0f, 0x20, 0xc0, 0x0c, 0x01, 0x0f, 0x22, 0xc0, 0xeb, 0x00, 0xbb, 0x08,
    0x00, 0x8e, 0xe3, 0x24, 0xfe, 0x0f, 0x22, 0xc0, 0xeb, 0x00, 0x66, 0xbf, 0x28, 0x40, 0x01, 0xe0,
    0x64, 0x66, 0x67, 0xc7, 0x07, 0x56, 0x34, 0x12, 0x00, 0xe6, 0xf2, 0xf4, 0xcf, 0x90, 0x90, 0x90,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00,
    0x0f, 0x00, 0xc0, 0x7c, 0x00, 0x00,
];
/// Byte offset in video memory the guest writes 0x00123456 to.
const LFB_POKE: usize = 0x14028;

/// Writes `fb` as a PPM image into `$VGA_DUMP_DIR/<name>.ppm` when that
/// variable is set (to look at what the BIOS drew).
fn dump(fb: &crate::display::Framebuffer, name: &str) {
    let Ok(dir) = std::env::var("VGA_DUMP_DIR") else {
        return;
    };
    let mut out = format!("P6\n{} {}\n255\n", fb.width, fb.height).into_bytes();
    for px in fb.pixels.chunks_exact(4) {
        out.extend_from_slice(&px[..3]);
    }
    std::fs::write(format!("{dir}/{name}.ppm"), out).unwrap();
}

/// The machine's [`VramMapper`]: a KVM memory slot with dirty logging. A
/// slot cannot move, so a remap deletes it (size 0) and adds it again.
struct KvmVram {
    vm: Arc<VmFd>,
    host: u64,
    current: Mutex<Option<u64>>,
    log: Mutex<Vec<String>>,
}

impl KvmVram {
    fn set_slot(&self, guest_phys_addr: u64, memory_size: u64) {
        let region = kvm_userspace_memory_region {
            slot: VRAM_SLOT,
            flags: KVM_MEM_LOG_DIRTY_PAGES,
            guest_phys_addr,
            memory_size,
            userspace_addr: self.host,
        };
        // SAFETY: the region is the device's own 16 MiB mapping, which
        // outlives the VM in this test.
        let r = unsafe { self.vm.set_user_memory_region(region) };
        self.log
            .lock()
            .unwrap()
            .push(format!("slot {guest_phys_addr:#x}+{memory_size:#x}: {r:?}"));
    }
}

impl VramMapper for KvmVram {
    fn map(&self, guest_addr: Option<u64>) {
        let mut cur = self.current.lock().unwrap();
        if let Some(old) = cur.take() {
            self.set_slot(old, 0);
        }
        if let Some(a) = guest_addr {
            self.set_slot(a, VRAM_SIZE as u64);
            *cur = Some(a);
        }
    }
    fn dirty_pages(&self) -> Option<Vec<u64>> {
        self.vm.get_dirty_log(VRAM_SLOT, VRAM_SIZE).ok()
    }
}

#[test]
fn vga_bios_drives_the_device_under_kvm() {
    let rom = std::fs::read(ROM_PATH).unwrap_or_else(|e| panic!("cannot read {ROM_PATH}: {e}"));
    let kvm = Kvm::new().unwrap_or_else(|e| panic!("this test needs /dev/kvm: {e}"));
    let vm = Arc::new(kvm.create_vm().expect("create VM"));
    let _ = vm.set_tss_address(0xfffb_d000);

    // Low RAM and the ROM area as RAM (a shadowed option ROM is writable
    // during init); 0xA0000-0xBFFFF stays unmapped: MMIO to the device.
    let mem: GuestMemoryMmap<()> = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0xa0000),
        (GuestAddress(0xc0000), 0x40000),
    ])
    .unwrap();
    mem.write_slice(&rom, GuestAddress(0xc0000)).unwrap();
    mem.write_slice(&STUB, GuestAddress(0x7c00)).unwrap();
    for (slot, r) in mem.iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: r.start_addr().0,
            memory_size: r.len(),
            userspace_addr: r.as_ptr() as u64,
        };
        // SAFETY: `mem` outlives the VM.
        unsafe { vm.set_user_memory_region(region) }.unwrap();
    }

    let mut vga = StdVga::new(rom).unwrap();
    let h = vga.handle();
    let mapper = Arc::new(KvmVram {
        vm: vm.clone(),
        host: h.vram_host_addr(),
        current: Mutex::new(None),
        log: Mutex::new(Vec::new()),
    });
    vga.set_mapper(mapper.clone());
    // BAR0 placed and memory decoding on, as the system BIOS leaves it;
    // moved once on the way, as a PCI root would report it.
    assert!(vga.config_write(0x04, &[0x03, 0x00]));
    for addr in [0xd000_0000u32, LFB as u32] {
        assert!(vga.config_write(0x10, &addr.to_le_bytes()));
        let lfb = vga.config().bar_address(BAR_LFB);
        assert_eq!(lfb, Some(addr as u64));
        vga.bar_remapped(BAR_LFB, lfb);
    }

    let (io, mmio) = super::tests::buses(&vga);

    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    for s in [
        &mut sregs.cs,
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.ss,
        &mut sregs.fs,
        &mut sregs.gs,
    ] {
        s.base = 0;
        s.selector = 0;
    }
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0x7c00;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();

    let mut debug = String::new();
    let mut cfg_addr = 0u32;
    let mut stages = Vec::new();
    let started = Instant::now();
    let display = h.display();
    let fail =
        |what: &str, debug: &str| -> ! { panic!("{what}\n--- VGA BIOS debug output ---\n{debug}") };
    loop {
        if started.elapsed() > Duration::from_secs(120) {
            fail("guest did not finish in 120 s", &debug);
        }
        let mut marker = None;
        let exit = vcpu.run().unwrap_or_else(|e| panic!("KVM_RUN: {e}"));
        match exit {
            VcpuExit::IoOut(port, data) => match port {
                0x402 | 0x403 => debug.extend(data.iter().map(|b| *b as char)),
                0xcf8 if data.len() == 4 => cfg_addr = le_value(data) as u32,
                0xcfc..=0xcff => {
                    if cfg_addr & 0x8000_ff00 == 0x8000_1000 {
                        let off = (cfg_addr & 0xfc) as usize + (port - 0xcfc) as usize;
                        if vga.config_write(off, data) {
                            let a = vga.config().bar_address(BAR_LFB);
                            vga.bar_remapped(BAR_LFB, a);
                        }
                    }
                }
                0xf0..=0xf5 => marker = Some((port, le_value(data) as u16)),
                _ => {
                    io.write(port as u64, data);
                }
            },
            VcpuExit::IoIn(port, data) => match port {
                0xcf8 => le_bytes_into(cfg_addr as u64, 0, data),
                0xcfc..=0xcff => {
                    if cfg_addr & 0x8000_ff00 == 0x8000_1000 {
                        let off = (cfg_addr & 0xfc) as usize + (port - 0xcfc) as usize;
                        vga.config_read(off, data);
                    } else {
                        data.fill(0xff);
                    }
                }
                _ => {
                    io.read(port as u64, data);
                }
            },
            VcpuExit::MmioRead(addr, data) => {
                mmio.read(addr, data);
            }
            VcpuExit::MmioWrite(addr, data) => {
                mmio.write(addr, data);
            }
            VcpuExit::Hlt => break,
            other => fail(&format!("unexpected exit {other:?}"), &debug),
        }
        // Check each stage as soon as its marker arrives.
        let Some((port, val)) = marker else {
            continue;
        };
        stages.push(port);
        match port {
            0xf0 if stages.len() == 1 => {
                let text = h.screen_text().unwrap_or_else(|| fail("not text", &debug));
                assert_eq!(text.len(), 25, "{debug}");
                assert!(text[0].starts_with("Hi "), "row 0 {:?}\n{debug}", text[0]);
                assert!(h.render());
                let fb = display.snapshot();
                assert_eq!((fb.width, fb.height), (720, 400));
                dump(&fb, "mode3");
                // 'H' from the BIOS font in plane 2, light grey on black.
                let vram = h.shared.vram.clone();
                let mut lit = 0;
                for line in 0..16u32 {
                    let bits = vram.read_u8((b'H' as usize * 32 + line as usize) * 4 + 2);
                    for x in 0..8u32 {
                        let on = bits & (0x80 >> x) != 0;
                        lit += on as u32;
                        let want = if on {
                            [0xa8, 0xa8, 0xa8, 0xff]
                        } else {
                            [0, 0, 0, 0xff]
                        };
                        // The cursor may be on row 0 col 2, not on 'H'.
                        assert_eq!(fb.pixel(x, line), Some(want), "H line {line} dot {x}");
                    }
                }
                assert!(lit > 10, "the BIOS font has an 'H' ({lit} dots)");
            }
            0xf5 if stages.len() == 2 => {
                let text = h.screen_text().unwrap_or_else(|| fail("not text", &debug));
                assert_eq!(text.len(), 50, "8x8 font gives 50 rows\n{debug}");
                h.render();
                let fb = display.snapshot();
                assert_eq!((fb.width, fb.height), (720, 400));
            }
            0xf3 if stages.len() == 3 => {
                assert_eq!(val & 0xff, 14, "int 10h read pixel in mode 12h\n{debug}");
                assert!(h.screen_text().is_none());
                h.render();
                let fb = display.snapshot();
                dump(&fb, "mode12");
                assert_eq!((fb.width, fb.height), (640, 480));
                assert_eq!(fb.pixel(100, 50), Some([0xff, 0xff, 0x57, 0xff]));
                assert_eq!(fb.pixel(101, 50), Some([0, 0, 0, 0xff]));
                assert_eq!(fb.pixel(100, 51), Some([0, 0, 0, 0xff]));
            }
            0xf4 if stages.len() == 4 => {
                assert_eq!(val & 0xff, 15, "int 10h read pixel in mode 13h\n{debug}");
                h.render();
                let fb = display.snapshot();
                dump(&fb, "mode13");
                assert_eq!((fb.width, fb.height), (320, 200));
                assert_eq!(fb.pixel(200, 150), Some([0xff, 0xff, 0xff, 0xff]));
                assert_eq!(fb.pixel(199, 150), Some([0, 0, 0, 0xff]));
            }
            0xf1 if stages.len() == 5 => {
                assert_eq!(val, 0x004f, "VBE set mode status\n{debug}");
                let st = lock(&h.shared.state);
                assert!(st.vbe.enabled());
                assert_eq!((st.vbe.xres(), st.vbe.yres()), (1024, 768));
                assert_ne!(st.vbe.regs[vbe::INDEX_ENABLE] & vbe::LFB_ENABLED, 0);
                drop(st);
                assert!(h.render());
                let fb = display.snapshot();
                assert_eq!((fb.width, fb.height), (1024, 768));
                // Nothing written since: the dirty log keeps it idle.
                let g = display.generation();
                assert!(!h.render());
                assert_eq!(display.generation(), g);
            }
            0xf2 if stages.len() == 6 => {
                // The guest wrote the LFB through its own KVM slot; only
                // the dirty log can tell.
                assert!(h.render(), "dirty log saw the LFB write");
                let bpp = lock(&h.shared.state).vbe.bpp() as usize / 8;
                let px = LFB_POKE / bpp;
                let fb = display.snapshot();
                dump(&fb, "vbe");
                assert_eq!(
                    fb.pixel((px % 1024) as u32, (px / 1024) as u32),
                    Some([0x12, 0x34, 0x56, 0xff])
                );
            }
            _ => fail(&format!("markers out of order: {stages:x?}"), &debug),
        }
    }
    assert_eq!(
        stages,
        [0xf0, 0xf5, 0xf3, 0xf4, 0xf1, 0xf2],
        "all stages ran\n{debug}"
    );
    let log = mapper.log.lock().unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|l| l.ends_with("Ok(())")), "{log:?}");
}
