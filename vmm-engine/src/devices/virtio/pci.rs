//! The modern (virtio 1.x) virtio-pci transport.
//!
//! BAR4 (64-bit, non-prefetchable MMIO, [`BAR_SIZE`] bytes) holds every
//! register region:
//!
//! | offset   | region                                   |
//! |----------|------------------------------------------|
//! | 0x0000   | common configuration (cfg_type 1)        |
//! | 0x1000   | ISR status (cfg_type 3)                  |
//! | 0x2000   | device-specific configuration (type 4)   |
//! | 0x3000   | notify doorbells, 4 bytes per queue (type 2) |
//! | 0x4000   | MSI-X table (16 bytes per vector)        |
//! | 0x5000   | MSI-X pending-bit array                  |
//!
//! A doorbell write signals the queue's EventFd; the backend runs on the
//! [`EventLoop`](super::event_loop::EventLoop). The VM may also bind those
//! EventFds to KVM ioeventfds ([`VirtioPciDevice::ioevents`],
//! [`VirtioPciDevice::queue_eventfd`]) so doorbells never exit to user space.
//!
//! Interrupts: with MSI-X enabled, a message per vector through the
//! [`MsiSink`] (masking and pending bits honoured); otherwise the ISR byte
//! and a level INTx line, lowered when the driver reads the ISR.

use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::event_loop::{EventLoopHandle, Token};
use super::{
    status, GuestMem, MsiSink, QueueCtx, VirtioBackend, Wake, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_VERSION_1,
};
use crate::devices::pci::{
    BarKind, BarSpec, PciConfig, PciDevice, CMD_BUS_MASTER, CMD_INTX_DISABLE,
};
use crate::devices::{le_bytes_into, le_value, IrqLine};

/// The BAR holding all the virtio regions.
pub const BAR_INDEX: usize = 4;
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
pub const COMMON_CFG_LEN: u64 = 0x1000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const ISR_LEN: u64 = 0x1000;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const DEVICE_CFG_LEN: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_LEN: u64 = 0x1000;
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_TABLE_LEN: u64 = 0x1000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
pub const MSIX_PBA_LEN: u64 = 0x1000;

/// PCI vendor id of virtio devices.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device ids are 0x1040 + type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// "No vector" in the MSI-X vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// Vendor capability types.
pub const CAP_COMMON_CFG: u8 = 1;
pub const CAP_NOTIFY_CFG: u8 = 2;
pub const CAP_ISR_CFG: u8 = 3;
pub const CAP_DEVICE_CFG: u8 = 4;
pub const CAP_PCI_CFG: u8 = 5;
const PCI_CAP_ID_VNDR: u8 = 0x09;
const PCI_CAP_ID_MSIX: u8 = 0x11;
const MSIX_CTRL_ENABLE: u16 = 1 << 15;
const MSIX_CTRL_MASKALL: u16 = 1 << 14;
/// At most this many MSI-X vectors fit in the table region.
const MAX_VECTORS: usize = (MSIX_TABLE_LEN / 16) as usize;

const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// Common configuration register offsets.
pub mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
    pub const QUEUE_NOTIFY_DATA: u64 = 0x38;
    pub const QUEUE_RESET: u64 = 0x3a;
    /// End of the common configuration structure.
    pub const END: u64 = 0x3c;
}

#[derive(Clone, Copy, Default)]
struct MsixEntry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

impl MsixEntry {
    fn masked(&self) -> bool {
        self.ctrl & 1 != 0
    }
    fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.addr_lo.to_le_bytes());
        b[4..8].copy_from_slice(&self.addr_hi.to_le_bytes());
        b[8..12].copy_from_slice(&self.data.to_le_bytes());
        b[12..16].copy_from_slice(&self.ctrl.to_le_bytes());
        b
    }
    fn from_bytes(b: &[u8; 16]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        MsixEntry {
            addr_lo: w(0),
            addr_hi: w(4),
            data: w(8),
            ctrl: w(12) & 1,
        }
    }
}

