//! Powering the machine off on request of a partition with the `power` capability.

use crate::arch::{acpi, port};
use crate::partition;

/// Prints the exit counters, then switches the machine off through ACPI (PM1 control,
/// SLP_TYP from `\_S5`, SLP_EN: ACPI 6.5 §4.8.3.2.1). Does not return.
pub fn power_off(requested_by: &str) -> ! {
    log::info!("power-off: requested by {}", requested_by);
    partition::print_counters();
    let method = acpi::power_off_method();
    log::info!("Tessera: power off");
    crate::console::drain();
    if let Some(method) = method {
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
    // The chipset acts on SLP_EN asynchronously (QEMU finishes the current instructions);
    // give it a second before calling the attempt failed.
    crate::arch::tsc::delay_microseconds(1_000_000);
    crate::console::write_line_unlocked(format_args!(
        "PANIC: ACPI power-off did not take effect; halting"
    ));
    crate::arch::halt_forever()
}
