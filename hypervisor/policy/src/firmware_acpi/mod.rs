//! The firmware's ACPI tables, read in one place (ACPI 6.5 §5.2): the root pointer (RSDP),
//! the root table (RSDT or XSDT), the MADT (cores, IOAPICs), the FADT (the fixed-hardware
//! ports, the DSDT's address) and the `\_S5` sleep type in the DSDT.
//!
//! # What the `acpi` crate does, what is read here, and why
//!
//! The `acpi` crate (5.x, without its allocator features) discovers and validates:
//! [`AcpiTables::from_rsdt`] checks the root table's signature, OEM fields and checksum, and
//! `AcpiTables::find_table` walks the root table for the MADT and the FADT and checks theirs;
//! `acpi::madt::Madt::entries` decodes the MADT's entries. Read by hand here, each for a
//! reason:
//!
//! * the RSDP ([`read_rsdp`], [`find_root_pointer`]): the crate validates an RSDP only behind
//!   a physical mapping (an `unsafe` map), while the boot loader hands over a copy in a byte
//!   slice; for any revision above 0 the crate checksums as many bytes as the RSDP's own
//!   `length` field says, unbounded, and takes the XSDT even when its address is 0 (ACPI 6.5
//!   §5.2.5.3: revision 2 adds the XSDT, and a 0 address means there is none).
//! * the MADT's entry chain is checked ([`Madt`]) before the crate walks it: its iterator
//!   loops forever on an entry of length 0 and runs past the table's end on an entry longer
//!   than what is left.
//! * the FADT's fields ([`FixedHardware`]): the crate's accessors pick the 64-bit `X_` fields
//!   by the table's revision alone and read them past the end of a FADT shorter than that
//!   revision's layout; here a field outside the table counts as absent (as ACPICA does).
//! * the DSDT, reached from the FADT ([`FirmwareTables::table_at`]): the crate's
//!   `AcpiTables::dsdt` takes the address from its FADT accessor (above) and subtracts the
//!   header from the DSDT's length unchecked, a panic on a DSDT shorter than its header.
//! * tables the crate has no type for (DMAR, IVRS, [`FirmwareTables::find`]): finding one
//!   through the crate means implementing its `unsafe trait AcpiTable`, which this crate (no
//!   `unsafe`) cannot.
//!
//! Both apply the checks every table gets (ACPI 6.5 §5.2.6): signature, a length covering the
//! header, all bytes readable, checksum.
//!
//! # Memory
//!
//! Everything reads physical memory through a [`FirmwareMemory`]: the hypervisor's maps the
//! identity-mapped first 4 GiB, the tests' a synthetic firmware image. That trait also carries
//! the crate's handler; its contract (what cannot be read maps to zeros) is what lets the
//! crate walk tables safely whatever the firmware wrote.
//!
//! # Adding a table
//!
//! A table the crate has a type for (MCFG, `acpi::mcfg::Mcfg`) is one function: `typed` finds
//! and validates it, refuses it if shorter than its fixed part (the crate's entry readers
//! subtract that part from the length unchecked) and returns its bytes; then its entries are
//! read. A table the crate has no
//! type for (DMAR, IVRS) is one function too: [`FirmwareTables::find`] and a parser of the
//! returned [`Table`]'s bytes. Neither needs another walk of the root table.

use crate::acpi_s5;
use crate::bytes::{read, slice_at, u16_at, u32_at, u64_at};
use core::fmt;

pub use acpi::{AcpiError, AcpiHandler, AcpiTables, PhysicalMapping};

mod fadt;
mod madt;
#[cfg(test)]
mod tests;

pub use fadt::{AddressSpace, FixedHardware, Register, ResetRegister, FADT_V1_BYTES};
pub use madt::{IoApic, Madt, Processor, MADT_FIXED_BYTES};

/// Bytes of the header every system description table starts with (ACPI 6.5 §5.2.6, Table
/// 5.4): signature, length, revision, checksum, OEM ID, OEM table ID, OEM revision, creator.
pub const HEADER_BYTES: usize = 36;

