//! The type 0 configuration header as a partition sees it (PCI Local Bus 3.0 §6.2, Figure
//! 6-1): which bits of a guest write reach the hardware, which stay in a shadow and which
//! are dropped (and counted), and the virtual host bridge at 00:00.0.
//!
//! Everything here works on whole dwords: an access of 1, 2 or 4 bytes at `offset` is a
//! dword at `offset & !3` with a byte mask, as the hardware sees a configuration request
//! (PCIe Base 4.0 §2.2.5, First/Last DW Byte Enables).

/// Offsets of the header registers the filter treats on their own.
pub const COMMAND: u16 = 0x04;
pub const CACHE_LINE: u16 = 0x0c;
pub const BAR0: u16 = 0x10;
/// One past the last BAR (BAR5 at 0x24).
pub const BAR_END: u16 = 0x28;
pub const EXPANSION_ROM: u16 = 0x30;
pub const CAPABILITIES_POINTER: u16 = 0x34;
pub const INTERRUPT_LINE: u16 = 0x3c;
/// The first byte after the type 0 header: capabilities live from here to 0xFF.
pub const HEADER_END: u16 = 0x40;

/// Command register bits a guest may set (PCI 3.0 §6.2.2, Figure 6-2): I/O Space (0),
/// Memory Space (1), Bus Master (2), Parity Error Response (6), SERR# Enable (8),
/// Interrupt Disable (10). Special Cycles, Memory Write and Invalidate, VGA palette snoop,
/// and Fast Back-to-Back are dropped: they concern the bus, not the function.
pub const COMMAND_GUEST_BITS: u32 = 0x0547;
/// Status register bits that are write-1-to-clear (PCI 3.0 §6.2.3, Figure 6-3): Master
/// Data Parity Error (8), Signaled Target Abort (11), Received Target Abort (12), Received
/// Master Abort (13), Signaled System Error (14), Detected Parity Error (15); in the dword
/// at 0x04 they are bits 24 and 27–31.
pub const STATUS_WRITE_ONE_TO_CLEAR: u32 = 0xf900 << 16;
/// Header type bit 7: a multi-function device (PCI 3.0 §6.2.1). Cleared in what a guest
/// reads: its virtual device holds only the functions the table gives it.
pub const MULTI_FUNCTION: u32 = 0x80 << 16;

/// The byte lanes of an access of `size` bytes at `offset`, as a mask over its dword.
pub fn byte_lanes(offset: u16, size: u8) -> u32 {
    let bytes = match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    bytes << ((offset & 3) * 8)
}

/// What becomes of one guest write to a header dword outside the BARs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderWrite {
    /// Bits of the dword whose guest value goes to the hardware (read-write bits and
    /// write-1-to-clear bits of the written lanes). 0: nothing is written.
    pub pass: u32,
    /// Bits whose current hardware value is written back unchanged in the same dword write
    /// (everything not passed). Write-1-to-clear bits are never written back (a 1 read
    /// from them would clear them), nor is BIST (a 1 in its start bit starts a self test).
    pub keep: u32,
    /// The new interrupt line, when the write reached it (a shadow register: the line is
    /// only a note for the driver, PCI 3.0 §6.2.4).
    pub interrupt_line: Option<u8>,
    /// The write touched bits that are neither passed nor shadowed: dropped, and counted.
    pub dropped: bool,
}

impl HeaderWrite {
    /// The dword to write to the hardware given what it holds now (`current`) and the
    /// guest's `value` (already shifted to its byte lanes).
    pub fn merge(self, current: u32, value: u32) -> u32 {
        (current & self.keep) | (value & self.pass)
    }
}

/// The read-write and write-1-to-clear bits of each header dword a guest may write, and
/// the shadowed bits (PCI 3.0 §6.2; see docs/pci-iommu.md, "Configuration space,
/// filtered").
fn writable(dword: u16) -> (u32, u32, u32) {
    match dword {
        COMMAND => (COMMAND_GUEST_BITS, STATUS_WRITE_ONE_TO_CLEAR, 0),
        // Cache line size and latency timer pass; header type is read-only and BIST is
        // dropped (starting a built-in self test may reset the function, §6.2.4).
        CACHE_LINE => (0x0000_ffff, 0, 0),
        // Interrupt line is a shadow; pin, min grant and max latency are read-only.
        INTERRUPT_LINE => (0, 0, 0x0000_00ff),
        // IDs, class, revision, CardBus CIS, subsystem IDs, the expansion ROM (hidden) and
        // the capabilities pointer: nothing passes.
        _ => (0, 0, 0),
    }
}

/// The BIST byte (0x0F) of the dword at 0x0C.
fn bist(dword: u16) -> u32 {
    if dword == CACHE_LINE {
        0xff00_0000
    } else {
        0
    }
}

