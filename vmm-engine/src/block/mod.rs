//! Disk images: one [`DiskImage`] trait, several formats (raw, qcow2).
//!
//! The IDE disk and CD-ROM use it now, virtio-blk later. An image is opened
//! with [`open`], made with [`create`], and its format guessed with
//! [`probe_format`].
//!
//! - raw ([`raw::RawImage`]): positional reads and writes on the file;
//!   flush is `fdatasync`; discard punches holes; write-zeroes uses
//!   `FALLOC_FL_ZERO_RANGE` where the file system has it.
//! - qcow2 ([`qcow2::Qcow2Image`]): through the `imago` crate (sync mode).
//!   Images with a backing file or an external data file are refused
//!   (imago is given a gate that denies opening other files).
//!
//! Locking: an opened image takes the same open-file-description (OFD)
//! `fcntl` byte locks QEMU takes (block/file-posix.c): a shared lock on
//! byte 100+bit for each permission it holds (consistent read, write, write
//! unchanged) and on byte 200+bit for each permission it denies to others
//! (a writer denies write and resize; a reader denies write), then it tests
//! the opposite bytes for a conflicting holder. Two writers, or a writer and
//! a reader, conflict; two readers share. So Vireo refuses an image a QEMU
//! (or `qemu-img`) has open, and QEMU refuses one Vireo has open. A conflict
//! is [`BlockError::Locked`]. The locks live as long as the image is open.
//!
//! All I/O is bounds-checked: a request with `offset + len > size` (or one
//! that overflows) is an error and never touches the file.

pub mod qcow2;
pub mod raw;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::spec::DiskFormat;

/// The qcow2 magic, "QFI\xfb".
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A disk image as a device sees it: a byte-addressed array of `size()`
/// bytes.
pub trait DiskImage: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BlockError>;
    /// Writes `buf` at `offset`; [`BlockError::ReadOnly`] on a read-only image.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BlockError>;
    /// Makes everything written so far durable (fsync).
    fn flush(&self) -> Result<(), BlockError>;
    /// Tells the image `[offset, offset+len)` is unused; its contents become
    /// unspecified (zeroes for both formats here).
    fn discard(&self, offset: u64, len: u64) -> Result<(), BlockError>;
    /// Makes `[offset, offset+len)` read as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), BlockError>;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
}

