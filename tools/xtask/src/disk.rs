//! The disk images of a table's `[run] qemu-disks`: written into the run directory before
//! QEMU starts, with a pattern the tests can recompute, and attached as raw drives.
//!
//! The pattern is a xorshift64* stream (Vigna, "An experimental exploration of Marsaglia's
//! xorshift generators, scrambled", 2016) seeded with the FNV-1a hash of the file name, each
//! 64-bit output stored little-endian: deterministic, cheap, and with no sector repeating
//! another, so a read of the wrong sector or a lost write shows in a hash.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::table::TableInfo;

/// One `[run] qemu-disks` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuDisk {
    /// A plain file name in the run directory (the validator's rule `run-disk`).
    pub file: String,
    /// Bytes: a whole number of 512-byte sectors.
    pub size: u64,
    /// The `-device` that takes the drive, without `drive=`.
    pub device: String,
}

/// The first `length` bytes of the pattern of the image named `file`.
pub fn pattern(file: &str, length: usize) -> Vec<u8> {
    // FNV-1a, 64-bit; xorshift64* needs a non-zero state.
    let mut state = file.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// Where the image of `disk` lives for a run in `directory`.
pub fn path(directory: &Path, disk: &QemuDisk) -> PathBuf {
    directory.join(&disk.file)
}

/// Writes every disk image of the table into the (emptied) run directory.
pub fn write_images(table: &TableInfo, directory: &Path) -> Result<()> {
    for disk in &table.qemu_disks {
        let length = usize::try_from(disk.size).context("disk image too large")?;
        let path = path(directory, disk);
        std::fs::write(&path, pattern(&disk.file, length))
            .with_context(|| format!("cannot write the disk image {}", path.display()))?;
    }
    Ok(())
}

/// The QEMU arguments that attach the table's disk images from `directory`.
pub fn qemu_arguments(table: &TableInfo, directory: &Path) -> Vec<String> {
    let mut arguments = Vec::new();
    for (index, disk) in table.qemu_disks.iter().enumerate() {
        arguments.push("-drive".into());
        arguments.push(format!(
            "file={},if=none,id=disk{index},format=raw",
            path(directory, disk).display()
        ));
        arguments.push("-device".into());
        arguments.push(format!("{},drive=disk{index}", disk.device));
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_deterministic_and_depends_on_the_name() {
        let a = pattern("nvme.img", 4096);
        assert_eq!(a.len(), 4096);
        assert_eq!(a, pattern("nvme.img", 4096));
        assert_eq!(a[..100], pattern("nvme.img", 100)[..]);
        assert_ne!(a, pattern("other.img", 4096));
        // No two sectors alike (a read of the wrong one must change the hash).
        let sectors: std::collections::BTreeSet<&[u8]> = a.chunks(512).collect();
        assert_eq!(sectors.len(), 8);
    }

    #[test]
    fn drives_are_numbered_in_table_order() {
        let mut table = crate::table::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../partitions/linux-nvme.toml"),
        )
        .expect("the NVMe table loads");
        table.qemu_disks.push(QemuDisk {
            file: "second.img".into(),
            size: 512,
            device: "nvme,serial=b".into(),
        });
        let arguments = qemu_arguments(&table, Path::new("/run"));
        assert_eq!(
            arguments.join(" "),
            "-drive file=/run/nvme.img,if=none,id=disk0,format=raw \
             -device nvme,serial=tessera-nvme,addr=0x4,drive=disk0 \
             -drive file=/run/second.img,if=none,id=disk1,format=raw \
             -device nvme,serial=b,drive=disk1"
        );
    }
}
