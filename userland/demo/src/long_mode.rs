//! The demo's `long-mode=<apic id>` mode: the textbook switch into IA-32e (long) mode on
//! every core of the partition, and back out and in again.
//!
//! Entering IA-32e mode (Intel SDM Vol. 3A 9.8.5 "Initializing IA-32e Mode"; AMD APM
//! Vol. 2 14.6.1 "Activating Long Mode") starts in 32-bit protected mode with paging off:
//! set CR4.PAE, load CR3 with the PML4, set IA32_EFER.LME with WRMSR, then enable paging.
//! The runtime's entry code enables paging by adding CR0.PG alone; Linux's real-mode
//! trampoline for secondary cores instead loads `CR0_STATE` — PG together with
//! PE, MP, ET, NE, WP and AM — in ONE `mov cr0`, then far-jumps to 64-bit code. That single
//! write changes bits a hypervisor may shadow (VMX owns CR0.NE), so the hypervisor sees a
//! CR0 exit that turns paging on and must activate IA-32e mode itself (set EFER.LMA and the
//! "IA-32e mode guest" VM-entry control, SDM Vol. 3C 25.8.1 and 27.3.1.1); a hypervisor
//! that leaves them clear makes the VM entry fail. This mode does it the Linux way:
//!
//! * on the boot core: leave long mode (SDM 9.8.5.4 "Switching Out of IA-32e Mode
//!   Operation": compatibility mode, clear CR0.PG, clear EFER.LME), go back to the state
//!   the PVH entry starts in (CR0 = PE | ET, CR4.PAE clear), and do the textbook switch;
//! * on the second core, started by INIT-SIPI-SIPI through the runtime's trampoline
//!   (real mode → protected mode → long mode), the trampoline's own MOV to CR0 loads
//!   `CR0_STATE` ([`smp::PagingSwitch::Load`]);
//! * then on each core once more: leave long mode and enter it again the textbook way.
//!
//! After each switch the core reads CR0, CR4 and IA32_EFER back and runs a 64-bit-only
//! instruction (a MOV of a 64-bit immediate into R8, which does not exist outside 64-bit
//! mode), and prints one line per step:
//!
//! ```text
//! long-mode: core <n> left: cr0=0x… efer=0x… lma=0
//! long-mode: core <n> entered: cr0=0x… cr4=0x… efer=0x… lma=1 64-bit=ok
//! long-mode: core <n> left: cr0=0x… efer=0x… lma=0
//! long-mode: core <n> re-entered: cr0=0x… cr4=0x… efer=0x… lma=1 64-bit=ok
//! long-mode: core <n> ok
//! ```
//!
//! (the second core's first line is `entered`: it had no long mode to leave). `left` is
//! read right after CR0.PG was cleared, when EFER.LMA must already read 0 (SDM 9.8.5.4).
//! The boot core waits for the second core's verdict and prints `long-mode: every core ok`;
//! any failed rule prints `long-mode: core <n> FAILED: <rule>` and stops the partition with
//! [`EXIT_LONG_MODE_FAILED`].

use core::sync::atomic::{AtomicU32, Ordering};

use tessera_guest::{hypercall, println, processor, smp, BootInfo};

use crate::interrupt_modes::{apic_or_stop, number_or_stop, tsc_ticks};
use crate::EXIT_LONG_MODE_FAILED;

/// CR0 bits (Intel SDM Vol. 3A 2.5 "Control Registers").
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
/// What Linux's real-mode trampoline loads into CR0 to enable paging (its `CR0_STATE`):
/// 0x80050033.
const CR0_STATE: u64 = CR0_PG | CR0_AM | CR0_WP | CR0_NE | CR0_ET | CR0_MP | CR0_PE;
/// The CR0 bits the textbook write adds besides PG; cleared again when leaving long mode,
/// so that every switch sets them in the same write as PG.
const CR0_EXTRA: u64 = CR0_AM | CR0_WP | CR0_NE | CR0_MP;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// IA32_EFER and its long-mode bits (Intel SDM Vol. 3A 2.2.1): LME enables IA-32e mode,
/// LMA (read-only) says it is active.
const IA32_EFER: u32 = 0xc000_0080;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Selectors of [`tessera_demo_long_mode_gdt`]: the same 64-bit code and data descriptors
/// as the runtime's GDT at 0x08 and 0x10, plus 32-bit code at 0x18.
const CODE64_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const CODE32_SELECTOR: u16 = 0x18;
/// The value the 64-bit-only instruction moves into R8: its upper half shows that the
/// instruction ran as a 64-bit MOV (in 32-bit mode the same bytes decode as DEC ECX and a
/// 32-bit MOV into EAX).
const PROBE_VALUE: u64 = 0x0123_4567_89ab_cdef;
/// How long the boot core waits for the second core's verdict (microseconds).
const SECOND_CORE_TIMEOUT_MICROSECONDS: u64 = 5_000_000;

