//! The hypervisor's own page tables (host paging): which physical range it maps with which
//! rights, cache type and page size, the four-level tables that say so, and a check of built
//! tables against the plan.
//!
//! The loader enters the hypervisor on one read-write-execute identity map of the first
//! 4 GiB. The plan here keeps the identity map (every address the hypervisor uses is
//! physical) and the loader's cache types (write-back, the fourth GiB uncached for the
//! IOAPIC and device MMIO), but gives each range only the rights it needs:
//!
//! | range                                  | rights        | page size        |
//! |----------------------------------------|---------------|------------------|
//! | image text (with the Multiboot headers)| read, execute | 4 KiB            |
//! | image rodata                           | read          | 4 KiB            |
//! | image data and bss                     | read, write   | 4 KiB            |
//! | the loader's boot page tables (in bss) | read          | 4 KiB            |
//! | the page under each core's stack       | not present   | 4 KiB            |
//! | partition RAM and channel memory       | read, write   | 2 MiB where it can |
//! | the AP start-up page (0x8000)          | read, write   | 4 KiB            |
//! | the PCI Express ECAM window, uncached  | read, write   | 2 MiB where it can |
//! | the fourth GiB, uncached               | read, write   | 2 MiB            |
//! | the rest of the first 4 GiB            | read          | 2 MiB where it can |
//! | above 4 GiB                            | not present   |                  |
//!
//! Nothing is both writable and executable (there is no such [`Access`]), only the image's
//! text is executable, and no entry has the user bit, so SMEP and SMAP can both be on: the
//! hypervisor never runs or touches user pages. The rest of the first 4 GiB stays readable
//! because the hypervisor reads firmware there at any time (ACPI tables, the BIOS data and
//! ROM areas, the boot loader's information), wherever the firmware put it.
//!
//! The ECAM window (the table's `platform.ecam`, PCIe Base 4.0 §7.2.2) is where the
//! hypervisor reads and writes the configuration space of the functions it passes through,
//! extended space included; firmware often puts it below the fourth GiB (QEMU's q35 at
//! 0xB000_0000), where the rest of memory is write-back and read-only, so it gets its own
//! row: configuration registers are device registers, which a cached mapping would answer
//! with stale values and write back late, and the hypervisor writes command registers, BARs and capabilities there.
//!
//! The AP start-up page is data here: the application processors execute it under the
//! loader's boot tables, which the trampoline loads itself, and move to these tables in Rust.
//!
//! Sources: Intel SDM vol. 3 §4.5 (4-level paging: table formats 4-15 to 4-20), §4.6 (access
//! rights: R/W and XD combine over every level; CR0.WP makes read-only pages binding on
//! supervisor writes; SMEP §4.6.1, SMAP §4.6.1), §4.9 and §11.12.3 (PCD/PWT select PAT entry
//! 3, uncached with the power-on PAT); AMD APM vol. 2 §5.3 (long-mode page translation), §5.6
//! (page protection, NX, SMEP, SMAP).

use crate::range::{align_down, align_up};
use bitflags::bitflags;
use core::fmt;
use tessera_abi::table::{MappingKind, MemoryMapping, Range};

/// A small page, and the granule of every range in the plan.
pub const PAGE_BYTES: u64 = 1 << 12;
/// A large page: what one page-directory entry maps with PS = 1.
pub const LARGE_PAGE_BYTES: u64 = 1 << 21;
/// What one page-directory table maps.
const DIRECTORY_BYTES: u64 = 1 << 30;
/// Entries in one table (each 8 bytes, one 4 KiB page).
pub const ENTRIES: usize = 512;
/// One page-table page.
pub type Table = [u64; ENTRIES];
/// The host page tables map `[0, MAPPED_END)`: the first 4 GiB, as the loader does.
pub const MAPPED_END: u64 = 1 << 32;
/// The fourth GiB: the IOAPIC, the local APIC's xAPIC page and device MMIO on PC platforms,
/// mapped uncached (as the loader maps it).
pub const MMIO_WINDOW: Range = Range::new(0xC000_0000, 0x4000_0000);
/// Whether `bytes` bytes from `base` lie wholly in [`MMIO_WINDOW`], where the hypervisor
/// may touch device registers (uncached, never RAM of anyone's).
pub fn lies_in_mmio_window(base: u64, bytes: u64) -> bool {
    bytes != 0
        && base >= MMIO_WINDOW.base
        && base
            .checked_add(bytes)
            .is_some_and(|end| end <= MMIO_WINDOW.end())
}

/// Whether the table's ECAM window can be a row of the plan: 2 MiB-aligned in start and size
/// and below 4 GiB. (Windows elsewhere stay unmapped; the hypervisor then reaches
/// configuration space through mechanism #1, without extended space.)
pub const fn ecam_mappable(ecam: Range) -> bool {
    ecam.size != 0
        && ecam.base.is_multiple_of(LARGE_PAGE_BYTES)
        && ecam.size.is_multiple_of(LARGE_PAGE_BYTES)
        && ecam.base < MAPPED_END
        && ecam.size <= MAPPED_END - ecam.base
}

/// Page directories: one per GiB mapped.
const DIRECTORIES: usize = (MAPPED_END / DIRECTORY_BYTES) as usize;
/// Large pages in the mapped range.
const LARGE_PAGES: usize = (MAPPED_END / LARGE_PAGE_BYTES) as usize;
/// Tables every build uses: the PML4, one PDPT and the page directories. Page tables (for
/// ranges that need 4 KiB pages) come after them.
pub const FIXED_TABLES: usize = 2 + DIRECTORIES;
/// Bits 51:12 of an entry: the physical address of the next table or of a 4 KiB page.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bits 51:21 of a large-page entry: the page's physical address (bit 12 is PAT there).
const LARGE_ADDRESS_MASK: u64 = 0x000f_ffff_ffe0_0000;

/// CPUID.(EAX=7,ECX=0):EBX bit 7: supervisor-mode execution prevention (SDM vol. 2, CPUID).
pub const CPUID_7_EBX_SMEP: u32 = 1 << 7;
/// CPUID.(EAX=7,ECX=0):EBX bit 20: supervisor-mode access prevention.
pub const CPUID_7_EBX_SMAP: u32 = 1 << 20;
/// CR4 bit 20, SMEP (SDM vol. 3 §2.5).
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4 bit 21, SMAP.
pub const CR4_SMAP: u64 = 1 << 21;

/// The CR4 bits to set for SMEP and SMAP, given CPUID.0:EAX (the highest basic leaf) and
/// CPUID.(EAX=7,ECX=0):EBX: each bit only where the processor reports the feature (setting
/// an unsupported CR4 bit raises #GP). Leaf 7 means nothing on a processor without it.
pub fn supervisor_protection(max_basic_leaf: u32, leaf_7_ebx: u32) -> u64 {
    if max_basic_leaf < 7 {
        return 0;
    }
    let mut bits = 0;
    if leaf_7_ebx & CPUID_7_EBX_SMEP != 0 {
        bits |= CR4_SMEP;
    }
    if leaf_7_ebx & CPUID_7_EBX_SMAP != 0 {
        bits |= CR4_SMAP;
    }
    bits
}

bitflags! {
    /// The bits of a 4-level paging entry this module writes or reads (SDM vol. 3 §4.5,
    /// tables 4-15 to 4-20; AMD APM vol. 2 §5.4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EntryFlags: u64 {
        /// Bit 0: the entry maps a page or references a table.
        const PRESENT = 1 << 0;
        /// Bit 1: writes allowed (on every level of the walk, §4.6.1).
        const WRITABLE = 1 << 1;
        /// Bit 2: user-mode accesses allowed (on every level). Never set here.
        const USER = 1 << 2;
        /// Bit 3: page-level write-through (PAT index bit 0).
        const WRITE_THROUGH = 1 << 3;
        /// Bit 4: page-level cache disable (PAT index bit 1).
        const CACHE_DISABLE = 1 << 4;
        /// Bit 7 of a PDPT or PD entry: the entry maps a page (1 GiB or 2 MiB); of a PT
        /// entry: PAT index bit 2.
        const PAGE_SIZE = 1 << 7;
        /// Bit 8: global translation (with CR4.PGE). Never set here.
        const GLOBAL = 1 << 8;
        /// Bit 12 of a large-page entry: PAT index bit 2. Never set here.
        const LARGE_PAT = 1 << 12;
        /// Bit 63: instruction fetches not allowed (with EFER.NXE; on any level, §4.6.1).
        const NO_EXECUTE = 1 << 63;
    }
}

