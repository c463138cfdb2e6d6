//! Lowering: the validated model becomes the owned, host-side form of
//! [`tessera_abi::table::Machine`] (indices instead of names, resolved guest layouts, the
//! blobs each partition boots from with their SHA-256: guest files, and for Linux
//! partitions the build-generated boot data and ACPI tables).
//!
//! Plain abi values (ranges, mappings, segments, entries, policies, capabilities, the
//! console and IOAPIC) are used as they are; the `Lowered*` structures exist only where the
//! abi's `&'static` slices cannot hold what the host owns (names, lists, paths, bytes).
//! Boot files are not read here: lowering takes them from the [`Validated`] table, as
//! validation read and parsed them.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tessera_abi::table::{
    Bdf, CacheControl, Capability, Console, Entry, Escalation, EscalationTrigger, HealthAction,
    HealthEvent, HealthPolicy, Ioapic, MemoryMapping, PciInterrupt, Range, Segment, StandbyRole,
};

use crate::acpi::{self, AcpiMachine, PciRoot, Uart};
use crate::diagnostics::{Diagnostics, Finding};
use crate::layout::{merge_ranges, plan_partition};
use crate::linux;
use crate::model::{self, CapabilityTarget, Table, WbinvdPolicy};
use crate::validate::{call_named, BootImage, ElfBoot, LinuxBoot, Rule, Validated};

/// The whole machine, lowered (the owned form of [`tessera_abi::table::Machine`]).
#[derive(Clone, Debug)]
pub struct Lowered {
    /// The table's file name, for the banner.
    pub table_name: String,
    pub platform_name: String,
    pub cpus: Vec<u32>,
    pub ram: Vec<Range>,
    pub hypervisor_memory: Range,
    pub console: Console,
    pub ioapic: Option<Ioapic>,
    pub ecam: Option<Range>,
    pub iommu: Vec<Range>,
    pub pci_bridges: Vec<tessera_abi::table::PciBridge>,
    pub partitions: Vec<LoweredPartition>,
    pub channels: Vec<LoweredChannel>,
    /// Every file the result depends on (the table and the boot files).
    pub files: Vec<PathBuf>,
}

/// One partition, lowered (the owned form of [`tessera_abi::table::Partition`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweredPartition {
    pub name: String,
    pub cpus: Vec<u32>,
    /// Sorted by guest address.
    pub memory: Vec<MemoryMapping>,
    /// Sorted, merged.
    pub ports: Vec<Range>,
    /// Sorted, without repeats.
    pub irq_pins: Vec<u8>,
    pub boot: LoweredBoot,
    pub health: LoweredHealth,
    pub capabilities: Vec<Capability>,
    /// A mask of [`tessera_abi::hypercall::Call::bit`]s.
    pub user_hypercalls: u64,
    pub cache_control: CacheControl,
    pub stage2_table_pages: usize,
    /// In table order.
    pub pci_functions: Vec<PciFunction>,
    /// Whether its virtual bus answers on configuration mechanism #1.
    pub pci_conf1: bool,
}

/// A partition's health policy (the owned form of [`tessera_abi::table::HealthPolicy`]):
/// `on-fault` gives every event its action, `[partition.health]` refines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweredHealth {
    pub actions: [HealthAction; HealthEvent::COUNT],
    pub escalations: Vec<Escalation>,
    pub restart_limit: u32,
    pub watchdog_period_microseconds: u64,
    pub standby: StandbyRole,
}

impl LoweredHealth {
    /// The policy with its escalations leaked, for host-side users of the state machine.
    pub fn to_policy(&self) -> HealthPolicy {
        HealthPolicy {
            actions: self.actions,
            escalations: Vec::leak(self.escalations.clone()),
            restart_limit: self.restart_limit,
            watchdog_period_microseconds: self.watchdog_period_microseconds,
            standby: self.standby,
        }
    }
}

