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

use crate::arch::{msr, x2apic};
use crate::table::{self, CPU_COUNT};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use tessera_policy::control_registers::efer_supported;
use tessera_policy::guest_nmi::{AtIret, DebugTrap, Delivery, NmiBlocking};
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
/// host save area VMRUN uses, the guest registers, and the guest's NMI blocking, kept in
/// software so that the guest can never mask the hypervisor's NMIs
/// (`tessera_policy::guest_nmi`).
#[repr(C, align(4096))]
pub struct SvmCore {
    guest: Vmcb,
    host: Vmcb,
    host_save_area: Vmcb,
    registers: GeneralRegisters,
    nmi: NmiBlocking,
    /// The guest's DR6 when the hypervisor began single-stepping its IRET.
    dr6_before_step: u64,
}

impl SvmCore {
    pub const fn new() -> Self {
        Self {
            guest: Vmcb::new(),
            host: Vmcb::new(),
            host_save_area: Vmcb::new(),
            registers: GeneralRegisters([0; 16]),
            nmi: NmiBlocking::new(),
            dr6_before_step: 0,
        }
    }
}

/// The processor state VMRUN and #VMEXIT do not switch — FS, GS, TR, LDTR (with their hidden
/// parts), KernelGSBase, STAR, LSTAR, CSTAR, SFMASK and the SYSENTER MSRs — is switched
/// lazily (APM vol. 2 §15.5.2: VMLOAD/VMSAVE move exactly that set). After a #VMEXIT the
/// guest's values stay loaded while the hypervisor handles the frequent exits (CPUID,
/// VMMCALL, a WRMSR to the x2APIC ICR) and the core re-enters with no VMLOAD or VMSAVE at
/// all; every other exit, and anything that may open GIF, first saves the guest's values
/// into its VMCB (VMSAVE) and reloads the hypervisor's (VMLOAD of the host VMCB, saved once
/// per core in [`SvmVcpu::new`]). Why the hypervisor can run on the guest's values:
///
/// * It uses none of them but TR: no FS/GS-relative data, no LDT, no SYSCALL/SYSENTER, no
///   SWAPGS. The frequent handlers read none of them from the VMCB either (a stale FS/GS
///   base or TR there would mislead only the instruction decoder and the control-register
///   model, which run after the switch).
/// * TR is read by the processor only to find an interrupt stack (IST) for the three IDT
///   entries that have one — NMI, #DF, #MC — since the hypervisor never changes privilege
///   level (Intel SDM vol. 3 §6.14.5, APM vol. 2 §8.9.4). NMIs (and INTR, SMI, INIT) are
///   held while GIF is clear (APM §15.17), and GIF stays clear from the #VMEXIT to the next
///   VMRUN on this path: the NMI exit (which opens GIF for one instruction), the idle wait
///   and the final halt all run with the hypervisor's TR (the exit is switched here, the
///   others through `arch::set_before_gif_opens`). Faults of the hypervisor's own code
///   (#PF, #GP, …) use no IST and so no TSS, and end in the panic handler, whose halt
///   switches first. What remains is a #DF — a fault while delivering a fault, i.e. a
///   stack overflow, which this shallow path cannot reach — and a machine check, on which
///   the hypervisor halts anyway: in this window either would take its stack from the
///   guest's TSS and end in a shutdown.
static GUEST_CONTEXT_LIVE: [AtomicU64; CPU_COUNT] = [const { AtomicU64::new(0) }; CPU_COUNT];
/// Each core's host VMCB (the hypervisor's own FS, GS, TR, … as VMSAVE stored them).
static HOST_CONTEXT: [AtomicU64; CPU_COUNT] = [const { AtomicU64::new(0) }; CPU_COUNT];

/// Makes the hypervisor's FS, GS, TR, LDTR and SYSCALL/SYSENTER MSRs current again on this
/// core if the guest's were left loaded: VMSAVE into the guest's VMCB, VMLOAD of the host's.
fn load_host_context(live: &AtomicU64, host: u64) {
    let guest = live.load(Ordering::Relaxed);
    if guest == 0 {
        return;
    }
    // SAFETY: `guest` is this core's guest VMCB, whose VMLOAD state is the processor's
    // current one, and `host` this core's host VMCB, written by VMSAVE in `SvmVcpu::new`
    // (both page-aligned statics, identity-mapped). VMSAVE stores the current FS, GS, TR,
    // LDTR, KernelGSBase and SYSCALL/SYSENTER MSRs into the guest VMCB; VMLOAD loads the
    // hypervisor's; nothing else changes (APM vol. 2 §15.5.2).
    unsafe {
        core::arch::asm!("vmsave rax", "mov rax, {host}", "vmload rax", host = in(reg) host, inout("rax") guest => _, options(nostack));
    }
    live.store(0, Ordering::Relaxed);
}

