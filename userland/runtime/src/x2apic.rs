//! The local APIC in x2APIC mode: its registers are MSRs 0x800–0x8FF (Intel SDM Vol. 3A
//! 11.12 "Extended XAPIC (x2APIC)", Table 11-6).
//!
//! Under Tessera every one of them passes through to the guest except ICR writes, which
//! the hypervisor filters (IPIs reach only the partition's own cores; INIT and StartUp
//! restart its own cores). So timer, EOI, TPR and self-IPIs cost no VM exit.
//!
//! [`enable`] switches this core's APIC to x2APIC mode (if firmware left it in xAPIC
//! mode, as bare QEMU does) and software-enables it; it returns an [`X2Apic`] token, and
//! the register accessors are methods of that token, so none can run before the MSRs
//! exist. The boot code of every further core enables its APIC before guest code runs.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::processor;

/// IA32_APIC_BASE (Intel SDM Vol. 3A 11.4.4): bit 11 = APIC global enable, bit 10 =
/// x2APIC mode (EXTD).
const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_GLOBAL_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC_MODE: u64 = 1 << 10;

/// x2APIC register MSRs (Intel SDM Vol. 3A Table 11-6).
const MSR_ID: u32 = 0x802;
const MSR_END_OF_INTERRUPT: u32 = 0x80b;
const MSR_SPURIOUS_VECTOR: u32 = 0x80f;
const MSR_INTERRUPT_COMMAND: u32 = 0x830;
const MSR_LVT_TIMER: u32 = 0x832;
const MSR_LVT_LINT0: u32 = 0x835;
const MSR_TIMER_INITIAL_COUNT: u32 = 0x838;
const MSR_TIMER_CURRENT_COUNT: u32 = 0x839;
const MSR_TIMER_DIVIDE: u32 = 0x83e;
const MSR_SELF_IPI: u32 = 0x83f;
/// IA32_TSC_DEADLINE (Intel SDM Vol. 3A 11.5.4.1).
const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// SVR bit 8: APIC software enable.
const SPURIOUS_APIC_ENABLE: u64 = 1 << 8;
/// LVT bit 16: masked.
const LVT_MASKED: u64 = 1 << 16;
/// LVT timer mode, bits 18:17.
const LVT_TIMER_ONE_SHOT: u64 = 0b00 << 17;
const LVT_TIMER_PERIODIC: u64 = 0b01 << 17;
const LVT_TIMER_TSC_DEADLINE: u64 = 0b10 << 17;
/// ICR bit 14: level assert (Intel SDM Vol. 3A 11.6.1).
const ICR_LEVEL_ASSERT: u64 = 1 << 14;
/// ICR bit 15: level-triggered.
const ICR_TRIGGER_LEVEL: u64 = 1 << 15;

/// The vector the APIC reports spurious interrupts with (low 4 bits must be 1s on old
/// APICs; 0xFF is the conventional choice). The dispatcher ignores it.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Set once [`enable`] succeeded on the boot core.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Proof that this core's local APIC is in x2APIC mode; see the module comment.
#[derive(Clone, Copy, Debug)]
pub struct X2Apic {
    _private: (),
}

/// Why the x2APIC cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicError {
    /// CPUID says the processor has no x2APIC.
    NoX2Apic,
}

/// Local APIC timer modes (Intel SDM Vol. 3A 11.5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// Counts down once from the initial count.
    OneShot,
    /// Counts down from the initial count again and again.
    Periodic,
    /// Fires when the TSC reaches IA32_TSC_DEADLINE.
    TscDeadline,
}

/// IPI delivery modes (ICR bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    Nmi,
    /// INIT, level assert (the SIPI sequence's first step).
    Init,
    /// StartUp: the target starts in real mode at `vector << 12`.
    StartUp,
}

