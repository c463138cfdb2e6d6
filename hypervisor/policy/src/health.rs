//! The health monitor: what the hypervisor does about an event in a partition (a fault, a
//! missed heartbeat, a declared error), by the partition's table, with escalation — N
//! occurrences of an event or an action within a window turn into another action — and a
//! restart budget. Pure and allocation-free; time is the TSC, given by the caller.
//!
//! The hypervisor keeps one [`HealthMonitor`] per partition (fixed arrays sized by
//! [`HealthPolicy::MAX_ESCALATIONS`] and [`HealthPolicy::MAX_ESCALATION_COUNT`]) across the
//! partition's restarts, calls [`HealthMonitor::record`] for each event and carries out the
//! [`Decision`]. docs/health.md describes the model.

use tessera_abi::table::{EscalationTrigger, HealthAction, HealthEvent, HealthPolicy};

const MAX_COUNT: usize = HealthPolicy::MAX_ESCALATION_COUNT;
const MAX_RULES: usize = HealthPolicy::MAX_ESCALATIONS;

/// The TSC ticks of `microseconds` at `ticks_per_millisecond` (the TSC in kHz), saturating.
pub fn ticks(microseconds: u64, ticks_per_millisecond: u64) -> u64 {
    let product = u128::from(microseconds) * u128::from(ticks_per_millisecond) / 1000;
    u64::try_from(product).unwrap_or(u64::MAX)
}

/// The times of the last occurrences of one escalation rule's trigger: a ring of at most
/// [`MAX_COUNT`] TSC values.
#[derive(Clone, Copy, Debug)]
struct Occurrences {
    times: [u64; MAX_COUNT],
    /// Where the next time goes.
    next: usize,
    /// How many slots hold a time.
    filled: usize,
}

impl Occurrences {
    const fn new() -> Self {
        Self {
            times: [0; MAX_COUNT],
            next: 0,
            filled: 0,
        }
    }

    fn push(&mut self, now: u64) {
        self.times[self.next] = now;
        self.next = (self.next + 1) % MAX_COUNT;
        self.filled = (self.filled + 1).min(MAX_COUNT);
    }

    /// How many of the recorded times lie within `window` ticks before `now` (a time after
    /// `now`, from another core's slightly different TSC, counts as now).
    fn within(&self, now: u64, window: u64) -> usize {
        self.times[..self.filled]
            .iter()
            .filter(|&&time| now.saturating_sub(time) < window)
            .count()
    }
}

/// What the monitor decided about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The event acted on: the one recorded, or [`HealthEvent::RestartBudgetExhausted`]
    /// when the decided restart was over budget.
    pub event: HealthEvent,
    /// What to do.
    pub action: HealthAction,
    /// The table's action for the recorded event, before any escalation.
    pub planned: HealthAction,
    /// How many escalation rules fired (at most one per event rule plus one per action).
    pub escalations: u8,
    /// For a restart: the number of this restart (1 for the first).
    pub restart_number: u32,
}

/// One partition's health state: event counts, restarts and the escalation windows.
#[derive(Clone, Copy, Debug)]
pub struct HealthMonitor {
    event_counts: [u64; HealthEvent::COUNT],
    action_counts: [u64; HealthAction::COUNT],
    restarts: u32,
    /// By position in the policy's `escalations`.
    occurrences: [Occurrences; MAX_RULES],
}

impl Default for HealthMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthMonitor {
    pub const fn new() -> Self {
        Self {
            event_counts: [0; HealthEvent::COUNT],
            action_counts: [0; HealthAction::COUNT],
            restarts: 0,
            occurrences: [const { Occurrences::new() }; MAX_RULES],
        }
    }

    /// How often `event` has happened (saturating at `u64::MAX`).
    pub fn event_count(&self, event: HealthEvent) -> u64 {
        self.event_counts[event.index()]
    }

    /// How often the monitor has decided on `action`.
    pub fn action_count(&self, action: HealthAction) -> u64 {
        self.action_counts[action.index()]
    }

