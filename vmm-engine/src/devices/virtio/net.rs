//! virtio-net (virtio 1.x, 5.1) on a TAP: receive queue 0, transmit
//! queue 1, a 12-byte virtio_net_hdr_v1 in front of every frame (the TAP
//! uses the same header, so frames pass through unchanged).
//!
//! Features: VERSION_1, MAC, STATUS (link always up), MRG_RXBUF, CSUM /
//! GUEST_CSUM, GUEST_TSO4/6, GUEST_UFO, HOST_TSO4/6, HOST_UFO. The guest
//! offloads it accepts become the TAP's TUNSETOFFLOAD flags at DRIVER_OK.
//! A transmitted header asking for an offload the guest did not negotiate
//! drops that frame.
//!
//! Receive: the TAP fd is watched edge-triggered; frames are read only when
//! they can be placed. A frame that does not fit the buffers posted waits
//! (in `rx_frame`) until the driver posts more and kicks queue 0.
//!
//! Link state: [`Net::link_handle`] plus
//! [`VirtioPciDevice::config_changed`](super::pci::VirtioPciDevice::config_changed).
//!
//! Missing: control queue, multiqueue, announce.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

use virtio_queue::{QueueOwnedT, QueueT};

use super::{ChainError, ParsedChain, QueueCtx, VirtioBackend, VirtioError, Wake};
use crate::net::tap::{Tap, VNET_HDR_LEN};

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_GUEST_UFO: u64 = 1 << 10;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_HOST_UFO: u64 = 1 << 14;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_STATUS: u64 = 1 << 16;

pub const HDR_F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const QUEUE_SIZE: u16 = 256;
/// Largest frame with its header: a 64 KiB GSO frame plus Ethernet and VLAN.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65535 + 14 + 4;
/// Config space: `mac[6]`, `status: u16`, `max_virtqueue_pairs: u16`.
pub const CONFIG_LEN: usize = 10;
const STATUS_LINK_UP: u16 = 1;

/// Frame counters, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

pub struct Net {
    tap: Tap,
    mac: [u8; 6],
    link_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: u64,
    rx_buf: Vec<u8>,
    /// Length of a frame read from the tap and not yet placed.
    rx_frame: Option<usize>,
    tx_buf: Vec<u8>,
    stats: std::sync::Arc<std::sync::Mutex<NetStats>>,
}

enum Placed {
    Done,
    NoBuffers,
    Dropped,
    /// The ring itself is broken: the device stops.
    Fault(String),
}

