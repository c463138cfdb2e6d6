//! The Intel VMX backend: VMXON, the VMCS, VM entry and exit decoding (Intel SDM vol. 3,
//! chapters 24–29).
//!
//! Every control is fitted to the TRUE capability MSRs (SDM appendix A.3) and a machine
//! that cannot give what Tessera needs is refused with the missing control's name. The
//! guest runs as an unrestricted guest (real and protected mode without paging run
//! natively, SDM §26.6.2) under EPT, with its own VPID.

use super::{
    Exception, Exit, GeneralRegisters, InstructionContext, IoAccess, Register, StartState,
    VirtualCpu, RSP,
};
use crate::arch::{cpu::CoreDescriptors, cpuid, msr, x2apic};
use crate::table::{self, CPU_COUNT};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU8, Ordering};
use tessera_policy::guest_walk::PagingRegisters;
use tessera_policy::vmx::{self as policy, ControlRegisterAccess, ControlWord, MissingControl};

/// Capability and control MSRs (SDM appendix A).
mod capability {
    pub const FEATURE_CONTROL: u32 = 0x3A;
    pub const BASIC: u32 = 0x480;
    pub const PIN_BASED: u32 = 0x481;
    pub const PROCESSOR_BASED: u32 = 0x482;
    pub const EXIT: u32 = 0x483;
    pub const ENTRY: u32 = 0x484;
    pub const CR0_FIXED0: u32 = 0x486;
    pub const CR0_FIXED1: u32 = 0x487;
    pub const CR4_FIXED0: u32 = 0x488;
    pub const CR4_FIXED1: u32 = 0x489;
    pub const SECONDARY: u32 = 0x48B;
    pub const EPT_VPID: u32 = 0x48C;
    pub const TRUE_PIN_BASED: u32 = 0x48D;
    pub const TRUE_PROCESSOR_BASED: u32 = 0x48E;
    pub const TRUE_EXIT: u32 = 0x48F;
    pub const TRUE_ENTRY: u32 = 0x490;
    pub const IA32_PAT: u32 = 0x277;
}

/// VMCS field encodings (SDM appendix B).
mod field {
    pub const VPID: u64 = 0x0000;
    pub const GUEST_ES_SELECTOR: u64 = 0x0800;
    pub const HOST_ES_SELECTOR: u64 = 0x0C00;
    pub const HOST_CS_SELECTOR: u64 = 0x0C02;
    pub const HOST_SS_SELECTOR: u64 = 0x0C04;
    pub const HOST_DS_SELECTOR: u64 = 0x0C06;
    pub const HOST_FS_SELECTOR: u64 = 0x0C08;
    pub const HOST_GS_SELECTOR: u64 = 0x0C0A;
    pub const HOST_TR_SELECTOR: u64 = 0x0C0C;
    pub const IO_BITMAP_A: u64 = 0x2000;
    pub const IO_BITMAP_B: u64 = 0x2002;
    pub const MSR_BITMAP: u64 = 0x2004;
    pub const EPT_POINTER: u64 = 0x201A;
    pub const GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
    pub const VMCS_LINK_POINTER: u64 = 0x2800;
    pub const GUEST_DEBUGCTL: u64 = 0x2802;
    pub const GUEST_PAT: u64 = 0x2804;
    pub const GUEST_EFER: u64 = 0x2806;
    pub const HOST_PAT: u64 = 0x2C00;
    pub const HOST_EFER: u64 = 0x2C02;
    pub const PIN_BASED_CONTROLS: u64 = 0x4000;
    pub const PRIMARY_CONTROLS: u64 = 0x4002;
    pub const EXCEPTION_BITMAP: u64 = 0x4004;
    pub const EXIT_CONTROLS: u64 = 0x400C;
    pub const ENTRY_CONTROLS: u64 = 0x4012;
    pub const ENTRY_INTERRUPTION_INFO: u64 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR_CODE: u64 = 0x4018;
    pub const SECONDARY_CONTROLS: u64 = 0x401E;
    pub const INSTRUCTION_ERROR: u64 = 0x4400;
    pub const EXIT_REASON: u64 = 0x4402;
    pub const EXIT_INTERRUPTION_INFO: u64 = 0x4404;
    pub const EXIT_INSTRUCTION_LENGTH: u64 = 0x440C;
    pub const GUEST_ES_LIMIT: u64 = 0x4800;
    pub const GUEST_LDTR_LIMIT: u64 = 0x480C;
    pub const GUEST_GDTR_LIMIT: u64 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u64 = 0x4812;
    pub const GUEST_ES_ACCESS_RIGHTS: u64 = 0x4814;
    pub const GUEST_TR_ACCESS_RIGHTS: u64 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u64 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u64 = 0x4826;
    pub const GUEST_SYSENTER_CS: u64 = 0x482A;
    pub const GUEST_PREEMPTION_TIMER: u64 = 0x482E;
    pub const HOST_SYSENTER_CS: u64 = 0x4C00;
    pub const CR0_GUEST_HOST_MASK: u64 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u64 = 0x6002;
    pub const CR0_READ_SHADOW: u64 = 0x6004;
    pub const CR4_READ_SHADOW: u64 = 0x6006;
    pub const EXIT_QUALIFICATION: u64 = 0x6400;
    pub const GUEST_CR0: u64 = 0x6800;
    pub const GUEST_CR3: u64 = 0x6802;
    pub const GUEST_CR4: u64 = 0x6804;
    pub const GUEST_ES_BASE: u64 = 0x6806;
    pub const GUEST_TR_BASE: u64 = 0x6814;
    pub const GUEST_GDTR_BASE: u64 = 0x6816;
    pub const GUEST_IDTR_BASE: u64 = 0x6818;
    pub const GUEST_DR7: u64 = 0x681A;
    pub const GUEST_RSP: u64 = 0x681C;
    pub const GUEST_RIP: u64 = 0x681E;
    pub const GUEST_RFLAGS: u64 = 0x6820;
    pub const GUEST_PENDING_DEBUG: u64 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u64 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u64 = 0x6826;
    pub const HOST_CR0: u64 = 0x6C00;
    pub const HOST_CR3: u64 = 0x6C02;
    pub const HOST_CR4: u64 = 0x6C04;
    pub const HOST_FS_BASE: u64 = 0x6C06;
    pub const HOST_GS_BASE: u64 = 0x6C08;
    pub const HOST_TR_BASE: u64 = 0x6C0A;
    pub const HOST_GDTR_BASE: u64 = 0x6C0C;
    pub const HOST_IDTR_BASE: u64 = 0x6C0E;
    pub const HOST_SYSENTER_ESP: u64 = 0x6C10;
    pub const HOST_SYSENTER_EIP: u64 = 0x6C12;
    pub const HOST_RIP: u64 = 0x6C16;
}

