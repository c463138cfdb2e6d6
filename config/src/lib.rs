//! Tessera's partition-table model: parse a TOML partition table with spans, validate every
//! rule booting needs (reporting all findings rustc-style), lower it to the hypervisor's
//! static tables and generate the Rust source the hypervisor includes.
//!
//! Entry points: [`load`] for the [`Validated`] table with its boot files read,
//! [`load_without_files`] for the [`Table`] alone, [`lower()`] for the [`Lowered`] machine,
//! [`write_generated`] for the build-generated blobs (Linux boot data, ACPI tables),
//! [`generate_rust`] for the code and [`build_script_main`] for all of it at once, as the
//! hypervisor's build script.
#![forbid(unsafe_code)]

pub mod acpi;
pub mod bench;
pub mod build_script;
pub mod bzimage;
pub mod codegen;
pub mod diagnostics;
pub mod duration;
pub mod elf;
pub mod layout;
pub mod linux;
pub mod lower;
pub mod model;
pub mod schema;
pub mod size;
pub mod source;
pub mod synthetic;
pub mod toml_tree;
pub mod validate;

use std::path::{Path, PathBuf};

pub use build_script::{build_script, build_script_main, BuildScriptError};
pub use codegen::generate_rust;
pub use diagnostics::{render, Diagnostics, Finding, Related};
pub use lower::{
    lower, memory_map, BlobSource, Lowered, LoweredBlob, LoweredBoot, LoweredChannel,
    LoweredPartition,
};
pub use model::Table;
pub use size::Size;
pub use source::{Located, Span};
pub use validate::{BootFile, BootImage, ElfBoot, FileChecks, LinuxBoot, Rule, Validated};

/// Reads, parses and validates a table, including its boot files, and keeps what was read
/// of them for [`lower()`].
pub fn load(path: &Path) -> Result<Validated, Diagnostics> {
    load_reading(path, &mut |path| std::fs::read(path))
}

/// [`load`], reading the table and every boot file through `read` (tests count the reads).
pub(crate) fn load_reading(
    path: &Path,
    read: &mut validate::boot::ReadFile<'_>,
) -> Result<Validated, Diagnostics> {
    let text = read_table(path, read)?;
    let table = parse(path, text)?;
    let validation = validate::validate_reading(&table, FileChecks::Check, read);
    if validation.findings.is_empty() {
        Ok(Validated {
            table,
            boot_images: validation.boot_images,
        })
    } else {
        Err(Diagnostics {
            path: table.path,
            text: table.text,
            findings: validation.findings,
        })
    }
}

/// Reads, parses and validates a table without reading its boot files.
pub fn load_without_files(path: &Path) -> Result<Table, Diagnostics> {
    load_with(path, FileChecks::Skip)
}

/// Reads and parses a table and runs validation with the given file checks. With
/// [`FileChecks::Check`] the boot files are read and checked but not kept: [`load`] keeps
/// them for lowering.
pub fn load_with(path: &Path, files: FileChecks) -> Result<Table, Diagnostics> {
    let text = read_table(path, &mut |path| std::fs::read(path))?;
    check_text(path, text, files)
}

/// The table's text, read through `read`.
fn read_table(path: &Path, read: &mut validate::boot::ReadFile<'_>) -> Result<String, Diagnostics> {
    let bytes = read(path).map_err(|error| unreadable(path, error.to_string()))?;
    String::from_utf8(bytes)
        .map_err(|error| unreadable(path, format!("the file is not UTF-8 text ({error})")))
}

fn unreadable(path: &Path, reason: String) -> Diagnostics {
    Diagnostics {
        path: path.to_path_buf(),
        text: String::new(),
        findings: vec![Finding::new(
            Rule::TableUnreadable,
            model::NO_SPAN,
            format!("cannot read the partition table: {reason}"),
        )],
    }
}

