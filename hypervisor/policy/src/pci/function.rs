//! One passed-through function as its partition sees it: discovered and quiesced at boot
//! against the table (vendor ID present, a type 0 endpoint, every BAR inside the table's
//! windows), then every guest configuration access served from the real registers through
//! the filters of this module's siblings (docs/pci-iommu.md, "Discovery at boot" and
//! "Configuration space, filtered").
//!
//! The hardware is reached through [`ConfigSpace`], dword by dword: the hypervisor
//! implements it over configuration mechanism #1, the tests over a model function.

use super::bar::{BarKind, VirtualBar};
use super::capability::{self, CapabilityList};
use super::header::{self, byte_lanes, extract};
use super::msi::{self, MessageRoute, MsiRefusal, Unremapped};
use super::msix::{MsixLayout, MsixLayoutError};
use tessera_abi::table::{PciInterrupt, Range};

/// Dword access to one function's configuration space.
pub trait ConfigSpace {
    /// Reads the dword at `offset` (a multiple of 4).
    fn read(&mut self, offset: u16) -> u32;
    /// Writes the dword at `offset` (a multiple of 4).
    fn write(&mut self, offset: u16, value: u32);
    /// Whether offsets from 0x100 (extended space) can be reached.
    fn extended(&self) -> bool;
}

/// Command register: I/O Space, Memory Space, Bus Master (PCI 3.0 §6.2.2).
const DECODE_AND_MASTER: u32 = 0b111;
/// Command register: Interrupt Disable (bit 10).
const INTERRUPT_DISABLE: u32 = 1 << 10;
/// Status bit 4, Capabilities List, in the dword at 0x04.
const CAPABILITIES_LIST: u32 = 1 << 20;
/// MSI message control: enable (bit 0), Multiple Message Enable (6:4), 64-bit (bit 7),
/// per-vector masking (bit 8) (PCI 3.0 §6.8.1.3), as bits of the capability's first dword.
const MSI_ENABLE: u32 = 1 << 16;
const MSI_MULTIPLE_ENABLE: u32 = 0x70 << 16;
const MSI_64_BIT: u32 = 0x80 << 16;
const MSI_PER_VECTOR_MASK: u32 = 0x100 << 16;
/// MSI-X message control: enable (bit 15), function mask (bit 14) (§6.8.2.3).
const MSIX_ENABLE: u32 = 1 << 31;
const MSIX_FUNCTION_MASK: u32 = 1 << 30;

/// Why the hardware disagrees with the table (a boot refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryError {
    /// Vendor ID 0xFFFF: nothing answers at the address.
    Absent,
    /// Header type not 0 (a PCI-to-PCI or CardBus bridge), or class 06/00 (a host bridge).
    NotEndpoint { header_type: u8, class: u32 },
    /// A BAR whose size is not a power of two of at least its minimum.
    MalformedBar { bar: u8 },
    /// A memory BAR outside the table's `mmio` windows (or the table gives none).
    BarOutsideWindows { bar: u8, base: u64, size: u64 },
    /// An I/O BAR outside the partition's ports.
    IoBarOutsidePorts { bar: u8, base: u64, size: u64 },
    /// The MSI-X table is not inside one of the function's memory BARs.
    MsixTable(MsixLayoutError),
    /// The reset before the partition starts did not complete (`super::reset`).
    Reset(super::reset::ResetError),
    /// The bridges between bus 0 and the function disagree with `platform.pci-bridges`
    /// (`super::topology`).
    Topology(super::topology::TopologyError),
}

/// A function's MSI-X table as the hypervisor traps it: the layout, the host-physical
/// address of the table's BAR (identity-mapped, so also the guest's) and the pages to take
/// out of stage-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixTrap {
    /// Offset of the MSI-X capability in configuration space.
    pub capability: u16,
    pub layout: MsixLayout,
    /// Host-physical base of the BAR holding the table, and of the BAR holding the PBA.
    pub table_bar_base: u64,
    pub pba_bar_base: u64,
    /// Host-physical address and length of the trapped pages (4 KiB-aligned).
    pub pages: u64,
    pub pages_bytes: u64,
    /// The entries the table grants (`interrupt = { kind = "msix", vectors }`), at most
    /// the function's table size.
    pub granted: u16,
}

