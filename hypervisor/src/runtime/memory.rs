//! Partition memory at boot: stage-2 page tables from the table's mappings, guest images
//! verified (SHA-256) and copied in, the PVH start block written.
//!
//! All of it runs on the bootstrap core before any other core starts and before any guest
//! runs, so the static pools below have a single writer.

use crate::arch::{guest_memory, sha256, tsc};
use crate::exits;
use crate::table::{PartitionIndex, MACHINE, PARTITION_COUNT, STAGE2_TABLE_PAGES};
use crate::virt::{Backend, StartState};
use static_cell::ConstStaticCell;
use tessera_abi::table::{Blob, Entry, MappingKind, Partition, PciFunction, Rights};
use tessera_policy::stage2::{self, Ept, Npt, TablePool, UnmapError};

/// Guest-physical address of the PVH start-info block: page 1 of the partition, below the
/// 1 MiB where ELF guests are linked and clear of the real-mode IVT at 0.
pub const START_INFO_GUEST_ADDRESS: u64 = 0x1000;
const START_INFO_BYTES: usize = 4096;

/// The page-table pages of every partition's stage-2 tables, laid end to end: filled once
/// at boot, then read only by the processors' page walkers.
#[repr(C, align(4096))]
struct Stage2Pool([[u64; 512]; STAGE2_TABLE_PAGES]);

static STAGE2_POOL: ConstStaticCell<Stage2Pool> =
    ConstStaticCell::new(Stage2Pool([[0; 512]; STAGE2_TABLE_PAGES]));

/// The built stage-2 tables, kept for the one change made after boot: a hot-standby
/// takeover moves PCI functions' BAR windows (`move_function_windows`) and channel memory
/// (`move_channel`) from one member's tables to the other's.
struct BuiltTables {
    pool: &'static mut [[u64; 512]; STAGE2_TABLE_PAGES],
    phys_base: u64,
    /// Per partition: its first page in the pool and its root table's address.
    first_page: [usize; PARTITION_COUNT],
    roots: [u64; PARTITION_COUNT],
    nested_paging: bool,
    /// Whether the build used 1 GiB leaves (so that a channel's leaves are found again).
    allow_1gib: bool,
}

static BUILT: spin::Mutex<Option<BuiltTables>> = spin::Mutex::new(None);

/// The blobs whose digest the first boot has checked already: their address, length and
/// expected digest. A table may give several partitions the same image (the demo table's
/// three partitions share one guest ELF, embedded once), and hashing the same bytes of the
/// hypervisor's read-only image again within the same boot cannot give another answer (in
/// software, SHA-256 costs about 54 instructions a byte; with the SHA extensions about 3).
/// A restart checks its blobs again. Entries beyond the capacity are simply hashed each
/// time.
static CHECKED_AT_BOOT: spin::Mutex<heapless::Vec<(usize, usize, [u8; 32]), 16>> =
    spin::Mutex::new(heapless::Vec::new());

/// Whether `blob`'s bytes have the SHA-256 the build computed. `at_boot`: the first load
/// (on the bootstrap core, before any guest runs), where a blob checked for an earlier
/// partition is not hashed again.
fn digest_matches(blob: &Blob, at_boot: bool) -> bool {
    let key = (blob.bytes.as_ptr() as usize, blob.bytes.len(), blob.sha256);
    if at_boot && CHECKED_AT_BOOT.lock().contains(&key) {
        return true;
    }
    let matches = sha256::digest(blob.bytes, sha256::engine()) == blob.sha256;
    if matches && at_boot {
        // Full: the blob is hashed again next time, which is only slower.
        let _ = CHECKED_AT_BOOT.lock().push(key);
    }
    matches
}

/// Hashes every partition's boot blobs once, before any partition is loaded, so that the
/// loads find them checked (a blob whose digest differs is not recorded: its partition's
/// load hashes it again and refuses it, as before). Needs no TSC rate, so the boot core
/// does it inside the TSC calibration window (`tsc::begin_rate`), after the boot checks.
pub fn check_boot_digests() {
    for partition in MACHINE.partitions {
        for blob in partition.boot.blobs {
            let _ = digest_matches(blob, true);
        }
    }
}

