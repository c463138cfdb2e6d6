//! Memory: non-empty, 4 KiB-aligned ranges that do not wrap and end below the physical
//! address width; partition, channel and hypervisor memory inside platform RAM and off the
//! pages the hypervisor reserves; every host-physical range pairwise disjoint from every
//! other and from the platform windows (local APIC, IOAPIC, ECAM, IOMMU); guest-physical
//! maps inside a partition disjoint and below the guest address width.
//!
//! Every pairwise check is one sort and sweep ([`overlapping_pairs`]): O(n log n + k).

use std::fmt;

use tessera_abi::table::Range;
use tessera_policy::stage2::{GUEST_ADDRESS_LIMIT, HOST_ADDRESS_LIMIT};

use super::sweep::{overlapping_pairs, Interval};
use super::{device_owners, owner_name, show_range, Owner, Rule};
use crate::diagnostics::Finding;
use crate::layout::{covered, merge_ranges, plan_partition};
use crate::model::{Table, NO_SPAN};
use crate::source::Span;

/// Stage-2 mappings work in 4 KiB pages.
pub const PAGE_SIZE: u64 = 4096;
/// The local APIC's MMIO window (xAPIC base 0xfee00000; the hypervisor keeps it for itself).
pub const LAPIC_WINDOW: Range = Range::new(0xfee0_0000, 1 << 20);
/// Host-physical pages no partition or channel may own: page 0 (real-mode IVT, BIOS data)
/// and the hypervisor's AP trampoline page (see docs/architecture.md).
pub const RESERVED_PAGES: [(Range, &str); 2] = [
    (Range::new(0, 0x1000), "page 0x0–0xfff (real-mode vectors)"),
    (
        Range::new(0x8000, 0x1000),
        "page 0x8000–0x8fff (the hypervisor's AP trampoline)",
    ),
];

/// What a host-physical range belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Hypervisor,
    Partition,
    Channel,
    /// MMIO of a device, with the device's owner.
    DeviceMmio(Option<Owner>),
    /// A platform window the hypervisor keeps (LAPIC, IOAPIC, ECAM, IOMMU).
    Window,
}

/// A host-physical range to check.
struct Item<'t> {
    kind: Kind,
    description: Description<'t>,
    span: Span,
}

