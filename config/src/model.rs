//! The partition table as written: typed structures that the TOML file deserializes into,
//! every item remembering its span. After [`crate::validate`] found nothing wrong, the same
//! structures are the validated model that [`crate::load`] hands out.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::duration::Duration;
use crate::size::Size;
use crate::source::{Located, Span};
use tessera_abi::table::{HealthAction, HealthEvent};

/// A whole partition table.
#[derive(Clone, Debug)]
pub struct Table {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's text (spans index into it).
    pub text: String,
    pub platform: Platform,
    pub hypervisor: Hypervisor,
    /// The `[[partition]]` entries, in table order.
    pub partitions: Vec<Partition>,
    /// The `[[channel]]` entries, in table order.
    pub channels: Vec<Channel>,
    /// The runner's expectations (`[run]`); the hypervisor ignores them.
    pub run: Run,
    /// Name lookups, so that validation and lowering stay O(n log n) on large tables.
    pub(crate) names: NameIndex,
}

/// Name → position lookups built once per table (the first of duplicate names wins, as a
/// linear search would find it).
#[derive(Clone, Debug, Default)]
pub(crate) struct NameIndex {
    devices: HashMap<String, usize>,
    partitions: HashMap<String, usize>,
    /// Channel indices (in channel order) by member name.
    channels_by_member: HashMap<String, Vec<usize>>,
}

impl NameIndex {
    pub(crate) fn build(
        platform: &Platform,
        partitions: &[Partition],
        channels: &[Channel],
    ) -> Self {
        let mut index = NameIndex::default();
        for (position, device) in platform.devices.iter().enumerate() {
            index
                .devices
                .entry(device.name.value.clone())
                .or_insert(position);
        }
        for (position, partition) in partitions.iter().enumerate() {
            index
                .partitions
                .entry(partition.name.value.clone())
                .or_insert(position);
        }
        for (position, channel) in channels.iter().enumerate() {
            for member in &channel.partitions {
                let list = index
                    .channels_by_member
                    .entry(member.value.clone())
                    .or_default();
                if list.last() != Some(&position) {
                    list.push(position);
                }
            }
        }
        index
    }
}

impl Table {
    /// The directory relative boot-image paths are resolved against.
    pub fn directory(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Resolves a path written in the table (relative to the table's directory).
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.directory().join(path)
        }
    }

    /// The platform device with this name.
    pub fn device(&self, name: &str) -> Option<&NamedDevice> {
        self.names
            .devices
            .get(name)
            .map(|&position| &self.platform.devices[position])
    }

    /// The index of the partition with this name.
    pub fn partition_index(&self, name: &str) -> Option<usize> {
        self.names.partitions.get(name).copied()
    }

    /// The indices of the channels that list `partition` as a member, in channel order.
    pub fn channels_of(&self, partition: &str) -> &[usize] {
        self.names
            .channels_by_member
            .get(partition)
            .map_or(&[], Vec::as_slice)
    }

