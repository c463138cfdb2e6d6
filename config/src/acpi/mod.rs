//! Per-partition ACPI tables, built on the host at build time: RSDP (revision 2) → XSDT →
//! FADT (revision 6, hardware-reduced, with reset and sleep registers at the
//! [`tessera_abi::virtual_platform`] ports) → MADT (the partition's x2APIC IDs, its IOAPIC
//! view when it owns pins), DSDT (one PNP0501 device per owned UART, the PCI host bridge
//! `\_SB.PCI0` and the motherboard resource reserving its ECAM window when the partition
//! owns PCI functions, `\_S5`) and, with a virtual ECAM window, the MCFG.
//!
//! The tables form one blob loaded at [`TABLES_GUEST`] with the RSDP first, so that guests
//! that scan 0xE0000–0xFFFFF for "RSD PTR " find it as well as Linux, which reads
//! `boot_params.acpi_rsdp_addr`. Field offsets follow ACPI 6.5 §5.2.

pub mod aml;

use tessera_abi::virtual_platform::{
    RESET_PORT, RESET_VALUE, S5_SLEEP_TYPE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT,
};

/// Guest-physical address of the tables (and of the RSDP, their first structure).
pub const TABLES_GUEST: u64 = 0xe_0000;
/// The end of the BIOS area the RSDP may be found in by scanning.
pub const SCAN_AREA_END: u64 = 0x10_0000;
/// OEMID of every table.
pub const OEM_ID: &[u8; 6] = b"TESSER";
/// OEM Table ID of every table.
pub const OEM_TABLE_ID: &[u8; 8] = b"TESSERA ";
/// Creator ID and revision of every table.
pub const CREATOR_ID: &[u8; 4] = b"TSRA";
pub const CREATOR_REVISION: u32 = 1;
/// The local APIC's architectural MMIO address (MADT field; x2APIC mode does not use it).
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;

/// Size of the common table header (§5.2.6).
pub const HEADER_LENGTH: usize = 36;
/// Size of a revision 2 RSDP (§5.2.5.3).
pub const RSDP_LENGTH: usize = 36;
/// Size of a revision 6 FADT (§5.2.9).
pub const FADT_LENGTH: usize = 276;
/// FADT flags (§5.2.9.1): RESET_REG_SUP, FORCE_APIC_PHYSICAL_DESTINATION_MODE and
/// HW_REDUCED_ACPI. Physical destination mode keeps every interrupt a partition routes
/// (IOAPIC entries, IPIs) addressed to a named core, which is what the hypervisor checks;
/// Linux then picks its physical x2APIC driver instead of cluster mode.
pub const FADT_RESET_REGISTER_SUPPORTED: u32 = 1 << 10;
pub const FADT_FORCE_APIC_PHYSICAL_DESTINATION: u32 = 1 << 19;
pub const FADT_HARDWARE_REDUCED: u32 = 1 << 20;
/// FADT IAPC_BOOT_ARCH (§5.2.9.3): VGA not present, CMOS RTC not present.
pub const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
pub const BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// MADT structure types (§5.2.12): I/O APIC and Processor Local x2APIC.
pub const MADT_IOAPIC: u8 = 1;
pub const MADT_LOCAL_X2APIC: u8 = 9;
/// Generic Address Structure address space (§5.2.3.2): system I/O; access size: byte.
const GAS_SYSTEM_IO: u8 = 1;
const GAS_BYTE_ACCESS: u8 = 1;

/// A UART the partition owns: a 16550 at `port` (8 ports) and its IOAPIC pin, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    pub port: u16,
    pub irq: Option<u8>,
}

/// Bytes of one bus's ECAM configuration space (PCIe Base 4.0 §7.2.2): the partition's
/// virtual bus is bus 0 only.
pub const ECAM_BUS_BYTES: u64 = 1 << 20;
/// Configuration mechanism #1's ports (PCI 3.0 §3.2.2.3.2): 0xCF8–0xCFF.
pub const CONF1_PORTS: u16 = 0xcf8;
/// Size of the MCFG up to its first allocation entry (PCI Firmware 3.0 §4.1.2: the header
/// and 8 reserved bytes), and of one entry.
pub const MCFG_ENTRIES_OFFSET: usize = 44;
pub const MCFG_ENTRY_LENGTH: usize = 16;

/// A partition's virtual PCI bus as its ACPI tables describe it (docs/pci-iommu.md, "The
/// virtual PCI bus"): bus 0 behind one host bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciRoot {
    /// Guest-physical base of the one-bus virtual ECAM window (the MCFG entry and the
    /// PNP0C02 reservation), when the platform has ECAM; without it the partition reaches
    /// its bus through configuration mechanism #1 only.
    pub ecam: Option<u64>,
    /// Whether the partition has configuration mechanism #1 (its ports are then in
    /// `PCI0._CRS`).
    pub conf1: bool,
    /// The functions' BAR windows (host- and guest-physical: identity-mapped), as
    /// `(base, size)`, listed in `PCI0._CRS` so Linux keeps the BARs where they are.
    pub memory_windows: Vec<(u64, u64)>,
    /// The I/O port ranges of the partition's PCI devices (their I/O BARs), `(base, size)`.
    pub io_windows: Vec<(u16, u32)>,
}