/// What an [`Item`] is, for messages; written out only when a finding needs it (a large
/// table has one item per memory region, and formatting each description up front was a
/// tenth of the rules' time).
#[derive(Clone, Copy)]
enum Description<'t> {
    /// Fixed text ("hypervisor memory").
    Fixed(&'static str),
    /// Memory region `number` (1-based) of the partition with this name.
    Region { number: usize, partition: &'t str },
    /// The memory of the channel with this name.
    Channel(&'t str),
    /// An MMIO window of the device with this name.
    DeviceMmio(&'t str),
    /// IOMMU window `number` (1-based).
    Iommu(usize),
}

impl fmt::Display for Description<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(text) => formatter.write_str(text),
            Self::Region { number, partition } => {
                write!(
                    formatter,
                    "memory region {number} of partition `{partition}`"
                )
            }
            Self::Channel(name) => write!(formatter, "memory of channel `{name}`"),
            Self::DeviceMmio(name) => write!(formatter, "MMIO window of device `{name}`"),
            Self::Iommu(number) => write!(formatter, "IOMMU window {number}"),
        }
    }
}

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let ram = check_ram(table, findings);
    let owners = device_owners(table);

    // Everything that occupies host-physical address space.
    let regions: usize = table
        .partitions
        .iter()
        .map(|partition| partition.memory.len())
        .sum();
    let windows: usize = table
        .platform
        .devices
        .iter()
        .map(|device| device.device.mmio.len())
        .sum();
    // The hypervisor, the regions, the channels, the MMIO windows and up to three platform
    // windows plus the IOMMUs: allocated once, not grown one region at a time.
    let mut items: Vec<(u64, u64, Item)> = Vec::with_capacity(
        1 + regions + table.channels.len() + windows + 3 + table.platform.iommu.len(),
    );
    let hypervisor = &table.hypervisor.memory;
    items.push((
        *hypervisor.base,
        hypervisor.size.0,
        Item {
            kind: Kind::Hypervisor,
            description: Description::Fixed("hypervisor memory"),
            span: hypervisor.span,
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
            items.push((
                *region.base,
                region.size.0,
                Item {
                    kind: Kind::Partition,
                    description: Description::Region {
                        number: number + 1,
                        partition: partition.name.as_str(),
                    },
                    span: region.span,
                },
            ));
            if let Some(guest) = &region.guest {
                if !guest.value.is_multiple_of(PAGE_SIZE) {
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
        items.push((
            *channel.memory.base,
            channel.memory.size.0,
            Item {
                kind: Kind::Channel,
                description: Description::Channel(channel.name.as_str()),
                span: channel.memory.span,
            },
        ));
    }
    for device in table.platform.devices.iter() {
        for window in &device.device.mmio {
            items.push((
                *window.base,
                window.size.0,
                Item {
                    kind: Kind::DeviceMmio(owners.get(device.name.as_str()).copied()),
                    description: Description::DeviceMmio(device.name.as_str()),
                    span: window.span,
                },
            ));
        }
    }
    items.push((
        LAPIC_WINDOW.base,
        LAPIC_WINDOW.size,
        Item {
            kind: Kind::Window,
            description: Description::Fixed("the local APIC window"),
            // Architectural, not written in the table: no span to point at.
            span: NO_SPAN,
        },
    ));
    if let Some(ioapic) = &table.platform.ioapic {
        items.push((
            *ioapic.base,
            PAGE_SIZE,
            Item {
                kind: Kind::Window,
                description: Description::Fixed("the IOAPIC window"),
                span: ioapic.span,
            },
        ));
    }
    if let Some(ecam) = &table.platform.ecam {
        items.push((
            *ecam.base,
            ecam.size.0,
            Item {
                kind: Kind::Window,
                description: Description::Fixed("the ECAM window"),
                span: ecam.span,
            },
        ));
    }
    for (number, unit) in table.platform.iommu.iter().enumerate() {
        items.push((
            *unit.base,
            unit.size.0,
            Item {
                kind: Kind::Window,
                description: Description::Iommu(number + 1),
                span: unit.span,
            },
        ));
    }

    // Collected in place: an interval is an item with its end, so the items' allocation
    // holds them (no second vector the size of the table).
    let intervals: Vec<Interval<Item>> = items
        .into_iter()
        .filter_map(|(base, size, item)| check_item(base, size, item, &ram, findings))
        .collect();
    for (first, second) in overlapping_pairs(&intervals) {
        if let Some(finding) = overlap_finding(table, &intervals[first], &intervals[second]) {
            findings.push(finding);
        }
    }

    check_guest_maps(table, findings);
}

/// Platform RAM: non-empty, no wrap, below the address width, no overlaps. Returns the
/// sorted, merged RAM ranges.
fn check_ram(table: &Table, findings: &mut Vec<Finding>) -> Vec<Range> {
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
            Some(end) => {
                if end > HOST_ADDRESS_LIMIT {
                    findings.push(width_finding(
                        range.span,
                        "platform RAM range",
                        *range.base,
                        range.size.0,
                    ));
                }
                ram_intervals.push(Interval {
                    start: *range.base,
                    end,
                    item: range.span,
                });
            }
        }
    }
    for (first, second) in overlapping_pairs(&ram_intervals) {
        let (first, second) = (&ram_intervals[first], &ram_intervals[second]);
        findings.push(
            Finding::new(Rule::RamOverlap, second.item, "platform RAM ranges overlap")
                .label(format!(
                    "RAM {}",
                    show_range(second.start, second.end - second.start)
                ))
                .related(
                    first.item,
                    format!(
                        "overlaps RAM {}",
                        show_range(first.start, first.end - first.start)
                    ),
                )
                .hint("list each RAM range once, as the firmware's memory map reports it"),
        );
    }
    let mut ram: Vec<Range> = table
        .platform
        .ram
        .iter()
        .map(|range| range.to_abi())
        .collect();
    merge_ranges(&mut ram);
    ram
}

/// The checks of one range on its own; returns its interval for the overlap sweep.
fn check_item<'t>(
    base: u64,
    size: u64,
    item: Item<'t>,
    ram: &[Range],
    findings: &mut Vec<Finding>,
) -> Option<Interval<Item<'t>>> {
    let is_channel = item.kind == Kind::Channel;
    if size == 0 {
        let rule = if is_channel {
            Rule::ChannelSize
        } else {
            Rule::MemoryEmpty
        };
        findings.push(
            Finding::new(
                rule,
                item.span,
                format!("{} has size zero", item.description),
            )
            .label("empty"),
        );
        return None;
    }
    let Some(end) = base.checked_add(size) else {
        findings.push(wrap_finding(item.span, item.description));
        return None;
    };
    if end > HOST_ADDRESS_LIMIT {
        findings.push(width_finding(item.span, item.description, base, size));
    }
    if is_channel && !size.is_multiple_of(PAGE_SIZE) {
        findings.push(
            Finding::new(
                Rule::ChannelSize,
                item.span,
                format!(
                    "{} is {} bytes, not a multiple of 4 KiB",
                    item.description, size
                ),
            )
            .label("size not a multiple of 0x1000")
            .hint("channel memory is mapped into each member in whole 4 KiB pages"),
        );
    }
    let size_misaligned = !is_channel && !size.is_multiple_of(PAGE_SIZE);
    if !base.is_multiple_of(PAGE_SIZE) || size_misaligned {
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
    let needs_ram = matches!(
        item.kind,
        Kind::Hypervisor | Kind::Partition | Kind::Channel
    );
    if needs_ram && !covered(ram, base, size) {
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
                if ram.is_empty() {
                    "empty".to_owned()
                } else {
                    ram.iter()
                        .map(|range| show_range(range.base, range.size))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
        );
    }
    if matches!(item.kind, Kind::Partition | Kind::Channel) {
        for (reserved, what) in RESERVED_PAGES {
            if base < reserved.end() && reserved.base < end {
                findings.push(
                    Finding::new(
                        Rule::MemoryReserved,
                        item.span,
                        format!(
                            "{} {} covers {what}",
                            item.description,
                            show_range(base, size)
                        ),
                    )
                    .label(format!(
                        "overlaps {}",
                        show_range(reserved.base, reserved.size)
                    ))
                    .hint("the hypervisor keeps these pages; start the range at 0x9000 or above"),
                );
            }
        }
    }
    Some(Interval {
        start: base,
        end,
        item,
    })
}

