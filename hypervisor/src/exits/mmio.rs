//! The trapped-MMIO path shared by the emulated devices (the IOAPIC page, the virtual ECAM
//! window): the faulting MOV is fetched through the guest's page tables and decoded, and its
//! address is checked against the fault, so that only an access wholly inside the trapped
//! page that begins at the faulting byte is emulated (docs/redteam.md, "MMIO accesses that
//! span pages"). Anything else is contained.

use super::{Containment, CoreContext, Flow, PartitionControl};
use crate::arch::guest_memory;
use crate::virt::VirtualCpu;
use tessera_policy::guest_walk::{self, WalkAccess};
use tessera_policy::mmio_decode::{self, AccessMismatch, MmioInstruction, MAX_LENGTH};

/// The containment details for one emulated device.
pub struct TrapDetails {
    pub undecodable: &'static str,
    pub begins_elsewhere: &'static str,
    pub crosses_page: &'static str,
}

/// Decodes the instruction that faulted at `guest_physical`: the instruction and the
/// access's offset in its page; or the partition is contained and `Err(Flow::Stop)`.
pub fn decode_trapped(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
    guest_physical: u64,
    details: &TrapDetails,
) -> Result<(MmioInstruction, u64), Flow> {
    let instruction_context = vcpu.instruction_context();
    let mut bytes = [0u8; MAX_LENGTH];
    let read_memory = |address| guest_memory::read_u64(context.partition, address);
    // An instruction near the end of a page may be shorter than 15 bytes: fetch what can be.
    let fetched = (1..=MAX_LENGTH).rev().find(|&length| {
        guest_walk::read_guest_bytes(
            &instruction_context.paging,
            instruction_context.rip_linear,
            WalkAccess::FETCH,
            &mut bytes[..length],
            read_memory,
        )
        .is_ok()
    });
    let decoded = fetched
        .and_then(|length| mmio_decode::decode(&bytes[..length], instruction_context.mode).ok());
    let contain = |detail| {
        control.contain(
            context,
            Containment {
                reason: "mmio-decode",
                address: guest_physical,
                detail,
                rip: vcpu.rip(),
            },
        );
        Flow::Stop
    };
    let Some(instruction) = decoded else {
        return Err(contain(details.undecodable));
    };
    let next_rip = vcpu.rip().wrapping_add(u64::from(instruction.length));
    let linear = instruction.linear_address(
        instruction_context.mode,
        |register| vcpu.register_number(register),
        next_rip,
        &instruction_context.segment_bases,
    );
    match mmio_decode::locate(linear, instruction.size, guest_physical) {
        Ok(offset) => Ok((instruction, offset)),
        Err(mismatch) => {
            control.contain(
                context,
                Containment {
                    reason: "mmio-split",
                    address: guest_physical,
                    detail: match mismatch {
                        AccessMismatch::Elsewhere => details.begins_elsewhere,
                        AccessMismatch::CrossesPage => details.crosses_page,
                    },
                    rip: vcpu.rip(),
                },
            );
            Err(Flow::Stop)
        }
    }
}
