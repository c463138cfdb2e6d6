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

/// The guest's `measure-exits` line (userland/demo): `measure: rounds=<n>
/// cpuid-exit-min=<tsc> cpuid-exit-mean=<tsc> hypercall-min=<tsc> hypercall-mean=<tsc>`.
const CPUID_MIN: &str = r"^measure: .*\bcpuid-exit-min=(?P<value>\d+)\b";
const HYPERCALL_MIN: &str = r"^measure: .*\bhypercall-min=(?P<value>\d+)\b";
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
    // Issue 5 (interrupts, doorbells) adds here, each with a boot of its table:
    //   steady_exits_per_second           timer-loop partition, `timer: … exits-during-loop=<n>`
    //                                     over the loop's length (a Value::Computed rate)
    //   exits_per_doorbell                ping-pong exits / rounds
    //   doorbell_round_trip_instructions  `ping-pong: … round-trip-min=<tsc>`, Bochs VMX
    //   ipi_exit_instructions             a guest-timed filtered ICR write, Bochs VMX
    //   timer_jitter_instructions         `timer: … max-jitter=<tsc>`, QEMU -icount
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
