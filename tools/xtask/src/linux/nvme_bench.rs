//! `nvme_read_throughput_ratio` (issue 13): the NVMe read throughput of Debian's kernel in a
//! partition that owns the controller, its DMA confined by the IOMMU and its MSI-X through
//! interrupt remapping (partitions/linux-nvme-bench.toml), over the same kernel, initramfs,
//! command line and disk booted bare in the same QEMU (no hypervisor, no IOMMU), in
//! interleaved runs (bare, partition, bare, …).
//!
//! In each run /init (`tessera.nvme-bench`, userland/linux/init.sh) reads the whole 64 MiB
//! namespace three times with `dd bs=1M iflag=direct` (O_DIRECT: every block is a DMA
//! transfer from the controller, no page cache) and prints each read's length in guest TSC
//! ticks. Under QEMU TCG the TSC runs at the host's rate in both machines, so the ratio of
//! tick counts is the ratio of throughputs. Each setup's figure is the median of its reads
//! over all runs; the ratio is partition throughput over bare throughput (1.0: no cost).
//!
//! What this measures under TCG: the emulated controller's speed (QEMU's NVMe model, its
//! block layer and the image file in the host's page cache) and, in the partition, QEMU's
//! emulation of the IOMMU's address translation for every DMA page. It is an emulator
//! figure, not a hardware one: on hardware the IOMMU's IOTLB and the device's own speed
//! decide. Wall-clock (not `-icount`: Linux's x2APIC timer needs `one-insn-per-tb` there),
//! so the figures vary with the host's load.

use std::path::Path;

use anyhow::{bail, Result};

use super::bench::{
    banner_khz, bare_arguments, follow, fresh_directory, median, round, spawn, Figure,
};
use super::images;
use crate::run::{self, BootMethod, Emulator};
use crate::serial::{self, FollowedFile};
use crate::transcript::HYPERVISOR;
use crate::{disk, qemu, table};

/// The figure's name.
pub const FIGURE: &str = "nvme_read_throughput_ratio";
pub const BARE_MIB_PER_S: &str = "nvme_read_mib_per_s_bare";
pub const PARTITION_MIB_PER_S: &str = "nvme_read_mib_per_s_partition";
/// Every figure name of this measurement.
pub const NAMES: &[&str] = &[FIGURE, BARE_MIB_PER_S, PARTITION_MIB_PER_S];
/// The partition machine.
pub const TABLE: &str = "partitions/linux-nvme-bench.toml";
const LINUX: &str = "linux";
/// Interleaved runs of each setup.
const RUNS: usize = 3;
/// Reads per run (init.sh's loop).
const READS: usize = 3;
/// The line that ends a run.
const DONE: &str = "TESSERA-LINUX: nvme-bench done";

/// One read's `(MiB, TSC ticks)` from `TESSERA-LINUX: nvme-read run=1 mib=64 tsc=123`.
pub fn read_line(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.find("TESSERA-LINUX: nvme-read ")?..];
    let field = |name: &str| -> Option<u64> {
        rest.split_whitespace()
            .find_map(|word| word.strip_prefix(name))?
            .parse()
            .ok()
    };
    Some((field("mib=")?, field("tsc=")?))
}

/// The reads of one run, checked: [`READS`] of them, each of the whole disk.
fn checked(reads: Vec<(u64, u64)>, mib: u64, setup: &str) -> Result<Vec<u64>> {
    if reads.len() != READS || reads.iter().any(|&(read, ticks)| read != mib || ticks == 0) {
        bail!("{setup}: expected {READS} reads of {mib} MiB, got {reads:?} (did `nvme` load?)");
    }
    Ok(reads.into_iter().map(|(_, ticks)| ticks).collect())
}

