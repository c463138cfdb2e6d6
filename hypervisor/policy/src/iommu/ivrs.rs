//! The firmware's IVRS table (I/O Virtualization Reporting Structure, AMD I/O
//! Virtualization Technology (IOMMU) Specification rev. 3.x, §5): the AMD-Vi units of the
//! machine (IVHD blocks: each unit's register base and the device IDs it translates) and
//! the special devices (I/O APICs, HPET) whose requester IDs the hypervisor must know.
//!
//! Everything is read through [`crate::bytes`], so a truncated or hostile table is an
//! [`IvrsError`], never a panic.

use crate::bytes::{read, slice_at, u16_at, u32_at, u64_at};

/// Why an IVRS table could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IvrsError {
    /// Not an IVRS table, or its length field disagrees with the bytes.
    NotIvrs,
    /// A block or device entry runs past its end.
    Truncated { offset: usize },
    /// A device entry of a type this reader does not know the size of.
    UnknownEntry { offset: usize, kind: u8 },
    /// An end-of-range entry without a start, or a start without an end.
    UnpairedRange { offset: usize },
}

/// The ACPI header (36 bytes), IVinfo (4) and a reserved quadword: blocks start at 48.
const FIRST_BLOCK: usize = 48;

/// An IVRS table whose header was checked.
#[derive(Clone, Copy, Debug)]
pub struct Ivrs<'a> {
    bytes: &'a [u8],
}

impl<'a> Ivrs<'a> {
    pub fn parse(table: &'a [u8]) -> Result<Self, IvrsError> {
        let length = u32_at(table, 4).ok_or(IvrsError::NotIvrs)? as usize;
        if table.get(0..4) != Some(b"IVRS".as_slice())
            || length > table.len()
            || length < FIRST_BLOCK
        {
            return Err(IvrsError::NotIvrs);
        }
        Ok(Ivrs {
            bytes: &table[..length],
        })
    }

    /// The IVHD blocks, one per unit and block type (a unit is often described twice, by
    /// types 10h and 11h; [`Unit::base`] tells them apart).
    pub fn units(&self) -> Units<'a> {
        Units {
            bytes: self.bytes,
            offset: FIRST_BLOCK,
        }
    }
}

/// Iterator over the IVHD blocks.
pub struct Units<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Units<'a> {
    type Item = Result<Unit<'a>, IvrsError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.offset < self.bytes.len() {
            let offset = self.offset;
            let truncated = Some(Err(IvrsError::Truncated { offset }));
            let (Some(kind), Some(length)) = (
                read::<u8>(self.bytes, offset),
                u16_at(self.bytes, offset + 2),
            ) else {
                self.offset = self.bytes.len();
                return truncated;
            };
            let length = usize::from(length);
            let Some(block) = slice_at(self.bytes, offset, length).filter(|_| length >= 4) else {
                self.offset = self.bytes.len();
                return truncated;
            };
            self.offset = offset + length;
            // IVHD types 10h, 11h and 40h; IVMD blocks (20h–22h) describe memory and are
            // skipped here.
            let entries_at = match kind {
                0x10 => 24,
                0x11 | 0x40 => 40,
                _ => continue,
            };
            let (Some(device), Some(base), Some(segment)) =
                (u16_at(block, 4), u64_at(block, 8), u16_at(block, 16))
            else {
                return truncated;
            };
            let Some(entries) = block.get(entries_at..) else {
                return truncated;
            };
            return Some(Ok(Unit {
                kind,
                iommu_device: device,
                base,
                segment,
                entries,
                entries_offset: offset + entries_at,
            }));
        }
        None
    }
}

/// One IVHD block: a unit and the device IDs it covers.
#[derive(Clone, Copy, Debug)]
pub struct Unit<'a> {
    /// The block type (10h, 11h, 40h).
    pub kind: u8,
    /// The unit's own requester ID (it is a PCI function).
    pub iommu_device: u16,
    /// The physical base of its MMIO registers.
    pub base: u64,
    pub segment: u16,
    entries: &'a [u8],
    /// Offset of `entries` in the table, for error messages.
    entries_offset: usize,
}

/// What a special-device entry names (§5.2.2.5, type 48h, "Variety").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialDevice {
    IoApic,
    Hpet,
    Other(u8),
}

/// One device-scope statement of an IVHD block (§5.2.2.2–5.2.2.6), ranges already paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every device ID of the segment (type 1).
    All,
    /// Device IDs `first..=last` (a select entry has first = last). Alias entries count as
    /// the requester IDs they name: the IOMMU sees the alias (`source`) on the bus.
    Devices {
        first: u16,
        last: u16,
        alias: Option<u16>,
    },
    /// A device that is not a PCI function but has a requester ID (an I/O APIC, an HPET),
    /// with the firmware's handle for it (the I/O APIC ID for an I/O APIC).
    Special {
        variety: SpecialDevice,
        handle: u8,
        device: u16,
    },
}

