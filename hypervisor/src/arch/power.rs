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
