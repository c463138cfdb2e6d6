//! What a guest sees when it executes CPUID: the native result with virtualization
//! extensions hidden and Tessera's hypervisor leaves added.
//!
//! CPUID always exits (AMD APM vol 2 §15.9 when intercepted; Intel SDM vol 3 §27.1.2
//! unconditionally), the hypervisor executes it natively with the same EAX/ECX and passes the
//! result through [`filter`].

use crate::{bytes, pvclock};
use tessera_abi::hypercall::SIGNATURE;

/// Leaf 1 ECX bit 5: VMX (Intel SDM vol 2A, CPUID, table "Feature Information").
pub const LEAF1_ECX_VMX: u32 = 1 << 5;
/// Leaf 1 ECX bit 21: x2APIC. Kept: Tessera requires guests to use the x2APIC.
pub const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ECX bit 31: a hypervisor is present (reserved for this use by both vendors).
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 8000_0001h ECX bit 2: SVM (AMD APM vol 3, appendix E.4.2).
pub const EXT1_ECX_SVM: u32 = 1 << 2;
/// Leaf 1 ECX bit 3: MONITOR/MWAIT; leaf 8000_0001h ECX bit 29: MONITORX/MWAITX. Hidden: the
/// hypervisor intercepts both and answers #UD, so a guest core cannot park itself in a
/// power state the hypervisor does not see; guests idle with HLT instead.
pub const LEAF1_ECX_MONITOR: u32 = 1 << 3;
pub const EXT1_ECX_MONITORX: u32 = 1 << 29;
/// Leaf 1 ECX bit 15: PDCM (IA32_PERF_CAPABILITIES); EDX bits 7 (MCE), 12 (MTRR), 14 (MCA).
/// Partitions get no machine-check, MTRR or performance-monitoring MSRs: the machine's
/// MTRRs are the firmware's, shared by every partition, and machine checks are the
/// hypervisor's to handle.
pub const LEAF1_ECX_PDCM: u32 = 1 << 15;
pub const LEAF1_EDX_MCE: u32 = 1 << 7;
pub const LEAF1_EDX_MTRR: u32 = 1 << 12;
pub const LEAF1_EDX_MCA: u32 = 1 << 14;
/// Leaf 1 EDX bit 22: thermal monitor and software-controlled clock MSRs (IA32_THERM_*,
/// IA32_CLOCK_MODULATION), and bit 29: thermal monitor TM1 (Intel SDM vol. 2A, CPUID,
/// table "Feature Information"). Hidden: those MSRs are machine-wide, intercepted and
/// answer #GP; Linux on Intel writes IA32_THERM_INTERRUPT (0x19b) when it sees both.
pub const LEAF1_EDX_THERMAL_MSRS: u32 = 1 << 22;
pub const LEAF1_EDX_THERMAL_MONITOR: u32 = 1 << 29;
/// Leaf 7 EBX bit 1: IA32_TSC_ADJUST (0x3b) exists (SDM vol. 2A, CPUID 07H). Hidden: the
/// MSR is intercepted and answers #GP (a partition may not move the TSC every partition
/// shares); Linux reads it at boot when the bit is set.
pub const LEAF7_EBX_TSC_ADJUST: u32 = 1 << 1;
/// Leaf 7 EDX bit 29: IA32_ARCH_CAPABILITIES exists. Tessera always offers it, with the
/// x2APIC-lock bit set (see the msr module), so guests keep x2APIC mode.
pub const LEAF7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
/// Leaf 6 ECX bit 0: hardware coordination feedback, i.e. IA32_MPERF and IA32_APERF exist
/// (Intel SDM vol. 2A, CPUID 06H; AMD APM vol. 3, E.3.6 EffFreq). Hidden: a partition gets
/// no access to those MSRs (they are intercepted and answer #GP), and a Linux guest that
/// sees the bit reads both on every scheduler tick for frequency invariance — two exits per
/// tick, each ending in #GP.
pub const LEAF6_ECX_APERF_MPERF: u32 = 1 << 0;
/// Leaf 6 ECX bit 3: IA32_ENERGY_PERF_BIAS (0x1b0) exists (SDM vol. 2A, CPUID 06H). Hidden:
/// the energy/performance preference is the machine's, the MSR is intercepted and answers
/// #GP; Linux on Intel reads and writes it at boot when the bit is set.
pub const LEAF6_ECX_ENERGY_PERF_BIAS: u32 = 1 << 3;
/// The TSC/crystal leaf and the frequency leaf (Intel SDM vol. 2A, CPUID 15H and 16H).
pub const TSC_CRYSTAL_LEAF: u32 = 0x15;
pub const FREQUENCY_LEAF: u32 = 0x16;

