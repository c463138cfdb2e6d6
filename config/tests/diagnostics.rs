//! Validation findings: locations, both items of a collision, every problem in one run.

mod common;

use tessera_config::{load_without_files, Diagnostics, Rule};

/// A valid two-partition table; tests break it with `replace`.
const BASE: &str = r#"[platform]
name = "test"
cpus = [0, 1, 2]
ram = [ { base = 0x100000, size = "255 MiB" } ]
ioapic = { base = 0xfec00000, pins = 24 }

[platform.devices]
com1 = { ports = [ { base = 0x3f8, size = 8 } ], irq = 4 }
com2 = { ports = [ { base = 0x2f8, size = 8 } ], irq = 3 }

[hypervisor]
memory = { base = 0x100000, size = "15 MiB" }
console = "com2"

[[partition]]
name = "first"
cpus = [0]
memory = [ { base = 0x1000000, size = "16 MiB" } ]
devices = ["com1"]
boot = { kind = "elf", image = "guest.elf" }
on-fault = "halt"

[[partition]]
name = "second"
cpus = [1]
memory = [ { base = 0x2000000, size = "16 MiB" } ]
boot = { kind = "elf", image = "guest.elf" }
on-fault = "restart"
capabilities = ["halt:first"]
"#;

fn check(name: &str, text: &str) -> Result<tessera_config::Table, Diagnostics> {
    let directory = common::scratch_directory(name);
    let path = common::write_file(&directory, "table.toml", text);
    load_without_files(&path)
}

fn rule_ids(diagnostics: &Diagnostics) -> Vec<&'static str> {
    diagnostics
        .findings
        .iter()
        .map(|finding| finding.rule.id())
        .collect()
}

#[test]
fn base_table_is_valid() {
    check("base", BASE).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render()));
}

#[test]
fn unknown_key_is_rejected_with_line_and_column() {
    let text = BASE.replace(
        "on-fault = \"restart\"",
        "on-fault = \"restart\"\n  colour = \"blue\"",
    );
    let diagnostics = check("unknown-key", &text).unwrap_err();
    assert_eq!(rule_ids(&diagnostics), ["unknown-key"]);
    let finding = &diagnostics.findings[0];
    assert!(finding.message.contains("colour"), "{}", finding.message);
    let location = diagnostics.location(finding);
    let line = text
        .lines()
        .position(|line| line.contains("colour"))
        .unwrap()
        + 1;
    assert_eq!((location.line, location.column), (line, 3));
    let rendered = diagnostics.render();
    assert!(
        rendered.contains(&format!("table.toml:{line}:3")),
        "{rendered}"
    );
    assert!(rendered.contains("[unknown-key] Error"), "{rendered}");
}

#[test]
fn bad_size_unit_is_reported_at_the_value() {
    let text = BASE.replace("\"255 MiB\"", "\"255 MB\"");
    let diagnostics = check("bad-unit", &text).unwrap_err();
    assert_eq!(rule_ids(&diagnostics), ["size-unit"]);
    assert!(diagnostics.findings[0]
        .message
        .contains("unknown size unit `MB`"));
    let location = diagnostics.location(&diagnostics.findings[0]);
    assert_eq!(location.line, 4);
}

#[test]
fn overlap_reports_both_partitions_and_ranges() {
    let text = BASE.replace(
        "base = 0x2000000, size = \"16 MiB\"",
        "base = 0x1800000, size = \"16 MiB\"",
    );
    let diagnostics = check("overlap", &text).unwrap_err();
    assert_eq!(rule_ids(&diagnostics), ["memory-overlap"]);
    let finding = &diagnostics.findings[0];
    assert!(
        finding.message.contains("partition `second`"),
        "{}",
        finding.message
    );
    assert!(
        finding.message.contains("partition `first`"),
        "{}",
        finding.message
    );
    let related = finding.related.as_ref().expect("the other partition");
    assert!(
        related.label.contains("[0x1000000, 0x2000000)"),
        "{}",
        related.label
    );
    let line = text
        .lines()
        .position(|line| line.contains("0x1800000"))
        .unwrap()
        + 1;
    assert_eq!(diagnostics.location(finding).line, line);
    let rendered = diagnostics.render();
    assert!(
        rendered.contains(&format!("table.toml:{line}:")),
        "{rendered}"
    );
    assert!(rendered.contains("[0x1800000, 0x2800000)"), "{rendered}");
    assert!(rendered.contains("[0x1000000, 0x2000000)"), "{rendered}");
}

