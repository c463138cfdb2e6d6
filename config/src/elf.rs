//! A small reader for ELF64 x86-64 PVH guests: the `PT_LOAD` segments and the PVH entry
//! point from the `XEN_ELFNOTE_PHYS32_ENTRY` note.

use std::fmt;

use tessera_abi::table::Segment;
use tessera_policy::bytes::{slice_at, u16_at, u32_at, u64_at};

/// Program header type of a loadable segment.
const PT_LOAD: u32 = 1;
/// Program header type of a note segment.
const PT_NOTE: u32 = 4;
/// `e_machine` of x86-64.
const EM_X86_64: u16 = 62;
/// `e_type` of an executable.
const ET_EXEC: u16 = 2;
/// Xen's note type for the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// What the hypervisor needs to know of a guest image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// The `PT_LOAD` segments in program-header order (guest = `p_paddr`; `blob` 0, the
    /// image itself).
    pub segments: Vec<Segment>,
    /// The PVH entry point (guest-physical, entered in 32-bit protected mode).
    pub pvh_entry: u64,
}

/// Why an image is not a loadable PVH guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than an ELF header.
    TooShort,
    /// No `\x7fELF` magic.
    NotElf,
    /// Not ELFCLASS64.
    Not64Bit,
    /// Not little-endian.
    NotLittleEndian,
    /// `e_machine` is not x86-64.
    NotX86_64 { machine: u16 },
    /// `e_type` is not `ET_EXEC`.
    NotExecutable { kind: u16 },
    /// The program header table lies outside the file or has an odd entry size.
    ProgramHeadersOutside,
    /// A segment's file bytes lie outside the file.
    SegmentOutsideFile { index: usize },
    /// A segment has more file bytes than memory bytes, or wraps.
    SegmentSizes { index: usize },
    /// No `PT_LOAD` segment at all.
    NoLoadSegment,
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note.
    NoPvhNote,
    /// The note's descriptor is not a 4- or 8-byte address.
    BadPvhNote { size: u32 },
}

impl fmt::Display for ElfError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => write!(formatter, "not an ELF file: shorter than an ELF header"),
            Self::NotElf => write!(formatter, "not an ELF file: no ELF magic"),
            Self::Not64Bit => write!(formatter, "not an ELF64 file"),
            Self::NotLittleEndian => write!(formatter, "not a little-endian ELF file"),
            Self::NotX86_64 { machine } => {
                write!(formatter, "not an x86-64 ELF file (e_machine = {machine})")
            }
            Self::NotExecutable { kind } => {
                write!(formatter, "not an executable ELF file (e_type = {kind})")
            }
            Self::ProgramHeadersOutside => {
                write!(formatter, "the program header table lies outside the file")
            }
            Self::SegmentOutsideFile { index } => {
                write!(
                    formatter,
                    "program header {index}: its bytes lie outside the file"
                )
            }
            Self::SegmentSizes { index } => write!(
                formatter,
                "program header {index}: file size exceeds memory size or the segment wraps"
            ),
            Self::NoLoadSegment => write!(formatter, "no PT_LOAD segment"),
            Self::NoPvhNote => {
                write!(
                    formatter,
                    "not a PVH guest: no XEN_ELFNOTE_PHYS32_ENTRY note"
                )
            }
            Self::BadPvhNote { size } => write!(
                formatter,
                "the XEN_ELFNOTE_PHYS32_ENTRY note has a {size}-byte descriptor (expected 4 or 8)"
            ),
        }
    }
}

impl std::error::Error for ElfError {}

/// The bytes `[offset, offset + size)` of `bytes`, if they are inside it.
/// ELF offsets and sizes are 64-bit: one that does not fit `usize` is outside the file too.
fn slice(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    slice_at(
        bytes,
        usize::try_from(offset).ok()?,
        usize::try_from(size).ok()?,
    )
}

