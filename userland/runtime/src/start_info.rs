//! The PVH `hvm_start_info` structure and [`BootInfo`], the runtime's own copy of it.
//!
//! Layout from Xen `xen/include/public/arch-x86/hvm/start_info.h`, version 1. The
//! runtime copies the command line and the memory map into [`BootInfo`] (which lives on
//! the boot stack for the whole run), so that the guest may later overwrite the
//! loader's structures; it also remembers where those were ([`BootInfo::boot_data_ranges`])
//! for guests that want to leave them intact.

use crate::command_line::CommandLine;
use crate::memory::MemoryRange;

/// `hvm_start_info.magic`: "xEn3" with the top bit set.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Memory-map entry type of usable RAM (the E820 numbering).
pub const MEMORY_TYPE_RAM: u32 = 1;
/// At most this many memory-map entries are kept; the rest are dropped (and counted).
pub const MAX_MEMORY_MAP_ENTRIES: usize = 64;
/// At most this many bytes of command line are kept.
pub const MAX_COMMAND_LINE_LENGTH: usize = 1024;
/// At most this many boot-data ranges are remembered.
pub const MAX_BOOT_DATA_RANGES: usize = 12;

/// `struct hvm_start_info` (version 1 fields included).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RawStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RawMemoryMapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// `struct hvm_modlist_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RawModule {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

/// One memory-map entry: a guest-physical range and its E820-style type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapEntry {
    pub range: MemoryRange,
    /// 1 = RAM ([`MEMORY_TYPE_RAM`]); anything else is not for the guest to use.
    pub kind: u32,
}

impl MemoryMapEntry {
    pub fn is_ram(&self) -> bool {
        self.kind == MEMORY_TYPE_RAM
    }
}

/// Why a start_info could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// The magic number did not match (no PVH loader, or a wrong address in EBX).
    BadMagic(u32),
}

/// What the loader told the guest, copied into the runtime.
#[derive(Clone, Debug)]
pub struct BootInfo {
    start_info_address: u64,
    version: u32,
    command_line_bytes: [u8; MAX_COMMAND_LINE_LENGTH],
    command_line_length: usize,
    memory_map: [MemoryMapEntry; MAX_MEMORY_MAP_ENTRIES],
    memory_map_length: usize,
    memory_map_entries_dropped: usize,
    boot_data: [MemoryRange; MAX_BOOT_DATA_RANGES],
    boot_data_length: usize,
    rsdp_address: u64,
}

impl BootInfo {
    fn empty(start_info_address: u64, version: u32) -> BootInfo {
        BootInfo {
            start_info_address,
            version,
            command_line_bytes: [0; MAX_COMMAND_LINE_LENGTH],
            command_line_length: 0,
            memory_map: [MemoryMapEntry {
                range: MemoryRange::new(0, 0),
                kind: 0,
            }; MAX_MEMORY_MAP_ENTRIES],
            memory_map_length: 0,
            memory_map_entries_dropped: 0,
            boot_data: [MemoryRange::new(0, 0); MAX_BOOT_DATA_RANGES],
            boot_data_length: 0,
            rsdp_address: 0,
        }
    }

