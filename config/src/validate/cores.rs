//! Cores exist in `platform.cpus` and are owned by at most one partition; the table has
//! partitions, each with a core.

use std::collections::HashMap;

use crate::diagnostics::Finding;
use crate::model::Table;
use crate::source::Span;
use crate::validate::Rule;

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let mut platform: HashMap<u32, Span> = HashMap::new();
    for cpu in &table.platform.cpus {
        if let Some(&earlier) = platform.get(&**cpu) {
            findings.push(
                Finding::new(
                    Rule::CoreDuplicate,
                    cpu.span,
                    format!("core {} is listed twice", **cpu),
                )
                .label("again")
                .related(earlier, "first listed here"),
            );
        } else {
            platform.insert(**cpu, cpu.span);
        }
    }

    if table.partitions.is_empty() {
        findings.push(
            Finding::new(
                Rule::PartitionNone,
                crate::model::NO_SPAN,
                "the table defines no partition",
            )
            .hint("add a [[partition]] with a name, cpus, memory, boot and on-fault"),
        );
    }
    let mut owners: HashMap<u32, (usize, Span)> = HashMap::new();
    for (index, partition) in table.partitions.iter().enumerate() {
        if partition.cpus.is_empty() {
            findings.push(
                Finding::new(
                    Rule::PartitionNoCore,
                    partition.name.span,
                    format!("partition `{}` has no core", *partition.name),
                )
                .hint("give it at least one core from platform.cpus"),
            );
        }
        for cpu in &partition.cpus {
            if !platform.contains_key(&**cpu) {
                findings.push(
                    Finding::new(
                        Rule::CoreUnknown,
                        cpu.span,
                        format!(
                            "partition `{}` names core {}, which platform.cpus does not list",
                            *partition.name, **cpu
                        ),
                    )
                    .label("no such core")
                    .hint(format!(
                        "platform.cpus lists {:?}",
                        table
                            .platform
                            .cpus
                            .iter()
                            .map(|c| c.value)
                            .collect::<Vec<_>>()
                    )),
                );
            }
            match owners.get(&**cpu) {
                Some(&(owner, earlier)) if owner == index => findings.push(
                    Finding::new(
                        Rule::CoreDuplicate,
                        cpu.span,
                        format!("partition `{}` lists core {} twice", *partition.name, **cpu),
                    )
                    .label("again")
                    .related(earlier, "first listed here"),
                ),
                Some(&(owner, earlier)) => findings.push(
                    Finding::new(
                        Rule::CoreShared,
                        cpu.span,
                        format!(
                            "core {} is owned by partitions `{}` and `{}`",
                            **cpu, *table.partitions[owner].name, *partition.name
                        ),
                    )
                    .label(format!("owned by `{}`", *partition.name))
                    .related(
                        earlier,
                        format!("also owned by `{}`", *table.partitions[owner].name),
                    )
                    .hint("every core belongs to at most one partition"),
                ),
                None => {
                    owners.insert(**cpu, (index, cpu.span));
                }
            }
        }
    }
}
