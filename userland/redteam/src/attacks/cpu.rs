//! Processor-level attacks: what CPUID reveals, the instructions a partition must not use
//! (MONITOR/MWAIT, the SVM and VMX instructions), the cache instructions the hypervisor
//! traps, XSETBV and CR4 bits that would expose virtualization.

use core::arch::x86_64::{__cpuid, __cpuid_count};

use super::{outcome_of, Attack, Context, Details};
use crate::instructions::*;
use crate::trap::{probe, probe_user, Fault, Routine, UserOutcome};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "cpuid-vmx-hidden",
        run: cpuid_vmx_hidden,
    },
    Attack {
        name: "cpuid-svm-hidden",
        run: cpuid_svm_hidden,
    },
    Attack {
        name: "cpuid-monitor-hidden",
        run: cpuid_monitor_hidden,
    },
    Attack {
        name: "cpuid-machine-features-hidden",
        run: cpuid_machine_features_hidden,
    },
    Attack {
        name: "cpuid-hypervisor-leaf",
        run: cpuid_hypervisor_leaf,
    },
    Attack {
        name: "monitor",
        run: monitor,
    },
    Attack {
        name: "mwait",
        run: mwait,
    },
    Attack {
        name: "wbinvd",
        run: wbinvd,
    },
    Attack {
        name: "invd",
        run: invd,
    },
    Attack {
        name: "svm-instructions",
        run: svm_instructions,
    },
    Attack {
        name: "invlpga",
        run: invlpga,
    },
    Attack {
        name: "vmx-instructions",
        run: vmx_instructions,
    },
    Attack {
        name: "xsetbv-without-osxsave",
        run: xsetbv_without_osxsave,
    },
    Attack {
        name: "xsetbv-invalid-values",
        run: xsetbv_invalid_values,
    },
    Attack {
        name: "user-cli",
        run: user_cli,
    },
    Attack {
        name: "user-hlt",
        run: user_hlt,
    },
    Attack {
        name: "user-rdmsr",
        run: user_rdmsr,
    },
    Attack {
        name: "user-wrmsr",
        run: user_wrmsr,
    },
    Attack {
        name: "user-wbinvd",
        run: user_wbinvd,
    },
    Attack {
        name: "user-invd",
        run: user_invd,
    },
    Attack {
        name: "user-xsetbv",
        run: user_xsetbv,
    },
    Attack {
        name: "user-mov-cr4",
        run: user_mov_cr4,
    },
    Attack {
        name: "user-clts",
        run: user_clts,
    },
    Attack {
        name: "user-lmsw",
        run: user_lmsw,
    },
];

/// CPUID leaf 1 ECX bits (Intel SDM Vol. 2A, CPUID, Table 3-10).
const LEAF1_ECX_MONITOR: u32 = 1 << 3;
const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_PDCM: u32 = 1 << 15;
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: MCE, MTRR, MCA (Table 3-11).
const LEAF1_EDX_MACHINE: u32 = (1 << 7) | (1 << 12) | (1 << 14);
/// Leaf 8000_0001h ECX: SVM (bit 2), MONITORX (bit 29) (AMD APM Vol. 3, E.4.2).
const EXT1_ECX_SVM: u32 = 1 << 2;
const EXT1_ECX_MONITORX: u32 = 1 << 29;
/// CR4.VMXE (bit 13), CR4.SMXE (bit 14), CR4.OSXSAVE (bit 18) (SDM Vol. 3A 2.5).
const CR4_VMXE: u64 = 1 << 13;
const CR4_SMXE: u64 = 1 << 14;
const CR4_OSXSAVE: u64 = 1 << 18;

/// A page of this image the SVM/VMX instructions may name as their operand: they must
/// fault before they look at it.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static SCRATCH: Page = Page([0; 4096]);

fn scratch() -> u64 {
    (&raw const SCRATCH) as u64
}

fn cpuid_vmx_hidden(context: &Context) {
    let ecx = __cpuid(1).ecx;
    let word = if ecx & LEAF1_ECX_VMX == 0 {
        "hidden"
    } else {
        "visible"
    };
    context.report(word, format_args!("leaf1-ecx={ecx:#x}"));
}