/// What one pass through [`tessera_demo_long_mode_round_trip`] saw; the first two words
/// are its scratch space. Offsets go into the assembly as constants.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RoundTrip {
    /// The caller's stack pointer (with its GDTR stored there) for the way back.
    saved_stack: u64,
    /// CR3 for the re-entry: the runtime's identity map of the first 4 GiB.
    page_table: u64,
    /// CR0 and IA32_EFER right after CR0.PG was cleared.
    left_cr0: u64,
    left_efer: u64,
    /// CR0, CR4 and IA32_EFER after the textbook switch, and what the 64-bit-only MOV
    /// left in R8.
    cr0: u64,
    cr4: u64,
    efer: u64,
    probe: u64,
}

/// The registers that show whether a core is in long mode.
#[derive(Clone, Copy)]
struct Entered {
    cr0: u64,
    cr4: u64,
    efer: u64,
    probe: u64,
}

/// The registers that show whether a core has left long mode.
#[derive(Clone, Copy)]
struct Left {
    cr0: u64,
    efer: u64,
}

core::arch::global_asm!(
    r#"
    .pushsection .text.tessera_demo_long_mode, "ax"
    .global tessera_demo_long_mode_round_trip
    .code64
/* extern "sysv64" fn(record: *mut RoundTrip), RDI below 4 GiB (the image, its stacks and
   page tables lie in the identity map's first 4 GiB and are addressed with 32-bit
   registers in between). The upper halves of the general registers are undefined after
   legacy mode (SDM Vol. 1 3.4.1.1), so the callee-saved ones go to the stack. */
tessera_demo_long_mode_round_trip:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    pushfq
    cli
    sub rsp, 16
    sgdt [rsp]
    mov [rdi + {saved_stack}], rsp
    mov rax, cr3
    mov [rdi + {page_table}], rax
    lgdt [rip + tessera_demo_long_mode_gdt_pointer]

    /* SDM 9.8.5.4 step 1: to compatibility mode, by a far return into 32-bit code. */
    push {code32}
    lea rax, [rip + .Ltessera_demo_compatibility]
    push rax
    retfq
    .code32
.Ltessera_demo_compatibility:
    mov eax, {data}
    mov ds, eax
    mov es, eax
    mov ss, eax
    /* Step 2: deactivate IA-32e mode by clearing CR0.PG, alone. */
    mov eax, cr0
    and eax, 0x7fffffff
    mov cr0, eax
    /* LMA must read 0 now (the processor clears it with PG). */
    mov eax, cr0
    mov dword ptr [edi + {left_cr0}], eax
    mov dword ptr [edi + {left_cr0} + 4], 0
    mov ecx, {efer}
    rdmsr
    mov dword ptr [edi + {left_efer}], eax
    mov dword ptr [edi + {left_efer} + 4], edx
    /* Step 4: disable IA-32e mode, EFER.LME = 0 (step 3, legacy page tables, is skipped:
       paging stays off). */
    and eax, {not_lme}
    wrmsr
    /* Back to the state the PVH entry starts in: CR4.PAE clear, CR0 = PE | ET. */
    mov eax, cr4
    and eax, {not_pae}
    mov cr4, eax
    mov eax, cr0
    and eax, {not_extra}
    mov cr0, eax

    /* The textbook switch (SDM 9.8.5, as Linux's trampoline): CR4.PAE, CR3, EFER.LME,
       then ONE move to CR0 that sets PG with NE, WP, AM, MP, ET and keeps PE ... */
    mov eax, cr4
    or eax, {pae}
    mov cr4, eax
    mov eax, dword ptr [edi + {page_table}]
    mov cr3, eax
    mov ecx, {efer}
    rdmsr
    or eax, {lme}
    wrmsr
    mov eax, {cr0_state}
    mov cr0, eax
    /* ... and a far jump to 64-bit code: jmp far 0x08:entered (EA ptr16:32). */
    .byte 0xea
    .long .Ltessera_demo_entered
    .word {code64}
    .code64
.Ltessera_demo_entered:
    /* A 64-bit-only instruction first: REX.W + REX.B, MOV R8, imm64. */
    movabs r8, {probe_value}
    mov edi, edi
    mov [rdi + {probe}], r8
    mov eax, {data}
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov rax, cr0
    mov [rdi + {cr0}], rax
    mov rax, cr4
    mov [rdi + {cr4}], rax
    mov ecx, {efer}
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov [rdi + {efer_value}], rax
    /* The caller's stack, GDT, flags and registers. */
    mov rsp, [rdi + {saved_stack}]
    lgdt [rsp]
    add rsp, 16
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .popsection

    .pushsection .rodata.tessera_demo_long_mode_gdt, "a"
    .balign 8
    /* The accessed bits are preset so the processor never writes to this table. */
tessera_demo_long_mode_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf93000000ffff        /* 0x10: flat 4 GiB data, DPL 0 */
    .quad 0x00cf9b000000ffff        /* 0x18: flat 4 GiB 32-bit code, DPL 0 */
tessera_demo_long_mode_gdt_end:
    .balign 8
tessera_demo_long_mode_gdt_pointer:
    .short tessera_demo_long_mode_gdt_end - tessera_demo_long_mode_gdt - 1
    .quad tessera_demo_long_mode_gdt
    .popsection
    "#,
    saved_stack = const core::mem::offset_of!(RoundTrip, saved_stack),
    page_table = const core::mem::offset_of!(RoundTrip, page_table),
    left_cr0 = const core::mem::offset_of!(RoundTrip, left_cr0),
    left_efer = const core::mem::offset_of!(RoundTrip, left_efer),
    cr0 = const core::mem::offset_of!(RoundTrip, cr0),
    cr4 = const core::mem::offset_of!(RoundTrip, cr4),
    efer_value = const core::mem::offset_of!(RoundTrip, efer),
    probe = const core::mem::offset_of!(RoundTrip, probe),
    code64 = const CODE64_SELECTOR,
    data = const DATA_SELECTOR,
    code32 = const CODE32_SELECTOR,
    efer = const IA32_EFER,
    lme = const EFER_LME,
    not_lme = const !EFER_LME as u32,
    pae = const CR4_PAE,
    not_pae = const !CR4_PAE as u32,
    not_extra = const !CR0_EXTRA as u32,
    cr0_state = const CR0_STATE,
    probe_value = const PROBE_VALUE,
);