/// Registered with `arch::set_before_gif_opens`: before this core opens GIF (its idle wait,
/// its final halt), the hypervisor's own TR must be loaded for the NMI's interrupt stack.
pub fn before_gif_opens() {
    let Some(index) = table::cpu_index(x2apic::current_id()) else {
        return;
    };
    load_host_context(
        &GUEST_CONTEXT_LIVE[index.0],
        HOST_CONTEXT[index.0].load(Ordering::Relaxed),
    );
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
    /// This core's slot of [`GUEST_CONTEXT_LIVE`]: the guest VMCB whose VMLOAD state is loaded,
    /// or 0 when the hypervisor's is.
    guest_context_live: &'static AtomicU64,
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
        // The hypervisor's own FS, GS, TR, LDTR and SYSCALL/SYSENTER MSRs, saved once: they
        // never change after the core loaded its descriptors.
        let host = core.host.physical_address();
        // SAFETY: the host VMCB is this core's page-aligned static; VMSAVE only writes the
        // current FS/GS/TR/LDTR/MSR state into it (APM vol. 2 §15.5.2).
        unsafe { core::arch::asm!("vmsave rax", in("rax") host, options(nostack)) };
        let index = table::cpu_index(x2apic::current_id()).expect("a core of the table");
        HOST_CONTEXT[index.0].store(host, Ordering::Relaxed);
        let guest_context_live = &GUEST_CONTEXT_LIVE[index.0];
        guest_context_live.store(0, Ordering::Relaxed);
        crate::arch::set_before_gif_opens(before_gif_opens);
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

        Self {
            core,
            guest_context_live,
        }
    }

    /// Switches to the hypervisor's FS, GS, TR, … if the guest's are loaded (see
    /// [`GUEST_CONTEXT_LIVE`]); afterwards the guest VMCB holds the guest's current values.
    #[inline]
    fn load_host_context(&mut self) {
        load_host_context(self.guest_context_live, self.core.host.physical_address());
    }

    /// Turns the IRET intercept on or off (intercept vector 3 bit 20, APM table B-1).
    fn set_iret_intercept(&mut self, on: bool) {
        let vmcb = &mut self.core.guest;
        let mut vector = InterceptVector3::from_bits_retain(
            vmcb.read_field(control::INTERCEPT_VECTOR_3, 32) as u32,
        );
        vector.set(InterceptVector3::IRET, on);
        vmcb.write_u32(control::INTERCEPT_VECTOR_3, vector.bits());
    }

    /// Injects the guest's NMI as an external-interrupt event with vector 2 (EVENTINJ type 0,
    /// APM §15.20): it runs the guest's IDT entry 2 as an NMI would, without setting the
    /// processor's NMI mask, which would hold off the hypervisor's own NMIs until the guest
    /// chose to IRET. The blocking is kept in software instead; its end is the guest's IRET.
    fn inject_nmi_as_interrupt(&mut self) {
        self.core
            .guest
            .write_u64(control::EVENT_INJECTION, 2 | (1 << 31));
        self.set_iret_intercept(true);
    }

    /// The exits the backend handles itself, for the software NMI blocking: the IRET that
    /// ends it and the single step over that IRET. `None` means enter the guest again.
    fn nmi_blocking_exit(&mut self, code: u64) -> Option<Exit> {
        const TRAP_FLAG: u64 = 1 << 8;
        match code {
            // Before the IRET executes (no NRIP save: RIP is the IRET's).
            exit_code::IRET => {
                let rflags = self.core.guest.read_u64(state::RFLAGS);
                self.set_iret_intercept(false);
                if self.core.nmi.at_iret(rflags & TRAP_FLAG != 0) == AtIret::StepOver {
                    // SDM Vol. 3B 17.3.1.4: TF set when an instruction starts makes a #DB
                    // trap after it, even when the instruction (IRET) loads a clear TF.
                    self.core.dr6_before_step = self.core.guest.read_u64(state::DR6);
                    self.core.guest.write_u64(state::RFLAGS, rflags | TRAP_FLAG);
                }
                None
            }
            exit_code::DEBUG => match self.core.nmi.debug_trap() {
                DebugTrap::Guest => Some(Exit::ReflectedException(Exception::Debug)),
                DebugTrap::AfterIret {
                    also_guest_trap: false,
                } => {
                    // The step was the hypervisor's: the guest's DR6 as before, and the held
                    // NMI now, after the IRET, as the processor would deliver it.
                    let dr6 = self.core.dr6_before_step;
                    self.core.guest.write_u64(state::DR6, dr6);
                    self.inject_nmi_as_interrupt();
                    None
                }
                DebugTrap::AfterIret {
                    also_guest_trap: true,
                } => {
                    // The guest's own trap first (SDM Vol. 3A 6.9), then the owed NMI: a
                    // self-NMI exits at the next instruction boundary, after the #DB's
                    // delivery, and is delivered as the guest's (no hypervisor signal is
                    // counted for it).
                    crate::arch::x2apic::send_nmi(crate::arch::x2apic::current_id());
                    Some(Exit::ReflectedException(Exception::Debug))
                }
            },
            _ => unreachable!("only IRET and #DB exits come here"),
        }
    }

    #[inline(always)]
    fn decode_exit(&self, code: u64) -> Exit {
        let vmcb = &self.core.guest;
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
    fn svm_run(
        registers: *mut GeneralRegisters,
        guest_vmcb: u64,
        guest_context_live: *const AtomicU64,
    );
}

