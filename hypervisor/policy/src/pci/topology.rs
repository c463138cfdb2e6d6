//! The bridges between bus 0 and the table's functions (docs/pci-iommu.md, "Discovery at
//! boot", step 2): the bridges bus 0 has (header type 1, PCI-to-PCI Bridge 1.2 §3.2), what
//! kind each is (no PCI Express capability: a conventional PCI-to-PCI bridge; else its
//! Device/Port Type, PCIe Base 4.0 §7.5.3.2), which one leads to each table function's bus,
//! and whether that agrees with `platform.pci-bridges`. Behind a conventional or
//! PCIe-to-PCI bridge the functions share one requester ID (the bridge forwards their
//! requests under its own or its secondary bus's 00.0), so they must not belong to two
//! partitions. Pure: the hypervisor supplies configuration reads (`read(function, offset)`,
//! dwords, all-ones where nothing answers).

use super::capability::{self, CapabilityList};
use tessera_abi::table::{Bdf, PciBridge, PciBridgeKind};

/// The most bridges on bus 0 this walk records (a bus has at most 256 functions; a PC
/// has a handful of root ports and bridges there).
pub const MAX_BRIDGES: usize = 32;

/// Header dword 0x0C: header type in bits 22:16, the multi-function bit 23 (PCI 3.0
/// §6.2.1).
const HEADER_DWORD: u16 = 0x0c;
const MULTI_FUNCTION: u32 = 1 << 23;
const TYPE_BRIDGE: u32 = 1;
/// Status (dword 1, high half): Capabilities List, bit 4.
const CAPABILITIES_LIST: u32 = 1 << 20;
/// Type 1 header dword 0x18: primary bus 7:0, secondary 15:8, subordinate 23:16
/// (PCI-to-PCI Bridge 1.2 §3.2.5.3–5).
const BUS_NUMBERS: u16 = 0x18;
/// PCI Express Capabilities register (+2 in the capability, so bits 31:16 of its first
/// dword): Device/Port Type in its bits 7:4 (PCIe Base 4.0 §7.5.3.2).
const PORT_TYPE_SHIFT: u32 = 16 + 4;
const ROOT_PORT: u8 = 0b0100;
const DOWNSTREAM_SWITCH_PORT: u8 = 0b0110;
const PCIE_TO_PCI_BRIDGE: u8 = 0b0111;

/// A bridge found on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundBridge {
    pub address: Bdf,
    pub secondary: u8,
    pub subordinate: u8,
    /// `None` for a PCI Express bridge of another Device/Port Type (an upstream switch
    /// port, a PCI-to-PCIe bridge), which the table cannot declare.
    pub kind: Option<PciBridgeKind>,
    /// The Device/Port Type, or `None` without a PCI Express capability.
    pub port_type: Option<u8>,
}

impl FoundBridge {
    /// Whether `bus` lies below the bridge.
    pub fn leads_to(&self, bus: u8) -> bool {
        self.secondary != 0 && (self.secondary..=self.subordinate).contains(&bus)
    }

    /// The kind's word for messages: the table's, or the port type.
    pub fn kind_name(&self) -> &'static str {
        match (self.kind, self.port_type) {
            (Some(kind), _) => kind.name(),
            (None, Some(0b0101)) => "PCIe upstream switch port",
            (None, Some(0b1000)) => "PCI-to-PCIe bridge",
            (None, _) => "PCIe bridge of another port type",
        }
    }
}

/// Bus 0's bridges, in device/function order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bus0Bridges {
    found: [Option<FoundBridge>; MAX_BRIDGES],
    count: usize,
    /// More bridges than [`MAX_BRIDGES`] answered; the rest were not recorded.
    pub overflowed: bool,
}

/// Why a table function's place in the topology disagrees with the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyError {
    /// No bridge on bus 0 leads to the function's bus.
    NoBridge { bus: u8 },
    /// The bridge that leads to the function's bus is not the one the table declares for
    /// it (`declared` is `None` when the table declares none).
    UndeclaredBridge {
        found: FoundBridge,
        declared: Option<PciBridge>,
    },
    /// The declared bridge is of another kind than the hardware's.
    KindMismatch {
        found: FoundBridge,
        declared: PciBridge,
    },
    /// The declared bridge has other bus numbers than the hardware's.
    BusesMismatch {
        found: FoundBridge,
        declared: PciBridge,
    },
    /// More than [`MAX_BRIDGES`] bridges on bus 0: the walk cannot vouch for the result.
    TooManyBridges,
    /// The function shares the requester ID of `bridge` (a conventional or PCIe-to-PCI
    /// bridge) with `other`, which another partition owns.
    SharedRequester { other: Bdf, bridge: FoundBridge },
}

