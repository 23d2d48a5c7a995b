//! `vireo-net-helper --bridge NAME --fd N`: the one privileged piece of
//! Vireo's networking, in the manner of qemu-bridge-helper. Installed with
//! CAP_NET_ADMIN (`setcap cap_net_admin+ep`) or run through pkexec, it
//! 1. checks NAME against the allow-list (/etc/vireo/bridge.conf;
//!    `allow br100`, `deny NAME`, `allow all`, `include FILE`),
//! 2. makes a TAP (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), adds it to the
//!    bridge and brings it up,
//! 3. passes the TAP's fd back with SCM_RIGHTS over the Unix socket it was
//!    given as fd N (its TAP name is the message's data), and exits.
//!
//! Exit status 0: the fd was sent; 1: refused or failed (the reason on
//! stderr, naming the file and the line to add); 2: bad arguments.
//!
//! The allow-list's path can be overridden with $VIREO_BRIDGE_CONF (tests
//! use it), but only when the helper runs without elevated privilege
//! (AT_SECURE unset): a setcap or setuid helper always reads the system file.

mod acl;

use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

#[derive(Debug)]
struct Args {
    bridge: String,
    fd: i32,
}

fn usage() -> String {
    "usage: vireo-net-helper --bridge NAME --fd N (N: a connected Unix socket to send the TAP on)"
        .to_string()
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let (mut bridge, mut fd) = (None, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(usage);
        match key.as_str() {
            "--bridge" | "--br" => bridge = Some(value()?),
            "--fd" => {
                let v = value()?;
                fd = Some(
                    v.parse::<i32>()
                        .ok()
                        .filter(|&n| n >= 0)
                        .ok_or_else(|| format!("--fd {v:?}: not a file descriptor number"))?,
                )
            }
            _ => return Err(format!("unknown argument {a:?}; {}", usage())),
        }
    }
    match (bridge, fd) {
        (Some(bridge), Some(fd)) => Ok(Args { bridge, fd }),
        _ => Err(usage()),
    }
}

/// The allow-list to read: the system file, unless an unprivileged run
/// names another in $VIREO_BRIDGE_CONF.
fn conf_path() -> PathBuf {
    // SAFETY: getauxval only reads the auxiliary vector.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    match std::env::var_os("VIREO_BRIDGE_CONF") {
        Some(p) if !secure && !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(acl::DEFAULT_CONF),
    }
}

fn run(args: Args) -> Result<(), String> {
    // SAFETY: fcntl(F_GETFD) only asks whether the fd is open.
    if unsafe { libc::fcntl(args.fd, libc::F_GETFD) } < 0 {
        return Err(format!("--fd {}: not an open file descriptor", args.fd));
    }
    // SAFETY: the fd is open (checked above) and this process owns it from
    // here on: it was handed over on the command line for this purpose.
    let sock = unsafe { UnixStream::from_raw_fd(args.fd) };
    let conf = conf_path();
    let acl = acl::Acl::load(&conf).map_err(|e| match e {
        acl::AclError::Missing(_) => format!(
            "{e}: create it with the line `allow {}` (as root)",
            args.bridge
        ),
        e => e.to_string(),
    })?;
    let verdict = acl.check(&args.bridge);
    if verdict != acl::Verdict::Allowed {
        return Err(acl::refusal(&conf, &args.bridge, &verdict));
    }
    let tap =
        vmm_engine::nic::open_tap_on_bridge(&args.bridge, "vireo%d").map_err(|e| e.to_string())?;
    sock.send_with_fd(tap.name().as_bytes(), tap.as_raw_fd())
        .map_err(|e| format!("sending the TAP fd on --fd {}: {e}", args.fd))?;
    Ok(())
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vireo-net-helper: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("vireo-net-helper: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        let a = args(&["--bridge", "br100", "--fd", "3"]).unwrap();
        assert_eq!((a.bridge.as_str(), a.fd), ("br100", 3));
        let a = args(&["--br=br1", "--fd=7"]).unwrap();
        assert_eq!((a.bridge.as_str(), a.fd), ("br1", 7));
        assert!(args(&["--bridge", "br100"]).is_err());
        assert!(args(&["--fd", "-1", "--bridge", "b"])
            .unwrap_err()
            .contains("--fd"));
        assert!(args(&["--bogus"]).unwrap_err().contains("unknown argument"));
    }
}