    /// Restarts decided so far (never more than the policy's restart limit).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Records `event` at TSC `now` and decides what to do about it under `policy`:
    /// 1. the table's action for the event;
    /// 2. the event's escalation rule, if the event is its `count`-th within the window;
    /// 3. the action rules, each at most once, while the action already taken `count` times
    ///    within its window escalates to another (so escalation ends even if a table had a
    ///    cycle, which validation refuses);
    /// 4. a restart beyond `restart_limit` becomes `restart-budget-exhausted` and that
    ///    event's action (never a restart: a halt instead);
    /// 5. `log` for an event after which the partition cannot run on becomes `halt`.
    pub fn record(
        &mut self,
        policy: &HealthPolicy,
        event: HealthEvent,
        now: u64,
        ticks_per_millisecond: u64,
    ) -> Decision {
        self.count_event(event);
        let planned = policy.action(event);
        let mut action = planned;
        let mut escalations = 0u8;
        let rules = &policy.escalations[..policy.escalations.len().min(MAX_RULES)];

        if let Some((position, rule)) = rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.trigger == EscalationTrigger::Event(event))
        {
            let occurrences = &mut self.occurrences[position];
            occurrences.push(now);
            let window = ticks(rule.window_microseconds, ticks_per_millisecond);
            if occurrences.within(now, window) >= usize::from(rule.count).clamp(1, MAX_COUNT) {
                action = rule.to;
                escalations += 1;
            }
        }

        let mut visited = [false; HealthAction::COUNT];
        while !visited[action.index()] {
            visited[action.index()] = true;
            let Some((position, rule)) = rules
                .iter()
                .enumerate()
                .find(|(_, rule)| rule.trigger == EscalationTrigger::Action(action))
            else {
                break;
            };
            let window = ticks(rule.window_microseconds, ticks_per_millisecond);
            if self.occurrences[position].within(now, window)
                >= usize::from(rule.count).clamp(1, MAX_COUNT)
            {
                action = rule.to;
                escalations += 1;
            } else {
                break;
            }
        }

        let mut acted_on = event;
        let mut restart_number = 0;
        if action.is_restart() {
            if self.restarts >= policy.restart_limit {
                acted_on = HealthEvent::RestartBudgetExhausted;
                self.count_event(acted_on);
                action = match policy.action(acted_on) {
                    restart if restart.is_restart() => HealthAction::Halt,
                    other => other,
                };
            } else {
                self.restarts += 1;
                restart_number = self.restarts;
            }
        }
        if action == HealthAction::Log && !event.partition_can_continue() {
            action = HealthAction::Halt;
        }

        if let Some(position) = rules
            .iter()
            .position(|rule| rule.trigger == EscalationTrigger::Action(action))
        {
            self.occurrences[position].push(now);
        }
        let slot = &mut self.action_counts[action.index()];
        *slot = slot.saturating_add(1);
        Decision {
            event: acted_on,
            action,
            planned,
            escalations,
            restart_number,
        }
    }

    fn count_event(&mut self, event: HealthEvent) {
        let slot = &mut self.event_counts[event.index()];
        *slot = slot.saturating_add(1);
    }
}

/// A partition's watchdog deadline: armed by the first heartbeat, pushed one period ahead
/// by each; 0 while unarmed.
pub mod watchdog {
    /// The deadline after a heartbeat at `now` (never 0, which means unarmed).
    pub fn deadline_after(now: u64, period_ticks: u64) -> u64 {
        now.saturating_add(period_ticks).max(1)
    }

