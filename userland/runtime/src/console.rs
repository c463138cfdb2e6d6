//! The serial console: a 16550 UART at the I/O port named by `console=0x…`, polled or
//! interrupt-driven.
//!
//! The guest owns the UART's ports as a passthrough device. Polled output waits for the
//! transmit holding register to be empty (LSR bit 5) before each byte; a port the guest
//! does not own reads all ones under Tessera, so the wait also ends there. Without a
//! `console=` word output is dropped.
//!
//! With `uart-irq=<pin>` on the command line the runtime calls
//! [`enable_interrupt_output`]: output goes into a ring buffer, the UART's "transmit
//! holding register empty" interrupt (IER bit 1) is routed through the I/O APIC pin to
//! this core at [`UART_VECTOR`], and the handler refills the 16-byte FIFO from the ring.
//! When the ring is full the writer sends the oldest bytes itself by polling, so output
//! never waits for an interrupt that cannot come (interrupts masked, or an edge lost on
//! an ISA line shared with another UART). [`flush`] empties the ring by polling; the
//! runtime calls it before the partition stops.
//!
//! All output runs under one [`InterruptSafeLock`], so lines from several cores and
//! from interrupt handlers do not interleave.

use core::fmt;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use crate::sync::{InterruptSafeGuard, InterruptSafeLock};
use crate::{interrupts, ioapic, x2apic};

/// The vector of the UART's interrupt in interrupt-driven mode.
pub const UART_VECTOR: u8 = 0x30;
/// Bytes the ring buffer holds.
pub const RING_SIZE: usize = 4096;

/// Transmit interrupts handled so far (for tests and statistics).
static TRANSMIT_INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// The UART base port; 0 while there is no console. Kept outside the lock so
/// [`port`] never waits.
static CONSOLE_PORT: AtomicU16 = AtomicU16::new(0);

/// Everything output changes, under the lock.
struct ConsoleState {
    port: u16,
    interrupt_driven: bool,
    /// Whether IER bit 1 is set (the handler clears it when the ring runs empty).
    transmit_interrupt_enabled: bool,
    ring: [u8; RING_SIZE],
    /// Index of the oldest byte not yet sent.
    head: usize,
    /// Bytes waiting in the ring.
    length: usize,
}

static STATE: InterruptSafeLock<ConsoleState> = InterruptSafeLock::new(ConsoleState {
    port: 0,
    interrupt_driven: false,
    transmit_interrupt_enabled: false,
    ring: [0; RING_SIZE],
    head: 0,
    length: 0,
});

/// Register offsets from the base port (16550 data sheet; DLAB = LCR bit 7).
const DATA: u16 = 0; // THR (write) / divisor latch low with DLAB
const INTERRUPT_ENABLE: u16 = 1; // IER / divisor latch high with DLAB
const FIFO_CONTROL: u16 = 2; // FCR (write) / IIR (read)
const INTERRUPT_IDENTIFICATION: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;

const LINE_CONTROL_DIVISOR_LATCH: u8 = 0x80;
/// 8 data bits, no parity, 1 stop bit.
const LINE_CONTROL_8N1: u8 = 0x03;
/// Enable and clear both FIFOs, receive trigger at 14 bytes.
const FIFO_ENABLE_AND_CLEAR: u8 = 0xc7;
/// DTR and RTS asserted; OUT2 off since the polled console uses no interrupts.
const MODEM_CONTROL_DTR_RTS: u8 = 0x03;
/// OUT2: on PC serial ports it connects the UART's interrupt output to the IRQ line.
const MODEM_CONTROL_OUT2: u8 = 0x08;
/// IER bit 1: interrupt when the transmit holding register (FIFO) is empty.
const INTERRUPT_ENABLE_TRANSMIT_EMPTY: u8 = 1 << 1;
const LINE_STATUS_TRANSMIT_EMPTY: u8 = 1 << 5;
/// The transmit FIFO's depth: after LSR bit 5 this many bytes may be written at once.
const TRANSMIT_FIFO_DEPTH: usize = 16;
/// 115200 baud from the 1.8432 MHz reference clock.
const DIVISOR_115200: u16 = 1;
/// Polls of LSR before a byte is sent anyway: a stuck UART must not hang the guest.
const TRANSMIT_WAIT_LIMIT: u32 = 1_000_000;
/// Attempts at the lock on the fatal path before writing without it.
const EMERGENCY_LOCK_ATTEMPTS: u32 = 10_000_000;

