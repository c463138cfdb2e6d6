//! The Multiple APIC Description Table (ACPI 6.5 §5.2.12): the cores (processor local APIC
//! and local x2APIC entries) and the IOAPICs.
//!
//! The `acpi` crate finds and validates the table and decodes its entries
//! (`acpi::madt::Madt::entries`); the entry chain is checked here first, because the crate's
//! iterator trusts each entry's length byte: an entry of length 0 makes it loop forever, one
//! longer than what is left makes it read past the table's end.

use super::{FirmwareMemory, FirmwareTableError, PhysicalMapping, Signature, Table};
use crate::bytes::read;
use acpi::madt::{self as crate_madt, MadtEntry};
use core::mem::size_of;

/// Bytes of the MADT before its entries: the header, the local APIC address and the flags
/// (ACPI 6.5 §5.2.12, Table 5.43).
pub const MADT_FIXED_BYTES: usize = 44;

/// Bytes of the entries this module reads, as ACPI 6.5 defines them: processor local APIC
/// (§5.2.12.2), IOAPIC (§5.2.12.3), processor local x2APIC (§5.2.12.12).
const LOCAL_APIC_BYTES: u8 = 8;
const IO_APIC_BYTES: u8 = 12;
const LOCAL_X2APIC_BYTES: u8 = 16;

/// Flags of the processor entries (ACPI 6.5 §5.2.12.2, Table 5.47): the core is enabled, or
/// may be brought online later.
const ENABLED: u32 = 1 << 0;
const ONLINE_CAPABLE: u32 = 1 << 1;

/// The bytes the `acpi` crate reads for an entry of `kind`: the size of the structure it
/// casts the entry to (types 0x0–0x10; it skips the reserved and OEM types).
fn decoded_bytes(kind: u8) -> usize {
    match kind {
        0x0 => size_of::<crate_madt::LocalApicEntry>(),
        0x1 => size_of::<crate_madt::IoApicEntry>(),
        0x2 => size_of::<crate_madt::InterruptSourceOverrideEntry>(),
        0x3 => size_of::<crate_madt::NmiSourceEntry>(),
        0x4 => size_of::<crate_madt::LocalApicNmiEntry>(),
        0x5 => size_of::<crate_madt::LocalApicAddressOverrideEntry>(),
        0x6 => size_of::<crate_madt::IoSapicEntry>(),
        0x7 => size_of::<crate_madt::LocalSapicEntry>(),
        0x8 => size_of::<crate_madt::PlatformInterruptSourceEntry>(),
        0x9 => size_of::<crate_madt::LocalX2ApicEntry>(),
        0xa => size_of::<crate_madt::X2ApicNmiEntry>(),
        0xb => size_of::<crate_madt::GiccEntry>(),
        0xc => size_of::<crate_madt::GicdEntry>(),
        0xd => size_of::<crate_madt::GicMsiFrameEntry>(),
        0xe => size_of::<crate_madt::GicRedistributorEntry>(),
        0xf => size_of::<crate_madt::GicInterruptTranslationServiceEntry>(),
        0x10 => size_of::<crate_madt::MultiprocessorWakeupEntry>(),
        _ => 2,
    }
}

/// Checks that the entries after the fixed part tile the table (ACPI 6.5 §5.2.12: each
/// starts with its type and its length): every length at least 2 and within the table, and
/// every structure the crate will read for an entry within the table too.
fn check_entries(table: &Table) -> Result<(), FirmwareTableError> {
    let bytes = table.bytes;
    let mut offset = MADT_FIXED_BYTES;
    while offset < bytes.len() {
        let malformed = FirmwareTableError::MalformedEntry {
            signature: Signature::MADT,
            offset,
        };
        let (Some(kind), Some(length)) = (read::<u8>(bytes, offset), read::<u8>(bytes, offset + 1))
        else {
            return Err(malformed);
        };
        let left = bytes.len() - offset;
        let length = usize::from(length);
        if length < 2 || length > left || decoded_bytes(kind) > left {
            return Err(malformed);
        }
        offset += length;
    }
    Ok(())
}

