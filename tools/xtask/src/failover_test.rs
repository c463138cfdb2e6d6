//! The hot-standby failover system test (partitions/failover.toml, docs/health.md): the
//! primary `io` writes numbered lines on com1 and crashes, is restarted, continues and
//! crashes again, which escalates to the standby action; the standby `spare` takes over
//! com1 and continues after the last line the UART acknowledged; `rt`'s heartbeat goes on
//! across the failover. Checked from the consoles: the hypervisor's decision and takeover
//! lines in order, the numbered lines on com1 without gap or repeat and from the right
//! writer, the takeover's ports and pins, `rt`'s beats before the crash and after the
//! standby's first device access with no health event for `rt` (its watchdog would have
//! raised one for any gap longer than a period), and a clean power-off.

use crate::irq_test::{counter, exit_counters};
use crate::markers::Marker;
use crate::transcript::{Transcript, HYPERVISOR};

/// One failover table and what its run must show.
pub struct Scenario {
    pub table: &'static str,
    /// The primary's lines; the standby writes the rest up to [`LAST_LINE`].
    primary_lines: u64,
    /// Hypervisor lines (by their start, and a part they must contain) that must appear
    /// in this order.
    sequence: &'static [(&'static str, &'static str)],
    /// Whether the primary's core was running its guest when the failover was decided,
    /// so that the hypervisor had to stop it with an NMI (counted as an `nmi` exit).
    primary_stopped_by_nmi: bool,
}

/// The last numbered line (the standby's command line).
const LAST_LINE: u64 = 10;

/// The takeover and the end of the run, common to both scenarios.
const TAKEOVER: (&str, &str) = (
    "takeover: partition=spare from=io ports=1 pins=1 functions=0 channels=0 vector=0xf0 ",
    "",
);
/// The crashing primary's escalation ladder: its first memory violation restarts it, the
/// second escalates to the standby (the crash scenarios share it).
const FIRST_FAULT_RESTARTS: (&str, &str) = (
    "health: partition=io event=memory-violation count=1 action=warm-restart restart=1",
    "",
);
const RESTARTED: (&str, &str) = ("restarted: partition=io restarts=1 ", "");
const SECOND_FAULT_ESCALATES: (&str, &str) = (
    "health: partition=io event=memory-violation count=2 action=standby escalated-from=warm-restart",
    "",
);
const PRIMARY_CONTAINED: (&str, &str) = ("contained: partition=io ", STANDBY_TAKES_OVER);
const STANDBY_STOPPED: (&str, &str) = ("stopped: partition=spare status=0 ", "");
const POWER_OFF: (&str, &str) = ("power-off: requested by rt", "");
const STANDBY_TAKES_OVER: &str = "; halted; standby spare takes over";

/// partitions/failover-channel.toml: the crash of [`CRASH`], with the channel `progress`
/// shared by the primary and `rt`, not by the standby: it moves at the takeover (its 16
/// leaves out of the failed primary's stage-2 tables, into the standby's, where they were
/// absent while it waited), and the standby reads the primary's last line number there.
/// With the move switched off the standby's first read of the channel is a stage-2 fault
/// (it is contained, and lines 7–10 never come).
pub const CHANNEL: Scenario = Scenario {
    table: "partitions/failover-channel.toml",
    primary_lines: 6,
    sequence: &[
        FIRST_FAULT_RESTARTS,
        RESTARTED,
        SECOND_FAULT_ESCALATES,
        PRIMARY_CONTAINED,
        (
            "takeover: partition=spare channel=progress from=io leaves=16 mapped-before-in-taker=0 unmapped-from-failed=16",
            "",
        ),
        (
            "takeover: partition=spare from=io ports=1 pins=1 functions=0 channels=1 vector=0xf0 ",
            "",
        ),
        STANDBY_STOPPED,
        POWER_OFF,
    ],
    primary_stopped_by_nmi: false,
};

/// partitions/failover.toml: the primary faults (two boots of 3 lines), the first fault
/// restarts it, the second escalates to standby.
pub const CRASH: Scenario = Scenario {
    table: "partitions/failover.toml",
    primary_lines: 6,
    sequence: &[
        FIRST_FAULT_RESTARTS,
        RESTARTED,
        SECOND_FAULT_ESCALATES,
        PRIMARY_CONTAINED,
        TAKEOVER,
        STANDBY_STOPPED,
        POWER_OFF,
    ],
    primary_stopped_by_nmi: false,
};

/// partitions/failover-hang.toml: the primary hangs after 3 lines; its watchdog, on the
/// watchdog core, decides the failover, and the hypervisor stops the primary's running
/// core with an NMI before the takeover.
pub const HANG: Scenario = Scenario {
    table: "partitions/failover-hang.toml",
    primary_lines: 3,
    sequence: &[
        (
            "health: partition=io event=watchdog-expiry count=1 action=standby seen-by=watchdog-core",
            "",
        ),
        ("contained: partition=io core=0 reason=watchdog ", STANDBY_TAKES_OVER),
        TAKEOVER,
        STANDBY_STOPPED,
        POWER_OFF,
    ],
    primary_stopped_by_nmi: true,
};

/// The number after `key=` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `seq <n> from <writer>` lines of com1, in order.
fn numbered_lines(transcript: &Transcript) -> Vec<(u64, String)> {
    transcript
        .lines_of("io")
        .filter_map(|line| {
            let rest = line.trim_end().strip_prefix("seq ")?;
            let (number, writer) = rest.split_once(" from ")?;
            Some((number.parse().ok()?, writer.to_owned()))
        })
        .collect()
}

