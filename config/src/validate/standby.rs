//! Hot standby (`standby-for`, docs/health.md): a standby names an existing partition other
//! than itself that is no standby; each primary has at most one standby; the standby's own
//! devices have no pin and no PCI function (it may have ports and windows of its own, a
//! console say) and it names its takeover vector (its primary's devices, PCI functions and
//! channels move to it at a takeover); a primary that rejoins as its standby's standby
//! (`rejoin-as-standby`) can be one.

use std::collections::HashMap;

use super::Rule;
use crate::diagnostics::Finding;
use crate::model::Table;
use crate::source::Span;

/// Interrupt vectors a takeover may use (0–31 are exceptions).
const VECTORS: std::ops::RangeInclusive<u64> = 32..=255;

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let index_of = |name: &str| {
        table
            .partitions
            .iter()
            .position(|partition| *partition.name == name)
    };
    // Primary index → the `standby-for` that first claimed it.
    let mut claimed: HashMap<usize, Span> = HashMap::new();
    for (index, partition) in table.partitions.iter().enumerate() {
        check_vector(table, index, findings);
        let Some(target) = &partition.standby_for else {
            continue;
        };
        let Some(primary) = index_of(target) else {
            findings.push(
                Finding::new(
                    Rule::StandbyTarget,
                    target.span,
                    format!(
                        "partition `{}` is the standby for `{}`, which does not exist",
                        *partition.name, **target
                    ),
                )
                .label("no such partition"),
            );
            continue;
        };
        if primary == index {
            findings.push(
                Finding::new(
                    Rule::StandbyTarget,
                    target.span,
                    format!("partition `{}` is the standby for itself", *partition.name),
                )
                .label("itself")
                .hint("a standby takes over another partition's devices"),
            );
            continue;
        }
        if let Some(chained) = &table.partitions[primary].standby_for {
            findings.push(
                Finding::new(
                    Rule::StandbyTarget,
                    target.span,
                    format!(
                        "partition `{}` is the standby for `{}`, which is itself the standby for `{}`",
                        *partition.name, **target, **chained
                    ),
                )
                .label("a standby of a standby")
                .related(chained.span, "here")
                .hint("name the primary itself: standbys form no chains or cycles"),
            );
            continue;
        }
        if let Some(&earlier) = claimed.get(&primary) {
            findings.push(
                Finding::new(
                    Rule::StandbyTarget,
                    target.span,
                    format!(
                        "partition `{}` is a second standby for `{}`",
                        *partition.name, **target
                    ),
                )
                .label("second standby")
                .related(earlier, "the first standby")
                .hint("a primary has at most one standby"),
            );
            continue;
        }
        claimed.insert(primary, target.span);
        check_pair(table, index, primary, findings);
        check_rejoin(table, index, primary, findings);
    }
    for partition in &table.partitions {
        if let Some(rejoin) = rejoins(partition) {
            if !has_standby(table, &partition.name) {
                findings.push(
                    Finding::new(
                        Rule::StandbyRejoin,
                        rejoin.span,
                        format!(
                            "partition `{}` would rejoin as a standby, but it has none",
                            *partition.name
                        ),
                    )
                    .label("no standby to swap roles with")
                    .hint(format!(
                        "give another partition `standby-for = \"{}\"`, or remove `rejoin-as-standby`",
                        *partition.name
                    )),
                );
            }
        }
    }
}

/// The `rejoin-as-standby = true` of a partition, if it says so.
fn rejoins(partition: &crate::model::Partition) -> Option<&crate::source::Located<bool>> {
    partition
        .rejoin_as_standby
        .as_ref()
        .filter(|rejoin| ***rejoin)
}

/// A primary that rejoins as its standby's standby must be able to be one: a takeover
/// vector, and a member of every channel of its standby (memberships do not move).
fn check_rejoin(
    table: &Table,
    standby_index: usize,
    primary_index: usize,
    findings: &mut Vec<Finding>,
) {
    let standby = &table.partitions[standby_index];
    let primary = &table.partitions[primary_index];
    let Some(rejoin) = rejoins(primary) else {
        return;
    };
    if primary.takeover_vector.is_none() {
        findings.push(
            Finding::new(
                Rule::StandbyRejoin,
                rejoin.span,
                format!(
                    "partition `{}` rejoins as a standby but has no `takeover-vector`",
                    *primary.name
                ),
            )
            .label("signalled how?")
            .hint("add `takeover-vector = 0x…` (32–255): the interrupt it is sent when it takes the devices back"),
        );
    }
    for channel in channels_without(table, &standby.name, &primary.name) {
        findings.push(
            Finding::new(
                Rule::StandbyRejoin,
                channel.name.span,
                format!(
                    "channel `{}` has standby `{}` but not `{}`, which rejoins as its standby",
                    *channel.name, *standby.name, *primary.name
                ),
            )
            .label("primary missing")
            .related(rejoin.span, "rejoins here")
            .hint(format!(
                "add `{}` to the channel's partitions: memberships do not move when the pair swaps roles",
                *primary.name
            )),
        );
    }
}

