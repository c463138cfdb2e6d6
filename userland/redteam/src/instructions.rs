//! The single instructions the attacks execute, each as a tiny System V routine
//! ([`crate::trap::Routine`]: arguments in RDI, RSI, RDX, RCX, result in RAX) so that
//! [`crate::trap::probe`] can run it and catch whatever it raises. They touch only RAX,
//! RCX, RDX, RSI, RDI and R8–R11.
//!
//! The `user_*` routines run in ring 3 ([`crate::trap::probe_user`]) and end by jumping to
//! `redteam_user_return` (a `ud2`), the one way back that means "the routine completed".
//! The `mmio_*` routines use exactly the instruction forms the hypervisor's MMIO decoder
//! names (hypervisor/policy/src/mmio_decode.rs) or deliberately one it refuses.

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .text.redteam_instructions, "ax"

    .global redteam_rdmsr
redteam_rdmsr:
    mov ecx, edi
    rdmsr
    shl rdx, 32
    or rax, rdx
    ret

    .global redteam_wrmsr
redteam_wrmsr:
    mov ecx, edi
    mov eax, esi
    mov rdx, rsi
    shr rdx, 32
    wrmsr
    xor eax, eax
    ret

    /* IN/OUT: RDI = port, RSI = value written or RAX before the IN (to see which bits
       the IN keeps). */
    .global redteam_in8
redteam_in8:
    mov rax, rsi
    mov edx, edi
    in al, dx
    ret
    .global redteam_in16
redteam_in16:
    mov rax, rsi
    mov edx, edi
    in ax, dx
    ret
    .global redteam_in32
redteam_in32:
    mov rax, rsi
    mov edx, edi
    in eax, dx
    ret
    .global redteam_out8
redteam_out8:
    mov eax, esi
    mov edx, edi
    out dx, al
    ret
    .global redteam_out16
redteam_out16:
    mov eax, esi
    mov edx, edi
    out dx, ax
    ret
    .global redteam_out32
redteam_out32:
    mov eax, esi
    mov edx, edi
    out dx, eax
    ret

    /* REP OUTSB: RDI = port, RSI = source, RDX = count, RCX = where to store RCX after.
       Returns RSI after. */
    .global redteam_rep_outsb
redteam_rep_outsb:
    mov r8, rcx
    mov rcx, rdx
    mov edx, edi
    cld
    rep outsb
    mov [r8], rcx
    mov rax, rsi
    ret

    /* INSB: RDI = port, RSI = destination. */
    .global redteam_insb
redteam_insb:
    mov edx, edi
    mov rdi, rsi
    cld
    insb
    xor eax, eax
    ret

    .global redteam_monitor
redteam_monitor:
    mov rax, rdi
    xor ecx, ecx
    xor edx, edx
    .byte 0x0f, 0x01, 0xc8 /* monitor */
    xor eax, eax
    ret
    .global redteam_mwait
redteam_mwait:
    xor eax, eax
    xor ecx, ecx
    .byte 0x0f, 0x01, 0xc9 /* mwait */
    ret
    .global redteam_wbinvd
redteam_wbinvd:
    wbinvd
    xor eax, eax
    ret
    .global redteam_invd
redteam_invd:
    invd
    xor eax, eax
    ret

    /* The SVM instructions (AMD APM Vol. 3); RAX = RDI = a page of this image. */
    .global redteam_vmrun
redteam_vmrun:
    mov rax, rdi
    .byte 0x0f, 0x01, 0xd8 /* vmrun */
    ret
    .global redteam_vmload
redteam_vmload:
    mov rax, rdi
    .byte 0x0f, 0x01, 0xda /* vmload */
    ret
    .global redteam_vmsave
redteam_vmsave:
    mov rax, rdi
    .byte 0x0f, 0x01, 0xdb /* vmsave */
    ret
    .global redteam_stgi
redteam_stgi:
    .byte 0x0f, 0x01, 0xdc /* stgi */
    ret
    .global redteam_clgi
redteam_clgi:
    .byte 0x0f, 0x01, 0xdd /* clgi */
    ret
    .global redteam_skinit
redteam_skinit:
    mov rax, rdi
    .byte 0x0f, 0x01, 0xde /* skinit */
    ret
    /* INVLPGA: RAX = RDI = linear address, ECX = RSI = ASID. */
    .global redteam_invlpga
redteam_invlpga:
    mov rax, rdi
    mov ecx, esi
    .byte 0x0f, 0x01, 0xdf /* invlpga */
    ret

    /* The VMX instructions (Intel SDM Vol. 2, chapter 6); RDI = a page of this image. */
    .global redteam_vmxon
redteam_vmxon:
    vmxon qword ptr [rdi]
    ret
    .global redteam_vmxoff
