//! The MSR pass-through policy: which RDMSR/WRMSR a guest executes natively and which exit to
//! the hypervisor, plus its encodings as the AMD MSR permissions map and the Intel MSR bitmap.
//!
//! Passed through are the MSRs that are per-core guest state the CPU already switches on VM
//! entry and exit (segment bases, SYSCALL/SYSENTER targets, PAT, TSC_AUX) and the x2APIC,
//! which a partition owns directly on its dedicated cores. The one x2APIC register that could
//! reach other partitions, the ICR (0x830), is intercepted on writes so the hypervisor can
//! filter IPIs (see [`crate::icr`]). Everything else exits: the hypervisor emulates the few it
//! must (APIC_BASE 0x1B, for one) and injects #GP for the rest.

/// The CPU vendor, which decides the virtualization extension in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// AMD SVM.
    Amd,
    /// Intel VMX.
    Intel,
}

/// RDMSR or WRMSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAccess {
    Read,
    Write,
}

/// One line of the pass-through table: MSRs `first..=last` are not intercepted for the
/// accesses marked, on the vendors marked.
#[derive(Clone, Copy, Debug)]
struct PassThrough {
    first: u32,
    last: u32,
    read: bool,
    write: bool,
    /// `None`: both vendors.
    only_on: Option<Vendor>,
}

const fn both(first: u32, last: u32) -> PassThrough {
    PassThrough {
        first,
        last,
        read: true,
        write: true,
        only_on: None,
    }
}

const fn read_only(first: u32, last: u32) -> PassThrough {
    PassThrough {
        first,
        last,
        read: true,
        write: false,
        only_on: None,
    }
}

const fn write_only(first: u32, last: u32) -> PassThrough {
    PassThrough {
        first,
        last,
        read: false,
        write: true,
        only_on: None,
    }
}

/// Every MSR access not listed here is intercepted.
const PASS_THROUGH: &[PassThrough] = &[
    // IA32_TIME_STAMP_COUNTER: reads are as cheap as RDTSC, which is not intercepted either;
    // a write would move the TSC under the other partitions' cores' feet.
    read_only(0x10, 0x10),
    // IA32_SPEC_CTRL: speculation controls of the guest's own code on its own cores (Intel
    // SDM vol. 4; AMD has the same MSR). IA32_PRED_CMD (IBPB) and IA32_FLUSH_CMD (L1D flush)
    // are write-only commands that affect only the core that writes them.
    both(0x48, 0x48),
    write_only(0x49, 0x49),
    write_only(0x10b, 0x10b),
    // IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP: guest state in the VMCB/VMCS.
    both(0x174, 0x176),
    // IA32_PAT: guest state in the VMCB (g_pat) / VMCS (load/save IA32_PAT controls).
    both(0x277, 0x277),
    // IA32_TSC_DEADLINE: the partition's own LAPIC timer in TSC-deadline mode (Intel SDM
    // vol 3 §11.5.4.1); passing it through keeps timer ticks free of exits.
    both(0x6e0, 0x6e0),
    // x2APIC registers 0x800–0x82F (ID, version, TPR, PPR, EOI, LDR, SVR, ISR, TMR, IRR, ESR,
    // LVT CMCI): the partition owns its cores' local APICs.
    both(0x800, 0x82f),
    // x2APIC ICR: reads pass, writes are filtered by the hypervisor (crate::icr).
    read_only(0x830, 0x830),
    // x2APIC 0x831–0x8FF (LVTs, timer initial/current count, divide config, SELF IPI, which
    // can only target the writing core).
    both(0x831, 0x8ff),
    // EFER is intercepted both ways on both vendors: writes are performed as the processor
    // would (crate::control_registers: reserved bits, LME locked while paging); on AMD the
    // guest must also not clear EFER.SVME, which would make the next VMRUN fail (AMD APM vol 2
    // §15.5.1), nor see it set, since its CPUID shows no SVM.
    // STAR, LSTAR, CSTAR, SFMASK: SYSCALL targets, guest state in the VMCB / switched by the
    // hypervisor.
    both(0xc000_0081, 0xc000_0084),
    // FS_BASE, GS_BASE, KERNEL_GS_BASE: segment bases, guest state.
    both(0xc000_0100, 0xc000_0102),
    // TSC_AUX: read by RDTSCP/RDPID, per core.
    both(0xc000_0103, 0xc000_0103),
];

/// IA32_BIOS_SIGN_ID (Intel SDM vol. 4 table 2-2; AMD's PATCH_LEVEL has the same number):
/// the microcode revision. Linux writes 0 to it, executes CPUID and reads it back to learn
/// the revision, with the unchecked RDMSR/WRMSR that warn on #GP. A partition cannot load
/// microcode, so it reads 0 ("no update loaded") and its writes are ignored.
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;

