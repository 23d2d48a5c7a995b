//! The New VM wizard and the main window, clicked through by label as a
//! person would (egui_kittest). These tests run no guest: they use the
//! in-memory connection, or the engine connection with a temporary library.

mod common;

use common::*;
use egui_kittest::kittest::Queryable as _;
use std::path::PathBuf;
use std::time::Duration;
use vireo::connection::{EngineConnection, MemoryConnection, RunState};
use vireo::gui::App;
use vireo::library::{Library, VmDefinition};

fn def(name: &str, disk: Option<PathBuf>) -> VmDefinition {
    let mut spec = vmm_engine::VmSpec::firmware();
    spec.name = name.into();
    spec.memory_mib = 512;
    let mut d = VmDefinition::new(spec);
    if let Some(p) = disk {
        d.spec.disks.push(vmm_engine::DiskSpec {
            path: p.clone(),
            format: vmm_engine::DiskFormat::Raw,
            interface: vmm_engine::DiskInterface::Ide,
            readonly: false,
        });
        d.owned_disks.push(p);
    }
    d
}

fn step(h: &egui_kittest::Harness<'_, App>, n: usize) -> bool {
    shows(h, &format!("Step {n} of 5"))
}

#[test]
fn each_bad_input_gets_its_message_and_finish_creates_the_vm() {
    let t = tempfile::tempdir().unwrap();
    let conn = MemoryConnection::default();
    conn.lock().add(def("taken", None), RunState::Off);
    let app = App::with_connection(Box::new(conn.clone()), host(), test_paths(t.path()));
    let mut h = harness(app, [1000.0, 700.0]);

    click(&mut h, "New");
    assert!(step(&h, 1), "the wizard opens on step 1");
    assert!(
        !shows(&h, "Enter the path of the ISO image"),
        "no error before the user touched the field"
    );
    set_text(&mut h, "ISO image path", "x");
    set_text(&mut h, "ISO image path", "");
    assert!(
        shows(&h, "Enter the path of the ISO image, or use Browse…"),
        "an emptied field says what it needs"
    );
    assert!(!shows(&h, "Browse…."), "one full stop");

    // Page 1: install media.
    set_text(&mut h, "ISO image path", "/nonexistent/missing.iso");
    assert!(shows(
        &h,
        "/nonexistent/missing.iso: No such file or directory"
    ));
    click(&mut h, "Forward");
    assert!(step(&h, 1), "Forward must not leave a page with an error");

    let not_iso = t.path().join("notes.iso");
    std::fs::write(&not_iso, vec![b'x'; 40000]).unwrap();
    set_text(&mut h, "ISO image path", not_iso.to_str().unwrap());
    assert!(shows(&h, "not an ISO 9660 image"));

    let iso = make_iso(t.path(), "media.iso");
    set_text(&mut h, "ISO image path", iso.to_str().unwrap());
    assert!(!shows(&h, "not an ISO 9660 image"));
    assert!(!shows(&h, "No such file"));
    click(&mut h, "Forward");
    assert!(step(&h, 2));

    // Page 2: memory and CPUs.
    set_text(&mut h, "Memory (MiB)", "0");
    assert!(shows(&h, "Memory must be at least 1 MiB."));
    // The engine's rule, which the wizard used to let through.
    set_text(&mut h, "Memory (MiB)", "1");
    assert!(shows(&h, "Memory of 1 MiB is too small to boot anything."));
    set_text(&mut h, "Memory (MiB)", "99999");
    assert!(shows(&h, "more than this host has (16384 MiB)"));
    set_text(&mut h, "Memory (MiB)", "512");
    set_text(&mut h, "CPUs", "9");
    assert!(shows(&h, "9 CPUs is more than KVM allows here (8)."));
    click(&mut h, "Forward");
    assert!(step(&h, 2));
    set_text(&mut h, "CPUs", "2");
    click(&mut h, "Forward");
    assert!(step(&h, 3));

    // Page 3: storage.
    set_text(&mut h, "Size (GiB)", "1");
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("disk.qcow2");
    set_text(&mut h, "Disk image path", bad.to_str().unwrap());
    assert!(shows(&h, "Can't write the disk image"));
    click(&mut h, "Forward");
    assert!(step(&h, 3));
    let disk = t.path().join("images/newvm.qcow2");
    set_text(&mut h, "Disk image path", disk.to_str().unwrap());
    assert!(!shows(&h, "Can't write the disk image"));
    click(&mut h, "Forward");
    assert!(step(&h, 4));

    // Page 4: name and network.
    set_text(&mut h, "Name", "taken");
    assert!(shows(&h, "A VM named \"taken\" already exists"));
    set_text(&mut h, "Name", "bad name");
    assert!(shows(&h, "The name can't contain ' '"));
    set_text(&mut h, "Name", "newvm");
    click(&mut h, "Bridge device");
    set_text(&mut h, "Device name", "br100");
    assert!(shows(&h, "There is no bridge named br100"));
    assert!(shows(&h, "ip link add br100 type bridge"));
    click(&mut h, "Forward");
    assert!(step(&h, 4));
    set_text(&mut h, "Device name", "br0");
    assert!(!shows(&h, "There is no bridge"));
    click(&mut h, "Forward");
    assert!(step(&h, 5));
    assert!(shows(&h, "bridge br0"));

    // Back keeps the values; Forward again.
    click(&mut h, "Back");
    assert!(step(&h, 4));
    click(&mut h, "Forward");
    click(&mut h, "Finish");

    assert!(h.state().wizard.is_none(), "Finish closes the wizard");
    let st = conn.lock();
    assert_eq!(
        st.created_disks,
        vec![(disk.clone(), vmm_engine::DiskFormat::Qcow2, 1 << 30)]
    );
    let vm = st.vm("newvm").expect("the VM is defined");
    assert_eq!(vm.state, RunState::Running, "Finish starts the VM");
    assert_eq!(vm.def.spec.memory_mib, 512);
    assert_eq!(vm.def.spec.cpus, 2);
    assert_eq!(vm.def.spec.cdrom.as_deref(), Some(iso.as_path()));
    assert_eq!(vm.def.spec.nics[0].bridge, "br0");
    drop(st);
    assert!(
        h.state().windows.iter().any(|w| w.vm == "newvm"),
        "Finish opens the VM's window"
    );
}

