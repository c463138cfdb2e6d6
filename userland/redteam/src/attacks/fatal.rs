//! Attacks that end the partition's run: touching memory outside the partition (a nested
//! page fault, `reason=npf`), a triple fault, an INS from an unowned port (not emulated:
//! `reason=string-io`), MMIO instructions the I/O APIC decoder refuses (`mmio-decode`),
//! CR4 bits the partition may not set, and states the hypervisor must still be able to end
//! with a restart: exception storms, a timer storm, a halted core, a core that keeps NMIs
//! blocked, an unmasked pin. Each runs on its own start of a partition with `on-fault =
//! "restart"`; the runner judges it by the hypervisor's `contained:` or `restarting:` line
//! for that start. An attack that comes back prints what it saw (`survived` for an access
//! that should have been contained) and the partition resets itself (port 0xCF9) so the
//! sequence goes on.

use super::ioapic::BASE as IOAPIC_BASE;
use super::{wait_for, Attack, Context};
use crate::attacker::{self, SecondCoreCommand};
use crate::instructions::*;
use crate::trap::{self, probe, Routine};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "mem-hole-read",
        run: hole_read,
    },
    Attack {
        name: "mem-hole-write",
        run: hole_write,
    },
    Attack {
        name: "mem-hole-fetch",
        run: hole_fetch,
    },
    Attack {
        name: "mem-above-4g",
        run: above_4g,
    },
    Attack {
        name: "mem-local-apic-page",
        run: local_apic_page,
    },
    Attack {
        name: "mem-hypervisor",
        run: hypervisor_memory,
    },
    Attack {
        name: "mem-victim-ram",
        run: victim_ram,
    },
    Attack {
        name: "mem-foreign-channel",
        run: foreign_channel,
    },
    Attack {
        name: "triple-fault",
        run: triple_fault,
    },
    Attack {
        name: "port-ins-unowned",
        run: ins_unowned,
    },
    Attack {
        name: "ioapic-movs",
        run: ioapic_movs,
    },
    Attack {
        name: "ioapic-lock-prefix",
        run: ioapic_lock_prefix,
    },
    Attack {
        name: "ioapic-execute",
        run: ioapic_execute,
    },
    Attack {
        name: "ioapic-split-access",
        run: ioapic_split_access,
    },
    Attack {
        name: "storm-alignment-check",
        run: storm_alignment_check,
    },
    Attack {
        name: "storm-single-step",
        run: storm_single_step,
    },
    Attack {
        name: "nmi-blocked-forever",
        run: nmi_blocked_forever,
    },
    Attack {
        name: "halted-core",
        run: halted_core,
    },
    Attack {
        name: "storm-timer",
        run: storm_timer,
    },
    Attack {
        name: "restart-with-unmasked-pin",
        run: restart_with_unmasked_pin,
    },
    Attack {
        name: "cr4-vmxe",
        run: super::cpu::cr4_vmxe,
    },
    Attack {
        name: "cr4-smxe",
        run: super::cpu::cr4_smxe,
    },
];

/// Exceptions a storm must reach before the partition resets itself.
const STORM_EXCEPTIONS: u64 = 200;
/// How long the boot core waits for the storm (microseconds).
const STORM_TIMEOUT_MICROSECONDS: u64 = 5_000_000;

/// An address from the command line, or `default`.
fn address(context: &Context, key: &str, default: u64) -> u64 {
    context.command_line.number(key).unwrap_or(default)
}

/// Runs `routine`; if it comes back, says what it saw.
fn expect_no_return(context: &Context, routine: Routine, arguments: [u64; 4]) {
    match probe(routine, arguments) {
        Ok(value) => context.report("survived", format_args!("value={value:#x}")),
        Err(fault) => context.report(
            "survived",
            format_args!("fault={} rip={:#x}", fault.name(), fault.rip),
        ),
    }
}

/// Between the partition's two RAM regions (`hole=`).
fn hole_read(context: &Context) {
    expect_no_return(
        context,
        redteam_read64,
        [address(context, "hole", 0x40_0000), 0, 0, 0],
    );
}

fn hole_write(context: &Context) {
    expect_no_return(
        context,
        redteam_write64,
        [address(context, "hole", 0x40_0000), 0x5a5a, 0, 0],
    );
}

/// Execution from the hole: a fetch fault.
fn hole_fetch(context: &Context) {
    expect_no_return(
        context,
        redteam_jump,
        [address(context, "hole", 0x40_0000), 0, 0, 0],
    );
}

/// Above 4 GiB (mapped into the attacker's page tables first).
fn above_4g(context: &Context) {
    let target = 0x1_0000_0000;
    if !trap::map_identity(target) {
        context.report("no-mapping", format_args!(""));
        return;
    }
    expect_no_return(context, redteam_read64, [target, 0, 0, 0]);
}

