//! PCI functions (docs/pci-iommu.md): the keys only a PCI function takes, the virtual bus
//! each partition sees (addresses on bus 0, not the host bridge's 00:00.0, not shared), the
//! virtual ECAM window clear of the partition's memory, interrupt kinds and vector counts,
//! and IOMMU coverage of confined DMA. The
//! same function given to two partitions is `device-shared` / `pci-shared`
//! ([`super::devices`]); BAR windows are swept with the rest of memory ([`super::memory`]).

use std::collections::HashMap;

use super::{show_range, Rule};
use tessera_abi::table::MappingKind;

use crate::diagnostics::Finding;
use crate::layout::plan_partition;
use crate::model::{
    Dma, NamedDevice, PciAddress, PciBridge, PciBridgeKind, PciConfig, PciInterruptKind, Table,
};
use crate::source::{Located, Span};

/// ECAM gives each bus 1 MiB of configuration space (PCIe Base 4.0 §7.2.2); a partition's
/// virtual ECAM window covers its one virtual bus.
pub const VIRTUAL_ECAM_BYTES: u64 = 1 << 20;
/// MSI: Multiple Message Capable encodes 1, 2, 4, 8, 16 or 32 vectors (PCI Local Bus 3.0
/// §6.8.1.3).
const MSI_MAX_VECTORS: u32 = 32;
/// MSI-X: the table size field is 11 bits, N−1 encoded (PCI Local Bus 3.0 §6.8.2.3).
const MSIX_MAX_VECTORS: u32 = 2048;
/// The virtual host bridge every partition with PCI functions sees.
const HOST_BRIDGE: PciAddress = PciAddress {
    bus: 0,
    device: 0,
    function: 0,
};

/// One warning: the table is accepted, but the author should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub span: Span,
    pub message: String,
}

/// The guest-physical virtual ECAM window of partitions with PCI functions: one bus at the
/// platform's ECAM base (a host range no partition may map, so identity-mapped BAR windows
/// never meet it).
pub fn virtual_ecam_window(table: &Table) -> Option<(u64, u64)> {
    table
        .platform
        .ecam
        .as_ref()
        .map(|ecam| (*ecam.base, VIRTUAL_ECAM_BYTES))
}

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    check_device_keys(table, findings);
    check_partitions(table, findings);
    check_bridges(table, findings);
}

/// The bridge of `platform.pci-bridges` whose secondary bus `bus` is, if any.
pub fn bridge_above(table: &Table, bus: u8) -> Option<&Located<PciBridge>> {
    table
        .platform
        .pci_bridges
        .iter()
        .find(|bridge| *bridge.secondary == u32::from(bus))
}

