//! Property test: random tables (cores, RAM, hypervisor memory, partition memory regions,
//! devices with ports and MMIO, device lists) are judged by the validator and by a
//! deliberately naive reference checker written here from the rule list — all pairs,
//! byte-exact interval arithmetic, no sorting, no sweep — and the two must agree on every
//! input: the same multiset of (rule, primary line, related line) findings, and so the same
//! valid/invalid verdict and the same overlap pairs.
//!
//! Every item sits on its own line of the generated text, so a finding is identified by the
//! lines of its two spans; pairs are compared unordered.

use std::path::Path;

use proptest::prelude::*;
use tessera_config::source::line_column;
use tessera_config::{check_text, FileChecks};

/// All generated addresses and sizes are multiples of this, so half the values are
/// misaligned and chunk-wise containment checks are byte-exact.
const GRAIN: u64 = 0x800;
const LAPIC: (u64, u64) = (0xfee0_0000, 0xfef0_0000);
const RESERVED: [(u64, u64); 2] = [(0, 0x1000), (0x8000, 0x9000)];

#[derive(Clone, Debug)]
struct Device {
    ports: Vec<(u64, u64)>,
    mmio: Option<(u64, u64)>,
}

#[derive(Clone, Debug)]
struct Partition {
    cpus: Vec<u32>,
    memory: Vec<(u64, u64)>,
    /// Indices into the device names (devices, then "console", then "ghost").
    devices: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Model {
    platform_cpus: Vec<u32>,
    ram: Vec<(u64, u64)>,
    hypervisor: (u64, u64),
    devices: Vec<Device>,
    partitions: Vec<Partition>,
}

/// `(base, size)` in grains: small addresses where RAM, regions and reserved pages collide.
fn low_range() -> impl Strategy<Value = (u64, u64)> {
    (0u64..96, 0u64..12).prop_map(|(base, size)| (base * GRAIN, size * GRAIN))
}

fn mmio_range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        low_range(),
        (0u64..16, 0u64..6)
            .prop_map(|(base, size)| (LAPIC.0 - 8 * GRAIN + base * GRAIN, size * GRAIN)),
    ]
}

fn port_range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        8 => (0u64..16, 0u64..10).prop_map(|(base, size)| (0x3e0 + base * 4, size * 2)),
        1 => (0u64..4, 1u64..10).prop_map(|(base, size)| (0xfff8 + base * 2, size)),
    ]
}

fn model() -> impl Strategy<Value = Model> {
    let devices = prop::collection::vec(
        (
            prop::collection::vec(port_range(), 0..3),
            prop::option::of(mmio_range()),
        )
            .prop_map(|(ports, mmio)| Device { ports, mmio }),
        0..4,
    );
    (
        prop::collection::vec(0u32..6, 0..6),
        prop::collection::vec(low_range(), 1..3),
        low_range(),
        devices,
    )
        .prop_flat_map(|(platform_cpus, ram, hypervisor, devices)| {
            let names = devices.len() + 2;
            let partition = (
                prop::collection::vec(0u32..7, 0..3),
                prop::collection::vec(low_range(), 0..4),
                prop::collection::vec(0..names, 0..3),
            )
                .prop_map(|(cpus, memory, devices)| Partition {
                    cpus,
                    memory,
                    devices,
                });
            prop::collection::vec(partition, 1..4).prop_map(move |partitions| Model {
                platform_cpus: platform_cpus.clone(),
                ram: ram.clone(),
                hypervisor,
                devices: devices.clone(),
                partitions,
            })
        })
}

/// Lines of every item in the generated text.
#[derive(Default)]
struct Lines {
    platform_cpus: Vec<usize>,
    ram: Vec<usize>,
    hypervisor: usize,
    console: usize,
    device_ports: Vec<Vec<usize>>,
    device_mmio: Vec<usize>,
    partition_name: Vec<usize>,
    partition_cpus: Vec<Vec<usize>>,
    partition_memory: Vec<Vec<usize>>,
    partition_devices: Vec<Vec<usize>>,
}

fn device_name(model: &Model, index: usize) -> String {
    match index.cmp(&model.devices.len()) {
        std::cmp::Ordering::Less => format!("d{index}"),
        std::cmp::Ordering::Equal => "console".to_owned(),
        std::cmp::Ordering::Greater => "ghost".to_owned(),
    }
}

