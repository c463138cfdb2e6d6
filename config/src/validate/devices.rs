//! Devices: named devices exist and have one owner; the hypervisor console is an existing,
//! unowned device with a port; port ranges and IRQ pins of different owners do not collide.

use std::collections::HashMap;

use super::sweep::{overlapping_pairs, Interval};
use super::{show_range, Rule};
use crate::diagnostics::Finding;
use crate::model::Table;
use crate::source::Span;

/// I/O ports are 16-bit.
const PORT_SPACE: u64 = 0x1_0000;

/// Who owns a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Hypervisor,
    Partition(usize),
}

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let pins = table
        .platform
        .ioapic
        .as_ref()
        .map_or(256, |ioapic| u64::from(*ioapic.pins).min(256));
    for device in table.platform.devices.iter() {
        for range in &device.device.ports {
            let end = range.base.checked_add(range.size.0);
            if range.size.0 == 0 || end.is_none_or(|end| end > PORT_SPACE) {
                findings.push(
                    Finding::new(
                        Rule::PortRange,
                        range.span,
                        format!(
                            "port range {} of device `{}` is empty or beyond port 0xffff",
                            show_range(*range.base, range.size.0),
                            *device.name
                        ),
                    )
                    .label("not inside [0, 0x10000)"),
                );
            }
        }
        if let Some(irq) = &device.device.irq {
            if u64::from(**irq) >= pins {
                findings.push(
                    Finding::new(
                        Rule::IrqPin,
                        irq.span,
                        format!(
                            "device `{}` uses IRQ pin {}, but the IOAPIC has {pins} pins",
                            *device.name, **irq
                        ),
                    )
                    .label("no such pin"),
                );
            }
        }
    }

    // Ownership.
    let mut owners: HashMap<&str, (Owner, Span)> = HashMap::new();
    let console = &table.hypervisor.console;
    match table.device(console) {
        None => findings.push(
            Finding::new(
                Rule::ConsoleUnknown,
                console.span,
                format!(
                    "the hypervisor console `{}` is not a device in platform.devices",
                    **console
                ),
            )
            .label("no such device")
            .hint("name a UART from [platform.devices]"),
        ),
        Some(device) => {
            if device.device.ports.is_empty() {
                findings.push(
                    Finding::new(
                        Rule::ConsoleNoPort,
                        console.span,
                        format!("the hypervisor console `{}` has no I/O port", **console),
                    )
                    .related(device.name.span, "defined here")
                    .hint("the console is a 16550 UART reached through its first port"),
                );
            }
            owners.insert(console.as_str(), (Owner::Hypervisor, console.span));
        }
    }
    for (index, partition) in table.partitions.iter().enumerate() {
        for name in &partition.devices {
            if table.device(name).is_none() {
                findings.push(
                    Finding::new(
                        Rule::DeviceUnknown,
                        name.span,
                        format!("partition `{}` names device `{}`, which platform.devices does not define", *partition.name, **name),
                    )
                    .label("no such device"),
                );
                continue;
            }
            match owners.get(name.as_str()) {
                Some(&(Owner::Partition(owner), earlier)) if owner == index => findings.push(
                    Finding::new(
                        Rule::DeviceDuplicate,
                        name.span,
                        format!(
                            "partition `{}` lists device `{}` twice",
                            *partition.name, **name
                        ),
                    )
                    .related(earlier, "first listed here"),
                ),
                Some(&(Owner::Partition(owner), earlier)) => findings.push(
                    Finding::new(
                        Rule::DeviceShared,
                        name.span,
                        format!(
                            "device `{}` is owned by partitions `{}` and `{}`",
                            **name, *table.partitions[owner].name, *partition.name
                        ),
                    )
                    .label(format!("owned by `{}`", *partition.name))
                    .related(
                        earlier,
                        format!("also owned by `{}`", *table.partitions[owner].name),
                    )
                    .hint("a passthrough device belongs to at most one partition"),
                ),
                Some(&(Owner::Hypervisor, earlier)) => findings.push(
                    Finding::new(
                        Rule::ConsoleOwned,
                        name.span,
                        format!(
                            "device `{}` is the hypervisor console but partition `{}` owns it",
                            **name, *partition.name
                        ),
                    )
                    .label(format!("owned by `{}`", *partition.name))
                    .related(earlier, "the hypervisor console")
                    .hint("pick another device for the partition or for hypervisor.console"),
                ),
                None => {
                    owners.insert(name.as_str(), (Owner::Partition(index), name.span));
                }
            }
        }
    }

    // Port ranges and IRQ pins of devices with different owners.
    let owner_name = |owner: Owner| match owner {
        Owner::Hypervisor => "the hypervisor".to_owned(),
        Owner::Partition(index) => format!("partition `{}`", *table.partitions[index].name),
    };
    let mut ports = Vec::new();
    let mut irqs: HashMap<u32, (Owner, &str, Span)> = HashMap::new();
    for device in table.platform.devices.iter() {
        let Some(&(owner, _)) = owners.get(device.name.as_str()) else {
            continue;
        };
        for range in &device.device.ports {
            if let Some(end) = range.base.checked_add(range.size.0) {
                ports.push(Interval {
                    start: *range.base,
                    end,
                    item: (owner, device, range.span),
                });
            }
        }
        if let Some(irq) = &device.device.irq {
            match irqs.get(&**irq) {
                Some(&(other_owner, other_device, other_span)) if other_owner != owner => findings.push(
                    Finding::new(
                        Rule::IrqShared,
                        irq.span,
                        format!(
                            "IRQ pin {} is used by device `{}` of {} and device `{other_device}` of {}",
                            **irq, *device.name, owner_name(owner), owner_name(other_owner)
                        ),
                    )
                    .label(format!("`{}`", *device.name))
                    .related(other_span, format!("`{other_device}`")),
                ),
                Some(_) => {}
                None => {
                    irqs.insert(**irq, (owner, device.name.as_str(), irq.span));
                }
            }
        }
    }
    for (first, second) in overlapping_pairs(&ports) {
        let ((first_owner, first_device, first_span), (second_owner, second_device, second_span)) =
            (ports[first].item, ports[second].item);
        if first_owner == second_owner || first_device.name == second_device.name {
            continue;
        }
        findings.push(
            Finding::new(
                Rule::PortOverlap,
                second_span,
                format!(
                    "ports of device `{}` ({}) overlap ports of device `{}` ({})",
                    *second_device.name,
                    owner_name(second_owner),
                    *first_device.name,
                    owner_name(first_owner)
                ),
            )
            .label(format!(
                "`{}` {}",
                *second_device.name,
                show_range(ports[second].start, ports[second].end - ports[second].start)
            ))
            .related(
                first_span,
                format!(
                    "`{}` {}",
                    *first_device.name,
                    show_range(ports[first].start, ports[first].end - ports[first].start)
                ),
            ),
        );
    }
}
