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
        // SAFETY: `base` is an IOAPIC register window in the fourth GiB, identity-mapped
        // uncached by the boot page tables: the table's (validated to be owned by no
        // partition; the lock makes the select/window pair atomic), or one the firmware
        // lists, checked by `mask_every_pin_at` and touched only by the bootstrap core before
        // any other core runs. IOREGSEL and IOWIN are 32-bit registers at 0x00 and 0x10.
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

/// Masks every redirection entry of an IOAPIC that no partition owns (82093AA §3.2.4:
/// bit 16 of the low word). Returns how many pins it has, or None when `base` does not lie
/// in the MMIO window (then it is not touched: it could be RAM).
pub fn mask_every_pin_at(base: u64) -> Option<u8> {
    // The uncached MMIO window of the boot page tables (the fourth GiB), where every IOAPIC
    // the firmware can describe lies on PC platforms.
    if !tessera_policy::host_page_tables::lies_in_mmio_window(base, 0x20)
        || !base.is_multiple_of(16)
    {
        return None;
    }
    let mut registers = Registers { base };
    // Version register (index 1), bits 23:16: the highest redirection entry.
    let pins = ((registers.read(1) >> 16) & 0xFF) as u8 + 1;
    for pin in 0..pins {
        let low = 0x10 + 2 * pin;
        let value = registers.read(low);
        registers.write(low, value | MASKED);
    }
    Some(pins)
}

/// Bit 16 of a redirection entry's low word: the pin is masked.
const MASKED: u32 = 1 << 16;
