//! Stage-2 page tables: planning, building and walking the nested page tables (AMD NPT) and
//! extended page tables (Intel EPT) that map a partition's guest-physical address space onto
//! host-physical memory.
//!
//! Both vendors use a four-level radix tree of 4 KiB tables with 512 eight-byte entries
//! (PML4 → PDPT → PD → PT), indexed by guest-physical address bits 47:39, 38:30, 29:21 and
//! 20:12; a PDPT entry may map a 1 GiB page and a PD entry a 2 MiB page directly. Only the
//! entry bits differ, so the tree logic here is written once and the bit layout comes from an
//! [`EntryFormat`]: [`Npt`] (AMD APM vol 2 §15.25) or [`Ept`] (Intel SDM vol 3 §29.3.2).
//!
//! The same code runs in three places, which is the point of keeping it here:
//! * the build computes [`table_pages_needed`] for each partition and reserves that many pages;
//! * the hypervisor calls [`build`] at boot into that reservation;
//! * translation validation (build time and tests) reads the built tables back with [`walk`]
//!   and [`for_each_leaf`] and compares them with the partition's memory map.

use bitflags::bitflags;
use tessera_abi::table::{MappingKind, MemoryMapping, Rights};

/// Size of a page-table page and of the smallest page.
pub const TABLE_BYTES: u64 = 4096;
/// Entries in one table page.
pub const ENTRIES: usize = 512;
/// Guest-physical addresses a four-level tree can translate: bits 47:0
/// (AMD APM vol 2 §15.25.5; Intel SDM vol 3 §29.3.2 with a page-walk length of 4).
pub const GUEST_ADDRESS_LIMIT: u64 = 1 << 48;
/// The architectural maximum physical address width (MAXPHYADDR ≤ 52, AMD APM vol 2 §5.3.1;
/// Intel SDM vol 3 §4.1.4): host addresses in entries occupy bits 51:12.
pub const HOST_ADDRESS_LIMIT: u64 = 1 << 52;
/// Bits 51:12 of an entry: the physical address of the next table or of a 4 KiB page.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The three page sizes a stage-2 leaf can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    Size4KiB,
    Size2MiB,
    Size1GiB,
}

impl PageSize {
    /// Bytes the page covers.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4KiB => 1 << 12,
            PageSize::Size2MiB => 1 << 21,
            PageSize::Size1GiB => 1 << 30,
        }
    }

    /// The table level whose entries map a page of this size (1 = PT, 2 = PD, 3 = PDPT).
    pub const fn level(self) -> usize {
        match self {
            PageSize::Size4KiB => 1,
            PageSize::Size2MiB => 2,
            PageSize::Size1GiB => 3,
        }
    }

    /// The page size a leaf at `level` maps, if a leaf may sit at that level.
    pub const fn at_level(level: usize) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4KiB),
            2 => Some(PageSize::Size2MiB),
            3 => Some(PageSize::Size1GiB),
            _ => None,
        }
    }
}

/// One page-sized piece of a mapping: what a single leaf entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub guest: u64,
    pub host: u64,
    pub size: PageSize,
    pub rights: Rights,
    pub kind: MappingKind,
}

/// Why a memory map cannot be turned into stage-2 tables. `index` is the position of the
/// offending mapping in the slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// Guest address, host address or size is not a multiple of 4 KiB.
    Unaligned { index: usize },
    /// The mapping has no bytes.
    Empty { index: usize },
    /// The guest range ends beyond 2^48, which four-level tables cannot translate.
    GuestOutOfRange { index: usize },
    /// The host range ends beyond 2^52, which entries cannot hold.
    HostOutOfRange { index: usize },
    /// The guest range starts below the end of the previous mapping: the list overlaps or is
    /// not sorted by guest address.
    Overlap { index: usize },
}

impl PlanError {
    /// Position of the offending mapping.
    pub const fn index(self) -> usize {
        match self {
            PlanError::Unaligned { index }
            | PlanError::Empty { index }
            | PlanError::GuestOutOfRange { index }
            | PlanError::HostOutOfRange { index }
            | PlanError::Overlap { index } => index,
        }
    }
}

/// Checks what [`leaves`], [`table_pages_needed`] and [`build`] assume: every mapping is
/// non-empty and 4 KiB-aligned in guest address, host address and size; it fits the guest
/// (2^48) and host (2^52) address widths; and the list is sorted by guest address without
/// overlaps (the partition table guarantees that order, and page counting relies on it).
pub fn check_mappings(mappings: &[MemoryMapping]) -> Result<(), PlanError> {
    let page = PageSize::Size4KiB.bytes();
    let mut previous_end = 0u64;
    for (index, mapping) in mappings.iter().enumerate() {
        if mapping.host.size == 0 {
            return Err(PlanError::Empty { index });
        }
        if !mapping.guest.is_multiple_of(page)
            || !mapping.host.base.is_multiple_of(page)
            || !mapping.host.size.is_multiple_of(page)
        {
            return Err(PlanError::Unaligned { index });
        }
        let guest_end = match mapping.guest.checked_add(mapping.host.size) {
            Some(end) if end <= GUEST_ADDRESS_LIMIT => end,
            _ => return Err(PlanError::GuestOutOfRange { index }),
        };
        match mapping.host.base.checked_add(mapping.host.size) {
            Some(end) if end <= HOST_ADDRESS_LIMIT => {}
            _ => return Err(PlanError::HostOutOfRange { index }),
        }
        if index > 0 && mapping.guest < previous_end {
            return Err(PlanError::Overlap { index });
        }
        previous_end = guest_end;
    }
    Ok(())
}

/// Splits each mapping into the largest pages that fit, in slice order (guest order for a
/// sorted list). A page of size S is used where the guest and the host address are both
/// S-aligned and at least S bytes of the mapping remain; 1 GiB pages only when `allow_1gib`
/// (not every CPU supports them: CPUID 8000_0001h EDX bit 26 on AMD, IA32_VMX_EPT_VPID_CAP
/// bit 17 on Intel).
///
/// Assumes [`check_mappings`] passed. On other input it still terminates, but which leaves it
/// yields is unspecified (a tail shorter than 4 KiB is dropped).
pub fn leaves(mappings: &[MemoryMapping], allow_1gib: bool) -> Leaves<'_> {
    Leaves {
        mappings,
        allow_1gib,
        index: 0,
        offset: 0,
    }
}

/// Iterator returned by [`leaves`].
#[derive(Clone, Debug)]
pub struct Leaves<'a> {
    mappings: &'a [MemoryMapping],
    allow_1gib: bool,
    /// Mapping being split.
    index: usize,
    /// Bytes of that mapping already yielded.
    offset: u64,
}

impl Iterator for Leaves<'_> {
    type Item = Leaf;

    fn next(&mut self) -> Option<Leaf> {
        loop {
            let mapping = self.mappings.get(self.index)?;
            let remaining = mapping.host.size.saturating_sub(self.offset);
            let guest = mapping.guest.wrapping_add(self.offset);
            let host = mapping.host.base.wrapping_add(self.offset);
            let fits = |size: PageSize| {
                let bytes = size.bytes();
                guest.is_multiple_of(bytes) && host.is_multiple_of(bytes) && remaining >= bytes
            };
            let size = if self.allow_1gib && fits(PageSize::Size1GiB) {
                PageSize::Size1GiB
            } else if fits(PageSize::Size2MiB) {
                PageSize::Size2MiB
            } else if remaining >= PageSize::Size4KiB.bytes() {
                PageSize::Size4KiB
            } else {
                // Done with this mapping (or an invalid sub-page tail): next mapping.
                self.index += 1;
                self.offset = 0;
                continue;
            };
            self.offset += size.bytes();
            return Some(Leaf {
                guest,
                host,
                size,
                rights: mapping.rights,
                kind: mapping.kind,
            });
        }
    }
}

/// Index of the entry covering `guest` in a table at `level` (4 = PML4 … 1 = PT).
const fn entry_index(guest: u64, level: usize) -> usize {
    ((guest >> (12 + 9 * (level - 1))) & (ENTRIES as u64 - 1)) as usize
}

