//! One virtualization interface, two vendors: the per-vCPU trait the backends implement,
//! the vendor-neutral exit enum, and the exit handlers, written once.
//!
//! Backends decode their exit codes into [`Exit`]; everything after that — CPUID filtering,
//! port and MSR policy, hypercalls, containment — is shared.

pub mod svm;
pub mod vmx;

use crate::partition::{self, Containment};
use tessera_abi::table::Partition;

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

/// A segment register in the AMD VMCB's compressed attribute format (type, S, DPL, P in
/// bits 0–7; AVL, L, D/B, G in bits 8–11: APM vol. 2 appendix B); [`Segment::vmx_rights`]
/// converts to Intel's access-rights layout (SDM §25.4.1, table 25-2).
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    pub attributes: u16,
}

impl Segment {
    pub fn vmx_rights(&self) -> u64 {
        u64::from(self.attributes & 0xFF) | (u64::from(self.attributes & 0xF00) << 4)
    }
}

/// The architectural state a vCPU (re)starts in.
#[derive(Clone, Copy, Debug)]
pub enum StartState {
    /// The PVH entry (Xen docs/misc/pvh.pandoc): 32-bit protected mode, paging off, flat
    /// segments, EBX = guest-physical address of the start-info block.
    Pvh { entry: u64, start_info: u64 },
    /// After INIT and a start-up IPI: real mode at CS = vector << 8, IP 0 (Intel SDM vol. 3
    /// §9.1.1 table 9-1 for the INIT state, §10.4.4.1 for the SIPI vector).
    StartUp { vector: u8 },
    /// The Linux x86-64 boot protocol: long mode with paging on (identity map at
    /// `page_tables`), GDT at `gdt` with __BOOT_CS = 0x10 and __BOOT_DS = 0x18, RSI =
    /// `boot_params` (Documentation/arch/x86/boot.rst, "64-bit boot protocol").
    Linux64 {
        entry: u64,
        boot_params: u64,
        page_tables: u64,
        gdt: u64,
    },
}

/// The registers a start state sets; everything else starts as after INIT (zero).
pub struct ArchitecturalState {
    pub code: Segment,
    pub data: Segment,
    /// TR: a busy TSS, as VM entry requires a usable one.
    pub task: Segment,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// EFER as the guest sees it (backends add what they need, e.g. SVM's SVME).
    pub efer: u64,
    /// GDTR base and limit.
    pub gdt: (u64, u32),
    pub rip: u64,
    pub rbx: u64,
    pub rsi: u64,
}

impl StartState {
    pub fn architectural(&self) -> ArchitecturalState {
        match *self {
            StartState::Pvh { entry, start_info } => ArchitecturalState {
                code: Segment {
                    selector: 0x08,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0C9B,
                },
                data: Segment {
                    selector: 0x10,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0C93,
                },
                task: Segment {
                    selector: 0x18,
                    base: 0,
                    limit: 0x67,
                    attributes: 0x008B,
                },
                cr0: 0x11, // PE | ET
                cr3: 0,
                cr4: 0,
                efer: 0,
                gdt: (0, 0xFFFF),
                rip: entry,
                rbx: start_info,
                rsi: 0,
            },
            StartState::StartUp { vector } => ArchitecturalState {
                code: Segment {
                    selector: u16::from(vector) << 8,
                    base: u64::from(vector) << 12,
                    limit: 0xFFFF,
                    attributes: 0x009B,
                },
                data: Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xFFFF,
                    attributes: 0x0093,
                },
                task: Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xFFFF,
                    attributes: 0x008B,
                },
                cr0: 0x6000_0010, // CD | NW | ET
                cr3: 0,
                cr4: 0,
                efer: 0,
                gdt: (0, 0xFFFF),
                rip: 0,
                rbx: 0,
                rsi: 0,
            },
            StartState::Linux64 {
                entry,
                boot_params,
                page_tables,
                gdt,
            } => ArchitecturalState {
                // 64-bit code: L set, D clear (Intel SDM vol. 3 §5.2.1).
                code: Segment {
                    selector: 0x10,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0A9B,
                },
                data: Segment {
                    selector: 0x18,
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    attributes: 0x0C93,
                },
                task: Segment {
                    selector: 0,
                    base: 0,
                    limit: 0xFFFF,
                    attributes: 0x008B,
                },
                cr0: 0x8000_0011, // PG | ET | PE
                cr3: page_tables,
                cr4: 0x20,   // PAE
                efer: 0x500, // LME | LMA
                gdt: (gdt, 31),
                rip: entry,
                rbx: 0,
                rsi: boot_params,
            },
        }
    }
}

