//! Landlock: the VM process may open only the files its VM needs
//! ([`super::SandboxPaths`]). Where the kernel lacks Landlock this logs it
//! once and the process runs without it (seccomp still holds).

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};

use super::{SandboxError, SandboxPaths};

/// What Landlock did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandlockOutcome {
    /// Every rule is enforced.
    Enforced,
    /// The kernel enforces an older subset of the rights.
    PartiallyEnforced,
    /// The kernel has no Landlock: nothing is enforced.
    Unsupported,
}

/// The newest ABI whose rights we ask for; older kernels get a subset
/// (best effort, the crate's default).
const ABI_WANTED: ABI = ABI::V5;

pub(super) fn restrict(paths: &SandboxPaths) -> Result<LandlockOutcome, SandboxError> {
    let err = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let all = AccessFs::from_all(ABI_WANTED);
    let read = AccessFs::from_read(ABI_WANTED);
    // Nothing is executed (seccomp forbids execve anyway).
    let mut read_write = all;
    read_write.remove(AccessFs::Execute);
    let status = Ruleset::default()
        .handle_access(all)
        .map_err(err)?
        .create()
        .map_err(err)?
        // Paths that do not exist are skipped: nothing there to open.
        .add_rules(path_beneath_rules(&paths.read, read))
        .map_err(err)?
        .add_rules(path_beneath_rules(&paths.read_write, read_write))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockOutcome::Enforced,
        RulesetStatus::PartiallyEnforced => LandlockOutcome::PartiallyEnforced,
        RulesetStatus::NotEnforced => {
            log::warn!(
                "sandbox: this kernel has no Landlock, so the VM process's file access is \
                 not limited (seccomp still is)"
            );
            LandlockOutcome::Unsupported
        }
    })
}
