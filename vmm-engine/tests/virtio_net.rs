//! virtio-net through the transport against a real TAP on a real kernel
//! bridge, all inside a network namespace the test creates (br100 at
//! 10.0.0.1/24). The host's own namespace is never touched. Needs root and
//! /dev/net/tun: without them these tests FAIL, saying so.

mod virtio_common;

use std::collections::HashMap;
use std::os::unix::io::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm_engine::devices::virtio::event_loop::{EventLoop, EventLoopHandle};
use vmm_engine::devices::virtio::net::{self as vnet, Net};
use vmm_engine::devices::virtio::pci::VirtioPciDevice;
use vmm_engine::devices::virtio::{F_RING_EVENT_IDX, F_VERSION_1};
use vmm_engine::devices::RecordingIrq;
use vmm_engine::net::{self, NetError, Tap};

use virtio_common::*;

const T: Duration = Duration::from_secs(10);
const BUF: u64 = 2048;
const HDR: usize = 12;
const GUEST_IP: [u8; 4] = [10, 0, 0, 2];
const BRIDGE_IP: [u8; 4] = [10, 0, 0, 1];

fn require_root_and_tun() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "virtio-net tests need root (network namespaces, TAPs, bridges); run them as root"
    );
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "virtio-net tests need /dev/net/tun: modprobe tun"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with bridge br100 at 10.0.0.1/24, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        require_root_and_tun();
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vireo-test-{}-{tag}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
            .args([
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])
            .status();
        for cmd in [
            "link set lo up",
            "link add br100 type bridge",
            "addr add 10.0.0.1/24 dev br100",
            "link set br100 up",
        ] {
            let mut a = vec!["-n", ns.name.as_str()];
            a.extend(cmd.split(' '));
            ip(&a);
        }
        ns
    }

    /// Runs `f` on a thread that has entered the namespace.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let path = format!("/var/run/netns/{}", self.name);
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

    /// A TAP on br100, once its bridge port forwards (the kernel moves the
    /// port to forwarding when the TAP's operstate turns up, which
    /// linkwatch may delay by up to a second).
    fn tap(&self) -> Tap {
        let tap = self
            .run(|| net::open_tap_on_bridge("br100", "vtap%d"))
            .expect("tap on br100");
        let forwarding = wait_for(T, || {
            let out = Command::new("bridge")
                .args(["-n", &self.name, "link", "show", "dev", tap.name()])
                .output()
                .expect("run bridge(8)");
            String::from_utf8_lossy(&out.stdout).contains("state forwarding")
        });
        assert!(forwarding, "{} never became a forwarding port", tap.name());
        tap
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A namespace with its bridge and an event loop: what each test's devices
/// run on. The loop is stopped (dropped) before the namespace goes.
struct Lan {
    el: EventLoop,
    ns: Netns,
}

impl Lan {
    fn new(tag: &str) -> Lan {
        let ns = Netns::create(tag);
        let el = EventLoop::start("virtio-net-test").unwrap();
        Lan { el, ns }
    }

    /// A device on the bridge with MAC `mac`, `features` negotiated.
    fn dev(&self, mac: [u8; 6], features: u64) -> NetDev {
        NetDev::new(self.ns.tap(), mac, &self.el.handle(), features)
    }
}

/// A guest-side virtio-net driver.
struct NetDev {
    drv: Driver,
    mac: [u8; 6],
    rx_size: u32,
    max_nbufs: u16,
    last_hdr: [u8; HDR],
    msi: std::sync::Arc<RecordingMsi>,
    link: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stats: std::sync::Arc<std::sync::Mutex<vnet::NetStats>>,
    rx: HashMap<u16, u64>,
    tx_free: Vec<u64>,
    tx_busy: HashMap<u16, u64>,
}

impl NetDev {
    fn new(tap: Tap, mac: [u8; 6], el: &EventLoopHandle, wanted: u64) -> NetDev {
        Self::with_rx_buffers(tap, mac, el, wanted, BUF as u32)
    }

    fn with_rx_buffers(
        tap: Tap,
        mac: [u8; 6],
        el: &EventLoopHandle,
        wanted: u64,
        rx_size: u32,
    ) -> NetDev {
        let mem = guest_memory(8 << 20);
        let net = Net::new(tap, mac);
        let stats = net.stats_handle();
        let link = net.link_handle();
        let msi = RecordingMsi::new();
        let dev = VirtioPciDevice::new(
            Box::new(net),
            mem.clone(),
            msi.clone(),
            RecordingIrq::new(),
            el.clone(),
        )
        .unwrap();
        let mut drv = Driver::new(dev, mem, 0x1_0000);
        let f = drv.negotiate(wanted);
        assert_eq!(f, wanted, "device offers every wanted feature");
        drv.enable_msix(3);
        drv.common_wr(0x10, 2, 0); // config changes on vector 0
        drv.setup_queue(0, 256, 1);
        drv.setup_queue(1, 256, 2);
        drv.driver_ok();
        let mut d = NetDev {
            drv,
            mac,
            rx_size,
            max_nbufs: 0,
            last_hdr: [0; HDR],
            msi,
            link,
            stats,
            rx: HashMap::new(),
            tx_free: Vec::new(),
            tx_busy: HashMap::new(),
        };
        for _ in 0..256 {
            let a = d.drv.alloc(rx_size as u64, 64);
            let h = d.drv.add_chain(0, &[(a, rx_size, DESC_F_WRITE)]);
            d.rx.insert(h, a);
        }
        d.drv.kick(0);
        for _ in 0..256 {
            let a = d.drv.alloc(BUF, 64);
            d.tx_free.push(a);
        }
        d
    }

    fn reclaim_tx(&mut self) {
        while let Some((h, _)) = self.drv.poll_used(1) {
            let a = self.tx_busy.remove(&h).expect("tx head known");
            self.tx_free.push(a);
        }
    }

    /// Queues one frame (without kicking).
    fn queue_frame(&mut self, frame: &[u8]) {
        self.queue_frame_hdr(&[0u8; HDR], frame)
    }

    /// Queues one frame with the given virtio_net_hdr (without kicking).
    fn queue_frame_hdr(&mut self, hdr: &[u8; HDR], frame: &[u8]) {
        assert!(frame.len() + HDR <= BUF as usize);
        let t0 = Instant::now();
        let a = loop {
            self.reclaim_tx();
            if let Some(a) = self.tx_free.pop() {
                break a;
            }
            assert!(t0.elapsed() < T, "tx queue never drained");
            std::thread::sleep(Duration::from_micros(50));
        };
        let h = self.put_tx(a, hdr, frame);
        self.tx_busy.insert(h, a);
    }

    /// Writes `hdr` and `frame` to the buffer at `a` and adds it to the TX
    /// queue as one descriptor (without kicking); returns the chain's head.
    fn put_tx(&mut self, a: u64, hdr: &[u8; HDR], frame: &[u8]) -> u16 {
        self.drv.mem.write_slice(hdr, GuestAddress(a)).unwrap();
        self.drv
            .mem
            .write_slice(frame, GuestAddress(a + HDR as u64))
            .unwrap();
        self.drv.add_chain(1, &[(a, (HDR + frame.len()) as u32, 0)])
    }

    fn send(&mut self, frame: &[u8]) {
        self.queue_frame(frame);
        self.drv.kick(1);
    }

    /// One received frame (without the header), if any; buffers go back.
    fn try_recv(&mut self) -> Option<Vec<u8>> {
        let (h, len) = self.drv.poll_used(0)?;
        let a = self.rx.remove(&h).expect("rx head known");
        let mut hdr = [0u8; HDR];
        self.drv.mem.read_slice(&mut hdr, GuestAddress(a)).unwrap();
        let nbufs = u16::from_le_bytes([hdr[10], hdr[11]]);
        assert!(nbufs >= 1, "num_buffers >= 1");
        self.max_nbufs = self.max_nbufs.max(nbufs);
        self.last_hdr = hdr;
        assert!(len as usize >= HDR);
        if self.drv.acked_features_have(vnet::F_MRG_RXBUF) {
            assert!(len <= self.rx_size, "used len within the buffer");
        } else {
            assert_eq!(nbufs, 1, "num_buffers is 1 without MRG_RXBUF");
        }
        let mut frame = vec![0u8; len as usize - HDR];
        self.drv
            .mem
            .read_slice(&mut frame, GuestAddress(a + HDR as u64))
            .unwrap();
        let mut bufs = vec![a];
        for _ in 1..nbufs {
            let (h2, l2) = self.drv.wait_used(0, T);
            let a2 = self.rx.remove(&h2).expect("rx head known");
            let mut more = vec![0u8; l2 as usize];
            self.drv
                .mem
                .read_slice(&mut more, GuestAddress(a2))
                .unwrap();
            frame.extend_from_slice(&more);
            bufs.push(a2);
        }
        for b in bufs {
            let h = self.drv.add_chain(0, &[(b, self.rx_size, DESC_F_WRITE)]);
            self.rx.insert(h, b);
        }
        self.drv.kick(0);
        Some(frame)
    }

    /// Waits for a frame `pick` accepts; answers ARP requests for our IP
    /// on the way, ignores everything else.
    fn recv_where(&mut self, what: &str, pick: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        match self.recv_within(T, pick) {
            Some(f) => f,
            None => panic!("timed out waiting for {what}"),
        }
    }

    /// Sends `frame` every second (as a guest's ARP or ping would) until a
    /// frame `pick` accepts arrives.
    fn request(
        &mut self,
        what: &str,
        frame: &[u8],
        mut pick: impl FnMut(&[u8]) -> bool,
    ) -> Vec<u8> {
        for _ in 0..10 {
            self.send(frame);
            if let Some(f) = self.recv_within(Duration::from_secs(1), &mut pick) {
                return f;
            }
        }
        panic!("no answer to {what} in 10 tries");
    }

    fn recv_within(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let t0 = Instant::now();
        loop {
            if let Some(f) = self.try_recv() {
                if pick(&f) {
                    return Some(f);
                }
                if is_arp(&f, 1) && f.get(38..42) == Some(&GUEST_IP[..]) {
                    let reply = arp(2, self.mac, GUEST_IP, mac_at(&f, 22), ip_at(&f, 28));
                    self.send(&reply);
                }
                continue;
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

fn mac_at(f: &[u8], o: usize) -> [u8; 6] {
    f[o..o + 6].try_into().unwrap()
}
fn ip_at(f: &[u8], o: usize) -> [u8; 4] {
    f[o..o + 4].try_into().unwrap()
}

fn eth(dst: [u8; 6], src: [u8; 6], ty: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(1514);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ty.to_be_bytes());
    f
}

/// An ARP packet (`op` 1 request, 2 reply).
fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let dst = if op == 1 { [0xff; 6] } else { tha };
    let mut f = eth(dst, sha, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f
}

fn is_arp(f: &[u8], op: u16) -> bool {
    f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == op.to_be_bytes()
}

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += w as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn icmp_echo(src_mac: [u8; 6], dst_mac: [u8; 6], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut iph = vec![0x45, 0];
    iph.extend_from_slice(&total.to_be_bytes());
    iph.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    iph.extend_from_slice(&GUEST_IP);
    iph.extend_from_slice(&BRIDGE_IP);
    let c = csum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(dst_mac, src_mac, 0x0800);
    f.extend_from_slice(&iph);
    f.extend_from_slice(&icmp);
    f
}

fn want() -> u64 {
    F_VERSION_1 | F_RING_EVENT_IDX | vnet::F_MAC | vnet::F_STATUS | vnet::F_MRG_RXBUF
}

const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x01];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x02];

#[test]
fn config_space_mac_and_link_status() {
    let lan = Lan::new("cfg");
    let mut d = lan.dev(MAC_A, want());
    let off = d.drv.device.offset;
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = d.drv.bar_rd(off + i as u64, 1) as u8;
    }
    assert_eq!(mac, MAC_A);
    assert_eq!(d.drv.bar_rd(off + 6, 2), 1, "link up");
    assert_eq!(cfg16(&mut d.drv.dev, 2), 0x1041);
    assert_eq!(cfg32(&mut d.drv.dev, 8) >> 8, 0x020000);
    let f = d.drv.device_features();
    for bit in [0u32, 1, 5, 7, 8, 10, 11, 12, 14, 15, 16, 32] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(d.drv.common_rd(0x12, 2), 2, "rx + tx queues");

    // Link down: status reads 0, the generation moves, vector 0 fires.
    let gen = d.drv.common_rd(0x15, 1);
    d.link.store(false, Ordering::SeqCst);
    d.drv.dev.config_changed();
    assert_eq!(d.drv.bar_rd(off + 6, 2), 0, "link down");
    assert_ne!(d.drv.common_rd(0x15, 1), gen, "config generation");
    assert_eq!(d.msi.count_data(0), 1, "config-change interrupt");
}

#[test]
fn arp_and_icmp_echo_to_the_bridge() {
    let lan = Lan::new("ping");
    let mut d = lan.dev(MAC_A, want());
    let reply = d.request(
        "an ARP request for 10.0.0.1",
        &arp(1, MAC_A, GUEST_IP, [0; 6], BRIDGE_IP),
        |f| is_arp(f, 2) && ip_at(f, 28) == BRIDGE_IP,
    );
    assert_eq!(mac_at(&reply, 32), MAC_A, "reply addressed to us");
    assert_eq!(ip_at(&reply, 38), GUEST_IP);
    let bridge_mac = mac_at(&reply, 22);

    let payload: Vec<u8> = (0..56u8).collect();
    let echo = d.request(
        "an ICMP echo to 10.0.0.1",
        &icmp_echo(MAC_A, bridge_mac, 0x4242, 1, &payload),
        |f| {
            f.len() >= 42
                && f[12..14] == [8, 0]
                && f[23] == 1
                && f[34] == 0
                && ip_at(f, 26) == BRIDGE_IP
        },
    );
    assert_eq!(mac_at(&echo, 0), MAC_A);
    assert_eq!(ip_at(&echo, 30), GUEST_IP);
    assert_eq!(&echo[38..40], &0x4242u16.to_be_bytes(), "echo id");
    assert_eq!(&echo[42..42 + 56], &payload[..], "echo payload");
}

fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = eth(dst, src, 0x88b5);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((seq as usize).wrapping_mul(7).wrapping_add(f.len()) as u8);
    }
    f
}

