//! The attacks: one catalog of names and routines, the context they share, and the one line
//! each prints — `attack <name>: <outcome> [<key>=<value> …]`.
//!
//! The outcome is what the attacker itself saw (`gp`, `ud`, `all-ones`, `sent`, `own-only`,
//! `refused`, …); the runner (tools/xtask/src/redteam.rs) joins it with what the hypervisor
//! printed and what the victim saw, and compares the whole with its expectation. Fields
//! named like a hypervisor counter (`unassigned-port-accesses=3`) are the attacker's own
//! count of the events it caused, which the runner sums and compares with the hypervisor's
//! `exits:` line.
//!
//! Batch attacks return; fatal attacks (in [`FATAL`]) end the partition's run and are
//! judged by the hypervisor's `contained:`/`restarting:` line, with the attacker's own line
//! when the attack came back.

pub mod apic;
pub mod cpu;
pub mod fatal;
pub mod hypercalls;
pub mod ioapic;
pub mod ipi;
pub mod logging;
pub mod msr;
pub mod ports;

use core::fmt;

use tessera_guest::command_line::CommandLine;
use tessera_guest::processor::{self, Vendor};
use tessera_guest::{println, time, BootInfo};

/// What every attack may need to know, from the command line and the start.
pub struct Context<'a> {
    pub info: &'a BootInfo,
    pub command_line: CommandLine<'a>,
    /// This core (the partition's boot core) and the partition's second core, if started.
    pub own_core: u32,
    pub second_core: Option<u32>,
    /// The victim's core (`victim-core=`).
    pub victim_core: u32,
    /// I/O APIC pins: the victim's (`victim-pin=`) and this partition's own (`own-pin=`), and
    /// the level-triggered vector the victim programmed on its pin (`victim-vector=`).
    pub victim_pin: u8,
    pub own_pin: u8,
    pub victim_vector: u8,
    /// The guest-physical base of channel 0, if the partition is a member.
    pub channel: Option<u64>,
    /// The channel's doorbell budget in rings per second (`doorbell-budget=`).
    pub doorbell_budget: u64,
    pub vendor: Vendor,
    /// The attack being run (set by [`run`]).
    name: &'static str,
}

impl<'a> Context<'a> {
    pub fn new(info: &'a BootInfo, own_core: u32) -> Context<'a> {
        let command_line = info.command_line();
        let number = |key: &str, default: u64| command_line.number(key).unwrap_or(default);
        let channel = tessera_guest::hypercall::channel_address(0);
        Context {
            info,
            command_line,
            own_core,
            second_core: command_line
                .number("second-core")
                .and_then(|core| u32::try_from(core).ok()),
            victim_core: number("victim-core", 0) as u32,
            victim_pin: number("victim-pin", 11) as u8,
            own_pin: number("own-pin", 10) as u8,
            victim_vector: number("victim-vector", 0x70) as u8,
            channel: u64::try_from(channel).ok(),
            doorbell_budget: number("doorbell-budget", 100),
            vendor: processor::vendor(),
            name: "",
        }
    }

    /// Prints this attack's line: `attack <name>: <outcome> <details>`.
    pub fn report(&self, outcome: &str, details: fmt::Arguments<'_>) {
        println!("attack {}: {outcome} {details}", self.name);
    }

    /// The attack's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// One attack: its name and what runs it.
pub struct Attack {
    pub name: &'static str,
    pub run: fn(&Context),
}

/// The batch attacks, in the order they run. Each returns after printing its line.
pub const BATCH: &[&[Attack]] = &[
    cpu::ATTACKS,
    msr::ATTACKS,
    apic::ATTACKS,
    ports::ATTACKS,
    ioapic::ATTACKS,
    hypercalls::ATTACKS,
    ipi::ATTACKS,
    logging::ATTACKS,
];

/// The attacks that end the partition's run (each on its own start of a restarting
/// partition), and the ones that end a batch (run last).
pub const FATAL: &[&[Attack]] = &[fatal::ATTACKS];

/// Whether `name` matches `pattern`: equal, or `pattern` ends in `*` and `name` starts with
/// the rest (`ipi-*`), or `pattern` is `*`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Runs every attack of `catalog` that one of the comma-separated `patterns` names, in
/// catalog order.
pub fn run_matching(context: &mut Context, catalog: &[&[Attack]], patterns: &str) {
    for attack in catalog.iter().flat_map(|group| group.iter()) {
        if patterns
            .split(',')
            .any(|pattern| matches(pattern, attack.name))
        {
            run(context, attack);
        }
    }
}

/// Finds an attack by its exact name.
pub fn find(catalog: &'static [&'static [Attack]], name: &str) -> Option<&'static Attack> {
    catalog
        .iter()
        .flat_map(|group| group.iter())
        .find(|attack| attack.name == name)
}

/// Runs one attack with its name set for [`Context::report`].
pub fn run(context: &mut Context, attack: &Attack) {
    context.name = attack.name;
    (attack.run)(context);
    context.name = "";
}

/// Waits up to `microseconds` for `done`; returns whether it became true.
pub fn wait_for(microseconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let limit = time::tsc_hz().saturating_mul(microseconds) / 1_000_000;
    let start = processor::rdtsc();
    loop {
        if done() {
            return true;
        }
        if processor::rdtsc().wrapping_sub(start) > limit {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// A short outcome word for a probe's result: `ok` or the fault's name.
pub fn outcome_of<T>(result: &Result<T, crate::trap::Fault>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(fault) => fault.name(),
    }
}

/// A short text built from pieces (no heap): what does not fit is cut off.
pub struct Details {
    bytes: [u8; 256],
    length: usize,
}

impl Details {
    pub fn new() -> Details {
        Details {
            bytes: [0; 256],
            length: 0,
        }
    }

    pub fn add(&mut self, arguments: fmt::Arguments<'_>) {
        let _ = fmt::Write::write_fmt(self, arguments);
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("?")
    }
}

impl Default for Details {
    fn default() -> Details {
        Details::new()
    }
}

impl fmt::Write for Details {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.length;
        let take = text.len().min(room);
        self.bytes[self.length..self.length + take].copy_from_slice(&text.as_bytes()[..take]);
        self.length += take;
        Ok(())
    }
}
