//! Helpers shared by the UI tests.
#![allow(dead_code)]

use egui_kittest::kittest::Queryable as _;
use egui_kittest::Harness;
use std::path::{Path, PathBuf};
use std::process::Command;
use vireo::gui::App;
use vireo::model::HostInfo;

/// A fixed host, so the pages and messages are the same everywhere.
pub fn host() -> HostInfo {
    HostInfo {
        limits: vmm_engine::HostLimits {
            memory_mib: Some(16384),
            max_vcpus: Some(8),
            kvm_unusable: None,
        },
        bridges: vec!["br0".into(), "virbr0".into()],
    }
}

/// Makes a tiny ISO9660 image with xorriso.
pub fn make_iso(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README.TXT"), b"vireo test media\n").unwrap();
    let iso = dir.join(name);
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "VIREOTEST", "-o"])
        .arg(&iso)
        .arg(&src)
        .output()
        .expect("xorriso must be installed for the UI tests");
    assert!(out.status.success(), "xorriso failed: {out:?}");
    iso
}

pub fn harness(app: App, size: [f32; 2]) -> Harness<'static, App> {
    let mut h = Harness::builder()
        .with_size(size)
        .with_render_cursor(false)
        .build_ui_state(|ui, app: &mut App| app.ui(ui), app);
    h.run();
    h
}

/// Replaces the text of the field labelled `label`, as a person would:
/// click it, select all, type.
pub fn set_text(h: &mut Harness<'_, App>, label: &str, text: &str) {
    h.get_by_label(label).click();
    settle(h);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    settle(h);
    if text.is_empty() {
        h.key_press(egui::Key::Backspace);
    } else {
        h.get_by_label(label).type_text(text);
    }
    settle(h);
}

pub fn click(h: &mut Harness<'_, App>, label: &str) {
    h.get_by_label(label).click();
    settle(h);
}

/// Lets the UI process input for a fixed number of frames. (A running
/// guest keeps asking for repaints as it prints, so "run until idle" would
/// never settle.)
pub fn settle(h: &mut Harness<'_, App>) {
    h.run_steps(6);
}

/// True when some node's label contains `text`.
pub fn shows(h: &Harness<'_, App>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

/// Draws frames (a few milliseconds apart) until `done` holds; panics with
/// `what` after `timeout`. For things that happen on engine threads.
pub fn step_until(
    h: &mut Harness<'_, App>,
    what: &str,
    timeout: std::time::Duration,
    done: impl Fn(&Harness<'_, App>) -> bool,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !done(h) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        h.run_steps(1);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where assets/guests/build.sh puts the guests.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("VIREO_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/guests"))
}

/// A guest from one of the project's sets (`tiny`, `grub`), built (or
/// found up to date) by assets/guests/build.sh unless
/// VIREO_GUESTS_PREBUILT is set.
pub fn guest(set: &str, name: &str) -> PathBuf {
    if std::env::var_os("VIREO_GUESTS_PREBUILT").is_none() {
        let st = Command::new("bash")
            .arg(repo_root().join("assets/guests/build.sh"))
            .arg(set)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running assets/guests/build.sh");
        assert!(st.success(), "building the {set} guests failed");
    }
    guest_dir().join(set).join(name)
}

/// The GRUB menu the app's guest tests boot: two entries, drawn on COM1
/// and the VGA, waiting for a key (`timeout=-1`) so the screen stays still
/// and can be compared with a reference picture.
const STILL_MENU_CFG: &str = r#"serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=-1
set default=0
menuentry "first" {
	echo PICKED-FIRST
	halt
}
menuentry "second" {
	echo PICKED-SECOND
	halt
}
"#;

/// Builds the still-menu ISO with `build.sh grub-iso` (cached).
pub fn still_menu_iso() -> PathBuf {
    let dir = guest_dir().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("menu-still.cfg");
    std::fs::write(&cfg, STILL_MENU_CFG).unwrap();
    let iso = dir.join("menu-still.iso");
    let st = Command::new("bash")
        .arg(repo_root().join("assets/guests/build.sh"))
        .arg("grub-iso")
        .arg(&iso)
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running assets/guests/build.sh");
    assert!(st.success(), "building the GRUB menu ISO failed");
    iso
}

/// Fails loudly where there is no usable /dev/kvm.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("this test needs /dev/kvm ({e}); run on a host with KVM");
    }
}

/// A temporary XDG tree for the library and the disk images.
pub fn test_paths(root: &Path) -> vireo::library::Paths {
    vireo::library::Paths {
        config: root.join("config/vireo"),
        data: root.join("data/vireo"),
    }
}

/// Walks the New VM wizard as a person would: install from `iso`, 128 MiB,
/// a new 1 GiB disk (the default format, qcow2), the given name, Finish.
pub fn wizard_new_iso_vm(h: &mut Harness<'_, App>, iso: &Path, name: &str) {
    click(h, "New");
    set_text(h, "ISO image path", &iso.to_string_lossy());
    click(h, "Forward");
    set_text(h, "Memory (MiB)", "128");
    click(h, "Forward");
    set_text(h, "Size (GiB)", "1");
    click(h, "Forward");
    set_text(h, "Name", name);
    click(h, "Forward");
    click(h, "Finish");
}
