//! `linux_boot_slowdown`: Debian's kernel to /init in a Linux partition against the same
//! kernel, initramfs and command line booted bare in the same QEMU, in interleaved runs
//! (bare, partition, partition beside the rt guest, bare, …).
//!
//! Two partition machines: partitions/linux-bench.toml (the figure: the Linux partition
//! alone on a two-core QEMU, the bare machine's core count, nothing else running) and
//! partitions/linux-rt.toml (`linux_boot_slowdown_beside_rt`: the same partition on cores 1
//! and 2 of four, beside the rt guest that spins on core 3 — under TCG each emulated core is
//! a host thread, so the rt guest takes host CPU time from Linux's cores).
//!
//! Each run stops at /init's `TESSERA-LINUX: init reached tsc=<TSC>` line. The figure is
//! read from guest TSCs, not from polling: under QEMU TCG the TSC runs at the host's rate
//! from the machine's start, and the hypervisor does not offset it. Bare: the marker's TSC
//! (from QEMU's start: SeaBIOS, the real-mode setup code and the kernel). Partition: the
//! marker's TSC minus the TSC of the hypervisor's `started: partition=linux …` line (the
//! Linux partition's first instruction), and, reported separately, the marker's TSC alone
//! (with the hypervisor's own boot). The slowdown is the ratio of the medians.
//!
//! Per phase (`linux_phase_*`): the host's clock when each phase's first console line
//! appears (polled every 20 ms): the decompressor's first line (`KASLR disabled`), the
//! kernel's first (`Linux version`), `smp: Bringing up`, `smp: Brought up`, `Run /init`,
//! the marker; the start is QEMU's start (bare) or the `started:` line (partition). And the
//! QEMU process's CPU time (user + system, `/proc/<pid>/stat`) over the same span
//! (`linux_boot_cpu_ratio`): the emulation work, which the other load on the host disturbs
//! less than the wall clock.
//!
//! Not under `-icount`: Linux in a partition runs in x2APIC mode, whose timer MSRs need
//! `one-insn-per-tb` under -icount (QEMU 10), which makes a Linux boot several minutes
//! long; the runs are wall-clock (TSC) measurements and vary with the host's load.
//!
//! What differs in the bare machine (as close as QEMU's q35 allows): it has SeaBIOS, the
//! 16-bit boot path, a PIT, a PIC, an RTC and PCI (`pci=off` keeps Linux off PCI, `hpet=off`
//! removes the HPET), ACPI tables from QEMU (not hardware-reduced), its local APICs start
//! in xAPIC mode (Linux stays in xAPIC: no interrupt remapping), and Linux calibrates the
//! TSC against the PIT instead of taking `tsc_early_khz=`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::checks::INIT_REACHED;
use super::{images, LINUX_RT_TABLE};
use crate::run::{self, BootMedium, BootMethod, Emulator};
use crate::serial::{self, FollowedFile};
use crate::transcript::HYPERVISOR;
use crate::{image, process, qemu, table};
/// The figure's name.
pub const FIGURE: &str = "linux_boot_slowdown";
/// The other figures this measurement reports.
pub const BARE_SECONDS: &str = "linux_boot_seconds_bare";
pub const PARTITION_SECONDS: &str = "linux_boot_seconds_partition";
pub const WITH_HYPERVISOR: &str = "linux_boot_slowdown_with_hypervisor_boot";
pub const BESIDE_RT: &str = "linux_boot_slowdown_beside_rt";
pub const BESIDE_RT_SECONDS: &str = "linux_boot_seconds_partition_beside_rt";
pub const CPU_RATIO: &str = "linux_boot_cpu_ratio";
pub const UNASSIGNED_PORT_EXITS: &str = "linux_unassigned_port_exits";
/// Every figure name: the ones above and `linux_phase_<phase>_<setup>_s` per phase and setup.
pub const NAMES: &[&str] = &[
    FIGURE,
    BARE_SECONDS,
    PARTITION_SECONDS,
    WITH_HYPERVISOR,
    BESIDE_RT,
    BESIDE_RT_SECONDS,
    CPU_RATIO,
    UNASSIGNED_PORT_EXITS,
];
/// The table of the figure: the Linux partition alone on two cores.
pub const LINUX_BENCH_TABLE: &str = "partitions/linux-bench.toml";
/// The Linux partition's name in both tables.
const LINUX: &str = "linux";
/// Runs of each setup.
const RUNS: usize = 5;
/// A run that has not reached /init by then failed.
const RUN_SECONDS: u64 = 300;

