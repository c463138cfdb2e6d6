//! Tessera's boot path: how the image gets from a boot loader into 64-bit Rust.
//!
//! * A Multiboot v1 header with the "a.out kludge" (flag bit 16): QEMU `-kernel` and GRUB's
//!   `multiboot` command both load the image from it, so one file boots everywhere
//!   (Multiboot Specification 0.6.96 §3.1).
//! * Beside it a Multiboot2 header (Multiboot2 Specification 1.0 §3.1) for GRUB's
//!   `multiboot2` command, on BIOS and UEFI machines: it asks for the memory map and the ACPI
//!   RSDP copies and names the 32-bit entry; GRUB loads the ELF64 image's one `PT_LOAD`
//!   itself. GRUB on UEFI leaves the firmware (ExitBootServices) and enters the same 32-bit
//!   entry in protected mode, as on BIOS.
//! * A 32-bit entry that identity-maps the first 4 GiB with 2 MiB pages, enables long mode
//!   (Intel SDM vol. 3 §10.8.5, AMD APM vol. 2 §14.6) and calls the hypervisor's
//!   `tessera_bsp_entry(magic, info)`. That map is read-write-execute; the hypervisor
//!   replaces it at boot with its own tables (W^X by section, a guard page under each stack:
//!   hypervisor/src/arch/host_paging.rs), which leave the boot tables read-only and the page
//!   under the boot stack, `__tessera_boot_stack_guard`, unmapped.
//! * A real-mode trampoline for the application processors, copied below 1 MiB and started
//!   by INIT-SIPI-SIPI (Intel SDM vol. 3 §10.4.4), which lands in `tessera_ap_entry(index)`.
//! * The linker script template the hypervisor's build script fills in (`linker.ld.in`).
//!
//! Everything here is position-dependent assembly; the Rust side only names the symbols.
#![no_std]

use core::arch::global_asm;

/// Physical address the AP trampoline is copied to. Below 1 MiB (a SIPI vector is
/// address >> 12), clear of the Multiboot information QEMU (0x9500) and GRUB on BIOS
/// (0x10000) leave behind, and of the real-mode IVT/BDA. The hypervisor checks that the
/// firmware memory map lists this page as RAM (under UEFI it is ordinary conventional
/// memory) and refuses to boot otherwise.
pub const AP_TRAMPOLINE_ADDRESS: u64 = 0x8000;
/// The bytes at [`AP_TRAMPOLINE_ADDRESS`] the trampoline may occupy: one page.
pub const AP_TRAMPOLINE_BYTES: u64 = 0x1000;

/// Parameters the bootstrap processor hands one application processor through the
/// trampoline's data block; written before each SIPI.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ApStartParameters {
    /// Top of the AP's stack.
    pub stack_top: u64,
    /// Index of the AP in the table's core list.
    pub cpu_index: u64,
    /// Set by the AP once it runs 64-bit code on its own stack: its TSC then, with bit 0
    /// set so that it is never 0.
    pub started: u64,
}

extern "C" {
    static tessera_ap_trampoline_start: u8;
    static tessera_ap_trampoline_end: u8;
    static tessera_ap_parameters: u8;
}

/// The trampoline's code and data, to be copied to [`AP_TRAMPOLINE_ADDRESS`].
pub fn ap_trampoline() -> &'static [u8] {
    // SAFETY: both symbols are defined in the global_asm! below, in the same section, with
    // start <= end; the bytes between them are immutable code and data of this image.
    unsafe {
        let start = &raw const tessera_ap_trampoline_start;
        let end = &raw const tessera_ap_trampoline_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

/// Offset of the [`ApStartParameters`] block inside the trampoline.
pub fn ap_parameters_offset() -> usize {
    // Only the addresses of the symbols are taken, nothing is read.
    (&raw const tessera_ap_parameters) as usize - (&raw const tessera_ap_trampoline_start) as usize
}

// Multiboot v1 header (Multiboot Specification 0.6.96 §3.1.1–3.1.3). Flags: bit 1 = we want
// the memory map, bit 16 = the address fields below are valid (a.out kludge), which is what
// lets QEMU load an ELF64 image as Multiboot.
global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 4
    .global tessera_multiboot_header
tessera_multiboot_header:
    .long 0x1BADB002
    .long 0x00010002
    .long -(0x1BADB002 + 0x00010002)
    .long tessera_multiboot_header      /* header_addr */
    .long __tessera_image_start         /* load_addr */
    .long __tessera_load_end            /* load_end_addr */
    .long __tessera_bss_end             /* bss_end_addr */
    .long tessera_entry32               /* entry_addr */
"#
);