/// Each `(start, part)` of `sequence` must match a hypervisor line after the previous one's.
fn expect_in_order(hypervisor: &[&str], sequence: &[(&str, &str)], failures: &mut Vec<String>) {
    let mut position = 0;
    for &(start, part) in sequence {
        match hypervisor[position..]
            .iter()
            .position(|line| line.starts_with(start) && line.contains(part))
        {
            Some(found) => position += found + 1,
            None => {
                failures.push(format!("no hypervisor line `{start}…{part}` in order"));
                break;
            }
        }
    }
}

/// None of `partitions` may have had a health event.
fn no_health_event(hypervisor: &[&str], partitions: &[&str], failures: &mut Vec<String>) {
    for partition in partitions {
        let prefix = format!("health: partition={partition} ");
        if let Some(line) = hypervisor.iter().find(|line| line.starts_with(&prefix)) {
            failures.push(format!("a health event for {partition}: `{line}`"));
        }
    }
}

/// Checks a run of `scenario`'s table.
pub fn check_failover(transcript: &Transcript, scenario: &Scenario) -> Result<(), Vec<String>> {
    let primary_lines = scenario.primary_lines;
    let mut failures = Vec::new();
    for marker in transcript.markers() {
        if let Marker::Panic { message } = marker {
            failures.push(format!("hypervisor panic: {message}"));
        }
    }
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    expect_in_order(&hypervisor, scenario.sequence, &mut failures);
    no_health_event(&hypervisor, &["rt", "spare"], &mut failures);

    // com1: 1..=5 from io, then 6..=10 from spare, nothing lost, nothing twice.
    let lines = numbered_lines(transcript);
    let expected: Vec<(u64, String)> = (1..=LAST_LINE)
        .map(|number| {
            let writer = if number <= primary_lines {
                "io"
            } else {
                "spare"
            };
            (number, writer.to_owned())
        })
        .collect();
    if lines != expected {
        failures.push(format!(
            "com1's numbered lines are {:?}, expected 1..={primary_lines} from io, then \
             {}..={LAST_LINE} from spare",
            lines
                .iter()
                .map(|(number, writer)| format!("{number}:{writer}"))
                .collect::<Vec<_>>(),
            primary_lines + 1
        ));
    }
    let resumed = format!("the primary's last acknowledged line is {primary_lines}");
    if !transcript
        .lines_of("io")
        .any(|line| line.starts_with("spare: took over at tsc=") && line.contains(&resumed))
    {
        failures.push(format!("no `spare: took over … {resumed}` on com1"));
    }

    // The primary's pin: refused to the standby before, handed over masked to its core.
    if !transcript.lines_of("io").any(|line| {
        line == "spare: ioapic pin 4: before takeover refused; after: masked=true destination=1 (this core 1), routed"
    }) {
        failures.push("no `spare: ioapic pin 4: before takeover refused; after: masked=true destination=1 (this core 1), routed` on com1".into());
    }
    // The failover's time span, from the standby's report.
    let span = transcript
        .lines_of("io")
        .find(|line| line.starts_with("takeover: failover-ticks="))
        .and_then(|line| {
            Some((
                number_after(line, "crash-tsc=")?,
                number_after(line, "first-device-access-tsc=")?,
            ))
        });
    match span {
        None => failures.push(
            "no `takeover: failover-ticks=… crash-tsc=… first-device-access-tsc=…` on com1".into(),
        ),
        Some((crash, first_access)) => {
            let beats: Vec<u64> = transcript
                .lines_of("rt")
                .filter(|line| line.starts_with("beat "))
                .filter_map(|line| number_after(line, "tsc="))
                .collect();
            if !beats.iter().any(|&tsc| tsc < crash) || !beats.iter().any(|&tsc| tsc > first_access)
            {
                failures.push(format!(
                    "rt's heartbeats {beats:?} do not span the failover (crash at tsc={crash}, \
                     standby's first device access at tsc={first_access})"
                ));
            }
        }
    }
    if !transcript.lines_of("rt").any(|line| {
        line.starts_with("heartbeats: ") && line.ends_with("sent, every other partition done")
    }) {
        failures.push("rt did not report its heartbeats".into());
    }
    // Every UART access of the standby passed through: its port map was rebuilt.
    let counters = exit_counters(transcript, "spare").unwrap_or_default();
    match counter(&counters, "unassigned-port-accesses") {
        Some(0) => {}
        other => failures.push(format!(
            "spare: unassigned-port-accesses={other:?} in its exit counters, expected 0"
        )),
    }
    if scenario.primary_stopped_by_nmi {
        let primary = exit_counters(transcript, "io").unwrap_or_default();
        if counter(&primary, "nmi").unwrap_or(0) == 0 {
            failures.push("io: no `nmi` exit in its counters: its running core was not stopped by the hypervisor's NMI".into());
        }
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected a clean power-off",
            transcript.describe_exit()
        ));
    }
    crate::outcome(failures)
}

/// partitions/failover-rejoin.toml: the table, and the turns of its pair — each member
/// writes 3 lines, then faults and fails over; the failed one rejoins as the standby.
pub const REJOIN_TABLE: &str = "partitions/failover-rejoin.toml";
const REJOIN_TURNS: [&str; 4] = ["io", "spare", "io", "spare"];
const REJOIN_LINES_PER_TURN: u64 = 3;

