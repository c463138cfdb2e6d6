//! Decoding the MOV instruction behind a trapped MMIO access: its length, the bytes it
//! accesses, the register or immediate involved and its memory operand, from which
//! [`MmioInstruction::linear_address`] computes the address the instruction accesses and
//! [`locate`] checks that this access is exactly the one that faulted.
//!
//! AMD SVM without decode assists (QEMU TCG) reports only the faulting guest-physical address
//! of a nested page fault, so the hypervisor fetches the instruction bytes itself (see
//! [`crate::guest_walk`]) and decodes them here. Only the forms guests use for device
//! registers are accepted (Intel SDM vol 2 "MOV", "MOVZX"; AMD APM vol 3):
//!
//! * `88 /r`, `89 /r`: store r8 / r16 / r32 / r64 to memory;
//! * `8A /r`, `8B /r`: load r8 / r16 / r32 / r64 from memory;
//! * `C6 /0 ib`, `C7 /0 iw/id`: store an immediate (imm32 sign-extended for 64-bit stores);
//! * `0F B6 /r`, `0F B7 /r`: load a byte / word, zero-extended (MOVZX);
//! * `A0`–`A3`: load / store AL or eAX at an absolute offset (moffs).
//!
//! Prefixes (SDM vol 2 §2.1.1, §2.2.1): 0x66 (operand size), 0x67 (address size), the six
//! segment overrides (the last one counts) and, in 64-bit mode, one REX prefix immediately
//! before the opcode (a REX followed by another prefix is ignored, as by the processor).
//! LOCK, REP/REPNE (which also encode XACQUIRE/XRELEASE) and everything else are refused.
//! The ModRM, SIB and displacement bytes are decoded into a [`MemoryOperand`] (SDM vol 2
//! §2.1.5, tables 2-1 to 2-3; REX.X/REX.B §2.2.1.2; RIP-relative addressing §2.2.1.6).
//! Input that is not such an instruction, or is cut short, is an error; nothing panics.
//!
//! Why the address matters: a fault reports only the first byte of the access that lies in
//! the trapped page. A store that starts in the guest's RAM just below the page and ends
//! inside it, or starts inside it and runs into the next page, faults at an address that is
//! not where the instruction begins its access; emulating it there would write the wrong
//! register with the wrong bytes and drop the bytes meant for RAM. [`locate`] refuses every
//! access whose linear address does not have the faulting address's page offset, and every
//! access that does not end inside the page.

/// The processor mode the instruction executes in, which sets the default operand and
/// address sizes (SDM vol 1 §3.6). `Protected32` is any code segment with D = 1 (including
/// 32-bit compatibility mode), `Real16` any 16-bit code segment (real, virtual-8086 or
/// 16-bit protected mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    Real16,
    Protected32,
    Long64,
}

/// Why bytes are not a supported MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// More than 15 bytes (SDM vol 2 §2.3.11): the processor raises #GP.
    TooLong,
    /// LOCK, REP/REPNE or another prefix the MMIO path does not accept.
    UnsupportedPrefix(u8),
    /// Not one of the MOV forms; two-byte opcodes are given as `0x0Fxx`.
    UnsupportedOpcode(u16),
    /// ModRM names a register, not memory: such an instruction cannot access MMIO.
    RegisterOperand,
    /// `C6` / `C7` with a ModRM reg field other than 0 (not a MOV).
    InvalidEncoding,
}

/// Where a store takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreSource {
    /// General-purpose register 0 = RAX … 15 = R15, its low `size` bytes.
    Register(u8),
    /// Bits 15:8 of register 0–3 (AH, CH, DH, BH), only without a REX prefix.
    HighByteRegister(u8),
    /// The immediate, already sized: zero-extended for 1-, 2- and 4-byte stores,
    /// sign-extended from 32 bits for 8-byte stores.
    Immediate(u64),
}

/// The direction of the access and the register involved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioAccess {
    /// The `size` bytes read go to `register` (0 = RAX … 15 = R15), or to its bits 15:8 when
    /// `high_byte` (AH, CH, DH, BH for registers 0–3). `zero_extend_to` is the width written
    /// (1, 2, 4 or 8 bytes; larger than `size` only for MOVZX); see [`apply_load`].
    Load {
        register: u8,
        high_byte: bool,
        zero_extend_to: u8,
    },
    Store {
        source: StoreSource,
    },
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInstruction {
    /// Bytes of the instruction, prefixes included: the amount to advance RIP by.
    pub length: u8,
    /// Bytes accessed in memory: 1, 2, 4 or 8.
    pub size: u8,
    pub access: MmioAccess,
    /// Where the access goes, as the instruction encodes it.
    pub operand: MemoryOperand,
}

/// The six segment registers in their encoding order (SDM vol 2 §3.1.1.3 "Sreg"), which is
/// also the order of [`SegmentBases`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

/// The bases of ES, CS, SS, DS, FS and GS, in [`Segment`] order.
pub type SegmentBases = [u64; 6];

/// A memory operand: `segment: [base + index * scale + displacement]`, or RIP-relative,
/// computed in `address_size` bytes (SDM vol 1 §3.7.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOperand {
    /// General-purpose register 0 = RAX … 15 = R15 (in 16-bit addressing BX, BP, SI, DI).
    pub base: Option<u8>,
    pub index: Option<u8>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
    /// Sign-extended (a moffs is zero-extended: it is an absolute offset).
    pub displacement: u64,
    /// `[rip + disp32]`: relative to the next instruction (SDM vol 2 §2.2.1.6).
    pub rip_relative: bool,
    /// The override prefix, or the default: SS for BP/SP-based forms, DS otherwise (SDM vol
    /// 1 §3.7.4 table 3-5).
    pub segment: Segment,
    /// 2, 4 or 8 bytes: the effective address wraps at this width.
    pub address_size: u8,
}

impl MemoryOperand {
    /// The effective address (the offset in the segment), given the general-purpose
    /// registers by number and the address of the next instruction (RIP after it, for
    /// RIP-relative operands).
    pub fn effective_address(&self, register: impl Fn(u8) -> u64, next_rip: u64) -> u64 {
        let mut address = self.displacement;
        if self.rip_relative {
            address = address.wrapping_add(next_rip);
        }
        if let Some(base) = self.base {
            address = address.wrapping_add(register(base));
        }
        if let Some(index) = self.index {
            address = address.wrapping_add(register(index).wrapping_mul(u64::from(self.scale)));
        }
        address & mask(self.address_size)
    }
}

/// Why an access is not exactly one the fault describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessMismatch {
    /// The instruction's access begins at another page offset than the faulting address: it
    /// started in another page and crossed into this one (or the guest changed its code or
    /// registers in between).
    Elsewhere,
    /// The access begins at the faulting address but its last byte lies in the next page.
    CrossesPage,
}

