//! AMD-Vi IOMMU units (AMD I/O Virtualization Technology (IOMMU) Specification rev. 3.x):
//! bring-up from the firmware's IVRS, the device table every requester ID is looked up in,
//! the command buffer with completion waits, and the event log. The formats come from
//! `tessera_policy::iommu` (host-tested); this leaf only places them in memory and touches
//! the registers.
//!
//! Every device ID starts blocked: its entry translates through an empty table with
//! neither read nor write allowed and aborts its interrupts, so a device no partition owns
//! can neither DMA nor raise an MSI. The unit's own function and the I/O APICs (whose pins
//! the partitions use) pass untouched.
//!
//! Interrupt remapping (§2.2.5): every confined function's entry has IV set, IntCtl =
//! remapped and its own interrupt remapping table of 2048 entries (the most an MSI's data
//! bits 10:0 can index, so no index falls outside it), all with RemapEn clear: any message
//! the function sends is target-aborted unless its data names an entry the hypervisor
//! filled from a message it checked (`route`). Entries are 128 bits wide with x2APIC
//! destinations where the unit reports XTSup and GASup (then GAEn and XTEn are set), else
//! 32 bits with 8-bit destinations.

use core::sync::atomic::{AtomicU64, Ordering};
use static_cell::ConstStaticCell;
use tessera_policy::iommu::amd_vi::AmdViIo;
use tessera_policy::iommu::amd_vi::{
    self, control, device_table_base, feature, register, ring_base, status, Command,
    DeviceTableEntry, Event, EventKind,
};
use tessera_policy::iommu::ivrs::{Ivrs, IvrsError};
use tessera_policy::pci::msi::{CheckedMessage, MsiRefusal};
use tessera_policy::stage2;

use super::iommu::{self, FunctionView, MoveRefusal, Window};
use crate::table::{PartitionIndex, MACHINE, PCI_FUNCTION_COUNT};

/// Entries of the command buffer and of the event log: 2^8 (the minimum, 4 KiB each).
const RING_ENTRIES_LOG2: u8 = 8;
const RING_ENTRIES: usize = 1 << RING_ENTRIES_LOG2;

#[repr(C, align(4096))]
struct DeviceTable([[u64; 4]; amd_vi::DEVICE_IDS]);
#[repr(C, align(4096))]
struct Ring([[u64; 2]; RING_ENTRIES]);
#[repr(C, align(4096))]
struct EmptyTable([u64; 512]);
/// One function's interrupt remapping table, in 128-bit slots (the 32-bit format uses the
/// first quarter as 2048 four-byte entries).
#[repr(C, align(4096))]
struct InterruptTable([[u64; 2]; INTERRUPT_ENTRIES]);
const INTERRUPT_ENTRIES: usize = 1 << amd_vi::MAX_INTERRUPT_TABLE_LOG2;

/// The interrupt remapping table of the table's I/O APIC (indexed by `ioapic_index`).
static IOAPIC_TABLE: ConstStaticCell<InterruptTable> =
    ConstStaticCell::new(InterruptTable([[0; 2]; INTERRUPT_ENTRIES]));
static INTERRUPT_TABLES: ConstStaticCell<[InterruptTable; PCI_FUNCTION_COUNT]> =
    ConstStaticCell::new(
        [const { InterruptTable([[0; 2]; INTERRUPT_ENTRIES]) }; PCI_FUNCTION_COUNT],
    );

/// The one unit Tessera drives (QEMU's q35 has one; a machine with several is refused).
static DEVICE_TABLE: ConstStaticCell<DeviceTable> =
    ConstStaticCell::new(DeviceTable([[0; 4]; amd_vi::DEVICE_IDS]));
static COMMANDS: ConstStaticCell<Ring> = ConstStaticCell::new(Ring([[0; 2]; RING_ENTRIES]));
static EVENTS: ConstStaticCell<Ring> = ConstStaticCell::new(Ring([[0; 2]; RING_ENTRIES]));
/// The level-4 table of the blocking domain: all zero, never written.
static EMPTY_ROOT: EmptyTable = EmptyTable([0; 512]);
/// Where COMPLETION_WAIT stores its sequence number.
static COMPLETION: AtomicU64 = AtomicU64::new(0);

