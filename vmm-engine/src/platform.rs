//! The PC itself: every device of an i440FX/PIIX3 machine put on the port
//! and MMIO buses, with its interrupt lines, plus what firmware or a direct
//! kernel boot needs to find them (fw_cfg, CMOS, ACPI tables).
//!
//! | where | what |
//! |---|---|
//! | 0x60/0x64, IRQ 1/12 | i8042 keyboard + mouse, reset line |
//! | 0x70/0x71, IRQ 8 | CMOS RTC |
//! | 0x80 | POST port |
//! | 0x92 | System Control Port A (fast reset) |
//! | 0x1CE/0x1CF, 0x3B0-0x3DF, 0xA0000 | std VGA + Bochs VBE |
//! | 0x1F0/0x3F6, 0x170/0x376, IRQ 14/15 | PIIX IDE (legacy ports) |
//! | 0x3F8, IRQ 4 | COM1 |
//! | 0x402 | SeaBIOS debug console |
//! | 0x510 | fw_cfg (+ DMA at 0x514) |
//! | 0x600, SCI IRQ 9 | ACPI PM1 + timer |
//! | 0xCF8-0xCFF | PCI config (+ reset control at 0xCF9) |
//! | PCI 00:00.0 / 00:01.0 / 00:01.1 / 00:02.0 | i440FX, PIIX3, IDE, VGA |

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{Bytes, GuestAddress};

use crate::acpi::{self, AcpiConfig, AcpiTables};
use crate::block;
use crate::bus::{Bus, SharedDevice};
use crate::devices::acpi_pm::{AcpiPm, ACPI_PM_BASE, ACPI_PM_LEN, SCI_IRQ};
use crate::devices::fw_cfg::{
    boot_path_ide, boot_path_pci, FwCfg, FW_CFG_PORT_BASE, FW_CFG_PORT_LEN,
};
use crate::devices::i8042::{I8042Port, I8042};
use crate::devices::ide::{Channel, Ide, Slot, DEVFN as IDE_DEVFN, PRIMARY_IRQ, SECONDARY_IRQ};
use crate::devices::legacy::{DebugConsole, PostPort, DEBUGCON_PORT, POST_PORT};
use crate::devices::pci::i440fx::{I440fx, PamCallback, PamMode, I440FX_DEVFN};
use crate::devices::pci::piix3::{
    Piix3, ResetControl, SystemControlA, PIIX3_DEVFN, SYSTEM_CONTROL_A_PORT,
};
use crate::devices::pci::root::{PciIntxRouter, PciRoot, PCI_CONFIG_LEN, PCI_CONFIG_PORT};
use crate::devices::pci::{PciConfig, PciDevice};
use crate::devices::rtc::{BootDevice, Rtc, RtcTimer, RTC_PORT};
use crate::devices::serial::{SerialDevice, SerialSink, COM1_BASE, COM1_IRQ};
use crate::devices::vga::{StdVga, VgaHandle, VramMapper, VRAM_SIZE};
use crate::devices::virtio::blk::Blk;
use crate::devices::virtio::event_loop::EventLoop;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::pci::VirtioPciDevice;
use crate::devices::virtio::{MsiSink, VirtioBackend};
use crate::devices::{IrqLine, PowerHandle};
use crate::memory::{
    GuestMem, MemoryLayout, RamSlot, BIOS_AREA_START, ONE_MIB, PAM_SLOT_BASE, PCI_HOLE_START,
    PCI_MMIO_END,
};
use crate::spec::{BootOrder, BootSpec, DiskFormat, DiskInterface, VmSpec};
use crate::vm::{delete_slot, set_ram_slot, KvmIrq, VmError};
use kvm_ioctls::{IoEventAddress, NoDatamatch};
use vmm_sys_util::eventfd::EventFd;

/// Debian's VGA BIOS for the std VGA.
pub const DEFAULT_VGA_BIOS: &str = "/usr/share/seabios/vgabios-stdvga.bin";
/// The VGA's PCI slot (00:02.0), as on QEMU's pc.
pub const VGA_DEVFN: u8 = 0x10;
/// KVM memory slot of the VGA framebuffer (RAM and BIOS use the ones below).
pub const VRAM_SLOT: u32 = 20;
/// The first PCI slot for virtio devices (00:03.0 on).
pub const FIRST_VIRTIO_SLOT: u8 = 3;
/// PIRQ A-D routing SeaBIOS programs, and the ACPI _PRT describes.
pub const PCI_IRQS: [u8; 4] = [10, 10, 11, 11];

