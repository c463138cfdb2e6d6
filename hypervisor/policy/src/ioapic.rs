//! A partition's view of the IOAPIC register window: which register accesses reach the real
//! IOAPIC, which are answered in place, and which are refused.
//!
//! The IOAPIC is programmed indirectly (82093AA datasheet §3.1, §3.2): a write of a register
//! index to IOREGSEL (offset 0x00) selects a 32-bit register that IOWIN (offset 0x10) then
//! reads or writes. The registers are 0x00 ID, 0x01 version, 0x02 arbitration ID and, for
//! each pin `n`, the low (0x10 + 2n) and high (0x11 + 2n) halves of its 64-bit redirection
//! entry (§3.2.4): vector 7:0, delivery mode 10:8, destination mode 11, delivery status 12,
//! polarity 13, remote IRR 14, trigger mode 15, mask 16, destination 63:56.
//!
//! The IOAPIC page is trapped and shared by every partition, so each keeps its own
//! [`IoapicView`] (the selected register) and the hypervisor performs each real access as
//! "write IOREGSEL, access IOWIN" under one machine-wide lock. A partition sees and programs
//! only the pins it owns; the rest read as masked. An entry the partition unmasks must name
//! one of its own cores physically: with x2APIC and no interrupt remapping the IOAPIC sends
//! compatibility-format messages whose 8-bit destination can name only x2APIC IDs 0–254, and
//! destination 0xFF is a broadcast to every core (Intel SDM vol 3 §11.12.1; Intel VT-d
//! specification §5.1.2), so it is refused like any other core outside the partition.
//! Logical destinations are refused: how x2APIC-mode local APICs match an 8-bit logical
//! destination from a compatibility-format message is not something a partition can rely on
//! (Linux programs physical destinations when it runs x2APIC without interrupt remapping).
//!
//! The invariant kept: every unmasked redirection entry of a partition's pin is fixed (or
//! NMI), physical, and aimed at one of the partition's cores. The low half is checked when a
//! write leaves the entry unmasked (against the high half in the hardware), the high half
//! when the entry in the hardware is unmasked. Masked entries may hold anything.

use bitflags::bitflags;

/// Offset of IOREGSEL in the IOAPIC page.
pub const IOREGSEL_OFFSET: u64 = 0x00;
/// Offset of IOWIN in the IOAPIC page.
pub const IOWIN_OFFSET: u64 = 0x10;

/// Register indices (82093AA §3.2).
pub const REGISTER_ID: u8 = 0x00;
pub const REGISTER_VERSION: u8 = 0x01;
pub const REGISTER_ARBITRATION: u8 = 0x02;
pub const REGISTER_REDIRECTION_TABLE: u8 = 0x10;

/// The version a partition sees: the 82093AA's 0x11, which has no EOI register (version 0x20
/// IOAPICs add one at offset 0x40, which a partition could otherwise use on other pins).
pub const VERSION: u32 = 0x11;
/// The most redirection entries the register space has room for (0x10 + 2 × 120 = 0x100).
pub const MAX_PINS: u8 = 120;

bitflags! {
    /// The single-bit fields of the low half (bits 31:0) of a redirection entry (82093AA
    /// datasheet §3.2.4). The vector (bits 7:0) and delivery mode (10:8, [`delivery_mode`])
    /// are multi-bit fields; the high half holds only the destination (bits 63:56).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct RedirectionEntryLow: u32 {
        /// Bit 11, destination mode: logical (1) or physical (0).
        const DESTINATION_LOGICAL = 1 << 11;
        /// Bit 12, delivery status (read-only): an interrupt is pending delivery
        /// ("send pending").
        const DELIVERY_STATUS = 1 << 12;
        /// Bit 13, interrupt input pin polarity: active low (1) or active high (0).
        const POLARITY_LOW = 1 << 13;
        /// Bit 14, remote IRR (read-only, level-triggered only): a local APIC accepted the
        /// interrupt and has not yet sent its EOI.
        const REMOTE_IRR = 1 << 14;
        /// Bit 15, trigger mode: level (1) or edge (0).
        const TRIGGER_LEVEL = 1 << 15;
        /// Bit 16, interrupt mask: the pin's interrupts are not delivered.
        const MASKED = 1 << 16;
    }
}