/// The unit after bring-up: its register window, the rings, the next command slot and the
/// last completion-wait sequence number.
struct Unit {
    window: Window,
    /// The rings' addresses: the unit reads and writes them, so every access is volatile.
    commands: *mut Ring,
    events: *const Ring,
    command_tail: usize,
    sequence: u64,
    /// The device table, taken once in `enable`: a takeover rewrites a moving function's
    /// entry, under the `UNIT` lock.
    device_table: *mut DeviceTable,
    /// The interrupt remapping tables (one per function, in table order), written by the
    /// hypervisor only, under the `UNIT` lock.
    interrupt_tables: *mut [InterruptTable; PCI_FUNCTION_COUNT],
    /// 128-bit entries with 32-bit destinations (GAEn and XTEn set).
    wide_entries: bool,
    /// The table's I/O APIC: its device ID and interrupt remapping table.
    ioapic: Option<(u16, *mut InterruptTable)>,
    /// Per I/O APIC table index, the unmasked pin + 1 whose entry it holds (0: none), and
    /// per pin, its index + 1 (0: none).
    ioapic_index_pin: [u8; INTERRUPT_ENTRIES],
    ioapic_pin_index: [u16; 256],
}

// SAFETY: the rings are statics taken once by `enable`; after it only the holder of the
// `UNIT` lock touches them.
unsafe impl Send for Unit {}

static UNIT: spin::Mutex<Option<Unit>> = spin::Mutex::new(None);
/// IO_PAGE_FAULT events read, and every other event.
static PAGE_FAULTS: AtomicU64 = AtomicU64::new(0);
static OTHER_EVENTS: AtomicU64 = AtomicU64::new(0);

/// Why bring-up stopped.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    Ivrs(IvrsError),
    /// More than one unit: only one is driven by this version.
    SeveralUnits {
        first: u64,
        second: u64,
    },
    /// The unit's registers lie outside the uncached MMIO window of the host page tables.
    OutsideMmioWindow {
        base: u64,
    },
    /// A COMPLETION_WAIT did not complete.
    CommandTimeout,
    /// More I/O APICs than the pass-through list holds.
    TooManyIoApics,
    /// A partition's DMA domain could not be built (its index and why).
    Domain {
        partition: usize,
        error: stage2::BuildError,
    },
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Refusal::Ivrs(error) => write!(formatter, "the IVRS table: {error:?}"),
            Refusal::SeveralUnits { first, second } => write!(
                formatter,
                "several units ({first:#x}, {second:#x}); this version drives one"
            ),
            Refusal::OutsideMmioWindow { base } => write!(
                formatter,
                "registers at {base:#x} lie outside the uncached MMIO window"
            ),
            Refusal::CommandTimeout => formatter.write_str("a COMPLETION_WAIT never completed"),
            Refusal::TooManyIoApics => {
                formatter.write_str("more IOAPICs than the pass-through list holds")
            }
            Refusal::Domain { partition, error } => write!(
                formatter,
                "the DMA domain of partition {}: {error:?}",
                MACHINE.partitions[*partition].name
            ),
        }
    }
}

/// What bring-up found.
pub struct Enabled {
    pub base: u64,
    pub iommu_device: u16,
    pub passthrough: heapless::Vec<u16, 8>,
}

