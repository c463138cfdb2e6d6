//! The attacker's life in its partition: its own traps on every core, a second core that
//! idles (HLT) until it is needed as a target or for a storm, and the two ways of running
//! attacks.
//!
//! * Batch (`attacks=<pattern>,…` or `attack=<name>`, first start only): waits until the
//!   victim says it is ready (a mark in channel 0), then runs every batch attack the
//!   patterns name.
//! * Fatal sequence (`fatal-attacks=<name>,…`, `on-fault = "restart"`): start n (the
//!   hypervisor appends ` tessera.restarts=<n>` to the command line) prints `attack <name>:
//!   running (start <n>)` and runs the n-th attack, after the batch on start 0; if it comes
//!   back, the partition resets itself (port 0xCF9). Starts past the list reset again
//!   (`restart-loop: start <n>`) until the hypervisor's restart limit stops the partition,
//!   or with `after-list=stop` stop the partition (`attacks: done`).

use core::sync::atomic::{AtomicU32, Ordering};

use tessera_guest::{hypercall, println, processor, smp, time, x2apic, BootInfo};

use crate::attacks::{self, Context};
use crate::instructions::*;
use crate::trap::{self, probe};

/// The mark the victim writes into word 0 of channel 0 once its handlers are installed and
/// its I/O APIC pin is programmed.
pub const VICTIM_READY: u64 = 0x7669_6374_696d_2121;
/// How long the attacker waits for the victim (microseconds of TSC time).
const VICTIM_TIMEOUT_MICROSECONDS: u64 = 60_000_000;
/// The vector that wakes the second core for a command.
const WAKE_VECTOR: u8 = 0x50;
/// The reset register and its hard-reset value (ACPI 6.5 4.8.3.6; the partition's own).
const RESET_PORT: u64 = 0xcf9;
const RESET_VALUE: u64 = 0x06;
/// Exit statuses.
const EXIT_SETUP_FAILED: u64 = 20;
const EXIT_RESET_RETURNED: u64 = 12;

/// What the second core is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SecondCoreCommand {
    Nothing = 0,
    StormAlignmentCheck = 1,
    StormSingleStep = 2,
    /// CLI; HLT for good.
    Halt = 3,
    /// The local APIC timer at its fastest (periodic, initial count 1).
    StormTimer = 4,
}

/// Set by the second core just before it halts for good.
pub static SECOND_CORE_HALTING: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);
/// The vector and rate of the timer storm.
pub const TIMER_STORM_VECTOR: u8 = 0x58;
const TIMER_STORM_HZ: u64 = 20_000;

static COMMAND: AtomicU32 = AtomicU32::new(SecondCoreCommand::Nothing as u32);
/// Bumped each time the second core (re)starts.
static SECOND_GENERATION: AtomicU32 = AtomicU32::new(0);
/// The second core's LVT timer entry and timer initial count as it found them when it
/// started (x2APIC MSRs 0x832 and 0x838): what the last run left, after the restart.
static SECOND_CORE_TIMER_AT_START: [core::sync::atomic::AtomicU64; 2] =
    [const { core::sync::atomic::AtomicU64::new(0) }; 2];

/// How many times the second core has started.
pub fn second_core_generation() -> u32 {
    SECOND_GENERATION.load(Ordering::Acquire)
}

/// Starts (or restarts) the second core and waits until it runs with its traps installed.
pub fn start_second_core(info: &BootInfo, apic_id: u32) -> bool {
    let generation = second_core_generation();
    if let Err(error) = smp::start_core(info, apic_id, second_core_main) {
        println!("attacker: core {apic_id} did not start: {error:?}");
        return false;
    }
    attacks::wait_for(2_000_000, || second_core_generation() > generation)
}

/// Leaves `command` for the second core and wakes it.
pub fn command_second_core(apic_id: u32, command: SecondCoreCommand) {
    COMMAND.store(command as u32, Ordering::Release);
    if let Some(apic) = x2apic::get() {
        apic.send_ipi(apic_id, x2apic::DeliveryMode::Fixed, WAKE_VECTOR);
    }
}

