//! Booting an image in an emulator: streaming every UART, bounding the time, judging the
//! outcome.
//!
//! Everything here serves QEMU and Bochs alike; they differ only in how the emulator is
//! started ([`qemu::launch`], [`bochs::launch`]) and in whether it exits by itself on the
//! hypervisor's ACPI power-off ([`Emulator::exits_on_power_off`]). Stopping is always the
//! same: kill every process group the emulator made ([`process::stop_group`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::markers::{self, Marker};
use crate::serial::{self, FollowedFile};
use crate::table::TableInfo;
use crate::transcript::{EmulatorExit, Transcript, TranscriptLine, HYPERVISOR};
use crate::{bochs, image, install, iso, process, qemu};

/// How often the output files are read.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the console keeps being read after a hypervisor panic or refusal before the
/// emulator is stopped (the hypervisor halts after either; waiting for the time bound would
/// only waste it).
const PANIC_GRACE: Duration = Duration::from_secs(1);
/// For an emulator that may not act on ACPI power-off: how long after the hypervisor's last
/// line (`Tessera: power off`) it is stopped …
const SWITCHING_OFF_GRACE: Duration = Duration::from_millis(500);
/// How long after `Tessera: machine reset` the machine may take to exit or boot the
/// hypervisor again (Bochs runs its BIOS and GRUB first) before the reset counts as failed.
const RESET_GRACE: Duration = Duration::from_secs(120);
/// … and how long after `power-off: requested by` if that last line never comes.
const POWER_OFF_GRACE: Duration = Duration::from_secs(5);
/// For an emulator that exits by itself on power-off (QEMU): how long it may take.
const POWER_OFF_WAIT: Duration = Duration::from_secs(10);

/// How an emulator gets the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BootMethod {
    /// The ELF image itself, as a Multiboot kernel (QEMU `-kernel`).
    Kernel,
    /// A GRUB ISO (`cargo xtask iso`) holding the image, booted from a CD-ROM drive; GRUB
    /// loads it with `multiboot` (v1).
    Grub,
    /// The same through GRUB's `multiboot2` command (the image's Multiboot2 header), on BIOS.
    Grub2,
    /// The Multiboot2 GRUB ISO booted by UEFI firmware (OVMF) instead of the BIOS.
    Uefi,
}

/// The emulator and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emulator {
    /// QEMU TCG: AMD SVM + NPT. `cpu` replaces the `-cpu` value.
    Qemu {
        boot: BootMethod,
        cpu: Option<String>,
    },
    /// Bochs: Intel VMX + EPT or AMD SVM, by CPU model; always boots the GRUB ISO.
    Bochs { cpu: String },
}

impl Emulator {
    /// The name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Emulator::Qemu { .. } => "QEMU",
            Emulator::Bochs { .. } => "Bochs",
        }
    }

    /// Whether it exits by itself, with status 0, when the hypervisor powers off through
    /// ACPI. Bochs' exit status is always 1, so it is judged by the markers alone.
    pub fn exits_on_power_off(&self) -> bool {
        matches!(self, Emulator::Qemu { .. })
    }

    pub fn boot_method(&self) -> BootMethod {
        match self {
            Emulator::Qemu { boot, .. } => *boot,
            Emulator::Bochs { .. } => BootMethod::Grub,
        }
    }

    /// The run directory's name under `target/tessera/run/`: the table's stem, then what
    /// tells this emulator's runs apart (`demo`, `demo-qemu-grub`, `demo-bochs`,
    /// `demo-bochs-corei7_skylake_x`).
    pub fn run_directory_name(&self, stem: &str) -> String {
        match self {
            Emulator::Qemu {
                boot: BootMethod::Kernel,
                ..
            } => stem.to_string(),
            Emulator::Qemu {
                boot: BootMethod::Grub,
                ..
            } => format!("{stem}-qemu-grub"),
            Emulator::Qemu {
                boot: BootMethod::Grub2,
                ..
            } => format!("{stem}-qemu-grub2"),
            Emulator::Qemu {
                boot: BootMethod::Uefi,
                ..
            } => format!("{stem}-qemu-uefi"),
            Emulator::Bochs { cpu } if cpu == bochs::DEFAULT_CPU => format!("{stem}-bochs"),
            Emulator::Bochs { cpu } => format!("{stem}-bochs-{cpu}"),
        }
    }

    /// Checks that the emulator (for an ISO, GRUB's tools; for UEFI, GRUB's UEFI modules and
    /// the OVMF firmware) is installed; as root installs what is missing.
    pub fn ensure_installed(&self, root: &Path) -> Result<install::Installation> {
        let emulator = match self {
            Emulator::Qemu { .. } => qemu::ensure_installed(root)?,
            Emulator::Bochs { .. } => bochs::ensure_installed(root)?,
        };
        let uefi = self.boot_method() == BootMethod::Uefi;
        if emulator != install::Installation::Ready || self.boot_method() == BootMethod::Kernel {
            return Ok(emulator);
        }
        let tools = iso::ensure_installed(root, uefi)?;
        if tools != install::Installation::Ready || !uefi {
            return Ok(tools);
        }
        qemu::ensure_firmware(root)
    }
}

