//! The IOAPIC as a partition sees it: the page is trapped (it is in no stage-2 table), the
//! faulting MOV is fetched through the guest's page tables and decoded, its address is
//! checked against the fault, and the access goes through the partition's view
//! (tessera_policy::ioapic), which lets a partition program only the pins its devices own,
//! toward its own cores.
//!
//! The IOAPIC and the virtual ECAM window of a partition that owns PCI functions
//! (`super::pci`) are the only MMIO the hypervisor emulates, both through the decoding of
//! `super::mmio`: every other page outside a partition's memory (the xAPIC page included:
//! partitions run their local APIC in x2APIC mode) is contained as a nested page fault
//! without decoding. This is the only path on which a decoded access reaches a device
//! register; the ECAM path reaches configuration space only through the filter.

use super::mmio::{self, TrapDetails};
use super::{CoreContext, Counter, Flow, PartitionControl};
use crate::arch::ioapic;
use crate::table::{PartitionIndex, MACHINE, PARTITION_COUNT};
use crate::virt::VirtualCpu;
use core::sync::atomic::{AtomicU16, Ordering};
use spin::Mutex;
use tessera_policy::ioapic::{
    IoapicView, RedirectionEntryLow, WindowWrite, IOREGSEL_OFFSET, IOWIN_OFFSET,
};
use tessera_policy::mmio_decode::MmioAccess;

/// Each partition's view (its IOREGSEL value), shared by its cores.
static VIEWS: [Mutex<IoapicView>; PARTITION_COUNT] =
    [const { Mutex::new(IoapicView::new()) }; PARTITION_COUNT];

/// Whose table pins each partition holds: [`OWN_PINS`] (its own, from the table),
/// [`NO_PINS`] (handed to its standby) or the index of the primary it took over from. One
/// word per partition, sized by the table; it changes only at a takeover, which the
/// standby's boot core carries out while it is out of the guest and every core of the
/// primary has stopped (runtime/health.rs), so the only readers that could race with the
/// change — the two partitions' own IOAPIC exits — cannot run during it.
static PINS_FROM: [AtomicU16; PARTITION_COUNT] =
    [const { AtomicU16::new(OWN_PINS) }; PARTITION_COUNT];
const OWN_PINS: u16 = u16::MAX;
const NO_PINS: u16 = u16::MAX - 1;

/// The IOAPIC pins `partition` holds now: its table's, none after it was taken over, or
/// its primary's after a takeover.
pub fn held_pins(partition: PartitionIndex) -> &'static [u8] {
    match PINS_FROM[partition.0].load(Ordering::Acquire) {
        OWN_PINS => partition.partition().irq_pins,
        NO_PINS => &[],
        primary => MACHINE
            .partitions
            .get(usize::from(primary))
            .map_or(&[], |primary| primary.irq_pins),
    }
}

/// Moves the pins `primary` (the failed member of a pair) holds to `standby` (a takeover): ownership first, then each
/// entry re-targeted to `standby_boot_core` and masked (`tessera_policy::ioapic::
/// handed_over_entry`), under the IOAPIC lock. Returns how many pins moved.
pub fn hand_over_pins(
    primary: PartitionIndex,
    standby: PartitionIndex,
    standby_boot_core: u32,
) -> usize {
    let pins = held_pins(primary);
    // Whose table pins move: the giver's own, or those it took over earlier (a pair that
    // swaps roles hands the same pins back and forth, `rejoin-as-standby`).
    let owner = match PINS_FROM[primary.0].load(Ordering::Acquire) {
        OWN_PINS => primary.0 as u16,
        other => other,
    };
    PINS_FROM[primary.0].store(NO_PINS, Ordering::Release);
    let taken = if owner == standby.0 as u16 {
        OWN_PINS
    } else {
        owner
    };
    PINS_FROM[standby.0].store(taken, Ordering::Release);
    ioapic::with(|registers| {
        for &pin in pins {
            let low = tessera_policy::ioapic::redirection_low(pin);
            let high = tessera_policy::ioapic::redirection_high(pin);
            match tessera_policy::ioapic::handed_over_entry(registers.read(low), standby_boot_core)
            {
                Some((new_low, new_high)) => {
                    // Masked and edge-triggered first, so the entry never points anywhere
                    // half-written, and a Remote IRR left set by an interrupt the failed
                    // partner never acknowledged is cleared: switching a level-triggered
                    // entry to edge clears it, the way Linux's `__eoi_ioapic_pin` EOIs an
                    // I/O APIC without an EOI register (82093AA §3.2.4 leaves Remote IRR
                    // undefined for edge-triggered entries; QEMU's model clears it).
                    registers.write(low, RedirectionEntryLow::MASKED.bits());
                    registers.write(high, new_high);
                    registers.write(low, new_low);
                }
                None => registers.write(low, RedirectionEntryLow::MASKED.bits()),
            }
        }
    });
    pins.len()
}

