//! Boot: the keys fit the kind; guest RAM holds the PVH start-info page; boot files exist;
//! ELF images are PVH guests whose loadable segments and entry point lie inside the
//! partition's guest-physical RAM and keep off the start-info page; Linux partitions have
//! low memory for the boot data, a bzImage with the 64-bit entry, room for the kernel and
//! the initrd, a command line that fits and an e820 map that fits boot_params.
//!
//! The files are read here and nowhere else: each distinct file once, parsed at most once
//! per format, and what was read and parsed is handed to lowering as a [`BootImage`] per
//! partition.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tessera_abi::table::{MappingKind, Range};

use super::{plural, show_range, FileChecks, Rule};
use crate::bzimage::{parse_bzimage, BzImage, BzImageError};
use crate::diagnostics::Finding;
use crate::elf::{parse_pvh_elf, ElfError, ElfImage};
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

/// Reads a file's bytes: `std::fs::read`, or a stand-in that counts reads in tests.
pub(crate) type ReadFile<'read> = dyn FnMut(&Path) -> std::io::Result<Vec<u8>> + 'read;

/// Checks the boot rules of every partition and, with `files`, reads and checks its boot
/// files through `reader`. Returns what was read and parsed per partition (in table order;
/// `None` where files are skipped or a file failed its checks).
pub(super) fn check(
    table: &Table,
    files: FileChecks,
    reader: &mut BootFileReader<'_>,
    findings: &mut Vec<Finding>,
) -> Vec<Option<BootImage>> {
    let mut images = Vec::with_capacity(table.partitions.len());
    for (index, partition) in table.partitions.iter().enumerate() {
        images.push(None);
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
        let checked = match *boot.kind {
            BootKind::Elf => match &boot.image {
                Some(image) => check_elf(table, index, reader, image).map(BootImage::Elf),
                None => continue,
            },
            BootKind::Linux => {
                let (Some(kernel), Some(initrd)) = (&boot.kernel, &boot.initrd) else {
                    // The missing key is `boot-incomplete`; still check the file given.
                    for file in [&boot.kernel, &boot.initrd].into_iter().flatten() {
                        if let Err(finding) = reader.read(table, file) {
                            findings.push(*finding);
                        }
                    }
                    continue;
                };
                let files = reader
                    .read(table, kernel)
                    .and_then(|kernel| Ok((kernel, reader.read(table, initrd)?)));
                match files {
                    Err(finding) => Err(finding),
                    // Low-memory and memory-map findings are reported above already.
                    Ok(_) if !linux_memory_ok => continue,
                    Ok((kernel, initrd)) => {
                        check_linux_files(table, index, kernel, initrd).map(BootImage::Linux)
                    }
                }
            }
        };
        match checked {
            Ok(image) => images[index] = Some(image),
            Err(finding) => findings.push(*finding),
        }
    }
    images
}

/// What validation read and parsed for one partition's boot: lowering builds the
/// partition's blobs, segments and entry from it without touching the files again.
#[derive(Clone, Debug)]
pub enum BootImage {
    Elf(ElfBoot),
    Linux(LinuxBoot),
}

/// An ELF partition's image, read and parsed, its segments checked against the partition.
#[derive(Clone, Debug)]
pub struct ElfBoot {
    pub file: Arc<BootFile>,
    pub image: ElfImage,
}

/// A Linux partition's kernel and initrd, read and checked, with its layout.
#[derive(Clone, Debug)]
pub struct LinuxBoot {
    pub kernel_file: Arc<BootFile>,
    pub kernel: BzImage,
    pub initrd_file: Arc<BootFile>,
    pub layout: LinuxLayout,
    /// The guest's e820 map.
    pub e820: Vec<linux::E820Entry>,
}

/// A boot file as read from disk. Partitions that name the same file share one (an
/// [`Arc`]), so it is read once and parsed at most once per format, whoever checks it.
pub struct BootFile {
    /// Absolute (canonical where the file exists): what the generated code includes.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    elf: OnceLock<Result<ElfImage, ElfError>>,
    kernel: OnceLock<Result<BzImage, BzImageError>>,
}

