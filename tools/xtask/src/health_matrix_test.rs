//! The health monitor's event × action matrix (partitions/health-matrix.toml,
//! docs/health.md): six partitions, each causing one kind of event on every boot, climb the
//! same escalation ladder — `log` (where the event allows it), warm restart, cold restart,
//! halt — and `control`, after reading their health logs with the hypercall, declares a
//! fatal error that its table answers with `machine-power-off`. Checked from the consoles:
//! each partition's decisions in order with the right counts, actions and escalations, the
//! cold restarts, the health logs read by `control` equal to the hypervisor's, `control`'s
//! heartbeat unbroken, and the machine powered off by the health action. A second table
//! (partitions/health-reset.toml) shows the `machine-reset` action: the reset announced,
//! the health logs printed before it, and the machine really reset.

use crate::markers::Marker;
use crate::transcript::{Transcript, HYPERVISOR};

pub const TABLE: &str = "partitions/health-matrix.toml";
/// The `machine-reset` action's table.
pub const RESET_TABLE: &str = "partitions/health-reset.toml";

/// Each partition of the table, its index, and the event it causes; whether `log` is its
/// first rung (events after which the guest may run on).
const PARTITIONS: [(&str, u64, &str, bool); 6] = [
    ("npf", 0, "memory-violation", false),
    ("triple", 1, "shutdown", false),
    ("ins", 2, "unexpected-exit", false),
    ("reset", 3, "reset-request", true),
    ("fatal", 4, "declared-fatal", true),
    ("hang", 5, "watchdog-expiry", true),
];

/// The hypervisor lines (by their start) one partition's ladder must show, in order.
fn ladder(partition: &str, event: &str, logs_first: bool) -> Vec<String> {
    let health = |count: u32, rest: &str| {
        format!("health: partition={partition} event={event} count={count} action={rest}")
    };
    let (planned, first) = if logs_first {
        ("log", 2)
    } else {
        ("warm-restart", 1)
    };
    let mut lines = Vec::new();
    if logs_first {
        lines.push(health(1, "log "));
        lines.push(health(2, "warm-restart escalated-from=log restart=1 "));
    } else {
        lines.push(health(1, "warm-restart restart=1 "));
    }
    lines.push(format!("restarted: partition={partition} restarts=1 "));
    lines.push(health(
        first + 1,
        &format!("cold-restart escalated-from={planned} restart=2 "),
    ));
    lines.push(format!("cold restart: partition={partition} "));
    lines.push(format!("restarted: partition={partition} restarts=2 "));
    lines.push(health(
        first + 2,
        &format!("halt escalated-from={planned} "),
    ));
    lines
}

/// Whether `reader`'s console shows, for each `(index, partition)`, the health log read
/// with the hypercall (`health-log <index>: …`) equal to the one the hypervisor printed at
/// power-off (`health-log: partition=<partition> …`).
pub fn check_health_logs_read(
    transcript: &Transcript,
    hypervisor: &[&str],
    reader: &str,
    reads: &[(u64, &str)],
    failures: &mut Vec<String>,
) {
    for (index, partition) in reads {
        let printed = format!("health-log: partition={partition} ");
        let expected = hypervisor
            .iter()
            .find_map(|line| line.strip_prefix(printed.as_str()));
        let read = format!("health-log {index}: ");
        let got = transcript.lines_of(reader).find_map(|line| {
            line.trim_end()
                .strip_prefix(read.as_str())
                .map(str::to_owned)
        });
        if expected.is_none() || got.as_deref() != expected {
            failures.push(format!(
                "{reader} read the health log of {partition} as {got:?} with the hypercall, \
                 the hypervisor printed {expected:?}"
            ));
        }
    }
}

/// Checks a run of [`TABLE`].
pub fn check_matrix(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    for marker in transcript.markers() {
        if let Marker::Panic { message } = marker {
            failures.push(format!("hypervisor panic: {message}"));
        }
    }
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    for (partition, _, event, logs_first) in PARTITIONS {
        let mut position = 0;
        for wanted in ladder(partition, event, logs_first) {
            match hypervisor[position..]
                .iter()
                .position(|line| line.starts_with(&wanted))
            {
                Some(found) => position += found + 1,
                None => {
                    failures.push(format!("{partition}: no `{wanted}…` in order"));
                    break;
                }
            }
        }
        let prefix = format!("health: partition={partition} ");
        let decisions = hypervisor
            .iter()
            .filter(|line| line.starts_with(&prefix))
            .count();
        let expected = if logs_first { 4 } else { 3 };
        if decisions != expected {
            failures.push(format!(
                "{partition}: {decisions} health decisions, expected {expected}"
            ));
        }
    }
    // control: its heartbeat never missed, then its declared error powers the machine off.
    let control: Vec<&&str> = hypervisor
        .iter()
        .filter(|line| line.starts_with("health: partition=control "))
        .collect();
    if control.len() != 1
        || !control[0].starts_with(
            "health: partition=control event=declared-fatal count=1 action=machine-power-off ",
        )
    {
        failures.push(format!(
            "control's health decisions are {control:?}, expected only declared-fatal → machine-power-off"
        ));
    }
    if !hypervisor.iter().any(|line| {
        line.starts_with("contained: partition=control ")
            && line.ends_with("; powering the machine off")
    }) {
        failures.push("no `contained: partition=control …; powering the machine off`".into());
    }
    if !transcript.lines_of("control").any(|line| {
        line.starts_with("heartbeats: ") && line.ends_with(" sent, every other partition done")
    }) {
        failures.push("control did not report its heartbeats".into());
    }
    let reads: Vec<(u64, &str)> = PARTITIONS
        .iter()
        .map(|&(partition, index, ..)| (index, partition))
        .collect();
    check_health_logs_read(transcript, &hypervisor, "control", &reads, &mut failures);
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected a clean power-off",
            transcript.describe_exit()
        ));
    }
    crate::outcome(failures)
}

