//! MSI-X (PCI Local Bus 3.0 §6.8.2): where a function's table and PBA lie, which 4 KiB pages
//! of its BAR the hypervisor traps to hold the table, how a trapped access decodes, and the
//! table's shadow — the guest's entries, each checked by [`msi::check_message`] before
//! anything reaches the device, and the ordered hardware writes that keep every hardware
//! entry either masked or holding a checked message as its route gives it
//! ([`MessageRoute`]: unchanged, or through an interrupt-remapping entry)
//! (docs/pci-iommu.md, "MSI and MSI-X").

use super::msi::{self, MessageRoute, MsiRefusal, MsixEntryField};

/// Bytes of one table entry (§6.8.2.6–§6.8.2.9).
pub const ENTRY_BYTES: u64 = 16;
/// The trap granularity: stage-2 maps and unmaps 4 KiB pages.
pub const PAGE_BYTES: u64 = 4096;
/// Vector control bit 0: the entry is masked (§6.8.2.9; set after reset).
pub const VECTOR_MASKED: u32 = 1;
/// Byte offsets of an entry's dwords.
pub const ADDRESS_LOW: u64 = 0;
pub const ADDRESS_HIGH: u64 = 4;
pub const DATA: u64 = 8;
pub const VECTOR_CONTROL: u64 = 12;

/// Where the table and the PBA lie, from the capability (§6.8.2.3–§6.8.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Table size (the field holds N − 1).
    pub entries: u16,
    /// BAR indicator (0–5) and byte offset (8-byte aligned) of the table.
    pub table_bar: u8,
    pub table_offset: u32,
    /// The same for the pending bit array.
    pub pba_bar: u8,
    pub pba_offset: u32,
}

/// Why a function's MSI-X capability cannot be trapped (a boot refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixLayoutError {
    /// A BAR indicator of 6 or 7 (reserved) or naming no memory BAR of the function.
    NoSuchBar { bar: u8 },
    /// The table runs past the end of its BAR.
    TableOutsideBar,
    /// The table's BAR lies where the hypervisor cannot reach it (outside the uncached MMIO
    /// window of its page tables).
    Unreachable { base: u64 },
}

/// A guest access to a trapped page, by what it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrappedAccess {
    /// A dword of a table entry.
    Entry { entry: u16, field: MsixEntryField },
    /// The PBA (read-only to the guest: reads forwarded, writes dropped).
    Pba,
    /// Something else the device keeps in the trapped page: forwarded both ways.
    Other,
    /// An access that is not one aligned dword inside the table (straddling entries or
    /// fields, or wider than 4 bytes): reads all-ones, writes dropped.
    Malformed,
}

impl MsixLayout {
    /// Decodes the capability's first three dwords: message control in bits 31:16 of
    /// `first`, then the table and PBA offset/BIR registers (BIR in bits 2:0, the offset
    /// in bits 31:3).
    pub fn decode(first: u32, table: u32, pba: u32) -> Self {
        Self {
            entries: ((first >> 16) & 0x7ff) as u16 + 1,
            table_bar: (table & 7) as u8,
            table_offset: table & !7,
            pba_bar: (pba & 7) as u8,
            pba_offset: pba & !7,
        }
    }

    /// Bytes of the table.
    pub fn table_bytes(&self) -> u64 {
        u64::from(self.entries) * ENTRY_BYTES
    }

    /// Bytes of the PBA: one bit per entry, in whole qwords (§6.8.2.10).
    pub fn pba_bytes(&self) -> u64 {
        u64::from(self.entries).div_ceil(64) * 8
    }

    /// The 4 KiB pages that hold the table, as `(offset into its BAR, bytes)`, both
    /// page-aligned; checked against the BAR's `bar_size`.
    pub fn trapped_pages(&self, bar_size: u64) -> Result<(u64, u64), MsixLayoutError> {
        let start = u64::from(self.table_offset);
        let end = start + self.table_bytes();
        if end > bar_size {
            return Err(MsixLayoutError::TableOutsideBar);
        }
        let first = start & !(PAGE_BYTES - 1);
        let last = end.next_multiple_of(PAGE_BYTES);
        Ok((first, last - first))
    }

