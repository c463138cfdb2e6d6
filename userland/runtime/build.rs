//! Publishes the path of the guest linker script to the guest binaries that depend on
//! this runtime (they read it as `DEP_TESSERA_GUEST_LINKER_SCRIPT` in their build scripts).

use std::path::PathBuf;

fn main() {
    let manifest_directory = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let linker_script = manifest_directory.join("guest.ld");
    println!("cargo::rerun-if-changed=guest.ld");
    println!("cargo::metadata=linker_script={}", linker_script.display());
}
