//! The architectural states a vCPU (re)starts in — the PVH entry, a start-up IPI, the
//! Linux 64-bit boot protocol — written once for both backends.

/// A segment register in the AMD VMCB's compressed attribute format (type, S, DPL, P in
/// bits 0–7; AVL, L, D/B, G in bits 8–11: APM vol. 2 appendix B); [`Segment::vmx_rights`]
/// converts to Intel's access-rights layout (SDM §25.4.1, table 25-2).
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    pub attributes: u16,
}

impl Segment {
    pub fn vmx_rights(&self) -> u64 {
        u64::from(self.attributes & 0xFF) | (u64::from(self.attributes & 0xF00) << 4)
    }
}

/// The architectural state a vCPU (re)starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartState {
    /// The PVH entry (Xen docs/misc/pvh.pandoc): 32-bit protected mode, paging off, flat
    /// segments, EBX = guest-physical address of the start-info block.
    Pvh { entry: u64, start_info: u64 },
    /// After INIT and a start-up IPI: real mode at CS = vector << 8, IP 0 (Intel SDM vol. 3
    /// §9.1.1 table 9-1 for the INIT state, §10.4.4.1 for the SIPI vector).
    StartUp { vector: u8 },
    /// The Linux x86-64 boot protocol: long mode with paging on (identity map at
    /// `page_tables`), GDT at `gdt` with __BOOT_CS = 0x10 and __BOOT_DS = 0x18, RSI =
    /// `boot_params` (Documentation/arch/x86/boot.rst, "64-bit boot protocol").
    Linux64 {
        entry: u64,
        boot_params: u64,
        page_tables: u64,
        gdt: u64,
    },
}

/// The registers a start state sets; everything else starts as after INIT (zero).
pub struct ArchitecturalState {
    pub code: Segment,
    pub data: Segment,
    /// TR: a busy TSS, as VM entry requires a usable one.
    pub task: Segment,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// EFER as the guest sees it (backends add what they need, e.g. SVM's SVME).
    pub efer: u64,
    /// GDTR base and limit.
    pub gdt: (u64, u32),
    pub rip: u64,
    pub rbx: u64,
    pub rsi: u64,
}

impl StartState {
    pub fn architectural(&self) -> ArchitecturalState {
        match *self {
            StartState::Pvh { entry, start_info } => ArchitecturalState {
                code: Segment {
                    selector: 0x08,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0C9B,
                },
                data: Segment {
                    selector: 0x10,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0C93,
                },
                task: Segment {
                    selector: 0x18,
                    base: 0,
                    limit: 0x67,
                    attributes: 0x008B,
                },
                cr0: 0x11, // PE | ET
                cr3: 0,
                cr4: 0,
                efer: 0,
                gdt: (0, 0xFFFF),
                rip: entry,
                rbx: start_info,
                rsi: 0,
            },
            StartState::StartUp { vector } => ArchitecturalState {
                code: Segment {
                    selector: u16::from(vector) << 8,
                    base: u64::from(vector) << 12,
                    limit: 0xFFFF,
                    attributes: 0x009B,
                },
                data: Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xFFFF,
                    attributes: 0x0093,
                },
                task: Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xFFFF,
                    attributes: 0x008B,
                },
                cr0: 0x6000_0010, // CD | NW | ET
                cr3: 0,
                cr4: 0,
                efer: 0,
                gdt: (0, 0xFFFF),
                rip: 0,
                rbx: 0,
                rsi: 0,
            },
            StartState::Linux64 {
                entry,
                boot_params,
                page_tables,
                gdt,
            } => ArchitecturalState {
                // 64-bit code: L set, D clear (Intel SDM vol. 3 §5.2.1).
                code: Segment {
                    selector: 0x10,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0A9B,
                },
                data: Segment {
                    selector: 0x18,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0C93,
                },
                task: Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xFFFF,
                    attributes: 0x008B,
                },
                cr0: 0x8000_0011, // PG | ET | PE
                cr3: page_tables,
                cr4: 0x20,   // PAE
                efer: 0x500, // LME | LMA
                gdt: (gdt, 31),
                rip: entry,
                rbx: 0,
                rsi: boot_params,
            },
        }
    }
}
