//! Interrupt latency (issue 14): the demo guest's `irq-latency` measurement from two
//! sources — the local APIC timer and an I/O APIC pin (the UART's transmit-empty
//! interrupt) — to its handler, once in a partition (`partitions/irq-latency.toml` under
//! Tessera) and once bare (the same guest ELF booted by QEMU's `-kernel` through its PVH
//! entry, with the partition's command line), both in the same deterministic QEMU; each
//! setup runs twice and must report the same numbers. The ratio partition / bare is the
//! figure with a goal (1.0: no hypervisor on the path).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regex::Regex;

use super::console::{differences, BenchEmulator, Boot, Console, ConsoleFigure, Value};
use super::report::Figure;
use crate::markers::Backend;
use crate::{image, process, qemu};

/// `--only` name of every figure of this measurement.
pub const GROUP: &str = "irq-latency";
/// The figure with the goal: the larger of the two sources' ratios.
pub const RATIO: &str = "interrupt_latency_ratio";
pub const TIMER_RATIO: &str = "interrupt_latency_timer_ratio";
pub const UART_RATIO: &str = "interrupt_latency_ioapic_ratio";
pub const TIMER_PARTITION: &str = "interrupt_latency_timer_partition_instructions";
pub const TIMER_BARE: &str = "interrupt_latency_timer_bare_instructions";
pub const UART_PARTITION: &str = "interrupt_latency_ioapic_partition_instructions";
pub const UART_BARE: &str = "interrupt_latency_ioapic_bare_instructions";
pub const NAMES: [&str; 7] = [
    RATIO,
    TIMER_RATIO,
    UART_RATIO,
    TIMER_PARTITION,
    TIMER_BARE,
    UART_PARTITION,
    UART_BARE,
];

/// The table of the partition runs.
const TABLE: &str = "partitions/irq-latency.toml";
/// The bare guest's command line: the partition's in that table without its `power-off`
/// (bare, the guest ends by stopping itself, a triple fault that ends QEMU).
const COMMAND_LINE: &str = "name=latency console=0x3f8 irq-latency=100,4";
/// A bare run that has not printed its line by then failed.
const BARE_SECONDS: u64 = 120;

const BOOT: Boot = Boot {
    id: "svm-irq-latency",
    table: TABLE,
    emulator: BenchEmulator::Qemu,
    backend: Backend::Svm,
};

/// The guest's result line (userland/demo `irq-latency`).
const TIMER_MIN: &str = r"^irq-latency: .*\btimer-min=(?P<value>\d+)\b";
const UART_MIN: &str = r"^irq-latency: .*\buart-min=(?P<value>\d+)\b";
const TIMER_METHOD: &str = "local APIC timer, one-shot at divisor 1 over 20000 ticks: the \
    handler's first RDTSC minus the RDTSC before the initial-count write minus the timer's \
    duration in TSC ticks (measured against the same timer); minimum over 100 rounds \
    (`timer-min` of the guest's irq-latency line); TSC = instructions";
const UART_METHOD: &str = "I/O APIC pin 4 (COM1's line): the UART's transmit-empty \
    interrupt, raised by the IER write that enables it while the transmit register is \
    empty; the handler's first RDTSC minus the RDTSC before that write; minimum over 100 \
    rounds (`uart-min` of the guest's irq-latency line); TSC = instructions";

const TIMER_FIGURE: ConsoleFigure = ConsoleFigure {
    name: TIMER_PARTITION,
    boot: &BOOT,
    console: Console::Partition("latency"),
    pattern: TIMER_MIN,
    value: Value::Group,
    unit: "instructions",
    method: TIMER_METHOD,
};
const UART_FIGURE: ConsoleFigure = ConsoleFigure {
    name: UART_PARTITION,
    boot: &BOOT,
    console: Console::Partition("latency"),
    pattern: UART_MIN,
    value: Value::Group,
    unit: "instructions",
    method: UART_METHOD,
};