/// Handles to the devices the rest of the engine talks to.
pub struct Platform {
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub acpi_pm: Arc<Mutex<AcpiPm>>,
    pub vga: VgaHandle,
    pub pci_root: Arc<Mutex<PciRoot>>,
    pub ide: Arc<Mutex<Ide>>,
    _rtc_timer: Option<RtcTimer>,
    /// The I/O thread serving virtio backends; dropped after the devices.
    _io_loop: EventLoop,
}

impl Platform {
    /// Breaks the reference cycle between the PCI root and the buses.
    pub fn teardown(&self, io_bus: &Bus) {
        self.pci_root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let _ = io_bus.remove(PCI_CONFIG_PORT);
    }
}

/// Honours the i440FX PAM registers: a segment the firmware makes read-only
/// becomes a read-only KVM slot (guest writes to it are dropped); the other
/// modes map the shadow RAM read-write. ("Off" would send accesses to the
/// ROM; the shadow holds the ROM's own bytes until the firmware unlocks it,
/// so RAM stands in for it.)
fn pam_handler(vm: Arc<VmFd>, mem: GuestMem, layout: &MemoryLayout) -> PamCallback {
    let slots: Vec<RamSlot> = layout
        .kvm_slots()
        .into_iter()
        .filter(|s| (PAM_SLOT_BASE..PAM_SLOT_BASE + 13).contains(&s.slot))
        .collect();
    let applied = Mutex::new([false; 13]);
    Box::new(move |modes: &[PamMode; 13]| {
        let mut applied = applied.lock().unwrap_or_else(|e| e.into_inner());
        for (i, mode) in modes.iter().enumerate() {
            let ro = *mode == PamMode::ReadOnly;
            if applied[i] == ro {
                continue;
            }
            let Some(slot) = slots.iter().find(|s| s.slot == PAM_SLOT_BASE + i as u32) else {
                continue;
            };
            let res = delete_slot(&vm, slot.slot).and_then(|_| set_ram_slot(&vm, &mem, *slot, ro));
            match res {
                Ok(()) => applied[i] = ro,
                Err(e) => log::warn!("PAM segment {:#x}: {e}", slot.gpa),
            }
        }
    })
}

/// A virtio-pci device whose queue doorbells are KVM ioeventfds: a guest's
/// notify write signals the I/O thread inside KVM, without an exit to the
/// vCPU thread. Re-registered whenever the guest moves BAR4.
struct IoeventVirtio {
    inner: VirtioPciDevice,
    vm: Arc<VmFd>,
    registered: Vec<(u64, EventFd)>,
}

const VIRTIO_NOTIFY_BAR: usize = 4;

impl IoeventVirtio {
    fn unregister(&mut self) {
        for (addr, fd) in self.registered.drain(..) {
            if let Err(e) =
                self.vm
                    .unregister_ioevent(&fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            {
                log::warn!("KVM_IOEVENTFD unregister at {addr:#x}: {e}");
            }
        }
    }
}

impl PciDevice for IoeventVirtio {
    fn config(&self) -> &PciConfig {
        self.inner.config()
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        self.inner.config_mut()
    }
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.inner.config_read(offset, data)
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) -> bool {
        self.inner.config_write(offset, data)
    }
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        self.inner.bar_read(bar, offset, data)
    }
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        self.inner.bar_write(bar, offset, data)
    }
    fn bar_remapped(&mut self, bar: usize, addr: Option<u64>) {
        self.inner.bar_remapped(bar, addr);
        if bar != VIRTIO_NOTIFY_BAR {
            return;
        }
        self.unregister();
        let Some(base) = addr else { return };
        for (off, q) in self.inner.ioevents() {
            let Some(a) = base.checked_add(off) else {
                continue;
            };
            let fd = match self.inner.queue_eventfd(q) {
                Ok(fd) => fd,
                Err(e) => {
                    log::warn!("virtio queue {q} eventfd: {e}");
                    continue;
                }
            };
            match self
                .vm
                .register_ioevent(&fd, &IoEventAddress::Mmio(a), NoDatamatch)
            {
                Ok(()) => self.registered.push((a, fd)),
                // Without it the doorbell still works through the MMIO exit.
                Err(e) => log::warn!("KVM_IOEVENTFD at {a:#x}: {e}"),
            }
        }
    }
    fn bar_is_ram(&self, bar: usize) -> bool {
        self.inner.bar_is_ram(bar)
    }
    fn rom(&self) -> Option<&[u8]> {
        self.inner.rom()
    }
}

