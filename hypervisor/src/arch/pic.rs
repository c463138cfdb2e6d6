//! The legacy 8259 programmable interrupt controllers, which the hypervisor only silences.

use super::port;

/// Masks both 8259 PICs. The firmware may leave the timer routed through them to core 0's
/// LINT0 (ExtINT); no partition owns their ports, so a guest could never mask them, and an
/// ExtINT request with nothing behind it reaches the guest as a bogus interrupt.
pub fn mask_all() {
    // SAFETY: ports 0x21 and 0xA1 are the interrupt-mask registers of the master and slave
    // 8259 (OCW1); masking every line only stops legacy interrupts nobody uses.
    unsafe {
        port::write_u8(0x21, 0xFF);
        port::write_u8(0xA1, 0xFF);
    }
}
