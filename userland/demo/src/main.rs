//! The demo guest: one ELF, run in several partitions, each told by its command line
//! what to show.
//!
//! Always: a banner with the core it runs on, whether it runs on Tessera, the RAM the
//! memory map gives it, and a write-then-verify walk over all of that RAM (except its
//! own image and the loader's boot data). The runtime reads `console=0x<port>` (the
//! UART) and `uart-irq=<pin>` (interrupt-driven output through that I/O APIC pin;
//! polled without it). Then, by command-line word, in this order:
//!
//! * `measure-exits=<N>[,<apic id>]`: time N round trips of two exits the hypervisor
//!   handles (CPUID and a hypercall) with RDTSC and print `measure: rounds=<N>
//!   cpuid-exit-min=… cpuid-exit-mean=… hypercall-min=… hypercall-mean=…` (under the
//!   deterministic emulator modes the TSC counts instructions, so the figures are path
//!   lengths); with an APIC ID of a core outside the partition also N x2APIC ICR writes of
//!   a fixed IPI to it (dropped by the hypervisor), appended as `icr-exit-min=…
//!   icr-exit-mean=…`;
//! * `probe-outside=0x<address>`: read a guest-physical address outside its memory; the
//!   hypervisor must stop the partition (exit status 2 if the read returns);
//! * `pci-scan`, `pci-ecam=<base>`, `pci-bist=<bdf>`, `pci-edu=<bdf>`,
//!   `pci-bar-read=<bdf>,<offset>`: the partition's PCI bus, enumerated and driven (see
//!   `pci.rs`; status 13 when `edu` answers wrongly);
//! * `start-core=<apic id>`: start that core of the same partition by INIT-SIPI-SIPI;
//!   it prints `core <id> up`, runs a small loop and sets a flag, on which this core
//!   waits and prints `second core started` (status 7 on failure);
//! * `nmi-ipi` (with `start-core`): the started core installs an NMI handler before it
//!   sets its flag and then waits for an NMI; this core sends it one NMI IPI (x2APIC ICR,
//!   delivery mode NMI, physical destination); the started core prints `core <id>
//!   received NMI`, and this core, having waited for that, `nmi-ipi: delivered` (or
//!   `nmi-ipi: NOT delivered …`, status 10);
//! * `long-mode=<apic id>`: the textbook switch into long mode (32-bit protected mode,
//!   paging off → CR4.PAE, CR3, EFER.LME, one MOV to CR0 setting PG with NE, WP, AM, MP,
//!   ET) on this core after leaving long mode, and on core `<apic id>` of the partition
//!   started by INIT-SIPI-SIPI, whose trampoline makes that same CR0 write; then on each
//!   core leave long mode and enter it again. Prints `long-mode: core <n> entered: cr0=…
//!   cr4=… efer=… lma=1 64-bit=ok`, `… left: cr0=… efer=… lma=0`, `… re-entered: …` and
//!   `long-mode: core <n> ok` per core, then `long-mode: every core ok` (status 11 on
//!   failure; see `long_mode.rs`);
//! * `attack-ipi=<apic id>`: send a fixed IPI (vector 0xee), an NMI and an INIT to a core
//!   of another partition, then print `attack-ipi: sent` (the hypervisor must drop them;
//!   the victim treats vector 0xee or an NMI as unexpected and would stop with status 6);
//! * `attack-ioapic=<pin>[,<own pin>,<foreign apic id>]`: try to route a pin this
//!   partition does not own to itself, and (optionally) one of its own pins to a core
//!   outside it; print `attack-ioapic: pin <p> …read-back=…` per attempt and then
//!   `attack-ioapic: refused` or `attack-ioapic: ACCEPTED` (status 2 on Tessera);
//! * `timer-loop=<milliseconds>`: run the local APIC timer at 1 kHz (periodic; the second
//!   half in TSC-deadline mode if CPUID 1 ECX bit 24 offers it) with compute between
//!   ticks; print `timer: tsc-hz=… apic-timer-hz=… periodic-ticks=… tsc-deadline-ticks=…`
//!   and `timer: ticks=<n> period=<tsc> max-jitter=<tsc> exits-during-loop=<n>`, the
//!   exits counted with OwnExitCount (`n/a` without Tessera; status 8 on failure); with
//!   `heartbeat=<ticks>` the loop also prints `timer: heartbeat <n> ticks=<t>
//!   max-jitter-so-far=<tsc>` every `<ticks>` ticks, `<n>` counting from 1 (into the
//!   partition's own UART: no VM exit);
//! * `irq-latency=<rounds>[,<pin>]`: time `rounds` interrupts from the local APIC timer
//!   and from the console UART's transmit-empty interrupt through I/O APIC pin `<pin>`
//!   (default 4) to their handlers; print `irq-latency: rounds=<n> timer-min=<tsc>
//!   timer-max=<tsc> uart-min=<tsc> uart-max=<tsc> tsc-per-timer-tick=<tsc>/<ticks>`
//!   (status 14 on failure; see `latency.rs`);
//! * `ping=<channel>,<rounds>`: doorbell ping-pong over channel `<channel>` (table
//!   order): wait for the peer's ready mark, then `rounds` times write a sequence number,
//!   ring, HLT until the answer; print `ping-pong: rounds=<n> round-trip-min=<tsc>
//!   round-trip-mean=<tsc> exits-during=<n>`, the last the exits of this partition over the
//!   `rounds` round trips (OwnExitCount before and after, the second read not counted; one
//!   per ring is the goal) (status 9 on failure);
//! * `pong=<channel>`: answer pings until the pinger says it is finished; print
//!   `pong: answered <n>` (status 9 on failure);
//! * `reset`: print `resetting`, then ask the chipset for a reset (OUT 0x06 to port 0xCF9);
//!   Tessera restarts the partition (`on-fault = "restart"`, up to its restart limit) or
//!   stops it (status 12 if the write returns);
//! * `pci-dma=<bdf>,<address>…`: DMA by an `edu` device at each address (see `dma.rs`);
//! * `pci-forge-msi=<bdf>,<scratch>,<address>:<data>…`: the `edu` DMA-writes each 4-byte
//!   `data` to `address` — forged MSIs (see `dma.rs`);
//! * `count-vector=<vector>,<pin>` (early): count interrupts on `<vector>`, own pin `<pin>`
//!   routed here masked; after `wait-for-others` print `count-vector: vector=<v>
//!   received=<n>`;
//! * `recheck-walk` (after `wait-for-others`): verify the memory walk's pattern again;
//! * `wait-for-others`: wait until every other partition has stopped or faulted
//!   (status 3 on time-out);
//! * `declare-fatal=CODE`: declare a fatal error (hypercall), print what it returned;
//! * `beats=N`: N heartbeats, two per watchdog period, then silence forever;
//! * `failover-primary=<channel>,<lines>,<address>,<pause µs>` (before `probe-outside`):
//!   write `lines` lines `seq <n> from <name>` on its console UART (from 1 on its first
//!   boot, after the last acknowledged one after a restart), recording in channel
//!   `<channel>` each line the UART acknowledged (transmitter empty), then read `<address>`
//!   outside its memory (see `failover.rs`);
//! * `standby=<channel>,<vector>,<port>,<last>,<pause µs>,<pin>` (first of all, no
//!   banner): try to route IOAPIC pin `<pin>` (refused), wait halted for the takeover
//!   vector, route the pin again (now its own), then open the UART at `<port>` and write the lines
//!   after the primary's last acknowledged one up to `<last>`, print `takeover:
//!   failover-ticks=<n> …` and stop with status 0;
//! * `pair-pci=<dd.f>,<own RAM address>` (with `pair=`): the pair's `edu`, checked by each member
//!   while it waits (all-ones) and driven once it holds the devices (see `failover::pair`);
//! * `pair=<channel>,<vector>,<port>,<lines>,<last>,<address>,<pause µs>,<pin>[,<core>]` (first of
//!   all, no banner): a member of a pair that swaps roles (`rejoin-as-standby`): asks
//!   `standby-status`; waiting, it behaves as `standby=` until the takeover vector (or stops
//!   with status 0 on the doorbell once the pair wrote `<last>`); active, it writes
//!   `<lines>` more lines, then reads `<address>` (a fault: the failover), or stops with
//!   status 0 after ringing the doorbell if it wrote `<last>` (see `failover.rs`);
//! * `beat-until-others`: heartbeats, eight per watchdog period, until every other partition
//!   has stopped or faulted; print `heartbeats: <n> sent, every other partition done`;
//!   `beat-wait=<s>` bounds that wait to `<s>` seconds instead of about seven;
//! * `fault-by-boot=<kind>[,<kind>…]` (first of all): on boot `n` cause the `n`-th event,
//!   `ins` (INS from an unassigned port), `triple` (a triple fault), `npf` (a read outside
//!   its memory), `reset` (the reset register), `fatal` (`declare-fatal`) or `hang` (one
//!   heartbeat, then silence); past the list, stop with status 0 (see `failover.rs`);
//! * `read-health-log=<index>[,<index>…]`: read each partition's health log with the
//!   `health-log` hypercall and print `health-log <index>: restarts=<n> <event>=<count>…`;
//! * `declare-fatal-last=CODE` (after the above): declare a fatal error, print what it
//!   returned;
//! * `power-off`: power the machine off (status 4 if that fails);
//!
//! and otherwise `done`, exit status 0. Memory-walk mismatches stop with status 1; an
//! unexpected exception or interrupt with status 6 (the runtime).
#![no_std]
#![no_main]

