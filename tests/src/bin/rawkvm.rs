//! rawkvm: the raw-KVM baseline for `bench/run.sh`.
//!
//! The smallest program that runs one of the tiny boot-protocol guests
//! (`target/guests/tiny/portio.bin`, `portio-0.bin`, `bootproto.bin`) the way
//! Vireo's direct boot does: it opens /dev/kvm, makes a VM with the same KVM
//! configuration as Vireo (identity map and TSS addresses, in-kernel irqchip
//! and PIT), maps the same RAM layout, loads the image's 64-bit entry with
//! the engine's public boot helpers (`vmm_engine::testing::boot::{linux, x86}`), and
//! runs one vCPU on the main thread. There are no devices, no bus, no
//! threads and no channels: an exit is matched and answered in place.
//!
//! Port I/O handled:
//! - `out 0x80`: ignored (the benchmark loop);
//! - `out 0x3F8`: the byte goes to stdout at once (COM1 THR);
//! - `in 0x3FD`: 0x60 (COM1 LSR: transmitter empty, no data ready);
//! - `out 0x604` with SLP_EN (bit 13): power off, exit 0;
//! - anything else: reads return 0xFF, writes are dropped.
//!
//! Any other exit (HLT, shutdown, MMIO, an error) ends the program with
//! status 1 and a line on stderr. The time from process start to exit is
//! what the benchmark measures, so nothing is printed besides the guest's
//! output.
//!
//! Usage: `rawkvm IMAGE [MEMORY_MIB [CMDLINE]]` (defaults: 128, "").

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::VcpuExit;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_engine::testing::boot::{linux, x86};
use vmm_engine::testing::memory::{MemoryLayout, KVM_IDENTITY_MAP, KVM_TSS, MIB};

const PORT_POST: u16 = 0x80;
const COM1_THR: u16 = 0x3f8;
const COM1_LSR: u16 = 0x3fd;
const PM1A_CNT: u16 = 0x604;
const LSR_THR_EMPTY: u8 = 0x60;
const SLP_EN: u16 = 1 << 13;

fn run(image: PathBuf, mem_mib: u64, cmdline: &str) -> anyhow::Result<u8> {
    let kvm = vmm_engine::testing::open_kvm()?;
    let vm = kvm.create_vm()?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP)?;
    vm.set_tss_address(KVM_TSS as usize)?;
    vm.create_irq_chip()?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })?;

    let layout = MemoryLayout::new(mem_mib * MIB);
    let mem = layout.allocate()?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region.get_host_address(MemoryRegionAddress(0))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `mem` owns the mapping and outlives the VM fd (both live
        // until this function returns; the VM is dropped first).
        unsafe { vm.set_user_memory_region(r) }?;
    }

    let mut vcpu = vm.create_vcpu(0)?;
    vcpu.set_cpuid2(&kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?)?;
    let entry = linux::load(&mem, &layout, &image, None, cmdline, None)?;
    x86::write_tables(&mem)?;
    let sregs = vcpu.get_sregs()?;
    vcpu.set_sregs(&x86::long_mode_sregs(sregs))?;
    vcpu.set_regs(&x86::entry_regs(entry.entry, entry.boot_params))?;

    let mut out = std::io::stdout().lock();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => match port {
                PORT_POST => {}
                COM1_THR => {
                    out.write_all(data)?;
                    out.flush()?;
                }
                PM1A_CNT => {
                    let v = data
                        .iter()
                        .rev()
                        .fold(0u16, |acc, b| (acc << 8) | u16::from(*b));
                    if v & SLP_EN != 0 {
                        return Ok(0);
                    }
                }
                _ => {}
            },
            Ok(VcpuExit::IoIn(port, data)) => {
                let v = if port == COM1_LSR {
                    LSR_THR_EMPTY
                } else {
                    0xff
                };
                data.fill(v);
            }
            Ok(other) => {
                eprintln!("rawkvm: unexpected exit {other:?}");
                return Ok(1);
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                eprintln!("rawkvm: KVM_RUN failed: {e}");
                return Ok(1);
            }
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(image) = args.next().map(PathBuf::from) else {
        eprintln!("usage: rawkvm IMAGE [MEMORY_MIB [CMDLINE]]");
        return ExitCode::from(2);
    };
    let mem_mib = match args.next().map(|s| s.to_string_lossy().parse::<u64>()) {
        None => 128,
        Some(Ok(m)) if m >= 2 => m,
        Some(_) => {
            eprintln!("rawkvm: MEMORY_MIB must be a number of MiB, at least 2");
            return ExitCode::from(2);
        }
    };
    let cmdline = args
        .next()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match run(image, mem_mib, &cmdline) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rawkvm: {e:#}");
            ExitCode::from(1)
        }
    }
}
