//! What a correct boot of the demo table looks like, checked against a run's transcript.
//!
//! The demo guest prints, on its own UART: `hello from core …` (or, without a `name=` on its
//! command line, `hello from partition on core …`), a `memory walk: … verified`
//! line, and `done` when it stops itself (the partition that waits for the others prints
//! `all other partitions stopped` and powers the machine off). The hypervisor's part is
//! the console markers of [`crate::markers`]. Also here: what a clean refusal looks like
//! (a Bochs model that lacks a feature) and comparing two runs' UART output byte for byte.

use crate::markers::{Backend, Marker};
use crate::table::TableInfo;
use crate::transcript::{EmulatorExit, Transcript};

/// The banner's word for a backend.
fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Svm => "svm",
        Backend::Vmx => "vmx",
    }
}

/// Every way the demo run can be wrong, as messages; `Ok` when there is none. `expected`
/// is the backend the boot banner must name (svm in QEMU, vmx on a Bochs Intel model).
pub fn check_demo_transcript(
    transcript: &Transcript,
    table: &TableInfo,
    expected: Backend,
) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let markers: Vec<Marker> = transcript.markers().collect();

    let wanted = backend_name(expected);
    match markers.iter().find_map(|marker| match marker {
        Marker::Banner { backend } => Some(*backend),
        _ => None,
    }) {
        Some(backend) if backend == expected => {}
        Some(backend) => failures.push(format!(
            "the boot banner names backend={}, not {wanted}",
            backend_name(backend)
        )),
        None => failures.push(format!(
            "no boot banner naming backend={wanted} on the hypervisor console"
        )),
    }
    for marker in &markers {
        match marker {
            Marker::Panic { message } => failures.push(format!("hypervisor panic: {message}")),
            Marker::Refused { reason } => failures.push(format!("hypervisor refused: {reason}")),
            _ => {}
        }
    }

    for partition in &table.partitions {
        let name = partition.name.as_str();
        let lines: Vec<&str> = transcript.lines_of(name).collect();
        let printed = |wanted: &dyn Fn(&str) -> bool| lines.iter().any(|line| wanted(line));
        let expects_fault = table.expects_fault(name);
        if lines.is_empty() {
            failures.push(format!("partition {name} printed nothing"));
        } else {
            if !printed(&is_greeting) {
                failures.push(format!("partition {name} did not print `hello from core`"));
            }
            if !printed(&is_verified_memory_walk) {
                failures.push(format!(
                    "partition {name} did not print `memory walk: … verified`"
                ));
            }
            if !expects_fault
                && !printed(&|line| {
                    has_word(line, "done") || line.contains("all other partitions stopped")
                })
            {
                failures.push(format!(
                    "partition {name} did not print `done` or `all other partitions stopped`"
                ));
            }
        }

        let containments = markers
            .iter()
            .filter(|marker| matches!(marker, Marker::Contained { partition } if partition == name))
            .count();
        match (expects_fault, containments) {
            (true, 1) | (false, 0) => {}
            (true, found) => failures.push(format!(
                "partition {name} should be contained exactly once, the console says {found} times"
            )),
            (false, found) => failures.push(format!(
                "partition {name} was contained ({found} times) but is not in [run] expect-faults"
            )),
        }
        if !expects_fault
            && !markers.iter().any(|marker| match marker {
                Marker::Stopped { partition, .. } => partition == name,
                Marker::PowerOff { requested_by } => requested_by == name,
                _ => false,
            })
        {
            failures.push(format!("no stop or power-off marker for partition {name}"));
        }
        if !markers
            .iter()
            .any(|marker| matches!(marker, Marker::Exits { partition } if partition == name))
        {
            failures.push(format!(
                "no exit counters (`exits: partition={name}`) on the console"
            ));
        }
    }
    for marker in &markers {
        if let Marker::Contained { partition } = marker {
            if !table
                .partitions
                .iter()
                .any(|known| &known.name == partition)
            {
                failures.push(format!(
                    "containment marker names unknown partition {partition}"
                ));
            }
        }
    }

    if !markers
        .iter()
        .any(|marker| matches!(marker, Marker::PowerOff { .. }))
    {
        failures.push("no power-off marker on the hypervisor console".into());
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected a clean power-off",
            transcript.describe_exit()
        ));
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// What a clean refusal looks like: a `REFUSED:` line on the hypervisor console naming
/// `missing` (compared without case), no panic, no boot banner, and the run ended by the
/// refusal rather than by the time bound.
pub fn check_refusal(transcript: &Transcript, missing: &str) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let markers: Vec<Marker> = transcript.markers().collect();
    let reasons: Vec<&str> = markers
        .iter()
        .filter_map(|marker| match marker {
            Marker::Refused { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    match reasons.as_slice() {
        [] => failures.push("no `REFUSED:` line on the hypervisor console".into()),
        [reason] if reason.to_lowercase().contains(&missing.to_lowercase()) => {}
        [reason] => failures.push(format!(
            "the refusal does not name the missing {missing}: `REFUSED: {reason}`"
        )),
        _ => failures.push(format!("{} `REFUSED:` lines, expected one", reasons.len())),
    }
    for marker in &markers {
        match marker {
            Marker::Panic { message } => failures.push(format!("hypervisor panic: {message}")),
            Marker::Banner { backend } => failures.push(format!(
                "the hypervisor booted (backend={}) instead of refusing",
                backend_name(*backend)
            )),
            _ => {}
        }
    }
    if transcript.emulator_exit != EmulatorExit::StoppedAfterPanic {
        failures.push(format!(
            "{}, expected the refusal to end the run",
            transcript.describe_exit()
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// The first difference between two runs' UART files (`(label, content)` in port order), or
/// `None` when they are byte for byte the same.
pub fn first_difference(
    first: &[(String, Vec<u8>)],
    second: &[(String, Vec<u8>)],
) -> Option<String> {
    let labels = |run: &[(String, Vec<u8>)]| -> Vec<String> {
        run.iter().map(|(label, _)| label.clone()).collect()
    };
    if labels(first) != labels(second) {
        return Some(format!(
            "the runs captured different UARTs: {:?} and {:?}",
            labels(first),
            labels(second)
        ));
    }
    for ((label, one), (_, other)) in first.iter().zip(second) {
        if one == other {
            continue;
        }
        let one_lines: Vec<&[u8]> = one.split(|&byte| byte == b'\n').collect();
        let other_lines: Vec<&[u8]> = other.split(|&byte| byte == b'\n').collect();
        let index = (0..one_lines.len().max(other_lines.len()))
            .find(|&index| one_lines.get(index) != other_lines.get(index))
            .unwrap_or(0);
        let show = |line: Option<&&[u8]>| match line {
            Some(bytes) => format!(
                "{:?}",
                String::from_utf8_lossy(bytes).trim_end_matches('\r')
            ),
            None => "(end of output)".into(),
        };
        return Some(format!(
            "[{label}] line {}: first run {}, second run {}",
            index + 1,
            show(one_lines.get(index)),
            show(other_lines.get(index))
        ));
    }
    None
}

/// `hello from core N`, also as the guest words it without a partition name
/// (`hello from partition on core N`).
fn is_greeting(line: &str) -> bool {
    line.find("hello from")
        .is_some_and(|start| has_word(&line[start..], "core"))
}

fn is_verified_memory_walk(line: &str) -> bool {
    line.find("memory walk:")
        .is_some_and(|start| line[start..].contains("verified"))
}

/// Whether `word` stands in `line` as a whole word.
fn has_word(line: &str, word: &str) -> bool {
    line.split(|character: char| !character.is_ascii_alphanumeric() && character != '-')
        .any(|part| part == word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::PartitionInfo;
    use crate::transcript::{TranscriptLine, HYPERVISOR};

    fn demo_table() -> TableInfo {
        TableInfo {
            path: "/w/partitions/demo.toml".into(),
            stem: "demo".into(),
            cpu_count: 4,
            ram_end: 0x2000_0000,
            partitions: [("control", 0x3f8), ("worker", 0x2f8), ("intruder", 0x2e8)]
                .iter()
                .map(|(name, port)| PartitionInfo {
                    name: name.to_string(),
                    device_ports: vec![*port],
                })
                .collect(),
            console_port: Some(0x3e8),
            expect_faults: vec!["intruder".into()],
            run_seconds: None,
        }
    }

    /// A transcript as a correct demo run prints it, interleaved as the runner would see it.
    fn good_lines() -> Vec<(&'static str, &'static str)> {
        vec![
            (HYPERVISOR, "Tessera 0.1.0 on 4 cores, backend=svm"),
            ("control", "hello from core 0"),
            ("worker", "hello from core 1"),
            ("intruder", "hello from partition on core 2"),
            ("control", "memory walk: 16 MiB verified"),
            ("worker", "memory walk: 12 MiB in 2 regions verified"),
            ("intruder", "memory walk: 16 MiB verified"),
            ("intruder", "probing 0x2000000 outside my memory"),
            (
                HYPERVISOR,
                "contained: partition=intruder core=2 reason=npf address=0x2000000",
            ),
            ("worker", "done"),
            (HYPERVISOR, "stopped: partition=worker status=0"),
            ("control", "all other partitions stopped"),
            (HYPERVISOR, "power-off: requested by control"),
            (
                HYPERVISOR,
                "exits: partition=control core=0 npf=0 io=12 msr=1",
            ),
            (
                HYPERVISOR,
                "exits: partition=worker core=1 npf=0 io=9 msr=0",
            ),
            (
                HYPERVISOR,
                "exits: partition=intruder core=2 npf=1 io=7 msr=0",
            ),
        ]
    }

    fn transcript(lines: &[(&str, &str)], emulator_exit: EmulatorExit) -> Transcript {
        Transcript {
            emulator: "QEMU",
            uart_files: vec![],
            lines: lines
                .iter()
                .map(|(source, text)| TranscriptLine {
                    source: source.to_string(),
                    text: text.to_string(),
                })
                .collect(),
            emulator_exit,
        }
    }

    fn failures(lines: &[(&str, &str)], emulator_exit: EmulatorExit) -> Vec<String> {
        check_demo_transcript(
            &transcript(lines, emulator_exit),
            &demo_table(),
            Backend::Svm,
        )
        .expect_err("the check must fail")
    }

    #[test]
    fn a_good_run_passes() {
        assert_eq!(
            check_demo_transcript(
                &transcript(&good_lines(), EmulatorExit::Exited(0)),
                &demo_table(),
                Backend::Svm
            ),
            Ok(())
        );
    }

    #[test]
    fn a_good_vmx_run_on_bochs_passes_and_an_svm_banner_there_fails() {
        let mut lines = good_lines();
        lines[0] = (HYPERVISOR, "Tessera 0.1.0 backend=vmx table=demo.toml");
        lines.push((HYPERVISOR, "Tessera: power off"));
        let mut run = transcript(&lines, EmulatorExit::PoweredOff);
        run.emulator = "Bochs";
        assert_eq!(
            check_demo_transcript(&run, &demo_table(), Backend::Vmx),
            Ok(())
        );
        assert_eq!(
            check_demo_transcript(&run, &demo_table(), Backend::Svm),
            Err(vec![
                "the boot banner names backend=vmx, not svm".to_string()
            ])
        );
        run.emulator_exit = EmulatorExit::Exited(1);
        assert_eq!(
            check_demo_transcript(&run, &demo_table(), Backend::Vmx),
            Err(vec![
                "Bochs exited with status 1, expected a clean power-off".to_string()
            ])
        );
    }

    #[test]
    fn a_clean_refusal_names_the_missing_feature() {
        let refusal = |text: &str, exit| {
            let mut run = transcript(&[(HYPERVISOR, text)], exit);
            run.emulator = "Bochs";
            run
        };
        let good = refusal(
            "REFUSED: the CPU lacks x2APIC (CPUID 1:ECX bit 21), which Tessera requires",
            EmulatorExit::StoppedAfterPanic,
        );
        assert_eq!(check_refusal(&good, "x2APIC"), Ok(()));
        assert_eq!(
            check_refusal(&good, "secondary"),
            Err(vec![
                "the refusal does not name the missing secondary: `REFUSED: the CPU lacks \
                 x2APIC (CPUID 1:ECX bit 21), which Tessera requires`"
                    .to_string()
            ])
        );
        let hung = refusal(
            "Tessera 0.1.0 backend=vmx",
            EmulatorExit::TimedOut { seconds: 60 },
        );
        assert_eq!(
            check_refusal(&hung, "x2APIC"),
            Err(vec![
                "no `REFUSED:` line on the hypervisor console".to_string(),
                "the hypervisor booted (backend=vmx) instead of refusing".to_string(),
                "timed out after 60 s, expected the refusal to end the run".to_string(),
            ])
        );
    }

    #[test]
    fn finds_the_first_differing_line() {
        let run = |hv: &str, control: &str| {
            vec![
                ("control".to_string(), control.as_bytes().to_vec()),
                ("hv".to_string(), hv.as_bytes().to_vec()),
            ]
        };
        let one = run("a\r\nb\r\nc\r\n", "x\n");
        assert_eq!(first_difference(&one, &one.clone()), None);
        assert_eq!(
            first_difference(&one, &run("a\r\nB\r\nc\r\n", "x\n")),
            Some("[hv] line 2: first run \"b\", second run \"B\"".into())
        );
        assert_eq!(
            first_difference(&one, &run("a\r\nb\r\nc\r\n", "x\ny")),
            Some("[control] line 2: first run \"\", second run \"y\"".into())
        );
        assert!(first_difference(&one, &one[..1])
            .unwrap()
            .contains("different UARTs"));
    }

    #[test]
    fn fails_when_a_partition_is_silent() {
        let lines: Vec<_> = good_lines()
            .into_iter()
            .filter(|(source, _)| *source != "worker")
            .collect();
        assert_eq!(
            failures(&lines, EmulatorExit::Exited(0)),
            ["partition worker printed nothing"]
        );
    }

    #[test]
    fn fails_when_a_partition_skips_a_step() {
        let lines: Vec<_> = good_lines()
            .into_iter()
            .filter(|line| *line != ("worker", "memory walk: 12 MiB in 2 regions verified"))
            .collect();
        assert_eq!(
            failures(&lines, EmulatorExit::Exited(0)),
            ["partition worker did not print `memory walk: … verified`"]
        );
    }

    #[test]
    fn fails_when_a_second_partition_is_contained() {
        let mut lines = good_lines();
        lines.insert(
            9,
            (
                HYPERVISOR,
                "contained: partition=worker core=1 reason=npf address=0x0",
            ),
        );
        assert_eq!(
            failures(&lines, EmulatorExit::Exited(0)),
            ["partition worker was contained (1 times) but is not in [run] expect-faults"]
        );
    }

    #[test]
    fn fails_when_the_expected_fault_is_missing_or_repeated() {
        let without: Vec<_> = good_lines()
            .into_iter()
            .filter(|(_, text)| !text.starts_with("contained:"))
            .collect();
        assert_eq!(
            failures(&without, EmulatorExit::Exited(0)),
            ["partition intruder should be contained exactly once, the console says 0 times"]
        );
        let mut twice = good_lines();
        twice.insert(
            9,
            (
                HYPERVISOR,
                "contained: partition=intruder core=3 reason=npf address=0x1",
            ),
        );
        assert_eq!(failures(&twice, EmulatorExit::Exited(0)).len(), 1);
    }

    #[test]
    fn fails_when_the_power_off_marker_is_missing() {
        let lines: Vec<_> = good_lines()
            .into_iter()
            .filter(|(_, text)| !text.starts_with("power-off:"))
            .collect();
        assert_eq!(
            failures(&lines, EmulatorExit::TimedOut { seconds: 180 }),
            [
                "no stop or power-off marker for partition control",
                "no power-off marker on the hypervisor console",
                "timed out after 180 s, expected a clean power-off",
            ]
        );
    }

    #[test]
    fn fails_on_a_panic_a_wrong_backend_missing_counters_or_a_bad_exit() {
        let mut lines = good_lines();
        lines[0] = (HYPERVISOR, "Tessera 0.1.0 on 4 cores, backend=vmx");
        lines.retain(|(_, text)| !text.starts_with("exits: partition=worker"));
        lines.push((HYPERVISOR, "PANIC: at hypervisor/src/main.rs:1"));
        assert_eq!(
            failures(&lines, EmulatorExit::Exited(1)),
            [
                "the boot banner names backend=vmx, not svm",
                "hypervisor panic: at hypervisor/src/main.rs:1",
                "no exit counters (`exits: partition=worker`) on the console",
                "QEMU exited with status 1, expected a clean power-off",
            ]
        );
    }

    #[test]
    fn markers_count_only_on_the_hypervisor_console() {
        let mut lines = good_lines();
        // A guest printing a power-off line must not stand in for the hypervisor's.
        lines.retain(|(_, text)| !text.starts_with("power-off:"));
        lines.push(("control", "power-off: requested by control"));
        assert!(failures(&lines, EmulatorExit::Exited(0))
            .contains(&"no power-off marker on the hypervisor console".to_string()));
    }

    #[test]
    fn done_must_be_a_whole_word() {
        assert!(has_word("worker: done", "done"));
        assert!(has_word("done", "done"));
        assert!(!has_word("abandoned", "done"));
        assert!(is_verified_memory_walk(
            "memory walk: 0x0..0x800000 verified"
        ));
        assert!(!is_verified_memory_walk("verified memory walk: failed"));
    }
}
