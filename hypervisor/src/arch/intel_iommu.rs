//! Intel VT-d DMA-remapping units (Intel Virtualization Technology for Directed I/O,
//! Architecture Specification rev. 3.x): bring-up from the firmware's DMAR, the root and
//! context tables, and the fault-recording registers. Formats and register layouts come
//! from `tessera_policy::iommu::vt_d` (host-tested); this leaf places the tables and
//! touches the registers.
//!
//! Every requester starts blocked: a root entry that is not present (or, on a bus that
//! holds a partition's function, a context entry that is not present) makes the unit
//! refuse and record the request (§7.1.3). DMA remapping does not cover interrupt requests;
//! interrupt remapping does (§5): where ECAP reports IR and QI, the hypervisor owns one
//! interrupt remapping table (extended interrupt mode where ECAP.EIM says so), turns it on
//! with SIRTP/IRE and leaves CFI clear, so every compatibility-format message is blocked.
//! Handles 0–255 are the I/O APIC's pins (source-validated against the I/O APIC's ID from
//! the DMAR scope); each passed-through function owns a block of 256 handles from
//! 256 × (its position among all functions + 1), each entry source-validated against the
//! function's requester ID. Entries start not present; `route` fills them from checked
//! messages and invalidates the interrupt entry cache through the invalidation queue.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use static_cell::ConstStaticCell;
use tessera_policy::iommu::vt_d::{
    self, context_entry, fault_registers, global, iotlb_register, pass_through_context_entry,
    register, root_entry, Fault, VtdSecondLevel,
};
use tessera_policy::stage2;

use super::iommu::{self, FunctionView, MoveRefusal, Window};
use crate::table::MACHINE;
use tessera_abi::table::{PciFunction, PciInterrupt};
use tessera_policy::pci::msi::{CheckedMessage, MsiRefusal};

#[repr(C, align(4096))]
struct EntryTable([[u64; 2]; 256]);

/// Context tables for the buses that hold partitions' functions: at most one per function.
const CONTEXT_TABLES: usize = {
    let mut count = 0;
    let mut index = 0;
    while index < MACHINE.partitions.len() {
        count += MACHINE.partitions[index].pci_functions.len();
        index += 1;
    }
    count
};

static ROOT_TABLE: ConstStaticCell<EntryTable> = ConstStaticCell::new(EntryTable([[0; 2]; 256]));
static CONTEXT: ConstStaticCell<[EntryTable; CONTEXT_TABLES]> =
    ConstStaticCell::new([const { EntryTable([[0; 2]; 256]) }; CONTEXT_TABLES]);

/// Handles per block: the I/O APIC's pins, or one function's vectors.
const HANDLES_PER_BLOCK: usize = 256;
/// log2 of the interrupt remapping table's entries: a block for the I/O APIC and one per
/// function, rounded up to a power of two (at least 2 entries, §10.4.29).
const INTERRUPT_TABLE_LOG2: u8 = {
    let blocks = CONTEXT_TABLES + 1;
    let entries = blocks * HANDLES_PER_BLOCK;
    let mut log2 = 1;
    while (1usize << log2) < entries {
        log2 += 1;
    }
    log2
};
const INTERRUPT_ENTRIES: usize = 1 << INTERRUPT_TABLE_LOG2;

#[repr(C, align(4096))]
struct InterruptTable([[u64; 2]; INTERRUPT_ENTRIES]);
static INTERRUPT_TABLE: ConstStaticCell<InterruptTable> =
    ConstStaticCell::new(InterruptTable([[0; 2]; INTERRUPT_ENTRIES]));
/// The invalidation queue: one page of 256 128-bit descriptors (QS = 0).
static QUEUE: ConstStaticCell<EntryTable> = ConstStaticCell::new(EntryTable([[0; 2]; 256]));
/// Where invalidation wait descriptors store their sequence number.
static QUEUE_STATUS: AtomicU32 = AtomicU32::new(0);

/// Interrupt remapping once it is on: the table, the queue and its tail, the last wait
/// sequence number, the mode, and the I/O APIC's source ID.
struct Remapping {
    window: Window,
    table: *mut InterruptTable,
    queue: *mut EntryTable,
    tail: usize,
    sequence: u32,
    extended_mode: bool,
    ioapic_source: Option<u16>,
}

