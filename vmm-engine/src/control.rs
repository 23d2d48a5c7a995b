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
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// Starts serving `vm` on a Unix socket at `path`.
pub fn serve(vm: Arc<Vm>, path: impl AsRef<Path>) -> Result<ControlServer, ControlError> {
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
    let listener = UnixListener::bind(&path).map_err(io)?;
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(&path);
        return Err(io(e));
    }
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
}

fn read_line(r: &mut impl BufRead) -> Line {
    let mut buf = Vec::new();
    match r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
    {
        Ok(0) | Err(_) => Line::Closed,
        Ok(_) => {
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                Line::Request(buf)
            } else if buf.len() > MAX_LINE {
                Line::TooLong
            } else {
                // End of stream in the middle of a line: discard it.
                Line::Closed
            }
        }
    }
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
    let mut input = BufReader::new(stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let line = match read_line(&mut input) {
            Line::Closed => return,
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
            });
            if let (Some(s), Some(obj)) = (server, reply.as_object_mut()) {
                // Connected clients, this one included.
                obj.insert("clients".into(), json!(lock(&s.clients).streams.len()));
            }
            Ok(reply)
        }
        "screenshot" => {
            let path = str_arg(req, "path")?;
            if path.is_empty() {
                return Err("'path' is empty".into());
            }
            let fb = vm.display().snapshot();
            fb.save_png(Path::new(path)).map_err(|e| e.to_string())?;
            Ok(json!({
                "path": path,
                "width": fb.width,
                "height": fb.height,
                "generation": fb.generation,
            }))
        }
        "sandbox-probe" if crate::sandbox::probes_enabled() => crate::sandbox::probe(req),
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