/// What the emulator boots: the image's path, or the ISO's that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootMedium {
    Kernel(PathBuf),
    Cdrom(PathBuf),
    /// A GRUB ISO in the CD-ROM drive of a machine with UEFI firmware.
    UefiCdrom(PathBuf),
}

/// Builds what `emulator` boots for `table`: the image, and for GRUB the ISO around it.
pub fn prepare(root: &Path, table: &TableInfo, emulator: &Emulator) -> Result<BootMedium> {
    let image = image::build(root, table)?;
    let iso = |protocol| iso::build(root, table, &image, protocol);
    Ok(match emulator.boot_method() {
        BootMethod::Kernel => BootMedium::Kernel(image.clone()),
        BootMethod::Grub => BootMedium::Cdrom(iso(iso::Protocol::Multiboot1)?),
        BootMethod::Grub2 => BootMedium::Cdrom(iso(iso::Protocol::Multiboot2)?),
        BootMethod::Uefi => BootMedium::UefiCdrom(iso(iso::Protocol::Multiboot2)?),
    })
}

/// How to start one emulator, made by [`qemu::launch`] or [`bochs::launch`].
pub struct Launch {
    pub command: Command,
    /// The command line as shown to the user.
    pub shown: String,
    /// The file that takes the emulator's standard output and error.
    pub output: PathBuf,
    /// The emulator's own messages, streamed under its label.
    pub messages: Vec<FollowedFile>,
}

/// How to run one image.
#[derive(Clone, Copy, Debug)]
pub struct RunSettings {
    /// The time bound.
    pub seconds: u64,
    /// Whether the user chose the time bound: running out of it is then no failure.
    pub seconds_explicit: bool,
    /// Reproducible output: QEMU counts instructions instead of real time (Bochs always
    /// does, with `clock: sync=none, time0=1`).
    pub deterministic: bool,
}

