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
        memory_mib: 16384,
        cpus: 8,
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