/// Basic exit reasons (SDM appendix C).
mod exit_reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INIT: u32 = 3;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMXON: u32 = 27;
    pub const CONTROL_REGISTER: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const EPT_VIOLATION: u32 = 48;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVEPT: u32 = 50;
    pub const INVVPID: u32 = 53;
    pub const XSETBV: u32 = 55;
    pub const VMFUNC: u32 = 59;
}

/// Control bits Tessera sets (SDM §25.6).
mod control {
    pub const PIN_EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const PIN_NMI_EXITING: u32 = 1 << 3;
    pub const PIN_VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
    pub const PRIMARY_USE_IO_BITMAPS: u32 = 1 << 25;
    pub const PRIMARY_USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const PRIMARY_ACTIVATE_SECONDARY: u32 = 1 << 31;
    pub const SECONDARY_ENABLE_EPT: u32 = 1 << 1;
    pub const SECONDARY_ENABLE_RDTSCP: u32 = 1 << 3;
    pub const SECONDARY_ENABLE_VPID: u32 = 1 << 5;
    pub const SECONDARY_UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const SECONDARY_ENABLE_INVPCID: u32 = 1 << 12;
    pub const SECONDARY_ENABLE_XSAVES: u32 = 1 << 20;
    pub const EXIT_HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const EXIT_SAVE_PAT: u32 = 1 << 18;
    pub const EXIT_LOAD_PAT: u32 = 1 << 19;
    pub const EXIT_SAVE_EFER: u32 = 1 << 20;
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    pub const ENTRY_IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_LOAD_PAT: u32 = 1 << 14;
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
}

const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const CR4_VMXE: u64 = 1 << 13;
const EFER_LMA: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;

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
    revision: u32,
    pin_based: u32,
    primary: u32,
    secondary: u32,
    exit: u32,
    entry: u32,
    cr0_fixed0: u64,
    cr0_fixed1: u64,
    cr4_fixed0: u64,
    cr4_fixed1: u64,
    pub ept_1gib_pages: bool,
    invept_all_contexts: bool,
    invvpid_all_contexts: bool,
    /// The VMX-preemption timer exists (how a core that took the hypervisor's NMI while in
    /// the hypervisor still leaves the guest right after its next entry).
    preemption_timer: bool,
}