/// `platform.pci-bridges` and the functions behind them (docs/pci-iommu.md, "The table"):
/// each bridge on bus 0 with its own buses; every function off bus 0 on the secondary bus
/// of a declared bridge; behind a bridge whose functions share a requester ID (a
/// conventional or PCIe-to-PCI bridge: PCI Express to PCI/PCI-X Bridge 1.0 §2.3, the
/// requester ID of transactions forwarded from the secondary side), one owner and no
/// confined DMA.
fn check_bridges(table: &Table, findings: &mut Vec<Finding>) {
    let bridges = &table.platform.pci_bridges;
    // Bridges already found well-formed, which later ones are compared with.
    let mut well_formed: Vec<&Located<PciBridge>> = Vec::new();
    for bridge in bridges {
        let address = *bridge.pci;
        let subordinate = bridge
            .subordinate
            .as_ref()
            .map_or(*bridge.secondary, |bus| **bus);
        let problem = if address.bus != 0 {
            Some((
                bridge.pci.span,
                format!(
                    "bridge {address} is on bus {:02x}; only bridges on bus 0 are checked at boot",
                    address.bus
                ),
            ))
        } else if *bridge.secondary == 0 {
            Some((
                bridge.secondary.span,
                format!("bridge {address} has secondary bus 0, which is the bus it is on"),
            ))
        } else if subordinate < *bridge.secondary {
            Some((
                bridge.subordinate.as_ref().map_or(bridge.span, |bus| bus.span),
                format!("bridge {address} has subordinate bus {subordinate:02x} below its secondary bus {:02x}", *bridge.secondary),
            ))
        } else {
            None
        };
        if let Some((span, message)) = problem {
            findings.push(
                Finding::new(Rule::PciBridge, span, message)
                    .label("not a bridge the boot check can match")
                    .hint("copy the bridge's address and `Bus: secondary=…, subordinate=…` from the hardware (e.g. `lspci -v`)"),
            );
            continue;
        }
        for other in &well_formed {
            let same_address = *other.pci == address;
            if same_address
                || (other.buses().contains(&*bridge.secondary)
                    || bridge.buses().contains(&*other.secondary))
            {
                let what = if same_address { "address" } else { "buses" };
                findings.push(
                    Finding::new(
                        Rule::PciBridge,
                        bridge.span,
                        format!(
                            "bridges {address} ({}) and {} ({}) share their {what}",
                            show_buses(bridge),
                            *other.pci,
                            show_buses(other)
                        ),
                    )
                    .label(format!("bridge {address}"))
                    .related(other.span, format!("bridge {}", *other.pci))
                    .hint("one bridge per address, each bus below one bridge"),
                );
            }
        }
        well_formed.push(bridge);
        if let Some(device) = table
            .platform
            .devices
            .iter()
            .find(|device| device.device.pci.as_deref() == Some(&address))
        {
            findings.push(
                Finding::new(
                    Rule::PciBridge,
                    bridge.pci.span,
                    format!("{address} is declared a bridge and is device `{}`'s function; a bridge is not passed through", *device.name),
                )
                .label("bridge")
                .related(device.device.pci.as_ref().map_or(device.name.span, |pci| pci.span), format!("device `{}`", *device.name)),
            );
        }
    }
    let owners = super::device_owners(table);
    // Per aliasing bridge: the first owned function behind it and its owner.
    let mut first_owner: HashMap<PciAddress, (&NamedDevice, usize)> = HashMap::new();
    for device in table.platform.devices.iter() {
        let Some(address) = &device.device.pci else {
            continue;
        };
        // Only functions a partition owns are read at boot; an unowned name is inert.
        let Some(&super::Owner::Partition(owner)) = owners.get(device.name.as_str()) else {
            continue;
        };
        if address.bus == 0 {
            continue;
        }
        let Some(bridge) = bridge_above(table, address.bus) else {
            let below = bridges
                .iter()
                .find(|bridge| bridge.buses().contains(&u32::from(address.bus)));
            let mut finding = Finding::new(
                Rule::PciBehindBridge,
                address.span,
                match below {
                    Some(bridge) => format!(
                        "PCI function {} (device `{}`) is on bus {:02x}, below bridge {} but not on its secondary bus {:02x}: the bridges between are not declared",
                        **address, *device.name, address.bus, *bridge.pci, *bridge.secondary
                    ),
                    None => format!(
                        "PCI function {} (device `{}`) is on bus {:02x}, but no bridge of `platform.pci-bridges` has it as its secondary bus",
                        **address, *device.name, address.bus
                    ),
                },
            )
            .label("behind an undeclared bridge")
            .hint("declare the bridge on bus 0 above it in `platform.pci-bridges` (`{ pci, secondary, kind }`)");
            if let Some(bridge) = below {
                finding = finding.related(bridge.span, "this bridge's buses include it");
            }
            findings.push(finding);
            continue;
        };
        if !bridge.kind.aliases_requesters() {
            continue;
        }
        if device.device.dma_policy() == Dma::Confined {
            findings.push(
                Finding::new(
                    Rule::PciDmaAlias,
                    address.span,
                    format!(
                        "PCI function {} (device `{}` of partition `{}`) is behind {} bridge {}, so its DMA reaches the IOMMU under the bridge's alias requester ID; confined DMA through an alias is not built",
                        **address, *device.name, *table.partitions[owner].name,
                        if *bridge.kind == PciBridgeKind::Pci { "conventional PCI" } else { "PCIe-to-PCI" },
                        *bridge.pci
                    ),
                )
                .label("DMA not confinable")
                .related(bridge.kind.span, format!("bridge {} is `{}`", *bridge.pci, bridge.kind.name()))
                .hint("accept DMA to all memory with `dma = \"unconfined\"`, or move the card behind a PCIe port"),
            );
        }
        match first_owner.get(&*bridge.pci) {
            Some(&(other, other_owner)) if other_owner != owner => findings.push(
                Finding::new(
                    Rule::PciBridgeSplit,
                    address.span,
                    format!(
                        "PCI functions {} (device `{}` of partition `{}`) and {} (device `{}` of partition `{}`) are behind one `{}` bridge {}: they share its requester ID, so no IOMMU can tell their DMA apart",
                        **address, *device.name, *table.partitions[owner].name,
                        other.device.pci.as_deref().map_or(String::new(), ToString::to_string),
                        *other.name, *table.partitions[other_owner].name,
                        bridge.kind.name(), *bridge.pci
                    ),
                )
                .label(format!("`{}`'s", *table.partitions[owner].name))
                .related(
                    other.device.pci.as_ref().map_or(other.name.span, |pci| pci.span),
                    format!("`{}`'s", *table.partitions[other_owner].name),
                )
                .hint("give every function behind the bridge to one partition"),
            ),
            Some(_) => {}
            None => {
                first_owner.insert(*bridge.pci, (device, owner));
            }
        }
    }
}