impl Bus0Bridges {
    /// Walks bus 0: every device's function 0, its other functions where the
    /// multi-function bit says so, and records each with a type 1 header.
    pub fn walk(mut read: impl FnMut(Bdf, u16) -> u32) -> Self {
        let mut bridges = Bus0Bridges {
            found: [None; MAX_BRIDGES],
            count: 0,
            overflowed: false,
        };
        for device in 0..32u8 {
            let first = Bdf::new(0, device, 0);
            if read(first, 0) & 0xffff == 0xffff {
                continue;
            }
            let functions = if read(first, HEADER_DWORD) & MULTI_FUNCTION != 0 {
                8
            } else {
                1
            };
            for function in 0..functions {
                let address = Bdf::new(0, device, function);
                if read(address, 0) & 0xffff == 0xffff {
                    continue;
                }
                if (read(address, HEADER_DWORD) >> 16) & 0x7f != TYPE_BRIDGE {
                    continue;
                }
                let buses = read(address, BUS_NUMBERS);
                let status_has_list = read(address, 4) & CAPABILITIES_LIST != 0;
                let list = CapabilityList::walk(status_has_list, |offset| read(address, offset));
                let port_type = list
                    .find(u16::from(capability::PCI_EXPRESS))
                    .map(|express| {
                        ((read(address, express.offset) >> PORT_TYPE_SHIFT) & 0xf) as u8
                    });
                let kind = match port_type {
                    None => Some(PciBridgeKind::Pci),
                    Some(ROOT_PORT | DOWNSTREAM_SWITCH_PORT) => Some(PciBridgeKind::PciePort),
                    Some(PCIE_TO_PCI_BRIDGE) => Some(PciBridgeKind::PcieToPci),
                    Some(_) => None,
                };
                let bridge = FoundBridge {
                    address,
                    secondary: (buses >> 8) as u8,
                    subordinate: (buses >> 16) as u8,
                    kind,
                    port_type,
                };
                if bridges.count == MAX_BRIDGES {
                    bridges.overflowed = true;
                } else {
                    bridges.found[bridges.count] = Some(bridge);
                    bridges.count += 1;
                }
            }
        }
        bridges
    }

    /// The bridges found.
    pub fn iter(&self) -> impl Iterator<Item = FoundBridge> + '_ {
        self.found[..self.count].iter().flatten().copied()
    }

    /// The bridge whose buses include `bus`.
    pub fn above(&self, bus: u8) -> Option<FoundBridge> {
        self.iter().find(|bridge| bridge.leads_to(bus))
    }

    /// Checks `function` against the hardware and the table's `declared` bridges: on bus 0
    /// nothing to check (`None`); else the bridge leading to its bus must be the declared
    /// one, of the declared kind and bus numbers. Returns that bridge.
    pub fn check_function(
        &self,
        declared: &[PciBridge],
        function: Bdf,
    ) -> Result<Option<FoundBridge>, TopologyError> {
        let bus = function.bus();
        if bus == 0 {
            return Ok(None);
        }
        let Some(found) = self.above(bus) else {
            return Err(if self.overflowed {
                TopologyError::TooManyBridges
            } else {
                TopologyError::NoBridge { bus }
            });
        };
        let declared = declared
            .iter()
            .copied()
            .find(|bridge| bridge.secondary == bus);
        let Some(declared) = declared.filter(|bridge| bridge.physical == found.address) else {
            return Err(TopologyError::UndeclaredBridge { found, declared });
        };
        if found.kind != Some(declared.kind) {
            return Err(TopologyError::KindMismatch { found, declared });
        }
        if (found.secondary, found.subordinate) != (declared.secondary, declared.subordinate) {
            return Err(TopologyError::BusesMismatch { found, declared });
        }
        Ok(Some(found))
    }

    /// Of `functions` (address and owner), the first pair behind one bridge whose functions
    /// share its requester ID with different owners: `(later, earlier, bridge)`.
    pub fn first_split<I>(&self, functions: I) -> Option<(Bdf, Bdf, FoundBridge)>
    where
        I: Iterator<Item = (Bdf, usize)> + Clone,
    {
        let aliasing = |address: Bdf| {
            self.above(address.bus())
                .filter(|bridge| bridge.kind.is_none_or(PciBridgeKind::aliases_requesters))
        };
        for (index, (function, owner)) in functions.clone().enumerate() {
            let Some(bridge) = aliasing(function) else {
                continue;
            };
            for (other, other_owner) in functions.clone().take(index) {
                if other_owner != owner
                    && aliasing(other).map(|other_bridge| other_bridge.address)
                        == Some(bridge.address)
                {
                    return Some((function, other, bridge));
                }
            }
        }
        None
    }
}

