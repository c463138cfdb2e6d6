//! The I/O APIC's register window (82093AA datasheet §3.0): an index register (IOREGSEL,
//! offset 0x00) and a data window (IOWIN, offset 0x10), 32-bit accesses only. Shared by all
//! partitions, so every access is one locked select-then-access pair.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use spin::Mutex;

/// Whether the table's IOAPIC is remapped (VT-d interrupt remapping on): its redirection
/// entries then hold the remappable format in hardware, and `SHADOW` the compatibility
/// format the rest of the hypervisor reads and writes (VT-d §5.1.5.1).
static REMAPPED: AtomicBool = AtomicBool::new(false);
/// Per pin, the low and high words as the hypervisor last wrote them; only touched with
/// the IOAPIC lock held.
static SHADOW: [[AtomicU32; 2]; 256] = [const { [AtomicU32::new(0), AtomicU32::new(0)] }; 256];
/// Delivery Status (bit 12) and Remote IRR (bit 14): read-only state of the hardware
/// entry, read from it even when remapped.
const HARDWARE_STATE: u32 = (1 << 12) | (1 << 14);

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
    let mut registers = Registers {
        base,
        remapped: REMAPPED.load(Ordering::Acquire),
    };
    Some(access(&mut registers))
}

/// Switches the table's IOAPIC to remapped entries (VT-d): every pin's entry is read into
/// the shadow and written back through `remap`, which programs the pin's remapping entry
/// and returns the remappable form (or `None`: remapping is off, nothing changes).
pub fn start_remapping(pins: u8, remap: RemapPin) {
    let guard = IOAPIC.lock();
    let Some(base) = *guard else {
        return;
    };
    let mut registers = Registers {
        base,
        remapped: false,
    };
    for pin in 0..pins {
        let low = registers.read_raw(0x10 + 2 * pin);
        let high = registers.read_raw(0x11 + 2 * pin);
        SHADOW[usize::from(pin)][0].store(low & !HARDWARE_STATE, Ordering::Relaxed);
        SHADOW[usize::from(pin)][1].store(high, Ordering::Relaxed);
        if let Some((new_low, new_high)) = remap(pin, low, high) {
            registers.write_raw(0x10 + 2 * pin, low | MASKED);
            registers.write_raw(0x11 + 2 * pin, new_high);
            registers.write_raw(0x10 + 2 * pin, new_low);
        } else {
            return;
        }
    }
    REMAP.call_once(|| remap);
    REMAPPED.store(true, Ordering::Release);
}

/// The IOMMU's remapping of a pin: (pin, compatibility low, high) → the hardware words,
/// or `None` when the IOMMU does not remap the I/O APIC.
pub type RemapPin = fn(u8, u32, u32) -> Option<(u32, u32)>;

static REMAP: spin::Once<RemapPin> = spin::Once::new();

/// Register access while the lock is held.
pub struct Registers {
    base: u64,
    /// Redirection entries go through the shadow and the remapping entries.
    remapped: bool,
}

/// The pin and half (0 low, 1 high) of a redirection register index (82093AA §3.2.4:
/// 0x10 + 2 × pin is the low word).
fn redirection(register: u8) -> Option<(usize, usize)> {
    (register >= 0x10).then(|| {
        (
            usize::from((register - 0x10) / 2),
            usize::from(register & 1),
        )
    })
}

impl Registers {
    pub fn read(&mut self, register: u8) -> u32 {
        match redirection(register).filter(|_| self.remapped) {
            Some((pin, 0)) => {
                SHADOW[pin][0].load(Ordering::Relaxed) | (self.read_raw(register) & HARDWARE_STATE)
            }
            Some((pin, _)) => SHADOW[pin][1].load(Ordering::Relaxed),
            None => self.read_raw(register),
        }
    }

    pub fn write(&mut self, register: u8, value: u32) {
        let remap = REMAP.get().copied();
        let (Some((pin, half)), Some(remap)) =
            (redirection(register).filter(|_| self.remapped), remap)
        else {
            self.write_raw(register, value);
            return;
        };
        SHADOW[pin][half].store(value & !HARDWARE_STATE, Ordering::Relaxed);
        let low = SHADOW[pin][0].load(Ordering::Relaxed);
        let high = SHADOW[pin][1].load(Ordering::Relaxed);
        let low_register = 0x10 + 2 * pin as u8;
        // Masked while the remapping entry changes, so the pin never fires half-written.
        let current = self.read_raw(low_register);
        self.write_raw(low_register, current | MASKED);
        match remap(pin as u8, low, high) {
            Some((new_low, new_high)) => {
                self.write_raw(low_register + 1, new_high);
                self.write_raw(low_register, new_low);
            }
            None => self.write_raw(register, value),
        }
    }

    fn read_raw(&mut self, register: u8) -> u32 {
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

    fn write_raw(&mut self, register: u8, value: u32) {
        // SAFETY: as in `read_raw`.
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
    let mut registers = Registers {
        base,
        remapped: false,
    };
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
