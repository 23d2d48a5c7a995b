//! The control socket: a Unix socket that takes line-delimited JSON
//! requests for a running [`Vm`], a small cousin of QEMU's QMP.
//!
//! One request per line, one reply line per request, in order:
//!
//! ```text
//! -> {"cmd":"screenshot","path":"/tmp/shot.png"}
//! <- {"ok":true,"width":720,"height":400,"generation":12}
//! -> {"cmd":"nonsense"}
//! <- {"ok":false,"error":"unknown command 'nonsense'"}
//! ```
//!
//! Commands: `status`, `screenshot` (`path`), `screen-text`, `send-keys`
//! (`keys`, QEMU `sendkey` style, e.g. `ctrl-alt-delete`; optional
//! `hold-ms`), `type` (`text`), `pause`, `resume`, `powerdown` (the ACPI
//! power button), `reset`, `quit` (pulls the plug). A request may carry an
//! `"id"` of any JSON type, which its reply repeats. docs/CONTROL.md is the
//! user-facing description.
//!
//! Robustness: each client has its own thread (at most [`MAX_CLIENTS`] at
//! once; one more is told so and dropped). A line longer than
//! [`MAX_LINE`] gets an error reply and the client is dropped. Garbage and
//! unknown commands get error replies. A client that disconnects mid-line
//! or mid-command harms nobody: its partial line is discarded and a reply
//! it can no longer receive is dropped. Nothing a client sends stops the
//! VM or the other clients.
//!
//! The socket file is created with mode 0600. A stale socket file (nobody
//! listening) is replaced at start; a live one is refused. The file is
//! removed when the [`ControlServer`] is dropped.
//!
//! Missing: events pushed to clients (QMP's asynchronous events),
//! capabilities negotiation, mouse input.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::devices::keys::{self, KeyCode};
use crate::vm::{Vm, VmState};

/// The most clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// The longest request line, in bytes (without the newline).
pub const MAX_LINE: usize = 64 * 1024;
/// The longest text a `type` request may carry, in characters.
pub const MAX_TYPE_CHARS: usize = 4096;
/// How long a key of `send-keys` is held by default (QEMU's default).
pub const DEFAULT_HOLD_MS: u64 = 100;
/// The longest `hold-ms` accepted.
pub const MAX_HOLD_MS: u64 = 10_000;
/// Time between key events while typing text.
const TYPE_STEP: Duration = Duration::from_millis(15);
/// A client that does not read its replies for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most serial bytes one `serial` reply carries.
pub const MAX_SERIAL_REPLY: usize = crate::devices::serial::SERIAL_SCROLLBACK;
/// The longest `wait-ms` of a `serial` request.
pub const MAX_SERIAL_WAIT_MS: u64 = 10_000;
/// The most bytes one `serial-input` request may carry.
pub const MAX_SERIAL_INPUT: usize = 16 * 1024;

/// How long clients may take. A client that sends nothing for `idle`
/// between requests, or takes longer than `line` to finish a request line
/// it has started, is told so and dropped, so idle or trickling clients
/// cannot hold every slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub idle: Duration,
    pub line: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: Duration::from_secs(300),
            line: Duration::from_secs(10),
        }
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {0}: another process is listening on it")]
    InUse(String),
    #[error("control socket {0}: the path exists and is not a socket")]
    NotASocket(String),
}

struct Clients {
    next_id: u64,
    /// A clone of each live client's stream, to shut it down on drop.
    streams: HashMap<u64, UnixStream>,
    threads: Vec<JoinHandle<()>>,
}

struct ServerShared {
    vm: Weak<Vm>,
    stop: AtomicBool,
    clients: Mutex<Clients>,
    served: AtomicU64,
    quit: AtomicBool,
    limits: Limits,
}

/// A running control socket. Dropping it stops serving, disconnects every
/// client and removes the socket file. It keeps the VM alive while it
/// exists.
pub struct ControlServer {
    path: PathBuf,
    shared: Arc<ServerShared>,
    accept: Option<JoinHandle<()>>,
    /// The listening socket, to wake the accept loop on drop.
    listener: Option<UnixListener>,
    _vm: Arc<Vm>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .finish()
    }
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a client asked the VM to quit (the `quit` command).
    pub fn quit_requested(&self) -> bool {
        self.shared.quit.load(Ordering::SeqCst)
    }

    /// How many client connections were accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }
}

/// Starts serving `vm` on a Unix socket at `path`, with the default
/// [`Limits`].
pub fn serve(vm: Arc<Vm>, path: impl AsRef<Path>) -> Result<ControlServer, ControlError> {
    serve_with(vm, path, Limits::default())
}