/// Boots `medium` in `emulator`, streams its output as `[source] line` and returns it all.
/// The output files go to `target/tessera/run/<run directory name>/`, emptied first.
pub fn boot(
    target: &Path,
    table: &TableInfo,
    emulator: &Emulator,
    medium: &BootMedium,
    settings: RunSettings,
) -> Result<Transcript> {
    let directory = target
        .join("tessera")
        .join("run")
        .join(emulator.run_directory_name(&table.stem));
    if directory.exists() {
        std::fs::remove_dir_all(&directory)
            .with_context(|| format!("cannot clear {}", directory.display()))?;
    }
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;

    if let Emulator::Qemu { .. } = emulator {
        crate::disk::write_images(table, &directory)?;
    }
    let captures = serial::serial_captures(table, &directory);
    let launch = match emulator {
        Emulator::Qemu { cpu, .. } => qemu::launch(
            table,
            medium,
            cpu.as_deref(),
            &captures,
            settings.deterministic,
            &directory,
        ),
        Emulator::Bochs { cpu } => bochs::launch(table, medium, cpu, &captures, &directory)?,
    };
    println!("running: {}", launch.shown);

    let uart_files = captures
        .iter()
        .map(|capture| (capture.label.clone(), capture.file.clone()))
        .collect();
    let mut followed: Vec<FollowedFile> = captures
        .into_iter()
        .map(|capture| FollowedFile::new(capture.label, capture.file))
        .collect();
    followed.extend(launch.messages);

    let output = File::create(&launch.output)
        .with_context(|| format!("cannot create {}", launch.output.display()))?;
    let mut command = launch.command;
    command
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    process::catch_interruptions();
    let mut child = process::spawn_group(&mut command)
        .with_context(|| format!("cannot start {}", emulator.name()))?;

    let mut lines = Vec::new();
    let started = Instant::now();
    let mut progress = Progress::default();
    let watch = Watch {
        exits_on_power_off: emulator.exits_on_power_off(),
        seconds: settings.seconds,
    };
    let emulator_exit = loop {
        for file in &mut followed {
            for text in file.poll()? {
                let now = started.elapsed();
                progress.note(record(&mut lines, &file.label, text).as_ref(), now);
            }
        }
        let state = match child.try_wait()? {
            Some(status) => ProcessState::Exited(status.code()),
            None => ProcessState::Running,
        };
        if let Some(exit) = decide(
            &progress,
            started.elapsed(),
            state,
            watch,
            process::interrupted(),
        ) {
            // Also when it exited by itself: a process it started may still be running.
            process::stop_group(&mut child)?;
            break exit;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    for file in &mut followed {
        for text in file.finish()? {
            record(&mut lines, &file.label, text);
        }
    }
    Ok(Transcript {
        emulator: emulator.name(),
        lines,
        emulator_exit,
        uart_files,
    })
}

/// Prints and keeps one line; returns its marker if it is a hypervisor console marker.
fn record(lines: &mut Vec<TranscriptLine>, source: &str, text: String) -> Option<Marker> {
    println!("[{source}] {text}");
    let marker = (source == HYPERVISOR)
        .then(|| markers::parse(&text))
        .flatten();
    lines.push(TranscriptLine {
        source: source.to_string(),
        text,
    });
    marker
}

/// When, since the start of the run, the markers that end a run first appeared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// `PANIC:` or `REFUSED:`: the hypervisor halts.
    pub ended: Option<Duration>,
    /// `power-off: requested by …`.
    pub power_off: Option<Duration>,
    /// `Tessera: power off`, the hypervisor's last line.
    pub switching_off: Option<Duration>,
    /// `Tessera: machine reset`, the hypervisor's last line before a reset.
    pub machine_reset: Option<Duration>,
    /// A boot banner after [`Progress::machine_reset`]: the machine booted again.
    pub booted_after_reset: Option<Duration>,
}

impl Progress {
    /// Notes a hypervisor console marker seen `now`.
    pub fn note(&mut self, marker: Option<&Marker>, now: Duration) {
        let slot = match marker {
            Some(Marker::Panic { .. } | Marker::Refused { .. }) => &mut self.ended,
            Some(Marker::PowerOff { .. }) => &mut self.power_off,
            Some(Marker::SwitchingOff) => &mut self.switching_off,
            Some(Marker::MachineReset) => &mut self.machine_reset,
            Some(Marker::Banner { .. }) if self.machine_reset.is_some() => {
                &mut self.booted_after_reset
            }
            _ => return,
        };
        slot.get_or_insert(now);
    }
}

/// Whether the emulator process is still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    /// It exited, with this status (`None`: a signal ended it).
    Exited(Option<i32>),
}

/// What the stop rules need to know about the run.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    /// See [`Emulator::exits_on_power_off`].
    pub exits_on_power_off: bool,
    /// The time bound.
    pub seconds: u64,
}

