//! The I/O APIC at guest-physical 0xFEC00000: register select (IOREGSEL, offset 0) and
//! window (IOWIN, offset 0x10), both 32-bit (82093AA data sheet; Intel ICH/PCH
//! data sheets).
//!
//! Under Tessera the page is trapped: a partition sees and programs only the
//! redirection entries of the pins its devices own, and only toward its own cores. The
//! accesses here are plain 32-bit `MOV r/m32, r32` and `MOV r32, r/m32`, the forms the
//! hypervisor's decoder handles; the identity map maps the page uncached (see `boot`).
//! A select/window pair is not atomic, so the pair runs under a lock.

use crate::sync::InterruptSafeLock;

/// Guest-physical (and, identity-mapped, virtual) base of the I/O APIC.
pub const BASE: u64 = 0xfec0_0000;
const SELECT: u64 = BASE;
const WINDOW: u64 = BASE + 0x10;
/// Register indices.
pub const REGISTER_ID: u32 = 0x00;
pub const REGISTER_VERSION: u32 = 0x01;
/// Redirection entry of pin n: low dword at 0x10 + 2n, high dword at 0x11 + 2n.
const REGISTER_FIRST_REDIRECTION: u32 = 0x10;

/// Redirection-entry bits.
const ENTRY_MASKED: u64 = 1 << 16;
const ENTRY_LEVEL_TRIGGERED: u64 = 1 << 15;
const ENTRY_ACTIVE_LOW: u64 = 1 << 13;
const ENTRY_LOGICAL_DESTINATION: u64 = 1 << 11;

/// Serialises select/window pairs between cores and interrupt handlers.
static REGISTER_LOCK: InterruptSafeLock<()> = InterruptSafeLock::new(());

fn write_raw(address: u64, value: u32) {
    // SAFETY: BASE is the I/O APIC (under Tessera a trapped page no partition memory
    // may overlap), identity-mapped uncached; a 32-bit store to IOREGSEL or IOWIN only
    // programs interrupt routing, never memory of this program.
    unsafe {
        core::arch::asm!("mov dword ptr [{address}], {value:e}",
            address = in(reg) address, value = in(reg) value,
            options(nostack, preserves_flags));
    }
}

fn read_raw(address: u64) -> u32 {
    let value: u32;
    // SAFETY: as for `write_raw`; a 32-bit load from IOWIN has no side effects.
    unsafe {
        core::arch::asm!("mov {value:e}, dword ptr [{address}]",
            address = in(reg) address, value = lateout(reg) value,
            options(nostack, preserves_flags));
    }
    value
}

/// Reads I/O APIC register `index`.
pub fn read_register(index: u32) -> u32 {
    let _guard = REGISTER_LOCK.lock();
    write_raw(SELECT, index);
    read_raw(WINDOW)
}

/// Writes I/O APIC register `index`.
pub fn write_register(index: u32, value: u32) {
    let _guard = REGISTER_LOCK.lock();
    write_raw(SELECT, index);
    write_raw(WINDOW, value);
}

/// The number of pins (version register bits 23:16 + 1).
pub fn pin_count() -> u32 {
    ((read_register(REGISTER_VERSION) >> 16) & 0xff) + 1
}

/// A 64-bit redirection entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectionEntry(pub u64);

impl RedirectionEntry {
    /// Fixed delivery of `vector` to the core with APIC ID `destination` (physical
    /// destination), edge-triggered, active high (ISA devices), unmasked.
    pub fn fixed(vector: u8, destination: u32) -> RedirectionEntry {
        RedirectionEntry(u64::from(vector) | (u64::from(destination & 0xff) << 56))
    }

    /// The same entry with the mask bit set.
    pub fn masked(self) -> RedirectionEntry {
        RedirectionEntry(self.0 | ENTRY_MASKED)
    }

    pub fn vector(self) -> u8 {
        self.0 as u8
    }

    pub fn is_masked(self) -> bool {
        self.0 & ENTRY_MASKED != 0
    }

    pub fn is_level_triggered(self) -> bool {
        self.0 & ENTRY_LEVEL_TRIGGERED != 0
    }

    pub fn is_active_low(self) -> bool {
        self.0 & ENTRY_ACTIVE_LOW != 0
    }

    pub fn is_logical(self) -> bool {
        self.0 & ENTRY_LOGICAL_DESTINATION != 0
    }

    /// The destination field (bits 63:56).
    pub fn destination(self) -> u32 {
        (self.0 >> 56) as u32
    }
}

/// Reads the redirection entry of `pin`.
pub fn redirection_entry(pin: u8) -> RedirectionEntry {
    let index = REGISTER_FIRST_REDIRECTION + 2 * u32::from(pin);
    let _guard = REGISTER_LOCK.lock();
    write_raw(SELECT, index);
    let low = read_raw(WINDOW);
    write_raw(SELECT, index + 1);
    let high = read_raw(WINDOW);
    RedirectionEntry((u64::from(high) << 32) | u64::from(low))
}

/// Writes the redirection entry of `pin`: the high half (destination) first, then the
/// low half (vector, mode, mask), so the entry goes live complete.
pub fn set_redirection_entry(pin: u8, entry: RedirectionEntry) {
    let index = REGISTER_FIRST_REDIRECTION + 2 * u32::from(pin);
    let _guard = REGISTER_LOCK.lock();
    write_raw(SELECT, index + 1);
    write_raw(WINDOW, (entry.0 >> 32) as u32);
    write_raw(SELECT, index);
    write_raw(WINDOW, entry.0 as u32);
}