struct IntState {
    msix_enabled: bool,
    msix_masked: bool,
    table: Vec<MsixEntry>,
    pending: Vec<bool>,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    isr: u8,
    intx_disabled: bool,
}

/// Interrupt state shared by the transport (vCPU thread) and the backend
/// (event-loop thread).
pub struct Interrupts {
    state: Mutex<IntState>,
    msi: Arc<dyn MsiSink>,
    intx: Arc<dyn IrqLine>,
}

impl Interrupts {
    fn new(vectors: usize, queues: usize, msi: Arc<dyn MsiSink>, intx: Arc<dyn IrqLine>) -> Self {
        Interrupts {
            state: Mutex::new(IntState {
                msix_enabled: false,
                msix_masked: false,
                table: vec![
                    MsixEntry {
                        ctrl: 1,
                        ..Default::default()
                    };
                    vectors
                ],
                pending: vec![false; vectors],
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; queues],
                isr: 0,
                intx_disabled: false,
            }),
            msi,
            intx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, IntState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Interrupts the guest for a used-buffer notification on queue `q`.
    pub fn signal_queue(&self, q: usize) {
        let vector = self.lock().queue_vectors.get(q).copied();
        if let Some(v) = vector {
            self.signal(v, ISR_QUEUE);
        }
    }

    /// Interrupts the guest for a configuration change.
    pub fn signal_config(&self) {
        let v = self.lock().config_vector;
        self.signal(v, ISR_CONFIG);
    }

    fn signal(&self, vector: u16, isr_bit: u8) {
        let mut s = self.lock();
        if s.msix_enabled {
            let Some(entry) = s.table.get(vector as usize).copied() else {
                return; // NO_VECTOR or out of range: no interrupt.
            };
            if s.msix_masked || entry.masked() {
                if let Some(p) = s.pending.get_mut(vector as usize) {
                    *p = true;
                }
                return;
            }
            self.msi.signal(
                (entry.addr_hi as u64) << 32 | entry.addr_lo as u64,
                entry.data,
            );
        } else {
            s.isr |= isr_bit;
            if !s.intx_disabled {
                self.intx.set_level(true);
            }
        }
    }

    /// Delivers pending vectors that are no longer masked.
    fn deliver_pending(s: &mut IntState, msi: &dyn MsiSink) {
        if !s.msix_enabled || s.msix_masked {
            return;
        }
        let IntState { table, pending, .. } = s;
        for (i, e) in table.iter().enumerate() {
            if let Some(p) = pending.get_mut(i) {
                if *p && !e.masked() {
                    *p = false;
                    msi.signal((e.addr_hi as u64) << 32 | e.addr_lo as u64, e.data);
                }
            }
        }
    }

    fn read_isr(&self) -> u8 {
        let mut s = self.lock();
        let v = s.isr;
        s.isr = 0;
        self.intx.set_level(false);
        v
    }
}

/// What the event-loop handlers share with the transport.
struct DeviceState {
    backend: Box<dyn VirtioBackend>,
    queues: Vec<Queue>,
    live: bool,
    /// PCI bus mastering: without it the device does no DMA.
    bus_master: bool,
    /// The driver broke a ring (NEEDS_RESET until the next reset).
    broken: bool,
    mem: GuestMem,
    irq: Arc<Interrupts>,
    /// Clones of the queue EventFds, to wake a backend again when it ran
    /// out of its budget with work left.
    kicks: Vec<EventFd>,
}

impl DeviceState {
    fn run(&mut self, wake: Wake) {
        if !self.live || !self.bus_master || self.broken {
            return;
        }
        if let Wake::Queue(q) = wake {
            // A doorbell for a queue the driver never enabled: nothing to do.
            if !self.queues.get(q).is_some_and(|q| q.ready()) {
                return;
            }
        }
        // An avail index further ahead than the ring is long is a driver
        // bug (or an attack): stop the device and ask for a reset.
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            let Ok(avail) = q.avail_idx(&self.mem, std::sync::atomic::Ordering::Acquire) else {
                continue;
            };
            let ahead = avail.0.wrapping_sub(q.next_avail());
            if ahead > q.size() {
                crate::guest_warn!(
                    "virtio: queue {i}: avail index {} is {ahead} entries ahead of a ring of {}; \
                     the device needs a reset",
                    avail.0,
                    q.size()
                );
                self.broken = true;
                self.irq.signal_config();
                return;
            }
        }
        let DeviceState {
            backend,
            queues,
            mem,
            irq,
            ..
        } = self;
        let mut ctx = QueueCtx {
            mem,
            queues,
            irq: irq.as_ref(),
            fault: None,
            again: 0,
        };
        backend.process(wake, &mut ctx);
        let (fault, again) = (ctx.fault, ctx.again);
        if let Some(why) = fault {
            crate::guest_warn!(
                "virtio: {why}; the device stops until the driver resets it (NEEDS_RESET)"
            );
            self.broken = true;
            self.irq.signal_config();
            return;
        }
        for (q, k) in self.kicks.iter().enumerate() {
            if again & (1 << q) != 0 {
                let _ = k.write(1);
            }
        }
    }
}

