//! The `tessera` partition-table tool, as a library so that `cargo xtask check|show|graph`
//! can delegate to it: [`main_with_args`] takes the arguments (program name first) and
//! returns the exit code; [`run`] does the same without printing, for tests.
//!
//! * `tessera check [--no-files] [--format human|json] TABLE...` — exit 0 when every table
//!   is valid, 1 when one is invalid, 2 when one cannot be read (or the arguments are wrong).
//! * `tessera show TABLE` — the partitions, a sorted host-physical memory map with owners and
//!   gaps, the channels and the devices.
//! * `tessera graph TABLE -o FILE.svg` — the machine drawn as SVG, coloured by partition.
#![forbid(unsafe_code)]

pub mod check;
pub mod graph;
pub mod map;
pub mod show;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Exit code: every table valid.
pub const EXIT_VALID: i32 = 0;
/// Exit code: a table is invalid.
pub const EXIT_INVALID: i32 = 1;
/// Exit code: a table (or another file) cannot be read or written, or the arguments are wrong.
pub const EXIT_UNREADABLE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Check, show and draw Tessera partition tables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate tables: every problem, with file:line:column, rule id and hint.
    Check {
        /// Skip the checks of the files a table names (boot images).
        #[arg(long)]
        no_files: bool,
        /// How to print findings.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// The tables to check.
        #[arg(required = true)]
        tables: Vec<PathBuf>,
    },
    /// Print the partitions and a sorted memory map (owners, gaps, shared channels).
    Show {
        /// The table to show.
        table: PathBuf,
    },
    /// Draw the machine as SVG: cores, memory map, devices, channels, coloured by partition.
    Graph {
        /// The table to draw.
        table: PathBuf,
        /// Where to write the SVG.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Output format of `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// rustc-like diagnostics.
    Human,
    /// One JSON document with every finding.
    Json,
}

/// Runs the tool with `args` (the first is the program name) and returns its output.
pub fn run(args: impl IntoIterator<Item = OsString>) -> Outcome {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let text = error.render().to_string();
            return if error.use_stderr() {
                Outcome {
                    code: EXIT_UNREADABLE,
                    stdout: String::new(),
                    stderr: text,
                }
            } else {
                Outcome {
                    code: EXIT_VALID,
                    stdout: text,
                    stderr: String::new(),
                }
            };
        }
    };
    match cli.command {
        Command::Check {
            no_files,
            format,
            tables,
        } => check::check(&tables, !no_files, format),
        Command::Show { table } => show::show(&table),
        Command::Graph { table, output } => graph::graph(&table, &output),
    }
}

/// Runs the tool with `args` (the first is the program name), prints its output and returns
/// the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    use std::io::Write;
    let outcome = run(args);
    // Printing can fail (a closed pipe); the exit code still says how the run went.
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    outcome.code
}