/// What the hypervisor may do with a present page. There is deliberately no writable and
/// executable variant: W^X holds by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read; no write, no instruction fetch.
    ReadOnly,
    /// Read and write; no instruction fetch.
    ReadWrite,
    /// Read and fetch instructions; no write.
    ReadExecute,
}

impl Access {
    pub const fn writable(self) -> bool {
        matches!(self, Access::ReadWrite)
    }
    pub const fn executable(self) -> bool {
        matches!(self, Access::ReadExecute)
    }
}

/// The memory type of a page, as the loader chose it: PAT entry 0 or 3 of the power-on PAT
/// (SDM vol. 3 §11.12.3, table 11-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caching {
    /// PCD = PWT = 0: PAT entry 0, write-back.
    WriteBack,
    /// PCD = PWT = 1: PAT entry 3, uncached.
    Uncached,
}

impl Caching {
    /// The loader's cache type at `address`: uncached in [`MMIO_WINDOW`], write-back below.
    pub const fn at(address: u64) -> Caching {
        if MMIO_WINDOW.contains(address) {
            Caching::Uncached
        } else {
            Caching::WriteBack
        }
    }
}

/// The rights and cache type of one present page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageRights {
    pub access: Access,
    pub caching: Caching,
}

/// Which row of the plan a page falls in (the module's table), in the order they are
/// looked at: the first that contains the page decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// The page under a core's stack: not present, so an overflow faults.
    GuardPage,
    /// The image's text, with the Multiboot headers in front of it.
    Text,
    /// The image's read-only data (the AP trampoline's master copy, the guest images).
    ReadOnlyData,
    /// The loader's boot page tables: the application processors start on them; nothing
    /// writes them after the loader.
    BootPageTables,
    /// The image's data and bss: every static of the hypervisor, the stacks, these tables.
    Data,
    /// RAM or channel memory of a partition: cleared, loaded and read by the hypervisor.
    PartitionMemory,
    /// The page the application processors start from: written with the trampoline and its
    /// parameter block, never executed under these tables.
    ApTrampoline,
    /// The PCI Express configuration window (ECAM): uncached, read-write.
    Ecam,
    /// The fourth GiB: IOAPIC registers and device MMIO, uncached.
    MmioWindow,
    /// Anything else below 4 GiB: firmware tables, BIOS areas, the boot information, unused
    /// RAM. Read only.
    Elsewhere,
}

impl Purpose {
    /// The access the row grants; `None` for a page that is not present.
    pub const fn access(self) -> Option<Access> {
        match self {
            Purpose::GuardPage => None,
            Purpose::Text => Some(Access::ReadExecute),
            Purpose::ReadOnlyData | Purpose::BootPageTables | Purpose::Elsewhere => {
                Some(Access::ReadOnly)
            }
            Purpose::Data
            | Purpose::PartitionMemory
            | Purpose::ApTrampoline
            | Purpose::Ecam
            | Purpose::MmioWindow => Some(Access::ReadWrite),
        }
    }
}

/// Whether the hypervisor writes memory of this kind: RAM (cleared and loaded) and channel
/// memory (read in guest page walks; written by no one but its partitions, but shared and
/// plain RAM). A passthrough device's MMIO it never touches: that stays as it is elsewhere.
const fn hypervisor_writes(kind: MappingKind) -> bool {
    matches!(kind, MappingKind::Ram | MappingKind::Channel(_))
}

/// The inputs of the plan: where the image's sections, the stacks and the boot tables lie
/// (from linker symbols and statics), and the table's partition memory.
#[derive(Clone, Copy, Debug)]
pub struct HostLayout<'a> {
    /// The image from its start (the Multiboot headers) to the end of `.text`.
    pub text: Range,
    /// `.rodata`, right after the text.
    pub rodata: Range,
    /// `.data` and `.bss`, right after the rodata, to the end of the image.
    pub data: Range,
    /// The loader's boot page tables, inside `data`.
    pub boot_page_tables: Range,
    /// The page under each core's stack, inside `data`.
    pub guard_pages: &'a [u64],
    /// Each partition's memory map.
    pub partitions: &'a [&'a [MemoryMapping]],
    /// The page the application processors start from.
    pub ap_trampoline: Range,
    /// The PCI Express ECAM window, if the table has one.
    pub ecam: Option<Range>,
}

/// Why a [`HostLayout`] cannot be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// A section's or range's start or size is not a multiple of 4 KiB.
    Misaligned { what: &'static str },
    /// The text is empty.
    NoText,
    /// Text, rodata and data do not follow each other without gaps.
    SectionsNotContiguous,
    /// A range reaches past 4 GiB, which the plan does not map.
    BeyondMapped { what: &'static str },
    /// The boot page tables are not inside the image's data.
    BootTablesOutsideData,
    /// A guard page is not page-aligned or not inside the image's data.
    GuardPageOutsideData { address: u64 },
    /// A partition's mapping (index `mapping`) is not 4 KiB-aligned.
    PartitionMisaligned { partition: usize, mapping: usize },
    /// A partition's mapping reaches past 4 GiB.
    PartitionBeyondMapped { partition: usize, mapping: usize },
    /// A partition's mapping overlaps the image.
    PartitionOverlapsImage { partition: usize, mapping: usize },
    /// The AP start-up page is not one page-aligned page outside the image.
    TrampolineMisplaced,
    /// The ECAM window is not 2 MiB-aligned in start and size, reaches past 4 GiB, or
    /// overlaps the image, partition memory or the AP start-up page.
    EcamMisplaced,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            LayoutError::Misaligned { what } => {
                write!(formatter, "{what} is not 4 KiB-aligned in start and size")
            }
            LayoutError::NoText => formatter.write_str("the image has no text"),
            LayoutError::SectionsNotContiguous => {
                formatter.write_str("text, rodata and data do not follow each other")
            }
            LayoutError::BeyondMapped { what } => write!(formatter, "{what} reaches past 4 GiB"),
            LayoutError::BootTablesOutsideData => {
                formatter.write_str("the boot page tables lie outside the image's data")
            }
            LayoutError::GuardPageOutsideData { address } => write!(
                formatter,
                "the stack guard page {address:#x} is not a page of the image's data"
            ),
            LayoutError::PartitionMisaligned { partition, mapping } => write!(
                formatter,
                "memory {mapping} of partition {partition} is not 4 KiB-aligned"
            ),
            LayoutError::PartitionBeyondMapped { partition, mapping } => write!(
                formatter,
                "memory {mapping} of partition {partition} reaches past 4 GiB"
            ),
            LayoutError::PartitionOverlapsImage { partition, mapping } => write!(
                formatter,
                "memory {mapping} of partition {partition} overlaps the hypervisor image"
            ),
            LayoutError::TrampolineMisplaced => formatter
                .write_str("the AP start-up page is not one aligned page outside the image"),
            LayoutError::EcamMisplaced => formatter.write_str(
                "the ECAM window is not 2 MiB-aligned below 4 GiB, clear of the image, partition memory and the AP page",
            ),
        }
    }
}

/// Whether `range` starts and ends on 4 KiB boundaries.
const fn page_aligned(range: Range) -> bool {
    range.base.is_multiple_of(PAGE_BYTES) && range.size.is_multiple_of(PAGE_BYTES)
}

/// Whether `inner` lies inside `outer`.
const fn within(inner: Range, outer: Range) -> bool {
    inner.base >= outer.base && inner.base + inner.size <= outer.base + outer.size
}

/// Whether the two ranges share a byte.
const fn overlap(a: Range, b: Range) -> bool {
    a.size != 0 && b.size != 0 && a.base < b.base + b.size && b.base < a.base + a.size
}

