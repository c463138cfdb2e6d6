//! Address-range arithmetic on [`Range`]: overflow-checked ends, overlap tests, alignment.
//!
//! Ranges are half-open (`[base, base + size)`). A zero-sized range overlaps nothing.

use tessera_abi::table::Range;

/// One past the last byte of `range`, or `None` when `base + size` does not fit in a `u64`
/// (such a range cannot describe real memory and validation rejects it).
pub const fn checked_end(range: Range) -> Option<u64> {
    range.base.checked_add(range.size)
}

/// Whether the two ranges share at least one byte. Empty ranges share nothing; a range whose
/// end overflows is treated as reaching to the top of the address space.
pub fn overlaps(a: Range, b: Range) -> bool {
    if a.size == 0 || b.size == 0 {
        return false;
    }
    // Comparing last bytes instead of ends keeps the test correct for a range ending exactly
    // at 2^64.
    let a_last = a.base.saturating_add(a.size - 1);
    let b_last = b.base.saturating_add(b.size - 1);
    a.base <= b_last && b.base <= a_last
}

/// Whether `value` is a multiple of `align`, which must be a power of two.
pub const fn is_aligned(value: u64, align: u64) -> bool {
    debug_assert!(align.is_power_of_two());
    value & (align - 1) == 0
}

/// The largest multiple of `align` (a power of two) not above `value`.
pub const fn align_down(value: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    value & !(align - 1)
}

/// The smallest multiple of `align` (a power of two) not below `value`. Wraps to a smaller
/// value only when the result would not fit in a `u64`; callers that can see such values use
/// [`checked_end`]-style checks first.
pub const fn align_up(value: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    value.wrapping_add(align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_end_detects_overflow() {
        assert_eq!(checked_end(Range::new(0x1000, 0x1000)), Some(0x2000));
        assert_eq!(checked_end(Range::new(u64::MAX, 0)), Some(u64::MAX));
        assert_eq!(checked_end(Range::new(u64::MAX - 0xfff, 0x1000)), None);
        assert_eq!(checked_end(Range::new(u64::MAX, 1)), None);
    }

    #[test]
    fn overlap_cases() {
        let a = Range::new(0x1000, 0x1000);
        // Adjacent on either side: no overlap (half-open).
        assert!(!overlaps(a, Range::new(0x2000, 0x1000)));
        assert!(!overlaps(a, Range::new(0, 0x1000)));
        // One byte in common at either end.
        assert!(overlaps(a, Range::new(0x1fff, 1)));
        assert!(overlaps(a, Range::new(0, 0x1001)));
        // Containment both ways, identity.
        assert!(overlaps(a, Range::new(0x1800, 0x10)));
        assert!(overlaps(Range::new(0x1800, 0x10), a));
        assert!(overlaps(a, a));
        // Empty ranges overlap nothing, even inside another range.
        assert!(!overlaps(a, Range::new(0x1800, 0)));
        assert!(!overlaps(Range::new(0x1800, 0), Range::new(0x1800, 0)));
        // A range reaching the top of the address space.
        let top = Range::new(u64::MAX - 0xfff, 0x1000);
        assert!(overlaps(top, Range::new(u64::MAX, 1)));
        assert!(!overlaps(top, Range::new(0, u64::MAX - 0xfff)));
        assert!(overlaps(top, Range::new(0, u64::MAX)));
    }

    #[test]
    fn alignment() {
        assert!(is_aligned(0, 4096));
        assert!(is_aligned(0x20_0000, 0x20_0000));
        assert!(!is_aligned(0x20_1000, 0x20_0000));
        assert!(is_aligned(7, 1));
        assert_eq!(align_down(0x1fff, 0x1000), 0x1000);
        assert_eq!(align_down(0x2000, 0x1000), 0x2000);
        assert_eq!(align_up(0x1001, 0x1000), 0x2000);
        assert_eq!(align_up(0x2000, 0x1000), 0x2000);
        assert_eq!(align_up(0, 0x1000), 0);
        assert_eq!(align_down(u64::MAX, 0x1000), 0xffff_ffff_ffff_f000);
    }
}
