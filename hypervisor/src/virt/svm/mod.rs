//! The AMD SVM backend: VMCB layout, VMRUN, exit decoding (AMD APM vol. 2 ch. 15).
//!
//! QEMU's TCG implements SVM with nested paging but without NRIP save or decode assists
//! (docs/emulators.md), so RIP is advanced by known instruction lengths and IOIO exits
//! take the next RIP from EXITINFO2 (APM §15.10.2).

use super::{
    ControlState, Exception, Exit, GeneralRegisters, InstructionContext, IoAccess, Register,
    Segment, StartState, SupportedBits, TranslationFlush, VirtualCpu, RSP,
};
mod vmcb;

use crate::arch::msr;
use core::arch::global_asm;
use tessera_policy::control_registers::efer_supported;
use tessera_policy::guest_walk::PagingRegisters;
use tessera_policy::xcr0::CheckedXcr0;
pub use vmcb::Vmcb;
use vmcb::{control, exit_code, state, InterceptVector3, InterceptVector4};

/// A partition's SVM permission maps: the I/O permission map (12 KiB, APM §15.10.1) and the
/// MSR permission map (8 KiB, APM §15.11), both physically contiguous and page-aligned.
#[repr(C, align(4096))]
pub struct PermissionMaps {
    io: [u8; 12288],
    msr: [u8; 8192],
}

impl PermissionMaps {
    pub const fn new() -> Self {
        // Zero (so the maps live in .bss); `build` writes every byte before use.
        Self {
            io: [0; 12288],
            msr: [0; 8192],
        }
    }

    /// Fills both maps from the partition's ports and the shared MSR policy. Ports above
    /// 0xFFFF (the third IOPM page, for accesses that wrap) stay intercepted.
    pub fn build(&mut self, ports: &[tessera_abi::table::Range]) {
        let (ports_bitmap, beyond) = self.io.split_at_mut(8192);
        let ports_bitmap: &mut [u8; 8192] = ports_bitmap.try_into().expect("8 KiB by construction");
        tessera_policy::io_bitmap::build_io_bitmap(ports, ports_bitmap);
        beyond.fill(0xFF);
        tessera_policy::msr::build_svm_msr_permission_map(&mut self.msr);
    }

    /// Makes the ports of `ranges` pass through (`pass`) or exit; every other bit, and the
    /// MSR map, stay as they are (a hot-standby takeover).
    pub fn set_ports(&mut self, ranges: &[tessera_abi::table::Range], pass: bool) {
        let ports_bitmap: &mut [u8; 8192] = (&mut self.io[..8192])
            .try_into()
            .expect("8 KiB by construction");
        tessera_policy::io_bitmap::set_ports(ranges, pass, ports_bitmap);
    }

    /// Where the processor finds the maps (identity-mapped: the linear address).
    pub fn physical_address(&self) -> u64 {
        self as *const Self as u64
    }
}

/// The SVM state one core owns: its guest VMCB, a VMCB for the host's VMSAVE state, the
/// host save area VMRUN uses, and the guest registers.
#[repr(C, align(4096))]
pub struct SvmCore {
    guest: Vmcb,
    host: Vmcb,
    host_save_area: Vmcb,
    registers: GeneralRegisters,
}

impl SvmCore {
    pub const fn new() -> Self {
        Self {
            guest: Vmcb::new(),
            host: Vmcb::new(),
            host_save_area: Vmcb::new(),
            registers: GeneralRegisters([0; 16]),
        }
    }
}

/// Why this machine cannot run the SVM backend.
#[derive(Clone, Copy, Debug)]
pub enum Unsupported {
    NoSvm,
    DisabledByFirmware,
    NoNestedPaging,
}

impl Unsupported {
    pub fn describe(self) -> &'static str {
        match self {
            Unsupported::NoSvm => "the CPU lacks AMD SVM (CPUID 8000_0001:ECX bit 2)",
            Unsupported::DisabledByFirmware => "SVM is disabled by the firmware (VM_CR.SVMDIS)",
            Unsupported::NoNestedPaging => {
                "the CPU lacks nested paging (CPUID 8000_000A:EDX bit 0)"
            }
        }
    }
}