#[test]
fn a_table_with_several_errors_reports_all_of_them() {
    let text = BASE
        .replace("name = \"second\"", "name = \"Second\"")
        .replace("cpus = [1]", "cpus = [0, 7]")
        .replace(
            "base = 0x2000000, size = \"16 MiB\"",
            "base = 0x2000800, size = \"16 MiB\"",
        )
        .replace("console = \"com2\"", "console = \"com1\"")
        .replace(
            "capabilities = [\"halt:first\"]",
            "capabilities = [\"halt:third\", \"fly\"]",
        )
        + "\n[[channel]]\nname = \"link\"\npartitions = [\"first\", \"nobody\"]\n\
           memory = { base = 0x40000000, size = \"64 KiB\" }\ndoorbell = { vector = 8 }\n\
           \n[run]\nexpect-faults = [\"ghost\"]\n";
    let diagnostics = check("several", &text).unwrap_err();
    let mut ids = rule_ids(&diagnostics);
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "capability-syntax",
            "capability-target",
            "channel-member",
            "console-owned",
            "core-shared",
            "core-unknown",
            "doorbell-vector",
            "memory-alignment",
            "memory-outside-ram",
            "name-syntax",
            "run-unknown-partition",
        ],
        "{}",
        diagnostics.render()
    );
    assert!(diagnostics.rules().contains(&Rule::CoreShared));
    if std::env::var_os("SHOW_DIAGNOSTICS").is_some() {
        eprintln!("{}", diagnostics.render());
    }
}

#[test]
fn guest_ranges_inside_a_partition_must_not_overlap() {
    let text = BASE.replace(
        "memory = [ { base = 0x2000000, size = \"16 MiB\" } ]",
        "memory = [ { base = 0x2000000, size = \"8 MiB\" }, { base = 0x3000000, size = \"4 MiB\", guest = 0x400000 } ]",
    );
    let diagnostics = check("guest-overlap", &text).unwrap_err();
    assert_eq!(
        rule_ids(&diagnostics),
        ["guest-overlap"],
        "{}",
        diagnostics.render()
    );
}

#[test]
fn devices_have_one_owner_and_ports_do_not_collide() {
    let text = BASE
        .replace("com2 = { ports = [ { base = 0x2f8, size = 8 } ], irq = 3 }", "com2 = { ports = [ { base = 0x2f8, size = 8 } ], irq = 3 }\ncom5 = { ports = [ { base = 0x3fc, size = 8 } ], irq = 40 }\ncom6 = { ports = [ { base = 0x500, size = 8 } ] }")
        .replace("capabilities = [\"halt:first\"]", "capabilities = [\"halt:first\"]\ndevices = [\"com5\", \"com1\", \"nic9\"]");
    let diagnostics = check("devices", &text).unwrap_err();
    let mut ids = rule_ids(&diagnostics);
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["device-shared", "device-unknown", "irq-pin", "port-overlap"],
        "{}",
        diagnostics.render()
    );
}

#[test]
fn missing_table_is_a_finding_too() {
    let diagnostics =
        load_without_files(std::path::Path::new("/nonexistent/table.toml")).unwrap_err();
    assert_eq!(rule_ids(&diagnostics), ["table-unreadable"]);
    assert!(diagnostics.render().contains("/nonexistent/table.toml"));
}