// SAFETY: the table and queue are statics taken once by `enable`; after it only the
// holder of the `REMAPPING` lock touches them.
unsafe impl Send for Remapping {}

static REMAPPING: spin::Mutex<Option<Remapping>> = spin::Mutex::new(None);
/// Interrupt entry cache invalidations (each with its wait) since boot.
pub static INTERRUPT_INVALIDATIONS: AtomicU64 = AtomicU64::new(0);
static INTERRUPT_FAULTS: AtomicU64 = AtomicU64::new(0);

impl Remapping {
    /// Queues `descriptor` (§6.5.2: the tail register holds the next slot × 16).
    fn submit(&mut self, descriptor: [u64; 2]) -> Result<(), Refusal> {
        let next = (self.tail + 1) % 256;
        let window = self.window;
        wait("a free invalidation queue slot", || {
            (window.read64(register::QUEUE_HEAD) as usize >> 4) & 0xff != next
        })?;
        // SAFETY: `queue` is the page taken in `enable`, reached only under the lock; the
        // slot is free (the head is not on it). Volatile, so it precedes the tail write.
        unsafe { core::ptr::write_volatile(&raw mut (*self.queue).0[self.tail], descriptor) };
        self.tail = next;
        window.write64(register::QUEUE_TAIL, (next << 4) as u64);
        Ok(())
    }

    /// An invalidation wait with status write: every descriptor before it has completed
    /// when the store lands (§6.5.2.8). Bounded.
    fn wait_for_queue(&mut self) -> Result<(), Refusal> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        self.submit(vt_d::descriptor::wait(
            &raw const QUEUE_STATUS as u64,
            sequence,
        ))?;
        wait("an invalidation wait", || {
            QUEUE_STATUS.load(Ordering::Acquire) == sequence
        })
    }

    /// Clears every present handle of the block of the function view `ordinal` (the
    /// caller invalidates the interrupt entry cache afterwards).
    fn clear_block(&mut self, ordinal: usize) {
        let first = HANDLES_PER_BLOCK * (ordinal + 1);
        for index in first..(first + HANDLES_PER_BLOCK).min(INTERRUPT_ENTRIES) {
            // SAFETY: `table` is the static taken in `enable`, written only under the
            // lock; `index` < INTERRUPT_ENTRIES (bounded above). The low half (P) first.
            unsafe {
                if core::ptr::read_volatile(&(*self.table).0[index][0]) & 1 != 0 {
                    core::ptr::write_volatile(&raw mut (*self.table).0[index][0], 0);
                    core::ptr::write_volatile(&raw mut (*self.table).0[index][1], 0);
                }
            }
        }
    }

    /// Writes entry `index` (the high half first: the low half holds P) and invalidates
    /// the unit's cached copy of it.
    fn set_entry(&mut self, index: usize, entry: [u64; 2]) -> Result<(), Refusal> {
        // SAFETY: `table` is the static taken in `enable`, written only under the lock;
        // callers pass `index` < INTERRUPT_ENTRIES.
        unsafe {
            core::ptr::write_volatile(&raw mut (*self.table).0[index][1], entry[1]);
            core::ptr::write_volatile(&raw mut (*self.table).0[index][0], entry[0]);
        }
        self.submit(vt_d::descriptor::interrupt_entries(index as u16, 0))?;
        self.wait_for_queue()?;
        INTERRUPT_INVALIDATIONS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The enabled unit's register base (0: none).
static BASE: AtomicU64 = AtomicU64::new(0);
/// The root table's address once translation is on (0: none): a takeover finds a moving
/// function's context entry through it.
static ROOT: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);