impl Net {
    /// A virtio-net device on `tap` with MAC address `mac`.
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        Net {
            tap,
            mac,
            link_up: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            acked: 0,
            rx_buf: vec![0u8; MAX_FRAME],
            rx_frame: None,
            tx_buf: Vec::with_capacity(MAX_FRAME),
            stats: Default::default(),
        }
    }

    /// The TAP's interface name.
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// The link state the guest sees in the config space (STATUS). After
    /// changing it, call
    /// [`VirtioPciDevice::config_changed`](super::pci::VirtioPciDevice::config_changed)
    /// so the driver hears of it.
    pub fn link_handle(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.link_up.clone()
    }

    /// A shared view of the counters.
    pub fn stats_handle(&self) -> std::sync::Arc<std::sync::Mutex<NetStats>> {
        self.stats.clone()
    }

    fn count(&self, f: impl FnOnce(&mut NetStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn rx(&mut self, ctx: &mut QueueCtx<'_>) {
        if !ctx.queues.get(RX_QUEUE).is_some_and(|q| q.ready()) {
            return; // frames wait in the tap until the driver sets up rx
        }
        let mut used = false;
        let mut turns = 0usize;
        loop {
            turns += 1;
            if turns > super::CHAINS_PER_WAKE {
                ctx.again(RX_QUEUE);
                break;
            }
            let len = match self.rx_frame {
                Some(n) => n,
                None => match self.tap.read(&mut self.rx_buf) {
                    Ok(0) => break,
                    Ok(n) if n <= VNET_HDR_LEN => continue,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        crate::guest_warn!("virtio-net: tap read: {e}");
                        break;
                    }
                },
            };
            match self.place(ctx, len) {
                Placed::Done => {
                    self.rx_frame = None;
                    used = true;
                    self.count(|s| s.rx_frames += 1);
                }
                Placed::Dropped => {
                    self.rx_frame = None;
                    used = true;
                    self.count(|s| s.rx_dropped += 1);
                }
                Placed::NoBuffers => {
                    self.rx_frame = Some(len);
                    if Self::want_rx_kick(ctx) {
                        continue; // buffers came in meanwhile
                    }
                    break;
                }
                Placed::Fault(why) => {
                    self.rx_frame = None;
                    ctx.fail(RX_QUEUE, why);
                    break;
                }
            }
        }
        if used {
            ctx.notify_used(RX_QUEUE);
        }
    }

    /// Out of receive buffers: asks the driver to notify us when it adds
    /// the next one. With EVENT_IDX that means avail_event = the current
    /// avail index (not `next_avail`: with mergeable buffers some may be
    /// posted but too few). Returns true if buffers arrived in between.
    fn want_rx_kick(ctx: &mut QueueCtx<'_>) -> bool {
        let mem = ctx.mem;
        let Some(q) = ctx.queues.get_mut(RX_QUEUE) else {
            return false;
        };
        let start = q.next_avail();
        let Ok(avail) = q.avail_idx(mem, std::sync::atomic::Ordering::Acquire) else {
            return false;
        };
        q.set_next_avail(avail.0);
        let more = q.enable_notification(mem).unwrap_or(false);
        q.set_next_avail(start);
        more
    }

    /// Puts the frame in `rx_buf[..len]` into receive buffers.
    fn place(&mut self, ctx: &mut QueueCtx<'_>, len: usize) -> Placed {
        let mem = ctx.mem;
        let Some(q) = ctx.queues.get_mut(RX_QUEUE) else {
            return Placed::NoBuffers;
        };
        if !q.ready() {
            return Placed::NoBuffers;
        }
        let mergeable = self.acked & F_MRG_RXBUF != 0;
        let start = q.next_avail();
        let mut chains: Vec<(ParsedChain, u32)> = Vec::new();
        let mut written = 0usize;
        while written < len {
            let chain = match q.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    q.set_next_avail(start);
                    return Placed::Fault(e.to_string());
                }
            };
            let Some(chain) = chain else {
                q.set_next_avail(start);
                return Placed::NoBuffers;
            };
            let p = ParsedChain::parse(chain, u32::MAX as u64);
            if p.error.is_some() || p.write_len == 0 || !p.readable.is_empty() {
                // A broken receive buffer: give everything popped back
                // empty and drop the frame.
                crate::guest_warn!(
                    "virtio-net: bad rx chain {} ({:?}); frame dropped",
                    p.head,
                    p.error
                );
                chains.push((p, 0));
                for (c, _) in &chains {
                    let _ = q.add_used(mem, c.head, 0);
                }
                return Placed::Dropped;
            }
            if !mergeable && (p.write_len as usize) < len {
                // Too small for the whole frame: leave the buffer for a
                // smaller frame and drop this one.
                q.set_next_avail(start);
                return Placed::Dropped;
            }
            let part = self.rx_buf.get(written..len).unwrap_or(&[]);
            let n = p.write_at(mem, 0, part);
            if n == 0 || (!mergeable && n != part.len()) {
                q.set_next_avail(start);
                return Placed::Dropped;
            }
            written += n;
            chains.push((p, n as u32));
            if mergeable && chains.len() > u16::MAX as usize {
                break;
            }
        }
        let num = (chains.len() as u16).to_le_bytes();
        if let Some((first, _)) = chains.first() {
            first.write_at(mem, 10, &num);
        }
        for (c, n) in &chains {
            if let Err(e) = q.add_used(mem, c.head, *n) {
                crate::guest_warn!("virtio-net: add_used: {e}");
            }
        }
        Placed::Done
    }

    /// Sends one transmit chain to the tap. Returns whether a frame was
    /// written.
    fn transmit_chain(&mut self, mem: &super::GuestMem, p: &ParsedChain) -> bool {
        if let Err(why) = tx_frame(mem, p, self.acked, &mut self.tx_buf) {
            log::debug!("virtio-net: tx chain {} dropped: {why:?}", p.head);
            return false;
        }
        match self.tap.write(&self.tx_buf) {
            Ok(_) => true,
            Err(e) => {
                log::debug!("virtio-net: tap write: {e}");
                false
            }
        }
    }

    fn tx(&mut self, ctx: &mut QueueCtx<'_>) {
        ctx.serve_queue(TX_QUEUE, |mem, chain| {
            let p = ParsedChain::parse(chain, MAX_FRAME as u64);
            let sent = self.transmit_chain(mem, &p);
            self.count(|s| {
                if sent {
                    s.tx_frames += 1
                } else {
                    s.tx_dropped += 1
                }
            });
            (p.head, 0)
        });
    }
}

/// Why a transmit chain was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxDrop {
    /// The chain itself is broken.
    Malformed(ChainError),
    /// Not more than a header.
    TooShort,
    /// More than [`MAX_FRAME`] bytes.
    TooLong,
    /// The header asks for an offload the driver did not negotiate.
    Offload,
}

/// Whether a transmitted header only asks for offloads in `acked`.
pub fn tx_header_ok(hdr: &[u8], acked: u64) -> bool {
    let flags = hdr.first().copied().unwrap_or(0);
    let gso = hdr.get(1).copied().unwrap_or(0);
    if flags & HDR_F_NEEDS_CSUM != 0 && acked & F_CSUM == 0 {
        return false;
    }
    if gso & GSO_ECN != 0 {
        return false;
    }
    match gso {
        GSO_NONE => true,
        GSO_TCPV4 => acked & F_HOST_TSO4 != 0,
        GSO_TCPV6 => acked & F_HOST_TSO6 != 0,
        GSO_UDP => acked & F_HOST_UFO != 0,
        _ => false,
    }
}