fn render(model: &Model) -> (String, Lines) {
    let mut lines = Lines::default();
    let mut text = String::new();
    let line = |text: &mut String, content: String| -> usize {
        text.push_str(&content);
        text.push('\n');
        text.matches('\n').count()
    };
    line(&mut text, "[platform]".into());
    line(&mut text, "name = \"random\"".into());
    line(&mut text, "cpus = [".into());
    for cpu in &model.platform_cpus {
        lines
            .platform_cpus
            .push(line(&mut text, format!("  {cpu},")));
    }
    line(&mut text, "]".into());
    line(&mut text, "ram = [".into());
    for (base, size) in &model.ram {
        lines.ram.push(line(
            &mut text,
            format!("  {{ base = {base:#x}, size = {size} }},"),
        ));
    }
    line(&mut text, "]".into());
    for (index, device) in model.devices.iter().enumerate() {
        line(&mut text, format!("[platform.devices.d{index}]"));
        line(&mut text, "ports = [".into());
        let mut port_lines = Vec::new();
        for (base, size) in &device.ports {
            port_lines.push(line(
                &mut text,
                format!("  {{ base = {base:#x}, size = {size} }},"),
            ));
        }
        lines.device_ports.push(port_lines);
        line(&mut text, "]".into());
        if let Some((base, size)) = device.mmio {
            line(&mut text, "mmio = [".into());
            lines.device_mmio.push(line(
                &mut text,
                format!("  {{ base = {base:#x}, size = {size} }},"),
            ));
            line(&mut text, "]".into());
        } else {
            lines.device_mmio.push(0);
        }
    }
    line(&mut text, "[platform.devices.console]".into());
    let console_port = line(&mut text, "ports = [ { base = 0x3e8, size = 8 } ]".into());
    line(&mut text, "[hypervisor]".into());
    let (base, size) = model.hypervisor;
    lines.hypervisor = line(
        &mut text,
        format!("memory = {{ base = {base:#x}, size = {size} }}"),
    );
    lines.console = line(&mut text, "console = \"console\"".into());
    lines.device_ports.push(vec![console_port]);
    for (index, partition) in model.partitions.iter().enumerate() {
        line(&mut text, "[[partition]]".into());
        lines
            .partition_name
            .push(line(&mut text, format!("name = \"p{index}\"")));
        line(&mut text, "cpus = [".into());
        lines.partition_cpus.push(
            partition
                .cpus
                .iter()
                .map(|cpu| line(&mut text, format!("  {cpu},")))
                .collect(),
        );
        line(&mut text, "]".into());
        line(&mut text, "memory = [".into());
        lines.partition_memory.push(
            partition
                .memory
                .iter()
                .map(|(base, size)| {
                    line(
                        &mut text,
                        format!("  {{ base = {base:#x}, size = {size} }},"),
                    )
                })
                .collect(),
        );
        line(&mut text, "]".into());
        line(&mut text, "devices = [".into());
        lines.partition_devices.push(
            partition
                .devices
                .iter()
                .map(|&device| line(&mut text, format!("  \"{}\",", device_name(model, device))))
                .collect(),
        );
        line(&mut text, "]".into());
        line(
            &mut text,
            "boot = { kind = \"elf\", image = \"guest.elf\" }".into(),
        );
        line(&mut text, "on-fault = \"halt\"".into());
    }
    (text, lines)
}

