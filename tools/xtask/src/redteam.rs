//! `cargo xtask redteam`: the red-team suite (docs/redteam.md). It boots
//! partitions/redteam.toml — a victim with a heartbeat and a memory pattern beside two
//! attacker partitions running the red-team guest (userland/redteam) — on QEMU (AMD SVM) and
//! on Bochs (Intel VMX), and judges every attack against its expectation:
//!
//! ```text
//! redteam <backend> <attack>: expected <x>, observed <y> — ok|BREACH|MISMATCH
//! ```
//!
//! then the suite's own checks (counters, refusals, the victim) and a summary table per
//! backend. Any MISMATCH or BREACH, or a failed check, fails the command.
//!
//! What is observed comes from three places, never from a single partition's word alone:
//! the attacker's line `attack <name>: <outcome> [<key>=<value> …]` (what it saw), the
//! hypervisor console (`contained:`, `restarting:`, `stopped:`, `refused:` and the `exits:`
//! counters, which a guest cannot print), and the victim (`victim: heartbeat <n>`,
//! `victim: unexpected-interrupt vector=<v>`, `victim: nmis=<n>`, `victim: memory intact`).
//! Every fixed IPI uses its own vector, so an interrupt that reaches the victim names the
//! attack that sent it; an attack's hypervisor counters are summed over the run and
//! compared with the `exits:` line; the refusals the hypervisor logs are matched, in order,
//! to the attacks that cause them.
//!
//! Batch attacks run on the first start of `intruder`; each attack of a partition's
//! `fatal-attacks=` list runs on its own start (start n is the n-th run, `tessera.restarts=n`)
//! and is judged by how that run ended: the n-th `contained:`/`restarting:`/`stopped:` line
//! of the partition.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use crate::install::Installation;
use crate::markers::{self, Backend, Marker, CONTAINED, EXITS_PREFIX};
use crate::run::{self, BootMethod, Emulator, RunSettings};
use crate::transcript::{EmulatorExit, Transcript, HYPERVISOR};
use crate::{bochs, image, table};

/// The table the suite boots, relative to the workspace root.
pub const TABLE: &str = "partitions/redteam.toml";
/// Its partitions.
pub const VICTIM: &str = "victim";
pub const INTRUDER: &str = "intruder";
pub const WRECKER: &str = "wrecker";
/// Time bounds of one boot. A QEMU run takes about 12 s, a Bochs run about 20 s (both with
/// building); the bounds leave room for a loaded machine.
const QEMU_SECONDS: u64 = 240;
const BOCHS_SECONDS: u64 = 600;
/// The hypervisor's restart limit under `on-fault` (hypervisor/abi/src/table.rs,
/// `HealthPolicy::DEFAULT_RESTART_LIMIT`).
pub const RESTART_LIMIT: usize = 16;

/// What an attack must produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The attacker's line says this outcome word.
    Word(&'static str),
    /// A foreign IPI: nothing reached the attacker's own cores (`sent`) and nothing reached
    /// the victim.
    Dropped,
    /// The attack's start ended in this containment (`contained: … reason=<reason>`).
    Contained(&'static str),
    /// The attack came back with this word, and the partition's own reset (port 0xCF9)
    /// restarted it (`restarting: … reason=reset-request`).
    ThenRestarted(&'static str),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Word(word) => formatter.write_str(word),
            Expect::Dropped => formatter.write_str("dropped"),
            Expect::Contained(reason) => write!(formatter, "contained({reason})"),
            Expect::ThenRestarted(word) => write!(formatter, "{word}, restarted"),
        }
    }
}

/// What reaching the victim would look like for an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VictimSign {
    /// Nothing the victim can see.
    Nothing,
    /// This vector arriving at the victim.
    Vector(u8),
    /// An NMI at the victim.
    Nmi,
    /// The victim's core taking an INIT (the hypervisor contains it: `reason=init`).
    Init,
}

/// One attack of the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    /// The partition whose guest runs it.
    pub partition: &'static str,
    pub svm: Expect,
    pub vmx: Expect,
    /// Hypervisor counters (and exit reasons) the attack adds to, with the amount.
    pub counts: &'static [(&'static str, u64)],
    /// What it adds on SVM under QEMU only: TCG takes some intercepts before the privilege
    /// check a processor makes first (user-wbinvd, user-invd), so they are exits there.
    pub svm_emulator_counts: &'static [(&'static str, u64)],
    /// The refusal lines (`refused: partition=<p> …`) it causes, by kind, in order.
    pub refusals: &'static [&'static str],
    /// For a flood of refusals of one kind: that kind. The hypervisor logs a burst of them
    /// and counts the rest in `suppressed-log-lines`; the attack reports its `attempts=`, and
    /// the judge claims every line of the kind that follows, so that the logged and the
    /// suppressed lines must add up to the attempts exactly.
    pub flood: Option<&'static str>,
    pub victim: VictimSign,
    /// For an attack that leaves something for its partition's restart to clear: the word
    /// the next start must report (`attack <name>: after-restart <word>`).
    pub after_restart: Option<&'static str>,
    /// Why the expectation holds (the hardware rule or the hypervisor's documented
    /// behaviour), and why the backends differ where they do.
    pub why: &'static str,
}

impl Spec {
    pub fn expect(&self, backend: Backend) -> Expect {
        match backend {
            Backend::Svm => self.svm,
            Backend::Vmx => self.vmx,
        }
    }
}

/// A batch attack of the intruder with the same expectation on both backends.
const fn word(name: &'static str, word: &'static str, why: &'static str) -> Spec {
    Spec {
        name,
        partition: INTRUDER,
        svm: Expect::Word(word),
        vmx: Expect::Word(word),
        counts: &[],
        svm_emulator_counts: &[],
        refusals: &[],
        flood: None,
        victim: VictimSign::Nothing,
        after_restart: None,
        why,
    }
}

/// A foreign IPI of the intruder: dropped, adding `counts` (its foreign destinations) to
/// `dropped-ipis`.
const fn dropped(
    name: &'static str,
    counts: &'static [(&'static str, u64)],
    victim: VictimSign,
    why: &'static str,
) -> Spec {
    Spec {
        name,
        partition: INTRUDER,
        svm: Expect::Dropped,
        vmx: Expect::Dropped,
        counts,
        svm_emulator_counts: &[],
        refusals: &[],
        flood: None,
        victim,
        after_restart: None,
        why,
    }
}

/// A request the filter resolves to the intruder's own cores only.
const fn own_only(
    name: &'static str,
    word: &'static str,
    counts: &'static [(&'static str, u64)],
    victim: VictimSign,
    why: &'static str,
) -> Spec {
    Spec {
        svm: Expect::Word(word),
        vmx: Expect::Word(word),
        ..dropped(name, counts, victim, why)
    }
}

/// An attack of the wrecker's fatal sequence, contained with `reason` on both backends.
const fn contained(name: &'static str, reason: &'static str, why: &'static str) -> Spec {
    Spec {
        name,
        partition: WRECKER,
        svm: Expect::Contained(reason),
        vmx: Expect::Contained(reason),
        counts: &[],
        svm_emulator_counts: &[],
        refusals: &[],
        flood: None,
        victim: VictimSign::Nothing,
        after_restart: None,
        why,
    }
}

const GP: &str = "gp";
const UD: &str = "ud";
const REFUSED_IOAPIC: &[(&str, u64)] = &[("refused-ioapic-writes", 1)];
/// One foreign destination dropped; none.
const ONE: &[(&str, u64)] = &[("dropped-ipis", 1)];
const NONE: &[(&str, u64)] = &[];