fn read_msr(number: u32) -> u64 {
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
    let basic = read_msr(capability::BASIC);
    let true_controls = basic & (1 << 55) != 0;
    let (pin_msr, primary_msr, exit_msr, entry_msr) = if true_controls {
        (
            capability::TRUE_PIN_BASED,
            capability::TRUE_PROCESSOR_BASED,
            capability::TRUE_EXIT,
            capability::TRUE_ENTRY,
        )
    } else {
        (
            capability::PIN_BASED,
            capability::PROCESSOR_BASED,
            capability::EXIT,
            capability::ENTRY,
        )
    };
    let fit = |word, msr_number, required, wanted, forbidden| {
        policy::fit(word, read_msr(msr_number), required, wanted, forbidden)
            .map_err(Unsupported::Control)
    };
    let pin_based = fit(
        ControlWord::PinBased,
        pin_msr,
        control::PIN_NMI_EXITING,
        control::PIN_VIRTUAL_NMIS,
        control::PIN_EXTERNAL_INTERRUPT_EXITING,
    )?;
    let preemption_timer =
        (read_msr(pin_msr) >> 32) & u64::from(control::PIN_PREEMPTION_TIMER) != 0;
    let primary = fit(
        ControlWord::PrimaryProcessorBased,
        primary_msr,
        control::PRIMARY_USE_IO_BITMAPS
            | control::PRIMARY_USE_MSR_BITMAPS
            | control::PRIMARY_ACTIVATE_SECONDARY,
        0,
        0,
    )?;
    // Only now is the secondary-controls MSR known to exist (EMULATORS.md: core2_penryn).
    let secondary = fit(
        ControlWord::SecondaryProcessorBased,
        capability::SECONDARY,
        control::SECONDARY_ENABLE_EPT
            | control::SECONDARY_ENABLE_VPID
            | control::SECONDARY_UNRESTRICTED_GUEST,
        control::SECONDARY_ENABLE_RDTSCP
            | control::SECONDARY_ENABLE_INVPCID
            | control::SECONDARY_ENABLE_XSAVES,
        0,
    )?;
    let exit = fit(
        ControlWord::Exit,
        exit_msr,
        control::EXIT_HOST_ADDRESS_SPACE_SIZE
            | control::EXIT_SAVE_PAT
            | control::EXIT_LOAD_PAT
            | control::EXIT_SAVE_EFER
            | control::EXIT_LOAD_EFER,
        0,
        0,
    )?;
    let entry = fit(
        ControlWord::Entry,
        entry_msr,
        control::ENTRY_LOAD_PAT | control::ENTRY_LOAD_EFER,
        0,
        0,
    )?;
    // SDM appendix A.10: bit 6 = 4-level walks, bit 14 = write-back tables, bit 16 = 2 MiB
    // pages, bit 17 = 1 GiB pages, bit 20/26 = INVEPT all-context, bit 32/42 = INVVPID.
    let ept = read_msr(capability::EPT_VPID);
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
        cr0_fixed0: read_msr(capability::CR0_FIXED0),
        cr0_fixed1: read_msr(capability::CR0_FIXED1),
        cr4_fixed0: read_msr(capability::CR4_FIXED0),
        cr4_fixed1: read_msr(capability::CR4_FIXED1),
        ept_1gib_pages: ept & (1 << 17) != 0,
        invept_all_contexts: ept & (1 << 20) != 0 && ept & (1 << 26) != 0,
        invvpid_all_contexts: ept & (1 << 32) != 0 && ept & (1 << 42) != 0,
        preemption_timer,
    })
}

/// Enables VMX operation on this core: IA32_FEATURE_CONTROL (SDM §24.7), CR0/CR4 fixed
/// bits (§24.8), VMXON.
fn enable(capabilities: &Capabilities, vmxon_region: &mut Page) -> Result<(), Unsupported> {
    let feature_control = read_msr(capability::FEATURE_CONTROL);
    const LOCK: u64 = 1 << 0;
    const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    if feature_control & LOCK == 0 {
        // SAFETY: the firmware left the MSR unlocked; enabling VMX outside SMX and locking is
        // what firmware would have done, and affects only this core's VMX availability.
        unsafe {
            msr::write(
                capability::FEATURE_CONTROL,
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
        let mut cr4 = read_cr4() | CR4_VMXE;
        if xsave {
            cr4 |= CR4_OSXSAVE;
        }
        let cr4 =
            policy::apply_fixed_bits(cr4, capabilities.cr4_fixed0, capabilities.cr4_fixed1, 0);
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack));
        vmxon_region.0[0..4].copy_from_slice(&capabilities.revision.to_le_bytes());
        let address = vmxon_region.physical_address();
        let failed: u8;
        core::arch::asm!("vmxon [{}]", "setna {}", in(reg) &address, out(reg_byte) failed, options(nostack));
        if failed != 0 {
            panic!("VMXON failed although every documented precondition holds");
        }
    }
    Ok(())
}

fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) value, options(nomem, nostack)) };
    value
}

fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) value, options(nomem, nostack)) };
    value
}

fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) value, options(nomem, nostack)) };
    value
}

/// Reads a field of the current VMCS.
fn vmread(field: u64) -> u64 {
    let value: u64;
    // SAFETY: a VMCS is current on this core whenever a VmxVcpu exists (made current in
    // `VmxVcpu::new`); VMREAD of a defined field has no side effects.
    unsafe { core::arch::asm!("vmread {}, {}", out(reg) value, in(reg) field, options(nostack)) };
    value
}

/// Writes a field of the current VMCS.
fn vmwrite(field: u64, value: u64) {
    let failed: u8;
    // SAFETY: as for `vmread`; the VMCS is this core's own and the guest is not running.
    unsafe {
        core::arch::asm!("vmwrite {}, {}", "setna {}", in(reg) field, in(reg) value, out(reg_byte) failed, options(nostack))
    };
    assert!(
        failed == 0,
        "VMWRITE of field {field:#x} failed: {}",
        policy::instruction_error_name(vmread(field::INSTRUCTION_ERROR) as u32)
    );
}

