//! The boot sequence, the top floor: what the bootstrap core does between the loader and
//! the first guest instruction — read the boot information, check the machine against the
//! table (cores, RAM, virtualization support, the IOAPIC), build and load every partition,
//! start the other cores.

use crate::arch::{self, boot_memory, console, cpuid, guest_memory, pic, tsc, x2apic};
use crate::exits;
use crate::runtime::{self, cores, memory};
use crate::table::{self, PartitionIndex, MACHINE};
use crate::virt;
use tessera_abi::table::{HealthEvent, Range};
use tessera_policy::multiboot::{self, AnyMemoryMap, BootProtocol, Rsdp};

/// Stops the boot with a clear console message when the machine cannot run the table.
pub fn refuse(reason: core::fmt::Arguments) -> ! {
    console::write_line_unlocked(format_args!("REFUSED: {reason}"));
    console::drain();
    arch::halt_forever()
}

extern "C" {
    static __tessera_image_start: u8;
    static __tessera_load_end: u8;
    static __tessera_image_end: u8;
}

/// What the hypervisor takes from the boot loader's information, read once at entry (the
/// block itself may lie in memory a partition is loaded into later).
struct BootInfo {
    protocol: BootProtocol,
    /// The firmware memory map, if the loader gave one.
    memory_map: Option<AnyMemoryMap<'static>>,
    /// Multiboot2: the ACPI root pointer copy (tag 14 or 15), and its physical address.
    rsdp: Option<(Rsdp, u32, u64)>,
}

/// Reads the boot information at `address` in the format `protocol` names: Multiboot v1
/// (spec 0.6.96 §3.3: `flags`, and `mmap_length`/`mmap_addr` when flag 6 is set) or
/// Multiboot2 (spec 1.0 §3.6, tags parsed by `tessera_policy::multiboot`).
fn read_boot_info(protocol: BootProtocol, address: u32) -> BootInfo {
    let address = u64::from(address);
    let unreadable = || -> ! {
        refuse(format_args!(
            "the {protocol:?} information at {address:#x} is not readable"
        ))
    };
    match protocol {
        BootProtocol::Multiboot1 => {
            let fields = boot_memory::bytes(address, 52).unwrap_or_else(|| unreadable());
            let word = |index: usize| {
                u32::from_le_bytes(fields[index * 4..index * 4 + 4].try_into().unwrap())
            };
            let memory_map = (word(0) & (1 << 6) != 0).then(|| {
                let map = boot_memory::bytes(u64::from(word(12)), word(11) as usize)
                    .unwrap_or_else(|| unreadable());
                AnyMemoryMap::Multiboot1(multiboot::parse_memory_map(map))
            });
            BootInfo {
                protocol,
                memory_map,
                rsdp: None,
            }
        }
        BootProtocol::Multiboot2 => {
            let header = boot_memory::bytes(address, 8).unwrap_or_else(|| unreadable());
            let total = multiboot::multiboot2_total_size(header).unwrap_or_else(|error| {
                refuse(format_args!(
                    "the Multiboot2 information at {address:#x} is malformed: {error}"
                ))
            });
            let bytes = boot_memory::bytes(address, total).unwrap_or_else(|| unreadable());
            let info = multiboot::parse_multiboot2(bytes).unwrap_or_else(|error| {
                refuse(format_args!(
                    "the Multiboot2 information at {address:#x} is malformed: {error}"
                ))
            });
            BootInfo {
                protocol,
                memory_map: info.memory_map.clone().map(AnyMemoryMap::Multiboot2),
                rsdp: info
                    .rsdp()
                    .map(|(rsdp, copy)| (rsdp, copy.tag, address + copy.offset as u64)),
            }
        }
    }
}

