//! Hand-encoding of the few AML constructs a partition's DSDT needs (ACPI 6.5 §20.2): names,
//! integers, packages, buffers, devices, scopes, and the small resource descriptors of a
//! `ResourceTemplate` (§6.4.2). Each function returns the encoded bytes of one term.

/// `NameOp` (§20.2.5.1).
pub const NAME_OP: u8 = 0x08;
/// `ScopeOp`.
pub const SCOPE_OP: u8 = 0x10;
/// `BufferOp` (§20.2.5.4).
pub const BUFFER_OP: u8 = 0x11;
/// `PackageOp`.
pub const PACKAGE_OP: u8 = 0x12;
/// `ExtOpPrefix`, followed by [`DEVICE_OP`] for a device.
pub const EXTENDED_OP_PREFIX: u8 = 0x5b;
/// `DeviceOp` (after [`EXTENDED_OP_PREFIX`]).
pub const DEVICE_OP: u8 = 0x82;
/// `ZeroOp`, `OneOp`, `OnesOp`.
pub const ZERO_OP: u8 = 0x00;
pub const ONE_OP: u8 = 0x01;
/// Integer prefixes (§20.2.3).
pub const BYTE_PREFIX: u8 = 0x0a;
pub const WORD_PREFIX: u8 = 0x0b;
pub const DWORD_PREFIX: u8 = 0x0c;
pub const QWORD_PREFIX: u8 = 0x0e;
/// `RootChar`: a name string that starts at the namespace root.
pub const ROOT_CHAR: u8 = b'\\';

/// Small resource descriptor tags (§6.4.2): I/O port (type 8, 7 bytes), IRQ without flags
/// (type 4, 2 bytes), end tag (type 0xf, 1 byte).
pub const IO_PORT_TAG: u8 = 0x47;
pub const IRQ_NO_FLAGS_TAG: u8 = 0x22;
pub const END_TAG: u8 = 0x79;
/// Large resource descriptor: Extended Interrupt (§6.4.3.6), for pins the 16-bit IRQ mask
/// of the small descriptor cannot name.
pub const EXTENDED_INTERRUPT_TAG: u8 = 0x89;
/// Large resource descriptors (§6.4.3): 32-bit Fixed Memory Range (§6.4.3.4), DWord Address
/// Space (§6.4.3.5.2), Word Address Space (§6.4.3.5.3) and QWord Address Space (§6.4.3.5.1).
pub const MEMORY32_FIXED_TAG: u8 = 0x86;
pub const DWORD_ADDRESS_SPACE_TAG: u8 = 0x87;
pub const WORD_ADDRESS_SPACE_TAG: u8 = 0x88;
pub const QWORD_ADDRESS_SPACE_TAG: u8 = 0x8a;
/// Address space descriptor Resource Type (§6.4.3.5, Table 6.43): memory, I/O, bus number.
pub const RESOURCE_TYPE_MEMORY: u8 = 0;
pub const RESOURCE_TYPE_IO: u8 = 1;
pub const RESOURCE_TYPE_BUS_NUMBER: u8 = 2;
/// Address space descriptor General Flags (Table 6.43): bit 3 _MAF (maximum address fixed),
/// bit 2 _MIF (minimum address fixed), bit 1 _DEC clear (positive decode), bit 0 clear
/// (the device produces the range for its children: a bridge window, `ResourceProducer`).
pub const PRODUCER_FIXED_RANGE: u8 = 0b1100;
/// Memory Type Specific Flags (Table 6.46): bit 0 _RW read-write, bits 2:1 _MEM 0
/// (non-cacheable), bits 4:3 _MTP 0 (AddressRangeMemory), bit 5 _TTP 0 (TypeStatic).
pub const MEMORY_READ_WRITE_NON_CACHEABLE: u8 = 0b0000_0001;
/// I/O Type Specific Flags (Table 6.47): bits 1:0 _RNG 3 (ISA and non-ISA ranges,
/// `EntireRange`), _TTP and _TRS 0.
pub const IO_ENTIRE_RANGE: u8 = 0b0000_0011;

/// The largest length a 4-byte PkgLength can express.
pub const PACKAGE_LENGTH_MAX: usize = (1 << 28) - 1;

/// A PkgLength (§20.2.4) for a term whose contents after the PkgLength are `content`
/// bytes: the encoded length counts the PkgLength itself. One byte holds up to 63; with
/// 1–3 following bytes, the lead byte's bits 7:6 give their count, its bits 3:0 the low
/// nibble and each following byte 8 more bits.
///
/// # Panics
/// If the length exceeds [`PACKAGE_LENGTH_MAX`] (the tables built here are a few hundred
/// bytes; this is a programming error, not an input error).
pub fn package_length(content: usize) -> Vec<u8> {
    if content < 63 {
        return vec![(content + 1) as u8];
    }
    for follow in 1..=3usize {
        let total = content + 1 + follow;
        if total < 1 << (4 + 8 * follow) {
            let mut bytes = vec![((follow as u8) << 6) | (total & 0x0f) as u8];
            for index in 0..follow {
                bytes.push((total >> (4 + 8 * index)) as u8);
            }
            return bytes;
        }
    }
    panic!("AML package of {content} bytes exceeds the PkgLength limit")
}