/// `buses 01–03`, or `bus 01`.
fn show_buses(bridge: &PciBridge) -> String {
    let buses = bridge.buses();
    if buses.start() == buses.end() {
        format!("bus {:02x}", buses.start())
    } else {
        format!("buses {:02x}–{:02x}", buses.start(), buses.end())
    }
}

/// Keys each device has on its own: PCI-only keys on a device with `pci`, the interrupt
/// kind and vector count, the virtual address.
fn check_device_keys(table: &Table, findings: &mut Vec<Finding>) {
    for device in table.platform.devices.iter() {
        let keys = &device.device;
        if keys.pci.is_none() {
            let stray = [
                keys.virtual_pci
                    .as_ref()
                    .map(|key| ("virtual-pci", key.span)),
                keys.interrupt.as_ref().map(|key| ("interrupt", key.span)),
                keys.dma.as_ref().map(|key| ("dma", key.span)),
            ];
            for (key, span) in stray.into_iter().flatten() {
                findings.push(
                    Finding::new(
                        Rule::PciKeyWithoutFunction,
                        span,
                        format!(
                            "device `{}` has `{key}` but no `pci` function",
                            *device.name
                        ),
                    )
                    .label("only for PCI functions")
                    .related(device.name.span, "this device")
                    .hint("add `pci = \"bb:dd.f\"` or remove the key"),
                );
            }
            continue;
        }
        if let Some(address) = &keys.virtual_pci {
            if address.bus != 0 || **address == HOST_BRIDGE {
                let why = if address.bus != 0 {
                    "a partition's virtual PCI bus is bus 0"
                } else {
                    "00:00.0 is the partition's virtual host bridge"
                };
                findings.push(
                    Finding::new(
                        Rule::PciVirtualAddress,
                        address.span,
                        format!(
                            "device `{}` asks for virtual PCI address {}, but {why}",
                            *device.name, **address
                        ),
                    )
                    .label("not available")
                    .hint("pick a virtual address 00:01.0–00:1f.7"),
                );
            }
        }
        if let Some(interrupt) = &keys.interrupt {
            let vectors = interrupt.vectors.as_ref();
            let problem = match (*interrupt.kind, vectors) {
                (PciInterruptKind::Intx, Some(vectors)) => Some((
                    vectors.span,
                    "INTx has one pin; `vectors` is for msi and msix".to_owned(),
                )),
                (PciInterruptKind::Intx, None) if keys.irq.is_none() => Some((
                    interrupt.kind.span,
                    "INTx needs the IOAPIC pin it is routed to: add `irq`".to_owned(),
                )),
                (PciInterruptKind::Msi, None) | (PciInterruptKind::Msix, None) => Some((
                    interrupt.span,
                    "MSI and MSI-X need a vector count: add `vectors`".to_owned(),
                )),
                (PciInterruptKind::Msi, Some(vectors))
                    if !(1..=MSI_MAX_VECTORS).contains(&**vectors)
                        || !vectors.is_power_of_two() =>
                {
                    Some((
                        vectors.span,
                        format!("MSI offers 1, 2, 4, 8, 16 or 32 vectors, not {}", **vectors),
                    ))
                }
                (PciInterruptKind::Msix, Some(vectors))
                    if !(1..=MSIX_MAX_VECTORS).contains(&**vectors) =>
                {
                    Some((
                        vectors.span,
                        format!("MSI-X offers 1 to 2048 vectors, not {}", **vectors),
                    ))
                }
                _ => None,
            };
            if let Some((span, why)) = problem {
                findings.push(
                    Finding::new(
                        Rule::PciInterrupt,
                        span,
                        format!(
                            "the interrupt of device `{}` is inconsistent: {why}",
                            *device.name
                        ),
                    )
                    .label("here")
                    .related(interrupt.span, "the interrupt"),
                );
            }
        }
    }
}

