//! The Intel VMX backend: VMXON, the VMCS, VM entry and exit decoding (Intel SDM vol. 3,
//! chapters 24–29).
//!
//! Every control is fitted to the TRUE capability MSRs (SDM appendix A.3) and a machine
//! that cannot give what Tessera needs is refused with the missing control's name. The
//! guest runs as an unrestricted guest (real and protected mode without paging run
//! natively, SDM §26.6.2) under EPT, with its own VPID.

use super::{
    ControlState, ControlWrite, Exception, Exit, GeneralRegisters, InstructionContext, IoAccess,
    Register, StartState, SupportedBits, TranslationFlush, VirtualCpu, RSP,
};
use crate::arch::{cpu::CoreDescriptors, cpuid, msr, x2apic};
use crate::table::{self};
use core::arch::global_asm;
use core::sync::atomic::Ordering;
use tessera_policy::control_registers::{guest_visible, vmcs_values, VmxFixedBits};
use tessera_policy::guest_walk::PagingRegisters;
use tessera_policy::vmx::{self as policy, ControlRegisterAccess};
use tessera_policy::xcr0::CheckedXcr0;
use x86::msr as x86_msr;
use x86::vmx::vmcs::{
    self,
    control::{PinbasedControls, PrimaryControls, SecondaryControls},
};

mod capabilities;
mod current_vmcs;

use capabilities::enable;
pub use capabilities::{check_support, Capabilities, Unsupported};
pub use current_vmcs::exit_soon_after_entry;
use current_vmcs::{read_cr0, read_cr3, read_cr4, vmread, vmwrite, Page, VMCS_STATE};

/// Basic exit reasons (SDM appendix C).
/// (The x86 crate has the VMCS encodings and control bits, not the exit reasons.)
mod exit_reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const NMI_WINDOW: u32 = 8;
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
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const WBINVD: u32 = 54;
    pub const VMFUNC: u32 = 59;
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

    /// Makes the ports of `ranges` pass through (`pass`) or exit; every other bit, and the
    /// MSR bitmap, stay as they are (a hot-standby takeover).
    pub fn set_ports(&mut self, ranges: &[tessera_abi::table::Range], pass: bool) {
        tessera_policy::io_bitmap::set_ports(ranges, pass, &mut self.io);
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
    /// Whether the VMCS has been launched (VMRESUME from then on, SDM §25.11.3): read by
    /// `vmx_run` to choose VMLAUNCH or VMRESUME and set by `vmx_exit` at every exit, at
    /// [`LAUNCHED_OFFSET`] from the register block.
    launched: bool,
    /// The host's stack pointer while the guest runs, left here by `vmx_run` and taken
    /// back by `vmx_exit` (at [`HOST_RSP_OFFSET`] from the register block).
    host_rsp: u64,
}

/// Where `launched` and `host_rsp` lie from the start of the register block, as the
/// assembly addresses them (`[rdi + 128]`, `[rdi + 136]`); the block itself is 128 bytes,
/// so HOST_RSP, its end, is the launched flag's address.
const LAUNCHED_OFFSET: usize = 128;
const HOST_RSP_OFFSET: usize = 136;
const _: () = assert!(
    core::mem::size_of::<GeneralRegisters>() == LAUNCHED_OFFSET
        && core::mem::offset_of!(VmxCore, launched) - core::mem::offset_of!(VmxCore, registers)
            == LAUNCHED_OFFSET
        && core::mem::offset_of!(VmxCore, host_rsp) - core::mem::offset_of!(VmxCore, registers)
            == HOST_RSP_OFFSET
);

impl VmxCore {
    pub const fn new() -> Self {
        Self {
            vmxon_region: Page::new(),
            vmcs: Page::new(),
            registers: GeneralRegisters([0; 16]),
            launched: false,
            host_rsp: 0,
        }
    }
}

/// What confines a vCPU: its EPT, permission maps and VPID.
pub struct Confinement {
    pub ept_pointer: u64,
    pub permission_maps: u64,
    pub vpid: u16,
    /// The partition's `wbinvd = "trap"`: WBINVD exits (INVD always does on VMX).
    pub intercept_wbinvd: bool,
}

pub struct VmxVcpu {
    core: &'static mut VmxCore,
    capabilities: Capabilities,
    /// The processor's CR0/CR4 fixed bits: the bits the hypervisor owns (guest/host masks)
    /// and the guest only sees shadowed.
    fixed: VmxFixedBits,
    /// The CR4 and EFER bits the guest may set.
    supported: SupportedBits,
    vpid: u16,
}