/// A 4-character name segment (`NameSeg`), padded with `_` as ASL does.
///
/// # Panics
/// If `name` is longer than 4 characters (names here are constants or generated).
pub fn name_segment(name: &str) -> [u8; 4] {
    assert!(name.len() <= 4, "AML name segment `{name}` is too long");
    let mut segment = [b'_'; 4];
    segment[..name.len()].copy_from_slice(name.as_bytes());
    segment
}

/// A term with opcode(s) `opcodes`, a PkgLength and `content`.
fn with_package_length(opcodes: &[u8], content: &[u8]) -> Vec<u8> {
    let mut bytes = opcodes.to_vec();
    bytes.extend(package_length(content.len()));
    bytes.extend_from_slice(content);
    bytes
}

/// An integer in its shortest encoding (`ZeroOp`, `OneOp` or a prefixed constant).
pub fn integer(value: u64) -> Vec<u8> {
    match value {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, value as u8],
        0x100..=0xffff => [&[WORD_PREFIX][..], &(value as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[DWORD_PREFIX][..], &(value as u32).to_le_bytes()].concat(),
        _ => [&[QWORD_PREFIX][..], &value.to_le_bytes()].concat(),
    }
}

/// A 32-bit constant with `DWordPrefix` whatever its value (how `EISAID` compiles).
pub fn dword(value: u32) -> Vec<u8> {
    [&[DWORD_PREFIX][..], &value.to_le_bytes()].concat()
}

/// `Name(name, object)`.
pub fn name(name: &str, object: &[u8]) -> Vec<u8> {
    let mut bytes = vec![NAME_OP];
    bytes.extend(name_segment(name));
    bytes.extend_from_slice(object);
    bytes
}

/// `Package(n) { elements }`.
///
/// # Panics
/// With more than 255 elements (`NumElements` is a byte).
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let count = u8::try_from(elements.len()).expect("an AML package holds at most 255 elements");
    let mut content = vec![count];
    for element in elements {
        content.extend_from_slice(element);
    }
    with_package_length(&[PACKAGE_OP], &content)
}

/// `Buffer() { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut content = integer(bytes.len() as u64);
    content.extend_from_slice(bytes);
    with_package_length(&[BUFFER_OP], &content)
}

/// `Device(name) { body }`.
pub fn device(name: &str, body: &[u8]) -> Vec<u8> {
    let mut content = name_segment(name).to_vec();
    content.extend_from_slice(body);
    with_package_length(&[EXTENDED_OP_PREFIX, DEVICE_OP], &content)
}

/// `Scope(\name) { body }`: a scope at the namespace root.
pub fn root_scope(name: &str, body: &[u8]) -> Vec<u8> {
    let mut content = vec![ROOT_CHAR];
    content.extend(name_segment(name));
    content.extend_from_slice(body);
    with_package_length(&[SCOPE_OP], &content)
}

/// The 32-bit compressed EISA ID of `"PNP0501"`-style text (what ASL's `EISAID()` makes):
/// three letters of 5 bits each (A = 1) and four hex digits, both 16-bit big-endian,
/// stored in that byte order.
///
/// # Panics
/// If `id` is not three upper-case letters and four hex digits (ids here are constants).
pub fn eisa_id(id: &str) -> u32 {
    let bytes = id.as_bytes();
    assert!(
        bytes.len() == 7
            && bytes[..3].iter().all(u8::is_ascii_uppercase)
            && bytes[3..].iter().all(u8::is_ascii_hexdigit),
        "`{id}` is not an EISA ID"
    );
    let letter = |index: usize| u16::from(bytes[index] - b'A' + 1);
    let vendor = (letter(0) << 10) | (letter(1) << 5) | letter(2);
    let product = u16::from_str_radix(&id[3..], 16).unwrap_or_default();
    // The DWORD whose bytes in memory are the vendor's big-endian, then the product's.
    u32::from(vendor.swap_bytes()) | (u32::from(product.swap_bytes()) << 16)
}

/// `IO(Decode16, base, base, 1, length)`: a fixed I/O range with 16-bit decoding.
pub fn io_port(base: u16, length: u8) -> [u8; 8] {
    let [low, high] = base.to_le_bytes();
    [IO_PORT_TAG, 0x01, low, high, low, high, 1, length]
}