/// The resolved health policy of a partition (also what `tessera show` prints).
pub fn lower_health(partition: &model::Partition) -> LoweredHealth {
    let base = partition.on_fault.policy();
    let mut lowered = LoweredHealth {
        actions: base.actions,
        escalations: Vec::new(),
        restart_limit: base.restart_limit,
        watchdog_period_microseconds: base.watchdog_period_microseconds,
        standby: StandbyRole::None,
    };
    let Some(health) = &partition.health else {
        return lowered;
    };
    for event in HealthEvent::ALL {
        if let Some(action) = health.events.get(event) {
            lowered.actions[event.index()] = action.action();
        }
    }
    if let Some(limit) = &health.restart_limit {
        lowered.restart_limit = u32::try_from(**limit).unwrap_or(u32::MAX);
    }
    if let Some(watchdog) = &health.watchdog {
        lowered.watchdog_period_microseconds = watchdog.period.microseconds();
    }
    lowered.escalations = health
        .escalate
        .iter()
        .filter_map(|rule| {
            let trigger = match (&rule.event, &rule.action) {
                (Some(event), None) => EscalationTrigger::Event(event.event()),
                (None, Some(action)) => EscalationTrigger::Action(action.action()),
                _ => return None,
            };
            Some(Escalation {
                trigger,
                count: u16::try_from(*rule.count).unwrap_or(u16::MAX),
                window_microseconds: rule.window.microseconds(),
                to: rule.to.action(),
            })
        })
        .collect();
    lowered
}

/// The part partition `index` plays in a hot-standby pair (`standby-for`; validation
/// allows at most one standby per primary and no chains).
pub fn lower_standby(table: &model::Table, index: usize) -> StandbyRole {
    let position = |name: &str| {
        table
            .partitions
            .iter()
            .position(|partition| *partition.name == name)
            .and_then(|position| u16::try_from(position).ok())
    };
    let partition = &table.partitions[index];
    if let Some(primary) = partition
        .standby_for
        .as_ref()
        .and_then(|name| position(name))
    {
        return StandbyRole::Standby {
            primary,
            takeover_vector: takeover_vector(partition).unwrap_or(0),
        };
    }
    table
        .partitions
        .iter()
        .position(|other| {
            other
                .standby_for
                .as_ref()
                .is_some_and(|name| **name == *partition.name)
        })
        .and_then(|standby| u16::try_from(standby).ok())
        .map_or(StandbyRole::None, |standby| StandbyRole::Primary {
            standby,
            rejoin_vector: partition
                .rejoin_as_standby
                .as_ref()
                .is_some_and(|rejoin| **rejoin)
                .then(|| takeover_vector(partition))
                .flatten(),
        })
}

/// The partition's `takeover-vector`, if it has one in range (validation, `standby-vector`).
fn takeover_vector(partition: &model::Partition) -> Option<u8> {
    partition
        .takeover_vector
        .as_ref()
        .and_then(|vector| u8::try_from(**vector).ok())
}

/// How a partition starts (the owned form of [`tessera_abi::table::Boot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweredBoot {
    /// What [`Segment::blob`] indexes.
    pub blobs: Vec<LoweredBlob>,
    pub segments: Vec<Segment>,
    pub entry: Entry,
    pub cmdline: String,
    /// Linux: where the hypervisor writes the command line; 0 for PVH.
    pub cmdline_guest: u64,
    /// Linux: the bytes there for the command line, the appended `tsc_early_khz=` and the
    /// NUL; 0 for PVH.
    pub cmdline_capacity: u64,
}

/// A blob a partition boots from (the owned form of [`tessera_abi::table::Blob`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweredBlob {
    pub source: BlobSource,
    pub sha256: [u8; 32],
    pub size: u64,
}

impl LoweredBlob {
    /// A file of the table, with its bytes as read.
    pub fn file(path: PathBuf, bytes: &[u8]) -> Self {
        Self {
            source: BlobSource::File(path),
            sha256: Sha256::digest(bytes).into(),
            size: bytes.len() as u64,
        }
    }

    /// Bytes made by the build, to be written to `OUT_DIR/<file_name>`.
    pub fn generated(file_name: String, bytes: Vec<u8>) -> Self {
        Self {
            sha256: Sha256::digest(&bytes).into(),
            size: bytes.len() as u64,
            source: BlobSource::Generated { file_name, bytes },
        }
    }

    /// The file a generated blob is written to in `out_dir`, or the file itself.
    pub fn path_in(&self, out_dir: &Path) -> PathBuf {
        match &self.source {
            BlobSource::File(path) => path.clone(),
            BlobSource::Generated { file_name, .. } => out_dir.join(file_name),
        }
    }
}

/// Where a blob's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobSource {
    /// A file the table names (absolute path); the generated code `include_bytes!`s it.
    File(PathBuf),
    /// Bytes made by the build (boot parameters, GDT and page tables, ACPI tables):
    /// [`crate::write_generated`] writes them to `OUT_DIR/<file_name>` and the generated
    /// code `include_bytes!`s them from there.
    Generated { file_name: String, bytes: Vec<u8> },
}

