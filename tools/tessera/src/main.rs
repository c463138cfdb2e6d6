//! The `tessera` command: see [`tessera::main_with_args`].

fn main() {
    std::process::exit(tessera::main_with_args(std::env::args_os()));
}
