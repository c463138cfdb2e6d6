//! The Linux x86-64 boot protocol, prepared at build time (Documentation/arch/x86/boot.rst,
//! "64-bit boot protocol"; the layout is documented in docs/linux-guest.md): where the
//! protected-mode kernel and the initrd go in guest-physical memory, and the bytes of the
//! zero page (`boot_params` with its e820 map), the GDT and the identity-mapping page
//! tables. Nothing here reads files; [`crate::validate::boot`] does, then calls these.

use std::fmt;

use tessera_abi::table::Range;

use crate::acpi::TABLES_GUEST;
use crate::bzimage::{BzImage, ENTRY_64_OFFSET, SETUP_HEADER_START};

/// The zero page (`boot_params`); RSI at entry.
pub const BOOT_PARAMS_GUEST: u64 = 0x1000;
/// The command line (`boot_params.cmd_line_ptr`); the hypervisor writes it at boot.
pub const CMDLINE_GUEST: u64 = 0x2000;
/// The GDT: null, null, `__BOOT_CS` (0x10), `__BOOT_DS` (0x18).
pub const GDT_GUEST: u64 = 0x3000;
/// The PML4 (CR3 at entry), then the PDPT and four page directories up to [`BOOT_DATA_END`].
pub const PAGE_TABLES_GUEST: u64 = 0x4000;
/// One past the last page of boot data.
pub const BOOT_DATA_END: u64 = 0xa000;
/// Low guest RAM from here to 1 MiB is "reserved" in the e820 map (the BIOS area, where
/// the ACPI tables are); below it is usable (the AP trampoline lives there).
pub const LOW_RESERVED_START: u64 = 0x9_f000;
/// The end of low memory: a Linux partition's guest RAM must cover `[0, LOW_MEMORY_END)`.
pub const LOW_MEMORY_END: u64 = 0x10_0000;
/// The identity map built for entry covers `[0, IDENTITY_MAP_END)` (2 MiB pages).
pub const IDENTITY_MAP_END: u64 = 4 << 30;
/// The longest command line buffer (one page, from [`CMDLINE_GUEST`] to the GDT).
pub const CMDLINE_CAPACITY_MAX: u64 = 0x1000;
/// The longest text the hypervisor appends to the command line at boot.
pub const TSC_ARGUMENT_MAX: &str = " tsc_early_khz=4294967295 tessera.restarts=4294967295";
/// `type_of_loader` for a boot loader without an assigned ID.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// The e820 table in `boot_params` holds this many entries.
pub const E820_MAX_ENTRIES: usize = 128;
/// The GDT's descriptors: 64-bit code (0x10) and flat data (0x18).
pub const GDT: [u64; 4] = [0, 0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
/// Initrd placement granularity.
const PAGE: u64 = 0x1000;

/// `boot_params` offsets (Documentation/arch/x86/zero-page.rst).
pub mod zero_page {
    pub const ACPI_RSDP_ADDRESS: usize = 0x070;
    pub const EXTENDED_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXTENDED_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXTENDED_CMD_LINE_POINTER: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_POINTER: usize = 0x228;
    pub const E820_TABLE: usize = 0x2d0;
    /// Each e820 entry: address (u64), size (u64), type (u32).
    pub const E820_ENTRY_SIZE: usize = 20;
}

/// An e820 memory type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Type {
    /// Usable RAM (1).
    Ram = 1,
    /// Reserved (2): the BIOS area, channel memory.
    Reserved = 2,
}

/// One entry of the guest's e820 map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub address: u64,
    pub size: u64,
    pub kind: E820Type,
}

/// Where the kernel and initrd go, and the command line's room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxLayout {
    /// The protected-mode kernel's load address (`pref_address`).
    pub kernel_load: u64,
    /// What the kernel may use from its load address: the larger of `init_size` and the
    /// protected-mode kernel's size.
    pub kernel_extent: u64,
    /// The 64-bit entry point, load address + 0x200.
    pub entry: u64,
    /// Where the initrd goes (guest-physical), page-aligned.
    pub initrd: Range,
    /// Bytes at [`CMDLINE_GUEST`] for the command line and its NUL.
    pub cmdline_capacity: u64,
}