/// Why a partition cannot be started.
#[derive(Clone, Copy, Debug)]
pub enum SetupError {
    Stage2(stage2::BuildError),
    BlobDigestMismatch {
        blob: usize,
    },
    CommandLineTooLong,
    SegmentOutsideMemory {
        guest: u64,
    },
    StartInfo,
    /// The load on the partition's own core found another entry than the boot core's check
    /// of the same load.
    EntryChanged,
    /// An MSI-X table page could not be taken out of the stage-2 tables.
    MsixTrap {
        page: u64,
        error: stage2::UnmapError,
    },
    /// A page of a BAR window a standby takes over could not be taken out of its tables
    /// (a 2 MiB or 1 GiB leaf maps it).
    MovingWindow {
        page: u64,
        error: stage2::UnmapError,
    },
    /// A leaf of a channel a standby takes over could not be taken out of its tables.
    MovingChannel {
        guest: u64,
        error: stage2::UnmapError,
    },
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
            SetupError::EntryChanged => {
                formatter.write_str("the load's entry differs from the boot core's check of it")
            }
            SetupError::MsixTrap { page, error } => write!(
                formatter,
                "the MSI-X table page {page:#x} cannot be trapped: {error:?} (a BAR window mapped with large pages)"
            ),
            SetupError::MovingChannel { guest, error } => write!(
                formatter,
                "the channel leaf at guest {guest:#x} the standby takes over cannot be left out until then: {error:?}"
            ),
            SetupError::MovingWindow { page, error } => write!(
                formatter,
                "the page {page:#x} of a BAR window the standby takes over cannot be left out until then: {error:?} (a BAR window mapped with large pages)"
            ),
        }
    }
}

/// Builds every partition's stage-2 tables in the backend's format; returns for each what
/// the backend loads: the NPT root (nCR3) or the EPT pointer.
pub fn build_stage2_tables(
    backend: &Backend,
) -> Result<[u64; PARTITION_COUNT], (usize, SetupError)> {
    let allow_1gib = backend.allows_1gib_pages();
    let pool = &mut STAGE2_POOL.take().0;
    let base = pool.as_ptr() as u64;
    let mut roots = [0; PARTITION_COUNT];
    let mut first_pages = [0; PARTITION_COUNT];
    let mut raw_roots = [0; PARTITION_COUNT];
    let mut offset = 0;
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        let pages = &mut pool[offset..offset + partition.stage2_table_pages];
        let phys_base = base + (offset as u64) * 4096;
        let built = match backend {
            Backend::Svm => stage2::build::<Npt>(
                partition.memory,
                allow_1gib,
                &mut TablePool::new(pages, phys_base),
            ),
            Backend::Vmx(_) => stage2::build::<Ept>(
                partition.memory,
                allow_1gib,
                &mut TablePool::new(pages, phys_base),
            ),
        };
        let root = built.map_err(|error| (index, SetupError::Stage2(error)))?;
        // MSI-X table pages leave the map, so that table accesses exit (exits::pci).
        let mut trap_error = None;
        let nested_paging = matches!(backend, Backend::Svm);
        exits::pci::for_each_msix_page(index, |page| {
            let unmapped = set_device_page(pages, phys_base, root, page, false, nested_paging);
            if let Err(error) = unmapped {
                trap_error.get_or_insert(SetupError::MsixTrap { page, error });
            }
        });
        if let Some(error) = trap_error {
            return Err((index, error));
        }
        // A table standby's tables hold its primary's BAR windows (built from the same
        // plan), taken out until a takeover gives it the functions.
        if !crate::table::holds_pci_functions_at_boot(partition) {
            for function in partition.pci_functions {
                for_each_window_page(function, |page| {
                    match set_device_page(pages, phys_base, root, page, false, nested_paging) {
                        // MSI-X table pages are out already.
                        Ok(()) | Err(UnmapError::NotMapped) => {}
                        Err(error) => {
                            trap_error.get_or_insert(SetupError::MovingWindow { page, error });
                        }
                    }
                });
            }
            if let Some(error) = trap_error {
                return Err((index, error));
            }
        }
        // A table standby's tables hold the channels it takes over from its primary (at the
        // primary's guest address), taken out until a takeover gives it the pair's devices.
        for (channel, _) in MACHINE
            .channels
            .iter()
            .enumerate()
            .filter(|(_, channel)| channel.takeover_standbys.contains(&(index as u16)))
        {
            let result = set_channel_present(
                pages,
                phys_base,
                root,
                partition,
                channel,
                false,
                (nested_paging, allow_1gib),
            );
            if let Err((guest, error)) = result {
                return Err((index, SetupError::MovingChannel { guest, error }));
            }
        }
        first_pages[index] = offset;
        raw_roots[index] = root;
        roots[index] = match backend {
            Backend::Svm => root,
            Backend::Vmx(_) => Ept::pointer(root),
        };
        offset += partition.stage2_table_pages;
    }
    *BUILT.lock() = Some(BuiltTables {
        pool,
        phys_base: base,
        first_page: first_pages,
        roots: raw_roots,
        nested_paging: matches!(backend, Backend::Svm),
        allow_1gib,
    });
    Ok(roots)
}

