//! Guest writes to CR0, CR4 and EFER performed as the processor performs them, and the VMCS
//! values an Intel VMX backend loads for the result.
//!
//! A VMX guest's MOV to CR0/CR4 exits when it changes a bit the hypervisor owns through the
//! guest/host masks (Intel SDM vol. 3 §25.6.6; in practice CR0.NE and CR4.VMXE, which VMX
//! fixes to 1), and WRMSR to IA32_EFER exits because Tessera intercepts it. The hypervisor then
//! has to do everything the instruction does, not only store the value: a MOV to CR0 that sets
//! PG with EFER.LME=1 also activates IA-32e mode (EFER.LMA=1, §9.8.5), and VM entry insists that
//! EFER.LMA, EFER.LME, CR0.PG and the "IA-32e mode guest" VM-entry control agree (§27.3.1.1 in
//! newer editions of the SDM, §26.3.1.1 in older ones). [`write()`] is that instruction: the
//! guest-visible state before, one write, and either the state after or the #GP(0) the
//! processor raises. [`vmcs_values`] turns a guest-visible state into the VMCS fields (real
//! CR0/CR4 with the VMX fixed bits, read shadows, EFER, the entry control) and
//! [`check_vm_entry`] is the processor's VM-entry check of those fields.
//!
//! Sources: SDM vol. 3 §2.5 (control registers), §2.2.1 (IA32_EFER), §4.1.1–§4.1.2 (paging
//! modes and their transitions), §4.4.1 (PAE PDPTE registers), §4.10.1 (PCIDs), §4.10.4.1
//! (TLB invalidation), §9.8.5 (initializing IA-32e mode), §25.6.6 (guest/host masks),
//! appendix A.7–A.8 (fixed bits); SDM vol. 2, "MOV—Move to/from Control Registers",
//! "LMSW", "CLTS", "WRMSR". Bochs implements the same rules (cpu/crregs.cc `SetCR0`,
//! `check_CR4`, `SetCR4`, `SetEFER`, `LMSW_Ew`).
//!
//! On AMD SVM the processor performs guest MOV to CR0/CR4, CLTS and LMSW itself (Tessera
//! intercepts none of them), EFER.LMA included, and VMRUN has no fixed bits or read shadows to
//! keep consistent. Only the intercepted WRMSR to EFER is emulated there; it can use
//! [`write()`] with [`ControlWrite::Efer`] (reserved bits, LME locked while paging, LMA
//! read-only) given the SVM backend's own mask of EFER bits, since [`efer_supported`] knows
//! Intel's bits only.

use crate::vmx::apply_fixed_bits;
use bitflags::bitflags;

bitflags! {
    /// CR0 (SDM vol. 3 §2.5, figure 2-7). These are all the bits CR0 has: the others of bits
    /// 31:0 are reserved and writes to them are ignored (§2.5), so
    /// [`Cr0::from_bits_truncate`] is what a MOV to CR0 stores of bits 31:0. Bits 63:32 are
    /// reserved too, and setting one raises #GP.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr0: u64 {
        /// Bit 0, protection enable: protected mode.
        const PE = 1 << 0;
        /// Bit 1, monitor coprocessor: WAIT/FWAIT honours TS.
        const MP = 1 << 1;
        /// Bit 2, emulation: no x87 FPU, its instructions raise #NM.
        const EM = 1 << 2;
        /// Bit 3, task switched: the next x87/SSE instruction raises #NM.
        const TS = 1 << 3;
        /// Bit 4, extension type: hardwired to 1 since the P6.
        const ET = 1 << 4;
        /// Bit 5, numeric error: x87 errors are reported through #MF (VMX fixes it to 1).
        const NE = 1 << 5;
        /// Bit 16, write protect: supervisor writes honour read-only pages.
        const WP = 1 << 16;
        /// Bit 18, alignment mask: RFLAGS.AC enables alignment checking at CPL 3.
        const AM = 1 << 18;
        /// Bit 29, not write-through (with CD, §11.5.1 table 11-5).
        const NW = 1 << 29;
        /// Bit 30, cache disable.
        const CD = 1 << 30;
        /// Bit 31, paging.
        const PG = 1 << 31;
    }

    /// The CR4 bits with a rule of their own here (SDM vol. 3 §2.5, figure 2-7). CR4 has
    /// more bits than these; a value is kept whole with [`Cr4::from_bits_retain`], never
    /// truncated to the named bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr4: u64 {
        /// Bit 4, page size extensions: 4 MiB pages under 32-bit paging.
        const PSE = 1 << 4;
        /// Bit 5, physical address extension: PAE or (with EFER.LME) IA-32e paging.
        const PAE = 1 << 5;
        /// Bit 7, page global enable.
        const PGE = 1 << 7;
        /// Bit 12, 57-bit linear addresses: 5-level paging.
        const LA57 = 1 << 12;
        /// Bit 13, VMX enable (VMX fixes it to 1; the guest's CPUID hides VMX).
        const VMXE = 1 << 13;
        /// Bit 17, PCID enable (§4.10.1).
        const PCIDE = 1 << 17;
        /// Bit 20, supervisor-mode execution prevention.
        const SMEP = 1 << 20;
        /// Bit 23, control-flow enforcement technology.
        const CET = 1 << 23;
    }

    /// IA32_EFER (MSR 0xC000_0080; SDM vol. 3 §2.2.1, table 2-1): the bits an Intel
    /// processor has. AMD's further bits (SVME, LMSLE, FFXSR, TCE, ...) are not named; a value
    /// is kept whole with [`Efer::from_bits_retain`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Efer: u64 {
        /// Bit 0, SYSCALL enable.
        const SCE = 1 << 0;
        /// Bit 8, IA-32e mode enable.
        const LME = 1 << 8;
        /// Bit 10, IA-32e mode active (read-only; the processor sets it, §9.8.5).
        const LMA = 1 << 10;
        /// Bit 11, execute-disable bit enable.
        const NXE = 1 << 11;
    }
}

/// CR4 bits 63:32 (FRED is bit 32) are not modelled and always treated as reserved.
const CR4_MODELLED: u64 = 0xFFFF_FFFF;

/// The "IA-32e mode guest" VM-entry control (SDM vol. 3 §25.8.1).
pub const ENTRY_IA32E_MODE_GUEST: u32 = 1 << 9;

/// A CR3 value's PCID (bits 11:0 when CR4.PCIDE=1, SDM vol. 3 §4.10.1).
const CR3_PCID: u64 = 0xFFF;

/// The guest-visible control state a write is applied to: what the guest reads back from
/// CR0, CR3, CR4 and IA32_EFER, plus the two segment facts MOV to CR0 depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L, the L bit of the current code segment (VMX access rights bit 13).
    pub code_segment_long: bool,
    /// TR references a 16-bit TSS (VMX access-rights type 1 or 3).
    pub task_register_16_bit: bool,
}

impl ControlState {
    /// CR0 as flags, every bit kept.
    pub const fn cr0_flags(&self) -> Cr0 {
        Cr0::from_bits_retain(self.cr0)
    }

    /// CR4 as flags, every bit kept.
    pub const fn cr4_flags(&self) -> Cr4 {
        Cr4::from_bits_retain(self.cr4)
    }

    /// IA32_EFER as flags, every bit kept.
    pub const fn efer_flags(&self) -> Efer {
        Efer::from_bits_retain(self.efer)
    }

    /// EFER.LMA: IA-32e mode is active (§2.2.1).
    pub fn long_mode_active(&self) -> bool {
        self.efer_flags().contains(Efer::LMA)
    }

    /// 64-bit mode: IA-32e mode with CS.L=1 (§9.8.5.3). MOV to CR takes a 64-bit operand only
    /// here; elsewhere it moves 32 bits (vol. 2, MOV to CR).
    pub fn in_64_bit_mode(&self) -> bool {
        self.long_mode_active() && self.code_segment_long
    }

    /// CR0.PG.
    pub fn paging(&self) -> bool {
        self.cr0_flags().contains(Cr0::PG)
    }

    /// PAE paging (§4.1.1): CR0.PG=1, CR4.PAE=1, IA-32e mode inactive (with PG=1, EFER.LMA=0
    /// is EFER.LME=0) — the one paging mode with PDPTE registers.
    pub fn pae_paging(&self) -> bool {
        self.paging() && self.cr4_flags().contains(Cr4::PAE) && !self.long_mode_active()
    }
}

/// One guest write to the control state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlWrite {
    /// MOV to CR0 with the full source register (truncated to 32 bits outside 64-bit mode).
    Cr0(u64),
    /// MOV to CR4 with the full source register (truncated to 32 bits outside 64-bit mode).
    Cr4(u64),
    /// WRMSR to IA32_EFER with EDX:EAX.
    Efer(u64),
    /// CLTS.
    Clts,
    /// LMSW with its 16-bit source.
    Lmsw(u16),
}

