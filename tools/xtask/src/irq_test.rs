//! The interrupt system tests (issue 5), checked against a run's transcript: a partition
//! starts its second core by INIT-SIPI-SIPI and delivers an NMI IPI to it; cross-partition
//! IPIs, NMIs, INITs and I/O APIC routes are refused and counted while the victim runs on;
//! a doorbell ping-pong completes its rounds; the 1 kHz timer loop runs without VM exits.
//!
//! The guest's lines are the demo's (userland/demo, its `//!` header); the hypervisor's
//! are the console markers of [`crate::markers`] plus the `exits:` counter line, whose
//! fields are `exits: partition=<name> state=<state> <reason>=<n>… total=<n>
//! <counter>=<n>…`: the exit reasons (each only when its count is not 0), their total, then
//! the other counters (`unassigned-port-accesses`, `dropped-ipis`, `refused-ioapic-writes`,
//! `restarts`, … — the hypervisor adds more over time).

use crate::markers::{Marker, EXITS_PREFIX, STARTED};
use crate::transcript::{Transcript, HYPERVISOR};

/// The table of the interrupt demo: `smp` (cores 0, 1), `timer` (core 2), `attacker`
/// (core 3) and their doorbell channel.
pub const IRQ_DEMO_TABLE: &str = "partitions/irq-demo.toml";
/// The steady-state table: one partition runs the timer loop for 1000 ticks, then powers
/// off.
pub const IRQ_TIMER_TABLE: &str = "partitions/irq-timer.toml";

/// irq-demo: the partition that starts its second core, and that core's APIC ID
/// (`start-core=1`).
pub const SMP_PARTITION: &str = "smp";
pub const SMP_SECOND_CORE: u32 = 1;
/// irq-demo: the word that makes the smp partition send one NMI IPI to its second core.
pub const NMI_IPI_WORD: &str = "nmi-ipi";
/// The NMI exits the smp partition's counters may show (`nmi=`), all on its second core.
/// The hypervisor intercepts every NMI, so the guest's NMI IPI reaches core 1 only through
/// exactly one NMI exit, after which it is injected: at least 1. Before that, the start-up's
/// INIT and StartUp IPIs (one or two: the second is sent only if the core has not arrived
/// 200 µs after the first) reach core 1 as the hypervisor's own NMI signals while it waits in
/// the hypervisor; they stay pending (SVM: GIF clear) or arm an immediate exit (VMX) and
/// cost at most one NMI exit each, usually one in all, at its first guest entry: without
/// `nmi-ipi` a run shows `nmi=1`, with it `nmi=2` (QEMU and Bochs alike). At most 3 + 1.
pub const SMP_NMI_EXITS: std::ops::RangeInclusive<u64> = 1..=4;
/// irq-demo: who attacks whom (`attack-ipi=2 attack-ioapic=3,10,2` on core 3; core 2 is
/// the timer partition's).
pub const ATTACKER: &str = "attacker";
pub const VICTIM: &str = "timer";
/// The attacker's cross-partition IPIs: a fixed IPI, an NMI and an INIT, one destination
/// each; every one must be dropped and counted.
pub const ATTACK_IPIS: u64 = 3;
/// The attacker's I/O APIC routing attempts (`attack-ioapic=3,10,2`): a foreign pin toward
/// itself and its own pin toward a foreign core. Each unmasks an entry it may not, and each
/// is refused (and counted) once; the writes that leave an entry masked are not refusals.
pub const ATTACK_IOAPIC_ATTEMPTS: u64 = 2;
/// irq-demo: the doorbell pair (`ping=0,100` on the timer partition, `pong=0` on the
/// attacker's) and its rounds.
pub const PINGER: &str = "timer";
pub const PONGER: &str = "attacker";
pub const PING_ROUNDS: u64 = 100;
/// irq-timer: the partition and the loop's length (`timer-loop=1000`, 1 kHz).
pub const TIMER_PARTITION: &str = "timer";
pub const TIMER_TICKS: u64 = 1000;

