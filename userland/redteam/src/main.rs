//! The red-team guest: one ELF that, by its command line, either attacks the hypervisor and
//! its neighbours from inside a partition or is the neighbour being attacked.
//!
//! * `role=victim`: keeps a heartbeat and a memory pattern, records every interrupt and NMI
//!   it did not ask for, and powers the machine off when the attackers are done
//!   ([`victim`]). Keys: `level-pin=<pin> level-vector=<vector>` (its own I/O APIC pin,
//!   programmed level-triggered so an attacker can try to share the vector).
//! * `role=attacker`: installs its own GDT/TSS/IDT/page tables ([`trap`]) so that faulting
//!   instructions can be probed, starts its second core (`second-core=<apic id>`), runs
//!   `attacks=<pattern>,…` or `attack=<name>` on its first start (batch; a pattern is a
//!   name or a prefix ending in `*`) and `fatal-attacks=<name>,…` one per start of a
//!   restarting partition, then resets until the restart limit or, with `after-list=stop`,
//!   stops ([`attacker`]). Keys the attacks read: `victim-core=`, `victim-pin=`,
//!   `victim-vector=`, `own-pin=`, `doorbell-budget=`, `user-granted=<number>,…` (the
//!   call numbers the table's `user-hypercalls` grants), and for the fatal attacks
//!   `hole=`, `hypervisor=`, `victim-ram=`, `foreign-channel=`, `split-page=`.
//!
//! Every attack prints `attack <name>: <outcome> [<key>=<value> …]` ([`attacks`]); the
//! catalog of names, expected outcomes and their reasons is docs/redteam.md, and
//! `cargo xtask redteam` (tools/xtask/src/redteam.rs) judges the transcript. The runtime
//! (console, hypercalls, x2APIC, start-up of further cores) is `tessera-guest`.
//!
//! Built for any other target (the workspace's host lints), the crate is an empty program:
//! everything above needs the bare-metal target.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod attacker;
#[cfg(target_os = "none")]
mod attacks;
#[cfg(target_os = "none")]
mod instructions;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod victim;

#[cfg(target_os = "none")]
use tessera_guest::{hypercall, println, BootInfo};

#[cfg(target_os = "none")]
tessera_guest::entry!(main);

/// Exit status of a command line without a known role.
#[cfg(target_os = "none")]
const EXIT_NO_ROLE: u64 = 40;

/// On the host there is nothing to run.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("tessera-redteam is a guest: build it with --target x86_64-unknown-none");
}

#[cfg(target_os = "none")]
fn main(info: &BootInfo) {
    match info.command_line().value("role") {
        Some("victim") => victim::run(info),
        Some("attacker") => attacker::run(info),
        other => {
            println!("redteam: unknown role {other:?} (role=victim or role=attacker)");
            hypercall::stop_self(EXIT_NO_ROLE)
        }
    }
}