/// Exact number of 4 KiB table pages [`build`] uses for `mappings`: one PML4, one PDPT per
/// 512 GiB region with any leaf, one PD per 1 GiB region with a leaf smaller than 1 GiB and
/// one PT per 2 MiB region with a 4 KiB leaf. Assumes [`check_mappings`] passed (the guest
/// order makes each region's leaves contiguous, so counting changes of region is exact).
pub fn table_pages_needed(mappings: &[MemoryMapping], allow_1gib: bool) -> usize {
    let mut pages = 1; // the PML4
    let mut last_pdpt = None;
    let mut last_pd = None;
    let mut last_pt = None;
    for leaf in leaves(mappings, allow_1gib) {
        let pdpt = leaf.guest >> 39;
        if last_pdpt != Some(pdpt) {
            last_pdpt = Some(pdpt);
            pages += 1;
        }
        if leaf.size <= PageSize::Size2MiB {
            let pd = leaf.guest >> 30;
            if last_pd != Some(pd) {
                last_pd = Some(pd);
                pages += 1;
            }
        }
        if leaf.size == PageSize::Size4KiB {
            let pt = leaf.guest >> 21;
            if last_pt != Some(pt) {
                last_pt = Some(pt);
                pages += 1;
            }
        }
    }
    pages
}

/// What a table entry says, independent of the vendor's bit layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    NotPresent,
    /// Points at the next-level table at this physical address.
    Table {
        next: u64,
    },
    /// Maps a page (of the size the entry's level implies) at this host-physical address.
    Leaf {
        host: u64,
        rights: Rights,
    },
}

/// A vendor's stage-2 entry layout.
///
/// Levels are numbered 4 = PML4 … 1 = PT; an entry at level 3 or 2 with the large-page bit
/// is a leaf, an entry at level 1 always is, one at level 4 never is.
pub trait EntryFormat {
    /// A non-leaf entry of a table at `level` pointing at the table at `next_table_phys`.
    /// Non-leaf entries grant every right so that each leaf alone decides what the guest may
    /// do. (Only formats that record the next table's level in the entry use `level`.)
    fn table(next_table_phys: u64, level: usize) -> u64;
    /// A leaf mapping a page of `size` at `host`. Returns 0 (not present) for rights without
    /// `read`: neither format can express a write- or execute-only page safely, so such a
    /// mapping fails closed (and translation validation reports it missing).
    fn leaf(host: u64, size: PageSize, rights: Rights, kind: MappingKind) -> u64;
    /// Reads an entry found in a table at `level`.
    fn decode(entry: u64, level: usize) -> Decoded;
}

/// Mask of the host address a leaf at `level` holds: bits 51:12, 51:21 or 51:30.
const fn leaf_address_mask(level: usize) -> u64 {
    match PageSize::at_level(level) {
        Some(size) => ADDRESS_MASK & !(size.bytes() - 1),
        None => ADDRESS_MASK,
    }
}

bitflags! {
    /// The single-bit fields of an AMD nested page-table entry: the ordinary long-mode
    /// page-table entry format (AMD APM vol 2 §5.3, §5.4.1 "Field Definitions"), at every
    /// level of the nested tables (APM vol 2 §15.25.5). The host address (bits 51:12) is not
    /// a flag: entries are `flags.bits() | address`. Flags Tessera does not use (accessed,
    /// dirty, global, PAT in a PTE, protection key) are not named.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct NptEntryFlags: u64 {
        /// Bit 0, P: the entry is valid.
        const PRESENT = 1 << 0;
        /// Bit 1, R/W: writes are allowed through this entry.
        const WRITABLE = 1 << 1;
        /// Bit 2, U/S: user-mode accesses are allowed through this entry.
        const USER = 1 << 2;
        /// Bit 3, PWT: page-level write-through (bit 0 of the PAT index).
        const WRITE_THROUGH = 1 << 3;
        /// Bit 4, PCD: page-level cache disable (bit 1 of the PAT index).
        const CACHE_DISABLE = 1 << 4;
        /// Bit 7, PS, in a PDPT / PD entry: the entry maps a 1 GiB / 2 MiB page (in a PTE,
        /// bit 7 is the PAT bit instead).
        const PAGE_SIZE = 1 << 7;
        /// Bit 63, NX: instruction fetches are not allowed (honoured because the hypervisor
        /// runs with EFER.NXE=1, APM vol 2 §5.6.1).
        const NO_EXECUTE = 1 << 63;
    }
}

/// AMD nested page tables (AMD APM vol 2 §15.25).
///
/// The nested tables use the ordinary long-mode page-table format (APM vol 2 §5.3, §5.4),
/// whose flags are [`NptEntryFlags`]. The hardware treats every guest-physical access —
/// including the guest's own page-table walks — as a user-mode access to the nested tables
/// (APM vol 2 §15.25.5), so U/S must be set at every level, or the guest faults (QEMU enforces
/// this). nCR3 is the root's address as is.
#[derive(Clone, Copy, Debug)]
pub struct Npt;

impl EntryFormat for Npt {
    fn table(next_table_phys: u64, _level: usize) -> u64 {
        let flags = NptEntryFlags::PRESENT | NptEntryFlags::WRITABLE | NptEntryFlags::USER;
        (next_table_phys & ADDRESS_MASK) | flags.bits()
    }

    fn leaf(host: u64, size: PageSize, rights: Rights, kind: MappingKind) -> u64 {
        if !rights.read {
            return 0;
        }
        let mut flags = NptEntryFlags::PRESENT | NptEntryFlags::USER;
        flags.set(NptEntryFlags::WRITABLE, rights.write);
        flags.set(NptEntryFlags::NO_EXECUTE, !rights.execute);
        flags.set(NptEntryFlags::PAGE_SIZE, size != PageSize::Size4KiB);
        // PAT index = PAT:PCD:PWT. With PCD=PWT=1 and PAT=0 the index is 3, which is UC in
        // the power-on PAT the hypervisor keeps; the nested and guest types then combine to
        // UC (APM vol 2 §15.25.8, "Combining Memory Types"). RAM and channels use index 0, WB.
        if kind == MappingKind::DeviceMmio {
            flags |= NptEntryFlags::CACHE_DISABLE | NptEntryFlags::WRITE_THROUGH;
        }
        (host & leaf_address_mask(size.level())) | flags.bits()
    }

    fn decode(entry: u64, level: usize) -> Decoded {
        let flags = NptEntryFlags::from_bits_retain(entry);
        if !flags.contains(NptEntryFlags::PRESENT) {
            return Decoded::NotPresent;
        }
        // Bit 7 is PS in PDPT and PD entries only; in a PTE it is the PAT bit.
        let is_leaf =
            level == 1 || ((level == 2 || level == 3) && flags.contains(NptEntryFlags::PAGE_SIZE));
        if !is_leaf {
            return Decoded::Table {
                next: entry & ADDRESS_MASK,
            };
        }
        Decoded::Leaf {
            host: entry & leaf_address_mask(level),
            rights: Rights {
                read: true,
                write: flags.contains(NptEntryFlags::WRITABLE),
                execute: !flags.contains(NptEntryFlags::NO_EXECUTE),
            },
        }
    }
}

bitflags! {
    /// The single-bit fields of an Intel EPT paging-structure entry (Intel SDM vol 3
    /// §29.3.2, "EPT paging-structure entries"). The host address (bits 51:12) and the memory
    /// type of a leaf (bits 5:3, [`Ept::MEMORY_TYPE_SHIFT`]) are not flags: entries are
    /// `flags.bits() | memory type | address`. Flags Tessera does not enable (accessed, dirty,
    /// user-mode execute, suppress #VE, ...) are not named.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptEntryFlags: u64 {
        /// Bit 0: reads are allowed through this entry.
        const READ = 1 << 0;
        /// Bit 1: writes are allowed through this entry.
        const WRITE = 1 << 1;
        /// Bit 2: instruction fetches are allowed through this entry (supervisor-mode fetches
        /// only when mode-based execute control is on; it is off).
        const EXECUTE = 1 << 2;
        /// Bit 6 of a leaf: ignore the guest PAT. Left 0 so the guest's PAT still combines
        /// (SDM vol 3 §29.3.7, "EPT and memory typing").
        const IGNORE_PAT = 1 << 6;
        /// Bit 7 of a PDPT / PD entry: the entry maps a 1 GiB / 2 MiB page.
        const LARGE_PAGE = 1 << 7;
    }
}