/// The exits a demo partition that runs the timer loop may still cause — all at start-up,
/// around the loop or when it powers off, none per tick — with the most of each it may
/// cause and why. An exit per tick (or per interrupt, EOI, timer write) would exceed
/// these bounds many times over: the loop has [`TIMER_TICKS`] ticks.
pub const TIMER_PARTITION_EXITS: &[(&str, u64, &str)] = &[
    (
        "cpuid",
        32,
        "CPUID at start: the runtime's feature and hypervisor-leaf queries (x2APIC, \
         TSC-deadline, Tessera's signature, the TSC frequency leaf 0x40000010)",
    ),
    (
        "msr-read",
        4,
        "IA32_APIC_BASE reads by x2APIC enable (UART interrupt set-up, timer); EFER read \
         by the 32-to-64-bit entry on VMX",
    ),
    (
        "msr-write",
        1,
        "IA32_EFER write (LME) by the 32-to-64-bit entry",
    ),
    (
        "hypercall",
        3,
        "OwnExitCount before and after the loop, PowerOff",
    ),
    (
        "ioapic",
        16,
        "I/O APIC page accesses routing the UART's pin for interrupt-driven output",
    ),
];

/// The numeric fields of a partition's `exits:` line (the last one, if it was printed
/// more than once), in order; `None` when the hypervisor printed none.
pub fn exit_counters(transcript: &Transcript, partition: &str) -> Option<Vec<(String, u64)>> {
    let line = transcript
        .lines_of(HYPERVISOR)
        .filter(|line| {
            matches!(crate::markers::parse(line), Some(Marker::Exits { partition: name }) if name == partition)
        })
        .last()?;
    let fields = line.trim_end().strip_prefix(EXITS_PREFIX)?;
    Some(
        fields
            .split_whitespace()
            .filter_map(|field| {
                let (key, value) = field.split_once('=')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// One counter of an `exits:` line.
pub fn counter(counters: &[(String, u64)], name: &str) -> Option<u64> {
    counters
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| *value)
}

/// The field of an `exits:` line that ends the exit reasons: everything after it is another
/// kind of counter.
const REASONS_END: &str = "total";

/// The exit reasons of an `exits:` line with their counts: the fields before `total=`.
pub fn exit_reasons(counters: &[(String, u64)]) -> Vec<(&str, u64)> {
    counters
        .iter()
        .take_while(|(key, _)| key != REASONS_END)
        .map(|(key, value)| (key.as_str(), *value))
        .collect()
}

/// Failures every interrupt test shares: a hypervisor panic or refusal, a run that did
/// not end in a clean power-off.
fn common_failures(transcript: &Transcript, failures: &mut Vec<String>) {
    for marker in transcript.markers() {
        match marker {
            Marker::Panic { message } => failures.push(format!("hypervisor panic: {message}")),
            Marker::Refused { reason } => failures.push(format!("hypervisor refused: {reason}")),
            _ => {}
        }
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected a clean power-off",
            transcript.describe_exit()
        ));
    }
}

/// The number of times the hypervisor contained `partition`.
fn containments(transcript: &Transcript, partition: &str) -> usize {
    transcript
        .markers()
        .filter(
            |marker| matches!(marker, Marker::Contained { partition: name } if name == partition),
        )
        .count()
}

/// Whether `partition` printed a line that is `wanted` (after trimming).
fn printed(transcript: &Transcript, partition: &str, wanted: &str) -> bool {
    transcript
        .lines_of(partition)
        .any(|line| line.trim_end() == wanted)
}

/// (a) `partition` started its core `core` by INIT-SIPI-SIPI: the started core printed
/// `core <core> up`, the boot core `second core started`, and the hypervisor reports the
/// core's start (`started: partition=<partition> core=<core>`).
pub fn check_second_core(
    transcript: &Transcript,
    partition: &str,
    core: u32,
) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    common_failures(transcript, &mut failures);
    let up = format!("core {core} up");
    if !printed(transcript, partition, &up) {
        failures.push(format!("partition {partition} did not print `{up}`"));
    }
    if !printed(transcript, partition, "second core started") {
        let reason = transcript
            .lines_of(partition)
            .find(|line| line.starts_with("start-core:"))
            .map(|line| format!(" (it printed `{}`)", line.trim_end()))
            .unwrap_or_default();
        failures.push(format!(
            "partition {partition} did not print `second core started`{reason}"
        ));
    }
    let started = format!("{STARTED}{partition} core={core} ");
    if !transcript
        .lines_of(HYPERVISOR)
        .any(|line| line.contains(&started))
    {
        failures.push(format!(
            "the hypervisor did not report `{}` (the core's start at the SIPI vector)",
            started.trim_end()
        ));
    }
    let contained = containments(transcript, partition);
    if contained != 0 {
        failures.push(format!(
            "partition {partition} was contained ({contained} times)"
        ));
    }
    crate::outcome(failures)
}