/// Checks that the firmware's memory map has every byte the table uses as RAM: the
/// hypervisor's image (code, data, static state), the page the application processors start
/// from, and every partition's memory. The rest of the table's hypervisor range is reserved
/// but never touched, so firmware ranges there are only reported: OVMF keeps ACPI NVS at
/// 0x806000 and 0x810000–0x900000, inside the demo's 1–16 MiB hypervisor range.
fn check_memory(info: &BootInfo) {
    let Some(map) = &info.memory_map else {
        refuse(format_args!(
            "the boot loader gave no memory map ({})",
            match info.protocol {
                BootProtocol::Multiboot1 => "Multiboot flag 6",
                BootProtocol::Multiboot2 => "Multiboot2 tag 6",
            }
        ));
    };
    let available = || {
        map.clone()
            .filter(|(_, kind)| *kind == multiboot::MemoryKind::Available)
            .map(|(range, _)| range)
    };
    // Every range is checked as it is named: nothing is collected, so no table is too big
    // for the check.
    let check_ram = |owner: &str, range: Range, device: bool| {
        if range.end() > 0x1_0000_0000 {
            refuse(format_args!(
                "memory {:#x}..{:#x} of {} lies above 4 GiB, which this version does not map",
                range.base,
                range.end(),
                owner
            ));
        }
        // Device windows (a passed-through function's BARs) are not RAM: the function's
        // discovery checks them against its BARs instead.
        if !device && !multiboot::covers(available(), range) {
            refuse(format_args!(
                "memory {:#x}..{:#x} of {} is not RAM on this machine (firmware memory map)",
                range.base,
                range.end(),
                owner
            ));
        }
    };
    // Only the addresses of the linker symbols are taken.
    let (image_start, image_end) = (
        &raw const __tessera_image_start as u64,
        &raw const __tessera_image_end as u64,
    );
    check_ram(
        "the hypervisor image",
        Range::new(image_start, image_end - image_start),
        false,
    );
    if MACHINE.cpus.len() > 1 {
        // Under UEFI low memory is the firmware's to describe; the trampoline page must be
        // plain RAM there too, or the application processors would run over firmware data.
        check_ram(
            "the AP start-up trampoline",
            Range::new(
                tessera_loader::AP_TRAMPOLINE_ADDRESS,
                tessera_loader::AP_TRAMPOLINE_BYTES,
            ),
            false,
        );
    }
    for partition in MACHINE.partitions {
        for mapping in partition.memory {
            let device = mapping.kind == tessera_abi::table::MappingKind::DeviceMmio;
            check_ram(partition.name, mapping.host, device);
        }
    }
    let reserved = MACHINE.hypervisor_memory;
    if !multiboot::covers(available(), reserved) {
        log::info!(
            "boot: hypervisor memory {:#x}..{:#x} holds firmware ranges that are not RAM, beyond the image {:#x}..{:#x}; left alone",
            reserved.base,
            reserved.end(),
            image_start,
            image_end
        );
    }
}

/// Refuses a table that gives a partition a port of the platform's ACPI fixed hardware as
/// this machine's FADT describes it (PM1 event and control blocks, the PM timer, the SMI
/// command port, the reset register): the validator refuses the known platforms' blocks,
/// and this check holds on machines it does not know. A partition owning them could sleep,
/// reset or switch off the whole machine.
fn check_fixed_hardware_ports() {
    let Ok(fixed) = arch::acpi::tables().and_then(|tables| tables.fixed_hardware()) else {
        return;
    };
    let registers = [
        ("SMI_CMD", fixed.smi_command),
        ("PM1a_EVT", fixed.pm1a_event),
        ("PM1b_EVT", fixed.pm1b_event),
        ("PM1a_CNT", fixed.pm1a_control),
        ("PM1b_CNT", fixed.pm1b_control),
        ("PM_TMR", fixed.pm_timer),
        ("RESET_REG", fixed.reset.map(|reset| reset.register)),
    ];
    for (name, register) in registers {
        let Some(register) = register else { continue };
        let Some(port) = register.io_port() else {
            continue;
        };
        let block = Range::new(u64::from(port), u64::from(register.bytes.max(1)));
        for partition in MACHINE.partitions {
            if let Some(owned) = partition
                .ports
                .iter()
                .find(|owned| owned.base < block.end() && block.base < owned.end())
            {
                refuse(format_args!(
                    "partition {} owns ports {:#x}..{:#x}, which hold the firmware's {} ({:#x}..{:#x}, FADT): machine-wide ACPI hardware no partition may own",
                    partition.name,
                    owned.base,
                    owned.end(),
                    name,
                    block.base,
                    block.end()
                ));
            }
        }
    }
}

