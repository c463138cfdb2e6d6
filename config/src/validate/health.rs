//! The health monitor's table (`[partition.health]`): actions fit their events, machine-wide
//! actions come with the `power` capability, escalation rules count one thing each, once,
//! within sane windows and without cycles, and a watchdog has a core to run on.

use std::collections::{HashMap, HashSet};

use tessera_abi::table::{HealthAction, HealthEvent, HealthPolicy};

use super::Rule;
use crate::diagnostics::Finding;
use crate::model::{ActionName, Capability, EscalationRule, Partition, Table};
use crate::source::{Located, Span};

/// Watchdog periods: at least 1 ms (the hypervisor's watchdog core polls the TSC; shorter
/// periods would report the guest's own scheduling jitter), at most 60 s.
pub const WATCHDOG_PERIOD_MICROSECONDS: (u64, u64) = (1_000, 60_000_000);
/// Escalation windows: 1 ms to 24 h.
pub const ESCALATION_WINDOW_MICROSECONDS: (u64, u64) = (1_000, 86_400_000_000);

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let every_core_owned = {
        let owned: HashSet<u32> = table
            .partitions
            .iter()
            .flat_map(|partition| partition.cpus.iter().map(|cpu| cpu.value))
            .collect();
        table
            .platform
            .cpus
            .iter()
            .all(|cpu| owned.contains(&cpu.value))
    };
    for partition in &table.partitions {
        let Some(health) = &partition.health else {
            continue;
        };
        let has_power = partition
            .capabilities
            .iter()
            .any(|text| text.parse::<Capability>() == Ok(Capability::Power));
        let has_standby = super::standby::may_switch_to_standby(table, &partition.name);
        for event in HealthEvent::ALL {
            if let Some(action) = health.events.get(event) {
                check_action(partition, action, has_power, has_standby, findings);
                check_event_action(partition, event, action, findings);
            }
        }
        check_escalations(
            partition,
            &health.escalate,
            has_power,
            has_standby,
            findings,
        );
        if let Some(watchdog) = &health.watchdog {
            let period = watchdog.period.microseconds();
            let (least, most) = WATCHDOG_PERIOD_MICROSECONDS;
            if !(least..=most).contains(&period) {
                findings.push(
                    Finding::new(
                        Rule::HealthDuration,
                        watchdog.period.span,
                        format!(
                            "the watchdog period of partition `{}` is {}, outside 1 ms–60 s",
                            *partition.name, *watchdog.period
                        ),
                    )
                    .label("out of range"),
                );
            }
            if every_core_owned {
                findings.push(
                    Finding::new(
                        Rule::HealthWatchdogCore,
                        watchdog.span,
                        format!(
                            "partition `{}` has a watchdog, but every core of the platform belongs to a partition",
                            *partition.name
                        ),
                    )
                    .label("no core to run the watchdog on")
                    .hint("add a core to `platform.cpus` that no partition lists: the hypervisor watches deadlines there, so that the watchdog costs the partitions no exits (docs/health.md)"),
                );
            }
        }
    }
}

/// Rules every action obeys wherever it is written.
fn check_action(
    partition: &Partition,
    action: &Located<ActionName>,
    has_power: bool,
    has_standby: bool,
    findings: &mut Vec<Finding>,
) {
    let resolved = action.action();
    if resolved.is_machine_wide() && !has_power {
        findings.push(
            Finding::new(
                Rule::HealthMachineAction,
                action.span,
                format!(
                    "partition `{}` would {} the machine, but lacks the `power` capability",
                    *partition.name,
                    if resolved == HealthAction::MachineReset {
                        "reset"
                    } else {
                        "power off"
                    }
                ),
            )
            .label("acts on the whole machine")
            .hint("add \"power\" to its capabilities, or choose an action that stays in the partition"),
        );
    }
    if resolved == HealthAction::SwitchToStandby && !has_standby {
        findings.push(
            Finding::new(
                Rule::HealthStandby,
                action.span,
                format!(
                    "partition `{}` would switch to a standby partition, but it has none",
                    *partition.name
                ),
            )
            .label("no standby")
            .hint(format!("give another partition `standby-for = \"{}\"`, or use `halt`, `warm-restart` or `cold-restart`", *partition.name)),
        );
    }
}