#[test]
fn cancel_closes_the_wizard_without_defining_anything() {
    let t = tempfile::tempdir().unwrap();
    let conn = MemoryConnection::default();
    let app = App::with_connection(Box::new(conn.clone()), host(), test_paths(t.path()));
    let mut h = harness(app, [1000.0, 700.0]);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::N);
    h.run();
    assert!(step(&h, 1), "Ctrl+N opens the wizard");
    click(&mut h, "Cancel");
    assert!(h.state().wizard.is_none());
    assert!(conn.lock().vms.is_empty());
}

/// With the engine connection and a temporary XDG tree: the wizard writes
/// the definition file and the engine's block layer makes the disk.
#[test]
fn wizard_creates_a_vm_with_a_new_qcow2_disk_on_disk() {
    let t = tempfile::tempdir().unwrap();
    let p = test_paths(t.path());
    let conn = EngineConnection::new(Library::new(p.vms_dir()));
    let app = App::with_connection(Box::new(conn), host(), p.clone());
    let mut h = harness(app, [1000.0, 700.0]);
    let iso = make_iso(t.path(), "basic.iso");
    wizard_new_iso_vm(&mut h, &iso, "grub");

    assert!(p.vms_dir().join("grub.json").is_file(), "definition file");
    let disk = p.images_dir().join("grub.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&disk)
        .output()
        .expect("qemu-img");
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1073741824u64);
    assert_eq!(info["format"], "qcow2");
    let text = std::fs::read_to_string(p.vms_dir().join("grub.json")).unwrap();
    let saved: VmDefinition = serde_json::from_str(&text).unwrap();
    assert_eq!(saved.spec.disks[0].path, disk);
    assert_eq!(saved.spec.cdrom.as_deref(), Some(iso.as_path()));
    assert!(h.state().windows.iter().any(|w| w.vm == "grub"));
}

