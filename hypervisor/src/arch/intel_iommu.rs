//! Intel VT-d DMA-remapping units (Intel Virtualization Technology for Directed I/O,
//! Architecture Specification rev. 3.x): bring-up from the firmware's DMAR, the root and
//! context tables, and the fault-recording registers. Formats and register layouts come
//! from `tessera_policy::iommu::vt_d` (host-tested); this leaf places the tables and
//! touches the registers.
//!
//! Every requester starts blocked: a root entry that is not present (or, on a bus that
//! holds a partition's function, a context entry that is not present) makes the unit
//! refuse and record the request (§7.1.3). DMA remapping does not cover interrupt requests:
//! without interrupt remapping (not built yet) an MSI from any device is still delivered.

use core::sync::atomic::{AtomicU64, Ordering};
use static_cell::ConstStaticCell;
use tessera_policy::iommu::vt_d::{
    self, context_entry, fault_registers, global, iotlb_register, pass_through_context_entry,
    register, root_entry, Fault, VtdSecondLevel,
};
use tessera_policy::stage2;

use super::iommu::{self, Window};
use crate::table::MACHINE;

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

/// The enabled unit's register base (0: none).
static BASE: AtomicU64 = AtomicU64::new(0);
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
    let states = window.read32(register::GLOBAL_STATUS) & !global::ONE_SHOT;
    window.write32(register::GLOBAL_COMMAND, states | command);
    wait(what, || {
        window.read32(register::GLOBAL_STATUS) & command != 0
    })
}

/// Finds the DMA-remapping unit in `dmar` and enables translation with every requester
/// blocked but the partitions' functions (their domains) and the unconfined ones. Called
/// once by the bootstrap core before any other core runs. Returns the unit's base.
pub fn enable(dmar: &[u8]) -> Result<u64, Refusal> {
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

    let root = ROOT_TABLE.take();
    let contexts = CONTEXT.take();
    let mut pool = iommu::take_dma_pool();
    // Which context table serves each bus; tables are handed out in order of first use.
    let mut context_of_bus = [None::<usize>; 256];
    let mut used_contexts = 0;
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        let mut domain_root = None;
        for function in partition.pci_functions {
            let bus = usize::from(function.physical.bus());
            let context = *context_of_bus[bus].get_or_insert_with(|| {
                let next = used_contexts;
                used_contexts += 1;
                root.0[bus] = root_entry(&contexts[next] as *const EntryTable as u64);
                next
            });
            let devfn = usize::from(function.physical.0 & 0xff);
            let domain = index as u16 + 1;
            contexts[context].0[devfn] = if function.dma_confined {
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
                        built
                    }
                };
                iommu::log_confined(function, partition.name);
                context_entry(tables, domain)
            } else if extended & (1 << 6) != 0 {
                pass_through_context_entry(domain)
            } else {
                return Err(Refusal::NoPassThrough);
            };
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
    window.write64(register::CONTEXT_COMMAND, vt_d::CONTEXT_INVALIDATE_GLOBAL);
    wait("the context-cache invalidation", || {
        window.read64(register::CONTEXT_COMMAND) & (1 << 63) == 0
    })?;
    let iotlb = iotlb_register(extended);
    window.write64(iotlb, vt_d::IOTLB_INVALIDATE_GLOBAL);
    wait("the IOTLB invalidation", || {
        window.read64(iotlb) & (1 << 63) == 0
    })?;
    global_command(window, global::TRANSLATION_ENABLE, "translation enable")?;
    BASE.store(base, Ordering::Release);
    Ok(base)
}

/// Reads and clears the recorded faults, counting and logging each (§7.2.1, §10.4.14).
pub fn poll_faults() {
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
        }
    }
    // Primary fault overflow (bit 0) is write-1-to-clear too (§10.4.9).
    window.write32(register::FAULT_STATUS, 1);
}

/// Faults counted so far, or None when no unit is enabled.
pub fn fault_count() -> Option<u64> {
    (BASE.load(Ordering::Acquire) != 0).then(|| FAULTS.load(Ordering::Relaxed))
}