/// Checks what the backend needs on this core.
pub fn check_support() -> Result<(), Unsupported> {
    if !crate::arch::cpuid::has_svm() {
        return Err(Unsupported::NoSvm);
    }
    // SAFETY: VM_CR exists on every CPU that reports SVM.
    if unsafe { msr::read(msr::AMD_VM_CR) } & (1 << 4) != 0 {
        return Err(Unsupported::DisabledByFirmware);
    }
    if !crate::arch::cpuid::has_nested_paging() {
        return Err(Unsupported::NoNestedPaging);
    }
    Ok(())
}

/// What confines a vCPU: its stage-2 tables, permission maps and address-space ID.
pub struct Confinement {
    pub nested_cr3: u64,
    pub permission_maps: u64,
    pub asid: u32,
    /// The partition's `wbinvd = "trap"`: WBINVD exits (INVD always does).
    pub intercept_wbinvd: bool,
}

/// The guest vCPU of one core.
pub struct SvmVcpu {
    core: &'static mut SvmCore,
}

impl SvmVcpu {
    /// Enables SVM on this core and prepares the VMCB for a PVH entry.
    pub fn new(core: &'static mut SvmCore, start: &Confinement) -> Self {
        // SAFETY: SVM support was checked; setting EFER.SVME enables SVM instructions (APM
        // §15.4), and VM_HSAVE_PA points at this core's own page-aligned save area. CLGI
        // keeps NMIs held while the hypervisor runs (APM §15.17): they cause exits instead.
        unsafe {
            msr::write(msr::IA32_EFER, msr::read(msr::IA32_EFER) | msr::EFER_SVME);
            msr::write(msr::AMD_VM_HSAVE_PA, core.host_save_area.physical_address());
            core::arch::asm!("clgi", options(nomem, nostack));
        }
        let vmcb = &mut core.guest;
        vmcb.write_u32(control::INTERCEPT_EXCEPTIONS, super::REFLECTED_EXCEPTIONS);
        vmcb.write_u32(
            control::INTERCEPT_VECTOR_3,
            (InterceptVector3::NMI
                | InterceptVector3::INIT
                | InterceptVector3::CPUID
                | InterceptVector3::INVD
                | InterceptVector3::IOIO
                | InterceptVector3::MSR
                | InterceptVector3::SHUTDOWN)
                .bits(),
        );
        // Every SVM instruction (a guest may not use them: they exit and get #UD), MONITOR
        // and MWAIT, and WBINVD unless the partition's policy leaves it native.
        let mut vector_4 = InterceptVector4::all();
        if !start.intercept_wbinvd {
            vector_4.remove(InterceptVector4::WBINVD);
        }
        vmcb.write_u32(control::INTERCEPT_VECTOR_4, vector_4.bits());
        vmcb.write_u64(control::IOPM_BASE, start.permission_maps);
        vmcb.write_u64(control::MSRPM_BASE, start.permission_maps + 12288);
        vmcb.write_u32(control::GUEST_ASID, start.asid);
        vmcb.write_u8(control::TLB_CONTROL, 1); // flush this ASID on the first VMRUN
        vmcb.write_u64(control::NESTED_PAGING, 1);
        vmcb.write_u64(control::NESTED_CR3, start.nested_cr3);

        Self { core }
    }

