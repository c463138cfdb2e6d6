//! Making sure an emulator and its tools are installed: as root by running
//! ci/install-deps.sh, otherwise by telling the user the command.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The outcome of [`ensure`] that is not an error of the runner itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Installation {
    Ready,
    /// Something is missing and the runner may not install it; the user was told how.
    UserMustInstall,
}

/// Whether the runner could install packages itself.
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is an executable file in one of the `PATH` directories.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| {
            std::fs::metadata(directory.join(program)).is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
    })
}

/// Checks with `problem` (what is wrong, if anything); when something is missing runs
/// ci/install-deps.sh as root, or else prints `install_command` and returns
/// [`Installation::UserMustInstall`].
pub fn ensure(
    root: &Path,
    problem: fn() -> Option<String>,
    install_command: &str,
) -> Result<Installation> {
    let Some(found) = problem() else {
        return Ok(Installation::Ready);
    };
    let script = root.join("ci/install-deps.sh");
    if !running_as_root() {
        eprintln!("error: {found}");
        eprintln!("install it as root with:  bash {}", script.display());
        eprintln!("(which does: {install_command})");
        return Ok(Installation::UserMustInstall);
    }
    eprintln!("{found}: running {}", script.display());
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    match problem() {
        None => Ok(Installation::Ready),
        Some(found) => bail!("{found}, even after {}", script.display()),
    }
}
