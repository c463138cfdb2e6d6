//! IPI attacks through the x2APIC ICR (MSR 0x830, Intel SDM Vol. 3A 11.12.9; low half laid
//! out as the xAPIC ICR, 11.6.1): every delivery mode (fixed, lowest priority, SMI, NMI,
//! INIT, start-up, the reserved ones), every destination form (physical, logical cluster,
//! the 0xFFFFFFFF broadcast) and every shorthand. The hypervisor's filter
//! (hypervisor/policy/src/icr.rs) resolves each write to the partition's own cores, drops
//! and counts (`dropped-ipis`) every destination outside, drops SMI and the reserved modes,
//! ignores INIT de-assert, and sends what remains edge-triggered to its own cores only.
//!
//! The attacker sees only its own side: `sent` (nothing arrived on its own cores, as
//! expected for a foreign destination) or `own-only` (exactly its own cores named by the
//! request took it). Every fixed IPI uses its own vector, so a vector the victim reports
//! names the attack that reached it.

use tessera_guest::processor;

use super::{wait_for, Attack, Context};
use crate::instructions::{redteam_rdmsr, redteam_wrmsr};
use crate::trap::{self, probe};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "ipi-fixed-physical",
        run: fixed_physical,
    },
    Attack {
        name: "ipi-lowest-priority-physical",
        run: lowest_priority_physical,
    },
    Attack {
        name: "ipi-nmi-physical",
        run: nmi_physical,
    },
    Attack {
        name: "ipi-init-physical",
        run: init_physical,
    },
    Attack {
        name: "ipi-init-deassert",
        run: init_deassert,
    },
    Attack {
        name: "ipi-startup-physical",
        run: startup_physical,
    },
    Attack {
        name: "ipi-smi-physical",
        run: smi_physical,
    },
    Attack {
        name: "ipi-reserved-modes",
        run: reserved_modes,
    },
    Attack {
        name: "ipi-fixed-nonexistent-core",
        run: fixed_nonexistent_core,
    },
    Attack {
        name: "ipi-fixed-logical",
        run: fixed_logical,
    },
    Attack {
        name: "ipi-fixed-logical-other-cluster",
        run: fixed_logical_other_cluster,
    },
    Attack {
        name: "ipi-fixed-logical-mixed",
        run: fixed_logical_mixed,
    },
    Attack {
        name: "ipi-lowest-priority-logical-mixed",
        run: lowest_priority_logical_mixed,
    },
    Attack {
        name: "ipi-nmi-logical",
        run: nmi_logical,
    },
    Attack {
        name: "ipi-startup-logical",
        run: startup_logical,
    },
    Attack {
        name: "ipi-fixed-broadcast",
        run: fixed_broadcast,
    },
    Attack {
        name: "ipi-fixed-logical-broadcast",
        run: fixed_logical_broadcast,
    },
    Attack {
        name: "ipi-nmi-broadcast",
        run: nmi_broadcast,
    },
    Attack {
        name: "ipi-smi-broadcast",
        run: smi_broadcast,
    },
    Attack {
        name: "ipi-fixed-self",
        run: fixed_self,
    },
    Attack {
        name: "ipi-fixed-all-including-self",
        run: fixed_all_including_self,
    },
    Attack {
        name: "ipi-fixed-all-excluding-self",
        run: fixed_all_excluding_self,
    },
    Attack {
        name: "ipi-nmi-all-excluding-self",
        run: nmi_all_excluding_self,
    },
    Attack {
        name: "ipi-nmi-held-until-iret",
        run: nmi_held_until_iret,
    },
    Attack {
        name: "ipi-init-all-excluding-self",
        run: init_all_excluding_self,
    },
    Attack {
        name: "ipi-level-triggered-self",
        run: level_triggered_self,
    },
];