/// Why bring-up stopped.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    Dmar(vt_d::DmarError),
    NoUnit,
    SeveralUnits {
        first: u64,
        second: u64,
    },
    OutsideMmioWindow {
        base: u64,
    },
    /// A command the unit must acknowledge was not (which one).
    Timeout(&'static str),
    Domain {
        partition: usize,
        error: stage2::BuildError,
    },
    /// A function left unconfined, on a unit without pass-through (ECAP.PT).
    NoPassThrough,
    /// A confined function with MSI or MSI-X, on a unit without interrupt remapping or
    /// queued invalidation (ECAP.IR, ECAP.QI): its messages would reach the cores
    /// unchecked by the unit, so the machine does not start (ACRN's rule).
    CannotRemapInterrupts {
        partition: &'static str,
        function: &'static PciFunction,
        base: u64,
        extended: u64,
    },
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Refusal::Dmar(error) => write!(formatter, "the DMAR table: {error:?}"),
            Refusal::NoUnit => formatter.write_str("the DMAR lists no DMA-remapping unit"),
            Refusal::SeveralUnits { first, second } => write!(
                formatter,
                "several units ({first:#x}, {second:#x}); this version drives one"
            ),
            Refusal::OutsideMmioWindow { base } => write!(
                formatter,
                "registers at {base:#x} lie outside the uncached MMIO window"
            ),
            Refusal::Timeout(what) => write!(formatter, "the unit did not complete {what}"),
            Refusal::Domain { partition, error } => write!(
                formatter,
                "the DMA domain of partition {}: {error:?}",
                MACHINE.partitions[*partition].name
            ),
            Refusal::NoPassThrough => {
                formatter.write_str("an unconfined function, but the unit has no pass-through")
            }
            Refusal::CannotRemapInterrupts {
                partition,
                function,
                base,
                extended,
            } => write!(
                formatter,
                "PCI function {:02x}:{:02x}.{} (device `{}` of partition `{}`): it uses {}, but the VT-d unit at {:#x} cannot remap interrupts (ECAP {:#x}: no IR or no QI)",
                function.physical.bus(),
                function.physical.device(),
                function.physical.function(),
                function.name,
                partition,
                if matches!(function.interrupt, PciInterrupt::Msix { .. }) { "MSI-X" } else { "MSI" },
                base,
                extended
            ),
        }
    }
}

