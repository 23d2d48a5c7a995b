//! The seed's topology with Linux guests: inside a network namespace this
//! test creates (bridge br100 at 10.0.0.1/24), three busybox VMs at
//! 10.0.0.2-4 on virtio-net TAPs in br100. Needs hardware KVM (ignored and
//! reported as not run elsewhere) and root.
//!
//!     cargo test -p vireo-tests --test linux_network -- --ignored --test-threads 1

use std::process::Command;
use std::time::Duration;

use vireo_tests::{guest, require_hardware_kvm, require_kvm, Console, Netns};
use vmm_engine::{BootSpec, NicSpec, StopReason, Vm, VmSpec};

const T: Duration = Duration::from_secs(180);

fn vm_spec(n: u8) -> VmSpec {
    let mut s = VmSpec::linux(guest("linux", "vmlinuz"));
    s.name = format!("net{n}");
    s.memory_mib = 256;
    if let BootSpec::Linux(l) = &mut s.boot {
        l.initrd = Some(guest("linux", "initramfs.img"));
        l.cmdline = format!("console=ttyS0 quiet vireo.ip=10.0.0.{n}/24");
    }
    s.nics.push(NicSpec {
        bridge: "br100".into(),
        mac: format!("52:54:00:00:00:{n:02x}"),
    });
    s
}

#[test]
#[ignore = "needs hardware KVM (VT-x/AMD-V) and root; run: cargo test -p vireo-tests --test linux_network -- --ignored"]
fn three_vms_on_a_bridge_ping_and_move_64_mib() {
    require_kvm();
    require_hardware_kvm();
    let ns = Netns::create("vireo-linux");
    let vms: Vec<Vm> = ns.run(|| {
        (2..=4u8)
            .map(|n| {
                let vm = Vm::create(vm_spec(n)).expect("create VM");
                vm.start().expect("start VM");
                vm
            })
            .collect()
    });
    let mut cons: Vec<Console> = vms.iter().map(|v| Console::new(v.events())).collect();
    for (i, c) in cons.iter_mut().enumerate() {
        c.wait_for(&format!("VIREO-LINUX-IP eth0 10.0.0.{}/24", i + 2), T);
        c.wait_for("VIREO-LINUX-UP", T);
    }
    // The namespace reaches every VM.
    for n in 2..=4 {
        assert!(
            ns.ping(&format!("10.0.0.{n}"), 2, 3) > 0,
            "namespace cannot ping 10.0.0.{n}"
        );
    }
    // The VMs reach each other (the marker is computed so the echoed
    // command line does not match it).
    for (i, target) in [(0usize, 3u8), (1, 4), (2, 2)] {
        let at = cons[i].text.len();
        vms[i].serial_input(
            format!("ping -c 2 -W 3 10.0.0.{target} >/dev/null && echo PING-$((40+2))\n")
                .as_bytes(),
        );
        cons[i].wait_for_from("PING-42", at, T);
    }
    // 64 MiB over TCP from VM 10.0.0.2 to 10.0.0.3 arrives byte-exact.
    let at = cons[1].text.len();
    vms[1].serial_input(
        b"nc -l -p 5000 | md5sum > /tmp/rx.md5; echo RX-$((40+2)) $(cat /tmp/rx.md5)\n",
    );
    std::thread::sleep(Duration::from_secs(2));
    vms[0].serial_input(b"dd if=/dev/zero bs=1M count=64 2>/dev/null | nc -w 5 10.0.0.3 5000\n");
    cons[1].wait_for_from("RX-42", at, T);
    // The receiver's md5 equals that of 64 MiB of zeros.
    let zeros_md5 = {
        let out = Command::new("sh")
            .args(["-c", "head -c 67108864 /dev/zero | md5sum"])
            .output()
            .expect("md5sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    cons[1].wait_for_from(&zeros_md5, at, T);
    for (vm, c) in vms.iter().zip(cons.iter_mut()) {
        vm.serial_input(b"poweroff -f\n");
        assert_eq!(c.wait_stopped(T), StopReason::PowerOff);
    }
}
