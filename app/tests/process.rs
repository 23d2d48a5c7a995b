//! Per-VM processes and the virsh-like CLI, driven as a script would:
//! `vireo define`, `list`, `start` (a detached VM process), `console`,
//! `screenshot`, `send-keys`, `shutdown`, `destroy`; a VM process killed
//! with SIGKILL shows as crashed while another keeps answering. Each test
//! has its own XDG_RUNTIME_DIR and XDG_CONFIG_HOME, and a guard kills the
//! VM processes it started, even when the test fails.

mod common;

use common::{guest, require_kvm};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

/// A private environment for one test, and the VM processes to kill.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run/vireo")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vireo"));
        c.env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running vireo")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "vireo {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// The STATE column of `vireo list` for `name`.
    fn state(&self, name: &str) -> String {
        let out = self.ok(&["list"]);
        out.lines()
            .find_map(|l| {
                let (n, s) = l.split_once(char::is_whitespace)?;
                (n == name).then(|| s.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{name} not in `vireo list`:\n{out}"))
    }
    fn wait_state(&self, name: &str, want: &str) {
        let deadline = Instant::now() + T;
        loop {
            let s = self.state(name);
            if s == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {s:?}, not {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    /// Defines a tiny guest that echoes COM1 until a '.', then prints
    /// "tick N" lines forever.
    fn define_ticker(&self, name: &str) {
        let mut spec = vmm_engine::VmSpec::linux(guest("tiny", "bootproto.bin"));
        spec.name = name.into();
        spec.memory_mib = 64;
        if let vmm_engine::BootSpec::Linux(l) = &mut spec.boot {
            l.cmdline = "console=ttyS0 action=count".into();
        }
        let def = vireo::library::VmDefinition::new(spec);
        let file = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&def).unwrap()).unwrap();
        let out = self.ok(&["define", file.to_str().unwrap()]);
        assert!(out.contains(&format!("Defined {name}")), "{out}");
    }
    /// The pid the VM process reports on its socket.
    fn pid(&self, name: &str) -> i32 {
        let sock = self.runtime().join(format!("{name}.sock"));
        let mut c = vireo::vmproc::Client::connect(&sock).expect("connecting");
        let st = c.call(&serde_json::json!({"cmd": "status"})).unwrap();
        st["pid"].as_i64().expect("pid in status") as i32
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Kill every VM process that still has a socket here.
        for name in vireo::vmproc::socket_names(&self.runtime()) {
            if let vireo::vmproc::Probe::Alive { pid, .. } =
                vireo::vmproc::probe(&self.runtime(), &name)
            {
                // SAFETY: kill(2) with a pid our own VM process reported.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn proc_alive(pid: i32) -> bool {
    // A zombie is dead for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn png_size(path: &Path) -> (u32, u32) {
    let d = image::ImageReader::open(path)
        .expect("opening the screenshot")
        .with_guessed_format()
        .unwrap()
        .decode()
        .expect("a PNG");
    (d.width(), d.height())
}

#[test]
fn virsh_like_cli_over_detached_vm_processes() {
    require_kvm();
    let env = Env::new();
    env.define_ticker("one");
    env.define_ticker("two");
    assert_eq!(env.state("one"), "shut off");

    // start returns while the VM keeps running in its own session.
    let out = env.ok(&["start", "one"]);
    assert!(out.contains("Started one"), "{out}");
    env.wait_state("one", "running");
    let pid = env.pid("one");
    // SAFETY: getsid on a pid; no memory involved.
    assert_eq!(
        unsafe { libc::getsid(pid) },
        pid,
        "the VM process leads its own session"
    );
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(env.runtime())
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o700);
    let again = env.run(&["start", "one"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    // console: the scrollback then live output; Ctrl-A x detaches and the
    // VM keeps running.
    let mut con = env
        .cmd()
        .args(["console", "one"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = con.stdout.take().unwrap();
    // The reader drains the console until it ends (so it never writes
    // into a closed pipe) and hands over what it saw once "tick 2" shows.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        let mut told = false;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if !told && String::from_utf8_lossy(&seen).contains("tick 2") {
                told = true;
                let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
            }
        }
        if !told {
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
    });
    // The guest echoes COM1 input until a '.', then ticks: typing on the
    // console reaches it.
    con.stdin.as_mut().unwrap().write_all(b"hi.").unwrap();
    let seen = rx.recv_timeout(T).expect("the console showed nothing");
    assert!(seen.contains("VIREO-TINY boot"), "no scrollback: {seen:?}");
    assert!(seen.contains("ECHO\nhi."), "no echo: {seen:?}");
    assert!(seen.contains("tick 2"), "console showed {seen:?}");
    con.stdin.as_mut().unwrap().write_all(b"\x01x").unwrap();
    let status = con.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "console exit {status}");
    assert_eq!(env.state("one"), "running");

    let shot = env.dir.path().join("one.png");
    env.ok(&["screenshot", "one", shot.to_str().unwrap()]);
    let (w, h) = png_size(&shot);
    assert!(w > 0 && h > 0);
    env.ok(&["send-keys", "one", "a", "ctrl-alt-delete"]);
    let bad = env.run(&["send-keys", "one", "nosuchkey"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nosuchkey"));
    // The ticker ignores the power button; the request is still accepted.
    env.ok(&["shutdown", "one"]);

    // A second VM; kill -9 the first: it shows crashed, the second answers.
    env.ok(&["start", "two"]);
    env.wait_state("two", "running");
    // SAFETY: kill(2) on the VM process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until("the killed VM process to die", || !proc_alive(pid));
    assert_eq!(env.state("one"), "crashed");
    assert_eq!(env.state("two"), "running");
    env.ok(&["send-keys", "two", "ret"]);
    let not = env.run(&["send-keys", "one", "ret"]);
    assert!(String::from_utf8_lossy(&not.stderr).contains("not running"));

    // A crashed VM starts again (the stale socket is replaced).
    env.ok(&["start", "one"]);
    env.wait_state("one", "running");

    // destroy ends the processes and removes their sockets.
    let pid_two = env.pid("two");
    env.ok(&["destroy", "two"]);
    env.ok(&["destroy", "one"]);
    assert_eq!(env.state("two"), "shut off");
    assert_eq!(env.state("one"), "shut off");
    wait_until("the destroyed VM process to exit", || !proc_alive(pid_two));
    let gone = env.run(&["destroy", "two"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not running"));
}

#[test]
fn cli_errors_name_the_problem() {
    let env = Env::new();
    let o = env.run(&["start", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no VM named nosuch"));
    let junk = env.dir.path().join("junk.json");
    std::fs::write(&junk, b"{not json").unwrap();
    let o = env.run(&["define", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a VM definition"));
    let o = env.run(&["console", "nosuch"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not running"));
    assert_eq!(env.ok(&["list"]).trim(), "NAME  STATE");
}
