//! Running the host tests (`cargo test` over the workspace's default members) and counting
//! their test binaries.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// Passed and failed checks; each test binary (and each crate's doc tests) is one check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
}

/// Counts one libtest summary line (`test result: ok. …` / `test result: FAILED. …`).
pub fn count_line(counts: &mut Counts, line: &str) {
    if line.starts_with("test result: ok.") {
        counts.passed += 1;
    } else if line.starts_with("test result: FAILED.") {
        counts.failed += 1;
    }
}

/// Runs `cargo test --no-fail-fast` at the workspace root, passing its output through.
/// A failure outside any test binary (a build error) counts as one failed check.
pub fn run(root: &Path) -> Result<Counts> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(root)
        .args(["test", "--no-fail-fast"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut counts = Counts::default();
    let stdout = child
        .stdout
        .take()
        .context("cargo test has no output pipe")?;
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line.context("cannot read the output of cargo test")?;
        let line = String::from_utf8_lossy(&line);
        println!("{line}");
        count_line(&mut counts, &line);
    }
    let status = child.wait().context("cannot wait for cargo test")?;
    if !status.success() && counts.failed == 0 {
        eprintln!("cargo test failed ({status}) without a failing test binary");
        counts.failed += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_binary_once() {
        let mut counts = Counts::default();
        for line in [
            "running 3 tests",
            "test range::tests::overlap ... ok",
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "    test result: ok. indented lines are some test's own output",
        ] {
            count_line(&mut counts, line);
        }
        assert_eq!(
            counts,
            Counts {
                passed: 2,
                failed: 1
            }
        );
    }
}
