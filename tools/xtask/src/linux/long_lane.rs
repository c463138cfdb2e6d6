//! `cargo xtask test --long`: the long lane, Linux beside a real-time guest on Bochs (Intel
//! VMX), which takes far longer than the normal suite's budget allows.
//!
//! It boots [`LINUX_RT_BOCHS_TABLE`] in Bochs' default CPU model and checks the run with the
//! same [`checks::check_linux_rt`] as `linux-rt-qemu`: the kernel and /init, `nproc: 2`,
//! x2APIC kept, the reboot through the ACPI reset register restarting only Linux, the
//! real-time guest's heartbeats going on through both of Linux's boots. The run ends on the
//! real-time guest's power-off (a console marker) or at the table's `[run] seconds`, never
//! after a fixed sleep.
//!
//! Afterwards it prints the figures of the run ([`BochsFigures`]): the wall time and Bochs'
//! tick count at each step. With `clock: sync=none` a tick is one instruction of each
//! running CPU (Bochs' debugger loop, which Debian's build uses, gives every CPU the same
//! few instructions per round and then advances time by the most any of them ran), the TSC
//! counts ticks, and the `[bochs]` prefix of Bochs' log lines is the tick count: the same
//! inputs give the same counts, whatever the machine's load.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::checks::{self, number_after, Expectations, INIT_REACHED};
use crate::install::Installation;
use crate::markers;
use crate::run::{self, Emulator, RunSettings};
use crate::transcript::{EmulatorExit, Transcript, HYPERVISOR};

/// The long lane's table: partitions/linux-rt.toml for Bochs (see its comment).
pub const LINUX_RT_BOCHS_TABLE: &str = "partitions/linux-rt-bochs.toml";
/// The long lane's test name, as `cargo xtask test` names its system tests.
pub const TEST_NAME: &str = "linux-rt-bochs";
/// The time bound when the table names none.
const SECONDS: u64 = 1800;
/// The hypervisor's line with the TSC at its entry.
const HYPERVISOR_ENTERED: &str = "boot: hypervisor entered at tsc=";

