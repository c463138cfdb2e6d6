//! Boot: the keys fit the kind; guest RAM holds the PVH start-info page; boot files exist;
//! ELF images are PVH guests whose loadable segments and entry point lie inside the
//! partition's guest-physical RAM and keep off the start-info page; Linux partitions have
//! low memory for the boot data, a bzImage with the 64-bit entry, room for the kernel and
//! the initrd, a command line that fits and an e820 map that fits boot_params.

use std::path::PathBuf;

use tessera_abi::table::{MappingKind, Range};

use super::{plural, show_range, FileChecks, Rule};
use crate::bzimage::{parse_bzimage, BzImage};
use crate::diagnostics::Finding;
use crate::elf::{parse_pvh_elf, ElfImage};
use crate::layout::{covered, guest_ram, plan_partition};
use crate::linux::{self, LinuxLayout, LinuxLayoutError};
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
        let mut linux_memory_ok = true;
        if *boot.kind == BootKind::Linux && !partition.memory.is_empty() {
            let (ram, channels) = linux_memory(table, index);
            for error in [
                linux::check_low_memory(&ram).err(),
                linux::e820_map(&ram, &channels).err(),
            ]
            .into_iter()
            .flatten()
            {
                linux_memory_ok = false;
                findings.push(*linux_finding(table, index, &error));
            }
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
                if let (Some(kernel), Some(initrd)) = (&boot.kernel, &boot.initrd) {
                    let files = read_boot_file(table, kernel)
                        .and_then(|kernel| Ok((kernel, read_boot_file(table, initrd)?)));
                    match files {
                        Err(finding) => findings.push(*finding),
                        // Low-memory and memory-map findings are reported above already.
                        Ok(_) if !linux_memory_ok => {}
                        Ok((kernel, initrd)) => {
                            if let Err(finding) = check_linux_files(table, index, kernel, initrd) {
                                findings.push(*finding);
                            }
                        }
                    }
                } else {
                    // The missing key is `boot-incomplete`; still check the file given.
                    for file in [&boot.kernel, &boot.initrd].into_iter().flatten() {
                        if let Err(finding) = read_boot_file(table, file) {
                            findings.push(*finding);
                        }
                    }
                }
            }
        }
    }
}

/// A Linux partition's boot files, read and checked, with its layout.
#[derive(Clone, Debug)]
pub(crate) struct LinuxFiles {
    pub kernel_path: PathBuf,
    pub kernel_bytes: Vec<u8>,
    pub kernel: BzImage,
    pub initrd_path: PathBuf,
    pub initrd_bytes: Vec<u8>,
    pub layout: LinuxLayout,
    /// The guest's e820 map.
    pub e820: Vec<linux::E820Entry>,
}

/// The guest RAM (sorted, merged) and channel ranges of partition `index`.
pub(crate) fn linux_memory(table: &Table, index: usize) -> (Vec<Range>, Vec<Range>) {
    let channels = plan_partition(table, index)
        .into_iter()
        .filter(|planned| matches!(planned.mapping.kind, MappingKind::Channel(_)))
        .map(|planned| Range::new(planned.mapping.guest, planned.mapping.host.size))
        .collect();
    (guest_ram(table, index), channels)
}

/// Reads and checks the kernel and initrd of Linux partition `index` and lays it out.
pub(crate) fn check_linux(table: &Table, index: usize) -> Result<LinuxFiles, Box<Finding>> {
    let partition = &table.partitions[index];
    let boot = &partition.boot;
    let (Some(kernel), Some(initrd)) = (&boot.kernel, &boot.initrd) else {
        return Err(Box::new(Finding::new(
            Rule::BootIncomplete,
            boot.span,
            format!(
                "partition `{}`: boot kind `linux` needs `kernel` and `initrd`",
                *partition.name
            ),
        )));
    };
    let kernel = read_boot_file(table, kernel)?;
    let initrd = read_boot_file(table, initrd)?;
    let (ram, channels) = linux_memory(table, index);
    linux::check_low_memory(&ram).map_err(|error| linux_finding(table, index, &error))?;
    linux::e820_map(&ram, &channels).map_err(|error| linux_finding(table, index, &error))?;
    check_linux_files(table, index, kernel, initrd)
}

