//! Decoding the MOV instruction behind a trapped MMIO access: its length, the bytes it
//! accesses and the register or immediate involved.
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
//! segment overrides (skipped: the hypervisor already knows the guest-physical address) and, in
//! 64-bit mode, one REX prefix immediately before the opcode (a REX followed by another prefix
//! is ignored, as by the processor). LOCK, REP/REPNE (which also encode XACQUIRE/XRELEASE)
//! and everything else are refused. The ModRM, SIB and displacement bytes are decoded for
//! their length only (SDM vol 2 §2.1.5, tables 2-1 to 2-3; RIP-relative addressing §2.2.1.6).
//! Input that is not such an instruction, or is cut short, is an error; nothing panics.

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
}

impl MmioInstruction {
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

    fn skip(&mut self, count: usize) -> Result<(), DecodeError> {
        self.little_endian(count).map(|_| ())
    }
}

/// The REX bits that matter here (SDM vol 2 §2.2.1.2): REX.X and REX.B only select index and
/// base registers, which the hypervisor does not need (it knows the faulting address).
#[derive(Clone, Copy, Default)]
struct Rex {
    present: bool,
    w: bool,
    r: bool,
}

impl Rex {
    fn from_byte(byte: u8) -> Rex {
        Rex {
            present: true,
            w: byte & 8 != 0,
            r: byte & 4 != 0,
        }
    }
}

/// Skips the SIB byte and displacement of a ModRM memory operand; returns the ModRM reg field
/// (without REX.R). Fails for a register operand.
fn memory_operand(cursor: &mut Cursor<'_>, address_size: u8) -> Result<u8, DecodeError> {
    let modrm = cursor.next()?;
    let mode = modrm >> 6;
    let reg = (modrm >> 3) & 7;
    let rm = modrm & 7;
    if mode == 0b11 {
        return Err(DecodeError::RegisterOperand);
    }
    if address_size == 2 {
        // 16-bit addressing (SDM vol 2 table 2-1): no SIB; [disp16] for mod 00 r/m 110.
        let displacement = match (mode, rm) {
            (0b00, 0b110) | (0b10, _) => 2,
            (0b01, _) => 1,
            _ => 0,
        };
        cursor.skip(displacement)?;
        return Ok(reg);
    }
    // 32/64-bit addressing (tables 2-2, 2-3); REX.B does not change these special cases.
    let mut displacement = match mode {
        0b01 => 1,
        0b10 => 4,
        _ => 0,
    };
    if rm == 0b100 {
        let sib = cursor.next()?;
        if mode == 0b00 && sib & 7 == 0b101 {
            displacement = 4; // no base, disp32
        }
    } else if mode == 0b00 && rm == 0b101 {
        displacement = 4; // disp32, RIP-relative in 64-bit mode
    }
    cursor.skip(displacement)?;
    Ok(reg)
}

