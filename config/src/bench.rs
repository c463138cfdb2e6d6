//! Validation timing for `cargo xtask bench`: a generated 1,000-partition / 10,000-region
//! table next to a 3-partition one, and the growth from half that size (near 2 for an
//! O(n log n) validator, near 4 for one that compares all pairs).

use std::path::Path;
use std::time::Instant;

use crate::{check_text, parse, synthetic, validate, FileChecks};

/// Wall-clock seconds of one parse + validate run of `text` (without files).
fn seconds(text: &str) -> f64 {
    let copy = text.to_owned();
    let start = Instant::now();
    let verdict = check_text(Path::new("synthetic.toml"), copy, FileChecks::Skip);
    let elapsed = start.elapsed().as_secs_f64();
    std::hint::black_box(verdict.is_ok());
    elapsed
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median wall-clock seconds of `runs` parse + validate runs of `text` (without files).
fn median_seconds(text: &str, runs: usize) -> f64 {
    median((0..runs.max(1)).map(|_| seconds(text)).collect())
}

/// Medians of `runs` runs each of `first` and `second`, interleaved (first, second, first,
/// …) so that a change in the machine's load during the measurement falls on both.
fn interleaved_median_seconds(first: &str, second: &str, runs: usize) -> (f64, f64) {
    let (mut firsts, mut seconds_of_second) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        firsts.push(seconds(first));
        seconds_of_second.push(seconds(second));
    }
    (median(firsts), median(seconds_of_second))
}

/// Median wall-clock seconds of `runs` runs of the rules alone on the parsed `text`.
fn median_rule_seconds(text: &str, runs: usize) -> f64 {
    let Ok(table) = parse(Path::new("synthetic.toml"), text.to_owned()) else {
        return f64::NAN;
    };
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            let findings = validate::validate(&table, FileChecks::Skip);
            let elapsed = start.elapsed().as_secs_f64();
            std::hint::black_box(findings.len());
            elapsed
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
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
    let (large_seconds, half_seconds) = interleaved_median_seconds(&large, &half, 7);
    let small_seconds = median_seconds(&small, 101);
    let how = |runs: usize| {
        format!(
            "tessera_config::check_text (schema pass, parse, every rule, no boot files) on \
             synthetic::table; median wall-clock of {runs} runs, {profile}"
        )
    };
    vec![
        (
            "validation_1000_partitions_10000_regions_ms".to_owned(),
            large_seconds * 1e3,
            "ms".to_owned(),
            how(7),
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
                "ratio of medians of 7 runs each, interleaved; 2 is linear, 4 would be all \
                 pairs; {profile}"
            ),
        ),
        (
            "validation_rules_only_1000_partitions_ms".to_owned(),
            median_rule_seconds(&large, 7) * 1e3,
            "ms".to_owned(),
            format!("tessera_config::validate::validate on the parsed table; median of 7 runs, {profile}"),
        ),
        (
            "validation_rules_only_growth_500_to_1000_partitions".to_owned(),
            median_rule_seconds(&large, 7) / median_rule_seconds(&half, 7),
            "x".to_owned(),
            format!("ratio of medians of 7 runs each; 2 is linear, 4 would be all pairs; {profile}"),
        ),
        (
            "validation_per_region_at_10000_regions_ns".to_owned(),
            large_seconds * 1e9 / 10_000.0,
            "ns".to_owned(),
            "the 1000-partition median divided by 10000".to_owned(),
        ),
    ]
}