/// Every attack, grouped as docs/redteam.md lists them.
pub const ATTACKS: &[Spec] = &[
    // Processor: CPUID and instructions.
    word("cpuid-vmx-hidden", "hidden", "CPUID.1:ECX.VMX[5] clear: no nested VMX (hypervisor/policy/src/cpuid.rs)"),
    word("cpuid-svm-hidden", "hidden", "CPUID.80000001h:ECX.SVM[2] clear, leaf 8000000Ah zero"),
    word("cpuid-monitor-hidden", "hidden", "CPUID.1:ECX.MONITOR[3] and MONITORX clear: MONITOR/MWAIT are intercepted"),
    word("cpuid-machine-features-hidden", "hidden", "MCE, MCA, MTRR, PDCM and leaf 0Ah (perfmon) hidden: those MSRs are the machine's"),
    word("cpuid-hypervisor-leaf", "tessera", "CPUID.1:ECX[31] set and leaf 40000000h = \"Tessera\""),
    word("monitor", UD, "MONITOR intercepted and answered with #UD, as on a processor without it"),
    word("mwait", UD, "MWAIT intercepted and answered with #UD"),
    Spec { counts: &[("cache-flush", 1)], ..word("wbinvd", "ok", "WBINVD trapped (wbinvd = \"trap\") and completed as a no-op: one cache-flush exit") },
    Spec { counts: &[("cache-flush", 1)], ..word("invd", "ok", "INVD always trapped and completed as WBINVD: no partition may drop others' dirty lines") },
    word("svm-instructions", UD, "VMRUN/VMLOAD/VMSAVE/STGI/CLGI/SKINIT: intercepted on SVM (#UD), undefined on Intel"),
    Spec {
        svm: Expect::Word("ok"),
        vmx: Expect::Word(UD),
        ..word("invlpga", UD, "SVM: not intercepted, runs natively and drops only the executing core's TLB entries (the partition's own core); Intel: undefined")
    },
    Spec {
        svm: Expect::Word("mixed"),
        ..word("vmx-instructions", UD, "VMX: every VMX instruction exits and is answered with #UD (SDM Vol. 3C 26.1.2). SVM: no intercept exists for them, the processor decides; QEMU's TCG AMD model raises #UD for most but completes VMXON/VMCLEAR/VMPTRLD/VMPTRST (0F C7 /6, /7 with a memory operand) as no-ops, an emulator gap")
    },
    word("xsetbv-without-osxsave", UD, "XSETBV with CR4.OSXSAVE = 0 raises #UD before any VM exit (SDM Vol. 2D XSETBV; Vol. 3C 26.1.1)"),
    Spec {
        svm: Expect::Word("no-xsave"),
        ..word("xsetbv-invalid-values", GP, "VMX: XSETBV exits and the hypervisor refuses x87 off, AVX without SSE, partial AVX-512, unsupported bits, XCR1 with #GP (SDM Vol. 1 13.3), a valid value loads. SVM: not applicable, QEMU's qemu64 CPU has no XSAVE")
    },
    word("user-cli", GP, "CLI at CPL 3 with IOPL 0: #GP (SDM Vol. 2A CLI)"),
    word("user-hlt", GP, "HLT at CPL 3: #GP (SDM Vol. 2A HLT)"),
    word("user-rdmsr", GP, "RDMSR at CPL 3: #GP before any exit (SDM Vol. 2B RDMSR; Vol. 3C 26.1.1)"),
    word("user-wrmsr", GP, "WRMSR at CPL 3: #GP before any exit"),
    Spec { svm_emulator_counts: &[("cache-flush", 1)], ..word("user-wbinvd", GP, "WBINVD at CPL 3: #GP (SDM Vol. 2D WBINVD); the privilege check precedes the VM exit (SDM Vol. 3C 26.1.1) and the SVM intercept (AMD APM Vol. 2 15.9), so a hypervisor that completes a trapped WBINVD must check CPL itself. QEMU's SVM takes the intercept first: one cache-flush exit there") },
    Spec { svm_emulator_counts: &[("cache-flush", 1)], ..word("user-invd", GP, "INVD at CPL 3: #GP (SDM Vol. 2A INVD), as for WBINVD") },
    Spec {
        svm: Expect::Word(UD),
        ..word("user-xsetbv", GP, "XSETBV at CPL 3: #GP (SDM Vol. 2D XSETBV). SVM under QEMU: no XSAVE, so #UD comes first")
    },
    word("user-mov-cr4", GP, "MOV to CR4 at CPL 3: #GP (SDM Vol. 2B MOV to control registers)"),
    word("user-clts", GP, "CLTS at CPL 3: #GP (SDM Vol. 2A CLTS), before any CR0 exit"),
    word("user-lmsw", GP, "LMSW at CPL 3: #GP (SDM Vol. 2A LMSW), before any CR0 exit"),
    // MSRs.
    word("msr-efer-reserved-bits", GP, "EFER reserved bits (SDM Vol. 3A 2.2.1; AMD APM Vol. 2 3.1.7): #GP"),
    word("msr-efer-svme", GP, "EFER.SVME is the hypervisor's; the guest's CPUID shows no SVM, so it is reserved for it"),
    word("msr-efer-lme-while-paging", GP, "changing EFER.LME with CR0.PG = 1 raises #GP (SDM Vol. 3A 10.8.5)"),
    word("msr-efer-read", "own-state", "the guest reads its own EFER, without the hypervisor's SVME"),
    word("msr-svm", GP, "VM_CR, VM_HSAVE_PA, SVM key (AMD APM Vol. 2 15.30): intercepted, #GP"),
    word("msr-vmx-capabilities", GP, "IA32_FEATURE_CONTROL and the VMX capability MSRs 480h–491h: intercepted, #GP"),
    word("msr-mtrr", GP, "MTRRs are the firmware's, machine-wide: #GP"),
    word("msr-machine-check", GP, "MCG_* and MCi_* are the hypervisor's: #GP"),
    word("msr-performance", GP, "performance counters and their controls (Intel and AMD): #GP"),
    word("msr-debug-control", GP, "IA32_DEBUGCTL (LBR, BTS): #GP"),
    word(
        "msr-microcode",
        "gp-trigger-signature-zero",
        "microcode update trigger: #GP; the signature MSR reads 0 whatever is written",
    ),
    word("msr-smm", GP, "SMBASE, SMM_BASE/ADDR/MASK: #GP"),
    word("msr-platform", GP, "HWCR, TSC_ADJUST, MPERF/APERF, PERF_CTL: machine-wide, #GP"),
    Spec {
        vmx: Expect::Word("read-only"),
        ..word("msr-misc-enable", GP, "IA32_MISC_ENABLE: machine-wide switches. VMX (Intel): readable with XD Disable and Limit CPUID Maxval clear, writes dropped (hypervisor/src/exits/msr.rs; Linux reads it before it has an IDT). SVM (AMD): no such MSR, #GP")
    },
    word("msr-tsc-write", GP, "TSC reads pass through; a write would move the TSC under everyone: #GP"),
    word("msr-unimplemented", GP, "MSRs no processor has, and other hypervisors' ranges: #GP"),
    word("msr-syscall", "own-state", "STAR/LSTAR/CSTAR/SFMASK pass through as per-core guest state"),
    word("msr-sysenter", "own-state", "SYSENTER_CS/ESP/EIP pass through as guest state"),
    word("msr-segment-bases", "own-state", "FS_BASE/KERNEL_GS_BASE pass through as guest state"),
    word("msr-arch-capabilities", "x2apic-locked", "IA32_ARCH_CAPABILITIES with XAPIC_DISABLE (bit 21): the guest stays in x2APIC mode"),
    // The local APIC.
    Spec { refusals: &["apic-base"], ..word("apic-base-leave-x2apic", GP, "APIC_BASE is emulated: leaving x2APIC mode raises #GP (and is logged)") },
    Spec { refusals: &["apic-base"], ..word("apic-base-disable", GP, "disabling the APIC: #GP") },
    Spec { refusals: &["apic-base"], ..word("apic-base-relocate", GP, "moving the APIC base: #GP") },
    word("apic-base-rewrite-same", "accepted", "writing back the value read changes nothing and is accepted"),
    Spec { flood: Some("apic-base"), ..word("log-flood-apic-base", "rate-limited", "400 refused APIC_BASE writes as fast as the core can: the hypervisor logs a burst of 64 lines and 32 a second after it, and counts the rest in suppressed-log-lines, so one partition cannot hold the console (and every other partition's containment messages) for long; logged + suppressed = attempts exactly. Run last in the batch, then the attacker waits for the allowance to refill") },
    word("x2apic-id-write", GP, "x2APIC ID is read-only: WRMSR raises #GP (SDM Vol. 3A 11.12.1.2)"),
    word("x2apic-ldr-write", GP, "x2APIC LDR is read-only (SDM Vol. 3A 11.12.10.2): no answering another core's logical ID"),
    // Ports the partition does not own: all-ones on reads, writes dropped, each counted.
    word("port-pci-config", "all-ones", "PCI configuration mechanism #1 (0xCF8/0xCFC)"),
    word("port-pit", "all-ones", "8254 PIT 0x40–0x43"),
    word("port-pic", "all-ones", "8259 PICs 0x20/0x21/0xA0/0xA1 (an ICW1 would reset the machine's PIC)"),
    word("port-cmos-nmi-mask", "all-ones", "CMOS 0x70/0x71: bit 7 of 0x70 masks NMIs machine-wide"),
    word("port-dma", "all-ones", "8237 DMA controllers and page registers"),
    word("port-reset-lines", "all-ones", "0x92 fast reset, 8042 pulse reset (0xFE to 0x64), 0xCF9 without the reset bit: no reset"),
    word("port-apm-smi", "all-ones", "APM control 0xB2 (an SMI on most chipsets)"),
    word("port-acpi-power-off", "all-ones", "PM1a control of ICH9 (0x604) and PIIX4 (0xB004) with SLP_EN: the machine stays on"),
    word("port-sleep-not-s5", "all-ones", "the partition's own sleep register with a non-S5 sleep type: not a request, dropped"),
    word("port-foreign-uart", "all-ones", "the victim's UART 0x3F8: nothing arrives there (no `INJECTED` on its console)"),
    word("port-hypervisor-console", "all-ones", "the hypervisor console 0x3E8: a forged `PANIC:` never appears"),
    word("port-wrap-around", "all-ones", "accesses at 0xFFFF that wrap the port space"),
    word("port-straddle-own", "all-ones", "a 4-byte access covering two own and two foreign ports exits whole (SDM Vol. 3C 26.1.3; AMD APM Vol. 2 15.10.1)"),
    word("port-operand-sizes", "all-ones", "8/16-bit IN keeps RAX's upper bits, 32-bit IN zero-extends (SDM Vol. 1 3.4.1.1)"),
    word("port-rep-outsb", "consumed", "REP OUTSB to nothing: RSI advanced, RCX zero, one exit"),
    word("port-user-mode", GP, "IN at CPL 3 with IOPL 0 and no I/O bitmap: #GP before any exit (SDM Vol. 1 19.5.2)"),
    // The I/O APIC through the trapped page.
    Spec { counts: REFUSED_IOAPIC, refusals: &["PinNotOwned"], ..word("ioapic-foreign-pin-unmask", "unchanged", "unmasking a pin the partition does not own: refused and counted") },
    word("ioapic-foreign-pin-masked-write", "unchanged", "a write that keeps a foreign pin masked: ignored, not counted"),
    word("ioapic-foreign-pin-destination", "unchanged", "a foreign pin's destination: ignored"),
    word("ioapic-foreign-pin-read", "masked", "a foreign pin reads as masked and aimed nowhere, though the victim unmasked it"),
    Spec { counts: REFUSED_IOAPIC, refusals: &["DestinationOutsidePartition"], ..word("ioapic-destination-outside", "unchanged", "an own pin aimed at the victim's core: refused") },
    Spec { counts: REFUSED_IOAPIC, refusals: &["DestinationOutsidePartition"], ..word("ioapic-destination-broadcast", "unchanged", "destination 0xFF is a broadcast (SDM Vol. 3A 11.12.1): refused") },
    Spec { counts: REFUSED_IOAPIC, refusals: &["LogicalDestination"], ..word("ioapic-logical-destination", "unchanged", "logical destinations: refused") },
    Spec { counts: REFUSED_IOAPIC, refusals: &["DeliveryMode"], ..word("ioapic-delivery-extint", "unchanged", "ExtINT delivery: refused") },
    Spec { counts: REFUSED_IOAPIC, refusals: &["DeliveryMode"], ..word("ioapic-delivery-smi", "unchanged", "SMI delivery: refused") },
    Spec { counts: REFUSED_IOAPIC, refusals: &["DeliveryMode"], ..word("ioapic-delivery-init", "unchanged", "INIT delivery: refused") },
    Spec { counts: &[("refused-ioapic-writes", 2)], refusals: &["DeliveryMode", "DeliveryMode"], ..word("ioapic-delivery-reserved", "unchanged", "reserved delivery modes 3 and 6 (82093AA 3.2.4): refused twice") },
    word("ioapic-lowest-priority", "rewritten-fixed", "lowest priority toward an own core is rewritten to fixed"),
    Spec { counts: REFUSED_IOAPIC, refusals: &["DestinationOutsidePartition"], ..word("ioapic-redirect-unmasked-entry", "unchanged", "an unmasked own pin redirected to the victim's core: refused") },
    Spec { counts: REFUSED_IOAPIC, refusals: &["SharedLevelVector"], ..word("ioapic-shared-level-vector", "unchanged", "a level-triggered vector the victim's pin uses: its EOI broadcast would clear the victim's Remote IRR (SDM Vol. 3A 11.8.5): refused") },
    word("ioapic-id-register", "unchanged", "ID is machine-wide: write ignored"),
    word("ioapic-arbitration-register", "unchanged", "arbitration ID: write ignored"),
    word("ioapic-version-register", "unchanged", "version reads 0x11 (no EOI register): write ignored"),
    word("ioapic-nonexistent-register", "unchanged", "an index past the last pin: ignored, reads 0"),
    word("ioapic-eoi-register", "ignored", "offset 0x40 (the EOI register of version 0x20 IOAPICs): ignored, reads all-ones"),
    word("ioapic-beyond-registers", "all-ones", "every other offset of the page reads all-ones, writes are ignored (hypervisor/src/exits/ioapic.rs)"),
    word("ioapic-access-sizes", "unchanged", "1-, 2- and 8-byte accesses to IOREGSEL are ignored (only 32-bit accesses are emulated)"),
    word("ioapic-instruction-straddle", "emulated", "a MOV whose bytes cross a page boundary is fetched through the guest's page tables and emulated"),
    // Hypercalls and doorbells.
    Spec { refusals: &["power-off"], ..word("hypercall-fuzz-kernel", "documented", "every number 0–63 and high-bit numbers with random arguments: unknown -1, denied -2, invalid -3, as tessera_abi::hypercall documents") },
    word("hypercall-fuzz-user", UD, "every number from ring 3: #UD unless granted in user-hypercalls (partition-count, own-exit-count return); each #UD counted"),
    word("hypercall-user-stop-self", UD, "StopSelf from ring 3: #UD (never grantable)"),
    word("hypercall-user-power-off", UD, "PowerOff from ring 3: #UD (never grantable)"),
    Spec { refusals: &["power-off"], ..word("hypercall-power-off-denied", "denied", "PowerOff without the power capability: -2, logged") },
    word("hypercall-partition-state-denied", "denied", "PartitionState of another partition without stats: -2"),
    word("hypercall-foreign-channel", "denied", "ring/address/vector of a channel the partition is not a member of: -2"),
    word("hypercall-other-vendor-instruction", UD, "VMCALL on AMD and VMMCALL on Intel are undefined there"),
    word("doorbell-storm", "dropped", "400 rings: a burst of a tenth of the budget, then the budget's rate; the rest -4, counted in dropped-doorbells"),
    // IPIs through the x2APIC ICR.
    dropped("ipi-fixed-physical", ONE, VictimSign::Vector(0xe1), "fixed IPI to the victim's core: dropped, counted"),
    dropped("ipi-lowest-priority-physical", ONE, VictimSign::Vector(0xe2), "lowest priority to the victim's core: dropped, counted"),
    dropped("ipi-nmi-physical", ONE, VictimSign::Nmi, "NMI to the victim's core: dropped, counted"),
    dropped("ipi-init-physical", ONE, VictimSign::Init, "INIT (level assert) to the victim's core: dropped, counted"),
    dropped("ipi-init-deassert", NONE, VictimSign::Init, "INIT level de-assert does nothing since the Pentium 4 (SDM Vol. 3A 11.6.1): ignored, not counted"),
    dropped("ipi-startup-physical", ONE, VictimSign::Nothing, "start-up IPI to the victim's core: dropped, counted"),
    dropped("ipi-smi-physical", NONE, VictimSign::Nothing, "SMI: dropped whatever the destination; not counted in dropped-ipis (hypervisor/policy/src/icr.rs: UnsupportedDeliveryMode names no destination)"),
    dropped("ipi-reserved-modes", NONE, VictimSign::Vector(0xe0), "delivery modes 3 and 7: dropped, not counted"),
    dropped("ipi-fixed-nonexistent-core", ONE, VictimSign::Vector(0xe3), "a physical destination no core has: dropped, counted"),
    dropped("ipi-fixed-logical", ONE, VictimSign::Vector(0xe4), "logical cluster 0 with the victim's bit: dropped, counted"),
    dropped("ipi-fixed-logical-other-cluster", &[("dropped-ipis", 16)], VictimSign::Vector(0xe5), "logical cluster 1, all 16 members: 16 destinations dropped"),
    own_only("ipi-fixed-logical-mixed", "own-only", ONE, VictimSign::Vector(0xe6), "the victim's bit with both own cores': the own cores take it, the victim's destination is dropped"),
    own_only("ipi-lowest-priority-logical-mixed", "own-only", ONE, VictimSign::Vector(0xe7), "lowest priority to that set: one own core (SDM Vol. 3A 11.6.2.4), the victim dropped"),
    dropped("ipi-nmi-logical", ONE, VictimSign::Nmi, "NMI to the victim's logical bit: dropped, counted"),
    dropped("ipi-startup-logical", ONE, VictimSign::Nothing, "start-up IPI to the victim's logical bit: dropped, counted"),
    own_only("ipi-fixed-broadcast", "own-only", NONE, VictimSign::Vector(0xe8), "physical 0xFFFFFFFF (every core on hardware, SDM Vol. 3A 11.12.9): the own cores only"),
    own_only("ipi-fixed-logical-broadcast", "own-only", NONE, VictimSign::Vector(0xe9), "logical 0xFFFFFFFF: the own cores only"),
    own_only("ipi-nmi-broadcast", "own-only", NONE, VictimSign::Nmi, "NMI broadcast: the own cores only"),
    dropped("ipi-smi-broadcast", NONE, VictimSign::Nothing, "SMI with the all-including-self shorthand: dropped"),
    own_only("ipi-fixed-self", "own-only", NONE, VictimSign::Vector(0xea), "self shorthand (the victim in the destination field is ignored): this core"),
    own_only("ipi-fixed-all-including-self", "own-only", NONE, VictimSign::Vector(0xeb), "all-including-self: the own cores only"),
    own_only("ipi-fixed-all-excluding-self", "own-only", NONE, VictimSign::Vector(0xec), "all-excluding-self: the second own core only"),
    own_only("ipi-nmi-all-excluding-self", "own-only", NONE, VictimSign::Nmi, "NMI all-excluding-self: the second own core only"),
    word("ipi-nmi-held-until-iret", "held-until-iret", "two NMIs to the own second core, the second while the first's handler runs: held until that handler's IRET, then delivered, never nested (SDM Vol. 3A 6.7.1). On SVM the guest's NMI blocking is kept in software (guest NMIs injected as vector-2 interrupts, IRET intercepted, the IRET single-stepped when one is held) so that no guest can mask the hypervisor's NMIs; on VMX virtual-NMI blocking and NMI-window exiting do it"),
    own_only("ipi-init-all-excluding-self", "own-only", NONE, VictimSign::Init, "INIT all-excluding-self: only the second own core waits for a start-up IPI (and is started again)"),
    own_only("ipi-level-triggered-self", "edge-only", NONE, VictimSign::Vector(0xed), "a level-triggered IPI is sent edge-triggered: TMR stays clear, so its EOI is not broadcast to the IOAPICs (SDM Vol. 3A 11.8.4, 11.8.5)"),
    // The intruder's fatal sequence: one attack per start.
    Spec {
        svm: Expect::Contained("invalid-state"),
        vmx: Expect::ThenRestarted(GP),
        partition: INTRUDER,
        ..contained("cr4-vmxe", "invalid-state", "CR4.VMXE: VMX is hidden. VMX: the CR4 write exits and the hypervisor raises #GP. SVM: CR4 writes are not intercepted; real AMD processors raise #GP for the reserved bit, QEMU's TCG instead fails the next VMRUN (VMEXIT_INVALID), and the hypervisor contains the partition alone")
    },
    Spec {
        svm: Expect::Contained("invalid-state"),
        vmx: Expect::ThenRestarted(GP),
        partition: INTRUDER,
        ..contained("cr4-smxe", "invalid-state", "CR4.SMXE (no SMX offered): as cr4-vmxe")
    },
    Spec {
        svm: Expect::ThenRestarted("halted"),
        vmx: Expect::ThenRestarted("halted"),
        partition: INTRUDER,
        ..contained("halted-core", "", "a core halted with interrupts masked (CLI; HLT): the hypervisor's NMI still wakes it and the restart proceeds")
    },
    Spec {
        svm: Expect::ThenRestarted("storming"),
        vmx: Expect::ThenRestarted("storming"),
        partition: INTRUDER,
        after_restart: Some("timer-stopped"),
        ..contained("storm-timer", "", "the local APIC timer of a core of the partition at 20 kHz (no exits: the x2APIC is the partition's): the restart proceeds and stops the timer, so the next start sees none of its interrupts")
    },
    Spec {
        svm: Expect::ThenRestarted("unmasked"),
        vmx: Expect::ThenRestarted("unmasked"),
        partition: INTRUDER,
        after_restart: Some("masked"),
        ..contained("restart-with-unmasked-pin", "", "the partition's own pin unmasked toward its own core, then a reset: the restart masks the partition's pins, so the next start finds it masked and no route of the old run survives")
    },
    Spec {
        svm: Expect::ThenRestarted("spinning"),
        vmx: Expect::ThenRestarted("spinning"),
        partition: INTRUDER,
        ..contained("nmi-blocked-forever", "", "a core that never returns from an NMI handler would keep NMIs blocked (SDM Vol. 3A 6.7.1); the hypervisor's NMI must still stop it. VMX with virtual NMIs: the physical NMI still exits (SDM Vol. 3C 25.3). SVM: guest NMIs are injected as vector-2 interrupts with the blocking kept in software, so the processor's NMI mask is never set by a guest (an NMI-type injection would set it on AMD hardware without vNMI, APM Vol. 2 15.20). The restart proceeds on both")
    },
    // The wrecker's fatal sequence.
    contained("mem-hole-read", "npf", "a read between the partition's two RAM regions: nested page fault"),
    contained("mem-hole-write", "npf", "a write there"),
    contained("mem-hole-fetch", "npf", "an instruction fetch there"),
    contained("mem-above-4g", "npf", "guest-physical 4 GiB (no RAM above)"),
    contained("mem-local-apic-page", "npf", "the xAPIC page 0xFEE00000: not decoded in x2APIC mode, mapped to no partition"),
    contained("mem-hypervisor", "npf", "the hypervisor's host-physical addresses as guest-physical"),
    contained("mem-victim-ram", "npf", "the victim's host-physical RAM as guest-physical"),
    contained("mem-foreign-channel", "npf", "a write to the host-physical address of a channel the wrecker is not in"),
    contained("triple-fault", "triple-fault", "an IDT of limit 0, then INT3: #GP, #DF, shutdown (SDM Vol. 3A 6.15)"),
    contained("port-ins-unowned", "string-io", "INS from an unowned port is not emulated: contained (hypervisor/src/exits/io.rs)"),
    contained("ioapic-movs", "mmio-decode", "MOVSD into IOREGSEL: not a MOV form the decoder accepts"),
    contained("ioapic-lock-prefix", "mmio-decode", "LOCK OR into IOREGSEL: LOCK is refused"),
    contained("ioapic-execute", "mmio-decode", "a jump into the IOAPIC page: the instruction cannot be fetched"),
    contained("ioapic-split-access", "mmio-split", "a 4-byte store from the RAM page just below the IOAPIC into IOREGSEL (the fault reports only the IOAPIC page's first byte): the decoder computes the store's linear address, which begins two bytes below the page, and the hypervisor contains the partition instead of emulating half an access (hypervisor/policy/src/mmio_decode.rs, `locate`)"),
    Spec {
        svm: Expect::ThenRestarted("no-storm"),
        vmx: Expect::ThenRestarted("storming"),
        ..contained("storm-alignment-check", "", "an #AC handler returning to the faulting unaligned load at CPL 3: every #AC is an exit, the hypervisor restarts the partition on request. SVM: QEMU's TCG does not implement alignment checking, so no #AC arrives; the restart is still checked")
    },
    Spec {
        svm: Expect::ThenRestarted("storming"),
        vmx: Expect::ThenRestarted("storming"),
        ..contained("storm-single-step", "", "RFLAGS.TF with a #DB handler that keeps it: a #DB per instruction (SDM Vol. 3A 18.3.1.4), the restart still works")
    },
];