/// The vectors of the fixed IPIs, one per attack (the victim names what it receives).
pub const VECTOR_FIXED_PHYSICAL: u8 = 0xe1;
pub const VECTOR_LOWEST_PRIORITY_PHYSICAL: u8 = 0xe2;
pub const VECTOR_NONEXISTENT: u8 = 0xe3;
pub const VECTOR_LOGICAL: u8 = 0xe4;
pub const VECTOR_OTHER_CLUSTER: u8 = 0xe5;
pub const VECTOR_LOGICAL_MIXED: u8 = 0xe6;
pub const VECTOR_LOWEST_PRIORITY_MIXED: u8 = 0xe7;
pub const VECTOR_BROADCAST: u8 = 0xe8;
pub const VECTOR_LOGICAL_BROADCAST: u8 = 0xe9;
pub const VECTOR_SELF: u8 = 0xea;
pub const VECTOR_ALL_INCLUDING_SELF: u8 = 0xeb;
pub const VECTOR_ALL_EXCLUDING_SELF: u8 = 0xec;
pub const VECTOR_LEVEL_SELF: u8 = 0xed;

const ICR: u64 = 0x830;
/// ICR fields (SDM Vol. 3A 11.6.1, Figure 11-12; 11.12.9, Figure 11-28).
const FIXED: u64 = 0b000 << 8;
const LOWEST_PRIORITY: u64 = 0b001 << 8;
const SMI: u64 = 0b010 << 8;
const NMI: u64 = 0b100 << 8;
const INIT: u64 = 0b101 << 8;
const STARTUP: u64 = 0b110 << 8;
const LOGICAL: u64 = 1 << 11;
const ASSERT: u64 = 1 << 14;
const LEVEL: u64 = 1 << 15;
const SHORTHAND_SELF: u64 = 0b01 << 18;
const SHORTHAND_ALL_INCLUDING_SELF: u64 = 0b10 << 18;
const SHORTHAND_ALL_EXCLUDING_SELF: u64 = 0b11 << 18;
const BROADCAST: u64 = 0xffff_ffff << 32;
/// How long an IPI to an own core may take to arrive.
const DELIVERY_MICROSECONDS: u64 = 20_000;

fn destination(apic_id: u32) -> u64 {
    u64::from(apic_id) << 32
}

/// The logical x2APIC destination of cluster `cluster` with member bits `members`
/// (SDM Vol. 3A 11.12.10.2).
fn logical(cluster: u32, members: u32) -> u64 {
    (u64::from(cluster) << 48) | (u64::from(members & 0xffff) << 32) | LOGICAL
}

/// The logical member bit of core `apic_id` within its cluster.
fn member(apic_id: u32) -> u32 {
    1 << (apic_id & 0xf)
}

/// Which of the attacker's own cores an IPI should reach.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Own {
    /// None: a foreign destination.
    Nothing,
    /// This core only.
    This,
    /// The second core only.
    Second,
    /// Both cores.
    Both,
}

/// The own cores' counters for one kind of delivery: (this core, second core).
fn counts(context: &Context, kind: Option<u8>) -> (u64, u64) {
    let count = |apic_id: u32| {
        let block = trap::block_of(apic_id);
        match kind {
            Some(vector) => u64::from(block.interrupts(vector)),
            None => block.nmis(),
        }
    };
    (
        count(context.own_core),
        context.second_core.map_or(0, count),
    )
}

/// Writes `value` to the ICR and reports what this partition's cores received of `kind`
/// (a vector, or `None` for NMIs), against what it should (`own`).
fn send(context: &Context, value: u64, kind: Option<u8>, own: Own) {
    let before = counts(context, kind);
    processor::enable_interrupts();
    let result = probe(redteam_wrmsr, [ICR, value, 0, 0]);
    let expected = match own {
        Own::Nothing => (0, 0),
        Own::This => (1, 0),
        Own::Second => (0, 1),
        Own::Both => (1, 1),
    };
    let delta = |now: (u64, u64)| (now.0 - before.0, now.1 - before.1);
    if own == Own::Nothing {
        // Nothing of this partition is named: give a stray delivery time to show up.
        tessera_guest::time::delay_microseconds(DELIVERY_MICROSECONDS / 4);
    } else {
        wait_for(DELIVERY_MICROSECONDS, || {
            delta(counts(context, kind)) == expected
        });
    }
    processor::disable_interrupts();
    let (this, second) = delta(counts(context, kind));
    if let Err(fault) = result {
        context.report(fault.name(), format_args!("icr={value:#x}"));
        return;
    }
    let word = match own {
        _ if (this, second) != expected => "unexpected-own-delivery",
        Own::Nothing => "sent",
        _ => "own-only",
    };
    context.report(
        word,
        format_args!("icr={value:#x} this-core={this} second-core={second}"),
    );
}