/// Decodes the MMIO instruction at the start of `bytes` (at most [`MAX_LENGTH`] are looked
/// at) executing in `mode`.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<MmioInstruction, DecodeError> {
    let mut cursor = Cursor { bytes, position: 0 };
    let mut operand_override = false;
    let mut address_override = false;
    let mut rex = Rex::default();
    let opcode = loop {
        let byte = cursor.next()?;
        match byte {
            0x66 => operand_override = true,
            0x67 => address_override = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
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
    // ModRM.reg extended by REX.R; byte registers 4–7 without REX are AH, CH, DH, BH.
    let register = |reg: u8| reg | if rex.r { 8 } else { 0 };
    let byte_register_is_high = |reg: u8| !rex.present && (4..8).contains(&reg);

    let (size, access) = match opcode {
        0x88 | 0x8a => {
            let reg = memory_operand(&mut cursor, address_size)?;
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
            (1, access)
        }
        0x89 | 0x8b => {
            let reg = register(memory_operand(&mut cursor, address_size)?);
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
            (operand_size, access)
        }
        0xc6 | 0xc7 => {
            if memory_operand(&mut cursor, address_size)? != 0 {
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
            (size, MmioAccess::Store { source })
        }
        0xa0..=0xa3 => {
            cursor.skip(usize::from(address_size))?;
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
            (size, access)
        }
        0x0f => {
            let second = cursor.next()?;
            let size = match second {
                0xb6 => 1,
                0xb7 => 2,
                _ => return Err(DecodeError::UnsupportedOpcode(0x0f00 | u16::from(second))),
            };
            let reg = register(memory_operand(&mut cursor, address_size)?);
            let access = MmioAccess::Load {
                register: reg,
                high_byte: false,
                zero_extend_to: operand_size,
            };
            (size, access)
        }
        _ => return Err(DecodeError::UnsupportedOpcode(u16::from(opcode))),
    };
    Ok(MmioInstruction {
        length: cursor.position as u8,
        size,
        access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuMode::{Long64, Protected32, Real16};

    fn load(length: u8, size: u8, register: u8, zero_extend_to: u8) -> MmioInstruction {
        MmioInstruction {
            length,
            size,
            access: MmioAccess::Load {
                register,
                high_byte: false,
                zero_extend_to,
            },
        }
    }

    fn store(length: u8, size: u8, source: StoreSource) -> MmioInstruction {
        MmioInstruction {
            length,
            size,
            access: MmioAccess::Store { source },
        }
    }

    #[test]
    fn loads() {
        // mov eax, [rdi]
        assert_eq!(decode(&[0x8b, 0x07], Long64), Ok(load(2, 4, 0, 4)));
        // mov rax, [rip + 0x12345678]
        assert_eq!(
            decode(&[0x48, 0x8b, 0x05, 0x78, 0x56, 0x34, 0x12], Long64),
            Ok(load(7, 8, 0, 8))
        );
        // mov r9d, [rax + 8]  (REX.R)
        assert_eq!(
            decode(&[0x44, 0x8b, 0x48, 0x08], Long64),
            Ok(load(4, 4, 9, 4))
        );
        // mov ax, [rbx]
        assert_eq!(decode(&[0x66, 0x8b, 0x03], Long64), Ok(load(3, 2, 0, 2)));
        // mov cl, [rsi]
        assert_eq!(decode(&[0x8a, 0x0e], Long64), Ok(load(2, 1, 1, 1)));
        // mov dh, [rsi] -> high byte of RDX
        assert_eq!(
            decode(&[0x8a, 0x36], Long64),
            Ok(MmioInstruction {
                length: 2,
                size: 1,
                access: MmioAccess::Load {
                    register: 2,
                    high_byte: true,
                    zero_extend_to: 1
                }
            })
        );
        // mov sil, [rsi] (REX 0x40 turns 6 into SIL)
        assert_eq!(decode(&[0x40, 0x8a, 0x36], Long64), Ok(load(3, 1, 6, 1)));
        // mov r15, [r12 + r13*8 + 0x100]  (REX.WRXB, SIB, disp32)
        assert_eq!(
            decode(&[0x4f, 0x8b, 0xbc, 0xec, 0x00, 0x01, 0x00, 0x00], Long64),
            Ok(load(8, 8, 15, 8))
        );
    }

    #[test]
    fn movzx_loads() {
        // movzx eax, byte [rdi]
        assert_eq!(decode(&[0x0f, 0xb6, 0x07], Long64), Ok(load(3, 1, 0, 4)));
        // movzx ecx, word [rdi + 2]
        assert_eq!(
            decode(&[0x0f, 0xb7, 0x4f, 0x02], Long64),
            Ok(load(4, 2, 1, 4))
        );
        // movzx r8, byte [rax]  (REX.W + REX.R)
        assert_eq!(
            decode(&[0x4c, 0x0f, 0xb6, 0x00], Long64),
            Ok(load(4, 1, 8, 8))
        );
        // movzx ax, byte [rax]
        assert_eq!(
            decode(&[0x66, 0x0f, 0xb6, 0x00], Long64),
            Ok(load(4, 1, 0, 2))
        );
        // movzx with a register source touches no memory
        assert_eq!(
            decode(&[0x0f, 0xb6, 0xc1], Long64),
            Err(DecodeError::RegisterOperand)
        );
    }

    #[test]
    fn stores() {
        // mov [rdi + 0x10], eax
        assert_eq!(
            decode(&[0x89, 0x47, 0x10], Long64),
            Ok(store(3, 4, StoreSource::Register(0)))
        );
        // mov [rax + 8], r8d
        assert_eq!(
            decode(&[0x44, 0x89, 0x40, 0x08], Long64),
            Ok(store(4, 4, StoreSource::Register(8)))
        );
        // mov [rax], dx
        assert_eq!(
            decode(&[0x66, 0x89, 0x10], Long64),
            Ok(store(3, 2, StoreSource::Register(2)))
        );
        // mov [rbx], rcx
        assert_eq!(
            decode(&[0x48, 0x89, 0x0b], Long64),
            Ok(store(3, 8, StoreSource::Register(1)))
        );
        // mov [rdx], bh  and, with REX, dil
        assert_eq!(
            decode(&[0x88, 0x3a], Long64),
            Ok(store(2, 1, StoreSource::HighByteRegister(3)))
        );
        assert_eq!(
            decode(&[0x40, 0x88, 0x3a], Long64),
            Ok(store(3, 1, StoreSource::Register(7)))
        );
        // mov [r8], al (REX.B only changes the base)
        assert_eq!(
            decode(&[0x41, 0x88, 0x00], Long64),
            Ok(store(3, 1, StoreSource::Register(0)))
        );
    }

    #[test]
    fn immediate_stores() {
        // mov dword [rax], 0x12345678
        assert_eq!(
            decode(&[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12], Long64),
            Ok(store(6, 4, StoreSource::Immediate(0x1234_5678)))
        );
        // mov dword [rax], 0x80000000 stays zero-extended at 4 bytes
        assert_eq!(
            decode(&[0xc7, 0x00, 0x00, 0x00, 0x00, 0x80], Long64),
            Ok(store(6, 4, StoreSource::Immediate(0x8000_0000)))
        );
        // mov qword [rax], -1 sign-extends imm32
        assert_eq!(
            decode(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], Long64),
            Ok(store(7, 8, StoreSource::Immediate(u64::MAX)))
        );
        // mov word [rax + 4], 0xbeef
        assert_eq!(
            decode(&[0x66, 0xc7, 0x40, 0x04, 0xef, 0xbe], Long64),
            Ok(store(6, 2, StoreSource::Immediate(0xbeef)))
        );
        // mov byte [rip + 0x10], 0x80
        assert_eq!(
            decode(&[0xc6, 0x05, 0x10, 0, 0, 0, 0x80], Long64),
            Ok(store(7, 1, StoreSource::Immediate(0x80)))
        );
        // C7 /1 is not a MOV.
        assert_eq!(
            decode(&[0xc7, 0x08, 0, 0, 0, 0], Long64),
            Err(DecodeError::InvalidEncoding)
        );
    }

    #[test]
    fn moffs_forms() {
        // mov eax, [abs64]
        let mut bytes = [0xa1, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(decode(&bytes, Long64), Ok(load(9, 4, 0, 4)));
        // mov [abs64], al
        bytes[0] = 0xa2;
        assert_eq!(
            decode(&bytes, Long64),
            Ok(store(9, 1, StoreSource::Register(0)))
        );
        // 32-bit: mov [abs32], eax; with 0x67 in 64-bit mode the offset is 4 bytes too
        assert_eq!(
            decode(&[0xa3, 0, 0, 0xc0, 0xfe], Protected32),
            Ok(store(5, 4, StoreSource::Register(0)))
        );
        assert_eq!(
            decode(&[0x67, 0xa0, 0, 0, 0xc0, 0xfe], Long64),
            Ok(load(6, 1, 0, 1))
        );
        // real mode: mov ax, [abs16]
        assert_eq!(decode(&[0xa1, 0x34, 0x12], Real16), Ok(load(3, 2, 0, 2)));
        assert_eq!(
            decode(&[0xa1, 1, 2, 3, 4], Long64),
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
                let decoded = decode(&bytes, mode).unwrap();
                assert_eq!(decoded.length, 1 + extra, "{operand:x?} {mode:?}");
                // One byte short is truncated.
                assert_eq!(
                    decode(&bytes[..bytes.len() - 1], mode),
                    Err(DecodeError::Truncated),
                    "{operand:x?} {mode:?}"
                );
            }
        }
        // REX.B does not turn r/m 101 or SIB base 101 into a register without displacement.
        assert_eq!(
            decode(&[0x41, 0x8b, 0x05, 0, 0, 0, 0], Long64)
                .unwrap()
                .length,
            7
        );
        assert_eq!(
            decode(&[0x41, 0x8b, 0x04, 0x25, 0, 0, 0, 0], Long64)
                .unwrap()
                .length,
            8
        );
        // 0x67 in 64-bit mode keeps 32-bit addressing forms.
        assert_eq!(
            decode(&[0x67, 0x8b, 0x05, 0, 0, 0, 0], Long64)
                .unwrap()
                .length,
            7
        );
    }

    #[test]
    fn addressing_lengths_16_bit() {
        // mov ax, [bx + si]
        assert_eq!(decode(&[0x8b, 0x00], Real16), Ok(load(2, 2, 0, 2)));
        // mov ax, [disp16]
        assert_eq!(decode(&[0x8b, 0x06, 0x00, 0x10], Real16).unwrap().length, 4);
        // mov [bp + disp8], cx
        assert_eq!(
            decode(&[0x89, 0x4e, 0x02], Real16),
            Ok(store(3, 2, StoreSource::Register(1)))
        );
        // mov ax, [bx + disp16]; 0x04 is not a SIB in 16-bit addressing
        assert_eq!(decode(&[0x8b, 0x87, 0, 0x10], Real16).unwrap().length, 4);
        assert_eq!(decode(&[0x8b, 0x04], Real16).unwrap().length, 2);
        // operand size override: mov [bx], eax; address size override: 32-bit addressing
        assert_eq!(
            decode(&[0x66, 0x89, 0x07], Real16),
            Ok(store(3, 4, StoreSource::Register(0)))
        );
        assert_eq!(decode(&[0x67, 0x8b, 0x04, 0x24], Real16).unwrap().length, 4);
        // 32-bit code with 0x67 uses 16-bit addressing.
        assert_eq!(
            decode(&[0x67, 0x8b, 0x06, 0x00, 0x10], Protected32)
                .unwrap()
                .length,
            5
        );
        // mov word [bx], imm16 in real mode; with 0x66 an imm32
        assert_eq!(
            decode(&[0xc7, 0x07, 0x34, 0x12], Real16),
            Ok(store(4, 2, StoreSource::Immediate(0x1234)))
        );
        assert_eq!(
            decode(&[0x66, 0xc7, 0x07, 0x78, 0x56, 0x34, 0x12], Real16),
            Ok(store(7, 4, StoreSource::Immediate(0x1234_5678)))
        );
    }

    #[test]
    fn prefixes() {
        // Segment overrides are skipped: mov eax, fs:[rdi]
        assert_eq!(decode(&[0x64, 0x8b, 0x07], Long64), Ok(load(3, 4, 0, 4)));
        assert_eq!(
            decode(&[0x2e, 0x3e, 0x8b, 0x07], Protected32),
            Ok(load(4, 4, 0, 4))
        );
        // REX.W overrides 0x66.
        assert_eq!(
            decode(&[0x66, 0x48, 0x8b, 0x07], Long64),
            Ok(load(4, 8, 0, 8))
        );
        // A REX before another prefix is ignored.
        assert_eq!(
            decode(&[0x48, 0x66, 0x8b, 0x07], Long64),
            Ok(load(4, 2, 0, 2))
        );
        assert_eq!(
            decode(&[0x4c, 0x64, 0x8b, 0x07], Long64),
            Ok(load(4, 4, 0, 4))
        );
        // Two REX prefixes: only the last counts.
        assert_eq!(
            decode(&[0x4c, 0x48, 0x8b, 0x07], Long64),
            Ok(load(4, 8, 0, 8))
        );
        // Outside 64-bit mode 0x40-0x4F are INC/DEC.
        assert_eq!(
            decode(&[0x48, 0x8b, 0x07], Protected32),
            Err(DecodeError::UnsupportedOpcode(0x48))
        );
        // 32-bit mode defaults
        assert_eq!(decode(&[0x8b, 0x07], Protected32), Ok(load(2, 4, 0, 4)));
        assert_eq!(
            decode(&[0x66, 0x8b, 0x07], Protected32),
            Ok(load(3, 2, 0, 2))
        );
        // LOCK and REP are refused.
        for prefix in [0xf0, 0xf2, 0xf3] {
            assert_eq!(
                decode(&[prefix, 0x89, 0x07], Long64),
                Err(DecodeError::UnsupportedPrefix(prefix))
            );
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        assert_eq!(decode(&[], Long64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x66], Long64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x48], Long64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x8b], Long64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x0f], Long64), Err(DecodeError::Truncated));
        assert_eq!(
            decode(&[0xc7, 0x00, 1, 2, 3], Long64),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[0x8b, 0xc0], Long64),
            Err(DecodeError::RegisterOperand)
        );
        assert_eq!(
            decode(&[0x89, 0xd8], Long64),
            Err(DecodeError::RegisterOperand)
        );
        assert_eq!(
            decode(&[0xc6, 0xc0, 1], Long64),
            Err(DecodeError::RegisterOperand)
        );
        for opcode in [0x90u8, 0x8c, 0x8e, 0xa4, 0xff, 0x01] {
            assert_eq!(
                decode(&[opcode, 0x07], Long64),
                Err(DecodeError::UnsupportedOpcode(u16::from(opcode)))
            );
        }
        assert_eq!(
            decode(&[0x0f, 0xbe, 0x07], Long64),
            Err(DecodeError::UnsupportedOpcode(0x0fbe))
        );
        // 14 prefixes + opcode + ModRM is 16 bytes: too long, even with more input.
        let mut long = [0x3eu8; 20];
        long[14] = 0x8b;
        long[15] = 0x07;
        assert_eq!(decode(&long, Long64), Err(DecodeError::TooLong));
        // 13 prefixes + opcode + ModRM is 15 bytes: fine.
        assert_eq!(decode(&long[1..], Long64).map(|i| i.length), Ok(15));
        // Prefixes alone, 15 of them.
        assert_eq!(decode(&[0x66; 15], Long64), Err(DecodeError::TooLong));
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
        let movzx = decode(&[0x0f, 0xb6, 0x07], Long64).unwrap();
        assert_eq!(movzx.load_result(old, 0x1234), Some(0x34));
        let ah = decode(&[0x8a, 0x27], Long64).unwrap();
        assert_eq!(ah.load_result(old, 0xab), Some(0x1111_2222_3333_ab44));
        let store = decode(&[0x89, 0x07], Long64).unwrap();
        assert_eq!(store.load_result(old, 1), None);
    }

    #[test]
    fn store_values_are_sized() {
        let registers = |number: u8| 0x0102_0304_0506_0708u64 * u64::from(number + 1);
        let eax = decode(&[0x89, 0x07], Long64).unwrap();
        assert_eq!(eax.store_value(registers), Some(0x0506_0708));
        let bh = decode(&[0x88, 0x3f], Long64).unwrap();
        assert_eq!(bh.store_value(registers), Some((registers(3) >> 8) & 0xff));
        let rcx = decode(&[0x48, 0x89, 0x0f], Long64).unwrap();
        assert_eq!(rcx.store_value(registers), Some(registers(1)));
        let immediate = decode(&[0x66, 0xc7, 0x07, 0x34, 0x12], Long64).unwrap();
        assert_eq!(immediate.store_value(registers), Some(0x1234));
        let load = decode(&[0x8b, 0x07], Long64).unwrap();
        assert_eq!(load.store_value(registers), None);
    }
}
