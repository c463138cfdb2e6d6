//! Per-core descriptor tables: a GDT with a TSS (VM entry needs a usable host TR, Intel SDM
//! vol. 3 §28.2.3; AMD VMSAVE/VMLOAD carry it) and one IDT shared by all cores.
//!
//! The hypervisor runs with interrupts off (and, on SVM, the global interrupt flag clear)
//! except for the instant it lets a held NMI be taken, so the IDT serves two purposes:
//! report a hypervisor bug (any exception) and swallow an NMI that already caused its exit.

use core::arch::global_asm;
use core::cell::UnsafeCell;

/// Code and data selectors of the hypervisor's GDT.
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// 64-bit task-state segment (Intel SDM vol. 3 §8.7). Used only for the interrupt stack
/// table: exceptions taken by the hypervisor switch to a known-good stack.
#[repr(C, packed(4))]
pub struct TaskStateSegment {
    reserved0: u32,
    privilege_stacks: [u64; 3],
    reserved1: u64,
    interrupt_stacks: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

const FAULT_STACK_SIZE: usize = 8192;

/// Everything one core needs for its own descriptor tables.
#[repr(C, align(16))]
pub struct CoreDescriptors {
    gdt: [u64; 5],
    tss: TaskStateSegment,
    fault_stack: [u8; FAULT_STACK_SIZE],
}

impl CoreDescriptors {
    pub const fn new() -> Self {
        Self {
            gdt: [0; 5],
            tss: TaskStateSegment {
                reserved0: 0,
                privilege_stacks: [0; 3],
                reserved1: 0,
                interrupt_stacks: [0; 7],
                reserved2: 0,
                reserved3: 0,
                // Set in `load`, so that the whole structure is zero and lives in .bss.
                io_map_base: 0,
            },
            fault_stack: [0; FAULT_STACK_SIZE],
        }
    }
}

impl CoreDescriptors {
    /// Linear address of this core's GDT (host state for VM exits).
    pub fn gdt_base(&self) -> u64 {
        self.gdt.as_ptr() as u64
    }
    /// Linear address of this core's TSS.
    pub fn tss_base(&self) -> u64 {
        &raw const self.tss as u64
    }
}

/// Linear address of the shared IDT.
pub fn idt_base() -> u64 {
    IDT.0.get() as u64
}

#[repr(C, packed(2))]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

/// Interrupt gate, 64-bit (SDM vol. 3 §6.14.1).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

struct Idt(UnsafeCell<[Gate; 32]>);
// SAFETY: the IDT is written only by the bootstrap core in `init_idt`, before any other core
// runs Rust code; afterwards it is only read (by the processor).
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new(
    [Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    }; 32],
));

extern "C" {
    static tessera_exception_stubs: [u64; 32];
}

