//! Configuration-space addresses: which function and register an access to the virtual
//! ECAM window (PCIe Base 4.0 §7.2.2) or to 0xCF8/0xCFC (PCI Local Bus 3.0 §3.2.2.3.2)
//! names.

use tessera_abi::table::Bdf;

/// Bytes of configuration space per function through ECAM (extended space included).
pub const ECAM_FUNCTION_BYTES: u64 = 4096;
/// Bytes of configuration space per function through mechanism #1.
pub const CONF1_FUNCTION_BYTES: u16 = 256;
/// The configuration address port and the first data port.
pub const CONF1_ADDRESS_PORT: u16 = 0xcf8;
pub const CONF1_DATA_PORT: u16 = 0xcfc;

/// One configuration-space access: the function and the byte offset of its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigAccess {
    pub function: Bdf,
    /// Byte offset inside the function's configuration space.
    pub offset: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
}

/// Why an access is not a configuration access the policy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Outside the window, or beyond the buses it covers.
    OutsideWindow,
    /// Not 1, 2 or 4 bytes, or crossing a naturally aligned boundary of its size.
    Misaligned,
    /// Mechanism #1 with the enable bit (bit 31 of 0xCF8) clear: the data port then is
    /// not a configuration access.
    Disabled,
}

fn check_size(offset: u64, size: u8) -> Result<(), DecodeError> {
    if !matches!(size, 1 | 2 | 4) || !offset.is_multiple_of(u64::from(size)) {
        return Err(DecodeError::Misaligned);
    }
    Ok(())
}

/// Decodes an access at guest-physical `address` of a virtual ECAM window starting at
/// `base` and covering `buses` buses: bus in address bits 27:20, device 19:15, function
/// 14:12, register 11:0 (PCIe Base 4.0 §7.2.2, Table 7-1).
pub fn decode_ecam(
    base: u64,
    buses: u16,
    address: u64,
    size: u8,
) -> Result<ConfigAccess, DecodeError> {
    let relative = address
        .checked_sub(base)
        .ok_or(DecodeError::OutsideWindow)?;
    if relative >= u64::from(buses) * 256 * ECAM_FUNCTION_BYTES {
        return Err(DecodeError::OutsideWindow);
    }
    check_size(relative, size)?;
    Ok(ConfigAccess {
        function: Bdf((relative >> 12) as u16),
        offset: (relative & 0xfff) as u16,
        size,
    })
}

