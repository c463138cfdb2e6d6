//! A model function in the shape of QEMU's `edu` (1234:11e8, one 1 MiB memory BAR, MSI)
//! with a vendor-specific capability and an SR-IOV extended capability, driven through the
//! virtual function as a guest would.

use super::*;
use std::vec;
use std::vec::Vec;

struct Model {
    registers: [u32; 1024],
    /// Per BAR, the read-only bits (type) and the writable address mask.
    bar_masks: [u32; 6],
    writes: Vec<(u16, u32)>,
    extended: bool,
}

const BAR_BASE: u32 = 0xfea0_0000;

impl Model {
    fn edu() -> Self {
        let mut registers = [0u32; 1024];
        registers[0] = 0x11e8_1234;
        registers[1] = 0x0010_0107; // status: capabilities list; command: I/O, memory, master, SERR
        registers[2] = 0x00ff_0010; // class ff, revision 0x10
        registers[3] = 0x0080_0000; // multi-function bit set
        registers[4] = BAR_BASE; // BAR0: 32-bit memory, 1 MiB
        registers[12] = 0xfeb0_0000; // expansion ROM
        registers[13] = 0x40; // capabilities pointer
        registers[15] = 0x0000_010b; // pin A, line 11
                                     // 0x40: vendor-specific → 0x50 MSI (64-bit, 4 vectors capable) → 0x70 PM.
        registers[0x40 / 4] = 0x09 | 0x50 << 8;
        registers[0x50 / 4] = 0x05 | 0x70 << 8 | (0x0084 | 1) << 16; // enabled by firmware
        registers[0x70 / 4] = 0x01;
        registers[0x100 / 4] = 0x0010 | 1 << 16 | 0x140 << 20; // SR-IOV
        registers[0x140 / 4] = 0x0001 | 2 << 16; // AER
        Self {
            registers,
            bar_masks: [0xfff0_0000, 0, 0, 0, 0, 0],
            writes: Vec::new(),
            extended: true,
        }
    }
}

impl ConfigSpace for Model {
    fn read(&mut self, offset: u16) -> u32 {
        self.registers[usize::from(offset / 4)]
    }
    fn write(&mut self, offset: u16, value: u32) {
        self.writes.push((offset, value));
        let index = usize::from(offset / 4);
        if (4..10).contains(&index) {
            let mask = self.bar_masks[index - 4];
            self.registers[index] = value & mask;
        } else if index == 1 {
            // Status: read-only here (its W1C bits are not modelled).
            self.registers[1] = (self.registers[1] & 0xffff_0000) | (value & 0xffff);
        } else if index != 0 && index != 2 {
            self.registers[index] = value;
        }
    }
    fn extended(&self) -> bool {
        self.extended
    }
}

fn discover(model: &mut Model, interrupt: PciInterrupt) -> Result<VirtualFunction, DiscoveryError> {
    let windows = [Range {
        base: 0xfea0_0000,
        size: 0x10_0000,
    }];
    VirtualFunction::discover(model, &windows, &[], interrupt, |_| {})
}

const MSI_ONE: PciInterrupt = PciInterrupt::Msi { vectors: 1 };

#[test]
fn discovery_quiesces_and_sizes() {
    let mut model = Model::edu();
    let mut bars = Vec::new();
    let windows = [Range {
        base: 0xfea0_0000,
        size: 0x10_0000,
    }];
    let function =
        VirtualFunction::discover(&mut model, &windows, &[], MSI_ONE, |bar| bars.push(bar))
            .unwrap();
    assert_eq!(
        bars,
        vec![HardwareBar {
            index: 0,
            kind: BarKind::Memory32 {
                prefetchable: false
            },
            base: 0xfea0_0000,
            size: 0x10_0000
        }]
    );
    // Decode and bus mastering off, INTx disabled; MSI disabled.
    assert_eq!(model.registers[1] & 0xffff, 0x0100 | INTERRUPT_DISABLE);
    assert_eq!(model.registers[0x50 / 4] & MSI_ENABLE, 0);
    // BAR0 restored after sizing.
    assert_eq!(model.registers[4], BAR_BASE);
    let mut model_view = model;
    let mut read = |offset, size| function.read(&mut model_view, offset, size);
    assert_eq!(read(0x00, 4), 0x11e8_1234);
    assert_eq!(read(0x0e, 1), 0, "multi-function bit hidden");
    assert_eq!(read(0x30, 4), 0, "no expansion ROM");
    assert_eq!(read(0x34, 1), 0x50, "vendor-specific capability skipped");
    assert_eq!(read(0x3c, 2), 0x000b, "no pin: the table gives MSI");
    assert_eq!(read(0x100, 4), 0x140 << 20, "SR-IOV hidden");
    assert_eq!(read(0x140, 4), 0x0002_0001);
}

