//! Validation timing for `cargo xtask bench`: a generated 1,000-partition / 10,000-region
//! table next to a 3-partition one, and the growth from half that size (near 2 for an
//! O(n log n) validator, near 4 for one that compares all pairs).

use std::path::Path;
use std::time::Instant;

use crate::{check_text, parse, synthetic, validate, FileChecks};

/// Runs of each table made and thrown away before the measured ones: the first runs pay
/// for the allocator's first page faults, cold caches and the processor's clock ramping
/// up. On the development machine the 1,000-partition median of 7 runs without them was
/// 27.8–29.5 ms and the growth 2.00–2.11; with them and 31 runs, 15.1–16.4 ms and
/// 2.010–2.021 (docs/benchmarks.md).
const WARM_UP_RUNS: usize = 3;
/// Measured runs of each table for the large figures (interleaved, so that a change in the
/// machine's load falls on both sizes).
const MEASURED_RUNS: usize = 31;

/// Wall-clock seconds of one parse + validate run of `text` (without files).
fn seconds(text: &str) -> f64 {
    let copy = text.to_owned();
    let start = Instant::now();
    let verdict = check_text(Path::new("synthetic.toml"), copy, FileChecks::Skip);
    let elapsed = start.elapsed().as_secs_f64();
    std::hint::black_box(verdict.is_ok());
    elapsed
}

/// Wall-clock seconds of one run of the rules alone on a parsed table.
fn rule_seconds(table: &crate::model::Table) -> f64 {
    let start = Instant::now();
    let findings = validate::validate(table, FileChecks::Skip);
    let elapsed = start.elapsed().as_secs_f64();
    std::hint::black_box(findings.len());
    elapsed
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median wall-clock seconds of `runs` parse + validate runs of `text` (without files),
/// after the warm-up runs.
fn median_seconds(text: &str, runs: usize) -> f64 {
    for _ in 0..WARM_UP_RUNS {
        seconds(text);
    }
    median((0..runs.max(1)).map(|_| seconds(text)).collect())
}

/// Medians of `runs` measurements each of `first` and `second`, interleaved (first,
/// second, first, …) after the warm-up runs of both.
fn interleaved_medians(
    first: impl Fn() -> f64,
    second: impl Fn() -> f64,
    runs: usize,
) -> (f64, f64) {
    for _ in 0..WARM_UP_RUNS {
        first();
        second();
    }
    let (mut firsts, mut seconds_of_second) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        firsts.push(first());
        seconds_of_second.push(second());
    }
    (median(firsts), median(seconds_of_second))
}

/// `(name, value, unit, how measured)` for each figure.
pub fn validation_figures() -> Vec<(String, f64, String, String)> {
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    let large = synthetic::table(1000, 10_000);
    let half = synthetic::table(500, 5_000);
    let small = synthetic::table(3, 4);
    let (large_seconds, half_seconds) =
        interleaved_medians(|| seconds(&large), || seconds(&half), MEASURED_RUNS);
    let (large_rule_seconds, half_rule_seconds) = match (
        parse(Path::new("synthetic.toml"), large.clone()),
        parse(Path::new("synthetic.toml"), half.clone()),
    ) {
        (Ok(large_table), Ok(half_table)) => interleaved_medians(
            || rule_seconds(&large_table),
            || rule_seconds(&half_table),
            MEASURED_RUNS,
        ),
        _ => (f64::NAN, f64::NAN),
    };
    let small_seconds = median_seconds(&small, 101);
    let how = |runs: usize| {
        format!(
            "tessera_config::check_text (schema pass, parse, every rule, no boot files) on \
             synthetic::table; median wall-clock of {runs} runs after {WARM_UP_RUNS} unmeasured ones, \
             {profile}"
        )
    };
    vec![
        (
            "validation_1000_partitions_10000_regions_ms".to_owned(),
            large_seconds * 1e3,
            "ms".to_owned(),
            how(MEASURED_RUNS),
        ),
        (
            "validation_3_partitions_us".to_owned(),
            small_seconds * 1e6,
            "us".to_owned(),
            how(101),
        ),
        (
            "validation_ratio_1000_to_3_partitions".to_owned(),
            large_seconds / small_seconds,
            "x".to_owned(),
            "ratio of the two medians above".to_owned(),
        ),
        (
            "validation_growth_500_to_1000_partitions".to_owned(),
            large_seconds / half_seconds,
            "x".to_owned(),
            format!(
                "ratio of medians of {MEASURED_RUNS} runs each, interleaved, after \
                 {WARM_UP_RUNS} unmeasured ones; 2 is linear, 4 would be all pairs; {profile}"
            ),
        ),
        (
            "validation_rules_only_1000_partitions_ms".to_owned(),
            large_rule_seconds * 1e3,
            "ms".to_owned(),
            format!(
                "tessera_config::validate::validate on the parsed table; median of \
                 {MEASURED_RUNS} runs after {WARM_UP_RUNS} unmeasured ones, {profile}"
            ),
        ),
        (
            "validation_rules_only_growth_500_to_1000_partitions".to_owned(),
            large_rule_seconds / half_rule_seconds,
            "x".to_owned(),
            format!(
                "ratio of medians of {MEASURED_RUNS} runs each, interleaved, after \
                 {WARM_UP_RUNS} unmeasured ones; 2 is linear, 4 would be all pairs; {profile}"
            ),
        ),
        (
            "validation_per_region_at_10000_regions_ns".to_owned(),
            large_seconds * 1e9 / 10_000.0,
            "ns".to_owned(),
            "the 1000-partition median divided by 10000".to_owned(),
        ),
    ]
}
