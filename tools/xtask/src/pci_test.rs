//! The PCI passthrough system tests (docs/pci-iommu.md): two partitions, each owning a
//! different function, each enumerating its virtual bus and driving its function; and the
//! boot hypervisor_lines where the hardware disagrees with the table.
//!
//! * `pci-qemu` (partitions/pci.toml, q35 with two `edu` devices): each partition sees
//!   exactly the virtual host bridge and its own function at the table's virtual address,
//!   through 0xCF8/0xCFC and through ECAM; each drives its `edu` through its identity-mapped
//!   BAR0 (identification, liveness, factorial); `alpha`'s BIST and ROM writes are dropped
//!   and counted (`dropped-config-writes=2` at power-off, 0 for `beta`); `alpha` writes
//!   `beta`'s BAR address into its BAR0 and its device still answers at the old one; its MSI
//!   toward `beta`'s core is refused (logged, `refused-msi=1`) and toward its own core
//!   delivers exactly one interrupt; `beta` turns on memory decoding and bus mastering
//!   and resets itself, and after its restart finds them off again.
//! * `pci-bochs` (partitions/pci-bochs.toml, i440FX with two e1000 cards): the same through
//!   0xCF8/0xCFC (Bochs has no ECAM and no `edu`); each reads its card's STATUS register
//!   through BAR0; `beta`'s restart finds decode and bus mastering off again.
//! * `linux-pci-qemu` (partitions/linux-pci.toml): Debian's kernel with no PCI option finds
//!   its bus from its ACPI tables (the MCFG window reserved by a PNP0C02 device, the root
//!   bridge `PCI0` and its `_CRS` windows) and, with `pci-config = "ecam-only"` (no mechanism
//!   #1), enumerates exactly the host bridge and its own `edu` at 00:03.0 through the virtual
//!   ECAM window, with the BAR where the firmware put it, beside `rt` and its `edu` (QEMU
//!   only: Linux on Bochs takes the long lane's 12 minutes, and Bochs has no ECAM).
//! * `linux-e1000e-qemu` (partitions/linux-e1000e.toml): Debian's kernel drives QEMU's
//!   e1000e with the in-tree driver and MSI-X (the table trapped, its messages checked), gets
//!   a DHCP lease from QEMU's user network, pings the gateway, and its /proc/interrupts shows
//!   the NIC's MSI-X vectors counting; DMA confined by the AMD IOMMU (QEMU only: Bochs has
//!   no e1000e with MSI-X and no IOMMU). `linux-e1000e-vtd-qemu`: the same with QEMU's VT-d
//!   model (`intel-iommu`) in place of the AMD one.
//! * `linux-nvme-qemu` (partitions/linux-nvme.toml): Debian's kernel drives a QEMU NVMe
//!   controller with the in-tree `nvme` and MSI-X; its namespace is the runner's image of
//!   a known pattern (`[run] qemu-disks`). The SHA-256 Linux prints of the disk must be the
//!   pattern's, the marker sector it writes must be in the image file after QEMU exited
//!   (and nothing else changed), its NVMe vectors must be MSI-X and count interrupts, no
//!   DMA or interrupt is blocked, and the machine powers off cleanly. DMA confined by the
//!   AMD IOMMU; `linux-nvme-vtd-qemu`: the same with QEMU's VT-d model (QEMU only: Bochs
//!   has no NVMe model and no IOMMU).
//! * `pci-refusal-absent-qemu`, `pci-refusal-bar-qemu`, `pci-refusal-ecam-qemu`: a table
//!   function with nothing at its address, a BAR outside the table's window, and an ECAM
//!   window the firmware's MCFG disagrees with, refused before any partition starts.
//! * `pci-bridge-qemu` (partitions/pci-bridge.toml): an `edu` behind a PCIe root port
//!   (bus 2) and one behind a conventional PCI-to-PCI bridge (bus 1), each passed through
//!   and driven; the hypervisor logs each function's bridge as the table declares it and
//!   resets each with its bridge's Secondary Bus Reset (neither has FLR or a PM
//!   capability), at boot and at `beta`'s restart, and the reset must have changed at
//!   least one of the function's header registers (which it restores).
//! * `pci-refusal-bridge-kind-qemu`, `pci-refusal-bridge-undeclared-qemu`,
//!   `pci-refusal-bridge-buses-qemu`: the same machine with a table that declares the
//!   conventional bridge a PCIe port, the root port at another address, or the root port
//!   with other buses, refused before any partition starts.

use std::collections::BTreeSet;

use crate::markers::Marker;
use crate::run::{BootMethod, Emulator};
use crate::system_test::{build_and_boot, check_refusal};
use crate::transcript::{Transcript, HYPERVISOR};
use crate::{bochs, Outcome, SystemTest, SystemTests};

pub const QEMU_TABLE: &str = "partitions/pci.toml";
pub const LINUX_TABLE: &str = "partitions/linux-pci.toml";
pub const E1000E_TABLE: &str = "partitions/linux-e1000e.toml";
pub const NVME_TABLE: &str = "partitions/linux-nvme.toml";
/// The NVMe table's disk image (its `[run] qemu-disks` file) and what its Linux command
/// line asks for: the SHA-256 of the first [`NVME_MIB`] MiB, then a marker sector.
const NVME_IMAGE: &str = "nvme.img";
const NVME_MIB: usize = 8;
const NVME_MARKER_SECTOR: usize = 12288;
/// Linux reaches its init in 15–60 s under TCG; `rt` powers off after its 100 s timer loop.
const LINUX_SECONDS: u64 = 300;
/// What Debian's kernel must report of its bus, exactly (after the `pci 0000:` prefix).
const LINUX_FUNCTIONS: [&str; 2] = [
    "00:00.0: [1b36:0008] type 00 class 0x060000",
    "00:03.0: [1234:11e8] type 00 class 0x00ff00",
];
/// Its BAR as Linux keeps it (no reassignment).
const LINUX_BAR: &str = "pci 0000:00:03.0: BAR 0 [mem 0xfe900000-0xfe9fffff]";
/// Kernel lines (after the timestamp) showing that Linux took its bus from the partition's
/// ACPI tables: the MCFG window, accepted because the PNP0C02 device reserves it, the root
/// bridge from the DSDT and the BAR window from its `_CRS`.
const LINUX_ACPI_LINES: [&str; 4] = [
    "PCI: MMCONFIG for domain 0000 [bus 00-00] at [mem 0xb0000000-0xb00fffff] (base 0xb0000000)",
    "PCI: MMCONFIG at [mem 0xb0000000-0xb00fffff] reserved in ACPI motherboard resources",
    "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00])",
    "pci_bus 0000:00: root bus resource [mem 0xfe900000-0xfe9fffff window]",
];
/// What Linux prints when it found mechanism #1: it must not, the partition has ECAM only.
const LINUX_CONF1: &str = "PCI: Using configuration type 1";
/// The fewest ECAM exits (`npf`) of an enumeration through the window: one load of the
/// vendor ID for each of the bus's 32 device numbers, at least.
const LINUX_MIN_ECAM_EXITS: u64 = 32;
pub const BOCHS_TABLE: &str = "partitions/pci-bochs.toml";
pub const BRIDGE_TABLE: &str = "partitions/pci-bridge.toml";
const QEMU_SECONDS: u64 = 60;
const BOCHS_SECONDS: u64 = 300;

/// The virtual host bridge as the scan prints it.
const HOST_BRIDGE: &str = "00:00.0 id=1b36:0008 class=060000 header=00";

/// What one partition must see and do.
struct Expected {
    partition: &'static str,
    /// The functions its scans must find, exactly (host bridge included).
    functions: [&'static str; 2],
    /// The scans it makes (`conf1`, `ecam`).
    scans: &'static [&'static str],
    /// Lines it must print (prefixes).
    lines: &'static [&'static str],
    /// Its function's counter line at power-off.
    counter: &'static str,
    /// Hypervisor lines its actions must cause.
    hypervisor_lines: &'static [&'static str],
}