/// The fewest bytes a mapping made for the `acpi` crate may be valid for, and the size of the
/// zero block mapped where memory cannot be read: more than the largest table structure the
/// crate has (the FADT, 276 bytes). See [`FirmwareMemory`].
pub const MAPPING_FLOOR_BYTES: usize = 512;

/// A table's four-character signature (ACPI 6.5 §5.2.6, Tables 5.5 and 5.6).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 4]);

/// The HPET description table's length: the header, the event timer block ID, the register
/// block's Generic Address Structure, the HPET number, the minimum tick and the page
/// protection byte (IA-PC HPET specification 1.0a §3.2.4).
pub const HPET_FIXED_BYTES: usize = 56;

impl Signature {
    pub const RSDT: Signature = Signature(*b"RSDT");
    pub const XSDT: Signature = Signature(*b"XSDT");
    /// The Multiple APIC Description Table.
    pub const MADT: Signature = Signature(*b"APIC");
    /// The Fixed ACPI Description Table.
    pub const FADT: Signature = Signature(*b"FACP");
    pub const DSDT: Signature = Signature(*b"DSDT");
    /// PCI Express memory-mapped configuration space.
    pub const MCFG: Signature = Signature(*b"MCFG");
    /// Intel's DMA remapping table (VT-d).
    pub const DMAR: Signature = Signature(*b"DMAR");
    /// AMD's I/O virtualization reporting structure (AMD-Vi).
    pub const IVRS: Signature = Signature(*b"IVRS");
    /// The High Precision Event Timer description table (IA-PC HPET specification 1.0a).
    pub const HPET: Signature = Signature(*b"HPET");
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            if byte.is_ascii_graphic() || byte == b' ' {
                write!(f, "{}", char::from(byte))?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Why a firmware table could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareTableError {
    /// No root pointer: the boot loader gave none and none is in the BIOS areas.
    NoRootPointer,
    /// The table at `address` lies, at least in part, outside the memory that may be read.
    Unreadable { signature: Signature, address: u64 },
    /// Where a table with signature `expected` should be, another signature stands.
    WrongSignature { expected: Signature, address: u64 },
    /// The table's length field is below its fixed part.
    Truncated { signature: Signature, length: u32 },
    /// The table's bytes do not add up to zero (ACPI 6.5 §5.2.6).
    BadChecksum { signature: Signature, address: u64 },
    /// The `acpi` crate refused a table the checks here accept (an OEM ID or OEM table ID
    /// that is not UTF-8).
    Refused { signature: Signature },
    /// The root table lists no table with this signature, or the pointer to it is 0.
    Missing { signature: Signature },
    /// The entry at byte `offset` of the table is shorter than an entry header or runs past
    /// the end of the table.
    MalformedEntry { signature: Signature, offset: usize },
    /// The DSDT has no `\_S5` package of the shape [`acpi_s5`] reads.
    NoSoftOffSleepType,
    /// The FADT names no PM1a control block in system I/O space, which powering off needs.
    NoPm1aControlPort,
    /// The HPET table's register block is not in system memory space, or at address 0.
    HpetNotInMemory,
}

impl fmt::Display for FirmwareTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoRootPointer => write!(f, "no ACPI root pointer (RSDP)"),
            Self::Unreadable { signature, address } => {
                write!(
                    f,
                    "ACPI {signature} at {address:#x} lies outside readable memory"
                )
            }
            Self::WrongSignature { expected, address } => {
                write!(f, "no ACPI {expected} signature at {address:#x}")
            }
            Self::Truncated { signature, length } => {
                write!(f, "ACPI {signature} too short ({length} bytes)")
            }
            Self::BadChecksum { signature, address } => {
                write!(f, "ACPI {signature} at {address:#x} has a bad checksum")
            }
            Self::Refused { signature } => {
                write!(f, "ACPI {signature} refused by the acpi crate")
            }
            Self::Missing { signature } => write!(f, "no ACPI {signature}"),
            Self::MalformedEntry { signature, offset } => {
                write!(f, "ACPI {signature}: malformed entry at offset {offset}")
            }
            Self::NoSoftOffSleepType => write!(f, "no \\_S5 sleep type in the ACPI DSDT"),
            Self::HpetNotInMemory => {
                write!(f, "the ACPI HPET table's registers are not in memory space")
            }
            Self::NoPm1aControlPort => write!(f, "no PM1a control port in the ACPI FADT"),
        }
    }
}

fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0
}

// ---------------------------------------------------------------------------------------------
// The root pointer (ACPI 6.5 §5.2.5).

/// What the hypervisor needs from an ACPI Root System Description Pointer (ACPI 6.5
/// §5.2.5.3): where the RSDT and, from revision 2 on, the XSDT are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub revision: u8,
    pub rsdt_address: u32,
    /// Present for revision ≥ 2 with a non-zero XSDT address.
    pub xsdt_address: Option<u64>,
}

/// Bytes of an ACPI 1.0 RSDP (covered by the first checksum) and of an ACPI 2.0+ one.
pub const RSDP_V1_BYTES: usize = 20;
pub const RSDP_V2_BYTES: usize = 36;

/// Why bytes are not an RSDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpError {
    /// Fewer bytes than the structure: 20, or for revision ≥ 2 at least 36 and its `length`.
    TooShort,
    /// The first 8 bytes are not `RSD PTR `.
    BadSignature,
    /// The first 20 bytes do not add up to zero.
    BadChecksum,
    /// Revision ≥ 2: the `length` bytes do not add up to zero.
    BadExtendedChecksum,
}

/// Reads an RSDP from `bytes` (it may be followed by other bytes): signature `RSD PTR `,
/// the checksum over the first 20 bytes, and for revision ≥ 2 the extended checksum over
/// `length` bytes (at least 36; all of them must be in `bytes`). ACPI 6.5 §5.2.5.3.
pub fn read_rsdp(bytes: &[u8]) -> Result<Rsdp, RsdpError> {
    let first = slice_at(bytes, 0, RSDP_V1_BYTES).ok_or(RsdpError::TooShort)?;
    if !first.starts_with(b"RSD PTR ") {
        return Err(RsdpError::BadSignature);
    }
    if !sums_to_zero(first) {
        return Err(RsdpError::BadChecksum);
    }
    let (Some(revision), Some(rsdt_address)) = (read::<u8>(first, 15), u32_at(first, 16)) else {
        return Err(RsdpError::TooShort);
    };
    if revision < 2 {
        return Ok(Rsdp {
            revision,
            rsdt_address,
            xsdt_address: None,
        });
    }
    let length = slice_at(bytes, 0, RSDP_V2_BYTES)
        .and_then(|v2| u32_at(v2, 20))
        .ok_or(RsdpError::TooShort)? as usize;
    let whole = slice_at(bytes, 0, length.max(RSDP_V2_BYTES)).ok_or(RsdpError::TooShort)?;
    if !sums_to_zero(whole) {
        return Err(RsdpError::BadExtendedChecksum);
    }
    let xsdt = u64_at(whole, 24).ok_or(RsdpError::TooShort)?;
    Ok(Rsdp {
        revision,
        rsdt_address,
        xsdt_address: (xsdt != 0).then_some(xsdt),
    })
}

/// [`read_rsdp`], for callers that only need to know whether the bytes are an RSDP.
pub fn parse_rsdp(bytes: &[u8]) -> Option<Rsdp> {
    read_rsdp(bytes).ok()
}

/// Where the BIOS data area keeps the EBDA's real-mode segment (40:0Eh, ACPI 6.5 §5.2.5.1).
pub const EBDA_SEGMENT_ADDRESS: u64 = 0x40E;
/// The part of the EBDA searched: its first KiB.
pub const EBDA_SEARCH_BYTES: usize = 1024;
/// The BIOS read-only area searched: 0xE0000–0xFFFFF.
pub const BIOS_AREA_ADDRESS: u64 = 0xE0000;
pub const BIOS_AREA_BYTES: usize = 0x20000;
/// The RSDP lies on a 16-byte boundary in either area.
const RSDP_ALIGNMENT: usize = 16;

