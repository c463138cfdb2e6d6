//! What a correct run of partitions/linux-rt.toml looks like, checked against a transcript.
//!
//! The Linux partition's console carries the kernel log and the lines of
//! userland/linux/init.sh (`TESSERA-LINUX: init reached …`, `kernel: …`, `nproc: …`,
//! `MemTotal: … kB`, `interrupts: …`, `restarts: …`, `TESSERA-LINUX: rebooting`,
//! `TESSERA-LINUX: heartbeat <n>`); the real-time partition's console the demo guest's
//! `timer: heartbeat <n> ticks=… max-jitter-so-far=…` (every `heartbeat=<ticks>` ticks of its
//! loop) and `timer: ticks=… max-jitter=… exits-during-loop=…`; the hypervisor's console the
//! markers of [`crate::markers`] and `restarting:` / `restarted:` / `started:` lines.
//!
//! "The real-time guest's heartbeat never stops during Linux's boot" is checked against the
//! transcript's order of lines (the runner interleaves the consoles as it reads them, every
//! 20 ms; a heartbeat comes every second): the heartbeats are numbered 1, 2, … with no gap up
//! to the loop's end, and at least one falls between each Linux boot's first kernel line
//! (`Linux version …`) and its `TESSERA-LINUX: init reached`, the boot after the reboot
//! included.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use regex::Regex;

use crate::markers::Marker;
use crate::transcript::{Transcript, HYPERVISOR};

/// The marker /init prints first.
pub const INIT_REACHED: &str = "TESSERA-LINUX: init reached";
/// /init's line before `reboot -f` (first boot of a reboot test).
pub const REBOOTING: &str = "TESSERA-LINUX: rebooting";
/// /init's line once a second after everything else.
pub const HEARTBEAT: &str = "TESSERA-LINUX: heartbeat ";
/// The command-line word that makes /init reboot on its first boot.
pub const REBOOT_TEST_WORD: &str = "tessera.reboot-test";
/// The kernel's first log line (start_kernel's banner), the start of a Linux boot.
pub const KERNEL_BANNER: &str = "Linux version ";
/// The real-time guest's heartbeat (the demo guest's timer loop with `heartbeat=<ticks>`).
pub const RT_HEARTBEAT: &str = "timer: heartbeat ";
/// The demo guest's command-line key for the heartbeat interval, in timer ticks.
pub const RT_HEARTBEAT_KEY: &str = "heartbeat=";
/// Heartbeats of the real-time guest that must fall inside each Linux boot.
pub const MIN_RT_HEARTBEATS_PER_BOOT: usize = 1;
/// The least share of the partition's RAM that MemTotal must show (the kernel keeps its
/// code, data, page structures and the initramfs: about 20% of 256 MiB for Debian 6.1).
pub const MEMTOTAL_MIN_PERCENT: u64 = 70;
/// Heartbeats that must arrive after the last /init (interrupt-driven console output).
pub const MIN_HEARTBEATS: u64 = 2;

/// Kernel log lines that say x2APIC mode is on.
const X2APIC_KEPT: &str = r"(?i)(enabled by BIOS, switching to x2apic ops|x2apic enabled|APIC routing to (physical|cluster) x2apic)";
/// Kernel log lines that say Linux left x2APIC mode (or never used it).
const X2APIC_LOST: &[&str] = &[
    "IRQ remapping doesn't support X2APIC mode",
    "Disabling x2apic",
    "x2apic disabled",
    "Switched APIC routing to flat",
    "Switched APIC routing to physical flat",
    "x2apic lock mismatch",
];

/// What the table promises, read from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectations {
    /// The Linux partition's name (its console's label).
    pub linux: String,
    /// Its cores.
    pub cpus: usize,
    /// Its RAM, KiB.
    pub ram_kib: u64,
    /// Whether its command line holds [`REBOOT_TEST_WORD`].
    pub reboot_test: bool,
    /// The other (real-time) partitions, by name.
    pub others: Vec<String>,
    /// Their heartbeat interval in timer ticks (`heartbeat=<ticks>`; the first one that
    /// names one), if any.
    pub heartbeat_ticks: Option<u64>,
}