/// First of the leaves reserved for hypervisors (0x4000_0000–0x4000_00FF by convention).
pub const HYPERVISOR_LEAF_FIRST: u32 = 0x4000_0000;
/// Last hypervisor leaf Tessera answers itself.
pub const HYPERVISOR_LEAF_LAST: u32 = 0x4000_00ff;
/// The timing leaf of the VMware/KVM convention: EAX = TSC frequency in kHz, EBX = local-APIC
/// bus (timer) frequency in kHz (0: not reported).
pub const TIMING_LEAF: u32 = 0x4000_0010;
/// AMD's SVM feature leaf (AMD APM vol 3, appendix E.4.9).
pub const SVM_FEATURES_LEAF: u32 = 0x8000_000a;
/// A second hypervisor range at 0x4000_0100 carries the KVM signature with no features.
/// Linux scans 0x4000_0000–0x4001_0000 in steps of 0x100 for it (hypervisor_cpuid_base)
/// and then trusts x2APIC without interrupt remapping (x86_init.hyper.x2apic_available):
/// the one hint Debian 6.1 honours, since its x2APIC-lock path clears x2apic_mode before
/// it checks the lock (docs/linux-guest.md). The one feature offered is the paravirtual
/// clock (KVM_FEATURE_CLOCKSOURCE2 and its stable bit, when the TSC rate is known), through
/// which Linux on AMD learns the TSC rate instead of timing it against a PIT a partition
/// does not have (see the pvclock module); Linux uses no other KVM paravirtual interface.
pub const KVM_COMPATIBLE_LEAF: u32 = 0x4000_0100;
pub const KVM_COMPATIBLE_LEAF_LAST: u32 = 0x4000_01ff;
/// KVM_CPUID_FEATURES: EAX the paravirtual features offered.
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0101;
pub const KVM_SIGNATURE: [u8; 12] = *b"KVMKVMKVM\0\0\0";

/// The hypervisor-specific inputs of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidView {
    /// EAX of leaf 0x4000_0000: the highest hypervisor leaf a guest may query.
    pub max_hypervisor_leaf: u32,
    /// TSC frequency in kHz, 0 when unknown.
    pub tsc_khz: u32,
    /// CPUID.0:EAX of the real processor: leaves above it up to 0x16 are synthesised.
    pub native_max_basic_leaf: u32,
}

/// The signature as the three little-endian registers EBX, ECX, EDX.
fn signature_registers() -> [u32; 3] {
    registers_of(&SIGNATURE)
}

/// A 12-byte vendor signature as the three little-endian registers EBX, ECX, EDX.
fn registers_of(signature: &[u8; 12]) -> [u32; 3] {
    // The three offsets lie inside the 12 bytes, so every read succeeds.
    let word = |offset: usize| bytes::u32_at(signature, offset).unwrap_or_default();
    [word(0), word(4), word(8)]
}

/// Tessera's answer for a leaf in 0x4000_0000–0x4000_00FF.
fn hypervisor_leaf(leaf: u32, view: &CpuidView) -> [u32; 4] {
    match leaf {
        HYPERVISOR_LEAF_FIRST => {
            let [b, c, d] = signature_registers();
            [view.max_hypervisor_leaf, b, c, d]
        }
        TIMING_LEAF => [view.tsc_khz, 0, 0, 0],
        _ => [0; 4],
    }
}