/// `IRQNoFlags() { pin }` (pins 0–15: edge-triggered, active-high, exclusive), or for
/// pins above 15 the Extended Interrupt equivalent `Interrupt(ResourceConsumer, Edge,
/// ActiveHigh, Exclusive) { pin }`.
pub fn interrupt(pin: u8) -> Vec<u8> {
    if pin < 16 {
        let [low, high] = (1u16 << pin).to_le_bytes();
        vec![IRQ_NO_FLAGS_TAG, low, high]
    } else {
        // Length 6: flags (consumer | edge), one interrupt, its 32-bit number.
        let mut bytes = vec![EXTENDED_INTERRUPT_TAG, 6, 0, 0x03, 1];
        bytes.extend(u32::from(pin).to_le_bytes());
        bytes
    }
}

/// A Word Address Space descriptor (§6.4.3.5.3) of `resource_type` producing the fixed
/// range `minimum..=maximum`: 3 bytes of type and flags, then granularity, minimum,
/// maximum, translation offset (0) and length, 16 bits each.
fn word_address_space(resource_type: u8, type_flags: u8, minimum: u16, maximum: u16) -> Vec<u8> {
    let length = maximum.wrapping_sub(minimum).wrapping_add(1);
    let mut bytes = vec![WORD_ADDRESS_SPACE_TAG, 0x0d, 0x00];
    bytes.extend([resource_type, PRODUCER_FIXED_RANGE, type_flags]);
    for field in [0, minimum, maximum, 0, length] {
        bytes.extend(field.to_le_bytes());
    }
    bytes
}

/// `WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, first, last, 0,
/// last - first + 1)`: the bus numbers a host bridge decodes.
pub fn word_bus_number(first: u8, last: u8) -> Vec<u8> {
    word_address_space(
        RESOURCE_TYPE_BUS_NUMBER,
        0,
        u16::from(first),
        u16::from(last),
    )
}

/// `WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, base,
/// base + length - 1, 0, length)`: an I/O window of a bridge.
///
/// # Panics
/// If the range is empty or passes port 0xffff (the table validator keeps port ranges
/// inside the 64 KiB I/O space).
pub fn word_io(base: u16, length: u32) -> Vec<u8> {
    assert!(
        length > 0 && u32::from(base) + length <= 0x1_0000,
        "I/O window {base:#x}+{length:#x} is outside the I/O space"
    );
    let maximum = (u32::from(base) + length - 1) as u16;
    word_address_space(RESOURCE_TYPE_IO, IO_ENTIRE_RANGE, base, maximum)
}

/// A memory window of a bridge: `DWordMemory (ResourceProducer, PosDecode, MinFixed,
/// MaxFixed, NonCacheable, ReadWrite, 0, base, base + length - 1, 0, length)` when it lies
/// below 4 GiB, else the `QWordMemory` equivalent (§6.4.3.5.1).
///
/// # Panics
/// If `length` is 0 or the range wraps the 64-bit space.
pub fn memory_window(base: u64, length: u64) -> Vec<u8> {
    let maximum = length
        .checked_sub(1)
        .and_then(|last| base.checked_add(last))
        .expect("a memory window inside the 64-bit space");
    let head = [
        RESOURCE_TYPE_MEMORY,
        PRODUCER_FIXED_RANGE,
        MEMORY_READ_WRITE_NON_CACHEABLE,
    ];
    match (
        u32::try_from(base),
        u32::try_from(maximum),
        u32::try_from(length),
    ) {
        (Ok(base), Ok(maximum), Ok(length)) => {
            let mut bytes = vec![DWORD_ADDRESS_SPACE_TAG, 0x17, 0x00];
            bytes.extend(head);
            for field in [0, base, maximum, 0, length] {
                bytes.extend(field.to_le_bytes());
            }
            bytes
        }
        _ => {
            let mut bytes = vec![QWORD_ADDRESS_SPACE_TAG, 0x2b, 0x00];
            bytes.extend(head);
            for field in [0, base, maximum, 0, length] {
                bytes.extend(field.to_le_bytes());
            }
            bytes
        }
    }
}

/// `Memory32Fixed (ReadWrite, base, length)` (§6.4.3.4): a range a device consumes, such
/// as the ECAM window a PNP0C02 motherboard device reserves.
pub fn memory32_fixed(base: u32, length: u32) -> Vec<u8> {
    let mut bytes = vec![MEMORY32_FIXED_TAG, 0x09, 0x00, 0x01];
    bytes.extend(base.to_le_bytes());
    bytes.extend(length.to_le_bytes());
    bytes
}

