//! The guest-physical layout of a partition, shared by validation (which checks it) and
//! lowering (which emits it): RAM regions packed from guest-physical 0 in table order unless
//! a region says `guest = …`; channel memory after the highest RAM end, each channel at the
//! next 2 MiB boundary (a channel a standby takes over: where its primary has it); device
//! MMIO identity-mapped.

use std::fmt;

use tessera_abi::table::{MappingKind, MemoryMapping, Range, Rights};

use crate::model::{Partition, Table};
use crate::source::Span;

/// Channels start at a 2 MiB boundary so they can be mapped with large pages.
pub const CHANNEL_ALIGNMENT: u64 = 2 << 20;

/// One planned guest mapping with the table item it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMapping<'t> {
    pub mapping: MemoryMapping,
    /// The item in the table (memory region, channel memory, device MMIO window).
    pub span: Span,
    /// What it is, for messages ("memory region 2 of partition `worker`").
    pub description: MappingDescription<'t>,
}

/// What a [`PlannedMapping`] is, written out only for a message (validation plans every
/// partition, and formatting a description for each of a large table's regions up front
/// was most of what planning cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingDescription<'t> {
    /// Memory region `number` (1-based) of `partition`.
    Region { number: usize, partition: &'t str },
    /// The memory of channel `channel`; `from`: the primary a standby takes it over from.
    Channel {
        channel: &'t str,
        from: Option<&'t str>,
    },
    /// An MMIO window of `device`; `from`: the primary a standby takes it over from.
    DeviceMmio {
        device: &'t str,
        from: Option<&'t str>,
    },
}

impl MappingDescription<'_> {
    /// Whether the mapping is one a standby takes over from its primary.
    pub fn taken_over(&self) -> bool {
        matches!(
            self,
            Self::Channel { from: Some(_), .. } | Self::DeviceMmio { from: Some(_), .. }
        )
    }
}

impl fmt::Display for MappingDescription<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Region { number, partition } => {
                write!(
                    formatter,
                    "memory region {number} of partition `{partition}`"
                )
            }
            Self::Channel { channel, from } => {
                write!(formatter, "memory of channel `{channel}`")?;
                if let Some(primary) = from {
                    write!(formatter, ", taken over from `{primary}`")?;
                }
                Ok(())
            }
            Self::DeviceMmio { device, from } => {
                write!(formatter, "MMIO window of device `{device}`")?;
                if let Some(primary) = from {
                    write!(formatter, ", taken over from `{primary}`")?;
                }
                Ok(())
            }
        }
    }
}

/// Where each RAM region of `partition` appears to the guest, or `None` where the packing
/// runs past the end of the address space.
pub fn ram_guest_bases(partition: &Partition) -> Vec<Option<u64>> {
    let mut cursor = Some(0u64);
    partition
        .memory
        .iter()
        .map(|region| {
            let guest = region.guest.as_ref().map(|guest| guest.value).or(cursor);
            cursor = guest.and_then(|guest| guest.checked_add(region.size.0));
            guest
        })
        .collect()
}

/// `value` rounded up to a multiple of the power of two `alignment`.
pub fn align_up(value: u64, alignment: u64) -> Option<u64> {
    Some(value.checked_add(alignment - 1)? & !(alignment - 1))
}