/// Which CR4 and IA32_EFER bits the guest may set: every bit outside these is reserved and
/// setting it raises #GP (vol. 2, MOV to CR "write a 1 to any reserved bit in CR4"; WRMSR:
/// EDX:EAX setting a bit reserved in the MSR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupportedBits {
    /// Allowed CR4 bits. Only bits 31:0 are modelled; bits 63:32 are always reserved.
    pub cr4: u64,
    /// Allowed IA32_EFER bits. EFER.LMA belongs here whenever EFER.LME does: WRMSR ignores
    /// the LMA bit of its operand (§2.2.1 marks it read-only) rather than faulting.
    pub efer: u64,
}

impl SupportedBits {
    /// The guest of Tessera's VMX backend: the CR4 bits the processor supports in VMX
    /// operation (IA32_VMX_CR4_FIXED1, SDM appendix A.8; Bochs reports exactly its CR4
    /// support there) less CR4.VMXE, since the guest's CPUID hides VMX (see
    /// [`crate::cpuid::LEAF1_ECX_VMX`]); EFER from CPUID.80000001H:EDX
    /// ([`efer_supported`]).
    pub fn vmx_guest(cr4_fixed1: u64, extended_features_edx: u32) -> Self {
        SupportedBits {
            cr4: cr4_fixed1 & CR4_MODELLED & !Cr4::VMXE.bits(),
            efer: efer_supported(extended_features_edx),
        }
    }
}

/// The IA32_EFER bits an Intel processor implements, from CPUID.80000001H:EDX (SDM vol. 4
/// table 2-2, IA32_EFER): SCE with SYSCALL (bit 11) or Intel 64 (bit 29), NXE with XD
/// (bit 20), LME and LMA with Intel 64 (bit 29). AMD's further EFER bits (SVME, LMSLE, FFXSR,
/// TCE, ...) are not included.
pub fn efer_supported(extended_features_edx: u32) -> u64 {
    let has = |bit: u32| extended_features_edx & (1 << bit) != 0;
    let mut supported = Efer::empty();
    supported.set(Efer::SCE, has(11) || has(29));
    supported.set(Efer::NXE, has(20));
    supported.set(Efer::LME | Efer::LMA, has(29));
    supported.bits()
}

/// Why a write raises #GP(0). Each variant is one named check below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneralProtection {
    /// MOV to CR0 setting a bit of CR0\[63:32\] (§2.5; vol. 2 MOV to CR, 64-bit mode).
    Cr0ReservedBits,
    /// CR0.PG=1 with CR0.PE=0 (vol. 2 MOV to CR: "invalid bit combinations in CR0").
    PagingWithoutProtection,
    /// CR0.NW=1 with CR0.CD=0 (vol. 2 MOV to CR; §11.5.1 table 11-5).
    NotWriteThroughWithoutCacheDisable,
    /// CR0.PG 0→1 with EFER.LME=1 and CR4.PAE=0 (§4.1.2, §9.8.5).
    LongModeWithoutPae,
    /// CR0.PG 0→1 with EFER.LME=1 while CS.L=1 (vol. 2 MOV to CR: activating IA-32e mode
    /// with the L bit of the current CS set; Bochs `SetCR0`).
    LongModeWithLongCodeSegment,
    /// CR0.PG 0→1 with EFER.LME=1 while TR holds a 16-bit TSS (vol. 2 MOV to CR; Bochs
    /// `SetCR0`).
    LongModeWith16BitTaskSegment,
    /// CR0.PG 1→0 in 64-bit mode (vol. 2 MOV to CR, 64-bit mode: "attempting to clear
    /// CR0.PG"; §9.8.5.4 leaves IA-32e mode from compatibility mode).
    PagingOffIn64BitMode,
    /// CR0.PG 1→0 while CR4.PCIDE=1 (§4.10.1; vol. 2 MOV to CR).
    PagingOffWithPcid,
    /// CR0.WP 1→0 while CR4.CET=1 (vol. 2 MOV to CR; §2.5 CR4.CET).
    WriteProtectOffWithCet,
    /// MOV to CR4 setting a reserved bit (§2.5; vol. 2 MOV to CR).
    Cr4ReservedBits,
    /// CR4.PAE 1→0 while IA-32e mode is active (§4.1.2; vol. 2 MOV to CR: "leave IA-32e mode
    /// by clearing CR4.PAE").
    PaeOffInLongMode,
    /// CR4.PCIDE=1 while IA-32e mode is not active (§2.5, §4.10.1: settable only in IA-32e
    /// mode).
    PcidOutsideLongMode,
    /// CR4.PCIDE 0→1 with CR3\[11:0\] ≠ 0 (§4.10.1; vol. 2 MOV to CR).
    PcidWithNonZeroCr3Pcid,
    /// CR4.LA57 changed while IA-32e mode is active (§2.5 CR4.LA57; vol. 2 MOV to CR).
    La57ChangeInLongMode,
    /// CR4.CET=1 while CR0.WP=0 (§2.5 CR4.CET; vol. 2 MOV to CR).
    CetWithoutWriteProtect,
    /// WRMSR setting a reserved IA32_EFER bit (§2.2.1; vol. 2 WRMSR).
    EferReservedBits,
    /// WRMSR changing EFER.LME while CR0.PG=1 (§4.1.2, §9.8.5).
    LongModeEnableChangeWithPaging,
}

/// What the TLB loses with a write (SDM vol. 3 §4.10.4.1). A hypervisor that performs the
/// write on the guest's behalf must invalidate this for the guest's VPID itself: VM entry
/// with VPIDs enabled keeps the guest's translations (§29.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslationFlush {
    None,
    /// The current PCID's entries (CR4.PAE changed, CR4.SMEP 0→1).
    CurrentContext,
    /// Every PCID's entries, global ones included (CR0.PG changed, CR4.PGE changed,
    /// CR4.PCIDE 1→0).
    AllContexts,
}

/// The result of a write that does not fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: ControlState,
    /// The processor loads the four PAE PDPTEs from CR3 here (§4.4.1): PAE paging is in use
    /// after a MOV to CR0/CR4 that changed CR0.CD, NW or PG or CR4.PAE, PGE, PSE or SMEP. The
    /// hypervisor must read them from guest memory at [`pae_pdpt_address`], raise #GP(0)
    /// instead of committing the write if [`pae_pdpte_is_valid`] refuses one, and with EPT
    /// store them in the VMCS GUEST_PDPTE0–3 fields, which VM entry loads (§27.3.2.4).
    pub load_pae_pdptes: bool,
    pub flush: TranslationFlush,
}

impl Transition {
    fn plain(state: ControlState) -> Self {
        Transition {
            state,
            load_pae_pdptes: false,
            flush: TranslationFlush::None,
        }
    }
}

/// Performs `write` on `state` as the processor does, or names the #GP(0) it raises.
pub fn write(
    state: &ControlState,
    write: ControlWrite,
    supported: &SupportedBits,
) -> Result<Transition, GeneralProtection> {
    match write {
        ControlWrite::Cr0(source) => write_cr0(state, operand(state, source)),
        ControlWrite::Lmsw(source) => write_cr0(state, lmsw_value(state.cr0, source)),
        ControlWrite::Clts => Ok(Transition::plain(ControlState {
            cr0: (state.cr0_flags() - Cr0::TS).bits(),
            ..*state
        })),
        ControlWrite::Cr4(source) => write_cr4(state, operand(state, source), supported.cr4),
        ControlWrite::Efer(value) => write_efer(state, value, supported.efer),
    }
}

/// MOV to CR uses a 64-bit operand in 64-bit mode and a 32-bit one elsewhere (vol. 2 MOV to
/// CR); the upper half of the register the exit names is then not part of the write.
fn operand(state: &ControlState, source: u64) -> u64 {
    if state.in_64_bit_mode() {
        source
    } else {
        source & 0xFFFF_FFFF
    }
}

/// LMSW loads CR0 bits 3:0 (PE, MP, EM, TS) only, and can set PE but not clear it (vol. 2
/// LMSW).
fn lmsw_value(cr0: u64, source: u16) -> u64 {
    (cr0 & !0xF) | u64::from(source & 0xF) | (cr0 & Cr0::PE.bits())
}

fn write_cr0(state: &ControlState, value: u64) -> Result<Transition, GeneralProtection> {
    check_cr0_reserved_bits(value)?;
    // §2.5: writes to reserved bits 31:0 are ignored; ET is hardwired to 1 since the P6.
    let cr0 = Cr0::from_bits_truncate(value) | Cr0::ET;
    check_paging_requires_protection(cr0)?;
    check_not_write_through_requires_cache_disable(cr0)?;
    check_write_protect_kept_with_cet(cr0, state.cr4_flags())?;
    let was_paging = state.paging();
    let paging = cr0.contains(Cr0::PG);
    let mut efer = state.efer_flags();
    if !was_paging && paging && efer.contains(Efer::LME) {
        check_long_mode_activation(state)?;
        // §9.8.5 step 4: "Enable paging by setting CR0.PG = 1. This causes the processor to
        // set the IA32_EFER.LMA bit to 1."
        efer |= Efer::LMA;
    } else if was_paging && !paging {
        check_paging_disable(state)?;
        // §9.8.5.4: clearing CR0.PG deactivates IA-32e mode (LMA=0).
        efer -= Efer::LMA;
    }
    let after = ControlState {
        cr0: cr0.bits(),
        efer: efer.bits(),
        ..*state
    };
    let changed = state.cr0_flags() ^ cr0;
    Ok(Transition {
        state: after,
        load_pae_pdptes: after.pae_paging() && changed.intersects(Cr0::CD | Cr0::NW | Cr0::PG),
        // §4.10.4.1: clearing CR0.PG invalidates every TLB entry and paging-structure cache
        // entry. Setting it is not listed there; it is flushed too because with EPT and VPIDs
        // the processor may have cached combined mappings for the unpaged linear addresses
        // (§29.4.2), which must not survive into the paged address space.
        flush: if was_paging != paging {
            TranslationFlush::AllContexts
        } else {
            TranslationFlush::None
        },
    })
}