/// Per core: whether its VMCS is current and whether the preemption timer may be armed
/// (0 = no VMCS, 1 = VMCS without timer, 2 = VMCS with timer). Read by the NMI handler.
static VMCS_STATE: [AtomicU8; CPU_COUNT] = [const { AtomicU8::new(0) }; CPU_COUNT];

/// Called from the hypervisor's NMI handler: makes the next VM entry on this core exit at
/// once (VMX-preemption timer armed at zero, SDM §26.7.4), so a signal that arrived while
/// the core was in the hypervisor is seen before the guest runs on.
pub fn exit_soon_after_entry() {
    let Some(index) = table::cpu_index(x2apic::current_id()) else {
        return;
    };
    if VMCS_STATE[index.0].load(Ordering::Acquire) == 2 {
        vmwrite(field::GUEST_PREEMPTION_TIMER, 0);
        let pin_based = vmread(field::PIN_BASED_CONTROLS);
        vmwrite(
            field::PIN_BASED_CONTROLS,
            pin_based | u64::from(control::PIN_PREEMPTION_TIMER),
        );
    }
}

#[repr(C, align(4096))]
pub struct Page([u8; 4096]);

impl Page {
    pub const fn new() -> Self {
        Self([0; 4096])
    }
    fn physical_address(&self) -> u64 {
        self as *const Self as u64
    }
}

/// A partition's VMX permission maps: I/O bitmaps A and B (SDM §25.6.4) and the MSR bitmap
/// (§25.6.9), page-aligned.
#[repr(C, align(4096))]
pub struct PermissionMaps {
    io: [u8; 8192],
    msr: [u8; 4096],
}

impl PermissionMaps {
    pub const fn new() -> Self {
        Self {
            io: [0; 8192],
            msr: [0; 4096],
        }
    }
    pub fn build(&mut self, ports: &[tessera_abi::table::Range]) {
        tessera_policy::io_bitmap::build_io_bitmap(ports, &mut self.io);
        tessera_policy::msr::build_vmx_msr_bitmap(&mut self.msr);
    }

    /// Where the processor finds the maps (identity-mapped: the linear address).
    pub fn physical_address(&self) -> u64 {
        self as *const Self as u64
    }
}

/// The VMX state one core owns.
#[repr(C, align(4096))]
pub struct VmxCore {
    vmxon_region: Page,
    vmcs: Page,
    registers: GeneralRegisters,
    launched: bool,
}

impl VmxCore {
    pub const fn new() -> Self {
        Self {
            vmxon_region: Page::new(),
            vmcs: Page::new(),
            registers: GeneralRegisters([0; 16]),
            launched: false,
        }
    }
}

/// What confines a vCPU: its EPT, permission maps and VPID.
pub struct Confinement {
    pub ept_pointer: u64,
    pub permission_maps: u64,
    pub vpid: u16,
}

pub struct VmxVcpu {
    core: &'static mut VmxCore,
    capabilities: Capabilities,
    /// The CR0/CR4 bits the hypervisor owns (fixed by VMX) and the guest only sees shadowed.
    cr0_owned: u64,
    cr4_owned: u64,
}

extern "C" {
    /// Enters the guest (VMLAUNCH when `launched` is 0, else VMRESUME) and returns 0 after a
    /// VM exit or 1 when the instruction itself failed. See the assembly below.
    fn vmx_run(registers: *mut GeneralRegisters, launched: u64) -> u64;
    fn vmx_exit();
}

impl VmxVcpu {
    pub fn new(
        core: &'static mut VmxCore,
        descriptors: &CoreDescriptors,
        capabilities: &Capabilities,
        start: &Confinement,
    ) -> Result<Self, Unsupported> {
        enable(capabilities, &mut core.vmxon_region)?;
        core.vmcs.0[0..4].copy_from_slice(&capabilities.revision.to_le_bytes());
        let vmcs = core.vmcs.physical_address();
        // SAFETY: VMX is on; the VMCS page is this core's own, stamped with the revision.
        // VMCLEAR initialises it and VMPTRLD makes it current (SDM §25.11.3). INVEPT/INVVPID
        // all-context drop translations a previous run may have left (SDM §29.4.3).
        unsafe {
            core::arch::asm!("vmclear [{}]", in(reg) &vmcs, options(nostack));
            core::arch::asm!("vmptrld [{}]", in(reg) &vmcs, options(nostack));
            let descriptor = [0u64; 2];
            if capabilities.invept_all_contexts {
                core::arch::asm!("invept {}, [{}]", in(reg) 2u64, in(reg) &descriptor, options(nostack));
            }
            if capabilities.invvpid_all_contexts {
                core::arch::asm!("invvpid {}, [{}]", in(reg) 2u64, in(reg) &descriptor, options(nostack));
            }
        }
        let unrestricted = CR0_PE | CR0_PG;
        let cr0_owned = (capabilities.cr0_fixed0 & !unrestricted) | !capabilities.cr0_fixed1;
        let cr4_owned = capabilities.cr4_fixed0 | !capabilities.cr4_fixed1;
        if let Some(index) = table::cpu_index(x2apic::current_id()) {
            VMCS_STATE[index.0].store(
                if capabilities.preemption_timer { 2 } else { 1 },
                Ordering::Release,
            );
        }
        let mut vcpu = Self {
            core,
            capabilities: *capabilities,
            cr0_owned: cr0_owned & 0xFFFF_FFFF,
            cr4_owned: cr4_owned & 0xFFFF_FFFF,
        };
        vcpu.write_controls(start);
        vcpu.write_host_state(descriptors);
        // A complete guest state from the start, even for a core that waits for its SIPI.
        vcpu.reset(&StartState::StartUp { vector: 0 });
        vcpu.core.launched = false;
        Ok(vcpu)
    }

