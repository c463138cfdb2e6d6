//! The exit-handling layer: what the hypervisor does about each kind of VM exit, written
//! once for both backends, one module per kind (`cpuid`, `cr`, `xsetbv`, `io`, `msr`,
//! `hypercall`, `ioapic`, `pci`; faults are handled here; `mmio` is the decoding path the
//! trapped MMIO devices share).
//!
//! Handlers work on the vCPU (the `virt` layer below) and on hardware (`arch`). Whatever
//! concerns a partition as a whole — containment, stop and restart, signals to its other
//! cores, power-off, counters — they ask of the partition runtime above them through the
//! [`PartitionControl`] trait, which the runtime implements. So imports point downward only
//! (`cargo xtask lint` checks it), and the handlers name no runtime module.

pub mod cpuid;
pub mod cr;
pub mod hypercall;
pub mod io;
pub mod ioapic;
pub mod mmio;
pub mod msr;
pub mod pci;
pub mod xsetbv;

use crate::table::{ApicId, CoreIndex, PartitionIndex};
use crate::virt::{Exception, Exit, VirtualCpu};
use tessera_abi::hypercall::PartitionState;
use tessera_abi::table::Partition;

/// The state a core's exit handlers need besides the vCPU.
pub struct CoreContext {
    pub apic_id: ApicId,
    /// Position of this core in the table's core list.
    pub core_index: CoreIndex,
    pub partition_index: PartitionIndex,
    pub partition: &'static Partition,
}

impl CoreContext {
    /// Whether the core's partition holds `capability` (its table's `capabilities`).
    pub fn has(&self, capability: tessera_abi::table::Capability) -> bool {
        self.partition.capabilities.contains(&capability)
    }

    /// Whether the core's partition is a member of a hot-standby pair (`standby-for`), so
    /// may be asked to take over.
    pub fn in_standby_pair(&self) -> bool {
        self.partition.health.standby != tessera_abi::table::StandbyRole::None
    }
}

/// What the run loop does after an exit was handled.
pub enum Flow {
    Resume,
    /// Stop the partition (contained fault or by its own request) and park this core.
    Stop,
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

/// What one core asks another core of its partition to do to its vCPU (INIT and SIPI,
/// emulated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    Init,
    StartUp {
        vector: u8,
    },
    /// An NMI the partition sends one of its own cores. It is marked as the guest's before
    /// it is sent, so that when it merges with a hypervisor signal (one NMI latch per core,
    /// SDM vol. 3 §6.7.1) the guest still receives it.
    GuestNmi,
}

/// Events the runtime counts per partition besides exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// An access to a port the partition does not own (read all-ones, write dropped).
    UnassignedPort,
    /// Destinations of an ICR write outside the partition, dropped.
    DroppedIpi,
    /// An IOAPIC write the partition's view refused.
    RefusedIoapicWrite,
    /// A hypercall from guest user mode the table does not grant there (#UD).
    RefusedUserHypercall,
    /// A doorbell rung beyond its channel's budget.
    DroppedDoorbell,
    /// An intercepted WRMSR of another MSR than the x2APIC ICR (counted on the rare path
    /// only, so that the ICR's fast path pays nothing: ICR writes are the MSR-write exits
    /// minus these).
    OtherMsrWrite,
}

