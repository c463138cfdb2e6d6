//! MSR attacks, class by class. Under Tessera every MSR outside the pass-through list
//! (hypervisor/policy/src/msr.rs) exits; the hypervisor emulates APIC_BASE, EFER and the
//! ICR and answers everything else with #GP, "as an MSR the processor does not implement
//! would" (Intel SDM Vol. 2B, RDMSR/WRMSR: #GP(0) for a reserved or unimplemented MSR).
//! The pass-through MSRs (SYSCALL, SYSENTER, segment bases) are per-core guest state: a
//! write must read back as written, and is the partition's own.

use super::{Attack, Context};
use crate::instructions::{redteam_rdmsr, redteam_wrmsr};
use crate::trap::{probe, Fault};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "msr-efer-reserved-bits",
        run: efer_reserved_bits,
    },
    Attack {
        name: "msr-efer-svme",
        run: efer_svme,
    },
    Attack {
        name: "msr-efer-lme-while-paging",
        run: efer_lme_while_paging,
    },
    Attack {
        name: "msr-efer-read",
        run: efer_read,
    },
    Attack {
        name: "msr-svm",
        run: svm,
    },
    Attack {
        name: "msr-vmx-capabilities",
        run: vmx_capabilities,
    },
    Attack {
        name: "msr-mtrr",
        run: mtrr,
    },
    Attack {
        name: "msr-machine-check",
        run: machine_check,
    },
    Attack {
        name: "msr-performance",
        run: performance,
    },
    Attack {
        name: "msr-debug-control",
        run: debug_control,
    },
    Attack {
        name: "msr-microcode",
        run: microcode,
    },
    Attack {
        name: "msr-smm",
        run: smm,
    },
    Attack {
        name: "msr-platform",
        run: platform,
    },
    Attack {
        name: "msr-misc-enable",
        run: misc_enable,
    },
    Attack {
        name: "msr-tsc-write",
        run: tsc_write,
    },
    Attack {
        name: "msr-unimplemented",
        run: unimplemented,
    },
    Attack {
        name: "msr-syscall",
        run: syscall,
    },
    Attack {
        name: "msr-sysenter",
        run: sysenter,
    },
    Attack {
        name: "msr-segment-bases",
        run: segment_bases,
    },
    Attack {
        name: "msr-arch-capabilities",
        run: arch_capabilities,
    },
];

const IA32_EFER: u64 = 0xc000_0080;
const EFER_LME: u64 = 1 << 8;
const EFER_SVME: u64 = 1 << 12;

pub fn read(msr: u64) -> Result<u64, Fault> {
    probe(redteam_rdmsr, [msr, 0, 0, 0])
}

pub fn write(msr: u64, value: u64) -> Result<u64, Fault> {
    probe(redteam_wrmsr, [msr, value, 0, 0])
}

/// One access of a class probe.
#[derive(Clone, Copy)]
enum Access {
    Read(u64),
    /// Write this value (the hypervisor never lets it through, so nothing breaks).
    Write(u64, u64),
}

/// Runs every access; `gp` if each raised #GP, else names the first that did not.
fn all_general_protection(context: &Context, accesses: &[Access]) {
    for access in accesses {
        let (msr, what, result) = match *access {
            Access::Read(msr) => (msr, "read", read(msr)),
            Access::Write(msr, value) => (msr, "write", write(msr, value)),
        };
        match result {
            Err(fault) if fault.vector == 13 => {}
            Ok(value) => {
                context.report(
                    "ok",
                    format_args!("msr={msr:#x} {what} completed value={value:#x}"),
                );
                return;
            }
            Err(fault) => {
                context.report(fault.name(), format_args!("msr={msr:#x} {what}"));
                return;
            }
        }
    }
    context.report("gp", format_args!("accesses={}", accesses.len()));
}

fn efer() -> u64 {
    read(IA32_EFER).unwrap_or(0)
}

/// EFER bits 63:16 and 7:1 are reserved on Intel (SDM Vol. 3A 2.2.1, Table 2-1) and
/// AMD (APM Vol. 2 3.1.7): setting one raises #GP.
fn efer_reserved_bits(context: &Context) {
    let value = efer();
    all_general_protection(
        context,
        &[
            Access::Write(IA32_EFER, value | (1 << 1)),
            Access::Write(IA32_EFER, value | (1 << 63)),
            Access::Write(IA32_EFER, value | (1 << 20)),
        ],
    );
}

/// EFER.SVME: the guest's CPUID shows no SVM, so the bit is reserved for it.
fn efer_svme(context: &Context) {
    all_general_protection(context, &[Access::Write(IA32_EFER, efer() | EFER_SVME)]);
}

/// Changing EFER.LME while paging is on raises #GP (SDM Vol. 3A 10.8.5; APM Vol. 2 14.6.1).
fn efer_lme_while_paging(context: &Context) {
    all_general_protection(context, &[Access::Write(IA32_EFER, efer() & !EFER_LME)]);
}

