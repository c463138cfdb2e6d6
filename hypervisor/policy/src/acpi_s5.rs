//! Finding the `\_S5_` (soft-off) sleep type in a DSDT, so the hypervisor can power the
//! machine off: writing SLP_TYPa with SLP_EN to PM1a_CNT enters S5 (ACPI spec §7.4.2, §4.8.3.2).
//!
//! Firmware declares the object as `Name (_S5, Package () { SLP_TYPa, SLP_TYPb, … })`, which
//! compiles to NameOp, the name, PackageOp, PkgLength, NumElements and the elements
//! (ACPI spec §20.2.5.1, §20.2.5.4). Rather than interpreting AML, this scans the byte stream
//! for that exact shape, like most small kernels do; a DSDT that computes `_S5` in a method
//! is not supported and yields `None`.

const NAME_OP: u8 = 0x08;
const ROOT_PREFIX: u8 = b'\\';
const PACKAGE_OP: u8 = 0x12;
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const BYTE_PREFIX: u8 = 0x0a;
const S5_NAME: &[u8; 4] = b"_S5_";

/// Decodes a PkgLength (ACPI spec §20.2.4): bits 7:6 of the lead byte give the number of
/// following bytes (0–3). With none, bits 5:0 are the length; otherwise bits 3:0 are its low
/// nibble and each following byte adds 8 more bits. Returns (length, bytes used).
fn package_length(bytes: &[u8]) -> Option<(usize, usize)> {
    let lead = *bytes.first()?;
    let follow = usize::from(lead >> 6);
    if follow == 0 {
        return Some((usize::from(lead & 0x3f), 1));
    }
    let mut length = usize::from(lead & 0x0f);
    for i in 0..follow {
        length |= usize::from(*bytes.get(1 + i)?) << (4 + 8 * i);
    }
    Some((length, 1 + follow))
}

/// Parses the package that follows an `_S5_` name at `rest` and returns SLP_TYPa.
fn parse_package(rest: &[u8]) -> Option<u8> {
    if *rest.first()? != PACKAGE_OP {
        return None;
    }
    let (length, length_bytes) = package_length(&rest[1..])?;
    let num_elements = *rest.get(1 + length_bytes)?;
    let element = rest.get(2 + length_bytes..)?;
    let (value, element_bytes) = match *element.first()? {
        ZERO_OP => (0, 1),
        ONE_OP => (1, 1),
        BYTE_PREFIX => (*element.get(1)?, 2),
        _ => return None,
    };
    // The package must be big enough to hold what was read: PkgLength counts itself,
    // NumElements and the elements.
    if num_elements == 0 || length < length_bytes + 1 + element_bytes {
        return None;
    }
    Some(value)
}

/// SLP_TYPa of the `\_S5_` package in an AML byte stream (a DSDT or SSDT without its 36-byte
/// header, though the header does no harm), or `None` when there is no such package in the
/// expected shape. The value is the raw element; PM1x_CNT.SLP_TYP holds its low 3 bits.
pub fn find_s5_sleep_type(dsdt_body: &[u8]) -> Option<u8> {
    let mut start = 0;
    while let Some(found) = dsdt_body
        .get(start..)?
        .windows(4)
        .position(|w| w == S5_NAME)
    {
        let at = start + found;
        // NameOp directly before the name, or before a root prefix before it.
        let named = match at {
            0 => false,
            1 => dsdt_body[0] == NAME_OP,
            _ => {
                dsdt_body[at - 1] == NAME_OP
                    || (dsdt_body[at - 1] == ROOT_PREFIX && dsdt_body[at - 2] == NAME_OP)
            }
        };
        if named {
            if let Some(value) = parse_package(&dsdt_body[at + 4..]) {
                return Some(value);
            }
        }
        start = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_style_package() {
        let aml = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(find_s5_sleep_type(&aml), Some(0));
    }

    #[test]
    fn byte_prefix_and_one_op() {
        let aml = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00,
        ];
        assert_eq!(find_s5_sleep_type(&aml), Some(5));
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x01, 0x01];
        assert_eq!(find_s5_sleep_type(&aml), Some(1));
    }

    #[test]
    fn root_prefix_and_surrounding_code() {
        let mut aml = std::vec![0x10, 0x4a, 0x05, b'\\', b'_', b'S', b'B', b'_'];
        aml.extend_from_slice(&[0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x0a, 0x04]);
        aml.extend_from_slice(&[0x0a, 0x07, 0x0a, 0x07, 0x00, 0x00, 0x14, 0x08]);
        assert_eq!(find_s5_sleep_type(&aml), Some(7));
    }

    #[test]
    fn multi_byte_package_length() {
        // Lead byte 0x40: one following byte; length = 0x0 | 0x01 << 4 = 16.
        let mut aml = std::vec![0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x01, 0x04, 0x0a, 0x03];
        aml.extend_from_slice(&[0x0a, 0x03, 0x00, 0x00]);
        assert_eq!(find_s5_sleep_type(&aml), Some(3));
        assert_eq!(package_length(&[0x06]), Some((6, 1)));
        assert_eq!(package_length(&[0x4f, 0xff]), Some((0xfff, 2)));
        assert_eq!(package_length(&[0x81, 0x02, 0x03]), Some((0x3021, 3)));
        assert_eq!(
            package_length(&[0xc2, 0x01, 0x02, 0x03]),
            Some((0x0030_2012, 4))
        );
        assert_eq!(package_length(&[0xc2, 0x01]), None);
        assert_eq!(package_length(&[]), None);
    }

    #[test]
    fn a_reference_to_s5_before_the_definition_is_skipped() {
        // A method body mentioning _S5_ (not after NameOp), then the real definition.
        let aml = [
            0x70, b'_', b'S', b'5', b'_', 0x60, // Store (_S5, Local0)
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x0a, 0x02, 0x0a, 0x02,
        ];
        assert_eq!(find_s5_sleep_type(&aml), Some(2));
        // A NameOp _S5_ that is not a package, followed by a valid one.
        let aml = [
            0x08, b'_', b'S', b'5', b'_', 0x0a, 0x09, //
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x01, 0x00, 0x00, 0x00,
        ];
        assert_eq!(find_s5_sleep_type(&aml), Some(1));
    }

    #[test]
    fn garbage_and_truncation() {
        assert_eq!(find_s5_sleep_type(&[]), None);
        assert_eq!(find_s5_sleep_type(b"_S5_"), None);
        assert_eq!(find_s5_sleep_type(b"random bytes without the name"), None);
        let full = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x0a, 0x05];
        for cut in 0..full.len() {
            assert_eq!(find_s5_sleep_type(&full[..cut]), None, "cut at {cut}");
        }
        // Wrong element opcode (WordPrefix), zero elements, a package too short.
        assert_eq!(
            find_s5_sleep_type(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x0b, 0x05, 0x00]),
            None
        );
        assert_eq!(
            find_s5_sleep_type(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x00, 0x00]),
            None
        );
        assert_eq!(
            find_s5_sleep_type(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x02, 0x04, 0x0a, 0x05]),
            None
        );
        // No NameOp.
        assert_eq!(
            find_s5_sleep_type(&[0x00, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x00]),
            None
        );
        // Name at offset 1 with NameOp at 0 is fine.
        assert_eq!(
            find_s5_sleep_type(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x03, 0x01, 0x00]),
            Some(0)
        );
    }
}