/// Decodes an access to data port `port` (0xCFC–0xCFF) with `address_register`, the value
/// last written to 0xCF8: enable in bit 31, bus 23:16, device 15:11, function 10:8,
/// register 7:2; the data port's low two bits select the byte (PCI Local Bus 3.0
/// §3.2.2.3.2, Figure 3-2).
pub fn decode_conf1(
    address_register: u32,
    port: u16,
    size: u8,
) -> Result<ConfigAccess, DecodeError> {
    if !(CONF1_DATA_PORT..CONF1_DATA_PORT + 4).contains(&port) {
        return Err(DecodeError::OutsideWindow);
    }
    if address_register & (1 << 31) == 0 {
        return Err(DecodeError::Disabled);
    }
    let byte = port - CONF1_DATA_PORT;
    check_size(u64::from(byte), size)?;
    Ok(ConfigAccess {
        function: Bdf((address_register >> 8) as u16),
        offset: (address_register & 0xfc) as u16 + byte,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xb000_0000;

    #[test]
    fn ecam_cases() {
        let cases: &[(u64, u8, Result<ConfigAccess, DecodeError>)] = &[
            (
                BASE,
                4,
                Ok(ConfigAccess {
                    function: Bdf::new(0, 0, 0),
                    offset: 0,
                    size: 4,
                }),
            ),
            // 00:03.0 register 0x10 (BAR0).
            (
                BASE + (3 << 15) + 0x10,
                4,
                Ok(ConfigAccess {
                    function: Bdf::new(0, 3, 0),
                    offset: 0x10,
                    size: 4,
                }),
            ),
            // 00:1f.7, the last byte of extended space.
            (
                BASE + (0x1f << 15) + (7 << 12) + 0xfff,
                1,
                Ok(ConfigAccess {
                    function: Bdf::new(0, 0x1f, 7),
                    offset: 0xfff,
                    size: 1,
                }),
            ),
            (
                BASE + 0x100,
                2,
                Ok(ConfigAccess {
                    function: Bdf::new(0, 0, 0),
                    offset: 0x100,
                    size: 2,
                }),
            ),
            (BASE - 1, 1, Err(DecodeError::OutsideWindow)),
            // Bus 1 is beyond a one-bus window.
            (BASE + (1 << 20), 4, Err(DecodeError::OutsideWindow)),
            (BASE + 2, 4, Err(DecodeError::Misaligned)),
            (BASE + 1, 2, Err(DecodeError::Misaligned)),
            (BASE, 8, Err(DecodeError::Misaligned)),
            (BASE, 3, Err(DecodeError::Misaligned)),
        ];
        for &(address, size, expected) in cases {
            assert_eq!(
                decode_ecam(BASE, 1, address, size),
                expected,
                "{address:#x}/{size}"
            );
        }
        assert_eq!(
            decode_ecam(BASE, 2, BASE + (1 << 20) + (2 << 15), 4).map(|access| access.function),
            Ok(Bdf::new(1, 2, 0))
        );
    }

    #[test]
    fn conf1_cases() {
        let enable = 1u32 << 31;
        let address = |bus: u32, device: u32, function: u32, register: u32| {
            enable | bus << 16 | device << 11 | function << 8 | register
        };
        let cases: &[(u32, u16, u8, Result<ConfigAccess, DecodeError>)] = &[
            (
                address(0, 3, 0, 0x10),
                0xcfc,
                4,
                Ok(ConfigAccess {
                    function: Bdf::new(0, 3, 0),
                    offset: 0x10,
                    size: 4,
                }),
            ),
            (
                address(0, 3, 0, 0x04),
                0xcfe,
                2,
                Ok(ConfigAccess {
                    function: Bdf::new(0, 3, 0),
                    offset: 0x06,
                    size: 2,
                }),
            ),
            (
                address(2, 0x1f, 7, 0x3c),
                0xcfd,
                1,
                Ok(ConfigAccess {
                    function: Bdf::new(2, 0x1f, 7),
                    offset: 0x3d,
                    size: 1,
                }),
            ),
            // Bits 1:0 of 0xCF8 are not part of the register number.
            (
                address(0, 1, 0, 0x13),
                0xcfc,
                4,
                Ok(ConfigAccess {
                    function: Bdf::new(0, 1, 0),
                    offset: 0x10,
                    size: 4,
                }),
            ),
            (
                address(0, 3, 0, 0x10) & !enable,
                0xcfc,
                4,
                Err(DecodeError::Disabled),
            ),
            (
                address(0, 3, 0, 0x10),
                0xcfd,
                2,
                Err(DecodeError::Misaligned),
            ),
            (
                address(0, 3, 0, 0x10),
                0xcfe,
                4,
                Err(DecodeError::Misaligned),
            ),
            (
                address(0, 3, 0, 0x10),
                0xcf8,
                4,
                Err(DecodeError::OutsideWindow),
            ),
            (
                address(0, 3, 0, 0x10),
                0xd00,
                1,
                Err(DecodeError::OutsideWindow),
            ),
        ];
        for &(register, port, size, expected) in cases {
            assert_eq!(
                decode_conf1(register, port, size),
                expected,
                "{register:#x} {port:#x}/{size}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn ecam_decoding_inverts_the_layout(bus in 0u8..4, device in 0u8..32, function in 0u8..8, dword in 0u16..1024) {
            let offset = dword * 4;
            let address = BASE + (u64::from(bus) << 20 | u64::from(device) << 15 | u64::from(function) << 12) + u64::from(offset);
            let access = decode_ecam(BASE, 4, address, 4).unwrap();
            proptest::prop_assert_eq!(access.function, Bdf::new(bus, device, function));
            proptest::prop_assert_eq!(access.offset, offset);
        }
    }
}