/// Every mapping of partition `index`: RAM (table order), channels (channel order), device
/// MMIO (device order). Not sorted; items whose address cannot be computed are left out
/// (validation reports them as `memory-wrap`).
pub fn plan_partition(table: &Table, index: usize) -> Vec<PlannedMapping<'_>> {
    let partition = &table.partitions[index];
    let mut planned = Vec::new();
    let mut ram_end = 0u64;
    for (number, (region, guest)) in partition
        .memory
        .iter()
        .zip(ram_guest_bases(partition))
        .enumerate()
    {
        let Some(guest) = guest else { continue };
        if let Some(end) = guest.checked_add(region.size.0) {
            ram_end = ram_end.max(end);
        }
        planned.push(PlannedMapping {
            mapping: MemoryMapping {
                guest,
                host: region.to_abi(),
                rights: Rights::RWX,
                kind: MappingKind::Ram,
            },
            span: region.span,
            description: MappingDescription::Region {
                number: number + 1,
                partition: partition.name.as_str(),
            },
        });
    }
    for (channel_index, guest) in own_channel_bases(table, partition, ram_end) {
        let channel = &table.channels[channel_index];
        planned.push(planned_channel(channel_index, channel, guest, None));
    }
    // Channels a standby takes over sit where its primary has them (the same guest address
    // in both members), so a guest finds its primary's channel where the primary left it.
    if let Some(primary) = partition.standby_for.as_ref() {
        if let Some(primary_index) = table.partition_index(primary) {
            let bases = own_channel_bases(
                table,
                &table.partitions[primary_index],
                ram_end_of(&table.partitions[primary_index]),
            );
            for channel_index in table.takeover_channels(partition) {
                let Some(&(_, guest)) = bases.iter().find(|(index, _)| *index == channel_index)
                else {
                    continue;
                };
                let channel = &table.channels[channel_index];
                planned.push(planned_channel(
                    channel_index,
                    channel,
                    guest,
                    Some(primary.as_str()),
                ));
            }
        }
    }
    let own = table
        .partition_devices(partition)
        .map(|device| (device, None));
    let taken_over = table
        .takeover_pci_devices(partition)
        .map(|device| (device, partition.standby_for.as_ref()));
    for (device, from) in own.chain(taken_over) {
        for window in &device.device.mmio {
            planned.push(PlannedMapping {
                mapping: MemoryMapping {
                    guest: *window.base,
                    host: window.to_abi(),
                    rights: Rights::RW,
                    kind: MappingKind::DeviceMmio,
                },
                span: window.span,
                description: MappingDescription::DeviceMmio {
                    device: device.name.as_str(),
                    from: from.map(|primary| primary.as_str()),
                },
            });
        }
    }
    planned
}

/// The end of a partition's highest RAM region in guest-physical space.
fn ram_end_of(partition: &Partition) -> u64 {
    partition
        .memory
        .iter()
        .zip(ram_guest_bases(partition))
        .filter_map(|(region, guest)| guest?.checked_add(region.size.0))
        .max()
        .unwrap_or(0)
}

/// Where each channel `partition` is a member of appears to it: from the first 2 MiB
/// boundary at or after `ram_end`, in channel order, each at the next 2 MiB boundary.
/// Channels whose address cannot be computed are left out.
fn own_channel_bases(table: &Table, partition: &Partition, ram_end: u64) -> Vec<(usize, u64)> {
    let mut bases = Vec::new();
    let mut cursor = align_up(ram_end, CHANNEL_ALIGNMENT);
    for &channel_index in table.channels_of(&partition.name) {
        let Some(guest) = cursor else { break };
        cursor = guest
            .checked_add(table.channels[channel_index].memory.size.0)
            .and_then(|end| align_up(end, CHANNEL_ALIGNMENT));
        bases.push((channel_index, guest));
    }
    bases
}

/// The planned mapping of a channel's memory at `guest`; `from`: the primary a standby
/// takes it over from.
fn planned_channel<'t>(
    channel_index: usize,
    channel: &'t crate::model::Channel,
    guest: u64,
    from: Option<&'t str>,
) -> PlannedMapping<'t> {
    PlannedMapping {
        mapping: MemoryMapping {
            guest,
            host: channel.memory.to_abi(),
            rights: Rights::RW,
            kind: MappingKind::Channel(channel_index as u16),
        },
        span: channel.memory.span,
        description: MappingDescription::Channel {
            channel: channel.name.as_str(),
            from,
        },
    }
}

/// The guest-physical RAM of a partition as sorted, merged ranges.
///
/// The RAM mappings of [`plan_partition`], without planning the channels and windows or
/// describing every region for messages (validation asks this of every partition).
pub fn guest_ram(table: &Table, index: usize) -> Vec<Range> {
    let partition = &table.partitions[index];
    let mut ranges: Vec<Range> = partition
        .memory
        .iter()
        .zip(ram_guest_bases(partition))
        .filter_map(|(region, guest)| Some(Range::new(guest?, region.size.0)))
        .filter(|range| range.size > 0)
        .collect();
    merge_ranges(&mut ranges);
    ranges
}

/// Sorts `ranges` and merges the ones that overlap or touch. Ranges that wrap are dropped.
pub fn merge_ranges(ranges: &mut Vec<Range>) {
    ranges.retain(|range| range.base.checked_add(range.size).is_some());
    ranges.sort_by_key(|range| range.base);
    let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
    for range in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if range.base <= last.end() => {
                let end = last.end().max(range.end());
                last.size = end - last.base;
            }
            _ => merged.push(range),
        }
    }
    *ranges = merged;
}

