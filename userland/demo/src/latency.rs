//! `irq-latency=<rounds>[,<pin>]`: how long an interrupt takes from its source to this
//! guest's handler, for two sources, measured the same way bare and in a partition:
//!
//! * the local APIC timer: one-shot at divisor 1, `TIMER_COUNT` ticks from the write of
//!   the initial count; the latency is the handler's TSC minus the TSC of that write minus
//!   the timer's duration in TSC ticks (`TIMER_COUNT` times the TSC ticks per timer tick,
//!   measured first against the same timer);
//! * an I/O APIC pin: the console UART's "transmit holding register empty" interrupt,
//!   raised by the write that enables it in IER while the register is empty (16550: the
//!   interrupt is pending as soon as it is enabled with THR empty), routed through I/O APIC
//!   pin `<pin>` (default 4, COM1's ISA line) to this core; the latency is the handler's
//!   TSC minus the TSC just before that write.
//!
//! Both handlers read the TSC first; what lies between the source and that read (the
//! interrupt's delivery, the runtime's stub and dispatch) is the same code bare and in a
//! partition, so the two runs differ only by what a hypervisor adds to the path. Prints
//! `irq-latency: rounds=<n> timer-min=<tsc> timer-max=<tsc> uart-min=<tsc> uart-max=<tsc>
//! tsc-per-timer-tick=<tsc>/<ticks>` (under the deterministic emulator modes the TSC
//! counts instructions). The console must be polled (no `uart-irq`): the measurement owns
//! the UART's interrupt while it runs. Status 14 on failure.

use core::sync::atomic::{AtomicU64, Ordering};

use tessera_guest::command_line::parse_number;
use tessera_guest::x2apic::{self, TimerMode};
use tessera_guest::{console, hypercall, interrupts, ioapic, println, processor};

use crate::EXIT_LATENCY_FAILED;

/// The vectors of the two sources (unused by the rest of the demo guest).
const TIMER_VECTOR: u8 = 0x41;
const UART_VECTOR: u8 = 0x42;
/// Timer ticks from the initial-count write to the interrupt.
const TIMER_COUNT: u32 = 20_000;
/// Timer ticks counted to relate the timer's rate to the TSC's.
const CALIBRATION_TICKS: u32 = 1_000_000;
/// The UART's interrupt enable register (offset 1) and its "transmit holding register
/// empty" bit; the interrupt identification register (offset 2); the modem control
/// register (offset 4) with DTR, RTS and OUT2 (which gates the interrupt line on PCs).
const INTERRUPT_ENABLE: u16 = 1;
const TRANSMIT_EMPTY_INTERRUPT: u8 = 0x02;
const INTERRUPT_IDENTIFICATION: u16 = 2;
const MODEM_CONTROL: u16 = 4;
const MODEM_CONTROL_DTR_RTS_OUT2: u8 = 0x0b;
/// How long a round waits for its interrupt, in TSC ticks.
const ROUND_TIMEOUT_TICKS: u64 = 1_000_000_000;

/// The TSC the current handler read first (0: not yet).
static HANDLER_TSC: AtomicU64 = AtomicU64::new(0);
/// The console UART's base port, for the UART handler.
static UART_PORT: AtomicU64 = AtomicU64::new(0);

fn timer_interrupt(_vector: u8) {
    HANDLER_TSC.store(processor::rdtsc(), Ordering::Release);
}

fn uart_interrupt(_vector: u8) {
    HANDLER_TSC.store(processor::rdtsc(), Ordering::Release);
    let port = UART_PORT.load(Ordering::Relaxed) as u16;
    // Disable the interrupt again (the line drops, so the next enable is a new edge) and
    // read IIR, which clears a pending THRE indication.
    processor::port_write_u8(port + INTERRUPT_ENABLE, 0);
    processor::port_read_u8(port + INTERRUPT_IDENTIFICATION);
}

fn fail(message: core::fmt::Arguments) -> ! {
    println!("irq-latency: {message}");
    hypercall::stop_self(EXIT_LATENCY_FAILED)
}

/// Runs `start`, then waits with interrupts enabled until a handler has stored its TSC;
/// returns that TSC minus the one read just before `start`.
fn one_round(start: impl FnOnce()) -> u64 {
    HANDLER_TSC.store(0, Ordering::Release);
    processor::enable_interrupts();
    let before = processor::rdtsc();
    start();
    loop {
        let handled = HANDLER_TSC.load(Ordering::Acquire);
        if handled != 0 {
            processor::disable_interrupts();
            return handled.wrapping_sub(before);
        }
        if processor::rdtsc().wrapping_sub(before) > ROUND_TIMEOUT_TICKS {
            processor::disable_interrupts();
            fail(format_args!(
                "no interrupt within {ROUND_TIMEOUT_TICKS} TSC ticks"
            ));
        }
    }
}