/// The attack that checks the restart limit: the wrecker's starts after its list.
pub const RESTART_LOOP: &str = "restart-loop-bound";

/// Outcome words that mean the protection failed, not merely that something differs.
const BREACH_WORDS: &[&str] = &[
    "changed",
    "visible",
    "allowed",
    "accepted",
    "read-data",
    "returned",
    "level-delivered",
    "svme-visible",
    "unexpected-own-delivery",
    "over-budget",
    "all-accepted",
    "all-logged",
    "survived",
    "delivered-to-victim",
];

/// Counters an attacker reports itself (the number of events it caused).
const REPORTED_COUNTERS: &[&str] = &[
    "unassigned-port-accesses",
    "refused-user-hypercalls",
    "dropped-doorbells",
];
/// Counters compared, exactly, with the `exits:` line. `cache-flush` is an exit reason: it
/// shows that WBINVD and INVD were trapped (where an emulator exits before a privilege
/// check, the catalog says so per backend: `svm_emulator_counts`).
const COUNTERS: &[&str] = &[
    "dropped-ipis",
    "refused-ioapic-writes",
    "unassigned-port-accesses",
    "refused-user-hypercalls",
    "dropped-doorbells",
    "cache-flush",
    "suppressed-log-lines",
];

/// What one attacker partition of the table runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttackerPlan {
    pub partition: String,
    /// `attacks=`: batch patterns (first start).
    pub batch: Vec<String>,
    /// `fatal-attacks=`: one attack per start.
    pub fatal: Vec<String>,
    /// `after-list=stop`: the partition stops after its list instead of resetting.
    pub stops_after_list: bool,
}