const QEMU_EXPECTED: [Expected; 2] = [
    Expected {
        partition: "alpha",
        functions: [HOST_BRIDGE, "00:03.0 id=1234:11e8 class=00ff00 header=00"],
        scans: &["conf1", "ecam"],
        lines: &[
            "pci: bist 00:03.0 wrote=0x40 reads=0x00 rom=0x0",
            "pci: edu 00:03.0 bar0=0xfe900000 id=0x010000ed liveness=ok factorial(5)=120",
            // A BAR moved by the guest stays in the shadow; the device is not moved.
            "pci: bar-move 00:03.0 wrote=0xfea00000 reads=0xfea00000 id-at-old=0x010000ed",
            "pci: msi 00:03.0 vector=0x50 foreign=1: delivered-while-foreign=0 delivered-own=1",
        ],
        counter: "pci: partition=alpha device=edu-a function=00:04.0 dropped-config-writes=2 refused-msi=1",
        hypervisor_lines: &["refused: partition=alpha core=0 device=edu-a MSI message ForeignCore { apic_id: 1 }"],
    },
    Expected {
        partition: "beta",
        functions: [HOST_BRIDGE, "00:06.0 id=1234:11e8 class=00ff00 header=00"],
        scans: &["conf1", "ecam"],
        lines: &[
            "pci: edu 00:06.0 bar0=0xfea00000 id=0x010000ed liveness=ok factorial(5)=120",
            // Memory decoding and bus mastering off at boot, turned on by the guest, off
            // again after its restart.
            "pci: command 00:06.0 restarts=0 at-start=0x0500",
            "pci: command 00:06.0 enabled=0x0506",
            "pci: command 00:06.0 restarts=1 at-start=0x0500",
        ],
        counter: "pci: partition=beta device=edu-b function=00:05.0 dropped-config-writes=0 refused-msi=0",
        hypervisor_lines: &["restarted: partition=beta restarts=1 core=1"],
    },
];

const BRIDGE_EXPECTED: [Expected; 2] = [
    Expected {
        partition: "alpha",
        functions: [HOST_BRIDGE, "00:03.0 id=1234:11e8 class=00ff00 header=00"],
        scans: &["conf1", "ecam"],
        lines: &["pci: edu 00:03.0 bar0=0xfe600000 id=0x010000ed liveness=ok factorial(5)=120"],
        counter: "pci: partition=alpha device=edu-port function=02:00.0 dropped-config-writes=0 refused-msi=0",
        hypervisor_lines: &[
            "pci: partition=alpha device=edu-port function=02:00.0 bridge=00:06.0 kind=pcie-port buses=02-02",
            "pci: partition=alpha device=edu-port function=02:00.0 reset=secondary-bus",
        ],
    },
    Expected {
        partition: "beta",
        functions: [HOST_BRIDGE, "00:06.0 id=1234:11e8 class=00ff00 header=00"],
        scans: &["conf1", "ecam"],
        lines: &[
            "pci: edu 00:06.0 bar0=0xfe800000 id=0x010000ed liveness=ok factorial(5)=120",
            "pci: command 00:06.0 restarts=1 at-start=",
        ],
        counter: "pci: partition=beta device=edu-bridge function=01:01.0 dropped-config-writes=0 refused-msi=0",
        hypervisor_lines: &[
            "pci: partition=beta device=edu-bridge function=01:01.0 bridge=00:05.0 kind=pci buses=01-01",
            "pci: partition=beta device=edu-bridge function=01:01.0 reset=secondary-bus",
            "pci: partition=beta device=edu-bridge function=01:01.0 reset at restart: Ok(\"secondary-bus\")",
            "restarted: partition=beta restarts=1 core=1",
        ],
    },
];

/// partitions/pci-flr.toml: QEMU's `igb` offers Function Level Reset.
const FLR_TABLE: &str = "partitions/pci-flr.toml";

/// pci-flr-qemu: the `igb` is reset with FLR before `alpha` starts and again when it
/// restarts (its reset request, after it enabled memory decoding and bus mastering);
/// `alpha` finds it on its virtual bus and, after the restart, sees the command register
/// quiesced again (only Interrupt Disable set).
fn check_flr(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    for wanted in [
        "pci: partition=alpha device=igb function=00:06.0 reset=flr",
        "pci: partition=alpha device=igb function=00:06.0 reset at restart: Ok(\"flr\")",
        "restarted: partition=alpha restarts=1 core=0",
    ] {
        if !hypervisor.contains(&wanted) {
            failures.push(format!("the hypervisor did not print `{wanted}`"));
        }
    }
    let alpha: Vec<&str> = transcript.lines_of("alpha").map(str::trim_end).collect();
    for wanted in [
        "pci: ecam 00:03.0 id=8086:10c9 class=020000 header=00",
        "pci: command 00:03.0 enabled=0x0406",
        "pci: command 00:03.0 restarts=1 at-start=0x0400",
    ] {
        if !alpha.contains(&wanted) {
            failures.push(format!("alpha did not print `{wanted}`"));
        }
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(format!(
            "{}, expected a clean power-off",
            transcript.describe_exit()
        ));
    }
    crate::outcome(failures)
}

/// The bus resets of pci-bridge-qemu: each function's Secondary Bus Reset (two at boot,
/// one at `beta`'s restart) must have changed at least one header register it then
/// restored, or the reset did not reach the function.
fn check_bridge(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = match check(transcript, &BRIDGE_EXPECTED) {
        Ok(()) => Vec::new(),
        Err(failures) => failures,
    };
    let changed: Vec<u32> = transcript
        .lines_of(HYPERVISOR)
        .filter_map(|line| line.split_once(" secondary-bus reset through bridge "))
        .filter_map(|(_, rest)| rest.split_once(": "))
        .filter_map(|(_, rest)| rest.split(' ').next())
        .filter_map(|count| count.parse().ok())
        .collect();
    if changed.len() != 3 || changed.contains(&0) {
        failures.push(format!(
            "header registers each Secondary Bus Reset changed: {changed:?}, expected three resets that each changed at least one"
        ));
    }
    crate::outcome(failures)
}

const BOCHS_EXPECTED: [Expected; 2] = [
    Expected {
        partition: "alpha",
        functions: [HOST_BRIDGE, "00:03.0 id=8086:100e class=020000 header=00"],
        scans: &["conf1"],
        lines: &[
            "pci: bist 00:03.0 wrote=0x40 reads=0x00 rom=0x0",
            "pci: bar-read 00:03.0 bar0=0xc0000000 offset=0x8 value=",
        ],
        counter: "pci: partition=alpha device=nic-a function=00:02.0 dropped-config-writes=2 refused-msi=0",
        hypervisor_lines: &[],
    },
    Expected {
        partition: "beta",
        functions: [HOST_BRIDGE, "00:06.0 id=8086:100e class=020000 header=00"],
        scans: &["conf1"],
        lines: &[
            "pci: bar-read 00:06.0 bar0=0xc0020000 offset=0x8 value=",
            // Bochs' e1000 keeps Interrupt Disable (command bit 10, PCI 2.3) at 0.
            "pci: command 00:06.0 restarts=0 at-start=0x0000",
            "pci: command 00:06.0 enabled=0x0006",
            "pci: command 00:06.0 restarts=1 at-start=0x0000",
        ],
        counter: "pci: partition=beta device=nic-b function=00:03.0 dropped-config-writes=0 refused-msi=0",
        hypervisor_lines: &["restarted: partition=beta restarts=1 core=1"],
    },
];

