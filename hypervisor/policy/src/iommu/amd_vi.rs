//! AMD-Vi (the AMD I/O Virtualization Technology IOMMU): device table entries, I/O page
//! table entries, commands and event-log entries, as the AMD I/O Virtualization Technology
//! (IOMMU) Specification (rev. 3.x) lays them out — section numbers below are that
//! document's.
//!
//! The I/O page tables are built by the same planner as the stage-2 tables
//! ([`crate::stage2::build`]) through the [`AmdViIo`] entry format: AMD-Vi's host
//! translation tables are four-level radix trees of 512 eight-byte entries indexed like
//! long-mode page tables (§2.2.3), so only the entry bits differ.

use crate::stage2::{Decoded, EntryFormat, PageSize};
use tessera_abi::table::{MappingKind, Rights};

/// Bits 51:12 of an entry: a table's or a page's physical address.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// I/O page table entry bits (§2.2.3, "I/O Page Table Entry" / "I/O Page Directory Entry").
mod entry {
    /// PR: the entry is present.
    pub const PRESENT: u64 = 1 << 0;
    /// Next Level, bits 11:9: the level of the table this entry points at; 0 in a leaf,
    /// which then maps a page of the default size for its level (4 KiB, 2 MiB, 1 GiB).
    pub const NEXT_LEVEL_SHIFT: u32 = 9;
    pub const NEXT_LEVEL_MASK: u64 = 0b111 << NEXT_LEVEL_SHIFT;
    /// IR, IW: DMA reads and writes are allowed (they combine by AND down the walk).
    pub const READ: u64 = 1 << 61;
    pub const WRITE: u64 = 1 << 62;
}

/// The AMD-Vi host I/O page-table format for [`crate::stage2::build`]. A DMA domain maps
/// RAM and channels only: a device mapping (MMIO) is never given to DMA (it would be
/// peer-to-peer access to another device), and DMA has no execute right.
#[derive(Clone, Copy, Debug)]
pub struct AmdViIo;

impl EntryFormat for AmdViIo {
    fn table(next_table_phys: u64, level: usize) -> u64 {
        // An entry of a level-n table points at a level n − 1 table (§2.2.3).
        (next_table_phys & ADDRESS_MASK)
            | entry::PRESENT
            | entry::READ
            | entry::WRITE
            | (((level as u64).saturating_sub(1) & 0b111) << entry::NEXT_LEVEL_SHIFT)
    }

    fn leaf(host: u64, size: PageSize, rights: Rights, kind: MappingKind) -> u64 {
        if !rights.read || kind == MappingKind::DeviceMmio {
            return 0;
        }
        let mask = ADDRESS_MASK & !(size.bytes() - 1);
        let mut value = (host & mask) | entry::PRESENT | entry::READ;
        if rights.write {
            value |= entry::WRITE;
        }
        value
    }