/// The hypervisor's lines of one failover of the rejoin table: `from` fails, `to` (sent
/// `vector`) takes over, holding its second core in the hypervisor meanwhile, `from`
/// rejoins as its standby and is restarted for the `restarts`-th time; `count` is `from`'s
/// memory-violation count.
fn rejoin_failover(
    from: &str,
    to: &str,
    vector: &str,
    (count, restarts, functions): (u32, u32, u32),
) -> [(String, String); 5] {
    [
        (
            format!(
                "health: partition={from} event=memory-violation count={count} action=standby "
            ),
            String::new(),
        ),
        (
            format!("contained: partition={from} "),
            format!("; halted; standby {to} takes over, then this one rejoins as its standby"),
        ),
        (
            format!(
                "takeover: partition={to} from={from} ports=1 pins=1 functions={functions} channels=0 vector={vector} held-cores=1 "
            ),
            String::new(),
        ),
        (
            format!("rejoin: partition={from} restarts as the standby of {to}"),
            String::new(),
        ),
        (
            format!("restarted: partition={from} restarts={restarts} "),
            String::new(),
        ),
    ]
}

/// Checks a run of partitions/failover-rejoin.toml: three failovers in order, each failed
/// member rejoining and later taking the devices back; com1's lines 1–12 from the members
/// in turn, none lost or repeated; each takeover refused the pin before and routed it
/// after; no partition's port access unassigned; `rt`'s heartbeat unbroken; a clean
/// power-off.
pub fn check_rejoin(transcript: &Transcript) -> Result<(), Vec<String>> {
    crate::outcome(rejoin_failures(transcript, 0))
}

/// partitions/failover-pci.toml: the rejoin table with QEMU's `edu` among the pair's devices.
pub const PCI_TABLE: &str = "partitions/failover-pci.toml";

/// Checks a run of partitions/failover-pci.toml: everything [`check_rejoin`] checks (each
/// takeover now moving one function), and for the `edu`: all-ones to each member while it
/// waits, driven through BAR0 and DMA to the active member's own RAM landing and reading
/// back in each of the four turns, and no IOMMU fault.
pub fn check_rejoin_pci(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = rejoin_failures(transcript, 1);
    for (name, boot) in [("spare", 0), ("io", 1), ("spare", 1)] {
        let expected = format!("{name}: pci 00:03.0 while waiting id=0xffffffff");
        if !transcript
            .lines_of("io")
            .any(|line| line.trim_end() == expected)
        {
            failures.push(format!("no `{expected}` on com1 (boot {boot})"));
        }
    }
    for expected in [
        "pci: edu 00:03.0 bar0=0xfea00000 id=0x010000ed liveness=ok factorial(5)=120",
        "dma: 0x300000 write=landed read=pattern",
    ] {
        let count = transcript
            .lines_of("io")
            .filter(|line| line.trim_end() == expected)
            .count();
        if count != 4 {
            failures.push(format!(
                "`{expected}` {count} times on com1, expected 4 (once per turn holding the devices)"
            ));
        }
    }
    iommu_faults(transcript, &mut failures);
    crate::outcome(failures)
}

fn rejoin_failures(transcript: &Transcript, functions: u32) -> Vec<String> {
    let mut failures = Vec::new();
    for marker in transcript.markers() {
        if let Marker::Panic { message } = marker {
            failures.push(format!("hypervisor panic: {message}"));
        }
    }
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    let mut sequence: Vec<(String, String)> = Vec::new();
    sequence.extend(rejoin_failover("io", "spare", "0xf0", (1, 1, functions)));
    sequence.extend(rejoin_failover("spare", "io", "0xf1", (1, 1, functions)));
    sequence.extend(rejoin_failover("io", "spare", "0xf0", (2, 2, functions)));
    let sequence: Vec<(&str, &str)> = sequence
        .iter()
        .map(|(start, part)| (start.as_str(), part.as_str()))
        .collect();
    expect_in_order(&hypervisor, &sequence, &mut failures);
    // spare finishes after the last takeover; io's restart may end before or after that
    // (on Bochs a reload takes longer than spare's three lines).
    let rejoined = "rejoin: partition=io restarts as the standby of spare";
    expect_in_order(
        &hypervisor,
        &[
            (rejoined, ""),
            (rejoined, ""),
            ("stopped: partition=spare status=0 ", ""),
            ("power-off: requested by rt", ""),
        ],
        &mut failures,
    );
    if !hypervisor
        .iter()
        .any(|line| line.starts_with("stopped: partition=io status=0 "))
    {
        failures.push(
            "io, waiting as the standby when the pair was done, did not stop with status 0".into(),
        );
    }
    no_health_event(&hypervisor, &["rt"], &mut failures);

    let lines = numbered_lines(transcript);
    let expected: Vec<(u64, String)> = REJOIN_TURNS
        .iter()
        .enumerate()
        .flat_map(|(turn, writer)| {
            let first = turn as u64 * REJOIN_LINES_PER_TURN + 1;
            (first..first + REJOIN_LINES_PER_TURN).map(move |number| (number, writer.to_string()))
        })
        .collect();
    if lines != expected {
        failures.push(format!(
            "com1's numbered lines are {:?}, expected 1–3 io, 4–6 spare, 7–9 io, 10–12 spare",
            lines
                .iter()
                .map(|(number, writer)| format!("{number}:{writer}"))
                .collect::<Vec<_>>()
        ));
    }
    // Each takeover: the pin refused while waiting, routable once taken over.
    for (name, boot) in [("spare", 0), ("io", 1), ("spare", 1)] {
        let expected = format!(
            "{name}: boot {boot}, took over; ioapic pin 4 before takeover refused, after routed"
        );
        if !transcript
            .lines_of("io")
            .any(|line| line.trim_end() == expected)
        {
            failures.push(format!("no `{expected}` on com1"));
        }
    }
    // The taking member's second core then reached the UART (its ports passed through).
    for (name, core, times) in [("io", 4, 2), ("spare", 5, 2)] {
        let prefix = format!("{name}: core {core} read the UART's line status ");
        let count = transcript
            .lines_of("io")
            .filter(|line| line.starts_with(&prefix))
            .count();
        if count != times {
            failures.push(format!(
                "`{prefix}…` {count} times on com1, expected {times} (once per turn holding com1)"
            ));
        }
    }
    for partition in ["io", "spare"] {
        let counters = exit_counters(transcript, partition).unwrap_or_default();
        match counter(&counters, "unassigned-port-accesses") {
            Some(0) => {}
            other => failures.push(format!(
                "{partition}: unassigned-port-accesses={other:?} in its exit counters, expected 0"
            )),
        }
    }
    if !transcript.lines_of("rt").any(|line| {
        line.starts_with("heartbeats: ") && line.ends_with("sent, every other partition done")
    }) {
        failures.push("rt did not report its heartbeats".into());
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected a clean power-off",
            transcript.describe_exit()
        ));
    }
    failures
}