impl MsixTrap {
    /// Host-physical address of table entry `entry`.
    pub fn entry_address(&self, entry: u16) -> u64 {
        self.table_bar_base + u64::from(self.layout.table_offset) + u64::from(entry) * 16
    }
    /// Whether host-physical `address` is in a trapped page.
    pub fn covers(&self, address: u64) -> bool {
        address.wrapping_sub(self.pages) < self.pages_bytes
    }
}

/// A BAR read at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardwareBar {
    pub index: u8,
    pub kind: BarKind,
    pub base: u64,
    pub size: u64,
}

/// The MSI capability's shadow: the guest writes here, the hardware gets a message only
/// when the guest enables MSI with one that passes [`msi::check_message`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MsiShadow {
    offset: u16,
    /// The largest Multiple Message Enable (log2 of the vectors) the guest may set: what
    /// the function is capable of, and no more than the table's vector count.
    most_enabled: u32,
    /// The capability's first dword as the guest sees it (control in bits 31:16).
    control: u32,
    address_low: u32,
    address_high: u32,
    data: u32,
    mask: u32,
}

impl MsiShadow {
    fn is_64_bit(&self) -> bool {
        self.control & MSI_64_BIT != 0
    }
    /// Offsets inside the capability of the data and mask registers (§6.8.1, Figure 6-9).
    fn data_offset(&self) -> u16 {
        if self.is_64_bit() {
            0x0c
        } else {
            0x08
        }
    }
    fn length(&self) -> u16 {
        let base = self.data_offset() + 4;
        if self.control & MSI_PER_VECTOR_MASK != 0 {
            base + 8
        } else {
            base
        }
    }
}

/// What a guest write did, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// Bits outside the whitelist were dropped.
    pub dropped: bool,
    /// An MSI message failed its checks; MSI stays disabled in hardware.
    pub refused_message: Option<MsiRefusal>,
}

/// A passed-through function's virtual configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualFunction {
    bars: [Option<VirtualBar>; 6],
    interrupt_line: u8,
    intx: bool,
    capabilities: CapabilityList,
    extended: CapabilityList,
    msi: Option<MsiShadow>,
    msix: Option<MsixTrap>,
}

fn inside(ranges: &[Range], base: u64, size: u64) -> bool {
    ranges.iter().any(|range| {
        base >= range.base
            && base
                .checked_add(size)
                .is_some_and(|end| end <= range.base + range.size)
    })
}

