//! The control socket (vmm_engine::control) with a running VM: every
//! command, and clients that misbehave (garbage, unknown commands,
//! oversized lines, disconnecting mid-command, too many at once, a
//! screenshot path that cannot be written). The VM must keep running and
//! answering through all of it. The guest is the tiny direct-boot one
//! (`noecho action=halt`: it prints its banner and halts), which is cheap.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use vireo_tests::{guest, require_kvm, Console};
use vmm_engine::control::{self, ControlError, MAX_CLIENTS, MAX_LINE};
use vmm_engine::{StopReason, Vm, VmEvent, VmSpec};

const T: Duration = Duration::from_secs(60);

fn boot() -> (Arc<Vm>, Console) {
    require_kvm();
    let mut s = VmSpec::linux(guest("tiny", "bootproto.bin"));
    s.memory_mib = 64;
    if let vmm_engine::BootSpec::Linux(l) = &mut s.boot {
        l.cmdline = "console=ttyS0 noecho action=halt".into();
    }
    let vm = Arc::new(Vm::create(s).expect("creating the VM"));
    let mut con = Console::new(vm.events());
    vm.start().expect("starting the VM");
    con.wait_for("cmdline:", T);
    (vm, con)
}

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let w = UnixStream::connect(path).expect("connecting to the control socket");
        w.set_read_timeout(Some(T)).unwrap();
        Client {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("writing to the socket");
    }

    fn reply(&mut self) -> Value {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("reading a reply");
        assert!(line.ends_with('\n'), "reply is not a full line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    fn call(&mut self, req: &str) -> Value {
        self.send_raw(req.as_bytes());
        self.send_raw(b"\n");
        self.reply()
    }

    /// The server closed the connection (after any pending reply).
    fn closed(&mut self) -> bool {
        // Closing a Unix socket with unread input resets it: that is
        // closed too.
        let mut rest = Vec::new();
        match self.r.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut px = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut px).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    px.truncate(info.buffer_size());
    (info.width, info.height, px)
}

fn ok(v: &Value) -> bool {
    v["ok"] == json!(true)
}

fn err_contains(v: &Value, needle: &str) {
    assert_eq!(v["ok"], json!(false), "expected an error reply: {v}");
    let e = v["error"].as_str().unwrap_or("");
    assert!(e.contains(needle), "error {e:?} lacks {needle:?}");
}

