//! The current VMCS and the instructions on it: VMREAD, VMWRITE, the control-register reads
//! the host state needs, and the per-core VMCS state the NMI handler looks at.

use crate::arch::x2apic;
use crate::table::{self, CPU_COUNT};
use core::sync::atomic::{AtomicU8, Ordering};
use tessera_policy::vmx::{self as policy};
use x86::vmx::vmcs::{self, control::PinbasedControls};

pub(super) fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) value, options(nomem, nostack)) };
    value
}

pub(super) fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) value, options(nomem, nostack)) };
    value
}

pub(super) fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) value, options(nomem, nostack)) };
    value
}

/// Reads a field of the current VMCS.
#[inline]
pub(super) fn vmread(field: u32) -> u64 {
    let value: u64;
    // SAFETY: a VMCS is current on this core whenever a VmxVcpu exists (made current in
    // `VmxVcpu::new`); VMREAD of a defined field has no side effects.
    unsafe {
        core::arch::asm!("vmread {}, {}", out(reg) value, in(reg) u64::from(field), options(nostack))
    };
    value
}

/// Writes a field of the current VMCS.
#[inline]
pub(super) fn vmwrite(field: u32, value: u64) {
    let failed: u8;
    // SAFETY: as for `vmread`; the VMCS is this core's own and the guest is not running.
    unsafe {
        core::arch::asm!("vmwrite {}, {}", "setna {}", in(reg) u64::from(field), in(reg) value, out(reg_byte) failed, options(nostack))
    };
    if failed != 0 {
        vmwrite_failed(field);
    }
}

/// A VMWRITE failed: a bug in the hypervisor (the fields it writes are defined and the VMCS
/// is current). Out of line and cold, so that the exit paths' VMWRITEs carry only the test
/// of the flags, not the panic's arguments.
#[cold]
#[inline(never)]
fn vmwrite_failed(field: u32) -> ! {
    panic!(
        "VMWRITE of field {field:#x} failed: {}",
        policy::instruction_error_name(vmread(vmcs::ro::VM_INSTRUCTION_ERROR) as u32)
    )
}

/// Per core: whether its VMCS is current and whether the preemption timer may be armed
/// (0 = no VMCS, 1 = VMCS without timer, 2 = VMCS with timer). Read by the NMI handler.
pub(super) static VMCS_STATE: [AtomicU8; CPU_COUNT] = [const { AtomicU8::new(0) }; CPU_COUNT];

/// Called from the hypervisor's NMI handler: makes the next VM entry on this core exit at
/// once (VMX-preemption timer armed at zero, SDM §26.7.4), so a signal that arrived while
/// the core was in the hypervisor is seen before the guest runs on.
pub fn exit_soon_after_entry() {
    let Some(index) = table::cpu_index(x2apic::current_id()) else {
        return;
    };
    if VMCS_STATE[index.0].load(Ordering::Acquire) == 2 {
        vmwrite(vmcs::guest::VMX_PREEMPTION_TIMER_VALUE, 0);
        let pin_based = vmread(vmcs::control::PINBASED_EXEC_CONTROLS);
        vmwrite(
            vmcs::control::PINBASED_EXEC_CONTROLS,
            pin_based | u64::from(PinbasedControls::VMX_PREEMPTION_TIMER.bits()),
        );
    }
}

#[repr(C, align(4096))]
pub struct Page([u8; 4096]);

impl Page {
    pub const fn new() -> Self {
        Self([0; 4096])
    }
    /// Writes the VMCS revision identifier into the first four bytes, as a VMXON region
    /// and a VMCS need (SDM §25.2, §25.11.5).
    pub(super) fn stamp_revision(&mut self, revision: u32) {
        self.0[0..4].copy_from_slice(&revision.to_le_bytes());
    }

    pub(super) fn physical_address(&self) -> u64 {
        self as *const Self as u64
    }
}
