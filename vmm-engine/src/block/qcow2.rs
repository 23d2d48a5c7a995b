//! qcow2 images through the `imago` crate (its synchronous build).
//!
//! Supported: qcow2 v2 and v3 images without a backing file or external
//! data file (those are refused at open: imago is given a gate that denies
//! opening any other file). Reads of unallocated clusters return zeroes.
//! New images are v3, 64 KiB clusters, 16-bit refcounts (as `qemu-img
//! create -f qcow2` makes them).

use super::{check_range, BlockError, DiskImage};
use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatCreateBuilder, FormatDriverBuilder,
    StorageOpenOptions,
};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// An open qcow2 image. Holds the file's flock while open.
pub struct Qcow2Image {
    /// Reads, writes and write-zeroes share the lock; discard (which imago
    /// wants exclusive access for) takes it for writing.
    access: RwLock<FormatAccess<ImagoFile>>,
    /// Keeps the flock (shared with imago's duplicate of the descriptor).
    _lock: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

fn is_format_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::Unsupported
            | io::ErrorKind::Other
    )
}

impl Qcow2Image {
    pub(crate) fn from_locked_file(
        file: File,
        path: &Path,
        read_only: bool,
    ) -> Result<Self, BlockError> {
        let dup = file.try_clone().map_err(|e| BlockError::io(path, e))?;
        let opts = StorageOpenOptions::new().filename(path).write(!read_only);
        let storage = ImagoFile::from_open_file(dup, opts).map_err(|e| BlockError::io(path, e))?;
        let driver = Qcow2::<ImagoFile>::builder(storage)
            .write(!read_only)
            .open(DenyImplicitOpenGate::default())
            .map_err(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    // The image itself is open already: only the gate that
                    // denies opening other files says this.
                    BlockError::UnsupportedQcow2 {
                        path: path.to_path_buf(),
                        reason: format!("a backing file or external data file: {e}"),
                    }
                } else if is_format_error(&e) {
                    BlockError::InvalidQcow2 {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    }
                } else {
                    BlockError::io(path, e)
                }
            })?;
        let access = FormatAccess::new(driver);
        let size = access.size();
        Ok(Qcow2Image {
            access: RwLock::new(access),
            _lock: file,
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    fn err(&self, e: io::Error) -> BlockError {
        BlockError::io(&self.path, e)
    }

    fn writable(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_range(offset, len, self.size)
    }
}

/// Formats the empty file `file` (at `path`) as a qcow2 v3 image of `size`
/// bytes.
pub(crate) fn format_new(file: &File, path: &Path, size: u64) -> Result<(), BlockError> {
    let dup = file.try_clone().map_err(|e| BlockError::io(path, e))?;
    let opts = StorageOpenOptions::new().filename(path).write(true);
    let storage = ImagoFile::from_open_file(dup, opts).map_err(|e| BlockError::io(path, e))?;
    Qcow2::<ImagoFile>::create_builder(storage)
        .size(size)
        .create()
        .map_err(|e| BlockError::io(path, e))
}

impl DiskImage for Qcow2Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError> {
        check_range(offset, buf.len() as u64, self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        let a = self.access.read().unwrap_or_else(|p| p.into_inner());
        a.read(buf, offset).map_err(|e| self.err(e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError> {
        self.writable(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let a = self.access.read().unwrap_or_else(|p| p.into_inner());
        a.write(buf, offset).map_err(|e| self.err(e))
    }

    fn flush(&self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        let a = self.access.read().unwrap_or_else(|p| p.into_inner());
        a.flush().map_err(|e| self.err(e))?;
        a.sync().map_err(|e| self.err(e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.writable(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let mut a = self.access.write().unwrap_or_else(|p| p.into_inner());
        a.discard_to_zero(offset, len).map_err(|e| self.err(e))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.writable(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let a = self.access.read().unwrap_or_else(|p| p.into_inner());
        a.write_zeroes(offset, len).map_err(|e| self.err(e))
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}