/// Finds the AMD-Vi unit in `ivrs` (the raw IVRS table) and enables it with every device
/// ID blocked but the unit itself and the I/O APICs the IVRS names. Called once by the
/// bootstrap core before any other core runs.
pub fn enable(
    ivrs: &[u8],
    ioapic_ids: &[u8],
    table_ioapic: Option<u8>,
) -> Result<Enabled, Refusal> {
    let ivrs = Ivrs::parse(ivrs).map_err(Refusal::Ivrs)?;
    let mut unit = None;
    for block in ivrs.units() {
        let block = block.map_err(Refusal::Ivrs)?;
        match unit {
            None => unit = Some(block),
            // Types 10h and 11h describe the same unit twice; the later type is richer.
            Some(first) if first.base == block.base => unit = Some(block),
            Some(first) => {
                return Err(Refusal::SeveralUnits {
                    first: first.base,
                    second: block.base,
                })
            }
        }
    }
    let Some(unit) = unit else {
        return Err(Refusal::Ivrs(IvrsError::NotIvrs));
    };
    let base = unit.base;
    let window = Window::new(base, amd_vi::register::WINDOW_BYTES)
        .ok_or(Refusal::OutsideMmioWindow { base })?;
    let mut passthrough = heapless::Vec::new();
    let devices = core::iter::once(Some(unit.iommu_device))
        .chain(ioapic_ids.iter().map(|&id| unit.ioapic_device(id)));
    for device in devices.flatten() {
        passthrough
            .push(device)
            .map_err(|_| Refusal::TooManyIoApics)?;
    }

    let table = DEVICE_TABLE.take();
    let empty_root = &raw const EMPTY_ROOT as u64;
    let blocked = DeviceTableEntry::blocked(empty_root, 0);
    for (device, entry) in table.0.iter_mut().enumerate() {
        *entry = if passthrough.contains(&(device as u16)) {
            DeviceTableEntry::passthrough().0
        } else {
            blocked.0
        };
    }
    let features = window.read64(register::EXTENDED_FEATURES);
    let wide_entries = features & feature::X2APIC != 0 && features & feature::GUEST_APIC != 0;
    let interrupt_tables = INTERRUPT_TABLES.take();
    build_domains(&mut table.0, interrupt_tables)?;
    // The table's I/O APIC: its interrupts through its own remapping table, every entry
    // RemapEn clear until the hypervisor routes a pin (`ioapic_entry`).
    let ioapic_table = IOAPIC_TABLE.take();
    let ioapic = table_ioapic
        .and_then(|id| unit.ioapic_device(id))
        .map(|device| {
            table.0[usize::from(device)] =
                amd_vi::ioapic_device_entry(ioapic_table as *const InterruptTable as u64).0;
            (device, ioapic_table as *mut InterruptTable)
        });
    let commands: *mut Ring = COMMANDS.take();
    let events: *const Ring = EVENTS.take();

    // §3.4: registers are programmed with the unit disabled, then enabled together.
    window.write64(register::CONTROL, 0);
    window.write64(
        register::DEVICE_TABLE_BASE,
        device_table_base(table as *const DeviceTable as u64, amd_vi::DEVICE_IDS),
    );
    window.write64(
        register::COMMAND_BUFFER_BASE,
        ring_base(commands as u64, RING_ENTRIES_LOG2),
    );
    window.write64(
        register::EVENT_LOG_BASE,
        ring_base(events as u64, RING_ENTRIES_LOG2),
    );
    for pointer in [
        register::COMMAND_HEAD,
        register::COMMAND_TAIL,
        register::EVENT_HEAD,
        register::EVENT_TAIL,
    ] {
        window.write64(pointer, 0);
    }
    let entry_format = if wide_entries {
        control::GUEST_APIC_ENABLE | control::X2APIC_ENABLE
    } else {
        0
    };
    window.write64(
        register::CONTROL,
        control::IOMMU_ENABLE
            | control::EVENT_LOG_ENABLE
            | control::COMMAND_BUFFER_ENABLE
            | entry_format,
    );
    log::info!(
        "iommu: AMD-Vi interrupt remapping on, {} entries",
        if wide_entries {
            "128-bit (x2APIC)"
        } else {
            "32-bit"
        }
    );
    let mut driven = Unit {
        window,
        device_table: table as *mut DeviceTable,
        commands,
        events,
        command_tail: 0,
        sequence: 0,
        interrupt_tables,
        wide_entries,
        ioapic,
        ioapic_index_pin: [0; INTERRUPT_ENTRIES],
        ioapic_pin_index: [0; 256],
    };
    // Whatever the firmware left cached goes: each device ID's entry (the unit reloads the
    // entries Tessera wrote; QEMU's model also only switches a device from pass-through to
    // translation when its entry is invalidated), then, where the unit can, everything else.
    for device in 0..=u16::MAX {
        driven.submit(Command::invalidate_device(device));
        if driven.command_tail == 0 {
            driven.wait()?;
        }
    }
    if window.read64(register::EXTENDED_FEATURES) & feature::INVALIDATE_ALL != 0 {
        driven.submit(Command::invalidate_all());
    }
    driven.wait()?;
    let iommu_device = unit.iommu_device;
    BROUGHT_UP.store(true, Ordering::Relaxed);
    *UNIT.lock() = Some(driven);
    Ok(Enabled {
        base,
        iommu_device,
        passthrough,
    })
}