/// Spins until `done`, a bounded number of times.
fn wait(what: &'static str, mut done: impl FnMut() -> bool) -> Result<(), Refusal> {
    for _ in 0..10_000_000 {
        if done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(Refusal::Timeout(what))
}

/// Issues a global command (§10.4.4): the current persistent states with `command` added,
/// then waits for the status bit of the same position.
fn global_command(window: Window, command: u32, what: &'static str) -> Result<(), Refusal> {
    // CFI is never kept: compatibility-format interrupts stay blocked under remapping.
    let states = window.read32(register::GLOBAL_STATUS)
        & !global::ONE_SHOT
        & !global::COMPATIBILITY_FORMAT_INTERRUPTS;
    window.write32(register::GLOBAL_COMMAND, states | command);
    wait(what, || {
        window.read32(register::GLOBAL_STATUS) & command != 0
    })
}

/// Finds the DMA-remapping unit in `dmar` and enables translation with every requester
/// blocked but the partitions' functions (their domains) and the unconfined ones. Called
/// once by the bootstrap core before any other core runs. Returns the unit's base.
pub fn enable(dmar: &[u8], ioapic_id: Option<u8>) -> Result<u64, Refusal> {
    let mut unit = None;
    for found in vt_d::units(dmar) {
        let found = found.map_err(Refusal::Dmar)?;
        match unit {
            None => unit = Some(found),
            Some(first) => {
                return Err(Refusal::SeveralUnits {
                    first: first.base,
                    second: found.base,
                })
            }
        }
    }
    let base = unit.ok_or(Refusal::NoUnit)?.base;
    let window =
        Window::new(base, register::WINDOW_BYTES).ok_or(Refusal::OutsideMmioWindow { base })?;
    let extended = window.read64(register::EXTENDED_CAPABILITY);
    let wanted = vt_d::extended::QUEUED_INVALIDATION | vt_d::extended::INTERRUPT_REMAPPING;
    let remaps = extended & wanted == wanted;
    // ACRN's rule (docs/pci-iommu.md, "The IOMMU"): checked before the unit is touched.
    if !remaps {
        for partition in MACHINE.partitions {
            if let Some(function) = partition.pci_functions.iter().find(|function| {
                function.dma_confined
                    && matches!(
                        function.interrupt,
                        PciInterrupt::Msi { .. } | PciInterrupt::Msix { .. }
                    )
            }) {
                return Err(Refusal::CannotRemapInterrupts {
                    partition: partition.name,
                    function,
                    base,
                    extended,
                });
            }
        }
    }

    let root = ROOT_TABLE.take();
    let contexts = CONTEXT.take();
    let mut pool = iommu::take_dma_pool();
    // Which context table serves each bus; tables are handed out in order of first use.
    let mut context_of_bus = [None::<usize>; 256];
    let mut used_contexts = 0;
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        let mut domain_root = None;
        // A table standby's functions are its primary's: their context entries name the
        // primary's domain until a takeover (`move_function`); its domain is built below.
        let holds_at_boot = crate::table::holds_pci_functions_at_boot(partition);
        for function in partition.pci_functions {
            let bus = usize::from(function.physical.bus());
            let context = *context_of_bus[bus].get_or_insert_with(|| {
                let next = used_contexts;
                used_contexts += 1;
                root.0[bus] = root_entry(&contexts[next] as *const EntryTable as u64);
                next
            });
            let devfn = usize::from(function.physical.0 & 0xff);
            let domain = iommu::domain_id(index);
            let entry = if function.dma_confined {
                let tables = match domain_root {
                    Some(tables) => tables,
                    None => {
                        let built =
                            stage2::build::<VtdSecondLevel>(partition.memory, false, &mut pool)
                                .map_err(|error| Refusal::Domain {
                                    partition: index,
                                    error,
                                })?;
                        domain_root = Some(built);
                        iommu::DOMAIN_ROOTS[index].store(built, Ordering::Relaxed);
                        built
                    }
                };
                if holds_at_boot {
                    iommu::log_confined(function, partition.name);
                }
                context_entry(tables, domain)
            } else if extended & vt_d::extended::PASS_THROUGH != 0 {
                pass_through_context_entry(domain)
            } else {
                return Err(Refusal::NoPassThrough);
            };
            if holds_at_boot {
                contexts[context].0[devfn] = entry;
            }
        }
    }

    // §10.4.6, §6.5: the root table pointer, then the caches, then translation on.
    window.write64(
        register::ROOT_TABLE_ADDRESS,
        root as *const EntryTable as u64,
    );
    global_command(
        window,
        global::SET_ROOT_TABLE_POINTER,
        "the root table pointer",
    )?;
    count_translation_invalidation();
    window.write64(register::CONTEXT_COMMAND, vt_d::CONTEXT_INVALIDATE_GLOBAL);
    wait("the context-cache invalidation", || {
        window.read64(register::CONTEXT_COMMAND) & (1 << 63) == 0
    })?;
    let iotlb = iotlb_register(extended);
    count_translation_invalidation();
    window.write64(iotlb, vt_d::IOTLB_INVALIDATE_GLOBAL);
    wait("the IOTLB invalidation", || {
        window.read64(iotlb) & (1 << 63) == 0
    })?;
    global_command(window, global::TRANSLATION_ENABLE, "translation enable")?;
    ROOT.store(root as *const EntryTable as u64, Ordering::Release);
    BASE.store(base, Ordering::Release);
    if remaps {
        let ioapic_source = ioapic_id.and_then(|id| vt_d::ioapic_source(dmar, id));
        enable_interrupt_remapping(window, extended, ioapic_source)?;
    } else {
        log::info!(
            "iommu: VT-d unit without interrupt remapping or queued invalidation (ECAP {extended:#x}): device interrupts are not remapped"
        );
    }
    Ok(base)
}