fn cpuid_svm_hidden(context: &Context) {
    let extended = __cpuid(0x8000_0000).eax;
    let ecx = if extended >= 0x8000_0001 {
        __cpuid(0x8000_0001).ecx
    } else {
        0
    };
    let features = if extended >= 0x8000_000a {
        let leaf = __cpuid(0x8000_000a);
        leaf.eax | leaf.ebx | leaf.ecx | leaf.edx
    } else {
        0
    };
    let word = if ecx & EXT1_ECX_SVM == 0 && features == 0 {
        "hidden"
    } else {
        "visible"
    };
    context.report(
        word,
        format_args!("ext1-ecx={ecx:#x} leaf-8000000a={features:#x}"),
    );
}

fn cpuid_monitor_hidden(context: &Context) {
    let ecx = __cpuid(1).ecx;
    let extended = __cpuid(0x8000_0001).ecx;
    let word = if ecx & LEAF1_ECX_MONITOR == 0 && extended & EXT1_ECX_MONITORX == 0 {
        "hidden"
    } else {
        "visible"
    };
    context.report(
        word,
        format_args!("leaf1-ecx={ecx:#x} ext1-ecx={extended:#x}"),
    );
}

fn cpuid_machine_features_hidden(context: &Context) {
    let leaf1 = __cpuid(1);
    let leaf_a = __cpuid_count(0xa, 0);
    let performance = leaf_a.eax | leaf_a.ebx | leaf_a.ecx | leaf_a.edx;
    let hidden =
        leaf1.edx & LEAF1_EDX_MACHINE == 0 && leaf1.ecx & LEAF1_ECX_PDCM == 0 && performance == 0;
    context.report(
        if hidden { "hidden" } else { "visible" },
        format_args!(
            "leaf1-edx={:#x} leaf1-ecx={:#x} leaf-a={performance:#x}",
            leaf1.edx, leaf1.ecx
        ),
    );
}

fn cpuid_hypervisor_leaf(context: &Context) {
    let present = __cpuid(1).ecx & LEAF1_ECX_HYPERVISOR != 0;
    let leaf = __cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..12].copy_from_slice(&leaf.edx.to_le_bytes());
    let word = if present && signature == tessera_abi::hypercall::SIGNATURE {
        "tessera"
    } else {
        "other"
    };
    context.report(
        word,
        format_args!("present={present} max-leaf={:#x}", leaf.eax),
    );
}

/// Probes one routine and reports `gp`/`ud`/`ok`.
fn single(context: &Context, routine: Routine, arguments: [u64; 4]) -> Result<u64, Fault> {
    let result = probe(routine, arguments);
    let detail = match &result {
        Ok(value) => *value,
        Err(fault) => fault.rip,
    };
    context.report(
        outcome_of(&result),
        format_args!("value-or-rip={detail:#x}"),
    );
    result
}

fn monitor(context: &Context) {
    single(context, redteam_monitor, [scratch(), 0, 0, 0]).ok();
}

fn mwait(context: &Context) {
    single(context, redteam_mwait, [0; 4]).ok();
}

/// WBINVD completes (the hypervisor traps it and completes it as a no-op, or it runs
/// natively under `wbinvd = "native"`).
fn wbinvd(context: &Context) {
    let result = probe(redteam_wbinvd, [0; 4]);
    context.report(outcome_of(&result), format_args!("cache-flush=1"));
}

/// INVD would drop every dirty line of the shared caches, other partitions' included: the
/// hypervisor always traps it and completes it as a WBINVD (no-op).
fn invd(context: &Context) {
    let result = probe(redteam_invd, [0; 4]);
    context.report(outcome_of(&result), format_args!("cache-flush=1"));
}

/// Runs each routine: `ud` if every one raised #UD, else `mixed` with each one's outcome.
fn all_undefined(context: &Context, routines: &[(&str, Routine)]) {
    let mut outcomes = [("", ""); 16];
    let mut all = true;
    for (slot, (name, routine)) in outcomes.iter_mut().zip(routines) {
        let result = probe(*routine, [scratch(), 0, 0, 0]);
        all &= matches!(result, Err(fault) if fault.vector == 6);
        *slot = (name, outcome_of(&result));
    }
    if all {
        context.report("ud", format_args!("instructions={}", routines.len()));
        return;
    }
    let mut details = Details::new();
    for (name, outcome) in &outcomes[..routines.len()] {
        details.add(format_args!("{name}={outcome} "));
    }
    context.report("mixed", format_args!("{}", details.as_str()));
}

/// VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT: intercepted on SVM (#UD injected), undefined
/// on Intel processors.
fn svm_instructions(context: &Context) {
    all_undefined(
        context,
        &[
            ("vmrun", redteam_vmrun),
            ("vmload", redteam_vmload),
            ("vmsave", redteam_vmsave),
            ("stgi", redteam_stgi),
            ("clgi", redteam_clgi),
            ("skinit", redteam_skinit),
        ],
    );
}