pub fn tests() -> Vec<SystemTest> {
    vec![
        (
            "pci-qemu".into(),
            Box::new(|systems: &SystemTests| {
                let transcript = build_and_boot(systems, QEMU_TABLE, &qemu(), QEMU_SECONDS)?;
                check(&transcript, &QEMU_EXPECTED)
            }),
        ),
        (
            "pci-bochs".into(),
            Box::new(|systems: &SystemTests| {
                let emulator = Emulator::Bochs {
                    cpu: bochs::DEFAULT_CPU.into(),
                };
                let transcript = build_and_boot(systems, BOCHS_TABLE, &emulator, BOCHS_SECONDS)?;
                check(&transcript, &BOCHS_EXPECTED)
            }),
        ),
        (
            "linux-pci-qemu".into(),
            Box::new(|systems: &SystemTests| {
                let transcript = build_and_boot(systems, LINUX_TABLE, &qemu(), LINUX_SECONDS)?;
                check_linux(&transcript)
            }),
        ),
        (
            "linux-e1000e-qemu".into(),
            Box::new(|systems: &SystemTests| {
                let transcript = build_and_boot(systems, E1000E_TABLE, &qemu(), LINUX_SECONDS)?;
                check_e1000e(&transcript)
            }),
        ),
        (
            "linux-e1000e-vtd-qemu".into(),
            Box::new(|systems: &SystemTests| {
                let failed = |error: anyhow::Error| vec![format!("{error:#}")];
                let mut table =
                    crate::table::load(&systems.root.join(E1000E_TABLE)).map_err(failed)?;
                crate::system_test::use_intel_iommu(&mut table).map_err(failed)?;
                let emulator = qemu();
                crate::system_test::missing_emulator(systems, &emulator)?;
                let medium =
                    crate::run::prepare(&systems.root, &table, &emulator).map_err(failed)?;
                let transcript = crate::system_test::boot_within(
                    systems,
                    &table,
                    &emulator,
                    &medium,
                    LINUX_SECONDS,
                )?;
                check_e1000e(&transcript)
            }),
        ),
        (
            "linux-nvme-qemu".into(),
            Box::new(|systems: &SystemTests| nvme(systems, false)),
        ),
        (
            "linux-nvme-vtd-qemu".into(),
            Box::new(|systems: &SystemTests| nvme(systems, true)),
        ),
        (
            "pci-refusal-absent-qemu".into(),
            Box::new(|systems: &SystemTests| {
                refusal(
                    systems,
                    "partitions/pci-refusal-absent.toml",
                    "PCI function 00:04.0 (device `edu-a` of partition `alpha`): not present",
                )
            }),
        ),
        (
            "pci-refusal-ecam-qemu".into(),
            Box::new(|systems: &SystemTests| {
                refusal(
                    systems,
                    "partitions/pci-refusal-ecam.toml",
                    "the table's ECAM window is 0xe0000000+0x10000000; the firmware's MCFG gives segment 0 at 0xb0000000+0x10000000 (buses 0-255)",
                )
            }),
        ),
        (
            "pci-refusal-bar-qemu".into(),
            Box::new(|systems: &SystemTests| {
                refusal(
                    systems,
                    "partitions/pci-refusal-bar.toml",
                    "PCI function 00:04.0 (device `edu-a` of partition `alpha`): BAR0 at 0xfe900000 (size 0x100000) lies outside the table's mmio windows",
                )
            }),
        ),
        (
            "pci-flr-qemu".into(),
            Box::new(|systems: &SystemTests| {
                let transcript = build_and_boot(systems, FLR_TABLE, &qemu(), QEMU_SECONDS)?;
                check_flr(&transcript)
            }),
        ),
        (
            "pci-bridge-qemu".into(),
            Box::new(|systems: &SystemTests| {
                let transcript = build_and_boot(systems, BRIDGE_TABLE, &qemu(), QEMU_SECONDS)?;
                check_bridge(&transcript)
            }),
        ),
        (
            "pci-refusal-bridge-kind-qemu".into(),
            Box::new(|systems: &SystemTests| {
                refusal(
                    systems,
                    "partitions/pci-refusal-bridge-kind.toml",
                    "PCI function 01:01.0 (device `edu` of partition `alpha`): its bridge 00:05.0 is `pci`, but `platform.pci-bridges` declares `pcie-port`",
                )
            }),
        ),
        (
            "pci-refusal-bridge-undeclared-qemu".into(),
            Box::new(|systems: &SystemTests| {
                refusal(
                    systems,
                    "partitions/pci-refusal-bridge-undeclared.toml",
                    "PCI function 02:00.0 (device `edu` of partition `alpha`): it is behind bridge 00:06.0 (pcie-port, buses 02-02), which `platform.pci-bridges` does not declare (it puts bus 02 behind 00:07.0)",
                )
            }),
        ),
        (
            "pci-refusal-bridge-buses-qemu".into(),
            Box::new(|systems: &SystemTests| {
                refusal(
                    systems,
                    "partitions/pci-refusal-bridge-buses.toml",
                    "PCI function 02:00.0 (device `edu` of partition `alpha`): its bridge 00:06.0 has buses 02-02, but `platform.pci-bridges` declares 02-03",
                )
            }),
        ),
    ]
}

fn qemu() -> Emulator {
    Emulator::Qemu {
        boot: BootMethod::Kernel,
        cpu: None,
    }
}

fn refusal(systems: &SystemTests, table: &str, reason: &str) -> Outcome {
    let transcript = build_and_boot(systems, table, &qemu(), crate::REFUSAL_TEST_SECONDS)?;
    check_refusal(&transcript, reason)
}

/// The checks of one run against what each partition must see and do.
fn check(transcript: &Transcript, expected: &[Expected]) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    for marker in transcript.markers() {
        match marker {
            Marker::Panic { message } => failures.push(format!("hypervisor panic: {message}")),
            Marker::Refused { reason } => failures.push(format!("refused: {reason}")),
            _ => {}
        }
    }
    if !transcript.emulator_exit.is_clean_power_off() {
        failures.push(transcript.describe_exit());
    }
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    for partition in expected {
        let lines: Vec<&str> = transcript
            .lines_of(partition.partition)
            .map(str::trim_end)
            .collect();
        for scan in partition.scans {
            let prefix = format!("pci: {scan} ");
            let seen: BTreeSet<&str> = lines
                .iter()
                .filter_map(|line| line.strip_prefix(&prefix))
                .filter(|rest| !rest.starts_with("scan found"))
                .collect();
            let wanted: BTreeSet<&str> = partition.functions.iter().copied().collect();
            if seen != wanted {
                failures.push(format!(
                    "{}: the {scan} scan saw {seen:?}, expected exactly {wanted:?}",
                    partition.partition
                ));
            }
            let found = format!("pci: {scan} scan found {}", wanted.len());
            if !lines.contains(&found.as_str()) {
                failures.push(format!("{}: no `{found}`", partition.partition));
            }
        }
        for wanted in partition.lines {
            match lines.iter().find(|line| line.starts_with(wanted)) {
                None => failures.push(format!("{}: no `{wanted}`", partition.partition)),
                // A BAR read must reach the device: all-ones is what nothing answers.
                Some(line) if line.ends_with("value=0xffffffff") || line.ends_with("value=0x0") => {
                    failures.push(format!(
                        "{}: `{line}`: the BAR read did not reach the device",
                        partition.partition
                    ))
                }
                Some(_) => {}
            }
        }
        if !hypervisor.contains(&partition.counter) {
            failures.push(format!("no `{}` at power-off", partition.counter));
        }
        for wanted in partition.hypervisor_lines {
            if !hypervisor.contains(wanted) {
                failures.push(format!("no `{wanted}` on the hypervisor console"));
            }
        }
    }
    crate::outcome(failures)
}