extern "C" {
    /// Enters the guest (VMLAUNCH while the `launched` byte after the register block is 0,
    /// else VMRESUME) and returns 0 after a VM exit, having set that byte, or 1 when the
    /// instruction itself failed. See the assembly below.
    fn vmx_run(registers: *mut GeneralRegisters) -> u64;
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
        core.vmcs.stamp_revision(capabilities.revision);
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
        let fixed = VmxFixedBits {
            cr0_fixed0: capabilities.cr0_fixed0,
            cr0_fixed1: capabilities.cr0_fixed1,
            cr4_fixed0: capabilities.cr4_fixed0,
            cr4_fixed1: capabilities.cr4_fixed1,
        };
        let supported =
            SupportedBits::vmx_guest(capabilities.cr4_fixed1, cpuid::query(0x8000_0001, 0)[3]);
        if let Some(index) = table::cpu_index(x2apic::current_id()) {
            VMCS_STATE[index.0].store(
                if capabilities.preemption_timer { 2 } else { 1 },
                Ordering::Release,
            );
        }
        let mut vcpu = Self {
            core,
            capabilities: *capabilities,
            fixed,
            supported,
            vpid: start.vpid,
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
        vmwrite(
            vmcs::control::PINBASED_EXEC_CONTROLS,
            u64::from(capabilities.pin_based),
        );
        vmwrite(
            vmcs::control::PRIMARY_PROCBASED_EXEC_CONTROLS,
            u64::from(capabilities.primary),
        );
        // WBINVD exits only for a partition whose policy traps it (and only where the
        // processor can: without the control WBINVD runs natively, noted at boot).
        let mut secondary = capabilities.secondary;
        if !start.intercept_wbinvd {
            secondary &= !SecondaryControls::WBINVD_EXITING.bits();
        }
        vmwrite(
            vmcs::control::SECONDARY_PROCBASED_EXEC_CONTROLS,
            u64::from(secondary),
        );
        vmwrite(vmcs::control::VMEXIT_CONTROLS, u64::from(capabilities.exit));
        vmwrite(
            vmcs::control::VMENTRY_CONTROLS,
            u64::from(capabilities.entry),
        );
        vmwrite(
            vmcs::control::EXCEPTION_BITMAP,
            u64::from(super::REFLECTED_EXCEPTIONS),
        );
        vmwrite(vmcs::control::IO_BITMAP_A_ADDR_FULL, start.permission_maps);
        vmwrite(
            vmcs::control::IO_BITMAP_B_ADDR_FULL,
            start.permission_maps + 4096,
        );
        vmwrite(
            vmcs::control::MSR_BITMAPS_ADDR_FULL,
            start.permission_maps + 8192,
        );
        vmwrite(vmcs::control::EPTP_FULL, start.ept_pointer);
        vmwrite(vmcs::control::VPID, u64::from(start.vpid));
        vmwrite(
            vmcs::control::CR0_GUEST_HOST_MASK,
            self.fixed.cr0_guest_host_mask(),
        );
        vmwrite(
            vmcs::control::CR4_GUEST_HOST_MASK,
            self.fixed.cr4_guest_host_mask(),
        );
    }

    /// Host state loaded at every VM exit (SDM §28.5): this core's current state.
    fn write_host_state(&self, descriptors: &CoreDescriptors) {
        use crate::arch::cpu::{CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
        vmwrite(vmcs::host::CR0, read_cr0());
        vmwrite(vmcs::host::CR3, read_cr3());
        vmwrite(vmcs::host::CR4, read_cr4());
        vmwrite(vmcs::host::CS_SELECTOR, u64::from(CODE_SELECTOR));
        for selector in [
            vmcs::host::SS_SELECTOR,
            vmcs::host::DS_SELECTOR,
            vmcs::host::ES_SELECTOR,
        ] {
            vmwrite(selector, u64::from(DATA_SELECTOR));
        }
        vmwrite(vmcs::host::FS_SELECTOR, 0);
        vmwrite(vmcs::host::GS_SELECTOR, 0);
        vmwrite(vmcs::host::TR_SELECTOR, u64::from(TSS_SELECTOR));
        vmwrite(vmcs::host::FS_BASE, 0);
        vmwrite(vmcs::host::GS_BASE, 0);
        vmwrite(vmcs::host::TR_BASE, descriptors.tss_base());
        vmwrite(vmcs::host::GDTR_BASE, descriptors.gdt_base());
        vmwrite(vmcs::host::IDTR_BASE, crate::arch::cpu::idt_base());
        vmwrite(vmcs::host::IA32_SYSENTER_CS, 0);
        vmwrite(vmcs::host::IA32_SYSENTER_ESP, 0);
        vmwrite(vmcs::host::IA32_SYSENTER_EIP, 0);
        // SAFETY: EFER and PAT exist on every CPU with VMX.
        let (efer, pat) = unsafe { (msr::read(msr::IA32_EFER), msr::read(x86_msr::IA32_PAT)) };
        vmwrite(vmcs::host::IA32_EFER_FULL, efer);
        vmwrite(vmcs::host::IA32_PAT_FULL, pat);
        vmwrite(vmcs::host::RIP, vmx_exit as *const () as u64);
        // The end of this core's register block: `vmx_exit` pushes the guest's registers
        // into it (see the assembly). The block is part of the core's static state, so the
        // address never changes.
        let registers = core::ptr::addr_of!(self.core.registers) as u64;
        vmwrite(vmcs::host::RSP, registers + LAUNCHED_OFFSET as u64);
    }

    /// Turns NMI-window exiting on (an NMI is held for the guest) or off.
    fn set_nmi_window_exiting(&mut self, on: bool) {
        let window = u64::from(PrimaryControls::NMI_WINDOW_EXITING.bits());
        let primary = vmread(vmcs::control::PRIMARY_PROCBASED_EXEC_CONTROLS);
        let wanted = if on {
            primary | window
        } else {
            primary & !window
        };
        if wanted != primary {
            vmwrite(vmcs::control::PRIMARY_PROCBASED_EXEC_CONTROLS, wanted);
        }
    }

    /// Drops the guest's cached translations after an emulated control-register write
    /// (SDM vol. 3 §4.10.4.1): with VPIDs, VM entry keeps them (§29.1). Single-context
    /// INVVPID for this vCPU's VPID where the processor has it, else all contexts.
    fn flush_guest_translations(&self, flush: TranslationFlush) {
        if flush == TranslationFlush::None {
            return;
        }
        let descriptor = [u64::from(self.vpid), 0];
        let kind: u64 = if self.capabilities.invvpid_single_context {
            1
        } else if self.capabilities.invvpid_all_contexts {
            2
        } else {
            return;
        };
        // SAFETY: VMX is on and the processor reports this INVVPID type (checked above);
        // the descriptor is a valid 128-bit INVVPID descriptor on the stack (SDM vol. 3
        // §31.3, INVVPID). It only drops TLB entries.
        unsafe {
            core::arch::asm!("invvpid {}, [{}]", in(reg) kind, in(reg) &descriptor, options(nostack))
        };
    }

    /// A WRMSR exit: ECX names the MSR, EDX:EAX hold the value.
    #[inline(always)]
    fn msr_write_exit(&self) -> Exit {
        Exit::MsrWrite {
            msr: self.register(Register::Rcx) as u32,
            value: (self.register(Register::Rdx) << 32)
                | (self.register(Register::Rax) & 0xFFFF_FFFF),
        }
    }

    #[inline(always)]
    fn decode_exit(&mut self) -> Option<Exit> {
        let reason = vmread(vmcs::ro::EXIT_REASON) as u32;
        // The three frequent exits first — VMCALL (the doorbell's path, whose length to its
        // ICR write matters most), WRMSR (the ICR filter's), CPUID — each compared as the
        // whole field, so a failed entry (bit 31) or any other flag bit falls through to the
        // full decode below. A compare and a branch each (the compiler orders the three) are
        // shorter than the two-level jump table the dispatch below compiles to.
        if reason == exit_reason::VMCALL {
            return Some(Exit::Hypercall);
        }
        match reason {
            exit_reason::WRMSR => return Some(self.msr_write_exit()),
            exit_reason::CPUID => return Some(Exit::Cpuid),
            _ => {}
        }
        if reason & (1 << 31) != 0 {
            return Some(Exit::InvalidGuestState);
        }
        // Read only by the exits that have one: the frequent ones (CPUID, WRMSR, VMCALL) do
        // not pay for a VMREAD they do not use.
        let qualification = || vmread(vmcs::ro::EXIT_QUALIFICATION);
        Some(match reason & 0xFFFF {
            exit_reason::CPUID => Exit::Cpuid,
            // SDM §28.2.1 table 28-5: bits 2:0 size - 1, bit 3 IN, bit 4 string, bit 5 REP,
            // bits 31:16 port.
            exit_reason::IO => {
                let qualification = qualification();
                Exit::Io(IoAccess {
                    port: (qualification >> 16) as u16,
                    size: (qualification & 0b111) as u8 + 1,
                    input: qualification & (1 << 3) != 0,
                    string: qualification & (1 << 4) != 0,
                    repeat: qualification & (1 << 5) != 0,
                    next_rip: self.rip() + vmread(vmcs::ro::VMEXIT_INSTRUCTION_LEN),
                })
            }
            exit_reason::RDMSR => Exit::MsrRead {
                msr: self.register(Register::Rcx) as u32,
            },
            exit_reason::WRMSR => self.msr_write_exit(),
            exit_reason::VMCALL => Exit::Hypercall,
            // SDM §28.2.1 table 28-7: bit 0 read, bit 1 write, bit 2 instruction fetch.
            exit_reason::EPT_VIOLATION => {
                let qualification = qualification();
                Exit::NestedPageFault {
                    guest_physical: vmread(vmcs::ro::GUEST_PHYSICAL_ADDR_FULL),
                    write: qualification & (1 << 1) != 0,
                    fetch: qualification & (1 << 2) != 0,
                }
            }
            exit_reason::TRIPLE_FAULT => Exit::TripleFault,
            // Armed by `exit_soon_after_entry`: disarm; the run loop looks at its signals.
            exit_reason::PREEMPTION_TIMER => {
                let pin_based = vmread(vmcs::control::PINBASED_EXEC_CONTROLS);
                vmwrite(
                    vmcs::control::PINBASED_EXEC_CONTROLS,
                    pin_based & !u64::from(PinbasedControls::VMX_PREEMPTION_TIMER.bits()),
                );
                Exit::Nmi
            }
            exit_reason::INIT => Exit::Init,
            // The guest ended its NMI blocking (IRET) with an NMI held for it: deliver it now.
            exit_reason::NMI_WINDOW => {
                self.set_nmi_window_exiting(false);
                self.inject_nmi();
                return None;
            }
            // With NMI exiting, an NMI exits with reason 0 and interruption type 2 (§28.2.2).
            exit_reason::EXCEPTION_OR_NMI
                if (vmread(vmcs::ro::VMEXIT_INTERRUPTION_INFO) >> 8) & 0b111 == 2 =>
            {
                // The NMI that caused this exit leaves NMIs blocked until an IRET; the
                // hypervisor's next signals must get through (Jailhouse and KVM end it the
                // same way, with an IRET on the host side).
                crate::arch::cpu::unblock_nmis();
                Exit::Nmi
            }
            // A hardware exception of the exception bitmap (SDM §28.2.2): #DB or #AC.
            exit_reason::EXCEPTION_OR_NMI => {
                let information = vmread(vmcs::ro::VMEXIT_INTERRUPTION_INFO);
                let from_icebp = (information >> 8) & 0b111 == 5;
                match information & 0xFF {
                    1 => {
                        // A #DB exit leaves DR6 as it was; the exit qualification holds what
                        // the exception would have set (B0–B3, BD, BS: SDM §28.2.1 table
                        // 28-1), which the guest's handler reads from DR6.
                        let dr6 = 0xFFFF_0FF0 | (qualification() & 0x600F);
                        // SAFETY: DR6 is this core's debug status register, the guest's own
                        // (Tessera does not switch it); writing it has no other effect.
                        unsafe {
                            core::arch::asm!("mov dr6, {}", in(reg) dr6, options(nomem, nostack))
                        };
                        Exit::ReflectedException(if from_icebp {
                            Exception::DebugFromIcebp
                        } else {
                            Exception::Debug
                        })
                    }
                    17 => Exit::ReflectedException(Exception::AlignmentCheck),
                    other => Exit::Other(0x1_0000 | other),
                }
            }
            exit_reason::VMCLEAR..=exit_reason::VMXON
            | exit_reason::INVEPT
            | exit_reason::INVVPID
            | exit_reason::VMFUNC => Exit::VirtualizationInstruction,
            exit_reason::WBINVD | exit_reason::INVD => Exit::CacheFlush,
            exit_reason::MONITOR | exit_reason::MWAIT => Exit::MonitorWait,
            // SDM §28.2.1 table 28-3. Only CR0 and CR4 writes that touch owned bits exit
            // (CR3 and CR8 exiting are off).
            exit_reason::CONTROL_REGISTER => {
                match policy::decode_control_register_access(qualification()) {
                    ControlRegisterAccess::MoveTo {
                        control_register: 0,
                        register,
                    } => Exit::ControlRegister(ControlWrite::Cr0(self.register_number(register))),
                    ControlRegisterAccess::MoveTo {
                        control_register: 4,
                        register,
                    } => Exit::ControlRegister(ControlWrite::Cr4(self.register_number(register))),
                    ControlRegisterAccess::Clts => Exit::ControlRegister(ControlWrite::Clts),
                    ControlRegisterAccess::Lmsw { source_data } => {
                        Exit::ControlRegister(ControlWrite::Lmsw(source_data))
                    }
                    _ => Exit::Other(u64::from(reason)),
                }
            }
            // XSETBV always exits under VMX (SDM §26.1.2); ECX names the register.
            exit_reason::XSETBV => Exit::Xsetbv {
                index: self.register(Register::Rcx) as u32,
                value: (self.register(Register::Rdx) << 32)
                    | (self.register(Register::Rax) & 0xFFFF_FFFF),
            },
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
    #[inline(always)]
    fn run(&mut self) -> Exit {
        loop {
            // Derived from a pointer to the whole VmxCore: the assembly also reaches
            // `launched` and `host_rsp` past the register block.
            let core = core::ptr::from_mut::<VmxCore>(self.core);
            // SAFETY: this core's VMCS is current and complete (controls, host and guest
            // state written in `new`, HOST_RSP the end of this register block); `core`
            // points to this core's own VmxCore (a live exclusive borrow), whose register
            // block, `launched` byte and `host_rsp` word after it (offsets checked at compile
            // time) the assembly reads and writes.
            let failed = unsafe { vmx_run(&raw mut (*core).registers) };
            if failed != 0 {
                let error = vmread(vmcs::ro::VM_INSTRUCTION_ERROR) as u32;
                log::info!(
                    "VM entry failed: VM-instruction error {} ({})",
                    error,
                    policy::instruction_error_name(error)
                );
                return Exit::InvalidGuestState;
            }
            // No VMWRITE of the VM-entry interruption-information field here: every VM exit
            // clears its valid bit (SDM vol. 3C §28.2, "Recording VM-Exit Information and
            // Updating VM-Entry Control Fields"), so an event injected at this entry is not
            // injected again at the next.
            if let Some(exit) = self.decode_exit() {
                return exit;
            }
        }
    }

    #[inline]
    fn rip(&self) -> u64 {
        vmread(vmcs::guest::RIP)
    }

    #[inline]
    fn set_rip(&mut self, rip: u64) {
        vmwrite(vmcs::guest::RIP, rip);
    }

    fn rflags(&self) -> u64 {
        vmread(vmcs::guest::RFLAGS)
    }

    #[inline]
    fn privilege_level(&self) -> u8 {
        // CPL is SS.DPL (SDM vol. 3 §5.5; access rights bits 6:5, §25.4.1).
        ((vmread(vmcs::guest::SS_ACCESS_RIGHTS) >> 5) & 0b11) as u8
    }

    /// VMX reports the exiting instruction's length (SDM §28.2.5); `length` is ignored.
    /// Inlined: it follows every hypercall, the doorbell's included.
    #[inline(always)]
    fn skip_instruction(&mut self, _length: u64) {
        let length = vmread(vmcs::ro::VMEXIT_INSTRUCTION_LEN);
        self.set_rip(self.rip() + length);
        // Skipping an instruction ends blocking by STI / MOV SS (SDM §26.3.1.5).
        let interruptibility = vmread(vmcs::guest::INTERRUPTIBILITY_STATE);
        if interruptibility & 0b11 != 0 {
            vmwrite(
                vmcs::guest::INTERRUPTIBILITY_STATE,
                interruptibility & !0b11,
            );
        }
    }

    fn inject_exception(&mut self, exception: Exception) {
        // VM-entry interruption information (SDM §25.8.3): vector, type 3 = hardware
        // exception, bit 11 = deliver error code, bit 31 = valid.
        let information = match exception {
            Exception::Debug => 1 | (3 << 8) | (1 << 31),
            Exception::DebugFromIcebp => {
                vmwrite(vmcs::control::VMENTRY_INSTRUCTION_LEN, 1);
                1 | (5 << 8) | (1 << 31)
            }
            Exception::InvalidOpcode => 6 | (3 << 8) | (1 << 31),
            Exception::GeneralProtection => {
                vmwrite(vmcs::control::VMENTRY_EXCEPTION_ERR_CODE, 0);
                13 | (3 << 8) | (1 << 11) | (1 << 31)
            }
            Exception::AlignmentCheck => {
                vmwrite(vmcs::control::VMENTRY_EXCEPTION_ERR_CODE, 0);
                17 | (3 << 8) | (1 << 11) | (1 << 31)
            }
        };
        vmwrite(vmcs::control::VMENTRY_INTERRUPTION_INFO_FIELD, information);
    }

    /// The guest's view: owned CR0/CR4 bits from the read shadows, the rest from the real
    /// registers, which the guest may have changed without an exit (SDM §25.6.6).
    fn control_state(&self) -> ControlState {
        let code_rights = vmread(vmcs::guest::CS_ACCESS_RIGHTS);
        let task_type = vmread(vmcs::guest::TR_ACCESS_RIGHTS) & 0xF;
        ControlState {
            cr0: guest_visible(
                vmread(vmcs::guest::CR0),
                vmread(vmcs::control::CR0_READ_SHADOW),
                self.fixed.cr0_guest_host_mask(),
            ),
            cr3: vmread(vmcs::guest::CR3),
            cr4: guest_visible(
                vmread(vmcs::guest::CR4),
                vmread(vmcs::control::CR4_READ_SHADOW),
                self.fixed.cr4_guest_host_mask(),
            ),
            efer: vmread(vmcs::guest::IA32_EFER_FULL),
            // Access rights: L is bit 13; a 16-bit TSS has type 1 or 3 (SDM §25.4.1).
            code_segment_long: code_rights & (1 << 13) != 0,
            task_register_16_bit: task_type == 1 || task_type == 3,
        }
    }

    fn supported_control_bits(&self) -> SupportedBits {
        self.supported
    }

    /// The hypervisor never uses extended state itself, so the guest's XCR0 simply stays
    /// loaded on this core (it is no one else's: the core belongs to the partition).
    fn load_xcr0(&mut self, value: CheckedXcr0) {
        let value = value.value();
        // SAFETY: `CheckedXcr0` holds only values `check_xsetbv` accepted against the
        // processor's CPUID.(EAX=0DH,ECX=0) bits, so XSETBV cannot fault; CR4.OSXSAVE was set
        // in `enable` wherever XSAVE exists (without XSAVE no value is supported, so no
        // CheckedXcr0 for this processor exists beyond POWER_ON, which is never loaded then).
        unsafe {
            core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
        };
    }

    fn load_control_state(
        &mut self,
        state: &ControlState,
        pae_pdptes: Option<[u64; 4]>,
        flush: TranslationFlush,
    ) {
        let values = vmcs_values(state, &self.fixed);
        vmwrite(vmcs::guest::CR0, values.guest_cr0);
        vmwrite(vmcs::control::CR0_READ_SHADOW, values.cr0_read_shadow);
        vmwrite(vmcs::guest::CR4, values.guest_cr4);
        vmwrite(vmcs::control::CR4_READ_SHADOW, values.cr4_read_shadow);
        vmwrite(vmcs::guest::IA32_EFER_FULL, values.guest_efer);
        let entry = vmread(vmcs::control::VMENTRY_CONTROLS) as u32;
        vmwrite(
            vmcs::control::VMENTRY_CONTROLS,
            u64::from(values.entry_controls(entry)),
        );
        if let Some(entries) = pae_pdptes {
            // With EPT, VM entry loads the PDPTE registers from these fields (SDM §27.3.2.4).
            for (index, entry) in entries.into_iter().enumerate() {
                vmwrite(vmcs::guest::PDPTE0_FULL + 2 * index as u32, entry);
            }
        }
        self.flush_guest_translations(flush);
    }

    #[inline(always)]
    fn register_number(&self, number: u8) -> u64 {
        match number & 0xF {
            RSP => vmread(vmcs::guest::RSP),
            other => self.core.registers.0[usize::from(other)],
        }
    }

    #[inline]
    fn set_register_number(&mut self, number: u8, value: u64) {
        match number & 0xF {
            RSP => vmwrite(vmcs::guest::RSP, value),
            other => self.core.registers.0[usize::from(other)] = value,
        }
    }

    fn instruction_context(&self) -> InstructionContext {
        let rights = vmread(vmcs::guest::ES_ACCESS_RIGHTS + 2);
        let paging = PagingRegisters {
            cr0: vmread(vmcs::guest::CR0),
            cr3: vmread(vmcs::guest::CR3),
            cr4: vmread(vmcs::guest::CR4),
            efer: vmread(vmcs::guest::IA32_EFER_FULL),
        };
        InstructionContext {
            rip_linear: vmread(vmcs::guest::ES_BASE + 2).wrapping_add(self.rip()),
            // VMX access rights: L is bit 13, D/B bit 14 (SDM §25.4.1).
            mode: InstructionContext::mode_of(
                paging.cr0,
                paging.efer,
                rights & (1 << 13) != 0,
                rights & (1 << 14) != 0,
            ),
            paging,
            // ES, CS, SS, DS, FS, GS bases are consecutive encodings two apart (SDM §B.4.3).
            segment_bases: core::array::from_fn(|index| {
                vmread(vmcs::guest::ES_BASE + 2 * index as u32)
            }),
        }
    }

    /// The start state as an unrestricted guest (real mode and protected mode without paging
    /// run natively, SDM §26.6.2).
    fn reset(&mut self, start: &StartState) {
        let registers = start.architectural();
        // Eight segment registers from ES (0x800, 0x4800, 0x4814, 0x6806), two apart, in the
        // order ES, CS, SS, DS, FS, GS, LDTR, TR.
        const CS: u32 = 1;
        const LDTR: u32 = 6;
        const TR: u32 = 7;
        for index in 0..8u32 {
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
            vmwrite(vmcs::guest::ES_SELECTOR + 2 * index, u64::from(selector));
            vmwrite(vmcs::guest::ES_LIMIT + 2 * index, u64::from(limit));
            vmwrite(vmcs::guest::ES_ACCESS_RIGHTS + 2 * index, rights);
            vmwrite(vmcs::guest::ES_BASE + 2 * index, base);
        }
        debug_assert_eq!(vmcs::guest::ES_LIMIT + 2 * LDTR, vmcs::guest::LDTR_LIMIT);
        debug_assert_eq!(
            vmcs::guest::ES_ACCESS_RIGHTS + 2 * TR,
            vmcs::guest::TR_ACCESS_RIGHTS
        );
        debug_assert_eq!(vmcs::guest::ES_BASE + 2 * TR, vmcs::guest::TR_BASE);
        vmwrite(vmcs::guest::GDTR_BASE, registers.gdt.0);
        vmwrite(vmcs::guest::GDTR_LIMIT, u64::from(registers.gdt.1));
        vmwrite(vmcs::guest::IDTR_BASE, 0);
        vmwrite(vmcs::guest::IDTR_LIMIT, 0xFFFF);
        vmwrite(vmcs::guest::DR7, 0x400);
        vmwrite(vmcs::guest::RSP, 0);
        vmwrite(vmcs::guest::RIP, registers.rip);
        vmwrite(vmcs::guest::RFLAGS, 0x2);
        vmwrite(vmcs::guest::PENDING_DBG_EXCEPTIONS, 0);
        vmwrite(vmcs::guest::INTERRUPTIBILITY_STATE, 0);
        vmwrite(vmcs::guest::ACTIVITY_STATE, 0);
        vmwrite(vmcs::guest::IA32_SYSENTER_CS, 0);
        vmwrite(vmcs::guest::IA32_SYSENTER_ESP, 0);
        vmwrite(vmcs::guest::IA32_SYSENTER_EIP, 0);
        vmwrite(vmcs::guest::IA32_DEBUGCTL_FULL, 0);
        vmwrite(vmcs::guest::IA32_PAT_FULL, 0x0007_0406_0007_0406); // the power-on PAT
        vmwrite(vmcs::guest::LINK_PTR_FULL, u64::MAX);
        vmwrite(vmcs::control::VMENTRY_INTERRUPTION_INFO_FIELD, 0);
        vmwrite(vmcs::guest::CR3, registers.cr3);
        // CR0, CR4, EFER and "IA-32e mode guest" (which must equal EFER.LMA at entry, SDM
        // §26.3.1.1; a previous run may have left it set) as one consistent control state.
        let state = ControlState {
            cr0: registers.cr0,
            cr3: registers.cr3,
            cr4: registers.cr4,
            efer: registers.efer,
            code_segment_long: registers.code.attributes & (1 << 9) != 0,
            task_register_16_bit: false,
        };
        self.load_control_state(&state, None, TranslationFlush::AllContexts);
        // INVVPID above drops linear and combined mappings only; guest-physical ones (used
        // while the guest's paging is off, as at a start) go with INVEPT (SDM vol. 3C
        // §29.4.3.1). A takeover may have taken BAR pages out of this partition's EPT while
        // it was stopped (`runtime::memory::move_function_windows`).
        if self.capabilities.invept_all_contexts {
            let descriptor = [0u64; 2];
            // SAFETY: VMX is on and the processor reports all-context INVEPT (checked); the
            // descriptor is a valid 128-bit INVEPT descriptor on the stack (SDM vol. 3C
            // §31.3, INVEPT). It only drops cached translations.
            unsafe {
                core::arch::asm!("invept {}, [{}]", in(reg) 2u64, in(reg) &descriptor, options(nostack));
            }
        }
        // A fresh start holds no NMI for the guest.
        self.set_nmi_window_exiting(false);
        self.core.registers = GeneralRegisters::default();
        self.set_register(Register::Rbx, registers.rbx);
        self.set_register(Register::Rsi, registers.rsi);
    }

    fn clear_for_restart(&mut self) {
        // The SYSENTER MSRs are VMCS fields, set by `reset`; everything else the guest uses
        // directly is this core's own register (Tessera switches no MSR on VMX).
        crate::arch::cpu::reset_guest_registers(true);
        crate::arch::x2apic::reset_for_restart();
    }

    /// An NMI taken in the hypervisor arms the preemption timer at zero
    /// (`exit_soon_after_entry`), so the next entry exits at once — where the processor has
    /// the timer. Without it such a signal is seen only at the loop's next look at its
    /// signals, which must then follow every exit.
    #[inline(always)]
    fn signals_always_exit(&self) -> bool {
        self.capabilities.preemption_timer
    }

    fn inject_nmi(&mut self) {
        // Interruption type 2 = NMI, vector 2 (SDM §25.8.3). While the guest blocks NMIs
        // (interruptibility bit 3) entry with an NMI would fail (SDM §26.3.1.5): the NMI is
        // held and NMI-window exiting brings the core back when the guest's IRET unblocks
        // (SDM §26.7.6). A processor without it loses that NMI (noted in docs/emulators.md).
        if vmread(vmcs::guest::INTERRUPTIBILITY_STATE) & (1 << 3) == 0 {
            vmwrite(
                vmcs::control::VMENTRY_INTERRUPTION_INFO_FIELD,
                2 | (2 << 8) | (1 << 31),
            );
        } else if self.capabilities.nmi_window_exiting {
            self.set_nmi_window_exiting(true);
        }
    }
}

// vmx_run(registers: rdi) -> rax (0 = exited, 1 = VMLAUNCH/VMRESUME failed)
// The register block is a GeneralRegisters: register n at offset n × 8 (RSP is in the VMCS);
// the byte at offset 128 is VmxCore::launched: VMLAUNCH while it is 0, VMRESUME after (SDM
// §25.11.3), set at every exit (a successful VMLAUNCH makes the VMCS launched); the word at
// offset 136 is VmxCore::host_rsp, where vmx_run leaves the host's stack pointer.
//
// HOST_RSP is the end of the register block (written once, `write_host_state`): at vmx_exit
// the guest's registers are pushed straight into their slots, from r15 (slot 15) down to
// rax (slot 0), RSP's slot skipped, and only then is the host's stack taken back — no
// register has to be freed first to hold the block's address. Nothing else can use that
// stack in between: VM exit clears RFLAGS.IF (SDM vol. 3C §28.5.3), and the two events
// that could still arrive, NMI and machine check, switch to their own IST stacks (the
// hypervisor's IDT, `arch::cpu`; SDM vol. 3A §6.14.5).
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
    mov [rdi + 136], rsp
    cmp byte ptr [rdi + 128], 0
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
    /* Only reached when the instruction failed (CF or ZF set); RSP is still the host's. */
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    mov eax, 1
    ret

vmx_exit:
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rdi
    push rsi
    push rbp
    sub rsp, 8
    push rbx
    push rdx
    push rcx
    push rax
    mov byte ptr [rsp + 128], 1
    mov rsp, [rsp + 136]
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
