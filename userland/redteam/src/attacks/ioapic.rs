//! I/O APIC attacks through the trapped page (hypervisor/src/exits/ioapic.rs and its policy,
//! hypervisor/policy/src/ioapic.rs): a partition sees and programs only the pins its devices
//! own; an unmasked entry must be fixed (or NMI), physical and aimed at one of its own cores;
//! level-triggered vectors are unique across partitions; ID, version and arbitration are
//! read-only; every other offset of the page reads all-ones. Writes the view refuses are
//! counted (`refused-ioapic-writes`) and logged (`refused: … IOAPIC write <reason>`); writes
//! it ignores are neither.
//!
//! Register model: 82093AA datasheet §3.1–3.2 — IOREGSEL at offset 0x00, IOWIN at 0x10,
//! registers 0x00 ID, 0x01 version, 0x02 arbitration, 0x10 + 2n / 0x11 + 2n the low and
//! high halves of pin n's redirection entry (vector 7:0, delivery mode 10:8, destination
//! mode 11, trigger mode 15, mask 16, destination 63:56).

use super::{Attack, Context};
use crate::instructions::*;
use crate::trap::{probe, Fault};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "ioapic-foreign-pin-unmask",
        run: foreign_pin_unmask,
    },
    Attack {
        name: "ioapic-foreign-pin-masked-write",
        run: foreign_pin_masked_write,
    },
    Attack {
        name: "ioapic-foreign-pin-destination",
        run: foreign_pin_destination,
    },
    Attack {
        name: "ioapic-foreign-pin-read",
        run: foreign_pin_read,
    },
    Attack {
        name: "ioapic-destination-outside",
        run: destination_outside,
    },
    Attack {
        name: "ioapic-destination-broadcast",
        run: destination_broadcast,
    },
    Attack {
        name: "ioapic-logical-destination",
        run: logical_destination,
    },
    Attack {
        name: "ioapic-delivery-extint",
        run: delivery_extint,
    },
    Attack {
        name: "ioapic-delivery-smi",
        run: delivery_smi,
    },
    Attack {
        name: "ioapic-delivery-init",
        run: delivery_init,
    },
    Attack {
        name: "ioapic-delivery-reserved",
        run: delivery_reserved,
    },
    Attack {
        name: "ioapic-lowest-priority",
        run: lowest_priority,
    },
    Attack {
        name: "ioapic-redirect-unmasked-entry",
        run: redirect_unmasked_entry,
    },
    Attack {
        name: "ioapic-shared-level-vector",
        run: shared_level_vector,
    },
    Attack {
        name: "ioapic-id-register",
        run: id_register,
    },
    Attack {
        name: "ioapic-arbitration-register",
        run: arbitration_register,
    },
    Attack {
        name: "ioapic-version-register",
        run: version_register,
    },
    Attack {
        name: "ioapic-nonexistent-register",
        run: nonexistent_register,
    },
    Attack {
        name: "ioapic-eoi-register",
        run: eoi_register,
    },
    Attack {
        name: "ioapic-beyond-registers",
        run: beyond_registers,
    },
    Attack {
        name: "ioapic-access-sizes",
        run: access_sizes,
    },
    Attack {
        name: "ioapic-instruction-straddle",
        run: instruction_straddle,
    },
];

pub const BASE: u64 = 0xfec0_0000;
const SELECT: u64 = BASE;
const WINDOW: u64 = BASE + 0x10;

/// Redirection-entry bits.
const MASKED: u32 = 1 << 16;
const LEVEL: u32 = 1 << 15;
const LOGICAL: u32 = 1 << 11;
const fn mode(bits: u32) -> u32 {
    bits << 8
}

fn low(pin: u8) -> u32 {
    0x10 + 2 * u32::from(pin)
}

fn high(pin: u8) -> u32 {
    low(pin) + 1
}

fn select(index: u32) -> Result<u64, Fault> {
    probe(redteam_mmio_write32, [SELECT, u64::from(index), 0, 0])
}

/// Reads register `index` (select, then window).
pub fn read_register(index: u32) -> u32 {
    select(index).ok();
    probe(redteam_mmio_read32, [WINDOW, 0, 0, 0]).unwrap_or(0xdead_beef) as u32
}

/// Writes register `index`.
pub fn write_register(index: u32, value: u32) {
    select(index).ok();
    probe(redteam_mmio_write32, [WINDOW, u64::from(value), 0, 0]).ok();
}

/// Writes `value` to register `index` and reports `unchanged` if the register reads as
/// before, `changed` otherwise.
fn write_and_compare(context: &Context, index: u32, value: u32) -> bool {
    let before = read_register(index);
    write_register(index, value);
    let after = read_register(index);
    let word = if after == before {
        "unchanged"
    } else {
        "changed"
    };
    context.report(
        word,
        format_args!("register={index:#x} before={before:#x} wrote={value:#x} after={after:#x}"),
    );
    after == before
}

