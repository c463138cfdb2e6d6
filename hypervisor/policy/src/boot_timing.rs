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
