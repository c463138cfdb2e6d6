//! x2APIC interrupt command register (ICR) decoding and the IPI filter that keeps a
//! partition's inter-processor interrupts on its own cores.
//!
//! In x2APIC mode the ICR is the single 64-bit MSR 0x830 (Intel SDM vol 3 §11.12.9); its low
//! half has the layout of the xAPIC ICR (§11.6.1) and bits 63:32 hold the full 32-bit
//! destination x2APIC ID. The hypervisor intercepts writes to it (see [`crate::msr`]), decodes
//! the value with [`Icr::decode`] and asks [`filter`] what to do. The answer names its targets
//! as a [`CoreSet`] of indices into the partition's core list, so nothing is allocated: the
//! hypervisor sends one physical IPI per target ([`IcrAction::Send`]) or restarts the targets
//! itself ([`IcrAction::Init`], [`IcrAction::StartUp`]). The hardware shorthands and broadcast
//! destinations are never written to the real ICR, as they would reach every core of the
//! machine.

use bitflags::bitflags;

/// How the target processes the IPI (ICR bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    /// Encodings 3 and 7, reserved.
    Reserved(u8),
}

impl DeliveryMode {
    const fn from_bits(bits: u8) -> Self {
        match bits & 0b111 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            other => DeliveryMode::Reserved(other),
        }
    }

    const fn bits(self) -> u8 {
        match self {
            DeliveryMode::Fixed => 0,
            DeliveryMode::LowestPriority => 1,
            DeliveryMode::Smi => 2,
            DeliveryMode::Nmi => 4,
            DeliveryMode::Init => 5,
            DeliveryMode::StartUp => 6,
            DeliveryMode::Reserved(bits) => bits & 0b111,
        }
    }
}

/// How `destination` is interpreted (ICR bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// An x2APIC ID.
    Physical,
    /// A cluster ID and a bitmask of logical IDs within it (SDM vol 3 §11.12.10).
    Logical,
}

/// The destination shorthand (ICR bits 19:18), which overrides `destination`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    None,
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// A decoded x2APIC ICR value. Bits the x2APIC ICR reserves (12, 13, 16, 17, 31:20) are
/// dropped by [`Icr::decode`] and written as zero by [`Icr::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    pub vector: u8,
    pub delivery_mode: DeliveryMode,
    pub destination_mode: DestinationMode,
    /// Bit 14: assert (1) or de-assert (0); only INIT de-assert uses 0.
    pub level_assert: bool,
    /// Bit 15: level (1) or edge (0) triggered.
    pub trigger_level: bool,
    pub shorthand: Shorthand,
    /// Bits 63:32.
    pub destination: u32,
}

bitflags! {
    /// The single-bit fields of the x2APIC ICR (Intel SDM vol 3 §11.12.9; the low half is
    /// laid out as the xAPIC ICR, §11.6.1). The vector (bits 7:0), delivery mode
    /// (10:8), shorthand (19:18) and destination (63:32) are multi-bit fields, decoded by
    /// [`Icr::decode`]. Delivery status (bit 12) does not exist in x2APIC mode.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct IcrFlags: u64 {
        /// Bit 11, destination mode: logical (1) or physical (0).
        const DESTINATION_MODE_LOGICAL = 1 << 11;
        /// Bit 14, level: assert (1) or de-assert (0).
        const LEVEL_ASSERT = 1 << 14;
        /// Bit 15, trigger mode: level (1) or edge (0).
        const TRIGGER_LEVEL = 1 << 15;
    }
}

/// The destination shorthand occupies ICR bits 19:18.
const SHORTHAND_SHIFT: u32 = 18;

/// A physical destination of all ones addresses every processor (SDM vol 3 §11.12.9).
pub const BROADCAST: u32 = 0xffff_ffff;

