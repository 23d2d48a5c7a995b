//! The host's bridges: list them (/sys/class/net/*/bridge), check one
//! exists, add a TAP to it (SIOCBRADDIF) and bring links up. All of it works
//! in the calling thread's network namespace (the ioctls go through a
//! socket made by the caller), so tests can run inside a namespace.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};

use super::{ifreq, NetError};

/// linux/sockios.h: add an interface to a bridge.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// The host's bridges, sorted by name.
pub fn list_bridges() -> Vec<String> {
    list_bridges_in(std::path::Path::new("/sys/class/net"))
}

/// The interfaces under `sys_class_net` (a /sys/class/net tree) that have a
/// `bridge` folder, sorted by name.
pub fn list_bridges_in(sys_class_net: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sys_class_net)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("bridge").is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn socket() -> Result<OwnedFd, NetError> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(NetError::io("opening a socket", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifindex(name: &str) -> Result<Option<i32>, NetError> {
    let mut ifr = ifreq(name)?;
    let s = socket()?;
    // SAFETY: SIOCGIFINDEX fills the ifreq we own.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFINDEX, &mut ifr) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODEV) => Ok(None),
            _ => Err(NetError::io("looking up an interface", e)),
        };
    }
    // SAFETY: the kernel filled ifru_ifindex.
    Ok(Some(unsafe { ifr.ifr_ifru.ifru_ifindex }))
}

/// Whether this thread sees the same network namespace as sysfs (the
/// process's own); then /sys/class/net describes our interfaces.
fn sysfs_matches_namespace() -> bool {
    match (
        std::fs::metadata("/proc/thread-self/ns/net"),
        std::fs::metadata("/proc/self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Whether `name` exists (in this thread's namespace) and is a bridge.
pub fn bridge_exists(name: &str) -> bool {
    check_bridge(name).is_ok()
}

/// Ok if `name` is an existing bridge; otherwise the error to show.
pub fn check_bridge(name: &str) -> Result<(), NetError> {
    if ifindex(name)?.is_none() {
        return Err(NetError::BridgeMissing(name.to_string()));
    }
    if sysfs_matches_namespace() {
        let dev = std::path::Path::new("/sys/class/net").join(name);
        if dev.exists() && !dev.join("bridge").is_dir() {
            return Err(NetError::NotABridge(name.to_string()));
        }
    }
    Ok(())
}

/// Adds interface `port` to bridge `bridge` (SIOCBRADDIF).
pub fn add_to_bridge(bridge: &str, port: &str) -> Result<(), NetError> {
    check_bridge(bridge)?;
    let idx = ifindex(port)?.ok_or_else(|| NetError::Io {
        op: "adding a TAP to a bridge",
        source: io::Error::new(io::ErrorKind::NotFound, format!("no interface {port}")),
    })?;
    let mut ifr = ifreq(bridge)?;
    ifr.ifr_ifru.ifru_ifindex = idx;
    let s = socket()?;
    // SAFETY: SIOCBRADDIF reads the ifreq we own.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), SIOCBRADDIF, &mut ifr) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODEV) => NetError::BridgeMissing(bridge.to_string()),
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => NetError::NotABridge(bridge.to_string()),
            _ => NetError::io("adding a TAP to a bridge", e),
        });
    }
    Ok(())
}

/// Sets IFF_UP on interface `name`.
pub fn set_link_up(name: &str) -> Result<(), NetError> {
    let mut ifr = ifreq(name)?;
    let s = socket()?;
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS on an ifreq we own.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(NetError::io(
                "reading link flags",
                io::Error::last_os_error(),
            ));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr) < 0 {
            return Err(NetError::io(
                "bringing a link up",
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bridge_is_reported_with_the_fix() {
        let e = check_bridge("vireo-nobr0").unwrap_err();
        assert!(matches!(e, NetError::BridgeMissing(ref n) if n == "vireo-nobr0"));
        assert!(!bridge_exists("vireo-nobr0"));
    }

    #[test]
    fn loopback_is_not_a_bridge() {
        // `lo` exists in every namespace and is never a bridge.
        let e = check_bridge("lo").unwrap_err();
        assert!(matches!(e, NetError::NotABridge(_)), "{e}");
        assert!(!list_bridges().contains(&"lo".to_string()));
    }
}