/// INVLPGA (AMD APM Vol. 3): on SVM not intercepted, it runs natively and only drops TLB
/// entries of the core that executes it (a core of this partition); undefined on Intel.
fn invlpga(context: &Context) {
    let result = probe(redteam_invlpga, [scratch(), 0, 0, 0]);
    context.report(outcome_of(&result), format_args!("asid=0"));
}

/// Every VMX instruction: VM exits the hypervisor answers with #UD (Intel SDM Vol. 3C
/// 26.1.2), undefined on AMD processors.
fn vmx_instructions(context: &Context) {
    all_undefined(
        context,
        &[
            ("vmxon", redteam_vmxon),
            ("vmxoff", redteam_vmxoff),
            ("vmclear", redteam_vmclear),
            ("vmptrld", redteam_vmptrld),
            ("vmptrst", redteam_vmptrst),
            ("vmread", redteam_vmread),
            ("vmwrite", redteam_vmwrite),
            ("vmlaunch", redteam_vmlaunch),
            ("vmresume", redteam_vmresume),
            ("invept", redteam_invept),
            ("invvpid", redteam_invvpid),
            ("vmfunc", redteam_vmfunc),
        ],
    );
}

fn read_cr4() -> u64 {
    probe(redteam_read_cr4, [0; 4]).unwrap_or(0)
}

/// XSETBV with CR4.OSXSAVE clear raises #UD (Intel SDM Vol. 2D, XSETBV: "#UD If
/// CR4.OSXSAVE[bit 18] = 0"); that check comes before any VM exit (SDM Vol. 3C 26.1.1).
fn xsetbv_without_osxsave(context: &Context) {
    let cr4 = read_cr4();
    if cr4 & CR4_OSXSAVE != 0 {
        context.report("osxsave-set", format_args!("cr4={cr4:#x}"));
        return;
    }
    single(context, redteam_xsetbv, [0, 0b11, 0, 0]).ok();
}

/// XSETBV of values the processor refuses (SDM Vol. 1 13.3): x87 cleared, AVX without SSE,
/// part of AVX-512, an unsupported bit, XCR1. Each must be a #GP for the guest (under VMX
/// the hypervisor checks them; on SVM the processor does), and a valid value must load.
fn xsetbv_invalid_values(context: &Context) {
    if __cpuid(1).ecx & LEAF1_ECX_XSAVE == 0 {
        context.report("no-xsave", format_args!("cpuid-1-ecx-xsave=0"));
        return;
    }
    let cr4 = read_cr4();
    if let Err(fault) = probe(redteam_write_cr4, [cr4 | CR4_OSXSAVE, 0, 0, 0]) {
        context.report("osxsave-refused", format_args!("fault={}", fault.name()));
        return;
    }
    let leaf = __cpuid_count(0xd, 0);
    let supported = (u64::from(leaf.edx) << 32) | u64::from(leaf.eax);
    let invalid: [(&str, u64, u64); 5] = [
        ("x87-cleared", 0, 0b10),
        ("avx-without-sse", 0, 0b101),
        ("avx512-partial", 0, 0b111 | (1 << 5)),
        ("unsupported-bit", 0, 0b11 | (1 << 62)),
        ("xcr1", 1, 0b11),
    ];
    let mut accepted = None;
    for (what, index, value) in invalid {
        if probe(redteam_xsetbv, [index, value, 0, 0]).is_ok() {
            accepted = Some(what);
            break;
        }
    }
    let valid = probe(redteam_xsetbv, [0, 0b11, 0, 0]);
    let read_back = probe(redteam_xgetbv, [0, 0, 0, 0]).unwrap_or(0);
    // Back to the power-on XCR0 and CR4.
    probe(redteam_xsetbv, [0, 0b1, 0, 0]).ok();
    probe(redteam_write_cr4, [cr4, 0, 0, 0]).ok();
    match accepted {
        Some(what) => context.report("accepted", format_args!("value={what}")),
        None => context.report(
            "gp",
            format_args!(
                "valid={} xcr0-read-back={read_back:#x} supported={supported:#x}",
                outcome_of(&valid)
            ),
        ),
    }
}

