//! Each partition's virtual PCI bus (docs/pci-iommu.md, "The virtual PCI bus"): the
//! functions the table gives it, discovered and quiesced at boot, served through
//! configuration mechanism #1 (0xCF8/0xCFC–0xCFF, trapped for partitions that own
//! functions) and through the virtual ECAM window (one bus at the platform's ECAM base, in
//! no stage-2 table, so every access faults and comes through the MMIO decoder). The
//! partition sees a virtual host bridge at 00:00.0, its own functions at the table's
//! virtual addresses and all-ones everywhere else. What a guest may read and write is
//! `tessera_policy::pci::function`; this module moves bytes between it, the guest and
//! mechanism #1.
//!
//! MSI-X: the 4 KiB pages that hold a function's MSI-X table are taken out of its
//! partition's stage-2 tables (`runtime::memory`), so table accesses fault and come here:
//! entries are shadowed and reach the device only through `tessera_policy::pci::msix`
//! (masked, or a checked message in the hypervisor's encoding); the PBA is read-only;
//! whatever else the device keeps in those pages is forwarded access by access.

use super::mmio::{self, TrapDetails};
use super::{CoreContext, Flow, PartitionControl};
use crate::arch;
use crate::arch::iommu::FunctionView;
use crate::arch::pci::{config_space, FunctionConfig};
use crate::table::{PartitionIndex, MACHINE, PARTITION_COUNT};
use crate::virt::VirtualCpu;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;
use tessera_abi::table::{Bdf, Partition, PciFunction, PciInterrupt, Range, StandbyRole};
use tessera_policy::mmio_decode::MmioAccess;
use tessera_policy::pci::address::{
    decode_conf1, decode_ecam, CONF1_ADDRESS_PORT, CONF1_DATA_PORT,
};
use tessera_policy::pci::function::{ConfigSpace, DiscoveryError, MsixTrap, VirtualFunction};
use tessera_policy::pci::header;
use tessera_policy::pci::msix::{self, MsixEntry, MsixLayoutError, TrappedAccess};
use tessera_policy::pci::reset::{self, ResetKind};
use tessera_policy::pci::topology::{self, Bus0Bridges, TopologyError};

/// The most functions one partition owns (sizes the static state).
const MAX_FUNCTIONS: usize = {
    let mut most = 1;
    let mut index = 0;
    while index < PARTITION_COUNT {
        let count = MACHINE.partitions[index].pci_functions.len();
        if count > most {
            most = count;
        }
        index += 1;
    }
    most
};

/// The most MSI-X entries the table grants one function (sizes the shadow tables).
const MAX_MSIX_ENTRIES: usize = {
    let mut most = 1;
    let mut index = 0;
    while index < PARTITION_COUNT {
        let functions = MACHINE.partitions[index].pci_functions;
        let mut slot = 0;
        while slot < functions.len() {
            if let PciInterrupt::Msix { vectors } = functions[slot].interrupt {
                if vectors as usize > most {
                    most = vectors as usize;
                }
            }
            slot += 1;
        }
        index += 1;
    }
    most
};

/// Command register: Memory Space Enable (PCI 3.0 §6.2.2).
const MEMORY_SPACE: u32 = 1 << 1;

/// The virtual ECAM window covers one bus: 1 MiB (PCIe Base 4.0 §7.2.2).
const VIRTUAL_ECAM_BYTES: u64 = 1 << 20;

/// One passed-through function's state: its virtual configuration space and counters.
struct FunctionState {
    function: Mutex<Option<VirtualFunction>>,
    /// Guest writes dropped by the filter (outside the whitelist).
    dropped_writes: AtomicU64,
    /// MSI and MSI-X messages refused by the checks.
    refused_messages: AtomicU64,
    /// The guest's MSI-X table (the entries the table grants; the rest read as after reset).
    msix: Mutex<[MsixEntry; MAX_MSIX_ENTRIES]>,
    /// Guest accesses to trapped MSI-X table pages.
    msix_accesses: AtomicU64,
}