/// The page offset of an access of `size` bytes at `linear` (the decoded instruction's
/// linear address) that faulted at `guest_physical`, if the whole access lies in the
/// faulting page and begins at the faulting byte. Paging keeps the low 12 bits of an
/// address (SDM vol 3A §4.3–4.5, every page size is a multiple of 4 KiB), so the linear
/// and guest-physical addresses of the same byte have the same page offset.
pub fn locate(linear: u64, size: u8, guest_physical: u64) -> Result<u64, AccessMismatch> {
    let offset = guest_physical & 0xfff;
    if linear & 0xfff != offset {
        return Err(AccessMismatch::Elsewhere);
    }
    if offset + u64::from(size) > 0x1000 {
        return Err(AccessMismatch::CrossesPage);
    }
    Ok(offset)
}

impl MmioInstruction {
    /// The linear address of the first byte accessed (SDM vol 3A §3.4): the segment's base
    /// plus the effective address, truncated to 32 bits outside 64-bit mode; in 64-bit mode
    /// only FS and GS have a base (SDM vol 1 §3.7.4.1). `next_rip` is RIP after the
    /// instruction (`rip + length`).
    pub fn linear_address(
        &self,
        mode: CpuMode,
        register: impl Fn(u8) -> u64,
        next_rip: u64,
        segment_bases: &SegmentBases,
    ) -> u64 {
        let offset = self.operand.effective_address(register, next_rip);
        let segment = self.operand.segment;
        match mode {
            CpuMode::Long64 if matches!(segment, Segment::Fs | Segment::Gs) => {
                segment_bases[segment as usize].wrapping_add(offset)
            }
            CpuMode::Long64 => offset,
            CpuMode::Protected32 | CpuMode::Real16 => {
                segment_bases[segment as usize].wrapping_add(offset) & 0xffff_ffff
            }
        }
    }

    /// For a load: the register's new value once `value` (the bytes read, little-endian) is
    /// loaded into a register holding `old`. `None` for a store.
    pub fn load_result(&self, old: u64, value: u64) -> Option<u64> {
        match self.access {
            MmioAccess::Load {
                high_byte: true, ..
            } => Some((old & !0xff00) | (value & 0xff) << 8),
            MmioAccess::Load { zero_extend_to, .. } => {
                Some(apply_load(old, value, self.size, zero_extend_to))
            }
            MmioAccess::Store { .. } => None,
        }
    }

    /// For a store: the `size` bytes to write (little-endian in the low bytes), given the
    /// value of a general-purpose register by number. `None` for a load.
    pub fn store_value(&self, register: impl FnOnce(u8) -> u64) -> Option<u64> {
        let value = match self.access {
            MmioAccess::Store {
                source: StoreSource::Register(number),
            } => register(number),
            MmioAccess::Store {
                source: StoreSource::HighByteRegister(number),
            } => register(number) >> 8,
            MmioAccess::Store {
                source: StoreSource::Immediate(value),
            } => value,
            MmioAccess::Load { .. } => return None,
        };
        Some(value & mask(self.size))
    }
}

/// All ones in the low `size` bytes (all 64 bits from 8 on).
const fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// The new value of a register holding `old` after loading `size` bytes of `value` into its
/// low `zero_extend_to` bytes, zero-extended (SDM vol 1 §3.4.1.1): a 4-byte destination
/// clears bits 63:32, 1- and 2-byte destinations keep the bits above them, 8 bytes replace
/// everything.
pub const fn apply_load(old: u64, value: u64, size: u8, zero_extend_to: u8) -> u64 {
    let loaded = value & mask(size);
    match zero_extend_to {
        4 | 8 => loaded & mask(zero_extend_to),
        _ => (old & !mask(zero_extend_to)) | (loaded & mask(zero_extend_to)),
    }
}

/// The longest legal instruction (SDM vol 2 §2.3.11).
pub const MAX_LENGTH: usize = 15;

/// Reads bytes in order, failing on truncation and on the 15-byte limit.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.position >= MAX_LENGTH {
            return Err(DecodeError::TooLong);
        }
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or(DecodeError::Truncated)?;
        self.position += 1;
        Ok(byte)
    }

    /// `count` bytes as a little-endian number (count ≤ 8).
    fn little_endian(&mut self, count: usize) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for index in 0..count {
            value |= u64::from(self.next()?) << (8 * index);
        }
        Ok(value)
    }
}

/// The REX bits (SDM vol 2 §2.2.1.2): W (64-bit operand), R (extends ModRM.reg), X (extends
/// SIB.index), B (extends ModRM.rm and SIB.base).
#[derive(Clone, Copy, Default)]
struct Rex {
    present: bool,
    w: bool,
    r: bool,
    x: bool,
    b: bool,
}

impl Rex {
    fn from_byte(byte: u8) -> Rex {
        Rex {
            present: true,
            w: byte & 8 != 0,
            r: byte & 4 != 0,
            x: byte & 2 != 0,
            b: byte & 1 != 0,
        }
    }
}

/// Register numbers of the 16-bit addressing forms.
const BX: u8 = 3;
const BP: u8 = 5;
const SI: u8 = 6;
const DI: u8 = 7;
/// RSP and RBP as base registers select SS by default.
const RSP_NUMBER: u8 = 4;

/// A sign-extended displacement of `count` bytes.
fn displacement(cursor: &mut Cursor<'_>, count: usize) -> Result<u64, DecodeError> {
    let value = cursor.little_endian(count)?;
    Ok(match count {
        1 => value as u8 as i8 as i64 as u64,
        2 => value as u16 as i16 as i64 as u64,
        4 => value as u32 as i32 as i64 as u64,
        _ => value,
    })
}

/// How the instruction addresses memory, as far as the prefixes tell.
#[derive(Clone, Copy)]
struct Addressing {
    mode: CpuMode,
    address_size: u8,
    segment_override: Option<Segment>,
    rex: Rex,
}

impl Addressing {
    fn operand(&self, base: Option<u8>, index: Option<u8>, scale: u8) -> MemoryOperand {
        let stack_based = matches!(base, Some(BP) | Some(RSP_NUMBER));
        MemoryOperand {
            base,
            index,
            scale,
            displacement: 0,
            rip_relative: false,
            segment: self.segment_override.unwrap_or(if stack_based {
                Segment::Ss
            } else {
                Segment::Ds
            }),
            address_size: self.address_size,
        }
    }
}