/// Gives every PCI function with confined DMA its partition's domain: I/O page tables that
/// map the partition's RAM and channels at their guest-physical addresses (the same plan
/// as its stage-2 tables), domain ID = partition index + 1 (0 is the blocking domain).
/// Unconfined functions (`dma = "unconfined"`) pass untranslated, as the table says.
fn build_domains(
    table: &mut [[u64; 4]; amd_vi::DEVICE_IDS],
    interrupt_tables: &[InterruptTable; PCI_FUNCTION_COUNT],
) -> Result<(), Refusal> {
    let mut pool = iommu::take_dma_pool();
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        let mut confined = partition
            .pci_functions
            .iter()
            .filter(|function| function.dma_confined);
        if confined.next().is_none() {
            continue;
        }
        let first_page = pool.used;
        let root =
            stage2::build::<AmdViIo>(partition.memory, false, &mut pool).map_err(|error| {
                Refusal::Domain {
                    partition: index,
                    error,
                }
            })?;
        amd_vi::mark_holes(&mut pool.pages[first_page..pool.used]);
        iommu::DOMAIN_ROOTS[index].store(root, Ordering::Relaxed);
        // A table standby's functions are its primary's: their entries name the primary's
        // domain until a takeover (`move_function`).
        if !crate::table::holds_pci_functions_at_boot(partition) {
            continue;
        }
        for (slot, function) in partition.pci_functions.iter().enumerate() {
            if !function.dma_confined {
                continue;
            }
            let ordinal = crate::table::pci_function_ordinal(PartitionIndex(index), slot);
            let interrupts = &interrupt_tables[ordinal] as *const InterruptTable as u64;
            table[usize::from(function.physical.0)] =
                DeviceTableEntry::translated(root, iommu::domain_id(index))
                    .with_interrupt_table(interrupts, amd_vi::MAX_INTERRUPT_TABLE_LOG2)
                    .0;
            iommu::log_confined(function, partition.name);
        }
    }
    for partition in MACHINE.partitions {
        let unconfined = partition
            .pci_functions
            .iter()
            .filter(|function| !function.dma_confined);
        for function in unconfined {
            table[usize::from(function.physical.0)] = DeviceTableEntry::passthrough().0;
            log::info!(
                "iommu: {:02x}:{:02x}.{} of partition {} left unconfined (dma = \"unconfined\")",
                function.physical.bus(),
                function.physical.device(),
                function.physical.function(),
                partition.name
            );
        }
    }
    Ok(())
}

/// Fills the interrupt remapping entries `first_entry..first_entry + vectors` of the
/// confined function at `physical` with `message`'s destination and consecutive vectors,
/// invalidates the unit's copy of the function's table (INVALIDATE_INTERRUPT_TABLE, then
/// COMPLETION_WAIT: §2.4.5, §2.4.1) and returns the remappable message to program.
/// `Ok(None)` when the function's interrupts are not remapped here (no unit, or the table
/// leaves its DMA unconfined and its entry passes everything).
pub fn route(
    function: FunctionView,
    message: CheckedMessage,
    first_entry: u16,
    vectors: u16,
) -> Result<Option<(u64, u32)>, MsiRefusal> {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return Ok(None);
    };
    if !function.dma_confined {
        return Ok(None);
    }
    let physical = function.physical;
    let table = unit
        .interrupt_table(function.ordinal)
        .ok_or(MsiRefusal::NoRemappingEntry)?;
    let message_out = amd_vi::remappable_message(first_entry)
        .filter(|_| usize::from(first_entry) + usize::from(vectors) <= 256)
        .ok_or(MsiRefusal::NoRemappingEntry)?;
    for n in 0..vectors {
        let index = usize::from(first_entry + n);
        let vector = message.vector.wrapping_add(n as u8);
        if !unit.set_entry(table, index, Some((message.apic_id, vector))) {
            return Err(MsiRefusal::NoRemappingEntry);
        }
    }
    unit.submit(Command::invalidate_interrupt_table(physical.0));
    unit.wait().map_err(|_| MsiRefusal::NoRemappingEntry)?;
    INTERRUPT_INVALIDATIONS.fetch_add(1, Ordering::Relaxed);
    Ok(Some(message_out))
}

