//! Control-register exits: MOV to CR0/CR4, CLTS, LMSW (VMX) and WRMSR to IA32_EFER (both
//! backends), performed as the processor performs them by `tessera_policy::control_registers`
//! — long-mode activation, the #GP cases, the PAE PDPTE load, the TLB flush — and loaded
//! into the vCPU.

use super::{CoreContext, Flow};
use crate::arch::{cpuid, guest_memory};
use crate::virt::{ControlWrite, Exception, VirtualCpu};
use tessera_policy::control_registers::{self, pae_pdpt_address, pae_pdpte_is_valid};

/// Performs `write` for the guest; `length` is the instruction's length (for backends that
/// do not report it). A write the processor would refuse gets #GP(0) and is not skipped.
pub fn handle(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    write: ControlWrite,
    length: u64,
) -> Flow {
    let state = vcpu.control_state();
    let supported = vcpu.supported_control_bits();
    let Ok(transition) = control_registers::write(&state, write, &supported) else {
        vcpu.inject_exception(Exception::GeneralProtection);
        return Flow::Resume;
    };
    let pae_pdptes = if transition.load_pae_pdptes {
        match read_pae_pdptes(context, transition.state.cr3) {
            Some(entries) => Some(entries),
            None => {
                vcpu.inject_exception(Exception::GeneralProtection);
                return Flow::Resume;
            }
        }
    } else {
        None
    };
    vcpu.load_control_state(&transition.state, pae_pdptes, transition.flush);
    vcpu.skip_instruction(length);
    Flow::Resume
}

/// The four PAE PDPTEs at CR3 (SDM vol. 3 §4.4.1), or None where the processor would raise
/// #GP: a present entry with reserved bits set, or a table outside the partition's memory.
fn read_pae_pdptes(context: &CoreContext, cr3: u64) -> Option<[u64; 4]> {
    let physical_address_bits = (cpuid::query(0x8000_0008, 0)[0] & 0xFF) as u8;
    let table = pae_pdpt_address(cr3);
    let mut entries = [0; 4];
    for (index, entry) in entries.iter_mut().enumerate() {
        *entry = guest_memory::read_u64(context.partition, table + 8 * index as u64)?;
        if !pae_pdpte_is_valid(*entry, physical_address_bits) {
            return None;
        }
    }
    Some(entries)
}
