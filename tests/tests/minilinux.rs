//! Kernel-level device tests with a real Linux driver on the other side of
//! each device: the minimal kernel from `assets/guests/build.sh minilinux`
//! (Debian's linux-source-6.1, tinyconfig + assets/guests/minilinux/config)
//! boots here under kvm_pvm and on hardware KVM alike. There is no userspace:
//! `root=/dev/vdz rootwait` keeps the kernel alive (interrupts, timers and
//! the network stack running) while it waits for a root that never comes,
//! and every check reads the kernel log on COM1.
//!
//! As few boots as possible, each checking many things:
//! - `pvh_kernel_sees_every_device`: vmlinux through the PVH entry, with
//!   partitioned virtio-blk disks (raw and qcow2), an IDE disk and CD, ACPI,
//!   the power button, and virtio-net in a network namespace the test makes
//!   (the namespace pings the kernel);
//! - `bzimage_boots_two_cpus_from_an_iso_root`: the bzImage through the
//!   64-bit boot protocol with `--cpus 2`; the kernel mounts the IDE CD's
//!   ISO 9660 as its root.
//!
//! Each boot takes minutes here (every supervisor instruction is emulated);
//! the timeouts are generous limits, never expectations.
//!
//!     assets/guests/build.sh minilinux      # once; 15-30 min, then cached
//!     cargo test -p vireo-tests --test minilinux -- --ignored
//!
//! Status (2026-12-04): both are ignored. On this kvm_pvm the guest kernel
//! sees POPCNT and XSAVE although Vireo's CPUID table (KVM's supported
//! CPUID) has neither, and dies on the first `popcnt` (hweight) or `xrstor`
//! in KVM's emulator; see docs/LINUX-ON-PVM.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vireo_tests::{guest, require_kvm, work_dir, Console, Netns};
use vmm_engine::{BootSpec, DiskFormat, DiskInterface, DiskSpec, NicSpec, Vm, VmSpec};

/// A generous limit for each marker (a boot here takes 1-3 minutes).
const T: Duration = Duration::from_secs(900);

/// The kernel image from the recipe, built (or taken from the cache) by
/// build.sh; a missing or failed build fails loudly with its output.
fn kernel(name: &str) -> PathBuf {
    let p = guest("minilinux", name);
    assert!(
        p.metadata().map(|m| m.len() > 0).unwrap_or(false),
        "{} is missing or empty: run assets/guests/build.sh minilinux",
        p.display()
    );
    p
}

/// A 16 MiB raw disk with an MBR holding two Linux partitions.
fn partitioned_disk(path: &Path) {
    let mut img = vec![0u8; 16 << 20];
    // (first LBA, sectors) of partitions 1 and 2, type 0x83.
    for (i, (start, count)) in [(2048u32, 8192u32), (10240, 20480)].iter().enumerate() {
        let e = 0x1be + 16 * i;
        img[e + 1..e + 4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        img[e + 4] = 0x83;
        img[e + 5..e + 8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        img[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
        img[e + 12..e + 16].copy_from_slice(&count.to_le_bytes());
    }
    img[0x1b8..0x1bc].copy_from_slice(b"VIRE");
    img[510] = 0x55;
    img[511] = 0xaa;
    std::fs::write(path, img).expect("writing a test disk");
}

fn qcow2_of(raw: &Path, out: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out)
        .status()
        .expect("qemu-img (Debian package qemu-utils)");
    assert!(st.success(), "qemu-img convert failed");
}

/// A small ISO 9660 image with one file.
fn iso(dir: &Path) -> PathBuf {
    let tree = dir.join("iso-tree");
    std::fs::create_dir_all(&tree).expect("iso tree");
    std::fs::write(tree.join("hello.txt"), "minilinux\n").expect("iso file");
    let out = dir.join("root.iso");
    let st = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "VIREOISO", "-o"])
        .arg(&out)
        .arg(&tree)
        .status()
        .expect("xorriso (Debian package xorriso)");
    assert!(st.success(), "xorriso failed");
    out
}

fn disk(path: &Path, format: DiskFormat, interface: DiskInterface) -> DiskSpec {
    DiskSpec {
        path: path.into(),
        format,
        interface,
        readonly: false,
    }
}

