//! Direct Linux boot through linux-loader, in two forms:
//! - a bzImage (the x86 boot protocol, 64-bit entry): the kernel, the initrd,
//!   the command line and boot_params with the e820 map;
//! - an uncompressed ELF `vmlinux` with a PVH entry note
//!   (XEN_ELFNOTE_PHYS32_ENTRY, CONFIG_PVH): hvm_start_info with the memory
//!   map, the command line, the RSDP and the initrd as module 0, entered in
//!   32-bit protected mode with paging off and EBX = &hvm_start_info.
//!
//! Firecracker, cloud-hypervisor and vmm-reference work the same way.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress};

use crate::memory::{GuestMem, MemoryLayout, ONE_MIB};

pub const ZERO_PAGE: u64 = 0x7000;
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// PVH: hvm_start_info, then the module list, then the memory map.
pub const PVH_START_INFO: u64 = 0x6000;
pub const PVH_MODLIST: u64 = 0x6040;
pub const PVH_MEMMAP: u64 = 0x6080;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const XLF_KERNEL_64: u16 = 1;
const LOADED_HIGH: u8 = 1;
const CAN_USE_HEAP: u8 = 1 << 7;

#[derive(Debug, thiserror::Error)]
pub enum LinuxBootError {
    #[error("cannot read kernel {path}: {source} (check the path)")]
    KernelOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Linux kernel: it has no x86 boot-protocol header and is not an ELF vmlinux; a bzImage such as /boot/vmlinuz-* or a vmlinux built with CONFIG_PVH=y is needed")]
    NotAKernel { path: PathBuf },
    #[error("{path} is an ELF kernel without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y, or boot its bzImage instead")]
    NoPvhEntry { path: PathBuf },
    #[error("{path} has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64); use an x86_64 kernel")]
    No64BitEntry { path: PathBuf },
    #[error("kernel {path} does not fit in guest memory ({detail}); give the VM more memory")]
    KernelLoad { path: PathBuf, detail: String },
    #[error("cannot read initrd {path}: {source} (check the path)")]
    InitrdOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initrd {path} ({size_mib} MiB) does not fit in the guest's memory below {limit_mib} MiB after the kernel; give the VM more --memory")]
    InitrdTooBig {
        path: PathBuf,
        size_mib: u64,
        limit_mib: u64,
    },
    #[error("kernel command line is too long or invalid ({0}); the limit is {CMDLINE_MAX} bytes")]
    Cmdline(String),
    #[error("writing boot data into guest memory failed: {0}")]
    Memory(String),
}

/// How the vCPU enters the loaded kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// The boot protocol's 64-bit entry: long mode, RSI = boot_params.
    Long64,
    /// PVH: 32-bit protected mode, paging off, EBX = hvm_start_info.
    Pvh32,
}

/// Where the loaded kernel starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxEntry {
    /// Entry point: startup_64 (bzImage) or the PVH entry (vmlinux).
    pub entry: u64,
    /// The zero page (boot_params, passed in RSI) or hvm_start_info (EBX).
    pub boot_params: u64,
    pub mode: EntryMode,
}

