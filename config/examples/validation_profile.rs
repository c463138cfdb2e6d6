//! Runs `tessera_config::check_text` on `synthetic::table(N, 10 N)` (N from the first
//! argument, default 1000) as many times as the second argument says (default once), for
//! profiling the validator under `valgrind --tool=callgrind` or `perf record`:
//! `cargo build --release -p tessera-config --example validation_profile`. With
//! `--reference` anywhere it runs `parse_reference` and `validate` instead (toml_edit's
//! document for every table, as before the fast parse), for comparing the two.

use std::path::Path;

fn main() {
    let reference = std::env::args().any(|argument| argument == "--reference");
    let mut arguments = std::env::args()
        .skip(1)
        .filter(|argument| argument != "--reference");
    let partitions: usize = arguments
        .next()
        .and_then(|argument| argument.parse().ok())
        .unwrap_or(1000);
    let runs: usize = arguments
        .next()
        .and_then(|argument| argument.parse().ok())
        .unwrap_or(1);
    let text = tessera_config::synthetic::table(partitions, partitions * 10);
    let mut valid = 0;
    for _ in 0..runs {
        let path = Path::new("synthetic.toml");
        let files = tessera_config::FileChecks::Skip;
        let verdict = if reference {
            tessera_config::parse_reference(path, text.clone())
                .is_ok_and(|table| tessera_config::validate::validate(&table, files).is_empty())
        } else {
            tessera_config::check_text(path, text.clone(), files).is_ok()
        };
        valid += usize::from(verdict);
    }
    println!("{partitions} partitions: {valid} of {runs} runs valid");
}