/// Whether `function` is the only function below `bridge`: no other bus below it (the
/// subordinate bus is the secondary), and nothing else answers on the secondary bus. Only
/// then may the bridge's Secondary Bus Reset reset it (it resets everything below,
/// PCI-to-PCI Bridge 1.2 §3.2.5.17).
pub fn alone_below(
    bridge: &FoundBridge,
    function: Bdf,
    mut read: impl FnMut(Bdf, u16) -> u32,
) -> bool {
    if bridge.subordinate != bridge.secondary || function.bus() != bridge.secondary {
        return false;
    }
    // Every function number is probed, not only those function 0's multi-function bit
    // announces: a cheap guard against a device that misreports it.
    for device in 0..32u8 {
        for number in 0..8u8 {
            let address = Bdf::new(bridge.secondary, device, number);
            if address != function && read(address, 0) & 0xffff != 0xffff {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine of header-type-1 bridges on bus 0 and endpoints behind them.
    struct Machine {
        /// (address, secondary, subordinate, PCIe port type or none).
        bridges: &'static [(Bdf, u8, u8, Option<u8>)],
        endpoints: &'static [Bdf],
    }

    impl Machine {
        fn read(&self, address: Bdf, offset: u16) -> u32 {
            if let Some(&(_, secondary, subordinate, port_type)) =
                self.bridges.iter().find(|bridge| bridge.0 == address)
            {
                return match offset {
                    0 => 0x0001_1b36,
                    4 => u32::from(port_type.is_some()) << 20,
                    HEADER_DWORD => 0x0001_0000,
                    BUS_NUMBERS => u32::from(subordinate) << 16 | u32::from(secondary) << 8,
                    0x34 => 0x40,
                    0x40 => u32::from(port_type.unwrap_or(0)) << PORT_TYPE_SHIFT | 0x10,
                    _ => 0,
                };
            }
            if self.endpoints.contains(&address) {
                return match offset {
                    0 => 0x11e8_1234,
                    HEADER_DWORD => {
                        let multi = self
                            .endpoints
                            .iter()
                            .any(|other| other.0 != address.0 && other.0 >> 3 == address.0 >> 3);
                        u32::from(multi) << 23
                    }
                    _ => 0,
                };
            }
            u32::MAX
        }
    }

    const CONVENTIONAL: Bdf = Bdf::new(0, 5, 0);
    const ROOT_PORT_AT: Bdf = Bdf::new(0, 6, 0);
    const MACHINE: Machine = Machine {
        bridges: &[
            (CONVENTIONAL, 1, 1, None),
            (ROOT_PORT_AT, 2, 2, Some(ROOT_PORT)),
            (Bdf::new(0, 7, 0), 3, 4, Some(0b0101)),
        ],
        endpoints: &[
            Bdf::new(0, 4, 0),
            Bdf::new(1, 1, 0),
            Bdf::new(1, 2, 0),
            Bdf::new(2, 0, 0),
            Bdf::new(4, 0, 0),
        ],
    };

    fn walk() -> Bus0Bridges {
        Bus0Bridges::walk(|address, offset| MACHINE.read(address, offset))
    }

    fn declared(address: Bdf, secondary: u8, kind: PciBridgeKind) -> PciBridge {
        PciBridge {
            physical: address,
            secondary,
            subordinate: secondary,
            kind,
        }
    }

    #[test]
    fn the_walk_finds_each_bridge_and_its_kind() {
        let bridges = walk();
        let found: std::vec::Vec<_> = bridges.iter().collect();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].kind, Some(PciBridgeKind::Pci));
        assert_eq!(found[1].kind, Some(PciBridgeKind::PciePort));
        assert_eq!(found[2].kind, None);
        assert_eq!(found[2].kind_name(), "PCIe upstream switch port");
        assert_eq!(
            bridges.above(4).map(|bridge| bridge.address),
            Some(Bdf::new(0, 7, 0))
        );
        assert_eq!(bridges.above(9), None);
    }

    #[test]
    fn a_function_checks_against_its_declared_bridge() {
        let bridges = walk();
        let table = [
            declared(CONVENTIONAL, 1, PciBridgeKind::Pci),
            declared(ROOT_PORT_AT, 2, PciBridgeKind::PciePort),
        ];
        assert_eq!(bridges.check_function(&table, Bdf::new(0, 4, 0)), Ok(None));
        assert_eq!(
            bridges
                .check_function(&table, Bdf::new(2, 0, 0))
                .map(|bridge| bridge.map(|bridge| bridge.address)),
            Ok(Some(ROOT_PORT_AT))
        );
        // Declared a root port, but the hardware's bridge to bus 1 is conventional.
        let wrong_kind = [declared(CONVENTIONAL, 1, PciBridgeKind::PciePort)];
        assert!(matches!(
            bridges.check_function(&wrong_kind, Bdf::new(1, 1, 0)),
            Err(TopologyError::KindMismatch { .. })
        ));
        // Declared at another address: the hardware's bridge is undeclared.
        let elsewhere = [declared(Bdf::new(0, 8, 0), 1, PciBridgeKind::Pci)];
        assert!(matches!(
            bridges.check_function(&elsewhere, Bdf::new(1, 1, 0)),
            Err(TopologyError::UndeclaredBridge {
                declared: Some(_),
                ..
            })
        ));
        assert!(matches!(
            bridges.check_function(&[], Bdf::new(1, 1, 0)),
            Err(TopologyError::UndeclaredBridge { declared: None, .. })
        ));
        // Other bus numbers.
        let mut wider = declared(ROOT_PORT_AT, 2, PciBridgeKind::PciePort);
        wider.subordinate = 3;
        assert!(matches!(
            bridges.check_function(&[wider], Bdf::new(2, 0, 0)),
            Err(TopologyError::BusesMismatch { .. })
        ));
        assert_eq!(
            bridges.check_function(&table, Bdf::new(9, 0, 0)),
            Err(TopologyError::NoBridge { bus: 9 })
        );
    }

    #[test]
    fn functions_sharing_a_requester_id_have_one_owner() {
        let bridges = walk();
        let behind_conventional = [(Bdf::new(1, 1, 0), 0), (Bdf::new(1, 2, 0), 1)];
        assert_eq!(
            bridges.first_split(behind_conventional.iter().copied()),
            Some((
                Bdf::new(1, 2, 0),
                Bdf::new(1, 1, 0),
                bridges.above(1).unwrap()
            ))
        );
        let same_owner = [(Bdf::new(1, 1, 0), 1), (Bdf::new(1, 2, 0), 1)];
        assert_eq!(bridges.first_split(same_owner.iter().copied()), None);
        // Behind a root port each function has its own requester ID.
        let split_port = [
            (Bdf::new(2, 0, 0), 0),
            (Bdf::new(2, 0, 1), 1),
            (Bdf::new(0, 4, 0), 2),
        ];
        assert_eq!(bridges.first_split(split_port.iter().copied()), None);
    }

    #[test]
    fn secondary_bus_reset_only_for_a_function_alone() {
        let bridges = walk();
        let read = |address, offset| MACHINE.read(address, offset);
        let port = bridges.above(2).unwrap();
        assert!(alone_below(&port, Bdf::new(2, 0, 0), read));
        let conventional = bridges.above(1).unwrap();
        assert!(!alone_below(&conventional, Bdf::new(1, 1, 0), read));
        // A bridge with further buses below resets them too.
        let switch = bridges.above(4).unwrap();
        assert!(!alone_below(&switch, Bdf::new(4, 0, 0), read));
        // A second function of the same device.
        const TWO: Machine = Machine {
            bridges: MACHINE.bridges,
            endpoints: &[Bdf::new(2, 0, 0), Bdf::new(2, 0, 3)],
        };
        let two = TWO;
        assert!(!alone_below(&port, Bdf::new(2, 0, 0), |address, offset| {
            two.read(address, offset)
        }));
    }
}