/// Rules for the action given to one event.
fn check_event_action(
    partition: &Partition,
    event: HealthEvent,
    action: &Located<ActionName>,
    findings: &mut Vec<Finding>,
) {
    let resolved = action.action();
    if resolved == HealthAction::Log && !event.partition_can_continue() {
        findings.push(
            Finding::new(
                Rule::HealthLogOnly,
                action.span,
                format!(
                    "partition `{}` answers `{}` with `log`, but its core cannot run on after it",
                    *partition.name,
                    event.name()
                ),
            )
            .label("the partition cannot continue")
            .hint("choose `halt`, `warm-restart` or `cold-restart`"),
        );
    }
    if event == HealthEvent::RestartBudgetExhausted && resolved.is_restart() {
        findings.push(
            Finding::new(
                Rule::HealthBudgetRestart,
                action.span,
                format!(
                    "partition `{}` answers `restart-budget-exhausted` with `{}`, but it has no restart left",
                    *partition.name,
                    resolved.name()
                ),
            )
            .label("no restart left")
            .hint("choose `halt`, or raise `restart-limit`"),
        );
    }
}

fn check_escalations(
    partition: &Partition,
    rules: &[Located<EscalationRule>],
    has_power: bool,
    has_standby: bool,
    findings: &mut Vec<Finding>,
) {
    let mut seen: HashMap<String, Span> = HashMap::new();
    // Action rules that passed the other checks: action → (next action, the rule's span).
    let mut next: HashMap<HealthAction, (HealthAction, Span)> = HashMap::new();
    for rule in rules {
        let trigger = match (&rule.event, &rule.action) {
            (Some(event), None) => Some((event.event().name(), event.span)),
            (None, Some(action)) => Some((action.action().name(), action.span)),
            _ => None,
        };
        let Some((name, span)) = trigger else {
            findings.push(
                Finding::new(
                    Rule::HealthEscalationTrigger,
                    rule.span,
                    format!(
                        "an escalation rule of partition `{}` names {}",
                        *partition.name,
                        if rule.event.is_some() {
                            "both `event` and `action`"
                        } else {
                            "neither `event` nor `action`"
                        }
                    ),
                )
                .label("counts what?")
                .hint("write `event = \"…\"` to count an event, or `action = \"…\"` to count an action"),
            );
            continue;
        };
        let key = format!(
            "{}:{name}",
            if rule.event.is_some() {
                "event"
            } else {
                "action"
            }
        );
        if let Some(&earlier) = seen.get(&key) {
            findings.push(
                Finding::new(
                    Rule::HealthEscalationDuplicate,
                    span,
                    format!(
                        "partition `{}` has two escalation rules for `{name}`",
                        *partition.name
                    ),
                )
                .label("again")
                .related(earlier, "first rule here"),
            );
            continue;
        }
        seen.insert(key, span);
        let count = *rule.count;
        if count == 0 || count > HealthPolicy::MAX_ESCALATION_COUNT as u64 {
            findings.push(
                Finding::new(
                    Rule::HealthEscalationCount,
                    rule.count.span,
                    format!(
                        "an escalation rule of partition `{}` counts to {count}, outside 1–{}",
                        *partition.name,
                        HealthPolicy::MAX_ESCALATION_COUNT
                    ),
                )
                .label("out of range"),
            );
        }
        let window = rule.window.microseconds();
        let (least, most) = ESCALATION_WINDOW_MICROSECONDS;
        if !(least..=most).contains(&window) {
            findings.push(
                Finding::new(
                    Rule::HealthDuration,
                    rule.window.span,
                    format!(
                        "an escalation window of partition `{}` is {}, outside 1 ms–24 h",
                        *partition.name, *rule.window
                    ),
                )
                .label("out of range"),
            );
        }
        check_action(partition, &rule.to, has_power, has_standby, findings);
        if let Some(event) = &rule.event {
            check_event_action(partition, event.event(), &rule.to, findings);
        }
        if let Some(action) = &rule.action {
            next.insert(action.action(), (rule.to.action(), rule.to.span));
        }
    }
    // Each action has at most one successor, so a walk from each action finds every cycle;
    // each is reported once, at the rule whose `to` is the smallest action of the cycle.
    let mut reported: HashSet<HealthAction> = HashSet::new();
    for start in HealthAction::ALL {
        let mut chain = vec![start];
        let mut current = start;
        while let Some(&(to, span)) = next.get(&current) {
            if to == start {
                let smallest = chain.iter().copied().min().unwrap_or(start);
                if smallest == start && reported.insert(start) {
                    let mut names: Vec<&str> = chain.iter().map(|action| action.name()).collect();
                    names.push(start.name());
                    findings.push(
                        Finding::new(
                            Rule::HealthEscalationCycle,
                            span,
                            format!(
                                "the escalation rules of partition `{}` form a cycle: {}",
                                *partition.name,
                                names.join(" → ")
                            ),
                        )
                        .label("back to the start")
                        .hint("end every chain in an action no rule escalates, such as `halt`"),
                    );
                }
                break;
            }
            if chain.contains(&to) {
                break;
            }
            chain.push(to);
            current = to;
        }
    }
}
