//! Starting further cores of the partition the way a real machine does: INIT, then two
//! StartUp IPIs (Intel SDM Vol. 3A 9.4.4.1 "Typical BSP Initialization Sequence").
//!
//! A StartUp IPI starts the core in real mode at CS = vector << 8, IP = 0, so the start
//! code must lie page-aligned below 1 MiB. [`start_core`] copies a small trampoline to
//! guest-physical [`TRAMPOLINE_ADDRESS`] (after checking that the memory map calls it
//! RAM and that neither the image nor the loader's data lie there), fills in its
//! parameter block (CR3 = the runtime's identity map, a stack of its own, the 64-bit
//! entry, how to enable paging) and sends INIT (level assert), waits 10 ms, sends StartUp,
//! waits 200 µs and sends the second StartUp unless the core has already arrived. The
//! trampoline goes 16-bit real mode → 32-bit protected mode (its own GDT) → 64-bit long
//! mode (PAE, EFER.LME, paging: Intel SDM Vol. 3A 9.8.5 "Initializing IA-32e Mode") and
//! calls the runtime's entry, which loads the runtime's GDT and IDT, enables the core's
//! x2APIC and calls the guest's `ap_main(apic_id)`. When that returns, the core halts with
//! interrupts masked.
//!
//! The MOV to CR0 that enables paging either only adds CR0.PG to what the core has
//! ([`PagingSwitch::SetPagingBit`], the runtime's default) or loads a whole value, as
//! Linux's real-mode trampoline loads `CR0_STATE` (PG together with PE, MP, ET, NE, WP and AM
//! in one write: [`PagingSwitch::Load`]). A hypervisor that shadows some CR0 bits (VMX
//! owns CR0.NE) sees only the second kind as a CR0 exit, so both must work.
//!
//! Under Tessera the ICR writes go to the hypervisor, which emulates INIT and StartUp
//! for the partition's own cores only.

// On the host (unit tests) the assembly and the code around it are not built.
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::memory::MemoryRange;
use crate::start_info::BootInfo;
use crate::x2apic::{self, DeliveryMode};
use crate::{boot, interrupts, processor, time};

/// Guest-physical address of the trampoline: page-aligned, below 1 MiB, above the
/// real-mode IVT/BDA and the start_info page, below the EBDA.
pub const TRAMPOLINE_ADDRESS: u64 = 0x8000;
/// The memory the trampoline may occupy (one page).
pub const TRAMPOLINE_SIZE: u64 = 0x1000;
/// StartUp vector: the page number of the trampoline.
const STARTUP_VECTOR: u8 = (TRAMPOLINE_ADDRESS >> 12) as u8;
/// Stack per started core.
pub const CORE_STACK_SIZE: usize = 32 * 1024;
/// How many cores the runtime can start over the whole run (one stack each).
pub const MAX_STARTED_CORES: usize = 7;
/// Waits of the start-up sequence (Intel SDM Vol. 3A 9.4.4.1).
const INIT_DELAY_MICROSECONDS: u64 = 10_000;
const STARTUP_DELAY_MICROSECONDS: u64 = 200;
/// How long to wait for the started core to reach Rust code.
const ARRIVAL_TIMEOUT_MICROSECONDS: u64 = 1_000_000;

/// Offsets in the trampoline's parameter block.
const PARAMETER_PAGE_TABLE: usize = 0;
const PARAMETER_STACK_TOP: usize = 8;
const PARAMETER_ENTRY: usize = 16;
/// The CR0 value the trampoline loads to enable paging, or 0: set CR0.PG only.
const PARAMETER_CR0: usize = 24;

/// CR0.PE (protection enable) and CR0.PG (paging), which every value the trampoline loads
/// must keep: it runs in protected mode and jumps into 64-bit code straight after.
const CR0_PE: u32 = 1 << 0;
const CR0_PG: u32 = 1 << 31;

