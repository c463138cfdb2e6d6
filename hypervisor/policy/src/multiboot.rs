//! The boot information a Multiboot loader hands the hypervisor, parsed: the memory map of
//! Multiboot v1 and the tag list of Multiboot2 (memory map, ACPI RSDP copies), the ACPI RSDP
//! itself, and the check that the RAM the partition table uses is really there.
//!
//! Multiboot v1: the map is a sequence of entries `{size u32, base_addr u64, length u64,
//! type u32}` where `size` counts the bytes after itself, so the next entry starts `size + 4`
//! bytes later (Multiboot specification 0.6.96 §3.3, "Boot information format", `mmap_*`
//! fields). The loader hands [`parse_memory_map`] the `mmap_length` bytes at `mmap_addr`.
//!
//! Multiboot2 (specification 1.0 §3.6): `{total_size u32, reserved u32}` then tags
//! `{type u32, size u32, …}`, each starting 8-byte aligned, ended by a tag of type 0.
//! [`parse_multiboot2`] walks them and keeps the memory map (type 6) and the ACPI RSDP
//! copies (types 14 and 15); [`parse_rsdp`] reads the root-table addresses from an RSDP.

use crate::bytes::{u32_at, u64_at};
use tessera_abi::table::Range;

/// What the firmware says a range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Type 1: usable RAM.
    Available,
    /// Type 2 and every type the specification does not define.
    Reserved,
    /// Type 3: holds ACPI tables; usable once they have been read.
    AcpiReclaimable,
    /// Type 4: must be preserved across hibernation.
    Nvs,
    /// Type 5: defective RAM.
    Bad,
}

impl MemoryKind {
    pub const fn from_type(kind: u32) -> MemoryKind {
        match kind {
            1 => MemoryKind::Available,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::Nvs,
            5 => MemoryKind::Bad,
            _ => MemoryKind::Reserved,
        }
    }
}

/// Bytes of an entry after its `size` field: base_addr, length, type.
const ENTRY_BODY_BYTES: usize = 20;

/// Iterates over the entries of a Multiboot memory map.
pub fn parse_memory_map(mmap_bytes: &[u8]) -> MemoryMapIter<'_> {
    MemoryMapIter { rest: mmap_bytes }
}

/// Iterator returned by [`parse_memory_map`]. It stops at the first entry that is truncated
/// or whose `size` is too small to hold the fields. A range whose end would pass 2^64 is cut
/// at 2^64 − 1.
#[derive(Clone, Debug)]
pub struct MemoryMapIter<'a> {
    rest: &'a [u8],
}

impl Iterator for MemoryMapIter<'_> {
    type Item = (Range, MemoryKind);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            self.rest = &[];
            return None;
        }
        let size = u32_at(self.rest, 0)? as usize;
        let stride = size.checked_add(4)?;
        // An entry too short for base_addr, length and type ends the map.
        let (Some(base), Some(length), Some(kind)) = (
            u64_at(self.rest, 4),
            u64_at(self.rest, 12),
            u32_at(self.rest, 20),
        ) else {
            self.rest = &[];
            return None;
        };
        if size < ENTRY_BODY_BYTES {
            self.rest = &[];
            return None;
        }
        let length = length.min(u64::MAX - base);
        let kind = MemoryKind::from_type(kind);
        // A final entry whose declared size runs past the buffer is still complete.
        self.rest = self.rest.get(stride..).unwrap_or(&[]);
        Some((Range::new(base, length), kind))
    }
}

/// How many ranges touching `needed` [`covers`] considers. Boot loaders report a few dozen
/// entries in all; should more touch `needed`, the extra ones are ignored, which can only turn
/// the answer into `false` (fail closed).
pub const MAX_COVER_RANGES: usize = 64;

