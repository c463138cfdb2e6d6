//! The Fixed ACPI Description Table's registers (ACPI 6.5 §5.2.9): the PM1 event and control
//! blocks, the PM timer, the SMI command port, the reset register, and the DSDT's address.
//!
//! The `acpi` crate finds and validates the table; its fields are read here by offset (ACPI
//! 6.5 Table 5.9), because the crate's accessors choose the 64-bit `X_` fields by the table's
//! revision alone and read them past the end of a FADT shorter than that revision's layout,
//! which firmware ships. Here, as in ACPICA's local copy of the FADT, a field that lies
//! outside the table counts as zero: absent.

use super::Table;
use crate::bytes::{read, slice_at, u32_at, u64_at};

/// Bytes of the ACPI 1.0 FADT, the shortest accepted: everything up to the flags.
pub const FADT_V1_BYTES: usize = 116;

/// Byte offsets of the fields read (ACPI 6.5 §5.2.9, Table 5.9).
mod offset {
    pub const DSDT: usize = 40;
    pub const SMI_CMD: usize = 48;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const PM1B_EVT_BLK: usize = 60;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM1B_CNT_BLK: usize = 68;
    pub const PM_TMR_BLK: usize = 76;
    pub const PM1_EVT_LEN: usize = 88;
    pub const PM1_CNT_LEN: usize = 89;
    pub const PM_TMR_LEN: usize = 91;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_EVT_BLK: usize = 148;
    pub const X_PM1B_EVT_BLK: usize = 160;
    pub const X_PM1A_CNT_BLK: usize = 172;
    pub const X_PM1B_CNT_BLK: usize = 184;
    pub const X_PM_TMR_BLK: usize = 208;
}

/// FADT flag RESET_REG_SUP: the reset register is supported (ACPI 6.5 Table 5.10).
const RESET_REG_SUP: u32 = 1 << 10;

/// Bytes of a generic address structure (ACPI 6.5 §5.2.3.2, Table 5.1).
const GENERIC_ADDRESS_BYTES: usize = 12;

/// Where a register lies: the address space ID of a generic address structure (ACPI 6.5
/// §5.2.3.2, Table 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpace {
    /// 0: system memory.
    SystemMemory,
    /// 1: system I/O ports.
    SystemIo,
    /// Any other space (PCI configuration, embedded controller, functional fixed hardware…).
    Other(u8),
}

impl AddressSpace {
    pub const fn from_id(id: u8) -> AddressSpace {
        match id {
            0 => AddressSpace::SystemMemory,
            1 => AddressSpace::SystemIo,
            other => AddressSpace::Other(other),
        }
    }
}

/// A register block the FADT hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register {
    pub space: AddressSpace,
    pub address: u64,
    /// Bytes the block decodes: the generic address's bit width / 8, else the FADT's length
    /// field for the block.
    pub bytes: u16,
}

impl Register {
    /// The first I/O port of a block in system I/O space.
    pub fn io_port(&self) -> Option<u16> {
        match self.space {
            AddressSpace::SystemIo => u16::try_from(self.address).ok(),
            _ => None,
        }
    }

    fn system_io(address: u32, bytes: u8) -> Option<Register> {
        (address != 0).then_some(Register {
            space: AddressSpace::SystemIo,
            address: u64::from(address),
            bytes: u16::from(bytes),
        })
    }
}

/// The reset register, the value to write to it, and whether the FADT's flags announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetRegister {
    pub register: Register,
    pub value: u8,
    pub supported: bool,
}

/// What the FADT says about the fixed hardware: every register block it hands out, and
/// where the DSDT is. A block the FADT leaves at 0 is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHardware {
    pub revision: u8,
    pub flags: u32,
    /// X_DSDT when the table has it and it is non-zero, else DSDT.
    pub dsdt_address: u64,
    /// SMI_CMD: the port that hands ACPI to the operating system, and more.
    pub smi_command: Option<Register>,
    pub pm1a_event: Option<Register>,
    pub pm1b_event: Option<Register>,
    pub pm1a_control: Option<Register>,
    pub pm1b_control: Option<Register>,
    pub pm_timer: Option<Register>,
    /// RESET_REG and RESET_VALUE (ACPI 2.0 and later, §4.8.3.6).
    pub reset: Option<ResetRegister>,
}

impl FixedHardware {
    /// Reads a FADT that the `acpi` crate validated and that is at least
    /// [`FADT_V1_BYTES`] long.
    pub(super) fn read(table: &Table) -> FixedHardware {
        let fadt = table.bytes;
        let u8_field = |at: usize| read::<u8>(fadt, at).unwrap_or(0);
        let u32_field = |at: usize| u32_at(fadt, at).unwrap_or(0);
        let flags = u32_field(offset::FLAGS);
        let extended_dsdt = u64_at(fadt, offset::X_DSDT).unwrap_or(0);
        let dsdt_address = if extended_dsdt != 0 {
            extended_dsdt
        } else {
            u64::from(u32_field(offset::DSDT))
        };
        // ACPI 6.5 §5.2.9: a non-zero X_ field replaces its 32-bit predecessor, which holds a
        // system I/O port whose width is in the matching length field.
        let block = |legacy: usize, length: usize, extended: usize| {
            let length = u8_field(length);
            match generic_address(fadt, extended) {
                Some(mut register) => {
                    if register.bytes == 0 {
                        register.bytes = u16::from(length);
                    }
                    Some(register)
                }
                None => Register::system_io(u32_field(legacy), length),
            }
        };
        let reset = generic_address(fadt, offset::RESET_REG).and_then(|register| {
            Some(ResetRegister {
                register,
                value: read::<u8>(fadt, offset::RESET_VALUE)?,
                supported: flags & RESET_REG_SUP != 0,
            })
        });
        FixedHardware {
            revision: table.revision(),
            flags,
            dsdt_address,
            smi_command: Register::system_io(u32_field(offset::SMI_CMD), 1),
            pm1a_event: block(
                offset::PM1A_EVT_BLK,
                offset::PM1_EVT_LEN,
                offset::X_PM1A_EVT_BLK,
            ),
            pm1b_event: block(
                offset::PM1B_EVT_BLK,
                offset::PM1_EVT_LEN,
                offset::X_PM1B_EVT_BLK,
            ),
            pm1a_control: block(
                offset::PM1A_CNT_BLK,
                offset::PM1_CNT_LEN,
                offset::X_PM1A_CNT_BLK,
            ),
            pm1b_control: block(
                offset::PM1B_CNT_BLK,
                offset::PM1_CNT_LEN,
                offset::X_PM1B_CNT_BLK,
            ),
            pm_timer: block(offset::PM_TMR_BLK, offset::PM_TMR_LEN, offset::X_PM_TMR_BLK),
            reset,
        }
    }
}

/// The generic address structure at `at` (ACPI 6.5 §5.2.3.2): `None` when it lies (partly)
/// outside the table or its address is 0.
fn generic_address(fadt: &[u8], at: usize) -> Option<Register> {
    let structure = slice_at(fadt, at, GENERIC_ADDRESS_BYTES)?;
    let (space, bit_width, address) = (
        read::<u8>(structure, 0)?,
        read::<u8>(structure, 1)?,
        u64_at(structure, 4)?,
    );
    (address != 0).then_some(Register {
        space: AddressSpace::from_id(space),
        address,
        bytes: u16::from(bit_width / 8),
    })
}