    /// The devices a partition owns, in the order it lists them (unknown names skipped).
    pub fn partition_devices<'table>(
        &'table self,
        partition: &'table Partition,
    ) -> impl Iterator<Item = &'table NamedDevice> + 'table {
        partition
            .devices
            .iter()
            .filter_map(|name| self.device(name))
    }

    /// The PCI functions a standby takes over from its primary (`standby-for`), in the
    /// primary's order: the standby's virtual bus, ACPI tables, stage-2 tables and DMA
    /// domain are built for them too, and they are its own only after a takeover
    /// (docs/health.md, "PCI functions at a takeover"). None for other partitions.
    pub fn takeover_pci_devices<'table>(
        &'table self,
        partition: &'table Partition,
    ) -> impl Iterator<Item = &'table NamedDevice> + 'table {
        partition
            .standby_for
            .as_ref()
            .and_then(|primary| self.partition_index(primary))
            .filter(|&primary| self.partitions[primary].name.value != partition.name.value)
            .into_iter()
            .flat_map(move |primary| self.partition_devices(&self.partitions[primary]))
            .filter(|device| device.device.pci.is_some())
    }

    /// The channels a standby takes over from its primary (`standby-for`): those the
    /// primary is a member of and the standby is not, in channel order. The standby's
    /// stage-2 tables are built with their memory, at the primary's guest address, and the
    /// hypervisor makes it present only while the standby holds the pair's devices
    /// (docs/health.md, "Channels at a takeover"). None for other partitions; a channel
    /// both members list is an ordinary channel of both.
    pub fn takeover_channels<'table>(
        &'table self,
        partition: &'table Partition,
    ) -> impl Iterator<Item = usize> + 'table {
        let own = self.channels_of(&partition.name);
        partition
            .standby_for
            .as_ref()
            .filter(|primary| ***primary != *partition.name)
            .into_iter()
            .flat_map(move |primary| self.channels_of(primary).iter().copied())
            .filter(move |channel| !own.contains(channel))
    }

    /// The standbys that take channel `channel` over (`takeover_channels`), as partition
    /// indices in table order.
    pub fn channel_takers(&self, channel: usize) -> Vec<usize> {
        self.partitions
            .iter()
            .enumerate()
            .filter(|(_, partition)| self.takeover_channels(partition).any(|c| c == channel))
            .map(|(index, _)| index)
            .collect()
    }

    /// The devices whose PCI functions, MMIO windows and ACPI description a partition's
    /// static state is built with: its own, then those it may take over.
    pub fn partition_devices_with_takeover<'table>(
        &'table self,
        partition: &'table Partition,
    ) -> impl Iterator<Item = &'table NamedDevice> + 'table {
        self.partition_devices(partition)
            .chain(self.takeover_pci_devices(partition))
    }
}

/// The top level of the TOML document.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Document {
    pub platform: Platform,
    pub hypervisor: Hypervisor,
    #[serde(default, rename = "partition")]
    pub partitions: Vec<Partition>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub run: Run,
}

/// `[platform]`: the machine the table is written for.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Platform {
    pub name: Located<String>,
    /// x2APIC IDs of the cores that exist.
    pub cpus: Vec<Located<u32>>,
    /// Usable physical RAM.
    pub ram: Vec<Located<AddressRange>>,
    #[serde(default)]
    pub ioapic: Option<Located<Ioapic>>,
    /// Optional PCI Express configuration window (ECAM, 1 MiB per bus from bus 0).
    #[serde(default)]
    pub ecam: Option<Located<AddressRange>>,
    /// Optional IOMMU units (AMD-Vi / VT-d): register windows and the PCI functions each
    /// one translates.
    #[serde(default)]
    pub iommu: Vec<Located<IommuUnit>>,
    /// The PCI bridges on bus 0 that lead to the table's functions on other buses
    /// (docs/pci-iommu.md, "The table"): the hypervisor checks them against the hardware
    /// at boot, the validator checks who owns the functions behind each.
    #[serde(default)]
    pub pci_bridges: Vec<Located<PciBridge>>,
    /// `[platform.devices]`, in table order.
    #[serde(default)]
    pub devices: Devices,
}

/// `ioapic = { base, pins }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ioapic {
    pub base: Located<u64>,
    pub pins: Located<u32>,
}

/// One IOMMU unit: `{ base = …, size = …, covers = ["bb:dd.f", …] }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IommuUnit {
    pub base: Located<u64>,
    pub size: Located<Size>,
    /// The PCI functions whose requests the unit translates (VT-d DRHD device scopes,
    /// AMD-Vi IVHD device entries); `None` when the unit covers every function of the
    /// segment (a DRHD with INCLUDE_PCI_ALL, an IVHD select-all range).
    #[serde(default)]
    pub covers: Option<Vec<Located<PciAddress>>>,
}

impl IommuUnit {
    /// The register window as a plain `(base, size)` pair.
    pub fn to_abi(&self) -> tessera_abi::table::Range {
        tessera_abi::table::Range::new(*self.base, self.size.0)
    }