impl HostLayout<'_> {
    /// The whole image: text, rodata, data.
    pub const fn image(&self) -> Range {
        Range::new(self.text.base, self.data.end() - self.text.base)
    }

    /// The partition mappings the hypervisor writes, with their indices.
    fn written_mappings(&self) -> impl Iterator<Item = (usize, usize, Range)> + '_ {
        self.partitions
            .iter()
            .enumerate()
            .flat_map(|(partition, memory)| {
                memory
                    .iter()
                    .enumerate()
                    .filter(|(_, mapping)| hypervisor_writes(mapping.kind))
                    .map(move |(index, mapping)| (partition, index, mapping.host))
            })
    }

    /// Checks what the plan assumes: sections page-aligned, contiguous and below 4 GiB, the
    /// boot tables and guard pages inside the data, partition memory and the AP page
    /// page-aligned, below 4 GiB and outside the image. (The build validated the partition
    /// table against the hypervisor's memory; this checks the image the linker produced.)
    pub fn check(&self) -> Result<(), LayoutError> {
        for (what, range) in [
            ("the text", self.text),
            ("the rodata", self.rodata),
            ("the data", self.data),
            ("the boot page tables", self.boot_page_tables),
        ] {
            if !page_aligned(range) {
                return Err(LayoutError::Misaligned { what });
            }
            if range
                .base
                .checked_add(range.size)
                .is_none_or(|end| end > MAPPED_END)
            {
                return Err(LayoutError::BeyondMapped { what });
            }
        }
        if self.text.size == 0 {
            return Err(LayoutError::NoText);
        }
        if self.text.end() != self.rodata.base || self.rodata.end() != self.data.base {
            return Err(LayoutError::SectionsNotContiguous);
        }
        if !within(self.boot_page_tables, self.data) {
            return Err(LayoutError::BootTablesOutsideData);
        }
        for &address in self.guard_pages {
            let page = Range::new(address, PAGE_BYTES);
            if !page_aligned(page) || !within(page, self.data) {
                return Err(LayoutError::GuardPageOutsideData { address });
            }
        }
        let image = self.image();
        for (partition, memory) in self.partitions.iter().enumerate() {
            for (mapping, entry) in memory.iter().enumerate() {
                if !hypervisor_writes(entry.kind) {
                    continue;
                }
                let host = entry.host;
                if !page_aligned(host) {
                    return Err(LayoutError::PartitionMisaligned { partition, mapping });
                }
                if host
                    .base
                    .checked_add(host.size)
                    .is_none_or(|end| end > MAPPED_END)
                {
                    return Err(LayoutError::PartitionBeyondMapped { partition, mapping });
                }
                if overlap(host, image) {
                    return Err(LayoutError::PartitionOverlapsImage { partition, mapping });
                }
            }
        }
        let trampoline = self.ap_trampoline;
        if trampoline.size != PAGE_BYTES
            || !page_aligned(trampoline)
            || trampoline.end() > MAPPED_END
            || overlap(trampoline, image)
        {
            return Err(LayoutError::TrampolineMisplaced);
        }
        if let Some(ecam) = self.ecam {
            // 2 MiB-aligned, so the window never splits a large page and the bound of
            // `page_tables_bound` holds without it.
            if !ecam_mappable(ecam)
                || overlap(ecam, image)
                || overlap(ecam, trampoline)
                || self
                    .written_mappings()
                    .any(|(_, _, host)| overlap(host, ecam))
            {
                return Err(LayoutError::EcamMisplaced);
            }
        }
        Ok(())
    }

    /// The row of the plan `address` falls in; `None` at or above 4 GiB (not mapped).
    pub fn purpose(&self, address: u64) -> Option<Purpose> {
        if address >= MAPPED_END {
            return None;
        }
        let page = align_down(address, PAGE_BYTES);
        let purpose = if self.guard_pages.contains(&page) {
            Purpose::GuardPage
        } else if self.text.contains(address) {
            Purpose::Text
        } else if self.rodata.contains(address) {
            Purpose::ReadOnlyData
        } else if self.boot_page_tables.contains(address) {
            Purpose::BootPageTables
        } else if self.data.contains(address) {
            Purpose::Data
        } else if self
            .written_mappings()
            .any(|(_, _, host)| host.contains(address))
        {
            Purpose::PartitionMemory
        } else if self.ap_trampoline.contains(address) {
            Purpose::ApTrampoline
        } else if self.ecam.is_some_and(|ecam| ecam.contains(address)) {
            Purpose::Ecam
        } else if MMIO_WINDOW.contains(address) {
            Purpose::MmioWindow
        } else {
            Purpose::Elsewhere
        };
        Some(purpose)
    }

    /// The rights of the page at `address`; `None` if it is not mapped.
    pub fn rights(&self, address: u64) -> Option<PageRights> {
        let purpose = self.purpose(address)?;
        let access = purpose.access()?;
        let caching = if purpose == Purpose::Ecam {
            Caching::Uncached
        } else {
            Caching::at(address)
        };
        Some(PageRights { access, caching })
    }

    /// Every address where the plan may change from one page to the next: the start and
    /// end of every range it names. Between two neighbours, [`Self::purpose`] and
    /// [`Self::rights`] are constant.
    fn boundaries(&self) -> impl Iterator<Item = u64> + '_ {
        let ranges = [
            self.text,
            self.rodata,
            self.data,
            self.boot_page_tables,
            self.ap_trampoline,
            MMIO_WINDOW,
            self.ecam.unwrap_or(Range::new(0, 0)),
        ];
        ranges
            .into_iter()
            .chain(
                self.guard_pages
                    .iter()
                    .map(|&address| Range::new(address, PAGE_BYTES)),
            )
            .chain(self.written_mappings().map(|(_, _, host)| host))
            .flat_map(|range| [range.base, range.base.saturating_add(range.size)])
    }

    /// The end of the run of pages that share `address`'s rights: the first boundary of the
    /// plan above `address`, or the end of the mapped space.
    pub fn run_end(&self, address: u64) -> u64 {
        self.boundaries()
            .filter(|&boundary| boundary > address)
            .fold(MAPPED_END, u64::min)
    }

    /// Whether every page of `[base, base + size)` has the same rights: no boundary of the
    /// plan falls strictly inside.
    pub fn is_uniform(&self, base: u64, size: u64) -> bool {
        let end = base.saturating_add(size);
        !self
            .boundaries()
            .any(|boundary| boundary > base && boundary < end)
    }

    /// The 2 MiB pieces of the first 4 GiB whose pages differ: those a boundary of the plan
    /// falls strictly inside, which is `!is_uniform(piece)` for every piece, found in one
    /// pass over the boundaries instead of one pass per piece (2048 of them: at boot the
    /// per-piece search cost about 3 M instructions, docs/benchmarks.md).
    pub fn split_pieces(&self) -> SplitPieces {
        let mut bits = [0u64; LARGE_PAGES / 64];
        for boundary in self.boundaries() {
            if boundary < MAPPED_END && !boundary.is_multiple_of(LARGE_PAGE_BYTES) {
                let piece = (boundary / LARGE_PAGE_BYTES) as usize;
                bits[piece / 64] |= 1 << (piece % 64);
            }
        }
        SplitPieces(bits)
    }

    /// The page tables (4 KiB-page tables, besides [`FIXED_TABLES`]) the plan needs: one
    /// for each 2 MiB piece of the first 4 GiB whose pages differ.
    pub fn page_tables_needed(&self) -> usize {
        self.split_pieces().count()
    }
}

/// [`HostLayout::rights`] for ascending addresses, looked up once per run of pages between
/// two boundaries of the plan instead of once per page: the plan is searched (every range,
/// every partition mapping) a few dozen times for the 3,500 leaves of the tables rather
/// than twice per leaf, which at boot cost about 2.5 M instructions (docs/benchmarks.md).
pub struct RightsCursor<'layout, 'partitions> {
    layout: &'layout HostLayout<'partitions>,
    run: Range,
    rights: Option<PageRights>,
}

impl<'layout, 'partitions> RightsCursor<'layout, 'partitions> {
    pub fn new(layout: &'layout HostLayout<'partitions>) -> Self {
        RightsCursor {
            layout,
            run: Range::new(0, 0),
            rights: None,
        }
    }

    /// The end of the run the last answer holds for.
    pub fn run_end(&self) -> u64 {
        self.run.end()
    }

    /// The rights of the page at `address` (any order works; ascending is the fast one).
    pub fn rights(&mut self, address: u64) -> Option<PageRights> {
        if !self.run.contains(address) {
            let end = self.layout.run_end(address);
            self.run = Range::new(address, end.saturating_sub(address));
            self.rights = self.layout.rights(address);
        }
        self.rights
    }
}

/// Which 2 MiB pieces of the first 4 GiB need a page table ([`HostLayout::split_pieces`]):
/// bit `i` for the piece at `i × 2 MiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPieces([u64; LARGE_PAGES / 64]);