/// Turns interrupt remapping on (§5.1, §6.5.2, §10.4.4): the invalidation queue (after
/// the register-based invalidations above, never mixed with them), the table address
/// with EIME where ECAP.EIM says so, SIRTP, a global interrupt entry cache invalidation,
/// then IRE with CFI clear. The I/O APIC's entries follow (`arch::ioapic`).
fn enable_interrupt_remapping(
    window: Window,
    extended: u64,
    ioapic_source: Option<u16>,
) -> Result<(), Refusal> {
    let table = INTERRUPT_TABLE.take();
    let queue = QUEUE.take();
    window.write64(register::QUEUE_TAIL, 0);
    window.write64(
        register::QUEUE_ADDRESS,
        vt_d::queue_address(queue as *const EntryTable as u64),
    );
    global_command(window, global::QUEUED_INVALIDATION_ENABLE, "queue enable")?;
    let extended_mode = extended & vt_d::extended::EXTENDED_INTERRUPT_MODE != 0;
    window.write64(
        register::INTERRUPT_TABLE_ADDRESS,
        vt_d::interrupt_table_address(
            table as *const InterruptTable as u64,
            INTERRUPT_TABLE_LOG2,
            extended_mode,
        ),
    );
    global_command(
        window,
        global::SET_INTERRUPT_TABLE_POINTER,
        "the interrupt table pointer",
    )?;
    let mut remapping = Remapping {
        window,
        table,
        queue,
        tail: 0,
        sequence: 0,
        extended_mode,
        ioapic_source,
    };
    remapping.submit(vt_d::descriptor::interrupt_entries_global())?;
    remapping.wait_for_queue()?;
    global_command(
        window,
        global::INTERRUPT_REMAPPING_ENABLE,
        "interrupt remapping enable",
    )?;
    *REMAPPING.lock() = Some(remapping);
    log::info!(
        "iommu: VT-d interrupt remapping on ({} entries, {} mode, compatibility format blocked, I/O APIC source {})",
        INTERRUPT_ENTRIES,
        if extended_mode { "x2APIC" } else { "xAPIC" },
        ioapic_source.map_or(-1, i32::from)
    );
    Ok(())
}

/// Fills the handles of the function at `physical` from `first_entry` for `vectors`
/// consecutive vectors of `message`, source-validated against its requester ID, and
/// returns the remappable-format message (address with SHV, data 0). `Ok(None)` when
/// interrupt remapping is off.
pub fn route(
    function: FunctionView,
    message: CheckedMessage,
    first_entry: u16,
    vectors: u16,
) -> Result<Option<(u64, u32)>, MsiRefusal> {
    let mut guard = REMAPPING.lock();
    let Some(remapping) = guard.as_mut() else {
        return Ok(None);
    };
    let (physical, ordinal) = (function.physical, function.ordinal);
    if usize::from(first_entry) + usize::from(vectors) > HANDLES_PER_BLOCK {
        return Err(MsiRefusal::NoRemappingEntry);
    }
    let first = HANDLES_PER_BLOCK * (ordinal + 1) + usize::from(first_entry);
    // Every function view's block lies in the table (sized for all of them at build).
    if first + usize::from(vectors) > INTERRUPT_ENTRIES {
        return Err(MsiRefusal::NoRemappingEntry);
    }
    for n in 0..usize::from(vectors) {
        let entry = vt_d::interrupt_entry(
            message.apic_id,
            message.vector.wrapping_add(n as u8),
            false,
            Some(physical.0),
            remapping.extended_mode,
        )
        .ok_or(MsiRefusal::NoRemappingEntry)?;
        remapping
            .set_entry(first + n, entry)
            .map_err(|_| MsiRefusal::NoRemappingEntry)?;
    }
    Ok(Some((u64::from(vt_d::remappable_address(first as u16)), 0)))
}

/// The remappable form of I/O APIC pin `pin`'s redirection entry, whose compatibility
/// form (as the hypervisor computed it) is `low`/`high`: the pin's handle (= `pin`) gets
/// the entry's destination, vector and trigger mode, source-validated against the I/O
/// APIC; `None` when interrupt remapping is off (the entry is written as it is).
pub fn ioapic_entry(pin: u8, low: u32, high: u32) -> Option<(u32, u32)> {
    let mut guard = REMAPPING.lock();
    let remapping = guard.as_mut()?;
    let masked_low = low | (1 << 16);
    // Physical destination (bit 11 clear, which the hypervisor always writes): the APIC
    // ID in bits 63:56 (82093AA §3.2.4).
    let entry = vt_d::interrupt_entry(
        high >> 24,
        low as u8,
        low & (1 << 15) != 0,
        remapping.ioapic_source,
        remapping.extended_mode,
    );
    let entry = match entry {
        // A masked pin's entry is not present: no message, forged or not, can use it.
        Some(_) if low & (1 << 16) != 0 => [0, 0],
        // Without a known I/O APIC source, entries for its pins could be named by any
        // device's forged message: the pin stays masked instead.
        Some(entry) if remapping.ioapic_source.is_some() => entry,
        _ => {
            return Some(vt_d::remappable_redirection_entry(
                u16::from(pin),
                masked_low,
            ))
        }
    };
    if remapping.set_entry(usize::from(pin), entry).is_err() {
        return Some(vt_d::remappable_redirection_entry(
            u16::from(pin),
            masked_low,
        ));
    }
    Some(vt_d::remappable_redirection_entry(u16::from(pin), low))
}