/// The firmware's IOMMU units against the table (docs/pci-iommu.md, "Discovery at boot",
/// step 5): each unit's register base is one of `platform.iommu`'s windows and each window
/// a unit; each confined function lies in a unit's device scope (IVRS device entries,
/// AMD IOMMU 3.0 §5.2.2; DRHD device scopes or INCLUDE_PCI_ALL, VT-d 3.0 §8.3.1). A table
/// without windows and without confined functions is not checked. Refuses before any
/// partition starts.
fn check_iommu_units(
    tables: &tessera_policy::firmware_acpi::FirmwareTables<arch::acpi::IdentityMapped>,
) {
    use tessera_policy::iommu::{boot_check, ivrs, vt_d};
    let confined = MACHINE
        .partitions
        .iter()
        .flat_map(|partition| partition.pci_functions.iter())
        .filter(|function| function.dma_confined)
        .count();
    if !boot_check::applies(MACHINE.iommu, confined) {
        return;
    }
    let ivrs_bytes = tables
        .find(arch::acpi::Signature::IVRS)
        .ok()
        .map(|t| t.bytes);
    let dmar_bytes = tables
        .find(arch::acpi::Signature::DMAR)
        .ok()
        .map(|t| t.bytes);
    // Register bases, each once (an AMD-Vi unit is often described by two IVHD blocks).
    let mut bases = heapless::Vec::<u64, 8>::new();
    let mut add = |base: u64, kind: &str| {
        if !bases.contains(&base) && bases.push(base).is_err() {
            refuse(format_args!(
                "the firmware describes more than 8 {kind} IOMMU units; this version checks 8"
            ));
        }
    };
    let kind = if let Some(bytes) = ivrs_bytes {
        let table = ivrs::Ivrs::parse(bytes)
            .unwrap_or_else(|error| refuse(format_args!("the IVRS table: {error:?}")));
        for unit in table.units() {
            match unit {
                Ok(unit) => add(unit.base, "AMD-Vi"),
                Err(error) => refuse(format_args!("the IVRS table: {error:?}")),
            }
        }
        "AMD-Vi"
    } else if let Some(bytes) = dmar_bytes {
        for unit in vt_d::units(bytes) {
            match unit {
                Ok(unit) => add(unit.base, "VT-d"),
                Err(error) => refuse(format_args!("the DMAR table: {error:?}")),
            }
        }
        "VT-d"
    } else {
        "no"
    };
    match boot_check::match_units(&bases, MACHINE.iommu) {
        Ok(()) => {}
        Err(boot_check::Disagreement::UnitNotInTable { base }) => refuse(format_args!(
            "the firmware's {kind} IOMMU unit at {base:#x} is not among the table's `platform.iommu` windows"
        )),
        Err(boot_check::Disagreement::WindowWithoutUnit { base }) => refuse(format_args!(
            "the table's IOMMU window at {base:#x} has no unit in the firmware ({})",
            if ivrs_bytes.is_some() {
                "IVRS"
            } else if dmar_bytes.is_some() {
                "DMAR"
            } else {
                "neither IVRS nor DMAR"
            }
        )),
    }
    for partition in MACHINE.partitions {
        for function in partition.pci_functions.iter().filter(|f| f.dma_confined) {
            let device = function.physical.0;
            let covered = if let Some(bytes) = ivrs_bytes {
                ivrs::Ivrs::parse(bytes)
                    .map(|table| {
                        table
                            .units()
                            .map_while(Result::ok)
                            .any(|unit| unit.segment == 0 && unit.covers(device))
                    })
                    .unwrap_or(false)
            } else if let Some(bytes) = dmar_bytes {
                vt_d::covering_unit(bytes, device).is_some()
            } else {
                false
            };
            if !covered {
                refuse(format_args!(
                    "PCI function {} (device `{}` of partition `{}`): no {kind} IOMMU unit's device scope covers it, and its DMA is confined",
                    exits::pci::ShowBdf(function.physical),
                    function.name,
                    partition.name
                ));
            }
        }
    }
}

