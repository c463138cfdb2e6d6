//! The demo's interrupt modes: starting a second core (and sending it an NMI), attacking
//! another partition's cores and I/O APIC pins, and the 1 kHz timer loop that must run
//! without VM exits (with an optional heartbeat line every so many ticks).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tessera_guest::command_line::parse_number;
use tessera_guest::ioapic::{self, RedirectionEntry};
use tessera_guest::x2apic::{self, DeliveryMode, TimerMode, X2Apic};
use tessera_guest::{hypercall, interrupts, println, processor, smp, time, BootInfo};

use crate::{
    EXIT_CORE_START_FAILED, EXIT_ISOLATION_BROKEN, EXIT_NMI_NOT_DELIVERED, EXIT_TIMER_FAILED,
};

/// Vector of the timer loop's ticks.
const TIMER_VECTOR: u8 = 0x40;
/// Vector of the attacker's fixed IPI and I/O APIC routes: no partition handles it, so
/// a victim that receives it stops with status 6.
const ATTACK_VECTOR: u8 = 0xee;
/// Timer-loop tick rate.
const TICKS_PER_SECOND: u64 = 1000;
/// Compute steps between two looks at the tick counter.
const COMPUTE_STEPS: u32 = 256;
/// How long the boot core waits for the started core's flag (microseconds).
const CORE_FLAG_TIMEOUT_MICROSECONDS: u64 = 5_000_000;
/// Iterations of the started core's small loop.
const CORE_LOOP_ITERATIONS: u64 = 100_000;
/// How long the started core waits for the NMI, and the boot core for its report
/// (microseconds).
const NMI_TIMEOUT_MICROSECONDS: u64 = 5_000_000;

/// Enables this core's x2APIC or stops the partition with `status`.
pub(crate) fn apic_or_stop(mode: &str, status: u64) -> X2Apic {
    match x2apic::enable() {
        Ok(apic) => apic,
        Err(error) => {
            println!("{mode}: cannot use the x2APIC: {error:?}");
            hypercall::stop_self(status)
        }
    }
}

/// Reads a number word or stops the partition with `status`.
pub(crate) fn number_or_stop(mode: &str, text: &str, status: u64) -> u64 {
    parse_number(text).unwrap_or_else(|| {
        println!("{mode}: cannot read the number {text:?}");
        hypercall::stop_self(status)
    })
}

/// Set by the started core: its APIC ID + 1 once its loop is done.
static STARTED_CORE_FLAG: AtomicU32 = AtomicU32::new(0);
/// Set by the boot core before the start (`nmi-ipi`): the started core installs an NMI
/// handler before it sets [`STARTED_CORE_FLAG`], then waits for the NMI.
static NMI_TEST: AtomicBool = AtomicBool::new(false);
/// Set by the NMI handler: the APIC ID + 1 of the core that took the NMI.
static NMI_RECEIVED_ON: AtomicU32 = AtomicU32::new(0);
/// Set by the started core once it has printed that it received the NMI.
static NMI_REPORTED: AtomicBool = AtomicBool::new(false);

/// Microseconds as TSC ticks.
pub(crate) fn tsc_ticks(microseconds: u64) -> u64 {
    time::tsc_hz().saturating_mul(microseconds) / 1_000_000
}

/// The NMI handler: only records which core took it (it runs with NMIs blocked and may
/// have interrupted a core holding the console lock, so it prints nothing).
fn nmi_received(_vector: u8) {
    let core = x2apic::get().map_or(u32::MAX, X2Apic::id);
    NMI_RECEIVED_ON.store(core.wrapping_add(1), Ordering::Release);
}

/// `ap_main` of the started core.
fn started_core_main(apic_id: u32) {
    println!("core {apic_id} up");
    let nmi_test = NMI_TEST.load(Ordering::Acquire);
    if nmi_test {
        interrupts::set_handler(interrupts::NMI_VECTOR, nmi_received);
    }
    let mut value: u64 = u64::from(apic_id) + 1;
    for step in 0..CORE_LOOP_ITERATIONS {
        value = core::hint::black_box(value.rotate_left(7) ^ step);
    }
    core::hint::black_box(value);
    STARTED_CORE_FLAG.store(apic_id + 1, Ordering::Release);
    if nmi_test {
        // Interrupts stay masked: only the NMI can arrive.
        let timeout = tsc_ticks(NMI_TIMEOUT_MICROSECONDS);
        let started = processor::rdtsc();
        while NMI_RECEIVED_ON.load(Ordering::Acquire) != apic_id + 1 {
            if processor::rdtsc().wrapping_sub(started) > timeout {
                println!("core {apic_id}: no NMI arrived");
                return;
            }
            core::hint::spin_loop();
        }
        println!("core {apic_id} received NMI");
        NMI_REPORTED.store(true, Ordering::Release);
    }
}