/// What a partition's ACPI tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiMachine {
    /// x2APIC IDs of the partition's cores; entry `n` gets ACPI processor UID `n`.
    pub cpus: Vec<u32>,
    /// The IOAPIC register page, when the partition owns pins (its IOAPIC view).
    pub ioapic: Option<u32>,
    /// UARTs, in the order their `_UID`s are given.
    pub uarts: Vec<Uart>,
    /// The virtual PCI bus, when the partition owns PCI functions.
    pub pci: Option<PciRoot>,
}

/// The tables as one blob, with each table's guest-physical address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// Everything, loaded at [`TABLES_GUEST`] (the RSDP first).
    pub bytes: Vec<u8>,
    pub rsdp: u64,
    pub xsdt: u64,
    pub fadt: u64,
    pub madt: u64,
    pub dsdt: u64,
    /// The MCFG, when the partition has a virtual ECAM window.
    pub mcfg: Option<u64>,
}

impl AcpiTables {
    /// The bytes of the table (or RSDP) at guest-physical `address`, `length` long.
    pub fn at(&self, address: u64, length: usize) -> &[u8] {
        let start = (address - TABLES_GUEST) as usize;
        &self.bytes[start..start + length]
    }
    /// The whole table at `address` (its header gives the length).
    pub fn table(&self, address: u64) -> &[u8] {
        let header = self.at(address, HEADER_LENGTH);
        // The header is HEADER_LENGTH bytes, so its Length field (offset 4) is always there.
        tessera_policy::bytes::u32_at(header, 4)
            .map_or(header, |length| self.at(address, length as usize))
    }
}

/// The sum of `bytes` modulo 256 (zero for a correctly checksummed table).
pub fn byte_sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte))
}

/// The value that makes `bytes` sum to zero when stored in one of them that is now zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(byte_sum(bytes))
}

/// A table: the common header (with checksum) followed by `body`.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(HEADER_LENGTH + body.len()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(HEADER_LENGTH + body.len());
    bytes.extend_from_slice(signature);
    bytes.extend(length.to_le_bytes());
    bytes.push(revision);
    bytes.push(0); // checksum, below
    bytes.extend_from_slice(OEM_ID);
    bytes.extend_from_slice(OEM_TABLE_ID);
    bytes.extend(1u32.to_le_bytes()); // OEM revision
    bytes.extend_from_slice(CREATOR_ID);
    bytes.extend(CREATOR_REVISION.to_le_bytes());
    bytes.extend_from_slice(body);
    bytes[9] = checksum(&bytes);
    bytes
}