impl Icr {
    pub const fn decode(value: u64) -> Icr {
        let flags = IcrFlags::from_bits_retain(value);
        Icr {
            vector: value as u8,
            delivery_mode: DeliveryMode::from_bits((value >> 8) as u8),
            destination_mode: if flags.contains(IcrFlags::DESTINATION_MODE_LOGICAL) {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            level_assert: flags.contains(IcrFlags::LEVEL_ASSERT),
            trigger_level: flags.contains(IcrFlags::TRIGGER_LEVEL),
            shorthand: match (value >> SHORTHAND_SHIFT) & 0b11 {
                0 => Shorthand::None,
                1 => Shorthand::SelfOnly,
                2 => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
            destination: (value >> 32) as u32,
        }
    }

    pub const fn encode(&self) -> u64 {
        // `union` rather than `|=`: operators on flags are not `const`.
        let mut flags = IcrFlags::empty();
        if matches!(self.destination_mode, DestinationMode::Logical) {
            flags = flags.union(IcrFlags::DESTINATION_MODE_LOGICAL);
        }
        if self.level_assert {
            flags = flags.union(IcrFlags::LEVEL_ASSERT);
        }
        if self.trigger_level {
            flags = flags.union(IcrFlags::TRIGGER_LEVEL);
        }
        let shorthand: u64 = match self.shorthand {
            Shorthand::None => 0,
            Shorthand::SelfOnly => 1,
            Shorthand::AllIncludingSelf => 2,
            Shorthand::AllExcludingSelf => 3,
        };
        self.vector as u64
            | (self.delivery_mode.bits() as u64) << 8
            | flags.bits()
            | shorthand << SHORTHAND_SHIFT
            | (self.destination as u64) << 32
    }
}

/// Why an ICR write sends nothing. The hypervisor counts these per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Every destination is a core the partition does not own; the count is in
    /// [`IcrDecision::dropped_destinations`].
    OutsidePartition,
    /// The request does nothing on real hardware either: an INIT level de-assert (not
    /// supported since the Pentium 4, SDM vol 3 §11.6.1), an all-excluding-self shorthand in a
    /// one-core partition, or a logical destination with an empty bitmask.
    Ignored,
    /// SMI and the reserved delivery modes 3 and 7: a guest never sends these.
    UnsupportedDeliveryMode,
}

/// A set of cores of one partition: bit `i` stands for `own_cpus[i]`, the partition's `i`-th
/// core. A partition has at most [`CoreSet::CAPACITY`] cores; [`filter`] treats cores listed
/// past that as outside the partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreSet(pub u64);

impl CoreSet {
    /// The number of cores a set can hold.
    pub const CAPACITY: usize = 64;
    /// No core.
    pub const EMPTY: CoreSet = CoreSet(0);

    /// The first `count` cores (all of them from [`Self::CAPACITY`] on).
    pub const fn first_n(count: usize) -> CoreSet {
        if count >= Self::CAPACITY {
            CoreSet(u64::MAX)
        } else {
            CoreSet((1u64 << count) - 1)
        }
    }

    /// The core at `index` alone (empty for an index past [`Self::CAPACITY`]).
    pub const fn single(index: usize) -> CoreSet {
        if index >= Self::CAPACITY {
            CoreSet::EMPTY
        } else {
            CoreSet(1 << index)
        }
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of cores in the set.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    pub const fn contains(self, index: usize) -> bool {
        index < Self::CAPACITY && self.0 & (1 << index) != 0
    }

    /// The set with the core at `index` added (unchanged past [`Self::CAPACITY`]).
    #[must_use]
    pub const fn with(self, index: usize) -> CoreSet {
        CoreSet(self.0 | Self::single(index).0)
    }

    /// The set with the core at `index` removed.
    #[must_use]
    pub const fn without(self, index: usize) -> CoreSet {
        CoreSet(self.0 & !Self::single(index).0)
    }

    /// The lowest index in the set.
    pub const fn first(self) -> Option<usize> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros() as usize)
        }
    }

    /// The indices in the set, lowest first.
    pub const fn indices(self) -> CoreSetIndices {
        CoreSetIndices(self.0)
    }

    /// The x2APIC IDs of the cores in the set, lowest index first. Indices past the end of
    /// `own_cpus` are skipped.
    pub fn apic_ids(self, own_cpus: &[u32]) -> impl Iterator<Item = u32> + '_ {
        self.indices()
            .filter_map(move |index| own_cpus.get(index).copied())
    }
}

impl IntoIterator for CoreSet {
    type Item = usize;
    type IntoIter = CoreSetIndices;

    fn into_iter(self) -> CoreSetIndices {
        self.indices()
    }
}

/// The indices of a [`CoreSet`], lowest first.
#[derive(Clone, Debug)]
pub struct CoreSetIndices(u64);

impl Iterator for CoreSetIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let index = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(index)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let count = self.0.count_ones() as usize;
        (count, Some(count))
    }
}

impl ExactSizeIterator for CoreSetIndices {}

/// What the hypervisor does for the targets of an ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrAction {
    /// Write `icr_template | (apic_id << 32)` (see [`with_destination`]) to the real ICR once
    /// per target. The template is physical, without shorthand, edge-triggered and asserted,
    /// with delivery mode fixed or NMI.
    Send { icr_template: u64 },
    /// Put the targets into wait-for-SIPI (INIT level assert).
    Init,
    /// Start the targets, if they wait for a SIPI, in real mode at `vector << 12`
    /// (SDM vol 3 §9.4.4.1).
    StartUp { vector: u8 },
    /// Send nothing.
    Drop(DropReason),
}

/// The filter's answer for one ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcrDecision {
    pub action: IcrAction,
    /// The partition's cores the action applies to: never empty for `Send`, `Init` and
    /// `StartUp`, always empty for `Drop`.
    pub targets: CoreSet,
    /// Destinations the guest named that the partition does not own: dropped, never
    /// delivered, to be counted.
    pub dropped_destinations: u32,
}

