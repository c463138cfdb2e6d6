//! The MSRs the hypervisor intercepts (see tessera_policy::msr for which): APIC_BASE is
//! emulated so a guest cannot leave x2APIC mode or move the APIC, EFER writes go through the
//! backend, ICR writes through the IPI filter; any other intercepted MSR gets #GP, as an
//! MSR the processor does not implement would.

use crate::arch::msr;
use crate::partition;
use crate::virt::{CoreContext, Exception, Flow, Register, VirtualCpu};
use tessera_policy::icr::{self, IcrDecision};

const INSTRUCTION_LENGTH: u64 = 2; // RDMSR and WRMSR are 0F 32 / 0F 30

pub fn read(vcpu: &mut impl VirtualCpu, context: &CoreContext, number: u32) -> Flow {
    let value = match number {
        msr::IA32_APIC_BASE => {
            // SAFETY: APIC_BASE exists on every CPU the hypervisor accepts (x2APIC required).
            let host = unsafe { msr::read(msr::IA32_APIC_BASE) };
            // The guest's boot core sees the BSP flag, whatever the physical core is.
            let is_boot_core = context.partition.cpus.first() == Some(&context.apic_id);
            (host & !msr::APIC_BASE_BSP) | if is_boot_core { msr::APIC_BASE_BSP } else { 0 }
        }
        msr::IA32_EFER => vcpu.read_efer(),
        _ => {
            vcpu.inject_exception(Exception::GeneralProtection);
            return Flow::Resume;
        }
    };
    vcpu.set_register(Register::Rax, value & 0xFFFF_FFFF);
    vcpu.set_register(Register::Rdx, value >> 32);
    vcpu.skip_instruction(INSTRUCTION_LENGTH);
    Flow::Resume
}

pub fn write(vcpu: &mut impl VirtualCpu, context: &CoreContext, number: u32, value: u64) -> Flow {
    match number {
        msr::IA32_APIC_BASE => {
            // SAFETY: as in `read`.
            let host = unsafe { msr::read(msr::IA32_APIC_BASE) };
            // Only a write that changes nothing but the BSP flag is accepted: no leaving
            // x2APIC mode, no relocation (SDM vol. 3 §11.12.5 would otherwise apply).
            if (value ^ host) & !msr::APIC_BASE_BSP != 0 {
                log::info!(
                    "refused: partition={} core={} APIC_BASE write {:#x} (x2APIC mode and base are fixed)",
                    context.partition.name,
                    context.apic_id,
                    value
                );
                vcpu.inject_exception(Exception::GeneralProtection);
                return Flow::Resume;
            }
        }
        msr::IA32_EFER => vcpu.write_efer(value),
        msr::X2APIC_ICR => {
            let request = icr::Icr::decode(value);
            match icr::filter(&request, context.apic_id, context.partition.cpus) {
                IcrDecision::Forward(icr) => crate::arch::x2apic::send_raw(icr),
                IcrDecision::ForwardEach {
                    including_self,
                    template,
                } => {
                    for &apic_id in context.partition.cpus {
                        if including_self || apic_id != context.apic_id {
                            crate::arch::x2apic::send_raw(
                                (template & 0xFFFF_FFFF) | (u64::from(apic_id) << 32),
                            );
                        }
                    }
                }
                IcrDecision::Drop(_) => partition::count_dropped_ipi(context.partition_index),
            }
        }
        _ => {
            vcpu.inject_exception(Exception::GeneralProtection);
            return Flow::Resume;
        }
    }
    vcpu.skip_instruction(INSTRUCTION_LENGTH);
    Flow::Resume
}
