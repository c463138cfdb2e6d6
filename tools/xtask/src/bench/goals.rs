//! The goals the issues set for bench figures: each figure's bound, written next to its
//! value in the report and the printed table, so a miss shows as a miss.

use std::fmt;

use serde::Serialize;

use super::report::{format_value, serialize_value};

/// An upper bound on a figure (every goal so far is "at most").
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Goal {
    /// The figure meets the goal when its value is at most this.
    #[serde(serialize_with = "serialize_value")]
    pub at_most: f64,
    /// The issue that set the goal.
    pub set_by: &'static str,
}

impl Goal {
    pub fn met_by(&self, value: f64) -> bool {
        value <= self.at_most
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "<= {}", format_value(self.at_most))
    }
}

const fn at_most(at_most: f64, set_by: &'static str) -> Goal {
    Goal { at_most, set_by }
}

/// Figure name → goal. Issue 14's table, the goals issue 5 set for its figures, issue
/// 15's failover bound and issue 13's steady-state IOTLB invalidations.
pub const GOALS: &[(&str, Goal)] = &[
    ("linux_boot_slowdown", at_most(1.3, "issue 14")),
    ("linux_unassigned_port_exits", at_most(1000.0, "issue 14")),
    ("ipi_exit_instructions", at_most(150.0, "issue 14")),
    ("svm_ipi_exit_instructions", at_most(150.0, "issue 14")),
    (
        "doorbell_round_trip_instructions",
        at_most(200.0, "issue 14"),
    ),
    (
        "hypervisor_boot_instructions",
        at_most(10_000_000.0, "issue 14"),
    ),
    (
        "vmx_hypervisor_boot_instructions",
        at_most(10_000_000.0, "issue 14"),
    ),
    (
        "validation_1000_partitions_10000_regions_ms",
        at_most(50.0, "issue 14"),
    ),
    (
        "validation_growth_500_to_1000_partitions",
        at_most(2.1, "issue 14"),
    ),
    ("interrupt_latency_ratio", at_most(1.0, "issue 14")),
    ("steady_exits_per_second", at_most(0.0, "issue 5")),
    ("exits_per_doorbell", at_most(1.0, "issue 5")),
    // Issue 15 asks for the figure without a number; this bound (10 µs at 2 G
    // instructions per second, counted over all four cores) was set with it.
    ("failover_instructions", at_most(20_000.0, "issue 15")),
    // Issue 13: "IOTLB invalidations per second in steady state (goal 0)".
    (
        "iommu_iotlb_invalidations_after_boot",
        at_most(0.0, "issue 13"),
    ),
];

/// The goal of the figure `name`, if an issue set one.
pub fn goal_of(name: &str) -> Option<Goal> {
    GOALS
        .iter()
        .find(|(figure, _)| *figure == name)
        .map(|(_, goal)| *goal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_bounds_met_at_or_below() {
        let goal = goal_of("ipi_exit_instructions").unwrap();
        assert!(goal.met_by(150.0));
        assert!(!goal.met_by(151.0));
        assert_eq!(goal.to_string(), "<= 150");
        assert_eq!(
            goal_of("linux_boot_slowdown").unwrap().to_string(),
            "<= 1.300"
        );
        assert_eq!(goal_of("image_bytes"), None);
    }

    #[test]
    fn every_goal_names_a_distinct_figure() {
        for (index, (name, _)) in GOALS.iter().enumerate() {
            assert!(
                GOALS[index + 1..].iter().all(|(other, _)| other != name),
                "{name} twice"
            );
        }
    }
}
