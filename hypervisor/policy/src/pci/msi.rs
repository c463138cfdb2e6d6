//! MSI and MSI-X messages a partition asks its function to send, checked before anything
//! reaches the device (docs/pci-iommu.md, "MSI and MSI-X"): the address must name the
//! local APIC interrupt window, in physical destination mode, one of the partition's own
//! cores; the data a vector in 32–255, fixed or lowest-priority delivery, edge triggered
//! (Intel SDM Vol. 3A §11.11.1 and §11.11.2; AMD APM Vol. 2 §16.7).

/// The interrupt window: address bits 31:20 are 0xFEE (SDM §11.11.1).
pub const MESSAGE_WINDOW: u64 = 0xfee0_0000;
/// Vectors 0–31 are exceptions (SDM Vol. 3A §6.2); a device message may not name one.
pub const FIRST_VECTOR: u8 = 32;

/// Why a message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiRefusal {
    /// The address is not in 0xFEE00000–0xFEEFFFFF (with the upper half 0).
    NotInterruptWindow,
    /// Destination mode (address bit 2) is logical: it could name cores by group.
    LogicalDestination,
    /// The destination APIC ID is not one of the partition's cores.
    ForeignCore { apic_id: u32 },
    /// A vector below 32.
    ExceptionVector { vector: u8 },
    /// Delivery mode other than fixed (000b) or lowest priority (001b): SMI, NMI, INIT,
    /// ExtINT would reach past the partition's interrupt handling.
    DeliveryMode { mode: u8 },
    /// Level-triggered (data bit 15): needs an EOI broadcast other partitions share.
    LevelTriggered,
    /// Reserved data bits (31:16) set.
    ReservedData,
}

/// A message that passed the checks: the destination and vector it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedMessage {
    pub apic_id: u32,
    pub vector: u8,
}

/// Checks a message address (both halves as one 64-bit value) and data against the
/// partition's cores (x2APIC IDs). Without interrupt remapping the destination is the
/// 8-bit field in address bits 19:12 (SDM §11.11.1), so only cores with IDs below 256 can
/// be named.
pub fn check_message(address: u64, data: u32, cores: &[u32]) -> Result<CheckedMessage, MsiRefusal> {
    if address & !0xf_ffff != MESSAGE_WINDOW {
        return Err(MsiRefusal::NotInterruptWindow);
    }
    if address & (1 << 2) != 0 {
        return Err(MsiRefusal::LogicalDestination);
    }
    let apic_id = ((address >> 12) & 0xff) as u32;
    if !cores.contains(&apic_id) {
        return Err(MsiRefusal::ForeignCore { apic_id });
    }
    if data >> 16 != 0 {
        return Err(MsiRefusal::ReservedData);
    }
    let vector = data as u8;
    if vector < FIRST_VECTOR {
        return Err(MsiRefusal::ExceptionVector { vector });
    }
    let mode = ((data >> 8) & 7) as u8;
    if mode > 1 {
        return Err(MsiRefusal::DeliveryMode { mode });
    }
    if data & (1 << 15) != 0 {
        return Err(MsiRefusal::LevelTriggered);
    }
    Ok(CheckedMessage { apic_id, vector })
}

/// The message the device gets for a message the guest asked for and the checks passed:
/// the one place that chooses the encoding. Without interrupt remapping it is the guest's
/// message unchanged (it names one of the partition's cores and an allowed vector); with
/// remapping, this is where a remappable-format message (an IRTE handle) will be returned
/// instead (docs/pci-iommu.md, "Encoding").
pub fn hypervisor_encoding(checked: CheckedMessage, address: u64, data: u32) -> (u64, u32) {
    let _ = checked;
    (address, data)
}

/// An MSI-X table entry's dword (PCI 3.0 §6.8.2.6–§6.8.2.9: address low, address high,
/// data, vector control) within its 16-byte entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixEntryField {
    AddressLow,
    AddressHigh,
    Data,
    VectorControl,
}