/// The attackers of a table, from their command lines.
pub fn plan(table_path: &Path) -> Result<Vec<AttackerPlan>> {
    let table = tessera_config::load_without_files(table_path)
        .map_err(|diagnostics| anyhow!("{}", diagnostics.render().trim_end()))?;
    let mut plans = Vec::new();
    for partition in &table.partitions {
        let cmdline = partition
            .boot
            .cmdline
            .as_ref()
            .map(|line| line.as_str())
            .unwrap_or("");
        if !cmdline
            .split_whitespace()
            .any(|word| word == "role=attacker")
        {
            continue;
        }
        let value = |key: &str| {
            cmdline
                .split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        };
        let list = |key: &str| -> Vec<String> {
            value(key)
                .map(|text| {
                    text.split(',')
                        .filter(|item| !item.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        plans.push(AttackerPlan {
            partition: partition.name.to_string(),
            batch: if value("attacks").is_some() {
                list("attacks")
            } else {
                list("attack")
            },
            fatal: list("fatal-attacks"),
            stops_after_list: value("after-list") == Some("stop"),
        });
    }
    Ok(plans)
}

/// Whether `name` matches a batch pattern (a name, or a prefix ending in `*`), as the guest
/// matches it (userland/redteam/src/attacks/mod.rs).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Where an attack runs in the plan: in the batch, or on fatal start `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Batch,
    Start(usize),
}

fn place_of(spec: &Spec, plans: &[AttackerPlan]) -> Option<Place> {
    let plan = plans.iter().find(|plan| plan.partition == spec.partition)?;
    if let Some(start) = plan.fatal.iter().position(|name| name == spec.name) {
        return Some(Place::Start(start));
    }
    let fatal_kind = matches!(spec.svm, Expect::Contained(_) | Expect::ThenRestarted(_));
    (!fatal_kind
        && plan
            .batch
            .iter()
            .any(|pattern| pattern_matches(pattern, spec.name)))
    .then_some(Place::Batch)
}

/// An attacker's line: `attack <name>: <word> [<key>=<value> …]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AttackLine {
    name: String,
    word: String,
    text: String,
    fields: BTreeMap<String, String>,
}

fn parse_attack_line(line: &str) -> Option<AttackLine> {
    let rest = line.trim_end().strip_prefix("attack ")?;
    let (name, outcome) = rest.split_once(": ")?;
    let word = outcome.split_whitespace().next()?.to_string();
    let fields = outcome
        .split_whitespace()
        .filter_map(|field| {
            let (key, value) = field.split_once('=')?;
            Some((key.to_string(), value.trim_end_matches(',').to_string()))
        })
        .collect();
    Some(AttackLine {
        name: name.to_string(),
        word,
        text: outcome.to_string(),
        fields,
    })
}

/// How one run (start) of a partition ended, from the hypervisor's console.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RunEnd {
    Contained(String),
    Restarting,
    Stopped { reason: String, status: Option<i64> },
}

/// The value of `key=` in a hypervisor line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim_end_matches([';', ',']))
}

/// The ends of `partition`'s runs, in order.
fn run_ends(transcript: &Transcript, partition: &str) -> Vec<RunEnd> {
    let contained = format!("{CONTAINED}{partition} ");
    let restarting = format!("restarting: partition={partition} ");
    let mut ends: Vec<RunEnd> = Vec::new();
    for line in transcript.lines_of(HYPERVISOR) {
        if line.contains(&contained) {
            let reason = field(line, "reason").unwrap_or("?").to_string();
            // A restart that finds a core unresponsive ends in a containment instead.
            if reason == "unresponsive-core" && ends.last() == Some(&RunEnd::Restarting) {
                ends.pop();
            }
            ends.push(RunEnd::Contained(reason));
        } else if line.contains(&restarting) {
            ends.push(RunEnd::Restarting);
        } else if let Some(Marker::Stopped {
            partition: name,
            status,
        }) = markers::parse(line)
        {
            if name == partition {
                let reason = field(line, "reason").unwrap_or("?").to_string();
                ends.push(RunEnd::Stopped { reason, status });
            }
        }
    }
    ends
}

/// The kinds of the refusals the hypervisor logged for `partition`, in order:
/// `apic-base`, `power-off`, or the IOAPIC refusal's name (`PinNotOwned`, …).
fn refusals(transcript: &Transcript, partition: &str) -> Vec<String> {
    let prefix = format!("refused: partition={partition} ");
    transcript
        .lines_of(HYPERVISOR)
        .filter_map(|line| {
            let rest = &line[line.find(&prefix)? + prefix.len()..];
            Some(if rest.contains("APIC_BASE write") {
                "apic-base".to_string()
            } else if rest.contains("power-off without") {
                "power-off".to_string()
            } else if let Some(after) = rest.split("IOAPIC write ").nth(1) {
                after
                    .split(|character: char| !character.is_ascii_alphanumeric())
                    .next()
                    .unwrap_or("?")
                    .to_string()
            } else {
                rest.trim().to_string()
            })
        })
        .collect()
}

/// The verdict of one attack or check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Breach,
    Mismatch,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Breach => "BREACH",
            Verdict::Mismatch => "MISMATCH",
        }
    }
}

/// One judged attack or check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    pub name: String,
    pub expected: String,
    pub observed: String,
    pub verdict: Verdict,
    /// Why it is not ok.
    pub details: Vec<String>,
}

/// A backend's evaluation.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    pub attacks: Vec<Judged>,
    pub checks: Vec<Judged>,
    pub panics: usize,
    pub heartbeats: u64,
    pub missed_heartbeats: u64,
    /// The victim's timer ticks and the ticks its elapsed TSC time should have brought.
    pub ticks: Option<(u64, u64)>,
}

impl Evaluation {
    pub fn passed(&self) -> usize {
        self.attacks
            .iter()
            .filter(|judged| judged.verdict == Verdict::Ok)
            .count()
    }

    pub fn breaches(&self) -> usize {
        self.attacks
            .iter()
            .chain(&self.checks)
            .filter(|judged| judged.verdict == Verdict::Breach)
            .count()
    }

    pub fn mismatches(&self) -> usize {
        self.attacks
            .iter()
            .chain(&self.checks)
            .filter(|judged| judged.verdict == Verdict::Mismatch)
            .count()
    }

    /// Whether everything was as expected.
    pub fn clean(&self) -> bool {
        self.breaches() == 0 && self.mismatches() == 0 && self.panics == 0
    }
}

/// What the victim showed.
#[derive(Debug, Default)]
struct VictimView {
    heartbeats: Vec<u64>,
    vectors: BTreeMap<u8, u64>,
    nmis: u64,
    doorbells: Option<u64>,
    /// Timer ticks counted and expected from the elapsed TSC (the summary line).
    ticks: Option<(u64, u64)>,
    memory_intact: bool,
    corrupted: Option<String>,
    injected: bool,
    /// `victim: pin <p> unchanged` (true) or `… CHANGED` (false).
    pin_unchanged: Option<bool>,
}

fn victim_view(transcript: &Transcript) -> VictimView {
    let mut view = VictimView::default();
    for line in transcript.lines_of(VICTIM) {
        let line = line.trim_end();
        if line.contains("INJECTED") {
            view.injected = true;
        }
        let Some(rest) = line.strip_prefix("victim: ") else {
            continue;
        };
        if let Some(number) = rest.strip_prefix("heartbeat ") {
            if let Some(number) = number
                .split_whitespace()
                .next()
                .and_then(|text| text.parse().ok())
            {
                view.heartbeats.push(number);
            }
        } else if rest.starts_with("unexpected-interrupt ") {
            let vector = field(rest, "vector")
                .and_then(|text| u8::from_str_radix(text.trim_start_matches("0x"), 16).ok());
            let count = field(rest, "count").and_then(|text| text.parse().ok());
            if let (Some(vector), Some(count)) = (vector, count) {
                view.vectors.insert(vector, count);
            }
        } else if let Some(count) = rest.strip_prefix("nmis=") {
            view.nmis = count.trim().parse().unwrap_or(u64::MAX);
        } else if rest.starts_with("summary ") {
            view.doorbells = field(rest, "doorbells").and_then(|text| text.parse().ok());
            let number = |key| field(rest, key).and_then(|text| text.parse().ok());
            view.ticks = number("ticks").zip(number("expected-ticks"));
        } else if rest.starts_with("pin ") && rest.contains(" unchanged") {
            view.pin_unchanged = Some(true);
        } else if rest.starts_with("pin ") && rest.contains(" CHANGED") {
            view.pin_unchanged = Some(false);
        } else if rest.starts_with("memory intact") {
            view.memory_intact = true;
        } else if rest.starts_with("memory CORRUPTED") {
            view.corrupted = Some(rest.to_string());
        }
    }
    view
}