/// Intel extended page tables (Intel SDM vol 3 §29.3.2, "EPT paging-structure entries"),
/// whose flags are [`EptEntryFlags`].
#[derive(Clone, Copy, Debug)]
pub struct Ept;

impl Ept {
    /// Bits 5:3 of a leaf: the EPT memory type.
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// Memory type 0: uncacheable (SDM vol 3 §29.3.7 "EPT and memory typing").
    pub const MEMORY_TYPE_UC: u64 = 0;
    /// Memory type 6: write-back.
    pub const MEMORY_TYPE_WB: u64 = 6;
    /// Bits 2:0 of an entry: the entry is present when any of them is set (without
    /// mode-based execute control, SDM vol 3 §29.3.2).
    const READ_WRITE_EXECUTE: EptEntryFlags = EptEntryFlags::READ
        .union(EptEntryFlags::WRITE)
        .union(EptEntryFlags::EXECUTE);

    /// The EPT pointer for a tree rooted at `root` (SDM vol 3 §26.6.11, "Extended-Page-Table
    /// Pointer"): bits 2:0 = memory type of the paging structures (6, write-back), bits 5:3 =
    /// page-walk length − 1 (3 for four levels), accessed/dirty flags off.
    pub const fn pointer(root: u64) -> u64 {
        (root & ADDRESS_MASK) | Ept::MEMORY_TYPE_WB | (3 << 3)
    }
}

impl EntryFormat for Ept {
    fn table(next_table_phys: u64, _level: usize) -> u64 {
        (next_table_phys & ADDRESS_MASK) | Ept::READ_WRITE_EXECUTE.bits()
    }

    fn leaf(host: u64, size: PageSize, rights: Rights, kind: MappingKind) -> u64 {
        // Write without read is an EPT misconfiguration (SDM vol 3 §29.3.3.1), execute-only
        // needs a capability we do not rely on: fail closed, see [`EntryFormat::leaf`].
        if !rights.read {
            return 0;
        }
        let mut flags = EptEntryFlags::READ;
        flags.set(EptEntryFlags::WRITE, rights.write);
        flags.set(EptEntryFlags::EXECUTE, rights.execute);
        flags.set(EptEntryFlags::LARGE_PAGE, size != PageSize::Size4KiB);
        let memory_type = match kind {
            MappingKind::Ram | MappingKind::Channel(_) => Ept::MEMORY_TYPE_WB,
            MappingKind::DeviceMmio => Ept::MEMORY_TYPE_UC,
        };
        (host & leaf_address_mask(size.level()))
            | memory_type << Ept::MEMORY_TYPE_SHIFT
            | flags.bits()
    }

    fn decode(entry: u64, level: usize) -> Decoded {
        let flags = EptEntryFlags::from_bits_retain(entry);
        if !flags.intersects(Ept::READ_WRITE_EXECUTE) {
            return Decoded::NotPresent;
        }
        let is_leaf =
            level == 1 || ((level == 2 || level == 3) && flags.contains(EptEntryFlags::LARGE_PAGE));
        if !is_leaf {
            return Decoded::Table {
                next: entry & ADDRESS_MASK,
            };
        }
        Decoded::Leaf {
            host: entry & leaf_address_mask(level),
            rights: Rights {
                read: flags.contains(EptEntryFlags::READ),
                write: flags.contains(EptEntryFlags::WRITE),
                execute: flags.contains(EptEntryFlags::EXECUTE),
            },
        }
    }
}

/// Table pages for [`build`]: page `i` of `pages` lives at physical address
/// `phys_base + i * 4096` (the hypervisor identity-maps its own memory, so the slice it
/// writes through and the addresses the CPU walks are the same bytes). Pages below `used` are
/// taken; several partitions may share one pool, each [`build`] continuing where the last
/// stopped.
#[derive(Debug)]
pub struct TablePool<'a> {
    pub pages: &'a mut [[u64; ENTRIES]],
    /// 4 KiB-aligned physical address of `pages[0]`.
    pub phys_base: u64,
    /// Pages already handed out.
    pub used: usize,
}

impl<'a> TablePool<'a> {
    pub fn new(pages: &'a mut [[u64; ENTRIES]], phys_base: u64) -> Self {
        TablePool {
            pages,
            phys_base,
            used: 0,
        }
    }

    /// Pages still free.
    pub fn available(&self) -> usize {
        self.pages.len().saturating_sub(self.used)
    }

    /// Physical address of page `index`.
    pub fn phys_of(&self, index: usize) -> u64 {
        self.phys_base + index as u64 * TABLE_BYTES
    }

    /// Takes the next free page, zeroes it (so a reused pool is safe) and returns its index.
    fn allocate(&mut self) -> Option<usize> {
        let index = self.used;
        let page = self.pages.get_mut(index)?;
        *page = [0; ENTRIES];
        self.used += 1;
        Some(index)
    }
}

/// Why [`build`] failed. Nothing is written and the pool is untouched in either case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The pool has fewer free pages than [`table_pages_needed`].
    OutOfTablePages,
    /// The pool's `phys_base` is not 4 KiB-aligned, so its pages cannot be tables.
    MisalignedPool,
    /// The memory map is invalid (see [`check_mappings`]).
    Plan(PlanError),
}

impl From<PlanError> for BuildError {
    fn from(error: PlanError) -> Self {
        BuildError::Plan(error)
    }
}

/// Index into `pages` of the table at physical address `phys`, if it is one of them.
fn page_index(page_count: usize, phys_base: u64, phys: u64) -> Option<usize> {
    let offset = phys.checked_sub(phys_base)?;
    if !offset.is_multiple_of(TABLE_BYTES) {
        return None;
    }
    let index = usize::try_from(offset / TABLE_BYTES).ok()?;
    (index < page_count).then_some(index)
}

/// Builds the stage-2 tables for `mappings` from `pool` and returns the root (PML4) table's
/// physical address: nCR3 for [`Npt`], the address in [`Ept::pointer`] for [`Ept`].
///
/// Validates the map first ([`check_mappings`]) and checks the pool holds
/// [`table_pages_needed`] free pages, so it either succeeds completely or changes nothing.
pub fn build<F: EntryFormat>(
    mappings: &[MemoryMapping],
    allow_1gib: bool,
    pool: &mut TablePool,
) -> Result<u64, BuildError> {
    check_mappings(mappings)?;
    if !pool.phys_base.is_multiple_of(TABLE_BYTES) {
        return Err(BuildError::MisalignedPool);
    }
    if pool.available() < table_pages_needed(mappings, allow_1gib) {
        return Err(BuildError::OutOfTablePages);
    }
    let root = pool.allocate().ok_or(BuildError::OutOfTablePages)?;
    for (index, mapping) in mappings.iter().enumerate() {
        for leaf in leaves(core::slice::from_ref(mapping), allow_1gib) {
            insert::<F>(pool, root, &leaf).map_err(|error| match error {
                InsertError::Occupied => BuildError::Plan(PlanError::Overlap { index }),
                InsertError::OutOfTablePages => BuildError::OutOfTablePages,
            })?;
        }
    }
    Ok(pool.phys_of(root))
}

enum InsertError {
    /// A leaf already covers the spot (impossible for a checked map).
    Occupied,
    /// The pool ran dry (impossible after the up-front count).
    OutOfTablePages,
}

/// Writes one leaf, creating the tables on its path.
fn insert<F: EntryFormat>(
    pool: &mut TablePool,
    root: usize,
    leaf: &Leaf,
) -> Result<(), InsertError> {
    let mut table = root;
    for level in (leaf.size.level() + 1..=4).rev() {
        let slot = entry_index(leaf.guest, level);
        table = match F::decode(pool.pages[table][slot], level) {
            Decoded::Table { next } => {
                page_index(pool.pages.len(), pool.phys_base, next).ok_or(InsertError::Occupied)?
            }
            Decoded::Leaf { .. } => return Err(InsertError::Occupied),
            Decoded::NotPresent => {
                let next = pool.allocate().ok_or(InsertError::OutOfTablePages)?;
                pool.pages[table][slot] = F::table(pool.phys_of(next), level);
                next
            }
        };
    }
    let slot = entry_index(leaf.guest, leaf.size.level());
    if pool.pages[table][slot] != 0 {
        return Err(InsertError::Occupied);
    }
    pool.pages[table][slot] = F::leaf(leaf.host, leaf.size, leaf.rights, leaf.kind);
    Ok(())
}

