//! Virtio 1.x devices on a modern virtio-pci transport.
//!
//! - [`pci::VirtioPciDevice`]: the transport (virtio 1.x only, no legacy
//!   I/O BAR). Vendor 0x1AF4, device 0x1040 + type, revision 1. Everything
//!   lives in BAR4 (64-bit MMIO, [`pci::BAR_SIZE`] bytes): common config,
//!   ISR, device config, the notify doorbells and the MSI-X table and PBA.
//!   The vendor capabilities (cfg_type 1..=5, including the PCI-config
//!   access window SeaBIOS uses for BARs above 4 GiB) and an MSI-X capability
//!   (queues + 1 vectors) sit in config space. Interrupts go out as MSI-X
//!   messages through a [`MsiSink`], or as a level INTx line (an
//!   [`IrqLine`](crate::devices::IrqLine)) that an ISR read lowers.
//! - [`event_loop::EventLoop`]: the one I/O thread (epoll) on which the
//!   backends run. A doorbell write (from `bar_write`, or from KVM through an
//!   ioeventfd) signals the queue's EventFd; the loop wakes the backend.
//! - [`blk::Blk`]: virtio-blk (read, write, flush, get-id, discard,
//!   write-zeroes) on a [`DiskImage`].
//! - [`net::Net`]: virtio-net on a TAP (mergeable rx buffers, checksum and
//!   TSO/UFO offloads, link status).
//!
//! Wiring a device into a VM:
//!
//! ```text
//! let io = EventLoop::start("vireo-io")?;              // one per VM, kept alive
//! let disk = open_disk(path, format, read_only)?;      // block::open after merge
//! let blk = VirtioPciDevice::new(Box::new(Blk::new(disk, "serial")),
//!                                mem.clone(), msi.clone(), intx, io.handle())?;
//! let tap = crate::net::open_tap_on_bridge("br100", "vireo%d")?;
//! let nic = VirtioPciDevice::new(Box::new(Net::new(tap, mac)), ...)?;
//! // optional, once BAR4 sits at `addr`: for (off, q) in dev.ioevents()
//! //   KVM_IOEVENTFD(dev.queue_eventfd(q)?, Mmio(addr + off), no datamatch)
//! ```
//!
//! Lock order: the device state, then the interrupt state; an [`MsiSink`]
//! or [`IrqLine`](crate::devices::IrqLine) is called with the latter held
//! and must not call back into the device.
//!
//! Missing: packed rings, multiqueue, the control queue of virtio-net,
//! VIRTIO_F_RING_RESET, config-change notifications other than status.

pub mod blk;
pub mod event_loop;
pub mod fuzz;
pub mod net;
pub mod pci;

use std::os::unix::io::RawFd;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// The disk interface virtio-blk is written against. Until the block layer
/// lands this is the shim's copy of `crate::block::DiskImage`.
pub use crate::block::{open as open_disk, BlockError, DiskImage};

/// Guest memory as devices see it.
pub type GuestMem = GuestMemoryMmap<()>;

/// Device type ids (virtio 1.x, 5 "Device Types").
pub const TYPE_NET: u16 = 1;
pub const TYPE_BLOCK: u16 = 2;

/// Transport feature bits the transport itself offers.
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;

/// Device status bits.
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Delivers MSI messages. The VM implements it with KVM_SIGNAL_MSI (or an
/// irqfd route); tests record the messages.
pub trait MsiSink: Send + Sync {
    fn signal(&self, addr: u64, data: u32);
}

/// Why a backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("queue {0} is not valid (size or ring addresses)")]
    InvalidQueue(usize),
    #[error("device activation failed: {0}")]
    Activate(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What woke a backend on the event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The driver notified queue `n`.
    Queue(usize),
    /// The backend's own file descriptor ([`VirtioBackend::backend_fd`]) is ready.
    Backend,
}

/// Descriptor chains a backend serves from one queue per wake-up before it
/// yields the I/O thread to the other devices (the rest is served on the
/// next pass of the event loop: see [`QueueCtx::again`]).
pub const CHAINS_PER_WAKE: usize = 64;

/// What a backend gets while it runs: guest memory, its queues, and a way
/// to interrupt the guest.
pub struct QueueCtx<'a> {
    pub mem: &'a GuestMem,
    pub queues: &'a mut [Queue],
    pub(crate) irq: &'a pci::Interrupts,
    /// The first ring error the backend hit: the device stops (NEEDS_RESET).
    pub(crate) fault: Option<String>,
    /// Queues (bit n = queue n) with work left after the budget ran out.
    pub(crate) again: u64,
}

