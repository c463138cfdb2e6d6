//! The time-stamp counter: its rate from CPUID 15H/16H when the processor reports it, else
//! calibrated once at boot against PIT channel 2.
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

/// Sets the TSC rate: from CPUID 15H/16H when the processor reports it
/// (tessera_policy::boot_timing::tsc_khz_from_cpuid), else measured against the PIT. Runs
/// once, on the bootstrap core, before any partition owns the PIT ports. Returns the rate
/// and whether it came from CPUID.
pub fn determine_rate() -> (u64, bool) {
    let max_leaf = super::cpuid::max_basic_leaf();
    let leaf = |number: u32| {
        if max_leaf >= number {
            super::cpuid::query(number, 0)
        } else {
            [0; 4]
        }
    };
    match tessera_policy::boot_timing::tsc_khz_from_cpuid(max_leaf, leaf(0x15), leaf(0x16)) {
        Some(khz) => {
            TSC_KHZ.store(khz, Ordering::Relaxed);
            (khz, true)
        }
        None => (calibrate(), false),
    }
}

/// Measures the TSC over 10 ms of PIT channel 2 time.
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
    let khz = if spins > 1_000_000_000 {
        0
    } else {
        elapsed / MILLISECONDS
    };
    TSC_KHZ.store(khz, Ordering::Relaxed);
    khz
}

/// Busy-waits about `microseconds` (at least; at most a spin budget when uncalibrated).
pub fn delay_microseconds(microseconds: u64) {
    let khz = khz();
    let cycles = if khz == 0 {
        microseconds * 3000
    } else {
        microseconds * khz / 1000
    };
    let start = read();
    while read().wrapping_sub(start) < cycles {
        super::pause();
    }
}