/// Per partition: virtual addresses are distinct, the virtual ECAM
/// window is clear of the partition's memory, and confined DMA has an IOMMU unit.
fn check_partitions(table: &Table, findings: &mut Vec<Finding>) {
    for (index, partition) in table.partitions.iter().enumerate() {
        let functions: Vec<&NamedDevice> = table
            .partition_devices_with_takeover(partition)
            .filter(|device| device.device.pci.is_some())
            .collect();
        if let Some(config) = partition
            .pci_config
            .as_ref()
            .filter(|config| config.value == PciConfig::EcamOnly)
        {
            let why = if functions.is_empty() {
                Some(format!(
                    "partition `{}` owns no PCI function",
                    *partition.name
                ))
            } else if table.platform.ecam.is_none() {
                Some(
                    "the platform has no `ecam` window, so mechanism #1 is the only way to its bus"
                        .to_owned(),
                )
            } else {
                None
            };
            if let Some(why) = why {
                findings.push(
                    Finding::new(
                        Rule::PciConfig,
                        config.span,
                        format!("`pci-config = \"ecam-only\"` cannot apply: {why}"),
                    )
                    .label("ECAM only")
                    .hint("remove `pci-config`, or give the partition a PCI function and the platform an `ecam` window"),
                );
            }
        }
        if functions.is_empty() {
            continue;
        }
        let mut virtual_addresses: HashMap<PciAddress, (&NamedDevice, Span)> = HashMap::new();
        for &device in &functions {
            let Some(address) = device.device.virtual_address() else {
                continue;
            };
            let span = device.device.virtual_pci.as_ref().map_or_else(
                || {
                    device
                        .device
                        .pci
                        .as_ref()
                        .map_or(device.name.span, |pci| pci.span)
                },
                |address| address.span,
            );
            match virtual_addresses.get(&address) {
                // Two names for one function (allowed with one owner): it appears once.
                Some((other, _)) if other.device.pci.as_deref() == device.device.pci.as_deref() => {}
                Some(&(other, other_span)) => findings.push(
                    Finding::new(
                        Rule::PciVirtualShared,
                        span,
                        format!(
                            "devices `{}` and `{}` of partition `{}` are both at virtual PCI address {address}",
                            *other.name, *device.name, *partition.name
                        ),
                    )
                    .label(format!("`{}` at {address}", *device.name))
                    .related(other_span, format!("`{}` at {address}", *other.name))
                    .hint("give one of them another `virtual-pci` address"),
                ),
                None => {
                    virtual_addresses.insert(address, (device, span));
                }
            }
        }
        // Without an ECAM window, configuration space is reached through mechanism #1
        // (0xCF8/0xCFC) only, for the hypervisor and the partition alike: no virtual ECAM
        // window, no extended configuration space.
        if let Some((ecam_base, ecam_size)) = virtual_ecam_window(table) {
            check_virtual_ecam(table, index, ecam_base, ecam_size, findings);
        }
        for &device in &functions {
            let Some(address) = &device.device.pci else {
                continue;
            };
            if device.device.dma_policy() == Dma::Unconfined {
                continue;
            }
            if table
                .platform
                .iommu
                .iter()
                .any(|unit| unit.covers(**address))
            {
                continue;
            }
            let mut finding = Finding::new(
                Rule::PciDmaUncovered,
                address.span,
                format!(
                    "PCI function {} (device `{}` of partition `{}`) can bus-master, but no IOMMU unit covers it",
                    **address, *device.name, *partition.name
                ),
            )
            .label("DMA not confined")
            .hint("add an IOMMU unit that covers the function to `platform.iommu`, or accept DMA to all memory with `dma = \"unconfined\"`");
            if let Some(unit) = table.platform.iommu.first() {
                finding = finding.related(unit.span, "this unit's `covers` leaves it out");
            }
            findings.push(finding);
        }
    }
}

