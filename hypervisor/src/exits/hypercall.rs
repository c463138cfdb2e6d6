//! The hypercall handler: decodes the call, checks the caller's capability, acts.
//! See tessera_abi::hypercall for the interface.

use super::{CoreContext, Counter, Flow, PartitionControl};
use crate::arch::x2apic;
use crate::table::{ApicId, PartitionIndex, CHANNEL_COUNT, MACHINE, PARTITION_COUNT};
use crate::virt::{Exception, Register, VirtualCpu};
use tessera_abi::hypercall::{Call, Error, PartitionState};
use tessera_abi::table::{Capability, MappingKind};

/// VMMCALL and VMCALL are both three bytes long.
const INSTRUCTION_LENGTH: u64 = 3;

/// Handles a hypercall exit. Inlined into the exit dispatch: a RingDoorbell from guest
/// kernel mode takes the doorbell's fast path ([`ring_doorbell_first`]), every other call
/// the full handler.
#[inline(always)]
pub fn handle(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
) -> Flow {
    if vcpu.register(Register::Rax) == Call::RingDoorbell as u64 && vcpu.privilege_level() == 0 {
        return ring_doorbell_first(vcpu, context, control);
    }
    handle_call(vcpu, context, control)
}

/// The doorbell's fast path: the ring decided and its IPIs sent before the bookkeeping that
/// does not decide whether and where they go — the RIP advance past the VMCALL/VMMCALL and
/// the result in RAX come after the ICR writes. The ring's checks are the function the full
/// handler uses too ([`ring_doorbell`]); only their order against the bookkeeping differs,
/// which the guest cannot see (it resumes after all of it). A ring from user mode goes
/// through the full handler, which applies the user-mode rule first.
///
/// Why: in a ping-pong between two cores the time from the exit to the ICR write is on the
/// critical path of every round (docs/benchmarks.md, `doorbell_round_trip_instructions`).
#[inline(always)]
fn ring_doorbell_first(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
) -> Flow {
    let result = ring_doorbell(context, control, vcpu.register(Register::Rdi));
    vcpu.skip_instruction(INSTRUCTION_LENGTH);
    vcpu.set_register(Register::Rax, result as u64);
    Flow::Resume
}

/// Every hypercall but a RingDoorbell from kernel mode.
fn handle_call(
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
            if context.has(Capability::Power) {
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
                    || context.has(Capability::Stats(index))
                {
                    control.partition_state(PartitionIndex(usize::from(index))) as i64
                } else {
                    Error::Denied as i64
                }
            }
            _ => Error::InvalidArgument as i64,
        },
        // From kernel mode the fast path has answered it already; this is a ring from user
        // mode the table grants there.
        Some(Call::RingDoorbell) => ring_doorbell(context, control, argument),
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
                    || context.has(Capability::Health(index))
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

/// One member of a channel as a ring reaches it: the partition, and the ICR value that
/// raises the channel's vector on its boot core (fixed, physical destination, Intel SDM
/// vol. 3 §11.12.9). The destination comes from the table, never from the guest.
#[derive(Clone, Copy)]
struct DoorbellTarget {
    partition: PartitionIndex,
    icr: u64,
}

/// What a ring of one channel needs, computed from the partition table at compile time so
/// that the ring neither searches the member list nor looks up cores and vectors.
struct DoorbellRoute {
    /// Each partition's position among the channel's members (table order),
    /// [`NOT_A_MEMBER`] for a partition that is not one (the membership check of a ring).
    position: [u16; PARTITION_COUNT],
    member_count: usize,
    /// The members in table order, twice over: the peers of the member at position `p` are
    /// `ring_order[p + 1..p + member_count]` — the members after it, then those before it
    /// — one slice without the caller, so the ring loop neither compares every member
    /// with the caller nor walks the list twice.
    ring_order: [DoorbellTarget; 2 * CHANNEL_MEMBERS_MAX],
}

const NOT_A_MEMBER: u16 = u16::MAX;

/// The most members a channel of the table has.
const CHANNEL_MEMBERS_MAX: usize = {
    let mut most = 0;
    let mut channel = 0;
    while channel < MACHINE.channels.len() {
        let count = MACHINE.channels[channel].members.len();
        if count > most {
            most = count;
        }
        channel += 1;
    }
    most
};

/// Every channel's route, in table order.
static DOORBELL_ROUTES: [DoorbellRoute; CHANNEL_COUNT] = {
    const UNUSED: DoorbellTarget = DoorbellTarget {
        partition: PartitionIndex(0),
        icr: 0,
    };
    let mut routes = [const {
        DoorbellRoute {
            position: [NOT_A_MEMBER; PARTITION_COUNT],
            member_count: 0,
            ring_order: [UNUSED; 2 * CHANNEL_MEMBERS_MAX],
        }
    }; CHANNEL_COUNT];
    let mut channel = 0;
    while channel < MACHINE.channels.len() {
        let description = &MACHINE.channels[channel];
        let route = &mut routes[channel];
        let count = description.members.len();
        let mut position = 0;
        while position < count {
            let member = description.members[position] as usize;
            // The table validator guarantees each member is a partition with a core, and
            // appears once; both are checked again here, at compile time.
            assert!(route.position[member] == NOT_A_MEMBER && position < NOT_A_MEMBER as usize);
            route.position[member] = position as u16;
            let target = DoorbellTarget {
                partition: PartitionIndex(member),
                icr: x2apic::fixed_icr(
                    ApicId(MACHINE.partitions[member].cpus[0]),
                    description.doorbell_vector,
                ),
            };
            route.ring_order[position] = target;
            route.ring_order[count + position] = target;
            position += 1;
        }
        route.member_count = count;
        channel += 1;
    }
    routes
};

/// RingDoorbell of channel `argument` by the core's partition: Denied unless it is a member
/// holding the channel (of a pair that moves it, only the member holding the pair's
/// devices: a waiting standby, or a failed member after the takeover, does not);
/// OverBudget (counted) beyond the channel's budget; else raises the channel's vector on
/// the boot core of every other member that runs and holds the channel, one IPI each (the
/// members after the caller in table order, then those before it), and returns how many
/// it raised.
#[inline(always)]
fn ring_doorbell(context: &CoreContext, control: &impl PartitionControl, argument: u64) -> i64 {
    let caller = context.partition_index;
    let Some((index, route)) = usize::try_from(argument)
        .ok()
        .and_then(|index| Some((index, DOORBELL_ROUTES.get(index)?)))
    else {
        return Error::Denied as i64;
    };
    let position = route.position[caller.0];
    if position == NOT_A_MEMBER || !control.holds_channel(caller, index) {
        return Error::Denied as i64;
    }
    if !control.doorbell_allowed(context, index) {
        control.count(context, Counter::DroppedDoorbell, 1);
        return Error::OverBudget as i64;
    }
    let mut signalled = 0;
    let first_peer = usize::from(position) + 1;
    for target in &route.ring_order[first_peer..usize::from(position) + route.member_count] {
        if control.partition_state(target.partition) != PartitionState::Running
            || !control.holds_channel(target.partition, index)
        {
            continue;
        }
        x2apic::send_raw_inline(target.icr);
        signalled += 1;
    }
    signalled
}
