//! A software walk of a guest's own page tables: linear address to guest-physical address.
//!
//! The hypervisor needs it to fetch the bytes of a trapped MMIO instruction when the hardware
//! does not supply them (AMD SVM without decode assists, as under QEMU TCG). Supported are the
//! paging modes of Intel SDM vol 3 §4.1 (AMD APM vol 2 §5.1): paging off, 32-bit paging
//! (§4.3; 4 KiB pages and, with CR4.PSE, 4 MiB pages incl. PSE-36 address bits), PAE paging
//! (§4.4; 4 KiB and 2 MiB pages) and 4-level paging (§4.5; 4 KiB, 2 MiB and 1 GiB pages).
//! 5-level paging (CR4.LA57) is refused.
//!
//! The walk checks present bits, the access rights (§4.6: R/W and U/S on every level, CR0.WP,
//! XD with EFER.NXE) and the reserved bits that change the meaning of an entry (PS in a PML4E,
//! bit 7 and the R/W, U/S bits of a PAE PDPTE, XD without EFER.NXE). It does not check
//! SMEP/SMAP/protection keys or bits above MAXPHYADDR, does not set accessed/dirty bits, and
//! reads PAE PDPTEs from memory rather than from the processor's PDPTE registers (§4.4.1):
//! it is a best-effort reader of the guest's own memory, not an enforcement point. Memory is
//! read through a caller's closure that refuses (returns `None`) anything outside the
//! partition.

use crate::control_registers::{Cr0, Cr4, Efer};
use bitflags::bitflags;

bitflags! {
    /// The single-bit fields of a guest paging-structure entry that the walk reads (SDM vol 3
    /// §4.3 for 32-bit paging, §4.4.2 for PAE paging, §4.5 for 4-level paging; AMD APM vol 2
    /// §5.4.1). They sit at the same positions in 4-byte and 8-byte entries, except
    /// EXECUTE_DISABLE, which only 8-byte entries have. Frame addresses are not flags
    /// ([`FRAME_MASK`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PageTableEntryFlags: u64 {
        /// Bit 0, P: the entry maps a page or references a table.
        const PRESENT = 1 << 0;
        /// Bit 1, R/W: writes are allowed through this entry (§4.6).
        const WRITABLE = 1 << 1;
        /// Bit 2, U/S: CPL-3 accesses are allowed through this entry (§4.6).
        const USER = 1 << 2;
        /// Bit 7, PS: a PDE (or a PDPTE in 4-level paging) maps a large page; reserved in a
        /// PML4E, the PAT bit in a PTE.
        const PAGE_SIZE = 1 << 7;
        /// Bit 63, XD: instruction fetches are not allowed (with EFER.NXE; reserved without).
        const EXECUTE_DISABLE = 1 << 63;
    }

    /// The page-fault error code (SDM vol 3 §4.7, figure 4-12; AMD APM vol 2 §8.4.2). Only the
    /// bits the walk can report are named.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PageFaultErrorCode: u32 {
        /// Bit 0, P: the fault was a protection violation (0: a not-present page).
        const PRESENT = 1 << 0;
        /// Bit 1, W/R: the access was a write.
        const WRITE = 1 << 1;
        /// Bit 2, U/S: the access was a user-mode (CPL-3) access.
        const USER = 1 << 2;
        /// Bit 3, RSVD: a reserved bit was set in a paging-structure entry.
        const RESERVED = 1 << 3;
        /// Bit 4, I/D: the access was an instruction fetch.
        const FETCH = 1 << 4;
    }
}

/// Bits 51:12 of a 64-bit entry or of CR3: a physical frame address.
const FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The guest's control registers that select and root its paging mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegisters {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// The kind of access the translation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkAccess {
    pub write: bool,
    /// A CPL-3 access (U/S must be set on every level).
    pub user: bool,
    /// An instruction fetch (XD must be clear on every level when EFER.NXE is set).
    pub fetch: bool,
}

impl WalkAccess {
    pub const READ: WalkAccess = WalkAccess {
        write: false,
        user: false,
        fetch: false,
    };
    pub const WRITE: WalkAccess = WalkAccess {
        write: true,
        ..Self::READ
    };
    pub const FETCH: WalkAccess = WalkAccess {
        fetch: true,
        ..Self::READ
    };