/// Why a Linux partition cannot be laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinuxLayoutError {
    /// Guest RAM does not cover `[0, 1 MiB)`.
    LowMemoryNotCovered,
    /// `[load, load + extent)` is not inside one guest RAM range between 1 MiB and 4 GiB.
    KernelOutside { load: u64, extent: u64 },
    /// No page-aligned place for the initrd in guest RAM between 1 MiB and
    /// `initrd_addr_max`, clear of the kernel.
    InitrdDoesNotFit { size: u64, limit: u64 },
    /// The command line with the hypervisor's addition and a NUL exceeds the capacity.
    CmdlineTooLong { length: u64, capacity: u64 },
    /// The e820 map needs more entries than `boot_params` holds.
    TooManyMemoryRanges { count: usize },
}

impl fmt::Display for LinuxLayoutError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LowMemoryNotCovered => write!(
                formatter,
                "guest RAM does not cover guest-physical 0–1 MiB (boot parameters, command line, GDT, page tables, ACPI tables)"
            ),
            Self::KernelOutside { load, extent } => write!(
                formatter,
                "the kernel needs guest [{load:#x}, {:#x}) (pref_address + init_size), which is not inside guest RAM between 1 MiB and 4 GiB",
                load.saturating_add(*extent)
            ),
            Self::InitrdDoesNotFit { size, limit } => write!(
                formatter,
                "no room for the {size}-byte initrd in guest RAM between 1 MiB and {limit:#x} (initrd_addr_max + 1) outside the kernel"
            ),
            Self::CmdlineTooLong { length, capacity } => write!(
                formatter,
                "the command line has {length} bytes; with `{TSC_ARGUMENT_MAX}` and its NUL it needs {}, but the kernel reads at most {capacity}",
                length + TSC_ARGUMENT_MAX.len() as u64 + 1
            ),
            Self::TooManyMemoryRanges { count } => write!(
                formatter,
                "the memory map needs {count} e820 entries, but boot_params holds {E820_MAX_ENTRIES}"
            ),
        }
    }
}

impl std::error::Error for LinuxLayoutError {}

/// Whether the sorted, merged `ram` covers `[base, end)` with one range.
fn covered(ram: &[Range], base: u64, end: u64) -> bool {
    end >= base
        && ram
            .iter()
            .any(|range| range.base <= base && end <= range.end())
}

/// Checks that guest RAM covers low memory (needs no boot file).
pub fn check_low_memory(ram: &[Range]) -> Result<(), LinuxLayoutError> {
    if covered(ram, 0, LOW_MEMORY_END) {
        Ok(())
    } else {
        Err(LinuxLayoutError::LowMemoryNotCovered)
    }
}

/// The command line's capacity for `kernel`: `cmdline_size + 1` (its NUL), at most a page.
pub fn cmdline_capacity(kernel: &BzImage) -> u64 {
    (u64::from(kernel.cmdline_size) + 1).min(CMDLINE_CAPACITY_MAX)
}

/// Checks that `cmdline`, the hypervisor's `tsc_early_khz=` and a NUL fit the kernel's buffer.
pub fn check_cmdline(cmdline: &str, kernel: &BzImage) -> Result<(), LinuxLayoutError> {
    let capacity = cmdline_capacity(kernel);
    let length = cmdline.len() as u64;
    if length + TSC_ARGUMENT_MAX.len() as u64 + 1 > capacity {
        return Err(LinuxLayoutError::CmdlineTooLong { length, capacity });
    }
    Ok(())
}

/// The kernel's place: at `pref_address`, `max(init_size, kernel size)` bytes, inside one
/// guest RAM range above low memory and below the end of the identity map.
pub fn place_kernel(kernel: &BzImage, ram: &[Range]) -> Result<(u64, u64), LinuxLayoutError> {
    let load = kernel.preferred_address;
    let extent = u64::from(kernel.init_size).max(kernel.kernel_size);
    let fits = load >= LOW_MEMORY_END
        && load
            .checked_add(extent)
            .is_some_and(|end| end <= IDENTITY_MAP_END && covered(ram, load, end));
    if fits {
        Ok((load, extent))
    } else {
        Err(LinuxLayoutError::KernelOutside { load, extent })
    }
}