impl Expectations {
    /// Reads them from the table at `path`: the first `kind = "linux"` partition.
    pub fn from_table(path: &Path) -> Result<Self> {
        let table = tessera_config::load_without_files(path)
            .map_err(|diagnostics| anyhow!("{}", diagnostics.render().trim_end()))?;
        let linux = table
            .partitions
            .iter()
            .find(|partition| *partition.boot.kind == tessera_config::model::BootKind::Linux)
            .with_context(|| format!("{} has no linux partition", path.display()))?;
        let ram: u64 = linux.memory.iter().map(|region| region.size.0).sum();
        Ok(Self {
            linux: linux.name.to_string(),
            cpus: linux.cpus.len(),
            ram_kib: ram / 1024,
            reboot_test: linux
                .boot
                .cmdline
                .as_deref()
                .is_some_and(|line| line.split_whitespace().any(|word| word == REBOOT_TEST_WORD)),
            others: table
                .partitions
                .iter()
                .filter(|partition| partition.name.as_str() != linux.name.as_str())
                .map(|partition| partition.name.to_string())
                .collect(),
            heartbeat_ticks: table
                .partitions
                .iter()
                .filter(|partition| partition.name.as_str() != linux.name.as_str())
                .filter_map(|partition| partition.boot.cmdline.as_deref())
                .flat_map(|line| line.split_whitespace())
                .find_map(|word| word.strip_prefix(RT_HEARTBEAT_KEY)?.parse().ok()),
        })
    }
}

/// The first number after `prefix` in `line`, if `line` has it.
pub fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One Linux boot's /init report: the lines from one `init reached` to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    pub tsc: Option<u64>,
    pub kernel: Option<String>,
    pub nproc: Option<u64>,
    pub memtotal_kib: Option<u64>,
    pub restarts: Option<u64>,
    pub rebooting: bool,
    pub heartbeats: u64,
    /// The `/proc/interrupts` line of ttyS0 and its total count over all CPUs.
    pub uart_interrupts: Option<(String, u64)>,
}

/// Every /init report of the Linux console, in boot order.
pub fn init_reports(lines: &[&str]) -> Vec<InitReport> {
    let mut reports: Vec<InitReport> = Vec::new();
    for line in lines {
        if line.contains(INIT_REACHED) {
            reports.push(InitReport {
                tsc: number_after(line, "tsc="),
                ..InitReport::default()
            });
            continue;
        }
        let Some(report) = reports.last_mut() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("kernel: ") {
            report.kernel = Some(rest.trim().to_string());
        } else if line.starts_with("nproc: ") {
            report.nproc = number_after(line, "nproc: ");
        } else if line.starts_with("MemTotal: ") {
            report.memtotal_kib = number_after(line, "MemTotal: ");
        } else if line.starts_with("restarts: ") {
            report.restarts = number_after(line, "restarts: ");
        } else if line.contains(REBOOTING) {
            report.rebooting = true;
        } else if line.contains(HEARTBEAT) {
            report.heartbeats += 1;
        } else if let Some(rest) = line.strip_prefix("interrupts: ") {
            if rest.contains("ttyS0") {
                // `  4:   0   14   IO-APIC   4-edge   ttyS0`: the counts follow the number.
                let total = rest
                    .split_whitespace()
                    .skip(1)
                    .map_while(|field| field.parse::<u64>().ok())
                    .sum();
                report.uart_interrupts = Some((rest.trim().to_string(), total));
            }
        }
    }
    reports
}

/// The real-time guest's `timer:` summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerSummary {
    pub ticks: u64,
    pub max_jitter: u64,
    pub exits_during_loop: Option<u64>,
}

/// The number of a real-time heartbeat line (`timer: heartbeat <n> …`).
pub fn rt_heartbeat(line: &str) -> Option<u64> {
    line.contains(RT_HEARTBEAT)
        .then(|| number_after(line, RT_HEARTBEAT))
        .flatten()
}

pub fn timer_summary(line: &str) -> Option<TimerSummary> {
    let line = &line[line.find("timer: ticks=")?..];
    Some(TimerSummary {
        ticks: number_after(line, "ticks=")?,
        max_jitter: number_after(line, "max-jitter=")?,
        exits_during_loop: number_after(line, "exits-during-loop="),
    })
}