    /// Reads and copies the start_info at `address` and everything it points to.
    ///
    /// # Safety
    ///
    /// `address` and the command line, memory map and module list it names must be
    /// readable guest-physical memory that is mapped at the same virtual address (the
    /// runtime's identity map of the first 4 GiB) and not written concurrently.
    pub unsafe fn from_start_info(address: u64) -> Result<BootInfo, StartInfoError> {
        // SAFETY: the caller guarantees `address` is readable; read_unaligned makes no
        // alignment assumption about where the loader put the structure.
        let raw = unsafe { core::ptr::read_unaligned(address as *const RawStartInfo) };
        if raw.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(raw.magic));
        }
        let mut info = BootInfo::empty(address, raw.version);
        // Version 0 ends after rsdp_paddr; memmap_* exist from version 1 on.
        let size = if raw.version >= 1 {
            core::mem::size_of::<RawStartInfo>()
        } else {
            core::mem::offset_of!(RawStartInfo, memmap_paddr)
        };
        info.add_boot_data(MemoryRange::with_size(address, size as u64));
        info.rsdp_address = raw.rsdp_paddr;

        if raw.cmdline_paddr != 0 {
            let mut length = 0;
            while length < MAX_COMMAND_LINE_LENGTH {
                // SAFETY: the caller guarantees the NUL-terminated command line is
                // readable; the loop stops at its NUL or at the buffer size.
                let byte = unsafe {
                    core::ptr::read_volatile((raw.cmdline_paddr + length as u64) as *const u8)
                };
                if byte == 0 {
                    break;
                }
                // Keep the command line ASCII so it is always a valid &str.
                info.command_line_bytes[length] = if byte.is_ascii() { byte } else { b'?' };
                length += 1;
            }
            info.command_line_length = length;
            info.add_boot_data(MemoryRange::with_size(raw.cmdline_paddr, length as u64 + 1));
        }

        if raw.version >= 1 && raw.memmap_paddr != 0 {
            let entry_size = core::mem::size_of::<RawMemoryMapEntry>() as u64;
            for index in 0..raw.memmap_entries as usize {
                if index >= MAX_MEMORY_MAP_ENTRIES {
                    info.memory_map_entries_dropped += 1;
                    continue;
                }
                let entry_address = raw.memmap_paddr + index as u64 * entry_size;
                // SAFETY: the caller guarantees the memmap_entries entries at
                // memmap_paddr are readable.
                let entry =
                    unsafe { core::ptr::read_unaligned(entry_address as *const RawMemoryMapEntry) };
                info.memory_map[index] = MemoryMapEntry {
                    range: MemoryRange::with_size(entry.address, entry.size),
                    kind: entry.kind,
                };
                info.memory_map_length += 1;
            }
            info.add_boot_data(MemoryRange::with_size(
                raw.memmap_paddr,
                raw.memmap_entries as u64 * entry_size,
            ));
        }

        if raw.modlist_paddr != 0 && raw.nr_modules != 0 {
            let entry_size = core::mem::size_of::<RawModule>() as u64;
            info.add_boot_data(MemoryRange::with_size(
                raw.modlist_paddr,
                raw.nr_modules as u64 * entry_size,
            ));
            for index in 0..raw.nr_modules as u64 {
                // SAFETY: the caller guarantees the nr_modules entries at modlist_paddr
                // are readable.
                let module = unsafe {
                    core::ptr::read_unaligned(
                        (raw.modlist_paddr + index * entry_size) as *const RawModule,
                    )
                };
                info.add_boot_data(MemoryRange::with_size(module.paddr, module.size));
            }
        }
        Ok(info)
    }

    /// Remembers a range of loader data; silently full after [`MAX_BOOT_DATA_RANGES`].
    fn add_boot_data(&mut self, range: MemoryRange) {
        if !range.is_empty() && self.boot_data_length < MAX_BOOT_DATA_RANGES {
            self.boot_data[self.boot_data_length] = range;
            self.boot_data_length += 1;
        }
    }

    /// Guest-physical address of the start_info the loader passed.
    pub fn start_info_address(&self) -> u64 {
        self.start_info_address
    }

    /// `hvm_start_info.version`.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Guest-physical address of the ACPI RSDP, or 0 if there is none.
    pub fn rsdp_address(&self) -> u64 {
        self.rsdp_address
    }

    /// The command line (ASCII; other bytes were replaced by `?`).
    pub fn command_line(&self) -> CommandLine<'_> {
        let bytes = &self.command_line_bytes[..self.command_line_length];
        // Only ASCII bytes were stored, so this never fails.
        CommandLine::new(core::str::from_utf8(bytes).unwrap_or(""))
    }

    /// Every memory-map entry, in the loader's order.
    pub fn memory_map(&self) -> &[MemoryMapEntry] {
        &self.memory_map[..self.memory_map_length]
    }

    /// The RAM ranges of the memory map.
    pub fn ram_ranges(&self) -> impl Iterator<Item = MemoryRange> + '_ {
        self.memory_map()
            .iter()
            .filter(|entry| entry.is_ram())
            .map(|entry| entry.range)
    }

    /// How many memory-map entries did not fit into [`MAX_MEMORY_MAP_ENTRIES`].
    pub fn memory_map_entries_dropped(&self) -> usize {
        self.memory_map_entries_dropped
    }

    /// Where the loader's own structures lie: start_info, command line, memory map,
    /// module list and modules. The runtime no longer needs them.
    pub fn boot_data_ranges(&self) -> &[MemoryRange] {
        &self.boot_data[..self.boot_data_length]
    }
}