/// Enables the IOMMU the firmware describes — the AMD-Vi unit of the IVRS, else the VT-d unit
/// of the DMAR — with every device blocked but the partitions' functions (and, on AMD-Vi,
/// the unit itself and the I/O APICs); docs/pci-iommu.md, "The IOMMU". Without either,
/// device DMA is not confined, and the log says so. A unit this version cannot drive is
/// reported and left off: the machine still boots.
fn enable_iommu() {
    let Ok(tables) = arch::acpi::tables() else {
        return;
    };
    // The table's IOAPIC, whose pins go through remapping entries.
    let ioapic_id = MACHINE.ioapic.and_then(|table| {
        tables.madt().ok().and_then(|madt| {
            madt.io_apics()
                .find(|ioapic| ioapic.address == table.base)
                .map(|ioapic| ioapic.id)
        })
    });
    check_iommu_units(&tables);
    let ivrs = match tables.find(arch::acpi::Signature::IVRS) {
        Ok(ivrs) => ivrs,
        Err(_) => {
            match tables.find(arch::acpi::Signature::DMAR) {
                Ok(dmar) => match arch::intel_iommu::enable(dmar.bytes, ioapic_id) {
                    Ok(base) => {
                        log::info!(
                                "boot: VT-d IOMMU at {:#x} enabled: DMA of every device blocked but the partitions' functions",
                                base
                            );
                        if let Some(table) = MACHINE.ioapic {
                            arch::ioapic::start_remapping(
                                table.pins,
                                arch::intel_iommu::ioapic_entry,
                            );
                        }
                    }
                    Err(refusal @ arch::intel_iommu::Refusal::CannotRemapInterrupts { .. }) => {
                        refuse(format_args!("{refusal}"))
                    }
                    Err(refusal) => log::info!("boot: VT-d IOMMU left off: {}", refusal),
                },
                Err(_) => {
                    log::info!("boot: no IOMMU (no IVRS, no DMAR): device DMA is not confined")
                }
            }
            return;
        }
    };
    let mut ioapic_ids = heapless::Vec::<u8, 16>::new();
    if let Ok(madt) = tables.madt() {
        for ioapic in madt.io_apics() {
            if ioapic_ids.push(ioapic.id).is_err() {
                log::info!("boot: more than 16 IOAPICs; AMD-Vi left off");
                return;
            }
        }
    }
    match arch::amd_iommu::enable(ivrs.bytes, &ioapic_ids, ioapic_id) {
        Ok(enabled) => {
            log::info!(
                "boot: AMD-Vi IOMMU at {:#x} enabled: every device blocked but the unit ({:#06x}) and the IOAPICs {:04x?}",
                enabled.base,
                enabled.iommu_device,
                &enabled.passthrough[1..]
            );
            if let Some(table) = MACHINE.ioapic {
                arch::ioapic::start_remapping(table.pins, arch::amd_iommu::ioapic_entry);
            }
        }
        Err(refusal) => log::info!("boot: AMD-Vi IOMMU left off: {}", refusal),
    }
}

