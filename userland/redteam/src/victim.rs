//! The victim: a partition that keeps a heartbeat and a memory pattern while the attackers
//! run beside it, records every interrupt and NMI it did not ask for, and at the end checks
//! its memory and powers the machine off.
//!
//! 1. Writes a per-address pattern over all its RAM (except its image and the loader's
//!    data) and programs its own I/O APIC pin (`level-pin=`) level-triggered and unmasked
//!    with vector `level-vector=` toward itself, so an attacker can try to share the
//!    vector; nothing drives the pin.
//! 2. Installs a handler on every vector: its timer, its doorbell, and a recorder for all
//!    others (and for NMIs); then marks channel 0 ready for the attackers.
//! 3. Runs its local APIC timer at [`TICKS_PER_SECOND`] and prints `victim: heartbeat <n>
//!    ticks=<t>` every [`TICKS_PER_HEARTBEAT`] ticks — into its own UART, no VM exit —
//!    until every other partition has stopped (PartitionState; the victim has `stats:*`)
//!    or [`WAIT_SECONDS`] have passed.
//! 4. Prints `victim: unexpected-interrupt vector=<v> count=<n>` per recorded vector,
//!    `victim: nmis=<n>`, `victim: summary heartbeats=<n> ticks=<t> expected-ticks=<e>
//!    doorbells=<d>`, whether its pin's redirection entry is as it programmed it (`victim:
//!    pin <p> unchanged` or `… CHANGED`), checks the pattern (`victim: memory intact (<k>
//!    KiB)` or `victim: memory CORRUPTED at …`) and powers off (`power` capability).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tessera_abi::hypercall::PartitionState;
use tessera_guest::ioapic::{self, RedirectionEntry};
use tessera_guest::memory::{for_each_piece_outside, MemoryRange};
use tessera_guest::x2apic::{self, TimerMode};
use tessera_guest::{boot, hypercall, interrupts, println, processor, time, BootInfo};

use crate::attacker::VICTIM_READY;

/// The timer rate and the heartbeat period: 100 Hz ticks leave some 10 000 instructions
/// between two ticks even on Bochs (1 MHz TSC), and four heartbeats a second keep the
/// console light.
pub const TICKS_PER_SECOND: u64 = 100;
pub const TICKS_PER_HEARTBEAT: u64 = 25;
/// The longest the victim waits for the attackers, in seconds of its TSC.
const WAIT_SECONDS: u64 = 1200;
/// Vectors the victim uses itself.
const TIMER_VECTOR: u8 = 0x40;
/// The pattern mixed into each word's address.
const PATTERN: u64 = 0x7e55_e7a0_5a5a_c3c3;
/// At most this many ranges are left out of the pattern.
const MAX_EXCLUSIONS: usize = 16;
/// Exit statuses.
const EXIT_SETUP_FAILED: u64 = 30;
const EXIT_POWER_OFF_FAILED: u64 = 31;

static TICKS: AtomicU64 = AtomicU64::new(0);
static DOORBELLS: AtomicU64 = AtomicU64::new(0);
static NMIS: AtomicU64 = AtomicU64::new(0);
static UNEXPECTED: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];

