//! The interrupt descriptor table: one assembly stub per vector, a dispatcher that calls
//! the handler a guest installed for that vector, and the fatal path for exceptions.
//!
//! Every vector has an interrupt gate (interrupts masked while a handler runs) to a
//! 16-byte stub in `global_asm!` (`extern "x86-interrupt"` is unstable) that pushes a zero
//! error code where the processor pushes none (Intel SDM Vol. 3A 6.13, Table 6-1: vectors
//! 8, 10–14, 17, 21, 29 and 30 push one), then the vector number, and jumps to a common
//! routine that saves the caller-saved registers and calls [`tessera_interrupt_dispatch`]
//! (the guest is built soft-float: no SSE state to save).
//!
//! The dispatcher:
//! * calls the [`Handler`] installed with [`set_handler`] for the vector, then, for
//!   vectors 32–255, signals end of interrupt to the local APIC (handlers must not);
//!   a handler may be installed for an exception vector too, in particular for
//!   [`NMI_VECTOR`] (an NMI IPI from another core of the partition): NMIs take no EOI,
//!   and the processor blocks further NMIs until the stub's IRETQ (Intel SDM Vol. 3A
//!   6.7.1), so an NMI handler must not wait for anything (no console lock: set a flag);
//! * ignores the APIC's spurious vector (no EOI, Intel SDM Vol. 3A 11.9);
//! * for any other vector — an exception, or an interrupt nobody asked for (such as an
//!   IPI from outside the partition that got through) — prints
//!   `exception: vector <n> (<name>) rip=<hex> error-code=<hex> cr2=<hex> core=<id>` and
//!   stops the partition with [`EXCEPTION_EXIT_STATUS`].

// On the host (unit tests) the assembly and the code around it are not built.
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::{console, hypercall, x2apic};

/// Exit status of a partition stopped by an unexpected exception or interrupt.
pub const EXCEPTION_EXIT_STATUS: u64 = 6;
/// Number of vectors of the IDT.
pub const VECTOR_COUNT: usize = 256;
/// Vectors below this are processor exceptions (and NMI, vector 2).
pub const FIRST_INTERRUPT_VECTOR: u8 = 32;
/// The NMI's vector (Intel SDM Vol. 3A Table 6-1): fatal unless a handler is installed.
pub const NMI_VECTOR: u8 = 2;
/// The code segment selector of the runtime's 64-bit code (its GDT, see `boot`).
const CODE_SELECTOR: u64 = 0x08;
/// Gate type: present, DPL 0, 64-bit interrupt gate (Intel SDM Vol. 3A 6.14.1).
const INTERRUPT_GATE: u64 = 0x8e;
/// Bytes per stub (the stubs are placed at this alignment).
const STUB_SIZE: u64 = 16;

/// An interrupt handler: called with the vector, interrupts masked.
pub type Handler = fn(vector: u8);

/// What the stubs push: the vector, the error code (0 where the processor pushes none)
/// and the processor's interrupt frame (Intel SDM Vol. 3A 6.14.2).
#[repr(C)]
#[derive(Debug)]
pub struct InterruptFrame {
    pub vector: u64,
    pub error_code: u64,
    pub instruction_pointer: u64,
    pub code_segment: u64,
    pub flags: u64,
    pub stack_pointer: u64,
    pub stack_segment: u64,
}

/// The installed handlers, as `Handler` function pointers cast to `usize` (0 = none).
static HANDLERS: [AtomicUsize; VECTOR_COUNT] = [const { AtomicUsize::new(0) }; VECTOR_COUNT];

/// The IDT: two 64-bit words per gate. Atomics give it interior mutability without a
/// `static mut`; the processor reads it as plain memory.
#[repr(C, align(16))]
struct InterruptDescriptorTable([AtomicU64; 2 * VECTOR_COUNT]);

static IDT: InterruptDescriptorTable =
    InterruptDescriptorTable([const { AtomicU64::new(0) }; 2 * VECTOR_COUNT]);
/// Set once the IDT's gates are written.
static IDT_BUILT: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .text.tessera_interrupt_stubs, "ax"
    .balign 16
    .global tessera_interrupt_stubs
tessera_interrupt_stubs:
    .set tessera_stub_vector, 0
    .rept 256
    .balign 16
    .if (tessera_stub_vector == 8) || ((tessera_stub_vector >= 10) && (tessera_stub_vector <= 14)) || (tessera_stub_vector == 17) || (tessera_stub_vector == 21) || (tessera_stub_vector == 29) || (tessera_stub_vector == 30)
    .else
    push 0
    .endif
    push tessera_stub_vector
    jmp tessera_interrupt_common
    .set tessera_stub_vector, tessera_stub_vector + 1
    .endr

