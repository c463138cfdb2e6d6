//! Tests of the ACPI tables: checksums, field offsets, MADT structures, the DSDT read back
//! by an independent AML scanner (`tessera_policy::acpi_s5`) and, where ACPICA's `iasl` is
//! installed, disassembled by it.

use super::*;
use tessera_policy::bytes;

fn machine() -> AcpiMachine {
    AcpiMachine {
        cpus: vec![1, 2],
        ioapic: Some(0xfec0_0000),
        uarts: vec![
            Uart {
                port: 0x3f8,
                irq: Some(4),
            },
            Uart {
                port: 0x2e8,
                irq: None,
            },
        ],
        pci: None,
    }
}

/// [`machine`] owning PCI functions: an ECAM window, two BAR windows (one above 4 GiB) and
/// an I/O BAR range.
fn pci_machine() -> AcpiMachine {
    AcpiMachine {
        pci: Some(PciRoot {
            ecam: Some(0xb000_0000),
            conf1: true,
            memory_windows: vec![(0xfe90_0000, 0x10_0000), (0x8_0000_0000, 0x4000)],
            io_windows: vec![(0xc000, 0x20)],
        }),
        ..machine()
    }
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    bytes::u16_at(bytes, offset).expect("a field inside the table")
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    bytes::u32_at(bytes, offset).expect("a field inside the table")
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    bytes::u64_at(bytes, offset).expect("a field inside the table")
}

#[test]
fn every_checksum_sums_to_zero() {
    let tables = build_tables(&machine());
    let rsdp = tables.at(tables.rsdp, RSDP_LENGTH);
    assert_eq!(byte_sum(&rsdp[..20]), 0, "RSDP checksum (first 20 bytes)");
    assert_eq!(byte_sum(rsdp), 0, "RSDP extended checksum");
    for address in [tables.xsdt, tables.fadt, tables.madt, tables.dsdt] {
        let table = tables.table(address);
        assert_eq!(
            byte_sum(table),
            0,
            "{}",
            String::from_utf8_lossy(&table[..4])
        );
        assert_eq!(&table[10..16], OEM_ID);
    }
}

#[test]
fn the_rsdp_leads_to_every_table() {
    let tables = build_tables(&machine());
    assert_eq!(tables.rsdp, 0xe_0000);
    assert!(tables.rsdp + tables.bytes.len() as u64 <= SCAN_AREA_END);
    let rsdp = tables.at(tables.rsdp, RSDP_LENGTH);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(rsdp[15], 2);
    assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
    assert_eq!(u32_at(rsdp, 20), 36);
    assert_eq!(u64_at(rsdp, 24), tables.xsdt);
    // The RSDP sits on a 16-byte boundary, where scanning guests look.
    assert_eq!(tables.rsdp % 16, 0);

    let xsdt = tables.table(tables.xsdt);
    assert_eq!(&xsdt[..4], b"XSDT");
    assert_eq!(xsdt.len(), 36 + 16);
    assert_eq!(u64_at(xsdt, 36), tables.fadt);
    assert_eq!(u64_at(xsdt, 44), tables.madt);
    assert_eq!(&tables.table(tables.fadt)[..4], b"FACP");
    assert_eq!(&tables.table(tables.madt)[..4], b"APIC");
    assert_eq!(&tables.table(tables.dsdt)[..4], b"DSDT");
}

#[test]
fn fadt_is_hardware_reduced_with_reset_and_sleep_registers() {
    let tables = build_tables(&machine());
    let fadt = tables.table(tables.fadt);
    assert_eq!(fadt.len(), 276);
    assert_eq!(fadt[8], 6, "revision");
    let flags = u32_at(fadt, 112);
    assert_eq!(flags, (1 << 20) | (1 << 19) | (1 << 10));
    assert_eq!(u16_at(fadt, 109), (1 << 2) | (1 << 5));
    assert_eq!(u32_at(fadt, 40), 0, "32-bit DSDT unused");
    assert_eq!(u64_at(fadt, 140), tables.dsdt, "X_DSDT");
    let gas = |offset: usize| (fadt[offset], fadt[offset + 1], u64_at(fadt, offset + 4));
    assert_eq!(gas(116), (1, 8, 0xcf9), "RESET_REG");
    assert_eq!(fadt[128], 6, "RESET_VALUE");
    assert_eq!(gas(244), (1, 8, 0x510), "SLEEP_CONTROL_REG");
    assert_eq!(gas(256), (1, 8, 0x511), "SLEEP_STATUS_REG");
}