impl Drop for IoeventVirtio {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// MSI-X messages from virtio devices, delivered with KVM_SIGNAL_MSI.
struct KvmMsi(Arc<VmFd>);

impl MsiSink for KvmMsi {
    fn signal(&self, addr: u64, data: u32) {
        let msi = kvm_bindings::kvm_msi {
            address_lo: addr as u32,
            address_hi: (addr >> 32) as u32,
            data,
            ..Default::default()
        };
        if let Err(e) = self.0.signal_msi(msi) {
            crate::guest_warn!("KVM_SIGNAL_MSI failed: {e}");
        }
    }
}

/// The framebuffer as a KVM slot with dirty logging.
struct KvmVram {
    vm: Arc<VmFd>,
    host: u64,
    mapped: Mutex<Option<u64>>,
}

impl VramMapper for KvmVram {
    fn map(&self, guest_addr: Option<u64>) {
        let mut cur = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        if *cur == guest_addr {
            return;
        }
        if let Some(old) = cur.take() {
            let r = kvm_userspace_memory_region {
                slot: VRAM_SLOT,
                flags: 0,
                guest_phys_addr: old,
                memory_size: 0,
                userspace_addr: self.host,
            };
            // SAFETY: deleting a slot we created.
            if let Err(e) = unsafe { self.vm.set_user_memory_region(r) } {
                log::warn!("unmapping VGA memory failed: {e}");
            }
        }
        if let Some(addr) = guest_addr {
            // A guest-programmed BAR outside the PCI hole is refused.
            let in_window = addr >= PCI_HOLE_START
                && addr
                    .checked_add(VRAM_SIZE as u64)
                    .is_some_and(|end| end <= PCI_MMIO_END);
            if !in_window {
                log::warn!(
                    "VGA framebuffer BAR at {addr:#x} is outside the PCI window; not mapped"
                );
                return;
            }
            let r = kvm_userspace_memory_region {
                slot: VRAM_SLOT,
                flags: KVM_MEM_LOG_DIRTY_PAGES,
                guest_phys_addr: addr,
                memory_size: VRAM_SIZE as u64,
                userspace_addr: self.host,
            };
            // SAFETY: the VRAM mapping lives as long as the VGA device, which
            // the machine keeps until the VM fd is closed.
            match unsafe { self.vm.set_user_memory_region(r) } {
                Ok(()) => *cur = Some(addr),
                Err(e) => log::warn!("mapping VGA memory at {addr:#x} failed: {e}"),
            }
        }
    }

    fn dirty_pages(&self) -> Option<Vec<u64>> {
        let cur = *self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        cur?;
        self.vm.get_dirty_log(VRAM_SLOT, VRAM_SIZE).ok()
    }
}

fn insert(bus: &Bus, dev: SharedDevice, base: u64, len: u64) -> Result<(), VmError> {
    bus.insert(dev, base, len)
        .map_err(|e| VmError::Device(format!("{e}")))
}

/// Everything the platform builder needs.
pub struct PlatformCtx<'a> {
    pub spec: &'a VmSpec,
    pub vm_fd: &'a Arc<VmFd>,
    pub mem: &'a GuestMem,
    pub layout: &'a MemoryLayout,
    pub io_bus: &'a Bus,
    pub mmio_bus: &'a Bus,
    pub power: PowerHandle,
    pub serial_sink: Box<dyn SerialSink>,
    /// The screen the VGA draws into (outlives a reset).
    pub display: crate::display::Display,
}

