//! `pci-scan`, `pci-ecam=<base>`, `pci-edu=<bdf>`, `pci-bar-read=<bdf>,<offset>` and
//! `pci-bist=<bdf>`: a bare-metal look at the partition's PCI bus, as a stock kernel's
//! first probe would take it.
//!
//! * `pci-scan`: every device and function of bus 0 through configuration mechanism #1
//!   (0xCF8/0xCFC, PCI Local Bus 3.0 §3.2.2.3.2); one line per function that answers,
//!   `pci: conf1 <bdf> id=<vendor>:<device> class=<class> header=<type>`, then
//!   `pci: conf1 scan found <n>`;
//! * `pci-ecam=<base>`: the same through the ECAM window at `<base>` (PCIe Base 4.0
//!   §7.2.2), lines `pci: ecam …` and `pci: ecam scan found <n>`;
//! * `pci-bist=<bdf>`: write "start BIST" (bit 6 of 0x0F) and the expansion ROM BAR of that
//!   function — writes outside the header whitelist, to be dropped — and print what reads
//!   back: `pci: bist <bdf> wrote=0x40 reads=<v> rom=<v>`;
//! * `pci-edu=<bdf>`: drive QEMU's `edu` at that address through its BAR0, identity-mapped:
//!   enable memory decoding, read the identification register (0x00), check the liveness
//!   register (0x04: reads back the complement of what was written) and a factorial (0x08);
//!   prints `pci: edu <bdf> bar0=<address> id=<v> liveness=ok|BAD factorial(5)=<v>`
//!   (status 13 on a mismatch);
//! * `pci-bar-read=<bdf>,<offset>`: enable memory decoding, read the 32-bit register at
//!   `<offset>` of BAR0, print `pci: bar-read <bdf> bar0=<address> offset=<o> value=<v>`;
//! * `pci-bar-move=<bdf>,<address>` (after `pci-edu`): write `<address>` into BAR0 (say,
//!   another partition's BAR) and read it back, then read the `edu` identification at the
//!   BAR's old address: the hypervisor keeps a moved BAR in its shadow and never moves the
//!   device, so the device must still answer there; prints `pci: bar-move <bdf>
//!   wrote=<a> reads=<v> id-at-old=<v>` (status 13 if the device does not answer);
//! * `pci-restart=<bdf>`: first of all print the function's command register, `pci:
//!   command <bdf> restarts=<n> at-start=<v>`; on the first boot (`tessera.restarts`
//!   absent or 0), after everything else, enable memory decoding and bus mastering, print
//!   `pci: command <bdf> enabled=<v>` and ask for a reset, so the next boot shows whether
//!   the hypervisor quiesced the function in between;
//! * `pci-msi=<bdf>,<vector>,<foreign apic id>` (after `pci-edu`): program the `edu`'s MSI
//!   capability first with a message naming a core outside the partition (the hypervisor
//!   must refuse it: nothing may arrive), raise the device's interrupt, then with a
//!   message naming this core and raise it again; prints `pci: msi <bdf> vector=<v>
//!   foreign=<id>: delivered-while-foreign=<n> delivered-own=<n>` (status 13 unless 0 and 1).

use core::sync::atomic::{AtomicU32, Ordering};
use tessera_guest::command_line::{parse_number, CommandLine};
use tessera_guest::println;
use tessera_guest::{hypercall, interrupts, processor, time, x2apic};

const CONF1_ADDRESS: u16 = 0xcf8;
const CONF1_DATA: u16 = 0xcfc;
/// Exit status when the `edu` device does not answer as documented.
const EXIT_EDU_MISMATCH: u64 = 13;

fn select(device: u8, function: u8, offset: u16) -> u32 {
    (1 << 31) | (u32::from(device) << 11) | (u32::from(function) << 8) | u32::from(offset & 0xfc)
}

/// A configuration dword of bus 0 through mechanism #1.
pub(crate) fn conf1_read(device: u8, function: u8, offset: u16) -> u32 {
    processor::port_write_u32(CONF1_ADDRESS, select(device, function, offset));
    processor::port_read_u32(CONF1_DATA)
}