    fn decode(value: u64, level: usize) -> Decoded {
        if value & entry::PRESENT == 0 {
            return Decoded::NotPresent;
        }
        let next_level = (value & entry::NEXT_LEVEL_MASK) >> entry::NEXT_LEVEL_SHIFT;
        if next_level != 0 && level > 1 {
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

/// What every empty slot of a domain's tables holds after [`mark_holes`]: not present
/// (PR = 0), Next Level 1. With PR = 0 the unit ignores the rest of the entry and refuses
/// the access with an IO_PAGE_FAULT event (§2.2.3, §2.5.3); QEMU (10.0) only logs that
/// event for a non-zero entry, so zero is not used for "not present".
pub const NOT_PRESENT: u64 = 1 << entry::NEXT_LEVEL_SHIFT;

/// Fills every empty slot of a domain's table pages with [`NOT_PRESENT`], once the tree
/// is built (the planner takes zero for a free slot while it builds).
pub fn mark_holes(pages: &mut [[u64; 512]]) {
    for slot in pages.iter_mut().flat_map(|page| page.iter_mut()) {
        if *slot == 0 {
            *slot = NOT_PRESENT;
        }
    }
}

/// Device IDs an AMD-Vi device table covers when it has every entry: a 16-bit requester ID
/// (bus, device, function).
pub const DEVICE_IDS: usize = 65536;
/// Bytes of one device table entry (§2.2.2.1).
pub const DEVICE_TABLE_ENTRY_BYTES: usize = 32;

/// A device table entry (§2.2.2.1, table "Device Table Entry Fields"), four quadwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTableEntry(pub [u64; 4]);

mod dte {
    /// Quadword 0: V (the entry is valid), TV (its translation fields are valid), Mode (bits
    /// 11:9: paging levels, 0 = no translation), the root pointer (51:12), IR, IW.
    pub const VALID: u64 = 1 << 0;
    pub const TRANSLATION_VALID: u64 = 1 << 1;
    pub const MODE_SHIFT: u32 = 9;
    pub const READ: u64 = 1 << 61;
    pub const WRITE: u64 = 1 << 62;
    /// Quadword 2: IV (the interrupt fields are valid), IntCtl (bits 189:188 of the entry,
    /// 61:60 of the quadword; 00b = fixed and arbitrated interrupts are target-aborted).
    pub const INTERRUPT_VALID: u64 = 1 << 0;
    /// Quadword 2: IntTabLen (bits 4:1, the table holds 2^n entries), IntTablePtr (bits
    /// 51:6, the table's address), IntCtl = 10b (bits 61:60: fixed and arbitrated
    /// interrupts are remapped through the table).
    pub const INTERRUPT_TABLE_LENGTH_SHIFT: u32 = 1;
    pub const INTERRUPT_TABLE_MASK: u64 = 0x000f_ffff_ffff_ffc0;
    pub const INTERRUPT_CONTROL_REMAPPED: u64 = 0b10 << 60;
}

impl DeviceTableEntry {
    /// A device no partition owns: valid and translating through an empty four-level tree
    /// with neither read nor write allowed, so every DMA is refused at the entry's
    /// permission check and logged as an IO_PAGE_FAULT (§2.2.2.1: IR/IW of the DTE gate the
    /// whole walk); interrupts valid with no table and IntCtl = target abort, so an MSI from
    /// it is dropped (§2.2.5).
    pub fn blocked(empty_root: u64, domain: u16) -> Self {
        DeviceTableEntry([
            dte::VALID
                | dte::TRANSLATION_VALID
                | (4 << dte::MODE_SHIFT)
                | (empty_root & ADDRESS_MASK),
            u64::from(domain),
            dte::INTERRUPT_VALID,
            0,
        ])
    }

    /// A device that DMAs through a partition's domain: four-level tables at `root`, reads
    /// and writes allowed where the tables allow them. Interrupts pass unremapped (IV = 0)
    /// until interrupt remapping is built.
    pub fn translated(root: u64, domain: u16) -> Self {
        DeviceTableEntry([
            dte::VALID
                | dte::TRANSLATION_VALID
                | (4 << dte::MODE_SHIFT)
                | (root & ADDRESS_MASK)
                | dte::READ
                | dte::WRITE,
            u64::from(domain),
            0,
            0,
        ])
    }

    /// A device whose DMA and interrupts pass untouched: V = 0 (§2.2.2.1). Only for the
    /// IOMMU's own function and the I/O APIC's requester ID, whose interrupts must keep
    /// flowing until interrupt remapping covers them.
    pub const fn passthrough() -> Self {
        DeviceTableEntry([0; 4])
    }

    /// The same entry with its interrupts remapped through the table at `table` of
    /// 2^`entries_log2` entries (§2.2.2.1 IV, IntTabLen, IntTablePtr; IntCtl = remapped,
    /// §2.2.5): an MSI's data bits 10:0 index the table, an index whose entry has RemapEn
    /// clear is target-aborted, and INIT, NMI, ExtInt and LINT pass-through stay off.
    pub fn with_interrupt_table(self, table: u64, entries_log2: u8) -> Self {
        let mut quadwords = self.0;
        quadwords[2] = dte::INTERRUPT_VALID
            | (u64::from(entries_log2.min(MAX_INTERRUPT_TABLE_LOG2))
                << dte::INTERRUPT_TABLE_LENGTH_SHIFT)
            | (table & dte::INTERRUPT_TABLE_MASK)
            | dte::INTERRUPT_CONTROL_REMAPPED;
        DeviceTableEntry(quadwords)
    }

    /// The interrupt table address and log2 of its entries, if the entry remaps interrupts.
    pub fn interrupt_table(&self) -> Option<(u64, u8)> {
        let quadword = self.0[2];
        (quadword & dte::INTERRUPT_VALID != 0 && (quadword >> 60) & 0b11 == 0b10).then_some((
            quadword & dte::INTERRUPT_TABLE_MASK,
            ((quadword >> dte::INTERRUPT_TABLE_LENGTH_SHIFT) & 0xf) as u8,
        ))
    }

    /// The domain the entry names.
    pub fn domain(&self) -> u16 {
        self.0[1] as u16
    }
}

/// The largest interrupt remapping table: 2^11 entries (IntTabLen = 1011b, §2.2.2.1); an
/// MSI's data bits 10:0 index it (§2.2.5).
pub const MAX_INTERRUPT_TABLE_LOG2: u8 = 11;

/// An interrupt remapping table entry in the 32-bit format (§2.2.5.1; no guest virtual
/// APIC, no x2APIC): RemapEn, IntType = fixed (000b), DM = physical, the 8-bit destination
/// APIC ID in bits 15:8 and the vector in bits 23:16. `None` when the destination does not
/// fit the 8-bit field (such a core needs the 128-bit format).
pub fn interrupt_entry_32(apic_id: u32, vector: u8) -> Option<u32> {
    let destination = u8::try_from(apic_id).ok()?;
    Some(1 | (u32::from(destination) << 8) | (u32::from(vector) << 16))
}

/// An interrupt remapping table entry in the 128-bit format (§2.2.5.2, GuestMode = 0; used
/// when the control register's GAEn is set, with XTEn for 32-bit destinations): RemapEn,
/// IntType fixed, DM physical, destination bits 23:0 in 31:8 of the low quadword and bits
/// 31:24 in 63:56 of the high one, the vector in bits 7:0 of the high quadword.
pub fn interrupt_entry_128(apic_id: u32, vector: u8) -> [u64; 2] {
    [
        1 | (u64::from(apic_id & 0x00ff_ffff) << 8),
        u64::from(vector) | (u64::from(apic_id >> 24) << 56),
    ]
}

/// The MSI a device is programmed with once its interrupts are remapped: address
/// 0xFEE00000 (destination fields unused), data = the table index (§2.2.5: data bits 10:0).
/// Indexes stay below 256 so data bits 10:8, which a unit may also read as the delivery
/// mode (fixed = 000b), stay clear.
pub fn remappable_message(index: u16) -> Option<(u64, u32)> {
    (index < 256).then_some((0xfee0_0000, u32::from(index)))
}

/// The interrupt table index an I/O APIC's message names: its data bits 10:0 (§2.2.5),
/// which the I/O APIC fills from the redirection entry's vector (7:0) and delivery mode
/// (10:8). Tessera keeps the entry's vector (so the local APIC's EOI broadcast, which
/// names the delivered vector, still matches the entry's, 82093AA §3.2.4, and an I/O APIC
/// that is not behind the unit still delivers the right vector) and indexes the table by
/// it.
pub fn ioapic_index(compatibility_low: u32) -> u16 {
    (compatibility_low & 0x7ff) as u16
}

/// The device table entry of an I/O APIC whose interrupts are remapped through `table`:
/// valid, translation fields not valid, interrupts remapped (a message whose index names
/// an entry with RemapEn clear is target-aborted).
pub fn ioapic_device_entry(table: u64) -> DeviceTableEntry {
    DeviceTableEntry([dte::VALID, 0, 0, 0]).with_interrupt_table(table, MAX_INTERRUPT_TABLE_LOG2)
}

/// One 128-bit command for the command buffer (§2.4), as two quadwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command(pub [u64; 2]);

/// Opcodes, bits 63:60 of the first quadword (§2.4).
mod opcode {
    pub const COMPLETION_WAIT: u64 = 0x1;
    pub const INVALIDATE_DEVTAB_ENTRY: u64 = 0x2;
    pub const INVALIDATE_IOMMU_PAGES: u64 = 0x3;
    pub const INVALIDATE_INTERRUPT_TABLE: u64 = 0x5;
    pub const INVALIDATE_IOMMU_ALL: u64 = 0x8;
}

impl Command {
    /// COMPLETION_WAIT with the store bit: when every earlier command has completed, the
    /// IOMMU writes `data` to the 8-byte aligned `address` (§2.4.1).
    pub fn completion_wait(address: u64, data: u64) -> Self {
        Command([
            (address & 0x000f_ffff_ffff_fff8) | 1 | (opcode::COMPLETION_WAIT << 60),
            data,
        ])
    }

    /// INVALIDATE_DEVTAB_ENTRY for one device ID (§2.4.2).
    pub fn invalidate_device(device: u16) -> Self {
        Command([
            u64::from(device) | (opcode::INVALIDATE_DEVTAB_ENTRY << 60),
            0,
        ])
    }

    /// INVALIDATE_IOMMU_PAGES for every page of `domain`, directory entries included: S = 1
    /// with the all-pages address, PDE = 1 (§2.4.3).
    pub fn invalidate_domain(domain: u16) -> Self {
        Command([
            (u64::from(domain) << 32) | (opcode::INVALIDATE_IOMMU_PAGES << 60),
            0x7fff_ffff_ffff_f000 | 0b11,
        ])
    }

    /// INVALIDATE_IOMMU_ALL: every cached device table entry, translation and interrupt
    /// table entry (§2.4.9; only where the extended features report IASup, bit 6).
    pub fn invalidate_all() -> Self {
        Command([opcode::INVALIDATE_IOMMU_ALL << 60, 0])
    }

    /// INVALIDATE_INTERRUPT_TABLE for one device ID (§2.4.5).
    pub fn invalidate_interrupt_table(device: u16) -> Self {
        Command([
            u64::from(device) | (opcode::INVALIDATE_INTERRUPT_TABLE << 60),
            0,
        ])
    }
}

/// One event-log entry (§2.5), read as two quadwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The requester (bus, device, function) the event names.
    pub device: u16,
    /// The address it concerns (for IO_PAGE_FAULT, the DMA address).
    pub address: u64,
}

/// Event codes, bits 63:60 of the first quadword (§2.5.1–2.5.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    IllegalDeviceTableEntry,
    IoPageFault,
    DeviceTableHardwareError,
    PageTableHardwareError,
    IllegalCommand,
    CommandHardwareError,
    IotlbInvalidationTimeout,
    InvalidDeviceRequest,
    Other(u8),
}

impl Event {
    pub fn decode(quadwords: [u64; 2]) -> Self {
        let kind = match (quadwords[0] >> 60) as u8 {
            0x1 => EventKind::IllegalDeviceTableEntry,
            0x2 => EventKind::IoPageFault,
            0x3 => EventKind::DeviceTableHardwareError,
            0x4 => EventKind::PageTableHardwareError,
            0x5 => EventKind::IllegalCommand,
            0x6 => EventKind::CommandHardwareError,
            0x7 => EventKind::IotlbInvalidationTimeout,
            0x8 => EventKind::InvalidDeviceRequest,
            other => EventKind::Other(other),
        };
        Event {
            kind,
            device: quadwords[0] as u16,
            address: quadwords[1],
        }
    }
}

/// The MMIO registers used (§3.4), as byte offsets from the unit's base.
pub mod register {
    pub const DEVICE_TABLE_BASE: usize = 0x0000;
    pub const COMMAND_BUFFER_BASE: usize = 0x0008;
    pub const EVENT_LOG_BASE: usize = 0x0010;
    pub const CONTROL: usize = 0x0018;
    pub const EXTENDED_FEATURES: usize = 0x0030;
    pub const COMMAND_HEAD: usize = 0x2000;
    pub const COMMAND_TAIL: usize = 0x2008;
    pub const EVENT_HEAD: usize = 0x2010;
    pub const EVENT_TAIL: usize = 0x2018;
    pub const STATUS: usize = 0x2020;
    /// The MMIO window a unit decodes (§3.4: 16 KiB).
    pub const WINDOW_BYTES: u64 = 0x4000;
}

/// Extended feature register bits (§3.4.5).
pub mod feature {
    /// XTSup: x2APIC destinations (32-bit) in 128-bit interrupt table entries.
    pub const X2APIC: u64 = 1 << 2;
    /// GASup: the 128-bit interrupt table entry format (GAEn) exists.
    pub const GUEST_APIC: u64 = 1 << 7;
    /// IASup: INVALIDATE_IOMMU_ALL is supported.
    pub const INVALIDATE_ALL: u64 = 1 << 6;
}

/// Status register bits (§3.4.13).
pub mod status {
    pub const EVENT_OVERFLOW: u64 = 1 << 0;
}

/// Control register bits (§3.4.4).
pub mod control {
    pub const IOMMU_ENABLE: u64 = 1 << 0;
    pub const EVENT_LOG_ENABLE: u64 = 1 << 2;
    pub const COMMAND_BUFFER_ENABLE: u64 = 1 << 12;
    /// GAEn: interrupt table entries are 128 bits wide (§2.2.5.2).
    pub const GUEST_APIC_ENABLE: u64 = 1 << 17;
    /// XTEn: 32-bit (x2APIC) destinations in interrupt table entries.
    pub const X2APIC_ENABLE: u64 = 1 << 50;
}

/// The Device Table Base register value: the table's address and its size in 4 KiB pages
/// minus one (bits 8:0, §3.4.1).
pub fn device_table_base(address: u64, entries: usize) -> u64 {
    let pages = (entries * DEVICE_TABLE_ENTRY_BYTES).div_ceil(4096).max(1) as u64;
    (address & ADDRESS_MASK) | (pages - 1).min(0x1ff)
}

/// A ring's base register (command buffer, event log): its address and its length as a
/// power of two of 16-byte entries in bits 59:56, at least 2^8 (§3.4.2, §3.4.3).
pub fn ring_base(address: u64, entries_log2: u8) -> u64 {
    (address & ADDRESS_MASK) | (u64::from(entries_log2.clamp(8, 15)) << 56)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage2::{build, walk, TablePool};
    use std::vec;
    use tessera_abi::table::{MemoryMapping, Range};

    fn ram(guest: u64, host: u64, size: u64) -> MemoryMapping {
        MemoryMapping {
            guest,
            host: Range::new(host, size),
            rights: Rights {
                read: true,
                write: true,
                execute: true,
            },
            kind: MappingKind::Ram,
        }
    }

    #[test]
    fn domain_tables_translate_ram_and_never_device_memory() {
        let mut mmio = ram(0xfeb0_0000, 0xfeb0_0000, 0x1000);
        mmio.kind = MappingKind::DeviceMmio;
        let mappings = [
            ram(0, 0x100_0000, 0x40_0000),
            ram(0x80_0000, 0x200_0000, 0x1000),
            mmio,
        ];
        let mut pages = vec![[0u64; 512]; 16];
        let base = 0x10_0000;
        let mut pool = TablePool::new(&mut pages, base);
        let root = build::<AmdViIo>(&mappings, false, &mut pool).unwrap();
        let translate = |address| walk::<AmdViIo>(&pages, base, root, address);
        let (host, rights, size) = translate(0x12_3456).unwrap();
        assert_eq!((host, size), (0x112_3456, PageSize::Size2MiB));
        assert!(rights.read && rights.write && !rights.execute);
        assert_eq!(translate(0x80_0010).unwrap().0, 0x200_0010);
        assert_eq!(
            translate(0x40_0000),
            None,
            "the hole above the first region"
        );
        assert_eq!(
            translate(0xfeb0_0000),
            None,
            "device memory is not DMA-mapped"
        );
        mark_holes(&mut pages);
        let translate = |address| walk::<AmdViIo>(&pages, base, root, address);
        assert_eq!(
            translate(0x12_3456).unwrap().0,
            0x112_3456,
            "mappings unchanged"
        );
        assert_eq!(translate(0x40_0000), None, "a marked hole is not present");
        assert!(pages.iter().flatten().all(|&entry| entry != 0));
    }

    #[test]
    fn directory_entries_name_the_next_level() {
        let mappings = [ram(0x80_0000, 0x200_0000, 0x1000)];
        let mut pages = vec![[0u64; 512]; 8];
        let base = 0x40_0000;
        let mut pool = TablePool::new(&mut pages, base);
        let root = build::<AmdViIo>(&mappings, false, &mut pool).unwrap();
        // Level 4 → 3 → 2 → 1; the leaf (level 1) has Next Level 0.
        let mut table = root;
        for level in (2..=4u64).rev() {
            let index = ((table - base) / 4096) as usize;
            let slot = ((0x80_0000u64 >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
            let value = pages[index][slot];
            assert_eq!((value >> 9) & 0b111, level - 1, "level {level}");
            table = value & ADDRESS_MASK;
        }
        let index = ((table - base) / 4096) as usize;
        let leaf = pages[index][0];
        assert_eq!((leaf >> 9) & 0b111, 0);
        assert_eq!(leaf & ADDRESS_MASK, 0x200_0000);
    }

    #[test]
    fn blocked_entries_allow_nothing_and_drop_interrupts() {
        let entry = DeviceTableEntry::blocked(0x5000, 0);
        assert_eq!(entry.0[0] & 0b11, 0b11, "V and TV");
        assert_eq!((entry.0[0] >> 9) & 0b111, 4);
        assert_eq!(entry.0[0] & (dte::READ | dte::WRITE), 0);
        assert_eq!(entry.0[2] & 1, 1, "IV");
        assert_eq!((entry.0[2] >> 60) & 0b11, 0, "IntCtl: target abort");
        let translated = DeviceTableEntry::translated(0x7000, 3);
        assert_eq!(translated.0[0] & ADDRESS_MASK, 0x7000);
        assert_eq!(translated.domain(), 3);
        assert_ne!(translated.0[0] & dte::WRITE, 0);
    }

    #[test]
    fn interrupt_remapping_fields() {
        // §2.2.2.1: IV bit 128, IntTabLen 132:129, IntTablePtr 179:134, IntCtl 189:188.
        let entry = DeviceTableEntry::translated(0x7000, 3).with_interrupt_table(0x12_3440, 11);
        assert_eq!(entry.0[2] & 1, 1, "IV");
        assert_eq!((entry.0[2] >> 1) & 0xf, 11, "IntTabLen");
        assert_eq!(entry.0[2] & 0x000f_ffff_ffff_ffc0, 0x12_3440, "IntTablePtr");
        assert_eq!((entry.0[2] >> 60) & 0b11, 0b10, "IntCtl remapped");
        assert_eq!(entry.0[2] & (0b111 << 56), 0, "no INIT/ExtInt/NMI pass");
        assert_eq!(entry.0[2] >> 62, 0, "no LINT pass");
        assert_eq!(
            entry.0[0],
            DeviceTableEntry::translated(0x7000, 3).0[0],
            "DMA fields kept"
        );
        assert_eq!(entry.interrupt_table(), Some((0x12_3440, 11)));
        assert_eq!(
            DeviceTableEntry::translated(0x7000, 3).interrupt_table(),
            None
        );
        assert_eq!(
            DeviceTableEntry::blocked(0x7000, 0).interrupt_table(),
            None,
            "target abort"
        );
        assert_eq!(
            DeviceTableEntry::translated(0, 1)
                .with_interrupt_table(0x4000, 15)
                .interrupt_table(),
            Some((0x4000, 11)),
            "IntTabLen is at most 1011b"
        );
        // §2.2.5.1: RemapEn 0, IntType 4:2, DM 6, Destination 15:8, Vector 23:16.
        assert_eq!(interrupt_entry_32(2, 0x41), Some(0x0041_0201));
        assert_eq!(interrupt_entry_32(256, 0x41), None);
        // §2.2.5.2: Destination[23:0] in 31:8, Vector in 71:64, Destination[31:24] in 127:120.
        assert_eq!(
            interrupt_entry_128(0x1234_5678, 0x41),
            [0x3456_7801, 0x1200_0000_0000_0041]
        );
        assert_eq!(remappable_message(5), Some((0xfee0_0000, 5)));
        assert_eq!(remappable_message(256), None);
        // I/O APIC: indexed by delivery mode and vector, as its messages' data says.
        assert_eq!(ioapic_index(0x0001_0061), 0x61);
        assert_eq!(ioapic_index(0x0000_a161), 0x161);
        let ioapic = ioapic_device_entry(0x8000);
        assert_eq!(ioapic.0[0], 1, "valid, no translation");
        assert_eq!(ioapic.interrupt_table(), Some((0x8000, 11)));
        let invalidate = Command::invalidate_interrupt_table(0x0020);
        assert_eq!(invalidate.0, [0x5000_0000_0000_0020, 0]);
    }

    #[test]
    fn commands_carry_their_opcodes_and_operands() {
        let wait = Command::completion_wait(0x1234_5678, 0xfeed);
        assert_eq!(wait.0[0] >> 60, 1);
        assert_eq!(wait.0[0] & 0x000f_ffff_ffff_fff8, 0x1234_5678);
        assert_eq!(wait.0[0] & 1, 1, "store");
        assert_eq!(wait.0[1], 0xfeed);
        assert_eq!(
            Command::invalidate_device(0x0018).0,
            [0x2000_0000_0000_0018, 0]
        );
        let pages = Command::invalidate_domain(7);
        assert_eq!(pages.0[0] >> 60, 3);
        assert_eq!((pages.0[0] >> 32) & 0xffff, 7);
        assert_eq!(pages.0[1] & 0b11, 0b11);
    }

    #[test]
    fn events_are_decoded() {
        let event = Event::decode([(0x2u64 << 60) | (0x0021 << 48) | 0x0018, 0xdead_b000]);
        assert_eq!(
            event,
            Event {
                kind: EventKind::IoPageFault,
                device: 0x18,
                address: 0xdead_b000
            }
        );
        assert_eq!(Event::decode([0xf << 60, 0]).kind, EventKind::Other(0xf));
    }

    #[test]
    fn register_values() {
        assert_eq!(device_table_base(0x20_0000, DEVICE_IDS), 0x20_0000 | 0x1ff);
        assert_eq!(device_table_base(0x20_0000, 256), 0x20_0000 | 1);
        assert_eq!(ring_base(0x30_0000, 8), 0x30_0000 | (8 << 56));
        assert_eq!(
            ring_base(0x30_0000, 2),
            0x30_0000 | (8 << 56),
            "at least 256 entries"
        );
    }
}