/// Masks every pin, so no entry the firmware left unmasked escapes the checks below, and
/// checks the table's pin count against the hardware's (82093AA §3.2.2: version register
/// bits 23:16 = highest redirection entry).
pub fn init() -> Result<(), (u8, u8)> {
    let Some(table) = MACHINE.ioapic else {
        return Ok(());
    };
    ioapic::init(table.base);
    ioapic::with(|registers| {
        let hardware_pins = ((registers.read(1) >> 16) & 0xFF) as u8 + 1;
        if table.pins > hardware_pins {
            return Err((table.pins, hardware_pins));
        }
        for pin in 0..table.pins {
            let low = tessera_policy::ioapic::redirection_low(pin);
            registers.write(low, RedirectionEntryLow::MASKED.bits());
        }
        Ok(())
    })
    .unwrap_or(Ok(()))
}

/// Masks the given pins (a partition's, before it restarts).
pub fn mask_pins(pins: &[u8]) {
    ioapic::with(|registers| {
        for &pin in pins {
            let low = tessera_policy::ioapic::redirection_low(pin);
            registers.write(low, RedirectionEntryLow::MASKED.bits());
        }
    });
}

/// Returns the partition's pins to their power-on redirection entries: masked, vector 0,
/// destination 0 (both halves; 82093AA IOAPIC datasheet §3.2.4). For a cold restart.
pub fn reset_pins(pins: &[u8]) {
    ioapic::with(|registers| {
        for &pin in pins {
            let low = tessera_policy::ioapic::redirection_low(pin);
            registers.write(low, RedirectionEntryLow::MASKED.bits());
            registers.write(tessera_policy::ioapic::redirection_high(pin), 0);
        }
    });
}

/// Whether a guest-physical address lies in the IOAPIC page.
pub fn covers(guest_physical: u64) -> bool {
    MACHINE
        .ioapic
        .is_some_and(|ioapic| guest_physical.wrapping_sub(ioapic.base) < 0x1000)
}

/// Emulates the MOV that touched the IOAPIC page at `guest_physical`.
pub fn handle(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
    guest_physical: u64,
) -> Flow {
    let Some(table) = MACHINE.ioapic else {
        return Flow::Resume;
    };
    let (instruction, offset) = match mmio::decode_trapped(
        vcpu,
        context,
        control,
        guest_physical,
        &TrapDetails {
            undecodable: "IOAPIC access by an instruction the hypervisor cannot decode",
            begins_elsewhere: "IOAPIC access that begins outside the IOAPIC page",
            crosses_page: "IOAPIC access that runs past the IOAPIC page",
        },
    ) {
        Ok(decoded) => decoded,
        Err(flow) => return flow,
    };
    let owned_pins = held_pins(context.partition_index);
    let mut view = VIEWS[context.partition_index.0].lock();
    match instruction.access {
        MmioAccess::Load { register, .. } => {
            let value = match (offset, instruction.size) {
                (IOREGSEL_OFFSET, 4) => view.read_select(),
                (IOWIN_OFFSET, 4) => ioapic::with(|registers| {
                    view.read_window(owned_pins, table.pins, |index| registers.read(index))
                })
                .unwrap_or(u32::MAX),
                // Only an aligned 32-bit access to IOREGSEL or IOWIN is a register access
                // (82093AA §3.0: the registers are accessed as dwords); anything else inside
                // the page, misaligned, narrower or wider, reads as if nothing were there.
                _ => u32::MAX,
            };
            let old = vcpu.register_number(register);
            if let Some(new) = instruction.load_result(old, u64::from(value)) {
                vcpu.set_register_number(register, new);
            }
        }
        MmioAccess::Store { .. } => {
            let value = instruction
                .store_value(|register| vcpu.register_number(register))
                .unwrap_or(0) as u32;
            match (offset, instruction.size) {
                (IOREGSEL_OFFSET, 4) => view.write_select(value),
                (IOWIN_OFFSET, 4) => {
                    let outcome = ioapic::with(|registers| {
                        let outcome = view.write_window(
                            value,
                            owned_pins,
                            context.partition.cpus,
                            table.pins,
                            |index| registers.read(index),
                        );
                        if let WindowWrite::Hardware { register, value } = outcome {
                            registers.write(register, value);
                        }
                        outcome
                    });
                    if let Some(WindowWrite::Refused(refusal)) = outcome {
                        control.count(context, Counter::RefusedIoapicWrite, 1);
                        if control.may_log(context) {
                            log::info!(
                                "refused: partition={} core={} IOAPIC write {:?}",
                                context.partition.name,
                                context.apic_id,
                                refusal
                            );
                        }
                    }
                }
                // As for loads: other offsets and sizes are ignored.
                _ => {}
            }
        }
    }
    vcpu.set_rip(vcpu.rip() + u64::from(instruction.length));
    Flow::Resume
}