/// `takeover-vector` comes with `standby-for`, and only with it, in 32–255.
fn check_vector(table: &Table, index: usize, findings: &mut Vec<Finding>) {
    let partition = &table.partitions[index];
    match (&partition.standby_for, &partition.takeover_vector) {
        (Some(target), None) => findings.push(
            Finding::new(
                Rule::StandbyVector,
                target.span,
                format!(
                    "partition `{}` is a standby without a `takeover-vector`",
                    *partition.name
                ),
            )
            .label("signalled how?")
            .hint("add `takeover-vector = 0x…` (32–255): the interrupt its boot core is sent once it holds the devices"),
        ),
        (None, Some(vector)) if rejoins(partition).is_none() => findings.push(
            Finding::new(
                Rule::StandbyVector,
                vector.span,
                format!(
                    "partition `{}` has a `takeover-vector` but is no standby",
                    *partition.name
                ),
            )
            .label("without `standby-for` or `rejoin-as-standby`"),
        ),
        (_, Some(vector)) if !VECTORS.contains(&**vector) => findings.push(
            Finding::new(
                Rule::StandbyVector,
                vector.span,
                format!(
                    "the takeover vector of partition `{}` is {}, outside 32–255",
                    *partition.name, **vector
                ),
            )
            .label("out of range"),
        ),
        _ => {}
    }
}

/// The rules between a standby and its primary.
fn check_pair(
    table: &Table,
    standby_index: usize,
    primary_index: usize,
    findings: &mut Vec<Finding>,
) {
    let standby = &table.partitions[standby_index];
    let primary = &table.partitions[primary_index];
    // A standby's own devices stay with it at a takeover: only ports and MMIO windows,
    // whose maps the takeover changes bit by bit for the moved ranges. An IOAPIC pin or a
    // PCI function of its own would collide with the ownership words the takeover
    // replaces (the pins and functions the standby holds are then exactly the primary's).
    for name in &standby.devices {
        let Some(device) = table.device(name) else {
            continue;
        };
        let what = if device.device.pci.is_some() {
            "is a PCI function"
        } else if device.device.irq.is_some() {
            "has an interrupt pin"
        } else {
            continue;
        };
        findings.push(
            Finding::new(
                Rule::StandbyDevices,
                name.span,
                format!(
                    "standby partition `{}` lists device `{}` of its own, which {what}",
                    *standby.name, **name
                ),
            )
            .label("a standby's own devices are ports and MMIO only")
            .hint(format!(
                "give the device to `{}` (the standby takes it over), or drop its `irq`",
                *primary.name
            )),
        );
    }
}

/// The channels that have partition `member` but not partition `missing`. A standby takes
/// over its primary's channels, but a rejoining primary must already be a member of its
/// standby's: only the table primary's channels move.
fn channels_without<'table>(
    table: &'table Table,
    member: &'table str,
    missing: &'table str,
) -> impl Iterator<Item = &'table crate::model::Channel> {
    table.channels.iter().filter(move |channel| {
        let has = |name: &str| {
            channel
                .partitions
                .iter()
                .any(|partition| **partition == name)
        };
        has(member) && !has(missing)
    })
}

/// Whether partition `name` has a standby.
fn has_standby(table: &Table, name: &str) -> bool {
    table.partitions.iter().any(|partition| {
        partition
            .standby_for
            .as_ref()
            .is_some_and(|target| **target == name)
    })
}

/// Whether partition `name` can ever switch to a standby (for the `standby` action): it
/// has one, or it is the standby of a primary that rejoins as its standby.
pub(super) fn may_switch_to_standby(table: &Table, name: &str) -> bool {
    has_standby(table, name)
        || table.partitions.iter().any(|partition| {
            *partition.name == name
                && partition.standby_for.as_ref().is_some_and(|primary| {
                    table
                        .partitions
                        .iter()
                        .any(|other| *other.name == **primary && rejoins(other).is_some())
                })
        })
}