/// The finding for two overlapping host-physical ranges, if their kinds may not overlap.
fn overlap_finding(
    table: &Table,
    first: &Interval<Item>,
    second: &Interval<Item>,
) -> Option<Finding> {
    let describe = |interval: &Interval<Item>| {
        format!(
            "{} {}",
            interval.item.description,
            show_range(interval.start, interval.end - interval.start)
        )
    };
    match (first.item.kind, second.item.kind) {
        (Kind::Window, _) | (_, Kind::Window) => {
            // Point at the item to move, not at the fixed window.
            let (window, other) = if second.item.kind == Kind::Window {
                (second, first)
            } else {
                (first, second)
            };
            let mut finding = Finding::new(
                Rule::MemoryWindow,
                other.item.span,
                format!("{} overlaps {}", other.item.description, describe(window)),
            )
            .label(describe(other))
            .hint("the local APIC, IOAPIC, ECAM and IOMMU windows belong to the hypervisor; move the range");
            if window.item.span != NO_SPAN {
                finding = finding.related(window.item.span, describe(window));
            }
            Some(finding)
        }
        (Kind::DeviceMmio(first_owner), Kind::DeviceMmio(second_owner)) => {
            let (Some(first_owner), Some(second_owner)) = (first_owner, second_owner) else {
                return None;
            };
            if first_owner == second_owner {
                return None;
            }
            Some(
                Finding::new(
                    Rule::MmioOverlap,
                    second.item.span,
                    format!(
                        "{} ({}) overlaps {} ({})",
                        second.item.description,
                        owner_name(table, second_owner),
                        first.item.description,
                        owner_name(table, first_owner)
                    ),
                )
                .label(describe(second))
                .related(first.item.span, describe(first))
                .hint("two device names describe the same hardware; one owner only"),
            )
        }
        _ => Some(
            Finding::new(
                Rule::MemoryOverlap,
                second.item.span,
                format!(
                    "{} overlaps {}",
                    second.item.description, first.item.description
                ),
            )
            .label(describe(second))
            .related(first.item.span, describe(first))
            .hint("host-physical memory is owned by one partition, channel or the hypervisor; share memory through a [[channel]]"),
        ),
    }
}

