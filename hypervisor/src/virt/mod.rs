//! The virtualization layer: one per-vCPU interface ([`VirtualCpu`]) that both backends
//! implement, the vendor-neutral [`Exit`] they decode their exit codes into, and the start
//! states a vCPU enters. Everything that decides what to do about an exit lives one floor up,
//! in `exits`; this layer only runs guests and reads and writes their state.

pub mod start_state;
pub mod svm;
pub mod vmx;

pub use start_state::{Segment, StartState};
pub use tessera_policy::control_registers::{
    ControlState, ControlWrite, SupportedBits, TranslationFlush,
};

/// The virtualization extension chosen at boot from CPUID.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Svm,
    Vmx(vmx::Capabilities),
}

impl Backend {
    /// The name the boot banner prints.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Svm => "svm",
            Backend::Vmx(_) => "vmx",
        }
    }

    /// Whether stage-2 tables may use 1 GiB pages on this machine.
    pub fn allows_1gib_pages(&self) -> bool {
        match self {
            Backend::Svm => crate::arch::cpuid::has_1gib_pages(),
            Backend::Vmx(capabilities) => capabilities.ept_1gib_pages,
        }
    }
}

/// Where the current instruction is and how to reach it through the guest's page tables.
pub struct InstructionContext {
    /// CS base + RIP.
    pub rip_linear: u64,
    pub mode: tessera_policy::mmio_decode::CpuMode,
    pub paging: tessera_policy::guest_walk::PagingRegisters,
    /// The bases of ES, CS, SS, DS, FS and GS, for the linear address of a memory operand.
    pub segment_bases: tessera_policy::mmio_decode::SegmentBases,
}

impl InstructionContext {
    /// The decoder's mode from EFER.LMA and CS.L / CS.D (Intel SDM vol. 3 §5.2.1).
    pub fn mode_of(
        cr0: u64,
        efer: u64,
        code_long: bool,
        code_default_32: bool,
    ) -> tessera_policy::mmio_decode::CpuMode {
        use tessera_policy::mmio_decode::CpuMode;
        if efer & (1 << 10) != 0 && code_long {
            CpuMode::Long64
        } else if cr0 & 1 != 0 && code_default_32 {
            CpuMode::Protected32
        } else {
            CpuMode::Real16
        }
    }
}

/// General-purpose registers a handler may read or write, by their instruction encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Register {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsi = 6,
    Rdi = 7,
}

/// The guest's general-purpose registers in instruction-encoding order (Intel SDM vol. 2A
/// §2.1.5, table 2-2): 0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8–15 R8–R15.
/// The backends' entry assembly saves and restores register n at offset n × 8; RSP lives in
/// the VMCB/VMCS (and RAX in the VMCB on SVM), so their slots are unused there.
#[repr(C)]
#[derive(Default)]
pub struct GeneralRegisters(pub [u64; 16]);

/// Encoding of RSP, the one register no backend keeps in [`GeneralRegisters`].
pub const RSP: u8 = 4;

/// An IN/OUT exit as both vendors report it (AMD APM vol. 2 §15.10.2, Intel SDM vol. 3
/// §28.2.1 table 28-5).
#[derive(Clone, Copy, Debug)]
pub struct IoAccess {
    pub port: u16,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    pub input: bool,
    pub string: bool,
    pub repeat: bool,
    /// Where the guest continues after the instruction.
    pub next_rip: u64,
}

/// Why the guest stopped running, decoded from the backend's exit code.
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    Cpuid,
    /// IN/OUT (and their string forms) on a port the partition does not own.
    Io(IoAccess),
    /// A MOV to CR0/CR4, CLTS or LMSW the processor left to the hypervisor (VMX: it touched
    /// a bit the guest/host masks give the hypervisor).
    ControlRegister(ControlWrite),
    /// XSETBV (VMX only: it always exits there) of `value` into XCR`index`.
    Xsetbv {
        index: u32,
        value: u64,
    },
    MsrRead {
        msr: u32,
    },
    MsrWrite {
        msr: u32,
        value: u64,
    },
    Hypercall,
    /// Access to guest-physical memory the partition does not own.
    NestedPageFault {
        guest_physical: u64,
        write: bool,
        fetch: bool,
    },
    TripleFault,
    /// WBINVD, intercepted by the partition's `wbinvd = "trap"` policy, or INVD (always).
    CacheFlush,
    /// MONITOR or MWAIT: a guest core may not park itself in a power state the hypervisor
    /// does not see (CPUID hides both).
    MonitorWait,
    /// A #DB or #AC intercepted only to be reflected (see [`REFLECTED_EXCEPTIONS`]).
    ReflectedException(Exception),
    /// An NMI arrived while the guest ran: the hypervisor's own signal.
    Nmi,
    Init,
    /// VMRUN, VMCALL-family and other virtualization instructions a guest may not use.
    VirtualizationInstruction,
    InvalidGuestState,
    Other(u64),
}