/// Masks every pin of every IOAPIC the firmware lists besides the table's (whose pins
/// `exits::ioapic::init` masks): the firmware may have left routes there that no partition
/// could ever mask, since no partition owns those IOAPICs.
fn mask_other_ioapics() {
    let table_base = MACHINE.ioapic.map(|ioapic| ioapic.base);
    let madt = match arch::acpi::tables().and_then(|tables| tables.madt()) {
        Ok(madt) => madt,
        // The cores were found through the same MADT moments ago; nothing more to do.
        Err(_) => return,
    };
    for ioapic in madt.io_apics() {
        if Some(ioapic.address) == table_base {
            continue;
        }
        match arch::ioapic::mask_every_pin_at(ioapic.address) {
            Some(pins) => log::info!(
                "boot: IOAPIC {} at {:#x} (not in the table): {} pins masked",
                ioapic.id,
                ioapic.address,
                pins
            ),
            None => log::info!(
                "boot: IOAPIC {} at {:#x} lies outside the uncached MMIO window; left alone",
                ioapic.id,
                ioapic.address
            ),
        }
    }
}

/// Checks that every core of the table is listed in the ACPI MADT.
fn check_cores() {
    let mut present = heapless::Vec::<u32, 256>::new();
    if !arch::acpi::for_each_core(|apic_id| {
        let _ = present.push(apic_id);
    }) {
        if arch::acpi::has_root_pointer() {
            refuse(format_args!("no ACPI MADT: cannot tell which cores exist"));
        }
        // A UEFI machine booted through Multiboot v1: no BIOS areas, no RSDP handed over.
        refuse(format_args!(
            "no ACPI RSDP, neither from the boot loader nor in the BIOS areas: cannot tell which cores exist (on UEFI, boot through GRUB's multiboot2)"
        ));
    }
    for &apic_id in MACHINE.cpus {
        if !present.contains(&apic_id) {
            refuse(format_args!(
                "core {} of the table does not exist here (the MADT lists {:?}); the table needs {} cores",
                apic_id,
                present.as_slice(),
                MACHINE.cpus.len()
            ));
        }
    }
}

fn print_banner(backend: &str) {
    log::info!(
        "Tessera {} backend={} table={} platform={} cores={:?} tsc={}kHz",
        env!("CARGO_PKG_VERSION"),
        backend,
        MACHINE.table_name,
        MACHINE.platform_name,
        MACHINE.cpus,
        tsc::khz()
    );
    // Only the addresses of the linker symbols are taken.
    let (start, load_end, end) = (
        &raw const __tessera_image_start as u64,
        &raw const __tessera_load_end as u64,
        &raw const __tessera_image_end as u64,
    );
    log::info!(
        "hypervisor memory: {} KiB used of {} KiB (image {} KiB, static state {} KiB)",
        (end - start) / 1024,
        MACHINE.hypervisor_memory.size / 1024,
        (load_end - start) / 1024,
        (end - load_end) / 1024
    );
    for partition in MACHINE.partitions {
        let ram = guest_memory::ram_bytes(partition);
        log::info!(
            "partition {}: cores={:?} ram={} KiB regions={} ports={} health: shutdown={} memory-violation={} restart-limit={} escalations={} watchdog-us={}",
            partition.name,
            partition.cpus,
            ram / 1024,
            partition.memory.len(),
            partition.ports.len(),
            partition.health.action(HealthEvent::Shutdown).name(),
            partition.health.action(HealthEvent::MemoryViolation).name(),
            partition.health.restart_limit,
            partition.health.escalations.len(),
            partition.health.watchdog_period_microseconds
        );
    }
}

/// With `platform.ecam` in the table, the firmware's MCFG must describe the same window for
/// segment 0 (PCI Firmware 3.0 §4.1.2): the partitions' virtual ECAM windows sit at its base,
/// which no partition may map.
fn check_ecam() {
    let Some(ecam) = MACHINE.ecam else {
        return;
    };
    let found = arch::acpi::tables().and_then(|tables| {
        tables
            .find(tessera_policy::firmware_acpi::Signature::MCFG)
            .map(|table| tessera_policy::pci::mcfg::segment_zero(table.bytes))
    });
    match found {
        Ok(Some(window)) if window.base == ecam.base && window.size() == ecam.size => {}
        Ok(Some(window)) => refuse(format_args!(
            "the table's ECAM window is {:#x}+{:#x}; the firmware's MCFG gives segment 0 at {:#x}+{:#x} (buses {}-{})",
            ecam.base,
            ecam.size,
            window.base,
            window.size(),
            window.first_bus,
            window.last_bus
        )),
        Ok(None) => refuse(format_args!(
            "the table declares an ECAM window at {:#x}; the firmware's MCFG has no segment 0 entry",
            ecam.base
        )),
        Err(error) => refuse(format_args!(
            "the table declares an ECAM window at {:#x}; no usable MCFG: {error}",
            ecam.base
        )),
    }
}

