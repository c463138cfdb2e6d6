//! `pci-dma=<bdf>,<address>[,<address>…]`: DMA by QEMU's `edu` device at each address, to
//! show what an IOMMU lets a partition's device reach (issue 13's DMA attack).
//!
//! The `edu` DMA engine (QEMU docs/specs/edu.rst: source 0x80, destination 0x88, count
//! 0x90, command 0x98, which the device clears when the transfer is done) moves bytes
//! between memory and its 4 KiB buffer at device address 0x40000; the buffer is not
//! reachable through the BAR. So the first address must be in this partition's own RAM:
//! the guest writes a pattern there and has the device read it into its buffer (proving
//! that DMA inside the partition works); then, for each address, the device writes the
//! buffer's 64 bytes there (`landed` when the pattern then shows in this partition's own
//! memory at that address), and reads 64 bytes back from it into the buffer, which it
//! writes to a scratch area of the first address: `read=pattern` when what came back is
//! the pattern, `read=other` otherwise (a blocked read brings nothing back). One line per
//! address: `dma: <address> write=landed|not-seen read=pattern|other`. Bus mastering is
//! turned on first (command register bit 2).

use crate::pci::{conf1_read, conf1_write, enable_bar0, mmio_read, mmio_write, parse_bdf};
use tessera_guest::command_line::parse_number;
use tessera_guest::{boot, println, processor, time, BootInfo};

/// The device-side address of the `edu` buffer, and the bytes each transfer moves.
const BUFFER: u64 = 0x40000;
const BYTES: u64 = 64;
const SOURCE: u64 = 0x80;
const DESTINATION: u64 = 0x88;
const COUNT: u64 = 0x90;
const COMMAND: u64 = 0x98;
const START: u32 = 1;
/// What the guest puts at the first address; the scratch area lies this far above it.
const PATTERN: u64 = 0xd0a0_d0a0_5eed_0001;
const SCRATCH: u64 = 0x1000;
const TO_RAM: u32 = 2;
/// The `edu` finishes a transfer 100 ms of virtual time after it starts; allow ten times.
const TRANSFER_MICROSECONDS: u64 = 1_000_000;

pub fn run(text: &str, info: &BootInfo) {
    let mut parts = text.split(',');
    let Some((device, function)) = parts.next().and_then(parse_bdf) else {
        println!("dma: bad pci-dma argument {text}");
        return;
    };
    let bar0 = enable_bar0(device, function);
    let command = conf1_read(device, function, 0x04);
    conf1_write(device, function, 0x04, (command & 0xffff) | 0b110);
    let mut addresses = [0u64; 8];
    let mut count = 0;
    for address in parts.filter_map(parse_number).take(addresses.len()) {
        addresses[count] = address;
        count += 1;
    }
    let addresses = &addresses[..count];
    let Some(&source) = addresses.first() else {
        println!("dma: no addresses");
        return;
    };
    if !own_ram(info, source) || !own_ram(info, source + SCRATCH) {
        println!("dma: the first address {source:#x} must be in this partition's RAM");
        return;
    }
    for offset in (0..BYTES).step_by(8) {
        // SAFETY: `source` is this partition's identity-mapped RAM (checked), away from the
        // image; nothing in this program refers to it.
        unsafe { core::ptr::write_volatile((source + offset) as *mut u64, PATTERN ^ offset) };
    }
    transfer(bar0, source, BUFFER, START);
    for &address in addresses {
        // A word of the target that differs from the pattern beforehand, where it can be seen.
        if own_ram(info, address) && address != source {
            // SAFETY: as above: own RAM, unused by this program.
            unsafe { core::ptr::write_volatile(address as *mut u64, 0) };
        }
        transfer(bar0, BUFFER, address, START | TO_RAM);
        let landed = own_ram(info, address) && holds_pattern(address);
        let scratch = source + SCRATCH;
        // SAFETY: own RAM (checked above), unused by this program.
        unsafe { core::ptr::write_volatile(scratch as *mut u64, 0) };
        transfer(bar0, address, BUFFER, START);
        transfer(bar0, BUFFER, scratch, START | TO_RAM);
        let read = if holds_pattern(scratch) {
            "pattern"
        } else {
            "other"
        };
        // Refill the buffer from the source for the next address.
        transfer(bar0, source, BUFFER, START);
        println!(
            "dma: {address:#x} write={} read={read}",
            if landed { "landed" } else { "not-seen" }
        );
    }
}

/// Whether the first word at `address` (own RAM) is the pattern's.
fn holds_pattern(address: u64) -> bool {
    // SAFETY: callers pass only this partition's identity-mapped RAM.
    unsafe { core::ptr::read_volatile(address as *const u64) == PATTERN }
}

/// Whether the transfer's bytes at `address` lie in this partition's identity-mapped RAM:
/// the pattern is only looked for there.
fn own_ram(info: &BootInfo, address: u64) -> bool {
    info.ram_ranges().any(|ram| {
        let reachable = ram.clip_below(boot::IDENTITY_MAP_END);
        reachable.start <= address && address + BYTES <= reachable.end
    })
}

/// One transfer of `BYTES` from `source` to `destination`, waiting until the device clears
/// its start bit.
fn transfer(bar0: u64, source: u64, destination: u64, command: u32) {
    mmio_write(bar0 + SOURCE, source as u32);
    mmio_write(bar0 + SOURCE + 4, (source >> 32) as u32);
    mmio_write(bar0 + DESTINATION, destination as u32);
    mmio_write(bar0 + DESTINATION + 4, (destination >> 32) as u32);
    mmio_write(bar0 + COUNT, BYTES as u32);
    mmio_write(bar0 + COMMAND, command);
    let limit = time::tsc_hz().saturating_mul(TRANSFER_MICROSECONDS) / 1_000_000;
    let start = processor::rdtsc();
    while mmio_read(bar0 + COMMAND) & START != 0 {
        if processor::rdtsc().wrapping_sub(start) > limit {
            println!("dma: transfer {source:#x} -> {destination:#x} did not finish");
            return;
        }
        core::hint::spin_loop();
    }
}