/// `cargo xtask test --long`: runs the long lane only (not the normal suite; CI runs that with
/// `cargo xtask test`). Exit status as `cargo xtask test`'s: 0 passed, 1 failed, 2 Bochs or
/// GRUB missing, 130 interrupted.
pub fn run(root: &Path) -> Result<ExitCode> {
    let emulator = Emulator::Bochs {
        cpu: crate::bochs::DEFAULT_CPU.into(),
    };
    if emulator.ensure_installed(root)? == Installation::UserMustInstall {
        return Ok(ExitCode::from(2));
    }
    println!("== system test {TEST_NAME} (long lane)");
    let started = Instant::now();
    let (outcome, figures) = match Expectations::from_table(&root.join(LINUX_RT_BOCHS_TABLE))
        .and_then(|expected| Ok((boot(root, &emulator)?, expected)))
    {
        Ok((transcript, expected)) => {
            let figures = BochsFigures::read(&transcript, &expected.linux, started.elapsed());
            let outcome = if transcript.emulator_exit == EmulatorExit::Interrupted {
                Err(vec!["interrupted".into()])
            } else {
                checks::check_linux_rt(&transcript, &expected)
            };
            (outcome, Some(figures))
        }
        Err(error) => (Err(vec![format!("{error:#}")]), None),
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(figures) = figures {
        println!("{}", figures.render());
    }
    let passed = outcome.is_ok();
    match outcome {
        Ok(()) => println!("system test {TEST_NAME}: ok ({seconds:.1} s)"),
        Err(failures) => {
            println!("system test {TEST_NAME}: FAILED ({seconds:.1} s)");
            for failure in failures {
                println!("  - {failure}");
            }
        }
    }
    println!(
        "{} passed, {} failed",
        u32::from(passed),
        u32::from(!passed)
    );
    Ok(if crate::process::interrupted() {
        ExitCode::from(crate::INTERRUPTED_STATUS)
    } else if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the table's image (fetching the Linux files first) and ISO, and boots it.
fn boot(root: &Path, emulator: &Emulator) -> Result<Transcript> {
    let table = crate::table::load(&root.join(LINUX_RT_BOCHS_TABLE))?;
    let medium = run::prepare(root, &table, emulator)?;
    let settings = RunSettings {
        seconds: table.run_seconds.unwrap_or(SECONDS),
        seconds_explicit: false,
        deterministic: false,
    };
    run::boot(
        &crate::image::target_directory(root),
        &table,
        emulator,
        &medium,
        settings,
    )
}

/// One boot of the Linux partition, in Bochs ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// The hypervisor's `started:` line for its boot core.
    pub started: u64,
    /// /init's `TESSERA-LINUX: init reached tsc=…`, if this boot got there.
    pub init: Option<u64>,
}

/// How long the run took: wall time, and Bochs ticks from the consoles and Bochs' log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BochsFigures {
    pub wall: Duration,
    /// `boot: hypervisor entered at tsc=…`.
    pub hypervisor_entered: Option<u64>,
    pub linux_boots: Vec<LinuxBoot>,
    /// The tick of Bochs' last log line: at a clean end, `ACPI control: soft power off`.
    pub last_log_tick: Option<u64>,
    /// Whether the run ended by the power-off (else the tick above is only the last logged).
    pub powered_off: bool,
}

impl BochsFigures {
    /// Reads them from the transcript and the run's `bochs.log` (next to its UART files);
    /// `linux` names the Linux partition.
    pub fn read(transcript: &Transcript, linux: &str, wall: Duration) -> Self {
        let log = transcript
            .uart_files
            .first()
            .and_then(|(_, file)| file.parent())
            .and_then(|directory| std::fs::read_to_string(directory.join("bochs.log")).ok())
            .unwrap_or_default();
        Self::from_lines(transcript, linux, &log, wall)
    }

    /// The figures from a transcript and the text of `bochs.log`.
    pub fn from_lines(
        transcript: &Transcript,
        linux: &str,
        bochs_log: &str,
        wall: Duration,
    ) -> Self {
        let started = format!("{}{linux} ", markers::STARTED);
        let mut hypervisor_entered = None;
        let mut boot_entry = None;
        let mut linux_boots: Vec<LinuxBoot> = Vec::new();
        for line in &transcript.lines {
            let text = line.text.as_str();
            if line.source == HYPERVISOR {
                if let Some(tsc) = number_after(text, HYPERVISOR_ENTERED) {
                    hypervisor_entered.get_or_insert(tsc);
                }
                if !text.contains(&started) {
                    continue;
                }
                let (Some(entry), Some(tsc)) = (field(text, "entry="), number_after(text, "tsc="))
                else {
                    continue;
                };
                // The boot core starts at the first start's entry; a second core starts at
                // Linux's trampoline instead.
                if *boot_entry.get_or_insert(entry) == entry {
                    linux_boots.push(LinuxBoot {
                        started: tsc,
                        init: None,
                    });
                }
            } else if line.source == linux && text.contains(INIT_REACHED) {
                if let Some(boot) = linux_boots.last_mut() {
                    boot.init = boot.init.or(number_after(text, "tsc="));
                }
            }
        }
        Self {
            wall,
            hypervisor_entered,
            linux_boots,
            last_log_tick: bochs_log.lines().rev().find_map(log_tick),
            powered_off: transcript.emulator_exit.is_clean_power_off(),
        }
    }

    /// The figures as printed at the end of the test.
    pub fn render(&self) -> String {
        let mut rows = vec![
            (
                "wall time".to_string(),
                format!("{:.0} s", self.wall.as_secs_f64()),
            ),
            (
                "hypervisor entered".to_string(),
                self.hypervisor_entered.map_or_else(|| "-".into(), ticks),
            ),
        ];
        for (index, boot) in self.linux_boots.iter().enumerate() {
            let number = index + 1;
            rows.push((format!("Linux boot {number} started"), ticks(boot.started)));
            rows.push((
                format!("Linux boot {number} /init"),
                boot.init.map_or_else(
                    || "not reached".into(),
                    |init| {
                        format!(
                            "{}, {} after its start",
                            ticks(init),
                            ticks(init.saturating_sub(boot.started))
                        )
                    },
                ),
            ));
        }
        rows.push((
            if self.powered_off {
                "power-off"
            } else {
                "last Bochs log line"
            }
            .to_string(),
            self.last_log_tick.map_or_else(|| "-".into(), ticks),
        ));
        let mut text =
            format!("{TEST_NAME} figures (Bochs ticks = TSC: one instruction per running CPU):");
        for (name, value) in rows {
            text.push_str(&format!("\n  {name:<22} {value}"));
        }
        text
    }
}

/// The value of `key` (`entry=`) in a hypervisor line: up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split_whitespace().next().unwrap_or(""))
}

/// The tick count that starts a line of Bochs' log (`05382255985e[CPU1  ] …`).
pub fn log_tick(line: &str) -> Option<u64> {
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    (digits >= 11)
        .then(|| line[..digits].parse().ok())
        .flatten()
}

