//! Host tests of the firmware-table reader: synthetic firmware images (RSDP v1 and v2, RSDT
//! and XSDT, MADT, FADT, DSDT) built in a byte buffer and mapped through a test handler.

use super::*;
use core::mem::size_of;
use core::ptr::NonNull;
use std::vec::Vec;

// ---------------------------------------------------------------------------------------------
// The test handler: physical memory is a byte image at `base`.

/// What the handler maps where the image has no bytes (see [`FirmwareMemory`]'s contract).
#[repr(C, align(8))]
struct Zeros([u8; MAPPING_FLOOR_BYTES]);
static ZEROS: Zeros = Zeros([0; MAPPING_FLOOR_BYTES]);

#[derive(Clone, Copy)]
struct TestMemory<'a> {
    base: u64,
    image: &'a [u8],
}

impl<'a> TestMemory<'a> {
    fn slice(&self, address: u64, length: usize) -> Option<&'a [u8]> {
        let offset = usize::try_from(address.checked_sub(self.base)?).ok()?;
        slice_at(self.image, offset, length)
    }
}

impl FirmwareMemory for TestMemory<'_> {
    fn bytes(&self, address: u64, length: usize) -> Option<&[u8]> {
        self.slice(address, length)
    }

    #[allow(unsafe_code)]
    fn open(&self, root: &RootTable) -> Result<AcpiTables<Self>, AcpiError> {
        // SAFETY: `root` was checked to lie wholly inside the image, at least a header long;
        // `map_physical_region` below maps every other region the crate asks for to image
        // bytes or to zeros, so all it reads is initialised memory that lives as long as the
        // image borrow `self` holds.
        unsafe { AcpiTables::from_rsdt(*self, root.acpi_revision(), root.address() as usize) }
    }
}

