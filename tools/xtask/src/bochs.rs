//! The Bochs configuration for a table, starting Bochs headless, and making sure it is
//! installed.
//!
//! Bochs has no `-kernel`: it boots the GRUB ISO from a CD-ROM drive. Its only display that
//! needs no window is `term`, which wants a terminal, so it runs under
//! `script -qec "bochs …" /dev/null`, its terminal output going to `terminal.txt`. Debian's Bochs
//! has the internal debugger, which stops before the first instruction: `-rc cont.rc`
//! (holding `c`) continues at once. Its exit status is always 1; the runner decides from
//! the hypervisor console.
//!
//! With the debugger compiled in, the term display draws on a pseudo-terminal of its own and
//! names it on standard error (`Bochs connected to screen "/dev/pts/N"`). Nobody would read
//! it, and Bochs redraws the cursor at every display update, so after some minutes the
//! terminal's buffers are full and Bochs blocks for good in a write to it, in the middle of a
//! run (seen with Linux: no output for 13 minutes, Bochs asleep in `n_tty_write`). A thread of
//! the runner reads that terminal into `screen.txt` ([`read_screen`]).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::install::{self, Installation};
use crate::run::{BootMedium, Launch};
use crate::serial::{FollowedFile, SerialCapture};
use crate::table::TableInfo;

pub const BINARY: &str = "bochs";
/// The CPU model when `--cpu` names none.
pub const DEFAULT_CPU: &str = "corei7_haswell_4770";
/// The Intel models with VMX, EPT and x2APIC: each must run the demo. (Bochs' own names, as
/// `bochs -help cpu` lists them.)
pub const VMX_MODELS: [&str; 7] = [
    "corei7_ivy_bridge_3770k",
    "corei7_haswell_4770",
    "broadwell_ult",
    "corei7_skylake_x",
    "corei3_cnl",
    "corei7_icelake_u",
    "tigerlake",
];
/// Models that lack something Tessera needs, with a word the hypervisor's `REFUSED:` line
/// must contain (compared without case) to name the missing feature.
pub const REFUSING_MODELS: [(&str, &str); 3] = [
    ("corei7_sandy_bridge_2600k", "x2APIC"),
    ("core2_penryn_t9600", "secondary"),
    // AMD: SVM and NPT, but no x2APIC.
    ("ryzen", "x2APIC"),
];
/// How Bochs gets installed (Debian 12), as ci/install-deps.sh does it. `bochs-term` holds
/// the `term` display; without it Bochs stops with "display library 'term' not available".
pub const INSTALL_COMMAND: &str = "apt-get install -y bochs bochs-term bochsbios vgabios";
/// Where Debian's Bochs keeps its plugins.
const PLUGIN_DIRECTORY: &str = "/usr/lib/x86_64-linux-gnu/bochs/plugins";
/// The BIOS images (packages bochsbios, vgabios).
const ROM_IMAGE: &str = "/usr/share/bochs/BIOS-bochs-latest";
const VGA_ROM_IMAGE: &str = "/usr/share/bochs/VGABIOS-lgpl-latest";
/// RAM above the table's highest RAM byte for the firmware: the Bochs BIOS puts its ACPI
/// tables at the top of memory, which must not land in a partition's RAM.
const FIRMWARE_HEADROOM: u64 = 1 << 20;
/// Bochs' RAM is a whole number of these.
const RAM_GRANULE: u64 = 32 << 20;
/// Bochs' `ips=`. With `clock: sync=none` emulated time advances one second every `ips`
/// ticks (a tick is one instruction of each running CPU), so the TSC runs at a nominal
/// `ips / 1000` kHz: 1 MHz here, which the demo, interrupt, restart and long-mode lanes and
/// their TSC budgets are written for.
pub const IPS: u64 = 1_000_000;
/// `ips=` for a table with a Linux partition (the long lane). At 1 MHz Linux's periodic tick
/// (`HZ=250`) comes every 4000 instructions of a busy core and its handler is a large share
/// of them; its watchdogs (soft lockup, hung task, RCU stall) and timeouts (crypto self-tests,
/// -110 for the built-in X.509 certificates) fire during a normal boot. At 20 MHz a jiffy is
/// 80,000 instructions, while what Linux waits for in time (87 µs per console character at
/// 115200 baud, `sleep 1` in /init) stays small beside the instruction-bound boot.
pub const LINUX_IPS: u64 = 20_000_000;
/// What the term display prints before the quoted path of its pseudo-terminal.
const SCREEN_ANNOUNCEMENT: &str = "Bochs connected to screen \"";
/// How long [`read_screen`] waits for that line (Bochs prints it before the BIOS runs).
const SCREEN_ANNOUNCEMENT_WAIT: Duration = Duration::from_secs(60);
/// How often it looks for the line.
const SCREEN_ANNOUNCEMENT_POLL: Duration = Duration::from_millis(100);