/// Decodes the ModRM byte, SIB byte and displacement of a memory operand; returns the ModRM
/// reg field (without REX.R) and the operand. Fails for a register operand.
fn memory_operand(
    cursor: &mut Cursor<'_>,
    addressing: &Addressing,
) -> Result<(u8, MemoryOperand), DecodeError> {
    let modrm = cursor.next()?;
    let mode = modrm >> 6;
    let reg = (modrm >> 3) & 7;
    let rm = modrm & 7;
    if mode == 0b11 {
        return Err(DecodeError::RegisterOperand);
    }
    if addressing.address_size == 2 {
        // 16-bit addressing (SDM vol 2 table 2-1): no SIB; [disp16] for mod 00 r/m 110; BP
        // forms use SS.
        let (base, index) = match rm {
            0b000 => (Some(BX), Some(SI)),
            0b001 => (Some(BX), Some(DI)),
            0b010 => (Some(BP), Some(SI)),
            0b011 => (Some(BP), Some(DI)),
            0b100 => (Some(SI), None),
            0b101 => (Some(DI), None),
            0b110 if mode == 0b00 => (None, None),
            0b110 => (Some(BP), None),
            _ => (Some(BX), None),
        };
        let size = match (mode, rm) {
            (0b00, 0b110) | (0b10, _) => 2,
            (0b01, _) => 1,
            _ => 0,
        };
        let mut operand = addressing.operand(base, index, 1);
        operand.displacement = displacement(cursor, size)?;
        return Ok((reg, operand));
    }
    // 32/64-bit addressing (tables 2-2, 2-3); REX.B does not change these special cases.
    let rex = addressing.rex;
    let extend = |bit: bool, number: u8| number | if bit { 8 } else { 0 };
    let mut size = match mode {
        0b01 => 1,
        0b10 => 4,
        _ => 0,
    };
    let mut rip_relative = false;
    let (base, index, scale) = if rm == 0b100 {
        let sib = cursor.next()?;
        let index = extend(rex.x, (sib >> 3) & 7);
        // Index 100 without REX.X means none (R12 with it).
        let index = (index != RSP_NUMBER).then_some(index);
        let base = if mode == 0b00 && sib & 7 == 0b101 {
            size = 4; // no base, disp32
            None
        } else {
            Some(extend(rex.b, sib & 7))
        };
        (base, index, 1 << (sib >> 6))
    } else if mode == 0b00 && rm == 0b101 {
        size = 4; // disp32, RIP-relative in 64-bit mode
        rip_relative = addressing.mode == CpuMode::Long64;
        (None, None, 1)
    } else {
        (Some(extend(rex.b, rm)), None, 1)
    };
    let mut operand = addressing.operand(base, index, scale);
    operand.displacement = displacement(cursor, size)?;
    operand.rip_relative = rip_relative;
    Ok((reg, operand))
}