#[test]
fn two_devices_on_one_bridge_exchange_frames() {
    let lan = Lan::new("pair");
    let mut a = lan.dev(MAC_A, want());
    let mut b = lan.dev(MAC_B, want());
    let fa = test_frame(MAC_B, MAC_A, 1, 200);
    a.send(&fa);
    let got = b.recv_where("A's frame at B", |f| f.get(12..14) == Some(&[0x88, 0xb5]));
    assert_eq!(got, fa);
    let fb = test_frame(MAC_A, MAC_B, 2, 1514);
    b.send(&fb);
    let got = a.recv_where("B's frame at A", |f| f.get(12..14) == Some(&[0x88, 0xb5]));
    assert_eq!(got, fb);
}

#[test]
fn sixty_four_mib_cross_without_loss_or_reordering() {
    let lan = Lan::new("bulk");
    let mut a = lan.dev(MAC_A, want());
    let mut b = lan.dev(MAC_B, want());
    // Let the bridge learn B's MAC so A's frames go only to B.
    b.send(&test_frame(MAC_A, MAC_B, u32::MAX, 60));
    a.recv_where("B's hello", |f| f.get(12..14) == Some(&[0x88, 0xb5]));

    const FRAME: usize = 1514;
    const TOTAL: usize = 64 << 20;
    let frames = TOTAL.div_ceil(FRAME - 14) as u32;
    const WINDOW: u32 = 160;
    let (mut sent, mut got) = (0u32, 0u32);
    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    while got < frames {
        let mut queued = false;
        while sent < frames && sent - got < WINDOW {
            a.queue_frame(&test_frame(MAC_B, MAC_A, sent, FRAME));
            sent += 1;
            queued = true;
        }
        if queued {
            a.drv.kick(1);
        }
        while let Some(f) = b.try_recv() {
            if f.get(12..14) != Some(&[0x88, 0xb5]) {
                continue;
            }
            let seq = u32::from_be_bytes(f[14..18].try_into().unwrap());
            assert_eq!(seq, got, "frame {got} missing or out of order");
            assert_eq!(
                f,
                test_frame(MAC_B, MAC_A, seq, FRAME),
                "frame {seq} corrupted"
            );
            got += 1;
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < T,
            "stalled: sent {sent}, received {got} of {frames}"
        );
        std::thread::yield_now();
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "64 MiB: {frames} frames in {secs:.2}s ({:.0} frames/s, {:.1} MB/s)",
        frames as f64 / secs,
        TOTAL as f64 / secs / 1e6
    );
}

