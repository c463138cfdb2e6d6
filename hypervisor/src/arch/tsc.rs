//! The time-stamp counter: its rate from CPUID 15H/16H when the processor reports it, else
//! calibrated once at boot against the HPET when the ACPI tables describe one (over a window
//! the boot core fills with work that needs no rate), else against PIT channel 2.
//!
//! The HPET's main counter (IA-PC HPET specification 1.0a) runs at 10–100 MHz (QEMU's at
//! 100 MHz, many chipsets' at 14.318 MHz) and is read without side effects, so a 1 ms
//! window measures the rate to about ±10 ppm (one 10 ns tick in 100,000) — better than the
//! PIT's ±84 ppm over 10 ms — in a tenth of the time.
//!
//! The PIT (8254) runs at 1.193182 MHz on every PC; channel 2's gate is port 0x61 bit 0 and
//! its output can be read at port 0x61 bit 5, so it times an interval without interrupts.

use super::port;
use core::sync::atomic::{AtomicU64, Ordering};

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

pub fn read() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC frequency in kHz as calibrated, or 0 before [`calibrate`].
pub fn khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Where the TSC rate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateSource {
    Cpuid,
    Hpet,
    Pit,
}

impl RateSource {
    pub fn describe(self) -> &'static str {
        match self {
            RateSource::Cpuid => "from CPUID",
            RateSource::Hpet => "calibrated against the HPET",
            RateSource::Pit => "calibrated against the PIT",
        }
    }
}

/// A TSC rate being determined: started by [`begin_rate`], read by [`finish_rate`]. In
/// between, the bootstrap core can do work that needs no rate (the blob digests): an HPET
/// window only needs its two ends to lie at least [`HPET_WINDOW_MICROSECONDS`] apart, so
/// work done inside it costs the calibration nothing.
pub enum RateMeasurement {
    /// CPUID 15H/16H reported the rate (kHz); nothing to measure.
    Reported(u64),
    /// An HPET window is open.
    Hpet(HpetWindow),
    /// No usable HPET: the PIT is measured at [`finish_rate`].
    Pit,
}

/// Starts determining the TSC rate: from CPUID 15H/16H when the processor reports it
/// (tessera_policy::boot_timing::tsc_khz_from_cpuid), else by opening a window on the HPET
/// the ACPI tables describe, else (at [`finish_rate`]) against the PIT. Runs once, on the
/// bootstrap core, before any partition runs (none owns the PIT ports or the HPET yet).
pub fn begin_rate() -> RateMeasurement {
    let max_leaf = super::cpuid::max_basic_leaf();
    let leaf = |number: u32| {
        if max_leaf >= number {
            super::cpuid::query(number, 0)
        } else {
            [0; 4]
        }
    };
    match tessera_policy::boot_timing::tsc_khz_from_cpuid(max_leaf, leaf(0x15), leaf(0x16)) {
        Some(khz) => RateMeasurement::Reported(khz),
        None => open_hpet_window().map_or(RateMeasurement::Pit, RateMeasurement::Hpet),
    }
}

/// Ends what [`begin_rate`] started and sets the rate: waits for the rest of the HPET window
/// (none when the work in between took longer), falling back to the PIT when the HPET's
/// counter did not move. Returns the rate and its source.
pub fn finish_rate(measurement: RateMeasurement) -> (u64, RateSource) {
    let (khz, source) = match measurement {
        RateMeasurement::Reported(khz) => (khz, RateSource::Cpuid),
        RateMeasurement::Hpet(window) => match close_hpet_window(window) {
            Some(khz) => (khz, RateSource::Hpet),
            None => (calibrate(), RateSource::Pit),
        },
        RateMeasurement::Pit => (calibrate(), RateSource::Pit),
    };
    TSC_KHZ.store(khz, Ordering::Relaxed);
    (khz, source)
}

/// HPET register offsets in bytes (IA-PC HPET specification 1.0a §2.3.1).
const HPET_CAPABILITIES: usize = 0x000;
const HPET_CONFIGURATION: usize = 0x010;
const HPET_MAIN_COUNTER: usize = 0x0f0;
/// General Configuration bit 0, ENABLE_CNF: the main counter runs (§2.3.5).
const HPET_ENABLE: u64 = 1 << 0;
/// General Capabilities bit 13, COUNT_SIZE_CAP: the main counter has 64 bits, else 32 (§2.3.4).
const HPET_COUNTER_64_BITS: u64 = 1 << 13;
/// The registers' block: 1 KiB (§2.3.1).
const HPET_BLOCK_BYTES: u64 = 0x400;
/// The calibration window.
const HPET_WINDOW_MICROSECONDS: u64 = 1000;

/// An open calibration window on the HPET's main counter: where it started.
pub struct HpetWindow {
    base: u64,
    period_femtoseconds: u64,
    counter_mask: u64,
    /// The General Configuration register as the firmware left it, restored at the end.
    configuration: u64,
    first_count: u64,
    first_tsc: u64,
}

impl HpetWindow {
    fn register(&self, offset: usize) -> *mut u64 {
        (self.base as usize + offset) as *mut u64
    }

    fn count(&self) -> u64 {
        // SAFETY: `base` is the HPET's register block, checked by `open_hpet_window` to lie
        // in the MMIO window the host page tables map uncached; the main counter is read
        // without side effects (§2.3.7).
        unsafe { core::ptr::read_volatile(self.register(HPET_MAIN_COUNTER)) & self.counter_mask }
    }
}