/// Loads a bzImage, initrd and command line into `mem` and writes the zero
/// page. `acpi_rsdp` is the RSDP address, if ACPI tables were laid out.
pub fn load(
    mem: &GuestMem,
    layout: &MemoryLayout,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    acpi_rsdp: Option<u64>,
) -> Result<LinuxEntry, LinuxBootError> {
    let mut kf = File::open(kernel).map_err(|source| LinuxBootError::KernelOpen {
        path: kernel.into(),
        source,
    })?;
    // Check the header ourselves first so a wrong file gets a clear message.
    let mut hdr = [0u8; 0x270];
    let n = read_full(&mut kf, &mut hdr).map_err(|source| LinuxBootError::KernelOpen {
        path: kernel.into(),
        source,
    })?;
    if n >= 4 && hdr[..4] == *b"\x7fELF" {
        return load_pvh(mem, layout, kernel, kf, initrd, cmdline, acpi_rsdp);
    }
    if n < 0x238 || &hdr[0x202..0x206] != b"HdrS" || hdr[0x1fe..0x200] != [0x55, 0xaa] {
        return Err(LinuxBootError::NotAKernel {
            path: kernel.into(),
        });
    }
    let version = u16::from_le_bytes([hdr[0x206], hdr[0x207]]);
    let xloadflags = u16::from_le_bytes([hdr[0x236], hdr[0x237]]);
    if version < 0x020c || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LinuxBootError::No64BitEntry {
            path: kernel.into(),
        });
    }
    kf.seek(SeekFrom::Start(0))
        .map_err(|source| LinuxBootError::KernelOpen {
            path: kernel.into(),
            source,
        })?;
    let loaded = BzImage::load(mem, None, &mut kf, Some(GuestAddress(ONE_MIB))).map_err(|e| {
        LinuxBootError::KernelLoad {
            path: kernel.into(),
            detail: e.to_string(),
        }
    })?;
    let mut setup = loaded
        .setup_header
        .ok_or_else(|| LinuxBootError::NotAKernel {
            path: kernel.into(),
        })?;

    // Command line.
    let limit = (setup.cmdline_size as usize).clamp(256, CMDLINE_MAX);
    let mut cl = Cmdline::new(limit).map_err(|e| LinuxBootError::Cmdline(e.to_string()))?;
    if !cmdline.is_empty() {
        cl.insert_str(cmdline)
            .map_err(|e| LinuxBootError::Cmdline(e.to_string()))?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)
        .map_err(|e| LinuxBootError::Cmdline(e.to_string()))?;
    setup.cmd_line_ptr = CMDLINE_ADDR as u32;
    setup.cmdline_size = cmdline.len() as u32 + 1;

    // Initrd: as high as allowed, below the kernel's limit and low RAM.
    if let Some(path) = initrd {
        let max = if setup.initrd_addr_max == 0 {
            0x37ff_ffff
        } else {
            setup.initrd_addr_max as u64
        };
        let (start, size) = load_initrd(mem, layout, path, max, loaded.kernel_end)?;
        setup.ramdisk_image = start as u32;
        setup.ramdisk_size = size as u32;
    }

    setup.type_of_loader = 0xff;
    setup.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    setup.boot_flag = 0xaa55;
    setup.header = 0x5372_6448;
    setup.heap_end_ptr = 0xfe00;

    let mut params = boot_params {
        hdr: setup,
        ..Default::default()
    };
    if let Some(rsdp) = acpi_rsdp {
        params.acpi_rsdp_addr = rsdp;
    }
    let e820 = layout.e820_direct();
    if e820.len() > params.e820_table.len() {
        return Err(LinuxBootError::Memory("e820 map too long".into()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(e820.iter()) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(|e| LinuxBootError::Memory(e.to_string()))?;

    Ok(LinuxEntry {
        entry: loaded.kernel_load.raw_value() + 0x200,
        boot_params: ZERO_PAGE,
        mode: EntryMode::Long64,
    })
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Places the initrd page-aligned as high as possible below `max` (and low
/// RAM), above `kernel_end`. Returns (start, size).
fn load_initrd(
    mem: &GuestMem,
    layout: &MemoryLayout,
    path: &Path,
    max: u64,
    kernel_end: u64,
) -> Result<(u64, u64), LinuxBootError> {
    let mut f = File::open(path).map_err(|source| LinuxBootError::InitrdOpen {
        path: path.into(),
        source,
    })?;
    let size = f
        .metadata()
        .map_err(|source| LinuxBootError::InitrdOpen {
            path: path.into(),
            source,
        })?
        .len();
    let top = layout.low.min(max.saturating_add(1));
    let bottom = kernel_end.max(ONE_MIB);
    let too_big = || LinuxBootError::InitrdTooBig {
        path: path.into(),
        size_mib: size.div_ceil(1 << 20),
        limit_mib: top >> 20,
    };
    let start = top.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if start < bottom {
        return Err(too_big());
    }
    mem.read_volatile_from(GuestAddress(start), &mut f, size as usize)
        .map_err(|e| LinuxBootError::Memory(format!("initrd: {e}")))?;
    Ok((start, size))
}

/// The PVH boot of an ELF vmlinux: segments at their physical addresses,
/// then hvm_start_info (version 1) with the e820 map, the command line, the
/// RSDP and the initrd as the only module.
fn load_pvh(
    mem: &GuestMem,
    layout: &MemoryLayout,
    kernel: &Path,
    mut kf: File,
    initrd: Option<&Path>,
    cmdline: &str,
    acpi_rsdp: Option<u64>,
) -> Result<LinuxEntry, LinuxBootError> {
    let loaded = Elf::load(mem, None, &mut kf, Some(GuestAddress(ONE_MIB))).map_err(|e| {
        LinuxBootError::KernelLoad {
            path: kernel.into(),
            detail: e.to_string(),
        }
    })?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => a.raw_value(),
        _ => {
            return Err(LinuxBootError::NoPvhEntry {
                path: kernel.into(),
            })
        }
    };
    if cmdline.len() >= CMDLINE_MAX {
        return Err(LinuxBootError::Cmdline(format!("{} bytes", cmdline.len())));
    }
    let mut cl = Cmdline::new(CMDLINE_MAX).map_err(|e| LinuxBootError::Cmdline(e.to_string()))?;
    if !cmdline.is_empty() {
        cl.insert_str(cmdline)
            .map_err(|e| LinuxBootError::Cmdline(e.to_string()))?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)
        .map_err(|e| LinuxBootError::Cmdline(e.to_string()))?;

    let memmap: Vec<hvm_memmap_table_entry> = layout
        .e820_direct()
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: acpi_rsdp.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_START_INFO));
    if let Some(path) = initrd {
        // The kernel's own limit for a bzImage initrd; PVH names none.
        let (start, size) = load_initrd(mem, layout, path, 0x37ff_ffff, loaded.kernel_end)?;
        let module = hvm_modlist_entry {
            paddr: start,
            size,
            ..Default::default()
        };
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST;
        params = BootParams::new(&info, GuestAddress(PVH_START_INFO));
        params.set_modules(&[module], GuestAddress(PVH_MODLIST));
    }
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP));
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| LinuxBootError::Memory(e.to_string()))?;
    Ok(LinuxEntry {
        entry,
        boot_params: PVH_START_INFO,
        mode: EntryMode::Pvh32,
    })
}