/// Every IOMMU fault the hypervisor reported (a blocked DMA or interrupt, a partition's
/// fault count, the power-off summary), as a failure.
fn iommu_faults(transcript: &Transcript, failures: &mut Vec<String>) {
    for line in transcript.lines_of(HYPERVISOR) {
        let line = line.trim_end();
        let fault = line.starts_with("iommu: DMA blocked")
            || line.starts_with("iommu: interrupt blocked")
            || (line.starts_with("iommu: partition=") && !line.ends_with(" faults=0"))
            || (line.starts_with("iommu: blocked-dma=")
                && !matches!(
                    line,
                    "iommu: blocked-dma=0 other-events=0"
                        | "iommu: blocked-dma=0 other-events=0 blocked-interrupts=0"
                ));
        if fault {
            failures.push(format!("an IOMMU fault: `{line}`"));
        }
    }
}

/// partitions/failover-nic.toml: a stock Linux primary driving QEMU's e1000e crashes, a
/// stock Linux standby rescans its bus, finds the moved NIC and continues the traffic.
pub const NIC_TABLE: &str = "partitions/failover-nic.toml";

/// The hypervisor's lines of the NIC failover, in order: the primary's kernel panic writes
/// the reset register, the health table says `standby`, the takeover moves the UART's
/// and the NIC's ports, com1's pin and the NIC; the standby powers its partition off and
/// `rt` the machine.
const NIC_SEQUENCE: &[(&str, &str)] = &[
    (
        "health: partition=net event=reset-request count=1 action=standby",
        "",
    ),
    (
        "contained: partition=net ",
        "; halted; standby spare takes over",
    ),
    (
        "takeover: partition=spare from=net ports=2 pins=1 functions=1 channels=0 vector=0xfd ",
        "",
    ),
    (
        "stopped: partition=spare status=0 ",
        "reason=acpi-power-off",
    ),
    POWER_OFF,
];

/// What one Linux member printed about its traffic on the NIC (init.sh, `nic_traffic`):
/// the e1000e checks of linux-e1000e-qemu, and the driver bound to 00:02.0.
fn nic_traffic_failures(name: &str, lines: &[&str], failures: &mut Vec<String>) {
    crate::pci_test::e1000e_traffic_failures(name, lines, failures);
    let bound = "nic-function: 0000:00:02.0 driver=e1000e";
    if !lines.contains(&bound) {
        failures.push(format!("{name}: no `{bound}`"));
    }
}

