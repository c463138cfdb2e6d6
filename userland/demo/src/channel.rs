//! The doorbell ping-pong over a `[[channel]]`: shared memory for the messages, the
//! channel's doorbell (RingDoorbell → the channel's vector on the peer's boot core) to
//! wake the peer, HLT while waiting.
//!
//! The shared memory holds four 64-bit words, each on its own cache line: `ready` (the
//! ponger writes [`READY_MARK`] once its handler is installed), `ping` (the pinger's
//! sequence number), `pong` (the ponger's echo of it) and `finished` (the pinger is
//! done). The ponger clears the other words before marking itself ready, and the pinger
//! writes nothing before it sees the mark, so neither depends on the memory's initial
//! contents or on which partition starts first. Each side rings only once the other has
//! shown (through the memory) that its handler is installed.

use core::sync::atomic::{AtomicU64, Ordering};

use tessera_guest::command_line::parse_number;
use tessera_guest::{boot, hypercall, interrupts, println, processor, time, x2apic};

use crate::EXIT_CHANNEL_FAILED;

/// What the ponger writes into `ready`.
const READY_MARK: u64 = 0x706f_6e67_2072_6479;
/// How long the pinger waits for the ready mark (microseconds).
const READY_TIMEOUT_MICROSECONDS: u64 = 30_000_000;

/// One word on its own cache line.
#[repr(C, align(64))]
struct Line(AtomicU64);

/// The layout of the channel memory.
#[repr(C)]
struct Messages {
    ready: Line,
    ping: Line,
    pong: Line,
    finished: Line,
}

/// Doorbells received (the handler counts them; waking the core is what matters).
static DOORBELLS: AtomicU64 = AtomicU64::new(0);

fn doorbell(_vector: u8) {
    DOORBELLS.fetch_add(1, Ordering::Relaxed);
}

/// Looks up channel `index`, installs the doorbell handler, enables interrupts and
/// returns the shared messages.
fn open_channel(mode: &str, index: u64) -> &'static Messages {
    if !processor::running_on_tessera() {
        println!("{mode}: channels are Tessera objects; not running on Tessera");
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    let address = hypercall::channel_address(index);
    let vector = hypercall::channel_vector(index);
    if address < 0 || vector < 0 {
        let failed = if address < 0 { address } else { vector };
        println!(
            "{mode}: channel {index}: {failed} ({})",
            hypercall::result_name(failed)
        );
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    let address = address as u64;
    let size = core::mem::size_of::<Messages>() as u64;
    let Ok(vector) = u8::try_from(vector) else {
        println!("{mode}: channel {index}: vector {vector} out of range");
        hypercall::stop_self(EXIT_CHANNEL_FAILED)
    };
    if !address.is_multiple_of(64) || address.saturating_add(size) > boot::IDENTITY_MAP_END {
        println!("{mode}: channel {index}: unusable address {address:#x}");
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    if let Err(error) = x2apic::enable() {
        println!("{mode}: cannot use the x2APIC: {error:?}");
        hypercall::stop_self(EXIT_CHANNEL_FAILED);
    }
    interrupts::set_handler(vector, doorbell);
    processor::enable_interrupts();
    // SAFETY: the hypervisor maps the channel's memory (whole 4 KiB pages, so at least
    // the 256 bytes of `Messages`) read-write into this partition at `address`, which is
    // 64-aligned and inside the identity map (checked above); nothing else of this
    // program lives there. The peer writes it concurrently, which is why every field is
    // an atomic.
    unsafe { &*(address as *const Messages) }
}

/// Waits with HLT, interrupts enabled only inside the wait, until `done()`.
fn wait_until(mut done: impl FnMut() -> bool) {
    processor::disable_interrupts();
    while !done() {
        processor::wait_for_interrupt();
    }
    processor::enable_interrupts();
}

/// `ping=<channel>,<rounds>`.
pub fn ping(text: &str) {
    let (channel, rounds) = match text.split_once(',') {
        Some((channel, rounds)) => (parse_number(channel), parse_number(rounds)),
        None => (parse_number(text), None),
    };
    let (Some(channel), Some(rounds)) = (channel, rounds.filter(|&rounds| rounds > 0)) else {
        println!("ping: expected ping=<channel>,<rounds>, got {text:?}");
        hypercall::stop_self(EXIT_CHANNEL_FAILED)
    };
    let messages = open_channel("ping", channel);

    let timeout = time::tsc_hz().saturating_mul(READY_TIMEOUT_MICROSECONDS) / 1_000_000;
    let started = processor::rdtsc();
    while messages.ready.0.load(Ordering::Acquire) != READY_MARK {
        if processor::rdtsc().wrapping_sub(started) > timeout {
            println!("ping: the peer on channel {channel} never became ready");
            hypercall::stop_self(EXIT_CHANNEL_FAILED);
        }
        processor::pause(1000);
    }

    let mut minimum = u64::MAX;
    let mut total: u64 = 0;
    // Between the two reads only the rings exit: HLT, the doorbell's interrupt and its EOI
    // do not.
    let exits_before = hypercall::own_exit_count();
    for round in 1..=rounds {
        let start = processor::rdtsc();
        messages.ping.0.store(round, Ordering::Release);
        let rung = hypercall::ring_doorbell(channel);
        if rung < 0 {
            println!(
                "ping: ring failed: {rung} ({})",
                hypercall::result_name(rung)
            );
            hypercall::stop_self(EXIT_CHANNEL_FAILED);
        }
        wait_until(|| messages.pong.0.load(Ordering::Acquire) == round);
        let elapsed = processor::rdtsc().wrapping_sub(start);
        minimum = minimum.min(elapsed);
        total = total.wrapping_add(elapsed);
    }
    // The count includes the call that reads it: the second read is not the exchange's.
    let exits_during = hypercall::own_exit_count() - exits_before - 1;
    messages.finished.0.store(1, Ordering::Release);
    hypercall::ring_doorbell(channel);
    println!(
        "ping-pong: rounds={rounds} round-trip-min={minimum} round-trip-mean={} exits-during={exits_during}",
        total / rounds
    );
}

/// `pong=<channel>`.
pub fn pong(text: &str) {
    let Some(channel) = parse_number(text) else {
        println!("pong: expected pong=<channel>, got {text:?}");
        hypercall::stop_self(EXIT_CHANNEL_FAILED)
    };
    let messages = open_channel("pong", channel);
    messages.ping.0.store(0, Ordering::Relaxed);
    messages.pong.0.store(0, Ordering::Relaxed);
    messages.finished.0.store(0, Ordering::Relaxed);
    // No ring here: the pinger polls for the mark, and may not have installed its
    // doorbell handler yet (a doorbell without a handler is an unexpected interrupt).
    messages.ready.0.store(READY_MARK, Ordering::Release);

    let mut answered: u64 = 0;
    let mut last_answered_sequence: u64 = 0;
    loop {
        wait_until(|| {
            messages.ping.0.load(Ordering::Acquire) != last_answered_sequence
                || messages.finished.0.load(Ordering::Acquire) != 0
        });
        let sequence = messages.ping.0.load(Ordering::Acquire);
        if sequence != last_answered_sequence {
            messages.pong.0.store(sequence, Ordering::Release);
            last_answered_sequence = sequence;
            answered += 1;
            hypercall::ring_doorbell(channel);
        } else if messages.finished.0.load(Ordering::Acquire) != 0 {
            break;
        }
    }
    println!("pong: answered {answered}");
}
