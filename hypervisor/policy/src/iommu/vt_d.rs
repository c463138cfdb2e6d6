//! Intel VT-d (Intel Virtualization Technology for Directed I/O, Architecture
//! Specification rev. 3.x): the firmware's DMAR table, root and context entries, the
//! second-level page-table format, and the fault-recording registers — section numbers
//! below are that document's.
//!
//! Second-level tables have the layout of EPT (§9.8: four levels of 512 eight-byte entries
//! indexed by address bits 47:12), so they are built by the stage-2 planner through the
//! [`VtdSecondLevel`] entry format.

use crate::bytes::{read, slice_at, u16_at, u64_at};
use crate::stage2::{Decoded, EntryFormat, PageSize};
use tessera_abi::table::{MappingKind, Rights};

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Second-level paging entry bits (§9.8).
mod entry {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    /// PS in a level-2 or level-3 entry: it maps a 2 MiB or 1 GiB page.
    pub const PAGE_SIZE: u64 = 1 << 7;
}

/// The VT-d second-level table format for [`crate::stage2::build`]: RAM and channels only,
/// no execute right (DMA has none).
#[derive(Clone, Copy, Debug)]
pub struct VtdSecondLevel;

impl EntryFormat for VtdSecondLevel {
    fn table(next_table_phys: u64, _level: usize) -> u64 {
        (next_table_phys & ADDRESS_MASK) | entry::READ | entry::WRITE
    }

    fn leaf(host: u64, size: PageSize, rights: Rights, kind: MappingKind) -> u64 {
        if !rights.read || kind == MappingKind::DeviceMmio {
            return 0;
        }
        let mut value = (host & ADDRESS_MASK & !(size.bytes() - 1)) | entry::READ;
        if rights.write {
            value |= entry::WRITE;
        }
        if size != PageSize::Size4KiB {
            value |= entry::PAGE_SIZE;
        }
        value
    }

    fn decode(value: u64, level: usize) -> Decoded {
        if value & (entry::READ | entry::WRITE) == 0 {
            return Decoded::NotPresent;
        }
        let leaf = level == 1 || ((level == 2 || level == 3) && value & entry::PAGE_SIZE != 0);
        if !leaf {
            return Decoded::Table {
                next: value & ADDRESS_MASK,
            };
        }
        let size = PageSize::at_level(level).unwrap_or(PageSize::Size4KiB);
        Decoded::Leaf {
            host: value & ADDRESS_MASK & !(size.bytes() - 1),
            rights: Rights {
                read: value & entry::READ != 0,
                write: value & entry::WRITE != 0,
                execute: false,
            },
        }
    }
}

/// A root-table entry (§9.1): present, pointing at the context table of its bus.
pub fn root_entry(context_table: u64) -> [u64; 2] {
    [(context_table & ADDRESS_MASK) | 1, 0]
}

/// A context entry (§9.3) translating through four-level second-level tables at `root`
/// (TT = 00b: untranslated requests only; AW = 010b: 48-bit, four levels) in `domain`.
pub fn context_entry(root: u64, domain: u16) -> [u64; 2] {
    [(root & ADDRESS_MASK) | 1, 0b010 | (u64::from(domain) << 8)]
}

/// A context entry that passes requests untranslated (TT = 10b, §9.3), for a function the
/// table leaves unconfined; valid only where ECAP.PT (bit 6) is set.
pub fn pass_through_context_entry(domain: u16) -> [u64; 2] {
    [1 | (0b10 << 2), 0b010 | (u64::from(domain) << 8)]
}

/// Registers (§10.4), byte offsets from the unit's base.
pub mod register {
    pub const CAPABILITY: usize = 0x08;
    pub const EXTENDED_CAPABILITY: usize = 0x10;
    pub const GLOBAL_COMMAND: usize = 0x18;
    pub const GLOBAL_STATUS: usize = 0x1c;
    pub const ROOT_TABLE_ADDRESS: usize = 0x20;
    pub const CONTEXT_COMMAND: usize = 0x28;
    pub const FAULT_STATUS: usize = 0x34;
    /// The unit's register window (4 KiB at least, §10.4).
    pub const WINDOW_BYTES: u64 = 0x1000;
}