    /// What an access of `size` bytes at `offset` into BAR `bar` touches (the access lies
    /// in a trapped page of the table's BAR).
    pub fn classify(&self, bar: u8, offset: u64, size: u8) -> TrappedAccess {
        let table = u64::from(self.table_offset);
        let within =
            |start: u64, bytes: u64| offset < start + bytes && offset + u64::from(size) > start;
        if bar == self.table_bar && within(table, self.table_bytes()) {
            if size != 4 || !offset.is_multiple_of(4) {
                return TrappedAccess::Malformed;
            }
            return match msi::msix_entry_field(offset - table, self.entries) {
                Some((entry, field)) => TrappedAccess::Entry { entry, field },
                None => TrappedAccess::Malformed,
            };
        }
        if bar == self.pba_bar && within(u64::from(self.pba_offset), self.pba_bytes()) {
            return TrappedAccess::Pba;
        }
        TrappedAccess::Other
    }
}

/// One entry as the guest sees it (the shadow); the device holds the hypervisor's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixEntry {
    pub address_low: u32,
    pub address_high: u32,
    pub data: u32,
    pub vector_control: u32,
}

impl MsixEntry {
    /// An entry after reset: no message, masked (§6.8.2.9).
    pub const RESET: Self = Self {
        address_low: 0,
        address_high: 0,
        data: 0,
        vector_control: VECTOR_MASKED,
    };

    /// The guest's view of `field`.
    pub fn read(&self, field: MsixEntryField) -> u32 {
        match field {
            MsixEntryField::AddressLow => self.address_low,
            MsixEntryField::AddressHigh => self.address_high,
            MsixEntryField::Data => self.data,
            MsixEntryField::VectorControl => self.vector_control,
        }
    }

    /// Stores a guest write of `field`. Address bits 1:0 are reserved (read 0); of vector
    /// control only the mask bit is defined (§6.8.2.6, §6.8.2.9).
    pub fn write(&mut self, field: MsixEntryField, value: u32) {
        match field {
            MsixEntryField::AddressLow => self.address_low = value & !3,
            MsixEntryField::AddressHigh => self.address_high = value,
            MsixEntryField::Data => self.data = value,
            MsixEntryField::VectorControl => self.vector_control = value & VECTOR_MASKED,
        }
    }

    fn masked(&self) -> bool {
        self.vector_control & VECTOR_MASKED != 0
    }
}

/// Why an entry the guest unmasked stays masked in hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixRefusal {
    /// The entry is beyond the vector count the table grants the function.
    NotGranted { entry: u16 },
    /// The message fails the MSI checks.
    Message { entry: u16, refusal: MsiRefusal },
}

/// The hardware writes that bring one device entry in line with its shadow, in order:
/// `(byte offset in the entry, value)`. At most four: mask, address low, address high, data
/// and unmask never all occur (a masked target needs only the mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardwareUpdate {
    writes: [(u64, u32); 5],
    count: usize,
}

impl HardwareUpdate {
    fn push(&mut self, offset: u64, value: u32) {
        self.writes[self.count] = (offset, value);
        self.count += 1;
    }
    /// The writes, in the order they must reach the device.
    pub fn writes(&self) -> &[(u64, u32)] {
        &self.writes[..self.count]
    }
}