extern "sysv64" {
    /// Leaves long mode and enters it again the textbook way (see the assembly above);
    /// fills in `record`. Interrupts stay masked throughout.
    fn tessera_demo_long_mode_round_trip(record: *mut RoundTrip);
}

/// Leaves long mode to 32-bit protected mode with paging off, enters it again with the
/// textbook switch, and returns what was read on the way.
fn round_trip() -> (Left, Entered) {
    let mut record = RoundTrip::default();
    // SAFETY: the routine returns on the caller's stack with its GDT, RFLAGS and
    // callee-saved registers restored, having changed only CR0's AM, WP, NE and MP bits
    // (now set, which the runtime does not depend on) and nothing in memory but `record`.
    // In between it runs identity-mapped code of this image with interrupts masked, and
    // addresses `record` with 32-bit registers: it lies on this core's stack, in the image
    // (.bss), below 4 GiB. The runtime's page tables it reloads into CR3 are the ones in
    // use, so every mapping stays as it was.
    unsafe { tessera_demo_long_mode_round_trip(&mut record) };
    (
        Left {
            cr0: record.left_cr0,
            efer: record.left_efer,
        },
        Entered {
            cr0: record.cr0,
            cr4: record.cr4,
            efer: record.efer,
            probe: record.probe,
        },
    )
}

/// The registers of a core that is in long mode already (the second core, which the
/// trampoline brought there).
fn current_state() -> Entered {
    let cr0: u64;
    let cr4: u64;
    let probe: u64;
    // SAFETY: reading CR0 and CR4 has no side effects at CPL 0; the MOV into R8 only
    // writes that register, which the asm block declares as its output.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        core::arch::asm!("movabs r8, {value}", value = const PROBE_VALUE, out("r8") probe,
            options(nomem, nostack, preserves_flags));
    }
    // SAFETY: IA32_EFER exists on every processor with long mode; reading it changes
    // nothing.
    let efer = unsafe { processor::read_msr(IA32_EFER) };
    Entered {
        cr0,
        cr4,
        efer,
        probe,
    }
}

/// The first rule of an active long mode that `entered` breaks, if any.
fn entered_problem(entered: &Entered) -> Option<&'static str> {
    if entered.cr0 & CR0_STATE != CR0_STATE {
        Some("CR0 lacks one of PG, AM, WP, NE, ET, MP, PE")
    } else if entered.cr4 & CR4_PAE == 0 {
        Some("CR4.PAE is clear")
    } else if entered.efer & EFER_LME == 0 {
        Some("EFER.LME is clear")
    } else if entered.efer & EFER_LMA == 0 {
        Some("EFER.LMA is clear with paging on")
    } else if entered.probe != PROBE_VALUE {
        Some("the 64-bit MOV of an immediate into R8 read back wrong")
    } else {
        None
    }
}