/// Whether the union of `available` covers every byte of `needed`. The ranges may come in any
/// order, overlap or merely touch. An empty `needed` is always covered.
pub fn covers(available: impl Iterator<Item = Range>, needed: Range) -> bool {
    let Some(needed_end) = needed.base.checked_add(needed.size) else {
        return false;
    };
    if needed.size == 0 {
        return true;
    }
    // Keep only the parts inside `needed`, as (start, end) pairs.
    let mut parts = [(0u64, 0u64); MAX_COVER_RANGES];
    let mut count = 0;
    for range in available {
        let start = range.base.max(needed.base);
        let end = range.base.saturating_add(range.size).min(needed_end);
        if start < end && count < MAX_COVER_RANGES {
            parts[count] = (start, end);
            count += 1;
        }
    }
    // Sweep: repeatedly extend the covered prefix [needed.base, cursor) by the part reaching
    // furthest among those starting inside it. Each round advances, so at most `count` rounds.
    let mut cursor = needed.base;
    while cursor < needed_end {
        let reach = parts[..count]
            .iter()
            .filter(|&&(start, end)| start <= cursor && cursor < end)
            .map(|&(_, end)| end)
            .max();
        match reach {
            Some(end) => cursor = end,
            None => return false,
        }
    }
    true
}

/// The magic a Multiboot v1 loader leaves in EAX (Multiboot 0.6.96 §3.2).
pub const MULTIBOOT1_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The magic a Multiboot2 loader leaves in EAX (Multiboot2 1.0 §3.3).
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36D7_6289;

/// Which boot protocol the EAX value at entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    Multiboot1,
    Multiboot2,
}

impl BootProtocol {
    pub const fn from_magic(magic: u32) -> Option<BootProtocol> {
        match magic {
            MULTIBOOT1_BOOTLOADER_MAGIC => Some(BootProtocol::Multiboot1),
            MULTIBOOT2_BOOTLOADER_MAGIC => Some(BootProtocol::Multiboot2),
            _ => None,
        }
    }
}

/// The largest Multiboot2 information block accepted. GRUB's, with an EFI memory map of a
/// few hundred entries, stays far below; a larger `total_size` is taken for garbage.
pub const MAX_MULTIBOOT2_INFO_BYTES: usize = 1 << 20;

/// Tag types of the Multiboot2 information (specification 1.0 §3.6).
pub const TAG_END: u32 = 0;
pub const TAG_MEMORY_MAP: u32 = 6;
pub const TAG_ACPI_OLD_RSDP: u32 = 14;
pub const TAG_ACPI_NEW_RSDP: u32 = 15;

/// Bytes of a Multiboot2 memory-map entry the parser reads: base_addr u64, length u64,
/// type u32, reserved u32.
const MULTIBOOT2_ENTRY_BYTES: usize = 24;

/// What is wrong with a Multiboot2 information block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multiboot2Error {
    /// Fewer than 8 bytes, or `total_size` below 16 (the header and an end tag), above
    /// [`MAX_MULTIBOOT2_INFO_BYTES`] or beyond the bytes given.
    BadTotalSize(u32),
    /// The tag at this offset has a size below 8 or runs past `total_size`.
    BadTag { offset: usize },
    /// The memory-map tag at this offset is too short or its `entry_size` is below 24.
    BadMemoryMap { offset: usize },
    /// The tags end without a tag of type 0.
    NoEndTag,
}

impl core::fmt::Display for Multiboot2Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Multiboot2Error::BadTotalSize(size) => write!(f, "implausible total_size {size}"),
            Multiboot2Error::BadTag { offset } => write!(f, "malformed tag at offset {offset}"),
            Multiboot2Error::BadMemoryMap { offset } => {
                write!(f, "malformed memory-map tag at offset {offset}")
            }
            Multiboot2Error::NoEndTag => write!(f, "no end tag"),
        }
    }
}

/// An RSDP copy in the Multiboot2 information: the tag type (14 or 15), the copy's offset
/// from the start of the information block, and its bytes (the tag's payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RsdpCopy<'a> {
    pub tag: u32,
    pub offset: usize,
    pub bytes: &'a [u8],
}

/// What the hypervisor takes from a Multiboot2 information block; the first tag of each
/// type counts.
#[derive(Clone, Debug, Default)]
pub struct Multiboot2Info<'a> {
    pub memory_map: Option<Multiboot2MemoryMapIter<'a>>,
    pub acpi_old: Option<RsdpCopy<'a>>,
    pub acpi_new: Option<RsdpCopy<'a>>,
}

impl<'a> Multiboot2Info<'a> {
    /// The root pointer to use and where it came from: the ACPI 2.0+ copy (tag 15) when it
    /// is valid, else the ACPI 1.0 copy (tag 14).
    pub fn rsdp(&self) -> Option<(Rsdp, RsdpCopy<'a>)> {
        [self.acpi_new, self.acpi_old]
            .into_iter()
            .flatten()
            .find_map(|copy| parse_rsdp(copy.bytes).map(|rsdp| (rsdp, copy)))
    }
}

