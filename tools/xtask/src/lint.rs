//! `cargo xtask lint` (the hypervisor's floors, formatting and clippy over every crate, host
//! and bare-metal) and
//! `cargo xtask fuzz` (the partition-table fuzz target for a bounded time).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, ExitCode};

/// The crates built for the bare-metal target, linted with it.
const BARE_METAL_PACKAGES: [&str; 5] = [
    "tessera-redteam",
    "tessera-hypervisor",
    "tessera-loader",
    "tessera-demo",
    "tessera-guest",
];

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root);
    command
}

fn succeeded(mut command: Command, what: &str) -> Result<bool> {
    println!("lint: {what}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    Ok(status.success())
}

/// Checks the hypervisor's floors (crate::layers): imports point down, `unsafe` only on the
/// hardware floors. Prints each violation and the unsafe sites per floor.
fn floors_hold(root: &Path) -> Result<bool> {
    println!("lint: hypervisor floors (imports point down; unsafe only in arch/, virt/)");
    let report = crate::layers::check_tree(&root.join("hypervisor/src"))
        .context("cannot read hypervisor/src")?;
    for violation in &report.violations {
        println!("error: {violation}");
    }
    let counts: Vec<String> = report
        .unsafe_sites
        .iter()
        .map(|(floor, count)| format!("{floor} {count}"))
        .collect();
    println!("lint: unsafe sites by floor: {}", counts.join(", "));
    Ok(report.violations.is_empty())
}

/// Runs every lint; returns each one's name and whether it passed.
pub fn lint_results(root: &Path) -> Result<Vec<(&'static str, bool)>> {
    let mut format = cargo(root);
    format.args(["fmt", "--all", "--check"]);
    let mut host = cargo(root);
    host.args(["clippy", "--workspace", "--all-targets"]);
    for package in BARE_METAL_PACKAGES {
        host.args(["--exclude", package]);
    }
    host.args(["--", "-D", "warnings"]);
    // The hypervisor's build script reads the default table's guest images: build them first.
    let mut guests = cargo(root);
    guests.args([
        "build",
        "--release",
        "--target",
        "x86_64-unknown-none",
        "-p",
        "tessera-demo",
    ]);
    let guests_built = succeeded(guests, "building the demo guest for the bare-metal lint")?;
    let mut bare_metal = cargo(root);
    bare_metal.args(["clippy", "--release", "--target", "x86_64-unknown-none"]);
    for package in BARE_METAL_PACKAGES {
        bare_metal.args(["-p", package]);
    }
    bare_metal.args(["--", "-D", "warnings"]);
    Ok(vec![
        ("hypervisor floors", floors_hold(root)?),
        (
            "cargo fmt --check",
            succeeded(format, "cargo fmt --all --check")?,
        ),
        (
            "clippy (host crates)",
            succeeded(host, "cargo clippy, host crates, -D warnings")?,
        ),
        (
            "clippy (bare-metal crates)",
            guests_built
                && succeeded(
                    bare_metal,
                    "cargo clippy, x86_64-unknown-none crates, -D warnings",
                )?,
        ),
    ])
}

pub fn lint(root: &Path) -> Result<ExitCode> {
    let results = lint_results(root)?;
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| *name)
        .collect();
    if failed.is_empty() {
        println!("lint: ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("lint: FAILED: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// Fuzzes parse + validate + lower with arbitrary table text (config/fuzz) for `seconds`,
/// seeded with the corpus of valid and invalid tables. Installs cargo-fuzz if missing.
pub fn fuzz(root: &Path, seconds: u64) -> Result<ExitCode> {
    let has_cargo_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_cargo_fuzz {
        println!("fuzz: installing cargo-fuzz");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("cannot run cargo install cargo-fuzz")?;
        if !status.success() {
            bail!("cargo install cargo-fuzz --locked failed");
        }
    }
    let config = root.join("config");
    let corpus = config.join("fuzz/corpus/parse_and_validate");
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let status = Command::new("cargo")
        .current_dir(&config)
        .args(["+nightly", "fuzz", "run", "parse_and_validate"])
        .arg(&corpus)
        .args(["corpus/valid", "corpus/invalid", "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=8192")
        .status()
        .context("cannot run cargo fuzz")?;
    if status.success() {
        println!("fuzz: ok ({seconds} s, no crash)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("fuzz: FAILED (see the crash input above)");
        Ok(ExitCode::FAILURE)
    }
}