/// Every PCI function the table passes through must be there, be an endpoint and have its
/// BARs inside the table's windows; each is quiesced (docs/pci-iommu.md, "Discovery at
/// boot"). A disagreement stops the machine before any partition starts.
fn discover_pci_functions() {
    if let Err(refusal) = exits::pci::discover() {
        refuse(format_args!(
            "PCI function {} (device `{}` of partition `{}`): {}",
            exits::pci::ShowBdf(refusal.function.physical),
            refusal.function.name,
            refusal.partition,
            describe_discovery_error(refusal.error)
        ));
    }
}

fn describe_discovery_error(
    error: tessera_policy::pci::function::DiscoveryError,
) -> heapless::String<256> {
    use tessera_policy::pci::function::DiscoveryError;
    let mut text = heapless::String::new();
    let _ = match error {
        DiscoveryError::Absent => {
            core::fmt::write(&mut text, format_args!("not present (vendor ID 0xffff)"))
        }
        DiscoveryError::NotEndpoint { header_type, class } => core::fmt::write(
            &mut text,
            format_args!(
                "not an endpoint (header type {header_type}, class {class:06x}): bridges and host bridges cannot be passed through"
            ),
        ),
        DiscoveryError::MalformedBar { bar } => core::fmt::write(
            &mut text,
            format_args!("BAR{bar} reports an impossible size"),
        ),
        DiscoveryError::BarOutsideWindows { bar, base, size } => core::fmt::write(
            &mut text,
            format_args!(
                "BAR{bar} at {base:#x} (size {size:#x}) lies outside the table's mmio windows"
            ),
        ),
        DiscoveryError::IoBarOutsidePorts { bar, base, size } => core::fmt::write(
            &mut text,
            format_args!(
                "I/O BAR{bar} at {base:#x} (size {size:#x}) lies outside the partition's ports"
            ),
        ),
        DiscoveryError::Reset(error) => core::fmt::write(
            &mut text,
            format_args!("its reset did not complete: {error:?}"),
        ),
        DiscoveryError::MsixTable(error) => core::fmt::write(
            &mut text,
            format_args!("its MSI-X table cannot be trapped: {error:?}"),
        ),
        DiscoveryError::Topology(error) => describe_topology_error(&mut text, error),
    };
    text
}

/// The bridge the table declares for a bus instead of the hardware's, for a refusal.
struct DeclaredInstead(Option<tessera_abi::table::PciBridge>);

impl core::fmt::Display for DeclaredInstead {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            Some(bridge) => write!(
                formatter,
                " (it puts bus {:02x} behind {})",
                bridge.secondary,
                exits::pci::ShowBdf(bridge.physical)
            ),
            None => Ok(()),
        }
    }
}

