//! What the runner needs to know about a partition table, and the one place that reads it.
//!
//! Everything else in xtask works on [`TableInfo`]. The table is parsed and validated by
//! the config crate (the same code as the hypervisor's build script, so a broken table is
//! reported before anything is built); boot images are not checked here because building
//! creates them.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::disk::QemuDisk;

/// The parts of a partition table that building and running an image depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Absolute path of the table file.
    pub path: PathBuf,
    /// The file name without `.toml`: names the image and the run directory.
    pub stem: String,
    /// How many cores the platform has (`platform.cpus`).
    pub cpu_count: usize,
    /// One past the highest byte of the platform's RAM (`platform.ram`), 0 if it has none.
    pub ram_end: u64,
    /// The partitions in table order.
    pub partitions: Vec<PartitionInfo>,
    /// First port of the hypervisor console device, if it has ports.
    pub console_port: Option<u64>,
    /// Partitions whose fault is the point of the table (`[run] expect-faults`).
    pub expect_faults: Vec<String>,
    /// How long the table's author expects a run to take (`[run] seconds`).
    pub run_seconds: Option<u64>,
    /// Extra QEMU `-device` arguments (`[run] qemu-devices`).
    pub qemu_devices: Vec<String>,
    /// Bochs i440FX PCI slot devices, slot 1 first (`[run] bochs-pci-slots`).
    pub bochs_pci_slots: Vec<String>,
    /// Disk images QEMU gets (`[run] qemu-disks`).
    pub qemu_disks: Vec<QemuDisk>,
}

/// One partition, as far as the runner is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub name: String,
    /// For each owned device with I/O ports, the base of its first port range.
    pub device_ports: Vec<u64>,
}

impl TableInfo {
    /// Whether the table expects this partition to be contained.
    pub fn expects_fault(&self, partition: &str) -> bool {
        self.expect_faults.iter().any(|name| name == partition)
    }
}

/// Reads and validates the table at `path` (already absolute).
pub fn load(path: &Path) -> Result<TableInfo> {
    let table = tessera_config::load_without_files(path)
        .map_err(|diagnostics| anyhow!("{}", diagnostics.render().trim_end()))?;
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .with_context(|| format!("partition table {} has no usable file name", path.display()))?
        .to_string();
    let first_port = |device: &str| {
        table
            .device(device)
            .and_then(|found| found.device.ports.first())
            .map(|range| *range.base)
    };
    let partitions = table
        .partitions
        .iter()
        .map(|partition| PartitionInfo {
            name: partition.name.to_string(),
            device_ports: partition
                .devices
                .iter()
                .filter_map(|device| first_port(device))
                .collect(),
        })
        .collect();
    Ok(TableInfo {
        path: path.to_path_buf(),
        stem,
        cpu_count: table.platform.cpus.len(),
        ram_end: table
            .platform
            .ram
            .iter()
            .filter_map(|range| range.end())
            .max()
            .unwrap_or(0),
        partitions,
        console_port: first_port(&table.hypervisor.console),
        expect_faults: table
            .run
            .expect_faults
            .iter()
            .map(|name| name.to_string())
            .collect(),
        run_seconds: table.run.seconds.as_deref().copied(),
        qemu_devices: table
            .run
            .qemu_devices
            .iter()
            .map(|device| device.to_string())
            .collect(),
        bochs_pci_slots: table
            .run
            .bochs_pci_slots
            .iter()
            .map(|device| device.to_string())
            .collect(),
        qemu_disks: table
            .run
            .qemu_disks
            .iter()
            .map(|disk| QemuDisk {
                file: disk.file.to_string(),
                size: disk.size.bytes(),
                device: disk.device.to_string(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_demo_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../partitions/demo.toml");
        let table = load(&path).expect("the demo table loads");
        assert_eq!(table.stem, "demo");
        assert_eq!(table.cpu_count, 4);
        assert_eq!(table.ram_end, 0x2000_0000 - 0x10_0000);
        assert_eq!(table.console_port, Some(0x3e8));
        assert_eq!(table.expect_faults, ["intruder"]);
        assert_eq!(table.run_seconds, None);
        let partitions: Vec<_> = table
            .partitions
            .iter()
            .map(|partition| (partition.name.as_str(), partition.device_ports.clone()))
            .collect();
        assert_eq!(
            partitions,
            [
                ("control", vec![0x3f8]),
                ("worker", vec![0x2f8]),
                ("intruder", vec![0x2e8])
            ]
        );
    }
}