/// Finds the RSDP where a BIOS leaves it (ACPI 6.5 §5.2.5.1): in the first KiB of the EBDA,
/// then in 0xE0000–0xFFFFF, on a 16-byte boundary, the first candidate [`read_rsdp`] accepts.
/// An EBDA segment of 0 or an area that cannot be read is skipped. On a UEFI machine the
/// boot loader must hand the RSDP over instead.
pub fn find_root_pointer<M: FirmwareMemory>(memory: &M) -> Result<Rsdp, FirmwareTableError> {
    let ebda = memory
        .bytes(EBDA_SEGMENT_ADDRESS, 2)
        .and_then(|segment| u16_at(segment, 0))
        .map_or(0, |segment| u64::from(segment) << 4);
    let areas = [
        (ebda, EBDA_SEARCH_BYTES),
        (BIOS_AREA_ADDRESS, BIOS_AREA_BYTES),
    ];
    for (base, length) in areas {
        if base == 0 {
            continue;
        }
        let Some(area) = memory.bytes(base, length) else {
            continue;
        };
        // The signature is compared as one 8-byte word before the full check: the scan
        // visits 8,000 places, and a byte-wise comparison at each cost about 0.5 M
        // instructions at boot (docs/benchmarks.md).
        let signature = u64::from_le_bytes(*b"RSD PTR ");
        let candidates = (0..length.saturating_sub(RSDP_V1_BYTES)).step_by(RSDP_ALIGNMENT);
        if let Some(rsdp) = candidates
            .filter(|&offset| u64_at(area, offset) == Some(signature))
            .filter_map(|offset| area.get(offset..))
            .find_map(parse_rsdp)
        {
            return Ok(rsdp);
        }
    }
    Err(FirmwareTableError::NoRootPointer)
}

// ---------------------------------------------------------------------------------------------
// Memory and the root table.

/// Physical memory as the firmware left it, for reading its tables: the hypervisor's maps the
/// identity-mapped first 4 GiB, the tests' a byte image.
///
/// # The `acpi` crate's handler
///
/// `map_physical_region::<T>(address, size)` must return a pointer aligned for `T` that
/// nothing writes while the mapping lives and that is valid for reads of
/// `max(size, MAPPING_FLOOR_BYTES)` bytes: the memory at `address` when
/// [`bytes`](Self::bytes) gives all of those, otherwise a block of [`MAPPING_FLOOR_BYTES`]
/// zeros. The floor is there because acpi 5.2 re-types a header's mapping as the whole table
/// when the table is no longer than what was mapped (`SdtHeader::validate_lazy`) and then
/// reads the table's structure through it (up to the FADT's 276 bytes). Zeros read as a
/// table whose signature is four NUL bytes, which the crate refuses before it reads anything
/// else (`validate_header_fields` comes first): a root-table entry that points outside
/// readable memory is skipped rather than read, and only the header of a zero block is read.
pub trait FirmwareMemory: AcpiHandler {
    /// The `length` bytes at physical `address`, or `None` unless all of them may be read.
    fn bytes(&self, address: u64, length: usize) -> Option<&[u8]>;

    /// The `acpi` crate's view of the tables below `root`: exactly
    /// `AcpiTables::from_rsdt(self.clone(), root.acpi_revision(), root.address() as usize)`.
    ///
    /// That call is `unsafe`, so the implementation (outside this crate, which has no
    /// `unsafe`) makes it. What makes it sound: a [`RootTable`] exists only once its whole
    /// table (at least a header long) has been found readable, and the handler contract above
    /// covers every table the crate reaches from it.
    fn open(&self, root: &RootTable) -> Result<AcpiTables<Self>, AcpiError>;
}

/// The RSDT or XSDT a root pointer names, checked as far as opening it with the `acpi` crate
/// needs: its header carries the expected signature, its length covers at least the header,
/// and all of its bytes can be read. Only [`FirmwareTables::new`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootTable {
    signature: Signature,
    address: u64,
    length: u32,
}

