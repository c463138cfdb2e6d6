//! The I/O-port intercept bitmap: which port accesses of a partition exit to the hypervisor.
//!
//! Both vendors use one bit per port, bit `n % 8` of byte `n / 8` for port `n`, set =
//! intercept:
//! * AMD's I/O permissions map (IOPM, AMD APM vol 2 §15.10.1) is 12 KiB; the first 8 KiB are
//!   this bitmap and the last 4 KiB only matter for multi-byte accesses that run past port
//!   0xFFFF. The hypervisor sets those to all ones itself.
//! * Intel's I/O bitmaps A (ports 0–0x7FFF) and B (0x8000–0xFFFF) are two 4 KiB pages with the
//!   same layout (Intel SDM vol 3 §26.6.4), i.e. the two halves of this bitmap.
//!
//! An access exits if the bit of any byte it touches is set (APM vol 2 §15.10.1; SDM vol 3
//! §27.1.3), which matches [`port_owned`] requiring every byte to be owned.

use tessera_abi::table::Range;

/// Ports in the x86 I/O space.
pub const PORT_COUNT: u64 = 0x1_0000;
/// Bytes of the bitmap: one bit per port.
pub const BITMAP_BYTES: usize = (PORT_COUNT / 8) as usize;

/// Fills `bitmap` so that every port is intercepted except those in `owned`. Parts of ranges
/// beyond port 0xFFFF are ignored (the I/O space ends there).
pub fn build_io_bitmap(owned: &[Range], bitmap: &mut [u8; BITMAP_BYTES]) {
    bitmap.fill(0xff);
    set_ports(owned, true, bitmap);
}

/// Makes the ports of `ranges` pass through (`pass`) or exit (`!pass`) and leaves every
/// other bit as it is: moving port ranges from one partition to another at run time (a
/// hot-standby takeover) changes only their bits. Parts beyond port 0xFFFF are ignored.
pub fn set_ports(ranges: &[Range], pass: bool, bitmap: &mut [u8; BITMAP_BYTES]) {
    for range in ranges {
        let start = range.base.min(PORT_COUNT);
        let end = range.base.saturating_add(range.size).min(PORT_COUNT);
        for port in start..end {
            let bit = 1 << (port % 8);
            let byte = &mut bitmap[(port / 8) as usize];
            if pass {
                *byte &= !bit;
            } else {
                *byte |= bit;
            }
        }
    }
}

/// Whether an access of `width` bytes (1, 2 or 4) at `port` touches only owned ports. Other
/// widths, and accesses running past port 0xFFFF, are never owned (fail closed).
pub fn port_owned(owned: &[Range], port: u16, width: u8) -> bool {
    if !matches!(width, 1 | 2 | 4) {
        return false;
    }
    (0..u64::from(width)).all(|byte| {
        let address = u64::from(port) + byte;
        address < PORT_COUNT && owned.iter().any(|range| range.contains(address))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intercepted(bitmap: &[u8; BITMAP_BYTES], port: u64) -> bool {
        bitmap[(port / 8) as usize] & (1 << (port % 8)) != 0
    }

    #[test]
    fn moving_ranges_equals_building_from_the_new_sets() {
        let serial = Range {
            base: 0x3f8,
            size: 8,
        };
        let other = Range {
            base: 0x2f8,
            size: 8,
        };
        // The primary owns `serial`, the standby nothing; after the move the other way round.
        let mut primary = [0u8; BITMAP_BYTES];
        build_io_bitmap(&[serial, other], &mut primary);
        let mut standby = [0u8; BITMAP_BYTES];
        build_io_bitmap(&[], &mut standby);
        set_ports(&[serial], false, &mut primary);
        set_ports(&[serial], true, &mut standby);
        let mut expected_primary = [0u8; BITMAP_BYTES];
        build_io_bitmap(&[other], &mut expected_primary);
        let mut expected_standby = [0u8; BITMAP_BYTES];
        build_io_bitmap(&[serial], &mut expected_standby);
        assert!(primary == expected_primary);
        assert!(standby == expected_standby);
    }

    #[test]
    fn nothing_owned_intercepts_everything() {
        let mut bitmap = [0u8; BITMAP_BYTES];
        build_io_bitmap(&[], &mut bitmap);
        assert!(bitmap.iter().all(|&byte| byte == 0xff));
    }

    #[test]
    fn owned_ranges_clear_exactly_their_bits() {
        // COM1 (8 ports, byte-aligned), a misaligned odd range, a single port, the last port.
        let owned = [
            Range::new(0x3f8, 8),
            Range::new(0x61, 3),
            Range::new(0x80, 1),
            Range::new(0xffff, 1),
        ];
        let mut bitmap = [0u8; BITMAP_BYTES];
        build_io_bitmap(&owned, &mut bitmap);
        for port in 0..PORT_COUNT {
            let expected = !owned.iter().any(|range| range.contains(port));
            assert_eq!(intercepted(&bitmap, port), expected, "port {port:#x}");
        }
        assert_eq!(bitmap[0x3f8 / 8], 0x00);
        assert_eq!(bitmap[0x60 / 8], 0b1111_0001);
        assert_eq!(bitmap[BITMAP_BYTES - 1], 0x7f);
    }

    #[test]
    fn previous_contents_are_overwritten() {
        let mut bitmap = [0u8; BITMAP_BYTES];
        build_io_bitmap(&[Range::new(0x70, 2)], &mut bitmap);
        assert!(intercepted(&bitmap, 0x0));
        assert!(!intercepted(&bitmap, 0x70));
        assert!(intercepted(&bitmap, 0x72));
    }

    #[test]
    fn ranges_beyond_the_io_space_are_clamped() {
        let mut bitmap = [0u8; BITMAP_BYTES];
        build_io_bitmap(
            &[
                Range::new(0xfff0, 0x100),
                Range::new(0x2_0000, 0x10),
                Range::new(u64::MAX, 2),
                Range::new(0x10, 0),
            ],
            &mut bitmap,
        );
        for port in 0..PORT_COUNT {
            assert_eq!(intercepted(&bitmap, port), port < 0xfff0, "port {port:#x}");
        }
    }

    #[test]
    fn port_ownership_needs_every_byte() {
        let owned = [
            Range::new(0x3f8, 8),
            Range::new(0xcf8, 4),
            Range::new(0xcfc, 4),
        ];
        assert!(port_owned(&owned, 0x3f8, 1));
        assert!(port_owned(&owned, 0x3ff, 1));
        assert!(port_owned(&owned, 0x3fc, 4));
        assert!(!port_owned(&owned, 0x3fd, 4)); // runs into 0x400
        assert!(!port_owned(&owned, 0x3f7, 2)); // starts at 0x3f7
        assert!(!port_owned(&owned, 0x400, 1));
        // Adjacent ranges together cover a straddling access.
        assert!(port_owned(&owned, 0xcfa, 4));
        // Widths other than 1, 2 and 4 do not exist.
        assert!(!port_owned(&owned, 0x3f8, 0));
        assert!(!port_owned(&owned, 0x3f8, 3));
        assert!(!port_owned(&owned, 0x3f8, 8));
        assert!(!port_owned(&[], 0, 1));
    }

    #[test]
    fn accesses_past_the_last_port_are_not_owned() {
        let owned = [Range::new(0xfff0, 0x20)];
        assert!(port_owned(&owned, 0xffff, 1));
        assert!(port_owned(&owned, 0xfffc, 4));
        assert!(!port_owned(&owned, 0xffff, 2));
        assert!(!port_owned(&owned, 0xfffe, 4));
    }
}
