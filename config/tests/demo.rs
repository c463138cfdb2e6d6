//! The default table, partitions/demo.toml: it validates, it lowers as documented, and the
//! hypervisor's build script (the same function `hypervisor/build.rs` calls) builds it.

mod common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tessera_abi::table::Entry;
use tessera_abi::table::{Capability, HealthPolicy, MappingKind, Range, Rights};
use tessera_config::{
    build_script, load, load_without_files, lower, BlobSource, BootImage, BuildScriptError,
};

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
    let validated = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let lowered =
        lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));

    assert_eq!(lowered.table_name, "demo.toml");
    assert_eq!(lowered.platform_name, "qemu-q35");
    assert_eq!(lowered.cpus, [0, 1, 2, 3]);
    assert_eq!(lowered.console.port, 0x3e8);
    assert!(lowered.ioapic.is_some_and(|ioapic| ioapic.pins == 24));
    assert_eq!(lowered.hypervisor_memory, Range::new(0x10_0000, 15 << 20));
    assert_eq!(lowered.partitions.len(), 3);

    let control = &lowered.partitions[0];
    assert_eq!(control.cpus, [0]);
    assert_eq!(control.ports, [Range::new(0x3f8, 8)]);
    assert_eq!(control.irq_pins, [4]);
    assert_eq!(control.health.actions, HealthPolicy::HALT.actions);
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
    // An ELF guest's blob holds the bytes its segments load, generated from its file.
    let BlobSource::Generated { file_name, bytes } = &boot.blobs[0].source else {
        panic!("an ELF guest boots from the loaded bytes of its file");
    };
    assert!(file_name.starts_with("elf-") && file_name.ends_with(".bin"));
    assert_eq!(bytes.len() as u64, boot.segments[0].file_size);
    assert_eq!(boot.segments[0].file_offset, 0);
    assert_ne!(boot.blobs[0].sha256, [0; 32]);
    assert!(lowered.files.iter().any(|file| file.is_absolute()
        && file.ends_with("target/x86_64-unknown-none/release/tessera-demo")));

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

/// A scratch workspace for the build script: the demo table with a stand-in guest, the
/// real linker-script template, an (empty) hypervisor manifest directory and `OUT_DIR`.
struct Workspace {
    root: PathBuf,
    manifest_dir: PathBuf,
    out_dir: PathBuf,
}

impl Workspace {
    fn new(name: &str) -> Self {
        let table = common::demo_with_fake_guest(name);
        let root = table.parent().unwrap().parent().unwrap().to_path_buf();
        let template =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../loader/linker.ld.in"))
                .unwrap();
        common::write_file(&root, "loader/linker.ld.in", template);
        let manifest_dir = root.join("hypervisor");
        let out_dir = root.join("out");
        std::fs::create_dir_all(&manifest_dir).unwrap();
        std::fs::create_dir_all(&out_dir).unwrap();
        Self {
            root,
            manifest_dir,
            out_dir,
        }
    }

    /// Runs the build script in Cargo's environment, with `TESSERA_TABLE` if given: its
    /// instructions for Cargo and its result.
    fn build(&self, table: Option<&Path>) -> (Vec<String>, Result<(), BuildScriptError>) {
        let mut variables: HashMap<&'static str, OsString> = HashMap::from([
            ("CARGO_MANIFEST_DIR", self.manifest_dir.clone().into()),
            ("OUT_DIR", self.out_dir.clone().into()),
        ]);
        if let Some(table) = table {
            variables.insert("TESSERA_TABLE", table.into());
        }
        let mut instructions = Vec::new();
        let result = build_script(|name| variables.get(name).cloned(), &mut |instruction| {
            instructions.push(instruction)
        });
        (instructions, result)
    }
}

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap().display().to_string()
}

#[test]
fn build_script_builds_the_default_table() {
    let workspace = Workspace::new("demo-build-script");
    let (instructions, result) = workspace.build(None);
    result.unwrap_or_else(|error| panic!("{error}"));

    let script = workspace.out_dir.join("tessera.ld");
    let expected = [
        "cargo:rerun-if-env-changed=TESSERA_TABLE".to_owned(),
        format!(
            "cargo:rerun-if-changed={}",
            workspace
                .manifest_dir
                .join("../partitions/demo.toml")
                .display()
        ),
        format!(
            "cargo:rerun-if-changed={}",
            canonical(&workspace.root.join("partitions/demo.toml"))
        ),
        format!(
            "cargo:rerun-if-changed={}",
            canonical(
                &workspace
                    .root
                    .join("target/x86_64-unknown-none/release/tessera-demo")
            )
        ),
        format!(
            "cargo:rerun-if-changed={}",
            workspace
                .manifest_dir
                .join("../loader/linker.ld.in")
                .display()
        ),
        format!("cargo:rustc-link-arg-bins=-T{}", script.display()),
        "cargo:rustc-link-arg-bins=-zmax-page-size=4096".to_owned(),
        "cargo:rustc-link-arg-bins=--gc-sections".to_owned(),
    ];
    assert_eq!(instructions, expected);

    let generated = std::fs::read_to_string(workspace.out_dir.join("machine.rs")).unwrap();
    assert!(generated.contains("pub static MACHINE: ::tessera_abi::table::Machine"));
    assert!(generated.contains("pub const PARTITION_COUNT: usize = 3;"));
    // The image starts at the demo table's hypervisor memory, 15 MiB from 1 MiB.
    let script = std::fs::read_to_string(&script).unwrap();
    assert!(
        !script.contains('@'),
        "every placeholder is replaced:\n{script}"
    );
    assert!(script.contains("0x100000"), "{script}");
    assert!(script.contains("0x1000000"), "{script}");
}