/// Stock Linux's enumeration of its virtual bus (partitions/linux-pci.toml), and `rt`'s own
/// view beside it.
fn check_linux(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = match check(transcript, &LINUX_RT_EXPECTED) {
        Ok(()) => Vec::new(),
        Err(failures) => failures,
    };
    let linux: Vec<&str> = transcript.lines_of("linux").map(str::trim_end).collect();
    // Kernel lines carry a timestamp: `[    3.809838] pci 0000:00:00.0: [1b36:0008] …`.
    let seen: BTreeSet<&str> = linux
        .iter()
        .filter_map(|line| line.split_once("] pci 0000:").map(|(_, rest)| rest))
        .filter(|rest| rest.contains(": [") && rest.contains(" type "))
        .collect();
    let wanted: BTreeSet<&str> = LINUX_FUNCTIONS.into_iter().collect();
    if seen != wanted {
        failures.push(format!(
            "linux enumerated {seen:?}, expected exactly {wanted:?}"
        ));
    }
    if !linux.iter().any(|line| line.ends_with(LINUX_BAR)) {
        failures.push(format!("linux: no `{LINUX_BAR}`"));
    }
    for wanted in LINUX_ACPI_LINES {
        if !linux.iter().any(|line| line.ends_with(wanted)) {
            failures.push(format!("linux: no `{wanted}`"));
        }
    }
    if let Some(line) = linux.iter().find(|line| line.contains(LINUX_CONF1)) {
        failures.push(format!(
            "linux found configuration mechanism #1, which `pci-config = \"ecam-only\"` hides: `{line}`"
        ));
    }
    match crate::irq_test::exit_counters(transcript, "linux") {
        None => failures.push("no exit counters (`exits: partition=linux`) on the console".into()),
        Some(counters) => {
            let ecam = crate::irq_test::counter(&counters, "npf").unwrap_or(0);
            if ecam < LINUX_MIN_ECAM_EXITS {
                failures.push(format!(
                    "linux: npf={ecam} exits, fewer than an enumeration through ECAM makes \
                     ({LINUX_MIN_ECAM_EXITS})"
                ));
            }
        }
    }
    if !linux
        .iter()
        .any(|line| line.starts_with("TESSERA-LINUX: init reached"))
    {
        failures.push("linux did not reach its init".into());
    }
    crate::outcome(failures)
}

/// The NIC's extended capabilities (configuration space from 0x100, reached through the
/// ECAM window): Linux's walk of the list (`TESSERA-LINUX: extended-capabilities
/// 0x0001@0x100 …`) must show exactly the ones the hypervisor kept, all Advanced Error
/// Reporting (0x0001, the one kept ID), and the hypervisor's boot line (`extended=K of W`)
/// must say it walked more than it kept (QEMU's e1000e also has a Device Serial Number
/// capability), so the run shows the filter at work, not an empty list.
fn check_extended_capabilities(linux: &[&str], hypervisor: &[&str]) -> Result<(), String> {
    let chain = linux
        .iter()
        .find_map(|line| line.strip_prefix("TESSERA-LINUX: extended-capabilities"))
        .ok_or("linux: no `TESSERA-LINUX: extended-capabilities` line")?;
    let ids: Vec<&str> = chain
        .split_whitespace()
        .filter_map(|entry| entry.split_once('@').map(|(id, _)| id))
        .collect();
    let (kept, walked) = hypervisor
        .iter()
        .filter(|line| line.starts_with("pci: partition=linux device=nic function=00:02.0 id="))
        .find_map(|line| {
            let (_, extended) = line.split_once(" extended=")?;
            let (kept, rest) = extended.split_once(" of ")?;
            let walked = rest.split(';').next()?;
            Some((kept.parse::<usize>().ok()?, walked.parse::<usize>().ok()?))
        })
        .ok_or("the hypervisor printed no `extended=K of W` for the NIC")?;
    if ids.is_empty() || ids.len() != kept || ids.iter().any(|id| *id != "0x0001") {
        return Err(format!(
            "linux sees the NIC's extended capabilities{chain}; expected the {kept} the hypervisor kept, all AER (0x0001)"
        ));
    }
    if walked <= kept {
        return Err(format!(
            "the hypervisor walked {walked} extended capabilities of the NIC and kept {kept}: nothing hidden to show"
        ));
    }
    Ok(())
}

/// What a Linux partition printed about its traffic on a passed-through e1000e
/// (userland/linux/init.sh), `lines` trimmed: the driver loaded, a DHCP lease from QEMU's
/// user network (through udhcpc's output, `udhcpc: TESSERA-LINUX: lease …`), 5 of 5 ICMP
/// replies, three or more message interrupts all MSI-X (e1000e asks for receive,
/// transmit, other), and the receive and transmit vectors having counted interrupts
/// (`net-interrupts:  25:   0   21   PCI-MSI 32768-edge   eth0-rx-0`: 6.1 names the MSI
/// domain `PCI-MSI` for MSI-X too). Each miss is pushed to `failures`, named `name`.
pub fn e1000e_traffic_failures(name: &str, lines: &[&str], failures: &mut Vec<String>) {
    for wanted in [
        "TESSERA-LINUX: e1000e loaded",
        "TESSERA-LINUX: lease 10.0.2.15/24 router 10.0.2.2 dev eth0",
    ] {
        if !lines.iter().any(|line| line.contains(wanted)) {
            failures.push(format!("{name}: no `{wanted}`"));
        }
    }
    let received = lines
        .iter()
        .find_map(|line| line.strip_prefix("ping: 5 packets transmitted, "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse::<u32>().ok());
    if received != Some(5) {
        failures.push(format!(
            "{name}: expected 5 of 5 ICMP replies from 10.0.2.2, got {received:?}"
        ));
    }
    let kinds: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("msi-irqs: "))
        .collect();
    let msix_irqs: Vec<&str> = kinds
        .iter()
        .filter_map(|line| line.strip_suffix(" msix"))
        .collect();
    if msix_irqs.len() < 3 || msix_irqs.len() != kinds.len() {
        failures.push(format!(
            "{name}: the NIC's interrupts are {kinds:?}, expected three or more, all msix"
        ));
    }
    for queue in ["eth0-rx-0", "eth0-tx-0"] {
        let counted: Option<u64> = lines
            .iter()
            .filter_map(|line| line.strip_prefix("net-interrupts:"))
            .find(|line| line.ends_with(queue))
            .map(|line| {
                let mut words = line.split_whitespace();
                let irq = words.next().unwrap_or_default().trim_end_matches(':');
                if !msix_irqs.contains(&irq) {
                    return 0;
                }
                words.map_while(|word| word.parse::<u64>().ok()).sum()
            });
        if counted.is_none_or(|count| count == 0) {
            failures.push(format!(
                "{name}: the MSI-X vector {queue} counted no interrupts ({counted:?})"
            ));
        }
    }
}

