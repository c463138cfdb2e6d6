//! The static partition table as the hypervisor sees it after lowering.
//!
//! Every address is a host-physical byte address unless its name says `guest`.
//! Lists are sorted and free of overlaps: the config crate's validation guarantees it
//! and the generated code pins the counts with `const` assertions.

/// A half-open byte range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

impl Range {
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }
    /// One past the last byte. Validation rules out ranges that wrap.
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
    pub const fn contains(&self, address: u64) -> bool {
        address >= self.base && address - self.base < self.size
    }
}

/// Access rights of a stage-2 (nested / extended page table) mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Rights {
    pub const RWX: Rights = Rights {
        read: true,
        write: true,
        execute: true,
    };
    pub const RW: Rights = Rights {
        read: true,
        write: true,
        execute: false,
    };
}

/// One region of a partition's guest-physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapping {
    /// Where the guest sees it.
    pub guest: u64,
    /// Where it really is.
    pub host: Range,
    pub rights: Rights,
    /// What the region is, for the guest's memory map and for messages.
    pub kind: MappingKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// Ordinary RAM owned by the partition alone.
    Ram,
    /// The shared memory of the channel with this index in [`Machine::channels`].
    Channel(u16),
    /// A passthrough device's MMIO window (uncached).
    DeviceMmio,
}

/// Something that went wrong in or with a partition, as the health monitor counts it
/// (docs/health.md). The discriminant is the event's index in per-event arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum HealthEvent {
    /// A stage-2 fault: an access to guest-physical memory the partition does not own.
    MemoryViolation = 0,
    /// A triple fault (shutdown) of one of its cores.
    Shutdown = 1,
    /// The processor refused to enter the guest (invalid guest state).
    EntryFailure = 2,
    /// The guest wrote its reset register (port 0xcf9 or the ACPI reset register).
    ResetRequest = 3,
    /// An exit the hypervisor does not expect from a guest.
    UnexpectedExit = 4,
    /// The partition missed a heartbeat period of its watchdog.
    WatchdogExpiry = 5,
    /// A restart was due but the partition has used up its restart budget.
    RestartBudgetExhausted = 6,
    /// The guest declared a fatal error itself (hypercall `declare-fatal`).
    DeclaredFatal = 7,
    /// A DMA or interrupt-remapping fault of one of its devices (reserved: no IOMMU yet).
    DeviceFault = 8,
}

impl HealthEvent {
    pub const COUNT: usize = 9;
    /// Every event, in index order.
    pub const ALL: [HealthEvent; Self::COUNT] = [
        HealthEvent::MemoryViolation,
        HealthEvent::Shutdown,
        HealthEvent::EntryFailure,
        HealthEvent::ResetRequest,
        HealthEvent::UnexpectedExit,
        HealthEvent::WatchdogExpiry,
        HealthEvent::RestartBudgetExhausted,
        HealthEvent::DeclaredFatal,
        HealthEvent::DeviceFault,
    ];