// Multiboot2 header (Multiboot2 Specification 1.0 §3.1.1–3.1.6): 8-byte aligned within the
// first 32 KiB, architecture 0 (i386 protected mode), header length and checksum, then tags,
// each 8-byte aligned: an information request (memory map 6, ACPI old RSDP 14, ACPI new
// RSDP 15; required, which GRUB only checks it knows), the entry address (the same 32-bit
// entry as v1), the end tag. No address tag: GRUB's multiboot2 loader loads ELF64 images by
// their program headers, here the one PT_LOAD at the table's hypervisor base (its memsz
// covers .bss, which GRUB zeroes).
global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 8
    .global tessera_multiboot2_header
tessera_multiboot2_header:
    .long 0xE85250D6
    .long 0
    .long tessera_multiboot2_header_end - tessera_multiboot2_header
    .long -(0xE85250D6 + 0 + (tessera_multiboot2_header_end - tessera_multiboot2_header))
    .balign 8
    .short 1, 0                          /* information request, required */
    .long 20
    .long 6, 14, 15
    .balign 8
    .short 3, 0                          /* entry address */
    .long 12
    .long tessera_entry32
    .balign 8
    .short 0, 0                          /* end */
    .long 8
tessera_multiboot2_header_end:
"#
);

// The 32-bit entry. State on entry (Multiboot §3.2, Multiboot2 §3.3): protected mode, paging
// off, EAX = magic, EBX = physical address of the Multiboot (v1 or v2) information,
// interrupts off, no stack. The Rust side tells the two protocols apart by the magic.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .code32
    .global tessera_entry32
tessera_entry32:
    cli
    mov esp, offset __tessera_boot_stack_top
    mov edi, eax                         /* magic, kept for the 64-bit call */
    mov esi, ebx                         /* info */

    /* Identity map 0..4 GiB: PML4[0] -> PDPT, PDPT[0..4] -> PD0..PD3, 2 MiB pages. */
    mov eax, offset __tessera_boot_pdpt
    or eax, 0x3
    mov [__tessera_boot_pml4], eax
    xor ecx, ecx
