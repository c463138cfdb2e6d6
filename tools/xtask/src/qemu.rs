//! The QEMU command line for a table, and making sure a recent enough QEMU is installed.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::install::{self, Installation};
use crate::run::{BootMedium, Launch};
use crate::serial::{FollowedFile, SerialCapture};
use crate::table::TableInfo;

pub const BINARY: &str = "qemu-system-x86_64";
/// The CPU: AMD with SVM, nested paging and x2APIC (`--cpu` replaces it).
pub const DEFAULT_CPU: &str = "qemu64,+svm,+npt,+x2apic,+sha-ni";
/// x2APIC under TCG arrived in QEMU 8.1.
pub const MINIMUM_VERSION: (u32, u32) = (8, 1);
/// How QEMU gets installed, as ci/install-deps.sh does it (Debian 12).
pub const INSTALL_COMMAND: &str =
    "echo 'deb http://deb.debian.org/debian bookworm-backports main' \
> /etc/apt/sources.list.d/backports.list && apt-get update && \
apt-get install -y -t bookworm-backports qemu-system-x86";
/// The UEFI firmware for `--boot uefi` (package ovmf): its code, read-only, and the template
/// of its variable store. The 4 MiB build: Debian 12 ships it beside the 2 MiB one, later
/// releases only it.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// How OVMF gets installed, as ci/install-deps.sh does it.
pub const OVMF_INSTALL_COMMAND: &str = "apt-get install -y ovmf";

/// How QEMU is started for one run: its output goes to `qemu.txt` in `directory`, which is
/// also streamed as its messages.
pub fn launch(
    table: &TableInfo,
    medium: &BootMedium,
    cpu: Option<&str>,
    captures: &[SerialCapture],
    deterministic: bool,
    directory: &Path,
) -> Launch {
    let mut arguments = arguments(table, medium, cpu, captures, deterministic);
    arguments.extend(crate::disk::qemu_arguments(table, directory));
    let output = directory.join("qemu.txt");
    let mut command = Command::new(BINARY);
    command.args(&arguments);
    Launch {
        command,
        shown: format!("{BINARY} {}", arguments.join(" ")),
        messages: vec![FollowedFile::new("qemu", output.clone())],
        output,
    }
}