    /// The event's name in a partition table and in the log.
    pub const fn name(self) -> &'static str {
        match self {
            HealthEvent::MemoryViolation => "memory-violation",
            HealthEvent::Shutdown => "shutdown",
            HealthEvent::EntryFailure => "entry-failure",
            HealthEvent::ResetRequest => "reset-request",
            HealthEvent::UnexpectedExit => "unexpected-exit",
            HealthEvent::WatchdogExpiry => "watchdog-expiry",
            HealthEvent::RestartBudgetExhausted => "restart-budget-exhausted",
            HealthEvent::DeclaredFatal => "declared-fatal",
            HealthEvent::DeviceFault => "device-fault",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(index: u64) -> Option<HealthEvent> {
        HealthEvent::ALL.get(usize::try_from(index).ok()?).copied()
    }

    /// Whether the partition can run on after the event when nothing is done about it. A
    /// core that took a stage-2 fault, a triple fault, a refused entry or an unknown exit
    /// cannot resume where it stopped, so "log only" is no answer to those.
    pub const fn partition_can_continue(self) -> bool {
        matches!(
            self,
            HealthEvent::ResetRequest
                | HealthEvent::WatchdogExpiry
                | HealthEvent::DeclaredFatal
                | HealthEvent::DeviceFault
        )
    }
}

/// What the health monitor does about an event (docs/health.md). The discriminant is the
/// action's index in per-action arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum HealthAction {
    /// Count and log the event; the partition runs on.
    Log = 0,
    /// Stop the partition on all of its cores.
    Halt = 1,
    /// Reload the partition's images and start it again; its devices are left as they are
    /// (only its IOAPIC pins are masked, so that no interrupt reaches a guest without an IDT).
    WarmRestart = 2,
    /// A warm restart that also returns the partition's devices to their reset state, as
    /// far as the hypervisor can (docs/health.md says how far that is today).
    ColdRestart = 3,
    /// Stop the partition and hand its devices (I/O ports, IOAPIC pins) to its standby
    /// partition (`standby-for`), which is then signalled; only for a partition that has a
    /// standby (validation).
    SwitchToStandby = 4,
    /// Reset the whole machine. Needs the `power` capability.
    MachineReset = 5,
    /// Power the whole machine off. Needs the `power` capability.
    MachinePowerOff = 6,
}

impl HealthAction {
    pub const COUNT: usize = 7;
    /// Every action, in index order.
    pub const ALL: [HealthAction; Self::COUNT] = [
        HealthAction::Log,
        HealthAction::Halt,
        HealthAction::WarmRestart,
        HealthAction::ColdRestart,
        HealthAction::SwitchToStandby,
        HealthAction::MachineReset,
        HealthAction::MachinePowerOff,
    ];

    /// The action's name in a partition table and in the log.
    pub const fn name(self) -> &'static str {
        match self {
            HealthAction::Log => "log",
            HealthAction::Halt => "halt",
            HealthAction::WarmRestart => "warm-restart",
            HealthAction::ColdRestart => "cold-restart",
            HealthAction::SwitchToStandby => "standby",
            HealthAction::MachineReset => "machine-reset",
            HealthAction::MachinePowerOff => "machine-power-off",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the action restarts the partition (and so spends its restart budget).
    pub const fn is_restart(self) -> bool {
        matches!(self, HealthAction::WarmRestart | HealthAction::ColdRestart)
    }

    /// Whether the action reaches beyond the partition (needs the `power` capability).
    pub const fn is_machine_wide(self) -> bool {
        matches!(
            self,
            HealthAction::MachineReset | HealthAction::MachinePowerOff
        )
    }
}

/// What an escalation rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EscalationTrigger {
    /// Occurrences of an event.
    Event(HealthEvent),
    /// Times the monitor decided on an action.
    Action(HealthAction),
}

/// "`count` of `trigger` within `window_microseconds` → `to` instead". An event rule fires
/// on the `count`-th event within the window; an action rule fires when the action has
/// already been taken `count` times within the window (docs/health.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escalation {
    pub trigger: EscalationTrigger,
    /// 1 ..= [`HealthPolicy::MAX_ESCALATION_COUNT`].
    pub count: u16,
    pub window_microseconds: u64,
    pub to: HealthAction,
}

/// A partition's health-monitor table, lowered (`[partition.health]`, or `on-fault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// The action for each event, by [`HealthEvent::index`].
    pub actions: [HealthAction; HealthEvent::COUNT],
    /// At most one rule per trigger; the action rules form no cycle (validation).
    pub escalations: &'static [Escalation],
    /// Restarts the partition may have in its life; the one after that raises
    /// [`HealthEvent::RestartBudgetExhausted`] instead.
    pub restart_limit: u32,
    /// The heartbeat period of its watchdog; 0 when it has none.
    pub watchdog_period_microseconds: u64,
    /// Whether it has a hot standby, or is one (`standby-for`).
    pub standby: StandbyRole,
}

