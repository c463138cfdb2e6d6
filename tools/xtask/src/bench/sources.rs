//! The figure sources of `cargo xtask bench`: the boots, and for each figure read from a
//! console the boot, the console and the line pattern. Adding such a figure is one entry
//! in [`CONSOLE_FIGURES`] (and, for a new table or emulator, one [`Boot`]); document it in
//! docs/benchmarks.md.

use super::console::{BenchEmulator, Boot, Console, ConsoleFigure, Value};
use crate::markers::Backend;

/// partitions/bench.toml (one core, one partition running `measure-exits=1000`) on QEMU.
pub const SVM_BENCH: Boot = Boot {
    id: "svm-bench",
    table: "partitions/bench.toml",
    emulator: BenchEmulator::Qemu,
    backend: Backend::Svm,
};

/// The same table on Bochs' default Intel model.
pub const VMX_BENCH: Boot = Boot {
    id: "vmx-bench",
    table: "partitions/bench.toml",
    emulator: BenchEmulator::Bochs,
    backend: Backend::Vmx,
};

/// The demo table (four cores, three partitions) on QEMU.
pub const SVM_DEMO: Boot = Boot {
    id: "svm-demo",
    table: "partitions/demo.toml",
    emulator: BenchEmulator::Qemu,
    backend: Backend::Svm,
};

/// The same table on Bochs' default Intel model: there the TSC counts each core's own
/// instructions, and a core's start-up costs what its trampoline runs (no charge for the
/// INIT, see `ap_start_instructions`).
pub const VMX_DEMO: Boot = Boot {
    id: "vmx-demo",
    table: "partitions/demo.toml",
    emulator: BenchEmulator::Bochs,
    backend: Backend::Vmx,
};

/// partitions/irq-timer.toml (one core: the 1 kHz timer loop, then power-off) on QEMU.
pub const SVM_IRQ_TIMER: Boot = Boot {
    id: "svm-irq-timer",
    table: "partitions/irq-timer.toml",
    emulator: BenchEmulator::Qemu,
    backend: Backend::Svm,
};

/// partitions/irq-pingpong.toml (two single-core partitions, 1000 doorbell round trips)
/// on QEMU.
pub const SVM_PINGPONG: Boot = Boot {
    id: "svm-pingpong",
    table: "partitions/irq-pingpong.toml",
    emulator: BenchEmulator::Qemu,
    backend: Backend::Svm,
};

/// The same table on Bochs' default Intel model.
pub const VMX_PINGPONG: Boot = Boot {
    id: "vmx-pingpong",
    table: "partitions/irq-pingpong.toml",
    emulator: BenchEmulator::Bochs,
    backend: Backend::Vmx,
};

/// partitions/failover.toml (a primary on com1 fails over to its hot standby while a third
/// partition beats) on QEMU.
pub const SVM_FAILOVER: Boot = Boot {
    id: "svm-failover",
    table: "partitions/failover.toml",
    emulator: BenchEmulator::Qemu,
    backend: Backend::Svm,
};

/// partitions/iommu.toml (the demo beside QEMU's AMD-Vi unit with interrupt remapping, the
/// worker taking UART interrupts through the I/O APIC's remapping entries) on QEMU.
pub const SVM_IOMMU: Boot = Boot {
    id: "svm-iommu",
    table: "partitions/iommu.toml",
    emulator: BenchEmulator::Qemu,
    backend: Backend::Svm,
};

/// The guest's `measure-exits` line (userland/demo): `measure: rounds=<n>
/// cpuid-exit-min=<tsc> cpuid-exit-mean=<tsc> hypercall-min=<tsc> hypercall-mean=<tsc>
/// icr-exit-min=<tsc> icr-exit-mean=<tsc>` (the last two with `measure-exits=<n>,<apic id>`).
const CPUID_MIN: &str = r"^measure: .*\bcpuid-exit-min=(?P<value>\d+)\b";
const HYPERCALL_MIN: &str = r"^measure: .*\bhypercall-min=(?P<value>\d+)\b";
const ICR_MIN: &str = r"^measure: .*\bicr-exit-min=(?P<value>\d+)\b";
const ICR_METHOD: &str = "guest-timed x2APIC ICR write (WRMSR 0x830) of a fixed IPI to APIC \
    ID 1, a core outside the partition: intercepted, run through the ICR filter and dropped \
    (counted in `dropped-ipis`), so the round trip is exactly the hypervisor's path of one \
    filtered ICR write; minimum over 1000 rounds of RDTSC before/after minus two \
    back-to-back RDTSCs, TSC = instructions (`icr-exit-min` of the measure line)";
