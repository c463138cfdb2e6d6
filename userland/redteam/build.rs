//! Links the red-team guest with the runtime's linker script (guest-physical 0x100000, a
//! PT_NOTE for the PVH entry) and 4 KiB segment alignment, as the demo guest is linked,
//! and without debug information: the image is embedded in the hypervisor and hashed on
//! every restart of a partition, and the red-team tables restart a partition sixteen times.

fn main() {
    // Only the bare-metal guest is linked this way; a host build (the workspace's lints) is
    // an ordinary empty program.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let linker_script = std::env::var("DEP_TESSERA_GUEST_LINKER_SCRIPT")
        .expect("tessera-guest's build script publishes its linker script");
    println!("cargo::rerun-if-env-changed=DEP_TESSERA_GUEST_LINKER_SCRIPT");
    println!("cargo::rerun-if-changed={linker_script}");
    println!("cargo::rustc-link-arg-bins=-T{linker_script}");
    println!("cargo::rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo::rustc-link-arg-bins=--strip-debug");
}
