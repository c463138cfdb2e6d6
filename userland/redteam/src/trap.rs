//! The attacker's own processor tables: a GDT with user segments and one TSS per core, an
//! IDT whose handlers record what happened and resume where the attacker said, page tables
//! with user access and room for mappings above 4 GiB, and the probes built on them.
//!
//! The runtime's IDT stops the partition on any exception. An attacker needs the opposite:
//! run an instruction that may fault, learn whether and how it faulted, and go on. So each
//! core gets a [`CoreBlock`] (its GS base points at it) holding a recovery point. [`probe`]
//! arms it, calls a small assembly routine, and disarms it; an exception while it is armed
//! is recorded (vector, error code, RIP) and the handler returns to the recovery point, in
//! kernel mode on the recovery stack, whatever mode the fault came from (Intel SDM Vol. 3A
//! 6.14.2–6.14.4: 64-bit mode IRET loads CS, SS and RSP from the frame, so the handler can
//! rewrite them). [`probe_user`] does the same for a routine entered in ring 3 with IRETQ;
//! the routine ends in `ud2` at [`user_return_address`], which tells "it returned" from "it
//! faulted".
//!
//! Interrupts (vectors 32–255) are counted per core and vector and acknowledged (x2APIC EOI,
//! a pass-through MSR: no VM exit); NMIs are counted. A core in [`Mode::Storm`] returns
//! from every exception to the instruction that raised it (the benign-exception loops the
//! hypervisor must survive, SDM Vol. 3A 17.3.1.4 for #DB single-step, 6.15 "Interrupt 17"
//! for #AC); a core in [`Mode::NmiSpin`] never returns from its next NMI, so NMIs stay
//! blocked on it for good (SDM Vol. 3A 6.7.1). Any other exception without a recovery point
//! prints `exception: …` and stops the partition with status 6.
//!
//! The selectors 0x08 (64-bit code) and 0x10 (data) are the runtime's, so switching GDTs
//! needs no far jump; 0x1b and 0x23 are ring-3 data and code; 0x28 + 16 × slot is the TSS
//! of the core in `slot`.

#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use tessera_guest::{hypercall, processor};

/// Cores the tables have room for (a partition of the red-team tables has at most two).
pub const MAX_CORES: usize = 4;
/// Ring-3 selectors (RPL 3): data at GDT index 3, 64-bit code at index 4.
pub const USER_DATA_SELECTOR: u64 = 0x18 | 3;
pub const USER_CODE_SELECTOR: u64 = 0x20 | 3;
/// The TSS of slot 0; slot n's is 16 bytes further.
const FIRST_TSS_SELECTOR: u16 = 0x28;
/// IA32_GS_BASE (a pass-through MSR under Tessera).
const MSR_GS_BASE: u32 = 0xc000_0101;
/// RFLAGS bits.
pub const RFLAGS_TRAP: u64 = 1 << 8;
pub const RFLAGS_ALIGNMENT_CHECK: u64 = 1 << 18;
/// A recorded vector of "no fault".
const NO_FAULT: u64 = u64::MAX;

/// What a core's exception handler does when no recovery point is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Mode {
    /// Report the exception and stop the partition.
    Normal = 0,
    /// Count it and return to the instruction that raised it (or, for a trap, the next).
    Storm = 1,
    /// On the next NMI: spin in the handler for good, NMIs blocked.
    NmiSpin = 2,
    /// On each NMI: record the handler's nesting depth, then wait in the handler until
    /// released ([`CoreBlock::release_nmi`]) before returning.
    NmiHold = 3,
}