/// The console lines that end each phase, in boot order, with the phase's name: each phase
/// runs from the previous line (or the run's start) to the first line containing its text.
pub const PHASES: [(&str, &str); 6] = [
    // Bare: QEMU, SeaBIOS, the real-mode setup code and the decompressor's own start-up;
    // in a partition: the decompressor's start-up (it is entered at its 64-bit entry).
    ("firmware_setup", "KASLR disabled"),
    // Decompressing and relocating the kernel, up to the kernel's first message.
    ("decompressor", "Linux version"),
    ("kernel_early", "smp: Bringing up secondary CPUs"),
    ("smp", "smp: Brought up"),
    ("drivers", "Run /init as init process"),
    ("init", INIT_REACHED),
];

/// The bare QEMU command line (after the program name).
pub fn bare_arguments(
    vmlinuz: &Path,
    initramfs: &Path,
    cmdline: &str,
    serial: &Path,
) -> Vec<String> {
    [
        "-machine",
        "q35,hpet=off",
        "-accel",
        "tcg",
        "-cpu",
        "qemu64,+x2apic,+sha-ni",
        "-smp",
        "2",
        "-m",
        "256",
        "-kernel",
        &vmlinuz.display().to_string(),
        "-initrd",
        &initramfs.display().to_string(),
        "-append",
        cmdline,
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        &format!("file:{}", serial.display()),
    ]
    .iter()
    .map(|argument| argument.to_string())
    .collect()
}