/// `start-core=<apic id>` (with `nmi_ipi`, the `nmi-ipi` word: then one NMI IPI to the
/// started core, see [`send_nmi_ipi`]).
pub fn start_core(info: &BootInfo, text: &str, nmi_ipi: bool) {
    let target = number_or_stop("start-core", text, EXIT_CORE_START_FAILED);
    let Ok(target) = u32::try_from(target) else {
        println!("start-core: {target} is not an APIC ID");
        hypercall::stop_self(EXIT_CORE_START_FAILED)
    };
    let apic = apic_or_stop("start-core", EXIT_CORE_START_FAILED);
    NMI_TEST.store(nmi_ipi, Ordering::Release);
    if let Err(error) = smp::start_core(info, target, started_core_main) {
        println!("start-core: core {target} did not start: {error:?}");
        hypercall::stop_self(EXIT_CORE_START_FAILED);
    }
    let timeout = tsc_ticks(CORE_FLAG_TIMEOUT_MICROSECONDS);
    let started = processor::rdtsc();
    while STARTED_CORE_FLAG.load(Ordering::Acquire) != target + 1 {
        if processor::rdtsc().wrapping_sub(started) > timeout {
            println!("start-core: core {target} started but never finished its loop");
            hypercall::stop_self(EXIT_CORE_START_FAILED);
        }
        core::hint::spin_loop();
    }
    println!("second core started");
    if nmi_ipi {
        send_nmi_ipi(apic, target);
    }
}

/// One NMI IPI (x2APIC ICR, delivery mode NMI, physical destination) to `target`, a core
/// of this partition whose NMI handler is installed (it set its flag after installing
/// it). The hypervisor must forward it and inject it as the guest's own NMI: the target
/// prints `core <id> received NMI`, this core waits for that (bounded) and prints
/// `nmi-ipi: delivered`, or `nmi-ipi: NOT delivered …` and stops with
/// [`EXIT_NMI_NOT_DELIVERED`].
fn send_nmi_ipi(apic: X2Apic, target: u32) {
    apic.send_ipi(target, DeliveryMode::Nmi, 0);
    let timeout = tsc_ticks(NMI_TIMEOUT_MICROSECONDS);
    let started = processor::rdtsc();
    while !NMI_REPORTED.load(Ordering::Acquire) {
        if processor::rdtsc().wrapping_sub(started) > timeout {
            let received_on = NMI_RECEIVED_ON.load(Ordering::Acquire);
            if received_on == 0 {
                println!("nmi-ipi: NOT delivered (no core took an NMI)");
            } else {
                println!(
                    "nmi-ipi: NOT delivered (core {} took it, not core {target})",
                    received_on - 1
                );
            }
            hypercall::stop_self(EXIT_NMI_NOT_DELIVERED);
        }
        core::hint::spin_loop();
    }
    println!("nmi-ipi: delivered");
}

/// `attack-ipi=<apic id>`: a fixed IPI, an NMI and an INIT at a core of another
/// partition.
pub fn attack_ipi(text: &str) {
    let target = number_or_stop("attack-ipi", text, EXIT_ISOLATION_BROKEN);
    let target = u32::try_from(target).unwrap_or(u32::MAX);
    let apic = apic_or_stop("attack-ipi", EXIT_ISOLATION_BROKEN);
    println!("attack-ipi: fixed vector {ATTACK_VECTOR:#x}, NMI and INIT to core {target}");
    apic.send_ipi(target, DeliveryMode::Fixed, ATTACK_VECTOR);
    apic.send_ipi(target, DeliveryMode::Nmi, 0);
    apic.send_init_level_assert(target);
    println!("attack-ipi: sent");
}

/// Writes `entry` to `pin`, prints what the I/O APIC shows before and after, and says
/// whether the write took.
fn try_route(pin: u8, what: &str, entry: RedirectionEntry) -> bool {
    let before = ioapic::redirection_entry(pin);
    ioapic::set_redirection_entry(pin, entry);
    let read_back = ioapic::redirection_entry(pin);
    println!(
        "attack-ioapic: pin {pin} ({what}): before={:#x} wrote={:#x} read-back={:#x}",
        before.0, entry.0, read_back.0
    );
    read_back == entry
}