mod channel;
mod dma;
mod failover;
mod interrupt_modes;
mod latency;
mod long_mode;
mod pci;

use tessera_abi::hypercall::{Call, PartitionState};
use tessera_guest::memory::{for_each_piece_outside, MemoryRange};
use tessera_guest::{boot, hypercall, println, processor, BootInfo};

tessera_guest::entry!(main);

/// Exit statuses, as reported through StopSelf.
const EXIT_MEMORY_MISMATCH: u64 = 1;
const EXIT_ISOLATION_BROKEN: u64 = 2;
const EXIT_WAIT_TIMED_OUT: u64 = 3;
const EXIT_POWER_OFF_FAILED: u64 = 4;
const EXIT_MEASURE_FAILED: u64 = 5;
// 6 is the runtime's: unexpected exception or interrupt.
const EXIT_CORE_START_FAILED: u64 = 7;
const EXIT_TIMER_FAILED: u64 = 8;
const EXIT_CHANNEL_FAILED: u64 = 9;
const EXIT_NMI_NOT_DELIVERED: u64 = 10;
const EXIT_LONG_MODE_FAILED: u64 = 11;
const EXIT_RESET_RETURNED: u64 = 12;
const EXIT_LATENCY_FAILED: u64 = 14;

/// How long to wait for the other partitions, in TSC ticks (about 7 s at 3 GHz; about
/// 20 billion guest instructions under the deterministic emulator modes).
const WAIT_TIMEOUT_TICKS: u64 = 20_000_000_000;
/// PAUSE iterations between two rounds of state queries: each query is a VM exit.
const WAIT_PAUSE_ITERATIONS: u32 = 100_000;
/// Pattern mixed into each word's address by the memory walk.
const WALK_PATTERN: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// At most this many ranges are left out of the memory walk.
const MAX_WALK_EXCLUSIONS: usize = 16;
/// The chipset's reset control register and the value that asks for a hard reset: bit 2
/// starts the reset, bit 1 makes it a system reset rather than a processor-only one (the
/// PCH's "Reset Control Register", I/O port 0xCF9; ACPI 6.5 §4.8.3.6 lets the FADT name it
/// as the reset register). Tessera emulates it for every partition and restarts or stops
/// only the partition that wrote it.
const RESET_CONTROL_PORT: u16 = 0xcf9;
const RESET_HARD: u8 = 0x06;
/// Vector of the IPIs `measure-exits` sends to a core outside the partition (dropped by
/// the hypervisor; no partition handles it).
const MEASURE_IPI_VECTOR: u8 = 0xee;