/// Per-core state the handlers reach through GS. Field offsets are used by the assembly
/// below (checked at compile time).
#[repr(C, align(64))]
pub struct CoreBlock {
    self_address: AtomicU64,
    recovery_rip: AtomicU64,
    recovery_rsp: AtomicU64,
    fault_vector: AtomicU64,
    fault_error: AtomicU64,
    fault_rip: AtomicU64,
    mode: AtomicU64,
    nmis: AtomicU64,
    nmi_depth: AtomicU64,
    nmi_max_depth: AtomicU64,
    nmi_release: AtomicU64,
    exceptions: [AtomicU64; 32],
    vectors: [AtomicU32; 256],
}

const OFFSET_SELF: usize = core::mem::offset_of!(CoreBlock, self_address);
const OFFSET_RECOVERY_RIP: usize = core::mem::offset_of!(CoreBlock, recovery_rip);
const OFFSET_RECOVERY_RSP: usize = core::mem::offset_of!(CoreBlock, recovery_rsp);
const OFFSET_FAULT_VECTOR: usize = core::mem::offset_of!(CoreBlock, fault_vector);
const OFFSET_FAULT_ERROR: usize = core::mem::offset_of!(CoreBlock, fault_error);
const OFFSET_FAULT_RIP: usize = core::mem::offset_of!(CoreBlock, fault_rip);
const OFFSET_MODE: usize = core::mem::offset_of!(CoreBlock, mode);
const OFFSET_NMIS: usize = core::mem::offset_of!(CoreBlock, nmis);
const OFFSET_NMI_DEPTH: usize = core::mem::offset_of!(CoreBlock, nmi_depth);
const OFFSET_NMI_MAX_DEPTH: usize = core::mem::offset_of!(CoreBlock, nmi_max_depth);
const OFFSET_NMI_RELEASE: usize = core::mem::offset_of!(CoreBlock, nmi_release);
const OFFSET_EXCEPTIONS: usize = core::mem::offset_of!(CoreBlock, exceptions);
const OFFSET_VECTORS: usize = core::mem::offset_of!(CoreBlock, vectors);

impl CoreBlock {
    const fn new() -> CoreBlock {
        CoreBlock {
            self_address: AtomicU64::new(0),
            recovery_rip: AtomicU64::new(0),
            recovery_rsp: AtomicU64::new(0),
            fault_vector: AtomicU64::new(NO_FAULT),
            fault_error: AtomicU64::new(0),
            fault_rip: AtomicU64::new(0),
            mode: AtomicU64::new(Mode::Normal as u64),
            nmis: AtomicU64::new(0),
            nmi_depth: AtomicU64::new(0),
            nmi_max_depth: AtomicU64::new(0),
            nmi_release: AtomicU64::new(0),
            exceptions: [const { AtomicU64::new(0) }; 32],
            vectors: [const { AtomicU32::new(0) }; 256],
        }
    }

    /// Interrupts of `vector` this core has taken.
    pub fn interrupts(&self, vector: u8) -> u32 {
        self.vectors[usize::from(vector)].load(Ordering::Acquire)
    }

    /// NMIs this core has taken.
    pub fn nmis(&self) -> u64 {
        self.nmis.load(Ordering::Acquire)
    }

    /// Exceptions of `vector` (0–31) this core has taken, recovered or not.
    pub fn exceptions(&self, vector: u8) -> u64 {
        self.exceptions[usize::from(vector) % 32].load(Ordering::Acquire)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u64, Ordering::Release);
    }

    /// Clears the [`Mode::NmiHold`] record: depth, deepest nesting, pending release.
    pub fn reset_nmi_hold(&self) {
        self.nmi_depth.store(0, Ordering::Release);
        self.nmi_max_depth.store(0, Ordering::Release);
        self.nmi_release.store(0, Ordering::Release);
    }

    /// NMI handlers of [`Mode::NmiHold`] running now, and the most seen at once.
    pub fn nmi_depth(&self) -> (u64, u64) {
        (
            self.nmi_depth.load(Ordering::Acquire),
            self.nmi_max_depth.load(Ordering::Acquire),
        )
    }

    /// Lets one waiting [`Mode::NmiHold`] handler return.
    pub fn release_nmi(&self) {
        self.nmi_release.store(1, Ordering::Release);
    }
}

