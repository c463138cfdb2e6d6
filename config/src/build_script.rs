//! The hypervisor's build script, whole: `hypervisor/build.rs` only calls
//! [`build_script_main`], so the build and the tests of [`build_script`] run one path.
//!
//! The table comes from `TESSERA_TABLE` (a path), or partitions/demo.toml by default so that
//! a plain `cargo build` works. An invalid table stops the build with the validator's
//! diagnostics — the same ones `cargo xtask check` prints. The outputs go to `OUT_DIR`: the
//! generated blobs, `machine.rs` (which the hypervisor `include!`s) and the linker script,
//! made from loader/linker.ld.in at the table's hypervisor memory.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use tessera_abi::table::Range;

use crate::{generate_rust, load, lower, write_generated, write_if_changed, Diagnostics};
use crate::{Lowered, WriteError};

/// The environment variable naming the table to build.
pub const TABLE_VARIABLE: &str = "TESSERA_TABLE";
/// The table built without [`TABLE_VARIABLE`], relative to the hypervisor's manifest
/// directory.
pub const DEFAULT_TABLE: &str = "../partitions/demo.toml";
/// The linker-script template, relative to the hypervisor's manifest directory.
pub const LINKER_TEMPLATE: &str = "../loader/linker.ld.in";
/// The linker script's file name in `OUT_DIR`.
pub const LINKER_SCRIPT: &str = "tessera.ld";

/// Runs the build script in Cargo's environment: prints the instructions for Cargo and, on
/// failure, the error (the table's diagnostics, rendered as the CLI does), exiting with
/// status 1.
pub fn build_script_main() {
    let result = build_script(|name| std::env::var_os(name), &mut |instruction| {
        println!("{instruction}");
    });
    if let Err(error) = result {
        // Cargo shows a failing build script's stderr.
        eprintln!("{error}");
        std::process::exit(1);
    }
}

/// The build script with the environment as a function (`std::env::var_os` in a build):
/// writes the generated blobs, `machine.rs` and the linker script to `OUT_DIR` and hands
/// each `cargo:` instruction to `cargo` as soon as it is known, so that a failing build
/// still watches the table.
pub fn build_script(
    environment: impl Fn(&str) -> Option<OsString>,
    cargo: &mut dyn FnMut(String),
) -> Result<(), BuildScriptError> {
    let variable = |name: &'static str| {
        environment(name)
            .map(PathBuf::from)
            .ok_or(BuildScriptError::Environment(name))
    };
    let manifest_dir = variable("CARGO_MANIFEST_DIR")?;
    let out_dir = variable("OUT_DIR")?;
    cargo(format!("cargo:rerun-if-env-changed={TABLE_VARIABLE}"));
    let table =
        environment(TABLE_VARIABLE).map_or_else(|| manifest_dir.join(DEFAULT_TABLE), PathBuf::from);
    cargo(rerun_if_changed(&table));

    let lowered = generate(&table, &out_dir)?;
    for path in &lowered.files {
        cargo(rerun_if_changed(path));
    }

    // The linker script: the image lives at the start of the table's hypervisor memory.
    let template_path = manifest_dir.join(LINKER_TEMPLATE);
    cargo(rerun_if_changed(&template_path));
    let template =
        std::fs::read_to_string(&template_path).map_err(|error| BuildScriptError::Template {
            path: template_path.clone(),
            error,
        })?;
    let script_path = out_dir.join(LINKER_SCRIPT);
    write_if_changed(
        &script_path,
        linker_script(&template, lowered.hypervisor_memory).as_bytes(),
    )
    .map_err(BuildScriptError::Write)?;
    cargo(format!(
        "cargo:rustc-link-arg-bins=-T{}",
        script_path.display()
    ));
    cargo("cargo:rustc-link-arg-bins=-zmax-page-size=4096".to_owned());
    cargo("cargo:rustc-link-arg-bins=--gc-sections".to_owned());
    Ok(())
}

/// Loads, validates and lowers the table, then writes the generated blobs (first:
/// `machine.rs` `include_bytes!`s them) and `machine.rs` to `out_dir`.
fn generate(table: &Path, out_dir: &Path) -> Result<Lowered, BuildScriptError> {
    let invalid = |diagnostics| BuildScriptError::InvalidTable {
        table: table.to_path_buf(),
        diagnostics: Box::new(diagnostics),
    };
    let validated = load(table).map_err(invalid)?;
    for warning in crate::warnings(validated.table()) {
        println!("cargo:warning={warning}");
    }
    let lowered = lower(&validated).map_err(invalid)?;
    write_generated(&lowered, out_dir).map_err(BuildScriptError::Write)?;
    let source = generate_rust(&lowered);
    write_if_changed(&out_dir.join("machine.rs"), source.as_bytes())
        .map_err(BuildScriptError::Write)?;
    Ok(lowered)
}

/// The linker script: `template` with `@BASE@` and `@LIMIT@` set to the hypervisor's memory.
pub fn linker_script(template: &str, memory: Range) -> String {
    template
        .replace("@BASE@", &format!("{:#x}", memory.base))
        .replace("@LIMIT@", &format!("{:#x}", memory.end()))
}

fn rerun_if_changed(path: &Path) -> String {
    format!("cargo:rerun-if-changed={}", path.display())
}

/// Why the build script failed.
#[derive(Debug)]
pub enum BuildScriptError {
    /// Cargo did not set this environment variable (not run as a build script).
    Environment(&'static str),
    /// The table is invalid or a boot file unusable.
    InvalidTable {
        table: PathBuf,
        diagnostics: Box<Diagnostics>,
    },
    /// The linker-script template could not be read.
    Template {
        path: PathBuf,
        error: std::io::Error,
    },
    /// An output could not be written.
    Write(WriteError),
}

impl fmt::Display for BuildScriptError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment(name) => write!(
                formatter,
                "error: {name} is not set (run by Cargo as the hypervisor's build script)"
            ),
            Self::InvalidTable { table, diagnostics } => write!(
                formatter,
                "{}\nerror: the partition table {} is invalid",
                diagnostics.render(),
                table.display()
            ),
            Self::Template { path, error } => write!(
                formatter,
                "error: cannot read the linker-script template {}: {error}",
                path.display()
            ),
            Self::Write(error) => write!(formatter, "{error}"),
        }
    }
}

impl std::error::Error for BuildScriptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Template { error, .. } => Some(error),
            Self::Write(error) => Some(error),
            Self::Environment(_) | Self::InvalidTable { .. } => None,
        }
    }
}
