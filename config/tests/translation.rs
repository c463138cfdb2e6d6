//! Translation validation: for every table in partitions/ (and the valid corpus), each
//! partition's lowered memory map is built into real stage-2 tables — AMD NPT and Intel EPT,
//! with and without 1 GiB pages — in a host-side pool by the very builder the hypervisor runs
//! (`tessera_policy::stage2::build`), the tables are walked back leaf by leaf
//! (`for_each_leaf`), and the result must be exactly the partition's regions, channels and
//! device windows with their declared rights and nothing else: no other partition's memory,
//! no hypervisor memory, no byte more or less.
//!
//! The expected map is derived here from the table model and the layout rules of
//! docs/partition-table.md, independently of `tessera_config::layout`.

mod common;

use std::path::{Path, PathBuf};

use tessera_abi::table::Rights;
use tessera_config::{load, load_without_files, lower, memory_map, Table};
use tessera_policy::stage2::{
    build, for_each_leaf, table_pages_needed, EntryFormat, Ept, Npt, TablePool, ENTRIES,
};

/// A contiguous run: guest base, host base, bytes, rights.
type Run = (u64, u64, u64, Rights);

/// Physical address the host-side pool pretends to live at.
const POOL_BASE: u64 = 0x7000_0000;

fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

/// Sorts runs by guest address and merges neighbours contiguous in guest and host space
/// with the same rights, so maps compare independently of page sizes.
fn normalize(mut runs: Vec<Run>) -> Vec<Run> {
    runs.retain(|run| run.2 > 0);
    runs.sort_by_key(|run| run.0);
    let mut merged: Vec<Run> = Vec::new();
    for run in runs {
        match merged.last_mut() {
            Some(last)
                if last.0 + last.2 == run.0 && last.1 + last.2 == run.1 && last.3 == run.3 =>
            {
                last.2 += run.2;
            }
            _ => merged.push(run),
        }
    }
    merged
}

/// A partition's RAM (RWX) and the channels it is a member of (RW), as the documented layout
/// places them.
fn own_ram_and_channels(table: &Table, partition: &tessera_config::model::Partition) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut cursor = 0;
    let mut ram_end = 0;
    for region in &partition.memory {
        let guest = region.guest.as_ref().map_or(cursor, |guest| guest.value);
        runs.push((guest, *region.base, region.size.0, Rights::RWX));
        cursor = guest + region.size.0;
        ram_end = ram_end.max(cursor);
    }
    let mut cursor = align_up(ram_end, 2 << 20);
    for channel in &table.channels {
        if channel
            .partitions
            .iter()
            .any(|member| member.value == partition.name.value)
        {
            runs.push((
                cursor,
                *channel.memory.base,
                channel.memory.size.0,
                Rights::RW,
            ));
            cursor = align_up(cursor + channel.memory.size.0, 2 << 20);
        }
    }
    runs
}

/// The guest map partition `index` must see, from the table and the documented layout:
/// RAM packed from 0 in table order unless `guest` is given (RWX); each channel it is a
/// member of after the highest RAM end at the next 2 MiB boundary (RW); its devices' MMIO
/// identity-mapped (RW).
fn expected_map(table: &Table, index: usize) -> Vec<Run> {
    let partition = &table.partitions[index];
    let mut runs = own_ram_and_channels(table, partition);
    // A standby's tables also hold each channel of its primary it is not a member of, at
    // the primary's guest address: the hypervisor takes it out at boot and puts it back
    // only when the standby takes the devices over.
    if let Some(primary) = partition.standby_for.as_ref().and_then(|primary| {
        table
            .partitions
            .iter()
            .find(|other| other.name.value == primary.value)
    }) {
        let member = |channel: &tessera_config::model::Channel, name: &str| {
            channel.partitions.iter().any(|member| member.value == name)
        };
        for run in own_ram_and_channels(table, primary) {
            let is_taken_over = table.channels.iter().any(|channel| {
                *channel.memory.base == run.1
                    && member(channel, &primary.name)
                    && !member(channel, &partition.name)
            });
            if run.3 == Rights::RW && is_taken_over {
                runs.push(run);
            }
        }
    }
    let device_named = |name: &str| {
        table
            .platform
            .devices
            .iter()
            .find(|device| device.name.value == name)
            .expect("validated: devices exist")
    };
    for name in &partition.devices {
        let device = device_named(&name.value);
        for window in &device.device.mmio {
            runs.push((*window.base, *window.base, window.size.0, Rights::RW));
        }
    }
    // A standby's tables also hold its primary's PCI windows: the hypervisor takes them
    // out at boot and puts them back only when the standby takes the functions over.
    let primary = partition.standby_for.as_ref().and_then(|primary| {
        table
            .partitions
            .iter()
            .find(|other| other.name.value == primary.value)
    });
    for name in primary.iter().flat_map(|primary| &primary.devices) {
        let device = device_named(&name.value);
        if device.device.pci.is_some() {
            for window in &device.device.mmio {
                runs.push((*window.base, *window.base, window.size.0, Rights::RW));
            }
        }
    }
    normalize(runs)
}