/// The guest reads its own EFER, without the hypervisor's SVME.
fn efer_read(context: &Context) {
    match read(IA32_EFER) {
        Ok(value) if value & EFER_SVME == 0 => {
            context.report("own-state", format_args!("efer={value:#x}"))
        }
        Ok(value) => context.report("svme-visible", format_args!("efer={value:#x}")),
        Err(fault) => context.report(fault.name(), format_args!("")),
    }
}

/// AMD's VM_CR, VM_HSAVE_PA and SVM lock key (APM Vol. 2 15.30).
fn svm(context: &Context) {
    all_general_protection(
        context,
        &[
            Access::Read(0xc001_0114),
            Access::Write(0xc001_0114, 0),
            Access::Read(0xc001_0117),
            Access::Write(0xc001_0117, 0x1000),
            Access::Read(0xc001_0118),
        ],
    );
}

/// IA32_FEATURE_CONTROL and the VMX capability MSRs 0x480–0x491 (SDM Vol. 3D A.1).
fn vmx_capabilities(context: &Context) {
    let mut accesses = [Access::Read(0x480); 20];
    for (index, msr) in (0x480..=0x491).enumerate() {
        accesses[index] = Access::Read(msr);
    }
    accesses[18] = Access::Read(0x3a);
    accesses[19] = Access::Write(0x3a, 0x5);
    all_general_protection(context, &accesses);
}

/// MTRRs: machine-wide memory types, the firmware's (SDM Vol. 3A 12.11).
fn mtrr(context: &Context) {
    all_general_protection(
        context,
        &[
            Access::Read(0xfe),
            Access::Read(0x2ff),
            Access::Write(0x2ff, 0),
            Access::Read(0x200),
            Access::Write(0x200, 0x6),
            Access::Write(0x201, 0),
            Access::Read(0x250),
            Access::Write(0x250, 0),
        ],
    );
}

/// Machine-check MSRs (SDM Vol. 3B 16.3): the hypervisor's to handle.
fn machine_check(context: &Context) {
    all_general_protection(
        context,
        &[
            Access::Read(0x179),
            Access::Read(0x17a),
            Access::Write(0x17a, 0),
            Access::Read(0x400),
            Access::Write(0x400, u64::MAX),
            Access::Write(0x401, 0),
            Access::Read(0x402),
        ],
    );
}

/// Performance monitoring (SDM Vol. 3B 20.2; AMD APM Vol. 2 13.2): counters see other
/// partitions' activity on shared resources and can raise NMIs.
fn performance(context: &Context) {
    all_general_protection(
        context,
        &[
            Access::Read(0xc1),
            Access::Write(0xc1, 0),
            Access::Write(0x186, 0x43_003c),
            Access::Read(0x38f),
            Access::Write(0x38f, 1),
            Access::Read(0x38d),
            Access::Read(0x345),
            Access::Read(0xc001_0000),
            Access::Write(0xc001_0000, 0x43_0076),
            Access::Read(0xc001_0004),
            Access::Read(0xc001_0200),
        ],
    );
}

/// IA32_DEBUGCTL (SDM Vol. 3B 18.4.1): last-branch records, branch trace store.
fn debug_control(context: &Context) {
    all_general_protection(context, &[Access::Read(0x1d9), Access::Write(0x1d9, 1)]);
}

/// Microcode update trigger and signature (SDM Vol. 3A 10.11.6).
/// Microcode: the update trigger (IA32_BIOS_UPDT_TRIG, 0x79) would load code into the
/// processor every partition shares: #GP. The signature (IA32_BIOS_SIGN_ID, 0x8b) is
/// emulated (Linux writes 0 and reads it back at every boot): it reads 0 whatever the
/// guest writes, so no partition learns the host's microcode revision.
fn microcode(context: &Context) {
    const SIGNATURE: u64 = 0x8b;
    match write(0x79, 0x10_0000) {
        Err(fault) if fault.vector == 13 => {}
        Ok(_) => {
            context.report("ok", format_args!("msr=0x79 write completed"));
            return;
        }
        Err(fault) => {
            context.report(fault.name(), format_args!("msr=0x79 write"));
            return;
        }
    }
    let written = write(SIGNATURE, 0x1234_5678_0000_0000);
    match read(SIGNATURE) {
        Ok(0) => context.report(
            "gp-trigger-signature-zero",
            format_args!("signature write={}", super::outcome_of(&written)),
        ),
        Ok(value) => context.report("signature-visible", format_args!("value={value:#x}")),
        Err(fault) => context.report(fault.name(), format_args!("msr=0x8b read")),
    }
}

/// SMM: SMBASE (Intel) and SMM_BASE / SMM_ADDR / SMM_MASK (AMD APM Vol. 2 10.2).
fn smm(context: &Context) {
    all_general_protection(
        context,
        &[
            Access::Read(0x9e),
            Access::Write(0x9e, 0x3_0000),
            Access::Read(0xc001_0111),
            Access::Write(0xc001_0111, 0x3_0000),
            Access::Read(0xc001_0112),
            Access::Write(0xc001_0113, 0),
        ],
    );
}