/// Filters a guest write of `size` bytes at header `offset` (below 0x40, not a BAR) whose
/// `value` sits in the low bytes, as the guest wrote it.
pub fn filter_write(offset: u16, size: u8, value: u32) -> HeaderWrite {
    let dword = offset & !3;
    let lanes = byte_lanes(offset, size);
    let value = (value << ((offset & 3) * 8)) & lanes;
    let (read_write, write_one_to_clear, shadow) = writable(dword);
    let pass = (read_write | write_one_to_clear) & lanes;
    let keep = if pass == 0 {
        0
    } else {
        !pass & !write_one_to_clear & !bist(dword)
    };
    let interrupt_line = (shadow & lanes != 0).then_some(value as u8);
    // Dropped: any write to a dword with nothing writable (the IDs, class, the ROM BAR,
    // the capabilities pointer: a guest mistake or a probe worth counting), or a set bit
    // the filter does not let through. Zeros in the read-only lanes of a writable dword
    // (a dword write of the cache line size) are not counted.
    let writable_bits = read_write | write_one_to_clear | shadow;
    let dropped = writable_bits == 0 || value & !writable_bits != 0;
    HeaderWrite {
        pass,
        keep,
        interrupt_line,
        dropped,
    }
}

/// What a guest reads from a header dword of a passed-through function, given the
/// hardware's dword `hardware`, for the dwords the virtual view changes. BARs, the
/// capabilities pointer and the interrupt line are answered by their owners (the virtual
/// BARs, the capability list, the shadow); this covers the rest.
pub fn read_overlay(dword: u16, hardware: u32) -> u32 {
    match dword {
        CACHE_LINE => hardware & !MULTI_FUNCTION,
        // No expansion ROM: the guest never runs option-ROM code and never maps it.
        EXPANSION_ROM => 0,
        // CardBus CIS pointer: a type 0 endpoint has none worth showing.
        0x28 => 0,
        _ => hardware,
    }
}

/// The dword at 0x3C as the guest reads it: its shadowed interrupt line, the interrupt pin
/// only when the function's interrupt is INTx (else 0: no pin, §6.2.4), min grant and max
/// latency as the hardware has them.
pub fn interrupt_dword(hardware: u32, line: u8, intx: bool) -> u32 {
    let pin = if intx { hardware & 0xff00 } else { 0 };
    (hardware & 0xffff_0000) | pin | u32::from(line)
}

/// The virtual host bridge at 00:00.0 every partition with PCI functions sees: the vendor
/// and device ID of the generic PCIe host bridge QEMU's `gpex` uses (1b36:0008; Linux binds
/// no driver to it), class 06/00/00 (host bridge), header type 0, no BARs, no
/// capabilities, no interrupt. Every write to it is dropped.
pub const HOST_BRIDGE_ID: u32 = 0x0008_1b36;
pub const HOST_BRIDGE_CLASS: u32 = 0x0600_0000;

/// A dword of the virtual host bridge's configuration space (extended space included:
/// zeros, the "no capability" header at 0x100, PCIe 4.0 §7.6.3).
pub fn host_bridge_read(dword: u16) -> u32 {
    match dword {
        0x00 => HOST_BRIDGE_ID,
        // Revision 0; class code in bits 31:8.
        0x08 => HOST_BRIDGE_CLASS,
        // Command, status, cache line, latency, header type 0, BIST: all zero; subsystem
        // IDs zero; no capabilities (status bit 4 clear).
        _ => 0,
    }
}