/// Checks the kernel and initrd (already read) of Linux partition `index`.
fn check_linux_files(
    table: &Table,
    index: usize,
    (kernel_path, kernel_bytes): (PathBuf, Vec<u8>),
    (initrd_path, initrd_bytes): (PathBuf, Vec<u8>),
) -> Result<LinuxFiles, Box<Finding>> {
    let partition = &table.partitions[index];
    let boot = &partition.boot;
    let kernel_span = boot.kernel.as_ref().map_or(boot.span, |kernel| kernel.span);
    let kernel = parse_bzimage(&kernel_bytes).map_err(|error| {
        Box::new(
            Finding::new(
                Rule::BootKernelFormat,
                kernel_span,
                format!(
                    "kernel {} of partition `{}`: {error}",
                    kernel_path.display(),
                    *partition.name
                ),
            )
            .label("this kernel")
            .hint("use an x86-64 bzImage (boot protocol 2.12 or later), e.g. Debian's /boot/vmlinuz-*"),
        )
    })?;
    let (ram, channels) = linux_memory(table, index);
    let cmdline = boot.cmdline.as_ref().map_or("", |cmdline| cmdline.as_str());
    let layout = linux::plan(&kernel, initrd_bytes.len() as u64, cmdline, &ram)
        .map_err(|error| linux_finding(table, index, &error))?;
    let e820 =
        linux::e820_map(&ram, &channels).map_err(|error| linux_finding(table, index, &error))?;
    Ok(LinuxFiles {
        kernel_path,
        kernel_bytes,
        kernel,
        initrd_path,
        initrd_bytes,
        layout,
        e820,
    })
}

/// The finding for a Linux layout error of partition `index`.
fn linux_finding(table: &Table, index: usize, error: &LinuxLayoutError) -> Box<Finding> {
    let partition = &table.partitions[index];
    let boot = &partition.boot;
    let ram_text = || {
        guest_ram(table, index)
            .iter()
            .map(|r| show_range(r.base, r.size))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let message = format!("partition `{}`: {error}", *partition.name);
    let finding = match error {
        LinuxLayoutError::LowMemoryNotCovered => Finding::new(
            Rule::BootLowMemory,
            partition.name.span,
            message,
        )
        .label("no low memory")
        .related(boot.span, "boot kind `linux`")
        .hint("let the first region start at guest-physical 0 (the default packing); see docs/linux-guest.md for the layout"),
        LinuxLayoutError::TooManyMemoryRanges { .. } => Finding::new(
            Rule::BootMemoryMap,
            partition.name.span,
            message,
        )
        .label("too many memory ranges")
        .hint("use fewer, larger memory regions or fewer channels"),
        LinuxLayoutError::KernelOutside { .. } => Finding::new(
            Rule::BootKernelPlacement,
            boot.kernel.as_ref().map_or(boot.span, |kernel| kernel.span),
            message,
        )
        .label("this kernel")
        .related(partition.name.span, format!("guest RAM: {}", ram_text()))
        .hint("give the partition guest RAM from 0 up to at least pref_address + init_size (Debian's kernel: 16 MiB + about 64 MiB)"),
        LinuxLayoutError::InitrdDoesNotFit { .. } => Finding::new(
            Rule::BootInitrdPlacement,
            boot.initrd.as_ref().map_or(boot.span, |initrd| initrd.span),
            message,
        )
        .label("this initrd")
        .related(partition.name.span, format!("guest RAM: {}", ram_text()))
        .hint("give the partition more guest RAM"),
        LinuxLayoutError::CmdlineTooLong { .. } => Finding::new(
            Rule::BootCmdlineLength,
            boot.cmdline.as_ref().map_or(boot.span, |cmdline| cmdline.span),
            message,
        )
        .label("this command line")
        .hint("the hypervisor appends ` tsc_early_khz=<kHz>` at boot; shorten the command line"),
    };
    Box::new(finding)
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