fn main(info: &BootInfo) {
    let command_line = info.command_line();
    if let Some(text) = command_line.value("fault-by-boot") {
        failover::fault_by_boot(command_line.number("tessera.restarts").unwrap_or(0), text);
    }
    // A standby holds no device until it takes over: nothing to print on, nothing to do.
    if let Some(text) = command_line.value("standby") {
        failover::standby(command_line.value("name").unwrap_or("standby"), text);
    }
    // A pair member may boot waiting (holding no device): it opens its console itself.
    if let Some(text) = command_line.value("pair") {
        failover::pair(
            info,
            command_line.value("name").unwrap_or("pair"),
            command_line.number("tessera.restarts").unwrap_or(0),
            text,
            command_line.value("pair-pci"),
        );
    }
    let core = processor::current_core();
    match command_line.value("name") {
        Some(name) => println!("partition {name}: hello from core {core}"),
        None => println!("hello from partition on core {core}"),
    }
    report_hypervisor();
    report_memory(info);
    walk_memory(info);
    if let Some(text) = command_line.value("count-vector") {
        dma::count_vector(text);
    }

    if let Some(text) = command_line.value("measure-exits") {
        measure_exits(text);
    }
    if let Some(text) = command_line.value("failover-primary") {
        failover::primary(
            command_line.value("name").unwrap_or("primary"),
            command_line.number("tessera.restarts").unwrap_or(0),
            text,
        );
    }
    if let Some(text) = command_line.value("probe-outside") {
        probe_outside(text);
    }
    pci::run(&command_line);
    if let Some(text) = command_line.value("pci-dma") {
        dma::run(text, info);
    }
    if let Some(text) = command_line.value("pci-forge-msi") {
        dma::forge_msi(text, info);
    }
    if let Some(text) = command_line.value("start-core") {
        interrupt_modes::start_core(info, text, command_line.has_flag("nmi-ipi"));
    }
    if let Some(text) = command_line.value("long-mode") {
        long_mode::run(info, text);
    }
    if let Some(text) = command_line.value("attack-ipi") {
        interrupt_modes::attack_ipi(text);
    }
    if let Some(text) = command_line.value("attack-ioapic") {
        interrupt_modes::attack_ioapic(text);
    }
    if let Some(text) = command_line.value("timer-loop") {
        interrupt_modes::timer_loop(text, command_line.value("heartbeat"));
    }
    if let Some(text) = command_line.value("irq-latency") {
        latency::run(text);
    }
    if let Some(text) = command_line.value("ping") {
        channel::ping(text);
    }
    if let Some(text) = command_line.value("pong") {
        channel::pong(text);
    }
    if let Some(code) = command_line.number("declare-fatal") {
        let result = hypercall::hypercall(Call::DeclareFatal, code, 0, 0);
        println!("declare-fatal returned {result}");
    }
    if let Some(beats) = command_line.number("beats") {
        heartbeats_then_silence(beats);
    }
    if command_line.has_flag("reset") {
        request_reset();
    }
    if command_line.has_flag("beat-until-others") {
        failover::beat_until_others(command_line.number("beat-wait"));
    }
    if let Some(text) = command_line.value("read-health-log") {
        failover::read_health_log(text);
    }
    if let Some(code) = command_line.number("declare-fatal-last") {
        let result = hypercall::hypercall(Call::DeclareFatal, code, 0, 0);
        println!("declare-fatal returned {result}");
    }
    if command_line.has_flag("wait-for-others") {
        wait_for_others();
    }
    dma::report_counted();
    if command_line.has_flag("recheck-walk") {
        recheck_walk(info);
    }
    if command_line.has_flag("power-off") {
        println!("powering off");
        let result = hypercall::power_off();
        println!(
            "power off failed: {result} ({})",
            hypercall::result_name(result)
        );
        hypercall::stop_self(EXIT_POWER_OFF_FAILED);
    }
    println!("done");
    hypercall::stop_self(0);
}