/// The second core: traps, then HLT with interrupts on, looking for commands after each
/// interrupt.
fn second_core_main(apic_id: u32) {
    // SAFETY: the runtime enabled this core's x2APIC before calling ap_main; its LVT timer
    // and initial-count registers exist and reading them has no side effect.
    let (timer, count) = unsafe { (processor::read_msr(0x832), processor::read_msr(0x838)) };
    SECOND_CORE_TIMER_AT_START[0].store(timer, Ordering::Release);
    SECOND_CORE_TIMER_AT_START[1].store(count, Ordering::Release);
    trap::install(apic_id);
    SECOND_GENERATION.fetch_add(1, Ordering::AcqRel);
    loop {
        match COMMAND.swap(SecondCoreCommand::Nothing as u32, Ordering::AcqRel) {
            1 => storm_alignment_check(),
            2 => storm_single_step(),
            3 => halt_forever(),
            4 => storm_timer(),
            _ => {}
        }
        processor::wait_for_interrupt();
    }
}

/// CR0.AM on, then ring 3 with RFLAGS.AC doing unaligned loads forever.
fn storm_alignment_check() -> ! {
    trap::current().set_mode(trap::Mode::Storm);
    let cr0 = probe(redteam_read_cr0, [0; 4]).unwrap_or(0);
    probe(redteam_write_cr0, [cr0 | (1 << 18), 0, 0, 0]).ok();
    trap::enter_user_forever(redteam_user_unaligned_loop, trap::RFLAGS_ALIGNMENT_CHECK)
}

/// RFLAGS.TF on, then a jump to itself forever.
fn storm_single_step() -> ! {
    trap::current().set_mode(trap::Mode::Storm);
    // SAFETY: sets RFLAGS.TF and loops; the core's traps are in storm mode, so every #DB
    // returns to the loop. Only the hypervisor ends it.
    unsafe {
        core::arch::asm!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "2:",
            "jmp 2b",
            options(noreturn)
        )
    }
}

/// Interrupts masked, then HLT: only an NMI (or INIT) ends this (SDM Vol. 3A 9.10 HLT).
fn halt_forever() -> ! {
    SECOND_CORE_HALTING.store(true, Ordering::Release);
    loop {
        processor::disable_interrupts();
        processor::halt();
    }
}

/// The local APIC timer in periodic mode at [`TIMER_STORM_HZ`]: interrupts handled by this
/// core's traps without a VM exit (the x2APIC is the partition's). The restart must still
/// happen, and must leave the timer stopped (the vCPU's `clear_for_restart` resets the local
/// APIC). Not faster: QEMU emulates the timer with host timers, and a period of a few
/// nanoseconds stalls the whole emulator, every partition with it — a limit of the
/// emulator, not of the hypervisor.
fn storm_timer() -> ! {
    if let Some(apic) = x2apic::get() {
        let count = time::calibrate_apic_timer(apic) / TIMER_STORM_HZ;
        apic.set_timer_divisor(1);
        apic.set_timer(TIMER_STORM_VECTOR, x2apic::TimerMode::Periodic, false);
        apic.set_timer_initial_count(u32::try_from(count).unwrap_or(u32::MAX).max(1));
    }
    loop {
        processor::wait_for_interrupt();
    }
}

/// Asks for a reset of the partition (its own reset register).
pub fn reset() -> ! {
    tessera_guest::console::flush();
    probe(redteam_out8, [RESET_PORT, RESET_VALUE, 0, 0]).ok();
    println!("attacker: reset request returned");
    hypercall::stop_self(EXIT_RESET_RETURNED)
}