/// Parses and validates table text that came from `path` (relative boot paths are resolved
/// against its directory; the file itself is not read).
pub fn check_text(path: &Path, text: String, files: FileChecks) -> Result<Table, Diagnostics> {
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

/// What a valid table allows but its author should see (today: PCI functions with
/// unconfined DMA), one line each: `file:line:column: warning: message`.
pub fn warnings(table: &Table) -> Vec<String> {
    validate::pci::warnings(table)
        .into_iter()
        .map(|warning| {
            format!(
                "{}:{}: warning: {}",
                table.path.display(),
                source::line_column(&table.text, warning.span.start),
                warning.message
            )
        })
        .collect()
}

/// Parses table text (no validation): the schema pass reports every unknown key, missing
/// key and mistyped value; then the text is deserialized into the model. `path` is where
/// it came from: relative boot paths are resolved against its directory.
///
/// Parsing is most of the cost of checking a large table (docs/benchmarks.md), so a table
/// is parsed once, into the validator's own flat tree ([`toml_tree`], which refers to the
/// text by byte ranges), checked against the schema with a yes-or-no walk and deserialized
/// from that same tree. A table any of these
/// steps refuses goes to [`parse_reference`], whose findings are the diagnostics: the fast
/// path only ever decides that a table is well formed, never what is wrong with one.
pub fn parse(path: &Path, text: String) -> Result<Table, Diagnostics> {
    match parse_fast(&text) {
        Some(document) => Ok(table(path, text, document)),
        None => parse_reference(path, text),
    }
}

/// [`parse`] without its fallback: the table if the fast path accepts `text`, `None` where
/// [`parse`] would ask [`parse_reference`]. Tests and the fuzz target check that whatever
/// this accepts, [`parse_reference`] accepts as the same model.
pub fn parse_fast_only(path: &Path, text: String) -> Option<Table> {
    let document = parse_fast(&text)?;
    Some(table(path, text, document))
}

/// [`parse_fast_only`] with the text lexed in pieces of about `piece_bytes` bytes, each
/// cut before a table header (the tests cut at every header to check that the pieces
/// join as one parse would).
pub fn parse_fast_only_in_pieces(path: &Path, text: String, piece_bytes: usize) -> Option<Table> {
    let document = parse_fast_in_pieces(&text, piece_bytes)?;
    Some(table(path, text, document))
}

/// The model of `text` if it is TOML 1.0 with the table's shape, from one parse into the
/// fast path's own tree ([`toml_tree`]); `None` if anything is off (the caller asks
/// [`parse_reference`] what).
fn parse_fast(text: &str) -> Option<model::Document> {
    parse_fast_in_pieces(text, toml_tree::PIECE_BYTES)
}

/// [`parse_fast`] lexing the text in pieces of about `piece_bytes` (tests cut smaller).
fn parse_fast_in_pieces(text: &str, piece_bytes: usize) -> Option<model::Document> {
    if !schema::toml_1_0_bytes(text) {
        return None;
    }
    let mut tree = toml_tree::Tree::default();
    tree.parse(text, piece_bytes)?;
    if !schema::conforms(tree.root(text), text) {
        return None;
    }
    toml_tree::deserialize(&tree, text).ok()
}

/// [`parse`] with toml_edit's full document: the schema pass walks the document, reporting
/// every finding, then the model is deserialized from the same document. [`parse`] comes
/// here for every table it does not accept itself; tests and the fuzz target compare the
/// two on tables the fast path accepts.
pub fn parse_reference(path: &Path, text: String) -> Result<Table, Diagnostics> {
    let parsed = schema::parse_document(&text).map_err(|finding| vec![*finding]);
    let parsed = parsed.and_then(|document| {
        let findings = schema::check_document(&document, &text);
        if findings.is_empty() {
            Ok(document)
        } else {
            Err(findings)
        }
    });
    let document = match parsed {
        Ok(document) => document,
        Err(findings) => {
            return Err(Diagnostics {
                path: path.to_path_buf(),
                text,
                findings,
            })
        }
    };
    let deserialized = <model::Document as serde::Deserialize>::deserialize(
        toml_edit::de::Deserializer::from(document),
    );
    match deserialized {
        Ok(document) => Ok(table(path, text, document)),
        Err(error) => {
            // The schema pass accepted the document, so this is a gap between the schema
            // and the model: still a finding, never a panic.
            let span = error.span().map(Span::from).unwrap_or(model::NO_SPAN);
            let finding = Finding::new(
                Rule::Syntax,
                span,
                format!("{SCHEMA_GAP}{}", error.message().trim()),
            );
            Err(Diagnostics {
                path: path.to_path_buf(),
                text,
                findings: vec![finding],
            })
        }
    }
}

/// The [`Table`] of a deserialized document.
fn table(path: &Path, text: String, document: model::Document) -> Table {
    Table {
        path: path.to_path_buf(),
        text,
        names: model::NameIndex::build(
            &document.platform,
            &document.partitions,
            &document.channels,
        ),
        platform: document.platform,
        hypervisor: document.hypervisor,
        partitions: document.partitions,
        channels: document.channels,
        run: document.run,
    }
}

/// The start of the message of a deserialization error the schema pass did not foresee
/// (the fuzz target treats one as a bug).
pub const SCHEMA_GAP: &str = "the table does not have the expected shape: ";

/// Why a generated blob could not be written.
#[derive(Debug)]
pub struct WriteError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "error: cannot write {}: {}",
            self.path.display(),
            self.error
        )
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Writes `contents` to `path` unless the file already holds exactly that (so that Cargo
/// does not rebuild for an unchanged output).
fn write_if_changed(path: &Path, contents: &[u8]) -> Result<(), WriteError> {
    if std::fs::read(path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    std::fs::write(path, contents).map_err(|error| WriteError {
        path: path.to_path_buf(),
        error,
    })
}

/// Writes every build-generated blob of `lowered` to `out_dir/<file_name>`, where the code
/// of [`generate_rust`] includes it from (`concat!(env!("OUT_DIR"), …)`). Returns the paths
/// written.
pub fn write_generated(lowered: &Lowered, out_dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    for partition in &lowered.partitions {
        for blob in &partition.boot.blobs {
            if let BlobSource::Generated { file_name, bytes } = &blob.source {
                let path = out_dir.join(file_name);
                write_if_changed(&path, bytes)?;
                written.push(path);
            }
        }
    }
    Ok(written)
}

/// The integration tests' helpers (image builders, scratch tables), loaded once for the unit
/// tests of every module.
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use super::*;

    /// Loads, lowers and generates the table at `path`, reading through a reader that counts
    /// the reads of each file (by canonical path).
    fn reads_to_build(path: &Path) -> HashMap<PathBuf, usize> {
        let mut reads = HashMap::new();
        let validated = load_reading(path, &mut |file: &Path| {
            *reads.entry(std::fs::canonicalize(file)?).or_default() += 1;
            std::fs::read(file)
        })
        .unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
        let lowered =
            lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
        generate_rust(&lowered);
        reads
    }

    #[test]
    fn each_file_is_read_once_however_many_partitions_name_it() {
        // The table, and one guest image that all three partitions boot.
        let demo = common::demo_with_fake_guest("read-once-demo");
        let reads = reads_to_build(&demo);
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert!(reads.values().all(|&count| count == 1), "{reads:?}");

        // The table, the kernel, the initrd and the ELF guest beside them.
        let (linux, _, _) = common::linux_table::write_linux_table("read-once-linux");
        let reads = reads_to_build(&linux);
        assert_eq!(reads.len(), 4, "{reads:?}");
        assert!(reads.values().all(|&count| count == 1), "{reads:?}");
    }
}
