//! Which values a guest's XSETBV may load into XCR0 (Intel SDM vol. 1 §13.3 "Enabling the
//! XSAVE feature set and XSAVE-enabled features"; vol. 2 "XSETBV"). The hypervisor executes
//! the XSETBV itself on VMX (the instruction always exits, SDM vol. 3 §26.1.2): a value the
//! processor would refuse must become a #GP for the guest, never a #GP in the hypervisor.

/// XCR0 state components with a rule of their own (SDM vol. 1 §13.1, table 13-1).
pub const X87: u64 = 1 << 0;
pub const SSE: u64 = 1 << 1;
pub const AVX: u64 = 1 << 2;
pub const MPX_BOUND_REGISTERS: u64 = 1 << 3;
pub const MPX_BOUND_CONFIGURATION: u64 = 1 << 4;
/// AVX-512: opmask, ZMM_Hi256, Hi16_ZMM (bits 7:5).
pub const AVX512: u64 = 0b111 << 5;
/// AMX: XTILECFG and XTILEDATA (bits 17 and 18).
pub const AMX_TILE_CONFIGURATION: u64 = 1 << 17;
pub const AMX_TILE_DATA: u64 = 1 << 18;

/// Why XSETBV raises #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xcr0Refusal {
    /// ECX names an extended control register other than XCR0.
    NotXcr0,
    /// A bit the processor does not support (CPUID.(EAX=0DH,ECX=0):EDX:EAX).
    Unsupported,
    /// XCR0\[0\] (x87) is always 1.
    X87Cleared,
    /// AVX state without SSE state.
    AvxWithoutSse,
    /// MPX's two components set differently.
    MpxComponentsDiffer,
    /// AVX-512's three components not all equal, or set without SSE and AVX.
    Avx512Incomplete,
    /// AMX's two components set differently.
    AmxComponentsDiffer,
}

/// An XCR0 value [`check_xsetbv`] accepted: the only way to name a value the hypervisor
/// may load with XSETBV, so a backend cannot execute an unchecked one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedXcr0(u64);

impl CheckedXcr0 {
    /// The power-on value (x87 only, SDM vol. 1 §13.3), valid on every XSAVE processor.
    pub const POWER_ON: CheckedXcr0 = CheckedXcr0(X87);

    pub fn value(self) -> u64 {
        self.0
    }
}

/// Checks an XSETBV of `value` into XCR`index` against the processor's `supported` XCR0
/// bits, as the instruction does.
pub fn check_xsetbv(index: u32, value: u64, supported: u64) -> Result<CheckedXcr0, Xcr0Refusal> {
    let both_or_neither = |bits: u64| value & bits == 0 || value & bits == bits;
    if index != 0 {
        Err(Xcr0Refusal::NotXcr0)
    } else if value & !supported != 0 {
        Err(Xcr0Refusal::Unsupported)
    } else if value & X87 == 0 {
        Err(Xcr0Refusal::X87Cleared)
    } else if value & AVX != 0 && value & SSE == 0 {
        Err(Xcr0Refusal::AvxWithoutSse)
    } else if !both_or_neither(MPX_BOUND_REGISTERS | MPX_BOUND_CONFIGURATION) {
        Err(Xcr0Refusal::MpxComponentsDiffer)
    } else if !both_or_neither(AVX512) || (value & AVX512 != 0 && value & (SSE | AVX) != SSE | AVX)
    {
        Err(Xcr0Refusal::Avx512Incomplete)
    } else if !both_or_neither(AMX_TILE_CONFIGURATION | AMX_TILE_DATA) {
        Err(Xcr0Refusal::AmxComponentsDiffer)
    } else {
        Ok(CheckedXcr0(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A processor with x87, SSE, AVX, MPX, AVX-512, PKRU and AMX.
    const EVERYTHING: u64 = 0x6_02FF;

    #[test]
    fn linux_values_pass() {
        for value in [0b11, 0b111, 0b1110_0111, 0x2E7, 0x6_02E7, 0x6_02FF] {
            assert!(check_xsetbv(0, value, EVERYTHING).is_ok(), "{value:#x}");
        }
    }

    #[test]
    fn xcr0_bit_0_must_stay_set_sdm_vol1_13_3() {
        assert_eq!(
            check_xsetbv(0, SSE, EVERYTHING),
            Err(Xcr0Refusal::X87Cleared)
        );
    }

    #[test]
    fn avx_needs_sse_sdm_vol1_13_3() {
        assert_eq!(
            check_xsetbv(0, X87 | AVX, EVERYTHING),
            Err(Xcr0Refusal::AvxWithoutSse)
        );
    }

    #[test]
    fn mpx_components_together_sdm_vol1_13_3() {
        assert_eq!(
            check_xsetbv(0, X87 | MPX_BOUND_REGISTERS, EVERYTHING),
            Err(Xcr0Refusal::MpxComponentsDiffer)
        );
        assert_eq!(
            check_xsetbv(0, X87 | MPX_BOUND_CONFIGURATION, EVERYTHING),
            Err(Xcr0Refusal::MpxComponentsDiffer)
        );
    }

    #[test]
    fn avx512_all_or_none_and_needs_sse_and_avx_sdm_vol1_13_3() {
        assert_eq!(
            check_xsetbv(0, X87 | SSE | AVX | (1 << 5), EVERYTHING),
            Err(Xcr0Refusal::Avx512Incomplete)
        );
        assert_eq!(
            check_xsetbv(0, X87 | SSE | AVX512, EVERYTHING),
            Err(Xcr0Refusal::Avx512Incomplete)
        );
        assert!(check_xsetbv(0, X87 | SSE | AVX | AVX512, EVERYTHING).is_ok());
    }

    #[test]
    fn amx_components_together_sdm_vol1_13_3() {
        assert_eq!(
            check_xsetbv(0, X87 | SSE | AMX_TILE_DATA, EVERYTHING),
            Err(Xcr0Refusal::AmxComponentsDiffer)
        );
    }

    #[test]
    fn unsupported_bits_and_other_registers_fault_sdm_vol2_xsetbv() {
        assert_eq!(
            check_xsetbv(0, X87 | SSE | AVX, X87 | SSE),
            Err(Xcr0Refusal::Unsupported)
        );
        assert_eq!(check_xsetbv(1, X87, EVERYTHING), Err(Xcr0Refusal::NotXcr0));
    }

    /// Every value of the low 19 bits either passes or names a rule, and what passes obeys
    /// every rule at once (checked independently here).
    #[test]
    fn exhaustive_low_bits_agree_with_the_rules() {
        for value in 0..(1u64 << 19) {
            let allowed = value & X87 != 0
                && value & !EVERYTHING == 0
                && (value & AVX == 0 || value & SSE != 0)
                && ((value >> 3) & 0b11 == 0 || (value >> 3) & 0b11 == 0b11)
                && ((value >> 5) & 0b111 == 0
                    || ((value >> 5) & 0b111 == 0b111 && value & 0b110 == 0b110))
                && ((value >> 17) & 0b11 == 0 || (value >> 17) & 0b11 == 0b11);
            assert_eq!(
                check_xsetbv(0, value, EVERYTHING).is_ok(),
                allowed,
                "{value:#x}"
            );
        }
    }
}