/// The bare QEMU command line (after the program name): the partition run's machine and
/// deterministic mode (`qemu::arguments`), the guest ELF instead of the hypervisor, its
/// command line through `-append`, COM1 into `serial`.
pub fn bare_arguments(guest: &Path, serial: &Path) -> Vec<String> {
    [
        "-machine",
        "q35",
        "-accel",
        "tcg,one-insn-per-tb=on",
        "-cpu",
        qemu::DEFAULT_CPU,
        "-smp",
        "1",
        "-m",
        "512",
        "-kernel",
    ]
    .iter()
    .map(|argument| argument.to_string())
    .chain([
        guest.display().to_string(),
        "-append".into(),
        COMMAND_LINE.into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", serial.display()),
        "-icount".into(),
        "shift=0,align=off,sleep=off".into(),
    ])
    .collect()
}

/// The two minima of the guest's line in `text`: (timer, uart).
fn read_line(text: &str) -> Option<(f64, f64)> {
    let read = |pattern: &str| {
        let pattern = Regex::new(pattern).ok()?;
        text.lines()
            .find_map(|line| pattern.captures(line.trim_end()))
            .and_then(|captures| captures.name("value")?.as_str().parse().ok())
    };
    Some((read(TIMER_MIN)?, read(UART_MIN)?))
}

