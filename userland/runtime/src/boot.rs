//! Entry by the PVH boot protocol, and the hand-over to the guest's main function.
//!
//! The loader finds the 32-bit physical entry point in an ELF note (name "Xen", type 18,
//! `XEN_ELFNOTE_PHYS32_ENTRY`) and starts the boot processor there in 32-bit protected
//! mode with paging off, flat CS/DS/ES/SS, interrupts off and EBX = the guest-physical
//! address of `hvm_start_info` (Xen `docs/misc/pvh.pandoc`). Nothing else is promised: the
//! GDT the selectors came from may be anywhere, there is no stack, and .bss may hold
//! anything. So the entry code
//!
//! 1. loads its own GDT and flat data segments, sets its own stack and zeroes .bss;
//! 2. identity-maps the first 4 GiB of guest-physical space with 2 MiB pages (one PML4,
//!    one PDPT, four page directories, all in .bss); the top 32 MiB (0xFE000000 and up:
//!    I/O APIC, local APIC, HPET, firmware) are mapped uncached (PCD | PWT, which
//!    selects UC with the power-on PAT);
//! 3. enables PAE (CR4.PAE), long mode (EFER.LME, Intel SDM Vol. 3A 10.8.5 "Initializing
//!    IA-32e Mode"; AMD APM Vol. 2 14.6 "Enabling and Activating Long Mode") and paging,
//!    far-returns into a 64-bit code segment;
//! 4. calls [`tessera_guest_start`] with the start_info address, which loads the IDT
//!    ([`crate::interrupts`]), parses the start_info, opens the console, switches it to
//!    interrupt-driven output if the command line has `uart-irq=<pin>` (enabling the
//!    x2APIC and interrupts), and calls the function the guest named with
//!    [`entry!`](crate::entry).

use crate::memory::MemoryRange;
#[cfg(target_os = "none")]
use crate::start_info::BootInfo;

/// Where the guest image is linked (guest-physical; the image runs identity-mapped).
pub const IMAGE_BASE: u64 = 0x10_0000;
/// End of the identity map the entry code builds: the guest can touch guest-physical
/// addresses below this, and nothing above.
pub const IDENTITY_MAP_END: u64 = 4 << 30;
/// Size of the boot processor's stack, in .bss.
pub const STACK_SIZE: usize = 64 * 1024;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                         /* n_namesz: "Xen\0" */
    .long 4                         /* n_descsz: a 32-bit physical address */
    .long 18                        /* n_type: XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long tessera_pvh_start32       /* the descriptor */
    .popsection

    .pushsection .text.tessera_pvh_start32, "ax"
    .code32
    .global tessera_pvh_start32
tessera_pvh_start32:
    cli
    cld
    /* EBX holds the start_info address until the call into Rust: nothing below
       writes EBX (rep stosb uses EDI/ECX, rdmsr/wrmsr use EAX/ECX/EDX). */
    lgdt [tessera_gdt_pointer]
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov fs, eax
    mov gs, eax
    mov esp, offset tessera_stack_top

    /* Zero .bss: the loader need not have, and the page tables below rely on it. */
    mov edi, offset __tessera_bss_start
    mov ecx, offset __tessera_bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    /* PML4[0] -> PDPT, present + writable. */
    mov eax, offset tessera_pdpt
    or eax, 0x3
    mov dword ptr [tessera_pml4], eax

    /* PDPT[0..4] -> the four page directories. */
    xor ecx, ecx