/// Measures the figures; returns them by name.
pub fn measure(root: &Path) -> Result<Vec<(String, Figure)>> {
    let images = images::ensure(root)?;
    let path = root.join(TABLE);
    let parsed = tessera_config::load_without_files(&path)
        .map_err(|diagnostics| anyhow::anyhow!("{}", diagnostics.render().trim_end()))?;
    let cmdline = parsed
        .partitions
        .iter()
        .find(|partition| partition.name.as_str() == LINUX)
        .and_then(|partition| partition.boot.cmdline.as_deref().cloned())
        .unwrap_or_default();
    let table = table::load(&path)?;
    let Some(image) = table.qemu_disks.first() else {
        bail!("{TABLE} has no `[run] qemu-disks`");
    };
    let mib = image.size >> 20;
    let emulator = Emulator::Qemu {
        boot: BootMethod::Kernel,
        cpu: None,
    };
    let medium = run::prepare(root, &table, &emulator)?;

    let mut bare = Vec::new();
    let mut partition = Vec::new();
    let mut khz = 0;
    for round in 1..=RUNS {
        println!("== bench: {FIGURE}: bare run {round} of {RUNS}");
        let directory = fresh_directory(root, "linux-nvme-bare")?;
        disk::write_images(&table, &directory)?;
        let serial = directory.join("com1.txt");
        let mut arguments = bare_arguments(&images.vmlinuz, &images.initramfs, &cmdline, &serial);
        arguments.extend(disk::qemu_arguments(&table, &directory));
        println!("running: {} {}", qemu::BINARY, arguments.join(" "));
        let child = spawn(&arguments, &directory.join("qemu.txt"))?;
        let mut reads = Vec::new();
        follow(
            child,
            vec![FollowedFile::new("bare", serial)],
            |_, line, _, _| {
                reads.extend(read_line(line));
                line.contains(DONE)
            },
        )?;
        bare.extend(checked(reads, mib, "bare")?);

        println!("== bench: {FIGURE}: partition run {round} of {RUNS} ({TABLE})");
        let directory = fresh_directory(root, "linux-nvme-bench")?;
        disk::write_images(&table, &directory)?;
        let captures = serial::serial_captures(&table, &directory);
        let mut arguments = qemu::arguments(&table, &medium, None, &captures, false);
        arguments.extend(disk::qemu_arguments(&table, &directory));
        println!("running: {} {}", qemu::BINARY, arguments.join(" "));
        let child = spawn(&arguments, &directory.join("qemu.txt"))?;
        let files = captures
            .into_iter()
            .map(|capture| FollowedFile::new(capture.label, capture.file))
            .collect();
        let mut reads = Vec::new();
        let mut ended = None;
        follow(child, files, |label, line, _, _| {
            if label == HYPERVISOR && line.starts_with("Tessera") {
                khz = banner_khz(line).unwrap_or(khz);
            }
            // A refusal or panic halts the machine: no point waiting for the time bound.
            if label == HYPERVISOR && (line.starts_with("REFUSED") || line.starts_with("PANIC")) {
                ended = Some(line.to_string());
                return true;
            }
            if label == LINUX {
                reads.extend(read_line(line));
                return line.contains(DONE);
            }
            false
        })?;
        if let Some(line) = ended {
            bail!("partition: the hypervisor stopped: {line}");
        }
        partition.extend(checked(reads, mib, "partition")?);
    }
    if khz == 0 {
        bail!("the hypervisor banner gave no TSC rate");
    }
    let as_f64 = |ticks: &[u64]| ticks.iter().map(|&t| t as f64).collect::<Vec<_>>();
    let bare_ticks = median(&as_f64(&bare)).unwrap_or(f64::NAN);
    let partition_ticks = median(&as_f64(&partition)).unwrap_or(f64::NAN);
    // MiB per second at the hypervisor's calibrated TSC rate (the same host TSC bare).
    let rate = |ticks: f64| mib as f64 / (ticks / (khz as f64 * 1000.0));
    let list = |ticks: &[u64]| {
        ticks
            .iter()
            .map(|&t| format!("{:.1}", rate(t as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let runs = format!(
        "{RUNS} interleaved runs of each setup, {READS} reads of {mib} MiB per run (bare \
         MiB/s: {}; partition MiB/s: {}); QEMU TCG without -icount: the emulated controller's \
         and IOMMU's speed, varying with the host's load (load average at the end: {load})",
        list(&bare),
        list(&partition)
    );
    let setup = format!(
        "`dd if=/dev/nvme0n1 of=/dev/null bs=1M count={mib} iflag=direct` timed by the guest \
         TSC; QEMU `-device nvme,serial=tessera-nvme,addr=0x4` on a {mib} MiB raw image; \
         partition: {TABLE} (2 cores of a 2-core QEMU, 256 MiB, AMD-Vi `pt=off,intremap=on`: \
         DMA translated, MSI-X remapped); bare: qemu-system-x86_64 -machine q35,hpet=off -cpu \
         qemu64,+x2apic,+sha-ni -smp 2 -m 256 with the same kernel, initramfs, command line and disk, \
         no IOMMU"
    );
    Ok(vec![
        (
            FIGURE.to_string(),
            Figure {
                value: round(bare_ticks / partition_ticks, 3),
                unit: "ratio".into(),
                method: format!(
                    "partition read throughput over bare (median TSC ticks of a read bare over \
                     the median in the partition); {setup}; {runs}"
                ),
            },
        ),
        (
            BARE_MIB_PER_S.to_string(),
            Figure {
                value: round(rate(bare_ticks), 1),
                unit: "MiB/s".into(),
                method: format!(
                    "{mib} MiB over the median read's TSC ticks at the hypervisor's calibrated \
                     rate ({khz} kHz), bare; {runs}"
                ),
            },
        ),
        (
            PARTITION_MIB_PER_S.to_string(),
            Figure {
                value: round(rate(partition_ticks), 1),
                unit: "MiB/s".into(),
                method: format!("as {BARE_MIB_PER_S}, in the partition ({TABLE}); {runs}"),
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_read_lines() {
        assert_eq!(
            read_line("TESSERA-LINUX: nvme-read run=2 mib=64 tsc=2801805000"),
            Some((64, 2_801_805_000))
        );
        assert_eq!(
            read_line("TESSERA-LINUX: nvme-read run=2 mib=64 tsc="),
            None
        );
        assert_eq!(read_line("TESSERA-LINUX: nvme-bench done"), None);
        assert!(checked(vec![(64, 1), (64, 2), (64, 3)], 64, "bare").is_ok());
        assert!(checked(vec![(64, 1), (64, 2)], 64, "bare").is_err());
        assert!(checked(vec![(64, 1), (8, 2), (64, 3)], 64, "bare").is_err());
        assert!(checked(vec![(64, 1), (64, 0), (64, 3)], 64, "bare").is_err());
    }
}
