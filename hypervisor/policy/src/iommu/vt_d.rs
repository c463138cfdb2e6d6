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
    /// Invalidation queue head, tail and address (§10.4.22–10.4.24).
    pub const QUEUE_HEAD: usize = 0x80;
    pub const QUEUE_TAIL: usize = 0x88;
    pub const QUEUE_ADDRESS: usize = 0x90;
    /// Invalidation completion status (§10.4.25): IWC, bit 0, write-1-to-clear.
    pub const INVALIDATION_COMPLETION_STATUS: usize = 0x9c;
    /// Interrupt remapping table address (§10.4.29).
    pub const INTERRUPT_TABLE_ADDRESS: usize = 0xb8;
    /// The unit's register window (4 KiB at least, §10.4).
    pub const WINDOW_BYTES: u64 = 0x1000;
}

/// Global command / status bits (§10.4.4, §10.4.5).
pub mod global {
    pub const TRANSLATION_ENABLE: u32 = 1 << 31;
    pub const SET_ROOT_TABLE_POINTER: u32 = 1 << 30;
    /// QIE: the invalidation queue is on.
    pub const QUEUED_INVALIDATION_ENABLE: u32 = 1 << 26;
    /// IRE: interrupt remapping is on.
    pub const INTERRUPT_REMAPPING_ENABLE: u32 = 1 << 25;
    /// SIRTP: latch the interrupt remapping table address (one-shot).
    pub const SET_INTERRUPT_TABLE_POINTER: u32 = 1 << 24;
    /// CFI: compatibility-format interrupts pass. Tessera never sets it, so with IRE on
    /// every compatibility-format message is blocked (§5.1.4).
    pub const COMPATIBILITY_FORMAT_INTERRUPTS: u32 = 1 << 23;
    /// The one-shot commands (SRTP, SFL, WBF, SIRTP), which are not states to preserve
    /// when another command is written (§10.4.4).
    pub const ONE_SHOT: u32 = (1 << 30) | (1 << 29) | (1 << 27) | (1 << 24);
}

/// Extended capability bits (§10.4.3).
pub mod extended {
    /// QI: queued invalidation.
    pub const QUEUED_INVALIDATION: u64 = 1 << 1;
    /// IR: interrupt remapping.
    pub const INTERRUPT_REMAPPING: u64 = 1 << 3;
    /// EIM: extended interrupt mode (32-bit x2APIC destinations).
    pub const EXTENDED_INTERRUPT_MODE: u64 = 1 << 4;
    /// PT: pass-through context entries.
    pub const PASS_THROUGH: u64 = 1 << 6;
}

/// An interrupt remapping table entry (§9.10, remapped format, IM = 0): present, physical
/// destination mode, fixed delivery, `trigger_level` for a level-triggered I/O APIC pin,
/// the vector, the destination (the 32-bit x2APIC ID in extended interrupt mode, else the
/// 8-bit APIC ID in bits 47:40) and, when `source` is given, source validation of the
/// requester ID (SVT = 01b, SQ = 00b: all 16 bits must match, §9.10), so a message with
/// this entry's handle from any other requester is blocked and recorded.
pub fn interrupt_entry(
    apic_id: u32,
    vector: u8,
    trigger_level: bool,
    source: Option<u16>,
    extended_mode: bool,
) -> Option<[u64; 2]> {
    let destination = if extended_mode {
        u64::from(apic_id) << 32
    } else {
        u64::from(u8::try_from(apic_id).ok()?) << 40
    };
    let low = 1 | (u64::from(trigger_level) << 4) | (u64::from(vector) << 16) | destination;
    let high = source.map_or(0, |source| u64::from(source) | (0b01 << 18));
    Some([low, high])
}

/// The remappable-format MSI address for `handle` (§5.1.2.2): 0xFEE in bits 31:20,
/// handle bits 14:0 in 19:5, bit 15 in bit 2, interrupt format (bit 4) set, SHV (bit 3)
/// set so the device's data (its multiple-message number, bits 15:0) is added to the
/// handle. The data the device is programmed with is 0.
pub fn remappable_address(handle: u16) -> u32 {
    0xfee0_0000
        | (u32::from(handle & 0x7fff) << 5)
        | (1 << 4)
        | (1 << 3)
        | (u32::from(handle >> 15) << 2)
}

/// The interrupt handle a remappable-format address and data name (§5.1.3), or `None`
/// for a compatibility-format message (interrupt format bit 4 clear).
pub fn handle_of(address: u32, data: u32) -> Option<u32> {
    if address & (1 << 4) == 0 {
        return None;
    }
    let handle = ((address >> 5) & 0x7fff) | (((address >> 2) & 1) << 15);
    Some(if address & (1 << 3) != 0 {
        handle + (data & 0xffff)
    } else {
        handle
    })
}