/// Maps (`present`) or takes out the identity-mapped 4 KiB device page `page` in the tree
/// at `root`, in the backend's format (nested paging or EPT).
fn set_device_page(
    pages: &mut [[u64; 512]],
    phys_base: u64,
    root: u64,
    page: u64,
    present: bool,
    nested_paging: bool,
) -> Result<(), UnmapError> {
    let (rights, kind) = (Rights::RW, MappingKind::DeviceMmio);
    match (present, nested_paging) {
        (false, true) => stage2::unmap_page::<Npt>(pages, phys_base, root, page),
        (false, false) => stage2::unmap_page::<Ept>(pages, phys_base, root, page),
        (true, true) => stage2::map_page::<Npt>(pages, phys_base, root, page, page, rights, kind),
        (true, false) => stage2::map_page::<Ept>(pages, phys_base, root, page, page, rights, kind),
    }
}

/// Calls `visit` with every 4 KiB page of `function`'s BAR windows (identity-mapped).
fn for_each_window_page(function: &PciFunction, mut visit: impl FnMut(u64)) {
    for window in function.bar_windows {
        let mut page = window.base & !0xfff;
        while page < window.base + window.size {
            visit(page);
            page += 4096;
        }
    }
}

/// At a hot-standby takeover (every core of both members out of its guest): the BAR
/// windows of the PCI functions `from` held leave its stage-2 tables and enter `to`'s,
/// except MSI-X table pages, which stay out of both (`exits::pci`). The pair lists the
/// same functions. Mapping needs no invalidation (`stage2::map_page`); `from`'s cores
/// drop their cached translations when they next start a guest (every start flushes:
/// `VirtualCpu::reset`). Returns the pages moved, or the first page that could not be.
pub fn move_function_windows(from: PartitionIndex, to: PartitionIndex) -> Result<usize, u64> {
    let mut guard = BUILT.lock();
    let Some(built) = guard.as_mut() else {
        return Ok(0);
    };
    let mut moved = 0;
    let mut failed = None;
    for function in to.partition().pci_functions {
        for_each_window_page(function, |page| {
            for (index, map) in [(from, false), (to, true)] {
                let first = built.first_page[index.0];
                let count = index.partition().stage2_table_pages;
                let pages = &mut built.pool[first..first + count];
                let phys_base = built.phys_base + first as u64 * 4096;
                let root = built.roots[index.0];
                let result = if map && exits::pci::is_msix_page(index, page) {
                    Ok(())
                } else {
                    set_device_page(pages, phys_base, root, page, map, built.nested_paging)
                };
                match result {
                    Ok(()) | Err(UnmapError::NotMapped) if !map => {}
                    Ok(()) => moved += 1,
                    Err(_) => {
                        failed.get_or_insert(page);
                    }
                }
            }
        });
    }
    failed.map_or(Ok(moved), Err)
}

