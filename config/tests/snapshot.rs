//! The generated Rust for a small table and for a table with a Linux partition, compared
//! with `tests/snapshots/small.rs` and `tests/snapshots/linux.rs`. Regenerate the expected
//! files with `UPDATE_SNAPSHOTS=1 cargo test -p tessera-config --test snapshot`.

mod common;

use std::path::Path;

use tessera_config::{generate_rust, load, lower};

const SMALL: &str = r#"[platform]
name = "small"
cpus = [0, 1, 2]
ram = [ { base = 0x100000, size = "1023 MiB" } ]
ioapic = { base = 0xfec00000, pins = 24 }

[platform.devices]
uart = { ports = [ { base = 0x3f8, size = 8 } ], irq = 4 }
console = { ports = [ { base = 0x2f8, size = 8 } ] }
timer = { mmio = [ { base = 0xfed00000, size = "4 KiB" } ] }
gpio = { ports = [ { base = 0x400, size = 4 }, { base = 0x404, size = 4 } ], irq = 9 }

[hypervisor]
memory = { base = 0x100000, size = "15 MiB" }
console = "console"

[[partition]]
name = "alpha"
cpus = [0, 1]
memory = [ { base = 0x1000000, size = "16 MiB" }, { base = 0x4000000, size = "2 MiB" } ]
devices = ["uart", "timer"]
boot = { kind = "elf", image = "guest.elf", cmdline = "console=0x3f8 \"quoted\"" }
on-fault = "restart"
capabilities = ["power", "stats:*", "restart:beta"]

[[partition]]
name = "beta"
cpus = [2]
memory = [ { base = 0x2000000, size = "8 MiB" } ]
devices = ["gpio"]
boot = { kind = "elf", image = "guest.elf" }
on-fault = "halt"
capabilities = ["stats:alpha"]
user-hypercalls = ["own-exit-count", "ring-doorbell"]
wbinvd = "native"

[[channel]]
name = "ring"
partitions = ["beta", "alpha"]
memory = { base = 0x3000000, size = "64 KiB" }
doorbell = { vector = 0x40 }
doorbell-budget = 500
"#;

#[test]
fn generated_rust_matches_the_snapshot() {
    let directory = common::scratch_directory("snapshot");
    let path = common::write_file(&directory, "small.toml", SMALL);
    let image = common::elf_builder::build_pvh_elf(&common::elf_builder::ElfSpec::default());
    common::write_file(&directory, "guest.elf", image);
    let validated = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let lowered =
        lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let directory = std::fs::canonicalize(&directory).unwrap();
    let generated = generate_rust(&lowered).replace(&directory.display().to_string(), "@SCRATCH@");
    compare_with_snapshot(&generated, "small.rs");
}

#[test]
fn generated_rust_for_linux_matches_the_snapshot() {
    let (path, _, _) = common::linux_table::write_linux_table("snapshot-linux");
    let validated = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let lowered =
        lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let directory = std::fs::canonicalize(path.parent().unwrap()).unwrap();
    let generated = generate_rust(&lowered).replace(&directory.display().to_string(), "@SCRATCH@");
    compare_with_snapshot(&generated, "linux.rs");
}

fn compare_with_snapshot(generated: &str, name: &str) {
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, generated).unwrap();
    }
    let expected = std::fs::read_to_string(&snapshot)
        .expect("snapshot missing: run with UPDATE_SNAPSHOTS=1 to create it");
    assert!(
        generated == expected,
        "generated code differs from {}; rerun with UPDATE_SNAPSHOTS=1 if the change is intended.\n\
         generated:\n{generated}",
        snapshot.display()
    );
}