/// Checks a run of [`RESET_TABLE`]: `sensor`'s declared error answered by `machine-reset`,
/// every health log printed before the reset, and the reset taking effect (QEMU exited by
/// itself, Bochs booted the hypervisor again).
pub fn check_reset(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    let sequence = [
        "health: partition=sensor event=declared-fatal count=1 action=machine-reset ",
        "contained: partition=sensor ",
        "health-log: partition=sensor restarts=0 ",
        "health-log: partition=bystander restarts=0 ",
        crate::markers::MACHINE_RESET,
    ];
    let mut position = 0;
    for wanted in sequence {
        match hypervisor[position..]
            .iter()
            .position(|line| line.starts_with(wanted))
        {
            Some(found) => position += found + 1,
            None => {
                failures.push(format!("no `{wanted}…` in order"));
                break;
            }
        }
    }
    if !hypervisor.iter().any(|line| {
        line.starts_with("contained: partition=sensor ")
            && line.ends_with("; resetting the machine")
    }) {
        failures.push("no `contained: partition=sensor …; resetting the machine`".into());
    }
    if !hypervisor.iter().any(|line| {
        line.starts_with("health-log: partition=sensor ") && line.contains(" declared-fatal=1 ")
    }) {
        failures.push("sensor's health log does not count its declared error".into());
    }
    if let Some(line) = hypervisor
        .iter()
        .find(|line| line.contains("did not take effect"))
    {
        failures.push(format!("`{line}`"));
    }
    for marker in transcript.markers() {
        if let Marker::Panic { message } = marker {
            failures.push(format!("hypervisor panic: {message}"));
        }
    }
    if transcript.emulator_exit
        != (crate::transcript::EmulatorExit::MachineReset { took_effect: true })
    {
        failures.push(format!(
            "{}, expected the machine reset by the hypervisor",
            transcript.describe_exit()
        ));
    }
    crate::outcome(failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{EmulatorExit, TranscriptLine};

    fn line(source: &str, text: &str) -> TranscriptLine {
        TranscriptLine::new(source, text)
    }

    /// A run as the matrix table gives it, without `skip` (a hypervisor line's start).
    fn run(skip: Option<&str>) -> Transcript {
        let mut lines = Vec::new();
        for (partition, index, event, logs_first) in PARTITIONS {
            for wanted in ladder(partition, event, logs_first) {
                if Some(wanted.as_str()) != skip {
                    lines.push(line(HYPERVISOR, &format!("{wanted}core={index}")));
                }
            }
            let log = format!("restarts=2 {event}=3");
            lines.push(line(
                HYPERVISOR,
                &format!("health-log: partition={partition} {log}"),
            ));
            lines.push(line("control", &format!("health-log {index}: {log}")));
        }
        lines.push(line(HYPERVISOR, "health: partition=control event=declared-fatal count=1 action=machine-power-off core=6"));
        lines.push(line(HYPERVISOR, "contained: partition=control core=6 reason=declared-fatal address=0x63 access=guest code rip=0x0; powering the machine off"));
        lines.push(line(HYPERVISOR, "Tessera: power off"));
        lines.push(line(
            "control",
            "heartbeats: 36 sent, every other partition done",
        ));
        Transcript::qemu(lines)
    }

    #[test]
    fn the_whole_ladder_passes() {
        assert_eq!(check_matrix(&run(None)), Ok(()));
    }

    #[test]
    fn a_missing_rung_fails() {
        let cold = "health: partition=fatal event=declared-fatal count=3 action=cold-restart escalated-from=log restart=2 ";
        assert!(ladder("fatal", "declared-fatal", true).contains(&cold.to_string()));
        assert!(check_matrix(&run(Some(cold))).is_err());
        assert!(check_matrix(&run(Some("cold restart: partition=npf "))).is_err());
    }

    fn reset_run(exit: EmulatorExit) -> Transcript {
        let lines = [
            "health: partition=sensor event=declared-fatal count=1 action=machine-reset core=0",
            "contained: partition=sensor core=0 reason=declared-fatal address=0x5 access=guest code rip=0x0; resetting the machine",
            "health-log: partition=sensor restarts=0 memory-violation=0 declared-fatal=1 device-fault=0",
            "health-log: partition=bystander restarts=0 memory-violation=0 declared-fatal=0 device-fault=0",
            "Tessera: machine reset",
        ];
        Transcript {
            emulator: "Bochs",
            lines: lines.iter().map(|text| line(HYPERVISOR, text)).collect(),
            emulator_exit: exit,
            uart_files: Vec::new(),
        }
    }

    #[test]
    fn a_reset_passes_only_if_it_took_effect() {
        assert_eq!(
            check_reset(&reset_run(EmulatorExit::MachineReset { took_effect: true })),
            Ok(())
        );
        assert!(check_reset(&reset_run(EmulatorExit::MachineReset {
            took_effect: false
        }))
        .is_err());
        assert!(check_reset(&reset_run(EmulatorExit::PoweredOff)).is_err());
    }
}
