//! QEMU's firmware configuration device (fw_cfg), I/O-port flavour, as
//! SeaBIOS (`src/fw/paravirt.c`) and Linux (`drivers/firmware/qemu_fw_cfg.c`)
//! drive it on a PC.
//!
//! Registers, relative to the base port 0x510 (the device spans 0x0C ports):
//! - offset 0 (0x510), 16-bit write: selector. Bits 0..13 pick the item,
//!   bit 15 is the "architecture local" bit (kept as part of the key), bit 14
//!   (write channel) is ignored. Selecting rewinds the item to offset 0.
//! - offset 1 (0x511), byte reads: the selected item's bytes, auto-increment.
//!   Reads past the end of an item, or of an item that does not exist, are 0.
//!   Writes are ignored (no writable items).
//! - offsets 4..0xB (0x514..0x51B): the DMA address register, big-endian
//!   64 bits, written as two 32-bit halves; the write of the low half (0x518)
//!   starts the transfer. Reading the register returns "QEMU CFG".
//!
//! DMA: the guest puts a `FWCfgDmaAccess { be32 control; be32 length; be64
//! address }` in its memory and writes that structure's address. Control bits
//! SELECT (with the key in bits 16..31), READ and SKIP are implemented; WRITE
//! is refused with the ERROR bit. When the transfer finishes the control word
//! is written back as 0 (done) or ERROR. A descriptor or a target buffer
//! outside guest memory gives ERROR, never a panic.
//!
//! Items: signature, ID (traditional + DMA), UUID, RAM size, nographic,
//! CPU counts, machine id, boot device, NUMA (no nodes), boot menu, the file
//! directory (0x19) and named files from key 0x20 up (`etc/e820`, `bootorder`,
//! the ACPI linker/loader files, ...). Missing: the Linux-boot option ROM
//! protocol (the KERNEL_* keys can be filled with [`FwCfg::set_item`] but no
//! linuxboot ROM is provided), writable files, the MMIO flavour.

use std::collections::BTreeMap;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{le_value, BusDevice};

/// First port of the device.
pub const FW_CFG_PORT_BASE: u16 = 0x510;
/// Number of ports the device decodes (0x510..=0x51B).
pub const FW_CFG_PORT_LEN: u64 = 0x0C;

pub const FW_CFG_SIGNATURE: u16 = 0x00;
pub const FW_CFG_ID: u16 = 0x01;
pub const FW_CFG_UUID: u16 = 0x02;
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
pub const FW_CFG_NOGRAPHIC: u16 = 0x04;
pub const FW_CFG_NB_CPUS: u16 = 0x05;
pub const FW_CFG_MACHINE_ID: u16 = 0x06;
pub const FW_CFG_KERNEL_ADDR: u16 = 0x07;
pub const FW_CFG_KERNEL_SIZE: u16 = 0x08;
pub const FW_CFG_KERNEL_CMDLINE: u16 = 0x09;
pub const FW_CFG_INITRD_ADDR: u16 = 0x0A;
pub const FW_CFG_INITRD_SIZE: u16 = 0x0B;
pub const FW_CFG_BOOT_DEVICE: u16 = 0x0C;
pub const FW_CFG_NUMA: u16 = 0x0D;
pub const FW_CFG_BOOT_MENU: u16 = 0x0E;
pub const FW_CFG_MAX_CPUS: u16 = 0x0F;
pub const FW_CFG_KERNEL_ENTRY: u16 = 0x10;
pub const FW_CFG_KERNEL_DATA: u16 = 0x11;
pub const FW_CFG_INITRD_DATA: u16 = 0x12;
pub const FW_CFG_CMDLINE_ADDR: u16 = 0x13;
pub const FW_CFG_CMDLINE_SIZE: u16 = 0x14;
pub const FW_CFG_CMDLINE_DATA: u16 = 0x15;
pub const FW_CFG_SETUP_ADDR: u16 = 0x16;
pub const FW_CFG_SETUP_SIZE: u16 = 0x17;
pub const FW_CFG_SETUP_DATA: u16 = 0x18;
pub const FW_CFG_FILE_DIR: u16 = 0x19;
/// Key of the first named file.
pub const FW_CFG_FILE_FIRST: u16 = 0x20;
/// Architecture-local bit of a key.
pub const FW_CFG_ARCH_LOCAL: u16 = 0x8000;
/// x86: whether IRQ0 is overridden to GSI2 (QEMU sets 1).
pub const FW_CFG_IRQ0_OVERRIDE: u16 = FW_CFG_ARCH_LOCAL | 2;
/// Bit 14 of a selector: the (legacy) write channel; ignored.
const FW_CFG_WRITE_CHANNEL: u16 = 0x4000;
/// Largest key a file may get (bits 0..13).
const FW_CFG_FILE_LAST: u16 = 0x3FFF;