#[test]
fn madt_lists_the_partition_cores_and_its_ioapic_view() {
    let tables = build_tables(&machine());
    let madt = tables.table(tables.madt);
    assert_eq!(u32_at(madt, 36), 0xfee0_0000);
    assert_eq!(u32_at(madt, 40), 0, "no PC-AT 8259s");
    let mut structures = Vec::new();
    let mut offset = 44;
    while offset < madt.len() {
        let length = usize::from(madt[offset + 1]);
        structures.push(&madt[offset..offset + length]);
        offset += length;
    }
    assert_eq!(offset, madt.len());
    assert_eq!(structures.len(), 3);
    for (uid, (structure, apic_id)) in structures.iter().zip([1u32, 2]).enumerate() {
        assert_eq!(structure[0], 9, "Local x2APIC");
        assert_eq!(structure.len(), 16);
        assert_eq!(u32_at(structure, 4), apic_id);
        assert_eq!(u32_at(structure, 8), 1, "enabled");
        assert_eq!(u32_at(structure, 12), uid as u32);
    }
    let ioapic = structures[2];
    assert_eq!(ioapic, [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);

    let without_pins = build_tables(&AcpiMachine {
        ioapic: None,
        ..machine()
    });
    assert_eq!(without_pins.table(without_pins.madt).len(), 44 + 2 * 16);
}

#[test]
fn dsdt_names_s5_for_an_independent_reader() {
    let tables = build_tables(&machine());
    let dsdt = tables.table(tables.dsdt);
    assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
    assert_eq!(
        tessera_policy::acpi_s5::find_s5_sleep_type(&dsdt[HEADER_LENGTH..]),
        Some(S5_SLEEP_TYPE)
    );
    let empty = build_tables(&AcpiMachine {
        cpus: vec![0],
        ioapic: None,
        uarts: Vec::new(),
        pci: None,
    });
    assert_eq!(
        tessera_policy::acpi_s5::find_s5_sleep_type(empty.table(empty.dsdt)),
        Some(5)
    );
}

#[test]
fn dsdt_describes_each_uart() {
    let aml = dsdt_aml(&machine());
    // Scope(\_SB_) { Device(COM0) { _HID, _UID 0, _CRS { IO 0x3f8, IRQ 4 } } Device(COM1) … }
    assert_eq!(aml[0], aml::SCOPE_OP);
    let find = |needle: &[u8]| aml.windows(needle.len()).position(|w| w == needle);
    let com0 = find(b"COM0").unwrap();
    assert_eq!(&aml[com0 - 3..com0 - 1], &[0x5b, 0x82]);
    let hid = [&[0x08][..], b"_HID", &[0x0c, 0x41, 0xd0, 0x05, 0x01]].concat();
    assert!(find(&hid).is_some());
    let first_crs = [
        &b"_CRS"[..],
        &[0x11, 0x10, 0x0a, 0x0d],
        &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08],
        &[0x22, 0x10, 0x00],
        &[0x79, 0x00],
    ]
    .concat();
    assert!(find(&first_crs).is_some());
    let second_crs = [
        &b"_CRS"[..],
        &[0x11, 0x0d, 0x0a, 0x0a],
        &[0x47, 0x01, 0xe8, 0x02, 0xe8, 0x02, 0x01, 0x08],
        &[0x79, 0x00],
    ]
    .concat();
    assert!(find(&second_crs).is_some());
    assert!(find(&[0x08, b'_', b'U', b'I', b'D', 0x01]).is_some());
}

#[test]
fn uart_names_are_valid_name_segments() {
    assert_eq!(uart_name(0), "COM0");
    assert_eq!(uart_name(9), "COM9");
    assert_eq!(uart_name(10), "U00A");
    assert_eq!(uart_name(36 * 36 * 36 - 1), "UZZZ");
}

