//! `tessera show`: the partitions, the sorted host-physical memory map (who owns which
//! range, the gaps between them, shared channels) and the devices of a table, as text.

use std::fmt::Write;
use std::path::Path;

use tessera_config::{Size, Table};

use crate::check::load_for_display;
use crate::map::{memory_map, Owner};
use crate::Outcome;

/// `tessera show TABLE`.
pub fn show(path: &Path) -> Outcome {
    match load_for_display(path) {
        Ok(table) => Outcome {
            code: crate::EXIT_VALID,
            stdout: describe(&table),
            stderr: String::new(),
        },
        Err(outcome) => outcome,
    }
}

/// The health policy of one partition as the hypervisor will apply it.
fn describe_health(out: &mut String, table: &Table, partition: &tessera_config::model::Partition) {
    use tessera_abi::table::{EscalationTrigger, HealthEvent};
    use tessera_config::duration::Duration;
    let health = tessera_config::lower::lower_health(partition);
    let _ = writeln!(
        out,
        "  {}: restart limit {}, watchdog {}",
        *partition.name,
        health.restart_limit,
        if health.watchdog_period_microseconds == 0 {
            "none".to_owned()
        } else {
            format!("every {}", Duration(health.watchdog_period_microseconds))
        }
    );
    let events: Vec<String> = HealthEvent::ALL
        .iter()
        .map(|event| {
            format!(
                "{} → {}",
                event.name(),
                health.actions[event.index()].name()
            )
        })
        .collect();
    let _ = writeln!(out, "    {}", events.join(", "));
    if let (Some(primary), Some(vector)) = (&partition.standby_for, &partition.takeover_vector) {
        let _ = writeln!(
            out,
            "    hot standby for `{}`: takes over its devices, then gets vector {:#x}",
            **primary, **vector
        );
    }
    if let Some(standby) = table.partitions.iter().find(|other| {
        other
            .standby_for
            .as_ref()
            .is_some_and(|name| **name == *partition.name)
    }) {
        let _ = writeln!(
            out,
            "    hot standby: `{}` (on `standby` it takes over this partition's ports and IOAPIC pins)",
            *standby.name
        );
    }
    if let (Some(true), Some(vector)) = (
        partition.rejoin_as_standby.as_ref().map(|rejoin| **rejoin),
        &partition.takeover_vector,
    ) {
        let _ = writeln!(
            out,
            "    rejoins as a standby: after a failover the failed member restarts (cold) as the other's standby; this one gets vector {:#x} when it takes the devices back",
            **vector
        );
    }
    for rule in &health.escalations {
        let (kind, name) = match rule.trigger {
            EscalationTrigger::Event(event) => ("event", event.name()),
            EscalationTrigger::Action(action) => ("action", action.name()),
        };
        let _ = writeln!(
            out,
            "    escalate: {} × {kind} {name} within {} → {}",
            rule.count,
            Duration(rule.window_microseconds),
            rule.to.name()
        );
    }
}

fn size(bytes: u64) -> String {
    Size(bytes).to_string()
}