/// Global command / status bits (§10.4.4, §10.4.5).
pub mod global {
    pub const TRANSLATION_ENABLE: u32 = 1 << 31;
    pub const SET_ROOT_TABLE_POINTER: u32 = 1 << 30;
    /// The one-shot commands, which are not states to preserve when another is written.
    pub const ONE_SHOT: u32 = (1 << 30) | (1 << 29) | (1 << 27);
}

/// Context command: invalidate the context cache globally (ICC, CIRG = 01b, §10.4.7).
pub const CONTEXT_INVALIDATE_GLOBAL: u64 = (1 << 63) | (1 << 61);
/// IOTLB invalidate register: invalidate globally (IVT, IIRG = 01b, §10.4.8.1); the
/// register sits at ECAP.IRO × 16 + 8.
pub const IOTLB_INVALIDATE_GLOBAL: u64 = (1 << 63) | (1 << 60);

/// Where the IOTLB invalidate register is: ECAP bits 17:8 (IRO) × 16, plus 8 (§10.4.3).
pub fn iotlb_register(extended_capability: u64) -> usize {
    (((extended_capability >> 8) & 0x3ff) as usize) * 16 + 8
}

/// The fault recording registers (§10.4.14): the first at CAP bits 33:24 (FRO) × 16, and
/// CAP bits 47:40 (NFR) + 1 of them, 16 bytes each.
pub fn fault_registers(capability: u64) -> (usize, usize) {
    (
        (((capability >> 24) & 0x3ff) as usize) * 16,
        ((capability >> 40) & 0xff) as usize + 1,
    )
}

/// One recorded fault (§10.4.14): whether the slot holds one (F, bit 127), the requester,
/// the reason code, whether it was a read, and the faulting page address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub source: u16,
    pub reason: u8,
    pub read: bool,
    pub address: u64,
}

impl Fault {
    /// The fault in a recording register, if its F bit is set.
    pub fn decode(low: u64, high: u64) -> Option<Fault> {
        if high & (1 << 63) == 0 {
            return None;
        }
        Some(Fault {
            source: high as u16,
            reason: (high >> 32) as u8,
            read: high & (1 << 62) != 0,
            address: low & ADDRESS_MASK,
        })
    }
}

/// Why a DMAR table could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarError {
    NotDmar,
    Truncated { offset: usize },
}

/// One DMA-remapping hardware unit (DRHD, §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    pub base: u64,
    pub segment: u16,
    /// INCLUDE_PCI_ALL: the unit covers every device of the segment no other unit lists.
    pub include_all: bool,
}

