//! The QEMU command line for a table, and making sure a recent enough QEMU is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::table::TableInfo;
use crate::transcript::HYPERVISOR;

pub const BINARY: &str = "qemu-system-x86_64";
/// x2APIC under TCG arrived in QEMU 8.1.
pub const MINIMUM_VERSION: (u32, u32) = (8, 1);
/// The ISA UARTs in the order of QEMU's `-serial` options: the first option is the UART at
/// 0x3f8 (COM1), the second 0x2f8 (COM2), then 0x3e8 (COM3) and 0x2e8 (COM4).
pub const ISA_UART_PORTS: [u64; 4] = [0x3f8, 0x2f8, 0x3e8, 0x2e8];
/// How QEMU gets installed, as ci/install-deps.sh does it (Debian 12).
pub const INSTALL_COMMAND: &str =
    "echo 'deb http://deb.debian.org/debian bookworm-backports main' \
> /etc/apt/sources.list.d/backports.list && apt-get update && \
apt-get install -y -t bookworm-backports qemu-system-x86";

/// One ISA UART whose output is captured: `label` is whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialCapture {
    /// Position in [`ISA_UART_PORTS`].
    pub index: usize,
    pub label: String,
    pub file: PathBuf,
}

/// The UARTs the table gives to the hypervisor console or to a partition, by index, with the
/// file each one is written to (`comN.txt`, N = index + 1, in `directory`).
pub fn serial_captures(table: &TableInfo, directory: &Path) -> Vec<SerialCapture> {
    let owner = |port: u64| -> Option<String> {
        if table.console_port == Some(port) {
            return Some(HYPERVISOR.to_string());
        }
        table
            .partitions
            .iter()
            .find(|partition| partition.device_ports.contains(&port))
            .map(|partition| partition.name.clone())
    };
    ISA_UART_PORTS
        .iter()
        .enumerate()
        .filter_map(|(index, &port)| {
            owner(port).map(|label| SerialCapture {
                index,
                label,
                file: directory.join(format!("com{}.txt", index + 1)),
            })
        })
        .collect()
}

/// The arguments (after the program name) that boot `image` with the table's cores and the
/// given UART captures; UARTs below the highest captured one that nobody owns go to `null`.
pub fn arguments(
    table: &TableInfo,
    image: &Path,
    captures: &[SerialCapture],
    deterministic: bool,
) -> Vec<String> {
    let mut arguments: Vec<String> = [
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "qemu64,+svm,+npt,+x2apic",
        "-smp",
        &table.cpu_count.to_string(),
        "-m",
        "512",
        "-kernel",
        &image.display().to_string(),
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
    ]
    .iter()
    .map(|argument| argument.to_string())
    .collect();
    let highest = captures.iter().map(|capture| capture.index).max();
    for index in highest.map_or(0..0, |highest| 0..highest + 1) {
        arguments.push("-serial".into());
        match captures.iter().find(|capture| capture.index == index) {
            Some(capture) => arguments.push(format!("file:{}", capture.file.display())),
            None => arguments.push("null".into()),
        }
    }
    if deterministic {
        arguments.extend(["-icount".into(), "shift=0,align=off,sleep=off".into()]);
    }
    arguments
}

