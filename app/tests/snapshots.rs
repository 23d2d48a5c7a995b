//! Snapshot tests: the UI rendered to PNG (wgpu, software rendering where
//! there is no GPU) and compared with the references in tests/snapshots/.
//! Regenerate with `UPDATE_SNAPSHOTS=1 cargo test -p vireo --test snapshots`.
//!
//! These render the UI over the in-memory connection: they show what the
//! views draw for given states. No guest runs here; the guest screenshots
//! (GRUB on the framebuffer, real serial output) belong to the guest tests.

mod common;

use common::*;
use egui_kittest::kittest::Queryable as _;
use std::path::{Path, PathBuf};
use vireo::connection::{ConnEvent, MemoryConnection, RunState};
use vireo::gui::App;
use vireo::library::{LibraryEntry, Paths, VmDefinition};

const SIZE: [f32; 2] = [960.0, 640.0];

/// Fixed paths, so every path printed in the UI is the same on every run.
fn fixed_root(test: &str) -> PathBuf {
    let root = PathBuf::from("/tmp/vireo-snapshots").join(test);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn paths(root: &Path) -> Paths {
    Paths {
        config: root.join("config/vireo"),
        data: root.join("data/vireo"),
    }
}

fn vm(name: &str, mib: u64, cpus: u32) -> VmDefinition {
    let mut spec = vmm_engine::VmSpec::firmware();
    spec.name = name.into();
    spec.memory_mib = mib;
    spec.cpus = cpus;
    VmDefinition::new(spec)
}

#[test]
fn empty_main_window() {
    let root = fixed_root("empty");
    let app = App::with_connection(Box::new(MemoryConnection::default()), host(), paths(&root));
    let mut h = harness(app, SIZE);
    h.snapshot("main_window_empty");
}

#[test]
fn main_window_with_vms_in_several_states() {
    let root = fixed_root("list");
    let conn = MemoryConnection::default();
    {
        let mut st = conn.lock();
        st.add(vm("debian-12", 2048, 2), RunState::Running);
        st.add(vm("freedos", 64, 1), RunState::Off);
        st.add(vm("grub-test", 256, 1), RunState::Paused);
        st.add(vm("win-xp", 512, 1), RunState::Off);
        st.add(vm("alpine", 256, 1), RunState::Starting);
        st.broken.push(LibraryEntry::Broken {
            path: root.join("config/vireo/vms/old.json"),
            message: "not a valid VM definition: expected value at line 1 column 1".into(),
        });
        st.events.push(ConnEvent::Error {
            vm: "win-xp".into(),
            message: "the kernel image /srv/xp.bin does not exist".into(),
        });
    }
    let app = App::with_connection(Box::new(conn), host(), paths(&root));
    let mut h = harness(app, SIZE);
    {
        let m = &mut h.state_mut().model;
        for (i, pct) in [
            5.0, 12.0, 30.0, 80.0, 95.0, 60.0, 40.0, 42.0, 38.0, 20.0, 18.0, 25.0, 60.0, 70.0,
            65.0, 30.0, 10.0, 8.0, 12.0, 40.0,
        ]
        .into_iter()
        .enumerate()
        {
            m.runtime_mut("debian-12").push_cpu(pct);
            if i < 12 {
                m.runtime_mut("grub-test").push_cpu(pct / 4.0);
            }
        }
    }
    click(&mut h, "debian-12");
    h.snapshot("main_window_vms");
}

/// Walks the wizard with valid input, taking a snapshot of each page.
#[test]
fn each_wizard_page_and_a_page_with_errors() {
    let root = fixed_root("wizard");
    let iso = make_iso(&root, "install.iso");
    let app = App::with_connection(Box::new(MemoryConnection::default()), host(), paths(&root));
    let mut h = harness(app, SIZE);
    click(&mut h, "New");
    h.snapshot("wizard_1_media_empty");
    set_text(&mut h, "ISO image path", iso.to_str().unwrap());
    h.snapshot("wizard_1_media");
    click(&mut h, "Forward");
    h.snapshot("wizard_2_memory");
    set_text(&mut h, "Memory (MiB)", "0");
    set_text(&mut h, "CPUs", "64");
    h.snapshot("wizard_2_memory_errors");
    set_text(&mut h, "Memory (MiB)", "1024");
    set_text(&mut h, "CPUs", "2");
    click(&mut h, "Forward");
    set_text(&mut h, "Size (GiB)", "1");
    h.snapshot("wizard_3_storage");
    click(&mut h, "Forward");
    set_text(&mut h, "Name", "debian-12");
    click(&mut h, "Bridge device");
    set_text(&mut h, "Device name", "br100");
    h.snapshot("wizard_4_name_network_error");
    set_text(&mut h, "Device name", "br0");
    h.snapshot("wizard_4_name_network");
    click(&mut h, "Forward");
    h.snapshot("wizard_5_summary");
}

#[test]
fn vm_window_details_and_serial_views() {
    let root = fixed_root("vmwindow");
    let conn = MemoryConnection::default();
    {
        let mut st = conn.lock();
        let mut d = vm("grub-test", 256, 1);
        d.spec.cdrom = Some("/srv/iso/grub.iso".into());
        d.spec.disks.push(vmm_engine::DiskSpec {
            path: "/srv/images/grub-test.qcow2".into(),
            format: vmm_engine::DiskFormat::Qcow2,
            interface: vmm_engine::DiskInterface::Ide,
            readonly: false,
        });
        st.add(d, RunState::Off);
        // UI rendering only: bytes as a guest would print them, not a guest.
        st.events.push(ConnEvent::Serial {
            vm: "grub-test".into(),
            bytes: b"SeaBIOS (version 1.16)\n\x1b[1;32mBooting from DVD/CD...\x1b[0m\n\
                     \x1b[7m GNU GRUB  version 2.12 \x1b[0m\n  *debian\n   \x1b[31mrescue\x1b[0m\n"
                .to_vec(),
        });
    }
    let app = App::with_connection(Box::new(conn), host(), paths(&root));
    let mut h = harness(app, SIZE);
    h.get_by_label("grub-test").click();
    h.run();
    click(&mut h, "Open");
    click(&mut h, "Details");
    h.snapshot("vm_window_details");
    click(&mut h, "Serial");
    h.snapshot("vm_window_serial");
    click(&mut h, "Open in a new window");
    h.snapshot("serial_console_window");
}