/// An I/O APIC redirection entry in the remappable format (§5.1.5.1) for `handle`: the
/// low word keeps the vector (which must equal the entry's, for the EOI), trigger mode,
/// polarity and mask, with delivery mode 000b and handle bit 15 in bit 11; the high word
/// has the interrupt format bit (48) and handle bits 14:0 in bits 63:49. Returns (low,
/// high) from the compatibility-format `low` the hypervisor computed.
pub fn remappable_redirection_entry(handle: u16, compatibility_low: u32) -> (u32, u32) {
    // Vector (7:0), polarity (13), trigger mode (15), mask (16).
    let kept = compatibility_low & (0xff | (1 << 13) | (1 << 15) | (1 << 16));
    (
        kept | (u32::from(handle >> 15) << 11),
        (1 << 16) | (u32::from(handle & 0x7fff) << 17),
    )
}

/// The interrupt remapping table address register (§10.4.29): the table's address,
/// EIME (bit 11) and S (bits 3:0: the table holds 2^(S+1) entries).
pub fn interrupt_table_address(table: u64, entries_log2: u8, extended_mode: bool) -> u64 {
    (table & ADDRESS_MASK)
        | (u64::from(extended_mode) << 11)
        | u64::from(entries_log2.clamp(1, 16) - 1)
}

/// The invalidation queue address register (§10.4.24): 128-bit descriptors (DW = 0) and
/// QS = 0 (one 4 KiB page, 256 descriptors).
pub fn queue_address(queue: u64) -> u64 {
    queue & ADDRESS_MASK
}

/// Invalidation descriptors (§6.5.2), 128 bits each.
pub mod descriptor {
    /// Interrupt entry cache invalidation (type 4), global (G = 0).
    pub fn interrupt_entries_global() -> [u64; 2] {
        [0x4, 0]
    }

    /// Interrupt entry cache invalidation of 2^`mask_log2` entries from `index` (G = 1,
    /// IM in bits 31:27, IIDX in bits 47:32; §6.5.2.7).
    pub fn interrupt_entries(index: u16, mask_log2: u8) -> [u64; 2] {
        [
            0x4 | (1 << 4) | (u64::from(mask_log2 & 0x1f) << 27) | (u64::from(index) << 32),
            0,
        ]
    }

    /// Context-cache invalidation (type 1), global granularity (G = 01b in bits 5:4,
    /// §6.5.2.1).
    pub fn context_cache_global() -> [u64; 2] {
        [0x1 | (0b01 << 4), 0]
    }

    /// IOTLB invalidation (type 2), global granularity (G = 01b in bits 5:4, §6.5.2.3).
    pub fn iotlb_global() -> [u64; 2] {
        [0x2 | (0b01 << 4), 0]
    }

    /// Invalidation wait (type 5) with status write (SW, bit 5): when every earlier
    /// descriptor has completed, the unit writes `data` to the 4-byte aligned `address`
    /// (§6.5.2.8).
    pub fn wait(address: u64, data: u32) -> [u64; 2] {
        [0x5 | (1 << 5) | (u64::from(data) << 32), address & !3]
    }
}

