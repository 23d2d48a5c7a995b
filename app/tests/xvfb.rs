//! A real window: `vireo` under Xvfb (Mesa's software renderer). The main
//! window is drawn (a root-window screenshot that isn't blank); a VM started
//! with Ctrl+R and opened with Enter gets its own X window, which shows the
//! guest's live framebuffer (GRUB's menu, in the VGA's exact grey); Ctrl+Q
//! exits cleanly with the VM running. Needs /dev/kvm and the Debian packages
//! xvfb, imagemagick and xdotool (.ci/install-deps.sh).

mod common;

use std::path::PathBuf;
use std::process::Command;
use vireo::library::{Library, VmDefinition};

/// The VGA text colour 7 (light grey, DAC 0x2a) as Vireo draws it.
const VGA_GREY: [u8; 4] = [0xa8, 0xa8, 0xa8, 0xff];

fn count(img: &image::RgbaImage, c: [u8; 4]) -> usize {
    img.pixels().filter(|p| p.0 == c).count()
}

#[test]
fn vireo_opens_its_windows_under_xvfb_and_exits_cleanly() {
    common::require_kvm();
    let t = tempfile::tempdir().unwrap();
    let shot = t.path().join("shot.png");
    let vm_shot = t.path().join("vm-window.png");
    let both = t.path().join("both.png");
    let run = t.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // One VM in the library: the GRUB menu ISO of the app's guest tests.
    let paths = common::test_paths(t.path());
    let mut spec = vmm_engine::VmSpec::firmware();
    spec.name = "demo".into();
    spec.memory_mib = 128;
    spec.cdrom = Some(common::still_menu_iso());
    Library::new(paths.vms_dir())
        .save(&VmDefinition::new(spec))
        .unwrap();
    // Select the VM by clicking its row, start it with Ctrl+R, open its
    // window with Enter, then capture that X window until GRUB's menu (lots
    // of the VGA grey) is on it, at most about four minutes.
    let script = r#"
        "$VIREO" > "$LOG" 2>&1 &
        pid=$!
        sleep 8
        import -window root "$SHOT"
        main=$(xdotool search --sync --name '^Vireo$' | head -1)
        xdotool windowfocus --sync "$main"
        xdotool mousemove --window "$main" 60 122 click 1
        sleep 1
        xdotool key --clearmodifiers ctrl+r
        sleep 1
        xdotool key --clearmodifiers Return
        vmwin=
        for i in $(seq 80); do
            sleep 3
            vmwin=$(xdotool search --name '^demo - Virtual Machine$' | head -1)
            [ -n "$vmwin" ] || continue
            import -window "$vmwin" "$VM_SHOT"
            n=$(convert "$VM_SHOT" -fill black +opaque 'rgb(168,168,168)' -fill white -opaque 'rgb(168,168,168)' -format '%[fx:round(mean*w*h)]' info:)
            [ "${n:-0}" -gt 8000 ] && break
        done
        echo "vm-window=${vmwin:-none}"
        if [ -n "$vmwin" ]; then
            xdotool windowmove "$vmwin" 440 220
            sleep 2
            import -window root "$BOTH"
        fi
        xdotool windowfocus --sync "$main" key --clearmodifiers ctrl+q
        wait $pid
        echo "vireo-exit=$?"
    "#;
    let out = Command::new("timeout")
        .args([
            "420",
            "xvfb-run",
            "-a",
            "-s",
            "-screen 0 1280x800x24",
            "bash",
            "-c",
            script,
        ])
        .env("VIREO", env!("CARGO_BIN_EXE_vireo"))
        .env("SHOT", &shot)
        .env("VM_SHOT", &vm_shot)
        .env("BOTH", &both)
        .env("LOG", t.path().join("vireo.log"))
        .env("XDG_CONFIG_HOME", t.path().join("config"))
        .env("XDG_DATA_HOME", t.path().join("data"))
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .expect("xvfb-run (Debian package xvfb) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(t.path().join("vireo.log")).unwrap_or_default();
    assert!(
        stdout.contains("vireo-exit=0"),
        "vireo did not exit cleanly: {stdout}\n{}\nlog:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vm_window = stdout
        .lines()
        .find_map(|l| l.strip_prefix("vm-window="))
        .unwrap_or("none");
    assert!(
        vm_window.parse::<u64>().is_ok(),
        "no X window titled \"demo - Virtual Machine\" after selecting the VM and pressing Enter ({vm_window}): {stdout}\nlog:\n{log}"
    );
    let img = image::open(&shot).expect("the screenshot").to_rgba8();
    assert_eq!((img.width(), img.height()), (1280, 800));
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels() {
        colours.insert(p.0);
    }
    assert!(
        colours.len() > 8,
        "the screen is blank ({} colours)",
        colours.len()
    );
    // The VM's own window shows the guest's screen.
    let vm_img = image::open(&vm_shot)
        .expect("a capture of the VM window")
        .to_rgba8();
    let grey = count(&vm_img, VGA_GREY);
    assert!(
        grey > 8000,
        "the VM window doesn't show GRUB's menu: {grey} pixels of VGA grey (see {})",
        vm_shot.display()
    );
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&shot, dir.join("main-window.png")).unwrap();
        std::fs::copy(&both, dir.join("vm-window.png")).unwrap();
    }
}
