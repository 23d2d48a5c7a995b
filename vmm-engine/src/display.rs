//! The guest's screen as RGBA pixels, shared between the display device that
//! draws it and the UIs that show it.
//!
//! A [`Display`] is a cheap-to-clone handle. The device renders a whole frame
//! into its own buffer and hands it over with [`Display::present`], which
//! publishes it only when it differs from the frame already shown; only then
//! does the generation counter move. A UI keeps the generation of the last
//! frame it uploaded and calls [`Display::snapshot`] when
//! [`Display::generation`] says there is a newer one, so an idle guest costs
//! its viewers nothing. Snapshots share the pixel buffer (`Arc`), they never
//! copy it.
//!
//! [`Framebuffer::save_png`] writes a frame as a PNG file (screenshots for
//! the control socket and for tests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// One frame: `width * height` RGBA8 pixels, row-major, no padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    pub width: u32,
    pub height: u32,
    pub pixels: Arc<Vec<u8>>,
    /// Bumped each time a different frame is published; 0 before the first.
    pub generation: u64,
}

impl Framebuffer {
    /// The RGBA value at `(x, y)`, or None outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 4;
        let p = self.pixels.get(i..i + 4)?;
        Some([p[0], p[1], p[2], p[3]])
    }
}

/// Why a frame could not be written as a PNG.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    #[error("the guest has not drawn a frame yet")]
    NoFrame,
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
}

impl Framebuffer {
    /// Encodes the frame as an 8-bit RGBA PNG into `w`.
    pub fn write_png<W: std::io::Write>(&self, w: W) -> Result<(), ScreenshotError> {
        let expect = self.width as usize * self.height as usize * 4;
        if self.width == 0 || self.height == 0 || self.pixels.len() != expect {
            return Err(ScreenshotError::NoFrame);
        }
        let mut enc = png::Encoder::new(w, self.width, self.height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(())
    }

    /// Writes the frame to `path` as a PNG. The file is written next to
    /// `path` under a temporary name and renamed into place, so a reader
    /// never sees half a picture and a failure leaves no partial file.
    pub fn save_png(&self, path: &std::path::Path) -> Result<(), ScreenshotError> {
        use std::io::Write;
        let io = |source| ScreenshotError::Io {
            path: path.display().to_string(),
            source,
        };
        let name = path.file_name().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let f = std::fs::File::create(&tmp).map_err(io)?;
            let mut bw = std::io::BufWriter::new(f);
            self.write_png(&mut bw)?;
            bw.flush().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

impl Default for Framebuffer {
    fn default() -> Self {
        Framebuffer {
            width: 0,
            height: 0,
            pixels: Arc::new(Vec::new()),
            generation: 0,
        }
    }
}

type Notify = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Inner {
    frame: RwLock<Framebuffer>,
    generation: AtomicU64,
    notify: Mutex<Option<Notify>>,
}

/// Shared handle to the current frame. Cloning shares it.
#[derive(Clone, Default)]
pub struct Display {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Display {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Display")
            .field("generation", &self.generation())
            .finish()
    }
}

impl Display {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current frame (shares its pixels).
    pub fn snapshot(&self) -> Framebuffer {
        self.inner
            .frame
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation of the current frame; cheap (an atomic load).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Registers a function called after each new frame is published (a UI
    /// passes its `request_repaint`). Replaces any previous one.
    pub fn set_notify(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.inner.notify.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    }

    /// Offers a rendered frame. `buf` holds `width * height * 4` bytes. If it
    /// equals the current frame nothing happens and false is returned. Else
    /// the frame is published with a new generation and `buf` receives the
    /// previous frame's buffer for reuse (or an empty Vec when a snapshot
    /// still holds it). A buffer of the wrong length is refused (false).
    pub fn present(&self, width: u32, height: u32, buf: &mut Vec<u8>) -> bool {
        let expect = width as usize * height as usize * 4;
        if buf.len() != expect {
            return false;
        }
        {
            // Compare under the read lock so viewers are not held up.
            let cur = self.inner.frame.read().unwrap_or_else(|e| e.into_inner());
            if cur.width == width && cur.height == height && cur.pixels.as_slice() == buf.as_slice()
            {
                return false;
            }
        }
        {
            let mut cur = self.inner.frame.write().unwrap_or_else(|e| e.into_inner());
            let generation = cur.generation + 1;
            let new = Arc::new(std::mem::take(buf));
            let old = std::mem::replace(
                &mut *cur,
                Framebuffer {
                    width,
                    height,
                    pixels: new,
                    generation,
                },
            );
            self.inner.generation.store(generation, Ordering::Release);
            *buf = Arc::try_unwrap(old.pixels).unwrap_or_default();
        }
        let notify = self
            .inner
            .notify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(f) = notify {
            f();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn present_bumps_generation_only_on_change() {
        let d = Display::new();
        assert_eq!(d.generation(), 0);
        assert_eq!(d.snapshot().width, 0);
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        d.set_notify(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });

        let mut buf = vec![1u8; 2 * 2 * 4];
        assert!(d.present(2, 2, &mut buf));
        assert_eq!(d.generation(), 1);
        // The old (empty) buffer came back.
        assert!(buf.is_empty());
        let snap = d.snapshot();
        assert_eq!((snap.width, snap.height, snap.generation), (2, 2, 1));
        assert_eq!(snap.pixel(1, 1), Some([1, 1, 1, 1]));
        assert_eq!(snap.pixel(2, 0), None);

        // Same content: no new generation.
        let mut same = vec![1u8; 16];
        assert!(!d.present(2, 2, &mut same));
        assert_eq!(d.generation(), 1);
        // Same bytes, other shape: a new frame.
        assert!(d.present(4, 1, &mut same));
        assert_eq!(d.generation(), 2);
        // The snapshot held the 2x2 buffer, so it could not be recycled.
        assert!(same.is_empty());
        drop(snap);
        let mut other = vec![9u8; 16];
        assert!(d.present(4, 1, &mut other));
        // Nobody held the 4x1 buffer: it is handed back for reuse.
        assert_eq!(other, vec![1u8; 16]);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Wrong length is refused.
        let mut bad = vec![0u8; 3];
        assert!(!d.present(4, 1, &mut bad));
        assert_eq!(d.generation(), 3);
    }

    #[test]
    fn save_png_round_trips_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Framebuffer::default();
        assert!(matches!(
            empty.save_png(&dir.path().join("x.png")),
            Err(ScreenshotError::NoFrame)
        ));
        assert!(!dir.path().join("x.png").exists());

        let mut px = Vec::new();
        for i in 0..6u8 {
            px.extend_from_slice(&[i, 10 * i, 255 - i, 255]);
        }
        let fb = Framebuffer {
            width: 3,
            height: 2,
            pixels: Arc::new(px.clone()),
            generation: 1,
        };
        let path = dir.path().join("shot.png");
        fb.save_png(&path).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(info.color_type, png::ColorType::Rgba);
        assert_eq!(&buf[..info.buffer_size()], &px[..]);
        // Only the picture is left behind, no temporary file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A directory that does not exist: an I/O error naming the path.
        let bad = dir.path().join("missing/shot.png");
        let e = fb.save_png(&bad).unwrap_err();
        assert!(matches!(e, ScreenshotError::Io { .. }), "{e}");
        assert!(e.to_string().contains("missing/shot.png"), "{e}");
        // A directory as the target.
        assert!(fb.save_png(dir.path()).is_err());
    }
}