#[test]
fn missing_bridge_gets_a_clear_error() {
    let ns = Netns::create("nobr");
    let e = ns
        .run(|| net::open_tap_on_bridge("br404", "vtap%d"))
        .unwrap_err();
    assert!(matches!(e, NetError::BridgeMissing(_)), "{e}");
    assert!(
        e.to_string()
            .contains("ip link add br404 type bridge && ip link set br404 up"),
        "{e}"
    );
    // lo exists but is not a bridge: the kernel refuses, we say so.
    let e = ns
        .run(|| net::open_tap_on_bridge("lo", "vtap%d"))
        .unwrap_err();
    assert!(matches!(e, NetError::NotABridge(_)), "{e}");
}

#[test]
fn mergeable_rx_spreads_a_frame_over_small_buffers() {
    let lan = Lan::new("mrg");
    let mut a = lan.dev(MAC_A, want());
    // B posts 256-byte buffers: a 1514-byte frame needs 7 of them.
    let mut b = NetDev::with_rx_buffers(lan.ns.tap(), MAC_B, &lan.el.handle(), want(), 256);
    for seq in 0..20 {
        let f = test_frame(MAC_B, MAC_A, seq, 1514 - (seq as usize * 61));
        a.send(&f);
        let got = b.recv_where("a frame over many buffers", |f| {
            f.get(12..14) == Some(&[0x88, 0xb5])
        });
        assert_eq!(got, f);
    }
    assert_eq!(b.max_nbufs, 6, "1514 + 12 bytes over 256-byte buffers");
}

