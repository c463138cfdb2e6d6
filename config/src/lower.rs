//! Lowering: the validated model becomes an owned, host-side mirror of
//! [`tessera_abi::table::Machine`] (indices instead of names, resolved guest layouts, loaded
//! guest images with their SHA-256).

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tessera_abi::table::{Capability, Console, FaultPolicy, MemoryMapping, Range, Segment};

use crate::diagnostics::{Diagnostics, Finding};
use crate::layout::{merge_ranges, plan_partition};
use crate::model::{self, BootKind, CapabilityTarget, OnFault, Table};
use crate::validate::Rule;

/// The whole machine, lowered (mirrors [`tessera_abi::table::Machine`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lowered {
    /// The table's file name, for the banner.
    pub table_name: String,
    pub platform_name: String,
    pub cpus: Vec<u32>,
    pub ram: Vec<Range>,
    pub hypervisor_memory: Range,
    pub console_port: u16,
    /// The IOAPIC, if the platform declares one: base and number of pins.
    pub ioapic: Option<(u64, u8)>,
    pub partitions: Vec<LoweredPartition>,
    pub channels: Vec<LoweredChannel>,
    /// Every file the result depends on (the table and the boot images).
    pub files: Vec<PathBuf>,
}

impl Lowered {
    pub fn console(&self) -> Console {
        Console {
            port: self.console_port,
        }
    }
}

/// One partition, lowered (mirrors [`tessera_abi::table::Partition`]).
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
    pub on_fault: FaultPolicy,
    pub capabilities: Vec<Capability>,
    pub stage2_table_pages: usize,
}

/// How a partition starts (mirrors [`tessera_abi::table::Boot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoweredBoot {
    Pvh {
        /// Absolute path of the image (the generated code `include_bytes!`s it).
        image: PathBuf,
        sha256: [u8; 32],
        segments: Vec<Segment>,
        entry: u64,
        cmdline: String,
    },
}

/// One channel, lowered (mirrors [`tessera_abi::table::Channel`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweredChannel {
    pub name: String,
    pub memory: Range,
    pub members: Vec<u16>,
    pub doorbell_vector: u8,
}

/// Lowers a validated table. Reads the boot images; fails with `boot-unsupported` for
/// kinds the hypervisor cannot start yet and with the boot findings if an image is unusable.
pub fn lower(table: &Table) -> Result<Lowered, Diagnostics> {
    let mut findings = Vec::new();
    let table_file = std::fs::canonicalize(&table.path)
        .or_else(|_| std::path::absolute(&table.path))
        .unwrap_or_else(|_| table.path.clone());
    let mut files = vec![table_file];
    let mut partitions = Vec::new();
    for (index, partition) in table.partitions.iter().enumerate() {
        let boot = match lower_boot(table, index) {
            Ok(boot) => boot,
            Err(finding) => {
                findings.push(*finding);
                continue;
            }
        };
        let LoweredBoot::Pvh { image, .. } = &boot;
        if !files.contains(image) {
            files.push(image.clone());
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
            on_fault: match *partition.on_fault {
                OnFault::Halt => FaultPolicy::Halt,
                OnFault::Restart => FaultPolicy::Restart,
            },
            capabilities: lower_capabilities(table, partition),
            stage2_table_pages,
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
    let console_port = console
        .and_then(|device| device.device.ports.first())
        .and_then(|range| u16::try_from(*range.base).ok())
        .unwrap_or_default();
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
        console_port,
        ioapic: table
            .platform
            .ioapic
            .as_ref()
            .map(|ioapic| (*ioapic.base, u8::try_from(*ioapic.pins).unwrap_or(u8::MAX))),
        partitions,
        channels: table
            .channels
            .iter()
            .map(|channel| LoweredChannel {
                name: channel.name.value.clone(),
                memory: channel.memory.to_abi(),
                members: channel
                    .partitions
                    .iter()
                    .filter_map(|member| table.partition_index(member))
                    .map(|index| index as u16)
                    .collect(),
                doorbell_vector: u8::try_from(*channel.doorbell.vector).unwrap_or_default(),
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

fn lower_boot(table: &Table, index: usize) -> Result<LoweredBoot, Box<Finding>> {
    let partition = &table.partitions[index];
    let boot = &partition.boot;
    match (*boot.kind, &boot.image) {
        (BootKind::Elf, Some(image)) => {
            let (path, bytes, elf) = crate::validate::boot::check_elf(table, index, image)?;
            Ok(LoweredBoot::Pvh {
                image: path,
                sha256: Sha256::digest(&bytes).into(),
                segments: elf.segments,
                entry: elf.pvh_entry,
                cmdline: boot
                    .cmdline
                    .as_ref()
                    .map(|cmdline| cmdline.value.clone())
                    .unwrap_or_default(),
            })
        }
        (BootKind::Elf, None) => Err(Box::new(Finding::new(
            Rule::BootIncomplete,
            boot.span,
            format!(
                "partition `{}`: boot kind `elf` needs `image`",
                *partition.name
            ),
        ))),
        (BootKind::Linux, _) => Err(Box::new(
            Finding::new(
                Rule::BootUnsupported,
                boot.kind.span,
                format!(
                    "partition `{}`: the hypervisor cannot boot `linux` partitions yet",
                    *partition.name
                ),
            )
            .label("not supported yet")
            .hint("use `kind = \"elf\"` with a PVH guest"),
        )),
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