/// `megs:` for a table: its highest RAM byte plus [`FIRMWARE_HEADROOM`], rounded up to
/// [`RAM_GRANULE`] (the demo, RAM up to 511 MiB: 512).
pub fn megabytes(table: &TableInfo) -> u64 {
    let bytes = (table.ram_end + FIRMWARE_HEADROOM).div_ceil(RAM_GRANULE) * RAM_GRANULE;
    bytes >> 20
}

/// `ips=` for `table`: [`LINUX_IPS`] if a partition boots Linux, else [`IPS`].
pub fn instructions_per_second(table: &TableInfo) -> u64 {
    if crate::linux::boots_linux(&table.path) {
        LINUX_IPS
    } else {
        IPS
    }
}

/// The bochsrc for `table` booting `iso` on `cpu` with `count=` the table's cores and the
/// given `ips`. The UART captures become `comN:` in file mode (the same ports as QEMU's
/// `-serial`: com1 = 0x3f8, com2 = 0x2f8, com3 = 0x3e8, com4 = 0x2e8); file names are
/// relative to the directory Bochs runs in.
pub fn config(
    table: &TableInfo,
    iso: &Path,
    cpu: &str,
    ips: u64,
    captures: &[SerialCapture],
) -> String {
    let mut text = String::new();
    let mut line = |line: String| {
        text.push_str(&line);
        text.push('\n');
    };
    line("# Written by `cargo xtask run --emulator bochs`; runs again with".into());
    line("#   script -qec \"bochs -q -f bochsrc -rc cont.rc\" /dev/null </dev/null".into());
    line(format!("megs: {}", megabytes(table)));
    line(format!(
        "cpu: model={cpu}, count={}, ips={ips}, reset_on_triple_fault=0, ignore_bad_msrs=1",
        table.cpu_count
    ));
    line(format!("romimage: file={ROM_IMAGE}"));
    line(format!("vgaromimage: file={VGA_ROM_IMAGE}"));
    line(format!(
        "ata0-master: type=cdrom, path={}, status=inserted",
        iso.display()
    ));
    line("boot: cdrom".into());
    line("display_library: term".into());
    for capture in captures {
        let file = capture
            .file
            .file_name()
            .map_or_else(|| capture.file.clone(), PathBuf::from);
        line(format!(
            "com{}: enabled=1, mode=file, dev={}",
            capture.index + 1,
            file.display()
        ));
    }
    for line_text in pci_lines(&table.bochs_pci_slots) {
        line(line_text);
    }
    line("log: bochs.log".into());
    line("panic: action=fatal".into());
    // Virtual time from retired instructions, starting at a fixed date: runs repeat exactly.
    line("clock: sync=none, time0=1".into());
    // Debian's sound plugin (ALSA) aborts with "buffer overflow detected" on a machine
    // without a sound card; nothing here needs sound.
    line("sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy".into());
    line("speaker: enabled=0".into());
    text
}