/// The CPUID result the guest sees for `leaf`/`subleaf`, given the native result
/// `[eax, ebx, ecx, edx]`.
pub fn filter(leaf: u32, subleaf: u32, native: [u32; 4], view: &CpuidView) -> [u32; 4] {
    let [eax, ebx, ecx, edx] = native;
    match leaf {
        // Reach at least the frequency leaf, which is synthesised below.
        0 => [eax.max(FREQUENCY_LEAF), ebx, ecx, edx],
        // Hide VMX (no nested virtualization), PDCM, MCE, MTRR and MCA; announce a hypervisor.
        1 => [
            eax,
            ebx,
            (ecx & !(LEAF1_ECX_VMX | LEAF1_ECX_PDCM | LEAF1_ECX_MONITOR)) | LEAF1_ECX_HYPERVISOR,
            edx & !(LEAF1_EDX_MCE
                | LEAF1_EDX_MTRR
                | LEAF1_EDX_MCA
                | LEAF1_EDX_THERMAL_MSRS
                | LEAF1_EDX_THERMAL_MONITOR),
        ],
        7 if subleaf == 0 && view.native_max_basic_leaf >= 7 => [
            eax,
            ebx & !LEAF7_EBX_TSC_ADJUST,
            ecx,
            edx | LEAF7_EDX_ARCH_CAPABILITIES,
        ],
        // No APERF/MPERF and no energy-performance bias (see the constants).
        6 => [
            eax,
            ebx,
            ecx & !(LEAF6_ECX_APERF_MPERF | LEAF6_ECX_ENERGY_PERF_BIAS),
            edx,
        ],
        // No architectural performance monitoring.
        0xA => [0; 4],
        // TSC = crystal × EBX / EAX with the crystal in ECX (SDM CPUID 15H): crystal = TSC.
        TSC_CRYSTAL_LEAF if view.tsc_khz != 0 => [1, 1, view.tsc_khz.saturating_mul(1000), 0],
        FREQUENCY_LEAF if view.tsc_khz != 0 => {
            let megahertz = view.tsc_khz / 1000;
            [megahertz, megahertz, 100, 0]
        }
        2..=FREQUENCY_LEAF if leaf > view.native_max_basic_leaf => [0; 4],
        // Hide SVM.
        0x8000_0001 => [eax, ebx, ecx & !(EXT1_ECX_SVM | EXT1_ECX_MONITORX), edx],
        // Nothing to report about a virtualization extension the guest does not have.
        SVM_FEATURES_LEAF => [0; 4],
        HYPERVISOR_LEAF_FIRST..=HYPERVISOR_LEAF_LAST => hypervisor_leaf(leaf, view),
        KVM_COMPATIBLE_LEAF => {
            let [b, c, d] = registers_of(&KVM_SIGNATURE);
            [KVM_COMPATIBLE_LEAF + 1, b, c, d]
        }
        // KVM_CPUID_FEATURES: the paravirtual clock only (it needs the TSC rate).
        KVM_FEATURES_LEAF if view.tsc_khz != 0 => [
            pvclock::FEATURE_CLOCKSOURCE2 | pvclock::FEATURE_CLOCKSOURCE_STABLE_BIT,
            0,
            0,
            0,
        ],
        KVM_FEATURES_LEAF..=KVM_COMPATIBLE_LEAF_LAST => [0; 4],
        _ => native,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: CpuidView = CpuidView {
        max_hypervisor_leaf: 0x4000_0010,
        tsc_khz: 2_500_000,
        native_max_basic_leaf: 0xd,
    };
    const ONES: [u32; 4] = [u32::MAX; 4];

    #[test]
    fn leaf_1_hides_vmx_and_announces_a_hypervisor() {
        let [eax, ebx, ecx, edx] = filter(1, 0, ONES, &VIEW);
        assert_eq!((eax, ebx), (u32::MAX, u32::MAX));
        assert_eq!(
            edx,
            !(LEAF1_EDX_MCE
                | LEAF1_EDX_MTRR
                | LEAF1_EDX_MCA
                | LEAF1_EDX_THERMAL_MSRS
                | LEAF1_EDX_THERMAL_MONITOR)
        );
        assert_eq!(ecx, !(LEAF1_ECX_VMX | LEAF1_ECX_PDCM | LEAF1_ECX_MONITOR));
        let [_, _, ecx, _] = filter(1, 0, [0, 0, LEAF1_ECX_X2APIC, 0], &VIEW);
        assert_eq!(ecx, LEAF1_ECX_X2APIC | LEAF1_ECX_HYPERVISOR);
        let [_, _, ecx, _] = filter(1, 0, [0; 4], &VIEW);
        assert_eq!(ecx, LEAF1_ECX_HYPERVISOR);
    }

    #[test]
    fn timing_leaves_are_synthesised_above_the_native_maximum() {
        assert_eq!(filter(0, 0, [0xd, 1, 2, 3], &VIEW)[0], FREQUENCY_LEAF);
        assert_eq!(filter(0, 0, [0x20, 1, 2, 3], &VIEW)[0], 0x20);
        assert_eq!(
            filter(TSC_CRYSTAL_LEAF, 0, ONES, &VIEW),
            [1, 1, 2_500_000_000, 0]
        );
        assert_eq!(filter(FREQUENCY_LEAF, 0, ONES, &VIEW), [2500, 2500, 100, 0]);
        assert_eq!(filter(0xe, 0, ONES, &VIEW), [0; 4]);
        let native_has_more = CpuidView {
            native_max_basic_leaf: 0x20,
            ..VIEW
        };
        assert_eq!(filter(0xe, 0, ONES, &native_has_more), ONES);
    }

    #[test]
    fn leaf_1_hides_machine_checks_mtrrs_and_perfmon_and_leaf_7_offers_arch_capabilities() {
        let [_, _, ecx, edx] = filter(1, 0, ONES, &VIEW);
        assert_eq!(ecx & LEAF1_ECX_PDCM, 0);
        assert_eq!(edx & (LEAF1_EDX_MCE | LEAF1_EDX_MTRR | LEAF1_EDX_MCA), 0);
        assert_eq!(filter(7, 0, [0; 4], &VIEW)[3], LEAF7_EDX_ARCH_CAPABILITIES);
        assert_eq!(filter(7, 1, [0; 4], &VIEW)[3], 0);
        assert_eq!(filter(0xA, 0, ONES, &VIEW), [0; 4]);
    }

    #[test]
    fn thermal_msrs_and_tsc_adjust_are_hidden_with_their_msrs() {
        let leaf1 = filter(1, 0, [0, 0, 0, u32::MAX], &VIEW);
        assert_eq!(leaf1[3] & LEAF1_EDX_THERMAL_MSRS, 0);
        assert_eq!(leaf1[3] & LEAF1_EDX_THERMAL_MONITOR, 0);
        assert_ne!(leaf1[3] & 1, 0, "the FPU bit passes");
        let leaf7 = filter(7, 0, [0, u32::MAX, 0, 0], &VIEW);
        assert_eq!(leaf7[1] & LEAF7_EBX_TSC_ADJUST, 0);
        assert_eq!(
            leaf7[1] | LEAF7_EBX_TSC_ADJUST,
            u32::MAX,
            "only TSC_ADJUST is hidden"
        );
    }

    #[test]
    fn leaf_6_hides_aperf_mperf_and_energy_bias_and_keeps_the_rest() {
        let native = [0x4, 0, 0x2b, 0];
        assert_eq!(filter(6, 0, native, &VIEW), [0x4, 0, 0x22, 0]);
    }

    #[test]
    fn kvm_compatible_leaves_say_kvm_with_the_paravirtual_clock_only() {
        let [eax, ebx, ecx, edx] = filter(KVM_COMPATIBLE_LEAF, 0, ONES, &VIEW);
        assert_eq!(eax, KVM_COMPATIBLE_LEAF + 1);
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&ebx.to_le_bytes());
        bytes[4..8].copy_from_slice(&ecx.to_le_bytes());
        bytes[8..12].copy_from_slice(&edx.to_le_bytes());
        assert_eq!(&bytes, b"KVMKVMKVM\0\0\0");
        // The paravirtual clock, and only when the TSC rate is known.
        assert_eq!(
            filter(KVM_FEATURES_LEAF, 0, ONES, &VIEW),
            [(1 << 3) | (1 << 24), 0, 0, 0]
        );
        let unknown_rate = CpuidView { tsc_khz: 0, ..VIEW };
        assert_eq!(filter(KVM_FEATURES_LEAF, 0, ONES, &unknown_rate), [0; 4]);
        assert_eq!(filter(KVM_FEATURES_LEAF + 1, 0, ONES, &VIEW), [0; 4]);
    }

    #[test]
    fn extended_leaf_hides_svm() {
        assert_eq!(
            filter(0x8000_0001, 0, ONES, &VIEW),
            [
                u32::MAX,
                u32::MAX,
                !(EXT1_ECX_SVM | EXT1_ECX_MONITORX),
                u32::MAX
            ]
        );
        assert_eq!(filter(0x8000_0001, 0, [1, 2, 0x4, 3], &VIEW), [1, 2, 0, 3]);
        assert_eq!(filter(SVM_FEATURES_LEAF, 0, ONES, &VIEW), [0; 4]);
    }

    #[test]
    fn hypervisor_leaves() {
        let [eax, ebx, ecx, edx] = filter(0x4000_0000, 0, ONES, &VIEW);
        assert_eq!(eax, 0x4000_0010);
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&ebx.to_le_bytes());
        bytes[4..8].copy_from_slice(&ecx.to_le_bytes());
        bytes[8..12].copy_from_slice(&edx.to_le_bytes());
        assert_eq!(bytes, SIGNATURE);
        assert_eq!(&bytes[..7], b"Tessera");
        assert_eq!(filter(TIMING_LEAF, 0, ONES, &VIEW), [2_500_000, 0, 0, 0]);
        let unknown = CpuidView {
            max_hypervisor_leaf: 0x4000_0010,
            tsc_khz: 0,
            native_max_basic_leaf: 0xd,
        };
        assert_eq!(filter(TIMING_LEAF, 0, ONES, &unknown), [0; 4]);
        for leaf in [
            0x4000_0001,
            0x4000_0003,
            0x4000_000f,
            0x4000_0011,
            0x4000_00ff,
        ] {
            assert_eq!(filter(leaf, 0, ONES, &VIEW), [0; 4], "{leaf:#x}");
        }
    }

    #[test]
    fn other_leaves_pass_unchanged() {
        for leaf in [
            2,
            4,
            0xb,
            0x3fff_ffff,
            0x4000_0200,
            0x8000_0000,
            0x8000_0008,
        ] {
            for subleaf in [0, 1] {
                let native = [leaf, subleaf, 0x1234_5678, 0xffff_ffff];
                assert_eq!(filter(leaf, subleaf, native, &VIEW), native, "{leaf:#x}");
            }
        }
    }
}
