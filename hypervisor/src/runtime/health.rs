//! The health monitor at run time: each partition's monitor state (tessera_policy::health
//! decides), carrying out its decisions — log, halt, warm or cold restart, machine reset or
//! power-off, failover to a hot standby — the partitions' watchdogs, watched from a core no
//! partition owns, and the health log (docs/health.md).

use super::{cores, partition, power};
use crate::arch::{self, tsc, x2apic};
use crate::exits::CoreContext;
use crate::table::{ApicId, PartitionIndex, MACHINE, PARTITION_COUNT};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;
use tessera_abi::hypercall::HEALTH_LOG_RESTARTS;
use tessera_abi::table::{HealthAction, HealthEvent, StandbyRole};
use tessera_policy::health::{self, watchdog, Decision, HealthMonitor};

/// Each partition's monitor, kept across its restarts.
static MONITORS: [Mutex<HealthMonitor>; PARTITION_COUNT] =
    [const { Mutex::new(HealthMonitor::new()) }; PARTITION_COUNT];

/// Each partition's watchdog deadline (TSC); 0 while unarmed.
static DEADLINES: [AtomicU64; PARTITION_COUNT] = [const { AtomicU64::new(0) }; PARTITION_COUNT];

/// Set when the restart under way is a cold one (read by the reload).
static COLD_RESTART: [AtomicBool; PARTITION_COUNT] =
    [const { AtomicBool::new(false) }; PARTITION_COUNT];

/// Set when the machine is being switched off: the watchdog core stops watching, since
/// the core printing the power-off (a partition's) sends no heartbeats any more.
static WATCHDOGS_STOPPED: AtomicBool = AtomicBool::new(false);

/// Stops the watchdogs for good (power-off, machine reset): no deadline is checked after.
pub fn stop_watchdogs() {
    WATCHDOGS_STOPPED.store(true, Ordering::Release);
}

/// Per standby partition: the TSC at which its primary's failure asked it to take over;
/// 0 while no takeover is pending. Set once by the core that decided the failover, taken
/// once by the standby's boot core.
static TAKEOVER_ASKED: [AtomicU64; PARTITION_COUNT] =
    [const { AtomicU64::new(0) }; PARTITION_COUNT];

/// Where an event was seen, for the log.
pub struct Report {
    /// The partition's core that saw it; None when the watchdog core did.
    pub core: Option<ApicId>,
    /// Stable short name of the cause (`npf`, `triple-fault`, `watchdog`, …).
    pub reason: &'static str,
    pub address: u64,
    pub detail: &'static str,
    pub rip: u64,
}

/// Whether the partition can still take an event: it runs and no restart is pending (two
/// cores that fault together raise one event each, but the partition restarts once).
fn accepts_events(partition: PartitionIndex) -> bool {
    !partition::state(partition).is_final() && !partition::restart_pending(partition)
}

/// Records `event` for `partition`, logs the decision and carries it out. Returns the
/// action taken: only after [`HealthAction::Log`] does the partition's core resume.
pub fn raise(partition: PartitionIndex, event: HealthEvent, report: &Report) -> HealthAction {
    if !accepts_events(partition) {
        return HealthAction::Halt;
    }
    let table = partition.partition();
    let decision =
        MONITORS[partition.0]
            .lock()
            .record(&table.health, event, tsc::read(), tsc::khz());
    log_decision(partition, event, &decision, report);
    act(partition, &decision, report);
    decision.action
}

fn log_decision(
    partition: PartitionIndex,
    event: HealthEvent,
    decision: &Decision,
    report: &Report,
) {
    let name = partition.partition().name;
    let count = MONITORS[partition.0].lock().event_count(event);
    let mut line = heapless::String::<256>::new();
    let _ = core::fmt::write(
        &mut line,
        format_args!(
            "health: partition={} event={} count={} action={}",
            name,
            event.name(),
            count,
            decision.action.name()
        ),
    );
    if decision.escalations != 0 {
        let _ = core::fmt::write(
            &mut line,
            format_args!(" escalated-from={}", decision.planned.name()),
        );
    }
    if decision.event != event {
        let _ = core::fmt::write(&mut line, format_args!(" ({})", decision.event.name()));
    }
    if decision.restart_number != 0 {
        let _ = core::fmt::write(
            &mut line,
            format_args!(" restart={}", decision.restart_number),
        );
    }
    match report.core {
        Some(core) => {
            let _ = core::fmt::write(&mut line, format_args!(" core={}", core));
        }
        None => {
            let _ = core::fmt::write(&mut line, format_args!(" seen-by=watchdog-core"));
        }
    }
    log::info!("{}", line);
}