/// Guest-physical maps inside each partition: disjoint and below 2^48.
fn check_guest_maps(table: &Table, findings: &mut Vec<Finding>) {
    for index in 0..table.partitions.len() {
        let planned = plan_partition(table, index);
        let mut guest_intervals: Vec<Interval<usize>> = Vec::new();
        for (number, mapping) in planned.iter().enumerate() {
            let start = mapping.mapping.guest;
            let size = mapping.mapping.host.size;
            match start.checked_add(size) {
                None => findings.push(wrap_finding(
                    mapping.span,
                    format!("guest range of {}", mapping.description),
                )),
                Some(end) => {
                    if end > GUEST_ADDRESS_LIMIT {
                        findings.push(
                            Finding::new(
                                Rule::GuestAddressWidth,
                                mapping.span,
                                format!(
                                    "{} ends at guest-physical {end:#x}, beyond 2^48",
                                    mapping.description
                                ),
                            )
                            .label(format!("at guest {}", show_range(start, size)))
                            .hint("four-level stage-2 tables translate guest addresses below 0x1000000000000"),
                        );
                    }
                    guest_intervals.push(Interval {
                        start,
                        end,
                        item: number,
                    });
                }
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
                .label(format!(
                    "{} at guest {}",
                    second_mapping.description,
                    show_range(second.start, second.end - second.start)
                ))
                .related(
                    first_mapping.span,
                    format!(
                        "{} at guest {}",
                        first_mapping.description,
                        show_range(first.start, first.end - first.start)
                    ),
                )
                .hint(
                    if [first_mapping, second_mapping]
                        .iter()
                        .any(|mapping| mapping.description.taken_over())
                    {
                        "a channel a standby takes over sits at its primary's guest address; keep the standby's RAM and own channels clear of it, or list the standby in the channel"
                    } else {
                        "regions are packed from guest-physical 0 in table order; set `guest = …` to place one elsewhere"
                    },
                ),
            );
        }
    }
}

fn wrap_finding(span: Span, description: impl fmt::Display) -> Finding {
    Finding::new(
        Rule::MemoryWrap,
        span,
        format!("{description} wraps around the end of the address space"),
    )
    .label("base + size overflows 64 bits")
}

fn width_finding(span: Span, description: impl fmt::Display, base: u64, size: u64) -> Finding {
    Finding::new(
        Rule::MemoryAddressWidth,
        span,
        format!(
            "{description} {} ends beyond the 52-bit physical address width",
            show_range(base, size)
        ),
    )
    .label("beyond 0x10000000000000")
    .hint("x86-64 physical addresses have at most 52 bits")
}