/// Where the current instruction is and how to reach it through the guest's page tables.
pub struct InstructionContext {
    /// CS base + RIP.
    pub rip_linear: u64,
    pub mode: tessera_policy::mmio_decode::CpuMode,
    pub paging: tessera_policy::guest_walk::PagingRegisters,
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

/// Why the guest stopped running, decoded from the backend's exit code.
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    Cpuid,
    /// IN/OUT (and their string forms) on a port the partition does not own.
    Io {
        port: u16,
        size: u8,
        input: bool,
        string: bool,
        repeat: bool,
        next_rip: u64,
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
    /// An NMI arrived while the guest ran: the hypervisor's own signal.
    Nmi,
    Init,
    /// VMRUN, VMCALL-family and other virtualization instructions a guest may not use.
    VirtualizationInstruction,
    InvalidGuestState,
    Other(u64),
}

/// The counters' view of an exit: one slot per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ExitReason {
    Cpuid,
    Io,
    MsrRead,
    MsrWrite,
    Hypercall,
    NestedPageFault,
    /// A nested page fault on the IOAPIC page: an emulated IOAPIC access.
    Ioapic,
    TripleFault,
    Nmi,
    Init,
    VirtualizationInstruction,
    InvalidGuestState,
    Other,
}

impl ExitReason {
    pub const COUNT: usize = 13;
    pub const ALL: [ExitReason; Self::COUNT] = [
        ExitReason::Cpuid,
        ExitReason::Io,
        ExitReason::MsrRead,
        ExitReason::MsrWrite,
        ExitReason::Hypercall,
        ExitReason::NestedPageFault,
        ExitReason::Ioapic,
        ExitReason::TripleFault,
        ExitReason::Nmi,
        ExitReason::Init,
        ExitReason::VirtualizationInstruction,
        ExitReason::InvalidGuestState,
        ExitReason::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Cpuid => "cpuid",
            ExitReason::Io => "io",
            ExitReason::MsrRead => "msr-read",
            ExitReason::MsrWrite => "msr-write",
            ExitReason::Hypercall => "hypercall",
            ExitReason::NestedPageFault => "npf",
            ExitReason::Ioapic => "ioapic",
            ExitReason::TripleFault => "triple-fault",
            ExitReason::Nmi => "nmi",
            ExitReason::Init => "init",
            ExitReason::VirtualizationInstruction => "virt-insn",
            ExitReason::InvalidGuestState => "invalid-state",
            ExitReason::Other => "other",
        }
    }
}

impl Exit {
    pub fn reason(&self) -> ExitReason {
        match self {
            Exit::Cpuid => ExitReason::Cpuid,
            Exit::Io { .. } => ExitReason::Io,
            Exit::MsrRead { .. } => ExitReason::MsrRead,
            Exit::MsrWrite { .. } => ExitReason::MsrWrite,
            Exit::Hypercall => ExitReason::Hypercall,
            Exit::NestedPageFault { guest_physical, .. }
                if crate::ioapic_emulation::covers(*guest_physical) =>
            {
                ExitReason::Ioapic
            }
            Exit::NestedPageFault { .. } => ExitReason::NestedPageFault,
            Exit::TripleFault => ExitReason::TripleFault,
            Exit::Nmi => ExitReason::Nmi,
            Exit::Init => ExitReason::Init,
            Exit::VirtualizationInstruction => ExitReason::VirtualizationInstruction,
            Exit::InvalidGuestState => ExitReason::InvalidGuestState,
            Exit::Other(_) => ExitReason::Other,
        }
    }
}

/// Exceptions the handlers inject (Intel SDM vol. 3 §6.15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    InvalidOpcode,
    GeneralProtection,
}