fn lock_state(s: &Mutex<DeviceState>) -> MutexGuard<'_, DeviceState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A virtio device on the PCI bus.
pub struct VirtioPciDevice {
    config: PciConfig,
    state: Arc<Mutex<DeviceState>>,
    irq: Arc<Interrupts>,
    queue_evts: Vec<EventFd>,
    event_loop: EventLoopHandle,
    tokens: Vec<Token>,
    num_queues: u16,
    max_sizes: Vec<u16>,
    device_features: u64,
    driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    status: u8,
    config_generation: u8,
    queue_select: u16,
    msix_cap: usize,
    cfg_cap: usize,
}

impl VirtioPciDevice {
    /// Wraps `backend` in a virtio-pci function. Queue notifications and the
    /// backend fd are served on `event_loop`. `msi` delivers MSI-X messages,
    /// `intx` is the INTx line used when MSI-X is off.
    pub fn new(
        backend: Box<dyn VirtioBackend>,
        mem: GuestMem,
        msi: Arc<dyn MsiSink>,
        intx: Arc<dyn IrqLine>,
        event_loop: EventLoopHandle,
    ) -> io::Result<Self> {
        let max_sizes: Vec<u16> = backend.queue_max_sizes();
        let nq = max_sizes.len().min(MAX_VECTORS - 1);
        let max_sizes: Vec<u16> = max_sizes.into_iter().take(nq).collect();
        let mut queues = Vec::with_capacity(nq);
        for &m in &max_sizes {
            queues.push(
                Queue::new(m)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            );
        }
        let vectors = nq + 1;
        let irq = Arc::new(Interrupts::new(vectors, nq, msi, intx));
        let device_type = backend.device_type();
        let class = backend.pci_class();
        let device_features =
            backend.features() | F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC;
        let backend_fd = backend.backend_fd();

        let mut config = PciConfig::new(
            VIRTIO_PCI_VENDOR,
            VIRTIO_PCI_DEVICE_BASE + device_type,
            class,
            1,
        );
        config.set_subsystem(VIRTIO_PCI_VENDOR, 0x1100);
        config.set_interrupt_pin(1);
        config.add_bar(
            BAR_INDEX,
            BarSpec {
                kind: BarKind::Mem64,
                size: BAR_SIZE,
                prefetchable: false,
            },
        );
        let vcap = |ty: u8, off: u64, len: u64, extra: &[u8]| -> Vec<u8> {
            let mut b = vec![(2 + 14 + extra.len()) as u8, ty, BAR_INDEX as u8, 0, 0, 0];
            b.extend_from_slice(&(off as u32).to_le_bytes());
            b.extend_from_slice(&(len as u32).to_le_bytes());
            b.extend_from_slice(extra);
            b
        };
        let caps_full = || io::Error::other("PCI config space full");
        config
            .add_capability(
                PCI_CAP_ID_VNDR,
                &vcap(CAP_COMMON_CFG, COMMON_CFG_OFFSET, COMMON_CFG_LEN, &[]),
                &[],
            )
            .ok_or_else(caps_full)?;
        config
            .add_capability(
                PCI_CAP_ID_VNDR,
                &vcap(
                    CAP_NOTIFY_CFG,
                    NOTIFY_OFFSET,
                    NOTIFY_LEN,
                    &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
                ),
                &[],
            )
            .ok_or_else(caps_full)?;
        config
            .add_capability(
                PCI_CAP_ID_VNDR,
                &vcap(CAP_ISR_CFG, ISR_OFFSET, ISR_LEN, &[]),
                &[],
            )
            .ok_or_else(caps_full)?;
        config
            .add_capability(
                PCI_CAP_ID_VNDR,
                &vcap(CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN, &[]),
                &[],
            )
            .ok_or_else(caps_full)?;
        // PCI config access: bar, offset, length and data are writable.
        let mut cfg_body = vcap(CAP_PCI_CFG, 0, 0, &[0, 0, 0, 0]);
        cfg_body[2] = 0;
        let mut cfg_w = vec![0u8; cfg_body.len()];
        cfg_w[2] = 0xff;
        for b in cfg_w.iter_mut().skip(6) {
            *b = 0xff;
        }
        let cfg_cap = config
            .add_capability(PCI_CAP_ID_VNDR, &cfg_body, &cfg_w)
            .ok_or_else(caps_full)?;
        let mut msix = Vec::with_capacity(10);
        msix.extend_from_slice(&((vectors - 1) as u16).to_le_bytes());
        msix.extend_from_slice(&(MSIX_TABLE_OFFSET as u32 | BAR_INDEX as u32).to_le_bytes());
        msix.extend_from_slice(&(MSIX_PBA_OFFSET as u32 | BAR_INDEX as u32).to_le_bytes());
        let msix_cap = config
            .add_capability(PCI_CAP_ID_MSIX, &msix, &[0x00, 0xc0])
            .ok_or_else(caps_full)?;

        let mut evts = Vec::with_capacity(nq);
        let mut kicks = Vec::with_capacity(nq);
        for _ in 0..nq {
            let evt = EventFd::new(EFD_NONBLOCK)?;
            kicks.push(evt.try_clone()?);
            evts.push(evt);
        }
        let state = Arc::new(Mutex::new(DeviceState {
            backend,
            queues,
            live: false,
            bus_master: false,
            broken: false,
            mem,
            irq: irq.clone(),
            kicks,
        }));

        let mut dev = VirtioPciDevice {
            config,
            state: state.clone(),
            irq,
            queue_evts: Vec::with_capacity(nq),
            event_loop: event_loop.clone(),
            tokens: Vec::new(),
            num_queues: nq as u16,
            max_sizes,
            device_features,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            msix_cap,
            cfg_cap,
        };
        for (q, evt) in evts.into_iter().enumerate() {
            let evt2 = evt.try_clone()?;
            let st = state.clone();
            let tok = event_loop.add(
                evt.as_raw_fd(),
                EventSet::IN,
                Arc::new(move |_| {
                    let _ = evt2.read();
                    lock_state(&st).run(Wake::Queue(q));
                }),
            )?;
            dev.tokens.push(tok);
            dev.queue_evts.push(evt);
        }
        if let Some(fd) = backend_fd {
            let st = state.clone();
            let tok = event_loop.add(
                fd,
                EventSet::IN | EventSet::EDGE_TRIGGERED,
                Arc::new(move |_| lock_state(&st).run(Wake::Backend)),
            )?;
            dev.tokens.push(tok);
        }
        Ok(dev)
    }