#[test]
fn refusals() {
    let mut model = Model::edu();
    model.registers[0] = 0xffff_ffff;
    assert_eq!(discover(&mut model, MSI_ONE), Err(DiscoveryError::Absent));
    let mut model = Model::edu();
    model.registers[3] = 0x0001_0000; // a PCI-to-PCI bridge
    assert!(matches!(
        discover(&mut model, MSI_ONE),
        Err(DiscoveryError::NotEndpoint { header_type: 1, .. })
    ));
    let mut model = Model::edu();
    model.registers[2] = 0x0600_0000; // a host bridge
    assert!(matches!(
        discover(&mut model, MSI_ONE),
        Err(DiscoveryError::NotEndpoint { .. })
    ));
    let mut model = Model::edu();
    model.registers[4] = 0xfe00_0000;
    assert_eq!(
        discover(&mut model, MSI_ONE),
        Err(DiscoveryError::BarOutsideWindows {
            bar: 0,
            base: 0xfe00_0000,
            size: 0x10_0000
        })
    );
    let mut model = Model::edu();
    assert!(matches!(
        VirtualFunction::discover(&mut model, &[], &[], MSI_ONE, |_| {}),
        Err(DiscoveryError::BarOutsideWindows { .. })
    ));
}

#[test]
fn guest_bar_sizing_does_not_reach_the_hardware() {
    let mut model = Model::edu();
    let mut function = discover(&mut model, MSI_ONE).unwrap();
    model.writes.clear();
    function.write(&mut model, 0x10, 4, u32::MAX, &[0]);
    assert_eq!(function.read(&mut model, 0x10, 4), 0xfff0_0000);
    function.write(&mut model, 0x10, 4, BAR_BASE, &[0]);
    assert_eq!(function.read(&mut model, 0x10, 4), BAR_BASE);
    // BAR1 is not implemented: reads 0, writes dropped.
    assert!(function.write(&mut model, 0x14, 4, u32::MAX, &[0]).dropped);
    assert_eq!(function.read(&mut model, 0x14, 4), 0);
    assert!(model.writes.is_empty());
}

#[test]
fn header_writes_are_filtered() {
    let mut model = Model::edu();
    let mut function = discover(&mut model, MSI_ONE).unwrap();
    model.writes.clear();
    // Memory space and bus master: reach the hardware.
    assert!(!function.write(&mut model, 0x04, 2, 0x0006, &[0]).dropped);
    assert_eq!(model.registers[1] & 0x7, 0x6);
    // BIST start: dropped, nothing written.
    model.writes.clear();
    assert!(function.write(&mut model, 0x0f, 1, 0x40, &[0]).dropped);
    assert!(function.write(&mut model, 0x00, 2, 0xffff, &[0]).dropped);
    assert!(
        function
            .write(&mut model, 0x30, 4, 0xffff_f800, &[0])
            .dropped
    );
    assert!(model.writes.is_empty());
    // Interrupt line: a shadow.
    assert!(!function.write(&mut model, 0x3c, 1, 5, &[0]).dropped);
    assert_eq!(function.read(&mut model, 0x3c, 1), 5);
    assert_eq!(model.registers[15] & 0xff, 0x0b);
    // Hidden capability and extended space: dropped.
    assert!(function.write(&mut model, 0x44, 4, 1, &[0]).dropped);
    assert!(function.write(&mut model, 0x104, 4, 1, &[0]).dropped);
    assert!(model.writes.is_empty());
}