#[test]
fn a_vm_that_fails_to_start_shows_its_error() {
    let t = tempfile::tempdir().unwrap();
    let p = test_paths(t.path());
    let lib = Library::new(p.vms_dir());
    let mut d = def("broken-kernel", None);
    d.spec.boot = vmm_engine::VmSpec::linux("/nonexistent/bzImage").boot;
    lib.save(&d).unwrap();
    let app = App::with_connection(Box::new(EngineConnection::new(lib)), host(), p);
    let mut h = harness(app, [1000.0, 700.0]);
    click(&mut h, "broken-kernel");
    click(&mut h, "Run");
    step_until(&mut h, "the start to fail", Duration::from_secs(30), |h| {
        h.state().model.state("broken-kernel") != RunState::Starting
    });
    assert_eq!(
        h.state().model.state("broken-kernel"),
        RunState::FailedToStart
    );
    settle(&mut h);
    assert!(shows(&h, "broken-kernel could not start"));
    assert!(
        shows(&h, "/nonexistent/bzImage"),
        "the message names the file"
    );
    assert!(shows(&h, "Failed to start: "), "the row shows the error");
    assert!(!shows(&h, "Crashed"), "a VM that never ran did not crash");
}

/// Starting a VM never blocks the UI. The VM's CD-ROM is a named pipe, so
/// the engine's `open` of it blocks (as a hung NFS mount would) until the
/// test writes to the pipe. Meanwhile the window keeps drawing frames, shows
/// the VM as "Starting" and reacts to clicks; then the failure arrives.
#[test]
fn the_ui_keeps_running_while_a_vm_is_starting() {
    let t = tempfile::tempdir().unwrap();
    let p = test_paths(t.path());
    let fifo = t.path().join("slow.iso");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo failed");
    let lib = Library::new(p.vms_dir());
    let mut d = def("slow", None);
    d.spec.cdrom = Some(fifo.clone());
    lib.save(&d).unwrap();
    lib.save(&def("other", None)).unwrap();
    let app = App::with_connection(Box::new(EngineConnection::new(lib)), host(), p);
    let mut h = harness(app, [1000.0, 700.0]);
    // Should the UI thread itself block in the open, this unblocks it after
    // a minute, so the test fails on the next assertion instead of hanging.
    let f = fifo.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = std::fs::OpenOptions::new().write(true).open(f);
    });
    click(&mut h, "slow");
    click(&mut h, "Run");
    assert_eq!(h.state().model.state("slow"), RunState::Starting);
    assert!(shows(&h, "Starting"), "the list shows the VM starting");
    // The engine is stuck opening the pipe; the UI is not.
    for _ in 0..20 {
        h.run_steps(1);
    }
    click(&mut h, "other");
    assert_eq!(h.state().model.selected.as_deref(), Some("other"));
    assert_eq!(h.state().model.state("slow"), RunState::Starting);
    // Run is greyed out for a starting VM.
    click(&mut h, "slow");
    click(&mut h, "Run");
    assert_eq!(h.state().model.state("slow"), RunState::Starting);
    assert!(!shows(&h, "already"), "a second start was not even tried");

    // Unblock the open: the pipe is no ISO, and that error reaches the UI.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let _ = std::io::Write::write_all(&mut w, b"not an iso");
    drop(w);
    step_until(&mut h, "the start to fail", Duration::from_secs(30), |h| {
        h.state().model.state("slow") == RunState::FailedToStart
    });
    settle(&mut h);
    assert!(shows(&h, "slow could not start"));
    assert!(shows(&h, "not an ISO 9660 image"));
}

#[test]
fn corrupt_definition_is_an_error_row_and_others_still_load() {
    let t = tempfile::tempdir().unwrap();
    let p = test_paths(t.path());
    let lib = Library::new(p.vms_dir());
    lib.save(&def("good", None)).unwrap();
    std::fs::write(p.vms_dir().join("bad.json"), "{ oops").unwrap();
    let app = App::with_connection(Box::new(EngineConnection::new(lib)), host(), p.clone());
    let mut h = harness(app, [1000.0, 700.0]);
    assert!(shows(&h, "bad (can't be loaded)"));
    assert!(h.query_by_label("good").is_some());
    click(&mut h, "bad");
    click(&mut h, "Remove file");
    assert!(!p.vms_dir().join("bad.json").exists());
    assert!(!shows(&h, "can't be loaded"));
    assert!(h.query_by_label("good").is_some());
}