impl VirtualFunction {
    /// Discovers the function, checks it against the table and quiesces it: decode, bus
    /// mastering, MSI and MSI-X off, INTx disabled (docs/pci-iommu.md, "Discovery at
    /// boot", steps 2–4). `windows` are the table's BAR windows, `ports` the partition's
    /// I/O ports. Calls `found` with every implemented BAR.
    pub fn discover(
        space: &mut impl ConfigSpace,
        windows: &[Range],
        ports: &[Range],
        interrupt: PciInterrupt,
        mut found: impl FnMut(HardwareBar),
    ) -> Result<Self, DiscoveryError> {
        let id = space.read(0x00);
        if id & 0xffff == 0xffff {
            return Err(DiscoveryError::Absent);
        }
        let header_type = ((space.read(header::CACHE_LINE) >> 16) & 0x7f) as u8;
        let class = space.read(0x08) >> 8;
        if header_type != 0 || class >> 8 == 0x0600 {
            return Err(DiscoveryError::NotEndpoint { header_type, class });
        }
        // Quiesce first, so that sizing the BARs below never decodes a half-written
        // address (§6.2.5.1) and nothing the firmware started keeps running.
        let command = space.read(header::COMMAND);
        space.write(
            header::COMMAND,
            (command & 0xffff & !DECODE_AND_MASTER) | INTERRUPT_DISABLE,
        );
        let status_has_list = space.read(header::COMMAND) & CAPABILITIES_LIST != 0;
        let mut capabilities = CapabilityList::walk(status_has_list, |offset| space.read(offset));
        // Only the interrupt kind the table gives stays visible (§ "The table").
        capabilities.retain(|capability| match capability.id as u8 {
            capability::MSI => matches!(interrupt, PciInterrupt::Msi { .. }),
            capability::MSI_X => matches!(interrupt, PciInterrupt::Msix { .. }),
            _ => true,
        });
        let mut msi = None;
        let mut msix_found = None;
        for kept in CapabilityList::walk(status_has_list, |offset| space.read(offset)).kept() {
            let first = space.read(kept.offset);
            match kept.id as u8 {
                capability::MSI => {
                    space.write(kept.offset, first & !MSI_ENABLE & !MSI_MULTIPLE_ENABLE);
                    if capabilities.find(kept.id).is_some() {
                        let capable = (first >> 17) & 7;
                        let granted = match interrupt {
                            PciInterrupt::Msi { vectors } => u32::from(vectors.max(1)).ilog2(),
                            _ => 0,
                        };
                        msi = Some(MsiShadow {
                            offset: kept.offset,
                            most_enabled: capable.min(granted),
                            control: first & !MSI_ENABLE & !MSI_MULTIPLE_ENABLE,
                            ..MsiShadow::default()
                        });
                    }
                }
                capability::MSI_X => {
                    space.write(kept.offset, (first & !MSIX_ENABLE) | MSIX_FUNCTION_MASK);
                    if capabilities.find(kept.id).is_some() {
                        let layout = MsixLayout::decode(
                            first,
                            space.read(kept.offset + 4),
                            space.read(kept.offset + 8),
                        );
                        msix_found = Some((kept.offset, layout));
                    }
                }
                _ => {}
            }
        }
        let extended = if space.extended() {
            CapabilityList::walk_extended(|offset| space.read(offset))
        } else {
            CapabilityList::default()
        };
        let mut bars = [None; 6];
        // Per BAR index: the memory BAR's host base and size (for the MSI-X table).
        let mut memory_bars = [None; 6];
        let mut index = 0u8;
        while index < 6 {
            let offset = header::BAR0 + u16::from(index) * 4;
            let original = space.read(offset);
            space.write(offset, u32::MAX);
            let mask = space.read(offset);
            space.write(offset, original);
            if mask == 0 {
                index += 1;
                continue;
            }
            let io = original & 1 != 0;
            let wide = !io && (original >> 1) & 3 == 2 && index < 5;
            let prefetchable = original & 8 != 0;
            let (kind, base, size) = if io {
                let size_mask = mask & !3 | 0xffff_0000;
                (
                    BarKind::Io,
                    u64::from(original & !3),
                    u64::from((!size_mask).wrapping_add(1)),
                )
            } else if wide {
                let high_offset = offset + 4;
                let high_original = space.read(high_offset);
                space.write(high_offset, u32::MAX);
                let high_mask = space.read(high_offset);
                space.write(high_offset, high_original);
                let mask = u64::from(high_mask) << 32 | u64::from(mask & !0xf);
                (
                    BarKind::Memory64Low { prefetchable },
                    u64::from(high_original) << 32 | u64::from(original & !0xf),
                    (!mask).wrapping_add(1),
                )
            } else {
                (
                    BarKind::Memory32 { prefetchable },
                    u64::from(original & !0xf),
                    u64::from((!(mask & !0xf)).wrapping_add(1)),
                )
            };
            let bar = VirtualBar::new(kind, size, base)
                .ok_or(DiscoveryError::MalformedBar { bar: index })?;
            if io && !inside(ports, base, size) {
                return Err(DiscoveryError::IoBarOutsidePorts {
                    bar: index,
                    base,
                    size,
                });
            }
            if !io && !inside(windows, base, size) {
                return Err(DiscoveryError::BarOutsideWindows {
                    bar: index,
                    base,
                    size,
                });
            }
            found(HardwareBar {
                index,
                kind,
                base,
                size,
            });
            if !io {
                memory_bars[usize::from(index)] = Some((base, size));
            }
            bars[usize::from(index)] = Some(bar);
            if wide {
                bars[usize::from(index) + 1] = VirtualBar::new(BarKind::Memory64High, size, base);
                index += 1;
            }
            index += 1;
        }
        let msix = match msix_found {
            None => None,
            Some((capability, layout)) => {
                let bar = |index: u8| {
                    memory_bars
                        .get(usize::from(index))
                        .copied()
                        .flatten()
                        .ok_or(DiscoveryError::MsixTable(MsixLayoutError::NoSuchBar {
                            bar: index,
                        }))
                };
                let (table_bar_base, table_bar_size) = bar(layout.table_bar)?;
                let (pba_bar_base, _) = bar(layout.pba_bar)?;
                let (offset, bytes) = layout
                    .trapped_pages(table_bar_size)
                    .map_err(DiscoveryError::MsixTable)?;
                let granted = match interrupt {
                    PciInterrupt::Msix { vectors } => vectors.min(layout.entries),
                    _ => 0,
                };
                Some(MsixTrap {
                    capability,
                    layout,
                    table_bar_base,
                    pba_bar_base,
                    pages: table_bar_base + offset,
                    pages_bytes: bytes,
                    granted,
                })
            }
        };
        let interrupt_line = space.read(header::INTERRUPT_LINE) as u8;
        Ok(Self {
            bars,
            interrupt_line,
            intx: matches!(interrupt, PciInterrupt::Intx { .. }),
            capabilities,
            extended,
            msi,
            msix,
        })
    }

