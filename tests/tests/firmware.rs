//! SeaBIOS and GRUB, real firmware nobody here wrote, on our PC: boot from
//! the ATAPI CD, PCI enumeration, ISO reads, disk writes through INT 13h
//! and our IDE, boot order, keyboard, ACPI power-off and reset, SMP.
//! Each test is one GRUB run (40-170 s on a PVM host).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vireo_tests::{guest, require_kvm, Console};
use vmm_engine::input::KeyCode;
use vmm_engine::{
    BootOrder, BootSpec, DiskFormat, DiskInterface, DiskSpec, StopReason, Vm, VmSpec,
};

const T: Duration = Duration::from_secs(400);

fn run(spec: VmSpec) -> (Vm, Console) {
    require_kvm();
    let vm = Vm::create(spec).expect("creating the VM");
    let con = Console::new(vm.events());
    vm.start().expect("starting the VM");
    (vm, con)
}

fn cd_spec(iso: PathBuf) -> VmSpec {
    let mut s = VmSpec::firmware();
    s.memory_mib = 128;
    s.cdrom = Some(iso);
    s
}

#[test]
fn grub_boots_from_cd_lists_pci_reads_the_iso_and_halts_with_two_cpus() {
    let dir = vireo_tests::work_dir("basic");
    let mut s = cd_spec(guest("grub", "basic.iso"));
    s.cpus = 2;
    s.firmware_log = Some(dir.join("seabios.log"));
    let (_vm, mut con) = run(s);
    con.wait_for("VIREO-GRUB-OK", T);
    con.wait_for("VIREO-GRUB-END", T);
    for id in ["8086:1237", "8086:7000", "8086:7010", "1234:1111"] {
        assert!(con.text.contains(id), "lspci lacks {id}:\n{}", con.text);
    }
    assert!(con.text.contains("hello from the vireo test iso"));
    // GRUB's halt powers off through our ACPI tables.
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
    let log = std::fs::read_to_string(dir.join("seabios.log")).expect("firmware log");
    assert!(log.contains("Found 2 cpu(s)"), "firmware log:\n{log}");
    assert!(log.contains("Booting from DVD/CD"), "firmware log:\n{log}");
}

#[test]
fn grub_reboot_resets_the_machine() {
    let mut s = cd_spec(guest("grub", "reboot.iso"));
    s.no_reboot = true;
    let (_vm, mut con) = run(s);
    con.wait_for("VIREO-GRUB-REBOOT", T);
    assert_eq!(con.wait_stopped(T), StopReason::Reset);
}

#[test]
fn disk_boots_first_with_boot_order_disk() {
    let dir = vireo_tests::work_dir("bootorder");
    let disk = dir.join("disk.img");
    std::fs::copy(guest("grub", "disk-boot.img"), &disk).expect("copy disk");
    let mut s = cd_spec(guest("grub", "basic.iso"));
    s.disks.push(DiskSpec {
        path: disk,
        format: DiskFormat::Raw,
        interface: DiskInterface::Ide,
        readonly: false,
    });
    if let BootSpec::Firmware(f) = &mut s.boot {
        f.order = BootOrder::DiskFirst;
    }
    let (_vm, mut con) = run(s);
    con.wait_for("VIREO-BOOTED-FROM-DISK", T);
    assert!(!con.text.contains("VIREO-GRUB-OK"));
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
}

#[test]
fn keys_injected_at_the_grub_menu_pick_the_second_entry() {
    let (vm, mut con) = run(cd_spec(guest("grub", "menu.iso")));
    // GRUB draws its menu (also on COM1) and counts down from 20 s.
    con.wait_for("second", T);
    std::thread::sleep(Duration::from_millis(500));
    // Keys travel IRQ 1 -> SeaBIOS's handler -> INT 16h -> GRUB; on PVM
    // hosts interrupt delivery is slow (docs/KEYBOARD.md), so pace them.
    for key in [KeyCode::Down, KeyCode::Enter] {
        vm.key_event(key, true);
        std::thread::sleep(Duration::from_millis(1000));
        vm.key_event(key, false);
        std::thread::sleep(Duration::from_millis(1500));
    }
    // The chosen entry echoes its name and halts.
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
    assert!(
        con.text.contains("PICKED-SECOND"),
        "GRUB picked the wrong entry:\n{}",
        con.text
    );
}

