//! Ports that act on the whole machine: no partition's device reaches a legacy chipset port
//! (DMA controllers and page registers, interrupt controllers, the timer, the keyboard
//! controller with its reset line, NMI and CMOS control, fast A20, APM/SMI, PCI
//! configuration) or, on a platform the validator knows, a port of the ACPI fixed-hardware
//! block its firmware describes. The hypervisor checks the real FADT's blocks again at boot.

use std::collections::HashSet;

use super::{show_range, Rule};
use crate::diagnostics::Finding;
use crate::model::{AddressRange, Table};
use crate::source::Located;

/// I/O ports `first..=last` and what they are, for messages.
#[derive(Clone, Copy, Debug)]
pub struct PortBlock {
    pub first: u16,
    pub last: u16,
    pub what: &'static str,
}

const fn block(first: u16, last: u16, what: &'static str) -> PortBlock {
    PortBlock { first, last, what }
}

/// The legacy chipset ports of every PC that act on the whole machine, sorted and disjoint
/// (see docs/partition-table.md, "Ports no partition owns").
pub const MACHINE_WIDE_PORTS: &[PortBlock] = &[
    block(
        0x00,
        0x1f,
        "the first 8237 DMA controller (ISA DMA reaches memory below 16 MiB, the hypervisor's included)",
    ),
    block(0x20, 0x21, "the master 8259 PIC"),
    block(0x40, 0x43, "the 8254 PIT"),
    block(0x60, 0x60, "the 8042 keyboard controller's data port"),
    block(0x61, 0x61, "NMI status and control (system control port B)"),
    block(
        0x64,
        0x64,
        "the 8042's command port (it pulses the reset line)",
    ),
    block(
        0x70,
        0x71,
        "the CMOS/RTC index (its bit 7 masks NMIs) and data ports",
    ),
    block(
        0x80,
        0x8f,
        "the DMA page registers (0x80 is the POST code port)",
    ),
    block(0x92, 0x92, "system control port A (fast A20 and reset)"),
    block(0xa0, 0xa1, "the slave 8259 PIC"),
    block(
        0xb2,
        0xb3,
        "the APM control and status ports (a write raises an SMI)",
    ),
    block(0xc0, 0xdf, "the second 8237 DMA controller"),
    block(
        0xcf8,
        0xcff,
        "PCI configuration mechanism #1 (address 0xcf8, data 0xcfc) and the reset control register 0xcf9",
    ),
];

/// A platform whose ACPI fixed-hardware I/O ports the validator knows (`platform.name`).
#[derive(Clone, Copy, Debug)]
pub struct KnownPlatform {
    pub name: &'static str,
    /// The blocks its firmware's FADT reports (PM1 event and control, PM timer, GPE).
    pub acpi_ports: &'static [PortBlock],
}

/// The platforms the validator knows. QEMU's q35 machine (ICH9): SeaBIOS and OVMF both put
/// the ICH9 power-management I/O block (PMBASE, 128 ports) at 0x600; it holds PM1 event
/// (0x600) and control (0x604), the PM timer (0x608), GPE0 (0x620), SMI control (0x630)
/// and the TCO watchdog (0x660), which can reset the machine.
pub const KNOWN_PLATFORMS: &[KnownPlatform] = &[KnownPlatform {
    name: "qemu-q35",
    acpi_ports: &[block(
        0x600,
        0x67f,
        "the ICH9 ACPI power-management block (PM1 event and control, PM timer, GPE0, SMI control, TCO watchdog)",
    )],
}];

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let platform = KNOWN_PLATFORMS
        .iter()
        .find(|platform| platform.name == table.platform.name.as_str());
    let mut reported = HashSet::new();
    for partition in &table.partitions {
        for name in &partition.devices {
            let Some(device) = table.device(name) else {
                continue;
            };
            if !reported.insert(device.name.as_str()) {
                continue;
            }
            for range in &device.device.ports {
                let machine_wide = overlapped(MACHINE_WIDE_PORTS, range);
                if !machine_wide.is_empty() {
                    findings.push(
                        Finding::new(
                            Rule::PortMachineWide,
                            range.span,
                            format!(
                                "ports {} of device `{}` include ports that act on the whole machine: {}",
                                show_range(*range.base, range.size.0),
                                *device.name,
                                machine_wide.join("; ")
                            ),
                        )
                        .label("machine-wide ports")
                        .related(name.span, format!("owned by partition `{}`", *partition.name))
                        .hint("every partition shares the chipset behind these ports, so the hypervisor keeps them; see \"Ports no partition owns\" in docs/partition-table.md"),
                    );
                }
                let Some(platform) = platform else {
                    continue;
                };
                let acpi = overlapped(platform.acpi_ports, range);
                if !acpi.is_empty() {
                    findings.push(
                        Finding::new(
                            Rule::PortAcpiFixed,
                            range.span,
                            format!(
                                "ports {} of device `{}` include the ACPI fixed hardware of platform `{}`: {}",
                                show_range(*range.base, range.size.0),
                                *device.name,
                                platform.name,
                                acpi.join("; ")
                            ),
                        )
                        .label("ACPI fixed-hardware ports")
                        .related(name.span, format!("owned by partition `{}`", *partition.name))
                        .hint("the ACPI power-management ports act on the whole machine (sleep, power-off, reset, the PM timer, SMIs); the hypervisor keeps them, and checks the firmware's FADT again at boot"),
                    );
                }
            }
        }
    }
}

/// The blocks of `blocks` that `range` overlaps, as `[first, end) what` for messages.
fn overlapped(blocks: &[PortBlock], range: &Located<AddressRange>) -> Vec<String> {
    let start = *range.base;
    let end = range.end().unwrap_or(u64::MAX);
    blocks
        .iter()
        .filter(|block| u64::from(block.first) < end && start <= u64::from(block.last))
        .map(|block| {
            let size = u64::from(block.last) - u64::from(block.first) + 1;
            format!(
                "{} {}",
                show_range(u64::from(block.first), size),
                block.what
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_sorted_and_disjoint() {
        for blocks in
            std::iter::once(MACHINE_WIDE_PORTS).chain(KNOWN_PLATFORMS.iter().map(|p| p.acpi_ports))
        {
            for block in blocks {
                assert!(block.first <= block.last, "{block:?}");
            }
            for pair in blocks.windows(2) {
                assert!(pair[0].last < pair[1].first, "{pair:?}");
            }
        }
    }

    #[test]
    fn every_port_the_task_names_is_refused() {
        let refused = |port: u16| {
            MACHINE_WIDE_PORTS
                .iter()
                .any(|block| (block.first..=block.last).contains(&port))
        };
        for port in (0x00..=0x1f)
            .chain([0x20, 0x21, 0xa0, 0xa1])
            .chain(0x40..=0x43)
            .chain([0x60, 0x61, 0x64, 0x70, 0x71, 0x92, 0xb2, 0xb3, 0xcf9])
            .chain(0x80..=0x8f)
            .chain(0xc0..=0xdf)
            .chain(0xcf8..=0xcff)
        {
            assert!(refused(port), "port {port:#x}");
        }
        for port in [0x2e8, 0x2f8, 0x3e8, 0x3f8, 0x510, 0x511, 0x62, 0x63, 0xe0] {
            assert!(!refused(port), "port {port:#x}");
        }
    }
}