    /// Whether the unit translates the requests of PCI function `address`.
    pub fn covers(&self, address: PciAddress) -> bool {
        self.covers
            .as_ref()
            .is_none_or(|covered| covered.iter().any(|function| **function == address))
    }
}

/// One bridge of `platform.pci-bridges`: `{ pci = "00:05.0", secondary = 1,
/// subordinate = 1, kind = "pcie-port" }`, the numbers as the bridge's Bus Number
/// registers hold them (PCI-to-PCI Bridge 1.2 §3.2.5.3–5; `lspci -v`: "Bus: primary=00,
/// secondary=01, subordinate=01").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PciBridge {
    pub pci: Located<PciAddress>,
    pub secondary: Located<u32>,
    /// The highest bus below the bridge; the secondary bus when absent.
    #[serde(default)]
    pub subordinate: Option<Located<u32>>,
    pub kind: Located<PciBridgeKind>,
}

impl PciBridge {
    /// The buses below the bridge, secondary to subordinate.
    pub fn buses(&self) -> std::ops::RangeInclusive<u32> {
        let subordinate = self
            .subordinate
            .as_ref()
            .map_or(*self.secondary, |bus| **bus);
        *self.secondary..=subordinate
    }
}

/// What kind of bridge, which decides whether the functions below it have requester IDs of
/// their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PciBridgeKind {
    /// A conventional PCI-to-PCI bridge (no PCI Express capability): the functions below
    /// it share its requester ID.
    Pci,
    /// A PCI Express to PCI/PCI-X bridge (PCIe device/port type 0111b): the functions
    /// below it share the alias requester ID (secondary bus, 00.0).
    PcieToPci,
    /// A PCI Express root port or switch downstream port (type 0100b, 0110b): each function
    /// below it keeps its own requester ID.
    PciePort,
}

impl PciBridgeKind {
    /// The word the table uses.
    pub fn name(self) -> &'static str {
        match self {
            PciBridgeKind::Pci => "pci",
            PciBridgeKind::PcieToPci => "pcie-to-pci",
            PciBridgeKind::PciePort => "pcie-port",
        }
    }

    /// Whether the functions below share one requester ID, so no IOMMU can tell their DMA
    /// apart.
    pub fn aliases_requesters(self) -> bool {
        self != PciBridgeKind::PciePort
    }
}

/// `{ base = …, size = … }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AddressRange {
    pub base: Located<u64>,
    pub size: Located<Size>,
}

impl AddressRange {
    /// One past the last byte, or `None` if the range wraps around 2^64.
    pub fn end(&self) -> Option<u64> {
        self.base.value.checked_add(self.size.value.0)
    }
    /// The plain `(base, size)` pair.
    pub fn to_abi(&self) -> tessera_abi::table::Range {
        tessera_abi::table::Range::new(*self.base, self.size.0)
    }
}

/// A partition's memory region: a host-physical range and, optionally, where the guest sees it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MemoryRegion {
    pub base: Located<u64>,
    pub size: Located<Size>,
    #[serde(default)]
    pub guest: Option<Located<u64>>,
}

impl MemoryRegion {
    pub fn end(&self) -> Option<u64> {
        self.base.value.checked_add(self.size.value.0)
    }
    pub fn to_abi(&self) -> tessera_abi::table::Range {
        tessera_abi::table::Range::new(*self.base, self.size.0)
    }
}

/// The devices of `[platform.devices]` in the order the table lists them.
#[derive(Clone, Debug, Default)]
pub struct Devices(pub Vec<NamedDevice>);

impl std::ops::Deref for Devices {
    type Target = [NamedDevice];
    fn deref(&self) -> &[NamedDevice] {
        &self.0
    }
}

/// One entry of `[platform.devices]`.
#[derive(Clone, Debug)]
pub struct NamedDevice {
    pub name: Located<String>,
    pub device: Located<Device>,
}

impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DevicesVisitor;
        impl<'de> Visitor<'de> for DevicesVisitor {
            type Value = Devices;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "a table of devices by name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Devices, A::Error> {
                let mut devices = Vec::new();
                while let Some(name) = map.next_key::<Located<String>>()? {
                    let device = map.next_value::<Located<Device>>()?;
                    devices.push(NamedDevice { name, device });
                }
                Ok(Devices(devices))
            }
        }
        deserializer.deserialize_map(DevicesVisitor)
    }
}

/// A device a partition may own.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Device {
    /// I/O port ranges.
    #[serde(default)]
    pub ports: Vec<Located<AddressRange>>,
    /// MMIO windows.
    #[serde(default)]
    pub mmio: Vec<Located<AddressRange>>,
    /// PCI function.
    #[serde(default)]
    pub pci: Option<Located<PciAddress>>,
    /// IOAPIC pin.
    #[serde(default)]
    pub irq: Option<Located<u32>>,
    /// PCI only: where the owning partition sees the function on its virtual bus 0 (by
    /// default bus 0 with the physical device and function numbers).
    #[serde(default)]
    pub virtual_pci: Option<Located<PciAddress>>,
    /// PCI only: the interrupt the function may use.
    #[serde(default)]
    pub interrupt: Option<Located<PciInterrupt>>,
    /// PCI only: whether the function's DMA must go through an IOMMU ([`Dma::Confined`]
    /// when absent).
    #[serde(default)]
    pub dma: Option<Located<Dma>>,
}

impl Device {
    /// Where the owning partition sees the PCI function: `virtual-pci`, else bus 0 with the
    /// physical device and function numbers. `None` for a device without `pci`.
    pub fn virtual_address(&self) -> Option<PciAddress> {
        let physical = self.pci.as_ref()?;
        Some(match &self.virtual_pci {
            Some(address) => **address,
            None => PciAddress {
                bus: 0,
                ..**physical
            },
        })
    }

    /// The DMA policy, with its default.
    pub fn dma_policy(&self) -> Dma {
        self.dma.as_ref().map_or(Dma::Confined, |dma| dma.value)
    }
}

/// `interrupt = { kind = …, vectors = … }` of a PCI function (PCI Local Bus 3.0 §6.8).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PciInterrupt {
    pub kind: Located<PciInterruptKind>,
    /// MSI: 1–32, a power of two; MSI-X: 1–2048; INTx: absent.
    #[serde(default)]
    pub vectors: Option<Located<u32>>,
}

/// How a PCI function signals interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PciInterruptKind {
    /// The INTx pin, routed to the IOAPIC pin the device's `irq` names.
    Intx,
    /// MSI (PCI Local Bus 3.0 §6.8.1).
    Msi,
    /// MSI-X (PCI Local Bus 3.0 §6.8.2).
    Msix,
}

/// `dma = "confined" | "unconfined"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dma {
    /// The function's DMA goes through an IOMMU domain that maps its partition's RAM only.
    Confined,
    /// No IOMMU confines the function: it can reach all of memory (a warning).
    Unconfined,
}

/// A PCI function address `bb:dd.f` (hexadecimal bus and device, function 0–7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Why a PCI address could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PciAddressError {
    /// Not of the form `bb:dd.f`.
    Shape,
    /// The device number is above 0x1f.
    DeviceTooLarge,
    /// The function number is above 7.
    FunctionTooLarge,
}

impl fmt::Display for PciAddressError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape => write!(
                formatter,
                "a PCI address is written \"bb:dd.f\" (hexadecimal)"
            ),
            Self::DeviceTooLarge => write!(formatter, "the PCI device number is at most 1f"),
            Self::FunctionTooLarge => write!(formatter, "the PCI function number is at most 7"),
        }
    }
}

impl std::error::Error for PciAddressError {}