fn tick(_vector: u8) {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

fn doorbell(_vector: u8) {
    DOORBELLS.fetch_add(1, Ordering::Relaxed);
}

fn unexpected(vector: u8) {
    UNEXPECTED[usize::from(vector)].fetch_add(1, Ordering::Relaxed);
}

fn nmi(_vector: u8) {
    NMIS.fetch_add(1, Ordering::Relaxed);
}

/// Calls `visit` for every 8-byte-aligned piece of RAM the pattern covers.
fn pattern_ranges(info: &BootInfo, mut visit: impl FnMut(MemoryRange)) {
    let mut exclusions = [MemoryRange::new(0, 0); MAX_EXCLUSIONS];
    let mut count = 0;
    for range in
        core::iter::once(boot::image_range()).chain(info.boot_data_ranges().iter().copied())
    {
        if count < MAX_EXCLUSIONS {
            exclusions[count] = range;
            count += 1;
        }
    }
    for ram in info.ram_ranges() {
        let reachable = ram.clip_below(boot::IDENTITY_MAP_END);
        for_each_piece_outside(reachable, &exclusions[..count], |piece| {
            let words = piece.shrink_to_alignment(8);
            if !words.is_empty() {
                visit(words);
            }
        });
    }
}

fn pattern(address: u64) -> u64 {
    address ^ PATTERN
}

/// Writes the pattern; returns the bytes covered.
fn write_pattern(info: &BootInfo) -> u64 {
    let mut bytes = 0;
    pattern_ranges(info, |piece| {
        for address in (piece.start..piece.end).step_by(8) {
            // SAFETY: `address` is 8-aligned RAM the memory map gives this partition,
            // inside the identity map, outside the image, stack and loader data: nothing
            // in this program refers to it.
            unsafe { core::ptr::write_volatile(address as *mut u64, pattern(address)) };
        }
        bytes += piece.size();
    });
    bytes
}

/// The first word that differs from the pattern, if any.
fn check_pattern(info: &BootInfo) -> Option<(u64, u64)> {
    let mut mismatch = None;
    pattern_ranges(info, |piece| {
        if mismatch.is_some() {
            return;
        }
        for address in (piece.start..piece.end).step_by(8) {
            // SAFETY: the same words as written by `write_pattern`.
            let value = unsafe { core::ptr::read_volatile(address as *const u64) };
            if value != pattern(address) {
                mismatch = Some((address, value));
                return;
            }
        }
    });
    mismatch
}

/// Whether every other partition is in a final state (the victim's own state is Running
/// while it asks, so exactly one partition is not final then).
fn others_finished() -> bool {
    let count = hypercall::partition_count();
    if count <= 0 {
        return false;
    }
    let running = (0..count as u64)
        .filter(|&index| {
            let state = hypercall::partition_state(index);
            state < 0
                || !PartitionState::from_number(state as u64).is_some_and(PartitionState::is_final)
        })
        .count();
    running <= 1
}

/// The victim's main.
pub fn run(info: &BootInfo) -> ! {
    let command_line = info.command_line();
    let restarts = command_line.number("tessera.restarts").unwrap_or(0);
    let apic = match x2apic::enable() {
        Ok(apic) => apic,
        Err(error) => {
            println!("victim: cannot use the x2APIC: {error:?}");
            hypercall::stop_self(EXIT_SETUP_FAILED)
        }
    };
    println!("victim: core {}, start {restarts}", apic.id());
    let pattern_bytes = write_pattern(info);
    println!("victim: pattern written ({} KiB)", pattern_bytes / 1024);

    for vector in interrupts::FIRST_INTERRUPT_VECTOR..=0xfe {
        interrupts::set_handler(vector, unexpected);
    }
    interrupts::set_handler(interrupts::NMI_VECTOR, nmi);
    interrupts::set_handler(TIMER_VECTOR, tick);
    let doorbell_vector = hypercall::channel_vector(0);
    if let Ok(vector) = u8::try_from(doorbell_vector) {
        interrupts::set_handler(vector, doorbell);
    }
    let level_pin = command_line
        .number("level-pin")
        .and_then(|pin| u8::try_from(pin).ok());
    let mut level_entry = None;
    if let (Some(pin), Some(vector)) = (level_pin, command_line.number("level-vector")) {
        let entry = RedirectionEntry(vector | (1 << 15) | (u64::from(apic.id()) << 56));
        ioapic::set_redirection_entry(pin, entry);
        let read_back = ioapic::redirection_entry(pin);
        level_entry = Some(read_back);
        println!(
            "victim: pin {pin} level-triggered vector {vector:#x}: read-back={:#x}",
            read_back.0
        );
    }
    let channel = hypercall::channel_address(0);
    if channel >= 0 {
        // SAFETY: channel 0's memory is mapped read-write at this guest-physical address
        // (identity-mapped); word 0 is the ready mark the attackers read.
        unsafe { core::ptr::write_volatile(channel as u64 as *mut u64, VICTIM_READY) };
    }

    let tsc_hz = time::tsc_hz();
    let apic_hz = time::calibrate_apic_timer(apic);
    let count = u32::try_from(apic_hz / TICKS_PER_SECOND)
        .unwrap_or(u32::MAX)
        .max(1);
    let period_tsc = tsc_hz / TICKS_PER_SECOND;
    println!("victim: ready tsc-hz={tsc_hz} apic-timer-hz={apic_hz}");
    apic.set_timer_divisor(1);
    apic.set_timer(TIMER_VECTOR, TimerMode::Periodic, false);
    apic.set_timer_initial_count(count);
    let started = processor::rdtsc();
    let mut heartbeats = 0u64;
    loop {
        processor::wait_for_interrupt();
        let ticks = TICKS.load(Ordering::Relaxed);
        if ticks < (heartbeats + 1) * TICKS_PER_HEARTBEAT {
            continue;
        }
        heartbeats += 1;
        println!("victim: heartbeat {heartbeats} ticks={ticks}");
        let elapsed = processor::rdtsc().wrapping_sub(started);
        if others_finished() || elapsed / tsc_hz.max(1) > WAIT_SECONDS {
            break;
        }
    }
    apic.stop_timer();
    let elapsed = processor::rdtsc().wrapping_sub(started);
    let ticks = TICKS.load(Ordering::Relaxed);
    for (vector, count) in UNEXPECTED.iter().enumerate() {
        let count = count.load(Ordering::Relaxed);
        if count != 0 {
            println!("victim: unexpected-interrupt vector={vector:#x} count={count}");
        }
    }
    println!("victim: nmis={}", NMIS.load(Ordering::Relaxed));
    println!(
        "victim: summary heartbeats={heartbeats} ticks={ticks} expected-ticks={} doorbells={} others-finished={}",
        elapsed / period_tsc.max(1),
        DOORBELLS.load(Ordering::Relaxed),
        others_finished()
    );
    if let (Some(pin), Some(entry)) = (level_pin, level_entry) {
        let now = ioapic::redirection_entry(pin);
        if now == entry {
            println!("victim: pin {pin} unchanged ({:#x})", now.0);
        } else {
            println!(
                "victim: pin {pin} CHANGED: {:#x}, programmed {:#x}",
                now.0, entry.0
            );
        }
    }
    match check_pattern(info) {
        None => println!("victim: memory intact ({} KiB)", pattern_bytes / 1024),
        Some((address, value)) => println!(
            "victim: memory CORRUPTED at {address:#x}: read {value:#x}, expected {:#x}",
            pattern(address)
        ),
    }
    println!("victim: powering off");
    let result = hypercall::power_off();
    println!("victim: power off failed: {result}");
    hypercall::stop_self(EXIT_POWER_OFF_FAILED)
}