/// Machine-wide configuration: AMD's HWCR, TSC_ADJUST, MPERF/APERF, PERF_CTL.
fn platform(context: &Context) {
    all_general_protection(
        context,
        &[
            Access::Read(0xc001_0015),
            Access::Write(0xc001_0015, 0),
            Access::Read(0x3b),
            Access::Write(0x3b, 1 << 40),
            Access::Read(0xe7),
            Access::Write(0xe8, 0),
            Access::Write(0x199, 0xff00),
        ],
    );
}

/// IA32_MISC_ENABLE (SDM Vol. 4 Table 2-2): machine-wide switches (fast strings, thermal
/// control, SpeedStep lock, XD Disable). On Intel the hypervisor shows it read-only, with XD
/// Disable (bit 34) and Limit CPUID Maxval (bit 22) clear, and drops writes (Linux reads it
/// before it has an IDT); on AMD, which has no such MSR, it raises #GP. Reports `read-only`
/// when a write that flips every bit leaves the value as it was, `gp` when the read faults.
fn misc_enable(context: &Context) {
    const MISC_ENABLE: u64 = 0x1a0;
    const HIDDEN_BITS: u64 = (1 << 34) | (1 << 22);
    let before = match read(MISC_ENABLE) {
        Ok(value) => value,
        Err(fault) => {
            context.report(fault.name(), format_args!("read"));
            return;
        }
    };
    let written = write(MISC_ENABLE, !before);
    let after = read(MISC_ENABLE).unwrap_or(!before);
    let word = if after != before {
        "changed"
    } else if before & HIDDEN_BITS != 0 {
        "xd-or-limit-visible"
    } else {
        "read-only"
    };
    context.report(
        word,
        format_args!(
            "value={before:#x} write={} read-back={after:#x}",
            super::outcome_of(&written)
        ),
    );
}

/// IA32_TIME_STAMP_COUNTER: reads pass through (as RDTSC), a write would move the TSC.
fn tsc_write(context: &Context) {
    match read(0x10) {
        Ok(_) => all_general_protection(context, &[Access::Write(0x10, 0)]),
        Err(fault) => context.report("read-refused", format_args!("fault={}", fault.name())),
    }
}

/// MSRs no processor implements, and the hypervisor-specific ranges other hypervisors use.
fn unimplemented(context: &Context) {
    all_general_protection(
        context,
        &[
            Access::Read(0x4000_0000),
            Access::Write(0x4000_0001, 1),
            Access::Read(0x2000),
            Access::Read(0xc000_2000),
            Access::Read(0x8000_0000),
            Access::Read(0xffff_ffff),
            Access::Write(0xffff_ffff, 0),
        ],
    );
}

/// Writes each MSR, reads it back, restores it: `own-state` if every value read back.
fn own_state(context: &Context, values: &[(u64, u64)]) {
    for &(msr, value) in values {
        let old = match read(msr) {
            Ok(old) => old,
            Err(fault) => {
                context.report(fault.name(), format_args!("msr={msr:#x} read"));
                return;
            }
        };
        let written = write(msr, value);
        let back = read(msr);
        write(msr, old).ok();
        match (written, back) {
            (Ok(_), Ok(back)) if back == value => {}
            (Ok(_), Ok(back)) => {
                context.report(
                    "changed",
                    format_args!("msr={msr:#x} wrote={value:#x} read={back:#x}"),
                );
                return;
            }
            (Err(fault), _) | (_, Err(fault)) => {
                context.report(fault.name(), format_args!("msr={msr:#x}"));
                return;
            }
        }
    }
    context.report("own-state", format_args!("msrs={}", values.len()));
}

/// STAR, LSTAR, CSTAR, SFMASK: the SYSCALL targets, guest state.
fn syscall(context: &Context) {
    own_state(
        context,
        &[
            (0xc000_0081, 0x0023_0008_0000_0000),
            (0xc000_0082, 0xffff_8000_1234_5000),
            (0xc000_0083, 0xffff_8000_1234_6000),
            (0xc000_0084, 0x4700),
        ],
    );
}

/// SYSENTER_CS/ESP/EIP.
fn sysenter(context: &Context) {
    own_state(
        context,
        &[
            (0x174, 0x08),
            (0x175, 0xffff_8000_0000_1000),
            (0x176, 0xffff_8000_0000_2000),
        ],
    );
}

/// FS_BASE and KERNEL_GS_BASE (GS_BASE holds the attacker's core block).
fn segment_bases(context: &Context) {
    own_state(
        context,
        &[
            (0xc000_0100, 0x7fff_0000_1000),
            (0xc000_0102, 0x7fff_0000_2000),
        ],
    );
}

/// IA32_ARCH_CAPABILITIES: Tessera sets XAPIC_DISABLE (bit 21), the x2APIC lock.
fn arch_capabilities(context: &Context) {
    match read(0x10a) {
        Ok(value) if value & (1 << 21) != 0 => {
            context.report("x2apic-locked", format_args!("value={value:#x}"))
        }
        Ok(value) => context.report("not-locked", format_args!("value={value:#x}")),
        Err(fault) => context.report(fault.name(), format_args!("")),
    }
}