/// The TSC of the Linux partition's first start on the hypervisor console.
pub fn partition_start_tsc(hypervisor_line: &str, partition: &str) -> Option<u64> {
    let rest = hypervisor_line.strip_prefix(&format!("started: partition={partition} "))?;
    let tsc = &rest[rest.find("tsc=")? + 4..];
    tsc.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The TSC on /init's marker line.
pub fn marker_tsc(line: &str) -> Option<u64> {
    let rest = &line[line.find(INIT_REACHED)? + INIT_REACHED.len()..];
    let tsc = &rest[rest.find("tsc=")? + 4..];
    tsc.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The hypervisor's calibrated TSC rate from its banner (`… tsc=2600111kHz`).
pub fn banner_khz(line: &str) -> Option<u64> {
    let rest = &line[line.find(" tsc=")? + 5..];
    rest.strip_suffix("kHz")
        .or_else(|| rest.split_whitespace().next()?.strip_suffix("kHz"))?
        .parse()
        .ok()
}

/// The `unassigned-port-accesses=` of `partition`'s `exits:` line (printed at power-off).
pub fn unassigned_port_accesses(hypervisor_line: &str, partition: &str) -> Option<u64> {
    let rest = hypervisor_line.strip_prefix("exits: partition=")?;
    let rest = rest.strip_prefix(partition)?.strip_prefix(' ')?;
    let value =
        &rest[rest.find("unassigned-port-accesses=")? + "unassigned-port-accesses=".len()..];
    value
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU seconds of a process from the text of `/proc/<pid>/stat` (fields
/// 14 and 15, in clock ticks of `ticks_per_second`).
pub fn cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / ticks_per_second)
}

fn process_cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| cpu_seconds(&stat, ticks.max(1) as f64))
        .unwrap_or(f64::NAN)
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// One run's readings.
#[derive(Clone, Debug, Default)]
struct Reading {
    /// The marker's TSC.
    init: u64,
    /// The partition's first instruction (0 bare).
    start: u64,
    /// The hypervisor's TSC rate, kHz (0 bare).
    khz: u64,
    /// The partition's `unassigned-port-accesses=` at power-off, when the run waits for it.
    unassigned_port_accesses: Option<u64>,
    /// Host seconds since QEMU's start when the run's start was seen (0 bare; partition: the
    /// `started:` line) and when each phase's line was.
    start_seconds: f64,
    phase_seconds: [Option<f64>; PHASES.len()],
    /// QEMU's CPU seconds at the start and at the marker.
    start_cpu: f64,
    end_cpu: f64,
}

impl Reading {
    /// Notes the phases `line` of the Linux console ends; true at the marker.
    fn linux_line(&mut self, line: &str, seconds: f64) -> bool {
        for (slot, (_, text)) in self.phase_seconds.iter_mut().zip(PHASES) {
            if slot.is_none() && line.contains(text) {
                *slot = Some(seconds);
            }
        }
        match marker_tsc(line) {
            Some(init) => {
                self.init = init;
                true
            }
            None => false,
        }
    }

    /// Each phase's length in seconds (None where a line was missing).
    fn phases(&self) -> [Option<f64>; PHASES.len()] {
        let mut previous = Some(self.start_seconds);
        let mut lengths = [None; PHASES.len()];
        for (length, end) in lengths.iter_mut().zip(self.phase_seconds) {
            *length = match (previous, end) {
                (Some(from), Some(to)) => Some((to - from).max(0.0)),
                _ => None,
            };
            previous = end;
        }
        lengths
    }
}

/// Follows `files` of a started emulator until `line` says the run is over or the time
/// runs out; stops the emulator either way. `line` gets the file's label, the line, the
/// host seconds since the start and QEMU's pid.
pub(super) fn follow(
    mut child: std::process::Child,
    mut files: Vec<FollowedFile>,
    mut line_seen: impl FnMut(&str, &str, f64, u32) -> bool,
) -> Result<()> {
    let started = Instant::now();
    let pid = child.id();
    let result = loop {
        let mut done = false;
        for file in &mut files {
            let lines = file.poll()?;
            let seconds = started.elapsed().as_secs_f64();
            for line in lines {
                if file.label == HYPERVISOR || line.contains("TESSERA-LINUX") {
                    println!("[{}] {line}", file.label);
                }
                if !done {
                    done = line_seen(&file.label, &line, seconds, pid);
                }
            }
        }
        if done {
            break Ok(());
        }
        if process::interrupted() {
            break Err(anyhow::anyhow!("interrupted"));
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "QEMU exited ({status}) before the run's last line"
            ));
        }
        if started.elapsed() > Duration::from_secs(RUN_SECONDS) {
            break Err(anyhow::anyhow!(
                "the run's last line did not come within {RUN_SECONDS} s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    process::stop_group(&mut child)?;
    result
}

pub(super) fn fresh_directory(root: &Path, name: &str) -> Result<PathBuf> {
    let directory = image::target_directory(root)
        .join("tessera")
        .join("run")
        .join(name);
    if directory.exists() {
        std::fs::remove_dir_all(&directory)?;
    }
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    Ok(directory)
}

pub(super) fn spawn(arguments: &[String], output: &Path) -> Result<std::process::Child> {
    let log = File::create(output)?;
    let mut command = Command::new(qemu::BINARY);
    command
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    process::catch_interruptions();
    process::spawn_group(&mut command).context("cannot start QEMU")
}

fn bare_run(root: &Path, images: &images::Images, cmdline: &str) -> Result<Reading> {
    let directory = fresh_directory(root, "linux-bare")?;
    let serial = directory.join("com1.txt");
    let arguments = bare_arguments(&images.vmlinuz, &images.initramfs, cmdline, &serial);
    println!("running: {} {}", qemu::BINARY, arguments.join(" "));
    let child = spawn(&arguments, &directory.join("qemu.txt"))?;
    let mut reading = Reading::default();
    follow(
        child,
        vec![FollowedFile::new("bare", serial)],
        |_, line, seconds, pid| {
            let done = reading.linux_line(line, seconds);
            if done {
                reading.end_cpu = process_cpu_seconds(pid);
            }
            done
        },
    )?;
    Ok(reading)
}

/// A partition machine of the bench: its table, image and run directory.
struct PartitionSetup {
    table: table::TableInfo,
    medium: BootMedium,
    directory: &'static str,
    /// Whether Linux powers the machine off after /init (`tessera.power-off`): the run
    /// then goes on to the partition's exit counters.
    powers_off: bool,
}

impl PartitionSetup {
    fn prepare(
        root: &Path,
        table: &str,
        directory: &'static str,
        powers_off: bool,
    ) -> Result<Self> {
        let table = table::load(&root.join(table))?;
        let emulator = Emulator::Qemu {
            boot: BootMethod::Kernel,
            cpu: None,
        };
        let medium = run::prepare(root, &table, &emulator)?;
        Ok(Self {
            table,
            medium,
            directory,
            powers_off,
        })
    }

    fn run(&self, root: &Path) -> Result<Reading> {
        let directory = fresh_directory(root, self.directory)?;
        let captures = serial::serial_captures(&self.table, &directory);
        let arguments = qemu::arguments(&self.table, &self.medium, None, &captures, false);
        println!("running: {} {}", qemu::BINARY, arguments.join(" "));
        let child = spawn(&arguments, &directory.join("qemu.txt"))?;
        // The hypervisor's console first: a poll that finds the `started:` line and Linux's
        // first lines together must see the start before them.
        let mut files: Vec<FollowedFile> = captures
            .into_iter()
            .map(|capture| FollowedFile::new(capture.label, capture.file))
            .collect();
        files.sort_by_key(|file| file.label != HYPERVISOR);
        let mut reading = Reading::default();
        follow(child, files, |label, line, seconds, pid| {
            if label == HYPERVISOR {
                if reading.khz == 0 && line.starts_with("Tessera") {
                    reading.khz = banner_khz(line).unwrap_or(0);
                }
                if reading.start == 0 {
                    if let Some(start) = partition_start_tsc(line, LINUX) {
                        reading.start = start;
                        reading.start_seconds = seconds;
                        reading.start_cpu = process_cpu_seconds(pid);
                    }
                }
                if reading.init != 0 {
                    if let Some(count) = unassigned_port_accesses(line, LINUX) {
                        reading.unassigned_port_accesses = Some(count);
                        return true;
                    }
                }
            } else if label == LINUX
                && reading.start != 0
                && reading.init == 0
                && reading.linux_line(line, seconds)
            {
                reading.end_cpu = process_cpu_seconds(pid);
                return !self.powers_off;
            }
            false
        })?;
        if reading.init <= reading.start {
            bail!(
                "the marker's TSC {} is not after the partition's start {}",
                reading.init,
                reading.start
            );
        }
        if reading.khz == 0 {
            bail!("the hypervisor banner gave no TSC rate");
        }
        Ok(reading)
    }
}

/// One measured figure: value, unit and method (the bench report's fields).
#[derive(Clone, Debug)]
pub struct Figure {
    pub value: f64,
    pub unit: String,
    pub method: String,
}

/// Rounds to `digits` decimals.
pub(super) fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The readings of one setup over the runs.
#[derive(Default)]
struct Series {
    readings: Vec<Reading>,
}

impl Series {
    /// Seconds to /init: from QEMU's start (bare) or the partition's start, by the TSC.
    fn seconds(&self, from_reset: bool) -> Vec<f64> {
        self.readings
            .iter()
            .map(|reading| {
                // Bare runs have no rate of their own: the TSC runs at the host's rate, which
                // the partition runs' hypervisor measured (`khz`, filled in below).
                let start = if from_reset { 0 } else { reading.start };
                (reading.init - start) as f64 / (reading.khz as f64 * 1000.0)
            })
            .collect()
    }

    fn median_seconds(&self, from_reset: bool) -> f64 {
        median(&self.seconds(from_reset)).unwrap_or(f64::NAN)
    }

    fn list(&self, from_reset: bool) -> String {
        self.seconds(from_reset)
            .iter()
            .map(|value| format!("{value:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn median_phase(&self, phase: usize) -> Option<f64> {
        let values: Vec<f64> = self
            .readings
            .iter()
            .filter_map(|reading| reading.phases()[phase])
            .collect();
        (values.len() == self.readings.len())
            .then(|| median(&values))
            .flatten()
    }

    fn median_cpu(&self) -> f64 {
        let values: Vec<f64> = self
            .readings
            .iter()
            .map(|reading| reading.end_cpu - reading.start_cpu)
            .collect();
        median(&values).unwrap_or(f64::NAN)
    }
}

/// Measures the figures; returns them by name.
pub fn measure(root: &Path) -> Result<Vec<(String, Figure)>> {
    let images = images::ensure(root)?;
    let path = root.join(LINUX_BENCH_TABLE);
    let parsed = tessera_config::load_without_files(&path)
        .map_err(|diagnostics| anyhow::anyhow!("{}", diagnostics.render().trim_end()))?;
    let cmdline = parsed
        .partitions
        .iter()
        .find(|partition| partition.name.as_str() == LINUX)
        .and_then(|partition| partition.boot.cmdline.as_deref().cloned())
        .unwrap_or_default();
    let alone = PartitionSetup::prepare(root, LINUX_BENCH_TABLE, "linux-bench", true)?;
    let beside_rt = PartitionSetup::prepare(root, LINUX_RT_TABLE, "linux-rt-bench", false)?;

    let mut bare = Series::default();
    let mut partition = Series::default();
    let mut beside = Series::default();
    for round in 1..=RUNS {
        println!("== bench: {FIGURE}: bare run {round} of {RUNS}");
        bare.readings.push(bare_run(root, &images, &cmdline)?);
        println!("== bench: {FIGURE}: partition run {round} of {RUNS} ({LINUX_BENCH_TABLE})");
        partition.readings.push(alone.run(root)?);
        println!("== bench: {FIGURE}: partition run {round} of {RUNS} ({LINUX_RT_TABLE})");
        beside.readings.push(beside_rt.run(root)?);
    }
    // The TSC rate for the bare runs: the partition runs' calibration of the same host's TSC.
    let khz = partition.readings.last().map_or(0, |reading| reading.khz);
    for reading in &mut bare.readings {
        reading.khz = khz;
    }
    let bare_median = bare.median_seconds(true);
    let partition_median = partition.median_seconds(false);
    let beside_median = beside.median_seconds(false);
    let total_median = partition.median_seconds(true);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let runs = format!(
        "{RUNS} interleaved runs each (bare {} s; partition {} s; partition incl. hypervisor \
         boot {} s; partition beside rt {} s); QEMU TCG without -icount, so wall-clock \
         figures that vary with the host's load (load average at the end: {load})",
        bare.list(true),
        partition.list(false),
        partition.list(true),
        beside.list(false),
    );
    let setup = format!(
        "kernel linux-image-6.1.0-56-amd64 6.1.192-2 and target/linux/initramfs.cpio.gz; \
         partition: {LINUX_BENCH_TABLE} (the Linux partition alone: 2 cores of a 2-core QEMU, \
         256 MiB); bare: qemu-system-x86_64 -machine q35,hpet=off -cpu qemu64,+x2apic,+sha-ni -smp 2 \
         -m 256 -kernel -initrd -append <the partition's command line> (SeaBIOS, PIT/PIC/RTC, \
         xAPIC)"
    );
    let mut figures = vec![
        (
            FIGURE.to_string(),
            Figure {
                value: round(partition_median / bare_median, 3),
                unit: "ratio".into(),
                method: format!(
                    "median guest-TSC ticks from the linux partition's first instruction \
                     (hypervisor `started:` line) to /init's `{INIT_REACHED} tsc=` over the \
                     median ticks from QEMU's start to the same marker booted bare; {setup}; {runs}"
                ),
            },
        ),
        (
            WITH_HYPERVISOR.to_string(),
            Figure {
                value: round(total_median / bare_median, 3),
                unit: "ratio".into(),
                method: format!(
                    "as {FIGURE}, but the partition's time counts from QEMU's start (SeaBIOS, \
                     the hypervisor's boot, then Linux); {runs}"
                ),
            },
        ),
        (
            BESIDE_RT.to_string(),
            Figure {
                value: round(beside_median / bare_median, 3),
                unit: "ratio".into(),
                method: format!(
                    "as {FIGURE}, the partition in {LINUX_RT_TABLE} (cores 1 and 2 of a 4-core \
                     QEMU, beside the rt guest's timer loop spinning on core 3: a third busy \
                     emulated core, which the bare machine does not have); {runs}"
                ),
            },
        ),
        (
            BARE_SECONDS.to_string(),
            Figure {
                value: round(bare_median, 2),
                unit: "s".into(),
                method: format!("median TSC at /init booted bare / the TSC rate; {runs}"),
            },
        ),
        (
            PARTITION_SECONDS.to_string(),
            Figure {
                value: round(partition_median, 2),
                unit: "s".into(),
                method: format!(
                    "median TSC from the partition's first instruction to /init / the \
                     hypervisor's calibrated TSC rate ({LINUX_BENCH_TABLE}); {runs}"
                ),
            },
        ),
        (
            BESIDE_RT_SECONDS.to_string(),
            Figure {
                value: round(beside_median, 2),
                unit: "s".into(),
                method: format!("as {PARTITION_SECONDS}, {LINUX_RT_TABLE}; {runs}"),
            },
        ),
        (
            CPU_RATIO.to_string(),
            Figure {
                value: round(partition.median_cpu() / bare.median_cpu(), 3),
                unit: "ratio".into(),
                method: format!(
                    "median CPU seconds (user + system, /proc/<pid>/stat) of the QEMU process \
                     from the `started:` line to the marker ({LINUX_BENCH_TABLE}; {:.2} s) over \
                     the same from QEMU's start bare ({:.2} s): the emulation work, less \
                     disturbed by the host's load than the wall clock; {RUNS} runs each",
                    partition.median_cpu(),
                    bare.median_cpu()
                ),
            },
        ),
    ];
    let unassigned: Vec<f64> = partition
        .readings
        .iter()
        .filter_map(|reading| reading.unassigned_port_accesses)
        .map(|count| count as f64)
        .collect();
    if unassigned.len() == partition.readings.len() {
        figures.push((
            UNASSIGNED_PORT_EXITS.to_string(),
            Figure {
                value: median(&unassigned).unwrap_or(f64::NAN),
                unit: "exits".into(),
                method: format!(
                    "the linux partition's `unassigned-port-accesses=` (one I/O exit each: \
                     accesses to ports the partition does not own, PIT, RTC, PIC, legacy \
                     probes) over the whole boot, read from its `exits:` line at power-off \
                     ({LINUX_BENCH_TABLE}: /init powers the machine off after printing its \
                     lines, `tessera.power-off`); median of {RUNS} runs ({:?})",
                    unassigned
                ),
            },
        ));
    }
    for (index, (phase, text)) in PHASES.iter().enumerate() {
        for (setup, series, from) in [
            ("bare", &bare, "QEMU's start"),
            ("partition", &partition, "the `started:` line"),
            ("beside_rt", &beside, "the `started:` line"),
        ] {
            let Some(value) = series.median_phase(index) else {
                continue;
            };
            let previous = match index {
                0 => from.to_string(),
                _ => format!("`{}`", PHASES[index - 1].1),
            };
            figures.push((
                format!("linux_phase_{phase}_{setup}_s"),
                Figure {
                    value: round(value, 2),
                    unit: "s".into(),
                    method: format!(
                        "median host seconds from {previous} to the first console line with \
                         `{text}` ({setup}; lines polled every 20 ms); {RUNS} interleaved runs"
                    ),
                },
            ));
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tsc_lines() {
        assert_eq!(
            partition_start_tsc(
                "started: partition=linux core=1 entry=0x1000200 tsc=2380247744 (first guest instruction)",
                "linux"
            ),
            Some(2_380_247_744)
        );
        assert_eq!(
            partition_start_tsc("started: partition=rt core=3 entry=0x100000 tsc=5", "linux"),
            None
        );
        assert_eq!(
            marker_tsc("TESSERA-LINUX: init reached tsc=21476144992"),
            Some(21_476_144_992)
        );
        assert_eq!(marker_tsc("TESSERA-LINUX: init reached"), None);
        assert_eq!(
            banner_khz("Tessera 0.1.0 backend=svm table=linux-rt.toml platform=qemu-q35 cores=[0, 1, 2, 3] tsc=2600111kHz"),
            Some(2_600_111)
        );
    }

    #[test]
    fn reads_the_unassigned_port_accesses_at_power_off() {
        let line = "exits: partition=linux state=Running cpuid=10114 io=158 msr-read=44 \
                    total=6766 unassigned-port-accesses=158 dropped-ipis=0";
        assert_eq!(unassigned_port_accesses(line, "linux"), Some(158));
        assert_eq!(unassigned_port_accesses(line, "rt"), None);
        assert_eq!(
            unassigned_port_accesses(
                "exits: partition=linux-2 state=Running unassigned-port-accesses=3",
                "linux"
            ),
            None
        );
        assert_eq!(
            unassigned_port_accesses("started: partition=linux core=0", "linux"),
            None
        );
    }

    #[test]
    fn reads_the_cpu_time_of_a_process() {
        let stat = "4242 (qemu-system-x86 (x)) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 5 0 100 0 0";
        assert_eq!(cpu_seconds(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds("4242 (qemu) S 1", 100.0), None);
    }

    #[test]
    fn splits_a_run_into_phases() {
        let mut reading = Reading {
            start_seconds: 1.0,
            ..Reading::default()
        };
        let lines = [
            (1.5, "KASLR disabled: 'nokaslr' on cmdline."),
            (4.0, "[    0.000000] Linux version 6.1.0-56-amd64"),
            (4.5, "[    0.5] smp: Bringing up secondary CPUs ..."),
            (4.75, "[    0.7] smp: Brought up 1 node, 2 CPUs"),
            (6.0, "[    2.0] Run /init as init process"),
        ];
        for (seconds, line) in lines {
            assert!(!reading.linux_line(line, seconds));
        }
        assert!(reading.linux_line("TESSERA-LINUX: init reached tsc=99", 6.5));
        assert_eq!(reading.init, 99);
        assert_eq!(
            reading.phases(),
            [
                Some(0.5),
                Some(2.5),
                Some(0.5),
                Some(0.25),
                Some(1.25),
                Some(0.5)
            ]
        );
        // A missing line leaves its phase and the next one unmeasured.
        let mut partial = Reading::default();
        partial.linux_line("KASLR disabled", 1.0);
        partial.linux_line("Linux version", 2.0);
        assert_eq!(partial.phases()[..3], [Some(1.0), Some(1.0), None]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_bare_machine_boots_the_same_files_and_command_line() {
        let arguments = bare_arguments(
            Path::new("/t/vmlinuz"),
            Path::new("/t/initramfs.cpio.gz"),
            "console=ttyS0 pci=off",
            Path::new("/r/com1.txt"),
        );
        assert_eq!(
            arguments.join(" "),
            "-machine q35,hpet=off -accel tcg -cpu qemu64,+x2apic,+sha-ni -smp 2 -m 256 \
             -kernel /t/vmlinuz -initrd /t/initramfs.cpio.gz -append console=ttyS0 pci=off \
             -display none -no-reboot -monitor none -serial file:/r/com1.txt"
        );
    }
}
