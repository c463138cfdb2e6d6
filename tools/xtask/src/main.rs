//! `cargo xtask`: Tessera's developer runner — build an image for a partition table, boot it
//! in QEMU, run the host and system tests.
//!
//! Principles: every decision that can be a pure function is one and is unit-tested (the
//! QEMU command line, the transcript checks, line splitting); the partition table is read
//! in one module ([`table`]); the hypervisor's console markers are named in one module
//! ([`markers`]). Exit status 0 means everything passed, 1 a failure, 2 a usage problem or
//! a missing tool the user has to install.

mod host_tests;
mod image;
mod markers;
mod qemu;
mod run;
mod serial;
mod system_test;
mod table;
mod transcript;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::qemu::Installation;
use crate::run::RunSettings;
use crate::table::TableInfo;

/// The table used when none is given, relative to the workspace root.
const DEFAULT_TABLE: &str = "partitions/demo.toml";
/// `cargo xtask run`'s time bound when neither `--seconds` nor the table's `[run] seconds`
/// gives one.
const DEFAULT_RUN_SECONDS: u64 = 120;
/// The demo system test's time bound.
const SYSTEM_TEST_SECONDS: u64 = 180;

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
    /// Build, then boot the image in an emulator and stream every UART.
    Run(RunArguments),
    /// Run the host tests, then boot the demo table in QEMU and check its output.
    Test,
}

#[derive(Args)]
struct TableArgument {
    /// The partition table [default: partitions/demo.toml].
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
}

#[derive(Args)]
struct RunArguments {
    #[command(flatten)]
    table: TableArgument,
    /// The emulator (only `qemu` for now; `bochs` comes with the VMX lane).
    #[arg(long, default_value = "qemu")]
    emulator: String,
    /// Stop the emulator after this many seconds; running out is then no failure
    /// [default: the table's `[run] seconds`, else 120; running out of it is a failure].
    #[arg(long, value_name = "N")]
    seconds: Option<u64>,
    /// Count instructions instead of real time: output and TSC values repeat exactly.
    #[arg(long)]
    deterministic: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Build(arguments) => build(&arguments),
        Commands::Run(arguments) => run(&arguments),
        Commands::Test => test(),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
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

fn run(arguments: &RunArguments) -> Result<ExitCode> {
    if arguments.emulator != "qemu" {
        eprintln!(
            "error: emulator `{}` is not supported yet; use --emulator qemu",
            arguments.emulator
        );
        return Ok(ExitCode::from(2));
    }
    let root = workspace_root()?;
    let table = load_table(&root, &arguments.table)?;
    if qemu::ensure_installed(&root)? == Installation::UserMustInstall {
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
    let booted = image::build(&root, &table)
        .and_then(|image| run::boot(&image::target_directory(&root), &table, &image, settings));
    let (failures, summary) = match booted {
        Ok(transcript) => {
            let failures = run::judge(&transcript, &table, settings);
            let summary = run::summary(&transcript, &failures);
            (failures, summary)
        }
        Err(error) => (vec![error.to_string()], format!("run: FAILED: {error:#}")),
    };
    println!("{summary}");
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn test() -> Result<ExitCode> {
    let root = workspace_root()?;
    println!("== host tests: cargo test");
    let mut counts = host_tests::run(&root)?;

    println!("== system test: {DEFAULT_TABLE} in QEMU");
    if qemu::ensure_installed(&root)? == Installation::UserMustInstall {
        println!("system test demo: FAILED (no usable QEMU)");
        println!("{} passed, {} failed", counts.passed, counts.failed + 1);
        return Ok(ExitCode::from(2));
    }
    match demo_system_test(&root) {
        Ok(()) => {
            println!("system test demo: ok");
            counts.passed += 1;
        }
        Err(failures) => {
            println!("system test demo: FAILED");
            for failure in failures {
                println!("  - {failure}");
            }
            counts.failed += 1;
        }
    }
    println!("{} passed, {} failed", counts.passed, counts.failed);
    Ok(if counts.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds and boots the demo table and checks its transcript.
fn demo_system_test(root: &Path) -> Result<(), Vec<String>> {
    let as_failure = |error: anyhow::Error| vec![format!("{error:#}")];
    let table = table::load(&root.join(DEFAULT_TABLE)).map_err(as_failure)?;
    let image = image::build(root, &table).map_err(as_failure)?;
    let settings = RunSettings {
        seconds: SYSTEM_TEST_SECONDS,
        seconds_explicit: false,
        deterministic: false,
    };
    let transcript =
        run::boot(&image::target_directory(root), &table, &image, settings).map_err(as_failure)?;
    system_test::check_demo_transcript(&transcript, &table)
}
