//! Boot: the keys fit the kind; guest RAM holds the PVH start-info page; boot files exist;
//! ELF images are PVH guests whose loadable segments and entry point lie inside the
//! partition's guest-physical RAM and keep off the start-info page.

use std::path::PathBuf;

use super::{plural, show_range, FileChecks, Rule};
use crate::diagnostics::Finding;
use crate::elf::{parse_pvh_elf, ElfImage};
use crate::layout::{covered, guest_ram};
use crate::model::{BootKind, Table};
use crate::source::{Located, Span};

/// A key the boot kind needs, and whether it is there.
type Needed<'a> = (&'a str, bool);
/// A key of another kind, and where it was written if it was.
type Foreign<'a> = (&'a str, Option<Span>);

/// The guest-physical page where the hypervisor writes the PVH `hvm_start_info` block, the
/// command line and the memory map (see docs/architecture.md).
pub const START_INFO_PAGE: u64 = 0x1000;

pub(super) fn check(table: &Table, files: FileChecks, findings: &mut Vec<Finding>) {
    for (index, partition) in table.partitions.iter().enumerate() {
        let boot = &partition.boot;
        let (needed, foreign): (&[Needed], &[Foreign]) = match *boot.kind {
            BootKind::Elf => (
                &[("image", boot.image.is_some())],
                &[
                    ("kernel", boot.kernel.as_ref().map(|k| k.span)),
                    ("initrd", boot.initrd.as_ref().map(|i| i.span)),
                ],
            ),
            BootKind::Linux => (
                &[
                    ("kernel", boot.kernel.is_some()),
                    ("initrd", boot.initrd.is_some()),
                ],
                &[("image", boot.image.as_ref().map(|i| i.span))],
            ),
        };
        let kind = match *boot.kind {
            BootKind::Elf => "elf",
            BootKind::Linux => "linux",
        };
        for (key, present) in needed {
            if !present {
                findings.push(
                    Finding::new(
                        Rule::BootIncomplete,
                        boot.span,
                        format!(
                            "partition `{}`: boot kind `{kind}` needs `{key}`",
                            *partition.name
                        ),
                    )
                    .label(format!("no `{key}`")),
                );
            }
        }
        for (key, span) in foreign {
            if let Some(span) = span {
                findings.push(
                    Finding::new(
                        Rule::BootExtraKey,
                        *span,
                        format!(
                            "partition `{}`: `{key}` does not belong to boot kind `{kind}`",
                            *partition.name
                        ),
                    )
                    .related(boot.kind.span, format!("kind `{kind}`")),
                );
            }
        }
        if *boot.kind == BootKind::Elf
            && !partition.memory.is_empty()
            && !covered(&guest_ram(table, index), START_INFO_PAGE, 0x1000)
        {
            findings.push(
                Finding::new(
                    Rule::BootStartInfo,
                    partition.name.span,
                    format!(
                        "partition `{}`: guest RAM does not cover guest-physical 0x1000–0x1fff, where the hypervisor writes the PVH start-info block",
                        *partition.name
                    ),
                )
                .label("no start-info page")
                .hint("let the first region start at guest-physical 0 (the default packing) and be at least 8 KiB"),
            );
        }
        if files == FileChecks::Skip {
            continue;
        }
        match *boot.kind {
            BootKind::Elf => {
                if let Some(image) = &boot.image {
                    if let Err(finding) = check_elf(table, index, image) {
                        findings.push(*finding);
                    }
                }
            }
            BootKind::Linux => {
                for file in [&boot.kernel, &boot.initrd].into_iter().flatten() {
                    if let Err(finding) = read_boot_file(table, file) {
                        findings.push(*finding);
                    }
                }
            }
        }
    }
}

/// Reads a boot file named in the table, relative to the table's directory.
pub(crate) fn read_boot_file(
    table: &Table,
    file: &Located<PathBuf>,
) -> Result<(PathBuf, Vec<u8>), Box<Finding>> {
    let path = table.resolve_path(file);
    let absolute = std::fs::canonicalize(&path)
        .or_else(|_| std::path::absolute(&path))
        .unwrap_or_else(|_| path.clone());
    std::fs::read(&path)
        .map(|bytes| (absolute.clone(), bytes))
        .map_err(|error| {
            Box::new(
                Finding::new(
                    Rule::BootFileMissing,
                    file.span,
                    format!("cannot read boot file {}: {error}", absolute.display()),
                )
                .label("this file")
                .hint(relative_hint(table)),
            )
        })
}

fn relative_hint(table: &Table) -> String {
    format!(
        "relative paths are resolved against the table's directory, {}; build the guest first",
        table.directory().display()
    )
}

/// Reads, parses and checks the ELF image of partition `index`.
pub(crate) fn check_elf(
    table: &Table,
    index: usize,
    image: &Located<PathBuf>,
) -> Result<(PathBuf, Vec<u8>, ElfImage), Box<Finding>> {
    let partition = &table.partitions[index];
    let (path, bytes) = read_boot_file(table, image)?;
    let elf = parse_pvh_elf(&bytes).map_err(|error| {
        Box::new(
            Finding::new(
                Rule::BootImageFormat,
                image.span,
                format!(
                    "boot image {} of partition `{}`: {error}",
                    path.display(),
                    *partition.name
                ),
            )
            .label("this image")
            .hint(
                "the guest must be an ELF64 x86-64 executable with a XEN_ELFNOTE_PHYS32_ENTRY note",
            ),
        )
    })?;
    let ram = guest_ram(table, index);
    let ram_text = || {
        ram.iter()
            .map(|r| show_range(r.base, r.size))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (number, segment) in elf.segments.iter().enumerate() {
        if segment.memory_size > 0 && !covered(&ram, segment.guest, segment.memory_size) {
            return Err(Box::new(
                Finding::new(
                    Rule::BootSegmentOutside,
                    image.span,
                    format!(
                        "segment {} of {} ({} at guest {}) is not inside the guest RAM of partition `{}`",
                        number + 1,
                        path.display(),
                        plural(segment.memory_size, "byte"),
                        show_range(segment.guest, segment.memory_size),
                        *partition.name
                    ),
                )
                .label("this image")
                .related(partition.name.span, format!("guest RAM: {}", ram_text()))
                .hint("link the guest inside the partition's guest-physical RAM (regions are packed from 0)"),
            ));
        }
    }
    let start_info_end = START_INFO_PAGE + 0x1000;
    for (number, segment) in elf.segments.iter().enumerate() {
        let end = segment.guest.saturating_add(segment.memory_size);
        if segment.memory_size > 0 && segment.guest < start_info_end && START_INFO_PAGE < end {
            return Err(Box::new(
                Finding::new(
                    Rule::BootStartInfo,
                    image.span,
                    format!(
                        "segment {} of {} (guest {}) overlaps the start-info page 0x1000–0x1fff of partition `{}`",
                        number + 1,
                        path.display(),
                        show_range(segment.guest, segment.memory_size),
                        *partition.name
                    ),
                )
                .label("this image")
                .hint("the hypervisor writes the PVH start-info block there; link the guest at 1 MiB"),
            ));
        }
    }
    if !covered(&ram, elf.pvh_entry, 1) {
        return Err(Box::new(
            Finding::new(
                Rule::BootEntryOutside,
                image.span,
                format!(
                    "the PVH entry point {:#x} of {} is not inside the guest RAM of partition `{}`",
                    elf.pvh_entry,
                    path.display(),
                    *partition.name
                ),
            )
            .label("this image")
            .related(partition.name.span, format!("guest RAM: {}", ram_text())),
        ));
    }
    Ok((path, bytes, elf))
}