/// The arguments (after the program name) that boot `medium` with the table's cores, the
/// CPU (default [`DEFAULT_CPU`]) and the given UART captures; UARTs below the highest
/// captured one that nobody owns go to `null`.
pub fn arguments(
    table: &TableInfo,
    medium: &BootMedium,
    cpu: Option<&str>,
    captures: &[SerialCapture],
    deterministic: bool,
) -> Vec<String> {
    let boot: Vec<String> = match medium {
        BootMedium::Kernel(image) => vec!["-kernel".into(), image.display().to_string()],
        BootMedium::Cdrom(iso) => vec![
            "-cdrom".into(),
            iso.display().to_string(),
            "-boot".into(),
            "d".into(),
        ],
        // OVMF from two flash chips: the code read-only, the variable store writable but
        // `snapshot=on`, so every run starts from the template and writes go to a temporary
        // copy QEMU discards at exit. OVMF finds the CD-ROM by itself.
        BootMedium::UefiCdrom(iso) => vec![
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,snapshot=on,file={OVMF_VARS}"),
            "-cdrom".into(),
            iso.display().to_string(),
        ],
    };
    // Under -icount QEMU (10.0) reads the instruction count for the local APIC timer's
    // x2APIC MSRs without the translator having allowed I/O there ("Bad icount read", exit
    // 1) unless the access is the last instruction of its translation block: one
    // instruction per block makes every access that. The counts, and so the TSC values a
    // guest reads, are the same; the run is about 2x slower.
    let accel = if deterministic {
        "tcg,one-insn-per-tb=on"
    } else {
        "tcg"
    };
    let mut arguments: Vec<String> = [
        "-machine",
        "q35",
        "-accel",
        accel,
        "-cpu",
        cpu.unwrap_or(DEFAULT_CPU),
        "-smp",
        &table.cpu_count.to_string(),
        "-m",
        "512",
    ]
    .iter()
    .map(|argument| argument.to_string())
    .collect();
    arguments.extend(boot);
    for device in &table.qemu_devices {
        arguments.extend(["-device".to_string(), device.clone()]);
    }
    arguments.extend(
        ["-display", "none", "-no-reboot", "-monitor", "none"]
            .iter()
            .map(|argument| argument.to_string()),
    );
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

/// Checks for QEMU ≥ 8.1; as root, runs ci/install-deps.sh when it is missing.
pub fn ensure_installed(root: &Path) -> Result<Installation> {
    install::ensure(root, problem, INSTALL_COMMAND)
}

/// What is missing of the UEFI firmware, if anything.
fn firmware_problem() -> Option<String> {
    [OVMF_CODE, OVMF_VARS]
        .into_iter()
        .find(|file| !Path::new(file).is_file())
        .map(|file| format!("the UEFI firmware {file} (package ovmf) is not installed"))
}

/// Checks for OVMF; as root, runs ci/install-deps.sh when it is missing.
pub fn ensure_firmware(root: &Path) -> Result<Installation> {
    install::ensure(root, firmware_problem, OVMF_INSTALL_COMMAND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::serial_captures;
    use crate::table::PartitionInfo;
    use std::path::PathBuf;

    fn table(partitions: &[(&str, &[u64])], console_port: Option<u64>) -> TableInfo {
        TableInfo {
            path: PathBuf::from("/w/partitions/t.toml"),
            stem: "t".into(),
            cpu_count: 4,
            ram_end: 0x2000_0000,
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
            qemu_devices: vec![],
            bochs_pci_slots: vec![],
            qemu_disks: vec![],
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
        let kernel = BootMedium::Kernel("/img/t.elf".into());
        let arguments = arguments(&table, &kernel, None, &captures, false);
        assert_eq!(
            arguments.join(" "),
            "-machine q35 -accel tcg -cpu qemu64,+svm,+npt,+x2apic,+sha-ni -smp 4 -m 512 \
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
        let kernel = BootMedium::Kernel("/i.elf".into());
        let arguments = arguments(&table, &kernel, None, &captures, true);
        assert_eq!(arguments[2..4], ["-accel", "tcg,one-insn-per-tb=on"]);
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
        let kernel = BootMedium::Kernel("/i.elf".into());
        let arguments = arguments(&table, &kernel, None, &captures, false);
        assert!(!arguments.iter().any(|argument| argument == "-serial"));
    }

    #[test]
    fn boots_an_iso_from_the_cdrom_with_another_cpu() {
        let table = table(&[("solo", &[0x3f8])], None);
        let captures = serial_captures(&table, Path::new("/run"));
        let iso = BootMedium::Cdrom(PathBuf::from("/img/t.iso"));
        let arguments = arguments(&table, &iso, Some("EPYC,+x2apic"), &captures, false);
        assert_eq!(
            arguments.join(" "),
            "-machine q35 -accel tcg -cpu EPYC,+x2apic -smp 4 -m 512 \
             -cdrom /img/t.iso -boot d -display none -no-reboot -monitor none \
             -serial file:/run/com1.txt"
        );
    }

    #[test]
    fn boots_an_iso_under_uefi_firmware() {
        let table = table(&[("solo", &[0x3f8])], None);
        let captures = serial_captures(&table, Path::new("/run"));
        let iso = BootMedium::UefiCdrom(PathBuf::from("/img/t-multiboot2.iso"));
        let arguments = arguments(&table, &iso, None, &captures, false);
        assert_eq!(
            arguments.join(" "),
            "-machine q35 -accel tcg -cpu qemu64,+svm,+npt,+x2apic,+sha-ni -smp 4 -m 512 \
             -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,snapshot=on,file=/usr/share/OVMF/OVMF_VARS_4M.fd \
             -cdrom /img/t-multiboot2.iso -display none -no-reboot -monitor none \
             -serial file:/run/com1.txt"
        );
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