#[test]
fn without_mrg_rxbuf_one_buffer_per_frame() {
    let lan = Lan::new("nomrg");
    let plain = F_VERSION_1 | vnet::F_MAC;
    let mut a = lan.dev(MAC_A, plain);
    let mut b = lan.dev(MAC_B, plain);
    let f = test_frame(MAC_B, MAC_A, 9, 1514);
    a.send(&f);
    let got = b.recv_where("a frame", |f| f.get(12..14) == Some(&[0x88, 0xb5]));
    assert_eq!(got, f);
}

#[test]
fn all_offloads_negotiate_and_traffic_flows() {
    let lan = Lan::new("offl");
    let all = want()
        | vnet::F_CSUM
        | vnet::F_GUEST_CSUM
        | vnet::F_GUEST_TSO4
        | vnet::F_GUEST_TSO6
        | vnet::F_GUEST_UFO
        | vnet::F_HOST_TSO4
        | vnet::F_HOST_TSO6
        | vnet::F_HOST_UFO;
    // DRIVER_OK is refused (NEEDS_RESET) if TUNSETOFFLOAD fails.
    let mut d = lan.dev(MAC_A, all);
    d.send(&arp(1, MAC_A, GUEST_IP, [0; 6], BRIDGE_IP));
    d.recv_where("an ARP reply", |f| {
        is_arp(f, 2) && ip_at(f, 28) == BRIDGE_IP
    });
}