/// Fills the shared IDT. Called once by the bootstrap core before it starts others.
pub fn init_idt() {
    // SAFETY: the stub table is defined in the global_asm! below with 32 entries.
    let stubs = unsafe { &tessera_exception_stubs };
    // SAFETY: only the bootstrap core runs, so this is the only reference to the IDT.
    let idt = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in idt.iter_mut().enumerate() {
        let handler = stubs[vector];
        *gate = Gate {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            // NMI (2), double fault (8) and machine check (18) switch to the fault stack.
            ist: if matches!(vector, 2 | 8 | 18) { 1 } else { 0 },
            attributes: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
}

/// Loads this core's GDT, TSS and the shared IDT. The tables stay in use for the rest of the
/// run, so they are only readable from now on.
pub fn load(descriptors: &'static mut CoreDescriptors) -> &'static CoreDescriptors {
    let fault_stack_top = descriptors.fault_stack.as_ptr() as u64 + FAULT_STACK_SIZE as u64;
    descriptors.tss.interrupt_stacks[0] = fault_stack_top & !0xF;
    // No I/O permission bitmap: the offset points past the segment limit.
    descriptors.tss.io_map_base = core::mem::size_of::<TaskStateSegment>() as u16;
    let tss_base = &raw const descriptors.tss as u64;
    let tss_limit = core::mem::size_of::<TaskStateSegment>() as u64 - 1;
    descriptors.gdt = [
        0,
        0x00AF_9A00_0000_FFFF, // 64-bit code
        0x00CF_9200_0000_FFFF, // data
        // 64-bit available TSS (type 9), present: SDM vol. 3 §8.2.3.
        (tss_limit & 0xFFFF)
            | ((tss_base & 0xFF_FFFF) << 16)
            | (0x89 << 40)
            | (((tss_limit >> 16) & 0xF) << 48)
            | (((tss_base >> 24) & 0xFF) << 56),
        tss_base >> 32,
    ];
    let gdt_pointer = DescriptorTablePointer {
        limit: (core::mem::size_of_val(&descriptors.gdt) - 1) as u16,
        base: descriptors.gdt.as_ptr() as u64,
    };
    let idt_pointer = DescriptorTablePointer {
        limit: (32 * 16 - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the GDT and TSS live in this core's static descriptors for the rest of the run,
    // the selectors match the GDT just built, and the IDT was filled by `init_idt`.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "push {code}",
            "lea {scratch}, [rip + 2f]",
            "push {scratch}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "ltr {tss:x}",
            "lidt [{idt}]",
            gdt = in(reg) &gdt_pointer,
            idt = in(reg) &idt_pointer,
            code = in(reg) u64::from(CODE_SELECTOR),
            data = in(reg) u64::from(DATA_SELECTOR),
            tss = in(reg) u64::from(TSS_SELECTOR),
            scratch = out(reg) _,
        );
    }
    descriptors
}

/// The registers an exception stub saved, as the Rust handler sees them.
#[repr(C)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// What the hypervisor does with an NMI it takes itself (not as a VM exit). The runtime
/// registers it at boot, so this leaf module calls nothing above it.
static NMI_HANDLER: spin::Once<fn()> = spin::Once::new();

/// Sets the handler of NMIs taken in the hypervisor. Called once by the bootstrap core.
pub fn set_nmi_handler(handler: fn()) {
    NMI_HANDLER.call_once(|| handler);
}

extern "C" {
    fn tessera_idle_halt();
    static tessera_idle_halt_hlt: u8;
    static tessera_idle_halt_resume: u8;
}

/// STGI; HLT; CLGI (SVM only: EFER.SVME must be set), for a core whose wake-ups all come
/// with an NMI. The race this closes: an NMI sent after the caller last looked at its
/// signals is held while GIF is clear and taken at the boundary after STGI, i.e. with the
/// HLT as its return address; the hypervisor's NMI path then returns past the HLT instead
/// of to it ([`tessera_exception`]), so the core never sleeps over a signal it has not seen.
pub fn halt_until_nmi() {
    // SAFETY: the routine below only toggles GIF (valid with EFER.SVME set, which the
    // caller checked) and halts with RFLAGS.IF clear; it touches no memory and no register
    // but the return address it pops.
    unsafe { tessera_idle_halt() }
}

global_asm!(
    r#"
    .section .text
    .global tessera_idle_halt
    .global tessera_idle_halt_hlt
    .global tessera_idle_halt_resume
tessera_idle_halt:
    stgi
tessera_idle_halt_hlt:
    hlt
tessera_idle_halt_resume:
    clgi
    ret
"#
);

#[no_mangle]
extern "C" fn tessera_exception(frame: &mut ExceptionFrame) {
    if frame.vector == 2 {
        // An NMI taken before the idle halt's HLT ran: return past it (see `halt_until_nmi`).
        if frame.rip == (&raw const tessera_idle_halt_hlt) as u64 {
            frame.rip = (&raw const tessera_idle_halt_resume) as u64;
        }
        if let Some(handler) = NMI_HANDLER.get() {
            handler();
        }
        return;
    }
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    panic!(
        "exception {} in the hypervisor: error code {:#x}, rip {:#x}, rsp {:#x}, cr2 {:#x}",
        frame.vector, frame.error_code, frame.rip, frame.rsp, cr2
    );
}

// One stub per vector: push a zero error code where the CPU does not (SDM vol. 3 §6.13),
// push the vector, save the caller-saved registers, call tessera_exception, restore, IRETQ.
global_asm!(
    r#"
    .section .text
    .macro stub vector, has_error
    .balign 16
tessera_exception_stub_\vector:
    .if \has_error == 0
    push 0
    .endif
    push \vector
    jmp tessera_exception_common
    .endm

    stub 0,0
    stub 1,0
    stub 2,0
    stub 3,0
    stub 4,0
    stub 5,0
    stub 6,0
    stub 7,0
    stub 8,1
    stub 9,0
    stub 10,1
    stub 11,1
    stub 12,1
    stub 13,1
    stub 14,1
    stub 15,0
    stub 16,0
    stub 17,1
    stub 18,0
    stub 19,0
    stub 20,0
    stub 21,1
    stub 22,0
    stub 23,0
    stub 24,0
    stub 25,0
    stub 26,0
    stub 27,0
    stub 28,0
    stub 29,1
    stub 30,1
    stub 31,0

tessera_exception_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push rbp
    lea rdi, [rsp + 80]
    mov rbp, rsp
    and rsp, -16
    call tessera_exception
    mov rsp, rbp
    pop rbp
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

    .section .rodata
    .balign 8
    .global tessera_exception_stubs
tessera_exception_stubs:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad tessera_exception_stub_\vector
    .endr
"#
);

/// Sets the registers a guest uses directly on this core and no VMCS/VMCB field switches to
/// their power-on values (SDM vol. 3 §9.1.1, table 9-1), so a restarted partition inherits
/// nothing from its previous run: DR0–DR3 and DR6, CR2, IA32_TSC_AUX, IA32_SPEC_CTRL and
/// XCR0, and, when `syscall_msrs` (VMX, where they are not switched), STAR, LSTAR, CSTAR,
/// SFMASK and KERNEL_GS_BASE.
pub fn reset_guest_registers(syscall_msrs: bool) {
    use super::{cpuid, msr};
    let leaf_7_edx = if cpuid::max_basic_leaf() >= 7 {
        cpuid::query(7, 0)[3]
    } else {
        0
    };
    let extended_edx = cpuid::query(0x8000_0001, 0)[3];
    // SAFETY: debug registers and CR2 exist on every x86-64 processor and only matter to
    // the guest; each MSR is written only where CPUID reports it (TSC_AUX: RDTSCP,
    // 8000_0001h:EDX bit 27; SPEC_CTRL: 7.0:EDX bit 26; the SYSCALL MSRs: long mode), with
    // zero, its reset value, which the hypervisor itself does not depend on (it uses no
    // SYSCALL, no TSC_AUX, no speculation controls). XCR0 gets its reset value 1 only when
    // CR4.OSXSAVE is set (it was set in VMX enable where XSAVE exists), where XSETBV is valid.
    unsafe {
        core::arch::asm!(
            "mov dr0, {zero}",
            "mov dr1, {zero}",
            "mov dr2, {zero}",
            "mov dr3, {zero}",
            "mov dr6, {dr6}",
            "mov cr2, {zero}",
            zero = in(reg) 0u64,
            dr6 = in(reg) 0xFFFF_0FF0u64,
            options(nostack)
        );
        if extended_edx & (1 << 27) != 0 {
            msr::write(msr::IA32_TSC_AUX, 0);
        }
        if leaf_7_edx & (1 << 26) != 0 {
            msr::write(msr::IA32_SPEC_CTRL, 0);
        }
        if syscall_msrs {
            for number in [
                msr::IA32_STAR,
                msr::IA32_LSTAR,
                msr::IA32_CSTAR,
                msr::IA32_FMASK,
                msr::IA32_KERNEL_GSBASE,
            ] {
                msr::write(number, 0);
            }
        }
        let cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        if cr4 & (1 << 18) != 0 {
            core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") 1u32, in("edx") 0u32, options(nostack));
        }
    }
}

/// Ends the blocking of NMIs that a VM exit caused by an NMI leaves in effect (Intel SDM
/// vol. 3, chapter "VM Exits", updating non-register state: after such an exit NMIs are
/// blocked, in VMX root operation, until the next IRET, §6.7.1): an IRET to the next
/// instruction, with no handler involved. An NMI that arrived meanwhile is taken right after
/// it by the hypervisor's IDT.
pub fn unblock_nmis() {
    // SAFETY: builds an interrupt-return frame for the current context (SS, RSP, RFLAGS,
    // CS, the label below) on the current stack and returns to the label: every register
    // and the stack are as before, only the processor's NMI blocking ends.
    unsafe {
        core::arch::asm!(
            "mov {scratch}, rsp",
            "push {data}",
            "push {scratch}",
            "pushfq",
            "push {code}",
            "lea {scratch}, [rip + 2f]",
            "push {scratch}",
            "iretq",
            "2:",
            scratch = out(reg) _,
            data = in(reg) u64::from(DATA_SELECTOR),
            code = in(reg) u64::from(CODE_SELECTOR),
        );
    }
}