#[test]
fn only_aer_error_status_writes_reach_extended_space() {
    let mut model = Model::edu();
    let mut function = discover(&mut model, MSI_ONE).unwrap();
    model.writes.clear();
    // AER (kept, at 0x140): the guest sees it first, SR-IOV before it hidden.
    assert_eq!(function.read(&mut model, 0x100, 4), 0x140 << 20);
    assert_eq!(function.read(&mut model, 0x140, 4) & 0xffff, 0x0001);
    // Uncorrectable (+04h) and correctable (+10h) error status: write-1-to-clear passes,
    // with only the bytes the guest wrote (a byte write clears nothing in the others).
    assert!(
        !function
            .write(&mut model, 0x144, 4, 0x0000_1010, &[0])
            .dropped
    );
    assert!(!function.write(&mut model, 0x151, 1, 0x20, &[0]).dropped);
    assert_eq!(
        model.writes,
        vec![(0x144, 0x0000_1010), (0x150, 0x0000_2000)]
    );
    // Masks (+08h, +14h), severity (+0Ch), control (+18h) and SR-IOV: dropped.
    model.writes.clear();
    for offset in [0x148, 0x14c, 0x154, 0x158, 0x104, 0x100] {
        assert!(
            function
                .write(&mut model, offset, 4, 0xffff_ffff, &[0])
                .dropped,
            "{offset:#x}"
        );
    }
    assert!(model.writes.is_empty());
    // Without extended space (mechanism #1 only) nothing there is reached.
    let mut model = Model::edu();
    model.extended = false;
    let mut function = discover(&mut model, MSI_ONE).unwrap();
    model.writes.clear();
    assert_eq!(function.read(&mut model, 0x140, 4), 0);
    assert!(function.write(&mut model, 0x144, 4, 1, &[0]).dropped);
    assert!(model.writes.is_empty());
}

#[test]
fn msi_is_shadowed_and_checked() {
    let mut model = Model::edu();
    let mut function = discover(&mut model, MSI_ONE).unwrap();
    let cores = [2u32];
    // A foreign core: enabling is refused, hardware stays disabled.
    function.write(&mut model, 0x54, 4, 0xfee0_0000, &cores);
    function.write(&mut model, 0x58, 4, 0, &cores);
    function.write(&mut model, 0x5c, 2, 0x0041, &cores);
    assert_eq!(
        model.registers[0x54 / 4],
        0,
        "address not written before enable"
    );
    let effect = function.write(&mut model, 0x52, 2, 0x0001, &cores);
    assert_eq!(
        effect.refused_message,
        Some(MsiRefusal::ForeignCore { apic_id: 0 })
    );
    assert_eq!(model.registers[0x50 / 4] & MSI_ENABLE, 0);
    // The guest reads back what it wrote.
    assert_eq!(function.read(&mut model, 0x54, 4), 0xfee0_0000);
    assert_eq!(function.read(&mut model, 0x52, 2) & 1, 1);
    // Its own core: written, then enabled.
    let effect = function.write(&mut model, 0x54, 4, 0xfee0_2000, &cores);
    assert_eq!(effect.refused_message, None);
    assert_eq!(model.registers[0x54 / 4], 0xfee0_2000);
    assert_eq!(model.registers[0x5c / 4], 0x41);
    assert_ne!(model.registers[0x50 / 4] & MSI_ENABLE, 0);
    // Writing the control word back as read is not a dropped write.
    let control = function.read(&mut model, 0x52, 2);
    assert!(!function.write(&mut model, 0x52, 2, control, &cores).dropped);
    // Multiple Message Enable beyond the table's one vector (the function could do 4):
    // limited to one.
    let effect = function.write(&mut model, 0x52, 2, 0x0051, &cores);
    assert!(effect.dropped);
    assert_eq!((model.registers[0x50 / 4] >> 20) & 7, 0);
    // With four vectors granted, 8 asked: limited to the function's 4.
    let mut model = Model::edu();
    let mut function = discover(&mut model, PciInterrupt::Msi { vectors: 4 }).unwrap();
    function.write(&mut model, 0x54, 4, 0xfee0_2000, &cores);
    function.write(&mut model, 0x5c, 2, 0x0041, &cores);
    let effect = function.write(&mut model, 0x52, 2, 0x0031, &cores);
    assert!(effect.dropped);
    assert_eq!((model.registers[0x50 / 4] >> 20) & 7, 2);
    let mut model = Model::edu();
    let mut function = discover(&mut model, MSI_ONE).unwrap();
    function.write(&mut model, 0x54, 4, 0xfee0_2000, &cores);
    function.write(&mut model, 0x52, 2, 0x0001, &cores);
    // An NMI message while enabled: refused, MSI disabled in hardware.
    let effect = function.write(&mut model, 0x5c, 2, 0x0441, &cores);
    assert_eq!(
        effect.refused_message,
        Some(MsiRefusal::DeliveryMode { mode: 4 })
    );
    assert_eq!(model.registers[0x50 / 4] & MSI_ENABLE, 0);
}

