//! A TAP device: /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
//! non-blocking, a 12-byte virtio_net_hdr_v1 in front of every frame
//! (TUNSETVNETHDRSZ), offloads set with TUNSETOFFLOAD. The device goes away
//! when the Tap is dropped (it is not persistent).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

use super::{ifreq, ifreq_name, NetError};

/// Size of the vnet header on the tap: virtio_net_hdr_v1 (with num_buffers).
pub const VNET_HDR_LEN: usize = 12;

pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates a TAP. `name` may hold a `%d` the kernel replaces ("vireo%d").
    pub fn open(name: &str) -> Result<Tap, NetError> {
        let mut ifr = ifreq(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => NetError::NoTunDevice,
                _ => NetError::io("opening /dev/net/tun", e),
            })?;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes an ifreq we own.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if r < 0 {
            return Err(NetError::io("creating a TAP", io::Error::last_os_error()));
        }
        let tap = Tap {
            name: ifreq_name(&ifr),
            file,
        };
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// A TAP another process opened (`vireo-net-helper`) and passed over:
    /// made non-blocking, its vnet header size set.
    pub fn from_helper(fd: std::os::fd::OwnedFd, name: String) -> Result<Tap, NetError> {
        let tap = Tap {
            file: File::from(fd),
            name,
        };
        // SAFETY: F_GETFL/F_SETFL on an fd we own.
        unsafe {
            let fl = libc::fcntl(tap.file.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(tap.file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0
            {
                return Err(NetError::io(
                    "making the TAP non-blocking",
                    io::Error::last_os_error(),
                ));
            }
        }
        tap.set_vnet_hdr_len()?;
        Ok(tap)
    }

    /// Tells the TAP the size of the virtio-net header in front of each frame.
    fn set_vnet_hdr_len(&self) -> Result<(), NetError> {
        let hdr = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int we own.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr) };
        if r < 0 {
            return Err(NetError::io(
                "setting the TAP vnet header size",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Another handle on the same TAP (a dup of its fd).
    pub fn try_clone(&self) -> Result<Tap, NetError> {
        Ok(Tap {
            file: self
                .file
                .try_clone()
                .map_err(|e| NetError::io("duplicating the TAP fd", e))?,
            name: self.name.clone(),
        })
    }

    /// The interface name the kernel gave the TAP.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// TUNSETOFFLOAD: which offloads (TUN_F_*) the reader accepts.
    pub fn set_offload(&self, flags: u32) -> Result<(), NetError> {
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(NetError::io(
                "setting TAP offloads",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Reads one frame (with its vnet header); WouldBlock when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: read into a buffer we own, at most its length.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame (with its vnet header).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: write from a buffer we own, at most its length.
        let n = unsafe { libc::write(self.file.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("name", &self.name).finish()
    }
}