/// Binds a listening socket at `path` that nobody else can reach at any
/// moment: it is bound inside a fresh 0700 directory beside `path`, set to
/// 0600 there, and renamed into place.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut dir_name = std::ffi::OsString::from(".");
    dir_name.push(name);
    dir_name.push(format!(".{}.bind", std::process::id()));
    let dir = parent.join(dir_name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let tmp = dir.join("s");
    let result = (|| {
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// [`serve`] with explicit client [`Limits`].
pub fn serve_with(
    vm: Arc<Vm>,
    path: impl AsRef<Path>,
    limits: Limits,
) -> Result<ControlServer, ControlError> {
    let path = path.as_ref().to_path_buf();
    let shown = path.display().to_string();
    let io = |source| ControlError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(md) if md.file_type().is_socket() => {
            if UnixStream::connect(&path).is_ok() {
                return Err(ControlError::InUse(shown));
            }
            std::fs::remove_file(&path).map_err(io)?;
        }
        Ok(_) => return Err(ControlError::NotASocket(shown)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = bind_private(&path).map_err(io)?;
    let shared = Arc::new(ServerShared {
        vm: Arc::downgrade(&vm),
        stop: AtomicBool::new(false),
        clients: Mutex::new(Clients {
            next_id: 0,
            streams: HashMap::new(),
            threads: Vec::new(),
        }),
        served: AtomicU64::new(0),
        quit: AtomicBool::new(false),
        limits,
    });
    let waker = listener.try_clone().ok();
    let s = shared.clone();
    let accept = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(listener, s))
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            io(e)
        })?;
    Ok(ControlServer {
        path,
        shared,
        accept: Some(accept),
        listener: waker,
        _vm: vm,
    })
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop: shutting the listening socket down makes a
        // blocked accept() fail; a connection of our own covers the rest.
        if let Some(l) = &self.listener {
            // SAFETY: shutdown(2) on a descriptor this struct owns; it
            // touches no memory.
            unsafe {
                libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads = {
            let mut c = lock(&self.shared.clients);
            for s in c.streams.values() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            std::mem::take(&mut c.threads)
        };
        for t in threads {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: UnixListener, shared: Arc<ServerShared>) {
    // The client threads it starts inherit the filter.
    crate::sandbox::enter(crate::sandbox::Role::Control);
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                log::warn!("control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut c = lock(&shared.clients);
        // Reap finished client threads.
        let (done, live): (Vec<_>, Vec<_>) = std::mem::take(&mut c.threads)
            .into_iter()
            .partition(|t| t.is_finished());
        c.threads = live;
        for t in done {
            let _ = t.join();
        }
        if c.streams.len() >= MAX_CLIENTS {
            drop(c);
            let _ = send(
                &mut stream,
                &error_reply(None, &format!("too many clients (at most {MAX_CLIENTS})")),
            );
            continue;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = c.next_id;
        c.next_id += 1;
        c.streams.insert(id, clone);
        shared.served.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("control-client{id}"))
            .spawn(move || {
                crate::sandbox::inherited(crate::sandbox::Role::Control);
                serve_client(stream, &s);
                lock(&s.clients).streams.remove(&id);
            });
        match spawned {
            Ok(t) => c.threads.push(t),
            Err(e) => {
                log::warn!("control socket: cannot start a client thread: {e}");
                c.streams.remove(&id);
            }
        }
    }
}

/// What reading one request line gave.
enum Line {
    Request(Vec<u8>),
    TooLong,
    Closed,
    /// Nothing arrived for [`Limits::idle`], or a started line took longer
    /// than [`Limits::line`].
    TimedOut(&'static str),
}

/// Reads one request line, setting the stream's read timeout before each
/// read through `set_timeout`.
fn read_line_timed(
    r: &mut impl BufRead,
    set_timeout: &mut dyn FnMut(Duration),
    limits: Limits,
) -> Line {
    let mut buf = Vec::new();
    let mut line_deadline: Option<std::time::Instant> = None;
    loop {
        let timeout = match line_deadline {
            None => limits.idle,
            Some(d) => {
                let now = std::time::Instant::now();
                if now >= d {
                    return Line::TimedOut("request line not finished in time");
                }
                d - now
            }
        };
        set_timeout(timeout.max(Duration::from_millis(1)));
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Line::TimedOut(if line_deadline.is_none() {
                    "idle for too long"
                } else {
                    "request line not finished in time"
                });
            }
            Err(_) => return Line::Closed,
        };
        if avail.is_empty() {
            // End of stream (a partial line is discarded).
            return Line::Closed;
        }
        if line_deadline.is_none() {
            line_deadline = Some(std::time::Instant::now() + limits.line);
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if buf.len() > MAX_LINE {
                return Line::TooLong;
            }
            return Line::Request(buf);
        }
        if buf.len() > MAX_LINE {
            return Line::TooLong;
        }
    }
}

#[cfg(test)]
fn read_line(r: &mut impl BufRead) -> Line {
    read_line_timed(r, &mut |_| {}, Limits::default())
}

fn send(w: &mut impl Write, reply: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

fn serve_client(stream: UnixStream, shared: &ServerShared) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let Ok(timer) = stream.try_clone() else {
        return;
    };
    let mut set_timeout = |d: Duration| {
        let _ = timer.set_read_timeout(Some(d));
    };
    let mut input = BufReader::new(stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let line = match read_line_timed(&mut input, &mut set_timeout, shared.limits) {
            Line::Closed => return,
            Line::TimedOut(why) => {
                let _ = send(&mut out, &error_reply(None, &format!("{why}: closing")));
                return;
            }
            Line::TooLong => {
                let _ = send(
                    &mut out,
                    &error_reply(None, &format!("request line longer than {MAX_LINE} bytes")),
                );
                return;
            }
            Line::Request(l) => l,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match shared.vm.upgrade() {
            Some(vm) => handle(&vm, &line, Some(shared)),
            None => error_reply(None, "the VM is gone"),
        };
        if send(&mut out, &reply).is_err() {
            return;
        }
    }
}

fn error_reply(id: Option<&Value>, msg: &str) -> Value {
    let mut m = Map::new();
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    m.insert("ok".into(), Value::Bool(false));
    m.insert("error".into(), Value::String(msg.into()));
    Value::Object(m)
}

/// Runs one request line against `vm` and returns the reply. Public so the
/// protocol can be exercised without a socket.
pub fn handle_line(vm: &Vm, line: &[u8]) -> Value {
    handle(vm, line, None)
}

/// [`handle_line`] for a server: `quit` is recorded, and long key
/// sequences stop early when the server shuts down.
fn handle(vm: &Vm, line: &[u8], server: Option<&ServerShared>) -> Value {
    let req: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return error_reply(None, &format!("invalid JSON: {e}")),
    };
    let Value::Object(req) = req else {
        return error_reply(None, "a request must be a JSON object");
    };
    let id = req.get("id");
    match run_command(vm, &req, server) {
        Ok(Value::Object(mut m)) => {
            let mut out = Map::new();
            if let Some(id) = id {
                out.insert("id".into(), id.clone());
            }
            out.insert("ok".into(), Value::Bool(true));
            out.append(&mut m);
            Value::Object(out)
        }
        Ok(_) => error_reply(id, "internal error: bad reply"),
        Err(e) => error_reply(id, &e),
    }
}

fn str_arg<'a>(req: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match req.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("'{name}' must be a string")),
        None => Err(format!("missing '{name}'")),
    }
}

/// An optional unsigned integer argument, at most `max`.
fn opt_u64(req: &Map<String, Value>, name: &str, max: u64) -> Result<Option<u64>, String> {
    match req.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&x| x <= max)
            .map(Some)
            .ok_or_else(|| format!("'{name}' must be an integer 0..={max}")),
    }
}

