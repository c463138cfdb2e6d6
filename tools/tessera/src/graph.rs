//! `tessera graph`: the machine as a hand-written SVG, coloured by partition — a legend of
//! partitions, the cores grid, the devices and channels on the left, the host-physical
//! memory map on the right.
//!
//! Scale of the memory map: band heights are logarithmic in the range's size (16 px for
//! 4 KiB plus 5 px per doubling: 1 MiB is 56 px, 1 GiB 106 px), so a 4 KiB MMIO page and a
//! 2 GiB partition are both readable; every band is labelled with its exact range and size.
//! Address space that is neither RAM nor owned is drawn as a short break, labelled with its
//! size.

use std::fmt::Write;
use std::path::Path;

use tessera_config::{Size, Table};

use crate::check::load_for_display;
use crate::map::{memory_map, Band, Owner};
use crate::{Outcome, EXIT_UNREADABLE, EXIT_VALID};

/// Partition colours (Tableau 10), reused cyclically.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#86bcb6",
];
const HYPERVISOR_COLOUR: &str = "#3b3b3b";
const WINDOW_COLOUR: &str = "#c8c8c8";
const FREE_COLOUR: &str = "#f6f6f6";
const UNOWNED_COLOUR: &str = "#ffffff";

const ROW: i64 = 22;
const LEFT: i64 = 20;
const BAR_X: i64 = 640;
const BAR_WIDTH: i64 = 180;
const BREAK_HEIGHT: i64 = 18;

/// `tessera graph TABLE -o FILE.svg`.
pub fn graph(table_path: &Path, output: &Path) -> Outcome {
    let table = match load_for_display(table_path) {
        Ok(table) => table,
        Err(outcome) => return outcome,
    };
    let svg = render(&table);
    match std::fs::write(output, svg) {
        Ok(()) => Outcome {
            code: EXIT_VALID,
            stdout: format!("wrote {}\n", output.display()),
            stderr: String::new(),
        },
        Err(error) => Outcome {
            code: EXIT_UNREADABLE,
            stdout: String::new(),
            stderr: format!("error: cannot write {}: {error}\n", output.display()),
        },
    }
}