/// One PCI function, lowered (the owned form of [`tessera_abi::table::PciFunction`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// The device's name in `[platform.devices]`, for the hypervisor's boot refusals.
    pub name: String,
    pub physical: Bdf,
    pub virtual_address: Bdf,
    pub bar_windows: Vec<Range>,
    pub interrupt: PciInterrupt,
    pub dma_confined: bool,
}

/// One channel, lowered (the owned form of [`tessera_abi::table::Channel`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweredChannel {
    pub name: String,
    pub memory: Range,
    pub members: Vec<u16>,
    /// The standbys that take the channel over (`Table::channel_takers`), also in `members`.
    pub takeover_standbys: Vec<u16>,
    pub doorbell_vector: u8,
    pub doorbell_rings_per_second: u32,
}

/// A device's PCI function, or `None` for a device without `pci`.
fn lower_pci_function(name: &str, device: &model::Device) -> Option<PciFunction> {
    let physical = device.pci.as_deref()?;
    let virtual_address = device.virtual_address()?;
    let bdf = |address: model::PciAddress| Bdf::new(address.bus, address.device, address.function);
    let vectors = device
        .interrupt
        .as_ref()
        .and_then(|interrupt| interrupt.vectors.as_deref().copied())
        .unwrap_or(1);
    let interrupt = match device.interrupt.as_ref().map(|interrupt| *interrupt.kind) {
        None => PciInterrupt::None,
        Some(model::PciInterruptKind::Intx) => PciInterrupt::Intx {
            ioapic_pin: device
                .irq
                .as_deref()
                .and_then(|pin| u8::try_from(*pin).ok())
                .unwrap_or_default(),
        },
        Some(model::PciInterruptKind::Msi) => PciInterrupt::Msi {
            vectors: u8::try_from(vectors).unwrap_or(u8::MAX),
        },
        Some(model::PciInterruptKind::Msix) => PciInterrupt::Msix {
            vectors: u16::try_from(vectors).unwrap_or(u16::MAX),
        },
    };
    Some(PciFunction {
        name: name.to_owned(),
        physical: bdf(*physical),
        virtual_address: bdf(virtual_address),
        bar_windows: device.mmio.iter().map(|window| window.to_abi()).collect(),
        interrupt,
        dma_confined: device.dma_policy() == model::Dma::Confined,
    })
}