    /// The function's MSI-X table, when the table grants it MSI-X and it has one.
    pub fn msix(&self) -> Option<MsixTrap> {
        self.msix
    }

    /// The kept capabilities (for the boot log).
    pub fn capabilities(&self) -> &CapabilityList {
        &self.capabilities
    }

    /// The kept extended capabilities (for the boot log; empty without extended space).
    pub fn extended_capabilities(&self) -> &CapabilityList {
        &self.extended
    }

    /// What the guest reads: `size` bytes at `offset`, in the low bits.
    pub fn read(&self, space: &mut impl ConfigSpace, offset: u16, size: u8) -> u32 {
        let dword = offset & !3;
        let value = self.read_dword(space, dword);
        extract(value, offset, size)
    }

    fn read_dword(&self, space: &mut impl ConfigSpace, dword: u16) -> u32 {
        if dword >= 0x100 {
            if !space.extended() {
                return 0;
            }
            return self.extended.read_extended(dword, space.read(dword));
        }
        if let Some(msi) = self
            .msi
            .filter(|msi| (msi.offset..msi.offset + msi.length()).contains(&dword))
        {
            let hardware = space.read(dword);
            let relative = dword - msi.offset;
            return match relative {
                0 => self
                    .capabilities
                    .read(dword, (hardware & 0xffff) | (msi.control & 0xffff_0000)),
                4 => msi.address_low,
                8 if msi.is_64_bit() => msi.address_high,
                _ if relative == msi.data_offset() => msi.data,
                _ if relative == msi.data_offset() + 4 => msi.mask,
                _ => hardware,
            };
        }
        match dword {
            header::BAR0..header::BAR_END => {
                self.bars[usize::from((dword - header::BAR0) / 4)].map_or(0, VirtualBar::read)
            }
            header::COMMAND => {
                let hardware = space.read(dword);
                if self.capabilities.first() == 0 {
                    hardware & !CAPABILITIES_LIST
                } else {
                    hardware
                }
            }
            header::CAPABILITIES_POINTER => self.capabilities.read(dword, space.read(dword)),
            header::INTERRUPT_LINE => {
                header::interrupt_dword(space.read(dword), self.interrupt_line, self.intx)
            }
            0x40.. => self.capabilities.read(dword, space.read(dword)),
            _ => header::read_overlay(dword, space.read(dword)),
        }
    }

    /// A guest write of `size` bytes at `offset` (value in the low bits); `cores` are the
    /// partition's x2APIC IDs, for MSI checks.
    pub fn write(
        &mut self,
        space: &mut impl ConfigSpace,
        offset: u16,
        size: u8,
        value: u32,
        cores: &[u32],
    ) -> WriteEffect {
        self.write_routed(space, offset, size, value, cores, &mut Unremapped)
    }

