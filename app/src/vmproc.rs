//! Per-VM processes: where their sockets and logs live, how one is
//! started (the `vireo` binary itself, `vireo run --vm NAME --background`,
//! detached with setsid), and a small client for their control sockets.
//!
//! Each running VM has `NAME.sock` (its control socket, docs/CONTROL.md)
//! and `NAME.log` (the process's stderr) in the runtime folder:
//! `$XDG_RUNTIME_DIR/vireo`, or `/tmp/vireo-UID` when XDG_RUNTIME_DIR is
//! unset. The folder is created 0700 and must belong to the user.

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a reply may take (a `send-keys` holds keys; a long poll waits).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `start` waits for a new VM process to answer on its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime folder for one environment (a variable lookup, so tests
/// don't touch the process environment).
pub fn runtime_dir_from(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    match get("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p.join("vireo"),
        // SAFETY: getuid has no preconditions.
        _ => PathBuf::from(format!("/tmp/vireo-{}", unsafe { libc::getuid() })),
    }
}

/// The runtime folder, created 0700 if missing. An existing one must be a
/// folder owned by this user; its mode is set to 0700.
pub fn runtime_dir() -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = runtime_dir_from(|k| std::env::var_os(k));
    match std::fs::DirBuilder::new()
        .recursive(false)
        .mode(0o700)
        .create(&dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let md = std::fs::symlink_metadata(&dir).with_context(|| format!("{}", dir.display()))?;
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    if !md.is_dir() || md.uid() != me {
        bail!(
            "{} is not a folder of yours: remove it, or set XDG_RUNTIME_DIR to a private folder",
            dir.display()
        );
    }
    if md.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(dir)
}

pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// The last `n` lines of a VM process's log (for error messages).
pub fn log_tail(dir: &Path, name: &str, n: usize) -> String {
    let text = std::fs::read(log_path(dir, name)).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One connection to a VM's control socket.
pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    pub fn connect(sock: &Path) -> std::io::Result<Client> {
        let w = UnixStream::connect(sock)?;
        w.set_read_timeout(Some(REPLY_TIMEOUT))?;
        w.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Client {
            r: BufReader::new(w.try_clone()?),
            w,
        })
    }

    /// Sends a request, returns the reply (an error reply is an `Err`).
    pub fn call(&mut self, req: &Value) -> Result<Value> {
        let reply = self.call_raw(req)?;
        if reply.get("ok") != Some(&Value::Bool(true)) {
            let msg = reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the VM refused the request");
            bail!("{msg}");
        }
        Ok(reply)
    }

    /// Sends a request, returns whatever reply came.
    pub fn call_raw(&mut self, req: &Value) -> Result<Value> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.w.write_all(&line).context("sending the request")?;
        let mut reply = String::new();
        self.r.read_line(&mut reply).context("reading the reply")?;
        if reply.is_empty() {
            bail!("the VM process closed the connection");
        }
        serde_json::from_str(&reply).with_context(|| format!("bad reply {reply:?}"))
    }

    /// Serial output from `since` on; waits up to `wait` for new bytes.
    /// Returns (bytes, next cursor, bytes lost to the ring).
    pub fn serial(&mut self, since: u64, wait: Duration) -> Result<(Vec<u8>, u64, u64)> {
        let r = self.call(&json!({
            "cmd": "serial",
            "since": since,
            "wait-ms": wait.as_millis().min(10_000) as u64,
        }))?;
        let data = B64
            .decode(r["data"].as_str().unwrap_or(""))
            .context("bad serial data")?;
        Ok((
            data,
            r["end"].as_u64().unwrap_or(since),
            r["lost"].as_u64().unwrap_or(0),
        ))
    }

    /// The screen as a PNG file's bytes.
    pub fn screenshot_png(&mut self) -> Result<Vec<u8>> {
        let r = self.call(&json!({ "cmd": "screenshot" }))?;
        B64.decode(r["png"].as_str().unwrap_or(""))
            .context("bad PNG data in the reply")
    }
}

/// What a runtime folder says about one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// No socket.
    Absent,
    /// A socket nobody answers on: its process died without cleaning up.
    Stale,
    /// The process answered `status`: its state ("running", "paused",
    /// "stopped", ...) and pid.
    Alive { state: String, pid: u32 },
}

pub fn probe(dir: &Path, name: &str) -> Probe {
    let sock = socket_path(dir, name);
    if std::fs::symlink_metadata(&sock).is_err() {
        return Probe::Absent;
    }
    let st = Client::connect(&sock)
        .map_err(anyhow::Error::from)
        .and_then(|mut c| c.call(&json!({"cmd": "status"})));
    match st {
        Ok(st) => Probe::Alive {
            state: st["state"].as_str().unwrap_or("unknown").to_string(),
            pid: st["pid"].as_u64().unwrap_or(0) as u32,
        },
        Err(_) => Probe::Stale,
    }
}

/// The names of the VMs with a socket in the runtime folder.
pub fn socket_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_suffix(".sock").map(str::to_string)
        })
        .filter(|n| crate::library::check_name(n).is_ok())
        .collect();
    v.sort();
    v
}

/// Starts the VM process for the defined VM `name`: `vireo_bin run --vm
/// NAME --background`, in a session of its own, stdio to NAME.log. Waits
/// until it answers on its socket. Returns the child (the caller may wait
/// for it to learn its exit status; it outlives the caller either way).
pub fn spawn(vireo_bin: &Path, dir: &Path, name: &str) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    if let Probe::Alive { .. } = probe(dir, name) {
        bail!("{name} is already running");
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(log_path(dir, name))
        .with_context(|| format!("creating {}", log_path(dir, name).display()))?;
    let mut cmd = std::process::Command::new(vireo_bin);
    cmd.args(["run", "--background", "--vm", name])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", vireo_bin.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Probe::Alive { .. } = probe(dir, name) {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the VM process for {name} ended ({status}) before it was ready:\n{}",
                log_tail(dir, name, 10)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the VM process for {name} did not answer within {} s:\n{}",
                START_TIMEOUT.as_secs(),
                log_tail(dir, name, 10)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_follows_xdg_and_falls_back_per_user() {
        let d = runtime_dir_from(|k| (k == "XDG_RUNTIME_DIR").then(|| "/run/user/7".into()));
        assert_eq!(d, PathBuf::from("/run/user/7/vireo"));
        let fallback = runtime_dir_from(|_| None);
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(fallback, PathBuf::from(format!("/tmp/vireo-{uid}")));
        // A relative XDG_RUNTIME_DIR is ignored, as the spec says.
        assert_eq!(
            runtime_dir_from(|_| Some("relative".into())),
            PathBuf::from(format!("/tmp/vireo-{uid}"))
        );
    }

    #[test]
    fn probe_tells_absent_from_stale_sockets() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(probe(t.path(), "a"), Probe::Absent);
        drop(std::os::unix::net::UnixListener::bind(socket_path(t.path(), "a")).unwrap());
        assert_eq!(probe(t.path(), "a"), Probe::Stale);
        std::fs::write(t.path().join("not a vm!.sock"), b"").unwrap();
        assert_eq!(socket_names(t.path()), vec!["a".to_string()]);
    }
}