/// Lowers a validated table, building each partition's boot from the images validation
/// read (no file is read again).
pub fn lower(validated: &Validated) -> Result<Lowered, Diagnostics> {
    let table = validated.table();
    let mut findings = Vec::new();
    let table_file = std::fs::canonicalize(&table.path)
        .or_else(|_| std::path::absolute(&table.path))
        .unwrap_or_else(|_| table.path.clone());
    let mut files = vec![table_file];
    let mut partitions = Vec::new();
    for (index, partition) in table.partitions.iter().enumerate() {
        let boot = match lower_boot(table, index, validated.boot_image(index)) {
            Ok(boot) => boot,
            Err(finding) => {
                findings.push(*finding);
                continue;
            }
        };
        // The files the blobs come from, for the build's change tracking: an ELF guest's
        // blob is generated from its file (`lower_elf`), so that file is named here.
        let elf_file = match validated.boot_image(index) {
            Some(BootImage::Elf(elf)) => Some(&elf.file.path),
            _ => None,
        };
        let blob_files = boot.blobs.iter().filter_map(|blob| match &blob.source {
            BlobSource::File(path) => Some(path),
            BlobSource::Generated { .. } => None,
        });
        for path in blob_files.chain(elf_file) {
            if !files.contains(path) {
                files.push(path.clone());
            }
        }
        let memory = memory_map(table, index);
        let devices: Vec<&model::NamedDevice> = table.partition_devices(partition).collect();
        let mut ports: Vec<Range> = devices
            .iter()
            .flat_map(|device| device.device.ports.iter().map(|range| range.to_abi()))
            .collect();
        merge_ranges(&mut ports);
        let mut irq_pins: Vec<u8> = devices
            .iter()
            .filter_map(|device| device.device.irq.as_ref())
            .filter_map(|irq| u8::try_from(**irq).ok())
            .collect();
        irq_pins.sort_unstable();
        irq_pins.dedup();
        let stage2_table_pages = tessera_policy::stage2::table_pages_needed(&memory, false);
        partitions.push(LoweredPartition {
            name: partition.name.value.clone(),
            cpus: partition.cpus.iter().map(|cpu| cpu.value).collect(),
            memory,
            ports,
            irq_pins,
            boot,
            health: LoweredHealth {
                standby: lower_standby(table, index),
                ..lower_health(partition)
            },
            capabilities: lower_capabilities(table, partition),
            user_hypercalls: partition
                .user_hypercalls
                .iter()
                .filter_map(|name| call_named(name))
                .fold(0, |mask, call| mask | call.bit()),
            cache_control: match partition.wbinvd_policy() {
                WbinvdPolicy::Native => CacheControl::Native,
                WbinvdPolicy::Trap => CacheControl::Trap,
            },
            stage2_table_pages,
            // A standby's list ends with its primary's functions, which it holds only
            // after a takeover (the hypervisor knows a standby from its health policy).
            pci_functions: devices
                .iter()
                .copied()
                .chain(table.takeover_pci_devices(partition))
                .filter_map(|device| lower_pci_function(&device.name, &device.device))
                .collect(),
            pci_conf1: partition.pci_conf1(),
        });
    }
    if !findings.is_empty() {
        return Err(Diagnostics {
            path: table.path.clone(),
            text: table.text.clone(),
            findings,
        });
    }
    let console = table.device(&table.hypervisor.console);
    let console = Console {
        port: console
            .and_then(|device| device.device.ports.first())
            .and_then(|range| u16::try_from(*range.base).ok())
            .unwrap_or_default(),
    };
    Ok(Lowered {
        table_name: table.path.file_name().map_or_else(
            || table.path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        ),
        platform_name: table.platform.name.value.clone(),
        cpus: table.platform.cpus.iter().map(|cpu| cpu.value).collect(),
        ram: table
            .platform
            .ram
            .iter()
            .map(|range| range.to_abi())
            .collect(),
        hypervisor_memory: table.hypervisor.memory.to_abi(),
        console,
        ioapic: table.platform.ioapic.as_ref().map(|ioapic| Ioapic {
            base: *ioapic.base,
            pins: u8::try_from(*ioapic.pins).unwrap_or(u8::MAX),
        }),
        ecam: table.platform.ecam.as_ref().map(|ecam| ecam.to_abi()),
        iommu: table
            .platform
            .iommu
            .iter()
            .map(|unit| unit.to_abi())
            .collect(),
        pci_bridges: table
            .platform
            .pci_bridges
            .iter()
            .map(|bridge| {
                let buses = bridge.buses();
                tessera_abi::table::PciBridge {
                    physical: Bdf::new(bridge.pci.bus, bridge.pci.device, bridge.pci.function),
                    secondary: u8::try_from(*buses.start()).unwrap_or(u8::MAX),
                    subordinate: u8::try_from(*buses.end()).unwrap_or(u8::MAX),
                    kind: match *bridge.kind {
                        crate::model::PciBridgeKind::Pci => tessera_abi::table::PciBridgeKind::Pci,
                        crate::model::PciBridgeKind::PcieToPci => {
                            tessera_abi::table::PciBridgeKind::PcieToPci
                        }
                        crate::model::PciBridgeKind::PciePort => {
                            tessera_abi::table::PciBridgeKind::PciePort
                        }
                    },
                }
            })
            .collect(),
        partitions,
        channels: table
            .channels
            .iter()
            .enumerate()
            .map(|(position, channel)| LoweredChannel {
                name: channel.name.value.clone(),
                memory: channel.memory.to_abi(),
                members: channel
                    .partitions
                    .iter()
                    .filter_map(|member| table.partition_index(member))
                    .chain(table.channel_takers(position))
                    .map(|index| index as u16)
                    .collect(),
                takeover_standbys: table
                    .channel_takers(position)
                    .into_iter()
                    .map(|index| index as u16)
                    .collect(),
                doorbell_vector: u8::try_from(*channel.doorbell.vector).unwrap_or_default(),
                doorbell_rings_per_second: u32::try_from(channel.doorbell_budget())
                    .unwrap_or(u32::MAX),
            })
            .collect(),
        files,
    })
}

/// The lowered guest-physical memory map of partition `index`, sorted by guest address:
/// what the hypervisor's stage-2 builder receives. Needs no boot file, so translation
/// validation and the fuzz target can run it on tables checked without their images.
pub fn memory_map(table: &Table, index: usize) -> Vec<MemoryMapping> {
    let mut memory: Vec<MemoryMapping> = plan_partition(table, index)
        .into_iter()
        .map(|planned| planned.mapping)
        .collect();
    memory.sort_by_key(|mapping| mapping.guest);
    memory
}