impl BootFile {
    fn new(path: PathBuf, bytes: Vec<u8>) -> Self {
        Self {
            path,
            bytes,
            elf: OnceLock::new(),
            kernel: OnceLock::new(),
        }
    }

    /// The file parsed as a PVH ELF guest (parsed on first use only).
    fn elf(&self) -> &Result<ElfImage, ElfError> {
        self.elf.get_or_init(|| parse_pvh_elf(&self.bytes))
    }

    /// The file parsed as a bzImage (parsed on first use only).
    fn kernel(&self) -> &Result<BzImage, BzImageError> {
        self.kernel.get_or_init(|| parse_bzimage(&self.bytes))
    }
}

impl fmt::Debug for BootFile {
    /// The length, not the bytes: a kernel is megabytes.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BootFile")
            .field("path", &self.path)
            .field("length", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Reads the boot files a table names, each distinct file (by absolute path) once however
/// many partitions name it; a failed read is remembered too, so every partition naming the
/// file gets its own finding from the one attempt.
pub(crate) struct BootFileReader<'read> {
    read: &'read mut ReadFile<'read>,
    files: HashMap<PathBuf, Result<Arc<BootFile>, String>>,
}

impl<'read> BootFileReader<'read> {
    pub(crate) fn new(read: &'read mut ReadFile<'read>) -> Self {
        Self {
            read,
            files: HashMap::new(),
        }
    }

    /// Reads a boot file named in the table, relative to the table's directory.
    fn read(
        &mut self,
        table: &Table,
        file: &Located<PathBuf>,
    ) -> Result<Arc<BootFile>, Box<Finding>> {
        let path = table.resolve_path(file);
        let absolute = std::fs::canonicalize(&path)
            .or_else(|_| std::path::absolute(&path))
            .unwrap_or_else(|_| path.clone());
        let read = &mut self.read;
        let result = self.files.entry(absolute.clone()).or_insert_with(|| {
            read(&path)
                .map(|bytes| Arc::new(BootFile::new(absolute.clone(), bytes)))
                .map_err(|error| error.to_string())
        });
        result.clone().map_err(|error| {
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

/// Checks the kernel and initrd (already read) of Linux partition `index`.
fn check_linux_files(
    table: &Table,
    index: usize,
    kernel_file: Arc<BootFile>,
    initrd_file: Arc<BootFile>,
) -> Result<LinuxBoot, Box<Finding>> {
    let partition = &table.partitions[index];
    let boot = &partition.boot;
    let kernel_span = boot.kernel.as_ref().map_or(boot.span, |kernel| kernel.span);
    let kernel = kernel_file.kernel().clone().map_err(|error| {
        Box::new(
            Finding::new(
                Rule::BootKernelFormat,
                kernel_span,
                format!(
                    "kernel {} of partition `{}`: {error}",
                    kernel_file.path.display(),
                    *partition.name
                ),
            )
            .label("this kernel")
            .hint("use an x86-64 bzImage (boot protocol 2.12 or later), e.g. Debian's /boot/vmlinuz-*"),
        )
    })?;
    let (ram, channels) = linux_memory(table, index);
    let cmdline = boot.cmdline.as_ref().map_or("", |cmdline| cmdline.as_str());
    let layout = linux::plan(&kernel, initrd_file.bytes.len() as u64, cmdline, &ram)
        .map_err(|error| linux_finding(table, index, &error))?;
    let e820 =
        linux::e820_map(&ram, &channels).map_err(|error| linux_finding(table, index, &error))?;
    Ok(LinuxBoot {
        kernel_file,
        kernel,
        initrd_file,
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

fn relative_hint(table: &Table) -> String {
    format!(
        "relative paths are resolved against the table's directory, {}; build the guest first",
        table.directory().display()
    )
}

/// Reads, parses and checks the ELF image of partition `index`.
fn check_elf(
    table: &Table,
    index: usize,
    reader: &mut BootFileReader<'_>,
    image: &Located<PathBuf>,
) -> Result<ElfBoot, Box<Finding>> {
    let partition = &table.partitions[index];
    let file = reader.read(table, image)?;
    let path = &file.path;
    let elf = file.elf().clone().map_err(|error| {
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
    Ok(ElfBoot { file, image: elf })
}