impl DeliveryMode {
    fn command_bits(self) -> u64 {
        match self {
            DeliveryMode::Fixed => 0b000 << 8,
            DeliveryMode::Nmi => 0b100 << 8,
            DeliveryMode::Init => (0b101 << 8) | ICR_LEVEL_ASSERT,
            DeliveryMode::StartUp => 0b110 << 8,
        }
    }
}

/// The 8259 interrupt mask registers (master, slave).
const PIC_MASTER_DATA: u16 = 0x21;
const PIC_SLAVE_DATA: u16 = 0xa1;

/// Masks every input of the legacy 8259 pair. Only without Tessera (where the guest owns
/// the machine; under Tessera the ports belong to no partition): firmware (SeaBIOS under
/// bare QEMU) leaves the PIT ticking into the 8259 and LINT0 in ExtINT mode. The PIC
/// must be quiet before LINT0 is masked, or an interrupt it already requested stays
/// asserted with nothing to deliver (QEMU then raises #GP on `sti`).
fn mask_legacy_pic() {
    for port in [PIC_MASTER_DATA, PIC_SLAVE_DATA] {
        // SAFETY: port I/O touches no memory; masking the 8259 only stops legacy
        // interrupts, which the runtime does not use.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") port, in("al") 0xffu8,
                options(nomem, nostack, preserves_flags));
        }
    }
}

/// Puts this core's APIC into x2APIC mode, software-enables it with
/// [`SPURIOUS_VECTOR`] and masks LINT0 (the legacy 8259 path, which firmware may have
/// left in ExtINT mode; without Tessera the 8259 itself is masked first). Returns the
/// token for the register accessors.
pub fn enable() -> Result<X2Apic, ApicError> {
    if !processor::has_x2apic() {
        return Err(ApicError::NoX2Apic);
    }
    if !processor::running_on_tessera() {
        mask_legacy_pic();
    }
    // SAFETY: IA32_APIC_BASE exists on every processor with an APIC (CPUID said x2APIC).
    let base = unsafe { processor::read_msr(MSR_APIC_BASE) };
    let wanted = base | APIC_BASE_GLOBAL_ENABLE | APIC_BASE_X2APIC_MODE;
    if wanted != base {
        // SAFETY: xAPIC (or disabled) to x2APIC is a legal transition (Intel SDM Vol. 3A
        // 11.12.5, Figure 11-27) with the base address unchanged; it changes how this
        // core reaches its APIC, not memory. Skipped when already set (under Tessera
        // APIC_BASE writes are checked and cost an exit).
        unsafe { processor::write_msr(MSR_APIC_BASE, wanted) };
    }
    let apic = X2Apic { _private: () };
    // SAFETY: the APIC is now in x2APIC mode, so its register MSRs exist; SVR and LVT
    // writes only change which interrupts this core's APIC delivers.
    unsafe {
        processor::write_msr(
            MSR_SPURIOUS_VECTOR,
            SPURIOUS_APIC_ENABLE | u64::from(SPURIOUS_VECTOR),
        );
        processor::write_msr(MSR_LVT_LINT0, LVT_MASKED);
    }
    ENABLED.store(true, Ordering::Release);
    Ok(apic)
}

/// The token, if [`enable`] has succeeded (on this core or on the boot core; further
/// cores enable their APIC before running guest code).
pub fn get() -> Option<X2Apic> {
    ENABLED
        .load(Ordering::Acquire)
        .then_some(X2Apic { _private: () })
}

impl X2Apic {
    fn read(self, msr: u32) -> u64 {
        // SAFETY: the token proves x2APIC mode, in which every register MSR of Table
        // 11-6 the runtime names exists; reads have no side effects.
        unsafe { processor::read_msr(msr) }
    }

    fn write(self, msr: u32, value: u64) {
        // SAFETY: as for `read`; the runtime writes only well-formed values (no
        // reserved bits), and APIC registers steer interrupts, not memory.
        unsafe { processor::write_msr(msr, value) }
    }

    /// This core's x2APIC ID (the 32-bit ID register, no CPUID exit).
    pub fn id(self) -> u32 {
        self.read(MSR_ID) as u32
    }

