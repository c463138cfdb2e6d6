//! Booting an image in QEMU: streaming every UART, bounding the time, judging the outcome.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::markers::{self, Marker};
use crate::qemu;
use crate::serial::FollowedFile;
use crate::table::TableInfo;
use crate::transcript::{EmulatorExit, Transcript, TranscriptLine, EMULATOR, HYPERVISOR};

/// How often the output files are read.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the console keeps being read after a hypervisor panic before QEMU is stopped
/// (a panicked hypervisor halts; waiting for the time bound would only waste it).
const PANIC_GRACE: Duration = Duration::from_secs(1);

/// How to run one image.
#[derive(Clone, Copy, Debug)]
pub struct RunSettings {
    /// The time bound.
    pub seconds: u64,
    /// Whether the user chose the time bound: running out of it is then no failure.
    pub seconds_explicit: bool,
    /// Instruction counting instead of real time (reproducible output).
    pub deterministic: bool,
}

/// Boots `image` in QEMU, streams its output as `[source] line` and returns it all.
/// The output files go to `target/tessera/run/<table stem>/`, emptied first.
pub fn boot(
    target: &Path,
    table: &TableInfo,
    image: &Path,
    settings: RunSettings,
) -> Result<Transcript> {
    let directory = target.join("tessera").join("run").join(&table.stem);
    if directory.exists() {
        std::fs::remove_dir_all(&directory)
            .with_context(|| format!("cannot clear {}", directory.display()))?;
    }
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;

    let captures = qemu::serial_captures(table, &directory);
    let arguments = qemu::arguments(table, image, &captures, settings.deterministic);
    println!("running: {} {}", qemu::BINARY, arguments.join(" "));

    let emulator_output_path = directory.join("qemu.txt");
    let emulator_output = File::create(&emulator_output_path)
        .with_context(|| format!("cannot create {}", emulator_output_path.display()))?;
    let mut followed: Vec<FollowedFile> = captures
        .into_iter()
        .map(|capture| FollowedFile::new(capture.label, capture.file))
        .collect();
    followed.push(FollowedFile::new(EMULATOR, emulator_output_path));

    let mut child = Command::new(qemu::BINARY)
        .args(&arguments)
        .stdin(Stdio::null())
        .stdout(emulator_output.try_clone()?)
        .stderr(emulator_output)
        .spawn()
        .with_context(|| format!("cannot start {}", qemu::BINARY))?;

    let mut lines = Vec::new();
    let started = Instant::now();
    let limit = Duration::from_secs(settings.seconds);
    let mut panicked_at: Option<Instant> = None;
    let emulator_exit = loop {
        for file in &mut followed {
            for text in file.poll()? {
                panicked_at = panicked_at.or(record(&mut lines, &file.label, text));
            }
        }
        if let Some(status) = child.try_wait()? {
            break status
                .code()
                .map_or(EmulatorExit::Signalled, EmulatorExit::Exited);
        }
        if panicked_at.is_some_and(|at| at.elapsed() >= PANIC_GRACE) {
            stop(&mut child)?;
            break EmulatorExit::StoppedAfterPanic;
        }
        if started.elapsed() >= limit {
            stop(&mut child)?;
            break EmulatorExit::TimedOut {
                seconds: settings.seconds,
            };
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    for file in &mut followed {
        for text in file.finish()? {
            record(&mut lines, &file.label, text);
        }
    }
    Ok(Transcript {
        lines,
        emulator_exit,
    })
}

/// Prints and keeps one line; returns the time if it is the hypervisor's panic marker.
fn record(lines: &mut Vec<TranscriptLine>, source: &str, text: String) -> Option<Instant> {
    println!("[{source}] {text}");
    // A panic or a refusal ends the run: the hypervisor halts after either.
    let panicked = source == HYPERVISOR
        && matches!(
            markers::parse(&text),
            Some(Marker::Panic { .. } | Marker::Refused { .. })
        );
    lines.push(TranscriptLine {
        source: source.to_string(),
        text,
    });
    panicked.then(Instant::now)
}

fn stop(child: &mut std::process::Child) -> Result<()> {
    // The child may have exited between the last check and now; kill then fails harmlessly.
    let _ = child.kill();
    child.wait().context("cannot wait for QEMU")?;
    Ok(())
}

/// What went wrong in a run, judged by the rules of `cargo xtask run`; empty when it passed.
pub fn judge(transcript: &Transcript, table: &TableInfo, settings: RunSettings) -> Vec<String> {
    let mut failures = Vec::new();
    let mut powered_off = false;
    for marker in transcript.markers() {
        match marker {
            Marker::Panic { message } => failures.push(format!("hypervisor panic: {message}")),
            Marker::Refused { reason } => failures.push(format!("hypervisor refused: {reason}")),
            Marker::Contained { partition } if !table.expects_fault(&partition) => {
                failures.push(format!(
                    "unexpected fault: partition {partition} was contained"
                ));
            }
            Marker::PowerOff { .. } => powered_off = true,
            _ => {}
        }
    }
    match transcript.emulator_exit {
        EmulatorExit::Exited(0) if powered_off => {}
        EmulatorExit::Exited(0) => failures.push("QEMU exited before the power-off marker".into()),
        EmulatorExit::TimedOut { .. } if settings.seconds_explicit => {}
        // The panic is already reported above.
        EmulatorExit::StoppedAfterPanic => {}
        exit => failures.push(exit.to_string()),
    }
    failures
}

/// The closing line of `cargo xtask run`.
pub fn summary(transcript: &Transcript, failures: &[String]) -> String {
    if !failures.is_empty() {
        return format!("run: FAILED: {}", failures.join("; "));
    }
    match transcript.emulator_exit {
        EmulatorExit::TimedOut { seconds } => {
            format!("run: ok (stopped at the {seconds} s time limit, nothing failed)")
        }
        _ => "run: ok (powered off cleanly)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::PartitionInfo;

    fn table() -> TableInfo {
        TableInfo {
            path: "/w/partitions/demo.toml".into(),
            stem: "demo".into(),
            cpu_count: 2,
            partitions: ["control", "intruder"]
                .iter()
                .map(|name| PartitionInfo {
                    name: name.to_string(),
                    device_ports: vec![],
                })
                .collect(),
            console_port: Some(0x3e8),
            expect_faults: vec!["intruder".into()],
            run_seconds: None,
        }
    }

    fn transcript(hypervisor_lines: &[&str], emulator_exit: EmulatorExit) -> Transcript {
        Transcript {
            lines: hypervisor_lines
                .iter()
                .map(|text| TranscriptLine {
                    source: HYPERVISOR.into(),
                    text: text.to_string(),
                })
                .collect(),
            emulator_exit,
        }
    }

    const DEFAULT: RunSettings = RunSettings {
        seconds: 120,
        seconds_explicit: false,
        deterministic: false,
    };
    const EXPLICIT: RunSettings = RunSettings {
        seconds: 5,
        seconds_explicit: true,
        deterministic: false,
    };

    #[test]
    fn clean_power_off_passes() {
        let run = transcript(
            &[
                "contained: partition=intruder core=2",
                "power-off: requested by control",
            ],
            EmulatorExit::Exited(0),
        );
        assert!(judge(&run, &table(), DEFAULT).is_empty());
        assert_eq!(summary(&run, &[]), "run: ok (powered off cleanly)");
    }

    #[test]
    fn each_failure_is_named() {
        let run = transcript(
            &[
                "contained: partition=control core=0 reason=npf",
                "PANIC: boom",
            ],
            EmulatorExit::StoppedAfterPanic,
        );
        let failures = judge(&run, &table(), DEFAULT);
        assert_eq!(
            failures,
            [
                "unexpected fault: partition control was contained",
                "hypervisor panic: boom"
            ]
        );
        assert!(summary(&run, &failures).starts_with("run: FAILED: unexpected fault"));
        let run = transcript(
            &["power-off: requested by control"],
            EmulatorExit::Exited(3),
        );
        assert_eq!(
            judge(&run, &table(), DEFAULT),
            ["QEMU exited with status 3"]
        );
        let run = transcript(&[], EmulatorExit::Exited(0));
        assert_eq!(
            judge(&run, &table(), DEFAULT),
            ["QEMU exited before the power-off marker"]
        );
    }

    #[test]
    fn running_out_of_time_fails_only_without_an_explicit_bound() {
        let run = transcript(
            &["Tessera backend=svm"],
            EmulatorExit::TimedOut { seconds: 5 },
        );
        assert_eq!(judge(&run, &table(), DEFAULT), ["timed out after 5 s"]);
        assert!(judge(&run, &table(), EXPLICIT).is_empty());
        assert!(summary(&run, &[]).starts_with("run: ok (stopped at the 5 s time limit"));
    }
}
