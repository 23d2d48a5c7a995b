//! ACPI tables for Vireo's i440FX/PIIX3 PC, built with the `acpi_tables`
//! crate (its AML builder and table structs) plus a few hand-packed
//! structures it lacks (RSDP with RSDT, MADT overrides/NMI, IRQNoFlags).
//!
//! Tables: RSDP (revision 2), RSDT, XSDT, FADT (revision 6), FACS, DSDT and
//! MADT. The DSDT describes `\_SB.PCI0` (PNP0A03, bus 0-0xFF, I/O and memory
//! windows, a static `_PRT` that routes slot S / pin P straight to the GSI of
//! PIRQ `(S + P - 1) & 3` with P counted from 0 = INTA, as QEMU's
//! `pci_slot_get_pirq` and SeaBIOS `piix_pci_slot_get_irq` do), the ISA bridge
//! `PCI0.ISA_` (RTC, PS/2 keyboard and mouse, COM1), one `ACPI0007`
//! processor device per CPU and `\_S5` = {0, 0, 0, 0}. The FADT describes the
//! fixed PM block at 0x600 (PM1a event 0x600/4, PM1a control 0x604/2, PM
//! timer 0x608/4, 24-bit), SCI on IRQ 9, no SMI command port (the OS takes
//! the hardware as already in ACPI mode: the PM device must read SCI_EN as
//! set), the reset register (I/O 0xCF9, value 6), the RTC century byte 0x32,
//! a legacy PC with an 8042 and a fixed-feature power button.
//!
//! Two ways to hand the tables to the guest:
//! - [`AcpiTables::layout_at`]: absolute placement (direct Linux boot; the
//!   RSDP lands on a 16-byte boundary at the start, e.g. 0xE0000, where
//!   Linux's BIOS-area scan finds it).
//! - [`AcpiTables::fw_cfg_files`]: the `etc/acpi/rsdp`, `etc/acpi/tables`
//!   and `etc/table-loader` fw_cfg files of QEMU's BIOS linker/loader
//!   protocol, which SeaBIOS executes (`src/fw/romfile_loader.c`).
//!
//! Missing: GPE block and hotplug, S3/S4, HPET, SRAT/NUMA, x2APIC entries
//! (so at most 255 CPUs), a PCI interrupt link (LNKx) model.

use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"VIREO ";
/// OEM table ID in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"VIREOPC ";
const OEM_REVISION: u32 = 1;

/// ACPI PM I/O block (PIIX4-style layout).
pub const PM_BASE: u16 = 0x600;
pub const PM1A_EVT_BLK: u16 = PM_BASE;
pub const PM1A_CNT_BLK: u16 = PM_BASE + 4;
pub const PM_TMR_BLK: u16 = PM_BASE + 8;
/// SCI interrupt (ISA IRQ / GSI 9, level, active high).
pub const SCI_IRQ: u8 = 9;
/// Reset register: I/O port 0xCF9, value 0x06.
pub const RESET_PORT: u16 = 0xCF9;
pub const RESET_VALUE: u8 = 0x06;
/// CMOS index of the RTC century byte.
pub const RTC_CENTURY: u8 = 0x32;
pub const IOAPIC_ADDR: u32 = 0xFEC0_0000;
pub const LAPIC_ADDR: u32 = 0xFEE0_0000;
/// IOAPIC ID in the MADT (KVM's in-kernel IOAPIC resets to ID 0, as QEMU's).
pub const IOAPIC_ID: u8 = 0;

/// fw_cfg file names of the BIOS linker/loader protocol.
pub const FW_CFG_RSDP: &str = "etc/acpi/rsdp";
pub const FW_CFG_TABLES: &str = "etc/acpi/tables";
pub const FW_CFG_LOADER: &str = "etc/table-loader";

/// Linker/loader commands (QEMU hw/acpi/bios-linker-loader.c).
const LOADER_ALLOCATE: u32 = 1;
const LOADER_ADD_POINTER: u32 = 2;
const LOADER_ADD_CHECKSUM: u32 = 3;
const LOADER_ZONE_HIGH: u8 = 1;
const LOADER_ZONE_FSEG: u8 = 2;
const LOADER_ENTRY_SIZE: usize = 128;
const LOADER_FILESZ: usize = 56;

/// What the tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of CPUs; APIC IDs 0..cpus. 1..=255.
    pub cpus: u32,
    /// GSIs of PIRQA..PIRQD (what SeaBIOS programs into PIIX3 0x60-0x63).
    pub pci_irqs: [u8; 4],
    /// 32-bit PCI memory window `[start, end)`, inside 1 MiB..4 GiB.
    pub pci_hole: (u64, u64),
    /// Optional 64-bit PCI memory window `[start, end)`.
    pub pci_hole64: Option<(u64, u64)>,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        Self {
            cpus: 1,
            pci_irqs: [10, 10, 11, 11],
            pci_hole: (0xC000_0000, 0xFEC0_0000),
            pci_hole64: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error("{0} CPUs: the MADT supports 1 to 255")]
    Cpus(u32),
    #[error("PCI hole {0:#x}..{1:#x} is empty or not between 1 MiB and 4 GiB")]
    PciHole(u64, u64),
    #[error("64-bit PCI hole {0:#x}..{1:#x} is empty")]
    PciHole64(u64, u64),
    #[error("PCI IRQ {0} is not an ISA IRQ from 3 to 15")]
    PciIrq(u8),
}

// Indexes into `AcpiTables::tables`, in blob order (FACS first: it needs
// 64-byte alignment).
const FACS_IDX: usize = 0;
const DSDT_IDX: usize = 1;
const FADT_IDX: usize = 2;
const MADT_IDX: usize = 3;
const RSDT_IDX: usize = 4;
const XSDT_IDX: usize = 5;