static BLOCKS: [CoreBlock; MAX_CORES] = [const { CoreBlock::new() }; MAX_CORES];

/// The slot of the core with x2APIC ID `apic_id`.
pub fn slot_of(apic_id: u32) -> usize {
    apic_id as usize % MAX_CORES
}

/// The block of the core with x2APIC ID `apic_id` (any core of the partition).
pub fn block_of(apic_id: u32) -> &'static CoreBlock {
    &BLOCKS[slot_of(apic_id)]
}

/// The block of the core this runs on (its GS base, set by [`install`]; slot 0 before).
pub fn current() -> &'static CoreBlock {
    // SAFETY: IA32_GS_BASE is a pass-through MSR that always exists in 64-bit mode.
    let address = unsafe { processor::read_msr(MSR_GS_BASE) };
    BLOCKS
        .iter()
        .find(|block| core::ptr::from_ref::<CoreBlock>(block) as u64 == address)
        .unwrap_or(&BLOCKS[0])
}

/// What an exception left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
}

impl Fault {
    /// The usual short name of the vector (`gp`, `ud`, …).
    pub fn name(&self) -> &'static str {
        match self.vector {
            0 => "de",
            1 => "db",
            3 => "bp",
            6 => "ud",
            7 => "nm",
            8 => "df",
            12 => "ss",
            13 => "gp",
            14 => "pf",
            16 => "mf",
            17 => "ac",
            18 => "mc",
            19 => "xm",
            _ => "exception",
        }
    }
}

/// The recorded fault of the last probe on this core, if it faulted.
fn take_fault(block: &CoreBlock) -> Option<Fault> {
    let vector = block.fault_vector.swap(NO_FAULT, Ordering::AcqRel);
    (vector != NO_FAULT).then(|| Fault {
        vector,
        error_code: block.fault_error.load(Ordering::Acquire),
        rip: block.fault_rip.load(Ordering::Acquire),
    })
}

// ---------------------------------------------------------------------------------------
// Tables.

/// GDT: null, kernel code 0x08, kernel data 0x10, user data 0x18, user code 0x20, then one
/// 16-byte TSS descriptor per slot. Writable: LTR sets the busy bit.
#[repr(C, align(16))]
struct Gdt([AtomicU64; 5 + 2 * MAX_CORES]);
static GDT: Gdt = Gdt([const { AtomicU64::new(0) }; 5 + 2 * MAX_CORES]);

/// One 104-byte 64-bit TSS per slot as 26 dwords (SDM Vol. 3A 8.7, Figure 8-11): RSP0 in
/// dwords 1–2, the I/O map base in the high half of dword 25 (104: no I/O bitmap, so every
/// port access from ring 3 with IOPL 0 raises #GP, SDM Vol. 1 19.5.2).
#[repr(C, align(16))]
struct Tss([AtomicU32; 26]);
static TSS: [Tss; MAX_CORES] = [const { Tss([const { AtomicU32::new(0) }; 26]) }; MAX_CORES];

/// The stacks ring-3 faults switch to (TSS.RSP0), one per slot.
#[repr(C, align(16))]
struct KernelStack([u8; 16 * 1024]);
static mut KERNEL_STACKS: [KernelStack; MAX_CORES] =
    [const { KernelStack([0; 16 * 1024]) }; MAX_CORES];

/// The stacks ring-3 code runs on, one per slot.
#[repr(C, align(16))]
struct UserStack([u8; 8 * 1024]);
static mut USER_STACKS: [UserStack; MAX_CORES] = [const { UserStack([0; 8 * 1024]) }; MAX_CORES];

/// IDT: 256 interrupt gates, two quadwords each.
#[repr(C, align(16))]
struct Idt([AtomicU64; 512]);
static IDT: Idt = Idt([const { AtomicU64::new(0) }; 512]);