/// The attacker's main.
pub fn run(info: &BootInfo) -> ! {
    let command_line = info.command_line();
    let restarts = command_line.number("tessera.restarts").unwrap_or(0);
    let apic = match x2apic::enable() {
        Ok(apic) => apic,
        Err(error) => {
            println!("attacker: cannot use the x2APIC: {error:?}");
            hypercall::stop_self(EXIT_SETUP_FAILED)
        }
    };
    let own_core = apic.id();
    trap::install(own_core);
    let mut context = Context::new(info, own_core);
    println!(
        "attacker {}: core {own_core}, start {restarts}",
        command_line.value("name").unwrap_or("?")
    );
    if let Some(second) = context.second_core {
        if !start_second_core(info, second) {
            context.second_core = None;
        }
    }
    if restarts == 0 {
        let patterns = command_line
            .value("attacks")
            .or_else(|| command_line.value("attack"));
        if let Some(patterns) = patterns {
            wait_for_victim(&context);
            attacks::run_matching(&mut context, attacks::BATCH, patterns);
            println!("batch: done");
        }
    }
    let list = command_line.value("fatal-attacks").unwrap_or("");
    let stop_after_list = command_line.value("after-list") == Some("stop");
    fatal_sequence(&mut context, list, restarts, stop_after_list)
}

/// Waits until the victim has marked channel 0 ready (or gives up and goes on).
fn wait_for_victim(context: &Context) {
    let Some(channel) = context.channel else {
        println!("attacker: no channel 0; not waiting for the victim");
        return;
    };
    // SAFETY: the hypervisor maps channel 0's memory (at least one 4 KiB page) read-write at
    // this 2 MiB-aligned guest-physical address, identity-mapped; the word is only read.
    let ready = || unsafe { core::ptr::read_volatile(channel as *const u64) } == VICTIM_READY;
    if !attacks::wait_for(VICTIM_TIMEOUT_MICROSECONDS, ready) {
        println!("attacker: the victim never marked itself ready; attacking anyway");
    }
}

/// Runs the attack of this start (`fatal-attacks=`, by start number), then resets the
/// partition; past the end of the list, resets again (`restart-loop`) or, with
/// `after-list=stop`, stops. First, for an attack of the previous start that left something
/// behind for the restart to clear, reports what this start found
/// (`attack <previous>: after-restart <outcome>`).
fn fatal_sequence(context: &mut Context, list: &str, start: u64, stop_after_list: bool) -> ! {
    let mut names = list.split(',').filter(|name| !name.is_empty());
    if let Some(previous) = start
        .checked_sub(1)
        .and_then(|index| names.clone().nth(index as usize))
    {
        after_restart(context, previous);
    }
    match names.nth(start as usize) {
        Some(name) => match attacks::find(attacks::FATAL, name) {
            Some(attack) => {
                println!("attack {name}: running (start {start})");
                tessera_guest::console::flush();
                attacks::run(context, attack);
            }
            None => println!("attack {name}: unknown"),
        },
        None if stop_after_list => {
            println!("attacks: done (start {start})");
            hypercall::stop_self(0)
        }
        None => println!("restart-loop: start {start}, resetting"),
    }
    reset()
}

/// What a restart must have cleared after `previous`, the attack of the last start: the
/// second core's local APIC timer (restarts reset the local APIC), the partition's I/O APIC
/// pins (restarts mask them).
fn after_restart(context: &Context, previous: &str) {
    match previous {
        "storm-timer" => {
            let timer = SECOND_CORE_TIMER_AT_START[0].load(Ordering::Acquire);
            let count = SECOND_CORE_TIMER_AT_START[1].load(Ordering::Acquire);
            // LVT bit 16 masks the timer; an initial count of 0 stops it (SDM Vol. 3A 11.5.4).
            let word = if timer & (1 << 16) != 0 && count == 0 {
                "timer-stopped"
            } else {
                "timer-running"
            };
            println!("attack {previous}: after-restart {word} lvt-timer={timer:#x} initial-count={count}");
        }
        "restart-with-unmasked-pin" => {
            let low = attacks::ioapic::read_register(0x10 + 2 * u32::from(context.own_pin));
            let word = if low & (1 << 16) != 0 {
                "masked"
            } else {
                "unmasked"
            };
            println!("attack {previous}: after-restart {word} low={low:#x}");
        }
        _ => {}
    }
}
