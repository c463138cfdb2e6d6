//! Partitions at run time: their state, their exit counters, and containment — stopping
//! one partition on all of its cores while every other partition runs on.

use crate::table::{MACHINE, PARTITION_COUNT};
use crate::virt::{CoreContext, ExitReason};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use tessera_abi::hypercall::PartitionState;

struct Runtime {
    state: AtomicU8,
    exits: [AtomicU64; ExitReason::COUNT],
    unassigned_ports: AtomicU64,
    dropped_ipis: AtomicU64,
    refused_ioapic_writes: AtomicU64,
}

impl Runtime {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(PartitionState::Starting as u8),
            exits: [const { AtomicU64::new(0) }; ExitReason::COUNT],
            unassigned_ports: AtomicU64::new(0),
            dropped_ipis: AtomicU64::new(0),
            refused_ioapic_writes: AtomicU64::new(0),
        }
    }
}

static RUNTIME: [Runtime; PARTITION_COUNT] = [const { Runtime::new() }; PARTITION_COUNT];

pub fn state(partition: usize) -> PartitionState {
    PartitionState::from_number(u64::from(RUNTIME[partition].state.load(Ordering::Acquire)))
        .unwrap_or(PartitionState::Faulted)
}

pub fn set_running(partition: usize) {
    let _ = RUNTIME[partition].state.compare_exchange(
        PartitionState::Starting as u8,
        PartitionState::Running as u8,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
}

/// Whether the partition has been told to stop (its cores leave the guest and park).
pub fn is_stopping(partition: usize) -> bool {
    state(partition).is_final()
}

pub fn count_exit(partition: usize, reason: ExitReason) {
    RUNTIME[partition].exits[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Every exit the partition has caused so far.
pub fn total_exits(partition: usize) -> u64 {
    RUNTIME[partition]
        .exits
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .sum()
}

pub fn count_unassigned_port(partition: usize) {
    RUNTIME[partition]
        .unassigned_ports
        .fetch_add(1, Ordering::Relaxed);
}

pub fn count_refused_ioapic_write(partition: usize) {
    RUNTIME[partition]
        .refused_ioapic_writes
        .fetch_add(1, Ordering::Relaxed);
}

pub fn count_dropped_ipis(partition: usize, count: u32) {
    RUNTIME[partition]
        .dropped_ipis
        .fetch_add(u64::from(count), Ordering::Relaxed);
}

/// A fault the hypervisor contains, for the log.
pub struct Containment {
    /// Stable short name of the reason (`npf`, `triple-fault`, …).
    pub reason: &'static str,
    /// The guest-physical address involved, if any.
    pub address: u64,
    pub detail: &'static str,
    pub rip: u64,
}

/// Stops the partition of `context` after a fault it caused. Only the first stop of a
/// partition is logged and acted on; later cores just park.
pub fn contain(context: &CoreContext, containment: Containment) {
    let policy = match context.partition.on_fault {
        tessera_abi::table::FaultPolicy::Halt => "halted",
        // Restarting needs the image reloaded and memory scrubbed: a later issue. Until then
        // a restart policy halts too, and says so.
        tessera_abi::table::FaultPolicy::Restart => "halted (restart not implemented yet)",
    };
    if transition(context.partition_index, PartitionState::Faulted) {
        log::info!(
            "contained: partition={} core={} reason={} address={:#x} access={} rip={:#x}; {}",
            context.partition.name,
            context.apic_id,
            containment.reason,
            containment.address,
            containment.detail,
            containment.rip,
            policy
        );
        signal_other_cores(context);
    }
}

/// The partition asked to stop (hypercall StopSelf).
pub fn stop_by_request(context: &CoreContext, status: u64) {
    if transition(context.partition_index, PartitionState::Stopped) {
        log::info!(
            "stopped: partition={} status={} core={}",
            context.partition.name,
            status,
            context.apic_id
        );
        signal_other_cores(context);
    }
}

fn transition(partition: usize, to: PartitionState) -> bool {
    let runtime = &RUNTIME[partition];
    let mut current = runtime.state.load(Ordering::Acquire);
    loop {
        let state =
            PartitionState::from_number(u64::from(current)).unwrap_or(PartitionState::Faulted);
        if state.is_final() {
            return false;
        }
        match runtime
            .state
            .compare_exchange(current, to as u8, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// Brings the partition's other cores out of the guest: each takes an NMI exit, sees the
/// final state and parks.
fn signal_other_cores(context: &CoreContext) {
    for &apic_id in context.partition.cpus {
        if apic_id != context.apic_id {
            crate::smp::signal(apic_id, None);
        }
    }
}

/// Prints every partition's state and exit counters (at power-off).
pub fn print_counters() {
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        let runtime = &RUNTIME[index];
        let mut line = heapless::String::<512>::new();
        let _ = core::fmt::write(
            &mut line,
            format_args!(
                "exits: partition={} state={:?}",
                partition.name,
                state(index)
            ),
        );
        let mut total = 0;
        for reason in ExitReason::ALL {
            let count = runtime.exits[reason as usize].load(Ordering::Relaxed);
            total += count;
            if count != 0 {
                let _ = core::fmt::write(&mut line, format_args!(" {}={}", reason.name(), count));
            }
        }
        let _ = core::fmt::write(
            &mut line,
            format_args!(
                " total={} unassigned-port-accesses={} dropped-ipis={} refused-ioapic-writes={}",
                total,
                runtime.unassigned_ports.load(Ordering::Relaxed),
                runtime.dropped_ipis.load(Ordering::Relaxed),
                runtime.refused_ioapic_writes.load(Ordering::Relaxed)
            ),
        );
        log::info!("{}", line);
    }
}

/// A partition that could not be started (its image failed to load).
pub fn mark_failed(partition: usize) {
    transition(partition, PartitionState::Faulted);
}