impl FunctionState {
    const fn new() -> Self {
        Self {
            function: Mutex::new(None),
            dropped_writes: AtomicU64::new(0),
            refused_messages: AtomicU64::new(0),
            msix: Mutex::new([MsixEntry::RESET; MAX_MSIX_ENTRIES]),
            msix_accesses: AtomicU64::new(0),
        }
    }
}

/// Per partition: the 0xCF8 register as its cores last wrote it (shared by its cores, as
/// the one register of a real host bridge is) and its functions, in table order.
struct Bus {
    address: Mutex<u32>,
    /// Writes to the virtual host bridge and to empty slots, dropped.
    dropped_writes: AtomicU64,
    functions: [FunctionState; MAX_FUNCTIONS],
}

static BUSES: [Bus; PARTITION_COUNT] = [const {
    Bus {
        address: Mutex::new(0),
        dropped_writes: AtomicU64::new(0),
        functions: [const { FunctionState::new() }; MAX_FUNCTIONS],
    }
}; PARTITION_COUNT];

/// Per partition, whether it holds the functions of its table list now: from the table at
/// boot (a table standby's list is its primary's functions, which it does not hold), then
/// moved by [`hand_over_functions`] at each hot-standby takeover. A partition that does
/// not hold them still has its virtual bus (the host bridge), with nothing on it.
static HOLDS: [AtomicBool; PARTITION_COUNT] = {
    let mut holds = [const { AtomicBool::new(false) }; PARTITION_COUNT];
    let mut index = 0;
    while index < PARTITION_COUNT {
        holds[index] = AtomicBool::new(crate::table::holds_pci_functions_at_boot(
            &MACHINE.partitions[index],
        ));
        index += 1;
    }
    holds
};

/// The functions partition `index` holds now: its table list, or none.
fn held_functions(index: PartitionIndex) -> &'static [PciFunction] {
    if HOLDS[index.0].load(Ordering::Acquire) {
        index.partition().pci_functions
    } else {
        &[]
    }
}

/// The I/O ports a partition's functions' I/O BARs must lie in: its own, or for a table
/// standby its primary's (the ports move with the functions).
fn bar_ports(partition: &Partition) -> &'static [Range] {
    match partition.health.standby {
        StandbyRole::Standby { primary, .. } => MACHINE.partitions[usize::from(primary)].ports,
        _ => partition.ports,
    }
}

/// The function in slot `slot` of partition `index`'s list, as the IOMMU sees that
/// partition's view of it.
fn view(index: PartitionIndex, slot: usize, function: &PciFunction) -> FunctionView {
    FunctionView {
        physical: function.physical,
        ordinal: crate::table::pci_function_ordinal(index, slot),
        dma_confined: function.dma_confined,
    }
}

/// At a hot-standby takeover, on the taking partition's boot core with every core of both
/// members out of its guest: the functions `from` held become `to`'s. Each is quiesced
/// again (decode, bus mastering and its interrupts off; `to`'s virtual state fresh, as at
/// a restart), then moved to `to`'s DMA domain and interrupt remapping entries. The pair
/// lists the same functions in the same order (a standby's list is its primary's). Returns
/// how many moved; a function the IOMMU could not move is logged and stays invisible to
/// both (its entry still names `from`'s domain, whose partition is stopped).
pub fn hand_over_functions(from: PartitionIndex, to: PartitionIndex) -> usize {
    if !HOLDS[from.0].swap(false, Ordering::AcqRel) {
        return 0;
    }
    HOLDS[to.0].store(true, Ordering::Release);
    quiesce_partition(to);
    let mut moved = 0;
    let pairs = from
        .partition()
        .pci_functions
        .iter()
        .zip(to.partition().pci_functions)
        .enumerate();
    for (slot, (old, new)) in pairs {
        match arch::iommu::move_function(view(from, slot, old), from.0, view(to, slot, new), to.0) {
            Ok(_) => moved += 1,
            Err(error) => {
                *BUSES[to.0].functions[slot].function.lock() = None;
                log::info!(
                    "takeover: partition={} device={} function={} not moved: {:?}",
                    to.partition().name,
                    new.name,
                    ShowBdf(new.physical),
                    error
                );
            }
        }
    }
    moved
}