/// The boot of partition `index` from what validation read and parsed for it.
fn lower_boot(
    table: &Table,
    index: usize,
    image: Option<&BootImage>,
) -> Result<LoweredBoot, Box<Finding>> {
    let partition = &table.partitions[index];
    let boot = &partition.boot;
    let cmdline = boot
        .cmdline
        .as_ref()
        .map(|cmdline| cmdline.value.clone())
        .unwrap_or_default();
    match image {
        Some(BootImage::Elf(elf)) => Ok(lower_elf(elf, cmdline)),
        Some(BootImage::Linux(files)) => Ok(lower_linux(table, index, files, cmdline)),
        // A successful load keeps an image for every partition; should that ever not hold,
        // the build gets a finding rather than a panic.
        None => Err(Box::new(Finding::new(
            Rule::BootIncomplete,
            boot.span,
            format!(
                "partition `{}`: its boot files were not read and checked",
                *partition.name
            ),
        ))),
    }
}

/// The blob, segments and PVH entry of an ELF partition.
///
/// The blob holds only the bytes the segments load (their file bytes, one after the other),
/// not the whole file: symbols, debug information and section headers are neither
/// embedded nor hashed at every boot (for the demo guest 62 KB of 105 KB; the hypervisor's
/// SHA-256 costs about 70 instructions a byte, docs/benchmarks.md). The blob is named after
/// its digest, so partitions booting the same file share one copy.
fn lower_elf(elf: &ElfBoot, cmdline: String) -> LoweredBoot {
    let mut loaded = Vec::new();
    let mut segments = Vec::new();
    for segment in &elf.image.segments {
        let start = segment.file_offset as usize;
        let bytes = elf
            .file
            .bytes
            .get(start..start + segment.file_size as usize)
            .unwrap_or(&[]);
        segments.push(Segment {
            blob: 0,
            file_offset: loaded.len() as u64,
            ..*segment
        });
        loaded.extend_from_slice(bytes);
    }
    let digest: [u8; 32] = Sha256::digest(&loaded).into();
    let name: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    LoweredBoot {
        blobs: vec![LoweredBlob::generated(format!("elf-{name}.bin"), loaded)],
        segments,
        entry: Entry::Pvh {
            entry: elf.image.pvh_entry,
        },
        cmdline,
        cmdline_guest: 0,
        cmdline_capacity: 0,
    }
}

/// The blobs and segments of a Linux partition: the kernel file, the initrd file, the boot
/// data (zero page, GDT, page tables) and the ACPI tables (see docs/linux-guest.md).
fn lower_linux(table: &Table, index: usize, files: &LinuxBoot, cmdline: String) -> LoweredBoot {
    const KERNEL: u16 = 0;
    const INITRD: u16 = 1;
    const BOOT_DATA: u16 = 2;
    const ACPI_TABLES: u16 = 3;
    let name = &table.partitions[index].name;
    let layout = files.layout;
    let mut boot_data = linux::boot_params(&files.kernel, &layout, &files.e820);
    let boot_params_size = boot_data.len() as u64;
    let tables_size = linux::BOOT_DATA_END - linux::GDT_GUEST;
    boot_data.extend(linux::gdt_and_page_tables());
    let acpi = acpi::build_tables(&acpi_machine(table, index));
    let acpi_size = acpi.bytes.len() as u64;

    let whole = |guest, blob, file_offset, size| Segment {
        guest,
        blob,
        file_offset,
        file_size: size,
        memory_size: size,
    };
    let mut segments = vec![
        whole(linux::BOOT_PARAMS_GUEST, BOOT_DATA, 0, boot_params_size),
        whole(linux::GDT_GUEST, BOOT_DATA, boot_params_size, tables_size),
        whole(acpi::TABLES_GUEST, ACPI_TABLES, 0, acpi_size),
        whole(
            layout.kernel_load,
            KERNEL,
            files.kernel.kernel_offset,
            files.kernel.kernel_size,
        ),
    ];
    if layout.initrd.size > 0 {
        segments.push(whole(layout.initrd.base, INITRD, 0, layout.initrd.size));
    }
    LoweredBoot {
        blobs: vec![
            LoweredBlob::file(files.kernel_file.path.clone(), &files.kernel_file.bytes),
            LoweredBlob::file(files.initrd_file.path.clone(), &files.initrd_file.bytes),
            LoweredBlob::generated(format!("partition-{}-boot-data.bin", **name), boot_data),
            LoweredBlob::generated(format!("partition-{}-acpi.bin", **name), acpi.bytes),
        ],
        segments,
        entry: Entry::Linux64 {
            entry: layout.entry,
            boot_params: linux::BOOT_PARAMS_GUEST,
            page_tables: linux::PAGE_TABLES_GUEST,
            gdt: linux::GDT_GUEST,
        },
        cmdline,
        cmdline_guest: linux::CMDLINE_GUEST,
        cmdline_capacity: layout.cmdline_capacity,
    }
}