    /// [`Self::write`], with a checked MSI message programmed as `route` encodes it (the
    /// hypervisor's interrupt remapping entries, when the IOMMU remaps interrupts).
    pub fn write_routed(
        &mut self,
        space: &mut impl ConfigSpace,
        offset: u16,
        size: u8,
        value: u32,
        cores: &[u32],
        route: &mut impl MessageRoute,
    ) -> WriteEffect {
        let dword = offset & !3;
        let lanes = byte_lanes(offset, size);
        let shifted = (value << ((offset & 3) * 8)) & lanes;
        let merge_lanes = |old: u32| (old & !lanes) | shifted;
        if (header::BAR0..header::BAR_END).contains(&dword) {
            return match &mut self.bars[usize::from((dword - header::BAR0) / 4)] {
                Some(bar) => {
                    bar.write(merge_lanes(bar.read()));
                    WriteEffect::default()
                }
                None => WriteEffect {
                    dropped: shifted != 0,
                    ..WriteEffect::default()
                },
            };
        }
        if dword < header::HEADER_END {
            let filtered = header::filter_write(offset, size, value);
            if filtered.pass != 0 {
                let current = space.read(dword);
                space.write(dword, filtered.merge(current, shifted));
            }
            if let Some(line) = filtered.interrupt_line {
                self.interrupt_line = line;
            }
            return WriteEffect {
                dropped: filtered.dropped,
                ..WriteEffect::default()
            };
        }
        if let Some(msi) = self
            .msi
            .as_mut()
            .filter(|msi| (msi.offset..msi.offset + msi.length()).contains(&dword))
        {
            return Self::write_msi(msi, space, dword - msi.offset, lanes, shifted, cores, route);
        }
        if dword < 0x100 {
            if let Some(effect) = self.write_capability(space, dword, lanes, shifted) {
                return effect;
            }
        } else if space.extended() && self.is_error_status(dword) {
            // Write-1-to-clear: only the bits the guest writes as 1 clear, so the bytes it
            // did not write go out as 0 rather than merged with what the register holds.
            space.write(dword, shifted);
            return WriteEffect::default();
        }
        // Everything else (hidden capabilities, the rest of kept ones and of extended
        // space, among it AER's masks, severities and control, which decide how errors
        // escalate beyond the function): dropped.
        WriteEffect {
            dropped: true,
            ..WriteEffect::default()
        }
    }

    /// Whether `dword` is one of the kept AER capability's error status registers, both
    /// RW1CS (PCIe Base 4.0 §7.8.4.2 Uncorrectable Error Status at +04h, §7.8.4.5
    /// Correctable Error Status at +10h): a driver clears what it has handled there.
    fn is_error_status(&self, dword: u16) -> bool {
        self.extended
            .find(capability::EXTENDED_AER)
            .is_some_and(|aer| dword == aer.offset + 0x04 || dword == aer.offset + 0x10)
    }

    /// Writes to the whitelisted registers of PM, PCI Express and MSI-X capabilities.
    fn write_capability(
        &mut self,
        space: &mut impl ConfigSpace,
        dword: u16,
        lanes: u32,
        shifted: u32,
    ) -> Option<WriteEffect> {
        let owner = self
            .capabilities
            .kept()
            .iter()
            .filter(|capability| capability.offset <= dword)
            .max_by_key(|capability| capability.offset)?;
        let relative = dword - owner.offset;
        // (read-write bits, write-1-to-clear bits) of the dword inside the capability.
        let (read_write, write_one_to_clear) = match (owner.id as u8, relative) {
            // PMCSR: power state (1:0), PME_En (8); PME_Status (15) W1C (PCI PM 1.2 §3.2.4).
            (capability::POWER_MANAGEMENT, 4) => (0x0000_0103, 0x0000_8000),
            // Device control (all but Initiate FLR, bit 15, which is the hypervisor's reset);
            // device status error bits 3:0 W1C (PCIe 4.0 §7.5.3.4, §7.5.3.5).
            (capability::PCI_EXPRESS, 8) => (0x0000_7fff, 0x000f_0000),
            // MSI-X Enable and Function Mask pass: the table is trapped, and every
            // hardware entry is masked or holds a checked message (the hypervisor masks
            // them all at discovery and writes them only through `msix::hardware_update`).
            (capability::MSI_X, 0) if self.msix.is_some() => (MSIX_ENABLE | MSIX_FUNCTION_MASK, 0),
            (capability::MSI_X, 0) => (MSIX_FUNCTION_MASK, 0),
            _ => (0, 0),
        };
        let pass = (read_write | write_one_to_clear) & lanes;
        if pass == 0 {
            return None;
        }
        let current = space.read(dword);
        space.write(
            dword,
            (current & !pass & !write_one_to_clear) | (shifted & pass),
        );
        // MSI-X message control is written read-modify-write (the table size comes back
        // as read): only a change to a read-only bit counts as dropped there.
        let dropped = if owner.id as u8 == capability::MSI_X {
            (shifted ^ current) & lanes & !pass != 0
        } else {
            shifted & !pass != 0
        };
        Some(WriteEffect {
            dropped,
            ..WriteEffect::default()
        })
    }