/// §2.5: bits 63:32 of CR0 are reserved; writing a nonzero value to them raises #GP(0).
fn check_cr0_reserved_bits(value: u64) -> Result<(), GeneralProtection> {
    if value >> 32 != 0 {
        return Err(GeneralProtection::Cr0ReservedBits);
    }
    Ok(())
}

/// Vol. 2 MOV to CR: "setting the PG flag to 1 when the PE flag is set to 0" raises #GP.
fn check_paging_requires_protection(cr0: Cr0) -> Result<(), GeneralProtection> {
    if cr0.contains(Cr0::PG) && !cr0.contains(Cr0::PE) {
        return Err(GeneralProtection::PagingWithoutProtection);
    }
    Ok(())
}

/// Vol. 2 MOV to CR: "setting the CD flag to 0 when the NW flag is set to 1" raises #GP.
fn check_not_write_through_requires_cache_disable(cr0: Cr0) -> Result<(), GeneralProtection> {
    if cr0.contains(Cr0::NW) && !cr0.contains(Cr0::CD) {
        return Err(GeneralProtection::NotWriteThroughWithoutCacheDisable);
    }
    Ok(())
}

/// Vol. 2 MOV to CR: clearing CR0.WP while CR4.CET=1 raises #GP.
fn check_write_protect_kept_with_cet(cr0: Cr0, cr4: Cr4) -> Result<(), GeneralProtection> {
    if !cr0.contains(Cr0::WP) && cr4.contains(Cr4::CET) {
        return Err(GeneralProtection::WriteProtectOffWithCet);
    }
    Ok(())
}

/// Activating IA-32e mode (CR0.PG 0→1 with EFER.LME=1): CR4.PAE must be 1 (§4.1.2: "Paging
/// cannot be enabled ... while CR4.PAE = 0 and IA32_EFER.LME = 1"), and neither may CS have
/// its L bit set nor TR reference a 16-bit TSS (vol. 2 MOV to CR, protected-mode exceptions;
/// Bochs `SetCR0` checks the same).
fn check_long_mode_activation(state: &ControlState) -> Result<(), GeneralProtection> {
    if !state.cr4_flags().contains(Cr4::PAE) {
        return Err(GeneralProtection::LongModeWithoutPae);
    }
    if state.code_segment_long {
        return Err(GeneralProtection::LongModeWithLongCodeSegment);
    }
    if state.task_register_16_bit {
        return Err(GeneralProtection::LongModeWith16BitTaskSegment);
    }
    Ok(())
}

/// Disabling paging (CR0.PG 1→0): not from 64-bit mode (vol. 2 MOV to CR, 64-bit-mode
/// exceptions; §9.8.5.4 switches to compatibility mode first) and not with CR4.PCIDE=1
/// (§4.10.1).
fn check_paging_disable(state: &ControlState) -> Result<(), GeneralProtection> {
    if state.in_64_bit_mode() {
        return Err(GeneralProtection::PagingOffIn64BitMode);
    }
    if state.cr4_flags().contains(Cr4::PCIDE) {
        return Err(GeneralProtection::PagingOffWithPcid);
    }
    Ok(())
}

fn write_cr4(
    state: &ControlState,
    cr4: u64,
    supported: u64,
) -> Result<Transition, GeneralProtection> {
    check_cr4_reserved_bits(cr4, supported)?;
    let cr4 = Cr4::from_bits_retain(cr4);
    check_pae_kept_in_long_mode(state, cr4)?;
    check_pcid_requires_long_mode(state, cr4)?;
    check_pcid_enable_with_zero_pcid(state, cr4)?;
    check_la57_kept_in_long_mode(state, cr4)?;
    check_cet_requires_write_protect(state.cr0_flags(), cr4)?;
    let after = ControlState {
        cr4: cr4.bits(),
        ..*state
    };
    let before = state.cr4_flags();
    let changed = before ^ cr4;
    let turned_off = before - cr4;
    let turned_on = cr4 - before;
    let flush = if changed.contains(Cr4::PGE) || turned_off.contains(Cr4::PCIDE) {
        TranslationFlush::AllContexts
    } else if changed.contains(Cr4::PAE) || turned_on.contains(Cr4::SMEP) {
        TranslationFlush::CurrentContext
    } else {
        TranslationFlush::None
    };
    Ok(Transition {
        state: after,
        load_pae_pdptes: after.pae_paging()
            && changed.intersects(Cr4::PAE | Cr4::PGE | Cr4::PSE | Cr4::SMEP),
        flush,
    })
}

/// Vol. 2 MOV to CR: "write a 1 to any reserved bit in CR4" raises #GP. Which bits are
/// reserved depends on the processor's (and the guest's CPUID's) features.
fn check_cr4_reserved_bits(cr4: u64, supported: u64) -> Result<(), GeneralProtection> {
    if cr4 & !(supported & CR4_MODELLED) != 0 {
        return Err(GeneralProtection::Cr4ReservedBits);
    }
    Ok(())
}

/// §4.1.2: "CR4.PAE cannot be cleared while IA-32e paging is active".
fn check_pae_kept_in_long_mode(state: &ControlState, cr4: Cr4) -> Result<(), GeneralProtection> {
    if state.long_mode_active() && !cr4.contains(Cr4::PAE) {
        return Err(GeneralProtection::PaeOffInLongMode);
    }
    Ok(())
}

/// §2.5 and §4.10.1: CR4.PCIDE can be set only in IA-32e mode (IA32_EFER.LMA=1).
fn check_pcid_requires_long_mode(state: &ControlState, cr4: Cr4) -> Result<(), GeneralProtection> {
    if cr4.contains(Cr4::PCIDE) && !state.long_mode_active() {
        return Err(GeneralProtection::PcidOutsideLongMode);
    }
    Ok(())
}

/// §4.10.1; vol. 2 MOV to CR: changing CR4.PCIDE from 0 to 1 while CR3[11:0] ≠ 000H raises
/// #GP.
fn check_pcid_enable_with_zero_pcid(
    state: &ControlState,
    cr4: Cr4,
) -> Result<(), GeneralProtection> {
    let enabling = !state.cr4_flags().contains(Cr4::PCIDE) && cr4.contains(Cr4::PCIDE);
    if enabling && state.cr3 & CR3_PCID != 0 {
        return Err(GeneralProtection::PcidWithNonZeroCr3Pcid);
    }
    Ok(())
}

/// §2.5 CR4.LA57: the bit cannot be modified in IA-32e mode.
fn check_la57_kept_in_long_mode(state: &ControlState, cr4: Cr4) -> Result<(), GeneralProtection> {
    if state.long_mode_active() && (state.cr4_flags() ^ cr4).contains(Cr4::LA57) {
        return Err(GeneralProtection::La57ChangeInLongMode);
    }
    Ok(())
}

/// §2.5 CR4.CET: CET can be set only while CR0.WP is set; vol. 2 MOV to CR.
fn check_cet_requires_write_protect(cr0: Cr0, cr4: Cr4) -> Result<(), GeneralProtection> {
    if cr4.contains(Cr4::CET) && !cr0.contains(Cr0::WP) {
        return Err(GeneralProtection::CetWithoutWriteProtect);
    }
    Ok(())
}

fn write_efer(
    state: &ControlState,
    value: u64,
    supported: u64,
) -> Result<Transition, GeneralProtection> {
    check_efer_reserved_bits(value, supported)?;
    check_long_mode_enable_kept_while_paging(state, value)?;
    // §2.2.1 table 2-1: LMA is read-only; WRMSR keeps the processor's value.
    let mut efer = Efer::from_bits_retain(value);
    efer.set(Efer::LMA, state.long_mode_active());
    Ok(Transition::plain(ControlState {
        efer: efer.bits(),
        ..*state
    }))
}

/// Vol. 2 WRMSR: writing a non-zero value to reserved bits raises #GP.
fn check_efer_reserved_bits(value: u64, supported: u64) -> Result<(), GeneralProtection> {
    if value & !supported != 0 {
        return Err(GeneralProtection::EferReservedBits);
    }
    Ok(())
}

/// §4.1.2: "IA32_EFER.LME cannot be modified while paging is enabled (CR0.PG = 1). Attempts
/// to do so using WRMSR cause a general-protection exception (#GP(0))."
fn check_long_mode_enable_kept_while_paging(
    state: &ControlState,
    value: u64,
) -> Result<(), GeneralProtection> {
    let changed = state.efer_flags() ^ Efer::from_bits_retain(value);
    if state.paging() && changed.contains(Efer::LME) {
        return Err(GeneralProtection::LongModeEnableChangeWithPaging);
    }
    Ok(())
}