/// A hot-standby takeover's move of a function (`iommu::move_function`): `to`'s block of
/// interrupt handles cleared, the context entry pointed at `to`'s domain (a confined
/// function; an unconfined one passes through in either partition and keeps its entry),
/// then the context cache and the IOTLB invalidated globally and the interrupt entry cache
/// for both blocks (§6.5.3.3: a present context entry changed needs a context-cache
/// invalidation, then an IOTLB invalidation), through the invalidation queue when it is on
/// (§6.5.2: register-based invalidation is not used while it is) or the registers; then
/// `from`'s block cleared. `Ok(false)` when no unit is up.
pub fn move_function(
    from: FunctionView,
    _from_partition: usize,
    to: FunctionView,
    to_partition: usize,
) -> Result<bool, MoveRefusal> {
    let base = BASE.load(Ordering::Acquire);
    let root = ROOT.load(Ordering::Acquire);
    if base == 0 || root == 0 {
        return Ok(false);
    }
    let Some(window) = Window::new(base, register::WINDOW_BYTES) else {
        return Ok(false);
    };
    let mut guard = REMAPPING.lock();
    if let Some(remapping) = guard.as_mut() {
        for ordinal in [to.ordinal, from.ordinal] {
            remapping.clear_block(ordinal);
        }
    }
    if to.dma_confined {
        let domain_root = iommu::DOMAIN_ROOTS[to_partition].load(Ordering::Relaxed);
        if domain_root == 0 {
            return Err(MoveRefusal::NoDomain);
        }
        let bus = usize::from(to.physical.bus());
        let devfn = usize::from(to.physical.0 & 0xff);
        let entry = context_entry(domain_root, iommu::domain_id(to_partition));
        // SAFETY: `root` is the root table taken in `enable` (identity-mapped hypervisor
        // memory); a function's bus has a present root entry pointing at one of the
        // context tables taken there (`enable` gave every table function's bus one). The
        // unit reads the entry: the high half (domain) first, the low half (present,
        // second-level root) last, both volatile; the function is quiesced meanwhile.
        unsafe {
            let root_entry = core::ptr::read_volatile(&(*(root as *const EntryTable)).0[bus]);
            if root_entry[0] & 1 == 0 {
                return Err(MoveRefusal::NoDomain);
            }
            let context = (root_entry[0] & !0xfff & ((1 << 52) - 1)) as *mut EntryTable;
            core::ptr::write_volatile(&raw mut (*context).0[devfn][1], entry[1]);
            core::ptr::write_volatile(&raw mut (*context).0[devfn][0], entry[0]);
        }
    }
    count_translation_invalidation();
    count_translation_invalidation();
    let done = match guard.as_mut() {
        Some(remapping) => remapping
            .submit(vt_d::descriptor::context_cache_global())
            .and_then(|()| remapping.submit(vt_d::descriptor::iotlb_global()))
            .and_then(|()| remapping.submit(vt_d::descriptor::interrupt_entries_global()))
            .and_then(|()| remapping.wait_for_queue()),
        None => register_invalidations(window),
    };
    done.map_err(|_| MoveRefusal::InvalidationTimeout)?;
    Ok(true)
}

/// The global context-cache and IOTLB invalidations through the registers (§10.4.7,
/// §10.4.8), for a unit without the invalidation queue.
fn register_invalidations(window: Window) -> Result<(), Refusal> {
    window.write64(register::CONTEXT_COMMAND, vt_d::CONTEXT_INVALIDATE_GLOBAL);
    wait("the context-cache invalidation", || {
        window.read64(register::CONTEXT_COMMAND) & (1 << 63) == 0
    })?;
    let iotlb = iotlb_register(window.read64(register::EXTENDED_CAPABILITY));
    window.write64(iotlb, vt_d::IOTLB_INVALIDATE_GLOBAL);
    wait("the IOTLB invalidation", || {
        window.read64(iotlb) & (1 << 63) == 0
    })
}