/// Whether the low half `low` of a redirection entry has its mask bit set.
const fn is_masked(low: u32) -> bool {
    RedirectionEntryLow::from_bits_retain(low).contains(RedirectionEntryLow::MASKED)
}

/// The delivery mode of a redirection entry's low half (bits 10:8).
const DELIVERY_MODE_MASK: u32 = 0b111 << 8;
/// The ID and arbitration ID live in bits 27:24.
const ID_MASK: u32 = 0x0f00_0000;

/// Delivery modes of a redirection entry (82093AA §3.2.4, bits 10:8).
pub mod delivery_mode {
    pub const FIXED: u8 = 0b000;
    pub const LOWEST_PRIORITY: u8 = 0b001;
    pub const SMI: u8 = 0b010;
    pub const NMI: u8 = 0b100;
    pub const INIT: u8 = 0b101;
    pub const EXT_INT: u8 = 0b111;
}

/// The register a register index names, given the IOAPIC's number of pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoapicRegister {
    Id,
    Version,
    Arbitration,
    /// Bits 31:0 of pin `n`'s redirection entry.
    RedirectionLow(u8),
    /// Bits 63:32 of pin `n`'s redirection entry.
    RedirectionHigh(u8),
    /// Any other index: no register.
    None,
}

impl IoapicRegister {
    /// The register `index` names on an IOAPIC with `pins` redirection entries.
    pub const fn from_index(index: u8, pins: u8) -> IoapicRegister {
        let pins = if pins > MAX_PINS { MAX_PINS } else { pins };
        match index {
            REGISTER_ID => IoapicRegister::Id,
            REGISTER_VERSION => IoapicRegister::Version,
            REGISTER_ARBITRATION => IoapicRegister::Arbitration,
            REGISTER_REDIRECTION_TABLE..=0xff => {
                let pin = (index - REGISTER_REDIRECTION_TABLE) / 2;
                if pin >= pins {
                    IoapicRegister::None
                } else if index & 1 == 0 {
                    IoapicRegister::RedirectionLow(pin)
                } else {
                    IoapicRegister::RedirectionHigh(pin)
                }
            }
            _ => IoapicRegister::None,
        }
    }
}

/// The index of the low half of pin `pin`'s redirection entry.
pub const fn redirection_low(pin: u8) -> u8 {
    REGISTER_REDIRECTION_TABLE + 2 * pin
}

/// The index of the high half of pin `pin`'s redirection entry.
pub const fn redirection_high(pin: u8) -> u8 {
    REGISTER_REDIRECTION_TABLE + 2 * pin + 1
}

/// A pin's redirection entry when its device is handed to a standby partition at
/// takeover (docs/health.md, "Hot standby"): from the entry's low half `low`, the new
/// (low, high) halves. The vector, delivery mode, polarity and trigger mode stay (the
/// standby may reuse them), the destination becomes the standby's boot core in physical
/// mode, and the pin is masked: the standby has not yet installed a handler for the
/// primary's vector, and unmasks the pin through its own view when it has. Read-only bits
/// (delivery status, remote IRR) are written as 0, which the IOAPIC ignores (82093AA
/// §3.2.4). None when `boot_core` cannot be named by an 8-bit physical destination (0xFF
/// is the broadcast; the same limit as [`IoapicView::write_window`]).
pub fn handed_over_entry(low: u32, boot_core: u32) -> Option<(u32, u32)> {
    let destination = u8::try_from(boot_core).ok().filter(|&id| id != 0xff)?;
    let kept = low
        & (0xff
            | DELIVERY_MODE_MASK
            | RedirectionEntryLow::POLARITY_LOW.bits()
            | RedirectionEntryLow::TRIGGER_LEVEL.bits());
    Some((
        kept | RedirectionEntryLow::MASKED.bits(),
        u32::from(destination) << 24,
    ))
}

/// Why a write to IOWIN is not performed. The hypervisor counts these per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoapicRefusal {
    /// The selected redirection entry belongs to a pin the partition does not own.
    PinNotOwned { pin: u8 },
    /// The entry would deliver to a core outside the partition (or to all cores, 0xFF).
    DestinationOutsidePartition { pin: u8, destination: u8 },
    /// The entry would use a logical destination.
    LogicalDestination { pin: u8 },
    /// The entry would use SMI, INIT, ExtINT or a reserved delivery mode.
    DeliveryMode { pin: u8, mode: u8 },
    /// The entry would be level-triggered on a vector that another partition's unmasked
    /// level-triggered pin (`other_pin`) already uses. A local APIC broadcasts the EOI of a
    /// level-triggered vector to every IOAPIC, which clears Remote IRR on every pin with
    /// that vector (SDM vol. 3 §11.8.5; 82093AA §3.2.4): one partition's EOI would end the
    /// other's interrupt. Level-triggered vectors are therefore unique across partitions.
    SharedLevelVector { pin: u8, vector: u8, other_pin: u8 },
}

