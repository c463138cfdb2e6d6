//! The hardware floor: the leaf modules that touch x86 hardware and firmware directly —
//! port I/O, MSRs, CPUID, the x2APIC and IOAPIC, descriptor tables, the TSC, the UART, ACPI
//! tables, partition memory. They call nothing above them (`cargo xtask lint` checks it);
//! everything that is policy lives elsewhere, in safe code.

pub mod acpi;
pub mod ap_startup;
pub mod boot_memory;
pub mod console;
pub mod cpu;
pub mod cpuid;
pub mod guest_memory;
pub mod ioapic;
pub mod msr;
pub mod pic;
pub mod port;
pub mod power;
pub mod tsc;
pub mod x2apic;

/// Stops this core for good: interrupts off and, on SVM, the global interrupt flag stays
/// clear, so nothing wakes it.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI and HLT only stop this core; no memory is touched.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// A spin-wait hint for busy loops.
pub fn pause() {
    core::hint::spin_loop();
}
