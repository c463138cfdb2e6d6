//! Facts about the processor the guest runs on, from CPUID, and the time-stamp counter.

use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};

/// CPUID leaf 1 ECX bit 31: "hypervisor present" (reserved as zero on real processors,
/// set by hypervisors by convention).
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID leaf of the x2APIC topology (Intel SDM Vol. 2A, CPUID leaf 0BH).
const CPUID_X2APIC_TOPOLOGY_LEAF: u32 = 0xb;

/// The x86 vendor, from CPUID leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Amd,
    Intel,
    Other,
}

/// The vendor string of CPUID leaf 0 (EBX, EDX, ECX order).
pub fn vendor_string() -> [u8; 12] {
    let CpuidResult { ebx, ecx, edx, .. } = __cpuid(0);
    registers_to_bytes(ebx, edx, ecx)
}

pub fn vendor() -> Vendor {
    match &vendor_string() {
        b"AuthenticAMD" => Vendor::Amd,
        b"GenuineIntel" => Vendor::Intel,
        _ => Vendor::Other,
    }
}

fn registers_to_bytes(first: u32, second: u32, third: u32) -> [u8; 12] {
    let mut bytes = [0; 12];
    bytes[0..4].copy_from_slice(&first.to_le_bytes());
    bytes[4..8].copy_from_slice(&second.to_le_bytes());
    bytes[8..12].copy_from_slice(&third.to_le_bytes());
    bytes
}

/// The x2APIC ID of the current core: CPUID leaf 0xB EDX, or the 8-bit initial APIC ID
/// of leaf 1 EBX[31:24] on processors without leaf 0xB.
pub fn current_core() -> u32 {
    let highest_leaf = __cpuid(0).eax;
    if highest_leaf >= CPUID_X2APIC_TOPOLOGY_LEAF {
        let topology = __cpuid_count(CPUID_X2APIC_TOPOLOGY_LEAF, 0);
        // EBX = 0 means the leaf is not implemented despite the highest-leaf value.
        if topology.ebx != 0 {
            return topology.edx;
        }
    }
    __cpuid(1).ebx >> 24
}

/// The time-stamp counter (not intercepted by Tessera).
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter; CR4.TSD is clear (the runtime never sets it),
    // so it cannot fault at CPL 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The 12-byte hypervisor signature of CPUID 0x4000_0000 (EBX, ECX, EDX), if CPUID
/// leaf 1 says a hypervisor is present.
pub fn hypervisor_signature() -> Option<[u8; 12]> {
    if __cpuid(1).ecx & CPUID_1_ECX_HYPERVISOR == 0 {
        return None;
    }
    let CpuidResult { ebx, ecx, edx, .. } = __cpuid(tessera_abi::hypercall::CPUID_SIGNATURE_LEAF);
    Some(registers_to_bytes(ebx, ecx, edx))
}

/// Whether the hypervisor's signature names Tessera.
pub fn running_on_tessera() -> bool {
    let name = b"Tessera";
    hypervisor_signature().is_some_and(|signature| signature.starts_with(name))
}

/// Halts the processor until the next interrupt; with interrupts off (as the runtime
/// runs), for good, apart from NMIs.
pub fn halt() {
    // SAFETY: HLT has no memory effects; at CPL 0 it only waits.
    unsafe { core::arch::asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

/// Waits a little without leaving the core (PAUSE, not intercepted by Tessera).
pub fn pause(iterations: u32) {
    for _ in 0..iterations {
        core::hint::spin_loop();
    }
}
