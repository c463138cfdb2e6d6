//! x86 I/O-port instructions.
//!
//! Port I/O is not memory-unsafe in itself, but a write to the wrong port can reset the
//! machine or reprogram a device another partition owns. The functions are therefore
//! `unsafe`, and callers state which device the port belongs to.

/// Reads one byte from `port`.
///
/// # Safety
/// The port must belong to a device the hypervisor owns (its console, the PIT during
/// calibration, the ACPI PM block at power-off) or to the partition on whose behalf the
/// access is made.
pub unsafe fn read_u8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller guarantees the port is ours to use; IN has no memory effects.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes one byte to `port`.
///
/// # Safety
/// As for [`read_u8`].
pub unsafe fn write_u8(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port is ours to use; OUT has no memory effects.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes one 16-bit word to `port`.
///
/// # Safety
/// As for [`read_u8`].
pub unsafe fn write_u16(port: u16, value: u16) {
    // SAFETY: the caller guarantees the port is ours to use; OUT has no memory effects.
    unsafe {
        core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}
