//! Guest RAM layout: RAM from 0 up to the PCI hole at 3 GiB, the rest above
//! 4 GiB; the e820 map that describes it to firmware and to Linux.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The guest memory type every device uses.
pub type GuestMem = GuestMemoryMmap<()>;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// RAM below 4 GiB ends here at most; above it is the PCI/MMIO hole.
pub const LOW_RAM_END_MAX: u64 = 0xC000_0000;
/// RAM beyond what fits below the hole starts here.
pub const HIGH_RAM_START: u64 = 4 * GIB;
/// The 32-bit PCI MMIO window (up to the IOAPIC).
pub const PCI_HOLE_START: u64 = LOW_RAM_END_MAX;
pub const PCI_MMIO_END: u64 = 0xFEC0_0000;
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// KVM's identity-map page and TSS (Intel needs them); reserved in e820.
pub const KVM_IDENTITY_MAP: u64 = 0xFEFF_C000;
pub const KVM_TSS: u64 = KVM_IDENTITY_MAP + 0x1000;
/// Legacy video window and BIOS area.
pub const EBDA_START: u64 = 0x9_FC00;
pub const VGA_WINDOW_START: u64 = 0xA_0000;
pub const VGA_WINDOW_END: u64 = 0xC_0000;
pub const BIOS_AREA_START: u64 = 0xE_0000;
pub const ONE_MIB: u64 = 0x10_0000;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
pub const E820_ACPI: u32 = 3;

/// One KVM memory slot over guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamSlot {
    pub slot: u32,
    pub gpa: u64,
    pub size: u64,
}

/// The i440FX PAM segments, in PAM order: 0xF0000 (64 KiB), then
/// 0xC0000..0xEFFFF in 16 KiB pieces.
pub const PAM_SEGMENTS: [(u64, u64); 13] = [
    (0xf0000, 0x10000),
    (0xc0000, 0x4000),
    (0xc4000, 0x4000),
    (0xc8000, 0x4000),
    (0xcc000, 0x4000),
    (0xd0000, 0x4000),
    (0xd4000, 0x4000),
    (0xd8000, 0x4000),
    (0xdc000, 0x4000),
    (0xe0000, 0x4000),
    (0xe4000, 0x4000),
    (0xe8000, 0x4000),
    (0xec000, 0x4000),
];
/// KVM slot of PAM segment i is PAM_SLOT_BASE + i.
pub const PAM_SLOT_BASE: u32 = 1;
pub const LOW_RAM_SLOT: u32 = 14;
pub const HIGH_RAM_SLOT: u32 = 15;
pub const BIOS_SLOT: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Where guest RAM lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Bytes of RAM below 4 GiB (from 0).
    pub low: u64,
    /// Bytes of RAM from 4 GiB.
    pub high: u64,
}

impl MemoryLayout {
    pub fn new(total_bytes: u64) -> Self {
        let low = total_bytes.min(LOW_RAM_END_MAX);
        MemoryLayout {
            low,
            high: total_bytes - low,
        }
    }

    pub fn total(&self) -> u64 {
        self.low + self.high
    }

    /// The (start, size) ranges of RAM. The legacy VGA window
    /// 0xA0000-0xBFFFF is left out so that it traps to the VGA device.
    pub fn ranges(&self) -> Vec<(GuestAddress, usize)> {
        let mut r = vec![(GuestAddress(0), self.low.min(VGA_WINDOW_START) as usize)];
        if self.low > VGA_WINDOW_END {
            r.push((
                GuestAddress(VGA_WINDOW_END),
                (self.low - VGA_WINDOW_END) as usize,
            ));
        }
        if self.high > 0 {
            r.push((GuestAddress(HIGH_RAM_START), self.high as usize));
        }
        r
    }