/// A page-table page.
#[repr(C, align(4096))]
struct Table([AtomicU64; 512]);
impl Table {
    const fn empty() -> Table {
        Table([const { AtomicU64::new(0) }; 512])
    }
}

/// PML4, the PDPT of the first 512 GiB and four page directories mapping 0–4 GiB with
/// 2 MiB pages, plus spare pages for mappings elsewhere ([`map_identity`]).
static PML4: Table = Table::empty();
static LOW_PDPT: Table = Table::empty();
static LOW_PAGE_DIRECTORIES: [Table; 4] = [const { Table::empty() }; 4];
const SPARE_TABLES: usize = 8;
static SPARE: [Table; SPARE_TABLES] = [const { Table::empty() }; SPARE_TABLES];
static SPARE_USED: AtomicUsize = AtomicUsize::new(0);
static TABLES_BUILT: AtomicBool = AtomicBool::new(false);

/// Page-table entry bits (SDM Vol. 3A 4.5, Tables 4-15 to 4-20).
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const LARGE: u64 = 1 << 7;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// The first 2 MiB page of the MMIO window (0xFE000000: IOAPIC, local APIC, HPET), mapped
/// uncached as the runtime maps it.
const FIRST_UNCACHED_PAGE: usize = 2032;

fn table_address(table: &Table) -> u64 {
    table as *const Table as u64
}

/// Builds the page tables once: the same identity map as the runtime's (SDM Vol. 3A 4.5),
/// but with the user bit on every level, so ring-3 probes can run the image's code.
fn build_tables() {
    if TABLES_BUILT.swap(true, Ordering::AcqRel) {
        return;
    }
    for (index, directory) in LOW_PAGE_DIRECTORIES.iter().enumerate() {
        for (entry_index, entry) in directory.0.iter().enumerate() {
            let page = index * 512 + entry_index;
            let mut flags = PRESENT | WRITABLE | USER | LARGE;
            if page >= FIRST_UNCACHED_PAGE {
                flags |= CACHE_DISABLE | WRITE_THROUGH;
            }
            entry.store(((page as u64) << 21) | flags, Ordering::Relaxed);
        }
        LOW_PDPT.0[index].store(
            table_address(directory) | PRESENT | WRITABLE | USER,
            Ordering::Relaxed,
        );
    }
    PML4.0[0].store(
        table_address(&LOW_PDPT) | PRESENT | WRITABLE | USER,
        Ordering::Release,
    );
}

/// Returns the table an entry points at, allocating a spare page if it is empty.
fn next_level(entry: &AtomicU64) -> Option<&'static Table> {
    let value = entry.load(Ordering::Acquire);
    if value & PRESENT != 0 {
        if value & LARGE != 0 {
            return None;
        }
        let address = value & ADDRESS_MASK;
        return SPARE
            .iter()
            .chain(core::iter::once(&LOW_PDPT))
            .chain(LOW_PAGE_DIRECTORIES.iter())
            .find(|table| table_address(table) == address);
    }
    let index = SPARE_USED.fetch_add(1, Ordering::AcqRel);
    let table = SPARE.get(index)?;
    entry.store(
        table_address(table) | PRESENT | WRITABLE | USER,
        Ordering::Release,
    );
    Some(table)
}

/// Identity-maps the 2 MiB page around the (canonical, below 2^47) address `address`, so a
/// probe can touch guest-physical addresses above the runtime's 4 GiB. Returns false if no
/// spare table is left.
pub fn map_identity(address: u64) -> bool {
    let index = |shift: u32| ((address >> shift) & 0x1ff) as usize;
    let Some(pdpt) = next_level(&PML4.0[index(39)]) else {
        return false;
    };
    let Some(directory) = next_level(&pdpt.0[index(30)]) else {
        return false;
    };
    let page = address & !((1 << 21) - 1);
    directory.0[index(21)].store(
        page | PRESENT | WRITABLE | USER | LARGE | CACHE_DISABLE | WRITE_THROUGH,
        Ordering::Release,
    );
    // SAFETY: INVLPG only drops a translation of this core; the page is now mapped anew.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) address, options(nostack)) };
    true
}

