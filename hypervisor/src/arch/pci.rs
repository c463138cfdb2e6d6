//! PCI configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): the address port 0xCF8
//! and the data port 0xCFC, the hypervisor's own path to the configuration space of the
//! functions the table passes through. One address/data pair for the whole machine, so
//! every access is one locked select-then-access pair.
//!
//! Only the first 256 bytes of a function are reachable this way; extended space would
//! need the ECAM window mapped uncached and writable in the host page tables, which it is
//! not (docs/pci-iommu.md, Status).

use spin::Mutex;
use tessera_abi::table::Bdf;
use tessera_policy::pci::address::{CONF1_ADDRESS_PORT, CONF1_DATA_PORT};
use tessera_policy::pci::function::ConfigSpace;

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
        // is written has passed the configuration-space filter (tessera_policy::pci).
        unsafe {
            core::arch::asm!("out dx, eax", in("dx") CONF1_ADDRESS_PORT, in("eax") select(self.0, offset), options(nomem, nostack, preserves_flags));
            core::arch::asm!("out dx, eax", in("dx") CONF1_DATA_PORT, in("eax") value, options(nomem, nostack, preserves_flags));
        }
    }

    fn extended(&self) -> bool {
        false
    }
}