#[test]
fn many_uarts_use_longer_package_lengths() {
    let uarts = (0..100)
        .map(|index| Uart {
            port: 0x1000 + 8 * index,
            irq: Some(index as u8),
        })
        .collect();
    let tables = build_tables(&AcpiMachine {
        cpus: vec![0],
        ioapic: Some(0xfec0_0000),
        uarts,
        pci: None,
    });
    let dsdt = tables.table(tables.dsdt);
    assert_eq!(byte_sum(dsdt), 0);
    // The \_SB scope is longer than 0xfff bytes: a three-byte PkgLength.
    assert!(dsdt.len() > 0x1000);
    assert_eq!(dsdt[HEADER_LENGTH + 1] >> 6, 2);
    assert_eq!(
        tessera_policy::acpi_s5::find_s5_sleep_type(dsdt),
        Some(S5_SLEEP_TYPE)
    );
}

#[test]
fn without_pci_functions_there_is_no_mcfg_and_no_host_bridge() {
    let tables = build_tables(&machine());
    assert_eq!(tables.mcfg, None);
    let xsdt = tables.table(tables.xsdt);
    assert_eq!(xsdt.len(), HEADER_LENGTH + 2 * 8);
    let dsdt = tables.table(tables.dsdt);
    let find = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
    assert!(!find(b"PCI0") && !find(b"MRES"));
}

#[test]
fn mcfg_gives_the_virtual_ecam_window_for_bus_zero() {
    let tables = build_tables(&pci_machine());
    let mcfg_address = tables.mcfg.expect("an MCFG");
    let xsdt = tables.table(tables.xsdt);
    assert_eq!(xsdt.len(), HEADER_LENGTH + 3 * 8);
    assert_eq!(u64_at(xsdt, 52), mcfg_address);
    let mcfg = tables.table(mcfg_address);
    assert_eq!(&mcfg[..4], b"MCFG");
    assert_eq!(mcfg.len(), 60);
    assert_eq!(byte_sum(mcfg), 0);
    assert_eq!(byte_sum(xsdt), 0);
    // Read back by the hypervisor's own MCFG reader (the one it checks firmware with).
    assert_eq!(
        tessera_policy::pci::mcfg::segment_zero(mcfg),
        Some(tessera_policy::pci::mcfg::EcamWindow {
            base: 0xb000_0000,
            segment: 0,
            first_bus: 0,
            last_bus: 0,
        })
    );
    assert!(tables.rsdp + tables.bytes.len() as u64 <= SCAN_AREA_END);
    // PCI functions but no ECAM (mechanism #1 only): a host bridge, no MCFG.
    let conf1_only = build_tables(&AcpiMachine {
        pci: Some(PciRoot {
            ecam: None,
            conf1: true,
            memory_windows: vec![(0xfe90_0000, 0x10_0000)],
            io_windows: Vec::new(),
        }),
        ..machine()
    });
    assert_eq!(conf1_only.mcfg, None);
    let dsdt = conf1_only.table(conf1_only.dsdt);
    let find = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
    assert!(find(b"PCI0") && !find(b"MRES"));
    // ECAM only: no mechanism #1 ports in PCI0._CRS.
    let ecam_only = build_tables(&AcpiMachine {
        pci: Some(PciRoot {
            conf1: false,
            ..pci_machine().pci.unwrap()
        }),
        ..machine()
    });
    let dsdt = ecam_only.table(ecam_only.dsdt);
    let conf1 = aml::io_port(0xcf8, 8);
    assert!(!dsdt.windows(conf1.len()).any(|w| w == conf1));
    assert!(ecam_only.mcfg.is_some());
    let dsdt = tables.table(tables.dsdt);
    assert!(
        dsdt.windows(conf1.len()).any(|w| w == conf1),
        "mechanism #1 by default"
    );
}

