//! A real window: `vireo` under Xvfb (Mesa's software renderer), a
//! screenshot of the root window, and a clean exit on Ctrl+Q. Needs the
//! Debian packages xvfb, imagemagick and xdotool (.ci/install-deps.sh).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn vireo_opens_a_window_under_xvfb_and_exits_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let shot = t.path().join("shot.png");
    let run = t.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let script = r#"
        "$VIREO" > "$LOG" 2>&1 &
        pid=$!
        sleep 8
        import -window root "$SHOT"
        xdotool search --sync --name '^Vireo$' windowfocus --sync key --clearmodifiers ctrl+q
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
