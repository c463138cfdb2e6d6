//! The hardware floor: the leaf modules that touch x86 hardware and firmware directly —
//! port I/O, MSRs, CPUID, the x2APIC and IOAPIC, descriptor tables, the TSC, the UART, ACPI
//! tables, partition memory. They call nothing above them (`cargo xtask lint` checks it);
//! everything that is policy lives elsewhere, in safe code.

pub mod acpi;
pub mod amd_iommu;
pub mod ap_startup;
pub mod boot_memory;
pub mod console;
pub mod cpu;
pub mod cpuid;
pub mod guest_memory;
pub mod host_paging;
pub mod intel_iommu;
pub mod ioapic;
pub mod iommu;
pub mod msr;
pub mod pci;
pub mod pic;
pub mod port;
pub mod power;
pub mod sha256;
pub mod tsc;
pub mod x2apic;

/// Whether SVM is enabled on this core (EFER.SVME): then the hypervisor runs with the global
/// interrupt flag clear (AMD APM vol. 2 §15.17) and must open it while it idles.
fn svm_enabled() -> bool {
    // SAFETY: EFER exists on every 64-bit processor; reading it has no side effects.
    unsafe { msr::read(msr::IA32_EFER) & msr::EFER_SVME != 0 }
}

/// What runs before this core sets GIF (its final halt, its idle wait): the SVM backend
/// registers the switch back to the hypervisor's own TR and segment state, which the
/// guest's may still replace after an exit (virt::svm, `GUEST_CONTEXT_LIVE`) — an NMI taken
/// once GIF is set finds its interrupt stack through TR.
static BEFORE_GIF_OPENS: spin::Once<fn()> = spin::Once::new();

/// Sets the hook [`halt_forever`] and [`idle_pause`] call before they set GIF on SVM.
pub fn set_before_gif_opens(hook: fn()) {
    BEFORE_GIF_OPENS.call_once(|| hook);
}

fn before_gif_opens() {
    if let Some(hook) = BEFORE_GIF_OPENS.get() {
        hook();
    }
}

/// Stops this core for good with interrupts masked (RFLAGS.IF = 0). On SVM the global
/// interrupt flag is set first: with GIF clear, SMIs and INIT would stay pending forever and
/// firmware that gathers every core in SMM would stall (APM vol. 2 §15.17). NMIs are then
/// taken by the hypervisor's IDT, which returns to the halt.
pub fn halt_forever() -> ! {
    if svm_enabled() {
        before_gif_opens();
        // SAFETY: STGI is valid with EFER.SVME set (checked); RFLAGS.IF stays clear, so only
        // NMI, SMI and INIT can be taken, each handled without touching this core's state.
        unsafe { core::arch::asm!("stgi", options(nomem, nostack)) };
    }
    loop {
        // SAFETY: CLI and HLT only stop this core; no memory is touched.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// A spin-wait hint for busy loops inside a hypervisor operation (short waits).
pub fn pause() {
    core::hint::spin_loop();
}

/// Whether [`idle_halt`] may be used on this core: on SVM, where the hypervisor runs with
/// GIF clear, so an NMI sent before the halt is held until the halt's STGI and then always
/// ends it (the NMI path steps over a HLT it interrupted before it ran, `arch::cpu`). On VMX
/// an NMI is taken at any instruction of the hypervisor, so one that arrives between the
/// caller's last look at its signals and the HLT would be lost; such cores spin instead.
pub fn can_idle_halt() -> bool {
    svm_enabled()
}

/// Waits in HLT, with GIF set and RFLAGS.IF clear, until an NMI (or SMI, INIT) arrives: the
/// idle wait of a core whose every wake-up comes with an NMI (a core waiting for its
/// start-up IPI). Unlike [`idle_pause`] the core does not run while it waits — on an
/// emulator, a host thread that does not spin. Only where [`can_idle_halt`] says so.
pub fn idle_halt() {
    if !svm_enabled() {
        core::hint::spin_loop();
        return;
    }
    before_gif_opens();
    cpu::halt_until_nmi();
}

/// A spin-wait step for a core that idles in the hypervisor (waiting for a start-up IPI or
/// for a restart): on SVM the global interrupt flag is opened for the instant of the PAUSE,
/// so SMIs and INIT are not held back while the core waits (APM vol. 2 §15.17).
pub fn idle_pause() {
    if svm_enabled() {
        before_gif_opens();
        // SAFETY: STGI/CLGI are valid with EFER.SVME set (checked) and only toggle GIF;
        // RFLAGS.IF stays clear, so only NMI, SMI or INIT can be taken in between.
        unsafe { core::arch::asm!("stgi", "pause", "clgi", options(nomem, nostack)) };
    } else {
        core::hint::spin_loop();
    }
}