type Key = (&'static str, usize, usize);

fn pair(rule: &'static str, a: usize, b: usize) -> Key {
    (rule, a.min(b), a.max(b))
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

/// Whether every byte of `[base, base + size)` lies in one of `ranges` (chunk by chunk: all
/// bounds are multiples of [`GRAIN`]).
fn inside(ranges: &[(u64, u64)], base: u64, size: u64) -> bool {
    (0..size / GRAIN).all(|chunk| {
        let byte = base + chunk * GRAIN;
        ranges
            .iter()
            .any(|&(start, length)| start <= byte && byte < start + length)
    })
}

/// The naive reference: every rule the generator can break, all pairs, no cleverness.
fn reference(model: &Model, lines: &Lines) -> Vec<Key> {
    let mut found = Vec::new();
    let console = model.devices.len();
    // Cores.
    for i in 0..model.platform_cpus.len() {
        if let Some(j) = (0..i).find(|&j| model.platform_cpus[j] == model.platform_cpus[i]) {
            found.push(pair(
                "core-duplicate",
                lines.platform_cpus[i],
                lines.platform_cpus[j],
            ));
        }
    }
    let mut cpu_listings = Vec::new(); // (partition, position, cpu)
    for (p, partition) in model.partitions.iter().enumerate() {
        if partition.cpus.is_empty() {
            found.push(("partition-no-core", lines.partition_name[p], 0));
        }
        for (position, cpu) in partition.cpus.iter().enumerate() {
            if !model.platform_cpus.contains(cpu) {
                found.push(("core-unknown", lines.partition_cpus[p][position], 0));
            }
            cpu_listings.push((p, position, *cpu));
        }
    }
    for (index, &(p, position, cpu)) in cpu_listings.iter().enumerate() {
        if let Some(&(first_p, first_position, _)) = cpu_listings[..index]
            .iter()
            .find(|listing| listing.2 == cpu)
        {
            let rule = if first_p == p {
                "core-duplicate"
            } else {
                "core-shared"
            };
            found.push(pair(
                rule,
                lines.partition_cpus[p][position],
                lines.partition_cpus[first_p][first_position],
            ));
        }
    }

    // Device ownership: the console belongs to the hypervisor, every other device to the
    // first partition that lists it.
    let mut owner: Vec<Option<usize>> = vec![None; console + 1]; // Some(partitions.len()) = hypervisor
    owner[console] = Some(model.partitions.len());
    let mut first_listing: Vec<Option<usize>> = vec![None; console + 1];
    first_listing[console] = Some(lines.console);
    for (p, partition) in model.partitions.iter().enumerate() {
        for (position, &device) in partition.devices.iter().enumerate() {
            let line = lines.partition_devices[p][position];
            if device > console {
                found.push(("device-unknown", line, 0));
                continue;
            }
            match (owner[device], first_listing[device]) {
                (Some(o), Some(first)) if o == model.partitions.len() => {
                    found.push(pair("console-owned", line, first));
                }
                (Some(o), Some(first)) => {
                    let rule = if o == p {
                        "device-duplicate"
                    } else {
                        "device-shared"
                    };
                    found.push(pair(rule, line, first));
                }
                _ => {
                    owner[device] = Some(p);
                    first_listing[device] = Some(line);
                }
            }
        }
    }

    // Ports.
    let mut ports = Vec::new(); // (device, range, line)
    for device in 0..=console {
        let ranges: Vec<(u64, u64)> = if device == console {
            vec![(0x3e8, 8)]
        } else {
            model.devices[device].ports.clone()
        };
        for (number, &(base, size)) in ranges.iter().enumerate() {
            let line = lines.device_ports[device][number];
            if size == 0 || base + size > 0x1_0000 {
                found.push(("port-range", line, 0));
            }
            ports.push((device, (base, size), line));
        }
    }
    for i in 0..ports.len() {
        for j in i + 1..ports.len() {
            let ((a, range_a, line_a), (b, range_b, line_b)) = (ports[i], ports[j]);
            if let (Some(owner_a), Some(owner_b)) = (owner[a], owner[b]) {
                if owner_a != owner_b && overlaps(range_a, range_b) {
                    found.push(pair("port-overlap", line_a, line_b));
                }
            }
        }
    }

    // Host-physical memory.
    for (number, &(base, size)) in model.ram.iter().enumerate() {
        if size == 0 {
            found.push(("memory-empty", lines.ram[number], 0));
        }
        for other in 0..number {
            if overlaps((base, size), model.ram[other]) {
                found.push(pair("ram-overlap", lines.ram[number], lines.ram[other]));
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Hypervisor,
        Partition,
        Mmio(Option<usize>),
    }
    let mut items = vec![(Kind::Hypervisor, model.hypervisor, lines.hypervisor)];
    for (p, partition) in model.partitions.iter().enumerate() {
        for (number, &range) in partition.memory.iter().enumerate() {
            items.push((Kind::Partition, range, lines.partition_memory[p][number]));
        }
    }
    for (device, entry) in model.devices.iter().enumerate() {
        if let Some(range) = entry.mmio {
            items.push((Kind::Mmio(owner[device]), range, lines.device_mmio[device]));
        }
    }
    for &(kind, (base, size), line) in &items {
        if size == 0 {
            found.push(("memory-empty", line, 0));
            continue;
        }
        if base % 0x1000 != 0 || size % 0x1000 != 0 {
            found.push(("memory-alignment", line, 0));
        }
        if !matches!(kind, Kind::Mmio(_)) && !inside(&model.ram, base, size) {
            found.push(("memory-outside-ram", line, 0));
        }
        if kind == Kind::Partition {
            for reserved in RESERVED {
                if base < reserved.1 && reserved.0 < base + size {
                    found.push(("memory-reserved", line, 0));
                }
            }
        }
        if overlaps((base, size), (LAPIC.0, LAPIC.1 - LAPIC.0)) {
            found.push(("memory-window", line, 0));
        }
    }
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            let ((kind_a, range_a, line_a), (kind_b, range_b, line_b)) = (items[i], items[j]);
            if !overlaps(range_a, range_b) {
                continue;
            }
            match (kind_a, kind_b) {
                (Kind::Mmio(owner_a), Kind::Mmio(owner_b)) => {
                    if let (Some(a), Some(b)) = (owner_a, owner_b) {
                        if a != b {
                            found.push(pair("mmio-overlap", line_a, line_b));
                        }
                    }
                }
                _ => found.push(pair("memory-overlap", line_a, line_b)),
            }
        }
    }

    // Partitions: memory present, guest maps disjoint, start-info page covered.
    for (p, partition) in model.partitions.iter().enumerate() {
        if partition.memory.is_empty() {
            found.push(("partition-no-memory", lines.partition_name[p], 0));
        }
        let mut guest = Vec::new(); // (guest range, line)
        let mut cursor = 0;
        for (number, &(_, size)) in partition.memory.iter().enumerate() {
            guest.push(((cursor, size), lines.partition_memory[p][number]));
            cursor += size;
        }
        let ram: Vec<(u64, u64)> = guest.iter().map(|(range, _)| *range).collect();
        for &device in &partition.devices {
            if let Some(mmio) = model.devices.get(device).and_then(|entry| entry.mmio) {
                guest.push((mmio, lines.device_mmio[device]));
            }
        }
        for i in 0..guest.len() {
            for j in i + 1..guest.len() {
                if overlaps(guest[i].0, guest[j].0) {
                    found.push(pair("guest-overlap", guest[i].1, guest[j].1));
                }
            }
        }
        if !partition.memory.is_empty() && !inside(&ram, 0x1000, 0x1000) {
            found.push(("boot-start-info", lines.partition_name[p], 0));
        }
    }
    found.sort_unstable();
    found
}

fn validator(text: &str) -> Vec<Key> {
    let mut found: Vec<Key> =
        match check_text(Path::new("random.toml"), text.to_owned(), FileChecks::Skip) {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics
                .findings
                .iter()
                .map(|finding| {
                    let line = line_column(text, finding.span.start).line;
                    match &finding.related {
                        Some(related) => pair(
                            finding.rule.id(),
                            line,
                            line_column(text, related.span.start).line,
                        ),
                        None => (finding.rule.id(), line, 0),
                    }
                })
                .collect(),
        };
    found.sort_unstable();
    found
}

proptest! {
    #[test]
    fn validator_agrees_with_the_naive_reference(model in model()) {
        let (text, lines) = render(&model);
        let expected = reference(&model, &lines);
        let found = validator(&text);
        prop_assert_eq!(&found, &expected, "table:\n{}", text);
    }
}

#[test]
fn the_reference_sees_problems_in_most_random_tables() {
    // Guard against a generator that only makes valid (or only trivially invalid) tables.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut valid, mut overlaps_seen) = (0, 0);
    for _ in 0..200 {
        let model = model().new_tree(&mut runner).unwrap().current();
        let (text, lines) = render(&model);
        let expected = reference(&model, &lines);
        valid += usize::from(expected.is_empty());
        overlaps_seen += usize::from(expected.iter().any(|key| key.0 == "memory-overlap"));
        assert_eq!(validator(&text), expected, "{text}");
    }
    assert!(overlaps_seen > 20, "{overlaps_seen} tables with overlaps");
    assert!(valid < 200);
}