impl IcrDecision {
    const fn drop(reason: DropReason, dropped_destinations: u32) -> IcrDecision {
        IcrDecision {
            action: IcrAction::Drop(reason),
            targets: CoreSet::EMPTY,
            dropped_destinations,
        }
    }
}

/// `template` addressed to `destination`.
pub const fn with_destination(template: u64, destination: u32) -> u64 {
    (template & 0xffff_ffff) | (destination as u64) << 32
}

/// The logical x2APIC ID of the core with x2APIC ID `id`: cluster `id >> 4` in bits 31:16 and
/// bit `id & 0xF` in bits 15:0 (SDM vol 3 §11.12.10.2).
pub const fn logical_x2apic_id(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

/// The index of `apic_id` in `own_cpus`, if a [`CoreSet`] can name it.
#[inline]
fn index_of(own_cpus: &[u32], apic_id: u32) -> Option<usize> {
    let nameable = &own_cpus[..own_cpus.len().min(CoreSet::CAPACITY)];
    nameable.iter().position(|&own| own == apic_id)
}

/// Resolves the destination of `icr` (shorthand, physical or logical) to the partition's
/// cores, counting the named cores it does not own.
fn resolve_targets(icr: &Icr, sender: u32, own_cpus: &[u32]) -> (CoreSet, u32) {
    let all = CoreSet::first_n(own_cpus.len());
    let sender_set = match index_of(own_cpus, sender) {
        Some(index) => CoreSet::single(index),
        None => CoreSet::EMPTY,
    };
    match icr.shorthand {
        // A sender outside its own list cannot happen; fail closed by counting it.
        Shorthand::SelfOnly if sender_set.is_empty() => (CoreSet::EMPTY, 1),
        Shorthand::SelfOnly => (sender_set, 0),
        Shorthand::AllIncludingSelf => (all, 0),
        Shorthand::AllExcludingSelf => (CoreSet(all.0 & !sender_set.0), 0),
        Shorthand::None if icr.destination == BROADCAST => (all, 0),
        Shorthand::None => match icr.destination_mode {
            DestinationMode::Physical => match index_of(own_cpus, icr.destination) {
                Some(index) => (CoreSet::single(index), 0),
                None => (CoreSet::EMPTY, 1),
            },
            DestinationMode::Logical => {
                // Bit b of cluster c names x2APIC ID (c << 4) | b (SDM vol 3 §11.12.10.2).
                let cluster = icr.destination >> 16;
                let mask = icr.destination & 0xffff;
                let mut targets = CoreSet::EMPTY;
                let mut dropped = 0;
                for bit in 0..16 {
                    if mask & (1 << bit) == 0 {
                        continue;
                    }
                    match index_of(own_cpus, (cluster << 4) | bit) {
                        Some(index) => targets = targets.with(index),
                        None => dropped += 1,
                    }
                }
                (targets, dropped)
            }
        },
    }
}

/// Decides what to do with `icr`, written by the core with x2APIC ID `sender`, whose
/// partition owns the cores `own_cpus` (x2APIC IDs; the first [`CoreSet::CAPACITY`] count).
///
/// * Destinations (SDM vol 3 §11.6.1, §11.12.9, §11.12.10): the shorthands self,
///   all-including-self and all-excluding-self expand to the sender, all own cores and all own
///   cores but the sender; a physical destination names one core, and 0xFFFF_FFFF (in either
///   destination mode) all own cores; a logical destination is resolved cluster by cluster
///   (bits 31:16 the cluster, bits 15:0 one bit per core). Named cores the partition does not
///   own are counted in `dropped_destinations` and never reached; when nothing of the
///   partition remains the decision is `Drop(OutsidePartition)`.
/// * Delivery modes: fixed stays fixed; lowest priority becomes fixed to the first target
///   (the hardware's arbitration could pick any core, SDM vol 3 §11.6.2.4); NMI is sent as
///   NMI (a guest's own NMIs are delivered); INIT level assert restarts the targets, INIT
///   level de-assert (level bit 0) is ignored, as on every processor since the Pentium 4
///   (SDM vol 3 §11.6.1); start-up starts the targets at the vector; SMI and the reserved
///   modes are dropped.
/// * Everything sent is edge-triggered and asserted: a level-triggered IPI would set the
///   target's TMR bit, and its EOI would then be broadcast to the IOAPICs (SDM vol 3
///   §11.8.5), where other partitions' pins live.
pub fn filter(icr: &Icr, sender: u32, own_cpus: &[u32]) -> IcrDecision {
    let action = match icr.delivery_mode {
        DeliveryMode::Smi | DeliveryMode::Reserved(_) => {
            return IcrDecision::drop(DropReason::UnsupportedDeliveryMode, 0)
        }
        // The de-assert only resynchronizes arbitration IDs; its destination is irrelevant.
        DeliveryMode::Init if !icr.level_assert => {
            return IcrDecision::drop(DropReason::Ignored, 0)
        }
        DeliveryMode::Fixed | DeliveryMode::LowestPriority | DeliveryMode::Nmi => {
            let delivery_mode = match icr.delivery_mode {
                DeliveryMode::Nmi => DeliveryMode::Nmi,
                _ => DeliveryMode::Fixed,
            };
            let template = Icr {
                vector: icr.vector,
                delivery_mode,
                destination_mode: DestinationMode::Physical,
                level_assert: true,
                trigger_level: false,
                shorthand: Shorthand::None,
                destination: 0,
            };
            IcrAction::Send {
                icr_template: template.encode(),
            }
        }
        DeliveryMode::Init => IcrAction::Init,
        DeliveryMode::StartUp => IcrAction::StartUp { vector: icr.vector },
    };
    let (mut targets, dropped_destinations) = resolve_targets(icr, sender, own_cpus);
    if targets.is_empty() {
        let reason = if dropped_destinations > 0 {
            DropReason::OutsidePartition
        } else {
            DropReason::Ignored
        };
        return IcrDecision::drop(reason, dropped_destinations);
    }
    if icr.delivery_mode == DeliveryMode::LowestPriority {
        if let Some(first) = targets.first() {
            targets = CoreSet::single(first);
        }
    }
    IcrDecision {
        action,
        targets,
        dropped_destinations,
    }
}

/// The delivery-mode field of an ICR value (bits 10:8) and its value for a fixed IPI, for
/// telling an [`IcrAction::Send`] template's two modes (fixed, NMI) apart without a decode.
pub const DELIVERY_MODE_MASK: u64 = 0b111 << 8;
pub const DELIVERY_MODE_FIXED: u64 = 0;

/// ICR bits that must all be clear for [`filter_value`]'s short way: delivery mode (10:8,
/// 0 = fixed), destination mode (11, physical), trigger mode (15, edge) and shorthand
/// (19:18, none). Bit 14 (level) is ignored for every mode but INIT (SDM vol 3 §11.6.1), so
/// it is not tested; the reserved bits are dropped as by [`Icr::decode`].
const NOT_FIXED_PHYSICAL: u64 = 0b111 << 8 | 1 << 11 | 1 << 15 | 0b11 << SHORTHAND_SHIFT;

/// [`filter`] of [`Icr::decode`]`(value)`, with the common write decided without decoding:
/// a fixed IPI to one physical destination, no shorthand, not the broadcast ID — every IPI
/// an operating system sends in steady state (rescheduling, TLB shootdown, function calls).
/// Exactly the same decision as the general filter (the property test
/// `filter_value_is_filter_of_decode` checks it over arbitrary values and core lists); the
/// hypervisor's exit path takes it so that the frequent write costs a few instructions
/// instead of a full decode, a template build and a destination walk.
#[inline]
pub fn filter_value(value: u64, sender: u32, own_cpus: &[u32]) -> IcrDecision {
    let destination = (value >> 32) as u32;
    if value & NOT_FIXED_PHYSICAL != 0 || destination == BROADCAST {
        return filter(&Icr::decode(value), sender, own_cpus);
    }
    match index_of(own_cpus, destination) {
        Some(index) => IcrDecision {
            action: IcrAction::Send {
                // Vector, fixed, physical, asserted, edge, no shorthand (as `filter` builds).
                icr_template: (value & 0xff) | IcrFlags::LEVEL_ASSERT.bits(),
            },
            targets: CoreSet::single(index),
            dropped_destinations: 0,
        },
        None => IcrDecision::drop(DropReason::OutsidePartition, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The partition: cores 2, 3, 7 (cluster 0) and 0x21 (cluster 2, bit 1); core 3 sends.
    const OWN: [u32; 4] = [2, 3, 7, 0x21];
    const SENDER: u32 = 3;

    fn icr(mode: DeliveryMode, shorthand: Shorthand, destination: u32) -> Icr {
        Icr {
            vector: 0x40,
            delivery_mode: mode,
            destination_mode: DestinationMode::Physical,
            level_assert: true,
            trigger_level: false,
            shorthand,
            destination,
        }
    }

    fn logical(mode: DeliveryMode, destination: u32) -> Icr {
        Icr {
            destination_mode: DestinationMode::Logical,
            ..icr(mode, Shorthand::None, destination)
        }
    }

    fn template(mode: DeliveryMode, vector: u8) -> u64 {
        Icr {
            vector,
            ..icr(mode, Shorthand::None, 0)
        }
        .encode()
    }

    fn send(mode: DeliveryMode, targets: u64, dropped: u32) -> IcrDecision {
        IcrDecision {
            action: IcrAction::Send {
                icr_template: template(mode, 0x40),
            },
            targets: CoreSet(targets),
            dropped_destinations: dropped,
        }
    }

    fn dropped(reason: DropReason, count: u32) -> IcrDecision {
        IcrDecision {
            action: IcrAction::Drop(reason),
            targets: CoreSet::EMPTY,
            dropped_destinations: count,
        }
    }

    #[test]
    fn decode_known_values() {
        // Fixed, vector 0xEC, physical, assert, edge, to x2APIC ID 5.
        let fixed = Icr::decode(0x0000_0005_0000_40ec);
        assert_eq!(
            fixed,
            Icr {
                vector: 0xec,
                ..icr(DeliveryMode::Fixed, Shorthand::None, 5)
            }
        );
        // INIT assert, level-triggered (the classic 0x0000C500).
        let init = Icr::decode(0xc500);
        assert_eq!(init.delivery_mode, DeliveryMode::Init);
        assert!(init.level_assert && init.trigger_level);
        // Start-up with vector 0x08, all excluding self.
        let sipi = Icr::decode(0x000c_4608);
        assert_eq!(sipi.delivery_mode, DeliveryMode::StartUp);
        assert_eq!(sipi.shorthand, Shorthand::AllExcludingSelf);
        assert_eq!(sipi.vector, 0x08);
        // Logical, NMI, cluster 1 bit 0.
        let logical = Icr::decode(0x0001_0001_0000_0c00);
        assert_eq!(logical.destination_mode, DestinationMode::Logical);
        assert_eq!(logical.delivery_mode, DeliveryMode::Nmi);
        assert_eq!(logical.destination, 0x1_0001);
        assert_eq!(Icr::decode(0x300).delivery_mode, DeliveryMode::Reserved(3));
        assert_eq!(Icr::decode(0x700).delivery_mode, DeliveryMode::Reserved(7));
        assert_eq!(Icr::decode(0x200).delivery_mode, DeliveryMode::Smi);
        assert_eq!(
            Icr::decode(0x100).delivery_mode,
            DeliveryMode::LowestPriority
        );
        assert_eq!(Icr::decode(1 << 18).shorthand, Shorthand::SelfOnly);
        assert_eq!(Icr::decode(2 << 18).shorthand, Shorthand::AllIncludingSelf);
    }

    #[test]
    fn encode_round_trips_and_drops_reserved_bits() {
        for value in [
            0u64,
            0x40ec,
            0xc500,
            0x000c_4608,
            0x0001_0001_0000_0c00,
            0xffff_ffff_000f_cfff,
        ] {
            let decoded = Icr::decode(value);
            assert_eq!(Icr::decode(decoded.encode()), decoded);
        }
        // Bits 12, 13, 16, 17 and 31:20 are reserved in the x2APIC ICR.
        let reserved = (1 << 12) | (1 << 13) | (1 << 16) | (1 << 17) | 0xfff0_0000;
        assert_eq!(Icr::decode(0x40ec | reserved).encode(), 0x40ec);
        assert_eq!(
            with_destination(0x40ec | 0xdead_0000_0000, 9),
            0x9_0000_40ec
        );
    }

    #[test]
    fn core_set_helpers() {
        let set = CoreSet::EMPTY.with(0).with(5).with(63).with(64);
        assert_eq!(set.bits(), 1 | 1 << 5 | 1 << 63);
        assert_eq!(set.len(), 3);
        assert!(set.contains(5) && !set.contains(4) && !set.contains(64));
        assert_eq!(set.first(), Some(0));
        assert_eq!(set.without(0).first(), Some(5));
        assert_eq!(set.indices().collect::<std::vec::Vec<_>>(), [0, 5, 63]);
        assert_eq!(set.indices().len(), 3);
        assert_eq!(set.into_iter().last(), Some(63));
        assert_eq!(CoreSet::EMPTY.first(), None);
        assert!(CoreSet::EMPTY.is_empty() && CoreSet::EMPTY.indices().next().is_none());
        assert_eq!(CoreSet::first_n(0), CoreSet::EMPTY);
        assert_eq!(CoreSet::first_n(3).bits(), 0b111);
        assert_eq!(CoreSet::first_n(64).bits(), u64::MAX);
        assert_eq!(CoreSet::first_n(100).bits(), u64::MAX);
        assert_eq!(CoreSet::single(64), CoreSet::EMPTY);
        // IDs follow the indices; indices past the list are skipped.
        let ids: std::vec::Vec<u32> = CoreSet(0b1_0101).apic_ids(&OWN).collect();
        assert_eq!(ids, [2, 7]);
    }

    #[test]
    fn logical_ids_follow_the_cluster_rule() {
        assert_eq!(logical_x2apic_id(0), 0x0000_0001);
        assert_eq!(logical_x2apic_id(7), 0x0000_0080);
        assert_eq!(logical_x2apic_id(0xf), 0x0000_8000);
        assert_eq!(logical_x2apic_id(0x10), 0x0001_0001);
        assert_eq!(logical_x2apic_id(0x21), 0x0002_0002);
        assert_eq!(logical_x2apic_id(0xffff_ffff), 0xffff_8000);
    }

    #[test]
    fn physical_destinations() {
        let fixed = icr(DeliveryMode::Fixed, Shorthand::None, 7);
        assert_eq!(
            filter(&fixed, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b100, 0)
        );
        // To the sender itself by ID.
        let to_self = icr(DeliveryMode::Fixed, Shorthand::None, SENDER);
        assert_eq!(
            filter(&to_self, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b10, 0)
        );
        // Another partition's core, or none at all.
        for destination in [0, 1, 4, 8, 0x20, 0xffff_fffe] {
            let other = icr(DeliveryMode::Fixed, Shorthand::None, destination);
            assert_eq!(
                filter(&other, SENDER, &OWN),
                dropped(DropReason::OutsidePartition, 1),
                "{destination:#x}"
            );
        }
        // Broadcast: every own core.
        let broadcast = icr(DeliveryMode::Fixed, Shorthand::None, BROADCAST);
        assert_eq!(
            filter(&broadcast, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b1111, 0)
        );
    }

    #[test]
    fn sent_templates_are_normalized_and_addressable() {
        // Level-triggered and de-asserted fixed IPIs go out edge-triggered and asserted.
        let odd = Icr {
            trigger_level: true,
            level_assert: false,
            vector: 0xfe,
            ..icr(DeliveryMode::Fixed, Shorthand::None, 2)
        };
        let decision = filter(&odd, SENDER, &OWN);
        let IcrAction::Send { icr_template } = decision.action else {
            panic!("{decision:?}");
        };
        assert_eq!(icr_template, 0x40fe);
        let sent = Icr::decode(with_destination(icr_template, 2));
        assert_eq!(
            sent,
            Icr {
                vector: 0xfe,
                ..icr(DeliveryMode::Fixed, Shorthand::None, 2)
            }
        );
        let nmi = icr(DeliveryMode::Nmi, Shorthand::None, 2);
        assert_eq!(
            filter(&nmi, SENDER, &OWN).action,
            IcrAction::Send {
                icr_template: 0x4440
            }
        );
    }

    #[test]
    fn lowest_priority_becomes_fixed_to_the_first_target() {
        let one = icr(DeliveryMode::LowestPriority, Shorthand::None, 0x21);
        assert_eq!(
            filter(&one, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b1000, 0)
        );
        let all = icr(DeliveryMode::LowestPriority, Shorthand::AllExcludingSelf, 0);
        assert_eq!(
            filter(&all, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b1, 0)
        );
        // Logical: cores 3 and 7 of cluster 0 plus the foreign core 4.
        let mixed = logical(DeliveryMode::LowestPriority, 0b1001_1000);
        assert_eq!(
            filter(&mixed, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b10, 1)
        );
    }

    #[test]
    fn shorthands_expand_to_own_cores() {
        let cases = [
            (Shorthand::SelfOnly, 0b10),
            (Shorthand::AllIncludingSelf, 0b1111),
            (Shorthand::AllExcludingSelf, 0b1101),
        ];
        for (shorthand, targets) in cases {
            // The destination field and mode are ignored with a shorthand.
            for destination in [0, 0x99, BROADCAST] {
                for mode in [DestinationMode::Physical, DestinationMode::Logical] {
                    let request = Icr {
                        destination_mode: mode,
                        ..icr(DeliveryMode::Fixed, shorthand, destination)
                    };
                    assert_eq!(
                        filter(&request, SENDER, &OWN),
                        send(DeliveryMode::Fixed, targets, 0),
                        "{shorthand:?} {destination:#x} {mode:?}"
                    );
                }
            }
        }
        // A one-core partition has nobody else to send to.
        let excluding = icr(DeliveryMode::Fixed, Shorthand::AllExcludingSelf, 0);
        assert_eq!(filter(&excluding, 5, &[5]), dropped(DropReason::Ignored, 0));
        // A sender missing from its own list (a hypervisor bug) reaches nobody.
        let own = icr(DeliveryMode::Fixed, Shorthand::SelfOnly, 0);
        assert_eq!(
            filter(&own, 9, &OWN),
            dropped(DropReason::OutsidePartition, 1)
        );
        assert_eq!(
            filter(&excluding, 9, &OWN),
            send(DeliveryMode::Fixed, 0b1111, 0)
        );
    }

    #[test]
    fn logical_destinations_are_resolved_per_cluster() {
        // Cluster 0: bits 2, 3 and 7 are own cores, bits 0 and 1 are not.
        let cluster0 = logical(DeliveryMode::Fixed, 0b1000_1111);
        assert_eq!(
            filter(&cluster0, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b111, 2)
        );
        // Cluster 2, bit 1 is core 0x21.
        let cluster2 = logical(DeliveryMode::Fixed, logical_x2apic_id(0x21));
        assert_eq!(
            filter(&cluster2, SENDER, &OWN),
            send(DeliveryMode::Fixed, 0b1000, 0)
        );
        // Core 3's logical ID in cluster 1 names core 0x13, which is foreign.
        let cluster1 = logical(DeliveryMode::Fixed, 0x1_0008);
        assert_eq!(
            filter(&cluster1, SENDER, &OWN),
            dropped(DropReason::OutsidePartition, 1)
        );
        // Every bit of a foreign cluster.
        let foreign = logical(DeliveryMode::Fixed, 0x5_ffff);
        assert_eq!(
            filter(&foreign, SENDER, &OWN),
            dropped(DropReason::OutsidePartition, 16)
        );
        // An empty bitmask names nobody.
        let empty = logical(DeliveryMode::Fixed, 0x2_0000);
        assert_eq!(
            filter(&empty, SENDER, &OWN),
            dropped(DropReason::Ignored, 0)
        );
        // All ones is the broadcast in logical mode too.
        let broadcast = logical(DeliveryMode::Nmi, BROADCAST);
        assert_eq!(
            filter(&broadcast, SENDER, &OWN),
            send(DeliveryMode::Nmi, 0b1111, 0)
        );
    }

    #[test]
    fn init_and_start_up_restart_own_cores_only() {
        let init = Icr::decode(0x0000_0007_0000_c500);
        assert_eq!(
            filter(&init, SENDER, &OWN),
            IcrDecision {
                action: IcrAction::Init,
                targets: CoreSet(0b100),
                dropped_destinations: 0
            }
        );
        let sipi = Icr::decode(0x0000_0007_0000_0608);
        assert_eq!(
            filter(&sipi, SENDER, &OWN),
            IcrDecision {
                action: IcrAction::StartUp { vector: 0x08 },
                targets: CoreSet(0b100),
                dropped_destinations: 0
            }
        );
        // Linux's broadcast form: all excluding self.
        let all = Icr::decode(0x000c_4608);
        assert_eq!(filter(&all, SENDER, &OWN).targets, CoreSet(0b1101));
        // Another partition's core is never re-initialized or started.
        for value in [0x0000_0004_0000_c500, 0x0000_0004_0000_0608] {
            assert_eq!(
                filter(&Icr::decode(value), SENDER, &OWN),
                dropped(DropReason::OutsidePartition, 1)
            );
        }
        // INIT level de-assert (level 0, trigger level) is a no-op, wherever it points.
        for destination in [2u64, 4, 0xffff_ffff] {
            let deassert = Icr::decode(destination << 32 | 0x8500);
            assert_eq!(
                filter(&deassert, SENDER, &OWN),
                dropped(DropReason::Ignored, 0)
            );
        }
    }

    #[test]
    fn smi_and_reserved_modes_are_dropped() {
        for bits in [2u64, 3, 7] {
            for shorthand in 0..4u64 {
                let request = Icr::decode(0x0000_0007_0000_4000 | bits << 8 | shorthand << 18);
                assert_eq!(
                    filter(&request, SENDER, &OWN),
                    dropped(DropReason::UnsupportedDeliveryMode, 0)
                );
            }
        }
    }

    #[test]
    fn cores_past_the_capacity_are_outside() {
        let many: std::vec::Vec<u32> = (100..200).collect();
        let to_64th = icr(DeliveryMode::Fixed, Shorthand::None, 163);
        assert_eq!(
            filter(&to_64th, 100, &many),
            send(DeliveryMode::Fixed, 1 << 63, 0)
        );
        let to_65th = icr(DeliveryMode::Fixed, Shorthand::None, 164);
        assert_eq!(
            filter(&to_65th, 100, &many),
            dropped(DropReason::OutsidePartition, 1)
        );
        let all = icr(DeliveryMode::Fixed, Shorthand::AllIncludingSelf, 0);
        assert_eq!(filter(&all, 100, &many).targets, CoreSet(u64::MAX));
    }

    /// An independent model of the rules, checked against [`filter`] for every delivery mode,
    /// destination mode, shorthand, level and trigger bit and a spread of destinations.
    #[test]
    fn exhaustive_against_a_model() {
        let destinations = [
            0u32,
            1,
            2,
            3,
            4,
            7,
            8,
            0x21,
            0x22,
            0xff,
            0x1_0000,
            0x1_0002,
            0x2_0002,
            0x2_0003,
            0b1000_1100,
            0b1000_1111,
            0xffff,
            0x7_ffff,
            0xffff_0001,
            0xffff_fffe,
            BROADCAST,
        ];
        let mut checked = 0;
        for mode_bits in 0..8u64 {
            for logical_bit in 0..2u64 {
                for shorthand in 0..4u64 {
                    for level in 0..2u64 {
                        for trigger in 0..2u64 {
                            for &destination in &destinations {
                                for vector in [0u8, 0x31, 0xff] {
                                    let value = u64::from(vector)
                                        | mode_bits << 8
                                        | logical_bit << 11
                                        | level << 14
                                        | trigger << 15
                                        | shorthand << 18
                                        | u64::from(destination) << 32;
                                    check_against_model(value);
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 8 * 2 * 4 * 2 * 2 * 21 * 3);
    }

    fn check_against_model(value: u64) {
        let request = Icr::decode(value);
        let decision = filter(&request, SENDER, &OWN);
        let mode_bits = (value >> 8) & 7;
        let logical = value & (1 << 11) != 0;
        let level = value & (1 << 14) != 0;
        let shorthand = (value >> 18) & 3;
        let destination = (value >> 32) as u32;
        let vector = value as u8;

        // Which own cores the request names, and how many foreign ones.
        let names = |id: u32| -> bool {
            if destination == BROADCAST {
                true
            } else if logical {
                let own = logical_x2apic_id(id);
                own >> 16 == destination >> 16 && own & destination & 0xffff != 0
            } else {
                id == destination
            }
        };
        let (mut expected_targets, mut expected_dropped) = (0u64, 0u32);
        match shorthand {
            1 => expected_targets = 0b10,
            2 => expected_targets = 0b1111,
            3 => expected_targets = 0b1101,
            _ => {
                for (index, &id) in OWN.iter().enumerate() {
                    if names(id) {
                        expected_targets |= 1 << index;
                    }
                }
                if destination != BROADCAST {
                    let named = if logical {
                        (destination & 0xffff).count_ones()
                    } else {
                        1
                    };
                    expected_dropped = named - expected_targets.count_ones();
                }
            }
        }

        let context = std::format!("{value:#018x} -> {decision:?}");
        match mode_bits {
            2 | 3 | 7 => {
                assert_eq!(
                    decision,
                    dropped(DropReason::UnsupportedDeliveryMode, 0),
                    "{context}"
                );
                return;
            }
            5 if !level => {
                assert_eq!(decision, dropped(DropReason::Ignored, 0), "{context}");
                return;
            }
            _ => {}
        }
        if expected_targets == 0 {
            let reason = if expected_dropped > 0 {
                DropReason::OutsidePartition
            } else {
                DropReason::Ignored
            };
            assert_eq!(decision, dropped(reason, expected_dropped), "{context}");
            return;
        }
        assert_eq!(decision.dropped_destinations, expected_dropped, "{context}");
        let lowest_first = 1 << expected_targets.trailing_zeros();
        match mode_bits {
            0 | 4 => {
                assert_eq!(decision.targets, CoreSet(expected_targets), "{context}");
                let sent_mode = if mode_bits == 4 {
                    DeliveryMode::Nmi
                } else {
                    DeliveryMode::Fixed
                };
                assert_eq!(
                    decision.action,
                    IcrAction::Send {
                        icr_template: template(sent_mode, vector)
                    },
                    "{context}"
                );
            }
            1 => {
                assert_eq!(decision.targets, CoreSet(lowest_first), "{context}");
                assert_eq!(
                    decision.action,
                    IcrAction::Send {
                        icr_template: template(DeliveryMode::Fixed, vector)
                    },
                    "{context}"
                );
            }
            5 => {
                assert_eq!(decision.targets, CoreSet(expected_targets), "{context}");
                assert_eq!(decision.action, IcrAction::Init, "{context}");
            }
            6 => {
                assert_eq!(decision.targets, CoreSet(expected_targets), "{context}");
                assert_eq!(decision.action, IcrAction::StartUp { vector }, "{context}");
            }
            _ => unreachable!(),
        }
        // Whatever is sent reaches only own cores, physically, without a shorthand.
        assert!(decision.targets.apic_ids(&OWN).all(|id| OWN.contains(&id)));
        assert_eq!(decision.targets.bits() & !0b1111, 0, "{context}");
        if let IcrAction::Send { icr_template } = decision.action {
            let sent = Icr::decode(icr_template);
            assert_eq!(sent.shorthand, Shorthand::None);
            assert_eq!(sent.destination_mode, DestinationMode::Physical);
            assert!(sent.level_assert && !sent.trigger_level);
            assert_eq!(sent.destination, 0);
        }
    }

    mod short_way {
        use super::super::*;
        use proptest::prelude::*;

        /// An ICR low half: anything, or a fixed IPI (asserted or not) to any vector.
        fn low_half() -> impl Strategy<Value = u32> {
            prop_oneof![
                any::<u32>(),
                (0u32..=0xff).prop_map(|vector| vector | 0x4000),
                0u32..=0xff,
            ]
        }

        /// A destination: anything, a small ID (likely a partition's), or the broadcast.
        fn destination() -> impl Strategy<Value = u32> {
            prop_oneof![any::<u32>(), 0u32..8, Just(BROADCAST)]
        }

        proptest! {
            /// The short way of `filter_value` decides exactly as the general filter, for
            /// any value and any core list (duplicates and an absent sender included).
            #[test]
            fn filter_value_is_filter_of_decode(
                low in low_half(),
                destination in destination(),
                own in proptest::collection::vec(0u32..8, 0..6),
                sender in 0u32..8,
            ) {
                let value = u64::from(low) | u64::from(destination) << 32;
                prop_assert_eq!(
                    filter_value(value, sender, &own),
                    filter(&Icr::decode(value), sender, &own)
                );
            }
        }
    }
}