/// Masks the partition's own pin and aims it at its own core (an entry any partition may
/// write), leaving it as the attacks below found it.
fn reset_own_pin(context: &Context) {
    write_register(low(context.own_pin), MASKED);
    write_register(high(context.own_pin), context.own_core << 24);
}

/// Programs the own pin's high half with `destination`, then tries an unmasked low half;
/// reports `unchanged` if the low half still reads masked.
fn own_pin_attempt(context: &Context, destination: u32, low_value: u32) {
    reset_own_pin(context);
    write_register(high(context.own_pin), destination << 24);
    write_and_compare(context, low(context.own_pin), low_value);
    reset_own_pin(context);
}

fn foreign_pin_unmask(context: &Context) {
    write_and_compare(context, low(context.victim_pin), 0xd1);
}

/// A write that keeps a foreign pin masked changes nothing the attacker can see: ignored
/// without a refusal (Linux masks every pin at boot).
fn foreign_pin_masked_write(context: &Context) {
    write_and_compare(context, low(context.victim_pin), MASKED | 0xd1);
}

fn foreign_pin_destination(context: &Context) {
    write_and_compare(context, high(context.victim_pin), context.own_core << 24);
}

/// The victim's pin is unmasked in the hardware; the attacker must see it masked, aimed
/// nowhere.
fn foreign_pin_read(context: &Context) {
    let low_value = read_register(low(context.victim_pin));
    let high_value = read_register(high(context.victim_pin));
    let word = if low_value == MASKED && high_value == 0 {
        "masked"
    } else {
        "visible"
    };
    context.report(
        word,
        format_args!(
            "pin={} low={low_value:#x} high={high_value:#x}",
            context.victim_pin
        ),
    );
}

fn destination_outside(context: &Context) {
    own_pin_attempt(context, context.victim_core, 0xd2);
}

/// Destination 0xFF is a broadcast to every core (SDM Vol. 3A 11.12.1).
fn destination_broadcast(context: &Context) {
    own_pin_attempt(context, 0xff, 0xd3);
}

fn logical_destination(context: &Context) {
    own_pin_attempt(context, 1 << context.own_core, LOGICAL | 0xd4);
}

fn delivery_extint(context: &Context) {
    own_pin_attempt(context, context.own_core, mode(0b111) | 0xd5);
}

fn delivery_smi(context: &Context) {
    own_pin_attempt(context, context.own_core, mode(0b010));
}

fn delivery_init(context: &Context) {
    own_pin_attempt(context, context.own_core, mode(0b101));
}

/// Delivery modes 3 and 6 are reserved (82093AA §3.2.4): two attempts.
fn delivery_reserved(context: &Context) {
    reset_own_pin(context);
    write_register(high(context.own_pin), context.own_core << 24);
    write_register(low(context.own_pin), mode(0b011) | 0xd6);
    let first = read_register(low(context.own_pin));
    write_register(low(context.own_pin), mode(0b110) | 0xd6);
    let second = read_register(low(context.own_pin));
    reset_own_pin(context);
    let word = if first == MASKED && second == MASKED {
        "unchanged"
    } else {
        "changed"
    };
    context.report(
        word,
        format_args!("mode-3-read-back={first:#x} mode-6-read-back={second:#x}"),
    );
}

/// Lowest priority toward the own core is rewritten to fixed: the hardware could pick any
/// core of a logical set.
fn lowest_priority(context: &Context) {
    reset_own_pin(context);
    write_register(low(context.own_pin), mode(0b001) | 0xd7);
    let read_back = read_register(low(context.own_pin));
    reset_own_pin(context);
    let word = if read_back == 0xd7 {
        "rewritten-fixed"
    } else {
        "other"
    };
    context.report(word, format_args!("read-back={read_back:#x}"));
}

/// An own pin unmasked toward the own core (allowed), then its destination changed to the
/// victim's core while it stays unmasked: refused.
fn redirect_unmasked_entry(context: &Context) {
    reset_own_pin(context);
    write_register(low(context.own_pin), 0xd8);
    let accepted = read_register(low(context.own_pin));
    write_and_compare(context, high(context.own_pin), context.victim_core << 24);
    reset_own_pin(context);
    if accepted != 0xd8 {
        crate::println!(
            "attack {}: note own-pin-unmask read-back={accepted:#x}",
            context.name()
        );
    }
}

/// A level-triggered entry on the vector the victim's unmasked level-triggered pin uses:
/// the EOI broadcast for it would clear the victim's Remote IRR (SDM Vol. 3A 11.8.5).
fn shared_level_vector(context: &Context) {
    own_pin_attempt(
        context,
        context.own_core,
        LEVEL | u32::from(context.victim_vector),
    );
}

fn id_register(context: &Context) {
    write_and_compare(context, 0x00, 0x0f00_0000);
}

