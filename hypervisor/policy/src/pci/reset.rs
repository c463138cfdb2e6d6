//! The reset of a passed-through function before its partition starts and when it
//! restarts (docs/pci-iommu.md, "Reset"): Function Level Reset where the PCI Express
//! capability offers it, else a D3hot→D0 transition through the Power Management
//! capability where that resets the function (No_Soft_Reset clear), else a Secondary Bus
//! Reset of its upstream bridge when the function is alone below it, else none. The header
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
    /// The upstream bridge's Secondary Bus Reset (PCI-to-PCI Bridge 1.2 §3.2.5.17), for a
    /// function alone below it.
    SecondaryBus,
    /// Neither is offered: only the quiesce (command register, MSI and MSI-X enables).
    None,
}

impl ResetKind {
    /// The word the boot log uses.
    pub fn name(self) -> &'static str {
        match self {
            ResetKind::FunctionLevel => "flr",
            ResetKind::PowerStateCycle => "d3hot-d0",
            ResetKind::SecondaryBus => "secondary-bus",
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

/// Type 1 header dword 0x3C: Bridge Control in bits 31:16, Secondary Bus Reset its bit 6
/// (PCI-to-PCI Bridge 1.2 §3.2.5.17); Discard Timer Status (bit 10) is write-1-to-clear
/// and never written back as read.
const BRIDGE_CONTROL: u16 = 0x3c;
const SECONDARY_BUS_RESET: u32 = 1 << (16 + 6);
const DISCARD_TIMER_STATUS: u32 = 1 << (16 + 10);
/// Secondary Bus Reset held at least 1 ms (Trst, PCI Local Bus 3.0 Table 4-6; the bit in a
/// PCI Express bridge: PCIe Base 4.0 §7.5.1.3.13), then 100 ms before the first
/// configuration request below the bridge (PCIe Base 4.0 §6.6.1).
pub const SECONDARY_BUS_RESET_HOLD_MICROSECONDS: u64 = 1_000;
pub const SECONDARY_BUS_RESET_WAIT_MICROSECONDS: u64 = 100_000;

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

/// Which reset `space` offers, from its capability list (FLR, else D3hot→D0; a Secondary
/// Bus Reset is the caller's to offer, [`reset_behind`]).
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
    wait_microseconds: impl FnMut(u64),
) -> Result<ResetKind, ResetError> {
    reset_behind(space, None::<&mut NoBridge>, wait_microseconds).map(|outcome| outcome.kind)
}

/// What a reset did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub kind: ResetKind,
    /// How many of the saved header dwords read back different after the reset (before
    /// they were written back): evidence that the reset reached the function.
    pub changed_registers: u8,
}

/// No upstream bridge to reset through (the function is on bus 0, or not alone below its
/// bridge).
pub struct NoBridge;

impl ConfigSpace for NoBridge {
    fn read(&mut self, _offset: u16) -> u32 {
        u32::MAX
    }
    fn write(&mut self, _offset: u16, _value: u32) {}
    fn extended(&self) -> bool {
        false
    }
}