/// Builds the stage-2 tables of `map` with format `F` and reads every leaf back.
fn built_map<F: EntryFormat>(
    map: &[tessera_abi::table::MemoryMapping],
    allow_1gib: bool,
) -> Vec<Run> {
    let pages_needed = table_pages_needed(map, allow_1gib);
    let mut pages = vec![[0u64; ENTRIES]; pages_needed];
    let mut pool = TablePool::new(&mut pages, POOL_BASE);
    let root = build::<F>(map, allow_1gib, &mut pool).expect("a validated map builds");
    assert_eq!(pool.used, pages_needed, "the page count is exact");
    let mut runs = Vec::new();
    for_each_leaf::<F>(&pages, POOL_BASE, root, |guest, host, size, rights| {
        runs.push((guest, host, size.bytes(), rights));
    });
    normalize(runs)
}

/// Host ranges that partition `index` must never reach: the hypervisor's memory and every
/// other partition's RAM.
fn foreign_ranges(table: &Table, index: usize) -> Vec<(u64, u64, String)> {
    let mut ranges = vec![(
        *table.hypervisor.memory.base,
        table.hypervisor.memory.size.0,
        "hypervisor memory".to_owned(),
    )];
    for (other, partition) in table.partitions.iter().enumerate() {
        if other != index {
            for region in &partition.memory {
                ranges.push((
                    *region.base,
                    region.size.0,
                    format!("memory of partition `{}`", *partition.name),
                ));
            }
        }
    }
    ranges
}

fn validate_translation(path: &Path) -> usize {
    let table =
        load_without_files(path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let mut checked = 0;
    for index in 0..table.partitions.len() {
        let name = &table.partitions[index].name.value;
        let map = memory_map(&table, index);
        let expected = expected_map(&table, index);
        for allow_1gib in [false, true] {
            for (format, built) in [
                ("NPT", built_map::<Npt>(&map, allow_1gib)),
                ("EPT", built_map::<Ept>(&map, allow_1gib)),
            ] {
                assert_eq!(
                    built,
                    expected,
                    "{}: partition `{name}`: the {format} tables (1 GiB pages {allow_1gib}) map something other than its regions",
                    path.display()
                );
                for &(guest, host, bytes, _) in &built {
                    for (base, size, what) in foreign_ranges(&table, index) {
                        assert!(
                            host + bytes <= base || base + size <= host,
                            "{}: partition `{name}` reaches {what} through guest {guest:#x}",
                            path.display()
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    checked
}

fn tables_in(directory: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_partition_table_maps_exactly_its_regions() {
    let tables = tables_in(&common::partitions_directory());
    assert!(!tables.is_empty());
    for path in tables {
        let checked = validate_translation(&path);
        assert!(checked > 0, "{}", path.display());
    }
}

#[test]
fn every_valid_corpus_table_maps_exactly_its_regions() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/valid");
    for path in tables_in(&directory) {
        validate_translation(&path);
    }
}

#[test]
fn synthetic_tables_map_exactly_their_regions() {
    let directory = common::scratch_directory("translation-synthetic");
    for (partitions, regions) in [(3, 7), (40, 400)] {
        let path = common::write_file(
            &directory,
            &format!("synthetic-{partitions}.toml"),
            tessera_config::synthetic::table(partitions, regions),
        );
        validate_translation(&path);
    }
}

#[test]
fn the_lowered_machine_uses_the_same_map() {
    // Full lowering needs the boot images: the demo table with a stand-in guest.
    let path = common::demo_with_fake_guest("translation-lowered");
    let validated = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let lowered =
        lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    for (index, partition) in lowered.partitions.iter().enumerate() {
        assert_eq!(partition.memory, memory_map(validated.table(), index));
        assert_eq!(
            partition.stage2_table_pages,
            table_pages_needed(&partition.memory, false)
        );
    }
}
