//! GSI routing for the in-kernel PIC and IOAPIC, as QEMU sets it for a PC
//! (`kvm_pc_setup_irq_routing`): GSIs 0-15 reach the PIC pins of the same
//! number (2 is the cascade and has no route), GSIs 1-23 reach the IOAPIC
//! pin of the same number, and GSI 0, where KVM's PIT raises its timer
//! interrupt, reaches IOAPIC pin 2. That is where the MADT's interrupt
//! source override (ISA IRQ 0 -> GSI 2) tells the guest to look; KVM's
//! default table sends GSI 0 to pin 0.

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
};
use kvm_ioctls::VmFd;

/// Pins of the IOAPIC the MADT describes.
pub const IOAPIC_PINS: u32 = 24;

/// An interrupt controller input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chip {
    PicMaster,
    PicSlave,
    IoApic,
}

/// One route: the GSI, the chip and its pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub gsi: u32,
    pub chip: Chip,
    pub pin: u32,
}

/// The routes of a PC, as QEMU sets them.
pub fn pc_routes() -> Vec<Route> {
    let mut r = Vec::new();
    for gsi in (0..16).filter(|&g| g != 2) {
        let (chip, pin) = if gsi < 8 {
            (Chip::PicMaster, gsi)
        } else {
            (Chip::PicSlave, gsi - 8)
        };
        r.push(Route { gsi, chip, pin });
    }
    for gsi in (0..IOAPIC_PINS).filter(|&g| g != 2) {
        let pin = if gsi == 0 { 2 } else { gsi };
        r.push(Route {
            gsi,
            chip: Chip::IoApic,
            pin,
        });
    }
    r
}

/// The KVM_SET_GSI_ROUTING table for `routes`.
pub fn routing_table(routes: &[Route]) -> Result<KvmIrqRouting, vmm_sys_util::fam::Error> {
    let mut table = KvmIrqRouting::new(0)?;
    for r in routes {
        let mut e = kvm_irq_routing_entry {
            gsi: r.gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        e.u.irqchip.irqchip = match r.chip {
            Chip::PicMaster => KVM_IRQCHIP_PIC_MASTER,
            Chip::PicSlave => KVM_IRQCHIP_PIC_SLAVE,
            Chip::IoApic => KVM_IRQCHIP_IOAPIC,
        };
        e.u.irqchip.pin = r.pin;
        table.push(e)?;
    }
    Ok(table)
}

/// Installs the PC routing on `vm` (after KVM_CREATE_IRQCHIP).
pub fn set_pc_routing(vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
    let table = routing_table(&pc_routes()).map_err(|_| kvm_ioctls::Error::new(libc::ENOMEM))?;
    vm.set_gsi_routing(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(gsi: u32, chip: Chip) -> Vec<u32> {
        pc_routes()
            .into_iter()
            .filter(|r| r.gsi == gsi && r.chip == chip)
            .map(|r| r.pin)
            .collect()
    }

    #[test]
    fn routes_are_qemus() {
        assert_eq!(
            find(0, Chip::IoApic),
            vec![2],
            "the PIT's GSI 0 reaches pin 2"
        );
        assert_eq!(find(0, Chip::PicMaster), vec![0]);
        assert!(find(2, Chip::IoApic).is_empty(), "GSI 2 has no route");
        assert!(
            find(2, Chip::PicMaster).is_empty(),
            "the cascade has no route"
        );
        for gsi in [1, 3, 4, 7] {
            assert_eq!(find(gsi, Chip::PicMaster), vec![gsi]);
            assert_eq!(find(gsi, Chip::IoApic), vec![gsi]);
        }
        for gsi in 8..16 {
            assert_eq!(find(gsi, Chip::PicSlave), vec![gsi - 8]);
            assert_eq!(find(gsi, Chip::IoApic), vec![gsi]);
        }
        for gsi in 16..24 {
            assert_eq!(find(gsi, Chip::IoApic), vec![gsi]);
            assert!(find(gsi, Chip::PicMaster).is_empty() && find(gsi, Chip::PicSlave).is_empty());
        }
        // 15 PIC routes and 23 IOAPIC routes, no duplicates.
        let r = pc_routes();
        assert_eq!(r.len(), 15 + 23);
        let table = routing_table(&r).unwrap();
        assert_eq!(table.as_slice().len(), r.len());
    }

    /// Raises GSI 0 on a KVM irqchip and returns the IOAPIC's IRR.
    fn ioapic_irr_after_gsi0(routing: bool) -> u32 {
        assert!(
            std::path::Path::new("/dev/kvm").exists(),
            "this test needs /dev/kvm"
        );
        let kvm = kvm_ioctls::Kvm::new().expect("open /dev/kvm");
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        if routing {
            set_pc_routing(&vm).expect("KVM_SET_GSI_ROUTING");
        }
        vm.set_irq_line(0, true).expect("KVM_IRQ_LINE");
        let mut chip = kvm_bindings::kvm_irqchip {
            chip_id: KVM_IRQCHIP_IOAPIC,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip).expect("KVM_GET_IRQCHIP");
        // SAFETY: chip_id IOAPIC selects the ioapic member of the union.
        unsafe { chip.chip.ioapic.irr }
    }

    #[test]
    fn with_the_routing_gsi_0_raises_ioapic_pin_2() {
        // KVM's default table: pin 0 (this is what the guest got before).
        assert_eq!(ioapic_irr_after_gsi0(false) & 0b101, 0b001);
        assert_eq!(ioapic_irr_after_gsi0(true) & 0b101, 0b100);
    }
}
