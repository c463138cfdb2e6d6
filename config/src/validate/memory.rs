//! Memory: non-empty, 4 KiB-aligned ranges that do not wrap, inside platform RAM, pairwise
//! disjoint across partitions, channels, the hypervisor and device MMIO; guest-physical
//! maps inside a partition disjoint.

use tessera_abi::table::Range;

use super::sweep::{overlapping_pairs, Interval};
use super::{show_range, Rule};
use crate::diagnostics::Finding;
use crate::layout::{covered, merge_ranges, plan_partition};
use crate::model::Table;
use crate::source::Span;

/// Stage-2 mappings work in 4 KiB pages.
pub const PAGE_SIZE: u64 = 4096;

/// A host-physical range that must not overlap any other.
struct Owned {
    description: String,
    span: Span,
    /// Must lie inside platform RAM.
    in_ram: bool,
}

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    // Platform RAM itself: non-empty, no wrap, no overlaps.
    let mut ram_intervals = Vec::new();
    for range in &table.platform.ram {
        match range.end() {
            _ if range.size.0 == 0 => findings.push(
                Finding::new(
                    Rule::MemoryEmpty,
                    range.span,
                    "platform RAM range of size zero",
                )
                .label("empty"),
            ),
            None => findings.push(wrap_finding(range.span, "platform RAM range")),
            Some(end) => ram_intervals.push(Interval {
                start: *range.base,
                end,
                item: range.span,
            }),
        }
    }
    for (first, second) in overlapping_pairs(&ram_intervals) {
        findings.push(
            Finding::new(
                Rule::RamOverlap,
                ram_intervals[second].item,
                "platform RAM ranges overlap",
            )
            .label("this range")
            .related(ram_intervals[first].item, "overlaps this one"),
        );
    }
    let mut ram: Vec<Range> = table
        .platform
        .ram
        .iter()
        .map(|range| range.to_abi())
        .collect();
    merge_ranges(&mut ram);

    // Everything that owns host-physical memory.
    let mut owned: Vec<(u64, u64, Owned)> = Vec::new();
    let hypervisor = &table.hypervisor.memory;
    owned.push((
        *hypervisor.base,
        hypervisor.size.0,
        Owned {
            description: "hypervisor memory".into(),
            span: hypervisor.span,
            in_ram: true,
        },
    ));
    for partition in &table.partitions {
        if partition.memory.is_empty() {
            findings.push(
                Finding::new(
                    Rule::PartitionNoMemory,
                    partition.name.span,
                    format!("partition `{}` has no memory", *partition.name),
                )
                .hint("give it at least one `memory` region"),
            );
        }
        for (number, region) in partition.memory.iter().enumerate() {
            owned.push((
                *region.base,
                region.size.0,
                Owned {
                    description: format!(
                        "memory region {} of partition `{}`",
                        number + 1,
                        *partition.name
                    ),
                    span: region.span,
                    in_ram: true,
                },
            ));
            if let Some(guest) = &region.guest {
                if guest.value % PAGE_SIZE != 0 {
                    findings.push(
                        Finding::new(
                            Rule::MemoryAlignment,
                            guest.span,
                            format!("guest address {:#x} is not 4 KiB aligned", guest.value),
                        )
                        .label("not a multiple of 0x1000"),
                    );
                }
            }
        }
    }
    for channel in &table.channels {
        owned.push((
            *channel.memory.base,
            channel.memory.size.0,
            Owned {
                description: format!("memory of channel `{}`", *channel.name),
                span: channel.memory.span,
                in_ram: true,
            },
        ));
    }
    for device in table.platform.devices.iter() {
        for window in &device.device.mmio {
            owned.push((
                *window.base,
                window.size.0,
                Owned {
                    description: format!("MMIO window of device `{}`", *device.name),
                    span: window.span,
                    in_ram: false,
                },
            ));
        }
    }
    if let Some(ioapic) = &table.platform.ioapic {
        owned.push((
            *ioapic.base,
            PAGE_SIZE,
            Owned {
                description: "the IOAPIC window".into(),
                span: ioapic.span,
                in_ram: false,
            },
        ));
    }

    let mut intervals = Vec::new();
    for (base, size, item) in owned {
        if size == 0 {
            findings.push(
                Finding::new(
                    Rule::MemoryEmpty,
                    item.span,
                    format!("{} has size zero", item.description),
                )
                .label("empty"),
            );
            continue;
        }
        let Some(end) = base.checked_add(size) else {
            findings.push(wrap_finding(item.span, &item.description));
            continue;
        };
        if base % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            findings.push(
                Finding::new(
                    Rule::MemoryAlignment,
                    item.span,
                    format!(
                        "{} {} is not 4 KiB aligned",
                        item.description,
                        show_range(base, size)
                    ),
                )
                .label("base and size must be multiples of 0x1000")
                .hint("stage-2 page tables map whole 4 KiB pages"),
            );
        }
        if item.in_ram && !covered(&ram, base, size) {
            findings.push(
                Finding::new(
                    Rule::MemoryOutsideRam,
                    item.span,
                    format!(
                        "{} {} is not inside platform RAM",
                        item.description,
                        show_range(base, size)
                    ),
                )
                .label("outside RAM")
                .hint(format!(
                    "platform RAM is {}",
                    ram.iter()
                        .map(|r| show_range(r.base, r.size))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
        intervals.push(Interval {
            start: base,
            end,
            item,
        });
    }
    for (first, second) in overlapping_pairs(&intervals) {
        let (first, second) = (&intervals[first], &intervals[second]);
        findings.push(
            Finding::new(
                Rule::MemoryOverlap,
                second.item.span,
                format!("{} overlaps {}", second.item.description, first.item.description),
            )
            .label(format!("{} {}", second.item.description, show_range(second.start, second.end - second.start)))
            .related(
                first.item.span,
                format!("{} {}", first.item.description, show_range(first.start, first.end - first.start)),
            )
            .hint("host-physical memory is owned by one partition, channel or the hypervisor; share memory through a [[channel]]"),
        );
    }

    // Guest-physical maps inside each partition.
    for index in 0..table.partitions.len() {
        let planned = plan_partition(table, index);
        let guest_intervals: Vec<Interval<usize>> = planned
            .iter()
            .enumerate()
            .filter_map(|(number, mapping)| {
                let start = mapping.mapping.guest;
                Some(Interval {
                    start,
                    end: start.checked_add(mapping.mapping.host.size)?,
                    item: number,
                })
            })
            .collect();
        for mapping in &planned {
            if mapping
                .mapping
                .guest
                .checked_add(mapping.mapping.host.size)
                .is_none()
            {
                findings.push(wrap_finding(
                    mapping.span,
                    &format!("guest range of {}", mapping.description),
                ));
            }
        }
        for (first, second) in overlapping_pairs(&guest_intervals) {
            let (first, second) = (&guest_intervals[first], &guest_intervals[second]);
            let (first_mapping, second_mapping) = (&planned[first.item], &planned[second.item]);
            findings.push(
                Finding::new(
                    Rule::GuestOverlap,
                    second_mapping.span,
                    format!(
                        "partition `{}`: guest-physical ranges overlap",
                        *table.partitions[index].name
                    ),
                )
                .label(format!("{} at guest {}", second_mapping.description, show_range(second.start, second.end - second.start)))
                .related(
                    first_mapping.span,
                    format!("{} at guest {}", first_mapping.description, show_range(first.start, first.end - first.start)),
                )
                .hint("regions are packed from guest-physical 0 in table order; set `guest = …` to place one elsewhere"),
            );
        }
    }
}

fn wrap_finding(span: Span, description: &str) -> Finding {
    Finding::new(
        Rule::MemoryWrap,
        span,
        format!("{description} wraps around the end of the address space"),
    )
    .label("base + size overflows 64 bits")
}