/// Whether `[base, base + size)` lies inside one of the sorted, merged `ranges`.
pub fn covered(ranges: &[Range], base: u64, size: u64) -> bool {
    let Some(end) = base.checked_add(size) else {
        return false;
    };
    let after = ranges.partition_point(|range| range.base <= base);
    after > 0 && ranges[after - 1].end() >= end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_covers() {
        let mut ranges = vec![
            Range::new(0x3000, 0x1000),
            Range::new(0, 0x2000),
            Range::new(0x2000, 0x800),
        ];
        merge_ranges(&mut ranges);
        assert_eq!(
            ranges,
            vec![Range::new(0, 0x2800), Range::new(0x3000, 0x1000)]
        );
        assert!(covered(&ranges, 0x1000, 0x1800));
        assert!(!covered(&ranges, 0x2000, 0x1000));
        assert!(covered(&ranges, 0x3000, 0x1000));
        assert!(!covered(&ranges, 0x3800, 0x1000));
        assert!(!covered(&ranges, u64::MAX, 2));
    }

    fn corpus_table(name: &str) -> Table {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus/valid")
            .join(name);
        crate::load_without_files(&path).expect("a valid corpus table")
    }

    fn channel_guest(table: &Table, partition: &str, channel: u16) -> Option<u64> {
        let index = table.partition_index(partition).unwrap();
        plan_partition(table, index)
            .into_iter()
            .find(|planned| planned.mapping.kind == MappingKind::Channel(channel))
            .map(|planned| planned.mapping.guest)
    }

    #[test]
    fn a_standby_takes_over_the_channels_only_its_primary_is_in() {
        let table = corpus_table("standby-takeover-channel.toml");
        let partition = |name: &str| &table.partitions[table.partition_index(name).unwrap()];
        let taken: Vec<usize> = table.takeover_channels(partition("spare")).collect();
        assert_eq!(taken, vec![0]);
        assert_eq!(table.takeover_channels(partition("io")).count(), 0);
        assert_eq!(table.takeover_channels(partition("rt")).count(), 0);
        assert_eq!(
            table.channel_takers(0),
            vec![table.partition_index("spare").unwrap()]
        );
        // At io's guest address (after io's 16 MiB of RAM), not packed after spare's RAM.
        assert_eq!(channel_guest(&table, "io", 0), Some(16 << 20));
        assert_eq!(channel_guest(&table, "spare", 0), Some(16 << 20));
        let spare = table.partition_index("spare").unwrap();
        assert!(plan_partition(&table, spare)
            .iter()
            .any(|planned| planned.description.to_string()
                == "memory of channel `telemetry`, taken over from `io`"));
    }

    #[test]
    fn guest_ram_is_the_planned_ram() {
        let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/valid");
        let mut tables: Vec<Table> = std::fs::read_dir(&directory)
            .expect("the valid corpus")
            .filter_map(|entry| crate::load_without_files(&entry.ok()?.path()).ok())
            .collect();
        tables.push(
            crate::check_text(
                std::path::Path::new("synthetic.toml"),
                crate::synthetic::table(17, 100),
                crate::FileChecks::Skip,
            )
            .expect("a valid generated table"),
        );
        assert!(tables.len() > 10);
        for table in &tables {
            for index in 0..table.partitions.len() {
                let mut planned: Vec<Range> = plan_partition(table, index)
                    .into_iter()
                    .filter(|planned| {
                        planned.mapping.kind == MappingKind::Ram && planned.mapping.host.size > 0
                    })
                    .map(|planned| Range::new(planned.mapping.guest, planned.mapping.host.size))
                    .collect();
                merge_ranges(&mut planned);
                assert_eq!(guest_ram(table, index), planned);
            }
        }
    }

    #[test]
    fn a_channel_both_members_list_is_not_taken_over() {
        let table = corpus_table("standby.toml");
        for partition in &table.partitions {
            assert_eq!(table.takeover_channels(partition).count(), 0);
        }
        for channel in 0..table.channels.len() {
            assert!(table.channel_takers(channel).is_empty());
        }
    }

    #[test]
    fn aligns_up() {
        assert_eq!(align_up(0, CHANNEL_ALIGNMENT), Some(0));
        assert_eq!(align_up(1, CHANNEL_ALIGNMENT), Some(CHANNEL_ALIGNMENT));
        assert_eq!(align_up(u64::MAX, CHANNEL_ALIGNMENT), None);
    }
}
