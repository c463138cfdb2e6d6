//! Ports the partition does not own. Each access exits; the hypervisor reads all-ones and
//! drops writes, "as on a bus with nothing behind the address" (hypervisor/src/exits/io.rs),
//! and counts each in `unassigned-port-accesses` — which is why every attack reports how
//! many accesses it made. The machine-wide ports (PIC, PIT, CMOS/NMI mask, DMA, 8042 and
//! fast-A20 reset lines, APM/SMI, PCI configuration) and the ACPI fixed hardware are the
//! ones whose writes would reach every partition if they were passed through.

use super::{Attack, Context};
use crate::instructions::*;
use crate::trap::{probe, probe_user, UserOutcome};

pub const ATTACKS: &[Attack] = &[
    Attack {
        name: "port-pci-config",
        run: pci_config,
    },
    Attack {
        name: "port-pit",
        run: pit,
    },
    Attack {
        name: "port-pic",
        run: pic,
    },
    Attack {
        name: "port-cmos-nmi-mask",
        run: cmos,
    },
    Attack {
        name: "port-dma",
        run: dma,
    },
    Attack {
        name: "port-reset-lines",
        run: reset_lines,
    },
    Attack {
        name: "port-apm-smi",
        run: apm_smi,
    },
    Attack {
        name: "port-acpi-power-off",
        run: acpi_power_off,
    },
    Attack {
        name: "port-sleep-not-s5",
        run: sleep_not_s5,
    },
    Attack {
        name: "port-foreign-uart",
        run: foreign_uart,
    },
    Attack {
        name: "port-hypervisor-console",
        run: hypervisor_console,
    },
    Attack {
        name: "port-wrap-around",
        run: wrap_around,
    },
    Attack {
        name: "port-straddle-own",
        run: straddle_own,
    },
    Attack {
        name: "port-operand-sizes",
        run: operand_sizes,
    },
    Attack {
        name: "port-rep-outsb",
        run: rep_outsb,
    },
    Attack {
        name: "port-user-mode",
        run: user_mode,
    },
];

/// Counts accesses and whether every read was all-ones (for its width) and every access
/// completed without an exception.
struct Probe {
    accesses: u64,
    wrong: Option<(u16, u64)>,
    faulted: Option<(u16, &'static str)>,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            accesses: 0,
            wrong: None,
            faulted: None,
        }
    }

    fn read(&mut self, port: u16, size: u8) -> u64 {
        let (routine, ones): (crate::trap::Routine, u64) = match size {
            1 => (redteam_in8, 0xff),
            2 => (redteam_in16, 0xffff),
            _ => (redteam_in32, 0xffff_ffff),
        };
        self.accesses += 1;
        match probe(routine, [u64::from(port), 0, 0, 0]) {
            Ok(value) => {
                if value != ones && self.wrong.is_none() {
                    self.wrong = Some((port, value));
                }
                value
            }
            Err(fault) => {
                self.faulted.get_or_insert((port, fault.name()));
                0
            }
        }
    }

    fn write(&mut self, port: u16, size: u8, value: u64) {
        let routine: crate::trap::Routine = match size {
            1 => redteam_out8,
            2 => redteam_out16,
            _ => redteam_out32,
        };
        self.accesses += 1;
        if let Err(fault) = probe(routine, [u64::from(port), value, 0, 0]) {
            self.faulted.get_or_insert((port, fault.name()));
        }
    }

    fn write_bytes(&mut self, port: u16, text: &[u8]) {
        for &byte in text {
            self.write(port, 1, u64::from(byte));
        }
    }

    /// `all-ones` when every read was all-ones and nothing faulted.
    fn report(&self, context: &Context) {
        match (self.faulted, self.wrong) {
            (Some((port, name)), _) => context.report(
                name,
                format_args!("port={port:#x} unassigned-port-accesses={}", self.accesses),
            ),
            (None, Some((port, value))) => context.report(
                "read-data",
                format_args!(
                    "port={port:#x} value={value:#x} unassigned-port-accesses={}",
                    self.accesses
                ),
            ),
            (None, None) => context.report(
                "all-ones",
                format_args!("unassigned-port-accesses={}", self.accesses),
            ),
        }
    }
}

