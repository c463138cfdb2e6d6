//! The PVH boot block: the `hvm_start_info` structure, command line and memory map a guest
//! finds at the guest-physical address in EBX when it is entered through the PVH boot protocol
//! (Xen's `xen/include/public/arch-x86/hvm/start_info.h`, version 1).
//!
//! The hypervisor lays the block out with [`write_start_info`] in a scratch buffer and copies
//! it to the guest; a guest (see `userland/`) parses it with [`read_start_info`],
//! [`read_cmdline`] and [`memmap_entries`]. All fields are little-endian.

use crate::bytes::{u32_at, u64_at};
use tessera_abi::table::{MappingKind, MemoryMapping};

/// `hvm_start_info.magic`: "xEn3" with the high bit of the last byte set.
pub const MAGIC: u32 = 0x336e_c578;
/// The version written: 1 adds the memory map to version 0.
pub const VERSION: u32 = 1;

/// Byte offsets of the `hvm_start_info` fields.
pub mod offset {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const FLAGS: usize = 8;
    pub const NR_MODULES: usize = 12;
    pub const MODLIST_PADDR: usize = 16;
    pub const CMDLINE_PADDR: usize = 24;
    pub const RSDP_PADDR: usize = 32;
    /// Version 1 and later.
    pub const MEMMAP_PADDR: usize = 40;
    pub const MEMMAP_ENTRIES: usize = 48;
    pub const RESERVED: usize = 52;
}

/// Size of `hvm_start_info` in version 0 (up to and including `rsdp_paddr`).
pub const START_INFO_V0_BYTES: usize = 40;
/// Size of `hvm_start_info` in version 1.
pub const START_INFO_BYTES: usize = 56;
/// Size of one `hvm_memmap_table_entry` {addr u64, size u64, type u32, reserved u32}.
pub const MEMMAP_ENTRY_BYTES: usize = 24;
/// `XEN_HVM_MEMMAP_TYPE_RAM`.
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// `XEN_HVM_MEMMAP_TYPE_RESERVED`.
pub const MEMMAP_TYPE_RESERVED: u32 = 2;

/// Why the block could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// `out` is smaller than the block; `needed` bytes are required.
    BufferTooSmall { needed: usize },
    /// The command line contains a NUL byte, which would cut it short in the guest.
    CmdlineContainsNul,
    /// `at_guest` is not 8-byte aligned (the structure holds 64-bit fields).
    Misaligned,
    /// The block would extend past the top of the guest address space.
    AddressOverflow,
}

/// Bytes [`write_start_info`] needs for this command line and memory map.
pub fn start_info_bytes(cmdline: &str, memory: &[MemoryMapping]) -> usize {
    memmap_offset(cmdline)
        + MEMMAP_ENTRY_BYTES * memory.iter().filter(|m| listed(m).is_some()).count()
}

/// The memory map follows the NUL-terminated command line, 8-byte aligned.
fn memmap_offset(cmdline: &str) -> usize {
    (START_INFO_BYTES + cmdline.len() + 1).next_multiple_of(8)
}

/// The memory-map type of a mapping, if it appears in the map: RAM as RAM, channels as
/// reserved (so the guest does not allocate from shared memory, but knows it is there),
/// device windows not at all (the guest finds them through its devices).
fn listed(mapping: &MemoryMapping) -> Option<u32> {
    match mapping.kind {
        MappingKind::Ram => Some(MEMMAP_TYPE_RAM),
        MappingKind::Channel(_) => Some(MEMMAP_TYPE_RESERVED),
        MappingKind::DeviceMmio => None,
    }
}

fn put_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Lays out the PVH boot block in `out`, which will be copied to guest-physical `at_guest`:
/// `hvm_start_info` at offset 0, the NUL-terminated `cmdline` after it, then the memory map
/// (one entry per RAM or channel mapping, sorted by guest address). Returns the guest address
/// of the `hvm_start_info` (the value for EBX). Bytes of `out` past the block are untouched.
pub fn write_start_info(
    out: &mut [u8],
    at_guest: u64,
    cmdline: &str,
    memory: &[MemoryMapping],
) -> Result<u64, PvhError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(PvhError::CmdlineContainsNul);
    }
    if !at_guest.is_multiple_of(8) {
        return Err(PvhError::Misaligned);
    }
    let needed = start_info_bytes(cmdline, memory);
    if out.len() < needed {
        return Err(PvhError::BufferTooSmall { needed });
    }
    let guest = |offset: usize| {
        at_guest
            .checked_add(offset as u64)
            .ok_or(PvhError::AddressOverflow)
    };
    guest(needed)?;
    let memmap = memmap_offset(cmdline);

    let block = &mut out[..needed];
    block.fill(0);
    put_u32(block, offset::MAGIC, MAGIC);
    put_u32(block, offset::VERSION, VERSION);
    // flags, nr_modules, modlist_paddr, rsdp_paddr and reserved stay 0: no modules, and the
    // guest finds no ACPI tables through this block.
    put_u64(block, offset::CMDLINE_PADDR, guest(START_INFO_BYTES)?);
    put_u64(block, offset::MEMMAP_PADDR, guest(memmap)?);
    block[START_INFO_BYTES..START_INFO_BYTES + cmdline.len()].copy_from_slice(cmdline.as_bytes());

    // Selection in guest order without allocating: each round takes the smallest (guest,
    // index) above the previous one, so even an unsorted or duplicated list comes out sorted.
    let mut entries = 0;
    let mut previous: Option<(u64, usize)> = None;
    while let Some((index, mapping, kind)) = memory
        .iter()
        .enumerate()
        .filter_map(|(index, mapping)| Some((index, mapping, listed(mapping)?)))
        .filter(|(index, mapping, _)| previous.is_none_or(|p| (mapping.guest, *index) > p))
        .min_by_key(|(index, mapping, _)| (mapping.guest, *index))
    {
        let at = memmap + entries * MEMMAP_ENTRY_BYTES;
        put_u64(block, at, mapping.guest);
        put_u64(block, at + 8, mapping.host.size);
        put_u32(block, at + 16, kind);
        entries += 1;
        previous = Some((mapping.guest, index));
    }
    put_u32(block, offset::MEMMAP_ENTRIES, entries as u32);
    Ok(at_guest)
}