/// A Generic Address Structure for an 8-bit system I/O register.
fn io_register(port: u16) -> [u8; 12] {
    let mut gas = [0u8; 12];
    gas[0] = GAS_SYSTEM_IO;
    gas[1] = 8; // register bit width
    gas[2] = 0; // bit offset
    gas[3] = GAS_BYTE_ACCESS;
    gas[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    gas
}

/// The RSDP (revision 2) pointing at the XSDT.
fn rsdp(xsdt: u64) -> [u8; RSDP_LENGTH] {
    let mut bytes = [0u8; RSDP_LENGTH];
    bytes[0..8].copy_from_slice(b"RSD PTR ");
    bytes[9..15].copy_from_slice(OEM_ID);
    bytes[15] = 2; // revision
                   // RsdtAddress (16..20) stays 0: there is only the XSDT.
    bytes[20..24].copy_from_slice(&(RSDP_LENGTH as u32).to_le_bytes());
    bytes[24..32].copy_from_slice(&xsdt.to_le_bytes());
    bytes[8] = checksum(&bytes[..20]);
    bytes[32] = checksum(&bytes);
    bytes
}

/// The XSDT listing `tables`.
fn xsdt(tables: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = tables
        .iter()
        .flat_map(|table| table.to_le_bytes())
        .collect();
    table(b"XSDT", 1, &body)
}

/// The FADT (revision 6): hardware-reduced, X_DSDT, reset and sleep registers.
fn fadt(dsdt: u64) -> Vec<u8> {
    // Offsets below are from the start of the table (ACPI 6.5 Table 5.9).
    let mut body = vec![0u8; FADT_LENGTH - HEADER_LENGTH];
    let mut put = |offset: usize, value: &[u8]| {
        body[offset - HEADER_LENGTH..offset - HEADER_LENGTH + value.len()].copy_from_slice(value);
    };
    // FIRMWARE_CTRL (36) and DSDT (40) stay 0: no FACS (hardware-reduced), X_DSDT below.
    let boot_arch = BOOT_ARCH_VGA_NOT_PRESENT | BOOT_ARCH_CMOS_RTC_NOT_PRESENT;
    put(109, &boot_arch.to_le_bytes()); // IAPC_BOOT_ARCH
    put(
        112,
        &(FADT_HARDWARE_REDUCED
            | FADT_FORCE_APIC_PHYSICAL_DESTINATION
            | FADT_RESET_REGISTER_SUPPORTED)
            .to_le_bytes(),
    ); // Flags
    put(116, &io_register(RESET_PORT)); // RESET_REG
    put(128, &[RESET_VALUE]); // RESET_VALUE
    put(131, &[5]); // FADT Minor Version: ACPI 6.5
    put(140, &dsdt.to_le_bytes()); // X_DSDT
    put(244, &io_register(SLEEP_CONTROL_PORT)); // SLEEP_CONTROL_REG
    put(256, &io_register(SLEEP_STATUS_PORT)); // SLEEP_STATUS_REG
    put(268, b"Tessera\0"); // Hypervisor Vendor Identity
    table(b"FACP", 6, &body)
}

/// The MADT: one Local x2APIC structure per core, an I/O APIC structure if given.
fn madt(machine: &AcpiMachine) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(LOCAL_APIC_ADDRESS.to_le_bytes());
    body.extend(0u32.to_le_bytes()); // flags: no PCAT_COMPAT (no 8259 PICs)
    for (uid, apic_id) in machine.cpus.iter().enumerate() {
        body.extend([MADT_LOCAL_X2APIC, 16, 0, 0]);
        body.extend(apic_id.to_le_bytes());
        body.extend(1u32.to_le_bytes()); // enabled
        body.extend((uid as u32).to_le_bytes());
    }
    if let Some(address) = machine.ioapic {
        body.extend([MADT_IOAPIC, 12, 0, 0]); // I/O APIC ID 0
        body.extend(address.to_le_bytes());
        body.extend(0u32.to_le_bytes()); // global system interrupt base
    }
    table(b"APIC", 5, &body)
}

/// The AML name of UART number `index`: COM0–COM9, then U + three base-36 digits.
fn uart_name(index: usize) -> String {
    if index < 10 {
        return format!("COM{index}");
    }
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let digit = |position: u32| char::from(DIGITS[index / 36usize.pow(position) % 36]);
    format!("U{}{}{}", digit(2), digit(1), digit(0))
}

/// The MCFG (PCI Firmware 3.0 §4.1.2, revision 1): one allocation entry, segment 0, buses
/// 0–0, at the partition's virtual ECAM window.
fn mcfg(ecam: u64) -> Vec<u8> {
    let mut body = vec![0u8; MCFG_ENTRIES_OFFSET - HEADER_LENGTH]; // reserved
    body.extend(ecam.to_le_bytes()); // base address of bus 0
    body.extend(0u16.to_le_bytes()); // PCI segment group
    body.extend([0, 0]); // start and end bus numbers
    body.extend(0u32.to_le_bytes()); // reserved
    table(b"MCFG", 1, &body)
}

/// `Device (PCI0)`, the partition's host bridge (ACPI 6.5 §6.1.5 `_HID` PNP0A08 "PCI
/// Express root bridge" with `_CID` PNP0A03 "PCI root bridge", §6.5.6 `_SEG`, §6.5.5
/// `_BBN`), whose `_CRS` (§6.2.2) produces bus 0, consumes the mechanism #1 ports if the
/// partition has them (as chipsets describe them; Linux drops that range from the bus's
/// windows) and produces
/// the functions' BAR windows and I/O ranges, so a kernel keeps the BARs where they are.
/// With ECAM, `Device (MRES)` (PNP0C02, motherboard resources) reserves the window: Linux
/// uses an MCFG window only if firmware reserves it (in E820 or as a motherboard
/// resource, PCI Firmware 3.0 §4.1.2's note on reserving the range).
fn pci_devices(root: &PciRoot) -> Vec<u8> {
    let mut resources = aml::word_bus_number(0, 0);
    if root.conf1 {
        resources.extend(aml::io_port(CONF1_PORTS, 8));
    }
    for (base, size) in &root.memory_windows {
        resources.extend(aml::memory_window(*base, *size));
    }
    for (base, size) in &root.io_windows {
        resources.extend(aml::word_io(*base, *size));
    }
    resources.extend(aml::end_tag());
    let mut body = aml::name("_HID", &aml::dword(aml::eisa_id("PNP0A08")));
    body.extend(aml::name("_CID", &aml::dword(aml::eisa_id("PNP0A03"))));
    body.extend(aml::name("_SEG", &aml::integer(0)));
    body.extend(aml::name("_BBN", &aml::integer(0)));
    body.extend(aml::name("_UID", &aml::integer(0)));
    body.extend(aml::name("_CRS", &aml::buffer(&resources)));
    let mut devices = aml::device("PCI0", &body);
    if let Some(ecam) = root.ecam {
        // The window lies below 4 GiB (memory above 4 GiB is refused by the validator);
        // a window the 32-bit descriptor cannot name is left unreserved.
        if let Ok(base) = u32::try_from(ecam) {
            let mut resources = aml::memory32_fixed(base, ECAM_BUS_BYTES as u32);
            resources.extend(aml::end_tag());
            let mut body = aml::name("_HID", &aml::dword(aml::eisa_id("PNP0C02")));
            body.extend(aml::name("_UID", &aml::integer(1)));
            body.extend(aml::name("_CRS", &aml::buffer(&resources)));
            devices.extend(aml::device("MRES", &body));
        }
    }
    devices
}

