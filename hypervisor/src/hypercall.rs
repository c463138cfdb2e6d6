//! The hypercall handler: decodes the call, checks the caller's capability, acts.
//! See tessera_abi::hypercall for the interface.

use crate::partition;
use crate::table::MACHINE;
use crate::virt::{CoreContext, Flow, Register, VirtualCpu};
use tessera_abi::hypercall::{Call, Error};
use tessera_abi::table::Capability;

/// VMMCALL and VMCALL are both three bytes long.
const INSTRUCTION_LENGTH: u64 = 3;

fn has(context: &CoreContext, capability: Capability) -> bool {
    context.partition.capabilities.contains(&capability)
}

pub fn handle(vcpu: &mut impl VirtualCpu, context: &CoreContext) -> Flow {
    let number = vcpu.register(Register::Rax);
    let argument = vcpu.register(Register::Rdi);
    vcpu.skip_instruction(INSTRUCTION_LENGTH);
    let result: i64 = match Call::from_number(number) {
        Some(Call::StopSelf) => {
            partition::stop_by_request(context, argument);
            return Flow::Stop;
        }
        Some(Call::PowerOff) => {
            if has(context, Capability::Power) {
                crate::power::power_off(context.partition.name);
            }
            log::info!(
                "refused: partition={} power-off without the power capability",
                context.partition.name
            );
            Error::Denied as i64
        }
        Some(Call::PartitionCount) => MACHINE.partitions.len() as i64,
        Some(Call::PartitionState) => match u16::try_from(argument) {
            Ok(index) if usize::from(index) < MACHINE.partitions.len() => {
                if usize::from(index) == context.partition_index
                    || has(context, Capability::Stats(index))
                {
                    partition::state(usize::from(index)) as i64
                } else {
                    Error::Denied as i64
                }
            }
            _ => Error::InvalidArgument as i64,
        },
        None => Error::UnknownCall as i64,
    };
    vcpu.set_register(Register::Rax, result as u64);
    Flow::Resume
}
