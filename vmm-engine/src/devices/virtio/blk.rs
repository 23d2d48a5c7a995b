//! virtio-blk (virtio 1.x, 5.2) on a [`DiskImage`]: one request queue;
//! IN, OUT, FLUSH (an fsync before the used-ring entry), GET_ID, DISCARD
//! and WRITE_ZEROES. Anything else gets UNSUPP. A write to a read-only disk
//! gets IOERR. A malformed chain (too short, a readable buffer after a
//! writable one, a loop, a buffer outside guest RAM, too many bytes, a
//! sector past the end) gets IOERR when its status byte can be written, and
//! is otherwise returned with length 0 and logged.
//!
//! A driver that does not negotiate FLUSH (SeaBIOS) gets write-through:
//! each write is flushed before it completes.
//!
//! Missing: multiqueue, config WCE, secure erase, zoned commands; I/O is
//! synchronous on the event-loop thread.

use std::sync::Arc;

use vm_memory::{Address, Bytes};

use super::{DiskImage, ParsedChain, QueueCtx, VirtioBackend, VirtioError, Wake};

pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const SECTOR_SIZE: u64 = 512;
pub const QUEUE_SIZE: u16 = 256;
/// Segments per request the driver may use (queue size minus header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest data transfer one request may carry (Linux lets a user raise
/// max_sectors_kb far above its default; QEMU has no limit either).
pub const MAX_REQUEST_BYTES: u64 = 256 << 20;
/// Data moves between guest memory and the disk in pieces of this size.
const CHUNK: u64 = 1 << 20;
/// Discard / write-zeroes: ranges per request, sectors per range.
pub const MAX_DISCARD_SEG: u32 = 16;
pub const MAX_DISCARD_SECTORS: u32 = (1 << 22) - 1;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;
/// Size of the device config structure.
pub const CONFIG_LEN: usize = 60;

const HEADER_LEN: u64 = 16;
const SEGMENT_LEN: u64 = 16;
const WZ_FLAG_UNMAP: u32 = 1;

/// The virtio-blk backend.
pub struct Blk {
    disk: Arc<dyn DiskImage>,
    id: [u8; ID_BYTES],
    read_only: bool,
    /// FLUSH not negotiated: the driver expects write-through, so every
    /// write is made durable before it completes (virtio 1.x 5.2.6.2).
    write_through: bool,
    buf: Vec<u8>,
}

impl Blk {
    /// `serial` is answered to GET_ID (truncated to 20 bytes, NUL-padded).
    /// The disk's own read-only flag makes the device read-only.
    pub fn new(disk: Arc<dyn DiskImage>, serial: &str) -> Self {
        let mut id = [0u8; ID_BYTES];
        for (d, s) in id.iter_mut().zip(serial.bytes()) {
            *d = s;
        }
        let read_only = disk.read_only();
        Blk {
            disk,
            id,
            read_only,
            write_through: true,
            buf: Vec::new(),
        }
    }

