//! The health monitor at run time: each partition's monitor state (tessera_policy::health
//! decides), carrying out its decisions — log, halt, warm or cold restart, machine reset or
//! power-off, failover to a hot standby — the partitions' watchdogs, watched from a core no
//! partition owns, and the health log (docs/health.md).

use super::{cores, memory, partition, power};
use crate::arch::{self, tsc, x2apic};
use crate::exits::CoreContext;
use crate::table::{ApicId, PartitionIndex, MACHINE, PARTITION_COUNT, PCI_FUNCTION_COUNT};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use spin::Mutex;
use tessera_abi::hypercall::HEALTH_LOG_RESTARTS;
use tessera_abi::table::{Bdf, HealthAction, HealthEvent, StandbyRole};
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

/// The `contained:` line of a decision, written straight to the console (no buffer).
struct ContainedLine<'a> {
    name: &'a str,
    core: u32,
    report: &'a Report,
    outcome: &'a str,
}

impl core::fmt::Display for ContainedLine<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(
            formatter,
            "contained: partition={} core={} reason={} address={:#x} access={} rip={:#x}; {}",
            self.name,
            self.core,
            self.report.reason,
            self.report.address,
            self.report.detail,
            self.report.rip,
            self.outcome
        )
    }
}

/// Carries out a decision. The lines `contained:`, `restarting:` and `stopped:` keep the
/// form they had before the health monitor, which the red-team and system tests read.
fn act(partition: PartitionIndex, decision: &Decision, report: &Report) {
    let name = partition.partition().name;
    let core = report.core.map_or(0, |core| core.0);
    let contained = |outcome: &str| {
        log::info!(
            "{}",
            ContainedLine {
                name,
                core,
                report,
                outcome
            }
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
            } else {
                let line = ContainedLine {
                    name,
                    core,
                    report,
                    outcome: if decision.event == HealthEvent::RestartBudgetExhausted {
                        "halted (restart limit reached)"
                    } else {
                        "halted"
                    },
                };
                // The line is out before another core can see the partition faulted: a
                // partition waiting for the others to stop powers the machine off then.
                crate::arch::console::log_if(
                    || partition::fault(partition, report.core),
                    format_args!("{line}"),
                );
            }
        }
        HealthAction::SwitchToStandby => {
            disarm(partition);
            let asked = tsc::read();
            // The partner must be a standby that waits (booted, holding none of the pair's
            // devices) and is not restarting; the failing partition must hold the devices.
            let pair = Pair::of(partition);
            let ready = pair.and_then(|pair| {
                let partner = pair.partner(partition);
                (!pair.is_waiting(partition)
                    && pair.is_waiting(partner)
                    && partition::state(partner) == tessera_abi::hypercall::PartitionState::Running
                    && !partition::restart_pending(partner))
                .then_some((pair, partner))
            });
            // Before the stop, so that the failing partition's cores, which see the stop
            // first, also see that they are to wait for the rejoin instead of halting.
            let rejoins = ready.is_some_and(|(pair, _)| pair.rejoin_vector.is_some());
            if rejoins {
                REJOIN[partition.0].store(REJOIN_PENDING, Ordering::Release);
            }
            if partition::fault(partition, report.core) {
                match ready {
                    Some((_, standby)) => {
                        // The standby is signalled before the line is printed: the console
                        // is a polled UART, and the takeover need not wait for it.
                        TAKEOVER_ASKED[standby.0].store(asked.max(1), Ordering::Release);
                        let boot_core = standby.partition().cpus[0];
                        cores::signal(ApicId(boot_core), None);
                        let mut outcome = heapless::String::<96>::new();
                        let _ = core::fmt::write(
                            &mut outcome,
                            format_args!(
                                "halted; standby {} takes over{}",
                                standby.partition().name,
                                if rejoins {
                                    ", then this one rejoins as its standby"
                                } else {
                                    ""
                                }
                            ),
                        );
                        contained(&outcome);
                    }
                    None => contained("halted (no standby ready to take over)"),
                }
            } else if rejoins {
                REJOIN[partition.0].store(REJOIN_NONE, Ordering::Release);
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
            // The runner's marker for a reset (tools/xtask/src/markers.rs), as `Tessera:
            // power off` is for a power-off: the last line before the chipset resets.
            log::info!("Tessera: machine reset");
            crate::arch::console::drain();
            arch::power::reset_machine();
            log::info!("Tessera: machine reset did not take effect; halting");
            arch::halt_forever();
        }
    }
}