/// A bridge disagreement (docs/pci-iommu.md, "Discovery at boot", step 2), in words.
fn describe_topology_error(
    text: &mut heapless::String<256>,
    error: tessera_policy::pci::topology::TopologyError,
) -> core::fmt::Result {
    use exits::pci::ShowBdf;
    use tessera_policy::pci::topology::TopologyError;
    match error {
        TopologyError::NoBridge { bus } => core::fmt::write(
            text,
            format_args!("no bridge on bus 0 leads to its bus {bus:02x}"),
        ),
        TopologyError::UndeclaredBridge { found, declared } => core::fmt::write(
            text,
            format_args!(
                "it is behind bridge {} ({}, buses {:02x}-{:02x}), which `platform.pci-bridges` does not declare{}",
                ShowBdf(found.address),
                found.kind_name(),
                found.secondary,
                found.subordinate,
                DeclaredInstead(declared)
            ),
        ),
        TopologyError::KindMismatch { found, declared } => core::fmt::write(
            text,
            format_args!(
                "its bridge {} is `{}`, but `platform.pci-bridges` declares `{}`",
                ShowBdf(found.address),
                found.kind_name(),
                declared.kind.name()
            ),
        ),
        TopologyError::BusesMismatch { found, declared } => core::fmt::write(
            text,
            format_args!(
                "its bridge {} has buses {:02x}-{:02x}, but `platform.pci-bridges` declares {:02x}-{:02x}",
                ShowBdf(found.address),
                found.secondary,
                found.subordinate,
                declared.secondary,
                declared.subordinate
            ),
        ),
        TopologyError::TooManyBridges => core::fmt::write(
            text,
            format_args!(
                "bus 0 has more than {} bridges, more than the boot check records",
                tessera_policy::pci::topology::MAX_BRIDGES
            ),
        ),
        TopologyError::SharedRequester { other, bridge } => {
            let owner = MACHINE.partitions.iter().find_map(|partition| {
                partition
                    .pci_functions
                    .iter()
                    .find(|function| function.physical == other)
                    .map(|function| (partition.name, function.name))
            });
            let (partition, device) = owner.unwrap_or(("?", "?"));
            core::fmt::write(
                text,
                format_args!(
                    "it shares the requester ID of `{}` bridge {} with function {} (device `{}` of partition `{}`), so no IOMMU can tell their DMA apart",
                    bridge.kind_name(),
                    ShowBdf(bridge.address),
                    ShowBdf(other),
                    device,
                    partition
                ),
            )
        }
    }
}