tessera_interrupt_common:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    /* 9 saved registers + vector + error code + the processor's 5 words: 128 bytes,
       and the processor aligned RSP to 16 before its pushes, so the call below sees
       the ABI's alignment. RDI = the InterruptFrame (the vector word). */
    lea rdi, [rsp + 72]
    cld
    call tessera_interrupt_dispatch
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
    .popsection
    "#
);

#[cfg(target_os = "none")]
extern "C" {
    /// The first of the 256 stubs, [`STUB_SIZE`] bytes apart.
    static tessera_interrupt_stubs: u8;
}

/// Installs `handler` for `vector`, replacing any earlier one. Any vector may have one,
/// exceptions and [`NMI_VECTOR`] included (see the module comment).
pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Removes the handler of `vector`: the vector is unexpected again.
pub fn clear_handler(vector: u8) {
    HANDLERS[vector as usize].store(0, Ordering::Release);
}

/// Builds the IDT (once) and loads it on this core. The boot code calls this on every
/// core before any guest code runs.
#[cfg(target_os = "none")]
pub fn load() {
    if !IDT_BUILT.load(Ordering::Acquire) {
        let stubs = (&raw const tessera_interrupt_stubs) as u64;
        for vector in 0..VECTOR_COUNT {
            let address = stubs + vector as u64 * STUB_SIZE;
            let low = (address & 0xffff)
                | (CODE_SELECTOR << 16)
                | (INTERRUPT_GATE << 40)
                | (((address >> 16) & 0xffff) << 48);
            let high = address >> 32;
            IDT.0[2 * vector].store(low, Ordering::Relaxed);
            IDT.0[2 * vector + 1].store(high, Ordering::Relaxed);
        }
        // Two cores building at once write the same values: harmless.
        IDT_BUILT.store(true, Ordering::Release);
    }
    #[repr(C, packed)]
    struct DescriptorPointer {
        limit: u16,
        base: u64,
    }
    let pointer = DescriptorPointer {
        limit: (core::mem::size_of::<InterruptDescriptorTable>() - 1) as u16,
        base: (&raw const IDT) as u64,
    };
    // SAFETY: the IDT is a static (lives for the whole run), fully written above, and
    // every gate points at a stub of this image that ends in the dispatcher, which
    // handles every vector.
    unsafe {
        core::arch::asm!("lidt [{pointer}]", pointer = in(reg) &raw const pointer,
            options(readonly, nostack, preserves_flags));
    }
}

/// Name of an exception vector (Intel SDM Vol. 3A Table 6-1).
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        9 | 15 | 22..=31 => "reserved",
        _ => "interrupt",
    }
}

/// Called by the common stub with the frame the stub and the processor pushed.
#[cfg(target_os = "none")]
#[no_mangle]
extern "C" fn tessera_interrupt_dispatch(frame: &InterruptFrame) {
    let vector = frame.vector as u8;
    if vector == x2apic::SPURIOUS_VECTOR {
        return;
    }
    let handler = HANDLERS[vector as usize].load(Ordering::Acquire);
    if handler != 0 {
        // SAFETY: HANDLERS holds only 0 or values stored by `set_handler`, which are
        // `Handler` function pointers of this program cast to usize.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
        handler(vector);
        if vector >= FIRST_INTERRUPT_VECTOR {
            if let Some(apic) = x2apic::get() {
                apic.end_of_interrupt();
            }
        }
        return;
    }
    report_and_stop(frame)
}

/// The fatal path: print what happened and stop the partition.
#[cfg(target_os = "none")]
fn report_and_stop(frame: &InterruptFrame) -> ! {
    let fault_address: u64;
    // SAFETY: reading CR2 has no side effects and cannot fault at CPL 0.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) fault_address,
            options(nomem, nostack, preserves_flags));
    }
    let core = crate::processor::current_core();
    console::write_emergency(format_args!(
        "exception: vector {} ({}) rip={:#x} error-code={:#x} cr2={:#x} core={}\n",
        frame.vector,
        exception_name(frame.vector),
        frame.instruction_pointer,
        frame.error_code,
        fault_address,
        core
    ));
    hypercall::stop_self(EXCEPTION_EXIT_STATUS)
}