impl<'a> Unit<'a> {
    /// The device-scope entries, ranges paired.
    pub fn scope(&self) -> ScopeEntries<'a> {
        ScopeEntries {
            entries: self.entries,
            offset: 0,
            base: self.entries_offset,
        }
    }

    /// Whether the unit translates requests from `device` (an error in the block counts as
    /// not covered: the caller reports the block's error separately).
    pub fn covers(&self, device: u16) -> bool {
        self.scope().map_while(Result::ok).any(|scope| match scope {
            Scope::All => true,
            Scope::Devices { first, last, .. } => (first..=last).contains(&device),
            Scope::Special {
                device: special, ..
            } => special == device,
        })
    }

    /// The requester ID of the I/O APIC with ID `ioapic_id`, if the block names it.
    pub fn ioapic_device(&self, ioapic_id: u8) -> Option<u16> {
        self.scope()
            .map_while(Result::ok)
            .find_map(|scope| match scope {
                Scope::Special {
                    variety: SpecialDevice::IoApic,
                    handle,
                    device,
                } if handle == ioapic_id => Some(device),
                _ => None,
            })
    }
}

/// Iterator over a block's device-scope entries.
pub struct ScopeEntries<'a> {
    entries: &'a [u8],
    offset: usize,
    base: usize,
}

/// Bytes of a device entry of type `kind` (§5.2.2.1: the two top bits of the type give the
/// size for types below F0h), or `None` for a variable-length entry.
fn entry_size(kind: u8) -> Option<usize> {
    match kind >> 6 {
        0 => Some(4),
        1 => Some(8),
        2 => Some(16),
        _ => None,
    }
}

impl Iterator for ScopeEntries<'_> {
    type Item = Result<Scope, IvrsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let offset = self.offset;
            let table_offset = self.base + offset;
            let kind = read::<u8>(self.entries, offset)?;
            let size = match entry_size(kind) {
                Some(size) => size,
                // Type F0h (ACPI HID device): 22 bytes and a UID of the length in byte 21.
                None if kind == 0xf0 => match read::<u8>(self.entries, offset + 21) {
                    Some(uid_length) => 22 + usize::from(uid_length),
                    None => {
                        return self.fail(IvrsError::Truncated {
                            offset: table_offset,
                        })
                    }
                },
                None => {
                    return self.fail(IvrsError::UnknownEntry {
                        offset: table_offset,
                        kind,
                    })
                }
            };
            let Some(entry) = slice_at(self.entries, offset, size) else {
                return self.fail(IvrsError::Truncated {
                    offset: table_offset,
                });
            };
            self.offset += size;
            let device = u16_at(entry, 1).unwrap_or(0);
            return Some(Ok(match kind {
                0 => continue, // padding
                1 => Scope::All,
                2 => Scope::Devices {
                    first: device,
                    last: device,
                    alias: None,
                },
                0x42 => Scope::Devices {
                    first: device,
                    last: device,
                    alias: u16_at(entry, 5),
                },
                0x46 => Scope::Devices {
                    first: device,
                    last: device,
                    alias: None,
                },
                // Start of a range (plain, alias, extended): the next entry must end it.
                3 | 0x43 | 0x47 => {
                    let alias = (kind == 0x43).then(|| u16_at(entry, 5)).flatten();
                    match (
                        read::<u8>(self.entries, self.offset),
                        u16_at(self.entries, self.offset + 1),
                    ) {
                        (Some(4), Some(last)) if last >= device => {
                            self.offset += 4;
                            Scope::Devices {
                                first: device,
                                last,
                                alias,
                            }
                        }
                        _ => {
                            return self.fail(IvrsError::UnpairedRange {
                                offset: table_offset,
                            })
                        }
                    }
                }
                4 => {
                    return self.fail(IvrsError::UnpairedRange {
                        offset: table_offset,
                    })
                }
                0x48 => Scope::Special {
                    variety: match entry[7] {
                        1 => SpecialDevice::IoApic,
                        2 => SpecialDevice::Hpet,
                        other => SpecialDevice::Other(other),
                    },
                    handle: entry[4],
                    device: u16_at(entry, 5).unwrap_or(0),
                },
                // Reserved 4/8-byte types and the HID entry carry no scope Tessera uses.
                _ => continue,
            }));
        }
    }
}

