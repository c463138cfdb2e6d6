//! Partitions at run time: their state, their exit counters, and containment — stopping
//! one partition on all of its cores while every other partition runs on. What to do
//! about a fault is the health monitor's decision (`health`).

use super::{cores, health};
use crate::arch::{idle_pause, tsc};
use crate::exits::{Containment, CoreContext, Counter, ExitReason};
use crate::table::{ApicId, PartitionIndex, CHANNEL_COUNT, MACHINE, PARTITION_COUNT};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use tessera_abi::hypercall::PartitionState;
use tessera_abi::table::HealthEvent;

struct Runtime {
    state: AtomicU8,
    exits: [AtomicU64; ExitReason::COUNT],
    unassigned_ports: AtomicU64,
    dropped_ipis: AtomicU64,
    refused_ioapic_writes: AtomicU64,
    refused_user_hypercalls: AtomicU64,
    dropped_doorbells: AtomicU64,
    other_msr_writes: AtomicU64,
    /// Bumped by every restart request; each core compares it with the last it saw.
    generation: AtomicU32,
    /// Cores that have parked for the restart of the current generation.
    parked: AtomicU32,
    /// The generation whose restart the boot core has completed.
    released: AtomicU32,
    restarts: AtomicU32,
    /// Cores that have left the guest for good after the partition stopped.
    stopped_cores: AtomicU32,
    /// Set while the boot core holds the partition's other cores in the hypervisor (a
    /// takeover changes the permission map they share, see [`hold_other_cores`]).
    hold: AtomicBool,
    /// Cores that are being held.
    held: AtomicU32,
    /// The TSC at which the partition's log allowance is used up (see [`may_log`]).
    log_allowance_until: AtomicU64,
    suppressed_log_lines: AtomicU64,
}

impl Runtime {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(PartitionState::Starting as u8),
            exits: [const { AtomicU64::new(0) }; ExitReason::COUNT],
            unassigned_ports: AtomicU64::new(0),
            dropped_ipis: AtomicU64::new(0),
            refused_ioapic_writes: AtomicU64::new(0),
            refused_user_hypercalls: AtomicU64::new(0),
            dropped_doorbells: AtomicU64::new(0),
            other_msr_writes: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            parked: AtomicU32::new(0),
            released: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
            stopped_cores: AtomicU32::new(0),
            hold: AtomicBool::new(false),
            held: AtomicU32::new(0),
            log_allowance_until: AtomicU64::new(0),
            suppressed_log_lines: AtomicU64::new(0),
        }
    }
}

static RUNTIME: [Runtime; PARTITION_COUNT] = [const { Runtime::new() }; PARTITION_COUNT];

pub fn state(partition: PartitionIndex) -> PartitionState {
    PartitionState::from_number(u64::from(
        RUNTIME[partition.0].state.load(Ordering::Acquire),
    ))
    .unwrap_or(PartitionState::Faulted)
}