fn judged(
    name: &str,
    expected: impl ToString,
    observed: impl ToString,
    verdict: Verdict,
    details: Vec<String>,
) -> Judged {
    Judged {
        name: name.to_string(),
        expected: expected.to_string(),
        observed: observed.to_string(),
        verdict,
        details,
    }
}

/// A check that passes when `observed == expected`.
fn check(name: &str, expected: impl ToString, observed: impl ToString, breach: bool) -> Judged {
    let (expected, observed) = (expected.to_string(), observed.to_string());
    let verdict = if expected == observed {
        Verdict::Ok
    } else if breach {
        Verdict::Breach
    } else {
        Verdict::Mismatch
    };
    judged(name, expected, observed, verdict, Vec::new())
}

/// A transcript taken apart: each attacker's lines and run ends, the victim's view, and the
/// refusals matched to the attacks that ran.
struct ParsedRun<'a> {
    transcript: &'a Transcript,
    victim: VictimView,
    /// The reasons the victim was contained for, if ever.
    victim_contained: Vec<String>,
    lines: BTreeMap<&'a str, Vec<AttackLine>>,
    ends: BTreeMap<&'a str, Vec<RunEnd>>,
    /// Per attack, how its refusals differed from the expected ones.
    refusal_problems: BTreeMap<String, String>,
    /// Per partition, the refusals no attack accounts for.
    unclaimed_refusals: BTreeMap<&'a str, Vec<String>>,
    /// Per flood attack, the lines of its kind the hypervisor logged.
    flood_logged: BTreeMap<String, u64>,
}

impl<'a> ParsedRun<'a> {
    fn new(transcript: &'a Transcript, plans: &'a [AttackerPlan], catalog: &[Spec]) -> Self {
        let mut lines = BTreeMap::new();
        let mut ends = BTreeMap::new();
        for plan in plans {
            let partition = plan.partition.as_str();
            let parsed: Vec<AttackLine> = transcript
                .lines_of(partition)
                .filter_map(parse_attack_line)
                .collect();
            lines.insert(partition, parsed);
            ends.insert(partition, run_ends(transcript, partition));
        }
        let victim_contained = run_ends(transcript, VICTIM)
            .into_iter()
            .filter_map(|end| match end {
                RunEnd::Contained(reason) => Some(reason),
                _ => None,
            })
            .collect();
        let mut run = ParsedRun {
            transcript,
            victim: victim_view(transcript),
            victim_contained,
            lines,
            ends,
            refusal_problems: BTreeMap::new(),
            unclaimed_refusals: BTreeMap::new(),
            flood_logged: BTreeMap::new(),
        };
        run.match_refusals(plans, catalog);
        run
    }

    /// Matches each partition's refusal lines, in order, to its attacks in the order they
    /// printed their lines.
    fn match_refusals(&mut self, plans: &'a [AttackerPlan], catalog: &[Spec]) {
        for plan in plans {
            let partition = plan.partition.as_str();
            let mut queue: std::collections::VecDeque<String> =
                refusals(self.transcript, partition).into();
            let outcomes = self.lines.get(partition).into_iter().flatten();
            let is_outcome = |line: &&AttackLine| {
                !line.text.starts_with("running") && !line.text.starts_with("after-restart")
            };
            for line in outcomes.filter(is_outcome) {
                let Some(spec) = catalog.iter().find(|spec| spec.name == line.name) else {
                    continue;
                };
                let taken: Vec<String> = (0..spec.refusals.len())
                    .filter_map(|_| queue.pop_front())
                    .collect();
                if taken != spec.refusals {
                    self.refusal_problems.insert(
                        line.name.clone(),
                        format!("refusals logged: {taken:?}, expected {:?}", spec.refusals),
                    );
                }
                if let Some(kind) = spec.flood {
                    let mut logged = 0;
                    while queue.front().is_some_and(|refusal| refusal == kind) {
                        queue.pop_front();
                        logged += 1;
                    }
                    self.flood_logged.insert(line.name.clone(), logged);
                }
            }
            self.unclaimed_refusals
                .insert(partition, queue.into_iter().collect());
        }
    }

    /// The attack's outcome line (not its `running` line).
    fn outcome(&self, spec: &Spec) -> Option<&AttackLine> {
        self.lines.get(spec.partition)?.iter().find(|line| {
            line.name == spec.name
                && !line.text.starts_with("running")
                && !line.text.starts_with("after-restart")
        })
    }

    /// For a flood attack that reported `flooded` (every attempt refused): its attempts and
    /// the lines of its kind logged.
    fn flood_outcome(&self, spec: &Spec) -> Option<(u64, u64)> {
        spec.flood?;
        let line = self.outcome(spec).filter(|line| line.word == "flooded")?;
        let attempts = line.fields.get("attempts")?.parse().ok()?;
        let logged = self.flood_logged.get(spec.name).copied().unwrap_or(0);
        Some((attempts, logged))
    }

    /// The word of the attack's `after-restart` line (the next start's report), if any.
    fn after_restart(&self, spec: &Spec) -> Option<&str> {
        self.lines
            .get(spec.partition)?
            .iter()
            .find(|line| line.name == spec.name && line.text.starts_with("after-restart"))?
            .text
            .split_whitespace()
            .nth(1)
    }

    /// What the attack did, as a word comparable with its expectation, and notes on how it
    /// was found.
    fn observe(&self, spec: &Spec, place: Place) -> (String, Vec<String>) {
        let mut notes = Vec::new();
        let partition_ends = self
            .ends
            .get(spec.partition)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let outcome = self.outcome(spec);
        let observed = match place {
            Place::Batch => match outcome {
                Some(line) => line.word.clone(),
                None => {
                    if let Some(end) = partition_ends.first() {
                        notes.push(format!(
                            "the partition's first run ended ({end:?}); an attack without a \
                             line may have ended it"
                        ));
                    }
                    "missing".to_string()
                }
            },
            Place::Start(start) => {
                let announced = self.lines.get(spec.partition).is_some_and(|lines| {
                    lines.iter().any(|line| {
                        line.name == spec.name && line.text.starts_with("running (start")
                    })
                });
                match (announced, partition_ends.get(start)) {
                    (false, Some(end)) => {
                        notes.push(format!(
                            "start {start} ended ({end:?}) before the attack ran"
                        ));
                        "not-run".to_string()
                    }
                    (_, None) => "missing".to_string(),
                    (true, Some(RunEnd::Contained(reason))) => format!("contained({reason})"),
                    (true, Some(RunEnd::Restarting)) => format!(
                        "{}, restarted",
                        outcome.map_or("-", |line| line.word.as_str())
                    ),
                    (true, Some(RunEnd::Stopped { reason, .. })) => format!("stopped({reason})"),
                }
            }
        };
        if let Some(line) = outcome {
            notes.push(format!("attacker: {}", line.text));
        }
        let observed = match spec.after_restart {
            Some(_) => format!(
                "{observed}, then {}",
                self.after_restart(spec).unwrap_or("-")
            ),
            None => observed,
        };
        (observed, notes)
    }

    /// What the victim shows of this attack; the vectors it accounts for go to `attributed`.
    fn victim_signs(&self, spec: &Spec, attributed: &mut Vec<u8>) -> Vec<String> {
        let victim = &self.victim;
        let mut signs = Vec::new();
        match spec.victim {
            VictimSign::Vector(vector) => {
                if let Some(count) = victim.vectors.get(&vector) {
                    attributed.push(vector);
                    signs.push(format!("the victim took vector {vector:#x} {count} times"));
                }
            }
            VictimSign::Nmi if victim.nmis > 0 => {
                signs.push(format!("the victim took {} NMIs", victim.nmis));
            }
            VictimSign::Init if self.victim_contained.iter().any(|reason| reason == "init") => {
                signs.push("the victim was contained with reason=init".into());
            }
            _ => {}
        }
        match spec.name {
            "port-foreign-uart" if victim.injected => {
                signs.push("`INJECTED` appeared on the victim's UART".into());
            }
            "port-hypervisor-console"
                if self
                    .transcript
                    .lines_of(HYPERVISOR)
                    .any(|line| line.contains("forged by intruder")) =>
            {
                signs.push("the forged line appeared on the hypervisor console".into());
            }
            "doorbell-storm" => {
                let accepted = self
                    .outcome(spec)
                    .and_then(|line| line.fields.get("accepted"))
                    .and_then(|value| value.parse::<u64>().ok());
                if let (Some(accepted), Some(received)) = (accepted, victim.doorbells) {
                    if received > accepted {
                        signs.push(format!(
                            "the victim took {received} doorbells, more than the {accepted} accepted"
                        ));
                    }
                }
            }
            _ => {}
        }
        signs
    }

    /// Adds what the attack contributes to the hypervisor's counters: the catalog's fixed
    /// amounts once it ran, and the amounts its line reports.
    fn add_counts(
        &self,
        spec: &Spec,
        backend: Backend,
        ran: bool,
        counts: &mut BTreeMap<(String, String), u64>,
    ) {
        let mut add = |counter: &str, amount: u64| {
            *counts
                .entry((spec.partition.to_string(), counter.to_string()))
                .or_default() += amount;
        };
        if ran {
            for &(counter, amount) in spec.counts {
                add(counter, amount);
            }
            if matches!(backend, Backend::Svm) {
                for &(counter, amount) in spec.svm_emulator_counts {
                    add(counter, amount);
                }
            }
        }
        if let Some((attempts, logged)) = self.flood_outcome(spec) {
            add("suppressed-log-lines", attempts.saturating_sub(logged));
        }
        if let Some(line) = self.outcome(spec) {
            for counter in REPORTED_COUNTERS {
                if let Some(amount) = line
                    .fields
                    .get(*counter)
                    .and_then(|value| value.parse::<u64>().ok())
                {
                    add(counter, amount);
                }
            }
        }
    }
}

