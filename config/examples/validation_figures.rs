//! Prints `tessera_config::bench::validation_figures()`, the figures `cargo xtask bench`
//! reports: `cargo run --release -p tessera-config --example validation_figures`.

fn main() {
    for (name, value, unit, how) in tessera_config::bench::validation_figures() {
        println!("{name}: {value:.3} {unit}  ({how})");
    }
}