/// Decodes the MMIO instruction at the start of `bytes` (at most [`MAX_LENGTH`] are looked
/// at) executing in `mode`.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<MmioInstruction, DecodeError> {
    let mut cursor = Cursor { bytes, position: 0 };
    let mut operand_override = false;
    let mut address_override = false;
    let mut segment_override = None;
    let mut rex = Rex::default();
    let opcode = loop {
        let byte = cursor.next()?;
        match byte {
            0x66 => operand_override = true,
            0x67 => address_override = true,
            0x26 => segment_override = Some(Segment::Es),
            0x2e => segment_override = Some(Segment::Cs),
            0x36 => segment_override = Some(Segment::Ss),
            0x3e => segment_override = Some(Segment::Ds),
            0x64 => segment_override = Some(Segment::Fs),
            0x65 => segment_override = Some(Segment::Gs),
            0xf0 | 0xf2 | 0xf3 => return Err(DecodeError::UnsupportedPrefix(byte)),
            0x40..=0x4f if mode == CpuMode::Long64 => {
                rex = Rex::from_byte(byte);
                continue;
            }
            _ => break byte,
        }
        // A REX prefix counts only immediately before the opcode (SDM vol 2 §2.2.1).
        rex = Rex::default();
    };

    let operand_size: u8 = match mode {
        CpuMode::Long64 if rex.w => 8,
        CpuMode::Long64 | CpuMode::Protected32 if operand_override => 2,
        CpuMode::Long64 | CpuMode::Protected32 => 4,
        CpuMode::Real16 if operand_override => 4,
        CpuMode::Real16 => 2,
    };
    let address_size: u8 = match (mode, address_override) {
        (CpuMode::Long64, false) => 8,
        (CpuMode::Long64, true) | (CpuMode::Protected32, false) | (CpuMode::Real16, true) => 4,
        (CpuMode::Protected32, true) | (CpuMode::Real16, false) => 2,
    };
    let addressing = Addressing {
        mode,
        address_size,
        segment_override,
        rex,
    };
    // ModRM.reg extended by REX.R; byte registers 4–7 without REX are AH, CH, DH, BH.
    let register = |reg: u8| reg | if rex.r { 8 } else { 0 };
    let byte_register_is_high = |reg: u8| !rex.present && (4..8).contains(&reg);

    let (size, access, operand) = match opcode {
        0x88 | 0x8a => {
            let (reg, operand) = memory_operand(&mut cursor, &addressing)?;
            let high = byte_register_is_high(reg);
            let number = if high { reg - 4 } else { register(reg) };
            let access = if opcode == 0x88 {
                MmioAccess::Store {
                    source: if high {
                        StoreSource::HighByteRegister(number)
                    } else {
                        StoreSource::Register(number)
                    },
                }
            } else {
                MmioAccess::Load {
                    register: number,
                    high_byte: high,
                    zero_extend_to: 1,
                }
            };
            (1, access, operand)
        }
        0x89 | 0x8b => {
            let (reg, operand) = memory_operand(&mut cursor, &addressing)?;
            let reg = register(reg);
            let access = if opcode == 0x89 {
                MmioAccess::Store {
                    source: StoreSource::Register(reg),
                }
            } else {
                MmioAccess::Load {
                    register: reg,
                    high_byte: false,
                    zero_extend_to: operand_size,
                }
            };
            (operand_size, access, operand)
        }
        0xc6 | 0xc7 => {
            let (reg, operand) = memory_operand(&mut cursor, &addressing)?;
            if reg != 0 {
                return Err(DecodeError::InvalidEncoding);
            }
            let size = if opcode == 0xc6 { 1 } else { operand_size };
            let immediate = match size {
                1 => cursor.little_endian(1)?,
                2 => cursor.little_endian(2)?,
                4 => cursor.little_endian(4)?,
                _ => cursor.little_endian(4)? as u32 as i32 as i64 as u64,
            };
            let source = StoreSource::Immediate(immediate);
            (size, MmioAccess::Store { source }, operand)
        }
        0xa0..=0xa3 => {
            // moffs: an absolute offset of the address size, no ModRM (SDM vol 2 "MOV").
            let mut operand = addressing.operand(None, None, 1);
            operand.displacement = cursor.little_endian(usize::from(address_size))?;
            let size = if opcode & 1 == 0 { 1 } else { operand_size };
            let access = if opcode < 0xa2 {
                MmioAccess::Load {
                    register: 0,
                    high_byte: false,
                    zero_extend_to: size,
                }
            } else {
                MmioAccess::Store {
                    source: StoreSource::Register(0),
                }
            };
            (size, access, operand)
        }
        0x0f => {
            let second = cursor.next()?;
            let size = match second {
                0xb6 => 1,
                0xb7 => 2,
                _ => return Err(DecodeError::UnsupportedOpcode(0x0f00 | u16::from(second))),
            };
            let (reg, operand) = memory_operand(&mut cursor, &addressing)?;
            let access = MmioAccess::Load {
                register: register(reg),
                high_byte: false,
                zero_extend_to: operand_size,
            };
            (size, access, operand)
        }
        _ => return Err(DecodeError::UnsupportedOpcode(u16::from(opcode))),
    };
    Ok(MmioInstruction {
        length: cursor.position as u8,
        size,
        access,
        operand,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuMode::{Long64, Protected32, Real16};

    /// An operand the shape tests do not look at (see [`shape`]).
    const ANY_OPERAND: MemoryOperand = MemoryOperand {
        base: None,
        index: None,
        scale: 1,
        displacement: 0,
        rip_relative: false,
        segment: Segment::Ds,
        address_size: 8,
    };

    /// The instruction's length, size and access, its operand replaced by [`ANY_OPERAND`]
    /// (the operand tests below check operands).
    fn shape(bytes: &[u8], mode: CpuMode) -> Result<MmioInstruction, DecodeError> {
        decode(bytes, mode).map(|instruction| MmioInstruction {
            operand: ANY_OPERAND,
            ..instruction
        })
    }

    fn load(length: u8, size: u8, register: u8, zero_extend_to: u8) -> MmioInstruction {
        MmioInstruction {
            length,
            size,
            access: MmioAccess::Load {
                register,
                high_byte: false,
                zero_extend_to,
            },
            operand: ANY_OPERAND,
        }
    }

    fn store(length: u8, size: u8, source: StoreSource) -> MmioInstruction {
        MmioInstruction {
            length,
            size,
            access: MmioAccess::Store { source },
            operand: ANY_OPERAND,
        }
    }

    #[test]
    fn loads() {
        // mov eax, [rdi]
        assert_eq!(shape(&[0x8b, 0x07], Long64), Ok(load(2, 4, 0, 4)));
        // mov rax, [rip + 0x12345678]
        assert_eq!(
            shape(&[0x48, 0x8b, 0x05, 0x78, 0x56, 0x34, 0x12], Long64),
            Ok(load(7, 8, 0, 8))
        );
        // mov r9d, [rax + 8]  (REX.R)
        assert_eq!(
            shape(&[0x44, 0x8b, 0x48, 0x08], Long64),
            Ok(load(4, 4, 9, 4))
        );
        // mov ax, [rbx]
        assert_eq!(shape(&[0x66, 0x8b, 0x03], Long64), Ok(load(3, 2, 0, 2)));
        // mov cl, [rsi]
        assert_eq!(shape(&[0x8a, 0x0e], Long64), Ok(load(2, 1, 1, 1)));
        // mov dh, [rsi] -> high byte of RDX
        assert_eq!(
            shape(&[0x8a, 0x36], Long64),
            Ok(MmioInstruction {
                length: 2,
                size: 1,
                access: MmioAccess::Load {
                    register: 2,
                    high_byte: true,
                    zero_extend_to: 1
                },
                operand: ANY_OPERAND,
            })
        );
        // mov sil, [rsi] (REX 0x40 turns 6 into SIL)
        assert_eq!(shape(&[0x40, 0x8a, 0x36], Long64), Ok(load(3, 1, 6, 1)));
        // mov r15, [r12 + r13*8 + 0x100]  (REX.WRXB, SIB, disp32)
        assert_eq!(
            shape(&[0x4f, 0x8b, 0xbc, 0xec, 0x00, 0x01, 0x00, 0x00], Long64),
            Ok(load(8, 8, 15, 8))
        );
    }

    #[test]
    fn movzx_loads() {
        // movzx eax, byte [rdi]
        assert_eq!(shape(&[0x0f, 0xb6, 0x07], Long64), Ok(load(3, 1, 0, 4)));
        // movzx ecx, word [rdi + 2]
        assert_eq!(
            shape(&[0x0f, 0xb7, 0x4f, 0x02], Long64),
            Ok(load(4, 2, 1, 4))
        );
        // movzx r8, byte [rax]  (REX.W + REX.R)
        assert_eq!(
            shape(&[0x4c, 0x0f, 0xb6, 0x00], Long64),
            Ok(load(4, 1, 8, 8))
        );
        // movzx ax, byte [rax]
        assert_eq!(
            shape(&[0x66, 0x0f, 0xb6, 0x00], Long64),
            Ok(load(4, 1, 0, 2))
        );
        // movzx with a register source touches no memory
        assert_eq!(
            shape(&[0x0f, 0xb6, 0xc1], Long64),
            Err(DecodeError::RegisterOperand)
        );
    }

    #[test]
    fn stores() {
        // mov [rdi + 0x10], eax
        assert_eq!(
            shape(&[0x89, 0x47, 0x10], Long64),
            Ok(store(3, 4, StoreSource::Register(0)))
        );
        // mov [rax + 8], r8d
        assert_eq!(
            shape(&[0x44, 0x89, 0x40, 0x08], Long64),
            Ok(store(4, 4, StoreSource::Register(8)))
        );
        // mov [rax], dx
        assert_eq!(
            shape(&[0x66, 0x89, 0x10], Long64),
            Ok(store(3, 2, StoreSource::Register(2)))
        );
        // mov [rbx], rcx
        assert_eq!(
            shape(&[0x48, 0x89, 0x0b], Long64),
            Ok(store(3, 8, StoreSource::Register(1)))
        );
        // mov [rdx], bh  and, with REX, dil
        assert_eq!(
            shape(&[0x88, 0x3a], Long64),
            Ok(store(2, 1, StoreSource::HighByteRegister(3)))
        );
        assert_eq!(
            shape(&[0x40, 0x88, 0x3a], Long64),
            Ok(store(3, 1, StoreSource::Register(7)))
        );
        // mov [r8], al (REX.B only changes the base)
        assert_eq!(
            shape(&[0x41, 0x88, 0x00], Long64),
            Ok(store(3, 1, StoreSource::Register(0)))
        );
    }

    #[test]
    fn immediate_stores() {
        // mov dword [rax], 0x12345678
        assert_eq!(
            shape(&[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12], Long64),
            Ok(store(6, 4, StoreSource::Immediate(0x1234_5678)))
        );
        // mov dword [rax], 0x80000000 stays zero-extended at 4 bytes
        assert_eq!(
            shape(&[0xc7, 0x00, 0x00, 0x00, 0x00, 0x80], Long64),
            Ok(store(6, 4, StoreSource::Immediate(0x8000_0000)))
        );
        // mov qword [rax], -1 sign-extends imm32
        assert_eq!(
            shape(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Long64),
            Ok(store(7, 8, StoreSource::Immediate(u64::MAX)))
        );
        // mov word [rax + 4], 0xbeef
        assert_eq!(
            shape(&[0x66, 0xc7, 0x40, 0x04, 0xef, 0xbe], Long64),
            Ok(store(6, 2, StoreSource::Immediate(0xbeef)))
        );
        // mov byte [rip + 0x10], 0x80
        assert_eq!(
            shape(&[0xc6, 0x05, 0x10, 0, 0, 0, 0x80], Long64),
            Ok(store(7, 1, StoreSource::Immediate(0x80)))
        );
        // C7 /1 is not a MOV.
        assert_eq!(
            shape(&[0xc7, 0x08, 0, 0, 0, 0], Long64),
            Err(DecodeError::InvalidEncoding)
        );
    }

    #[test]
    fn moffs_forms() {
        // mov eax, [abs64]
        let mut bytes = [0xa1, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(shape(&bytes, Long64), Ok(load(9, 4, 0, 4)));
        // mov [abs64], al
        bytes[0] = 0xa2;
        assert_eq!(
            shape(&bytes, Long64),
            Ok(store(9, 1, StoreSource::Register(0)))
        );
        // 32-bit: mov [abs32], eax; with 0x67 in 64-bit mode the offset is 4 bytes too
        assert_eq!(
            shape(&[0xa3, 0, 0, 0xc0, 0xfe], Protected32),
            Ok(store(5, 4, StoreSource::Register(0)))
        );
        assert_eq!(
            shape(&[0x67, 0xa0, 0, 0, 0xc0, 0xfe], Long64),
            Ok(load(6, 1, 0, 1))
        );
        // real mode: mov ax, [abs16]
        assert_eq!(shape(&[0xa1, 0x34, 0x12], Real16), Ok(load(3, 2, 0, 2)));
        assert_eq!(
            shape(&[0xa1, 1, 2, 3, 4], Long64),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn addressing_lengths_32_and_64_bit() {
        // (ModRM [+ SIB] [+ disp], extra bytes after the opcode)
        let cases: [(&[u8], u8); 10] = [
            (&[0x00], 1),                   // [rax]
            (&[0x05, 0, 0, 0, 0], 5),       // [rip + disp32] / [disp32]
            (&[0x04, 0x24], 2),             // [rsp] via SIB
            (&[0x04, 0x25, 0, 0, 0, 0], 6), // SIB no base: [disp32]
            (&[0x04, 0x05, 0, 0, 0, 0], 6), // SIB no base: [rax + disp32]
            (&[0x44, 0x24, 0x08], 3),       // [rsp + disp8]
            (&[0x45, 0x00], 2),             // [rbp + disp8]
            (&[0x80, 0, 0, 0, 0], 5),       // [rax + disp32]
            (&[0x84, 0x88, 0, 0, 0, 0], 6), // [rax + rcx*4 + disp32]
            (&[0x84, 0x8d, 0, 0, 0, 0], 6), // [rbp + rcx*4 + disp32]
        ];
        for (operand, extra) in cases {
            for mode in [Protected32, Long64] {
                let mut bytes = std::vec![0x8b];
                bytes.extend_from_slice(operand);
                let decoded = shape(&bytes, mode).unwrap();
                assert_eq!(decoded.length, 1 + extra, "{operand:x?} {mode:?}");
                // One byte short is truncated.
                assert_eq!(
                    shape(&bytes[..bytes.len() - 1], mode),
                    Err(DecodeError::Truncated),
                    "{operand:x?} {mode:?}"
                );
            }
        }
        // REX.B does not turn r/m 101 or SIB base 101 into a register without displacement.
        assert_eq!(
            shape(&[0x41, 0x8b, 0x05, 0, 0, 0, 0], Long64)
                .unwrap()
                .length,
            7
        );
        assert_eq!(
            shape(&[0x41, 0x8b, 0x04, 0x25, 0, 0, 0, 0], Long64)
                .unwrap()
                .length,
            8
        );
        // 0x67 in 64-bit mode keeps 32-bit addressing forms.
        assert_eq!(
            shape(&[0x67, 0x8b, 0x05, 0, 0, 0, 0], Long64)
                .unwrap()
                .length,
            7
        );
    }

    #[test]
    fn addressing_lengths_16_bit() {
        // mov ax, [bx + si]
        assert_eq!(shape(&[0x8b, 0x00], Real16), Ok(load(2, 2, 0, 2)));
        // mov ax, [disp16]
        assert_eq!(shape(&[0x8b, 0x06, 0x00, 0x10], Real16).unwrap().length, 4);
        // mov [bp + disp8], cx
        assert_eq!(
            shape(&[0x89, 0x4e, 0x02], Real16),
            Ok(store(3, 2, StoreSource::Register(1)))
        );
        // mov ax, [bx + disp16]; 0x04 is not a SIB in 16-bit addressing
        assert_eq!(shape(&[0x8b, 0x87, 0, 0x10], Real16).unwrap().length, 4);
        assert_eq!(shape(&[0x8b, 0x04], Real16).unwrap().length, 2);
        // operand size override: mov [bx], eax; address size override: 32-bit addressing
        assert_eq!(
            shape(&[0x66, 0x89, 0x07], Real16),
            Ok(store(3, 4, StoreSource::Register(0)))
        );
        assert_eq!(shape(&[0x67, 0x8b, 0x04, 0x24], Real16).unwrap().length, 4);
        // 32-bit code with 0x67 uses 16-bit addressing.
        assert_eq!(
            shape(&[0x67, 0x8b, 0x06, 0x00, 0x10], Protected32)
                .unwrap()
                .length,
            5
        );
        // mov word [bx], imm16 in real mode; with 0x66 an imm32
        assert_eq!(
            shape(&[0xc7, 0x07, 0x34, 0x12], Real16),
            Ok(store(4, 2, StoreSource::Immediate(0x1234)))
        );
        assert_eq!(
            shape(&[0x66, 0xc7, 0x07, 0x78, 0x56, 0x34, 0x12], Real16),
            Ok(store(7, 4, StoreSource::Immediate(0x1234_5678)))
        );
    }

    #[test]
    fn prefixes() {
        // Segment overrides are skipped: mov eax, fs:[rdi]
        assert_eq!(shape(&[0x64, 0x8b, 0x07], Long64), Ok(load(3, 4, 0, 4)));
        assert_eq!(
            shape(&[0x2e, 0x3e, 0x8b, 0x07], Protected32),
            Ok(load(4, 4, 0, 4))
        );
        // REX.W overrides 0x66.
        assert_eq!(
            shape(&[0x66, 0x48, 0x8b, 0x07], Long64),
            Ok(load(4, 8, 0, 8))
        );
        // A REX before another prefix is ignored.
        assert_eq!(
            shape(&[0x48, 0x66, 0x8b, 0x07], Long64),
            Ok(load(4, 2, 0, 2))
        );
        assert_eq!(
            shape(&[0x4c, 0x64, 0x8b, 0x07], Long64),
            Ok(load(4, 4, 0, 4))
        );
        // Two REX prefixes: only the last counts.
        assert_eq!(
            shape(&[0x4c, 0x48, 0x8b, 0x07], Long64),
            Ok(load(4, 8, 0, 8))
        );
        // Outside 64-bit mode 0x40-0x4F are INC/DEC.
        assert_eq!(
            shape(&[0x48, 0x8b, 0x07], Protected32),
            Err(DecodeError::UnsupportedOpcode(0x48))
        );
        // 32-bit mode defaults
        assert_eq!(shape(&[0x8b, 0x07], Protected32), Ok(load(2, 4, 0, 4)));
        assert_eq!(
            shape(&[0x66, 0x8b, 0x07], Protected32),
            Ok(load(3, 2, 0, 2))
        );
        // LOCK and REP are refused.
        for prefix in [0xf0, 0xf2, 0xf3] {
            assert_eq!(
                shape(&[prefix, 0x89, 0x07], Long64),
                Err(DecodeError::UnsupportedPrefix(prefix))
            );
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        assert_eq!(shape(&[], Long64), Err(DecodeError::Truncated));
        assert_eq!(shape(&[0x66], Long64), Err(DecodeError::Truncated));
        assert_eq!(shape(&[0x48], Long64), Err(DecodeError::Truncated));
        assert_eq!(shape(&[0x8b], Long64), Err(DecodeError::Truncated));
        assert_eq!(shape(&[0x0f], Long64), Err(DecodeError::Truncated));
        assert_eq!(
            shape(&[0xc7, 0x00, 1, 2, 3], Long64),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            shape(&[0x8b, 0xc0], Long64),
            Err(DecodeError::RegisterOperand)
        );
        assert_eq!(
            shape(&[0x89, 0xd8], Long64),
            Err(DecodeError::RegisterOperand)
        );
        assert_eq!(
            shape(&[0xc6, 0xc0, 1], Long64),
            Err(DecodeError::RegisterOperand)
        );
        for opcode in [0x90u8, 0x8c, 0x8e, 0xa4, 0xff, 0x01] {
            assert_eq!(
                shape(&[opcode, 0x07], Long64),
                Err(DecodeError::UnsupportedOpcode(u16::from(opcode)))
            );
        }
        assert_eq!(
            shape(&[0x0f, 0xbe, 0x07], Long64),
            Err(DecodeError::UnsupportedOpcode(0x0fbe))
        );
        // 14 prefixes + opcode + ModRM is 16 bytes: too long, even with more input.
        let mut long = [0x3eu8; 20];
        long[14] = 0x8b;
        long[15] = 0x07;
        assert_eq!(shape(&long, Long64), Err(DecodeError::TooLong));
        // 13 prefixes + opcode + ModRM is 15 bytes: fine.
        assert_eq!(shape(&long[1..], Long64).map(|i| i.length), Ok(15));
        // Prefixes alone, 15 of them.
        assert_eq!(shape(&[0x66; 15], Long64), Err(DecodeError::TooLong));
    }

    /// No input of up to three bytes (and a sample of longer ones) panics, and every accepted
    /// instruction fits the input and the 15-byte limit.
    #[test]
    fn never_panics() {
        let check = |bytes: &[u8]| {
            for mode in [Real16, Protected32, Long64] {
                if let Ok(instruction) = decode(bytes, mode) {
                    assert!(usize::from(instruction.length) <= bytes.len().min(MAX_LENGTH));
                    assert!(matches!(instruction.size, 1 | 2 | 4 | 8));
                }
            }
        };
        for first in 0..=255u8 {
            check(&[first]);
            for second in 0..=255u8 {
                check(&[first, second]);
                for third in [0x00u8, 0x04, 0x05, 0x24, 0x25, 0x44, 0x84, 0xc0, 0xff] {
                    check(&[first, second, third]);
                }
            }
        }
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 16];
            for byte in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            let length = (state >> 60) as usize;
            check(&bytes[..length]);
        }
    }

    #[test]
    fn loads_update_registers() {
        let old = 0x1111_2222_3333_4444;
        assert_eq!(
            apply_load(old, 0xaabb_ccdd_eeff_0011, 8, 8),
            0xaabb_ccdd_eeff_0011
        );
        assert_eq!(apply_load(old, 0xaabb_ccdd_eeff_0011, 4, 4), 0xeeff_0011);
        assert_eq!(
            apply_load(old, 0xaabb_ccdd_eeff_0011, 2, 2),
            0x1111_2222_3333_0011
        );
        assert_eq!(
            apply_load(old, 0xaabb_ccdd_eeff_0011, 1, 1),
            0x1111_2222_3333_4411
        );
        // MOVZX
        assert_eq!(apply_load(old, 0xfe, 1, 4), 0xfe);
        assert_eq!(apply_load(old, 0xfffe, 2, 8), 0xfffe);
        assert_eq!(apply_load(old, 0xfffe, 1, 2), 0x1111_2222_3333_00fe);
        // Through the instruction, including a high-byte register.
        let movzx = shape(&[0x0f, 0xb6, 0x07], Long64).unwrap();
        assert_eq!(movzx.load_result(old, 0x1234), Some(0x34));
        let ah = shape(&[0x8a, 0x27], Long64).unwrap();
        assert_eq!(ah.load_result(old, 0xab), Some(0x1111_2222_3333_ab44));
        let store = shape(&[0x89, 0x07], Long64).unwrap();
        assert_eq!(store.load_result(old, 1), None);
    }

    #[test]
    fn store_values_are_sized() {
        let registers = |number: u8| 0x0102_0304_0506_0708u64 * u64::from(number + 1);
        let eax = shape(&[0x89, 0x07], Long64).unwrap();
        assert_eq!(eax.store_value(registers), Some(0x0506_0708));
        let bh = shape(&[0x88, 0x3f], Long64).unwrap();
        assert_eq!(bh.store_value(registers), Some((registers(3) >> 8) & 0xff));
        let rcx = shape(&[0x48, 0x89, 0x0f], Long64).unwrap();
        assert_eq!(rcx.store_value(registers), Some(registers(1)));
        let immediate = shape(&[0x66, 0xc7, 0x07, 0x34, 0x12], Long64).unwrap();
        assert_eq!(immediate.store_value(registers), Some(0x1234));
        let load = shape(&[0x8b, 0x07], Long64).unwrap();
        assert_eq!(load.store_value(registers), None);
    }

    /// Register values for the operand tests: register n holds 0x1000 * (n + 1), so every
    /// register shows which one was used.
    fn registers(number: u8) -> u64 {
        0x1000 * (u64::from(number) + 1)
    }

    /// The linear address `bytes` access, with these segment bases (ES, CS, SS, DS, FS, GS)
    /// and the instruction at RIP 0x40_0000.
    fn linear(bytes: &[u8], mode: CpuMode, bases: &SegmentBases) -> u64 {
        let instruction = decode(bytes, mode).unwrap();
        let next_rip = 0x40_0000 + u64::from(instruction.length);
        instruction.linear_address(mode, registers, next_rip, bases)
    }

    const FLAT: SegmentBases = [0; 6];
    /// Distinct bases, FS and GS far above 4 GiB.
    const BASES: SegmentBases = [
        0x10_0000,
        0x20_0000,
        0x30_0000,
        0x40_0000,
        0x7f00_0000_0000,
        0x7e00_0000_0000,
    ];

    #[test]
    fn effective_addresses_64_bit() {
        // (bytes, linear address with flat segments)
        let cases: &[(&[u8], u64)] = &[
            (&[0x89, 0x07], registers(7)),              // mov [rdi], eax
            (&[0x89, 0x47, 0x10], registers(7) + 0x10), // mov [rdi + 0x10], eax
            (&[0x89, 0x47, 0xf0], registers(7) - 0x10), // disp8 is signed
            (
                &[0x89, 0x87, 0, 0, 0, 0x80],
                registers(7).wrapping_sub(0x8000_0000),
            ), // disp32 signed
            (&[0x41, 0x89, 0x00], registers(8)),        // mov [r8], eax (REX.B)
            (&[0x41, 0x89, 0x45, 0x08], registers(13) + 8), // mov [r13 + 8], eax
            (&[0x89, 0x04, 0x24], registers(4)),        // mov [rsp], eax (SIB)
            (&[0x89, 0x04, 0x8b], registers(3) + 4 * registers(1)), // [rbx + rcx*4]
            (&[0x42, 0x89, 0x04, 0xcb], registers(3) + 8 * registers(9)), // [rbx + r9*8] (REX.X)
            (&[0x42, 0x89, 0x04, 0x23], registers(3) + registers(12)), // index 100 + REX.X = r12
            (&[0x89, 0x04, 0x23], registers(3)),        // index 100: none
            (
                &[0x89, 0x04, 0x25, 0x00, 0x00, 0xc0, 0xfe],
                0xffff_ffff_fec0_0000,
            ), // [disp32], sign-extended
            (&[0x89, 0x04, 0x05, 0x10, 0, 0, 0], 0x10 + registers(0)), // no base: [rax*1 + disp32]
            (
                &[0x43, 0x89, 0x44, 0xa5, 0x7f],
                registers(13) + 4 * registers(12) + 0x7f,
            ), // [r13 + r12*4 + 127]
            (&[0x89, 0x05, 0x00, 0x10, 0, 0], 0x40_0006 + 0x1000), // [rip + 0x1000]: after the instruction
            (
                &[0xc7, 0x05, 0xf0, 0xff, 0xff, 0xff, 1, 0, 0, 0],
                0x40_000a - 0x10,
            ), // imm after disp: rip is past both
            (&[0x67, 0x89, 0x07], registers(7) & 0xffff_ffff),     // 0x67: 32-bit addressing wraps
            (&[0x48, 0xa3, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0], 0xfec0_0000), // mov [moffs64], rax
            (&[0x0f, 0xb7, 0x4c, 0x24, 0x02], registers(4) + 2),   // movzx ecx, word [rsp + 2]
        ];
        for &(bytes, expected) in cases {
            assert_eq!(linear(bytes, Long64, &FLAT), expected, "{bytes:x?}");
            // In 64-bit mode only FS and GS have bases (SDM vol 1 §3.7.4.1).
            let mut with_segment = std::vec![0x26u8];
            with_segment.extend_from_slice(bytes);
            // (A RIP-relative operand counts from the end of the now longer instruction.)
            let longer = u64::from(decode(bytes, Long64).unwrap().operand.rip_relative);
            assert_eq!(
                linear(&with_segment, Long64, &BASES),
                expected + longer,
                "{bytes:x?}"
            );
        }
        // FS and GS overrides add their bases.
        assert_eq!(
            linear(&[0x64, 0x89, 0x07], Long64, &BASES),
            BASES[4] + registers(7)
        );
        assert_eq!(
            linear(&[0x65, 0x89, 0x07], Long64, &BASES),
            BASES[5] + registers(7)
        );
        // The last segment override counts; REX still has to be last.
        assert_eq!(
            linear(&[0x64, 0x65, 0x41, 0x89, 0x00], Long64, &BASES),
            BASES[5] + registers(8)
        );
    }

    #[test]
    fn effective_addresses_32_and_16_bit() {
        // 32-bit: DS by default, SS for ESP/EBP bases; everything wraps at 4 GiB.
        assert_eq!(
            linear(&[0x89, 0x07], Protected32, &BASES),
            BASES[3] + registers(7)
        );
        assert_eq!(
            linear(&[0x89, 0x45, 0x04], Protected32, &BASES),
            BASES[2] + registers(5) + 4
        );
        assert_eq!(
            linear(&[0x89, 0x04, 0x24], Protected32, &BASES),
            BASES[2] + registers(4)
        );
        // [ebp*2 + disp32] with no base: the index does not make it SS.
        assert_eq!(
            linear(&[0x89, 0x04, 0x6d, 0x10, 0, 0, 0], Protected32, &BASES),
            BASES[3] + 2 * registers(5) + 0x10
        );
        assert_eq!(
            linear(&[0x26, 0x89, 0x07], Protected32, &BASES),
            BASES[0] + registers(7)
        );
        assert_eq!(
            linear(&[0x2e, 0x89, 0x07], Protected32, &BASES),
            BASES[1] + registers(7)
        );
        assert_eq!(
            linear(&[0x64, 0x89, 0x07], Protected32, &BASES),
            (BASES[4] + registers(7)) & 0xffff_ffff
        );
        // [disp32] is absolute in 32-bit mode, not RIP-relative.
        assert_eq!(
            linear(&[0x89, 0x05, 0, 0, 0xc0, 0xfe], Protected32, &FLAT),
            0xfec0_0000
        );
        let wrap: SegmentBases = [0, 0, 0, 0xffff_f000, 0, 0];
        assert_eq!(
            linear(&[0x89, 0x07], Protected32, &wrap),
            (0xffff_f000 + registers(7)) & 0xffff_ffff
        );
        assert_eq!(
            linear(&[0xa3, 0x00, 0x00, 0xc0, 0xfe], Protected32, &FLAT),
            0xfec0_0000
        );
        // 16-bit: the table 2-1 forms, wrapping at 64 KiB inside the segment.
        let real: SegmentBases = [0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000, 0x5_0000, 0x6_0000];
        let cases: &[(&[u8], u64)] = &[
            (&[0x89, 0x00], real[3] + registers(3) + registers(6)), // [bx + si]
            (&[0x89, 0x01], real[3] + registers(3) + registers(7)), // [bx + di]
            (&[0x89, 0x02], real[2] + registers(5) + registers(6)), // [bp + si]: SS
            (&[0x89, 0x03], real[2] + registers(5) + registers(7)), // [bp + di]: SS
            (&[0x89, 0x04], real[3] + registers(6)),                // [si]
            (&[0x89, 0x05], real[3] + registers(7)),                // [di]
            (&[0x89, 0x06, 0x34, 0x12], real[3] + 0x1234),          // [disp16]
            (&[0x89, 0x46, 0xfe], real[2] + registers(5) - 2),      // [bp - 2]: SS
            (&[0x89, 0x07], real[3] + registers(3)),                // [bx]
            (
                &[0x89, 0x87, 0x00, 0xf0],
                real[3] + ((registers(3) + 0xf000) & 0xffff),
            ), // wraps at 64 KiB
            (&[0x3e, 0x89, 0x02], real[3] + registers(5) + registers(6)), // DS override on a BP form
            (&[0xa3, 0x00, 0x80], real[3] + 0x8000),                      // moffs16
        ];
        for &(bytes, expected) in cases {
            assert_eq!(linear(bytes, Real16, &real), expected, "{bytes:x?}");
        }
        // 0x67 in 16-bit code: 32-bit addressing with SIB.
        assert_eq!(
            linear(&[0x67, 0x89, 0x04, 0x8b], Real16, &real),
            real[3] + registers(3) + 4 * registers(1)
        );
    }

    #[test]
    fn accesses_are_located_in_the_faulting_page() {
        let page = 0xfec0_0000u64;
        // (linear address, size, faulting guest-physical, outcome)
        let cases: &[(u64, u8, u64, Result<u64, AccessMismatch>)] = &[
            (page, 4, page, Ok(0)),
            (page + 0x10, 4, page + 0x10, Ok(0x10)),
            (page + 0xffc, 4, page + 0xffc, Ok(0xffc)),
            (page + 0xff8, 8, page + 0xff8, Ok(0xff8)),
            // Linear and physical pages differ, the offsets agree: fine.
            (0x7f00_0000_0010, 4, page + 0x10, Ok(0x10)),
            // Starts two bytes below the page, faults at its first byte.
            (page - 2, 4, page, Err(AccessMismatch::Elsewhere)),
            (page - 4, 8, page, Err(AccessMismatch::Elsewhere)),
            (page - 1, 2, page, Err(AccessMismatch::Elsewhere)),
            // Starts inside the page and runs into the next.
            (
                page + 0xffe,
                4,
                page + 0xffe,
                Err(AccessMismatch::CrossesPage),
            ),
            (
                page + 0xffc,
                8,
                page + 0xffc,
                Err(AccessMismatch::CrossesPage),
            ),
            (
                page + 0xfff,
                2,
                page + 0xfff,
                Err(AccessMismatch::CrossesPage),
            ),
            // Registers or code changed since the fault: the address is not the fault's.
            (page + 0x10, 4, page, Err(AccessMismatch::Elsewhere)),
        ];
        for &(linear, size, guest_physical, expected) in cases {
            assert_eq!(
                locate(linear, size, guest_physical),
                expected,
                "{linear:#x} {size}"
            );
        }
    }

    /// The split store of the red-team suite, decoded and located as the hypervisor does:
    /// `mov [rdi], esi` with RDI two bytes below the IOAPIC page.
    #[test]
    fn split_store_is_refused() {
        let instruction = decode(&[0x89, 0x37], Long64).unwrap();
        let registers = |number: u8| if number == 7 { 0xfebf_fffe } else { 0 };
        let linear = instruction.linear_address(Long64, registers, 0x1002, &FLAT);
        assert_eq!(linear, 0xfebf_fffe);
        assert_eq!(
            locate(linear, instruction.size, 0xfec0_0000),
            Err(AccessMismatch::Elsewhere)
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// `mov [base + index*scale + disp], r32` in 64-bit mode, every REX.X/REX.B, base,
        /// index, scale and displacement size: the decoded linear address is the one the
        /// fields describe.
        #[test]
        fn sib_operands_compute_their_address(
            base in 0u8..16,
            index in 0u8..16,
            scale_bits in 0u8..4,
            disp8 in any::<i8>(),
            disp32 in any::<i32>(),
            long_displacement in any::<bool>(),
            values in proptest::array::uniform16(any::<u64>()),
        ) {
            let rex = 0x40 | ((index >> 3) << 1) | (base >> 3);
            let mode_bits = if long_displacement { 0b10 } else { 0b01 };
            let mut bytes = std::vec![rex, 0x89, (mode_bits << 6) | 0b100,
                (scale_bits << 6) | ((index & 7) << 3) | (base & 7)];
            let displacement = if long_displacement {
                bytes.extend_from_slice(&disp32.to_le_bytes());
                i64::from(disp32) as u64
            } else {
                bytes.push(disp8 as u8);
                i64::from(disp8) as u64
            };
            let register = |number: u8| values[usize::from(number)];
            let instruction = decode(&bytes, Long64).unwrap();
            prop_assert_eq!(usize::from(instruction.length), bytes.len());
            let mut expected = register(base).wrapping_add(displacement);
            if index != 4 {
                expected = expected.wrapping_add(register(index) << scale_bits);
            }
            prop_assert_eq!(instruction.linear_address(Long64, register, 0, &BASES), expected);
        }

        /// Whatever the address and size, [`locate`] accepts an access only if every byte of
        /// it lies in the faulting page and it begins at the faulting byte.
        #[test]
        fn located_accesses_stay_in_the_page(
            linear in any::<u64>(),
            size in prop::sample::select(&[1u8, 2, 4, 8][..]),
            page in any::<u64>(),
            offset in 0u64..0x1000,
        ) {
            let guest_physical = (page & !0xfff) | offset;
            match locate(linear, size, guest_physical) {
                Ok(found) => {
                    prop_assert_eq!(found, offset);
                    prop_assert_eq!(linear & 0xfff, offset);
                    let last = linear.wrapping_add(u64::from(size) - 1);
                    prop_assert_eq!(last >> 12, linear >> 12);
                }
                Err(_) => prop_assert!(
                    linear & 0xfff != offset || offset + u64::from(size) > 0x1000
                ),
            }
        }

        /// A store that begins 1..size bytes below the trapped page never reaches emulation.
        #[test]
        fn stores_from_below_are_refused(
            below in 1u64..8,
            size in prop::sample::select(&[2u8, 4, 8][..]),
            page in 1u64..0x10_0000,
        ) {
            prop_assume!(below < u64::from(size));
            let base = page << 12;
            prop_assert_eq!(
                locate(base - below, size, base),
                Err(AccessMismatch::Elsewhere)
            );
        }
    }
}
