//! The VMCB (AMD APM vol. 2 appendix B): its layout — control-area and state-save offsets,
//! intercept words, exit codes — and typed access to its fields.

/// VMCB control-area offsets (APM vol. 2 appendix B, table B-1).
pub(super) mod control {
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_VECTOR_3: usize = 0x00C;
    pub const INTERCEPT_VECTOR_4: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05C;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO_1: usize = 0x078;
    pub const EXIT_INFO_2: usize = 0x080;
    pub const NESTED_PAGING: usize = 0x090;
    pub const EVENT_INJECTION: usize = 0x0A8;
    pub const NESTED_CR3: usize = 0x0B0;
}

/// VMCB state-save-area offsets (APM vol. 2 appendix B, table B-2), from the VMCB start.
pub(super) mod state {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4CB;
    pub const EFER: usize = 0x4D0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5D8;
    pub const RAX: usize = 0x5F8;
    pub const G_PAT: usize = 0x668;
    /// STAR, LSTAR, CSTAR, SFMASK, KernelGsBase, SYSENTER_CS/ESP/EIP, CR2: 0x600–0x647,
    /// eight bytes each, all switched by VMLOAD/VMSAVE or VMRUN (APM table B-2).
    pub const STAR: usize = 0x600;
    pub const CR2_END: usize = 0x648;
}

bitflags::bitflags! {
    /// VMCB intercept vector 3 (offset 0x00C; APM vol. 2 §15.9, appendix B table B-1).
    #[derive(Clone, Copy, Debug)]
    pub(super) struct InterceptVector3: u32 {
        const NMI = 1 << 1;
        const INIT = 1 << 3;
        const CPUID = 1 << 18;
        const IRET = 1 << 20;
        const INVD = 1 << 22;
        const IOIO = 1 << 27;
        const MSR = 1 << 28;
        const SHUTDOWN = 1 << 31;
    }

    /// VMCB intercept vector 4 (offset 0x010): the SVM instructions.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct InterceptVector4: u32 {
        const VMRUN = 1 << 0;
        const VMMCALL = 1 << 1;
        const VMLOAD = 1 << 2;
        const VMSAVE = 1 << 3;
        const STGI = 1 << 4;
        const CLGI = 1 << 5;
        const SKINIT = 1 << 6;
        const WBINVD = 1 << 9;
        const MONITOR = 1 << 10;
        const MWAIT = 1 << 11;
        const MWAIT_CONDITIONAL = 1 << 12;
    }
}

/// Exit codes (APM vol. 2 appendix C).
pub(super) mod exit_code {
    /// Exception intercepts are 0x40 + vector (APM appendix C): #DB and #AC.
    pub const DEBUG: u64 = 0x41;
    pub const ALIGNMENT_CHECK: u64 = 0x51;
    pub const NMI: u64 = 0x61;
    pub const INIT: u64 = 0x63;
    pub const CPUID: u64 = 0x72;
    pub const IRET: u64 = 0x74;
    pub const INVD: u64 = 0x76;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8A;
    pub const MWAIT: u64 = 0x8B;
    pub const MWAIT_CONDITIONAL: u64 = 0x8C;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID is -1; QEMU writes it as 0x0000_0000_ffff_ffff, so only the low 32
    /// bits are compared (docs/emulators.md).
    pub const INVALID_LOW: u64 = 0xFFFF_FFFF;
}

/// One 4 KiB VMCB (or host state-save page), accessed by the byte offsets of the APM's
/// tables. It is held as 512 little-endian 64-bit words: every 64-bit field is 8-aligned
/// (APM appendix B), so a field access is one load or store at a constant index, with no
/// byte copying on the exit path; the narrower fields are bit ranges of their word.
#[repr(C, align(4096))]
pub struct Vmcb([u64; 512]);

impl Vmcb {
    pub const fn new() -> Self {
        Self([0; 512])
    }
    #[inline(always)]
    pub(super) fn read_u64(&self, offset: usize) -> u64 {
        debug_assert!(offset.is_multiple_of(8));
        self.0[offset / 8]
    }
    #[inline(always)]
    pub(super) fn write_u64(&mut self, offset: usize, value: u64) {
        debug_assert!(offset.is_multiple_of(8));
        self.0[offset / 8] = value;
    }
    /// The `bits`-wide field at byte `offset` (within one word).
    #[inline(always)]
    pub(super) fn read_field(&self, offset: usize, bits: u32) -> u64 {
        let shift = (offset % 8) as u32 * 8;
        (self.0[offset / 8] >> shift) & (u64::MAX >> (64 - bits))
    }
    #[inline(always)]
    pub(super) fn write_field(&mut self, offset: usize, bits: u32, value: u64) {
        let shift = (offset % 8) as u32 * 8;
        let mask = (u64::MAX >> (64 - bits)) << shift;
        let word = &mut self.0[offset / 8];
        *word = (*word & !mask) | ((value << shift) & mask);
    }
    #[inline(always)]
    pub(super) fn write_u32(&mut self, offset: usize, value: u32) {
        self.write_field(offset, 32, u64::from(value));
    }
    #[inline(always)]
    pub(super) fn write_u8(&mut self, offset: usize, value: u8) {
        self.write_field(offset, 8, u64::from(value));
    }
    /// A segment register in the VMCB format: selector, attributes (type, S, DPL, P in bits
    /// 0–7; AVL, L, D/B, G in bits 8–11), limit, base (APM vol. 2 §15.5.1, table B-2).
    pub(super) fn write_segment(
        &mut self,
        offset: usize,
        selector: u16,
        attributes: u16,
        limit: u32,
        base: u64,
    ) {
        self.write_u64(
            offset,
            u64::from(selector) | u64::from(attributes) << 16 | u64::from(limit) << 32,
        );
        self.write_u64(offset + 8, base);
    }
    /// Zeroes the 64-bit fields from byte `start` up to byte `end`.
    pub(super) fn clear_range(&mut self, start: usize, end: usize) {
        self.0[start / 8..end / 8].fill(0);
    }
    /// A segment register's attribute word (bits 31:16 of its first quadword).
    pub(super) fn segment_attributes(&self, offset: usize) -> u16 {
        self.read_field(offset + 2, 16) as u16
    }
    pub(super) fn physical_address(&self) -> u64 {
        self as *const Self as u64
    }
}