/// A partition's part in a hot-standby pair (docs/health.md, "Hot standby").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyRole {
    None,
    /// A primary: the partition with index `standby` takes over its devices on the
    /// `standby` action. With `rejoin_vector` (`rejoin-as-standby`), the pair swaps roles
    /// at each failover: the member that failed restarts (cold) as the other's standby, and
    /// is sent this vector (the primary) or the standby's `takeover_vector` when it takes
    /// the devices back.
    Primary {
        standby: u16,
        rejoin_vector: Option<u8>,
    },
    /// A standby for the partition with index `primary`: it boots with it, holds no
    /// devices, and is sent `takeover_vector` (a fixed interrupt on its boot core) once it
    /// holds the primary's devices.
    Standby {
        primary: u16,
        takeover_vector: u8,
    },
}

impl HealthPolicy {
    /// The largest escalation `count`: each rule keeps the times of its last `count`
    /// occurrences, in a fixed array of this size.
    pub const MAX_ESCALATION_COUNT: usize = 16;
    /// At most one rule per event and one per action.
    pub const MAX_ESCALATIONS: usize = HealthEvent::COUNT + HealthAction::COUNT;
    /// The restart limit `on-fault` implies, and `[partition.health]` without one.
    pub const DEFAULT_RESTART_LIMIT: u32 = 16;

    /// The policy `on-fault = "halt"` stands for: every event halts.
    pub const HALT: HealthPolicy = HealthPolicy {
        actions: [HealthAction::Halt; HealthEvent::COUNT],
        escalations: &[],
        restart_limit: Self::DEFAULT_RESTART_LIMIT,
        watchdog_period_microseconds: 0,
        standby: StandbyRole::None,
    };

    /// The policy `on-fault = "restart"` stands for: every event restarts (warm), until the
    /// restart budget is used up; then the partition halts.
    pub const RESTART: HealthPolicy = {
        let mut actions = [HealthAction::WarmRestart; HealthEvent::COUNT];
        actions[HealthEvent::RestartBudgetExhausted.index()] = HealthAction::Halt;
        HealthPolicy {
            actions,
            escalations: &[],
            restart_limit: Self::DEFAULT_RESTART_LIMIT,
            watchdog_period_microseconds: 0,
            standby: StandbyRole::None,
        }
    };

    /// The action the table gives `event` before escalation.
    pub const fn action(&self, event: HealthEvent) -> HealthAction {
        self.actions[event.index()]
    }
}

/// A file (or build-generated block) the image carries for a partition: a guest ELF, a
/// Linux kernel, an initrd, boot parameters, page tables, ACPI tables.
#[derive(Clone, Copy, Debug)]
pub struct Blob {
    pub bytes: &'static [u8],
    /// SHA-256 of `bytes`, computed at build time and checked before the partition starts.
    pub sha256: [u8; 32],
}

/// A loadable piece of a blob: bytes `[file_offset, file_offset + file_size)` of blob
/// `blob` go to guest-physical `guest`, followed by `memory_size - file_size` zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub guest: u64,
    pub blob: u16,
    pub file_offset: u64,
    pub file_size: u64,
    pub memory_size: u64,
}

/// The boot protocol a partition's first core enters by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// PVH (Xen's `XEN_ELFNOTE_PHYS32_ENTRY`): 32-bit protected mode, paging off, EBX =
    /// guest-physical address of the `hvm_start_info` block the hypervisor writes at boot
    /// (command line and memory map included).
    Pvh { entry: u64 },
    /// The Linux x86-64 boot protocol (Documentation/arch/x86/boot.rst, "64-bit boot
    /// protocol"): long mode, paging on with the identity map at `page_tables` (a CR3
    /// value; the tables are a segment), a GDT at `gdt` (32 bytes: null, null, __BOOT_CS =
    /// 0x10 64-bit code, __BOOT_DS = 0x18 data; a segment), RSI = `boot_params` (the zero
    /// page, a segment).
    Linux64 {
        entry: u64,
        boot_params: u64,
        page_tables: u64,
        gdt: u64,
    },
}

