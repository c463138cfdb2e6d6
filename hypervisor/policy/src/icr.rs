//! x2APIC interrupt command register (ICR) decoding and the IPI filter that keeps a
//! partition's inter-processor interrupts on its own cores.
//!
//! In x2APIC mode the ICR is the single 64-bit MSR 0x830 (Intel SDM vol 3 §11.12.9); its low
//! half has the layout of the xAPIC ICR (§11.6.1) and bits 63:32 hold the full 32-bit
//! destination x2APIC ID. The hypervisor intercepts writes to it (see [`crate::msr`]), decodes
//! the value with [`Icr::decode`] and asks [`filter`] what to send.

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

const DESTINATION_MODE_LOGICAL: u64 = 1 << 11;
const LEVEL_ASSERT: u64 = 1 << 14;
const TRIGGER_LEVEL: u64 = 1 << 15;
const SHORTHAND_SHIFT: u32 = 18;

/// A physical destination of all ones addresses every processor (SDM vol 3 §11.12.9).
pub const BROADCAST: u32 = 0xffff_ffff;

impl Icr {
    pub const fn decode(value: u64) -> Icr {
        Icr {
            vector: value as u8,
            delivery_mode: DeliveryMode::from_bits((value >> 8) as u8),
            destination_mode: if value & DESTINATION_MODE_LOGICAL != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            level_assert: value & LEVEL_ASSERT != 0,
            trigger_level: value & TRIGGER_LEVEL != 0,
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
        let mut value = self.vector as u64 | (self.delivery_mode.bits() as u64) << 8;
        if matches!(self.destination_mode, DestinationMode::Logical) {
            value |= DESTINATION_MODE_LOGICAL;
        }
        if self.level_assert {
            value |= LEVEL_ASSERT;
        }
        if self.trigger_level {
            value |= TRIGGER_LEVEL;
        }
        let shorthand: u64 = match self.shorthand {
            Shorthand::None => 0,
            Shorthand::SelfOnly => 1,
            Shorthand::AllIncludingSelf => 2,
            Shorthand::AllExcludingSelf => 3,
        };
        value | shorthand << SHORTHAND_SHIFT | (self.destination as u64) << 32
    }
}

/// Why an IPI is not sent. The hypervisor counts these per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The destination is a core the partition does not own.
    OutsidePartition,
    /// Logical destinations are not translated yet.
    LogicalDestination,
    /// SMI, reserved modes, and (for now) INIT and start-up.
    UnsupportedDeliveryMode,
}

/// What the hypervisor does with an ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrDecision {
    /// Write this ICR value (re-encoded from the decoded fields) to the real ICR.
    Forward(u64),
    /// Send one physical IPI per core of the partition, excluding the sender unless
    /// `including_self`: `template` with the core's x2APIC ID in bits 63:32 (see
    /// [`with_destination`]). The hypervisor expands shorthands itself because the hardware
    /// ones would reach every core of the machine.
    ForwardEach {
        including_self: bool,
        template: u64,
    },
    Drop(DropReason),
}

/// `template` addressed to `destination`.
pub const fn with_destination(template: u64, destination: u32) -> u64 {
    (template & 0xffff_ffff) | (destination as u64) << 32
}