/// The end tag of a resource template with checksum 0 ("the template is not checksummed").
pub fn end_tag() -> [u8; 2] {
    [END_TAG, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lengths_take_one_to_four_bytes() {
        assert_eq!(package_length(0), [0x01]);
        assert_eq!(package_length(62), [0x3f]);
        // 63 content bytes + 2 length bytes = 65 = 0x41: lead 0x41 (one follow, nibble 1),
        // then 0x41 >> 4 = 4.
        assert_eq!(package_length(63), [0x41, 0x04]);
        assert_eq!(package_length(0xffd), [0x4f, 0xff]);
        // 0xffe + 3 = 0x1001: needs two following bytes.
        assert_eq!(package_length(0xffe), [0x81, 0x00, 0x01]);
        assert_eq!(package_length(0xf_fffc), [0x8f, 0xff, 0xff]);
        assert_eq!(package_length(0xf_fffd), [0xc1, 0x00, 0x00, 0x01]);
        assert_eq!(
            package_length(PACKAGE_LENGTH_MAX - 4),
            [0xcf, 0xff, 0xff, 0xff]
        );
    }

    /// Decodes a PkgLength the way the spec describes it, as an independent check.
    fn decode(bytes: &[u8]) -> usize {
        let follow = usize::from(bytes[0] >> 6);
        if follow == 0 {
            return usize::from(bytes[0] & 0x3f);
        }
        let mut length = usize::from(bytes[0] & 0x0f);
        for index in 0..follow {
            length |= usize::from(bytes[1 + index]) << (4 + 8 * index);
        }
        length
    }

    #[test]
    fn package_lengths_count_themselves() {
        for content in [
            0, 1, 61, 62, 63, 64, 200, 0xffc, 0xffd, 0xffe, 0x12345, 0xfffff,
        ] {
            let encoded = package_length(content);
            assert_eq!(decode(&encoded), content + encoded.len(), "{content}");
        }
    }

    #[test]
    fn integers_use_the_shortest_encoding() {
        assert_eq!(integer(0), [ZERO_OP]);
        assert_eq!(integer(1), [ONE_OP]);
        assert_eq!(integer(5), [BYTE_PREFIX, 5]);
        assert_eq!(integer(0x3f8), [WORD_PREFIX, 0xf8, 0x03]);
        assert_eq!(integer(0x1_0000), [DWORD_PREFIX, 0, 0, 1, 0]);
        assert_eq!(integer(1 << 32)[0], QWORD_PREFIX);
    }

    #[test]
    fn eisa_ids_compress_like_asl() {
        assert_eq!(eisa_id("PNP0501"), 0x0105_d041);
        assert_eq!(eisa_id("PNP0A03"), 0x030a_d041);
    }

    #[test]
    fn s5_package_matches_what_iasl_emits() {
        let s5 = name(
            "_S5",
            &package(&[integer(5), integer(5), integer(0), integer(0)]),
        );
        assert_eq!(
            s5,
            [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00]
        );
    }

    #[test]
    fn resource_descriptors() {
        assert_eq!(
            io_port(0x3f8, 8),
            [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
        );
        assert_eq!(interrupt(4), [0x22, 0x10, 0x00]);
        assert_eq!(interrupt(20), [0x89, 6, 0, 0x03, 1, 20, 0, 0, 0]);
        assert_eq!(end_tag(), [0x79, 0x00]);
    }

    /// The bytes ACPICA's iasl (20200925) compiles from the ASL in the comments (checked
    /// by hand once; the DSDT test below disassembles whole tables where iasl exists).
    #[test]
    fn address_space_descriptors_match_iasl() {
        // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
        //     0x0000, 0x0000, 0x00FF, 0x0000, 0x0100)
        assert_eq!(
            word_bus_number(0, 0xff),
            [0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0xff, 0, 0, 0, 0x00, 0x01]
        );
        // WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
        //     0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300)
        assert_eq!(
            word_io(0x0d00, 0xf300),
            [0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00, 0xf3]
        );
        // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable,
        //     ReadWrite, 0x00000000, 0xC0000000, 0xFEBFFFFF, 0x00000000, 0x3EC00000)
        assert_eq!(
            memory_window(0xc000_0000, 0x3ec0_0000),
            [
                0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff,
                0xbf, 0xfe, 0, 0, 0, 0, 0x00, 0x00, 0xc0, 0x3e
            ]
        );
        let high = memory_window(0x1_0000_0000, 0x1000);
        assert_eq!(high.len(), 46);
        assert_eq!(&high[..6], [0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01]);
        assert_eq!(
            u64::from_le_bytes(high[22..30].try_into().unwrap()),
            0x1_0000_0fff
        );
        // Memory32Fixed (ReadWrite, 0xB0000000, 0x00100000)
        assert_eq!(
            memory32_fixed(0xb000_0000, 0x10_0000),
            [0x86, 0x09, 0x00, 0x01, 0, 0, 0, 0xb0, 0, 0, 0x10, 0]
        );
    }

    #[test]
    #[should_panic(expected = "outside the I/O space")]
    fn an_io_window_past_the_io_space_is_a_programming_error() {
        let _ = word_io(0xfff0, 0x20);
    }
}
