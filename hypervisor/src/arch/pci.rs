//! The hypervisor's own path to the configuration space of the functions the table passes
//! through: the ECAM window (PCIe Base 4.0 §7.2.2), 4 KiB per function with extended space,
//! where the table has one the host page tables map (uncached, read-write:
//! `tessera_policy::host_page_tables::ecam_mappable`); otherwise configuration mechanism #1
//! (PCI Local Bus 3.0 §3.2.2.3.2), the address port 0xCF8 and the data port 0xCFC, which
//! reaches only the first 256 bytes. Mechanism #1 has one address/data pair for the whole
//! machine, so every access is one locked select-then-access pair; ECAM accesses are single
//! aligned dword loads and stores and need no lock.

use crate::table::MACHINE;
use spin::Mutex;
use tessera_abi::table::{Bdf, Range};
use tessera_policy::host_page_tables::ecam_mappable;
use tessera_policy::pci::address::{CONF1_ADDRESS_PORT, CONF1_DATA_PORT, ECAM_FUNCTION_BYTES};
use tessera_policy::pci::function::ConfigSpace;

/// The table's ECAM window if the host page tables map it (uncached, read-write).
pub const MAPPED_ECAM: Option<Range> = match MACHINE.ecam {
    Some(ecam) if ecam_mappable(ecam) => Some(ecam),
    _ => None,
};

/// A function's configuration space through the best path the machine has: ECAM where
/// [`MAPPED_ECAM`] covers its bus, else mechanism #1.
pub enum FunctionConfig {
    Ecam(EcamFunction),
    Conf1(Conf1Function),
}

/// The configuration space of `function`.
pub fn config_space(function: Bdf) -> FunctionConfig {
    let offset = u64::from(function.0) * ECAM_FUNCTION_BYTES;
    match MAPPED_ECAM {
        // The validator's `pci-outside-ecam` keeps table functions inside the window; the
        // check here keeps the pointer inside it whatever is asked.
        Some(ecam) if offset + ECAM_FUNCTION_BYTES <= ecam.size => {
            FunctionConfig::Ecam(EcamFunction {
                base: ecam.base + offset,
            })
        }
        _ => FunctionConfig::Conf1(Conf1Function(function)),
    }
}

impl ConfigSpace for FunctionConfig {
    fn read(&mut self, offset: u16) -> u32 {
        match self {
            FunctionConfig::Ecam(function) => function.read(offset),
            FunctionConfig::Conf1(function) => function.read(offset),
        }
    }

    fn write(&mut self, offset: u16, value: u32) {
        match self {
            FunctionConfig::Ecam(function) => function.write(offset, value),
            FunctionConfig::Conf1(function) => function.write(offset, value),
        }
    }

    fn extended(&self) -> bool {
        match self {
            FunctionConfig::Ecam(function) => function.extended(),
            FunctionConfig::Conf1(function) => function.extended(),
        }
    }
}

/// One function's 4 KiB of configuration space in the ECAM window.
pub struct EcamFunction {
    /// The physical (identity-mapped) address of the function's first byte.
    base: u64,
}

impl EcamFunction {
    /// The dword at `offset` (masked to an aligned dword inside the 4 KiB).
    fn pointer(&self, offset: u16) -> *mut u32 {
        (self.base + u64::from(offset & 0xffc)) as *mut u32
    }
}

impl ConfigSpace for EcamFunction {
    fn read(&mut self, offset: u16) -> u32 {
        // SAFETY: `base` is a function's 4 KiB inside MAPPED_ECAM (`config_space`), which
        // the host page tables map uncached and read-write (no partition's stage-2 tables
        // map the physical window: the validator keeps partitions' memory and windows off
        // it); the offset is masked to an aligned dword inside those 4 KiB. A configuration
        // read has no effect on memory the hypervisor uses.
        unsafe { core::ptr::read_volatile(self.pointer(offset)) }
    }

    fn write(&mut self, offset: u16, value: u32) {
        // SAFETY: as for `read`; what is written has passed the configuration-space filter
        // (tessera_policy::pci) or is the hypervisor's own discovery, reset or quiesce step.
        unsafe { core::ptr::write_volatile(self.pointer(offset), value) }
    }

    fn extended(&self) -> bool {
        true
    }
}

/// Serialises the select-then-access pairs of every core.
static CONF1: Mutex<()> = Mutex::new(());