/// Exceptions the handlers inject (Intel SDM vol. 3 §6.15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #DB (vector 1), reflected after an intercept; its DR6 bits are already in place.
    Debug,
    /// #DB raised by ICEBP (INT1, one byte): reflected as the privileged software exception
    /// it is, so that the guest returns after the instruction (SDM vol. 3 §27.6.1.1).
    DebugFromIcebp,
    InvalidOpcode,
    GeneralProtection,
    /// #AC (vector 17), reflected after an intercept; its error code is always 0.
    AlignmentCheck,
}

/// The exceptions the hypervisor intercepts only to reflect them (exception bitmap, SDM vol.
/// 3 §25.6.3; APM vol. 2 §15.12): a guest whose #DB or #AC handler raises the same exception
/// again would otherwise keep its core in an endless delivery loop inside the processor
/// that no NMI interrupts (the benign-exception loops of CVE-2015-5307 and CVE-2015-8104).
/// Each reflection is an exit, at which the run loop sees the hypervisor's signals.
pub const REFLECTED_EXCEPTIONS: u32 = (1 << 1) | (1 << 17);

/// One guest vCPU on this core, whatever the vendor.
pub trait VirtualCpu {
    /// Enters the guest and returns when it exits.
    fn run(&mut self) -> Exit;
    #[inline(always)]
    fn register(&self, register: Register) -> u64 {
        self.register_number(register as u8)
    }
    #[inline(always)]
    fn set_register(&mut self, register: Register, value: u64) {
        self.set_register_number(register as u8, value)
    }
    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);
    fn rflags(&self) -> u64;
    /// The current privilege level of the guest (0 = kernel, 3 = user).
    fn privilege_level(&self) -> u8;
    /// Skips the instruction that exited, of `length` bytes (the backend may know better).
    fn skip_instruction(&mut self, length: u64);
    fn inject_exception(&mut self, exception: Exception);
    /// The guest-visible CR0, CR3, CR4 and EFER (and the segment facts a CR0 write depends
    /// on), as the guest would read them.
    fn control_state(&self) -> ControlState;
    /// Loads the guest's XCR0 (after its XSETBV was checked).
    fn load_xcr0(&mut self, value: tessera_policy::xcr0::CheckedXcr0);
    /// The CR4 and EFER bits the guest may set on this processor.
    fn supported_control_bits(&self) -> SupportedBits;
    /// Makes `state` the guest's control state (the backend adds what it must: VMX fixed
    /// bits, read shadows and the IA-32e-mode entry control; SVM's EFER.SVME), with the PAE
    /// PDPTEs the processor would have loaded, and drops the guest's translations as the
    /// write would have (`flush`).
    fn load_control_state(
        &mut self,
        state: &ControlState,
        pae_pdptes: Option<[u64; 4]>,
        flush: TranslationFlush,
    );
    /// A general-purpose register by its instruction encoding (0 = RAX … 4 = RSP … 15 = R15).
    fn register_number(&self, number: u8) -> u64;
    fn set_register_number(&mut self, number: u8, value: u64);
    /// What fetching and decoding the current instruction needs.
    fn instruction_context(&self) -> InstructionContext;
    /// Puts the vCPU into a start state: every register as after INIT, then `start`.
    fn reset(&mut self, start: &StartState);
    /// Before a partition restart: sets what no start state sets and a restarted partition
    /// must not inherit to its power-on value — the SYSCALL/SYSENTER MSRs, KERNEL_GS_BASE,
    /// CR2, the debug registers, TSC_AUX, SPEC_CTRL, XCR0 and the local APIC (LVT entries,
    /// timer, TPR, interrupts in service).
    fn clear_for_restart(&mut self);
    /// Delivers an NMI to the guest at the next entry.
    fn inject_nmi(&mut self);
    /// Whether every NMI sent to this core while it runs in the hypervisor makes the next
    /// guest entry exit at once (as `Exit::Nmi`): then the run loop need not look at its
    /// signals after an exit that was not an NMI. True on SVM (the NMI stays pending while
    /// GIF is clear, APM vol. 2 §15.17); on VMX where the preemption timer exists (the host's
    /// NMI handler arms it at zero, SDM vol. 3 §26.7.4).
    fn signals_always_exit(&self) -> bool;
}
