//! Devices: named devices exist and have one owner; the hypervisor console is an existing,
//! unowned device with a port; port ranges, PCI functions and IRQ pins of different owners
//! do not collide, also when two device names describe the same hardware; no partition owns
//! a port of the virtual platform. (MMIO windows
//! are swept with the rest of host-physical memory in [`super::memory`].)

use std::collections::HashMap;

use tessera_abi::virtual_platform::RESERVED_PORTS;

use super::sweep::{overlapping_pairs, Interval};
use super::{owner_name, show_range, Owner, Rule};
use crate::diagnostics::Finding;
use crate::model::{NamedDevice, Table};
use crate::source::Span;

/// I/O ports are 16-bit.
const PORT_SPACE: u64 = 0x1_0000;
/// The IOAPIC redirection entries a pin number can select (the lowered table keeps pins as
/// bytes).
const MAX_PINS: u64 = 256;
/// ECAM gives each bus 1 MiB of configuration space.
const ECAM_BUS_BYTES: u64 = 1 << 20;

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    check_device_values(table, findings);
    let owners = check_ownership(table, findings);
    check_same_hardware(table, &owners, findings);
    check_reserved_ports(table, findings);
}

/// No partition's device reaches a port of the virtual platform: the hypervisor traps its
/// ACPI sleep and reset registers for every partition (see docs/linux-guest.md).
fn check_reserved_ports(table: &Table, findings: &mut Vec<Finding>) {
    let mut reported = std::collections::HashSet::new();
    for partition in &table.partitions {
        for name in &partition.devices {
            let Some(device) = table.device(name) else {
                continue;
            };
            if !reported.insert(device.name.as_str()) {
                continue;
            }
            for range in &device.device.ports {
                let reserved: Vec<String> = RESERVED_PORTS
                    .iter()
                    .filter(|&&port| {
                        u64::from(port) >= *range.base
                            && u64::from(port) - *range.base < range.size.0
                    })
                    .map(|port| format!("{port:#x}"))
                    .collect();
                if reserved.is_empty() {
                    continue;
                }
                findings.push(
                    Finding::new(
                        Rule::PortReserved,
                        range.span,
                        format!(
                            "ports {} of device `{}` include {}, which the hypervisor keeps for every partition's ACPI sleep and reset registers",
                            show_range(*range.base, range.size.0),
                            *device.name,
                            reserved.join(", ")
                        ),
                    )
                    .label("reserved port")
                    .related(name.span, format!("owned by partition `{}`", *partition.name))
                    .hint("the virtual platform's ports are 0x510, 0x511 (sleep control and status) and 0xcf9 (reset); leave them out of partition devices"),
                );
            }
        }
    }
}

/// Each device on its own: port ranges inside the port space, IRQ pins that exist, PCI
/// buses the ECAM window covers.
fn check_device_values(table: &Table, findings: &mut Vec<Finding>) {
    let ioapic_pins = table
        .platform
        .ioapic
        .as_ref()
        .map(|ioapic| u64::from(*ioapic.pins).min(MAX_PINS));
    let ecam_buses = table
        .platform
        .ecam
        .as_ref()
        .map(|ecam| ecam.size.0 / ECAM_BUS_BYTES);
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
            match ioapic_pins {
                None => findings.push(
                    Finding::new(
                        Rule::IrqNoIoapic,
                        irq.span,
                        format!(
                            "device `{}` uses IRQ pin {}, but the platform declares no IOAPIC",
                            *device.name, **irq
                        ),
                    )
                    .label("no IOAPIC to route it")
                    .hint("add `ioapic = { base = 0xfec00000, pins = 24 }` to [platform]"),
                ),
                Some(pins) if u64::from(**irq) >= pins => findings.push(
                    Finding::new(
                        Rule::IrqPin,
                        irq.span,
                        format!(
                            "device `{}` uses IRQ pin {}, but the IOAPIC has {pins} pins",
                            *device.name, **irq
                        ),
                    )
                    .label("no such pin")
                    .hint(format!("pins are 0–{}", pins.saturating_sub(1))),
                ),
                Some(_) => {}
            }
        }
        if let (Some(pci), Some(buses), Some(ecam)) =
            (&device.device.pci, ecam_buses, &table.platform.ecam)
        {
            if u64::from(pci.bus) >= buses {
                findings.push(
                    Finding::new(
                        Rule::PciOutsideEcam,
                        pci.span,
                        format!(
                            "device `{}` is on PCI bus {:#04x}, but the ECAM window covers buses 0–{:#x}",
                            *device.name,
                            pci.bus,
                            buses.saturating_sub(1)
                        ),
                    )
                    .label("bus beyond ECAM")
                    .related(ecam.span, format!("ECAM: {} (1 MiB per bus)", crate::Size(ecam.size.0))),
                );
            }
        }
    }
}

