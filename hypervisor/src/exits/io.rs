//! I/O exits: only ports outside the partition's set exit. The partition's virtual ACPI
//! sleep and reset ports (`tessera_policy::virtual_platform`) and, for a partition that
//! owns PCI functions, configuration mechanism #1 (`super::pci`) are emulated; every other port
//! reads all-ones and drops writes, as on a bus with nothing behind the address.

use super::{pci, Containment, CoreContext, Counter, Flow, PartitionControl};
use crate::virt::{IoAccess, Register, VirtualCpu};
use tessera_abi::table::Capability;
use tessera_policy::virtual_platform::{self, PlatformRequest};

/// RFLAGS.DF: string instructions walk downwards.
const RFLAGS_DIRECTION: u64 = 1 << 10;

/// The bits of RAX an access of `size` bytes reads or writes.
fn operand_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

pub fn handle(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
    access: IoAccess,
) -> Flow {
    let IoAccess {
        port,
        size,
        input,
        string,
        repeat,
        next_rip,
    } = access;
    let mask = operand_mask(size);
    if !string {
        let value = (vcpu.register(Register::Rax) & mask) as u32;
        if let Some(read) = pci::port(context, control, port, size, input, value) {
            if input {
                let rax = vcpu.register(Register::Rax);
                // A 32-bit IN zero-extends into RAX; 8/16-bit INs keep the upper bits.
                let rax = if size == 4 { 0 } else { rax & !mask };
                vcpu.set_register(Register::Rax, rax | u64::from(read));
            }
            vcpu.set_rip(next_rip);
            return Flow::Resume;
        }
        if input {
            if let Some(value) = virtual_platform::read(port, size) {
                let rax = vcpu.register(Register::Rax);
                vcpu.set_register(Register::Rax, (rax & !mask) | u64::from(value));
                vcpu.set_rip(next_rip);
                return Flow::Resume;
            }
        } else {
            let value = (vcpu.register(Register::Rax) & mask) as u32;
            match virtual_platform::classify_write(port, value, size) {
                // The guest's power-off (S5) stops the partition; a partition that holds the
                // `power` capability (the PowerOff hypercall's) powers the machine off.
                Some(PlatformRequest::PowerOff) => {
                    if context.has(Capability::Power) {
                        control.power_off(context.partition.name);
                    }
                    control.stop_by_request(context, 0, "acpi-power-off");
                    return Flow::Stop;
                }
                Some(PlatformRequest::Reset) => {
                    vcpu.set_rip(next_rip);
                    control.reset_by_request(context);
                    return Flow::Stop;
                }
                None => {}
            }
        }
    }
    if string {
        if input {
            // INS would store all-ones into guest memory through the guest's own page tables;
            // not emulated yet. Contained rather than silently skipped.
            control.contain(
                context,
                Containment {
                    reason: "string-io",
                    address: u64::from(port),
                    detail: "INS from an unassigned port",
                    rip: vcpu.rip(),
                },
            );
            return Flow::Stop;
        }
        // OUTS to nothing: consume the source bytes as the instruction would.
        let count = if repeat {
            vcpu.register(Register::Rcx)
        } else {
            1
        };
        let step = count.wrapping_mul(u64::from(size));
        let rsi = vcpu.register(Register::Rsi);
        let backwards = vcpu.rflags() & RFLAGS_DIRECTION != 0;
        vcpu.set_register(
            Register::Rsi,
            if backwards {
                rsi.wrapping_sub(step)
            } else {
                rsi.wrapping_add(step)
            },
        );
        if repeat {
            vcpu.set_register(Register::Rcx, 0);
        }
    } else if input {
        let rax = vcpu.register(Register::Rax);
        // A 32-bit IN zero-extends into RAX; 8/16-bit INs keep the upper bits.
        let value = if size == 4 { mask } else { rax | mask };
        vcpu.set_register(Register::Rax, value);
    }
    control.count(context, Counter::UnassignedPort, 1);
    vcpu.set_rip(next_rip);
    Flow::Resume
}