/// Judges one attack from its observation.
fn judge_attack(
    run: &ParsedRun,
    spec: &Spec,
    place: Place,
    backend: Backend,
    attributed: &mut Vec<u8>,
) -> Judged {
    let expect = spec.expect(backend);
    let expected = match spec.after_restart {
        Some(after) => format!("{expect}, then {after}"),
        None => expect.to_string(),
    };
    let (observed, mut details) = run.observe(spec, place);
    let observed = match run.flood_outcome(spec) {
        Some((attempts, logged)) => {
            details.push(format!("{attempts} attempts, {logged} logged"));
            if logged >= attempts {
                "all-logged".to_string()
            } else {
                "rate-limited".to_string()
            }
        }
        None => observed,
    };
    let signs = run.victim_signs(spec, attributed);
    let observed = match expect {
        Expect::Dropped if observed == "sent" && signs.is_empty() => "dropped".to_string(),
        Expect::Dropped if observed == "sent" => "delivered-to-victim".to_string(),
        _ => observed,
    };
    let mut verdict = if observed == expected {
        Verdict::Ok
    } else if BREACH_WORDS
        .iter()
        .any(|word| observed.split(',').next() == Some(word))
    {
        Verdict::Breach
    } else {
        Verdict::Mismatch
    };
    if !signs.is_empty() {
        verdict = Verdict::Breach;
        details.extend(signs);
    }
    if let Some(problem) = run.refusal_problems.get(spec.name) {
        if verdict == Verdict::Ok {
            verdict = Verdict::Mismatch;
        }
        details.push(problem.clone());
    }
    if verdict == Verdict::Ok {
        details.clear();
    } else {
        details.push(format!("expectation: {}", spec.why));
    }
    judged(spec.name, expected, observed, verdict, details)
}

/// The starts after a partition's list: a stop (`after-list=stop`), or resets until the
/// restart limit stops the partition (judged as the attack [`RESTART_LOOP`]).
fn judge_after_list(run: &ParsedRun, plan: &AttackerPlan) -> Judged {
    let partition_ends = run
        .ends
        .get(plan.partition.as_str())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let after = partition_ends.get(plan.fatal.len()..).unwrap_or(&[]);
    if plan.stops_after_list {
        let observed = match after {
            [RunEnd::Stopped { reason, .. }] => format!("stopped({reason})"),
            other => format!("{other:?}"),
        };
        return check(
            &format!("{} stops after its list", plan.partition),
            "stopped(stop-self)",
            observed,
            false,
        );
    }
    let resets_before_stop = after.len().saturating_sub(1);
    let all_resets = after
        .iter()
        .take(resets_before_stop)
        .all(|end| *end == RunEnd::Restarting);
    let printed = run
        .transcript
        .lines_of(&plan.partition)
        .any(|line| line.starts_with(&format!("restart-loop: start {RESTART_LIMIT},")));
    let observed = match (after.last(), all_resets, printed) {
        (Some(RunEnd::Stopped { reason, .. }), true, true) => {
            format!("stopped({reason}) after {} starts", partition_ends.len())
        }
        (Some(RunEnd::Stopped { reason, .. }), _, _) => format!(
            "stopped({reason}) after {} starts, not by resets alone or without the last start",
            partition_ends.len()
        ),
        _ => format!("not stopped ({} runs ended)", partition_ends.len()),
    };
    let expected = format!("stopped(reset-request) after {} starts", RESTART_LIMIT + 1);
    check(RESTART_LOOP, expected, observed, false)
}

/// Each attacker's counters in its `exits:` line against what its attacks imply, and the
/// refusals no attack accounts for.
fn counter_checks(
    run: &ParsedRun,
    plan: &AttackerPlan,
    counts: &BTreeMap<(String, String), u64>,
) -> Vec<Judged> {
    let mut checks = Vec::new();
    let partition = plan.partition.as_str();
    let counters = crate::irq_test::exit_counters(run.transcript, partition).unwrap_or_default();
    if counters.is_empty() {
        checks.push(check(
            &format!("{partition} counters"),
            format!("an `{EXITS_PREFIX}{partition}` line"),
            "none",
            false,
        ));
        return checks;
    }
    for counter in COUNTERS {
        let expected = counts
            .get(&(partition.to_string(), counter.to_string()))
            .copied()
            .unwrap_or(0);
        let observed = crate::irq_test::counter(&counters, counter).unwrap_or(0);
        let name = format!("counter {partition} {counter}");
        checks.push(check(&name, expected, observed, false));
    }
    let unclaimed = run
        .unclaimed_refusals
        .get(partition)
        .cloned()
        .unwrap_or_default();
    checks.push(check(
        &format!("{partition} refusals without an attack"),
        "[]",
        format!("{unclaimed:?}"),
        false,
    ));
    checks
}

/// The victim's checks; `attributed` are the vectors the attacks account for.
fn victim_checks(run: &ParsedRun, attributed: &[u8], evaluation: &mut Evaluation) {
    let victim = &run.victim;
    let heartbeats = &victim.heartbeats;
    evaluation.heartbeats = heartbeats.len() as u64;
    let highest = heartbeats.iter().copied().max().unwrap_or(0);
    let consecutive = heartbeats.iter().copied().eq(1..=highest);
    evaluation.missed_heartbeats = highest.saturating_sub(heartbeats.len() as u64);
    let checks = &mut evaluation.checks;
    checks.push(check(
        "victim heartbeats consecutive",
        "1..n, n ≥ 1",
        if consecutive && highest >= 1 {
            "1..n, n ≥ 1".to_string()
        } else {
            format!("{heartbeats:?}")
        },
        true,
    ));
    // The victim's timer must keep running: a partition that could mask or starve it would
    // show as lost ticks. A loaded host delays QEMU's timers a little (a few per cent), so
    // only a stall counts: fewer than a quarter of the ticks due.
    evaluation.ticks = victim.ticks;
    let timer_runs = victim
        .ticks
        .is_some_and(|(ticks, expected)| ticks.saturating_mul(4) >= expected);
    checks.push(check(
        "victim timer",
        "at least a quarter of the ticks due",
        match victim.ticks {
            _ if timer_runs => "at least a quarter of the ticks due".to_string(),
            Some((ticks, expected)) => format!("{ticks} of {expected} ticks"),
            None => "no summary line".to_string(),
        },
        victim.ticks.is_some(),
    ));
    checks.push(check(
        "victim memory",
        "intact",
        match (&victim.corrupted, victim.memory_intact) {
            (Some(corrupted), _) => corrupted.clone(),
            (None, true) => "intact".to_string(),
            (None, false) => "never checked".to_string(),
        },
        victim.corrupted.is_some(),
    ));
    checks.push(check(
        "victim I/O APIC pin",
        "unchanged",
        match victim.pin_unchanged {
            Some(true) => "unchanged",
            Some(false) => "changed",
            None => "never checked",
        },
        victim.pin_unchanged == Some(false),
    ));
    let victim_stops: Vec<String> = run_ends(run.transcript, VICTIM)
        .iter()
        .map(|end| format!("{end:?}"))
        .collect();
    checks.push(check(
        "victim never stopped",
        "[]",
        format!("{victim_stops:?}"),
        true,
    ));
    let unattributed: Vec<String> = victim
        .vectors
        .iter()
        .filter(|(vector, _)| !attributed.contains(vector))
        .map(|(vector, count)| format!("{vector:#x}×{count}"))
        .collect();
    checks.push(check(
        "victim unexpected interrupts",
        "[]",
        format!("{unattributed:?}"),
        true,
    ));
    let transcript = run.transcript;
    let powered_off_by = transcript.markers().find_map(|marker| match marker {
        Marker::PowerOff { requested_by } => Some(requested_by),
        _ => None,
    });
    checks.push(check(
        "power-off",
        format!("requested by {VICTIM}, clean"),
        match powered_off_by {
            Some(name) if transcript.emulator_exit.is_clean_power_off() => {
                format!("requested by {name}, clean")
            }
            Some(name) => format!("requested by {name}, {}", transcript.describe_exit()),
            None => transcript.describe_exit(),
        },
        false,
    ));
}

/// Judges one backend's transcript against the catalog and the table's plan.
pub fn evaluate(
    backend: Backend,
    transcript: &Transcript,
    plans: &[AttackerPlan],
    catalog: &[Spec],
) -> Evaluation {
    let run = ParsedRun::new(transcript, plans, catalog);
    let mut evaluation = Evaluation::default();
    let mut attributed = Vec::new();
    let mut counts = BTreeMap::new();
    for spec in catalog {
        let Some(place) = place_of(spec, plans) else {
            continue;
        };
        let judged = judge_attack(&run, spec, place, backend, &mut attributed);
        // A contained attack printed no outcome line; its fixed counts still apply.
        let ran = run.outcome(spec).is_some() || judged.observed.starts_with("contained");
        run.add_counts(spec, backend, ran, &mut counts);
        evaluation.attacks.push(judged);
    }
    for (partition, lines) in &run.lines {
        for line in lines {
            if !catalog.iter().any(|spec| spec.name == line.name) {
                evaluation.checks.push(judged(
                    &format!("unknown attack {partition}/{}", line.name),
                    "none",
                    &line.text,
                    Verdict::Mismatch,
                    Vec::new(),
                ));
            }
        }
    }
    for plan in plans.iter().filter(|plan| !plan.fatal.is_empty()) {
        let after_list = judge_after_list(&run, plan);
        if after_list.name == RESTART_LOOP {
            evaluation.attacks.push(after_list);
        } else {
            evaluation.checks.push(after_list);
        }
    }
    for plan in plans {
        let checks = counter_checks(&run, plan, &counts);
        evaluation.checks.extend(checks);
    }
    victim_checks(&run, &attributed, &mut evaluation);
    evaluation.panics = transcript
        .markers()
        .filter(|marker| matches!(marker, Marker::Panic { message } if !message.contains("forged")))
        .count();
    evaluation
}

/// Prints one backend's lines.
fn print_evaluation(backend_name: &str, evaluation: &Evaluation) {
    for judged in evaluation.attacks.iter().chain(&evaluation.checks) {
        println!(
            "redteam {backend_name} {}: expected {}, observed {} — {}",
            judged.name,
            judged.expected,
            judged.observed,
            judged.verdict.label()
        );
        for detail in &judged.details {
            println!("    {detail}");
        }
    }
}

/// One backend's result, for the summary table.
pub struct BackendResult {
    pub backend: &'static str,
    pub evaluation: Option<Evaluation>,
    /// Why the backend could not be judged (not installed, build or boot failure).
    pub error: Option<String>,
    pub seconds: f64,
}

impl BackendResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.evaluation.as_ref().is_some_and(Evaluation::clean)
    }

    /// The result as a system test's outcome: the lines that are not ok.
    pub fn outcome(&self) -> Result<(), Vec<String>> {
        if let Some(error) = &self.error {
            return Err(vec![error.clone()]);
        }
        let Some(evaluation) = &self.evaluation else {
            return Err(vec!["not run".into()]);
        };
        let mut failures: Vec<String> = evaluation
            .attacks
            .iter()
            .chain(&evaluation.checks)
            .filter(|judged| judged.verdict != Verdict::Ok)
            .map(|judged| {
                format!(
                    "{}: expected {}, observed {} — {}",
                    judged.name,
                    judged.expected,
                    judged.observed,
                    judged.verdict.label()
                )
            })
            .collect();
        if evaluation.panics != 0 {
            failures.push(format!("{} hypervisor panics", evaluation.panics));
        }
        crate::outcome(failures)
    }
}

