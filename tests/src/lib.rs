//! Shared helpers for Vireo's end-to-end tests: building the test guests,
//! checking for KVM, and watching a VM's serial output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use vmm_engine::{StopReason, VmEvent};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where assets/guests/build.sh puts its outputs.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("VIREO_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/guests"))
}

static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// Builds a guest set (tiny, grub, linux) once per process and returns the
/// path of `name` in it. Panics with the script's output if it fails.
pub fn guest(set: &str, name: &str) -> PathBuf {
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut b = built.lock().unwrap_or_else(|e| e.into_inner());
    // VIREO_GUESTS_PREBUILT=1: use what is in the guest dir as it is (a
    // machine without the Debian tools, given guests built elsewhere).
    let prebuilt = std::env::var_os("VIREO_GUESTS_PREBUILT").is_some();
    if !prebuilt && !b.iter().any(|s| s == set) {
        let out = Command::new("bash")
            .arg(repo_root().join("assets/guests/build.sh"))
            .arg(set)
            .output()
            .expect("running assets/guests/build.sh");
        assert!(
            out.status.success(),
            "assets/guests/build.sh {set} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        b.push(set.to_string());
    }
    let p = guest_dir().join(set).join(name);
    assert!(p.exists(), "guest {} was not built", p.display());
    p
}

/// Makes a GRUB ISO with the given grub.cfg (cached by the script).
pub fn grub_iso(name: &str, cfg: &str, extra: Option<&Path>) -> PathBuf {
    let dir = guest_dir().join("per-test");
    std::fs::create_dir_all(&dir).expect("creating target/guests/per-test");
    let cfg_path = dir.join(format!("{name}.cfg"));
    std::fs::write(&cfg_path, cfg).expect("writing grub.cfg");
    let iso = dir.join(format!("{name}.iso"));
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("assets/guests/build.sh"))
        .arg("grub-iso")
        .arg(&iso)
        .arg(&cfg_path);
    if let Some(e) = extra {
        cmd.arg(e);
    }
    let out = cmd.output().expect("running build.sh grub-iso");
    assert!(
        out.status.success(),
        "build.sh grub-iso failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// A fresh, empty scratch folder for one test under the guest dir
/// (target/guests/work/NAME); kept after the test for inspection.
pub fn work_dir(name: &str) -> PathBuf {
    let d = guest_dir().join("work").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating a work dir");
    d
}

/// Fails loudly when /dev/kvm is not usable: these tests need it.
pub fn require_kvm() {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => {}
        Err(e) => panic!(
            "this test needs /dev/kvm and cannot use it ({e}); run on a host with KVM, as root or in the kvm group"
        ),
    }
}

/// Why this host cannot run Linux guests, or Ok if it has hardware KVM.
pub fn hardware_kvm() -> Result<(), String> {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(
            "this host's KVM is kvm_pvm (no VT-x/AMD-V): Linux guests do not boot here".into(),
        );
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    if !flags.split_whitespace().any(|f| f == "vmx" || f == "svm") {
        return Err("this CPU shows neither vmx nor svm: no hardware-assisted KVM".into());
    }
    if !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm is missing".into());
    }
    Ok(())
}

/// For tests that need hardware KVM: panics with a plain NOT RUN message
/// where there is none, so they never pass by doing nothing.
pub fn require_hardware_kvm() {
    if let Err(why) = hardware_kvm() {
        panic!("NOT RUN: this test needs hardware-assisted KVM. {why}");
    }
}

/// Collects a VM's serial output and its stop reason from its events.
pub struct Console {
    rx: Receiver<VmEvent>,
    pub text: String,
    pub events: Vec<VmEvent>,
    pub stopped: Option<StopReason>,
}

impl Console {
    pub fn new(rx: Receiver<VmEvent>) -> Self {
        Console {
            rx,
            text: String::new(),
            events: Vec::new(),
            stopped: None,
        }
    }

    fn take(&mut self, ev: VmEvent) {
        match &ev {
            VmEvent::Serial(b) => self.text.push_str(&String::from_utf8_lossy(b)),
            VmEvent::Stopped(r) => self.stopped = Some(r.clone()),
            _ => {}
        }
        if !matches!(ev, VmEvent::Serial(_)) {
            self.events.push(ev);
        }
    }

    /// Drains what has arrived without waiting.
    pub fn poll(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.take(ev);
        }
    }

    /// Waits until the output contains `needle` (from `from` on), or panics
    /// with the output so far.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> usize {
        self.wait_for_from(needle, 0, timeout)
    }

    pub fn wait_for_from(&mut self, needle: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.text.get(from..).and_then(|t| t.find(needle)) {
                return from + i;
            }
            if self.stopped.is_some() {
                self.poll();
                if let Some(i) = self.text.get(from..).and_then(|t| t.find(needle)) {
                    return from + i;
                }
                panic!(
                    "VM stopped ({:?}) before printing {needle:?}; output:\n{}",
                    self.stopped, self.text
                );
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {needle:?}; output so far:\n{}",
                    self.text
                );
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(ev) => self.take(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("VM event channel closed; output:\n{}", self.text)
                }
            }
        }
    }

    /// Waits for the VM to stop and returns why.
    pub fn wait_stopped(&mut self, timeout: Duration) -> StopReason {
        let deadline = Instant::now() + timeout;
        while self.stopped.is_none() {
            let now = Instant::now();
            if now >= deadline {
                panic!("VM did not stop in {timeout:?}; output:\n{}", self.text);
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(ev) => self.take(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.stopped.clone().unwrap_or(StopReason::ForcedOff)
    }

    /// Collects output for `d`.
    pub fn collect_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(ev) => self.take(ev),
                Err(_) => return,
            }
        }
    }
}

/// Counts non-overlapping occurrences.
pub fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// A network namespace the test made, with bridge br100 at 10.0.0.1/24
/// (the seed's topology), removed on drop. Nothing touches the host's own
/// namespace.
pub struct Netns(String);

impl Netns {
    /// `prefix-PID`: one namespace per test process.
    pub fn create(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip(8)");
            assert!(st.success(), "ip {args:?} failed (root needed)");
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        for cmd in [
            "link set lo up",
            "link add br100 type bridge",
            "addr add 10.0.0.1/24 dev br100",
            "link set br100 up",
        ] {
            let mut a = vec!["-n", ns.0.as_str()];
            a.extend(cmd.split(' '));
            ip(&a);
        }
        ns
    }

    /// Runs `f` on a thread inside the namespace (TAPs made there stay there).
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        use std::os::fd::AsRawFd;
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on this thread only, with a namespace fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    }

    /// Pings `addr` from the namespace `count` times, waiting up to
    /// `wait_s` seconds for each answer; returns how many came back.
    pub fn ping(&self, addr: &str, count: u32, wait_s: u32) -> usize {
        let (c, w) = (count.to_string(), wait_s.to_string());
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ping", "-c", &c, "-W", &w, addr])
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| l.contains("bytes from") && l.contains(addr))
            .count()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