/// TSC ticks per `CALIBRATION_TICKS` timer ticks at divisor 1 (timer masked).
fn tsc_per_calibration(apic: x2apic::X2Apic) -> u64 {
    apic.stop_timer();
    apic.set_timer_divisor(1);
    apic.set_timer(0, TimerMode::OneShot, true);
    let start = processor::rdtsc();
    apic.set_timer_initial_count(u32::MAX);
    while u32::MAX - apic.timer_current_count() < CALIBRATION_TICKS {
        core::hint::spin_loop();
    }
    let counted = u32::MAX - apic.timer_current_count();
    let elapsed = processor::rdtsc().wrapping_sub(start);
    apic.stop_timer();
    // Scale to exactly CALIBRATION_TICKS (the loop overshoots by a few ticks).
    (u128::from(elapsed) * u128::from(CALIBRATION_TICKS) / u128::from(counted.max(1))) as u64
}

/// `irq-latency=<rounds>[,<pin>]`.
pub fn run(text: &str) {
    let (rounds, pin) = match text.split_once(',') {
        Some((rounds, pin)) => (parse_number(rounds), parse_number(pin)),
        None => (parse_number(text), Some(4)),
    };
    let (Some(rounds), Some(pin)) = (rounds.filter(|&rounds| rounds > 0), pin) else {
        fail(format_args!(
            "expected irq-latency=<rounds>[,<pin>], got {text:?}"
        ))
    };
    let Ok(pin) = u8::try_from(pin) else {
        fail(format_args!("pin {pin} out of range"))
    };
    let Some(port) = console::port() else {
        fail(format_args!("no console UART (console=0x…)"))
    };
    if console::is_interrupt_driven() {
        fail(format_args!(
            "the console is interrupt-driven (uart-irq); it must be polled"
        ))
    }
    let apic = match x2apic::enable() {
        Ok(apic) => apic,
        Err(error) => fail(format_args!("cannot use the x2APIC: {error:?}")),
    };
    processor::disable_interrupts();

    // The timer.
    let calibration = tsc_per_calibration(apic);
    let timer_duration =
        (u128::from(calibration) * u128::from(TIMER_COUNT) / u128::from(CALIBRATION_TICKS)) as u64;
    interrupts::set_handler(TIMER_VECTOR, timer_interrupt);
    apic.set_timer_divisor(1);
    apic.set_timer(TIMER_VECTOR, TimerMode::OneShot, false);
    let (mut timer_min, mut timer_max) = (u64::MAX, 0);
    for _ in 0..rounds {
        let elapsed = one_round(|| apic.set_timer_initial_count(TIMER_COUNT));
        let latency = elapsed.saturating_sub(timer_duration);
        timer_min = timer_min.min(latency);
        timer_max = timer_max.max(latency);
    }
    apic.stop_timer();
    interrupts::clear_handler(TIMER_VECTOR);

    // The UART's transmit-empty interrupt through the I/O APIC pin.
    console::flush();
    UART_PORT.store(u64::from(port), Ordering::Relaxed);
    interrupts::set_handler(UART_VECTOR, uart_interrupt);
    let entry = ioapic::RedirectionEntry::fixed(UART_VECTOR, apic.id());
    ioapic::set_redirection_entry(pin, entry);
    let read_back = ioapic::redirection_entry(pin);
    if read_back != entry {
        fail(format_args!(
            "I/O APIC pin {pin} not routed (read back {:#x})",
            read_back.0
        ));
    }
    processor::port_write_u8(port + INTERRUPT_ENABLE, 0);
    processor::port_write_u8(port + MODEM_CONTROL, MODEM_CONTROL_DTR_RTS_OUT2);
    processor::port_read_u8(port + INTERRUPT_IDENTIFICATION);
    let (mut uart_min, mut uart_max) = (u64::MAX, 0);
    for _ in 0..rounds {
        let latency = one_round(|| {
            processor::port_write_u8(port + INTERRUPT_ENABLE, TRANSMIT_EMPTY_INTERRUPT)
        });
        uart_min = uart_min.min(latency);
        uart_max = uart_max.max(latency);
    }
    ioapic::set_redirection_entry(pin, entry.masked());
    interrupts::clear_handler(UART_VECTOR);
    println!(
        "irq-latency: rounds={rounds} timer-min={timer_min} timer-max={timer_max} uart-min={uart_min} uart-max={uart_max} tsc-per-timer-tick={calibration}/{CALIBRATION_TICKS}"
    );
}
