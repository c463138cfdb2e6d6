//! The Multiboot v1 memory map the loader receives from the boot loader, and the check that
//! the RAM the partition table uses is really there.
//!
//! The map is a sequence of entries `{size u32, base_addr u64, length u64, type u32}` where
//! `size` counts the bytes after itself, so the next entry starts `size + 4` bytes later
//! (Multiboot specification 0.6.96 §3.3, "Boot information format", `mmap_*` fields). The
//! loader hands [`parse_memory_map`] the `mmap_length` bytes at `mmap_addr`.

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

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from(read_u32(bytes, at)) | u64::from(read_u32(bytes, at + 4)) << 32
}

impl Iterator for MemoryMapIter<'_> {
    type Item = (Range, MemoryKind);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            self.rest = &[];
            return None;
        }
        let size = read_u32(self.rest, 0) as usize;
        let stride = size.checked_add(4)?;
        if size < ENTRY_BODY_BYTES || self.rest.len() < 4 + ENTRY_BODY_BYTES {
            self.rest = &[];
            return None;
        }
        let base = read_u64(self.rest, 4);
        let length = read_u64(self.rest, 12).min(u64::MAX - base);
        let kind = MemoryKind::from_type(read_u32(self.rest, 20));
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
}