/// Prints the summary table.
fn print_summary(results: &[BackendResult]) {
    println!(
        "{:<8} {:>7} {:>6} {:>8} {:>10} {:>6} {:>17} {:>10} {:>13} {:>8}",
        "backend",
        "attacks",
        "passed",
        "breaches",
        "mismatches",
        "panics",
        "missed-heartbeats",
        "heartbeats",
        "victim-ticks",
        "seconds"
    );
    for result in results {
        match &result.evaluation {
            Some(evaluation) => println!(
                "{:<8} {:>7} {:>6} {:>8} {:>10} {:>6} {:>17} {:>10} {:>13} {:>8.1}",
                result.backend,
                evaluation.attacks.len(),
                evaluation.passed(),
                evaluation.breaches(),
                evaluation.mismatches(),
                evaluation.panics,
                evaluation.missed_heartbeats,
                evaluation.heartbeats,
                evaluation
                    .ticks
                    .map_or("?".to_string(), |(ticks, expected)| format!(
                        "{ticks}/{expected}"
                    )),
                result.seconds
            ),
            None => println!(
                "{:<8} not run: {}",
                result.backend,
                result.error.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// Boots the table in `emulator` and judges it.
fn run_backend(
    root: &Path,
    emulator: &Emulator,
    backend: Backend,
    seconds: u64,
) -> Result<Evaluation> {
    if emulator.ensure_installed(root)? == Installation::UserMustInstall {
        return Err(anyhow!(
            "{} is not installed; install it as root with `bash ci/install-deps.sh`",
            emulator.name()
        ));
    }
    let table_path = root.join(TABLE);
    let table = table::load(&table_path)?;
    let plans = plan(&table_path)?;
    let medium = run::prepare(root, &table, emulator)?;
    let settings = RunSettings {
        seconds,
        seconds_explicit: false,
        deterministic: false,
    };
    let transcript = run::boot(
        &image::target_directory(root),
        &table,
        emulator,
        &medium,
        settings,
    )
    .with_context(|| format!("booting {TABLE} in {}", emulator.name()))?;
    if transcript.emulator_exit == EmulatorExit::Interrupted {
        return Err(anyhow!("interrupted"));
    }
    Ok(evaluate(backend, &transcript, &plans, ATTACKS))
}

/// Runs the suite on QEMU (SVM) and Bochs (VMX), prints every line and the summary.
pub fn suite(root: &Path) -> Vec<BackendResult> {
    let backends = [
        (
            "svm",
            Emulator::Qemu {
                boot: BootMethod::Kernel,
                cpu: None,
            },
            Backend::Svm,
            QEMU_SECONDS,
        ),
        (
            "vmx",
            Emulator::Bochs {
                cpu: bochs::DEFAULT_CPU.into(),
            },
            Backend::Vmx,
            BOCHS_SECONDS,
        ),
    ];
    let mut results = Vec::new();
    for (name, emulator, backend, seconds) in backends {
        if crate::process::interrupted() {
            break;
        }
        println!("== redteam {name}: {TABLE} in {}", emulator.name());
        let started = Instant::now();
        let outcome = run_backend(root, &emulator, backend, seconds);
        let seconds = started.elapsed().as_secs_f64();
        let result = match outcome {
            Ok(evaluation) => {
                print_evaluation(name, &evaluation);
                BackendResult {
                    backend: name,
                    evaluation: Some(evaluation),
                    error: None,
                    seconds,
                }
            }
            Err(error) => {
                println!("redteam {name}: FAILED: {error:#}");
                BackendResult {
                    backend: name,
                    evaluation: None,
                    error: Some(format!("{error:#}")),
                    seconds,
                }
            }
        };
        results.push(result);
    }
    print_summary(&results);
    results
}

/// The expectation cells of an attack's catalog row: SVM, and VMX (`same` if equal).
fn catalog_cells(spec: &Spec) -> (String, String) {
    let cell = |expect: Expect| match spec.after_restart {
        Some(after) => format!("`{expect}, then {after}`"),
        None => format!("`{expect}`"),
    };
    let vmx = if spec.vmx == spec.svm {
        "same".to_string()
    } else {
        cell(spec.vmx)
    };
    (cell(spec.svm), vmx)
}

/// `cargo xtask redteam --list`: the catalog as a Markdown table (docs/redteam.md holds it).
pub fn list() -> ExitCode {
    println!("| attack | partition | expected (SVM) | expected (VMX) | why |");
    println!("| --- | --- | --- | --- | --- |");
    for spec in ATTACKS {
        let (svm, vmx) = catalog_cells(spec);
        println!(
            "| `{}` | {} | {svm} | {vmx} | {} |",
            spec.name, spec.partition, spec.why
        );
    }
    println!(
        "| `{RESTART_LOOP}` | {WRECKER} | `stopped(reset-request) after {} starts` | same | the starts after the list reset again (port 0xCF9) until the hypervisor's restart limit stops the partition |",
        RESTART_LIMIT + 1
    );
    ExitCode::SUCCESS
}

/// `cargo xtask redteam`.
pub fn command(root: &Path) -> ExitCode {
    let results = suite(root);
    if crate::process::interrupted() {
        ExitCode::from(crate::INTERRUPTED_STATUS)
    } else if results.len() == 2 && results.iter().all(BackendResult::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::test_lines::replaced;

    fn transcript(lines: &[(&str, &str)]) -> Transcript {
        crate::transcript::test_lines::transcript("Bochs", lines, EmulatorExit::PoweredOff)
    }

    fn plans() -> Vec<AttackerPlan> {
        vec![
            AttackerPlan {
                partition: INTRUDER.into(),
                batch: vec![
                    "ipi-fixed-physical".into(),
                    "ioapic-foreign-pin-*".into(),
                    "port-pit".into(),
                ],
                fatal: vec!["cr4-vmxe".into()],
                stops_after_list: true,
            },
            AttackerPlan {
                partition: WRECKER.into(),
                batch: vec![],
                fatal: vec!["mem-hole-read".into()],
                stops_after_list: false,
            },
        ]
    }

    /// A correct VMX run of [`plans`] (abridged from a real one).
    fn clean_run() -> Vec<(&'static str, &'static str)> {
        let mut lines = vec![
            (HYPERVISOR, "Tessera 0.1.0 backend=vmx table=redteam.toml"),
            ("victim", "victim: core 0, start 0"),
            ("victim", "victim: heartbeat 1 ticks=25"),
            ("intruder", "attack port-pit: all-ones unassigned-port-accesses=7"),
            ("intruder", "attack ioapic-foreign-pin-unmask: unchanged register=0x26 before=0x10000 wrote=0xd1 after=0x10000"),
            ("intruder", "attack ioapic-foreign-pin-masked-write: unchanged register=0x26"),
            ("intruder", "attack ioapic-foreign-pin-destination: unchanged register=0x27"),
            ("intruder", "attack ioapic-foreign-pin-read: masked pin=11 low=0x10000 high=0x0"),
            (HYPERVISOR, "refused: partition=intruder core=1 IOAPIC write PinNotOwned { pin: 11 }"),
            ("intruder", "attack ipi-fixed-physical: sent icr=0x40e1 this-core=0 second-core=0"),
            ("intruder", "batch: done"),
            ("intruder", "attack cr4-vmxe: running (start 0)"),
            ("intruder", "attack cr4-vmxe: gp cr4=0x20"),
            (HYPERVISOR, "restarting: partition=intruder reason=reset-request core=1"),
            (HYPERVISOR, "restarted: partition=intruder restarts=1 core=1"),
            ("intruder", "attacks: done (start 1)"),
            (HYPERVISOR, "stopped: partition=intruder status=0 reason=stop-self core=1"),
            ("wrecker", "attack mem-hole-read: running (start 0)"),
            (HYPERVISOR, "contained: partition=wrecker core=3 reason=npf address=0x400000 access=read rip=0x1059b3; restarting"),
        ];
        for _ in 1..RESTART_LIMIT {
            lines.push((
                HYPERVISOR,
                "restarting: partition=wrecker reason=reset-request core=3",
            ));
        }
        lines.extend([
            ("wrecker", "restart-loop: start 16, resetting"),
            (HYPERVISOR, "stopped: partition=wrecker status=0 reason=reset-request core=3"),
            ("victim", "victim: heartbeat 2 ticks=50"),
            ("victim", "victim: nmis=0"),
            ("victim", "victim: summary heartbeats=2 ticks=50 expected-ticks=51 doorbells=0 others-finished=true"),
            ("victim", "victim: pin 11 unchanged (0x8070)"),
            ("victim", "victim: memory intact (1435 KiB)"),
            (HYPERVISOR, "power-off: requested by victim"),
            (HYPERVISOR, "exits: partition=victim state=Running cpuid=8 total=8 unassigned-port-accesses=0 dropped-ipis=0 refused-ioapic-writes=0 restarts=0 suppressed-log-lines=0 refused-user-hypercalls=0 dropped-doorbells=0"),
            (HYPERVISOR, "exits: partition=intruder state=Stopped io=7 ioapic=20 total=27 unassigned-port-accesses=7 dropped-ipis=1 refused-ioapic-writes=1 restarts=1 suppressed-log-lines=0 refused-user-hypercalls=0 dropped-doorbells=0"),
            (HYPERVISOR, "exits: partition=wrecker state=Stopped npf=1 total=1 unassigned-port-accesses=0 dropped-ipis=0 refused-ioapic-writes=0 restarts=16 suppressed-log-lines=0 refused-user-hypercalls=0 dropped-doorbells=0"),
            (HYPERVISOR, "Tessera: power off"),
        ]);
        lines
    }

    fn evaluate_vmx(lines: &[(&str, &str)]) -> Evaluation {
        evaluate(Backend::Vmx, &transcript(lines), &plans(), ATTACKS)
    }

    fn verdict(evaluation: &Evaluation, name: &str) -> Verdict {
        evaluation
            .attacks
            .iter()
            .chain(&evaluation.checks)
            .find(|judged| judged.name == name)
            .unwrap_or_else(|| panic!("no line {name}"))
            .verdict
    }

    fn not_ok(evaluation: &Evaluation) -> Vec<String> {
        evaluation
            .attacks
            .iter()
            .chain(&evaluation.checks)
            .filter(|judged| judged.verdict != Verdict::Ok)
            .map(|judged| format!("{} {} {:?}", judged.name, judged.observed, judged.details))
            .collect()
    }

    #[test]
    fn a_correct_run_is_clean() {
        let evaluation = evaluate_vmx(&clean_run());
        assert_eq!(not_ok(&evaluation), Vec::<String>::new());
        assert!(evaluation.clean());
        // The batch's six, the two fatal ones and the restart-limit check.
        assert_eq!(evaluation.attacks.len(), 9);
        assert_eq!(evaluation.heartbeats, 2);
        assert_eq!(evaluation.missed_heartbeats, 0);
    }

    #[test]
    fn what_reaches_the_victim_is_a_breach_of_the_attack_that_sent_it() {
        let mut lines = clean_run();
        lines.push(("victim", "victim: unexpected-interrupt vector=0xe1 count=1"));
        let evaluation = evaluate_vmx(&lines);
        assert_eq!(verdict(&evaluation, "ipi-fixed-physical"), Verdict::Breach);
        assert_eq!(
            verdict(&evaluation, "victim unexpected interrupts"),
            Verdict::Ok
        );
        // A vector no attack uses is a breach of its own.
        let mut lines = clean_run();
        lines.push(("victim", "victim: unexpected-interrupt vector=0x99 count=2"));
        let evaluation = evaluate_vmx(&lines);
        assert_eq!(
            verdict(&evaluation, "victim unexpected interrupts"),
            Verdict::Breach
        );
        let lines = replaced(
            clean_run(),
            "memory intact",
            "victim: memory CORRUPTED at 0x1000: read 0x0, expected 0x1",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "victim memory"),
            Verdict::Breach
        );
        let lines = replaced(
            clean_run(),
            "victim: summary",
            "victim: summary heartbeats=2 ticks=5 expected-ticks=51 doorbells=0 others-finished=true",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "victim timer"),
            Verdict::Breach
        );
        let lines = replaced(
            clean_run(),
            "pin 11 unchanged",
            "victim: pin 11 CHANGED: 0x10000",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "victim I/O APIC pin"),
            Verdict::Breach
        );
    }

    #[test]
    fn outcomes_that_differ_are_mismatches_or_breaches() {
        let lines = replaced(
            clean_run(),
            "attack port-pit:",
            "attack port-pit: gp port=0x40 unassigned-port-accesses=7",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "port-pit"),
            Verdict::Mismatch
        );
        // Data from a machine-wide device is a breach.
        let lines = replaced(
            clean_run(),
            "attack port-pit:",
            "attack port-pit: read-data port=0x40 value=0x12 unassigned-port-accesses=7",
        );
        assert_eq!(verdict(&evaluate_vmx(&lines), "port-pit"), Verdict::Breach);
        let lines = replaced(
            clean_run(),
            "attack ioapic-foreign-pin-unmask:",
            "attack ioapic-foreign-pin-unmask: changed register=0x26",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "ioapic-foreign-pin-unmask"),
            Verdict::Breach
        );
        // An attack that never printed its line.
        let lines: Vec<_> = clean_run()
            .into_iter()
            .filter(|(_, text)| !text.starts_with("attack port-pit"))
            .collect();
        let evaluation = evaluate_vmx(&lines);
        assert_eq!(verdict(&evaluation, "port-pit"), Verdict::Mismatch);
        // … and the port accesses it would have reported are then missing from the sum.
        assert_eq!(
            verdict(&evaluation, "counter intruder unassigned-port-accesses"),
            Verdict::Mismatch
        );
    }

    #[test]
    fn counters_and_refusals_must_match_the_attacks() {
        let lines = replaced(
            clean_run(),
            "exits: partition=intruder",
            "exits: partition=intruder state=Stopped total=27 unassigned-port-accesses=7 dropped-ipis=0 refused-ioapic-writes=1 restarts=1 suppressed-log-lines=0 refused-user-hypercalls=0 dropped-doorbells=0",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "counter intruder dropped-ipis"),
            Verdict::Mismatch
        );
        let lines = replaced(
            clean_run(),
            "IOAPIC write PinNotOwned",
            "refused: partition=intruder core=1 IOAPIC write DestinationOutsidePartition { pin: 11, destination: 0 }",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "ioapic-foreign-pin-unmask"),
            Verdict::Mismatch
        );
    }

    #[test]
    fn each_start_is_judged_by_how_it_ended() {
        // A memory probe that came back is a breach.
        let mut lines = replaced(
            clean_run(),
            "reason=npf",
            "restarting: partition=wrecker reason=reset-request core=3",
        );
        lines.push(("wrecker", "attack mem-hole-read: survived value=0x5a5a"));
        let evaluation = evaluate_vmx(&lines);
        assert_eq!(verdict(&evaluation, "mem-hole-read"), Verdict::Breach);
        // Another containment reason is a mismatch.
        let lines = replaced(
            clean_run(),
            "reason=npf",
            "contained: partition=wrecker core=3 reason=triple-fault address=0x0 access=shutdown rip=0x1; restarting",
        );
        assert_eq!(
            verdict(&evaluate_vmx(&lines), "mem-hole-read"),
            Verdict::Mismatch
        );
        // SVM expects the CR4 write to end the run in a containment, not a #GP.
        let evaluation = evaluate(Backend::Svm, &transcript(&clean_run()), &plans(), ATTACKS);
        assert_eq!(verdict(&evaluation, "cr4-vmxe"), Verdict::Mismatch);
        // Without the last restart-loop start the limit is not shown.
        let lines: Vec<_> = clean_run()
            .into_iter()
            .filter(|(_, text)| !text.starts_with("restart-loop"))
            .collect();
        assert_eq!(
            verdict(&evaluate_vmx(&lines), RESTART_LOOP),
            Verdict::Mismatch
        );
    }

    #[test]
    fn an_unresponsive_core_ends_the_restart_it_interrupted() {
        let run = transcript(&[
            (HYPERVISOR, "restarting: partition=intruder reason=reset-request core=1"),
            (HYPERVISOR, "contained: partition=intruder core=1 reason=unresponsive-core address=0x0 access=restart rip=0x0 (1 of 2 cores stopped); halted, memory not reloaded"),
            (HYPERVISOR, "stopped: partition=intruder status=3 reason=stop-self core=1"),
        ]);
        assert_eq!(
            run_ends(&run, INTRUDER),
            [
                RunEnd::Contained("unresponsive-core".into()),
                RunEnd::Stopped {
                    reason: "stop-self".into(),
                    status: Some(3)
                }
            ]
        );
    }

    #[test]
    fn parses_attack_lines_and_refusals() {
        let line =
            parse_attack_line("attack doorbell-storm: dropped accepted=13 dropped-doorbells=387")
                .unwrap();
        assert_eq!(line.name, "doorbell-storm");
        assert_eq!(line.word, "dropped");
        assert_eq!(line.fields["dropped-doorbells"], "387");
        assert_eq!(parse_attack_line("batch: done"), None);
        let run = transcript(&[
            (HYPERVISOR, "refused: partition=intruder core=1 APIC_BASE write 0xfee00900 (x2APIC mode and base are fixed)"),
            (HYPERVISOR, "refused: partition=intruder power-off without the power capability"),
            (HYPERVISOR, "refused: partition=intruder core=1 IOAPIC write DeliveryMode { pin: 10, mode: 7 }"),
            ("intruder", "refused: partition=intruder core=1 IOAPIC write PinNotOwned { pin: 11 }"),
        ]);
        assert_eq!(
            refusals(&run, INTRUDER),
            ["apic-base", "power-off", "DeliveryMode"]
        );
    }

    /// The table's command lines and the catalog describe the same attacks: every attack of
    /// the catalog runs somewhere, every fatal name is known and belongs to that partition,
    /// and the lists fit the restart limit.
    #[test]
    fn the_table_and_the_catalog_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let plans = plan(&root.join(TABLE)).expect("the red-team table loads");
        for spec in ATTACKS {
            assert!(
                place_of(spec, &plans).is_some(),
                "{} runs nowhere in {TABLE}",
                spec.name
            );
        }
        for plan in &plans {
            assert!(plan.fatal.len() <= RESTART_LIMIT, "{}", plan.partition);
            for name in &plan.fatal {
                let spec = ATTACKS
                    .iter()
                    .find(|spec| spec.name == *name)
                    .unwrap_or_else(|| panic!("{name} is not in the catalog"));
                assert_eq!(spec.partition, plan.partition, "{name}");
            }
        }
        let mut names: Vec<&str> = ATTACKS.iter().map(|spec| spec.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ATTACKS.len(), "duplicate attack names");
        assert!(ATTACKS.len() + 1 >= 40);
    }

    /// docs/redteam.md lists every attack with the expectations of the catalog (the table
    /// `cargo xtask redteam --list` prints).
    #[test]
    fn the_documentation_lists_every_attack() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("docs/redteam.md")).expect("docs/redteam.md");
        for spec in ATTACKS {
            let (svm, vmx) = catalog_cells(spec);
            let row = format!("| `{}` | {} | {svm} | {vmx} |", spec.name, spec.partition);
            assert!(
                text.contains(&row),
                "docs/redteam.md has no row starting `{row}` (cargo xtask redteam --list)"
            );
        }
        assert!(text.contains(&format!("| `{RESTART_LOOP}` |")));
    }

    /// The intruder's `user-granted=` numbers are the table's `user-hypercalls` (call
    /// numbers of tessera_abi::hypercall::Call), and the victim's level vector is the one the
    /// intruder tries to share.
    #[test]
    fn the_command_lines_agree_with_the_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let table = tessera_config::load_without_files(&root.join(TABLE)).expect("loads");
        let partition = |name: &str| {
            table
                .partitions
                .iter()
                .find(|partition| *partition.name == name)
                .unwrap_or_else(|| panic!("no partition {name}"))
        };
        let cmdline = |name: &str| {
            partition(name)
                .boot
                .cmdline
                .as_ref()
                .map(|line| line.to_string())
                .unwrap_or_default()
        };
        let value = |line: &str, key: &str| -> String {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_default()
                .to_string()
        };
        const CALL_NUMBERS: [(&str, u64); 6] = [
            ("partition-state", 3),
            ("partition-count", 4),
            ("ring-doorbell", 5),
            ("channel-address", 6),
            ("channel-vector", 7),
            ("own-exit-count", 8),
        ];
        let mut granted: Vec<u64> = partition(INTRUDER)
            .user_hypercalls
            .iter()
            .map(|name| {
                CALL_NUMBERS
                    .iter()
                    .find(|(call, _)| *call == name.as_str())
                    .map(|(_, number)| *number)
                    .unwrap_or_else(|| panic!("unknown call {}", name.as_str()))
            })
            .collect();
        granted.sort_unstable();
        let intruder = cmdline(INTRUDER);
        let listed: Vec<u64> = value(&intruder, "user-granted")
            .split(',')
            .map(|number| number.parse().expect("a number"))
            .collect();
        assert_eq!(listed, granted);
        assert_eq!(
            value(&cmdline(VICTIM), "level-vector"),
            value(&intruder, "victim-vector")
        );
        assert_eq!(
            value(&cmdline(VICTIM), "level-pin"),
            value(&intruder, "victim-pin")
        );
    }
}