/// How a started core's trampoline enables paging, the last step of entering IA-32e mode
/// (Intel SDM Vol. 3A 9.8.5 step 5; AMD APM Vol. 2 14.6.1): one MOV to CR0 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingSwitch {
    /// Add CR0.PG to what the core has: PE from the trampoline, CD | NW | ET from INIT
    /// (Intel SDM Vol. 3A 9.1.1, table 9-1).
    SetPagingBit,
    /// Load this value; it must contain PE and PG. Linux's trampoline loads `CR0_STATE`
    /// (PG | AM | WP | NE | ET | MP | PE) this way, turning paging on and the other bits
    /// with it.
    Load(u32),
}

impl PagingSwitch {
    /// The parameter block's word: 0 for [`PagingSwitch::SetPagingBit`].
    fn parameter(self) -> u64 {
        match self {
            PagingSwitch::SetPagingBit => 0,
            PagingSwitch::Load(value) => u64::from(value),
        }
    }
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .rodata.tessera_trampoline, "a"
    .balign 16
    .global tessera_trampoline_start
    .global tessera_trampoline_parameters
    .global tessera_trampoline_end
tessera_trampoline_start:
    .code16
    cli
    cld
    mov ax, cs
    mov ds, ax
    /* lgdt [gdt pointer], DS-relative 16-bit displacement (0F 01 /2, ModRM 0x16) */
    .byte 0x0f, 0x01, 0x16
    .word tessera_trampoline_gdt_pointer - tessera_trampoline_start
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* jmp far 0x18:trampoline32, 32-bit offset (66 EA ptr16:32) */
    .byte 0x66, 0xea
    .long {base} + (tessera_trampoline32 - tessera_trampoline_start)
    .word 0x18

    .code32
tessera_trampoline32:
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov fs, eax
    mov gs, eax
    /* CR4.PAE, CR3 = the runtime's identity map, EFER.LME, then CR0.PG. */
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    /* mov eax, imm32 (B8 id): the parameter block's address, kept in ESI */
    .byte 0xb8
    .long {base} + (tessera_trampoline_parameters - tessera_trampoline_start)
    mov esi, eax
    mov eax, dword ptr [esi + {page_table}]
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    /* One MOV to CR0: CR0 | PG, or the parameter block's whole value if it is not 0. */
    mov eax, cr0
    or eax, 0x80000000
    mov edx, dword ptr [esi + {cr0}]
    test edx, edx
    cmovnz eax, edx
    mov cr0, eax
    /* jmp far 0x08:trampoline64 (EA ptr16:32) */
    .byte 0xea
    .long {base} + (tessera_trampoline64 - tessera_trampoline_start)
    .word 0x08

    .code64
tessera_trampoline64:
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    xor eax, eax
    mov fs, eax
    mov gs, eax
    /* mov eax, imm32 (B8 id): the parameter block's address */
    .byte 0xb8
    .long {base} + (tessera_trampoline_parameters - tessera_trampoline_start)
    mov rsp, qword ptr [rax + {stack_top}]
    mov rcx, qword ptr [rax + {entry}]
    xor ebp, ebp
    call rcx
tessera_trampoline_halt:
    cli
    hlt
    jmp tessera_trampoline_halt

    .balign 8
tessera_trampoline_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: flat 4 GiB data */
    .quad 0x00cf9b000000ffff        /* 0x18: flat 4 GiB 32-bit code */
tessera_trampoline_gdt_pointer:
    .short 4 * 8 - 1
    .long {base} + (tessera_trampoline_gdt - tessera_trampoline_start)
    .balign 8
tessera_trampoline_parameters:
    .quad 0                         /* page table (CR3) */
    .quad 0                         /* stack top */
    .quad 0                         /* 64-bit entry */
    .quad 0                         /* CR0 to load, or 0: set PG only */
tessera_trampoline_end:
    .popsection
    "#,
    base = const TRAMPOLINE_ADDRESS,
    page_table = const PARAMETER_PAGE_TABLE,
    stack_top = const PARAMETER_STACK_TOP,
    entry = const PARAMETER_ENTRY,
    cr0 = const PARAMETER_CR0,
);