impl RootTable {
    /// The XSDT when the root pointer gives one (revision ≥ 2, non-zero address), else the
    /// RSDT (ACPI 6.5 §5.2.5.3: "An ACPI-compatible OS must use the XSDT if present").
    fn check<M: FirmwareMemory>(memory: &M, rsdp: &Rsdp) -> Result<Self, FirmwareTableError> {
        let (signature, address) = match rsdp.xsdt_address {
            Some(xsdt) => (Signature::XSDT, xsdt),
            None => (Signature::RSDT, u64::from(rsdp.rsdt_address)),
        };
        let bytes = sized_table(memory, address, signature)?;
        Ok(RootTable {
            signature,
            address,
            length: bytes.len() as u32,
        })
    }

    pub fn signature(&self) -> Signature {
        self.signature
    }

    pub fn address(&self) -> u64 {
        self.address
    }

    pub fn length(&self) -> u32 {
        self.length
    }

    /// The revision `AcpiTables::from_rsdt` takes: 0 opens an RSDT (32-bit entries), anything
    /// else an XSDT (64-bit entries).
    pub fn acpi_revision(&self) -> u8 {
        if self.signature == Signature::XSDT {
            2
        } else {
            0
        }
    }

    /// Bytes of one entry: a 32-bit address in the RSDT (ACPI 6.5 §5.2.7), a 64-bit one in
    /// the XSDT (§5.2.8).
    fn entry_bytes(&self) -> usize {
        if self.signature == Signature::XSDT {
            8
        } else {
            4
        }
    }
}

/// A system description table: its signature, physical address and all `length` bytes,
/// header included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table<'a> {
    pub signature: Signature,
    pub address: u64,
    pub bytes: &'a [u8],
}

impl<'a> Table<'a> {
    /// The header's revision byte.
    pub fn revision(&self) -> u8 {
        read::<u8>(self.bytes, 8).unwrap_or(0)
    }

    /// What follows the header (for the DSDT: its AML).
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(HEADER_BYTES..).unwrap_or(&[])
    }
}

/// The bytes of the table at `address`: its header readable with `signature`, its length at
/// least a header, and all of it readable (ACPI 6.5 §5.2.6). No checksum.
fn sized_table<M: FirmwareMemory>(
    memory: &M,
    address: u64,
    signature: Signature,
) -> Result<&[u8], FirmwareTableError> {
    if address == 0 {
        return Err(FirmwareTableError::Missing { signature });
    }
    let unreadable = FirmwareTableError::Unreadable { signature, address };
    let header = memory.bytes(address, HEADER_BYTES).ok_or(unreadable)?;
    if header.get(..4) != Some(&signature.0[..]) {
        return Err(FirmwareTableError::WrongSignature {
            expected: signature,
            address,
        });
    }
    let length = u32_at(header, 4).ok_or(unreadable)?;
    if (length as usize) < HEADER_BYTES {
        return Err(FirmwareTableError::Truncated { signature, length });
    }
    memory.bytes(address, length as usize).ok_or(unreadable)
}

/// [`sized_table`] and the checksum over all of its bytes.
fn checked_table<M: FirmwareMemory>(
    memory: &M,
    address: u64,
    signature: Signature,
) -> Result<Table<'_>, FirmwareTableError> {
    let bytes = sized_table(memory, address, signature)?;
    if !sums_to_zero(bytes) {
        return Err(FirmwareTableError::BadChecksum { signature, address });
    }
    Ok(Table {
        signature,
        address,
        bytes,
    })
}

/// The error of the `acpi` crate, for the table with `signature` at `address`.
fn crate_error(error: AcpiError, signature: Signature, address: u64) -> FirmwareTableError {
    match error {
        AcpiError::SdtInvalidSignature(_) => FirmwareTableError::WrongSignature {
            expected: signature,
            address,
        },
        AcpiError::SdtInvalidChecksum(_) => FirmwareTableError::BadChecksum { signature, address },
        AcpiError::TableMissing(_) => FirmwareTableError::Missing { signature },
        _ => FirmwareTableError::Refused { signature },
    }
}

