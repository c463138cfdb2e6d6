//! XSETBV exits (VMX: the instruction always exits): the value is checked as the processor
//! checks it (`tessera_policy::xcr0`) and loaded, or the guest gets the #GP(0) the
//! instruction raises. A refused value never reaches the real XSETBV, where a #GP would be
//! the hypervisor's.

use super::Flow;
use crate::arch::cpuid;
use crate::virt::{Exception, VirtualCpu};
use tessera_policy::xcr0::check_xsetbv;

pub fn handle(vcpu: &mut impl VirtualCpu, index: u32, value: u64) -> Flow {
    // XSETBV is privileged (#GP(0) at CPL > 0, SDM vol. 2 "XSETBV"); Bochs takes the exit
    // before that check, so the hypervisor makes it.
    if vcpu.privilege_level() != 0 {
        vcpu.inject_exception(Exception::GeneralProtection);
        return Flow::Resume;
    }
    // The XCR0 bits this processor supports: CPUID.(EAX=0DH,ECX=0):EDX:EAX (SDM vol. 1
    // §13.2), only meaningful with XSAVE (CPUID.1:ECX bit 26); without it every value is
    // refused.
    let supported = if cpuid::query(1, 0)[2] & (1 << 26) != 0 {
        let [low, _, _, high] = cpuid::query(0xD, 0);
        (u64::from(high) << 32) | u64::from(low)
    } else {
        0
    };
    match check_xsetbv(index, value, supported) {
        Ok(checked) => {
            vcpu.load_xcr0(checked);
            // XSETBV is three bytes (0F 01 D1); VMX reports the length itself.
            vcpu.skip_instruction(3);
        }
        Err(_) => vcpu.inject_exception(Exception::GeneralProtection),
    }
    Flow::Resume
}