/// A hot-standby takeover's move of a confined function (`iommu::move_function`): `to`'s
/// remapping table cleared, the device table entry pointed at `to`'s domain and table,
/// then INVALIDATE_DEVTAB_ENTRY, INVALIDATE_INTERRUPT_TABLE and INVALIDATE_IOMMU_PAGES of
/// `from`'s domain (§2.4.2, §2.4.5, §2.4.3) and a COMPLETION_WAIT, after which nothing the
/// unit cached still names `from`; `from`'s table is cleared last. `Ok(false)` when no
/// unit is up or the function is not confined.
pub fn move_function(
    from: FunctionView,
    from_partition: usize,
    to: FunctionView,
    to_partition: usize,
) -> Result<bool, MoveRefusal> {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return Ok(false);
    };
    if !to.dma_confined {
        return Ok(false);
    }
    let (Some(to_table), Some(from_table)) = (
        unit.interrupt_table(to.ordinal),
        unit.interrupt_table(from.ordinal),
    ) else {
        return Ok(false);
    };
    let root = iommu::DOMAIN_ROOTS[to_partition].load(Ordering::Relaxed);
    if root == 0 {
        return Err(MoveRefusal::NoDomain);
    }
    for index in 0..INTERRUPT_ENTRIES {
        unit.set_entry(to_table, index, None);
    }
    let device = usize::from(to.physical.0);
    let entry = DeviceTableEntry::translated(root, iommu::domain_id(to_partition))
        .with_interrupt_table(to_table as u64, amd_vi::MAX_INTERRUPT_TABLE_LOG2)
        .0;
    // SAFETY: the device table is the static taken in `enable`; `device` < 65,536 entries.
    // The unit reads it: the entry's quadwords are written volatile, V and TV (in the first)
    // last, and the invalidation below makes the unit read it again.
    unsafe {
        let slot = &raw mut (*unit.device_table).0[device];
        for quadword in [3, 2, 1, 0] {
            core::ptr::write_volatile(&raw mut (*slot)[quadword], entry[quadword]);
        }
    }
    unit.submit(Command::invalidate_device(to.physical.0));
    unit.submit(Command::invalidate_interrupt_table(to.physical.0));
    unit.submit(Command::invalidate_domain(iommu::domain_id(from_partition)));
    unit.wait().map_err(|_| MoveRefusal::InvalidationTimeout)?;
    for index in 0..INTERRUPT_ENTRIES {
        unit.set_entry(from_table, index, None);
    }
    INTERRUPT_INVALIDATIONS.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}

/// INVALIDATE_INTERRUPT_TABLE commands issued (each followed by a completion wait): one
/// per MSI or I/O APIC entry (re)programming, none in steady state.
pub static INTERRUPT_INVALIDATIONS: AtomicU64 = AtomicU64::new(0);
/// Commands that drop cached translations (INVALIDATE_DEVTAB_ENTRY, INVALIDATE_IOMMU_PAGES,
/// INVALIDATE_IOMMU_ALL), at bring-up and after it: the domains are static, so the second
/// count stays 0.
static TRANSLATION_INVALIDATIONS_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static TRANSLATION_INVALIDATIONS_SINCE_BOOT: AtomicU64 = AtomicU64::new(0);
static BROUGHT_UP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// (translation invalidations at bring-up, after it, interrupt table invalidations), or
/// None when no unit is enabled.
pub fn invalidation_counts() -> Option<(u64, u64, u64)> {
    UNIT.lock().as_ref()?;
    Some((
        TRANSLATION_INVALIDATIONS_AT_BOOT.load(Ordering::Relaxed),
        TRANSLATION_INVALIDATIONS_SINCE_BOOT.load(Ordering::Relaxed),
        INTERRUPT_INVALIDATIONS.load(Ordering::Relaxed),
    ))
}

