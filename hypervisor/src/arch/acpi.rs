//! Reading the firmware's ACPI tables (ACPI 6.5 §5.2): which cores exist (MADT) and how to
//! power the machine off (FADT PM1a control block, `\_S5` in the DSDT).
//!
//! The `acpi` crate's no-alloc API stops at raw table mappings and its MADT walk needs an
//! allocator; what Tessera needs is four lookups, so they are written out here over byte
//! slices. The only unsafe step is turning a firmware-given physical range into a slice.
//!
//! The root pointer (RSDP) comes from the boot loader when it hands one over (Multiboot2
//! tags 14/15, see [`use_root_pointer`]): on UEFI machines there is no BIOS area to scan.
//! Otherwise the BIOS areas are scanned, as ACPI 6.5 §5.2.5.1 describes.

use tessera_policy::multiboot::{parse_rsdp, Rsdp};

/// The root pointer the boot loader gave, if any: set once on the bootstrap core, before
/// any table is read and before the other cores start.
static GIVEN: spin::Once<Rsdp> = spin::Once::new();

/// Makes every later lookup start from `rsdp`, the root pointer the boot loader copied
/// into its boot information (the copy holds the RSDT/XSDT addresses; where the original
/// lies does not matter). The BIOS-area scan is then not made.
pub fn use_root_pointer(rsdp: Rsdp) {
    GIVEN.call_once(|| rsdp);
}

/// Whether there is a root pointer at all (given by the boot loader or in the BIOS areas).
pub fn has_root_pointer() -> bool {
    root_pointer().is_some()
}

/// The root pointer: the one the boot loader gave, else the one found in the BIOS areas.
fn root_pointer() -> Option<Rsdp> {
    GIVEN.get().copied().or_else(find_rsdp)
}

/// A byte view of physical memory the firmware described as an ACPI table.
fn physical_bytes(address: u64, length: usize) -> Option<&'static [u8]> {
    // The boot page tables identity-map the first 4 GiB; ACPI tables of a BIOS machine live
    // there. Anything beyond is refused rather than read.
    if address == 0 || address.checked_add(length as u64)? > 0x1_0000_0000 {
        return None;
    }
    // SAFETY: the range lies in identity-mapped memory below 4 GiB which the firmware marked
    // as ACPI tables (or the BIOS read-only area); nothing in Tessera writes it.
    Some(unsafe { core::slice::from_raw_parts(address as *const u8, length) })
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

/// The RSDP: in the first KiB of the EBDA or in 0xE0000–0xFFFFF, on a 16-byte boundary
/// (ACPI 6.5 §5.2.5.1). A candidate must pass [`parse_rsdp`]'s checksums.
fn find_rsdp() -> Option<Rsdp> {
    let ebda = physical_bytes(0x40E, 2).map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])) << 4);
    let areas = [(ebda.unwrap_or(0), 1024usize), (0xE0000, 0x20000)];
    for (base, length) in areas {
        let Some(area) = physical_bytes(base, length) else {
            continue;
        };
        for offset in (0..length.saturating_sub(20)).step_by(16) {
            if let Some(rsdp) = parse_rsdp(&area[offset..]) {
                return Some(rsdp);
            }
        }
    }
    None
}

/// A table by its header (signature at 0, length at 4), checksum verified.
fn table_at(address: u64) -> Option<&'static [u8]> {
    let header = physical_bytes(address, 36)?;
    let length = read_u32(header, 4) as usize;
    let table = physical_bytes(address, length.max(36))?;
    checksum_ok(table).then_some(table)
}

/// Finds a system description table by signature through the XSDT (or RSDT).
pub fn find_table(signature: &[u8; 4]) -> Option<&'static [u8]> {
    let rsdp = root_pointer()?;
    let (root, entry_size) = match rsdp.xsdt_address {
        Some(xsdt) => (table_at(xsdt)?, 8),
        None => (table_at(u64::from(rsdp.rsdt_address))?, 4),
    };
    root[36..].chunks_exact(entry_size).find_map(|entry| {
        let address = if entry_size == 8 {
            read_u64(entry, 0)
        } else {
            u64::from(read_u32(entry, 0))
        };
        table_at(address).filter(|table| &table[0..4] == signature)
    })
}

/// Calls `found` with the APIC ID of every enabled (or online-capable) core in the MADT:
/// processor local APIC entries (type 0) and local x2APIC entries (type 9), ACPI 6.5 §5.2.12.
/// Returns false when there is no MADT.
pub fn for_each_core(mut found: impl FnMut(u32)) -> bool {
    let Some(madt) = find_table(b"APIC") else {
        return false;
    };
    let mut offset = 44;
    while offset + 2 <= madt.len() {
        let (kind, length) = (madt[offset], madt[offset + 1] as usize);
        if length < 2 || offset + length > madt.len() {
            break;
        }
        let entry = &madt[offset..offset + length];
        match kind {
            0 if length >= 8 && read_u32(entry, 4) & 0b11 != 0 => found(u32::from(entry[3])),
            9 if length >= 16 && read_u32(entry, 8) & 0b11 != 0 => found(read_u32(entry, 4)),
            _ => {}
        }
        offset += length;
    }
    true
}

/// What powering off through ACPI needs: the PM1a (and optional PM1b) control ports and
/// the `\_S5` sleep type (ACPI 6.5 §4.8.3.2, §7.4.2).
#[derive(Clone, Copy, Debug)]
pub struct PowerOff {
    pub pm1a_control_port: u16,
    pub pm1b_control_port: u16,
    pub sleep_type: u8,
}

pub fn power_off_method() -> Option<PowerOff> {
    let fadt = find_table(b"FACP")?;
    let pm1a = read_u32(fadt, 64) as u16;
    let pm1b = read_u32(fadt, 68) as u16;
    let dsdt_address = if fadt.len() >= 148 && read_u64(fadt, 140) != 0 {
        read_u64(fadt, 140)
    } else {
        u64::from(read_u32(fadt, 40))
    };
    let dsdt = table_at(dsdt_address)?;
    let sleep_type = tessera_policy::acpi_s5::find_s5_sleep_type(&dsdt[36..])?;
    (pm1a != 0).then_some(PowerOff {
        pm1a_control_port: pm1a,
        pm1b_control_port: pm1b,
        sleep_type,
    })
}