/// Decides what to do with `icr`, written by the core with x2APIC ID `sender`, whose
/// partition owns the cores `own_cpus`.
///
/// Fixed, lowest-priority and NMI IPIs pass when every target is the partition's own;
/// lowest-priority becomes fixed (the hardware's choice of target could fall outside the
/// partition) and every forwarded IPI is edge-triggered and asserted (a level-triggered IPI
/// sets the target's TMR bit, and its EOI would then be broadcast to the IOAPICs, SDM vol 3
/// §11.8.5, where other partitions' pins live). SMI and reserved modes are never sent; INIT
/// and start-up wait for the partition-restart work; logical destinations are dropped until
/// they are translated.
pub fn filter(icr: &Icr, sender: u32, own_cpus: &[u32]) -> IcrDecision {
    // The sender matters once INIT and start-up are handled (which cores of the partition
    // to restart); today's rules treat a write to the sender's own ID like any own core.
    let _ = sender;
    let delivery_mode = match icr.delivery_mode {
        DeliveryMode::Fixed | DeliveryMode::LowestPriority => DeliveryMode::Fixed,
        DeliveryMode::Nmi => DeliveryMode::Nmi,
        DeliveryMode::Smi
        | DeliveryMode::Init
        | DeliveryMode::StartUp
        | DeliveryMode::Reserved(_) => {
            return IcrDecision::Drop(DropReason::UnsupportedDeliveryMode)
        }
    };
    let physical = |destination: u32| Icr {
        vector: icr.vector,
        delivery_mode,
        destination_mode: DestinationMode::Physical,
        level_assert: true,
        trigger_level: false,
        shorthand: Shorthand::None,
        destination,
    };
    let each = |including_self: bool| IcrDecision::ForwardEach {
        including_self,
        template: physical(0).encode(),
    };
    match icr.shorthand {
        Shorthand::SelfOnly => {
            // The hardware "self" shorthand only reaches the sender; keep it, normalized.
            let icr = Icr {
                shorthand: Shorthand::SelfOnly,
                destination: 0,
                ..physical(0)
            };
            IcrDecision::Forward(icr.encode())
        }
        Shorthand::AllIncludingSelf => each(true),
        Shorthand::AllExcludingSelf => each(false),
        Shorthand::None => match icr.destination_mode {
            DestinationMode::Logical => IcrDecision::Drop(DropReason::LogicalDestination),
            DestinationMode::Physical if icr.destination == BROADCAST => each(true),
            DestinationMode::Physical if own_cpus.contains(&icr.destination) => {
                IcrDecision::Forward(physical(icr.destination).encode())
            }
            DestinationMode::Physical => IcrDecision::Drop(DropReason::OutsidePartition),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: [u32; 3] = [2, 3, 7];

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

    #[test]
    fn decode_known_values() {
        // Fixed, vector 0xEC, physical, assert, edge, to x2APIC ID 5.
        let fixed = Icr::decode(0x0000_0005_0000_40ec);
        assert_eq!(
            fixed,
            icr(DeliveryMode::Fixed, Shorthand::None, 5).with_vector(0xec)
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

    impl Icr {
        fn with_vector(self, vector: u8) -> Icr {
            Icr { vector, ..self }
        }
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
    fn physical_fixed_and_nmi_to_own_cores_pass() {
        let fixed = icr(DeliveryMode::Fixed, Shorthand::None, 3);
        assert_eq!(
            filter(&fixed, 2, &OWN),
            IcrDecision::Forward(fixed.encode())
        );
        let nmi = icr(DeliveryMode::Nmi, Shorthand::None, 7);
        assert_eq!(filter(&nmi, 2, &OWN), IcrDecision::Forward(nmi.encode()));
        // To the sender itself by ID.
        assert_eq!(
            filter(&fixed.with_destination(2), 2, &OWN),
            IcrDecision::Forward(0x2_0000_4040)
        );
    }

    impl Icr {
        fn with_destination(self, destination: u32) -> Icr {
            Icr {
                destination,
                ..self
            }
        }
    }

    #[test]
    fn forwarded_values_are_normalized() {
        // Lowest priority becomes fixed; level-triggered and de-assert become edge/assert.
        let odd = Icr {
            trigger_level: true,
            level_assert: false,
            ..icr(DeliveryMode::LowestPriority, Shorthand::None, 3)
        };
        let expected = icr(DeliveryMode::Fixed, Shorthand::None, 3).encode();
        assert_eq!(filter(&odd, 2, &OWN), IcrDecision::Forward(expected));
    }

    #[test]
    fn other_partitions_cores_are_unreachable() {
        for mode in [
            DeliveryMode::Fixed,
            DeliveryMode::LowestPriority,
            DeliveryMode::Nmi,
        ] {
            for destination in [0, 1, 4, 8, 0xffff_fffe] {
                assert_eq!(
                    filter(&icr(mode, Shorthand::None, destination), 2, &OWN),
                    IcrDecision::Drop(DropReason::OutsidePartition),
                    "{mode:?} {destination}"
                );
            }
            assert_eq!(
                filter(&icr(mode, Shorthand::None, 2), 2, &[]),
                IcrDecision::Drop(DropReason::OutsidePartition)
            );
        }
    }

    #[test]
    fn unsupported_delivery_modes_are_dropped() {
        for mode in [
            DeliveryMode::Smi,
            DeliveryMode::Init,
            DeliveryMode::StartUp,
            DeliveryMode::Reserved(3),
            DeliveryMode::Reserved(7),
        ] {
            for shorthand in [
                Shorthand::None,
                Shorthand::SelfOnly,
                Shorthand::AllIncludingSelf,
                Shorthand::AllExcludingSelf,
            ] {
                assert_eq!(
                    filter(&icr(mode, shorthand, 3), 2, &OWN),
                    IcrDecision::Drop(DropReason::UnsupportedDeliveryMode),
                    "{mode:?} {shorthand:?}"
                );
            }
        }
    }

    #[test]
    fn logical_destinations_are_dropped() {
        let logical = Icr {
            destination_mode: DestinationMode::Logical,
            ..icr(DeliveryMode::Fixed, Shorthand::None, 0x1_0001)
        };
        assert_eq!(
            filter(&logical, 2, &OWN),
            IcrDecision::Drop(DropReason::LogicalDestination)
        );
        // A shorthand overrides the destination mode.
        let all = Icr {
            shorthand: Shorthand::AllIncludingSelf,
            ..logical
        };
        assert!(matches!(
            filter(&all, 2, &OWN),
            IcrDecision::ForwardEach {
                including_self: true,
                ..
            }
        ));
    }

    #[test]
    fn self_shorthand_is_forwarded() {
        let own = icr(DeliveryMode::Fixed, Shorthand::SelfOnly, 0x55);
        let expected = Icr {
            destination: 0,
            ..own
        }
        .encode();
        assert_eq!(filter(&own, 2, &OWN), IcrDecision::Forward(expected));
        let nmi = icr(DeliveryMode::Nmi, Shorthand::SelfOnly, 0);
        assert_eq!(filter(&nmi, 2, &OWN), IcrDecision::Forward(nmi.encode()));
    }

    #[test]
    fn all_shorthands_and_broadcast_expand_to_own_cores() {
        let template = icr(DeliveryMode::Fixed, Shorthand::None, 0).encode();
        let including = icr(
            DeliveryMode::LowestPriority,
            Shorthand::AllIncludingSelf,
            0x99,
        );
        assert_eq!(
            filter(&including, 2, &OWN),
            IcrDecision::ForwardEach {
                including_self: true,
                template
            }
        );
        let excluding = icr(DeliveryMode::Fixed, Shorthand::AllExcludingSelf, 0);
        assert_eq!(
            filter(&excluding, 2, &OWN),
            IcrDecision::ForwardEach {
                including_self: false,
                template
            }
        );
        let broadcast = icr(DeliveryMode::Nmi, Shorthand::None, BROADCAST);
        let nmi_template = icr(DeliveryMode::Nmi, Shorthand::None, 0).encode();
        assert_eq!(
            filter(&broadcast, 2, &OWN),
            IcrDecision::ForwardEach {
                including_self: true,
                template: nmi_template
            }
        );
        // The template is a physical, no-shorthand IPI ready for a destination.
        let target = Icr::decode(with_destination(template, 7));
        assert_eq!(target, icr(DeliveryMode::Fixed, Shorthand::None, 7));
    }
}