/// The remapped form of the table's I/O APIC pin `pin`, whose compatibility form (as the
/// hypervisor computed it) is `low`/`high`. The redirection entry is kept as it is; the
/// I/O APIC's remapping table gets, at the index its messages name (`amd_vi::
/// ioapic_index`: the vector), the pin's destination and vector while the pin is unmasked,
/// and RemapEn clear once no unmasked pin uses it, so no message, forged or not, can use
/// the entry of a masked pin. Two unmasked pins that would share an index with different
/// targets cannot both be served: the later one stays masked in hardware (logged). `None`
/// when the I/O APIC is not remapped.
pub fn ioapic_entry(pin: u8, low: u32, high: u32) -> Option<(u32, u32)> {
    let mut guard = UNIT.lock();
    let unit = guard.as_mut()?;
    let (device, table) = unit.ioapic?;
    let pin_slot = usize::from(pin);
    let index = usize::from(amd_vi::ioapic_index(low));
    let masked = low & (1 << 16) != 0;
    let mut changed = false;
    // The index this pin held before: released when it moves or the pin is masked.
    if let Some(old) = unit.ioapic_pin_index[pin_slot].checked_sub(1) {
        let old = usize::from(old);
        if masked || old != index {
            unit.set_entry(table, old, None);
            unit.ioapic_index_pin[old] = 0;
            unit.ioapic_pin_index[pin_slot] = 0;
            changed = true;
        }
    }
    let mut hardware_low = low;
    if !masked {
        let holder = unit.ioapic_index_pin[index];
        if holder != 0 && usize::from(holder - 1) != pin_slot {
            log::info!(
                "iommu: I/O APIC pin {} would share remapping index {:#x} with pin {}: kept masked",
                pin,
                index,
                holder - 1
            );
            hardware_low |= 1 << 16;
        } else if unit.set_entry(table, index, Some((high >> 24, low as u8))) {
            unit.ioapic_index_pin[index] = pin.saturating_add(1);
            unit.ioapic_pin_index[pin_slot] = index as u16 + 1;
            changed = true;
        } else {
            hardware_low |= 1 << 16;
        }
    }
    if changed {
        unit.submit(Command::invalidate_interrupt_table(device));
        if unit.wait().is_err() {
            hardware_low |= 1 << 16;
        }
        INTERRUPT_INVALIDATIONS.fetch_add(1, Ordering::Relaxed);
    }
    Some((hardware_low, high))
}

impl Unit {
    /// The interrupt remapping table of function view `ordinal`, if the table has one.
    fn interrupt_table(&mut self, ordinal: usize) -> Option<*mut InterruptTable> {
        // SAFETY: `interrupt_tables` is the array taken once in `enable`, reached only under
        // the `UNIT` lock; `get_mut` bounds the index.
        unsafe { (*self.interrupt_tables).get_mut(ordinal) }.map(|table| table as *mut _)
    }

    /// Writes entry `index` of `table`: RemapEn with `target`'s destination and vector, or
    /// clear for `None`. False when the destination does not fit the entry format.
    fn set_entry(
        &mut self,
        table: *mut InterruptTable,
        index: usize,
        target: Option<(u32, u8)>,
    ) -> bool {
        if index >= INTERRUPT_ENTRIES {
            return false;
        }
        // SAFETY: `table` is one of the tables taken once in `enable`, written only here,
        // under the `UNIT` lock; `index` < INTERRUPT_ENTRIES (checked; the 32-bit format
        // uses the first quarter of the slots). The unit reads it: volatile writes, then
        // the caller's invalidation.
        unsafe {
            if self.wide_entries {
                let entry = target.map_or([0, 0], |(apic_id, vector)| {
                    amd_vi::interrupt_entry_128(apic_id, vector)
                });
                // The low half holds RemapEn: cleared first, set last.
                core::ptr::write_volatile(&raw mut (*table).0[index][0], 0);
                core::ptr::write_volatile(&raw mut (*table).0[index][1], entry[1]);
                core::ptr::write_volatile(&raw mut (*table).0[index][0], entry[0]);
            } else {
                let entry = match target {
                    Some((apic_id, vector)) => match amd_vi::interrupt_entry_32(apic_id, vector) {
                        Some(entry) => entry,
                        None => return false,
                    },
                    None => 0,
                };
                core::ptr::write_volatile((table as *mut u32).add(index), entry);
            }
        }
        true
    }

