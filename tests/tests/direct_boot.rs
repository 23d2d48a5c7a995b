//! Direct Linux boot with the tiny boot-protocol guest
//! (assets/guests/tiny/bootproto.asm): e820 and the command line come back
//! on COM1, serial input is echoed, reset/power-off/pause behave.

use std::time::Duration;

use vireo_tests::{count, guest, require_kvm, Console};
use vmm_engine::testing::memory::{MemoryLayout, MIB};
use vmm_engine::{StopReason, Vm, VmEvent, VmSpec, VmState};

const T: Duration = Duration::from_secs(60);

fn spec(cmdline: &str, mem_mib: u64) -> VmSpec {
    let mut s = VmSpec::linux(guest("tiny", "bootproto.bin"));
    s.memory_mib = mem_mib;
    if let vmm_engine::BootSpec::Linux(l) = &mut s.boot {
        l.cmdline = cmdline.to_string();
    }
    s
}

fn boot(s: VmSpec) -> (Vm, Console) {
    require_kvm();
    let vm = Vm::create(s).expect("creating the VM");
    let con = Console::new(vm.events());
    vm.start().expect("starting the VM");
    (vm, con)
}

#[test]
fn e820_and_cmdline_reach_the_guest() {
    let (vm, mut con) = boot(spec("console=ttyS0 noecho action=halt marker=xyzzy", 96));
    con.wait_for("e820 end", T);
    assert!(con
        .text
        .contains("cmdline: console=ttyS0 noecho action=halt marker=xyzzy\n"));
    // Every e820 entry the guest printed is the one the layout defines.
    let printed: Vec<(u64, u64, u32)> = con
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("e820: "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                u64::from_str_radix(f[0], 16).unwrap(),
                u64::from_str_radix(f[1], 16).unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, u32)> = MemoryLayout::new(96 * MIB)
        .e820_direct()
        .iter()
        .map(|e| (e.addr, e.size, e.kind))
        .collect();
    assert_eq!(printed, want);
    vm.power_off();
    assert_eq!(vm.wait(), StopReason::ForcedOff);
}

#[test]
fn serial_input_is_echoed_then_power_off() {
    let (vm, mut con) = boot(spec("action=poweroff", 64));
    let at = con.wait_for("ECHO\n", T);
    vm.serial_input(b"ping from the host.");
    con.wait_for_from("ping from the host.\nDONE", at, T);
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
    assert_eq!(vm.state(), VmState::Stopped);
}

#[test]
fn reset_with_no_reboot_stops_the_vm() {
    let mut s = spec("noecho action=reset", 64);
    s.no_reboot = true;
    let (_vm, mut con) = boot(s);
    assert_eq!(con.wait_stopped(T), StopReason::Reset);
    assert_eq!(count(&con.text, "VIREO-TINY boot"), 1);
}

#[test]
fn reset_without_no_reboot_restarts_the_guest() {
    let (vm, mut con) = boot(spec("noecho action=reset", 64));
    // Each boot prints the banner; the VM keeps rebooting.
    let first = con.wait_for("VIREO-TINY boot", T);
    let second = con.wait_for_from("VIREO-TINY boot", first + 1, T);
    con.wait_for_from("VIREO-TINY boot", second + 1, T);
    assert!(con.events.contains(&VmEvent::Reset));
    assert_eq!(vm.state(), VmState::Running);
    vm.power_off();
    assert_eq!(con.wait_stopped(T), StopReason::ForcedOff);
}

#[test]
fn pause_stops_progress_and_resume_continues() {
    let (vm, mut con) = boot(spec("noecho action=count", 64));
    con.wait_for("tick 3\n", T);
    vm.pause();
    assert_eq!(vm.state(), VmState::Paused);
    // Whatever was in flight arrives; then nothing more while paused.
    con.collect_for(Duration::from_millis(300));
    let frozen = con.text.len();
    con.collect_for(Duration::from_millis(1500));
    assert_eq!(con.text.len(), frozen, "guest made progress while paused");
    vm.resume();
    assert_eq!(vm.state(), VmState::Running);
    let last_tick = con.text.rfind("tick ").unwrap();
    con.wait_for_from("tick", last_tick + 5, T);
    assert!(con.events.contains(&VmEvent::Paused));
    assert!(con.events.contains(&VmEvent::Resumed));
    vm.power_off();
    con.wait_stopped(T);
}

/// A UI and the control socket may ask at the same moment: four threads
/// pausing (then resuming) at once pause (resume) the VM exactly once.
#[test]
fn concurrent_pause_and_resume_each_happen_once() {
    let (vm, mut con) = boot(spec("noecho action=count", 64));
    con.wait_for("tick 3\n", T);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| vm.pause());
        }
    });
    assert_eq!(vm.state(), VmState::Paused);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| vm.resume());
        }
    });
    assert_eq!(vm.state(), VmState::Running);
    vm.power_off();
    con.wait_stopped(T);
    let count = |e: &VmEvent| con.events.iter().filter(|x| *x == e).count();
    assert_eq!(count(&VmEvent::Paused), 1, "{:?}", con.events);
    assert_eq!(count(&VmEvent::Resumed), 1, "{:?}", con.events);
}

#[test]
fn two_vcpus_boot() {
    let mut s = spec("noecho action=poweroff", 64);
    s.cpus = 2;
    let (_vm, mut con) = boot(s);
    assert_eq!(con.wait_stopped(T), StopReason::PowerOff);
    assert!(con.text.contains("e820 end"));
}
