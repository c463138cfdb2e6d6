//! Facts about the processor the guest runs on, from CPUID, the time-stamp counter,
//! model-specific registers and the interrupt flag.

use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};
use core::sync::atomic::{AtomicU8, Ordering};

/// CPUID leaf 1 ECX bit 31: "hypervisor present" (reserved as zero on real processors,
/// set by hypervisors by convention).
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID leaf of the x2APIC topology (Intel SDM Vol. 2A, CPUID leaf 0BH).
const CPUID_X2APIC_TOPOLOGY_LEAF: u32 = 0xb;
/// CPUID leaf 1 ECX bit 21: x2APIC supported.
const CPUID_1_ECX_X2APIC: u32 = 1 << 21;
/// CPUID leaf 1 ECX bit 24: the local APIC timer supports TSC-deadline mode.
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// RFLAGS.IF: maskable interrupts enabled.
const RFLAGS_INTERRUPT_ENABLE: u64 = 1 << 9;

/// Whether this runs on Tessera: unknown until first asked, then cached (each CPUID is
/// a VM exit under Tessera).
static ON_TESSERA: AtomicU8 = AtomicU8::new(ON_TESSERA_UNKNOWN);
const ON_TESSERA_UNKNOWN: u8 = 0;
const ON_TESSERA_NO: u8 = 1;
const ON_TESSERA_YES: u8 = 2;

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

/// Whether the hypervisor's signature names Tessera (asked once, then cached).
pub fn running_on_tessera() -> bool {
    match ON_TESSERA.load(Ordering::Relaxed) {
        ON_TESSERA_YES => true,
        ON_TESSERA_NO => false,
        _ => {
            let name = b"Tessera";
            let answer =
                hypervisor_signature().is_some_and(|signature| signature.starts_with(name));
            let stored = if answer {
                ON_TESSERA_YES
            } else {
                ON_TESSERA_NO
            };
            ON_TESSERA.store(stored, Ordering::Relaxed);
            answer
        }
    }
}

/// The highest hypervisor CPUID leaf (EAX of 0x4000_0000), if a hypervisor is present.
pub fn highest_hypervisor_leaf() -> Option<u32> {
    hypervisor_signature()?;
    Some(__cpuid(tessera_abi::hypercall::CPUID_SIGNATURE_LEAF).eax)
}

/// CPUID leaf `leaf` (subleaf 0), if the processor (or hypervisor) reports that leaf:
/// basic leaves up to EAX of leaf 0, hypervisor leaves up to EAX of 0x4000_0000.
pub fn cpuid_if_present(leaf: u32) -> Option<CpuidResult> {
    let highest = if leaf >= tessera_abi::hypercall::CPUID_SIGNATURE_LEAF {
        highest_hypervisor_leaf()?
    } else {
        __cpuid(0).eax
    };
    (leaf <= highest).then(|| __cpuid_count(leaf, 0))
}

/// Whether the processor has an x2APIC (CPUID 1 ECX bit 21).
pub fn has_x2apic() -> bool {
    __cpuid(1).ecx & CPUID_1_ECX_X2APIC != 0
}

/// Whether the local APIC timer has TSC-deadline mode (CPUID 1 ECX bit 24).
pub fn has_tsc_deadline() -> bool {
    __cpuid(1).ecx & CPUID_1_ECX_TSC_DEADLINE != 0
}

/// Reads the model-specific register `msr`.
///
/// # Safety
///
/// The MSR must exist on this processor in its current mode (RDMSR of anything else
/// raises #GP), and reading it must have no side effect the caller has not planned for.
pub unsafe fn read_msr(msr: u32) -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: the caller guarantees the MSR exists and may be read; RDMSR touches no
    // memory.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes `value` to the model-specific register `msr`.
///
/// # Safety
///
/// The MSR must exist and accept `value` (else #GP), and the write must not break
/// anything the program relies on (paging, segmentation, memory types).
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR exists, accepts the value and that the
    // write is harmless to the rest of the program; WRMSR touches no memory.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
            in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags));
    }
}

/// Whether maskable interrupts are enabled on this core (RFLAGS.IF).
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: PUSHFQ/POP only move RFLAGS through the stack slot the asm block owns.
    unsafe {
        core::arch::asm!("pushfq", "pop {flags}", flags = out(reg) flags,
            options(nomem, preserves_flags));
    }
    flags & RFLAGS_INTERRUPT_ENABLE != 0
}

/// Masks maskable interrupts on this core (CLI).
pub fn disable_interrupts() {
    // SAFETY: CLI only clears RFLAGS.IF; at CPL 0 it cannot fault. It is not a compiler
    // barrier on memory, so the asm is not marked `nomem`: code that relies on it for
    // exclusion keeps its memory accesses on the right side.
    unsafe { core::arch::asm!("cli", options(nostack)) };
}

/// Unmasks maskable interrupts on this core (STI). Interrupt handlers must be in place
/// ([`crate::interrupts`]) before any interrupt source is enabled.
pub fn enable_interrupts() {
    // SAFETY: STI only sets RFLAGS.IF; the runtime's IDT handles every vector (unknown
    // ones stop the partition cleanly), so any interrupt taken afterwards is dispatched.
    unsafe { core::arch::asm!("sti", options(nostack)) };
}

/// Enables interrupts and halts until the next one, atomically: STI takes effect only
/// after the following instruction, so an interrupt that is already pending wakes the
/// HLT instead of being taken before it. Returns with interrupts disabled again, so the
/// caller can re-check its condition without a race.
pub fn wait_for_interrupt() {
    // SAFETY: STI; HLT; CLI only change RFLAGS.IF and wait; the handler of whatever
    // interrupt wakes the core runs in between, like any interrupt handler.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
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

/// Writes the byte `value` to I/O port `port`.
///
/// Port I/O touches no memory of this program, so it is safe in the memory sense; what the
/// device behind the port does is the caller's business (a guest under Tessera reaches only
/// its own ports, the hypervisor emulates or refuses the rest).
pub fn port_write_u8(port: u16, value: u8) {
    // SAFETY: OUT touches no memory (see above).
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value,
            options(nomem, nostack, preserves_flags));
    }
}

/// Reads a byte from I/O port `port` (see [`port_write_u8`]).
pub fn port_read_u8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: IN touches no memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value,
            options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes the doubleword `value` to I/O port `port` (see [`port_write_u8`]).
pub fn port_write_u32(port: u16, value: u32) {
    // SAFETY: OUT touches no memory.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value,
            options(nomem, nostack, preserves_flags));
    }
}

/// Reads a doubleword from I/O port `port` (see [`port_write_u8`]).
pub fn port_read_u32(port: u16) -> u32 {
    let value: u32;
    // SAFETY: IN touches no memory.
    unsafe {
        core::arch::asm!("in eax, dx", in("dx") port, out("eax") value,
            options(nomem, nostack, preserves_flags));
    }
    value
}
