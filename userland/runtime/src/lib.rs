//! tessera-guest: the small runtime every Tessera demo and test guest is built on.
//!
//! A guest binary is `#![no_std]` + `#![no_main]`, names its main function with
//! [`entry!`], and is linked with `guest.ld` (its build script gets the path from
//! `DEP_TESSERA_GUEST_LINKER_SCRIPT`). The runtime then provides:
//!
//! * [`boot`]: entry by the PVH boot protocol (Xen's `docs/misc/pvh.pandoc`), the same
//!   protocol QEMU's `-kernel` and third-party kernels use. The 32-bit entry builds an
//!   identity map of the first 4 GiB of guest-physical space, enters long mode and calls
//!   the guest's main with a [`BootInfo`].
//! * [`start_info`]: the parsed `hvm_start_info`: command line and memory map, copied
//!   into the runtime so the guest may overwrite the loader's copies.
//! * [`console`]: a polled 16550 UART at the port named by `console=0x…`, behind
//!   [`print!`] and [`println!`].
//! * [`hypercall`]: the Tessera hypercall ABI (`tessera-abi`) with VMMCALL or VMCALL.
//! * [`processor`]: CPUID-derived facts, the time-stamp counter, MSRs, the interrupt flag.
//! * [`interrupts`]: the IDT; exceptions print vector, RIP and error code and stop the
//!   partition (status 6); [`interrupts::set_handler`] installs a handler per vector.
//! * [`x2apic`]: the local APIC in x2APIC mode: EOI, timer (one-shot, periodic,
//!   TSC-deadline), IPIs, self-IPIs.
//! * [`time`]: the TSC frequency, delays, and the APIC timer calibrated against the TSC.
//! * [`ioapic`]: I/O APIC redirection entries (select/window MMIO at 0xFEC00000).
//! * [`smp`]: starting the partition's other cores by INIT-SIPI-SIPI.
//! * [`sync`]: a spin lock that masks interrupts while held.
//! * A panic handler that prints the message and stops the partition with status 1.
//!
//! Design principles: simple and clear over fast and clever; no heap; global state only
//! where hardware is global (the console, the IDT and its handler table, the started
//! cores), each behind atomics or a lock; the pure parts (command line, memory ranges)
//! are host-testable (`cargo test -p tessera-guest --target x86_64-unknown-linux-gnu`),
//! and only the boot and trampoline code, port and MMIO accesses, MSRs and the
//! hypercall instructions are unsafe.
#![cfg_attr(not(test), no_std)]

pub mod boot;
pub mod command_line;
pub mod console;
pub mod hypercall;
pub mod interrupts;
pub mod ioapic;
pub mod memory;
pub mod processor;
pub mod smp;
pub mod start_info;
pub mod sync;
pub mod time;
pub mod x2apic;

pub use command_line::CommandLine;
pub use hypercall::{hypercall, partition_count, partition_state, power_off, stop_self};
pub use memory::MemoryRange;
pub use processor::{current_core, hypervisor_signature, rdtsc};
pub use start_info::BootInfo;

/// Exit status the runtime reports when the guest panics.
pub const PANIC_EXIT_STATUS: u64 = 1;

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("panic: {}", info);
    hypercall::stop_self(PANIC_EXIT_STATUS)
}