    /// Signals end of interrupt (the dispatcher does it after each handler).
    pub fn end_of_interrupt(self) {
        self.write(MSR_END_OF_INTERRUPT, 0);
    }

    /// Programs the LVT timer entry: `vector`, `mode`, masked or not.
    pub fn set_timer(self, vector: u8, mode: TimerMode, masked: bool) {
        let mode_bits = match mode {
            TimerMode::OneShot => LVT_TIMER_ONE_SHOT,
            TimerMode::Periodic => LVT_TIMER_PERIODIC,
            TimerMode::TscDeadline => LVT_TIMER_TSC_DEADLINE,
        };
        let mask = if masked { LVT_MASKED } else { 0 };
        self.write(MSR_LVT_TIMER, u64::from(vector) | mode_bits | mask);
        // In TSC-deadline mode, order the LVT write before a following IA32_TSC_DEADLINE
        // write (Intel SDM Vol. 3A 11.5.4.1 recommends MFENCE).
        if mode == TimerMode::TscDeadline {
            core::sync::atomic::fence(Ordering::SeqCst);
        }
    }

    /// Masks the timer and stops its count-down and any armed deadline.
    pub fn stop_timer(self) {
        self.write(MSR_LVT_TIMER, LVT_MASKED);
        self.write(MSR_TIMER_INITIAL_COUNT, 0);
    }

    /// Sets the timer's divide configuration; `divisor` is 1, 2, 4, …, 128 (others: 1).
    pub fn set_timer_divisor(self, divisor: u32) {
        // Divide configuration register encoding (Intel SDM Vol. 3A Figure 11-10):
        // bits 3,1,0 = 0b000 → 2, 0b001 → 4, 0b010 → 8, 0b011 → 16, 0b100 → 32,
        // 0b101 → 64, 0b110 → 128, 0b111 → 1.
        let code: u64 = match divisor {
            2 => 0b000,
            4 => 0b001,
            8 => 0b010,
            16 => 0b011,
            32 => 0b100,
            64 => 0b101,
            128 => 0b110,
            _ => 0b111,
        };
        self.write(MSR_TIMER_DIVIDE, ((code & 0b100) << 1) | (code & 0b11));
    }

    /// Starts a one-shot or periodic count-down from `count`.
    pub fn set_timer_initial_count(self, count: u32) {
        self.write(MSR_TIMER_INITIAL_COUNT, u64::from(count));
    }

    /// The timer's current count.
    pub fn timer_current_count(self) -> u32 {
        self.read(MSR_TIMER_CURRENT_COUNT) as u32
    }

    /// Arms the TSC-deadline timer at TSC value `deadline` (0 disarms).
    pub fn set_tsc_deadline(self, deadline: u64) {
        self.write(MSR_TSC_DEADLINE, deadline);
    }

    /// Sends an IPI to the core with x2APIC ID `destination` (physical destination, no
    /// shorthand). `vector` matters for Fixed (the vector) and StartUp (start page).
    pub fn send_ipi(self, destination: u32, mode: DeliveryMode, vector: u8) {
        let command = (u64::from(destination) << 32) | mode.command_bits() | u64::from(vector);
        self.write(MSR_INTERRUPT_COMMAND, command);
    }

    /// Sends an INIT to `destination` with level-triggered assert, as the multiprocessor
    /// start-up sequence does (Intel SDM Vol. 3A 9.4.4.1).
    pub fn send_init_level_assert(self, destination: u32) {
        let command =
            (u64::from(destination) << 32) | DeliveryMode::Init.command_bits() | ICR_TRIGGER_LEVEL;
        self.write(MSR_INTERRUPT_COMMAND, command);
    }

    /// Raises `vector` on this core (the SELF IPI register: no ICR, so no VM exit).
    pub fn send_self_ipi(self, vector: u8) {
        self.write(MSR_SELF_IPI, u64::from(vector));
    }
}