/// Prints how long the boot took to reach `marker` (for CI accounting).
fn report(test: &str, marker: &str, start: Instant) {
    eprintln!(
        "{test}: {marker:?} after {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "fails on kvm_pvm: the guest sees host CPUID bits Vireo hides (POPCNT, XSAVE), see docs/LINUX-ON-PVM.md; run: cargo test -p vireo-tests --test minilinux -- --ignored"]
fn pvh_kernel_sees_every_device() {
    require_kvm();
    let vmlinux = kernel("vmlinux");
    let dir = work_dir("minilinux-pvh");
    let raw = dir.join("disk.raw");
    partitioned_disk(&raw);
    let qcow = dir.join("disk.qcow2");
    qcow2_of(&raw, &qcow);
    let ide = dir.join("ide.raw");
    partitioned_disk(&ide);
    let cd = iso(&dir);

    let mut spec = VmSpec::linux(&vmlinux);
    spec.name = "minilinux-pvh".into();
    spec.memory_mib = 128;
    spec.cpus = 1;
    if let BootSpec::Linux(l) = &mut spec.boot {
        // loglevel=8: evbug logs input events (the power button's) at
        // KERN_DEBUG.
        l.cmdline = "console=ttyS0 noxsave loglevel=8 root=/dev/vdz rootwait \
                     ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off"
            .into();
    }
    spec.disks = vec![
        disk(&raw, DiskFormat::Raw, DiskInterface::Virtio),
        disk(&qcow, DiskFormat::Qcow2, DiskInterface::Virtio),
        disk(&ide, DiskFormat::Raw, DiskInterface::Ide),
    ];
    spec.cdrom = Some(cd);
    spec.nics.push(NicSpec {
        bridge: "br100".into(),
        mac: "52:54:00:00:00:02".into(),
    });

    let ns = Netns::create("vireo-mini");
    let start = Instant::now();
    let vm = ns.run(move || {
        let vm = Vm::create(spec).expect("create VM");
        vm.start().expect("start VM");
        vm
    });
    let mut con = Console::new(vm.events());
    let t = "pvh_kernel_sees_every_device";
    con.wait_for("Command line: console=ttyS0", T);
    report(t, "command line", start);
    // ACPI: Vireo's tables are found and the power button is registered.
    con.wait_for("ACPI: Power Button [PWRF]", T);
    report(t, "ACPI power button", start);
    // virtio-blk: both partition tables, from raw and from qcow2.
    con.wait_for(" vda: vda1 vda2", T);
    con.wait_for(" vdb: vdb1 vdb2", T);
    report(t, "vda, vdb", start);
    // PIIX IDE: the ATA disk (its partitions too) and the ATAPI CD.
    con.wait_for("ata1.00: ATA-", T);
    con.wait_for(" sda: sda1 sda2", T);
    con.wait_for("sr 1:0:0:0: [sr0]", T);
    report(t, "sda, sr0", start);
    // virtio-net: the kernel's ip= configured eth0, and it answers pings.
    con.wait_for("IP-Config: Complete:", T);
    report(t, "IP-Config", start);
    con.wait_for("Waiting for root device /dev/vdz", T);
    report(t, "waiting for root", start);
    let answered = ns.ping("10.0.0.2", 3, 5);
    assert_eq!(answered, 3, "the kernel answered {answered} of 3 pings");
    // The power button reaches the kernel's input layer (KEY_POWER = 116).
    let at = con.text.len();
    vm.power_button();
    con.wait_for_from("Type: 1, Code: 116, Value: 1", at, T);

    let log = con.text.clone();
    // Interrupts: the legacy ones and the PCI INTx from Vireo's _PRT.
    assert!(log.contains("ttyS0 at I/O 0x3f8 (irq = 4"), "{log}");
    assert!(
        log.contains("irq 14") && log.contains("irq 15"),
        "IDE irqs: {log}"
    );
    assert!(
        log.contains("PCI: Using ACPI for IRQ routing"),
        "PCI INTx not routed through ACPI: {log}"
    );
    // No ACPI errors or firmware bugs, no oops.
    for bad in [
        "ACPI Error",
        "ACPI BIOS Error",
        "[Firmware Bug]",
        "Oops",
        "BUG:",
    ] {
        assert!(!log.contains(bad), "kernel log has {bad:?}:\n{log}");
    }
    vm.power_off();
    eprintln!("{t}: kernel log:\n{log}");
}

#[test]
#[ignore = "fails on kvm_pvm: the guest sees host CPUID bits Vireo hides (POPCNT, XSAVE), see docs/LINUX-ON-PVM.md; run: cargo test -p vireo-tests --test minilinux -- --ignored"]
fn bzimage_boots_two_cpus_from_an_iso_root() {
    require_kvm();
    let bz = kernel("bzImage");
    let dir = work_dir("minilinux-smp");
    let cd = iso(&dir);
    let mut spec = VmSpec::linux(&bz);
    spec.name = "minilinux-smp".into();
    spec.memory_mib = 128;
    spec.cpus = 2;
    if let BootSpec::Linux(l) = &mut spec.boot {
        l.cmdline = "console=ttyS0 noxsave root=/dev/sr0 rootfstype=iso9660".into();
    }
    spec.cdrom = Some(cd);
    let start = Instant::now();
    let vm = Vm::create(spec).expect("create VM");
    vm.start().expect("start VM");
    let mut con = Console::new(vm.events());
    let t = "bzimage_boots_two_cpus_from_an_iso_root";
    con.wait_for("smp: Brought up 1 node, 2 CPUs", T);
    report(t, "2 CPUs", start);
    con.wait_for("VFS: Mounted root (iso9660 filesystem)", T);
    report(t, "iso9660 root", start);
    let log = con.text.clone();
    for bad in ["ACPI Error", "Oops", "BUG:"] {
        assert!(!log.contains(bad), "kernel log has {bad:?}:\n{log}");
    }
    vm.power_off();
}