fn victim(context: &Context) -> u64 {
    destination(context.victim_core)
}

fn fixed_physical(context: &Context) {
    let vector = VECTOR_FIXED_PHYSICAL;
    send(
        context,
        victim(context) | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        Own::Nothing,
    );
}

fn lowest_priority_physical(context: &Context) {
    let vector = VECTOR_LOWEST_PRIORITY_PHYSICAL;
    send(
        context,
        victim(context) | LOWEST_PRIORITY | ASSERT | u64::from(vector),
        Some(vector),
        Own::Nothing,
    );
}

fn nmi_physical(context: &Context) {
    send(context, victim(context) | NMI | ASSERT, None, Own::Nothing);
}

/// INIT level assert, as the start-up sequence sends it (SDM Vol. 3A 9.4.4.1).
fn init_physical(context: &Context) {
    send(
        context,
        victim(context) | INIT | ASSERT | LEVEL,
        None,
        Own::Nothing,
    );
}

/// INIT level de-assert: does nothing on processors since the Pentium 4 (SDM Vol. 3A
/// 11.6.1), and the hypervisor ignores it without counting.
fn init_deassert(context: &Context) {
    send(context, victim(context) | INIT | LEVEL, None, Own::Nothing);
}

/// A start-up IPI at the victim's core, vector 0x08 (its code would start at 0x8000).
fn startup_physical(context: &Context) {
    send(
        context,
        victim(context) | STARTUP | ASSERT | 0x08,
        None,
        Own::Nothing,
    );
}

/// SMI: dropped whatever the destination (a guest never sends one).
fn smi_physical(context: &Context) {
    send(context, victim(context) | SMI | ASSERT, None, Own::Nothing);
}

/// Delivery modes 3 and 7 are reserved: two writes.
fn reserved_modes(context: &Context) {
    let first = probe(
        redteam_wrmsr,
        [ICR, victim(context) | (0b011 << 8) | 0xe0, 0, 0],
    );
    send(
        context,
        victim(context) | (0b111 << 8) | ASSERT | 0xe0,
        Some(0xe0),
        Own::Nothing,
    );
    if let Err(fault) = first {
        crate::println!(
            "attack {}: note mode 3 raised {}",
            context.name(),
            fault.name()
        );
    }
}

/// A physical destination no core of the machine has.
fn fixed_nonexistent_core(context: &Context) {
    let vector = VECTOR_NONEXISTENT;
    send(
        context,
        destination(0x1234) | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        Own::Nothing,
    );
}

fn fixed_logical(context: &Context) {
    let vector = VECTOR_LOGICAL;
    let victim = context.victim_core;
    send(
        context,
        logical(victim >> 4, member(victim)) | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        Own::Nothing,
    );
}

/// Every member of cluster 1 (x2APIC IDs 16–31): sixteen destinations, none the
/// partition's.
fn fixed_logical_other_cluster(context: &Context) {
    let vector = VECTOR_OTHER_CLUSTER;
    send(
        context,
        logical(1, 0xffff) | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        Own::Nothing,
    );
}

/// The victim's member bit together with both own cores': the own cores take it, the
/// victim's destination is dropped.
fn mixed_members(context: &Context) -> u64 {
    let mut members = member(context.victim_core) | member(context.own_core);
    if let Some(second) = context.second_core {
        members |= member(second);
    }
    logical(context.own_core >> 4, members)
}

fn fixed_logical_mixed(context: &Context) {
    let vector = VECTOR_LOGICAL_MIXED;
    let own = if context.second_core.is_some() {
        Own::Both
    } else {
        Own::This
    };
    send(
        context,
        mixed_members(context) | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        own,
    );
}

