//! A flood of guest-caused log lines: refused IA32_APIC_BASE writes as fast as one core can
//! issue them. The hypervisor logs a burst and then a bounded rate of such lines per
//! partition and counts the rest (`suppressed-log-lines`), so that one partition cannot
//! keep the console — one polled UART under one lock — busy for everyone else. The attack
//! reports its `attempts=`; the runner checks that the logged lines and the suppressed
//! count add up to them exactly and that some were suppressed. Run last in the batch: it
//! uses up the partition's allowance, so it then waits for it to refill before the
//! partition's next guest-caused lines (start-up IPIs of later attacks) must appear.

use super::msr::{read, write};
use super::{wait_for, Attack, Context};

pub const ATTACKS: &[Attack] = &[Attack {
    name: "log-flood-apic-base",
    run: apic_base_flood,
}];

const IA32_APIC_BASE: u64 = 0x1b;
/// Leaving x2APIC mode: refused with #GP and a `refused:` line each time.
const APIC_BASE_X2APIC: u64 = 1 << 10;
const ATTEMPTS: u64 = 400;
/// The hypervisor's allowance (64 lines, 32 a second after them) refills in 2 s.
const REFILL_MICROSECONDS: u64 = 2_500_000;

fn apic_base_flood(context: &Context) {
    let Ok(base) = read(IA32_APIC_BASE) else {
        context.report("read-refused", format_args!(""));
        return;
    };
    let mut refused = 0;
    for _ in 0..ATTEMPTS {
        if write(IA32_APIC_BASE, base & !APIC_BASE_X2APIC).is_err() {
            refused += 1;
        }
    }
    wait_for(REFILL_MICROSECONDS, || false);
    let word = if refused == ATTEMPTS {
        "flooded"
    } else {
        "accepted"
    };
    context.report(word, format_args!("attempts={ATTEMPTS} refused={refused}"));
}