/// Carries out a decision. The lines `contained:`, `restarting:` and `stopped:` keep the
/// form they had before the health monitor, which the red-team and system tests read.
fn act(partition: PartitionIndex, decision: &Decision, report: &Report) {
    let name = partition.partition().name;
    let core = report.core.map_or(0, |core| core.0);
    let contained = |outcome: &str| {
        log::info!(
            "contained: partition={} core={} reason={} address={:#x} access={} rip={:#x}; {}",
            name,
            core,
            report.reason,
            report.address,
            report.detail,
            report.rip,
            outcome
        )
    };
    let reset_request = report.reason == "reset-request";
    match decision.action {
        HealthAction::Log => {
            if decision.event == HealthEvent::WatchdogExpiry {
                rearm(partition);
            }
        }
        HealthAction::Halt => {
            disarm(partition);
            // A reset request the partition may not have is a stop it asked for.
            if reset_request {
                partition::stop(partition, report.core, 0, "reset-request");
            } else if partition::fault(partition, report.core) {
                contained(if decision.event == HealthEvent::RestartBudgetExhausted {
                    "halted (restart limit reached)"
                } else {
                    "halted"
                });
            }
        }
        HealthAction::SwitchToStandby => {
            disarm(partition);
            let asked = tsc::read();
            let standby = match partition.partition().health.standby {
                StandbyRole::Primary { standby } => Some(PartitionIndex(usize::from(standby))),
                _ => None,
            };
            // The standby must be running (booted and waiting) and not be restarting.
            let ready = standby.filter(|&standby| {
                partition::state(standby) == tessera_abi::hypercall::PartitionState::Running
                    && !partition::restart_pending(standby)
            });
            if partition::fault(partition, report.core) {
                match ready {
                    Some(standby) => {
                        // The standby is signalled before the line is printed: the console
                        // is a polled UART, and the takeover need not wait for it.
                        TAKEOVER_ASKED[standby.0].store(asked.max(1), Ordering::Release);
                        let boot_core = standby.partition().cpus[0];
                        cores::signal(ApicId(boot_core), None);
                        let mut outcome = heapless::String::<96>::new();
                        let _ = core::fmt::write(
                            &mut outcome,
                            format_args!("halted; standby {} takes over", standby.partition().name),
                        );
                        contained(&outcome);
                    }
                    None => contained("halted (no standby ready to take over)"),
                }
            }
        }
        HealthAction::WarmRestart | HealthAction::ColdRestart => {
            disarm(partition);
            COLD_RESTART[partition.0].store(
                decision.action == HealthAction::ColdRestart,
                Ordering::Release,
            );
            if reset_request {
                log::info!(
                    "restarting: partition={} reason=reset-request core={}",
                    name,
                    core
                );
            } else {
                contained("restarting");
            }
            partition::request_restart(partition, report.core);
        }
        HealthAction::MachinePowerOff => {
            contained("powering the machine off");
            power::power_off(name);
        }
        HealthAction::MachineReset => {
            stop_watchdogs();
            contained("resetting the machine");
            print_health_log();
            crate::arch::console::drain();
            arch::power::reset_machine();
            log::info!("Tessera: machine reset did not take effect; halting");
            arch::halt_forever();
        }
    }
}

/// On the boot core of a standby, out of its guest: if its primary's failure asked it to
/// take over, waits until every core of the primary has left its guest for good, moves the
/// primary's I/O ports (their bits in both permission maps) and IOAPIC pins (ownership, entries
/// re-targeted to this core and masked) to this partition, and sends this core the
/// table's takeover vector, which the guest receives on its next entry.
///
/// Race-free by construction: the ownership words and maps change only here, on the one
/// core of the standby (validation, `standby-cores`), while it is in the hypervisor, after
/// the primary's cores have all stopped; no other partition reads them.
pub fn take_over_if_asked(context: &CoreContext) {
    let StandbyRole::Standby {
        primary,
        takeover_vector,
    } = context.partition.health.standby
    else {
        return;
    };
    // A load first: this runs after every exit of a standby, and a swap would write the
    // word each time.
    let word = &TAKEOVER_ASKED[context.partition_index.0];
    if word.load(Ordering::Acquire) == 0 {
        return;
    }
    let asked = word.swap(0, Ordering::AcqRel);
    if asked == 0 {
        return;
    }
    let primary = PartitionIndex(usize::from(primary));
    let primary_name = primary.partition().name;
    if !partition::wait_until_stopped(primary) {
        log::info!(
            "takeover: partition={} from={} refused: a core of {} did not stop; the standby keeps waiting",
            context.partition.name,
            primary_name,
            primary_name
        );
        return;
    }
    let ports = primary.partition().ports;
    // Only the moved ranges' bits change: the primary held exactly these ports and the
    // standby none (validation, `standby-devices`).
    cores::set_ports(primary, ports, false);
    cores::set_ports(context.partition_index, ports, true);
    let pins =
        crate::exits::ioapic::hand_over_pins(primary, context.partition_index, context.apic_id.0);
    let now = tsc::read();
    log::info!(
        "takeover: partition={} from={} ports={} pins={} vector={:#x} asked-tsc={} ticks-since-asked={} core={}",
        context.partition.name,
        primary_name,
        ports.len(),
        pins,
        takeover_vector,
        asked,
        now.saturating_sub(asked),
        context.apic_id
    );
    x2apic::send_fixed(context.apic_id, takeover_vector);
}