/// What partition `index`'s ACPI tables describe: its cores, its IOAPIC view if it owns
/// pins, its UARTs — owned devices without `pci` with exactly one port range, of 8 ports
/// (a 16550), once per base port — and its virtual PCI bus if it owns PCI functions (the
/// virtual ECAM window at the platform's ECAM base, the functions' `mmio` windows and
/// port ranges).
pub fn acpi_machine(table: &Table, index: usize) -> AcpiMachine {
    let partition = &table.partitions[index];
    let mut uarts: Vec<Uart> = Vec::new();
    let mut owns_pins = false;
    let mut pci: Option<PciRoot> = None;
    for device in table.partition_devices_with_takeover(partition) {
        owns_pins |= device.device.irq.is_some();
        if device.device.pci.is_some() {
            let root = pci.get_or_insert_with(|| PciRoot {
                ecam: table.platform.ecam.as_ref().map(|ecam| *ecam.base),
                conf1: partition.pci_conf1(),
                memory_windows: Vec::new(),
                io_windows: Vec::new(),
            });
            root.memory_windows.extend(
                device
                    .device
                    .mmio
                    .iter()
                    .filter(|window| window.size.0 > 0)
                    .map(|window| (*window.base, window.size.0)),
            );
            // Port ranges are validated inside the 64 KiB I/O space.
            root.io_windows
                .extend(device.device.ports.iter().filter_map(|range| {
                    let base = u16::try_from(*range.base).ok()?;
                    let size = u32::try_from(range.size.0).ok()?;
                    (size > 0 && u32::from(base) + size <= 0x1_0000).then_some((base, size))
                }));
            continue;
        }
        let [range] = device.device.ports.as_slice() else {
            continue;
        };
        let (Ok(port), 8) = (u16::try_from(*range.base), range.size.0) else {
            continue;
        };
        if uarts.iter().any(|uart| uart.port == port) {
            continue;
        }
        uarts.push(Uart {
            port,
            irq: device
                .device
                .irq
                .as_ref()
                .and_then(|irq| u8::try_from(**irq).ok()),
        });
    }
    AcpiMachine {
        cpus: partition.cpus.iter().map(|cpu| cpu.value).collect(),
        // The MADT's I/O APIC address is 32-bit; IOAPICs sit at 0xfec00000 in practice.
        ioapic: table
            .platform
            .ioapic
            .as_ref()
            .filter(|_| owns_pins)
            .and_then(|ioapic| u32::try_from(*ioapic.base).ok()),
        uarts,
        pci,
    }
}

/// Capabilities with partition names resolved to indices; `stats:*` becomes one `Stats`
/// per partition. Repeats are dropped, table order kept.
fn lower_capabilities(table: &Table, partition: &model::Partition) -> Vec<Capability> {
    let index = |name: &str| table.partition_index(name).map(|index| index as u16);
    let mut lowered = Vec::new();
    for text in &partition.capabilities {
        let resolved: Vec<Capability> = match text.parse::<model::Capability>() {
            Ok(model::Capability::Power) => vec![Capability::Power],
            Ok(model::Capability::Stats(CapabilityTarget::Every)) => (0..table.partitions.len()
                as u16)
                .map(Capability::Stats)
                .collect(),
            Ok(model::Capability::Stats(CapabilityTarget::Partition(name))) => {
                index(&name).map(Capability::Stats).into_iter().collect()
            }
            Ok(model::Capability::Halt(name)) => {
                index(&name).map(Capability::Halt).into_iter().collect()
            }
            Ok(model::Capability::Restart(name)) => {
                index(&name).map(Capability::Restart).into_iter().collect()
            }
            Ok(model::Capability::Health(name)) => {
                index(&name).map(Capability::Health).into_iter().collect()
            }
            Err(_) => Vec::new(),
        };
        for capability in resolved {
            if !lowered.contains(&capability) {
                lowered.push(capability);
            }
        }
    }
    lowered
}