/// Initialises the UART at `port` (8N1, 115200 baud, FIFOs on, no interrupts) and makes
/// it the (polled) console.
pub fn open(port: u16) {
    let mut state = STATE.lock();
    crate::processor::port_write_u8(port.wrapping_add(INTERRUPT_ENABLE), 0);
    crate::processor::port_write_u8(port.wrapping_add(LINE_CONTROL), LINE_CONTROL_DIVISOR_LATCH);
    crate::processor::port_write_u8(port.wrapping_add(DATA), DIVISOR_115200 as u8);
    crate::processor::port_write_u8(
        port.wrapping_add(INTERRUPT_ENABLE),
        (DIVISOR_115200 >> 8) as u8,
    );
    crate::processor::port_write_u8(port.wrapping_add(LINE_CONTROL), LINE_CONTROL_8N1);
    crate::processor::port_write_u8(port.wrapping_add(FIFO_CONTROL), FIFO_ENABLE_AND_CLEAR);
    crate::processor::port_write_u8(port.wrapping_add(MODEM_CONTROL), MODEM_CONTROL_DTR_RTS);
    state.port = port;
    state.interrupt_driven = false;
    state.transmit_interrupt_enabled = false;
    state.head = 0;
    state.length = 0;
    CONSOLE_PORT.store(port, Ordering::Relaxed);
}

/// The console's base port, if there is a console.
pub fn port() -> Option<u16> {
    match CONSOLE_PORT.load(Ordering::Relaxed) {
        0 => None,
        port => Some(port),
    }
}

/// Why interrupt-driven output could not be switched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptOutputError {
    /// There is no console (`console=` missing).
    NoConsole,
    /// The x2APIC is not enabled (see [`x2apic::enable`]).
    NoX2Apic,
    /// The I/O APIC did not keep the redirection entry (under Tessera: the partition
    /// does not own the pin). Carries what it read back.
    RouteRefused(u64),
}

/// Switches the console to interrupt-driven output through I/O APIC `pin`, delivered to
/// this core at [`UART_VECTOR`]. The caller enables interrupts afterwards
/// ([`crate::interrupts::enable_interrupts`]); until then output collects in the ring
/// (and is sent by polling when the ring fills).
pub fn enable_interrupt_output(pin: u8) -> Result<(), InterruptOutputError> {
    let port = port().ok_or(InterruptOutputError::NoConsole)?;
    let apic = x2apic::get().ok_or(InterruptOutputError::NoX2Apic)?;
    interrupts::set_handler(UART_VECTOR, transmit_interrupt);
    let entry = ioapic::RedirectionEntry::fixed(UART_VECTOR, apic.id());
    ioapic::set_redirection_entry(pin, entry);
    let read_back = ioapic::redirection_entry(pin);
    if read_back != entry {
        interrupts::clear_handler(UART_VECTOR);
        return Err(InterruptOutputError::RouteRefused(read_back.0));
    }
    let mut state = STATE.lock();
    crate::processor::port_write_u8(
        port.wrapping_add(MODEM_CONTROL),
        MODEM_CONTROL_DTR_RTS | MODEM_CONTROL_OUT2,
    );
    state.interrupt_driven = true;
    Ok(())
}

/// Whether output is interrupt-driven.
pub fn is_interrupt_driven() -> bool {
    STATE.lock().interrupt_driven
}

/// Waits (bounded) for an empty transmit holding register, then sends `byte`.
fn write_byte_polled(port: u16, byte: u8) {
    for _ in 0..TRANSMIT_WAIT_LIMIT {
        if crate::processor::port_read_u8(port.wrapping_add(LINE_STATUS))
            & LINE_STATUS_TRANSMIT_EMPTY
            != 0
        {
            break;
        }
        core::hint::spin_loop();
    }
    crate::processor::port_write_u8(port.wrapping_add(DATA), byte);
}

impl ConsoleState {
    /// Sends the oldest byte of the ring by polling.
    fn send_oldest_polled(&mut self) {
        if self.length == 0 {
            return;
        }
        let byte = self.ring[self.head];
        self.head = (self.head + 1) % RING_SIZE;
        self.length -= 1;
        write_byte_polled(self.port, byte);
    }

    /// Queues (interrupt-driven) or sends (polled) one byte.
    fn put(&mut self, byte: u8) {
        if self.port == 0 {
            return;
        }
        if !self.interrupt_driven {
            write_byte_polled(self.port, byte);
            return;
        }
        if self.length == RING_SIZE {
            self.send_oldest_polled();
        }
        self.ring[(self.head + self.length) % RING_SIZE] = byte;
        self.length += 1;
    }

