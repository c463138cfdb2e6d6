//! Hot-standby failover (docs/health.md, "Hot standby"): a primary that writes numbered
//! lines to its UART and records each one the UART has acknowledged in a channel shared
//! with its standby, then crashes; a standby that waits, halted, for the takeover vector,
//! then drives the same UART and continues after the last acknowledged line; and a third
//! partition whose heartbeat must not stop meanwhile.
//!
//! A line counts as acknowledged once the UART reports its transmitter empty (16550 line
//! status bit 6, TEMT: the holding register and the shift register are both empty), so
//! every acknowledged line has left the device; a line written but not acknowledged may be
//! written again by the standby (at least once, never lost).

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

use tessera_abi::hypercall::{Call, PartitionState};
use tessera_guest::command_line::parse_number;
use tessera_guest::ioapic::{self, RedirectionEntry};
use tessera_guest::BootInfo;
use tessera_guest::{console, hypercall, interrupts, println, processor, smp, time, x2apic};

use crate::EXIT_CHANNEL_FAILED;

/// The 16550's line status register (base + 5) and its transmitter-empty bit.
const LINE_STATUS: u16 = 5;
const TRANSMITTER_EMPTY: u8 = 1 << 6;
/// Polls of the line status before a line counts as not acknowledged.
const ACKNOWLEDGE_POLLS: u32 = 1_000_000;

/// The shared words: the number of the last line the UART acknowledged, the TSC the
/// primary read just before its crash (for the failover figure), and which pair member
/// waits as the standby.
#[repr(C, align(64))]
struct Progress {
    acknowledged: AtomicU64,
    crash_tsc: AtomicU64,
    /// `pair=`: the core number + 1 of the member that last became a waiting standby, so
    /// that the active member fails over only once its partner is ready to take over.
    standby_ready: AtomicU64,
}

/// Set by the takeover vector's handler.
static TAKEN_OVER: AtomicBool = AtomicBool::new(false);

fn takeover(_vector: u8) {
    TAKEN_OVER.store(true, Ordering::Release);
}

/// The comma-separated numbers of a command-line value.
fn numbers<const N: usize>(mode: &str, text: &str) -> [u64; N] {
    let mut values = [0u64; N];
    let mut parts = text.split(',');
    for value in values.iter_mut() {
        match parts.next().and_then(parse_number) {
            Some(number) => *value = number,
            None => {
                println!("{mode}: expected {N} comma-separated numbers, got {text:?}");
                hypercall::stop_self(EXIT_CHANNEL_FAILED)
            }
        }
    }
    values
}

/// The channel's shared memory as the progress word.
fn progress(mode: &str, channel: u64) -> &'static Progress {
    let address = hypercall::channel_address(channel);
    if address < 0 || !(address as u64).is_multiple_of(64) {
        println!("{mode}: channel {channel}: {address}");
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    // SAFETY: the hypervisor maps the channel's memory (whole 4 KiB pages) read-write into
    // this partition at `address` (64-aligned, checked), inside the identity map; the peer
    // writes it concurrently, which is why the word is atomic.
    unsafe { &*(address as *const Progress) }
}

/// Reads the UART's line status register.
fn line_status(port: u16) -> u8 {
    let value: u8;
    // SAFETY: IN from the UART's line status register has no side effect on memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port + LINE_STATUS, out("al") value,
            options(nomem, nostack, preserves_flags));
    }
    value
}

/// Whether the UART at `port` has sent everything it was given.
fn acknowledged_by_uart(port: u16) -> bool {
    (0..ACKNOWLEDGE_POLLS).any(|_| line_status(port) & TRANSMITTER_EMPTY != 0)
}

/// Writes lines `first..=last` as `seq <n> from <name>`, `pause` microseconds apart,
/// recording each the UART acknowledges.
fn write_lines(name: &str, port: u16, progress: &Progress, (first, last): (u64, u64), pause: u64) {
    for number in first..=last {
        time::delay_microseconds(pause);
        println!("seq {number} from {name}");
        if !acknowledged_by_uart(port) {
            println!("{name}: line {number} not acknowledged by the UART");
            hypercall::stop_self(EXIT_CHANNEL_FAILED);
        }
        progress.acknowledged.store(number, Ordering::Release);
    }
}

