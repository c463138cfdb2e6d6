//! Lowering a Linux partition: a table with a synthetic bzImage and initrd lowers to the
//! kernel, initrd, boot-data and ACPI blobs, their segments, the 64-bit entry, a zero page
//! with its fields at their offsets, the e820 map and the initrd's place; the generated
//! blobs are written where the generated code includes them from.

mod common;

use common::linux_table::{write_linux_table, INITRD_SIZE, MIB};
use tessera_abi::table::{Entry, Segment};
use tessera_config::linux::zero_page;
use tessera_config::{load, lower, write_generated, BlobSource, BootImage, Lowered};

fn lowered(name: &str) -> (Lowered, Vec<u8>, Vec<u8>) {
    let (path, kernel, initrd) = write_linux_table(name);
    let validated = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let lowered =
        lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    (lowered, kernel, initrd)
}

fn generated_bytes(source: &BlobSource) -> &[u8] {
    match source {
        BlobSource::Generated { bytes, .. } => bytes,
        BlobSource::File(path) => panic!("{} is a file, not a generated blob", path.display()),
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    tessera_policy::bytes::u32_at(bytes, offset).expect("a field inside the blob")
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    tessera_policy::bytes::u64_at(bytes, offset).expect("a field inside the blob")
}

#[test]
fn linux_partition_lowers_to_blobs_segments_and_the_64_bit_entry() {
    let (lowered, kernel, initrd) = lowered("linux-lowers");
    let boot = &lowered.partitions[0].boot;

    // Blobs: kernel file, initrd file, boot data, ACPI tables.
    let names: Vec<String> = boot
        .blobs
        .iter()
        .map(|blob| match &blob.source {
            BlobSource::File(path) => path.file_name().unwrap().to_string_lossy().into_owned(),
            BlobSource::Generated { file_name, .. } => file_name.clone(),
        })
        .collect();
    assert_eq!(
        names,
        [
            "bzImage",
            "initrd.img",
            "partition-linux-boot-data.bin",
            "partition-linux-acpi.bin"
        ]
    );
    assert_eq!(boot.blobs[0].size, kernel.len() as u64);
    assert_eq!(boot.blobs[1].size, initrd.len() as u64);
    let boot_data = generated_bytes(&boot.blobs[2].source);
    assert_eq!(boot_data.len(), 0x8000);
    let acpi = generated_bytes(&boot.blobs[3].source);
    for blob in &boot.blobs {
        assert_ne!(blob.sha256, [0; 32]);
    }

    // The kernel's protected-mode part (after 1 + 3 setup sectors) at pref_address; the
    // initrd at the top of the highest RAM range, page-aligned.
    let initrd_base = 80 * MIB - 0x2000;
    assert_eq!(
        boot.segments,
        [
            Segment {
                guest: 0x1000,
                blob: 2,
                file_offset: 0,
                file_size: 0x1000,
                memory_size: 0x1000
            },
            Segment {
                guest: 0x3000,
                blob: 2,
                file_offset: 0x1000,
                file_size: 0x7000,
                memory_size: 0x7000
            },
            Segment {
                guest: 0xe_0000,
                blob: 3,
                file_offset: 0,
                file_size: acpi.len() as u64,
                memory_size: acpi.len() as u64
            },
            Segment {
                guest: 16 * MIB,
                blob: 0,
                file_offset: 0x800,
                file_size: 0x300,
                memory_size: 0x300
            },
            Segment {
                guest: initrd_base,
                blob: 1,
                file_offset: 0,
                file_size: INITRD_SIZE as u64,
                memory_size: INITRD_SIZE as u64
            },
        ]
    );
    assert_eq!(
        boot.entry,
        Entry::Linux64 {
            entry: 16 * MIB + 0x200,
            boot_params: 0x1000,
            page_tables: 0x4000,
            gdt: 0x3000
        }
    );
    assert_eq!(boot.cmdline, "console=ttyS0 nokaslr");
    assert_eq!(boot.cmdline_guest, 0x2000);
    assert_eq!(boot.cmdline_capacity, 0x800);

    // The ELF partition keeps PVH with one file blob.
    let rt = &lowered.partitions[1].boot;
    assert_eq!(rt.entry, Entry::Pvh { entry: 0x10_0000 });
    assert_eq!(
        (rt.blobs.len(), rt.cmdline_guest, rt.cmdline_capacity),
        (1, 0, 0)
    );
    assert!(lowered.files.iter().any(|file| file.ends_with("bzImage")));
    assert!(lowered
        .files
        .iter()
        .any(|file| file.ends_with("initrd.img")));
}

#[test]
fn boot_params_carry_the_header_the_loader_fields_and_the_e820_map() {
    let (lowered, kernel, _) = lowered("linux-boot-params");
    let boot = &lowered.partitions[0].boot;
    let page = &generated_bytes(&boot.blobs[2].source)[..0x1000];

    // The setup header, 0x1f1 up to 0x202 + the jump displacement, copied from the file,
    // then the loader's fields written into it.
    let header_end = 0x202 + usize::from(kernel[0x201]);
    let mut header = kernel[..header_end].to_vec();
    header[zero_page::TYPE_OF_LOADER] = 0xff;
    header[zero_page::RAMDISK_IMAGE..][..4]
        .copy_from_slice(&((80 * MIB - 0x2000) as u32).to_le_bytes());
    header[zero_page::RAMDISK_SIZE..][..4].copy_from_slice(&(INITRD_SIZE as u32).to_le_bytes());
    header[zero_page::CMD_LINE_POINTER..][..4].copy_from_slice(&0x2000u32.to_le_bytes());
    assert_eq!(&page[0x1f1..header_end], &header[0x1f1..]);
    assert!(page[header_end..0x2d0].iter().all(|&byte| byte == 0));
    assert_eq!(&page[0x202..0x206], b"HdrS");
    assert_eq!(page[zero_page::TYPE_OF_LOADER], 0xff);
    assert_eq!(u32_at(page, zero_page::CMD_LINE_POINTER), 0x2000);
    assert_eq!(u32_at(page, zero_page::EXTENDED_CMD_LINE_POINTER), 0);
    assert_eq!(
        u32_at(page, zero_page::RAMDISK_IMAGE),
        (80 * MIB - 0x2000) as u32
    );
    assert_eq!(u32_at(page, zero_page::RAMDISK_SIZE), INITRD_SIZE as u32);
    assert_eq!(u32_at(page, zero_page::EXTENDED_RAMDISK_IMAGE), 0);
    assert_eq!(u32_at(page, zero_page::EXTENDED_RAMDISK_SIZE), 0);
    assert_eq!(u64_at(page, zero_page::ACPI_RSDP_ADDRESS), 0xe_0000);

    // RAM below 0x9f000 usable, the BIOS area reserved, the rest of guest RAM usable,
    // the channel reserved.
    let expected: [(u64, u64, u32); 5] = [
        (0, 0x9_f000, 1),
        (0x9_f000, 0x6_1000, 2),
        (MIB, 47 * MIB, 1),
        (64 * MIB, 16 * MIB, 1),
        (80 * MIB, 0x1_0000, 2),
    ];
    assert_eq!(usize::from(page[zero_page::E820_ENTRIES]), expected.len());
    for (index, (address, size, kind)) in expected.into_iter().enumerate() {
        let offset = zero_page::E820_TABLE + index * zero_page::E820_ENTRY_SIZE;
        assert_eq!(
            (
                u64_at(page, offset),
                u64_at(page, offset + 8),
                u32_at(page, offset + 16)
            ),
            (address, size, kind),
            "e820 entry {index}"
        );
    }
    let after = zero_page::E820_TABLE + expected.len() * zero_page::E820_ENTRY_SIZE;
    assert!(page[after..].iter().all(|&byte| byte == 0));
}

#[test]
fn acpi_tables_describe_the_partition() {
    let (lowered, _, _) = lowered("linux-acpi");
    let acpi = generated_bytes(&lowered.partitions[0].boot.blobs[3].source);
    assert_eq!(&acpi[..8], b"RSD PTR ");
    let dsdt_at = acpi
        .windows(4)
        .position(|window| window == b"DSDT")
        .unwrap();
    let dsdt = &acpi[dsdt_at..];
    // The partition's UART (com1, pin 4) and not the 4-port gpio nor rt's com2.
    let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|window| window == needle);
    assert!(has(&[
        0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00
    ]));
    assert!(!has(&[0xf8, 0x02, 0xf8, 0x02]));
    assert!(!has(&[0x00, 0x04, 0x00, 0x04]));
    assert_eq!(
        tessera_policy::acpi_s5::find_s5_sleep_type(dsdt),
        Some(tessera_abi::virtual_platform::S5_SLEEP_TYPE)
    );
    // MADT: x2APIC IDs 1 and 2, and the IOAPIC (the partition owns pin 4).
    let madt_at = acpi
        .windows(4)
        .position(|window| window == b"APIC")
        .unwrap();
    let madt = &acpi[madt_at..madt_at + u32_at(acpi, madt_at + 4) as usize];
    assert_eq!(madt.len(), 44 + 16 + 16 + 12);
    assert_eq!((madt[44], u32_at(madt, 48)), (9, 1));
    assert_eq!((madt[60], u32_at(madt, 64)), (9, 2));
    assert_eq!((madt[76], u32_at(madt, 80)), (1, 0xfec0_0000));
}

