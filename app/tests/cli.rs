//! The headless CLI (`vireo run`), driven as a user would: exit statuses,
//! error messages for bad input, and a real guest's power-off and reset.

mod common;

use common::{guest, require_kvm};
use std::process::{Command, Output, Stdio};

fn vireo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vireo"))
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Boots the tiny boot-protocol guest (64 MiB) with `append` as its
/// command line and `extra` flags; returns the output.
fn run_tiny(append: &str, extra: &[&str]) -> Output {
    let k = guest("tiny", "bootproto.bin");
    let mut args = vec![
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--append",
        append,
        "-m",
        "64",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// Runs vireo with no stdin; returns its output.
fn run(args: &[&str]) -> Output {
    vireo()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running vireo")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bad-input run: status 2, one clear line on stderr containing `want`.
fn expect_usage_error(args: &[&str], want: &str) {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "args {args:?}: stderr {err}");
    assert!(
        err.contains(want),
        "args {args:?}: expected {want:?} in {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn help_documents_every_flag() {
    let o = run(&["run", "--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--append",
        "--cdrom",
        "--disk",
        "--nic",
        "--boot",
        "--bios",
        "--firmware-log",
        "--memory",
        "--cpus",
        "--no-reboot",
    ] {
        assert!(
            text.contains(flag),
            "vireo run --help lacks {flag}:\n{text}"
        );
    }
    let o = run(&["--help"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("run"));
}

#[test]
fn bad_kernel_inputs_are_refused_with_status_2() {
    let d = tmp();
    let junk = d.path().join("junk");
    std::fs::write(&junk, vec![0u8; 8192]).unwrap();
    let junk = junk.to_str().unwrap();
    expect_usage_error(
        &["run", "--kernel", "/nonexistent/vmlinuz"],
        "--kernel /nonexistent/vmlinuz",
    );
    require_kvm();
    expect_usage_error(
        &["run", "--kernel", junk, "-m", "64"],
        "is not a Linux kernel",
    );
    let k = guest("tiny", "bootproto.bin");
    let k = k.to_str().unwrap();
    let big = d.path().join("big-initrd");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    expect_usage_error(
        &[
            "run",
            "--kernel",
            k,
            "--initrd",
            big.to_str().unwrap(),
            "-m",
            "32",
        ],
        "does not fit",
    );
}

#[test]
fn bad_memory_and_cpu_counts_are_refused() {
    require_kvm();
    let k = guest("tiny", "bootproto.bin");
    let k = k.to_str().unwrap();
    expect_usage_error(&["run", "--kernel", k, "--memory", "0"], "at least 1 MiB");
    expect_usage_error(
        &["run", "--kernel", k, "--memory", "100000000"],
        "more than this host has",
    );
    expect_usage_error(&["run", "--kernel", k, "--cpus", "0"], "at least 1 CPU");
    expect_usage_error(
        &["run", "--kernel", k, "--cpus", "100000"],
        "more than KVM allows",
    );
}

#[test]
fn missing_kvm_is_explained() {
    let k = guest("tiny", "bootproto.bin");
    let o = vireo()
        .args(["run", "--kernel", k.to_str().unwrap()])
        .env("VIREO_KVM_DEVICE", "/nonexistent/kvm")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("cannot use /dev/kvm") && err.contains("kvm group"),
        "{err}"
    );
}

#[test]
fn bad_media_and_disks_are_refused() {
    require_kvm();
    let d = tmp();
    let not_iso = d.path().join("not.iso");
    std::fs::write(&not_iso, vec![7u8; 64 << 10]).unwrap();
    expect_usage_error(
        &["run", "--cdrom", not_iso.to_str().unwrap()],
        "not an ISO 9660 image",
    );
    expect_usage_error(&["run", "--cdrom", "/nonexistent.iso"], "/nonexistent.iso");
    // A corrupt qcow2: the magic, then garbage.
    let bad = d.path().join("bad.qcow2");
    let mut b = b"QFI\xfb".to_vec();
    b.extend(vec![0xee; 4096]);
    std::fs::write(&bad, b).unwrap();
    let iso = guest("grub", "basic.iso");
    let iso = iso.to_str().unwrap();
    let spec = format!("{},format=qcow2", bad.display());
    expect_usage_error(&["run", "--cdrom", iso, "--disk", &spec], "qcow2");
    expect_usage_error(
        &["run", "--cdrom", iso, "--disk", "/nonexistent.img"],
        "/nonexistent.img",
    );
    // A disk another VM holds.
    let held = d.path().join("held.img");
    std::fs::File::create(&held)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let _lock =
        vmm_engine::testing::block::open(&held, vmm_engine::DiskFormat::Raw, false).unwrap();
    expect_usage_error(
        &["run", "--cdrom", iso, "--disk", held.to_str().unwrap()],
        "in use",
    );
}

#[test]
fn guest_power_off_exits_0_and_prints_the_serial_console() {
    require_kvm();
    let o = run_tiny("noecho action=poweroff", &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(
        out.contains("VIREO-TINY boot") && out.contains("e820 end"),
        "{out}"
    );
}

#[test]
fn reset_with_no_reboot_exits_0() {
    require_kvm();
    let o = run_tiny("noecho action=reset", &["--no-reboot"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("VIREO-TINY boot")
            .count(),
        1
    );
}

#[test]
fn stdin_reaches_the_guest_and_ctrl_a_x_quits() {
    require_kvm();
    use std::io::Write;
    let k = guest("tiny", "bootproto.bin");
    let mut child = vireo()
        .args([
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--append",
            "action=halt",
            "-m",
            "64",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    stdin.write_all(b"typed by a test.").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    stdin.write_all(&[0x01, b'x']).unwrap();
    stdin.flush().unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    assert!(out.contains("typed by a test.\nDONE"), "{out}");
}

#[test]
fn a_fatal_guest_fault_exits_1_with_a_register_report() {
    require_kvm();
    let o = run_tiny("noecho action=fault", &[]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("emulation failure"), "{err}");
    assert!(err.contains("RIP=00000000d0000000"), "{err}");
    assert_eq!(err.matches("guest fault").count(), 1, "{err}");
}
