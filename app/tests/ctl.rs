//! `vireo run --control SOCK` and `vireo ctl SOCK ...` through the real
//! binary: usage errors (2), error replies and unreachable sockets (1),
//! and a tiny direct-boot guest driven through its control socket until
//! `quit` ends `vireo run` with status 0 and removes the socket.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vireo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vireo"))
}

fn tiny_guest() -> PathBuf {
    common::guest("tiny", "bootproto.bin")
}

fn ctl(dir: &Path, sock: &Path, args: &[&str]) -> Output {
    vireo()
        .current_dir(dir)
        .arg("ctl")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running vireo ctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ctl_usage_errors_exit_2_and_unreachable_sockets_1() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["status", "extra"][..],
        &["screenshot"][..],
        &["raw", "{"][..],
    ] {
        let o = ctl(dir.path(), &sock, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("panicked"));
    }
    let o = ctl(dir.path(), &sock, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot connect"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn run_with_control_socket_then_ctl_commands_and_quit() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("this test needs /dev/kvm ({e}); run on a host with KVM");
    }
    let kernel = tiny_guest();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let mut child = vireo()
        .args(["run", "-m", "64", "--kernel"])
        .arg(&kernel)
        .args(["--append", "console=ttyS0 noecho action=halt", "--control"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting vireo run");

    // The socket appears; status answers once the display has a frame.
    let t0 = Instant::now();
    loop {
        if sock.exists() {
            let o = ctl(dir.path(), &sock, &["status"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["ok"], true);
            if v["state"] == "running" && v["display"]["width"].as_u64() > Some(0) {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no running VM on {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A relative screenshot path is the client's, not the server's.
    let o = ctl(dir.path(), &sock, &["screenshot", "shot.png"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let png = std::fs::read(dir.path().join("shot.png")).expect("the screenshot file");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Error replies: status 1 with the server's message.
    let o = ctl(
        dir.path(),
        &sock,
        &["screenshot", "/nonexistent-vireo/x.png"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("nonexistent-vireo"),
        "{}",
        text(&o.stderr)
    );
    let o = ctl(dir.path(), &sock, &["raw", r#"{"cmd":"nope"}"#]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("unknown command"),
        "{}",
        text(&o.stderr)
    );
    let o = ctl(dir.path(), &sock, &["send-keys", "ctrl-nosuchkey"]);
    assert_eq!(o.status.code(), Some(1));

    // Commands that succeed.
    for args in [
        &["pause"][..],
        &["resume"][..],
        &["send-keys", "ctrl-alt-delete"][..],
        &["type", "ls\\n"][..],
    ] {
        let o = ctl(dir.path(), &sock, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
    }

    let o = ctl(dir.path(), &sock, &["quit"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("vireo run did not exit after quit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(!sock.exists(), "the socket was left behind");
}
