//! The GRUB boot ISOs: the image as `/boot/tessera.elf`, loaded by GRUB through Multiboot v1
//! (`<table>.iso`, for Bochs, which has no `-kernel`, and real machines) or through Multiboot2
//! (`<table>-multiboot2.iso`, for BIOS and UEFI machines). When GRUB's UEFI modules are
//! installed, grub-mkrescue makes every ISO a hybrid that boots on BIOS and on UEFI.

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
/// The directory GRUB's UEFI modules are installed in (package grub-efi-amd64-bin).
const GRUB_UEFI_MODULES: &str = "/usr/lib/grub/x86_64-efi";
/// How the ISO tools get installed (Debian 12), as ci/install-deps.sh does it.
pub const INSTALL_COMMAND: &str =
    "apt-get install -y grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools";

/// Which Multiboot command GRUB loads the image with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `multiboot`: Multiboot v1, the image's a.out-kludge header.
    Multiboot1,
    /// `multiboot2`: the Multiboot2 header; GRUB also hands over the ACPI RSDP.
    Multiboot2,
}

impl Protocol {
    /// The GRUB command.
    pub fn command(self) -> &'static str {
        match self {
            Protocol::Multiboot1 => "multiboot",
            Protocol::Multiboot2 => "multiboot2",
        }
    }

    /// The ISO's (and its tree's) name for a table stem.
    pub fn iso_stem(self, stem: &str) -> String {
        match self {
            Protocol::Multiboot1 => stem.to_string(),
            Protocol::Multiboot2 => format!("{stem}-multiboot2"),
        }
    }
}

/// The GRUB configuration: the template with the image's path and the command filled in.
pub fn grub_config(template: &str, protocol: Protocol) -> Result<String> {
    for placeholder in ["@KERNEL@", "@MULTIBOOT@"] {
        if !template.contains(placeholder) {
            bail!("{GRUB_TEMPLATE} does not mention {placeholder}");
        }
    }
    Ok(template
        .replace("@KERNEL@", KERNEL_PATH)
        .replace("@MULTIBOOT@", protocol.command()))
}

/// What is missing to make an ISO that boots on BIOS, if anything.
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

/// What is missing to make an ISO that also boots on UEFI, if anything.
fn uefi_problem() -> Option<String> {
    problem().or_else(|| {
        (!Path::new(GRUB_UEFI_MODULES).is_dir()).then(|| {
            format!(
                "GRUB's UEFI modules ({GRUB_UEFI_MODULES}, package grub-efi-amd64-bin) are not installed"
            )
        })
    })
}

/// Checks for grub-mkrescue and its helpers (with `uefi`, GRUB's UEFI modules too); as root
/// installs them when missing.
pub fn ensure_installed(root: &Path, uefi: bool) -> Result<Installation> {
    install::ensure(
        root,
        if uefi { uefi_problem } else { problem },
        INSTALL_COMMAND,
    )
}

/// Makes `target/tessera/<table stem>.iso` (Multiboot v1) or
/// `target/tessera/<table stem>-multiboot2.iso` from the built `image`; returns its path.
pub fn build(root: &Path, table: &TableInfo, image: &Path, protocol: Protocol) -> Result<PathBuf> {
    let template_path = root.join(GRUB_TEMPLATE);
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("cannot read {}", template_path.display()))?;
    let config = grub_config(&template, protocol)?;

    let output_directory = image
        .parent()
        .context("the image has no directory")?
        .to_path_buf();
    let name = protocol.iso_stem(&table.stem);
    let tree = output_directory.join("iso").join(&name);
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

    let iso = output_directory.join(format!("{name}.iso"));
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
        let template = std::fs::read_to_string(template_path).unwrap();
        let config = grub_config(&template, Protocol::Multiboot1).unwrap();
        assert!(config.contains("    multiboot /boot/tessera.elf\n"));
        let config2 = grub_config(&template, Protocol::Multiboot2).unwrap();
        assert!(config2.contains("    multiboot2 /boot/tessera.elf\n"));
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
        assert!(!config.contains('@') && !config2.contains('@'));
        assert!(grub_config("menuentry {}", Protocol::Multiboot1).is_err());
        assert!(grub_config("@KERNEL@", Protocol::Multiboot2).is_err());
    }

    #[test]
    fn each_protocol_has_its_own_iso() {
        assert_eq!(Protocol::Multiboot1.iso_stem("demo"), "demo");
        assert_eq!(Protocol::Multiboot2.iso_stem("demo"), "demo-multiboot2");
    }
}
