//! Model-specific registers: the numbers the hypervisor uses and RDMSR/WRMSR.

// The architectural MSR numbers the x86 crate names (SDM vol. 4); the rest below.
pub use x86::msr::{
    IA32_APIC_BASE, IA32_CSTAR, IA32_EFER, IA32_FMASK, IA32_KERNEL_GSBASE, IA32_LSTAR, IA32_STAR,
    IA32_TSC_AUX, IA32_X2APIC_ICR as X2APIC_ICR,
};
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10A;
pub const IA32_XAPIC_DISABLE_STATUS: u32 = 0xBD;
/// IA32_ARCH_CAPABILITIES bit 21: IA32_XAPIC_DISABLE_STATUS exists.
pub const ARCH_CAPABILITIES_XAPIC_DISABLE: u64 = 1 << 21;
/// IA32_XAPIC_DISABLE_STATUS bit 0: the legacy xAPIC is disabled (x2APIC locked on).
pub const XAPIC_DISABLE_STATUS_LEGACY_DISABLED: u64 = 1;
/// AMD APM vol. 2 §15.30.1: VM_CR, bit 4 SVMDIS set by firmware disables SVM.
pub const AMD_VM_CR: u32 = 0xC001_0114;
/// AMD APM vol. 2 §15.30.4: physical address of the host state-save area.
pub const AMD_VM_HSAVE_PA: u32 = 0xC001_0117;

pub use x86::msr::IA32_MISC_ENABLE;

/// IA32_SPEC_CTRL (SDM vol. 4 table 2-2; not in the x86 crate).
pub const IA32_SPEC_CTRL: u32 = 0x48;

pub const EFER_SVME: u64 = 1 << 12;
/// APIC_BASE bits: x2APIC enable (bit 10) and xAPIC global enable (bit 11), SDM §11.12.1.
pub const APIC_BASE_X2APIC_ENABLE: u64 = 1 << 10;
pub const APIC_BASE_GLOBAL_ENABLE: u64 = 1 << 11;
pub const APIC_BASE_BSP: u64 = 1 << 8;

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this CPU (else #GP, which the hypervisor treats as a bug).
pub unsafe fn read(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR only reads it.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must keep the hypervisor's own invariants (paging,
/// long mode, SVM/VMX enablement, the x2APIC mode) intact.
pub unsafe fn write(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is valid and harmless to the hypervisor.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
}

/// This core's IA32_APIC_BASE.
pub fn apic_base() -> u64 {
    // SAFETY: APIC_BASE exists on every CPU the hypervisor accepts (x2APIC is required at
    // boot); reading it has no side effects.
    unsafe { read(IA32_APIC_BASE) }
}

/// IA32_ARCH_CAPABILITIES, if the processor has it (CPUID.7.0:EDX bit 29, SDM vol. 4).
pub fn arch_capabilities() -> Option<u64> {
    // SAFETY: CPUID said the MSR exists; reading it has no side effects.
    (super::cpuid::query(7, 0)[3] & (1 << 29) != 0).then(|| unsafe { read(IA32_ARCH_CAPABILITIES) })
}

/// IA32_MISC_ENABLE, on an Intel processor (family 6 and later have it, SDM vol. 4 table
/// 2-2); None on any other.
pub fn misc_enable() -> Option<u64> {
    if super::cpuid::vendor() != super::cpuid::Vendor::Intel
        || super::cpuid::query(1, 0)[0] >> 8 & 0xF < 6
    {
        return None;
    }
    // SAFETY: Intel processors of family 6 and later implement the MSR (checked above);
    // reading it has no side effects.
    Some(unsafe { read(IA32_MISC_ENABLE) })
}