/// Writes the GDT (once; the TSS descriptors of every slot) and the TSS of `slot`.
fn build_gdt(slot: usize) {
    let descriptors: [u64; 5] = [
        0,
        0x00af_9b00_0000_ffff, // 0x08: 64-bit code, DPL 0 (the runtime's)
        0x00cf_9300_0000_ffff, // 0x10: data, DPL 0 (the runtime's)
        0x00cf_f300_0000_ffff, // 0x18: data, DPL 3
        0x00af_fb00_0000_ffff, // 0x20: 64-bit code, DPL 3
    ];
    for (entry, value) in GDT.0.iter().zip(descriptors) {
        entry.store(value, Ordering::Relaxed);
    }
    let tss = &TSS[slot];
    // SAFETY: only the address of the slot's stack is taken; nothing else refers to it.
    let stack_top = unsafe { (&raw const KERNEL_STACKS[slot]) as u64 } + 16 * 1024;
    tss.0[1].store(stack_top as u32, Ordering::Relaxed);
    tss.0[2].store((stack_top >> 32) as u32, Ordering::Relaxed);
    tss.0[25].store(104 << 16, Ordering::Relaxed);
    // 64-bit TSS descriptor (SDM Vol. 3A 8.2.3, Figure 8-4): type 9 (available), present.
    let base = tss as *const Tss as u64;
    let limit = 103u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    GDT.0[5 + 2 * slot].store(low, Ordering::Relaxed);
    GDT.0[6 + 2 * slot].store(base >> 32, Ordering::Release);
}

/// Fills the IDT (idempotent): interrupt gates, DPL 0, to the stubs below.
fn build_idt() {
    #[cfg(target_os = "none")]
    {
        let stubs = (&raw const redteam_trap_stubs) as u64;
        for vector in 0..256u64 {
            let address = stubs + vector * 16;
            let low = (address & 0xffff)
                | (0x08 << 16)
                | (0x8e << 40)
                | (((address >> 16) & 0xffff) << 48);
            IDT.0[2 * vector as usize].store(low, Ordering::Relaxed);
            IDT.0[2 * vector as usize + 1].store(address >> 32, Ordering::Relaxed);
        }
    }
}

/// Loads the attacker's GDT, TSS, IDT, page tables and GS base on this core, whose x2APIC
/// ID is `apic_id`. Every core of an attacker runs this before its first probe.
#[cfg(target_os = "none")]
pub fn install(apic_id: u32) {
    let slot = slot_of(apic_id);
    build_tables();
    build_gdt(slot);
    build_idt();
    let block = &BLOCKS[slot];
    block
        .self_address
        .store(block as *const CoreBlock as u64, Ordering::Release);
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let gdt = Pointer {
        limit: (core::mem::size_of::<Gdt>() - 1) as u16,
        base: (&raw const GDT) as u64,
    };
    let idt = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: (&raw const IDT) as u64,
    };
    let selector = FIRST_TSS_SELECTOR + 16 * slot as u16;
    // SAFETY: the GDT keeps the runtime's 0x08/0x10 descriptors, so CS and the data
    // selectors stay valid; the TSS descriptor points at this slot's TSS; every IDT gate
    // points at a stub of this image; the new page tables map the same identity map as
    // the runtime's (plus the user bit); GS base points at this core's block. None of it
    // changes memory the program uses.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "ltr {selector:x}",
            "lidt [{idt}]",
            "mov cr3, {cr3}",
            gdt = in(reg) &raw const gdt,
            idt = in(reg) &raw const idt,
            selector = in(reg) selector,
            cr3 = in(reg) table_address(&PML4),
            options(nostack, preserves_flags),
        );
        processor::write_msr(MSR_GS_BASE, block as *const CoreBlock as u64);
    }
}

