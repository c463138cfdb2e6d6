//! References between items: capabilities, channel members, doorbell vectors and the
//! runner's `expect-faults` name things that exist.

use std::collections::HashMap;

use super::Rule;
use crate::diagnostics::Finding;
use crate::model::{Capability, CapabilityTarget, Table};
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
        for text in &partition.capabilities {
            match text.parse::<Capability>() {
                Err(error) => findings.push(
                    Finding::new(Rule::CapabilitySyntax, text.span, error.to_string())
                        .label("invalid capability")
                        .hint("capabilities are `power`, `stats:<partition|*>`, `halt:<partition>`, `restart:<partition>`"),
                ),
                Ok(Capability::Power | Capability::Stats(CapabilityTarget::Every)) => {}
                Ok(
                    Capability::Stats(CapabilityTarget::Partition(target))
                    | Capability::Halt(target)
                    | Capability::Restart(target),
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
        let vector = &channel.doorbell.vector;
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