impl std::str::FromStr for PciAddress {
    type Err = PciAddressError;
    fn from_str(text: &str) -> Result<Self, PciAddressError> {
        let (bus, rest) = text.split_once(':').ok_or(PciAddressError::Shape)?;
        let (device, function) = rest.split_once('.').ok_or(PciAddressError::Shape)?;
        let hex = |part: &str, width: usize| {
            if part.is_empty() || part.len() > width {
                return Err(PciAddressError::Shape);
            }
            u8::from_str_radix(part, 16).map_err(|_| PciAddressError::Shape)
        };
        let address = Self {
            bus: hex(bus, 2)?,
            device: hex(device, 2)?,
            function: hex(function, 1)?,
        };
        if address.device > 0x1f {
            return Err(PciAddressError::DeviceTooLarge);
        }
        if address.function > 7 {
            return Err(PciAddressError::FunctionTooLarge);
        }
        Ok(address)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// `[hypervisor]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hypervisor {
    /// The image (with guest images), stacks, page tables.
    pub memory: Located<AddressRange>,
    /// The device the hypervisor writes its console to.
    pub console: Located<String>,
}

/// One `[[partition]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Partition {
    pub name: Located<String>,
    /// Dedicated cores (x2APIC IDs); the first is the boot core.
    pub cpus: Vec<Located<u32>>,
    pub memory: Vec<Located<MemoryRegion>>,
    #[serde(default)]
    pub devices: Vec<Located<String>>,
    pub boot: Located<Boot>,
    /// The default action of every health event (`halt` or `warm-restart`);
    /// `[partition.health]` refines it.
    pub on_fault: Located<OnFault>,
    /// `[partition.health]`: the health-monitor table (docs/health.md).
    #[serde(default)]
    pub health: Option<Located<Health>>,
    /// `verb:object` strings; see [`Capability`].
    #[serde(default)]
    pub capabilities: Vec<Located<String>>,
    /// Hypercalls guest user mode may make, by [`tessera_abi::hypercall::Call::name`].
    #[serde(default)]
    pub user_hypercalls: Vec<Located<String>>,
    /// What WBINVD does; [`WbinvdPolicy::Trap`] when absent.
    #[serde(default)]
    pub wbinvd: Option<Located<WbinvdPolicy>>,
    /// `standby-for`: the partition this one is the hot standby of (docs/health.md).
    #[serde(default)]
    pub standby_for: Option<Located<String>>,
    /// `takeover-vector`: the interrupt (32–255) a standby's boot core is sent once it
    /// holds its primary's devices.
    #[serde(default)]
    pub takeover_vector: Option<Located<u64>>,
    /// `rejoin-as-standby`: on a primary, the pair swaps roles at each failover — the member
    /// that failed restarts as the other's standby (docs/health.md, "Rejoining").
    #[serde(default)]
    pub rejoin_as_standby: Option<Located<bool>>,
    /// `pci-config`: how the partition reaches its virtual PCI bus's configuration space
    /// ([`PciConfig::EcamAndConf1`] when absent; mechanism #1 only without `platform.ecam`).
    #[serde(default)]
    pub pci_config: Option<Located<PciConfig>>,
}

/// `pci-config = "ecam-only" | "ecam-and-conf1"` (docs/pci-iommu.md, "The virtual PCI bus").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PciConfig {
    /// The virtual ECAM window only: 0xCF8/0xCFC are not trapped for the partition (they
    /// read all-ones like any port it does not own), so a kernel that finds no mechanism #1
    /// reaches every register through ECAM.
    EcamOnly,
    /// The virtual ECAM window (with `platform.ecam`) and mechanism #1 (the default).
    EcamAndConf1,
}

impl Partition {
    /// Whether the partition's virtual bus answers on configuration mechanism #1.
    pub fn pci_conf1(&self) -> bool {
        self.pci_config
            .as_ref()
            .is_none_or(|config| config.value == PciConfig::EcamAndConf1)
    }
    /// The `wbinvd` policy, with its default.
    pub fn wbinvd_policy(&self) -> WbinvdPolicy {
        self.wbinvd
            .as_ref()
            .map_or(WbinvdPolicy::Trap, |policy| policy.value)
    }
}