// ---------------------------------------------------------------------------------------
// The handlers.

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .pushsection .text.redteam_traps, "ax"
    .balign 16
    .global redteam_trap_stubs
redteam_trap_stubs:
    .set redteam_vector, 0
    .rept 256
    .balign 16
    .if (redteam_vector == 8) || ((redteam_vector >= 10) && (redteam_vector <= 14)) || (redteam_vector == 17) || (redteam_vector == 21) || (redteam_vector == 29) || (redteam_vector == 30)
    .else
    push 0
    .endif
    push redteam_vector
    jmp redteam_trap_common
    .set redteam_vector, redteam_vector + 1
    .endr

    /* Stack: [rsp] vector, [rsp+8] error code, then the processor's frame: RIP, CS,
       RFLAGS, RSP, SS. After the three pushes below everything is 24 bytes further. */
redteam_trap_common:
    push rax
    push rcx
    push rdx
    mov rax, [rsp + 24]
    cmp rax, 32
    jae 5f
    cmp rax, 2
    je 4f
    /* An exception: count it. */
    mov rcx, gs:[{self_offset}]
    lock inc qword ptr [rcx + {exceptions} + rax * 8]
    mov rcx, gs:[{recovery_rip}]
    test rcx, rcx
    jz 3f
    /* Armed: record, resume at the recovery point in ring 0 on the recovery stack. */
    mov gs:[{fault_vector}], rax
    mov rdx, [rsp + 32]
    mov gs:[{fault_error}], rdx
    mov rdx, [rsp + 40]
    mov gs:[{fault_rip}], rdx
    mov [rsp + 40], rcx
    mov qword ptr [rsp + 48], 0x08
    and qword ptr [rsp + 56], {clear_flags}
    mov rdx, gs:[{recovery_rsp}]
    mov [rsp + 64], rdx
    mov qword ptr [rsp + 72], 0x10
    mov qword ptr gs:[{recovery_rip}], 0
    jmp 6f
3:  /* Not armed: a storm returns where it came from, anything else is fatal. */
    cmp qword ptr gs:[{mode}], 1
    je 6f
    lea rdi, [rsp + 24]
    and rsp, -16
    call redteam_unexpected_exception
4:  /* NMI: count; in NmiSpin mode never return; in NmiHold mode record the depth (before
       the count, so a counted NMI is already in the depth) and wait for a release. */
    mov rcx, gs:[{self_offset}]
    cmp qword ptr gs:[{mode}], 3
    jne 8f
    lock inc qword ptr [rcx + {nmi_depth}]
    mov rax, [rcx + {nmi_depth}]
    cmp rax, [rcx + {nmi_max_depth}]
    jbe 8f
    mov [rcx + {nmi_max_depth}], rax
8:  lock inc qword ptr [rcx + {nmis}]
    cmp qword ptr gs:[{mode}], 3
    je 9f
    cmp qword ptr gs:[{mode}], 2
    jne 6f
7:  pause
    jmp 7b
9:  pause
    cmp qword ptr [rcx + {nmi_release}], 0
    je 9b
    mov qword ptr [rcx + {nmi_release}], 0
    lock dec qword ptr [rcx + {nmi_depth}]
    jmp 6f
5:  /* An interrupt: count it and acknowledge it (not the spurious vector). */
    mov rcx, gs:[{self_offset}]
    lock inc dword ptr [rcx + {vectors} + rax * 4]
    cmp rax, 0xff
    je 6f
    mov ecx, 0x80b
    xor eax, eax
    xor edx, edx
    wrmsr