/// Gathers transmit chain `p` (vnet header + frame) into `out`, checking it
/// against the negotiated features `acked`. This is all the parsing a
/// guest's transmit buffer gets; the result goes to the TAP as it is.
pub fn tx_frame(
    mem: &super::GuestMem,
    p: &ParsedChain,
    acked: u64,
    out: &mut Vec<u8>,
) -> Result<(), TxDrop> {
    if let Some(e) = p.error {
        return Err(TxDrop::Malformed(e));
    }
    if !p.writable.is_empty() {
        return Err(TxDrop::Malformed(ChainError::WrongOrder));
    }
    if p.read_len <= VNET_HDR_LEN as u64 {
        return Err(TxDrop::TooShort);
    }
    if p.read_len > MAX_FRAME as u64 {
        return Err(TxDrop::TooLong);
    }
    out.resize(p.read_len as usize, 0);
    if p.read_at(mem, 0, out) != out.len() {
        return Err(TxDrop::Malformed(ChainError::BadAddress));
    }
    if !tx_header_ok(out, acked) {
        return Err(TxDrop::Offload);
    }
    Ok(())
}

impl VirtioBackend for Net {
    fn device_type(&self) -> u16 {
        super::TYPE_NET
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        F_CSUM
            | F_GUEST_CSUM
            | F_MAC
            | F_GUEST_TSO4
            | F_GUEST_TSO6
            | F_GUEST_UFO
            | F_HOST_TSO4
            | F_HOST_TSO6
            | F_HOST_UFO
            | F_MRG_RXBUF
            | F_STATUS
    }
    fn pci_class(&self) -> u32 {
        0x020000
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut c = [0u8; CONFIG_LEN];
        c[0..6].copy_from_slice(&self.mac);
        let up = self.link_up.load(std::sync::atomic::Ordering::SeqCst);
        let status = if up { STATUS_LINK_UP } else { 0 };
        c[6..8].copy_from_slice(&status.to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| c.get(o).copied())
                .unwrap_or(0);
        }
    }
    fn activate(&mut self, features: u64) -> Result<(), VirtioError> {
        self.acked = features;
        let mut off = 0u32;
        if features & F_GUEST_CSUM != 0 {
            off |= libc::TUN_F_CSUM;
            if features & F_GUEST_TSO4 != 0 {
                off |= libc::TUN_F_TSO4;
            }
            if features & F_GUEST_TSO6 != 0 {
                off |= libc::TUN_F_TSO6;
            }
            if features & F_GUEST_UFO != 0 {
                off |= libc::TUN_F_UFO;
            }
        }
        self.tap
            .set_offload(off)
            .map_err(|e| VirtioError::Activate(e.to_string()))?;
        self.rx_frame = None;
        Ok(())
    }
    fn reset(&mut self) {
        self.acked = 0;
        self.rx_frame = None;
        let _ = self.tap.set_offload(0);
    }
    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }
    fn process(&mut self, wake: Wake, ctx: &mut QueueCtx<'_>) {
        match wake {
            Wake::Queue(RX_QUEUE) | Wake::Backend => self.rx(ctx),
            Wake::Queue(TX_QUEUE) => {
                self.tx(ctx);
                // Frames sent may already have come back (a bridge loop to
                // ourselves is unlikely, but the tap edge may have fired
                // while we were busy): try the receive side too.
                self.rx(ctx);
            }
            Wake::Queue(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_header_offloads_must_be_negotiated() {
        let hdr = |flags: u8, gso: u8| [flags, gso, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(tx_header_ok(&hdr(0, GSO_NONE), 0));
        assert!(!tx_header_ok(&hdr(HDR_F_NEEDS_CSUM, GSO_NONE), 0));
        assert!(tx_header_ok(&hdr(HDR_F_NEEDS_CSUM, GSO_NONE), F_CSUM));
        assert!(!tx_header_ok(&hdr(HDR_F_NEEDS_CSUM, GSO_TCPV4), F_CSUM));
        assert!(tx_header_ok(
            &hdr(HDR_F_NEEDS_CSUM, GSO_TCPV4),
            F_CSUM | F_HOST_TSO4
        ));
        assert!(!tx_header_ok(&hdr(0, GSO_TCPV6), F_HOST_TSO4));
        assert!(tx_header_ok(&hdr(0, GSO_TCPV6), F_HOST_TSO6));
        assert!(tx_header_ok(&hdr(0, GSO_UDP), F_HOST_UFO));
        assert!(!tx_header_ok(&hdr(0, GSO_TCPV4 | GSO_ECN), F_HOST_TSO4));
        assert!(!tx_header_ok(&hdr(0, 5), u64::MAX));
        assert!(tx_header_ok(&[], 0), "short input is GSO_NONE, no flags");
    }
}
