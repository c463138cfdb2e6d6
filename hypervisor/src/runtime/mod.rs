//! The partition/core runtime, the top floor below the boot sequence: each core's run loop,
//! the partitions' states and counters, containment and restarts, loading partition memory,
//! power-off, the health monitor. It implements [`PartitionControl`], through which the exit handlers below
//! ask for what concerns a partition as a whole.

pub mod cores;
pub mod health;
pub mod memory;
pub mod partition;
pub mod power;

use crate::arch::tsc;
use crate::exits::{Containment, CoreContext, Counter, ExitReason, Message, PartitionControl};
use crate::table::{ApicId, PartitionIndex};
use crate::virt::StartState;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tessera_abi::hypercall::PartitionState;

/// The runtime as the exit handlers see it (a unit type: every call is static).
pub struct PartitionRuntime;

impl PartitionControl for PartitionRuntime {
    fn count_exit(&self, context: &CoreContext, reason: ExitReason) {
        partition::count_exit(context.partition_index, reason);
    }
    fn count(&self, context: &CoreContext, counter: Counter, amount: u64) {
        partition::count(context.partition_index, counter, amount);
    }
    fn total_exits(&self, context: &CoreContext) -> u64 {
        partition::total_exits(context.partition_index)
    }
    fn contain(&self, context: &CoreContext, containment: Containment) {
        partition::contain(context, containment);
    }
    fn stop_by_request(&self, context: &CoreContext, status: u64, reason: &'static str) {
        partition::stop_by_request(context, status, reason);
    }
    fn reset_by_request(&self, context: &CoreContext) {
        partition::reset_by_request(context);
    }
    fn send_message(&self, apic_id: ApicId, message: Message) {
        cores::signal(apic_id, Some(message));
    }
    fn partition_state(&self, partition: PartitionIndex) -> PartitionState {
        partition::state(partition)
    }
    fn guest_nmi_after_exit(&self, context: &CoreContext) -> bool {
        cores::guest_nmi_after_exit(context.core_index)
    }
    #[inline(always)]
    fn doorbell_allowed(&self, context: &CoreContext, channel: usize) -> bool {
        partition::doorbell_allowed(context.partition_index, channel)
    }
    #[inline(always)]
    fn holds_channel(&self, partition: PartitionIndex, channel: usize) -> bool {
        health::holds_channel(partition, channel)
    }
    fn may_log(&self, context: &CoreContext) -> bool {
        partition::may_log(context.partition_index)
    }
    fn power_off(&self, requested_by: &str) -> ! {
        power::power_off(requested_by)
    }
    fn declare_fatal(&self, context: &CoreContext, code: u64) -> bool {
        let report = health::Report {
            core: Some(context.apic_id),
            reason: "declared-fatal",
            address: code,
            detail: "guest code",
            rip: 0,
        };
        health::raise(
            context.partition_index,
            tessera_abi::table::HealthEvent::DeclaredFatal,
            &report,
        ) == tessera_abi::table::HealthAction::Log
    }
    fn heartbeat(&self, context: &CoreContext) -> u64 {
        health::heartbeat(context.partition_index)
    }
    fn health_log(&self, partition: PartitionIndex, selector: u64) -> Option<u64> {
        health::log_entry(partition, selector)
    }
    fn is_waiting_standby(&self, context: &CoreContext) -> bool {
        health::is_waiting_standby(context.partition_index)
    }
}

/// TSC value when the first guest instruction is about to run (for boot-time figures).
static FIRST_GUEST_ENTRY_TSC: AtomicU64 = AtomicU64::new(0);

/// TSC value at the hypervisor's first instruction of Rust code on the boot core.
static HYPERVISOR_ENTRY_TSC: AtomicU64 = AtomicU64::new(0);

/// Records when the hypervisor was entered, so the first guest entry can report the
/// hypervisor's own share of the boot (without the firmware and the boot loader before it).
pub fn record_hypervisor_entry(tsc: u64) {
    HYPERVISOR_ENTRY_TSC.store(tsc, Ordering::Relaxed);
}

/// Partitions that have entered their guest at boot (restarts not counted).
static PARTITIONS_ENTERED_AT_BOOT: AtomicUsize = AtomicUsize::new(0);

/// Counts one partition's first entry at boot; the last of the `loaded` partitions to enter
/// reports the boot of the whole machine (each partition loaded by its own core, so this is
/// not simply the first entry plus the others' loads).
fn note_boot_entry(loaded: usize) {
    if PARTITIONS_ENTERED_AT_BOOT.fetch_add(1, Ordering::AcqRel) + 1 == loaded {
        let entered = HYPERVISOR_ENTRY_TSC.load(Ordering::Relaxed);
        log::info!(
            "boot: every partition entered its guest {} TSC ticks after the hypervisor's entry",
            tsc::read().saturating_sub(entered)
        );
    }
}

/// Reports a vCPU (re)start, and records the first guest entry of the machine.
fn note_guest_entry(context: &CoreContext, start: StartState) {
    let entry = match start {
        StartState::Pvh { entry, .. } => entry,
        StartState::StartUp { vector } => u64::from(vector) << 12,
        StartState::Linux64 { entry, .. } => entry,
    };
    let now = tsc::read();
    let first = FIRST_GUEST_ENTRY_TSC
        .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if first {
        let entered = HYPERVISOR_ENTRY_TSC.load(Ordering::Relaxed);
        log::info!(
            "boot: first guest entry {} TSC ticks after the hypervisor's entry",
            now.saturating_sub(entered)
        );
    }
    // A start-up IPI is the guest's doing and can be repeated at will: rate-limited.
    if matches!(start, StartState::StartUp { .. }) && !partition::may_log(context.partition_index) {
        return;
    }
    log::info!(
        "started: partition={} core={} entry={:#x} tsc={}{}",
        context.partition.name,
        context.apic_id,
        entry,
        now,
        if first {
            " (first guest instruction)"
        } else {
            ""
        }
    );
}
