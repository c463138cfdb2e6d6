//! The rules a partition table must obey, each with a stable identifier that appears in
//! diagnostics, documentation and tests. Identifiers never change meaning; new rules get
//! new identifiers.

use std::fmt;

/// One rule of the partition table. [`Rule::id`] is its stable identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    // The file itself.
    /// The table file could not be read.
    TableUnreadable,
    /// The text is not valid TOML or does not have the table's shape (wrong types, bad sizes).
    Syntax,
    /// A key the format does not know.
    UnknownKey,
    /// A required key is missing.
    MissingKey,

    // Names.
    /// Names are `[a-z0-9-]+`.
    NameSyntax,
    /// Partition, channel and device names are unique.
    NameDuplicate,

    // Cores.
    /// A core listed twice (in `platform.cpus` or in one partition).
    CoreDuplicate,
    /// A partition names a core that `platform.cpus` does not list.
    CoreUnknown,
    /// A core owned by more than one partition.
    CoreShared,
    /// A partition without cores.
    PartitionNoCore,

    // Memory.
    /// A range of size zero.
    MemoryEmpty,
    /// A memory range (host or guest) not aligned to 4 KiB.
    MemoryAlignment,
    /// A range that wraps around the end of the address space.
    MemoryWrap,
    /// Partition, channel or hypervisor memory outside platform RAM.
    MemoryOutsideRam,
    /// Host-physical ranges of partitions, channels, the hypervisor or device MMIO overlap.
    MemoryOverlap,
    /// Two platform RAM ranges overlap.
    RamOverlap,
    /// Guest-physical ranges inside one partition overlap.
    GuestOverlap,
    /// A partition without memory.
    PartitionNoMemory,

    // Devices.
    /// A device name that `platform.devices` does not define.
    DeviceUnknown,
    /// A device owned by more than one partition.
    DeviceShared,
    /// A device listed twice by one partition.
    DeviceDuplicate,
    /// An I/O port range outside 0..=0xffff or empty.
    PortRange,
    /// Port ranges of devices owned by different partitions overlap.
    PortOverlap,
    /// An IRQ pin beyond the IOAPIC's pins.
    IrqPin,
    /// One IOAPIC pin used by devices of different partitions.
    IrqShared,
    /// The hypervisor console names no existing device.
    ConsoleUnknown,
    /// The hypervisor console device is owned by a partition.
    ConsoleOwned,
    /// The hypervisor console device has no I/O port.
    ConsoleNoPort,

    // Capabilities.
    /// A capability string that is not `power`, `stats:…`, `halt:…` or `restart:…`.
    CapabilitySyntax,
    /// A capability names a partition that does not exist.
    CapabilityTarget,

    // Channels.
    /// A channel member that is not a partition, or listed twice.
    ChannelMember,
    /// A doorbell vector outside 32–255.
    DoorbellVector,

    // Boot.
    /// A boot key the kind needs is missing.
    BootIncomplete,
    /// A boot key that does not belong to the kind.
    BootExtraKey,
    /// A boot file that does not exist or cannot be read.
    BootFileMissing,
    /// A boot image that is not an ELF64 x86-64 PVH guest.
    BootImageFormat,
    /// A loadable segment outside the partition's guest-physical RAM.
    BootSegmentOutside,
    /// An entry point outside the partition's guest-physical RAM.
    BootEntryOutside,
    /// A boot kind the hypervisor cannot start yet.
    BootUnsupported,

    // Runner.
    /// `run.expect-faults` names a partition that does not exist.
    RunUnknownPartition,
}

impl Rule {
    /// Every rule, in documentation order.
    pub const ALL: &'static [Rule] = &[
        Rule::TableUnreadable,
        Rule::Syntax,
        Rule::UnknownKey,
        Rule::MissingKey,
        Rule::NameSyntax,
        Rule::NameDuplicate,
        Rule::CoreDuplicate,
        Rule::CoreUnknown,
        Rule::CoreShared,
        Rule::PartitionNoCore,
        Rule::MemoryEmpty,
        Rule::MemoryAlignment,
        Rule::MemoryWrap,
        Rule::MemoryOutsideRam,
        Rule::MemoryOverlap,
        Rule::RamOverlap,
        Rule::GuestOverlap,
        Rule::PartitionNoMemory,
        Rule::DeviceUnknown,
        Rule::DeviceShared,
        Rule::DeviceDuplicate,
        Rule::PortRange,
        Rule::PortOverlap,
        Rule::IrqPin,
        Rule::IrqShared,
        Rule::ConsoleUnknown,
        Rule::ConsoleOwned,
        Rule::ConsoleNoPort,
        Rule::CapabilitySyntax,
        Rule::CapabilityTarget,
        Rule::ChannelMember,
        Rule::DoorbellVector,
        Rule::BootIncomplete,
        Rule::BootExtraKey,
        Rule::BootFileMissing,
        Rule::BootImageFormat,
        Rule::BootSegmentOutside,
        Rule::BootEntryOutside,
        Rule::BootUnsupported,
        Rule::RunUnknownPartition,
    ];

    /// The stable identifier, e.g. `memory-overlap`.
    pub const fn id(self) -> &'static str {
        match self {
            Rule::TableUnreadable => "table-unreadable",
            Rule::Syntax => "syntax",
            Rule::UnknownKey => "unknown-key",
            Rule::MissingKey => "missing-key",
            Rule::NameSyntax => "name-syntax",
            Rule::NameDuplicate => "name-duplicate",
            Rule::CoreDuplicate => "core-duplicate",
            Rule::CoreUnknown => "core-unknown",
            Rule::CoreShared => "core-shared",
            Rule::PartitionNoCore => "partition-no-core",
            Rule::MemoryEmpty => "memory-empty",
            Rule::MemoryAlignment => "memory-alignment",
            Rule::MemoryWrap => "memory-wrap",
            Rule::MemoryOutsideRam => "memory-outside-ram",
            Rule::MemoryOverlap => "memory-overlap",
            Rule::RamOverlap => "ram-overlap",
            Rule::GuestOverlap => "guest-overlap",
            Rule::PartitionNoMemory => "partition-no-memory",
            Rule::DeviceUnknown => "device-unknown",
            Rule::DeviceShared => "device-shared",
            Rule::DeviceDuplicate => "device-duplicate",
            Rule::PortRange => "port-range",
            Rule::PortOverlap => "port-overlap",
            Rule::IrqPin => "irq-pin",
            Rule::IrqShared => "irq-shared",
            Rule::ConsoleUnknown => "console-unknown",
            Rule::ConsoleOwned => "console-owned",
            Rule::ConsoleNoPort => "console-no-port",
            Rule::CapabilitySyntax => "capability-syntax",
            Rule::CapabilityTarget => "capability-target",
            Rule::ChannelMember => "channel-member",
            Rule::DoorbellVector => "doorbell-vector",
            Rule::BootIncomplete => "boot-incomplete",
            Rule::BootExtraKey => "boot-extra-key",
            Rule::BootFileMissing => "boot-file-missing",
            Rule::BootImageFormat => "boot-image-format",
            Rule::BootSegmentOutside => "boot-segment-outside",
            Rule::BootEntryOutside => "boot-entry-outside",
            Rule::BootUnsupported => "boot-unsupported",
            Rule::RunUnknownPartition => "run-unknown-partition",
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
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
    }
}