#[test]
fn build_script_takes_the_table_from_tessera_table() {
    let workspace = Workspace::new("demo-build-script-variable");
    let (table, _, _) = common::linux_table::write_linux_table("demo-build-script-linux");
    let (instructions, result) = workspace.build(Some(&table));
    result.unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(
        instructions[1],
        format!("cargo:rerun-if-changed={}", table.display())
    );
    let generated = std::fs::read_to_string(workspace.out_dir.join("machine.rs")).unwrap();
    assert!(
        generated.contains("table_name: \"linux.toml\""),
        "{generated}"
    );
    // The generated blobs are in OUT_DIR, where machine.rs includes them from.
    for blob in ["partition-linux-boot-data.bin", "partition-linux-acpi.bin"] {
        assert!(workspace.out_dir.join(blob).is_file(), "{blob}");
    }
}

#[test]
fn build_script_stops_on_an_invalid_table() {
    let workspace = Workspace::new("demo-build-script-invalid");
    std::fs::remove_dir_all(workspace.root.join("target")).unwrap();
    let (instructions, result) = workspace.build(None);
    // Cargo still watches the table, to build again once it is fixed.
    assert_eq!(instructions.len(), 2, "{instructions:?}");
    let error = result.unwrap_err();
    let BuildScriptError::InvalidTable { diagnostics, .. } = &error else {
        panic!("expected the table's diagnostics, got {error}");
    };
    let ids: Vec<&str> = diagnostics.findings.iter().map(|f| f.rule.id()).collect();
    assert_eq!(ids, ["boot-file-missing"; 3]);
    assert!(error.to_string().ends_with("/demo.toml is invalid"));
    assert!(!workspace.out_dir.join("machine.rs").exists());

    let error = build_script(|_: &str| None, &mut |_| {}).unwrap_err();
    assert!(matches!(
        error,
        BuildScriptError::Environment("CARGO_MANIFEST_DIR")
    ));
}

/// One read per boot file: lowering builds from what validation read and parsed. With the
/// guest deleted after loading, lowering still succeeds, from the bytes validation read.
#[test]
fn lowering_uses_the_images_validation_read() {
    let path = common::demo_with_fake_guest("demo-read-once");
    let validated = load(&path).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    let image = path
        .parent()
        .unwrap()
        .join("../target/x86_64-unknown-none/release/tessera-demo");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::remove_file(&image).unwrap();

    for index in 0..3 {
        let Some(BootImage::Elf(elf)) = validated.boot_image(index) else {
            panic!("partition {index} carries its parsed ELF image");
        };
        assert_eq!(elf.file.bytes, bytes);
        assert_eq!(elf.image.pvh_entry, 0x10_0000);
    }
    // The three partitions share one read of the one image.
    let shared = |index| match validated.boot_image(index) {
        Some(BootImage::Elf(elf)) => std::sync::Arc::as_ptr(&elf.file),
        _ => unreachable!(),
    };
    assert_eq!(shared(0), shared(1));
    assert_eq!(shared(0), shared(2));

    let lowered =
        lower(&validated).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
    // The blob is the loaded bytes of the file read by validation, each segment's file
    // bytes in order, hashed as embedded; the three partitions share it.
    let boot = &lowered.partitions[0].boot;
    let blob = &boot.blobs[0];
    let Some(BootImage::Elf(elf)) = validated.boot_image(0) else {
        unreachable!()
    };
    let mut loaded = Vec::new();
    for segment in &elf.image.segments {
        let start = segment.file_offset as usize;
        loaded.extend_from_slice(&bytes[start..start + segment.file_size as usize]);
    }
    assert!(loaded.len() < bytes.len());
    assert_eq!(blob.size, loaded.len() as u64);
    let BlobSource::Generated {
        bytes: embedded, ..
    } = &blob.source
    else {
        panic!("an ELF guest's blob is generated");
    };
    assert_eq!(embedded, &loaded);
    let expected: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&loaded).into()
    };
    assert_eq!(blob.sha256, expected);
    for segment in &boot.segments {
        let original = elf
            .image
            .segments
            .iter()
            .find(|original| original.guest == segment.guest)
            .unwrap();
        let from = segment.file_offset as usize;
        let to = from + segment.file_size as usize;
        let start = original.file_offset as usize;
        assert_eq!(
            &embedded[from..to],
            &bytes[start..start + original.file_size as usize]
        );
    }
    assert_eq!(
        lowered.partitions[1].boot.blobs[0].source, blob.source,
        "one blob for the shared image"
    );
}
