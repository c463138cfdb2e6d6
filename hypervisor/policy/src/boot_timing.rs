//! Boot-time decisions about time: the TSC rate when the processor reports it (so the
//! hypervisor calibrates only when it does not), and how long to wait after the INIT IPI
//! before the start-up IPIs, by processor generation.

/// The TSC rate in kHz from CPUID 15H (TSC/core crystal ratio: EAX denominator, EBX
/// numerator, ECX crystal Hz) and 16H (EAX base frequency in MHz), Intel SDM vol. 2A,
/// CPUID. `max_basic_leaf` is CPUID.0:EAX. `None` when the processor does not report it:
/// leaf 15H absent or its ratio 0; a crystal of 0 with a base frequency of 0 or absent.
/// With the ratio but no crystal, the TSC runs at the base frequency (the SDM's note for
/// processors that report leaf 16H but not the crystal).
pub fn tsc_khz_from_cpuid(max_basic_leaf: u32, leaf15: [u32; 4], leaf16: [u32; 4]) -> Option<u64> {
    if max_basic_leaf < 0x15 {
        return None;
    }
    let [denominator, numerator, crystal_hz, _] = leaf15;
    if denominator == 0 || numerator == 0 {
        return None;
    }
    if crystal_hz != 0 {
        let hertz = u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator);
        return (hertz >= 1000).then_some(hertz / 1000);
    }
    let base_mhz = if max_basic_leaf >= 0x16 { leaf16[0] } else { 0 };
    (base_mhz != 0).then_some(u64::from(base_mhz) * 1000)
}

/// The HPET's tick in femtoseconds from its General Capabilities and ID register (IA-PC HPET
/// specification 1.0a §2.3.4: COUNTER_CLK_PERIOD, bits 63:32), or `None` when it is out of
/// the specification's range (non-zero, at most 10^8 fs = 100 ns) — an all-ones read from
/// an absent device included.
pub fn hpet_period_femtoseconds(capabilities: u64) -> Option<u64> {
    let period = capabilities >> 32;
    (period != 0 && period <= 100_000_000).then_some(period)
}

/// HPET ticks in `microseconds` at a tick of `period_femtoseconds` (at least one).
pub fn hpet_ticks_in(microseconds: u64, period_femtoseconds: u64) -> u64 {
    (microseconds * 1_000_000_000 / period_femtoseconds.max(1)).max(1)
}

/// The TSC rate in kHz from `tsc_ticks` counted over `hpet_ticks` of an HPET whose tick is
/// `period_femtoseconds`: ticks / (hpet_ticks × period) seconds. `None` for an empty window.
pub fn tsc_khz_from_hpet(tsc_ticks: u64, hpet_ticks: u64, period_femtoseconds: u64) -> Option<u64> {
    let femtoseconds = u128::from(hpet_ticks) * u128::from(period_femtoseconds);
    if femtoseconds == 0 {
        return None;
    }
    // kHz = ticks / seconds / 1000 = ticks × 10^12 / femtoseconds.
    let khz = u128::from(tsc_ticks) * 1_000_000_000_000 / femtoseconds;
    u64::try_from(khz).ok()
}

/// Microseconds to wait between the INIT IPI and the first start-up IPI. The universal
/// start-up algorithm (Intel SDM vol. 3A §9.4.4.1) waits 10 ms, which the processors with a
/// discrete 82489DX APIC needed; Intel family 6 and later, and AMD family 0Fh and later
/// (whose local APIC is integrated and handles INIT without that delay), need none — the
/// rule Linux applies too (it keeps the wait only for older processors).
pub fn init_to_startup_microseconds(intel: bool, amd: bool, family: u32) -> u64 {
    let modern = (intel && family >= 6) || (amd && family >= 0xf);
    if modern {
        0
    } else {
        10_000
    }
}

/// The display family of CPUID.1:EAX (base family, plus the extended family when the base
/// is 0Fh; Intel SDM vol. 2A, CPUID, "Feature Information").
pub fn display_family(leaf1_eax: u32) -> u32 {
    let base = (leaf1_eax >> 8) & 0xf;
    if base == 0xf {
        base + ((leaf1_eax >> 20) & 0xff)
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_rate_from_an_hpet_window() {
        // QEMU's HPET: 10 ns (10^7 fs) a tick, 100 MHz.
        let caps = (10_000_000u64 << 32) | 0x8086_a201;
        assert_eq!(hpet_period_femtoseconds(caps), Some(10_000_000));
        assert_eq!(hpet_ticks_in(1000, 10_000_000), 100_000);
        // 1 ms of a 2.3 GHz TSC.
        assert_eq!(
            tsc_khz_from_hpet(2_300_000, 100_000, 10_000_000),
            Some(2_300_000)
        );
        // One tick of error in 100,000 is 10 ppm.
        assert_eq!(
            tsc_khz_from_hpet(2_300_000, 100_001, 10_000_000),
            Some(2_299_977)
        );
        // The common 14.31818 MHz HPET: 69,841,279 fs a tick.
        assert_eq!(hpet_ticks_in(1000, 69_841_279), 14_318);
        assert_eq!(tsc_khz_from_hpet(0, 0, 10_000_000), None);
        // Absent (all ones), zero or slower than 100 ns: not an HPET to trust.
        assert_eq!(hpet_period_femtoseconds(u64::MAX), None);
        assert_eq!(hpet_period_femtoseconds(0x8086_a201), None);
        assert_eq!(hpet_period_femtoseconds(100_000_001 << 32), None);
        assert_eq!(
            hpet_period_femtoseconds(100_000_000 << 32),
            Some(100_000_000)
        );
    }

    #[test]
    fn tsc_rate_from_the_crystal_or_the_base_frequency() {
        // A 24 MHz crystal at ratio 188/2: 2.256 GHz.
        assert_eq!(
            tsc_khz_from_cpuid(0x16, [2, 188, 24_000_000, 0], [2200, 0, 0, 0]),
            Some(2_256_000)
        );
        // Ratio but no crystal: the base frequency.
        assert_eq!(
            tsc_khz_from_cpuid(0x16, [2, 176, 0, 0], [2200, 0, 0, 0]),
            Some(2_200_000)
        );
        assert_eq!(
            tsc_khz_from_cpuid(0x15, [2, 176, 0, 0], [2200, 0, 0, 0]),
            None
        );
        // Not reported: calibrate.
        assert_eq!(
            tsc_khz_from_cpuid(0xd, [2, 188, 24_000_000, 0], [0; 4]),
            None
        );
        assert_eq!(
            tsc_khz_from_cpuid(0x16, [0, 0, 24_000_000, 0], [2200, 0, 0, 0]),
            None
        );
        assert_eq!(tsc_khz_from_cpuid(0x16, [2, 176, 0, 0], [0; 4]), None);
    }

    #[test]
    fn init_wait_only_for_old_processors() {
        assert_eq!(init_to_startup_microseconds(true, false, 6), 0);
        assert_eq!(init_to_startup_microseconds(true, false, 5), 10_000);
        assert_eq!(init_to_startup_microseconds(false, true, 0xf), 0);
        assert_eq!(init_to_startup_microseconds(false, true, 0x19), 0);
        assert_eq!(init_to_startup_microseconds(false, true, 6), 10_000);
        assert_eq!(init_to_startup_microseconds(false, false, 6), 10_000);
        assert_eq!(display_family(0x0006_0663), 6);
        assert_eq!(display_family(0x00a2_0f10), 0x19);
        assert_eq!(display_family(0x0000_0f61), 0xf);
    }
}