/// Lowest priority to the mixed set: one own core (the partition's first, the hypervisor's
/// choice for "any core of the set", SDM Vol. 3A 11.6.2.4), the victim dropped.
fn lowest_priority_logical_mixed(context: &Context) {
    let vector = VECTOR_LOWEST_PRIORITY_MIXED;
    send(
        context,
        mixed_members(context) | LOWEST_PRIORITY | ASSERT | u64::from(vector),
        Some(vector),
        Own::This,
    );
}

fn nmi_logical(context: &Context) {
    let victim = context.victim_core;
    send(
        context,
        logical(victim >> 4, member(victim)) | NMI | ASSERT,
        None,
        Own::Nothing,
    );
}

fn startup_logical(context: &Context) {
    let victim = context.victim_core;
    send(
        context,
        logical(victim >> 4, member(victim)) | STARTUP | ASSERT | 0x08,
        None,
        Own::Nothing,
    );
}

fn both_or_this(context: &Context) -> Own {
    if context.second_core.is_some() {
        Own::Both
    } else {
        Own::This
    }
}

/// Physical destination 0xFFFFFFFF: every core of the machine on hardware (SDM Vol. 3A
/// 11.12.9), only the partition's own cores under Tessera.
fn fixed_broadcast(context: &Context) {
    let vector = VECTOR_BROADCAST;
    send(
        context,
        BROADCAST | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        both_or_this(context),
    );
}

/// Logical destination 0xFFFFFFFF: a broadcast as well.
fn fixed_logical_broadcast(context: &Context) {
    let vector = VECTOR_LOGICAL_BROADCAST;
    send(
        context,
        BROADCAST | LOGICAL | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        both_or_this(context),
    );
}

fn nmi_broadcast(context: &Context) {
    send(
        context,
        BROADCAST | NMI | ASSERT,
        None,
        both_or_this(context),
    );
}

fn smi_broadcast(context: &Context) {
    send(
        context,
        SHORTHAND_ALL_INCLUDING_SELF | SMI | ASSERT,
        None,
        Own::Nothing,
    );
}

fn fixed_self(context: &Context) {
    let vector = VECTOR_SELF;
    send(
        context,
        victim(context) | SHORTHAND_SELF | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        Own::This,
    );
}

fn fixed_all_including_self(context: &Context) {
    let vector = VECTOR_ALL_INCLUDING_SELF;
    send(
        context,
        victim(context) | SHORTHAND_ALL_INCLUDING_SELF | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        both_or_this(context),
    );
}

fn fixed_all_excluding_self(context: &Context) {
    let vector = VECTOR_ALL_EXCLUDING_SELF;
    let own = if context.second_core.is_some() {
        Own::Second
    } else {
        Own::Nothing
    };
    send(
        context,
        victim(context) | SHORTHAND_ALL_EXCLUDING_SELF | FIXED | ASSERT | u64::from(vector),
        Some(vector),
        own,
    );
}

fn nmi_all_excluding_self(context: &Context) {
    let own = if context.second_core.is_some() {
        Own::Second
    } else {
        Own::Nothing
    };
    send(
        context,
        victim(context) | SHORTHAND_ALL_EXCLUDING_SELF | NMI | ASSERT,
        None,
        own,
    );
}