/// The highest page-aligned place for `size` bytes of initrd: inside one guest RAM range,
/// at or above 1 MiB, ending at or below `initrd_addr_max + 1`, clear of the kernel's
/// `[load, load + extent)`.
pub fn place_initrd(
    size: u64,
    initrd_address_max: u32,
    kernel: (u64, u64),
    ram: &[Range],
) -> Result<Range, LinuxLayoutError> {
    let limit = u64::from(initrd_address_max) + 1;
    let (kernel_start, kernel_end) = (kernel.0, kernel.0.saturating_add(kernel.1));
    let mut best: Option<u64> = None;
    for range in ram {
        let start = range.base.max(LOW_MEMORY_END);
        let end = range.end().min(limit);
        // The free pieces of [start, end): below the kernel and above it.
        let pieces = [(start, end.min(kernel_start)), (start.max(kernel_end), end)];
        for (piece_start, piece_end) in pieces {
            let Some(base) = piece_end.checked_sub(size) else {
                continue;
            };
            let base = base & !(PAGE - 1);
            if piece_start < piece_end && base >= piece_start {
                best = best.max(Some(base));
            }
        }
    }
    best.map(|base| Range::new(base, size))
        .ok_or(LinuxLayoutError::InitrdDoesNotFit { size, limit })
}

/// Plans the kernel, initrd and command line of a Linux partition with guest RAM `ram`
/// (sorted, merged).
pub fn plan(
    kernel: &BzImage,
    initrd_size: u64,
    cmdline: &str,
    ram: &[Range],
) -> Result<LinuxLayout, LinuxLayoutError> {
    check_low_memory(ram)?;
    let (kernel_load, kernel_extent) = place_kernel(kernel, ram)?;
    let initrd = place_initrd(
        initrd_size,
        kernel.initrd_address_max,
        (kernel_load, kernel_extent),
        ram,
    )?;
    check_cmdline(cmdline, kernel)?;
    Ok(LinuxLayout {
        kernel_load,
        kernel_extent,
        entry: kernel_load + ENTRY_64_OFFSET,
        initrd,
        cmdline_capacity: cmdline_capacity(kernel),
    })
}

/// The guest's e820 map: guest RAM below [`LOW_RESERVED_START`] usable, from there to
/// 1 MiB reserved, the rest usable; `reserved` ranges (channel memory) reserved. Sorted;
/// adjacent entries of one type are merged.
pub fn e820_map(ram: &[Range], reserved: &[Range]) -> Result<Vec<E820Entry>, LinuxLayoutError> {
    let mut entries = Vec::new();
    for range in ram {
        let mut cursor = range.base;
        for (boundary, kind) in [
            (LOW_RESERVED_START, E820Type::Ram),
            (LOW_MEMORY_END, E820Type::Reserved),
            (u64::MAX, E820Type::Ram),
        ] {
            let end = range.end().min(boundary);
            if cursor < end {
                entries.push(E820Entry {
                    address: cursor,
                    size: end - cursor,
                    kind,
                });
                cursor = end;
            }
        }
    }
    entries.extend(reserved.iter().map(|range| E820Entry {
        address: range.base,
        size: range.size,
        kind: E820Type::Reserved,
    }));
    entries.sort_by_key(|entry| entry.address);
    let mut merged: Vec<E820Entry> = Vec::with_capacity(entries.len());
    for entry in entries {
        match merged.last_mut() {
            Some(last) if last.kind == entry.kind && last.address + last.size == entry.address => {
                last.size += entry.size;
            }
            _ => merged.push(entry),
        }
    }
    if merged.len() > E820_MAX_ENTRIES {
        return Err(LinuxLayoutError::TooManyMemoryRanges {
            count: merged.len(),
        });
    }
    Ok(merged)
}

/// The zero page: the file's setup header, the loader's fields, the e820 map.
pub fn boot_params(kernel: &BzImage, layout: &LinuxLayout, e820: &[E820Entry]) -> Vec<u8> {
    use zero_page::*;
    let mut page = vec![0u8; 0x1000];
    let mut put = |offset: usize, value: &[u8]| {
        page[offset..offset + value.len()].copy_from_slice(value);
    };
    put(SETUP_HEADER_START, &kernel.setup_header);
    put(TYPE_OF_LOADER, &[LOADER_TYPE_UNDEFINED]);
    put(CMD_LINE_POINTER, &(CMDLINE_GUEST as u32).to_le_bytes());
    put(
        EXTENDED_CMD_LINE_POINTER,
        &((CMDLINE_GUEST >> 32) as u32).to_le_bytes(),
    );
    let (initrd_base, initrd_size) = if layout.initrd.size == 0 {
        (0, 0)
    } else {
        (layout.initrd.base, layout.initrd.size)
    };
    put(RAMDISK_IMAGE, &(initrd_base as u32).to_le_bytes());
    put(RAMDISK_SIZE, &(initrd_size as u32).to_le_bytes());
    put(
        EXTENDED_RAMDISK_IMAGE,
        &((initrd_base >> 32) as u32).to_le_bytes(),
    );
    put(
        EXTENDED_RAMDISK_SIZE,
        &((initrd_size >> 32) as u32).to_le_bytes(),
    );
    put(ACPI_RSDP_ADDRESS, &TABLES_GUEST.to_le_bytes());
    let count = e820.len().min(E820_MAX_ENTRIES);
    put(E820_ENTRIES, &[count as u8]);
    for (index, entry) in e820.iter().take(count).enumerate() {
        let offset = E820_TABLE + index * E820_ENTRY_SIZE;
        put(offset, &entry.address.to_le_bytes());
        put(offset + 8, &entry.size.to_le_bytes());
        put(offset + 16, &(entry.kind as u32).to_le_bytes());
    }
    page
}