/// (a′) `partition`'s NMI IPI to its core `core` was delivered: the started core printed
/// `core <core> received NMI` (from its NMI handler's flag), then the boot core, which waited
/// for that line, `nmi-ipi: delivered`; no exception stopped the partition; and the
/// hypervisor counted the NMI exits of [`SMP_NMI_EXITS`].
pub fn check_nmi_ipi(
    transcript: &Transcript,
    partition: &str,
    core: u32,
) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    common_failures(transcript, &mut failures);
    let lines: Vec<&str> = transcript.lines_of(partition).map(str::trim_end).collect();
    let position = |wanted: &str| lines.iter().position(|line| *line == wanted);
    let received = format!("core {core} received NMI");
    let received_at = position(&received);
    if received_at.is_none() {
        let reason = lines
            .iter()
            .find(|line| line.starts_with(&format!("core {core}: ")))
            .map(|line| format!(" (it printed `{line}`)"))
            .unwrap_or_default();
        failures.push(format!(
            "partition {partition} did not print `{received}`{reason}"
        ));
    }
    // The boot core's lines start with the command-line word (`nmi-ipi: delivered`).
    let delivered = format!("{NMI_IPI_WORD}: delivered");
    match position(&delivered) {
        Some(delivered_at) => {
            if received_at.is_some_and(|received_at| received_at > delivered_at) {
                failures.push(format!(
                    "partition {partition} printed `{delivered}` before `{received}`"
                ));
            }
        }
        None => {
            let reason = lines
                .iter()
                .find(|line| line.starts_with(&format!("{NMI_IPI_WORD}:")))
                .map(|line| format!(" (it printed `{line}`)"))
                .unwrap_or_default();
            failures.push(format!(
                "partition {partition} did not print `{delivered}`{reason}"
            ));
        }
    }
    if let Some(line) = lines.iter().find(|line| line.starts_with("exception: ")) {
        failures.push(format!("partition {partition} took an exception: `{line}`"));
    }
    match exit_counters(transcript, partition) {
        None => failures.push(format!(
            "no exit counters (`exits: partition={partition}`) on the console"
        )),
        Some(counters) => {
            let nmis = counter(&counters, "nmi").unwrap_or(0);
            if !SMP_NMI_EXITS.contains(&nmis) {
                failures.push(format!(
                    "partition {partition}: nmi={nmis} in the hypervisor's counters, expected \
                     {} to {} (the forwarded NMI IPI's exit and the start-up signals')",
                    SMP_NMI_EXITS.start(),
                    SMP_NMI_EXITS.end()
                ));
            }
        }
    }
    crate::outcome(failures)
}

/// (b) The attacker's IPIs and I/O APIC routes were refused and counted: it printed
/// `attack-ipi: sent` and `attack-ioapic: refused` after [`ATTACK_IOAPIC_ATTEMPTS`]
/// attempts, its counters show exactly [`ATTACK_IPIS`] dropped IPIs and one refused write
/// per attempt, neither partition was contained, and the victim ran on to a normal stop
/// (`done`, status 0).
pub fn check_attack(
    transcript: &Transcript,
    attacker: &str,
    victim: &str,
) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    common_failures(transcript, &mut failures);
    if !printed(transcript, attacker, "attack-ipi: sent") {
        failures.push(format!(
            "partition {attacker} did not print `attack-ipi: sent`"
        ));
    }
    let attempts = transcript
        .lines_of(attacker)
        .filter(|line| line.starts_with("attack-ioapic: pin "))
        .count() as u64;
    if attempts != ATTACK_IOAPIC_ATTEMPTS {
        failures.push(format!(
            "partition {attacker} made {attempts} I/O APIC routing attempts \
             (`attack-ioapic: pin …`), expected {ATTACK_IOAPIC_ATTEMPTS}"
        ));
    }
    if printed(transcript, attacker, "attack-ioapic: ACCEPTED") {
        failures.push(format!(
            "the I/O APIC accepted a route of partition {attacker} (`attack-ioapic: ACCEPTED`)"
        ));
    } else if !printed(transcript, attacker, "attack-ioapic: refused") {
        failures.push(format!(
            "partition {attacker} did not print `attack-ioapic: refused`"
        ));
    }
    match exit_counters(transcript, attacker) {
        None => failures.push(format!(
            "no exit counters (`exits: partition={attacker}`) on the console"
        )),
        Some(counters) => {
            for (name, expected) in [
                ("dropped-ipis", ATTACK_IPIS),
                ("refused-ioapic-writes", ATTACK_IOAPIC_ATTEMPTS),
            ] {
                match counter(&counters, name) {
                    Some(count) if count == expected => {}
                    Some(count) => failures.push(format!(
                        "partition {attacker}: {name}={count}, expected {expected}"
                    )),
                    None => failures.push(format!(
                        "partition {attacker}: no {name}= in its exit counters"
                    )),
                }
            }
        }
    }
    for partition in [attacker, victim] {
        let contained = containments(transcript, partition);
        if contained != 0 {
            failures.push(format!(
                "partition {partition} was contained ({contained} times)"
            ));
        }
    }
    if !printed(transcript, victim, "done") {
        failures.push(format!("the victim {victim} did not print `done`"));
    }
    let statuses: Vec<Option<i64>> = transcript
        .markers()
        .filter_map(|marker| match marker {
            Marker::Stopped { partition, status } if partition == victim => Some(status),
            _ => None,
        })
        .collect();
    match statuses.as_slice() {
        [Some(0)] => {}
        [] => failures.push(format!("no `stopped: partition={victim}` marker")),
        [status] => failures.push(format!(
            "the victim {victim} stopped with status {}, expected 0",
            status.map_or("?".to_string(), |status| status.to_string())
        )),
        _ => failures.push(format!(
            "the victim {victim} stopped {} times",
            statuses.len()
        )),
    }
    crate::outcome(failures)
}