/// PCI configuration mechanism #1: address 0xCF8, data 0xCFC–0xCFF (PCI Local Bus 3.0
/// 3.2.2.3.2). A partition that could use it could reprogram any device's BARs.
fn pci_config(context: &Context) {
    let mut probe = Probe::new();
    probe.write(0xcf8, 4, 0x8000_0000);
    probe.read(0xcfc, 4);
    probe.read(0xcf8, 4);
    probe.write(0xcf8, 4, 0x8000_0010);
    probe.write(0xcfc, 4, 0xffff_ffff);
    probe.read(0xcfe, 2);
    probe.report(context);
}

/// The 8254 PIT (0x40–0x43): channel 0 drives the legacy timer interrupt.
fn pit(context: &Context) {
    let mut probe = Probe::new();
    for port in 0x40..=0x42 {
        probe.read(port, 1);
    }
    probe.write(0x43, 1, 0x34);
    probe.write(0x40, 1, 0x01);
    probe.write(0x40, 1, 0x00);
    probe.read(0x40, 1);
    probe.report(context);
}

/// The 8259 pair (0x20–0x21, 0xA0–0xA1): an ICW1 would reinitialise the machine's PIC.
fn pic(context: &Context) {
    let mut probe = Probe::new();
    for port in [0x20, 0x21, 0xa0, 0xa1] {
        probe.read(port, 1);
    }
    probe.write(0x20, 1, 0x11);
    probe.write(0x21, 1, 0x20);
    probe.write(0xa1, 1, 0x00);
    probe.report(context);
}

/// CMOS index 0x70 (bit 7 masks NMIs machine-wide) and data 0x71, with the shutdown
/// status byte (0x0F) that steers a reset.
fn cmos(context: &Context) {
    let mut probe = Probe::new();
    probe.write(0x70, 1, 0x8f);
    probe.read(0x71, 1);
    probe.write(0x71, 1, 0x0a);
    probe.read(0x70, 1);
    probe.report(context);
}

/// The 8237 DMA controllers and page registers: a device-independent path to memory.
fn dma(context: &Context) {
    let mut probe = Probe::new();
    for port in 0x00..=0x0f {
        probe.read(port, 1);
    }
    probe.write(0x0a, 1, 0x04);
    probe.write(0x04, 1, 0x00);
    probe.write(0x87, 1, 0x10);
    probe.read(0x87, 1);
    probe.write(0xd4, 1, 0x04);
    probe.report(context);
}

/// System control port A (0x92, bit 0 = fast reset), the 8042's pulse-reset command
/// (0xFE to 0x64) and 0xCF9 without its reset bit (not a reset request, so an ordinary
/// unowned access): none may reset the machine.
fn reset_lines(context: &Context) {
    let mut probe = Probe::new();
    probe.read(0x92, 1);
    probe.write(0x92, 1, 0x01);
    probe.read(0x64, 1);
    probe.write(0x64, 1, 0xfe);
    probe.write(0xcf9, 1, 0x02);
    probe.report(context);
}

/// APM control 0xB2: a write raises an SMI on most chipsets.
fn apm_smi(context: &Context) {
    let mut probe = Probe::new();
    probe.write(0xb2, 1, 0x00);
    probe.read(0xb2, 1);
    probe.read(0xb3, 1);
    probe.report(context);
}

/// The ACPI fixed hardware of both emulated chipsets: PM1a control with SLP_EN and the S5
/// sleep type would switch the whole machine off (ACPI 6.5 4.8.3.2). ICH9 (QEMU q35) has
/// its PM block at 0x600, PIIX4 (Bochs) at 0xB000; the PM timer is at +8.
fn acpi_power_off(context: &Context) {
    let mut probe = Probe::new();
    for base in [0x600u16, 0xb000] {
        probe.read(base + 4, 2);
        probe.write(base + 4, 2, 1 << 13);
        probe.write(base + 4, 2, (1 << 13) | (5 << 10));
        probe.read(base + 8, 4);
    }
    probe.report(context);
}

/// The partition's own sleep register with SLP_EN but a sleep type other than S5: not a
/// power-off request (hypervisor/policy/src/virtual_platform.rs), so an ordinary unowned
/// write, dropped.
fn sleep_not_s5(context: &Context) {
    let mut probe = Probe::new();
    probe.write(0x510, 1, (1 << 5) | (3 << 2));
    probe.report(context);
}