pub(crate) fn conf1_write(device: u8, function: u8, offset: u16, value: u32) {
    processor::port_write_u32(CONF1_ADDRESS, select(device, function, offset));
    processor::port_write_u32(CONF1_DATA, value);
}

/// A byte write through the data port's byte lanes (0xCFC + offset % 4).
fn conf1_write_byte(device: u8, function: u8, offset: u16, value: u8) {
    processor::port_write_u32(CONF1_ADDRESS, select(device, function, offset));
    processor::port_write_u8(CONF1_DATA + (offset & 3), value);
}

pub(crate) fn mmio_read(address: u64) -> u32 {
    let value: u32;
    // SAFETY: `address` lies in the ECAM window or a BAR of a function this partition owns
    // (identity-mapped uncached or trapped); a 32-bit load touches no memory of ours.
    unsafe {
        core::arch::asm!("mov {value:e}, dword ptr [{address}]", address = in(reg) address, value = lateout(reg) value, options(nostack, preserves_flags))
    };
    value
}

pub(crate) fn mmio_write(address: u64, value: u32) {
    // SAFETY: as for `mmio_read`: a register of a device this partition owns.
    unsafe {
        core::arch::asm!("mov dword ptr [{address}], {value:e}", address = in(reg) address, value = in(reg) value, options(nostack, preserves_flags))
    };
}

/// `dd.f` or `00:dd.f` → (device, function) on bus 0.
pub(crate) fn parse_bdf(text: &str) -> Option<(u8, u8)> {
    let text = text.strip_prefix("00:").unwrap_or(text);
    let (device, function) = text.split_once('.')?;
    let device = u8::from_str_radix(device, 16)
        .ok()
        .filter(|device| *device < 32)?;
    let function = function
        .parse::<u8>()
        .ok()
        .filter(|function| *function < 8)?;
    Some((device, function))
}

fn print_function(how: &str, device: u8, function: u8, id: u32, class: u32, header: u32) {
    println!(
        "pci: {how} 00:{device:02x}.{function} id={:04x}:{:04x} class={:06x} header={:02x}",
        id & 0xffff,
        id >> 16,
        class >> 8,
        (header >> 16) & 0xff
    );
}

/// Scans bus 0 with `read(device, function, offset)`; returns the functions that answered.
fn scan(how: &str, mut read: impl FnMut(u8, u8, u16) -> u32) -> u32 {
    let mut found = 0;
    for device in 0..32 {
        for function in 0..8 {
            let id = read(device, function, 0);
            if id & 0xffff == 0xffff {
                continue;
            }
            found += 1;
            print_function(
                how,
                device,
                function,
                id,
                read(device, function, 8),
                read(device, function, 0x0c),
            );
        }
    }
    println!("pci: {how} scan found {found}");
    found
}

/// BAR0's address with memory decoding enabled (command bit 1).
pub(crate) fn enable_bar0(device: u8, function: u8) -> u64 {
    let command = conf1_read(device, function, 0x04) & 0xffff;
    conf1_write(device, function, 0x04, command | 0x2);
    u64::from(conf1_read(device, function, 0x10) & !0xf)
}