/// How a partition starts.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub blobs: &'static [Blob],
    pub segments: &'static [Segment],
    pub entry: Entry,
    /// The command line. PVH: the hypervisor puts it in the start-info block. Linux: it is
    /// written NUL-terminated at `cmdline_guest` (where boot_params.cmd_line_ptr points),
    /// with ` tsc_early_khz=<calibrated>` appended at boot, within `cmdline_capacity` bytes.
    pub cmdline: &'static str,
    pub cmdline_guest: u64,
    pub cmdline_capacity: u64,
}

/// The capabilities of a partition (see docs/partition-table.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// May power the machine off or reboot it.
    Power,
    /// May read the state and counters of the partition with this index.
    Stats(u16),
    /// May halt the partition with this index.
    Halt(u16),
    /// May restart the partition with this index.
    Restart(u16),
    /// May read the health log (event counts) of the partition with this index.
    Health(u16),
}

/// What WBINVD and INVD do in a partition (`wbinvd` in the table; see
/// docs/partition-table.md). MONITOR and MWAIT are intercepted in either case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheControl {
    /// WBINVD runs on the processor: it writes back and invalidates every cache of the
    /// core, the caches it shares with other partitions' cores included, and stalls them
    /// while it runs.
    Native,
    /// The hypervisor intercepts WBINVD and INVD and completes WBINVD as a no-op (the
    /// default).
    Trap,
}

/// One partition, lowered.
#[derive(Debug)]
pub struct Partition {
    pub name: &'static str,
    /// x2APIC IDs of its cores; the first one is the boot core.
    pub cpus: &'static [u32],
    /// Sorted by guest address, disjoint.
    pub memory: &'static [MemoryMapping],
    /// I/O port ranges passed through; every other port reads all-ones and ignores writes.
    pub ports: &'static [Range],
    /// IOAPIC pins its devices own.
    pub irq_pins: &'static [u8],
    pub boot: Boot,
    /// Its health-monitor table (`[partition.health]`, `on-fault`).
    pub health: HealthPolicy,
    pub capabilities: &'static [Capability],
    /// The hypercalls guest user mode (CPL > 0) may make, as a mask of
    /// [`crate::hypercall::Call::bit`]s; any other call from user mode is refused with #UD.
    /// Never holds [`crate::hypercall::Call::StopSelf`] or
    /// [`crate::hypercall::Call::PowerOff`] (validation refuses them).
    pub user_hypercalls: u64,
    /// What WBINVD and INVD do.
    pub cache_control: CacheControl,
    /// Number of 4 KiB pages its stage-2 page tables need (computed at build time from the
    /// same plan the hypervisor builds at boot).
    pub stage2_table_pages: usize,
    /// The PCI functions it owns, on its virtual bus (docs/pci-iommu.md), in table order.
    pub pci_functions: &'static [PciFunction],
    /// Whether its virtual bus answers on configuration mechanism #1 (0xCF8/0xCFC); when
    /// false (`pci-config = "ecam-only"`) only the virtual ECAM window reaches it.
    pub pci_conf1: bool,
}

/// A PCI function address packed as the requester ID: bus in bits 15:8, device in 7:3,
/// function in 2:0 (PCIe Base 4.0 §2.2.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf(pub u16);

impl Bdf {
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        Self(((bus as u16) << 8) | (((device & 0x1f) as u16) << 3) | (function & 7) as u16)
    }
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }
    pub const fn function(self) -> u8 {
        (self.0 & 7) as u8
    }
}

/// A PCI bridge on bus 0 of the table (`platform.pci-bridges`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBridge {
    pub physical: Bdf,
    /// The Bus Number registers (PCI-to-PCI Bridge 1.2 §3.2.5.3–5): the bus right below
    /// and the highest bus below.
    pub secondary: u8,
    pub subordinate: u8,
    pub kind: PciBridgeKind,
}

/// What a bridge does to the requester IDs of the functions below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciBridgeKind {
    /// A conventional PCI-to-PCI bridge (header type 1, no PCI Express capability): the
    /// functions below share one requester ID.
    Pci,
    /// A PCI Express to PCI/PCI-X bridge (device/port type 0111b, PCIe Base 4.0
    /// §7.5.3.2): the functions below share one requester ID.
    PcieToPci,
    /// A root port or switch downstream port (0100b, 0110b): each function below keeps its
    /// own requester ID.
    PciePort,
}