/// `total_size` from the first 8 bytes of a Multiboot2 information block, if plausible:
/// the hypervisor reads these first, then views that many bytes.
pub fn multiboot2_total_size(header: &[u8]) -> Result<usize, Multiboot2Error> {
    if header.len() < 8 {
        return Err(Multiboot2Error::BadTotalSize(0));
    }
    let total = u32_at(header, 0).ok_or(Multiboot2Error::BadTotalSize(0))?;
    let size = total as usize;
    if !(16..=MAX_MULTIBOOT2_INFO_BYTES).contains(&size) {
        return Err(Multiboot2Error::BadTotalSize(total));
    }
    Ok(size)
}

/// Walks the tags of a Multiboot2 information block (`info` starts at `total_size`).
pub fn parse_multiboot2(info: &[u8]) -> Result<Multiboot2Info<'_>, Multiboot2Error> {
    let total = multiboot2_total_size(info)?;
    let info = info
        .get(..total)
        .ok_or(Multiboot2Error::BadTotalSize(total as u32))?;
    let mut parsed = Multiboot2Info::default();
    let mut offset = 8;
    while offset + 8 <= total {
        let (Some(kind), Some(size)) = (u32_at(info, offset), u32_at(info, offset + 4)) else {
            return Err(Multiboot2Error::BadTag { offset });
        };
        let size = size as usize;
        if size < 8 || size > total - offset {
            return Err(Multiboot2Error::BadTag { offset });
        }
        let tag = &info[offset..offset + size];
        match kind {
            TAG_END => return Ok(parsed),
            TAG_MEMORY_MAP if parsed.memory_map.is_none() => {
                let entry_size = u32_at(tag, 8).map_or(0, |size| size as usize);
                let Some(rest) = tag.get(16..) else {
                    return Err(Multiboot2Error::BadMemoryMap { offset });
                };
                if entry_size < MULTIBOOT2_ENTRY_BYTES {
                    return Err(Multiboot2Error::BadMemoryMap { offset });
                }
                parsed.memory_map = Some(Multiboot2MemoryMapIter { rest, entry_size });
            }
            TAG_ACPI_OLD_RSDP | TAG_ACPI_NEW_RSDP => {
                let slot = if kind == TAG_ACPI_OLD_RSDP {
                    &mut parsed.acpi_old
                } else {
                    &mut parsed.acpi_new
                };
                slot.get_or_insert(RsdpCopy {
                    tag: kind,
                    offset: offset + 8,
                    bytes: &tag[8..],
                });
            }
            _ => {}
        }
        // The next tag starts at the next multiple of 8.
        offset = (offset + size + 7) & !7;
    }
    Err(Multiboot2Error::NoEndTag)
}

/// Iterator over the entries of a Multiboot2 memory-map tag (type 6): `entry_size` bytes
/// each, of which the first 24 are base_addr, length, type, reserved. A trailing partial
/// entry is ignored; lengths are cut at 2^64 − 1 as in [`MemoryMapIter`].
#[derive(Clone, Debug)]
pub struct Multiboot2MemoryMapIter<'a> {
    rest: &'a [u8],
    entry_size: usize,
}

impl Iterator for Multiboot2MemoryMapIter<'_> {
    type Item = (Range, MemoryKind);

    fn next(&mut self) -> Option<Self::Item> {
        let (Some(base), Some(length), Some(kind), Some(rest)) = (
            u64_at(self.rest, 0),
            u64_at(self.rest, 8),
            u32_at(self.rest, 16),
            self.rest.get(self.entry_size..),
        ) else {
            self.rest = &[];
            return None;
        };
        if self.entry_size < MULTIBOOT2_ENTRY_BYTES {
            self.rest = &[];
            return None;
        }
        let length = length.min(u64::MAX - base);
        let kind = MemoryKind::from_type(kind);
        self.rest = rest;
        Some((Range::new(base, length), kind))
    }
}

/// Either protocol's memory map, as one iterator.
#[derive(Clone, Debug)]
pub enum AnyMemoryMap<'a> {
    Multiboot1(MemoryMapIter<'a>),
    Multiboot2(Multiboot2MemoryMapIter<'a>),
}

impl Iterator for AnyMemoryMap<'_> {
    type Item = (Range, MemoryKind);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            AnyMemoryMap::Multiboot1(map) => map.next(),
            AnyMemoryMap::Multiboot2(map) => map.next(),
        }
    }
}

