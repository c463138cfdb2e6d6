//! Overlap detection by sorting and sweeping: O(n log n + k) for n intervals and k overlaps.

/// A half-open interval `[start, end)` with the item it stands for.
#[derive(Clone, Debug)]
pub struct Interval<T> {
    pub start: u64,
    pub end: u64,
    pub item: T,
}

/// Every pair of overlapping, non-empty intervals as `(earlier, later)` indices into
/// `intervals`, where `earlier` starts first (ties: the shorter first, then table order).
pub fn overlapping_pairs<T>(intervals: &[Interval<T>]) -> Vec<(usize, usize)> {
    // Sorted as (start, end, index) triples side by side, not as indices looked up in
    // `intervals` at every comparison: the items can be large, and a table's intervals
    // mostly come in address order already, which the sort then only has to confirm.
    let mut order: Vec<(u64, u64, usize)> = intervals
        .iter()
        .enumerate()
        .filter(|(_, interval)| interval.start < interval.end)
        .map(|(index, interval)| (interval.start, interval.end, index))
        .collect();
    order.sort();
    let mut active: Vec<(u64, usize)> = Vec::new();
    let mut pairs = Vec::new();
    for (start, end, index) in order {
        active.retain(|&(open_end, _)| open_end > start);
        pairs.extend(active.iter().map(|&(_, open)| (open, index)));
        active.push((end, index));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(start: u64, end: u64) -> Interval<()> {
        Interval {
            start,
            end,
            item: (),
        }
    }

    #[test]
    fn finds_every_overlap_and_only_those() {
        let intervals = [
            interval(10, 20),
            interval(0, 5),
            interval(15, 30),
            interval(20, 25),
            interval(4, 4),
        ];
        assert_eq!(overlapping_pairs(&intervals), vec![(0, 2), (2, 3)]);
    }

    #[test]
    fn touching_intervals_do_not_overlap() {
        assert!(overlapping_pairs(&[interval(0, 10), interval(10, 20)]).is_empty());
        assert_eq!(
            overlapping_pairs(&[interval(0, 10), interval(0, 10)]),
            vec![(0, 1)]
        );
    }
}