/// Opens a window on the HPET's main counter; `None` when the ACPI tables name no HPET in
/// the MMIO window the hypervisor maps uncached, or its tick is out of range. A counter the
/// firmware left stopped is started for the window and stopped again at its end, so the
/// hardware is left as it was found (but for the count).
fn open_hpet_window() -> Option<HpetWindow> {
    use tessera_policy::boot_timing::hpet_period_femtoseconds;
    let base = super::acpi::tables()
        .and_then(|tables| tables.hpet_base())
        .ok()?;
    if !tessera_policy::host_page_tables::lies_in_mmio_window(base, HPET_BLOCK_BYTES) {
        return None;
    }
    let register = |offset: usize| (base as usize + offset) as *mut u64;
    // SAFETY: the firmware's HPET table puts the register block at `base`, inside the MMIO
    // window the host page tables map uncached for the hypervisor; the capabilities
    // register is read-only, and no partition runs yet that could own the device.
    let capabilities = unsafe { core::ptr::read_volatile(register(HPET_CAPABILITIES)) };
    let period_femtoseconds = hpet_period_femtoseconds(capabilities)?;
    let counter_mask = if capabilities & HPET_COUNTER_64_BITS != 0 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    // SAFETY: as above; the configuration write only sets ENABLE_CNF, which starts the main
    // counter (its interrupt routing bits are written back as read) (§2.3.5).
    let configuration = unsafe {
        let configuration = core::ptr::read_volatile(register(HPET_CONFIGURATION));
        if configuration & HPET_ENABLE == 0 {
            core::ptr::write_volatile(register(HPET_CONFIGURATION), configuration | HPET_ENABLE);
        }
        configuration
    };
    let mut window = HpetWindow {
        base,
        period_femtoseconds,
        counter_mask,
        configuration,
        first_count: 0,
        first_tsc: 0,
    };
    window.first_count = window.count();
    window.first_tsc = read();
    Some(window)
}

/// Waits until the window spans [`HPET_WINDOW_MICROSECONDS`] of HPET time, restores the
/// configuration and returns the TSC rate over the whole window (±10 ppm and better: one
/// HPET tick in at least 1 ms). `None` when the counter does not move.
fn close_hpet_window(window: HpetWindow) -> Option<u64> {
    use tessera_policy::boot_timing::{hpet_ticks_in, tsc_khz_from_hpet};
    let needed = hpet_ticks_in(HPET_WINDOW_MICROSECONDS, window.period_femtoseconds);
    let elapsed = |count: u64| count.wrapping_sub(window.first_count) & window.counter_mask;
    let mut spins: u64 = 0;
    let mut last = window.count();
    // A counter that does not move (a broken or absent device) is given up on after a spin
    // budget far beyond the window, and the PIT is used instead.
    while elapsed(last) < needed && spins < 100_000_000 {
        last = window.count();
        spins += 1;
    }
    let end = read();
    if window.configuration & HPET_ENABLE == 0 {
        // SAFETY: as in `open_hpet_window`: the configuration as the firmware left it.
        unsafe {
            core::ptr::write_volatile(window.register(HPET_CONFIGURATION), window.configuration)
        };
    }
    let hpet_ticks = elapsed(last);
    if hpet_ticks < needed {
        return None;
    }
    tsc_khz_from_hpet(
        end - window.first_tsc,
        hpet_ticks,
        window.period_femtoseconds,
    )
    .filter(|&khz| khz != 0)
}

/// Measures the TSC over 10 ms of PIT channel 2 time; 0 without a PIT ([`finish_rate`]
/// keeps the result).
fn calibrate() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const MILLISECONDS: u64 = 10;
    let ticks = (PIT_HZ * MILLISECONDS / 1000) as u16;
    // SAFETY: ports 0x42, 0x43 and 0x61 belong to the PIT and the system control port,
    // which no partition runs on yet; channel 2 drives only the PC speaker gate, kept off.
    let start = unsafe {
        let control = port::read_u8(0x61);
        port::write_u8(0x61, (control & !0x02) | 0x01); // gate on, speaker off
        port::write_u8(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        port::write_u8(0x42, ticks as u8);
        port::write_u8(0x42, (ticks >> 8) as u8);
        read()
    };
    let mut spins: u64 = 0;
    // SAFETY: as above; reading port 0x61 has no side effects.
    while unsafe { port::read_u8(0x61) } & 0x20 == 0 {
        spins += 1;
        if spins > 1_000_000_000 {
            break; // no PIT: leave the frequency unknown rather than hang
        }
    }
    let elapsed = read() - start;
    if spins > 1_000_000_000 {
        0
    } else {
        elapsed / MILLISECONDS
    }
}

/// TSC ticks in `microseconds`: at the calibrated rate, or at 3 GHz (more than most cores
/// run at, so a wait is at least as long) while the rate is unknown.
pub fn ticks_in_microseconds(microseconds: u64) -> u64 {
    let khz = khz();
    if khz == 0 {
        microseconds * 3000
    } else {
        microseconds * khz / 1000
    }
}

/// Busy-waits about `microseconds` (at least; at most a spin budget when uncalibrated).
pub fn delay_microseconds(microseconds: u64) {
    let cycles = ticks_in_microseconds(microseconds);
    let start = read();
    while read().wrapping_sub(start) < cycles {
        super::pause();
    }
}
