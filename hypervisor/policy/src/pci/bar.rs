//! BAR sizing (PCI Local Bus 3.0 §6.2.5.1): what a guest reads from a virtual BAR after
//! writing it, given the hardware BAR's type and size read at boot.

/// A BAR as discovered at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// A 32-bit memory BAR; `prefetchable` is bit 3.
    Memory32 { prefetchable: bool },
    /// The low half of a 64-bit memory BAR (type 10b in bits 2:1); the next BAR is its
    /// high half.
    Memory64Low { prefetchable: bool },
    /// The high half of a 64-bit memory BAR.
    Memory64High,
    /// An I/O BAR (bit 0 set).
    Io,
}

/// One virtual BAR: the hardware's type and size, the value the guest last wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualBar {
    pub kind: BarKind,
    /// Size of the whole BAR in bytes, a power of two (for a 64-bit pair, the pair's size,
    /// held by both halves).
    pub size: u64,
    /// The address bits the guest last wrote (type bits excluded).
    written: u32,
}

impl VirtualBar {
    /// A BAR the guest has not written yet, showing `address` (the hardware address).
    /// `None` when `size` is not a power of two or too small for its kind (memory BARs are
    /// at least 16 bytes, I/O BARs at least 4, §6.2.5.1).
    pub fn new(kind: BarKind, size: u64, address: u64) -> Option<Self> {
        let minimum = if kind == BarKind::Io { 4 } else { 16 };
        if !size.is_power_of_two() || size < minimum {
            return None;
        }
        let mut bar = Self {
            kind,
            size,
            written: 0,
        };
        bar.write(match kind {
            BarKind::Memory64High => (address >> 32) as u32,
            _ => address as u32,
        });
        Some(bar)
    }

    /// The read-only low bits: memory-space indicator, type and prefetchable, or the I/O
    /// indicator.
    fn type_bits(self) -> u32 {
        match self.kind {
            BarKind::Memory32 { prefetchable } => u32::from(prefetchable) << 3,
            BarKind::Memory64Low { prefetchable } => (u32::from(prefetchable) << 3) | 0b100,
            BarKind::Memory64High => 0,
            BarKind::Io => 1,
        }
    }

    /// The writable address bits of this register: the bits above the size.
    fn address_mask(self) -> u32 {
        let mask = !(self.size - 1);
        match self.kind {
            BarKind::Memory64High => (mask >> 32) as u32,
            BarKind::Io => (mask as u32) & !0b11,
            _ => (mask as u32) & !0b1111,
        }
    }

    /// A guest write: only the address bits above the size stick, so writing all-ones
    /// makes the next read return the size mask (§6.2.5.1).
    pub fn write(&mut self, value: u32) {
        self.written = value & self.address_mask();
    }

    /// What the guest reads.
    pub fn read(self) -> u32 {
        self.written | self.type_bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizing_cases() {
        // (kind, size, read after writing all-ones)
        let cases: &[(BarKind, u64, u32)] = &[
            (
                BarKind::Memory32 {
                    prefetchable: false,
                },
                0x10_0000,
                0xfff0_0000,
            ),
            (
                BarKind::Memory32 { prefetchable: true },
                0x1000,
                0xffff_f008,
            ),
            (
                BarKind::Memory32 {
                    prefetchable: false,
                },
                16,
                0xffff_fff0,
            ),
            (
                BarKind::Memory64Low { prefetchable: true },
                0x4000,
                0xffff_c00c,
            ),
            (
                BarKind::Memory64Low {
                    prefetchable: false,
                },
                1 << 33,
                0x0000_0004,
            ),
            (BarKind::Memory64High, 1 << 33, 0xffff_fffe),
            (BarKind::Memory64High, 0x4000, 0xffff_ffff),
            (BarKind::Io, 0x20, 0xffff_ffe1),
            (BarKind::Io, 4, 0xffff_fffd),
        ];
        for &(kind, size, expected) in cases {
            let mut bar = VirtualBar::new(kind, size, 0).unwrap();
            bar.write(u32::MAX);
            assert_eq!(bar.read(), expected, "{kind:?} {size:#x}");
        }
    }

    #[test]
    fn an_address_reads_back_with_the_type_bits() {
        let mut bar = VirtualBar::new(
            BarKind::Memory32 {
                prefetchable: false,
            },
            0x10_0000,
            0xfea0_0000,
        )
        .unwrap();
        assert_eq!(bar.read(), 0xfea0_0000);
        bar.write(u32::MAX);
        bar.write(0xfea0_0000);
        assert_eq!(bar.read(), 0xfea0_0000);
        // Bits below the size are not writable.
        bar.write(0xfea1_2345);
        assert_eq!(bar.read(), 0xfea0_0000);
        let high = VirtualBar::new(BarKind::Memory64High, 0x4000, 0x1_2345_0000).unwrap();
        assert_eq!(high.read(), 1);
    }

    #[test]
    fn impossible_sizes_are_refused() {
        assert!(VirtualBar::new(BarKind::Io, 2, 0).is_none());
        assert!(VirtualBar::new(
            BarKind::Memory32 {
                prefetchable: false
            },
            8,
            0
        )
        .is_none());
        assert!(VirtualBar::new(
            BarKind::Memory32 {
                prefetchable: false
            },
            0x3000,
            0
        )
        .is_none());
        assert!(VirtualBar::new(
            BarKind::Memory32 {
                prefetchable: false
            },
            0,
            0
        )
        .is_none());
    }

    proptest::proptest! {
        /// Whatever the guest writes, after an all-ones write the BAR reads the size mask:
        /// the address bits form a contiguous run of ones from the top down to the size,
        /// so size = 2^n and the type bits are unchanged.
        #[test]
        fn sizing_always_returns_a_power_of_two_mask(shift in 4u32..32, prefetchable: bool, writes in proptest::collection::vec(proptest::num::u32::ANY, 0..8)) {
            let size = 1u64 << shift;
            let mut bar = VirtualBar::new(BarKind::Memory32 { prefetchable }, size, 0).unwrap();
            for value in writes {
                bar.write(value);
                proptest::prop_assert_eq!(bar.read() & 0xf, u32::from(prefetchable) << 3);
            }
            bar.write(u32::MAX);
            let address_bits = bar.read() & !0xf;
            let decoded = (!address_bits).wrapping_add(1) as u64 & 0xffff_ffff;
            proptest::prop_assert!(decoded.is_power_of_two());
            proptest::prop_assert_eq!(decoded, size);
        }
    }
}