/// The timer loop's result line (userland/demo `timer-loop`): `timer: ticks=<n>
/// period=<tsc> max-jitter=<tsc> exits-during-loop=<n>`.
const TIMER_LINE: &str = r"^timer: ticks=(?P<ticks>\d+) period=\d+ max-jitter=(?P<jitter>\d+) exits-during-loop=(?P<exits>\d+)\b";
/// The pinger's result line (userland/demo `ping`): `ping-pong: rounds=<n>
/// round-trip-min=<tsc> round-trip-mean=<tsc> exits-during=<n>`.
const PING_LINE: &str = r"^ping-pong: rounds=(?P<rounds>\d+) round-trip-min=(?P<value>\d+) round-trip-mean=\d+ exits-during=(?P<exits>\d+)\b";

/// The hypervisor's boot lines the boot figures read (hypervisor/src/boot.rs,
/// hypervisor/src/runtime).
const FIRST_GUEST_ENTRY: &str =
    r"^boot: first guest entry (?P<value>\d+) TSC ticks after the hypervisor's entry";
const EVERY_PARTITION_ENTERED: &str = r"^boot: every partition entered its guest (?P<value>\d+) TSC ticks after the hypervisor's entry";
const BOOT_PHASES: &str = r"^boot: phases \(TSC ticks\) checks=(?P<checks>\d+) digests=(?P<digests>\d+) tsc-rate=(?P<rate>\d+) .*\bstage2-tables=(?P<tables>\d+) partition-setup=(?P<loads>\d+) clear-channels=(?P<channels>\d+) ";
const HYPERVISOR_BOOT_METHOD: &str = "the hypervisor's own share of the boot: the TSC at the \
    first guest entry minus the TSC at its first Rust instruction on the boot core (`boot: \
    first guest entry N TSC ticks after the hypervisor's entry`); TSC = instructions";
const BOOT_WORK_METHOD: &str = "the boot core's work before its first start-up IPI: the sum \
    of the phases checks, digests, tsc-rate, stage2-tables, partition-setup (permission maps, load checks) and clear-channels of \
    `boot: phases (TSC ticks) …` (each partition's RAM is cleared and its images copied by \
    the partition's own boot core, after this). The first guest entry is this, plus the \
    start-up of that partition's core (ap_start_instructions), plus that core's load of its \
    partition; TSC = instructions";
const ALL_PARTITIONS_METHOD: &str = "the TSC when the last partition loaded at boot enters its \
    guest minus the TSC at the hypervisor's first Rust instruction (`boot: every partition \
    entered its guest N TSC ticks after the hypervisor's entry`): the boot of the whole \
    machine, each partition's memory cleared by its own core; TSC = instructions";

/// A figure read from the hypervisor's console of a demo boot, in instructions (the boot
/// figures exist for both backends with the same pattern and method).
const fn boot_figure(
    name: &'static str,
    boot: &'static Boot,
    pattern: &'static str,
    value: Value,
    method: &'static str,
) -> ConsoleFigure {
    ConsoleFigure {
        name,
        boot,
        console: Console::Hypervisor,
        pattern,
        value,
        unit: "instructions",
        method,
    }
}

/// The loop's exits per second: it ticks at 1 kHz, so it lasted `ticks / 1000` s.
fn exits_per_second(captures: &regex::Captures) -> Option<f64> {
    let exits: f64 = captures.name("exits")?.as_str().parse().ok()?;
    let ticks: f64 = captures.name("ticks")?.as_str().parse().ok()?;
    (ticks > 0.0).then(|| exits * 1000.0 / ticks)
}