/// The PDPT's guest-physical address under PAE paging: CR3 bits 31:5 (§4.4.1).
pub fn pae_pdpt_address(cr3: u64) -> u64 {
    cr3 & 0xFFFF_FFE0
}

/// Whether a PAE PDPTE may be loaded (§4.4.1, table 4-8): a present entry must have bits 2:1,
/// 8:5 and 63:MAXPHYADDR clear, else the MOV to CR raises #GP(0). `physical_address_bits` is
/// MAXPHYADDR (CPUID.80000008H:EAX\[7:0\]).
pub fn pae_pdpte_is_valid(entry: u64, physical_address_bits: u8) -> bool {
    if entry & 1 == 0 {
        return true;
    }
    let above_physical = match physical_address_bits {
        0..=63 => !0u64 << physical_address_bits,
        _ => 0,
    };
    entry & (0b110 | 0b1_1110_0000 | above_physical) == 0
}

/// The processor's VMX fixed bits for CR0 and CR4 (IA32_VMX_CR0_FIXED0/1 and
/// IA32_VMX_CR4_FIXED0/1, SDM appendix A.7, A.8): a bit set in FIXED0 must be 1, a bit clear
/// in FIXED1 must be 0. The guest is an unrestricted guest (Tessera requires the control), so
/// CR0.PE and CR0.PG are exempt from FIXED0 (§27.3.1.1 / §26.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxFixedBits {
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
}

/// CR0 bits an unrestricted guest may have clear despite FIXED0 (§25.6.2, §27.3.1.1).
const UNRESTRICTED_GUEST_RELAXED: u64 = Cr0::PE.union(Cr0::PG).bits();

impl VmxFixedBits {
    /// The CR0 guest/host mask (§25.6.6): the bits VMX fixes, so a guest write that changes
    /// them exits and the guest reads them from the read shadow. This is what the VMX backend
    /// already uses; on real processors it is CR0.NE alone, so the MOV to CR0 that exits is
    /// the one that flips NE — such as the long-mode switch writing PG|NE|PE.
    pub fn cr0_guest_host_mask(&self) -> u64 {
        ((self.cr0_fixed0 & !UNRESTRICTED_GUEST_RELAXED) | !self.cr0_fixed1) & 0xFFFF_FFFF
    }

    /// The CR4 guest/host mask: the bits VMX fixes (CR4.VMXE, and any bit the processor
    /// lacks), as the VMX backend already uses. [`SupportedBits::vmx_guest`] excludes every
    /// one of them, so each guest write that exits under this mask is one that sets a bit the
    /// guest may not have, and [`write()`] answers #GP. Bits 63:32 stay unowned: the processor
    /// handles them (FRED included) without the hypervisor.
    pub fn cr4_guest_host_mask(&self) -> u64 {
        (self.cr4_fixed0 | !self.cr4_fixed1) & 0xFFFF_FFFF
    }
}

/// The VMCS values for a guest-visible control state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcsControlRegisters {
    /// GUEST_CR0 (0x6800): the guest's CR0 with the VMX fixed bits forced.
    pub guest_cr0: u64,
    /// CR0_READ_SHADOW (0x6004): what the guest wrote.
    pub cr0_read_shadow: u64,
    /// GUEST_CR4 (0x6804): the guest's CR4 with the VMX fixed bits forced.
    pub guest_cr4: u64,
    /// CR4_READ_SHADOW (0x6006): what the guest wrote.
    pub cr4_read_shadow: u64,
    /// GUEST_IA32_EFER (0x2806), loaded by the "load IA32_EFER" VM-entry control.
    pub guest_efer: u64,
    /// The "IA-32e mode guest" VM-entry control: equal to EFER.LMA.
    pub ia32e_mode_guest: bool,
}

impl VmcsControlRegisters {
    /// `entry_controls` with the "IA-32e mode guest" bit set or cleared to match.
    pub fn entry_controls(&self, entry_controls: u32) -> u32 {
        if self.ia32e_mode_guest {
            entry_controls | ENTRY_IA32E_MODE_GUEST
        } else {
            entry_controls & !ENTRY_IA32E_MODE_GUEST
        }
    }
}

/// The VMCS values that make the processor run `state` (SDM vol. 3 §25.6.6, §27.3.2.1):
/// real CR0/CR4 = the guest's value with the VMX fixed bits forced (PE and PG exempt), read
/// shadows = the guest's value, EFER as the guest sees it, "IA-32e mode guest" = EFER.LMA.
/// Every bit the fixed bits change is in the guest/host masks of [`VmxFixedBits`], so the
/// guest reads back exactly `state` ([`guest_visible`]).
pub fn vmcs_values(state: &ControlState, fixed: &VmxFixedBits) -> VmcsControlRegisters {
    VmcsControlRegisters {
        guest_cr0: apply_fixed_bits(
            state.cr0,
            fixed.cr0_fixed0,
            fixed.cr0_fixed1,
            UNRESTRICTED_GUEST_RELAXED,
        ),
        cr0_read_shadow: state.cr0,
        guest_cr4: apply_fixed_bits(state.cr4, fixed.cr4_fixed0, fixed.cr4_fixed1, 0),
        cr4_read_shadow: state.cr4,
        guest_efer: state.efer,
        ia32e_mode_guest: state.long_mode_active(),
    }
}

/// What a guest reads from CR0 or CR4 (§25.6.6): owned bits (set in the guest/host mask) from
/// the read shadow, the others from the real register. Also how the backend reconstructs the
/// guest-visible state at a VM exit, since unowned bits may have changed without one.
pub fn guest_visible(real: u64, read_shadow: u64, guest_host_mask: u64) -> u64 {
    (real & !guest_host_mask) | (read_shadow & guest_host_mask)
}

/// A VM-entry check on control registers and EFER that fails (SDM vol. 3 §27.3.1.1 in newer
/// editions, §26.3.1.1 in older ones, "Checks on Guest Control Registers, Debug Registers,
/// and MSRs").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryCheckFailure {
    /// A bit set in IA32_VMX_CR0_FIXED0 (other than PE, PG) is clear in GUEST_CR0.
    Cr0MissingFixedBit,
    /// A bit clear in IA32_VMX_CR0_FIXED1 is set in GUEST_CR0.
    Cr0ForbiddenBit,
    /// Unrestricted guest: CR0.PG=1 requires CR0.PE=1.
    PagingWithoutProtection,
    /// A bit set in IA32_VMX_CR4_FIXED0 is clear in GUEST_CR4.
    Cr4MissingFixedBit,
    /// A bit clear in IA32_VMX_CR4_FIXED1 is set in GUEST_CR4.
    Cr4ForbiddenBit,
    /// "IA-32e mode guest" = 1 requires CR0.PG=1.
    Ia32eModeWithoutPaging,
    /// "IA-32e mode guest" = 1 requires CR4.PAE=1.
    Ia32eModeWithoutPae,
    /// "IA-32e mode guest" = 0 requires CR4.PCIDE=0.
    PcidOutsideIa32eMode,
    /// CR4.CET=1 requires CR0.WP=1.
    CetWithoutWriteProtect,
    /// "Load IA32_EFER": reserved EFER bits must be 0.
    EferReservedBits,
    /// "Load IA32_EFER": EFER.LMA must equal "IA-32e mode guest".
    LongModeActiveMismatch,
    /// "Load IA32_EFER": with CR0.PG=1, EFER.LME must equal EFER.LMA (Bochs: "VMCS guest
    /// EFER ... inconsistent value").
    LongModeEnableMismatch,
}

