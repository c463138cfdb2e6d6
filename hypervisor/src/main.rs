//! Tessera: a static-partitioning microhypervisor for x86_64.
//!
//! Design principles (docs/architecture.md):
//! * Static configuration: the partition table is validated and lowered at build time into
//!   the statics of [`table`]; the hypervisor never parses configuration and has no heap.
//! * Stay out of the way: a partition owns its cores, memory and devices; the hypervisor
//!   traps only what keeps partitions apart.
//! * Contain, never spread: a guest's fault stops its own partition, nothing else.
//! * Floors, imports pointing down only: [`table`] (the generated table) → [`arch`]
//!   (hardware leaves) → [`virt`] (the vCPU interface, SVM and VMX) → [`exits`] (what each
//!   exit means) → [`runtime`] (partitions and cores) → [`boot`]. `cargo xtask lint` fails
//!   on an upward import.
//! * Unsafe only on the two hardware floors, [`arch`] and [`virt`] (also checked by the
//!   lint); policy lives in `tessera_policy`, safe and tested on the host.
#![no_std]
#![no_main]
// Unsafe operations inside unsafe functions still need their own block and SAFETY note.
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
mod boot;
mod exits;
mod runtime;
mod table;
mod virt;

// The boot path (Multiboot header, 32-bit entry, AP trampoline) is in the loader crate.
use tessera_loader as _;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    arch::console::write_line_unlocked(format_args!(
        "PANIC: core {}: {}",
        arch::cpuid::x2apic_id(),
        info
    ));
    arch::console::drain();
    arch::halt_forever()
}

/// Where the bootstrap core arrives from the loader, in 64-bit mode on the boot stack.
#[no_mangle]
extern "C" fn tessera_bsp_entry(magic: u32, info: u32) -> ! {
    boot::bootstrap(magic, info)
}

/// Where each application processor arrives from the trampoline, on its own stack.
#[no_mangle]
extern "C" fn tessera_ap_entry(index: u64) -> ! {
    arch::x2apic::enable();
    runtime::cores::core_main(table::CoreIndex(index as usize))
}
