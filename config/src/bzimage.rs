//! A reader for the setup header of a Linux bzImage (Documentation/arch/x86/boot.rst, "The
//! real-mode kernel header"): what a boot loader needs to enter the kernel by the 64-bit
//! boot protocol without running its real-mode setup code. Nothing is decompressed.

use std::fmt;

use tessera_policy::bytes::{u16_at, u32_at, u64_at};

/// `setup_sects`: number of 512-byte setup sectors after the boot sector (0 means 4).
const SETUP_SECTS: usize = 0x1f1;
/// The jump instruction's displacement byte: the header ends at 0x202 + this byte.
const JUMP_DISPLACEMENT: usize = 0x201;
/// `header`: the magic "HdrS".
const HEADER_MAGIC: usize = 0x202;
/// `version`: the boot protocol version (major in the high byte).
const VERSION: usize = 0x206;
/// `loadflags`: bit 0 LOADED_HIGH (the protected-mode code is loaded at 1 MiB or above).
const LOAD_FLAGS: usize = 0x211;
/// `initrd_addr_max`: highest address the initrd may occupy (its last byte).
const INITRD_ADDRESS_MAX: usize = 0x22c;
/// `kernel_alignment`: the alignment a relocatable kernel needs.
const KERNEL_ALIGNMENT: usize = 0x230;
/// `relocatable_kernel`: non-zero if the kernel may be loaded at any aligned address.
const RELOCATABLE: usize = 0x234;
/// `xloadflags`: bit 0 XLF_KERNEL_64 (the kernel has the 64-bit entry at +0x200).
const EXTENDED_LOAD_FLAGS: usize = 0x236;
/// `cmdline_size`: the longest command line the kernel reads, without its NUL.
const CMDLINE_SIZE: usize = 0x238;
/// `pref_address`: where the kernel prefers to be loaded.
const PREFERRED_ADDRESS: usize = 0x258;
/// `init_size`: the memory the kernel needs from its load address until it has set up
/// its own memory management (decompression included).
const INIT_SIZE: usize = 0x260;

/// The magic at [`HEADER_MAGIC`].
pub const MAGIC: &[u8; 4] = b"HdrS";
/// The oldest protocol with `xloadflags` (2.12), which says whether the 64-bit entry exists.
pub const MINIMUM_VERSION: u16 = 0x020c;
/// `xloadflags` bit 0.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` bit 0.
pub const LOADED_HIGH: u8 = 1 << 0;
/// The offset of the 64-bit entry point (`startup_64`) from the load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// Where the setup header starts in the file and in `boot_params`.
pub const SETUP_HEADER_START: usize = SETUP_SECTS;

/// What a 64-bit boot needs from a bzImage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BzImage {
    /// The boot protocol version, e.g. 0x20f for 2.15.
    pub version: u16,
    /// Setup sectors (already 4 where the file says 0).
    pub setup_sectors: u64,
    /// File offset of the protected-mode kernel: `(setup_sectors + 1) * 512`.
    pub kernel_offset: u64,
    /// Size of the protected-mode kernel in the file (to the end of the file).
    pub kernel_size: u64,
    pub preferred_address: u64,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub init_size: u32,
    pub cmdline_size: u32,
    pub initrd_address_max: u32,
    /// The setup header as the file has it, `[0x1f1, 0x202 + byte 0x201)`, for `boot_params`.
    pub setup_header: Vec<u8>,
}

/// Why a file is not a bzImage that can be entered by the 64-bit boot protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// Too short to hold the setup header.
    TooShort { length: u64 },
    /// No "HdrS" at 0x202.
    NoMagic,
    /// The boot protocol is older than 2.12.
    OldProtocol { version: u16 },
    /// `xloadflags` lacks XLF_KERNEL_64.
    No64BitEntry,
    /// `loadflags` lacks LOADED_HIGH: a zImage, loaded below 1 MiB.
    NotLoadedHigh,
    /// The setup sectors reach past the end of the file.
    SetupOutsideFile { setup_sectors: u64, length: u64 },
}

impl fmt::Display for BzImageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { length } => write!(
                formatter,
                "not a bzImage: {length} bytes, too short for a setup header"
            ),
            Self::NoMagic => write!(formatter, "not a bzImage: no \"HdrS\" magic at 0x202"),
            Self::OldProtocol { version } => write!(
                formatter,
                "boot protocol {}.{:02} is older than 2.12, which the 64-bit entry needs",
                version >> 8,
                version & 0xff
            ),
            Self::No64BitEntry => write!(
                formatter,
                "the kernel has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)"
            ),
            Self::NotLoadedHigh => write!(
                formatter,
                "a zImage (loadflags lacks LOADED_HIGH), not a bzImage"
            ),
            Self::SetupOutsideFile {
                setup_sectors,
                length,
            } => write!(
                formatter,
                "{setup_sectors} setup sectors reach past the end of the {length}-byte file"
            ),
        }
    }
}

impl std::error::Error for BzImageError {}

