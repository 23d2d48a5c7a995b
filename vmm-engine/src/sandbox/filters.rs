//! Every seccomp filter of the VM process, in one file, syscall by syscall.
//!
//! Each thread role gets an allow-list; anything else traps (SIGSYS), and
//! the handler in `sandbox/mod.rs` names the call and ends the process with
//! SIGSYS. The sets were found by running the real guests (SeaBIOS + GRUB
//! menus, the GRUB reboot script, the tiny direct-boot guest, a virtio disk)
//! under `strace -f` and reading each thread's calls, then trimmed to what
//! the code on that thread does.
//!
//! `ioctl` is allowed only for the request numbers a role issues (argument
//! 1). Other arguments are not checked: a role that may `openat` at all
//! is confined by Landlock instead.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::Role;

/// KVM's ioctl type ('\xAE').
const KVMIO: u32 = 0xAE;

// The KVM requests the roles issue (linux/kvm.h).
vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_bindings::kvm_regs);
vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
vmm_sys_util::ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_bindings::kvm_irq_level);
vmm_sys_util::ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_bindings::kvm_msi);
vmm_sys_util::ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_bindings::kvm_ioeventfd);
vmm_sys_util::ioctl_iow_nr!(
    KVM_SET_USER_MEMORY_REGION,
    KVMIO,
    0x46,
    kvm_bindings::kvm_userspace_memory_region
);
vmm_sys_util::ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_bindings::kvm_dirty_log);

/// A rule list that allows the call whatever its arguments.
fn always() -> Vec<SeccompRule> {
    Vec::new()
}

/// `ioctl` allowed for exactly these request numbers.
fn ioctl_requests(requests: &[u64]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    requests
        .iter()
        .map(|&r| {
            SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                r,
            )?])
        })
        .collect()
}

/// Calls every Rust thread of the engine makes: memory, locks, time,
/// logging, and its own start and end.
fn base(m: &mut BTreeMap<i64, Vec<SeccompRule>>) {
    for nr in [
        libc::SYS_futex,             // Mutex, Condvar, channels, thread join
        libc::SYS_mmap,              // the allocator; thread stacks
        libc::SYS_munmap,            // the allocator; a thread's stack at its end
        libc::SYS_mremap,            // the allocator growing a large Vec
        libc::SYS_mprotect,          // the allocator; stack guard pages
        libc::SYS_madvise,           // glibc frees a finished thread's stack
        libc::SYS_brk,               // the allocator's main arena
        libc::SYS_sched_yield,       // spin loops in std and crossbeam
        libc::SYS_clock_gettime,     // Instant::now when the vDSO falls back
        libc::SYS_clock_nanosleep,   // thread::sleep
        libc::SYS_nanosleep,         // thread::sleep (older glibc)
        libc::SYS_write,             // log lines on stderr; eventfd writes
        libc::SYS_getrandom,         // HashMap seeds
        libc::SYS_rt_sigprocmask,    // glibc around thread start and exit
        libc::SYS_rt_sigreturn,      // returning from the vCPU kick handler
        libc::SYS_sigaltstack,       // std's stack-overflow guard at thread end
        libc::SYS_gettid,            // thread ids (CPU accounting, logs)
        libc::SYS_getpid,            // std::process::id in temp file names
        libc::SYS_sched_getaffinity, // std::thread::available_parallelism
        libc::SYS_exit,              // a thread ends
        libc::SYS_exit_group,        // the process ends (std::process::exit)
        libc::SYS_close,             // dropping fds (eventfds, files, sockets)
        libc::SYS_fcntl,             // F_DUPFD_CLOEXEC when an fd is cloned
    ] {
        m.insert(nr, always());
    }
}

/// Starting threads (std::thread::spawn): glibc's pthread_create.
fn spawn_threads(m: &mut BTreeMap<i64, Vec<SeccompRule>>) {
    for nr in [
        libc::SYS_clone3,          // pthread_create
        libc::SYS_clone,           // pthread_create where clone3 is missing
        libc::SYS_set_robust_list, // the new thread's robust futex list
        libc::SYS_rseq,            // the new thread registers restartable sequences
        libc::SYS_prctl,           // PR_SET_NAME: the thread's name
    ] {
        m.insert(nr, always());
    }
}

