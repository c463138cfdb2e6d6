//! The default table, partitions/demo.toml: it validates, and it lowers as documented.

mod common;

use tessera_abi::table::Entry;
use tessera_abi::table::{Capability, FaultPolicy, MappingKind, Range, Rights};
use tessera_config::{load, load_without_files, lower, BlobSource};

#[test]
fn demo_table_validates_without_files() {
    let table = load_without_files(&common::partitions_directory().join("demo.toml"))
        .unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let names: Vec<&str> = table.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["control", "worker", "intruder"]);
    let expected: Vec<&str> = table.run.expect_faults.iter().map(|n| n.as_str()).collect();
    assert_eq!(expected, ["intruder"]);
    let worker = &table.partitions[1];
    let ports: Vec<u64> = table
        .partition_devices(worker)
        .flat_map(|device| device.device.ports.iter().map(|range| *range.base))
        .collect();
    assert_eq!(ports, [0x2f8]);
}

#[test]
fn demo_table_lowers() {
    let path = common::demo_with_fake_guest("demo-lowers");
    let table = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let lowered = lower(&table).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));

    assert_eq!(lowered.table_name, "demo.toml");
    assert_eq!(lowered.platform_name, "qemu-q35");
    assert_eq!(lowered.cpus, [0, 1, 2, 3]);
    assert_eq!(lowered.console_port, 0x3e8);
    assert_eq!(lowered.hypervisor_memory, Range::new(0x10_0000, 15 << 20));
    assert_eq!(lowered.partitions.len(), 3);

    let control = &lowered.partitions[0];
    assert_eq!(control.cpus, [0]);
    assert_eq!(control.ports, [Range::new(0x3f8, 8)]);
    assert_eq!(control.irq_pins, [4]);
    assert_eq!(control.on_fault, FaultPolicy::Halt);
    assert_eq!(
        control.capabilities,
        [
            Capability::Power,
            Capability::Stats(0),
            Capability::Stats(1),
            Capability::Stats(2)
        ]
    );
    assert_eq!(control.memory.len(), 1);
    assert_eq!(control.memory[0].guest, 0);
    assert_eq!(control.memory[0].host, Range::new(0x100_0000, 16 << 20));
    assert_eq!(control.memory[0].rights, Rights::RWX);
    assert!(control.stage2_table_pages >= 3);

    let worker = &lowered.partitions[1];
    let layout: Vec<(u64, u64, u64)> = worker
        .memory
        .iter()
        .map(|m| (m.guest, m.host.base, m.host.size))
        .collect();
    assert_eq!(
        layout,
        [(0, 0x200_0000, 8 << 20), (0x400_0000, 0x300_0000, 4 << 20)]
    );
    assert!(worker.memory.iter().all(|m| m.kind == MappingKind::Ram));
    assert!(worker.capabilities.is_empty());
    let boot = &worker.boot;
    assert_eq!(boot.entry, Entry::Pvh { entry: 0x10_0000 });
    assert_eq!(boot.segments.len(), 1);
    assert_eq!(boot.segments[0].blob, 0);
    assert_eq!(boot.cmdline, "name=worker console=0x2f8");
    assert_eq!((boot.cmdline_guest, boot.cmdline_capacity), (0, 0));
    assert_eq!(boot.blobs.len(), 1);
    let BlobSource::File(image) = &boot.blobs[0].source else {
        panic!("an ELF guest boots from its file");
    };
    assert!(image.is_absolute());
    assert_ne!(boot.blobs[0].sha256, [0; 32]);

    let intruder = &lowered.partitions[2];
    assert_eq!(intruder.cpus, [2, 3]);
    assert!(intruder.irq_pins.is_empty());
    assert_eq!(intruder.ports, [Range::new(0x2e8, 8)]);
    assert_eq!(
        lowered.files.len(),
        2,
        "the table and the one shared image: {:?}",
        lowered.files
    );
}

#[test]
fn demo_table_without_its_guest_reports_the_missing_image() {
    let root = common::scratch_directory("demo-no-guest");
    let text = std::fs::read_to_string(common::partitions_directory().join("demo.toml")).unwrap();
    let path = common::write_file(&root, "partitions/demo.toml", text);
    let diagnostics = load(&path).unwrap_err();
    let ids: Vec<&str> = diagnostics.findings.iter().map(|f| f.rule.id()).collect();
    assert_eq!(ids, ["boot-file-missing"; 3]);
}

#[test]
fn build_script_writes_machine_rs() {
    let path = common::demo_with_fake_guest("demo-build-script");
    let out_dir = path.parent().unwrap().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let watched = tessera_config::build_script_main(&path, &out_dir).unwrap();
    assert_eq!(watched.len(), 2);
    let generated = std::fs::read_to_string(out_dir.join("machine.rs")).unwrap();
    assert!(generated.contains("pub static MACHINE: ::tessera_abi::table::Machine"));
    assert!(generated.contains("pub const PARTITION_COUNT: usize = 3;"));
}
