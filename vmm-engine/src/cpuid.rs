//! CPUID and local-APIC set-up per vCPU.

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;

/// KVM's supported CPUID with this vCPU's APIC id and the CPU count.
pub fn for_vcpu(supported: &CpuId, index: u32, cpus: u32) -> CpuId {
    let mut c = supported.clone();
    for e in c.as_mut_slice().iter_mut() {
        match e.function {
            1 => {
                // EBX[31:24] initial APIC id, [23:16] logical processors.
                e.ebx = (e.ebx & 0x0000_ffff) | (index << 24) | ((cpus.min(255)) << 16);
                if cpus > 1 {
                    e.edx |= 1 << 28; // HTT: the count above is valid
                }
                e.ecx |= 1 << 31; // running under a hypervisor
            }
            0xb | 0x1f => {
                e.edx = index;
            }
            _ => {}
        }
    }
    c
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn reg(regs: &[std::os::raw::c_char], off: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = regs[off + i] as u8;
    }
    u32::from_le_bytes(b)
}

fn set_reg(regs: &mut [std::os::raw::c_char], off: usize, v: u32) {
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        regs[off + i] = *x as std::os::raw::c_char;
    }
}

fn with_mode(v: u32, mode: u32) -> u32 {
    (v & !0x700) | (mode << 8)
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as firmware would leave them; only
/// needed when no firmware runs (direct Linux boot).
pub fn set_lint(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut l = vcpu.get_lapic()?;
    let v0 = reg(&l.regs, APIC_LVT0);
    set_reg(&mut l.regs, APIC_LVT0, with_mode(v0, APIC_MODE_EXTINT));
    let v1 = reg(&l.regs, APIC_LVT1);
    set_reg(&mut l.regs, APIC_LVT1, with_mode(v1, APIC_MODE_NMI));
    vcpu.set_lapic(&l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode_bits() {
        assert_eq!(with_mode(0x0001_0000, APIC_MODE_EXTINT), 0x0001_0700);
        assert_eq!(with_mode(0x700, APIC_MODE_NMI), 0x400);
        let mut regs = [0 as std::os::raw::c_char; 1024];
        set_reg(&mut regs, APIC_LVT1, 0xdead_beef);
        assert_eq!(reg(&regs, APIC_LVT1), 0xdead_beef);
    }

    #[test]
    fn apic_ids_per_vcpu() {
        let entry = kvm_bindings::kvm_cpuid_entry2 {
            function: 1,
            ebx: 0xffff_0800,
            ..Default::default()
        };
        let leaf_b = kvm_bindings::kvm_cpuid_entry2 {
            function: 0xb,
            ..Default::default()
        };
        let c = CpuId::from_entries(&[entry, leaf_b]).unwrap();
        let out = for_vcpu(&c, 3, 4);
        let s = out.as_slice();
        assert_eq!(s[0].ebx >> 24, 3);
        assert_eq!((s[0].ebx >> 16) & 0xff, 4);
        assert_eq!(s[0].ebx & 0xffff, 0x0800);
        assert_ne!(s[0].edx & (1 << 28), 0);
        assert_eq!(s[1].edx, 3);
    }
}