/// Two NMIs to the partition's second core, the second sent while the first's handler still
/// runs: as on hardware (SDM Vol. 3A 6.7.1) it must be held until that handler's IRET and
/// then delivered — not nested on top of it, not lost. On SVM the hypervisor keeps the
/// guest's NMI blocking in software (hypervisor/policy/src/guest_nmi.rs) so that a guest
/// can never mask the hypervisor's own NMIs; this checks that the software blocking keeps
/// the guest's semantics. `held-until-iret` is the expected outcome; `nested` (the second
/// handler ran inside the first), `lost` (never delivered) and `no-nmi` are failures.
fn nmi_held_until_iret(context: &Context) {
    let Some(second) = context.second_core else {
        context.report("no-second-core", format_args!(""));
        return;
    };
    let block = trap::block_of(second);
    block.reset_nmi_hold();
    block.set_mode(trap::Mode::NmiHold);
    let before = block.nmis();
    let icr = (u64::from(second) << 32) | NMI | ASSERT;
    probe(redteam_wrmsr, [ICR, icr, 0, 0]).ok();
    let first = wait_for(DELIVERY_MICROSECONDS * 50, || block.nmis() > before);
    // The first handler now waits for its release: the second NMI must wait with it.
    probe(redteam_wrmsr, [ICR, icr, 0, 0]).ok();
    let early = wait_for(DELIVERY_MICROSECONDS * 5, || block.nmis() > before + 1);
    block.release_nmi();
    let after_iret = wait_for(DELIVERY_MICROSECONDS * 50, || block.nmis() > before + 1);
    // Let every handler still waiting return (the depth is counted before the NMI is).
    let drained = wait_for(DELIVERY_MICROSECONDS * 50, || {
        let (depth, _) = block.nmi_depth();
        if depth > 0 {
            block.release_nmi();
        }
        depth == 0
    });
    block.set_mode(trap::Mode::Normal);
    let (_, deepest) = block.nmi_depth();
    let word = if !first {
        "no-nmi"
    } else if early || deepest > 1 {
        "nested"
    } else if !after_iret {
        "lost"
    } else if !drained {
        "stuck"
    } else {
        "held-until-iret"
    };
    context.report(
        word,
        format_args!("nmis={} max-depth={deepest}", block.nmis() - before),
    );
}

/// INIT to every other core of the machine on hardware; under Tessera to the partition's
/// second core only, which then waits for a start-up IPI: the attacker starts it again
/// (INIT-SIPI-SIPI) and reports `own-only` when it is back.
fn init_all_excluding_self(context: &Context) {
    let value = victim(context) | SHORTHAND_ALL_EXCLUDING_SELF | INIT | ASSERT | LEVEL;
    let result = probe(redteam_wrmsr, [ICR, value, 0, 0]);
    let Some(second) = context.second_core else {
        context.report("sent", format_args!("icr={value:#x} no-second-core"));
        return;
    };
    let generation = crate::attacker::second_core_generation();
    let restarted = crate::attacker::start_second_core(context.info, second);
    let back = crate::attacker::second_core_generation() > generation;
    let word = match (result, restarted, back) {
        (Err(fault), ..) => fault.name(),
        (Ok(_), true, true) => "own-only",
        _ => "second-core-lost",
    };
    context.report(word, format_args!("icr={value:#x}"));
}

/// A level-triggered fixed IPI to itself: the hypervisor sends it edge-triggered, so the
/// TMR bit stays clear and its EOI is not broadcast to the I/O APICs, where other
/// partitions' pins live (SDM Vol. 3A 11.8.4, 11.8.5).
fn level_triggered_self(context: &Context) {
    let vector = VECTOR_LEVEL_SELF;
    let value = destination(context.own_core) | FIXED | ASSERT | LEVEL | u64::from(vector);
    let before = counts(context, Some(vector)).0;
    processor::enable_interrupts();
    let result = probe(redteam_wrmsr, [ICR, value, 0, 0]);
    wait_for(DELIVERY_MICROSECONDS, || {
        counts(context, Some(vector)).0 > before
    });
    processor::disable_interrupts();
    // x2APIC TMR: MSRs 0x818–0x81F, 32 vectors each (SDM Vol. 3A Table 11-6).
    let tmr = probe(redteam_rdmsr, [0x818 + u64::from(vector / 32), 0, 0, 0]).unwrap_or(u64::MAX);
    let level = tmr & (1 << (vector % 32)) != 0;
    let received = counts(context, Some(vector)).0 - before;
    let word = match (result, received, level) {
        (Err(fault), ..) => fault.name(),
        (Ok(_), 1, false) => "edge-only",
        (Ok(_), 1, true) => "level-delivered",
        _ => "not-delivered",
    };
    context.report(word, format_args!("icr={value:#x} tmr={tmr:#x}"));
}