/// One poller at a time: two cores reading a slot at once would count its fault twice.
static POLLING: spin::Mutex<()> = spin::Mutex::new(());

/// Reads and clears the recorded faults, counting and logging each (§7.2.1, §10.4.14),
/// and hands each one's requester ID to `on_fault` with whether it was an interrupt-
/// remapping fault. Any core may call it; clearing a record lets the unit record the next
/// fault (QEMU compresses further faults until then).
pub fn poll_faults(mut on_fault: impl FnMut(u16, bool)) {
    let _polling = POLLING.lock();
    let base = BASE.load(Ordering::Acquire);
    // Stored only after `Window::new` accepted it.
    let Some(window) = (base != 0)
        .then(|| Window::new(base, register::WINDOW_BYTES))
        .flatten()
    else {
        return;
    };
    let (first, count) = fault_registers(window.read64(register::CAPABILITY));
    for slot in 0..count {
        let offset = first + slot * 16;
        let high = window.read64(offset + 8);
        if let Some(fault) = Fault::decode(window.read64(offset), high) {
            if fault.interrupt() {
                INTERRUPT_FAULTS.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "iommu: interrupt blocked: device {:02x}:{:02x}.{} reason {:#x}",
                    fault.source >> 8,
                    (fault.source >> 3) & 0x1f,
                    fault.source & 7,
                    fault.reason
                );
                window.write64(offset + 8, 1 << 63);
                on_fault(fault.source, true);
                continue;
            }
            FAULTS.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "iommu: DMA blocked: device {:02x}:{:02x}.{} {} address {:#x} reason {:#x}",
                fault.source >> 8,
                (fault.source >> 3) & 0x1f,
                fault.source & 7,
                if fault.read { "read" } else { "write" },
                fault.address,
                fault.reason
            );
            // F is write-1-to-clear.
            window.write64(offset + 8, 1 << 63);
            on_fault(fault.source, false);
        }
    }
    // Primary fault overflow (bit 0) is write-1-to-clear too (§10.4.9).
    window.write32(register::FAULT_STATUS, 1);
}

/// DMA faults counted so far, or None when no unit is enabled.
pub fn fault_count() -> Option<u64> {
    (BASE.load(Ordering::Acquire) != 0).then(|| FAULTS.load(Ordering::Relaxed))
}

/// (IOTLB and context-cache invalidations at bring-up, after it, interrupt entry cache
/// invalidations), or None when no unit is enabled. Only bring-up invalidates
/// translations: the domains are static, so the second count is always 0 — there is no
/// other path that issues one.
pub fn invalidation_counts() -> Option<(u64, u64, u64)> {
    (BASE.load(Ordering::Acquire) != 0).then(|| {
        (
            TRANSLATION_INVALIDATIONS_AT_BOOT.load(Ordering::Relaxed),
            TRANSLATION_INVALIDATIONS_SINCE_BOOT.load(Ordering::Relaxed),
            INTERRUPT_INVALIDATIONS.load(Ordering::Relaxed),
        )
    })
}

static TRANSLATION_INVALIDATIONS_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static TRANSLATION_INVALIDATIONS_SINCE_BOOT: AtomicU64 = AtomicU64::new(0);

/// Counts a context-cache or IOTLB invalidation, at bring-up (no unit published yet) or
/// after it.
fn count_translation_invalidation() {
    if BASE.load(Ordering::Acquire) == 0 {
        TRANSLATION_INVALIDATIONS_AT_BOOT.fetch_add(1, Ordering::Relaxed);
    } else {
        TRANSLATION_INVALIDATIONS_SINCE_BOOT.fetch_add(1, Ordering::Relaxed);
    }
}

/// Interrupt-remapping faults counted so far.
pub fn interrupt_fault_count() -> u64 {
    INTERRUPT_FAULTS.load(Ordering::Relaxed)
}
