//! Turns the partition table into the hypervisor's static tables, the blobs the build
//! generates for them (Linux boot data, ACPI tables) and the linker script.
//!
//! The table comes from `TESSERA_TABLE` (a path), or partitions/demo.toml by default. The
//! whole script lives in `tessera_config::build_script` so that config's tests run the
//! same code the build does.

fn main() {
    tessera_config::build_script_main();
}