/// `wbinvd = "native" | "trap"`: whether WBINVD reaches the processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WbinvdPolicy {
    /// WBINVD runs on the processor.
    Native,
    /// The hypervisor intercepts WBINVD and INVD (the default).
    Trap,
}

/// What happens when a partition faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFault {
    Halt,
    Restart,
}

impl OnFault {
    /// The health-monitor policy the shorthand stands for.
    pub fn policy(self) -> tessera_abi::table::HealthPolicy {
        match self {
            OnFault::Halt => tessera_abi::table::HealthPolicy::HALT,
            OnFault::Restart => tessera_abi::table::HealthPolicy::RESTART,
        }
    }
}

/// `[partition.health]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Health {
    /// Event → action; events not listed keep the action `on-fault` gives them.
    #[serde(default)]
    pub events: HealthEvents,
    /// Restarts in the partition's life; [`HealthPolicy::DEFAULT_RESTART_LIMIT`] when absent.
    ///
    /// [`HealthPolicy::DEFAULT_RESTART_LIMIT`]: tessera_abi::table::HealthPolicy::DEFAULT_RESTART_LIMIT
    #[serde(default)]
    pub restart_limit: Option<Located<u64>>,
    #[serde(default)]
    pub watchdog: Option<Located<Watchdog>>,
    /// Escalation rules, in table order.
    #[serde(default)]
    pub escalate: Vec<Located<EscalationRule>>,
}

/// `events = { memory-violation = "…", … }`: one optional action per event.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthEvents {
    #[serde(default)]
    pub memory_violation: Option<Located<ActionName>>,
    #[serde(default)]
    pub shutdown: Option<Located<ActionName>>,
    #[serde(default)]
    pub entry_failure: Option<Located<ActionName>>,
    #[serde(default)]
    pub reset_request: Option<Located<ActionName>>,
    #[serde(default)]
    pub unexpected_exit: Option<Located<ActionName>>,
    #[serde(default)]
    pub watchdog_expiry: Option<Located<ActionName>>,
    #[serde(default)]
    pub restart_budget_exhausted: Option<Located<ActionName>>,
    #[serde(default)]
    pub declared_fatal: Option<Located<ActionName>>,
    #[serde(default)]
    pub device_fault: Option<Located<ActionName>>,
}

impl HealthEvents {
    /// The action the table writes for `event`, if it writes one.
    pub fn get(&self, event: HealthEvent) -> Option<&Located<ActionName>> {
        match event {
            HealthEvent::MemoryViolation => self.memory_violation.as_ref(),
            HealthEvent::Shutdown => self.shutdown.as_ref(),
            HealthEvent::EntryFailure => self.entry_failure.as_ref(),
            HealthEvent::ResetRequest => self.reset_request.as_ref(),
            HealthEvent::UnexpectedExit => self.unexpected_exit.as_ref(),
            HealthEvent::WatchdogExpiry => self.watchdog_expiry.as_ref(),
            HealthEvent::RestartBudgetExhausted => self.restart_budget_exhausted.as_ref(),
            HealthEvent::DeclaredFatal => self.declared_fatal.as_ref(),
            HealthEvent::DeviceFault => self.device_fault.as_ref(),
        }
    }
}

/// An action as the table writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    Log,
    Halt,
    WarmRestart,
    ColdRestart,
    Standby,
    MachineReset,
    MachinePowerOff,
}

impl ActionName {
    pub fn action(self) -> HealthAction {
        match self {
            ActionName::Log => HealthAction::Log,
            ActionName::Halt => HealthAction::Halt,
            ActionName::WarmRestart => HealthAction::WarmRestart,
            ActionName::ColdRestart => HealthAction::ColdRestart,
            ActionName::Standby => HealthAction::SwitchToStandby,
            ActionName::MachineReset => HealthAction::MachineReset,
            ActionName::MachinePowerOff => HealthAction::MachinePowerOff,
        }
    }
}

