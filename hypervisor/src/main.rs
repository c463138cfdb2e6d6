//! Tessera: a static-partitioning microhypervisor for x86_64.
//!
//! Design principles (see shared/DESIGN.md and docs/):
//! * Static configuration: the partition table is validated and lowered at build time into
//!   the statics of [`table`]; the hypervisor never parses configuration and has no heap.
//! * Stay out of the way: a partition owns its cores, memory and devices; the hypervisor
//!   traps only what keeps partitions apart.
//! * Contain, never spread: a guest's fault stops its own partition, nothing else.
//! * Unsafe only in the leaf modules that touch hardware ([`arch`], the backends in
//!   [`virt`]); policy lives in `tessera_policy`, safe and tested on the host.
#![no_std]
#![no_main]
// Unsafe operations inside unsafe functions still need their own block and SAFETY note.
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
mod console;
mod hypercall;
mod ioapic_emulation;
mod memory;
mod msr_emulation;
mod partition;
mod power;
mod smp;
mod table;
mod virt;

// The boot path (Multiboot header, 32-bit entry, AP trampoline) is in the loader crate.
use tessera_loader as _;

use arch::{cpuid, tsc, x2apic};
use core::sync::atomic::{AtomicU64, Ordering};
use table::MACHINE;

/// Stops the boot with a clear console message when the machine cannot run the table.
fn refuse(reason: core::fmt::Arguments) -> ! {
    console::write_line_unlocked(format_args!("REFUSED: {reason}"));
    console::drain();
    arch::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::write_line_unlocked(format_args!("PANIC: core {}: {}", cpuid::x2apic_id(), info));
    console::drain();
    arch::halt_forever()
}

/// TSC value when the first guest instruction is about to run (for boot-time figures).
static FIRST_GUEST_ENTRY_TSC: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __tessera_image_start: u8;
    static __tessera_load_end: u8;
    static __tessera_image_end: u8;
}

/// Multiboot v1 information fields the hypervisor reads (Multiboot spec §3.3).
struct MultibootInfo {
    flags: u32,
    mmap_length: u32,
    mmap_address: u32,
}

fn read_multiboot_info(address: u32) -> MultibootInfo {
    // SAFETY: a Multiboot loader (checked by the magic) left a valid information block at
    // this address, below 4 GiB, which the boot page tables identity-map; it is only read.
    let words = unsafe { core::slice::from_raw_parts(address as usize as *const u32, 13) };
    MultibootInfo {
        flags: words[0],
        mmap_length: words[11],
        mmap_address: words[12],
    }
}

/// Checks that the firmware's memory map has every byte the table uses as RAM.
fn check_memory(info: &MultibootInfo) {
    if info.flags & (1 << 6) == 0 {
        refuse(format_args!(
            "the boot loader gave no memory map (Multiboot flag 6)"
        ));
    }
    // SAFETY: flag 6 says mmap_address/mmap_length describe the loader's memory map, in
    // identity-mapped memory below 4 GiB; it is only read.
    let map = unsafe {
        core::slice::from_raw_parts(
            info.mmap_address as usize as *const u8,
            info.mmap_length as usize,
        )
    };
    let available = || {
        tessera_policy::multiboot::parse_memory_map(map)
            .filter(|(_, kind)| *kind == tessera_policy::multiboot::MemoryKind::Available)
            .map(|(range, _)| range)
    };
    let mut needed = heapless::Vec::<(&str, tessera_abi::table::Range), 64>::new();
    let _ = needed.push(("the hypervisor", MACHINE.hypervisor_memory));
    for partition in MACHINE.partitions {
        for mapping in partition.memory {
            let _ = needed.push((partition.name, mapping.host));
        }
    }
    for (owner, range) in needed {
        if range.end() > 0x1_0000_0000 {
            refuse(format_args!(
                "memory {:#x}..{:#x} of {} lies above 4 GiB, which this version does not map",
                range.base,
                range.end(),
                owner
            ));
        }
        if !tessera_policy::multiboot::covers(available(), range) {
            refuse(format_args!(
                "memory {:#x}..{:#x} of {} is not RAM on this machine (firmware memory map)",
                range.base,
                range.end(),
                owner
            ));
        }
    }
}

/// Checks that every core of the table is listed in the ACPI MADT.
fn check_cores() {
    let mut present = heapless::Vec::<u32, 256>::new();
    if !arch::acpi::for_each_core(|apic_id| {
        let _ = present.push(apic_id);
    }) {
        refuse(format_args!("no ACPI MADT: cannot tell which cores exist"));
    }
    for &apic_id in MACHINE.cpus {
        if !present.contains(&apic_id) {
            refuse(format_args!(
                "core {} of the table does not exist here (the MADT lists {:?}); the table needs {} cores",
                apic_id,
                present.as_slice(),
                MACHINE.cpus.len()
            ));
        }
    }
}