/// The text `show` prints.
pub fn describe(table: &Table) -> String {
    let mut out = String::new();
    let ram: u64 = table.platform.ram.iter().map(|range| range.size.0).sum();
    let _ = writeln!(
        out,
        "table {}: platform `{}`, {} cores, {} of RAM",
        table.path.display(),
        *table.platform.name,
        table.platform.cpus.len(),
        size(ram)
    );
    let console = table.device(&table.hypervisor.console);
    let _ = writeln!(
        out,
        "hypervisor: memory {}, console `{}`{}",
        range_text(table.hypervisor.memory.to_abi()),
        *table.hypervisor.console,
        console
            .and_then(|device| device.device.ports.first())
            .map_or(String::new(), |port| format!(" (port {:#x})", *port.base))
    );

    let _ = writeln!(out, "\npartitions:");
    let rows: Vec<[String; 9]> = table
        .partitions
        .iter()
        .map(|partition| {
            let memory: u64 = partition.memory.iter().map(|region| region.size.0).sum();
            [
                partition.name.value.clone(),
                join(partition.cpus.iter().map(|cpu| cpu.to_string())),
                format!(
                    "{} in {} region{}",
                    size(memory),
                    partition.memory.len(),
                    if partition.memory.len() == 1 { "" } else { "s" }
                ),
                join(partition.devices.iter().map(|device| device.value.clone())),
                match *partition.boot.kind {
                    tessera_config::model::BootKind::Elf => "elf".to_owned(),
                    tessera_config::model::BootKind::Linux => "linux".to_owned(),
                },
                match *partition.on_fault {
                    tessera_config::model::OnFault::Halt => "halt".to_owned(),
                    tessera_config::model::OnFault::Restart => "restart".to_owned(),
                },
                join(partition.capabilities.iter().map(|c| c.value.clone())),
                match partition.wbinvd_policy() {
                    tessera_config::model::WbinvdPolicy::Native => "native".to_owned(),
                    tessera_config::model::WbinvdPolicy::Trap => "trap".to_owned(),
                },
                join(partition.user_hypercalls.iter().map(|c| c.value.clone())),
            ]
        })
        .collect();
    table_rows(
        &mut out,
        &[
            "name",
            "cores",
            "memory",
            "devices",
            "boot",
            "on-fault",
            "capabilities",
            "wbinvd",
            "user-hypercalls",
        ],
        &rows,
    );

    let _ = writeln!(
        out,
        "\nhealth monitor (resolved policy: on-fault, refined by [partition.health]):"
    );
    for partition in &table.partitions {
        describe_health(&mut out, table, partition);
    }

    let _ = writeln!(out, "\nmemory map (host-physical, sorted):");
    let rows: Vec<[String; 4]> = memory_map(table)
        .into_iter()
        .map(|band| {
            let owner = match band.owner {
                Owner::Hypervisor => "hypervisor".to_owned(),
                Owner::Partition(index) => table.partitions[index].name.value.clone(),
                Owner::Channel(_) => "shared".to_owned(),
                Owner::Device(Some(index)) => table.partitions[index].name.value.clone(),
                Owner::Device(None) => "-".to_owned(),
                Owner::Window => "platform".to_owned(),
                Owner::FreeRam => "(gap)".to_owned(),
            };
            [
                range_text(band.range),
                size(band.range.size),
                owner,
                band.label,
            ]
        })
        .collect();
    table_rows(&mut out, &["range", "size", "owner", "what"], &rows);

    let _ = writeln!(out, "\nchannels:");
    if table.channels.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for channel in &table.channels {
        let _ = writeln!(
            out,
            "  {}: {} {} shared by {}, doorbell vector {:#x}, doorbell budget {}/s per member",
            *channel.name,
            range_text(channel.memory.to_abi()),
            size(channel.memory.size.0),
            join(channel.partitions.iter().map(|m| m.value.clone())),
            *channel.doorbell.vector,
            channel.doorbell_budget()
        );
    }

    let _ = writeln!(out, "\ndevices:");
    let rows: Vec<[String; 3]> = table
        .platform
        .devices
        .iter()
        .map(|device| {
            let owner = if *table.hypervisor.console == *device.name {
                "hypervisor (console)".to_owned()
            } else {
                table
                    .partitions
                    .iter()
                    .find(|partition| {
                        partition
                            .devices
                            .iter()
                            .any(|name| name.as_str() == device.name.as_str())
                    })
                    .map_or("-".to_owned(), |partition| partition.name.value.clone())
            };
            let mut resources = Vec::new();
            for port in &device.device.ports {
                resources.push(format!("ports {}", range_text(port.to_abi())));
            }
            for window in &device.device.mmio {
                resources.push(format!("mmio {}", range_text(window.to_abi())));
            }
            if let Some(pci) = &device.device.pci {
                // Behind a bridge: which one, and whether its functions share its
                // requester ID (docs/pci-iommu.md, "The table").
                match tessera_config::validate::pci::bridge_above(table, pci.bus) {
                    Some(bridge) if pci.bus != 0 => resources.push(format!(
                        "pci {} behind {} bridge {}",
                        **pci,
                        bridge.kind.name(),
                        *bridge.pci
                    )),
                    _ => resources.push(format!("pci {}", **pci)),
                }
            }
            if let Some(irq) = &device.device.irq {
                resources.push(format!("irq {}", **irq));
            }
            [device.name.value.clone(), owner, resources.join(", ")]
        })
        .collect();
    table_rows(&mut out, &["name", "owner", "resources"], &rows);
    out
}

fn join(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn range_text(range: tessera_abi::table::Range) -> String {
    format!(
        "[{:#x}, {:#x})",
        range.base,
        range.base.saturating_add(range.size)
    )
}

/// Left-aligned columns with a header line.
fn table_rows<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut text = String::from(" ");
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == N {
                text.push_str(&format!(" {cell}"));
            } else {
                text.push_str(&format!(" {cell:<width$}", width = widths[index]));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, header.to_vec());
    for row in rows {
        line(out, row.iter().map(String::as_str).collect());
    }
}