#[test]
fn write_generated_puts_blobs_where_the_code_includes_them() {
    let (lowered, _, _) = lowered("linux-write");
    let out_dir = common::scratch_directory("linux-write-out");
    let written = write_generated(&lowered, &out_dir).unwrap();
    // The Linux partition's boot data and ACPI tables, and the rt guest's loaded bytes.
    assert_eq!(written.len(), 3);
    for blob in &lowered.partitions[0].boot.blobs[2..] {
        let path = blob.path_in(&out_dir);
        assert_eq!(std::fs::read(&path).unwrap(), generated_bytes(&blob.source));
        assert!(written.contains(&path));
    }
    // Unchanged blobs are not rewritten (their modification time stays).
    let first = &written[0];
    let before = std::fs::metadata(first).unwrap().modified().unwrap();
    write_generated(&lowered, &out_dir).unwrap();
    assert_eq!(
        std::fs::metadata(first).unwrap().modified().unwrap(),
        before
    );
    let code = tessera_config::generate_rust(&lowered);
    assert!(
        code.contains("include_bytes!(concat!(env!(\"OUT_DIR\"), \"/partition-linux-acpi.bin\"))")
    );
}

/// One read per boot file: the kernel, initrd and guest are read and parsed by validation,
/// and lowering builds from that. With every boot file deleted after loading, lowering
/// still succeeds, from the bytes validation read.
#[test]
fn lowering_uses_the_files_validation_read() {
    let (path, kernel, initrd) = write_linux_table("linux-read-once");
    let validated = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let directory = path.parent().unwrap();
    for file in ["bzImage", "initrd.img", "guest.elf"] {
        std::fs::remove_file(directory.join(file)).unwrap();
    }

    let Some(BootImage::Linux(linux)) = validated.boot_image(0) else {
        panic!("the Linux partition carries its kernel and initrd");
    };
    assert_eq!(linux.kernel_file.bytes, kernel);
    assert_eq!(linux.initrd_file.bytes, initrd);
    assert_eq!(linux.kernel.preferred_address, 16 * MIB);
    assert!(matches!(validated.boot_image(1), Some(BootImage::Elf(_))));

    let lowered =
        lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let blobs = &lowered.partitions[0].boot.blobs;
    assert_eq!(blobs[0].size, kernel.len() as u64);
    assert_eq!(blobs[1].size, initrd.len() as u64);
    let digest = |bytes: &[u8]| -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    };
    assert_eq!(blobs[0].sha256, digest(&kernel));
    assert_eq!(blobs[1].sha256, digest(&initrd));
}