    /// The notify addresses inside BAR4 and the queue each one kicks, for
    /// registering KVM ioeventfds (any write, no datamatch).
    pub fn ioevents(&self) -> Vec<(u64, u16)> {
        (0..self.num_queues)
            .map(|q| (NOTIFY_OFFSET + q as u64 * NOTIFY_OFF_MULTIPLIER as u64, q))
            .collect()
    }

    /// A clone of the EventFd the event loop waits on for queue `q`; bind it
    /// to the doorbell address with KVM_IOEVENTFD.
    pub fn queue_eventfd(&self, q: u16) -> io::Result<EventFd> {
        self.queue_evts
            .get(q as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such queue"))?
            .try_clone()
    }

    /// The device configuration changed (e.g. link state): bumps the
    /// config generation and sends the configuration-change interrupt.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.irq.signal_config();
        }
    }

    /// Current device status byte.
    pub fn device_status(&self) -> u8 {
        self.status
    }

    /// Features the driver acknowledged.
    pub fn acked_features(&self) -> u64 {
        self.driver_features
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        {
            let mut st = lock_state(&self.state);
            st.live = false;
            st.broken = false;
            st.backend.reset();
            for q in st.queues.iter_mut() {
                q.reset();
            }
        }
        {
            let mut s = self.irq.lock();
            s.config_vector = NO_VECTOR;
            for v in s.queue_vectors.iter_mut() {
                *v = NO_VECTOR;
            }
            s.isr = 0;
        }
        self.irq.intx.set_level(false);
    }

    fn activate(&mut self) -> bool {
        let features = self.driver_features;
        let mut st = lock_state(&self.state);
        let st = &mut *st;
        for (i, q) in st.queues.iter_mut().enumerate() {
            if !q.ready() {
                continue;
            }
            if !q.is_valid(&st.mem) {
                crate::guest_warn!("virtio: queue {i} is not valid at DRIVER_OK");
                return false;
            }
            q.set_event_idx(features & F_RING_EVENT_IDX != 0);
        }
        if let Err(e) = st.backend.activate(features) {
            crate::guest_warn!("virtio: device activation failed: {e}");
            return false;
        }
        st.live = true;
        true
    }

    fn write_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = v | (old & status::NEEDS_RESET);
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let ok = self.driver_features & !self.device_features == 0
                && self.driver_features & F_VERSION_1 != 0;
            if !ok {
                new &= !status::FEATURES_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 {
            if new & status::FEATURES_OK == 0 || !self.activate() {
                new = (new & !status::DRIVER_OK) | status::NEEDS_RESET;
                self.status = new;
                self.irq.signal_config();
                return;
            }
            self.status = new;
            // Catch up on doorbells rung before DRIVER_OK.
            for e in &self.queue_evts {
                let _ = e.write(1);
            }
            return;
        }
        self.status = new;
    }

    fn common_value(&self, field: u64) -> u64 {
        use common::*;
        let sel = self.queue_select as usize;
        let st = lock_state(&self.state);
        let q = st.queues.get(sel);
        match field {
            DEVICE_FEATURE_SELECT => self.device_feature_select as u64,
            DEVICE_FEATURE => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            DRIVER_FEATURE_SELECT => self.driver_feature_select as u64,
            DRIVER_FEATURE => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            MSIX_CONFIG => self.irq.lock().config_vector as u64,
            NUM_QUEUES => self.num_queues as u64,
            DEVICE_STATUS => {
                let nr = if st.broken { status::NEEDS_RESET } else { 0 };
                (self.status | nr) as u64
            }
            CONFIG_GENERATION => self.config_generation as u64,
            QUEUE_SELECT => self.queue_select as u64,
            QUEUE_SIZE => q.map_or(0, |q| q.size() as u64),
            QUEUE_MSIX_VECTOR => {
                if q.is_some() {
                    self.irq
                        .lock()
                        .queue_vectors
                        .get(sel)
                        .copied()
                        .unwrap_or(NO_VECTOR) as u64
                } else {
                    NO_VECTOR as u64
                }
            }
            QUEUE_ENABLE => q.map_or(0, |q| q.ready() as u64),
            QUEUE_NOTIFY_OFF => q.map_or(0, |_| sel as u64),
            QUEUE_DESC => q.map_or(0, |q| q.desc_table()),
            QUEUE_DRIVER => q.map_or(0, |q| q.avail_ring()),
            QUEUE_DEVICE => q.map_or(0, |q| q.used_ring()),
            _ => 0,
        }
    }

    fn common_set(&mut self, field: u64, v: u64) {
        use common::*;
        let sel = self.queue_select as usize;
        let queue_writable = self.status & status::DRIVER_OK == 0;
        match field {
            DEVICE_FEATURE_SELECT => self.device_feature_select = v as u32,
            DRIVER_FEATURE_SELECT => self.driver_feature_select = v as u32,
            DRIVER_FEATURE => {
                if self.status & status::FEATURES_OK != 0 {
                    return;
                }
                match self.driver_feature_select {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | ((v & 0xffff_ffff) << 32)
                    }
                    _ => {}
                }
            }
            MSIX_CONFIG => {
                let mut s = self.irq.lock();
                let ok = (v as usize) < s.table.len();
                s.config_vector = if ok { v as u16 } else { NO_VECTOR };
            }
            DEVICE_STATUS => self.write_status(v as u8),
            QUEUE_SELECT => self.queue_select = v as u16,
            QUEUE_SIZE if queue_writable => {
                let max = self.max_sizes.get(sel).copied().unwrap_or(0);
                let size = v as u16;
                if size != 0 && size.is_power_of_two() && size <= max {
                    if let Some(q) = lock_state(&self.state).queues.get_mut(sel) {
                        q.set_size(size);
                    }
                }
            }
            QUEUE_MSIX_VECTOR => {
                let mut s = self.irq.lock();
                let ok = (v as usize) < s.table.len();
                if let Some(qv) = s.queue_vectors.get_mut(sel) {
                    *qv = if ok { v as u16 } else { NO_VECTOR };
                }
            }
            QUEUE_ENABLE if queue_writable && v == 1 => {
                if let Some(q) = lock_state(&self.state).queues.get_mut(sel) {
                    q.set_ready(true);
                }
            }
            QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE if queue_writable => {
                let mut st = lock_state(&self.state);
                if let Some(q) = st.queues.get_mut(sel) {
                    let (lo, hi) = (Some(v as u32), Some((v >> 32) as u32));
                    match field {
                        QUEUE_DESC => q.set_desc_table_address(lo, hi),
                        QUEUE_DRIVER => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => {}
        }
    }

    /// (field start, field size) of the common-config field holding `off`.
    fn common_field(off: u64) -> Option<(u64, u64)> {
        use common::*;
        const FIELDS: [(u64, u64); 18] = [
            (DEVICE_FEATURE_SELECT, 4),
            (DEVICE_FEATURE, 4),
            (DRIVER_FEATURE_SELECT, 4),
            (DRIVER_FEATURE, 4),
            (MSIX_CONFIG, 2),
            (NUM_QUEUES, 2),
            (DEVICE_STATUS, 1),
            (CONFIG_GENERATION, 1),
            (QUEUE_SELECT, 2),
            (QUEUE_SIZE, 2),
            (QUEUE_MSIX_VECTOR, 2),
            (QUEUE_ENABLE, 2),
            (QUEUE_NOTIFY_OFF, 2),
            (QUEUE_DESC, 8),
            (QUEUE_DRIVER, 8),
            (QUEUE_DEVICE, 8),
            (QUEUE_NOTIFY_DATA, 2),
            (QUEUE_RESET, 2),
        ];
        FIELDS
            .iter()
            .copied()
            .find(|&(s, l)| off >= s && off < s + l)
    }

    fn common_read(&mut self, off: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((start, size)) = Self::common_field(off) else {
            return;
        };
        if off + data.len() as u64 > start + size {
            return; // straddles two fields
        }
        let v = self.common_value(start);
        le_bytes_into(v, (off - start) as usize, data);
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        let Some((start, size)) = Self::common_field(off) else {
            return;
        };
        if data.is_empty() || off + data.len() as u64 > start + size {
            return;
        }
        let shift = (off - start) as usize;
        let v = if data.len() as u64 == size {
            le_value(data)
        } else {
            // A partial write (32-bit halves of the 64-bit addresses).
            let mut bytes = self.common_value(start).to_le_bytes();
            for (i, b) in data.iter().enumerate() {
                if let Some(d) = bytes.get_mut(shift + i) {
                    *d = *b;
                }
            }
            u64::from_le_bytes(bytes)
        };
        self.common_set(start, v);
    }

    fn msix_table_access(&mut self, off: u64, read: Option<&mut [u8]>, write: Option<&[u8]>) {
        let idx = (off / 16) as usize;
        let within = (off % 16) as usize;
        let mut s = self.irq.lock();
        let Some(entry) = s.table.get(idx).copied() else {
            if let Some(d) = read {
                d.fill(0);
            }
            return;
        };
        let mut bytes = entry.bytes();
        if let Some(d) = read {
            for (i, b) in d.iter_mut().enumerate() {
                *b = bytes.get(within + i).copied().unwrap_or(0);
            }
        }
        if let Some(d) = write {
            for (i, b) in d.iter().enumerate() {
                if let Some(x) = bytes.get_mut(within + i) {
                    *x = *b;
                }
            }
            let new = MsixEntry::from_bytes(&bytes);
            if let Some(e) = s.table.get_mut(idx) {
                *e = new;
            }
            if entry.masked() && !new.masked() {
                Interrupts::deliver_pending(&mut s, self.irq.msi.as_ref());
            }
        }
    }

    fn msix_pba_read(&self, off: u64, data: &mut [u8]) {
        let s = self.irq.lock();
        for (i, b) in data.iter_mut().enumerate() {
            let byte = off as usize + i;
            let mut v = 0u8;
            for bit in 0..8 {
                if s.pending.get(byte * 8 + bit).copied().unwrap_or(false) {
                    v |= 1 << bit;
                }
            }
            *b = v;
        }
    }

    fn sync_msix_control(&mut self) {
        let ctrl = self.config.u16_at(self.msix_cap + 2);
        let cmd = self.config.command();
        let mut s = self.irq.lock();
        s.msix_enabled = ctrl & MSIX_CTRL_ENABLE != 0;
        s.msix_masked = ctrl & MSIX_CTRL_MASKALL != 0;
        s.intx_disabled = cmd & CMD_INTX_DISABLE != 0;
        Interrupts::deliver_pending(&mut s, self.irq.msi.as_ref());
        if s.msix_enabled || s.intx_disabled {
            self.irq.intx.set_level(false);
        } else if s.isr != 0 {
            self.irq.intx.set_level(true);
        }
    }

    /// The BAR window of the PCI-config access capability: (offset, length)
    /// if it targets our BAR with a 1/2/4-byte access inside it.
    fn cfg_window(&self) -> Option<(u64, usize)> {
        let c = self.cfg_cap;
        let bar = self.config.regs().get(c + 4).copied()?;
        let off = self.config.u32_at(c + 8) as u64;
        let len = self.config.u32_at(c + 12) as usize;
        let ok = bar as usize == BAR_INDEX
            && matches!(len, 1 | 2 | 4)
            && off.checked_add(len as u64)? <= BAR_SIZE;
        ok.then_some((off, len))
    }

    fn overlaps_cfg_data(&self, offset: usize, len: usize) -> bool {
        let d = self.cfg_cap + 16;
        offset < d + 4 && offset + len > d
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        for t in self.tokens.drain(..) {
            self.event_loop.remove(t);
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        // The status register's INTx bit follows the line.
        let intx = {
            let s = self.irq.lock();
            s.isr != 0 && !s.msix_enabled
        };
        self.config.set_intx_status(intx);
        if self.overlaps_cfg_data(offset, data.len()) {
            if let Some((off, len)) = self.cfg_window() {
                let mut buf = [0u8; 4];
                if let Some(b) = buf.get_mut(..len) {
                    self.bar_read(BAR_INDEX, off, b);
                }
                let d = self.cfg_cap + 16;
                self.config.regs_mut()[d..d + 4].copy_from_slice(&buf);
            }
        }
        self.config.read(offset, data)
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) -> bool {
        let remap = self.config.write(offset, data);
        let bm = self.config.command() & CMD_BUS_MASTER != 0;
        let was = std::mem::replace(&mut lock_state(&self.state).bus_master, bm);
        if bm && !was {
            // Doorbells rung while DMA was off are served now.
            for e in &self.queue_evts {
                let _ = e.write(1);
            }
        }
        let m = self.msix_cap;
        if (offset < m + 4 && offset + data.len() > m + 2) || remap {
            self.sync_msix_control();
        }
        if self.overlaps_cfg_data(offset, data.len()) {
            if let Some((off, len)) = self.cfg_window() {
                let d = self.cfg_cap + 16;
                let buf: [u8; 4] = [
                    self.config.regs()[d],
                    self.config.regs()[d + 1],
                    self.config.regs()[d + 2],
                    self.config.regs()[d + 3],
                ];
                if let Some(b) = buf.get(..len) {
                    self.bar_write(BAR_INDEX, off, b);
                }
            }
        }
        remap
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar != BAR_INDEX {
            data.fill(0xff);
            return;
        }
        match offset {
            o if o < COMMON_CFG_OFFSET + COMMON_CFG_LEN => self.common_read(o, data),
            o if o < ISR_OFFSET + ISR_LEN => {
                data.fill(0);
                if o == ISR_OFFSET {
                    if let Some(b) = data.first_mut() {
                        *b = self.irq.read_isr();
                    }
                }
            }
            o if o < DEVICE_CFG_OFFSET + DEVICE_CFG_LEN => {
                lock_state(&self.state)
                    .backend
                    .read_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if o < NOTIFY_OFFSET + NOTIFY_LEN => data.fill(0),
            o if o < MSIX_TABLE_OFFSET + MSIX_TABLE_LEN => {
                self.msix_table_access(o - MSIX_TABLE_OFFSET, Some(data), None)
            }
            o if o < MSIX_PBA_OFFSET + MSIX_PBA_LEN => {
                self.msix_pba_read(o - MSIX_PBA_OFFSET, data)
            }
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != BAR_INDEX {
            return;
        }
        match offset {
            o if o < COMMON_CFG_OFFSET + COMMON_CFG_LEN => self.common_write(o, data),
            o if o < ISR_OFFSET + ISR_LEN => {}
            o if o < DEVICE_CFG_OFFSET + DEVICE_CFG_LEN => {
                lock_state(&self.state)
                    .backend
                    .write_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if o < NOTIFY_OFFSET + NOTIFY_LEN => {
                let q = (o - NOTIFY_OFFSET) / NOTIFY_OFF_MULTIPLIER as u64;
                if let Some(e) = self.queue_evts.get(q as usize) {
                    if let Err(e) = e.write(1) {
                        crate::guest_warn!("virtio: queue {q} kick failed: {e}");
                    }
                }
            }
            o if o < MSIX_TABLE_OFFSET + MSIX_TABLE_LEN => {
                self.msix_table_access(o - MSIX_TABLE_OFFSET, None, Some(data))
            }
            _ => {}
        }
    }
}