    /// Queues or sends `bytes`, `\n` as `\r\n`.
    fn put_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                self.put(b'\r');
            }
            self.put(byte);
        }
    }

    /// Makes sure the UART will interrupt for queued bytes: setting IER bit 1 while the
    /// transmit holding register is empty raises the interrupt at once (16550 data
    /// sheet).
    ///
    /// If the interrupt is already enabled but the transmitter is idle, the edge may
    /// have been lost (ISA lines shared by two UARTs, as COM2/COM4 are, follow the last
    /// UART that updated them): IER is toggled to raise a fresh one. At worst that
    /// gives one extra, harmless interrupt.
    fn start_transmission(&mut self) {
        if !self.interrupt_driven || self.length == 0 {
            return;
        }
        let interrupt_enable = self.port.wrapping_add(INTERRUPT_ENABLE);
        if self.transmit_interrupt_enabled {
            let idle = crate::processor::port_read_u8(self.port.wrapping_add(LINE_STATUS))
                & LINE_STATUS_TRANSMIT_EMPTY
                != 0;
            if !idle {
                return;
            }
            crate::processor::port_write_u8(interrupt_enable, 0);
        }
        self.transmit_interrupt_enabled = true;
        crate::processor::port_write_u8(interrupt_enable, INTERRUPT_ENABLE_TRANSMIT_EMPTY);
    }

    /// Sends everything queued by polling.
    fn drain_polled(&mut self) {
        while self.length != 0 {
            self.send_oldest_polled();
        }
    }
}

/// The handler of [`UART_VECTOR`]: refills the transmit FIFO from the ring, and turns
/// the transmit interrupt off when the ring is empty.
fn transmit_interrupt(_vector: u8) {
    TRANSMIT_INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    let mut state = STATE.lock();
    let port = state.port;
    if port == 0 {
        return;
    }
    // Reading IIR acknowledges a pending "transmit holding register empty" interrupt.
    let _identification =
        crate::processor::port_read_u8(port.wrapping_add(INTERRUPT_IDENTIFICATION));
    if crate::processor::port_read_u8(port.wrapping_add(LINE_STATUS)) & LINE_STATUS_TRANSMIT_EMPTY
        != 0
    {
        for _ in 0..TRANSMIT_FIFO_DEPTH {
            if state.length == 0 {
                break;
            }
            let byte = state.ring[state.head];
            state.head = (state.head + 1) % RING_SIZE;
            state.length -= 1;
            crate::processor::port_write_u8(port.wrapping_add(DATA), byte);
        }
    }
    if state.length == 0 && state.transmit_interrupt_enabled {
        state.transmit_interrupt_enabled = false;
        crate::processor::port_write_u8(port.wrapping_add(INTERRUPT_ENABLE), 0);
    }
}

/// How many transmit interrupts the console has handled.
pub fn transmit_interrupt_count() -> u64 {
    TRANSMIT_INTERRUPTS.load(Ordering::Relaxed)
}

/// Sends everything still queued, by polling (before the partition stops). Gives up
/// if the lock stays taken (a fault while it was held must still stop the partition).
pub fn flush() {
    if let Some(mut state) = STATE.try_lock_for(EMERGENCY_LOCK_ATTEMPTS) {
        state.drain_polled();
    }
}

/// Writes `bytes` to the console, `\n` as `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    let mut state = STATE.lock();
    state.put_bytes(bytes);
    state.start_transmission();
}

/// Writes `text` to the console, `\n` as `\r\n`.
pub fn write_str(text: &str) {
    write_bytes(text.as_bytes());
}

/// The console as a [`fmt::Write`] sink.
#[derive(Debug, Default)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_str(text);
        Ok(())
    }
}

/// Formats into the locked console state (one lock for a whole message).
struct LockedWriter<'a, 'b>(&'a mut InterruptSafeGuard<'b, ConsoleState>);

impl fmt::Write for LockedWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.put_bytes(text.as_bytes());
        Ok(())
    }
}

/// Writes on the fatal path: sends what is queued, then the message, all by polling.
/// If the lock stays taken (the fault hit while it was held), writes without it.
pub fn write_emergency(arguments: fmt::Arguments<'_>) {
    if let Some(mut state) = STATE.try_lock_for(EMERGENCY_LOCK_ATTEMPTS) {
        state.drain_polled();
        state.interrupt_driven = false;
        let _ = fmt::Write::write_fmt(&mut LockedWriter(&mut state), arguments);
        return;
    }
    struct Unlocked(u16);
    impl fmt::Write for Unlocked {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            for &byte in text.as_bytes() {
                if byte == b'\n' {
                    write_byte_polled(self.0, b'\r');
                }
                write_byte_polled(self.0, byte);
            }
            Ok(())
        }
    }
    if let Some(port) = port() {
        let _ = fmt::Write::write_fmt(&mut Unlocked(port), arguments);
    }
}

/// Used by [`print!`](crate::print) and [`println!`](crate::println).
#[doc(hidden)]
pub fn print_arguments(arguments: fmt::Arguments<'_>) {
    let mut state = STATE.lock();
    // Console writes cannot fail.
    let _ = fmt::Write::write_fmt(&mut LockedWriter(&mut state), arguments);
    state.start_transmission();
}

/// Formats to the console.
#[macro_export]
macro_rules! print {
    ($($argument:tt)*) => {
        $crate::console::print_arguments(format_args!($($argument)*))
    };
}

/// Formats to the console, then a newline.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::write_str("\n")
    };
    ($($argument:tt)*) => {
        $crate::console::print_arguments(format_args!("{}\n", format_args!($($argument)*)))
    };
}