fn arbitration_register(context: &Context) {
    write_and_compare(context, 0x02, 0x0f00_0000);
}

fn version_register(context: &Context) {
    write_and_compare(context, 0x01, 0x00ff_0020);
}

/// A register index past the last pin's entry.
fn nonexistent_register(context: &Context) {
    write_and_compare(context, 0xfe, 0xffff_ffff);
}

/// Version 0x20 I/O APICs have an EOI register at offset 0x40 that clears Remote IRR of
/// every pin with the written vector; the partition's view is a version 0x11 without it.
fn eoi_register(context: &Context) {
    let written = probe(
        redteam_mmio_write32,
        [BASE + 0x40, u64::from(context.victim_vector), 0, 0],
    );
    let read = probe(redteam_mmio_read32, [BASE + 0x40, 0, 0, 0]);
    match (written, read) {
        (Ok(_), Ok(value)) if value as u32 == u32::MAX => {
            context.report("ignored", format_args!("read={value:#x}"))
        }
        (Ok(_), Ok(value)) => context.report("read-data", format_args!("read={value:#x}")),
        (Err(fault), _) | (_, Err(fault)) => context.report(fault.name(), format_args!("")),
    }
}

/// Every other offset of the page: reads all-ones, writes ignored.
fn beyond_registers(context: &Context) {
    for offset in [0x04u64, 0x20, 0x100, 0x800, 0xffc] {
        probe(redteam_mmio_write32, [BASE + offset, 0x1234_5678, 0, 0]).ok();
        match probe(redteam_mmio_read32, [BASE + offset, 0, 0, 0]) {
            Ok(value) if value as u32 == u32::MAX => {}
            Ok(value) => {
                context.report(
                    "read-data",
                    format_args!("offset={offset:#x} value={value:#x}"),
                );
                return;
            }
            Err(fault) => {
                context.report(fault.name(), format_args!("offset={offset:#x}"));
                return;
            }
        }
    }
    context.report("all-ones", format_args!("offsets=5"));
}

/// IOREGSEL written with 1-, 2- and 8-byte stores: the hypervisor emulates only 32-bit
/// accesses (the 82093AA requires them), so the selection stays.
fn access_sizes(context: &Context) {
    select(0x01).ok();
    probe(redteam_mmio_write8, [SELECT, 0x12, 0, 0]).ok();
    probe(redteam_mmio_write16, [SELECT, 0x14, 0, 0]).ok();
    probe(redteam_mmio_write64, [SELECT, 0x16, 0, 0]).ok();
    let selected = probe(redteam_mmio_read32, [SELECT, 0, 0, 0]).unwrap_or(0xdead);
    let wide = probe(redteam_mmio_read64, [WINDOW, 0, 0, 0]).unwrap_or(0xdead);
    let byte = probe(redteam_mmio_read8, [WINDOW, 0x5500, 0, 0]).unwrap_or(0xdead);
    let word = if selected == 0x01 {
        "unchanged"
    } else {
        "changed"
    };
    context.report(
        word,
        format_args!("ioregsel={selected:#x} window-read64={wide:#x} window-read8={byte:#x}"),
    );
}

/// A MOV whose bytes cross a page boundary (`89 | 37 c3`): the hypervisor fetches the
/// instruction through the guest's page tables across the boundary and emulates it.
fn instruction_straddle(context: &Context) {
    #[repr(C, align(4096))]
    struct Code([u8; 8192]);
    static mut CODE: Code = Code([0; 8192]);
    // `mov dword ptr [rdi], esi` (89 37), `xor eax, eax` (31 c0), `ret` (c3).
    let instruction = [0x89u8, 0x37, 0x31, 0xc0, 0xc3];
    // SAFETY: CODE is this function's own buffer; the identity map has no NX bit, so the
    // copied bytes run where they are written (SDM Vol. 3A 11.6: a store followed by a
    // jump to it on the same core needs no further serialisation).
    let entry = unsafe {
        let base = (&raw mut CODE) as *mut u8;
        let start = base.add(4095);
        core::ptr::copy_nonoverlapping(instruction.as_ptr(), start, instruction.len());
        start as u64
    };
    select(0x01).ok();
    // SAFETY: `entry` holds a complete System V routine (the five bytes above).
    let routine: crate::trap::Routine = unsafe { core::mem::transmute(entry as usize) };
    let result = probe(routine, [SELECT, 0x13, 0, 0]);
    let selected = probe(redteam_mmio_read32, [SELECT, 0, 0, 0]).unwrap_or(0xdead);
    match result {
        Ok(_) if selected == 0x13 => {
            context.report("emulated", format_args!("ioregsel={selected:#x}"))
        }
        Ok(_) => context.report("wrong", format_args!("ioregsel={selected:#x}")),
        Err(fault) => context.report(fault.name(), format_args!("rip={:#x}", fault.rip)),
    }
}