/// Bit 0 of the ID item: traditional (port) interface.
pub const FW_CFG_VERSION: u32 = 1 << 0;
/// Bit 1 of the ID item: DMA interface.
pub const FW_CFG_VERSION_DMA: u32 = 1 << 1;

pub const FW_CFG_DMA_CTL_ERROR: u32 = 0x01;
pub const FW_CFG_DMA_CTL_READ: u32 = 0x02;
pub const FW_CFG_DMA_CTL_SKIP: u32 = 0x04;
pub const FW_CFG_DMA_CTL_SELECT: u32 = 0x08;
pub const FW_CFG_DMA_CTL_WRITE: u32 = 0x10;

/// Value read from the DMA address register: "QEMU CFG" big-endian.
const DMA_SIGNATURE: &[u8; 8] = b"QEMU CFG";

/// Longest file name, without the terminating NUL.
pub const FW_CFG_MAX_NAME: usize = 55;
/// Size of a file directory entry.
const FILE_DIR_ENTRY: usize = 64;

/// e820 types as in the "etc/e820" file.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// SeaBIOS boot-order path of an IDE drive on the PIIX3 IDE function
/// (slot 1, function 1): `channel` 0 = primary, 1 = secondary; `slave` 0 =
/// master. E.g. the CD as secondary master is
/// `/pci@i0cf8/ide@1,1/drive@1/disk@0`.
pub fn boot_path_ide(channel: u8, slave: u8) -> String {
    format!("/pci@i0cf8/ide@1,1/drive@{channel:x}/disk@{slave:x}")
}