/// Which entry and field a dword access at `offset` into the MSI-X table names; `None`
/// past the table's `entries`.
pub fn msix_entry_field(offset: u64, entries: u16) -> Option<(u16, MsixEntryField)> {
    let entry = offset / 16;
    if entry >= u64::from(entries) {
        return None;
    }
    let field = match offset % 16 / 4 {
        0 => MsixEntryField::AddressLow,
        1 => MsixEntryField::AddressHigh,
        2 => MsixEntryField::Data,
        _ => MsixEntryField::VectorControl,
    };
    Some((entry as u16, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORES: [u32; 2] = [2, 3];

    fn address(apic_id: u32) -> u64 {
        MESSAGE_WINDOW | u64::from(apic_id) << 12
    }

    #[test]
    fn cases() {
        let cases: &[(u64, u32, Result<CheckedMessage, MsiRefusal>)] = &[
            (
                address(2),
                0x0041,
                Ok(CheckedMessage {
                    apic_id: 2,
                    vector: 0x41,
                }),
            ),
            // Lowest priority, redirection hint set (bit 3), still physical.
            (
                address(3) | 8,
                0x01ff,
                Ok(CheckedMessage {
                    apic_id: 3,
                    vector: 0xff,
                }),
            ),
            (
                address(0),
                0x0041,
                Err(MsiRefusal::ForeignCore { apic_id: 0 }),
            ),
            (address(2) | 4, 0x0041, Err(MsiRefusal::LogicalDestination)),
            (0xfed0_0000, 0x0041, Err(MsiRefusal::NotInterruptWindow)),
            (
                address(2) | 1 << 32,
                0x0041,
                Err(MsiRefusal::NotInterruptWindow),
            ),
            (
                address(2),
                0x001f,
                Err(MsiRefusal::ExceptionVector { vector: 0x1f }),
            ),
            (
                address(2),
                0x0241,
                Err(MsiRefusal::DeliveryMode { mode: 2 }),
            ), // SMI
            (
                address(2),
                0x0441,
                Err(MsiRefusal::DeliveryMode { mode: 4 }),
            ), // NMI
            (
                address(2),
                0x0541,
                Err(MsiRefusal::DeliveryMode { mode: 5 }),
            ), // INIT
            (
                address(2),
                0x0741,
                Err(MsiRefusal::DeliveryMode { mode: 7 }),
            ), // ExtINT
            (address(2), 0x8041, Err(MsiRefusal::LevelTriggered)),
            (address(2), 0x1_0041, Err(MsiRefusal::ReservedData)),
        ];
        for &(address, data, expected) in cases {
            assert_eq!(
                check_message(address, data, &CORES),
                expected,
                "{address:#x} {data:#x}"
            );
        }
    }

    #[test]
    fn msix_fields() {
        assert_eq!(
            msix_entry_field(0, 4),
            Some((0, MsixEntryField::AddressLow))
        );
        assert_eq!(msix_entry_field(0x18, 4), Some((1, MsixEntryField::Data)));
        assert_eq!(
            msix_entry_field(0x3c, 4),
            Some((3, MsixEntryField::VectorControl))
        );
        assert_eq!(msix_entry_field(0x40, 4), None);
    }

    proptest::proptest! {
        /// Whatever the guest writes, an accepted message names one of its cores, a
        /// non-exception vector, fixed or lowest-priority delivery, edge trigger.
        #[test]
        fn accepted_messages_stay_inside(address: u64, data: u32) {
            if let Ok(message) = check_message(address, data, &CORES) {
                proptest::prop_assert!(CORES.contains(&message.apic_id));
                proptest::prop_assert!(message.vector >= FIRST_VECTOR);
                proptest::prop_assert_eq!(address >> 20, 0xfee);
                proptest::prop_assert!((data >> 8) & 7 <= 1);
                proptest::prop_assert_eq!(data & 0xffff_8000, 0);
            }
        }
    }
}