    /// The same access made at CPL 3 when `user`.
    #[must_use]
    pub const fn at_user(self, user: bool) -> WalkAccess {
        WalkAccess { user, ..self }
    }

    /// The error code of a page fault for this access.
    const fn error_code(self, flags: PageFaultErrorCode) -> PageFaultErrorCode {
        // `union` rather than `|=`: operators on flags are not `const`.
        let mut code = flags;
        if self.write {
            code = code.union(PageFaultErrorCode::WRITE);
        }
        if self.user {
            code = code.union(PageFaultErrorCode::USER);
        }
        if self.fetch {
            code = code.union(PageFaultErrorCode::FETCH);
        }
        code
    }
}

/// Why a linear address has no translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The guest itself would take a page fault with this error code (SDM vol 3 §4.7).
    PageFault { error_code: PageFaultErrorCode },
    /// A 64-bit linear address that is not canonical (the guest would take #GP or #SS).
    NonCanonical,
    /// The closure could not read the paging structure at this guest-physical address.
    Unreadable { address: u64 },
    /// 5-level paging.
    Unsupported,
}

/// One paging-structure level: where its index sits in the linear address, whether it may
/// map a page (PS) and how wide its entries are.
#[derive(Clone, Copy)]
struct Level {
    shift: u32,
    index_bits: u32,
    /// Whether PS = 1 maps a page at this level (else PS is reserved or ignored).
    page_allowed: bool,
    /// Whether PS is a reserved bit at this level (PML4E).
    page_reserved: bool,
}

/// Reads the paging entry at `address`: 8 bytes, or the low or high half of the aligned
/// 8-byte word for 4-byte entries (never crossing a page boundary).
fn read_entry(
    read_u64: &mut impl FnMut(u64) -> Option<u64>,
    address: u64,
    four_bytes: bool,
) -> Result<u64, WalkError> {
    let aligned = address & !7;
    let word = read_u64(aligned).ok_or(WalkError::Unreadable { address: aligned })?;
    Ok(if four_bytes {
        (word >> ((address & 4) * 8)) & 0xffff_ffff
    } else {
        word
    })
}