/// The stop rules: `Some(how the run ended)` once it has ended or must be stopped.
pub fn decide(
    progress: &Progress,
    now: Duration,
    state: ProcessState,
    watch: Watch,
    interrupted: bool,
) -> Option<EmulatorExit> {
    let passed =
        |since: Option<Duration>, grace: Duration| since.is_some_and(|at| now >= at + grace);
    if let ProcessState::Exited(status) = state {
        return Some(match status {
            _ if progress.machine_reset.is_some() => {
                EmulatorExit::MachineReset { took_effect: true }
            }
            _ if !watch.exits_on_power_off && progress.power_off.is_some() => {
                EmulatorExit::PoweredOff
            }
            Some(status) => EmulatorExit::Exited(status),
            None => EmulatorExit::Signalled,
        });
    }
    if interrupted {
        return Some(EmulatorExit::Interrupted);
    }
    if passed(progress.ended, PANIC_GRACE) {
        return Some(EmulatorExit::StoppedAfterPanic);
    }
    // A reset ends the run: QEMU (`-no-reboot`) exits by itself, Bochs boots again.
    if progress.booted_after_reset.is_some() {
        return Some(EmulatorExit::MachineReset { took_effect: true });
    }
    if passed(progress.machine_reset, RESET_GRACE) {
        return Some(EmulatorExit::MachineReset { took_effect: false });
    }
    if watch.exits_on_power_off {
        if passed(progress.power_off, POWER_OFF_WAIT) {
            return Some(EmulatorExit::StillRunningAfterPowerOff {
                seconds: POWER_OFF_WAIT.as_secs(),
            });
        }
    } else if passed(progress.switching_off, SWITCHING_OFF_GRACE)
        || passed(progress.power_off, POWER_OFF_GRACE)
    {
        return Some(EmulatorExit::PoweredOff);
    }
    if now >= Duration::from_secs(watch.seconds) {
        return Some(EmulatorExit::TimedOut {
            seconds: watch.seconds,
        });
    }
    None
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
        EmulatorExit::Exited(0) | EmulatorExit::PoweredOff if powered_off => {}
        // The machine-reset health action of a partition the table expects to fault (its
        // `contained:` line is judged above).
        EmulatorExit::MachineReset { took_effect: true } => {}
        EmulatorExit::Exited(0) => failures.push(format!(
            "{} exited before the power-off marker",
            transcript.emulator
        )),
        EmulatorExit::TimedOut { .. } if settings.seconds_explicit => {}
        // The panic or refusal is already reported above.
        EmulatorExit::StoppedAfterPanic => {}
        _ => failures.push(transcript.describe_exit()),
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
        EmulatorExit::MachineReset { .. } => "run: ok (the hypervisor reset the machine)".into(),
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
            ram_end: 0x2000_0000,
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
            qemu_devices: vec![],
            bochs_pci_slots: vec![],
            qemu_disks: vec![],
        }
    }

    fn run_of(
        emulator: &'static str,
        hypervisor_lines: &[&str],
        emulator_exit: EmulatorExit,
    ) -> Transcript {
        Transcript {
            emulator,
            lines: hypervisor_lines
                .iter()
                .map(|text| TranscriptLine {
                    source: HYPERVISOR.into(),
                    text: text.to_string(),
                })
                .collect(),
            emulator_exit,
            uart_files: vec![],
        }
    }

    fn transcript(hypervisor_lines: &[&str], emulator_exit: EmulatorExit) -> Transcript {
        run_of("QEMU", hypervisor_lines, emulator_exit)
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
        let bochs = run_of(
            "Bochs",
            &["power-off: requested by control", "Tessera: power off"],
            EmulatorExit::PoweredOff,
        );
        assert!(judge(&bochs, &table(), DEFAULT).is_empty());
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
        let run = run_of("Bochs", &["Tessera backend=vmx"], EmulatorExit::Exited(1));
        assert_eq!(
            judge(&run, &table(), DEFAULT),
            ["Bochs exited with status 1"]
        );
        let run = run_of(
            "Bochs",
            &["REFUSED: the CPU lacks x2APIC"],
            EmulatorExit::StoppedAfterPanic,
        );
        assert_eq!(
            judge(&run, &table(), DEFAULT),
            ["hypervisor refused: the CPU lacks x2APIC"]
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
        let run = transcript(&[], EmulatorExit::Interrupted);
        assert_eq!(judge(&run, &table(), EXPLICIT), ["interrupted"]);
    }

    const QEMU: Watch = Watch {
        exits_on_power_off: true,
        seconds: 60,
    };
    const BOCHS: Watch = Watch {
        exits_on_power_off: false,
        seconds: 60,
    };

    fn seconds(value: f64) -> Duration {
        Duration::from_secs_f64(value)
    }

    #[test]
    fn records_when_each_ending_marker_first_appeared() {
        let mut progress = Progress::default();
        progress.note(None, seconds(1.0));
        progress.note(
            Some(&Marker::Banner {
                backend: markers::Backend::Vmx,
            }),
            seconds(1.0),
        );
        assert_eq!(progress, Progress::default());
        let power_off = Marker::PowerOff {
            requested_by: "control".into(),
        };
        progress.note(Some(&power_off), seconds(2.0));
        progress.note(Some(&power_off), seconds(3.0));
        progress.note(Some(&Marker::SwitchingOff), seconds(4.0));
        progress.note(Some(&Marker::Refused { reason: "x".into() }), seconds(5.0));
        progress.note(Some(&Marker::MachineReset), seconds(6.0));
        assert_eq!(
            progress,
            Progress {
                ended: Some(seconds(5.0)),
                power_off: Some(seconds(2.0)),
                switching_off: Some(seconds(4.0)),
                machine_reset: Some(seconds(6.0)),
                booted_after_reset: None,
            }
        );
    }

    #[test]
    fn an_emulator_that_exits_by_itself_is_waited_for() {
        let running = ProcessState::Running;
        let nothing = Progress::default();
        assert_eq!(decide(&nothing, seconds(59.9), running, QEMU, false), None);
        assert_eq!(
            decide(&nothing, seconds(60.0), running, QEMU, false),
            Some(EmulatorExit::TimedOut { seconds: 60 })
        );
        let powering_off = Progress {
            power_off: Some(seconds(10.0)),
            switching_off: Some(seconds(10.0)),
            ..Progress::default()
        };
        // QEMU is given time to act on ACPI power-off …
        assert_eq!(
            decide(&powering_off, seconds(19.0), running, QEMU, false),
            None
        );
        assert_eq!(
            decide(&powering_off, seconds(20.0), running, QEMU, false),
            Some(EmulatorExit::StillRunningAfterPowerOff { seconds: 10 })
        );
        // … and its exit status counts.
        assert_eq!(
            decide(
                &powering_off,
                seconds(11.0),
                ProcessState::Exited(Some(0)),
                QEMU,
                false
            ),
            Some(EmulatorExit::Exited(0))
        );
        assert_eq!(
            decide(
                &nothing,
                seconds(1.0),
                ProcessState::Exited(None),
                QEMU,
                false
            ),
            Some(EmulatorExit::Signalled)
        );
    }

    #[test]
    fn bochs_is_stopped_shortly_after_the_power_off_marker() {
        let running = ProcessState::Running;
        let requested = Progress {
            power_off: Some(seconds(10.0)),
            ..Progress::default()
        };
        assert_eq!(
            decide(&requested, seconds(14.9), running, BOCHS, false),
            None
        );
        assert_eq!(
            decide(&requested, seconds(15.0), running, BOCHS, false),
            Some(EmulatorExit::PoweredOff)
        );
        let switching = Progress {
            switching_off: Some(seconds(10.2)),
            ..requested
        };
        assert_eq!(
            decide(&switching, seconds(10.6), running, BOCHS, false),
            None
        );
        assert_eq!(
            decide(&switching, seconds(10.7), running, BOCHS, false),
            Some(EmulatorExit::PoweredOff)
        );
        // Bochs' exit status (always 1) counts for nothing after the marker …
        assert_eq!(
            decide(
                &requested,
                seconds(10.1),
                ProcessState::Exited(Some(1)),
                BOCHS,
                false
            ),
            Some(EmulatorExit::PoweredOff)
        );
        // … and is an early exit before it.
        assert_eq!(
            decide(
                &Progress::default(),
                seconds(3.0),
                ProcessState::Exited(Some(1)),
                BOCHS,
                false
            ),
            Some(EmulatorExit::Exited(1))
        );
        // The `Tessera: power off` line alone, without the request line, does not count as
        // a power-off the hypervisor announced.
        let only_last_line = Progress {
            switching_off: Some(seconds(1.0)),
            ..Progress::default()
        };
        assert_eq!(
            decide(
                &only_last_line,
                seconds(2.0),
                ProcessState::Exited(Some(1)),
                BOCHS,
                false
            ),
            Some(EmulatorExit::Exited(1))
        );
    }

    #[test]
    fn panics_refusals_and_interruptions_stop_either_emulator() {
        let running = ProcessState::Running;
        let refused = Progress {
            ended: Some(seconds(2.0)),
            ..Progress::default()
        };
        for watch in [QEMU, BOCHS] {
            assert_eq!(decide(&refused, seconds(2.5), running, watch, false), None);
            assert_eq!(
                decide(&refused, seconds(3.0), running, watch, false),
                Some(EmulatorExit::StoppedAfterPanic)
            );
            assert_eq!(
                decide(&Progress::default(), seconds(0.1), running, watch, true),
                Some(EmulatorExit::Interrupted)
            );
        }
    }

    #[test]
    fn a_machine_reset_ends_the_run_on_either_emulator() {
        let reset = Progress {
            machine_reset: Some(seconds(2.0)),
            ..Progress::default()
        };
        // QEMU (`-no-reboot`) exits by itself.
        assert_eq!(
            decide(
                &reset,
                seconds(2.1),
                ProcessState::Exited(Some(0)),
                QEMU,
                false
            ),
            Some(EmulatorExit::MachineReset { took_effect: true })
        );
        // Bochs boots again: the runner stops it at the new banner.
        assert_eq!(
            decide(&reset, seconds(2.1), ProcessState::Running, BOCHS, false),
            None
        );
        let mut rebooted = reset;
        rebooted.note(
            Some(&Marker::Banner {
                backend: crate::markers::Backend::Vmx,
            }),
            seconds(9.0),
        );
        assert_eq!(
            decide(&rebooted, seconds(9.0), ProcessState::Running, BOCHS, false),
            Some(EmulatorExit::MachineReset { took_effect: true })
        );
        // Neither: the reset did not take effect.
        assert_eq!(
            decide(&reset, seconds(122.0), ProcessState::Running, BOCHS, false),
            Some(EmulatorExit::MachineReset { took_effect: false })
        );
    }

    #[test]
    fn run_directories_tell_emulators_apart() {
        let qemu = |boot| Emulator::Qemu { boot, cpu: None };
        let bochs = |cpu: &str| Emulator::Bochs { cpu: cpu.into() };
        assert_eq!(qemu(BootMethod::Kernel).run_directory_name("demo"), "demo");
        assert_eq!(
            qemu(BootMethod::Grub).run_directory_name("demo"),
            "demo-qemu-grub"
        );
        assert_eq!(
            qemu(BootMethod::Grub2).run_directory_name("demo"),
            "demo-qemu-grub2"
        );
        assert_eq!(
            qemu(BootMethod::Uefi).run_directory_name("demo"),
            "demo-qemu-uefi"
        );
        assert!(qemu(BootMethod::Uefi).exits_on_power_off());
        assert_eq!(
            bochs(bochs::DEFAULT_CPU).run_directory_name("demo"),
            "demo-bochs"
        );
        assert_eq!(
            bochs("ryzen").run_directory_name("demo"),
            "demo-bochs-ryzen"
        );
        assert_eq!(bochs("ryzen").boot_method(), BootMethod::Grub);
        assert!(!bochs("ryzen").exits_on_power_off());
    }
}