/// The 0xCF8 value that selects dword `offset` of `function`: enable bit 31, bus 23:16,
/// device 15:11, function 10:8, register 7:2 (Figure 3-2).
fn select(function: Bdf, offset: u16) -> u32 {
    (1 << 31) | (u32::from(function.0) << 8) | u32::from(offset & 0xfc)
}

/// One function's configuration space through mechanism #1.
pub struct Conf1Function(pub Bdf);

impl ConfigSpace for Conf1Function {
    fn read(&mut self, offset: u16) -> u32 {
        if offset >= 0x100 {
            return u32::MAX;
        }
        let _guard = CONF1.lock();
        let value: u32;
        // SAFETY: 0xCF8/0xCFC are the host bridge's configuration ports, which no partition
        // owns (the partitions' accesses to them exit and come through the virtual bus);
        // the lock makes the select/data pair atomic. IN and OUT have no memory effects.
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") CONF1_ADDRESS_PORT, in("eax") select(self.0, offset), options(nomem, nostack, preserves_flags));
            core::arch::asm!("in eax, dx", in("dx") CONF1_DATA_PORT, out("eax") value, options(nomem, nostack, preserves_flags));
        }
        value
    }

    fn write(&mut self, offset: u16, value: u32) {
        if offset >= 0x100 {
            return;
        }
        let _guard = CONF1.lock();
        // SAFETY: as for `read`; the function is one the table gives a partition, and what
        // is written has passed the configuration-space filter (tessera_policy::pci), or it
        // is the bus-0 bridge above such a function alone below it, whose Bridge Control
        // the reset policy sets and clears (Secondary Bus Reset reaches only that function:
        // `tessera_policy::pci::topology::alone_below`).
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") CONF1_ADDRESS_PORT, in("eax") select(self.0, offset), options(nomem, nostack, preserves_flags));
            core::arch::asm!("out dx, eax", in("dx") CONF1_DATA_PORT, in("eax") value, options(nomem, nostack, preserves_flags));
        }
    }

    fn extended(&self) -> bool {
        false
    }
}

/// Reads `size` bytes (1, 2, 4 or 8, naturally aligned) of a passed-through function's BAR
/// memory at host-physical `address`: the hypervisor's path to registers that share a
/// trapped MSI-X table page. `None` for an address outside the uncached MMIO window of the
/// host page tables or a misaligned or odd-sized access.
pub fn bar_read(address: u64, size: u8) -> Option<u64> {
    if !bar_access_allowed(address, size) {
        return None;
    }
    // SAFETY: `address` lies in the host page tables' uncached MMIO window (checked above),
    // identity-mapped; the callers pass only addresses inside a BAR window the table gives
    // the partition whose access is being forwarded (`exits::pci`, through
    // `MsixTrap::covers`), so the read reaches that function's registers and nothing of the
    // hypervisor's. The access is naturally aligned and of a size the processor performs
    // as one bus transaction.
    unsafe {
        Some(match size {
            1 => u64::from(core::ptr::read_volatile(address as *const u8)),
            2 => u64::from(core::ptr::read_volatile(address as *const u16)),
            4 => u64::from(core::ptr::read_volatile(address as *const u32)),
            _ => core::ptr::read_volatile(address as *const u64),
        })
    }
}

/// Writes `size` bytes of `value` to a passed-through function's BAR memory at
/// host-physical `address` (as [`bar_read`]); false if refused.
pub fn bar_write(address: u64, size: u8, value: u64) -> bool {
    if !bar_access_allowed(address, size) {
        return false;
    }
    // SAFETY: as in `bar_read`; what is written has passed the MSI-X policy
    // (`tessera_policy::pci::msix`): a table entry masked or holding a checked message, or
    // a register outside the table that the partition could write directly anyway.
    unsafe {
        match size {
            1 => core::ptr::write_volatile(address as *mut u8, value as u8),
            2 => core::ptr::write_volatile(address as *mut u16, value as u16),
            4 => core::ptr::write_volatile(address as *mut u32, value as u32),
            _ => core::ptr::write_volatile(address as *mut u64, value),
        }
    }
    true
}

fn bar_access_allowed(address: u64, size: u8) -> bool {
    matches!(size, 1 | 2 | 4 | 8)
        && address.is_multiple_of(u64::from(size))
        && tessera_policy::host_page_tables::lies_in_mmio_window(address, u64::from(size))
}