/// Translates `linear` for `access` under the guest's paging `registers`, reading paging
/// structures through `read_u64` (an 8-byte read at an 8-byte aligned guest-physical
/// address; `None` when the address is not the partition's memory). Returns the
/// guest-physical address.
pub fn translate(
    registers: &PagingRegisters,
    linear: u64,
    access: WalkAccess,
    mut read_u64: impl FnMut(u64) -> Option<u64>,
) -> Result<u64, WalkError> {
    let cr0 = Cr0::from_bits_retain(registers.cr0);
    let cr4 = Cr4::from_bits_retain(registers.cr4);
    let efer = Efer::from_bits_retain(registers.efer);
    if !cr0.contains(Cr0::PG) {
        // Without paging, linear addresses are 32 bits wide and map one to one.
        return Ok(linear & 0xffff_ffff);
    }
    let nxe = efer.contains(Efer::NXE);
    let fault = |flags: PageFaultErrorCode| WalkError::PageFault {
        error_code: access.error_code(flags),
    };
    let not_present = || fault(PageFaultErrorCode::empty());
    let reserved_bit = || fault(PageFaultErrorCode::PRESENT | PageFaultErrorCode::RESERVED);
    let protection = || fault(PageFaultErrorCode::PRESENT);

    // The root table and the levels below it, per mode.
    const PML4: Level = Level {
        shift: 39,
        index_bits: 9,
        page_allowed: false,
        page_reserved: true,
    };
    const PDPT: Level = Level {
        shift: 30,
        index_bits: 9,
        page_allowed: true,
        page_reserved: false,
    };
    const PD: Level = Level {
        shift: 21,
        index_bits: 9,
        page_allowed: true,
        page_reserved: false,
    };
    const PT: Level = Level {
        shift: 12,
        index_bits: 9,
        page_allowed: false,
        page_reserved: false,
    };
    let long_levels: &[Level] = &[PML4, PDPT, PD, PT];
    let pae_levels: &[Level] = &[PD, PT];

    let (mut table, levels, four_bytes, linear) = if !cr4.contains(Cr4::PAE) {
        // 32-bit paging: two levels of 1024 4-byte entries.
        const PD32: Level = Level {
            shift: 22,
            index_bits: 10,
            page_allowed: true,
            page_reserved: false,
        };
        const PT32: Level = Level {
            shift: 12,
            index_bits: 10,
            page_allowed: false,
            page_reserved: false,
        };
        let levels: &[Level] = &[PD32, PT32];
        (
            registers.cr3 & 0xffff_f000,
            levels,
            true,
            linear & 0xffff_ffff,
        )
    } else if !efer.contains(Efer::LMA) {
        // PAE: CR3 bits 31:5 point at four PDPTEs, which hold no access rights (§4.4.1).
        let linear = linear & 0xffff_ffff;
        let address = (registers.cr3 & 0xffff_ffe0) + (linear >> 30) * 8;
        let pdpte = read_entry(&mut read_u64, address, false)?;
        if !PageTableEntryFlags::from_bits_retain(pdpte).contains(PageTableEntryFlags::PRESENT) {
            return Err(not_present());
        }
        // Bits 2:1, 8:5 and 63 are reserved in a PDPTE.
        if pdpte & (0b110 | 0x1e0 | PageTableEntryFlags::EXECUTE_DISABLE.bits()) != 0 {
            return Err(reserved_bit());
        }
        (pdpte & FRAME_MASK, pae_levels, false, linear)
    } else {
        if cr4.contains(Cr4::LA57) {
            return Err(WalkError::Unsupported);
        }
        // Canonical: bits 63:47 all equal.
        let upper = linear >> 47;
        if upper != 0 && upper != 0x1_ffff {
            return Err(WalkError::NonCanonical);
        }
        (registers.cr3 & FRAME_MASK, long_levels, false, linear)
    };

    let mut writable = true;
    let mut user = true;
    let mut execute_disabled = false;
    let mut mapped = None;
    for level in levels {
        let index = (linear >> level.shift) & ((1 << level.index_bits) - 1);
        let entry_size = if four_bytes { 4 } else { 8 };
        let entry = read_entry(&mut read_u64, table + index * entry_size, four_bytes)?;
        let flags = PageTableEntryFlags::from_bits_retain(entry);
        if !flags.contains(PageTableEntryFlags::PRESENT) {
            return Err(not_present());
        }
        let page_size = flags.contains(PageTableEntryFlags::PAGE_SIZE);
        let execute_disable = flags.contains(PageTableEntryFlags::EXECUTE_DISABLE);
        let reserved =
            (level.page_reserved && page_size) || (!four_bytes && !nxe && execute_disable);
        if reserved {
            return Err(reserved_bit());
        }
        writable &= flags.contains(PageTableEntryFlags::WRITABLE);
        user &= flags.contains(PageTableEntryFlags::USER);
        execute_disabled |= nxe && !four_bytes && execute_disable;
        let large = level.page_allowed && page_size;
        let large = large && (!four_bytes || cr4.contains(Cr4::PSE));
        if large || level.shift == 12 {
            let offset_mask = (1u64 << level.shift) - 1;
            let frame = if four_bytes && large {
                // 4 MiB page: bits 31:22, and PSE-36 bits 39:32 from entry bits 20:13.
                (entry & 0xffc0_0000) | ((entry >> 13) & 0xff) << 32
            } else if four_bytes {
                entry & 0xffff_f000
            } else {
                // Large-page frames keep the PAT bit (12) out of the address.
                entry & FRAME_MASK & !offset_mask
            };
            mapped = Some(frame | (linear & offset_mask));
            break;
        }
        table = if four_bytes {
            entry & 0xffff_f000
        } else {
            entry & FRAME_MASK
        };
    }
    let Some(physical) = mapped else {
        // Unreachable: the last level always maps.
        return Err(not_present());
    };

    // Access rights (SDM vol 3 §4.6): supervisor writes honour CR0.WP.
    if access.user && !user {
        return Err(protection());
    }
    if access.write && !writable && (access.user || cr0.contains(Cr0::WP)) {
        return Err(protection());
    }
    if access.fetch && execute_disabled {
        return Err(protection());
    }
    Ok(physical)
}

/// Whether linear addresses wrap at 4 GiB in this mode (everything but long mode).
fn linear_is_32_bit(registers: &PagingRegisters) -> bool {
    !Cr0::from_bits_retain(registers.cr0).contains(Cr0::PG)
        || !Efer::from_bits_retain(registers.efer).contains(Efer::LMA)
}