/// The xAPIC page 0xFEE00000: in x2APIC mode the local APIC does not decode it (SDM Vol. 3A
/// 11.12.1), and no partition maps it.
fn local_apic_page(context: &Context) {
    expect_no_return(context, redteam_read64, [0xfee0_0300, 0, 0, 0]);
}

/// Where the hypervisor's image and state lie in host-physical memory (`hypervisor=`), as
/// a guest-physical address.
fn hypervisor_memory(context: &Context) {
    expect_no_return(
        context,
        redteam_read64,
        [address(context, "hypervisor", 0x80_0000), 0, 0, 0],
    );
}

/// The victim's RAM, by its host-physical address (`victim-ram=`).
fn victim_ram(context: &Context) {
    expect_no_return(
        context,
        redteam_read64,
        [address(context, "victim-ram", 0x100_0000), 0, 0, 0],
    );
}

/// The victim's channel with the other attacker, by its host-physical address
/// (`foreign-channel=`).
fn foreign_channel(context: &Context) {
    expect_no_return(
        context,
        redteam_write64,
        [address(context, "foreign-channel", 0x1a0_0000), 0xbad, 0, 0],
    );
}

/// An IDT of limit 0, then INT3: #GP, #DF, shutdown (SDM Vol. 3A 6.15).
fn triple_fault(context: &Context) {
    expect_no_return(context, redteam_triple_fault, [0; 4]);
}

/// INS from an unowned port: the hypervisor would have to store all-ones through the
/// guest's page tables; it stops the partition instead (hypervisor/src/exits/io.rs).
fn ins_unowned(context: &Context) {
    static mut BUFFER: [u8; 64] = [0; 64];
    let buffer = (&raw mut BUFFER) as u64;
    expect_no_return(context, redteam_insb, [0x80, buffer, 0, 0]);
}

/// MOVSD into IOREGSEL: a string instruction the MMIO decoder does not accept.
fn ioapic_movs(context: &Context) {
    static SOURCE: u32 = 0x01;
    expect_no_return(
        context,
        redteam_mmio_movsd,
        [IOAPIC_BASE, (&raw const SOURCE) as u64, 0, 0],
    );
}

/// LOCK OR into IOREGSEL: the decoder refuses LOCK.
fn ioapic_lock_prefix(context: &Context) {
    expect_no_return(context, redteam_mmio_lock_or, [IOAPIC_BASE, 0x01, 0, 0]);
}

/// A jump into the I/O APIC page: the fetch faults there, and the hypervisor cannot fetch
/// the instruction from it.
fn ioapic_execute(context: &Context) {
    expect_no_return(context, redteam_jump, [IOAPIC_BASE, 0, 0, 0]);
}

/// A 4-byte store whose first two bytes land in the partition's RAM page just below the
/// I/O APIC (`split-page=`, a region placed at guest 0xFEBFF000) and whose last two land
/// in IOREGSEL. On hardware the two halves go to their addresses (SDM Vol. 3A 8.1.1: a
/// page-crossing access is not atomic but each byte reaches its own address); an emulation
/// must do the same or refuse the instruction as one it cannot emulate. The hypervisor
/// refuses it (`reason=mmio-split`); if the store comes back, the report says how it was
/// emulated.
fn ioapic_split_access(context: &Context) {
    let page = address(context, "split-page", 0xfebf_f000);
    if page + 0x1000 != IOAPIC_BASE {
        context.report("no-split-page", format_args!("page={page:#x}"));
        return;
    }
    // Select register 1 (version) first, and mark the RAM bytes.
    probe(redteam_mmio_write32, [IOAPIC_BASE, 0x01, 0, 0]).ok();
    // SAFETY: the split page is this partition's RAM (the table places it there).
    unsafe { core::ptr::write_volatile((IOAPIC_BASE - 4) as *mut u32, 0) };
    let result = probe(redteam_mmio_write32, [IOAPIC_BASE - 2, 0x0012_3456, 0, 0]);
    let selected = probe(redteam_mmio_read32, [IOAPIC_BASE, 0, 0, 0]).unwrap_or(0xdead);
    // SAFETY: as above.
    let ram = unsafe { core::ptr::read_volatile((IOAPIC_BASE - 4) as *const u32) };
    let word = match result {
        Err(_) => "survived-fault",
        Ok(_) if selected == 0x12 && ram == 0x3456_0000 => "survived-exact",
        Ok(_) => "survived-mis-emulated",
    };
    context.report(
        word,
        format_args!("ioregsel={selected:#x} (exact: 0x12) ram-bytes={ram:#x} (exact: 0x34560000)"),
    );
}