/// A route in the shape of the hypervisor's remapping: records what it was asked and
/// answers with a remappable-format message, or refuses past its block of entries.
struct RecordingRoute {
    asked: Vec<(msi::CheckedMessage, u16, u16)>,
    block: u16,
}

impl MessageRoute for RecordingRoute {
    fn route(
        &mut self,
        message: msi::CheckedMessage,
        first_entry: u16,
        vectors: u16,
        _original: (u64, u32),
    ) -> Result<(u64, u32), MsiRefusal> {
        self.asked.push((message, first_entry, vectors));
        if first_entry + vectors > self.block {
            return Err(MsiRefusal::NoRemappingEntry);
        }
        Ok((0xfee0_0018 | (u64::from(first_entry) << 5), 0))
    }
}

#[test]
fn a_routed_message_is_what_the_function_gets() {
    let cores = [2u32];
    let mut model = Model::edu();
    let mut function = discover(&mut model, PciInterrupt::Msi { vectors: 4 }).unwrap();
    let mut route = RecordingRoute {
        asked: Vec::new(),
        block: 4,
    };
    function.write_routed(&mut model, 0x54, 4, 0xfee0_2000, &cores, &mut route);
    function.write_routed(&mut model, 0x5c, 2, 0x0044, &cores, &mut route);
    assert!(route.asked.is_empty(), "nothing routed while MSI is off");
    let effect = function.write_routed(&mut model, 0x52, 2, 0x0021, &cores, &mut route);
    assert_eq!(effect.refused_message, None);
    let checked = msi::CheckedMessage {
        apic_id: 2,
        vector: 0x44,
    };
    assert_eq!(
        route.asked,
        [(checked, 0, 4)],
        "four vectors enabled, all routed"
    );
    // The function holds the route's message, never the guest's.
    assert_eq!(model.registers[0x54 / 4], 0xfee0_0018);
    assert_eq!(model.registers[0x58 / 4], 0);
    assert_eq!(model.registers[0x5c / 4], 0);
    assert_ne!(model.registers[0x50 / 4] & MSI_ENABLE, 0);
    // The guest still reads back its own message.
    assert_eq!(function.read(&mut model, 0x54, 4), 0xfee0_2000);
    assert_eq!(function.read(&mut model, 0x5c, 2), 0x0044);
    // A foreign core is refused before the route is asked.
    function.write_routed(&mut model, 0x54, 4, 0xfee0_0000, &cores, &mut route);
    assert_eq!(route.asked.len(), 1);
    assert_eq!(model.registers[0x50 / 4] & MSI_ENABLE, 0);
    // A route that has no entries left refuses: MSI stays off.
    let mut small = RecordingRoute {
        asked: Vec::new(),
        block: 2,
    };
    let effect = function.write_routed(&mut model, 0x54, 4, 0xfee0_2000, &cores, &mut small);
    assert_eq!(effect.refused_message, Some(MsiRefusal::NoRemappingEntry));
    assert_eq!(model.registers[0x50 / 4] & MSI_ENABLE, 0);
}

#[test]
fn interrupt_kind_hides_capabilities() {
    let mut model = Model::edu();
    let function = discover(&mut model, PciInterrupt::None).unwrap();
    // MSI hidden: the pointer goes straight to PM; no pin.
    assert_eq!(function.read(&mut model, 0x34, 1), 0x70);
    assert_eq!(function.read(&mut model, 0x3d, 1), 0);
    let mut model = Model::edu();
    model.registers[0x70 / 4] = 0x09; // PM replaced by vendor-specific
    let function = discover(&mut model, PciInterrupt::None).unwrap();
    assert_eq!(function.read(&mut model, 0x34, 1), 0);
    assert_eq!(
        function.read(&mut model, 0x06, 2) & 0x10,
        0,
        "capabilities list bit cleared"
    );
}

