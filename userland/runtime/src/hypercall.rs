//! Hypercalls: the `tessera-abi` calls, issued with VMMCALL (AMD) or VMCALL (Intel).
//!
//! Register convention (see `tessera_abi::hypercall`): RAX = call number, RDI, RSI,
//! RDX = arguments, result in RAX (negative = `tessera_abi::hypercall::Error`). Which
//! instruction to use is decided once, from the CPUID vendor: the other one raises #UD
//! on the wrong vendor (outside a hypervisor that emulates it).

use core::sync::atomic::{AtomicU8, Ordering};

pub use tessera_abi::hypercall::{Call, Error, PartitionState};

use crate::processor::{self, Vendor};

const INSTRUCTION_UNKNOWN: u8 = 0;
const INSTRUCTION_VMMCALL: u8 = 1;
const INSTRUCTION_VMCALL: u8 = 2;

/// Which instruction issues hypercalls; decided on the first call.
static INSTRUCTION: AtomicU8 = AtomicU8::new(INSTRUCTION_UNKNOWN);

fn instruction() -> u8 {
    match INSTRUCTION.load(Ordering::Relaxed) {
        INSTRUCTION_UNKNOWN => {
            let chosen = match processor::vendor() {
                Vendor::Amd => INSTRUCTION_VMMCALL,
                Vendor::Intel | Vendor::Other => INSTRUCTION_VMCALL,
            };
            INSTRUCTION.store(chosen, Ordering::Relaxed);
            chosen
        }
        chosen => chosen,
    }
}

/// Issues hypercall `call` with up to three arguments and returns RAX.
///
/// Safe: no call of the ABI takes a pointer, and the hypervisor checks every argument
/// and capability. Without a hypervisor the instruction raises #UD, which the runtime's
/// exception handler reports before stopping — a stop, not memory unsafety.
pub fn hypercall(call: Call, argument0: u64, argument1: u64, argument2: u64) -> i64 {
    let result: u64;
    if instruction() == INSTRUCTION_VMMCALL {
        // SAFETY: see the function comment. The registers the hypervisor may change are
        // declared as clobbered; it touches no guest memory for these calls.
        unsafe {
            core::arch::asm!(
                "vmmcall",
                inlateout("rax") call as u64 => result,
                inlateout("rdi") argument0 => _,
                inlateout("rsi") argument1 => _,
                inlateout("rdx") argument2 => _,
                lateout("rcx") _, lateout("r8") _, lateout("r9") _,
                lateout("r10") _, lateout("r11") _,
                options(nostack),
            );
        }
    } else {
        // SAFETY: as for VMMCALL above.
        unsafe {
            core::arch::asm!(
                "vmcall",
                inlateout("rax") call as u64 => result,
                inlateout("rdi") argument0 => _,
                inlateout("rsi") argument1 => _,
                inlateout("rdx") argument2 => _,
                lateout("rcx") _, lateout("r8") _, lateout("r9") _,
                lateout("r10") _, lateout("r11") _,
                options(nostack),
            );
        }
    }
    result as i64
}

/// Stops this partition on all its cores, reporting `status`, after sending what the
/// console still holds. If the hypercall returns (it should not), halts this core for
/// good. Without Tessera (bare QEMU) there is no one to report to: the machine is shut
/// down instead, by a triple fault (which QEMU's `-no-reboot` turns into an exit).
pub fn stop_self(status: u64) -> ! {
    crate::console::flush();
    if processor::running_on_tessera() {
        hypercall(Call::StopSelf, status, 0, 0);
    } else {
        shut_down_by_triple_fault();
    }
    processor::disable_interrupts();
    loop {
        processor::halt();
    }
}

/// Loads an empty IDT and raises an exception: no handler can be found, which is a
/// triple fault, which resets (or, with `-no-reboot`, stops) the machine.
fn shut_down_by_triple_fault() -> ! {
    let empty = [0u16; 5];
    // SAFETY: this deliberately ends the run: with a zero-limit IDT the INT3 cannot be
    // delivered, and the processor shuts down. Nothing runs after it.
    unsafe {
        core::arch::asm!("cli", "lidt [{pointer}]", "int3", pointer = in(reg) &raw const empty,
            options(noreturn));
    }
}

/// Powers the machine off (needs the `power` capability), after sending what the
/// console still holds. Returns only on failure, with the negative error code.
pub fn power_off() -> i64 {
    crate::console::flush();
    hypercall(Call::PowerOff, 0, 0, 0)
}

/// Rings the doorbell of channel `channel` (table order): its vector is raised on the
/// boot core of every other member. Returns the number of partitions signalled.
pub fn ring_doorbell(channel: u64) -> i64 {
    hypercall(Call::RingDoorbell, channel, 0, 0)
}

/// Guest-physical base of channel `channel`'s shared memory.
pub fn channel_address(channel: u64) -> i64 {
    hypercall(Call::ChannelAddress, channel, 0, 0)
}

/// The doorbell vector of channel `channel`.
pub fn channel_vector(channel: u64) -> i64 {
    hypercall(Call::ChannelVector, channel, 0, 0)
}

/// VM exits this partition has caused so far, this call included.
pub fn own_exit_count() -> i64 {
    hypercall(Call::OwnExitCount, 0, 0, 0)
}

/// Number of partitions in the table.
pub fn partition_count() -> i64 {
    hypercall(Call::PartitionCount, 0, 0, 0)
}

/// State of partition `index` (table order) as a `PartitionState` number, or a negative
/// error (needs `stats:<that partition>`).
pub fn partition_state(index: u64) -> i64 {
    hypercall(Call::PartitionState, index, 0, 0)
}

/// Names a hypercall result: `"ok"` for non-negative values, else the `Error` name.
pub fn result_name(result: i64) -> &'static str {
    match result {
        0.. => "ok",
        code if code == Error::UnknownCall as i64 => "unknown call",
        code if code == Error::Denied as i64 => "denied",
        code if code == Error::InvalidArgument as i64 => "invalid argument",
        _ => "unknown error",
    }
}