impl ScopeEntries<'_> {
    /// Ends the iteration with `error`.
    fn fail(&mut self, error: IvrsError) -> Option<Result<Scope, IvrsError>> {
        self.offset = self.entries.len();
        Some(Err(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// An IVRS with one IVHD of `kind` at `base` holding `entries`.
    fn ivrs(blocks: &[(u8, u64, &[u8])]) -> Vec<u8> {
        let mut table = Vec::new();
        table.extend_from_slice(b"IVRS");
        table.extend_from_slice(&[0; 44]);
        for &(kind, base, entries) in blocks {
            let header = if kind == 0x10 { 24 } else { 40 };
            let length = (header + entries.len()) as u16;
            let mut block = vec![kind, 0];
            block.extend_from_slice(&length.to_le_bytes());
            block.extend_from_slice(&0x0010u16.to_le_bytes()); // the IOMMU is 00:02.0
            block.extend_from_slice(&0x40u16.to_le_bytes());
            block.extend_from_slice(&base.to_le_bytes());
            block.extend_from_slice(&[0; 2]); // segment 0
            block.resize(header, 0);
            block.extend_from_slice(entries);
            table.extend_from_slice(&block);
        }
        let length = table.len() as u32;
        table[4..8].copy_from_slice(&length.to_le_bytes());
        table
    }

    use std::vec;

    /// The first unit of `table`, which must read without error.
    fn first_unit(table: &[u8]) -> Unit<'_> {
        Ivrs::parse(table).unwrap().units().next().unwrap().unwrap()
    }

    /// QEMU's layout: all devices, then the I/O APIC as a special device (ID 0, 00:14.0
    /// in this example).
    const QEMU_LIKE: &[u8] = &[1, 0, 0, 0, 0x48, 0, 0, 0, 0, 0xa0, 0, 1];

    #[test]
    fn reads_units_and_their_scope() {
        let table = ivrs(&[
            (0x10, 0xfed8_0000, QEMU_LIKE),
            (0x11, 0xfed8_0000, QEMU_LIKE),
        ]);
        let ivrs = Ivrs::parse(&table).unwrap();
        let units: Vec<_> = ivrs.units().collect::<Result<_, _>>().unwrap();
        assert_eq!(units.len(), 2);
        assert!(units
            .iter()
            .all(|unit| unit.base == 0xfed8_0000 && unit.iommu_device == 0x10));
        assert!(units[0].covers(0x18));
        assert_eq!(units[1].ioapic_device(0), Some(0xa0));
        assert_eq!(units[1].ioapic_device(1), None);
    }

    #[test]
    fn ranges_and_selects() {
        let entries = [
            2, 0x08, 0, 0, 3, 0x10, 0, 0, 4, 0x1f, 0, 0, 0x42, 0x20, 0, 0, 0, 0x28, 0, 0,
        ];
        let table = ivrs(&[(0x10, 0x1000_0000, &entries)]);
        let unit = first_unit(&table);
        let scope: Vec<_> = unit.scope().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            scope,
            [
                Scope::Devices {
                    first: 8,
                    last: 8,
                    alias: None
                },
                Scope::Devices {
                    first: 0x10,
                    last: 0x1f,
                    alias: None
                },
                Scope::Devices {
                    first: 0x20,
                    last: 0x20,
                    alias: Some(0x28)
                },
            ]
        );
        assert!(unit.covers(0x15) && !unit.covers(0x09) && !unit.covers(0x21));
    }

    #[test]
    fn broken_tables_are_errors() {
        assert_eq!(Ivrs::parse(b"DMAR").unwrap_err(), IvrsError::NotIvrs);
        let unpaired = ivrs(&[(0x10, 0, &[3, 0x10, 0, 0])]);
        let unit = first_unit(&unpaired);
        assert!(matches!(
            unit.scope().next(),
            Some(Err(IvrsError::UnpairedRange { .. }))
        ));
        assert!(!unit.covers(0x10));
        let unknown = ivrs(&[(0x10, 0, &[0xf1, 0, 0, 0])]);
        let unit = first_unit(&unknown);
        assert!(matches!(
            unit.scope().next(),
            Some(Err(IvrsError::UnknownEntry { kind: 0xf1, .. }))
        ));
        let mut truncated = ivrs(&[(0x10, 0, QEMU_LIKE)]);
        truncated[50] = 0xff; // block length beyond the table
        assert!(matches!(
            Ivrs::parse(&truncated).unwrap().units().next(),
            Some(Err(IvrsError::Truncated { .. }))
        ));
    }

    proptest::proptest! {
        /// Arbitrary bytes after a valid header never panic the reader.
        #[test]
        fn arbitrary_blocks_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut table = b"IVRS".to_vec();
            table.extend_from_slice(&[0; 44]);
            table.extend_from_slice(&body);
            let length = table.len() as u32;
            table[4..8].copy_from_slice(&length.to_le_bytes());
            let ivrs = Ivrs::parse(&table).unwrap();
            for unit in ivrs.units().flatten() {
                let _ = unit.scope().count();
                let _ = unit.covers(0x10);
                let _ = unit.ioapic_device(0);
            }
        }
    }
}
