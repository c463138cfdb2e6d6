//! Guest-physical address ranges and the arithmetic guests need on them.

/// A half-open guest-physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub start: u64,
    pub end: u64,
}

impl MemoryRange {
    /// `[start, end)`; an `end` below `start` gives an empty range at `start`.
    pub const fn new(start: u64, end: u64) -> MemoryRange {
        MemoryRange {
            start,
            end: if end < start { start } else { end },
        }
    }

    /// `[start, start + size)`, clipped at the top of the address space.
    pub const fn with_size(start: u64, size: u64) -> MemoryRange {
        MemoryRange::new(start, start.saturating_add(size))
    }

    pub const fn size(&self) -> u64 {
        self.end - self.start
    }

    pub const fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub const fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// The part of `self` below `limit`.
    pub const fn clip_below(&self, limit: u64) -> MemoryRange {
        let end = if self.end < limit { self.end } else { limit };
        MemoryRange::new(self.start, end)
    }

    /// The largest sub-range whose bounds are multiples of `alignment` (a power of two).
    pub const fn shrink_to_alignment(&self, alignment: u64) -> MemoryRange {
        let mask = alignment - 1;
        let start = match self.start.checked_add(mask) {
            Some(raised) => raised & !mask,
            None => self.end,
        };
        MemoryRange::new(start, self.end & !mask)
    }
}

/// Calls `visit` for each maximal piece of `range` that overlaps none of `excluded`, in
/// ascending order. `excluded` may be unsorted and overlapping.
pub fn for_each_piece_outside(
    range: MemoryRange,
    excluded: &[MemoryRange],
    mut visit: impl FnMut(MemoryRange),
) {
    let mut cursor = range.start;
    while cursor < range.end {
        // The excluded range that covers the cursor, if any: skip past it.
        if let Some(covering) = excluded
            .iter()
            .filter(|exclusion| exclusion.contains(cursor))
            .map(|exclusion| exclusion.end)
            .max()
        {
            cursor = covering;
            continue;
        }
        // Otherwise the piece runs up to the nearest exclusion that starts above it.
        let piece_end = excluded
            .iter()
            .filter(|exclusion| !exclusion.is_empty() && exclusion.start > cursor)
            .map(|exclusion| exclusion.start)
            .fold(range.end, u64::min);
        visit(MemoryRange::new(cursor, piece_end));
        cursor = piece_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(range: MemoryRange, excluded: &[MemoryRange]) -> Vec<(u64, u64)> {
        let mut found = Vec::new();
        for_each_piece_outside(range, excluded, |piece| {
            found.push((piece.start, piece.end))
        });
        found
    }

    #[test]
    fn no_exclusions_gives_the_whole_range() {
        assert_eq!(
            pieces(MemoryRange::new(0x1000, 0x5000), &[]),
            [(0x1000, 0x5000)]
        );
    }

    #[test]
    fn exclusions_cut_holes_in_any_order() {
        let excluded = [
            MemoryRange::new(0x4000, 0x4800),
            MemoryRange::new(0x0, 0x1800),
            MemoryRange::new(0x1000, 0x2000),
            MemoryRange::new(0x9000, 0x9000),
        ];
        assert_eq!(
            pieces(MemoryRange::new(0x1000, 0x5000), &excluded),
            [(0x2000, 0x4000), (0x4800, 0x5000)]
        );
    }

    #[test]
    fn exclusion_covering_everything_gives_nothing() {
        let excluded = [MemoryRange::new(0, u64::MAX)];
        assert!(pieces(MemoryRange::new(0x1000, 0x5000), &excluded).is_empty());
    }

    #[test]
    fn alignment_and_clipping() {
        let range = MemoryRange::new(0x1003, 0x2ffd);
        assert_eq!(
            range.shrink_to_alignment(8),
            MemoryRange::new(0x1008, 0x2ff8)
        );
        assert_eq!(
            MemoryRange::new(0x1001, 0x1006).shrink_to_alignment(8),
            MemoryRange::new(0x1008, 0x1008)
        );
        assert_eq!(
            MemoryRange::new(0xffff_f000, 0x1_0000_2000).clip_below(1 << 32),
            MemoryRange::new(0xffff_f000, 0x1_0000_0000)
        );
        assert_eq!(MemoryRange::with_size(u64::MAX - 1, 8).end, u64::MAX);
    }
}
