//! References between items: capabilities, channel members, doorbell vectors and the
//! runner's `[run]` section name things that exist; channels have two or more members,
//! doorbells a member can tell apart and a doorbell budget in 1–1,000,000 rings per second.

use std::collections::HashMap;

use super::Rule;
use crate::diagnostics::Finding;
use crate::model::{
    Capability, CapabilityTarget, Table, DOORBELL_BUDGET_DEFAULT, DOORBELL_BUDGET_MAX,
};
use crate::source::Span;

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let partition_names = || {
        table
            .partitions
            .iter()
            .map(|p| format!("`{}`", *p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing_partition = |rule: Rule, span: Span, what: String, name: &str| {
        Finding::new(
            rule,
            span,
            format!("{what} names partition `{name}`, which does not exist"),
        )
        .label("no such partition")
        .hint(format!("partitions are {}", partition_names()))
    };

    for partition in &table.partitions {
        let mut seen: HashMap<Capability, Span> = HashMap::new();
        for text in &partition.capabilities {
            if let Ok(capability) = text.parse::<Capability>() {
                if let Some(&earlier) = seen.get(&capability) {
                    findings.push(
                        Finding::new(
                            Rule::CapabilityDuplicate,
                            text.span,
                            format!(
                                "partition `{}` lists capability `{}` twice",
                                *partition.name, **text
                            ),
                        )
                        .label("again")
                        .related(earlier, "first listed here"),
                    );
                } else {
                    seen.insert(capability, text.span);
                }
            }
            match text.parse::<Capability>() {
                Err(error) => findings.push(
                    Finding::new(Rule::CapabilitySyntax, text.span, error.to_string())
                        .label("invalid capability")
                        .hint("capabilities are `power`, `stats:<partition|*>`, `halt:<partition>`, `restart:<partition>`, `health:<partition>`"),
                ),
                Ok(Capability::Power | Capability::Stats(CapabilityTarget::Every)) => {}
                Ok(
                    Capability::Stats(CapabilityTarget::Partition(target))
                    | Capability::Halt(target)
                    | Capability::Restart(target)
                    | Capability::Health(target),
                ) => {
                    if table.partition_index(&target).is_none() {
                        findings.push(missing_partition(
                            Rule::CapabilityTarget,
                            text.span,
                            format!("capability `{}` of partition `{}`", **text, *partition.name),
                            &target,
                        ));
                    }
                }
            }
        }
    }

    // (member partition, vector) → the first channel that rings it.
    let mut doorbells: HashMap<(&str, u64), (&str, Span)> = HashMap::new();
    for channel in &table.channels {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for member in &channel.partitions {
            if table.partition_index(member).is_none() {
                findings.push(missing_partition(
                    Rule::ChannelMember,
                    member.span,
                    format!("channel `{}`", *channel.name),
                    member,
                ));
            }
            if let Some(&earlier) = seen.get(member.as_str()) {
                findings.push(
                    Finding::new(
                        Rule::ChannelMember,
                        member.span,
                        format!(
                            "channel `{}` lists partition `{}` twice",
                            *channel.name, **member
                        ),
                    )
                    .related(earlier, "first listed here"),
                );
            } else {
                seen.insert(member.as_str(), member.span);
            }
        }
        if seen.len() < 2 {
            findings.push(
                Finding::new(
                    Rule::ChannelMemberCount,
                    channel.name.span,
                    format!(
                        "channel `{}` has {} distinct member{}; a channel connects two or more partitions",
                        *channel.name,
                        seen.len(),
                        if seen.len() == 1 { "" } else { "s" }
                    ),
                )
                .label("too few members")
                .hint("list at least two partitions in `partitions`; memory for one partition belongs in its `memory`"),
            );
        }
        let vector = &channel.doorbell.vector;
        let mut members: Vec<(&str, Span)> = seen.into_iter().collect();
        members.sort_by_key(|(_, span)| span.start);
        for (member, _) in members {
            match doorbells.get(&(member, **vector)) {
                Some(&(other, other_span)) => findings.push(
                    Finding::new(
                        Rule::DoorbellShared,
                        vector.span,
                        format!(
                            "channels `{other}` and `{}` both ring partition `{member}` with vector {}",
                            *channel.name, **vector
                        ),
                    )
                    .label(format!("vector {} of `{}`", **vector, *channel.name))
                    .related(other_span, format!("vector {} of `{other}`", **vector))
                    .hint(format!("give each channel of `{member}` its own vector")),
                ),
                None => {
                    doorbells.insert((member, **vector), (channel.name.as_str(), vector.span));
                }
            }
        }
        if !(32..=255).contains(&**vector) {
            findings.push(
                Finding::new(
                    Rule::DoorbellVector,
                    vector.span,
                    format!(
                        "doorbell vector {} of channel `{}` is outside 32–255",
                        **vector, *channel.name
                    ),
                )
                .label("not a usable interrupt vector")
                .hint("vectors 0–31 are CPU exceptions; pick one in 32–255"),
            );
        }
        if let Some(budget) = &channel.doorbell_budget {
            if !(1..=u64::from(DOORBELL_BUDGET_MAX)).contains(&**budget) {
                findings.push(
                    Finding::new(
                        Rule::DoorbellBudget,
                        budget.span,
                        format!(
                            "doorbell budget {} of channel `{}` is outside 1–{DOORBELL_BUDGET_MAX} rings per second",
                            **budget, *channel.name
                        ),
                    )
                    .label(if **budget == 0 {
                        "no ring would ever be delivered"
                    } else {
                        "more rings than any receiver can take"
                    })
                    .hint(format!(
                        "each ring costs the ringer a VM exit and every other member an interrupt; pick 1–{DOORBELL_BUDGET_MAX} rings per second per member, or leave `doorbell-budget` out for the default {DOORBELL_BUDGET_DEFAULT}"
                    )),
                );
            }
        }
    }

    if let Some(seconds) = &table.run.seconds {
        if **seconds == 0 {
            findings.push(
                Finding::new(Rule::RunSeconds, seconds.span, "run.seconds is zero")
                    .label("no time to run")
                    .hint("give the runner at least one second, or leave `seconds` out"),
            );
        }
    }
    for (index, disk) in table.run.qemu_disks.iter().enumerate() {
        let file = disk.file.as_str();
        if file.is_empty() || file == "." || file == ".." || file.contains('/') {
            findings.push(
                Finding::new(
                    Rule::RunDisk,
                    disk.file.span,
                    format!("run.qemu-disks file `{file}` is not a plain file name"),
                )
                .label("the runner writes the image into the run directory")
                .hint("name a file without a directory, e.g. `nvme.img`"),
            );
        }
        let bytes = disk.size.bytes();
        if bytes == 0 || bytes % 512 != 0 {
            findings.push(
                Finding::new(
                    Rule::RunDisk,
                    disk.size.span,
                    format!("run.qemu-disks `{file}`: size {bytes} is not a positive multiple of 512 bytes"),
                )
                .label("a disk holds whole 512-byte sectors")
                .hint("give the size in MiB, e.g. \"8 MiB\""),
            );
        }
        if let Some(earlier) = table.run.qemu_disks[..index]
            .iter()
            .find(|other| other.file.as_str() == file)
        {
            findings.push(
                Finding::new(
                    Rule::RunDisk,
                    disk.file.span,
                    format!("run.qemu-disks names `{file}` twice"),
                )
                .related(earlier.file.span, "first named here")
                .hint("give each disk its own file"),
            );
        }
    }
    for name in &table.run.expect_faults {
        if table.partition_index(name).is_none() {
            findings.push(missing_partition(
                Rule::RunUnknownPartition,
                name.span,
                "run.expect-faults".to_owned(),
                name,
            ));
        }
    }
}
