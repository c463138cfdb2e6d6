//! Helpers shared by the integration tests: scratch directories and fake PVH guest images.
#![allow(dead_code)]

pub mod bzimage_builder;
pub mod elf_builder;
pub mod linux_table;

use std::path::{Path, PathBuf};

/// A fresh, empty scratch directory unique to this test process and `name`.
pub fn scratch_directory(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("tessera-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// Writes `text` to `directory/name` (creating parent directories) and returns the path.
pub fn write_file(directory: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = directory.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The workspace's `partitions/` directory.
pub fn partitions_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../partitions")
}

/// A copy of `partitions/demo.toml` in a scratch directory laid out like the workspace,
/// with a fake PVH guest where the demo table expects the demo guest.
pub fn demo_with_fake_guest(name: &str) -> PathBuf {
    let root = scratch_directory(name);
    let text = std::fs::read_to_string(partitions_directory().join("demo.toml")).unwrap();
    let table = write_file(&root, "partitions/demo.toml", text);
    let image = elf_builder::build_pvh_elf(&elf_builder::ElfSpec::default());
    write_file(
        &root,
        "target/x86_64-unknown-none/release/tessera-demo",
        image,
    );
    table
}