    fn write_controls(&self, start: &Confinement) {
        let capabilities = &self.capabilities;
        vmwrite(field::PIN_BASED_CONTROLS, u64::from(capabilities.pin_based));
        vmwrite(field::PRIMARY_CONTROLS, u64::from(capabilities.primary));
        vmwrite(field::SECONDARY_CONTROLS, u64::from(capabilities.secondary));
        vmwrite(field::EXIT_CONTROLS, u64::from(capabilities.exit));
        vmwrite(field::ENTRY_CONTROLS, u64::from(capabilities.entry));
        vmwrite(field::EXCEPTION_BITMAP, 0);
        vmwrite(field::IO_BITMAP_A, start.permission_maps);
        vmwrite(field::IO_BITMAP_B, start.permission_maps + 4096);
        vmwrite(field::MSR_BITMAP, start.permission_maps + 8192);
        vmwrite(field::EPT_POINTER, start.ept_pointer);
        vmwrite(field::VPID, u64::from(start.vpid));
        vmwrite(field::CR0_GUEST_HOST_MASK, self.cr0_owned);
        vmwrite(field::CR4_GUEST_HOST_MASK, self.cr4_owned);
    }

    /// Host state loaded at every VM exit (SDM §28.5): this core's current state.
    fn write_host_state(&self, descriptors: &CoreDescriptors) {
        use crate::arch::cpu::{CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
        vmwrite(field::HOST_CR0, read_cr0());
        vmwrite(field::HOST_CR3, read_cr3());
        vmwrite(field::HOST_CR4, read_cr4());
        vmwrite(field::HOST_CS_SELECTOR, u64::from(CODE_SELECTOR));
        for selector in [
            field::HOST_SS_SELECTOR,
            field::HOST_DS_SELECTOR,
            field::HOST_ES_SELECTOR,
        ] {
            vmwrite(selector, u64::from(DATA_SELECTOR));
        }
        vmwrite(field::HOST_FS_SELECTOR, 0);
        vmwrite(field::HOST_GS_SELECTOR, 0);
        vmwrite(field::HOST_TR_SELECTOR, u64::from(TSS_SELECTOR));
        vmwrite(field::HOST_FS_BASE, 0);
        vmwrite(field::HOST_GS_BASE, 0);
        vmwrite(field::HOST_TR_BASE, descriptors.tss_base());
        vmwrite(field::HOST_GDTR_BASE, descriptors.gdt_base());
        vmwrite(field::HOST_IDTR_BASE, crate::arch::cpu::idt_base());
        vmwrite(field::HOST_SYSENTER_CS, 0);
        vmwrite(field::HOST_SYSENTER_ESP, 0);
        vmwrite(field::HOST_SYSENTER_EIP, 0);
        // SAFETY: EFER and PAT exist on every CPU with VMX.
        let (efer, pat) = unsafe { (msr::read(msr::IA32_EFER), msr::read(capability::IA32_PAT)) };
        vmwrite(field::HOST_EFER, efer);
        vmwrite(field::HOST_PAT, pat);
        vmwrite(field::HOST_RIP, vmx_exit as *const () as u64);
    }

    /// A MOV to CR0/CR4 that touched a bit VMX fixes: keep the fixed bits in the real
    /// register, show the guest its own value through the read shadow.
    fn handle_control_register(&mut self, qualification: u64) -> bool {
        let ControlRegisterAccess::MoveTo {
            control_register,
            register,
        } = policy::decode_control_register_access(qualification)
        else {
            return false;
        };
        let value = self.register_number(register);
        let capabilities = &self.capabilities;
        match control_register {
            0 => {
                vmwrite(field::CR0_READ_SHADOW, value);
                vmwrite(
                    field::GUEST_CR0,
                    policy::apply_fixed_bits(
                        value,
                        capabilities.cr0_fixed0,
                        capabilities.cr0_fixed1,
                        CR0_PE | CR0_PG,
                    ),
                );
            }
            4 => {
                vmwrite(field::CR4_READ_SHADOW, value);
                vmwrite(
                    field::GUEST_CR4,
                    policy::apply_fixed_bits(
                        value,
                        capabilities.cr4_fixed0,
                        capabilities.cr4_fixed1,
                        0,
                    ),
                );
            }
            _ => return false,
        }
        true
    }

    /// XSETBV always exits under VMX (SDM §26.1.2). The value must be one the processor
    /// supports (CPUID 0xD.0) with x87 state on and AVX only with SSE, else #GP (SDM vol. 2,
    /// XSETBV); the hypervisor itself never uses extended state, so the guest's XCR0 can
    /// simply stay loaded.
    fn handle_xsetbv(&mut self) -> bool {
        let value =
            (self.register(Register::Rdx) << 32) | (self.register(Register::Rax) & 0xFFFF_FFFF);
        let [supported_low, _, _, supported_high] = cpuid::query(0xD, 0);
        let supported = (u64::from(supported_high) << 32) | u64::from(supported_low);
        let valid = self.register(Register::Rcx) as u32 == 0
            && value & 1 != 0
            && value & !supported == 0
            && (value & 0b100 == 0 || value & 0b10 != 0);
        if valid {
            // SAFETY: the value was checked against what the processor supports, so XSETBV
            // cannot fault; CR4.OSXSAVE was set in `enable` where XSAVE exists (CPUID 0xD
            // reports nothing otherwise, making `valid` false).
            unsafe {
                core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
            };
        }
        valid
    }

    fn decode_exit(&mut self) -> Option<Exit> {
        let reason = vmread(field::EXIT_REASON) as u32;
        if reason & (1 << 31) != 0 {
            return Some(Exit::InvalidGuestState);
        }
        let qualification = vmread(field::EXIT_QUALIFICATION);
        Some(match reason & 0xFFFF {
            exit_reason::CPUID => Exit::Cpuid,
            // SDM §28.2.1 table 28-5: bits 2:0 size - 1, bit 3 IN, bit 4 string, bit 5 REP,
            // bits 31:16 port.
            exit_reason::IO => Exit::Io(IoAccess {
                port: (qualification >> 16) as u16,
                size: (qualification & 0b111) as u8 + 1,
                input: qualification & (1 << 3) != 0,
                string: qualification & (1 << 4) != 0,
                repeat: qualification & (1 << 5) != 0,
                next_rip: self.rip() + vmread(field::EXIT_INSTRUCTION_LENGTH),
            }),
            exit_reason::RDMSR => Exit::MsrRead {
                msr: self.register(Register::Rcx) as u32,
            },
            exit_reason::WRMSR => Exit::MsrWrite {
                msr: self.register(Register::Rcx) as u32,
                value: (self.register(Register::Rdx) << 32)
                    | (self.register(Register::Rax) & 0xFFFF_FFFF),
            },
            exit_reason::VMCALL => Exit::Hypercall,
            // SDM §28.2.1 table 28-7: bit 0 read, bit 1 write, bit 2 instruction fetch.
            exit_reason::EPT_VIOLATION => Exit::NestedPageFault {
                guest_physical: vmread(field::GUEST_PHYSICAL_ADDRESS),
                write: qualification & (1 << 1) != 0,
                fetch: qualification & (1 << 2) != 0,
            },
            exit_reason::TRIPLE_FAULT => Exit::TripleFault,
            // Armed by `exit_soon_after_entry`: disarm; the run loop looks at its signals.
            exit_reason::PREEMPTION_TIMER => {
                let pin_based = vmread(field::PIN_BASED_CONTROLS);
                vmwrite(
                    field::PIN_BASED_CONTROLS,
                    pin_based & !u64::from(control::PIN_PREEMPTION_TIMER),
                );
                Exit::Nmi
            }
            exit_reason::INIT => Exit::Init,
            // With NMI exiting, an NMI exits with reason 0 and interruption type 2 (§28.2.2).
            exit_reason::EXCEPTION_OR_NMI
                if (vmread(field::EXIT_INTERRUPTION_INFO) >> 8) & 0b111 == 2 =>
            {
                Exit::Nmi
            }
            exit_reason::VMCLEAR..=exit_reason::VMXON
            | exit_reason::INVEPT
            | exit_reason::INVVPID
            | exit_reason::VMFUNC
            | exit_reason::INVD => Exit::VirtualizationInstruction,
            exit_reason::CONTROL_REGISTER => {
                if self.handle_control_register(qualification) {
                    self.skip_instruction(0);
                    return None;
                }
                Exit::Other(u64::from(reason))
            }
            exit_reason::XSETBV => {
                if self.handle_xsetbv() {
                    self.skip_instruction(0);
                } else {
                    self.inject_exception(Exception::GeneralProtection);
                }
                return None;
            }
            // HLT exiting is off where the processor allows; where it cannot be, HLT returns
            // at once, which a guest must tolerate anyway (an interrupt may end it).
            exit_reason::HLT => {
                self.skip_instruction(0);
                return None;
            }
            other => Exit::Other(u64::from(other)),
        })
    }
}

impl VirtualCpu for VmxVcpu {
    fn run(&mut self) -> Exit {
        loop {
            // SAFETY: this core's VMCS is current and complete (controls, host and guest
            // state written in `new`); the register block is this core's own.
            let failed =
                unsafe { vmx_run(&mut self.core.registers, u64::from(self.core.launched)) };
            if failed != 0 {
                let error = vmread(field::INSTRUCTION_ERROR) as u32;
                log::info!(
                    "VM entry failed: VM-instruction error {} ({})",
                    error,
                    policy::instruction_error_name(error)
                );
                return Exit::InvalidGuestState;
            }
            self.core.launched = true;
            vmwrite(field::ENTRY_INTERRUPTION_INFO, 0);
            if let Some(exit) = self.decode_exit() {
                return exit;
            }
        }
    }