#[test]
fn dsdt_describes_the_host_bridge_and_its_windows() {
    let aml = dsdt_aml(&pci_machine());
    let find = |needle: &[u8]| aml.windows(needle.len()).position(|w| w == needle);
    let pci0 = find(b"PCI0").expect("Device (PCI0)");
    // Searches from `start` on (COM0 has its own `_UID 0` before PCI0).
    let find_after = |start: usize, needle: &[u8]| {
        aml[start..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|at| at + start)
    };
    assert_eq!(&aml[pci0 - 4..pci0 - 2], &[0x5b, 0x82]);
    let named = |name: &[u8], value: &[u8]| [&[aml::NAME_OP][..], name, value].concat();
    for expected in [
        named(b"_HID", &[0x0c, 0x41, 0xd0, 0x0a, 0x08]),
        named(b"_CID", &[0x0c, 0x41, 0xd0, 0x0a, 0x03]),
        named(b"_SEG", &[0x00]),
        named(b"_BBN", &[0x00]),
        named(b"_UID", &[0x00]),
    ] {
        assert!(find_after(pci0, &expected).is_some(), "{expected:x?}");
    }
    let resources = [
        aml::word_bus_number(0, 0),
        aml::io_port(0xcf8, 8).to_vec(),
        aml::memory_window(0xfe90_0000, 0x10_0000),
        aml::memory_window(0x8_0000_0000, 0x4000),
        aml::word_io(0xc000, 0x20),
        aml::end_tag().to_vec(),
    ]
    .concat();
    let crs = [&b"_CRS"[..], &aml::buffer(&resources)].concat();
    assert!(find_after(pci0, &crs).is_some());
    // The motherboard resource reserving the ECAM window.
    let mres = find(b"MRES").expect("Device (MRES)");
    assert!(find_after(mres, &named(b"_HID", &[0x0c, 0x41, 0xd0, 0x0c, 0x02])).is_some());
    let reserved = [
        aml::memory32_fixed(0xb000_0000, 0x10_0000),
        aml::end_tag().to_vec(),
    ]
    .concat();
    assert!(find_after(mres, &[&b"_CRS"[..], &aml::buffer(&reserved)].concat()).is_some());
    // \_S5 still found by the independent reader.
    assert_eq!(
        tessera_policy::acpi_s5::find_s5_sleep_type(&aml),
        Some(S5_SLEEP_TYPE)
    );
}

/// Disassembles the tables with ACPICA's `iasl` when it is installed (`apt-get install
/// acpica-tools`); skipped otherwise. Not part of CI, which does not install it.
#[test]
fn iasl_disassembles_the_tables_when_installed() {
    let available = std::process::Command::new("iasl")
        .arg("-v")
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        eprintln!("iasl not installed: skipped");
        return;
    }
    let directory = std::env::temp_dir().join(format!("tessera-acpi-iasl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let tables = build_tables(&pci_machine());
    let mut texts = Vec::new();
    for (name, address) in [
        ("facp", tables.fadt),
        ("apic", tables.madt),
        ("dsdt", tables.dsdt),
        ("mcfg", tables.mcfg.unwrap()),
    ] {
        let path = directory.join(format!("{name}.dat"));
        std::fs::write(&path, tables.table(address)).unwrap();
        let output = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&path)
            .current_dir(&directory)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "iasl -d {name}: {log}");
        let text = std::fs::read_to_string(directory.join(format!("{name}.dsl"))).unwrap();
        assert!(!text.contains("Invalid"), "{name}: {text}");
        assert!(!log.contains("Error"), "{name}: {log}");
        texts.push(text);
    }
    let (fadt, madt, dsdt, mcfg) = (&texts[0], &texts[1], &texts[2], &texts[3]);
    assert!(fadt.contains("Hardware Reduced (V5) : 1"), "{fadt}");
    assert!(fadt.contains("Reset Register Supported (V2) : 1"), "{fadt}");
    assert!(madt.contains("Processor x2Apic ID : 00000002"), "{madt}");
    assert!(madt.contains("Address : FEC00000"), "{madt}");
    for expected in [
        "Device (COM0)",
        "EisaId (\"PNP0501\")",
        "IO (Decode16,",
        "0x03F8,",
        "IRQNoFlags ()",
        "{4}",
        "Name (_S5, Package (0x04)",
        "Device (PCI0)",
        "Name (_HID, EisaId (\"PNP0A08\")",
        "Name (_CID, EisaId (\"PNP0A03\")",
        "Name (_SEG, Zero)",
        "Name (_BBN, Zero)",
        "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
        "IO (Decode16,\n                    0x0CF8,",
        "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
        "0xFE900000,",
        "0xFE9FFFFF,",
        "QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
        "0x0000000800003FFF,",
        "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,",
        "0xC01F,",
        "Device (MRES)",
        "Name (_HID, EisaId (\"PNP0C02\")",
        "Memory32Fixed (ReadWrite,\n                    0xB0000000,",
    ] {
        assert!(dsdt.contains(expected), "`{expected}` not in:\n{dsdt}");
    }
    for expected in [
        "Base Address : 00000000B0000000",
        "Start Bus Number : 00",
        "End Bus Number : 00",
    ] {
        assert!(mcfg.contains(expected), "`{expected}` not in:\n{mcfg}");
    }
    let _ = std::fs::remove_dir_all(&directory);
}