/// The IPv4 header (id `id`) of a packet from A (10.0.0.2) to B (10.0.0.3)
/// carrying `l4_len` bytes of protocol `proto`, and the pseudo-header sum
/// a guest using checksum offload leaves in the UDP/TCP checksum field
/// (the folded sum, not complemented).
fn ipv4_a_to_b(proto: u8, id: u8, l4_len: u16) -> (Vec<u8>, u16) {
    let (src, dst) = (GUEST_IP, [10, 0, 0, 3]);
    let mut iph = vec![0x45, 0];
    iph.extend_from_slice(&(20 + l4_len).to_be_bytes());
    iph.extend_from_slice(&[0, id, 0x40, 0, 64, proto, 0, 0]);
    iph.extend_from_slice(&src);
    iph.extend_from_slice(&dst);
    let c = csum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&l4_len.to_be_bytes());
    (iph, !csum(&pseudo))
}

/// Whether the UDP/TCP (`proto`) checksum over the `l4_len` bytes after
/// an IPv4 frame's 20-byte header verifies.
fn l4_checksum_ok(f: &[u8], proto: u8, l4_len: usize) -> bool {
    let mut buf = Vec::new();
    buf.extend_from_slice(&f[26..34]);
    buf.extend_from_slice(&[0, proto]);
    buf.extend_from_slice(&(l4_len as u16).to_be_bytes());
    buf.extend_from_slice(&f[34..34 + l4_len]);
    csum(&buf) == 0
}