/// Translates `guest` through the tree rooted at `root`, whose tables must all lie in
/// `pool_pages` (page `i` at `phys_base + i * 4096`). Returns the host address of that byte,
/// the leaf's rights and page size; `None` if it is not mapped, is beyond 2^48, or the tree
/// points outside the pool or is malformed.
pub fn walk<F: EntryFormat>(
    pool_pages: &[[u64; ENTRIES]],
    phys_base: u64,
    root: u64,
    guest: u64,
) -> Option<(u64, Rights, PageSize)> {
    if guest >= GUEST_ADDRESS_LIMIT {
        return None;
    }
    let mut table = page_index(pool_pages.len(), phys_base, root)?;
    for level in (1..=4).rev() {
        let entry = pool_pages[table][entry_index(guest, level)];
        match F::decode(entry, level) {
            Decoded::NotPresent => return None,
            Decoded::Table { next } => {
                if level == 1 {
                    return None;
                }
                table = page_index(pool_pages.len(), phys_base, next)?;
            }
            Decoded::Leaf { host, rights } => {
                let size = PageSize::at_level(level)?;
                return Some((host + (guest & (size.bytes() - 1)), rights, size));
            }
        }
    }
    None
}

/// Why [`unmap_page`] could not take a page out of a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// Nothing maps the page.
    NotMapped,
    /// A 2 MiB or 1 GiB leaf maps it: taking one 4 KiB page out would need a new table,
    /// which the build-time pool size does not provide.
    LargePage(PageSize),
}

/// Takes the 4 KiB page at `guest` out of the tree rooted at `root` (tables in
/// `pool_pages`, as for [`walk`]), so that every access to it exits: the hypervisor traps
/// pages inside a mapped window this way (an MSI-X table inside a BAR), and takes a moving
/// device's window from the partition that loses it (a hot-standby takeover). The caller
/// flushes cached translations if the tree is in use.
pub fn unmap_page<F: EntryFormat>(
    pool_pages: &mut [[u64; ENTRIES]],
    phys_base: u64,
    root: u64,
    guest: u64,
) -> Result<(), UnmapError> {
    let (table, slot) = small_page_slot::<F>(pool_pages, phys_base, root, guest)?;
    if pool_pages[table][slot] == 0 {
        return Err(UnmapError::NotMapped);
    }
    pool_pages[table][slot] = 0;
    Ok(())
}

/// Puts the 4 KiB page at `guest` back into the tree rooted at `root`: host page `host`
/// with `rights` and `kind`'s memory type, in the level-1 table that mapped it before
/// [`unmap_page`] took it out (the tables are sized at build time, so only a page whose
/// path of tables exists can be mapped). `NotMapped` when no level-1 table holds the
/// address; `LargePage` when a larger leaf covers it. Making a page present needs no
/// invalidation: neither EPT (SDM vol. 3C §28.3.3.1) nor nested paging (APM vol. 2 §5.5.3)
/// caches a translation through a not-present entry.
pub fn map_page<F: EntryFormat>(
    pool_pages: &mut [[u64; ENTRIES]],
    phys_base: u64,
    root: u64,
    guest: u64,
    host: u64,
    rights: Rights,
    kind: MappingKind,
) -> Result<(), UnmapError> {
    let (table, slot) = small_page_slot::<F>(pool_pages, phys_base, root, guest)?;
    pool_pages[table][slot] = F::leaf(host & !0xfff, PageSize::Size4KiB, rights, kind);
    Ok(())
}

/// Makes `leaf` — one of the leaves [`build`] wrote for a mapping (as [`leaves`] splits it,
/// so of the same size) — present or not present in the tree rooted at `root`: a channel a
/// standby takes over leaves its tables at boot and comes back at the takeover, and leaves
/// the failed member's then. Works for leaves of any size, since the path of tables down to
/// the leaf's level stays as built. Returns whether the leaf was present before.
/// `NotMapped` when the path of tables does not reach the leaf's level; `LargePage` when a
/// larger leaf sits above it. Making a leaf present needs no invalidation (as for
/// [`map_page`]); taking one out needs the caller to flush cached translations of every
/// processor that runs with the tree before it runs the guest again.
pub fn set_leaf_present<F: EntryFormat>(
    pool_pages: &mut [[u64; ENTRIES]],
    phys_base: u64,
    root: u64,
    leaf: &Leaf,
    present: bool,
) -> Result<bool, UnmapError> {
    let target = leaf.size.level();
    if leaf.guest >= GUEST_ADDRESS_LIMIT || !leaf.guest.is_multiple_of(leaf.size.bytes()) {
        return Err(UnmapError::NotMapped);
    }
    let mut table = page_index(pool_pages.len(), phys_base, root).ok_or(UnmapError::NotMapped)?;
    for level in (target + 1..=4).rev() {
        let slot = entry_index(leaf.guest, level);
        match F::decode(pool_pages[table][slot], level) {
            Decoded::NotPresent => return Err(UnmapError::NotMapped),
            Decoded::Table { next } => {
                table =
                    page_index(pool_pages.len(), phys_base, next).ok_or(UnmapError::NotMapped)?;
            }
            Decoded::Leaf { .. } => {
                let size = PageSize::at_level(level).ok_or(UnmapError::NotMapped)?;
                return Err(UnmapError::LargePage(size));
            }
        }
    }
    let slot = entry_index(leaf.guest, target);
    let was_present = !matches!(
        F::decode(pool_pages[table][slot], target),
        Decoded::NotPresent
    );
    pool_pages[table][slot] = if present {
        F::leaf(leaf.host, leaf.size, leaf.rights, leaf.kind)
    } else {
        0
    };
    Ok(was_present)
}

/// The level-1 table (pool index) and slot that hold the 4 KiB page at `guest`, whether
/// that slot is present or not.
fn small_page_slot<F: EntryFormat>(
    pool_pages: &[[u64; ENTRIES]],
    phys_base: u64,
    root: u64,
    guest: u64,
) -> Result<(usize, usize), UnmapError> {
    if guest >= GUEST_ADDRESS_LIMIT {
        return Err(UnmapError::NotMapped);
    }
    let mut table = page_index(pool_pages.len(), phys_base, root).ok_or(UnmapError::NotMapped)?;
    for level in (2..=4).rev() {
        let slot = entry_index(guest, level);
        match F::decode(pool_pages[table][slot], level) {
            Decoded::NotPresent => return Err(UnmapError::NotMapped),
            Decoded::Table { next } => {
                table =
                    page_index(pool_pages.len(), phys_base, next).ok_or(UnmapError::NotMapped)?;
            }
            Decoded::Leaf { .. } => {
                let size = PageSize::at_level(level).ok_or(UnmapError::NotMapped)?;
                return Err(UnmapError::LargePage(size));
            }
        }
    }
    Ok((table, entry_index(guest, 1)))
}

/// Calls `f(guest_base, host_base, size, rights)` for every present leaf of the tree rooted
/// at `root`, in ascending guest order. Tables outside the pool and malformed entries are
/// skipped (and so show up as missing mappings to a validator).
pub fn for_each_leaf<F: EntryFormat>(
    pool_pages: &[[u64; ENTRIES]],
    phys_base: u64,
    root: u64,
    mut f: impl FnMut(u64, u64, PageSize, Rights),
) {
    if let Some(table) = page_index(pool_pages.len(), phys_base, root) {
        visit::<F>(pool_pages, phys_base, table, 4, 0, &mut f);
    }
}

