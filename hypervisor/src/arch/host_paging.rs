//! The hypervisor's own page tables: built once at boot by the bootstrap core from the plan
//! in `tessera_policy::host_page_tables` (W^X by image section, partition memory and the AP
//! start-up page read-write and not executable, the rest of the first 4 GiB read-only, the
//! fourth GiB and the ECAM window uncached, a guard page under every core's stack), checked against that plan,
//! then loaded on every core with CR0.WP, and CR4.SMEP and CR4.SMAP where the processor has
//! them (and with SSE enabled, for the SHA-256 of boot blobs).
//!
//! The tables live in a static sized at compile time from the partition table
//! ([`TABLE_PAGES`]); the image's sections come from the linker script's page-aligned
//! symbols. The hypervisor identity-maps everything, so a static's address is also the
//! physical address the processor walks.
//!
//! The application processors start on the loader's boot tables (the trampoline loads them
//! itself, and executes its page only under them) and switch to these in [`enter`], before
//! they touch anything else.
//!
//! Sources: Intel SDM vol. 3 §4.5 (4-level paging), §4.6 (access rights, CR0.WP, SMEP and
//! SMAP in §4.6.1), §4.10.4.1 (MOV to CR3 invalidates non-global TLB entries), §2.5 (CR0,
//! CR4); AMD APM vol. 2 §5.3, §5.6 (page protection, NX, SMEP, SMAP).

use super::{cpuid, msr};
use crate::table::{MACHINE, PARTITION_COUNT};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use static_cell::ConstStaticCell;
use tessera_abi::table::{MemoryMapping, Range};
use tessera_policy::control_registers::{Cr0, Efer};
use tessera_policy::host_page_tables::{
    self as plan, BuildError, HostLayout, Mismatch, Table, FIXED_TABLES, PAGE_BYTES,
};

extern "C" {
    // The linker script's page-aligned section boundaries (loader/linker.ld.in) and the
    // loader's boot tables and boot stack guard (loader/src/lib.rs). Only their addresses
    // are used.
    static __tessera_image_start: u8;
    static __tessera_text_end: u8;
    static __tessera_rodata_end: u8;
    static __tessera_image_end: u8;
    static __tessera_boot_pml4: u8;
    static __tessera_boot_stack_guard: u8;
}

/// Memory mappings of every partition: each can split two 2 MiB pieces.
const MAPPINGS: usize = {
    let mut total = 0;
    let mut index = 0;
    while index < PARTITION_COUNT {
        total += MACHINE.partitions[index].memory.len();
        index += 1;
    }
    total
};

/// Table pages for the host tables: the fixed ones and the bound on page tables for an
/// image inside the table's hypervisor memory (the linker script asserts it lies there).
const TABLE_PAGES: usize =
    FIXED_TABLES + plan::page_tables_bound(MACHINE.hypervisor_memory, MAPPINGS);

#[repr(C, align(4096))]
struct TablePages([Table; TABLE_PAGES]);

/// The host tables: written once by the bootstrap core in [`enable`], then only read by the
/// processors' page walkers.
static TABLES: ConstStaticCell<TablePages> =
    ConstStaticCell::new(TablePages([[0; plan::ENTRIES]; TABLE_PAGES]));

/// The PML4's physical address, once the tables are built and checked; 0 before.
static ROOT: AtomicU64 = AtomicU64::new(0);

/// Why the host tables could not be put in place.
#[derive(Debug)]
pub enum Error {
    /// The plan cannot be built for this image and table.
    Build(BuildError),
    /// The built tables do not say what the plan says (a bug in the builder).
    Verify(Mismatch),
    /// EFER.NXE is clear: execute-disable bits would be reserved bits (SDM vol. 3 §4.6.1).
    NoExecuteOff,
    /// More stack guard pages than there are cores.
    TooManyGuardPages,
}

impl core::fmt::Display for Error {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Error::Build(error) => error.fmt(formatter),
            Error::Verify(mismatch) => write!(formatter, "built tables differ: {mismatch}"),
            Error::NoExecuteOff => formatter.write_str("EFER.NXE is clear"),
            Error::TooManyGuardPages => formatter.write_str("more stack guard pages than cores"),
        }
    }
}

/// Range `[start, end)` between two linker symbols' addresses.
fn between(start: *const u8, end: *const u8) -> Range {
    Range::new(start as u64, end as u64 - start as u64)
}