/// Whether the restart being carried out for `partition` is a cold one (and forgets it).
pub fn take_cold_restart(partition: PartitionIndex) -> bool {
    COLD_RESTART[partition.0].swap(false, Ordering::AcqRel)
}

/// A heartbeat of `partition` at TSC `now`: arms or pushes its watchdog deadline one period
/// ahead. Returns the period in microseconds (0: no watchdog).
pub fn heartbeat(partition: PartitionIndex) -> u64 {
    let period = partition.partition().health.watchdog_period_microseconds;
    if period != 0 && accepts_events(partition) {
        DEADLINES[partition.0].store(deadline_from_now(period), Ordering::Release);
    }
    period
}

/// The TSC value one watchdog period of `period` microseconds from now.
fn deadline_from_now(period: u64) -> u64 {
    watchdog::deadline_after(tsc::read(), health::ticks(period, tsc::khz()))
}

/// Clears the partition's watchdog deadline: a restarted partition arms it again with its
/// first heartbeat.
pub fn disarm(partition: PartitionIndex) {
    DEADLINES[partition.0].store(0, Ordering::Release);
}

/// After a missed period with the action `log`: one more period from now.
fn rearm(partition: PartitionIndex) {
    let deadline = deadline_from_now(partition.partition().health.watchdog_period_microseconds);
    let _ =
        DEADLINES[partition.0].compare_exchange(0, deadline, Ordering::AcqRel, Ordering::Acquire);
}

/// Whether any partition of the table has a watchdog.
/// Every passed-through function of the table, in table order: sizes the device-fault
/// counters.
const FUNCTIONS: usize = {
    let mut count = 0;
    let mut index = 0;
    while index < MACHINE.partitions.len() {
        count += MACHINE.partitions[index].pci_functions.len();
        index += 1;
    }
    count
};
/// IOMMU faults (DMA and interrupt remapping) per function, in table order, and those of
/// requesters no partition owns.
static DEVICE_FAULTS: [AtomicU64; FUNCTIONS] = [const { AtomicU64::new(0) }; FUNCTIONS];
static UNOWNED_DEVICE_FAULTS: AtomicU64 = AtomicU64::new(0);

/// The partition and table position of the function with requester ID `source`.
fn owner_of(source: u16) -> Option<(PartitionIndex, usize)> {
    let mut ordinal = 0;
    for (index, partition) in MACHINE.partitions.iter().enumerate() {
        for function in partition.pci_functions {
            if function.physical.0 == source {
                return Some((PartitionIndex(index), ordinal));
            }
            ordinal += 1;
        }
    }
    None
}

