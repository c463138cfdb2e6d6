//! Tessera's partition-table model: parse a TOML partition table with spans, validate every
//! rule booting needs (reporting all findings rustc-style), lower it to the hypervisor's
//! static tables and generate the Rust source the hypervisor includes.
//!
//! Entry points: [`load`] / [`load_without_files`] for the validated [`Table`], [`lower`]
//! for the [`Lowered`] machine, [`generate_rust`] for the code and [`build_script_main`]
//! for the hypervisor's build script.
#![forbid(unsafe_code)]

pub mod codegen;
pub mod diagnostics;
pub mod elf;
pub mod layout;
pub mod lower;
pub mod model;
pub mod size;
pub mod source;
pub mod validate;

use std::path::{Path, PathBuf};

pub use codegen::generate_rust;
pub use diagnostics::{render, Diagnostics, Finding, Related};
pub use lower::{lower, Lowered, LoweredBoot, LoweredChannel, LoweredPartition};
pub use model::Table;
pub use size::Size;
pub use source::{Located, Span};
pub use validate::{FileChecks, Rule};

/// Reads, parses and validates a table, including its boot files.
pub fn load(path: &Path) -> Result<Table, Diagnostics> {
    load_with(path, FileChecks::Check)
}

/// Reads, parses and validates a table without reading its boot files.
pub fn load_without_files(path: &Path) -> Result<Table, Diagnostics> {
    load_with(path, FileChecks::Skip)
}

/// Reads and parses a table and runs validation with the given file checks.
pub fn load_with(path: &Path, files: FileChecks) -> Result<Table, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|error| Diagnostics {
        path: path.to_path_buf(),
        text: String::new(),
        findings: vec![Finding::new(
            Rule::TableUnreadable,
            model::NO_SPAN,
            format!("cannot read the partition table: {error}"),
        )],
    })?;
    let table = parse(path, text)?;
    let findings = validate::validate(&table, files);
    if findings.is_empty() {
        Ok(table)
    } else {
        Err(Diagnostics {
            path: table.path,
            text: table.text,
            findings,
        })
    }
}

/// Parses table text (no validation). `path` is where it came from: relative boot paths are
/// resolved against its directory.
pub fn parse(path: &Path, text: String) -> Result<Table, Diagnostics> {
    match toml::from_str::<model::Document>(&text) {
        Ok(document) => Ok(Table {
            path: path.to_path_buf(),
            text,
            platform: document.platform,
            hypervisor: document.hypervisor,
            partitions: document.partitions,
            channels: document.channels,
            run: document.run,
        }),
        Err(error) => {
            let message = error.message().trim().to_owned();
            let rule = if message.starts_with("unknown field") {
                Rule::UnknownKey
            } else if message.starts_with("missing field") {
                Rule::MissingKey
            } else {
                Rule::Syntax
            };
            let span = error.span().map(Span::from).unwrap_or(model::NO_SPAN);
            let mut finding = Finding::new(rule, span, message);
            if rule == Rule::UnknownKey {
                finding = finding.hint("see docs/partition-table.md for every key");
            }
            Err(Diagnostics {
                path: path.to_path_buf(),
                text,
                findings: vec![finding],
            })
        }
    }
}

/// Everything the hypervisor's build script does: parse, validate, lower, generate and
/// write `out_dir/machine.rs`. Returns the files to watch (`cargo:rerun-if-changed`) or
/// the rendered diagnostics.
pub fn build_script_main(table_path: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let table = load(table_path).map_err(|diagnostics| diagnostics.render())?;
    let lowered = lower(&table).map_err(|diagnostics| diagnostics.render())?;
    let source = generate_rust(&lowered);
    let output = out_dir.join("machine.rs");
    if std::fs::read_to_string(&output).ok().as_deref() != Some(source.as_str()) {
        std::fs::write(&output, source)
            .map_err(|error| format!("error: cannot write {}: {error}", output.display()))?;
    }
    Ok(lowered.files)
}
