//! Runs `tessera_config::check_text` once on `synthetic::table(N, 10 N)` (N from the first
//! argument, default 1000), for profiling the validator under `valgrind --tool=callgrind`:
//! `cargo build --release -p tessera-config --example validation_profile`.

use std::path::Path;

fn main() {
    let partitions: usize = std::env::args()
        .nth(1)
        .and_then(|argument| argument.parse().ok())
        .unwrap_or(1000);
    let text = tessera_config::synthetic::table(partitions, partitions * 10);
    let verdict = tessera_config::check_text(
        Path::new("synthetic.toml"),
        text,
        tessera_config::FileChecks::Skip,
    );
    println!(
        "{partitions} partitions: {}",
        if verdict.is_ok() { "valid" } else { "refused" }
    );
}
