//! The host-physical memory map of a validated table, as `show` prints it and `graph`
//! draws it: every owned range and platform window, and the free RAM between them.

use tessera_abi::table::Range;
use tessera_config::layout::{merge_ranges, ram_guest_bases};
use tessera_config::Table;

/// Who a band of the memory map belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Hypervisor,
    /// The partition with this index.
    Partition(usize),
    /// The channel with this index (shared by its members).
    Channel(usize),
    /// A device's MMIO window, with the partition that owns the device, if any.
    Device(Option<usize>),
    /// A platform window the hypervisor keeps (local APIC, IOAPIC, ECAM, IOMMU).
    Window,
    /// RAM nobody owns.
    FreeRam,
}

/// One range of the memory map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    pub range: Range,
    pub owner: Owner,
    /// What it is ("partition `rt`, region 1, guest 0x0").
    pub label: String,
}

/// Every band, sorted by base address (free RAM included).
pub fn memory_map(table: &Table) -> Vec<Band> {
    let mut bands = Vec::new();
    bands.push(Band {
        range: table.hypervisor.memory.to_abi(),
        owner: Owner::Hypervisor,
        label: "hypervisor".to_owned(),
    });
    for (index, partition) in table.partitions.iter().enumerate() {
        for (number, (region, guest)) in partition
            .memory
            .iter()
            .zip(ram_guest_bases(partition))
            .enumerate()
        {
            bands.push(Band {
                range: region.to_abi(),
                owner: Owner::Partition(index),
                label: format!(
                    "partition `{}`, region {}, guest {:#x}",
                    *partition.name,
                    number + 1,
                    guest.unwrap_or_default()
                ),
            });
        }
    }
    for (index, channel) in table.channels.iter().enumerate() {
        let members: Vec<&str> = channel
            .partitions
            .iter()
            .map(|member| member.as_str())
            .collect();
        bands.push(Band {
            range: channel.memory.to_abi(),
            owner: Owner::Channel(index),
            label: format!(
                "channel `{}`, shared by {}{}",
                *channel.name,
                members.join(", "),
                table
                    .channel_takers(index)
                    .into_iter()
                    .map(|standby| {
                        let standby = &table.partitions[standby];
                        format!(
                            "; taken over by standby `{}` from `{}`",
                            *standby.name,
                            standby.standby_for.as_deref().map_or("", String::as_str)
                        )
                    })
                    .collect::<String>()
            ),
        });
    }
    for device in table.platform.devices.iter() {
        let owner = table.partitions.iter().position(|partition| {
            partition
                .devices
                .iter()
                .any(|name| name.as_str() == device.name.as_str())
        });
        for window in &device.device.mmio {
            bands.push(Band {
                range: window.to_abi(),
                owner: Owner::Device(owner),
                label: format!(
                    "MMIO of device `{}`{}",
                    *device.name,
                    owner.map_or(" (unowned)".to_owned(), |index| format!(
                        ", owned by `{}`",
                        *table.partitions[index].name
                    ))
                ),
            });
        }
    }
    if let Some(ioapic) = &table.platform.ioapic {
        bands.push(Band {
            range: Range::new(*ioapic.base, 0x1000),
            owner: Owner::Window,
            label: format!("IOAPIC ({} pins)", *ioapic.pins),
        });
    }
    bands.push(Band {
        range: Range::new(0xfee0_0000, 1 << 20),
        owner: Owner::Window,
        label: "local APIC".to_owned(),
    });
    if let Some(ecam) = &table.platform.ecam {
        bands.push(Band {
            range: ecam.to_abi(),
            owner: Owner::Window,
            label: "PCI ECAM".to_owned(),
        });
    }
    for (number, unit) in table.platform.iommu.iter().enumerate() {
        bands.push(Band {
            range: unit.to_abi(),
            owner: Owner::Window,
            label: format!("IOMMU {}", number + 1),
        });
    }

    // Free RAM: platform RAM minus everything above.
    let mut used: Vec<Range> = bands.iter().map(|band| band.range).collect();
    merge_ranges(&mut used);
    let mut ram: Vec<Range> = table.platform.ram.iter().map(|r| r.to_abi()).collect();
    merge_ranges(&mut ram);
    for range in ram {
        let mut cursor = range.base;
        let first = used.partition_point(|used| used.end() <= range.base);
        for used in used[first..]
            .iter()
            .take_while(|used| used.base < range.end())
        {
            if used.base > cursor {
                bands.push(free_ram(cursor, used.base));
            }
            cursor = cursor.max(used.end());
        }
        if cursor < range.end() {
            bands.push(free_ram(cursor, range.end()));
        }
    }
    bands.sort_by_key(|band| (band.range.base, band.range.size));
    bands
}

fn free_ram(start: u64, end: u64) -> Band {
    Band {
        range: Range::new(start, end - start),
        owner: Owner::FreeRam,
        label: "free RAM".to_owned(),
    }
}