/// One bare run: boots the guest, waits for its line (the guest then stops itself by a
/// triple fault, which ends QEMU under `-no-reboot`).
fn bare_run(root: &Path, guest: &Path, attempt: usize) -> Result<(f64, f64)> {
    let directory: PathBuf = image::target_directory(root)
        .join("tessera")
        .join("run")
        .join("irq-latency-bare");
    if directory.exists() {
        std::fs::remove_dir_all(&directory)?;
    }
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let serial = directory.join("com1.txt");
    let arguments = bare_arguments(guest, &serial);
    println!("== bench: {GROUP} bare, run {attempt} of 2");
    println!("running: {} {}", qemu::BINARY, arguments.join(" "));
    let log = File::create(directory.join("qemu.txt"))?;
    let mut command = Command::new(qemu::BINARY);
    command
        .args(&arguments)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    process::catch_interruptions();
    let mut child = process::spawn_group(&mut command).context("cannot start QEMU")?;
    let started = Instant::now();
    let result = loop {
        let text = std::fs::read_to_string(&serial).unwrap_or_default();
        if let Some(found) = read_line(&text) {
            break Ok(found);
        }
        if process::interrupted() {
            break Err(anyhow::anyhow!("interrupted"));
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&serial).unwrap_or_default();
            match read_line(&text) {
                Some(found) => break Ok(found),
                None => {
                    break Err(anyhow::anyhow!(
                        "QEMU exited ({status}) without an irq-latency line; the guest said: {}",
                        text.lines().last().unwrap_or("nothing")
                    ))
                }
            }
        }
        if started.elapsed() > Duration::from_secs(BARE_SECONDS) {
            break Err(anyhow::anyhow!(
                "no irq-latency line within {BARE_SECONDS} s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    process::stop_group(&mut child)?;
    result
}

fn ratio(partition: f64, bare: f64) -> Result<f64> {
    if bare <= 0.0 {
        bail!("the bare latency is {bare}: no ratio");
    }
    Ok(partition / bare)
}

/// Every figure of [`NAMES`], or why they cannot be had.
pub fn measure(root: &Path) -> Result<Vec<(String, Figure)>, Vec<String>> {
    let partition = super::measure_boot(root, &BOOT, &[&TIMER_FIGURE, &UART_FIGURE])?;
    let value = |name: &str| {
        partition
            .iter()
            .find(|(_, found, _)| found == name)
            .map(|(_, _, value)| *value)
    };
    let (Some(timer_partition), Some(uart_partition)) =
        (value(TIMER_PARTITION), value(UART_PARTITION))
    else {
        return Err(vec![format!("{GROUP}: the partition run has no figures")]);
    };
    // The partition run built the guest.
    let guest = image::target_directory(root)
        .join("x86_64-unknown-none")
        .join("release")
        .join("tessera-demo");
    let mut bare = Vec::new();
    for attempt in 1..=2 {
        match bare_run(root, &guest, attempt) {
            Ok(found) => bare.push(found),
            Err(error) => return Err(vec![format!("{GROUP}: bare run {attempt}: {error:#}")]),
        }
    }
    let as_list = |(timer, uart): (f64, f64)| {
        vec![
            (TIMER_BARE.to_string(), timer),
            (UART_BARE.to_string(), uart),
        ]
    };
    let disagreement = differences(&as_list(bare[0]), &as_list(bare[1]));
    if !disagreement.is_empty() {
        return Err(disagreement
            .into_iter()
            .map(|difference| {
                format!(
                    "{GROUP}: bench runs are deterministic and report the same numbers twice, \
                     but the bare runs differ: {difference}"
                )
            })
            .collect());
    }
    let (timer_bare, uart_bare) = bare[0];
    let ratios = (|| -> Result<(f64, f64)> {
        Ok((
            ratio(timer_partition, timer_bare)?,
            ratio(uart_partition, uart_bare)?,
        ))
    })();
    let (timer_ratio, uart_ratio) = ratios.map_err(|error| vec![format!("{GROUP}: {error:#}")])?;
    let partition_run = BOOT.describe();
    let bare_run = format!(
        "the demo guest ELF booted bare by QEMU -kernel (PVH entry) with the partition's \
         command line but `power-off`, same QEMU flags (q35, {}, one core, TCG one-insn-per-tb, -icount \
         shift=0,align=off,sleep=off); same value in two runs",
        qemu::DEFAULT_CPU
    );
    let figure = |value: f64, unit: &str, method: String| Figure {
        value,
        unit: unit.into(),
        method,
    };
    Ok(vec![
        (
            TIMER_PARTITION.into(),
            figure(
                timer_partition,
                "instructions",
                format!("{TIMER_METHOD}; {partition_run}"),
            ),
        ),
        (
            UART_PARTITION.into(),
            figure(
                uart_partition,
                "instructions",
                format!("{UART_METHOD}; {partition_run}"),
            ),
        ),
        (
            TIMER_BARE.into(),
            figure(
                timer_bare,
                "instructions",
                format!("{TIMER_METHOD}; {bare_run}"),
            ),
        ),
        (
            UART_BARE.into(),
            figure(
                uart_bare,
                "instructions",
                format!("{UART_METHOD}; {bare_run}"),
            ),
        ),
        (
            TIMER_RATIO.into(),
            figure(
                timer_ratio,
                "ratio",
                format!("{TIMER_PARTITION} / {TIMER_BARE}"),
            ),
        ),
        (
            UART_RATIO.into(),
            figure(
                uart_ratio,
                "ratio",
                format!("{UART_PARTITION} / {UART_BARE}"),
            ),
        ),
        (
            RATIO.into(),
            figure(
                timer_ratio.max(uart_ratio),
                "ratio",
                format!(
                    "the larger of {TIMER_RATIO} and {UART_RATIO}: interrupt latency to the \
                     guest's handler in a partition over the same bare, from the local APIC \
                     timer and from an I/O APIC pin"
                ),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_guest_line() {
        let text = "partition latency: hello from core 0\n\
                    irq-latency: rounds=100 timer-min=41 timer-max=44 uart-min=57 uart-max=60 \
                    tsc-per-timer-tick=1000000/1000000\n";
        assert_eq!(read_line(text), Some((41.0, 57.0)));
        assert_eq!(read_line("irq-latency: rounds=100 timer-min=41\n"), None);
    }

    #[test]
    fn the_bare_machine_is_the_partition_runs_machine() {
        let arguments = bare_arguments(Path::new("demo"), Path::new("com1.txt")).join(" ");
        assert_eq!(
            arguments,
            format!(
                "-machine q35 -accel tcg,one-insn-per-tb=on -cpu {} -smp 1 -m 512 -kernel demo \
                 -append {COMMAND_LINE} -display none -no-reboot -monitor none -serial \
                 file:com1.txt -icount shift=0,align=off,sleep=off",
                qemu::DEFAULT_CPU
            )
        );
    }

    #[test]
    fn the_table_gives_the_partition_the_bare_command_line() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join(TABLE)).unwrap();
        assert!(text.contains(&format!("cmdline = \"{COMMAND_LINE} power-off\"")));
    }
}
