//! `cargo xtask bench`: measures the figures the issues ask for and writes them to
//! `target/bench/report.json` (figure name → value, unit, method), printing them as a table.
//!
//! Three kinds of source:
//! * console figures ([`sources::CONSOLE_FIGURES`]): a boot of a table in a deterministic
//!   emulator, a console and a line pattern. Every boot runs twice through the runner's
//!   own build and boot code ([`run::prepare`], [`run::boot`]); the run must pass as
//!   `cargo xtask run` judges it, and both runs must give the same figures;
//! * image figures ([`sources::IMAGE_FIGURES`]): read from the demo image's ELF file;
//! * validation timings from the config crate (wall-clock, measured once).
//!
//! A figure that cannot be measured is left out of the report and fails the command
//! (status 1) after the rest is written; an unknown `--only` name or a missing emulator is
//! a usage problem (status 2).

mod console;
mod elf;
mod goals;
mod latency;
mod report;
mod sources;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};

use self::console::{Boot, ConsoleFigure};
use self::report::{Figure, Report};
use crate::install::Installation;
use crate::markers::{Backend, Marker};
use crate::run::{self, RunSettings};
use crate::transcript::EmulatorExit;
use crate::{image, process, table};

/// How many times each boot runs; all runs must give the same figures.
const RUNS_PER_BOOT: usize = 2;

/// Which figures `--only` asks for (all when it names none).
struct Selection<'a> {
    only: &'a [String],
}

impl Selection<'_> {
    fn any(&self, wanted: impl Fn(&str) -> bool) -> bool {
        self.only.is_empty() || self.only.iter().any(|name| wanted(name))
    }

    fn console_source(&self, source: &ConsoleFigure) -> bool {
        self.any(|name| source.selected_by(name))
    }

    /// Whether to report the figure `name` that `source` produced.
    fn console_figure(&self, source: &ConsoleFigure, name: &str) -> bool {
        self.any(|wanted| wanted == name || wanted == source.name || wanted == source.boot.id)
    }

    fn image_figure(&self, name: &str) -> bool {
        self.any(|wanted| wanted == name || wanted == sources::IMAGE_GROUP)
    }

    fn validation_figure(&self, name: &str) -> bool {
        self.any(|wanted| wanted == name || wanted == sources::VALIDATION_GROUP)
    }

    /// The `--only` names that select no console or image figure and are no group: they
    /// can only be validation figures (whose names the config crate gives as it measures).
    fn unmatched(&self) -> Vec<&str> {
        self.only
            .iter()
            .map(String::as_str)
            .filter(|name| {
                !sources::CONSOLE_FIGURES
                    .iter()
                    .any(|source| source.selected_by(name))
                    && !sources::IMAGE_FIGURES.contains(name)
                    && *name != sources::IMAGE_GROUP
                    && *name != sources::VALIDATION_GROUP
                    && !crate::linux::bench::NAMES.contains(name)
                    && !crate::linux::nvme_bench::NAMES.contains(name)
                    && !latency::NAMES.contains(name)
                    && *name != latency::GROUP
            })
            .collect()
    }
}

/// The figures measured so far, and what could not be measured.
#[derive(Default)]
struct Found {
    report: Report,
    failures: Vec<String>,
}

impl Found {
    fn add(&mut self, name: String, figure: Figure) {
        if let Err(failure) = self.report.insert(name, figure) {
            self.failures.push(failure);
        }
    }
}

/// The validator's timing figures, measured by the config crate's example built with the
/// release profile (xtask itself runs unoptimised): one tab-separated line per figure.
fn validation_figures_in_release(root: &Path) -> Result<Vec<(String, f64, String, String)>> {
    let output =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "tessera-config",
                "--example",
                "validation_figures",
                "--",
                "--tab-separated",
            ])
            .output()
            .context("cannot run the validation_figures example")?;
    if !output.status.success() {
        anyhow::bail!(
            "the validation_figures example failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                [name, value, unit, method] => Ok((
                    name.to_string(),
                    value
                        .parse()
                        .with_context(|| format!("bad value in {line:?}"))?,
                    unit.to_string(),
                    method.to_string(),
                )),
                _ => anyhow::bail!("unexpected line from validation_figures: {line:?}"),
            }
        })
        .collect()
}