/// Every way the run can be wrong, as messages; `Ok` when there is none.
pub fn check_linux_rt(transcript: &Transcript, expected: &Expectations) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let linux = expected.linux.as_str();
    let markers: Vec<Marker> = transcript.markers().collect();
    for marker in &markers {
        match marker {
            Marker::Panic { message } => failures.push(format!("hypervisor panic: {message}")),
            Marker::Refused { reason } => failures.push(format!("hypervisor refused: {reason}")),
            Marker::Contained { partition } => {
                failures.push(format!("partition {partition} was contained"));
            }
            _ => {}
        }
    }
    if !markers
        .iter()
        .any(|marker| matches!(marker, Marker::Banner { .. }))
    {
        failures.push("no boot banner on the hypervisor console".into());
    }

    // Where each line is, for "this came after that" (the runner interleaves the consoles in
    // the order it read them, every 20 ms).
    let position = |source: &str, wanted: &dyn Fn(&str) -> bool| -> Vec<usize> {
        transcript
            .lines
            .iter()
            .enumerate()
            .filter(|(_, line)| line.source == source && wanted(&line.text))
            .map(|(index, _)| index)
            .collect()
    };

    let linux_lines: Vec<&str> = transcript.lines_of(linux).collect();
    let reports = init_reports(&linux_lines);
    if reports.is_empty() {
        failures.push(format!("Linux never reached /init (no `{INIT_REACHED}`)"));
        if let Some(panic) = linux_lines
            .iter()
            .find(|line| line.contains("Kernel panic"))
        {
            failures.push(format!("the Linux console says: {}", panic.trim()));
        }
        if let Some(oops) = linux_lines.iter().find(|line| line.contains("BUG: ")) {
            failures.push(format!("the Linux console says: {}", oops.trim()));
        }
    }
    if let Some(first) = reports.first() {
        if first.kernel.is_none() {
            failures.push("/init printed no `kernel:` line".into());
        }
        match first.nproc {
            Some(n) if n == expected.cpus as u64 => {}
            Some(n) => failures.push(format!(
                "Linux sees {n} CPUs (`nproc: {n}`), the table gives it {}",
                expected.cpus
            )),
            None => failures.push("/init printed no `nproc:` line".into()),
        }
        let least = expected.ram_kib * MEMTOTAL_MIN_PERCENT / 100;
        match first.memtotal_kib {
            Some(kib) if (least..=expected.ram_kib).contains(&kib) => {}
            Some(kib) => failures.push(format!(
                "MemTotal is {kib} kB, expected between {least} ({MEMTOTAL_MIN_PERCENT}% of the \
                 table's {} KiB) and {}",
                expected.ram_kib, expected.ram_kib
            )),
            None => failures.push("/init printed no `MemTotal:` line".into()),
        }
        match &first.uart_interrupts {
            Some((_, total)) if *total > 0 => {}
            Some((line, _)) => failures.push(format!(
                "ttyS0 took no interrupts by /init (`{line}`): the console is not \
                 interrupt-driven"
            )),
            None => failures.push(
                "/proc/interrupts has no ttyS0 line: the UART has no interrupt (polled console)"
                    .into(),
            ),
        }
    }

    // x2APIC: kept, and never left.
    let kept = Regex::new(X2APIC_KEPT).expect("a valid pattern");
    if !linux_lines.iter().any(|line| kept.is_match(line)) {
        failures.push("the kernel log never says it runs in x2APIC mode".into());
    }
    for lost in X2APIC_LOST {
        let lower = lost.to_lowercase();
        if let Some(line) = linux_lines
            .iter()
            .find(|line| line.to_lowercase().contains(&lower))
        {
            failures.push(format!("Linux left x2APIC mode: `{}`", line.trim()));
        }
    }

    // Output after /init keeps coming: the heartbeats of the last boot.
    if let Some(last) = reports.last() {
        if last.heartbeats < MIN_HEARTBEATS {
            failures.push(format!(
                "{} heartbeat lines after the last /init, expected at least {MIN_HEARTBEATS}",
                last.heartbeats
            ));
        }
    }

    // Restarts: only Linux, only once, and only when asked.
    let restarting = |partition: &str| {
        position(HYPERVISOR, &|text| {
            text.contains(&format!("restarting: partition={partition} "))
        })
    };
    let restarted = |partition: &str| {
        position(HYPERVISOR, &|text| {
            text.contains(&format!("restarted: partition={partition} "))
        })
    };
    for other in &expected.others {
        if !restarting(other).is_empty() || !restarted(other).is_empty() {
            failures.push(format!("partition {other} was restarted"));
        }
        let starts = position(HYPERVISOR, &|text| {
            text.contains(&format!("started: partition={other} "))
        });
        if starts.len() > 1 {
            failures.push(format!(
                "partition {other} was started {} times",
                starts.len()
            ));
        }
    }
    let linux_restarts = restarting(linux).len();
    if expected.reboot_test {
        if reports.len() < 2 {
            if reports.len() == 1 {
                failures.push(format!(
                    "Linux reached /init once; the reboot test needs a second boot ({})",
                    if reports[0].rebooting {
                        "it printed `rebooting`"
                    } else {
                        "it never printed `rebooting`"
                    }
                ));
            }
        } else {
            if reports[0].restarts != Some(0) || !reports[0].rebooting {
                failures.push(format!(
                    "the first boot should print `restarts: 0` and `{REBOOTING}`, it printed \
                     restarts {:?}, rebooting {}",
                    reports[0].restarts, reports[0].rebooting
                ));
            }
            if reports[1].restarts != Some(1) {
                failures.push(format!(
                    "the second boot should print `restarts: 1`, it printed {:?}",
                    reports[1].restarts
                ));
            }
        }
        if linux_restarts != 1 || restarted(linux).len() != 1 {
            failures.push(format!(
                "the hypervisor should log `restarting: partition={linux}` and `restarted: \
                 partition={linux}` once each, it logged them {linux_restarts} and {} times",
                restarted(linux).len()
            ));
        }
    } else if linux_restarts != 0 {
        failures.push(format!(
            "Linux was restarted {linux_restarts} times without a reboot test"
        ));
    }

    // The real-time guests ran through Linux's boots: their timer loop ended after the last
    // /init and lost no tick, and nothing of theirs exited during it.
    let last_init = position(linux, &|text| text.contains(INIT_REACHED))
        .last()
        .copied();
    for other in &expected.others {
        let summaries = position(other, &|text| timer_summary(text).is_some());
        let Some(&at) = summaries.first() else {
            failures.push(format!(
                "partition {other} printed no `timer: ticks=…` summary"
            ));
            continue;
        };
        let summary = timer_summary(&transcript.lines[at].text).expect("found above");
        match summary.exits_during_loop {
            Some(0) => {}
            Some(exits) => failures.push(format!(
                "partition {other} took {exits} exits during its timer loop, expected 0"
            )),
            None => failures.push(format!(
                "partition {other} does not know its exit count (not on Tessera?)"
            )),
        }
        if last_init.is_some_and(|init| at < init) {
            failures.push(format!(
                "partition {other}'s timer loop ended before Linux's last /init: it did not \
                 cover Linux's boot (make `timer-loop=` longer)"
            ));
        }
        if transcript
            .lines_of(other)
            .any(|line| line.contains("timer: only"))
        {
            failures.push(format!("partition {other} lost timer ticks"));
        }
        check_rt_heartbeats(
            transcript,
            linux,
            other,
            expected.heartbeat_ticks,
            summary.ticks,
            &mut failures,
        );
    }

    for partition in std::iter::once(linux).chain(expected.others.iter().map(String::as_str)) {
        if !markers
            .iter()
            .any(|marker| matches!(marker, Marker::Exits { partition: name } if name == partition))
        {
            failures.push(format!(
                "no exit counters (`exits: partition={partition}`) on the console"
            ));
        }
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected the real-time partition to power off",
            transcript.describe_exit()
        ));
    }

    crate::outcome(failures)
}

