//! The firmware's MCFG table (PCI Firmware 3.0 §4.1.2): the ECAM window of segment 0, so
//! the hypervisor can check it against the table's `platform.ecam` at boot.

use crate::bytes::{u16_at, u64_at};

/// Bytes before the first allocation entry: the ACPI header (36) and 8 reserved bytes.
const ENTRIES_OFFSET: usize = 44;
/// Bytes of one configuration space base address allocation entry.
const ENTRY_BYTES: usize = 16;

/// One ECAM window the firmware describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamWindow {
    /// The address of bus 0's configuration space (even when `first_bus` is not 0,
    /// PCI Firmware 3.0 Table 4-3).
    pub base: u64,
    pub segment: u16,
    pub first_bus: u8,
    pub last_bus: u8,
}

impl EcamWindow {
    /// The bytes from `first_bus` to `last_bus`, 1 MiB per bus (PCIe Base 4.0 §7.2.2).
    pub fn size(&self) -> u64 {
        (u64::from(self.last_bus.saturating_sub(self.first_bus)) + 1) << 20
    }
}

/// The segment-0 window of the MCFG table whose bytes (header included) are `table`.
pub fn segment_zero(table: &[u8]) -> Option<EcamWindow> {
    let entries = table.get(ENTRIES_OFFSET..)?;
    entries.chunks_exact(ENTRY_BYTES).find_map(|entry| {
        let window = EcamWindow {
            base: u64_at(entry, 0)?,
            segment: u16_at(entry, 8)?,
            first_bus: entry[10],
            last_bus: entry[11],
        };
        (window.segment == 0).then_some(window)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn table(entries: &[(u64, u16, u8, u8)]) -> Vec<u8> {
        let mut bytes = vec![0u8; ENTRIES_OFFSET];
        bytes[..4].copy_from_slice(b"MCFG");
        for &(base, segment, first, last) in entries {
            bytes.extend_from_slice(&base.to_le_bytes());
            bytes.extend_from_slice(&segment.to_le_bytes());
            bytes.extend_from_slice(&[first, last, 0, 0, 0, 0]);
        }
        let length = bytes.len() as u32;
        bytes[4..8].copy_from_slice(&length.to_le_bytes());
        bytes
    }

    #[test]
    fn q35_window() {
        let window = segment_zero(&table(&[(0xb000_0000, 0, 0, 0xff)])).unwrap();
        assert_eq!(window.base, 0xb000_0000);
        assert_eq!(window.size(), 256 << 20);
        let window = segment_zero(&table(&[
            (0xe000_0000, 1, 0, 0xff),
            (0xb000_0000, 0, 0, 0x3f),
        ]))
        .unwrap();
        assert_eq!((window.base, window.size()), (0xb000_0000, 64 << 20));
        assert_eq!(segment_zero(&table(&[(0xe000_0000, 1, 0, 0xff)])), None);
        assert_eq!(segment_zero(&table(&[])), None);
        // A truncated entry is no entry.
        let mut short = table(&[(0xb000_0000, 0, 0, 0xff)]);
        short.truncate(short.len() - 1);
        assert_eq!(segment_zero(&short), None);
        assert_eq!(segment_zero(&[0u8; 10]), None);
    }
}