/// `beats=N`: N heartbeats, two per watchdog period, then silence (a hung guest): the
/// watchdog is to notice. Never returns.
fn heartbeats_then_silence(beats: u64) -> ! {
    let period = hypercall::hypercall(Call::Heartbeat, 0, 0, 0);
    println!("heartbeat: period={period} us");
    let half = (period.max(2) as u64) / 2;
    for _ in 1..beats {
        tessera_guest::time::delay_microseconds(half);
        hypercall::hypercall(Call::Heartbeat, 0, 0, 0);
    }
    println!("heartbeats: {beats} sent, now silent");
    loop {
        core::hint::spin_loop();
    }
}

fn report_hypervisor() {
    match processor::hypervisor_signature() {
        Some(_) if processor::running_on_tessera() => println!("hypervisor: Tessera"),
        Some(signature) => {
            let printable = signature.map(|byte| match byte {
                0x20..=0x7e => byte,
                _ => b'.',
            });
            let text = core::str::from_utf8(&printable).unwrap_or("?");
            println!("hypervisor: not Tessera (signature \"{text}\")");
        }
        None => println!("hypervisor: none detected"),
    }
}

fn report_memory(info: &BootInfo) {
    let mut total = 0;
    for entry in info.memory_map() {
        let range = entry.range;
        if entry.is_ram() {
            println!(
                "ram: {:#x}-{:#x} ({} KiB)",
                range.start,
                range.end,
                range.size() / 1024
            );
            total += range.size();
        } else {
            println!(
                "not ram: {:#x}-{:#x} (type {})",
                range.start, range.end, entry.kind
            );
        }
    }
    if info.memory_map_entries_dropped() != 0 {
        println!(
            "memory map: {} entries beyond the first {} ignored",
            info.memory_map_entries_dropped(),
            info.memory_map().len()
        );
    }
    println!("ram total: {} KiB", total / 1024);
}