/// The fields of an `hvm_start_info`, as a guest reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfoView {
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    /// 0 in a version-0 block.
    pub memmap_paddr: u64,
    /// 0 in a version-0 block.
    pub memmap_entries: u32,
}

/// Parses the `hvm_start_info` at the start of `bytes`. `None` if the magic is wrong or the
/// bytes are too short for the version the block claims.
pub fn read_start_info(bytes: &[u8]) -> Option<StartInfoView> {
    if u32_at(bytes, offset::MAGIC)? != MAGIC {
        return None;
    }
    let version = u32_at(bytes, offset::VERSION)?;
    let size = if version >= 1 {
        START_INFO_BYTES
    } else {
        START_INFO_V0_BYTES
    };
    if bytes.len() < size {
        return None;
    }
    let (memmap_paddr, memmap_entries) = if version >= 1 {
        (
            u64_at(bytes, offset::MEMMAP_PADDR)?,
            u32_at(bytes, offset::MEMMAP_ENTRIES)?,
        )
    } else {
        (0, 0)
    };
    Some(StartInfoView {
        version,
        flags: u32_at(bytes, offset::FLAGS)?,
        nr_modules: u32_at(bytes, offset::NR_MODULES)?,
        modlist_paddr: u64_at(bytes, offset::MODLIST_PADDR)?,
        cmdline_paddr: u64_at(bytes, offset::CMDLINE_PADDR)?,
        rsdp_paddr: u64_at(bytes, offset::RSDP_PADDR)?,
        memmap_paddr,
        memmap_entries,
    })
}

/// The command line starting at `bytes` (the memory at `cmdline_paddr`), up to its NUL.
/// `None` without a NUL or if it is not UTF-8.
pub fn read_cmdline(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&byte| byte == 0)?;
    core::str::from_utf8(&bytes[..end]).ok()
}

/// One `hvm_memmap_table_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    /// [`MEMMAP_TYPE_RAM`], [`MEMMAP_TYPE_RESERVED`] or another Xen type.
    pub kind: u32,
}