    fn decode_exit(&self) -> Exit {
        let vmcb = &self.core.guest;
        let code = vmcb.read_u64(control::EXIT_CODE);
        let info1 = vmcb.read_u64(control::EXIT_INFO_1);
        let info2 = vmcb.read_u64(control::EXIT_INFO_2);
        if code & 0xFFFF_FFFF == exit_code::INVALID_LOW {
            return Exit::InvalidGuestState;
        }
        match code {
            exit_code::CPUID => Exit::Cpuid,
            // APM §15.10.2: EXITINFO1 bit 0 = IN, bit 2 = string, bit 3 = REP, bits 4–6 =
            // operand size one-hot, bits 31:16 = port; EXITINFO2 = next RIP.
            exit_code::IOIO => Exit::Io(IoAccess {
                port: (info1 >> 16) as u16,
                size: if info1 & (1 << 4) != 0 {
                    1
                } else if info1 & (1 << 5) != 0 {
                    2
                } else {
                    4
                },
                input: info1 & 1 != 0,
                string: info1 & (1 << 2) != 0,
                repeat: info1 & (1 << 3) != 0,
                next_rip: info2,
            }),
            // APM §15.11: EXITINFO1 = 0 for RDMSR, 1 for WRMSR.
            exit_code::MSR => {
                let msr = self.register(Register::Rcx) as u32;
                if info1 == 0 {
                    Exit::MsrRead { msr }
                } else {
                    let value = (self.register(Register::Rdx) << 32)
                        | (self.register(Register::Rax) & 0xFFFF_FFFF);
                    Exit::MsrWrite { msr, value }
                }
            }
            exit_code::VMMCALL => Exit::Hypercall,
            // APM §15.25.6: EXITINFO1 = page-fault error code, EXITINFO2 = guest-physical
            // address.
            exit_code::NPF => Exit::NestedPageFault {
                guest_physical: info2,
                write: info1 & (1 << 1) != 0,
                fetch: info1 & (1 << 4) != 0,
            },
            exit_code::SHUTDOWN => Exit::TripleFault,
            // The processor has already written the guest's DR6 in the VMCB for #DB (APM
            // §15.12); #AC's error code is always 0.
            exit_code::DEBUG => Exit::ReflectedException(Exception::Debug),
            exit_code::ALIGNMENT_CHECK => Exit::ReflectedException(Exception::AlignmentCheck),
            exit_code::NMI => Exit::Nmi,
            exit_code::INIT => Exit::Init,
            exit_code::VMRUN
            | exit_code::VMLOAD
            | exit_code::VMSAVE
            | exit_code::STGI
            | exit_code::CLGI
            | exit_code::SKINIT => Exit::VirtualizationInstruction,
            exit_code::WBINVD | exit_code::INVD => Exit::CacheFlush,
            exit_code::MONITOR | exit_code::MWAIT | exit_code::MWAIT_CONDITIONAL => {
                Exit::MonitorWait
            }
            other => Exit::Other(other),
        }
    }
}

extern "C" {
    /// Runs the guest until its next exit; see the assembly below.
    fn svm_run(registers: *mut GeneralRegisters, guest_vmcb: u64, host_vmcb: u64);
}

impl VirtualCpu for SvmVcpu {
    fn run(&mut self) -> Exit {
        let guest = self.core.guest.physical_address();
        let host = self.core.host.physical_address();
        // SAFETY: both VMCBs are this core's own page-aligned statics, set up in `new`; the
        // register block is this core's. VMRUN returns here on every exit.
        unsafe { svm_run(&mut self.core.registers, guest, host) };
        self.core.guest.write_u8(control::TLB_CONTROL, 0);
        self.core.guest.write_u64(control::EVENT_INJECTION, 0);
        let exit = self.decode_exit();
        if let Exit::Nmi = exit {
            // The NMI that caused the exit stays pending until GIF is set (APM §15.21.2): let
            // the host take it now (its IDT entry just returns) so it does not exit again.
            // SAFETY: STGI/CLGI only toggle the global interrupt flag; RFLAGS.IF stays clear,
            // so only the pending NMI can be delivered in between.
            unsafe { core::arch::asm!("stgi", "clgi", options(nomem, nostack)) };
        }
        exit
    }

    #[inline]
    fn rip(&self) -> u64 {
        self.core.guest.read_u64(state::RIP)
    }

    #[inline]
    fn set_rip(&mut self, rip: u64) {
        self.core.guest.write_u64(state::RIP, rip);
    }

    #[inline]
    fn rflags(&self) -> u64 {
        self.core.guest.read_u64(state::RFLAGS)
    }

    fn privilege_level(&self) -> u8 {
        // The VMCB keeps the guest's CPL in its state-save area (APM table B-2, 0x0CB).
        self.core.guest.read_field(state::CPL, 8) as u8 & 0b11
    }

    #[inline]
    fn skip_instruction(&mut self, length: u64) {
        // No NRIP save under QEMU: the caller knows the length of the instruction it handled.
        self.set_rip(self.rip().wrapping_add(length));
    }

