//! CPUID: the processor features the hypervisor needs and checks before it starts.

use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::{AtomicU32, Ordering};

/// CPUID.0:EAX, read once at boot ([`record_max_basic_leaf`]) so exits need not ask again.
static MAX_BASIC_LEAF: AtomicU32 = AtomicU32::new(0);

pub fn record_max_basic_leaf() {
    MAX_BASIC_LEAF.store(query(0, 0)[0], Ordering::Relaxed);
}

/// The highest basic CPUID leaf of the processor (0 before [`record_max_basic_leaf`]).
pub fn max_basic_leaf() -> u32 {
    MAX_BASIC_LEAF.load(Ordering::Relaxed)
}

/// Executes CPUID and returns `[eax, ebx, ecx, edx]`.
pub fn query(leaf: u32, subleaf: u32) -> [u32; 4] {
    let result = __cpuid_count(leaf, subleaf);
    [result.eax, result.ebx, result.ecx, result.edx]
}

/// The CPU vendor, which picks the virtualization backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Amd,
    Intel,
    Other,
}

pub fn vendor() -> Vendor {
    let [_, ebx, ecx, edx] = query(0, 0);
    let mut name = [0u8; 12];
    name[0..4].copy_from_slice(&ebx.to_le_bytes());
    name[4..8].copy_from_slice(&edx.to_le_bytes());
    name[8..12].copy_from_slice(&ecx.to_le_bytes());
    match &name {
        b"AuthenticAMD" => Vendor::Amd,
        b"GenuineIntel" => Vendor::Intel,
        _ => Vendor::Other,
    }
}

/// CPUID.1:ECX.x2APIC[bit 21] (Intel SDM vol. 3 §11.12.1).
pub fn has_x2apic() -> bool {
    query(1, 0)[2] & (1 << 21) != 0
}

/// CPUID.8000_0001:ECX.SVM[bit 2] (AMD APM vol. 2 §15.4).
pub fn has_svm() -> bool {
    query(0x8000_0000, 0)[0] >= 0x8000_0001 && query(0x8000_0001, 0)[2] & (1 << 2) != 0
}

/// CPUID.8000_000A:EDX.NP[bit 0] (AMD APM vol. 2 §15.25.1).
pub fn has_nested_paging() -> bool {
    query(0x8000_0000, 0)[0] >= 0x8000_000A && query(0x8000_000A, 0)[3] & 1 != 0
}

/// CPUID.8000_0001:EDX.Page1GB[bit 26].
pub fn has_1gib_pages() -> bool {
    query(0x8000_0001, 0)[3] & (1 << 26) != 0
}

/// This core's x2APIC ID: CPUID.0B:EDX (Intel SDM vol. 3 §11.12.8.1).
pub fn x2apic_id() -> u32 {
    query(0xB, 0)[3]
}
