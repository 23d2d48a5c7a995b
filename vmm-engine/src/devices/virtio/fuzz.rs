//! Harnesses for the cargo-fuzz targets in `fuzz/` (and for the unit tests
//! below, which feed them pseudo-random inputs in every `cargo test`).
//!
//! The input is a guest: its first bytes become guest memory (descriptor
//! table, avail ring, buffers), a few more pick the queue size, the avail
//! index and the negotiated features. Every chain the queue yields is
//! served by the real request code. Nothing may panic or touch memory
//! outside the guest's.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::blk::Blk;
use super::{BlockError, DiskImage, GuestMem, ParsedChain};

// A compact layout so that small inputs reach every structure: a queue of
// at most 16 entries, its table, rings, then buffers from 0x300 on.
const MEM_SIZE: usize = 64 << 10;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;

/// An in-memory disk for the blk harness.
struct MemDisk(Mutex<Vec<u8>>);

impl DiskImage for MemDisk {
    fn size(&self) -> u64 {
        self.0.lock().map(|v| v.len() as u64).unwrap_or(0)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        let v = self.0.lock().map_err(|_| BlockError::ReadOnly)?;
        let o = offset as usize;
        let src = v
            .get(o..o.saturating_add(buf.len()))
            .ok_or(BlockError::OutOfRange {
                offset,
                len: buf.len() as u64,
                size: v.len() as u64,
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        let mut v = self.0.lock().map_err(|_| BlockError::ReadOnly)?;
        let size = v.len() as u64;
        let o = offset as usize;
        let dst = v
            .get_mut(o..o.saturating_add(buf.len()))
            .ok_or(BlockError::OutOfRange {
                offset,
                len: buf.len() as u64,
                size,
            })?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.write_at(&vec![0u8; len as usize], offset)
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// Lays the input out as guest memory and a queue; returns them with the
/// remaining control bytes.
fn guest(data: &[u8]) -> Option<(GuestMem, Queue, u64)> {
    let (ctl, image) = data.split_at_checked(12)?;
    let mem = GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
    let n = image.len().min(MEM_SIZE);
    mem.write_slice(image.get(..n)?, GuestAddress(0)).ok()?;
    let size = 1u16 << (ctl[0] % 5); // 1..=16
    let mut q = Queue::new(16).ok()?;
    q.set_size(size);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_event_idx(ctl[1] & 1 != 0);
    q.set_ready(true);
    // The avail index the "driver" published.
    let idx = u16::from_le_bytes([ctl[2], ctl[3]]);
    mem.write_obj(idx, GuestAddress(AVAIL + 2)).ok()?;
    let mut f = [0u8; 8];
    f.copy_from_slice(ctl.get(4..12)?);
    Some((mem, q, u64::from_le_bytes(f)))
}

/// One fuzz case for virtio-blk request parsing and execution.
pub fn fuzz_blk_request(data: &[u8]) {
    let Some((mem, mut q, _)) = guest(data) else {
        return;
    };
    let disk = Arc::new(MemDisk(Mutex::new(vec![0u8; 64 * 512])));
    let mut blk = Blk::new(disk.clone(), "fuzz");
    for _ in 0..512 {
        let Some(chain) = q.pop_descriptor_chain(&mem) else {
            break;
        };
        let (head, len) = blk.process_chain(&mem, chain);
        let _ = q.add_used(&mem, head, len);
    }
    let _ = q.needs_notification(&mem);
    assert_eq!(disk.size(), 64 * 512, "the disk never grows");
}

/// One fuzz case for virtio-net transmit parsing.
pub fn fuzz_net_tx(data: &[u8]) {
    let Some((mem, mut q, acked)) = guest(data) else {
        return;
    };
    let mut out = Vec::new();
    for _ in 0..512 {
        let Some(chain) = q.pop_descriptor_chain(&mem) else {
            break;
        };
        let p = ParsedChain::parse(chain, super::net::MAX_FRAME as u64);
        if super::net::tx_frame(&mem, &p, acked, &mut out).is_ok() {
            assert!(out.len() > crate::net::tap::VNET_HDR_LEN);
            assert!(out.len() <= super::net::MAX_FRAME);
            assert!(super::net::tx_header_ok(&out, acked));
        }
        let _ = q.add_used(&mem, p.head, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs with real structure: descriptors pointing into memory,
    /// chains, plausible headers, mixed with noise.
    fn inputs(seed: u64, count: usize) -> Vec<Vec<u8>> {
        let mut s = seed;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..count)
            .map(|_| {
                let mut v = vec![0u8; 12 + 0x3000];
                for b in v.iter_mut() {
                    *b = rnd() as u8;
                }
                v[0] = (rnd() % 5) as u8;
                let avail_idx = (rnd() % 20) as u16;
                v[2..4].copy_from_slice(&avail_idx.to_le_bytes());
                // Descriptors: mostly in-memory addresses, short chains.
                for i in 0..16usize {
                    let at = 12 + i * 16;
                    let addr = if rnd() % 8 == 0 {
                        rnd()
                    } else {
                        0x300 + rnd() % 0xc000
                    };
                    let len = match rnd() % 6 {
                        0 => 16,
                        1 => 1,
                        2 => 512,
                        3 => rnd() as u32,
                        _ => (rnd() % 4096) as u32,
                    };
                    v[at..at + 8].copy_from_slice(&addr.to_le_bytes());
                    v[at + 8..at + 12].copy_from_slice(&len.to_le_bytes());
                    let flags = (rnd() % 8) as u16;
                    v[at + 12..at + 14].copy_from_slice(&flags.to_le_bytes());
                    let next = (rnd() % 18) as u16;
                    v[at + 14..at + 16].copy_from_slice(&next.to_le_bytes());
                }
                // Avail ring entries.
                for i in 0..16usize {
                    let at = 12 + 0x100 + 4 + 2 * i;
                    let head = (rnd() % 18) as u16;
                    v[at..at + 2].copy_from_slice(&head.to_le_bytes());
                }
                v
            })
            .collect()
    }

    #[test]
    fn blk_harness_survives_random_guests() {
        for input in inputs(0x5eed_0001, 300) {
            fuzz_blk_request(&input);
        }
        // Degenerate inputs.
        fuzz_blk_request(&[]);
        fuzz_blk_request(&[0xff; 12]);
        fuzz_blk_request(&[0xff; 70000]);
    }

    #[test]
    fn a_flood_of_malformed_blk_chains_logs_a_bounded_number_of_lines() {
        // Every chain is one empty readable descriptor: no status byte, so
        // each one is dropped with a warning. Before the rate limit, each
        // of the 1600 chains logged a line.
        let mut input = vec![0u8; 12 + 0x400];
        input[0] = 4; // 16 entries
        input[2..4].copy_from_slice(&16u16.to_le_bytes());
        let mut dropped = 0;
        let lines = crate::devices::ratelimit::tests::warnings_during(|| {
            for _ in 0..100 {
                let Some((mem, mut q, _)) = guest(&input) else {
                    panic!("the input lays out a guest");
                };
                let disk = Arc::new(MemDisk(Mutex::new(vec![0u8; 64 * 512])));
                let mut blk = Blk::new(disk, "flood");
                while let Some(chain) = q.pop_descriptor_chain(&mem) {
                    let (_, len) = blk.process_chain(&mem, chain);
                    assert_eq!(len, 0, "a chain without a status byte is dropped");
                    dropped += 1;
                }
            }
        });
        assert_eq!(dropped, 1600);
        let most = crate::devices::ratelimit::FIRST as u64 + 1;
        assert!(lines <= most, "{lines} warnings for {dropped} bad chains");
    }

    #[test]
    fn net_harness_survives_random_guests() {
        for input in inputs(0x5eed_0002, 300) {
            fuzz_net_tx(&input);
        }
        fuzz_net_tx(&[]);
        fuzz_net_tx(&[0xff; 70000]);
    }
}