    fn inject_exception(&mut self, exception: Exception) {
        // EVENTINJ (APM §15.20): vector, type 3 = exception, bit 11 = error code valid, bit 31
        // = valid, error code in bits 63:32 (zero here).
        let event = match exception {
            // ICEBP is not intercepted on SVM, so its #DB arrives as any other.
            Exception::Debug | Exception::DebugFromIcebp => 1 | (3 << 8) | (1 << 31),
            Exception::InvalidOpcode => 6 | (3 << 8) | (1 << 31),
            Exception::GeneralProtection => 13 | (3 << 8) | (1 << 11) | (1 << 31),
            Exception::AlignmentCheck => 17 | (3 << 8) | (1 << 11) | (1 << 31),
        };
        self.core.guest.write_u64(control::EVENT_INJECTION, event);
    }

    /// CR0, CR3, CR4 straight from the VMCB (SVM intercepts no CR write); EFER without
    /// SVME, which belongs to the hypervisor (the guest's CPUID shows no SVM).
    fn control_state(&self) -> ControlState {
        let vmcb = &self.core.guest;
        let attributes = |offset| vmcb.segment_attributes(offset);
        let task_type = attributes(state::TR) & 0xF;
        ControlState {
            cr0: vmcb.read_u64(state::CR0),
            cr3: vmcb.read_u64(state::CR3),
            cr4: vmcb.read_u64(state::CR4),
            efer: vmcb.read_u64(state::EFER) & !msr::EFER_SVME,
            // VMCB attributes: L is bit 9; a 16-bit TSS has type 1 or 3.
            code_segment_long: attributes(state::CS) & (1 << 9) != 0,
            task_register_16_bit: task_type == 1 || task_type == 3,
        }
    }

    /// Only EFER writes reach the hypervisor on SVM: the EFER bits CPUID 8000_0001h:EDX
    /// announces (SCE, NXE, LME/LMA); AMD's SVME, LMSLE, FFXSR and TCE stay the
    /// hypervisor's or off.
    fn supported_control_bits(&self) -> SupportedBits {
        SupportedBits {
            cr4: 0,
            efer: efer_supported(crate::arch::cpuid::query(0x8000_0001, 0)[3]),
        }
    }

    /// XSETBV is not intercepted on SVM: the guest loads XCR0 itself and this is never
    /// called.
    fn load_xcr0(&mut self, _value: CheckedXcr0) {}

    fn load_control_state(
        &mut self,
        control: &ControlState,
        _pae_pdptes: Option<[u64; 4]>,
        flush: TranslationFlush,
    ) {
        // Only EFER writes come here on SVM (no CR write is intercepted), and an EFER write
        // never asks for a PAE PDPTE load: there is nothing to store.
        let vmcb = &mut self.core.guest;
        vmcb.write_u64(state::CR0, control.cr0);
        vmcb.write_u64(state::CR3, control.cr3);
        vmcb.write_u64(state::CR4, control.cr4);
        // APM §15.5.1: the guest's EFER.SVME must be set.
        vmcb.write_u64(state::EFER, control.efer | msr::EFER_SVME);
        if flush != TranslationFlush::None {
            vmcb.write_u8(control::TLB_CONTROL, 1); // flush this ASID at the next VMRUN
        }
    }

    #[inline]
    fn register_number(&self, number: u8) -> u64 {
        match number & 0xF {
            0 => self.core.guest.read_u64(state::RAX),
            RSP => self.core.guest.read_u64(state::RSP),
            other => self.core.registers.0[usize::from(other)],
        }
    }

    #[inline]
    fn set_register_number(&mut self, number: u8, value: u64) {
        match number & 0xF {
            0 => self.core.guest.write_u64(state::RAX, value),
            RSP => self.core.guest.write_u64(state::RSP, value),
            other => self.core.registers.0[usize::from(other)] = value,
        }
    }