#[cfg(target_os = "none")]
extern "C" {
    static tessera_trampoline_start: u8;
    static tessera_trampoline_parameters: u8;
    static tessera_trampoline_end: u8;
    /// The runtime's GDT pointer (see `boot`).
    static tessera_gdt_pointer: u8;
}

/// Why a core could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartCoreError {
    /// The x2APIC is not enabled (see [`x2apic::enable`]).
    NoX2Apic,
    /// The trampoline page is not RAM in the memory map, or the image or loader data
    /// lie there.
    TrampolineUnavailable,
    /// All [`MAX_STARTED_CORES`] stacks are in use.
    NoStackLeft,
    /// The core did not reach the runtime within a second.
    TimedOut,
}

/// One started core's stack.
#[repr(C, align(16))]
struct CoreStack(UnsafeCell<[u8; CORE_STACK_SIZE]>);

/// The stacks, handed out in order by [`NEXT_STACK`].
struct CoreStacks([CoreStack; MAX_STARTED_CORES]);

// SAFETY: each stack is handed to exactly one core (NEXT_STACK only counts up), and the
// runtime itself never reads or writes stack memory through this static.
unsafe impl Sync for CoreStacks {}

static CORE_STACKS: CoreStacks =
    CoreStacks([const { CoreStack(UnsafeCell::new([0; CORE_STACK_SIZE])) }; MAX_STARTED_CORES]);
static NEXT_STACK: AtomicUsize = AtomicUsize::new(0);
/// Set while a start-up uses the trampoline's parameter block.
static STARTING: AtomicBool = AtomicBool::new(false);
/// Counts cores that reached [`tessera_core_entry`].
static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// The guest's `ap_main`, as a `fn(u32)` cast to usize.
static CORE_MAIN: AtomicUsize = AtomicUsize::new(0);

/// Whether the trampoline page can be used: RAM in the memory map, and clear of the
/// image and of the loader's data.
pub fn trampoline_available(info: &BootInfo) -> bool {
    let page = MemoryRange::with_size(TRAMPOLINE_ADDRESS, TRAMPOLINE_SIZE);
    let is_ram = info
        .ram_ranges()
        .any(|ram| ram.start <= page.start && page.end <= ram.end);
    let overlaps = |other: MemoryRange| other.start < page.end && page.start < other.end;
    let clear =
        !overlaps(boot::image_range()) && !info.boot_data_ranges().iter().copied().any(overlaps);
    is_ram && clear
}

/// Starts the core with x2APIC ID `apic_id` (a core of this partition) and runs
/// `ap_main(apic_id)` on it. Returns once the core runs the runtime's code.
#[cfg(target_os = "none")]
pub fn start_core(info: &BootInfo, apic_id: u32, ap_main: fn(u32)) -> Result<(), StartCoreError> {
    start_core_with(info, apic_id, ap_main, PagingSwitch::SetPagingBit)
}

/// [`start_core`], with the trampoline enabling paging as `paging` says.
///
/// # Panics
///
/// If `paging` loads a CR0 value without PE or PG: the trampoline could not go on.
#[cfg(target_os = "none")]
pub fn start_core_with(
    info: &BootInfo,
    apic_id: u32,
    ap_main: fn(u32),
    paging: PagingSwitch,
) -> Result<(), StartCoreError> {
    if let PagingSwitch::Load(value) = paging {
        assert!(
            value & (CR0_PE | CR0_PG) == CR0_PE | CR0_PG,
            "the trampoline's CR0 value {value:#x} lacks PE or PG"
        );
    }
    let apic = x2apic::get().ok_or(StartCoreError::NoX2Apic)?;
    if !trampoline_available(info) {
        return Err(StartCoreError::TrampolineUnavailable);
    }
    while STARTING
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let result = start_with_trampoline(apic, apic_id, ap_main, paging);
    STARTING.store(false, Ordering::Release);
    result
}

