//! The static partition table as the hypervisor sees it after lowering.
//!
//! Every address is a host-physical byte address unless its name says `guest`.
//! Lists are sorted and free of overlaps: the config crate's validation guarantees it
//! and the generated code pins the counts with `const` assertions.

/// A half-open byte range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

impl Range {
    pub const fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }
    /// One past the last byte. Validation rules out ranges that wrap.
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
    pub const fn contains(&self, address: u64) -> bool {
        address >= self.base && address - self.base < self.size
    }
}

/// Access rights of a stage-2 (nested / extended page table) mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Rights {
    pub const RWX: Rights = Rights {
        read: true,
        write: true,
        execute: true,
    };
    pub const RW: Rights = Rights {
        read: true,
        write: true,
        execute: false,
    };
}

/// One region of a partition's guest-physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMapping {
    /// Where the guest sees it.
    pub guest: u64,
    /// Where it really is.
    pub host: Range,
    pub rights: Rights,
    /// What the region is, for the guest's memory map and for messages.
    pub kind: MappingKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingKind {
    /// Ordinary RAM owned by the partition alone.
    Ram,
    /// The shared memory of the channel with this index in [`Machine::channels`].
    Channel(u16),
    /// A passthrough device's MMIO window (uncached).
    DeviceMmio,
}

/// What to do when a partition faults (touches what it does not own, triple-faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPolicy {
    Halt,
    Restart,
}

/// A file (or build-generated block) the image carries for a partition: a guest ELF, a
/// Linux kernel, an initrd, boot parameters, page tables, ACPI tables.
#[derive(Clone, Copy, Debug)]
pub struct Blob {
    pub bytes: &'static [u8],
    /// SHA-256 of `bytes`, computed at build time and checked before the partition starts.
    pub sha256: [u8; 32],
}

/// A loadable piece of a blob: bytes `[file_offset, file_offset + file_size)` of blob
/// `blob` go to guest-physical `guest`, followed by `memory_size - file_size` zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub guest: u64,
    pub blob: u16,
    pub file_offset: u64,
    pub file_size: u64,
    pub memory_size: u64,
}

/// The boot protocol a partition's first core enters by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// PVH (Xen's `XEN_ELFNOTE_PHYS32_ENTRY`): 32-bit protected mode, paging off, EBX =
    /// guest-physical address of the `hvm_start_info` block the hypervisor writes at boot
    /// (command line and memory map included).
    Pvh { entry: u64 },
    /// The Linux x86-64 boot protocol (Documentation/arch/x86/boot.rst, "64-bit boot
    /// protocol"): long mode, paging on with the identity map at `page_tables` (a CR3
    /// value; the tables are a segment), a GDT at `gdt` (32 bytes: null, null, __BOOT_CS =
    /// 0x10 64-bit code, __BOOT_DS = 0x18 data; a segment), RSI = `boot_params` (the zero
    /// page, a segment).
    Linux64 {
        entry: u64,
        boot_params: u64,
        page_tables: u64,
        gdt: u64,
    },
}

/// How a partition starts.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub blobs: &'static [Blob],
    pub segments: &'static [Segment],
    pub entry: Entry,
    /// The command line. PVH: the hypervisor puts it in the start-info block. Linux: it is
    /// written NUL-terminated at `cmdline_guest` (where boot_params.cmd_line_ptr points),
    /// with ` tsc_early_khz=<calibrated>` appended at boot, within `cmdline_capacity` bytes.
    pub cmdline: &'static str,
    pub cmdline_guest: u64,
    pub cmdline_capacity: u64,
}

/// The capabilities of a partition (see docs/partition-table.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// May power the machine off or reboot it.
    Power,
    /// May read the state and counters of the partition with this index.
    Stats(u16),
    /// May halt the partition with this index.
    Halt(u16),
    /// May restart the partition with this index.
    Restart(u16),
}

/// What WBINVD and INVD do in a partition (`wbinvd` in the table; see
/// docs/partition-table.md). MONITOR and MWAIT are intercepted in either case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheControl {
    /// WBINVD runs on the processor: it writes back and invalidates every cache of the
    /// core, the caches it shares with other partitions' cores included, and stalls them
    /// while it runs.
    Native,
    /// The hypervisor intercepts WBINVD and INVD and completes WBINVD as a no-op (the
    /// default).
    Trap,
}