/// Devices named by partitions exist, have one owner and are not the console; the console
/// exists and has a port. Returns each owned device's owner.
fn check_ownership<'table>(
    table: &'table Table,
    findings: &mut Vec<Finding>,
) -> HashMap<&'table str, Owner> {
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
                let mut finding = Finding::new(
                    Rule::DeviceUnknown,
                    name.span,
                    format!(
                        "partition `{}` names device `{}`, which platform.devices does not define",
                        *partition.name, **name
                    ),
                )
                .label("no such device");
                let known: Vec<&str> = table
                    .platform
                    .devices
                    .iter()
                    .map(|device| device.name.as_str())
                    .collect();
                if let Some(suggestion) = crate::schema::did_you_mean(name, &known) {
                    finding = finding.hint(format!("did you mean `{suggestion}`?"));
                }
                findings.push(finding);
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
                    .label("again")
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
    owners
        .into_iter()
        .map(|(name, (owner, _))| (name, owner))
        .collect()
}

/// Port ranges, PCI functions and IRQ pins of devices with different owners: the same
/// hardware must not reach two owners under two names.
fn check_same_hardware(table: &Table, owners: &HashMap<&str, Owner>, findings: &mut Vec<Finding>) {
    let mut ports: Vec<Interval<(Owner, &NamedDevice, Span)>> = Vec::new();
    let mut pci: HashMap<_, (Owner, &NamedDevice, Span)> = HashMap::new();
    let mut irqs: HashMap<u32, (Owner, &NamedDevice, Span)> = HashMap::new();
    for device in table.platform.devices.iter() {
        let Some(&owner) = owners.get(device.name.as_str()) else {
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
        if let Some(address) = &device.device.pci {
            match pci.get(&**address) {
                Some(&(other_owner, other, other_span)) if other_owner != owner => findings.push(
                    Finding::new(
                        Rule::PciShared,
                        address.span,
                        format!(
                            "PCI function {} is device `{}` of {} and device `{}` of {}",
                            **address,
                            *device.name,
                            owner_name(table, owner),
                            *other.name,
                            owner_name(table, other_owner)
                        ),
                    )
                    .label(format!("`{}`", *device.name))
                    .related(other_span, format!("`{}`, the same function", *other.name))
                    .hint("two device names describe the same PCI function; give it to one owner"),
                ),
                Some(_) => {}
                None => {
                    pci.insert(**address, (owner, device, address.span));
                }
            }
        }
        if let Some(irq) = &device.device.irq {
            match irqs.get(&**irq) {
                Some(&(other_owner, other, other_span)) if other_owner != owner => findings.push(
                    Finding::new(
                        Rule::IrqShared,
                        irq.span,
                        format!(
                            "IRQ pin {} is used by device `{}` of {} and device `{}` of {}",
                            **irq,
                            *device.name,
                            owner_name(table, owner),
                            *other.name,
                            owner_name(table, other_owner)
                        ),
                    )
                    .label(format!("`{}`", *device.name))
                    .related(other_span, format!("`{}`", *other.name))
                    .hint("an IOAPIC pin is routed only by its owner; the hypervisor cannot split a pin"),
                ),
                Some(_) => {}
                None => {
                    irqs.insert(**irq, (owner, device, irq.span));
                }
            }
        }
    }
    for (first, second) in overlapping_pairs(&ports) {
        let ((first_owner, first_device, first_span), (second_owner, second_device, second_span)) =
            (ports[first].item, ports[second].item);
        if first_owner == second_owner {
            continue;
        }
        findings.push(
            Finding::new(
                Rule::PortOverlap,
                second_span,
                format!(
                    "ports of device `{}` ({}) overlap ports of device `{}` ({})",
                    *second_device.name,
                    owner_name(table, second_owner),
                    *first_device.name,
                    owner_name(table, first_owner)
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
            )
            .hint("an I/O port belongs to one owner; two device names describe the same ports"),
        );
    }
}