#[cfg(target_os = "none")]
fn start_with_trampoline(
    apic: x2apic::X2Apic,
    apic_id: u32,
    ap_main: fn(u32),
    paging: PagingSwitch,
) -> Result<(), StartCoreError> {
    let stack_index = NEXT_STACK.fetch_add(1, Ordering::Relaxed);
    let Some(stack) = CORE_STACKS.0.get(stack_index) else {
        return Err(StartCoreError::NoStackLeft);
    };
    let stack_top = stack.0.get() as u64 + CORE_STACK_SIZE as u64;

    let source = (&raw const tessera_trampoline_start) as u64;
    let length = (&raw const tessera_trampoline_end) as u64 - source;
    let parameters = (&raw const tessera_trampoline_parameters) as u64 - source;
    let page_table: u64;
    // SAFETY: reading CR3 has no side effects at CPL 0.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) page_table, options(nomem, nostack, preserves_flags));
    }
    assert!(length <= TRAMPOLINE_SIZE, "the trampoline outgrew its page");
    let destination = TRAMPOLINE_ADDRESS as *mut u8;
    // SAFETY: `start_core` checked that the trampoline page is RAM of this partition
    // outside the image and the loader's data, so nothing of this program lives there;
    // the identity map covers it; the copy stays inside the page (asserted above), and
    // the parameter words are 8-aligned inside the copy (`.balign 8` in the assembly).
    unsafe {
        core::ptr::copy_nonoverlapping(source as *const u8, destination, length as usize);
        let block = destination.add(parameters as usize);
        core::ptr::write_volatile(block.add(PARAMETER_PAGE_TABLE) as *mut u64, page_table);
        core::ptr::write_volatile(block.add(PARAMETER_STACK_TOP) as *mut u64, stack_top);
        core::ptr::write_volatile(
            block.add(PARAMETER_ENTRY) as *mut u64,
            tessera_core_entry as *const () as u64,
        );
        core::ptr::write_volatile(block.add(PARAMETER_CR0) as *mut u64, paging.parameter());
    }
    CORE_MAIN.store(ap_main as usize, Ordering::Release);
    let arrived_before = ARRIVED.load(Ordering::Acquire);
    let has_arrived = || ARRIVED.load(Ordering::Acquire) != arrived_before;

    apic.send_init_level_assert(apic_id);
    time::delay_microseconds(INIT_DELAY_MICROSECONDS);
    apic.send_ipi(apic_id, DeliveryMode::StartUp, STARTUP_VECTOR);
    time::delay_microseconds(STARTUP_DELAY_MICROSECONDS);
    if !has_arrived() {
        apic.send_ipi(apic_id, DeliveryMode::StartUp, STARTUP_VECTOR);
    }
    let timeout = time::tsc_hz().saturating_mul(ARRIVAL_TIMEOUT_MICROSECONDS) / 1_000_000;
    let started = processor::rdtsc();
    while !has_arrived() {
        if processor::rdtsc().wrapping_sub(started) > timeout {
            return Err(StartCoreError::TimedOut);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

const _: () = assert!(STARTUP_VECTOR as u64 * 0x1000 == TRAMPOLINE_ADDRESS);

/// First Rust code of a started core, on its own stack, in 64-bit mode on the runtime's
/// page tables (interrupts masked).
#[cfg(target_os = "none")]
extern "C" fn tessera_core_entry() -> ! {
    // SAFETY: the runtime's GDT is a static of this image with the same 0x08 code and
    // 0x10 data descriptors as the trampoline's, so the loaded selectors stay valid.
    unsafe {
        core::arch::asm!("lgdt [{pointer}]", pointer = in(reg) &raw const tessera_gdt_pointer,
            options(readonly, nostack, preserves_flags));
    }
    interrupts::load();
    let apic_id = match x2apic::enable() {
        Ok(apic) => apic.id(),
        Err(_) => processor::current_core(),
    };
    let main = CORE_MAIN.load(Ordering::Acquire);
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    if main != 0 {
        // SAFETY: CORE_MAIN holds only 0 or a `fn(u32)` stored by `start_core`.
        let main: fn(u32) = unsafe { core::mem::transmute::<usize, fn(u32)>(main) };
        main(apic_id);
    }
    processor::disable_interrupts();
    loop {
        processor::halt();
    }
}