/// Sets a CR4 bit the partition must not have; reports `gp`, or `accepted` (and clears it).
fn cr4_bit(context: &Context, bit: u64) {
    let cr4 = read_cr4();
    let result = probe(redteam_write_cr4, [cr4 | bit, 0, 0, 0]);
    let after = read_cr4();
    if result.is_ok() {
        probe(redteam_write_cr4, [cr4, 0, 0, 0]).ok();
        context.report("accepted", format_args!("cr4={after:#x}"));
    } else {
        context.report(outcome_of(&result), format_args!("cr4={after:#x}"));
    }
}

/// CR4.VMXE: the processor's VMX is hidden (SDM Vol. 3C 23.8: VMXE may be set only where
/// CPUID reports VMX; reserved on AMD).
pub fn cr4_vmxe(context: &Context) {
    cr4_bit(context, CR4_VMXE);
}

/// CR4.SMXE: safer-mode extensions (GETSEC) are not offered.
pub fn cr4_smxe(context: &Context) {
    cr4_bit(context, CR4_SMXE);
}

/// Runs `routine` in ring 3 and reports its fault (`gp` expected) or `completed`.
fn user_instruction(context: &Context, routine: Routine, arguments: [u64; 4]) {
    if probe_user(redteam_user_nothing, [0; 4], 0) != UserOutcome::Returned(0x600d) {
        context.report("no-ring-3", format_args!(""));
        return;
    }
    match probe_user(routine, arguments, 0) {
        UserOutcome::Faulted(fault) => {
            context.report(fault.name(), format_args!("rip={:#x}", fault.rip))
        }
        UserOutcome::Returned(value) => context.report("completed", format_args!("rax={value:#x}")),
    }
}

/// CLI at CPL 3 with IOPL 0: #GP (SDM Vol. 2A, CLI).
fn user_cli(context: &Context) {
    user_instruction(context, redteam_user_cli, [0; 4]);
}

/// HLT at CPL 3: #GP (SDM Vol. 2A, HLT).
fn user_hlt(context: &Context) {
    user_instruction(context, redteam_user_hlt, [0; 4]);
}

/// RDMSR and WRMSR at CPL 3: #GP before any VM exit (SDM Vol. 2B; Vol. 3C 26.1.1).
fn user_rdmsr(context: &Context) {
    user_instruction(context, redteam_user_rdmsr, [0x10, 0, 0, 0]);
}

fn user_wrmsr(context: &Context) {
    user_instruction(context, redteam_user_wrmsr, [0xc000_0081, 0, 0, 0]);
}

/// WBINVD and INVD at CPL 3: #GP (SDM Vol. 2D, WBINVD/INVD: "#GP(0) If the current privilege
/// level is not 0"; the privilege check comes before the VM exit, SDM Vol. 3C 26.1.1, and
/// before the SVM intercept, AMD APM Vol. 2 15.9). A hypervisor that traps them must not
/// complete them for ring 3.
fn user_wbinvd(context: &Context) {
    user_instruction(context, redteam_user_wbinvd, [0; 4]);
}

fn user_invd(context: &Context) {
    user_instruction(context, redteam_user_invd, [0; 4]);
}

/// XSETBV at CPL 3: #GP(0) (SDM Vol. 2D, XSETBV) — with CR4.OSXSAVE set, so that the
/// privilege check is what decides (without XSAVE the #UD comes first).
fn user_xsetbv(context: &Context) {
    let xsave = __cpuid(1).ecx & LEAF1_ECX_XSAVE != 0;
    let cr4 = read_cr4();
    if xsave {
        probe(redteam_write_cr4, [cr4 | CR4_OSXSAVE, 0, 0, 0]).ok();
    }
    user_instruction(context, redteam_user_xsetbv, [0, 0b11, 0, 0]);
    if xsave {
        probe(redteam_xsetbv, [0, 0b1, 0, 0]).ok();
        probe(redteam_write_cr4, [cr4, 0, 0, 0]).ok();
    }
}

/// MOV to CR4 at CPL 3: #GP (SDM Vol. 2B, MOV to/from control registers).
fn user_mov_cr4(context: &Context) {
    user_instruction(context, redteam_user_mov_cr4, [read_cr4(), 0, 0, 0]);
}

/// CLTS at CPL 3: #GP (SDM Vol. 2A CLTS). Under VMX a CLTS may exit (CR0.TS owned by the
/// hypervisor), and the privilege check must still come first.
fn user_clts(context: &Context) {
    user_instruction(context, redteam_user_clts, [0; 4]);
}

/// LMSW at CPL 3: #GP (SDM Vol. 2A LMSW), as for CLTS.
fn user_lmsw(context: &Context) {
    user_instruction(context, redteam_user_lmsw, [0x1, 0, 0, 0]);
}