/// The colour of partition `index`.
pub fn partition_colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// Height of a band of `bytes` bytes: 16 px at 4 KiB plus 5 px per doubling.
pub fn band_height(bytes: u64) -> i64 {
    let pages = (bytes / 4096).max(1);
    16 + 5 * i64::from(63 - pages.leading_zeros())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn owner_of_device(table: &Table, name: &str) -> Option<usize> {
    table.partitions.iter().position(|partition| {
        partition
            .devices
            .iter()
            .any(|device| device.as_str() == name)
    })
}

/// The SVG document for a validated table.
pub fn render(table: &Table) -> String {
    let mut body = String::new();
    let mut defs = String::new();
    let left_end = draw_left(table, &mut body, &mut defs);
    let right_end = draw_memory_map(table, &mut body);
    let height = left_end.max(right_end) + 30;
    let width = 1280;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, "<defs>{defs}</defs>");
    let _ = writeln!(
        svg,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"28\" font-size=\"18\" font-weight=\"bold\">{} — platform `{}`</text>",
        escape(&table.path.display().to_string()),
        escape(&table.platform.name)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"46\" fill=\"#555\">Memory map: band height is logarithmic in size \
         (16 px at 4 KiB, +5 px per doubling); breaks mark address space that is neither RAM nor owned.</text>"
    );
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

/// Partitions legend, cores, devices and channels. Returns the lowest y used.
fn draw_left(table: &Table, out: &mut String, defs: &mut String) -> i64 {
    let mut y = 80;
    heading(out, LEFT, y, "Partitions");
    y += 10;
    for (index, partition) in table.partitions.iter().enumerate() {
        let memory: u64 = partition.memory.iter().map(|region| region.size.0).sum();
        swatch(out, LEFT, y, partition_colour(index));
        let cpus: Vec<String> = partition.cpus.iter().map(|cpu| cpu.to_string()).collect();
        text(
            out,
            LEFT + 24,
            y + 13,
            &format!(
                "{} — cores {} — {} — on-fault {}",
                *partition.name,
                cpus.join(", "),
                Size(memory),
                match *partition.on_fault {
                    tessera_config::model::OnFault::Halt => "halt",
                    tessera_config::model::OnFault::Restart => "restart",
                }
            ),
        );
        y += ROW;
    }
    swatch(out, LEFT, y, HYPERVISOR_COLOUR);
    text(out, LEFT + 24, y + 13, "hypervisor");
    y += ROW;
    swatch(out, LEFT, y, WINDOW_COLOUR);
    text(
        out,
        LEFT + 24,
        y + 13,
        "platform window (APIC, IOAPIC, ECAM, IOMMU)",
    );
    y += ROW;
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{y}\" width=\"16\" height=\"16\" fill=\"{FREE_COLOUR}\" stroke=\"#999\" stroke-dasharray=\"3,2\"/>"
    );
    text(out, LEFT + 24, y + 13, "free RAM");
    y += ROW + 18;

    heading(out, LEFT, y, "Cores (x2APIC IDs)");
    y += 10;
    let per_row = 8;
    for (number, cpu) in table.platform.cpus.iter().enumerate() {
        let owner = table
            .partitions
            .iter()
            .position(|partition| partition.cpus.iter().any(|owned| **owned == **cpu));
        let x = LEFT + (number % per_row) as i64 * 58;
        let row_y = y + (number / per_row) as i64 * 36;
        let fill = owner.map_or(UNOWNED_COLOUR, partition_colour);
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{row_y}\" width=\"52\" height=\"30\" rx=\"4\" fill=\"{fill}\" stroke=\"#333\"/>"
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            x + 26,
            row_y + 19,
            **cpu
        );
    }
    let rows = table.platform.cpus.len().div_ceil(per_row) as i64;
    y += rows * 36 + 24;

    heading(out, LEFT, y, "Devices");
    y += 10;
    for device in table.platform.devices.iter() {
        let is_console = *table.hypervisor.console == *device.name;
        let owner = owner_of_device(table, &device.name);
        let fill = if is_console {
            HYPERVISOR_COLOUR
        } else {
            owner.map_or(UNOWNED_COLOUR, partition_colour)
        };
        swatch(out, LEFT, y, fill);
        let mut resources = Vec::new();
        for port in &device.device.ports {
            resources.push(format!("ports {:#x}+{}", *port.base, port.size.0));
        }
        for window in &device.device.mmio {
            resources.push(format!("mmio {:#x} {}", *window.base, Size(window.size.0)));
        }
        if let Some(pci) = &device.device.pci {
            resources.push(format!("pci {}", **pci));
        }
        if let Some(irq) = &device.device.irq {
            resources.push(format!("irq {}", **irq));
        }
        let owner_text = if is_console {
            "hypervisor console".to_owned()
        } else {
            owner.map_or("unowned".to_owned(), |index| {
                table.partitions[index].name.value.clone()
            })
        };
        text(
            out,
            LEFT + 24,
            y + 13,
            &format!(
                "{} → {} ({})",
                *device.name,
                owner_text,
                resources.join(", ")
            ),
        );
        y += ROW;
    }
    y += 18;

    heading(out, LEFT, y, "Channels");
    y += 10;
    if table.channels.is_empty() {
        text(out, LEFT, y + 13, "(none)");
        y += ROW;
    }
    for (index, channel) in table.channels.iter().enumerate() {
        let _ = write!(defs, "{}", channel_pattern(table, index));
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{y}\" width=\"16\" height=\"16\" fill=\"url(#channel{index})\" stroke=\"#333\"/>"
        );
        let members: Vec<&str> = channel.partitions.iter().map(|m| m.as_str()).collect();
        text(
            out,
            LEFT + 24,
            y + 13,
            &format!(
                "{}: {} — {} — doorbell vector {:#x}",
                *channel.name,
                members.join(" ↔ "),
                Size(channel.memory.size.0),
                *channel.doorbell.vector
            ),
        );
        y += ROW;
    }
    y
}