/// One partition, lowered.
#[derive(Debug)]
pub struct Partition {
    pub name: &'static str,
    /// x2APIC IDs of its cores; the first one is the boot core.
    pub cpus: &'static [u32],
    /// Sorted by guest address, disjoint.
    pub memory: &'static [MemoryMapping],
    /// I/O port ranges passed through; every other port reads all-ones and ignores writes.
    pub ports: &'static [Range],
    /// IOAPIC pins its devices own.
    pub irq_pins: &'static [u8],
    pub boot: Boot,
    pub on_fault: FaultPolicy,
    pub capabilities: &'static [Capability],
    /// The hypercalls guest user mode (CPL > 0) may make, as a mask of
    /// [`crate::hypercall::Call::bit`]s; any other call from user mode is refused with #UD.
    /// Never holds [`crate::hypercall::Call::StopSelf`] or
    /// [`crate::hypercall::Call::PowerOff`] (validation refuses them).
    pub user_hypercalls: u64,
    /// What WBINVD and INVD do.
    pub cache_control: CacheControl,
    /// Number of 4 KiB pages its stage-2 page tables need (computed at build time from the
    /// same plan the hypervisor builds at boot).
    pub stage2_table_pages: usize,
    /// The PCI functions it owns, on its virtual bus (docs/pci-iommu.md), in table order.
    pub pci_functions: &'static [PciFunction],
}

/// A PCI function address packed as the requester ID: bus in bits 15:8, device in 7:3,
/// function in 2:0 (PCIe Base 4.0 §2.2.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf(pub u16);

impl Bdf {
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        Self(((bus as u16) << 8) | (((device & 0x1f) as u16) << 3) | (function & 7) as u16)
    }
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }
    pub const fn function(self) -> u8 {
        (self.0 & 7) as u8
    }
}

/// The interrupt a passed-through PCI function may use (`interrupt` in the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciInterrupt {
    /// None: MSI and MSI-X are hidden and the interrupt pin reads 0.
    None,
    /// The INTx pin, routed to this IOAPIC pin.
    Intx { ioapic_pin: u8 },
    /// MSI with this many vectors (1–32, a power of two).
    Msi { vectors: u8 },
    /// MSI-X with this many vectors (1–2048).
    Msix { vectors: u16 },
}

/// One PCI function passed through to a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// Where it is on the machine (segment 0).
    pub physical: Bdf,
    /// Where the partition sees it on its virtual bus 0.
    pub virtual_address: Bdf,
    /// The table's `mmio` windows: every memory BAR must lie inside one (checked at boot);
    /// empty when the table gives none and the BARs are taken as the hardware reports them.
    pub bar_windows: &'static [Range],
    pub interrupt: PciInterrupt,
    /// Whether an IOMMU domain must confine its DMA (`dma = "confined"`, the default).
    pub dma_confined: bool,
}

#[derive(Debug)]
pub struct Channel {
    pub name: &'static str,
    pub memory: Range,
    /// Partition indices of its members.
    pub members: &'static [u16],
    pub doorbell_vector: u8,
    /// The most rings per second the hypervisor accepts from each member (1–1,000,000;
    /// `doorbell-budget` in the table, 10,000 by default).
    pub doorbell_rings_per_second: u32,
}

/// A UART the hypervisor writes its console to.
#[derive(Clone, Copy, Debug)]
pub struct Console {
    pub port: u16,
}

/// The I/O APIC: its register page and number of input pins.
#[derive(Clone, Copy, Debug)]
pub struct Ioapic {
    pub base: u64,
    pub pins: u8,
}

/// The whole machine as the table describes it.
#[derive(Debug)]
pub struct Machine {
    /// The table's file name, for the banner.
    pub table_name: &'static str,
    pub platform_name: &'static str,
    /// x2APIC IDs of every core the table uses (hypervisor-only cores included).
    pub cpus: &'static [u32],
    /// Platform RAM as the table declares it; the hypervisor checks the firmware map covers it.
    pub ram: &'static [Range],
    pub hypervisor_memory: Range,
    pub console: Console,
    pub ioapic: Option<Ioapic>,
    /// The PCI Express configuration window (ECAM, segment 0 from bus 0), if the table
    /// declares one; partitions with PCI functions see a one-bus virtual ECAM window at its
    /// base.
    pub ecam: Option<Range>,
    pub partitions: &'static [Partition],
    pub channels: &'static [Channel],
}