    fn rip(&self) -> u64 {
        vmread(field::GUEST_RIP)
    }

    fn set_rip(&mut self, rip: u64) {
        vmwrite(field::GUEST_RIP, rip);
    }

    fn rflags(&self) -> u64 {
        vmread(field::GUEST_RFLAGS)
    }

    /// VMX reports the exiting instruction's length (SDM §28.2.5); `length` is ignored.
    fn skip_instruction(&mut self, _length: u64) {
        let length = vmread(field::EXIT_INSTRUCTION_LENGTH);
        self.set_rip(self.rip() + length);
        // Skipping an instruction ends blocking by STI / MOV SS (SDM §26.3.1.5).
        let interruptibility = vmread(field::GUEST_INTERRUPTIBILITY);
        if interruptibility & 0b11 != 0 {
            vmwrite(field::GUEST_INTERRUPTIBILITY, interruptibility & !0b11);
        }
    }

    fn inject_exception(&mut self, exception: Exception) {
        // VM-entry interruption information (SDM §25.8.3): vector, type 3 = hardware
        // exception, bit 11 = deliver error code, bit 31 = valid.
        let information = match exception {
            Exception::InvalidOpcode => 6 | (3 << 8) | (1 << 31),
            Exception::GeneralProtection => {
                vmwrite(field::ENTRY_EXCEPTION_ERROR_CODE, 0);
                13 | (3 << 8) | (1 << 11) | (1 << 31)
            }
        };
        vmwrite(field::ENTRY_INTERRUPTION_INFO, information);
    }