/// (c) The doorbell ping-pong completed `rounds` round trips: `ping-pong: rounds=<rounds> …`
/// from the pinger and `pong: answered <rounds>` from the ponger.
pub fn check_ping_pong(
    transcript: &Transcript,
    pinger: &str,
    ponger: &str,
    rounds: u64,
) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    common_failures(transcript, &mut failures);
    let pinged = transcript.lines_of(pinger).find_map(|line| {
        line.strip_prefix("ping-pong: rounds=")?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    match pinged {
        Some(done) if done == rounds => {}
        Some(done) => failures.push(format!(
            "partition {pinger} completed {done} ping-pong rounds, expected {rounds}"
        )),
        None => failures.push(format!(
            "partition {pinger} did not print `ping-pong: rounds={rounds} …`"
        )),
    }
    let answered = transcript.lines_of(ponger).find_map(|line| {
        line.trim_end()
            .strip_prefix("pong: answered ")?
            .parse::<u64>()
            .ok()
    });
    match answered {
        Some(count) if count == rounds => {}
        Some(count) => failures.push(format!(
            "partition {ponger} answered {count} pings, expected {rounds}"
        )),
        None => failures.push(format!(
            "partition {ponger} did not print `pong: answered {rounds}`"
        )),
    }
    crate::outcome(failures)
}

/// (d) The timer loop ran `ticks` ticks without a VM exit: the guest's own count
/// (`exits-during-loop=0`, OwnExitCount around the loop) and the hypervisor's counters at
/// power-off, which may hold only the start-up exits of [`TIMER_PARTITION_EXITS`], each
/// within its bound.
pub fn check_timer_loop(
    transcript: &Transcript,
    partition: &str,
    ticks: u64,
) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    common_failures(transcript, &mut failures);
    let field = |line: &str, name: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    match transcript
        .lines_of(partition)
        .find(|line| line.starts_with("timer: ticks="))
    {
        None => {
            let reason = transcript
                .lines_of(partition)
                .find(|line| line.starts_with("timer:"))
                .map(|line| format!(" (last: `{}`)", line.trim_end()))
                .unwrap_or_default();
            failures.push(format!(
                "partition {partition} did not print `timer: ticks=… exits-during-loop=…`{reason}"
            ));
        }
        Some(line) => {
            match field(line, "ticks").and_then(|text| text.parse::<u64>().ok()) {
                Some(done) if done >= ticks => {}
                done => failures.push(format!(
                    "partition {partition}: {} timer ticks, expected {ticks}",
                    done.map_or("no number of".to_string(), |done| done.to_string())
                )),
            }
            match field(line, "exits-during-loop").as_deref() {
                Some("0") => {}
                Some(exits) => failures.push(format!(
                    "partition {partition}: exits-during-loop={exits}, expected 0"
                )),
                None => failures.push(format!(
                    "partition {partition}: no exits-during-loop= in `{}`",
                    line.trim_end()
                )),
            }
        }
    }
    match exit_counters(transcript, partition) {
        None => failures.push(format!(
            "no exit counters (`exits: partition={partition}`) on the console"
        )),
        Some(counters) => {
            for (reason, count) in exit_reasons(&counters) {
                match TIMER_PARTITION_EXITS
                    .iter()
                    .find(|(name, ..)| *name == reason)
                {
                    None => failures.push(format!(
                        "partition {partition}: {reason}={count} in the hypervisor's counters; \
                         a timer-loop partition causes only {}",
                        TIMER_PARTITION_EXITS
                            .iter()
                            .map(|(name, ..)| *name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some((_, most, cause)) if count > *most => failures.push(format!(
                        "partition {partition}: {reason}={count} in the hypervisor's counters, \
                         at most {most} expected ({cause})"
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    crate::outcome(failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::test_lines::replaced;
    use crate::transcript::EmulatorExit;

    fn transcript(lines: &[(&str, &str)]) -> Transcript {
        crate::transcript::test_lines::transcript("QEMU", lines, EmulatorExit::Exited(0))
    }

    /// The lines of a correct irq-demo run (abridged), as QEMU printed them.
    fn irq_demo() -> Vec<(&'static str, &'static str)> {
        vec![
            (HYPERVISOR, "Tessera 0.1.0 backend=svm table=irq-demo.toml"),
            ("timer", "partition timer: hello from core 2"),
            ("attacker", "partition attacker: hello from core 3"),
            ("smp", "partition smp: hello from core 0"),
            (
                HYPERVISOR,
                "refused: partition=attacker core=3 IOAPIC write PinNotOwned { pin: 3 }",
            ),
            ("attacker", "attack-ipi: fixed vector 0xee, NMI and INIT to core 2"),
            ("attacker", "attack-ipi: sent"),
            (
                "attacker",
                "attack-ioapic: pin 3 (not mine, toward me): before=0x10000 wrote=0x3000000000000ee read-back=0x10000",
            ),
            (
                "attacker",
                "attack-ioapic: pin 10 (mine, toward a core outside): before=0x10000 wrote=0x2000000000000ee read-back=0x200000000010000",
            ),
            ("attacker", "attack-ioapic: refused"),
            ("smp", "core 1 up"),
            (
                HYPERVISOR,
                "started: partition=smp core=1 entry=0x8000 tsc=662421350",
            ),
            ("smp", "second core started"),
            ("smp", "core 1 received NMI"),
            ("smp", "nmi-ipi: delivered"),
            (
                "timer",
                "timer: ticks=500 period=2600728 max-jitter=11362268 exits-during-loop=0",
            ),
            (
                "timer",
                "ping-pong: rounds=100 round-trip-min=53560 round-trip-mean=770013 exits-during=100",
            ),
            ("timer", "done"),
            (
                HYPERVISOR,
                "stopped: partition=attacker status=0 reason=stop-self core=3",
            ),
            (
                HYPERVISOR,
                "stopped: partition=timer status=0 reason=stop-self core=2",
            ),
            ("attacker", "pong: answered 100"),
            ("attacker", "done"),
            ("smp", "all other partitions stopped"),
            (HYPERVISOR, "power-off: requested by smp"),
            (
                HYPERVISOR,
                "exits: partition=smp state=Running cpuid=14 msr-read=3 msr-write=6 hypercall=131 ioapic=8 nmi=2 total=164 unassigned-port-accesses=0 dropped-ipis=0 refused-ioapic-writes=0 restarts=0 suppressed-log-lines=0",
            ),
            (
                HYPERVISOR,
                "exits: partition=timer state=Stopped cpuid=15 msr-read=3 msr-write=1 hypercall=106 ioapic=8 total=133 unassigned-port-accesses=0 dropped-ipis=0 refused-ioapic-writes=0 restarts=0 suppressed-log-lines=0",
            ),
            (
                HYPERVISOR,
                "exits: partition=attacker state=Stopped cpuid=10 msr-read=3 msr-write=4 hypercall=103 ioapic=28 total=148 unassigned-port-accesses=0 dropped-ipis=3 refused-ioapic-writes=2 restarts=0 suppressed-log-lines=0",
            ),
            (HYPERVISOR, "Tessera: power off"),
        ]
    }

    /// The lines of a correct irq-timer run, as QEMU printed them.
    fn irq_timer() -> Vec<(&'static str, &'static str)> {
        vec![
            (HYPERVISOR, "Tessera 0.1.0 backend=svm table=irq-timer.toml"),
            ("timer", "partition timer: hello from core 0"),
            (
                "timer",
                "timer: tsc-hz=999931000 (cpuid-0x40000010) apic-timer-hz=999929800 periodic-ticks=1000 tsc-deadline-ticks=0",
            ),
            (
                "timer",
                "timer: ticks=1000 period=999931 max-jitter=1 exits-during-loop=0",
            ),
            ("timer", "powering off"),
            (HYPERVISOR, "power-off: requested by timer"),
            (
                HYPERVISOR,
                "exits: partition=timer state=Running cpuid=14 msr-read=2 msr-write=1 hypercall=3 ioapic=8 total=28 unassigned-port-accesses=0 dropped-ipis=0 refused-ioapic-writes=0 restarts=0 suppressed-log-lines=0 refused-user-hypercalls=0 dropped-doorbells=0",
            ),
            (HYPERVISOR, "Tessera: power off"),
        ]
    }

    fn without(
        lines: Vec<(&'static str, &'static str)>,
        old: &str,
    ) -> Vec<(&'static str, &'static str)> {
        lines
            .into_iter()
            .filter(|(_, text)| !text.contains(old))
            .collect()
    }

    fn second_core(lines: &[(&str, &str)]) -> Result<(), Vec<String>> {
        check_second_core(&transcript(lines), SMP_PARTITION, SMP_SECOND_CORE)
    }

    fn nmi_ipi(lines: &[(&str, &str)]) -> Result<(), Vec<String>> {
        check_nmi_ipi(&transcript(lines), SMP_PARTITION, SMP_SECOND_CORE)
    }

    fn attack(lines: &[(&str, &str)]) -> Result<(), Vec<String>> {
        check_attack(&transcript(lines), ATTACKER, VICTIM)
    }

    fn ping_pong(lines: &[(&str, &str)]) -> Result<(), Vec<String>> {
        check_ping_pong(&transcript(lines), PINGER, PONGER, PING_ROUNDS)
    }

    fn timer_loop(lines: &[(&str, &str)]) -> Result<(), Vec<String>> {
        check_timer_loop(&transcript(lines), TIMER_PARTITION, TIMER_TICKS)
    }

    #[test]
    fn a_correct_run_passes_every_check() {
        assert_eq!(second_core(&irq_demo()), Ok(()));
        assert_eq!(nmi_ipi(&irq_demo()), Ok(()));
        assert_eq!(attack(&irq_demo()), Ok(()));
        assert_eq!(ping_pong(&irq_demo()), Ok(()));
        assert_eq!(timer_loop(&irq_timer()), Ok(()));
    }

    #[test]
    fn reads_the_exit_counters() {
        let run = transcript(&irq_timer());
        let counters = exit_counters(&run, "timer").unwrap();
        assert_eq!(counter(&counters, "dropped-ipis"), Some(0));
        assert_eq!(counter(&counters, "total"), Some(28));
        assert_eq!(
            exit_reasons(&counters),
            [
                ("cpuid", 14),
                ("msr-read", 2),
                ("msr-write", 1),
                ("hypercall", 3),
                ("ioapic", 8)
            ]
        );
        assert_eq!(exit_counters(&run, "other"), None);
        // A guest cannot print the hypervisor's counters.
        let faked = transcript(&[("timer", "exits: partition=timer total=0")]);
        assert_eq!(exit_counters(&faked, "timer"), None);
    }

    #[test]
    fn the_second_core_check_fails_without_the_start() {
        assert_eq!(
            second_core(&without(irq_demo(), "core 1 up")),
            Err(vec!["partition smp did not print `core 1 up`".to_string()])
        );
        let failed = replaced(
            irq_demo(),
            "second core started",
            "start-core: core 1 did not start: Timeout",
        );
        let failed = without(failed, "started: partition=smp core=1");
        assert_eq!(
            second_core(&failed),
            Err(vec![
                "partition smp did not print `second core started` (it printed \
                 `start-core: core 1 did not start: Timeout`)"
                    .to_string(),
                "the hypervisor did not report `started: partition=smp core=1` (the core's \
                 start at the SIPI vector)"
                    .to_string(),
            ])
        );
        // The guest's own claim is not enough: the line must be the hypervisor's.
        let mut guest_claims = without(irq_demo(), "started: partition=smp core=1");
        guest_claims.push(("smp", "started: partition=smp core=1 entry=0x8000"));
        assert_eq!(second_core(&guest_claims).unwrap_err().len(), 1);
    }

    #[test]
    fn the_nmi_check_fails_when_the_nmi_is_missing_or_dropped() {
        // The run before `nmi-ipi` existed: neither line.
        let missing = without(irq_demo(), "received NMI");
        let missing = without(missing, "nmi-ipi:");
        assert_eq!(
            nmi_ipi(&missing),
            Err(vec![
                "partition smp did not print `core 1 received NMI`".to_string(),
                "partition smp did not print `nmi-ipi: delivered`".to_string(),
            ])
        );
        // The hypervisor dropped it: the started core timed out, the boot core stopped.
        let dropped = replaced(irq_demo(), "received NMI", "core 1: no NMI arrived");
        let dropped = replaced(
            dropped,
            "nmi-ipi: delivered",
            "nmi-ipi: NOT delivered (no core took an NMI)",
        );
        let dropped = replaced(
            dropped,
            "exits: partition=smp",
            "exits: partition=smp state=Stopped cpuid=14 msr-write=6 nmi=1 total=21",
        );
        assert_eq!(
            nmi_ipi(&dropped),
            Err(vec![
                "partition smp did not print `core 1 received NMI` (it printed `core 1: no NMI \
                 arrived`)"
                    .to_string(),
                "partition smp did not print `nmi-ipi: delivered` (it printed `nmi-ipi: NOT \
                 delivered (no core took an NMI)`)"
                    .to_string(),
            ])
        );
        // Injected before the handler was installed: the runtime's fatal path.
        let mut fatal = without(irq_demo(), "received NMI");
        fatal = without(fatal, "nmi-ipi:");
        fatal.insert(
            13,
            (
                "smp",
                "exception: vector 2 (NMI) rip=0x1012a4 error-code=0x0 cr2=0x0 core=1",
            ),
        );
        let found = nmi_ipi(&fatal).unwrap_err();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found[2],
            "partition smp took an exception: `exception: vector 2 (NMI) rip=0x1012a4 \
             error-code=0x0 cr2=0x0 core=1`"
        );
        // The guest's word alone is not enough: the hypervisor must have seen an NMI exit.
        let uncounted = replaced(
            irq_demo(),
            "exits: partition=smp",
            "exits: partition=smp state=Running cpuid=14 msr-write=6 total=20",
        );
        assert_eq!(
            nmi_ipi(&uncounted),
            Err(vec![
                "partition smp: nmi=0 in the hypervisor's counters, expected 1 to 4 (the \
                 forwarded NMI IPI's exit and the start-up signals')"
                    .to_string()
            ])
        );
        // Out of order: the boot core did not wait for the started core's report.
        let mut early = irq_demo();
        let delivered = early
            .iter()
            .position(|(_, text)| *text == "nmi-ipi: delivered")
            .unwrap();
        early.swap(delivered, delivered - 1);
        assert_eq!(
            nmi_ipi(&early),
            Err(vec![
                "partition smp printed `nmi-ipi: delivered` before `core 1 received NMI`"
                    .to_string()
            ])
        );
    }

    #[test]
    fn the_attack_check_fails_when_an_attempt_gets_through_or_is_not_counted() {
        // One IPI delivered instead of dropped: two counted.
        let delivered = replaced(
            irq_demo(),
            "exits: partition=attacker",
            "exits: partition=attacker state=Stopped cpuid=10 total=10 dropped-ipis=2 refused-ioapic-writes=2",
        );
        assert_eq!(
            attack(&delivered),
            Err(vec![
                "partition attacker: dropped-ipis=2, expected 3".to_string()
            ])
        );
        // A route accepted: the guest says so and fewer refusals are counted.
        let accepted = replaced(
            irq_demo(),
            "attack-ioapic: refused",
            "attack-ioapic: ACCEPTED",
        );
        let accepted = replaced(
            accepted,
            "exits: partition=attacker",
            "exits: partition=attacker state=Stopped total=10 dropped-ipis=3 refused-ioapic-writes=1",
        );
        assert_eq!(
            attack(&accepted),
            Err(vec![
                "the I/O APIC accepted a route of partition attacker (`attack-ioapic: ACCEPTED`)"
                    .to_string(),
                "partition attacker: refused-ioapic-writes=1, expected 2".to_string(),
            ])
        );
        // The attack never ran.
        let silent = without(irq_demo(), "attack-");
        assert_eq!(attack(&silent).unwrap_err().len(), 3);
    }

    #[test]
    fn the_attack_check_fails_when_the_victim_suffers() {
        // The victim took the attacker's vector 0xee and stopped with status 6.
        let hit = without(irq_demo(), "stopped: partition=timer");
        let mut hit = without(hit, "done");
        hit.push(("timer", "unexpected interrupt: vector 0xee"));
        hit.push((
            HYPERVISOR,
            "stopped: partition=timer status=6 reason=stop-self core=2",
        ));
        assert_eq!(
            attack(&hit),
            Err(vec![
                "the victim timer did not print `done`".to_string(),
                "the victim timer stopped with status 6, expected 0".to_string(),
            ])
        );
        let mut contained = irq_demo();
        contained.insert(
            12,
            (
                HYPERVISOR,
                "contained: partition=timer core=2 reason=init address=0x0",
            ),
        );
        assert_eq!(
            attack(&contained),
            Err(vec!["partition timer was contained (1 times)".to_string()])
        );
    }

    #[test]
    fn the_ping_pong_check_fails_on_missing_rounds() {
        let short = replaced(irq_demo(), "pong: answered", "pong: answered 99");
        assert_eq!(
            ping_pong(&short),
            Err(vec![
                "partition attacker answered 99 pings, expected 100".to_string()
            ])
        );
        let no_ping = without(irq_demo(), "ping-pong:");
        assert_eq!(
            ping_pong(&no_ping),
            Err(vec![
                "partition timer did not print `ping-pong: rounds=100 …`".to_string()
            ])
        );
        let mut hung = irq_demo();
        hung.retain(|(_, text)| !text.starts_with("pong:"));
        let mut run = transcript(&hung);
        run.emulator_exit = EmulatorExit::TimedOut { seconds: 180 };
        assert_eq!(
            check_ping_pong(&run, PINGER, PONGER, PING_ROUNDS),
            Err(vec![
                "timed out after 180 s, expected a clean power-off".to_string(),
                "partition attacker did not print `pong: answered 100`".to_string(),
            ])
        );
    }

    #[test]
    fn the_timer_check_fails_on_exits_seen_by_the_guest_or_the_hypervisor() {
        let guest_saw = replaced(
            irq_timer(),
            "timer: ticks=",
            "timer: ticks=1000 period=999931 max-jitter=1 exits-during-loop=2000",
        );
        assert_eq!(
            timer_loop(&guest_saw),
            Err(vec![
                "partition timer: exits-during-loop=2000, expected 0".to_string()
            ])
        );
        // The guest's count says 0, but the hypervisor counted an exit per tick.
        let hypervisor_saw = replaced(
            irq_timer(),
            "exits: partition=timer",
            "exits: partition=timer state=Running cpuid=14 msr-read=2 msr-write=1001 hypercall=3 ioapic=8 total=1028 dropped-ipis=0",
        );
        assert_eq!(
            timer_loop(&hypervisor_saw),
            Err(vec![
                "partition timer: msr-write=1001 in the hypervisor's counters, at most 1 \
                 expected (IA32_EFER write (LME) by the 32-to-64-bit entry)"
                    .to_string()
            ])
        );
        let interrupt_exits = replaced(
            irq_timer(),
            "exits: partition=timer",
            "exits: partition=timer state=Running cpuid=14 hypercall=3 intr=1000 total=1017",
        );
        assert!(timer_loop(&interrupt_exits).unwrap_err()[0]
            .starts_with("partition timer: intr=1000 in the hypervisor's counters; a timer-loop"));
        let few_ticks = replaced(
            irq_timer(),
            "timer: ticks=",
            "timer: ticks=12 period=999931 max-jitter=1 exits-during-loop=0",
        );
        assert_eq!(
            timer_loop(&few_ticks),
            Err(vec![
                "partition timer: 12 timer ticks, expected 1000".to_string()
            ])
        );
        let failed = without(irq_timer(), "timer: ticks=");
        let failed = without(failed, "exits: partition=timer");
        assert_eq!(
            timer_loop(&failed),
            Err(vec![
                "partition timer did not print `timer: ticks=… exits-during-loop=…` (last: \
                 `timer: tsc-hz=999931000 (cpuid-0x40000010) apic-timer-hz=999929800 \
                 periodic-ticks=1000 tsc-deadline-ticks=0`)"
                    .to_string(),
                "no exit counters (`exits: partition=timer`) on the console".to_string(),
            ])
        );
    }

    #[test]
    fn the_constants_match_the_tables() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let demo = std::fs::read_to_string(root.join(IRQ_DEMO_TABLE)).unwrap();
        for word in [
            format!("name={SMP_PARTITION} "),
            format!("start-core={SMP_SECOND_CORE} "),
            format!(" {NMI_IPI_WORD} "),
            format!("name={ATTACKER} "),
            "attack-ipi=2 ".to_string(),
            "attack-ioapic=3,10,2 ".to_string(),
            format!("name={PINGER} "),
            format!("ping=0,{PING_ROUNDS}"),
            "pong=0".to_string(),
        ] {
            assert!(demo.contains(&word), "{IRQ_DEMO_TABLE} has no `{word}`");
        }
        let timer = std::fs::read_to_string(root.join(IRQ_TIMER_TABLE)).unwrap();
        assert!(timer.contains(&format!("name={TIMER_PARTITION} ")));
        assert!(timer.contains(&format!("timer-loop={TIMER_TICKS} ")));
    }
}
