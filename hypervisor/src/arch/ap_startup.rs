//! Starting application processors: the loader's real-mode trampoline copied below 1 MiB,
//! its parameter block, and the INIT-SIPI-SIPI sequence (Intel SDM vol. 3 §9.4.4.1).

use super::{cpuid, pause, tsc, x2apic};
use crate::table::{ApicId, CoreIndex};
use tessera_loader::{ApStartParameters, AP_TRAMPOLINE_ADDRESS};

/// Copies the trampoline to its page. Called once by the bootstrap core before any INIT.
pub fn install_trampoline() {
    let trampoline = tessera_loader::ap_trampoline();
    // SAFETY: the page at AP_TRAMPOLINE_ADDRESS is below 1 MiB, identity-mapped, and given to
    // no partition (validation reserves it; the boot checks found it to be RAM); no AP runs
    // yet, so nothing else uses it. A raw copy forms no reference.
    unsafe {
        core::ptr::copy_nonoverlapping(
            trampoline.as_ptr(),
            AP_TRAMPOLINE_ADDRESS as usize as *mut u8,
            trampoline.len(),
        )
    };
}

fn parameters() -> *mut ApStartParameters {
    (AP_TRAMPOLINE_ADDRESS as usize + tessera_loader::ap_parameters_offset())
        as *mut ApStartParameters
}

/// INIT to every core in `cores` at once, then the wait before the start-up IPIs that this
/// processor needs: the universal algorithm's 10 ms (SDM vol. 3A §9.4.4.1) on old
/// processors, none on current ones (tessera_policy::boot_timing).
pub fn send_init_to_all(cores: impl Iterator<Item = ApicId>) {
    for apic_id in cores {
        x2apic::send_init(apic_id);
    }
    let vendor = cpuid::vendor();
    let family = tessera_policy::boot_timing::display_family(cpuid::query(1, 0)[0]);
    let wait = tessera_policy::boot_timing::init_to_startup_microseconds(
        vendor == cpuid::Vendor::Intel,
        vendor == cpuid::Vendor::Amd,
        family,
    );
    if wait != 0 {
        tsc::delay_microseconds(wait);
    }
}

/// Starts one core (already INITed) on `stack_top` with table index `index`: a start-up IPI,
/// then up to 200 µs for the trampoline to report; only a core that has not reported by
/// then gets the second start-up IPI and about a second more. Cores start one at a time
/// because they share the parameter block. Returns the TSC at which the core reported, or
/// `None` if it did not.
///
/// The universal start-up algorithm (Intel SDM vol. 3A §9.4.4.1) sends the second SIPI
/// after 200 µs in case the first was lost; a processor that has left wait-for-SIPI ignores
/// it (§9.4.3), so a core seen running needs neither the rest of the wait nor the second
/// IPI. Linux (`wakeup_secondary_cpu_via_init`) also sends both; this saves the wait, not
/// the robustness.
pub fn start(apic_id: ApicId, index: CoreIndex, stack_top: u64) -> Option<u64> {
    let parameters = parameters();
    // SAFETY: the parameter block lies inside the trampoline page installed above; the
    // previous AP has finished reading it (its `started` was seen before this call).
    unsafe {
        parameters.write_volatile(ApStartParameters {
            stack_top,
            cpu_index: index.0 as u64,
            started: 0,
        });
    }
    // SAFETY: as above; `started` is written by the AP, hence the volatile read.
    let report = || unsafe { core::ptr::addr_of!((*parameters).started).read_volatile() };
    let vector = (AP_TRAMPOLINE_ADDRESS >> 12) as u8;
    x2apic::send_startup(apic_id, vector);
    if let Some(reported) = wait_for_report(report, tsc::ticks_in_microseconds(200)) {
        return Some(reported);
    }
    x2apic::send_startup(apic_id, vector);
    wait_for_report(report, tsc::ticks_in_microseconds(1_000_000))
}

/// Spins until `report` gives a non-zero value or `ticks` TSC ticks have passed.
fn wait_for_report(report: impl Fn() -> u64, ticks: u64) -> Option<u64> {
    let start = tsc::read();
    loop {
        let reported = report();
        if reported != 0 {
            return Some(reported);
        }
        if tsc::read().wrapping_sub(start) > ticks {
            return None;
        }
        pause();
    }
}