pub fn run(command_line: &CommandLine) {
    let restart = command_line.value("pci-restart").and_then(parse_bdf);
    let restarts = command_line.number("tessera.restarts").unwrap_or(0);
    if let Some((device, function)) = restart {
        let command = conf1_read(device, function, 0x04) & 0xffff;
        println!(
            "pci: command 00:{device:02x}.{function} restarts={restarts} at-start={command:#06x}"
        );
    }
    if command_line.has_flag("pci-scan") {
        scan("conf1", conf1_read);
    }
    if let Some(base) = command_line.number("pci-ecam") {
        scan("ecam", |device, function, offset| {
            mmio_read(
                base + (u64::from(device) << 15 | u64::from(function) << 12) + u64::from(offset),
            )
        });
    }
    if let Some((device, function)) = command_line.value("pci-bist").and_then(parse_bdf) {
        conf1_write_byte(device, function, 0x0f, 0x40);
        conf1_write(device, function, 0x30, 0xffff_f801);
        println!(
            "pci: bist 00:{device:02x}.{function} wrote=0x40 reads={:#04x} rom={:#x}",
            conf1_read(device, function, 0x0c) >> 24,
            conf1_read(device, function, 0x30)
        );
    }
    if let Some((device, function)) = command_line.value("pci-edu").and_then(parse_bdf) {
        edu(device, function);
    }
    if let Some((bdf, address)) = command_line
        .value("pci-bar-move")
        .and_then(|text| text.split_once(','))
    {
        if let (Some((device, function)), Some(address)) = (parse_bdf(bdf), parse_number(address)) {
            let old = u64::from(conf1_read(device, function, 0x10) & !0xf);
            conf1_write(device, function, 0x10, address as u32);
            let reads = conf1_read(device, function, 0x10);
            let id = mmio_read(old);
            println!(
                "pci: bar-move 00:{device:02x}.{function} wrote={address:#x} reads={reads:#x} id-at-old={id:#010x}"
            );
            // Put it back, as a driver undoing its probe would.
            conf1_write(device, function, 0x10, old as u32);
            if id & 0xffff != 0x00ed {
                hypercall::stop_self(EXIT_EDU_MISMATCH);
            }
        }
    }
    if let Some(text) = command_line.value("pci-msi") {
        let mut parts = text.split(',');
        let bdf = parts.next().and_then(parse_bdf);
        let vector = parts.next().and_then(parse_number);
        let foreign = parts.next().and_then(parse_number);
        match (bdf, vector, foreign) {
            (Some((device, function)), Some(vector @ 32..=255), Some(foreign)) => {
                msi(device, function, vector as u8, foreign as u32)
            }
            _ => {
                println!("pci: expected pci-msi=<dd.f>,<vector>,<foreign apic id>, got {text:?}");
                hypercall::stop_self(EXIT_EDU_MISMATCH);
            }
        }
    }
    if let Some((bdf, offset)) = command_line
        .value("pci-bar-read")
        .and_then(|text| text.split_once(','))
    {
        if let (Some((device, function)), Some(offset)) = (parse_bdf(bdf), parse_number(offset)) {
            let bar0 = enable_bar0(device, function);
            println!(
                "pci: bar-read 00:{device:02x}.{function} bar0={bar0:#x} offset={offset:#x} value={:#x}",
                mmio_read(bar0 + offset)
            );
        }
    }
    if let (Some((device, function)), 0) = (restart, restarts) {
        let command = conf1_read(device, function, 0x04) & 0xffff;
        conf1_write(device, function, 0x04, command | 0x6);
        let enabled = conf1_read(device, function, 0x04) & 0xffff;
        println!("pci: command 00:{device:02x}.{function} enabled={enabled:#06x}");
        crate::request_reset();
    }
}

/// QEMU's `edu` (docs/specs/edu.rst in QEMU): identification at 0x00, liveness at 0x04,
/// factorial at 0x08 with status bit 0 (0x20) set while computing.
pub(crate) fn edu(device: u8, function: u8) {
    let bar0 = enable_bar0(device, function);
    let id = mmio_read(bar0);
    let pattern = 0x1234_5678 ^ (u32::from(device) << 24);
    mmio_write(bar0 + 0x04, pattern);
    let liveness = mmio_read(bar0 + 0x04);
    mmio_write(bar0 + 0x08, 5);
    let mut factorial = 0;
    for _ in 0..1_000_000 {
        if mmio_read(bar0 + 0x20) & 1 == 0 {
            factorial = mmio_read(bar0 + 0x08);
            break;
        }
        core::hint::spin_loop();
    }
    let live = liveness == !pattern;
    println!(
        "pci: edu 00:{device:02x}.{function} bar0={bar0:#x} id={id:#010x} liveness={} factorial(5)={factorial}",
        if live { "ok" } else { "BAD" }
    );
    if id & 0xffff != 0x00ed || !live || factorial != 120 {
        hypercall::stop_self(EXIT_EDU_MISMATCH);
    }
}