fn assert_running(sock: &Path) {
    let st = Client::connect(sock).call(r#"{"cmd":"status"}"#);
    assert!(ok(&st), "{st}");
    assert_eq!(st["state"], "running", "{st}");
}

#[test]
fn commands_work_on_a_running_vm() {
    let (vm, mut con) = boot();
    let dir = vireo_tests::work_dir("control-commands");
    let sock = dir.join("vm.sock");
    let server = control::serve(vm.clone(), &sock).expect("serving");
    let mut c = Client::connect(&sock);

    let st = c.call(r#"{"cmd":"status","id":"a1"}"#);
    assert!(ok(&st), "{st}");
    assert_eq!(st["id"], "a1");
    assert_eq!(st["state"], "running");
    assert_eq!(st["name"], vm.spec().name.as_str());

    // Direct boot has no VGA BIOS: the screen is blank (black). Once the
    // display has drawn it, the screenshot is that frame.
    let t0 = std::time::Instant::now();
    while vm.display().generation() == 0 {
        assert!(t0.elapsed() < T, "the display never drew a frame");
        std::thread::sleep(Duration::from_millis(20));
    }
    let shot = dir.join("shot.png");
    let r = c.call(&json!({"cmd": "screenshot", "path": shot}).to_string());
    assert!(ok(&r), "{r}");
    let fb = vm.display().snapshot();
    assert_eq!(r["width"].as_u64(), Some(fb.width as u64));
    assert_eq!(read_png(&shot), (fb.width, fb.height, fb.pixels.to_vec()));

    // Put a known frame on the VM's display, as the VGA device would; the
    // screenshot is exactly that frame, as a PNG.
    let (w, h) = (64u32, 48u32);
    let mut pattern = Vec::new();
    for y in 0..h {
        for x in 0..w {
            pattern.extend_from_slice(&[x as u8 * 4, y as u8 * 5, (x ^ y) as u8, 255]);
        }
    }
    // The VM's own display thread keeps drawing (a text cursor blinks), so
    // it can replace the frame at any moment. A reply that shows another
    // generation than the one presented is retried; the checks below apply
    // only to replies about the presented frame, so the test never races
    // the VM's threads.
    let mut checked = false;
    for _ in 0..50 {
        let mut buf = pattern.clone();
        assert!(vm.display().present(w, h, &mut buf));
        let generation = vm.display().generation();
        let r = c.call(&json!({"cmd": "screenshot", "path": shot}).to_string());
        assert!(ok(&r), "{r}");
        let st = c.call(r#"{"cmd":"status"}"#);
        if r["generation"].as_u64() != Some(generation)
            || st["display"]["generation"].as_u64() != Some(generation)
        {
            continue;
        }
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(64), Some(48))
        );
        assert_eq!(st["display"]["width"], json!(64), "{st}");
        // The PNG was written while the generation was still ours.
        assert_eq!(read_png(&shot), (w, h, pattern.clone()));
        checked = true;
        break;
    }
    assert!(
        checked,
        "the VM's display replaced the presented frame before every one of 50 screenshots"
    );
    // Without a path the PNG comes back in the reply.
    let r = c.call(r#"{"cmd":"screenshot"}"#);
    assert!(ok(&r), "{r}");
    let png_bytes = B64.decode(r["png"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("inline.png"), png_bytes).unwrap();
    // (Its own size: the display thread may have drawn its frame again.)
    let (iw, ih, _) = read_png(&dir.join("inline.png"));
    assert_eq!(
        (Some(iw as u64), Some(ih as u64)),
        (r["width"].as_u64(), r["height"].as_u64())
    );
    // The guest is not in a text mode the VGA can show.
    let r = c.call(r#"{"cmd":"screen-text"}"#);
    assert!(
        ok(&r) || r["error"].as_str().unwrap_or("").contains("text mode"),
        "{r}"
    );

    // Pause and resume, with the VM's own state agreeing.
    let r = c.call(r#"{"cmd":"pause"}"#);
    assert_eq!(r["state"], "paused", "{r}");
    assert_eq!(vm.state(), vmm_engine::VmState::Paused);
    assert_eq!(c.call(r#"{"cmd":"status"}"#)["state"], "paused");
    let r = c.call(r#"{"cmd":"resume"}"#);
    assert_eq!(r["state"], "running", "{r}");
    assert_eq!(vm.state(), vmm_engine::VmState::Running);

    // Keys: a combo and text; bad names are error replies.
    let r = c.call(r#"{"cmd":"send-keys","keys":"ctrl-alt-delete","hold-ms":10}"#);
    assert!(ok(&r), "{r}");
    assert_eq!(r["keys"], json!(["ctrl", "alt", "delete"]));
    let r = c.call(r#"{"cmd":"type","text":"ls -l\n"}"#);
    assert_eq!(r["keys"], json!(6), "{r}");
    err_contains(
        &c.call(r#"{"cmd":"send-keys","keys":"ctrl-nosuchkey"}"#),
        "nosuchkey",
    );
    err_contains(
        &c.call(r#"{"cmd":"send-keys","keys":"a","hold-ms":-1}"#),
        "hold-ms",
    );
    err_contains(&c.call(r#"{"cmd":"type","text":"\u00e9"}"#), "");
    err_contains(&c.call(r#"{"cmd":"type"}"#), "missing 'text'");
    err_contains(&c.call(r#"{"cmd":"type","text":5}"#), "must be a string");
    let long = "a".repeat(control::MAX_TYPE_CHARS + 1);
    err_contains(
        &c.call(&json!({"cmd":"type","text":long}).to_string()),
        "too long",
    );
    assert!(ok(&c.call(r#"{"cmd":"powerdown"}"#)));

    // A reset restarts the machine; the socket keeps serving.
    assert!(ok(&c.call(r#"{"cmd":"reset"}"#)));
    con.wait_for_from("cmdline:", con.text.len(), T);
    assert!(con.events.contains(&VmEvent::Reset), "{:?}", con.events);
    assert_running(&sock);

    // quit pulls the plug.
    assert!(ok(&c.call(r#"{"cmd":"quit"}"#)));
    assert_eq!(con.wait_stopped(T), StopReason::ForcedOff);
    let st = c.call(r#"{"cmd":"status"}"#);
    assert_eq!(st["state"], "stopped", "{st}");
    err_contains(&c.call(r#"{"cmd":"pause"}"#), "stopped");

    // Dropping the server disconnects clients and removes the socket.
    drop(server);
    assert!(c.closed());
    assert!(!sock.exists());
}

#[test]
fn bad_clients_get_errors_and_the_vm_keeps_running() {
    let (vm, _con) = boot();
    let dir = vireo_tests::work_dir("control-robust");
    let sock = dir.join("vm.sock");
    let _server = control::serve(vm.clone(), &sock).expect("serving");
    let mut a = Client::connect(&sock);
    let mut b = Client::connect(&sock);

    // Garbage, not an object, no command, unknown command: error replies,
    // and the connection stays usable.
    err_contains(&a.call("this is not json"), "invalid JSON");
    a.send_raw(&[0xff, 0xfe, 0x00, 0x01, b'\n']);
    err_contains(&a.reply(), "invalid JSON");
    err_contains(&a.call("[1,2,3]"), "JSON object");
    err_contains(&a.call(r#"{"id":3}"#), "missing 'cmd'");
    let r = a.call(r#"{"cmd":"frobnicate","id":[1]}"#);
    err_contains(&r, "unknown command 'frobnicate'");
    assert_eq!(r["id"], json!([1]));
    err_contains(&a.call(r#"{"cmd":42}"#), "must be a string");
    // Blank lines are ignored, the next request is answered.
    assert!(ok(&a.call("\n  \r\n{\"cmd\":\"status\"}")));

    // Screenshot paths that cannot be written.
    std::fs::create_dir_all(dir.join("d.png")).unwrap();
    err_contains(
        &a.call(r#"{"cmd":"screenshot","path":"/nonexistent-vireo-dir/x.png"}"#),
        "nonexistent-vireo-dir",
    );
    err_contains(
        &a.call(&json!({"cmd":"screenshot","path": dir}).to_string()),
        "must end in .png",
    );
    err_contains(
        &a.call(&json!({"cmd":"screenshot","path": dir.join("d.png")}).to_string()),
        "",
    );
    err_contains(&a.call(r#"{"cmd":"screenshot","path":""}"#), "empty");
    // Confined: only absolute .png paths in folders the user owns.
    err_contains(
        &a.call(r#"{"cmd":"screenshot","path":"rel.png"}"#),
        "absolute",
    );
    // A folder owned by someone else (made so when running as root).
    // SAFETY: geteuid has no preconditions.
    let theirs = if unsafe { libc::geteuid() } == 0 {
        let d = dir.join("theirs");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        d
    } else {
        std::path::PathBuf::from("/etc")
    };
    err_contains(
        &a.call(&json!({"cmd":"screenshot","path": theirs.join("x.png")}).to_string()),
        "folders you own",
    );
    assert!(!theirs.join("x.png").exists());
    err_contains(
        &a.call(r#"{"cmd":"screenshot","path":"/tmp/vireo-x.txt"}"#),
        ".png",
    );

    // Two clients interleaved: each gets its own replies, in order.
    for i in 0..5 {
        let ra = a.call(&format!(r#"{{"cmd":"status","id":{i}}}"#));
        let rb = b.call(&format!(r#"{{"cmd":"nope","id":{}}}"#, 100 + i));
        assert_eq!(ra["id"], json!(i));
        assert!(ok(&ra));
        assert_eq!(rb["id"], json!(100 + i));
        assert!(!ok(&rb));
    }

    // Oversized line: an error reply, then the client is dropped. The
    // other client is unaffected.
    let mut big = Client::connect(&sock);
    let line = vec![b'x'; MAX_LINE + 100];
    big.send_raw(&line);
    err_contains(&big.reply(), "longer than");
    assert!(big.closed());
    assert!(ok(&a.call(r#"{"cmd":"status"}"#)));

    // Disconnecting mid-line and mid-command.
    {
        let mut c = Client::connect(&sock);
        c.send_raw(br#"{"cmd":"quit""#);
    }
    {
        let mut c = Client::connect(&sock);
        c.send_raw(b"{\"cmd\":\"send-keys\",\"keys\":\"shift-a\",\"hold-ms\":300}\n");
        c.send_raw(b"{\"cmd\":\"screenshot\",\"path\":\"/dev/null/x\"}\n");
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_running(&sock);

    // The server lets go of the clients that left (it notices a closed
    // connection on its own time): wait until only `a` and `b` are left.
    let deadline = Instant::now() + T;
    loop {
        let st = a.call(r#"{"cmd":"status"}"#);
        if st["clients"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "clients never released: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Too many clients: the one past the limit is told and dropped; the
    // others still work, and a slot frees up when one leaves.
    let mut many: Vec<Client> = (0..MAX_CLIENTS - 2)
        .map(|_| Client::connect(&sock))
        .collect();
    for c in &mut many {
        assert!(ok(&c.call(r#"{"cmd":"status"}"#)));
    }
    let mut extra = Client::connect(&sock);
    err_contains(&extra.reply(), "too many clients");
    assert!(extra.closed());
    assert!(ok(&a.call(r#"{"cmd":"status"}"#)));
    drop(many.pop());
    std::thread::sleep(Duration::from_millis(200));
    assert_running(&sock);

    assert_eq!(vm.state(), vmm_engine::VmState::Running);
    vm.power_off();
    assert_eq!(vm.wait(), StopReason::ForcedOff);
}

#[test]
fn socket_file_handling() {
    let (vm, _con) = boot();
    let dir = vireo_tests::work_dir("control-files");
    // A stale socket (nobody listening) is replaced.
    let sock = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let server = control::serve(vm.clone(), &sock).expect("replacing a stale socket");
    assert_running(&sock);
    // A live one is refused and left alone.
    match control::serve(vm.clone(), &sock) {
        Err(ControlError::InUse(_)) => {}
        other => panic!("expected InUse, got {other:?}"),
    }
    assert_running(&sock);
    drop(server);
    assert!(!sock.exists());
    // A regular file is never deleted.
    let file = dir.join("file");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(
        control::serve(vm.clone(), &file),
        Err(ControlError::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // Someone removed the socket file: dropping the server still returns.
    let gone = dir.join("gone.sock");
    let server = control::serve(vm.clone(), &gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let t0 = std::time::Instant::now();
    drop(server);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A directory that does not exist.
    assert!(matches!(
        control::serve(vm.clone(), dir.join("no/such/dir.sock")),
        Err(ControlError::Io { .. })
    ));
}

#[test]
fn serial_scrollback_idle_clients_and_socket_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (vm, _con) = boot();
    let dir = vireo_tests::work_dir("control-serial");
    let sock = dir.join("s.sock");
    let limits = control::Limits {
        idle: Duration::from_millis(500),
        line: Duration::from_millis(500),
    };
    let _server = control::serve_with(vm.clone(), &sock, limits).expect("serving");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    // Nothing of the private bind folder is left beside the socket.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("s.sock")]);

    // The scrollback: what the guest printed since boot, from offset 0.
    let mut c = Client::connect(&sock);
    let r = c.call(r#"{"cmd":"serial","since":0}"#);
    assert!(ok(&r), "{r}");
    let text =
        String::from_utf8_lossy(&B64.decode(r["data"].as_str().unwrap()).unwrap()).into_owned();
    assert!(text.contains("cmdline:"), "{text:?}");
    let end = r["end"].as_u64().unwrap();
    assert_eq!(end as usize, text.len());
    assert_eq!(r["lost"], json!(0));
    // A long poll past the end: the halted guest prints nothing more.
    let r = c.call(&json!({"cmd":"serial","since": end, "wait-ms": 200}).to_string());
    let more = B64.decode(r["data"].as_str().unwrap()).unwrap();
    assert_eq!(r["start"].as_u64(), Some(end), "{r}");
    assert_eq!(r["end"].as_u64(), Some(end + more.len() as u64), "{r}");
    // Past the end there is nothing (and no error).
    let r = c.call(r#"{"cmd":"serial","since":999999999}"#);
    assert_eq!(r["data"], json!(""), "{r}");
    err_contains(&c.call(r#"{"cmd":"serial","since":-1}"#), "since");
    err_contains(&c.call(r#"{"cmd":"serial-input","data":"%%"}"#), "base64");
    assert!(ok(&c.call(r#"{"cmd":"serial-input","data":"aGkK"}"#)));
    err_contains(
        &c.call(r#"{"cmd":"key","key":"ctrl-a","down":true}"#),
        "one key",
    );
    assert!(ok(&c.call(r#"{"cmd":"key","key":"a","down":true}"#)));
    assert!(ok(&c.call(r#"{"cmd":"key","key":"a","down":false}"#)));
    assert!(ok(&c.call(r#"{"cmd":"mouse","dx":3,"dy":-2,"buttons":1}"#)));
    err_contains(&c.call(r#"{"cmd":"mouse","dx":99999}"#), "dx");

    // Idle clients fill every slot, are told why and dropped; the slots
    // come back.
    // (`c` may still hold the sixteenth slot.)
    let mut idle: Vec<Client> = (0..MAX_CLIENTS - 1)
        .map(|_| Client::connect(&sock))
        .collect();
    for cl in &mut idle {
        err_contains(&cl.reply(), "idle");
        assert!(cl.closed());
    }
    // A client that starts a line and never finishes it is dropped too.
    let mut trickle = Client::connect(&sock);
    trickle.send_raw(br#"{"cmd":"sta"#);
    err_contains(&trickle.reply(), "not finished");
    // The server notices closed clients on its own time: wait for a slot.
    let deadline = Instant::now() + T;
    loop {
        let st = Client::connect(&sock).call(r#"{"cmd":"status"}"#);
        if ok(&st) {
            assert!(st["serial-end"].as_u64() >= Some(end), "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    vm.power_off();
}

#[test]
fn a_serial_flood_stays_bounded() {
    require_kvm();
    let mut s = VmSpec::linux(guest("tiny", "bootproto.bin"));
    s.memory_mib = 64;
    if let vmm_engine::BootSpec::Linux(l) = &mut s.boot {
        l.cmdline = "console=ttyS0 noecho action=count".into();
    }
    let vm = Arc::new(Vm::create(s).expect("creating the VM"));
    let events = vm.events();
    vm.start().expect("starting the VM");
    // Nobody reads the events while the guest prints "tick N" lines
    // forever: wait until the queue has overflowed. (The guest prints
    // slowly here, so the ring's own wrap-around is a unit test of
    // SerialRing.)
    let deadline = Instant::now() + Duration::from_secs(120);
    while vm.dropped_events() == 0 {
        assert!(
            Instant::now() < deadline,
            "the flood never filled the queue: {} bytes",
            vm.serial_since(u64::MAX, 0, None).end
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(events.len() <= vmm_engine::EVENT_QUEUE);
    // The scrollback still has every byte (less than the ring holds).
    let c = vm.serial_since(0, usize::MAX, None);
    assert!(c.end as usize <= vmm_engine::SERIAL_SCROLLBACK);
    assert_eq!((c.start, c.lost, c.bytes.len() as u64), (0, 0, c.end));
    assert!(String::from_utf8_lossy(&c.bytes).contains("tick "));
    // A lifecycle event still gets through the full queue.
    vm.power_off();
    assert_eq!(vm.wait(), StopReason::ForcedOff);
    // (wait() returns once the state is Stopped; the event follows.)
    loop {
        match events.recv_timeout(T) {
            Ok(VmEvent::Stopped(r)) => break assert_eq!(r, StopReason::ForcedOff),
            Ok(_) => {}
            Err(e) => panic!("no Stopped event after a full queue: {e}"),
        }
    }
}
