//! Turns the partition table into the hypervisor's static tables, the blobs the build
//! generates for them (Linux boot data, ACPI tables) and the linker script.
//!
//! The table comes from `TESSERA_TABLE` (a path), or partitions/demo.toml by default so that
//! a plain `cargo build` works. An invalid table stops the build with the validator's
//! diagnostics — the same ones `cargo xtask check` prints.
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=TESSERA_TABLE");
    let table = match std::env::var_os("TESSERA_TABLE") {
        Some(path) => PathBuf::from(path),
        None => manifest_dir.join("../partitions/demo.toml"),
    };

    println!("cargo:rerun-if-changed={}", table.display());
    let lowered = match tessera_config::load(&table).and_then(|table| tessera_config::lower(&table))
    {
        Ok(lowered) => lowered,
        Err(diagnostics) => {
            // Cargo shows a failing build script's stderr: the same rendering as the CLI.
            eprintln!("{}", diagnostics.render());
            eprintln!("error: the partition table {} is invalid", table.display());
            std::process::exit(1);
        }
    };
    for path in &lowered.files {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // Generated blobs go to OUT_DIR first: machine.rs include_bytes!s them from there.
    if let Err(error) = tessera_config::write_generated(&lowered, &out_dir) {
        eprintln!("{error}");
        std::process::exit(1);
    }
    let source = tessera_config::generate_rust(&lowered);
    std::fs::write(out_dir.join("machine.rs"), source).expect("write machine.rs");

    // The linker script: the image lives at the start of the table's hypervisor memory.
    let memory = lowered.hypervisor_memory;
    let template_path = manifest_dir.join("../loader/linker.ld.in");
    println!("cargo:rerun-if-changed={}", template_path.display());
    let template = std::fs::read_to_string(&template_path).expect("loader/linker.ld.in");
    let script = template
        .replace("@BASE@", &format!("{:#x}", memory.base))
        .replace("@LIMIT@", &format!("{:#x}", memory.base + memory.size));
    let script_path = out_dir.join("tessera.ld");
    std::fs::write(&script_path, script).expect("write linker script");
    println!("cargo:rustc-link-arg-bins=-T{}", script_path.display());
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo:rustc-link-arg-bins=--gc-sections");
}
