//! Host networking for virtio-net: a TAP device ([`tap::Tap`], opened with
//! IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) added to an existing host bridge
//! ([`bridge`]). Vireo never creates bridges or addresses: the bridge a VM
//! names must already exist. Errors say what to do ([`NetError`]).

pub mod bridge;
pub mod helper;
pub mod tap;

pub use bridge::{add_to_bridge, bridge_exists, list_bridges, list_bridges_in, set_link_up};
pub use tap::Tap;

/// What can go wrong setting up a VM's network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "/dev/net/tun does not exist: load the tun module (`modprobe tun`), \
         or create the node (`mkdir -p /dev/net && mknod /dev/net/tun c 10 200`)"
    )]
    NoTunDevice,
    #[error(
        "{op} needs CAP_NET_ADMIN: run Vireo as root, or grant the capability \
         (`setcap cap_net_admin+ep /path/to/vireo`)"
    )]
    NoPermission { op: &'static str },
    #[error(
        "bridge {0} does not exist: create it with \
         `ip link add {0} type bridge && ip link set {0} up`"
    )]
    BridgeMissing(String),
    #[error(
        "{0} is not a bridge: pick one of the host's bridges (`ip link show type bridge`), \
         or create one with `ip link add NAME type bridge`"
    )]
    NotABridge(String),
    #[error("invalid interface name {0:?}: at most 15 bytes, no '/', spaces or NUL")]
    InvalidName(String),
    #[error("{helper}: {message}")]
    Helper { helper: String, message: String },
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => NetError::NoPermission { op },
            _ => NetError::Io { op, source },
        }
    }
}

/// Opens a TAP named after `name_template` (e.g. "vireo%d"), adds it to
/// `bridge` and brings it up. The bridge is checked first, so a missing one
/// is reported before anything is created.
pub fn open_tap_on_bridge(bridge: &str, name_template: &str) -> Result<Tap, NetError> {
    bridge::check_bridge(bridge)?;
    let tap = Tap::open(name_template)?;
    add_to_bridge(bridge, tap.name())?;
    set_link_up(tap.name())?;
    Ok(tap)
}

/// TAPs opened before the sandbox, kept for the life of the process: a
/// sandboxed VM process cannot run the helper again (no_new_privs drops
/// its capability), so every boot of the VM reuses these.
static KEPT: std::sync::Mutex<Vec<(usize, String, Tap)>> = std::sync::Mutex::new(Vec::new());

/// Opens (directly or through the helper) a TAP for each NIC and keeps it,
/// so that [`tap_for_nic`] hands out the same TAP at every boot. The VM
/// process calls this before it enters its sandbox.
pub fn keep_taps_for(nics: &[crate::spec::NicSpec]) -> Result<(), NetError> {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    for (i, nic) in nics.iter().enumerate() {
        if !kept.iter().any(|(k, b, _)| *k == i && *b == nic.bridge) {
            let tap = open_tap_for_vm(&nic.bridge, "vireo%d")?;
            kept.push((i, nic.bridge.clone(), tap));
        }
    }
    Ok(())
}

/// The TAP for NIC `index` on `bridge`: the one [`keep_taps_for`] kept (a
/// new fd for it), else a fresh one.
pub fn tap_for_nic(index: usize, bridge: &str, name_template: &str) -> Result<Tap, NetError> {
    let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, tap)) = kept.iter().find(|(k, b, _)| *k == index && b == bridge) {
        return tap.try_clone();
    }
    drop(kept);
    open_tap_for_vm(bridge, name_template)
}

/// [`open_tap_on_bridge`] when this process may (CAP_NET_ADMIN); otherwise
/// through `vireo-net-helper` ([`helper`]), which checks the bridge
/// against /etc/vireo/bridge.conf.
pub fn open_tap_for_vm(bridge: &str, name_template: &str) -> Result<Tap, NetError> {
    match open_tap_on_bridge(bridge, name_template) {
        Err(NetError::NoPermission { .. }) => helper::open_tap_via_helper(bridge),
        other => other,
    }
}

/// A random locally administered unicast MAC in QEMU's 52:54:00 range.
/// Generate it once per VM and keep it in the VM's definition.
pub fn random_mac() -> [u8; 6] {
    let mut r = [0u8; 3];
    // SAFETY: getrandom writes at most r.len() bytes into r.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    if n != r.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ std::process::id() as u128;
        r = [(t >> 8) as u8, (t >> 16) as u8, (t >> 24) as u8];
    }
    [0x52, 0x54, 0x00, r[0], r[1], r[2]]
}

/// Formats a MAC as `52:54:00:12:34:56`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `52:54:00:12:34:56`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// An `ifreq` with `name` filled in.
pub(crate) fn ifreq(name: &str) -> Result<libc::ifreq, NetError> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() >= libc::IFNAMSIZ
        || bytes
            .iter()
            .any(|&b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(NetError::InvalidName(name.to_string()));
    }
    // SAFETY: ifreq is plain old data; all-zeroes is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

/// The name the kernel left in an `ifreq`.
pub(crate) fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_helpers() {
        let m = random_mac();
        assert_eq!(&m[..3], &[0x52, 0x54, 0x00]);
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("52:54:00:12:34:zz"), None);
        assert_eq!(
            parse_mac("52:54:00:AB:cd:01"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 1])
        );
    }

    #[test]
    fn ifreq_names() {
        assert!(ifreq("br100").is_ok());
        assert!(matches!(ifreq(""), Err(NetError::InvalidName(_))));
        assert!(ifreq("a-name-that-is-far-too-long").is_err());
        assert!(ifreq("a/b").is_err());
        assert!(ifreq("a b").is_err());
        assert_eq!(ifreq_name(&ifreq("tap7").unwrap()), "tap7");
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = NetError::BridgeMissing("br100".into()).to_string();
        assert_eq!(
            e,
            "bridge br100 does not exist: create it with \
             `ip link add br100 type bridge && ip link set br100 up`"
        );
        let e = NetError::io(
            "creating a TAP",
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        assert!(NetError::NoTunDevice.to_string().contains("modprobe tun"));
    }
}