/// `failover-primary=<channel>,<lines>,<crash address>,<pause µs>`: `lines` lines,
/// `pause` apart, each after a heartbeat (a no-op without a watchdog), then a read of
/// `crash address` (outside its memory): the hypervisor's `memory-violation`; with crash
/// address 0 it hangs instead (spins without heartbeats: `watchdog-expiry`). On its first boot (`tessera.restarts=0`) it numbers from 1; after a
/// restart it continues after the last line the UART acknowledged (from the channel), as
/// its standby would.
pub fn primary(name: &str, restarts: u64, text: &str) -> ! {
    let [channel, lines, crash, pause] = numbers::<4>("failover-primary", text);
    let Some(port) = console::port() else {
        println!("failover-primary: needs console=0x…");
        hypercall::stop_self(EXIT_CHANNEL_FAILED)
    };
    let progress = progress("failover-primary", channel);
    if restarts == 0 {
        progress.acknowledged.store(0, Ordering::Release);
        progress.crash_tsc.store(0, Ordering::Release);
    }
    let first = progress.acknowledged.load(Ordering::Acquire) + 1;
    println!(
        "{name}: boot {restarts}, continuing after acknowledged line {}",
        first - 1
    );
    for number in first..first + lines {
        hypercall::hypercall(Call::Heartbeat, 0, 0, 0);
        write_lines(name, port, progress, (number, number), pause);
    }
    console::flush();
    progress
        .crash_tsc
        .store(processor::rdtsc(), Ordering::Release);
    if crash == 0 {
        println!("{name}: hanging (no more heartbeats)");
        loop {
            core::hint::spin_loop();
        }
    }
    crate::probe(crash)
}

/// A vector the standby routes its taken-over pin to (masked: no interrupt is expected).
const PIN_TEST_VECTOR: u8 = 0x50;

/// Routes `pin` to this core (masked) and reads it back: whether the write took effect.
fn route_pin(pin: u8) -> bool {
    let entry = RedirectionEntry::fixed(PIN_TEST_VECTOR, processor::current_core()).masked();
    ioapic::set_redirection_entry(pin, entry);
    ioapic::redirection_entry(pin) == entry
}

