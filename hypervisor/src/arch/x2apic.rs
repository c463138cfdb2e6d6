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
    ApicId(unsafe { msr::read(0x802) as u32 })
}

/// Writes the ICR: in x2APIC mode one 64-bit WRMSR sends the IPI (SDM §11.12.9).
pub fn send_raw(icr: u64) {
    // SAFETY: in x2APIC mode the ICR MSR exists; an IPI has no memory effect on this core.
    // Callers pass destinations the hypervisor or the sending partition owns.
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

/// A fixed interrupt with `vector` to one core (edge, physical destination).
pub fn send_fixed(apic_id: ApicId, vector: u8) {
    send_raw(with_destination(apic_id, LEVEL_ASSERT | u64::from(vector)));
}

/// NMI to one core: how the hypervisor signals its own cores (it intercepts NMIs).
pub fn send_nmi(apic_id: ApicId) {
    send_raw(with_destination(apic_id, DELIVERY_NMI | LEVEL_ASSERT));
}
