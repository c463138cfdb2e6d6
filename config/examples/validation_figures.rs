//! Prints `tessera_config::bench::validation_figures()`, the figures `cargo xtask bench`
//! reports: `cargo run --release -p tessera-config --example validation_figures`.

//! With `--tab-separated` each figure is one line `name<TAB>value<TAB>unit<TAB>method`, which
//! is what `cargo xtask bench` reads.

fn main() {
    let tab_separated = std::env::args().any(|argument| argument == "--tab-separated");
    for (name, value, unit, how) in tessera_config::bench::validation_figures() {
        if tab_separated {
            println!("{name}\t{value}\t{unit}\t{how}");
        } else {
            println!("{name}: {value:.3} {unit}  ({how})");
        }
    }
}