/// The source ID the DMAR's scope gives the I/O APIC with `ioapic_id` (§8.3.1: device
/// scope type 03h, enumeration ID = I/O APIC ID, start bus and a one-entry path), if a
/// DRHD lists it.
pub fn ioapic_source(table: &[u8], ioapic_id: u8) -> Option<u16> {
    let length = read::<u32>(table, 4)? as usize;
    if table.get(0..4) != Some(b"DMAR".as_slice()) || length > table.len() {
        return None;
    }
    let table = &table[..length];
    let mut offset = 48;
    while offset < table.len() {
        let kind = u16_at(table, offset)?;
        let size = usize::from(u16_at(table, offset + 2)?);
        let structure = slice_at(table, offset, size).filter(|_| size >= 16)?;
        offset += size;
        if kind != 0 {
            continue;
        }
        let mut scope = 16;
        while scope + 6 <= structure.len() {
            let scope_kind = read::<u8>(structure, scope)?;
            let scope_length = usize::from(read::<u8>(structure, scope + 1)?);
            if scope_length < 6 {
                return None;
            }
            if scope_kind == 3
                && scope_length == 8
                && read::<u8>(structure, scope + 4)? == ioapic_id
            {
                let bus = read::<u8>(structure, scope + 5)?;
                let device = read::<u8>(structure, scope + 6)?;
                let function = read::<u8>(structure, scope + 7)?;
                return Some(
                    (u16::from(bus) << 8)
                        | (u16::from(device & 0x1f) << 3)
                        | u16::from(function & 7),
                );
            }
            scope += scope_length;
        }
    }
    None
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
    /// Whether the fault is an interrupt-remapping fault (reasons 20h–26h, §7.1.3), not a
    /// DMA one; its `address` bits 63:48 then hold the handle.
    pub fn interrupt(&self) -> bool {
        (0x20..=0x26).contains(&self.reason)
    }

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

/// The register base of the DRHD unit that translates requests from `device` (a requester
/// ID on segment 0), if any (§8.3.1): a unit whose device scope lists it as a PCI endpoint
/// (scope type 01h) or as a sub-hierarchy's bridge (02h) with a one-entry path from the
/// scope's start bus; otherwise the segment-0 unit with INCLUDE_PCI_ALL, which covers every
/// device no other unit lists. Functions behind a bridge that a scope names only through a
/// longer path or a sub-hierarchy are not resolved here (that needs the bus topology):
/// they count as covered by the INCLUDE_PCI_ALL unit only, or by none.
pub fn covering_unit(table: &[u8], device: u16) -> Option<u64> {
    let length = read::<u32>(table, 4)? as usize;
    if table.get(0..4) != Some(b"DMAR".as_slice()) || length > table.len() {
        return None;
    }
    let table = &table[..length];
    let mut include_all = None;
    let mut offset = 48;
    while offset < table.len() {
        let kind = u16_at(table, offset)?;
        let size = usize::from(u16_at(table, offset + 2)?);
        let structure = slice_at(table, offset, size).filter(|_| size >= 16)?;
        offset += size;
        if kind != 0 || u16_at(structure, 6)? != 0 {
            continue;
        }
        let base = u64_at(structure, 8)?;
        if read::<u8>(structure, 4)? & 1 != 0 {
            include_all.get_or_insert(base);
            continue;
        }
        let mut scope = 16;
        while scope + 6 <= structure.len() {
            let scope_kind = read::<u8>(structure, scope)?;
            let scope_length = usize::from(read::<u8>(structure, scope + 1)?);
            if scope_length < 6 || scope + scope_length > structure.len() {
                return None;
            }
            if matches!(scope_kind, 1 | 2) && scope_length == 8 {
                let bus = read::<u8>(structure, scope + 5)?;
                let path_device = read::<u8>(structure, scope + 6)?;
                let path_function = read::<u8>(structure, scope + 7)?;
                let listed = (u16::from(bus) << 8)
                    | (u16::from(path_device & 0x1f) << 3)
                    | u16::from(path_function & 7);
                if listed == device {
                    return Some(base);
                }
            }
            scope += scope_length;
        }
    }
    include_all
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
        assert!(!fault.interrupt());
    }

    #[test]
    fn interrupt_remapping_formats() {
        // §9.10: P bit 0, TM bit 4, V 23:16, DST 63:32 (EIM) or 47:40; SID 79:64, SVT 83:82.
        let entry = interrupt_entry(0x1234_5678, 0x41, false, Some(0x0020), true).unwrap();
        assert_eq!(entry, [0x1234_5678_0041_0001, 0x0004_0020]);
        let xapic = interrupt_entry(3, 0x41, true, None, false).unwrap();
        assert_eq!(xapic, [0x0000_0300_0041_0011, 0]);
        assert_eq!(interrupt_entry(256, 0x41, false, None, false), None);
        // §5.1.2.2: handle 14:0 at 19:5, handle 15 at 2, format bit 4, SHV bit 3.
        assert_eq!(
            remappable_address(0x0105),
            0xfee0_0000 | (0x105 << 5) | 0x18
        );
        assert_eq!(remappable_address(0x8001), 0xfee0_0000 | (1 << 5) | 0x1c);
        assert_eq!(handle_of(remappable_address(0x8105), 2), Some(0x8107));
        assert_eq!(handle_of(0xfee0_1000, 0x41), None, "compatibility format");
        assert_eq!(
            handle_of(0xfee0_0000 | (7 << 5) | 0x10, 9),
            Some(7),
            "no SHV"
        );
        // §5.1.5.1: the I/O APIC entry keeps vector, polarity, trigger, mask.
        let (low, high) = remappable_redirection_entry(0x8003, 0x0001_a741);
        assert_eq!(low, 0x0001_a041 | (1 << 11));
        assert_eq!(high, (1 << 16) | (3 << 17));
        assert_eq!(
            interrupt_table_address(0x40_0000, 9, true),
            0x40_0000 | (1 << 11) | 8
        );
        assert_eq!(descriptor::interrupt_entries_global(), [4, 0]);
        assert_eq!(
            descriptor::interrupt_entries(0x100, 5),
            [0x4 | 0x10 | (5 << 27) | (0x100 << 32), 0]
        );
        assert_eq!(descriptor::wait(0x1234, 7), [0x25 | (7 << 32), 0x1234]);
        assert_eq!(descriptor::context_cache_global(), [0x11, 0]);
        assert_eq!(descriptor::iotlb_global(), [0x12, 0]);
        assert_eq!(
            global::ONE_SHOT & global::SET_INTERRUPT_TABLE_POINTER,
            global::SET_INTERRUPT_TABLE_POINTER
        );
    }

    #[test]
    fn reads_the_ioapic_source_from_the_scope() {
        let mut drhd = vec![0, 0, 0, 0, 1, 0, 0, 0];
        drhd.extend_from_slice(&0xfed9_0000u64.to_le_bytes());
        // An endpoint scope (type 1), then the I/O APIC (type 3, ID 0, bus 0xff, 00.0).
        drhd.extend_from_slice(&[1, 8, 0, 0, 0, 0, 4, 0]);
        drhd.extend_from_slice(&[3, 8, 0, 0, 0, 0xff, 0, 0]);
        let size = drhd.len() as u16;
        drhd[2..4].copy_from_slice(&size.to_le_bytes());
        let table = dmar(&[drhd]);
        assert_eq!(ioapic_source(&table, 0), Some(0xff00));
        assert_eq!(ioapic_source(&table, 1), None);
        assert_eq!(ioapic_source(b"IVRS", 0), None);
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

    /// A DRHD of `flags` at `base` with the given device scopes.
    fn drhd(flags: u8, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let mut structure = vec![0, 0, 0, 0, flags, 0, 0, 0];
        structure.extend_from_slice(&base.to_le_bytes());
        for scope in scopes {
            structure.extend_from_slice(scope);
        }
        let size = structure.len() as u16;
        structure[2..4].copy_from_slice(&size.to_le_bytes());
        structure
    }

    /// A device scope entry of `kind` with start bus `bus` and a one-entry path.
    fn scope(kind: u8, bus: u8, device: u8, function: u8) -> Vec<u8> {
        vec![kind, 8, 0, 0, 0, bus, device, function]
    }

    #[test]
    fn finds_the_unit_covering_a_device() {
        let nic = 0x0010; // 00:02.0
        let disk = 0x0320; // 03:04.0
        let listing = drhd(0, 0xfed9_1000, &[scope(1, 0, 2, 0), scope(3, 0, 0x1f, 7)]);
        let catch_all = drhd(1, 0xfed9_0000, &[]);
        let table = dmar(&[listing.clone(), catch_all.clone()]);
        assert_eq!(covering_unit(&table, nic), Some(0xfed9_1000));
        assert_eq!(covering_unit(&table, disk), Some(0xfed9_0000));
        // Without the INCLUDE_PCI_ALL unit, an unlisted function has none.
        let only_listing = dmar(&[listing]);
        assert_eq!(covering_unit(&only_listing, disk), None);
        assert_eq!(covering_unit(&only_listing, nic), Some(0xfed9_1000));
        // A sub-hierarchy scope naming the function's own address counts.
        let bridge = dmar(&[drhd(0, 0xfed9_2000, &[scope(2, 3, 4, 0)])]);
        assert_eq!(covering_unit(&bridge, disk), Some(0xfed9_2000));
        // An I/O APIC scope (type 03h) at the same address does not.
        let ioapic = dmar(&[drhd(0, 0xfed9_2000, &[scope(3, 3, 4, 0)])]);
        assert_eq!(covering_unit(&ioapic, disk), None);
        // A unit of another segment does not cover segment 0.
        let mut other_segment = catch_all;
        other_segment[6] = 1;
        assert_eq!(covering_unit(&dmar(&[other_segment]), nic), None);
        // A scope running past its structure: nothing is trusted.
        let mut broken = drhd(0, 0xfed9_1000, &[scope(1, 0, 2, 0)]);
        broken[17] = 40;
        assert_eq!(covering_unit(&dmar(&[broken]), nic), None);
        assert_eq!(covering_unit(b"IVRS", nic), None);
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
            let _ = covering_unit(&table, 0x0010);
        }
    }
}
