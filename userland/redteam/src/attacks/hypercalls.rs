//! Hypercall attacks (tessera_abi::hypercall): every number with random arguments from the
//! kernel (unknown → -1, refused → -2, bad argument → -3), every number from ring 3 (#UD
//! unless the table grants the call to user mode; StopSelf and PowerOff never), the
//! capability checks, the instruction of the other vendor, and a doorbell storm beyond the
//! channel's `doorbell-budget` (the excess dropped, -4, and counted).

use tessera_abi::hypercall::{Call, Error};
use tessera_guest::processor::{self, Vendor};

use super::{Attack, Context};
use crate::instructions::*;
use crate::trap::{probe, probe_user, Routine, UserOutcome};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "hypercall-fuzz-kernel",
        run: fuzz_kernel,
    },
    Attack {
        name: "hypercall-fuzz-user",
        run: fuzz_user,
    },
    Attack {
        name: "hypercall-user-stop-self",
        run: user_stop_self,
    },
    Attack {
        name: "hypercall-user-power-off",
        run: user_power_off,
    },
    Attack {
        name: "hypercall-power-off-denied",
        run: power_off_denied,
    },
    Attack {
        name: "hypercall-partition-state-denied",
        run: partition_state_denied,
    },
    Attack {
        name: "hypercall-foreign-channel",
        run: foreign_channel,
    },
    Attack {
        name: "hypercall-other-vendor-instruction",
        run: other_vendor_instruction,
    },
    Attack {
        name: "doorbell-storm",
        run: doorbell_storm,
    },
];

/// Call numbers tried: every one below this, plus a few with high bits set.
const FUZZ_LIMIT: u64 = 64;
const FUZZ_HIGH_NUMBERS: [u64; 4] = [1 << 32 | 4, 1 << 63 | 8, u64::MAX, 0x8000_0000];
/// Rings of the doorbell storm.
const STORM_RINGS: u64 = 400;

/// The hypercall routine of this vendor (kernel and ring 3).
fn routines(context: &Context) -> (Routine, Routine) {
    match context.vendor {
        Vendor::Amd => (redteam_vmmcall, redteam_user_vmmcall),
        Vendor::Intel | Vendor::Other => (redteam_vmcall, redteam_user_vmcall),
    }
}

/// xorshift64*, seeded from the TSC: a different argument set every run.
struct Random(u64);