/// `standby=<channel>,<takeover vector>,<uart port>,<last line>,<pause µs>,<pin>`: no console
/// and no device until the takeover vector arrives (the UART is the primary's until then);
/// then open the UART, read where the primary stopped and write the lines after it up to
/// `last line`. Prints `takeover: failover-ticks=<n> crash-tsc=<t0>
/// first-device-access-tsc=<t1>`: from the TSC the primary read just before its faulting
/// access to the TSC just before the standby's first access to the taken-over UART. The
/// primary's IOAPIC pin `pin` is tried before the takeover (the hypervisor must refuse the
/// write) and after it (the entry must point at this core, masked, and take a new route).
pub fn standby(name: &str, text: &str) -> ! {
    let [channel, vector, port, last, pause, pin] = numbers::<6>("standby", text);
    let Ok(pin) = u8::try_from(pin) else {
        hypercall::stop_self(EXIT_CHANNEL_FAILED)
    };
    let routed_before = route_pin(pin);
    let progress = progress("standby", channel);
    let (Ok(vector), Ok(port)) = (u8::try_from(vector), u16::try_from(port)) else {
        hypercall::stop_self(EXIT_CHANNEL_FAILED)
    };
    if x2apic::enable().is_err() {
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    interrupts::set_handler(vector, takeover);
    processor::disable_interrupts();
    while !TAKEN_OVER.load(Ordering::Acquire) {
        processor::wait_for_interrupt();
    }
    let first_access = processor::rdtsc();
    console::open(port);
    let acknowledged = progress.acknowledged.load(Ordering::Acquire);
    println!(
        "{name}: took over at tsc={first_access}; the primary's last acknowledged line is {acknowledged}"
    );
    let crash = progress.crash_tsc.load(Ordering::Acquire);
    let handed_over = ioapic::redirection_entry(pin);
    let core = processor::current_core();
    let routed_after = route_pin(pin);
    println!(
        "{name}: ioapic pin {pin}: before takeover {}; after: masked={} destination={} (this core {core}), {}",
        if routed_before { "ROUTED (not refused)" } else { "refused" },
        handed_over.is_masked(),
        handed_over.destination(),
        if routed_after { "routed" } else { "NOT routed" }
    );
    write_lines(name, port, progress, (acknowledged + 1, last), pause);
    println!(
        "takeover: failover-ticks={} crash-tsc={crash} first-device-access-tsc={first_access}",
        first_access.wrapping_sub(crash)
    );
    println!("{name}: done");
    console::flush();
    hypercall::stop_self(0)
}

/// The channel doorbell's handler: the interrupt only wakes the waiting member, which
/// then reads the channel (the pair's last line was written).
fn doorbell(_vector: u8) {}

/// `pair=`'s UART, for its second core.
static PAIR_PORT: AtomicU16 = AtomicU16::new(0);
/// Set once the boot core holds the pair's devices: the second core may use the UART.
static PAIR_ACTIVE: AtomicBool = AtomicBool::new(false);
/// The UART line status the second core read, with bit 8 set once it has read it.
static SECOND_CORE_READ: AtomicU16 = AtomicU16::new(0);

/// `pair=`'s second core: runs in its guest until the boot core holds the devices (so a
/// takeover finds it running and must hold it in the hypervisor while the permission map
/// changes), then reads the UART's line status once — an access that must pass through —
/// and halts.
fn pair_second_core(_core: u32) {
    while !PAIR_ACTIVE.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let status = line_status(PAIR_PORT.load(Ordering::Acquire));
    SECOND_CORE_READ.store(0x100 | u16::from(status), Ordering::Release);
    loop {
        processor::halt();
    }
}

/// Lets the second core use the UART and prints what it read (bounded wait).
fn report_second_core(name: &str, core: u32) {
    PAIR_ACTIVE.store(true, Ordering::Release);
    let started = processor::rdtsc();
    loop {
        let read = SECOND_CORE_READ.load(Ordering::Acquire);
        if read & 0x100 != 0 {
            println!(
                "{name}: core {core} read the UART's line status {:#x}",
                read & 0xff
            );
            return;
        }
        if processor::rdtsc().wrapping_sub(started) > crate::WAIT_TIMEOUT_TICKS {
            println!("{name}: core {core} never read the UART");
            hypercall::stop_self(crate::EXIT_WAIT_TIMED_OUT);
        }
        core::hint::spin_loop();
    }
}

/// `pair=<channel>,<takeover vector>,<uart port>,<lines per turn>,<last line>,<crash
/// address>,<pause µs>,<pin>[,<second core>]`: with a second core (its x2APIC ID), that core
/// is started at boot and spins in its guest until this member holds the devices, then
/// reads the UART once (see `pair_second_core`). a member of a hot-standby pair that swaps roles at each
/// failover (`rejoin-as-standby`), so the same image boots in either role and asks the
/// hypervisor which (`standby-status`). Waiting: no console, no device; IOAPIC pin `pin`
/// must be refused; halt until the takeover vector (or the channel's doorbell once the pair
/// is done: stop with status 0). Active (at boot, or after a takeover, when `pin` must now
/// be routable): open the UART, write `lines per turn` lines after the last acknowledged
/// one, then read `crash address` (a memory violation: the failover); the member that
/// writes `last line` rings the doorbell and stops with status 0 instead.
///
/// With `pci` (`pair-pci=<dd.f>,<own RAM address>`, the pair's `edu`, docs/health.md "PCI
/// functions at a takeover"): a waiting member reads the function's ID through mechanism #1
/// (a standby holds no function: all-ones) and reports it after its takeover; a member that
/// holds the devices drives the `edu` (`pci::edu`) and has it DMA a pattern at the address
/// in its own RAM and read it back (`dma::run`: `write=landed read=pattern` only when the
/// function's DMA goes through this member's domain).
pub fn pair(info: &BootInfo, name: &str, restarts: u64, text: &str, pci: Option<&str>) -> ! {
    let [channel, vector, port, lines, last, crash, pause, pin] = numbers::<8>("pair", text);
    let (Ok(vector), Ok(port), Ok(pin)) =
        (u8::try_from(vector), u16::try_from(port), u8::try_from(pin))
    else {
        hypercall::stop_self(EXIT_CHANNEL_FAILED)
    };
    let second_core = text
        .split(',')
        .nth(8)
        .and_then(parse_number)
        .and_then(|core| u32::try_from(core).ok());
    let progress = progress("pair", channel);
    let waiting = hypercall::hypercall(Call::StandbyStatus, 0, 0, 0)
        == tessera_abi::hypercall::STANDBY_WAITING;
    if x2apic::enable().is_err() {
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    if let Some(core) = second_core {
        PAIR_PORT.store(port, Ordering::Release);
        if smp::start_core(info, core, pair_second_core).is_err() {
            hypercall::stop_self(crate::EXIT_CORE_START_FAILED);
        }
    }
    let pci_function = pci.and_then(|text| text.split(',').next().and_then(crate::pci::parse_bdf));
    if waiting {
        let id_while_waiting =
            pci_function.map(|(device, function)| crate::pci::conf1_read(device, function, 0));
        let routed_before = route_pin(pin);
        let Ok(doorbell_vector) = u8::try_from(hypercall::channel_vector(channel)) else {
            hypercall::stop_self(EXIT_CHANNEL_FAILED)
        };
        interrupts::set_handler(vector, takeover);
        interrupts::set_handler(doorbell_vector, doorbell);
        processor::disable_interrupts();
        progress
            .standby_ready
            .store(u64::from(processor::current_core()) + 1, Ordering::Release);
        while !TAKEN_OVER.load(Ordering::Acquire) {
            // The doorbell only wakes this core: the pair may have finished while this
            // member was restarting, before its handler existed.
            if progress.acknowledged.load(Ordering::Acquire) >= last {
                hypercall::stop_self(0)
            }
            processor::wait_for_interrupt();
        }
        console::open(port);
        let routed_after = route_pin(pin);
        println!(
            "{name}: boot {restarts}, took over; ioapic pin {pin} before takeover {}, after {}",
            if routed_before {
                "ROUTED (not refused)"
            } else {
                "refused"
            },
            if routed_after { "routed" } else { "NOT routed" }
        );
        if let (Some(id), Some((device, function))) = (id_while_waiting, pci_function) {
            println!("{name}: pci 00:{device:02x}.{function} while waiting id={id:#010x}");
        }
        if let Some(core) = second_core {
            report_second_core(name, core);
        }
    } else {
        console::open(port);
        if restarts == 0 {
            progress.acknowledged.store(0, Ordering::Release);
        }
        println!("{name}: boot {restarts}, active");
        if let Some(core) = second_core {
            report_second_core(name, core);
        }
    }
    if let (Some(text), Some((device, function))) = (pci, pci_function) {
        crate::pci::edu(device, function);
        crate::dma::run(text, info);
    }
    let first = progress.acknowledged.load(Ordering::Acquire) + 1;
    let end = (first + lines.max(1) - 1).min(last);
    write_lines(name, port, progress, (first, end), pause);
    if end == last {
        println!("{name}: pair done at line {last}");
        console::flush();
        hypercall::ring_doorbell(channel);
        hypercall::stop_self(0)
    }
    // Fail over only to a partner that waits (after a rejoin it boots again first).
    let me = u64::from(processor::current_core()) + 1;
    let started = processor::rdtsc();
    loop {
        let ready = progress.standby_ready.load(Ordering::Acquire);
        if ready != 0 && ready != me {
            break;
        }
        if processor::rdtsc().wrapping_sub(started) > crate::WAIT_TIMEOUT_TICKS {
            println!("{name}: the partner never became a waiting standby");
            hypercall::stop_self(crate::EXIT_WAIT_TIMED_OUT);
        }
        core::hint::spin_loop();
    }
    console::flush();
    crate::probe(crash)
}

/// `beat-until-others`: heartbeats (eight per watchdog period, so that an emulator that
/// leaves this core unscheduled for most of a period does not look like a hang) until every other partition
/// has stopped or faulted, each printed as `beat <n> tsc=<t>`, then `heartbeats: <n>
/// sent, every other partition done`. The hypervisor's watchdog sees any gap longer than a
/// period. `wait_seconds` (from `beat-wait=<s>`) replaces the default time bound
/// ([`crate::WAIT_TIMEOUT_TICKS`], a few seconds) for partners that take long, such as
/// Linux guests booting under an emulator.
pub fn beat_until_others(wait_seconds: Option<u64>) {
    let period = hypercall::hypercall(Call::Heartbeat, 0, 0, 0);
    if period <= 0 {
        println!("beat-until-others: no watchdog ({period})");
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    let interval = period as u64 / 8;
    let count = hypercall::partition_count().max(0) as u64;
    let timeout_ticks = wait_seconds.map_or(crate::WAIT_TIMEOUT_TICKS, |seconds| {
        seconds.saturating_mul(time::tsc_hz())
    });
    let mut beats: u64 = 1;
    let started = processor::rdtsc();
    println!("beat 1 tsc={started}");
    loop {
        let not_final = (0..count)
            .filter(|&index| {
                let state = hypercall::partition_state(index);
                !(state >= 0
                    && PartitionState::from_number(state as u64)
                        .is_some_and(PartitionState::is_final))
            })
            .count();
        if not_final <= 1 {
            break;
        }
        if processor::rdtsc().wrapping_sub(started) > timeout_ticks {
            println!("beat-until-others: timed out");
            hypercall::stop_self(crate::EXIT_WAIT_TIMED_OUT);
        }
        time::delay_microseconds(interval);
        let now = processor::rdtsc();
        hypercall::hypercall(Call::Heartbeat, 0, 0, 0);
        beats += 1;
        println!("beat {beats} tsc={now}");
    }
    println!("heartbeats: {beats} sent, every other partition done");
}

/// `read-health-log=<index>[,<index>…]`: each partition's health log through the
/// `health-log` hypercall (the table grants `health:<partition>`), printed as
/// `health-log <index>: restarts=<n> <event>=<count>…`, the form of the hypervisor's own
/// `health-log:` line after the partition's name.
pub fn read_health_log(text: &str) {
    for index in text.split(',').filter_map(parse_number) {
        let restarts = hypercall::hypercall(
            Call::HealthLog,
            index,
            tessera_abi::hypercall::HEALTH_LOG_RESTARTS,
            0,
        );
        if restarts < 0 {
            println!(
                "health-log {index}: {restarts} ({})",
                hypercall::result_name(restarts)
            );
            continue;
        }
        println!(
            "health-log {index}: restarts={restarts}{}",
            EventCounts(index)
        );
    }
}

/// The ` <event>=<count>` list of partition `index`'s health log.
struct EventCounts(u64);

impl core::fmt::Display for EventCounts {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for event in tessera_abi::table::HealthEvent::ALL {
            let count = hypercall::hypercall(Call::HealthLog, self.0, event.index() as u64, 0);
            write!(formatter, " {}={count}", event.name())?;
        }
        Ok(())
    }
}

/// How often `fault-by-boot`'s repeatable kinds (`reset`, `fatal`) try again while the
/// hypervisor's answer is `log` (the call returns), before the guest gives up.
const REPEATS: u32 = 8;

/// `fault-by-boot=<kind>[,<kind>…]`: on boot `n` (`tessera.restarts=n`) cause the `n`-th
/// event of the list, before anything else (no console is needed): `ins` reads a string
/// from a port it does not own (`unexpected-exit`: the hypervisor does not emulate INS
/// from unassigned ports), `triple` loads an empty IDT and executes UD2 (#UD cannot be
/// delivered, nor #DF: a triple fault, `shutdown`), `npf` reads 0x8000000, outside its
/// memory (`memory-violation`), `reset` writes the reset register and `fatal` declares a
/// fatal error (`reset-request`, `declared-fatal`: both again while the answer is `log`,
/// at most [`REPEATS`] times), `hang` sends one heartbeat and then spins
/// (`watchdog-expiry`, again each period while the answer is `log`). Past the list's end
/// it stops with status 0.
pub fn fault_by_boot(restarts: u64, text: &str) -> ! {
    let kind = text
        .split(',')
        .nth(usize::try_from(restarts).unwrap_or(usize::MAX));
    match kind {
        Some("ins") => {
            let mut buffer = [0u8; 4];
            // SAFETY: INSB stores at most one byte at RDI, which points into `buffer`, a
            // local this function owns; port 0x80 belongs to no partition, so under
            // Tessera the instruction exits and the partition is stopped before it
            // completes.
            unsafe {
                core::arch::asm!("insb", in("dx") 0x80u16, inout("rdi") buffer.as_mut_ptr() => _,
                    options(nostack, preserves_flags));
            }
            println!("fault-by-boot: INS returned {buffer:?}");
            hypercall::stop_self(EXIT_CHANNEL_FAILED)
        }
        Some("triple") => {
            let empty: [u16; 5] = [0; 5];
            // SAFETY: loads an IDT of limit 0 and raises #UD: the processor cannot deliver
            // it or the double fault that follows and shuts the core down (a triple fault,
            // SDM vol. 3 §6.15 "Interrupt 8"), which the hypervisor intercepts. No memory
            // is written; `empty` outlives the LIDT.
            unsafe {
                core::arch::asm!("lidt [{}]", "ud2", in(reg) empty.as_ptr(), options(nostack));
            }
            hypercall::stop_self(EXIT_CHANNEL_FAILED)
        }
        Some("npf") => crate::probe(0x800_0000),
        Some("reset") => {
            for _ in 0..REPEATS {
                processor::port_write_u8(crate::RESET_CONTROL_PORT, crate::RESET_HARD);
            }
            hypercall::stop_self(EXIT_CHANNEL_FAILED)
        }
        Some("fatal") => {
            for code in 0..u64::from(REPEATS) {
                hypercall::hypercall(Call::DeclareFatal, code, 0, 0);
            }
            hypercall::stop_self(EXIT_CHANNEL_FAILED)
        }
        Some("hang") => {
            hypercall::hypercall(Call::Heartbeat, 0, 0, 0);
            loop {
                core::hint::spin_loop();
            }
        }
        _ => hypercall::stop_self(0),
    }
}
