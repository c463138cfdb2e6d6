//! `cargo xtask`: Tessera's developer runner — build an image for a partition table (and a
//! GRUB ISO around it), boot it in QEMU or Bochs, run the host and system tests, measure the
//! figures of `cargo xtask bench`.
//!
//! Principles: every decision that can be a pure function is one and is unit-tested (the
//! QEMU command line, the bochsrc, the stop rules, the transcript checks, line splitting);
//! the partition table is read in one module ([`table`]); the hypervisor's console markers
//! are named in one module ([`markers`]); streaming, stopping and judging a run is one code
//! path for both emulators ([`run`]). Exit status 0 means everything passed, 1 a failure,
//! 2 a usage problem or a missing tool the user has to install, 130 an interrupted run.

mod bench;
mod bochs;
mod disk;
mod failover_test;
mod health_matrix_test;
mod host_tests;
mod image;
mod install;
mod irq_test;
mod iso;
mod layers;
mod lint;
mod linux;
mod markers;
mod pci_test;
mod process;
mod qemu;
mod redteam;
mod run;
mod serial;
mod system_test;
mod table;
mod transcript;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::install::Installation;
use crate::markers::Backend;
use crate::run::{BootMedium, BootMethod, Emulator, RunSettings};
use crate::table::TableInfo;
use crate::transcript::{EmulatorExit, Transcript};

/// The table used when none is given, relative to the workspace root.
const DEFAULT_TABLE: &str = "partitions/demo.toml";
/// `cargo xtask run`'s time bound when neither `--seconds` nor the table's `[run] seconds`
/// gives one.
const DEFAULT_RUN_SECONDS: u64 = 120;
/// The time bound of a demo run in QEMU in the system tests.
const QEMU_TEST_SECONDS: u64 = 180;
/// The time bound of a demo run in Bochs in the system tests (Bochs is ~20× slower).
const BOCHS_TEST_SECONDS: u64 = 300;
/// The time bound of a run that must end in a refusal (it comes within seconds).
const REFUSAL_TEST_SECONDS: u64 = 60;
/// The exit status of an interrupted run (128 + SIGINT, as a shell reports it).
const INTERRUPTED_STATUS: u8 = 130;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, boot and test Tessera images"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Build the guests and the hypervisor image for a partition table.
    Build(TableArgument),
    /// Build the image, then the GRUB boot ISOs around it (BIOS, and UEFI when GRUB's UEFI
    /// modules are installed): target/tessera/<table>.iso (`multiboot`) and
    /// target/tessera/<table>-multiboot2.iso (`multiboot2`).
    Iso(TableArgument),
    /// Build, then boot the image in an emulator and stream every UART.
    Run(RunArguments),
    /// Run the host tests and the lints (fmt, clippy), then the system tests: the demo in
    /// QEMU (SVM, also through GRUB) and on every Bochs model of the feature matrix (VMX),
    /// deterministic runs repeating byte for byte, the interrupt tables on both emulators and
    /// Linux beside a real-time guest. `--long` runs the long lane instead.
    Test(TestArguments),
    /// Measure the figures (VM-exit path lengths, code and memory sizes, validation times):
    /// target/bench/report.json and a table. Emulator figures come from deterministic runs,
    /// each run twice; the command fails if the two disagree. See docs/benchmarks.md.
    Bench(BenchArguments),
    /// Fetch Debian's stock kernel and busybox-static (apt-get download, pinned, cached) and
    /// build target/linux/vmlinuz and target/linux/initramfs.cpio.gz (userland/linux).
    LinuxImages,
    /// Validate partition tables: `check [--no-files] [--format human|json] TABLE...`
    /// (the `tessera` tool; exit 0 valid, 1 invalid, 2 unreadable).
    #[command(disable_help_flag = true)]
    Check(ToolArguments),
    /// Print a table's partitions and sorted memory map (the `tessera` tool).
    #[command(disable_help_flag = true)]
    Show(ToolArguments),
    /// Draw a table as SVG: `graph TABLE -o FILE.svg` (the `tessera` tool).
    #[command(disable_help_flag = true)]
    Graph(ToolArguments),
    /// Run the partition-table fuzz target for a bounded time (cargo-fuzz on nightly;
    /// installed when missing).
    Fuzz(FuzzArguments),
    /// cargo fmt --check and cargo clippy -D warnings over host and bare-metal crates.
    Lint,
    /// The red-team suite (docs/redteam.md): attacker partitions beside a victim with a
    /// heartbeat, on QEMU (SVM) and Bochs (VMX); one line per attack, a summary per backend;
    /// fails on any attack whose outcome differs from its expectation.
    Redteam(RedteamArguments),
}