proptest::proptest! {
    /// Any sequence of guest writes anywhere in configuration space: the hardware never
    /// sees a BAR change, a BIST start, a ROM write, MSI-X enabled, or MSI enabled with a
    /// message that does not name the partition's core.
    #[test]
    fn guest_writes_stay_inside(writes in proptest::collection::vec((0u16..0x180, 0usize..3, proptest::num::u32::ANY), 0..64)) {
        let mut model = Model::edu();
        let mut function = discover(&mut model, MSI_ONE).unwrap();
        let cores = [2u32];
        for (offset, size_index, value) in writes {
            let size = [1u8, 2, 4][size_index];
            let offset = offset & !(u16::from(size) - 1);
            function.write(&mut model, offset, size, value, &cores);
            proptest::prop_assert_eq!(model.registers[4], BAR_BASE);
            proptest::prop_assert_eq!(model.registers[3] >> 24, 0);
            proptest::prop_assert_eq!(model.registers[12], 0xfeb0_0000);
            proptest::prop_assert_eq!(model.registers[0x100 / 4], 0x0010 | 1 << 16 | 0x140 << 20);
            let msi = model.registers[0x50 / 4];
            if msi & MSI_ENABLE != 0 {
                let address = model.registers[0x54 / 4];
                let data = model.registers[0x5c / 4];
                proptest::prop_assert!(msi::check_message(u64::from(address) | u64::from(model.registers[0x58 / 4]) << 32, data, &cores).is_ok());
            }
        }
    }
}

/// The model with an MSI-X capability at 0x80 (after PM): 5 entries in BAR0 at 0x3000, the
/// PBA at 0x3800, enabled and unmasked by firmware.
fn with_msix(table: u32) -> Model {
    let mut model = Model::edu();
    model.registers[0x70 / 4] = 0x01 | 0x80 << 8;
    model.registers[0x80 / 4] = 0x11 | (0x8000 | 4) << 16;
    model.registers[0x84 / 4] = table;
    model.registers[0x88 / 4] = 0x3800;
    model
}

#[test]
fn msix_table_is_trapped_and_enable_passes() {
    let mut model = with_msix(0x3000);
    let mut function = discover(&mut model, PciInterrupt::Msix { vectors: 2 }).unwrap();
    // Quiesced: disabled and function-masked.
    assert_eq!(model.registers[0x80 / 4] >> 30, 0b01);
    let trap = function.msix().expect("an MSI-X table");
    assert_eq!(trap.capability, 0x80);
    assert_eq!(trap.layout.entries, 5);
    assert_eq!(trap.granted, 2);
    assert_eq!((trap.pages, trap.pages_bytes), (0xfea0_3000, 0x1000));
    assert_eq!(trap.entry_address(1), 0xfea0_3010);
    assert!(trap.covers(0xfea0_3ffc) && !trap.covers(0xfea0_4000) && !trap.covers(0xfea0_2fff));
    // The guest enables MSI-X and clears the function mask: both reach the device.
    let effect = function.write(&mut model, 0x82, 2, 0x8004, &[2]);
    assert!(!effect.dropped);
    assert_eq!(model.registers[0x80 / 4] >> 30, 0b10);
}

#[test]
fn msix_enable_is_dropped_without_a_trapped_table_and_a_table_outside_its_bar_is_refused() {
    // The table grants MSI, so the MSI-X capability is hidden and nothing is trapped.
    let mut model = with_msix(0x3000);
    let function = discover(&mut model, MSI_ONE).unwrap();
    assert_eq!(function.msix(), None);
    // 5 entries at 0xffff8 run past the 1 MiB BAR; BIR 2 names no BAR.
    let mut model = with_msix(0xf_fff8);
    assert_eq!(
        discover(&mut model, PciInterrupt::Msix { vectors: 2 }),
        Err(DiscoveryError::MsixTable(MsixLayoutError::TableOutsideBar))
    );
    let mut model = with_msix(0x3002);
    assert_eq!(
        discover(&mut model, PciInterrupt::Msix { vectors: 2 }),
        Err(DiscoveryError::MsixTable(MsixLayoutError::NoSuchBar {
            bar: 2
        }))
    );
}