1:
    mov eax, ecx
    shl eax, 12
    add eax, offset __tessera_boot_pd
    or eax, 0x3
    mov [__tessera_boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jne 1b
    xor ecx, ecx                         /* 2048 entries of 2 MiB */
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83                         /* present, writable, page size */
    cmp ecx, 1536                        /* the 4th GiB holds the APICs and device MMIO: */
    jb 5f
    or eax, 0x18                         /* uncached (PCD | PWT) */
5:
    mov [__tessera_boot_pd + ecx * 8], eax
    mov eax, ecx
    shr eax, 11                          /* bits 63:32 of the address */
    mov [__tessera_boot_pd + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jne 2b

    mov eax, offset __tessera_boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20                         /* CR4.PAE */
    mov cr4, eax
    mov ecx, 0xC0000080                  /* IA32_EFER */
    rdmsr
    or eax, 0x900                        /* LME | NXE */
    wrmsr
    mov eax, cr0
    /* Caches on: clear CD and NW (Multiboot leaves them undefined; after INIT they are set,
       Intel SDM vol. 3 table 9-1). VM entries and exits do not change them (SDM §27.3.2.1,
       §28.5.1), so the guests would run uncached too. */
    and eax, 0x9FFFFFFF
    or eax, 0x80000001                   /* PG | PE */
    mov cr0, eax
    lgdt [tessera_boot_gdtr]
    /* Far jump to 64-bit code: EA ptr16:32 (written as bytes; LLVM's Intel syntax has
       no far-jump-to-label form). */
    .byte 0xEA
    .long 3f
    .word 0x18
    .code64
3:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset __tessera_boot_stack_top
    /* edi = magic, esi = info: already the first two System V arguments. */
    call tessera_bsp_entry
4:
    cli
    hlt
    jmp 4b

    .section .rodata.boot, "a"
    .balign 16
    /* null, 32-bit code, data, 64-bit code */
tessera_boot_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00AF9A000000FFFF
tessera_boot_gdt_end:
    .balign 4
tessera_boot_gdtr:
    .word tessera_boot_gdt_end - tessera_boot_gdt - 1
    .long tessera_boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
__tessera_boot_pml4:
    .skip 4096
__tessera_boot_pdpt:
    .skip 4096
__tessera_boot_pd:
    .skip 4096 * 4
    /* The page under the boot stack: the hypervisor's own page tables leave it unmapped,
       so that an overflow of the bootstrap core's stack faults (a double fault, taken on
       its IST stack) instead of writing over the boot page tables below. */
__tessera_boot_stack_guard:
    .skip 4096
__tessera_boot_stack:
    .skip 65536
__tessera_boot_stack_top:
    .global __tessera_boot_pml4
    .global __tessera_boot_stack_guard
"#
);

// The application-processor trampoline. It runs from AP_TRAMPOLINE_ADDRESS, so every
// absolute address in it is written as (label - start + 0x8000). It reuses the boot page
// tables (they identity-map the hypervisor, and only they map this page executable) and
// the boot GDT layout, then jumps to tessera_ap_entry(cpu_index) on the stack the BSP left
// in the parameter block; the AP moves to the hypervisor's own page tables from there.
global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .balign 16
    .global tessera_ap_trampoline_start
    .global tessera_ap_trampoline_end
    .global tessera_ap_parameters
    .set AP_GDTR, tessera_ap_gdtr - tessera_ap_trampoline_start + 0x8000
    .set AP_PROTECTED, tessera_ap_protected - tessera_ap_trampoline_start + 0x8000
    .set AP_LONG, tessera_ap_long - tessera_ap_trampoline_start + 0x8000
    .set AP_PARAMETERS, tessera_ap_parameters - tessera_ap_trampoline_start + 0x8000
    .set AP_GDT, tessera_ap_gdt - tessera_ap_trampoline_start + 0x8000
    .code16
tessera_ap_trampoline_start:
    cli
    xor ax, ax
    mov ds, ax
    lgdt [AP_GDTR]
    mov eax, cr0
    and eax, 0x9FFFFFFF                  /* caches on: INIT set CD and NW (SDM table 9-1) */
    or eax, 1
    mov cr0, eax
    .byte 0x66, 0xEA                     /* far jump, 32-bit offset, from 16-bit code */
    .long AP_PROTECTED
    .word 0x08
    .code32
tessera_ap_protected:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset __tessera_boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    .byte 0xEA
    .long AP_LONG
    .word 0x18
    .code64
tessera_ap_long:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, [AP_PARAMETERS]
    mov rdi, [AP_PARAMETERS + 8]
    rdtsc                                /* report with the time: never 0 (bit 0 set) */
    shl rdx, 32
    or rax, rdx
    or rax, 1
    mov qword ptr [AP_PARAMETERS + 16], rax
    movabs rax, offset tessera_ap_entry
    call rax
5:
    cli
    hlt
    jmp 5b

    .balign 16
tessera_ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00AF9A000000FFFF
tessera_ap_gdtr:
    .word 31
    .long AP_GDT
    .balign 8
tessera_ap_parameters:
    .quad 0, 0, 0
tessera_ap_trampoline_end:
"#
);
