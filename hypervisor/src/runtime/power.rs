//! Powering the machine off on request of a partition with the `power` capability.

use super::{health, partition};
use crate::arch::{self, acpi, console, tsc};

/// Prints the exit counters, then switches the machine off through ACPI (`\_S5`). Does not
/// return.
pub fn power_off(requested_by: &str) -> ! {
    // The partition asking waits here from now on and beats no more.
    health::stop_watchdogs();
    log::info!("power-off: requested by {}", requested_by);
    partition::print_counters();
    arch::amd_iommu::poll_events(health::device_fault_at_power_off);
    if let Some((page_faults, other)) = arch::amd_iommu::event_counts() {
        log::info!("iommu: blocked-dma={} other-events={}", page_faults, other);
    }
    arch::intel_iommu::poll_faults(|source, _| health::device_fault_at_power_off(source));
    if let Some(faults) = arch::intel_iommu::fault_count() {
        log::info!(
            "iommu: blocked-dma={} other-events=0 blocked-interrupts={}",
            faults,
            arch::intel_iommu::interrupt_fault_count()
        );
    }
    health::print_device_faults();
    if let Some((at_boot, since_boot, interrupt_entries)) =
        arch::amd_iommu::invalidation_counts().or_else(arch::intel_iommu::invalidation_counts)
    {
        log::info!(
            "iommu: invalidations translation-at-boot={} translation-since-boot={} interrupt-entries={}",
            at_boot,
            since_boot,
            interrupt_entries
        );
    }
    let method = acpi::power_off_method();
    log::info!("Tessera: power off");
    console::drain();
    if let Some(method) = method {
        arch::power::enter_soft_off(&method);
    }
    // The chipset acts on SLP_EN asynchronously (QEMU finishes the current instructions);
    // give it a second before calling the attempt failed.
    tsc::delay_microseconds(1_000_000);
    console::write_line_unlocked(format_args!(
        "PANIC: ACPI power-off did not take effect; halting"
    ));
    arch::halt_forever()
}