/// The victim's UART (0x3F8): the runner checks that `INJECTED` never shows on it.
fn foreign_uart(context: &Context) {
    let mut probe = Probe::new();
    probe.write_bytes(0x3f8, b"INJECTED by intruder\r\n");
    probe.read(0x3fd, 1);
    probe.report(context);
}

/// The hypervisor console (0x3E8): a forged marker must not appear there.
fn hypervisor_console(context: &Context) {
    let mut probe = Probe::new();
    probe.write_bytes(0x3e8, b"\r\nPANIC: forged by intruder\r\n");
    probe.read(0x3ed, 1);
    probe.report(context);
}

/// Accesses at 0xFFFF that run past the end of the port space (SDM Vol. 1 19.3: the
/// upper bytes wrap to port 0).
fn wrap_around(context: &Context) {
    let mut probe = Probe::new();
    probe.read(0xffff, 4);
    probe.read(0xffff, 2);
    probe.write(0xffff, 4, 0);
    probe.report(context);
}

/// A 4-byte read at the partition's own UART base + 6 covers two of its ports and two that
/// are not its own: the whole access exits (the I/O bitmaps are checked for every byte,
/// SDM Vol. 3C 26.1.3, AMD APM Vol. 2 15.10.1) and reads all-ones.
fn straddle_own(context: &Context) {
    let base = context.command_line.console_port().unwrap_or(0x2f8);
    let mut probe = Probe::new();
    probe.read(base + 6, 4);
    probe.report(context);
}

/// How the IN result lands in RAX (SDM Vol. 1 3.4.1.1): 8- and 16-bit reads keep the
/// upper bits, a 32-bit read zero-extends.
fn operand_sizes(context: &Context) {
    const BEFORE: u64 = 0x1122_3344_5566_7788;
    let port = 0x80u64;
    let checks: [(crate::trap::Routine, u64); 3] = [
        (redteam_in8, 0x1122_3344_5566_77ff),
        (redteam_in16, 0x1122_3344_5566_ffff),
        (redteam_in32, 0x0000_0000_ffff_ffff),
    ];
    for (index, (routine, expected)) in checks.into_iter().enumerate() {
        match probe(routine, [port, BEFORE, 0, 0]) {
            Ok(value) if value == expected => {}
            Ok(value) => {
                context.report(
                    "wrong-width",
                    format_args!(
                        "size={} rax={value:#x} expected={expected:#x} unassigned-port-accesses={}",
                        1 << index,
                        index + 1
                    ),
                );
                return;
            }
            Err(fault) => {
                context.report(
                    fault.name(),
                    format_args!("unassigned-port-accesses={}", index + 1),
                );
                return;
            }
        }
    }
    context.report("all-ones", format_args!("unassigned-port-accesses=3"));
}

/// REP OUTSB of 16 bytes to an unowned port: consumed as the instruction would (RSI
/// advanced, RCX zero), one exit.
fn rep_outsb(context: &Context) {
    static SOURCE: [u8; 16] = *b"0123456789abcdef";
    let mut count_after: u64 = u64::MAX;
    let source = SOURCE.as_ptr() as u64;
    let result = probe(
        redteam_rep_outsb,
        [0x80, source, 16, (&raw mut count_after) as u64],
    );
    match result {
        Ok(rsi) if rsi == source + 16 && count_after == 0 => context.report(
            "consumed",
            format_args!("rsi-advanced=16 unassigned-port-accesses=1"),
        ),
        Ok(rsi) => context.report(
            "wrong-registers",
            format_args!(
                "rsi-advanced={} rcx={count_after} unassigned-port-accesses=1",
                rsi.wrapping_sub(source)
            ),
        ),
        Err(fault) => context.report(fault.name(), format_args!("")),
    }
}

/// IN from ring 3 with IOPL 0 and no I/O permission bitmap: #GP before any VM exit
/// (SDM Vol. 1 19.5.2; Vol. 3C 26.1.1), even on the partition's own UART.
fn user_mode(context: &Context) {
    let port = u64::from(context.command_line.console_port().unwrap_or(0x2f8)) + 5;
    match probe_user(redteam_user_in8, [port, 0, 0, 0], 0) {
        UserOutcome::Faulted(fault) => context.report(fault.name(), format_args!("port={port:#x}")),
        UserOutcome::Returned(value) => {
            context.report("completed", format_args!("port={port:#x} value={value:#x}"))
        }
    }
}
