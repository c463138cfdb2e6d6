//! Building the bootable hypervisor image for one partition table.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::table::TableInfo;

/// The target the hypervisor and the guests are built for.
pub const TARGET: &str = "x86_64-unknown-none";
/// Every guest in userland/. Tables name guest images by path, so all of them are built.
pub const GUEST_PACKAGES: &[&str] = &["tessera-demo", "tessera-redteam"];
pub const HYPERVISOR_PACKAGE: &str = "tessera-hypervisor";
/// The variable that tells the hypervisor's build script which table to compile in.
pub const TABLE_VARIABLE: &str = "TESSERA_TABLE";

/// Where cargo puts its output for this workspace.
pub fn target_directory(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Builds the guests and the hypervisor with `table` compiled in, copies the image to
/// `target/tessera/<table stem>.elf` and returns that path.
pub fn build(root: &Path, table: &TableInfo) -> Result<PathBuf> {
    // A table that boots Linux from target/linux needs those files before the build reads them.
    crate::linux::ensure_for_table(root, table)?;
    let mut guests = cargo_build(root);
    for package in GUEST_PACKAGES {
        guests.args(["--package", package]);
    }
    run(guests, "building the guests")?;

    let mut hypervisor = cargo_build(root);
    hypervisor
        .args(["--package", HYPERVISOR_PACKAGE])
        .env(TABLE_VARIABLE, &table.path);
    run(hypervisor, "building the hypervisor")?;

    let target = target_directory(root);
    let built = target.join(TARGET).join("release").join(HYPERVISOR_PACKAGE);
    let image_directory = target.join("tessera");
    std::fs::create_dir_all(&image_directory)
        .with_context(|| format!("cannot create {}", image_directory.display()))?;
    let image = image_directory.join(format!("{}.elf", table.stem));
    let size = std::fs::copy(&built, &image)
        .with_context(|| format!("cannot copy {} to {}", built.display(), image.display()))?;
    println!(
        "image: {} ({size} bytes)",
        relative_to(root, &image).display()
    );
    Ok(image)
}

/// `cargo build --release --target x86_64-unknown-none`, run at the workspace root so the
/// root's .cargo/config.toml (static relocation model) applies.
fn cargo_build(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "--target", TARGET]);
    command
}

/// Runs a cargo command with its output shown as cargo prints it.
fn run(mut command: Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("{what}: cannot start cargo"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `path` relative to the workspace root when it is inside it, for shorter messages.
pub fn relative_to<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}