#[test]
fn toolbar_and_shortcuts_drive_the_selected_vm_and_delete_asks_about_disks() {
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("a.img");
    std::fs::write(&disk, vec![0u8; 512]).unwrap();
    let p = test_paths(t.path());
    let lib = Library::new(p.vms_dir());
    lib.save(&def("a", Some(disk.clone()))).unwrap();
    lib.save(&def("b", None)).unwrap();

    // Run/pause through the in-memory connection (no guest).
    let conn = MemoryConnection::default();
    conn.lock().add(def("a", Some(disk.clone())), RunState::Off);
    let app = App::with_connection(Box::new(conn.clone()), host(), p.clone());
    let mut h = harness(app, [1000.0, 700.0]);
    click(&mut h, "a");
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::R);
    h.run();
    assert_eq!(conn.lock().vm("a").unwrap().state, RunState::Running);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::P);
    h.run();
    assert_eq!(conn.lock().vm("a").unwrap().state, RunState::Paused);
    click(&mut h, "Resume");
    assert_eq!(conn.lock().vm("a").unwrap().state, RunState::Running);
    click(&mut h, "Shut Down");
    h.get_by_label_contains("Force Off").click();
    h.run();
    assert_eq!(conn.lock().vm("a").unwrap().state, RunState::Off);

    // Delete with the engine library: the checkbox removes the disk too.
    let app = App::with_connection(Box::new(EngineConnection::new(lib)), host(), p.clone());
    let mut h = harness(app, [1000.0, 700.0]);
    click(&mut h, "b");
    h.key_press(egui::Key::Delete);
    h.run();
    assert!(
        shows(&h, "Delete the VM \"b\"?"),
        "the Delete key asks first"
    );
    // The dialog's Delete button (the toolbar has one too).
    h.get_all_by_label("Delete").last().unwrap().click();
    h.run();
    assert!(!p.vms_dir().join("b.json").exists());
    click(&mut h, "a");
    click(&mut h, "Delete");
    click(&mut h, "Also delete disk images");
    h.get_all_by_label("Delete").last().unwrap().click();
    h.run();
    assert!(!p.vms_dir().join("a.json").exists());
    assert!(!disk.exists(), "the disk image went with it");
    assert!(shows(&h, "No virtual machines yet"));
}