/// SeaBIOS boot-order path prefix of a PCI device on bus 0 (virtio-blk,
/// NIC option ROM): `/pci@i0cf8/<name>@<slot>[,<fn>]`. SeaBIOS matches the
/// device part with a wildcard, so `name` is informative only.
pub fn boot_path_pci(name: &str, slot: u8, function: u8) -> String {
    if function == 0 {
        format!("/pci@i0cf8/{name}@{slot:x}")
    } else {
        format!("/pci@i0cf8/{name}@{slot:x},{function:x}")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    #[error("fw_cfg file name {0:?} is empty, longer than 55 bytes or contains NUL")]
    BadName(String),
    #[error("fw_cfg file {0:?} already exists")]
    Duplicate(String),
    #[error("fw_cfg has no free file slot")]
    TooManyFiles,
    #[error("fw_cfg item {0:?} is larger than 4 GiB")]
    TooLarge(String),
}

struct FileEntry {
    name: String,
    key: u16,
}

/// The fw_cfg device. Insert it on the port bus at [`FW_CFG_PORT_BASE`] with
/// length [`FW_CFG_PORT_LEN`].
pub struct FwCfg {
    mem: GuestMemoryMmap<()>,
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<FileEntry>,
    /// Currently selected key (write-channel bit stripped).
    selector: u16,
    /// Read position inside the selected item.
    offset: usize,
    /// High half of the DMA address, waiting for the low half.
    dma_high: u32,
}

impl FwCfg {
    /// A device with the fixed items (signature, ID with DMA, zero UUID,
    /// one CPU, no RAM) and an empty file directory.
    pub fn new(mem: GuestMemoryMmap<()>) -> Self {
        let mut fw = Self {
            mem,
            items: BTreeMap::new(),
            files: Vec::new(),
            selector: 0,
            offset: 0,
            dma_high: 0,
        };
        fw.set_item(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        fw.set_item(
            FW_CFG_ID,
            (FW_CFG_VERSION | FW_CFG_VERSION_DMA).to_le_bytes().to_vec(),
        );
        fw.set_item(FW_CFG_UUID, vec![0; 16]);
        fw.set_item(FW_CFG_NOGRAPHIC, 0u16.to_le_bytes().to_vec());
        fw.set_item(FW_CFG_MACHINE_ID, 0u32.to_le_bytes().to_vec());
        fw.set_item(FW_CFG_BOOT_DEVICE, 0u16.to_le_bytes().to_vec());
        fw.set_item(FW_CFG_BOOT_MENU, 0u16.to_le_bytes().to_vec());
        fw.set_item(FW_CFG_IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec());
        fw.set_ram_size(0);
        fw.set_cpus(1);
        fw.rebuild_dir();
        fw
    }

    /// Sets (or replaces) a numbered item. The write-channel bit of `key`
    /// is ignored. Keys that belong to files should be set through
    /// [`FwCfg::add_file`]/[`FwCfg::set_file`].
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) {
        let key = key & !FW_CFG_WRITE_CHANNEL;
        self.items.insert(key, data);
        if self.files.iter().any(|f| f.key == key) {
            self.rebuild_dir();
        }
    }

    /// The contents of an item, if it exists (tests, debugging).
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items
            .get(&(key & !FW_CFG_WRITE_CHANNEL))
            .map(Vec::as_slice)
    }

    /// The key a named file got, if it exists.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        self.files.iter().find(|f| f.name == name).map(|f| f.key)
    }

    /// Adds a named file; its key is the next free one from 0x20.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        if name.is_empty() || name.len() > FW_CFG_MAX_NAME || name.contains('\0') {
            return Err(FwCfgError::BadName(name.to_string()));
        }
        if self.file_key(name).is_some() {
            return Err(FwCfgError::Duplicate(name.to_string()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge(name.to_string()));
        }
        let count = u16::try_from(self.files.len()).map_err(|_| FwCfgError::TooManyFiles)?;
        let key = FW_CFG_FILE_FIRST
            .checked_add(count)
            .filter(|k| *k <= FW_CFG_FILE_LAST)
            .ok_or(FwCfgError::TooManyFiles)?;
        self.files.push(FileEntry {
            name: name.to_string(),
            key,
        });
        self.items.insert(key, data);
        self.rebuild_dir();
        Ok(())
    }

    /// Adds or replaces several files, e.g. the ACPI linker/loader files
    /// from `crate::acpi::AcpiTables::fw_cfg_files`.
    pub fn set_files(
        &mut self,
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<(), FwCfgError> {
        for (name, data) in files {
            self.set_file(&name, data)?;
        }
        Ok(())
    }

    /// Adds a named file or replaces the contents of an existing one.
    pub fn set_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        match self.file_key(name) {
            Some(key) => {
                if u32::try_from(data.len()).is_err() {
                    return Err(FwCfgError::TooLarge(name.to_string()));
                }
                self.items.insert(key, data);
                self.rebuild_dir();
                Ok(())
            }
            None => self.add_file(name, data),
        }
    }

    /// RAM_SIZE item (u64, little-endian).
    pub fn set_ram_size(&mut self, bytes: u64) {
        self.set_item(FW_CFG_RAM_SIZE, bytes.to_le_bytes().to_vec());
    }

    /// NB_CPUS and MAX_CPUS (u16) and a NUMA item with no nodes for `n`
    /// CPUs (u64 node count 0, then one u64 per CPU).
    pub fn set_cpus(&mut self, n: u16) {
        self.set_item(FW_CFG_NB_CPUS, n.to_le_bytes().to_vec());
        self.set_item(FW_CFG_MAX_CPUS, n.to_le_bytes().to_vec());
        self.set_item(FW_CFG_NUMA, vec![0; 8 * (1 + usize::from(n))]);
    }

    /// 16-byte SMBIOS/system UUID.
    pub fn set_uuid(&mut self, uuid: [u8; 16]) {
        self.set_item(FW_CFG_UUID, uuid.to_vec());
    }

    /// The `etc/e820` file: packed little-endian `{u64 addr, u64 len, u32
    /// type}` entries (see [`E820_RAM`], [`E820_RESERVED`]).
    pub fn set_e820(&mut self, entries: &[(u64, u64, u32)]) {
        let mut data = Vec::with_capacity(entries.len() * 20);
        for (addr, len, ty) in entries {
            data.extend_from_slice(&addr.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(&ty.to_le_bytes());
        }
        self.set_named("etc/e820", data);
    }

    /// The `bootorder` file: one OpenFirmware path per line, in priority
    /// order (see [`boot_path_ide`], [`boot_path_pci`]). SeaBIOS matches
    /// each line as a prefix, with `*` in its own device paths as wildcard.
    pub fn set_boot_order(&mut self, devices: &[&str]) {
        let mut data = devices.join("\n").into_bytes();
        data.push(0);
        self.set_named("bootorder", data);
    }

    /// Whether SeaBIOS shows its boot menu (item 0x0E, which SeaBIOS reads
    /// as `etc/show-boot-menu`), and how long it waits (`etc/boot-menu-wait`,
    /// milliseconds).
    pub fn set_boot_menu(&mut self, show: bool, wait_ms: u16) {
        self.set_item(FW_CFG_BOOT_MENU, u16::from(show).to_le_bytes().to_vec());
        self.set_named("etc/boot-menu-wait", wait_ms.to_le_bytes().to_vec());
    }

    /// `etc/boot-fail-wait`: milliseconds SeaBIOS waits before rebooting
    /// when no device boots (SeaBIOS default 60 s; `u32::MAX` = never).
    pub fn set_boot_fail_wait(&mut self, ms: u32) {
        self.set_named("etc/boot-fail-wait", ms.to_le_bytes().to_vec());
    }

    fn set_named(&mut self, name: &str, data: Vec<u8>) {
        if let Err(e) = self.set_file(name, data) {
            log::error!("fw_cfg: {e}");
        }
    }

    /// Regenerates the FILE_DIR item: be32 count, then 64-byte entries
    /// `{be32 size, be16 select, u16 reserved, char name[56]}`.
    fn rebuild_dir(&mut self) {
        let mut dir = Vec::with_capacity(4 + FILE_DIR_ENTRY * self.files.len());
        dir.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for f in &self.files {
            let size = self.items.get(&f.key).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&f.key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut name = [0u8; 56];
            for (d, s) in name.iter_mut().zip(f.name.as_bytes()) {
                *d = *s;
            }
            dir.extend_from_slice(&name);
        }
        self.items.insert(FW_CFG_FILE_DIR, dir);
    }

    fn select(&mut self, key: u16) {
        self.selector = key & !FW_CFG_WRITE_CHANNEL;
        self.offset = 0;
    }

    fn current(&self) -> &[u8] {
        self.items.get(&self.selector).map_or(&[], Vec::as_slice)
    }

    fn read_data_byte(&mut self) -> u8 {
        match self.current().get(self.offset).copied() {
            Some(b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// Runs the DMA request whose descriptor is at guest address `desc`.
    fn dma(&mut self, desc: u64) {
        let ga = GuestAddress(desc);
        let mut hdr = [0u8; 16];
        if self.mem.read_slice(&mut hdr, ga).is_err() {
            // Nothing sensible to do; try to report, ignore failure.
            let _ = self
                .mem
                .write_slice(&FW_CFG_DMA_CTL_ERROR.to_be_bytes(), ga);
            return;
        }
        let control = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let length = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&hdr[8..16]);
        let address = u64::from_be_bytes(a);
        let status = match self.dma_transfer(control, length, address) {
            Ok(()) => 0,
            Err(()) => FW_CFG_DMA_CTL_ERROR,
        };
        if self.mem.write_slice(&status.to_be_bytes(), ga).is_err() {
            log::debug!("fw_cfg: DMA descriptor at {desc:#x} not writable");
        }
    }

    fn dma_transfer(&mut self, control: u32, length: u32, address: u64) -> Result<(), ()> {
        if control & FW_CFG_DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let len = length as usize;
        if control & FW_CFG_DMA_CTL_READ != 0 {
            let dst = GuestAddress(address);
            if address.checked_add(u64::from(length)).is_none()
                || !GuestMemoryBackend::check_range(&self.mem, dst, len)
            {
                return Err(());
            }
            let item = self
                .items
                .get(&self.selector)
                .map_or(&[][..], Vec::as_slice);
            let avail = item.get(self.offset..).unwrap_or(&[]);
            let n = avail.len().min(len);
            let chunk = avail.get(..n).unwrap_or(&[]);
            self.mem.write_slice(chunk, dst).map_err(|_| ())?;
            // Past the end of the item the guest buffer is zero-filled.
            let zeros = [0u8; 4096];
            let mut done = n;
            while done < len {
                let step = (len - done).min(zeros.len());
                let at = GuestAddress(address + done as u64);
                self.mem
                    .write_slice(zeros.get(..step).unwrap_or(&[]), at)
                    .map_err(|_| ())?;
                done += step;
            }
            self.offset += n;
            Ok(())
        } else if control & FW_CFG_DMA_CTL_WRITE != 0 {
            // No writable items.
            Err(())
        } else if control & FW_CFG_DMA_CTL_SKIP != 0 {
            let item_len = self.current().len();
            if self.offset < item_len {
                self.offset = self.offset.saturating_add(len).min(item_len);
            }
            Ok(())
        } else {
            Ok(())
        }
    }

    fn dma_write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (4, 4) => {
                self.dma_high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            }
            (8, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let addr = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.dma(addr);
            }
            (4, 8) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(data);
                self.dma_high = 0;
                self.dma(u64::from_be_bytes(a));
            }
            _ => log::debug!(
                "fw_cfg: ignored {}-byte DMA register write at offset {offset}",
                data.len()
            ),
        }
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            1 => {
                for b in data.iter_mut() {
                    *b = self.read_data_byte();
                }
            }
            4..=0xB => {
                let start = (offset - 4) as usize;
                for (i, b) in data.iter_mut().enumerate() {
                    *b = DMA_SIGNATURE.get(start + i).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if !data.is_empty() => self.select(le_value(data) as u16),
            4..=0xB => self.dma_write(offset, data),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: usize = 0x10000;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap()
    }

    fn select(fw: &mut FwCfg, key: u16) {
        fw.write(0, &key.to_le_bytes());
    }

    fn read_bytes(fw: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                fw.read(1, &mut b);
                b[0]
            })
            .collect()
    }

    /// Writes a DMA descriptor at `desc` and kicks it through the ports.
    fn dma(fw: &mut FwCfg, m: &GuestMemoryMmap<()>, desc: u64, control: u32, len: u32, addr: u64) {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&addr.to_be_bytes());
        m.write_slice(&d, GuestAddress(desc)).unwrap();
        fw.write(4, &((desc >> 32) as u32).to_be_bytes());
        fw.write(8, &(desc as u32).to_be_bytes());
    }

    fn control_at(m: &GuestMemoryMmap<()>, desc: u64) -> u32 {
        let mut c = [0u8; 4];
        m.read_slice(&mut c, GuestAddress(desc)).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn signature_and_id() {
        let mut fw = FwCfg::new(mem());
        select(&mut fw, FW_CFG_SIGNATURE);
        assert_eq!(read_bytes(&mut fw, 4), b"QEMU");
        // Past the end: zeros.
        assert_eq!(read_bytes(&mut fw, 2), [0, 0]);
        select(&mut fw, FW_CFG_ID);
        let id = read_bytes(&mut fw, 4);
        assert_eq!(u32::from_le_bytes([id[0], id[1], id[2], id[3]]), 3);
        // Re-selecting rewinds.
        select(&mut fw, FW_CFG_SIGNATURE);
        assert_eq!(read_bytes(&mut fw, 1), b"Q");
        // A 4-byte read on the data port reads 4 consecutive bytes.
        let mut w = [0u8; 3];
        fw.read(1, &mut w);
        assert_eq!(&w, b"EMU");
    }

    #[test]
    fn dma_register_reads_signature() {
        let mut fw = FwCfg::new(mem());
        let mut b = [0u8; 4];
        fw.read(4, &mut b);
        assert_eq!(&b, b"QEMU");
        fw.read(8, &mut b);
        assert_eq!(&b, b" CFG");
    }

    #[test]
    fn numbered_items() {
        let mut fw = FwCfg::new(mem());
        fw.set_ram_size(512 << 20);
        fw.set_cpus(4);
        select(&mut fw, FW_CFG_RAM_SIZE);
        let r = read_bytes(&mut fw, 8);
        assert_eq!(u64::from_le_bytes(r.try_into().unwrap()), 512 << 20);
        select(&mut fw, FW_CFG_NB_CPUS);
        assert_eq!(read_bytes(&mut fw, 2), [4, 0]);
        select(&mut fw, FW_CFG_MAX_CPUS);
        assert_eq!(read_bytes(&mut fw, 2), [4, 0]);
        assert_eq!(fw.item(FW_CFG_NUMA).unwrap(), &[0u8; 40][..]);
        // Write-channel bit is ignored by the selector.
        select(&mut fw, FW_CFG_NB_CPUS | 0x4000);
        assert_eq!(read_bytes(&mut fw, 2), [4, 0]);
        // Arch-local keys are distinct from plain ones.
        select(&mut fw, FW_CFG_IRQ0_OVERRIDE);
        assert_eq!(read_bytes(&mut fw, 4), [1, 0, 0, 0]);
    }

    #[test]
    fn selector_out_of_range_reads_zeros() {
        let mut fw = FwCfg::new(mem());
        for key in [0x3FFF, 0x1234, 0xFFFF, 0x7FFF] {
            select(&mut fw, key);
            assert_eq!(read_bytes(&mut fw, 16), vec![0; 16], "key {key:#x}");
        }
        // A 1-byte selector write works too.
        fw.write(0, &[0]);
        assert_eq!(read_bytes(&mut fw, 4), b"QEMU");
    }

    fn parse_dir(fw: &mut FwCfg) -> Vec<(u32, u16, String)> {
        select(fw, FW_CFG_FILE_DIR);
        let c = read_bytes(fw, 4);
        let count = u32::from_be_bytes(c.try_into().unwrap());
        (0..count)
            .map(|_| {
                let e = read_bytes(fw, 64);
                let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
                let key = u16::from_be_bytes(e[4..6].try_into().unwrap());
                assert_eq!(&e[6..8], &[0, 0]);
                let name: Vec<u8> = e[8..].iter().copied().take_while(|b| *b != 0).collect();
                (size, key, String::from_utf8(name).unwrap())
            })
            .collect()
    }

    #[test]
    fn file_directory_and_file_read() {
        let mut fw = FwCfg::new(mem());
        assert!(parse_dir(&mut fw).is_empty());
        fw.add_file("etc/acpi/tables", vec![7; 300]).unwrap();
        fw.add_file("opt/hello", b"hello world".to_vec()).unwrap();
        let dir = parse_dir(&mut fw);
        assert_eq!(
            dir,
            vec![
                (300, 0x20, "etc/acpi/tables".to_string()),
                (11, 0x21, "opt/hello".to_string())
            ]
        );
        select(&mut fw, dir[1].1);
        assert_eq!(read_bytes(&mut fw, 13), b"hello world\0\0");
        // Replacing a file keeps its key and updates the size.
        fw.set_file("opt/hello", b"bye".to_vec()).unwrap();
        let dir = parse_dir(&mut fw);
        assert_eq!(dir[1], (3, 0x21, "opt/hello".to_string()));
        // Setting a file's key directly keeps the directory in step.
        fw.set_item(0x20, vec![1; 5]);
        assert_eq!(parse_dir(&mut fw)[0].0, 5);
    }

    #[test]
    fn acpi_files_are_served() {
        let mut fw = FwCfg::new(mem());
        let tables = crate::acpi::build(&crate::acpi::AcpiConfig::default()).unwrap();
        fw.set_files(tables.fw_cfg_files()).unwrap();
        let dir = parse_dir(&mut fw);
        let names: Vec<&str> = dir.iter().map(|d| d.2.as_str()).collect();
        assert_eq!(
            names,
            ["etc/acpi/rsdp", "etc/acpi/tables", "etc/table-loader"]
        );
        // The RSDP file reads back through the data port.
        select(&mut fw, dir[0].1);
        assert_eq!(read_bytes(&mut fw, 8), b"RSD PTR ");
        assert_eq!(dir[0].0, 36);
        assert_eq!(dir[2].0 % 128, 0);
    }

    #[test]
    fn file_name_rules() {
        let mut fw = FwCfg::new(mem());
        let long = "x".repeat(56);
        assert_eq!(
            fw.add_file(&long, vec![]),
            Err(FwCfgError::BadName(long.clone()))
        );
        assert!(fw.add_file(&long[..55], vec![1]).is_ok());
        assert_eq!(
            fw.add_file(&long[..55], vec![1]),
            Err(FwCfgError::Duplicate(long[..55].to_string()))
        );
        assert!(fw.add_file("", vec![]).is_err());
        // 55-byte name is NUL-terminated in the directory.
        let dir = parse_dir(&mut fw);
        assert_eq!(dir[0].2.len(), 55);
    }

    #[test]
    fn e820_and_bootorder_files() {
        let mut fw = FwCfg::new(mem());
        fw.set_e820(&[(0, 0x9FC00, E820_RAM), (0x100000, 0x3FF0_0000, E820_RAM)]);
        let key = fw.file_key("etc/e820").unwrap();
        let data = fw.item(key).unwrap().to_vec();
        assert_eq!(data.len(), 40);
        assert_eq!(
            u64::from_le_bytes(data[20..28].try_into().unwrap()),
            0x100000
        );
        assert_eq!(
            u64::from_le_bytes(data[28..36].try_into().unwrap()),
            0x3FF0_0000
        );
        assert_eq!(u32::from_le_bytes(data[36..40].try_into().unwrap()), 1);

        let cd = boot_path_ide(1, 0);
        let hd = boot_path_ide(0, 0);
        assert_eq!(cd, "/pci@i0cf8/ide@1,1/drive@1/disk@0");
        fw.set_boot_order(&[&cd, &hd]);
        let key = fw.file_key("bootorder").unwrap();
        assert_eq!(
            fw.item(key).unwrap(),
            b"/pci@i0cf8/ide@1,1/drive@1/disk@0\n/pci@i0cf8/ide@1,1/drive@0/disk@0\0"
        );
        // Setting it again replaces, not duplicates.
        fw.set_boot_order(&[&hd]);
        assert_eq!(parse_dir(&mut fw).len(), 2);
        assert_eq!(boot_path_pci("scsi", 4, 0), "/pci@i0cf8/scsi@4");
        assert_eq!(boot_path_pci("ide", 1, 1), "/pci@i0cf8/ide@1,1");
    }

    #[test]
    fn dma_read_file_with_select() {
        let m = mem();
        let mut fw = FwCfg::new(m.clone());
        let content: Vec<u8> = (0..200u8).collect();
        fw.add_file("etc/test", content.clone()).unwrap();
        let key = fw.file_key("etc/test").unwrap();
        m.write_slice(&[0xAA; 256], GuestAddress(0x2000)).unwrap();
        let ctl = (u32::from(key) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        dma(&mut fw, &m, 0x1000, ctl, 100, 0x2000);
        assert_eq!(control_at(&m, 0x1000), 0);
        let mut got = [0u8; 101];
        m.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        assert_eq!(&got[..100], &content[..100]);
        assert_eq!(got[100], 0xAA, "wrote past the requested length");
        // Continue without select; read past the end zero-fills.
        dma(&mut fw, &m, 0x1000, FW_CFG_DMA_CTL_READ, 150, 0x2000);
        assert_eq!(control_at(&m, 0x1000), 0);
        let mut got = [0u8; 151];
        m.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        assert_eq!(&got[..100], &content[100..]);
        assert!(got[100..150].iter().all(|b| *b == 0));
        assert_eq!(got[150], 0xAA);
    }

    #[test]
    fn dma_skip_then_read_and_64bit_kick() {
        let m = mem();
        let mut fw = FwCfg::new(m.clone());
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP;
        dma(&mut fw, &m, 0x1000, ctl, 2, 0);
        assert_eq!(control_at(&m, 0x1000), 0);
        // The port continues where DMA left off.
        assert_eq!(read_bytes(&mut fw, 2), b"MU");
        // One 8-byte write of the whole address also kicks.
        let mut d = Vec::new();
        d.extend_from_slice(&((u32::from(FW_CFG_SIGNATURE) << 16) | 0xA).to_be_bytes());
        d.extend_from_slice(&4u32.to_be_bytes());
        d.extend_from_slice(&0x3000u64.to_be_bytes());
        m.write_slice(&d, GuestAddress(0x1800)).unwrap();
        fw.write(4, &0x1800u64.to_be_bytes());
        assert_eq!(control_at(&m, 0x1800), 0);
        let mut got = [0u8; 4];
        m.read_slice(&mut got, GuestAddress(0x3000)).unwrap();
        assert_eq!(&got, b"QEMU");
    }

    #[test]
    fn dma_bad_target_sets_error() {
        let m = mem();
        let mut fw = FwCfg::new(m.clone());
        let ctl = FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        // Target outside guest memory.
        dma(&mut fw, &m, 0x1000, ctl, 4, 0x1_0000_0000);
        assert_eq!(control_at(&m, 0x1000), FW_CFG_DMA_CTL_ERROR);
        // Target straddling the end of memory: nothing written.
        m.write_slice(&[0xAA; 2], GuestAddress(RAM as u64 - 2))
            .unwrap();
        dma(&mut fw, &m, 0x1000, ctl, 4, RAM as u64 - 2);
        assert_eq!(control_at(&m, 0x1000), FW_CFG_DMA_CTL_ERROR);
        let mut tail = [0u8; 2];
        m.read_slice(&mut tail, GuestAddress(RAM as u64 - 2))
            .unwrap();
        assert_eq!(tail, [0xAA, 0xAA]);
        // Huge length and wrapping address.
        dma(&mut fw, &m, 0x1000, ctl, u32::MAX, 0x2000);
        assert_eq!(control_at(&m, 0x1000), FW_CFG_DMA_CTL_ERROR);
        dma(&mut fw, &m, 0x1000, ctl, 16, u64::MAX - 4);
        assert_eq!(control_at(&m, 0x1000), FW_CFG_DMA_CTL_ERROR);
        // Descriptor itself outside memory: no panic, nothing to report.
        fw.write(4, &0xFFFF_FFFFu32.to_be_bytes());
        fw.write(8, &0xFFFF_FFF8u32.to_be_bytes());
        // The high half was consumed: a fresh low write targets below 4 GiB.
        dma(&mut fw, &m, 0x1000, ctl, 4, 0x2000);
        assert_eq!(control_at(&m, 0x1000), 0);
    }

    #[test]
    fn dma_low_half_only_as_seabios_does() {
        // SeaBIOS writes only 0x518 (its descriptor is below 4 GiB).
        let m = mem();
        let mut fw = FwCfg::new(m.clone());
        fw.set_boot_fail_wait(5000);
        let key = fw.file_key("etc/boot-fail-wait").unwrap();
        let mut d = Vec::new();
        let ctl = (u32::from(key) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        d.extend_from_slice(&ctl.to_be_bytes());
        d.extend_from_slice(&4u32.to_be_bytes());
        d.extend_from_slice(&0x4000u64.to_be_bytes());
        m.write_slice(&d, GuestAddress(0x1230)).unwrap();
        fw.write(8, &0x1230u32.to_be_bytes());
        assert_eq!(control_at(&m, 0x1230), 0);
        let mut got = [0u8; 4];
        m.read_slice(&mut got, GuestAddress(0x4000)).unwrap();
        assert_eq!(u32::from_le_bytes(got), 5000);
    }

    #[test]
    fn dma_write_is_refused() {
        let m = mem();
        let mut fw = FwCfg::new(m.clone());
        fw.add_file("etc/x", vec![1, 2, 3, 4]).unwrap();
        let key = fw.file_key("etc/x").unwrap();
        m.write_slice(&[9; 4], GuestAddress(0x2000)).unwrap();
        let ctl = (u32::from(key) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_WRITE;
        dma(&mut fw, &m, 0x1000, ctl, 4, 0x2000);
        assert_eq!(control_at(&m, 0x1000), FW_CFG_DMA_CTL_ERROR);
        assert_eq!(fw.item(key).unwrap(), &[1, 2, 3, 4]);
        // Data-port writes are ignored too.
        fw.write(1, &[0xFF]);
        select(&mut fw, key);
        assert_eq!(read_bytes(&mut fw, 4), [1, 2, 3, 4]);
    }

    #[test]
    fn guest_hostile_register_accesses() {
        let mut fw = FwCfg::new(mem());
        // Odd widths and offsets must not panic.
        for off in 0..16u64 {
            for len in 0..9usize {
                let mut buf = vec![0u8; len];
                fw.read(off, &mut buf);
                fw.write(off, &vec![0xFF; len]);
            }
        }
        // The selector register reads as zero.
        let mut b = [0xFFu8; 2];
        fw.read(0, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