redteam_vmxoff:
    vmxoff
    ret
    .global redteam_vmclear
redteam_vmclear:
    vmclear qword ptr [rdi]
    ret
    .global redteam_vmptrld
redteam_vmptrld:
    vmptrld qword ptr [rdi]
    ret
    .global redteam_vmptrst
redteam_vmptrst:
    vmptrst qword ptr [rdi]
    ret
    .global redteam_vmread
redteam_vmread:
    xor eax, eax
    vmread rax, rsi
    ret
    .global redteam_vmwrite
redteam_vmwrite:
    vmwrite rsi, rdx
    ret
    .global redteam_vmlaunch
redteam_vmlaunch:
    vmlaunch
    ret
    .global redteam_vmresume
redteam_vmresume:
    vmresume
    ret
    .global redteam_invept
redteam_invept:
    mov esi, 1
    invept rsi, xmmword ptr [rdi]
    ret
    .global redteam_invvpid
redteam_invvpid:
    mov esi, 1
    invvpid rsi, xmmword ptr [rdi]
    ret
    .global redteam_vmfunc
redteam_vmfunc:
    xor eax, eax
    xor ecx, ecx
    vmfunc
    ret

    /* XSETBV: RDI = XCR index, RSI = value. XGETBV: RDI = index. */
    .global redteam_xsetbv
redteam_xsetbv:
    mov ecx, edi
    mov eax, esi
    mov rdx, rsi
    shr rdx, 32
    xsetbv
    xor eax, eax
    ret
    .global redteam_xgetbv
redteam_xgetbv:
    mov ecx, edi
    xgetbv
    shl rdx, 32
    or rax, rdx
    ret

    .global redteam_read_cr0
redteam_read_cr0:
    mov rax, cr0
    ret
    .global redteam_write_cr0
redteam_write_cr0:
    mov cr0, rdi
    xor eax, eax
    ret
    .global redteam_read_cr4
redteam_read_cr4:
    mov rax, cr4
    ret
    .global redteam_write_cr4
redteam_write_cr4:
    mov cr4, rdi
    xor eax, eax
    ret

    /* Hypercalls: RDI = number, RSI, RDX, RCX = arguments (moved to RDI, RSI, RDX). */
    .global redteam_vmcall
redteam_vmcall:
    mov rax, rdi
    mov rdi, rsi
    mov rsi, rdx
    mov rdx, rcx
    vmcall
    ret
    .global redteam_vmmcall
redteam_vmmcall:
    mov rax, rdi
    mov rdi, rsi
    mov rsi, rdx
    mov rdx, rcx
    vmmcall
    ret

    /* Memory: RDI = address, RSI = value. */
    .global redteam_read64
redteam_read64:
    mov rax, qword ptr [rdi]
    ret
    .global redteam_write64
redteam_write64:
    mov qword ptr [rdi], rsi
    xor eax, eax
    ret
    .global redteam_jump
redteam_jump:
    jmp rdi

    /* MMIO forms the decoder accepts: 89 /r, 8B /r, 88 /r, 8A /r, 66 89 /r, REX.W 89 /r,
       REX.W 8B /r. */
    .global redteam_mmio_write32
redteam_mmio_write32:
    mov dword ptr [rdi], esi
    xor eax, eax
    ret
    .global redteam_mmio_read32
redteam_mmio_read32:
    mov rax, rsi
    mov eax, dword ptr [rdi]
    ret
    .global redteam_mmio_write8
redteam_mmio_write8:
    mov byte ptr [rdi], sil
    xor eax, eax
    ret
    .global redteam_mmio_read8
redteam_mmio_read8:
    mov rax, rsi
    mov al, byte ptr [rdi]
    ret
    .global redteam_mmio_write16
redteam_mmio_write16:
    mov word ptr [rdi], si
    xor eax, eax
    ret
    .global redteam_mmio_write64
redteam_mmio_write64:
    mov qword ptr [rdi], rsi
    xor eax, eax
    ret
    .global redteam_mmio_read64
redteam_mmio_read64:
    mov rax, qword ptr [rdi]
    ret

    /* MMIO forms the decoder refuses. */
    .global redteam_mmio_movsd
redteam_mmio_movsd:
    cld
    movsd
    xor eax, eax
    ret
    .global redteam_mmio_lock_or
redteam_mmio_lock_or:
    lock or dword ptr [rdi], esi
    xor eax, eax
    ret

    /* Triple fault: an IDT of limit 0 makes INT3 a #GP, its delivery a #DF, and that a
       shutdown (SDM Vol. 3A 6.15, "Interrupt 8"). */
    .global redteam_triple_fault
redteam_triple_fault:
    sub rsp, 16
    mov word ptr [rsp], 0
    mov qword ptr [rsp + 2], 0
    lidt [rsp]
    int3
    add rsp, 16
    ret

    /* Ring-3 routines: they end at redteam_user_return. */
    .global redteam_user_vmcall
