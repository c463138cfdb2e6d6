//! Each partition's virtual PCI bus (docs/pci-iommu.md, "The virtual PCI bus"): the
//! functions the table gives it, discovered and quiesced at boot, served through
//! configuration mechanism #1 (0xCF8/0xCFC–0xCFF, trapped for partitions that own
//! functions) and through the virtual ECAM window (one bus at the platform's ECAM base, in
//! no stage-2 table, so every access faults and comes through the MMIO decoder). The
//! partition sees a virtual host bridge at 00:00.0, its own functions at the table's
//! virtual addresses and all-ones everywhere else. What a guest may read and write is
//! `tessera_policy::pci::function`; this module moves bytes between it, the guest and
//! mechanism #1.

use super::mmio::{self, TrapDetails};
use super::{CoreContext, Flow, PartitionControl};
use crate::arch::pci::Conf1Function;
use crate::table::{PartitionIndex, MACHINE, PARTITION_COUNT};
use crate::virt::VirtualCpu;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use tessera_abi::table::{Bdf, Partition, PciFunction};
use tessera_policy::mmio_decode::MmioAccess;
use tessera_policy::pci::address::{
    decode_conf1, decode_ecam, CONF1_ADDRESS_PORT, CONF1_DATA_PORT,
};
use tessera_policy::pci::function::{DiscoveryError, VirtualFunction};
use tessera_policy::pci::header;

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

/// The virtual ECAM window covers one bus: 1 MiB (PCIe Base 4.0 §7.2.2).
const VIRTUAL_ECAM_BYTES: u64 = 1 << 20;

/// One passed-through function's state: its virtual configuration space and counters.
struct FunctionState {
    function: Mutex<Option<VirtualFunction>>,
    /// Guest writes dropped by the filter (outside the whitelist).
    dropped_writes: AtomicU64,
    /// MSI messages refused by the checks.
    refused_messages: AtomicU64,
}

impl FunctionState {
    const fn new() -> Self {
        Self {
            function: Mutex::new(None),
            dropped_writes: AtomicU64::new(0),
            refused_messages: AtomicU64::new(0),
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

/// Discovers, checks and quiesces every function the table passes through (bootstrap
/// core, before any partition runs). Logs each function and BAR found.
pub fn discover() -> Result<(), Refusal> {
    for (partition_index, partition) in MACHINE.partitions.iter().enumerate() {
        for (slot, function) in partition.pci_functions.iter().enumerate() {
            let mut space = Conf1Function(function.physical);
            let discovered = VirtualFunction::discover(
                &mut space,
                function.bar_windows,
                partition.ports,
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
            let id = tessera_policy::pci::function::ConfigSpace::read(&mut space, 0);
            log::info!(
                "pci: partition={} device={} function={} id={:04x}:{:04x} at virtual {} capabilities={}; quiesced",
                partition.name,
                function.name,
                ShowBdf(function.physical),
                id & 0xffff,
                id >> 16,
                ShowBdf(function.virtual_address),
                discovered.capabilities().kept().len()
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
/// still running for its previous life (docs/pci-iommu.md, "Reset"; no FLR yet).
pub fn quiesce_partition(partition_index: PartitionIndex) {
    let partition = partition_index.partition();
    let bus = &BUSES[partition_index.0];
    *bus.address.lock() = 0;
    for (slot, function) in partition.pci_functions.iter().enumerate() {
        let mut state = bus.functions[slot].function.lock();
        match VirtualFunction::discover(
            &mut Conf1Function(function.physical),
            function.bar_windows,
            partition.ports,
            function.interrupt,
            |_| {},
        ) {
            Ok(fresh) => *state = Some(fresh),
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
    let Some(slot) = context
        .partition
        .pci_functions
        .iter()
        .position(|function| function.virtual_address == address)
    else {
        return all_ones(size);
    };
    let function = &context.partition.pci_functions[slot];
    match bus.functions[slot].function.lock().as_ref() {
        Some(virtual_function) => {
            virtual_function.read(&mut Conf1Function(function.physical), offset, size)
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
    let slot = context
        .partition
        .pci_functions
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
        Some(virtual_function) => virtual_function.write(
            &mut Conf1Function(function.physical),
            offset,
            size,
            value,
            context.partition.cpus,
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
        }
    }
}