/// A core the MADT lists: a processor local APIC entry (type 0, 8-bit APIC ID) or a
/// processor local x2APIC entry (type 9, 32-bit x2APIC ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Processor {
    pub apic_id: u32,
    /// The ACPI processor UID, which ties the entry to a processor object in the namespace.
    pub processor_uid: u32,
    pub enabled: bool,
    /// Not enabled now, but may be brought online (MADT revision ≥ 5).
    pub online_capable: bool,
    /// Listed by a local x2APIC entry.
    pub x2apic_entry: bool,
}

impl Processor {
    /// Whether the core can be started: enabled or online capable.
    pub fn usable(&self) -> bool {
        self.enabled || self.online_capable
    }

    fn from_flags(apic_id: u32, processor_uid: u32, flags: u32, x2apic_entry: bool) -> Self {
        Processor {
            apic_id,
            processor_uid,
            enabled: flags & ENABLED != 0,
            online_capable: flags & ONLINE_CAPABLE != 0,
            x2apic_entry,
        }
    }
}

/// An IOAPIC the MADT lists (type 1, ACPI 6.5 §5.2.12.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    /// The physical address of its register window.
    pub address: u64,
    /// The first global system interrupt its inputs carry.
    pub global_system_interrupt_base: u32,
}

/// The MADT, its entries checked, read through the `acpi` crate's decoding.
pub struct Madt<M: FirmwareMemory> {
    mapping: PhysicalMapping<M, crate_madt::Madt>,
    address: u64,
    length: usize,
}

impl<M: FirmwareMemory> Madt<M> {
    pub(super) fn new(
        mapping: PhysicalMapping<M, crate_madt::Madt>,
        table: &Table,
    ) -> Result<Self, FirmwareTableError> {
        check_entries(table)?;
        Ok(Madt {
            mapping,
            address: table.address,
            length: table.bytes.len(),
        })
    }

    pub fn address(&self) -> u64 {
        self.address
    }

    pub fn length(&self) -> usize {
        self.length
    }

    /// The physical address of every core's local APIC (before any override entry).
    pub fn local_apic_address(&self) -> u32 {
        self.mapping.get().local_apic_address
    }

    fn entries(&self) -> crate_madt::MadtEntryIter<'_> {
        self.mapping.get().entries()
    }

    /// Every processor local APIC and local x2APIC entry, in table order, usable or not.
    /// An entry shorter than its structure is skipped.
    pub fn processors(&self) -> impl Iterator<Item = Processor> + '_ {
        self.entries().filter_map(|entry| match entry {
            MadtEntry::LocalApic(apic) if apic.header.length >= LOCAL_APIC_BYTES => {
                let flags = apic.flags;
                Some(Processor::from_flags(
                    u32::from(apic.apic_id),
                    u32::from(apic.processor_id),
                    flags,
                    false,
                ))
            }
            MadtEntry::LocalX2Apic(x2apic) if x2apic.header.length >= LOCAL_X2APIC_BYTES => {
                let (apic_id, uid, flags) = (x2apic.x2apic_id, x2apic.processor_uid, x2apic.flags);
                Some(Processor::from_flags(apic_id, uid, flags, true))
            }
            _ => None,
        })
    }

    /// The APIC IDs of the cores that are enabled or online capable.
    pub fn usable_apic_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.processors()
            .filter(Processor::usable)
            .map(|processor| processor.apic_id)
    }

    /// Every IOAPIC entry, in table order. An entry shorter than its structure is skipped.
    pub fn io_apics(&self) -> impl Iterator<Item = IoApic> + '_ {
        self.entries().filter_map(|entry| match entry {
            MadtEntry::IoApic(io_apic) if io_apic.header.length >= IO_APIC_BYTES => {
                let (id, address, base) = (
                    io_apic.io_apic_id,
                    io_apic.io_apic_address,
                    io_apic.global_system_interrupt_base,
                );
                Some(IoApic {
                    id,
                    address: u64::from(address),
                    global_system_interrupt_base: base,
                })
            }
            _ => None,
        })
    }
}