/// An event as an escalation rule names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventName {
    MemoryViolation,
    Shutdown,
    EntryFailure,
    ResetRequest,
    UnexpectedExit,
    WatchdogExpiry,
    RestartBudgetExhausted,
    DeclaredFatal,
    DeviceFault,
}

impl EventName {
    pub fn event(self) -> HealthEvent {
        match self {
            EventName::MemoryViolation => HealthEvent::MemoryViolation,
            EventName::Shutdown => HealthEvent::Shutdown,
            EventName::EntryFailure => HealthEvent::EntryFailure,
            EventName::ResetRequest => HealthEvent::ResetRequest,
            EventName::UnexpectedExit => HealthEvent::UnexpectedExit,
            EventName::WatchdogExpiry => HealthEvent::WatchdogExpiry,
            EventName::RestartBudgetExhausted => HealthEvent::RestartBudgetExhausted,
            EventName::DeclaredFatal => HealthEvent::DeclaredFatal,
            EventName::DeviceFault => HealthEvent::DeviceFault,
        }
    }
}

/// `watchdog = { period = "100 ms" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Watchdog {
    pub period: Located<Duration>,
}

/// One `escalate` entry: `{ event = … | action = …, count, window, to }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EscalationRule {
    #[serde(default)]
    pub event: Option<Located<EventName>>,
    #[serde(default)]
    pub action: Option<Located<ActionName>>,
    pub count: Located<u64>,
    pub window: Located<Duration>,
    pub to: Located<ActionName>,
}

/// The boot protocol of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootKind {
    /// An ELF guest entered through PVH.
    Elf,
    /// A Linux bzImage with an initrd (not supported by the hypervisor yet).
    Linux,
}

/// `boot = { kind = …, … }`. Which keys belong to which kind is checked by validation
/// (`boot-incomplete`, `boot-extra-key`), so one table reports every such mistake.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Boot {
    pub kind: Located<BootKind>,
    /// `elf`: the guest image.
    #[serde(default)]
    pub image: Option<Located<PathBuf>>,
    /// `linux`: the bzImage.
    #[serde(default)]
    pub kernel: Option<Located<PathBuf>>,
    /// `linux`: the initial RAM disk.
    #[serde(default)]
    pub initrd: Option<Located<PathBuf>>,
    /// The guest's command line (both kinds).
    #[serde(default)]
    pub cmdline: Option<Located<String>>,
}

/// A parsed capability string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `power`.
    Power,
    /// `stats:<partition>` or `stats:*`.
    Stats(CapabilityTarget),
    /// `halt:<partition>`.
    Halt(String),
    /// `restart:<partition>`.
    Restart(String),
    /// `health:<partition>`: may read that partition's health log.
    Health(String),
}

/// The object of a `stats:` capability.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CapabilityTarget {
    Every,
    Partition(String),
}

/// Why a capability string could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapabilityError {
    UnknownVerb(String),
    MissingObject(String),
    UnexpectedObject(String),
    WildcardNotAllowed(String),
}

impl fmt::Display for CapabilityError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownVerb(verb) => write!(formatter, "unknown capability `{verb}`"),
            Self::MissingObject(verb) => {
                write!(
                    formatter,
                    "capability `{verb}` needs an object: `{verb}:<partition>`"
                )
            }
            Self::UnexpectedObject(verb) => {
                write!(formatter, "capability `{verb}` takes no object")
            }
            Self::WildcardNotAllowed(verb) => {
                write!(
                    formatter,
                    "`{verb}:*` is not allowed; only `stats:*` takes `*`"
                )
            }
        }
    }
}

impl std::error::Error for CapabilityError {}

