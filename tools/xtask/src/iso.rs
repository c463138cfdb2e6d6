//! The GRUB boot ISO: the image as `/boot/tessera.elf`, loaded by GRUB through Multiboot v1,
//! for Bochs (which has no `-kernel`) and real machines.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::image::relative_to;
use crate::install::{self, Installation};
use crate::table::TableInfo;

/// The GRUB configuration template, relative to the workspace root.
pub const GRUB_TEMPLATE: &str = "loader/grub.cfg.in";
/// Where the image is on the ISO.
pub const KERNEL_PATH: &str = "/boot/tessera.elf";
/// The directory GRUB's BIOS modules are installed in (package grub-pc-bin).
const GRUB_BIOS_MODULES: &str = "/usr/lib/grub/i386-pc";
/// How the ISO tools get installed (Debian 12), as ci/install-deps.sh does it.
pub const INSTALL_COMMAND: &str = "apt-get install -y grub-pc-bin grub-common xorriso mtools";

/// The GRUB configuration: the template with the image's path filled in.
pub fn grub_config(template: &str) -> Result<String> {
    if !template.contains("@KERNEL@") {
        bail!("{GRUB_TEMPLATE} does not mention @KERNEL@");
    }
    Ok(template.replace("@KERNEL@", KERNEL_PATH))
}

/// What is missing to make an ISO, if anything.
fn problem() -> Option<String> {
    let missing: Vec<&str> = ["grub-mkrescue", "xorriso", "mformat"]
        .into_iter()
        .filter(|program| !install::on_path(program))
        .collect();
    if !missing.is_empty() {
        return Some(format!("{} not installed", missing.join(", ")));
    }
    if !Path::new(GRUB_BIOS_MODULES).is_dir() {
        return Some(format!(
            "GRUB's BIOS modules ({GRUB_BIOS_MODULES}, package grub-pc-bin) are not installed"
        ));
    }
    None
}

/// Checks for grub-mkrescue and its helpers; as root installs them when missing.
pub fn ensure_installed(root: &Path) -> Result<Installation> {
    install::ensure(root, problem, INSTALL_COMMAND)
}

/// Makes `target/tessera/<table stem>.iso` from the built `image` and returns its path.
pub fn build(root: &Path, table: &TableInfo, image: &Path) -> Result<PathBuf> {
    let template_path = root.join(GRUB_TEMPLATE);
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("cannot read {}", template_path.display()))?;
    let config = grub_config(&template)?;

    let output_directory = image
        .parent()
        .context("the image has no directory")?
        .to_path_buf();
    let tree = output_directory.join("iso").join(&table.stem);
    if tree.exists() {
        std::fs::remove_dir_all(&tree)
            .with_context(|| format!("cannot clear {}", tree.display()))?;
    }
    let grub_directory = tree.join("boot").join("grub");
    std::fs::create_dir_all(&grub_directory)
        .with_context(|| format!("cannot create {}", grub_directory.display()))?;
    let kernel = tree.join(KERNEL_PATH.trim_start_matches('/'));
    std::fs::copy(image, &kernel)
        .with_context(|| format!("cannot copy {} to {}", image.display(), kernel.display()))?;
    std::fs::write(grub_directory.join("grub.cfg"), config)
        .with_context(|| format!("cannot write {}", grub_directory.display()))?;

    let iso = output_directory.join(format!("{}.iso", table.stem));
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&tree)
        .output()
        .context("cannot start grub-mkrescue")?;
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let size = std::fs::metadata(&iso)
        .with_context(|| format!("grub-mkrescue made no {}", iso.display()))?
        .len();
    println!("iso: {} ({size} bytes)", relative_to(root, &iso).display());
    Ok(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_boots_the_image_without_waiting() {
        let template_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(GRUB_TEMPLATE);
        let config = grub_config(&std::fs::read_to_string(template_path).unwrap()).unwrap();
        assert!(config.contains("multiboot /boot/tessera.elf\n"));
        for line in [
            "set timeout=0",
            "set default=0",
            "terminal_input console",
            "boot",
        ] {
            assert!(
                config.lines().any(|candidate| candidate.trim() == line),
                "missing `{line}`"
            );
        }
        assert!(
            !config
                .lines()
                .any(|line| !line.trim_start().starts_with('#') && line.contains("serial")),
            "GRUB must stay off the UARTs"
        );
        assert!(!config.contains('@'));
        assert!(grub_config("menuentry {}").is_err());
    }
}
