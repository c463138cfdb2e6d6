//! `tessera check`: validates tables exactly as the hypervisor's build does (parse, every
//! rule, and with files also lowering) and prints the findings rustc-style or as JSON.

use std::path::{Path, PathBuf};

use tessera_config::{Diagnostics, Rule, Table};

use crate::{Format, Outcome, EXIT_INVALID, EXIT_UNREADABLE, EXIT_VALID};

/// What checking one table found.
#[derive(Debug)]
pub enum Verdict {
    Valid(Box<Table>),
    Invalid(Diagnostics),
}

/// Loads and validates one table; with `files`, also reads the boot images and lowers the
/// table from them, which is what the build does.
pub fn check_table(path: &Path, files: bool) -> Verdict {
    let checked = if files {
        tessera_config::load(path).and_then(|validated| {
            tessera_config::lower(&validated)?;
            Ok(validated.into_table())
        })
    } else {
        tessera_config::load_without_files(path)
    };
    match checked {
        Ok(table) => Verdict::Valid(Box::new(table)),
        Err(diagnostics) => Verdict::Invalid(diagnostics),
    }
}

/// Whether the diagnostics say the file could not be read at all.
pub fn is_unreadable(diagnostics: &Diagnostics) -> bool {
    diagnostics.rules().contains(&Rule::TableUnreadable)
}

/// `tessera check`.
pub fn check(tables: &[PathBuf], files: bool, format: Format) -> Outcome {
    let mut outcome = Outcome::default();
    let mut reports = Vec::new();
    let (mut invalid, mut unreadable) = (false, false);
    for path in tables {
        match check_table(path, files) {
            Verdict::Valid(table) => {
                if format == Format::Human {
                    for warning in tessera_config::warnings(&table) {
                        outcome.stderr.push_str(&warning);
                        outcome.stderr.push('\n');
                    }
                    outcome.stdout.push_str(&format!(
                        "ok: {}: {} partition{}, {} channel{}{}\n",
                        path.display(),
                        table.partitions.len(),
                        if table.partitions.len() == 1 { "" } else { "s" },
                        table.channels.len(),
                        if table.channels.len() == 1 { "" } else { "s" },
                        if files {
                            ""
                        } else {
                            " (boot files not checked)"
                        }
                    ));
                }
                reports.push(serde_json::json!({
                    "file": path.display().to_string(),
                    "valid": true,
                    "findings": [],
                }));
            }
            Verdict::Invalid(diagnostics) => {
                invalid = true;
                unreadable |= is_unreadable(&diagnostics);
                if format == Format::Human {
                    outcome.stderr.push_str(&diagnostics.render());
                }
                let mut report = diagnostics.to_json();
                report["valid"] = serde_json::Value::Bool(false);
                reports.push(report);
            }
        }
    }
    if format == Format::Json {
        let document = serde_json::json!({
            "valid": !invalid,
            "files_checked": files,
            "tables": reports,
        });
        outcome.stdout = serde_json::to_string_pretty(&document)
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
        outcome.stdout.push('\n');
    }
    outcome.code = if unreadable {
        EXIT_UNREADABLE
    } else if invalid {
        EXIT_INVALID
    } else {
        EXIT_VALID
    };
    outcome
}

/// Loads a table for `show` and `graph` (boot files are not needed to describe it), or the
/// outcome to return when it is invalid.
pub fn load_for_display(path: &Path) -> Result<Table, Outcome> {
    match check_table(path, false) {
        Verdict::Valid(table) => Ok(*table),
        Verdict::Invalid(diagnostics) => Err(Outcome {
            code: if is_unreadable(&diagnostics) {
                EXIT_UNREADABLE
            } else {
                EXIT_INVALID
            },
            stdout: String::new(),
            stderr: diagnostics.render(),
        }),
    }
}