/// Reads the zero page back (tests and diagnostics).
pub fn read_boot_params(mem: &GuestMem) -> Option<boot_params> {
    mem.read_obj(GuestAddress(ZERO_PAGE)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MIB;
    use std::io::Write;

    /// A minimal boot-protocol image: a boot sector with the setup header,
    /// one setup sector, then a protected-mode payload.
    fn fake_kernel(xlf64: bool) -> tempfile::NamedTempFile {
        let mut img = vec![0u8; 512 * 2 + 4096];
        img[0x1f1] = 1; // setup_sects
        img[0x1fe] = 0x55;
        img[0x1ff] = 0xaa;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        img[0x236..0x238].copy_from_slice(&(if xlf64 { 3u16 } else { 0 }).to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        img[1024] = 0xf4; // payload
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&img).unwrap();
        f
    }

    #[test]
    fn boot_params_are_written() {
        let layout = MemoryLayout::new(64 * MIB);
        let mem = layout.allocate().unwrap();
        let k = fake_kernel(true);
        let mut initrd = tempfile::NamedTempFile::new().unwrap();
        initrd.write_all(&[0x5a; 10000]).unwrap();
        let e = load(
            &mem,
            &layout,
            k.path(),
            Some(initrd.path()),
            "console=ttyS0 x=1",
            Some(0xe0000),
        )
        .unwrap();
        assert_eq!(e.entry, 0x10_0200);
        let bp = read_boot_params(&mem).unwrap();
        assert_eq!({ bp.hdr.type_of_loader }, 0xff);
        assert_eq!({ bp.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        let mut cl = [0u8; 18];
        mem.read_slice(&mut cl, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&cl, b"console=ttyS0 x=1\0");
        assert_eq!({ bp.acpi_rsdp_addr }, 0xe0000);
        let n = bp.e820_entries as usize;
        let want = layout.e820_direct();
        assert_eq!(n, want.len());
        for (got, w) in bp.e820_table.iter().zip(want.iter()) {
            assert_eq!(
                ({ got.addr }, { got.size }, { got.r#type }),
                (w.addr, w.size, w.kind)
            );
        }
        // The initrd sits page-aligned at the top of RAM.
        let (start, size) = ({ bp.hdr.ramdisk_image } as u64, { bp.hdr.ramdisk_size }
            as u64);
        assert_eq!(size, 10000);
        assert_eq!(start % 4096, 0);
        assert!(start + size <= 64 * MIB);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(start + 9999)).unwrap(),
            0x5a
        );
        // The payload landed at 1 MiB.
        assert_eq!(mem.read_obj::<u8>(GuestAddress(ONE_MIB)).unwrap(), 0xf4);
    }

    #[test]
    fn bad_kernels_are_refused() {
        let layout = MemoryLayout::new(64 * MIB);
        let mem = layout.allocate().unwrap();
        let mut junk = tempfile::NamedTempFile::new().unwrap();
        junk.write_all(&[0u8; 4096]).unwrap();
        let err = load(&mem, &layout, junk.path(), None, "", None).unwrap_err();
        assert!(matches!(err, LinuxBootError::NotAKernel { .. }), "{err}");
        let err = load(
            &mem,
            &layout,
            Path::new("/nonexistent/vmlinuz"),
            None,
            "",
            None,
        )
        .unwrap_err();
        assert!(matches!(err, LinuxBootError::KernelOpen { .. }), "{err}");
        let k32 = fake_kernel(false);
        let err = load(&mem, &layout, k32.path(), None, "", None).unwrap_err();
        assert!(matches!(err, LinuxBootError::No64BitEntry { .. }), "{err}");
    }

    #[test]
    fn initrd_that_does_not_fit_is_refused() {
        let layout = MemoryLayout::new(8 * MIB);
        let mem = layout.allocate().unwrap();
        let k = fake_kernel(true);
        let big = tempfile::NamedTempFile::new().unwrap();
        big.as_file().set_len(16 * MIB).unwrap();
        let err = load(&mem, &layout, k.path(), Some(big.path()), "", None).unwrap_err();
        assert!(matches!(err, LinuxBootError::InitrdTooBig { .. }), "{err}");
        assert!(err.to_string().contains("more --memory"));
    }
}