/// The part of a dword an access of `size` bytes at `offset` reads, in its low bits.
pub fn extract(dword_value: u32, offset: u16, size: u8) -> u32 {
    let shifted = dword_value >> ((offset & 3) * 8);
    match size {
        1 => shifted & 0xff,
        2 => shifted & 0xffff,
        _ => shifted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_status() {
        // A driver enabling memory decode and bus mastering: passes, nothing dropped.
        let write = filter_write(COMMAND, 2, 0x0006);
        assert_eq!(write.pass, COMMAND_GUEST_BITS);
        assert!(!write.dropped);
        // The status half is not written: its W1C bits are neither passed nor kept.
        assert_eq!(write.keep & STATUS_WRITE_ONE_TO_CLEAR, 0);
        // Read-only status bits are written back as read (no effect).
        assert_eq!(write.merge(0xffff_0000, 0x0006), 0x06ff_0006);
        // Bits the guest may not touch keep their hardware value (MWI, bit 4).
        assert_eq!(write.merge(0x0000_0010, 0x0006), 0x0016);
        // Memory Write and Invalidate (bit 4) and Fast Back-to-Back (bit 9): dropped.
        let write = filter_write(COMMAND, 2, 0x0216);
        assert!(write.dropped);
        assert_eq!(write.merge(0, 0x0216), 0x0006);
        // Clearing Received Master Abort (status bit 13) by a word write at 0x06.
        let write = filter_write(0x06, 2, 0x2000);
        assert!(!write.dropped);
        // Detected Parity Error (bit 31), also set, is not written back as 1.
        assert_eq!(write.merge(0xa010_0007, 0x2000 << 16), 0x2010_0007);
        // A dword write of command and status: status capability bit (4, read-only) set.
        let write = filter_write(COMMAND, 4, 0x0010_0004);
        assert!(write.dropped);
        assert_eq!(write.merge(0, 0x0010_0004), 0x0000_0004);
    }

    #[test]
    fn cache_line_latency_bist() {
        let write = filter_write(CACHE_LINE, 1, 0x10);
        assert!(!write.dropped);
        assert_eq!(write.merge(0x0000_4000, 0x10), 0x0000_4010);
        // A dword write: header type kept, BIST written as 0 (never started).
        let write = filter_write(CACHE_LINE, 4, 0x0000_2010);
        assert!(!write.dropped);
        assert_eq!(write.merge(0x4080_0000, 0x2010), 0x0080_2010);
        // BIST start (bit 6 of 0x0F): dropped.
        let write = filter_write(0x0f, 1, 0x40);
        assert!(write.dropped);
        assert_eq!(write.pass, 0);
        // Header type: read-only.
        assert!(filter_write(0x0e, 1, 0x80).dropped);
    }

    #[test]
    fn read_only_registers_and_rom() {
        for (offset, size) in [
            (0x00, 4),
            (0x02, 2),
            (0x08, 4),
            (0x2c, 4),
            (0x30, 4),
            (0x34, 1),
        ] {
            let write = filter_write(offset, size, 0xffff_ffff);
            assert_eq!(write.pass, 0, "{offset:#x}");
            assert!(write.dropped, "{offset:#x}");
        }
    }

    #[test]
    fn interrupt_line_is_a_shadow() {
        let write = filter_write(INTERRUPT_LINE, 1, 11);
        assert_eq!(write.interrupt_line, Some(11));
        assert_eq!(write.pass, 0);
        assert!(!write.dropped);
        // The pin (0x3D) is read-only.
        let write = filter_write(0x3d, 1, 1);
        assert!(write.dropped);
        assert_eq!(write.interrupt_line, None);
        assert_eq!(interrupt_dword(0x0000_010a, 5, true), 0x0000_0105);
        assert_eq!(interrupt_dword(0x1234_010a, 5, false), 0x1234_0005);
    }

    #[test]
    fn overlays_and_host_bridge() {
        assert_eq!(read_overlay(CACHE_LINE, 0x0080_0010), 0x0000_0010);
        assert_eq!(read_overlay(EXPANSION_ROM, 0xfeb0_0001), 0);
        assert_eq!(read_overlay(0x00, 0x11e8_1234), 0x11e8_1234);
        assert_eq!(host_bridge_read(0x00), 0x0008_1b36);
        assert_eq!(host_bridge_read(0x08) >> 8, 0x06_00_00);
        assert_eq!(host_bridge_read(0x0c), 0);
        assert_eq!(host_bridge_read(0x34), 0);
        assert_eq!(host_bridge_read(0x100), 0);
        assert_eq!(extract(0x11e8_1234, 2, 2), 0x11e8);
        assert_eq!(extract(0x11e8_1234, 1, 1), 0x12);
    }

    proptest::proptest! {
        /// Whatever the guest writes anywhere in the header (BARs aside), only permitted
        /// bits change in the hardware dword, BIST and the read-only registers never.
        #[test]
        fn only_permitted_bits_change(offset in 0u16..0x40, size_index in 0usize..3, value: u32, current: u32) {
            let size = [1u8, 2, 4][size_index];
            let offset = offset & !(u16::from(size) - 1);
            proptest::prop_assume!(!(BAR0..BAR_END).contains(&(offset & !3)));
            let write = filter_write(offset, size, value);
            let shifted = (value << ((offset & 3) * 8)) & byte_lanes(offset, size);
            let merged = write.merge(current, shifted);
            let (read_write, write_one_to_clear, _) = writable(offset & !3);
            if write.pass != 0 {
                // Bits outside the permitted set are the current value, except W1C bits,
                // which are written as 0 (no effect) unless the guest set them.
                let fixed = !(read_write | write_one_to_clear) & !bist(offset & !3);
                proptest::prop_assert_eq!(merged & fixed, current & fixed);
                proptest::prop_assert_eq!(merged & bist(offset & !3), 0);
                proptest::prop_assert_eq!(merged & write_one_to_clear, shifted & write_one_to_clear);
            }
            if write.pass == 0 && write.interrupt_line.is_none() && shifted != 0 {
                proptest::prop_assert!(write.dropped);
            }
        }
    }
}
