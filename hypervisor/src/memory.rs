//! Partition memory at boot: stage-2 page tables from the table's mappings, guest images
//! verified (SHA-256) and copied in, the PVH start block written.
//!
//! All of it runs on the bootstrap core before any other core starts and before any guest
//! runs, so the static pools below have a single writer.

use crate::table::{MACHINE, STAGE2_TABLE_PAGES};
use crate::virt::Backend;
use core::cell::UnsafeCell;
use sha2::{Digest, Sha256};
use tessera_abi::table::{Boot, MappingKind, MemoryMapping, Partition};
use tessera_policy::stage2::{self, Ept, Npt, TablePool};

/// Guest-physical address of the PVH start-info block: page 1 of the partition, below the
/// 1 MiB where ELF guests are linked and clear of the real-mode IVT at 0.
pub const START_INFO_GUEST_ADDRESS: u64 = 0x1000;
const START_INFO_BYTES: usize = 4096;

#[repr(C, align(4096))]
struct Stage2Pool(UnsafeCell<[[u64; 512]; STAGE2_TABLE_PAGES]>);
// SAFETY: written only by the bootstrap core during boot (see the module comment); after
// that only the processors' page walkers read it.
unsafe impl Sync for Stage2Pool {}

static STAGE2_POOL: Stage2Pool = Stage2Pool(UnsafeCell::new([[0; 512]; STAGE2_TABLE_PAGES]));

/// Why a partition cannot be started.
#[derive(Clone, Copy, Debug)]
pub enum SetupError {
    Stage2(stage2::BuildError),
    ImageDigestMismatch,
    SegmentOutsideMemory { guest: u64 },
    StartInfo,
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            SetupError::Stage2(error) => write!(formatter, "stage-2 tables: {error:?}"),
            SetupError::ImageDigestMismatch => formatter.write_str("guest image SHA-256 mismatch"),
            SetupError::SegmentOutsideMemory { guest } => {
                write!(
                    formatter,
                    "image segment at guest {guest:#x} outside the partition's RAM"
                )
            }
            SetupError::StartInfo => formatter.write_str("no room for the PVH start-info block"),
        }
    }
}

/// Builds every partition's stage-2 tables in the backend's format; returns for each what
/// the backend loads: the NPT root (nCR3) or the EPT pointer.
pub fn build_stage2_tables(
    backend: &Backend,
) -> Result<[u64; crate::table::PARTITION_COUNT], (usize, SetupError)> {
    let allow_1gib = backend.allows_1gib_pages();
    // SAFETY: only the bootstrap core runs (module comment): this is the only reference.
    let pool = unsafe { &mut *STAGE2_POOL.0.get() };
    let base = pool.as_ptr() as u64;
    let mut roots = [0; crate::table::PARTITION_COUNT];
    let mut offset = 0;
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        let pages = &mut pool[offset..offset + partition.stage2_table_pages];
        let mut table_pool = TablePool::new(pages, base + (offset as u64) * 4096);
        let built = match backend {
            Backend::Svm => stage2::build::<Npt>(partition.memory, allow_1gib, &mut table_pool),
            Backend::Vmx(_) => stage2::build::<Ept>(partition.memory, allow_1gib, &mut table_pool)
                .map(Ept::pointer),
        };
        roots[index] = built.map_err(|error| (index, SetupError::Stage2(error)))?;
        offset += partition.stage2_table_pages;
    }
    Ok(roots)
}

/// The host-physical bytes behind guest range `[guest, guest + length)` of a partition's
/// RAM, if one mapping covers it whole.
fn host_range(memory: &[MemoryMapping], guest: u64, length: u64) -> Option<u64> {
    memory.iter().find_map(|mapping| {
        let offset = guest.checked_sub(mapping.guest)?;
        (mapping.kind == MappingKind::Ram && offset.checked_add(length)? <= mapping.host.size)
            .then_some(mapping.host.base + offset)
    })
}

/// A partition's RAM as a mutable byte slice.
///
/// # Safety
/// The partition must not be running, and no other reference to its memory may exist.
/// Its RAM lies in identity-mapped memory below 4 GiB (checked at boot) and is disjoint from
/// the hypervisor image and every other partition (validated at build time).
unsafe fn host_bytes(host: u64, length: u64) -> &'static mut [u8] {
    // SAFETY: see the function's contract.
    unsafe { core::slice::from_raw_parts_mut(host as *mut u8, length as usize) }
}

/// Clears a partition's RAM, checks its image against the build-time SHA-256, copies the
/// segments in and writes the PVH start block. Returns the entry point.
pub fn load_partition(partition: &Partition) -> Result<u64, SetupError> {
    for mapping in partition
        .memory
        .iter()
        .filter(|mapping| mapping.kind == MappingKind::Ram)
    {
        // SAFETY: the partition has not started; its RAM is its own (see host_bytes).
        unsafe { host_bytes(mapping.host.base, mapping.host.size) }.fill(0);
    }
    let Boot::Pvh {
        image,
        sha256,
        segments,
        entry,
        cmdline,
    } = partition.boot;
    let digest = Sha256::digest(image);
    if digest.as_slice() != sha256 {
        return Err(SetupError::ImageDigestMismatch);
    }
    for segment in segments {
        let host = host_range(partition.memory, segment.guest, segment.memory_size).ok_or(
            SetupError::SegmentOutsideMemory {
                guest: segment.guest,
            },
        )?;
        // SAFETY: as above; the range lies inside one RAM mapping of this partition.
        let target = unsafe { host_bytes(host, segment.memory_size) };
        let source = &image
            [segment.file_offset as usize..(segment.file_offset + segment.file_size) as usize];
        target[..source.len()].copy_from_slice(source);
    }
    let mut block = [0u8; START_INFO_BYTES];
    let start_info = tessera_policy::pvh::write_start_info(
        &mut block,
        START_INFO_GUEST_ADDRESS,
        cmdline,
        partition.memory,
    )
    .map_err(|_| SetupError::StartInfo)?;
    let host = host_range(
        partition.memory,
        START_INFO_GUEST_ADDRESS,
        START_INFO_BYTES as u64,
    )
    .ok_or(SetupError::StartInfo)?;
    // SAFETY: as above.
    unsafe { host_bytes(host, START_INFO_BYTES as u64) }.copy_from_slice(&block);
    debug_assert_eq!(start_info, START_INFO_GUEST_ADDRESS);
    Ok(entry)
}

/// Reads an aligned 8-byte word of a partition's RAM or channel memory by guest-physical
/// address (for walking its page tables); None outside them.
pub fn read_guest_u64(partition: &Partition, guest: u64) -> Option<u64> {
    if guest % 8 != 0 {
        return None;
    }
    let host = partition.memory.iter().find_map(|mapping| {
        let offset = guest.checked_sub(mapping.guest)?;
        (mapping.kind != MappingKind::DeviceMmio && offset < mapping.host.size)
            .then_some(mapping.host.base + offset)
    })?;
    // SAFETY: the word lies inside memory the table gives this partition (validated disjoint
    // from the hypervisor), identity-mapped below 4 GiB (checked at boot); an aligned u64
    // read of plain memory cannot fault, and a concurrent guest write only makes the value
    // stale, which the guest could do to itself anyway.
    Some(unsafe { core::ptr::read_volatile(host as *const u64) })
}
