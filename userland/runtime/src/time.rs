//! Time: the TSC frequency, delays measured with the TSC, and the local APIC timer's
//! frequency calibrated against the TSC.
//!
//! The TSC frequency comes from, in this order: the hypervisor leaf 0x4000_0010 (EAX =
//! TSC kHz; Tessera fills it, as VMware and KVM do), CPUID 0x15 (TSC/crystal ratio
//! times the crystal frequency), CPUID 0x16 (base frequency in MHz), and — only without
//! Tessera, where the PIT ports belong to no partition — a 10 ms measurement with PIT
//! channel 2. If all fail, 1 GHz is assumed ([`TscSource::Assumed`]).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::processor;
use crate::x2apic::{TimerMode, X2Apic};

/// The hypervisor timing leaf: EAX = TSC frequency in kHz, EBX = APIC bus kHz.
const CPUID_TIMING_LEAF: u32 = 0x4000_0010;
/// CPUID leaf 0x15: EAX/EBX = TSC/crystal ratio, ECX = crystal Hz (Intel SDM Vol. 2A).
const CPUID_TSC_CRYSTAL_LEAF: u32 = 0x15;
/// CPUID leaf 0x16: EAX = processor base frequency in MHz.
const CPUID_FREQUENCY_LEAF: u32 = 0x16;
/// Frequency assumed when nothing tells it.
const ASSUMED_TSC_HZ: u64 = 1_000_000_000;

/// PIT (8254) input clock and ports; channel 2's gate and output are in port 0x61.
const PIT_HZ: u64 = 1_193_182;
const PIT_CHANNEL2_DATA: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
const PIT_GATE_PORT: u16 = 0x61;
/// Port 0x61: bit 0 = channel 2 gate, bit 1 = speaker data, bit 5 = channel 2 output.
const PIT_GATE: u8 = 1 << 0;
const PIT_SPEAKER: u8 = 1 << 1;
const PIT_OUTPUT: u8 = 1 << 5;
/// Channel 2, low byte then high byte, mode 0 (interrupt on terminal count), binary.
const PIT_CHANNEL2_MODE0: u8 = 0b1011_0000;
/// The PIT measurement interval: 10 ms.
const PIT_CALIBRATION_COUNT: u64 = PIT_HZ / 100;

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    HypervisorLeaf,
    CpuidCrystal,
    CpuidBaseFrequency,
    Pit,
    Assumed,
}

impl TscSource {
    pub fn name(self) -> &'static str {
        match self {
            TscSource::HypervisorLeaf => "cpuid-0x40000010",
            TscSource::CpuidCrystal => "cpuid-0x15",
            TscSource::CpuidBaseFrequency => "cpuid-0x16",
            TscSource::Pit => "pit",
            TscSource::Assumed => "assumed",
        }
    }

    fn from_number(number: u8) -> TscSource {
        match number {
            0 => TscSource::HypervisorLeaf,
            1 => TscSource::CpuidCrystal,
            2 => TscSource::CpuidBaseFrequency,
            3 => TscSource::Pit,
            _ => TscSource::Assumed,
        }
    }
}

/// The TSC frequency in Hz once determined (0 = not yet), and its source.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_SOURCE: AtomicU8 = AtomicU8::new(0);

/// The TSC frequency in Hz and where it came from (determined once, then cached).
pub fn tsc_frequency() -> (u64, TscSource) {
    let cached = TSC_HZ.load(Ordering::Acquire);
    if cached != 0 {
        return (
            cached,
            TscSource::from_number(TSC_SOURCE.load(Ordering::Relaxed)),
        );
    }
    let (hz, source) = determine_tsc_frequency();
    TSC_SOURCE.store(source as u8, Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Release);
    (hz, source)
}

/// The TSC frequency in Hz.
pub fn tsc_hz() -> u64 {
    tsc_frequency().0
}

fn determine_tsc_frequency() -> (u64, TscSource) {
    if let Some(leaf) = processor::cpuid_if_present(CPUID_TIMING_LEAF) {
        if leaf.eax != 0 {
            return (u64::from(leaf.eax) * 1000, TscSource::HypervisorLeaf);
        }
    }
    if let Some(leaf) = processor::cpuid_if_present(CPUID_TSC_CRYSTAL_LEAF) {
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            let hz = u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax);
            return (hz, TscSource::CpuidCrystal);
        }
    }
    if let Some(leaf) = processor::cpuid_if_present(CPUID_FREQUENCY_LEAF) {
        if leaf.eax & 0xffff != 0 {
            return (
                u64::from(leaf.eax & 0xffff) * 1_000_000,
                TscSource::CpuidBaseFrequency,
            );
        }
    }
    if !processor::running_on_tessera() {
        if let Some(hz) = measure_with_pit() {
            return (hz, TscSource::Pit);
        }
    }
    (ASSUMED_TSC_HZ, TscSource::Assumed)
}

/// Counts TSC ticks while PIT channel 2 counts down 10 ms (gated, speaker off).
fn measure_with_pit() -> Option<u64> {
    let gate = crate::processor::port_read_u8(PIT_GATE_PORT);
    crate::processor::port_write_u8(PIT_GATE_PORT, (gate & !PIT_SPEAKER) & !PIT_GATE);
    crate::processor::port_write_u8(PIT_COMMAND, PIT_CHANNEL2_MODE0);
    crate::processor::port_write_u8(PIT_CHANNEL2_DATA, PIT_CALIBRATION_COUNT as u8);
    crate::processor::port_write_u8(PIT_CHANNEL2_DATA, (PIT_CALIBRATION_COUNT >> 8) as u8);
    let start = processor::rdtsc();
    crate::processor::port_write_u8(PIT_GATE_PORT, (gate & !PIT_SPEAKER) | PIT_GATE);
    let mut polls: u64 = 0;
    while crate::processor::port_read_u8(PIT_GATE_PORT) & PIT_OUTPUT == 0 {
        polls += 1;
        if polls > 100_000_000 {
            return None;
        }
    }
    let elapsed = processor::rdtsc().wrapping_sub(start);
    crate::processor::port_write_u8(PIT_GATE_PORT, gate);
    // Fewer than 1000 TSC ticks in 10 ms is not a plausible clock: no PIT there.
    (polls > 0 && elapsed > 1000).then(|| elapsed * PIT_HZ / PIT_CALIBRATION_COUNT)
}

/// Spins (PAUSE) for `ticks` TSC ticks.
pub fn delay_tsc_ticks(ticks: u64) {
    let start = processor::rdtsc();
    while processor::rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Spins for `microseconds`.
pub fn delay_microseconds(microseconds: u64) {
    delay_tsc_ticks(tsc_hz().saturating_mul(microseconds) / 1_000_000);
}

/// Measures the local APIC timer's count rate at divisor 1, in Hz, against the TSC
/// (10 ms, timer masked). Leaves the timer stopped and the divisor at 1.
pub fn calibrate_apic_timer(apic: X2Apic) -> u64 {
    let tsc_hz = tsc_hz();
    apic.stop_timer();
    apic.set_timer_divisor(1);
    apic.set_timer(0, TimerMode::OneShot, true);
    let start_tsc = processor::rdtsc();
    apic.set_timer_initial_count(u32::MAX);
    delay_tsc_ticks(tsc_hz / 100);
    let remaining = apic.timer_current_count();
    let elapsed_tsc = processor::rdtsc().wrapping_sub(start_tsc).max(1);
    apic.stop_timer();
    let counted = u64::from(u32::MAX - remaining);
    (u128::from(counted) * u128::from(tsc_hz) / u128::from(elapsed_tsc)) as u64
}
