//! CPUID exits: the guest sees the processor's answer filtered by `tessera_policy::cpuid`
//! (virtualization extensions hidden, the hypervisor leaves, the TSC frequency).

use super::Flow;
use crate::arch::{cpuid, tsc};
use crate::virt::{Register, VirtualCpu};

/// CPUID is 0F A2.
const INSTRUCTION_LENGTH: u64 = 2;

#[inline]
pub fn handle(vcpu: &mut impl VirtualCpu) -> Flow {
    let leaf = vcpu.register(Register::Rax) as u32;
    let subleaf = vcpu.register(Register::Rcx) as u32;
    let native = cpuid::query(leaf, subleaf);
    let view = tessera_policy::cpuid::CpuidView {
        max_hypervisor_leaf: 0x4000_0010,
        tsc_khz: tsc::khz() as u32,
        native_max_basic_leaf: cpuid::max_basic_leaf(),
    };
    let [eax, ebx, ecx, edx] = tessera_policy::cpuid::filter(leaf, subleaf, native, &view);
    vcpu.set_register(Register::Rax, u64::from(eax));
    vcpu.set_register(Register::Rbx, u64::from(ebx));
    vcpu.set_register(Register::Rcx, u64::from(ecx));
    vcpu.set_register(Register::Rdx, u64::from(edx));
    vcpu.skip_instruction(INSTRUCTION_LENGTH);
    Flow::Resume
}
