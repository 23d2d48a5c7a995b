//! vireo-net-helper inside a network namespace the test creates (bridges
//! brok at 10.9.0.1/24 and brno there; the host's namespace is never
//! touched), driven through the engine's `open_tap_via_helper` as the VM
//! process uses it: the allowed bridge gives a working TAP (an ARP request
//! sent on it is answered by the bridge), the refused one gives the message
//! naming the file and the line to add. Needs root and /dev/net/tun:
//! without them it FAILS, saying so.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use vmm_engine::nic::{helper, NetError, Tap};

const HDR: usize = 12;
const BRIDGE_IP: [u8; 4] = [10, 9, 0, 1];
const OUR_IP: [u8; 4] = [10, 9, 0, 2];
const OUR_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Netns(String);

impl Netns {
    fn create() -> Netns {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the net helper test needs root (a network namespace, bridges)"
        );
        assert!(
            std::path::Path::new("/dev/net/tun").exists(),
            "the net helper test needs /dev/net/tun: modprobe tun"
        );
        let ns = Netns(format!("vireo-helper-{}", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "brok", "type", "bridge"][..],
            &[
                "link",
                "set",
                "brok",
                "type",
                "bridge",
                "forward_delay",
                "0",
            ][..],
            &["addr", "add", "10.9.0.1/24", "dev", "brok"][..],
            &["link", "set", "brok", "up"][..],
            &["link", "add", "brno", "type", "bridge"][..],
        ] {
            let mut a = vec!["-n", ns.0.as_str()];
            a.extend_from_slice(args);
            ip(&a);
        }
        ns
    }

    /// Runs `f` on a thread inside the namespace (the helper it starts
    /// inherits that thread's namespace).
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0u8; HDR];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&OUR_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&BRIDGE_IP);
    f
}

/// Sends ARP requests for the bridge's address until a reply comes back.
fn bridge_answers_arp(tap: &Tap) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    let mut last_sent = None::<Instant>;
    while Instant::now() < deadline {
        if last_sent.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
            // The port may still be learning; repeat until answered.
            let _ = tap.write(&arp_request());
            last_sent = Some(Instant::now());
        }
        match tap.read(&mut buf) {
            Ok(n) if n >= HDR + 42 => {
                let f = &buf[HDR..n];
                let reply = f[12..14] == [8, 6] && f[20..22] == [0, 2];
                if reply && f[28..32] == BRIDGE_IP && f[0..6] == OUR_MAC {
                    return true;
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("reading the TAP: {e}"),
        }
    }
    false
}

#[test]
fn allowed_bridge_gives_a_working_tap_and_a_refused_one_the_line_to_add() {
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bridge.conf");
    std::fs::write(&conf, "# test allow-list\nallow brok\n").unwrap();
    // One test sets these, so no other test races them.
    std::env::set_var("VIREO_NET_HELPER", env!("CARGO_BIN_EXE_vireo-net-helper"));
    std::env::set_var("VIREO_BRIDGE_CONF", &conf);

    let tap = ns
        .run(|| helper::open_tap_via_helper("brok"))
        .expect("a TAP on brok through the helper");
    assert!(tap.name().starts_with("vireo"), "{}", tap.name());
    let out = Command::new("ip")
        .args(["-n", &ns.0, "link", "show", "dev", tap.name()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("master brok"), "{shown}");
    assert!(
        bridge_answers_arp(&tap),
        "no ARP reply from brok through {}",
        tap.name()
    );

    let err = ns.run(|| helper::open_tap_via_helper("brno")).unwrap_err();
    let NetError::Helper { message, .. } = &err else {
        panic!("expected the helper's refusal, got {err}");
    };
    assert_eq!(
        message,
        &format!(
            "bridge brno is not allowed by {}: add the line `allow brno` to it (as root)",
            conf.display()
        )
    );
}