pub fn set_running(partition: PartitionIndex) {
    let _ = RUNTIME[partition.0].state.compare_exchange(
        PartitionState::Starting as u8,
        PartitionState::Running as u8,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
}

/// Whether the partition has been told to stop (its cores leave the guest and park).
pub fn is_stopping(partition: PartitionIndex) -> bool {
    state(partition).is_final()
}

pub fn count_exit(partition: PartitionIndex, reason: ExitReason) {
    RUNTIME[partition.0].exits[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Every exit the partition has caused so far.
pub fn total_exits(partition: PartitionIndex) -> u64 {
    RUNTIME[partition.0]
        .exits
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .sum()
}

pub fn count(partition: PartitionIndex, counter: Counter, amount: u64) {
    let runtime = &RUNTIME[partition.0];
    let slot = match counter {
        Counter::UnassignedPort => &runtime.unassigned_ports,
        Counter::DroppedIpi => &runtime.dropped_ipis,
        Counter::RefusedIoapicWrite => &runtime.refused_ioapic_writes,
        Counter::RefusedUserHypercall => &runtime.refused_user_hypercalls,
        Counter::DroppedDoorbell => &runtime.dropped_doorbells,
        Counter::OtherMsrWrite => &runtime.other_msr_writes,
    };
    slot.fetch_add(amount, Ordering::Relaxed);
}

/// Console lines a partition's own actions may cause in a burst, and per second after it.
/// The console is one polled UART under one lock (~87 µs per byte on hardware at 115200
/// baud), so an unbounded stream of refusal lines from one partition would delay every other
/// partition's containment and restart messages. Lines beyond the allowance are counted.
const LOG_BURST_LINES: u64 = 64;
const LOG_LINES_PER_SECOND: u64 = 32;

/// A leaky bucket over the TSC: each event moves the end of the allowance one interval
/// (a second / `per_second`) forward from at least now; the event is allowed while that end
/// stays within `burst` intervals of now.
fn within_rate(allowance_until: &AtomicU64, per_second: u64, burst: u64) -> bool {
    within_interval(allowance_until, rate_interval(per_second), burst)
}

/// TSC ticks per event at `per_second` events a second (at least 1).
fn rate_interval(per_second: u64) -> u64 {
    (tsc::khz().max(1) * 1000 / per_second.max(1)).max(1)
}

/// [`within_rate`] with its interval in TSC ticks (`burst` at least 1).
#[inline(always)]
fn within_interval(allowance_until: &AtomicU64, interval: u64, burst: u64) -> bool {
    within_allowance(
        allowance_until,
        interval,
        burst.saturating_sub(1) * interval,
    )
}

/// The leaky bucket of [`within_rate`] with its interval and its slack in TSC ticks, the
/// slack being (burst − 1) intervals: the event moves the end of the allowance to
/// `max(end, now) + interval` and is allowed while that stays within `burst` intervals of
/// now — that is, while the end before the event lies at most `slack` after now (for an
/// end in the past the new end is one interval ahead, always allowed). Compared in that
/// form, the doorbell's path (which keeps each channel's slack) needs no multiplication.
#[inline(always)]
fn within_allowance(allowance_until: &AtomicU64, interval: u64, slack: u64) -> bool {
    let now = tsc::read();
    let latest = now + slack;
    let mut until = allowance_until.load(Ordering::Acquire);
    loop {
        if until > latest {
            return false;
        }
        let next = until.max(now) + interval;
        match allowance_until.compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(actual) => until = actual,
        }
    }
}

/// Whether the partition may add one more line caused by its own actions (a refused write,
/// a start-up IPI); counts the line as suppressed if not.
pub fn may_log(partition: PartitionIndex) -> bool {
    let runtime = &RUNTIME[partition.0];
    let allowed = within_rate(
        &runtime.log_allowance_until,
        LOG_LINES_PER_SECOND,
        LOG_BURST_LINES,
    );
    if !allowed {
        runtime.suppressed_log_lines.fetch_add(1, Ordering::Relaxed);
    }
    allowed
}

/// Per channel and member: the end of the member's doorbell allowance (TSC).
static DOORBELL_ALLOWANCE: [[AtomicU64; PARTITION_COUNT]; CHANNEL_COUNT] =
    [const { [const { AtomicU64::new(0) }; PARTITION_COUNT] }; CHANNEL_COUNT];

/// Whether `partition` may ring `channel` once more: at most the channel's
/// `doorbell-budget` rings per second, with a burst of a tenth of a second's worth, so that
/// no member can storm its peers with interrupts.
///
/// On the doorbell fast path: inlined into the hypercall handler, and the channel's ring
/// interval (TSC ticks per allowed ring) is read, not divided out at every ring: the boot
/// computes it once the TSC rate is known, before any guest runs
/// ([`prepare_doorbell_budgets`]).
#[inline(always)]
pub fn doorbell_allowed(partition: PartitionIndex, channel: usize) -> bool {
    within_allowance(
        &DOORBELL_ALLOWANCE[channel][partition.0],
        DOORBELL_INTERVAL[channel].load(Ordering::Relaxed),
        DOORBELL_SLACK[channel].load(Ordering::Relaxed),
    )
}

/// Computes every channel's ring interval from its budget and the TSC rate. Called by the
/// boot core once it has determined the rate and before it starts any partition (the other
/// cores read the intervals only after they have taken the boot plan, which the boot core
/// publishes later with release ordering).
pub fn prepare_doorbell_budgets() {
    for (index, channel) in MACHINE.channels.iter().enumerate() {
        let budget = u64::from(channel.doorbell_rings_per_second);
        let interval = rate_interval(budget);
        // A burst of a tenth of a second's worth of rings, at least one.
        let burst = (budget / 10).max(1);
        DOORBELL_INTERVAL[index].store(interval, Ordering::Relaxed);
        DOORBELL_SLACK[index].store((burst - 1) * interval, Ordering::Relaxed);
    }
}

/// Per channel: TSC ticks between two allowed rings of one member, set at boot.
static DOORBELL_INTERVAL: [AtomicU64; CHANNEL_COUNT] = [const { AtomicU64::new(0) }; CHANNEL_COUNT];
/// Per channel: the slack of its members' allowances ([`within_allowance`]), set at boot.
static DOORBELL_SLACK: [AtomicU64; CHANNEL_COUNT] = [const { AtomicU64::new(0) }; CHANNEL_COUNT];

/// The health event a contained fault is (by the stable reason names of
/// [`Containment::reason`]).
fn event_of(containment: &Containment) -> HealthEvent {
    match containment.reason {
        "npf" | "mmio-decode" => HealthEvent::MemoryViolation,
        "triple-fault" => HealthEvent::Shutdown,
        "invalid-state" => HealthEvent::EntryFailure,
        _ => HealthEvent::UnexpectedExit,
    }
}

/// A fault the partition of `context` caused: the health monitor decides (halt, restart,
/// …) by the partition's table.
pub fn contain(context: &CoreContext, containment: Containment) {
    let report = health::Report {
        core: Some(context.apic_id),
        reason: containment.reason,
        address: containment.address,
        detail: containment.detail,
        rip: containment.rip,
    };
    health::raise(context.partition_index, event_of(&containment), &report);
}

/// The partition asked to stop: hypercall StopSelf (`status`) or its ACPI power-off.
pub fn stop_by_request(context: &CoreContext, status: u64, reason: &str) {
    stop(
        context.partition_index,
        Some(context.apic_id),
        status,
        reason,
    );
}

/// Stops `partition` (a request of its own); `core` is the core that asked, which parks by
/// itself. Only the first stop is logged.
pub fn stop(partition: PartitionIndex, core: Option<ApicId>, status: u64, reason: &str) {
    if transition(partition, PartitionState::Stopped) {
        log::info!(
            "stopped: partition={} status={} reason={} core={}",
            partition.partition().name,
            status,
            reason,
            core.map_or(0, |core| core.0)
        );
        signal_cores(partition, core);
    }
}

/// A core of the stopped `partition` is about to halt for good (outside its guest).
pub fn note_core_stopped(partition: PartitionIndex) {
    RUNTIME[partition.0]
        .stopped_cores
        .fetch_add(1, Ordering::AcqRel);
}

/// Waits, at most about a second, until every core of the stopped `partition` has left its
/// guest for good; false if one has not (its guest keeps the hypervisor's signal out).
pub fn wait_until_stopped(partition: PartitionIndex) -> bool {
    let runtime = &RUNTIME[partition.0];
    let cores = partition.partition().cpus.len() as u32;
    let start = tsc::read();
    let budget = tsc::khz().max(1_000_000) * 1000;
    while runtime.stopped_cores.load(Ordering::Acquire) < cores {
        if tsc::read().wrapping_sub(start) >= budget {
            return false;
        }
        idle_pause();
    }
    true
}

/// On the boot core of `context`'s partition: brings every other core of the partition out
/// of its guest and holds it in the hypervisor until [`release_other_cores`]. True once all
/// are held; false if one did not come within about a second (its guest keeps the NMI
/// out), in which case the others are released again. What the processor reads during
/// guest execution and the cores share — the I/O permission map — may then be changed
/// (SDM vol. 3C §25.11.4; APM vol. 2 §15.10).
pub fn hold_other_cores(context: &CoreContext) -> bool {
    let runtime = &RUNTIME[context.partition_index.0];
    let others = context.partition.cpus.len() as u32 - 1;
    if others == 0 {
        return true;
    }
    runtime.held.store(0, Ordering::Release);
    runtime.hold.store(true, Ordering::Release);
    signal_cores(context.partition_index, Some(context.apic_id));
    let start = tsc::read();
    let budget = tsc::khz().max(1_000_000) * 1000;
    while runtime.held.load(Ordering::Acquire) < others {
        if tsc::read().wrapping_sub(start) >= budget {
            release_other_cores(context.partition_index);
            return false;
        }
        idle_pause();
    }
    true
}

/// Lets the cores held by [`hold_other_cores`] return to their guests.
pub fn release_other_cores(partition: PartitionIndex) {
    RUNTIME[partition.0].hold.store(false, Ordering::Release);
}

/// On a core that is not its partition's boot core, out of its guest: if the boot core
/// asked to hold the others, counts itself held and waits until released.
pub fn held_if_asked(partition: PartitionIndex) {
    let runtime = &RUNTIME[partition.0];
    if !runtime.hold.load(Ordering::Acquire) {
        return;
    }
    runtime.held.fetch_add(1, Ordering::AcqRel);
    while runtime.hold.load(Ordering::Acquire) {
        idle_pause();
    }
}

/// Brings the stopped `partition` back to run as its partner's standby (`rejoin-as-standby`,
/// called by the takeover once every core of it has stopped): a new restart generation,
/// which its cores, waiting in `health::wait_for_rejoin`, carry out as any restart; its
/// count of stopped cores starts again for the next takeover.
pub fn rejoin(partition: PartitionIndex) {
    let runtime = &RUNTIME[partition.0];
    runtime.stopped_cores.store(0, Ordering::Release);
    runtime.generation.fetch_add(1, Ordering::AcqRel);
    runtime
        .state
        .store(PartitionState::Running as u8, Ordering::Release);
}

/// Stops `partition` after a fault; false if it had stopped already.
pub fn fault(partition: PartitionIndex, core: Option<ApicId>) -> bool {
    let first = transition(partition, PartitionState::Faulted);
    if first {
        signal_cores(partition, core);
    }
    first
}

/// The partition asked to be reset (its ACPI reset register): the health event
/// `reset-request`.
pub fn reset_by_request(context: &CoreContext) {
    let report = health::Report {
        core: Some(context.apic_id),
        reason: "reset-request",
        address: 0,
        detail: "reset register",
        rip: 0,
    };
    health::raise(context.partition_index, HealthEvent::ResetRequest, &report);
}

/// Asks every core of the partition to take part in a restart (see [`restart_rendezvous`]);
/// `core`, the one asking, sees it by itself.
pub fn request_restart(partition: PartitionIndex, core: Option<ApicId>) {
    RUNTIME[partition.0]
        .generation
        .fetch_add(1, Ordering::AcqRel);
    signal_cores(partition, core);
}

/// Whether a restart was asked for and not yet carried out.
pub fn restart_pending(partition: PartitionIndex) -> bool {
    let runtime = &RUNTIME[partition.0];
    runtime.generation.load(Ordering::Acquire) != runtime.released.load(Ordering::Acquire)
}

/// How often the partition has been restarted.
pub fn restarts(partition: PartitionIndex) -> u32 {
    RUNTIME[partition.0].restarts.load(Ordering::Acquire)
}

/// The restart generation a core compares with the one it last saw.
pub fn generation(partition: PartitionIndex) -> u32 {
    RUNTIME[partition.0].generation.load(Ordering::Acquire)
}

/// What a core does when it sees a new restart generation. Every core of the partition
/// parks; the boot core waits for the others, calls `reload`, counts the restart and
/// releases the others, which then wait for a start-up IPI as after INIT. Every core of a
/// running partition sits in its run loop, so all of them answer unless one keeps its guest
/// from taking the hypervisor's signal (an NMI it blocks forever): then the partition is
/// halted instead, and its memory is never reloaded under a core that may still run.
pub fn restart_rendezvous(
    context: &CoreContext,
    is_boot_core: bool,
    generation: u32,
    reload: impl FnOnce(),
) {
    let runtime = &RUNTIME[context.partition_index.0];
    runtime.parked.fetch_add(1, Ordering::AcqRel);
    if is_boot_core {
        let cores = context.partition.cpus.len() as u32;
        let start = tsc::read();
        let budget = tsc::khz().max(1_000_000) * 1000;
        while runtime.parked.load(Ordering::Acquire) < cores
            && tsc::read().wrapping_sub(start) < budget
        {
            idle_pause();
        }
        let parked = runtime.parked.swap(0, Ordering::AcqRel);
        if parked < cores {
            if transition(context.partition_index, PartitionState::Faulted) {
                log::info!(
                    "contained: partition={} core={} reason=unresponsive-core address=0x0 access=restart rip=0x0 ({} of {} cores stopped); halted, memory not reloaded",
                    context.partition.name,
                    context.apic_id,
                    parked,
                    cores
                );
            }
            return;
        }
        reload();
        let count = runtime.restarts.fetch_add(1, Ordering::AcqRel) + 1;
        log::info!(
            "restarted: partition={} restarts={} core={}",
            context.partition.name,
            count,
            context.apic_id
        );
        runtime.released.store(generation, Ordering::Release);
    } else {
        while runtime.released.load(Ordering::Acquire) != generation
            && !is_stopping(context.partition_index)
        {
            idle_pause();
        }
    }
}

fn transition(partition: PartitionIndex, to: PartitionState) -> bool {
    let runtime = &RUNTIME[partition.0];
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

/// Brings the partition's cores (but `except`, the calling one) out of the guest: each
/// takes an NMI exit, sees the final state or the restart and acts on it.
fn signal_cores(partition: PartitionIndex, except: Option<ApicId>) {
    for &apic_id in partition.partition().cpus {
        if Some(ApicId(apic_id)) != except {
            cores::signal(ApicId(apic_id), None);
        }
    }
}

/// Prints every partition's state and exit counters (at power-off).
pub fn print_counters() {
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        let runtime = &RUNTIME[index];
        let index = PartitionIndex(index);
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
                " total={} unassigned-port-accesses={} dropped-ipis={} refused-ioapic-writes={} restarts={} suppressed-log-lines={} refused-user-hypercalls={} dropped-doorbells={} icr-writes={}",
                total,
                runtime.unassigned_ports.load(Ordering::Relaxed),
                runtime.dropped_ipis.load(Ordering::Relaxed),
                runtime.refused_ioapic_writes.load(Ordering::Relaxed),
                runtime.restarts.load(Ordering::Relaxed),
                runtime.suppressed_log_lines.load(Ordering::Relaxed),
                runtime.refused_user_hypercalls.load(Ordering::Relaxed),
                runtime.dropped_doorbells.load(Ordering::Relaxed),
                // Every MSR-write exit that is not another MSR's is an ICR write (the
                // ICR's fast path counts nothing of its own, see `Counter::OtherMsrWrite`).
                runtime.exits[ExitReason::MsrWrite as usize]
                    .load(Ordering::Relaxed)
                    .saturating_sub(runtime.other_msr_writes.load(Ordering::Relaxed))
            ),
        );
        log::info!("{}", line);
    }
    health::print_health_log();
    crate::exits::pci::print_counters();
}

/// A partition that could not be started (its image failed to load).
pub fn mark_failed(partition: PartitionIndex) {
    transition(partition, PartitionState::Faulted);
}