/// The syscall allow-list of one role.
fn rules(role: Role) -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
    let mut m = BTreeMap::new();
    base(&mut m);
    match role {
        Role::Vcpu => {
            // KVM_RUN, and what device emulation on this thread does:
            // interrupts (KVM_IRQ_LINE, KVM_SIGNAL_MSI), moving BARs
            // (KVM_SET_USER_MEMORY_REGION, KVM_IOEVENTFD), fault reports
            // (KVM_GET_REGS, KVM_GET_SREGS).
            m.insert(
                libc::SYS_ioctl,
                ioctl_requests(&[
                    KVM_RUN(),
                    KVM_GET_REGS(),
                    KVM_GET_SREGS(),
                    KVM_IRQ_LINE(),
                    KVM_SIGNAL_MSI(),
                    KVM_IOEVENTFD(),
                    KVM_SET_USER_MEMORY_REGION(),
                ])?,
            );
            for nr in [
                libc::SYS_pread64,   // IDE/ATAPI sectors from the disk and ISO
                libc::SYS_pwrite64,  // IDE sector writes
                libc::SYS_preadv,    // disk reads (imago, qcow2)
                libc::SYS_pwritev,   // disk writes (imago, qcow2)
                libc::SYS_fsync,     // ATA FLUSH CACHE
                libc::SYS_fdatasync, // ATA FLUSH CACHE
                libc::SYS_tgkill,    // kicking the other vCPUs (pause, INIT/SIPI)
            ] {
                m.insert(nr, always());
            }
        }
        Role::IoLoop => {
            // The virtio backends: doorbells (eventfds), the TAP, disks.
            m.insert(
                libc::SYS_ioctl,
                ioctl_requests(&[KVM_SIGNAL_MSI(), KVM_IRQ_LINE()])?,
            );
            for nr in [
                libc::SYS_epoll_wait,  // the loop itself
                libc::SYS_epoll_pwait, // the loop itself (glibc's epoll_wait)
                libc::SYS_epoll_ctl,   // handlers added and removed
                libc::SYS_read,        // eventfds; TAP frames
                libc::SYS_readv,       // TAP frames into descriptor chains
                libc::SYS_writev,      // TAP frames out of descriptor chains
                libc::SYS_pread64,     // virtio-blk reads
                libc::SYS_pwrite64,    // virtio-blk writes
                libc::SYS_preadv,      // virtio-blk reads (imago)
                libc::SYS_pwritev,     // virtio-blk writes (imago)
                libc::SYS_fsync,       // VIRTIO_BLK_T_FLUSH
                libc::SYS_fdatasync,   // VIRTIO_BLK_T_FLUSH
                libc::SYS_fallocate,   // VIRTIO_BLK_T_DISCARD / WRITE_ZEROES
                libc::SYS_lseek,       // image size
                libc::SYS_fstat,       // image size
            ] {
                m.insert(nr, always());
            }
        }
        Role::Display => {
            // Renders the VGA into the shared framebuffer; reads KVM's dirty
            // log of the framebuffer slot.
            m.insert(libc::SYS_ioctl, ioctl_requests(&[KVM_GET_DIRTY_LOG()])?);
        }
        Role::Timer => {
            // The RTC's periodic and alarm interrupts.
            m.insert(libc::SYS_ioctl, ioctl_requests(&[KVM_IRQ_LINE()])?);
        }
        Role::Control => {
            // The control socket: accept, one thread per client, replies;
            // screenshots written temp-file-then-rename (Landlock limits
            // where); keys kick the vCPUs.
            spawn_threads(&mut m);
            m.insert(libc::SYS_ioctl, ioctl_requests(&[KVM_IRQ_LINE()])?);
            for nr in [
                libc::SYS_accept4,    // a client connects
                libc::SYS_accept,     // a client connects
                libc::SYS_read,       // requests
                libc::SYS_recvfrom,   // requests
                libc::SYS_sendto,     // replies
                libc::SYS_setsockopt, // the write timeout
                libc::SYS_shutdown,   // dropping the clients on exit
                libc::SYS_dup,        // try_clone
                libc::SYS_openat,     // screenshot files (Landlock confines)
                libc::SYS_fsync,      // screenshot written in full
                libc::SYS_rename,     // screenshot temp file into place
                libc::SYS_renameat,   // screenshot temp file into place
                libc::SYS_renameat2,  // screenshot temp file into place
                libc::SYS_unlink,     // a failed screenshot's temp file
                libc::SYS_unlinkat,   // a failed screenshot's temp file
                libc::SYS_statx,      // std::fs metadata
                libc::SYS_fstat,      // std::fs metadata
                libc::SYS_newfstatat, // std::fs metadata
                libc::SYS_tgkill,     // kicking vCPUs for keys and pause
                libc::SYS_geteuid,    // screenshots only into folders the user owns
                libc::SYS_poll,       // socket readiness in std
            ] {
                m.insert(nr, always());
            }
        }
    }
    Ok(m)
}

/// The compiled filter of `role`: allowed calls pass, anything else traps.
pub(super) fn compile(role: Role) -> Result<BpfProgram, seccompiler::Error> {
    let filter = SeccompFilter::new(
        rules(role)?,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles_and_none_allows_exec_or_fork() {
        for role in Role::ALL {
            let r = rules(role).unwrap();
            for forbidden in [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_fork,
                libc::SYS_vfork,
                libc::SYS_ptrace,
                libc::SYS_socket,
                libc::SYS_connect,
            ] {
                assert!(!r.contains_key(&forbidden), "{role:?} allows {forbidden}");
            }
            assert!(!compile(role).unwrap().is_empty());
        }
    }
}