6:  pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq
    .popsection
    "#,
    self_offset = const OFFSET_SELF,
    exceptions = const OFFSET_EXCEPTIONS,
    recovery_rip = const OFFSET_RECOVERY_RIP,
    recovery_rsp = const OFFSET_RECOVERY_RSP,
    fault_vector = const OFFSET_FAULT_VECTOR,
    fault_error = const OFFSET_FAULT_ERROR,
    fault_rip = const OFFSET_FAULT_RIP,
    mode = const OFFSET_MODE,
    nmis = const OFFSET_NMIS,
    nmi_depth = const OFFSET_NMI_DEPTH,
    nmi_max_depth = const OFFSET_NMI_MAX_DEPTH,
    nmi_release = const OFFSET_NMI_RELEASE,
    vectors = const OFFSET_VECTORS,
    clear_flags = const !(RFLAGS_TRAP | RFLAGS_ALIGNMENT_CHECK) as i32,
);

#[cfg(target_os = "none")]
extern "C" {
    static redteam_trap_stubs: u8;
    static redteam_user_return: u8;
}

/// The exception frame the common stub passes on: vector, error code, then the processor's.
#[repr(C)]
pub struct TrapFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    code_segment: u64,
    flags: u64,
    stack_pointer: u64,
    stack_segment: u64,
}

/// An exception nobody expected: print it and stop the partition (status 6, as the
/// runtime's own handler does).
#[cfg(target_os = "none")]
#[no_mangle]
extern "C" fn redteam_unexpected_exception(frame: &TrapFrame) -> ! {
    tessera_guest::console::write_emergency(format_args!(
        "exception: vector {} ({}) rip={:#x} cs={:#x} error-code={:#x} core={}\n",
        frame.vector,
        tessera_guest::interrupts::exception_name(frame.vector),
        frame.rip,
        frame.code_segment,
        frame.error_code,
        processor::current_core()
    ));
    hypercall::stop_self(tessera_guest::interrupts::EXCEPTION_EXIT_STATUS)
}

// ---------------------------------------------------------------------------------------
// Probes.

/// A routine a probe calls: System V arguments in RDI, RSI, RDX, RCX, result in RAX. It may
/// use RAX, RCX, RDX, RSI, RDI, R8–R11 and nothing else (the probe restores no other
/// register after a fault).
pub type Routine = unsafe extern "C" fn(u64, u64, u64, u64) -> u64;

/// Calls `routine` with `arguments` in kernel mode; `Err` if it raised an exception (the
/// routine then stops at the faulting instruction).
#[cfg(target_os = "none")]
pub fn probe(routine: Routine, arguments: [u64; 4]) -> Result<u64, Fault> {
    let block = current();
    block.fault_vector.store(NO_FAULT, Ordering::Release);
    let result: u64;
    // SAFETY: the recovery point is the label after the call, with the stack pointer as
    // it is at the call; the handler restores RAX, RCX, RDX and every other register is
    // one the routine does not touch or one declared clobbered here. The routine is one
    // of this crate's assembly routines, whose effects each caller states.
    unsafe {
        core::arch::asm!(
            "lea rax, [rip + 2f]",
            "mov gs:[{recovery_rip}], rax",
            "mov gs:[{recovery_rsp}], rsp",
            "call r10",
            "2:",
            "mov qword ptr gs:[{recovery_rip}], 0",
            recovery_rip = const OFFSET_RECOVERY_RIP,
            recovery_rsp = const OFFSET_RECOVERY_RSP,
            inlateout("r10") routine => _,
            inlateout("rdi") arguments[0] => _,
            inlateout("rsi") arguments[1] => _,
            inlateout("rdx") arguments[2] => _,
            inlateout("rcx") arguments[3] => _,
            lateout("rax") result,
            clobber_abi("C"),
        );
    }
    match take_fault(block) {
        None => Ok(result),
        Some(fault) => Err(fault),
    }
}

/// How a ring-3 probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserOutcome {
    /// The routine reached [`user_return_address`]; RAX then.
    Returned(u64),
    Faulted(Fault),
}