#[test]
fn console_keys_and_send_key_reach_the_connection() {
    use std::sync::Arc;
    use vireo::connection::{Frame, GuestKey};
    let t = tempfile::tempdir().unwrap();
    let conn = MemoryConnection::default();
    conn.lock().add(def("g", None), RunState::Running);
    conn.lock().vms[0].frame = Some(Frame {
        width: 64,
        height: 48,
        pixels: Arc::new(vec![0x80; 64 * 48 * 4]),
        generation: 1,
    });
    let app = App::with_connection(Box::new(conn.clone()), host(), test_paths(t.path()));
    let mut h = harness(app, [1000.0, 700.0]);
    h.get_by_label("g").click();
    h.run();
    click(&mut h, "Open");
    assert_eq!(h.state().windows.len(), 1);
    assert_eq!(h.state().windows[0].console.uploads, 1);
    h.run();
    assert_eq!(
        h.state().windows[0].console.uploads,
        1,
        "same generation: no upload"
    );

    click(&mut h, "Send Key");
    click(&mut h, "Ctrl+Alt+Del");
    assert_eq!(
        conn.lock().vm("g").unwrap().keys,
        vec![
            (GuestKey::LeftCtrl, true),
            (GuestKey::LeftAlt, true),
            (GuestKey::Delete, true),
            (GuestKey::Delete, false),
            (GuestKey::LeftAlt, false),
            (GuestKey::LeftCtrl, false),
        ]
    );
    conn.lock().vm_mut("g").unwrap().keys.clear();

    // Click the screen to capture, then type.
    click(&mut h, "Console screen");
    assert!(h.state().windows[0].console.captured);
    assert!(shows(&h, "press Ctrl+Alt to release"));
    h.key_press(egui::Key::ArrowDown);
    h.run();
    h.key_press(egui::Key::Enter);
    h.run();
    assert_eq!(
        conn.lock().vm("g").unwrap().keys,
        vec![
            (GuestKey::Down, true),
            (GuestKey::Down, false),
            (GuestKey::Enter, true),
            (GuestKey::Enter, false),
        ]
    );
    // Ctrl+Alt releases the capture and sends no stuck modifiers.
    h.key_press_modifiers(
        egui::Modifiers {
            ctrl: true,
            alt: true,
            ..Default::default()
        },
        egui::Key::G,
    );
    h.run();
    assert!(!h.state().windows[0].console.captured);
    assert!(shows(&h, "Click the screen to capture"));

    // A new frame generation is uploaded once.
    conn.lock()
        .vm_mut("g")
        .unwrap()
        .frame
        .as_mut()
        .unwrap()
        .generation = 2;
    h.run();
    assert_eq!(h.state().windows[0].console.uploads, 2);

    // The serial view: typed text goes to the guest's UART.
    click(&mut h, "Serial");
    click(&mut h, "Serial console");
    h.get_by_label("Serial console").type_text("ls");
    h.run();
    h.key_press(egui::Key::Enter);
    h.run();
    assert_eq!(conn.lock().vm("g").unwrap().serial_in, b"ls\r".to_vec());

    // The serial console in a terminal window of its own: with the VM
    // window closed, it is the only terminal, and typing there works too.
    click(&mut h, "Open in a new window");
    assert_eq!(h.state().serial_windows, vec!["g".to_string()]);
    assert!(shows(&h, "g - Serial Console"));
    // Close the VM window with its own close button (the first window
    // drawn; the serial window's comes second).
    h.get_all_by_label("Close window").next().unwrap().click();
    h.run();
    assert!(h.state().windows.is_empty(), "the VM window closed");
    assert_eq!(h.state().serial_windows.len(), 1, "the serial one stays");
    click(&mut h, "Serial console");
    h.get_by_label("Serial console").type_text("pwd");
    h.run();
    h.key_press(egui::Key::Enter);
    h.run();
    assert_eq!(
        conn.lock().vm("g").unwrap().serial_in,
        b"ls\rpwd\r".to_vec()
    );
}

/// The toolbar drives a real engine VM (the tiny boot-protocol guest, which
/// counts on COM1 forever): Run, Pause, Resume and Force Off each reach the
/// engine, and each new state comes back as an event the list shows.
#[test]
fn toolbar_drives_a_real_engine_vm_through_its_states() {
    require_kvm();
    let t = tempfile::tempdir().unwrap();
    let p = test_paths(t.path());
    let lib = Library::new(p.vms_dir());
    let mut spec = vmm_engine::VmSpec::linux(guest("tiny", "bootproto.bin"));
    spec.name = "tiny".into();
    spec.memory_mib = 64;
    if let vmm_engine::BootSpec::Linux(l) = &mut spec.boot {
        l.cmdline = "console=ttyS0 noecho action=count".into();
    }
    lib.save(&VmDefinition::new(spec)).unwrap();
    let app = App::with_connection(Box::new(EngineConnection::new(lib)), host(), p);
    let mut h = harness(app, [1000.0, 700.0]);
    let t30 = Duration::from_secs(30);
    let state = |h: &egui_kittest::Harness<'_, App>| h.state().model.state("tiny");

    click(&mut h, "tiny");
    click(&mut h, "Run");
    step_until(&mut h, "Running", t30, |h| state(h) == RunState::Running);
    step_until(&mut h, "serial output", t30, |h| {
        h.state().model.runtime["tiny"]
            .terminal
            .text()
            .contains("tick")
    });
    click(&mut h, "Pause");
    step_until(&mut h, "Paused", t30, |h| state(h) == RunState::Paused);
    settle(&mut h);
    assert!(shows(&h, "Paused"), "the list shows the new state");
    click(&mut h, "Resume");
    step_until(&mut h, "Running again", t30, |h| {
        state(h) == RunState::Running
    });
    click(&mut h, "Shut Down");
    h.get_by_label_contains("Force Off").click();
    step_until(&mut h, "Shut off", t30, |h| state(h) == RunState::Off);
    settle(&mut h);
    assert!(shows(&h, "Shut off"));
}
