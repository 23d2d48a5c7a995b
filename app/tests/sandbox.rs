//! The VM process's sandbox through the real binary: `vireo run` with a
//! tiny direct-boot guest and a control socket, and the test-only
//! `sandbox-probe` command (served only with VIREO_TEST_SANDBOX_PROBES=1).
//! - seccomp: the probe's execve kills the process with SIGSYS, and its
//!   stderr names the call; under --no-sandbox the same execve runs
//!   (`/bin/sh -c 'exit 42'` replaces the process: status 42).
//! - Landlock: opening a file outside the allow-list fails with EACCES,
//!   a file in the runtime directory opens; under --no-sandbox both open.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn need_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("this test needs /dev/kvm ({e}); run on a host with KVM");
    }
}

/// A running `vireo run` of the tiny guest, its socket in `dir`.
struct VmProcess {
    child: Child,
    sock: PathBuf,
    conn: Option<(UnixStream, BufReader<UnixStream>)>,
}

impl VmProcess {
    fn start(dir: &Path, extra: &[&str]) -> VmProcess {
        need_kvm();
        let sock = dir.join("vm.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_vireo"))
            .args(["run", "-m", "64", "--kernel"])
            .arg(common::guest("tiny", "bootproto.bin"))
            .args(["--append", "console=ttyS0 noecho action=halt", "--control"])
            .arg(&sock)
            .args(extra)
            .env("VIREO_TEST_SANDBOX_PROBES", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting vireo run");
        let mut vm = VmProcess {
            child,
            sock,
            conn: None,
        };
        // Wait until the VM runs and shows a frame.
        let t0 = Instant::now();
        loop {
            if let Some(status) = vm.child.try_wait().unwrap() {
                panic!("vireo run ended early: {status}: {}", vm.stderr());
            }
            if vm.sock.exists() {
                let v = vm.request(&json!({"cmd": "status"}));
                if v["state"] == "running" && v["display"]["width"].as_u64() > Some(0) {
                    return vm;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "the VM never ran");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn request(&mut self, req: &Value) -> Value {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.sock).expect("connecting to the control socket");
            let r = BufReader::new(s.try_clone().unwrap());
            self.conn = Some((s, r));
        }
        let (w, r) = self.conn.as_mut().unwrap();
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        w.write_all(&line).unwrap();
        let mut reply = String::new();
        r.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or(Value::Null)
    }

    /// Sends a request whose reply may never come (the process dies or
    /// becomes another program).
    fn send_only(&mut self, req: &Value) {
        let mut s = UnixStream::connect(&self.sock).expect("connecting to the control socket");
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        s.write_all(&line).unwrap();
        // Keep the connection open until the process is gone.
        self.conn = Some((s.try_clone().unwrap(), BufReader::new(s)));
    }

    /// Waits (at most 60 s) for the process to end.
    fn wait(&mut self) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "vireo run did not end"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    fn quit(mut self) {
        let _ = self.request(&json!({"cmd": "quit"}));
        let st = self.wait();
        assert_eq!(st.code(), Some(0), "{}", self.stderr());
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_forbidden_syscall_kills_the_vm_process_with_sigsys_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = VmProcess::start(dir.path(), &[]);
    vm.send_only(&json!({"cmd": "sandbox-probe", "try": "execve"}));
    let status = vm.wait();
    let stderr = vm.stderr();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status}: {stderr}");
    let report = vmm_engine::sandbox::death_report(status, &stderr).unwrap();
    assert!(
        report.contains("forbidden system call execve (number 59) on the control thread"),
        "{report}\n{stderr}"
    );
}

#[test]
fn under_no_sandbox_the_same_execve_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = VmProcess::start(dir.path(), &["--no-sandbox"]);
    vm.send_only(&json!({"cmd": "sandbox-probe", "try": "execve"}));
    let status = vm.wait();
    let stderr = vm.stderr();
    // /bin/sh -c 'exit 42' replaced the VM process.
    assert_eq!(status.code(), Some(42), "{status}: {stderr}");
    assert!(
        stderr.contains("the sandbox is off (--no-sandbox)"),
        "{stderr}"
    );
}

/// Landlock's ABI version, or 0 where the kernel lacks it.
fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns a number.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    }
}

#[test]
fn landlock_refuses_files_outside_the_allow_list() {
    if landlock_abi() < 1 {
        panic!("this kernel has no Landlock (landlock_create_ruleset failed); the test needs it");
    }
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, b"not for the guest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("runtime-file.txt");
    std::fs::write(&inside, b"the VM's own").unwrap();

    let mut vm = VmProcess::start(dir.path(), &[]);
    let v = vm.request(&json!({"cmd": "sandbox-probe", "try": "open", "path": secret}));
    assert_eq!(v["ok"], false, "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(err.contains(&format!("errno {}", libc::EACCES)), "{v}");
    let v = vm.request(&json!({"cmd": "sandbox-probe", "try": "open", "path": inside}));
    assert_eq!(v["ok"], true, "the runtime directory must stay open: {v}");
    // A screenshot in the runtime directory still works.
    let shot = dir.path().join("shot.png");
    let v = vm.request(&json!({"cmd": "screenshot", "path": shot}));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(&std::fs::read(&shot).unwrap()[..4], b"\x89PNG");
    vm.quit();

    let dir = tempfile::tempdir().unwrap();
    let mut vm = VmProcess::start(dir.path(), &["--no-sandbox"]);
    let v = vm.request(&json!({"cmd": "sandbox-probe", "try": "open", "path": secret}));
    assert_eq!(v["ok"], true, "without the sandbox the file opens: {v}");
    vm.quit();
}
