//! x86 CPU state for entering a kernel: in 64-bit mode (identity-mapped page
//! tables for the first 4 GiB with 2 MiB pages, a flat GDT, the registers the
//! Linux boot protocol asks for), or in 32-bit protected mode with paging off
//! for the PVH entry.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMem;

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
/// Four page directories (one per GiB) follow the PDPT.
pub const PD_ADDR: u64 = 0xb000;
pub const BOOT_STACK: u64 = 0x8ff0;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT entries: null, null, 64-bit code (0x10), data (0x18), TSS (0x20),
/// 32-bit code (0x28, for the PVH entry).
const GDT: [u64; 6] = [
    0,
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
    0x00cf_9b00_0000_ffff,
];

/// Writes the GDT, an empty IDT and the page tables into guest memory.
pub fn write_tables(mem: &GuestMem) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    mem.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR))?;
    for g in 0..4u64 {
        let pd = PD_ADDR + g * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(PDPT_ADDR + g * 8))?;
        for i in 0..512u64 {
            let addr = (g << 30) | (i << 21);
            // Present, writable, 2 MiB page.
            mem.write_obj(addr | 0x83, GuestAddress(pd + i * 8))?;
        }
    }
    Ok(())
}

fn segment(selector: u16, gdt_entry: u64) -> kvm_segment {
    let base = ((gdt_entry >> 16) & 0xff_ffff) | ((gdt_entry >> 32) & 0xff00_0000);
    let mut limit = ((gdt_entry & 0xffff) | ((gdt_entry >> 32) & 0xf_0000)) as u32;
    let g = ((gdt_entry >> 55) & 1) as u8;
    if g == 1 {
        limit = (limit << 12) | 0xfff;
    }
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((gdt_entry >> 40) & 0xf) as u8,
        present: ((gdt_entry >> 47) & 1) as u8,
        dpl: ((gdt_entry >> 45) & 3) as u8,
        db: ((gdt_entry >> 54) & 1) as u8,
        s: ((gdt_entry >> 44) & 1) as u8,
        l: ((gdt_entry >> 53) & 1) as u8,
        g,
        avl: ((gdt_entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Long-mode system registers on top of what KVM reported.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment(0x10, GDT[2]);
    let data = segment(0x18, GDT[3]);
    let tss = segment(0x20, GDT[4]);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// PVH entry state: 32-bit flat protected mode, paging off (the x86/HVM
/// direct boot ABI: CR0.PE set, CR0.PG clear, CR4 = 0, EFER = 0, CS a 32-bit
/// code segment, DS/ES/SS flat data, TR a 32-bit TSS).
pub fn pvh_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment(0x28, GDT[5]);
    let data = segment(0x18, GDT[3]);
    let tss = segment(0x20, GDT[4]);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 = (sregs.cr0 | CR0_PE | CR0_ET) & !CR0_PG;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// General registers for the PVH entry: EBX = &hvm_start_info.
pub fn pvh_regs(entry: u64, start_info: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rbx: start_info,
        rflags: 0x2,
        ..Default::default()
    }
}

/// General registers for the boot protocol's 64-bit entry.
pub fn entry_regs(entry: u64, boot_params: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsi: boot_params,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rflags: 0x2,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryLayout, MIB};

    #[test]
    fn page_tables_identity_map_4g() {
        let mem = MemoryLayout::new(16 * MIB).allocate().unwrap();
        write_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPT_ADDR);
        // Walk the address 0xC0A0_0000 (3 GiB + 10 MiB).
        let va = 0xC0A0_0000u64;
        let pdpte: u64 = mem
            .read_obj(GuestAddress(PDPT_ADDR + (va >> 30) * 8))
            .unwrap();
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 511) * 8))
            .unwrap();
        assert_eq!(pde & 0x83, 0x83);
        assert_eq!(pde & !0xfff, va);
    }

    #[test]
    fn segments_decode() {
        let cs = segment(0x10, GDT[2]);
        assert_eq!((cs.l, cs.db, cs.present, cs.type_, cs.s), (1, 0, 1, 0xb, 1));
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(0x18, GDT[3]);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 0x3));
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(s.cr0 & CR0_PG, 0);
        let r = entry_regs(0x100200, 0x7000);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100200, 0x7000, 2));
    }

    #[test]
    fn pvh_state_is_flat_protected_mode() {
        let start = kvm_sregs {
            cr0: 0x6000_0010 | CR0_PG,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        };
        let s = pvh_sregs(start);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!((s.cr4, s.efer), (0, 0));
        assert_eq!(
            (s.cs.selector, s.cs.l, s.cs.db, s.cs.type_),
            (0x28, 0, 1, 0xb)
        );
        assert_eq!((s.cs.base, s.cs.limit), (0, 0xffff_ffff));
        assert_eq!((s.ss.db, s.ds.type_, s.tr.type_), (1, 0x3, 0xb));
        let r = pvh_regs(0x100_0000, 0x6000);
        assert_eq!((r.rip, r.rbx, r.rflags), (0x100_0000, 0x6000, 2));
    }
}
