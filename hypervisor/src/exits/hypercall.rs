//! The hypercall handler: decodes the call, checks the caller's capability, acts.
//! See tessera_abi::hypercall for the interface.

use super::{CoreContext, Counter, Flow, PartitionControl};
use crate::arch::x2apic;
use crate::table::{ApicId, PartitionIndex, MACHINE};
use crate::virt::{Exception, Register, VirtualCpu};
use tessera_abi::hypercall::{Call, Error, PartitionState};
use tessera_abi::table::{Capability, MappingKind};

/// VMMCALL and VMCALL are both three bytes long.
const INSTRUCTION_LENGTH: u64 = 3;

fn has(context: &CoreContext, capability: Capability) -> bool {
    context.partition.capabilities.contains(&capability)
}

pub fn handle(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
) -> Flow {
    let number = vcpu.register(Register::Rax);
    let argument = vcpu.register(Register::Rdi);
    let call = Call::from_number(number);
    // From guest user mode only the calls the table grants there (`user-hypercalls`); any
    // other VMCALL/VMMCALL at CPL > 0 is #UD, as on a processor without virtualization
    // (KVM answers the same way), so no process can stop, reset or power off a machine.
    if vcpu.privilege_level() != 0
        && call.is_none_or(|call| context.partition.user_hypercalls & call.bit() == 0)
    {
        control.count(context, Counter::RefusedUserHypercall, 1);
        vcpu.inject_exception(Exception::InvalidOpcode);
        return Flow::Resume;
    }
    vcpu.skip_instruction(INSTRUCTION_LENGTH);
    let result: i64 = match call {
        Some(Call::StopSelf) => {
            control.stop_by_request(context, argument, "stop-self");
            return Flow::Stop;
        }
        Some(Call::PowerOff) => {
            if has(context, Capability::Power) {
                control.power_off(context.partition.name);
            }
            if control.may_log(context) {
                log::info!(
                    "refused: partition={} power-off without the power capability",
                    context.partition.name
                );
            }
            Error::Denied as i64
        }
        Some(Call::PartitionCount) => MACHINE.partitions.len() as i64,
        Some(Call::PartitionState) => match u16::try_from(argument) {
            Ok(index) if usize::from(index) < MACHINE.partitions.len() => {
                if PartitionIndex(usize::from(index)) == context.partition_index
                    || has(context, Capability::Stats(index))
                {
                    control.partition_state(PartitionIndex(usize::from(index))) as i64
                } else {
                    Error::Denied as i64
                }
            }
            _ => Error::InvalidArgument as i64,
        },
        Some(Call::RingDoorbell) => match member_channel(context, argument) {
            // A waiting standby (or a failed member after the takeover) does not hold a
            // channel that moves with its pair's devices.
            Some(channel) if !control.holds_channel(context.partition_index, channel) => {
                Error::Denied as i64
            }
            Some(channel) if control.doorbell_allowed(context, channel) => {
                ring_doorbell(context, control, channel)
            }
            Some(_) => {
                control.count(context, Counter::DroppedDoorbell, 1);
                Error::OverBudget as i64
            }
            None => Error::Denied as i64,
        },
        Some(Call::ChannelAddress) => match member_channel(context, argument) {
            Some(channel) => context
                .partition
                .memory
                .iter()
                .find(|mapping| mapping.kind == MappingKind::Channel(channel as u16))
                .map_or(Error::InvalidArgument as i64, |mapping| {
                    mapping.guest as i64
                }),
            None => Error::Denied as i64,
        },
        Some(Call::ChannelVector) => match member_channel(context, argument) {
            Some(channel) => i64::from(MACHINE.channels[channel].doorbell_vector),
            None => Error::Denied as i64,
        },
        Some(Call::OwnExitCount) => control.total_exits(context) as i64,
        Some(Call::DeclareFatal) => {
            if !control.declare_fatal(context, argument) {
                return Flow::Stop;
            }
            0
        }
        Some(Call::Heartbeat) => control.heartbeat(context) as i64,
        Some(Call::StandbyStatus) => {
            if control.is_waiting_standby(context) {
                tessera_abi::hypercall::STANDBY_WAITING
            } else {
                tessera_abi::hypercall::STANDBY_ACTIVE
            }
        }
        Some(Call::HealthLog) => match u16::try_from(argument) {
            Ok(index) if usize::from(index) < MACHINE.partitions.len() => {
                if PartitionIndex(usize::from(index)) == context.partition_index
                    || has(context, Capability::Health(index))
                {
                    control
                        .health_log(
                            PartitionIndex(usize::from(index)),
                            vcpu.register(Register::Rsi),
                        )
                        .map_or(Error::InvalidArgument as i64, |count| count as i64)
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

/// The channel with index `argument` if the caller is one of its members.
fn member_channel(context: &CoreContext, argument: u64) -> Option<usize> {
    let index = usize::try_from(argument).ok()?;
    let channel = MACHINE.channels.get(index)?;
    channel
        .members
        .contains(&(context.partition_index.0 as u16))
        .then_some(index)
}

/// Raises the channel's vector on the boot core of every other member that runs and holds
/// the channel (of a pair that moves it, only the member holding the pair's devices): one
/// fixed, physical-destination IPI each (Intel SDM vol. 3 §11.12.9). The destination is
/// chosen here, from the table, never by the guest.
#[inline(always)]
fn ring_doorbell(context: &CoreContext, control: &impl PartitionControl, index: usize) -> i64 {
    let channel = &MACHINE.channels[index];
    let mut signalled = 0;
    for &member in channel.members {
        let member = PartitionIndex(usize::from(member));
        if member == context.partition_index
            || control.partition_state(member) != PartitionState::Running
            || !control.holds_channel(member, index)
        {
            continue;
        }
        let core = ApicId(MACHINE.partitions[member.0].cpus[0]);
        x2apic::send_fixed(core, channel.doorbell_vector);
        signalled += 1;
    }
    signalled
}