/// The real-time guest `other`'s heartbeats: numbered 1, 2, … with no gap, as many as its
/// loop's `ticks` give at one per `every` ticks, and at least [`MIN_RT_HEARTBEATS_PER_BOOT`]
/// between each of Linux's kernel banners and the `init reached` that follows it.
fn check_rt_heartbeats(
    transcript: &Transcript,
    linux: &str,
    other: &str,
    every: Option<u64>,
    ticks: u64,
    failures: &mut Vec<String>,
) {
    let Some(every) = every.filter(|&every| every > 0) else {
        failures.push(format!(
            "the table gives partition {other} no `{RT_HEARTBEAT_KEY}<ticks>`: its heartbeat \
             cannot be checked"
        ));
        return;
    };
    let heartbeats: Vec<(usize, u64)> = transcript
        .lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.source == other)
        .filter_map(|(index, line)| Some((index, rt_heartbeat(&line.text)?)))
        .collect();
    if let Some((expected, found)) = heartbeats
        .iter()
        .zip(1u64..)
        .find(|((_, number), expected)| number != expected)
        .map(|((_, number), expected)| (expected, *number))
    {
        failures.push(format!(
            "partition {other}'s heartbeats are not consecutive: `{RT_HEARTBEAT}{found}` where \
             {expected} was due"
        ));
    } else if heartbeats.len() as u64 != ticks / every {
        failures.push(format!(
            "partition {other} printed {} heartbeats, its {ticks} ticks give {} (one per \
             {every})",
            heartbeats.len(),
            ticks / every
        ));
    }
    // Each boot: its banner (the last before its `init reached` and after the previous
    // boot's), then the heartbeats in between.
    let mut previous_init = None;
    for (boot, line) in transcript
        .lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.source == linux && line.text.contains(INIT_REACHED))
        .map(|(index, _)| index)
        .enumerate()
    {
        let boot = boot + 1;
        let after_previous = previous_init.map_or(0, |init| init + 1);
        let banner = (after_previous..line).rev().find(|&index| {
            let candidate = &transcript.lines[index];
            candidate.source == linux && candidate.text.contains(KERNEL_BANNER)
        });
        previous_init = Some(line);
        let Some(banner) = banner else {
            failures.push(format!(
                "Linux boot {boot} reached /init without a kernel banner (`{KERNEL_BANNER}…`) \
                 before it"
            ));
            continue;
        };
        let during = heartbeats
            .iter()
            .filter(|(index, _)| (banner..line).contains(index))
            .count();
        if during < MIN_RT_HEARTBEATS_PER_BOOT {
            failures.push(format!(
                "partition {other}'s heartbeat stopped during Linux boot {boot}: {during} \
                 heartbeats between `{KERNEL_BANNER}…` and `{INIT_REACHED}`, expected at least \
                 {MIN_RT_HEARTBEATS_PER_BOOT}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{EmulatorExit, TranscriptLine};

    fn expected() -> Expectations {
        Expectations {
            linux: "linux".into(),
            cpus: 2,
            ram_kib: 262_144,
            reboot_test: true,
            others: vec!["rt".into()],
            heartbeat_ticks: Some(1000),
        }
    }

    fn rt_heartbeat_line(number: u64) -> (&'static str, String) {
        (
            "rt",
            format!(
                "timer: heartbeat {number} ticks={} max-jitter-so-far=4000",
                number * 1000
            ),
        )
    }

    /// One Linux boot, with the real-time guest's heartbeat `heartbeat` during it.
    fn boot(restarts: u64, heartbeat: u64, then: &[&'static str]) -> Vec<(&'static str, String)> {
        let mut lines = vec![
            (
                "linux",
                "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)"
                    .to_string(),
            ),
            (
                "linux",
                "[    0.004828] x2apic: enabled by BIOS, switching to x2apic ops".to_string(),
            ),
            rt_heartbeat_line(heartbeat),
            (
                "linux",
                "[    0.051615] Setting APIC routing to physical x2apic.".to_string(),
            ),
            (
                "linux",
                "TESSERA-LINUX: init reached tsc=123456".to_string(),
            ),
            ("linux", "kernel: 6.1.0-56-amd64".to_string()),
            ("linux", "nproc: 2".to_string()),
            ("linux", "MemTotal: 220000 kB".to_string()),
            (
                "linux",
                "interrupts:            CPU0       CPU1".to_string(),
            ),
            (
                "linux",
                "interrupts:   4:          0         14   IO-APIC   4-edge      ttyS0".to_string(),
            ),
            ("linux", format!("restarts: {restarts}")),
        ];
        lines.extend(then.iter().map(|text| ("linux", text.to_string())));
        lines
    }

    fn good_lines() -> Vec<(&'static str, String)> {
        let mut lines = vec![
            (
                HYPERVISOR,
                "Tessera 0.1.0 backend=svm table=linux-rt.toml".to_string(),
            ),
            (
                HYPERVISOR,
                "started: partition=linux core=1 entry=0x1000200 tsc=5 (first guest instruction)"
                    .to_string(),
            ),
            (
                HYPERVISOR,
                "started: partition=rt core=3 entry=0x100000 tsc=6".to_string(),
            ),
        ];
        lines.extend(boot(0, 1, &["TESSERA-LINUX: rebooting"]));
        lines.push((
            HYPERVISOR,
            "restarting: partition=linux reason=reset-request core=1".into(),
        ));
        lines.push((
            HYPERVISOR,
            "restarted: partition=linux restarts=1 core=1".into(),
        ));
        lines.push((
            HYPERVISOR,
            "started: partition=linux core=1 entry=0x1000200 tsc=9".into(),
        ));
        lines.extend(boot(
            1,
            2,
            &["TESSERA-LINUX: heartbeat 1", "TESSERA-LINUX: heartbeat 2"],
        ));
        lines.push(rt_heartbeat_line(3));
        lines.push(rt_heartbeat_line(4));
        lines.push((
            "rt",
            "timer: ticks=4000 period=2600000 max-jitter=4000 exits-during-loop=0".into(),
        ));
        lines.push((HYPERVISOR, "power-off: requested by rt".into()));
        lines.push((
            HYPERVISOR,
            "exits: partition=linux state=Running io=5 total=9".into(),
        ));
        lines.push((
            HYPERVISOR,
            "exits: partition=rt state=Running total=2".into(),
        ));
        lines
    }

    fn transcript(lines: &[(&str, String)], exit: EmulatorExit) -> Transcript {
        Transcript {
            emulator: "QEMU",
            lines: lines
                .iter()
                .map(|(source, text)| TranscriptLine {
                    source: source.to_string(),
                    text: text.clone(),
                })
                .collect(),
            emulator_exit: exit,
            uart_files: vec![],
        }
    }

    fn failures(lines: &[(&str, String)]) -> Vec<String> {
        check_linux_rt(&transcript(lines, EmulatorExit::Exited(0)), &expected())
            .expect_err("the check must fail")
    }

    fn without(lines: &[(&str, String)], gone: &str) -> Vec<(&'static str, String)> {
        lines
            .iter()
            .filter(|(_, text)| !text.contains(gone))
            .map(|(source, text)| {
                let source: &'static str = match *source {
                    "linux" => "linux",
                    "rt" => "rt",
                    _ => HYPERVISOR,
                };
                (source, text.clone())
            })
            .collect()
    }

    #[test]
    fn a_good_run_passes() {
        assert_eq!(
            check_linux_rt(
                &transcript(&good_lines(), EmulatorExit::Exited(0)),
                &expected()
            ),
            Ok(())
        );
    }

    #[test]
    fn reads_the_init_reports() {
        let lines = good_lines();
        let linux: Vec<&str> = lines
            .iter()
            .filter(|(source, _)| *source == "linux")
            .map(|(_, text)| text.as_str())
            .collect();
        let reports = init_reports(&linux);
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].tsc, Some(123_456));
        assert_eq!(reports[0].memtotal_kib, Some(220_000));
        assert_eq!(reports[0].nproc, Some(2));
        assert!(reports[0].rebooting);
        assert_eq!(reports[1].restarts, Some(1));
        assert_eq!(reports[1].heartbeats, 2);
        assert_eq!(
            reports[1].uart_interrupts.as_ref().map(|(_, n)| *n),
            Some(14)
        );
        assert_eq!(
            timer_summary("timer: ticks=10 period=5 max-jitter=7 exits-during-loop=n/a"),
            Some(TimerSummary {
                ticks: 10,
                max_jitter: 7,
                exits_during_loop: None
            })
        );
    }

    #[test]
    fn fails_without_init() {
        let mut lines = without(&good_lines(), "TESSERA-LINUX");
        lines.push((
            "linux",
            "[    5.19] Kernel panic - not syncing: Attempted to kill the idle task!".into(),
        ));
        let found = failures(&lines);
        assert!(
            found.iter().any(|f| f.contains("never reached /init")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|f| f.contains("Kernel panic")),
            "{found:?}"
        );
    }

    #[test]
    fn fails_on_wrong_cpus_or_memory() {
        let lines: Vec<_> = good_lines()
            .into_iter()
            .map(|(source, text)| {
                let text = text
                    .replace("nproc: 2", "nproc: 1")
                    .replace("MemTotal: 220000", "MemTotal: 100000");
                (source, text)
            })
            .collect();
        let found = failures(&lines);
        assert!(found.iter().any(|f| f.contains("sees 1 CPUs")), "{found:?}");
        assert!(
            found.iter().any(|f| f.contains("MemTotal is 100000 kB")),
            "{found:?}"
        );
    }

    #[test]
    fn fails_when_x2apic_is_dropped() {
        let mut lines = good_lines();
        lines.insert(
            4,
            (
                "linux",
                "[    5.156769] x2apic: IRQ remapping doesn't support X2APIC mode".into(),
            ),
        );
        lines.insert(
            5,
            (
                "linux",
                "[    5.161335] Switched APIC routing to flat.".into(),
            ),
        );
        let found = failures(&lines);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .all(|f| f.starts_with("Linux left x2APIC mode")));
        let found = failures(&without(&good_lines(), "x2apic"));
        assert_eq!(found, ["the kernel log never says it runs in x2APIC mode"]);
    }

    #[test]
    fn fails_on_a_polled_console_or_no_heartbeat() {
        let found = failures(&without(&good_lines(), "ttyS0"));
        assert!(
            found.iter().any(|f| f.contains("polled console")),
            "{found:?}"
        );
        let found = failures(&without(&good_lines(), "TESSERA-LINUX: heartbeat 2"));
        assert_eq!(
            found,
            ["1 heartbeat lines after the last /init, expected at least 2"]
        );
    }

    #[test]
    fn fails_when_the_reboot_does_not_restart_only_linux() {
        let found = failures(&without(&good_lines(), "restarted: partition=linux"));
        assert!(found.iter().any(|f| f.contains("once each")), "{found:?}");
        let mut lines = good_lines();
        lines.push((
            HYPERVISOR,
            "restarting: partition=rt reason=reset-request core=3".into(),
        ));
        lines.push((
            HYPERVISOR,
            "started: partition=rt core=3 entry=0x100000 tsc=99".into(),
        ));
        let found = failures(&lines);
        assert!(
            found.contains(&"partition rt was restarted".to_string()),
            "{found:?}"
        );
        assert!(
            found.contains(&"partition rt was started 2 times".to_string()),
            "{found:?}"
        );
        // A restart loop (panic=-1) is not a passing reboot test.
        let mut looping = good_lines();
        looping.insert(
            12,
            (
                HYPERVISOR,
                "restarting: partition=linux reason=reset-request core=1".into(),
            ),
        );
        assert!(failures(&looping)
            .iter()
            .any(|f| f.contains("2 and 1 times")));
        // The second boot must know it is one.
        let lines: Vec<_> = good_lines()
            .into_iter()
            .map(|(source, text)| (source, text.replace("restarts: 1", "restarts: 0")))
            .collect();
        assert!(failures(&lines).iter().any(|f| f.contains("`restarts: 1`")));
    }

    #[test]
    fn fails_when_the_rt_guest_is_disturbed() {
        let lines: Vec<_> = good_lines()
            .into_iter()
            .map(|(source, text)| {
                (
                    source,
                    text.replace("exits-during-loop=0", "exits-during-loop=3"),
                )
            })
            .collect();
        assert_eq!(
            failures(&lines),
            ["partition rt took 3 exits during its timer loop, expected 0"]
        );
        // Its loop must outlast Linux's boots.
        let mut early = good_lines();
        let summary = early
            .iter()
            .position(|(_, text)| text.starts_with("timer: ticks="))
            .unwrap();
        let line = early.remove(summary);
        early.insert(4, line);
        assert!(failures(&early)
            .iter()
            .any(|f| f.contains("did not cover Linux's boot")));
        let found = failures(&without(&good_lines(), "timer: ticks"));
        assert_eq!(found, ["partition rt printed no `timer: ticks=…` summary"]);
        let mut contained = good_lines();
        contained.push((
            HYPERVISOR,
            "contained: partition=rt core=3 reason=npf address=0x0".into(),
        ));
        assert!(failures(&contained).contains(&"partition rt was contained".to_string()));
    }

    #[test]
    fn reads_the_rt_heartbeats() {
        assert_eq!(
            rt_heartbeat("timer: heartbeat 17 ticks=17000 max-jitter-so-far=5"),
            Some(17)
        );
        assert_eq!(rt_heartbeat("TESSERA-LINUX: heartbeat 3"), None);
        assert_eq!(
            rt_heartbeat("timer: ticks=10 period=5 max-jitter=7 exits-during-loop=0"),
            None
        );
    }

    /// `lines` with the real-time heartbeat `number` moved to just before the line that
    /// contains `before` (the `occurrence`-th such line, from 0).
    fn heartbeat_moved(
        lines: &[(&'static str, String)],
        number: u64,
        before: &str,
        occurrence: usize,
    ) -> Vec<(&'static str, String)> {
        let mut lines = lines.to_vec();
        let heartbeat = rt_heartbeat_line(number);
        let from = lines.iter().position(|line| *line == heartbeat).unwrap();
        let line = lines.remove(from);
        let to = lines
            .iter()
            .enumerate()
            .filter(|(_, (_, text))| text.contains(before))
            .nth(occurrence)
            .unwrap()
            .0;
        lines.insert(to, line);
        lines
    }

    #[test]
    fn fails_when_the_rt_heartbeat_stops_during_a_linux_boot() {
        // The heartbeat stops during the boot after the reboot and resumes after /init:
        // numbered without a gap, but none between that boot's banner and its /init.
        let stalled = heartbeat_moved(&good_lines(), 2, "TESSERA-LINUX: heartbeat 1", 0);
        assert_eq!(
            failures(&stalled),
            [
                "partition rt's heartbeat stopped during Linux boot 2: 0 heartbeats between \
              `Linux version …` and `TESSERA-LINUX: init reached`, expected at least 1"
            ]
        );
        // The same during the first boot: its heartbeat comes only after the reboot began.
        let stalled = heartbeat_moved(&good_lines(), 1, "restarting: partition=linux", 0);
        assert_eq!(
            failures(&stalled),
            [
                "partition rt's heartbeat stopped during Linux boot 1: 0 heartbeats between \
              `Linux version …` and `TESSERA-LINUX: init reached`, expected at least 1"
            ]
        );
        // A heartbeat before the banner does not count for the boot.
        let early = heartbeat_moved(&good_lines(), 2, "Linux version", 1);
        assert_eq!(failures(&early).len(), 1);
        // Lost heartbeats: a gap in the numbers, or the last ones missing.
        let gap = without(&good_lines(), "timer: heartbeat 2 ");
        assert_eq!(
            failures(&gap),
            [
                "partition rt's heartbeats are not consecutive: `timer: heartbeat 3` where 2 \
                 was due",
                "partition rt's heartbeat stopped during Linux boot 2: 0 heartbeats between \
                 `Linux version …` and `TESSERA-LINUX: init reached`, expected at least 1",
            ]
        );
        let ended = without(&good_lines(), "timer: heartbeat 4 ");
        assert_eq!(
            failures(&ended),
            ["partition rt printed 3 heartbeats, its 4000 ticks give 4 (one per 1000)"]
        );
        // No heartbeat at all (a table without `heartbeat=`, or a guest that never beats).
        let silent = without(&good_lines(), "timer: heartbeat");
        let found = failures(&silent);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("partition rt printed 0 heartbeats"));
        let unconfigured = check_linux_rt(
            &transcript(&good_lines(), EmulatorExit::Exited(0)),
            &Expectations {
                heartbeat_ticks: None,
                ..expected()
            },
        );
        assert_eq!(
            unconfigured,
            Err(vec![
                "the table gives partition rt no `heartbeat=<ticks>`: its heartbeat cannot be \
                 checked"
                    .to_string()
            ])
        );
        // A boot without its kernel banner cannot be judged.
        let bannerless = without(&good_lines(), "Linux version");
        let found = failures(&bannerless);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("Linux boot 1 reached /init without a kernel banner"));
        // The loop's own count of exits stays required alongside the heartbeat.
        let disturbed: Vec<_> = good_lines()
            .into_iter()
            .map(|(source, text)| (source, text.replace("exits-during-loop=0", "")))
            .collect();
        assert_eq!(
            failures(&disturbed),
            ["partition rt does not know its exit count (not on Tessera?)"]
        );
    }

    #[test]
    fn fails_without_counters_or_power_off() {
        let found = check_linux_rt(
            &transcript(
                &without(&good_lines(), "exits: partition=linux"),
                EmulatorExit::TimedOut { seconds: 400 },
            ),
            &expected(),
        )
        .unwrap_err();
        assert_eq!(
            found,
            [
                "no exit counters (`exits: partition=linux`) on the console",
                "timed out after 400 s, expected the real-time partition to power off",
            ]
        );
    }

    /// Checks the saved output of `cargo xtask run --table partitions/linux-rt.toml`
    /// (`[source] line` per line) named by TESSERA_LINUX_RT_LOG: `TESSERA_LINUX_RT_LOG=run.log
    /// cargo test -p xtask -- --ignored checks_a_saved_run`.
    #[test]
    #[ignore = "needs a saved run"]
    fn checks_a_saved_run() {
        let path = std::env::var("TESSERA_LINUX_RT_LOG").expect("TESSERA_LINUX_RT_LOG");
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<(&str, String)> = text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix('[')?;
                let (source, text) = rest.split_once("] ")?;
                let source: &str = match source {
                    "hv" => HYPERVISOR,
                    "linux" => "linux",
                    "rt" => "rt",
                    _ => return None,
                };
                Some((source, text.to_string()))
            })
            .collect();
        let exit = if text.contains("run: ok (powered off cleanly)") {
            EmulatorExit::Exited(0)
        } else {
            EmulatorExit::TimedOut { seconds: 0 }
        };
        let table = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../partitions/linux-rt.toml");
        let expected = Expectations::from_table(&table).unwrap();
        assert_eq!(check_linux_rt(&transcript(&lines, exit), &expected), Ok(()));
    }

    #[test]
    fn reads_the_linux_rt_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../partitions/linux-rt.toml");
        let expected = Expectations::from_table(&path).unwrap();
        assert_eq!(
            expected,
            Expectations {
                linux: "linux".into(),
                cpus: 2,
                ram_kib: 262_144,
                reboot_test: true,
                others: vec!["rt".into()],
                heartbeat_ticks: Some(1000),
            }
        );
    }
}