impl QueueCtx<'_> {
    /// The driver broke queue `q` (a ring the device cannot follow): the
    /// device stops serving every queue and reports NEEDS_RESET.
    pub fn fail(&mut self, q: usize, why: impl std::fmt::Display) {
        if self.fault.is_none() {
            self.fault = Some(format!("queue {q}: {why}"));
        }
    }

    /// Queue `q` has more work than one wake-up may do: the transport
    /// wakes the backend for it again after the other devices had a turn.
    pub fn again(&mut self, q: usize) {
        if q < 64 {
            self.again |= 1 << q;
        }
    }

    /// Whether the backend reported a ring error in this wake-up.
    pub fn failed(&self) -> bool {
        self.fault.is_some()
    }

    /// Serves the available chains of queue `q` with `serve` (which returns
    /// the chain's head and the used length to report), at most
    /// [`CHAINS_PER_WAKE`] of them, then re-enables notifications. A queue
    /// that is not ready is skipped. A ring error (an avail index too far
    /// ahead, a ring outside guest memory) is reported with [`Self::fail`]
    /// and ends the pass: it is never retried. Returns how many chains were
    /// served; the driver is interrupted if any were.
    pub fn serve_queue(
        &mut self,
        q: usize,
        mut serve: impl FnMut(&GuestMem, virtio_queue::DescriptorChain<&GuestMem>) -> (u16, u32),
    ) -> usize {
        use virtio_queue::{QueueOwnedT, QueueT};
        let mem = self.mem;
        let Some(queue) = self.queues.get_mut(q) else {
            return 0;
        };
        if !queue.ready() {
            return 0;
        }
        let mut served = 0usize;
        let mut passes = 0usize;
        let mut fault: Option<String> = None;
        let mut more = false;
        'outer: loop {
            passes += 1;
            if passes > CHAINS_PER_WAKE {
                // The driver keeps moving the avail index without giving
                // us chains we can take: come back later.
                more = true;
                break;
            }
            if let Err(e) = queue.disable_notification(mem) {
                fault = Some(e.to_string());
                break;
            }
            loop {
                if served >= CHAINS_PER_WAKE {
                    more = true;
                    break 'outer;
                }
                let chain = match queue.iter(mem) {
                    Ok(mut it) => it.next(),
                    Err(e) => {
                        fault = Some(e.to_string());
                        break 'outer;
                    }
                };
                let Some(chain) = chain else {
                    break;
                };
                let (head, len) = serve(mem, chain);
                if let Err(e) = queue.add_used(mem, head, len) {
                    fault = Some(format!("add_used: {e}"));
                    break 'outer;
                }
                served += 1;
            }
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    fault = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(f) = fault {
            self.fail(q, f);
        } else if more {
            self.again(q);
        }
        if served > 0 {
            self.notify_used(q);
        }
        served
    }

    /// Interrupts the guest for queue `q` if the driver wants to hear of the
    /// used-ring update (event-idx / NO_INTERRUPT suppression honoured).
    pub fn notify_used(&mut self, q: usize) {
        use virtio_queue::QueueT;
        let needed = match self.queues.get_mut(q) {
            Some(queue) => queue.needs_notification(self.mem).unwrap_or(true),
            None => return,
        };
        if needed {
            self.irq.signal_queue(q);
        }
    }
}

/// A virtio device model behind the transport. Runs on the event loop
/// (`process`) and, for configuration, on the vCPU thread.
pub trait VirtioBackend: Send {
    /// Virtio device type ([`TYPE_NET`], [`TYPE_BLOCK`]).
    fn device_type(&self) -> u16;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Device-specific feature bits (the transport adds VERSION_1 and the
    /// ring features).
    fn features(&self) -> u64;
    /// PCI class code (`base << 16 | sub << 8 | prog_if`).
    fn pci_class(&self) -> u32;
    /// Reads the device-specific config space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific config space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK with these `features`.
    fn activate(&mut self, features: u64) -> Result<(), VirtioError>;
    /// The driver reset the device.
    fn reset(&mut self);
    /// An extra fd to watch on the event loop (a tap), edge-triggered for
    /// input.
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }
    /// Does the work `wake` calls for. Only called while the device is live
    /// (DRIVER_OK, not reset).
    fn process(&mut self, wake: Wake, ctx: &mut QueueCtx<'_>);
}

/// Why a descriptor chain is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// The chain ended on a descriptor that still says NEXT: a loop, a next
    /// index past the table, or more descriptors than the queue holds.
    Truncated,
    /// A device-readable descriptor after a device-writable one.
    WrongOrder,
    /// A buffer outside guest memory.
    BadAddress,
    /// More bytes than a request may carry.
    TooLong,
}

