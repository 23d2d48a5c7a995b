//! Getting a TAP from `vireo-net-helper` when this process lacks
//! CAP_NET_ADMIN (as QEMU uses qemu-bridge-helper): a socketpair, the
//! helper run with one end as `--fd 3`, the TAP's fd received back with
//! SCM_RIGHTS. The helper checks the bridge against /etc/vireo/bridge.conf.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::{NetError, Tap};

/// The helper's fd number for its end of the socket.
const CHILD_FD: i32 = 3;

/// The helper binary: $VIREO_NET_HELPER, else `vireo-net-helper` next to
/// this program, else the one on $PATH.
pub fn helper_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VIREO_NET_HELPER") {
        return p.into();
    }
    if let Some(sib) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("vireo-net-helper")))
        .filter(|p| p.exists())
    {
        return sib;
    }
    "vireo-net-helper".into()
}

/// Asks the helper for a TAP on `bridge`.
pub fn open_tap_via_helper(bridge: &str) -> Result<Tap, NetError> {
    let helper = helper_path();
    let (ours, theirs) = UnixStream::pair().map_err(|e| NetError::io("socketpair", e))?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&helper);
    cmd.arg("--bridge")
        .arg(bridge)
        .arg("--fd")
        .arg(CHILD_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec this only calls dup2, which is
    // async-signal-safe; dup2 clears FD_CLOEXEC on the new fd.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(theirs_fd, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| NetError::Helper {
        helper: helper.display().to_string(),
        message: format!(
            "cannot run it: {e} (install vireo-net-helper, see README, or set VIREO_NET_HELPER)"
        ),
    })?;
    drop(theirs);
    let mut name = [0u8; libc::IFNAMSIZ];
    let received = ours.recv_with_fd(&mut name);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| NetError::io("waiting for the net helper", e))?;
    let stderr = stderr.trim().trim_start_matches("vireo-net-helper: ");
    match received {
        Ok((n, Some(file))) if status.success() => {
            let name = String::from_utf8_lossy(&name[..n]).into_owned();
            Tap::from_helper(OwnedFd::from(file), name)
        }
        _ => Err(NetError::Helper {
            helper: helper.display().to_string(),
            message: if stderr.is_empty() {
                format!("it sent no TAP ({status})")
            } else {
                stderr.to_string()
            },
        }),
    }
}
