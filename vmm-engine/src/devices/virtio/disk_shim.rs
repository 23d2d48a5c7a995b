//! TEMPORARY stand-in for `crate::block` (written in parallel): the same
//! `DiskImage` trait and `open` signature, with a plain raw-file image.
//! At merge, delete this file and re-export `crate::block::{open,
//! BlockError, DiskImage}` from `virtio/mod.rs` instead.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use crate::spec::DiskFormat;

/// A disk image as a device sees it: a byte-addressed array of `size()` bytes.
pub trait DiskImage: Send + Sync {
    fn size(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError>;
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError>;
    fn flush(&self) -> Result<(), BlockError>;
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError>;
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError>;
    fn read_only(&self) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("the disk image is read-only")]
    ReadOnly,
    #[error("I/O of {len} bytes at offset {offset} is outside the disk ({size} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("format {0:?} is not supported by the shim")]
    Unsupported(DiskFormat),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

fn check_range(offset: u64, len: u64, size: u64) -> Result<(), BlockError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

struct RawFile {
    file: File,
    size: u64,
    read_only: bool,
}

impl DiskImage for RawFile {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.read_exact_at(buf, offset)?;
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.write_all_at(buf, offset)?;
        Ok(())
    }
    fn flush(&self) -> Result<(), BlockError> {
        self.file.sync_all()?;
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, len, self.size)?;
        // SAFETY: fallocate on our own fd with checked, in-range values.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r != 0 {
            // No hole punching here: write zeroes.
            let zeroes = vec![0u8; 64 * 1024];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(zeroes.len() as u64) as usize;
                self.file.write_all_at(&zeroes[..n], offset + done)?;
                done += n as u64;
            }
        }
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// Opens `path` as a raw disk image (the shim knows no other format).
pub fn open(
    path: &Path,
    format: DiskFormat,
    read_only: bool,
) -> Result<Arc<dyn DiskImage>, BlockError> {
    if format != DiskFormat::Raw {
        return Err(BlockError::Unsupported(format));
    }
    let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
    let size = file.metadata()?.len();
    Ok(Arc::new(RawFile {
        file,
        size,
        read_only,
    }))
}