/// What powering off through ACPI needs: the PM1a (and optional PM1b, 0 for none) control
/// ports and the `\_S5` sleep type (ACPI 6.5 §4.8.3.2, §7.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerOff {
    pub pm1a_control_port: u16,
    pub pm1b_control_port: u16,
    pub sleep_type: u8,
}

/// The firmware's tables, opened from a root pointer.
pub struct FirmwareTables<M: FirmwareMemory> {
    memory: M,
    root: RootTable,
    tables: AcpiTables<M>,
}

impl<M: FirmwareMemory> FirmwareTables<M> {
    /// Opens the root table `rsdp` names (the XSDT if it gives one, else the RSDT): checked
    /// here for what opening needs, then by the `acpi` crate (signature, checksum).
    pub fn new(memory: M, rsdp: &Rsdp) -> Result<Self, FirmwareTableError> {
        let root = RootTable::check(&memory, rsdp)?;
        let tables = memory
            .open(&root)
            .map_err(|error| crate_error(error, root.signature, root.address))?;
        Ok(FirmwareTables {
            memory,
            root,
            tables,
        })
    }

    /// [`find_root_pointer`] in the BIOS areas, then [`new`](Self::new).
    pub fn from_bios_areas(memory: M) -> Result<Self, FirmwareTableError> {
        let rsdp = find_root_pointer(&memory)?;
        Self::new(memory, &rsdp)
    }