impl SplitPieces {
    /// Whether the piece at `large × 2 MiB` is split (its pages differ).
    pub fn contains(&self, large: usize) -> bool {
        self.0
            .get(large / 64)
            .is_some_and(|word| word & (1 << (large % 64)) != 0)
    }

    /// How many pieces are split.
    pub fn count(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }
}

/// An upper bound of [`HostLayout::page_tables_needed`], known at compile time, for an
/// image inside `hypervisor_memory` and a table with `mappings` memory mappings in all:
/// every boundary of the image (sections, boot tables, guard pages) lies in a 2 MiB piece
/// that overlaps the hypervisor's memory; each mapping splits at most the two pieces its
/// ends fall in, the AP page at most one; the MMIO window is 1 GiB-aligned.
pub const fn page_tables_bound(hypervisor_memory: Range, mappings: usize) -> usize {
    let first = align_down(hypervisor_memory.base, LARGE_PAGE_BYTES);
    let end = align_up(
        hypervisor_memory.base + hypervisor_memory.size,
        LARGE_PAGE_BYTES,
    );
    ((end - first) / LARGE_PAGE_BYTES) as usize + 2 * mappings + 1
}

/// An entry referencing the next table: present and writable, not user, executable. The
/// rights that matter are in the leaves; upper levels grant everything but user access
/// (SDM vol. 3 §4.6.1: each right is the intersection over the walk).
pub fn table_entry(table: u64) -> u64 {
    (table & ADDRESS_MASK) | (EntryFlags::PRESENT | EntryFlags::WRITABLE).bits()
}

/// A leaf entry mapping the page at `address` (4 KiB, or 2 MiB when `large`) with `rights`:
/// W only for [`Access::ReadWrite`], XD unless [`Access::ReadExecute`], PCD | PWT for
/// [`Caching::Uncached`], never U or G.
pub fn leaf_entry(address: u64, rights: PageRights, large: bool) -> u64 {
    let mut flags = EntryFlags::PRESENT;
    match rights.access {
        Access::ReadOnly => flags |= EntryFlags::NO_EXECUTE,
        Access::ReadWrite => flags |= EntryFlags::WRITABLE | EntryFlags::NO_EXECUTE,
        Access::ReadExecute => {}
    }
    if rights.caching == Caching::Uncached {
        flags |= EntryFlags::WRITE_THROUGH | EntryFlags::CACHE_DISABLE;
    }
    let mask = if large {
        flags |= EntryFlags::PAGE_SIZE;
        LARGE_ADDRESS_MASK
    } else {
        ADDRESS_MASK
    };
    (address & mask) | flags.bits()
}

/// Why [`build`] failed. Nothing useful is left in the pages then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    Layout(LayoutError),
    /// The pages given hold fewer tables than the plan needs.
    OutOfTablePages {
        needed: usize,
        available: usize,
    },
    /// `phys_base` is not 4 KiB-aligned.
    MisalignedPool,
}

impl fmt::Display for BuildError {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match self {
            BuildError::Layout(error) => error.fmt(formatter),
            BuildError::OutOfTablePages { needed, available } => write!(
                formatter,
                "{needed} table pages needed, {available} reserved"
            ),
            BuildError::MisalignedPool => formatter.write_str("the table pages are not aligned"),
        }
    }
}

impl From<LayoutError> for BuildError {
    fn from(error: LayoutError) -> Self {
        BuildError::Layout(error)
    }
}

/// What [`build`] made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    /// Physical address of the PML4: the value for CR3.
    pub root: u64,
    /// Table pages used, from the first of the pool.
    pub tables: usize,
    /// Leaves mapping 2 MiB and 4 KiB pages.
    pub large_pages: usize,
    pub small_pages: usize,
}

/// Writes the tables of the plan for `layout` into `pages`, page `i` of which lies at
/// physical address `phys_base + i * 4096`: the PML4 in page 0, the PDPT in page 1, the
/// four page directories in pages 2–5, then one page table for each 2 MiB piece whose pages
/// differ. Every other piece is one 2 MiB page. Pages above those used are not touched.
pub fn build(
    layout: &HostLayout,
    pages: &mut [Table],
    phys_base: u64,
) -> Result<Built, BuildError> {
    layout.check()?;
    if !phys_base.is_multiple_of(PAGE_BYTES) {
        return Err(BuildError::MisalignedPool);
    }
    let split = layout.split_pieces();
    let needed = FIXED_TABLES + split.count();
    if pages.len() < needed {
        return Err(BuildError::OutOfTablePages {
            needed,
            available: pages.len(),
        });
    }
    let physical = |index: usize| phys_base + index as u64 * PAGE_BYTES;
    for page in pages[..needed].iter_mut() {
        *page = [0; ENTRIES];
    }
    pages[0][0] = table_entry(physical(1));
    for (directory, entry) in pages[1][..DIRECTORIES].iter_mut().enumerate() {
        *entry = table_entry(physical(2 + directory));
    }
    let mut cursor = RightsCursor::new(layout);
    let mut built = Built {
        root: physical(0),
        tables: FIXED_TABLES,
        large_pages: 0,
        small_pages: 0,
    };
    for large in 0..LARGE_PAGES {
        let base = large as u64 * LARGE_PAGE_BYTES;
        let (directory, slot) = (2 + large / ENTRIES, large % ENTRIES);
        if !split.contains(large) {
            if let Some(rights) = cursor.rights(base) {
                pages[directory][slot] = leaf_entry(base, rights, true);
                built.large_pages += 1;
            }
            continue;
        }
        let table = built.tables;
        built.tables += 1;
        pages[directory][slot] = table_entry(physical(table));
        for (index, entry) in pages[table].iter_mut().enumerate() {
            let address = base + index as u64 * PAGE_BYTES;
            if let Some(rights) = cursor.rights(address) {
                *entry = leaf_entry(address, rights, false);
                built.small_pages += 1;
            }
        }
    }
    Ok(built)
}

/// What the processor makes of one linear address under built tables: the page it falls in
/// and the rights that result from every level of the walk (SDM vol. 3 §4.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Linear address of the page (its first byte).
    pub page: u64,
    /// Physical address of the page.
    pub physical: u64,
    pub size: u64,
    /// R/W set on every level.
    pub writable: bool,
    /// XD clear on every level.
    pub executable: bool,
    /// U/S set on every level: user-mode accessible (§4.6.1).
    pub user: bool,
    /// U/S set on some level: not user-accessible unless on all, but never written here.
    pub user_bit: bool,
    /// The leaf's PAT index (PAT, PCD, PWT): 0 write-back, 3 uncached.
    pub pat_index: u8,
}

impl Translation {
    /// The [`PageRights`] this translation amounts to; `None` if it is both writable and
    /// executable, user-accessible, or of another memory type.
    pub fn rights(&self) -> Option<PageRights> {
        let access = match (self.writable, self.executable) {
            (false, false) => Access::ReadOnly,
            (true, false) => Access::ReadWrite,
            (false, true) => Access::ReadExecute,
            (true, true) => return None,
        };
        let caching = match self.pat_index {
            0 => Caching::WriteBack,
            3 => Caching::Uncached,
            _ => return None,
        };
        (!self.user && !self.user_bit).then_some(PageRights { access, caching })
    }
}

/// Index into `pages` of the table at physical address `table`, if it is one of them.
fn table_index(pages: &[Table], phys_base: u64, table: u64) -> Option<usize> {
    let offset = table.checked_sub(phys_base)?;
    if !offset.is_multiple_of(PAGE_BYTES) {
        return None;
    }
    let index = usize::try_from(offset / PAGE_BYTES).ok()?;
    (index < pages.len()).then_some(index)
}

/// Walks the tables rooted at `root` (all of them in `pages`, page `i` at `phys_base + i *
/// 4096`) for linear address `address` as 4-level paging does (SDM vol. 3 §4.5): `None`
/// if a level is not present or a table lies outside `pages`.
pub fn translate(pages: &[Table], phys_base: u64, root: u64, address: u64) -> Option<Translation> {
    if address >= 1 << 48 {
        return None;
    }
    let mut table = table_index(pages, phys_base, root)?;
    let mut rights = WalkRights::TOP;
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry = pages[table][(address >> shift) as usize & 511];
        match walk_step(
            pages,
            phys_base,
            entry,
            level,
            rights,
            address & !((1 << shift) - 1),
        ) {
            WalkStep::Absent => return None,
            WalkStep::Leaf(translation) => return Some(translation),
            WalkStep::Table(next, accumulated) => (table, rights) = (next, accumulated),
        }
    }
    None
}