/// Where a `screenshot` with a `path` may write: an absolute path ending
/// in `.png`, in an existing folder owned by the user this process runs
/// as. (The file is written under a temporary name and renamed, so a
/// symlink at the path is replaced, never followed.)
fn confined_screenshot_path(path: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    if path.is_empty() {
        return Err("'path' is empty".into());
    }
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(format!("'path' {path} must be absolute"));
    }
    if p.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(format!("'path' {path} must end in .png"));
    }
    let parent = p
        .parent()
        .ok_or_else(|| format!("'path' {path} has no folder"))?;
    let md = std::fs::metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !md.is_dir() || md.uid() != me {
        return Err(format!(
            "'path' {path}: screenshots go only into folders you own (or omit 'path' to get the PNG in the reply)"
        ));
    }
    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
        return Err(format!("'path' {path} is a folder"));
    }
    Ok(p)
}

fn state_name(s: VmState) -> &'static str {
    match s {
        VmState::Created => "created",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Stopped => "stopped",
    }
}

fn require_running(vm: &Vm) -> Result<(), String> {
    match vm.state() {
        VmState::Running | VmState::Paused => Ok(()),
        s => Err(format!("the VM is {}", state_name(s))),
    }
}

fn run_command(
    vm: &Vm,
    req: &Map<String, Value>,
    server: Option<&ServerShared>,
) -> Result<Value, String> {
    let stopping = || server.is_some_and(|s| s.stop.load(Ordering::SeqCst));
    let cmd = str_arg(req, "cmd")?;
    match cmd {
        "status" => {
            let fb = vm.display().snapshot();
            let mut reply = json!({
                "name": vm.spec().name,
                "state": state_name(vm.state()),
                "display": {
                    "width": fb.width,
                    "height": fb.height,
                    "generation": fb.generation,
                    "text-mode": vm.screen_text().is_some(),
                },
                "serial-end": vm.serial_since(u64::MAX, 0, None).end,
                "pid": std::process::id(),
            });
            if let (Some(s), Some(obj)) = (server, reply.as_object_mut()) {
                // Connected clients, this one included.
                obj.insert("clients".into(), json!(lock(&s.clients).streams.len()));
            }
            Ok(reply)
        }
        "screenshot" => {
            let fb = vm.display().snapshot();
            let mut reply = json!({
                "width": fb.width,
                "height": fb.height,
                "generation": fb.generation,
            });
            match req.get("path") {
                // Without a path the PNG comes back in the reply.
                None => {
                    let mut png = Vec::new();
                    fb.write_png(&mut png).map_err(|e| e.to_string())?;
                    reply["png"] = json!(B64.encode(&png));
                }
                Some(_) => {
                    let path = confined_screenshot_path(str_arg(req, "path")?)?;
                    fb.save_png(&path).map_err(|e| e.to_string())?;
                    reply["path"] = json!(path.to_string_lossy());
                }
            }
            Ok(reply)
        }
        "serial" => {
            let since = opt_u64(req, "since", u64::MAX)?.unwrap_or(0);
            let max = opt_u64(req, "max", MAX_SERIAL_REPLY as u64)?
                .map_or(MAX_SERIAL_REPLY, |m| m as usize);
            let wait = opt_u64(req, "wait-ms", MAX_SERIAL_WAIT_MS)?.map(Duration::from_millis);
            let c = vm.serial_since(since, max, wait);
            Ok(json!({
                "start": c.start,
                "end": c.end,
                "lost": c.lost,
                "data": B64.encode(&c.bytes),
            }))
        }
        "sandbox-probe" if crate::sandbox::probes_enabled() => crate::sandbox::probe(req),
        "serial-input" => {
            let data = B64
                .decode(str_arg(req, "data")?)
                .map_err(|e| format!("'data' is not base64: {e}"))?;
            if data.len() > MAX_SERIAL_INPUT {
                return Err(format!(
                    "'data' too long ({} bytes, at most {MAX_SERIAL_INPUT})",
                    data.len()
                ));
            }
            require_running(vm)?;
            vm.serial_input(&data);
            Ok(json!({ "bytes": data.len() }))
        }
        "key" => {
            let name = str_arg(req, "key")?;
            let key = match keys::parse_key_combo(name).map_err(|e| e.to_string())?[..] {
                [k] => k,
                _ => return Err("'key' names one key (use send-keys for combinations)".into()),
            };
            let down = match req.get("down") {
                Some(Value::Bool(b)) => *b,
                _ => return Err("'down' must be true or false".into()),
            };
            require_running(vm)?;
            vm.key_event(key, down);
            Ok(json!({}))
        }
        "mouse" => {
            let int = |n: &str| -> Result<i32, String> {
                match req.get(n) {
                    None => Ok(0),
                    Some(v) => v
                        .as_i64()
                        .filter(|x| x.unsigned_abs() <= 4096)
                        .map(|x| x as i32)
                        .ok_or_else(|| format!("'{n}' must be an integer -4096..=4096")),
                }
            };
            let (dx, dy, dz) = (int("dx")?, int("dy")?, int("dz")?);
            let buttons = opt_u64(req, "buttons", 7)?.unwrap_or(0) as u8;
            require_running(vm)?;
            vm.mouse_event(dx, dy, dz, buttons);
            Ok(json!({}))
        }
        "screen-text" => match vm.screen_text() {
            Some(rows) => Ok(json!({ "text": rows })),
            None => Err("the guest's screen is not in a text mode".into()),
        },
        "send-keys" => {
            let combo = str_arg(req, "keys")?;
            let keys = keys::parse_key_combo(combo).map_err(|e| e.to_string())?;
            let hold = match req.get("hold-ms") {
                None => DEFAULT_HOLD_MS,
                Some(v) => v
                    .as_u64()
                    .filter(|&ms| ms <= MAX_HOLD_MS)
                    .ok_or_else(|| format!("'hold-ms' must be an integer 0..={MAX_HOLD_MS}"))?,
            };
            require_running(vm)?;
            send_combo(vm, &keys, Duration::from_millis(hold), &stopping);
            let names: Vec<&str> = keys.iter().map(|k| k.qemu_name()).collect();
            Ok(json!({ "keys": names }))
        }
        "type" => {
            let text = str_arg(req, "text")?;
            let n = text.chars().count();
            if n > MAX_TYPE_CHARS {
                return Err(format!(
                    "text too long ({n} characters, at most {MAX_TYPE_CHARS})"
                ));
            }
            let keys = keys::keys_for_text(text).map_err(|e| e.to_string())?;
            require_running(vm)?;
            for (key, shift) in &keys {
                if stopping() {
                    return Err("interrupted: the control socket is closing".into());
                }
                type_key(vm, *key, *shift);
            }
            Ok(json!({ "keys": keys.len() }))
        }
        "pause" => {
            require_running(vm)?;
            vm.pause();
            Ok(json!({ "state": state_name(vm.state()) }))
        }
        "resume" => {
            require_running(vm)?;
            vm.resume();
            Ok(json!({ "state": state_name(vm.state()) }))
        }
        "powerdown" => {
            require_running(vm)?;
            vm.power_button();
            Ok(json!({}))
        }
        "reset" => {
            require_running(vm)?;
            vm.reset();
            Ok(json!({}))
        }
        "quit" => {
            if let Some(s) = server {
                s.quit.store(true, Ordering::SeqCst);
            }
            vm.power_off();
            Ok(json!({}))
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(format!("unknown command '{shown}'"))
        }
    }
}