/// Checks a run of partitions/failover-nic.toml: the hypervisor's decision, takeover and
/// power-off lines in order, no health event for `spare` or `rt`, no IOMMU fault; `net`'s
/// traffic done before its kernel panicked; `spare` waiting before the takeover, finding
/// the NIC by a rescan only after it, and its traffic done with the same driver on the
/// moved function; `rt`'s heartbeats (watched by the hypervisor) from before the crash to
/// after the standby found the NIC; a clean power-off.
pub fn check_nic(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    for marker in transcript.markers() {
        if let Marker::Panic { message } = marker {
            failures.push(format!("hypervisor panic: {message}"));
        }
    }
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    expect_in_order(&hypervisor, NIC_SEQUENCE, &mut failures);
    no_health_event(&hypervisor, &["rt", "spare"], &mut failures);
    iommu_faults(transcript, &mut failures);
    let asked = hypervisor
        .iter()
        .find(|line| line.starts_with("takeover: partition=spare from=net "))
        .and_then(|line| number_after(line, "asked-tsc="));

    let net: Vec<&str> = transcript.lines_of("net").map(str::trim_end).collect();
    nic_traffic_failures("net", &net, &mut failures);
    let done = net
        .iter()
        .position(|line| *line == "TESSERA-LINUX: nic-primary done");
    let panicked = net
        .iter()
        .position(|line| line.contains("Kernel panic - not syncing: sysrq triggered crash"));
    if !matches!((done, panicked), (Some(done), Some(panicked)) if done < panicked) {
        failures.push(format!(
            "net: `TESSERA-LINUX: nic-primary done` (line {done:?}) must come before its \
             kernel panic (line {panicked:?})"
        ));
    }

    let spare: Vec<&str> = transcript.lines_of("spare").map(str::trim_end).collect();
    nic_traffic_failures("spare", &spare, &mut failures);
    if !spare.contains(&"TESSERA-LINUX: nic-standby done") {
        failures.push("spare: no `TESSERA-LINUX: nic-standby done`".into());
    }
    let waiting = spare
        .iter()
        .find(|line| line.starts_with("TESSERA-LINUX: standby waiting for a NIC "))
        .and_then(|line| number_after(line, "tsc="));
    let found = spare
        .iter()
        .find(|line| line.starts_with("TESSERA-LINUX: standby found eth0 after "))
        .and_then(|line| number_after(line, "tsc="));
    match (waiting, asked, found) {
        (Some(waiting), Some(asked), Some(found)) if waiting < asked && asked < found => {}
        other => failures.push(format!(
            "spare must wait (tsc) before the takeover was asked and find eth0 after it: \
             (waiting, asked, found) = {other:?}"
        )),
    }
    let beats: Vec<u64> = transcript
        .lines_of("rt")
        .filter(|line| line.starts_with("beat "))
        .filter_map(|line| number_after(line, "tsc="))
        .collect();
    if let (Some(asked), Some(found)) = (asked, found) {
        if !beats.iter().any(|&tsc| tsc < asked) || !beats.iter().any(|&tsc| tsc > found) {
            failures.push(format!(
                "rt's {} heartbeats do not span the failover (asked at tsc={asked}, the \
                 standby found the NIC at tsc={found})",
                beats.len()
            ));
        }
    }
    if !transcript.lines_of("rt").any(|line| {
        line.starts_with("heartbeats: ") && line.ends_with("sent, every other partition done")
    }) {
        failures.push("rt did not report its heartbeats".into());
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected a clean power-off",
            transcript.describe_exit()
        ));
    }
    crate::outcome(failures)
}

/// The host's end of the NIC failover's record stream (docs/health.md, "A Linux standby
/// takes over a NIC"): a minimal HTTP server on the loopback, which QEMU's user network
/// reaches as 10.0.2.2. `GET /record/N` appends N if it is the next record (answer `ack N`;
/// a repeat of the last one is answered `ack N` too and counted; anything else is counted
/// as out of order and gets no acknowledgement); `GET /last` answers `last M`, the last
/// record held. What it received is checked after the run ([`check_stream`]).
pub struct StreamCollector {
    port: u16,
    state: std::sync::Arc<std::sync::Mutex<StreamState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the collector has received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The records, in the order they were appended.
    pub records: Vec<u64>,
    /// Requests for a record it already held (the sender did not see the acknowledgement).
    pub repeats: u64,
    /// Requests for a record that was not the next one.
    pub out_of_order: Vec<u64>,
}

impl StreamState {
    /// The answer to one request line (`GET <path> HTTP/1.x`); `None` for an unknown path.
    fn answer(&mut self, request_line: &str) -> Option<String> {
        let path = request_line.split_whitespace().nth(1)?;
        let last = self.records.last().copied().unwrap_or(0);
        if path == "/last" {
            return Some(format!("last {last}"));
        }
        let record: u64 = path.strip_prefix("/record/")?.parse().ok()?;
        if record == last + 1 {
            self.records.push(record);
        } else if record == last && last != 0 {
            self.repeats += 1;
        } else {
            self.out_of_order.push(record);
            return Some(format!("out of order: last {last}"));
        }
        Some(format!("ack {record}"))
    }
}