// The ACPI root pointer is parsed with the other firmware tables; the boot information only
// carries copies of it (tags 14 and 15), read through these names.
pub use crate::firmware_acpi::{parse_rsdp, Rsdp, RSDP_V1_BYTES, RSDP_V2_BYTES};

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn entry(out: &mut Vec<u8>, size: u32, base: u64, length: u64, kind: u32) {
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.resize(out.len() + size as usize - 20, 0xee);
    }

    #[test]
    fn parses_a_typical_map() {
        // What QEMU's SeaBIOS + GRUB report, roughly.
        let mut map = Vec::new();
        entry(&mut map, 20, 0, 0x9_fc00, 1);
        entry(&mut map, 20, 0x9_fc00, 0x400, 2);
        entry(&mut map, 20, 0xf_0000, 0x1_0000, 2);
        entry(&mut map, 20, 0x10_0000, 0x7fe_0000, 1);
        entry(&mut map, 20, 0x7fe_0000, 0x2_0000, 3);
        entry(&mut map, 20, 0xfeff_c000, 0x4000, 4);
        entry(&mut map, 20, 0x1_0000_0000, 0x1000, 5);
        entry(&mut map, 20, 0x1_0000_1000, 0x1000, 77);
        let parsed: Vec<_> = parse_memory_map(&map).collect();
        assert_eq!(parsed.len(), 8);
        assert_eq!(parsed[0], (Range::new(0, 0x9_fc00), MemoryKind::Available));
        assert_eq!(parsed[1].1, MemoryKind::Reserved);
        assert_eq!(
            parsed[3],
            (Range::new(0x10_0000, 0x7fe_0000), MemoryKind::Available)
        );
        assert_eq!(parsed[4].1, MemoryKind::AcpiReclaimable);
        assert_eq!(parsed[5].1, MemoryKind::Nvs);
        assert_eq!(parsed[6].1, MemoryKind::Bad);
        assert_eq!(parsed[7].1, MemoryKind::Reserved);
    }

    #[test]
    fn honours_larger_entry_sizes() {
        let mut map = Vec::new();
        entry(&mut map, 24, 0x1000, 0x2000, 1);
        entry(&mut map, 28, 0x5000, 0x1000, 2);
        entry(&mut map, 20, 0x9000, 0x1000, 1);
        let parsed: Vec<_> = parse_memory_map(&map).collect();
        assert_eq!(
            parsed,
            [
                (Range::new(0x1000, 0x2000), MemoryKind::Available),
                (Range::new(0x5000, 0x1000), MemoryKind::Reserved),
                (Range::new(0x9000, 0x1000), MemoryKind::Available),
            ]
        );
    }

    #[test]
    fn stops_at_bad_entries() {
        assert_eq!(parse_memory_map(&[]).count(), 0);
        assert_eq!(parse_memory_map(&[20, 0, 0]).count(), 0);
        let mut map = Vec::new();
        entry(&mut map, 20, 0x1000, 0x1000, 1);
        // Truncated second entry.
        let mut truncated = map.clone();
        truncated.extend_from_slice(&[20, 0, 0, 0, 1, 2, 3]);
        assert_eq!(parse_memory_map(&truncated).count(), 1);
        // An entry claiming a size too small to hold its fields.
        let mut small = map.clone();
        small.extend_from_slice(&[0u8; 24]);
        assert_eq!(parse_memory_map(&small).count(), 1);
        // A huge size on the last entry: the entry is complete, then iteration ends.
        let mut huge = map.clone();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0u8; 20]);
        assert_eq!(parse_memory_map(&huge).count(), 2);
        // Overflowing length is clipped.
        let mut overflow = Vec::new();
        entry(&mut overflow, 20, 0x1000, u64::MAX, 1);
        let (range, _) = parse_memory_map(&overflow).next().unwrap();
        assert_eq!(range.base.checked_add(range.size), Some(u64::MAX));
    }

    fn r(base: u64, size: u64) -> Range {
        Range::new(base, size)
    }

    #[test]
    fn coverage() {
        let map = [
            r(0x10_0000, 0x100_0000),
            r(0, 0x9_f000),
            r(0x110_0000, 0x10_0000),
        ];
        // Inside one entry.
        assert!(covers(map.iter().copied(), r(0x20_0000, 0x1000)));
        // Spanning two adjacent entries given out of order.
        assert!(covers(map.iter().copied(), r(0x10_0000, 0x110_0000)));
        assert!(covers(map.iter().rev().copied(), r(0x10_0000, 0x110_0000)));
        // Exactly an entry; one byte past it; into the hole.
        assert!(covers(map.iter().copied(), r(0, 0x9_f000)));
        assert!(!covers(map.iter().copied(), r(0, 0x9_f001)));
        assert!(!covers(map.iter().copied(), r(0x9_f000, 0x1000)));
        assert!(!covers(map.iter().copied(), r(0x120_0000 - 0x1000, 0x2000)));
        // Empty `needed`, empty map.
        assert!(covers(map.iter().copied(), r(0x5000_0000, 0)));
        assert!(covers(core::iter::empty(), r(0, 0)));
        assert!(!covers(core::iter::empty(), r(0, 1)));
        // `needed` that wraps is never covered.
        assert!(!covers(core::iter::once(r(0, u64::MAX)), r(u64::MAX, 2)));
    }

    #[test]
    fn overlapping_and_nested_entries() {
        let map = [
            r(0x3000, 0x1000),
            r(0x1000, 0x3000),
            r(0x2000, 0x500),
            r(0x3800, 0x2000),
        ];
        assert!(covers(map.iter().copied(), r(0x1000, 0x4800)));
        assert!(!covers(map.iter().copied(), r(0x1000, 0x4801)));
        assert!(!covers(map.iter().copied(), r(0x800, 0x1000)));
        // Zero-sized entries contribute nothing.
        assert!(!covers(
            [r(0x1000, 0), r(0x1000, 0)].into_iter(),
            r(0x1000, 1)
        ));
        // A range reaching the top of the address space.
        assert!(covers(
            core::iter::once(r(0x1000, u64::MAX)),
            r(u64::MAX - 5, 5)
        ));
    }

    #[test]
    fn many_small_entries_up_to_the_limit() {
        // 64 adjacent 4 KiB entries in reverse order cover 256 KiB.
        let entries = (0..MAX_COVER_RANGES as u64)
            .rev()
            .map(|i| r(i * 0x1000, 0x1000));
        assert!(covers(entries.clone(), r(0, 0x4_0000)));
        // Entries that do not touch `needed` do not use up the budget.
        let noise = (0..1000u64).map(|i| r(0x100_0000 + i * 0x1000, 0x1000));
        assert!(covers(noise.chain(entries), r(0, 0x4_0000)));
    }

    // --- Multiboot2 ---

    /// Appends a tag (header + payload) and pads to the next multiple of 8.
    fn tag(out: &mut Vec<u8>, kind: u32, payload: &[u8]) {
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(8 + payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        while !out.len().is_multiple_of(8) {
            out.push(0xcc);
        }
    }

    fn memory_map_payload(entry_size: u32, entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&entry_size.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        for &(base, length, kind) in entries {
            let start = payload.len();
            payload.extend_from_slice(&base.to_le_bytes());
            payload.extend_from_slice(&length.to_le_bytes());
            payload.extend_from_slice(&kind.to_le_bytes());
            payload.resize(start + entry_size as usize, 0);
        }
        payload
    }

    fn fix_checksum(bytes: &mut [u8], at: usize, over: usize) {
        bytes[at] = 0;
        let sum = bytes[..over].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        bytes[at] = sum.wrapping_neg();
    }

    fn rsdp_v1(rsdt: u32) -> Vec<u8> {
        let mut bytes = b"RSD PTR ".to_vec();
        bytes.extend_from_slice(&[0; 12]);
        bytes[9..15].copy_from_slice(b"BOCHS ");
        bytes[16..20].copy_from_slice(&rsdt.to_le_bytes());
        fix_checksum(&mut bytes, 8, 20);
        bytes
    }

    fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut bytes = rsdp_v1(rsdt);
        bytes[15] = 2;
        bytes.extend_from_slice(&36u32.to_le_bytes());
        bytes.extend_from_slice(&xsdt.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        fix_checksum(&mut bytes, 8, 20);
        fix_checksum(&mut bytes, 32, 36);
        bytes
    }

    /// An information block: header, the tags, an end tag; `total_size` filled in.
    fn info(tags: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = std::vec![0u8; 8];
        tags(&mut out);
        tag(&mut out, TAG_END, &[]);
        let total = out.len() as u32;
        out[0..4].copy_from_slice(&total.to_le_bytes());
        out
    }

    const OVMF_LIKE_MAP: [(u64, u64, u32); 4] = [
        (0, 0xa_0000, 1),
        (0x10_0000, 0x70_0000, 1),
        (0x80_0000, 0x8000, 4),
        (0x80_8000, 0x1f77_8000, 1),
    ];

    #[test]
    fn multiboot2_memory_map_and_rsdp_copies() {
        let bytes = info(|out| {
            tag(out, 1, b"cmdline\0"); // unknown to the parser: skipped
            tag(out, 2, b"GRUB 2.06\0"); // odd size: the next tag is padded to 8
            tag(out, TAG_MEMORY_MAP, &memory_map_payload(24, &OVMF_LIKE_MAP));
            tag(out, TAG_ACPI_OLD_RSDP, &rsdp_v1(0x1f77_e000));
            tag(out, TAG_ACPI_NEW_RSDP, &rsdp_v2(0x1f77_e000, 0x1f77_e0e8));
        });
        let parsed = parse_multiboot2(&bytes).unwrap();
        let map: Vec<_> = parsed.memory_map.clone().unwrap().collect();
        assert_eq!(
            map,
            [
                (Range::new(0, 0xa_0000), MemoryKind::Available),
                (Range::new(0x10_0000, 0x70_0000), MemoryKind::Available),
                (Range::new(0x80_0000, 0x8000), MemoryKind::Nvs),
                (Range::new(0x80_8000, 0x1f77_8000), MemoryKind::Available),
            ]
        );
        // The same ranges through the protocol-independent iterator, and the coverage
        // check the hypervisor makes: the trampoline page is RAM, the NVS hole is not.
        let available = || {
            AnyMemoryMap::Multiboot2(parsed.memory_map.clone().unwrap())
                .filter(|(_, kind)| *kind == MemoryKind::Available)
                .map(|(range, _)| range)
        };
        assert!(covers(available(), Range::new(0x8000, 0x1000)));
        assert!(!covers(available(), Range::new(0x10_0000, 0xf0_0000)));
        assert!(covers(available(), Range::new(0x100_0000, 0x100_0000)));

        // Tag 15 is preferred; the offset is where the copy lies in the block.
        let (rsdp, copy) = parsed.rsdp().unwrap();
        assert_eq!(copy.tag, TAG_ACPI_NEW_RSDP);
        assert_eq!(&bytes[copy.offset..copy.offset + 8], b"RSD PTR ");
        assert_eq!(
            rsdp,
            Rsdp {
                revision: 2,
                rsdt_address: 0x1f77_e000,
                xsdt_address: Some(0x1f77_e0e8),
            }
        );
        assert_eq!(parsed.acpi_old.unwrap().tag, TAG_ACPI_OLD_RSDP);
    }

    #[test]
    fn multiboot2_falls_back_to_the_old_rsdp_and_tolerates_absent_tags() {
        // SeaBIOS: only an ACPI 1.0 RSDP (tag 14).
        let bytes = info(|out| tag(out, TAG_ACPI_OLD_RSDP, &rsdp_v1(0x7fe_1234)));
        let parsed = parse_multiboot2(&bytes).unwrap();
        assert!(parsed.memory_map.is_none());
        let (rsdp, copy) = parsed.rsdp().unwrap();
        assert_eq!(copy.tag, TAG_ACPI_OLD_RSDP);
        assert_eq!(rsdp.xsdt_address, None);
        assert_eq!(rsdp.rsdt_address, 0x7fe_1234);
        // A broken tag-15 copy falls back to tag 14.
        let mut broken = rsdp_v2(1, 2);
        broken[30] ^= 1;
        let bytes = info(|out| {
            tag(out, TAG_ACPI_NEW_RSDP, &broken);
            tag(out, TAG_ACPI_OLD_RSDP, &rsdp_v1(0x5000));
        });
        let (rsdp, copy) = parse_multiboot2(&bytes).unwrap().rsdp().unwrap();
        assert_eq!((rsdp.rsdt_address, copy.tag), (0x5000, TAG_ACPI_OLD_RSDP));
        // Nothing at all: just an end tag.
        let empty = info(|_| {});
        let parsed = parse_multiboot2(&empty).unwrap();
        assert!(parsed.memory_map.is_none() && parsed.rsdp().is_none());
    }

    #[test]
    fn multiboot2_memory_map_entry_sizes() {
        // A larger entry_size (a future entry_version) is honoured; a partial last entry is
        // ignored.
        let mut payload = memory_map_payload(32, &[(0x1000, 0x1000, 1), (0x9000, 0x100, 3)]);
        payload.extend_from_slice(&[1, 2, 3]);
        let bytes = info(|out| tag(out, TAG_MEMORY_MAP, &payload));
        let map: Vec<_> = parse_multiboot2(&bytes)
            .unwrap()
            .memory_map
            .unwrap()
            .collect();
        assert_eq!(
            map,
            [
                (Range::new(0x1000, 0x1000), MemoryKind::Available),
                (Range::new(0x9000, 0x100), MemoryKind::AcpiReclaimable),
            ]
        );
        // entry_size below 24 is refused, as is a tag too short for its header fields.
        let bytes = info(|out| tag(out, TAG_MEMORY_MAP, &memory_map_payload(16, &[])));
        assert_eq!(
            parse_multiboot2(&bytes).unwrap_err(),
            Multiboot2Error::BadMemoryMap { offset: 8 }
        );
        let bytes = info(|out| tag(out, TAG_MEMORY_MAP, &[24, 0, 0, 0]));
        assert!(matches!(
            parse_multiboot2(&bytes),
            Err(Multiboot2Error::BadMemoryMap { .. })
        ));
        // Overflowing lengths are clipped as in v1.
        let payload = memory_map_payload(24, &[(0x1000, u64::MAX, 1)]);
        let bytes = info(|out| tag(out, TAG_MEMORY_MAP, &payload));
        let (range, _) = parse_multiboot2(&bytes)
            .unwrap()
            .memory_map
            .unwrap()
            .next()
            .unwrap();
        assert_eq!(range.base.checked_add(range.size), Some(u64::MAX));
    }

    #[test]
    fn multiboot2_truncated_and_garbage() {
        let good = info(|out| {
            tag(out, TAG_MEMORY_MAP, &memory_map_payload(24, &OVMF_LIKE_MAP));
            tag(out, TAG_ACPI_OLD_RSDP, &rsdp_v1(0x1000));
        });
        assert!(parse_multiboot2(&good).is_ok());
        // Fewer bytes than total_size says, at every length.
        for cut in 0..good.len() {
            assert!(parse_multiboot2(&good[..cut]).is_err(), "cut at {cut}");
        }
        // total_size too small, too large, absurd.
        let mut small = good.clone();
        small[0..4].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&small).unwrap_err(),
            Multiboot2Error::BadTotalSize(8)
        );
        let mut large = good.clone();
        large[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(multiboot2_total_size(&large).is_err());
        assert!(multiboot2_total_size(&[1, 2, 3]).is_err());
        // total_size that ends inside the tags: no end tag within it.
        let mut short = good.clone();
        short[0..4].copy_from_slice(&24u32.to_le_bytes());
        assert!(parse_multiboot2(&short).is_err());
        // A tag of size 0 (would loop forever) and one running past the end.
        let mut zero = good.clone();
        zero[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&zero).unwrap_err(),
            Multiboot2Error::BadTag { offset: 8 }
        );
        let mut long = good.clone();
        long[12..16].copy_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&long).unwrap_err(),
            Multiboot2Error::BadTag { offset: 8 }
        );
        // No end tag: the last tag replaced by padding-sized unknown data.
        let mut endless = good.clone();
        let end = endless.len() - 8;
        endless[end..end + 4].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(
            parse_multiboot2(&endless).unwrap_err(),
            Multiboot2Error::NoEndTag
        );
        // Pseudo-random garbage never panics.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % bytes.len();
                bytes[at] = (state >> 32) as u8;
            }
            if let Ok(parsed) = parse_multiboot2(&bytes) {
                let _ = parsed.rsdp();
                let _ = parsed.memory_map.map(|map| map.count());
            }
        }
    }

    #[test]
    fn boot_protocols_by_magic() {
        assert_eq!(
            BootProtocol::from_magic(0x2BAD_B002),
            Some(BootProtocol::Multiboot1)
        );
        assert_eq!(
            BootProtocol::from_magic(0x36D7_6289),
            Some(BootProtocol::Multiboot2)
        );
        assert_eq!(BootProtocol::from_magic(0xE852_50D6), None);
    }
}