/// `attack-ioapic=<pin>[,<own pin>,<foreign apic id>]`.
pub fn attack_ioapic(text: &str) {
    let mut numbers = text
        .split(',')
        .map(|part| number_or_stop("attack-ioapic", part, EXIT_ISOLATION_BROKEN));
    let foreign_pin = numbers.next().unwrap_or(0);
    let own_pin = numbers.next();
    let foreign_core = numbers.next();
    let apic = apic_or_stop("attack-ioapic", EXIT_ISOLATION_BROKEN);
    let own_core = apic.id();

    let mut accepted = try_route(
        foreign_pin as u8,
        "not mine, toward me",
        RedirectionEntry::fixed(ATTACK_VECTOR, own_core),
    );
    if let (Some(own_pin), Some(foreign_core)) = (own_pin, foreign_core) {
        let own_pin = own_pin as u8;
        let description = if foreign_core == u64::from(own_core) {
            "mine, toward me"
        } else {
            "mine, toward a core outside"
        };
        accepted |= try_route(
            own_pin,
            description,
            RedirectionEntry::fixed(ATTACK_VECTOR, foreign_core as u32),
        );
        // Leave the own pin masked, toward this core: an entry any partition may write.
        ioapic::set_redirection_entry(
            own_pin,
            RedirectionEntry::fixed(ATTACK_VECTOR, own_core).masked(),
        );
    }
    if accepted {
        println!("attack-ioapic: ACCEPTED");
        if processor::running_on_tessera() {
            hypercall::stop_self(EXIT_ISOLATION_BROKEN);
        }
    } else {
        println!("attack-ioapic: refused");
    }
}

/// State of the timer loop, shared between the loop and the tick handler (one core).
static TICKS: AtomicU64 = AtomicU64::new(0);
static LAST_TICK_TSC: AtomicU64 = AtomicU64::new(0);
static MAX_JITTER: AtomicU64 = AtomicU64::new(0);
static PERIOD_TSC: AtomicU64 = AtomicU64::new(0);
/// Set at a mode switch: the next interval is not a nominal period.
static SKIP_NEXT_INTERVAL: AtomicBool = AtomicBool::new(true);
static DEADLINE_MODE: AtomicBool = AtomicBool::new(false);
static NEXT_DEADLINE: AtomicU64 = AtomicU64::new(0);

/// The tick handler: record the TSC, the deviation from the nominal period, and in
/// TSC-deadline mode arm the next deadline one period after the previous one (an
/// absolute schedule, so lateness shows up as jitter instead of drift).
fn timer_tick(_vector: u8) {
    let now = processor::rdtsc();
    let last = LAST_TICK_TSC.swap(now, Ordering::Relaxed);
    let period = PERIOD_TSC.load(Ordering::Relaxed);
    if !SKIP_NEXT_INTERVAL.swap(false, Ordering::Relaxed) {
        let deviation = now.wrapping_sub(last).abs_diff(period);
        MAX_JITTER.fetch_max(deviation, Ordering::Relaxed);
    }
    TICKS.fetch_add(1, Ordering::Relaxed);
    if DEADLINE_MODE.load(Ordering::Relaxed) {
        if let Some(apic) = x2apic::get() {
            let next = NEXT_DEADLINE.load(Ordering::Relaxed) + period;
            NEXT_DEADLINE.store(next, Ordering::Relaxed);
            apic.set_tsc_deadline(next);
        }
    }
}

/// `heartbeat=<ticks>`: the timer loop's line every `every` ticks, numbered from 1.
struct Heartbeat {
    every: u64,
    /// The number of the next line.
    next: u64,
}

impl Heartbeat {
    /// Prints the lines due at `ticks` ticks: one per `every` ticks passed (one at a time
    /// unless the loop fell behind). The line goes into the console ring and out through
    /// the partition's own UART (passthrough ports, its own I/O APIC pin): no VM exit.
    fn beat(&mut self, ticks: u64) {
        while ticks >= self.next.saturating_mul(self.every) {
            println!(
                "timer: heartbeat {} ticks={ticks} max-jitter-so-far={}",
                self.next,
                MAX_JITTER.load(Ordering::Relaxed)
            );
            self.next += 1;
        }
    }
}

/// Computes until `TICKS` reaches `target` or `timeout_tsc` passes, with the heartbeat's
/// lines (if any) between compute rounds. Returns whether the target was reached.
fn compute_until(target: u64, timeout_tsc: u64, heartbeat: &mut Option<Heartbeat>) -> bool {
    let started = processor::rdtsc();
    let mut value: u64 = 0x9e37_79b9_7f4a_7c15;
    loop {
        // The heartbeat before the target test: the loop's last tick gets its line too.
        let ticks = TICKS.load(Ordering::Relaxed);
        if let Some(heartbeat) = heartbeat {
            heartbeat.beat(ticks);
        }
        if ticks >= target {
            return true;
        }
        for _ in 0..COMPUTE_STEPS {
            // xorshift64: compute the optimiser cannot remove.
            value ^= value << 13;
            value ^= value >> 7;
            value ^= value << 17;
            value = core::hint::black_box(value);
        }
        if processor::rdtsc().wrapping_sub(started) > timeout_tsc {
            return false;
        }
    }
}