/// The value the walk writes at `address`: different for every word, so aliased pages
/// (two guest-physical pages backed by one host page) show up as mismatches.
fn walk_pattern(address: u64) -> u64 {
    address ^ WALK_PATTERN
}

/// Calls `visit` with every 8-aligned piece of RAM the memory walk covers: the identity-
/// mapped RAM outside the image (code, data, page tables, stack) and the loader's data.
fn for_each_walk_piece(info: &BootInfo, visit: &mut dyn FnMut(MemoryRange)) {
    let mut exclusions = [MemoryRange::new(0, 0); MAX_WALK_EXCLUSIONS];
    let mut exclusion_count = 0;
    for range in
        core::iter::once(boot::image_range()).chain(info.boot_data_ranges().iter().copied())
    {
        if exclusion_count < MAX_WALK_EXCLUSIONS {
            exclusions[exclusion_count] = range;
            exclusion_count += 1;
        }
    }
    let exclusions = &exclusions[..exclusion_count];
    for ram in info.ram_ranges() {
        // Only the identity map is reachable; RAM above it is left alone.
        let reachable = ram.clip_below(boot::IDENTITY_MAP_END);
        for_each_piece_outside(reachable, exclusions, |piece| {
            let words = piece.shrink_to_alignment(8);
            if !words.is_empty() {
                visit(words);
            }
        });
    }
}

/// The first word of the walk that does not hold its pattern, with what it holds.
fn walk_mismatch(info: &BootInfo) -> Option<(u64, u64)> {
    let mut mismatch = None;
    for_each_walk_piece(info, &mut |piece| {
        if mismatch.is_some() {
            return;
        }
        for address in (piece.start..piece.end).step_by(8) {
            // SAFETY: the words the walk wrote: aligned, mapped, unaliased, and referred to
            // by nothing in this program.
            let value = unsafe { core::ptr::read_volatile(address as *const u64) };
            if value != walk_pattern(address) {
                mismatch = Some((address, value));
                return;
            }
        }
    });
    mismatch
}

/// Writes a per-address pattern to every RAM word the guest may touch, then reads all
/// of it back.
fn walk_memory(info: &BootInfo) {
    let mut bytes_written = 0;
    for_each_walk_piece(info, &mut |piece| {
        for address in (piece.start..piece.end).step_by(8) {
            // SAFETY: `address` is 8-aligned RAM that the memory map gives this guest,
            // below the identity map's end, and outside the image, the stack and the
            // loader's data: nothing in this program refers to it.
            unsafe { core::ptr::write_volatile(address as *mut u64, walk_pattern(address)) };
        }
        bytes_written += piece.size();
    });
    if let Some((address, value)) = walk_mismatch(info) {
        println!(
            "memory walk: MISMATCH at {address:#x}: read {value:#x}, wrote {:#x}",
            walk_pattern(address)
        );
        hypercall::stop_self(EXIT_MEMORY_MISMATCH);
    }
    println!(
        "memory walk: {} KiB written and verified",
        bytes_written / 1024
    );
}