    fn write_efer(&mut self, value: u64) {
        // EFER is intercepted on Intel; LMA follows LME and CR0.PG on its own, and VM exits
        // store LMA into the "IA-32e mode guest" entry control (SDM §28.3.1).
        vmwrite(field::GUEST_EFER, value);
    }

    fn read_efer(&self) -> u64 {
        vmread(field::GUEST_EFER)
    }

    fn register_number(&self, number: u8) -> u64 {
        match number & 0xF {
            RSP => vmread(field::GUEST_RSP),
            other => self.core.registers.0[usize::from(other)],
        }
    }

    fn set_register_number(&mut self, number: u8, value: u64) {
        match number & 0xF {
            RSP => vmwrite(field::GUEST_RSP, value),
            other => self.core.registers.0[usize::from(other)] = value,
        }
    }

    fn instruction_context(&self) -> InstructionContext {
        let rights = vmread(field::GUEST_ES_ACCESS_RIGHTS + 2);
        let paging = PagingRegisters {
            cr0: vmread(field::GUEST_CR0),
            cr3: vmread(field::GUEST_CR3),
            cr4: vmread(field::GUEST_CR4),
            efer: vmread(field::GUEST_EFER),
        };
        InstructionContext {
            rip_linear: vmread(field::GUEST_ES_BASE + 2).wrapping_add(self.rip()),
            // VMX access rights: L is bit 13, D/B bit 14 (SDM §25.4.1).
            mode: InstructionContext::mode_of(
                paging.cr0,
                paging.efer,
                rights & (1 << 13) != 0,
                rights & (1 << 14) != 0,
            ),
            paging,
        }
    }