fn mtype_grubenv(raw: &Path) -> String {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1048576", raw.display()))
        .arg("::/grubenv")
        .output()
        .expect("running mtype (Debian package mtools)");
    assert!(
        out.status.success(),
        "mtype failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env_round_trip(format: DiskFormat, interface: DiskInterface) {
    let dir = vireo_tests::work_dir(&format!("env-{format:?}-{interface:?}"));
    let raw = dir.join("env.img");
    std::fs::copy(guest("grub", "env-disk.img"), &raw).expect("copy disk");
    assert!(!mtype_grubenv(&raw).contains("vireo_value=42"));
    let disk = match format {
        DiskFormat::Raw => raw.clone(),
        DiskFormat::Qcow2 => {
            let q = dir.join("env.qcow2");
            let st = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&q)
                .status()
                .expect("qemu-img");
            assert!(st.success());
            q
        }
    };
    let mut s = cd_spec(guest("grub", "env.iso"));
    s.disks.push(DiskSpec {
        path: disk.clone(),
        format,
        interface,
        readonly: false,
    });
    let (vm, mut con) = run(s);
    con.wait_for("VIREO-ENV-SAVED", T);
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
    drop(vm);
    let check_raw = if format == DiskFormat::Qcow2 {
        let out = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&disk)
            .output()
            .expect("qemu-img check");
        assert!(
            out.status.success(),
            "qemu-img check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let back = dir.join("back.img");
        let st = Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&disk)
            .arg(&back)
            .status()
            .expect("qemu-img convert");
        assert!(st.success());
        back
    } else {
        raw
    };
    let env = mtype_grubenv(&check_raw);
    assert!(
        env.contains("vireo_value=42"),
        "grubenv after the run:\n{env}"
    );
}

#[test]
fn grub_save_env_writes_a_raw_ide_disk() {
    env_round_trip(DiskFormat::Raw, DiskInterface::Ide);
}

#[test]
fn grub_save_env_writes_a_qcow2_ide_disk() {
    env_round_trip(DiskFormat::Qcow2, DiskInterface::Ide);
}

/// SeaBIOS's own virtio-blk driver (virtio 1.0 PCI) serves GRUB's INT 13h.
#[test]
fn grub_save_env_writes_a_qcow2_virtio_disk() {
    env_round_trip(DiskFormat::Qcow2, DiskInterface::Virtio);
}

#[test]
fn seabios_boots_grub_from_a_virtio_disk() {
    let dir = vireo_tests::work_dir("virtio-boot");
    let disk = dir.join("disk.img");
    std::fs::copy(guest("grub", "disk-boot.img"), &disk).expect("copy disk");
    let dir_log = dir.join("seabios.log");
    let mut s = VmSpec::firmware();
    s.memory_mib = 128;
    s.firmware_log = Some(dir_log.clone());
    s.disks.push(DiskSpec {
        path: disk,
        format: DiskFormat::Raw,
        interface: DiskInterface::Virtio,
        readonly: false,
    });
    if let BootSpec::Firmware(f) = &mut s.boot {
        f.order = BootOrder::DiskFirst;
    }
    let (_vm, mut con) = run(s);
    // GRUB read its modules and grub.cfg from the disk to print this.
    con.wait_for("VIREO-BOOTED-FROM-DISK", T);
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
    let log = std::fs::read_to_string(dir_log).expect("firmware log");
    assert!(log.contains("found virtio-blk at 00:03.0"), "{log}");
}