    /// A write into the MSI capability: kept in the shadow; while the guest has MSI
    /// enabled, the message is checked and only a message that passes reaches the
    /// hardware, with Multiple Message Enable limited to what the function is capable of
    /// and the table grants.
    fn write_msi(
        msi: &mut MsiShadow,
        space: &mut impl ConfigSpace,
        relative: u16,
        lanes: u32,
        shifted: u32,
        cores: &[u32],
        route: &mut impl MessageRoute,
    ) -> WriteEffect {
        let mut effect = WriteEffect::default();
        let merge = |old: u32| (old & !lanes) | shifted;
        match relative {
            0 => {
                // Enable and Multiple Message Enable are the only writable control bits.
                let writable = (MSI_ENABLE | MSI_MULTIPLE_ENABLE) & lanes;
                // Read-only control bits written back as read (what drivers do) are not
                // counted; changing them is.
                effect.dropped = (shifted ^ msi.control) & lanes & !writable & !0xffff != 0;
                let most = msi.most_enabled;
                let mut control = (msi.control & !writable) | (shifted & writable);
                if (control & MSI_MULTIPLE_ENABLE) >> 20 > most {
                    control = (control & !MSI_MULTIPLE_ENABLE) | (most << 20);
                    effect.dropped = true;
                }
                msi.control = control;
            }
            4 => msi.address_low = merge(msi.address_low) & !3,
            8 if msi.is_64_bit() => msi.address_high = merge(msi.address_high),
            _ if relative == msi.data_offset() => msi.data = merge(msi.data) & 0xffff,
            _ if relative == msi.data_offset() + 4 => {
                // Per-vector mask bits pass straight through: masking is always safe.
                msi.mask = merge(msi.mask);
                space.write(msi.offset + relative, msi.mask);
                return effect;
            }
            _ => {
                effect.dropped = true;
                return effect;
            }
        }
        effect.refused_message = Self::apply_msi(msi, space, cores, route);
        effect
    }

    /// Brings the hardware in line with the shadow: MSI enabled there only with a message
    /// that passed the checks (written before the enable bit).
    fn apply_msi(
        msi: &MsiShadow,
        space: &mut impl ConfigSpace,
        cores: &[u32],
        route: &mut impl MessageRoute,
    ) -> Option<MsiRefusal> {
        let hardware_first = space.read(msi.offset);
        let disabled = hardware_first & !(MSI_ENABLE | MSI_MULTIPLE_ENABLE);
        if msi.control & MSI_ENABLE == 0 {
            space.write(msi.offset, disabled);
            return None;
        }
        let address = u64::from(msi.address_high) << 32 | u64::from(msi.address_low);
        let routed = msi::check_message(address, msi.data, cores).and_then(|checked| {
            // Multiple Message Enable: the function sends 2^n vectors, varying the low
            // data bits (PCI 3.0 §6.8.1.3); all of them are routed.
            let vectors = 1u16 << ((msi.control & MSI_MULTIPLE_ENABLE) >> 20);
            route.route(checked, 0, vectors, (address, msi.data))
        });
        let (address, data) = match routed {
            Ok(routed) => routed,
            Err(refusal) => {
                space.write(msi.offset, disabled);
                return Some(refusal);
            }
        };
        space.write(msi.offset + 4, address as u32);
        if msi.is_64_bit() {
            space.write(msi.offset + 8, (address >> 32) as u32);
        }
        space.write(msi.offset + msi.data_offset(), data);
        space.write(
            msi.offset,
            disabled | (msi.control & (MSI_ENABLE | MSI_MULTIPLE_ENABLE)),
        );
        None
    }
}

#[cfg(test)]
mod tests;