/// The DRHD units of a DMAR table (§8.1: structures start at 48).
pub fn units(table: &[u8]) -> impl Iterator<Item = Result<Unit, DmarError>> + '_ {
    let length = read::<u32>(table, 4).unwrap_or(0) as usize;
    let valid =
        table.get(0..4) == Some(b"DMAR".as_slice()) && length <= table.len() && length >= 48;
    let table = if valid { &table[..length] } else { &[][..] };
    let mut offset = 48;
    let mut not_dmar = !valid;
    core::iter::from_fn(move || {
        if core::mem::take(&mut not_dmar) {
            return Some(Err(DmarError::NotDmar));
        }
        while offset < table.len() {
            let at = offset;
            let (Some(kind), Some(size)) = (u16_at(table, at), u16_at(table, at + 2)) else {
                offset = table.len();
                return Some(Err(DmarError::Truncated { offset: at }));
            };
            let Some(structure) = slice_at(table, at, usize::from(size)).filter(|_| size >= 4)
            else {
                offset = table.len();
                return Some(Err(DmarError::Truncated { offset: at }));
            };
            offset += usize::from(size);
            if kind != 0 {
                continue; // RMRR, ATSR, RHSA, ANDD, SATC: not units
            }
            let (Some(flags), Some(segment), Some(base)) = (
                read::<u8>(structure, 4),
                u16_at(structure, 6),
                u64_at(structure, 8),
            ) else {
                return Some(Err(DmarError::Truncated { offset: at }));
            };
            return Some(Ok(Unit {
                base,
                segment,
                include_all: flags & 1 != 0,
            }));
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage2::{build, walk, TablePool};
    use std::vec;
    use std::vec::Vec;
    use tessera_abi::table::{MemoryMapping, Range};

    #[test]
    fn second_level_tables_translate_ram_only() {
        let ram = MemoryMapping {
            guest: 0,
            host: Range::new(0x100_0000, 0x40_0000),
            rights: Rights {
                read: true,
                write: true,
                execute: true,
            },
            kind: MappingKind::Ram,
        };
        let mmio = MemoryMapping {
            guest: 0xfeb0_0000,
            host: Range::new(0xfeb0_0000, 0x1000),
            kind: MappingKind::DeviceMmio,
            ..ram
        };
        let mut pages = vec![[0u64; 512]; 16];
        let mut pool = TablePool::new(&mut pages, 0x20_0000);
        let root = build::<VtdSecondLevel>(&[ram, mmio], false, &mut pool).unwrap();
        let (host, rights, size) = walk::<VtdSecondLevel>(&pages, 0x20_0000, root, 0x1234).unwrap();
        assert_eq!((host, size), (0x100_1234, PageSize::Size2MiB));
        assert!(rights.write && !rights.execute);
        assert_eq!(
            walk::<VtdSecondLevel>(&pages, 0x20_0000, root, 0xfeb0_0000),
            None
        );
    }

    #[test]
    fn entries_and_registers() {
        assert_eq!(root_entry(0x5000), [0x5001, 0]);
        assert_eq!(context_entry(0x7000, 3), [0x7001, 0x302]);
        assert_eq!(pass_through_context_entry(1)[0] & 0b1101, 0b1001);
        assert_eq!(iotlb_register((0x50 << 8) | 0x7), 0x50 * 16 + 8);
        // QEMU's CAP: FRO at bits 33:24, NFR at 47:40.
        assert_eq!(fault_registers((0x22 << 24) | (3 << 40)), (0x220, 4));
        let fault = Fault::decode(
            0xdead_b123,
            (1 << 63) | (1 << 62) | (0x06u64 << 32) | 0x0020,
        )
        .unwrap();
        assert_eq!(
            fault,
            Fault {
                source: 0x20,
                reason: 6,
                read: true,
                address: 0xdead_b000
            }
        );
        assert_eq!(Fault::decode(0, 0), None);
    }

    fn dmar(structures: &[Vec<u8>]) -> Vec<u8> {
        let mut table = b"DMAR".to_vec();
        table.resize(48, 0);
        for structure in structures {
            table.extend_from_slice(structure);
        }
        let length = table.len() as u32;
        table[4..8].copy_from_slice(&length.to_le_bytes());
        table
    }

    #[test]
    fn reads_units() {
        let mut drhd = vec![0, 0, 16, 0, 1, 0, 0, 0];
        drhd.extend_from_slice(&0xfed9_0000u64.to_le_bytes());
        let rmrr = vec![1, 0, 8, 0, 0, 0, 0, 0];
        let table = dmar(&[rmrr, drhd]);
        let found: Vec<_> = units(&table).collect();
        assert_eq!(
            found,
            [Ok(Unit {
                base: 0xfed9_0000,
                segment: 0,
                include_all: true
            })]
        );
        assert_eq!(
            units(b"IVRS").collect::<Vec<_>>(),
            [Err(DmarError::NotDmar)]
        );
        let mut truncated = dmar(&[vec![0, 0, 64, 0]]);
        truncated.truncate(52);
        let length = truncated.len() as u32;
        truncated[4..8].copy_from_slice(&length.to_le_bytes());
        assert!(matches!(
            units(&truncated).next(),
            Some(Err(DmarError::Truncated { .. }))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_structures_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut table = b"DMAR".to_vec();
            table.resize(48, 0);
            table.extend_from_slice(&body);
            let length = table.len() as u32;
            table[4..8].copy_from_slice(&length.to_le_bytes());
            let _ = units(&table).count();
        }
    }
}
