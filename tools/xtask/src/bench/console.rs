//! Figures read from console lines: which boot, which console, which pattern, and taking
//! them out of a run's transcript.

use regex::{Captures, Regex};

use crate::bochs;
use crate::markers::Backend;
use crate::run::{BootMethod, Emulator};
use crate::transcript::{Transcript, HYPERVISOR};

/// The emulator of a bench boot. Both run deterministically: QEMU with `-icount
/// shift=0,align=off,sleep=off` (the TSC advances one per instruction), Bochs always with
/// `clock: sync=none` (the TSC counts retired instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchEmulator {
    /// QEMU TCG (AMD SVM + NPT), booting the image with `-kernel`.
    Qemu,
    /// Bochs on its default model (Intel VMX + EPT), booting the GRUB ISO.
    Bochs,
}

/// One boot of a partition table whose consoles figures are read from. Every boot runs
/// twice and must give the same figures both times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boot {
    /// Names the boot in messages and in `--only`.
    pub id: &'static str,
    /// The partition table, relative to the workspace root.
    pub table: &'static str,
    pub emulator: BenchEmulator,
    /// The backend the boot banner must name (else the figures measure the wrong one).
    pub backend: Backend,
}

impl Boot {
    pub fn emulator(&self) -> Emulator {
        match self.emulator {
            BenchEmulator::Qemu => Emulator::Qemu {
                boot: BootMethod::Kernel,
                cpu: None,
            },
            BenchEmulator::Bochs => Emulator::Bochs {
                cpu: bochs::DEFAULT_CPU.into(),
            },
        }
    }

    /// How the boot runs, for a figure's `method`.
    pub fn describe(&self) -> String {
        let emulator = match self.emulator {
            BenchEmulator::Qemu => {
                "QEMU TCG one-insn-per-tb -icount shift=0,align=off,sleep=off (SVM)".to_string()
            }
            BenchEmulator::Bochs => format!(
                "Bochs {} clock: sync=none (VMX), TSC = retired instructions",
                bochs::DEFAULT_CPU
            ),
        };
        format!(
            "{} booted in {emulator}; same value in two runs",
            self.table
        )
    }
}

/// Whose console a line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// The hypervisor's console (a guest cannot print there).
    Hypervisor,
    /// The UART of the partition of this name.
    Partition(&'static str),
}

impl Console {
    /// The transcript's label for its lines.
    fn label(self) -> &'static str {
        match self {
            Console::Hypervisor => HYPERVISOR,
            Console::Partition(name) => name,
        }
    }
}

/// How a matched line becomes a value.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    /// The pattern's `value` group, a decimal number.
    Group,
    /// Computed from the pattern's groups (e.g. a rate from a count and a duration);
    /// `None` when the groups do not make a number.
    Computed(fn(&Captures) -> Option<f64>),
}

/// A figure (or a family of figures) read from console lines of one boot.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleFigure {
    /// The figure's name. `{group}` in it is replaced by the pattern's named group of that
    /// name, which makes one figure per matching line (`demo_exits_{partition}`); a name
    /// without one must match exactly one line.
    pub name: &'static str,
    pub boot: &'static Boot,
    pub console: Console,
    /// A regular expression matched against each line of the console (without its line
    /// ending); see [`Value`].
    pub pattern: &'static str,
    pub value: Value,
    pub unit: &'static str,
    /// How the number is produced; the boot's description is appended.
    pub method: &'static str,
}

impl ConsoleFigure {
    /// Whether `name` (a `--only` argument) selects this source: its name, its name
    /// pattern, its boot, or a name the pattern makes (`demo_exits_control`).
    pub fn selected_by(&self, name: &str) -> bool {
        name == self.name || name == self.boot.id || self.makes(name)
    }