/// The partition that holds the function at `physical` now, and the ordinal of its view
/// of it (`table::pci_function_ordinal`).
pub fn holder_of(physical: Bdf) -> Option<(PartitionIndex, usize)> {
    (0..PARTITION_COUNT).map(PartitionIndex).find_map(|index| {
        held_functions(index)
            .iter()
            .position(|function| function.physical == physical)
            .map(|slot| (index, crate::table::pci_function_ordinal(index, slot)))
    })
}

/// Whether the 4 KiB page at `page` holds an MSI-X table of a function partition `index`
/// holds (such pages stay out of its stage-2 tables).
pub fn is_msix_page(index: PartitionIndex, page: u64) -> bool {
    let mut found = false;
    for_each_msix_page(index.0, |trapped| found |= trapped == page);
    found
}

/// Why the hardware disagrees with the table, for the boot refusal.
pub struct Refusal {
    pub partition: &'static str,
    pub function: &'static PciFunction,
    pub error: DiscoveryError,
}

/// A function address as `bb:dd.f`.
pub struct ShowBdf(pub Bdf);

impl core::fmt::Display for ShowBdf {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(
            formatter,
            "{:02x}:{:02x}.{}",
            self.0.bus(),
            self.0.device(),
            self.0.function()
        )
    }
}

/// Bus 0's bridges, read through mechanism #1 (docs/pci-iommu.md, "Discovery at boot").
fn bus0_bridges() -> Bus0Bridges {
    Bus0Bridges::walk(|address, offset| config_space(address).read(offset))
}

/// The upstream bridge whose Secondary Bus Reset resets `function` and nothing else: the
/// bridge on bus 0 above its bus, when the function is alone below it.
fn reset_bridge(bridges: &Bus0Bridges, function: Bdf) -> Option<(Bdf, FunctionConfig)> {
    let bridge = bridges.above(function.bus())?;
    topology::alone_below(&bridge, function, |address, offset| {
        config_space(address).read(offset)
    })
    .then(|| (bridge.address, config_space(bridge.address)))
}

/// Resets `function` as at boot: FLR, else D3hot→D0, else the Secondary Bus Reset of its
/// bridge when it is alone below it, else none (docs/pci-iommu.md, "Reset").
fn reset_function(
    bridges: &Bus0Bridges,
    partition: &Partition,
    function: &PciFunction,
) -> Result<ResetKind, reset::ResetError> {
    let mut bridge = reset_bridge(bridges, function.physical);
    let outcome = reset::reset_behind(
        &mut config_space(function.physical),
        bridge.as_mut().map(|(_, space)| space),
        arch::tsc::delay_microseconds,
    )?;
    if let (ResetKind::SecondaryBus, Some((bridge, _))) = (outcome.kind, bridge) {
        // Evidence that the bus reset reached the function: the header registers it
        // returned to their defaults, which the policy then wrote back.
        log::info!(
            "pci: partition={} device={} function={} secondary-bus reset through bridge {}: {} of 8 saved header registers changed, restored",
            partition.name,
            function.name,
            ShowBdf(function.physical),
            ShowBdf(bridge),
            outcome.changed_registers
        );
    }
    Ok(outcome.kind)
}

/// The partitions that hold their functions at boot, with each function (a table
/// standby's list is its primary's).
fn held_at_boot() -> impl Iterator<Item = (usize, &'static Partition, &'static PciFunction)> + Clone
{
    MACHINE
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, partition)| crate::table::holds_pci_functions_at_boot(partition))
        .flat_map(|(index, partition)| {
            partition
                .pci_functions
                .iter()
                .map(move |function| (index, partition, function))
        })
}