/// The DSDT body (AML): the UARTs and the PCI host bridge under `\_SB`, and `\_S5`.
pub fn dsdt_aml(machine: &AcpiMachine) -> Vec<u8> {
    let mut devices = Vec::new();
    for (index, uart) in machine.uarts.iter().enumerate() {
        let mut resources = aml::io_port(uart.port, 8).to_vec();
        if let Some(pin) = uart.irq {
            resources.extend(aml::interrupt(pin));
        }
        resources.extend(aml::end_tag());
        let mut body = aml::name("_HID", &aml::dword(aml::eisa_id("PNP0501")));
        body.extend(aml::name("_UID", &aml::integer(index as u64)));
        body.extend(aml::name("_CRS", &aml::buffer(&resources)));
        devices.extend(aml::device(&uart_name(index), &body));
    }
    if let Some(root) = &machine.pci {
        devices.extend(pci_devices(root));
    }
    let mut body = aml::root_scope("_SB", &devices);
    let sleep_type = u64::from(S5_SLEEP_TYPE);
    body.extend(aml::name(
        "_S5",
        &aml::package(&[
            aml::integer(sleep_type),
            aml::integer(sleep_type),
            aml::integer(0),
            aml::integer(0),
        ]),
    ));
    body
}

/// Appends `bytes` at the next 16-byte boundary of `blob` and returns its guest address.
fn append(blob: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    blob.resize(blob.len().next_multiple_of(16), 0);
    let address = TABLES_GUEST + blob.len() as u64;
    blob.extend_from_slice(bytes);
    address
}

/// Builds every table for `machine`, laid out from [`TABLES_GUEST`]: RSDP, XSDT, FADT, MADT,
/// DSDT and the MCFG if there is one, each 16-byte aligned.
pub fn build_tables(machine: &AcpiMachine) -> AcpiTables {
    let dsdt = table(b"DSDT", 2, &dsdt_aml(machine));
    let madt = madt(machine);
    let mcfg = machine.pci.as_ref().and_then(|root| root.ecam).map(mcfg);
    // The addresses follow from the sizes; the XSDT lists the FADT, the MADT and the MCFG.
    let align = |length: usize| length.next_multiple_of(16) as u64;
    let xsdt_entries = 2 + usize::from(mcfg.is_some());
    let xsdt_address = TABLES_GUEST + align(RSDP_LENGTH);
    let fadt_address = xsdt_address + align(HEADER_LENGTH + xsdt_entries * 8);
    let madt_address = fadt_address + align(FADT_LENGTH);
    let dsdt_address = madt_address + align(madt.len());
    let mcfg_address = mcfg.as_ref().map(|_| dsdt_address + align(dsdt.len()));

    let mut listed = vec![fadt_address, madt_address];
    listed.extend(mcfg_address);
    let mut bytes = Vec::new();
    let rsdp_address = append(&mut bytes, &rsdp(xsdt_address));
    let placed = [
        append(&mut bytes, &xsdt(&listed)),
        append(&mut bytes, &fadt(dsdt_address)),
        append(&mut bytes, &madt),
        append(&mut bytes, &dsdt),
    ];
    debug_assert_eq!(
        placed,
        [xsdt_address, fadt_address, madt_address, dsdt_address]
    );
    if let Some(mcfg) = &mcfg {
        let placed = append(&mut bytes, mcfg);
        debug_assert_eq!(Some(placed), mcfg_address);
    }
    AcpiTables {
        bytes,
        rsdp: rsdp_address,
        xsdt: xsdt_address,
        fadt: fadt_address,
        madt: madt_address,
        dsdt: dsdt_address,
        mcfg: mcfg_address,
    }
}

#[cfg(test)]
mod tests;
