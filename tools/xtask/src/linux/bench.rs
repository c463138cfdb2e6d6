//! `linux_boot_slowdown`: Debian's kernel to /init in the linux partition of
//! partitions/linux-rt.toml, against the same kernel, initramfs and command line booted bare
//! in the same QEMU, in interleaved runs (bare, partition, bare, partition, …).
//!
//! Each run stops at /init's `TESSERA-LINUX: init reached tsc=<TSC>` line. The figure is
//! read from guest TSCs, not from polling: under QEMU TCG the TSC runs at the host's rate
//! from the machine's start, and the hypervisor does not offset it. Bare: the marker's TSC
//! (from QEMU's start: SeaBIOS, the real-mode setup code and the kernel). Partition: the
//! marker's TSC minus the TSC of the hypervisor's `started: partition=linux …` line (the
//! Linux partition's first instruction), and, reported separately, the marker's TSC alone
//! (with the hypervisor's own boot). The slowdown is the ratio of the medians.
//!
//! Not under `-icount`: Linux in a partition runs in x2APIC mode, whose timer MSRs need
//! `one-insn-per-tb` under -icount (QEMU 10), which makes a Linux boot several minutes
//! long; the runs are wall-clock (TSC) measurements and vary with the host's load.
//!
//! What differs in the bare machine (as close as QEMU's q35 allows): it has SeaBIOS, the
//! 16-bit boot path, a PIT, a PIC, an RTC and PCI (`pci=off` keeps Linux off PCI, `hpet=off`
//! removes the HPET), ACPI tables from QEMU (not hardware-reduced), its local APICs start
//! in xAPIC mode (Linux stays in xAPIC: no interrupt remapping), and Linux calibrates the
//! TSC against the PM timer instead of taking `tsc_early_khz=`.

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
pub const NAMES: [&str; 4] = [FIGURE, BARE_SECONDS, PARTITION_SECONDS, WITH_HYPERVISOR];
/// Runs of each setup.
const RUNS: usize = 3;
/// A run that has not reached /init by then failed.
const RUN_SECONDS: u64 = 300;

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
        "qemu64,+x2apic",
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

/// One run's TSC readings.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    /// The marker's TSC.
    init: u64,
    /// The partition's first instruction (0 bare).
    start: u64,
    /// The hypervisor's TSC rate, kHz (0 bare).
    khz: u64,
}