/// MSI interrupts received (any vector given to `msi`).
static MSI_RECEIVED: AtomicU32 = AtomicU32::new(0);

fn msi_received(_vector: u8) {
    MSI_RECEIVED.fetch_add(1, Ordering::Relaxed);
}

/// The offset of the capability with `id` (PCI 3.0 §6.7), walking at most 48 entries.
fn find_capability(device: u8, function: u8, id: u8) -> Option<u16> {
    if conf1_read(device, function, 0x04) & (1 << 20) == 0 {
        return None;
    }
    let mut offset = (conf1_read(device, function, 0x34) & 0xfc) as u16;
    for _ in 0..48 {
        if offset < 0x40 {
            return None;
        }
        let header = conf1_read(device, function, offset);
        if header & 0xff == u32::from(id) {
            return Some(offset);
        }
        offset = ((header >> 8) & 0xfc) as u16;
    }
    None
}

/// Programs the MSI capability at `capability` with a message to `apic_id`, `vector`, and
/// enables it (PCI 3.0 §6.8.1; message format Intel SDM Vol. 3A §11.11).
fn program_msi(device: u8, function: u8, capability: u16, apic_id: u32, vector: u8) {
    let control = conf1_read(device, function, capability) >> 16;
    let wide = control & 0x80 != 0;
    conf1_write(
        device,
        function,
        capability + 4,
        0xfee0_0000 | (apic_id << 12),
    );
    let data_offset = if wide {
        conf1_write(device, function, capability + 8, 0);
        0x0c
    } else {
        0x08
    };
    conf1_write(
        device,
        function,
        capability + data_offset,
        u32::from(vector),
    );
    // Enable (bit 0), one message (Multiple Message Enable 0).
    let first = conf1_read(device, function, capability);
    conf1_write(
        device,
        function,
        capability,
        (first & 0xff8f_ffff) | (1 << 16),
    );
}

/// Raises the `edu`'s interrupt (0x60, raise; its status at 0x24), waits 20 ms, lowers it
/// (0x64, acknowledge); returns the MSIs received meanwhile.
fn raise_and_count(bar0: u64) -> u32 {
    let before = MSI_RECEIVED.load(Ordering::Relaxed);
    mmio_write(bar0 + 0x60, 1);
    time::delay_microseconds(20_000);
    mmio_write(bar0 + 0x64, 1);
    MSI_RECEIVED.load(Ordering::Relaxed) - before
}

fn msi(device: u8, function: u8, vector: u8, foreign: u32) {
    let Some(capability) = find_capability(device, function, 0x05) else {
        println!("pci: msi 00:{device:02x}.{function}: no MSI capability visible");
        hypercall::stop_self(EXIT_EDU_MISMATCH);
    };
    let apic = match x2apic::enable() {
        Ok(apic) => apic,
        Err(error) => {
            println!("pci: msi: cannot use the x2APIC: {error:?}");
            hypercall::stop_self(EXIT_EDU_MISMATCH);
        }
    };
    interrupts::set_handler(vector, msi_received);
    processor::enable_interrupts();
    let bar0 = enable_bar0(device, function);
    // An MSI is a memory write by the function: it needs Bus Master Enable (PCI 3.0 §6.8).
    let command = conf1_read(device, function, 0x04) & 0xffff;
    conf1_write(device, function, 0x04, command | 0x4);
    program_msi(device, function, capability, foreign, vector);
    let while_foreign = raise_and_count(bar0);
    program_msi(device, function, capability, apic.id(), vector);
    let own = raise_and_count(bar0);
    processor::disable_interrupts();
    println!(
        "pci: msi 00:{device:02x}.{function} vector={vector:#x} foreign={foreign}: delivered-while-foreign={while_foreign} delivered-own={own}"
    );
    if while_foreign != 0 || own != 1 {
        hypercall::stop_self(EXIT_EDU_MISMATCH);
    }
}
