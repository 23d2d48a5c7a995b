//! Linux guests: Debian's kernel with the busybox initramfs
//! (assets/guests/linux). They need hardware-assisted KVM (VT-x/AMD-V): on
//! PVM hosts such as our CI they are ignored, and if forced with
//! `--ignored` there they fail with "NOT RUN", never pass empty.
//!
//! Run them with:
//!     cargo test -p vireo-tests --test linux_guests -- --ignored --test-threads 1

use std::time::{Duration, Instant};

use vireo_tests::{guest, require_hardware_kvm, require_kvm, Console};
use vmm_engine::{BootSpec, StopReason, Vm, VmSpec};

const T: Duration = Duration::from_secs(120);

fn linux_spec(cmdline: &str, cpus: u32) -> VmSpec {
    let mut s = VmSpec::linux(guest("linux", "vmlinuz"));
    s.memory_mib = 512;
    s.cpus = cpus;
    if let BootSpec::Linux(l) = &mut s.boot {
        l.initrd = Some(guest("linux", "initramfs.img"));
        l.cmdline = cmdline.to_string();
    }
    s
}

#[test]
#[ignore = "needs hardware KVM (VT-x/AMD-V); run: cargo test -p vireo-tests --test linux_guests -- --ignored"]
fn linux_boots_with_two_cpus_and_answers_the_shell() {
    require_kvm();
    require_hardware_kvm();
    let started = Instant::now();
    let vm = Vm::create(linux_spec("console=ttyS0 quiet", 2)).expect("create");
    let mut con = Console::new(vm.events());
    vm.start().expect("start");
    con.wait_for("VIREO-LINUX-UP cpus=2", T);
    eprintln!("Linux reached its marker in {:?}", started.elapsed());
    let at = con.text.len();
    vm.serial_input(b"echo answer=$((6*7))\n");
    con.wait_for_from("answer=42", at, T);
    vm.serial_input(b"poweroff -f\n");
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
}

#[test]
#[ignore = "needs hardware KVM (VT-x/AMD-V); run: cargo test -p vireo-tests --test linux_guests -- --ignored"]
fn linux_poweroff_from_the_command_line_ends_the_vm() {
    require_kvm();
    require_hardware_kvm();
    let vm = Vm::create(linux_spec("console=ttyS0 quiet vireo.poweroff=1", 1)).expect("create");
    let mut con = Console::new(vm.events());
    vm.start().expect("start");
    con.wait_for("VIREO-LINUX-UP cpus=1", T);
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
}

#[test]
#[ignore = "needs hardware KVM (VT-x/AMD-V); run: cargo test -p vireo-tests --test linux_guests -- --ignored"]
fn linux_iso_boots_through_seabios_from_the_cdrom() {
    require_kvm();
    require_hardware_kvm();
    let mut s = VmSpec::firmware();
    s.memory_mib = 512;
    s.cdrom = Some(guest("linux", "linux.iso"));
    let dir = vireo_tests::work_dir("linux-iso");
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    s.disks.push(vmm_engine::DiskSpec {
        path: disk.clone(),
        format: vmm_engine::DiskFormat::Raw,
        interface: vmm_engine::DiskInterface::Ide,
        readonly: false,
    });
    let vm = Vm::create(s).expect("create");
    let mut con = Console::new(vm.events());
    vm.start().expect("start");
    con.wait_for("VIREO-LINUX-UP cpus=1", Duration::from_secs(300));
    let at = con.text.len();
    // The CD is readable from Linux: mount it and read a file byte-exact.
    vm.serial_input(b"mkdir -p /mnt && mount -t iso9660 /dev/sr0 /mnt && md5sum /mnt/vmlinuz\n");
    con.wait_for_from("/mnt/vmlinuz", at, T);
    let want = md5_hex(&std::fs::read(guest("linux", "vmlinuz")).expect("read vmlinuz"));
    assert!(
        con.text[at..].contains(&want),
        "md5 of the kernel read through sr0 differs; output:\n{}",
        &con.text[at..]
    );
    // Linux writes a pattern to the IDE disk; the host finds it in the image.
    let at = con.text.len();
    vm.serial_input(b"echo VIREO-DISK-PATTERN-7f3a | dd of=/dev/sda bs=512 seek=2048 conv=fsync && echo WROTE-$((40+2))\n");
    con.wait_for_from("WROTE-42", at, T);
    vm.serial_input(b"poweroff -f\n");
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
    let image = std::fs::read(&disk).unwrap();
    let want = b"VIREO-DISK-PATTERN-7f3a";
    assert_eq!(&image[2048 * 512..2048 * 512 + want.len()], want);
}

fn md5_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(data)?;
            c.wait_with_output()
        })
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs hardware KVM (VT-x/AMD-V); run: cargo test -p vireo-tests --test linux_guests -- --ignored"]
fn linux_bochs_drm_switches_to_a_graphical_console() {
    require_kvm();
    require_hardware_kvm();
    // console=tty0 last: the kernel console (and the init's marker) is on
    // the VGA; bochs-drm takes the std VGA over and fbcon draws text.
    let vm = Vm::create(linux_spec("console=ttyS0 console=tty0", 1)).expect("create");
    let mut con = Console::new(vm.events());
    vm.start().expect("start");
    con.wait_for("VIREO-LINUX-UP", T);
    // Wait for a graphical mode: bigger than the 720x400 text screen.
    let deadline = Instant::now() + T;
    let fb = loop {
        let fb = vm.display().snapshot();
        if fb.width >= 800 && fb.height >= 600 {
            break fb;
        }
        assert!(
            Instant::now() < deadline,
            "still {}x{} after the marker",
            fb.width,
            fb.height
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(fb.pixels.len(), (fb.width * fb.height * 4) as usize);
    // fbcon printed text: some pixels differ from the background.
    let first = &fb.pixels[0..4];
    let lit = fb.pixels.chunks_exact(4).filter(|p| *p != first).count();
    assert!(
        lit > 1000,
        "the {}x{} console shows no text",
        fb.width,
        fb.height
    );
    let dir = vireo_tests::work_dir("bochs");
    fb.save_png(&dir.join("bochs-console.png"))
        .expect("screenshot");
    vm.serial_input(b"poweroff -f\n");
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
}