/// Counts a fault of requester `source`; returns its owner.
fn count_device_fault(source: u16) -> Option<PartitionIndex> {
    match owner_of(source) {
        Some((partition, ordinal)) => {
            DEVICE_FAULTS[ordinal].fetch_add(1, Ordering::Relaxed);
            Some(partition)
        }
        None => {
            UNOWNED_DEVICE_FAULTS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// A fault the IOMMU recorded for requester `source` while the machine runs: counted, and
/// the `device-fault` event raised for the partition that owns the function, whose table
/// decides (log, halt, restart …). A requester no partition owns is only counted: its
/// entry blocks everything, so nothing reached memory.
fn device_fault(source: u16) {
    if let Some(partition) = count_device_fault(source) {
        let report = Report {
            core: None,
            reason: "device-fault",
            address: u64::from(source),
            detail: "IOMMU fault of the function with this requester ID",
            rip: 0,
        };
        raise(partition, HealthEvent::DeviceFault, &report);
    }
}

/// A fault read at power-off: counted only (the machine is going down).
pub fn device_fault_at_power_off(source: u16) {
    count_device_fault(source);
}

/// Reads the IOMMU's fault records (VT-d fault recording registers, AMD-Vi event log).
fn poll_device_faults() {
    arch::intel_iommu::poll_faults(|source, _interrupt| device_fault(source));
    arch::amd_iommu::poll_events(device_fault);
}

/// One line per passed-through function with its IOMMU fault count, and one for
/// requesters no partition owns (at power-off).
pub fn print_device_faults() {
    if arch::intel_iommu::fault_count().is_none() && !arch::amd_iommu::enabled() {
        return;
    }
    let mut ordinal = 0;
    for partition in MACHINE.partitions {
        for function in partition.pci_functions {
            log::info!(
                "iommu: partition={} device={} function={:02x}:{:02x}.{} faults={}",
                partition.name,
                function.name,
                function.physical.bus(),
                function.physical.device(),
                function.physical.function(),
                DEVICE_FAULTS[ordinal].load(Ordering::Relaxed)
            );
            ordinal += 1;
        }
    }
    log::info!(
        "iommu: unowned-requester faults={}",
        UNOWNED_DEVICE_FAULTS.load(Ordering::Relaxed)
    );
}

/// Whether an IOMMU unit runs whose faults the watchdog core should read as they happen.
fn iommu_to_poll() -> bool {
    arch::intel_iommu::fault_count().is_some() || arch::amd_iommu::enabled()
}

fn any_watchdog() -> bool {
    MACHINE
        .partitions
        .iter()
        .any(|partition| partition.health.watchdog_period_microseconds != 0)
}

/// The life of a core no partition owns. The first such core in table order is the
/// watchdog core when any partition has a watchdog or an IOMMU unit runs: it polls the
/// TSC against every deadline, so the watchdog takes no timer interrupt and causes the
/// partitions no exit, and reads the IOMMU's fault records once a millisecond, so a
/// device fault reaches its partition's health policy while the machine runs
/// (docs/health.md, docs/pci-iommu.md); the others halt.
pub fn idle_core(apic_id: ApicId) -> ! {
    let first_free = MACHINE
        .cpus
        .iter()
        .copied()
        .find(|&cpu| crate::table::partition_of_cpu(ApicId(cpu)).is_none());
    let poll_iommu = iommu_to_poll();
    if !(any_watchdog() || poll_iommu) || first_free != Some(apic_id.0) {
        arch::halt_forever();
    }
    log::info!(
        "watchdog: core {} watches the partitions' heartbeats{}",
        apic_id,
        if poll_iommu {
            " and the IOMMU's fault records"
        } else {
            ""
        }
    );
    let poll_interval = tsc::khz().max(1);
    let mut last_poll = tsc::read();
    while !WATCHDOGS_STOPPED.load(Ordering::Acquire) {
        let now = tsc::read();
        if poll_iommu && now.wrapping_sub(last_poll) >= poll_interval {
            last_poll = now;
            poll_device_faults();
        }
        for (index, deadline) in DEADLINES.iter().enumerate() {
            let armed = deadline.load(Ordering::Acquire);
            if !watchdog::is_overdue(armed, now) {
                continue;
            }
            if deadline
                .compare_exchange(armed, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                && !WATCHDOGS_STOPPED.load(Ordering::Acquire)
            {
                let late = health::ticks(1, tsc::khz()).max(1);
                let report = Report {
                    core: None,
                    reason: "watchdog",
                    address: now.saturating_sub(armed) / late,
                    detail: "microseconds late",
                    rip: 0,
                };
                raise(PartitionIndex(index), HealthEvent::WatchdogExpiry, &report);
            }
        }
        arch::idle_pause();
    }
    arch::halt_forever()
}

/// The health log of `partition`: the count of event `selector` (a [`HealthEvent`] index),
/// or its restarts for [`HEALTH_LOG_RESTARTS`]; None for an unknown selector.
pub fn log_entry(partition: PartitionIndex, selector: u64) -> Option<u64> {
    let monitor = MONITORS[partition.0].lock();
    if selector == HEALTH_LOG_RESTARTS {
        return Some(u64::from(monitor.restarts()));
    }
    HealthEvent::from_index(selector).map(|event| monitor.event_count(event))
}

/// Prints every partition's health log (at power-off and before a machine reset).
pub fn print_health_log() {
    for (index, table) in MACHINE.partitions.iter().enumerate() {
        let monitor = *MONITORS[index].lock();
        let mut line = heapless::String::<512>::new();
        let _ = core::fmt::write(
            &mut line,
            format_args!(
                "health-log: partition={} restarts={}",
                table.name,
                monitor.restarts()
            ),
        );
        for event in HealthEvent::ALL {
            let _ = core::fmt::write(
                &mut line,
                format_args!(" {}={}", event.name(), monitor.event_count(event)),
            );
        }
        log::info!("{}", line);
    }
}