/// Fills `buffer` with the guest's bytes at `linear` and on, translating each page it touches
/// separately (an instruction may straddle two pages with unrelated physical frames).
/// On error nothing is guaranteed about `buffer`'s contents.
pub fn read_guest_bytes(
    registers: &PagingRegisters,
    linear: u64,
    access: WalkAccess,
    buffer: &mut [u8],
    mut read_u64: impl FnMut(u64) -> Option<u64>,
) -> Result<(), WalkError> {
    let wrap = if linear_is_32_bit(registers) {
        0xffff_ffff
    } else {
        u64::MAX
    };
    let mut done = 0;
    while done < buffer.len() {
        let address = linear.wrapping_add(done as u64) & wrap;
        let physical = translate(registers, address, access, &mut read_u64)?;
        let in_page = (0x1000 - (address & 0xfff)) as usize;
        let chunk = in_page.min(buffer.len() - done);
        for (offset, byte) in buffer[done..done + chunk].iter_mut().enumerate() {
            let address = physical + offset as u64;
            let word = read_u64(address & !7).ok_or(WalkError::Unreadable {
                address: address & !7,
            })?;
            *byte = (word >> ((address & 7) * 8)) as u8;
        }
        done += chunk;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Guest memory as 8-byte words; anything not written is unreadable.
    #[derive(Default)]
    struct Memory(HashMap<u64, u64>);

    impl Memory {
        fn write_u64(&mut self, address: u64, value: u64) {
            assert_eq!(address % 8, 0);
            self.0.insert(address, value);
        }

        /// Makes a page of paging structures readable, all entries zero (not present).
        fn zero_page(&mut self, base: u64) {
            for offset in (0..0x1000).step_by(8) {
                self.0.entry(base + offset).or_insert(0);
            }
        }

        fn write_u32(&mut self, address: u64, value: u32) {
            let aligned = address & !7;
            let shift = (address & 4) * 8;
            let word = self.0.get(&aligned).copied().unwrap_or(0);
            let word = (word & !(0xffff_ffff << shift)) | u64::from(value) << shift;
            self.0.insert(aligned, word);
        }

        fn write_bytes(&mut self, address: u64, bytes: &[u8]) {
            for (offset, &byte) in bytes.iter().enumerate() {
                let address = address + offset as u64;
                let aligned = address & !7;
                let shift = (address & 7) * 8;
                let word = self.0.get(&aligned).copied().unwrap_or(0);
                self.0.insert(
                    aligned,
                    (word & !(0xff << shift)) | u64::from(byte) << shift,
                );
            }
        }

        fn reader(&self) -> impl FnMut(u64) -> Option<u64> + '_ {
            |address| {
                assert_eq!(address % 8, 0, "unaligned read {address:#x}");
                self.0.get(&address).copied()
            }
        }
    }

    const P: u64 = PageTableEntryFlags::PRESENT.bits();
    const RW: u64 = PageTableEntryFlags::WRITABLE.bits();
    const US: u64 = PageTableEntryFlags::USER.bits();
    const PS: u64 = PageTableEntryFlags::PAGE_SIZE.bits();

    fn long_mode() -> PagingRegisters {
        PagingRegisters {
            cr0: (Cr0::PG | Cr0::WP).bits() | 1,
            cr3: 0x1000,
            cr4: Cr4::PAE.bits(),
            efer: Efer::LMA.bits() | (1 << 8) | Efer::NXE.bits(),
        }
    }

    /// PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000:
    /// * 0x40_5000 (PD[2], PT[5]) -> 0x9000, read-only, user, XD;
    /// * 0x40_6000 (PD[2], PT[6]) -> 0xa000, writable, supervisor;
    /// * 0x2000_0000 (PD[256]) a 2 MiB page at 0x20_0000_0000, with the PAT bit set;
    /// * 0x4000_0000 (PDPT[1]) a 1 GiB page at 0x8000_0000, supervisor;
    /// * 0xffff_8000_0000_0000 (PML4[256]) not present.
    fn long_mode_memory() -> Memory {
        let mut memory = Memory::default();
        for table in [0x1000, 0x2000, 0x3000, 0x4000] {
            memory.zero_page(table);
        }
        memory.write_u64(0x1000, 0x2000 | P | RW | US);
        memory.write_u64(0x2000, 0x3000 | P | RW | US);
        memory.write_u64(0x2000 + 8, 0x8000_0000 | P | RW | PS);
        memory.write_u64(0x3000 + 2 * 8, 0x4000 | P | RW | US);
        memory.write_u64(
            0x4000 + 5 * 8,
            0x9000 | P | US | PageTableEntryFlags::EXECUTE_DISABLE.bits(),
        );
        memory.write_u64(0x4000 + 6 * 8, 0xa000 | P | RW);
        memory.write_u64(0x3000 + 256 * 8, 0x20_0000_0000 | P | RW | PS | 1 << 12);
        memory
    }

    #[test]
    fn paging_off_is_identity_below_4_gib() {
        let registers = PagingRegisters::default();
        let fail = |_| -> Option<u64> { panic!("no tables without paging") };
        assert_eq!(
            translate(&registers, 0xfee0_0010, WalkAccess::READ, fail),
            Ok(0xfee0_0010)
        );
        assert_eq!(
            translate(&registers, 0x1_0000_0010, WalkAccess::WRITE, fail),
            Ok(0x10)
        );
    }

    #[test]
    fn four_level_pages() {
        let memory = long_mode_memory();
        let registers = long_mode();
        let read = WalkAccess::READ;
        assert_eq!(
            translate(&registers, 0x40_5123, read, memory.reader()),
            Ok(0x9123)
        );
        // 2 MiB page; the PAT bit is not an address bit.
        assert_eq!(
            translate(&registers, 0x2012_3456, read, memory.reader()),
            Ok(0x20_0012_3456)
        );
        // 1 GiB page.
        assert_eq!(
            translate(&registers, 0x7654_3210, read, memory.reader()),
            Ok(0x8000_0000 + 0x3654_3210)
        );
        // Not present at the PML4, PDPT, PD and PT levels.
        for linear in [0xffff_8000_0000_0000u64, 0x8000_0000, 0x60_0000, 0x40_7000] {
            assert_eq!(
                translate(&registers, linear, read, memory.reader()),
                Err(WalkError::PageFault {
                    error_code: PageFaultErrorCode::empty()
                }),
                "{linear:#x}"
            );
        }
        // Non-canonical, and 5-level paging.
        assert_eq!(
            translate(&registers, 0x0000_8000_0000_0000, read, memory.reader()),
            Err(WalkError::NonCanonical)
        );
        let la57 = PagingRegisters {
            cr4: (Cr4::PAE | Cr4::LA57).bits(),
            ..registers
        };
        assert_eq!(
            translate(&la57, 0x40_5123, read, memory.reader()),
            Err(WalkError::Unsupported)
        );
    }

    #[test]
    fn access_rights() {
        let memory = long_mode_memory();
        let registers = long_mode();
        let page_fault = |error_code| Err(WalkError::PageFault { error_code });
        // 0x40_5000: user, read-only, execute-disabled.
        let user_read = WalkAccess::READ.at_user(true);
        assert_eq!(
            translate(&registers, 0x40_5000, user_read, memory.reader()),
            Ok(0x9000)
        );
        assert_eq!(
            translate(&registers, 0x40_5000, WalkAccess::WRITE, memory.reader()),
            page_fault(PageFaultErrorCode::PRESENT | PageFaultErrorCode::WRITE)
        );
        assert_eq!(
            translate(&registers, 0x40_5000, WalkAccess::FETCH, memory.reader()),
            page_fault(PageFaultErrorCode::PRESENT | PageFaultErrorCode::FETCH)
        );
        // Without CR0.WP a supervisor write to a read-only page succeeds; a user one does not.
        let no_wp = PagingRegisters {
            cr0: registers.cr0 & !Cr0::WP.bits(),
            ..registers
        };
        assert_eq!(
            translate(&no_wp, 0x40_5000, WalkAccess::WRITE, memory.reader()),
            Ok(0x9000)
        );
        assert_eq!(
            translate(
                &no_wp,
                0x40_5000,
                WalkAccess::WRITE.at_user(true),
                memory.reader()
            ),
            page_fault(
                PageFaultErrorCode::PRESENT | PageFaultErrorCode::WRITE | PageFaultErrorCode::USER
            )
        );
        // 0x40_6000: supervisor only.
        assert_eq!(
            translate(&registers, 0x40_6000, WalkAccess::FETCH, memory.reader()),
            Ok(0xa000)
        );
        assert_eq!(
            translate(&registers, 0x40_6000, user_read, memory.reader()),
            page_fault(PageFaultErrorCode::PRESENT | PageFaultErrorCode::USER)
        );
        // Without EFER.NXE the XD bit is reserved.
        let no_nxe = PagingRegisters {
            efer: registers.efer & !Efer::NXE.bits(),
            ..registers
        };
        assert_eq!(
            translate(&no_nxe, 0x40_5000, WalkAccess::READ, memory.reader()),
            page_fault(PageFaultErrorCode::PRESENT | PageFaultErrorCode::RESERVED)
        );
    }

    #[test]
    fn reserved_and_unreadable_entries() {
        let mut memory = long_mode_memory();
        let registers = long_mode();
        // PS in a PML4E is reserved.
        memory.write_u64(0x1000 + 8, 0x5000 | P | RW | PS);
        assert_eq!(
            translate(
                &registers,
                0x80_0000_0000,
                WalkAccess::READ,
                memory.reader()
            ),
            Err(WalkError::PageFault {
                error_code: PageFaultErrorCode::PRESENT | PageFaultErrorCode::RESERVED
            })
        );
        // A table the closure cannot read (outside the partition).
        memory.write_u64(0x1000 + 16, 0x7000_0000 | P | RW);
        assert_eq!(
            translate(
                &registers,
                0x100_0000_0000,
                WalkAccess::READ,
                memory.reader()
            ),
            Err(WalkError::Unreadable {
                address: 0x7000_0000
            })
        );
    }

    #[test]
    fn pae_paging() {
        let mut memory = Memory::default();
        for table in [0x1000, 0x3000, 0x4000, 0x5000] {
            memory.zero_page(table);
        }
        // CR3 at 0x1020 (32-byte aligned): PDPTE[0] -> PD 0x3000, PDPTE[3] -> PD 0x5000.
        memory.write_u64(0x1020, 0x3000 | P);
        memory.write_u64(0x1020 + 8, 0);
        memory.write_u64(0x1020 + 24, 0x5000 | P);
        memory.write_u64(0x3000 + 8, 0x4000 | P | RW);
        memory.write_u64(0x4000 + 3 * 8, 0x1_2345_6000 | P | RW);
        memory.write_u64(0x5000 + 511 * 8, 0xfe00_0000 | P | RW | PS);
        let registers = PagingRegisters {
            cr0: Cr0::PG.bits() | 1,
            cr3: 0x1020,
            cr4: Cr4::PAE.bits(),
            efer: 0,
        };
        let read = WalkAccess::READ;
        assert_eq!(
            translate(&registers, 0x0020_3abc, read, memory.reader()),
            Ok(0x1_2345_6abc)
        );
        assert_eq!(
            translate(&registers, 0xffe1_2345, read, memory.reader()),
            Ok(0xfe01_2345)
        );
        // Upper bits of a 32-bit linear address are ignored.
        assert_eq!(
            translate(&registers, 0x1_0020_3abc, read, memory.reader()),
            Ok(0x1_2345_6abc)
        );
        // PDPTE 1 is not present; R/W in a PDPTE is reserved.
        let not_present = Err(WalkError::PageFault {
            error_code: PageFaultErrorCode::empty(),
        });
        assert_eq!(
            translate(&registers, 0x4000_0000, read, memory.reader()),
            not_present
        );
        memory.write_u64(0x1020 + 16, 0x6000 | P | RW);
        assert_eq!(
            translate(&registers, 0x8000_0000, read, memory.reader()),
            Err(WalkError::PageFault {
                error_code: PageFaultErrorCode::PRESENT | PageFaultErrorCode::RESERVED
            })
        );
        // XD without NXE is reserved in PAE entries too.
        memory.write_u64(
            0x4000 + 4 * 8,
            0x7000 | P | PageTableEntryFlags::EXECUTE_DISABLE.bits(),
        );
        assert_eq!(
            translate(&registers, 0x0020_4000, read, memory.reader()),
            Err(WalkError::PageFault {
                error_code: PageFaultErrorCode::PRESENT | PageFaultErrorCode::RESERVED
            })
        );
    }

    #[test]
    fn thirty_two_bit_paging() {
        let mut memory = Memory::default();
        memory.zero_page(0x1000);
        memory.zero_page(0x2000);
        // PD at 0x1000; PDE[1] -> PT 0x2000 (an odd entry: high half of a word);
        // PDE[0x3f8] a 4 MiB page at 0x1_fec0_0000 (PSE-36 bits 39:32 = 1).
        memory.write_u32(0x1000 + 4, 0x2000 | P as u32 | RW as u32);
        memory.write_u32(0x2000 + 3 * 4, 0x0abc_d000 | P as u32);
        memory.write_u32(
            0x1000 + 0x3fb * 4,
            0xfec0_0000 | (1 << 13) | (P | RW | PS) as u32,
        );
        let registers = PagingRegisters {
            cr0: (Cr0::PG | Cr0::WP).bits() | 1,
            cr3: 0x1000,
            cr4: Cr4::PSE.bits(),
            efer: 0,
        };
        let read = WalkAccess::READ;
        assert_eq!(
            translate(&registers, 0x0040_3123, read, memory.reader()),
            Ok(0x0abc_d123)
        );
        assert_eq!(
            translate(&registers, 0xfec0_0020, read, memory.reader()),
            Ok(0x1_fec0_0020)
        );
        // Read-only 4 KiB page with CR0.WP.
        assert_eq!(
            translate(&registers, 0x0040_3123, WalkAccess::WRITE, memory.reader()),
            Err(WalkError::PageFault {
                error_code: PageFaultErrorCode::PRESENT | PageFaultErrorCode::WRITE
            })
        );
        // Without CR4.PSE the PS bit is ignored: the PDE points at a page table (bits 31:12).
        let no_pse = PagingRegisters {
            cr4: 0,
            ..registers
        };
        assert_eq!(
            translate(&no_pse, 0xfec0_0020, read, memory.reader()),
            Err(WalkError::Unreadable {
                address: 0xfec0_2000
            })
        );
        // Bit 63 means nothing in 4-byte entries, and reads never leave the aligned word.
        assert_eq!(
            translate(&registers, 0x0000_0000, read, memory.reader()),
            Err(WalkError::PageFault {
                error_code: PageFaultErrorCode::empty()
            })
        );
    }

    #[test]
    fn reads_across_a_page_boundary() {
        let mut memory = long_mode_memory();
        // 0x40_5000 -> 0x9000 and 0x40_6000 -> 0xa000: an instruction at 0x40_5ffd.
        memory.write_bytes(0x9ff8, &[0, 0, 0, 0, 0, 0x48, 0x8b, 0x05]);
        memory.write_bytes(0xa000, &[0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0]);
        memory.write_bytes(0xaff8, &[0; 8]);
        let registers = long_mode();
        let mut buffer = [0u8; 7];
        assert_eq!(
            read_guest_bytes(
                &registers,
                0x40_5ffd,
                WalkAccess::READ,
                &mut buffer,
                memory.reader()
            ),
            Ok(())
        );
        assert_eq!(buffer, [0x48, 0x8b, 0x05, 0x78, 0x56, 0x34, 0x12]);
        // The second page is unmapped: the read fails rather than returning half.
        let mut buffer = [0u8; 7];
        assert_eq!(
            read_guest_bytes(
                &registers,
                0x40_6ffd,
                WalkAccess::READ,
                &mut buffer,
                memory.reader()
            ),
            Err(WalkError::PageFault {
                error_code: PageFaultErrorCode::empty()
            })
        );
        // An empty buffer needs no translation.
        assert_eq!(
            read_guest_bytes(
                &registers,
                0x0000_8000_0000_0000,
                WalkAccess::READ,
                &mut [],
                memory.reader()
            ),
            Ok(())
        );
        // Paging off: identity, wrapping at 4 GiB.
        let mut flat = Memory::default();
        flat.write_bytes(0xffff_fff8, &[1, 2, 3, 4, 5, 6, 7, 8]);
        flat.write_bytes(0, &[9, 10]);
        let mut buffer = [0u8; 4];
        assert_eq!(
            read_guest_bytes(
                &PagingRegisters::default(),
                0xffff_fffe,
                WalkAccess::FETCH,
                &mut buffer,
                flat.reader()
            ),
            Ok(())
        );
        assert_eq!(buffer, [7, 8, 9, 10]);
    }
}