/// The first rule of a left long mode that `left` breaks, if any.
fn left_problem(left: &Left) -> Option<&'static str> {
    if left.cr0 & CR0_PG != 0 {
        Some("CR0.PG still set after clearing it")
    } else if left.efer & EFER_LMA != 0 {
        Some("EFER.LMA still set after clearing CR0.PG")
    } else {
        None
    }
}

/// Prints an `entered`/`re-entered` line; keeps the first problem in `failure`.
fn report_entered(core: u32, step: &str, entered: &Entered, failure: &mut Option<&'static str>) {
    println!(
        "long-mode: core {core} {step}: cr0={:#x} cr4={:#x} efer={:#x} lma={} 64-bit={}",
        entered.cr0,
        entered.cr4,
        entered.efer,
        u8::from(entered.efer & EFER_LMA != 0),
        if entered.probe == PROBE_VALUE {
            "ok"
        } else {
            "FAILED"
        }
    );
    *failure = failure.or(entered_problem(entered));
}

/// Prints a `left` line; keeps the first problem in `failure`.
fn report_left(core: u32, left: &Left, failure: &mut Option<&'static str>) {
    println!(
        "long-mode: core {core} left: cr0={:#x} efer={:#x} lma={}",
        left.cr0,
        left.efer,
        u8::from(left.efer & EFER_LMA != 0)
    );
    *failure = failure.or(left_problem(left));
}

/// The switches on this core: the first entry (by the trampoline, or by a round trip from
/// the runtime's long mode), then one more round trip. Prints the verdict line; returns
/// whether every rule held.
fn switch_on_this_core(core: u32, entered_by_trampoline: bool) -> bool {
    let mut failure = None;
    if entered_by_trampoline {
        report_entered(core, "entered", &current_state(), &mut failure);
    } else {
        let (left, entered) = round_trip();
        report_left(core, &left, &mut failure);
        report_entered(core, "entered", &entered, &mut failure);
    }
    let (left, entered) = round_trip();
    report_left(core, &left, &mut failure);
    report_entered(core, "re-entered", &entered, &mut failure);
    match failure {
        None => println!("long-mode: core {core} ok"),
        Some(rule) => println!("long-mode: core {core} FAILED: {rule}"),
    }
    failure.is_none()
}

/// The second core's verdict: 0 while it runs, then [`VERDICT_OK`] or [`VERDICT_FAILED`].
static SECOND_CORE_VERDICT: AtomicU32 = AtomicU32::new(0);
const VERDICT_OK: u32 = 1;
const VERDICT_FAILED: u32 = 2;

/// `ap_main` of the second core, which the trampoline brought into long mode with the
/// textbook CR0 write.
fn second_core_main(apic_id: u32) {
    let verdict = if switch_on_this_core(apic_id, true) {
        VERDICT_OK
    } else {
        VERDICT_FAILED
    };
    SECOND_CORE_VERDICT.store(verdict, Ordering::Release);
}

/// `long-mode=<apic id>`: the switches on this core, then on the core `<apic id>` of the
/// same partition, started by INIT-SIPI-SIPI with the trampoline loading `CR0_STATE`.
pub fn run(info: &BootInfo, text: &str) {
    let target = number_or_stop("long-mode", text, EXIT_LONG_MODE_FAILED);
    let Ok(target) = u32::try_from(target) else {
        println!("long-mode: {target} is not an APIC ID");
        hypercall::stop_self(EXIT_LONG_MODE_FAILED)
    };
    let apic = apic_or_stop("long-mode", EXIT_LONG_MODE_FAILED);
    if !switch_on_this_core(apic.id(), false) {
        hypercall::stop_self(EXIT_LONG_MODE_FAILED);
    }
    let paging = smp::PagingSwitch::Load(CR0_STATE as u32);
    if let Err(error) = smp::start_core_with(info, target, second_core_main, paging) {
        println!("long-mode: core {target} did not start: {error:?}");
        hypercall::stop_self(EXIT_LONG_MODE_FAILED);
    }
    let timeout = tsc_ticks(SECOND_CORE_TIMEOUT_MICROSECONDS);
    let started = processor::rdtsc();
    loop {
        match SECOND_CORE_VERDICT.load(Ordering::Acquire) {
            VERDICT_OK => break,
            VERDICT_FAILED => hypercall::stop_self(EXIT_LONG_MODE_FAILED),
            _ if processor::rdtsc().wrapping_sub(started) > timeout => {
                println!("long-mode: core {target} started but gave no verdict");
                hypercall::stop_self(EXIT_LONG_MODE_FAILED);
            }
            _ => core::hint::spin_loop(),
        }
    }
    println!("long-mode: every core ok");
}
