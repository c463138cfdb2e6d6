//! The KVM paravirtual clock ("kvmclock") a Linux partition reads its TSC rate from.
//!
//! Linux on AMD has no CPUID leaf it trusts for the TSC rate (it reads CPUID 15H/16H on
//! Intel only) and, without one, times the TSC against PIT channel 2 in its early boot
//! (`quick_pit_calibrate`): with no PIT in a partition every poll is an exit to an
//! unassigned port, about 100,000 of them before it gives up. A guest that finds the KVM
//! signature (CPUID 4000_0100h, see the cpuid module) and the clock-source feature bits
//! registers a `pvclock_vcpu_time_info` through MSR 4B56_4D01h and takes both the CPU and
//! the TSC rate from it instead. Layout and semantics: the KVM API documentation,
//! "KVM-specific MSRs" (MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW).
//!
//! The TSC is invariant and not offset (all partitions see the machine's TSC), so one
//! record written once stays true: system time is the TSC since reset scaled to
//! nanoseconds, which is what the stable bit announces.

/// MSR_KVM_WALL_CLOCK_NEW: the guest writes the guest-physical address of a wall-clock record.
pub const MSR_WALL_CLOCK: u32 = 0x4b56_4d00;
/// MSR_KVM_SYSTEM_TIME_NEW: the guest writes the address of its vCPU's time record | enable.
pub const MSR_SYSTEM_TIME: u32 = 0x4b56_4d01;
/// Bit 0 of an MSR_SYSTEM_TIME write: the record is enabled (else it is withdrawn).
pub const SYSTEM_TIME_ENABLE: u64 = 1;

/// CPUID 4000_0101h EAX: KVM_FEATURE_CLOCKSOURCE2 (the 4B56_4Dxxh MSRs exist) and
/// KVM_FEATURE_CLOCKSOURCE_STABLE_BIT (the record's stable flag may be trusted).
pub const FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
pub const FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;

/// Bytes of a `pvclock_vcpu_time_info` and of a `pvclock_wall_clock`.
pub const TIME_INFO_BYTES: usize = 32;
pub const WALL_CLOCK_BYTES: usize = 12;

/// PVCLOCK_TSC_STABLE_BIT of the record's flags: the TSC is the same on every vCPU.
const FLAG_TSC_STABLE: u8 = 1;
/// An even version: the record is complete (an odd one means "being updated").
const VERSION: u32 = 2;
const NANOSECONDS_PER_SECOND: u128 = 1_000_000_000;

/// The scale from TSC ticks to nanoseconds: `ns = ((tsc << shift) * multiplier) >> 32`, a
/// negative `shift` shifting right. `None` for a rate of 0.
pub fn scale(tsc_khz: u32) -> Option<(u32, i8)> {
    if tsc_khz == 0 {
        return None;
    }
    let hertz = u128::from(tsc_khz) * 1000;
    // Pick the shift that brings the shifted rate into (1 GHz, 2 GHz]: the multiplier
    // 10^9 · 2^32 / rate then lies in [2^31, 2^32), a full 32 bits of precision.
    let mut shift: i32 = 0;
    let shifted = |shift: i32| {
        if shift >= 0 {
            hertz << shift
        } else {
            hertz >> -shift
        }
    };
    while shifted(shift) <= NANOSECONDS_PER_SECOND {
        shift += 1;
    }
    while shifted(shift) > 2 * NANOSECONDS_PER_SECOND {
        shift -= 1;
    }
    let multiplier = (NANOSECONDS_PER_SECOND << 32) / shifted(shift);
    Some((u32::try_from(multiplier).ok()?, i8::try_from(shift).ok()?))
}

/// The `pvclock_vcpu_time_info` for a TSC of `tsc_khz` counting from reset: version,
/// padding, tsc_timestamp 0, system_time 0, multiplier, shift, flags (stable), padding.
pub fn time_info(tsc_khz: u32) -> Option<[u8; TIME_INFO_BYTES]> {
    let (multiplier, shift) = scale(tsc_khz)?;
    let mut record = [0u8; TIME_INFO_BYTES];
    record[0..4].copy_from_slice(&VERSION.to_le_bytes());
    // tsc_timestamp (8..16) and system_time (16..24) stay 0.
    record[24..28].copy_from_slice(&multiplier.to_le_bytes());
    record[28] = shift.to_le_bytes()[0];
    record[29] = FLAG_TSC_STABLE;
    Some(record)
}

/// The `pvclock_wall_clock` (version, seconds, nanoseconds of the wall-clock time at system
/// time 0). A partition has no battery-backed clock (its FADT says there is no CMOS RTC):
/// the epoch, which a guest that needs the date corrects from the network or its user.
pub fn wall_clock() -> [u8; WALL_CLOCK_BYTES] {
    let mut record = [0u8; WALL_CLOCK_BYTES];
    record[0..4].copy_from_slice(&VERSION.to_le_bytes());
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a guest computes from the record: nanoseconds for `ticks`.
    fn nanoseconds(ticks: u64, multiplier: u32, shift: i8) -> u128 {
        let shifted = if shift >= 0 {
            u128::from(ticks) << shift
        } else {
            u128::from(ticks) >> -shift
        };
        (shifted * u128::from(multiplier)) >> 32
    }

    /// The rate a guest derives from the record (Linux's pvclock_tsc_khz).
    fn khz(multiplier: u32, shift: i8) -> u64 {
        let rate = (1_000_000u64 << 32) / u64::from(multiplier);
        if shift < 0 {
            rate << -shift
        } else {
            rate >> shift
        }
    }

    #[test]
    fn one_second_of_ticks_is_one_second() {
        for tsc_khz in [
            1000,
            20_000,
            999_999,
            1_000_000,
            2_301_144,
            3_999_999,
            u32::MAX,
        ] {
            let (multiplier, shift) = scale(tsc_khz).unwrap();
            assert!(multiplier >= 1 << 31, "{tsc_khz}: {multiplier:#x}");
            let second = nanoseconds(u64::from(tsc_khz) * 1000, multiplier, shift);
            assert!(
                second.abs_diff(1_000_000_000) <= 2,
                "{tsc_khz} kHz: {second} ns"
            );
            assert!(
                khz(multiplier, shift).abs_diff(u64::from(tsc_khz))
                    <= u64::from(tsc_khz) / 1_000_000 + 1,
                "{tsc_khz} kHz read back as {}",
                khz(multiplier, shift)
            );
        }
        assert_eq!(scale(0), None);
    }

    #[test]
    fn records_have_the_abi_layout() {
        let record = time_info(2_000_000).unwrap();
        assert_eq!(&record[0..4], &2u32.to_le_bytes());
        assert_eq!(&record[8..24], &[0; 16]);
        let (multiplier, shift) = scale(2_000_000).unwrap();
        assert_eq!(&record[24..28], &multiplier.to_le_bytes());
        assert_eq!(record[28] as i8, shift);
        assert_eq!(record[29], 1);
        assert_eq!(time_info(0), None);
        assert_eq!(wall_clock(), [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