/// `timer-loop=<milliseconds>`, with `heartbeat` the value of `heartbeat=<ticks>`.
pub fn timer_loop(text: &str, heartbeat: Option<&str>) {
    let milliseconds = number_or_stop("timer-loop", text, EXIT_TIMER_FAILED).max(2);
    let mut heartbeat = heartbeat.map(|text| {
        let every = number_or_stop("heartbeat", text, EXIT_TIMER_FAILED);
        if every == 0 {
            println!("heartbeat: the interval must be at least one tick");
            hypercall::stop_self(EXIT_TIMER_FAILED);
        }
        Heartbeat { every, next: 1 }
    });
    let apic = apic_or_stop("timer", EXIT_TIMER_FAILED);
    let (tsc_hz, tsc_source) = time::tsc_frequency();
    let apic_hz = time::calibrate_apic_timer(apic);
    let period_tsc = tsc_hz / TICKS_PER_SECOND;
    let apic_count = u32::try_from(apic_hz / TICKS_PER_SECOND).unwrap_or(u32::MAX);
    if period_tsc == 0 || apic_count == 0 {
        println!("timer: cannot program 1 kHz (tsc-hz={tsc_hz} apic-timer-hz={apic_hz})");
        hypercall::stop_self(EXIT_TIMER_FAILED);
    }
    let use_deadline = processor::has_tsc_deadline();
    let on_tessera = processor::running_on_tessera();
    PERIOD_TSC.store(period_tsc, Ordering::Relaxed);
    interrupts::set_handler(TIMER_VECTOR, timer_tick);
    processor::enable_interrupts();
    // Generous: a tick may take long under an emulator, but not ten periods on average.
    let timeout_tsc = period_tsc.saturating_mul(10 * milliseconds + 1000);
    let periodic_ticks = if use_deadline {
        milliseconds / 2
    } else {
        milliseconds
    };

    // From here to the second exit-count read nothing may exit: only passthrough x2APIC
    // MSRs (LVT, initial count, divide, TSC deadline, EOI), RDTSC, compute, and the
    // heartbeat's output to the partition's own UART.
    let exits_before = if on_tessera {
        hypercall::own_exit_count()
    } else {
        0
    };
    apic.set_timer_divisor(1);
    apic.set_timer(TIMER_VECTOR, TimerMode::Periodic, false);
    apic.set_timer_initial_count(apic_count);
    let mut completed = compute_until(periodic_ticks, timeout_tsc, &mut heartbeat);
    if completed && use_deadline {
        processor::disable_interrupts();
        // Switching the LVT to TSC-deadline mode disarms the count-down (Intel SDM Vol. 3A
        // 11.5.4.1); the first deadline is a period after the last periodic tick.
        apic.set_timer(TIMER_VECTOR, TimerMode::TscDeadline, false);
        let first = LAST_TICK_TSC.load(Ordering::Relaxed) + period_tsc;
        NEXT_DEADLINE.store(first, Ordering::Relaxed);
        SKIP_NEXT_INTERVAL.store(true, Ordering::Relaxed);
        DEADLINE_MODE.store(true, Ordering::Relaxed);
        apic.set_tsc_deadline(first);
        processor::enable_interrupts();
        completed = compute_until(milliseconds, timeout_tsc, &mut heartbeat);
    }
    processor::disable_interrupts();
    DEADLINE_MODE.store(false, Ordering::Relaxed);
    apic.stop_timer();
    if use_deadline {
        apic.set_tsc_deadline(0);
    }
    let exits_after = if on_tessera {
        hypercall::own_exit_count()
    } else {
        0
    };
    processor::enable_interrupts();

    let ticks = TICKS.load(Ordering::Relaxed);
    let deadline_ticks = ticks.saturating_sub(periodic_ticks.min(ticks));
    let deadline_ticks = if use_deadline { deadline_ticks } else { 0 };
    println!(
        "timer: tsc-hz={tsc_hz} ({}) apic-timer-hz={apic_hz} periodic-ticks={} tsc-deadline-ticks={deadline_ticks}",
        tsc_source.name(),
        ticks - deadline_ticks,
    );
    if !completed {
        println!("timer: only {ticks} of {milliseconds} ticks arrived");
        hypercall::stop_self(EXIT_TIMER_FAILED);
    }
    let max_jitter = MAX_JITTER.load(Ordering::Relaxed);
    if on_tessera {
        let exits = exits_after - exits_before - 1;
        println!("timer: ticks={ticks} period={period_tsc} max-jitter={max_jitter} exits-during-loop={exits}");
    } else {
        println!("timer: ticks={ticks} period={period_tsc} max-jitter={max_jitter} exits-during-loop=n/a");
    }
}