/// Arguments handed unchanged to the `tessera` tool.
#[derive(Args)]
struct ToolArguments {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    arguments: Vec<std::ffi::OsString>,
}

#[derive(Args)]
struct RedteamArguments {
    /// Print the attack catalog (name, partition, expected outcome on SVM and VMX, why) as
    /// a Markdown table instead of running it.
    #[arg(long)]
    list: bool,
}

#[derive(Args)]
struct FuzzArguments {
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

#[derive(Args)]
struct TestArguments {
    /// Run the long lane instead of the normal suite: Linux beside a real-time guest on Bochs
    /// (Intel VMX), partitions/linux-rt-bochs.toml, with the checks of linux-rt-qemu; about 12
    /// minutes. Prints the run's wall time and Bochs tick counts.
    #[arg(long)]
    long: bool,
    /// Run only the system tests whose names contain one of these words (`restart`,
    /// `bochs`, `redteam-vmx`), without the host tests and the lint: for working on one
    /// feature. CI runs the whole suite.
    #[arg(long, value_name = "NAME", num_args = 1.., conflicts_with = "long")]
    only: Vec<String>,
}

#[derive(Args)]
struct BenchArguments {
    /// Measure only these figures: a figure name (`demo_exits_worker`), a name pattern
    /// (`demo_exits_{partition}`), a boot (`svm-bench`, `vmx-bench`, `svm-demo`), `image`
    /// or `validation`.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    only: Vec<String>,
}

#[derive(Args)]
struct TableArgument {
    /// The partition table [default: partitions/demo.toml].
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EmulatorChoice {
    /// QEMU TCG: AMD SVM + NPT.
    Qemu,
    /// Bochs: Intel VMX + EPT (or AMD SVM with an AMD --cpu model); boots the GRUB ISO.
    Bochs,
}

#[derive(Args)]
struct RunArguments {
    #[command(flatten)]
    table: TableArgument,
    /// The emulator.
    #[arg(long, value_enum, default_value = "qemu")]
    emulator: EmulatorChoice,
    /// The CPU: a Bochs model [default: corei7_haswell_4770] or a QEMU `-cpu` value
    /// [default: qemu64,+svm,+npt,+x2apic,+sha-ni].
    #[arg(long, value_name = "MODEL")]
    cpu: Option<String>,
    /// How the image is booted: `kernel` (QEMU `-kernel`), `grub` (the GRUB ISO from a
    /// CD-ROM, `multiboot`), `grub2` (the same with `multiboot2`) or `uefi` (the `multiboot2`
    /// ISO under OVMF UEFI firmware) [default: kernel for QEMU; Bochs always boots `grub`].
    #[arg(long, value_enum)]
    boot: Option<BootMethod>,
    /// Stop the emulator after this many seconds; running out is then no failure
    /// [default: the table's `[run] seconds`, else 120; running out of it is a failure].
    #[arg(long, value_name = "N")]
    seconds: Option<u64>,
    /// Make the run repeat exactly: QEMU counts instructions instead of real time
    /// (`-icount shift=0,align=off,sleep=off`, with `-accel tcg,one-insn-per-tb=on` so the
    /// x2APIC timer MSRs work under -icount). Bochs always runs this way
    /// (`clock: sync=none, time0=1`), with or without this flag.
    #[arg(long)]
    deterministic: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Build(arguments) => build(&arguments),
        Commands::Iso(arguments) => make_iso(&arguments),
        Commands::Run(arguments) => run(&arguments),
        Commands::Test(arguments) if arguments.long => {
            workspace_root().and_then(|root| linux::long_lane::run(&root))
        }
        Commands::Test(arguments) => test(&arguments.only),
        Commands::LinuxImages => workspace_root()
            .and_then(|root| linux::images::ensure(&root))
            .map(|_| ExitCode::SUCCESS),
        Commands::Bench(arguments) => {
            workspace_root().and_then(|root| bench::run(&root, &arguments.only))
        }
        Commands::Check(arguments) => Ok(tool("check", arguments)),
        Commands::Show(arguments) => Ok(tool("show", arguments)),
        Commands::Graph(arguments) => Ok(tool("graph", arguments)),
        Commands::Fuzz(arguments) => {
            workspace_root().and_then(|root| lint::fuzz(&root, arguments.seconds))
        }
        Commands::Lint => workspace_root().and_then(|root| lint::lint(&root)),
        Commands::Redteam(arguments) if arguments.list => Ok(redteam::list()),
        Commands::Redteam(_) => workspace_root().map(|root| redteam::command(&root)),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

/// Runs one subcommand of the `tessera` tool (tools/tessera) with the given arguments.
fn tool(subcommand: &str, arguments: ToolArguments) -> ExitCode {
    let arguments = ["tessera", subcommand]
        .into_iter()
        .map(std::ffi::OsString::from)
        .chain(arguments.arguments);
    ExitCode::from(tessera::main_with_args(arguments).clamp(0, 255) as u8)
}

/// The workspace root: xtask lives in tools/xtask.
fn workspace_root() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize()
        .with_context(|| format!("cannot find the workspace at {}", root.display()))
}

/// Reads the chosen table (a relative `--table` is taken from the current directory).
fn load_table(root: &Path, argument: &TableArgument) -> Result<TableInfo> {
    let path = argument
        .table
        .clone()
        .unwrap_or_else(|| root.join(DEFAULT_TABLE));
    let path = path
        .canonicalize()
        .with_context(|| format!("cannot find partition table {}", path.display()))?;
    table::load(&path)
}

fn build(arguments: &TableArgument) -> Result<ExitCode> {
    let root = workspace_root()?;
    let table = load_table(&root, arguments)?;
    image::build(&root, &table)?;
    Ok(ExitCode::SUCCESS)
}

fn make_iso(arguments: &TableArgument) -> Result<ExitCode> {
    let root = workspace_root()?;
    let table = load_table(&root, arguments)?;
    if iso::ensure_installed(&root, false)? == Installation::UserMustInstall {
        return Ok(ExitCode::from(2));
    }
    let image = image::build(&root, &table)?;
    iso::build(&root, &table, &image, iso::Protocol::Multiboot1)?;
    iso::build(&root, &table, &image, iso::Protocol::Multiboot2)?;
    Ok(ExitCode::SUCCESS)
}

fn run(arguments: &RunArguments) -> Result<ExitCode> {
    let emulator = match arguments.emulator {
        EmulatorChoice::Qemu => Emulator::Qemu {
            boot: arguments.boot.unwrap_or(BootMethod::Kernel),
            cpu: arguments.cpu.clone(),
        },
        EmulatorChoice::Bochs => {
            if arguments.boot == Some(BootMethod::Kernel) {
                eprintln!("error: Bochs cannot load the image directly; it boots the GRUB ISO");
                return Ok(ExitCode::from(2));
            }
            if arguments.boot.is_some_and(|boot| boot != BootMethod::Grub) {
                eprintln!(
                    "error: the Bochs lane boots only the `multiboot` GRUB ISO (--boot grub)"
                );
                return Ok(ExitCode::from(2));
            }
            Emulator::Bochs {
                cpu: arguments
                    .cpu
                    .clone()
                    .unwrap_or_else(|| bochs::DEFAULT_CPU.into()),
            }
        }
    };
    let root = workspace_root()?;
    let table = load_table(&root, &arguments.table)?;
    if emulator.ensure_installed(&root)? == Installation::UserMustInstall {
        return Ok(ExitCode::from(2));
    }
    let settings = RunSettings {
        seconds: arguments
            .seconds
            .or(table.run_seconds)
            .unwrap_or(DEFAULT_RUN_SECONDS),
        seconds_explicit: arguments.seconds.is_some(),
        deterministic: arguments.deterministic,
    };
    let booted = run::prepare(&root, &table, &emulator).and_then(|medium| {
        run::boot(
            &image::target_directory(&root),
            &table,
            &emulator,
            &medium,
            settings,
        )
    });
    let (failures, summary, interrupted) = match booted {
        Ok(transcript) => {
            let failures = run::judge(&transcript, &table, settings);
            let summary = run::summary(&transcript, &failures);
            let interrupted = transcript.emulator_exit == EmulatorExit::Interrupted;
            (failures, summary, interrupted)
        }
        Err(error) => (
            vec![error.to_string()],
            format!("run: FAILED: {error:#}"),
            false,
        ),
    };
    println!("{summary}");
    Ok(if interrupted {
        ExitCode::from(INTERRUPTED_STATUS)
    } else if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One system test's outcome: `Err` holds the failures.
type Outcome = Result<(), Vec<String>>;

/// The outcome of a check that collected `failures`: passed when there are none.
fn outcome(failures: Vec<String>) -> Outcome {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Whether the system test `name` runs under `--only words` (every test when none given).
fn selected(name: &str, only: &[String]) -> bool {
    only.is_empty() || only.iter().any(|word| name.contains(word.as_str()))
}

fn test(only: &[String]) -> Result<ExitCode> {
    let root = workspace_root()?;
    let mut counts = host_tests::Counts::default();
    if only.is_empty() {
        println!("== host tests: cargo test");
        counts = host_tests::run(&root)?;
        println!("== lint: cargo fmt --check, cargo clippy -D warnings");
        for (name, passed) in lint::lint_results(&root)? {
            println!("lint {name}: {}", if passed { "ok" } else { "FAILED" });
            if passed {
                counts.passed += 1;
            } else {
                counts.failed += 1;
            }
        }
    } else {
        println!("== --only {}: host tests and lint not run", only.join(" "));
    }
    let started = Instant::now();

    let mut report = |name: &str, seconds: f64, outcome: Outcome| match outcome {
        Ok(()) => {
            println!("system test {name}: ok ({seconds:.1} s)");
            counts.passed += 1;
        }
        Err(failures) => {
            println!("system test {name}: FAILED ({seconds:.1} s)");
            for failure in failures {
                println!("  - {failure}");
            }
            counts.failed += 1;
        }
    };

    let systems = SystemTests::prepare(&root);
    let mut not_selected = 0;
    for (name, test) in system_tests() {
        if !selected(&name, only) {
            not_selected += 1;
            continue;
        }
        if process::interrupted() {
            report(&name, 0.0, Err(vec!["not run: interrupted".into()]));
            continue;
        }
        println!("== system test {name}");
        let test_started = Instant::now();
        let outcome = test(&systems);
        report(&name, test_started.elapsed().as_secs_f64(), outcome);
    }
    let redteam_selected = ["redteam-svm", "redteam-vmx"]
        .iter()
        .any(|name| selected(name, only));
    if !process::interrupted() && redteam_selected {
        println!("== red-team suite: cargo xtask redteam (QEMU/SVM, Bochs/VMX)");
        for result in redteam::suite(&root) {
            let name = format!("redteam-{}", result.backend);
            report(&name, result.seconds, result.outcome());
        }
    }
    println!("system tests took {:.0} s", started.elapsed().as_secs_f64());
    if only.is_empty() {
        println!("{} passed, {} failed", counts.passed, counts.failed);
    } else {
        println!(
            "{} passed, {} failed, {not_selected} not selected (--only): not the whole suite",
            counts.passed, counts.failed
        );
        if counts.passed + counts.failed == 0 {
            println!("no system test matches --only {}", only.join(" "));
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(if process::interrupted() {
        ExitCode::from(INTERRUPTED_STATUS)
    } else if counts.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A system test: a name and what it runs.
type SystemTest = (String, Box<dyn Fn(&SystemTests) -> Outcome>);

/// The system tests in the order they run. The whole Bochs feature matrix runs: a demo run
/// takes about 3 s of Bochs, a refusal about 4 s.
fn system_tests() -> Vec<SystemTest> {
    let mut tests: Vec<SystemTest> = vec![
        (
            "demo-qemu".into(),
            Box::new(|systems: &SystemTests| {
                systems.demo(
                    &Emulator::Qemu {
                        boot: BootMethod::Kernel,
                        cpu: None,
                    },
                    Backend::Svm,
                )
            }),
        ),
        (
            "demo-qemu-grub".into(),
            Box::new(|systems: &SystemTests| {
                systems.demo(
                    &Emulator::Qemu {
                        boot: BootMethod::Grub,
                        cpu: None,
                    },
                    Backend::Svm,
                )
            }),
        ),
        (
            "demo-qemu-grub2".into(),
            Box::new(|systems: &SystemTests| {
                systems.demo(
                    &Emulator::Qemu {
                        boot: BootMethod::Grub2,
                        cpu: None,
                    },
                    Backend::Svm,
                )
            }),
        ),
        (
            // GRUB's multiboot2 under OVMF: no BIOS areas, the RSDP from the boot information.
            "demo-qemu-uefi".into(),
            Box::new(|systems: &SystemTests| {
                systems.demo(
                    &Emulator::Qemu {
                        boot: BootMethod::Uefi,
                        cpu: None,
                    },
                    Backend::Svm,
                )
            }),
        ),
        (
            format!("demo-bochs-{}", bochs::DEFAULT_CPU),
            Box::new(|systems: &SystemTests| {
                systems.demo(&bochs_model(bochs::DEFAULT_CPU), Backend::Vmx)
            }),
        ),
        (
            "deterministic-qemu".into(),
            Box::new(|systems: &SystemTests| {
                systems.deterministic(&Emulator::Qemu {
                    boot: BootMethod::Kernel,
                    cpu: None,
                })
            }),
        ),
        (
            "deterministic-bochs".into(),
            Box::new(|systems: &SystemTests| {
                systems.deterministic(&bochs_model(bochs::DEFAULT_CPU))
            }),
        ),
    ];
    // The default model has run in the demo test already.
    for model in bochs::VMX_MODELS {
        if model != bochs::DEFAULT_CPU {
            tests.push((
                format!("matrix-bochs-{model}"),
                Box::new(move |systems: &SystemTests| {
                    systems.demo(&bochs_model(model), Backend::Vmx)
                }),
            ));
        }
    }
    // A guest image changed after the build: the boot digests refuse every partition, with
    // the processor's SHA extensions (QEMU) and in software (Bochs' default model).
    tests.push((
        "tampered-image-qemu".into(),
        Box::new(|systems: &SystemTests| {
            systems.tampered_image(&Emulator::Qemu {
                boot: BootMethod::Kernel,
                cpu: None,
            })
        }),
    ));
    tests.push((
        "tampered-image-bochs".into(),
        Box::new(|systems: &SystemTests| systems.tampered_image(&bochs_model(bochs::DEFAULT_CPU))),
    ));
    for (model, missing) in bochs::REFUSING_MODELS {
        tests.push((
            format!("matrix-bochs-{model}-refuses"),
            Box::new(move |systems: &SystemTests| systems.refusal(model, missing)),
        ));
    }
    tests.extend(interrupt_tests());
    tests.extend(system_test::parity_tests());
    tests.extend(pci_test::tests());
    // Issue 6: Debian's kernel in a partition beside a real-time guest (QEMU only; minutes).
    tests.push((
        "linux-rt-qemu".into(),
        Box::new(|systems: &SystemTests| match &systems.qemu_missing {
            Some(missing) => Err(vec![missing.clone()]),
            None => linux::system_test(&systems.root),
        }),
    ));
    tests
}

/// The interrupt tests (issue 5) on QEMU (SVM) and on Bochs' default model (VMX). The
/// tests of one emulator share one boot of partitions/irq-demo.toml (the first of them
/// boots it, so its time includes the boot); the timer test boots
/// partitions/irq-timer.toml.
fn interrupt_tests() -> Vec<SystemTest> {
    let emulators = [
        (
            "qemu",
            Emulator::Qemu {
                boot: BootMethod::Kernel,
                cpu: None,
            },
            Backend::Svm,
        ),
        ("bochs", bochs_model(bochs::DEFAULT_CPU), Backend::Vmx),
    ];
    let mut tests: Vec<SystemTest> = Vec::new();
    for (suffix, emulator, backend) in emulators {
        let demo = emulator.clone();
        tests.push((
            format!("irq-demo-{suffix}"),
            Box::new(move |systems: &SystemTests| {
                let (transcript, table) = systems.boot_once(irq_test::IRQ_DEMO_TABLE, &demo)?;
                system_test::check_demo_transcript(&transcript, &table, backend)
            }),
        ));
        let smp = emulator.clone();
        tests.push((
            format!("irq-second-core-{suffix}"),
            Box::new(move |systems: &SystemTests| {
                let (transcript, _) = systems.boot_once(irq_test::IRQ_DEMO_TABLE, &smp)?;
                irq_test::check_second_core(
                    &transcript,
                    irq_test::SMP_PARTITION,
                    irq_test::SMP_SECOND_CORE,
                )
            }),
        ));
        let nmi = emulator.clone();
        tests.push((
            format!("irq-nmi-ipi-{suffix}"),
            Box::new(move |systems: &SystemTests| {
                let (transcript, _) = systems.boot_once(irq_test::IRQ_DEMO_TABLE, &nmi)?;
                irq_test::check_nmi_ipi(
                    &transcript,
                    irq_test::SMP_PARTITION,
                    irq_test::SMP_SECOND_CORE,
                )
            }),
        ));
        let attack = emulator.clone();
        tests.push((
            format!("irq-attack-refused-{suffix}"),
            Box::new(move |systems: &SystemTests| {
                let (transcript, _) = systems.boot_once(irq_test::IRQ_DEMO_TABLE, &attack)?;
                irq_test::check_attack(&transcript, irq_test::ATTACKER, irq_test::VICTIM)
            }),
        ));
        let ping = emulator.clone();
        tests.push((
            format!("irq-ping-pong-{suffix}"),
            Box::new(move |systems: &SystemTests| {
                let (transcript, _) = systems.boot_once(irq_test::IRQ_DEMO_TABLE, &ping)?;
                irq_test::check_ping_pong(
                    &transcript,
                    irq_test::PINGER,
                    irq_test::PONGER,
                    irq_test::PING_ROUNDS,
                )
            }),
        ));
        let timer = emulator;
        tests.push((
            format!("irq-timer-no-exits-{suffix}"),
            Box::new(move |systems: &SystemTests| {
                let (transcript, _) = systems.boot_once(irq_test::IRQ_TIMER_TABLE, &timer)?;
                irq_test::check_timer_loop(
                    &transcript,
                    irq_test::TIMER_PARTITION,
                    irq_test::TIMER_TICKS,
                )
            }),
        ));
    }
    tests
}

fn bochs_model(model: &str) -> Emulator {
    Emulator::Bochs { cpu: model.into() }
}

/// What the system tests share: the demo table, its image and ISOs (built once), and which
/// emulators are installed.
struct SystemTests {
    root: PathBuf,
    /// The table, its image and its ISOs (`multiboot`, `multiboot2`), or why they could not
    /// be made.
    built: Result<(TableInfo, PathBuf, PathBuf, PathBuf), String>,
    /// Why QEMU, or Bochs, cannot run, if it cannot (with the command that installs it).
    qemu_missing: Option<String>,
    bochs_missing: Option<String>,
    /// Why QEMU cannot boot UEFI (OVMF, GRUB's UEFI modules), if it cannot.
    uefi_missing: Option<String>,
    /// The boots of [`SystemTests::boot_once`], by table and run directory.
    boots: RefCell<Vec<(String, BootResult)>>,
}

/// A boot's transcript and table, or why there is none.
type BootResult = Result<(Transcript, TableInfo), Vec<String>>;

impl SystemTests {
    fn prepare(root: &Path) -> Self {
        let missing = |emulator: &Emulator, command: &str| -> Option<String> {
            match emulator.ensure_installed(root) {
                Ok(Installation::Ready) => None,
                Ok(Installation::UserMustInstall) => Some(format!(
                    "{} is not installed; install it as root with `bash ci/install-deps.sh` ({command})",
                    emulator.name()
                )),
                Err(error) => Some(format!("{error:#}")),
            }
        };
        let qemu_missing = missing(
            &Emulator::Qemu {
                boot: BootMethod::Grub,
                cpu: None,
            },
            qemu::INSTALL_COMMAND,
        );
        let bochs_missing = missing(
            &bochs_model(bochs::DEFAULT_CPU),
            &format!("{}; {}", bochs::INSTALL_COMMAND, iso::INSTALL_COMMAND),
        );
        let uefi_missing = missing(
            &Emulator::Qemu {
                boot: BootMethod::Uefi,
                cpu: None,
            },
            &format!("{}; {}", iso::INSTALL_COMMAND, qemu::OVMF_INSTALL_COMMAND),
        );
        let built = (|| -> Result<_> {
            let table = table::load(&root.join(DEFAULT_TABLE))?;
            let image = image::build(root, &table)?;
            let iso = iso::build(root, &table, &image, iso::Protocol::Multiboot1)?;
            let iso2 = iso::build(root, &table, &image, iso::Protocol::Multiboot2)?;
            Ok((table, image, iso, iso2))
        })()
        .map_err(|error| format!("{error:#}"));
        Self {
            root: root.to_path_buf(),
            built,
            qemu_missing,
            bochs_missing,
            uefi_missing,
            boots: RefCell::new(Vec::new()),
        }
    }

    /// Builds `table` (relative to the workspace root) and boots it in `emulator` once;
    /// later calls with the same table and emulator return the same run.
    fn boot_once(&self, table: &str, emulator: &Emulator) -> BootResult {
        let key = format!("{table} {}", emulator.run_directory_name(table));
        if let Some((_, result)) = self.boots.borrow().iter().find(|(known, _)| *known == key) {
            return result.clone();
        }
        let result = self.boot_table(table, emulator);
        self.boots.borrow_mut().push((key, result.clone()));
        result
    }

    fn boot_table(&self, table: &str, emulator: &Emulator) -> BootResult {
        let missing = match emulator {
            Emulator::Qemu { .. } => &self.qemu_missing,
            Emulator::Bochs { .. } => &self.bochs_missing,
        };
        if let Some(missing) = missing {
            return Err(vec![missing.clone()]);
        }
        let failed = |error: anyhow::Error| vec![format!("{error:#}")];
        let table = table::load(&self.root.join(table)).map_err(failed)?;
        let medium = run::prepare(&self.root, &table, emulator).map_err(failed)?;
        let settings = RunSettings {
            seconds: Self::seconds(emulator),
            seconds_explicit: false,
            deterministic: false,
        };
        let transcript = run::boot(
            &image::target_directory(&self.root),
            &table,
            emulator,
            &medium,
            settings,
        )
        .map_err(failed)?;
        if transcript.emulator_exit == EmulatorExit::Interrupted {
            return Err(vec!["interrupted".into()]);
        }
        Ok((transcript, table))
    }

    /// Boots the demo once in `emulator` with `settings`.
    fn boot(
        &self,
        emulator: &Emulator,
        seconds: u64,
        deterministic: bool,
    ) -> Result<(Transcript, TableInfo), Vec<String>> {
        let missing = match emulator {
            Emulator::Qemu {
                boot: BootMethod::Uefi,
                ..
            } => self.qemu_missing.as_ref().or(self.uefi_missing.as_ref()),
            Emulator::Qemu { .. } => self.qemu_missing.as_ref(),
            Emulator::Bochs { .. } => self.bochs_missing.as_ref(),
        };
        if let Some(missing) = missing {
            return Err(vec![missing.clone()]);
        }
        let (table, image, iso, iso2) = self.built.as_ref().map_err(|error| vec![error.clone()])?;
        let medium = match emulator.boot_method() {
            BootMethod::Kernel => BootMedium::Kernel(image.clone()),
            BootMethod::Grub => BootMedium::Cdrom(iso.clone()),
            BootMethod::Grub2 => BootMedium::Cdrom(iso2.clone()),
            BootMethod::Uefi => BootMedium::UefiCdrom(iso2.clone()),
        };
        let settings = RunSettings {
            seconds,
            seconds_explicit: false,
            deterministic,
        };
        let transcript = run::boot(
            &image::target_directory(&self.root),
            table,
            emulator,
            &medium,
            settings,
        )
        .map_err(|error| vec![format!("{error:#}")])?;
        Ok((transcript, table.clone()))
    }

    fn seconds(emulator: &Emulator) -> u64 {
        match emulator {
            Emulator::Qemu { .. } => QEMU_TEST_SECONDS,
            Emulator::Bochs { .. } => BOCHS_TEST_SECONDS,
        }
    }

    /// The demo runs correctly and the banner names `backend`.
    fn demo(&self, emulator: &Emulator, backend: Backend) -> Outcome {
        let (transcript, table) = self.boot(emulator, Self::seconds(emulator), false)?;
        system_test::check_demo_transcript(&transcript, &table, backend)?;
        // The blob digests' engine follows the CPU: QEMU's default CPU and Bochs' Tiger
        // Lake have the SHA extensions (SVM backend and VMX backend), Bochs' default model
        // (Haswell) has none; other CPUs only have to name one.
        let engine = match emulator {
            Emulator::Qemu { cpu: None, .. } => Some(system_test::DigestEngine::Extensions),
            Emulator::Bochs { cpu } if cpu == "tigerlake" => {
                Some(system_test::DigestEngine::Extensions)
            }
            Emulator::Bochs { cpu } if cpu == bochs::DEFAULT_CPU => {
                Some(system_test::DigestEngine::Software)
            }
            _ => None,
        };
        system_test::check_digest_engine(&transcript, engine)
    }

    /// The demo's image with one byte of its embedded guest changed: every partition's load
    /// is refused for its digest, then the boot (nothing left to run).
    fn tampered_image(&self, emulator: &Emulator) -> Outcome {
        let (table, image, _, _) = self.built.as_ref().map_err(|error| vec![error.clone()])?;
        let target = image::target_directory(&self.root);
        let guest = target
            .join(image::TARGET)
            .join("release")
            .join("tessera-demo");
        let tampered_table = TableInfo {
            stem: format!("{}-tampered", table.stem),
            ..table.clone()
        };
        let tampered = target
            .join("tessera")
            .join(format!("{}.elf", tampered_table.stem));
        let changed = (|| -> anyhow::Result<PathBuf> {
            let image_bytes = std::fs::read(image)?;
            let guest_bytes = std::fs::read(&guest)?;
            let bytes = system_test::tamper_with_guest(&image_bytes, &guest_bytes)
                .map_err(|problem| anyhow::anyhow!("{problem}"))?;
            std::fs::write(&tampered, bytes)?;
            Ok(match emulator.boot_method() {
                BootMethod::Kernel => tampered.clone(),
                _ => iso::build(
                    &self.root,
                    &tampered_table,
                    &tampered,
                    iso::Protocol::Multiboot1,
                )?,
            })
        })()
        .map_err(|error| vec![format!("cannot make the tampered image: {error:#}")])?;
        let medium = match emulator.boot_method() {
            BootMethod::Kernel => BootMedium::Kernel(changed),
            _ => BootMedium::Cdrom(changed),
        };
        if let Some(missing) = match emulator {
            Emulator::Qemu { .. } => self.qemu_missing.as_ref(),
            Emulator::Bochs { .. } => self.bochs_missing.as_ref(),
        } {
            return Err(vec![missing.clone()]);
        }
        let settings = RunSettings {
            seconds: Self::seconds(emulator),
            seconds_explicit: false,
            deterministic: false,
        };
        let transcript = run::boot(&target, &tampered_table, emulator, &medium, settings)
            .map_err(|error| vec![format!("{error:#}")])?;
        system_test::check_tampered_image(&transcript, &tampered_table)
    }

    /// The demo on `model` ends in a clean refusal naming `missing`.
    fn refusal(&self, model: &str, missing: &str) -> Outcome {
        let (transcript, _) = self.boot(&bochs_model(model), REFUSAL_TEST_SECONDS, false)?;
        system_test::check_refusal(&transcript, missing)
    }

    /// Two deterministic runs of the demo write the same bytes to every UART.
    fn deterministic(&self, emulator: &Emulator) -> Outcome {
        let mut outputs = Vec::new();
        for _ in 0..2 {
            let (transcript, _) = self.boot(emulator, Self::seconds(emulator), true)?;
            let mut files = Vec::new();
            for (label, path) in &transcript.uart_files {
                let bytes = std::fs::read(path).unwrap_or_default();
                files.push((label.clone(), bytes));
            }
            if files.iter().all(|(_, bytes)| bytes.is_empty()) {
                return Err(vec!["the run printed nothing on any UART".into()]);
            }
            if transcript.emulator_exit == EmulatorExit::Interrupted {
                return Err(vec!["interrupted".into()]);
            }
            outputs.push(files);
        }
        match system_test::first_difference(&outputs[0], &outputs[1]) {
            None => Ok(()),
            Some(difference) => Err(vec![format!("two deterministic runs differ: {difference}")]),
        }
    }
}
