//! The I/O APIC's register window (82093AA datasheet §3.0): an index register (IOREGSEL,
//! offset 0x00) and a data window (IOWIN, offset 0x10), 32-bit accesses only. Shared by all
//! partitions, so every access is one locked select-then-access pair.

use spin::Mutex;

/// The IOAPIC's MMIO base, set once at boot; the lock serialises select/window pairs.
static IOAPIC: Mutex<Option<u64>> = Mutex::new(None);

/// Records the base from the table. Called once by the bootstrap core.
pub fn init(base: u64) {
    *IOAPIC.lock() = Some(base);
}

/// Runs `access` with the IOAPIC lock held; `access` gets a handle for register reads and
/// writes. Returns None when the table declares no IOAPIC.
pub fn with<R>(access: impl FnOnce(&mut Registers) -> R) -> Option<R> {
    let guard = IOAPIC.lock();
    let base = (*guard)?;
    let mut registers = Registers { base };
    Some(access(&mut registers))
}

/// Register access while the lock is held.
pub struct Registers {
    base: u64,
}

impl Registers {
    pub fn read(&mut self, register: u8) -> u32 {
        // SAFETY: `base` is the table's IOAPIC page (validated to be owned by no partition),
        // identity-mapped uncached by the boot page tables (4th GiB); IOREGSEL and IOWIN are
        // 32-bit registers at offsets 0x00 and 0x10. The lock makes the pair atomic.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, u32::from(register));
            core::ptr::read_volatile((self.base + 0x10) as *const u32)
        }
    }

    pub fn write(&mut self, register: u8, value: u32) {
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, u32::from(register));
            core::ptr::write_volatile((self.base + 0x10) as *mut u32, value);
        }
    }
}