/// Where a pointer field sits and what it points at.
#[derive(Clone, Copy, Debug)]
struct Fixup {
    /// Table holding the field (`None` = the RSDP).
    table: Option<usize>,
    offset: usize,
    size: u8,
    target: usize,
    /// Only for the FACS: FIRMWARE_CTRL (32-bit) is used when the FACS is
    /// below 4 GiB, X_FIRMWARE_CTRL otherwise; ACPI 6 says only one of
    /// them may be set (QEMU likewise sets only FIRMWARE_CTRL).
    facs: FacsRule,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FacsRule {
    /// An ordinary pointer: always filled in.
    Any,
    /// Filled in only when the target is below 4 GiB.
    Low,
    /// Filled in only when the target is at or above 4 GiB.
    High,
}

#[derive(Clone, Debug)]
struct Table {
    data: Vec<u8>,
    align: u64,
    /// Whether the table has the standard header checksum at byte 9.
    checksummed: bool,
}

/// The built tables, with pointer fields still unresolved. Turn them into
/// guest bytes with [`AcpiTables::layout_at`] or
/// [`AcpiTables::fw_cfg_files`].
#[derive(Clone, Debug)]
pub struct AcpiTables {
    rsdp: Vec<u8>,
    tables: Vec<Table>,
    fixups: Vec<Fixup>,
}

/// Legacy `IRQNoFlags() {n}` small resource descriptor (as QEMU uses for
/// ISA devices; the crate only has the extended descriptor).
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x22);
        sink.word(1u16 << (self.0 & 15));
    }
}

/// Already-serialized AML (lets builders be nested without borrowing
/// temporaries).
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// `Name(n, v)`.
fn name(n: &str, v: &dyn Aml) -> Raw {
    Raw(to_vec(&aml::Name::new(aml::Path::new(n), v)))
}

/// `Device(n) { children }`.
fn device(n: &str, children: &[&dyn Aml]) -> Raw {
    Raw(to_vec(&aml::Device::new(
        aml::Path::new(n),
        children.to_vec(),
    )))
}

/// `Name(_CRS, ResourceTemplate() { items })`.
fn crs(items: &[&dyn Aml]) -> Raw {
    name("_CRS", &aml::ResourceTemplate::new(items.to_vec()))
}

fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// Sets byte `at` so that `data[range]` sums to 0.
fn fix_checksum(data: &mut [u8], at: usize, len: usize) {
    if let Some(b) = data.get_mut(at) {
        *b = 0;
    }
    let sum = checksum(data.get(..len).unwrap_or(data));
    if let Some(b) = data.get_mut(at) {
        *b = sum.wrapping_neg();
    }
}

fn to_vec(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn sdt(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Sdt::new(*sig, 36, revision, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.append_slice(body);
    t.as_slice().to_vec()
}

/// PIRQ index (0 = PIRQA) for a device in `slot` using interrupt pin `pin`
/// counted from 0 (INTA).
pub fn pirq_of(slot: u8, pin: u8) -> usize {
    (usize::from(slot) + usize::from(pin) + 3) & 3
}

fn build_dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    use aml::{
        AddressSpace, AddressSpaceCacheable, EISAName, Name, Package, PackageBuilder, Path,
        ResourceTemplate, Scope, IO, ZERO,
    };

    // PCI root bridge resources.
    let bus = AddressSpace::<u16>::new_bus_number(0, 0xFF);
    let cfg_io = IO::new(0xCF8, 0xCF8, 1, 8);
    let io_lo = AddressSpace::<u16>::new_io(0, 0xCF7, None);
    let io_hi = AddressSpace::<u16>::new_io(0xD00, 0xFFFF, None);
    let vga = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        0xA_0000,
        0xB_FFFF,
        None,
    );
    let hole = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        cfg.pci_hole.0 as u32,
        (cfg.pci_hole.1 - 1) as u32,
        None,
    );
    let hole64 = cfg.pci_hole64.map(|(s, e)| {
        AddressSpace::<u64>::new_memory(AddressSpaceCacheable::NotCacheable, true, s, e - 1, None)
    });
    let mut res: Vec<&dyn Aml> = vec![&bus, &cfg_io, &io_lo, &io_hi, &vga, &hole];
    if let Some(h) = hole64.as_ref() {
        res.push(h);
    }
    let crs_template = ResourceTemplate::new(res);

    // _PRT: every slot 1..31, pins INTA..INTD -> PIRQ GSI.
    let mut prt = PackageBuilder::new();
    for slot in 1u8..32 {
        for pin in 0u8..4 {
            let addr = (u32::from(slot) << 16) | 0xFFFF;
            let gsi = u32::from(cfg.pci_irqs[pirq_of(slot, pin)]);
            prt.add_element(&Package::new(vec![&addr, &pin, &ZERO, &gsi]));
        }
    }

    // ISA devices.
    let rtc = device(
        "RTC_",
        &[
            &name("_HID", &EISAName::new("PNP0B00")),
            &crs(&[&IO::new(0x70, 0x70, 1, 2), &IrqNoFlags(8)]),
        ],
    );
    let kbd = device(
        "KBD_",
        &[
            &name("_HID", &EISAName::new("PNP0303")),
            &crs(&[
                &IO::new(0x60, 0x60, 1, 1),
                &IO::new(0x64, 0x64, 1, 1),
                &IrqNoFlags(1),
            ]),
        ],
    );
    let mou = device(
        "MOU_",
        &[
            &name("_HID", &EISAName::new("PNP0F13")),
            &crs(&[&IrqNoFlags(12)]),
        ],
    );
    let com1 = device(
        "COM1",
        &[
            &name("_HID", &EISAName::new("PNP0501")),
            &name("_UID", &1u8),
            &crs(&[&IO::new(0x3F8, 0x3F8, 0, 8), &IrqNoFlags(4)]),
        ],
    );
    let isa = device(
        "ISA_",
        &[&name("_ADR", &0x0001_0000u32), &rtc, &kbd, &mou, &com1],
    );

    let pci0 = device(
        "PCI0",
        &[
            &name("_HID", &EISAName::new("PNP0A03")),
            &name("_ADR", &ZERO),
            &name("_UID", &ZERO),
            &name("_CRS", &crs_template),
            &name("_PRT", &prt),
            &isa,
        ],
    );

    // Processor devices, _UID = MADT processor UID = APIC ID.
    let cpus: Vec<Raw> = (0..cfg.cpus)
        .map(|i| {
            device(
                &format!("C{i:03X}"),
                &[&name("_HID", &"ACPI0007"), &name("_UID", &i)],
            )
        })
        .collect();

    let mut sb_children: Vec<&dyn Aml> = vec![&pci0];
    for c in &cpus {
        sb_children.push(c);
    }
    let sb = Scope::new(Path::new("\\_SB_"), sb_children);
    let s5 = Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&ZERO, &ZERO, &ZERO, &ZERO]),
    );

    let mut body = Vec::new();
    sb.to_aml_bytes(&mut body);
    s5.to_aml_bytes(&mut body);
    sdt(b"DSDT", 2, &body)
}