fn visit<F: EntryFormat>(
    pages: &[[u64; ENTRIES]],
    phys_base: u64,
    table: usize,
    level: usize,
    guest_prefix: u64,
    f: &mut impl FnMut(u64, u64, PageSize, Rights),
) {
    for (slot, &entry) in pages[table].iter().enumerate() {
        let guest = guest_prefix | (slot as u64) << (12 + 9 * (level - 1));
        match F::decode(entry, level) {
            Decoded::NotPresent => {}
            Decoded::Table { next } => {
                if level > 1 {
                    if let Some(next) = page_index(pages.len(), phys_base, next) {
                        visit::<F>(pages, phys_base, next, level - 1, guest, f);
                    }
                }
            }
            Decoded::Leaf { host, rights } => {
                if let Some(size) = PageSize::at_level(level) {
                    f(guest, host, size, rights);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;
    use tessera_abi::table::Range;

    const KIB4: u64 = 1 << 12;
    const MIB2: u64 = 1 << 21;
    const GIB1: u64 = 1 << 30;

    fn ram(guest: u64, host: u64, size: u64) -> MemoryMapping {
        MemoryMapping {
            guest,
            host: Range::new(host, size),
            rights: Rights::RWX,
            kind: MappingKind::Ram,
        }
    }

    /// Counts of (4 KiB, 2 MiB, 1 GiB) leaves.
    fn census(mappings: &[MemoryMapping], allow_1gib: bool) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for leaf in leaves(mappings, allow_1gib) {
            match leaf.size {
                PageSize::Size4KiB => counts.0 += 1,
                PageSize::Size2MiB => counts.1 += 1,
                PageSize::Size1GiB => counts.2 += 1,
            }
        }
        counts
    }

    /// Leaves must tile each mapping exactly, in order, each naturally aligned.
    fn assert_tiles(mappings: &[MemoryMapping], allow_1gib: bool) {
        let mut all = leaves(mappings, allow_1gib);
        for mapping in mappings {
            let mut offset = 0;
            while offset < mapping.host.size {
                let leaf = all.next().expect("leaves end early");
                assert_eq!(leaf.guest, mapping.guest + offset);
                assert_eq!(leaf.host, mapping.host.base + offset);
                assert_eq!(leaf.guest % leaf.size.bytes(), 0);
                assert_eq!(leaf.host % leaf.size.bytes(), 0);
                assert!(allow_1gib || leaf.size != PageSize::Size1GiB);
                assert_eq!(leaf.rights, mapping.rights);
                assert_eq!(leaf.kind, mapping.kind);
                offset += leaf.size.bytes();
            }
            assert_eq!(offset, mapping.host.size);
        }
        assert!(all.next().is_none());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(PageSize::Size4KiB.bytes(), 4096);
        assert_eq!(PageSize::Size2MiB.bytes(), 2 * 1024 * 1024);
        assert_eq!(PageSize::Size1GiB.bytes(), 1024 * 1024 * 1024);
        for size in [PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB] {
            assert_eq!(PageSize::at_level(size.level()), Some(size));
        }
        assert_eq!(PageSize::at_level(0), None);
        assert_eq!(PageSize::at_level(4), None);
    }

    #[test]
    fn splits_with_misaligned_head_and_tail() {
        // 3 pages of head up to 2 MiB, 511 MiB of 2 MiB pages up to 1 GiB, one 1 GiB page,
        // three 2 MiB pages, then a 4 KiB tail of 5 pages.
        let start = MIB2 - 3 * KIB4;
        let size = 3 * KIB4 + (GIB1 - MIB2) + GIB1 + 3 * MIB2 + 5 * KIB4;
        let map = [ram(start, start, size)];
        assert_eq!(census(&map, true), (3 + 5, 511 + 3, 1));
        assert_tiles(&map, true);
        // Without 1 GiB pages the middle gigabyte becomes 512 2 MiB pages.
        assert_eq!(census(&map, false), (3 + 5, 511 + 3 + 512, 0));
        assert_tiles(&map, false);
        let first = leaves(&map, true).next().unwrap();
        assert_eq!((first.guest, first.size), (start, PageSize::Size4KiB));
    }

    #[test]
    fn small_regions_use_small_pages() {
        // Aligned to 1 GiB but shorter than 2 MiB: only 4 KiB pages.
        assert_eq!(census(&[ram(GIB1, GIB1, MIB2 - KIB4)], true), (511, 0, 0));
        // Exactly one of each.
        assert_eq!(census(&[ram(0, 0, KIB4)], true), (1, 0, 0));
        assert_eq!(census(&[ram(MIB2, 0, MIB2)], true), (0, 1, 0));
        assert_eq!(census(&[ram(GIB1, 2 * GIB1, GIB1)], true), (0, 0, 1));
        assert_eq!(census(&[], true), (0, 0, 0));
    }

    #[test]
    fn differing_host_and_guest_alignment_limits_page_size() {
        // Guest 2 MiB-aligned, host only 4 KiB-aligned: every page is 4 KiB.
        let map = [ram(MIB2, 0x30_1000, 2 * MIB2)];
        assert_eq!(census(&map, true), (1024, 0, 0));
        assert_tiles(&map, true);
        // Guest 1 GiB-aligned, host only 2 MiB-aligned: 2 MiB pages even with 1 GiB allowed.
        let map = [ram(GIB1, 2 * GIB1 + MIB2, GIB1)];
        assert_eq!(census(&map, true), (0, 512, 0));
        assert_tiles(&map, true);
        // Host and guest offset by 1 MiB relative to each other: 4 KiB only.
        let map = [ram(0, 0x10_0000, 4 * MIB2)];
        assert_eq!(census(&map, true), (2048, 0, 0));
        // Both offset by the same amount from 2 MiB: head, large pages, tail.
        let map = [ram(0x10_0000, 0x4010_0000, 4 * MIB2)];
        assert_eq!(census(&map, true), (256 + 256, 3, 0));
        assert_tiles(&map, true);
    }

    #[test]
    fn leaves_terminate_on_invalid_input() {
        // A sub-page tail is dropped, a zero-sized mapping yields nothing.
        let map = [
            ram(0, 0, KIB4 + 5),
            ram(0x10_0000, 0, 0),
            ram(0x20_0000, 0, 100),
        ];
        assert_eq!(census(&map, true), (1, 0, 0));
    }

    #[test]
    fn check_mappings_accepts_valid_maps() {
        assert_eq!(check_mappings(&[]), Ok(()));
        let map = [
            ram(0, 0x100_0000, MIB2),
            ram(MIB2, 0x10_0000, KIB4), // adjacent in guest space
            ram(GIB1, 0, GIB1),         // host ranges may overlap: not this module's business
            ram(GUEST_ADDRESS_LIMIT - KIB4, HOST_ADDRESS_LIMIT - KIB4, KIB4),
        ];
        assert_eq!(check_mappings(&map), Ok(()));
    }

    #[test]
    fn check_mappings_rejects_invalid_maps() {
        let good = ram(0, 0, KIB4);
        let cases: [(MemoryMapping, PlanError); 8] = [
            (ram(0x10_0800, 0, KIB4), PlanError::Unaligned { index: 1 }),
            (
                ram(0x10_0000, 0x800, KIB4),
                PlanError::Unaligned { index: 1 },
            ),
            (ram(0x10_0000, 0, 0x1800), PlanError::Unaligned { index: 1 }),
            (ram(0x10_0000, 0, 0), PlanError::Empty { index: 1 }),
            (
                ram(GUEST_ADDRESS_LIMIT - KIB4, 0, 2 * KIB4),
                PlanError::GuestOutOfRange { index: 1 },
            ),
            (
                ram(!0xfff, 0, 2 * KIB4),
                PlanError::GuestOutOfRange { index: 1 },
            ),
            (
                ram(KIB4, HOST_ADDRESS_LIMIT, KIB4),
                PlanError::HostOutOfRange { index: 1 },
            ),
            (
                ram(KIB4, !0xfff, 2 * KIB4),
                PlanError::HostOutOfRange { index: 1 },
            ),
        ];
        for (bad, error) in cases {
            assert_eq!(check_mappings(&[good, bad]), Err(error), "{bad:?}");
            assert_eq!(error.index(), 1);
        }
        // Overlap with the previous mapping, and a list out of guest order.
        let overlapping = [ram(0, 0, 2 * KIB4), ram(KIB4, 0x10_0000, KIB4)];
        assert_eq!(
            check_mappings(&overlapping),
            Err(PlanError::Overlap { index: 1 })
        );
        let unsorted = [ram(MIB2, 0, KIB4), ram(0, KIB4, KIB4)];
        assert_eq!(
            check_mappings(&unsorted),
            Err(PlanError::Overlap { index: 1 })
        );
        let duplicate = [good, ram(0x10_0000, 0, KIB4), ram(0x10_0000, KIB4, KIB4)];
        assert_eq!(
            check_mappings(&duplicate),
            Err(PlanError::Overlap { index: 2 })
        );
    }

    /// A heap-backed pool for tests.
    fn pool_pages(count: usize) -> Vec<[u64; ENTRIES]> {
        vec![[0u64; ENTRIES]; count]
    }

    const POOL_BASE: u64 = 0x8000_0000;

    /// Builds `mappings` with format `F`, then checks the page count, that enumerating the
    /// leaves gives back exactly `leaves()`, and that walking sample addresses agrees.
    fn build_and_verify<F: EntryFormat>(mappings: &[MemoryMapping], allow_1gib: bool) {
        let needed = table_pages_needed(mappings, allow_1gib);
        let mut pages = pool_pages(needed + 3);
        let mut pool = TablePool::new(&mut pages, POOL_BASE);
        let root = build::<F>(mappings, allow_1gib, &mut pool).expect("build");
        assert_eq!(pool.used, needed, "table_pages_needed disagrees with build");
        assert_eq!(root, POOL_BASE);

        let mut expected = leaves(mappings, allow_1gib);
        for_each_leaf::<F>(&pages, POOL_BASE, root, |guest, host, size, rights| {
            let leaf = expected.next().expect("an extra leaf in the tables");
            assert_eq!(
                (guest, host, size, rights),
                (leaf.guest, leaf.host, leaf.size, leaf.rights)
            );
        });
        assert!(expected.next().is_none(), "a leaf missing from the tables");

        for mapping in mappings {
            let size = mapping.host.size;
            for offset in [0, 1, size / 2, size - KIB4, size - 1] {
                let (host, rights, _) =
                    walk::<F>(&pages, POOL_BASE, root, mapping.guest + offset).expect("mapped");
                assert_eq!(host, mapping.host.base + offset);
                assert_eq!(rights, mapping.rights);
            }
            let after = mapping.guest + size;
            if !mappings
                .iter()
                .any(|m| m.guest <= after && after < m.guest + m.host.size)
            {
                assert_eq!(walk::<F>(&pages, POOL_BASE, root, after), None);
            }
            if let Some(before) = mapping.guest.checked_sub(1) {
                if !mappings
                    .iter()
                    .any(|m| m.guest <= before && before < m.guest + m.host.size)
                {
                    assert_eq!(walk::<F>(&pages, POOL_BASE, root, before), None);
                }
            }
        }
    }

    fn fixed_layouts() -> Vec<Vec<MemoryMapping>> {
        let device = MemoryMapping {
            guest: 0xfe00_0000,
            host: Range::new(0xfd00_0000, 0x4000),
            rights: Rights::RW,
            kind: MappingKind::DeviceMmio,
        };
        let channel = MemoryMapping {
            guest: 0x2_0000_0000,
            host: Range::new(0x9000_0000, MIB2),
            rights: Rights::RW,
            kind: MappingKind::Channel(3),
        };
        vec![
            vec![],
            vec![ram(0, 0x100_0000, KIB4)],
            vec![ram(0, 0x4000_0000, 3 * GIB1 + MIB2 + KIB4)],
            vec![ram(
                MIB2 - 3 * KIB4,
                MIB2 - 3 * KIB4,
                GIB1 + 5 * MIB2 + 7 * KIB4,
            )],
            vec![
                ram(0, 0x10_0000, 0x9f000),
                ram(0x10_0000, 0x20_0000, 126 * MIB2),
                device,
                channel,
            ],
            // Spanning two PML4 slots (512 GiB each) and the top of the guest space.
            vec![
                ram((1 << 39) - MIB2, 0, 2 * MIB2 + KIB4),
                ram(GUEST_ADDRESS_LIMIT - GIB1 - KIB4, GIB1 - KIB4, GIB1 + KIB4),
            ],
            // Many regions sharing one PT and one PD.
            (0..40)
                .map(|i| ram(i * 2 * KIB4, i * KIB4 + 0x1000_0000, KIB4))
                .collect(),
        ]
    }

    #[test]
    fn fixed_layouts_round_trip_both_formats() {
        for layout in fixed_layouts() {
            for allow_1gib in [false, true] {
                build_and_verify::<Npt>(&layout, allow_1gib);
                build_and_verify::<Ept>(&layout, allow_1gib);
            }
        }
    }

    #[test]
    fn table_page_counts() {
        assert_eq!(table_pages_needed(&[], true), 1);
        // PML4 + PDPT + PD + PT.
        assert_eq!(table_pages_needed(&[ram(0, 0, KIB4)], true), 4);
        // PML4 + PDPT + PD.
        assert_eq!(table_pages_needed(&[ram(0, 0, MIB2)], true), 3);
        // PML4 + PDPT.
        assert_eq!(table_pages_needed(&[ram(0, 0, GIB1)], true), 2);
        assert_eq!(table_pages_needed(&[ram(0, 0, GIB1)], false), 3);
        // Two 4 KiB pages in different 2 MiB regions of one gigabyte: two PTs, one PD.
        assert_eq!(
            table_pages_needed(&[ram(0, 0, KIB4), ram(MIB2, 0, KIB4)], true),
            5
        );
        // In different 512 GiB regions: everything twice.
        assert_eq!(
            table_pages_needed(&[ram(0, 0, KIB4), ram(1 << 39, 0, KIB4)], true),
            7
        );
    }

    /// A tiny deterministic generator (xorshift) so the property test needs no dependency.
    struct Random(u64);
    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    fn random_layout(random: &mut Random) -> Vec<MemoryMapping> {
        let mut layout = Vec::new();
        let mut guest = random.below(4) * MIB2 + random.below(4) * KIB4;
        for _ in 0..1 + random.below(8) {
            // Sizes biased towards large-page boundaries so every splitting path runs.
            let size = match random.below(4) {
                0 => (1 + random.below(64)) * KIB4,
                1 => (1 + random.below(8)) * MIB2 + random.below(3) * KIB4,
                2 => (1 + random.below(2)) * GIB1 + random.below(2) * MIB2,
                _ => random.below(2) * MIB2 + (1 + random.below(600)) * KIB4,
            };
            // Host alignment: either congruent with the guest modulo 1 GiB, or only 4 KiB.
            let host = if random.below(3) == 0 {
                0x1_0000_0000 + random.below(1 << 20) * KIB4
            } else {
                (random.below(64) * GIB1) + (guest % GIB1)
            };
            let kind = match random.below(3) {
                0 => MappingKind::Ram,
                1 => MappingKind::Channel(random.below(4) as u16),
                _ => MappingKind::DeviceMmio,
            };
            let rights = Rights {
                read: true,
                write: random.below(2) == 0,
                execute: random.below(2) == 0,
            };
            layout.push(MemoryMapping {
                guest,
                host: Range::new(host, size),
                rights,
                kind,
            });
            // Gap: none (adjacent), small, or a jump to another PD or PML4 slot.
            guest += size
                + match random.below(4) {
                    0 => 0,
                    1 => random.below(16) * KIB4,
                    2 => random.below(4) * GIB1 + random.below(4) * MIB2,
                    _ => (1 << 39) + random.below(512) * KIB4,
                };
        }
        layout
    }

    #[test]
    fn random_layouts_round_trip_both_formats() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        for _ in 0..60 {
            let layout = random_layout(&mut random);
            assert_eq!(check_mappings(&layout), Ok(()), "{layout:?}");
            let allow_1gib = random.below(2) == 0;
            assert_tiles(&layout, allow_1gib);
            build_and_verify::<Npt>(&layout, allow_1gib);
            build_and_verify::<Ept>(&layout, allow_1gib);
        }
    }

    #[test]
    fn out_of_pool_leaves_pool_untouched() {
        let map = [ram(0, 0, KIB4)];
        let mut pages = pool_pages(3);
        pages[0][0] = 0x1234;
        let mut pool = TablePool::new(&mut pages, POOL_BASE);
        assert_eq!(
            build::<Npt>(&map, true, &mut pool),
            Err(BuildError::OutOfTablePages)
        );
        assert_eq!(pool.used, 0);
        assert_eq!(pages[0][0], 0x1234);
        // Exactly enough works.
        let mut pages = pool_pages(4);
        let mut pool = TablePool::new(&mut pages, POOL_BASE);
        assert!(build::<Ept>(&map, true, &mut pool).is_ok());
        assert_eq!(pool.available(), 0);
        // An empty pool cannot even hold the root.
        let mut pool = TablePool::new(&mut [], POOL_BASE);
        assert_eq!(
            build::<Ept>(&[], true, &mut pool),
            Err(BuildError::OutOfTablePages)
        );
    }

    #[test]
    fn build_rejects_invalid_input() {
        let mut pages = pool_pages(8);
        let mut pool = TablePool::new(&mut pages, POOL_BASE);
        let bad = [ram(0, 0, KIB4), ram(0, KIB4, KIB4)];
        assert_eq!(
            build::<Npt>(&bad, true, &mut pool),
            Err(BuildError::Plan(PlanError::Overlap { index: 1 }))
        );
        let mut pool = TablePool::new(&mut pages, POOL_BASE + 8);
        assert_eq!(
            build::<Npt>(&[ram(0, 0, KIB4)], true, &mut pool),
            Err(BuildError::MisalignedPool)
        );
        assert_eq!(pool.used, 0);
    }

    #[test]
    fn pool_is_shared_and_reused_pages_are_zeroed() {
        let first = [ram(0, 0x100_0000, 3 * KIB4)];
        let second = [ram(0x40_0000, 0x200_0000, KIB4)];
        let mut pages = pool_pages(8);
        // Stale data in the pages the builds will take.
        for page in pages.iter_mut() {
            page.fill(0xdead_beef_0000_0007);
        }
        let mut pool = TablePool::new(&mut pages, POOL_BASE);
        let root_a = build::<Npt>(&first, true, &mut pool).unwrap();
        let root_b = build::<Npt>(&second, true, &mut pool).unwrap();
        assert_eq!(pool.used, 8);
        assert_eq!(root_b, POOL_BASE + 4 * TABLE_BYTES);
        let mut count = 0;
        for_each_leaf::<Npt>(&pages, POOL_BASE, root_a, |_, _, _, _| count += 1);
        assert_eq!(count, 3);
        assert_eq!(walk::<Npt>(&pages, POOL_BASE, root_a, 0x40_0000), None);
        assert_eq!(
            walk::<Npt>(&pages, POOL_BASE, root_b, 0x40_0123),
            Some((0x200_0123, Rights::RWX, PageSize::Size4KiB))
        );
        assert_eq!(walk::<Npt>(&pages, POOL_BASE, root_b, 0), None);
    }

    #[test]
    fn unmap_page_takes_out_one_small_page_only() {
        let device = MemoryMapping {
            guest: 0xfe90_0000,
            host: Range::new(0xfe90_0000, 0x4000),
            rights: Rights::RW,
            kind: MappingKind::DeviceMmio,
        };
        let map = [ram(0, 0, GIB1), device];
        let mut pages = pool_pages(8);
        let root = build::<Npt>(&map, true, &mut TablePool::new(&mut pages, POOL_BASE)).unwrap();
        assert_eq!(
            unmap_page::<Npt>(&mut pages, POOL_BASE, root, 0xfe90_1000),
            Ok(())
        );
        assert_eq!(walk::<Npt>(&pages, POOL_BASE, root, 0xfe90_1000), None);
        assert_eq!(walk::<Npt>(&pages, POOL_BASE, root, 0xfe90_1fff), None);
        // Its neighbours stay mapped.
        assert!(walk::<Npt>(&pages, POOL_BASE, root, 0xfe90_0fff).is_some());
        assert!(walk::<Npt>(&pages, POOL_BASE, root, 0xfe90_2000).is_some());
        assert_eq!(
            unmap_page::<Npt>(&mut pages, POOL_BASE, root, 0xfe90_1000),
            Err(UnmapError::NotMapped)
        );
        assert_eq!(
            unmap_page::<Npt>(&mut pages, POOL_BASE, root, 0x1000),
            Err(UnmapError::LargePage(PageSize::Size1GiB))
        );
        assert_eq!(
            unmap_page::<Npt>(&mut pages, POOL_BASE, root, 0xfe98_0000),
            Err(UnmapError::NotMapped)
        );
        assert!(walk::<Npt>(&pages, POOL_BASE, root, 0x1000).is_some());
    }

    #[test]
    fn map_page_puts_back_what_unmap_page_took_out() {
        map_page_round_trip::<Npt>();
        map_page_round_trip::<Ept>();
    }

    fn map_page_round_trip<F: EntryFormat>() {
        let device = MemoryMapping {
            guest: 0xfe90_0000,
            host: Range::new(0xfe90_0000, 0x4000),
            rights: Rights::RW,
            kind: MappingKind::DeviceMmio,
        };
        let map = [ram(0, 0, GIB1), device];
        let mut pages = pool_pages(8);
        let root = build::<F>(&map, true, &mut TablePool::new(&mut pages, POOL_BASE)).unwrap();
        let map_back = |pages: &mut [[u64; ENTRIES]], guest: u64| {
            map_page::<F>(
                pages,
                POOL_BASE,
                root,
                guest,
                guest,
                Rights::RW,
                MappingKind::DeviceMmio,
            )
        };
        let before = walk::<F>(&pages, POOL_BASE, root, 0xfe90_2000);
        assert!(before.is_some());
        assert_eq!(
            unmap_page::<F>(&mut pages, POOL_BASE, root, 0xfe90_2000),
            Ok(())
        );
        assert_eq!(walk::<F>(&pages, POOL_BASE, root, 0xfe90_2000), None);
        assert_eq!(map_back(&mut pages, 0xfe90_2000), Ok(()));
        assert_eq!(walk::<F>(&pages, POOL_BASE, root, 0xfe90_2000), before);
        // Only where a level-1 table exists: not in a hole, not under a large leaf.
        assert_eq!(
            map_back(&mut pages, 0xfec0_0000),
            Err(UnmapError::NotMapped)
        );
        assert_eq!(
            map_back(&mut pages, 0x1000),
            Err(UnmapError::LargePage(PageSize::Size1GiB))
        );
    }

    #[test]
    fn set_leaf_present_takes_out_and_puts_back_leaves_of_any_size() {
        leaf_round_trip::<Npt>();
        leaf_round_trip::<Ept>();
    }

    fn leaf_round_trip<F: EntryFormat>() {
        // RAM, then a channel of 2 MiB + 8 KiB: one 2 MiB leaf and two 4 KiB leaves.
        let channel = MemoryMapping {
            guest: 0x40_0000,
            host: Range::new(0x800_0000, 0x20_2000),
            rights: Rights::RW,
            kind: MappingKind::Channel(0),
        };
        let map = [ram(0, 0x100_0000, 0x40_0000), channel];
        let mut pages = pool_pages(8);
        let root = build::<F>(&map, false, &mut TablePool::new(&mut pages, POOL_BASE)).unwrap();
        let channel_leaves: Vec<Leaf> = leaves(&[channel], false).collect();
        assert_eq!(channel_leaves.len(), 3);
        assert_eq!(channel_leaves[0].size, PageSize::Size2MiB);
        let before: Vec<_> = [0x40_0000, 0x5f_ffff, 0x60_0000, 0x60_1fff]
            .iter()
            .map(|&guest| walk::<F>(&pages, POOL_BASE, root, guest))
            .collect();
        assert!(before.iter().all(Option::is_some));
        for leaf in &channel_leaves {
            assert_eq!(
                set_leaf_present::<F>(&mut pages, POOL_BASE, root, leaf, false),
                Ok(true)
            );
        }
        for guest in [0x40_0000, 0x5f_ffff, 0x60_0000, 0x60_1fff] {
            assert_eq!(walk::<F>(&pages, POOL_BASE, root, guest), None);
        }
        // The RAM below stays.
        assert!(walk::<F>(&pages, POOL_BASE, root, 0x3f_ffff).is_some());
        for leaf in &channel_leaves {
            assert_eq!(
                set_leaf_present::<F>(&mut pages, POOL_BASE, root, leaf, true),
                Ok(false)
            );
        }
        let after: Vec<_> = [0x40_0000, 0x5f_ffff, 0x60_0000, 0x60_1fff]
            .iter()
            .map(|&guest| walk::<F>(&pages, POOL_BASE, root, guest))
            .collect();
        assert_eq!(after, before);
        // A leaf below a larger one, or where no tables lead, is refused.
        let small_in_ram = Leaf {
            guest: 0x20_1000,
            host: 0x120_1000,
            size: PageSize::Size4KiB,
            rights: Rights::RWX,
            kind: MappingKind::Ram,
        };
        assert_eq!(
            set_leaf_present::<F>(&mut pages, POOL_BASE, root, &small_in_ram, false),
            Err(UnmapError::LargePage(PageSize::Size2MiB))
        );
        let nowhere = Leaf {
            guest: 0x80_0000_0000,
            ..small_in_ram
        };
        assert_eq!(
            set_leaf_present::<F>(&mut pages, POOL_BASE, root, &nowhere, true),
            Err(UnmapError::NotMapped)
        );
    }

    #[test]
    fn walk_rejects_bad_addresses_and_roots() {
        let map = [ram(0, 0, GIB1)];
        let mut pages = pool_pages(4);
        let root = build::<Ept>(&map, true, &mut TablePool::new(&mut pages, POOL_BASE)).unwrap();
        assert_eq!(
            walk::<Ept>(&pages, POOL_BASE, root, GIB1 - 1),
            Some((GIB1 - 1, Rights::RWX, PageSize::Size1GiB))
        );
        assert_eq!(
            walk::<Ept>(&pages, POOL_BASE, root, GUEST_ADDRESS_LIMIT),
            None
        );
        assert_eq!(walk::<Ept>(&pages, POOL_BASE, root, u64::MAX), None);
        // Roots outside the pool or misaligned.
        assert_eq!(
            walk::<Ept>(&pages, POOL_BASE, POOL_BASE - TABLE_BYTES, 0),
            None
        );
        assert_eq!(walk::<Ept>(&pages, POOL_BASE, POOL_BASE + 8, 0), None);
        assert_eq!(
            walk::<Ept>(&pages, POOL_BASE, POOL_BASE + 4 * TABLE_BYTES, 0),
            None
        );
        let mut count = 0;
        for_each_leaf::<Ept>(
            &pages,
            POOL_BASE,
            POOL_BASE + 100 * TABLE_BYTES,
            |_, _, _, _| count += 1,
        );
        assert_eq!(count, 0);
        // A table entry pointing outside the pool is treated as unmapped.
        pages[0][0] = Ept::table(0x1000, 4);
        assert_eq!(walk::<Ept>(&pages, POOL_BASE, root, 0), None);
        for_each_leaf::<Ept>(&pages, POOL_BASE, root, |_, _, _, _| count += 1);
        assert_eq!(count, 0);
    }

    #[test]
    fn npt_entry_bits() {
        let table = Npt::table(0x1234_5000, 4);
        assert_eq!(table, 0x1234_5000 | 0b111);
        assert_eq!(Npt::decode(table, 4), Decoded::Table { next: 0x1234_5000 });
        // U/S is set on every leaf, whatever the size.
        let ram_rwx = Npt::leaf(0x20_0000, PageSize::Size2MiB, Rights::RWX, MappingKind::Ram);
        assert_eq!(
            ram_rwx,
            0x20_0000
                | (NptEntryFlags::PRESENT
                    | NptEntryFlags::WRITABLE
                    | NptEntryFlags::USER
                    | NptEntryFlags::PAGE_SIZE)
                    .bits()
        );
        let ram_rw = Npt::leaf(
            0x4000_0000,
            PageSize::Size1GiB,
            Rights::RW,
            MappingKind::Channel(0),
        );
        assert_eq!(
            ram_rw,
            0x4000_0000
                | (NptEntryFlags::PRESENT
                    | NptEntryFlags::WRITABLE
                    | NptEntryFlags::USER
                    | NptEntryFlags::PAGE_SIZE
                    | NptEntryFlags::NO_EXECUTE)
                    .bits()
        );
        let read_only = Rights {
            read: true,
            write: false,
            execute: false,
        };
        let mmio = Npt::leaf(
            0xfee0_0000,
            PageSize::Size4KiB,
            read_only,
            MappingKind::DeviceMmio,
        );
        assert_eq!(
            mmio,
            0xfee0_0000
                | (NptEntryFlags::PRESENT
                    | NptEntryFlags::USER
                    | NptEntryFlags::NO_EXECUTE
                    | NptEntryFlags::CACHE_DISABLE
                    | NptEntryFlags::WRITE_THROUGH)
                    .bits()
        );
        assert_eq!(
            Npt::decode(mmio, 1),
            Decoded::Leaf {
                host: 0xfee0_0000,
                rights: read_only
            }
        );
        assert_eq!(
            Npt::decode(ram_rwx, 2),
            Decoded::Leaf {
                host: 0x20_0000,
                rights: Rights::RWX
            }
        );
        assert_eq!(
            Npt::decode(ram_rw, 3),
            Decoded::Leaf {
                host: 0x4000_0000,
                rights: Rights::RW
            }
        );
        // Bit 7 in a PTE is PAT, not a size bit; in a PML4 entry it never makes a leaf.
        let present_large = (NptEntryFlags::PRESENT | NptEntryFlags::PAGE_SIZE).bits();
        assert!(matches!(
            Npt::decode(present_large, 1),
            Decoded::Leaf { .. }
        ));
        assert!(matches!(
            Npt::decode(present_large, 4),
            Decoded::Table { .. }
        ));
        assert_eq!(
            Npt::decode(0x1234_5000 | NptEntryFlags::WRITABLE.bits(), 2),
            Decoded::NotPresent
        );
        // Without read there is no mapping at all.
        let write_only = Rights {
            read: false,
            write: true,
            execute: true,
        };
        assert_eq!(
            Npt::leaf(0x1000, PageSize::Size4KiB, write_only, MappingKind::Ram),
            0
        );
    }

    #[test]
    fn ept_entry_bits() {
        let table = Ept::table(0x1234_5000, 4);
        assert_eq!(table, 0x1234_5000 | 0b111);
        assert_eq!(Ept::decode(table, 3), Decoded::Table { next: 0x1234_5000 });
        let ram = Ept::leaf(0x20_0000, PageSize::Size2MiB, Rights::RWX, MappingKind::Ram);
        assert_eq!(
            ram,
            0x20_0000 | 0b111 | (6 << 3) | EptEntryFlags::LARGE_PAGE.bits()
        );
        assert_eq!(ram & EptEntryFlags::IGNORE_PAT.bits(), 0);
        let channel = Ept::leaf(
            0x3000,
            PageSize::Size4KiB,
            Rights::RW,
            MappingKind::Channel(1),
        );
        assert_eq!(channel, 0x3000 | 0b011 | (6 << 3));
        let mmio = Ept::leaf(
            0x4000_0000,
            PageSize::Size1GiB,
            Rights::RW,
            MappingKind::DeviceMmio,
        );
        assert_eq!(mmio, 0x4000_0000 | 0b011 | EptEntryFlags::LARGE_PAGE.bits());
        assert_eq!(
            Ept::decode(mmio, 3),
            Decoded::Leaf {
                host: 0x4000_0000,
                rights: Rights::RW
            }
        );
        assert_eq!(
            Ept::decode(channel, 1),
            Decoded::Leaf {
                host: 0x3000,
                rights: Rights::RW
            }
        );
        assert_eq!(
            Ept::decode(ram, 2),
            Decoded::Leaf {
                host: 0x20_0000,
                rights: Rights::RWX
            }
        );
        // Memory-type bits alone do not make an entry present.
        assert_eq!(Ept::decode(6 << 3 | 0x5000, 1), Decoded::NotPresent);
        let read_only = Rights {
            read: true,
            write: false,
            execute: false,
        };
        assert_eq!(
            Ept::leaf(0x1000, PageSize::Size4KiB, read_only, MappingKind::Ram),
            0x1001 | (6 << 3)
        );
        let write_only = Rights {
            read: false,
            write: true,
            execute: false,
        };
        assert_eq!(
            Ept::leaf(0x1000, PageSize::Size4KiB, write_only, MappingKind::Ram),
            0
        );
        // Pointer: WB paging structures, 4-level walk.
        assert_eq!(Ept::pointer(0x8000_0000), 0x8000_0000 | 0x1e);
    }
}