/// What the hypervisor does with a write to IOWIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowWrite {
    /// Write `value` to register `register` of the real IOAPIC.
    Hardware { register: u8, value: u32 },
    /// Drop the write and count it.
    Refused(IoapicRefusal),
    /// Drop the write silently: the register is read-only, machine-wide (ID, arbitration) or
    /// does not exist.
    Ignored,
}

/// One partition's IOAPIC state: the register its IOREGSEL selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoapicView {
    selected: u8,
}

/// Whether `pin` is one the partition may program.
fn owns(owned_pins: &[u8], pin: u8) -> bool {
    owned_pins.contains(&pin)
}

/// Whether the physical 8-bit destination `destination` names one of `own_cpus`.
fn destination_is_own(destination: u8, own_cpus: &[u32]) -> bool {
    destination != 0xff && own_cpus.contains(&u32::from(destination))
}

impl IoapicView {
    /// IOREGSEL after reset: register 0.
    pub const fn new() -> IoapicView {
        IoapicView { selected: 0 }
    }

    /// The selected register index.
    pub const fn selected(&self) -> u8 {
        self.selected
    }

    /// A read of IOREGSEL.
    pub const fn read_select(&self) -> u32 {
        self.selected as u32
    }

    /// A write of IOREGSEL: bits 7:0 select the register, bits 31:8 are reserved.
    pub fn write_select(&mut self, value: u32) {
        self.selected = value as u8;
    }

    /// A read of IOWIN. `pins` is the real IOAPIC's number of redirection entries;
    /// `hardware` reads a register of the real IOAPIC and is called at most once, only for
    /// the partition's own pins and the ID and arbitration registers.
    pub fn read_window(
        &self,
        owned_pins: &[u8],
        pins: u8,
        hardware: impl FnOnce(u8) -> u32,
    ) -> u32 {
        let pins = pins.min(MAX_PINS);
        match IoapicRegister::from_index(self.selected, pins) {
            IoapicRegister::Id | IoapicRegister::Arbitration => hardware(self.selected) & ID_MASK,
            IoapicRegister::Version => VERSION | u32::from(pins.saturating_sub(1)) << 16,
            IoapicRegister::RedirectionLow(pin) | IoapicRegister::RedirectionHigh(pin)
                if owns(owned_pins, pin) =>
            {
                hardware(self.selected)
            }
            IoapicRegister::RedirectionLow(_) => RedirectionEntryLow::MASKED.bits(),
            IoapicRegister::RedirectionHigh(_) | IoapicRegister::None => 0,
        }
    }