/// The partition's guest-physical memory stays clear of its virtual ECAM window.
fn check_virtual_ecam(
    table: &Table,
    index: usize,
    ecam_base: u64,
    ecam_size: u64,
    findings: &mut Vec<Finding>,
) {
    let partition = &table.partitions[index];
    let ecam_end = ecam_base.saturating_add(ecam_size);
    // Device MMIO is identity-mapped, and host MMIO over the ECAM window is already
    // `memory-window`.
    for planned in plan_partition(table, index)
        .into_iter()
        .filter(|planned| planned.mapping.kind != MappingKind::DeviceMmio)
    {
        let start = planned.mapping.guest;
        let end = start.saturating_add(planned.mapping.host.size);
        if start < ecam_end && ecam_base < end {
            findings.push(
                Finding::new(
                    Rule::PciEcamWindow,
                    planned.span,
                    format!(
                        "{} at guest {} overlaps the virtual ECAM window {} of partition `{}`",
                        planned.description,
                        show_range(start, planned.mapping.host.size),
                        show_range(ecam_base, ecam_size),
                        *partition.name
                    ),
                )
                .label("overlaps the virtual ECAM window")
                .related(
                    table.platform.ecam.as_ref().map_or(Span::new(0, 0), |ecam| ecam.span),
                    "the partition sees its PCI bus at this base",
                )
                .hint("move the region's `guest` address; the virtual ECAM window is 1 MiB at the platform's ECAM base"),
            );
        }
    }
}