    /// Whether the name pattern can produce `name`.
    pub fn makes(&self, name: &str) -> bool {
        match self.name.split_once('{') {
            None => name == self.name,
            Some((prefix, rest)) => {
                let suffix = rest.split_once('}').map_or("", |(_, suffix)| suffix);
                name.len() > prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
        }
    }

    /// The figures this source finds in `transcript`: `(name, value)` in line order, or why
    /// there are none.
    pub fn extract(&self, transcript: &Transcript) -> Result<Vec<(String, f64)>, String> {
        self.extract_from(transcript.lines_of(self.console.label()))
    }

    /// [`ConsoleFigure::extract`] over the console's lines.
    pub fn extract_from<'a>(
        &self,
        lines: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<(String, f64)>, String> {
        let pattern = Regex::new(self.pattern)
            .map_err(|error| format!("figure {}: bad pattern: {error}", self.name))?;
        let mut found: Vec<(String, f64)> = Vec::new();
        for line in lines {
            let Some(captures) = pattern.captures(line.trim_end()) else {
                continue;
            };
            let name = self.expand_name(&captures)?;
            let value = match self.value {
                Value::Group => captures
                    .name("value")
                    .and_then(|value| value.as_str().parse::<f64>().ok()),
                Value::Computed(compute) => compute(&captures),
            }
            .ok_or_else(|| format!("figure {name}: no number in the line {line:?}"))?;
            if found.iter().any(|(earlier, _)| *earlier == name) {
                return Err(format!(
                    "figure {name}: more than one line of the {} console matches /{}/",
                    self.console.label(),
                    self.pattern
                ));
            }
            found.push((name, value));
        }
        if found.is_empty() {
            return Err(format!(
                "figure {}: no line of the {} console in the {} run matches /{}/",
                self.name,
                self.console.label(),
                self.boot.id,
                self.pattern
            ));
        }
        Ok(found)
    }

    /// The name with each `{group}` replaced by that group of `captures`.
    fn expand_name(&self, captures: &Captures) -> Result<String, String> {
        let mut name = String::new();
        let mut rest = self.name;
        while let Some((before, after)) = rest.split_once('{') {
            let (group, after) = after
                .split_once('}')
                .ok_or_else(|| format!("figure {}: unclosed {{ in the name", self.name))?;
            let text = captures.name(group).ok_or_else(|| {
                format!(
                    "figure {}: the pattern has no group {group} for the name",
                    self.name
                )
            })?;
            name.push_str(before);
            name.push_str(text.as_str());
            rest = after;
        }
        name.push_str(rest);
        Ok(name)
    }
}

/// What differs between the figures of two runs of one boot, in words; empty if nothing.
pub fn differences(first: &[(String, f64)], second: &[(String, f64)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, value) in first {
        match second.iter().find(|(other, _)| other == name) {
            None => found.push(format!(
                "{name}: {value} in the first run, none in the second"
            )),
            #[allow(clippy::float_cmp)]
            Some((_, other)) if other != value => {
                found.push(format!(
                    "{name}: {value} in the first run, {other} in the second"
                ));
            }
            Some(_) => {}
        }
    }
    for (name, value) in second {
        if !first.iter().any(|(other, _)| other == name) {
            found.push(format!(
                "{name}: none in the first run, {value} in the second"
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::sources;

    const BOOT: Boot = Boot {
        id: "test-boot",
        table: "partitions/bench.toml",
        emulator: BenchEmulator::Qemu,
        backend: Backend::Svm,
    };

    fn figure(name: &'static str, console: Console, pattern: &'static str) -> ConsoleFigure {
        ConsoleFigure {
            name,
            boot: &BOOT,
            console,
            pattern,
            value: Value::Group,
            unit: "instructions",
            method: "test",
        }
    }

    /// The lines a source of [`sources::CONSOLE_FIGURES`] reads, by name.
    fn source(name: &str) -> ConsoleFigure {
        *sources::CONSOLE_FIGURES
            .iter()
            .find(|source| source.name == name)
            .unwrap_or_else(|| panic!("no source {name}"))
    }

    const MEASURE: &str = "measure: rounds=1000 cpuid-exit-min=290 cpuid-exit-mean=291 \
                           hypercall-min=283 hypercall-mean=284";

    #[test]
    fn reads_the_measure_line() {
        let lines = [
            "partition bench: hello from core 0",
            MEASURE,
            "powering off",
        ];
        let read = |name| source(name).extract_from(lines.into_iter());
        assert_eq!(
            read("svm_exit_round_trip_instructions"),
            Ok(vec![("svm_exit_round_trip_instructions".into(), 290.0)])
        );
        assert_eq!(
            read("svm_hypercall_round_trip_instructions"),
            Ok(vec![(
                "svm_hypercall_round_trip_instructions".into(),
                283.0
            )])
        );
        assert_eq!(
            read("vmx_exit_round_trip_instructions").unwrap()[0].1,
            290.0
        );
        assert_eq!(
            read("vmx_hypercall_round_trip_instructions").unwrap()[0].1,
            283.0
        );
    }

    #[test]
    fn reads_the_interrupt_figures() {
        let measure = format!("{MEASURE} icr-exit-min=435 icr-exit-mean=436");
        let read = |name, lines: &[&str]| source(name).extract_from(lines.iter().copied());
        assert_eq!(
            read("ipi_exit_instructions", &[measure.as_str()]),
            Ok(vec![("ipi_exit_instructions".into(), 435.0)])
        );
        assert_eq!(
            read("svm_ipi_exit_instructions", &[measure.as_str()]).unwrap()[0].1,
            435.0
        );
        // A measure line without the ICR fields (no APIC ID given) has no ICR figure.
        assert!(read("ipi_exit_instructions", &[MEASURE]).is_err());

        let timer = [
            "timer: tsc-hz=999931000 (cpuid-0x40000010) apic-timer-hz=999929800 periodic-ticks=1000 tsc-deadline-ticks=0",
            "timer: ticks=1000 period=999931 max-jitter=17 exits-during-loop=0",
        ];
        assert_eq!(
            read("steady_exits_per_second", &timer),
            Ok(vec![("steady_exits_per_second".into(), 0.0)])
        );
        assert_eq!(
            read("timer_jitter_instructions", &timer),
            Ok(vec![("timer_jitter_instructions".into(), 17.0)])
        );
        let exiting = ["timer: ticks=500 period=999931 max-jitter=3 exits-during-loop=1000"];
        assert_eq!(
            read("steady_exits_per_second", &exiting).unwrap()[0].1,
            2000.0
        );
        let no_ticks = ["timer: ticks=0 period=999931 max-jitter=0 exits-during-loop=0"];
        assert!(read("steady_exits_per_second", &no_ticks)
            .unwrap_err()
            .contains("no number"));
        // Off Tessera the guest prints `n/a`: no figure.
        let elsewhere = ["timer: ticks=1000 period=1 max-jitter=1 exits-during-loop=n/a"];
        assert!(read("steady_exits_per_second", &elsewhere).is_err());

        let ping =
            ["ping-pong: rounds=1000 round-trip-min=310 round-trip-mean=357 exits-during=1000"];
        assert_eq!(
            read("exits_per_doorbell", &ping),
            Ok(vec![("exits_per_doorbell".into(), 1.0)])
        );
        assert_eq!(
            read("doorbell_round_trip_instructions", &ping),
            Ok(vec![("doorbell_round_trip_instructions".into(), 310.0)])
        );
        let costly =
            ["ping-pong: rounds=1000 round-trip-min=3 round-trip-mean=3 exits-during=3000"];
        assert_eq!(read("exits_per_doorbell", &costly).unwrap()[0].1, 3.0);
    }

    #[test]
    fn reads_the_demo_boot_lines() {
        let hypervisor = [
            "Tessera 0.1.0 backend=svm table=demo.toml platform=qemu-q35 cores=[0, 1, 2, 3] tsc=999931kHz",
            "hypervisor memory: 812 KiB used of 15360 KiB (image 144 KiB, static state 667 KiB)",
            "started: partition=worker core=1 entry=0x100000 tsc=84395658 (first guest instruction)\r",
            "started: partition=intruder core=2 entry=0x100000 tsc=99416832",
            "boot: core 1 ran its first 64-bit instruction 7046260 TSC ticks after its start-up IPI",
            "boot: core 2 ran its first 64-bit instruction 9744501 TSC ticks after its start-up IPI",
            "boot: phases (TSC ticks) checks=1057630 digests=228290 tsc-rate=105 (calibrated against the HPET) stage2-tables=48081 partition-setup=222273 clear-channels=4 start-cores=36639945",
            "boot: every partition entered its guest 46761089 TSC ticks after the hypervisor's entry",
            "exits: partition=control state=Running cpuid=7 msr-write=1 hypercall=5 total=13 unassigned-port-accesses=0",
            "exits: partition=worker state=Stopped cpuid=7 msr-write=1 hypercall=1 total=9 unassigned-port-accesses=0",
            "exits: partition=intruder state=Faulted cpuid=6 msr-write=1 npf=1 total=8 dropped-ipis=0",
            "Tessera: power off",
        ];
        let read = |name| source(name).extract_from(hypervisor.into_iter());
        assert_eq!(
            read("hypervisor_memory_kib"),
            Ok(vec![("hypervisor_memory_kib".into(), 812.0)])
        );
        assert_eq!(
            read("boot_to_first_guest_instructions"),
            Ok(vec![(
                "boot_to_first_guest_instructions".into(),
                84_395_658.0
            )])
        );
        assert_eq!(
            read("ap_start_instructions"),
            Ok(vec![("ap_start_instructions".into(), 7_046_260.0)])
        );
        assert_eq!(
            read("hypervisor_boot_work_instructions"),
            Ok(vec![(
                "hypervisor_boot_work_instructions".into(),
                (1_057_630 + 228_290 + 105 + 48_081 + 222_273 + 4) as f64
            )])
        );
        assert_eq!(
            read("hypervisor_boot_all_partitions_instructions"),
            Ok(vec![(
                "hypervisor_boot_all_partitions_instructions".into(),
                46_761_089.0
            )])
        );
        assert_eq!(
            read("demo_exits_{partition}"),
            Ok(vec![
                ("demo_exits_control".into(), 13.0),
                ("demo_exits_worker".into(), 9.0),
                ("demo_exits_intruder".into(), 8.0),
            ])
        );
    }

    #[test]
    fn every_source_pattern_compiles_and_names_its_groups() {
        for source in sources::CONSOLE_FIGURES {
            let pattern = Regex::new(source.pattern).expect(source.name);
            let groups: Vec<&str> = pattern.capture_names().flatten().collect();
            if matches!(source.value, Value::Group) {
                assert!(groups.contains(&"value"), "{}: no value group", source.name);
            }
            for part in source.name.split('{').skip(1) {
                let group = part.split('}').next().unwrap();
                assert!(groups.contains(&group), "{}: no group {group}", source.name);
            }
        }
    }

    #[test]
    fn a_missing_or_repeated_line_is_an_error() {
        let exits = figure(
            "exits",
            Console::Hypervisor,
            r"^exits: .*total=(?P<value>\d+)",
        );
        assert_eq!(
            exits.extract_from(["hello"].into_iter()),
            Err(
                r"figure exits: no line of the hv console in the test-boot run matches /^exits: .*total=(?P<value>\d+)/"
                    .into()
            )
        );
        assert!(exits
            .extract_from(["exits: a total=1", "exits: b total=2"].into_iter())
            .unwrap_err()
            .contains("more than one line"));
        let no_number = figure("n", Console::Partition("bench"), r"n=(?P<value>\S+)");
        assert_eq!(
            no_number.extract_from(["n=abc"].into_iter()),
            Err(r#"figure n: no number in the line "n=abc""#.into())
        );
        let bad = figure("bad", Console::Hypervisor, r"(unclosed");
        assert!(bad
            .extract_from(std::iter::empty())
            .unwrap_err()
            .starts_with("figure bad: bad pattern"));
    }

    #[test]
    fn computed_values_use_any_group() {
        let rate = ConsoleFigure {
            value: Value::Computed(|captures| {
                let exits: f64 = captures.name("exits")?.as_str().parse().ok()?;
                let milliseconds: f64 = captures.name("ms")?.as_str().parse().ok()?;
                Some(exits * 1000.0 / milliseconds)
            }),
            ..figure(
                "rate",
                Console::Partition("timer"),
                r"exits=(?P<exits>\d+) ms=(?P<ms>\d+)",
            )
        };
        assert_eq!(
            rate.extract_from(["exits=5 ms=500"].into_iter()),
            Ok(vec![("rate".into(), 10.0)])
        );
    }

    #[test]
    fn only_selects_by_name_pattern_and_boot() {
        let exits = source("demo_exits_{partition}");
        assert!(exits.selected_by("demo_exits_{partition}"));
        assert!(exits.selected_by("demo_exits_worker"));
        assert!(exits.selected_by(exits.boot.id));
        assert!(!exits.selected_by("demo_exits_"));
        assert!(!exits.selected_by("hypervisor_memory_kib"));
        assert!(source("hypervisor_memory_kib").selected_by("hypervisor_memory_kib"));
    }

    #[test]
    fn differences_between_runs_are_named() {
        let first = vec![("a".to_string(), 1.0), ("b".to_string(), 2.0)];
        assert!(differences(&first, &first).is_empty());
        let second = vec![("a".to_string(), 1.0), ("c".to_string(), 3.0)];
        assert_eq!(
            differences(&first, &second),
            [
                "b: 2 in the first run, none in the second",
                "c: none in the first run, 3 in the second"
            ]
        );
        let changed = vec![("a".to_string(), 1.5), ("b".to_string(), 2.0)];
        assert_eq!(
            differences(&first, &changed),
            ["a: 1 in the first run, 1.5 in the second"]
        );
    }
}
