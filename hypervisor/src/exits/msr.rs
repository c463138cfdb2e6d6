//! The MSRs the hypervisor intercepts (see tessera_policy::msr for which): APIC_BASE is
//! emulated so a guest cannot leave x2APIC mode or move the APIC, EFER writes go through the
//! backend, ICR writes through the IPI filter, IA32_MISC_ENABLE and IA32_BIOS_SIGN_ID are
//! answered from tessera_policy::msr, the KVM paravirtual clock's MSRs write its records
//! (tessera_policy::pvclock); any other intercepted MSR gets #GP, as an
//! MSR the processor does not implement would.

use super::{CoreContext, Counter, Flow, Message, PartitionControl};
use crate::arch::{guest_memory, msr, tsc, x2apic};
use crate::table::ApicId;
use crate::virt::{ControlWrite, Exception, Register, VirtualCpu};
use tessera_policy::icr::{self, IcrAction, IcrDecision};
use tessera_policy::msr as policy_msr;
use tessera_policy::pvclock;

const INSTRUCTION_LENGTH: u64 = 2; // RDMSR and WRMSR are 0F 32 / 0F 30

pub fn read(vcpu: &mut impl VirtualCpu, context: &CoreContext, number: u32) -> Flow {
    let value = match number {
        msr::IA32_APIC_BASE => {
            let host = msr::apic_base();
            // The guest's boot core sees the BSP flag, whatever the physical core is.
            let is_boot_core = context.partition.cpus.first() == Some(&context.apic_id.0);
            (host & !msr::APIC_BASE_BSP) | if is_boot_core { msr::APIC_BASE_BSP } else { 0 }
        }
        msr::IA32_EFER => vcpu.control_state().efer,
        // The x2APIC lock (Intel SDM vol. 4, IA32_ARCH_CAPABILITIES bit 21 XAPIC_DISABLE
        // and IA32_XAPIC_DISABLE_STATUS bit 0): Linux ≥ 6.0 then keeps x2APIC mode even with
        // an IOAPIC and no interrupt remapping, which the trap model needs (docs/linux-guest.md).
        msr::IA32_ARCH_CAPABILITIES => {
            msr::arch_capabilities().unwrap_or(0) | msr::ARCH_CAPABILITIES_XAPIC_DISABLE
        }
        msr::IA32_XAPIC_DISABLE_STATUS => msr::XAPIC_DISABLE_STATUS_LEGACY_DISABLED,
        // IA32_MISC_ENABLE exists on every Intel processor of family 6 and later (SDM vol. 4
        // table 2-2): Linux's verify_cpu reads it before it has an IDT, to clear XD Disable.
        // The guest sees the processor's value as tessera_policy::msr::guest_misc_enable
        // makes it; the machine-wide bits stay the hypervisor's.
        msr::IA32_MISC_ENABLE => match msr::misc_enable() {
            Some(native) => policy_msr::guest_misc_enable(native),
            None => {
                vcpu.inject_exception(Exception::GeneralProtection);
                return Flow::Resume;
            }
        },
        // No microcode update loaded, as far as a partition can tell (see the policy).
        policy_msr::IA32_BIOS_SIGN_ID => 0,
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

/// An intercepted WRMSR. The x2APIC ICR is the one written in steady state (every IPI a
/// guest sends); it is handled here, inlined into the exit dispatch, and every other MSR out
/// of line in [`write_other`], so the frequent exit does not pay for the rare ones.
#[inline(always)]
pub fn write(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
    number: u32,
    value: u64,
) -> Flow {
    if number == msr::X2APIC_ICR {
        write_icr(context, control, value);
        vcpu.skip_instruction(INSTRUCTION_LENGTH);
        return Flow::Resume;
    }
    write_other(vcpu, context, control, number, value)
}

/// A write to the x2APIC ICR, through the IPI filter (`tessera_policy::icr::filter_value`,
/// which decides the common fixed physical IPI without a full decode).
#[inline(always)]
fn write_icr(context: &CoreContext, control: &impl PartitionControl, value: u64) {
    let decision = icr::filter_value(value, context.apic_id.0, context.partition.cpus);
    match decision.action {
        IcrAction::Send { icr_template }
            if icr_template & icr::DELIVERY_MODE_MASK == icr::DELIVERY_MODE_FIXED =>
        {
            for apic_id in decision.targets.apic_ids(context.partition.cpus) {
                x2apic::send_raw(icr::with_destination(icr_template, apic_id));
            }
        }
        IcrAction::Drop(_) => {}
        _ => signal_targets(context, control, decision),
    }
    if decision.dropped_destinations != 0 {
        control.count(
            context,
            Counter::DroppedIpi,
            u64::from(decision.dropped_destinations),
        );
    }
}

/// The ICR actions the hypervisor carries out through the runtime (a guest NMI, INIT and
/// start-up to the partition's own cores): rare, out of line.
#[inline(never)]
#[cold]
fn signal_targets(context: &CoreContext, control: &impl PartitionControl, decision: IcrDecision) {
    let targets = decision.targets.apic_ids(context.partition.cpus);
    match decision.action {
        IcrAction::Send { .. } => {
            targets.for_each(|apic_id| control.send_message(ApicId(apic_id), Message::GuestNmi))
        }
        IcrAction::Init => {
            targets.for_each(|apic_id| control.send_message(ApicId(apic_id), Message::Init))
        }
        IcrAction::StartUp { vector } => targets
            .for_each(|apic_id| control.send_message(ApicId(apic_id), Message::StartUp { vector })),
        IcrAction::Drop(_) => {}
    }
}

/// Every intercepted WRMSR but the ICR's.
#[inline(never)]
fn write_other(
    vcpu: &mut impl VirtualCpu,
    context: &CoreContext,
    control: &impl PartitionControl,
    number: u32,
    value: u64,
) -> Flow {
    control.count(context, Counter::OtherMsrWrite, 1);
    match number {
        msr::IA32_APIC_BASE => {
            let host = msr::apic_base();
            // Only a write that changes nothing but the BSP flag is accepted: no leaving
            // x2APIC mode, no relocation (SDM vol. 3 §11.12.5 would otherwise apply).
            if (value ^ host) & !msr::APIC_BASE_BSP != 0 {
                if control.may_log(context) {
                    log::info!(
                        "refused: partition={} core={} APIC_BASE write {:#x} (x2APIC mode and base are fixed)",
                        context.partition.name,
                        context.apic_id,
                        value
                    );
                }
                vcpu.inject_exception(Exception::GeneralProtection);
                return Flow::Resume;
            }
        }
        msr::IA32_EFER => {
            return super::cr::handle(vcpu, context, ControlWrite::Efer(value), INSTRUCTION_LENGTH)
        }
        // Writes to IA32_MISC_ENABLE change machine-wide behaviour (thermal control, fast
        // strings, the enhanced SpeedStep lock): dropped, as KVM keeps only a virtual copy.
        // A guest that writes back what it read (Linux) sees no difference.
        msr::IA32_MISC_ENABLE if msr::misc_enable().is_some() => {}
        // A partition cannot load microcode: the write that precedes a revision read is
        // ignored (see tessera_policy::msr::IA32_BIOS_SIGN_ID).
        policy_msr::IA32_BIOS_SIGN_ID => {}
        // The paravirtual clock (tessera_policy::pvclock): the guest names where its record
        // goes and the hypervisor writes it there once; it stays true (invariant TSC, no
        // offset). A record outside the partition's RAM, or an unknown TSC rate (the
        // feature is then not offered), is #GP.
        pvclock::MSR_SYSTEM_TIME | pvclock::MSR_WALL_CLOCK => {
            let khz = u32::try_from(tsc::khz()).unwrap_or(0);
            let written = match (number, khz) {
                (pvclock::MSR_SYSTEM_TIME, _) if value & pvclock::SYSTEM_TIME_ENABLE == 0 => {
                    Some(())
                }
                (pvclock::MSR_SYSTEM_TIME, khz) => pvclock::time_info(khz).and_then(|record| {
                    guest_memory::write(
                        context.partition,
                        value & !pvclock::SYSTEM_TIME_ENABLE,
                        &record,
                    )
                }),
                (_, 0) => None,
                _ => guest_memory::write(context.partition, value, &pvclock::wall_clock()),
            };
            if written.is_none() {
                vcpu.inject_exception(Exception::GeneralProtection);
                return Flow::Resume;
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