/// A descriptor chain split into its device-readable and device-writable
/// buffers, every one checked against guest memory.
#[derive(Debug, Default)]
pub struct ParsedChain {
    pub head: u16,
    pub readable: Vec<(vm_memory::GuestAddress, u32)>,
    pub writable: Vec<(vm_memory::GuestAddress, u32)>,
    pub read_len: u64,
    pub write_len: u64,
    /// The first thing wrong with the chain, if any.
    pub error: Option<ChainError>,
}

impl ParsedChain {
    /// Walks `chain`. Buffers that fail the memory check are left out and
    /// recorded in `error`; so is a total past `max_len`.
    pub fn parse(chain: virtio_queue::DescriptorChain<&GuestMem>, max_len: u64) -> Self {
        use vm_memory::GuestMemoryBackend;
        let mut p = ParsedChain {
            head: chain.head_index(),
            ..Default::default()
        };
        let mem_ok = |mem: &GuestMem, a: vm_memory::GuestAddress, l: u32| {
            l == 0 || mem.check_range(a, l as usize)
        };
        let mut last_next = false;
        let mut chain = chain;
        while let Some(d) = chain.next() {
            last_next = d.has_next();
            let ok = mem_ok(chain.memory(), d.addr(), d.len());
            if !ok {
                p.error.get_or_insert(ChainError::BadAddress);
                continue;
            }
            if d.is_write_only() {
                p.write_len += d.len() as u64;
                p.writable.push((d.addr(), d.len()));
            } else {
                if !p.writable.is_empty() {
                    p.error.get_or_insert(ChainError::WrongOrder);
                    continue;
                }
                p.read_len += d.len() as u64;
                p.readable.push((d.addr(), d.len()));
            }
            if p.read_len + p.write_len > max_len {
                p.error.get_or_insert(ChainError::TooLong);
            }
        }
        if last_next {
            p.error.get_or_insert(ChainError::Truncated);
        }
        p
    }

    /// Copies readable bytes from byte `pos` of the chain into `buf`;
    /// returns how many were copied.
    pub fn read_at(&self, mem: &GuestMem, pos: u64, buf: &mut [u8]) -> usize {
        copy_sg(&self.readable, pos, buf.len(), |addr, range| {
            use vm_memory::Bytes;
            buf.get_mut(range)
                .is_some_and(|b| mem.read_slice(b, addr).is_ok())
        })
    }

    /// Copies `buf` into the writable buffers starting at byte `pos`;
    /// returns how many bytes were copied.
    pub fn write_at(&self, mem: &GuestMem, pos: u64, buf: &[u8]) -> usize {
        copy_sg(&self.writable, pos, buf.len(), |addr, range| {
            use vm_memory::Bytes;
            buf.get(range)
                .is_some_and(|b| mem.write_slice(b, addr).is_ok())
        })
    }
}

/// Walks the segments `sg` from byte `pos` for `len` bytes, calling `f` with
/// each guest address and the matching range of the caller's buffer.
fn copy_sg(
    sg: &[(vm_memory::GuestAddress, u32)],
    pos: u64,
    len: usize,
    mut f: impl FnMut(vm_memory::GuestAddress, std::ops::Range<usize>) -> bool,
) -> usize {
    use vm_memory::Address;
    let mut skip = pos;
    let mut done = 0usize;
    for &(addr, l) in sg {
        if done >= len {
            break;
        }
        let l = l as u64;
        if skip >= l {
            skip -= l;
            continue;
        }
        let n = ((l - skip) as usize).min(len - done);
        let Some(a) = addr.checked_add(skip) else {
            break;
        };
        if !f(a, done..done + n) {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}