/// The largest deviation of a tick from the nominal period.
fn max_jitter(captures: &regex::Captures) -> Option<f64> {
    captures.name("jitter")?.as_str().parse().ok()
}

/// The boot core's phases before it starts the other cores, summed.
fn boot_core_work(captures: &regex::Captures) -> Option<f64> {
    ["checks", "digests", "rate", "tables", "loads", "channels"]
        .iter()
        .map(|name| captures.name(name)?.as_str().parse::<f64>().ok())
        .sum()
}

/// The pinger's exits over the exchange per doorbell it rang (one per round).
fn exits_per_ring(captures: &regex::Captures) -> Option<f64> {
    let exits: f64 = captures.name("exits")?.as_str().parse().ok()?;
    let rounds: f64 = captures.name("rounds")?.as_str().parse().ok()?;
    (rounds > 0.0).then(|| exits / rounds)
}
const EXIT_METHOD: &str = "guest-timed CPUID(0) round trip (intercepted, answered by the \
    hypervisor): minimum over 1000 rounds of RDTSC before/after minus two back-to-back \
    RDTSCs; the TSC counts instructions here, so this is the path length guest -> \
    hypervisor -> guest (`cpuid-exit-min` of the measure line)";
const HYPERCALL_METHOD: &str = "guest-timed PartitionCount hypercall round trip (the \
    cheapest hypercall): minimum over 1000 rounds of RDTSC before/after minus two \
    back-to-back RDTSCs; TSC = instructions (`hypercall-min` of the measure line)";