fn print_banner(backend: &str) {
    log::info!(
        "Tessera {} backend={} table={} platform={} cores={:?} tsc={}kHz",
        env!("CARGO_PKG_VERSION"),
        backend,
        MACHINE.table_name,
        MACHINE.platform_name,
        MACHINE.cpus,
        tsc::khz()
    );
    // Only the addresses of the linker symbols are taken.
    let (start, load_end, end) = (
        &raw const __tessera_image_start as u64,
        &raw const __tessera_load_end as u64,
        &raw const __tessera_image_end as u64,
    );
    log::info!(
        "hypervisor memory: {} KiB used of {} KiB (image {} KiB, static state {} KiB)",
        (end - start) / 1024,
        MACHINE.hypervisor_memory.size / 1024,
        (load_end - start) / 1024,
        (end - load_end) / 1024
    );
    for partition in MACHINE.partitions {
        let ram: u64 = partition
            .memory
            .iter()
            .filter(|mapping| mapping.kind == tessera_abi::table::MappingKind::Ram)
            .map(|mapping| mapping.host.size)
            .sum();
        log::info!(
            "partition {}: cores={:?} ram={} KiB regions={} ports={} on-fault={:?}",
            partition.name,
            partition.cpus,
            ram / 1024,
            partition.memory.len(),
            partition.ports.len(),
            partition.on_fault
        );
    }
}

/// Masks both 8259 PICs. The firmware may leave the timer routed through them to core 0's
/// LINT0 (ExtINT); no partition owns their ports, so a guest could never mask them, and an
/// ExtINT request with nothing behind it reaches the guest as a bogus interrupt.
fn mask_legacy_pics() {
    // SAFETY: ports 0x21 and 0xA1 are the interrupt-mask registers of the master and slave
    // 8259 (OCW1); masking every line only stops legacy interrupts nobody uses.
    unsafe {
        arch::port::write_u8(0x21, 0xFF);
        arch::port::write_u8(0xA1, 0xFF);
    }
}

/// Where the bootstrap core arrives from the loader, in 64-bit mode on the boot stack.
#[no_mangle]
extern "C" fn tessera_bsp_entry(magic: u32, info: u32) -> ! {
    let entered = tsc::read();
    console::init(MACHINE.console.port);
    arch::cpu::init_idt();
    mask_legacy_pics();
    if magic != tessera_loader::MULTIBOOT_BOOTLOADER_MAGIC {
        refuse(format_args!(
            "not started by a Multiboot loader (EAX = {magic:#x})"
        ));
    }
    cpuid::record_max_basic_leaf();
    let backend = match cpuid::vendor() {
        cpuid::Vendor::Amd => match virt::svm::check_support() {
            Ok(()) => virt::Backend::Svm,
            Err(missing) => refuse(format_args!("{}", missing.describe())),
        },
        cpuid::Vendor::Intel => match virt::vmx::check_support() {
            Ok(capabilities) => virt::Backend::Vmx(capabilities),
            Err(missing) => refuse(format_args!("{missing}")),
        },
        cpuid::Vendor::Other => refuse(format_args!(
            "unknown CPU vendor: neither AMD SVM nor Intel VMX"
        )),
    };
    if !cpuid::has_x2apic() {
        refuse(format_args!(
            "the CPU lacks x2APIC (CPUID 1:ECX bit 21), which Tessera requires"
        ));
    }
    x2apic::enable();
    let bsp = cpuid::x2apic_id();
    let Some(bsp_index) = table::cpu_index(bsp) else {
        refuse(format_args!(
            "the boot core (x2APIC ID {bsp}) is not among the table's cores {:?}",
            MACHINE.cpus
        ));
    };
    check_cores();
    check_memory(&read_multiboot_info(info));
    tsc::calibrate();
    if let Err((table_pins, hardware_pins)) = ioapic_emulation::init() {
        refuse(format_args!(
            "the table gives the IOAPIC {table_pins} pins; the hardware has {hardware_pins}"
        ));
    }
    print_banner(backend.name());
    log::info!("boot: hypervisor entered at tsc={}", entered);

    let roots = match memory::build_stage2_tables(&backend) {
        Ok(roots) => roots,
        Err((index, error)) => refuse(format_args!(
            "stage-2 tables of {}: {:?}",
            MACHINE.partitions[index].name, error
        )),
    };
    let mut entries = [None; table::PARTITION_COUNT];
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        smp::build_permission_maps(&backend, index, partition);
        match memory::load_partition(partition, 0) {
            Ok(entry) => entries[index] = Some(entry),
            // One partition's broken image stops that partition, not the machine.
            Err(error) => log::info!(
                "contained: partition={} core={} reason=load address=0x0 rip=0x0 ({}); not started",
                partition.name,
                partition.cpus[0],
                error
            ),
        }
    }
    smp::set_boot_plan(backend, roots, entries);
    smp::start_application_processors(bsp_index);
    smp::core_main(bsp_index)
}

/// Where each application processor arrives from the trampoline, on its own stack.
#[no_mangle]
extern "C" fn tessera_ap_entry(index: u64) -> ! {
    x2apic::enable();
    smp::core_main(index as usize)
}

/// Reports a vCPU (re)start, and records the first guest entry of the machine.
pub fn note_guest_entry(partition: &str, apic_id: u32, start: virt::StartState) {
    let entry = match start {
        virt::StartState::Pvh { entry, .. } => entry,
        virt::StartState::StartUp { vector } => u64::from(vector) << 12,
        virt::StartState::Linux64 { entry, .. } => entry,
    };
    let now = tsc::read();
    let first = FIRST_GUEST_ENTRY_TSC
        .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    log::info!(
        "started: partition={} core={} entry={:#x} tsc={}{}",
        partition,
        apic_id,
        entry,
        now,
        if first {
            " (first guest instruction)"
        } else {
            ""
        }
    );
}