/// IA32_MISC_ENABLE bit 0 (Fast-Strings Enable), bit 22 (Limit CPUID Maxval) and bit 34
/// (XD Bit Disable), Intel SDM vol. 4 table 2-2.
pub const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
pub const MISC_ENABLE_LIMIT_CPUID_MAXVAL: u64 = 1 << 22;
pub const MISC_ENABLE_XD_DISABLE: u64 = 1 << 34;

/// The IA32_MISC_ENABLE a guest reads, from the processor's: XD Disable and Limit CPUID
/// Maxval clear (so Linux's early code has nothing to change: it would write them, and
/// writes are dropped), Fast-Strings set (Linux warns and disables its string-copy paths
/// when it is clear; the hypervisor leaves the machine's setting as the firmware made it).
pub fn guest_misc_enable(native: u64) -> u64 {
    (native & !(MISC_ENABLE_XD_DISABLE | MISC_ENABLE_LIMIT_CPUID_MAXVAL)) | MISC_ENABLE_FAST_STRING
}

/// Whether the hypervisor intercepts this access to `msr` on `vendor`.
pub fn intercepted(vendor: Vendor, msr: u32, access: MsrAccess) -> bool {
    !PASS_THROUGH.iter().any(|rule| {
        (rule.first..=rule.last).contains(&msr)
            && rule.only_on.is_none_or(|only| only == vendor)
            && match access {
                MsrAccess::Read => rule.read,
                MsrAccess::Write => rule.write,
            }
    })
}

/// Size of the AMD MSR permissions map (AMD APM vol 2 §15.11): two 4 KiB pages.
pub const SVM_MSRPM_BYTES: usize = 8192;

/// The three MSR ranges the MSR permissions map covers and the byte offset of each range's
/// 2 KiB part (AMD APM vol 2 §15.11, "MSR Intercepts"); the last 2 KiB are reserved.
pub const SVM_MSRPM_RANGES: [(u32, usize); 3] = [
    (0x0000_0000, 0x000),
    (0xc000_0000, 0x800),
    (0xc001_0000, 0x1000),
];

/// MSRs in each range of the SVM map and of each half of the VMX bitmap.
pub const MSRS_PER_RANGE: u32 = 0x2000;

/// Where the two intercept bits of `msr` live in the SVM map: (byte offset, bit of the read
/// intercept); the write intercept is the next bit. `None` for MSRs outside the three ranges,
/// which always exit.
pub fn svm_msrpm_position(msr: u32) -> Option<(usize, u8)> {
    SVM_MSRPM_RANGES.iter().find_map(|&(base, offset)| {
        let index = msr
            .checked_sub(base)
            .filter(|&index| index < MSRS_PER_RANGE)?;
        let bit = index as usize * 2;
        Some((offset + bit / 8, (bit % 8) as u8))
    })
}

/// Fills the AMD MSR permissions map with the [`Vendor::Amd`] policy: two bits per MSR, the
/// even one intercepting reads, the odd one writes; set = intercept (AMD APM vol 2 §15.11).
/// The reserved tail is all ones.
pub fn build_svm_msr_permission_map(map: &mut [u8; SVM_MSRPM_BYTES]) {
    map.fill(0xff);
    for rule in PASS_THROUGH {
        for msr in rule.first..=rule.last {
            let Some((byte, bit)) = svm_msrpm_position(msr) else {
                continue;
            };
            for (access, offset) in [(MsrAccess::Read, 0), (MsrAccess::Write, 1)] {
                if !intercepted(Vendor::Amd, msr, access) {
                    map[byte] &= !(1 << (bit + offset));
                }
            }
        }
    }
}

/// Size of the Intel MSR bitmap (Intel SDM vol 3 §26.6.9): one 4 KiB page.
pub const VMX_MSR_BITMAP_BYTES: usize = 4096;

/// Offset of the read bitmap for the low MSRs; the write bitmaps follow 2 KiB later.
const VMX_READ_LOW: usize = 0;
const VMX_READ_HIGH: usize = 1024;
const VMX_WRITE_LOW: usize = 2048;
const VMX_WRITE_HIGH: usize = 3072;
/// First MSR of the high range.
const VMX_HIGH_BASE: u32 = 0xc000_0000;

/// Where the intercept bit of this access to `msr` lives in the VMX bitmap: (byte offset,
/// bit). `None` for MSRs outside 0–0x1FFF and 0xC000_0000–0xC000_1FFF, which always exit.
pub fn vmx_msr_bitmap_position(msr: u32, access: MsrAccess) -> Option<(usize, u8)> {
    let (index, low) = if msr < MSRS_PER_RANGE {
        (msr, true)
    } else {
        (
            msr.checked_sub(VMX_HIGH_BASE)
                .filter(|&index| index < MSRS_PER_RANGE)?,
            false,
        )
    };
    let offset = match (access, low) {
        (MsrAccess::Read, true) => VMX_READ_LOW,
        (MsrAccess::Read, false) => VMX_READ_HIGH,
        (MsrAccess::Write, true) => VMX_WRITE_LOW,
        (MsrAccess::Write, false) => VMX_WRITE_HIGH,
    };
    Some((offset + index as usize / 8, (index % 8) as u8))
}

