//! What the two IOMMU drivers (`amd_iommu`, `intel_iommu`) share: register access to a
//! unit's window, the one pool of DMA-domain tables, and the line that names a confined
//! function. Only one of the drivers runs on a machine, so one pool serves either.

use static_cell::ConstStaticCell;
use tessera_abi::table::{Bdf, PciFunction};
use tessera_policy::pci::msi::{CheckedMessage, MessageRoute, MsiRefusal};
use tessera_policy::stage2::TablePool;

use crate::table::{DMA_TABLE_PAGES, PARTITION_COUNT};
use core::sync::atomic::AtomicU64;

/// A unit's register window, checked at construction to lie in the uncached MMIO window
/// of the host page tables.
#[derive(Clone, Copy)]
pub struct Window {
    base: u64,
}

impl Window {
    /// The window of `bytes` bytes at `base`, if the host page tables map it uncached.
    pub fn new(base: u64, bytes: u64) -> Option<Self> {
        tessera_policy::host_page_tables::lies_in_mmio_window(base, bytes).then_some(Self { base })
    }

    pub fn read64(self, offset: usize) -> u64 {
        // SAFETY: the window lies in the uncached MMIO window the host page tables map
        // (checked in `new`); the drivers pass their specification's register offsets
        // (AMD-Vi §3.4, VT-d §10.4), naturally aligned, inside the window.
        unsafe { core::ptr::read_volatile((self.base + offset as u64) as *const u64) }
    }

    pub fn write64(self, offset: usize, value: u64) {
        // SAFETY: as in `read64`; the registers configure the unit only.
        unsafe { core::ptr::write_volatile((self.base + offset as u64) as *mut u64, value) }
    }

    pub fn read32(self, offset: usize) -> u32 {
        // SAFETY: as in `read64`, for the 32-bit registers.
        unsafe { core::ptr::read_volatile((self.base + offset as u64) as *const u32) }
    }

    pub fn write32(self, offset: usize, value: u32) {
        // SAFETY: as in `read64`, for the 32-bit registers.
        unsafe { core::ptr::write_volatile((self.base + offset as u64) as *mut u32, value) }
    }
}

/// The DMA domains' I/O page tables: one tree per partition with a confined function,
/// sized at build time (`DMA_TABLE_PAGES`).
#[repr(C, align(4096))]
struct DmaPool([[u64; 512]; DMA_TABLE_PAGES]);
static DMA_POOL: ConstStaticCell<DmaPool> =
    ConstStaticCell::new(DmaPool([[0; 512]; DMA_TABLE_PAGES]));

/// The pool, once (the driver that comes up takes it; a second take panics).
pub fn take_dma_pool() -> TablePool<'static> {
    let pool = DMA_POOL.take();
    let phys_base = pool as *const DmaPool as u64;
    TablePool::new(&mut pool.0, phys_base)
}

/// Logs that `function`'s DMA goes through the domain of `partition`.
pub fn log_confined(function: &PciFunction, partition: &str) {
    log::info!(
        "iommu: {:02x}:{:02x}.{} DMA confined to the memory of partition {}",
        function.physical.bus(),
        function.physical.device(),
        function.physical.function(),
        partition
    );
}

/// Per partition, the root of its DMA domain's I/O page tables (0: none), written once by
/// the driver that comes up: a takeover points a moving function at the taker's domain.
pub static DOMAIN_ROOTS: [AtomicU64; PARTITION_COUNT] =
    [const { AtomicU64::new(0) }; PARTITION_COUNT];

/// The domain ID of partition `index`'s DMA domain (0 is the blocking domain).
pub fn domain_id(index: usize) -> u16 {
    index as u16 + 1
}

/// A passed-through function as one partition sees it: its requester ID, the ordinal of
/// that partition's view of it (`table::pci_function_ordinal`: which interrupt remapping
/// entries are that partition's) and whether its DMA is confined.
#[derive(Clone, Copy)]
pub struct FunctionView {
    pub physical: Bdf,
    pub ordinal: usize,
    pub dma_confined: bool,
}

/// The one path from a checked MSI (or MSI-X) message to what its function is programmed
/// with (`tessera_policy::pci::msi::MessageRoute`): through the enabled unit's interrupt
/// remapping entries of the function as the partition holding it sees it (AMD-Vi or VT-d),
/// or unchanged when no unit remaps that function's interrupts.
pub struct FunctionRoute(pub FunctionView);

impl MessageRoute for FunctionRoute {
    fn route(
        &mut self,
        message: CheckedMessage,
        first_entry: u16,
        vectors: u16,
        original: (u64, u32),
    ) -> Result<(u64, u32), MsiRefusal> {
        if let Some(routed) = super::amd_iommu::route(self.0, message, first_entry, vectors)? {
            return Ok(routed);
        }
        if let Some(routed) = super::intel_iommu::route(self.0, message, first_entry, vectors)? {
            return Ok(routed);
        }
        Ok(original)
    }
}

/// Why a function could not be moved to another partition's domain.
#[derive(Clone, Copy, Debug)]
pub enum MoveRefusal {
    /// The taking partition has no DMA domain (its table lists no confined function).
    NoDomain,
    /// The unit did not complete the invalidations in time.
    InvalidationTimeout,
}

/// At a hot-standby takeover (the function quiesced: bus mastering and its interrupts
/// off): points the function `from` held at `to`'s DMA domain and `to`'s interrupt
/// remapping entries (all cleared first, so nothing `from`'s guest or an earlier holding
/// period programmed can be used), invalidates what the unit cached of the function's
/// context, `from`'s domain and interrupt entries, and clears `from`'s entries. `Ok(false)`
/// when no unit translates the function (no IOMMU, or its DMA unconfined).
pub fn move_function(
    from: FunctionView,
    from_partition: usize,
    to: FunctionView,
    to_partition: usize,
) -> Result<bool, MoveRefusal> {
    if super::amd_iommu::move_function(from, from_partition, to, to_partition)? {
        return Ok(true);
    }
    super::intel_iommu::move_function(from, from_partition, to, to_partition)
}
