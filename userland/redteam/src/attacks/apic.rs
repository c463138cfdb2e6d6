//! Local APIC mode and base games. The hypervisor emulates IA32_APIC_BASE: a write that
//! changes anything but the BSP flag (leaving x2APIC mode, disabling the APIC, moving its
//! base) raises #GP (hypervisor/src/exits/msr.rs); the x2APIC registers themselves pass
//! through, so the processor's own rules apply to them (Intel SDM Vol. 3A 11.12.1.2: a
//! WRMSR to a read-only x2APIC register raises #GP).

use super::msr::{read, write};
use super::{outcome_of, Attack, Context};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "apic-base-leave-x2apic",
        run: leave_x2apic,
    },
    Attack {
        name: "apic-base-disable",
        run: disable,
    },
    Attack {
        name: "apic-base-relocate",
        run: relocate,
    },
    Attack {
        name: "apic-base-rewrite-same",
        run: rewrite_same,
    },
    Attack {
        name: "x2apic-id-write",
        run: id_write,
    },
    Attack {
        name: "x2apic-ldr-write",
        run: ldr_write,
    },
];

const IA32_APIC_BASE: u64 = 0x1b;
/// IA32_APIC_BASE bits (SDM Vol. 3A 11.4.4, Figure 11-5; 11.12.1, Figure 11-26).
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;

/// Writes `change(base)` to IA32_APIC_BASE; reports the fault (`gp`) or `accepted`, and
/// whether the base still reads as before.
fn base_write(context: &Context, change: impl Fn(u64) -> u64) {
    let Ok(before) = read(IA32_APIC_BASE) else {
        context.report("read-refused", format_args!(""));
        return;
    };
    let result = write(IA32_APIC_BASE, change(before));
    let after = read(IA32_APIC_BASE).unwrap_or(0);
    let word = match result {
        Ok(_) => "accepted",
        Err(_) => outcome_of(&result),
    };
    context.report(
        word,
        format_args!(
            "before={before:#x} wrote={:#x} after={after:#x}",
            change(before)
        ),
    );
}

/// x2APIC to xAPIC directly is an illegal transition anyway (SDM Vol. 3A 11.12.5,
/// Figure 11-27); the hypervisor refuses any mode change.
fn leave_x2apic(context: &Context) {
    base_write(context, |base| base & !APIC_BASE_X2APIC);
}

fn disable(context: &Context) {
    base_write(context, |base| {
        base & !(APIC_BASE_X2APIC | APIC_BASE_ENABLE)
    });
}

fn relocate(context: &Context) {
    base_write(context, |base| base.wrapping_add(0x10_0000));
}

/// Writing back what it reads changes nothing and is accepted.
fn rewrite_same(context: &Context) {
    base_write(context, |base| base);
}

/// The x2APIC ID register (MSR 0x802) is read-only.
fn id_write(context: &Context) {
    let result = write(0x802, 0x99);
    context.report(outcome_of(&result), format_args!("msr=0x802"));
}

/// The logical destination register (MSR 0x80d) is read-only in x2APIC mode (SDM Vol. 3A
/// 11.12.10.2): a partition cannot make itself answer another core's logical ID.
fn ldr_write(context: &Context) {
    let result = write(0x80d, 0xffff_ffff);
    context.report(outcome_of(&result), format_args!("msr=0x80d"));
}
