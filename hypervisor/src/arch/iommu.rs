//! What the two IOMMU drivers (`amd_iommu`, `intel_iommu`) share: register access to a
//! unit's window, the one pool of DMA-domain tables, and the line that names a confined
//! function. Only one of the drivers runs on a machine, so one pool serves either.

use static_cell::ConstStaticCell;
use tessera_abi::table::{Bdf, PciFunction};
use tessera_policy::pci::msi::{CheckedMessage, MessageRoute, MsiRefusal};
use tessera_policy::stage2::TablePool;

use crate::table::DMA_TABLE_PAGES;

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

/// The one path from a checked MSI (or MSI-X) message to what its function is programmed
/// with (`tessera_policy::pci::msi::MessageRoute`): through the enabled unit's interrupt
/// remapping entries for the function at `0` (AMD-Vi or VT-d), or unchanged when no unit
/// remaps that function's interrupts.
pub struct FunctionRoute(pub Bdf);

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