/// `(major, minor)` from the first line of `qemu-system-x86_64 --version`.
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("version ")? + "version ".len()..];
    let mut numbers = rest.split(|character: char| !character.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

/// What is wrong with the installed QEMU, if anything.
fn problem() -> Option<String> {
    let output = match Command::new(BINARY).arg("--version").output() {
        Ok(output) if output.status.success() => output,
        _ => return Some(format!("{BINARY} is not installed")),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    match parse_version(&text) {
        Some(version) if version >= MINIMUM_VERSION => None,
        Some((major, minor)) => Some(format!(
            "{BINARY} {major}.{minor} is too old: x2APIC under TCG needs {}.{} or later",
            MINIMUM_VERSION.0, MINIMUM_VERSION.1
        )),
        None => Some(format!("cannot read the version of {BINARY} from {text:?}")),
    }
}

/// Whether the runner could install packages itself.
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The outcome of [`ensure_installed`] that is not an error of the runner itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Installation {
    Ready,
    /// QEMU is missing or old and the runner may not install it; the user was told how.
    UserMustInstall,
}

/// Checks for QEMU ≥ 8.1; as root, runs ci/install-deps.sh when it is missing.
pub fn ensure_installed(root: &Path) -> Result<Installation> {
    let Some(problem) = problem() else {
        return Ok(Installation::Ready);
    };
    let script = root.join("ci/install-deps.sh");
    if !running_as_root() {
        eprintln!("error: {problem}");
        eprintln!("install it as root with:  bash {}", script.display());
        eprintln!("(which does: {INSTALL_COMMAND})");
        return Ok(Installation::UserMustInstall);
    }
    eprintln!("{problem}: running {}", script.display());
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    match self::problem() {
        None => Ok(Installation::Ready),
        Some(problem) => bail!("{problem}, even after {}", script.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::PartitionInfo;

    fn table(partitions: &[(&str, &[u64])], console_port: Option<u64>) -> TableInfo {
        TableInfo {
            path: PathBuf::from("/w/partitions/t.toml"),
            stem: "t".into(),
            cpu_count: 4,
            partitions: partitions
                .iter()
                .map(|(name, ports)| PartitionInfo {
                    name: name.to_string(),
                    device_ports: ports.to_vec(),
                })
                .collect(),
            console_port,
            expect_faults: vec![],
            run_seconds: None,
        }
    }

    #[test]
    fn demo_layout_captures_all_four_uarts() {
        let table = table(
            &[
                ("control", &[0x3f8]),
                ("worker", &[0x2f8]),
                ("intruder", &[0x2e8]),
            ],
            Some(0x3e8),
        );
        let captures = serial_captures(&table, Path::new("/run"));
        let labels: Vec<_> = captures
            .iter()
            .map(|capture| capture.label.as_str())
            .collect();
        assert_eq!(labels, ["control", "worker", "hv", "intruder"]);
        let arguments = arguments(&table, Path::new("/img/t.elf"), &captures, false);
        assert_eq!(
            arguments.join(" "),
            "-machine q35 -accel tcg -cpu qemu64,+svm,+npt,+x2apic -smp 4 -m 512 \
             -kernel /img/t.elf -display none -no-reboot -monitor none \
             -serial file:/run/com1.txt -serial file:/run/com2.txt \
             -serial file:/run/com3.txt -serial file:/run/com4.txt"
        );
    }

    #[test]
    fn unused_uarts_below_the_highest_are_null_and_above_are_left_out() {
        // The console on COM2, one partition on COM3 (plus a non-UART device), COM1 unused.
        let table = table(&[("solo", &[0x1000, 0x3e8])], Some(0x2f8));
        let captures = serial_captures(&table, Path::new("/run"));
        let arguments = arguments(&table, Path::new("/i.elf"), &captures, true);
        let tail = arguments[arguments.iter().position(|a| a == "-serial").unwrap()..].join(" ");
        assert_eq!(
            tail,
            "-serial null -serial file:/run/com2.txt -serial file:/run/com3.txt \
             -icount shift=0,align=off,sleep=off"
        );
        assert_eq!(captures[0].label, "hv");
        assert_eq!(captures[1].label, "solo");
    }

    #[test]
    fn no_uart_means_no_serial_option() {
        let table = table(&[("quiet", &[])], None);
        let captures = serial_captures(&table, Path::new("/run"));
        assert!(captures.is_empty());
        let arguments = arguments(&table, Path::new("/i.elf"), &captures, false);
        assert!(!arguments.iter().any(|argument| argument == "-serial"));
    }

    #[test]
    fn reads_versions() {
        let text = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n";
        assert_eq!(parse_version(text), Some((10, 0)));
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15 (Debian)"),
            Some((7, 2))
        );
        assert!(parse_version("QEMU emulator version 7.2.15").unwrap() < MINIMUM_VERSION);
        assert!((8, 1) >= MINIMUM_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
