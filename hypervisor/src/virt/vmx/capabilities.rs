//! What this processor's VMX offers Tessera: every control fitted to the TRUE capability
//! MSRs (SDM appendix A.3), the CR0/CR4 fixed bits, the EPT and VPID features, and VMXON
//! on each core (SDM §24.7, §24.8).

use super::current_vmcs::{read_cr0, read_cr4, Page};
use crate::arch::{cpuid, msr};
use tessera_policy::vmx::{self as policy, ControlWord, MissingControl};
use x86::controlregs::Cr4;
use x86::msr as x86_msr;
use x86::vmx::vmcs::control::{
    EntryControls, ExitControls, PinbasedControls, PrimaryControls, SecondaryControls,
};

/// Why this machine cannot run the VMX backend.
#[derive(Clone, Copy, Debug)]
pub enum Unsupported {
    NoVmx,
    DisabledByFirmware,
    Control(MissingControl),
    NoEptFeature(&'static str),
}

impl core::fmt::Display for Unsupported {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Unsupported::NoVmx => {
                formatter.write_str("the CPU lacks Intel VMX (CPUID 1:ECX bit 5)")
            }
            Unsupported::DisabledByFirmware => formatter.write_str(
                "VMX is disabled by the firmware (IA32_FEATURE_CONTROL locked without VMX)",
            ),
            Unsupported::Control(missing) => write!(
                formatter,
                "the CPU cannot {} the {} control \"{}\" (bit {}), which Tessera needs",
                if missing.needed_set { "set" } else { "clear" },
                missing.word.name(),
                missing.word.bit_name(missing.bit),
                missing.bit
            ),
            Unsupported::NoEptFeature(feature) => {
                write!(formatter, "the CPU's EPT lacks {feature}")
            }
        }
    }
}

/// The control words and fixed bits this processor gives Tessera, computed once.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    pub(super) revision: u32,
    pub(super) pin_based: u32,
    pub(super) primary: u32,
    pub(super) secondary: u32,
    pub(super) exit: u32,
    pub(super) entry: u32,
    pub(super) cr0_fixed0: u64,
    pub(super) cr0_fixed1: u64,
    pub(super) cr4_fixed0: u64,
    pub(super) cr4_fixed1: u64,
    pub ept_1gib_pages: bool,
    pub(super) invept_all_contexts: bool,
    pub(super) invvpid_all_contexts: bool,
    /// INVVPID single-context (bit 41): flush one vCPU's translations.
    pub(super) invvpid_single_context: bool,
    /// The VMX-preemption timer exists (how a core that took the hypervisor's NMI while in
    /// the hypervisor still leaves the guest right after its next entry).
    pub(super) preemption_timer: bool,
    /// NMI-window exiting can be turned on (it needs virtual NMIs, SDM §25.6.2): an NMI for
    /// a guest that blocks NMIs is then held until the guest's IRET instead of lost.
    pub(super) nmi_window_exiting: bool,
}

pub(super) fn read_msr(number: u32) -> u64 {
    // SAFETY: only called after CPUID reported VMX, on MSRs that VMX defines (SDM appendix A);
    // the secondary-controls MSR only after the primary allowed-1 bit 31 says it exists.
    unsafe { msr::read(number) }
}

