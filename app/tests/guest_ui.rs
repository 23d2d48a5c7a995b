//! The desktop app with a real guest: a VM made in the wizard from a GRUB
//! menu ISO boots to the GRUB menu, which shows in the serial view and on the
//! console's framebuffer; both views are compared with PNG references
//! (tests/snapshots/guest_*.png, `UPDATE_SNAPSHOTS=1` rewrites them); keys
//! typed in the VM window move the menu selection. Needs /dev/kvm; one GRUB
//! boot (minutes on PVM hosts).

mod common;

use common::*;
use std::time::{Duration, Instant};
use vireo::connection::EngineConnection;
use vireo::gui::App;
use vireo::library::{Library, Paths};
use vireo::ui::vm_window::{Tab, VmWindow};

fn serial_text(h: &egui_kittest::Harness<'_, App>, vm: &str) -> String {
    h.state()
        .model
        .runtime
        .get(vm)
        .map(|r| r.terminal.text())
        .unwrap_or_default()
}

/// Runs the UI until `pred` holds or the time is up.
fn run_until(
    h: &mut egui_kittest::Harness<'_, App>,
    limit: Duration,
    mut pred: impl FnMut(&egui_kittest::Harness<'_, App>) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        settle(h);
        if pred(h) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn wizard_vm_reaches_the_grub_menu_and_window_keys_move_it() {
    require_kvm();
    let t = tempfile::tempdir().unwrap();
    let p = test_paths(t.path());
    let conn = EngineConnection::new(Library::new(p.vms_dir()));
    let app = App::with_connection(Box::new(conn), host(), p.clone());
    let mut h = harness(app, [1100.0, 800.0]);
    wizard_new_iso_vm(&mut h, &still_menu_iso(), "menu");
    assert!(
        h.state().windows.iter().any(|w| w.vm == "menu"),
        "the VM window opened"
    );

    // GRUB's menu, drawn on COM1 too, reaches the serial view.
    let shown = run_until(&mut h, Duration::from_secs(900), |h| {
        serial_text(h, "menu").contains("second")
    });
    assert!(
        shown,
        "no GRUB menu in the serial view:\n{}",
        serial_text(&h, "menu")
    );
    // ... and the framebuffer: the console uploaded the guest's text screen.
    let fb = h.state().model.conn.console("menu").expect("a frame");
    assert_eq!((fb.width, fb.height), (720, 400), "text mode 80x25");
    let first = &fb.pixels[0..4];
    assert!(
        fb.pixels.chunks_exact(4).filter(|px| *px != first).count() > 1000,
        "the console frame is blank"
    );
    assert!(h
        .state()
        .windows
        .iter()
        .any(|w| w.vm == "menu" && w.console.uploads > 0));

    // Once the screen and the serial output have been still for a while,
    // the VM window is drawn on its own and compared with the references.
    let mut last = (0u64, String::new());
    let mut still = 0;
    while still < 3 {
        std::thread::sleep(Duration::from_secs(1));
        settle(&mut h);
        let now = (
            h.state()
                .model
                .conn
                .console("menu")
                .map_or(0, |f| f.generation),
            serial_text(&h, "menu"),
        );
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    snapshot_vm_window(&mut h, "menu");

    // Keys typed into the VM window reach the guest through PS/2.
    click(&mut h, "Console screen");
    h.key_press(egui::Key::ArrowDown);
    settle(&mut h);
    std::thread::sleep(Duration::from_secs(3));
    h.key_press(egui::Key::Enter);
    settle(&mut h);
    let picked = run_until(&mut h, Duration::from_secs(300), |h| {
        let t = serial_text(h, "menu");
        t.contains("PICKED-SECOND") || t.contains("PICKED-FIRST")
    });
    let text = serial_text(&h, "menu");
    assert!(
        picked && text.contains("PICKED-SECOND"),
        "GRUB did not take the keys:\n{text}"
    );
}

/// Takes the app out of `h`, draws only the VM window's contents (toolbar,
/// view, status line) for the Console and the Serial view, snapshots each,
/// and puts the app back.
fn snapshot_vm_window(h: &mut egui_kittest::Harness<'_, App>, vm: &str) {
    let placeholder = App::with_connection(
        Box::new(vireo::connection::MemoryConnection::default()),
        host(),
        Paths {
            config: "/nonexistent".into(),
            data: "/nonexistent".into(),
        },
    );
    let mut app = std::mem::replace(h.state_mut(), placeholder);
    let windows = std::mem::take(&mut app.windows);
    // A fresh window: its textures must be uploaded to the new context.
    app.windows = vec![VmWindow::new(vm)];
    let mut s = egui_kittest::Harness::builder()
        .with_size([760.0, 500.0])
        .with_render_cursor(false)
        .build_ui_state(
            |ui, app: &mut App| {
                let App { model, windows, .. } = app;
                model.poll(Instant::now());
                windows[0].show_inside(ui, model);
            },
            app,
        );
    s.run_steps(4);
    assert!(s.state().windows[0].console.uploads > 0, "no frame drawn");
    s.snapshot("guest_console_grub_menu");
    s.state_mut().windows[0].tab = Tab::Serial;
    s.run_steps(4);
    s.snapshot("guest_serial_grub_menu");
    let mut app = s.into_state();
    app.windows = windows;
    *h.state_mut() = app;
}