/// `recheck-walk`: reads the memory walk's pattern again (after the other partitions ran:
/// a DMA or a write from outside would show); prints `memory recheck: intact` or the
/// first changed word.
fn recheck_walk(info: &BootInfo) {
    match walk_mismatch(info) {
        None => println!("memory recheck: intact"),
        Some((address, value)) => println!(
            "memory recheck: CHANGED at {address:#x}: read {value:#x}, wrote {:#x}",
            walk_pattern(address)
        ),
    }
}

/// Reads a word outside the partition's memory; the hypervisor must stop the partition.
fn probe_outside(text: &str) -> ! {
    let Some(address) = tessera_guest::command_line::parse_number(text) else {
        println!("probe-outside: cannot read the address {text:?}");
        hypercall::stop_self(EXIT_ISOLATION_BROKEN);
    };
    probe(address)
}

/// Reads `address`, which lies outside this partition's memory: the hypervisor must stop
/// the partition (exit status 2 if the read returns).
fn probe(address: u64) -> ! {
    if address.saturating_add(8) > boot::IDENTITY_MAP_END {
        println!("probe-outside: {address:#x} lies beyond the guest's identity map");
        hypercall::stop_self(EXIT_ISOLATION_BROKEN);
    }
    println!("probing {address:#x}, outside my memory; the hypervisor must stop me");
    let value: u64;
    // SAFETY: the address lies in the identity map of the first 4 GiB, so the load
    // cannot page-fault; it is a plain 8-byte read (no alignment requirement for MOV)
    // that changes no memory. Whatever backs the address — nothing, another partition's
    // memory or device — the guest only reads it, and the hypervisor is expected to stop
    // the partition before the value arrives.
    unsafe {
        core::arch::asm!(
            "mov {value}, qword ptr [{address}]",
            address = in(reg) address,
            value = lateout(reg) value,
            options(nostack, readonly, preserves_flags),
        );
    }
    println!("probe returned {value:#x}: isolation broken!");
    hypercall::stop_self(EXIT_ISOLATION_BROKEN);
}

/// Asks for a reset of the machine, which under Tessera is a reset of this partition.
pub(crate) fn request_reset() -> ! {
    println!("resetting");
    tessera_guest::console::flush();
    // SAFETY: an OUT to the reset control register touches no memory of this program;
    // under Tessera it ends this run of the partition, on a machine it resets the machine,
    // which is what the command line asked for.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") RESET_CONTROL_PORT, in("al") RESET_HARD,
            options(nomem, nostack, preserves_flags));
    }
    println!("reset request returned");
    hypercall::stop_self(EXIT_RESET_RETURNED)
}

/// Waits until all partitions but this one are in a final state (Stopped or Faulted).
///
/// The guest does not know its own index, but its own state is Running while it asks:
/// so the others are done when exactly one partition is not final.
fn wait_for_others() {
    let count = hypercall::partition_count();
    if count < 0 {
        println!(
            "partition count failed: {count} ({})",
            hypercall::result_name(count)
        );
        hypercall::stop_self(EXIT_WAIT_TIMED_OUT);
    }
    let count = count as u64;
    println!("waiting for {} partitions", count.saturating_sub(1));
    let started = processor::rdtsc();
    loop {
        let mut not_final = 0;
        for index in 0..count {
            let result = hypercall::partition_state(index);
            if result < 0 {
                println!(
                    "partition state of {index} failed: {result} ({})",
                    hypercall::result_name(result)
                );
                hypercall::stop_self(EXIT_WAIT_TIMED_OUT);
            }
            let is_final =
                PartitionState::from_number(result as u64).is_some_and(PartitionState::is_final);
            if !is_final {
                not_final += 1;
            }
        }
        if not_final <= 1 {
            println!("all other partitions stopped");
            return;
        }
        if processor::rdtsc().wrapping_sub(started) > WAIT_TIMEOUT_TICKS {
            println!("timed out waiting for other partitions");
            hypercall::stop_self(EXIT_WAIT_TIMED_OUT);
        }
        processor::pause(WAIT_PAUSE_ITERATIONS);
    }
}