/// Each held function's bridge against `platform.pci-bridges`, and functions that share a
/// requester ID behind one conventional or PCIe-to-PCI bridge with one owner.
fn check_topology(bridges: &Bus0Bridges) -> Result<(), Refusal> {
    for (_, partition, function) in held_at_boot() {
        let found = bridges
            .check_function(MACHINE.pci_bridges, function.physical)
            .map_err(|error| Refusal {
                partition: partition.name,
                function,
                error: DiscoveryError::Topology(error),
            })?;
        if let Some(bridge) = found {
            log::info!(
                "pci: partition={} device={} function={} bridge={} kind={} buses={:02x}-{:02x}",
                partition.name,
                function.name,
                ShowBdf(function.physical),
                ShowBdf(bridge.address),
                bridge.kind_name(),
                bridge.secondary,
                bridge.subordinate
            );
        }
    }
    let owners = held_at_boot().map(|(index, _, function)| (function.physical, index));
    if let Some((later, other, bridge)) = bridges.first_split(owners) {
        if let Some((_, partition, function)) =
            held_at_boot().find(|(_, _, function)| function.physical == later)
        {
            return Err(Refusal {
                partition: partition.name,
                function,
                error: DiscoveryError::Topology(TopologyError::SharedRequester { other, bridge }),
            });
        }
    }
    Ok(())
}

/// Discovers, checks and quiesces every function the table passes through (bootstrap
/// core, before any partition runs). Logs each function and BAR found.
pub fn discover() -> Result<(), Refusal> {
    let bridges = bus0_bridges();
    check_topology(&bridges)?;
    for (partition_index, partition) in MACHINE.partitions.iter().enumerate() {
        for (slot, function) in partition.pci_functions.iter().enumerate() {
            let mut space = config_space(function.physical);
            // Absent functions are refused by the discovery below, not waited for; a table
            // standby's functions are its primary's, reset under the primary's entry.
            let reset = if space.read(0) & 0xffff == 0xffff
                || !crate::table::holds_pci_functions_at_boot(partition)
            {
                ResetKind::None
            } else {
                reset_function(&bridges, partition, function).map_err(|error| Refusal {
                    partition: partition.name,
                    function,
                    error: DiscoveryError::Reset(error),
                })?
            };
            log::info!(
                "pci: partition={} device={} function={} reset={}",
                partition.name,
                function.name,
                ShowBdf(function.physical),
                reset.name()
            );
            let discovered = VirtualFunction::discover(
                &mut space,
                function.bar_windows,
                bar_ports(partition),
                function.interrupt,
                |bar| {
                    log::info!(
                        "pci: partition={} device={} function={} bar{}={:#x} size={:#x} {:?}",
                        partition.name,
                        function.name,
                        ShowBdf(function.physical),
                        bar.index,
                        bar.base,
                        bar.size,
                        bar.kind
                    )
                },
            )
            .map_err(|error| Refusal {
                partition: partition.name,
                function,
                error,
            })?;
            if let Some(trap) = discovered.msix() {
                if !tessera_policy::host_page_tables::lies_in_mmio_window(
                    trap.pages,
                    trap.pages_bytes,
                ) {
                    return Err(Refusal {
                        partition: partition.name,
                        function,
                        error: DiscoveryError::MsixTable(MsixLayoutError::Unreachable {
                            base: trap.table_bar_base,
                        }),
                    });
                }
                mask_hardware_table(function, &trap);
                log::info!(
                    "pci: partition={} device={} function={} msix entries={} granted={} table=bar{}+{:#x} pba=bar{}+{:#x} trapped={:#x}+{:#x}",
                    partition.name,
                    function.name,
                    ShowBdf(function.physical),
                    trap.layout.entries,
                    trap.granted,
                    trap.layout.table_bar,
                    trap.layout.table_offset,
                    trap.layout.pba_bar,
                    trap.layout.pba_offset,
                    trap.pages,
                    trap.pages_bytes
                );
            }
            let id = space.read(0);
            log::info!(
                "pci: partition={} device={} function={} id={:04x}:{:04x} at virtual {} capabilities={} of {} extended={} of {}; quiesced",
                partition.name,
                function.name,
                ShowBdf(function.physical),
                id & 0xffff,
                id >> 16,
                ShowBdf(function.virtual_address),
                discovered.capabilities().kept().len(),
                discovered.capabilities().walked,
                discovered.extended_capabilities().kept().len(),
                discovered.extended_capabilities().walked
            );
            *BUSES[partition_index].functions[slot].function.lock() = Some(discovered);
        }
    }
    Ok(())
}

