//! The local x2APIC: enabling it and sending inter-processor interrupts through the ICR
//! (Intel SDM vol. 3 §11.12; AMD APM vol. 2 §16.11).

use super::msr;
use crate::table::ApicId;

/// ICR delivery modes used by the hypervisor itself (SDM §11.6.1).
const DELIVERY_NMI: u64 = 0b100 << 8;
const DELIVERY_INIT: u64 = 0b101 << 8;
const DELIVERY_STARTUP: u64 = 0b110 << 8;
const LEVEL_ASSERT: u64 = 1 << 14;

/// Switches this core's local APIC to x2APIC mode (xAPIC enable, then x2APIC enable, in
/// that order as SDM §11.12.5 requires).
pub fn enable() {
    // SAFETY: APIC_BASE exists on every CPU with an APIC; setting the enable bits keeps the
    // base address and only changes the APIC's access mode, which nothing else relies on yet.
    unsafe {
        let base = msr::read(msr::IA32_APIC_BASE);
        msr::write(msr::IA32_APIC_BASE, base | msr::APIC_BASE_GLOBAL_ENABLE);
        msr::write(
            msr::IA32_APIC_BASE,
            base | msr::APIC_BASE_GLOBAL_ENABLE | msr::APIC_BASE_X2APIC_ENABLE,
        );
    }
}

/// This core's x2APIC ID, from the x2APIC ID register (MSR 0x802, SDM §11.12.5.1).
pub fn current_id() -> ApicId {
    // SAFETY: every core runs in x2APIC mode once `enable` ran (before any NMI can be sent
    // to it); reading the ID register has no side effects.
    ApicId(unsafe { msr::read(x86::msr::IA32_X2APIC_APICID) as u32 })
}

/// Writes the ICR: in x2APIC mode one 64-bit WRMSR sends the IPI (SDM §11.12.9). Left to
/// the compiler to inline or not (inlined into the ICR filter's path it made that path
/// longer); the doorbell's fast path uses [`send_raw_inline`].
pub fn send_raw(icr: u64) {
    send_raw_inline(icr)
}

/// [`send_raw`], always inlined: the doorbell's fast path writes its precomputed ICR values
/// ([`fixed_icr`]) with it.
#[inline(always)]
pub fn send_raw_inline(icr: u64) {
    // SAFETY: in x2APIC mode the ICR MSR exists; an IPI has no memory effect on this core.
    // Callers pass destinations the hypervisor or the sending partition owns (the
    // doorbell's come from the table).
    unsafe { msr::write(msr::X2APIC_ICR, icr) };
}

fn with_destination(apic_id: ApicId, bits: u64) -> u64 {
    (u64::from(apic_id.0) << 32) | bits
}

/// INIT (assert) to one core: the first step of INIT-SIPI-SIPI (SDM §10.4.4.1).
pub fn send_init(apic_id: ApicId) {
    send_raw(with_destination(apic_id, DELIVERY_INIT | LEVEL_ASSERT));
}

/// Start-up IPI with `vector` = trampoline address >> 12.
pub fn send_startup(apic_id: ApicId, vector: u8) {
    send_raw(with_destination(
        apic_id,
        DELIVERY_STARTUP | LEVEL_ASSERT | u64::from(vector),
    ));
}

/// The ICR value of a fixed interrupt with `vector` to one core: edge, physical
/// destination, the x2APIC ID in bits 63:32 (SDM §11.12.9, figure 11-28). A `const fn`, so
/// that tables built from the partition table at compile time can hold it.
pub const fn fixed_icr(apic_id: ApicId, vector: u8) -> u64 {
    ((apic_id.0 as u64) << 32) | LEVEL_ASSERT | vector as u64
}

/// A fixed interrupt with `vector` to one core (edge, physical destination).
pub fn send_fixed(apic_id: ApicId, vector: u8) {
    send_raw(fixed_icr(apic_id, vector));
}

/// NMI to one core: how the hypervisor signals its own cores (it intercepts NMIs).
pub fn send_nmi(apic_id: ApicId) {
    send_raw(with_destination(apic_id, DELIVERY_NMI | LEVEL_ASSERT));
}

/// x2APIC register MSRs used by [`reset_for_restart`] (SDM vol. 3 §11.12.1.2, table 11-6),
/// named by the x86 crate; CMCI's LVT entry (0x82F) is not.
use x86::msr::{
    IA32_TSC_DEADLINE as TSC_DEADLINE, IA32_X2APIC_EOI as END_OF_INTERRUPT,
    IA32_X2APIC_INIT_COUNT as TIMER_INITIAL_COUNT, IA32_X2APIC_ISR0 as IN_SERVICE_FIRST,
    IA32_X2APIC_LVT_ERROR as LVT_ERROR, IA32_X2APIC_LVT_LINT0 as LVT_LINT0,
    IA32_X2APIC_LVT_LINT1 as LVT_LINT1, IA32_X2APIC_LVT_PMI as LVT_PERFORMANCE_COUNTER,
    IA32_X2APIC_LVT_THERMAL as LVT_THERMAL, IA32_X2APIC_LVT_TIMER as LVT_TIMER,
    IA32_X2APIC_TPR as TASK_PRIORITY, IA32_X2APIC_VERSION as VERSION,
};
const LVT_CORRECTED_MACHINE_CHECK: u32 = 0x82F;
const LVT_MASKED: u64 = 1 << 16;

/// Puts this core's local APIC back into the state a partition may start from, as far as
/// software can (SDM vol. 3 §11.4.7.1 lists the reset state): every local vector table
/// entry masked, the timer stopped (one-shot count and TSC deadline zero), the task
/// priority zero, and every interrupt in service ended. Interrupts already requested (IRR)
/// cannot be withdrawn by software; they are delivered once the restarted guest enables
/// them, as a late interrupt would be. The spurious-vector register keeps the APIC enabled:
/// the hypervisor sends its signals from this APIC.
pub fn reset_for_restart() {
    // SAFETY: every register below exists in x2APIC mode (the LVT entries beyond the four
    // every APIC has only when the version register's max-LVT field says so, SDM §11.5.1);
    // the writes touch only this core's APIC, which belongs to the partition being
    // restarted, and TSC_DEADLINE only where CPUID.1:ECX bit 24 reports it.
    unsafe {
        let highest_lvt = (msr::read(VERSION) >> 16) & 0xFF;
        for (register, exists) in [
            (LVT_TIMER, true),
            (LVT_LINT0, true),
            (LVT_LINT1, true),
            (LVT_ERROR, true),
            (LVT_PERFORMANCE_COUNTER, highest_lvt >= 4),
            (LVT_THERMAL, highest_lvt >= 5),
            (LVT_CORRECTED_MACHINE_CHECK, highest_lvt >= 6),
        ] {
            if exists {
                msr::write(register, LVT_MASKED);
            }
        }
        msr::write(TIMER_INITIAL_COUNT, 0);
        if super::cpuid::query(1, 0)[2] & (1 << 24) != 0 {
            msr::write(TSC_DEADLINE, 0);
        }
        msr::write(TASK_PRIORITY, 0);
        // Each EOI ends the highest-priority interrupt in service (SDM §11.8.5); at most
        // 256 can be.
        for _ in 0..256 {
            if (0..8).all(|word| msr::read(IN_SERVICE_FIRST + word) == 0) {
                break;
            }
            msr::write(END_OF_INTERRUPT, 0);
        }
    }
}