.Lfill_pdpt:
    mov eax, ecx
    shl eax, 12
    add eax, offset tessera_page_directories
    or eax, 0x3
    mov dword ptr [tessera_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb .Lfill_pdpt

    /* 2048 page-directory entries: entry i maps i * 2 MiB, present + writable + PS. */
    xor ecx, ecx
.Lfill_page_directories:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [tessera_page_directories + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jb .Lfill_page_directories

    /* Entries 2032..2048 (0xFE000000 and up, the MMIO window): PCD | PWT. */
    mov ecx, 2032
.Lmark_uncached:
    or dword ptr [tessera_page_directories + ecx * 8], 0x18
    inc ecx
    cmp ecx, 2048
    jb .Lmark_uncached

    /* CR4.PAE, CR3, EFER.LME, then CR0.PG (+PE) activates IA-32e mode. */
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset tessera_pml4
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax

    /* Far return into the 64-bit code segment (selector 0x08). */
    mov eax, 0x08
    push eax
    mov eax, offset tessera_pvh_start64
    push eax
    retf
    .code64

tessera_pvh_start64:
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    xor eax, eax
    mov fs, eax
    mov gs, eax
    lea rsp, [rip + tessera_stack_top]
    xor ebp, ebp
    mov edi, ebx                    /* zero-extends: the start_info address */
    call tessera_guest_start
.Lhalt_forever:
    hlt
    jmp .Lhalt_forever
    .popsection

    .pushsection .rodata.tessera_gdt, "a"
    .balign 8
    /* The accessed bits are preset so the processor never writes to this table. */
tessera_gdt:
    .quad 0                         /* null */
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf93000000ffff        /* 0x10: flat 4 GiB data, DPL 0 */
tessera_gdt_end:
    .balign 8
    .global tessera_gdt_pointer
tessera_gdt_pointer:
    .short tessera_gdt_end - tessera_gdt - 1
    .quad tessera_gdt
    .popsection

    .pushsection .bss.tessera_boot, "aw", @nobits
    .balign 4096
tessera_pml4:
    .skip 4096
tessera_pdpt:
    .skip 4096
tessera_page_directories:
    .skip 4 * 4096
    .balign 16
tessera_stack_bottom:
    .skip {stack_size}
tessera_stack_top:
    .popsection
    "#,
    stack_size = const STACK_SIZE,
);

/// Names the guest's main function: `tessera_guest::entry!(main);` with
/// `fn main(info: &tessera_guest::BootInfo)`. When it returns, the runtime stops the
/// partition with exit status 0.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The guest's main, under the one name the runtime calls (checked signature).
        #[no_mangle]
        pub fn __tessera_guest_main(info: &$crate::BootInfo) {
            let main: fn(&$crate::BootInfo) = $main;
            main(info)
        }
    };
}

#[cfg(target_os = "none")]
extern "Rust" {
    /// Defined by [`entry!`] in the guest binary.
    fn __tessera_guest_main(info: &BootInfo);
}

/// First Rust code of the guest, called by the entry code in 64-bit mode on the boot
/// stack with the guest-physical address of `hvm_start_info`.
#[cfg(target_os = "none")]
#[no_mangle]
extern "C" fn tessera_guest_start(start_info_address: u64) -> ! {
    crate::interrupts::load();
    // SAFETY: the loader passes the address of a start_info structure in EBX, and the
    // identity map covers all of the first 4 GiB, where EBX can point; the structures it
    // names are only read, before any of the guest's own code runs.
    let parsed = unsafe { BootInfo::from_start_info(start_info_address) };
    let Ok(info) = parsed else {
        // Without a start_info there is no command line and so no console to complain on.
        crate::hypercall::stop_self(crate::PANIC_EXIT_STATUS)
    };
    if let Some(port) = info.command_line().console_port() {
        crate::console::open(port);
    }
    if let Some(pin) = info.command_line().number("uart-irq") {
        enable_interrupt_driven_console(pin);
    }
    // SAFETY: the guest binary defines this symbol through `entry!`, which fixes its
    // signature to `fn(&BootInfo)`; both sides are Rust functions of this one build.
    unsafe { __tessera_guest_main(&info) };
    crate::hypercall::stop_self(0)
}

/// Switches the console to interrupt-driven output through I/O APIC `pin`; on failure
/// says why and stays polled.
#[cfg(target_os = "none")]
fn enable_interrupt_driven_console(pin: u64) {
    let Ok(pin) = u8::try_from(pin) else {
        crate::println!("console: uart-irq={pin} is not a pin; polling");
        return;
    };
    if let Err(error) = crate::x2apic::enable() {
        crate::println!("console: uart-irq={pin}: {error:?}; polling");
        return;
    }
    match crate::console::enable_interrupt_output(pin) {
        Ok(()) => crate::processor::enable_interrupts(),
        Err(error) => crate::println!("console: uart-irq={pin}: {error:?}; polling"),
    }
}

#[cfg(target_os = "none")]
extern "C" {
    static __tessera_image_start: u8;
    static __tessera_image_end: u8;
}

/// The guest-physical range the guest image occupies: code, data, .bss with the page
/// tables and the boot stack. Guest code must not overwrite it.
#[cfg(target_os = "none")]
pub fn image_range() -> MemoryRange {
    let start = (&raw const __tessera_image_start) as u64;
    let end = (&raw const __tessera_image_end) as u64;
    MemoryRange::new(start, end)
}

/// On the host (unit tests) there is no image; an empty range at the link address.
#[cfg(not(target_os = "none"))]
pub fn image_range() -> MemoryRange {
    MemoryRange::new(IMAGE_BASE, IMAGE_BASE)
}