/// Checks what the backend needs and fits every control. Runs on the bootstrap core; the
/// other cores get the same answer (the machine's cores are alike).
pub fn check_support() -> Result<Capabilities, Unsupported> {
    if cpuid::query(1, 0)[2] & (1 << 5) == 0 {
        return Err(Unsupported::NoVmx);
    }
    let basic = read_msr(x86_msr::IA32_VMX_BASIC);
    let true_controls = basic & (1 << 55) != 0;
    let (pin_msr, primary_msr, exit_msr, entry_msr) = if true_controls {
        (
            x86_msr::IA32_VMX_TRUE_PINBASED_CTLS,
            x86_msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            x86_msr::IA32_VMX_TRUE_EXIT_CTLS,
            x86_msr::IA32_VMX_TRUE_ENTRY_CTLS,
        )
    } else {
        (
            x86_msr::IA32_VMX_PINBASED_CTLS,
            x86_msr::IA32_VMX_PROCBASED_CTLS,
            x86_msr::IA32_VMX_EXIT_CTLS,
            x86_msr::IA32_VMX_ENTRY_CTLS,
        )
    };
    let fit = |word, msr_number, required, wanted, forbidden| {
        policy::fit(word, read_msr(msr_number), required, wanted, forbidden)
            .map_err(Unsupported::Control)
    };
    let pin_based = fit(
        ControlWord::PinBased,
        pin_msr,
        PinbasedControls::NMI_EXITING.bits(),
        PinbasedControls::VIRTUAL_NMIS.bits(),
        PinbasedControls::EXTERNAL_INTERRUPT_EXITING.bits(),
    )?;
    let preemption_timer =
        (read_msr(pin_msr) >> 32) & u64::from(PinbasedControls::VMX_PREEMPTION_TIMER.bits()) != 0;
    let nmi_window_exiting = pin_based & PinbasedControls::VIRTUAL_NMIS.bits() != 0
        && (read_msr(primary_msr) >> 32) & u64::from(PrimaryControls::NMI_WINDOW_EXITING.bits())
            != 0;
    let primary = fit(
        ControlWord::PrimaryProcessorBased,
        primary_msr,
        PrimaryControls::USE_IO_BITMAPS.bits()
            | PrimaryControls::USE_MSR_BITMAPS.bits()
            | PrimaryControls::SECONDARY_CONTROLS.bits()
            | PrimaryControls::MWAIT_EXITING.bits()
            | PrimaryControls::MONITOR_EXITING.bits(),
        0,
        0,
    )?;
    // Only now is the secondary-controls MSR known to exist (docs/emulators.md: core2_penryn).
    let secondary = fit(
        ControlWord::SecondaryProcessorBased,
        x86_msr::IA32_VMX_PROCBASED_CTLS2,
        SecondaryControls::ENABLE_EPT.bits()
            | SecondaryControls::ENABLE_VPID.bits()
            | SecondaryControls::UNRESTRICTED_GUEST.bits(),
        SecondaryControls::ENABLE_RDTSCP.bits()
            | SecondaryControls::ENABLE_INVPCID.bits()
            | SecondaryControls::ENABLE_XSAVES_XRSTORS.bits()
            | SecondaryControls::WBINVD_EXITING.bits(),
        0,
    )?;
    let exit = fit(
        ControlWord::Exit,
        exit_msr,
        ExitControls::HOST_ADDRESS_SPACE_SIZE.bits()
            | ExitControls::SAVE_IA32_PAT.bits()
            | ExitControls::LOAD_IA32_PAT.bits()
            | ExitControls::SAVE_IA32_EFER.bits()
            | ExitControls::LOAD_IA32_EFER.bits(),
        0,
        0,
    )?;
    let entry = fit(
        ControlWord::Entry,
        entry_msr,
        EntryControls::LOAD_IA32_PAT.bits() | EntryControls::LOAD_IA32_EFER.bits(),
        0,
        0,
    )?;
    // SDM appendix A.10: bit 6 = 4-level walks, bit 14 = write-back tables, bit 16 = 2 MiB
    // pages, bit 17 = 1 GiB pages, bit 20/26 = INVEPT all-context, bit 32/42 = INVVPID.
    let ept = read_msr(x86_msr::IA32_VMX_EPT_VPID_CAP);
    for (bit, name) in [
        (6, "4-level page walks"),
        (14, "write-back paging structures"),
        (16, "2 MiB pages"),
    ] {
        if ept & (1 << bit) == 0 {
            return Err(Unsupported::NoEptFeature(name));
        }
    }
    Ok(Capabilities {
        revision: basic as u32 & 0x7FFF_FFFF,
        pin_based,
        primary,
        secondary,
        exit,
        entry,
        cr0_fixed0: read_msr(x86_msr::IA32_VMX_CR0_FIXED0),
        cr0_fixed1: read_msr(x86_msr::IA32_VMX_CR0_FIXED1),
        cr4_fixed0: read_msr(x86_msr::IA32_VMX_CR4_FIXED0),
        cr4_fixed1: read_msr(x86_msr::IA32_VMX_CR4_FIXED1),
        ept_1gib_pages: ept & (1 << 17) != 0,
        invept_all_contexts: ept & (1 << 20) != 0 && ept & (1 << 26) != 0,
        invvpid_all_contexts: ept & (1 << 32) != 0 && ept & (1 << 42) != 0,
        invvpid_single_context: ept & (1 << 32) != 0 && ept & (1 << 41) != 0,
        preemption_timer,
        nmi_window_exiting,
    })
}

/// Enables VMX operation on this core: IA32_FEATURE_CONTROL (SDM §24.7), CR0/CR4 fixed
/// bits (§24.8), VMXON.
pub(super) fn enable(
    capabilities: &Capabilities,
    vmxon_region: &mut Page,
) -> Result<(), Unsupported> {
    let feature_control = read_msr(x86_msr::IA32_FEATURE_CONTROL);
    const LOCK: u64 = 1 << 0;
    const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    if feature_control & LOCK == 0 {
        // SAFETY: the firmware left the MSR unlocked; enabling VMX outside SMX and locking is
        // what firmware would have done, and affects only this core's VMX availability.
        unsafe {
            msr::write(
                x86_msr::IA32_FEATURE_CONTROL,
                feature_control | LOCK | VMX_OUTSIDE_SMX,
            )
        };
    } else if feature_control & VMX_OUTSIDE_SMX == 0 {
        return Err(Unsupported::DisabledByFirmware);
    }
    let xsave = cpuid::query(1, 0)[2] & (1 << 26) != 0;
    // SAFETY: the new CR0/CR4 keep paging, protection and PAE (they satisfy the fixed bits
    // the processor demands, which include them) and add only NE, VMXE and, where the CPU has
    // XSAVE, OSXSAVE (so the hypervisor can execute a guest's XSETBV on its behalf). VMXON
    // gets this core's own page, stamped with the VMCS revision (SDM §25.11.5).
    unsafe {
        let cr0 = read_cr0();
        let cr0 =
            policy::apply_fixed_bits(cr0, capabilities.cr0_fixed0, capabilities.cr0_fixed1, 0);
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        let mut cr4 = read_cr4() | Cr4::CR4_ENABLE_VMX.bits() as u64;
        if xsave {
            cr4 |= Cr4::CR4_ENABLE_OS_XSAVE.bits() as u64;
        }
        let cr4 =
            policy::apply_fixed_bits(cr4, capabilities.cr4_fixed0, capabilities.cr4_fixed1, 0);
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack));
        vmxon_region.stamp_revision(capabilities.revision);
        let address = vmxon_region.physical_address();
        let failed: u8;
        core::arch::asm!("vmxon [{}]", "setna {}", in(reg) &address, out(reg_byte) failed, options(nostack));
        if failed != 0 {
            panic!("VMXON failed although every documented precondition holds");
        }
    }
    Ok(())
}