/// Builds the host tables on the bootstrap core, checks them against the plan and loads
/// them on this core ([`enter`]). `ap_stack_guards` is the page under each application
/// processor's stack ([`GuardedStacks::guard_pages`]); the bootstrap core's is the
/// loader's. Call once, before any other core starts and before partitions are loaded.
pub fn enable(ap_stack_guards: impl Iterator<Item = u64>) -> Result<(), Error> {
    if !no_execute_enabled() {
        return Err(Error::NoExecuteOff);
    }
    // Only the symbols' addresses are taken.
    let (image_start, text_end, rodata_end, image_end) = (
        &raw const __tessera_image_start,
        &raw const __tessera_text_end,
        &raw const __tessera_rodata_end,
        &raw const __tessera_image_end,
    );
    let (boot_pml4, boot_stack_guard) = (
        &raw const __tessera_boot_pml4,
        &raw const __tessera_boot_stack_guard,
    );
    let mut guards = [0u64; crate::table::CPU_COUNT + 1];
    guards[0] = boot_stack_guard as u64;
    let mut count = 1;
    for guard in ap_stack_guards {
        *guards.get_mut(count).ok_or(Error::TooManyGuardPages)? = guard;
        count += 1;
    }
    let memory: [&[MemoryMapping]; PARTITION_COUNT] =
        core::array::from_fn(|index| MACHINE.partitions[index].memory);
    let layout = HostLayout {
        text: between(image_start, text_end),
        rodata: between(text_end, rodata_end),
        data: between(rodata_end, image_end),
        boot_page_tables: between(boot_pml4, boot_stack_guard),
        guard_pages: &guards[..count],
        partitions: &memory,
        ap_trampoline: Range::new(tessera_loader::AP_TRAMPOLINE_ADDRESS, PAGE_BYTES),
        ecam: crate::arch::pci::MAPPED_ECAM,
    };
    let pages = &mut TABLES.take().0;
    let phys_base = pages.as_ptr() as u64;
    let built = plan::build(&layout, pages, phys_base).map_err(Error::Build)?;
    plan::verify(&layout, pages, phys_base, built.root).map_err(Error::Verify)?;
    ROOT.store(built.root, Ordering::Release);
    let protection = enter();
    log::info!(
        "host paging: W^X tables at {:#x}: {} table pages of {} reserved, {} 2 MiB and {} 4 KiB pages; text {:#x}..{:#x} rx, rodata ..{:#x} r, data ..{:#x} rw, {} stack guard pages; SMEP {}, SMAP {}",
        built.root,
        built.tables,
        TABLE_PAGES,
        built.large_pages,
        built.small_pages,
        layout.text.base,
        layout.text.end(),
        layout.rodata.end(),
        layout.data.end(),
        count,
        on_off(protection & plan::CR4_SMEP != 0),
        on_off(protection & plan::CR4_SMAP != 0),
    );
    Ok(())
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off (not reported by CPUID)"
    }
}

/// Whether EFER.NXE is set on this core (the loader sets it on every core).
fn no_execute_enabled() -> bool {
    // SAFETY: EFER exists on every 64-bit processor; reading it has no side effects.
    let efer = unsafe { msr::read(msr::IA32_EFER) };
    Efer::from_bits_retain(efer).contains(Efer::NXE)
}

/// Moves this core onto the host tables built by [`enable`]: loads CR3, sets CR0.WP (so
/// that read-only pages bind the hypervisor too, SDM vol. 3 §4.6.1) and sets CR4.SMEP and
/// CR4.SMAP where CPUID reports them. Returns the CR4 protection bits set. Every core calls
/// it before it runs anything else (the bootstrap core from [`enable`], again harmlessly in
/// `core_main`; each application processor first thing in `core_main`).
///
/// Panics if [`enable`] has not run or EFER.NXE is clear on this core: these tables would
/// then be malformed for it.
pub fn enter() -> u64 {
    let root = ROOT.load(Ordering::Acquire);
    assert!(
        root != 0,
        "host page tables entered before the bootstrap core built them"
    );
    assert!(
        no_execute_enabled(),
        "EFER.NXE is clear on this core: the host page tables cannot be loaded"
    );
    let protection = plan::supervisor_protection(cpuid::query(0, 0)[0], cpuid::query(7, 0)[1]);
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: reading control registers has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {cr0}, cr0",
            "mov {cr3}, cr3",
            "mov {cr4}, cr4",
            cr0 = out(reg) cr0,
            cr3 = out(reg) cr3,
            cr4 = out(reg) cr4,
            options(nomem, nostack, preserves_flags)
        )
    };
    if (cr3 & !0xFFF) != root {
        // SAFETY: `root` is the PML4 of tables `enable` built and `verify` checked against
        // the plan: they identity-map, as the loader's tables do, everything this core uses
        // from here on with at least the rights it needs — the text it runs (read +
        // execute), its stack and all statics (read + write, the stack's guard page aside),
        // partition memory, the AP page and the MMIO window (read + write), firmware memory
        // (read) — and EFER.NXE is set (checked above), so their XD bits are valid. The
        // tables are never written again. MOV to CR3 flushes the old non-global
        // translations (SDM vol. 3 §4.10.4.1); the loader set no global ones.
        unsafe { core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
    }
    let wanted_cr0 = (cr0 | Cr0::WP.bits() | Cr0::MP.bits()) & !(Cr0::EM | Cr0::TS).bits();
    let wanted_cr4 = cr4 | protection | CR4_OSFXSR;
    // SAFETY: CR0.WP only makes the hypervisor's own writes honour read-only pages, which the
    // tables just loaded grant wherever it writes. CR4.SMEP and CR4.SMAP are set only where
    // CPUID reports them (else the MOV would #GP); they forbid supervisor fetches from and
    // accesses to user pages, and no entry of the host tables has the user bit (the plan
    // never sets it, `verify` checked), so nothing the hypervisor does changes. CR4.OSFXSR
    // with CR0.EM and CR0.TS clear (and MP set, as every OS has it) lets SSE instructions
    // run (Intel SDM vol. 1 §13.1.3), which only the SHA-256 of boot blobs uses
    // (arch::sha256, which zeroes every XMM register it used); the compiler emits none for
    // this soft-float target, and the guests' CR0 and CR4 are their own (VMCS guest-state
    // fields, VMCB save area). Paging, protection and every other bit stay as they are.
    unsafe {
        core::arch::asm!(
            "mov cr0, {cr0}",
            "mov cr4, {cr4}",
            cr0 = in(reg) wanted_cr0,
            cr4 = in(reg) wanted_cr4,
            options(nostack, preserves_flags)
        )
    };
    protection
}

