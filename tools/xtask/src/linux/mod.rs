//! Linux guests (issue 6): the recipe that fetches Debian's kernel and builds the test
//! initramfs ([`images`], `cargo xtask linux-images`), the checks of the linux-rt system
//! test ([`checks`]), the same test on Bochs in the long lane ([`long_lane`], `cargo xtask
//! test --long`) and the `linux_boot_slowdown` bench ([`bench`]).

pub mod bench;
pub mod checks;
mod cpio;
pub mod images;
pub mod long_lane;
pub mod nvme_bench;

use std::path::Path;

use anyhow::Result;

use crate::table::TableInfo;

/// The table of the Linux system test and of `cargo xtask run --table
/// partitions/linux-rt.toml`.
pub const LINUX_RT_TABLE: &str = "partitions/linux-rt.toml";

/// Whether a partition of the table at `path` boots Linux (`kind = "linux"`); false when the
/// table cannot be read (building reports why).
pub fn boots_linux(path: &Path) -> bool {
    tessera_config::load_without_files(path).is_ok_and(|table| {
        table
            .partitions
            .iter()
            .any(|partition| *partition.boot.kind == tessera_config::model::BootKind::Linux)
    })
}

/// Builds the Linux files first when the table boots files from `target/linux`.
pub fn ensure_for_table(root: &Path, table: &TableInfo) -> Result<()> {
    if images::table_needs_images(root, &table.path) {
        images::ensure(root)?;
    }
    Ok(())
}

/// The system test `linux-rt-qemu`: boots partitions/linux-rt.toml in QEMU (fetching and
/// building the Linux files first) and checks the run with [`checks::check_linux_rt`]. The
/// run ends when the real-time partition powers the machine off after its timer loop.
pub fn system_test(root: &Path) -> Result<(), Vec<String>> {
    use crate::run::{self, BootMethod, Emulator, RunSettings};
    let failed = |error: anyhow::Error| vec![format!("{error:#}")];
    let path = root.join(LINUX_RT_TABLE);
    let table = crate::table::load(&path).map_err(failed)?;
    let expected = checks::Expectations::from_table(&path).map_err(failed)?;
    let emulator = Emulator::Qemu {
        boot: BootMethod::Kernel,
        cpu: None,
    };
    let medium = run::prepare(root, &table, &emulator).map_err(failed)?;
    let settings = RunSettings {
        seconds: table.run_seconds.unwrap_or(SYSTEM_TEST_SECONDS),
        seconds_explicit: false,
        deterministic: false,
    };
    let transcript = run::boot(
        &crate::image::target_directory(root),
        &table,
        &emulator,
        &medium,
        settings,
    )
    .map_err(failed)?;
    if transcript.emulator_exit == crate::transcript::EmulatorExit::Interrupted {
        return Err(vec!["interrupted".into()]);
    }
    checks::check_linux_rt(&transcript, &expected)
}

/// The system test's time bound when the table names none.
const SYSTEM_TEST_SECONDS: u64 = 300;
