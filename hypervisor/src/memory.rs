//! Partition memory at boot: stage-2 page tables from the table's mappings, guest images
//! verified (SHA-256) and copied in, the PVH start block written.
//!
//! All of it runs on the bootstrap core before any other core starts and before any guest
//! runs, so the static pools below have a single writer.

use crate::table::{MACHINE, STAGE2_TABLE_PAGES};
use crate::virt::Backend;
use crate::virt::StartState;
use core::cell::UnsafeCell;
use sha2::{Digest, Sha256};
use tessera_abi::table::{Entry, MappingKind, MemoryMapping, Partition};
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
    BlobDigestMismatch { blob: usize },
    CommandLineTooLong,
    SegmentOutsideMemory { guest: u64 },
    StartInfo,
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            SetupError::Stage2(error) => write!(formatter, "stage-2 tables: {error:?}"),
            SetupError::BlobDigestMismatch { blob } => {
                write!(
                    formatter,
                    "boot blob {blob}: SHA-256 differs from the build's"
                )
            }
            SetupError::CommandLineTooLong => formatter.write_str("the command line does not fit"),
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
    host_address(memory, guest, length, |kind| kind == MappingKind::Ram)
}

/// The host-physical address of guest range `[guest, guest + length)` if one mapping of an
/// accepted kind covers it whole.
fn host_address(
    memory: &[MemoryMapping],
    guest: u64,
    length: u64,
    accepted: impl Fn(MappingKind) -> bool,
) -> Option<u64> {
    memory.iter().find_map(|mapping| {
        let offset = guest.checked_sub(mapping.guest)?;
        (accepted(mapping.kind) && offset.checked_add(length)? <= mapping.host.size)
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

/// Clears a partition's RAM, checks every blob against its build-time SHA-256, copies the
/// segments in and writes what the entry protocol needs at boot (PVH: the start-info
/// block; Linux: the command line with the calibrated TSC frequency). Returns where the
/// boot core starts.
pub fn load_partition(partition: &Partition, restarts: u32) -> Result<StartState, SetupError> {
    for mapping in partition
        .memory
        .iter()
        .filter(|mapping| mapping.kind == MappingKind::Ram)
    {
        // SAFETY: the partition does not run; its RAM is its own (see host_bytes).
        unsafe { host_bytes(mapping.host.base, mapping.host.size) }.fill(0);
    }
    let boot = &partition.boot;
    for (index, blob) in boot.blobs.iter().enumerate() {
        if Sha256::digest(blob.bytes).as_slice() != blob.sha256 {
            return Err(SetupError::BlobDigestMismatch { blob: index });
        }
    }
    for segment in boot.segments {
        let outside = SetupError::SegmentOutsideMemory {
            guest: segment.guest,
        };
        let host =
            host_range(partition.memory, segment.guest, segment.memory_size).ok_or(outside)?;
        let blob = boot.blobs.get(usize::from(segment.blob)).ok_or(outside)?;
        let start = segment.file_offset as usize;
        let source = blob
            .bytes
            .get(start..start + segment.file_size as usize)
            .ok_or(outside)?;
        // SAFETY: as above; the range lies inside one RAM mapping of this partition.
        let target = unsafe { host_bytes(host, segment.memory_size) };
        target[..source.len()].copy_from_slice(source);
    }
    match boot.entry {
        Entry::Pvh { entry } => {
            let mut block = [0u8; START_INFO_BYTES];
            tessera_policy::pvh::write_start_info(
                &mut block,
                START_INFO_GUEST_ADDRESS,
                boot.cmdline,
                partition.memory,
            )
            .map_err(|_| SetupError::StartInfo)?;
            write_guest(partition, START_INFO_GUEST_ADDRESS, &block)?;
            Ok(StartState::Pvh {
                entry,
                start_info: START_INFO_GUEST_ADDRESS,
            })
        }
        Entry::Linux64 {
            entry,
            boot_params,
            page_tables,
            gdt,
        } => {
            // Debian's 6.1 kernel takes the TSC rate on AMD only from tsc_early_khz=
            // (shared/LINUX-GUEST.md): give it the rate calibrated at boot. The restart count
            // lets the guest's userspace tell a first boot from a restart.
            let mut line = heapless::String::<4096>::new();
            let written = core::fmt::write(
                &mut line,
                format_args!(
                    "{} tsc_early_khz={} tessera.restarts={}\0",
                    boot.cmdline,
                    crate::arch::tsc::khz(),
                    restarts
                ),
            );
            if written.is_err() || line.len() as u64 > boot.cmdline_capacity {
                return Err(SetupError::CommandLineTooLong);
            }
            write_guest(partition, boot.cmdline_guest, line.as_bytes())?;
            Ok(StartState::Linux64 {
                entry,
                boot_params,
                page_tables,
                gdt,
            })
        }
    }
}

/// Copies `bytes` into the partition's RAM at guest-physical `guest`.
fn write_guest(partition: &Partition, guest: u64, bytes: &[u8]) -> Result<(), SetupError> {
    let host = host_range(partition.memory, guest, bytes.len() as u64)
        .ok_or(SetupError::SegmentOutsideMemory { guest })?;
    // SAFETY: the partition does not run; the range lies inside one of its RAM mappings.
    unsafe { host_bytes(host, bytes.len() as u64) }.copy_from_slice(bytes);
    Ok(())
}

/// Reads an aligned 8-byte word of a partition's RAM or channel memory by guest-physical
/// address (for walking its page tables); None outside them.
pub fn read_guest_u64(partition: &Partition, guest: u64) -> Option<u64> {
    if !guest.is_multiple_of(8) {
        return None;
    }
    let host = host_address(partition.memory, guest, 8, |kind| {
        kind != MappingKind::DeviceMmio
    })?;
    // SAFETY: the word lies inside memory the table gives this partition (validated disjoint
    // from the hypervisor), identity-mapped below 4 GiB (checked at boot); an aligned u64
    // read of plain memory cannot fault, and a concurrent guest write only makes the value
    // stale, which the guest could do to itself anyway.
    Some(unsafe { core::ptr::read_volatile(host as *const u64) })
}