/// Every figure read from a console line, in the order they are reported.
pub const CONSOLE_FIGURES: &[ConsoleFigure] = &[
    ConsoleFigure {
        name: "svm_exit_round_trip_instructions",
        boot: &SVM_BENCH,
        console: Console::Partition("bench"),
        pattern: CPUID_MIN,
        value: Value::Group,
        unit: "instructions",
        method: EXIT_METHOD,
    },
    ConsoleFigure {
        name: "svm_hypercall_round_trip_instructions",
        boot: &SVM_BENCH,
        console: Console::Partition("bench"),
        pattern: HYPERCALL_MIN,
        value: Value::Group,
        unit: "instructions",
        method: HYPERCALL_METHOD,
    },
    ConsoleFigure {
        name: "vmx_exit_round_trip_instructions",
        boot: &VMX_BENCH,
        console: Console::Partition("bench"),
        pattern: CPUID_MIN,
        value: Value::Group,
        unit: "instructions",
        method: EXIT_METHOD,
    },
    ConsoleFigure {
        name: "vmx_hypercall_round_trip_instructions",
        boot: &VMX_BENCH,
        console: Console::Partition("bench"),
        pattern: HYPERCALL_MIN,
        value: Value::Group,
        unit: "instructions",
        method: HYPERCALL_METHOD,
    },
    ConsoleFigure {
        name: "hypervisor_memory_kib",
        boot: &SVM_DEMO,
        console: Console::Hypervisor,
        pattern: r"^hypervisor memory: (?P<value>\d+) KiB used\b",
        value: Value::Group,
        unit: "KiB",
        method: "the hypervisor's own report at boot (`hypervisor memory: N KiB used`): \
                 image plus static state (per-core state, permission maps, stage-2 table \
                 pool) for the demo table",
    },
    ConsoleFigure {
        name: "boot_to_first_guest_instructions",
        boot: &SVM_DEMO,
        console: Console::Hypervisor,
        pattern: r"^started: partition=\S+ .*\btsc=(?P<value>\d+) \(first guest instruction\)",
        value: Value::Group,
        unit: "instructions",
        method: "the TSC the hypervisor prints when it enters the first guest (`started: … \
                 (first guest instruction)`); under -icount the TSC counts instructions \
                 from machine reset, so this includes SeaBIOS and the Multiboot load, not \
                 only the hypervisor's boot",
    },
    boot_figure(
        "hypervisor_boot_instructions",
        &SVM_DEMO,
        FIRST_GUEST_ENTRY,
        Value::Group,
        HYPERVISOR_BOOT_METHOD,
    ),
    boot_figure(
        "vmx_hypervisor_boot_instructions",
        &VMX_DEMO,
        FIRST_GUEST_ENTRY,
        Value::Group,
        HYPERVISOR_BOOT_METHOD,
    ),
    ConsoleFigure {
        name: "ap_start_instructions",
        boot: &SVM_DEMO,
        console: Console::Hypervisor,
        pattern: r"^boot: core 1 ran its first 64-bit instruction (?P<value>\d+) TSC ticks after its start-up IPI",
        value: Value::Group,
        unit: "instructions",
        method: "the TSC core 1 reads in the start-up trampoline, once in 64-bit mode, minus the \
                 TSC the boot core read before sending it the start-up IPI (`boot: core 1 ran \
                 its first 64-bit instruction N TSC ticks after its start-up IPI`): part of \
                 hypervisor_boot_instructions, since core 1's partition is the first to enter \
                 its guest. The trampoline is about 40 instructions; the rest is QEMU's \
                 -icount charging the core's whole instruction budget (up to the next timer \
                 deadline) when it processes the INIT (docs/benchmarks.md)",
    },
    boot_figure(
        "hypervisor_boot_work_instructions",
        &SVM_DEMO,
        BOOT_PHASES,
        Value::Computed(boot_core_work),
        BOOT_WORK_METHOD,
    ),
    boot_figure(
        "vmx_hypervisor_boot_work_instructions",
        &VMX_DEMO,
        BOOT_PHASES,
        Value::Computed(boot_core_work),
        BOOT_WORK_METHOD,
    ),
    boot_figure(
        "hypervisor_boot_all_partitions_instructions",
        &SVM_DEMO,
        EVERY_PARTITION_ENTERED,
        Value::Group,
        ALL_PARTITIONS_METHOD,
    ),
    boot_figure(
        "vmx_hypervisor_boot_all_partitions_instructions",
        &VMX_DEMO,
        EVERY_PARTITION_ENTERED,
        Value::Group,
        ALL_PARTITIONS_METHOD,
    ),
    ConsoleFigure {
        name: "demo_exits_{partition}",
        boot: &SVM_DEMO,
        console: Console::Hypervisor,
        pattern: r"^exits: partition=(?P<partition>[a-z0-9-]+) .*\btotal=(?P<value>\d+)\b",
        value: Value::Group,
        unit: "exits",
        method: "the partition's VM-exit count over the whole demo run (`total=` of its \
                 `exits: partition=…` line, printed at power-off)",
    },
    // Issue 5: interrupts, IPIs and doorbells.
    ConsoleFigure {
        name: "steady_exits_per_second",
        boot: &SVM_IRQ_TIMER,
        console: Console::Partition("timer"),
        pattern: TIMER_LINE,
        value: Value::Computed(exits_per_second),
        unit: "exits/s",
        method: "the timer partition's VM exits while it runs a 1 kHz local APIC timer loop \
                 with compute between ticks (1000 ticks, after boot): `exits-during-loop` \
                 (OwnExitCount read before and after the loop, the second read not \
                 counted) divided by the loop's length, ticks / 1000 s; the goal is 0",
    },
    ConsoleFigure {
        name: "timer_jitter_instructions",
        boot: &SVM_IRQ_TIMER,
        console: Console::Partition("timer"),
        pattern: TIMER_LINE,
        value: Value::Computed(max_jitter),
        unit: "instructions",
        method: "largest deviation of the interval between two ticks of the 1 kHz local \
                 APIC timer loop from its nominal period (TSC at each tick handler's entry; \
                 `max-jitter` of the timer line); TSC = instructions",
    },
    ConsoleFigure {
        name: "exits_per_doorbell",
        boot: &SVM_PINGPONG,
        console: Console::Partition("ping"),
        pattern: PING_LINE,
        value: Value::Computed(exits_per_ring),
        unit: "exits",
        method: "the pinger's VM exits over 1000 doorbell round trips (OwnExitCount before \
                 and after, the second read not counted: `exits-during` of the ping-pong \
                 line) divided by the doorbells it rang in that time (one per round: \
                 RingDoorbell; HLT, the incoming doorbell interrupt and its EOI do not \
                 exit); the goal is 1",
    },
    ConsoleFigure {
        name: "doorbell_round_trip_instructions",
        boot: &VMX_PINGPONG,
        console: Console::Partition("ping"),
        pattern: PING_LINE,
        value: Value::Group,
        unit: "instructions",
        method: "guest-timed doorbell round trip between two partitions on two cores: the \
                 pinger writes a sequence number to the channel memory, rings \
                 (RingDoorbell hypercall -> the channel vector on the ponger's core), HLTs \
                 until the ponger has echoed it and rung back; minimum over 1000 rounds of \
                 RDTSC before/after (`round-trip-min` of the ping-pong line); TSC = \
                 retired instructions of the pinger's core",
    },
    ConsoleFigure {
        name: "ipi_exit_instructions",
        boot: &VMX_BENCH,
        console: Console::Partition("bench"),
        pattern: ICR_MIN,
        value: Value::Group,
        unit: "instructions",
        method: ICR_METHOD,
    },
    // Issue 15: hot-standby failover.
    ConsoleFigure {
        name: "failover_instructions",
        boot: &SVM_FAILOVER,
        console: Console::Partition("io"),
        pattern: r"^takeover: failover-ticks=(?P<value>\d+)\b",
        value: Value::Group,
        unit: "instructions",
        method: "from the TSC the primary reads just before its faulting access (stored in \
                 the channel it shares with its standby) to the TSC the standby reads just \
                 before its first access to the taken-over UART (`takeover: \
                 failover-ticks=` on com1): the stage-2 fault exit, the health decision, \
                 the NMI to the standby's core, the wait for the primary's core to stop, \
                 the moved ports' bits in both I/O permission maps, the IOAPIC pin handed over, the takeover \
                 vector delivered and the guest's handler; TSC = instructions of the whole \
                 machine (all four cores under -icount), not of one core",
    },
    // Issue 13: the IOMMU's steady state.
    ConsoleFigure {
        name: "iommu_iotlb_invalidations_after_boot",
        boot: &SVM_IOMMU,
        console: Console::Hypervisor,
        pattern: r"^iommu: invalidations .*\btranslation-since-boot=(?P<value>\d+)\b",
        value: Value::Group,
        unit: "invalidations",
        method: "the hypervisor's count at power-off of the commands that drop cached \
                 translations (AMD-Vi INVALIDATE_DEVTAB_ENTRY, INVALIDATE_IOMMU_PAGES, \
                 INVALIDATE_IOMMU_ALL; VT-d context-cache and IOTLB invalidations) issued \
                 after the unit's bring-up, over the whole run: the DMA domains are static, \
                 so the steady-state rate is this count over the run's length (0 per \
                 second when it is 0); the interrupt-entry invalidations (one per MSI or \
                 I/O APIC entry change) are printed beside it and not counted here",
    },
    ConsoleFigure {
        name: "svm_ipi_exit_instructions",
        boot: &SVM_BENCH,
        console: Console::Partition("bench"),
        pattern: ICR_MIN,
        value: Value::Group,
        unit: "instructions",
        method: ICR_METHOD,
    },
];

/// The demo table, whose image the figures of [`IMAGE_FIGURES`] are read from.
pub const IMAGE_TABLE: &str = "partitions/demo.toml";
/// `--only` name of all figures read from the image file.
pub const IMAGE_GROUP: &str = "image";
pub const IMAGE_BYTES: &str = "image_bytes";
pub const SVM_CODE_BYTES: &str = "svm_backend_code_bytes";
pub const VMX_CODE_BYTES: &str = "vmx_backend_code_bytes";
/// The figures read from the built image (no emulator).
pub const IMAGE_FIGURES: [&str; 3] = [IMAGE_BYTES, SVM_CODE_BYTES, VMX_CODE_BYTES];

/// `--only` name of the config crate's validation timings
/// (`tessera_config::bench::validation_figures`).
pub const VALIDATION_GROUP: &str = "validation";
