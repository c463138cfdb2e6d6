//! The reset of a passed-through function before its partition starts and when it
//! restarts (docs/pci-iommu.md, "Reset"): Function Level Reset where the PCI Express
//! capability offers it, else a D3hot→D0 transition through the Power Management
//! capability where that resets the function (No_Soft_Reset clear), else none. The header
//! registers the firmware programmed (BARs, cache line size, latency timer, interrupt
//! line) are saved before and written back after, because both resets return them to
//! their defaults (PCIe 4.0 §6.6.2; PCI PM 1.2 §5.4.1) and the table's BAR windows are
//! the firmware's addresses. Pure: the hypervisor supplies the configuration space and
//! the clock ([`ConfigSpace`], `wait_microseconds`).

use super::capability::{self, CapabilityList};
use super::function::ConfigSpace;
use super::header;

/// Which reset a function got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetKind {
    /// Function Level Reset (PCIe 4.0 §6.6.2).
    FunctionLevel,
    /// D3hot then D0 with No_Soft_Reset clear (PCI PM 1.2 §5.4.1, §5.6.1).
    PowerStateCycle,
    /// Neither is offered: only the quiesce (command register, MSI and MSI-X enables).
    None,
}

impl ResetKind {
    /// The word the boot log uses.
    pub fn name(self) -> &'static str {
        match self {
            ResetKind::FunctionLevel => "flr",
            ResetKind::PowerStateCycle => "d3hot-d0",
            ResetKind::None => "none",
        }
    }
}

/// Why a reset did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetError {
    /// The function still reported pending transactions after the wait before FLR.
    TransactionsPending,
    /// The function did not answer configuration reads (vendor ID all-ones, or 0001h: a
    /// Configuration Request Retry Status completion, PCIe 4.0 §2.3.2) within the bound.
    NotResponding,
}

/// Command register (dword 1) and status (its high half): Capabilities List (status bit 4).
const CAPABILITIES_LIST: u32 = 1 << 20;
/// PCI Express capability: Device Capabilities at +4, Function Level Reset Capability bit
/// 28 (PCIe 4.0 §7.5.3.3).
const DEVICE_CAPABILITIES: u16 = 4;
const FLR_CAPABLE: u32 = 1 << 28;
/// Device Control (+8, low half; Initiate FLR bit 15, §7.5.3.4) and Device Status (+8,
/// high half; Transactions Pending bit 5, §7.5.3.5).
const DEVICE_CONTROL: u16 = 8;
const INITIATE_FLR: u32 = 1 << 15;
const TRANSACTIONS_PENDING: u32 = 1 << (16 + 5);
/// Power Management capability: PMCSR at +4, PowerState bits 1:0, No_Soft_Reset bit 3
/// (PCI PM 1.2 §3.2.4).
const POWER_CONTROL: u16 = 4;
const POWER_STATE: u32 = 0b11;
const D3_HOT: u32 = 0b11;
const NO_SOFT_RESET: u32 = 1 << 3;
/// PMCSR's PME_Status (bit 15) is write-1-to-clear: never written back as read.
const PME_STATUS: u32 = 1 << 15;

/// After FLR: 100 ms before the function must answer (PCIe 4.0 §6.6.2).
pub const FLR_WAIT_MICROSECONDS: u64 = 100_000;
/// Before FLR: how long pending transactions may take to drain (the completion timeout's
/// default range ends at 50 ms, §6.2.5; Linux-like drivers wait up to this bound too).
const PENDING_WAIT_STEPS: u32 = 10;
const PENDING_WAIT_STEP_MICROSECONDS: u64 = 10_000;
/// After D3hot→D0: 10 ms recovery (PCI PM 1.2 §5.6.1, Table 5-5), also before leaving D3hot.
pub const POWER_STATE_WAIT_MICROSECONDS: u64 = 10_000;
/// After the fixed wait, how many further 10 ms polls of the vendor ID (up to 1 s).
const ANSWER_POLLS: u32 = 100;
const ANSWER_POLL_MICROSECONDS: u64 = 10_000;

/// The header dwords a reset clears and the hypervisor restores: cache line size and
/// latency timer (0x0C), the six BARs (0x10–0x24) and the interrupt line (0x3C).
const SAVED: [u16; 8] = [0x0c, 0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x3c];

/// Which reset `space` offers, from its capability list.
pub fn available(space: &mut impl ConfigSpace) -> (ResetKind, Option<u16>) {
    let status_has_list = space.read(header::COMMAND) & CAPABILITIES_LIST != 0;
    let list = CapabilityList::walk(status_has_list, |offset| space.read(offset));
    if let Some(express) = list.find(u16::from(capability::PCI_EXPRESS)) {
        if space.read(express.offset + DEVICE_CAPABILITIES) & FLR_CAPABLE != 0 {
            return (ResetKind::FunctionLevel, Some(express.offset));
        }
    }
    if let Some(power) = list.find(u16::from(capability::POWER_MANAGEMENT)) {
        if space.read(power.offset + POWER_CONTROL) & NO_SOFT_RESET == 0 {
            return (ResetKind::PowerStateCycle, Some(power.offset));
        }
    }
    (ResetKind::None, None)
}