/// A UDP frame from A (10.0.0.2) to B (10.0.0.3) whose checksum field holds
/// only the pseudo-header sum, as a guest using checksum offload sends it.
fn udp_partial(payload: &[u8]) -> Vec<u8> {
    let ulen = (8 + payload.len()) as u16;
    let (iph, partial) = ipv4_a_to_b(17, 2, ulen);
    let mut f = eth(MAC_B, MAC_A, 0x0800);
    f.extend_from_slice(&iph);
    f.extend_from_slice(&1000u16.to_be_bytes());
    f.extend_from_slice(&2000u16.to_be_bytes());
    f.extend_from_slice(&ulen.to_be_bytes());
    f.extend_from_slice(&partial.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Whether the UDP checksum of an IPv4 frame verifies.
fn udp_checksum_ok(f: &[u8]) -> bool {
    let ulen = u16::from_be_bytes([f[38], f[39]]);
    l4_checksum_ok(f, 17, ulen as usize)
}

fn is_udp(f: &[u8]) -> bool {
    f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17
}

#[test]
fn checksum_offload_end_to_end() {
    let lan = Lan::new("csum");
    let csum_feats = vnet::F_CSUM | vnet::F_GUEST_CSUM;
    let mut a = lan.dev(MAC_A, want() | csum_feats);
    // B without GUEST_CSUM: the host must complete the checksum for it.
    let mut b = lan.dev(MAC_B, want());
    let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let f = udp_partial(&payload);
    assert!(!udp_checksum_ok(&f), "the frame as sent is only partial");
    let mut hdr = [0u8; HDR];
    hdr[0] = vnet::HDR_F_NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: UDP header
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset: its checksum
    a.queue_frame_hdr(&hdr, &f);
    a.drv.kick(1);
    let got = b.recv_where("the UDP frame at B", is_udp);
    assert!(
        udp_checksum_ok(&got),
        "checksum not completed for a guest without GUEST_CSUM: hdr {:?} udp {:02x?}",
        b.last_hdr,
        &got[34..42],
    );
    assert_eq!(&got[42..], &payload[..]);
    assert_eq!(b.last_hdr[0] & vnet::HDR_F_NEEDS_CSUM, 0);

    // B2 with GUEST_CSUM: the frame arrives still partial, flagged NEEDS_CSUM.
    let mut b2 = lan.dev(MAC_B, want() | csum_feats);
    drop(b);
    a.queue_frame_hdr(&hdr, &f);
    a.drv.kick(1);
    let got = b2.recv_where("the UDP frame at B2", is_udp);
    assert_eq!(got, f, "delivered untouched");
    assert_ne!(
        b2.last_hdr[0] & vnet::HDR_F_NEEDS_CSUM,
        0,
        "NEEDS_CSUM passed on"
    );
    assert_eq!(u16::from_le_bytes([b2.last_hdr[6], b2.last_hdr[7]]), 34);
    assert_eq!(u16::from_le_bytes([b2.last_hdr[8], b2.last_hdr[9]]), 6);
}

#[test]
fn tx_offload_not_negotiated_and_malformed_tx_chains_are_dropped() {
    let lan = Lan::new("badtx");
    let mut a = lan.dev(MAC_A, want());
    let mut b = lan.dev(MAC_B, want());
    // NEEDS_CSUM without CSUM, and a TSO header without HOST_TSO4.
    for (flags, gso) in [(1u8, 0u8), (0, 1), (0, 0x80), (0, 77)] {
        let f = test_frame(MAC_B, MAC_A, 100, 300);
        let buf = a.drv.alloc(BUF, 64);
        let mut hdr = [0u8; HDR];
        hdr[0] = flags;
        hdr[1] = gso;
        a.put_tx(buf, &hdr, &f);
        a.drv.kick(1);
        a.drv.wait_used(1, T);
    }
    // Malformed chains: outside RAM, writable-only, header only, too long.
    let buf = a.drv.alloc(BUF, 64);
    for chain in [
        vec![(0x7_0000_0000u64, 100u32, 0u16)],
        vec![(buf, 100, DESC_F_WRITE)],
        vec![(buf, HDR as u32, 0)],
        vec![(buf, 70_000, 0)],
    ] {
        a.drv.add_chain(1, &chain);
        a.drv.kick(1);
        let (_, len) = a.drv.wait_used(1, T);
        assert_eq!(len, 0);
    }
    assert_eq!(a.stats.lock().unwrap().tx_dropped, 8);
    assert_eq!(a.stats.lock().unwrap().tx_frames, 0);
    // A good frame still goes through, and it is the first B sees.
    let f = test_frame(MAC_B, MAC_A, 7, 400);
    a.send(&f);
    let got = b.recv_where("the good frame", |f| f.get(12..14) == Some(&[0x88, 0xb5]));
    assert_eq!(got, f);
    assert_eq!(a.stats.lock().unwrap().tx_frames, 1);
}

#[test]
fn rx_waits_for_buffers_instead_of_dropping() {
    let lan = Lan::new("rxwait");
    let mut a = lan.dev(MAC_A, want());
    let mut b = lan.dev(MAC_B, want());
    // Consume B's 256 buffers with 256 frames, then send 50 more while B
    // has none posted; they must arrive once B posts buffers again.
    let mut seen = Vec::new();
    for seq in 0..306u32 {
        a.send(&test_frame(MAC_B, MAC_A, seq, 100));
        if seq % 64 == 63 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Nothing reposted yet: exactly the 256 posted buffers get used, the
    // other 50 frames wait.
    assert!(wait_for(T, || b.drv.used_idx(0) == 256));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(b.drv.used_idx(0), 256);
    // The device asked to be told of the next buffer (EVENT_IDX): its
    // avail_event is the driver's avail index, so the reposts below kick.
    let vq = &b.drv.queues[&0];
    let avail_event: u16 = b
        .drv
        .mem
        .read_obj(GuestAddress(vq.used + 4 + 8 * vq.size as u64))
        .unwrap();
    assert_eq!(avail_event, 256);
    while seen.len() < 306 {
        let f = b.recv_where("queued frames", |f| f.get(12..14) == Some(&[0x88, 0xb5]));
        seen.push(u32::from_be_bytes(f[14..18].try_into().unwrap()));
    }
    assert_eq!(seen, (0..306).collect::<Vec<_>>());
    assert!(b.drv.queues[&0].kicks >= 2, "the first repost kicked");
}

/// A TCP segment A -> B carrying `payload`, checksum field holding the
/// pseudo-header sum (as a guest using offloads sends it).
fn tcp_partial(payload: &[u8], seq: u32) -> Vec<u8> {
    let tlen = (20 + payload.len()) as u16;
    let (iph, partial) = ipv4_a_to_b(6, 3, tlen);
    let mut f = eth(MAC_B, MAC_A, 0x0800);
    f.extend_from_slice(&iph);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes()); // ack
    f.extend_from_slice(&[0x50, 0x18]); // 20-byte header, PSH|ACK
    f.extend_from_slice(&65535u16.to_be_bytes());
    f.extend_from_slice(&partial.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn is_tcp(f: &[u8]) -> bool {
    f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6
}

fn tcp_checksum_ok(f: &[u8]) -> bool {
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    l4_checksum_ok(f, 6, total - 20)
}

#[test]
fn tso_frames_are_segmented_or_passed_whole() {
    let lan = Lan::new("tso");
    let offl = vnet::F_CSUM | vnet::F_GUEST_CSUM | vnet::F_HOST_TSO4 | vnet::F_GUEST_TSO4;
    let mut a = lan.dev(MAC_A, want() | offl);
    let mut b = lan.dev(MAC_B, want());
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13 + 5) as u8).collect();
    let f = tcp_partial(&payload, 1000);
    let mut hdr = [0u8; HDR];
    hdr[0] = vnet::HDR_F_NEEDS_CSUM;
    hdr[1] = vnet::GSO_TCPV4;
    hdr[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    hdr[4..6].copy_from_slice(&1000u16.to_le_bytes()); // gso_size
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
    let send_big = |a: &mut NetDev| {
        let buf = a.drv.alloc(8192, 64);
        a.put_tx(buf, &hdr, &f);
        a.drv.kick(1);
    };
    // B negotiated no offloads: three 1000-byte segments, checksums done.
    send_big(&mut a);
    let mut data = Vec::new();
    let mut seqs = Vec::new();
    while data.len() < payload.len() {
        let s = b.recv_where("a TCP segment", is_tcp);
        assert!(tcp_checksum_ok(&s), "segment checksum");
        seqs.push(u32::from_be_bytes(s[38..42].try_into().unwrap()));
        data.extend_from_slice(&s[54..]);
    }
    assert_eq!(seqs, vec![1000, 2000, 3000]);
    assert!(data == payload, "segments carry the payload in order");
    drop(b);

    // B2 takes TSO itself: one 3054-byte GSO frame over 2 mergeable buffers.
    let mut b2 = lan.dev(MAC_B, want() | offl);
    send_big(&mut a);
    let got = b2.recv_where("the whole GSO frame", is_tcp);
    assert_eq!(got.len(), f.len());
    assert!(got[54..] == payload[..]);
    assert_eq!(b2.last_hdr[1] & 0x7f, vnet::GSO_TCPV4, "gso_type passed on");
    assert_eq!(u16::from_le_bytes([b2.last_hdr[4], b2.last_hdr[5]]), 1000);
    assert_eq!(u16::from_le_bytes([b2.last_hdr[10], b2.last_hdr[11]]), 2);
}

#[test]
fn doorbell_on_a_tx_queue_never_enabled_does_not_hang_the_io_thread() {
    // The hostile guest of issue 12 against virtio-net: rx set up, tx laid
    // out but never enabled, DRIVER_OK, a tx doorbell. Before the fix the
    // I/O thread spun for ever in Net::tx with the device lock held, and
    // every other device on that thread stopped.
    let lan = Lan::new("txnotready");
    let mem = guest_memory(8 << 20);
    let dev = VirtioPciDevice::new(
        Box::new(Net::new(lan.ns.tap(), MAC_A)),
        mem.clone(),
        RecordingMsi::new(),
        RecordingIrq::new(),
        lan.el.handle(),
    )
    .unwrap();
    let mut bad = Driver::new(dev, mem, 0x1_0000);
    bad.negotiate(want());
    bad.enable_msix(3);
    bad.setup_queue(0, 256, 1);
    bad.common_wr(0x16, 2, 1); // queue_select = tx
    bad.common_wr(0x20, 8, 0x40_0000); // desc, avail, used; no enable
    bad.common_wr(0x28, 8, 0x40_1000);
    bad.common_wr(0x30, 8, 0x40_2000);
    bad.mem.write_obj(9u16, GuestAddress(0x2)).unwrap();
    bad.mem.write_obj(9u16, GuestAddress(0x40_1002)).unwrap();
    let mut good = lan.dev(MAC_B, want());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let st = bad.status();
        bad.set_status(st | 4); // DRIVER_OK
        bad.kick_always(1);
        // The neighbour on the same I/O thread still talks to the bridge.
        let reply = good.request(
            "an ARP request for 10.0.0.1",
            &arp(1, MAC_B, GUEST_IP, [0; 6], BRIDGE_IP),
            |f| is_arp(f, 2) && ip_at(f, 28) == BRIDGE_IP,
        );
        let _ = tx.send((bad.status(), reply.len()));
        // Keep the devices (and so the I/O thread's handlers) here: on a
        // hang this thread never gets this far, and the test fails below.
        drop((bad, good));
    });
    let Ok((st, len)) = rx.recv_timeout(Duration::from_secs(60)) else {
        // Joining the stuck loop would block for ever: leave it, but not
        // the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &lan.ns.name])
            .status();
        std::mem::forget(lan);
        panic!("the I/O thread is stuck (a doorbell on a disabled queue)");
    };
    assert_ne!(st & 4, 0, "the hostile device still answers its registers");
    assert!(len >= 42);
}