impl std::str::FromStr for Capability {
    type Err = CapabilityError;
    fn from_str(text: &str) -> Result<Self, CapabilityError> {
        let (verb, object) = match text.split_once(':') {
            Some((verb, object)) => (verb, Some(object)),
            None => (text, None),
        };
        let named = |verb: &str| match object {
            None | Some("") => Err(CapabilityError::MissingObject(verb.to_owned())),
            Some("*") => Err(CapabilityError::WildcardNotAllowed(verb.to_owned())),
            Some(object) => Ok(object.to_owned()),
        };
        match verb {
            "power" if object.is_none() => Ok(Self::Power),
            "power" => Err(CapabilityError::UnexpectedObject(verb.to_owned())),
            "stats" => match object {
                Some("*") => Ok(Self::Stats(CapabilityTarget::Every)),
                _ => named(verb).map(|name| Self::Stats(CapabilityTarget::Partition(name))),
            },
            "halt" => named(verb).map(Self::Halt),
            "restart" => named(verb).map(Self::Restart),
            "health" => named(verb).map(Self::Health),
            other => Err(CapabilityError::UnknownVerb(other.to_owned())),
        }
    }
}

/// One `[[channel]]`: shared memory plus a doorbell between partitions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Channel {
    pub name: Located<String>,
    /// Member partitions by name.
    pub partitions: Vec<Located<String>>,
    /// Host-physical; mapped into each member.
    pub memory: Located<AddressRange>,
    pub doorbell: Located<Doorbell>,
    /// Rings per second the hypervisor accepts from each member; [`DOORBELL_BUDGET_DEFAULT`]
    /// when absent.
    #[serde(default)]
    pub doorbell_budget: Option<Located<u64>>,
}

/// Rings per second per member of a channel without `doorbell-budget`.
pub const DOORBELL_BUDGET_DEFAULT: u32 = 10_000;
/// The largest `doorbell-budget`: one ring per microsecond per member.
pub const DOORBELL_BUDGET_MAX: u32 = 1_000_000;

impl Channel {
    /// The doorbell budget in rings per second per member, with its default.
    pub fn doorbell_budget(&self) -> u64 {
        self.doorbell_budget
            .as_ref()
            .map_or(u64::from(DOORBELL_BUDGET_DEFAULT), |budget| budget.value)
    }
}

/// `doorbell = { vector = … }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Doorbell {
    /// Interrupt vector (32–255) a ring delivers to the peer.
    pub vector: Located<u64>,
}

/// `[run]`: expectations for the runner and the system tests.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Run {
    /// Partitions expected to fault (and be contained).
    #[serde(default)]
    pub expect_faults: Vec<Located<String>>,
    /// How long the runner lets the machine run.
    #[serde(default)]
    pub seconds: Option<Located<u64>>,
    /// Extra QEMU devices, each the argument of one `-device` (e.g. `edu,addr=0x4`): the
    /// PCI functions the table passes through.
    #[serde(default)]
    pub qemu_devices: Vec<Located<String>>,
    /// Bochs i440FX PCI slots, in slot order (`pci: … slot1=…`): `e1000`, `ne2k`,
    /// `pcivga`, …
    #[serde(default)]
    pub bochs_pci_slots: Vec<Located<String>>,
    /// Disk images the runner creates in the run directory and gives QEMU, each behind
    /// one `-device` (e.g. an NVMe controller).
    #[serde(default)]
    pub qemu_disks: Vec<QemuDisk>,
}

/// `[[run.qemu-disks]]` / `qemu-disks = [ { file, size, device } ]`: a raw image of `size`
/// bytes that the runner writes as `file` in the run directory before QEMU starts (with
/// the runner's known pattern) and attaches as `-drive file=…,if=none,id=diskN,format=raw
/// -device <device>,drive=diskN`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QemuDisk {
    /// A plain file name (no directory).
    pub file: Located<String>,
    /// The image's size: a whole number of 512-byte sectors.
    pub size: Located<Size>,
    /// The QEMU device that takes the drive (`nvme,serial=…,addr=0x4`).
    pub device: Located<String>,
}

/// A span that covers nothing, for findings about the file as a whole.
pub const NO_SPAN: Span = Span::new(0, 0);