impl StreamCollector {
    /// Listens on an ephemeral loopback port.
    pub fn start() -> anyhow::Result<Self> {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(StreamState::default()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    };
                    // A sender that crashed mid-request must not hold the collector.
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                    let mut reader = BufReader::new(&stream);
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        continue;
                    }
                    let answer = match state.lock() {
                        Ok(mut state) => state.answer(&request_line),
                        Err(_) => None,
                    };
                    let (status, body) = match answer {
                        Some(body) => ("200 OK", body),
                        None => ("404 Not Found", String::from("unknown")),
                    };
                    let _ = write!(
                        &stream,
                        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            })
        };
        Ok(Self {
            port,
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops listening and returns what was received.
    pub fn finish(mut self) -> StreamState {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.state
            .lock()
            .map(|state| state.clone())
            .unwrap_or_default()
    }
}

/// Records the standby sends after it resumes (userland/linux/init.sh).
const STANDBY_RECORDS: u64 = 10;

/// Checks the record stream across the failover: the collector holds 1…N with no gap and
/// nothing out of order; `net` had at least one record acknowledged before its crash, and
/// every record it saw acknowledged is at or below the point where `spare` resumed (no
/// acknowledged record lost); `spare` resumed right after the collector's last record and
/// had its records acknowledged up to N.
pub fn check_stream(transcript: &Transcript, collected: &StreamState) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let acked = |partition: &str| -> Vec<u64> {
        transcript
            .lines_of(partition)
            .filter_map(|line| line.trim_end().strip_prefix("TESSERA-LINUX: stream acked "))
            .filter_map(|record| record.parse().ok())
            .collect()
    };
    let (net_acked, spare_acked) = (acked("net"), acked("spare"));
    let resumed_after: Option<u64> = transcript
        .lines_of("spare")
        .find_map(|line| {
            line.trim_end()
                .strip_prefix("TESSERA-LINUX: stream resumes after ")
        })
        .and_then(|last| last.parse().ok());
    let expected: Vec<u64> = (1..=collected.records.len() as u64).collect();
    if collected.records != expected || !collected.out_of_order.is_empty() {
        failures.push(format!(
            "the collector's records are not 1…N in order: {:?}, out of order {:?}",
            collected.records, collected.out_of_order
        ));
    }
    let Some(resumed_after) = resumed_after else {
        failures.push("spare: no `TESSERA-LINUX: stream resumes after M`".into());
        return crate::outcome(failures);
    };
    let net_last = net_acked.iter().copied().max();
    match net_last {
        None => failures.push("net: no record acknowledged before its crash".into()),
        Some(last) if last > resumed_after => failures.push(format!(
            "net had record {last} acknowledged, but spare resumed after {resumed_after}: lost"
        )),
        Some(_) => {}
    }
    let wanted: Vec<u64> = (resumed_after + 1..=resumed_after + STANDBY_RECORDS).collect();
    if spare_acked != wanted {
        failures.push(format!(
            "spare's acknowledged records are {spare_acked:?}, expected {wanted:?}"
        ));
    }
    if collected.records.len() as u64 != resumed_after + STANDBY_RECORDS {
        failures.push(format!(
            "the collector holds {} records, expected {} (resumed after {resumed_after}, then {STANDBY_RECORDS})",
            collected.records.len(),
            resumed_after + STANDBY_RECORDS
        ));
    }
    crate::outcome(failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::TranscriptLine;

    fn line(source: &str, text: &str) -> TranscriptLine {
        TranscriptLine::new(source, text)
    }

    /// A run as the failover table gives it, with com1's numbered lines `numbered`.
    fn run(numbered: &[(u64, &str)], beats: &[u64]) -> Transcript {
        let mut lines = vec![
            line(HYPERVISOR, "health: partition=io event=memory-violation count=1 action=warm-restart restart=1 core=0"),
            line(HYPERVISOR, "restarted: partition=io restarts=1 core=0"),
            line(HYPERVISOR, "health: partition=io event=memory-violation count=2 action=standby escalated-from=warm-restart core=0"),
            line(HYPERVISOR, "contained: partition=io core=0 reason=npf address=0x8000000 access=read rip=0x1011aa; halted; standby spare takes over"),
            line(HYPERVISOR, "takeover: partition=spare from=io ports=1 pins=1 functions=0 channels=0 vector=0xf0 asked-tsc=1 ticks-since-asked=1 core=1"),
            line(HYPERVISOR, "stopped: partition=spare status=0 reason=stop-self core=1"),
            line(HYPERVISOR, "power-off: requested by rt"),
            line(HYPERVISOR, "exits: partition=spare state=Stopped total=14 unassigned-port-accesses=0 restarts=0"),
            line(HYPERVISOR, "Tessera: power off"),
            line("io", "spare: took over at tsc=200; the primary's last acknowledged line is 6"),
            line("io", "spare: ioapic pin 4: before takeover refused; after: masked=true destination=1 (this core 1), routed"),
            line("io", "takeover: failover-ticks=100 crash-tsc=100 first-device-access-tsc=200"),
            line("rt", "heartbeats: 9 sent, every other partition done"),
        ];
        for (number, writer) in numbered {
            lines.push(line("io", &format!("seq {number} from {writer}")));
        }
        for tsc in beats {
            lines.push(line("rt", &format!("beat 1 tsc={tsc}")));
        }
        Transcript::qemu(lines)
    }

    const GOOD: [(u64, &str); 10] = [
        (1, "io"),
        (2, "io"),
        (3, "io"),
        (4, "io"),
        (5, "io"),
        (6, "io"),
        (7, "spare"),
        (8, "spare"),
        (9, "spare"),
        (10, "spare"),
    ];

    #[test]
    fn a_clean_failover_passes() {
        assert_eq!(check_failover(&run(&GOOD, &[50, 150, 250]), &CRASH), Ok(()));
    }

    #[test]
    fn a_lost_line_a_repeat_or_a_stopped_heartbeat_fails() {
        let mut lost = GOOD.to_vec();
        lost.remove(6);
        assert!(check_failover(&run(&lost, &[50, 250]), &CRASH).is_err());
        let mut repeated = GOOD.to_vec();
        repeated.insert(6, (6, "spare"));
        assert!(check_failover(&run(&repeated, &[50, 250]), &CRASH).is_err());
        // No beat after the standby's first device access.
        assert!(check_failover(&run(&GOOD, &[50, 150]), &CRASH).is_err());
    }
    /// A run of the rejoin table with com1's numbered lines `numbered`.
    fn rejoin_run(numbered: &[(u64, &str)]) -> Transcript {
        let mut lines = Vec::new();
        for (from, to, vector, count, restarts) in [
            ("io", "spare", "0xf0", 1, 1),
            ("spare", "io", "0xf1", 1, 1),
            ("io", "spare", "0xf0", 2, 2),
        ] {
            lines.push(line(HYPERVISOR, &format!("health: partition={from} event=memory-violation count={count} action=standby core=0")));
            lines.push(line(HYPERVISOR, &format!("contained: partition={from} core=0 reason=npf address=0x8000000 access=read rip=0x1; halted; standby {to} takes over, then this one rejoins as its standby")));
            lines.push(line(HYPERVISOR, &format!("takeover: partition={to} from={from} ports=1 pins=1 functions=0 channels=0 vector={vector} held-cores=1 asked-tsc=1 ticks-since-asked=1 core=1")));
            lines.push(line(
                HYPERVISOR,
                &format!("rejoin: partition={from} restarts as the standby of {to}"),
            ));
            lines.push(line(
                HYPERVISOR,
                &format!("restarted: partition={from} restarts={restarts} core=0"),
            ));
        }
        for text in [
            "stopped: partition=spare status=0 reason=stop-self core=1",
            "stopped: partition=io status=0 reason=stop-self core=0",
            "power-off: requested by rt",
            "exits: partition=io state=Stopped total=75 unassigned-port-accesses=0 restarts=2",
            "exits: partition=spare state=Stopped total=79 unassigned-port-accesses=0 restarts=1",
            "Tessera: power off",
        ] {
            lines.push(line(HYPERVISOR, text));
        }
        for (name, boot) in [("spare", 0), ("io", 1), ("spare", 1)] {
            lines.push(line("io", &format!("{name}: boot {boot}, took over; ioapic pin 4 before takeover refused, after routed")));
        }
        for (name, core) in [("io", 4), ("spare", 5), ("io", 4), ("spare", 5)] {
            lines.push(line(
                "io",
                &format!("{name}: core {core} read the UART's line status 0x60"),
            ));
        }
        for (number, writer) in numbered {
            lines.push(line("io", &format!("seq {number} from {writer}")));
        }
        lines.push(line(
            "rt",
            "heartbeats: 11 sent, every other partition done",
        ));
        Transcript::qemu(lines)
    }

    fn rejoin_lines() -> Vec<(u64, &'static str)> {
        (1..=12)
            .map(|number| {
                (
                    number,
                    if (number - 1) / 3 % 2 == 0 {
                        "io"
                    } else {
                        "spare"
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_pair_that_swaps_roles_twice_passes() {
        assert_eq!(check_rejoin(&rejoin_run(&rejoin_lines())), Ok(()));
    }

    #[test]
    fn a_rejoin_run_with_a_lost_line_or_the_wrong_writer_fails() {
        let mut lost = rejoin_lines();
        lost.remove(7);
        assert!(check_rejoin(&rejoin_run(&lost)).is_err());
        let mut wrong = rejoin_lines();
        wrong[7].1 = "spare";
        assert!(check_rejoin(&rejoin_run(&wrong)).is_err());
    }

    /// The lines of a passing failover-nic run (abridged), with the standby's lines `spare`.
    fn nic_run(spare: &[&str]) -> Transcript {
        let traffic = [
            "TESSERA-LINUX: e1000e loaded",
            "udhcpc: TESSERA-LINUX: lease 10.0.2.15/24 router 10.0.2.2 dev eth0",
            "ping: 5 packets transmitted, 5 packets received, 0% packet loss",
            "net-interrupts:  25:         21   PCI-MSI 32768-edge      eth0-rx-0",
            "net-interrupts:  26:         26   PCI-MSI 32769-edge      eth0-tx-0",
            "net-interrupts:  27:          3   PCI-MSI 32770-edge      eth0",
            "nic-function: 0000:00:02.0 driver=e1000e",
            "msi-irqs: 25 msix",
            "msi-irqs: 26 msix",
            "msi-irqs: 27 msix",
        ];
        let mut lines = vec![line("rt", "beat 1 tsc=50")];
        lines.extend(traffic.iter().map(|text| line("net", text)));
        lines.extend([
            line("net", "TESSERA-LINUX: nic-primary done"),
            line("net", "[   31.880577] Kernel panic - not syncing: sysrq triggered crash"),
            line(HYPERVISOR, "health: partition=net event=reset-request count=1 action=standby core=1"),
            line(HYPERVISOR, "contained: partition=net core=1 reason=reset-request address=0x0 access=reset register rip=0x0; halted; standby spare takes over"),
            line(HYPERVISOR, "takeover: partition=spare from=net ports=2 pins=1 functions=1 channels=0 vector=0xfd held-cores=0 asked-tsc=100 ticks-since-asked=1 core=2"),
        ]);
        lines.extend(spare.iter().map(|text| line("spare", text)));
        lines.extend([
            line("rt", "beat 9 tsc=300"),
            line(
                HYPERVISOR,
                "stopped: partition=spare status=0 reason=acpi-power-off core=2",
            ),
            line("rt", "heartbeats: 9 sent, every other partition done"),
            line(HYPERVISOR, "power-off: requested by rt"),
            line(HYPERVISOR, "iommu: blocked-dma=0 other-events=0"),
            line(HYPERVISOR, "Tessera: power off"),
        ]);
        Transcript::qemu(lines)
    }

    fn standby_lines(found: &str) -> Vec<String> {
        let mut lines = vec![
            "TESSERA-LINUX: e1000e loaded".to_owned(),
            "TESSERA-LINUX: standby waiting for a NIC tsc=40".to_owned(),
            found.to_owned(),
            "udhcpc: TESSERA-LINUX: lease 10.0.2.15/24 router 10.0.2.2 dev eth0".to_owned(),
            "ping: 5 packets transmitted, 5 packets received, 0% packet loss".to_owned(),
            "net-interrupts:   1:         22   PCI-MSI 32768-edge      eth0-rx-0".to_owned(),
            "net-interrupts:   2:         21   PCI-MSI 32769-edge      eth0-tx-0".to_owned(),
            "nic-function: 0000:00:02.0 driver=e1000e".to_owned(),
        ];
        lines
            .extend(["msi-irqs: 1 msix", "msi-irqs: 2 msix", "msi-irqs: 3 msix"].map(String::from));
        lines.push("TESSERA-LINUX: nic-standby done".to_owned());
        lines
    }

    #[test]
    fn a_linux_standby_that_finds_the_nic_after_the_takeover_passes() {
        let lines = standby_lines("TESSERA-LINUX: standby found eth0 after 28 rescans tsc=200");
        let spare: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(check_nic(&nic_run(&spare)), Ok(()));
    }

    #[test]
    fn a_linux_standby_without_the_nic_or_finding_it_too_early_fails() {
        // Found before the takeover was asked: the function was not absent while it waited.
        let early = standby_lines("TESSERA-LINUX: standby found eth0 after 1 rescans tsc=60");
        let spare: Vec<&str> = early.iter().map(String::as_str).collect();
        assert!(check_nic(&nic_run(&spare)).is_err());
        let none = [
            "TESSERA-LINUX: e1000e loaded",
            "TESSERA-LINUX: standby waiting for a NIC tsc=40",
            "TESSERA-LINUX: standby found no NIC after 60 rescans",
        ];
        assert!(check_nic(&nic_run(&none)).is_err());
    }

    #[test]
    fn the_collector_acknowledges_only_the_next_record() {
        let mut state = StreamState::default();
        assert_eq!(
            state.answer("GET /last HTTP/1.1\r\n").as_deref(),
            Some("last 0")
        );
        assert_eq!(
            state.answer("GET /record/1 HTTP/1.1\r\n").as_deref(),
            Some("ack 1")
        );
        assert_eq!(
            state.answer("GET /record/2 HTTP/1.1\r\n").as_deref(),
            Some("ack 2")
        );
        // A repeat of the last (its acknowledgement was lost) is acknowledged again.
        assert_eq!(
            state.answer("GET /record/2 HTTP/1.1\r\n").as_deref(),
            Some("ack 2")
        );
        assert_eq!(
            state.answer("GET /record/5 HTTP/1.1\r\n").as_deref(),
            Some("out of order: last 2")
        );
        assert_eq!(state.answer("GET /other HTTP/1.1\r\n"), None);
        assert_eq!(state.records, vec![1, 2]);
        assert_eq!((state.repeats, state.out_of_order.clone()), (1, vec![5]));
    }

    #[test]
    fn the_collector_answers_over_http() {
        use std::io::{Read, Write};
        let collector = StreamCollector::start().unwrap();
        let ask = |path: &str| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", collector.port())).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: 10.0.2.2\r\n\r\n").unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        };
        assert!(ask("/record/1").ends_with("\r\n\r\nack 1"));
        assert!(ask("/last").ends_with("\r\n\r\nlast 1"));
        assert_eq!(collector.finish().records, vec![1]);
    }

    /// A run's stream lines: `net` acknowledged 1…`net_acked`, `spare` resumed after
    /// `resumed` and had `spare_acked` acknowledged.
    fn stream_run(net_acked: u64, resumed: u64, spare_acked: &[u64]) -> Transcript {
        let mut lines: Vec<TranscriptLine> = (1..=net_acked)
            .map(|record| line("net", &format!("TESSERA-LINUX: stream acked {record}")))
            .collect();
        lines.push(line(
            "spare",
            &format!("TESSERA-LINUX: stream resumes after {resumed}"),
        ));
        lines.extend(
            spare_acked
                .iter()
                .map(|record| line("spare", &format!("TESSERA-LINUX: stream acked {record}"))),
        );
        Transcript::qemu(lines)
    }

    #[test]
    fn the_stream_check_finds_lost_and_repeated_records() {
        let collected = |count: u64| StreamState {
            records: (1..=count).collect(),
            ..StreamState::default()
        };
        // net's 7th record reached the collector, its acknowledgement not net.
        let good = stream_run(6, 7, &(8..=17).collect::<Vec<_>>());
        assert_eq!(check_stream(&good, &collected(17)), Ok(()));
        // spare resumed too early: net's acknowledged 7 would be sent again.
        let early = stream_run(7, 6, &(7..=16).collect::<Vec<_>>());
        assert!(check_stream(&early, &collected(16)).is_err());
        // A gap in what the collector holds.
        let mut gap = collected(17);
        gap.records.remove(3);
        assert!(check_stream(&good, &gap).is_err());
        // No record of net's before the crash, or spare's stream cut short.
        assert!(check_stream(
            &stream_run(0, 0, &(1..=10).collect::<Vec<_>>()),
            &collected(10)
        )
        .is_err());
        assert!(check_stream(&stream_run(6, 7, &[8, 9]), &collected(9)).is_err());
    }
}