/// The bochsrc lines for the table's PCI slots: `pci: enabled=1, chipset=i440fx, slot1=…`
/// and, for each network card, its own line with no network behind it (`ethmod=null`) and a
/// MAC address of its own (the cards are numbered in slot order, `card=0` first).
fn pci_lines(slots: &[String]) -> Vec<String> {
    if slots.is_empty() {
        return vec![];
    }
    let mut pci = String::from("pci: enabled=1, chipset=i440fx");
    let mut cards = Vec::new();
    for (index, device) in slots.iter().enumerate() {
        if device.is_empty() {
            continue;
        }
        pci.push_str(&format!(", slot{}={device}", index + 1));
        if device == "e1000" || device == "ne2k" {
            let card = slots[..index]
                .iter()
                .filter(|other| *other == device)
                .count();
            cards.push(format!(
                "{device}: card={card}, enabled=1, mac=52:54:00:12:34:{:02x}, ethmod=null",
                0x50 + index
            ));
        }
    }
    let mut lines = vec![pci];
    lines.extend(cards);
    lines
}

/// Whether a line of `bochs.log` or of the terminal is worth streaming: errors and panics
/// (`00065820445e[CPU0  ] …`, `…p[…] >>PANIC<< …`) and the message Bochs exits with.
pub fn is_message(line: &str) -> bool {
    let level = line.trim_start_matches(|character: char| character.is_ascii_digit());
    let timestamped = level.len() < line.len();
    (timestamped && (level.starts_with("e[") || level.starts_with("p[")))
        || line.starts_with("Bochs is exiting")
        || line.contains("buffer overflow detected")
}

/// How Bochs is started for one run: `bochsrc` and `cont.rc` are written to `directory`,
/// Bochs runs there under `script`, its terminal output goes to `terminal.txt` and its
/// screen to `screen.txt`; errors from `bochs.log` and the terminal are streamed as its
/// messages.
pub fn launch(
    table: &TableInfo,
    medium: &BootMedium,
    cpu: &str,
    captures: &[SerialCapture],
    directory: &Path,
) -> Result<Launch> {
    let BootMedium::Cdrom(iso) = medium else {
        anyhow::bail!("Bochs boots only the GRUB ISO, not the image directly");
    };
    // Relative to the run directory when it can be: Bochs' option syntax has no quoting.
    let iso = match (directory.parent().and_then(Path::parent), iso.file_name()) {
        (Some(above), Some(name)) if iso.parent() == Some(above) => Path::new("../..").join(name),
        _ => iso.clone(),
    };
    let bochsrc = config(table, &iso, cpu, instructions_per_second(table), captures);
    let bochsrc_path = directory.join("bochsrc");
    std::fs::write(&bochsrc_path, bochsrc)
        .with_context(|| format!("cannot write {}", bochsrc_path.display()))?;
    std::fs::write(directory.join("cont.rc"), "c\n")
        .with_context(|| format!("cannot write cont.rc in {}", directory.display()))?;

    read_screen(directory.join("terminal.txt"), directory.join("screen.txt"));

    let inner = format!("{BINARY} -q -f bochsrc -rc cont.rc");
    let mut command = Command::new("script");
    command
        .args(["-qec", &inner, "/dev/null"])
        .current_dir(directory);
    Ok(Launch {
        command,
        shown: format!(
            "(cd {} && script -qec \"{inner}\" /dev/null </dev/null)",
            directory.display()
        ),
        output: directory.join("terminal.txt"),
        messages: vec![
            FollowedFile::filtered("bochs", directory.join("bochs.log"), is_message),
            FollowedFile::filtered("bochs", directory.join("terminal.txt"), is_message),
        ],
    })
}

/// The pseudo-terminal the term display draws on, from the text of Bochs' standard error.
pub fn screen_device(terminal: &str) -> Option<&str> {
    let rest = &terminal[terminal.find(SCREEN_ANNOUNCEMENT)? + SCREEN_ANNOUNCEMENT.len()..];
    let path = &rest[..rest.find('"')?];
    path.starts_with("/dev/").then_some(path)
}

/// Starts a thread that waits for Bochs to name its screen's pseudo-terminal in `terminal`
/// (its standard error, written by the runner) and then copies everything drawn there to
/// `screen`, so that Bochs never blocks on a full terminal (module comment). The thread ends
/// when Bochs closes the terminal (the read fails), or after
/// [`SCREEN_ANNOUNCEMENT_WAIT`] without the announcement.
fn read_screen(terminal: PathBuf, screen: PathBuf) {
    std::thread::spawn(move || {
        let started = Instant::now();
        let device = loop {
            let text = std::fs::read_to_string(&terminal).unwrap_or_default();
            if let Some(device) = screen_device(&text) {
                break device.to_string();
            }
            if started.elapsed() > SCREEN_ANNOUNCEMENT_WAIT {
                return;
            }
            std::thread::sleep(SCREEN_ANNOUNCEMENT_POLL);
        };
        // Errors end the thread: the run goes on, and stalls only if Bochs draws a lot.
        let _ = copy_screen(Path::new(&device), &screen);
    });
}