/// Reads the loadable segments and the PVH entry of an ELF64 x86-64 executable.
pub fn parse_pvh_elf(bytes: &[u8]) -> Result<ElfImage, ElfError> {
    if bytes.len() < 64 {
        return Err(ElfError::TooShort);
    }
    if bytes[..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if bytes[4] != 2 {
        return Err(ElfError::Not64Bit);
    }
    if bytes[5] != 1 {
        return Err(ElfError::NotLittleEndian);
    }
    let header = |offset| u16_at(bytes, offset).ok_or(ElfError::TooShort);
    let kind = header(16)?;
    let machine = header(18)?;
    if machine != EM_X86_64 {
        return Err(ElfError::NotX86_64 { machine });
    }
    if kind != ET_EXEC {
        return Err(ElfError::NotExecutable { kind });
    }
    let table_offset = u64_at(bytes, 32).ok_or(ElfError::TooShort)?;
    let entry_size = u64::from(header(54)?);
    let entry_count = u64::from(header(56)?);
    if entry_count > 0 && entry_size < 56 {
        return Err(ElfError::ProgramHeadersOutside);
    }
    let table = slice(bytes, table_offset, entry_size * entry_count)
        .ok_or(ElfError::ProgramHeadersOutside)?;

    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for index in 0..entry_count as usize {
        let entry = &table[index * entry_size as usize..][..56];
        let field = |offset| u64_at(entry, offset).unwrap_or(0);
        let segment_type = u32_at(entry, 0).unwrap_or(0);
        let (offset, physical, file_size, memory_size) =
            (field(8), field(24), field(32), field(40));
        if segment_type != PT_LOAD && segment_type != PT_NOTE {
            continue;
        }
        let contents =
            slice(bytes, offset, file_size).ok_or(ElfError::SegmentOutsideFile { index })?;
        if segment_type == PT_NOTE {
            if let Some(entry) = find_pvh_note(contents)? {
                pvh_entry.get_or_insert(entry);
            }
            continue;
        }
        if file_size > memory_size || physical.checked_add(memory_size).is_none() {
            return Err(ElfError::SegmentSizes { index });
        }
        segments.push(Segment {
            guest: physical,
            blob: 0,
            file_offset: offset,
            file_size,
            memory_size,
        });
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadSegment);
    }
    let pvh_entry = pvh_entry.ok_or(ElfError::NoPvhNote)?;
    Ok(ElfImage {
        segments,
        pvh_entry,
    })
}

/// Walks the notes of one `PT_NOTE` segment looking for Xen's PVH entry note.
fn find_pvh_note(mut notes: &[u8]) -> Result<Option<u64>, ElfError> {
    let align4 = |size: usize| size.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let (Some(name_size), Some(descriptor_size), Some(note_type)) =
            (u32_at(notes, 0), u32_at(notes, 4), u32_at(notes, 8))
        else {
            break;
        };
        let name_end = 12 + align4(name_size as usize);
        let descriptor_end = name_end + align4(descriptor_size as usize);
        let (Some(name), Some(descriptor)) = (
            notes.get(12..12 + name_size as usize),
            notes.get(name_end..name_end + descriptor_size as usize),
        ) else {
            break;
        };
        if note_type == XEN_ELFNOTE_PHYS32_ENTRY
            && name.strip_suffix(b"\0").unwrap_or(name) == b"Xen"
        {
            return match descriptor.len() {
                4 => Ok(u32_at(descriptor, 0).map(u64::from)),
                8 => Ok(u64_at(descriptor, 0)),
                _ => Err(ElfError::BadPvhNote {
                    size: descriptor_size,
                }),
            };
        }
        notes = notes.get(descriptor_end..).unwrap_or(&[]);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::elf_builder::{build_pvh_elf, ElfSpec};

    #[test]
    fn reads_segments_and_pvh_entry() {
        let bytes = build_pvh_elf(&ElfSpec::default());
        let image = parse_pvh_elf(&bytes).unwrap();
        assert_eq!(image.pvh_entry, 0x10_0000);
        assert_eq!(image.segments.len(), 1);
        let segment = image.segments[0];
        assert_eq!(segment.guest, 0x10_0000);
        assert_eq!(segment.file_size, 16);
        assert_eq!(segment.memory_size, 0x2000);
        assert_eq!(&bytes[segment.file_offset as usize..][..2], &[0xf4, 0xeb]);
    }

    #[test]
    fn reads_a_64_bit_note_descriptor() {
        let spec = ElfSpec {
            entry_note_bytes: 8,
            ..ElfSpec::default()
        };
        assert_eq!(
            parse_pvh_elf(&build_pvh_elf(&spec)).unwrap().pvh_entry,
            0x10_0000
        );
    }

    #[test]
    fn requires_the_pvh_note() {
        let spec = ElfSpec {
            entry_note_bytes: 0,
            ..ElfSpec::default()
        };
        let error = parse_pvh_elf(&build_pvh_elf(&spec)).unwrap_err();
        assert_eq!(error, ElfError::NoPvhNote);
        assert_eq!(
            error.to_string(),
            "not a PVH guest: no XEN_ELFNOTE_PHYS32_ENTRY note"
        );
    }

    #[test]
    fn rejects_other_files() {
        assert_eq!(parse_pvh_elf(b"#!/bin/sh\n"), Err(ElfError::TooShort));
        assert_eq!(parse_pvh_elf(&[0; 64]), Err(ElfError::NotElf));
        let mut bytes = build_pvh_elf(&ElfSpec::default());
        bytes[18] = 40; // EM_ARM
        assert_eq!(
            parse_pvh_elf(&bytes),
            Err(ElfError::NotX86_64 { machine: 40 })
        );
        let mut bytes = build_pvh_elf(&ElfSpec::default());
        bytes[4] = 1;
        assert_eq!(parse_pvh_elf(&bytes), Err(ElfError::Not64Bit));
    }
}