/// Builds the PC. Returns the platform and, for direct boot, the RSDP
/// address of the ACPI tables it laid out in guest memory.
pub fn build(ctx: PlatformCtx) -> Result<(Platform, Option<u64>), VmError> {
    let PlatformCtx {
        spec,
        vm_fd,
        mem,
        layout,
        io_bus,
        mmio_bus,
        power,
        serial_sink,
        display,
    } = ctx;
    let irq = |gsi: u32| -> Arc<dyn IrqLine> { KvmIrq::new(vm_fd.clone(), gsi) };
    let firmware = matches!(spec.boot, BootSpec::Firmware(_));

    // COM1.
    let serial = Arc::new(Mutex::new(SerialDevice::new(irq(COM1_IRQ), serial_sink)));
    insert(io_bus, serial.clone(), COM1_BASE, 8)?;

    // Debug console (SeaBIOS log) and POST port.
    let log: Option<Box<dyn Write + Send>> = match &spec.firmware_log {
        Some(p) => Some(Box::new(File::create(p).map_err(|e| {
            VmError::InvalidSpec(format!(
                "cannot write the firmware log {}: {e}",
                p.display()
            ))
        })?)),
        None => None,
    };
    insert(
        io_bus,
        Arc::new(Mutex::new(DebugConsole::new(log))),
        DEBUGCON_PORT,
        1,
    )?;
    insert(
        io_bus,
        Arc::new(Mutex::new(PostPort::default())),
        POST_PORT,
        1,
    )?;

    // i8042.
    let i8042 = I8042::new(irq(1), irq(12), power.clone());
    insert(
        io_bus,
        Arc::new(Mutex::new(I8042Port::data(&i8042))),
        0x60,
        1,
    )?;
    insert(
        io_bus,
        Arc::new(Mutex::new(I8042Port::command(&i8042))),
        0x64,
        1,
    )?;
    insert(
        io_bus,
        Arc::new(Mutex::new(SystemControlA::new(power.clone()))),
        SYSTEM_CONTROL_A_PORT,
        1,
    )?;

    // RTC / CMOS.
    let rtc = Arc::new(Mutex::new(Rtc::new(irq(8))));
    {
        let mut r = rtc.lock().unwrap_or_else(|e| e.into_inner());
        r.set_memory_size(layout.low, layout.high);
        r.set_cpus(spec.cpus);
        let order = match &spec.boot {
            BootSpec::Firmware(f) if f.order == BootOrder::DiskFirst => {
                vec![BootDevice::Disk, BootDevice::Cdrom]
            }
            _ => vec![BootDevice::Cdrom, BootDevice::Disk],
        };
        r.set_boot_order(&order);
    }
    insert(io_bus, rtc.clone(), RTC_PORT, 2)?;
    let rtc_timer = Rtc::start_timer(rtc.clone())
        .map_err(|e| VmError::Device(format!("cannot start the RTC timer: {e}")))?;

    // ACPI PM.
    let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(irq(SCI_IRQ), power.clone())));
    insert(io_bus, acpi_pm.clone(), ACPI_PM_BASE, ACPI_PM_LEN)?;

    // PCI.
    let router = {
        let vm = vm_fd.clone();
        PciIntxRouter::new(Arc::new(move |gsi: u32, level: bool| {
            if let Err(e) = vm.set_irq_line(gsi, level) {
                log::warn!("KVM_IRQ_LINE {gsi} failed: {e}");
            }
        }))
    };
    let pci_root = Arc::new(Mutex::new(PciRoot::new(io_bus.clone(), mmio_bus.clone())));
    {
        let mut root = pci_root.lock().unwrap_or_else(|e| e.into_inner());
        root.set_port_cf9(Arc::new(Mutex::new(ResetControl::new(power.clone()))));
        let mut host = I440fx::new();
        host.set_pam_callback(pam_handler(vm_fd.clone(), mem.clone(), layout));
        root.add_device(I440FX_DEVFN, Arc::new(Mutex::new(host)));
        root.add_device(
            PIIX3_DEVFN,
            Arc::new(Mutex::new(Piix3::new(router.clone()))),
        );
    }
    insert(io_bus, pci_root.clone(), PCI_CONFIG_PORT, PCI_CONFIG_LEN)?;

    // IDE: disks on the primary channel, the CD on the secondary master.
    let mut ide = Ide::new(mem.clone(), irq(PRIMARY_IRQ), irq(SECONDARY_IRQ));
    let ide_disks: Vec<_> = spec
        .disks
        .iter()
        .filter(|d| d.interface == DiskInterface::Ide)
        .collect();
    let slots = [
        (Channel::Primary, Slot::Master),
        (Channel::Primary, Slot::Slave),
        (Channel::Secondary, Slot::Slave),
    ];
    if ide_disks.len() > slots.len() {
        return Err(VmError::InvalidSpec(format!(
            "{} IDE disks given; the IDE controller holds at most {} besides the CD-ROM (attach more disks as virtio)",
            ide_disks.len(),
            slots.len()
        )));
    }
    let mut disk_boot_paths = Vec::new();
    for (d, (ch, sl)) in ide_disks.iter().zip(slots.iter()) {
        let img = block::open(&d.path, d.format, d.readonly)
            .map_err(|e| VmError::InvalidSpec(format!("disk {}: {e}", d.path.display())))?;
        ide.attach_disk(*ch, *sl, img);
        disk_boot_paths.push(boot_path_ide(
            (*ch == Channel::Secondary) as u8,
            (*sl == Slot::Slave) as u8,
        ));
    }
    let mut cd_boot_path = None;
    if let Some(iso) = &spec.cdrom {
        crate::check::check_iso(iso).map_err(|p| VmError::Spec(vec![p]))?;
        let img = block::open(iso, DiskFormat::Raw, true)
            .map_err(|e| VmError::InvalidSpec(format!("CD-ROM image {}: {e}", iso.display())))?;
        ide.attach_cdrom(Channel::Secondary, Slot::Master, Some(img));
        cd_boot_path = Some(boot_path_ide(1, 0));
    } else {
        ide.attach_cdrom(Channel::Secondary, Slot::Master, None);
    }
    let ide = Arc::new(Mutex::new(ide));
    for (base, len, dev) in Ide::legacy_ports(&ide) {
        insert(io_bus, dev, base, len)?;
    }
    pci_root
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add_device(IDE_DEVFN, ide.clone() as Arc<Mutex<dyn PciDevice>>);

    // virtio-pci: disks (if=virtio) then NICs, from slot 3 on.
    let io_loop = EventLoop::start("vireo-io")
        .map_err(|e| VmError::Device(format!("cannot start the I/O thread: {e}")))?;
    let msi: Arc<dyn MsiSink> = Arc::new(KvmMsi(vm_fd.clone()));
    let mut next_slot: u8 = FIRST_VIRTIO_SLOT;
    let mut virtio_boot_paths = Vec::new();
    let mut add_virtio = |backend: Box<dyn VirtioBackend>, what: &str| -> Result<u8, VmError> {
        if next_slot > 31 {
            return Err(VmError::InvalidSpec(format!(
                "too many virtio devices: no PCI slot left for {what}"
            )));
        }
        let slot = next_slot;
        next_slot += 1;
        let intx = router.irq_line_for(slot, 1);
        let dev = VirtioPciDevice::new(backend, mem.clone(), msi.clone(), intx, io_loop.handle())
            .map_err(|e| VmError::Device(format!("{what}: {e}")))?;
        let dev = IoeventVirtio {
            inner: dev,
            vm: vm_fd.clone(),
            registered: Vec::new(),
        };
        pci_root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_device(slot << 3, Arc::new(Mutex::new(dev)));
        Ok(slot)
    };
    for (i, d) in spec
        .disks
        .iter()
        .filter(|d| d.interface == DiskInterface::Virtio)
        .enumerate()
    {
        let img = block::open(&d.path, d.format, d.readonly)
            .map_err(|e| VmError::InvalidSpec(format!("disk {}: {e}", d.path.display())))?;
        let serial = format!("vireo-vd{i}");
        let slot = add_virtio(Box::new(Blk::new(img, &serial)), "virtio-blk")?;
        virtio_boot_paths.push(boot_path_pci("scsi", slot, 0));
    }
    for nic in &spec.nics {
        let mac = if nic.mac.is_empty() {
            crate::net::random_mac()
        } else {
            crate::net::parse_mac(&nic.mac).ok_or_else(|| {
                VmError::InvalidSpec(format!(
                    "MAC address {:?} is not valid: use six hex pairs like 52:54:00:12:34:56",
                    nic.mac
                ))
            })?
        };
        let tap = crate::net::open_tap_on_bridge(&nic.bridge, "vireo%d")
            .map_err(|e| VmError::InvalidSpec(e.to_string()))?;
        add_virtio(Box::new(Net::new(tap, mac)), "virtio-net")?;
    }

    // VGA.
    let rom = if firmware {
        std::fs::read(DEFAULT_VGA_BIOS).map_err(|e| {
            VmError::Firmware(format!(
                "cannot read the VGA BIOS {DEFAULT_VGA_BIOS}: {e} (install Debian's seabios package)"
            ))
        })?
    } else {
        Vec::new()
    };
    let vga = StdVga::with_display(rom, display).map_err(|e| VmError::Device(e.to_string()))?;
    vga.set_mapper(Arc::new(KvmVram {
        vm: vm_fd.clone(),
        host: vga.vram_host_addr(),
        mapped: Mutex::new(None),
    }));
    for (dev, base, len) in vga.io_devices() {
        insert(io_bus, dev, base, len)?;
    }
    let (win, base, len) = vga.legacy_window();
    insert(mmio_bus, win, base, len)?;
    let vga_handle = vga.handle();
    pci_root
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add_device(VGA_DEVFN, Arc::new(Mutex::new(vga)));

    // ACPI tables.
    let tables = acpi::build(&AcpiConfig {
        cpus: spec.cpus,
        pci_irqs: PCI_IRQS,
        pci_hole: (PCI_HOLE_START, PCI_MMIO_END),
        pci_hole64: None,
    })
    .map_err(|e| VmError::Device(format!("ACPI tables: {e}")))?;

    let mut rsdp = None;
    if firmware {
        let mut fw = FwCfg::new(mem.clone());
        fw.set_ram_size(layout.total());
        fw.set_cpus(spec.cpus as u16);
        let e820: Vec<(u64, u64, u32)> = layout
            .e820_firmware()
            .iter()
            .map(|e| (e.addr, e.size, e.kind))
            .collect();
        fw.set_e820(&e820);
        let order = match &spec.boot {
            BootSpec::Firmware(f) => f.order,
            _ => BootOrder::CdromFirst,
        };
        let mut paths: Vec<String> = Vec::new();
        match order {
            BootOrder::CdromFirst => {
                paths.extend(cd_boot_path.clone());
                paths.extend(disk_boot_paths.iter().cloned());
                paths.extend(virtio_boot_paths.iter().cloned());
            }
            BootOrder::DiskFirst => {
                paths.extend(disk_boot_paths.iter().cloned());
                paths.extend(virtio_boot_paths.iter().cloned());
                paths.extend(cd_boot_path.clone());
            }
        }
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        fw.set_boot_order(&refs);
        fw.set_files(tables.fw_cfg_files())
            .map_err(|e| VmError::Device(format!("fw_cfg: {e}")))?;
        insert(
            io_bus,
            Arc::new(Mutex::new(fw)),
            FW_CFG_PORT_BASE as u64,
            FW_CFG_PORT_LEN,
        )?;
    } else {
        rsdp = Some(write_acpi_direct(mem, &tables)?);
        crate::devices::pci::piix3::program_pirq_routes(&router, PCI_IRQS);
    }

    Ok((
        Platform {
            serial,
            i8042,
            acpi_pm,
            vga: vga_handle,
            pci_root,
            ide,
            _rtc_timer: Some(rtc_timer),
            _io_loop: io_loop,
        },
        rsdp,
    ))
}

/// For direct boot: the tables go in the reserved BIOS area at 0xE0000.
fn write_acpi_direct(mem: &GuestMem, tables: &AcpiTables) -> Result<u64, VmError> {
    if tables.layout_size() > ONE_MIB - BIOS_AREA_START {
        return Err(VmError::Device("ACPI tables do not fit below 1 MiB".into()));
    }
    let pieces = tables.layout_at(BIOS_AREA_START);
    for (addr, bytes) in &pieces {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(|e| VmError::Memory(format!("ACPI tables: {e}")))?;
    }
    // The RSDP is the piece Linux finds by its signature.
    pieces
        .iter()
        .find(|(_, b)| b.starts_with(b"RSD PTR "))
        .map(|(a, _)| *a)
        .ok_or_else(|| VmError::Device("ACPI layout has no RSDP".into()))
}