/// The VM-entry checks on GUEST_CR0, GUEST_CR4, GUEST_IA32_EFER and the "IA-32e mode guest"
/// control for an unrestricted guest with "load IA32_EFER" set (SDM vol. 3 §27.3.1.1 /
/// §26.3.1.1). `efer_supported` is the processor's set of IA32_EFER bits.
pub fn check_vm_entry(
    values: &VmcsControlRegisters,
    fixed: &VmxFixedBits,
    efer_supported: u64,
) -> Result<(), EntryCheckFailure> {
    use EntryCheckFailure as Failure;
    let cr0 = values.guest_cr0;
    let cr4 = values.guest_cr4;
    let efer = values.guest_efer;
    let ia32e = values.ia32e_mode_guest;
    if !cr0 & fixed.cr0_fixed0 & !UNRESTRICTED_GUEST_RELAXED != 0 {
        return Err(Failure::Cr0MissingFixedBit);
    }
    if cr0 & !fixed.cr0_fixed1 != 0 {
        return Err(Failure::Cr0ForbiddenBit);
    }
    let cr0 = Cr0::from_bits_retain(cr0);
    if cr0.contains(Cr0::PG) && !cr0.contains(Cr0::PE) {
        return Err(Failure::PagingWithoutProtection);
    }
    if !cr4 & fixed.cr4_fixed0 != 0 {
        return Err(Failure::Cr4MissingFixedBit);
    }
    if cr4 & !fixed.cr4_fixed1 != 0 {
        return Err(Failure::Cr4ForbiddenBit);
    }
    let cr4 = Cr4::from_bits_retain(cr4);
    if ia32e && !cr0.contains(Cr0::PG) {
        return Err(Failure::Ia32eModeWithoutPaging);
    }
    if ia32e && !cr4.contains(Cr4::PAE) {
        return Err(Failure::Ia32eModeWithoutPae);
    }
    if !ia32e && cr4.contains(Cr4::PCIDE) {
        return Err(Failure::PcidOutsideIa32eMode);
    }
    if cr4.contains(Cr4::CET) && !cr0.contains(Cr0::WP) {
        return Err(Failure::CetWithoutWriteProtect);
    }
    if efer & !efer_supported != 0 {
        return Err(Failure::EferReservedBits);
    }
    let efer = Efer::from_bits_retain(efer);
    let lma = efer.contains(Efer::LMA);
    if lma != ia32e {
        return Err(Failure::LongModeActiveMismatch);
    }
    if cr0.contains(Cr0::PG) && lma != efer.contains(Efer::LME) {
        return Err(Failure::LongModeEnableMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// A Skylake-like processor: CR0 FIXED0 = PE|NE|PG, FIXED1 = bits 31:0; CR4 FIXED0 = VMXE,
    /// FIXED1 = VME..LA57 minus reserved, VMXE, SMXE, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP,
    /// PKE, CET.
    const FIXED: VmxFixedBits = VmxFixedBits {
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xFFFF_FFFF,
        cr4_fixed0: 0x2000,
        cr4_fixed1: 0x00F7_7FFF,
    };
    /// CPUID.80000001H:EDX with SYSCALL, XD and Intel 64.
    const EXTENDED_EDX: u32 = (1 << 11) | (1 << 20) | (1 << 29);

    fn supported() -> SupportedBits {
        SupportedBits::vmx_guest(FIXED.cr4_fixed1, EXTENDED_EDX)
    }

    fn state(cr0: u64, cr4: u64, efer: u64) -> ControlState {
        ControlState {
            cr0,
            cr3: 0x1000,
            cr4,
            efer,
            code_segment_long: false,
            task_register_16_bit: false,
        }
    }

    /// After INIT / reset (SDM §9.1.1 table 9-1): CD | NW | ET.
    fn reset_state() -> ControlState {
        state(0x6000_0010, 0, 0)
    }

    /// The PVH entry: PE | ET, paging off.
    fn pvh_state() -> ControlState {
        state(0x11, 0, 0)
    }

    /// 64-bit mode as Linux's 64-bit boot protocol enters it.
    fn long_mode_state() -> ControlState {
        ControlState {
            code_segment_long: true,
            ..state(0x8000_0011, Cr4::PAE.bits(), (Efer::LME | Efer::LMA).bits())
        }
    }

    /// Compatibility mode: IA-32e mode with a 32-bit code segment.
    fn compatibility_mode_state() -> ControlState {
        ControlState {
            code_segment_long: false,
            ..long_mode_state()
        }
    }

    fn apply(state: &ControlState, write_: ControlWrite) -> Result<Transition, GeneralProtection> {
        write(state, write_, &supported())
    }

    fn after(state: &ControlState, write_: ControlWrite) -> ControlState {
        apply(state, write_)
            .expect("the write does not fault")
            .state
    }

    fn assert_enters(state: &ControlState) {
        let values = vmcs_values(state, &FIXED);
        assert_eq!(
            check_vm_entry(&values, &FIXED, supported().efer),
            Ok(()),
            "{state:x?} -> {values:x?}"
        );
    }

    // The table of transitions, each named after the rule it checks.

    #[test]
    fn pg_set_with_lme_activates_long_mode_sdm_9_8_5() {
        let prepared = state(0x11, Cr4::PAE.bits(), Efer::LME.bits());
        let transition = apply(&prepared, ControlWrite::Cr0(0x8000_0011)).unwrap();
        assert_eq!(transition.state.efer, (Efer::LME | Efer::LMA).bits());
        assert!(transition.state.long_mode_active());
        assert!(vmcs_values(&transition.state, &FIXED).ia32e_mode_guest);
        assert!(
            !transition.load_pae_pdptes,
            "IA-32e paging has no PDPTE registers"
        );
        assert_eq!(transition.flush, TranslationFlush::AllContexts);
        assert_enters(&transition.state);
    }

    #[test]
    fn pg_set_without_lme_keeps_legacy_paging_sdm_4_1_2() {
        let prepared = state(0x11, 0, 0);
        let paged = after(&prepared, ControlWrite::Cr0(0x8000_0011));
        assert!(!paged.long_mode_active());
        assert!(!vmcs_values(&paged, &FIXED).ia32e_mode_guest);
        assert_enters(&paged);
    }

    #[test]
    fn pg_clear_in_compatibility_mode_deactivates_long_mode_sdm_9_8_5_4() {
        let transition = apply(&compatibility_mode_state(), ControlWrite::Cr0(0x11)).unwrap();
        assert_eq!(transition.state.efer, Efer::LME.bits());
        assert!(!vmcs_values(&transition.state, &FIXED).ia32e_mode_guest);
        assert_eq!(transition.flush, TranslationFlush::AllContexts);
        assert_enters(&transition.state);
    }

    #[test]
    fn pg_clear_in_64_bit_mode_faults_sdm_vol2_mov_cr() {
        assert_eq!(
            apply(&long_mode_state(), ControlWrite::Cr0(0x11)),
            Err(GeneralProtection::PagingOffIn64BitMode)
        );
    }

    #[test]
    fn pg_without_pe_faults_sdm_vol2_mov_cr() {
        assert_eq!(
            apply(&reset_state(), ControlWrite::Cr0(0x8000_0000)),
            Err(GeneralProtection::PagingWithoutProtection)
        );
        // Clearing PE under paging is the same invalid combination.
        assert_eq!(
            apply(&compatibility_mode_state(), ControlWrite::Cr0(0x8000_0010)),
            Err(GeneralProtection::PagingWithoutProtection)
        );
    }

    #[test]
    fn pg_with_lme_without_pae_faults_sdm_4_1_2() {
        assert_eq!(
            apply(
                &state(0x11, 0, Efer::LME.bits()),
                ControlWrite::Cr0(0x8000_0011)
            ),
            Err(GeneralProtection::LongModeWithoutPae)
        );
    }

    #[test]
    fn long_mode_activation_with_cs_l_faults_sdm_vol2_mov_cr() {
        let prepared = ControlState {
            code_segment_long: true,
            ..state(0x11, Cr4::PAE.bits(), Efer::LME.bits())
        };
        assert_eq!(
            apply(&prepared, ControlWrite::Cr0(0x8000_0011)),
            Err(GeneralProtection::LongModeWithLongCodeSegment)
        );
    }

    #[test]
    fn long_mode_activation_with_16_bit_tss_faults_sdm_vol2_mov_cr() {
        let prepared = ControlState {
            task_register_16_bit: true,
            ..state(0x11, Cr4::PAE.bits(), Efer::LME.bits())
        };
        assert_eq!(
            apply(&prepared, ControlWrite::Cr0(0x8000_0011)),
            Err(GeneralProtection::LongModeWith16BitTaskSegment)
        );
    }

    #[test]
    fn pae_clear_in_long_mode_faults_sdm_4_1_2() {
        assert_eq!(
            apply(&compatibility_mode_state(), ControlWrite::Cr4(0)),
            Err(GeneralProtection::PaeOffInLongMode)
        );
        // Outside IA-32e mode PAE may go: PAE paging to 32-bit paging (§4.1.2).
        let pae_paging = state(0x8000_0011, Cr4::PAE.bits(), 0);
        assert_eq!(after(&pae_paging, ControlWrite::Cr4(0)).cr4, 0);
    }

    #[test]
    fn cr0_high_bits_fault_in_64_bit_mode_sdm_2_5() {
        assert_eq!(
            apply(&long_mode_state(), ControlWrite::Cr0(0x1_8000_0011)),
            Err(GeneralProtection::Cr0ReservedBits)
        );
    }

    #[test]
    fn cr0_operand_is_32_bits_outside_64_bit_mode_sdm_vol2_mov_cr() {
        // A 32-bit MOV to CR0 never sees the upper half of the register.
        assert_eq!(
            after(&pvh_state(), ControlWrite::Cr0(0xDEAD_0000_0000_0011)).cr0,
            0x11
        );
        assert_eq!(
            after(
                &compatibility_mode_state(),
                ControlWrite::Cr4(0x1_0000_0020)
            )
            .cr4,
            Cr4::PAE.bits()
        );
    }

    #[test]
    fn cr0_reserved_low_bits_are_ignored_and_et_reads_one_sdm_2_5() {
        // Bits 15:6, 17, 28:19 are reserved, ET is hardwired to 1.
        assert_eq!(
            after(&pvh_state(), ControlWrite::Cr0(0x1FFA_FFC1)).cr0,
            0x11
        );
        assert_eq!(after(&pvh_state(), ControlWrite::Cr0(0x1)).cr0, 0x11);
    }

    #[test]
    fn nw_without_cd_faults_sdm_vol2_mov_cr() {
        assert_eq!(
            apply(&reset_state(), ControlWrite::Cr0(0x2000_0010)),
            Err(GeneralProtection::NotWriteThroughWithoutCacheDisable)
        );
        // CD alone and CD with NW are fine (§11.5.1 table 11-5).
        assert_eq!(
            after(&reset_state(), ControlWrite::Cr0(0x4000_0010)).cr0,
            0x4000_0010
        );
        assert_eq!(
            after(&reset_state(), ControlWrite::Cr0(0x6000_0010)).cr0,
            0x6000_0010
        );
    }

    #[test]
    fn cr4_reserved_bits_fault_sdm_2_5() {
        // Bit 15 is reserved everywhere, VMXE is hidden from the guest, bit 32 (FRED) is not
        // modelled.
        for bit in [15, 13, 32] {
            assert_eq!(
                apply(
                    &long_mode_state(),
                    ControlWrite::Cr4(Cr4::PAE.bits() | 1 << bit)
                ),
                Err(GeneralProtection::Cr4ReservedBits),
                "CR4 bit {bit}"
            );
        }
        // Bits the processor lacks (not in IA32_VMX_CR4_FIXED1).
        let narrow = SupportedBits::vmx_guest(0x7FF, EXTENDED_EDX);
        assert_eq!(
            write(&pvh_state(), ControlWrite::Cr4(Cr4::SMEP.bits()), &narrow),
            Err(GeneralProtection::Cr4ReservedBits)
        );
    }

    #[test]
    fn pcide_outside_long_mode_faults_sdm_4_10_1() {
        assert_eq!(
            apply(
                &state(0x8000_0011, Cr4::PAE.bits(), 0),
                ControlWrite::Cr4((Cr4::PAE | Cr4::PCIDE).bits())
            ),
            Err(GeneralProtection::PcidOutsideLongMode)
        );
    }

    #[test]
    fn pcide_enable_with_nonzero_cr3_pcid_faults_sdm_4_10_1() {
        let with_pcid = ControlState {
            cr3: 0x1005,
            ..long_mode_state()
        };
        assert_eq!(
            apply(
                &with_pcid,
                ControlWrite::Cr4((Cr4::PAE | Cr4::PCIDE).bits())
            ),
            Err(GeneralProtection::PcidWithNonZeroCr3Pcid)
        );
        let transition = apply(
            &long_mode_state(),
            ControlWrite::Cr4((Cr4::PAE | Cr4::PCIDE).bits()),
        )
        .unwrap();
        assert_eq!(transition.state.cr4, (Cr4::PAE | Cr4::PCIDE).bits());
        assert_enters(&transition.state);
    }

    #[test]
    fn pg_clear_with_pcide_faults_sdm_4_10_1() {
        let with_pcid = ControlState {
            cr4: (Cr4::PAE | Cr4::PCIDE).bits(),
            ..compatibility_mode_state()
        };
        assert_eq!(
            apply(&with_pcid, ControlWrite::Cr0(0x11)),
            Err(GeneralProtection::PagingOffWithPcid)
        );
    }

    #[test]
    fn pcide_clear_flushes_every_context_sdm_4_10_4_1() {
        let with_pcid = ControlState {
            cr4: (Cr4::PAE | Cr4::PCIDE).bits(),
            ..long_mode_state()
        };
        let transition = apply(&with_pcid, ControlWrite::Cr4(Cr4::PAE.bits())).unwrap();
        assert_eq!(transition.flush, TranslationFlush::AllContexts);
    }

    #[test]
    fn la57_change_in_long_mode_faults_sdm_2_5() {
        assert_eq!(
            apply(
                &long_mode_state(),
                ControlWrite::Cr4((Cr4::PAE | Cr4::LA57).bits())
            ),
            Err(GeneralProtection::La57ChangeInLongMode)
        );
        // Before paging is on, LA57 may be set (the 5-level boot path).
        assert_eq!(
            after(
                &pvh_state(),
                ControlWrite::Cr4((Cr4::PAE | Cr4::LA57).bits())
            )
            .cr4,
            (Cr4::PAE | Cr4::LA57).bits()
        );
    }

    #[test]
    fn cet_requires_write_protect_sdm_vol2_mov_cr() {
        assert_eq!(
            apply(
                &long_mode_state(),
                ControlWrite::Cr4((Cr4::PAE | Cr4::CET).bits())
            ),
            Err(GeneralProtection::CetWithoutWriteProtect)
        );
        let protected = after(&long_mode_state(), ControlWrite::Cr0(0x8001_0011));
        let with_cet = after(&protected, ControlWrite::Cr4((Cr4::PAE | Cr4::CET).bits()));
        assert_eq!(
            apply(&with_cet, ControlWrite::Cr0(0x8000_0011)),
            Err(GeneralProtection::WriteProtectOffWithCet)
        );
        assert_enters(&with_cet);
    }

    #[test]
    fn efer_reserved_bits_fault_sdm_2_2_1_wrmsr() {
        // Bit 9 is reserved; SVME (bit 12) does not exist on Intel.
        for bit in [1, 9, 12, 63] {
            assert_eq!(
                apply(&pvh_state(), ControlWrite::Efer(1 << bit)),
                Err(GeneralProtection::EferReservedBits),
                "EFER bit {bit}"
            );
        }
        // Without Intel 64, LME is reserved too.
        let no_long_mode = SupportedBits {
            efer: efer_supported(1 << 20),
            ..supported()
        };
        assert_eq!(
            write(
                &pvh_state(),
                ControlWrite::Efer(Efer::LME.bits()),
                &no_long_mode
            ),
            Err(GeneralProtection::EferReservedBits)
        );
    }

    #[test]
    fn lme_change_while_paging_faults_sdm_4_1_2() {
        let legacy_paging = state(0x8000_0011, Cr4::PAE.bits(), 0);
        assert_eq!(
            apply(&legacy_paging, ControlWrite::Efer(Efer::LME.bits())),
            Err(GeneralProtection::LongModeEnableChangeWithPaging)
        );
        assert_eq!(
            apply(&long_mode_state(), ControlWrite::Efer(Efer::LMA.bits())),
            Err(GeneralProtection::LongModeEnableChangeWithPaging)
        );
        // NXE and SCE may change under paging.
        assert_eq!(
            after(&long_mode_state(), ControlWrite::Efer(0xD01)).efer,
            (Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE).bits()
        );
    }

    #[test]
    fn lme_change_with_paging_off_is_allowed_sdm_9_8_5() {
        assert_eq!(
            after(&pvh_state(), ControlWrite::Efer(Efer::LME.bits())).efer,
            Efer::LME.bits()
        );
        assert_eq!(
            after(&state(0x11, 0, Efer::LME.bits()), ControlWrite::Efer(0)).efer,
            0
        );
    }

    #[test]
    fn efer_lma_is_read_only_sdm_2_2_1() {
        // Writing LMA=1 outside IA-32e mode does not activate it...
        assert_eq!(
            after(
                &pvh_state(),
                ControlWrite::Efer((Efer::LME | Efer::LMA).bits())
            )
            .efer,
            Efer::LME.bits()
        );
        // ...and writing LMA=0 inside it does not leave it.
        assert_eq!(
            after(&long_mode_state(), ControlWrite::Efer(Efer::LME.bits())).efer,
            (Efer::LME | Efer::LMA).bits()
        );
    }

    #[test]
    fn lmsw_sets_pe_but_cannot_clear_it_sdm_vol2_lmsw() {
        assert_eq!(after(&state(0x10, 0, 0), ControlWrite::Lmsw(1)).cr0, 0x11);
        assert_eq!(after(&pvh_state(), ControlWrite::Lmsw(0)).cr0, 0x11);
    }

    #[test]
    fn lmsw_touches_only_bits_3_to_0_sdm_vol2_lmsw() {
        let start = state(0x8005_0033, Cr4::PAE.bits(), 0);
        // MP, EM, TS from the source; bits 15:4 of the source ignored; PG, NE, WP, AM kept.
        assert_eq!(after(&start, ControlWrite::Lmsw(0xFFFC)).cr0, 0x8005_003D);
    }

    #[test]
    fn clts_clears_ts_sdm_vol2_clts() {
        let with_ts = state(0x8000_0019, 0, 0);
        let transition = apply(&with_ts, ControlWrite::Clts).unwrap();
        assert_eq!(transition.state.cr0, 0x8000_0011);
        assert_eq!(transition.flush, TranslationFlush::None);
    }

    #[test]
    fn pae_paging_enable_loads_pdptes_sdm_4_4_1() {
        let prepared = state(0x11, Cr4::PAE.bits(), 0);
        let transition = apply(&prepared, ControlWrite::Cr0(0x8000_0011)).unwrap();
        assert!(transition.load_pae_pdptes);
        // Toggling PGE under PAE paging reloads them and flushes globals; MP does neither.
        let paged = transition.state;
        let transition = apply(&paged, ControlWrite::Cr4((Cr4::PAE | Cr4::PGE).bits())).unwrap();
        assert!(transition.load_pae_pdptes);
        assert_eq!(transition.flush, TranslationFlush::AllContexts);
        let transition = apply(&paged, ControlWrite::Cr0(0x8000_0013)).unwrap();
        assert!(!transition.load_pae_pdptes);
        assert_eq!(transition.flush, TranslationFlush::None);
        // Switching 32-bit paging to PAE paging reloads them and flushes the current PCID.
        let thirty_two_bit = state(0x8000_0011, 0, 0);
        let transition = apply(&thirty_two_bit, ControlWrite::Cr4(Cr4::PAE.bits())).unwrap();
        assert!(transition.load_pae_pdptes);
        assert_eq!(transition.flush, TranslationFlush::CurrentContext);
    }

    #[test]
    fn smep_enable_flushes_current_context_sdm_4_10_4_1() {
        let transition = apply(
            &long_mode_state(),
            ControlWrite::Cr4((Cr4::PAE | Cr4::SMEP).bits()),
        )
        .unwrap();
        assert_eq!(transition.flush, TranslationFlush::CurrentContext);
        assert!(!transition.load_pae_pdptes);
        let transition = apply(&transition.state, ControlWrite::Cr4(Cr4::PAE.bits())).unwrap();
        assert_eq!(transition.flush, TranslationFlush::None);
    }

    #[test]
    fn pae_pdptes_are_checked_for_reserved_bits_sdm_4_4_1() {
        assert!(pae_pdpte_is_valid(0, 36));
        assert!(pae_pdpte_is_valid(0x0000_000F_FFFF_F019, 36)); // P, PWT, PCD, address < 2^36
        assert!(pae_pdpte_is_valid(0xFFFF_FFFF_FFFF_FFFE, 36)); // not present: anything goes
        assert!(!pae_pdpte_is_valid(0x1003, 36)); // R/W is reserved in a PDPTE
        assert!(!pae_pdpte_is_valid(0x1081, 36)); // bit 7
        assert!(!pae_pdpte_is_valid(0x10_0000_1001, 36)); // above MAXPHYADDR
        assert!(pae_pdpte_is_valid(0x10_0000_1001, 39));
        assert_eq!(pae_pdpt_address(0xFFFF_FFFF_1234_567F), 0x1234_5660);
    }

    #[test]
    fn efer_supported_follows_cpuid() {
        assert_eq!(efer_supported(0), 0);
        assert_eq!(efer_supported(1 << 11), Efer::SCE.bits());
        assert_eq!(efer_supported(1 << 20), Efer::NXE.bits());
        assert_eq!(
            efer_supported(1 << 29),
            (Efer::SCE | Efer::LME | Efer::LMA).bits()
        );
    }

    // The VMCS values and the VM-entry predicate.

    #[test]
    fn vmcs_values_force_fixed_bits_and_shadow_the_guest_sdm_25_6_6() {
        let values = vmcs_values(&reset_state(), &FIXED);
        // NE forced on, PE and PG exempt for an unrestricted guest.
        assert_eq!(values.guest_cr0, 0x6000_0030);
        assert_eq!(values.cr0_read_shadow, 0x6000_0010);
        assert_eq!(values.guest_cr4, Cr4::VMXE.bits());
        assert_eq!(values.cr4_read_shadow, 0);
        let cr0_mask = FIXED.cr0_guest_host_mask();
        let cr4_mask = FIXED.cr4_guest_host_mask();
        assert_eq!(cr0_mask, Cr0::NE.bits());
        assert_ne!(cr4_mask & Cr4::VMXE.bits(), 0);
        assert_eq!(
            guest_visible(values.guest_cr0, values.cr0_read_shadow, cr0_mask),
            0x6000_0010
        );
        assert_eq!(
            guest_visible(values.guest_cr4, values.cr4_read_shadow, cr4_mask),
            0
        );
        assert_eq!(
            values.entry_controls(0xFFFF),
            0xFFFF & !ENTRY_IA32E_MODE_GUEST
        );
        assert_enters(&reset_state());
    }

    #[test]
    fn start_states_pass_vm_entry_checks() {
        for start in [reset_state(), pvh_state(), long_mode_state()] {
            assert_enters(&start);
        }
        let values = vmcs_values(&long_mode_state(), &FIXED);
        assert!(values.ia32e_mode_guest);
        assert_eq!(values.entry_controls(0), ENTRY_IA32E_MODE_GUEST);
    }

    #[test]
    fn storing_pg_without_lma_fails_vm_entry_like_bochs_reported() {
        // What the backend did before: GUEST_CR0 with PG, GUEST_EFER = LME, control clear.
        let naive = VmcsControlRegisters {
            guest_cr0: 0x8000_0031,
            cr0_read_shadow: 0x8000_0031,
            guest_cr4: (Cr4::PAE | Cr4::VMXE).bits(),
            cr4_read_shadow: Cr4::PAE.bits(),
            guest_efer: Efer::LME.bits(),
            ia32e_mode_guest: false,
        };
        assert_eq!(
            check_vm_entry(&naive, &FIXED, supported().efer),
            Err(EntryCheckFailure::LongModeEnableMismatch)
        );
    }

    #[test]
    fn vm_entry_checks_each_rule_sdm_27_3_1_1() {
        let good = vmcs_values(&long_mode_state(), &FIXED);
        let efer = supported().efer;
        let check = |values: VmcsControlRegisters| check_vm_entry(&values, &FIXED, efer);
        assert_eq!(check(good), Ok(()));
        let cases = [
            (
                VmcsControlRegisters {
                    guest_cr0: good.guest_cr0 & !Cr0::NE.bits(),
                    ..good
                },
                EntryCheckFailure::Cr0MissingFixedBit,
            ),
            (
                VmcsControlRegisters {
                    guest_cr0: good.guest_cr0 | 1 << 32,
                    ..good
                },
                EntryCheckFailure::Cr0ForbiddenBit,
            ),
            (
                VmcsControlRegisters {
                    guest_cr0: good.guest_cr0 & !Cr0::PE.bits(),
                    ..good
                },
                EntryCheckFailure::PagingWithoutProtection,
            ),
            (
                VmcsControlRegisters {
                    guest_cr4: good.guest_cr4 & !Cr4::VMXE.bits(),
                    ..good
                },
                EntryCheckFailure::Cr4MissingFixedBit,
            ),
            (
                VmcsControlRegisters {
                    guest_cr4: good.guest_cr4 | 1 << 15,
                    ..good
                },
                EntryCheckFailure::Cr4ForbiddenBit,
            ),
            (
                VmcsControlRegisters {
                    guest_cr0: 0x31,
                    ..good
                },
                EntryCheckFailure::Ia32eModeWithoutPaging,
            ),
            (
                VmcsControlRegisters {
                    guest_cr4: Cr4::VMXE.bits(),
                    ..good
                },
                EntryCheckFailure::Ia32eModeWithoutPae,
            ),
            (
                VmcsControlRegisters {
                    guest_cr4: good.guest_cr4 | Cr4::PCIDE.bits(),
                    ia32e_mode_guest: false,
                    ..good
                },
                EntryCheckFailure::PcidOutsideIa32eMode,
            ),
            (
                VmcsControlRegisters {
                    guest_cr4: good.guest_cr4 | Cr4::CET.bits(),
                    ..good
                },
                EntryCheckFailure::CetWithoutWriteProtect,
            ),
            (
                VmcsControlRegisters {
                    guest_efer: good.guest_efer | 1 << 9,
                    ..good
                },
                EntryCheckFailure::EferReservedBits,
            ),
            (
                VmcsControlRegisters {
                    ia32e_mode_guest: false,
                    ..good
                },
                EntryCheckFailure::LongModeActiveMismatch,
            ),
            (
                VmcsControlRegisters {
                    guest_efer: Efer::LME.bits(),
                    ia32e_mode_guest: false,
                    ..good
                },
                EntryCheckFailure::LongModeEnableMismatch,
            ),
        ];
        for (values, failure) in cases {
            assert_eq!(check(values), Err(failure), "{values:x?}");
        }
    }

    // The scenario of the issue: the textbook long-mode switch and Linux's AP trampoline.

    /// PAE, CR3, EFER.LME by WRMSR, then one MOV to CR0 with `cr0`.
    fn long_mode_switch(start: ControlState, cr4: u64, efer: u64, cr0: u64) -> ControlState {
        let mut current = start;
        if current.cr0 & Cr0::PE.bits() == 0 {
            // Real mode first enters protected mode (Linux: `movl $X86_CR0_PE, %eax; mov
            // %eax, %cr0`; it leaves NE clear, so with NE owned it does not even exit).
            current = after(&current, ControlWrite::Cr0(Cr0::PE.bits()));
        }
        current = after(&current, ControlWrite::Cr4(cr4));
        current.cr3 = 0x9_C000; // MOV to CR3 does not exit with EPT
        current = after(&current, ControlWrite::Efer(efer));
        let transition = apply(&current, ControlWrite::Cr0(cr0)).unwrap();
        assert_eq!(transition.flush, TranslationFlush::AllContexts);
        transition.state
    }

    #[test]
    fn textbook_long_mode_switch_gets_lma_and_entry_control() {
        for start in [reset_state(), pvh_state()] {
            let switched = long_mode_switch(
                start,
                Cr4::PAE.bits(),
                Efer::LME.bits(),
                (Cr0::PG | Cr0::NE | Cr0::PE).bits(),
            );
            assert_eq!(switched.cr0, 0x8000_0031);
            assert_eq!(switched.efer, (Efer::LME | Efer::LMA).bits());
            let values = vmcs_values(&switched, &FIXED);
            assert!(values.ia32e_mode_guest);
            assert_eq!(values.guest_efer, 0x500);
            assert_eq!(values.entry_controls(0), ENTRY_IA32E_MODE_GUEST);
            assert_enters(&switched);
        }
    }

    #[test]
    fn linux_ap_trampoline_gets_lma_and_entry_control() {
        // arch/x86/realmode/rm/trampoline_64.S: CR0_STATE = PE|MP|ET|NE|WP|AM|PG, CR4 from
        // the boot CPU (PAE, PGE, OSFXSR, OSXMMEXCPT), EFER = SCE|LME|NXE.
        let cr0_state =
            (Cr0::PE | Cr0::MP | Cr0::ET | Cr0::NE | Cr0::WP | Cr0::AM | Cr0::PG).bits();
        assert_eq!(cr0_state, 0x8005_0033);
        let cr4 = (Cr4::PAE | Cr4::PGE).bits() | 1 << 9 | 1 << 10;
        for start in [reset_state(), pvh_state()] {
            let switched = long_mode_switch(
                start,
                cr4,
                (Efer::SCE | Efer::LME | Efer::NXE).bits(),
                cr0_state,
            );
            assert_eq!(switched.cr0, 0x8005_0033);
            assert_eq!(
                switched.efer,
                (Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE).bits()
            );
            let values = vmcs_values(&switched, &FIXED);
            assert!(values.ia32e_mode_guest);
            assert_eq!(values.guest_cr4, cr4 | Cr4::VMXE.bits());
            assert_eq!(values.cr4_read_shadow, cr4);
            assert_enters(&switched);
        }
    }

    // The property: from every start state, any sequence of writes either faults or yields a
    // state whose VMCS values pass VM entry and read back as the guest's own.

    /// A guest action between writes that does not exit: loading CS or TR, or MOV to CR3.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Write(ControlWrite),
        /// A far jump to a code segment with this L bit (L=1 only counts in IA-32e mode).
        FarJump {
            long: bool,
        },
        /// LTR of a 16-bit (true) or 32/64-bit TSS; in IA-32e mode only the latter loads.
        LoadTaskRegister {
            sixteen_bit: bool,
        },
        /// MOV to CR3 (PCID in bits 11:0).
        MoveToCr3(u64),
    }

    /// Values that hit the interesting bits often and everything else sometimes.
    fn register_value(interesting: u64) -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => (any::<u64>()).prop_map(move |bits| bits & interesting),
            1 => any::<u64>().prop_map(|bits| bits & 0xFFFF_FFFF),
            1 => any::<u64>(),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let cr0_bits = Cr0::all().bits();
        let cr4_bits = (Cr4::PSE
            | Cr4::PAE
            | Cr4::PGE
            | Cr4::LA57
            | Cr4::VMXE
            | Cr4::PCIDE
            | Cr4::SMEP
            | Cr4::CET)
            .bits()
            | 1 << 9
            | 1 << 10
            | 1 << 18;
        let efer_bits = (Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE).bits() | 1 << 9;
        prop_oneof![
            6 => register_value(cr0_bits).prop_map(|value| Step::Write(ControlWrite::Cr0(value))),
            4 => register_value(cr4_bits).prop_map(|value| Step::Write(ControlWrite::Cr4(value))),
            4 => register_value(efer_bits)
                .prop_map(|value| Step::Write(ControlWrite::Efer(value))),
            1 => Just(Step::Write(ControlWrite::Clts)),
            1 => any::<u16>().prop_map(|source| Step::Write(ControlWrite::Lmsw(source))),
            2 => any::<bool>().prop_map(|long| Step::FarJump { long }),
            1 => any::<bool>().prop_map(|sixteen_bit| Step::LoadTaskRegister { sixteen_bit }),
            1 => prop_oneof![Just(0x1000u64), Just(0x1005), any::<u64>()]
                .prop_map(Step::MoveToCr3),
        ]
    }

    /// Processors: CR4 FIXED1 the bits every VMX processor has (VME through OSXMMEXCPT,
    /// VMXE) plus any of the later ones, EFER bits per CPUID, CR0 FIXED0 with or without NE
    /// (unrestricted guest exempts PE and PG anyway).
    fn processor() -> impl Strategy<Value = (VmxFixedBits, SupportedBits)> {
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(cr4_bits, edx, ne_fixed)| {
            let fixed = VmxFixedBits {
                cr0_fixed0: (Cr0::PE | Cr0::PG).bits() | if ne_fixed { Cr0::NE.bits() } else { 0 },
                cr0_fixed1: 0xFFFF_FFFF,
                cr4_fixed0: Cr4::VMXE.bits(),
                cr4_fixed1: (u64::from(cr4_bits) & 0x01F7_7FFF) | 0x7FF | Cr4::VMXE.bits(),
            };
            let edx = edx & ((1 << 11) | (1 << 20) | (1 << 29));
            (fixed, SupportedBits::vmx_guest(fixed.cr4_fixed1, edx))
        })
    }

    fn start_state() -> impl Strategy<Value = ControlState> {
        prop_oneof![
            Just(reset_state()),
            Just(pvh_state()),
            Just(long_mode_state())
        ]
    }

    fn perform(current: &ControlState, step: Step, supported: &SupportedBits) -> ControlState {
        match step {
            Step::Write(write_) => match write(current, write_, supported) {
                Ok(transition) => transition.state,
                Err(_) => *current, // #GP: nothing changes
            },
            Step::FarJump { long } => ControlState {
                code_segment_long: long && current.long_mode_active(),
                ..*current
            },
            Step::LoadTaskRegister { sixteen_bit } => ControlState {
                task_register_16_bit: sixteen_bit && !current.long_mode_active(),
                ..*current
            },
            Step::MoveToCr3(cr3) => ControlState { cr3, ..*current },
        }
    }

    proptest! {
        #[test]
        fn any_write_sequence_enters_or_faults(
            (fixed, supported) in processor(),
            start in start_state(),
            steps in proptest::collection::vec(step(), 1..40),
        ) {
            let cr0_mask = fixed.cr0_guest_host_mask();
            let cr4_mask = fixed.cr4_guest_host_mask();
            // The long-mode start state needs a processor with Intel 64.
            prop_assume!(
                !start.long_mode_active() || supported.efer & Efer::LME.bits() != 0
            );
            let mut current = start;
            let mut trail: Vec<Step> = Vec::new();
            for step in steps {
                trail.push(step);
                let before = current;
                current = perform(&current, step, &supported);
                if let Step::Write(write_) = step {
                    // A write either faults and changes nothing or succeeds.
                    if write(&before, write_, &supported).is_err() {
                        prop_assert_eq!(current, before);
                    }
                }
                let values = vmcs_values(&current, &fixed);
                prop_assert_eq!(
                    check_vm_entry(&values, &fixed, supported.efer),
                    Ok(()),
                    "{:x?} after {:x?}", current, trail
                );
                prop_assert_eq!(
                    guest_visible(values.guest_cr0, values.cr0_read_shadow, cr0_mask),
                    current.cr0
                );
                prop_assert_eq!(
                    guest_visible(values.guest_cr4, values.cr4_read_shadow, cr4_mask),
                    current.cr4
                );
                // IA-32e mode is exactly paging with LME (§9.8.5), and the entry control
                // follows it.
                prop_assert_eq!(
                    current.long_mode_active(),
                    current.paging() && current.efer & Efer::LME.bits() != 0
                );
                prop_assert_eq!(values.ia32e_mode_guest, current.long_mode_active());
            }
        }

        /// Under the backend's CR4 mask, a MOV to CR4 exits only when it changes an owned bit
        /// against the read shadow (§25.6.6), and every such write faults: the guest may
        /// not have any owned bit.
        #[test]
        fn every_exiting_cr4_write_faults(
            (fixed, supported) in processor(),
            start in start_state(),
            steps in proptest::collection::vec(step(), 0..20),
            source in any::<u64>(),
        ) {
            prop_assume!(
                !start.long_mode_active() || supported.efer & Efer::LME.bits() != 0
            );
            let current = steps
                .into_iter()
                .fold(start, |current, step| perform(&current, step, &supported));
            let values = vmcs_values(&current, &fixed);
            let mask = fixed.cr4_guest_host_mask();
            if (source ^ values.cr4_read_shadow) & mask != 0 {
                prop_assert_eq!(
                    write(&current, ControlWrite::Cr4(source), &supported),
                    Err(GeneralProtection::Cr4ReservedBits)
                );
            }
        }
    }
}