/// Opens the pseudo-terminal `device` without making it the runner's controlling terminal,
/// switches it to raw mode (no echo back to Bochs, no waiting for line ends) and copies what
/// arrives to `screen` until the read fails.
fn copy_screen(device: &Path, screen: &Path) -> std::io::Result<u64> {
    let mut terminal = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(device)?;
    // SAFETY: `termios` is plain data, filled by tcgetattr before use; the descriptor is
    // open for the calls' duration.
    unsafe {
        let mut settings: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(terminal.as_raw_fd(), &mut settings) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut settings);
        if libc::tcsetattr(terminal.as_raw_fd(), libc::TCSANOW, &settings) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut output = File::create(screen)?;
    std::io::copy(&mut terminal, &mut output)
}

/// What is missing to run Bochs, if anything.
fn problem() -> Option<String> {
    if !install::on_path(BINARY) {
        return Some(format!("{BINARY} is not installed"));
    }
    if !install::on_path("script") {
        return Some("script (package bsdutils) is not installed".into());
    }
    for file in [ROM_IMAGE, VGA_ROM_IMAGE] {
        if !Path::new(file).is_file() {
            return Some(format!("the Bochs BIOS {file} is not installed"));
        }
    }
    let plugins = Path::new(PLUGIN_DIRECTORY);
    if plugins.is_dir() && !plugins.join("libbx_term_gui.so").exists() {
        return Some("Bochs' term display (package bochs-term) is not installed".into());
    }
    None
}