/// Resets `space` with the best reset it offers and restores the saved header registers
/// with the command register quiesced (decode and bus mastering off, INTx disabled: the
/// state discovery expects). `wait_microseconds` busy-waits at least that long. Only a
/// function that gets a reset costs any wait.
pub fn reset(
    space: &mut impl ConfigSpace,
    mut wait_microseconds: impl FnMut(u64),
) -> Result<ResetKind, ResetError> {
    // Bus mastering off before anything else (PCIe 4.0 §6.6.2: software stops new
    // requests before an FLR).
    let command = space.read(header::COMMAND) & 0xffff;
    space.write(header::COMMAND, (command & !0b111) | (1 << 10));
    let (kind, offset) = available(space);
    let Some(offset) = offset else {
        return Ok(ResetKind::None);
    };
    let mut saved = [0u32; SAVED.len()];
    for (value, &register) in saved.iter_mut().zip(SAVED.iter()) {
        *value = space.read(register);
    }
    match kind {
        ResetKind::FunctionLevel => {
            let control = DEVICE_CONTROL + offset;
            let mut steps = 0;
            while space.read(control) & TRANSACTIONS_PENDING != 0 {
                if steps == PENDING_WAIT_STEPS {
                    return Err(ResetError::TransactionsPending);
                }
                wait_microseconds(PENDING_WAIT_STEP_MICROSECONDS);
                steps += 1;
            }
            // The control half with Initiate FLR; the status half written as 0 (its bits
            // are write-1-to-clear or read-only).
            let value = space.read(control) & 0xffff;
            space.write(control, value | INITIATE_FLR);
            wait_microseconds(FLR_WAIT_MICROSECONDS);
        }
        ResetKind::PowerStateCycle => {
            let pmcsr = offset + POWER_CONTROL;
            let value = space.read(pmcsr) & !PME_STATUS & 0xffff;
            space.write(pmcsr, (value & !POWER_STATE) | D3_HOT);
            wait_microseconds(POWER_STATE_WAIT_MICROSECONDS);
            space.write(pmcsr, value & !POWER_STATE);
            wait_microseconds(POWER_STATE_WAIT_MICROSECONDS);
        }
        ResetKind::None => {}
    }
    let mut polls = 0;
    loop {
        let vendor = space.read(0) & 0xffff;
        if vendor != 0xffff && vendor != 0x0001 {
            break;
        }
        if polls == ANSWER_POLLS {
            return Err(ResetError::NotResponding);
        }
        wait_microseconds(ANSWER_POLL_MICROSECONDS);
        polls += 1;
    }
    for (&value, &register) in saved.iter().zip(SAVED.iter()) {
        space.write(register, value);
    }
    let command = space.read(header::COMMAND) & 0xffff;
    space.write(header::COMMAND, (command & !0b111) | (1 << 10));
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A function with a capability list at 0x40 (PM) → 0x50 (PCIe), whose resets clear
    /// the saved registers, as the hardware does.
    struct Model {
        registers: [u32; 64],
        flr_capable: bool,
        no_soft_reset: bool,
        pending_reads: u32,
        /// Reads of the vendor ID that answer all-ones after a reset.
        silent_reads: u32,
        resets: Vec<ResetKind>,
        waited: u64,
    }

    impl Model {
        fn new(with_pm: bool, flr_capable: bool, no_soft_reset: bool) -> Self {
            let mut registers = [0u32; 64];
            registers[0] = 0x10d3_8086;
            registers[1] = CAPABILITIES_LIST | 0x0007;
            registers[3] = 0x0000_4010;
            registers[4] = 0xfeb8_0000;
            registers[15] = 0x0000_010b;
            registers[13] = if with_pm { 0x40 } else { 0x50 };
            registers[0x40 / 4] = 0x0000_5001;
            registers[0x50 / 4] = 0x0000_0010;
            Model {
                registers,
                flr_capable,
                no_soft_reset,
                pending_reads: 0,
                silent_reads: 0,
                resets: Vec::new(),
                waited: 0,
            }
        }
        fn clear_header(&mut self) {
            for &register in &SAVED {
                self.registers[usize::from(register / 4)] = 0;
            }
        }
    }

    impl ConfigSpace for Model {
        fn read(&mut self, offset: u16) -> u32 {
            match offset {
                0 if self.silent_reads > 0 => {
                    self.silent_reads -= 1;
                    u32::MAX
                }
                0x54 => u32::from(self.flr_capable) << 28,
                0x44 => self.registers[0x44 / 4] & 3 | u32::from(self.no_soft_reset) << 3,
                0x58 if self.pending_reads > 0 => {
                    self.pending_reads -= 1;
                    TRANSACTIONS_PENDING
                }
                _ => self.registers[usize::from(offset / 4)],
            }
        }
        fn write(&mut self, offset: u16, value: u32) {
            if offset == 0x58 && value & INITIATE_FLR != 0 {
                self.resets.push(ResetKind::FunctionLevel);
                self.clear_header();
                self.silent_reads = 3;
                return;
            }
            if offset == 0x44 {
                let before = self.registers[0x44 / 4] & 3;
                if before == D3_HOT && value & 3 == 0 && !self.no_soft_reset {
                    self.resets.push(ResetKind::PowerStateCycle);
                    self.clear_header();
                }
            }
            if offset == header::COMMAND {
                // Status (the high half) is read-only or write-1-to-clear.
                self.registers[1] = (self.registers[1] & 0xffff_0000) | (value & 0xffff);
                return;
            }
            self.registers[usize::from(offset / 4)] = value;
        }
        fn extended(&self) -> bool {
            false
        }
    }

    fn run(model: &mut Model) -> Result<ResetKind, ResetError> {
        let mut waited = 0;
        let result = reset(model, |microseconds| waited += microseconds);
        model.waited = waited;
        result
    }

    #[test]
    fn flr_when_offered_and_the_header_restored() {
        let mut model = Model::new(true, true, false);
        assert_eq!(run(&mut model), Ok(ResetKind::FunctionLevel));
        assert_eq!(model.resets, [ResetKind::FunctionLevel]);
        assert_eq!(model.registers[4], 0xfeb8_0000);
        assert_eq!(model.registers[3], 0x0000_4010);
        assert_eq!(model.registers[15], 0x0000_010b);
        // Quiesced: decode and bus mastering off, INTx disabled.
        assert_eq!(model.registers[1] & 0x407, 0x400);
        // 100 ms, then three 10 ms polls while the function did not answer.
        assert_eq!(model.waited, 130_000);
    }

    #[test]
    fn pending_transactions_are_waited_for_then_refused() {
        let mut model = Model::new(false, true, false);
        model.pending_reads = 2;
        assert_eq!(run(&mut model), Ok(ResetKind::FunctionLevel));
        assert_eq!(model.waited, 20_000 + 130_000);
        let mut stuck = Model::new(false, true, false);
        stuck.pending_reads = u32::MAX;
        assert_eq!(run(&mut stuck), Err(ResetError::TransactionsPending));
        assert!(stuck.resets.is_empty());
    }

    #[test]
    fn power_state_cycle_without_flr() {
        let mut model = Model::new(true, false, false);
        assert_eq!(run(&mut model), Ok(ResetKind::PowerStateCycle));
        assert_eq!(model.resets, [ResetKind::PowerStateCycle]);
        assert_eq!(model.registers[4], 0xfeb8_0000);
        assert_eq!(model.registers[0x44 / 4] & 3, 0, "back in D0");
        assert_eq!(model.waited, 20_000);
    }

    #[test]
    fn no_reset_costs_no_wait() {
        // No_Soft_Reset set: D3hot→D0 would not reset; no PCIe FLR either.
        let mut model = Model::new(true, false, true);
        assert_eq!(run(&mut model), Ok(ResetKind::None));
        assert!(model.resets.is_empty());
        assert_eq!(model.waited, 0);
        let mut bare = Model::new(false, false, false);
        assert_eq!(run(&mut bare), Ok(ResetKind::None));
        assert_eq!(bare.waited, 0);
        assert_eq!(bare.registers[1] & 0x407, 0x400);
    }

    #[test]
    fn a_function_that_never_answers_is_reported() {
        let mut model = Model::new(false, true, false);
        model.flr_capable = true;
        let result = reset(&mut model, |_| {});
        assert_eq!(result, Ok(ResetKind::FunctionLevel));
        let mut gone = Model::new(false, true, false);
        let mut waited = 0;
        let result = reset(&mut GoneAfterReset(&mut gone), |microseconds| {
            waited += microseconds
        });
        assert_eq!(result, Err(ResetError::NotResponding));
        assert_eq!(waited, 100_000 + 1_000_000);
    }

    /// Answers all-ones from the vendor ID once FLR was initiated.
    struct GoneAfterReset<'a>(&'a mut Model);

    impl ConfigSpace for GoneAfterReset<'_> {
        fn read(&mut self, offset: u16) -> u32 {
            if offset == 0 && !self.0.resets.is_empty() {
                return u32::MAX;
            }
            self.0.read(offset)
        }
        fn write(&mut self, offset: u16, value: u32) {
            self.0.write(offset, value)
        }
        fn extended(&self) -> bool {
            false
        }
    }
}