/// As [`reset`], with `bridge` the configuration space of the function's upstream bridge
/// when the function is alone below it (`topology::alone_below`): a function with neither
/// FLR nor a D3hot→D0 that resets gets the bridge's Secondary Bus Reset. The function-local
/// resets come first because a Secondary Bus Reset also retrains the link and resets
/// whatever else is below the bridge; with the function alone there, it is the last
/// resort rather than the first.
pub fn reset_behind<B: ConfigSpace>(
    space: &mut impl ConfigSpace,
    bridge: Option<&mut B>,
    mut wait_microseconds: impl FnMut(u64),
) -> Result<Outcome, ResetError> {
    // Bus mastering off before anything else (PCIe 4.0 §6.6.2: software stops new
    // requests before an FLR).
    let command = space.read(header::COMMAND) & 0xffff;
    space.write(header::COMMAND, (command & !0b111) | (1 << 10));
    let (kind, offset, bridge) = match (available(space), bridge) {
        ((ResetKind::None, _), Some(bridge)) => (ResetKind::SecondaryBus, 0, Some(bridge)),
        ((_, None), _) => {
            return Ok(Outcome {
                kind: ResetKind::None,
                changed_registers: 0,
            })
        }
        ((kind, Some(offset)), _) => (kind, offset, None),
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
        ResetKind::SecondaryBus => {
            if let Some(bridge) = bridge {
                let control = bridge.read(BRIDGE_CONTROL) & !DISCARD_TIMER_STATUS;
                bridge.write(BRIDGE_CONTROL, control | SECONDARY_BUS_RESET);
                wait_microseconds(SECONDARY_BUS_RESET_HOLD_MICROSECONDS);
                bridge.write(BRIDGE_CONTROL, control & !SECONDARY_BUS_RESET);
                wait_microseconds(SECONDARY_BUS_RESET_WAIT_MICROSECONDS);
            }
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
    let mut changed_registers = 0;
    for (&value, &register) in saved.iter().zip(SAVED.iter()) {
        if space.read(register) != value {
            changed_registers += 1;
        }
        space.write(register, value);
    }
    let command = space.read(header::COMMAND) & 0xffff;
    space.write(header::COMMAND, (command & !0b111) | (1 << 10));
    Ok(Outcome {
        kind,
        changed_registers,
    })
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

    /// The function's upstream bridge: its Bridge Control dword, and the function below it,
    /// which a Secondary Bus Reset (set, held, cleared) resets.
    struct Bridge<'a> {
        control: u32,
        below: &'a std::cell::RefCell<Model>,
        clock: &'a std::cell::Cell<u64>,
        asserted_at: Option<u64>,
        held: Vec<u64>,
    }

    impl ConfigSpace for Bridge<'_> {
        fn read(&mut self, offset: u16) -> u32 {
            if offset == BRIDGE_CONTROL {
                // Interrupt pin 1, Discard Timer Status set (write-1-to-clear).
                self.control | 0x0100 | DISCARD_TIMER_STATUS
            } else {
                0
            }
        }
        fn write(&mut self, offset: u16, value: u32) {
            assert_eq!(offset, BRIDGE_CONTROL);
            assert_eq!(value & DISCARD_TIMER_STATUS, 0, "a W1C bit written back");
            match (self.asserted_at, value & SECONDARY_BUS_RESET != 0) {
                (None, true) => self.asserted_at = Some(self.clock.get()),
                (Some(at), false) => {
                    self.held.push(self.clock.get() - at);
                    self.asserted_at = None;
                    let mut model = self.below.borrow_mut();
                    model.resets.push(ResetKind::SecondaryBus);
                    model.clear_header();
                    model.silent_reads = 2;
                }
                _ => {}
            }
            self.control = value & !0x0100;
        }
        fn extended(&self) -> bool {
            false
        }
    }

    /// The function through the shared cell the bridge resets.
    struct Shared<'a>(&'a std::cell::RefCell<Model>);

    impl ConfigSpace for Shared<'_> {
        fn read(&mut self, offset: u16) -> u32 {
            self.0.borrow_mut().read(offset)
        }
        fn write(&mut self, offset: u16, value: u32) {
            self.0.borrow_mut().write(offset, value)
        }
        fn extended(&self) -> bool {
            false
        }
    }

    fn behind_bridge(model: Model) -> (Result<ResetKind, ResetError>, Model, Vec<u64>, u64) {
        let (outcome, model, held, waited) = behind_bridge_outcome(model);
        (outcome.map(|outcome| outcome.kind), model, held, waited)
    }

    fn behind_bridge_outcome(model: Model) -> (Result<Outcome, ResetError>, Model, Vec<u64>, u64) {
        let cell = std::cell::RefCell::new(model);
        let clock = std::cell::Cell::new(0u64);
        let mut bridge = Bridge {
            control: 0,
            below: &cell,
            clock: &clock,
            asserted_at: None,
            held: Vec::new(),
        };
        let result = reset_behind(&mut Shared(&cell), Some(&mut bridge), |microseconds| {
            clock.set(clock.get() + microseconds)
        });
        assert_eq!(bridge.control & SECONDARY_BUS_RESET, 0, "reset released");
        let held = core::mem::take(&mut bridge.held);
        drop(bridge);
        (result, cell.into_inner(), held, clock.get())
    }

    #[test]
    fn secondary_bus_reset_for_a_function_without_its_own_reset() {
        // No PM capability, no FLR: like QEMU's `edu`.
        let (result, model, held, waited) = behind_bridge(Model::new(false, false, false));
        assert_eq!(result, Ok(ResetKind::SecondaryBus));
        assert_eq!(model.resets, [ResetKind::SecondaryBus]);
        assert!(held.iter().all(|&held| held >= 1_000), "{held:?}");
        assert_eq!(held.len(), 1);
        // 1 ms held, 100 ms before configuration requests, two 10 ms polls while the
        // function did not answer.
        assert_eq!(waited, 1_000 + 100_000 + 20_000);
        assert_eq!(model.registers[4], 0xfeb8_0000, "BAR restored");
        assert_eq!(model.registers[15], 0x0000_010b, "interrupt line restored");
        assert_eq!(model.registers[1] & 0x407, 0x400);
        // The model clears the cache line/latency dword, BAR0 and the interrupt line (the
        // other saved dwords were 0 already).
        let (outcome, _, _, _) = behind_bridge_outcome(Model::new(false, false, false));
        assert_eq!(outcome.map(|outcome| outcome.changed_registers), Ok(3));
    }

    #[test]
    fn a_function_reset_of_its_own_comes_before_the_bus_reset() {
        let (result, model, held, _) = behind_bridge(Model::new(true, true, false));
        assert_eq!(result, Ok(ResetKind::FunctionLevel));
        assert!(held.is_empty());
        assert_eq!(model.resets, [ResetKind::FunctionLevel]);
        let (result, _, held, _) = behind_bridge(Model::new(true, false, false));
        assert_eq!(result, Ok(ResetKind::PowerStateCycle));
        assert!(held.is_empty());
        // Without a bridge to reset through, such a function gets none.
        let mut alone = Model::new(false, false, false);
        assert_eq!(run(&mut alone), Ok(ResetKind::None));
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