    /// Puts `command` in the next slot and moves the tail past it (§3.4.6: the tail is a
    /// byte offset into the buffer). Waits for the unit when the ring is full.
    fn submit(&mut self, command: Command) {
        // Opcodes 2, 3 and 8 drop cached translations (§2.4.2, §2.4.3, §2.4.9).
        if matches!(command.0[0] >> 60, 0x2 | 0x3 | 0x8) {
            if BROUGHT_UP.load(Ordering::Relaxed) {
                TRANSLATION_INVALIDATIONS_SINCE_BOOT.fetch_add(1, Ordering::Relaxed);
            } else {
                TRANSLATION_INVALIDATIONS_AT_BOOT.fetch_add(1, Ordering::Relaxed);
            }
        }
        let next = (self.command_tail + 1) % RING_ENTRIES;
        while next * 16 == (self.window.read64(register::COMMAND_HEAD) as usize & 0x7fff0) {
            core::hint::spin_loop();
        }
        // SAFETY: `commands` is the ring taken in `enable`, reached only under the `UNIT`
        // lock (or before it is published); the slot is free (the head is past it). The
        // write is volatile so it precedes the tail write that hands it to the unit.
        unsafe {
            core::ptr::write_volatile(&raw mut (*self.commands).0[self.command_tail], command.0)
        };
        self.command_tail = next;
        self.window
            .write64(register::COMMAND_TAIL, (next * 16) as u64);
    }

    /// COMPLETION_WAIT: every command before it has completed when the store lands
    /// (§2.4.1). Bounded: a unit that never answers is a refusal, not a hang.
    fn wait(&mut self) -> Result<(), Refusal> {
        self.sequence += 1;
        let sequence = self.sequence;
        self.submit(Command::completion_wait(
            &raw const COMPLETION as u64,
            sequence,
        ));
        for _ in 0..10_000_000 {
            if COMPLETION.load(Ordering::Acquire) == sequence {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(Refusal::CommandTimeout)
    }
}

/// Reads the events the unit logged since the last call, counts them, logs each page
/// fault (requester ID, DMA address) and hands the device ID of each page fault and
/// illegal-device-table or invalid-request event to `on_fault`. Any core may call it.
pub fn poll_events(on_fault: impl FnMut(u16)) {
    // Collected under the lock, handed over after it: `on_fault` may raise a health event
    // whose action waits for a core that is itself waiting for the lock in `route`.
    let mut faulted = heapless::Vec::<u16, RING_ENTRIES>::new();
    read_events(&mut faulted);
    faulted.into_iter().for_each(on_fault);
}

fn read_events(faulted: &mut heapless::Vec<u16, RING_ENTRIES>) {
    let mut guard = UNIT.lock();
    let Some(unit) = guard.as_mut() else {
        return;
    };
    let mut head = unit.window.read64(register::EVENT_HEAD) as usize & 0x7fff0;
    let tail = unit.window.read64(register::EVENT_TAIL) as usize & 0x7fff0;
    while head != tail {
        // SAFETY: the unit wrote the entry before moving the tail past it (§2.5); a
        // volatile read keeps the compiler from assuming the memory unchanged.
        let quadwords = unsafe { core::ptr::read_volatile(&raw const (*unit.events).0[head / 16]) };
        let event = Event::decode(quadwords);
        if matches!(
            event.kind,
            EventKind::IoPageFault
                | EventKind::IllegalDeviceTableEntry
                | EventKind::InvalidDeviceRequest
        ) {
            // At most one per ring entry: the vector has the ring's capacity.
            let _ = faulted.push(event.device);
        }
        if event.kind == EventKind::IoPageFault {
            PAGE_FAULTS.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "iommu: DMA blocked: device {:02x}:{:02x}.{} address {:#x}",
                event.device >> 8,
                (event.device >> 3) & 0x1f,
                event.device & 7,
                event.address
            );
        } else {
            OTHER_EVENTS.fetch_add(1, Ordering::Relaxed);
            log::info!("iommu: event {:?} device {:#06x}", event.kind, event.device);
        }
        head = (head + 16) % (RING_ENTRIES * 16);
    }
    unit.window.write64(register::EVENT_HEAD, head as u64);
    if unit.window.read64(register::STATUS) & status::EVENT_OVERFLOW != 0 {
        log::info!("iommu: the event log overflowed; later events were lost");
        // Write-1-to-clear (§3.4.13).
        unit.window
            .write64(register::STATUS, status::EVENT_OVERFLOW);
    }
}

/// Whether a unit is enabled.
pub fn enabled() -> bool {
    UNIT.lock().is_some()
}

/// Page faults and other events counted so far, or None when no unit is enabled.
pub fn event_counts() -> Option<(u64, u64)> {
    UNIT.lock().as_ref()?;
    Some((
        PAGE_FAULTS.load(Ordering::Relaxed),
        OTHER_EVENTS.load(Ordering::Relaxed),
    ))
}