/// A hot-standby pair (docs/health.md, "Hot standby"), from either member's table entry.
#[derive(Clone, Copy)]
struct Pair {
    /// The member the table calls the primary (it holds the devices at boot).
    primary: PartitionIndex,
    standby: PartitionIndex,
    /// The vector the standby is sent when it takes the devices.
    standby_vector: u8,
    /// With `rejoin-as-standby`: the vector the primary is sent when it takes them back.
    rejoin_vector: Option<u8>,
}

impl Pair {
    fn of(partition: PartitionIndex) -> Option<Pair> {
        let (primary, standby) = match partition.partition().health.standby {
            StandbyRole::None => return None,
            StandbyRole::Primary { standby, .. } => {
                (partition, PartitionIndex(usize::from(standby)))
            }
            StandbyRole::Standby { primary, .. } => {
                (PartitionIndex(usize::from(primary)), partition)
            }
        };
        let StandbyRole::Standby {
            takeover_vector, ..
        } = standby.partition().health.standby
        else {
            return None;
        };
        let StandbyRole::Primary { rejoin_vector, .. } = primary.partition().health.standby else {
            return None;
        };
        Some(Pair {
            primary,
            standby,
            standby_vector: takeover_vector,
            rejoin_vector,
        })
    }

    fn partner(&self, member: PartitionIndex) -> PartitionIndex {
        if member == self.primary {
            self.standby
        } else {
            self.primary
        }
    }

    /// Whether `member` holds none of the pair's devices now.
    fn is_waiting(&self, member: PartitionIndex) -> bool {
        let with_standby = DEVICES_WITH_STANDBY[self.primary.0].load(Ordering::Acquire);
        with_standby == (member == self.primary)
    }

    /// The vector `member` is sent once it holds the devices.
    fn vector_of(&self, member: PartitionIndex) -> u8 {
        if member == self.standby {
            self.standby_vector
        } else {
            self.rejoin_vector.unwrap_or(0)
        }
    }
}

/// Per pair, indexed by its table primary: whether the pair's devices are with the table
/// standby now (false at boot). Written only by a takeover, on the taking member's one core
/// while the other member's cores have all stopped.
static DEVICES_WITH_STANDBY: [AtomicBool; PARTITION_COUNT] =
    [const { AtomicBool::new(false) }; PARTITION_COUNT];

/// Per partition, whether its stopped cores are to wait for a rejoin (`rejoin-as-standby`):
/// [`REJOIN_PENDING`] from the failover decision until the takeover claims it
/// ([`REJOIN_CLAIMED`]) and restarts the partition, or until the waiting cores give up
/// ([`REJOIN_WAIT_MICROSECONDS`]); [`REJOIN_NONE`] otherwise (the cores halt).
static REJOIN: [AtomicU8; PARTITION_COUNT] =
    [const { AtomicU8::new(REJOIN_NONE) }; PARTITION_COUNT];
const REJOIN_NONE: u8 = 0;
const REJOIN_PENDING: u8 = 1;
const REJOIN_CLAIMED: u8 = 2;

/// How long stopped cores wait for the takeover that rejoins them: far longer than a
/// takeover takes (its two waits are bounded by about a second each), so that only a
/// takeover that never comes (the partner failed first) leaves them halted.
const REJOIN_WAIT_MICROSECONDS: u64 = 10_000_000;

/// Whether `partition` is a standby that holds none of its pair's devices now (the
/// `standby-status` hypercall; a table standby at boot, a primary that rejoined).
pub fn is_waiting_standby(partition: PartitionIndex) -> bool {
    Pair::of(partition).is_some_and(|pair| pair.is_waiting(partition))
}

/// Whether any channel of the table moves with a pair at a takeover.
const ANY_CHANNEL_MOVES: bool = {
    let mut index = 0;
    let mut any = false;
    while index < MACHINE.channels.len() {
        any |= !MACHINE.channels[index].takeover_standbys.is_empty();
        index += 1;
    }
    any
};