    /// Whether a deadline has passed at `now`.
    pub fn is_overdue(deadline: u64, now: u64) -> bool {
        deadline != 0 && now > deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;
    use tessera_abi::table::Escalation;

    /// 1 GHz: a millisecond is 1,000,000 ticks, a microsecond 1,000.
    const KHZ: u64 = 1_000_000;
    const SECOND: u64 = 1_000_000_000;

    fn policy(base: HealthPolicy, escalations: &'static [Escalation]) -> HealthPolicy {
        HealthPolicy {
            escalations,
            ..base
        }
    }

    #[test]
    fn halt_policy_halts_every_event() {
        let mut monitor = HealthMonitor::new();
        for event in HealthEvent::ALL {
            let decision = monitor.record(&HealthPolicy::HALT, event, 0, KHZ);
            assert_eq!(decision.action, HealthAction::Halt, "{event:?}");
            assert_eq!(decision.event, event);
        }
    }

    #[test]
    fn restart_policy_restarts_until_the_budget_then_halts() {
        let mut monitor = HealthMonitor::new();
        for number in 1..=HealthPolicy::DEFAULT_RESTART_LIMIT {
            let decision = monitor.record(
                &HealthPolicy::RESTART,
                HealthEvent::MemoryViolation,
                u64::from(number),
                KHZ,
            );
            assert_eq!(decision.action, HealthAction::WarmRestart);
            assert_eq!(decision.restart_number, number);
        }
        let decision = monitor.record(
            &HealthPolicy::RESTART,
            HealthEvent::MemoryViolation,
            100,
            KHZ,
        );
        assert_eq!(decision.event, HealthEvent::RestartBudgetExhausted);
        assert_eq!(decision.action, HealthAction::Halt);
        assert_eq!(monitor.restarts(), HealthPolicy::DEFAULT_RESTART_LIMIT);
        assert_eq!(monitor.event_count(HealthEvent::MemoryViolation), 17);
        assert_eq!(monitor.event_count(HealthEvent::RestartBudgetExhausted), 1);
    }

    #[test]
    fn budget_exhausted_never_restarts_even_if_the_table_says_so() {
        let mut table = HealthPolicy::RESTART;
        table.restart_limit = 0;
        table.actions[HealthEvent::RestartBudgetExhausted.index()] = HealthAction::ColdRestart;
        let decision = HealthMonitor::new().record(&table, HealthEvent::Shutdown, 0, KHZ);
        assert_eq!(decision.event, HealthEvent::RestartBudgetExhausted);
        assert_eq!(decision.action, HealthAction::Halt);
    }

    #[test]
    fn event_rule_fires_on_the_count_th_event_within_the_window() {
        static RULES: [Escalation; 1] = [Escalation {
            trigger: EscalationTrigger::Event(HealthEvent::DeclaredFatal),
            count: 3,
            window_microseconds: 1_000_000,
            to: HealthAction::Halt,
        }];
        let mut table = policy(HealthPolicy::HALT, &RULES);
        table.actions[HealthEvent::DeclaredFatal.index()] = HealthAction::Log;
        let mut monitor = HealthMonitor::new();
        let record = |monitor: &mut HealthMonitor, now| {
            monitor
                .record(&table, HealthEvent::DeclaredFatal, now, KHZ)
                .action
        };
        // Two within a second, then a gap: the window forgets them.
        assert_eq!(record(&mut monitor, 0), HealthAction::Log);
        assert_eq!(record(&mut monitor, SECOND / 2), HealthAction::Log);
        assert_eq!(record(&mut monitor, 3 * SECOND), HealthAction::Log);
        assert_eq!(record(&mut monitor, 3 * SECOND + 1), HealthAction::Log);
        // The third within a second escalates.
        assert_eq!(record(&mut monitor, 3 * SECOND + 2), HealthAction::Halt);
    }

    #[test]
    fn action_chain_restart_then_cold_restart_then_halt() {
        // 2 warm restarts in 10 s → cold restart; 1 cold restart in 10 s → halt.
        static RULES: [Escalation; 2] = [
            Escalation {
                trigger: EscalationTrigger::Action(HealthAction::WarmRestart),
                count: 2,
                window_microseconds: 10_000_000,
                to: HealthAction::ColdRestart,
            },
            Escalation {
                trigger: EscalationTrigger::Action(HealthAction::ColdRestart),
                count: 1,
                window_microseconds: 10_000_000,
                to: HealthAction::Halt,
            },
        ];
        let table = policy(HealthPolicy::RESTART, &RULES);
        let mut monitor = HealthMonitor::new();
        let actions: Vec<_> = (0..5)
            .map(|second| {
                monitor
                    .record(&table, HealthEvent::Shutdown, second * SECOND, KHZ)
                    .action
            })
            .collect();
        assert_eq!(
            actions,
            [
                HealthAction::WarmRestart,
                HealthAction::WarmRestart,
                HealthAction::ColdRestart,
                HealthAction::Halt,
                HealthAction::Halt,
            ]
        );
        assert_eq!(monitor.restarts(), 3);
    }

    #[test]
    fn a_cyclic_table_still_decides() {
        static RULES: [Escalation; 2] = [
            Escalation {
                trigger: EscalationTrigger::Action(HealthAction::WarmRestart),
                count: 1,
                window_microseconds: u64::MAX,
                to: HealthAction::ColdRestart,
            },
            Escalation {
                trigger: EscalationTrigger::Action(HealthAction::ColdRestart),
                count: 1,
                window_microseconds: u64::MAX,
                to: HealthAction::WarmRestart,
            },
        ];
        let table = policy(HealthPolicy::RESTART, &RULES);
        let mut monitor = HealthMonitor::new();
        for now in 0..4 {
            let decision = monitor.record(&table, HealthEvent::Shutdown, now, KHZ);
            assert!(decision.action.is_restart());
            assert!(usize::from(decision.escalations) <= HealthAction::COUNT);
        }
    }

    #[test]
    fn log_is_no_answer_to_a_fault_the_core_cannot_resume_from() {
        let mut table = HealthPolicy::HALT;
        table.actions = [HealthAction::Log; HealthEvent::COUNT];
        let mut monitor = HealthMonitor::new();
        for event in HealthEvent::ALL {
            let action = monitor.record(&table, event, 0, KHZ).action;
            let expected = if event.partition_can_continue() {
                HealthAction::Log
            } else {
                HealthAction::Halt
            };
            assert_eq!(action, expected, "{event:?}");
        }
    }

    #[test]
    fn machine_wide_actions_pass_through() {
        let mut table = HealthPolicy::HALT;
        table.actions[HealthEvent::WatchdogExpiry.index()] = HealthAction::MachinePowerOff;
        table.actions[HealthEvent::DeclaredFatal.index()] = HealthAction::MachineReset;
        let mut monitor = HealthMonitor::new();
        assert_eq!(
            monitor
                .record(&table, HealthEvent::WatchdogExpiry, 0, KHZ)
                .action,
            HealthAction::MachinePowerOff
        );
        assert_eq!(
            monitor
                .record(&table, HealthEvent::DeclaredFatal, 0, KHZ)
                .action,
            HealthAction::MachineReset
        );
    }

    #[test]
    fn ticks_saturate() {
        assert_eq!(ticks(1_000, 2_000_000), 2_000_000);
        assert_eq!(ticks(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn watchdog_deadlines() {
        assert!(!watchdog::is_overdue(0, u64::MAX));
        let deadline = watchdog::deadline_after(10, 5);
        assert!(!watchdog::is_overdue(deadline, 15));
        assert!(watchdog::is_overdue(deadline, 16));
        assert_eq!(watchdog::deadline_after(u64::MAX, 5), u64::MAX);
        assert_eq!(watchdog::deadline_after(0, 0), 1);
    }

    fn any_event() -> impl Strategy<Value = HealthEvent> {
        (0..HealthEvent::COUNT).prop_map(|index| HealthEvent::ALL[index])
    }

    fn any_action() -> impl Strategy<Value = HealthAction> {
        (0..HealthAction::COUNT).prop_map(|index| HealthAction::ALL[index])
    }

    fn any_rule() -> impl Strategy<Value = Escalation> {
        (
            prop_oneof![
                any_event().prop_map(EscalationTrigger::Event),
                any_action().prop_map(EscalationTrigger::Action),
            ],
            0u16..40,
            any::<u64>(),
            any_action(),
        )
            .prop_map(|(trigger, count, window_microseconds, to)| Escalation {
                trigger,
                count,
                window_microseconds,
                to,
            })
    }

    proptest! {
        /// Whatever the table (cycles, huge windows, counts out of range, more rules than
        /// the monitor has room for) and whatever the events: every decision is made in a
        /// bounded number of escalations, no restart goes beyond the budget, and counts only
        /// grow.
        #[test]
        fn escalation_terminates_and_budgets_hold(
            actions in proptest::array::uniform9(any_action()),
            rules in proptest::collection::vec(any_rule(), 0..24),
            restart_limit in 0u32..6,
            events in proptest::collection::vec((any_event(), 0u64..1_000_000_000), 1..80),
        ) {
            let rules: &'static [Escalation] = std::boxed::Box::leak(rules.into_boxed_slice());
            let table = HealthPolicy {
                actions,
                escalations: rules,
                restart_limit,
                watchdog_period_microseconds: 0,
                standby: tessera_abi::table::StandbyRole::None,
            };
            let mut monitor = HealthMonitor::new();
            let mut now = 0u64;
            let mut total = 0u64;
            for (event, step) in events {
                now = now.saturating_add(step);
                let before = monitor.event_count(event);
                let decision = monitor.record(&table, event, now, 3_000_000);
                total += 1;
                prop_assert!(usize::from(decision.escalations) <= 1 + HealthAction::COUNT);
                prop_assert!(monitor.restarts() <= restart_limit);
                prop_assert!(monitor.event_count(event) > before);
                if decision.action.is_restart() {
                    prop_assert!(decision.restart_number >= 1);
                    prop_assert!(decision.restart_number <= restart_limit);
                }
                if decision.action == HealthAction::Log {
                    prop_assert!(event.partition_can_continue());
                }
            }
            let counted: u64 = HealthEvent::ALL
                .iter()
                .filter(|&&event| event != HealthEvent::RestartBudgetExhausted)
                .map(|&event| monitor.event_count(event))
                .sum();
            prop_assert!(counted <= total);
        }

        /// Counters saturate instead of wrapping.
        #[test]
        fn counts_never_overflow(event in any_event(), repeats in 1usize..4) {
            let mut monitor = HealthMonitor::new();
            monitor.event_counts = [u64::MAX - 1; HealthEvent::COUNT];
            monitor.action_counts = [u64::MAX - 1; HealthAction::COUNT];
            for now in 0..repeats as u64 {
                monitor.record(&HealthPolicy::HALT, event, now, 1);
            }
            prop_assert_eq!(monitor.event_count(event), u64::MAX);
            prop_assert_eq!(monitor.action_count(HealthAction::Halt), u64::MAX);
        }
    }
}