redteam_user_vmcall:
    mov rax, rdi
    mov rdi, rsi
    mov rsi, rdx
    mov rdx, rcx
    vmcall
    jmp redteam_user_return
    .global redteam_user_vmmcall
redteam_user_vmmcall:
    mov rax, rdi
    mov rdi, rsi
    mov rsi, rdx
    mov rdx, rcx
    vmmcall
    jmp redteam_user_return
    .global redteam_user_in8
redteam_user_in8:
    mov edx, edi
    in al, dx
    jmp redteam_user_return
    .global redteam_user_cli
redteam_user_cli:
    cli
    jmp redteam_user_return
    .global redteam_user_hlt
redteam_user_hlt:
    hlt
    jmp redteam_user_return
    .global redteam_user_rdmsr
redteam_user_rdmsr:
    mov ecx, edi
    rdmsr
    jmp redteam_user_return
    .global redteam_user_wrmsr
redteam_user_wrmsr:
    mov ecx, edi
    xor eax, eax
    xor edx, edx
    wrmsr
    jmp redteam_user_return
    .global redteam_user_wbinvd
redteam_user_wbinvd:
    wbinvd
    jmp redteam_user_return
    .global redteam_user_invd
redteam_user_invd:
    invd
    jmp redteam_user_return
    .global redteam_user_xsetbv
redteam_user_xsetbv:
    mov ecx, edi
    mov eax, esi
    xor edx, edx
    xsetbv
    jmp redteam_user_return
    .global redteam_user_mov_cr4
redteam_user_mov_cr4:
    mov cr4, rdi
    jmp redteam_user_return
    .global redteam_user_clts
redteam_user_clts:
    clts
    jmp redteam_user_return
    .global redteam_user_lmsw
redteam_user_lmsw:
    lmsw di
    jmp redteam_user_return
    .global redteam_user_nothing
redteam_user_nothing:
    mov eax, 0x600d
    jmp redteam_user_return
    /* An unaligned load forever: with CR0.AM and RFLAGS.AC every one is an #AC. */
    .global redteam_user_unaligned_loop
redteam_user_unaligned_loop:
    mov eax, dword ptr [rsp + 1]
    jmp redteam_user_unaligned_loop
    .global redteam_user_return
redteam_user_return:
    ud2

    .popsection
    "#
);

/// A routine of the list above, by its symbol.
macro_rules! routines {
    ($($name:ident),* $(,)?) => {
        #[cfg(target_os = "none")]
        extern "C" {
            $(pub fn $name(a: u64, b: u64, c: u64, d: u64) -> u64;)*
        }
    };
}

routines!(
    redteam_rdmsr,
    redteam_wrmsr,
    redteam_in8,
    redteam_in16,
    redteam_in32,
    redteam_out8,
    redteam_out16,
    redteam_out32,
    redteam_rep_outsb,
    redteam_insb,
    redteam_monitor,
    redteam_mwait,
    redteam_wbinvd,
    redteam_invd,
    redteam_vmrun,
    redteam_vmload,
    redteam_vmsave,
    redteam_stgi,
    redteam_clgi,
    redteam_skinit,
    redteam_invlpga,
    redteam_vmxon,
    redteam_vmxoff,
    redteam_vmclear,
    redteam_vmptrld,
    redteam_vmptrst,
    redteam_vmread,
    redteam_vmwrite,
    redteam_vmlaunch,
    redteam_vmresume,
    redteam_invept,
    redteam_invvpid,
    redteam_vmfunc,
    redteam_xsetbv,
    redteam_xgetbv,
    redteam_read_cr0,
    redteam_write_cr0,
    redteam_read_cr4,
    redteam_write_cr4,
    redteam_vmcall,
    redteam_vmmcall,
    redteam_read64,
    redteam_write64,
    redteam_jump,
    redteam_mmio_write32,
    redteam_mmio_read32,
    redteam_mmio_write8,
    redteam_mmio_read8,
    redteam_mmio_write16,
    redteam_mmio_write64,
    redteam_mmio_read64,
    redteam_mmio_movsd,
    redteam_mmio_lock_or,
    redteam_triple_fault,
    redteam_user_vmcall,
    redteam_user_vmmcall,
    redteam_user_in8,
    redteam_user_cli,
    redteam_user_hlt,
    redteam_user_rdmsr,
    redteam_user_wbinvd,
    redteam_user_wrmsr,
    redteam_user_invd,
    redteam_user_xsetbv,
    redteam_user_mov_cr4,
    redteam_user_clts,
    redteam_user_lmsw,
    redteam_user_nothing,
    redteam_user_unaligned_loop,
);