/// Makes every leaf of channel `channel`'s mapping in `partition`'s tree (at `root`)
/// present or not. `format`: (nested paging, 1 GiB leaves allowed), as the tree was built.
/// Returns how many leaves the mapping has and how many were present before, or the guest
/// address of the first leaf that could not be set.
fn set_channel_present(
    pages: &mut [[u64; 512]],
    phys_base: u64,
    root: u64,
    partition: &Partition,
    channel: usize,
    present: bool,
    (nested_paging, allow_1gib): (bool, bool),
) -> Result<(usize, usize), (u64, UnmapError)> {
    let Some(mapping) = partition
        .memory
        .iter()
        .find(|mapping| mapping.kind == MappingKind::Channel(channel as u16))
    else {
        return Ok((0, 0));
    };
    let (mut leaves, mut present_before) = (0, 0);
    for leaf in stage2::leaves(core::slice::from_ref(mapping), allow_1gib) {
        let result = if nested_paging {
            stage2::set_leaf_present::<Npt>(pages, phys_base, root, &leaf, present)
        } else {
            stage2::set_leaf_present::<Ept>(pages, phys_base, root, &leaf, present)
        };
        match result {
            Ok(was_present) => {
                leaves += 1;
                present_before += usize::from(was_present);
            }
            Err(error) => return Err((leaf.guest, error)),
        }
    }
    Ok((leaves, present_before))
}

/// What [`move_channel`] changed.
pub struct MovedChannel {
    /// Leaves made present in the taker's tables.
    pub taker: usize,
    /// Of those, how many were present already (0 unless the boot or an earlier takeover
    /// failed to take them out).
    pub taker_present_before: usize,
    /// Leaves of the failed member's tables that were present and are now out.
    pub failed_present_before: usize,
}

/// At a hot-standby takeover (every core of both members out of its guest): the memory of
/// channel `channel` leaves `from`'s stage-2 tables and enters `to`'s (both map it at the
/// same guest address). Mapping needs no invalidation (`stage2::set_leaf_present`); `from`'s
/// cores drop their cached translations when they next start a guest (every start
/// flushes: `VirtualCpu::reset`). Returns what changed, or the guest address of the first
/// leaf that could not be set.
pub fn move_channel(
    from: PartitionIndex,
    to: PartitionIndex,
    channel: usize,
) -> Result<MovedChannel, u64> {
    let mut guard = BUILT.lock();
    let Some(built) = guard.as_mut() else {
        return Err(0);
    };
    let mut set = |index: PartitionIndex, present: bool| {
        let first = built.first_page[index.0];
        let count = index.partition().stage2_table_pages;
        set_channel_present(
            &mut built.pool[first..first + count],
            built.phys_base + first as u64 * 4096,
            built.roots[index.0],
            index.partition(),
            channel,
            present,
            (built.nested_paging, built.allow_1gib),
        )
        .map_err(|(guest, _)| guest)
    };
    let (_, failed_present_before) = set(from, false)?;
    let (taker, taker_present_before) = set(to, true)?;
    Ok(MovedChannel {
        taker,
        taker_present_before,
        failed_present_before,
    })
}

/// What [`load_partition`] does to the partition's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadStep {
    /// Every check of a load (digests, each segment inside one RAM mapping and inside its
    /// blob, the command line or start-info block fits) without touching guest memory: the
    /// boot core runs this for every partition before any core starts, so that it knows
    /// which partitions can run.
    CheckOnly,
    /// The checks, then the RAM cleared and the images copied in: run by the partition's
    /// own boot core (at boot, in parallel with the other partitions' cores; at a restart,
    /// with the partition's cores parked).
    ClearAndCopy,
}

