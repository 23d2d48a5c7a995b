//! Raw images: the file is the disk, byte for byte.

use super::{check_range, BlockError, DiskImage};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// A raw image file (or block device). Holds the file's flock while open.
pub struct RawImage {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl RawImage {
    /// Wraps an already opened and locked file.
    pub(crate) fn from_locked_file(
        mut file: File,
        path: &Path,
        read_only: bool,
    ) -> Result<Self, BlockError> {
        // Seeking to the end works for block devices too, where the metadata
        // length is zero.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| BlockError::io(path, e))?;
        Ok(RawImage {
            file,
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    fn err(&self, e: io::Error) -> BlockError {
        BlockError::io(&self.path, e)
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        loop {
            // SAFETY: fallocate on our own descriptor; offset and len were
            // range-checked against the image size, which fits in i64.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    mode,
                    offset as libc::off_t,
                    len as libc::off_t,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    fn write_zero_bytes(&self, mut offset: u64, len: u64) -> Result<(), BlockError> {
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        let end = offset + len;
        while offset < end {
            let n = ((end - offset) as usize).min(zeroes.len());
            self.file
                .write_all_at(&zeroes[..n], offset)
                .map_err(|e| self.err(e))?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Discard and write-zeroes: makes `len` bytes at `offset` read as
    /// zero with fallocate `mode` (hole punching or zero range), keeping the
    /// file's size. Discard is advisory; a file system without `mode` simply
    /// keeps the data, but we promise zeroes, so it gets them written.
    fn zero_range(&self, mode: libc::c_int, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        match self.fallocate(mode | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
            Ok(()) => Ok(()),
            Err(e) if Self::unsupported(&e) => self.write_zero_bytes(offset, len),
            Err(e) => Err(self.err(e)),
        }
    }

    fn unsupported(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ENODEV)
        )
    }
}

impl DiskImage for RawImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.err(e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.write_all_at(buf, offset).map_err(|e| self.err(e))
    }

    fn flush(&self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| self.err(e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.zero_range(libc::FALLOC_FL_PUNCH_HOLE, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.zero_range(libc::FALLOC_FL_ZERO_RANGE, offset, len)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
