//! Writes tiny Linux bzImages for tests: a boot sector and setup sectors holding the setup
//! header (Documentation/arch/x86/boot.rst) with the values a 64-bit boot reads, followed
//! by a few bytes of "protected-mode kernel". Nothing in them runs.
#![allow(dead_code)]

/// What the test kernel looks like.
#[derive(Clone, Debug)]
pub struct BzImageSpec {
    /// `setup_sects` as written (0 means 4).
    pub setup_sectors: u8,
    pub version: u16,
    pub extended_load_flags: u16,
    pub preferred_address: u64,
    pub init_size: u32,
    pub cmdline_size: u32,
    pub initrd_address_max: u32,
    /// Bytes of protected-mode kernel after the setup sectors.
    pub kernel_bytes: usize,
}

impl Default for BzImageSpec {
    /// Shaped like Debian 12's 6.1 kernel (protocol 2.15, load at 16 MiB, 2 MiB aligned,
    /// relocatable, 2 KiB command line), with a small init_size so tables stay small.
    fn default() -> Self {
        Self {
            setup_sectors: 3,
            version: 0x020f,
            extended_load_flags: 0x7f,
            preferred_address: 0x100_0000,
            init_size: 0x40_0000,
            cmdline_size: 0x7ff,
            initrd_address_max: 0x7fff_ffff,
            kernel_bytes: 0x300,
        }
    }
}

/// The bytes of a bzImage as `spec` describes it.
pub fn build_bzimage(spec: &BzImageSpec) -> Vec<u8> {
    let sectors = if spec.setup_sectors == 0 {
        4
    } else {
        usize::from(spec.setup_sectors)
    };
    let setup_bytes = (sectors + 1) * 512;
    let mut bytes = vec![0u8; setup_bytes + spec.kernel_bytes];
    let mut put = |offset: usize, value: &[u8]| {
        bytes[offset..offset + value.len()].copy_from_slice(value);
    };
    put(0x1f1, &[spec.setup_sectors]);
    put(0x1fa, &0xffffu16.to_le_bytes()); // vid_mode: "normal"
    put(0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
    put(0x200, &[0xeb, 0x6a]); // jmp to the end of the header
    put(0x202, b"HdrS");
    put(0x206, &spec.version.to_le_bytes());
    put(0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(0x22c, &spec.initrd_address_max.to_le_bytes());
    put(0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(0x234, &[1]); // relocatable_kernel
    put(0x235, &[21]); // min_alignment: 2 MiB
    put(0x236, &spec.extended_load_flags.to_le_bytes());
    put(0x238, &spec.cmdline_size.to_le_bytes());
    put(0x258, &spec.preferred_address.to_le_bytes());
    put(0x260, &spec.init_size.to_le_bytes());
    // The "kernel": a recognisable pattern.
    for (index, byte) in bytes[setup_bytes..].iter_mut().enumerate() {
        *byte = (index % 251) as u8;
    }
    bytes
}
