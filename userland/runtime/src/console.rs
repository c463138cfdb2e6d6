//! The serial console: a 16550 UART at the I/O port named by `console=0x…`, polled.
//!
//! The guest owns the UART's ports as a passthrough device. Output waits for the
//! transmit holding register to be empty (LSR bit 5) before each byte; a port the guest
//! does not own reads all ones under Tessera, so the wait also ends there. Without a
//! `console=` word output is dropped.

use core::fmt;
use core::sync::atomic::{AtomicU16, Ordering};

/// The UART base port; 0 while there is no console.
static CONSOLE_PORT: AtomicU16 = AtomicU16::new(0);

/// Register offsets from the base port (16550 data sheet; DLAB = LCR bit 7).
const DATA: u16 = 0; // THR (write) / divisor latch low with DLAB
const INTERRUPT_ENABLE: u16 = 1; // IER / divisor latch high with DLAB
const FIFO_CONTROL: u16 = 2;
const LINE_CONTROL: u16 = 3;
const MODEM_CONTROL: u16 = 4;
const LINE_STATUS: u16 = 5;

const LINE_CONTROL_DIVISOR_LATCH: u8 = 0x80;
/// 8 data bits, no parity, 1 stop bit.
const LINE_CONTROL_8N1: u8 = 0x03;
/// Enable and clear both FIFOs, receive trigger at 14 bytes.
const FIFO_ENABLE_AND_CLEAR: u8 = 0xc7;
/// DTR and RTS asserted; OUT2 off since the console uses no interrupts.
const MODEM_CONTROL_DTR_RTS: u8 = 0x03;
const LINE_STATUS_TRANSMIT_EMPTY: u8 = 1 << 5;
/// 115200 baud from the 1.8432 MHz reference clock.
const DIVISOR_115200: u16 = 1;
/// Polls of LSR before a byte is sent anyway: a stuck UART must not hang the guest.
const TRANSMIT_WAIT_LIMIT: u32 = 1_000_000;

fn port_write(port: u16, value: u8) {
    // SAFETY: port I/O touches no memory. The console port is the guest's passthrough
    // UART (or, if misconfigured, a port the hypervisor ignores); writing to it cannot
    // affect memory safety.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value,
            options(nomem, nostack, preserves_flags));
    }
}

fn port_read(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `port_write`; reading a UART register has no memory effects.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value,
            options(nomem, nostack, preserves_flags));
    }
    value
}

/// Initialises the UART at `port` (8N1, 115200 baud, FIFOs on, no interrupts) and makes
/// it the console.
pub fn open(port: u16) {
    port_write(port.wrapping_add(INTERRUPT_ENABLE), 0);
    port_write(port.wrapping_add(LINE_CONTROL), LINE_CONTROL_DIVISOR_LATCH);
    port_write(port.wrapping_add(DATA), DIVISOR_115200 as u8);
    port_write(
        port.wrapping_add(INTERRUPT_ENABLE),
        (DIVISOR_115200 >> 8) as u8,
    );
    port_write(port.wrapping_add(LINE_CONTROL), LINE_CONTROL_8N1);
    port_write(port.wrapping_add(FIFO_CONTROL), FIFO_ENABLE_AND_CLEAR);
    port_write(port.wrapping_add(MODEM_CONTROL), MODEM_CONTROL_DTR_RTS);
    CONSOLE_PORT.store(port, Ordering::Relaxed);
}

/// The console's base port, if there is a console.
pub fn port() -> Option<u16> {
    match CONSOLE_PORT.load(Ordering::Relaxed) {
        0 => None,
        port => Some(port),
    }
}

fn write_byte(port: u16, byte: u8) {
    for _ in 0..TRANSMIT_WAIT_LIMIT {
        if port_read(port.wrapping_add(LINE_STATUS)) & LINE_STATUS_TRANSMIT_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    port_write(port.wrapping_add(DATA), byte);
}

/// Writes `bytes` to the console, `\n` as `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    let Some(port) = port() else { return };
    for &byte in bytes {
        if byte == b'\n' {
            write_byte(port, b'\r');
        }
        write_byte(port, byte);
    }
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

/// Used by [`print!`](crate::print) and [`println!`](crate::println).
#[doc(hidden)]
pub fn print_arguments(arguments: fmt::Arguments<'_>) {
    // Console writes cannot fail.
    let _ = fmt::Write::write_fmt(&mut Console, arguments);
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