/// The rights accumulated over the levels walked so far (SDM vol. 3 §4.6.1).
#[derive(Clone, Copy)]
struct WalkRights {
    writable: bool,
    executable: bool,
    user: bool,
    user_bit: bool,
}

impl WalkRights {
    /// Before the first level: everything allowed, no U/S bit seen.
    const TOP: WalkRights = WalkRights {
        writable: true,
        executable: true,
        user: true,
        user_bit: false,
    };
}

/// What one entry of a walk leads to.
enum WalkStep {
    /// Not present, or a table outside the pool: nothing is mapped there.
    Absent,
    Leaf(Translation),
    /// The next level's table (its index in the pool) and the rights so far.
    Table(usize, WalkRights),
}

/// One step of a walk: `entry` at `level` (4 = PML4 … 1 = page table), reached with
/// `rights`, for the region that starts at `base` (aligned to the entry's size).
fn walk_step(
    pages: &[Table],
    phys_base: u64,
    entry: u64,
    level: u32,
    rights: WalkRights,
    base: u64,
) -> WalkStep {
    let shift = 12 + 9 * (level - 1);
    let entry = EntryFlags::from_bits_retain(entry);
    if !entry.contains(EntryFlags::PRESENT) {
        return WalkStep::Absent;
    }
    let rights = WalkRights {
        writable: rights.writable && entry.contains(EntryFlags::WRITABLE),
        executable: rights.executable && !entry.contains(EntryFlags::NO_EXECUTE),
        user: rights.user && entry.contains(EntryFlags::USER),
        user_bit: rights.user_bit || entry.contains(EntryFlags::USER),
    };
    let is_leaf = level == 1 || (level <= 3 && entry.contains(EntryFlags::PAGE_SIZE));
    if !is_leaf {
        return match table_index(pages, phys_base, entry.bits() & ADDRESS_MASK) {
            Some(table) => WalkStep::Table(table, rights),
            None => WalkStep::Absent,
        };
    }
    let size = 1u64 << shift;
    let (pat_bit, mask) = if level == 1 {
        (EntryFlags::PAGE_SIZE, ADDRESS_MASK)
    } else {
        (EntryFlags::LARGE_PAT, ADDRESS_MASK & !(size - 1))
    };
    let pat_index = u8::from(entry.contains(EntryFlags::WRITE_THROUGH))
        | u8::from(entry.contains(EntryFlags::CACHE_DISABLE)) << 1
        | u8::from(entry.contains(pat_bit)) << 2;
    WalkStep::Leaf(Translation {
        page: base,
        physical: entry.bits() & mask,
        size,
        writable: rights.writable,
        executable: rights.executable,
        user: rights.user,
        user_bit: rights.user_bit,
        pat_index,
    })
}

/// Every region of `[0, MAPPED_END)` the tables under `root` map or leave unmapped, in
/// ascending order and each once: `visit(base, size, translation)` for each leaf, and with
/// `None` for each absent entry (its whole region). The same steps as [`translate`], taken
/// once per entry instead of once per level per page.
fn walk_mapped(
    pages: &[Table],
    phys_base: u64,
    root: usize,
    visit: &mut impl FnMut(u64, u64, Option<Translation>) -> Result<(), Mismatch>,
) -> Result<(), Mismatch> {
    struct Walk<'a, V> {
        pages: &'a [Table],
        phys_base: u64,
        visit: &'a mut V,
    }
    impl<V: FnMut(u64, u64, Option<Translation>) -> Result<(), Mismatch>> Walk<'_, V> {
        /// The first `entries` entries of `table`, at `level`, for the region at `base`.
        fn table(
            &mut self,
            table: usize,
            level: u32,
            rights: WalkRights,
            base: u64,
            entries: usize,
        ) -> Result<(), Mismatch> {
            let size = 1u64 << (12 + 9 * (level - 1));
            for index in 0..entries {
                let region = base + index as u64 * size;
                let entry = self.pages[table][index];
                match walk_step(self.pages, self.phys_base, entry, level, rights, region) {
                    WalkStep::Absent => (self.visit)(region, size, None)?,
                    WalkStep::Leaf(translation) => (self.visit)(region, size, Some(translation))?,
                    WalkStep::Table(next, accumulated) => {
                        self.table(next, level - 1, accumulated, region, ENTRIES)?
                    }
                }
            }
            Ok(())
        }
    }
    // The PML4's first entry covers the first 512 GiB, of which the mapped space is the
    // first DIRECTORIES GiB: its PDPT is walked that far.
    match walk_step(pages, phys_base, pages[root][0], 4, WalkRights::TOP, 0) {
        WalkStep::Absent => visit(0, MAPPED_END, None),
        // A 512 GiB leaf cannot be (PS is reserved in a PML4 entry); were it one, the
        // translation of the first page says what it maps.
        WalkStep::Leaf(translation) => visit(0, MAPPED_END, Some(translation)),
        WalkStep::Table(pdpt, rights) => Walk {
            pages,
            phys_base,
            visit,
        }
        .table(pdpt, 3, rights, 0, DIRECTORIES),
    }
}

/// Where built tables differ from the plan (found by [`verify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The page at `address` is mapped to another physical address (the map is identity).
    NotIdentity { address: u64 },
    /// The page at `address` has other rights than the plan's (`None`: not present), or
    /// rights no plan grants (writable and executable, user, another memory type).
    Rights {
        address: u64,
        planned: Option<PageRights>,
        found: Option<Translation>,
    },
    /// A large page at `address` covers pages the plan treats differently.
    LargePageNotUniform { address: u64 },
    /// Something is mapped at or above 4 GiB.
    BeyondMapped,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Mismatch::NotIdentity { address } => {
                write!(formatter, "page {address:#x} is not identity-mapped")
            }
            Mismatch::Rights {
                address,
                planned,
                found,
            } => write!(
                formatter,
                "page {address:#x}: planned {planned:?}, mapped {:?}",
                found.map(|translation| (
                    translation.writable,
                    translation.executable,
                    translation.user_bit,
                    translation.pat_index
                ))
            ),
            Mismatch::LargePageNotUniform { address } => write!(
                formatter,
                "the large page at {address:#x} covers pages with different rights"
            ),
            Mismatch::BeyondMapped => formatter.write_str("something is mapped above 4 GiB"),
        }
    }
}

