//! Writes tiny ELF64 x86-64 PVH guests for tests: one `PT_LOAD` segment and, optionally,
//! a `PT_NOTE` segment with Xen's `XEN_ELFNOTE_PHYS32_ENTRY` note.

/// What the test image looks like.
#[derive(Clone, Debug)]
pub struct ElfSpec {
    /// Guest-physical load address (`p_paddr`) of the one segment.
    pub load_address: u64,
    /// Memory size of the segment (its file size is 16 bytes).
    pub memory_size: u64,
    /// The PVH entry point written in the note.
    pub entry: u64,
    /// Size of the note's descriptor: 4, 8, or 0 for no note at all.
    pub entry_note_bytes: usize,
}

impl Default for ElfSpec {
    fn default() -> Self {
        Self {
            load_address: 0x10_0000,
            memory_size: 0x2000,
            entry: 0x10_0000,
            entry_note_bytes: 4,
        }
    }
}

/// The bytes of an ELF file as `spec` describes it.
pub fn build_pvh_elf(spec: &ElfSpec) -> Vec<u8> {
    const HEADER: usize = 64;
    const PROGRAM_HEADER: usize = 56;
    let has_note = spec.entry_note_bytes != 0;
    let program_headers = if has_note { 2 } else { 1 };
    let code_offset = HEADER + PROGRAM_HEADER * program_headers;
    let code: [u8; 16] = [0xf4, 0xeb, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let note_offset = code_offset + code.len();
    let mut note = Vec::new();
    if has_note {
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&(spec.entry_note_bytes as u32).to_le_bytes());
        note.extend_from_slice(&18u32.to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&spec.entry.to_le_bytes()[..spec.entry_note_bytes]);
    }

    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\x7fELF");
    bytes.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, little-endian, version 1, SysV
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    bytes.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0xffff_ffff_8000_0000u64.to_le_bytes()); // e_entry: unused by PVH
    bytes.extend_from_slice(&(HEADER as u64).to_le_bytes()); // e_phoff
    bytes.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    bytes.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    bytes.extend_from_slice(&(HEADER as u16).to_le_bytes());
    bytes.extend_from_slice(&(PROGRAM_HEADER as u16).to_le_bytes());
    bytes.extend_from_slice(&(program_headers as u16).to_le_bytes());
    bytes.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx

    let mut program_header = |kind: u32, offset: usize, address: u64, file: usize, memory: u64| {
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&7u32.to_le_bytes()); // RWX
        bytes.extend_from_slice(&(offset as u64).to_le_bytes());
        bytes.extend_from_slice(&(address | 0xffff_ffff_8000_0000).to_le_bytes()); // p_vaddr
        bytes.extend_from_slice(&address.to_le_bytes()); // p_paddr
        bytes.extend_from_slice(&(file as u64).to_le_bytes());
        bytes.extend_from_slice(&memory.to_le_bytes());
        bytes.extend_from_slice(&4096u64.to_le_bytes());
    };
    program_header(
        1,
        code_offset,
        spec.load_address,
        code.len(),
        spec.memory_size,
    );
    if has_note {
        program_header(4, note_offset, 0, note.len(), note.len() as u64);
    }
    bytes.extend_from_slice(&code);
    bytes.extend_from_slice(&note);
    bytes
}