/// Before a partition restarts (its cores parked): each of its functions quiesced again —
/// decode, bus mastering, MSI and MSI-X off, INTx disabled — and its virtual state (BARs
/// as the guest wrote them, the interrupt line, the MSI shadow, the 0xCF8 register)
/// back to what the partition saw at boot, so a restarted guest never meets a function
/// still running for its previous life; before that, the function is reset as at boot
/// (FLR, else D3hot→D0, else a Secondary Bus Reset, else none: docs/pci-iommu.md,
/// "Reset").
pub fn quiesce_partition(partition_index: PartitionIndex) {
    let partition = partition_index.partition();
    let bus = &BUSES[partition_index.0];
    *bus.address.lock() = 0;
    // A partition that does not hold its functions (a waiting standby) must not touch
    // them: its partner may be driving them.
    let bridges = bus0_bridges();
    for (slot, function) in held_functions(partition_index).iter().enumerate() {
        let mut state = bus.functions[slot].function.lock();
        // The same reset as at boot (docs/pci-iommu.md, "Reset").
        let mut space = config_space(function.physical);
        let reset = reset_function(&bridges, partition, function);
        log::info!(
            "pci: partition={} device={} function={} reset at restart: {:?}",
            partition.name,
            function.name,
            ShowBdf(function.physical),
            reset.map(ResetKind::name)
        );
        match VirtualFunction::discover(
            &mut space,
            function.bar_windows,
            bar_ports(partition),
            function.interrupt,
            |_| {},
        ) {
            Ok(fresh) => {
                if let Some(trap) = fresh.msix() {
                    mask_hardware_table(function, &trap);
                }
                *bus.functions[slot].msix.lock() = [MsixEntry::RESET; MAX_MSIX_ENTRIES];
                *state = Some(fresh)
            }
            Err(error) => {
                // The function no longer matches the table: it stays invisible to the
                // partition (all-ones) rather than half-configured.
                *state = None;
                log::info!(
                    "pci: partition={} device={} function={} not restored at restart: {:?}",
                    partition.name,
                    function.name,
                    ShowBdf(function.physical),
                    error
                );
            }
        }
    }
}

/// Masks every entry of the function's MSI-X table in hardware (the quiesced function has
/// MSI-X off and bus mastering off; memory decoding is turned on only while the hypervisor
/// writes): from here on each hardware entry is masked or holds a checked message, so the
/// guest may enable MSI-X (`tessera_policy::pci::function`).
fn mask_hardware_table(function: &PciFunction, trap: &MsixTrap) {
    let mut space = config_space(function.physical);
    // The low half only: writing the status half back would clear its W1C bits.
    let command = space.read(header::COMMAND) & 0xffff;
    space.write(header::COMMAND, command | MEMORY_SPACE);
    for entry in 0..trap.layout.entries {
        arch::pci::bar_write(
            trap.entry_address(entry) + msix::VECTOR_CONTROL,
            4,
            u64::from(msix::VECTOR_MASKED),
        );
    }
    space.write(header::COMMAND, command);
}

/// Calls `take_out` with every 4 KiB page of partition `partition_index`'s MSI-X tables
/// (guest-physical = host-physical: BAR windows are identity-mapped), to be left out of its
/// stage-2 tables. After [`discover`].
pub fn for_each_msix_page(partition_index: usize, mut take_out: impl FnMut(u64)) {
    let bus = &BUSES[partition_index];
    for slot in 0..MACHINE.partitions[partition_index].pci_functions.len() {
        let trap = bus.functions[slot]
            .function
            .lock()
            .as_ref()
            .and_then(VirtualFunction::msix);
        if let Some(trap) = trap {
            let mut page = trap.pages;
            while page < trap.pages + trap.pages_bytes {
                take_out(page);
                page += msix::PAGE_BYTES;
            }
        }
    }
}

