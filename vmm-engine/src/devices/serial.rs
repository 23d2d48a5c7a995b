//! COM1: a 16550A UART from vm-superio, on an [`IrqLine`] (IRQ 4).
//!
//! Output bytes go to a [`SerialSink`] (the engine keeps them in a
//! [`SerialRing`] and sends them as batched `VmEvent::Serial`). Input from the host is queued here without bound on
//! the host side and fed into the UART's 64-byte FIFO as the guest drains it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use vm_superio::{Serial, Trigger};

use super::{BusDevice, IrqLine};

pub const COM1_BASE: u64 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
/// Host-side input beyond this many bytes is dropped (a paste bomb must not
/// grow memory without bound).
const MAX_PENDING_INPUT: usize = 1 << 20;

/// Where the UART's output goes.
pub trait SerialSink: Send {
    fn write_bytes(&mut self, bytes: &[u8]);
}

impl<F: FnMut(&[u8]) + Send> SerialSink for F {
    fn write_bytes(&mut self, bytes: &[u8]) {
        self(bytes)
    }
}

struct SinkWriter(Box<dyn SerialSink>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_bytes(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// vm-superio's interrupt trigger over our IrqLine (an edge on the PIC).
pub struct IrqTrigger(pub Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.pulse();
        Ok(())
    }
}

/// How much of the guest's serial output a VM keeps (the scrollback a
/// client gets when it attaches).
pub const SERIAL_SCROLLBACK: usize = 256 * 1024;

/// The last [`SERIAL_SCROLLBACK`] bytes of a UART's output, addressed by
/// absolute offsets (bytes written since the VM was created), so readers
/// keep a cursor and learn how much they missed when they lag.
#[derive(Debug)]
pub struct SerialRing {
    buf: VecDeque<u8>,
    cap: usize,
    /// Offset one past the last byte written.
    end: u64,
}

/// What [`SerialRing::since`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialChunk {
    /// Offset of the first byte of `bytes`.
    pub start: u64,
    /// Offset one past the last byte: the cursor for the next read.
    pub end: u64,
    /// Bytes after the requested offset that fell out of the ring.
    pub lost: u64,
    pub bytes: Vec<u8>,
}

impl SerialRing {
    pub fn new(cap: usize) -> Self {
        SerialRing {
            buf: VecDeque::new(),
            cap: cap.max(1),
            end: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.end += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(self.cap)..];
        let over = (self.buf.len() + keep.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(keep);
    }

    /// Offset one past the last byte written.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Offset of the oldest byte still kept.
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// The bytes from `offset` on (at most `max`), or from the oldest kept
    /// byte when `offset` has fallen out. An offset past the end gives
    /// nothing.
    pub fn since(&self, offset: u64, max: usize) -> SerialChunk {
        let start = offset.clamp(self.start(), self.end);
        let lost = start - offset.min(start);
        let skip = (start - self.start()) as usize;
        let bytes: Vec<u8> = self.buf.iter().skip(skip).take(max).copied().collect();
        SerialChunk {
            start,
            end: start + bytes.len() as u64,
            lost,
            bytes,
        }
    }
}

pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, SinkWriter>,
    pending: VecDeque<u8>,
}

impl SerialDevice {
    pub fn new(irq: Arc<dyn IrqLine>, sink: Box<dyn SerialSink>) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), SinkWriter(sink)),
            pending: VecDeque::new(),
        }
    }

    /// Queues host input for the guest.
    pub fn enqueue_input(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_INPUT.saturating_sub(self.pending.len());
        self.pending.extend(bytes.iter().take(room));
        self.fill_fifo();
    }

    fn fill_fifo(&mut self) {
        while !self.pending.is_empty() && self.uart.fifo_capacity() > 0 {
            let n = self.uart.fifo_capacity().min(self.pending.len());
            let chunk: Vec<u8> = self.pending.drain(..n).collect();
            match self.uart.enqueue_raw_bytes(&chunk) {
                Ok(done) if done == chunk.len() => {}
                Ok(done) => {
                    // Put back what did not fit, in order.
                    for b in chunk[done..].iter().rev() {
                        self.pending.push_front(*b);
                    }
                    break;
                }
                Err(e) => {
                    log::debug!("serial: input not queued: {e:?}");
                    for b in chunk.iter().rev() {
                        self.pending.push_front(*b);
                    }
                    break;
                }
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset > 7 {
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
        if offset == 0 {
            self.fill_fifo();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset > 7 {
            return;
        }
        if let Err(e) = self.uart.write(offset as u8, data[0]) {
            log::debug!("serial: write failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::RecordingIrq;
    use std::sync::Mutex;

    fn dev() -> (SerialDevice, Arc<RecordingIrq>, Arc<Mutex<Vec<u8>>>) {
        let irq = RecordingIrq::new();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        let sink = move |b: &[u8]| o.lock().unwrap().extend_from_slice(b);
        (SerialDevice::new(irq.clone(), Box::new(sink)), irq, out)
    }

    #[test]
    fn output_reaches_sink() {
        let (mut s, _, out) = dev();
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_beyond_fifo_is_fed_as_guest_reads() {
        let (mut s, irq, _) = dev();
        // Enable the received-data interrupt (IER bit 0).
        s.write(1, &[1]);
        let input: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        s.enqueue_input(&input);
        assert!(irq.raised_count() >= 1);
        let mut got = Vec::new();
        let mut lsr = [0u8];
        loop {
            s.read(5, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            let mut b = [0u8];
            s.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, input);
    }

    #[test]
    fn ring_keeps_the_last_bytes_and_counts_what_a_reader_lost() {
        let mut r = SerialRing::new(8);
        r.push(b"hello");
        assert_eq!(r.since(0, usize::MAX).bytes, b"hello");
        assert_eq!(r.since(2, 2).bytes, b"ll");
        r.push(b" world");
        assert_eq!((r.start(), r.end()), (3, 11));
        let c = r.since(0, usize::MAX);
        assert_eq!((c.start, c.end, c.lost), (3, 11, 3));
        assert_eq!(c.bytes, b"lo world");
        assert!(r.since(11, 100).bytes.is_empty());
        assert!(r.since(500, 100).bytes.is_empty());
        // A write larger than the ring keeps its tail.
        r.push(&[b'z'; 100]);
        assert_eq!(r.since(0, usize::MAX).bytes, vec![b'z'; 8]);
        assert_eq!(r.end(), 111);
    }

    #[test]
    fn a_flood_stays_within_the_ring() {
        let mut r = SerialRing::new(SERIAL_SCROLLBACK);
        for _ in 0..(4 * SERIAL_SCROLLBACK) {
            r.push(b"x");
        }
        assert_eq!(r.buf.len(), SERIAL_SCROLLBACK);
        assert_eq!(r.end(), 4 * SERIAL_SCROLLBACK as u64);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut s, _, out) = dev();
        let mut d = [0u8; 4];
        s.read(0, &mut d);
        assert_eq!(d, [0xff; 4]);
        s.write(9, &[1]);
        s.write(0, &[1, 2]);
        assert!(out.lock().unwrap().is_empty());
    }
}