/// Fills the Intel MSR bitmap with the [`Vendor::Intel`] policy: read-low at byte 0,
/// read-high at 1024, write-low at 2048, write-high at 3072, one bit per MSR, set = exit
/// (Intel SDM vol 3 §26.6.9).
pub fn build_vmx_msr_bitmap(map: &mut [u8; VMX_MSR_BITMAP_BYTES]) {
    map.fill(0xff);
    for rule in PASS_THROUGH {
        for msr in rule.first..=rule.last {
            for access in [MsrAccess::Read, MsrAccess::Write] {
                if intercepted(Vendor::Intel, msr, access) {
                    continue;
                }
                if let Some((byte, bit)) = vmx_msr_bitmap_position(msr, access) {
                    map[byte] &= !(1 << bit);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MsrAccess::{Read, Write};
    use Vendor::{Amd, Intel};

    fn passes_both_ways(vendor: Vendor, msr: u32) -> bool {
        !intercepted(vendor, msr, Read) && !intercepted(vendor, msr, Write)
    }

    #[test]
    fn policy_table() {
        for vendor in [Amd, Intel] {
            for msr in [0xc000_0100, 0xc000_0101, 0xc000_0102, 0xc000_0103] {
                assert!(passes_both_ways(vendor, msr), "{msr:#x}");
            }
            for msr in 0xc000_0081..=0xc000_0084 {
                assert!(passes_both_ways(vendor, msr), "{msr:#x}");
            }
            for msr in 0x174..=0x176 {
                assert!(passes_both_ways(vendor, msr), "{msr:#x}");
            }
            assert!(passes_both_ways(vendor, 0x277));
            // TSC: read only.
            assert!(!intercepted(vendor, 0x10, Read));
            assert!(intercepted(vendor, 0x10, Write));
            // x2APIC: everything but ICR writes.
            for msr in 0x800..=0x8ff {
                assert!(!intercepted(vendor, msr, Read), "{msr:#x}");
                assert_eq!(intercepted(vendor, msr, Write), msr == 0x830, "{msr:#x}");
            }
            // Neighbours of the pass-through ranges, APIC_BASE and others exit.
            for msr in [
                0x0,
                0xf,
                0x11,
                0x1b,
                0x173,
                0x177,
                0x276,
                0x278,
                0x7ff,
                0x900,
                0xc000_0085,
                0xc000_00ff,
                0xc000_0104,
                0xc001_0000,
                0xc001_0114,
                0xffff_ffff,
            ] {
                assert!(intercepted(vendor, msr, Read), "{msr:#x}");
                assert!(intercepted(vendor, msr, Write), "{msr:#x}");
            }
        }
        // EFER: intercepted both ways on both vendors.
        assert!(intercepted(Amd, 0xc000_0080, Read));
        assert!(intercepted(Amd, 0xc000_0080, Write));
        assert!(intercepted(Intel, 0xc000_0080, Read));
        assert!(intercepted(Intel, 0xc000_0080, Write));
    }

    #[test]
    fn guest_misc_enable_has_fast_strings_and_no_xd_disable_or_cpuid_limit() {
        assert_eq!(guest_misc_enable(0), MISC_ENABLE_FAST_STRING);
        let native = MISC_ENABLE_XD_DISABLE | MISC_ENABLE_LIMIT_CPUID_MAXVAL | (1 << 16) | 1;
        assert_eq!(guest_misc_enable(native), (1 << 16) | 1);
    }

    #[test]
    fn microcode_signature_and_aperf_mperf_are_intercepted() {
        for vendor in [Vendor::Intel, Vendor::Amd] {
            for msr in [IA32_BIOS_SIGN_ID, 0xe7, 0xe8] {
                assert!(intercepted(vendor, msr, MsrAccess::Read), "{msr:#x}");
                assert!(intercepted(vendor, msr, MsrAccess::Write), "{msr:#x}");
            }
        }
    }

    #[test]
    fn every_pass_through_is_encodable() {
        // A pass-through outside the maps' ranges would silently be intercepted.
        for rule in PASS_THROUGH {
            for msr in [rule.first, rule.last] {
                assert!(svm_msrpm_position(msr).is_some(), "{msr:#x}");
                assert!(vmx_msr_bitmap_position(msr, Read).is_some(), "{msr:#x}");
            }
            assert!(rule.first <= rule.last);
        }
    }

    /// Every MSR of the three SVM ranges plus the gaps around them.
    fn svm_msrs() -> impl Iterator<Item = u32> {
        SVM_MSRPM_RANGES
            .iter()
            .flat_map(|&(base, _)| base.saturating_sub(16)..base + MSRS_PER_RANGE + 16)
    }

    #[test]
    fn svm_map_matches_policy() {
        let mut map = [0u8; SVM_MSRPM_BYTES];
        build_svm_msr_permission_map(&mut map);
        for msr in svm_msrs() {
            match svm_msrpm_position(msr) {
                Some((byte, bit)) => {
                    let read = map[byte] & (1 << bit) != 0;
                    let write = map[byte] & (1 << (bit + 1)) != 0;
                    assert_eq!(read, intercepted(Amd, msr, Read), "{msr:#x}");
                    assert_eq!(write, intercepted(Amd, msr, Write), "{msr:#x}");
                }
                // Outside the ranges the hardware always intercepts: so must the policy.
                None => assert!(intercepted(Amd, msr, Read) && intercepted(Amd, msr, Write)),
            }
        }
        assert!(map[0x1800..].iter().all(|&byte| byte == 0xff));
    }

    #[test]
    fn svm_map_layout() {
        assert_eq!(svm_msrpm_position(0), Some((0, 0)));
        assert_eq!(svm_msrpm_position(0x1fff), Some((0x7ff, 6)));
        assert_eq!(svm_msrpm_position(0x2000), None);
        assert_eq!(svm_msrpm_position(0xc000_0000), Some((0x800, 0)));
        assert_eq!(svm_msrpm_position(0xc000_0080), Some((0x800 + 0x20, 0)));
        assert_eq!(svm_msrpm_position(0xc001_1fff), Some((0x17ff, 6)));
        assert_eq!(svm_msrpm_position(0xc001_2000), None);
        assert_eq!(svm_msrpm_position(0xbfff_ffff), None);
        let mut map = [0u8; SVM_MSRPM_BYTES];
        build_svm_msr_permission_map(&mut map);
        // EFER (0xC000_0080): read and write bits set.
        assert_eq!(map[0x820] & 0b11, 0b11);
        // TSC (0x10): byte 4, bits 0–1: read clear, write set.
        assert_eq!(map[4] & 0b11, 0b10);
        // ICR (0x830): byte 0x20c, bits 0–1.
        assert_eq!(map[0x20c] & 0b11, 0b10);
        // FS_BASE .. TSC_AUX (0xC000_0100..=0xC000_0103): byte 0x840 fully clear.
        assert_eq!(map[0x840], 0);
    }

    #[test]
    fn vmx_bitmap_matches_policy() {
        let mut map = [0u8; VMX_MSR_BITMAP_BYTES];
        build_vmx_msr_bitmap(&mut map);
        let msrs =
            (0..MSRS_PER_RANGE + 16).chain(VMX_HIGH_BASE - 16..VMX_HIGH_BASE + MSRS_PER_RANGE + 16);
        for msr in msrs {
            for access in [Read, Write] {
                match vmx_msr_bitmap_position(msr, access) {
                    Some((byte, bit)) => {
                        let exits = map[byte] & (1 << bit) != 0;
                        assert_eq!(
                            exits,
                            intercepted(Intel, msr, access),
                            "{msr:#x} {access:?}"
                        );
                    }
                    None => assert!(intercepted(Intel, msr, access), "{msr:#x}"),
                }
            }
        }
    }

    #[test]
    fn vmx_bitmap_layout() {
        assert_eq!(vmx_msr_bitmap_position(0, Read), Some((0, 0)));
        assert_eq!(vmx_msr_bitmap_position(0x1fff, Read), Some((1023, 7)));
        assert_eq!(vmx_msr_bitmap_position(0xc000_0000, Read), Some((1024, 0)));
        assert_eq!(vmx_msr_bitmap_position(0, Write), Some((2048, 0)));
        assert_eq!(vmx_msr_bitmap_position(0xc000_1fff, Write), Some((4095, 7)));
        assert_eq!(vmx_msr_bitmap_position(0x2000, Read), None);
        assert_eq!(vmx_msr_bitmap_position(0xc001_0000, Write), None);
        let mut map = [0u8; VMX_MSR_BITMAP_BYTES];
        build_vmx_msr_bitmap(&mut map);
        // ICR 0x830: read bit clear, write bit set.
        assert_eq!(map[0x830 / 8] & 1, 0);
        assert_eq!(map[2048 + 0x830 / 8] & 1, 1);
        // EFER intercepted both ways on Intel.
        assert_eq!(map[1024 + 0x80 / 8] & 1, 1);
        assert_eq!(map[3072 + 0x80 / 8] & 1, 1);
    }
}