/// Cost of one run of `operation`, in TSC ticks: the minimum and the mean over `rounds`,
/// each minus the cost of timing nothing (two back-to-back RDTSCs).
fn time_round_trips(rounds: u64, mut operation: impl FnMut()) -> (u64, u64) {
    let mut baseline = u64::MAX;
    for _ in 0..16 {
        let start = processor::rdtsc();
        let end = processor::rdtsc();
        baseline = baseline.min(end.wrapping_sub(start));
    }
    let mut minimum = u64::MAX;
    let mut total = 0u64;
    for _ in 0..rounds {
        let start = processor::rdtsc();
        operation();
        let elapsed = processor::rdtsc()
            .wrapping_sub(start)
            .saturating_sub(baseline);
        minimum = minimum.min(elapsed);
        total = total.wrapping_add(elapsed);
    }
    (minimum, total / rounds.max(1))
}

/// Times exits the hypervisor handles: CPUID (intercepted, answered from the policy), the
/// cheapest hypercall (PartitionCount) and, with `,<apic id>` of a core outside the
/// partition, an x2APIC ICR write (WRMSR 0x830) of a fixed IPI to it, which the hypervisor
/// filters out and drops: the whole round trip is the exit path.
fn measure_exits(text: &str) {
    let (rounds_text, foreign_core) = match text.split_once(',') {
        Some((rounds, core)) => (rounds, Some(core)),
        None => (text, None),
    };
    let Some(rounds) = tessera_guest::command_line::parse_number(rounds_text).filter(|&n| n > 0)
    else {
        println!("measure-exits: cannot read the round count {text:?}");
        hypercall::stop_self(EXIT_MEASURE_FAILED);
    };
    let foreign_core = foreign_core.map(|core| {
        match tessera_guest::command_line::parse_number(core)
            .and_then(|core| u32::try_from(core).ok())
        {
            Some(core) => core,
            None => {
                println!("measure-exits: cannot read the APIC ID {core:?}");
                hypercall::stop_self(EXIT_MEASURE_FAILED);
            }
        }
    });
    let (cpuid_minimum, cpuid_mean) = time_round_trips(rounds, || {
        core::hint::black_box(core::arch::x86_64::__cpuid(0));
    });
    let (hypercall_minimum, hypercall_mean) = time_round_trips(rounds, || {
        core::hint::black_box(hypercall::partition_count());
    });
    let Some(foreign_core) = foreign_core else {
        println!(
            "measure: rounds={rounds} cpuid-exit-min={cpuid_minimum} cpuid-exit-mean={cpuid_mean} hypercall-min={hypercall_minimum} hypercall-mean={hypercall_mean}"
        );
        return;
    };
    let apic = match tessera_guest::x2apic::enable() {
        Ok(apic) => apic,
        Err(error) => {
            println!("measure-exits: cannot use the x2APIC: {error:?}");
            hypercall::stop_self(EXIT_MEASURE_FAILED);
        }
    };
    if foreign_core == apic.id() {
        println!("measure-exits: core {foreign_core} is this core, not one outside the partition");
        hypercall::stop_self(EXIT_MEASURE_FAILED);
    }
    let (icr_minimum, icr_mean) = time_round_trips(rounds, || {
        apic.send_ipi(
            foreign_core,
            tessera_guest::x2apic::DeliveryMode::Fixed,
            MEASURE_IPI_VECTOR,
        );
    });
    println!(
        "measure: rounds={rounds} cpuid-exit-min={cpuid_minimum} cpuid-exit-mean={cpuid_mean} hypercall-min={hypercall_minimum} hypercall-mean={hypercall_mean} icr-exit-min={icr_minimum} icr-exit-mean={icr_mean}"
    );
}