/// What can go wrong with a disk image. Each message says what is wrong and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk image {path} does not exist: check the path, or create the image first")]
    NotFound { path: PathBuf },
    #[error(
        "permission denied opening {path} for writing: make it writable for this user, \
         or attach it read-only (readonly=on)"
    )]
    PermissionDeniedWrite { path: PathBuf },
    #[error("permission denied reading {path}: check the file's owner and mode")]
    PermissionDenied { path: PathBuf },
    #[error(
        "{path} is in use by another VM (it is locked); stop that VM first, \
         or attach the image read-only (readonly=on) in both"
    )]
    Locked { path: PathBuf },
    #[error("{path} is not a valid qcow2 image: {reason}")]
    InvalidQcow2 { path: PathBuf, reason: String },
    #[error(
        "{path} uses a qcow2 feature Vireo does not support ({reason}); make a standalone \
         copy with `qemu-img convert -O qcow2 <image> <new image>` and use that"
    )]
    UnsupportedQcow2 { path: PathBuf, reason: String },
    #[error(
        "{path} already exists; refusing to overwrite it: choose another name or delete it first"
    )]
    AlreadyExists { path: PathBuf },
    #[error("{path} is a directory, not a disk image")]
    IsDirectory { path: PathBuf },
    #[error(
        "I/O of {len} bytes at offset {offset} is outside the disk ({size} bytes); \
         the request was refused"
    )]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("the disk image is read-only; attach it with readonly=off to write to it")]
    ReadOnly,
    #[error("invalid disk size {size}: {reason}")]
    InvalidSize { size: u64, reason: &'static str },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BlockError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        BlockError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Refuses `[offset, offset+len)` unless it lies inside `[0, size)`.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<(), BlockError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}

/// Opens `path` as a disk image of `format`.
pub fn open(
    path: &Path,
    format: DiskFormat,
    read_only: bool,
) -> Result<Arc<dyn DiskImage>, BlockError> {
    let file = open_locked(path, read_only)?;
    Ok(match format {
        DiskFormat::Raw => Arc::new(raw::RawImage::from_locked_file(file, path, read_only)?),
        DiskFormat::Qcow2 => Arc::new(qcow2::Qcow2Image::from_locked_file(file, path, read_only)?),
    })
}

/// Creates a new, empty image of `size` bytes (a multiple of 512). Raw is a
/// sparse file; qcow2 is a v3 image with 64 KiB clusters. The image is
/// written to a temporary file in the same directory, synced, and renamed
/// into place; an existing `path` is never overwritten.
pub fn create(path: &Path, format: DiskFormat, size: u64) -> Result<(), BlockError> {
    if size == 0 {
        return Err(BlockError::InvalidSize {
            size,
            reason: "a disk must not be empty",
        });
    }
    if !size.is_multiple_of(512) {
        return Err(BlockError::InvalidSize {
            size,
            reason: "the size must be a multiple of 512 bytes",
        });
    }
    if size > i64::MAX as u64 / 2 {
        return Err(BlockError::InvalidSize {
            size,
            reason: "too large",
        });
    }
    if path.symlink_metadata().is_ok() {
        return Err(BlockError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or(BlockError::InvalidSize {
            size,
            reason: "the path has no file name",
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = temp_path(&dir, &name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| map_open_error(&tmp, e, false))?;
    let result = (|| {
        match format {
            DiskFormat::Raw => file.set_len(size).map_err(|e| BlockError::io(&tmp, e))?,
            DiskFormat::Qcow2 => qcow2::format_new(&file, &tmp, size)?,
        }
        file.sync_all().map_err(|e| BlockError::io(&tmp, e))?;
        rename_noreplace(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Guesses the format from the first bytes: the qcow2 magic, else raw.
pub fn probe_format(path: &Path) -> Result<DiskFormat, BlockError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| map_open_error(path, e, true))?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(BlockError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BlockError::io(path, e)),
        }
    }
    Ok(if got == 4 && magic == QCOW2_MAGIC {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    })
}

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(
        ".{name}.vireo-tmp-{}-{n}-{nanos:x}",
        std::process::id()
    ))
}

/// Renames without ever replacing an existing destination.
fn rename_noreplace(from: &Path, to: &Path) -> Result<(), BlockError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cfrom = CString::new(from.as_os_str().as_bytes()).map_err(|_| BlockError::InvalidSize {
        size: 0,
        reason: "the path contains a NUL byte",
    })?;
    let cto = CString::new(to.as_os_str().as_bytes()).map_err(|_| BlockError::InvalidSize {
        size: 0,
        reason: "the path contains a NUL byte",
    })?;
    // SAFETY: both are valid NUL-terminated strings; the call only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Err(BlockError::AlreadyExists {
            path: to.to_path_buf(),
        }),
        // File systems without RENAME_NOREPLACE: link() also never replaces.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => match std::fs::hard_link(from, to) {
            Ok(()) => {
                let _ = std::fs::remove_file(from);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(BlockError::AlreadyExists {
                path: to.to_path_buf(),
            }),
            Err(e) => Err(BlockError::io(to, e)),
        },
        _ => Err(BlockError::io(to, err)),
    }
}

fn map_open_error(path: &Path, e: io::Error, read_only: bool) -> BlockError {
    let path = path.to_path_buf();
    match e.kind() {
        io::ErrorKind::NotFound => BlockError::NotFound { path },
        io::ErrorKind::PermissionDenied if read_only => BlockError::PermissionDenied { path },
        io::ErrorKind::PermissionDenied => BlockError::PermissionDeniedWrite { path },
        io::ErrorKind::AlreadyExists => BlockError::AlreadyExists { path },
        _ if e.raw_os_error() == Some(libc::EROFS) => BlockError::PermissionDeniedWrite { path },
        _ if e.raw_os_error() == Some(libc::EISDIR) => BlockError::IsDirectory { path },
        _ => BlockError::Io { path, source: e },
    }
}