/// Follows `files` of a started emulator until `done` says the run is over (returns the
/// reading) or the time runs out; stops the emulator either way.
fn follow(
    mut child: std::process::Child,
    mut files: Vec<FollowedFile>,
    mut done: impl FnMut(&str, &str) -> Option<Reading>,
) -> Result<Reading> {
    let started = Instant::now();
    let result = loop {
        let mut found = None;
        for file in &mut files {
            for line in file.poll()? {
                if file.label == HYPERVISOR || line.contains("TESSERA-LINUX") {
                    println!("[{}] {line}", file.label);
                }
                if found.is_none() {
                    found = done(&file.label, &line);
                }
            }
        }
        if let Some(reading) = found {
            break Ok(reading);
        }
        if process::interrupted() {
            break Err(anyhow::anyhow!("interrupted"));
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!("QEMU exited ({status}) before /init"));
        }
        if started.elapsed() > Duration::from_secs(RUN_SECONDS) {
            break Err(anyhow::anyhow!("no /init marker within {RUN_SECONDS} s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    process::stop_group(&mut child)?;
    result
}

fn fresh_directory(root: &Path, name: &str) -> Result<PathBuf> {
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

fn spawn(arguments: &[String], output: &Path) -> Result<std::process::Child> {
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
    follow(child, vec![FollowedFile::new("bare", serial)], |_, line| {
        marker_tsc(line).map(|init| Reading {
            init,
            ..Reading::default()
        })
    })
}

fn partition_run(
    root: &Path,
    table: &table::TableInfo,
    medium: &BootMedium,
    linux: &str,
) -> Result<Reading> {
    let directory = fresh_directory(root, "linux-rt-bench")?;
    let captures = serial::serial_captures(table, &directory);
    let arguments = qemu::arguments(table, medium, None, &captures, false);
    println!("running: {} {}", qemu::BINARY, arguments.join(" "));
    let child = spawn(&arguments, &directory.join("qemu.txt"))?;
    let files = captures
        .into_iter()
        .map(|capture| FollowedFile::new(capture.label, capture.file))
        .collect();
    let mut reading = Reading::default();
    follow(child, files, |label, line| {
        if label == HYPERVISOR {
            if reading.khz == 0 && line.starts_with("Tessera") {
                reading.khz = banner_khz(line).unwrap_or(0);
            }
            if reading.start == 0 {
                reading.start = partition_start_tsc(line, linux).unwrap_or(0);
            }
        } else if label == linux && reading.start != 0 {
            if let Some(init) = marker_tsc(line) {
                return Some(Reading { init, ..reading });
            }
        }
        None
    })
}

/// One measured figure: value, unit and method (the bench report's fields).
#[derive(Clone, Debug)]
pub struct Figure {
    pub value: f64,
    pub unit: String,
    pub method: String,
}

/// Measures the figures; returns them by name.
pub fn measure(root: &Path) -> Result<Vec<(String, Figure)>> {
    let images = images::ensure(root)?;
    let path = root.join(LINUX_RT_TABLE);
    let table = table::load(&path)?;
    let expected = super::checks::Expectations::from_table(&path)?;
    let parsed = tessera_config::load_without_files(&path)
        .map_err(|diagnostics| anyhow::anyhow!("{}", diagnostics.render().trim_end()))?;
    let cmdline = parsed
        .partitions
        .iter()
        .find(|partition| partition.name.as_str() == expected.linux)
        .and_then(|partition| partition.boot.cmdline.as_deref().cloned())
        .unwrap_or_default();
    let emulator = Emulator::Qemu {
        boot: BootMethod::Kernel,
        cpu: None,
    };
    let medium = run::prepare(root, &table, &emulator)?;

    let mut bare = Vec::new();
    let mut partition = Vec::new();
    let mut with_hypervisor = Vec::new();
    let mut khz = 0;
    for round in 1..=RUNS {
        println!("== bench: {FIGURE}: bare run {round} of {RUNS}");
        let reading = bare_run(root, &images, &cmdline)?;
        bare.push(reading.init as f64);
        println!("== bench: {FIGURE}: partition run {round} of {RUNS}");
        let reading = partition_run(root, &table, &medium, &expected.linux)?;
        if reading.init <= reading.start {
            bail!(
                "the marker's TSC {} is not after the partition's start {}",
                reading.init,
                reading.start
            );
        }
        partition.push((reading.init - reading.start) as f64);
        with_hypervisor.push(reading.init as f64);
        khz = reading.khz;
    }
    let (Some(bare_median), Some(partition_median), Some(total_median)) =
        (median(&bare), median(&partition), median(&with_hypervisor))
    else {
        bail!("no runs");
    };
    if khz == 0 {
        bail!("the hypervisor banner gave no TSC rate");
    }
    let seconds = |ticks: f64| ticks / (khz as f64 * 1000.0);
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|value| format!("{:.2}", seconds(*value)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let runs = format!(
        "{RUNS} interleaved runs each (bare {} s; partition {} s; partition incl. hypervisor \
         boot {} s); QEMU TCG without -icount, so wall-clock figures that vary with the \
         host's load",
        list(&bare),
        list(&partition),
        list(&with_hypervisor)
    );
    let setup = "kernel linux-image-6.1.0-56-amd64 6.1.192-2 and target/linux/initramfs.cpio.gz; \
        partition: partitions/linux-rt.toml (2 cores, 256 MiB, rt guest on a third core); bare: \
        qemu-system-x86_64 -machine q35,hpet=off -cpu qemu64,+x2apic -smp 2 -m 256 -kernel \
        -initrd -append <the partition's command line> (SeaBIOS, PIT/PIC/RTC, xAPIC)";
    Ok(vec![
        (
            FIGURE.to_string(),
            Figure {
                value: (partition_median / bare_median * 1000.0).round() / 1000.0,
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
                value: (total_median / bare_median * 1000.0).round() / 1000.0,
                unit: "ratio".into(),
                method: format!(
                    "as {FIGURE}, but the partition's time counts from QEMU's start (SeaBIOS, \
                     the hypervisor's boot, then Linux); {runs}"
                ),
            },
        ),
        (
            BARE_SECONDS.to_string(),
            Figure {
                value: (seconds(bare_median) * 100.0).round() / 100.0,
                unit: "s".into(),
                method: format!("median TSC at /init booted bare / the TSC rate; {runs}"),
            },
        ),
        (
            PARTITION_SECONDS.to_string(),
            Figure {
                value: (seconds(partition_median) * 100.0).round() / 100.0,
                unit: "s".into(),
                method: format!(
                    "median TSC from the partition's first instruction to /init / the \
                     hypervisor's calibrated TSC rate; {runs}"
                ),
            },
        ),
    ])
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
            "-machine q35,hpet=off -accel tcg -cpu qemu64,+x2apic -smp 2 -m 256 \
             -kernel /t/vmlinuz -initrd /t/initramfs.cpio.gz -append console=ttyS0 pci=off \
             -display none -no-reboot -monitor none -serial file:/r/com1.txt"
        );
    }
}