#[allow(unsafe_code)]
impl AcpiHandler for TestMemory<'_> {
    /// Maps `[physical_address, + max(size, MAPPING_FLOOR_BYTES))` to the image bytes there,
    /// or to [`ZEROS`] when the image does not hold them all.
    ///
    /// # Safety
    ///
    /// Any address and size may be passed: nothing outside the image or [`ZEROS`] is ever
    /// pointed at. `T` must be valid for any bit pattern (the crate's tables are) and no
    /// larger than `MAPPING_FLOOR_BYTES` (checked at compile time).
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        const { assert!(size_of::<T>() <= MAPPING_FLOOR_BYTES) };
        let span = size.max(MAPPING_FLOOR_BYTES);
        let pointer = match self.slice(physical_address as u64, span) {
            Some(bytes) if NonNull::from(bytes).cast::<T>().is_aligned() => {
                NonNull::from(bytes).cast::<T>()
            }
            _ => NonNull::from(&ZEROS).cast::<T>(),
        };
        // SAFETY: `pointer` is aligned for `T` and valid for reads of `span` bytes of the
        // image, or of `MAPPING_FLOOR_BYTES` zeros of which the crate reads only the header;
        // nothing writes either while `self` borrows the image.
        unsafe { PhysicalMapping::new(physical_address, pointer, size, span, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

// ---------------------------------------------------------------------------------------------
// Building firmware images.

struct Image {
    base: u64,
    bytes: Vec<u8>,
}

impl Image {
    fn new(base: u64, size: usize) -> Image {
        Image {
            base,
            bytes: std::vec![0; size],
        }
    }

    fn put(&mut self, address: u64, data: &[u8]) {
        let at = (address - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }

    fn memory(&self) -> TestMemory<'_> {
        TestMemory {
            base: self.base,
            image: &self.bytes,
        }
    }

    fn open(&self, rsdp: &Rsdp) -> Result<FirmwareTables<TestMemory<'_>>, FirmwareTableError> {
        FirmwareTables::new(self.memory(), rsdp)
    }
}

fn fix_checksum(bytes: &mut [u8], at: usize, over: usize) {
    bytes[at] = 0;
    let sum = bytes[..over].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    bytes[at] = sum.wrapping_neg();
}

/// A system description table: the header (ACPI 6.5 Table 5.4), `body`, checksum fixed.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = signature.to_vec();
    bytes.extend_from_slice(&((HEADER_BYTES + body.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&[revision, 0]);
    bytes.extend_from_slice(b"TESSRA");
    bytes.extend_from_slice(b"SYNTHETC");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(b"TSRA");
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(body);
    let length = bytes.len();
    fix_checksum(&mut bytes, 9, length);
    bytes
}

/// Overwrites bytes of a table at `at` and fixes its checksum again.
fn patch(table: &mut Vec<u8>, at: usize, data: &[u8]) {
    if table.len() < at + data.len() {
        table.resize(at + data.len(), 0);
    }
    table[at..at + data.len()].copy_from_slice(data);
    let length = table.len();
    fix_checksum(table, 9, length);
}

/// Sets a table's length field (the bytes stay), checksum over the new length.
fn set_length(table: &mut [u8], length: u32) {
    table[4..8].copy_from_slice(&length.to_le_bytes());
    let over = (length as usize).clamp(10, table.len());
    fix_checksum(table, 9, over);
}

fn rsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries
        .iter()
        .flat_map(|&address| (address as u32).to_le_bytes())
        .collect();
    table(b"RSDT", 1, &body)
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    table(b"XSDT", 1, &body)
}

fn local_apic(uid: u8, apic_id: u8, flags: u32) -> Vec<u8> {
    let mut entry = std::vec![0, 8, uid, apic_id];
    entry.extend_from_slice(&flags.to_le_bytes());
    entry
}

fn local_x2apic(x2apic_id: u32, flags: u32, uid: u32) -> Vec<u8> {
    let mut entry = std::vec![9, 16, 0, 0];
    for value in [x2apic_id, flags, uid] {
        entry.extend_from_slice(&value.to_le_bytes());
    }
    entry
}

fn io_apic(id: u8, address: u32, base: u32) -> Vec<u8> {
    let mut entry = std::vec![1, 12, id, 0];
    entry.extend_from_slice(&address.to_le_bytes());
    entry.extend_from_slice(&base.to_le_bytes());
    entry
}

/// Interrupt source override: ISA IRQ 0 → GSI 2 (ACPI 6.5 §5.2.12.5).
fn interrupt_source_override() -> Vec<u8> {
    std::vec![2, 10, 0, 0, 2, 0, 0, 0, 0, 0]
}

fn madt(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = 0xFEE0_0000u32.to_le_bytes().to_vec();
    body.extend_from_slice(&1u32.to_le_bytes());
    for entry in entries {
        body.extend_from_slice(entry);
    }
    table(b"APIC", 5, &body)
}

const FADT_V6_BYTES: usize = 276;

/// A FADT like QEMU's PIIX4 one, `length` bytes long (116: ACPI 1.0, 244: 2.0, 276: 6.x):
/// SMI_CMD 0xB2, PM1a event 0x600, control 0x604, PM timer 0x608, reset 0xCF9 ← 6, and the
/// X_ blocks mirroring the 32-bit ones where the length has room for them.
fn fadt(revision: u8, length: usize, dsdt: u64) -> Vec<u8> {
    let mut body = std::vec![0u8; FADT_V6_BYTES - HEADER_BYTES];
    let mut put = |at: usize, data: &[u8]| {
        body[at - HEADER_BYTES..at - HEADER_BYTES + data.len()].copy_from_slice(data)
    };
    put(40, &(dsdt as u32).to_le_bytes());
    put(48, &0xB2u32.to_le_bytes());
    put(56, &0x600u32.to_le_bytes());
    put(64, &0x604u32.to_le_bytes());
    put(76, &0x608u32.to_le_bytes());
    put(88, &[4, 2, 0, 4]);
    put(112, &(1u32 << 10).to_le_bytes());
    put(116, &generic_address(1, 8, 0xCF9));
    put(128, &[6]);
    put(140, &dsdt.to_le_bytes());
    put(148, &generic_address(1, 32, 0x600));
    put(172, &generic_address(1, 16, 0x604));
    put(208, &generic_address(1, 32, 0x608));
    table(b"FACP", revision, &body[..length - HEADER_BYTES])
}

fn generic_address(space: u8, bit_width: u8, address: u64) -> [u8; 12] {
    let mut bytes = [space, bit_width, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    bytes[4..].copy_from_slice(&address.to_le_bytes());
    bytes
}

/// AML: `Scope (\_SB) {}` and `Name (\_S5, Package () { 5, 5, 0, 0 })`.
const S5_AML: [u8; 22] = [
    0x10, 0x06, b'\\', b'_', b'S', b'B', b'_', //
    0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00,
];
/// Where SLP_TYPa's value lies in [`S5_AML`].
const S5_SLEEP_TYPE_AT: usize = 17;

fn dsdt(aml: &[u8]) -> Vec<u8> {
    table(b"DSDT", 2, aml)
}

fn rsdp_v1_bytes(rsdt: u32) -> Vec<u8> {
    let mut bytes = b"RSD PTR ".to_vec();
    bytes.extend_from_slice(&[0; 12]);
    bytes[9..15].copy_from_slice(b"BOCHS ");
    bytes[16..20].copy_from_slice(&rsdt.to_le_bytes());
    fix_checksum(&mut bytes, 8, 20);
    bytes
}

fn rsdp_v2_bytes(rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut bytes = rsdp_v1_bytes(rsdt);
    bytes[15] = 2;
    bytes.extend_from_slice(&36u32.to_le_bytes());
    bytes.extend_from_slice(&xsdt.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    fix_checksum(&mut bytes, 8, 20);
    fix_checksum(&mut bytes, 32, 36);
    bytes
}

// Where the standard machine's tables lie.
const BASE: u64 = 0x10_0000;
const RSDT_AT: u64 = BASE;
const XSDT_AT: u64 = BASE + 0x100;
const MADT_AT: u64 = BASE + 0x1000;
const FADT_AT: u64 = BASE + 0x2000;
const DSDT_AT: u64 = BASE + 0x3000;
const SPARE_AT: u64 = BASE + 0x4000;
const IMAGE_BYTES: usize = 0x6000;

const RSDP_V1: Rsdp = Rsdp {
    revision: 0,
    rsdt_address: RSDT_AT as u32,
    xsdt_address: None,
};
const RSDP_V2: Rsdp = Rsdp {
    revision: 2,
    rsdt_address: RSDT_AT as u32,
    xsdt_address: Some(XSDT_AT),
};

/// The standard machine's tables, to be changed by a test before [`Machine::image`].
struct Machine {
    root_entries: Vec<u64>,
    madt: Vec<u8>,
    fadt: Vec<u8>,
    dsdt: Vec<u8>,
    spare: Vec<u8>,
}

fn standard_madt() -> Vec<u8> {
    madt(&[
        local_apic(0, 0, 1),
        local_apic(1, 1, 1),
        local_apic(2, 2, 0),
        local_apic(3, 3, 0b10),
        interrupt_source_override(),
        io_apic(0, 0xFEC0_0000, 0),
        local_x2apic(0x100, 1, 4),
        local_x2apic(0x101, 0, 5),
        io_apic(1, 0xFEC0_1000, 24),
        std::vec![0x80, 4, 0xaa, 0xbb],
    ])
}

impl Machine {
    fn standard() -> Machine {
        Machine {
            root_entries: std::vec![MADT_AT, FADT_AT],
            madt: standard_madt(),
            fadt: fadt(6, FADT_V6_BYTES, DSDT_AT),
            dsdt: dsdt(&S5_AML),
            spare: Vec::new(),
        }
    }

    fn image(&self) -> Image {
        self.image_at(BASE, IMAGE_BYTES)
    }

    fn image_at(&self, base: u64, size: usize) -> Image {
        let mut image = Image::new(base, size);
        image.put(RSDT_AT, &rsdt(&self.root_entries));
        image.put(XSDT_AT, &xsdt(&self.root_entries));
        image.put(MADT_AT, &self.madt);
        image.put(FADT_AT, &self.fadt);
        image.put(DSDT_AT, &self.dsdt);
        image.put(SPARE_AT, &self.spare);
        image
    }
}

const USABLE: [u32; 4] = [0, 1, 3, 0x100];

fn usable_ids(tables: &FirmwareTables<TestMemory<'_>>) -> Result<Vec<u32>, FirmwareTableError> {
    Ok(tables.madt()?.usable_apic_ids().collect())
}

// ---------------------------------------------------------------------------------------------
// The root pointer.

#[test]
fn rsdp_checksums_and_revisions() {
    assert_eq!(
        read_rsdp(&rsdp_v1_bytes(0x1234)),
        Ok(Rsdp {
            revision: 0,
            rsdt_address: 0x1234,
            xsdt_address: None
        })
    );
    let v2 = rsdp_v2_bytes(0x1234, 0x5678);
    assert_eq!(read_rsdp(&v2).unwrap().xsdt_address, Some(0x5678));
    // A revision-2 RSDP cut to its first 20 bytes is refused (its length is unknown).
    assert_eq!(read_rsdp(&v2[..20]), Err(RsdpError::TooShort));
    // A zero XSDT address means: use the RSDT.
    let no_xsdt = read_rsdp(&rsdp_v2_bytes(0x1234, 0)).unwrap();
    assert_eq!((no_xsdt.revision, no_xsdt.xsdt_address), (2, None));
    let mut bad = rsdp_v1_bytes(1);
    bad[0] = b'X';
    assert_eq!(read_rsdp(&bad), Err(RsdpError::BadSignature));
    let mut bad = rsdp_v1_bytes(1);
    bad[16] ^= 1;
    assert_eq!(read_rsdp(&bad), Err(RsdpError::BadChecksum));
    let mut bad = v2.clone();
    bad[24] ^= 1;
    assert_eq!(read_rsdp(&bad), Err(RsdpError::BadExtendedChecksum));
    // A length field larger than the bytes given.
    let mut bad = v2.clone();
    bad[20] = 200;
    assert_eq!(read_rsdp(&bad), Err(RsdpError::TooShort));
    assert_eq!(read_rsdp(b"RSD PTR "), Err(RsdpError::TooShort));
    assert_eq!(parse_rsdp(&[]), None);
    // Every cut of a valid v2 RSDP is refused, never a panic.
    for cut in 0..v2.len() {
        assert!(read_rsdp(&v2[..cut]).is_err(), "cut at {cut}");
    }
}

/// A BIOS machine's first MiB and the standard tables above it.
fn bios_image() -> Image {
    Machine::standard().image_at(0, BASE as usize + IMAGE_BYTES)
}

#[test]
fn root_pointer_in_the_ebda_or_the_bios_area() {
    // In the EBDA, whose segment the BIOS data area holds at 0x40E.
    let mut image = bios_image();
    image.put(0x40E, &0x9FC0u16.to_le_bytes());
    image.put(0x9_FC40, &rsdp_v2_bytes(RSDT_AT as u32, XSDT_AT));
    assert_eq!(find_root_pointer(&image.memory()), Ok(RSDP_V2));

    // In 0xE0000–0xFFFFF, after a candidate with a bad checksum and a misaligned one.
    let mut image = bios_image();
    let mut broken = rsdp_v1_bytes(0x1111);
    broken[19] ^= 0xff;
    image.put(0xE_0000, &broken);
    image.put(0xE_0018, &rsdp_v1_bytes(0x2222));
    image.put(0xF_5A60, &rsdp_v1_bytes(RSDT_AT as u32));
    assert_eq!(find_root_pointer(&image.memory()), Ok(RSDP_V1));
    // The whole chain from there.
    let tables = FirmwareTables::from_bios_areas(image.memory()).unwrap();
    assert_eq!(tables.root().signature(), Signature::RSDT);
    assert_eq!(usable_ids(&tables).unwrap(), USABLE);

    // An EBDA segment of 0 is not searched (the page at 0 holds the interrupt vectors).
    let mut image = bios_image();
    image.put(0x40, &rsdp_v1_bytes(RSDT_AT as u32));
    assert_eq!(
        find_root_pointer(&image.memory()),
        Err(FirmwareTableError::NoRootPointer)
    );
    // Nothing readable at all.
    let empty = Image::new(0x10_0000, 16);
    assert_eq!(
        FirmwareTables::from_bios_areas(empty.memory()).err(),
        Some(FirmwareTableError::NoRootPointer)
    );
}

// ---------------------------------------------------------------------------------------------
// The standard machine, through the RSDT and the XSDT.

#[test]
fn cores_and_io_apics_through_the_rsdt_and_the_xsdt() {
    let image = Machine::standard().image();
    for (rsdp, root) in [(RSDP_V1, Signature::RSDT), (RSDP_V2, Signature::XSDT)] {
        let tables = image.open(&rsdp).unwrap();
        assert_eq!(tables.root().signature(), root);
        assert_eq!(
            tables.table_addresses().collect::<Vec<_>>(),
            [MADT_AT, FADT_AT]
        );
        let madt = tables.madt().unwrap();
        assert_eq!(madt.address(), MADT_AT);
        assert_eq!(madt.local_apic_address(), 0xFEE0_0000);
        assert_eq!(madt.usable_apic_ids().collect::<Vec<_>>(), USABLE);
        let processors: Vec<_> = madt.processors().collect();
        assert_eq!(processors.len(), 6);
        assert_eq!(
            processors[3],
            Processor {
                apic_id: 3,
                processor_uid: 3,
                enabled: false,
                online_capable: true,
                x2apic_entry: false,
            }
        );
        assert_eq!(
            processors[5],
            Processor {
                apic_id: 0x101,
                processor_uid: 5,
                enabled: false,
                online_capable: false,
                x2apic_entry: true,
            }
        );
        assert!(!processors[2].usable() && processors[4].usable());
        assert_eq!(
            madt.io_apics().collect::<Vec<_>>(),
            [
                IoApic {
                    id: 0,
                    address: 0xFEC0_0000,
                    global_system_interrupt_base: 0,
                },
                IoApic {
                    id: 1,
                    address: 0xFEC0_1000,
                    global_system_interrupt_base: 24,
                },
            ]
        );
    }
}

#[test]
fn entries_shorter_than_their_structure_are_skipped() {
    let mut machine = Machine::standard();
    // A local APIC entry of 6 bytes and an IOAPIC entry of 10, each followed by enough
    // entries for the crate's structure to stay inside the table.
    machine.madt = madt(&[
        std::vec![0, 6, 7, 7, 1, 0],
        local_apic(0, 0, 1),
        std::vec![1, 10, 9, 0, 0, 0, 0xC0, 0xFE, 0, 0],
        io_apic(0, 0xFEC0_0000, 0),
    ]);
    let image = machine.image();
    let tables = image.open(&RSDP_V2).unwrap();
    let madt = tables.madt().unwrap();
    assert_eq!(madt.usable_apic_ids().collect::<Vec<_>>(), [0]);
    assert_eq!(madt.io_apics().count(), 1);
}

#[test]
fn fixed_hardware_of_an_acpi_6_fadt() {
    let image = Machine::standard().image();
    let tables = image.open(&RSDP_V2).unwrap();
    let fixed = tables.fixed_hardware().unwrap();
    let io = |address: u64, bytes: u16| {
        Some(Register {
            space: AddressSpace::SystemIo,
            address,
            bytes,
        })
    };
    assert_eq!(
        fixed,
        FixedHardware {
            revision: 6,
            flags: 1 << 10,
            dsdt_address: DSDT_AT,
            smi_command: io(0xB2, 1),
            pm1a_event: io(0x600, 4),
            pm1b_event: None,
            pm1a_control: io(0x604, 2),
            pm1b_control: None,
            pm_timer: io(0x608, 4),
            reset: Some(ResetRegister {
                register: io(0xCF9, 1).unwrap(),
                value: 6,
                supported: true,
            }),
        }
    );
    assert_eq!(tables.dsdt().unwrap().address, DSDT_AT);
}

#[test]
fn extended_fields_replace_the_32_bit_ones() {
    let mut machine = Machine::standard();
    // X_PM1a_CNT_BLK at another port, X_DSDT elsewhere than DSDT, a PM1b control block.
    patch(&mut machine.fadt, 172, &generic_address(1, 16, 0x1004));
    patch(&mut machine.fadt, 140, &SPARE_AT.to_le_bytes());
    patch(&mut machine.fadt, 68, &0x1204u32.to_le_bytes());
    let mut spare = dsdt(&S5_AML);
    patch(&mut spare, HEADER_BYTES + S5_SLEEP_TYPE_AT, &[0x03]);
    machine.spare = spare;
    let image = machine.image();
    let tables = image.open(&RSDP_V2).unwrap();
    let fixed = tables.fixed_hardware().unwrap();
    assert_eq!(fixed.dsdt_address, SPARE_AT);
    assert_eq!(fixed.pm1a_control.unwrap().address, 0x1004);
    assert_eq!(
        tables.power_off(),
        Ok(PowerOff {
            pm1a_control_port: 0x1004,
            pm1b_control_port: 0x1204,
            sleep_type: 3,
        })
    );
}

#[test]
fn an_acpi_1_fadt_has_no_extended_fields_and_no_reset_register() {
    let mut machine = Machine::standard();
    machine.fadt = fadt(1, FADT_V1_BYTES, DSDT_AT);
    let image = machine.image();
    let tables = image.open(&RSDP_V1).unwrap();
    let fixed = tables.fixed_hardware().unwrap();
    assert_eq!(fixed.revision, 1);
    assert_eq!(fixed.dsdt_address, DSDT_AT);
    assert_eq!(fixed.pm1a_control.unwrap().io_port(), Some(0x604));
    assert_eq!(fixed.reset, None);
    assert_eq!(tables.soft_off_sleep_type(), Ok(5));
}

#[test]
fn a_fadt_shorter_than_its_revision_is_read_only_as_far_as_it_goes() {
    let mut machine = Machine::standard();
    // Revision 3 (ACPI 2.0) but only 129 bytes: the reset register and no X_ field. What
    // follows it in memory looks like X_ fields pointing elsewhere; none may be used.
    machine.fadt = fadt(3, 129, DSDT_AT);
    let mut image = machine.image();
    image.put(FADT_AT + 140, &0xdead_0000u64.to_le_bytes());
    image.put(FADT_AT + 172, &generic_address(1, 16, 0x9999));
    let tables = image.open(&RSDP_V2).unwrap();
    let fixed = tables.fixed_hardware().unwrap();
    assert_eq!(fixed.dsdt_address, DSDT_AT);
    assert_eq!(fixed.pm1a_control.unwrap().address, 0x604);
    assert_eq!(fixed.reset.unwrap().register.address, 0xCF9);
    assert_eq!(tables.power_off().unwrap().pm1a_control_port, 0x604);
}

#[test]
fn power_off_reads_the_pm1_control_ports_and_the_s5_sleep_type() {
    let image = Machine::standard().image();
    for rsdp in [RSDP_V1, RSDP_V2] {
        assert_eq!(
            image.open(&rsdp).unwrap().power_off(),
            Ok(PowerOff {
                pm1a_control_port: 0x604,
                pm1b_control_port: 0,
                sleep_type: 5,
            })
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad checksums, truncated tables, missing tables.

#[test]
fn bad_checksums() {
    use FirmwareTableError::BadChecksum;
    // The root table: the crate refuses to open it.
    let mut image = Machine::standard().image();
    image.bytes[(XSDT_AT - BASE) as usize + 36] ^= 1;
    assert_eq!(
        image.open(&RSDP_V2).err(),
        Some(BadChecksum {
            signature: Signature::XSDT,
            address: XSDT_AT
        })
    );
    // The RSDT is still fine.
    assert!(image.open(&RSDP_V1).is_ok());

    let corrupt = |at: u64| {
        let mut image = Machine::standard().image();
        image.bytes[(at - BASE) as usize + 20] ^= 0x40;
        image
    };
    let image = corrupt(MADT_AT);
    let tables = image.open(&RSDP_V2).unwrap();
    assert_eq!(
        tables.madt().err(),
        Some(BadChecksum {
            signature: Signature::MADT,
            address: MADT_AT
        })
    );
    let image = corrupt(FADT_AT);
    let tables = image.open(&RSDP_V2).unwrap();
    let fadt_error = BadChecksum {
        signature: Signature::FADT,
        address: FADT_AT,
    };
    assert_eq!(tables.fixed_hardware().err(), Some(fadt_error));
    assert_eq!(tables.power_off().err(), Some(fadt_error));
    let image = corrupt(DSDT_AT);
    let tables = image.open(&RSDP_V2).unwrap();
    assert_eq!(
        tables.power_off().err(),
        Some(BadChecksum {
            signature: Signature::DSDT,
            address: DSDT_AT
        })
    );

    // A broken MADT listed before a good one: the good one is used.
    let mut machine = Machine::standard();
    machine.spare = madt(&[local_apic(0, 9, 1)]);
    machine.root_entries = std::vec![MADT_AT, SPARE_AT, FADT_AT];
    machine.madt[20] ^= 0x40;
    let image = machine.image();
    let tables = image.open(&RSDP_V2).unwrap();
    assert_eq!(usable_ids(&tables), Ok(std::vec![9]));
    assert_eq!(tables.find(Signature::MADT).unwrap().address, SPARE_AT);
}

#[test]
fn truncated_tables() {
    use FirmwareTableError::{MalformedEntry, Truncated, Unreadable};
    // A root table whose length is below its header.
    let mut image = Machine::standard().image();
    let at = (XSDT_AT - BASE) as usize;
    set_length(&mut image.bytes[at..at + 36], 20);
    assert_eq!(
        image.open(&RSDP_V2).err(),
        Some(Truncated {
            signature: Signature::XSDT,
            length: 20
        })
    );
    // A root table running out of readable memory.
    let mut image = Machine::standard().image();
    set_length(&mut image.bytes[at..at + 36], 0x10_0000);
    assert_eq!(
        image.open(&RSDP_V2).err(),
        Some(Unreadable {
            signature: Signature::XSDT,
            address: XSDT_AT
        })
    );

    let with_madt = |madt: Vec<u8>| {
        let mut machine = Machine::standard();
        machine.madt = madt;
        machine.image()
    };
    let madt_error = |image: &Image| image.open(&RSDP_V2).unwrap().madt().err();
    // A MADT without room for its local APIC address and flags.
    let mut short = table(b"APIC", 5, &[0; 4]);
    set_length(&mut short, 40);
    assert_eq!(
        madt_error(&with_madt(short)),
        Some(Truncated {
            signature: Signature::MADT,
            length: 40
        })
    );
    // A MADT longer than readable memory.
    let mut long = standard_madt();
    set_length(&mut long, 0x10_0000);
    assert_eq!(
        madt_error(&with_madt(long)),
        Some(Unreadable {
            signature: Signature::MADT,
            address: MADT_AT
        })
    );
    // Entries: of length 0 (the crate's walk would never end), running past the end, a lone
    // trailing byte, and an IOAPIC entry whose structure would end past the table.
    let malformed = |offset| {
        Some(MalformedEntry {
            signature: Signature::MADT,
            offset,
        })
    };
    let zero = madt(&[local_apic(0, 0, 1), std::vec![0, 0]]);
    assert_eq!(madt_error(&with_madt(zero)), malformed(52));
    let overrun = madt(&[local_apic(0, 0, 1), std::vec![9, 16, 0, 0]]);
    assert_eq!(madt_error(&with_madt(overrun)), malformed(52));
    let trailing = madt(&[local_apic(0, 0, 1), std::vec![0x80]]);
    assert_eq!(madt_error(&with_madt(trailing)), malformed(52));
    let short_io_apic = madt(&[std::vec![1, 4, 0, 0]]);
    assert_eq!(madt_error(&with_madt(short_io_apic)), malformed(44));

    // A FADT shorter than ACPI 1.0's, a DSDT shorter than its header.
    let mut machine = Machine::standard();
    machine.fadt = fadt(1, 100, DSDT_AT);
    let image = machine.image();
    assert_eq!(
        image.open(&RSDP_V2).unwrap().fixed_hardware().err(),
        Some(Truncated {
            signature: Signature::FADT,
            length: 100
        })
    );
    let mut machine = Machine::standard();
    set_length(&mut machine.dsdt, 20);
    let image = machine.image();
    assert_eq!(
        image.open(&RSDP_V2).unwrap().power_off().err(),
        Some(Truncated {
            signature: Signature::DSDT,
            length: 20
        })
    );
}

#[test]
fn missing_tables() {
    use FirmwareTableError::*;
    let open = |machine: Machine| machine.image();
    let mut machine = Machine::standard();
    machine.root_entries = std::vec![FADT_AT];
    let image = open(machine);
    let tables = image.open(&RSDP_V2).unwrap();
    let madt = Signature::MADT;
    assert_eq!(tables.madt().err(), Some(Missing { signature: madt }));
    assert!(tables.power_off().is_ok());

    let mut machine = Machine::standard();
    machine.root_entries = std::vec![MADT_AT];
    let image = open(machine);
    let tables = image.open(&RSDP_V1).unwrap();
    let fadt_missing = Missing {
        signature: Signature::FADT,
    };
    assert_eq!(tables.power_off().err(), Some(fadt_missing));
    assert_eq!(tables.dsdt().err(), Some(fadt_missing));
    assert_eq!(usable_ids(&tables), Ok(USABLE.to_vec()));

    // Entries at 0 and beyond readable memory are skipped, as is an unknown table.
    let mut machine = Machine::standard();
    machine.spare = table(b"SSDT", 2, &S5_AML);
    machine.root_entries = std::vec![0, 0xFFFF_F000, SPARE_AT, MADT_AT, FADT_AT];
    let image = open(machine);
    for rsdp in [RSDP_V1, RSDP_V2] {
        let tables = image.open(&rsdp).unwrap();
        assert_eq!(usable_ids(&tables), Ok(USABLE.to_vec()));
        assert!(tables.power_off().is_ok());
    }

    // The DSDT pointer: 0, at a table that is not a DSDT; a DSDT without \_S5.
    let mut machine = Machine::standard();
    machine.fadt = fadt(6, FADT_V6_BYTES, 0);
    let tables_image = open(machine);
    let tables = tables_image.open(&RSDP_V2).unwrap();
    let dsdt_missing = Missing {
        signature: Signature::DSDT,
    };
    assert_eq!(tables.power_off().err(), Some(dsdt_missing));
    let mut machine = Machine::standard();
    machine.fadt = fadt(6, FADT_V6_BYTES, MADT_AT);
    let image = open(machine);
    assert_eq!(
        image.open(&RSDP_V2).unwrap().soft_off_sleep_type(),
        Err(WrongSignature {
            expected: Signature::DSDT,
            address: MADT_AT
        })
    );
    let mut machine = Machine::standard();
    machine.dsdt = dsdt(&[0x10, 0x06, b'\\', b'_', b'S', b'B', b'_']);
    let image = open(machine);
    assert_eq!(
        image.open(&RSDP_V2).unwrap().power_off(),
        Err(NoSoftOffSleepType)
    );

    // No PM1a control port: zero, or a block in memory space.
    let mut machine = Machine::standard();
    patch(&mut machine.fadt, 172, &[0; 12]);
    patch(&mut machine.fadt, 64, &[0; 4]);
    let image = open(machine);
    assert_eq!(
        image.open(&RSDP_V2).unwrap().power_off(),
        Err(NoPm1aControlPort)
    );
    let mut machine = Machine::standard();
    patch(&mut machine.fadt, 172, &generic_address(0, 16, 0xFED0_0000));
    let image = open(machine);
    assert_eq!(
        image.open(&RSDP_V2).unwrap().power_off(),
        Err(NoPm1aControlPort)
    );

    // The root pointer names no root table: nothing there, or another signature.
    let image = Machine::standard().image();
    let nowhere = Rsdp {
        revision: 2,
        rsdt_address: 0,
        xsdt_address: Some(0x4000_0000),
    };
    assert_eq!(
        image.open(&nowhere).err(),
        Some(Unreadable {
            signature: Signature::XSDT,
            address: 0x4000_0000
        })
    );
    let elsewhere = Rsdp {
        revision: 0,
        rsdt_address: FADT_AT as u32,
        xsdt_address: None,
    };
    assert_eq!(
        image.open(&elsewhere).err(),
        Some(WrongSignature {
            expected: Signature::RSDT,
            address: FADT_AT
        })
    );
    let zero = Rsdp {
        revision: 0,
        rsdt_address: 0,
        xsdt_address: None,
    };
    assert_eq!(
        image.open(&zero).err(),
        Some(Missing {
            signature: Signature::RSDT
        })
    );
}

#[test]
fn tables_without_a_crate_type_are_found_by_signature() {
    let mut machine = Machine::standard();
    machine.spare = table(b"DMAR", 1, &[0x26, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    machine.root_entries = std::vec![MADT_AT, FADT_AT, SPARE_AT];
    let image = machine.image();
    let tables = image.open(&RSDP_V2).unwrap();
    let dmar = tables.find(Signature::DMAR).unwrap();
    assert_eq!((dmar.address, dmar.revision()), (SPARE_AT, 1));
    assert_eq!(dmar.body()[0], 0x26);
    assert_eq!(
        tables.find(Signature::IVRS),
        Err(FirmwareTableError::Missing {
            signature: Signature::IVRS
        })
    );
    let mut image = machine.image();
    image.bytes[(SPARE_AT - BASE) as usize + 40] ^= 1;
    assert_eq!(
        image.open(&RSDP_V2).unwrap().find(Signature::DMAR),
        Err(FirmwareTableError::BadChecksum {
            signature: Signature::DMAR,
            address: SPARE_AT
        })
    );
}

/// The body of an HPET table (after the header): event timer block ID, the register
/// block's Generic Address Structure in address space `space` at `address`, HPET number,
/// minimum tick, page protection.
fn hpet_body(space: u8, address: u64) -> Vec<u8> {
    let mut body = std::vec![0x01, 0xa2, 0x86, 0x80]; // block ID: vendor 8086h, 3 timers
    body.extend_from_slice(&[space, 64, 0, 0]);
    body.extend_from_slice(&address.to_le_bytes());
    body.extend_from_slice(&[0, 0x80, 0x00, 0]);
    body
}

#[test]
fn the_hpet_register_block_is_read_from_its_table() {
    let mut machine = Machine::standard();
    machine.root_entries = std::vec![MADT_AT, FADT_AT, SPARE_AT];
    machine.spare = table(b"HPET", 1, &hpet_body(0, 0xfed0_0000));
    let image = machine.image();
    assert_eq!(image.open(&RSDP_V2).unwrap().hpet_base(), Ok(0xfed0_0000));
    // In I/O space, at 0, or cut short: no HPET to calibrate against.
    machine.spare = table(b"HPET", 1, &hpet_body(1, 0xfed0_0000));
    let image = machine.image();
    assert_eq!(
        image.open(&RSDP_V2).unwrap().hpet_base(),
        Err(FirmwareTableError::HpetNotInMemory)
    );
    machine.spare = table(b"HPET", 1, &hpet_body(0, 0));
    let image = machine.image();
    assert_eq!(
        image.open(&RSDP_V2).unwrap().hpet_base(),
        Err(FirmwareTableError::HpetNotInMemory)
    );
    machine.spare = table(b"HPET", 1, &hpet_body(0, 0xfed0_0000)[..12]);
    let image = machine.image();
    assert_eq!(
        image.open(&RSDP_V2).unwrap().hpet_base(),
        Err(FirmwareTableError::Truncated {
            signature: Signature::HPET,
            length: 48
        })
    );
    machine.root_entries = std::vec![MADT_AT, FADT_AT];
    let image = machine.image();
    assert_eq!(
        image.open(&RSDP_V2).unwrap().hpet_base(),
        Err(FirmwareTableError::Missing {
            signature: Signature::HPET
        })
    );
}

#[test]
fn errors_and_signatures_display_readably() {
    use std::string::ToString;
    assert_eq!(Signature::MADT.to_string(), "APIC");
    assert_eq!(
        std::format!("{:?}", Signature([b'A', 0, b'\n', b'Z'])),
        "\"A\\x00\\x0aZ\""
    );
    let error = FirmwareTableError::BadChecksum {
        signature: Signature::FADT,
        address: 0x1000,
    };
    assert_eq!(error.to_string(), "ACPI FACP at 0x1000 has a bad checksum");
}

// ---------------------------------------------------------------------------------------------
// Garbage.

/// Reads everything there is to read; the results do not matter, only that it returns.
fn read_everything(image: &Image) {
    for rsdp in [RSDP_V1, RSDP_V2] {
        let Ok(tables) = image.open(&rsdp) else {
            continue;
        };
        if let Ok(madt) = tables.madt() {
            let _ = madt.processors().count() + madt.io_apics().count();
        }
        let _ = tables.fixed_hardware();
        let _ = tables.power_off();
        let _ = tables.find(Signature::DMAR);
    }
}

#[test]
fn corrupted_tables_never_panic_or_hang() {
    let standard = Machine::standard().image();
    // Lengths and entry counts are where a reader goes wrong: hit every table's length field
    // and the first bytes of every table with every value of a byte.
    for at in [RSDT_AT, XSDT_AT, MADT_AT, FADT_AT, DSDT_AT] {
        for field in [4usize, 5, 6, 7, 45, 49, 53] {
            for value in [0u8, 1, 2, 8, 35, 36, 43, 44, 0x7f, 0x80, 0xff] {
                let mut image = Machine::standard().image();
                image.bytes[(at - BASE) as usize + field] = value;
                read_everything(&image);
            }
        }
    }
    // Pseudo-random bytes over the tables, checksums left as they fall or fixed again.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let mut image = Image {
            base: standard.base,
            bytes: standard.bytes.clone(),
        };
        let table_at = [RSDT_AT, XSDT_AT, MADT_AT, FADT_AT, DSDT_AT][round % 5];
        let start = (table_at - BASE) as usize;
        for _ in 0..1 + round % 4 {
            let random = next();
            let at = start + (random as usize >> 8) % 160;
            image.bytes[at] = random as u8;
        }
        if round % 2 == 0 {
            let length = u32_at(&image.bytes, start + 4).unwrap() as usize;
            let over = length.clamp(10, 0x200);
            fix_checksum(&mut image.bytes[start..start + 0x200], 9, over);
        }
        read_everything(&image);
    }
}