/// QEMU's lock byte bases and permission bits.
const LOCK_PERM_BASE: i64 = 100;
const LOCK_SHARED_BASE: i64 = 200;
const PERM_CONSISTENT_READ: u32 = 0x01;
const PERM_WRITE: u32 = 0x02;
const PERM_WRITE_UNCHANGED: u32 = 0x04;
const PERM_RESIZE: u32 = 0x08;
const PERM_ALL: u32 = 0x1f;

fn ofd_lock(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_short,
    byte: i64,
) -> io::Result<libc::flock> {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    loop {
        // SAFETY: fcntl with an OFD lock command on our own descriptor and a
        // pointer to a live, initialised flock.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if r != -1 {
            return Ok(fl);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn is_lock_conflict(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

/// Takes QEMU-compatible locks on `file`: what we hold, what we deny, and
/// checks nobody holds what we deny or denies what we hold.
fn lock_image(file: &File, path: &Path, read_only: bool) -> Result<(), BlockError> {
    let perm = if read_only {
        PERM_CONSISTENT_READ
    } else {
        PERM_CONSISTENT_READ | PERM_WRITE | PERM_WRITE_UNCHANGED
    };
    let shared = if read_only {
        PERM_ALL & !PERM_WRITE
    } else {
        PERM_ALL & !(PERM_WRITE | PERM_RESIZE)
    };
    let locked = || BlockError::Locked {
        path: path.to_path_buf(),
    };
    let io = |e: io::Error| {
        if is_lock_conflict(&e) {
            locked()
        } else {
            BlockError::io(path, e)
        }
    };
    for bit in 0..5 {
        let m = 1u32 << bit;
        if perm & m != 0 {
            ofd_lock(
                file,
                libc::F_OFD_SETLK,
                libc::F_RDLCK as _,
                LOCK_PERM_BASE + bit,
            )
            .map_err(io)?;
        }
        if shared & m == 0 {
            ofd_lock(
                file,
                libc::F_OFD_SETLK,
                libc::F_RDLCK as _,
                LOCK_SHARED_BASE + bit,
            )
            .map_err(io)?;
        }
    }
    for bit in 0..5 {
        let m = 1u32 << bit;
        // Someone denies a permission we hold?
        if perm & m != 0 {
            let fl = ofd_lock(
                file,
                libc::F_OFD_GETLK,
                libc::F_WRLCK as _,
                LOCK_SHARED_BASE + bit,
            )
            .map_err(io)?;
            if fl.l_type != libc::F_UNLCK as libc::c_short {
                return Err(locked());
            }
        }
        // Someone holds a permission we deny?
        if shared & m == 0 {
            let fl = ofd_lock(
                file,
                libc::F_OFD_GETLK,
                libc::F_WRLCK as _,
                LOCK_PERM_BASE + bit,
            )
            .map_err(io)?;
            if fl.l_type != libc::F_UNLCK as libc::c_short {
                return Err(locked());
            }
        }
    }
    Ok(())
}

/// Opens `path` (read-write unless `read_only`) and locks it.
fn open_locked(path: &Path, read_only: bool) -> Result<File, BlockError> {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| map_open_error(path, e, read_only))?;
    let meta = file.metadata().map_err(|e| BlockError::io(path, e))?;
    if meta.is_dir() {
        return Err(BlockError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    // A conflict that goes away at once is a descriptor a forked child
    // still held until its exec (or a VM that just closed the image): look
    // again a few times before reporting it.
    let mut tries = 0;
    loop {
        match lock_image(&file, path, read_only) {
            Err(BlockError::Locked { .. }) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.map(|()| file),
        }
    }
}

#[cfg(test)]
mod tests;