/// One guest vCPU on this core, whatever the vendor.
pub trait VirtualCpu {
    /// Enters the guest and returns when it exits.
    fn run(&mut self) -> Exit;
    fn register(&self, register: Register) -> u64 {
        self.register_number(register as u8)
    }
    fn set_register(&mut self, register: Register, value: u64) {
        self.set_register_number(register as u8, value)
    }
    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);
    fn rflags(&self) -> u64;
    /// Skips the instruction that exited, of `length` bytes (the backend may know better).
    fn skip_instruction(&mut self, length: u64);
    fn inject_exception(&mut self, exception: Exception);
    /// Writes the guest's EFER (the backend keeps what it must, e.g. SVM's EFER.SVME).
    fn write_efer(&mut self, value: u64);
    /// The guest's EFER (reads are intercepted where the vendor keeps EFER in its VMCS).
    fn read_efer(&self) -> u64;
    /// A general-purpose register by its instruction encoding (0 = RAX … 4 = RSP … 15 = R15).
    fn register_number(&self, number: u8) -> u64;
    fn set_register_number(&mut self, number: u8, value: u64);
    /// What fetching and decoding the current instruction needs.
    fn instruction_context(&self) -> InstructionContext;
    /// Puts the vCPU into a start state: every register as after INIT, then `start`.
    fn reset(&mut self, start: &StartState);
    /// Delivers an NMI to the guest at the next entry.
    fn inject_nmi(&mut self);
}

/// RFLAGS.DF: string instructions walk downwards.
const RFLAGS_DIRECTION: u64 = 1 << 10;

/// What the run loop does after an exit was handled.
pub enum Flow {
    Resume,
    /// Stop the partition (contained fault or by its own request) and park this core.
    Stop,
}

/// The state a core's exit handlers need besides the vCPU.
pub struct CoreContext {
    pub apic_id: u32,
    /// Position of this core in the table's core list.
    pub core_index: usize,
    pub partition_index: usize,
    pub partition: &'static Partition,
}

/// Handles one exit; shared by both backends.
pub fn handle_exit(vcpu: &mut impl VirtualCpu, exit: Exit, context: &CoreContext) -> Flow {
    partition::count_exit(context.partition_index, exit.reason());
    match exit {
        Exit::Cpuid => {
            let leaf = vcpu.register(Register::Rax) as u32;
            let subleaf = vcpu.register(Register::Rcx) as u32;
            let native = crate::arch::cpuid::query(leaf, subleaf);
            let view = tessera_policy::cpuid::CpuidView {
                max_hypervisor_leaf: 0x4000_0010,
                tsc_khz: crate::arch::tsc::khz() as u32,
                native_max_basic_leaf: crate::arch::cpuid::max_basic_leaf(),
            };
            let [eax, ebx, ecx, edx] = tessera_policy::cpuid::filter(leaf, subleaf, native, &view);
            vcpu.set_register(Register::Rax, u64::from(eax));
            vcpu.set_register(Register::Rbx, u64::from(ebx));
            vcpu.set_register(Register::Rcx, u64::from(ecx));
            vcpu.set_register(Register::Rdx, u64::from(edx));
            vcpu.skip_instruction(2);
            Flow::Resume
        }
        Exit::Io {
            port,
            size,
            input,
            string,
            repeat,
            next_rip,
        } => handle_io(vcpu, context, port, size, input, string, repeat, next_rip),
        Exit::MsrRead { msr } => crate::msr_emulation::read(vcpu, context, msr),
        Exit::MsrWrite { msr, value } => crate::msr_emulation::write(vcpu, context, msr, value),
        Exit::Hypercall => crate::hypercall::handle(vcpu, context),
        Exit::NestedPageFault { guest_physical, .. }
            if crate::ioapic_emulation::covers(guest_physical) =>
        {
            crate::ioapic_emulation::handle(vcpu, context, guest_physical)
        }
        Exit::NestedPageFault {
            guest_physical,
            write,
            fetch,
        } => {
            let access = if fetch {
                "fetch"
            } else if write {
                "write"
            } else {
                "read"
            };
            partition::contain(
                context,
                Containment {
                    reason: "npf",
                    address: guest_physical,
                    detail: access,
                    rip: vcpu.rip(),
                },
            );
            Flow::Stop
        }
        Exit::TripleFault => {
            partition::contain(
                context,
                Containment {
                    reason: "triple-fault",
                    address: 0,
                    detail: "shutdown",
                    rip: vcpu.rip(),
                },
            );
            Flow::Stop
        }
        Exit::Nmi => {
            // The hypervisor's own NMIs are signals (what they ask for is in the partition
            // state or the core's message slot, read by the run loop); the guest's own NMIs
            // (an NMI IPI inside the partition, LVT NMI) are delivered to it.
            if crate::smp::signals(context.core_index).guest_nmi_after_exit() {
                vcpu.inject_nmi();
            }
            Flow::Resume
        }
        Exit::Init => {
            partition::contain(
                context,
                Containment {
                    reason: "init",
                    address: 0,
                    detail: "INIT signal",
                    rip: vcpu.rip(),
                },
            );
            Flow::Stop
        }
        Exit::VirtualizationInstruction => {
            vcpu.inject_exception(Exception::InvalidOpcode);
            Flow::Resume
        }
        Exit::InvalidGuestState => {
            partition::contain(
                context,
                Containment {
                    reason: "invalid-state",
                    address: 0,
                    detail: "VM entry refused",
                    rip: vcpu.rip(),
                },
            );
            Flow::Stop
        }
        Exit::Other(code) => {
            partition::contain(
                context,
                Containment {
                    reason: "unexpected-exit",
                    address: code,
                    detail: "exit code",
                    rip: vcpu.rip(),
                },
            );
            Flow::Stop
        }
    }
}