impl PciBridgeKind {
    /// The word the table and the boot log use.
    pub const fn name(self) -> &'static str {
        match self {
            PciBridgeKind::Pci => "pci",
            PciBridgeKind::PcieToPci => "pcie-to-pci",
            PciBridgeKind::PciePort => "pcie-port",
        }
    }

    /// Whether the functions below share one requester ID.
    pub const fn aliases_requesters(self) -> bool {
        !matches!(self, PciBridgeKind::PciePort)
    }
}

/// The interrupt a passed-through PCI function may use (`interrupt` in the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciInterrupt {
    /// None: MSI and MSI-X are hidden and the interrupt pin reads 0.
    None,
    /// The INTx pin, routed to this IOAPIC pin.
    Intx { ioapic_pin: u8 },
    /// MSI with this many vectors (1–32, a power of two).
    Msi { vectors: u8 },
    /// MSI-X with this many vectors (1–2048).
    Msix { vectors: u16 },
}

/// One PCI function passed through to a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// The device's name in the table (`[platform.devices]`), for boot refusals.
    pub name: &'static str,
    /// Where it is on the machine (segment 0).
    pub physical: Bdf,
    /// Where the partition sees it on its virtual bus 0.
    pub virtual_address: Bdf,
    /// The table's `mmio` windows: every memory BAR must lie inside one (checked at boot);
    /// empty when the table gives none and the BARs are taken as the hardware reports them.
    pub bar_windows: &'static [Range],
    pub interrupt: PciInterrupt,
    /// Whether an IOMMU domain must confine its DMA (`dma = "confined"`, the default).
    pub dma_confined: bool,
}

#[derive(Debug)]
pub struct Channel {
    pub name: &'static str,
    pub memory: Range,
    /// Partition indices of its members (the table's, then the standbys that take it over).
    pub members: &'static [u16],
    /// Standbys (partition indices, also in `members`) that the table does not list but that
    /// take the channel over from their primary: such a standby and its primary may use the
    /// channel (memory and doorbell) only while they hold the pair's devices.
    pub takeover_standbys: &'static [u16],
    pub doorbell_vector: u8,
    /// The most rings per second the hypervisor accepts from each member (1–1,000,000;
    /// `doorbell-budget` in the table, 10,000 by default).
    pub doorbell_rings_per_second: u32,
}

/// A UART the hypervisor writes its console to.
#[derive(Clone, Copy, Debug)]
pub struct Console {
    pub port: u16,
}

/// The I/O APIC: its register page and number of input pins.
#[derive(Clone, Copy, Debug)]
pub struct Ioapic {
    pub base: u64,
    pub pins: u8,
}

/// The whole machine as the table describes it.
#[derive(Debug)]
pub struct Machine {
    /// The table's file name, for the banner.
    pub table_name: &'static str,
    pub platform_name: &'static str,
    /// x2APIC IDs of every core the table uses (hypervisor-only cores included).
    pub cpus: &'static [u32],
    /// Platform RAM as the table declares it; the hypervisor checks the firmware map covers it.
    pub ram: &'static [Range],
    pub hypervisor_memory: Range,
    pub console: Console,
    pub ioapic: Option<Ioapic>,
    /// The PCI Express configuration window (ECAM, segment 0 from bus 0), if the table
    /// declares one; partitions with PCI functions see a one-bus virtual ECAM window at its
    /// base.
    pub ecam: Option<Range>,
    /// The IOMMU register windows the table declares (`platform.iommu`), in table order;
    /// the hypervisor checks them against the firmware's units at boot (docs/pci-iommu.md,
    /// "Discovery at boot").
    pub iommu: &'static [Range],
    /// The bridges on bus 0 the table declares (`platform.pci-bridges`); the hypervisor
    /// checks each table function's upstream bridge against them at boot (docs/pci-iommu.md,
    /// "Discovery at boot").
    pub pci_bridges: &'static [PciBridge],
    pub partitions: &'static [Partition],
    pub channels: &'static [Channel],
}