fn build_fadt(cfg: &AcpiConfig) -> Vec<u8> {
    let io = |bits: u8, port: u16| {
        GAS::new(
            GasSpace::SystemIo,
            bits,
            0,
            AccessSize::Undefined,
            port.into(),
        )
    };
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .preferred_pm_profile(PmProfile::Unspecified)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::RtcS4)
        .flag(Flags::ResetRegSup)
        .flag(Flags::UsePlatformClock);
    if cfg.cpus > 8 {
        f = f.flag(Flags::ForceApicPhysicalDestinationMode);
    }
    f.sci_int = u16::from(SCI_IRQ).into();
    f.smi_cmd = 0.into();
    f.acpi_enable = 0;
    f.acpi_disable = 0;
    f.pm1a_evt_blk = u32::from(PM1A_EVT_BLK).into();
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_BLK).into();
    f.pm_tmr_blk = u32::from(PM_TMR_BLK).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = 4;
    // C2/C3 not supported.
    f.p_lvl2_lat = 0x0FFF.into();
    f.p_lvl3_lat = 0x03E9.into();
    f.century = RTC_CENTURY;
    // LEGACY_DEVICES | 8042.
    f.iapc_boot_arch = 0x0003.into();
    f.reset_reg = GAS::new(
        GasSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        RESET_PORT.into(),
    );
    f.reset_value = RESET_VALUE;
    f.x_pm1a_evt_blk = io(32, PM1A_EVT_BLK);
    f.x_pm1a_cnt_blk = io(16, PM1A_CNT_BLK);
    f.x_pm_tmr_blk = io(32, PM_TMR_BLK);
    // FACS/DSDT pointers (both widths) are filled in at placement.
    to_vec(&f.finalize())
}

fn build_madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    for i in 0..cfg.cpus {
        let id = i as u8;
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut body);
    }
    IoApic::new(IOAPIC_ID, IOAPIC_ADDR, 0).to_aml_bytes(&mut body);
    // Interrupt source overrides: {type 2, len 10, bus 0, source, gsi, flags}.
    let iso = |body: &mut Vec<u8>, src: u8, gsi: u32, flags: u16| {
        body.extend_from_slice(&[2, 10, 0, src]);
        body.extend_from_slice(&gsi.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
    };
    iso(&mut body, 0, 2, 0);
    // SCI: level triggered (bits 3:2 = 11), active high (bits 1:0 = 01).
    iso(&mut body, SCI_IRQ, u32::from(SCI_IRQ), 0x000D);
    // Local APIC NMI on LINT1 of all processors.
    body.extend_from_slice(&[4, 6, 0xFF, 0, 0, 1]);
    sdt(b"APIC", 1, &body)
}

/// Builds all tables for `cfg`.
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    if cfg.cpus == 0 || cfg.cpus > 255 {
        return Err(AcpiError::Cpus(cfg.cpus));
    }
    let (hs, he) = cfg.pci_hole;
    // Inside [1 MiB, 4 GiB] and not all of it (lengths are 32-bit).
    if hs >= he || hs < 0x10_0000 || he > 1 << 32 {
        return Err(AcpiError::PciHole(hs, he));
    }
    if let Some((s, e)) = cfg.pci_hole64 {
        if s >= e {
            return Err(AcpiError::PciHole64(s, e));
        }
    }
    if let Some(bad) = cfg.pci_irqs.iter().find(|i| !(3..=15).contains(*i)) {
        return Err(AcpiError::PciIrq(*bad));
    }

    let facs = to_vec(&FACS::new());
    let dsdt = build_dsdt(cfg);
    let fadt = build_fadt(cfg);
    let madt = build_madt(cfg);
    let rsdt = sdt(b"RSDT", 1, &[0; 8]);
    let xsdt = sdt(b"XSDT", 1, &[0; 16]);

    let mut rsdp = vec![0u8; 36];
    rsdp[0..8].copy_from_slice(b"RSD PTR ");
    rsdp[9..15].copy_from_slice(&OEM_ID);
    rsdp[15] = 2;
    rsdp[20..24].copy_from_slice(&36u32.to_le_bytes());

    let t = |data: Vec<u8>, align: u64, checksummed: bool| Table {
        data,
        align,
        checksummed,
    };
    let tables = vec![
        t(facs, 64, false),
        t(dsdt, 8, true),
        t(fadt, 8, true),
        t(madt, 8, true),
        t(rsdt, 8, true),
        t(xsdt, 8, true),
    ];
    let fx = |table: Option<usize>, offset: usize, size: u8, target: usize| Fixup {
        table,
        offset,
        size,
        target,
        facs: FacsRule::Any,
    };
    let fixups = vec![
        Fixup {
            facs: FacsRule::Low,
            ..fx(Some(FADT_IDX), 36, 4, FACS_IDX)
        },
        fx(Some(FADT_IDX), 40, 4, DSDT_IDX),
        Fixup {
            facs: FacsRule::High,
            ..fx(Some(FADT_IDX), 132, 8, FACS_IDX)
        },
        fx(Some(FADT_IDX), 140, 8, DSDT_IDX),
        fx(Some(RSDT_IDX), 36, 4, FADT_IDX),
        fx(Some(RSDT_IDX), 40, 4, MADT_IDX),
        fx(Some(XSDT_IDX), 36, 8, FADT_IDX),
        fx(Some(XSDT_IDX), 44, 8, MADT_IDX),
        fx(None, 16, 4, RSDT_IDX),
        fx(None, 24, 8, XSDT_IDX),
    ];
    let mut out = AcpiTables {
        rsdp,
        tables,
        fixups,
    };
    // Give every table a valid checksum even before placement.
    for t in &mut out.tables {
        if t.checksummed {
            let len = t.data.len();
            fix_checksum(&mut t.data, 9, len);
        }
    }
    Ok(out)
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a).saturating_mul(a)
}