/// Linux driving its e1000e through MSI-X (partitions/linux-e1000e.toml), `rt` beside it.
fn check_e1000e(transcript: &Transcript) -> Result<(), Vec<String>> {
    let mut failures = match check(transcript, &LINUX_RT_EXPECTED) {
        Ok(()) => Vec::new(),
        Err(failures) => failures,
    };
    let linux: Vec<&str> = transcript.lines_of("linux").map(str::trim_end).collect();
    for wanted in [
        "TESSERA-LINUX: init reached",
        "TESSERA-LINUX: net-test done",
    ] {
        if !linux.iter().any(|line| line.contains(wanted)) {
            failures.push(format!("linux: no `{wanted}`"));
        }
    }
    e1000e_traffic_failures("linux", &linux, &mut failures);
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    let table_accesses = hypervisor
        .iter()
        .find_map(|line| line.strip_prefix("pci: partition=linux device=nic msix-table-accesses="))
        .and_then(|count| count.parse::<u64>().ok());
    if table_accesses.is_none_or(|count| count == 0) {
        failures.push(format!(
            "no trapped MSI-X table access by linux ({table_accesses:?})"
        ));
    }
    if let Err(failure) = check_extended_capabilities(&linux, &hypervisor) {
        failures.push(failure);
    }
    // QEMU's e1000e has a PCI Express capability without FLR and a Power Management
    // capability with No_Soft_Reset clear: the D3hot→D0 reset, before Linux drives it.
    let reset = "pci: partition=linux device=nic function=00:02.0 reset=d3hot-d0";
    if !hypervisor.contains(&reset) {
        failures.push(format!("the hypervisor did not print `{reset}`"));
    }
    let refused = "pci: partition=linux device=nic function=00:02.0 dropped-config-writes=";
    match hypervisor
        .iter()
        .find_map(|line| line.strip_prefix(refused))
    {
        Some(rest) if rest.ends_with(" refused-msi=0") => {}
        other => failures.push(format!(
            "linux's NIC counters: {other:?}, expected refused-msi=0"
        )),
    }
    crate::outcome(failures)
}

/// The NVMe run on QEMU with AMD-Vi, or with VT-d in its place: boots the table (the
/// runner writes the image first), then checks the transcript and the image file.
fn nvme(systems: &SystemTests, vtd: bool) -> Outcome {
    let failed = |error: anyhow::Error| vec![format!("{error:#}")];
    let mut table = crate::table::load(&systems.root.join(NVME_TABLE)).map_err(failed)?;
    if vtd {
        crate::system_test::use_intel_iommu(&mut table).map_err(failed)?;
    }
    let emulator = qemu();
    crate::system_test::missing_emulator(systems, &emulator)?;
    let medium = crate::run::prepare(&systems.root, &table, &emulator).map_err(failed)?;
    let transcript =
        crate::system_test::boot_within(systems, &table, &emulator, &medium, LINUX_SECONDS)?;
    let image = crate::image::target_directory(&systems.root)
        .join("tessera")
        .join("run")
        .join(emulator.run_directory_name(&table.stem))
        .join(NVME_IMAGE);
    let bytes = std::fs::read(&image)
        .map_err(|error| vec![format!("cannot read {}: {error}", image.display())])?;
    check_nvme(&transcript, &bytes)
}

/// The 512 bytes init.sh writes at the marker sector: its line, zero-padded (`dd conv=sync`).
fn nvme_marker() -> Vec<u8> {
    let mut sector = format!("TESSERA-NVME-MARKER sector={NVME_MARKER_SECTOR}\n").into_bytes();
    sector.resize(512, 0);
    sector
}