/// Diagonal stripes in the colours of a channel's members.
fn channel_pattern(table: &Table, index: usize) -> String {
    let colours: Vec<&str> = table.channels[index]
        .partitions
        .iter()
        .filter_map(|member| table.partition_index(member))
        .map(partition_colour)
        .collect();
    let colours = if colours.is_empty() {
        vec![UNOWNED_COLOUR]
    } else {
        colours
    };
    let stripe = 6;
    let width = stripe * colours.len();
    let mut pattern = format!(
        "<pattern id=\"channel{index}\" patternUnits=\"userSpaceOnUse\" width=\"{width}\" height=\"{width}\" patternTransform=\"rotate(45)\">"
    );
    for (number, colour) in colours.iter().enumerate() {
        let _ = write!(
            pattern,
            "<rect x=\"{}\" y=\"0\" width=\"{stripe}\" height=\"{width}\" fill=\"{colour}\"/>",
            number * stripe
        );
    }
    pattern.push_str("</pattern>");
    pattern
}

fn fill_of(band: &Band) -> String {
    match band.owner {
        Owner::Hypervisor => HYPERVISOR_COLOUR.to_owned(),
        Owner::Partition(index) | Owner::Device(Some(index)) => partition_colour(index).to_owned(),
        Owner::Channel(index) => format!("url(#channel{index})"),
        Owner::Device(None) => UNOWNED_COLOUR.to_owned(),
        Owner::Window => WINDOW_COLOUR.to_owned(),
        Owner::FreeRam => FREE_COLOUR.to_owned(),
    }
}

/// The memory map column. Returns the lowest y used.
fn draw_memory_map(table: &Table, out: &mut String) -> i64 {
    let mut y = 80;
    heading(out, BAR_X - 130, y, "Host-physical memory map");
    y += 10;
    let mut previous_end: Option<u64> = None;
    for band in memory_map(table) {
        let range = band.range;
        if let Some(end) = previous_end {
            if range.base > end {
                // Neither RAM nor owned: a break.
                let middle = y + BREAK_HEIGHT / 2;
                let _ = writeln!(
                    out,
                    "<path d=\"M{BAR_X} {y} l10 4 l-10 4 M{} {y} l-10 4 l10 4\" stroke=\"#999\" fill=\"none\"/>",
                    BAR_X + BAR_WIDTH
                );
                let _ = writeln!(
                    out,
                    "<text x=\"{}\" y=\"{}\" fill=\"#777\" font-style=\"italic\">… {} not RAM …</text>",
                    BAR_X + 20,
                    middle + 4,
                    Size(range.base - end)
                );
                y += BREAK_HEIGHT;
            }
        }
        let height = band_height(range.size);
        let dashed = if band.owner == Owner::FreeRam {
            " stroke-dasharray=\"3,2\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<rect x=\"{BAR_X}\" y=\"{y}\" width=\"{BAR_WIDTH}\" height=\"{height}\" fill=\"{}\" stroke=\"#333\"{dashed}><title>{}</title></rect>",
            fill_of(&band),
            escape(&band.label)
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-family=\"DejaVu Sans Mono, monospace\" font-size=\"11\">{:#x}</text>",
            BAR_X - 6,
            y + 11,
            range.base
        );
        text(
            out,
            BAR_X + BAR_WIDTH + 10,
            y + height / 2 + 4,
            &format!("{} — {}", Size(range.size), band.label),
        );
        y += height;
        previous_end = Some(
            range
                .base
                .saturating_add(range.size)
                .max(previous_end.unwrap_or(0)),
        );
    }
    if let Some(end) = previous_end {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-family=\"DejaVu Sans Mono, monospace\" font-size=\"11\">{end:#x}</text>",
            BAR_X - 6,
            y + 4
        );
    }
    y + 10
}

fn heading(out: &mut String, x: i64, y: i64, title: &str) {
    let _ = writeln!(
        out,
        "<text x=\"{x}\" y=\"{y}\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
}

fn text(out: &mut String, x: i64, y: i64, content: &str) {
    let _ = writeln!(out, "<text x=\"{x}\" y=\"{y}\">{}</text>", escape(content));
}

fn swatch(out: &mut String, x: i64, y: i64, fill: &str) {
    let _ = writeln!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"16\" height=\"16\" fill=\"{fill}\" stroke=\"#333\"/>"
    );
}
