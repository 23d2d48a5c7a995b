//! What the host offers a VM: its memory, how many vCPUs KVM allows, whether
//! /dev/kvm is usable at all, and its bridges. [`limits`] is read once per
//! check; [`crate::VmSpec::check`] judges a definition against it.

use std::path::Path;

/// The host facts a VM definition is checked against. Every field may be
/// unknown (a host without KVM has no vCPU limit to report); a rule whose
/// fact is unknown is not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLimits {
    /// `MemTotal` from /proc/meminfo, in MiB.
    pub memory_mib: Option<u64>,
    /// The most vCPUs KVM allows in one VM here (`KVM_CAP_MAX_VCPUS`).
    pub max_vcpus: Option<u32>,
    /// Why /dev/kvm cannot be used, or `None` when it can.
    pub kvm_unusable: Option<String>,
}

impl HostLimits {
    /// Limits that apply no host rule (every fact unknown, KVM assumed usable).
    pub fn unknown() -> HostLimits {
        HostLimits {
            memory_mib: None,
            max_vcpus: None,
            kvm_unusable: None,
        }
    }
}

/// Reads this host's limits: /proc/meminfo, and /dev/kvm (or
/// $VIREO_KVM_DEVICE) for the vCPU limit.
pub fn limits() -> HostLimits {
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| meminfo_total_kib(&s))
        .map(|kib| kib / 1024);
    let (max_vcpus, kvm_unusable) = match crate::vm::open_kvm() {
        Ok(kvm) => (
            Some(u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX)),
            None,
        ),
        Err(crate::VmError::KvmUnavailable(why)) => (None, Some(why)),
        Err(e) => (None, Some(e.to_string())),
    };
    HostLimits {
        memory_mib,
        max_vcpus,
        kvm_unusable,
    }
}

/// `MemTotal:` of a /proc/meminfo text, in KiB.
pub fn meminfo_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The host's bridges (/sys/class/net/*/bridge), sorted by name.
pub fn bridges() -> Vec<String> {
    bridges_in(Path::new("/sys/class/net"))
}

/// The interfaces under `sys_class_net` (a /sys/class/net tree) that have a
/// `bridge` folder, sorted by name.
pub fn bridges_in(sys_class_net: &Path) -> Vec<String> {
    crate::net::list_bridges_in(sys_class_net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_parsed() {
        assert_eq!(
            meminfo_total_kib("MemFree: 1 kB\nMemTotal:       24684092 kB\n"),
            Some(24684092)
        );
        assert_eq!(meminfo_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo_total_kib("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn bridges_are_the_interfaces_with_a_bridge_folder() {
        let t = tempfile::tempdir().unwrap();
        for (name, bridge) in [("eth0", false), ("br100", true), ("br0", true)] {
            std::fs::create_dir_all(t.path().join(name)).unwrap();
            if bridge {
                std::fs::create_dir(t.path().join(name).join("bridge")).unwrap();
            }
        }
        assert_eq!(bridges_in(t.path()), vec!["br0", "br100"]);
        assert!(bridges_in(&t.path().join("missing")).is_empty());
    }

    #[test]
    fn limits_read_this_host() {
        let l = limits();
        // Every Linux host has a MemTotal line.
        assert!(l.memory_mib.is_some_and(|m| m > 0), "{l:?}");
        // Either KVM answered with a vCPU limit, or it says why not.
        assert_ne!(l.max_vcpus.is_some(), l.kvm_unusable.is_some(), "{l:?}");
    }
}