/// The GDT and the identity map, as loaded at [`GDT_GUEST`] up to [`BOOT_DATA_END`]: the
/// GDT page, the PML4, the PDPT and four page directories mapping `[0, 4 GiB)` with 2 MiB
/// pages (present, writable).
pub fn gdt_and_page_tables() -> Vec<u8> {
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE_PAGE: u64 = 0x80;
    let mut bytes = vec![0u8; (BOOT_DATA_END - GDT_GUEST) as usize];
    let mut put_u64 = |address: u64, value: u64| {
        let offset = (address - GDT_GUEST) as usize;
        bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    };
    for (index, descriptor) in GDT.iter().enumerate() {
        put_u64(GDT_GUEST + 8 * index as u64, *descriptor);
    }
    let pdpt = PAGE_TABLES_GUEST + PAGE;
    put_u64(PAGE_TABLES_GUEST, pdpt | PRESENT_WRITABLE);
    for directory in 0..4u64 {
        let table = pdpt + PAGE * (1 + directory);
        put_u64(pdpt + 8 * directory, table | PRESENT_WRITABLE);
        for entry in 0..512u64 {
            let address = (directory << 30) | (entry << 21);
            put_u64(table + 8 * entry, address | PRESENT_WRITABLE | LARGE_PAGE);
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::parse_bzimage;
    use crate::common::bzimage_builder::{build_bzimage, BzImageSpec};

    fn kernel(spec: BzImageSpec) -> BzImage {
        parse_bzimage(&build_bzimage(&spec)).unwrap()
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn plans_kernel_initrd_and_cmdline() {
        let ram = [Range::new(0, 64 * MIB)];
        let layout = plan(
            &kernel(BzImageSpec::default()),
            0x2345,
            "console=ttyS0",
            &ram,
        )
        .unwrap();
        assert_eq!(layout.kernel_load, 16 * MIB);
        assert_eq!(layout.entry, 16 * MIB + 0x200);
        assert_eq!(layout.kernel_extent, 4 * MIB);
        // Highest page-aligned place below the end of RAM.
        assert_eq!(layout.initrd, Range::new(64 * MIB - 0x3000, 0x2345));
        assert_eq!(layout.cmdline_capacity, 0x800);
    }

    #[test]
    fn the_initrd_avoids_the_kernel_and_respects_initrd_addr_max() {
        // RAM ends inside the kernel: the initrd goes below it.
        let ram = [Range::new(0, 18 * MIB)];
        let initrd = place_initrd(MIB, 0x7fff_ffff, (16 * MIB, 4 * MIB), &ram).unwrap();
        assert_eq!(initrd, Range::new(15 * MIB, MIB));
        // initrd_addr_max below the end of RAM caps it.
        let ram = [Range::new(0, 256 * MIB)];
        let initrd = place_initrd(0x1800, 0x3fff_ffff >> 4, (16 * MIB, 4 * MIB), &ram).unwrap();
        assert_eq!(initrd, Range::new(0x400_0000 - 0x2000, 0x1800));
        // A second RAM range above the first is preferred.
        let ram = [Range::new(0, 32 * MIB), Range::new(64 * MIB, 8 * MIB)];
        let initrd = place_initrd(MIB, 0x7fff_ffff, (16 * MIB, 4 * MIB), &ram).unwrap();
        assert_eq!(initrd.base, 71 * MIB);
        // Nothing fits: RAM below 1 MiB does not count.
        let ram = [Range::new(0, 20 * MIB)];
        assert_eq!(
            place_initrd(16 * MIB, 0x7fff_ffff, (4 * MIB, 16 * MIB), &ram),
            Err(LinuxLayoutError::InitrdDoesNotFit {
                size: 16 * MIB,
                limit: 0x8000_0000
            })
        );
    }

    #[test]
    fn the_kernel_must_fit_its_init_size() {
        let image = kernel(BzImageSpec::default());
        assert_eq!(
            place_kernel(&image, &[Range::new(0, 18 * MIB)]),
            Err(LinuxLayoutError::KernelOutside {
                load: 16 * MIB,
                extent: 4 * MIB
            })
        );
        let low = kernel(BzImageSpec {
            preferred_address: 0x8_0000,
            ..BzImageSpec::default()
        });
        assert!(place_kernel(&low, &[Range::new(0, 64 * MIB)]).is_err());
        let high = kernel(BzImageSpec {
            preferred_address: (4 << 30) - 2 * MIB,
            ..BzImageSpec::default()
        });
        assert!(place_kernel(&high, &[Range::new(0, 8 << 30)]).is_err());
    }

    #[test]
    fn low_memory_and_cmdline_checks() {
        assert!(check_low_memory(&[Range::new(0, MIB)]).is_ok());
        assert_eq!(
            check_low_memory(&[Range::new(0x1000, 2 * MIB)]),
            Err(LinuxLayoutError::LowMemoryNotCovered)
        );
        let image = kernel(BzImageSpec {
            cmdline_size: 100,
            ..BzImageSpec::default()
        });
        // 101 bytes of room: the text, what the hypervisor appends, and the NUL.
        let fits = 101 - TSC_ARGUMENT_MAX.len() - 1;
        assert!(check_cmdline(&"x".repeat(fits), &image).is_ok());
        assert_eq!(
            check_cmdline(&"x".repeat(fits + 1), &image),
            Err(LinuxLayoutError::CmdlineTooLong {
                length: fits as u64 + 1,
                capacity: 101
            })
        );
        let huge = kernel(BzImageSpec {
            cmdline_size: 0x10_0000,
            ..BzImageSpec::default()
        });
        assert_eq!(cmdline_capacity(&huge), 0x1000);
    }

    #[test]
    fn e820_splits_low_memory_and_reserves_channels() {
        let ram = [Range::new(0, 32 * MIB), Range::new(32 * MIB, MIB)];
        let map = e820_map(
            &[Range::new(0, 33 * MIB)],
            &[Range::new(34 * MIB, 0x1_0000)],
        )
        .unwrap();
        assert_eq!(
            map,
            [
                E820Entry {
                    address: 0,
                    size: 0x9_f000,
                    kind: E820Type::Ram
                },
                E820Entry {
                    address: 0x9_f000,
                    size: 0x6_1000,
                    kind: E820Type::Reserved
                },
                E820Entry {
                    address: MIB,
                    size: 32 * MIB,
                    kind: E820Type::Ram
                },
                E820Entry {
                    address: 34 * MIB,
                    size: 0x1_0000,
                    kind: E820Type::Reserved
                },
            ]
        );
        // Touching RAM ranges merge into one entry.
        assert_eq!(e820_map(&ram, &[]).unwrap().len(), 3);
        let many: Vec<Range> = (0..130).map(|i| Range::new(i * 2 * MIB, MIB)).collect();
        assert!(matches!(
            e820_map(&many, &[]),
            Err(LinuxLayoutError::TooManyMemoryRanges { count: 131 })
        ));
    }

    #[test]
    fn page_tables_identity_map_four_gib() {
        let bytes = gdt_and_page_tables();
        let read = |address: u64| {
            let offset = (address - GDT_GUEST) as usize;
            tessera_policy::bytes::u64_at(&bytes, offset).unwrap()
        };
        assert_eq!(bytes.len(), 0x7000);
        assert_eq!(read(GDT_GUEST + 0x10), 0x00af_9a00_0000_ffff);
        assert_eq!(read(GDT_GUEST + 0x18), 0x00cf_9200_0000_ffff);
        assert_eq!(read(0x4000), 0x5003);
        assert_eq!(read(0x4008), 0, "one PML4 entry");
        for directory in 0..4 {
            assert_eq!(
                read(0x5000 + 8 * directory),
                (0x6000 + 0x1000 * directory) | 3
            );
        }
        assert_eq!(read(0x6000), 0x83);
        assert_eq!(read(0x6008), 0x20_0083);
        assert_eq!(read(0x9ff8), 0xffe0_0083, "the last 2 MiB below 4 GiB");
    }
}
