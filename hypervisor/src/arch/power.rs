//! Switching the machine off through the ACPI PM1 control registers.

use super::{acpi, port};

/// Writes SLP_TYP (from `\_S5`) with SLP_EN to the PM1a and PM1b control ports (ACPI 6.5
/// §4.8.3.2.1). The chipset acts asynchronously: the caller waits and reports a failure.
pub fn enter_soft_off(method: &acpi::PowerOff) {
    let value = (u16::from(method.sleep_type) << 10) | (1 << 13);
    // SAFETY: the PM1 control ports belong to the platform's ACPI hardware, which no
    // partition owns; writing SLP_TYP|SLP_EN switches the machine off, which is the point.
    unsafe {
        port::write_u16(method.pm1a_control_port, value);
        if method.pm1b_control_port != 0 {
            port::write_u16(method.pm1b_control_port, value);
        }
    }
}

/// Resets the whole machine: the chipset's reset control register (port 0xcf9, value 0x06:
/// SYS_RST with RST_CPU, a full reset — Intel I/O Controller Hub datasheets, "Reset
/// Control Register"), then, should the chipset lack it, the 8042 keyboard controller's
/// pulse of the reset line (command 0xfe to port 0x64).
pub fn reset_machine() {
    // SAFETY: both ports belong to the platform's chipset, which no partition owns (the
    // validator keeps 0xcf9 and 0x64 from every partition); resetting the machine is the
    // point.
    unsafe {
        port::write_u8(0xcf9, 0x02);
        port::write_u8(0xcf9, 0x06);
    }
    super::tsc::delay_microseconds(100_000);
    // SAFETY: as above.
    unsafe { port::write_u8(0x64, 0xfe) };
}
