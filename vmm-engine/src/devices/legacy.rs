//! Small legacy ports: SeaBIOS's debug console (0x402) and the POST
//! diagnostic port (0x80).

use std::io::Write;

use super::BusDevice;

pub const DEBUGCON_PORT: u64 = 0x402;
pub const POST_PORT: u64 = 0x80;

/// QEMU's isa-debugcon: bytes written go to a log; a read returns 0xE9, the
/// value SeaBIOS checks to know the port is there.
pub struct DebugConsole {
    out: Option<Box<dyn Write + Send>>,
}

impl DebugConsole {
    pub fn new(out: Option<Box<dyn Write + Send>>) -> Self {
        DebugConsole { out }
    }
}

impl BusDevice for DebugConsole {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = 0xe9;
        }
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(out) = self.out.as_mut() {
            if let Some(b) = data.first() {
                if out.write_all(&[*b]).is_err() {
                    // A full disk must not stop the guest; drop the log.
                    self.out = None;
                } else if *b == b'\n' {
                    let _ = out.flush();
                }
            }
        }
    }
}

/// Port 0x80: POST codes. Writes are counted and dropped.
#[derive(Default)]
pub struct PostPort {
    pub writes: u64,
    pub last: u8,
}

impl BusDevice for PostPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.last);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        self.writes += 1;
        if let Some(b) = data.first() {
            self.last = *b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debugcon_reads_e9_and_logs() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut d = DebugConsole::new(Some(Box::new(Shared(buf.clone()))));
        let mut r = [0u8; 1];
        d.read(0, &mut r);
        assert_eq!(r[0], 0xe9);
        for b in b"SeaBIOS\n" {
            d.write(0, &[*b]);
        }
        assert_eq!(&*buf.lock().unwrap(), b"SeaBIOS\n");
        let mut none = DebugConsole::new(None);
        none.write(0, b"x");
    }

    #[test]
    fn post_port_counts() {
        let mut p = PostPort::default();
        p.write(0, &[0x12]);
        p.write(0, &[0x34]);
        let mut r = [0u8];
        p.read(0, &mut r);
        assert_eq!((p.writes, r[0]), (2, 0x34));
    }
}