/// A tick count with its order of magnitude: `5382255985 (5.38e9)`.
fn ticks(value: u64) -> String {
    format!("{value} ({:.2e})", value as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(lines: &[(&str, &str)], exit: EmulatorExit) -> Transcript {
        crate::transcript::test_lines::transcript("Bochs", lines, exit)
    }

    #[test]
    fn reads_the_ticks_of_each_boot() {
        let run = transcript(
            &[
                ("hv", "boot: hypervisor entered at tsc=163436705"),
                (
                    "hv",
                    "started: partition=linux core=1 entry=0x1000200 tsc=892976070 (first guest \
                     instruction)",
                ),
                (
                    "hv",
                    "started: partition=rt core=3 entry=0x100000 tsc=892976620",
                ),
                ("linux", "KASLR disabled: 'nokaslr' on cmdline."),
                (
                    "hv",
                    "started: partition=linux core=2 entry=0x9a000 tsc=4000000000",
                ),
                ("linux", "TESSERA-LINUX: init reached tsc=5000000000"),
                ("hv", "restarted: partition=linux restarts=1 core=1"),
                (
                    "hv",
                    "started: partition=linux core=1 entry=0x1000200 tsc=6102199120",
                ),
                (
                    "hv",
                    "started: partition=linux core=2 entry=0x9a000 tsc=9000000000",
                ),
            ],
            EmulatorExit::TimedOut { seconds: 3000 },
        );
        let log = "00000000000i[      ] reading configuration from bochsrc\n\
                   05382255985e[CPU1  ] interrupt(long mode): gate descriptor is not valid\n\
                   05382255985i[CPU1  ] | RIP=00000000010001d8 (00000000010001d8)\n\
                   | continued line\n";
        let figures = BochsFigures::from_lines(&run, "linux", log, Duration::from_secs(1834));
        assert_eq!(figures.hypervisor_entered, Some(163_436_705));
        assert_eq!(
            figures.linux_boots,
            [
                LinuxBoot {
                    started: 892_976_070,
                    init: Some(5_000_000_000)
                },
                LinuxBoot {
                    started: 6_102_199_120,
                    init: None
                },
            ]
        );
        assert_eq!(figures.last_log_tick, Some(5_382_255_985));
        assert!(!figures.powered_off);
        let text = figures.render();
        let expected = [
            "  wall time              1834 s",
            "  hypervisor entered     163436705 (1.63e8)",
            "  Linux boot 1 started   892976070 (8.93e8)",
            "  Linux boot 1 /init     5000000000 (5.00e9), 4107023930 (4.11e9) after its start",
            "  Linux boot 2 started   6102199120 (6.10e9)",
            "  Linux boot 2 /init     not reached",
            "  last Bochs log line    5382255985 (5.38e9)",
        ];
        assert_eq!(text.lines().skip(1).collect::<Vec<_>>(), expected, "{text}");
    }

    /// What the Bochs table's Linux command line adds to linux-rt.toml's: options that only
    /// make the boot shorter. `cryptomgr.notests` skips the crypto API's self-tests of every
    /// algorithm as it registers (Debian builds them in), 9·10⁸ of a boot's 6.2·10⁹ Bochs
    /// ticks; nothing the checks read depends on them.
    const BOCHS_ONLY_KERNEL_OPTIONS: [&str; 1] = ["cryptomgr.notests"];

    fn workspace_file(path: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }

    #[test]
    fn the_bochs_table_expects_what_linux_rt_expects() {
        let bochs = Expectations::from_table(&workspace_file(LINUX_RT_BOCHS_TABLE)).unwrap();
        let qemu = Expectations::from_table(&workspace_file(super::super::LINUX_RT_TABLE)).unwrap();
        assert_eq!(
            bochs,
            Expectations {
                heartbeat_ticks: Some(5000),
                ..qemu
            }
        );
    }

    #[test]
    fn the_bochs_table_boots_the_same_linux() {
        let linux = |path: &str| {
            let table = tessera_config::load_without_files(&workspace_file(path)).unwrap();
            let partition = table
                .partitions
                .iter()
                .find(|partition| partition.name.as_str() == "linux")
                .unwrap()
                .clone();
            let boot = &partition.boot;
            let words: Vec<String> = boot
                .cmdline
                .as_ref()
                .map(|cmdline| cmdline.split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            (
                boot.kernel.as_ref().map(|kernel| kernel.value.clone()),
                boot.initrd.as_ref().map(|initrd| initrd.value.clone()),
                words,
                partition.memory.len(),
            )
        };
        let (kernel, initrd, mut words, regions) = linux(super::super::LINUX_RT_TABLE);
        words.extend(BOCHS_ONLY_KERNEL_OPTIONS.map(String::from));
        assert_eq!(
            linux(LINUX_RT_BOCHS_TABLE),
            (kernel, initrd, words, regions)
        );
    }

    #[test]
    fn reads_bochs_log_ticks() {
        assert_eq!(
            log_tick("20812345678p[ACPI  ] >>PANIC<< ACPI control: soft power off"),
            Some(20_812_345_678)
        );
        assert_eq!(log_tick("| RAX=0000000000000006"), None);
        assert_eq!(log_tick("123 short"), None);
        assert_eq!(log_tick(""), None);
    }
}