/// What exit handlers ask of the partition runtime above them.
pub trait PartitionControl {
    /// Counts one exit of `reason` for the core's partition.
    fn count_exit(&self, context: &CoreContext, reason: ExitReason);
    /// Adds `amount` to a counter of the core's partition.
    fn count(&self, context: &CoreContext, counter: Counter, amount: u64);
    /// Every exit the core's partition has caused so far.
    fn total_exits(&self, context: &CoreContext) -> u64;
    /// Stops or restarts the core's partition after a fault it caused, per its policy.
    fn contain(&self, context: &CoreContext, containment: Containment);
    /// The partition asked to stop (StopSelf with `status`, or its ACPI power-off).
    fn stop_by_request(&self, context: &CoreContext, status: u64, reason: &'static str);
    /// The partition asked to be reset (its ACPI reset register).
    fn reset_by_request(&self, context: &CoreContext);
    /// Leaves `message` for the core `apic_id` (of the same partition) and signals it.
    fn send_message(&self, apic_id: ApicId, message: Message);
    /// The state of partition `partition` (doorbells reach only running members).
    fn partition_state(&self, partition: PartitionIndex) -> PartitionState;
    /// After an NMI exit: whether the guest should receive an NMI (its own, not a signal).
    fn guest_nmi_after_exit(&self, context: &CoreContext) -> bool;
    /// Whether the core's partition may ring channel `channel` once more within the
    /// channel's `doorbell-budget` (rings per second per member).
    fn doorbell_allowed(&self, context: &CoreContext, channel: usize) -> bool;
    /// Whether `partition` holds channel `channel` now: a member of a channel a standby
    /// takes over uses it only while it holds its pair's devices (docs/health.md,
    /// "Channels at a takeover"); every member of any other channel always.
    fn holds_channel(&self, partition: PartitionIndex, channel: usize) -> bool;
    /// Whether a console line the guest caused (a refusal, a start-up) may be written: a
    /// rate limit per partition, so no guest can flood the shared console.
    fn may_log(&self, context: &CoreContext) -> bool;
    /// Switches the machine off (a partition with the `power` capability asked).
    fn power_off(&self, requested_by: &str) -> !;
    /// The core's partition declared a fatal error (`code` is its own): the health event
    /// `declared-fatal`. True if the partition runs on (its policy says `log`).
    fn declare_fatal(&self, context: &CoreContext, code: u64) -> bool;
    /// A heartbeat of the core's partition for its watchdog; the period in microseconds
    /// (0: it has no watchdog).
    fn heartbeat(&self, context: &CoreContext) -> u64;
    /// One entry of the health log of `partition` (see `Call::HealthLog`); None for an
    /// unknown selector.
    fn health_log(&self, partition: PartitionIndex, selector: u64) -> Option<u64>;
    /// Whether the core's partition is a standby holding none of its pair's devices now.
    fn is_waiting_standby(&self, context: &CoreContext) -> bool;
}

/// The counters' view of an exit: one slot per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ExitReason {
    Cpuid,
    Io,
    ControlRegister,
    Xsetbv,
    MsrRead,
    MsrWrite,
    Hypercall,
    NestedPageFault,
    /// A nested page fault on the IOAPIC page: an emulated IOAPIC access.
    Ioapic,
    TripleFault,
    CacheFlush,
    MonitorWait,
    ReflectedException,
    Nmi,
    Init,
    VirtualizationInstruction,
    InvalidGuestState,
    Other,
}

impl ExitReason {
    pub const COUNT: usize = 18;
    pub const ALL: [ExitReason; Self::COUNT] = [
        ExitReason::Cpuid,
        ExitReason::Io,
        ExitReason::ControlRegister,
        ExitReason::Xsetbv,
        ExitReason::MsrRead,
        ExitReason::MsrWrite,
        ExitReason::Hypercall,
        ExitReason::NestedPageFault,
        ExitReason::Ioapic,
        ExitReason::TripleFault,
        ExitReason::CacheFlush,
        ExitReason::MonitorWait,
        ExitReason::ReflectedException,
        ExitReason::Nmi,
        ExitReason::Init,
        ExitReason::VirtualizationInstruction,
        ExitReason::InvalidGuestState,
        ExitReason::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Cpuid => "cpuid",
            ExitReason::Io => "io",
            ExitReason::ControlRegister => "cr",
            ExitReason::Xsetbv => "xsetbv",
            ExitReason::MsrRead => "msr-read",
            ExitReason::MsrWrite => "msr-write",
            ExitReason::Hypercall => "hypercall",
            ExitReason::NestedPageFault => "npf",
            ExitReason::Ioapic => "ioapic",
            ExitReason::TripleFault => "triple-fault",
            ExitReason::CacheFlush => "cache-flush",
            ExitReason::MonitorWait => "monitor-wait",
            ExitReason::ReflectedException => "reflected-exception",
            ExitReason::Nmi => "nmi",
            ExitReason::Init => "init",
            ExitReason::VirtualizationInstruction => "virt-insn",
            ExitReason::InvalidGuestState => "invalid-state",
            ExitReason::Other => "other",
        }
    }

    /// The counter slot of `exit`.
    #[inline]
    pub fn of(exit: &Exit) -> Self {
        match exit {
            Exit::Cpuid => ExitReason::Cpuid,
            Exit::Io { .. } => ExitReason::Io,
            Exit::ControlRegister(_) => ExitReason::ControlRegister,
            Exit::Xsetbv { .. } => ExitReason::Xsetbv,
            Exit::MsrRead { .. } => ExitReason::MsrRead,
            Exit::MsrWrite { .. } => ExitReason::MsrWrite,
            Exit::Hypercall => ExitReason::Hypercall,
            Exit::NestedPageFault { guest_physical, .. } if ioapic::covers(*guest_physical) => {
                ExitReason::Ioapic
            }
            Exit::NestedPageFault { .. } => ExitReason::NestedPageFault,
            Exit::TripleFault => ExitReason::TripleFault,
            Exit::CacheFlush => ExitReason::CacheFlush,
            Exit::MonitorWait => ExitReason::MonitorWait,
            Exit::ReflectedException(_) => ExitReason::ReflectedException,
            Exit::Nmi => ExitReason::Nmi,
            Exit::Init => ExitReason::Init,
            Exit::VirtualizationInstruction => ExitReason::VirtualizationInstruction,
            Exit::InvalidGuestState => ExitReason::InvalidGuestState,
            Exit::Other(_) => ExitReason::Other,
        }
    }
}