/// Linux driving its NVMe disk (partitions/linux-nvme.toml), `rt` beside it; `image` is the
/// disk image file as QEMU left it.
fn check_nvme(transcript: &Transcript, image: &[u8]) -> Result<(), Vec<String>> {
    use sha2::{Digest, Sha256};
    let mut failures = match check(transcript, &LINUX_RT_EXPECTED) {
        Ok(()) => Vec::new(),
        Err(failures) => failures,
    };
    let linux: Vec<&str> = transcript.lines_of("linux").map(str::trim_end).collect();
    let written = format!("TESSERA-LINUX: nvme-marker written sector={NVME_MARKER_SECTOR}");
    for wanted in [
        "TESSERA-LINUX: init reached",
        "TESSERA-LINUX: nvme loaded",
        "TESSERA-LINUX: nvme0n1 sectors=16384",
        written.as_str(),
        "TESSERA-LINUX: nvme-test done",
    ] {
        if !linux.iter().any(|line| line.contains(wanted)) {
            failures.push(format!("linux: no `{wanted}`"));
        }
    }
    // The disk as the runner wrote it, hashed here: Linux must have read exactly that.
    let pattern = crate::disk::pattern(NVME_IMAGE, NVME_MIB << 20);
    let expected: String = Sha256::digest(&pattern)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let prefix = format!("TESSERA-LINUX: nvme-sha256 mib={NVME_MIB} ");
    match linux
        .iter()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
    {
        Some(sum) if sum == expected => {}
        other => failures.push(format!(
            "linux: the disk's SHA-256 is {other:?}, the image's is {expected}"
        )),
    }
    // The image after QEMU exited: the marker sector, and the pattern everywhere else.
    let marker = NVME_MARKER_SECTOR * 512;
    if image.len() != pattern.len() {
        failures.push(format!(
            "the image has {} bytes, expected {}",
            image.len(),
            pattern.len()
        ));
    } else {
        if image[marker..marker + 512] != nvme_marker()[..] {
            failures.push(format!(
                "the image has no marker at sector {NVME_MARKER_SECTOR}: {:?}",
                String::from_utf8_lossy(&image[marker..marker + 40])
            ));
        }
        if image[..marker] != pattern[..marker] || image[marker + 512..] != pattern[marker + 512..]
        {
            failures.push("the image changed outside the marker sector".into());
        }
    }
    // `msi-irqs: 25 msix`: the controller's message interrupts, all MSI-X (the admin queue's
    // and at least one I/O queue's).
    let kinds: Vec<&str> = linux
        .iter()
        .filter_map(|line| line.strip_prefix("msi-irqs: "))
        .collect();
    let msix_irqs: Vec<&str> = kinds
        .iter()
        .filter_map(|line| line.strip_suffix(" msix"))
        .collect();
    if msix_irqs.len() < 2 || msix_irqs.len() != kinds.len() {
        failures.push(format!(
            "linux: the controller's interrupts are {kinds:?}, expected two or more, all msix"
        ));
    }
    // `nvme-interrupts:  25:   0   21   PCI-MSI 65536-edge   nvme0q0`: the admin queue and
    // some I/O queue counted interrupts on MSI-X vectors.
    let counted = |queue: &dyn Fn(&str) -> bool| -> u64 {
        linux
            .iter()
            .filter_map(|line| line.strip_prefix("nvme-interrupts:"))
            .filter(|line| line.split_whitespace().last().is_some_and(queue))
            .map(|line| {
                let mut words = line.split_whitespace();
                let irq = words.next().unwrap_or_default().trim_end_matches(':');
                if !msix_irqs.contains(&irq) {
                    return 0;
                }
                words
                    .map_while(|word| word.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    };
    let admin = counted(&|name| name == "nvme0q0");
    let io = counted(&|name| name.starts_with("nvme0q") && name != "nvme0q0");
    if admin == 0 || io == 0 {
        failures.push(format!(
            "linux: NVMe MSI-X interrupts counted: admin queue {admin}, I/O queues {io}; both must be > 0"
        ));
    }
    for line in &linux {
        if line.contains("nvme") && (line.contains("timeout") || line.contains("I/O error")) {
            failures.push(format!("linux: `{line}`"));
        }
    }
    let hypervisor: Vec<&str> = transcript.lines_of(HYPERVISOR).map(str::trim_end).collect();
    let table_accesses = hypervisor
        .iter()
        .find_map(|line| line.strip_prefix("pci: partition=linux device=disk msix-table-accesses="))
        .and_then(|count| count.parse::<u64>().ok());
    if table_accesses.is_none_or(|count| count == 0) {
        failures.push(format!(
            "no trapped MSI-X table access by linux ({table_accesses:?})"
        ));
    }
    let counters = "pci: partition=linux device=disk function=00:04.0 dropped-config-writes=";
    match hypervisor
        .iter()
        .find_map(|line| line.strip_prefix(counters))
    {
        Some(rest) if rest.ends_with(" refused-msi=0") => {}
        other => failures.push(format!(
            "linux's disk counters: {other:?}, expected refused-msi=0"
        )),
    }
    // No DMA or interrupt fault: the IOMMU's counters at power-off, and no fault line.
    match hypervisor
        .iter()
        .find(|line| line.starts_with("iommu: blocked-dma="))
    {
        // AMD-Vi: `iommu: blocked-dma=0 other-events=0`; VT-d adds `blocked-interrupts=0`.
        Some(line)
            if line.starts_with("iommu: blocked-dma=0 other-events=0")
                && line
                    .split_once("blocked-interrupts=")
                    .is_none_or(|(_, count)| count == "0") => {}
        other => failures.push(format!(
            "IOMMU counters {other:?}, expected nothing blocked"
        )),
    }
    for line in &hypervisor {
        if line.contains("DMA blocked")
            || line.contains("interrupt blocked")
            || line.contains("event=device-fault")
        {
            failures.push(format!("hypervisor: `{line}`"));
        }
    }
    crate::outcome(failures)
}

/// `rt` beside Linux: its own view only (no BIST, no restart).
const LINUX_RT_EXPECTED: [Expected; 1] = [Expected {
    partition: "rt",
    functions: [HOST_BRIDGE, "00:06.0 id=1234:11e8 class=00ff00 header=00"],
    scans: &["conf1", "ecam"],
    lines: &["pci: edu 00:06.0 bar0=0xfea00000 id=0x010000ed liveness=ok factorial(5)=120"],
    counter:
        "pci: partition=rt device=edu-b function=00:05.0 dropped-config-writes=0 refused-msi=0",
    hypervisor_lines: &[],
}];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{test_lines::replaced, EmulatorExit};

    fn transcript(lines: &[(&str, &str)]) -> Transcript {
        crate::transcript::test_lines::transcript("QEMU", lines, EmulatorExit::Exited(0))
    }

    #[test]
    fn flr_checks() {
        let lines = [
            (
                HYPERVISOR,
                "pci: partition=alpha device=igb function=00:06.0 reset=flr",
            ),
            (
                "alpha",
                "pci: ecam 00:03.0 id=8086:10c9 class=020000 header=00",
            ),
            ("alpha", "pci: command 00:03.0 enabled=0x0406"),
            (
                HYPERVISOR,
                "pci: partition=alpha device=igb function=00:06.0 reset at restart: Ok(\"flr\")",
            ),
            (HYPERVISOR, "restarted: partition=alpha restarts=1 core=0"),
            ("alpha", "pci: command 00:03.0 restarts=1 at-start=0x0400"),
        ];
        assert_eq!(check_flr(&transcript(&lines)), Ok(()));
        for (index, other) in [
            (0, "pci: partition=alpha device=igb function=00:06.0 reset=none"),
            (3, "pci: partition=alpha device=igb function=00:06.0 reset at restart: Ok(\"d3hot-d0\")"),
            (5, "pci: command 00:03.0 restarts=1 at-start=0x0406"),
        ] {
            let mut changed = lines;
            changed[index].1 = other;
            assert!(check_flr(&transcript(&changed)).is_err(), "{other}");
        }
    }

    /// The lines of a passing pci-bridge-qemu run (abridged to what the checks read).
    fn bridge_lines() -> Vec<(&'static str, &'static str)> {
        let mut lines = Vec::new();
        for (partition, virtual_address) in [("alpha", "00:03.0"), ("beta", "00:06.0")] {
            for scan in ["conf1", "ecam"] {
                lines.push((partition, format!("pci: {scan} {HOST_BRIDGE}")));
                lines.push((
                    partition,
                    format!("pci: {scan} {virtual_address} id=1234:11e8 class=00ff00 header=00"),
                ));
                lines.push((partition, format!("pci: {scan} scan found 2")));
            }
        }
        let mut lines: Vec<(&'static str, &'static str)> = lines
            .into_iter()
            .map(|(partition, line)| (partition, &*Box::leak(line.into_boxed_str())))
            .collect();
        lines.extend([
            ("alpha", "pci: edu 00:03.0 bar0=0xfe600000 id=0x010000ed liveness=ok factorial(5)=120"),
            ("beta", "pci: edu 00:06.0 bar0=0xfe800000 id=0x010000ed liveness=ok factorial(5)=120"),
            ("beta", "pci: command 00:06.0 restarts=1 at-start=0x0400"),
            (HYPERVISOR, "pci: partition=alpha device=edu-port function=02:00.0 bridge=00:06.0 kind=pcie-port buses=02-02"),
            (HYPERVISOR, "pci: partition=beta device=edu-bridge function=01:01.0 bridge=00:05.0 kind=pci buses=01-01"),
            (HYPERVISOR, "pci: partition=alpha device=edu-port function=02:00.0 secondary-bus reset through bridge 00:06.0: 2 of 8 saved header registers changed, restored"),
            (HYPERVISOR, "pci: partition=alpha device=edu-port function=02:00.0 reset=secondary-bus"),
            (HYPERVISOR, "pci: partition=beta device=edu-bridge function=01:01.0 secondary-bus reset through bridge 00:05.0: 2 of 8 saved header registers changed, restored"),
            (HYPERVISOR, "pci: partition=beta device=edu-bridge function=01:01.0 reset=secondary-bus"),
            (HYPERVISOR, "pci: partition=beta device=edu-bridge function=01:01.0 secondary-bus reset through bridge 00:05.0: 1 of 8 saved header registers changed, restored"),
            (HYPERVISOR, "pci: partition=beta device=edu-bridge function=01:01.0 reset at restart: Ok(\"secondary-bus\")"),
            (HYPERVISOR, "restarted: partition=beta restarts=1 core=1"),
            (HYPERVISOR, "pci: partition=alpha device=edu-port function=02:00.0 dropped-config-writes=0 refused-msi=0"),
            (HYPERVISOR, "pci: partition=beta device=edu-bridge function=01:01.0 dropped-config-writes=0 refused-msi=0"),
        ]);
        lines
    }

    #[test]
    fn bridge_checks() {
        assert_eq!(check_bridge(&transcript(&bridge_lines())), Ok(()));
        for (old, new) in [
            // A bus reset that changed nothing did not reach the function.
            (
                "through bridge 00:06.0: 2 of 8",
                "pci: partition=alpha device=edu-port function=02:00.0 secondary-bus reset through bridge 00:06.0: 0 of 8 saved header registers changed, restored",
            ),
            (
                "edu-port function=02:00.0 reset=secondary-bus",
                "pci: partition=alpha device=edu-port function=02:00.0 reset=none",
            ),
            (
                "kind=pci buses",
                "pci: partition=beta device=edu-bridge function=01:01.0 bridge=00:05.0 kind=pcie-port buses=01-01",
            ),
            ("factorial", "pci: edu 00:03.0 bar0=0xfe600000 id=0xffffffff"),
        ] {
            let lines = replaced(bridge_lines(), old, new);
            assert!(check_bridge(&transcript(&lines)).is_err(), "{new}");
        }
    }

    /// The lines of a passing QEMU run (abridged to what the checks read).
    fn passing() -> Vec<(&'static str, &'static str)> {
        vec![
            ("beta", "pci: conf1 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("beta", "pci: conf1 00:06.0 id=1234:11e8 class=00ff00 header=00"),
            ("alpha", "pci: conf1 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("alpha", "pci: conf1 00:03.0 id=1234:11e8 class=00ff00 header=00"),
            ("alpha", "pci: conf1 scan found 2"),
            ("beta", "pci: conf1 scan found 2"),
            ("beta", "pci: ecam 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("alpha", "pci: ecam 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("alpha", "pci: ecam 00:03.0 id=1234:11e8 class=00ff00 header=00"),
            ("alpha", "pci: ecam scan found 2"),
            ("alpha", "pci: bist 00:03.0 wrote=0x40 reads=0x00 rom=0x0"),
            ("alpha", "pci: edu 00:03.0 bar0=0xfe900000 id=0x010000ed liveness=ok factorial(5)=120"),
            ("alpha", "pci: bar-move 00:03.0 wrote=0xfea00000 reads=0xfea00000 id-at-old=0x010000ed"),
            ("alpha", "pci: msi 00:03.0 vector=0x50 foreign=1: delivered-while-foreign=0 delivered-own=1"),
            ("beta", "pci: ecam 00:06.0 id=1234:11e8 class=00ff00 header=00"),
            ("beta", "pci: ecam scan found 2"),
            ("beta", "pci: edu 00:06.0 bar0=0xfea00000 id=0x010000ed liveness=ok factorial(5)=120"),
            ("beta", "pci: command 00:06.0 restarts=0 at-start=0x0500"),
            ("beta", "pci: command 00:06.0 enabled=0x0506"),
            (HYPERVISOR, "restarted: partition=beta restarts=1 core=1"),
            ("beta", "pci: command 00:06.0 restarts=1 at-start=0x0500"),
            (HYPERVISOR, "refused: partition=alpha core=0 device=edu-a MSI message ForeignCore { apic_id: 1 }"),
            (HYPERVISOR, "pci: partition=alpha device=edu-a function=00:04.0 dropped-config-writes=2 refused-msi=1"),
            (HYPERVISOR, "pci: partition=beta device=edu-b function=00:05.0 dropped-config-writes=0 refused-msi=0"),
        ]
    }

    #[test]
    fn a_passing_run_passes() {
        assert_eq!(check(&transcript(&passing()), &QEMU_EXPECTED), Ok(()));
    }

    #[test]
    fn seeing_the_other_partitions_function_fails() {
        let mut lines = passing();
        lines.push((
            "alpha",
            "pci: conf1 00:06.0 id=1234:11e8 class=00ff00 header=00",
        ));
        let failures = check(&transcript(&lines), &QEMU_EXPECTED).unwrap_err();
        assert!(
            failures[0].contains("alpha: the conf1 scan saw"),
            "{failures:?}"
        );
    }

    #[test]
    fn missing_function_wrong_device_and_counters_fail() {
        let lines = replaced(passing(), "alpha device=edu-a", "pci: partition=alpha device=edu-a function=00:04.0 dropped-config-writes=0 refused-msi=0");
        assert!(check(&transcript(&lines), &QEMU_EXPECTED).is_err());
        let lines = replaced(
            passing(),
            "liveness=ok factorial(5)=120",
            "pci: edu 00:03.0 bar0=0xfe900000 id=0x010000ed liveness=BAD factorial(5)=0",
        );
        assert!(check(&transcript(&lines), &QEMU_EXPECTED).is_err());
        let lines: Vec<_> = passing()
            .into_iter()
            .filter(|(_, text)| !text.starts_with("pci: ecam 00:06.0"))
            .collect();
        assert!(check(&transcript(&lines), &QEMU_EXPECTED).is_err());
        let lines = replaced(
            passing(),
            "reads=0x00",
            "pci: bist 00:03.0 wrote=0x40 reads=0x40 rom=0x0",
        );
        assert!(check(&transcript(&lines), &QEMU_EXPECTED).is_err());
    }

    #[test]
    fn linux_seeing_more_than_its_bus_fails() {
        let mut lines = vec![
            ("rt", "pci: conf1 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("rt", "pci: conf1 00:06.0 id=1234:11e8 class=00ff00 header=00"),
            ("rt", "pci: conf1 scan found 2"),
            ("rt", "pci: ecam 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("rt", "pci: ecam 00:06.0 id=1234:11e8 class=00ff00 header=00"),
            ("rt", "pci: ecam scan found 2"),
            ("rt", "pci: edu 00:06.0 bar0=0xfea00000 id=0x010000ed liveness=ok factorial(5)=120"),
            (HYPERVISOR, "pci: partition=rt device=edu-b function=00:05.0 dropped-config-writes=0 refused-msi=0"),
            ("linux", "[    3.809838] pci 0000:00:00.0: [1b36:0008] type 00 class 0x060000"),
            ("linux", "[    3.819355] pci 0000:00:03.0: [1234:11e8] type 00 class 0x00ff00"),
            ("linux", "[    3.822404] pci 0000:00:03.0: BAR 0 [mem 0xfe900000-0xfe9fffff]"),
            ("linux", "[    4.586012] PCI: MMCONFIG for domain 0000 [bus 00-00] at [mem 0xb0000000-0xb00fffff] (base 0xb0000000)"),
            ("linux", "[    4.593057] PCI: MMCONFIG at [mem 0xb0000000-0xb00fffff] reserved in ACPI motherboard resources"),
            ("linux", "[    4.637969] ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00])"),
            ("linux", "[    4.652600] pci_bus 0000:00: root bus resource [mem 0xfe900000-0xfe9fffff window]"),
            ("linux", "TESSERA-LINUX: init reached tsc=51589224478"),
            (HYPERVISOR, "exits: partition=linux state=Running cpuid=4871 io=33 npf=400 total=5304"),
        ];
        assert_eq!(check_linux(&transcript(&lines)), Ok(()));
        // Mechanism #1 found, or too few ECAM exits, or no root bridge: failures.
        let mut with_conf1 = lines.clone();
        with_conf1.push((
            "linux",
            "[    4.440776] PCI: Using configuration type 1 for base access",
        ));
        assert!(check_linux(&transcript(&with_conf1)).is_err());
        let few = crate::transcript::test_lines::replaced(
            lines.clone(),
            "npf=400",
            "exits: partition=linux state=Running cpuid=4871 io=33654 npf=18 total=39764",
        );
        assert!(check_linux(&transcript(&few)).is_err());
        let no_root: Vec<_> = lines
            .iter()
            .copied()
            .filter(|(_, text)| !text.contains("PCI Root Bridge"))
            .collect();
        assert!(check_linux(&transcript(&no_root)).is_err());
        lines.push((
            "linux",
            "[    3.829355] pci 0000:00:06.0: [1234:11e8] type 00 class 0x00ff00",
        ));
        let failures = check_linux(&transcript(&lines)).unwrap_err();
        assert!(failures[0].contains("linux enumerated"), "{failures:?}");
    }

    /// The lines of a passing linux-e1000e run (abridged).
    fn e1000e_lines() -> Vec<(&'static str, &'static str)> {
        vec![
            ("rt", "pci: conf1 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("rt", "pci: conf1 00:06.0 id=1234:11e8 class=00ff00 header=00"),
            ("rt", "pci: conf1 scan found 2"),
            ("rt", "pci: ecam 00:00.0 id=1b36:0008 class=060000 header=00"),
            ("rt", "pci: ecam 00:06.0 id=1234:11e8 class=00ff00 header=00"),
            ("rt", "pci: ecam scan found 2"),
            ("rt", "pci: edu 00:06.0 bar0=0xfea00000 id=0x010000ed liveness=ok factorial(5)=120"),
            (HYPERVISOR, "pci: partition=linux device=nic function=00:02.0 reset=d3hot-d0"),
            (HYPERVISOR, "pci: partition=rt device=edu-b function=00:05.0 dropped-config-writes=0 refused-msi=0"),
            ("linux", "TESSERA-LINUX: init reached tsc=93651436659"),
            ("linux", "TESSERA-LINUX: e1000e loaded"),
            ("linux", "udhcpc: TESSERA-LINUX: lease 10.0.2.15/24 router 10.0.2.2 dev eth0"),
            ("linux", "ping: 5 packets transmitted, 5 packets received, 0% packet loss"),
            ("linux", "net-interrupts:  25:          0         21   PCI-MSI 32768-edge      eth0-rx-0"),
            ("linux", "net-interrupts:  26:         28          0   PCI-MSI 32769-edge      eth0-tx-0"),
            ("linux", "net-interrupts:  27:          0          4   PCI-MSI 32770-edge      eth0"),
            ("linux", "msi-irqs: 25 msix"),
            ("linux", "msi-irqs: 26 msix"),
            ("linux", "msi-irqs: 27 msix"),
            ("linux", "TESSERA-LINUX: extended-capabilities 0x0001@0x100"),
            ("linux", "TESSERA-LINUX: net-test done"),
            (HYPERVISOR, "pci: partition=linux device=nic function=00:02.0 id=8086:10d3 at virtual 00:02.0 capabilities=3 of 4 extended=1 of 2; quiesced"),
            (HYPERVISOR, "pci: partition=linux device=nic function=00:02.0 dropped-config-writes=4 refused-msi=0"),
            (HYPERVISOR, "pci: partition=linux device=nic msix-table-accesses=47"),
        ]
    }

    #[test]
    fn e1000e_checks() {
        assert_eq!(check_e1000e(&transcript(&e1000e_lines())), Ok(()));
        for (old, new) in [
            (
                "5 packets received",
                "ping: 5 packets transmitted, 4 packets received, 20% packet loss",
            ),
            (
                "32768-edge",
                "net-interrupts:  25:          0          0   PCI-MSI 32768-edge      eth0-rx-0",
            ),
            (
                "msix-table-accesses",
                "pci: partition=linux device=nic msix-table-accesses=0",
            ),
            ("msi-irqs: 25", "msi-irqs: 25 msi"),
            ("lease", "udhcpc: udhcpc: no lease, failing"),
            (
                "reset=d3hot-d0",
                "pci: partition=linux device=nic function=00:02.0 reset=none",
            ),
            // Extended space out of reach, a hidden capability showing, nothing hidden.
            (
                "extended-capabilities",
                "TESSERA-LINUX: extended-capabilities none",
            ),
            (
                "extended-capabilities",
                "TESSERA-LINUX: extended-capabilities 0x0001@0x100 0x0003@0x140",
            ),
            (
                "extended=1 of 2",
                "pci: partition=linux device=nic function=00:02.0 id=8086:10d3 at virtual 00:02.0 capabilities=3 of 4 extended=1 of 1; quiesced",
            ),
        ] {
            let lines = replaced(e1000e_lines(), old, new);
            assert!(check_e1000e(&transcript(&lines)).is_err(), "{new}");
        }
        let lines = replaced(
            e1000e_lines(),
            "device=nic function=00:02.0 dropped-config-writes",
            "pci: partition=linux device=nic function=00:02.0 dropped-config-writes=4 refused-msi=1",
        );
        assert!(check_e1000e(&transcript(&lines)).is_err());
    }

    /// The lines of a passing linux-nvme run (abridged; the SHA-256 of the 8 MiB pattern
    /// was also computed independently of xtask, with Python's hashlib).
    fn nvme_lines() -> Vec<(&'static str, &'static str)> {
        // rt's lines (scans, edu, counter) from the e1000e run, without the NIC's.
        let mut lines: Vec<_> = e1000e_lines()
            .into_iter()
            .take_while(|(source, _)| *source != "linux")
            .filter(|(_, text)| !text.contains("device=nic"))
            .collect();
        lines.extend([
            ("linux", "TESSERA-LINUX: init reached tsc=20791031831"),
            ("linux", "TESSERA-LINUX: nvme loaded"),
            ("linux", "TESSERA-LINUX: nvme0n1 sectors=16384"),
            ("linux", "TESSERA-LINUX: nvme-sha256 mib=8 e7502f0b0bf0e55a5889a910d6af06ea4c5957329d1406ca2c5932945663b90c"),
            ("linux", "TESSERA-LINUX: nvme-marker written sector=12288"),
            ("linux", "nvme-interrupts:  25:          0         12   PCI-MSI 65536-edge      nvme0q0"),
            ("linux", "nvme-interrupts:  26:          4          0   PCI-MSI 65537-edge      nvme0q1"),
            ("linux", "nvme-interrupts:  27:          0         16   PCI-MSI 65538-edge      nvme0q2"),
            ("linux", "msi-irqs: 25 msix"),
            ("linux", "msi-irqs: 26 msix"),
            ("linux", "msi-irqs: 27 msix"),
            ("linux", "TESSERA-LINUX: nvme-test done"),
            (HYPERVISOR, "pci: partition=linux device=disk function=00:04.0 dropped-config-writes=4 refused-msi=0"),
            (HYPERVISOR, "pci: partition=linux device=disk msix-table-accesses=40"),
            (HYPERVISOR, "iommu: blocked-dma=0 other-events=0"),
        ]);
        lines
    }

    /// The image as a passing run leaves it: the pattern with the marker sector.
    fn nvme_image() -> Vec<u8> {
        let mut image = crate::disk::pattern(NVME_IMAGE, NVME_MIB << 20);
        let at = NVME_MARKER_SECTOR * 512;
        image[at..at + 512].copy_from_slice(&nvme_marker());
        image
    }

    #[test]
    fn nvme_checks() {
        assert_eq!(
            check_nvme(&transcript(&nvme_lines()), &nvme_image()),
            Ok(())
        );
        for (old, new) in [
            // Another hash: Linux read something else (the wrong sectors, stale data).
            (
                "nvme-sha256",
                "TESSERA-LINUX: nvme-sha256 mib=8 e7502f0b0bf0e55a5889a910d6af06ea4c5957329d1406ca2c5932945663b90d",
            ),
            (
                "65536-edge",
                "nvme-interrupts:  25:          0          0   PCI-MSI 65536-edge      nvme0q0",
            ),
            ("msi-irqs: 26", "msi-irqs: 26 msi"),
            ("msix-table-accesses", "pci: partition=linux device=disk msix-table-accesses=0"),
            ("blocked-dma", "iommu: blocked-dma=1 other-events=0"),
            ("blocked-dma", "iommu: blocked-dma=0 other-events=0 blocked-interrupts=2"),
            ("nvme-test done", "TESSERA-LINUX: heartbeat 1"),
        ] {
            let lines = replaced(nvme_lines(), old, new);
            assert!(check_nvme(&transcript(&lines), &nvme_image()).is_err(), "{new}");
        }
        // No I/O queue interrupt at all (one queue counting is enough: Linux spreads its
        // queues over the cores, and one core may have issued no read).
        let idle = replaced(
            replaced(
                nvme_lines(),
                "65537-edge",
                "nvme-interrupts:  26:          0          0   PCI-MSI 65537-edge      nvme0q1",
            ),
            "65538-edge",
            "nvme-interrupts:  27:          0          0   PCI-MSI 65538-edge      nvme0q2",
        );
        assert!(check_nvme(&transcript(&idle), &nvme_image()).is_err());
        let mut timed_out = nvme_lines();
        timed_out.push((
            "linux",
            "[   33.1] nvme nvme0: I/O 3 QID 1 timeout, aborting",
        ));
        assert!(check_nvme(&transcript(&timed_out), &nvme_image()).is_err());
        // The marker missing (the write never reached the file), or another sector changed.
        let unwritten = crate::disk::pattern(NVME_IMAGE, NVME_MIB << 20);
        assert!(check_nvme(&transcript(&nvme_lines()), &unwritten).is_err());
        let mut elsewhere = nvme_image();
        elsewhere[512] ^= 1;
        assert!(check_nvme(&transcript(&nvme_lines()), &elsewhere).is_err());
        assert!(check_nvme(&transcript(&nvme_lines()), &nvme_image()[..4096]).is_err());
    }

    #[test]
    fn an_all_ones_bar_read_fails() {
        let lines = vec![(
            "alpha",
            "pci: bar-read 00:03.0 bar0=0xc0000000 offset=0x8 value=0xffffffff",
        )];
        let failures = check(&transcript(&lines), &BOCHS_EXPECTED[..1]).unwrap_err();
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("did not reach the device")),
            "{failures:?}"
        );
    }
}