/// What the table allows but its author should see: owned PCI functions with unconfined
/// DMA, which can read and write all of memory.
pub fn warnings(table: &Table) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let owners = super::device_owners(table);
    for device in table.platform.devices.iter() {
        let (Some(address), Some(dma)) = (&device.device.pci, &device.device.dma) else {
            continue;
        };
        if **dma != Dma::Unconfined {
            continue;
        }
        let Some(&super::Owner::Partition(owner)) = owners.get(device.name.as_str()) else {
            continue;
        };
        warnings.push(Warning {
            span: dma.span,
            message: format!(
                "PCI function {} (device `{}` of partition `{}`) has unconfined DMA: it can read and write all of memory, other partitions' and the hypervisor's included",
                **address,
                *device.name,
                *table.partitions[owner].name
            ),
        });
    }
    warnings
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn table(text: &str) -> Table {
        crate::parse(Path::new("pci.toml"), text.to_owned()).expect("the test table parses")
    }

    /// A one-partition table whose partition owns device `f`, described by `function`,
    /// with `platform_extra` added to `[platform]`.
    fn with_function(platform_extra: &str, function: &str) -> Table {
        table(&format!(
            r#"
[platform]
name = "test"
cpus = [0, 1]
ram = [ {{ base = 0x100000, size = "255 MiB" }} ]
{platform_extra}

[platform.devices]
com1 = {{ ports = [ {{ base = 0x3f8, size = 8 }} ] }}
f = {function}

[hypervisor]
memory = {{ base = 0x100000, size = "15 MiB" }}
console = "com1"

[[partition]]
name = "p"
cpus = [1]
memory = [ {{ base = 0x1000000, size = "16 MiB" }} ]
devices = ["f"]
boot = {{ kind = "elf", image = "guest.elf" }}
on-fault = "halt"
"#
        ))
    }

    fn findings(table: &Table) -> Vec<Rule> {
        let mut findings = Vec::new();
        check(table, &mut findings);
        findings.into_iter().map(|finding| finding.rule).collect()
    }

    #[test]
    fn unconfined_owned_functions_warn_and_only_they() {
        let unconfined = with_function("", r#"{ pci = "00:04.0", dma = "unconfined" }"#);
        assert!(findings(&unconfined).is_empty());
        let found = warnings(&unconfined);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("00:04.0"));
        assert!(found[0].message.contains("partition `p`"));
        let lines = crate::warnings(&unconfined);
        assert!(lines[0].starts_with("pci.toml:10:30:"), "{}", lines[0]);
        assert!(lines[0].contains(": warning: "), "{}", lines[0]);
        let confined = with_function("", r#"{ pci = "00:04.0", dma = "confined" }"#);
        assert!(warnings(&confined).is_empty());
        assert_eq!(findings(&confined), [Rule::PciDmaUncovered]);
    }

    #[test]
    fn the_default_virtual_address_keeps_device_and_function() {
        let moved = with_function("", r#"{ pci = "03:1c.5", dma = "unconfined" }"#);
        let device = &moved.platform.devices[1].device;
        let expected = PciAddress {
            bus: 0,
            device: 0x1c,
            function: 5,
        };
        assert_eq!(device.virtual_address(), Some(expected));
        assert_eq!(device.dma_policy(), Dma::Unconfined);
        let chosen = with_function("", r#"{ pci = "03:1c.5", virtual-pci = "00:01.0" }"#);
        let device = &chosen.platform.devices[1].device;
        let expected = PciAddress {
            bus: 0,
            device: 1,
            function: 0,
        };
        assert_eq!(device.virtual_address(), Some(expected));
        assert_eq!(device.dma_policy(), Dma::Confined);
    }

    #[test]
    fn functions_off_bus_0_need_their_bridge() {
        let port = r#"pci-bridges = [ { pci = "00:06.0", secondary = 1, kind = "pcie-port" } ]"#;
        let conventional = r#"pci-bridges = [ { pci = "00:05.0", secondary = 1, subordinate = 2, kind = "pci" } ]"#;
        let unconfined = r#"{ pci = "01:00.0", dma = "unconfined" }"#;
        let confined = r#"{ pci = "01:00.0" }"#;
        assert_eq!(
            findings(&with_function("", unconfined)),
            [Rule::PciBehindBridge]
        );
        assert!(findings(&with_function(port, unconfined)).is_empty());
        // Behind a root port the function keeps its requester ID: confinable.
        assert_eq!(
            findings(&with_function(port, confined)),
            [Rule::PciDmaUncovered]
        );
        // Behind a conventional bridge it has the bridge's.
        assert!(findings(&with_function(conventional, unconfined)).is_empty());
        assert_eq!(
            findings(&with_function(conventional, confined)),
            [Rule::PciDmaUncovered, Rule::PciDmaAlias]
        );
        // Bus 2 is below the bridge but behind a second, undeclared one.
        assert_eq!(
            findings(&with_function(
                conventional,
                r#"{ pci = "02:00.0", dma = "unconfined" }"#
            )),
            [Rule::PciBehindBridge]
        );
    }

    #[test]
    fn bridges_are_on_bus_0_with_buses_of_their_own() {
        let unconfined = r#"{ pci = "00:04.0", dma = "unconfined" }"#;
        for bad in [
            r#"pci-bridges = [ { pci = "01:05.0", secondary = 2, kind = "pci" } ]"#,
            r#"pci-bridges = [ { pci = "00:05.0", secondary = 0, kind = "pci" } ]"#,
            r#"pci-bridges = [ { pci = "00:05.0", secondary = 3, subordinate = 2, kind = "pci" } ]"#,
            r#"pci-bridges = [ { pci = "00:05.0", secondary = 1, subordinate = 3, kind = "pci" }, { pci = "00:06.0", secondary = 3, kind = "pcie-port" } ]"#,
            r#"pci-bridges = [ { pci = "00:04.0", secondary = 1, kind = "pcie-port" } ]"#,
        ] {
            assert_eq!(
                findings(&with_function(bad, unconfined)),
                [Rule::PciBridge],
                "{bad}"
            );
        }
    }

    #[test]
    fn iommu_coverage_follows_covers() {
        let every = r#"iommu = [ { base = 0xfed90000, size = "4 KiB" } ]"#;
        let listed = r#"iommu = [ { base = 0xfed90000, size = "4 KiB", covers = ["00:07.0"] } ]"#;
        let other = r#"iommu = [ { base = 0xfed90000, size = "4 KiB", covers = ["00:07.1"] } ]"#;
        let function = r#"{ pci = "00:07.0" }"#;
        assert!(findings(&with_function(every, function)).is_empty());
        assert!(findings(&with_function(listed, function)).is_empty());
        assert_eq!(
            findings(&with_function(other, function)),
            [Rule::PciDmaUncovered]
        );
    }

    #[test]
    fn the_virtual_ecam_window_is_one_bus_at_the_platform_base() {
        let ecam = r#"ecam = { base = 0xb0000000, size = "256 MiB" }"#;
        let table = with_function(ecam, r#"{ pci = "00:04.0", dma = "unconfined" }"#);
        assert_eq!(
            virtual_ecam_window(&table),
            Some((0xb000_0000, VIRTUAL_ECAM_BYTES))
        );
        let table = with_function("", r#"{ pci = "00:04.0", dma = "unconfined" }"#);
        assert_eq!(virtual_ecam_window(&table), None);
    }
}
