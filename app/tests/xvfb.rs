//! A real window: `vireo` under Xvfb (Mesa's software renderer), a
//! screenshot of the root window, and a clean exit on Ctrl+Q. A VM's window
//! is its own X window. Needs the Debian packages xvfb, imagemagick and
//! xdotool (.ci/install-deps.sh).

use std::path::PathBuf;
use std::process::Command;
use vireo::library::{Library, Paths, VmDefinition};

#[test]
fn vireo_opens_its_windows_under_xvfb_and_exits_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let shot = t.path().join("shot.png");
    let run = t.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // One VM in the library (it is never started).
    let paths = Paths {
        config: t.path().join("config/vireo"),
        data: t.path().join("data/vireo"),
    };
    let mut spec = vmm_engine::VmSpec::firmware();
    spec.name = "demo".into();
    spec.memory_mib = 256;
    Library::new(paths.vms_dir())
        .save(&VmDefinition::new(spec))
        .unwrap();
    // Select the VM by clicking its row, open its window with Enter, and
    // look for that window among the X windows.
    let script = r#"
        "$VIREO" > "$LOG" 2>&1 &
        pid=$!
        sleep 8
        import -window root "$SHOT"
        main=$(xdotool search --sync --name '^Vireo$' | head -1)
        xdotool windowfocus --sync "$main"
        xdotool mousemove --window "$main" 60 122 click 1
        sleep 1
        xdotool key --clearmodifiers Return
        sleep 4
        vmwin=$(xdotool search --name '^demo - Virtual Machine$' | head -1)
        echo "vm-window=${vmwin:-none}"
        xdotool windowfocus --sync "$main" key --clearmodifiers ctrl+q
        wait $pid
        echo "vireo-exit=$?"
    "#;
    let out = Command::new("timeout")
        .args([
            "120",
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
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        let dest =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/screenshots/main-window.png");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&shot, dest).unwrap();
    }
}
