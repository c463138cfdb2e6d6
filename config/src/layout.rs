//! The guest-physical layout of a partition, shared by validation (which checks it) and
//! lowering (which emits it): RAM regions packed from guest-physical 0 in table order unless
//! a region says `guest = …`; channel memory after the highest RAM end, each channel at the
//! next 2 MiB boundary; device MMIO identity-mapped.

use tessera_abi::table::{MappingKind, MemoryMapping, Range, Rights};

use crate::model::{Partition, Table};
use crate::source::Span;

/// Channels start at a 2 MiB boundary so they can be mapped with large pages.
pub const CHANNEL_ALIGNMENT: u64 = 2 << 20;

/// One planned guest mapping with the table item it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMapping {
    pub mapping: MemoryMapping,
    /// The item in the table (memory region, channel memory, device MMIO window).
    pub span: Span,
    /// What it is, for messages ("region 2 of partition `worker`").
    pub description: String,
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
pub fn plan_partition(table: &Table, index: usize) -> Vec<PlannedMapping> {
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
            description: format!(
                "memory region {} of partition `{}`",
                number + 1,
                *partition.name
            ),
        });
    }
    let mut cursor = align_up(ram_end, CHANNEL_ALIGNMENT);
    for &channel_index in table.channels_of(&partition.name) {
        let channel = &table.channels[channel_index];
        let Some(guest) = cursor else { break };
        let size = channel.memory.size.0;
        cursor = guest
            .checked_add(size)
            .and_then(|end| align_up(end, CHANNEL_ALIGNMENT));
        planned.push(PlannedMapping {
            mapping: MemoryMapping {
                guest,
                host: channel.memory.to_abi(),
                rights: Rights::RW,
                kind: MappingKind::Channel(channel_index as u16),
            },
            span: channel.memory.span,
            description: format!("memory of channel `{}`", *channel.name),
        });
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
                description: match from {
                    None => format!("MMIO window of device `{}`", *device.name),
                    Some(primary) => format!(
                        "MMIO window of device `{}`, taken over from `{}`",
                        *device.name, **primary
                    ),
                },
            });
        }
    }
    planned
}

/// The guest-physical RAM of a partition as sorted, merged ranges.
pub fn guest_ram(table: &Table, index: usize) -> Vec<Range> {
    let mut ranges: Vec<Range> = plan_partition(table, index)
        .into_iter()
        .filter(|planned| planned.mapping.kind == MappingKind::Ram && planned.mapping.host.size > 0)
        .map(|planned| Range::new(planned.mapping.guest, planned.mapping.host.size))
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

    #[test]
    fn aligns_up() {
        assert_eq!(align_up(0, CHANNEL_ALIGNMENT), Some(0));
        assert_eq!(align_up(1, CHANNEL_ALIGNMENT), Some(CHANNEL_ALIGNMENT));
        assert_eq!(align_up(u64::MAX, CHANNEL_ALIGNMENT), None);
    }
}