/// Handles one exit; shared by both backends. Inlined into each backend's run loop: it is
/// the dispatch of every exit.
#[inline(always)]
pub fn handle_exit(
    vcpu: &mut impl VirtualCpu,
    exit: Exit,
    context: &CoreContext,
    control: &impl PartitionControl,
) -> Flow {
    control.count_exit(context, ExitReason::of(&exit));
    let contain = |reason, address, detail, rip| {
        control.contain(
            context,
            Containment {
                reason,
                address,
                detail,
                rip,
            },
        );
        Flow::Stop
    };
    match exit {
        Exit::Cpuid => cpuid::handle(vcpu),
        Exit::Io(access) => io::handle(vcpu, context, control, access),
        // VMX reports the instruction's length; only SVM's EFER writes (below) need one.
        Exit::ControlRegister(write) => cr::handle(vcpu, context, write, 0),
        Exit::Xsetbv { index, value } => xsetbv::handle(vcpu, index, value),
        Exit::MsrRead { msr } => msr::read(vcpu, context, msr),
        Exit::MsrWrite { msr, value } => msr::write(vcpu, context, control, msr, value),
        Exit::Hypercall => hypercall::handle(vcpu, context, control),
        Exit::NestedPageFault { guest_physical, .. } if ioapic::covers(guest_physical) => {
            ioapic::handle(vcpu, context, control, guest_physical)
        }
        Exit::NestedPageFault { guest_physical, .. }
            if pci::covers_ecam(context, guest_physical) =>
        {
            pci::handle_ecam(vcpu, context, control, guest_physical)
        }
        Exit::NestedPageFault {
            guest_physical,
            fetch: false,
            ..
        } if pci::covers_msix(context, guest_physical) => {
            pci::handle_msix(vcpu, context, control, guest_physical)
        }
        Exit::NestedPageFault {
            guest_physical,
            write,
            fetch,
        } => {
            let access = if fetch {
                "fetch"
            } else if write {
                "write"
            } else {
                "read"
            };
            contain("npf", guest_physical, access, vcpu.rip())
        }
        Exit::TripleFault => contain("triple-fault", 0, "shutdown", vcpu.rip()),
        Exit::Nmi => {
            // The hypervisor's own NMIs are signals (what they ask for is in the partition
            // state or the core's message slot, read by the run loop); the guest's own NMIs
            // (an NMI IPI inside the partition, LVT NMI) are delivered to it.
            if control.guest_nmi_after_exit(context) {
                vcpu.inject_nmi();
            }
            Flow::Resume
        }
        Exit::Init => contain("init", 0, "INIT signal", vcpu.rip()),
        Exit::VirtualizationInstruction => {
            vcpu.inject_exception(Exception::InvalidOpcode);
            Flow::Resume
        }
        // A trapped WBINVD or INVD completes as a no-op: write-back caches are coherent for
        // a partition without passthrough DMA, so only timing changes — and the partition's
        // neighbours are spared the flush of caches they share (docs/partition-table.md,
        // `wbinvd`). INVD may not discard other partitions' dirty lines: it is a WBINVD too.
        // Both are two bytes (0F 09, 0F 08).
        // Both are privileged (#GP(0) at CPL > 0, SDM vol. 2 "WBINVD", "INVD"); QEMU takes
        // the intercept before that check, so the hypervisor makes it.
        Exit::CacheFlush if vcpu.privilege_level() != 0 => {
            vcpu.inject_exception(Exception::GeneralProtection);
            Flow::Resume
        }
        Exit::CacheFlush => {
            vcpu.skip_instruction(2);
            Flow::Resume
        }
        // CPUID shows neither MONITOR nor MWAIT, so they fault as on a processor without them.
        Exit::MonitorWait => {
            vcpu.inject_exception(Exception::InvalidOpcode);
            Flow::Resume
        }
        // Reflected unchanged: the exit exists only so that the run loop sees its signals.
        Exit::ReflectedException(exception) => {
            vcpu.inject_exception(exception);
            Flow::Resume
        }
        Exit::InvalidGuestState => contain("invalid-state", 0, "VM entry refused", vcpu.rip()),
        Exit::Other(code) => contain("unexpected-exit", code, "exit code", vcpu.rip()),
    }
}