/// Checks for Bochs, its BIOS and its term display; as root installs them when missing.
pub fn ensure_installed(root: &Path) -> Result<Installation> {
    install::ensure(root, problem, INSTALL_COMMAND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::serial_captures;
    use crate::table::PartitionInfo;

    fn demo_table() -> TableInfo {
        TableInfo {
            path: "/w/partitions/demo.toml".into(),
            stem: "demo".into(),
            cpu_count: 4,
            ram_end: 0x2000_0000 - 0x10_0000,
            partitions: [("control", 0x3f8), ("worker", 0x2f8), ("intruder", 0x2e8)]
                .iter()
                .map(|(name, port)| PartitionInfo {
                    name: name.to_string(),
                    device_ports: vec![*port],
                })
                .collect(),
            console_port: Some(0x3e8),
            expect_faults: vec!["intruder".into()],
            run_seconds: None,
            qemu_devices: vec![],
            bochs_pci_slots: vec![],
            qemu_disks: vec![],
        }
    }

    #[test]
    fn pci_slots_become_a_pci_line_and_network_cards() {
        assert!(pci_lines(&[]).is_empty());
        let slots = ["e1000".to_string(), String::new(), "e1000".to_string()];
        assert_eq!(
            pci_lines(&slots),
            [
                "pci: enabled=1, chipset=i440fx, slot1=e1000, slot3=e1000",
                "e1000: card=0, enabled=1, mac=52:54:00:12:34:50, ethmod=null",
                "e1000: card=1, enabled=1, mac=52:54:00:12:34:52, ethmod=null",
            ]
        );
    }

    #[test]
    fn the_demo_bochsrc() {
        let table = demo_table();
        let captures = serial_captures(&table, Path::new("/w/target/tessera/run/demo-bochs"));
        let text = config(
            &table,
            Path::new("../../demo.iso"),
            DEFAULT_CPU,
            instructions_per_second(&table),
            &captures,
        );
        let settings: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            settings,
            [
                "megs: 512",
                "cpu: model=corei7_haswell_4770, count=4, ips=1000000, \
                 reset_on_triple_fault=0, ignore_bad_msrs=1",
                "romimage: file=/usr/share/bochs/BIOS-bochs-latest",
                "vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest",
                "ata0-master: type=cdrom, path=../../demo.iso, status=inserted",
                "boot: cdrom",
                "display_library: term",
                "com1: enabled=1, mode=file, dev=com1.txt",
                "com2: enabled=1, mode=file, dev=com2.txt",
                "com3: enabled=1, mode=file, dev=com3.txt",
                "com4: enabled=1, mode=file, dev=com4.txt",
                "log: bochs.log",
                "panic: action=fatal",
                "clock: sync=none, time0=1",
                "sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy",
                "speaker: enabled=0",
            ]
        );
    }

    #[test]
    fn only_the_table_uarts_and_cores_appear() {
        let mut table = demo_table();
        table.cpu_count = 2;
        table.partitions.truncate(1);
        table.console_port = Some(0x2e8);
        let captures = serial_captures(&table, Path::new("/run"));
        let text = config(
            &table,
            Path::new("t.iso"),
            "corei7_skylake_x",
            IPS,
            &captures,
        );
        let uarts: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("com"))
            .collect();
        assert_eq!(
            uarts,
            [
                "com1: enabled=1, mode=file, dev=com1.txt",
                "com4: enabled=1, mode=file, dev=com4.txt"
            ]
        );
        assert!(text.contains("cpu: model=corei7_skylake_x, count=2,"));
    }

    #[test]
    fn only_linux_tables_get_the_faster_clock() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let ips = |table: &str| {
            let table = crate::table::load(&root.join(table).canonicalize().unwrap()).unwrap();
            instructions_per_second(&table)
        };
        for table in [
            "partitions/demo.toml",
            "partitions/irq-demo.toml",
            "partitions/irq-timer.toml",
            "partitions/longmode.toml",
            "partitions/restart.toml",
        ] {
            assert_eq!(ips(table), IPS, "{table}");
        }
        assert_eq!(ips("partitions/linux-rt-bochs.toml"), LINUX_IPS);
        // A table that cannot be read (the unit tests' made-up paths) keeps the default.
        assert_eq!(instructions_per_second(&demo_table()), IPS);
    }

    #[test]
    fn ram_covers_the_table_with_room_for_the_firmware() {
        let mut table = demo_table();
        assert_eq!(megabytes(&table), 512);
        // RAM right up to 512 MiB leaves no room for the BIOS' ACPI tables: one more granule.
        table.ram_end = 512 << 20;
        assert_eq!(megabytes(&table), 544);
        table.ram_end = 0;
        assert_eq!(megabytes(&table), 32);
    }

    #[test]
    fn streams_only_errors_and_the_exit_message() {
        assert!(is_message(
            "00065820445e[CPU0  ] RDMSR: Unknown register 0xc0010114"
        ));
        assert!(is_message(
            "00000000000p[      ] >>PANIC<< bochsrc:7: display library 'term' not available"
        ));
        assert!(is_message("Bochs is exiting with the following message:"));
        assert!(!is_message("00000000000i[MEM0  ] 512.00MB"));
        assert!(!is_message("e[CPU0] no timestamp"));
        assert!(!is_message("\u{1b}[H\u{1b}[J  Booting `Tessera'"));
    }

    #[test]
    fn finds_the_screen_terminal() {
        let terminal = "00000000000i[      ] installing term module as the Bochs GUI\n\
                        \nBochs connected to screen \"/dev/pts/5\"\nNext at t=0\n";
        assert_eq!(screen_device(terminal), Some("/dev/pts/5"));
        assert_eq!(
            screen_device("Bochs connected to screen \"/dev/pts/1"),
            None
        );
        assert_eq!(screen_device("Bochs connected to screen \"pts\""), None);
        assert_eq!(screen_device("Next at t=0"), None);
    }

    #[test]
    fn every_matrix_model_is_named_once() {
        let mut models: Vec<&str> = VMX_MODELS.to_vec();
        models.extend(REFUSING_MODELS.iter().map(|(model, _)| *model));
        let count = models.len();
        models.sort_unstable();
        models.dedup();
        assert_eq!(models.len(), count);
        assert!(VMX_MODELS.contains(&DEFAULT_CPU));
    }
}