/// The function slot and MSI-X table whose trapped pages hold `guest_physical`.
fn msix_at(context: &CoreContext, guest_physical: u64) -> Option<(usize, MsixTrap)> {
    let bus = &BUSES[context.partition_index.0];
    (0..held_functions(context.partition_index).len()).find_map(|slot| {
        bus.functions[slot]
            .function
            .lock()
            .as_ref()
            .and_then(VirtualFunction::msix)
            .filter(|trap| trap.covers(guest_physical))
            .map(|trap| (slot, trap))
    })
}

/// Whether `guest_physical` lies in a trapped MSI-X table page of the partition.
pub fn covers_msix(context: &CoreContext, guest_physical: u64) -> bool {
    has_bus(context.partition) && msix_at(context, guest_physical).is_some()
}

/// Emulates the MOV that touched a trapped MSI-X table page at `guest_physical`.
pub fn handle_msix(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
    guest_physical: u64,
) -> Flow {
    let Some((slot, trap)) = msix_at(context, guest_physical) else {
        return Flow::Resume;
    };
    let (instruction, _) = match mmio::decode_trapped(
        vcpu,
        context,
        control,
        guest_physical,
        &TrapDetails {
            undecodable: "MSI-X table access by an instruction the hypervisor cannot decode",
            begins_elsewhere: "MSI-X table access that begins outside the faulting page",
            crosses_page: "MSI-X table access that runs past its page",
        },
    ) {
        Ok(decoded) => decoded,
        Err(flow) => return flow,
    };
    let state = &BUSES[context.partition_index.0].functions[slot];
    state.msix_accesses.fetch_add(1, Ordering::Relaxed);
    let function = &context.partition.pci_functions[slot];
    let access = trap.layout.classify(
        trap.layout.table_bar,
        guest_physical - trap.table_bar_base,
        instruction.size,
    );
    // Entries the table grants are shadowed; the others read as after reset.
    let granted = |entry: u16| entry < trap.granted && usize::from(entry) < MAX_MSIX_ENTRIES;
    match instruction.access {
        MmioAccess::Load { register, .. } => {
            let value = match access {
                TrappedAccess::Entry { entry, field } if granted(entry) => {
                    u64::from(state.msix.lock()[usize::from(entry)].read(field))
                }
                TrappedAccess::Entry { field, .. } => u64::from(MsixEntry::RESET.read(field)),
                TrappedAccess::Pba | TrappedAccess::Other => {
                    arch::pci::bar_read(guest_physical, instruction.size).unwrap_or(u64::MAX)
                }
                TrappedAccess::Malformed => u64::MAX,
            };
            let old = vcpu.register_number(register);
            if let Some(new) = instruction.load_result(old, value) {
                vcpu.set_register_number(register, new);
            }
        }
        MmioAccess::Store { .. } => {
            let value = instruction
                .store_value(|register| vcpu.register_number(register))
                .unwrap_or(0);
            match access {
                TrappedAccess::Entry { entry, field } if granted(entry) => {
                    let mut table = state.msix.lock();
                    let shadow = &mut table[usize::from(entry)];
                    shadow.write(field, value as u32);
                    let (update, refusal) = msix::hardware_update(
                        entry,
                        shadow,
                        trap.granted,
                        context.partition.cpus,
                        // Through the IOMMU's remapping entry where a unit remaps
                        // the function's interrupts, as for MSI.
                        &mut crate::arch::iommu::FunctionRoute(view(
                            context.partition_index,
                            slot,
                            function,
                        )),
                    );
                    for &(offset, word) in update.writes() {
                        arch::pci::bar_write(
                            trap.entry_address(entry) + offset,
                            4,
                            u64::from(word),
                        );
                    }
                    drop(table);
                    if let Some(refusal) = refusal {
                        state.refused_messages.fetch_add(1, Ordering::Relaxed);
                        if control.may_log(context) {
                            log::info!(
                                "refused: partition={} core={} device={} MSI-X {:?}",
                                context.partition.name,
                                context.apic_id,
                                function.name,
                                refusal
                            );
                        }
                    }
                }
                TrappedAccess::Other => {
                    arch::pci::bar_write(guest_physical, instruction.size, value);
                }
                // Entries beyond the grant, the read-only PBA, malformed accesses.
                TrappedAccess::Entry { .. } | TrappedAccess::Pba | TrappedAccess::Malformed => {
                    state.dropped_writes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    vcpu.set_rip(vcpu.rip() + u64::from(instruction.length));
    Flow::Resume
}

/// Whether the partition has a virtual bus (owns at least one function).
fn has_bus(partition: &Partition) -> bool {
    !partition.pci_functions.is_empty()
}

/// A read of `size` bytes at `offset` of virtual function `address`.
fn read(context: &CoreContext, address: Bdf, offset: u16, size: u8) -> u32 {
    if address == Bdf::new(0, 0, 0) {
        return header::extract(header::host_bridge_read(offset & !3), offset, size);
    }
    let bus = &BUSES[context.partition_index.0];
    let Some(slot) = held_functions(context.partition_index)
        .iter()
        .position(|function| function.virtual_address == address)
    else {
        return all_ones(size);
    };
    let function = &context.partition.pci_functions[slot];
    match bus.functions[slot].function.lock().as_ref() {
        Some(virtual_function) => {
            virtual_function.read(&mut config_space(function.physical), offset, size)
        }
        None => all_ones(size),
    }
}

/// A write of `size` bytes at `offset` of virtual function `address`.
fn write(
    context: &CoreContext,
    control: &impl PartitionControl,
    address: Bdf,
    offset: u16,
    size: u8,
    value: u32,
) {
    let bus = &BUSES[context.partition_index.0];
    let slot = held_functions(context.partition_index)
        .iter()
        .position(|function| function.virtual_address == address);
    let Some(slot) = slot else {
        // The host bridge and empty slots: every write dropped.
        bus.dropped_writes.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let function = &context.partition.pci_functions[slot];
    let state = &bus.functions[slot];
    let effect = match state.function.lock().as_mut() {
        Some(virtual_function) => virtual_function.write_routed(
            &mut config_space(function.physical),
            offset,
            size,
            value,
            context.partition.cpus,
            // A checked MSI message reaches the function through the IOMMU's interrupt
            // remapping entries where a unit remaps its interrupts.
            &mut crate::arch::iommu::FunctionRoute(view(context.partition_index, slot, function)),
        ),
        None => return,
    };
    if effect.dropped {
        state.dropped_writes.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(refusal) = effect.refused_message {
        state.refused_messages.fetch_add(1, Ordering::Relaxed);
        if control.may_log(context) {
            log::info!(
                "refused: partition={} core={} device={} MSI message {:?}",
                context.partition.name,
                context.apic_id,
                function.name,
                refusal
            );
        }
    }
}

fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// A port access to 0xCF8 (dword) or 0xCFC–0xCFF by a partition that owns functions:
/// `Some(value read)` (or `Some(0)` for a write) when served here, `None` when the port is
/// not the configuration mechanism's or the partition has no virtual bus.
pub fn port(
    context: &CoreContext,
    control: &impl PartitionControl,
    port: u16,
    size: u8,
    input: bool,
    value: u32,
) -> Option<u32> {
    // `pci-config = "ecam-only"`: the ports are unassigned, as for a partition without a
    // bus (all-ones, writes dropped), so the guest finds no mechanism #1.
    if !has_bus(context.partition) || !context.partition.pci_conf1 {
        return None;
    }
    let bus = &BUSES[context.partition_index.0];
    if port == CONF1_ADDRESS_PORT && size == 4 {
        let mut address = bus.address.lock();
        if input {
            return Some(*address);
        }
        // Bits 30:24 are reserved (read-only 0), bits 1:0 too (§3.2.2.3.2).
        *address = value & 0x80ff_fffc;
        return Some(0);
    }
    if !(CONF1_DATA_PORT..CONF1_DATA_PORT + 4).contains(&port) {
        return None;
    }
    let address = *bus.address.lock();
    let Ok(access) = decode_conf1(address, port, size) else {
        // Disabled or misaligned: nothing behind the data port.
        return Some(if input { all_ones(size) } else { 0 });
    };
    // The virtual bus is bus 0 only.
    if access.function.bus() != 0 {
        return Some(if input { all_ones(size) } else { 0 });
    }
    if input {
        Some(read(context, access.function, access.offset, access.size))
    } else {
        write(
            context,
            control,
            access.function,
            access.offset,
            access.size,
            value,
        );
        Some(0)
    }
}

/// Whether `guest_physical` lies in the partition's virtual ECAM window.
pub fn covers_ecam(context: &CoreContext, guest_physical: u64) -> bool {
    has_bus(context.partition)
        && MACHINE
            .ecam
            .is_some_and(|ecam| guest_physical.wrapping_sub(ecam.base) < VIRTUAL_ECAM_BYTES)
}

/// Emulates the MOV that touched the virtual ECAM window at `guest_physical`.
pub fn handle_ecam(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
    guest_physical: u64,
) -> Flow {
    let Some(ecam) = MACHINE.ecam else {
        return Flow::Resume;
    };
    let (instruction, _) = match mmio::decode_trapped(
        vcpu,
        context,
        control,
        guest_physical,
        &TrapDetails {
            undecodable: "ECAM access by an instruction the hypervisor cannot decode",
            begins_elsewhere: "ECAM access that begins outside the faulting page",
            crosses_page: "ECAM access that runs past its page",
        },
    ) {
        Ok(decoded) => decoded,
        Err(flow) => return flow,
    };
    let access = decode_ecam(ecam.base, 1, guest_physical, instruction.size);
    match instruction.access {
        MmioAccess::Load { register, .. } => {
            let value = match access {
                Ok(access) => read(context, access.function, access.offset, access.size),
                // A wider or misaligned access reads as nothing there.
                Err(_) => u32::MAX,
            };
            let value = if instruction.size == 8 {
                u64::MAX
            } else {
                u64::from(value)
            };
            let old = vcpu.register_number(register);
            if let Some(new) = instruction.load_result(old, value) {
                vcpu.set_register_number(register, new);
            }
        }
        MmioAccess::Store { .. } => {
            let value = instruction
                .store_value(|register| vcpu.register_number(register))
                .unwrap_or(0) as u32;
            if let Ok(access) = access {
                write(
                    context,
                    control,
                    access.function,
                    access.offset,
                    access.size,
                    value,
                );
            }
        }
    }
    vcpu.set_rip(vcpu.rip() + u64::from(instruction.length));
    Flow::Resume
}

/// One line per virtual bus and per passed-through function at power-off: the filter's
/// counters.
pub fn print_counters() {
    for (partition_index, partition) in MACHINE.partitions.iter().enumerate() {
        if has_bus(partition) {
            log::info!(
                "pci: partition={} bus dropped-config-writes={}",
                partition.name,
                BUSES[partition_index]
                    .dropped_writes
                    .load(Ordering::Relaxed)
            );
        }
        for (slot, function) in partition.pci_functions.iter().enumerate() {
            let state = &BUSES[partition_index].functions[slot];
            log::info!(
                "pci: partition={} device={} function={} dropped-config-writes={} refused-msi={}",
                partition.name,
                function.name,
                ShowBdf(function.physical),
                state.dropped_writes.load(Ordering::Relaxed),
                state.refused_messages.load(Ordering::Relaxed)
            );
            if matches!(function.interrupt, PciInterrupt::Msix { .. }) {
                log::info!(
                    "pci: partition={} device={} msix-table-accesses={}",
                    partition.name,
                    function.name,
                    state.msix_accesses.load(Ordering::Relaxed)
                );
            }
        }
    }
}