/// Checks built tables against the plan: every page of the first 4 GiB is identity-mapped
/// with exactly the rights [`HostLayout::rights`] gives it (so no page is writable and
/// executable, none is user-accessible, guard pages are absent), every large page covers
/// pages of one kind, and nothing is mapped above 4 GiB (the PML4 has one entry, the PDPT
/// four). Walks each leaf once.
pub fn verify(
    layout: &HostLayout,
    pages: &[Table],
    phys_base: u64,
    root: u64,
) -> Result<(), Mismatch> {
    let root_table = table_index(pages, phys_base, root).ok_or(Mismatch::BeyondMapped)?;
    let first_pdpt = pages[root_table][0] & ADDRESS_MASK;
    let pdpt = table_index(pages, phys_base, first_pdpt);
    let beyond = pages[root_table][1..].iter().any(|&entry| entry != 0)
        || pdpt.is_some_and(|pdpt| pages[pdpt][DIRECTORIES..].iter().any(|&entry| entry != 0));
    if beyond {
        return Err(Mismatch::BeyondMapped);
    }
    let split = layout.split_pieces();
    let uniform = |page: u64, size: u64| {
        if size == LARGE_PAGE_BYTES && page.is_multiple_of(LARGE_PAGE_BYTES) {
            !split.contains((page / LARGE_PAGE_BYTES) as usize)
        } else {
            layout.is_uniform(page, size)
        }
    };
    let mut cursor = RightsCursor::new(layout);
    walk_mapped(pages, phys_base, root_table, &mut |base, size, found| {
        let Some(translation) = found else {
            // Nothing mapped here: the plan must map none of these pages either. Pages of
            // one run of the plan share its answer, so each run is asked once.
            let mut address = base;
            while address < base + size {
                let planned = cursor.rights(address);
                if planned.is_some() {
                    return Err(Mismatch::Rights {
                        address,
                        planned,
                        found: None,
                    });
                }
                address = cursor.run_end().max(address + PAGE_BYTES);
            }
            return Ok(());
        };
        let address = base;
        if translation.physical != translation.page {
            return Err(Mismatch::NotIdentity { address });
        }
        if translation.size > PAGE_BYTES && !uniform(translation.page, translation.size) {
            return Err(Mismatch::LargePageNotUniform { address });
        }
        let planned = cursor.rights(address);
        if translation.rights() != planned || planned.is_none() {
            return Err(Mismatch::Rights {
                address,
                planned,
                found: Some(translation),
            });
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_windows_must_lie_in_the_mmio_window() {
        assert!(lies_in_mmio_window(0xfec0_0000, 0x20));
        assert!(lies_in_mmio_window(0xc000_0000, 0x4000_0000));
        assert!(lies_in_mmio_window(0xffff_f000, 0x1000));
        assert!(!lies_in_mmio_window(0xffff_f000, 0x1001), "runs past 4 GiB");
        assert!(!lies_in_mmio_window(0xbfff_f000, 0x2000), "starts below");
        assert!(!lies_in_mmio_window(0xfed8_0000, 0), "empty");
        assert!(!lies_in_mmio_window(u64::MAX - 8, 0x20), "wraps");
    }
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;
    use tessera_abi::table::Rights;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const RO: Option<PageRights> = Some(PageRights {
        access: Access::ReadOnly,
        caching: Caching::WriteBack,
    });
    const RW: Option<PageRights> = Some(PageRights {
        access: Access::ReadWrite,
        caching: Caching::WriteBack,
    });
    const RX: Option<PageRights> = Some(PageRights {
        access: Access::ReadExecute,
        caching: Caching::WriteBack,
    });
    const RW_UNCACHED: Option<PageRights> = Some(PageRights {
        access: Access::ReadWrite,
        caching: Caching::Uncached,
    });

    fn mapping(host: u64, size: u64, kind: MappingKind) -> MemoryMapping {
        MemoryMapping {
            guest: 0,
            host: Range::new(host, size),
            rights: Rights::RWX,
            kind,
        }
    }

    /// The demo table's partitions (partitions/demo.toml), plus a 4 KiB channel and a
    /// passthrough device window for the page sizes around them.
    fn demo_partitions() -> Vec<Vec<MemoryMapping>> {
        vec![
            vec![mapping(0x100_0000, 16 * MIB, MappingKind::Ram)],
            vec![
                mapping(0x200_0000, 8 * MIB, MappingKind::Ram),
                mapping(0x300_0000, 4 * MIB, MappingKind::Ram),
                mapping(0x380_0000, 4 * KIB, MappingKind::Channel(0)),
            ],
            vec![
                mapping(0x400_0000, 16 * MIB, MappingKind::Ram),
                mapping(0xFEB0_0000, 64 * KIB, MappingKind::DeviceMmio),
            ],
        ]
    }

    /// An image like the demo build's: at 1 MiB, text 80 KiB, rodata 96 KiB, data and bss
    /// 700 KiB with the boot page tables and boot stack guard at the start of the bss and
    /// three application-processor stacks (64 KiB, each above a guard page) further in.
    const TEXT: Range = Range::new(0x10_0000, 0x1_4000);
    const RODATA: Range = Range::new(0x11_4000, 0x1_8000);
    const DATA: Range = Range::new(0x12_C000, 0xA_F000);
    const BOOT_TABLES: Range = Range::new(0x12_D000, 0x6000);
    const GUARDS: [u64; 4] = [0x13_3000, 0x15_0000, 0x16_1000, 0x17_2000];
    const TRAMPOLINE: Range = Range::new(0x8000, 0x1000);

    fn with_layout<R>(
        partitions: &[Vec<MemoryMapping>],
        guards: &[u64],
        test: impl FnOnce(HostLayout) -> R,
    ) -> R {
        let slices: Vec<&[MemoryMapping]> = partitions.iter().map(Vec::as_slice).collect();
        test(HostLayout {
            text: TEXT,
            rodata: RODATA,
            data: DATA,
            boot_page_tables: BOOT_TABLES,
            guard_pages: guards,
            partitions: &slices,
            ap_trampoline: TRAMPOLINE,
            ecam: None,
        })
    }

    /// Builds into a pool with room to spare at a made-up physical base; returns the pool,
    /// its base and what was built.
    fn build_tables(layout: &HostLayout) -> (Vec<Table>, u64, Built) {
        let mut pages = vec![[0u64; ENTRIES]; FIXED_TABLES + 64];
        let phys_base = 0x7654_3000;
        let built = build(layout, &mut pages, phys_base).expect("the layout builds");
        (pages, phys_base, built)
    }

    /// Every 4 KiB page of `range`, as the built tables translate it.
    fn pages_of(
        tables: &(Vec<Table>, u64, Built),
        range: Range,
    ) -> impl Iterator<Item = (u64, Option<Translation>)> + '_ {
        (range.base..range.end())
            .step_by(PAGE_BYTES as usize)
            .map(|address| {
                (
                    address,
                    translate(&tables.0, tables.1, tables.2.root, address),
                )
            })
    }

    fn rights_of(tables: &(Vec<Table>, u64, Built), range: Range) -> Vec<Option<PageRights>> {
        pages_of(tables, range)
            .map(|(_, translation)| translation.and_then(|t| t.rights()))
            .collect()
    }

    #[test]
    fn no_page_is_writable_and_executable_or_user() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let tables = build_tables(&layout);
            let mut address = 0;
            let mut executable = 0;
            while address < MAPPED_END {
                match translate(&tables.0, tables.1, tables.2.root, address) {
                    Some(translation) => {
                        assert!(
                            !(translation.writable && translation.executable),
                            "{address:#x}"
                        );
                        assert!(!translation.user && !translation.user_bit, "{address:#x}");
                        if translation.executable {
                            executable += translation.size;
                        }
                        address = translation.page + translation.size;
                    }
                    None => address += PAGE_BYTES,
                }
            }
            // Only the text is executable.
            assert_eq!(executable, TEXT.size);
            verify(&layout, &tables.0, tables.1, tables.2.root).unwrap();
        });
    }

    #[test]
    fn image_sections_get_their_rights_in_small_pages() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let tables = build_tables(&layout);
            for (range, expected) in [(TEXT, RX), (RODATA, RO), (BOOT_TABLES, RO)] {
                assert!(rights_of(&tables, range).iter().all(|r| *r == expected));
            }
            for (address, translation) in pages_of(&tables, DATA) {
                if GUARDS.contains(&address) {
                    continue;
                }
                let translation = translation.expect("data is mapped");
                assert_eq!(translation.size, PAGE_BYTES);
                let expected = if BOOT_TABLES.contains(address) {
                    RO
                } else {
                    RW
                };
                assert_eq!(translation.rights(), expected, "{address:#x}");
            }
            for (_, translation) in pages_of(&tables, layout.image()) {
                assert_eq!(translation.map_or(PAGE_BYTES, |t| t.size), PAGE_BYTES);
            }
        });
    }

    #[test]
    fn guard_pages_are_absent_and_their_neighbours_present() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let tables = build_tables(&layout);
            for guard in GUARDS {
                assert_eq!(layout.purpose(guard), Some(Purpose::GuardPage));
                assert_eq!(translate(&tables.0, tables.1, tables.2.root, guard), None);
                assert_eq!(
                    translate(&tables.0, tables.1, tables.2.root, guard + PAGE_BYTES - 1),
                    None
                );
                // Below: the boot tables or data; above: the stack.
                let below = translate(&tables.0, tables.1, tables.2.root, guard - 1).unwrap();
                assert!(!below.executable);
                let above =
                    translate(&tables.0, tables.1, tables.2.root, guard + PAGE_BYTES).unwrap();
                assert_eq!(above.rights(), RW);
            }
        });
    }

    #[test]
    fn the_ecam_window_is_uncached_and_writable_with_large_pages() {
        let partitions = demo_partitions();
        let slices: Vec<&[MemoryMapping]> = partitions.iter().map(Vec::as_slice).collect();
        let ecam = Range::new(0xB000_0000, 256 * MIB);
        let layout = HostLayout {
            text: TEXT,
            rodata: RODATA,
            data: DATA,
            boot_page_tables: BOOT_TABLES,
            guard_pages: &GUARDS,
            partitions: &slices,
            ap_trampoline: TRAMPOLINE,
            ecam: Some(ecam),
        };
        assert_eq!(layout.check(), Ok(()));
        let tables = build_tables(&layout);
        for (address, translation) in pages_of(&tables, ecam) {
            let translation = translation.expect("the ECAM window is mapped");
            assert_eq!(translation.rights(), RW_UNCACHED, "{address:#x}");
            assert_eq!(translation.size, LARGE_PAGE_BYTES, "{address:#x}");
        }
        // Its neighbours keep their rows: read-only below, the fourth GiB above.
        for (address, rights) in [(ecam.base - PAGE_BYTES, RO), (ecam.end(), RW_UNCACHED)] {
            let translation = translate(&tables.0, tables.1, tables.2.root, address).unwrap();
            assert_eq!(translation.rights(), rights, "{address:#x}");
            assert_eq!(layout.rights(address), rights, "{address:#x}");
        }
        // The ECAM window adds no page table: the bound stays the one without it.
        assert_eq!(layout.split_pieces().count(), {
            let without = HostLayout {
                ecam: None,
                ..layout
            };
            without.split_pieces().count()
        });
        // A window that is not 2 MiB-aligned, crosses 4 GiB or covers partition memory
        // is refused.
        for misplaced in [
            Range::new(0xB010_0000, 2 * MIB),
            Range::new(0xB000_0000, MIB),
            Range::new(0xFFE0_0000, 4 * MIB),
            Range::new(0x0200_0000, 2 * MIB),
        ] {
            let layout = HostLayout {
                ecam: Some(misplaced),
                ..layout
            };
            assert_eq!(
                layout.check(),
                Err(LayoutError::EcamMisplaced),
                "{misplaced:?}"
            );
        }
    }

    #[test]
    fn partition_memory_is_present_writable_and_not_executable() {
        let partitions = demo_partitions();
        with_layout(&partitions, &GUARDS, |layout| {
            let tables = build_tables(&layout);
            for mapping in partitions.iter().flatten() {
                for (address, translation) in pages_of(&tables, mapping.host) {
                    let translation = translation.expect("partition memory is mapped");
                    assert!(!translation.executable, "{address:#x}");
                    assert_eq!(translation.physical, translation.page);
                    if mapping.kind == MappingKind::DeviceMmio {
                        // Never touched by the hypervisor: left as the memory around it.
                        assert_eq!(translation.rights(), layout.rights(address));
                    } else {
                        assert_eq!(translation.rights(), RW, "{address:#x}");
                    }
                }
            }
            // 2 MiB-aligned RAM gets 2 MiB pages; the 4 KiB channel 4 KiB pages.
            let at = |address| translate(&tables.0, tables.1, tables.2.root, address).unwrap();
            assert_eq!(at(0x100_0000).size, LARGE_PAGE_BYTES);
            assert_eq!(at(0x33F_F000).size, LARGE_PAGE_BYTES);
            assert_eq!(at(0x380_0000).size, PAGE_BYTES);
            assert_eq!(at(0x380_1000).rights(), RO);
            // The device window is left as the rest of the fourth GiB is.
            assert_eq!(at(0xFEB0_0000).rights(), RW_UNCACHED);
        });
    }

    #[test]
    fn the_rest_is_read_only_the_window_uncached_and_nothing_above_4_gib() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let tables = build_tables(&layout);
            let at = |address| translate(&tables.0, tables.1, tables.2.root, address);
            // BIOS data area, EBDA, BIOS ROM, RAM above the partitions, firmware's ACPI.
            for address in [
                0x400,
                0x9_FC00,
                0xE_0000,
                0x500_0000,
                0x1FFE_0000,
                0xBFFF_F000,
            ] {
                assert_eq!(at(address).unwrap().rights(), RO, "{address:#x}");
            }
            assert_eq!(at(0x8000).unwrap().rights(), RW);
            assert_eq!(at(0x8000).unwrap().size, PAGE_BYTES);
            assert_eq!(at(0x9000).unwrap().rights(), RO);
            for address in [0xC000_0000, 0xFEC0_0000, 0xFEE0_0000, 0xFFFF_F000] {
                let translation = at(address).unwrap();
                assert_eq!(translation.rights(), RW_UNCACHED, "{address:#x}");
                assert_eq!(translation.size, LARGE_PAGE_BYTES);
            }
            assert_eq!(at(MAPPED_END), None);
            assert_eq!(at(0x7FFF_FFFF_F000), None);
            // One page table for the first 2 MiB (the image and the AP page), one for the
            // 2 MiB the 4 KiB channel starts.
            assert_eq!(tables.2.tables, FIXED_TABLES + 2);
            assert_eq!(layout.page_tables_needed(), 2);
        });
    }

    #[test]
    fn entries_never_carry_user_or_global() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let tables = build_tables(&layout);
            let forbidden = (EntryFlags::USER | EntryFlags::GLOBAL).bits();
            for page in &tables.0[..tables.2.tables] {
                assert!(page.iter().all(|entry| entry & forbidden == 0));
            }
        });
    }

    #[test]
    fn the_compile_time_bound_covers_the_demo() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let bound = page_tables_bound(Range::new(0x10_0000, 15 * MIB), 6);
            assert!(layout.page_tables_needed() <= bound);
            // 1..16 MiB touches 8 large pages.
            assert_eq!(bound, 8 + 12 + 1);
        });
    }

    #[test]
    fn layout_errors() {
        let partitions = demo_partitions();
        with_layout(&partitions, &GUARDS, |layout| {
            let broken = |change: &dyn Fn(&mut HostLayout)| {
                let mut copy = layout;
                change(&mut copy);
                copy.check().unwrap_err()
            };
            assert_eq!(
                broken(&|l| l.text = Range::new(0x10_0000, 0x1_4010)),
                LayoutError::Misaligned { what: "the text" }
            );
            assert_eq!(
                broken(&|l| l.rodata = Range::new(0x11_5000, 0x1_7000)),
                LayoutError::SectionsNotContiguous
            );
            assert_eq!(
                broken(&|l| l.boot_page_tables = Range::new(0x11_0000, 0x1000)),
                LayoutError::BootTablesOutsideData
            );
            assert_eq!(
                broken(&|l| l.guard_pages = &[0x11_0000]),
                LayoutError::GuardPageOutsideData { address: 0x11_0000 }
            );
            assert_eq!(
                broken(&|l| l.guard_pages = &[0x13_3800]),
                LayoutError::GuardPageOutsideData { address: 0x13_3800 }
            );
            assert_eq!(
                broken(&|l| l.ap_trampoline = Range::new(0x10_0000, 0x1000)),
                LayoutError::TrampolineMisplaced
            );
            assert_eq!(
                broken(&|l| l.data = Range::new(0x12_C000, MAPPED_END)),
                LayoutError::BeyondMapped { what: "the data" }
            );
        });
        let overlapping = vec![vec![mapping(0x1D_0000, 0x1_0000, MappingKind::Ram)]];
        with_layout(&overlapping, &GUARDS, |layout| {
            assert_eq!(
                layout.check(),
                Err(LayoutError::PartitionOverlapsImage {
                    partition: 0,
                    mapping: 0
                })
            );
        });
        let high = vec![vec![mapping(0xFFFF_0000, 0x2_0000, MappingKind::Ram)]];
        with_layout(&high, &GUARDS, |layout| {
            assert_eq!(
                layout.check(),
                Err(LayoutError::PartitionBeyondMapped {
                    partition: 0,
                    mapping: 0
                })
            );
        });
    }

    #[test]
    fn too_few_pages_fail_before_writing() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let mut pages = vec![[0u64; ENTRIES]; FIXED_TABLES + 1];
            assert_eq!(
                build(&layout, &mut pages, 0x10_0000),
                Err(BuildError::OutOfTablePages {
                    needed: FIXED_TABLES + 2,
                    available: FIXED_TABLES + 1
                })
            );
            assert!(pages
                .iter()
                .all(|page| page.iter().all(|&entry| entry == 0)));
            assert_eq!(
                build(&layout, &mut pages, 0x10_0800),
                Err(BuildError::MisalignedPool)
            );
        });
    }

    #[test]
    fn verify_catches_tampering() {
        with_layout(&demo_partitions(), &GUARDS, |layout| {
            let (mut pages, phys_base, built) = build_tables(&layout);
            let text_table = FIXED_TABLES; // the first page table: the first 2 MiB
            let slot = (TEXT.base / PAGE_BYTES) as usize;
            let original = pages[text_table][slot];
            pages[text_table][slot] |= EntryFlags::WRITABLE.bits();
            assert!(matches!(
                verify(&layout, &pages, phys_base, built.root),
                Err(Mismatch::Rights {
                    address: 0x10_0000,
                    ..
                })
            ));
            pages[text_table][slot] = original | EntryFlags::USER.bits();
            assert!(verify(&layout, &pages, phys_base, built.root).is_err());
            pages[text_table][slot] = original;
            let guard_slot = (GUARDS[0] % LARGE_PAGE_BYTES / PAGE_BYTES) as usize;
            pages[text_table][guard_slot] = leaf_entry(GUARDS[0], RW.unwrap(), false);
            assert!(verify(&layout, &pages, phys_base, built.root).is_err());
            pages[text_table][guard_slot] = 0;
            verify(&layout, &pages, phys_base, built.root).unwrap();
            // A planned page left out, alone and with its whole 2 MiB piece.
            pages[text_table][slot] = 0;
            assert_eq!(
                verify(&layout, &pages, phys_base, built.root),
                Err(Mismatch::Rights {
                    address: TEXT.base,
                    planned: RX,
                    found: None
                })
            );
            pages[text_table][slot] = original;
            let directory_entry = pages[2][0];
            pages[2][0] = 0;
            assert!(matches!(
                verify(&layout, &pages, phys_base, built.root),
                Err(Mismatch::Rights {
                    address: 0,
                    found: None,
                    ..
                })
            ));
            // A table pointer outside the pool maps nothing.
            pages[2][0] = table_entry(phys_base + 4096 * pages.len() as u64);
            assert!(matches!(
                verify(&layout, &pages, phys_base, built.root),
                Err(Mismatch::Rights { found: None, .. })
            ));
            pages[2][0] = directory_entry;
            verify(&layout, &pages, phys_base, built.root).unwrap();
            pages[0][1] = pages[0][0];
            assert_eq!(
                verify(&layout, &pages, phys_base, built.root),
                Err(Mismatch::BeyondMapped)
            );
        });
    }

    #[test]
    fn smep_and_smap_only_where_reported() {
        let both = CPUID_7_EBX_SMEP | CPUID_7_EBX_SMAP;
        assert_eq!(supervisor_protection(7, both), CR4_SMEP | CR4_SMAP);
        assert_eq!(supervisor_protection(0xD, CPUID_7_EBX_SMEP), CR4_SMEP);
        assert_eq!(supervisor_protection(0xD, 0), 0);
        assert_eq!(supervisor_protection(6, both), 0);
    }

    /// A random layout: an image of random section sizes at a random 4 KiB-aligned base,
    /// guard pages in its data, partitions of random 4 KiB-granular sizes above it.
    fn arbitrary_layout(
    ) -> impl Strategy<Value = (Vec<u64>, Vec<Vec<MemoryMapping>>, [Range; 4], Range)> {
        (
            1u64..0x3000,
            1u64..40,
            1u64..40,
            8u64..600,
            proptest::collection::vec((0u64..600, 1u64..2000, 0u8..3), 0..8),
            proptest::collection::vec(0u64..600, 0..6),
            0u64..0x100,
        )
            .prop_map(|(base, text, rodata, data, memory, guards, trampoline)| {
                let base = base * PAGE_BYTES;
                let text = Range::new(base, text * PAGE_BYTES);
                let rodata = Range::new(text.end(), rodata * PAGE_BYTES);
                let data = Range::new(rodata.end(), data * PAGE_BYTES);
                let boot_tables = Range::new(data.base, 6 * PAGE_BYTES);
                let guards = guards
                    .into_iter()
                    .map(|page| data.base + page % (data.size / PAGE_BYTES) * PAGE_BYTES)
                    .collect();
                let mut next = align_up(data.end(), PAGE_BYTES);
                let mut partitions = Vec::new();
                for (gap, pages, kind) in memory {
                    let kind = match kind {
                        0 => MappingKind::Ram,
                        1 => MappingKind::Channel(0),
                        _ => MappingKind::DeviceMmio,
                    };
                    let start = next + gap * PAGE_BYTES;
                    partitions.push(vec![mapping(start, pages * PAGE_BYTES, kind)]);
                    next = start + pages * PAGE_BYTES;
                }
                // The AP page below the image or, if the image starts too low, above
                // everything.
                let trampoline = if base > (trampoline + 1) * PAGE_BYTES {
                    Range::new(trampoline * PAGE_BYTES, PAGE_BYTES)
                } else {
                    Range::new(next + PAGE_BYTES, PAGE_BYTES)
                };
                (
                    guards,
                    partitions,
                    [text, rodata, data, boot_tables],
                    trampoline,
                )
            })
    }

    /// The layout an [`arbitrary_layout`] case describes.
    fn layout_of<'a>(
        guards: &'a [u64],
        partitions: &'a [&'a [MemoryMapping]],
        [text, rodata, data, boot_page_tables]: [Range; 4],
        ap_trampoline: Range,
    ) -> HostLayout<'a> {
        HostLayout {
            text,
            rodata,
            data,
            boot_page_tables,
            guard_pages: guards,
            partitions,
            ap_trampoline,
            ecam: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever the layout, the built tables match the plan page for page, the bound
        /// covers them, and W^X, no-user and identity hold (all checked by `verify`).
        #[test]
        fn built_tables_match_the_plan(
            (guards, partitions, [text, rodata, data, boot_tables], trampoline) in arbitrary_layout()
        ) {
            let slices: Vec<&[MemoryMapping]> = partitions.iter().map(Vec::as_slice).collect();
            let layout = layout_of(&guards, &slices, [text, rodata, data, boot_tables], trampoline);
            prop_assert_eq!(layout.check(), Ok(()));
            // The one-pass census of split pieces is the per-piece search.
            let split = layout.split_pieces();
            for large in 0..LARGE_PAGES {
                prop_assert_eq!(
                    split.contains(large),
                    !layout.is_uniform(large as u64 * LARGE_PAGE_BYTES, LARGE_PAGE_BYTES),
                    "piece {}", large
                );
            }
            let image = layout.image();
            let hypervisor_memory = Range::new(image.base, image.size);
            let bound = page_tables_bound(hypervisor_memory, slices.len());
            prop_assert!(layout.page_tables_needed() <= bound);
            let mut pages = vec![[0u64; ENTRIES]; FIXED_TABLES + bound];
            let built = build(&layout, &mut pages, 0x4000_0000).unwrap();
            prop_assert_eq!(verify(&layout, &pages, 0x4000_0000, built.root), Ok(()));
            for &guard in &guards {
                prop_assert_eq!(translate(&pages, 0x4000_0000, built.root, guard), None);
            }
            for address in (text.base..text.end()).step_by(PAGE_BYTES as usize) {
                prop_assert_eq!(
                    translate(&pages, 0x4000_0000, built.root, address).and_then(|t| t.rights()),
                    if guards.contains(&address) { None } else { RX }
                );
            }
        }

        /// The cursor that `build` and `verify` share gives every page the plan's rights,
        /// read in ascending order as they do and out of order: every page of the pieces
        /// a boundary splits, and the first and last page of every other 2 MiB piece.
        #[test]
        fn the_rights_cursor_is_the_plan(
            (guards, partitions, [text, rodata, data, boot_tables], trampoline) in arbitrary_layout()
        ) {
            let slices: Vec<&[MemoryMapping]> = partitions.iter().map(Vec::as_slice).collect();
            let layout = layout_of(&guards, &slices, [text, rodata, data, boot_tables], trampoline);
            let split = layout.split_pieces();
            let mut pages = Vec::new();
            for large in 0..LARGE_PAGES as u64 {
                let base = large * LARGE_PAGE_BYTES;
                if split.contains(large as usize) {
                    pages.extend((0..ENTRIES as u64).map(|page| base + page * PAGE_BYTES));
                } else {
                    pages.extend([base, base + LARGE_PAGE_BYTES - PAGE_BYTES]);
                }
            }
            let mut ascending = RightsCursor::new(&layout);
            for &page in &pages {
                prop_assert_eq!(ascending.rights(page), layout.rights(page), "page {:#x}", page);
            }
            let mut descending = RightsCursor::new(&layout);
            for &page in pages.iter().rev() {
                prop_assert_eq!(descending.rights(page), layout.rights(page), "page {:#x}", page);
            }
        }
    }
}