/// Adds `value` into the little-endian field `[offset, offset+size)`.
fn add_pointer(data: &mut [u8], offset: usize, size: u8, value: u64) {
    let size = usize::from(size).min(8);
    let Some(field) = data.get_mut(offset..offset + size) else {
        return;
    };
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(field);
    let v = u64::from_le_bytes(b).wrapping_add(value);
    field.copy_from_slice(&v.to_le_bytes()[..size]);
}

impl AcpiTables {
    /// The unplaced bytes of the table with signature `sig` (`FACS`,
    /// `DSDT`, `FACP`, `APIC`, `RSDT`, `XSDT`); pointer fields are 0.
    #[cfg(test)]
    pub fn table(&self, sig: &[u8; 4]) -> Option<&[u8]> {
        self.tables
            .iter()
            .find(|t| t.data.get(0..4) == Some(&sig[..]))
            .map(|t| t.data.as_slice())
    }

    /// Bytes that [`AcpiTables::layout_at`] spans from a 16-byte aligned
    /// base (RSDP, padding and tables).
    pub fn layout_size(&self) -> u64 {
        let mut cur = self.rsdp.len() as u64;
        for t in &self.tables {
            cur = align_up(cur, t.align) + t.data.len() as u64;
        }
        cur
    }

    /// Places the RSDP at `base` (rounded up to 16) and the tables after it,
    /// with all pointers and checksums resolved. Returns the pieces to copy
    /// into guest memory. `base` plus [`AcpiTables::layout_size`] must stay
    /// below 4 GiB (the RSDT and the 32-bit FADT fields hold 32-bit
    /// addresses); for direct Linux boot use 0xE0000 (the span is a few KiB)
    /// and mark the range reserved in the e820 map.
    pub fn layout_at(&self, base: u64) -> Vec<(u64, Vec<u8>)> {
        let rsdp_addr = align_up(base, 16);
        let mut cur = rsdp_addr + self.rsdp.len() as u64;
        let mut addrs = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            let a = align_up(cur, t.align);
            addrs.push(a);
            cur = a + t.data.len() as u64;
        }
        let mut rsdp = self.rsdp.clone();
        let mut tables: Vec<Vec<u8>> = self.tables.iter().map(|t| t.data.clone()).collect();
        for f in &self.fixups {
            let target = addrs.get(f.target).copied().unwrap_or(0);
            let low = target <= u64::from(u32::MAX);
            // 32-bit fields cannot hold addresses above 4 GiB: leave them 0.
            let wanted = match f.facs {
                FacsRule::Any => f.size == 8 || low,
                FacsRule::Low => low,
                FacsRule::High => !low,
            };
            let value = if wanted { target } else { 0 };
            let dst = match f.table {
                None => &mut rsdp,
                Some(i) => match tables.get_mut(i) {
                    Some(t) => t,
                    None => continue,
                },
            };
            add_pointer(dst, f.offset, f.size, value);
        }
        for (t, data) in self.tables.iter().zip(tables.iter_mut()) {
            if t.checksummed {
                let len = data.len();
                fix_checksum(data, 9, len);
            }
        }
        fix_checksum(&mut rsdp, 8, 20);
        fix_checksum(&mut rsdp, 32, 36);
        let mut out = vec![(rsdp_addr, rsdp)];
        out.extend(addrs.into_iter().zip(tables));
        out
    }

    /// The fw_cfg files for SeaBIOS: `etc/acpi/rsdp` (36 bytes, allocated
    /// in the F segment), `etc/acpi/tables` (all tables, pointer fields
    /// holding offsets into this blob, allocated high) and
    /// `etc/table-loader` (ALLOCATE, ADD_POINTER and ADD_CHECKSUM commands,
    /// 128 bytes each).
    pub fn fw_cfg_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut blob = Vec::new();
        let mut offs = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            let o = align_up(blob.len() as u64, t.align) as usize;
            blob.resize(o, 0);
            offs.push(o);
            blob.extend_from_slice(&t.data);
        }
        let mut rsdp = self.rsdp.clone();
        let mut cmds = Vec::new();
        cmds.push(loader_allocate(FW_CFG_RSDP, 16, LOADER_ZONE_FSEG));
        cmds.push(loader_allocate(FW_CFG_TABLES, 64, LOADER_ZONE_HIGH));
        // SeaBIOS allocates below 4 GiB: the FACS goes in FIRMWARE_CTRL.
        for f in self.fixups.iter().filter(|f| f.facs != FacsRule::High) {
            let target = offs.get(f.target).copied().unwrap_or(0) as u64;
            let (dst, dst_name, field) = match f.table {
                None => (&mut rsdp, FW_CFG_RSDP, f.offset),
                Some(i) => (
                    &mut blob,
                    FW_CFG_TABLES,
                    offs.get(i).copied().unwrap_or(0) + f.offset,
                ),
            };
            add_pointer(dst, field, f.size, target);
            cmds.push(loader_add_pointer(
                dst_name,
                FW_CFG_TABLES,
                field as u32,
                f.size,
            ));
        }
        for (t, o) in self.tables.iter().zip(&offs) {
            if t.checksummed {
                if let Some(b) = blob.get_mut(o + 9) {
                    *b = 0;
                }
                cmds.push(loader_add_checksum(
                    FW_CFG_TABLES,
                    (o + 9) as u32,
                    *o as u32,
                    t.data.len() as u32,
                ));
            }
        }
        rsdp[8] = 0;
        rsdp[32] = 0;
        cmds.push(loader_add_checksum(FW_CFG_RSDP, 8, 0, 20));
        cmds.push(loader_add_checksum(FW_CFG_RSDP, 32, 0, 36));
        vec![
            (FW_CFG_RSDP.to_string(), rsdp),
            (FW_CFG_TABLES.to_string(), blob),
            (FW_CFG_LOADER.to_string(), cmds.concat()),
        ]
    }
}