/// CR4.OSFXSR, bit 9: the OS supports FXSAVE/FXRSTOR, which enables SSE (SDM vol. 3 §2.5).
const CR4_OSFXSR: u64 = 1 << 9;

/// Whether SSE instructions can run on this core: CR4.OSFXSR set and CR0.EM, CR0.TS clear,
/// as [`enter`] leaves every core.
pub fn sse_enabled() -> bool {
    let (cr0, cr4): (u64, u64);
    // SAFETY: reading control registers has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {cr0}, cr0",
            "mov {cr4}, cr4",
            cr0 = out(reg) cr0,
            cr4 = out(reg) cr4,
            options(nomem, nostack, preserves_flags)
        )
    };
    cr4 & CR4_OSFXSR != 0 && cr0 & (Cr0::EM | Cr0::TS).bits() == 0
}

/// The 4 KiB page under each stack: never touched, and left unmapped by the host tables.
const GUARD_BYTES: usize = PAGE_BYTES as usize;

/// One core's stack of `SIZE` bytes with the guard page right below it.
#[repr(C, align(4096))]
struct GuardedStack<const SIZE: usize> {
    guard: UnsafeCell<[u8; GUARD_BYTES]>,
    stack: UnsafeCell<[u8; SIZE]>,
}

/// `COUNT` stacks of `SIZE` bytes (a multiple of 4 KiB), each above its own guard page, end
/// to end: an overflow of one runs into its guard page, never into its neighbour. The
/// runtime keeps them (one per core) and hands each out once, as the address of its top.
pub struct GuardedStacks<const COUNT: usize, const SIZE: usize> {
    stacks: [GuardedStack<SIZE>; COUNT],
    taken: [AtomicBool; COUNT],
}

// SAFETY: Rust code never reads or writes the stacks' bytes: `take` hands out each stack's
// top address once (the `taken` flags, atomics, make a second hand-out of the same stack
// impossible), to one core that uses it as its stack; the guard pages are never used.
unsafe impl<const COUNT: usize, const SIZE: usize> Sync for GuardedStacks<COUNT, SIZE> {}

impl<const COUNT: usize, const SIZE: usize> Default for GuardedStacks<COUNT, SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const COUNT: usize, const SIZE: usize> GuardedStacks<COUNT, SIZE> {
    pub const fn new() -> Self {
        const { assert!(SIZE > 0 && SIZE.is_multiple_of(GUARD_BYTES)) };
        Self {
            stacks: [const {
                GuardedStack {
                    guard: UnsafeCell::new([0; GUARD_BYTES]),
                    stack: UnsafeCell::new([0; SIZE]),
                }
            }; COUNT],
            taken: [const { AtomicBool::new(false) }; COUNT],
        }
    }

    /// The top of stack `index` (16-byte aligned; stacks grow down), handed out once.
    ///
    /// Panics if it was handed out before: two cores on one stack would corrupt each other.
    pub fn take(&self, index: usize) -> u64 {
        assert!(
            !self.taken[index].swap(true, Ordering::AcqRel),
            "stack {index} handed out twice"
        );
        self.stacks[index].stack.get() as u64 + SIZE as u64
    }

    /// The address of the guard page under each stack, for [`enable`].
    pub fn guard_pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.stacks.iter().map(|stack| stack.guard.get() as u64)
    }
}