/// Whether `partition` holds channel `channel` now. A member of a channel that a standby
/// takes over (`takeover_standbys`: the standby and its primary) holds it only while it
/// holds the pair's devices; every member of any other channel always.
#[inline(always)]
pub fn holds_channel(partition: PartitionIndex, channel: usize) -> bool {
    // Folded at compile time: in a table where no channel moves (most), every member always
    // holds its channels and the doorbell path pays nothing for the check.
    if !ANY_CHANNEL_MOVES {
        return true;
    }
    let takers = MACHINE.channels[channel].takeover_standbys;
    if takers.is_empty() {
        return true;
    }
    match Pair::of(partition) {
        Some(pair) if takers.contains(&(pair.standby.0 as u16)) => !pair.is_waiting(partition),
        _ => true,
    }
}

/// On a core of `partition`, which has stopped: returns once the partition has been
/// brought back by a rejoin (its new restart generation is then carried out as any
/// restart's), or halts this core for good if no rejoin is coming or none came within
/// [`REJOIN_WAIT_MICROSECONDS`]. The wait spins in the hypervisor (with the GIF open on
/// SVM): a HLT here could miss the NMI that ends it, and it lasts only until the partner's
/// takeover, which is bounded (about two seconds at most).
pub fn wait_for_rejoin(partition: PartitionIndex) {
    let word = &REJOIN[partition.0];
    let start = tsc::read();
    let budget = health::ticks(REJOIN_WAIT_MICROSECONDS, tsc::khz().max(1));
    loop {
        match word.load(Ordering::Acquire) {
            REJOIN_NONE => break,
            // A claimed rejoin is under way: it ends by setting the word to none.
            REJOIN_PENDING if tsc::read().wrapping_sub(start) >= budget => {
                let _ = word.compare_exchange(
                    REJOIN_PENDING,
                    REJOIN_NONE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            _ => arch::idle_pause(),
        }
    }
    if partition::is_stopping(partition) {
        arch::halt_forever();
    }
}

/// On the boot core of a waiting standby, out of its guest: if its partner's failure asked
/// it to take over, waits until every core of the partner has left its guest for good,
/// moves the pair's I/O ports (their bits in both permission maps) and IOAPIC pins
/// (ownership, entries re-targeted to this core and masked) to this partition, and sends
/// this core its takeover vector, which the guest receives on its next entry. With
/// `rejoin-as-standby` the failed partner is then restarted (cold) as the new standby.
///
/// Race-free by construction: the ownership words and maps change only here, on the boot
/// core of the standby, while it and every other core of the standby are in the hypervisor
/// (`partition::hold_other_cores`) and the partner's cores have all stopped; no other
/// partition reads them.
pub fn take_over_if_asked(context: &CoreContext) {
    // A load first: this runs after every exit of a standby, and a swap would write the
    // word each time.
    let word = &TAKEOVER_ASKED[context.partition_index.0];
    if word.load(Ordering::Acquire) == 0 {
        return;
    }
    let asked = word.swap(0, Ordering::AcqRel);
    let Some(pair) = Pair::of(context.partition_index) else {
        return;
    };
    if asked == 0 || !pair.is_waiting(context.partition_index) {
        return;
    }
    let partner = pair.partner(context.partition_index);
    let partner_name = partner.partition().name;
    // This partition's other cores leave their guests first: the permission map they
    // share with this core is about to change.
    if !partition::hold_other_cores(context) {
        log::info!(
            "takeover: partition={} from={} refused: a core of {} did not stop; the standby keeps waiting",
            context.partition.name,
            partner_name,
            context.partition.name
        );
        REJOIN[partner.0].store(REJOIN_NONE, Ordering::Release);
        return;
    }
    if !partition::wait_until_stopped(partner) {
        partition::release_other_cores(context.partition_index);
        log::info!(
            "takeover: partition={} from={} refused: a core of {} did not stop; the standby keeps waiting",
            context.partition.name,
            partner_name,
            partner_name
        );
        // No rejoin under a core that may still run: the partner's stopped cores halt.
        REJOIN[partner.0].store(REJOIN_NONE, Ordering::Release);
        return;
    }
    // The pair's devices are the table primary's (a standby's own devices have no pin and no
    // PCI function and stay with it: `standby-devices`); only the moved ranges' bits change.
    let ports = pair.primary.partition().ports;
    cores::set_ports(partner, ports, false);
    cores::set_ports(context.partition_index, ports, true);
    let pins =
        crate::exits::ioapic::hand_over_pins(partner, context.partition_index, context.apic_id.0);
    // PCI functions: quiesced, into this partition's DMA domain and interrupt remapping
    // entries, their BAR windows out of the partner's stage-2 tables and into ours.
    let functions = crate::exits::pci::hand_over_functions(partner, context.partition_index);
    if let Err(page) = memory::move_function_windows(partner, context.partition_index) {
        log::info!(
            "takeover: partition={} BAR page {:#x} could not be moved; it stays unmapped",
            context.partition.name,
            page
        );
    }
    let channels = move_channels(&pair, partner, context);
    DEVICES_WITH_STANDBY[pair.primary.0]
        .store(context.partition_index == pair.standby, Ordering::Release);
    let now = tsc::read();
    let vector = pair.vector_of(context.partition_index);
    log::info!(
        "takeover: partition={} from={} ports={} pins={} functions={} channels={} vector={:#x} held-cores={} asked-tsc={} ticks-since-asked={} core={}",
        context.partition.name,
        partner_name,
        ports.len(),
        pins,
        functions,
        channels,
        vector,
        context.partition.cpus.len() - 1,
        asked,
        now.saturating_sub(asked),
        context.apic_id
    );
    partition::release_other_cores(context.partition_index);
    x2apic::send_fixed(context.apic_id, vector);
    // Claimed first, so that the partner's waiting cores cannot give up meanwhile; they
    // go on once the word is none again, by then with the partition running.
    if REJOIN[partner.0]
        .compare_exchange(
            REJOIN_PENDING,
            REJOIN_CLAIMED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    {
        // A cold restart: the partner's image boots again and asks its role (it waits).
        COLD_RESTART[partner.0].store(true, Ordering::Release);
        partition::rejoin(partner);
        log::info!(
            "rejoin: partition={} restarts as the standby of {}",
            partner_name,
            context.partition.name
        );
        REJOIN[partner.0].store(REJOIN_NONE, Ordering::Release);
    }
}

/// At a takeover, on the taker's boot core with every core of both members out of its
/// guest: the memory of each channel that moves with the pair (`takeover_standbys` names
/// its standby) leaves the failed member's stage-2 tables and enters the taker's; the
/// doorbell follows the pair's word, set after this. Logs one line per channel with the
/// leaves moved and how many of them the taker had mapped before (none: a waiting member
/// cannot reach the channel). Returns the channels moved.
fn move_channels(pair: &Pair, from: PartitionIndex, context: &CoreContext) -> usize {
    let mut moved = 0;
    for (index, channel) in MACHINE.channels.iter().enumerate() {
        if !channel.takeover_standbys.contains(&(pair.standby.0 as u16)) {
            continue;
        }
        match memory::move_channel(from, context.partition_index, index) {
            Ok(leaves) => {
                moved += 1;
                log::info!(
                    "takeover: partition={} channel={} from={} leaves={} mapped-before-in-taker={} unmapped-from-failed={}",
                    context.partition.name,
                    channel.name,
                    from.partition().name,
                    leaves.taker,
                    leaves.taker_present_before,
                    leaves.failed_present_before
                );
            }
            Err(guest) => log::info!(
                "takeover: partition={} channel={} page {:#x} could not be moved; it stays unmapped",
                context.partition.name,
                channel.name,
                guest
            ),
        }
    }
    moved
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

/// IOMMU faults (DMA and interrupt remapping) per function, in table order, and those of
/// requesters no partition owns.
static DEVICE_FAULTS: [AtomicU64; PCI_FUNCTION_COUNT] =
    [const { AtomicU64::new(0) }; PCI_FUNCTION_COUNT];
static UNOWNED_DEVICE_FAULTS: AtomicU64 = AtomicU64::new(0);

/// Counts a fault of requester `source`; returns its owner.
fn count_device_fault(source: u16) -> Option<PartitionIndex> {
    match crate::exits::pci::holder_of(Bdf(source)) {
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

/// Whether any partition of the table has a watchdog.
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