/// Presses the keys in order, holds them, releases them in reverse.
/// The hold ends early when `stop` says so; the keys are released anyway.
fn send_combo(vm: &Vm, keys: &[KeyCode], hold: Duration, stop: &dyn Fn() -> bool) {
    for k in keys {
        vm.key_event(*k, true);
        std::thread::sleep(TYPE_STEP);
    }
    let until = std::time::Instant::now() + hold;
    while !stop() {
        let now = std::time::Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
    for k in keys.iter().rev() {
        vm.key_event(*k, false);
        std::thread::sleep(TYPE_STEP);
    }
}

fn type_key(vm: &Vm, key: KeyCode, shift: bool) {
    if shift {
        vm.key_event(KeyCode::ShiftLeft, true);
        std::thread::sleep(TYPE_STEP);
    }
    vm.key_event(key, true);
    std::thread::sleep(TYPE_STEP);
    vm.key_event(key, false);
    std::thread::sleep(TYPE_STEP);
    if shift {
        vm.key_event(KeyCode::ShiftLeft, false);
        std::thread::sleep(TYPE_STEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn read_line_limits_and_partial_lines() {
        let mut r = Cursor::new(b"{\"cmd\":\"status\"}\r\nabc\n".to_vec());
        assert!(matches!(read_line(&mut r), Line::Request(l) if l == b"{\"cmd\":\"status\"}"));
        assert!(matches!(read_line(&mut r), Line::Request(l) if l == b"abc"));
        assert!(matches!(read_line(&mut r), Line::Closed));

        // A line of exactly MAX_LINE bytes is fine; one more byte is not.
        let mut ok = vec![b'x'; MAX_LINE];
        ok.push(b'\n');
        assert!(matches!(read_line(&mut Cursor::new(ok)), Line::Request(l) if l.len() == MAX_LINE));
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(matches!(read_line(&mut Cursor::new(long)), Line::TooLong));
        // A half line at the end of the stream is discarded.
        assert!(matches!(
            read_line(&mut Cursor::new(b"{\"cmd\":\"quit\"".to_vec())),
            Line::Closed
        ));
    }

    #[test]
    fn error_reply_shape() {
        let v = error_reply(Some(&json!(7)), "bad");
        assert_eq!(v, json!({"id": 7, "ok": false, "error": "bad"}));
        let line = serde_json::to_string(&error_reply(None, "x\ny")).unwrap();
        assert!(!line.contains('\n'), "a reply is one line: {line}");
    }

    #[test]
    fn key_combos_parse_as_the_protocol_documents() {
        let k = keys::parse_key_combo("ctrl-alt-delete").unwrap();
        assert_eq!(k.len(), 3);
        assert!(keys::parse_key_combo("ctrl-nosuchkey").is_err());
        assert_eq!(keys::keys_for_text("ls\n").unwrap().len(), 3);
    }
}