    /// A write of `value` to IOWIN by a partition that owns `owned_pins` and the cores
    /// `own_cpus` (x2APIC IDs). `hardware` reads a register of the real IOAPIC (the other
    /// half of the selected entry) and is called at most once.
    ///
    /// * ID, version, arbitration and non-existent registers: [`WindowWrite::Ignored`].
    /// * A pin the partition does not own: refused.
    /// * Low half: lowest priority is rewritten to fixed (the hardware could choose any core of
    ///   a logical set). A write that leaves the entry masked passes; one that unmasks it must
    ///   use fixed or NMI delivery, a physical destination, and the high half in the hardware
    ///   must name an own core.
    /// * High half: bits 55:32 are reserved and written as zero. If the entry in the hardware is
    ///   unmasked, the entry must be acceptable with the new destination.
    pub fn write_window(
        &self,
        value: u32,
        owned_pins: &[u8],
        own_cpus: &[u32],
        pins: u8,
        mut hardware: impl FnMut(u8) -> u32,
    ) -> WindowWrite {
        let register = self.selected;
        let (pin, low) = match IoapicRegister::from_index(register, pins) {
            IoapicRegister::RedirectionLow(pin) => (pin, true),
            IoapicRegister::RedirectionHigh(pin) => (pin, false),
            IoapicRegister::Id
            | IoapicRegister::Version
            | IoapicRegister::Arbitration
            | IoapicRegister::None => return WindowWrite::Ignored,
        };
        if !owns(owned_pins, pin) {
            // A pin the partition does not own reads as masked; a write that keeps it masked
            // (any high dword, a low dword with the mask bit) changes nothing the partition
            // can see and is dropped quietly: Linux masks every pin at boot. An attempt to
            // unmask it is refused.
            return if !low || is_masked(value) {
                WindowWrite::Ignored
            } else {
                WindowWrite::Refused(IoapicRefusal::PinNotOwned { pin })
            };
        }
        let (low_value, high_value, written) = if low {
            let mode = ((value & DELIVERY_MODE_MASK) >> 8) as u8;
            let value = if mode == delivery_mode::LOWEST_PRIORITY {
                value & !DELIVERY_MODE_MASK
            } else {
                value
            };
            if is_masked(value) {
                return WindowWrite::Hardware { register, value };
            }
            (value, hardware(redirection_high(pin)), value)
        } else {
            let value = value & 0xff00_0000;
            let low_value = hardware(redirection_low(pin));
            if is_masked(low_value) {
                return WindowWrite::Hardware { register, value };
            }
            (low_value, value, value)
        };
        if let Err(refusal) = check_unmasked_entry(pin, low_value, high_value, own_cpus) {
            return WindowWrite::Refused(refusal);
        }
        let flags = RedirectionEntryLow::from_bits_retain(low_value);
        if flags.contains(RedirectionEntryLow::TRIGGER_LEVEL) {
            let vector = low_value as u8;
            let foreign_user = (0..pins)
                .filter(|&other| other != pin && !owns(owned_pins, other))
                .find(|&other| {
                    let other_low = hardware(redirection_low(other));
                    !is_masked(other_low)
                        && RedirectionEntryLow::from_bits_retain(other_low)
                            .contains(RedirectionEntryLow::TRIGGER_LEVEL)
                        && other_low as u8 == vector
                });
            if let Some(other_pin) = foreign_user {
                return WindowWrite::Refused(IoapicRefusal::SharedLevelVector {
                    pin,
                    vector,
                    other_pin,
                });
            }
        }
        WindowWrite::Hardware {
            register,
            value: written,
        }
    }
}