    /// The start state as an unrestricted guest (real mode and protected mode without paging
    /// run natively, SDM §26.6.2).
    fn reset(&mut self, start: &StartState) {
        let registers = start.architectural();
        // Eight segment registers from ES (0x800, 0x4800, 0x4814, 0x6806), two apart, in the
        // order ES, CS, SS, DS, FS, GS, LDTR, TR.
        const CS: u64 = 1;
        const LDTR: u64 = 6;
        const TR: u64 = 7;
        for index in 0..8u64 {
            let (selector, base, limit, rights) = match index {
                CS => {
                    let code = registers.code;
                    (code.selector, code.base, code.limit, code.vmx_rights())
                }
                LDTR => (0, 0, 0xFFFF, 0x1_0000), // unusable
                TR => {
                    let task = registers.task;
                    (task.selector, task.base, task.limit, task.vmx_rights())
                }
                _ => {
                    let data = registers.data;
                    (data.selector, data.base, data.limit, data.vmx_rights())
                }
            };
            vmwrite(field::GUEST_ES_SELECTOR + 2 * index, u64::from(selector));
            vmwrite(field::GUEST_ES_LIMIT + 2 * index, u64::from(limit));
            vmwrite(field::GUEST_ES_ACCESS_RIGHTS + 2 * index, rights);
            vmwrite(field::GUEST_ES_BASE + 2 * index, base);
        }
        debug_assert_eq!(field::GUEST_ES_LIMIT + 2 * LDTR, field::GUEST_LDTR_LIMIT);
        debug_assert_eq!(
            field::GUEST_ES_ACCESS_RIGHTS + 2 * TR,
            field::GUEST_TR_ACCESS_RIGHTS
        );
        debug_assert_eq!(field::GUEST_ES_BASE + 2 * TR, field::GUEST_TR_BASE);
        vmwrite(field::GUEST_GDTR_BASE, registers.gdt.0);
        vmwrite(field::GUEST_GDTR_LIMIT, u64::from(registers.gdt.1));
        vmwrite(field::GUEST_IDTR_BASE, 0);
        vmwrite(field::GUEST_IDTR_LIMIT, 0xFFFF);
        let capabilities = &self.capabilities;
        vmwrite(field::CR0_READ_SHADOW, registers.cr0);
        vmwrite(
            field::GUEST_CR0,
            policy::apply_fixed_bits(
                registers.cr0,
                capabilities.cr0_fixed0,
                capabilities.cr0_fixed1,
                CR0_PE | CR0_PG,
            ),
        );
        vmwrite(field::CR4_READ_SHADOW, registers.cr4);
        vmwrite(
            field::GUEST_CR4,
            policy::apply_fixed_bits(
                registers.cr4,
                capabilities.cr4_fixed0,
                capabilities.cr4_fixed1,
                0,
            ),
        );
        vmwrite(field::GUEST_CR3, registers.cr3);
        vmwrite(field::GUEST_DR7, 0x400);
        vmwrite(field::GUEST_RSP, 0);
        vmwrite(field::GUEST_RIP, registers.rip);
        vmwrite(field::GUEST_RFLAGS, 0x2);
        vmwrite(field::GUEST_PENDING_DEBUG, 0);
        vmwrite(field::GUEST_INTERRUPTIBILITY, 0);
        vmwrite(field::GUEST_ACTIVITY_STATE, 0);
        vmwrite(field::GUEST_SYSENTER_CS, 0);
        vmwrite(field::GUEST_SYSENTER_ESP, 0);
        vmwrite(field::GUEST_SYSENTER_EIP, 0);
        vmwrite(field::GUEST_DEBUGCTL, 0);
        vmwrite(field::GUEST_EFER, registers.efer);
        vmwrite(field::GUEST_PAT, 0x0007_0406_0007_0406); // the power-on PAT
        vmwrite(field::VMCS_LINK_POINTER, u64::MAX);
        vmwrite(field::ENTRY_INTERRUPTION_INFO, 0);
        // "IA-32e mode guest" must equal EFER.LMA at entry (SDM §26.3.1.1); a previous run
        // may have left it set.
        let long_mode = if registers.efer & EFER_LMA != 0 {
            control::ENTRY_IA32E_MODE_GUEST
        } else {
            0
        };
        vmwrite(
            field::ENTRY_CONTROLS,
            u64::from(capabilities.entry | long_mode),
        );
        self.core.registers = GeneralRegisters::default();
        self.set_register(Register::Rbx, registers.rbx);
        self.set_register(Register::Rsi, registers.rsi);
    }

    fn inject_nmi(&mut self) {
        // Interruption type 2 = NMI, vector 2 (SDM §25.8.3). Skipped while the guest blocks
        // NMIs (interruptibility bit 3): entry would fail (SDM §26.3.1.5).
        if vmread(field::GUEST_INTERRUPTIBILITY) & (1 << 3) == 0 {
            vmwrite(field::ENTRY_INTERRUPTION_INFO, 2 | (2 << 8) | (1 << 31));
        }
    }
}

// vmx_run(registers: rdi, launched: rsi) -> rax (0 = exited, 1 = VMLAUNCH/VMRESUME failed)
// The register block is a GeneralRegisters: register n at offset n × 8 (RSP is in the VMCS).
// HOST_RSP is written here so that at vmx_exit the stack holds, from the top: the register
// block pointer, then the host's callee-saved registers.
global_asm!(
    r#"
    .section .text
    .global vmx_run
    .global vmx_exit
vmx_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, 0x6C14
    vmwrite rax, rsp
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rcx, [rdi + 8]
    mov rdx, [rdi + 16]
    mov rbx, [rdi + 24]
    mov rbp, [rdi + 40]
    mov rsi, [rdi + 48]
    mov r8,  [rdi + 64]
    mov r9,  [rdi + 72]
    mov r10, [rdi + 80]
    mov r11, [rdi + 88]
    mov r12, [rdi + 96]
    mov r13, [rdi + 104]
    mov r14, [rdi + 112]
    mov r15, [rdi + 120]
    mov rdi, [rdi + 56]
    jnz 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    /* Only reached when the instruction failed (CF or ZF set). */
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    mov eax, 1
    ret

vmx_exit:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    xor eax, eax
    ret
"#
);