fn loader_name(e: &mut [u8], at: usize, name: &str) {
    for (d, s) in e
        .iter_mut()
        .skip(at)
        .take(LOADER_FILESZ - 1)
        .zip(name.as_bytes())
    {
        *d = *s;
    }
}

fn loader_allocate(file: &str, align: u32, zone: u8) -> Vec<u8> {
    let mut e = vec![0u8; LOADER_ENTRY_SIZE];
    e[0..4].copy_from_slice(&LOADER_ALLOCATE.to_le_bytes());
    loader_name(&mut e, 4, file);
    e[60..64].copy_from_slice(&align.to_le_bytes());
    e[64] = zone;
    e
}

fn loader_add_pointer(dest: &str, src: &str, offset: u32, size: u8) -> Vec<u8> {
    let mut e = vec![0u8; LOADER_ENTRY_SIZE];
    e[0..4].copy_from_slice(&LOADER_ADD_POINTER.to_le_bytes());
    loader_name(&mut e, 4, dest);
    loader_name(&mut e, 4 + LOADER_FILESZ, src);
    e[116..120].copy_from_slice(&offset.to_le_bytes());
    e[120] = size;
    e
}

fn loader_add_checksum(file: &str, offset: u32, start: u32, length: u32) -> Vec<u8> {
    let mut e = vec![0u8; LOADER_ENTRY_SIZE];
    e[0..4].copy_from_slice(&LOADER_ADD_CHECKSUM.to_le_bytes());
    loader_name(&mut e, 4, file);
    e[60..64].copy_from_slice(&offset.to_le_bytes());
    e[64..68].copy_from_slice(&start.to_le_bytes());
    e[68..72].copy_from_slice(&length.to_le_bytes());
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The tables of an otherwise default machine with `cpus` CPUs.
    fn tables_for(cpus: u32) -> AcpiTables {
        build(&AcpiConfig {
            cpus,
            ..Default::default()
        })
        .unwrap()
    }

    fn u16_at(d: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(d[o..o + 2].try_into().unwrap())
    }
    fn u32_at(d: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(d[o..o + 4].try_into().unwrap())
    }
    fn u64_at(d: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(d[o..o + 8].try_into().unwrap())
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// A flat memory image of `layout_at`'s pieces.
    struct Image(HashMap<u64, Vec<u8>>);

    impl Image {
        fn new(pieces: Vec<(u64, Vec<u8>)>) -> Self {
            Self(pieces.into_iter().collect())
        }
        fn at(&self, addr: u64) -> &[u8] {
            self.0
                .get(&addr)
                .unwrap_or_else(|| panic!("nothing at {addr:#x}"))
        }
        fn table(&self, addr: u64, sig: &[u8; 4]) -> &[u8] {
            let t = self.at(addr);
            assert_eq!(&t[0..4], sig);
            if sig != b"FACS" {
                assert_eq!(u32_at(t, 4) as usize, t.len(), "{sig:?} length");
                assert_eq!(checksum(t), 0, "{sig:?} checksum");
            }
            t
        }
    }

    /// Follows RSDP -> RSDT/XSDT -> FADT -> DSDT/FACS and the MADT,
    /// checking that 32- and 64-bit paths agree. Returns (FADT, DSDT, MADT).
    fn walk(img: &Image, rsdp_addr: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let rsdp = img.at(rsdp_addr);
        assert_eq!(rsdp_addr % 16, 0);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(rsdp.len(), 36);
        assert_eq!(checksum(&rsdp[..20]), 0);
        assert_eq!(checksum(rsdp), 0);
        assert_eq!(rsdp[15], 2);
        assert_eq!(u32_at(rsdp, 20), 36);
        let rsdt = img.table(u32_at(rsdp, 16) as u64, b"RSDT");
        let xsdt = img.table(u64_at(rsdp, 24), b"XSDT");
        assert_eq!(rsdt.len(), 36 + 8);
        assert_eq!(xsdt.len(), 36 + 16);
        for i in 0..2 {
            assert_eq!(u32_at(rsdt, 36 + 4 * i) as u64, u64_at(xsdt, 36 + 8 * i));
        }
        let fadt = img.table(u64_at(xsdt, 36), b"FACP");
        let madt = img.table(u64_at(xsdt, 44), b"APIC");
        // FACS: exactly one of FIRMWARE_CTRL / X_FIRMWARE_CTRL.
        let (facs32, facs64) = (u32_at(fadt, 36) as u64, u64_at(fadt, 132));
        assert!((facs32 == 0) != (facs64 == 0), "{facs32:#x} {facs64:#x}");
        assert_eq!(u32_at(fadt, 40) as u64, u64_at(fadt, 140));
        let facs_addr = facs32.max(facs64);
        assert_eq!(facs64 != 0, facs_addr > u64::from(u32::MAX));
        assert_eq!(facs_addr % 64, 0, "FACS alignment");
        let facs = img.table(facs_addr, b"FACS");
        assert_eq!(u32_at(facs, 4), 64);
        let dsdt = img.table(u64_at(fadt, 140), b"DSDT");
        (fadt.to_vec(), dsdt.to_vec(), madt.to_vec())
    }

    #[test]
    fn unplaced_tables_have_valid_checksums() {
        let t = build(&AcpiConfig::default()).unwrap();
        for sig in [b"DSDT", b"FACP", b"APIC", b"RSDT", b"XSDT"] {
            let d = t.table(sig).unwrap();
            assert_eq!(checksum(d), 0, "{sig:?}");
            assert_eq!(u32_at(d, 4) as usize, d.len());
        }
        assert_eq!(t.table(b"FACS").unwrap().len(), 64);
    }

    #[test]
    fn layout_at_resolves_pointers_and_checksums() {
        let t = build(&AcpiConfig::default()).unwrap();
        let pieces = t.layout_at(0xE0000);
        assert_eq!(pieces[0].0, 0xE0000);
        // Everything inside the BIOS area and non-overlapping.
        let mut ranges: Vec<(u64, u64)> = pieces
            .iter()
            .map(|(a, d)| (*a, *a + d.len() as u64))
            .collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {w:?}");
        }
        let end = ranges.last().unwrap().1;
        assert!(end <= 0x10_0000);
        assert!(end - 0xE0000 <= t.layout_size());
        let img = Image::new(pieces);
        walk(&img, 0xE0000);
        // An unaligned base is rounded up to 16.
        let img = Image::new(t.layout_at(0x9_0003));
        walk(&img, 0x9_0010);
    }

    #[test]
    fn layout_above_4g_uses_64bit_fields_only() {
        let t = build(&AcpiConfig::default()).unwrap();
        let base = 0x1_0000_0000u64;
        let img = Image::new(t.layout_at(base));
        let rsdp = img.at(base);
        assert_eq!(checksum(rsdp), 0);
        assert_eq!(u32_at(rsdp, 16), 0, "RSDT address cannot be 32-bit");
        let xsdt = img.table(u64_at(rsdp, 24), b"XSDT");
        let fadt = img.table(u64_at(xsdt, 36), b"FACP");
        assert_eq!(u32_at(fadt, 36), 0, "FIRMWARE_CTRL");
        assert_eq!(u32_at(fadt, 40), 0, "DSDT");
        let facs_addr = u64_at(fadt, 132);
        assert!(facs_addr >= base && facs_addr.is_multiple_of(64));
        img.table(facs_addr, b"FACS");
        img.table(u64_at(fadt, 140), b"DSDT");
        img.table(u64_at(xsdt, 44), b"APIC");
    }

    #[test]
    fn fadt_fields_at_spec_offsets() {
        let t = build(&AcpiConfig::default()).unwrap();
        let img = Image::new(t.layout_at(0xE0000));
        let (fadt, _, _) = walk(&img, 0xE0000);
        assert_eq!(fadt.len(), 276);
        assert!(fadt[8] >= 3, "FADT revision");
        assert_eq!(u16_at(&fadt, 46), 9, "SCI_INT");
        assert_eq!(u32_at(&fadt, 48), 0, "SMI_CMD");
        assert_eq!((fadt[52], fadt[53]), (0, 0), "ACPI_ENABLE/DISABLE");
        assert_eq!(u32_at(&fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(&fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(&fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(u32_at(&fadt, 60), 0, "PM1b_EVT_BLK");
        assert_eq!(u32_at(&fadt, 80), 0, "GPE0_BLK");
        assert_eq!(fadt[88], 4, "PM1_EVT_LEN");
        assert_eq!(fadt[89], 2, "PM1_CNT_LEN");
        assert_eq!(fadt[91], 4, "PM_TMR_LEN");
        assert_eq!(fadt[108], 0x32, "CENTURY");
        assert_eq!(u16_at(&fadt, 109), 0x3, "IAPC_BOOT_ARCH");
        let flags = u32_at(&fadt, 112);
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(flags & (1 << 4), 0, "PWR_BUTTON clear = fixed button");
        assert_eq!(flags & (1 << 8), 0, "24-bit PM timer");
        assert_eq!(flags & (1 << 20), 0, "not HW-reduced");
        // RESET_REG: GAS {space 1 (I/O), width 8, offset 0, access 1, 0xCF9}.
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64_at(&fadt, 120), 0xCF9);
        assert_eq!(fadt[128], 6, "RESET_VALUE");
        // X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK.
        assert_eq!(&fadt[148..150], &[1, 32]);
        assert_eq!(u64_at(&fadt, 152), 0x600);
        assert_eq!(&fadt[172..174], &[1, 16]);
        assert_eq!(u64_at(&fadt, 176), 0x604);
        assert_eq!(&fadt[208..210], &[1, 32]);
        assert_eq!(u64_at(&fadt, 212), 0x608);
        // Many CPUs force physical destination mode.
        let t = tables_for(16);
        assert_ne!(u32_at(t.table(b"FACP").unwrap(), 112) & (1 << 19), 0);
    }

    fn madt_entries(madt: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut o = 44;
        while o < madt.len() {
            let len = madt[o + 1] as usize;
            assert!(len >= 2 && o + len <= madt.len(), "bad MADT entry");
            out.push(&madt[o..o + len]);
            o += len;
        }
        out
    }

    #[test]
    fn madt_has_one_lapic_per_cpu() {
        for cpus in [1u32, 2, 8] {
            let t = tables_for(cpus);
            let img = Image::new(t.layout_at(0xE0000));
            let (_, _, madt) = walk(&img, 0xE0000);
            assert_eq!(u32_at(&madt, 36), 0xFEE0_0000, "LAPIC address");
            assert_eq!(u32_at(&madt, 40) & 1, 1, "PCAT_COMPAT");
            let entries = madt_entries(&madt);
            let lapics: Vec<_> = entries.iter().filter(|e| e[0] == 0).collect();
            assert_eq!(lapics.len(), cpus as usize);
            for (i, e) in lapics.iter().enumerate() {
                assert_eq!(e.len(), 8);
                assert_eq!(e[2] as usize, i, "processor UID");
                assert_eq!(e[3] as usize, i, "APIC ID");
                assert_eq!(u32_at(e, 4), 1, "enabled");
            }
            let ioapics: Vec<_> = entries.iter().filter(|e| e[0] == 1).collect();
            assert_eq!(ioapics.len(), 1);
            assert_eq!(u32_at(ioapics[0], 4), 0xFEC0_0000);
            assert_eq!(u32_at(ioapics[0], 8), 0, "GSI base");
            let isos: Vec<_> = entries.iter().filter(|e| e[0] == 2).collect();
            assert_eq!(isos.len(), 2);
            assert_eq!((isos[0][3], u32_at(isos[0], 4)), (0, 2), "IRQ0 -> GSI2");
            assert_eq!((isos[1][3], u32_at(isos[1], 4)), (9, 9));
            assert_eq!(u16_at(isos[1], 8), 0x000D, "SCI level, active high");
        }
    }

    #[test]
    fn dsdt_content() {
        let t = tables_for(2);
        let dsdt = t.table(b"DSDT").unwrap();
        for name in [
            &b"_S5_"[..],
            b"PCI0",
            b"_PRT",
            b"_CRS",
            b"ISA_",
            b"RTC_",
            b"KBD_",
            b"MOU_",
            b"COM1",
            b"C000",
            b"C001",
        ] {
            assert!(contains(dsdt, name), "{}", String::from_utf8_lossy(name));
        }
        assert!(!contains(dsdt, b"C002"));
        // \_S5_ = Package(4) {Zero, Zero, Zero, Zero}.
        assert!(contains(
            dsdt,
            &[0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 4, 0, 0, 0, 0]
        ));
        // PNP0303 keyboard as EISAID dword (SeaBIOS looks for it).
        assert!(contains(dsdt, &[0x0C, 0x41, 0xD0, 0x03, 0x03]));
        // Keyboard IRQ 1 and mouse IRQ 12 as IRQNoFlags.
        assert!(contains(dsdt, &[0x22, 0x02, 0x00]));
        assert!(contains(dsdt, &[0x22, 0x00, 0x10]));
        // PCI hole DWordMemory min/max.
        assert!(contains(
            dsdt,
            &[0x00, 0x00, 0x00, 0xC0, 0xFF, 0xFF, 0xBF, 0xFE]
        ));
        // _PRT entry: slot 3, INTA -> PIRQ (3+0-1)&3 = C -> GSI 11:
        // Package(4) {0x0003FFFF, Zero, Zero, 11}.
        assert!(contains(
            dsdt,
            &[0x12, 0x0B, 4, 0x0C, 0xFF, 0xFF, 0x03, 0x00, 0x00, 0x00, 0x0A, 11]
        ));
        // Slot 1, INTA -> PIRQA -> GSI 10.
        assert!(contains(
            dsdt,
            &[0x12, 0x0B, 4, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0x0A, 10]
        ));
    }

    #[test]
    fn prt_follows_pirq_rule() {
        assert_eq!(pirq_of(1, 0), 0);
        assert_eq!(pirq_of(1, 3), 3);
        assert_eq!(pirq_of(2, 0), 1);
        assert_eq!(pirq_of(5, 2), 2);
        let irqs = [3, 5, 7, 9];
        let t = build(&AcpiConfig {
            pci_irqs: irqs,
            ..Default::default()
        })
        .unwrap();
        let dsdt = t.table(b"DSDT").unwrap();
        for slot in 1u8..32 {
            for pin in 0u8..4 {
                let gsi = irqs[pirq_of(slot, pin)];
                let pin_enc: Vec<u8> = match pin {
                    0 => vec![0x00],
                    1 => vec![0x01],
                    p => vec![0x0A, p],
                };
                let mut pkg = vec![0x0C, 0xFF, 0xFF, slot, 0x00];
                pkg.extend_from_slice(&pin_enc);
                pkg.extend_from_slice(&[0x00, 0x0A, gsi]);
                assert!(contains(dsdt, &pkg), "slot {slot} pin {pin}");
            }
        }
    }

    #[test]
    fn config_validation() {
        let bad = |c: AcpiConfig| build(&c).unwrap_err();
        let d = AcpiConfig::default;
        assert_eq!(bad(AcpiConfig { cpus: 0, ..d() }), AcpiError::Cpus(0));
        assert_eq!(bad(AcpiConfig { cpus: 256, ..d() }), AcpiError::Cpus(256));
        assert!(build(&AcpiConfig { cpus: 255, ..d() }).is_ok());
        assert_eq!(
            bad(AcpiConfig {
                pci_hole: (0xC000_0000, 0xC000_0000),
                ..d()
            }),
            AcpiError::PciHole(0xC000_0000, 0xC000_0000)
        );
        assert!(matches!(
            bad(AcpiConfig {
                pci_hole: (0xC000_0000, 0x1_0000_1000),
                ..d()
            }),
            AcpiError::PciHole(..)
        ));
        assert!(matches!(
            bad(AcpiConfig {
                pci_hole: (0, 1 << 32),
                ..d()
            }),
            AcpiError::PciHole(..)
        ));
        assert!(build(&AcpiConfig {
            pci_hole: (0x10_0000, 1 << 32),
            ..d()
        })
        .is_ok());
        assert_eq!(
            bad(AcpiConfig {
                pci_irqs: [10, 10, 0, 11],
                ..d()
            }),
            AcpiError::PciIrq(0)
        );
        assert!(matches!(
            bad(AcpiConfig {
                pci_hole64: Some((1 << 40, 1 << 40)),
                ..d()
            }),
            AcpiError::PciHole64(..)
        ));
        let t = build(&AcpiConfig {
            pci_hole64: Some((1 << 36, 1 << 38)),
            ..d()
        })
        .unwrap();
        // QWordMemory descriptor (0x8A) present.
        assert!(contains(t.table(b"DSDT").unwrap(), &[0x8A, 0x2B, 0x00]));
    }

    /// Runs the linker/loader script like SeaBIOS does, allocating files at
    /// the given addresses, and returns the resulting memory image.
    fn run_loader(files: &[(String, Vec<u8>)], rsdp_at: u64, tables_at: u64) -> Image {
        let get = |n: &str| files.iter().find(|(f, _)| f == n).unwrap().1.clone();
        let loader = get(FW_CFG_LOADER);
        assert_eq!(loader.len() % 128, 0);
        let name = |e: &[u8], at: usize| {
            let raw = &e[at..at + 56];
            assert_eq!(raw[55], 0, "name not NUL-terminated");
            String::from_utf8(raw.iter().copied().take_while(|b| *b != 0).collect()).unwrap()
        };
        let mut mem: HashMap<String, (u64, Vec<u8>)> = HashMap::new();
        for e in loader.chunks(128) {
            match u32_at(e, 0) {
                1 => {
                    let f = name(e, 4);
                    let align = u32_at(e, 60) as u64;
                    let zone = e[64];
                    let addr = if f == FW_CFG_RSDP {
                        assert_eq!(zone, 2, "RSDP in FSEG");
                        rsdp_at
                    } else {
                        assert_eq!(zone, 1);
                        tables_at
                    };
                    assert_eq!(addr % align, 0);
                    mem.insert(f.clone(), (addr, get(&f)));
                }
                2 => {
                    let (dst, src) = (name(e, 4), name(e, 60));
                    let off = u32_at(e, 116) as usize;
                    let size = e[120];
                    assert!([1, 2, 4, 8].contains(&size));
                    let src_addr = mem[&src].0;
                    let d = &mut mem.get_mut(&dst).unwrap().1;
                    assert!(off + size as usize <= d.len());
                    add_pointer(d, off, size, src_addr);
                }
                3 => {
                    let f = name(e, 4);
                    let (off, start, len) = (
                        u32_at(e, 60) as usize,
                        u32_at(e, 64) as usize,
                        u32_at(e, 68) as usize,
                    );
                    let d = &mut mem.get_mut(&f).unwrap().1;
                    let sum = checksum(&d[start..start + len]);
                    d[off] = d[off].wrapping_sub(sum);
                }
                c => panic!("unexpected loader command {c}"),
            }
        }
        // Split the tables blob at each table for the Image lookup.
        let mut pieces = Vec::new();
        let (ra, rsdp) = mem.remove(FW_CFG_RSDP).unwrap();
        pieces.push((ra, rsdp));
        let (ta, blob) = mem.remove(FW_CFG_TABLES).unwrap();
        let mut o = 0;
        while o + 8 <= blob.len() {
            if blob[o..o + 4].iter().all(|b| b.is_ascii_uppercase()) {
                let len = u32_at(&blob, o + 4) as usize;
                pieces.push((ta + o as u64, blob[o..o + len].to_vec()));
                o += len;
            } else {
                o += 1;
            }
        }
        Image::new(pieces)
    }

    #[test]
    fn fw_cfg_loader_script_produces_valid_tables() {
        let t = tables_for(2);
        let files = t.fw_cfg_files();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [FW_CFG_RSDP, FW_CFG_TABLES, FW_CFG_LOADER]);
        assert_eq!(files[0].1.len(), 36);
        let img = run_loader(&files, 0xF_5A30, 0x7FFE_0000);
        let (_, dsdt, madt) = walk(&img, 0xF_5A30);
        assert_eq!(dsdt, t.table(b"DSDT").unwrap());
        assert_eq!(madt, t.table(b"APIC").unwrap());
        // Same tables as the direct layout, up to addresses.
        let img2 = run_loader(&files, 0xF_0000, 0x0100_0000);
        let (fadt2, _, _) = walk(&img2, 0xF_0000);
        assert_eq!(
            u64_at(&fadt2, 140),
            0x0100_0000 + 64,
            "DSDT right after FACS"
        );
    }

    #[test]
    #[ignore = "needs VIREO_ACPI_DUMP=<dir>; writes the tables for iasl -d"]
    fn dump_tables() {
        let dir = std::env::var("VIREO_ACPI_DUMP").unwrap();
        let t = tables_for(2);
        let base = std::env::var("VIREO_ACPI_BASE")
            .ok()
            .and_then(|b| u64::from_str_radix(b.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0xE0000);
        for (addr, data) in t.layout_at(base) {
            let sig = String::from_utf8_lossy(&data[0..4]).replace(' ', "_");
            std::fs::write(format!("{dir}/{sig}_{addr:x}.dat"), data).unwrap();
        }
        for (name, data) in t.fw_cfg_files() {
            let file = name.replace('/', "_");
            std::fs::write(format!("{dir}/{file}"), data).unwrap();
        }
    }
}