/// A port the partition does not own: reads see all-ones, writes are dropped (as on a bus
/// with nothing behind the address). Only ports outside the partition's set exit.
#[allow(clippy::too_many_arguments)]
fn handle_io(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    port: u16,
    size: u8,
    input: bool,
    string: bool,
    repeat: bool,
    next_rip: u64,
) -> Flow {
    if !string {
        use tessera_policy::virtual_platform::{self, PlatformRequest};
        let mask = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => 0xFFFF_FFFF,
        };
        if input {
            if let Some(value) = virtual_platform::read(port, size) {
                let rax = vcpu.register(Register::Rax);
                vcpu.set_register(Register::Rax, (rax & !mask) | u64::from(value));
                vcpu.set_rip(next_rip);
                return Flow::Resume;
            }
        } else {
            let value = (vcpu.register(Register::Rax) & mask) as u32;
            match virtual_platform::classify_write(port, value, size) {
                Some(PlatformRequest::PowerOff) => {
                    partition::stop_by_request(context, 0, "acpi-power-off");
                    return Flow::Stop;
                }
                Some(PlatformRequest::Reset) => {
                    vcpu.set_rip(next_rip);
                    partition::reset_by_request(context);
                    return Flow::Stop;
                }
                None => {}
            }
        }
    }
    if string {
        if input {
            // INS would store all-ones into guest memory through the guest's own page tables;
            // not emulated yet. Contained rather than silently skipped.
            partition::contain(
                context,
                Containment {
                    reason: "string-io",
                    address: u64::from(port),
                    detail: "INS from an unassigned port",
                    rip: vcpu.rip(),
                },
            );
            return Flow::Stop;
        }
        // OUTS to nothing: consume the source bytes as the instruction would.
        let count = if repeat {
            vcpu.register(Register::Rcx)
        } else {
            1
        };
        let step = count.wrapping_mul(u64::from(size));
        let rsi = vcpu.register(Register::Rsi);
        let backwards = vcpu.rflags() & RFLAGS_DIRECTION != 0;
        vcpu.set_register(
            Register::Rsi,
            if backwards {
                rsi.wrapping_sub(step)
            } else {
                rsi.wrapping_add(step)
            },
        );
        if repeat {
            vcpu.set_register(Register::Rcx, 0);
        }
    } else if input {
        let mask = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => 0xFFFF_FFFF,
        };
        let rax = vcpu.register(Register::Rax);
        // A 32-bit IN zero-extends into RAX; 8/16-bit INs keep the upper bits.
        let value = if size == 4 {
            mask
        } else {
            (rax & !mask) | mask
        };
        vcpu.set_register(Register::Rax, value);
    }
    partition::count_unassigned_port(context.partition_index);
    vcpu.set_rip(next_rip);
    Flow::Resume
}
