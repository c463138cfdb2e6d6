//! Reading the firmware's ACPI tables (ACPI 6.5 §5.2) from physical memory: which cores
//! exist (MADT), which IOAPICs and fixed-hardware ports the firmware describes, and how to
//! power the machine off (FADT PM1 control blocks, `\_S5` in the DSDT).
//!
//! The parsing is `tessera_policy::firmware_acpi` (host-tested, with the `acpi` crate); this
//! module only gives it memory to read: [`IdentityMapped`], the first 4 GiB the boot page
//! tables identity-map. Turning a firmware-given physical range into a slice, and opening the
//! `acpi` crate's view of the tables, are the only unsafe steps.
//!
//! The root pointer (RSDP) comes from the boot loader when it hands one over (Multiboot2
//! tags 14/15, see [`use_root_pointer`]): on UEFI machines there is no BIOS area to scan.
//! Otherwise the BIOS areas are scanned, as ACPI 6.5 §5.2.5.1 describes.

use core::mem::size_of;
use core::ptr::NonNull;
use tessera_policy::firmware_acpi::{
    self, AcpiError, AcpiHandler, AcpiTables, FirmwareMemory, FirmwareTableError, FirmwareTables,
    PhysicalMapping, RootTable, MAPPING_FLOOR_BYTES,
};
use tessera_policy::multiboot::Rsdp;

pub use tessera_policy::firmware_acpi::{PowerOff, Signature};

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

/// The result of the BIOS-area scan, made once: every table lookup starts from the root
/// pointer, and scanning the 128 KiB area in 16-byte steps each time cost about 0.5 M
/// instructions per lookup at boot (docs/benchmarks.md).
static SCANNED: spin::Once<Option<Rsdp>> = spin::Once::new();

/// The root pointer: the one the boot loader gave, else the one found in the BIOS areas.
fn root_pointer() -> Option<Rsdp> {
    GIVEN
        .get()
        .copied()
        .or_else(|| *SCANNED.call_once(|| firmware_acpi::find_root_pointer(&IdentityMapped).ok()))
}

/// The firmware's tables, opened from the root pointer: for every other lookup (the MADT's
/// IOAPICs, the FADT's fixed-hardware ports, tables by signature).
pub fn tables() -> Result<FirmwareTables<IdentityMapped>, FirmwareTableError> {
    let rsdp = root_pointer().ok_or(FirmwareTableError::NoRootPointer)?;
    FirmwareTables::new(IdentityMapped, &rsdp)
}

/// Calls `found` with the APIC ID of every enabled (or online-capable) core in the MADT:
/// processor local APIC entries (type 0) and local x2APIC entries (type 9), ACPI 6.5 §5.2.12.
/// Returns false when there is no usable MADT (the reason is logged).
pub fn for_each_core(found: impl FnMut(u32)) -> bool {
    match tables().and_then(|tables| tables.madt()) {
        Ok(madt) => {
            madt.usable_apic_ids().for_each(found);
            true
        }
        Err(error) => {
            log::warn!("firmware tables: {error}");
            false
        }
    }
}

/// What powering off through ACPI needs (ACPI 6.5 §4.8.3.2, §7.4.2), or `None` (the reason
/// is logged).
pub fn power_off_method() -> Option<PowerOff> {
    match tables().and_then(|tables| tables.power_off()) {
        Ok(method) => Some(method),
        Err(error) => {
            log::warn!("power off through ACPI: {error}");
            None
        }
    }
}

/// The end of the memory the boot page tables identity-map: the first 4 GiB. The ACPI tables
/// of a BIOS machine live there; anything beyond is refused rather than read.
const IDENTITY_MAPPED_END: u64 = 0x1_0000_0000;

/// The physical memory the boot page tables identity-map, as the firmware-table parser reads
/// it. Firmware tables lie in memory the firmware reserved for them (or in the BIOS
/// read-only area); nothing in Tessera writes it.
#[derive(Clone, Copy, Debug)]
pub struct IdentityMapped;

/// Whether `[address, address + length)` lies in the identity-mapped memory, page 0 (where
/// a null pointer in a table would lead) excluded.
fn readable(address: u64, length: usize) -> bool {
    let end = address.checked_add(length as u64);
    address != 0 && end.is_some_and(|end| end <= IDENTITY_MAPPED_END)
}

/// What [`IdentityMapped`] maps where it may not read: zeros, which the `acpi` crate takes
/// for a table with an empty signature and skips (the contract of [`FirmwareMemory`]).
#[repr(C, align(8))]
struct Zeros([u8; MAPPING_FLOOR_BYTES]);
static ZEROS: Zeros = Zeros([0; MAPPING_FLOOR_BYTES]);

impl FirmwareMemory for IdentityMapped {
    fn bytes(&self, address: u64, length: usize) -> Option<&[u8]> {
        if !readable(address, length) {
            return None;
        }
        // SAFETY: `readable` checked that the range is non-null and ends at or below 4 GiB,
        // which the boot page tables identity-map for as long as the hypervisor runs; the
        // bytes are plain integers, valid whatever they hold, and nothing in Tessera writes
        // firmware tables or the BIOS areas, so a shared `'static` view is sound.
        Some(unsafe { core::slice::from_raw_parts(address as *const u8, length) })
    }

    fn open(&self, root: &RootTable) -> Result<AcpiTables<Self>, AcpiError> {
        // SAFETY: `from_rsdt` needs a readable RSDT/XSDT at the address: a `RootTable` exists
        // only after firmware_acpi checked that its whole table, at least a header long, is
        // `readable`. Every other region the crate maps through `map_physical_region` below
        // is identity-mapped memory or zeros, so it never reads memory that is not there.
        unsafe { AcpiTables::from_rsdt(*self, root.acpi_revision(), root.address() as usize) }
    }
}

impl AcpiHandler for IdentityMapped {
    /// Maps `[physical_address, + max(size, MAPPING_FLOOR_BYTES))` to itself when that range
    /// is [`readable`] and `physical_address` is aligned for `T`, otherwise to [`ZEROS`] (the
    /// contract of [`FirmwareMemory`]).
    ///
    /// # Safety
    ///
    /// Any address and size may be passed: the pointer returned is always valid for reads of
    /// `max(size, MAPPING_FLOOR_BYTES)` identity-mapped bytes, or of `MAPPING_FLOOR_BYTES`
    /// zeros. `T` must be valid for any bit pattern (the `acpi` crate's tables are packed
    /// integers) and no larger than `MAPPING_FLOOR_BYTES` (checked at compile time).
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        const { assert!(size_of::<T>() <= MAPPING_FLOOR_BYTES) };
        let span = size.max(MAPPING_FLOOR_BYTES);
        let pointer = match NonNull::new(physical_address as *mut T) {
            Some(pointer) if pointer.is_aligned() && readable(physical_address as u64, span) => {
                pointer
            }
            _ => NonNull::from(&ZEROS).cast::<T>(),
        };
        // SAFETY: `pointer` is non-null, aligned for `T` (`ZEROS` is 8-aligned, more than any
        // packed table needs) and valid for reads of `span` identity-mapped bytes, or of
        // `MAPPING_FLOOR_BYTES` zeros in a static of which the crate reads only the header (its
        // NUL signature fails first); nothing writes either while the mapping lives, and
        // unmapping has nothing to undo.
        unsafe { PhysicalMapping::new(physical_address, pointer, size, span, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}