/// Reads the setup header of a bzImage and checks it can be entered by the 64-bit protocol.
pub fn parse_bzimage(bytes: &[u8]) -> Result<BzImage, BzImageError> {
    let length = bytes.len() as u64;
    // Every field read below lies before 0x268.
    if bytes.len() < INIT_SIZE + 4 {
        return Err(BzImageError::TooShort { length });
    }
    // The length check above keeps every read inside the file; should a field ever be
    // added past it, the file is too short rather than the build panicking.
    let too_short = || BzImageError::TooShort { length };
    if bytes[HEADER_MAGIC..HEADER_MAGIC + 4] != *MAGIC {
        return Err(BzImageError::NoMagic);
    }
    let version = u16_at(bytes, VERSION).ok_or_else(too_short)?;
    if version < MINIMUM_VERSION {
        return Err(BzImageError::OldProtocol { version });
    }
    if u16_at(bytes, EXTENDED_LOAD_FLAGS).ok_or_else(too_short)? & XLF_KERNEL_64 == 0 {
        return Err(BzImageError::No64BitEntry);
    }
    if bytes[LOAD_FLAGS] & LOADED_HIGH == 0 {
        return Err(BzImageError::NotLoadedHigh);
    }
    let setup_sectors = match bytes[SETUP_SECTS] {
        0 => 4,
        sectors => u64::from(sectors),
    };
    let kernel_offset = (setup_sectors + 1) * 512;
    if kernel_offset >= length {
        return Err(BzImageError::SetupOutsideFile {
            setup_sectors,
            length,
        });
    }
    let header_end = (HEADER_MAGIC + usize::from(bytes[JUMP_DISPLACEMENT])).min(bytes.len());
    Ok(BzImage {
        version,
        setup_sectors,
        kernel_offset,
        kernel_size: length - kernel_offset,
        preferred_address: u64_at(bytes, PREFERRED_ADDRESS).ok_or_else(too_short)?,
        kernel_alignment: u32_at(bytes, KERNEL_ALIGNMENT).ok_or_else(too_short)?,
        relocatable: bytes[RELOCATABLE] != 0,
        init_size: u32_at(bytes, INIT_SIZE).ok_or_else(too_short)?,
        cmdline_size: u32_at(bytes, CMDLINE_SIZE).ok_or_else(too_short)?,
        initrd_address_max: u32_at(bytes, INITRD_ADDRESS_MAX).ok_or_else(too_short)?,
        setup_header: bytes[SETUP_HEADER_START..header_end].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::bzimage_builder::{build_bzimage, BzImageSpec};

    #[test]
    fn reads_the_setup_header() {
        let spec = BzImageSpec::default();
        let bytes = build_bzimage(&spec);
        let image = parse_bzimage(&bytes).unwrap();
        assert_eq!(image.version, 0x020f);
        assert_eq!(image.setup_sectors, u64::from(spec.setup_sectors));
        assert_eq!(
            image.kernel_offset,
            (u64::from(spec.setup_sectors) + 1) * 512
        );
        assert_eq!(image.kernel_size, spec.kernel_bytes as u64);
        assert_eq!(image.preferred_address, spec.preferred_address);
        assert_eq!(image.init_size, spec.init_size);
        assert_eq!(image.cmdline_size, spec.cmdline_size);
        assert_eq!(image.initrd_address_max, spec.initrd_address_max);
        assert_eq!(image.kernel_alignment, 0x20_0000);
        assert!(image.relocatable);
        // The header runs from 0x1f1 to 0x202 + the jump displacement (0x6a).
        assert_eq!(image.setup_header.len(), 0x202 + 0x6a - 0x1f1);
        assert_eq!(&image.setup_header[0x202 - 0x1f1..][..4], b"HdrS");
    }

    #[test]
    fn zero_setup_sectors_means_four() {
        let bytes = build_bzimage(&BzImageSpec {
            setup_sectors: 0,
            ..BzImageSpec::default()
        });
        let image = parse_bzimage(&bytes).unwrap();
        assert_eq!(image.setup_sectors, 4);
        assert_eq!(image.kernel_offset, 5 * 512);
    }

    #[test]
    fn rejects_what_cannot_be_entered_in_64_bit_mode() {
        assert_eq!(
            parse_bzimage(b"MZ"),
            Err(BzImageError::TooShort { length: 2 })
        );
        let mut bytes = build_bzimage(&BzImageSpec::default());
        bytes[0x202] = b'X';
        assert_eq!(parse_bzimage(&bytes), Err(BzImageError::NoMagic));
        let bytes = build_bzimage(&BzImageSpec {
            version: 0x020b,
            ..BzImageSpec::default()
        });
        assert_eq!(
            parse_bzimage(&bytes),
            Err(BzImageError::OldProtocol { version: 0x020b })
        );
        assert_eq!(
            BzImageError::OldProtocol { version: 0x020b }.to_string(),
            "boot protocol 2.11 is older than 2.12, which the 64-bit entry needs"
        );
        let bytes = build_bzimage(&BzImageSpec {
            extended_load_flags: 0,
            ..BzImageSpec::default()
        });
        assert_eq!(parse_bzimage(&bytes), Err(BzImageError::No64BitEntry));
        let mut bytes = build_bzimage(&BzImageSpec::default());
        bytes.truncate(0x800);
        bytes[0x1f1] = 60;
        assert_eq!(
            parse_bzimage(&bytes),
            Err(BzImageError::SetupOutsideFile {
                setup_sectors: 60,
                length: 0x800
            })
        );
    }

    /// Debian's stock kernel, when one has been unpacked into /tmp (not in CI): run with
    /// `TESSERA_BZIMAGE=/tmp/kernel/boot/vmlinuz-… cargo test -p tessera-config bzimage`.
    #[test]
    fn reads_a_real_kernel_when_given_one() {
        let Some(path) = std::env::var_os("TESSERA_BZIMAGE") else {
            return;
        };
        let bytes = std::fs::read(path).unwrap();
        let image = parse_bzimage(&bytes).unwrap();
        assert!(image.version >= MINIMUM_VERSION);
        assert_eq!(image.preferred_address, 0x100_0000);
        assert!(image.init_size > 0x100_0000);
        assert_eq!(image.initrd_address_max, 0x7fff_ffff);
    }
}