    pub fn root(&self) -> RootTable {
        self.root
    }

    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The physical addresses the root table lists, in order (ACPI 6.5 §5.2.7, §5.2.8).
    pub fn table_addresses(&self) -> impl Iterator<Item = u64> + '_ {
        let entry_bytes = self.root.entry_bytes();
        let entries = self
            .memory
            .bytes(self.root.address, self.root.length as usize)
            .and_then(|root| root.get(HEADER_BYTES..))
            .unwrap_or(&[]);
        entries.chunks_exact(entry_bytes).map(move |entry| {
            let address = if entry_bytes == 8 {
                u64_at(entry, 0)
            } else {
                u32_at(entry, 0).map(u64::from)
            };
            address.unwrap_or(0)
        })
    }

    /// The first table with `signature` the root table lists that passes the checks of every
    /// table (ACPI 6.5 §5.2.6: readable, at least a header long, checksum). When none does,
    /// why the first candidate failed, or [`FirmwareTableError::Missing`] when there is none.
    /// For the tables the `acpi` crate has no type for (DMAR, IVRS).
    pub fn find(&self, signature: Signature) -> Result<Table<'_>, FirmwareTableError> {
        let mut first_failure = None;
        for address in self.table_addresses() {
            let header = match address {
                0 => None,
                _ => self.memory.bytes(address, HEADER_BYTES),
            };
            if header.and_then(|header| header.get(..4)) != Some(&signature.0[..]) {
                continue;
            }
            match checked_table(&self.memory, address, signature) {
                Ok(table) => return Ok(table),
                Err(error) => {
                    first_failure.get_or_insert(error);
                }
            }
        }
        Err(first_failure.unwrap_or(FirmwareTableError::Missing { signature }))
    }

    /// The table at `address`, which must carry `signature` and pass the checks of
    /// [`find`](Self::find): for a table another table points to (the DSDT, from the FADT).
    pub fn table_at(
        &self,
        address: u64,
        signature: Signature,
    ) -> Result<Table<'_>, FirmwareTableError> {
        checked_table(&self.memory, address, signature)
    }

    /// A table the `acpi` crate has the type `T` for, found and validated by the crate, with
    /// its bytes; refused if shorter than `fixed_bytes`, the fixed part `T` describes.
    fn typed<T: acpi::AcpiTable>(
        &self,
        signature: Signature,
        fixed_bytes: usize,
    ) -> Result<(PhysicalMapping<M, T>, Table<'_>), FirmwareTableError> {
        let mapping = self
            .tables
            .find_table::<T>()
            .map_err(|error| self.explain(signature, error))?;
        let address = mapping.physical_start() as u64;
        let length = mapping.region_length();
        if length < fixed_bytes {
            return Err(FirmwareTableError::Truncated {
                signature,
                length: length as u32,
            });
        }
        let bytes = self
            .memory
            .bytes(address, length)
            .ok_or(FirmwareTableError::Unreadable { signature, address })?;
        let table = Table {
            signature,
            address,
            bytes,
        };
        Ok((mapping, table))
    }

    /// The `acpi` crate's `find_table` skips tables that fail its checks and then reports the
    /// table missing; the walk of [`find`](Self::find) tells which check failed.
    fn explain(&self, signature: Signature, error: AcpiError) -> FirmwareTableError {
        match error {
            AcpiError::TableMissing(_) => match self.find(signature) {
                Err(failure) => failure,
                Ok(_) => FirmwareTableError::Refused { signature },
            },
            other => crate_error(other, signature, 0),
        }
    }

    /// The MADT, its entry chain checked (ACPI 6.5 §5.2.12).
    pub fn madt(&self) -> Result<Madt<M>, FirmwareTableError> {
        let (mapping, table) = self.typed::<acpi::madt::Madt>(Signature::MADT, MADT_FIXED_BYTES)?;
        Madt::new(mapping, &table)
    }

    /// The FADT's fixed-hardware registers and the DSDT's address (ACPI 6.5 §5.2.9).
    pub fn fixed_hardware(&self) -> Result<FixedHardware, FirmwareTableError> {
        let (_, table) = self.typed::<acpi::fadt::Fadt>(Signature::FADT, FADT_V1_BYTES)?;
        Ok(FixedHardware::read(&table))
    }

    /// The DSDT the FADT points to (ACPI 6.5 §5.2.11.1).
    pub fn dsdt(&self) -> Result<Table<'_>, FirmwareTableError> {
        let fixed = self.fixed_hardware()?;
        self.table_at(fixed.dsdt_address, Signature::DSDT)
    }

    /// SLP_TYPa of the `\_S5` (soft-off) package in the DSDT (ACPI 6.5 §7.4.2).
    pub fn soft_off_sleep_type(&self) -> Result<u8, FirmwareTableError> {
        acpi_s5::find_s5_sleep_type(self.dsdt()?.body())
            .ok_or(FirmwareTableError::NoSoftOffSleepType)
    }

    /// The physical address of the first HPET's register block (IA-PC HPET specification
    /// 1.0a §3.2.4, the HPET description table: a Generic Address Structure at byte 40 whose
    /// address space ID must be 0, system memory, and whose address is at byte 44).
    pub fn hpet_base(&self) -> Result<u64, FirmwareTableError> {
        let table = self.find(Signature::HPET)?;
        if table.bytes.len() < HPET_FIXED_BYTES {
            return Err(FirmwareTableError::Truncated {
                signature: Signature::HPET,
                length: table.bytes.len() as u32,
            });
        }
        let space = read::<u8>(table.bytes, 40);
        let address = u64_at(table.bytes, 44).unwrap_or(0);
        if space != Some(0) || address == 0 {
            return Err(FirmwareTableError::HpetNotInMemory);
        }
        Ok(address)
    }

    /// The PM1 control ports and the `\_S5` sleep type (ACPI 6.5 §4.8.3.2.1, §7.4.2).
    pub fn power_off(&self) -> Result<PowerOff, FirmwareTableError> {
        let fixed = self.fixed_hardware()?;
        let dsdt = self.table_at(fixed.dsdt_address, Signature::DSDT)?;
        let sleep_type = acpi_s5::find_s5_sleep_type(dsdt.body())
            .ok_or(FirmwareTableError::NoSoftOffSleepType)?;
        let port = |register: Option<Register>| register.and_then(|r| r.io_port());
        let pm1a_control_port = port(fixed.pm1a_control)
            .filter(|&port| port != 0)
            .ok_or(FirmwareTableError::NoPm1aControlPort)?;
        Ok(PowerOff {
            pm1a_control_port,
            pm1b_control_port: port(fixed.pm1b_control).unwrap_or(0),
            sleep_type,
        })
    }
}