    /// The e820 map for a direct Linux boot: conventional memory below the
    /// EBDA, the BIOS area reserved (ACPI tables live there), RAM from 1 MiB,
    /// RAM above 4 GiB.
    pub fn e820_direct(&self) -> Vec<E820Entry> {
        let mut v = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM,
            },
            E820Entry {
                addr: EBDA_START,
                size: VGA_WINDOW_START - EBDA_START,
                kind: E820_RESERVED,
            },
            E820Entry {
                addr: BIOS_AREA_START,
                size: ONE_MIB - BIOS_AREA_START,
                kind: E820_RESERVED,
            },
        ];
        if self.low > ONE_MIB {
            v.push(E820Entry {
                addr: ONE_MIB,
                size: self.low - ONE_MIB,
                kind: E820_RAM,
            });
        }
        v.push(E820Entry {
            addr: KVM_IDENTITY_MAP,
            size: 0x4000,
            kind: E820_RESERVED,
        });
        if self.high > 0 {
            v.push(E820Entry {
                addr: HIGH_RAM_START,
                size: self.high,
                kind: E820_RAM,
            });
        }
        v
    }

    /// The e820 map handed to SeaBIOS through fw_cfg "etc/e820": just the
    /// RAM and the KVM reservation; the firmware carves out its own areas.
    pub fn e820_firmware(&self) -> Vec<E820Entry> {
        let mut v = vec![
            E820Entry {
                addr: 0,
                size: self.low,
                kind: E820_RAM,
            },
            E820Entry {
                addr: KVM_IDENTITY_MAP,
                size: 0x4000,
                kind: E820_RESERVED,
            },
        ];
        if self.high > 0 {
            v.push(E820Entry {
                addr: HIGH_RAM_START,
                size: self.high,
                kind: E820_RAM,
            });
        }
        v
    }

    /// The KVM memory slots over guest RAM. The BIOS area 0xC0000-0xFFFFF
    /// gets one slot per i440FX PAM segment, so that each can be made
    /// read-only on its own when the firmware locks its shadow.
    pub fn kvm_slots(&self) -> Vec<RamSlot> {
        let mut v = vec![RamSlot {
            slot: 0,
            gpa: 0,
            size: self.low.min(VGA_WINDOW_START),
        }];
        for (i, (gpa, size)) in PAM_SEGMENTS.iter().enumerate() {
            if gpa + size <= self.low {
                v.push(RamSlot {
                    slot: PAM_SLOT_BASE + i as u32,
                    gpa: *gpa,
                    size: *size,
                });
            }
        }
        if self.low > ONE_MIB {
            v.push(RamSlot {
                slot: LOW_RAM_SLOT,
                gpa: ONE_MIB,
                size: self.low - ONE_MIB,
            });
        }
        if self.high > 0 {
            v.push(RamSlot {
                slot: HIGH_RAM_SLOT,
                gpa: HIGH_RAM_START,
                size: self.high,
            });
        }
        v
    }

    /// Allocates the guest RAM.
    pub fn allocate(&self) -> Result<GuestMem, vm_memory::mmap::FromRangesError> {
        GuestMemoryMmap::from_ranges(&self.ranges())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_guest_is_all_low() {
        let l = MemoryLayout::new(512 * MIB);
        assert_eq!(l.low, 512 * MIB);
        assert_eq!(l.high, 0);
        assert_eq!(
            l.ranges(),
            vec![
                (GuestAddress(0), 0xa0000),
                (GuestAddress(0xc0000), 512 * MIB as usize - 0xc0000)
            ]
        );
        let e = l.e820_direct();
        assert_eq!(
            e[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            }
        );
        let ram: u64 = e
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything but the EBDA..1 MiB hole is usable RAM.
        assert_eq!(ram, 512 * MIB - (ONE_MIB - EBDA_START));
        assert!(e.iter().all(|x| x.addr + x.size <= HIGH_RAM_START));
    }

    #[test]
    fn big_guest_splits_around_the_hole() {
        let l = MemoryLayout::new(6 * GIB);
        assert_eq!(l.low, 3 * GIB);
        assert_eq!(l.high, 3 * GIB);
        assert_eq!(
            l.ranges(),
            vec![
                (GuestAddress(0), 0xa0000),
                (GuestAddress(0xc0000), 3 * GIB as usize - 0xc0000),
                (GuestAddress(4 * GIB), 3 * GIB as usize)
            ]
        );
        let e = l.e820_direct();
        let last = e.last().unwrap();
        assert_eq!(
            (last.addr, last.size, last.kind),
            (4 * GIB, 3 * GIB, E820_RAM)
        );
        // No RAM entry overlaps the PCI hole.
        for x in e.iter().filter(|x| x.kind == E820_RAM) {
            assert!(x.addr + x.size <= PCI_HOLE_START || x.addr >= HIGH_RAM_START);
        }
        let f = l.e820_firmware();
        assert_eq!(f[0].size, 3 * GIB);
        assert_eq!(f.iter().filter(|x| x.kind == E820_RAM).count(), 2);
    }

    #[test]
    fn kvm_slots_cover_ram_and_split_the_bios_area() {
        for total in [64 * MIB, 6 * GIB] {
            let l = MemoryLayout::new(total);
            let slots = l.kvm_slots();
            // Slots are disjoint, cover exactly the RAM ranges, and the
            // PAM segments are slots of their own.
            let covered: u64 = slots.iter().map(|s| s.size).sum();
            let ram: u64 = l.ranges().iter().map(|r| r.1 as u64).sum();
            assert_eq!(covered, ram);
            let mut sorted = slots.clone();
            sorted.sort_by_key(|s| s.gpa);
            for w in sorted.windows(2) {
                assert!(w[0].gpa + w[0].size <= w[1].gpa);
            }
            for (i, (gpa, size)) in PAM_SEGMENTS.iter().enumerate() {
                let s = slots
                    .iter()
                    .find(|s| s.slot == PAM_SLOT_BASE + i as u32)
                    .unwrap();
                assert_eq!((s.gpa, s.size), (*gpa, *size));
            }
            let mut ids: Vec<u32> = slots.iter().map(|s| s.slot).collect();
            ids.dedup();
            assert_eq!(ids.len(), slots.len());
        }
    }

    #[test]
    fn allocation_matches_layout() {
        let l = MemoryLayout::new(64 * MIB);
        let m = l.allocate().unwrap();
        assert_eq!(m.num_regions(), 2);
        m.write_obj(0xdead_beefu32, GuestAddress(64 * MIB - 4))
            .unwrap();
        assert!(m.write_obj(1u8, GuestAddress(64 * MIB)).is_err());
        // The VGA window is not RAM: it traps to the device.
        assert!(m.write_obj(1u8, GuestAddress(0xb8000)).is_err());
    }
}
