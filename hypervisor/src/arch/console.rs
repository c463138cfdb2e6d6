//! The hypervisor console: a polled 16550 UART named by the table's `hypervisor.console`,
//! behind the `log` facade. Lines are whole: one lock per record, so cores never interleave.

use crate::arch::port;
use core::fmt::Write;
use spin::Mutex;

/// A 16550-compatible UART at an I/O port base.
pub struct Uart {
    base: u16,
}

impl Uart {
    const TRANSMIT: u16 = 0;
    const INTERRUPT_ENABLE: u16 = 1;
    const FIFO_CONTROL: u16 = 2;
    const LINE_CONTROL: u16 = 3;
    const MODEM_CONTROL: u16 = 4;
    const LINE_STATUS: u16 = 5;
    const LINE_STATUS_THR_EMPTY: u8 = 1 << 5;
    const LINE_STATUS_TRANSMITTER_EMPTY: u8 = 1 << 6;

    /// Programs 115200 8N1, FIFOs on, interrupts off.
    fn init(base: u16) -> Self {
        // SAFETY: the table gives this UART to the hypervisor and to no partition
        // (validated at build time), so the hypervisor may program it.
        unsafe {
            port::write_u8(base + Self::INTERRUPT_ENABLE, 0);
            port::write_u8(base + Self::LINE_CONTROL, 0x80); // divisor latch
            port::write_u8(base + Self::TRANSMIT, 1); // 115200 baud
            port::write_u8(base + Self::INTERRUPT_ENABLE, 0);
            port::write_u8(base + Self::LINE_CONTROL, 0x03); // 8N1
            port::write_u8(base + Self::FIFO_CONTROL, 0x07);
            port::write_u8(base + Self::MODEM_CONTROL, 0x03);
        }
        Self { base }
    }

    fn write_byte(&mut self, byte: u8) {
        // SAFETY: as in `init`: the hypervisor owns this UART.
        unsafe {
            let mut spins = 0u32;
            while port::read_u8(self.base + Self::LINE_STATUS) & Self::LINE_STATUS_THR_EMPTY == 0
                && spins < 1_000_000
            {
                spins += 1;
            }
            port::write_u8(self.base + Self::TRANSMIT, byte);
        }
    }

    /// Waits until the last byte has left the shift register (before power-off).
    pub fn drain(&mut self) {
        for _ in 0..10_000_000u32 {
            // SAFETY: as in `init`.
            if unsafe { port::read_u8(self.base + Self::LINE_STATUS) }
                & Self::LINE_STATUS_TRANSMITTER_EMPTY
                != 0
            {
                return;
            }
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let mut console = CONSOLE.lock();
        if let Some(uart) = console.as_mut() {
            let _ = match record.level() {
                log::Level::Info => writeln!(uart, "{}", record.args()),
                level => writeln!(uart, "{}: {}", level, record.args()),
            };
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Opens the console on `port` and routes `log` to it.
pub fn init(port: u16) {
    *CONSOLE.lock() = Some(Uart::init(port));
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Runs `decide` with the console held and writes `line` if it returns true; returns what
/// it returned. A change `decide` makes that another core may act on (a partition's state
/// that lets a waiting partition power the machine off) is then never logged by that core
/// before `line`: its own log waits for the console.
pub fn log_if(decide: impl FnOnce() -> bool, line: core::fmt::Arguments) -> bool {
    let mut console = CONSOLE.lock();
    let decided = decide();
    if decided {
        if let Some(uart) = console.as_mut() {
            let _ = writeln!(uart, "{line}");
        }
    }
    decided
}

/// Writes a whole line even if another core holds the lock forever (panic path): the
/// lock is taken if it can be, else the line is written without it.
pub fn write_line_unlocked(args: core::fmt::Arguments) {
    if let Some(mut console) = CONSOLE.try_lock() {
        if let Some(uart) = console.as_mut() {
            let _ = writeln!(uart, "{args}");
        }
        return;
    }
    // SAFETY: another core holds the console lock and may never release it (it may be the
    // one that panicked). Force it open: at worst two lines interleave on the console.
    unsafe { CONSOLE.force_unlock() };
    if let Some(mut console) = CONSOLE.try_lock() {
        if let Some(uart) = console.as_mut() {
            let _ = writeln!(uart, "{args}");
        }
    }
}

/// Waits for the console to finish sending.
pub fn drain() {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        uart.drain();
    }
}