/// Hands a storm to the second core, waits until it has raised [`STORM_EXCEPTIONS`] of
/// `vector`, and reports; the caller then resets the partition while the storm goes on.
fn storm(context: &Context, command: SecondCoreCommand, vector: u8) {
    let Some(second) = context.second_core else {
        context.report("no-second-core", format_args!(""));
        return;
    };
    attacker::command_second_core(second, command);
    let block = trap::block_of(second);
    wait_for(STORM_TIMEOUT_MICROSECONDS, || {
        block.exceptions(vector) >= STORM_EXCEPTIONS
    });
    let count = block.exceptions(vector);
    let word = if count >= STORM_EXCEPTIONS {
        "storming"
    } else {
        "no-storm"
    };
    context.report(word, format_args!("exceptions={count}, resetting"));
}

/// Ring 3 with CR0.AM and RFLAGS.AC: every unaligned load raises #AC (SDM Vol. 3A 6.15,
/// "Interrupt 17"), and the handler returns to it. Each #AC is a VM exit (the hypervisor
/// intercepts #AC to reflect it), so the hypervisor keeps control and must restart the
/// partition when asked.
fn storm_alignment_check(context: &Context) {
    storm(context, SecondCoreCommand::StormAlignmentCheck, 17);
}

/// RFLAGS.TF with a #DB handler that returns with TF still set: a #DB after every
/// instruction (SDM Vol. 3A 18.3.1.4).
fn storm_single_step(context: &Context) {
    storm(context, SecondCoreCommand::StormSingleStep, 1);
}

/// The second core masks interrupts and halts for good; then the partition asks for a
/// reset. The hypervisor must still reach the core (its NMI wakes a halted core, SDM Vol. 3A
/// 6.7 / APM Vol. 2 15.21) and restart the partition.
fn halted_core(context: &Context) {
    let Some(second) = context.second_core else {
        context.report("no-second-core", format_args!(""));
        return;
    };
    attacker::command_second_core(second, SecondCoreCommand::Halt);
    let halted = wait_for(1_000_000, || {
        attacker::SECOND_CORE_HALTING.load(core::sync::atomic::Ordering::Acquire)
    });
    context.report(
        if halted { "halted" } else { "not-halted" },
        format_args!("resetting"),
    );
}

/// The second core's local APIC timer at its fastest; the partition then asks for a reset.
/// The next start's cores must not see a single timer interrupt of the old run.
fn storm_timer(context: &Context) {
    let Some(second) = context.second_core else {
        context.report("no-second-core", format_args!(""));
        return;
    };
    attacker::command_second_core(second, SecondCoreCommand::StormTimer);
    let block = trap::block_of(second);
    let vector = attacker::TIMER_STORM_VECTOR;
    wait_for(STORM_TIMEOUT_MICROSECONDS, || {
        u64::from(block.interrupts(vector)) >= STORM_EXCEPTIONS
    });
    let count = block.interrupts(vector);
    let word = if u64::from(count) >= STORM_EXCEPTIONS {
        "storming"
    } else {
        "no-storm"
    };
    context.report(word, format_args!("interrupts={count}, resetting"));
}

/// The partition's own pin unmasked toward its own core (allowed), then a reset: the
/// restart must mask the pin (hypervisor/src/runtime/cores.rs, `restart_partition`), so
/// no route of the old run survives into the new one; the next start reports what it found.
fn restart_with_unmasked_pin(context: &Context) {
    let low = 0x10 + 2 * u32::from(context.own_pin);
    super::ioapic::write_register(low + 1, context.own_core << 24);
    super::ioapic::write_register(low, 0xd9);
    let read_back = super::ioapic::read_register(low);
    let word = if read_back == 0xd9 {
        "unmasked"
    } else {
        "refused"
    };
    context.report(word, format_args!("low={read_back:#x}, resetting"));
}

/// The second core takes an NMI and never returns from its handler, so NMIs stay blocked
/// on it (SDM Vol. 3A 6.7.1); then the partition asks for a reset. The hypervisor signals
/// its cores with NMIs: under VMX with virtual NMIs the physical NMI still exits (SDM Vol.
/// 3C 25.3), so the restart proceeds; under SVM without vNMI an injected NMI blocks
/// physical NMIs until the guest's IRET (AMD APM Vol. 2 15.20), so the core cannot be
/// stopped and the hypervisor halts the partition (`reason=unresponsive-core`).
fn nmi_blocked_forever(context: &Context) {
    let Some(second) = context.second_core else {
        context.report("no-second-core", format_args!(""));
        return;
    };
    let block = trap::block_of(second);
    block.set_mode(trap::Mode::NmiSpin);
    let before = block.nmis();
    let icr = (u64::from(second) << 32) | (0b100 << 8) | (1 << 14);
    probe(redteam_wrmsr, [0x830, icr, 0, 0]).ok();
    let spinning = wait_for(1_000_000, || block.nmis() > before);
    context.report(
        if spinning { "spinning" } else { "no-nmi" },
        format_args!("resetting"),
    );
}