/// The memory-map entries in `bytes` (the memory at `memmap_paddr`, at least
/// `memmap_entries * 24` bytes); stops early if `bytes` is shorter.
pub fn memmap_entries(bytes: &[u8], count: u32) -> impl Iterator<Item = MemmapEntry> + '_ {
    bytes
        .chunks_exact(MEMMAP_ENTRY_BYTES)
        .take(count as usize)
        .map(|entry| MemmapEntry {
            addr: u64_at(entry, 0).unwrap_or(0),
            size: u64_at(entry, 8).unwrap_or(0),
            kind: u32_at(entry, 16).unwrap_or(0),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;
    use tessera_abi::table::{Range, Rights};

    fn mapping(guest: u64, size: u64, kind: MappingKind) -> MemoryMapping {
        MemoryMapping {
            guest,
            host: Range::new(0x1000_0000 + guest, size),
            rights: Rights::RWX,
            kind,
        }
    }

    const AT: u64 = 0x8000;

    /// The guest's view: a slice of `out` standing for guest-physical `address`.
    fn at(out: &[u8], address: u64) -> &[u8] {
        &out[(address - AT) as usize..]
    }

    #[test]
    fn round_trip() {
        // Deliberately unsorted, with a device window that is not listed.
        let memory = [
            mapping(0x10_0000, 0x70_0000, MappingKind::Ram),
            mapping(0xfe00_0000, 0x1000, MappingKind::DeviceMmio),
            mapping(0x0, 0x9_f000, MappingKind::Ram),
            mapping(0x1_0000_0000, 0x20_0000, MappingKind::Channel(1)),
        ];
        let cmdline = "console=ttyS0 quiet";
        let mut out = [0xaau8; 512];
        let needed = start_info_bytes(cmdline, &memory);
        assert_eq!(needed, 80 + 3 * 24);
        assert_eq!(write_start_info(&mut out, AT, cmdline, &memory), Ok(AT));
        assert!(
            out[needed..].iter().all(|&byte| byte == 0xaa),
            "wrote past the block"
        );

        let info = read_start_info(&out).unwrap();
        assert_eq!(
            info,
            StartInfoView {
                version: 1,
                flags: 0,
                nr_modules: 0,
                modlist_paddr: 0,
                cmdline_paddr: AT + 56,
                rsdp_paddr: 0,
                memmap_paddr: AT + 80,
                memmap_entries: 3,
            }
        );
        assert_eq!(u32_at(&out, offset::RESERVED), Some(0));
        assert_eq!(read_cmdline(at(&out, info.cmdline_paddr)), Some(cmdline));
        let entries: Vec<_> =
            memmap_entries(at(&out, info.memmap_paddr), info.memmap_entries).collect();
        assert_eq!(
            entries,
            [
                MemmapEntry {
                    addr: 0,
                    size: 0x9_f000,
                    kind: MEMMAP_TYPE_RAM
                },
                MemmapEntry {
                    addr: 0x10_0000,
                    size: 0x70_0000,
                    kind: MEMMAP_TYPE_RAM
                },
                MemmapEntry {
                    addr: 0x1_0000_0000,
                    size: 0x20_0000,
                    kind: MEMMAP_TYPE_RESERVED
                },
            ]
        );
        assert_eq!(info.memmap_paddr % 8, 0);
    }

    #[test]
    fn raw_layout() {
        let mut out = [0u8; 128];
        write_start_info(
            &mut out,
            0,
            "",
            &[mapping(0x2000, 0x3000, MappingKind::Ram)],
        )
        .unwrap();
        assert_eq!(&out[0..4], &[0x78, 0xc5, 0x6e, 0x33]);
        assert_eq!(&out[4..8], &[1, 0, 0, 0]);
        assert_eq!(u64_at(&out, offset::CMDLINE_PADDR), Some(56));
        assert_eq!(out[56], 0);
        assert_eq!(u64_at(&out, offset::MEMMAP_PADDR), Some(64));
        assert_eq!(u32_at(&out, offset::MEMMAP_ENTRIES), Some(1));
        assert_eq!(u64_at(&out, 64), Some(0x2000));
        assert_eq!(u64_at(&out, 72), Some(0x3000));
        assert_eq!(u32_at(&out, 80), Some(1));
        assert_eq!(u32_at(&out, 84), Some(0));
    }

    #[test]
    fn empty_memory_and_exact_buffer() {
        let cmdline = "1234567"; // 56 + 8 = 64: no padding needed
        let mut out = [0u8; 64];
        assert_eq!(write_start_info(&mut out, AT, cmdline, &[]), Ok(AT));
        let info = read_start_info(&out).unwrap();
        assert_eq!(info.memmap_entries, 0);
        assert_eq!(info.memmap_paddr, AT + 64);
        assert_eq!(read_cmdline(at(&out, info.cmdline_paddr)), Some(cmdline));
    }

    #[test]
    fn errors() {
        let memory = [mapping(0, 0x1000, MappingKind::Ram)];
        let mut out = [0u8; 256];
        let needed = start_info_bytes("a", &memory);
        assert_eq!(
            write_start_info(&mut out[..needed - 1], AT, "a", &memory),
            Err(PvhError::BufferTooSmall { needed })
        );
        assert_eq!(
            write_start_info(&mut out, AT, "a\0b", &memory),
            Err(PvhError::CmdlineContainsNul)
        );
        assert_eq!(
            write_start_info(&mut out, AT + 4, "a", &memory),
            Err(PvhError::Misaligned)
        );
        assert_eq!(
            write_start_info(&mut out, u64::MAX - 63, "a", &memory),
            Err(PvhError::AddressOverflow)
        );
        assert!(
            out.iter().all(|&byte| byte == 0),
            "a failed write changed the buffer"
        );
    }

    #[test]
    fn reader_rejects_bad_blocks() {
        let mut out = [0u8; 128];
        write_start_info(&mut out, AT, "x", &[]).unwrap();
        assert!(read_start_info(&out[..START_INFO_BYTES]).is_some());
        assert!(read_start_info(&out[..START_INFO_BYTES - 1]).is_none());
        let mut bad = out;
        bad[0] ^= 1;
        assert!(read_start_info(&bad).is_none());
        assert!(read_start_info(&[]).is_none());
        // A version-0 block is shorter and has no memory map.
        let mut v0 = out;
        put_u32(&mut v0, offset::VERSION, 0);
        let info = read_start_info(&v0[..START_INFO_V0_BYTES]).unwrap();
        assert_eq!(
            (info.version, info.memmap_paddr, info.memmap_entries),
            (0, 0, 0)
        );
        // Command lines need a NUL and UTF-8.
        assert_eq!(read_cmdline(b"abc"), None);
        assert_eq!(read_cmdline(b"\xff\0"), None);
        assert_eq!(read_cmdline(b"\0abc"), Some(""));
        // Short memory-map buffers stop early.
        assert_eq!(memmap_entries(&[0u8; 47], 5).count(), 1);
    }
}