/// Whether an unmasked entry with these halves keeps its interrupts on `own_cpus`.
fn check_unmasked_entry(
    pin: u8,
    low: u32,
    high: u32,
    own_cpus: &[u32],
) -> Result<(), IoapicRefusal> {
    let mode = ((low & DELIVERY_MODE_MASK) >> 8) as u8;
    if !matches!(
        mode,
        delivery_mode::FIXED | delivery_mode::LOWEST_PRIORITY | delivery_mode::NMI
    ) {
        return Err(IoapicRefusal::DeliveryMode { pin, mode });
    }
    let flags = RedirectionEntryLow::from_bits_retain(low);
    if flags.contains(RedirectionEntryLow::DESTINATION_LOGICAL) {
        return Err(IoapicRefusal::LogicalDestination { pin });
    }
    let destination = (high >> 24) as u8;
    if !destination_is_own(destination, own_cpus) {
        return Err(IoapicRefusal::DestinationOutsidePartition { pin, destination });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_handed_over_entry_keeps_the_vector_masks_and_points_at_the_standby() {
        // Vector 0x31, fixed, level, active low, unmasked, logical, remote IRR set.
        let low = 0x31 | (1 << 15) | (1 << 13) | (1 << 11) | (1 << 14);
        assert_eq!(
            super::handed_over_entry(low, 5),
            Some((0x31 | (1 << 15) | (1 << 13) | (1 << 16), 5 << 24))
        );
        assert_eq!(super::handed_over_entry(low, 0xff), None);
        assert_eq!(super::handed_over_entry(low, 300), None);
    }

    use super::*;
    use std::cell::Cell;

    const MASKED: u32 = RedirectionEntryLow::MASKED.bits();
    const PINS: u8 = 24;
    const OWNED: [u8; 2] = [4, 11];
    const OWN_CPUS: [u32; 2] = [2, 3];

    fn view(register: u8) -> IoapicView {
        let mut view = IoapicView::new();
        view.write_select(u32::from(register));
        view
    }

    /// A hardware IOAPIC answering every register with `value`, counting calls.
    fn hardware(value: u32, calls: &Cell<u32>) -> impl FnMut(u8) -> u32 + '_ {
        move |_| {
            calls.set(calls.get() + 1);
            value
        }
    }

    fn no_hardware(_: u8) -> u32 {
        panic!("the hardware must not be touched")
    }

    /// A level-triggered vector another partition's unmasked level-triggered pin uses is
    /// refused (EOI broadcast, SDM vol. 3 §11.8.5); edge-triggered or masked users, and the
    /// partition's own pins, do not count.
    #[test]
    fn level_triggered_vectors_are_unique_across_partitions() {
        // Pin 7 (not owned) holds fixed, level, vector 0x31, unmasked; pin 4's high half
        // names core 3.
        let hardware = |register: u8| match register {
            register if register == redirection_low(7) => 0x8031,
            register if register == redirection_high(4) => 0x0300_0000,
            register if register == redirection_low(9) => 0x0031, // edge, same vector
            register if register == redirection_low(11) => 0x8032, // own pin
            _ => MASKED,
        };
        assert_eq!(
            view(0x18).write_window(0x8031, &OWNED, &OWN_CPUS, PINS, hardware),
            WindowWrite::Refused(IoapicRefusal::SharedLevelVector {
                pin: 4,
                vector: 0x31,
                other_pin: 7
            })
        );
        // Edge-triggered on the same vector is fine (no Remote IRR), and so is a level
        // vector only the partition's own pin uses.
        assert!(matches!(
            view(0x18).write_window(0x0031, &OWNED, &OWN_CPUS, PINS, hardware),
            WindowWrite::Hardware { .. }
        ));
        assert!(matches!(
            view(0x18).write_window(0x8032, &OWNED, &OWN_CPUS, PINS, hardware),
            WindowWrite::Hardware { .. }
        ));
    }

    #[test]
    fn register_indices() {
        assert_eq!(IoapicRegister::from_index(0, PINS), IoapicRegister::Id);
        assert_eq!(IoapicRegister::from_index(1, PINS), IoapicRegister::Version);
        assert_eq!(
            IoapicRegister::from_index(2, PINS),
            IoapicRegister::Arbitration
        );
        assert_eq!(IoapicRegister::from_index(3, PINS), IoapicRegister::None);
        assert_eq!(IoapicRegister::from_index(0x0f, PINS), IoapicRegister::None);
        assert_eq!(
            IoapicRegister::from_index(0x10, PINS),
            IoapicRegister::RedirectionLow(0)
        );
        assert_eq!(
            IoapicRegister::from_index(0x11, PINS),
            IoapicRegister::RedirectionHigh(0)
        );
        assert_eq!(
            IoapicRegister::from_index(0x3e, PINS),
            IoapicRegister::RedirectionLow(23)
        );
        assert_eq!(
            IoapicRegister::from_index(0x3f, PINS),
            IoapicRegister::RedirectionHigh(23)
        );
        assert_eq!(IoapicRegister::from_index(0x40, PINS), IoapicRegister::None);
        assert_eq!(
            IoapicRegister::from_index(0xff, 255),
            IoapicRegister::RedirectionHigh(119)
        );
        assert_eq!(redirection_low(4), 0x18);
        assert_eq!(redirection_high(4), 0x19);
    }

    #[test]
    fn select_register() {
        let mut view = IoapicView::new();
        assert_eq!(view.selected(), 0);
        view.write_select(0xdead_be19);
        assert_eq!(view.selected(), 0x19);
        assert_eq!(view.read_select(), 0x19);
        // Each partition has its own selection.
        let other = IoapicView::default();
        assert_eq!(other.selected(), 0);
    }

    #[test]
    fn reads() {
        let calls = Cell::new(0);
        // ID and arbitration come from the hardware, reserved bits cleared.
        assert_eq!(
            view(0).read_window(&OWNED, PINS, hardware(0xffff_ffff, &calls)),
            0x0f00_0000
        );
        assert_eq!(
            view(2).read_window(&OWNED, PINS, hardware(0x0200_0000, &calls)),
            0x0200_0000
        );
        // The version is the 82093AA's with the real number of entries.
        assert_eq!(view(1).read_window(&OWNED, PINS, no_hardware), 0x0017_0011);
        assert_eq!(view(1).read_window(&OWNED, 0, no_hardware), 0x11);
        assert_eq!(view(1).read_window(&OWNED, 200, no_hardware), 0x0077_0011);
        // Own pins read through.
        assert_eq!(
            view(0x18).read_window(&OWNED, PINS, hardware(0x0000_a031, &calls)),
            0xa031
        );
        assert_eq!(
            view(0x27).read_window(&OWNED, PINS, hardware(0x0200_0000, &calls)),
            0x0200_0000
        );
        assert_eq!(calls.get(), 4);
        // Other pins read as masked, zero elsewhere; no such register reads zero.
        assert_eq!(view(0x10).read_window(&OWNED, PINS, no_hardware), MASKED);
        assert_eq!(view(0x11).read_window(&OWNED, PINS, no_hardware), 0);
        assert_eq!(view(0x03).read_window(&OWNED, PINS, no_hardware), 0);
        assert_eq!(view(0x40).read_window(&OWNED, PINS, no_hardware), 0);
        // An owned pin the IOAPIC does not have is no register.
        assert_eq!(view(0x40).read_window(&[24], PINS, no_hardware), 0);
    }

    #[test]
    fn read_only_and_shared_registers_ignore_writes() {
        for register in [0x00, 0x01, 0x02, 0x03, 0x0f, 0x40, 0xff] {
            assert_eq!(
                view(register).write_window(0x0f00_0000, &OWNED, &OWN_CPUS, PINS, no_hardware),
                WindowWrite::Ignored,
                "{register:#x}"
            );
        }
    }

    #[test]
    fn pins_of_others_refuse_unmasking_and_ignore_the_rest() {
        for register in [0x10, 0x11, 0x16, 0x17, 0x3e, 0x3f] {
            let pin = (register - 0x10) / 2;
            let is_low = register % 2 == 0;
            for value in [MASKED, 0, 0x0200_0000, 0x0000_00ee] {
                let expected = if is_low && value & MASKED == 0 {
                    WindowWrite::Refused(IoapicRefusal::PinNotOwned { pin })
                } else {
                    WindowWrite::Ignored
                };
                assert_eq!(
                    view(register).write_window(value, &OWNED, &OWN_CPUS, PINS, no_hardware),
                    expected,
                    "register {register:#x} value {value:#x}"
                );
            }
        }
    }

    #[test]
    fn masked_low_writes_pass() {
        // Even with modes and destinations that would be refused unmasked.
        for value in [
            MASKED,
            MASKED | 0x0731,
            MASKED | 0x0831,
            MASKED | 0x0231,
            MASKED | 0x0531,
        ] {
            assert_eq!(
                view(0x18).write_window(value, &OWNED, &OWN_CPUS, PINS, no_hardware),
                WindowWrite::Hardware {
                    register: 0x18,
                    value
                }
            );
        }
        // Lowest priority is stored as fixed even while masked.
        assert_eq!(
            view(0x18).write_window(MASKED | 0x0131, &OWNED, &OWN_CPUS, PINS, no_hardware),
            WindowWrite::Hardware {
                register: 0x18,
                value: MASKED | 0x31
            }
        );
    }

    #[test]
    fn unmasking_checks_the_destination_in_the_hardware() {
        let calls = Cell::new(0);
        let write = |value: u32, high: u32| {
            view(0x18).write_window(value, &OWNED, &OWN_CPUS, PINS, hardware(high, &calls))
        };
        // Fixed, level, active low, to core 3: passes.
        assert_eq!(
            write(0xa031, 0x0300_0000),
            WindowWrite::Hardware {
                register: 0x18,
                value: 0xa031
            }
        );
        // Lowest priority becomes fixed; NMI stays.
        assert_eq!(
            write(0x0131, 0x0200_0000),
            WindowWrite::Hardware {
                register: 0x18,
                value: 0x31
            }
        );
        assert_eq!(
            write(0x0400, 0x0200_0000),
            WindowWrite::Hardware {
                register: 0x18,
                value: 0x0400
            }
        );
        // The high half names core 5 (another partition), or 0xFF (everyone).
        for destination in [0u8, 1, 4, 5, 0xff] {
            assert_eq!(
                write(0xa031, u32::from(destination) << 24),
                WindowWrite::Refused(IoapicRefusal::DestinationOutsidePartition {
                    pin: 4,
                    destination
                })
            );
        }
        // Logical destinations, and SMI, INIT, ExtINT and the reserved modes.
        assert_eq!(
            write(0x0831, 0x0300_0000),
            WindowWrite::Refused(IoapicRefusal::LogicalDestination { pin: 4 })
        );
        for mode in [2u8, 3, 5, 6, 7] {
            assert_eq!(
                write(u32::from(mode) << 8 | 0x31, 0x0300_0000),
                WindowWrite::Refused(IoapicRefusal::DeliveryMode { pin: 4, mode })
            );
        }
        // The one level-triggered write that passes also reads the 22 pins the partition does
        // not own (no shared level vector among them).
        assert_eq!(calls.get(), 2 + 1 + 5 + 1 + 5 + 22);
    }

    #[test]
    fn destination_writes() {
        let calls = Cell::new(0);
        let write = |value: u32, low: u32| {
            view(0x27).write_window(value, &OWNED, &OWN_CPUS, PINS, hardware(low, &calls))
        };
        // Entry masked in the hardware: any destination may be staged; reserved bits cleared.
        assert_eq!(
            write(0x05ff_ffff, MASKED | 0x31),
            WindowWrite::Hardware {
                register: 0x27,
                value: 0x0500_0000
            }
        );
        // Entry live: only own cores.
        assert_eq!(
            write(0x0200_0000, 0x31),
            WindowWrite::Hardware {
                register: 0x27,
                value: 0x0200_0000
            }
        );
        for destination in [0u8, 5, 0xff] {
            assert_eq!(
                write(u32::from(destination) << 24, 0x31),
                WindowWrite::Refused(IoapicRefusal::DestinationOutsidePartition {
                    pin: 11,
                    destination
                })
            );
        }
        // A live entry left logical or ExtINT (by firmware) cannot be re-aimed.
        assert_eq!(
            write(0x0200_0000, 0x0831),
            WindowWrite::Refused(IoapicRefusal::LogicalDestination { pin: 11 })
        );
        assert_eq!(
            write(0x0200_0000, 0x0700),
            WindowWrite::Refused(IoapicRefusal::DeliveryMode { pin: 11, mode: 7 })
        );
        assert_eq!(calls.get(), 7);
    }

    #[test]
    fn cores_above_254_cannot_be_named() {
        // A partition whose only core has x2APIC ID 255 or 300 can unmask nothing.
        for own in [[255u32], [300]] {
            let calls = Cell::new(0);
            let result =
                view(0x18).write_window(0x31, &OWNED, &own, PINS, hardware(0xff00_0000, &calls));
            assert_eq!(
                result,
                WindowWrite::Refused(IoapicRefusal::DestinationOutsidePartition {
                    pin: 4,
                    destination: 0xff
                })
            );
        }
    }

    /// Linux's sequence for one entry: mask, write high, write low unmasked; then re-aim.
    #[test]
    fn a_typical_programming_sequence() {
        let mut hardware_entry = [MASKED | 0x0700, 0u32]; // firmware: ExtINT, masked
        let mut view = IoapicView::new();
        let apply = |view: &IoapicView, value: u32, entry: &mut [u32; 2]| {
            let snapshot = *entry;
            let result = view.write_window(value, &OWNED, &OWN_CPUS, PINS, |register| {
                snapshot[usize::from(register & 1)]
            });
            if let WindowWrite::Hardware { register, value } = result {
                entry[usize::from(register & 1)] = value;
            }
            result
        };
        view.write_select(0x18);
        assert!(matches!(
            apply(&view, MASKED | 0x0700, &mut hardware_entry),
            WindowWrite::Hardware { .. }
        ));
        view.write_select(0x19);
        assert!(matches!(
            apply(&view, 0x0300_0000, &mut hardware_entry),
            WindowWrite::Hardware { .. }
        ));
        view.write_select(0x18);
        assert!(matches!(
            apply(&view, 0x0031, &mut hardware_entry),
            WindowWrite::Hardware { .. }
        ));
        assert_eq!(hardware_entry, [0x31, 0x0300_0000]);
        // Re-aiming the live entry at another partition's core fails and changes nothing.
        view.write_select(0x19);
        assert!(matches!(
            apply(&view, 0x0500_0000, &mut hardware_entry),
            WindowWrite::Refused(_)
        ));
        assert_eq!(hardware_entry, [0x31, 0x0300_0000]);
    }
}