/// Runs `cargo xtask bench [--only NAME…]`.
pub fn run(root: &Path, only: &[String]) -> Result<ExitCode> {
    let started = Instant::now();
    let selection = Selection { only };
    let mut found = Found::default();

    let unmatched = selection.unmatched();
    if !unmatched.is_empty() || selection.validation_figure(sources::VALIDATION_GROUP) {
        println!("== bench: validation timings (tessera_config::bench, release build)");
        let figures = validation_figures_in_release(root)?;
        let unknown: Vec<&str> = unmatched
            .into_iter()
            .filter(|wanted| !figures.iter().any(|(name, ..)| name == wanted))
            .collect();
        if !unknown.is_empty() {
            eprintln!(
                "error: no bench figure is named {}; names: {}, the boots {}, {} and {}, or \
                 a validation figure: {}",
                unknown.join(", "),
                known_names().join(", "),
                boot_ids().join(", "),
                sources::IMAGE_GROUP,
                sources::VALIDATION_GROUP,
                figures
                    .iter()
                    .map(|(name, ..)| format!("{name:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(ExitCode::from(2));
        }
        for (name, value, unit, method) in figures {
            if selection.validation_figure(&name) {
                let method =
                    format!("{method}; wall-clock on this machine, measured once (not compared)");
                found.add(
                    name,
                    Figure {
                        value,
                        unit,
                        method,
                    },
                );
            }
        }
    }

    if sources::IMAGE_FIGURES
        .iter()
        .any(|name| selection.image_figure(name))
    {
        println!("== bench: image figures ({})", sources::IMAGE_TABLE);
        match build_image(root) {
            Ok((data, shown)) => {
                for (name, measured) in image_figures(&data, &shown) {
                    if !selection.image_figure(name) {
                        continue;
                    }
                    match measured {
                        Ok(figure) => found.add(name.to_string(), figure),
                        Err(failure) => found.failures.push(format!("figure {name}: {failure}")),
                    }
                }
            }
            Err(error) => found.failures.push(format!("image figures: {error:#}")),
        }
    }

    let mut boots: Vec<&'static Boot> = Vec::new();
    for source in sources::CONSOLE_FIGURES {
        if selection.console_source(source) && !boots.iter().any(|boot| boot.id == source.boot.id) {
            boots.push(source.boot);
        }
    }
    for boot in boots {
        if boot.emulator().ensure_installed(root)? == Installation::UserMustInstall {
            return Ok(ExitCode::from(2));
        }
        let selected: Vec<&ConsoleFigure> = sources::CONSOLE_FIGURES
            .iter()
            .filter(|source| source.boot.id == boot.id && selection.console_source(source))
            .collect();
        match measure_boot(root, boot, &selected) {
            Ok(figures) => {
                for (source, name, value) in figures {
                    if selection.console_figure(source, &name) {
                        let figure = Figure {
                            value,
                            unit: source.unit.to_string(),
                            method: format!("{}; {}", source.method, boot.describe()),
                        };
                        found.add(name, figure);
                    }
                }
            }
            Err(boot_failures) => found.failures.extend(boot_failures),
        }
        if process::interrupted() {
            eprintln!("bench: interrupted");
            return Ok(ExitCode::from(crate::INTERRUPTED_STATUS));
        }
    }

    // Interrupt latency in a partition against bare (deterministic QEMU, two boots of
    // each; see bench::latency): every figure of it when any of them is asked for.
    if selection.any(|wanted| wanted == latency::GROUP || latency::NAMES.contains(&wanted)) {
        println!("== bench: {}", latency::GROUP);
        if qemu_missing(root)? {
            return Ok(ExitCode::from(2));
        }
        match latency::measure(root) {
            Ok(figures) => {
                for (name, figure) in figures {
                    found.add(name, figure);
                }
            }
            Err(failures) => found.failures.extend(failures),
        }
        if process::interrupted() {
            eprintln!("bench: interrupted");
            return Ok(ExitCode::from(crate::INTERRUPTED_STATUS));
        }
    }

    // Linux to /init in a partition against bare (interleaved runs, not deterministic; see
    // linux::bench): every figure of that measurement when any of them is asked for.
    if selection.any(|wanted| crate::linux::bench::NAMES.contains(&wanted)) {
        println!("== bench: {}", crate::linux::bench::FIGURE);
        match crate::linux::bench::measure(root) {
            Ok(figures) => {
                for (name, figure) in figures {
                    let figure = Figure {
                        value: figure.value,
                        unit: figure.unit,
                        method: figure.method,
                    };
                    found.add(name, figure);
                }
            }
            Err(error) => found
                .failures
                .push(format!("{}: {error:#}", crate::linux::bench::FIGURE)),
        }
        if process::interrupted() {
            eprintln!("bench: interrupted");
            return Ok(ExitCode::from(crate::INTERRUPTED_STATUS));
        }
    }

    // NVMe reads in a partition against bare (interleaved runs, not deterministic; see
    // linux::nvme_bench): every figure of it when any of them is asked for.
    if selection.any(|wanted| crate::linux::nvme_bench::NAMES.contains(&wanted)) {
        println!("== bench: {}", crate::linux::nvme_bench::FIGURE);
        match crate::linux::nvme_bench::measure(root) {
            Ok(figures) => {
                for (name, figure) in figures {
                    let figure = Figure {
                        value: figure.value,
                        unit: figure.unit,
                        method: figure.method,
                    };
                    found.add(name, figure);
                }
            }
            Err(error) => found
                .failures
                .push(format!("{}: {error:#}", crate::linux::nvme_bench::FIGURE)),
        }
        if process::interrupted() {
            eprintln!("bench: interrupted");
            return Ok(ExitCode::from(crate::INTERRUPTED_STATUS));
        }
    }

    let Found {
        report,
        mut failures,
    } = found;
    let path = image::target_directory(root)
        .join("bench")
        .join("report.json");
    report.write(&path)?;
    println!();
    print!("{}", report.table());
    println!(
        "bench: {} figures in {} ({:.0} s)",
        report.len(),
        image::relative_to(root, &path).display(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", goal_summary(&report, &selection));
    if report.is_empty() && failures.is_empty() {
        failures.push("no figure was measured".into());
    }
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("bench: FAILED ({} problems):", failures.len());
    for failure in &failures {
        println!("  - {failure}");
    }
    Ok(ExitCode::FAILURE)
}

/// Whether QEMU is missing and cannot be installed (the user must).
fn qemu_missing(root: &Path) -> Result<bool> {
    let emulator = run::Emulator::Qemu {
        boot: run::BootMethod::Kernel,
        cpu: None,
    };
    Ok(emulator.ensure_installed(root)? == Installation::UserMustInstall)
}

/// The goals missed and the goals whose figure this run asked for but does not have (not
/// measured yet, or its measurement failed): a goal without a figure is not met either.
fn goal_summary(report: &Report, selection: &Selection) -> String {
    let misses = report.misses();
    let unmeasured: Vec<&str> = goals::GOALS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !report.contains(name) && selection.any(|wanted| wanted == *name))
        .collect();
    let with_goal = goals::GOALS
        .iter()
        .filter(|(name, _)| report.contains(name))
        .count();
    let mut text = format!(
        "bench: goals: {} of {with_goal} measured figures with a goal meet it",
        with_goal - misses.len()
    );
    if !unmeasured.is_empty() {
        text.push_str(&format!(
            "; not measured: {}",
            unmeasured
                .iter()
                .map(|name| format!("{name} (goal {})", goals::goal_of(name).expect("a goal")))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text.push('\n');
    for (name, value, goal) in misses {
        text.push_str(&format!(
            "  MISS {name}: {} against the goal {goal} ({})\n",
            report::format_value(value),
            goal.set_by
        ));
    }
    text
}

/// The fixed figure names and name patterns, for the message about an unknown `--only`.
fn known_names() -> Vec<&'static str> {
    sources::CONSOLE_FIGURES
        .iter()
        .map(|source| source.name)
        .chain(sources::IMAGE_FIGURES)
        .collect()
}

fn boot_ids() -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = Vec::new();
    for source in sources::CONSOLE_FIGURES {
        if !ids.contains(&source.boot.id) {
            ids.push(source.boot.id);
        }
    }
    ids
}

/// Builds the image of [`sources::IMAGE_TABLE`]; returns its bytes and its path for messages.
fn build_image(root: &Path) -> Result<(Vec<u8>, String)> {
    let table = table::load(&root.join(sources::IMAGE_TABLE))?;
    let image = image::build(root, &table)?;
    let data = std::fs::read(&image).with_context(|| format!("cannot read {}", image.display()))?;
    Ok((data, image::relative_to(root, &image).display().to_string()))
}

/// The image figures of the image file `data` (`shown`: its path for `method`).
fn image_figures(data: &[u8], shown: &str) -> Vec<(&'static str, Result<Figure, String>)> {
    let code = |backend: Backend| {
        let symbols = elf::assembly_symbols(backend).join(", ");
        let module = match backend {
            Backend::Svm => "svm",
            Backend::Vmx => "vmx",
        };
        elf::backend_code(data, backend).map(|size| Figure {
            value: size.bytes as f64,
            unit: "bytes".into(),
            method: format!(
                "sum of the sizes of the {} text symbols of {shown} whose path lies in \
                 virt::{module} (mangled `4virt3{module}` or `..virt..{module}..`) plus the \
                 assembly {symbols} (sized to the next symbol); the generic exit handlers \
                 shared by both backends and inlined library code are excluded",
                size.symbols
            ),
        })
    };
    vec![
        (
            sources::IMAGE_BYTES,
            elf::loadable_bytes(data).map(|bytes| Figure {
                value: bytes as f64,
                unit: "bytes".into(),
                method: format!(
                    "p_filesz of the PT_LOAD segment of {shown}: what the boot loader loads \
                     (hypervisor code and data and the embedded guest images)"
                ),
            }),
        ),
        (sources::SVM_CODE_BYTES, code(Backend::Svm)),
        (sources::VMX_CODE_BYTES, code(Backend::Vmx)),
    ]
}

/// Boots `boot` [`RUNS_PER_BOOT`] times and returns the figures of `selected` (source, name,
/// value), or every reason they cannot be had: a run that fails, a figure that is not
/// there, or runs that disagree.
fn measure_boot<'a>(
    root: &Path,
    boot: &Boot,
    selected: &[&'a ConsoleFigure],
) -> Result<Vec<(&'a ConsoleFigure, String, f64)>, Vec<String>> {
    let prefix = |failure: String| format!("{}: {failure}", boot.id);
    let table =
        table::load(&root.join(boot.table)).map_err(|error| vec![prefix(format!("{error:#}"))])?;
    let emulator = boot.emulator();
    let medium = run::prepare(root, &table, &emulator)
        .map_err(|error| vec![prefix(format!("{error:#}"))])?;
    let settings = RunSettings {
        seconds: table.run_seconds.unwrap_or(crate::DEFAULT_RUN_SECONDS),
        seconds_explicit: false,
        deterministic: true,
    };
    let mut runs: Vec<Vec<(&ConsoleFigure, String, f64)>> = Vec::new();
    for attempt in 1..=RUNS_PER_BOOT {
        println!(
            "== bench: {} ({} in {}), run {attempt} of {RUNS_PER_BOOT}",
            boot.id,
            boot.table,
            emulator.name()
        );
        let transcript = run::boot(
            &image::target_directory(root),
            &table,
            &emulator,
            &medium,
            settings,
        )
        .map_err(|error| vec![prefix(format!("{error:#}"))])?;
        if transcript.emulator_exit == EmulatorExit::Interrupted {
            return Err(vec![prefix("interrupted".into())]);
        }
        let mut failures = run::judge(&transcript, &table, settings);
        let banner = transcript.markers().find_map(|marker| match marker {
            Marker::Banner { backend } => Some(backend),
            _ => None,
        });
        if banner != Some(boot.backend) {
            failures.push(format!(
                "the boot banner names backend {banner:?}, the figures need {:?}",
                boot.backend
            ));
        }
        let mut figures = Vec::new();
        for source in selected {
            match source.extract(&transcript) {
                Ok(found) => figures.extend(
                    found
                        .into_iter()
                        .map(|(name, value)| (*source, name, value)),
                ),
                Err(failure) => failures.push(failure),
            }
        }
        if !failures.is_empty() {
            return Err(failures
                .into_iter()
                .map(|failure| prefix(format!("run {attempt}: {failure}")))
                .collect());
        }
        runs.push(figures);
    }
    let values = |run: &[(&ConsoleFigure, String, f64)]| -> Vec<(String, f64)> {
        run.iter()
            .map(|(_, name, value)| (name.clone(), *value))
            .collect()
    };
    let first = values(&runs[0]);
    for (index, other) in runs.iter().enumerate().skip(1) {
        let differences = console::differences(&first, &values(other));
        if !differences.is_empty() {
            return Err(differences
                .into_iter()
                .map(|difference| {
                    prefix(format!(
                        "bench runs are deterministic and report the same numbers twice, \
                         but run 1 and run {} differ: {difference}",
                        index + 1
                    ))
                })
                .collect());
        }
    }
    Ok(runs.swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_figures_groups_and_boots() {
        let all = Selection { only: &[] };
        assert!(all.image_figure(sources::IMAGE_BYTES));
        assert!(all.validation_figure("anything"));
        assert!(all.unmatched().is_empty());

        let only = [
            "demo_exits_worker".to_string(),
            "vmx-bench".to_string(),
            "image".to_string(),
            "validate 3 partitions / 4 regions".to_string(),
        ];
        let selection = Selection { only: &only };
        let source = |name: &str| {
            sources::CONSOLE_FIGURES
                .iter()
                .find(|source| source.name == name)
                .unwrap()
        };
        let exits = source("demo_exits_{partition}");
        assert!(selection.console_source(exits));
        assert!(selection.console_figure(exits, "demo_exits_worker"));
        assert!(!selection.console_figure(exits, "demo_exits_control"));
        assert!(!selection.console_source(source("hypervisor_memory_kib")));
        assert!(selection.console_source(source("vmx_exit_round_trip_instructions")));
        assert!(!selection.console_source(source("svm_exit_round_trip_instructions")));
        assert!(selection.image_figure(sources::VMX_CODE_BYTES));
        assert!(!selection.validation_figure("validation_1000_partitions_10000_regions_ms"));
        assert_eq!(selection.unmatched(), ["validate 3 partitions / 4 regions"]);
    }

    #[test]
    fn every_boot_has_a_table_and_distinct_id() {
        let ids = boot_ids();
        assert_eq!(
            ids,
            [
                "svm-bench",
                "vmx-bench",
                "svm-demo",
                "vmx-demo",
                "svm-irq-timer",
                "svm-pingpong",
                "vmx-pingpong",
                "svm-failover",
                "svm-iommu"
            ]
        );
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for source in sources::CONSOLE_FIGURES {
            assert!(
                root.join(source.boot.table).is_file(),
                "{}: no {}",
                source.name,
                source.boot.table
            );
        }
    }

    #[test]
    fn image_figures_report_each_failure_by_name() {
        let figures = image_figures(b"not an ELF file", "x.elf");
        let names: Vec<&str> = figures.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, sources::IMAGE_FIGURES);
        assert!(figures.iter().all(|(_, figure)| figure.is_err()));
    }
}
