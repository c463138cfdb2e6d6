//! The rules a partition table must obey, each with a stable identifier that appears in
//! diagnostics, documentation (docs/validation.md) and tests. Identifiers never change
//! meaning; new rules get new identifiers. Retired identifiers (see [`Rule::RETIRED`]) are
//! never reused.

use std::fmt;

/// One rule of the partition table. [`Rule::id`] is its stable identifier,
/// [`Rule::meaning`] its one-sentence meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    // file
    /// The table file cannot be read as UTF-8 text.
    TableUnreadable,
    /// The text is not valid TOML (or, after the schema pass, does not deserialize).
    Syntax,
    /// A key the format does not know; unknown keys are errors, never ignored.
    UnknownKey,
    /// A key the format requires is absent.
    MissingKey,
    /// A value has the wrong TOML type (e.g. a string where an integer belongs).
    WrongType,
    /// An integer is negative or too large for its key (core IDs and pins are 32-bit).
    IntegerRange,
    /// A size string is not a decimal number with a binary unit (B, KiB, MiB, GiB, TiB).
    SizeUnit,
    /// A PCI address is not `bb:dd.f` with device at most 1f and function at most 7.
    PciSyntax,
    /// A string is not one of the values its key allows (`on-fault`, `boot.kind`, `wbinvd`, health events and actions).
    UnknownValue,
    /// A duration string is not a decimal number with a unit (us, ms, s, min).
    DurationUnit,
    // names
    /// Partition, channel and device names are `[a-z0-9-]+`.
    NameSyntax,
    /// Partition, channel and device names are unique within their kind.
    NameDuplicate,
    // cores
    /// A core is listed twice in `platform.cpus` or in one partition.
    CoreDuplicate,
    /// A partition names a core that `platform.cpus` does not list.
    CoreUnknown,
    /// A core is owned by more than one partition.
    CoreShared,
    /// A partition has no core.
    PartitionNoCore,
    /// The table defines no partition at all.
    PartitionNone,
    // memory
    /// A memory range (RAM, partition, channel, hypervisor, MMIO, window) has size zero.
    MemoryEmpty,
    /// A memory range's base or size, or a region's `guest` address, is not a multiple of 4 KiB.
    MemoryAlignment,
    /// A range's base plus size overflows 64 bits (the range wraps around the address space).
    MemoryWrap,
    /// A host-physical range ends beyond 2^52, the architectural physical address width.
    MemoryAddressWidth,
    /// Partition, channel or hypervisor memory is not inside the platform's RAM.
    MemoryOutsideRam,
    /// Host-physical memory of partitions, channels, the hypervisor or device MMIO overlaps.
    MemoryOverlap,
    /// A range overlaps a platform window the hypervisor keeps: the local APIC (0xfee00000, 1 MiB), the IOAPIC page, ECAM or an IOMMU.
    MemoryWindow,
    /// Partition or channel memory overlaps a page the hypervisor reserves: 0x0–0xfff or its AP trampoline 0x8000–0x8fff.
    MemoryReserved,
    /// Two platform RAM ranges overlap.
    RamOverlap,
    /// Guest-physical ranges (RAM, channels, MMIO) inside one partition overlap.
    GuestOverlap,
    /// A guest-physical range ends beyond 2^48, which four-level stage-2 tables cannot translate.
    GuestAddressWidth,
    /// A partition has no memory region.
    PartitionNoMemory,
    // devices
    /// A partition names a device that `platform.devices` does not define.
    DeviceUnknown,
    /// A device is owned by more than one partition.
    DeviceShared,
    /// A partition lists the same device twice.
    DeviceDuplicate,
    /// An I/O port range is empty or extends beyond port 0xffff.
    PortRange,
    /// Port ranges of devices with different owners overlap (the same hardware under two names).
    PortOverlap,
    /// MMIO windows of devices with different owners overlap (the same hardware under two names).
    MmioOverlap,
    /// One PCI function is named by devices with different owners (the same hardware under two names).
    PciShared,
    /// A device's PCI bus lies beyond the buses the declared ECAM window covers.
    PciOutsideEcam,
    /// A function's virtual address is not on bus 0 or is 00:00.0, where every partition sees its virtual host bridge.
    PciVirtualAddress,
    /// Two PCI functions of one partition appear at the same virtual address.
    PciVirtualShared,
    /// Guest-physical memory of a partition with PCI functions overlaps its virtual ECAM window (bus 0: 1 MiB at the platform's ECAM base).
    PciEcamWindow,
    /// A PCI function's interrupt is inconsistent: `intx` without an `irq` pin or with `vectors`, MSI vectors not a power of two from 1 to 32, MSI-X vectors not from 1 to 2048.
    PciInterrupt,
    /// `virtual-pci`, `interrupt` or `dma` is given to a device without `pci`.
    PciKeyWithoutFunction,
    /// A partition's PCI function with confined DMA (the default) is covered by no IOMMU unit of `platform.iommu`; `dma = "unconfined"` accepts it with a warning.
    PciDmaUncovered,
    /// `pci-config = "ecam-only"` on a partition that owns no PCI function, or on a platform without `ecam` (no window to reach the bus through).
    PciConfig,
    /// A `platform.pci-bridges` entry is not on bus 0, has secondary bus 0 or a subordinate bus below its secondary, shares its address or buses with another bridge, or is also a device's `pci` function.
    PciBridge,
    /// A PCI function on a bus other than 0 is not on the secondary bus of a bridge of `platform.pci-bridges`.
    PciBehindBridge,
    /// Functions behind one conventional (`pci`) or PCIe-to-PCI (`pcie-to-pci`) bridge belong to different partitions: they share a requester ID, so no IOMMU tells their DMA apart.
    PciBridgeSplit,
    /// A partition's function behind a `pci` or `pcie-to-pci` bridge has confined DMA: the IOMMU sees the bridge's requester ID, and confinement by an alias is not built; `dma = \"unconfined\"` accepts it with a warning.
    PciDmaAlias,
    /// A device's IRQ pin is not below the IOAPIC's pin count.
    IrqPin,
    /// One IOAPIC pin is used by devices of different owners; a pin is routed only by its owner.
    IrqShared,
    /// A device has an IRQ pin but the platform declares no IOAPIC.
    IrqNoIoapic,
    /// A partition's device owns a port of the virtual platform (ACPI sleep and reset registers: 0x510, 0x511, 0xcf9), which the hypervisor keeps.
    PortReserved,
    /// A partition's device owns a legacy chipset port that acts on the whole machine (8237 DMA controllers and page registers, 8259 PICs, 8254 PIT, 8042, NMI status, CMOS/RTC index, fast A20, APM/SMI command, PCI configuration 0xcf8–0xcff).
    PortMachineWide,
    /// A partition's device owns a port of the ACPI fixed-hardware block of a platform the validator knows (`qemu-q35`: 0x600–0x67f).
    PortAcpiFixed,
    // console
    /// The hypervisor console names no device of `platform.devices`.
    ConsoleUnknown,
    /// The hypervisor console device is also given to a partition.
    ConsoleOwned,
    /// The hypervisor console device has no I/O port.
    ConsoleNoPort,
    // capabilities
    /// A capability is not `power`, `stats:<partition|*>`, `halt:<partition>`, `restart:<partition>` or `health:<partition>`.
    CapabilitySyntax,
    /// A capability names a partition that does not exist.
    CapabilityTarget,
    /// A partition lists the same capability twice.
    CapabilityDuplicate,
    /// `user-hypercalls` names a hypercall that does not exist.
    UserHypercallUnknown,
    /// `user-hypercalls` grants `stop-self`, `power-off` or `declare-fatal`, which act on the whole partition or machine and never come from user mode.
    UserHypercallPrivileged,
    /// A partition lists the same user-mode hypercall twice.
    UserHypercallDuplicate,
    // channels
    /// A channel member is not a partition, or is listed twice.
    ChannelMember,
    /// A channel has fewer than two distinct member partitions.
    ChannelMemberCount,
    /// A channel's memory size is zero or not a multiple of 4 KiB.
    ChannelSize,
    /// A doorbell vector is outside 32–255.
    DoorbellVector,
    /// Two channels with a common member use the same doorbell vector, so the member cannot tell them apart.
    DoorbellShared,
    /// A channel's `doorbell-budget` is outside 1–1,000,000 rings per second.
    DoorbellBudget,
    // boot
    /// A boot key the kind needs is missing (`image` for elf; `kernel`, `initrd` for linux).
    BootIncomplete,
    /// A boot key does not belong to the kind.
    BootExtraKey,
    /// A boot file does not exist or cannot be read.
    BootFileMissing,
    /// A boot image is not an ELF64 x86-64 executable with a PVH entry note.
    BootImageFormat,
    /// A loadable ELF segment lies outside the partition's guest-physical RAM.
    BootSegmentOutside,
    /// The PVH entry point lies outside the partition's guest-physical RAM.
    BootEntryOutside,
    /// Guest RAM does not cover guest-physical 0x1000–0x1fff, where the hypervisor writes the PVH start-info block, or an ELF segment overlaps that page.
    BootStartInfo,
    /// A Linux kernel is not a bzImage with boot protocol 2.12 or later and the 64-bit entry point (XLF_KERNEL_64).
    BootKernelFormat,
    /// A linux partition's guest RAM does not cover guest-physical 0–1 MiB (boot parameters, command line, GDT, page tables, ACPI tables).
    BootLowMemory,
    /// The kernel's `pref_address` plus `init_size` is not inside one guest RAM range between 1 MiB and 4 GiB.
    BootKernelPlacement,
    /// The initrd fits nowhere in guest RAM between 1 MiB and the kernel's `initrd_addr_max`, clear of the kernel.
    BootInitrdPlacement,
    /// A linux command line plus ` tsc_early_khz=4294967295` and its NUL exceeds the kernel's `cmdline_size` + 1 (at most 4096 bytes).
    BootCmdlineLength,
    /// A linux partition's memory map needs more than the 128 e820 entries boot_params holds.
    BootMemoryMap,
    // health
    /// An `escalate` rule names neither or both of `event` and `action`; it counts exactly one of them.
    HealthEscalationTrigger,
    /// Two `escalate` rules of one partition count the same event or the same action.
    HealthEscalationDuplicate,
    /// An `escalate` rule's `count` is outside 1–16 (the monitor keeps the times of the last 16 occurrences).
    HealthEscalationCount,
    /// The action rules of `escalate` lead from an action back to itself, so escalation would never settle.
    HealthEscalationCycle,
    /// A watchdog period is outside 1 ms–60 s, or an escalation window outside 1 ms–24 h.
    HealthDuration,
    /// A health action resets or powers off the machine (`machine-reset`, `machine-power-off`), but the partition lacks the `power` capability.
    HealthMachineAction,
    /// `log` is given to an event after which the partition cannot run on (memory-violation, shutdown, entry-failure, unexpected-exit, restart-budget-exhausted).
    HealthLogOnly,
    /// `restart-budget-exhausted` is answered with a restart, which the budget has just run out of.
    HealthBudgetRestart,
    /// A health action is `standby`, but no partition is the standby of this one (`standby-for`).
    HealthStandby,
    /// A partition has a watchdog, but every core of the platform belongs to a partition: the watchdog runs on a core no partition owns.
    HealthWatchdogCore,
    /// `standby-for` names a partition that does not exist, the partition itself, a partition that is itself a standby (no chains or cycles), or a primary that already has a standby.
    StandbyTarget,
    /// A standby partition (`standby-for`) lists a device of its own with an interrupt pin or a PCI function; its own devices may have only ports and MMIO windows, the rest it takes over from its primary.
    StandbyDevices,
    /// `takeover-vector` is missing from a standby, given to a partition without `standby-for`, or outside 32–255.
    StandbyVector,
    /// `rejoin-as-standby` is given to a partition without a standby, or to one that could not be a standby: no `takeover-vector`, or not a member of a channel of its standby.
    StandbyRejoin,
    // run
    /// `run.expect-faults` names a partition that does not exist.
    RunUnknownPartition,
    /// `run.seconds` is zero.
    RunSeconds,
    /// A `run.qemu-disks` entry whose file is not a plain file name, whose size is not a
    /// positive multiple of 512 bytes, or whose file another entry uses too.
    RunDisk,
}

