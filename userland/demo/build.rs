//! Links the demo guest with the runtime's linker script (guest-physical 0x100000, a
//! PT_NOTE for the PVH entry) and 4 KiB segment alignment, so the ELF stays small and
//! every PT_LOAD has p_paddr = p_vaddr.

fn main() {
    let linker_script = std::env::var("DEP_TESSERA_GUEST_LINKER_SCRIPT")
        .expect("tessera-guest's build script publishes its linker script");
    println!("cargo::rerun-if-env-changed=DEP_TESSERA_GUEST_LINKER_SCRIPT");
    println!("cargo::rerun-if-changed={linker_script}");
    println!("cargo::rustc-link-arg-bins=-T{linker_script}");
    println!("cargo::rustc-link-arg-bins=-zmax-page-size=4096");
}