/// Clears a partition's RAM, checks every blob against its build-time SHA-256, copies the
/// segments in and writes what the entry protocol needs at boot (PVH: the start-info
/// block; Linux: the command line with the calibrated TSC frequency). Returns where the
/// boot core starts. With [`LoadStep::CheckOnly`] the same checks, the same result, and no
/// write to the partition's memory.
pub fn load_partition(
    partition: &'static Partition,
    restarts: u32,
    step: LoadStep,
) -> Result<StartState, SetupError> {
    let copy = step == LoadStep::ClearAndCopy;
    if copy {
        guest_memory::clear_ram(partition);
    }
    let boot = &partition.boot;
    for (index, blob) in boot.blobs.iter().enumerate() {
        if !digest_matches(blob, restarts == 0) {
            return Err(SetupError::BlobDigestMismatch { blob: index });
        }
    }
    for segment in boot.segments {
        let outside = SetupError::SegmentOutsideMemory {
            guest: segment.guest,
        };
        // The whole segment (file bytes and the zeroed rest) must lie in one RAM mapping.
        guest_memory::ram_address(partition, segment.guest, segment.memory_size).ok_or(outside)?;
        let blob = boot.blobs.get(usize::from(segment.blob)).ok_or(outside)?;
        let start = segment.file_offset as usize;
        let source = blob
            .bytes
            .get(start..start + segment.file_size as usize)
            .ok_or(outside)?;
        // The rest of the segment is already zero: the RAM was cleared above.
        if copy {
            guest_memory::write(partition, segment.guest, source).ok_or(outside)?;
        }
    }
    match boot.entry {
        Entry::Pvh { entry } => {
            // As for Linux below: the restart count lets the guest tell a first boot from a
            // restart (a restarted guest can go on where its previous run left off).
            let mut line = heapless::String::<{ START_INFO_BYTES / 2 }>::new();
            core::fmt::write(
                &mut line,
                format_args!("{} tessera.restarts={}", boot.cmdline, restarts),
            )
            .map_err(|_| SetupError::CommandLineTooLong)?;
            let mut block = [0u8; START_INFO_BYTES];
            tessera_policy::pvh::write_start_info(
                &mut block,
                START_INFO_GUEST_ADDRESS,
                &line,
                partition.memory,
            )
            .map_err(|_| SetupError::StartInfo)?;
            write_guest(partition, START_INFO_GUEST_ADDRESS, &block, step)?;
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
            // (docs/linux-guest.md): give it the rate calibrated at boot. The restart count
            // lets the guest's userspace tell a first boot from a restart.
            let mut line = heapless::String::<4096>::new();
            let written = core::fmt::write(
                &mut line,
                format_args!(
                    "{} tsc_early_khz={} tessera.restarts={}\0",
                    boot.cmdline,
                    tsc::khz(),
                    restarts
                ),
            );
            if written.is_err() || line.len() as u64 > boot.cmdline_capacity {
                return Err(SetupError::CommandLineTooLong);
            }
            write_guest(partition, boot.cmdline_guest, line.as_bytes(), step)?;
            Ok(StartState::Linux64 {
                entry,
                boot_params,
                page_tables,
                gdt,
            })
        }
    }
}

/// The `contained:` line of a partition whose load failed; `outcome` is what did not
/// happen ("started", "restarted").
pub fn report_load_failure(
    partition: &Partition,
    core: impl core::fmt::Display,
    error: SetupError,
    outcome: &str,
) {
    log::info!(
        "contained: partition={} core={} reason=load address=0x0 rip=0x0 ({}); not {}",
        partition.name,
        core,
        error,
        outcome
    );
}

/// Copies `bytes` into the partition's RAM at guest-physical `guest` (with
/// [`LoadStep::CheckOnly`], only checks that one RAM mapping holds them).
fn write_guest(
    partition: &'static Partition,
    guest: u64,
    bytes: &[u8],
    step: LoadStep,
) -> Result<(), SetupError> {
    let written = match step {
        LoadStep::ClearAndCopy => guest_memory::write(partition, guest, bytes),
        LoadStep::CheckOnly => {
            guest_memory::ram_address(partition, guest, bytes.len() as u64).map(|_| ())
        }
    };
    written.ok_or(SetupError::SegmentOutsideMemory { guest })
}