    fn capacity_sectors(&self) -> u64 {
        self.disk.size() / SECTOR_SIZE
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes());
        c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        c[44..48].copy_from_slice(&1u32.to_le_bytes());
        c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        c
    }

    /// Checks `[sector, sector + len)` against the disk; returns the byte offset.
    fn disk_range(&self, sector: u64, len: u64) -> Option<u64> {
        let off = sector.checked_mul(SECTOR_SIZE)?;
        let end = off.checked_add(len)?;
        (end <= self.capacity_sectors() * SECTOR_SIZE).then_some(off)
    }

    /// Serves one parsed request; returns (status, data bytes written to
    /// the guest, not counting the status byte).
    fn execute(&mut self, mem: &super::GuestMem, p: &ParsedChain) -> (u8, u32) {
        let mut hdr = [0u8; HEADER_LEN as usize];
        if p.read_at(mem, 0, &mut hdr) != hdr.len() {
            crate::guest_warn!("virtio-blk: request header too short");
            return (S_IOERR, 0);
        }
        let ty = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let mut sb = [0u8; 8];
        sb.copy_from_slice(&hdr[8..16]);
        let sector = u64::from_le_bytes(sb);
        // The last writable byte is the status; data is what precedes it.
        let in_len = p.write_len.saturating_sub(1);
        let out_len = p.read_len.saturating_sub(HEADER_LEN);
        match ty {
            T_IN => {
                if out_len != 0 || !in_len.is_multiple_of(SECTOR_SIZE) || in_len > MAX_REQUEST_BYTES
                {
                    return (S_IOERR, 0);
                }
                let Some(off) = self.disk_range(sector, in_len) else {
                    return (S_IOERR, 0);
                };
                let mut pos = 0u64;
                while pos < in_len {
                    let n = (in_len - pos).min(CHUNK) as usize;
                    self.buf.resize(n, 0);
                    if let Err(e) = self.disk.read_at(&mut self.buf, off + pos) {
                        crate::guest_warn!("virtio-blk: read at {}: {e}", off + pos);
                        return (S_IOERR, pos as u32);
                    }
                    if p.write_at(mem, pos, &self.buf) != n {
                        return (S_IOERR, pos as u32);
                    }
                    pos += n as u64;
                }
                (S_OK, in_len as u32)
            }
            T_OUT => {
                if self.read_only {
                    return (S_IOERR, 0);
                }
                if !out_len.is_multiple_of(SECTOR_SIZE) || out_len > MAX_REQUEST_BYTES {
                    return (S_IOERR, 0);
                }
                let Some(off) = self.disk_range(sector, out_len) else {
                    return (S_IOERR, 0);
                };
                let mut pos = 0u64;
                while pos < out_len {
                    let n = (out_len - pos).min(CHUNK) as usize;
                    self.buf.resize(n, 0);
                    if p.read_at(mem, HEADER_LEN + pos, &mut self.buf) != n {
                        return (S_IOERR, 0);
                    }
                    if let Err(e) = self.disk.write_at(&self.buf, off + pos) {
                        crate::guest_warn!("virtio-blk: write at {}: {e}", off + pos);
                        return (S_IOERR, 0);
                    }
                    pos += n as u64;
                }
                self.sync_if_write_through()
            }
            T_FLUSH => match self.disk.flush() {
                Ok(()) => (S_OK, 0),
                Err(e) => {
                    crate::guest_warn!("virtio-blk: flush: {e}");
                    (S_IOERR, 0)
                }
            },
            T_GET_ID => {
                if in_len == 0 {
                    return (S_IOERR, 0);
                }
                let n = (in_len as usize).min(ID_BYTES);
                let w = p.write_at(mem, 0, self.id.get(..n).unwrap_or(&[]));
                (S_OK, w as u32)
            }
            T_DISCARD | T_WRITE_ZEROES => self.discard_or_zero(mem, p, ty, out_len),
            _ => (S_UNSUPP, 0),
        }
    }

    fn discard_or_zero(
        &mut self,
        mem: &super::GuestMem,
        p: &ParsedChain,
        ty: u32,
        out_len: u64,
    ) -> (u8, u32) {
        if self.read_only {
            return (S_IOERR, 0);
        }
        if out_len == 0 || !out_len.is_multiple_of(SEGMENT_LEN) {
            return (S_IOERR, 0);
        }
        let count = out_len / SEGMENT_LEN;
        if count > MAX_DISCARD_SEG as u64 {
            return (S_IOERR, 0);
        }
        let mut segs = Vec::with_capacity(count as usize);
        for i in 0..count {
            let mut s = [0u8; SEGMENT_LEN as usize];
            if p.read_at(mem, HEADER_LEN + i * SEGMENT_LEN, &mut s) != s.len() {
                return (S_IOERR, 0);
            }
            let mut sb = [0u8; 8];
            sb.copy_from_slice(&s[0..8]);
            let sector = u64::from_le_bytes(sb);
            let num = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
            let flags = u32::from_le_bytes([s[12], s[13], s[14], s[15]]);
            let allowed = if ty == T_WRITE_ZEROES {
                WZ_FLAG_UNMAP
            } else {
                0
            };
            if flags & !allowed != 0 {
                return (S_UNSUPP, 0);
            }
            if num > MAX_DISCARD_SECTORS {
                return (S_IOERR, 0);
            }
            let len = num as u64 * SECTOR_SIZE;
            let Some(off) = self.disk_range(sector, len) else {
                return (S_IOERR, 0);
            };
            segs.push((off, len));
        }
        for (off, len) in segs {
            let r = if ty == T_DISCARD {
                self.disk.discard(off, len)
            } else {
                self.disk.write_zeroes(off, len)
            };
            if let Err(e) = r {
                crate::guest_warn!("virtio-blk: discard/write-zeroes at {off}+{len}: {e}");
                return (S_IOERR, 0);
            }
        }
        self.sync_if_write_through()
    }

    /// In write-through mode, flushes before a write completes.
    fn sync_if_write_through(&self) -> (u8, u32) {
        if self.write_through {
            if let Err(e) = self.disk.flush() {
                crate::guest_warn!("virtio-blk: write-through flush: {e}");
                return (S_IOERR, 0);
            }
        }
        (S_OK, 0)
    }

    /// Handles one chain; returns the used length to report.
    fn handle(&mut self, mem: &super::GuestMem, p: &ParsedChain) -> u32 {
        // Where the status byte goes: the last byte of the last writable buffer.
        let status_addr = p
            .writable
            .last()
            .filter(|(_, l)| *l > 0)
            .and_then(|(a, l)| a.checked_add(*l as u64 - 1));
        let Some(status_addr) = status_addr else {
            crate::guest_warn!(
                "virtio-blk: chain {} has no writable status byte ({:?}); dropped",
                p.head,
                p.error
            );
            return 0;
        };
        let (status, written) = match p.error {
            Some(e) => {
                crate::guest_warn!("virtio-blk: malformed chain {}: {e:?}", p.head);
                (S_IOERR, 0)
            }
            None if p.read_len < HEADER_LEN => {
                crate::guest_warn!("virtio-blk: chain {} too short", p.head);
                (S_IOERR, 0)
            }
            None => self.execute(mem, p),
        };
        if mem.write_obj(status, status_addr).is_err() {
            return 0;
        }
        written.saturating_add(1)
    }

    /// Parses and serves one chain; public for fuzzing.
    pub fn process_chain(
        &mut self,
        mem: &super::GuestMem,
        chain: virtio_queue::DescriptorChain<&super::GuestMem>,
    ) -> (u16, u32) {
        let p = ParsedChain::parse(chain, MAX_REQUEST_BYTES + 4096);
        let len = self.handle(mem, &p);
        (p.head, len)
    }
}

impl VirtioBackend for Blk {
    fn device_type(&self) -> u16 {
        super::TYPE_BLOCK
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        let mut f = F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if self.read_only {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        f
    }
    fn pci_class(&self) -> u32 {
        0x018000
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| c.get(o).copied())
                .unwrap_or(0);
        }
    }
    fn activate(&mut self, features: u64) -> Result<(), VirtioError> {
        self.write_through = features & F_FLUSH == 0;
        Ok(())
    }
    fn reset(&mut self) {
        self.buf = Vec::new();
        self.write_through = true;
    }
    fn process(&mut self, wake: Wake, ctx: &mut QueueCtx<'_>) {
        if wake != Wake::Queue(0) {
            return;
        }
        ctx.serve_queue(0, |mem, chain| self.process_chain(mem, chain));
    }
}

impl std::fmt::Debug for Blk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blk")
            .field("read_only", &self.read_only)
            .finish()
    }
}