impl VirtualCpu for SvmVcpu {
    #[inline(always)]
    fn run(&mut self) -> Exit {
        let guest = self.core.guest.physical_address();
        let exit = loop {
            // SAFETY: the guest VMCB is this core's own page-aligned static, set up in `new`;
            // the register block is this core's, and so is the slot of GUEST_CONTEXT_LIVE,
            // which the assembly reads and (after its VMLOAD of the guest's FS/GS/TR/…; the
            // host's were saved in `new`) sets to the guest VMCB, as a relaxed atomic store.
            // VMRUN returns here on every exit.
            unsafe { svm_run(&mut self.core.registers, guest, self.guest_context_live) };
            // One borrow of the VMCB for the three accesses: the core's pointer is loaded
            // once, not again for each (every exit passes here).
            let vmcb = &mut self.core.guest;
            vmcb.write_u8(control::TLB_CONTROL, 0);
            vmcb.write_u64(control::EVENT_INJECTION, 0);
            let code = vmcb.read_u64(control::EXIT_CODE);
            // The software NMI blocking's IRET and #DB exits read and write only RFLAGS, DR6,
            // EVENTINJ and the intercepts (which #VMEXIT saves and VMRUN loads), and may send
            // an NMI to this core (held: GIF is clear): they run with the guest's FS/GS/TR/…
            // still loaded.
            if code == exit_code::IRET || code == exit_code::DEBUG {
                match self.nmi_blocking_exit(code) {
                    Some(exit) => break exit,
                    None => continue,
                }
            }
            break self.decode_exit(code);
        };
        // The exits handled with the guest's FS/GS/TR/… still loaded: CPUID, VMMCALL and a
        // WRMSR to the x2APIC ICR (see GUEST_CONTEXT_LIVE). Every other exit switches back
        // before its handler runs, so it finds the guest's values in the VMCB and the
        // hypervisor's in the processor. (Decoding reads only the exit fields and the
        // registers, which VMSAVE does not touch.)
        match exit {
            Exit::Cpuid | Exit::Hypercall => {}
            Exit::MsrWrite { msr, .. } if msr == msr::X2APIC_ICR => {}
            _ => self.load_host_context(),
        }
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
        // The VMCB's FS, GS, TR, LDTR and MSRs are rewritten below: the next VMRUN must load
        // them, not keep the guest's old ones.
        self.load_host_context();
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
        // A start begins outside any NMI handler, with nothing held.
        self.core.nmi.reset();
        self.set_iret_intercept(false);
    }

    fn clear_for_restart(&mut self) {
        self.load_host_context();
        self.core.guest.clear_range(state::STAR, state::CR2_END);
        // The rest is not switched by VMRUN/VMLOAD: this core's own registers.
        crate::arch::cpu::reset_guest_registers(false);
        crate::arch::x2apic::reset_for_restart();
    }

    /// The hypervisor runs with GIF clear: an NMI sent to this core meanwhile stays pending
    /// and exits the guest right after the next VMRUN (APM vol. 2 §15.17).
    #[inline(always)]
    fn signals_always_exit(&self) -> bool {
        true
    }

    fn inject_nmi(&mut self) {
        // Never as EVENTINJ type 2 (NMI): see `inject_nmi_as_interrupt`. One that arrives
        // while the guest is in its NMI handler is held until the handler's IRET.
        if self.core.nmi.deliver() == Delivery::InjectNow {
            self.inject_nmi_as_interrupt();
        }
    }
}

// svm_run(registers: rdi, guest_vmcb: rsi, guest_context_live: rdx)
// The register block is a GeneralRegisters: register n at offset n × 8 (RAX and RSP are in
// the VMCB).
// Saves the host's callee-saved registers; if the core's GUEST_CONTEXT_LIVE slot is 0,
// VMLOADs the guest's FS, GS, TR, LDTR, KernelGSBase, STAR family and SYSENTER MSRs (APM
// §15.5.2) and records the guest VMCB there (otherwise they are still loaded from the last
// exit); runs the guest and stores the guest's GPRs back. Nothing is VMSAVEd or VMLOADed
// after the #VMEXIT: the Rust side decides.
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
    mov rax, rsi
    cmp qword ptr [rdx], 0
    jne 2f
    vmload rax
    mov [rdx], rax
2:
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
    push rdi
    mov rdi, [rsp + 8]
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