impl Rule {
    /// Every rule, in documentation order.
    pub const ALL: &'static [Rule] = &[
        Rule::TableUnreadable,
        Rule::Syntax,
        Rule::UnknownKey,
        Rule::MissingKey,
        Rule::WrongType,
        Rule::IntegerRange,
        Rule::SizeUnit,
        Rule::PciSyntax,
        Rule::UnknownValue,
        Rule::DurationUnit,
        Rule::NameSyntax,
        Rule::NameDuplicate,
        Rule::CoreDuplicate,
        Rule::CoreUnknown,
        Rule::CoreShared,
        Rule::PartitionNoCore,
        Rule::PartitionNone,
        Rule::MemoryEmpty,
        Rule::MemoryAlignment,
        Rule::MemoryWrap,
        Rule::MemoryAddressWidth,
        Rule::MemoryOutsideRam,
        Rule::MemoryOverlap,
        Rule::MemoryWindow,
        Rule::MemoryReserved,
        Rule::RamOverlap,
        Rule::GuestOverlap,
        Rule::GuestAddressWidth,
        Rule::PartitionNoMemory,
        Rule::DeviceUnknown,
        Rule::DeviceShared,
        Rule::DeviceDuplicate,
        Rule::PortRange,
        Rule::PortOverlap,
        Rule::MmioOverlap,
        Rule::PciShared,
        Rule::PciOutsideEcam,
        Rule::PciVirtualAddress,
        Rule::PciVirtualShared,
        Rule::PciEcamWindow,
        Rule::PciInterrupt,
        Rule::PciKeyWithoutFunction,
        Rule::PciDmaUncovered,
        Rule::PciConfig,
        Rule::PciBridge,
        Rule::PciBehindBridge,
        Rule::PciBridgeSplit,
        Rule::PciDmaAlias,
        Rule::IrqPin,
        Rule::IrqShared,
        Rule::IrqNoIoapic,
        Rule::PortReserved,
        Rule::PortMachineWide,
        Rule::PortAcpiFixed,
        Rule::ConsoleUnknown,
        Rule::ConsoleOwned,
        Rule::ConsoleNoPort,
        Rule::CapabilitySyntax,
        Rule::CapabilityTarget,
        Rule::CapabilityDuplicate,
        Rule::UserHypercallUnknown,
        Rule::UserHypercallPrivileged,
        Rule::UserHypercallDuplicate,
        Rule::ChannelMember,
        Rule::ChannelMemberCount,
        Rule::ChannelSize,
        Rule::DoorbellVector,
        Rule::DoorbellShared,
        Rule::DoorbellBudget,
        Rule::BootIncomplete,
        Rule::BootExtraKey,
        Rule::BootFileMissing,
        Rule::BootImageFormat,
        Rule::BootSegmentOutside,
        Rule::BootEntryOutside,
        Rule::BootStartInfo,
        Rule::BootKernelFormat,
        Rule::BootLowMemory,
        Rule::BootKernelPlacement,
        Rule::BootInitrdPlacement,
        Rule::BootCmdlineLength,
        Rule::BootMemoryMap,
        Rule::HealthEscalationTrigger,
        Rule::HealthEscalationDuplicate,
        Rule::HealthEscalationCount,
        Rule::HealthEscalationCycle,
        Rule::HealthDuration,
        Rule::HealthMachineAction,
        Rule::HealthLogOnly,
        Rule::HealthBudgetRestart,
        Rule::HealthStandby,
        Rule::HealthWatchdogCore,
        Rule::StandbyTarget,
        Rule::StandbyDevices,
        Rule::StandbyVector,
        Rule::StandbyRejoin,
        Rule::RunUnknownPartition,
        Rule::RunSeconds,
        Rule::RunDisk,
    ];

    /// Identifiers of rules that no longer exist, never to be given to a new rule:
    /// `boot-unsupported` (linux partitions could not be started before issue 6),
    /// `standby-cores` (a standby had to have one core before takeovers held its other
    /// cores), `standby-pci` (PCI functions could not move at a takeover before they
    /// moved with their IOMMU domain) and `standby-channels` (a standby had to be a member
    /// of each of its primary's channels before channels moved at a takeover).
    pub const RETIRED: &'static [&'static str] = &[
        "boot-unsupported",
        "standby-cores",
        "standby-pci",
        "standby-channels",
    ];

    /// The stable identifier, e.g. `memory-overlap`.
    pub const fn id(self) -> &'static str {
        match self {
            Rule::TableUnreadable => "table-unreadable",
            Rule::Syntax => "syntax",
            Rule::UnknownKey => "unknown-key",
            Rule::MissingKey => "missing-key",
            Rule::WrongType => "wrong-type",
            Rule::IntegerRange => "integer-range",
            Rule::SizeUnit => "size-unit",
            Rule::PciSyntax => "pci-syntax",
            Rule::UnknownValue => "unknown-value",
            Rule::NameSyntax => "name-syntax",
            Rule::NameDuplicate => "name-duplicate",
            Rule::CoreDuplicate => "core-duplicate",
            Rule::CoreUnknown => "core-unknown",
            Rule::CoreShared => "core-shared",
            Rule::PartitionNoCore => "partition-no-core",
            Rule::PartitionNone => "partition-none",
            Rule::MemoryEmpty => "memory-empty",
            Rule::MemoryAlignment => "memory-alignment",
            Rule::MemoryWrap => "memory-wrap",
            Rule::MemoryAddressWidth => "memory-address-width",
            Rule::MemoryOutsideRam => "memory-outside-ram",
            Rule::MemoryOverlap => "memory-overlap",
            Rule::MemoryWindow => "memory-window",
            Rule::MemoryReserved => "memory-reserved",
            Rule::RamOverlap => "ram-overlap",
            Rule::GuestOverlap => "guest-overlap",
            Rule::GuestAddressWidth => "guest-address-width",
            Rule::PartitionNoMemory => "partition-no-memory",
            Rule::DeviceUnknown => "device-unknown",
            Rule::DeviceShared => "device-shared",
            Rule::DeviceDuplicate => "device-duplicate",
            Rule::PortRange => "port-range",
            Rule::PortOverlap => "port-overlap",
            Rule::MmioOverlap => "mmio-overlap",
            Rule::PciShared => "pci-shared",
            Rule::PciOutsideEcam => "pci-outside-ecam",
            Rule::PciVirtualAddress => "pci-virtual-address",
            Rule::PciVirtualShared => "pci-virtual-shared",
            Rule::PciEcamWindow => "pci-ecam-window",
            Rule::PciInterrupt => "pci-interrupt",
            Rule::PciKeyWithoutFunction => "pci-key-without-function",
            Rule::PciDmaUncovered => "pci-dma-uncovered",
            Rule::PciConfig => "pci-config",
            Rule::PciBridge => "pci-bridge",
            Rule::PciBehindBridge => "pci-behind-bridge",
            Rule::PciBridgeSplit => "pci-bridge-split",
            Rule::PciDmaAlias => "pci-dma-alias",
            Rule::IrqPin => "irq-pin",
            Rule::IrqShared => "irq-shared",
            Rule::IrqNoIoapic => "irq-no-ioapic",
            Rule::PortReserved => "port-reserved",
            Rule::PortMachineWide => "port-machine-wide",
            Rule::PortAcpiFixed => "port-acpi-fixed",
            Rule::ConsoleUnknown => "console-unknown",
            Rule::ConsoleOwned => "console-owned",
            Rule::ConsoleNoPort => "console-no-port",
            Rule::CapabilitySyntax => "capability-syntax",
            Rule::CapabilityTarget => "capability-target",
            Rule::CapabilityDuplicate => "capability-duplicate",
            Rule::UserHypercallUnknown => "user-hypercall-unknown",
            Rule::UserHypercallPrivileged => "user-hypercall-privileged",
            Rule::UserHypercallDuplicate => "user-hypercall-duplicate",
            Rule::ChannelMember => "channel-member",
            Rule::ChannelMemberCount => "channel-member-count",
            Rule::ChannelSize => "channel-size",
            Rule::DoorbellVector => "doorbell-vector",
            Rule::DoorbellShared => "doorbell-shared",
            Rule::DoorbellBudget => "doorbell-budget",
            Rule::BootIncomplete => "boot-incomplete",
            Rule::BootExtraKey => "boot-extra-key",
            Rule::BootFileMissing => "boot-file-missing",
            Rule::BootImageFormat => "boot-image-format",
            Rule::BootSegmentOutside => "boot-segment-outside",
            Rule::BootEntryOutside => "boot-entry-outside",
            Rule::BootStartInfo => "boot-start-info",
            Rule::BootKernelFormat => "boot-kernel-format",
            Rule::BootLowMemory => "boot-low-memory",
            Rule::BootKernelPlacement => "boot-kernel-placement",
            Rule::BootInitrdPlacement => "boot-initrd-placement",
            Rule::BootCmdlineLength => "boot-cmdline-length",
            Rule::BootMemoryMap => "boot-memory-map",
            Rule::RunUnknownPartition => "run-unknown-partition",
            Rule::DurationUnit => "duration-unit",
            Rule::HealthEscalationTrigger => "health-escalation-trigger",
            Rule::HealthEscalationDuplicate => "health-escalation-duplicate",
            Rule::HealthEscalationCount => "health-escalation-count",
            Rule::HealthEscalationCycle => "health-escalation-cycle",
            Rule::HealthDuration => "health-duration",
            Rule::HealthMachineAction => "health-machine-action",
            Rule::HealthLogOnly => "health-log-only",
            Rule::HealthBudgetRestart => "health-budget-restart",
            Rule::HealthStandby => "health-standby",
            Rule::HealthWatchdogCore => "health-watchdog-core",
            Rule::StandbyTarget => "standby-target",
            Rule::StandbyDevices => "standby-devices",
            Rule::StandbyVector => "standby-vector",
            Rule::StandbyRejoin => "standby-rejoin",
            Rule::RunSeconds => "run-seconds",
            Rule::RunDisk => "run-disk",
        }
    }

    /// The subject the rule belongs to (a section of docs/validation.md).
    pub const fn subject(self) -> &'static str {
        match self {
            Rule::TableUnreadable => "file",
            Rule::Syntax => "file",
            Rule::UnknownKey => "file",
            Rule::MissingKey => "file",
            Rule::WrongType => "file",
            Rule::IntegerRange => "file",
            Rule::SizeUnit => "file",
            Rule::PciSyntax => "file",
            Rule::UnknownValue => "file",
            Rule::NameSyntax => "names",
            Rule::NameDuplicate => "names",
            Rule::CoreDuplicate => "cores",
            Rule::CoreUnknown => "cores",
            Rule::CoreShared => "cores",
            Rule::PartitionNoCore => "cores",
            Rule::PartitionNone => "cores",
            Rule::MemoryEmpty => "memory",
            Rule::MemoryAlignment => "memory",
            Rule::MemoryWrap => "memory",
            Rule::MemoryAddressWidth => "memory",
            Rule::MemoryOutsideRam => "memory",
            Rule::MemoryOverlap => "memory",
            Rule::MemoryWindow => "memory",
            Rule::MemoryReserved => "memory",
            Rule::RamOverlap => "memory",
            Rule::GuestOverlap => "memory",
            Rule::GuestAddressWidth => "memory",
            Rule::PartitionNoMemory => "memory",
            Rule::DeviceUnknown => "devices",
            Rule::DeviceShared => "devices",
            Rule::DeviceDuplicate => "devices",
            Rule::PortRange => "devices",
            Rule::PortOverlap => "devices",
            Rule::MmioOverlap => "devices",
            Rule::PciShared => "devices",
            Rule::PciOutsideEcam => "devices",
            Rule::PciVirtualAddress => "devices",
            Rule::PciVirtualShared => "devices",
            Rule::PciEcamWindow => "devices",
            Rule::PciInterrupt => "devices",
            Rule::PciKeyWithoutFunction => "devices",
            Rule::PciDmaUncovered => "devices",
            Rule::PciConfig => "devices",
            Rule::PciBridge => "devices",
            Rule::PciBehindBridge => "devices",
            Rule::PciBridgeSplit => "devices",
            Rule::PciDmaAlias => "devices",
            Rule::IrqPin => "devices",
            Rule::IrqShared => "devices",
            Rule::IrqNoIoapic => "devices",
            Rule::PortReserved => "devices",
            Rule::PortMachineWide => "devices",
            Rule::PortAcpiFixed => "devices",
            Rule::ConsoleUnknown => "console",
            Rule::ConsoleOwned => "console",
            Rule::ConsoleNoPort => "console",
            Rule::CapabilitySyntax => "capabilities",
            Rule::CapabilityTarget => "capabilities",
            Rule::CapabilityDuplicate => "capabilities",
            Rule::UserHypercallUnknown => "capabilities",
            Rule::UserHypercallPrivileged => "capabilities",
            Rule::UserHypercallDuplicate => "capabilities",
            Rule::ChannelMember => "channels",
            Rule::ChannelMemberCount => "channels",
            Rule::ChannelSize => "channels",
            Rule::DoorbellVector => "channels",
            Rule::DoorbellShared => "channels",
            Rule::DoorbellBudget => "channels",
            Rule::BootIncomplete => "boot",
            Rule::BootExtraKey => "boot",
            Rule::BootFileMissing => "boot",
            Rule::BootImageFormat => "boot",
            Rule::BootSegmentOutside => "boot",
            Rule::BootEntryOutside => "boot",
            Rule::BootStartInfo => "boot",
            Rule::BootKernelFormat => "boot",
            Rule::BootLowMemory => "boot",
            Rule::BootKernelPlacement => "boot",
            Rule::BootInitrdPlacement => "boot",
            Rule::BootCmdlineLength => "boot",
            Rule::BootMemoryMap => "boot",
            Rule::RunUnknownPartition => "run",
            Rule::DurationUnit => "file",
            Rule::HealthEscalationTrigger => "health",
            Rule::HealthEscalationDuplicate => "health",
            Rule::HealthEscalationCount => "health",
            Rule::HealthEscalationCycle => "health",
            Rule::HealthDuration => "health",
            Rule::HealthMachineAction => "health",
            Rule::HealthLogOnly => "health",
            Rule::HealthBudgetRestart => "health",
            Rule::HealthStandby => "health",
            Rule::HealthWatchdogCore => "health",
            Rule::StandbyTarget => "health",
            Rule::StandbyDevices => "health",
            Rule::StandbyVector => "health",
            Rule::StandbyRejoin => "health",
            Rule::RunSeconds => "run",
            Rule::RunDisk => "run",
        }
    }

    /// One sentence saying what the rule requires.
    pub const fn meaning(self) -> &'static str {
        match self {
            Rule::TableUnreadable => "The table file cannot be read as UTF-8 text.",
            Rule::Syntax => "The text is not valid TOML (or, after the schema pass, does not deserialize).",
            Rule::UnknownKey => "A key the format does not know; unknown keys are errors, never ignored.",
            Rule::MissingKey => "A key the format requires is absent.",
            Rule::WrongType => "A value has the wrong TOML type (e.g. a string where an integer belongs).",
            Rule::IntegerRange => "An integer is negative or too large for its key (core IDs and pins are 32-bit).",
            Rule::SizeUnit => "A size string is not a decimal number with a binary unit (B, KiB, MiB, GiB, TiB).",
            Rule::PciSyntax => "A PCI address is not `bb:dd.f` with device at most 1f and function at most 7.",
            Rule::UnknownValue => "A string is not one of the values its key allows (`on-fault`, `boot.kind`, `wbinvd`, health events and actions).",
            Rule::NameSyntax => "Partition, channel and device names are `[a-z0-9-]+`.",
            Rule::NameDuplicate => "Partition, channel and device names are unique within their kind.",
            Rule::CoreDuplicate => "A core is listed twice in `platform.cpus` or in one partition.",
            Rule::CoreUnknown => "A partition names a core that `platform.cpus` does not list.",
            Rule::CoreShared => "A core is owned by more than one partition.",
            Rule::PartitionNoCore => "A partition has no core.",
            Rule::PartitionNone => "The table defines no partition at all.",
            Rule::MemoryEmpty => "A memory range (RAM, partition, channel, hypervisor, MMIO, window) has size zero.",
            Rule::MemoryAlignment => "A memory range's base or size, or a region's `guest` address, is not a multiple of 4 KiB.",
            Rule::MemoryWrap => "A range's base plus size overflows 64 bits (the range wraps around the address space).",
            Rule::MemoryAddressWidth => "A host-physical range ends beyond 2^52, the architectural physical address width.",
            Rule::MemoryOutsideRam => "Partition, channel or hypervisor memory is not inside the platform's RAM.",
            Rule::MemoryOverlap => "Host-physical memory of partitions, channels, the hypervisor or device MMIO overlaps.",
            Rule::MemoryWindow => "A range overlaps a platform window the hypervisor keeps: the local APIC (0xfee00000, 1 MiB), the IOAPIC page, ECAM or an IOMMU.",
            Rule::MemoryReserved => "Partition or channel memory overlaps a page the hypervisor reserves: 0x0–0xfff or its AP trampoline 0x8000–0x8fff.",
            Rule::RamOverlap => "Two platform RAM ranges overlap.",
            Rule::GuestOverlap => "Guest-physical ranges (RAM, channels, MMIO) inside one partition overlap.",
            Rule::GuestAddressWidth => "A guest-physical range ends beyond 2^48, which four-level stage-2 tables cannot translate.",
            Rule::PartitionNoMemory => "A partition has no memory region.",
            Rule::DeviceUnknown => "A partition names a device that `platform.devices` does not define.",
            Rule::DeviceShared => "A device is owned by more than one partition.",
            Rule::DeviceDuplicate => "A partition lists the same device twice.",
            Rule::PortRange => "An I/O port range is empty or extends beyond port 0xffff.",
            Rule::PortOverlap => "Port ranges of devices with different owners overlap (the same hardware under two names).",
            Rule::MmioOverlap => "MMIO windows of devices with different owners overlap (the same hardware under two names).",
            Rule::PciShared => "One PCI function is named by devices with different owners (the same hardware under two names).",
            Rule::PciOutsideEcam => "A device's PCI bus lies beyond the buses the declared ECAM window covers.",
            Rule::PciVirtualAddress => "A function's virtual address is not on bus 0 or is 00:00.0, where every partition sees its virtual host bridge.",
            Rule::PciVirtualShared => "Two PCI functions of one partition appear at the same virtual address.",
            Rule::PciEcamWindow => "Guest-physical memory of a partition with PCI functions overlaps its virtual ECAM window (bus 0: 1 MiB at the platform's ECAM base).",
            Rule::PciInterrupt => "A PCI function's interrupt is inconsistent: `intx` without an `irq` pin or with `vectors`, MSI vectors not a power of two from 1 to 32, MSI-X vectors not from 1 to 2048.",
            Rule::PciKeyWithoutFunction => "`virtual-pci`, `interrupt` or `dma` is given to a device without `pci`.",
            Rule::PciDmaUncovered => "A partition's PCI function with confined DMA (the default) is covered by no IOMMU unit of `platform.iommu`; `dma = \"unconfined\"` accepts it with a warning.",
            Rule::PciBridge => "A `platform.pci-bridges` entry is not on bus 0, has secondary bus 0 or a subordinate bus below its secondary, shares its address or buses with another bridge, or is also a device's `pci` function.",
            Rule::PciBehindBridge => "A PCI function on a bus other than 0 is not on the secondary bus of a bridge of `platform.pci-bridges`.",
            Rule::PciBridgeSplit => "Functions behind one conventional (`pci`) or PCIe-to-PCI (`pcie-to-pci`) bridge belong to different partitions: they share a requester ID, so no IOMMU tells their DMA apart.",
            Rule::PciDmaAlias => "A partition's function behind a `pci` or `pcie-to-pci` bridge has confined DMA: the IOMMU sees the bridge's requester ID, and confinement through an alias is not built; `dma = \"unconfined\"` accepts it with a warning.",
            Rule::PciConfig => "`pci-config = \"ecam-only\"` on a partition that owns no PCI function, or on a platform without `ecam` (no window to reach the bus through).",
            Rule::IrqPin => "A device's IRQ pin is not below the IOAPIC's pin count.",
            Rule::IrqShared => "One IOAPIC pin is used by devices of different owners; a pin is routed only by its owner.",
            Rule::IrqNoIoapic => "A device has an IRQ pin but the platform declares no IOAPIC.",
            Rule::PortReserved => "A partition's device owns a port of the virtual platform (ACPI sleep and reset registers: 0x510, 0x511, 0xcf9), which the hypervisor keeps.",
            Rule::PortMachineWide => "A partition's device owns a legacy chipset port that acts on the whole machine (8237 DMA controllers and page registers, 8259 PICs, 8254 PIT, 8042, NMI status, CMOS/RTC index, fast A20, APM/SMI command, PCI configuration 0xcf8–0xcff).",
            Rule::PortAcpiFixed => "A partition's device owns a port of the ACPI fixed-hardware block of a platform the validator knows (`qemu-q35`: 0x600–0x67f).",
            Rule::ConsoleUnknown => "The hypervisor console names no device of `platform.devices`.",
            Rule::ConsoleOwned => "The hypervisor console device is also given to a partition.",
            Rule::ConsoleNoPort => "The hypervisor console device has no I/O port.",
            Rule::CapabilitySyntax => "A capability is not `power`, `stats:<partition|*>`, `halt:<partition>`, `restart:<partition>` or `health:<partition>`.",
            Rule::CapabilityTarget => "A capability names a partition that does not exist.",
            Rule::CapabilityDuplicate => "A partition lists the same capability twice.",
            Rule::UserHypercallUnknown => "`user-hypercalls` names a hypercall that does not exist.",
            Rule::UserHypercallPrivileged => "`user-hypercalls` grants `stop-self`, `power-off` or `declare-fatal`, which act on the whole partition or machine and never come from user mode.",
            Rule::UserHypercallDuplicate => "A partition lists the same user-mode hypercall twice.",
            Rule::ChannelMember => "A channel member is not a partition, or is listed twice.",
            Rule::ChannelMemberCount => "A channel has fewer than two distinct member partitions.",
            Rule::ChannelSize => "A channel's memory size is zero or not a multiple of 4 KiB.",
            Rule::DoorbellVector => "A doorbell vector is outside 32–255.",
            Rule::DoorbellShared => "Two channels with a common member use the same doorbell vector, so the member cannot tell them apart.",
            Rule::DoorbellBudget => "A channel's `doorbell-budget` is outside 1–1,000,000 rings per second.",
            Rule::BootIncomplete => "A boot key the kind needs is missing (`image` for elf; `kernel`, `initrd` for linux).",
            Rule::BootExtraKey => "A boot key does not belong to the kind.",
            Rule::BootFileMissing => "A boot file does not exist or cannot be read.",
            Rule::BootImageFormat => "A boot image is not an ELF64 x86-64 executable with a PVH entry note.",
            Rule::BootSegmentOutside => "A loadable ELF segment lies outside the partition's guest-physical RAM.",
            Rule::BootEntryOutside => "The PVH entry point lies outside the partition's guest-physical RAM.",
            Rule::BootStartInfo => "Guest RAM does not cover guest-physical 0x1000–0x1fff, where the hypervisor writes the PVH start-info block, or an ELF segment overlaps that page.",
            Rule::BootKernelFormat => "A Linux kernel is not a bzImage with boot protocol 2.12 or later and the 64-bit entry point (XLF_KERNEL_64).",
            Rule::BootLowMemory => "A linux partition's guest RAM does not cover guest-physical 0–1 MiB (boot parameters, command line, GDT, page tables, ACPI tables).",
            Rule::BootKernelPlacement => "The kernel's `pref_address` plus `init_size` is not inside one guest RAM range between 1 MiB and 4 GiB.",
            Rule::BootInitrdPlacement => "The initrd fits nowhere in guest RAM between 1 MiB and the kernel's `initrd_addr_max`, clear of the kernel.",
            Rule::BootCmdlineLength => "A linux command line plus ` tsc_early_khz=4294967295` and its NUL exceeds the kernel's `cmdline_size` + 1 (at most 4096 bytes).",
            Rule::BootMemoryMap => "A linux partition's memory map needs more than the 128 e820 entries boot_params holds.",
            Rule::RunUnknownPartition => "`run.expect-faults` names a partition that does not exist.",
            Rule::DurationUnit => "A duration string is not a decimal number with a unit (us, ms, s, min).",
            Rule::HealthEscalationTrigger => "An `escalate` rule names neither or both of `event` and `action`; it counts exactly one of them.",
            Rule::HealthEscalationDuplicate => "Two `escalate` rules of one partition count the same event or the same action.",
            Rule::HealthEscalationCount => "An `escalate` rule's `count` is outside 1–16 (the monitor keeps the times of the last 16 occurrences).",
            Rule::HealthEscalationCycle => "The action rules of `escalate` lead from an action back to itself, so escalation would never settle.",
            Rule::HealthDuration => "A watchdog period is outside 1 ms–60 s, or an escalation window outside 1 ms–24 h.",
            Rule::HealthMachineAction => "A health action resets or powers off the machine (`machine-reset`, `machine-power-off`), but the partition lacks the `power` capability.",
            Rule::HealthLogOnly => "`log` is given to an event after which the partition cannot run on (memory-violation, shutdown, entry-failure, unexpected-exit, restart-budget-exhausted).",
            Rule::HealthBudgetRestart => "`restart-budget-exhausted` is answered with a restart, which the budget has just run out of.",
            Rule::HealthStandby => "A health action is `standby`, but no partition is the standby of this one (`standby-for`).",
            Rule::HealthWatchdogCore => "A partition has a watchdog, but every core of the platform belongs to a partition: the watchdog runs on a core no partition owns.",
            Rule::StandbyTarget => "`standby-for` names a partition that does not exist, the partition itself, a partition that is itself a standby (no chains or cycles), or a primary that already has a standby.",
            Rule::StandbyDevices => "A standby partition (`standby-for`) lists a device of its own with an interrupt pin or a PCI function; its own devices may have only ports and MMIO windows (say, a console), the rest it takes over from its primary.",
            Rule::StandbyVector => "`takeover-vector` is missing from a standby, given to a partition without `standby-for`, or outside 32–255.",
            Rule::StandbyRejoin => "`rejoin-as-standby` is given to a partition without a standby, or to one that could not be a standby: no `takeover-vector`, or not a member of a channel of its standby.",
            Rule::RunSeconds => "`run.seconds` is zero.",
            Rule::RunDisk => "A `run.qemu-disks` entry's `file` is not a plain file name (empty, `.`, `..` or with a `/`), its `size` is not a positive multiple of 512 bytes, or two entries name one file.",
        }
    }

    /// The rule with this identifier.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|rule| rule.id() == id)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_unique_and_round_trip() {
        let mut ids: Vec<&str> = Rule::ALL.iter().map(|rule| rule.id()).collect();
        for rule in Rule::ALL {
            assert_eq!(Rule::from_id(rule.id()), Some(*rule));
            assert!(!rule.meaning().is_empty());
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
        for retired in Rule::RETIRED {
            assert_eq!(Rule::from_id(retired), None, "`{retired}` is retired");
        }
    }
}