/// The bootstrap core's work: check the machine against the table, build every partition's
/// stage-2 tables and permission maps, load the partitions, start the other cores, run.
pub fn bootstrap(magic: u32, info: u32) -> ! {
    let entered = tsc::read();
    runtime::record_hypervisor_entry(entered);
    console::init(MACHINE.console.port);
    arch::cpu::init_idt();
    arch::cpu::set_nmi_handler(cores::host_nmi);
    pic::mask_all();
    let Some(protocol) = BootProtocol::from_magic(magic) else {
        refuse(format_args!(
            "not started by a Multiboot or Multiboot2 loader (EAX = {magic:#x})"
        ));
    };
    let boot_info = read_boot_info(protocol, info);
    if let Some((rsdp, _, _)) = boot_info.rsdp {
        arch::acpi::use_root_pointer(rsdp);
    }
    cpuid::record_max_basic_leaf();
    // The TSC calibration window opens as soon as the ACPI tables can name the HPET, and
    // closes after the blob digests: the checks and digests in between need no TSC rate,
    // and fill the window's millisecond instead of a wait (docs/benchmarks.md).
    let rate = tsc::begin_rate();
    let backend = match cpuid::vendor() {
        cpuid::Vendor::Amd => match virt::svm::check_support() {
            Ok(()) => virt::Backend::Svm,
            Err(missing) => refuse(format_args!("{}", missing.describe())),
        },
        cpuid::Vendor::Intel => match virt::vmx::check_support() {
            Ok(capabilities) => virt::Backend::Vmx(capabilities),
            Err(missing) => refuse(format_args!("{missing}")),
        },
        cpuid::Vendor::Other => refuse(format_args!(
            "unknown CPU vendor: neither AMD SVM nor Intel VMX"
        )),
    };
    if !cpuid::has_x2apic() {
        refuse(format_args!(
            "the CPU lacks x2APIC (CPUID 1:ECX bit 21), which Tessera requires"
        ));
    }
    x2apic::enable();
    let bsp = x2apic::current_id();
    let Some(bsp_index) = table::cpu_index(bsp) else {
        refuse(format_args!(
            "the boot core (x2APIC ID {bsp}) is not among the table's cores {:?}",
            MACHINE.cpus
        ));
    };
    check_cores();
    check_memory(&boot_info);
    if let Err(error) = arch::host_paging::enable(cores::stack_guard_pages()) {
        refuse(format_args!("host page tables: {error}"));
    }
    let checked = tsc::read();
    memory::check_boot_digests();
    let digested = tsc::read();
    let (_, rate_source) = tsc::finish_rate(rate);
    let rated = tsc::read();
    log::info!(
        "boot: blob digests by {}",
        arch::sha256::engine().describe()
    );
    // The doorbells' rate limits are in TSC ticks: fixed now, before any partition starts
    // (the other cores see them through the boot plan, published after them).
    runtime::partition::prepare_doorbell_budgets();
    if let Err((table_pins, hardware_pins)) = exits::ioapic::init() {
        refuse(format_args!(
            "the table gives the IOAPIC {table_pins} pins; the hardware has {hardware_pins}"
        ));
    }
    mask_other_ioapics();
    enable_iommu();
    check_fixed_hardware_ports();
    check_ecam();
    discover_pci_functions();
    print_banner(backend.name());
    log::info!("boot: hypervisor entered at tsc={}", entered);
    if let Some((rsdp, tag, address)) = boot_info.rsdp {
        log::info!(
            "boot: Multiboot2, ACPI RSDP revision {} from tag {} (copy at {:#x})",
            rsdp.revision,
            tag,
            address
        );
    }

    let roots = match memory::build_stage2_tables(&backend) {
        Ok(roots) => roots,
        Err((index, error)) => refuse(format_args!(
            "stage-2 tables of {}: {:?}",
            MACHINE.partitions[index].name, error
        )),
    };
    let tables_built = tsc::read();
    let mut entries = [None; table::PARTITION_COUNT];
    let mut permission_maps = [0; table::PARTITION_COUNT];
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        permission_maps[index] = cores::build_permission_maps(&backend, PartitionIndex(index));
        // Only the checks here: each partition's own boot core clears its RAM and copies its
        // images in (`cores::core_main`), all partitions at once rather than one after the
        // other on this core.
        match memory::load_partition(partition, 0, memory::LoadStep::CheckOnly) {
            Ok(entry) => entries[index] = Some(entry),
            // One partition's broken image stops that partition, not the machine.
            Err(error) => {
                memory::report_load_failure(partition, partition.cpus[0], error, "started")
            }
        }
    }
    let partitions_set_up = tsc::read();
    // Channels are shared: cleared here, before any member can run, not by a member's core.
    for channel in MACHINE.channels {
        guest_memory::clear_channel(channel);
    }
    let channels_cleared = tsc::read();
    // With no partition loaded the machine has nothing to run: say so once, plainly, rather
    // than leave every core halted behind the `contained:` lines.
    if entries.iter().all(Option::is_none) {
        refuse(format_args!(
            "no partition could be loaded (each one's reason is on its `contained:` line above)"
        ));
    }
    cores::set_boot_plan(cores::BootPlan {
        backend,
        roots,
        permission_maps,
        entries,
    });
    cores::start_application_processors(bsp_index);
    // The boot's phases in TSC ticks, for the boot-time figures (docs/benchmarks.md).
    log::info!(
        "boot: phases (TSC ticks) checks={} digests={} tsc-rate={} ({}) stage2-tables={} partition-setup={} clear-channels={} start-cores={}",
        checked.wrapping_sub(entered),
        digested.wrapping_sub(checked),
        rated.wrapping_sub(digested),
        rate_source.describe(),
        tables_built.wrapping_sub(rated),
        partitions_set_up.wrapping_sub(tables_built),
        channels_cleared.wrapping_sub(partitions_set_up),
        tsc::read().wrapping_sub(channels_cleared)
    );
    cores::core_main(bsp_index)
}