    fn instruction_context(&self) -> InstructionContext {
        let vmcb = &self.core.guest;
        let code_attributes = vmcb.segment_attributes(state::CS);
        let paging = PagingRegisters {
            cr0: vmcb.read_u64(state::CR0),
            cr3: vmcb.read_u64(state::CR3),
            cr4: vmcb.read_u64(state::CR4),
            efer: vmcb.read_u64(state::EFER),
        };
        InstructionContext {
            rip_linear: vmcb
                .read_u64(state::CS + 8)
                .wrapping_add(vmcb.read_u64(state::RIP)),
            // VMCB attributes: L is bit 9, D/B bit 10.
            mode: InstructionContext::mode_of(
                paging.cr0,
                paging.efer,
                code_attributes & (1 << 9) != 0,
                code_attributes & (1 << 10) != 0,
            ),
            paging,
            // The six segments lie 16 bytes apart from ES, each with its base at +8 (APM
            // vol. 2 appendix B, table B-2).
            segment_bases: core::array::from_fn(|index| vmcb.read_u64(state::ES + 16 * index + 8)),
        }
    }

    fn reset(&mut self, start: &StartState) {
        let registers = start.architectural();
        let vmcb = &mut self.core.guest;
        let segment = |vmcb: &mut Vmcb, offset, segment: Segment| {
            vmcb.write_segment(
                offset,
                segment.selector,
                segment.attributes,
                segment.limit,
                segment.base,
            )
        };
        segment(vmcb, state::CS, registers.code);
        for offset in [state::DS, state::ES, state::SS, state::FS, state::GS] {
            segment(vmcb, offset, registers.data);
        }
        segment(vmcb, state::TR, registers.task);
        vmcb.write_segment(state::LDTR, 0, 0x0082, 0xFFFF, 0);
        vmcb.write_segment(state::GDTR, 0, 0, registers.gdt.1, registers.gdt.0);
        vmcb.write_segment(state::IDTR, 0, 0, 0xFFFF, 0);
        // APM §15.5.1: the guest's EFER.SVME must be set.
        vmcb.write_u64(state::EFER, registers.efer | msr::EFER_SVME);
        vmcb.write_u64(state::CR0, registers.cr0);
        vmcb.write_u64(state::CR3, registers.cr3);
        vmcb.write_u64(state::CR4, registers.cr4);
        vmcb.write_u64(state::DR6, 0xFFFF_0FF0);
        vmcb.write_u64(state::DR7, 0x400);
        vmcb.write_u64(state::RFLAGS, 0x2);
        vmcb.write_u64(state::RIP, registers.rip);
        vmcb.write_u64(state::RSP, 0);
        vmcb.write_u64(state::RAX, 0);
        vmcb.write_u64(state::G_PAT, 0x0007_0406_0007_0406); // the power-on PAT
        vmcb.write_u64(control::EVENT_INJECTION, 0);
        vmcb.write_u8(control::TLB_CONTROL, 1); // a fresh start: flush the ASID's translations
        self.core.registers = GeneralRegisters::default();
        self.set_register(Register::Rbx, registers.rbx);
        self.set_register(Register::Rsi, registers.rsi);
    }

    fn clear_for_restart(&mut self) {
        self.core.guest.clear_range(state::STAR, state::CR2_END);
        // The rest is not switched by VMRUN/VMLOAD: this core's own registers.
        crate::arch::cpu::reset_guest_registers(false);
        crate::arch::x2apic::reset_for_restart();
    }

    fn inject_nmi(&mut self) {
        // EVENTINJ type 2 = NMI, vector 2 (APM §15.20).
        self.core
            .guest
            .write_u64(control::EVENT_INJECTION, 2 | (2 << 8) | (1 << 31));
    }
}

// svm_run(registers: rdi, guest_vmcb: rsi, host_vmcb: rdx)
// The register block is a GeneralRegisters: register n at offset n × 8 (RAX and RSP are in
// the VMCB).
// Saves the host's callee-saved registers and the host state VMRUN does not switch (FS, GS,
// TR, LDTR, KernelGSBase, STAR family, SYSENTER: VMSAVE/VMLOAD, APM §15.5.2), loads the
// guest's, runs it, and stores the guest's GPRs back.
global_asm!(
    r#"
    .section .text
    .global svm_run
svm_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi
    push rdx
    mov rax, rdx
    vmsave rax
    mov rax, rsi
    vmload rax
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
    vmrun rax
    vmsave rax
    push rdi
    mov rdi, [rsp + 16]
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
    pop rax
    vmload rax
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#
);