/// Where every ring-3 routine ends: a `ud2` that brings the core back to ring 0.
#[cfg(target_os = "none")]
pub fn user_return_address() -> u64 {
    (&raw const redteam_user_return) as u64
}

/// Enters `routine` in ring 3 (CPL 3, IOPL 0, on this core's user stack, RFLAGS as now
/// plus `extra_flags`) with `arguments`, and comes back when it faults or returns.
#[cfg(target_os = "none")]
pub fn probe_user(routine: Routine, arguments: [u64; 4], extra_flags: u64) -> UserOutcome {
    let block = current();
    let slot = (block as *const CoreBlock as usize - (&raw const BLOCKS) as usize)
        / core::mem::size_of::<CoreBlock>();
    // SAFETY: only the address of the slot's user stack is taken.
    let user_stack = unsafe { (&raw const USER_STACKS[slot]) as u64 } + 8 * 1024 - 64;
    block.fault_vector.store(NO_FAULT, Ordering::Release);
    let result: u64;
    // SAFETY: IRETQ to a 64-bit ring-3 code segment of this GDT at one of this image's
    // routines (mapped user-accessible by `install`), on a stack only ring-3 probes use.
    // Every way back is an exception the armed handler turns into a return to the label
    // in ring 0 with this stack pointer; RAX, RCX, RDX are restored to the ring-3 values,
    // all other caller-saved registers are declared clobbered.
    unsafe {
        core::arch::asm!(
            "lea rax, [rip + 2f]",
            "mov gs:[{recovery_rip}], rax",
            "mov gs:[{recovery_rsp}], rsp",
            "push {user_data}",
            "push r11",
            "pushfq",
            "or qword ptr [rsp], r9",
            "push {user_code}",
            "push r10",
            "iretq",
            "2:",
            "mov qword ptr gs:[{recovery_rip}], 0",
            recovery_rip = const OFFSET_RECOVERY_RIP,
            recovery_rsp = const OFFSET_RECOVERY_RSP,
            user_data = const USER_DATA_SELECTOR,
            user_code = const USER_CODE_SELECTOR,
            inlateout("r10") routine => _,
            inlateout("r11") user_stack => _,
            inlateout("r9") extra_flags => _,
            inlateout("rdi") arguments[0] => _,
            inlateout("rsi") arguments[1] => _,
            inlateout("rdx") arguments[2] => _,
            inlateout("rcx") arguments[3] => _,
            lateout("rax") result,
            clobber_abi("C"),
        );
    }
    match take_fault(block) {
        Some(fault) if fault.vector == 6 && fault.rip == user_return_address() => {
            UserOutcome::Returned(result)
        }
        Some(fault) => UserOutcome::Faulted(fault),
        // Cannot happen: ring 3 comes back only through an exception.
        None => UserOutcome::Returned(result),
    }
}

/// Enters `routine` in ring 3 for good (a storm: it never comes back), with `extra_flags`.
#[cfg(target_os = "none")]
pub fn enter_user_forever(routine: Routine, extra_flags: u64) -> ! {
    let block = current();
    let slot = (block as *const CoreBlock as usize - (&raw const BLOCKS) as usize)
        / core::mem::size_of::<CoreBlock>();
    // SAFETY: as in `probe_user`, without a way back: the caller put the core in storm
    // mode, and the hypervisor ends the run.
    unsafe {
        let user_stack = (&raw const USER_STACKS[slot]) as u64 + 8 * 1024 - 64;
        core::arch::asm!(
            "push {user_data}",
            "push r11",
            "pushfq",
            "or qword ptr [rsp], r9",
            "push {user_code}",
            "push r10",
            "iretq",
            user_data = const USER_DATA_SELECTOR,
            user_code = const USER_CODE_SELECTOR,
            in("r10") routine,
            in("r11") user_stack,
            in("r9") extra_flags,
            options(noreturn),
        );
    }
}