/// What the device's entry `entry` must hold for the shadow `shadow`: masked unless the
/// guest unmasked it, the table grants it (`entry < granted`) and its message passes the
/// checks for the partition's `cores`; then the checked message in the hypervisor's
/// encoding, written while the entry is masked, and the entry unmasked last (§6.8.2.9:
/// software changes an entry's message only while it is masked; a device never sees a half
/// written message unmasked).
pub fn hardware_update(
    entry: u16,
    shadow: &MsixEntry,
    granted: u16,
    cores: &[u32],
    route: &mut impl MessageRoute,
) -> (HardwareUpdate, Option<MsixRefusal>) {
    let mut update = HardwareUpdate::default();
    update.push(VECTOR_CONTROL, VECTOR_MASKED);
    if shadow.masked() {
        return (update, None);
    }
    if entry >= granted {
        return (update, Some(MsixRefusal::NotGranted { entry }));
    }
    let address = u64::from(shadow.address_high) << 32 | u64::from(shadow.address_low);
    let routed = msi::check_message(address, shadow.data, cores)
        .and_then(|checked| route.route(checked, entry, 1, (address, shadow.data)));
    match routed {
        Err(refusal) => (update, Some(MsixRefusal::Message { entry, refusal })),
        Ok((address, data)) => {
            update.push(ADDRESS_LOW, address as u32);
            update.push(ADDRESS_HIGH, (address >> 32) as u32);
            update.push(DATA, data);
            update.push(VECTOR_CONTROL, 0);
            (update, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::msi::Unremapped;
    use proptest::prelude::*;
    use std::vec::Vec;

    const CORES: [u32; 2] = [1, 2];

    /// QEMU's e1000e: 5 entries in BAR 3 at 0, PBA in BAR 3 at 0x2000.
    fn e1000e() -> MsixLayout {
        MsixLayout::decode(0x0004_0011 | 0xc000_0000, 0x0000_0003, 0x0000_2003)
    }

    #[test]
    fn decodes_the_capability() {
        assert_eq!(
            e1000e(),
            MsixLayout {
                entries: 5,
                table_bar: 3,
                table_offset: 0,
                pba_bar: 3,
                pba_offset: 0x2000,
            }
        );
        assert_eq!(e1000e().pba_bytes(), 8);
        let full = MsixLayout::decode(0x07ff_0000, 0x1000, 0x9000);
        assert_eq!(full.entries, 2048);
        assert_eq!(full.table_bytes(), 0x8000);
        assert_eq!(full.pba_bytes(), 256);
    }

    #[test]
    fn trapped_pages_cover_the_table_and_no_more() {
        assert_eq!(e1000e().trapped_pages(0x4000), Ok((0, 0x1000)));
        // A table starting mid-page and ending in the next one: both pages.
        let layout = MsixLayout::decode(0x001f_0000, 0x0f80, 0x3000);
        assert_eq!(layout.trapped_pages(0x4000), Ok((0, 0x2000)));
        // Past the BAR's end.
        assert_eq!(
            layout.trapped_pages(0x1000),
            Err(MsixLayoutError::TableOutsideBar)
        );
    }

    #[test]
    fn classifies_trapped_accesses() {
        let layout = MsixLayout::decode(0x0004_0000, 0x0800, 0x0c00);
        assert_eq!(
            layout.classify(0, 0x800 + 16 + 8, 4),
            TrappedAccess::Entry {
                entry: 1,
                field: MsixEntryField::Data
            }
        );
        assert_eq!(layout.classify(0, 0x800 + 2, 4), TrappedAccess::Malformed);
        assert_eq!(layout.classify(0, 0x800, 8), TrappedAccess::Malformed);
        // Registers next to the table in the same page.
        assert_eq!(layout.classify(0, 0x7fc, 4), TrappedAccess::Other);
        assert_eq!(layout.classify(0, 0x800 + 5 * 16, 4), TrappedAccess::Other);
        assert_eq!(layout.classify(0, 0xc00, 4), TrappedAccess::Pba);
        // The same offsets in another BAR are not the table's.
        assert_eq!(layout.classify(1, 0x800, 4), TrappedAccess::Other);
    }

    fn message(apic_id: u32, vector: u32) -> MsixEntry {
        MsixEntry {
            address_low: 0xfee0_0000 | apic_id << 12,
            address_high: 0,
            data: vector,
            vector_control: 0,
        }
    }

    #[test]
    fn a_checked_unmasked_entry_is_written_masked_then_unmasked() {
        let (update, refusal) = hardware_update(0, &message(2, 0x41), 5, &CORES, &mut Unremapped);
        assert_eq!(refusal, None);
        assert_eq!(
            update.writes(),
            [
                (VECTOR_CONTROL, 1),
                (ADDRESS_LOW, 0xfee0_2000),
                (ADDRESS_HIGH, 0),
                (DATA, 0x41),
                (VECTOR_CONTROL, 0)
            ]
        );
    }

    #[test]
    fn refused_and_masked_entries_stay_masked() {
        let masked = MsixEntry {
            vector_control: 1,
            ..message(2, 0x41)
        };
        assert_eq!(
            hardware_update(0, &masked, 5, &CORES, &mut Unremapped)
                .0
                .writes(),
            [(VECTOR_CONTROL, 1)]
        );
        let (update, refusal) = hardware_update(0, &message(3, 0x41), 5, &CORES, &mut Unremapped);
        assert_eq!(update.writes(), [(VECTOR_CONTROL, 1)]);
        assert_eq!(
            refusal,
            Some(MsixRefusal::Message {
                entry: 0,
                refusal: MsiRefusal::ForeignCore { apic_id: 3 }
            })
        );
        let (update, refusal) = hardware_update(5, &message(2, 0x41), 5, &CORES, &mut Unremapped);
        assert_eq!(update.writes(), [(VECTOR_CONTROL, 1)]);
        assert_eq!(refusal, Some(MsixRefusal::NotGranted { entry: 5 }));
    }

    #[test]
    fn the_shadow_keeps_what_the_guest_wrote() {
        let mut entry = MsixEntry::RESET;
        entry.write(MsixEntryField::AddressLow, 0xfee0_1003);
        entry.write(MsixEntryField::VectorControl, 0xffff_fffe);
        assert_eq!(entry.read(MsixEntryField::AddressLow), 0xfee0_1000);
        assert_eq!(entry.read(MsixEntryField::VectorControl), 0);
    }

    /// A model device entry: what the hardware holds after applying writes in order.
    fn apply(device: &mut MsixEntry, update: &HardwareUpdate) -> Vec<MsixEntry> {
        let mut states = Vec::new();
        for &(offset, value) in update.writes() {
            match offset {
                ADDRESS_LOW => device.address_low = value,
                ADDRESS_HIGH => device.address_high = value,
                DATA => device.data = value,
                _ => device.vector_control = value,
            }
            states.push(*device);
        }
        states
    }

    proptest! {
        /// Whatever the guest writes, in whatever order, the device entry is never unmasked
        /// with a message that fails the checks — not even between two of the writes.
        #[test]
        fn the_device_never_holds_an_unchecked_unmasked_message(
            writes in proptest::collection::vec((0u8..4, any::<u32>(), 0u32..4, 0u32..64), 1..40),
            entry in 0u16..8,
        ) {
            let mut shadow = MsixEntry::RESET;
            let mut device = MsixEntry::RESET;
            for (field, raw, apic_id, vector) in writes {
                let field = match field {
                    0 => MsixEntryField::AddressLow,
                    1 => MsixEntryField::AddressHigh,
                    2 => MsixEntryField::Data,
                    _ => MsixEntryField::VectorControl,
                };
                // Half the values look like messages, so checked ones occur.
                let value = match (field, raw % 2) {
                    (MsixEntryField::AddressLow, 0) => 0xfee0_0000 | apic_id << 12,
                    (MsixEntryField::AddressHigh, 0) => 0,
                    (MsixEntryField::Data, 0) => vector,
                    (MsixEntryField::VectorControl, 0) => raw >> 1 & 1,
                    _ => raw,
                };
                shadow.write(field, value);
                let (update, _) = hardware_update(entry, &shadow, 5, &CORES, &mut Unremapped);
                for state in apply(&mut device, &update) {
                    if !state.masked() {
                        let address = u64::from(state.address_high) << 32 | u64::from(state.address_low);
                        prop_assert!(entry < 5);
                        prop_assert!(msi::check_message(address, state.data, &CORES).is_ok());
                    }
                }
            }
        }
    }
}