impl Random {
    fn new() -> Random {
        Random(processor::rdtsc() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random argument no table index can equal (bit 40 set).
    fn argument(&mut self) -> u64 {
        self.next() | 1 << 40
    }
}

/// Whether `result` is what the documented interface gives a partition without capabilities
/// and outside every channel but 0, for `number` with out-of-range arguments.
fn kernel_result_is_documented(number: u64, result: i64) -> bool {
    let unknown = Error::UnknownCall as i64;
    let denied = Error::Denied as i64;
    let invalid = Error::InvalidArgument as i64;
    match Call::from_number(number) {
        None => result == unknown,
        Some(Call::StopSelf) => false,
        Some(Call::PowerOff) => result == denied,
        Some(Call::PartitionState) => result == invalid,
        Some(Call::PartitionCount) => result >= 1,
        Some(Call::RingDoorbell | Call::ChannelAddress | Call::ChannelVector) => result == denied,
        Some(Call::OwnExitCount) => result >= 0,
        Some(Call::DeclareFatal) => false,
        // No watchdog in the red-team table: the period is 0.
        Some(Call::Heartbeat) => result == 0,
        Some(Call::HealthLog) => result == invalid,
        // No standby pair in the red-team table: every partition holds its devices.
        Some(Call::StandbyStatus) => result == tessera_abi::hypercall::STANDBY_ACTIVE,
    }
}

/// Every call number but StopSelf and DeclareFatal (which would end the batch) with random
/// arguments.
fn fuzz_kernel(context: &Context) {
    let (kernel, _) = routines(context);
    let mut random = Random::new();
    let mut calls = 0;
    let numbers = (0..FUZZ_LIMIT)
        .chain(FUZZ_HIGH_NUMBERS)
        .filter(|&number| number != Call::StopSelf as u64 && number != Call::DeclareFatal as u64);
    for number in numbers {
        let arguments = [
            number,
            random.argument(),
            random.argument(),
            random.argument(),
        ];
        calls += 1;
        match probe(kernel, arguments) {
            Ok(result) if kernel_result_is_documented(number, result as i64) => {}
            Ok(result) => {
                context.report(
                    "undocumented-result",
                    format_args!("number={number:#x} result={}", result as i64),
                );
                return;
            }
            Err(fault) => {
                context.report(fault.name(), format_args!("number={number:#x}"));
                return;
            }
        }
    }
    context.report("documented", format_args!("calls={calls}"));
}

/// The call numbers the table grants to user mode (`user-granted=4,8` on the command line,
/// the same calls as the table's `user-hypercalls`).
fn granted(context: &Context, number: u64) -> bool {
    context
        .command_line
        .value("user-granted")
        .is_some_and(|list| {
            list.split(',')
                .any(|item| tessera_guest::command_line::parse_number(item) == Some(number))
        })
}

/// Every call number from ring 3, StopSelf and PowerOff included: #UD unless granted.
fn fuzz_user(context: &Context) {
    let (_, user) = routines(context);
    let mut random = Random::new();
    let mut undefined = 0;
    let mut returned = 0;
    for number in (0..FUZZ_LIMIT).chain(FUZZ_HIGH_NUMBERS) {
        let arguments = [
            number,
            random.argument(),
            random.argument(),
            random.argument(),
        ];
        let outcome = probe_user(user, arguments, 0);
        let expected_return = granted(context, number);
        match outcome {
            UserOutcome::Faulted(fault) if fault.vector == 6 && !expected_return => undefined += 1,
            UserOutcome::Returned(result)
                if expected_return && kernel_result_is_documented(number, result as i64) =>
            {
                returned += 1
            }
            UserOutcome::Faulted(fault) => {
                undefined += u64::from(fault.vector == 6);
                context.report(
                    fault.name(),
                    format_args!(
                        "number={number:#x} granted={expected_return} refused-user-hypercalls={undefined}"
                    ),
                );
                return;
            }
            UserOutcome::Returned(result) => {
                context.report(
                    "returned",
                    format_args!(
                        "number={number:#x} result={} granted={expected_return} refused-user-hypercalls={undefined}",
                        result as i64
                    ),
                );
                return;
            }
        }
    }
    context.report(
        "ud",
        format_args!("granted-returned={returned} refused-user-hypercalls={undefined}"),
    );
}

/// One call from ring 3; reports `ud` or what came back.
fn user_call(context: &Context, call: Call) {
    let (_, user) = routines(context);
    match probe_user(user, [call as u64, 0, 0, 0], 0) {
        UserOutcome::Faulted(fault) if fault.vector == 6 => {
            context.report("ud", format_args!("refused-user-hypercalls=1"))
        }
        UserOutcome::Faulted(fault) => context.report(fault.name(), format_args!("")),
        UserOutcome::Returned(result) => {
            context.report("returned", format_args!("result={}", result as i64))
        }
    }
}

/// StopSelf from ring 3 would let any process stop the whole partition.
fn user_stop_self(context: &Context) {
    user_call(context, Call::StopSelf);
}

/// PowerOff from ring 3 would let any process switch the machine off (this partition has
/// no `power` capability either; the #UD comes first).
fn user_power_off(context: &Context) {
    user_call(context, Call::PowerOff);
}

/// One call from the kernel; reports `denied` for -2, else the result.
fn kernel_call(context: &Context, call: Call, argument: u64) {
    let (kernel, _) = routines(context);
    match probe(kernel, [call as u64, argument, 0, 0]) {
        Ok(result) if result as i64 == Error::Denied as i64 => {
            context.report("denied", format_args!("call={}", call.name()))
        }
        Ok(result) => context.report(
            "allowed",
            format_args!("call={} result={}", call.name(), result as i64),
        ),
        Err(fault) => context.report(fault.name(), format_args!("")),
    }
}

/// PowerOff without the `power` capability.
fn power_off_denied(context: &Context) {
    kernel_call(context, Call::PowerOff, 0);
}

/// The victim's state without `stats:victim`.
fn partition_state_denied(context: &Context) {
    kernel_call(context, Call::PartitionState, 0);
}

/// Ring, address and vector of channel 1, of which this partition is no member (and which
/// the red-team table does not even have).
fn foreign_channel(context: &Context) {
    let (kernel, _) = routines(context);
    for call in [
        Call::RingDoorbell,
        Call::ChannelAddress,
        Call::ChannelVector,
    ] {
        match probe(kernel, [call as u64, 1, 0, 0]) {
            Ok(result) if result as i64 == Error::Denied as i64 => {}
            other => {
                let result = other.map(|value| value as i64).unwrap_or(i64::MIN);
                context.report(
                    "allowed",
                    format_args!("call={} result={result}", call.name()),
                );
                return;
            }
        }
    }
    context.report("denied", format_args!("calls=3"));
}

/// VMCALL on AMD and VMMCALL on Intel are undefined instructions there (AMD APM Vol. 3
/// VMMCALL; Intel SDM Vol. 2: VMMCALL is not an Intel instruction): the hypervisor never
/// sees them.
fn other_vendor_instruction(context: &Context) {
    let routine: Routine = match context.vendor {
        Vendor::Amd => redteam_vmcall,
        Vendor::Intel | Vendor::Other => redteam_vmmcall,
    };
    let result = probe(routine, [Call::PartitionCount as u64, 0, 0, 0]);
    context.report(
        super::outcome_of(&result),
        format_args!("value={:#x}", result.unwrap_or(0)),
    );
}

/// Rings channel 0 [`STORM_RINGS`] times as fast as it can. The hypervisor accepts a burst
/// of a tenth of a second's budget and then the budget's rate (hypervisor/src/runtime/
/// partition.rs, `doorbell_allowed`), drops the rest with -4 and counts them.
fn doorbell_storm(context: &Context) {
    let (kernel, _) = routines(context);
    let started = processor::rdtsc();
    let mut accepted = 0u64;
    let mut dropped = 0u64;
    let mut other = None;
    for _ in 0..STORM_RINGS {
        match probe(kernel, [Call::RingDoorbell as u64, 0, 0, 0]) {
            Ok(result) if result as i64 == Error::OverBudget as i64 => dropped += 1,
            Ok(result) if (result as i64) >= 0 => accepted += 1,
            Ok(result) => {
                other.get_or_insert(result as i64);
            }
            Err(_) => {
                other.get_or_insert(i64::MIN);
            }
        }
    }
    let elapsed = processor::rdtsc().wrapping_sub(started);
    let hz = tessera_guest::time::tsc_hz().max(1);
    let budget = context.doorbell_budget;
    // Burst plus rate over the elapsed time, plus one for rounding at either end.
    let limit = (budget / 10).max(1) + budget.saturating_mul(elapsed) / hz + 1;
    let word = match other {
        Some(_) => "error",
        None if accepted <= limit && dropped > 0 => "dropped",
        None if dropped == 0 => "all-accepted",
        None => "over-budget",
    };
    context.report(
        word,
        format_args!(
            "accepted={accepted} limit={limit} elapsed-us={} dropped-doorbells={dropped} error={}",
            elapsed.saturating_mul(1_000_000) / hz,
            other.unwrap_or(0)
        ),
    );
}
