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
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use tessera_guest::command_line::parse_number;
use tessera_guest::ioapic::{self, RedirectionEntry};
use tessera_guest::{boot, hypercall, interrupts, println, processor, time, x2apic, BootInfo};

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
    transfer(bar0, source, BUFFER, START, BYTES);
    for &address in addresses {
        // A word of the target that differs from the pattern beforehand, where it can be seen.
        if own_ram(info, address) && address != source {
            // SAFETY: as above: own RAM, unused by this program.
            unsafe { core::ptr::write_volatile(address as *mut u64, 0) };
        }
        transfer(bar0, BUFFER, address, START | TO_RAM, BYTES);
        let landed = own_ram(info, address) && holds_pattern(address);
        let scratch = source + SCRATCH;
        // SAFETY: own RAM (checked above), unused by this program.
        unsafe { core::ptr::write_volatile(scratch as *mut u64, 0) };
        transfer(bar0, address, BUFFER, START, BYTES);
        transfer(bar0, BUFFER, scratch, START | TO_RAM, BYTES);
        let read = if holds_pattern(scratch) {
            "pattern"
        } else {
            "other"
        };
        // Refill the buffer from the source for the next address.
        transfer(bar0, source, BUFFER, START, BYTES);
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

/// `pci-forge-msi=<bdf>,<scratch>,<address>:<data>[,<address>:<data>…]` (issue 13's
/// forged-MSI attack): for each pair, the `edu` DMA-writes the 4-byte `data` to `address`
/// (an MSI is nothing but such a write, PCI 3.0 §6.8): the guest puts `data` at
/// `<scratch>` (its own RAM), the device reads it into its buffer and writes it to
/// `address`. Prints `dma: forged-msi address=<a> data=<d> sent` per pair. The `edu` needs
/// `dma_mask=0xffffffff` to reach 0xFEExxxxx (QEMU clamps its DMA to 28 bits otherwise).
pub fn forge_msi(text: &str, info: &BootInfo) {
    let mut parts = text.split(',');
    let bdf = parts.next().and_then(parse_bdf);
    let scratch = parts.next().and_then(parse_number);
    let (Some((device, function)), Some(scratch)) = (bdf, scratch) else {
        println!("dma: bad pci-forge-msi argument {text}");
        return;
    };
    if !own_ram(info, scratch) {
        println!("dma: the scratch address {scratch:#x} must be in this partition's RAM");
        return;
    }
    let bar0 = enable_bar0(device, function);
    let command = conf1_read(device, function, 0x04);
    conf1_write(device, function, 0x04, (command & 0xffff) | 0b110);
    for pair in parts {
        let Some((address, data)) = pair
            .split_once(':')
            .and_then(|(address, data)| Some((parse_number(address)?, parse_number(data)?)))
        else {
            println!("dma: bad pci-forge-msi pair {pair}");
            continue;
        };
        // SAFETY: `scratch` is this partition's identity-mapped RAM (checked), unused by
        // this program otherwise.
        unsafe { core::ptr::write_volatile(scratch as *mut u32, data as u32) };
        transfer(bar0, scratch, BUFFER, START, 4);
        transfer(bar0, BUFFER, address, START | TO_RAM, 4);
        println!("dma: forged-msi address={address:#x} data={data:#x} sent");
    }
}

/// The vectors `count-vector` counts (0: unused slot), and the interrupts seen on each.
static COUNTED_VECTORS: [AtomicU8; 4] = [const { AtomicU8::new(0) }; 4];
static COUNTED: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];

fn counted(vector: u8) {
    if let Some(slot) = COUNTED_VECTORS
        .iter()
        .position(|counted| counted.load(Ordering::Relaxed) == vector)
    {
        COUNTED[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// `count-vector=<vector>,<own pin>[,<vector>…]` (the forged-MSI victim): counts every
/// interrupt on each vector (at most 4) from now on, with interrupts enabled, and routes
/// its own I/O APIC pin `<pin>` to this core with the first vector, masked (so the pin's
/// remapping entry, were it present, would name this core and vector, yet the pin itself
/// never fires). [`report_counted`] prints the counts.
pub fn count_vector(text: &str) {
    let mut parts = text.split(',').map(parse_number);
    let (Some(Some(vector @ 32..=255)), Some(Some(pin))) = (parts.next(), parts.next()) else {
        println!("count-vector: expected <vector>,<pin>[,<vector>…], got {text:?}");
        return;
    };
    let apic = match x2apic::enable() {
        Ok(apic) => apic,
        Err(error) => {
            println!("count-vector: cannot use the x2APIC: {error:?}");
            hypercall::stop_self(13);
        }
    };
    let vectors = core::iter::once(Some(vector)).chain(parts);
    for (slot, extra) in COUNTED_VECTORS.iter().zip(vectors) {
        if let Some(counted_vector @ 32..=255) = extra {
            slot.store(counted_vector as u8, Ordering::Relaxed);
            interrupts::set_handler(counted_vector as u8, counted);
        }
    }
    ioapic::set_redirection_entry(
        pin as u8,
        RedirectionEntry::fixed(vector as u8, apic.id()).masked(),
    );
    processor::enable_interrupts();
    println!("count-vector: counting from now, pin {pin} routed here masked on {vector:#x}");
}

/// Prints `count-vector: vector=<v> received=<n>` per counted vector, if `count-vector`
/// ran.
pub fn report_counted() {
    for (slot, count) in COUNTED_VECTORS.iter().zip(&COUNTED) {
        let vector = slot.load(Ordering::Relaxed);
        if vector != 0 {
            processor::disable_interrupts();
            println!(
                "count-vector: vector={vector:#x} received={}",
                count.load(Ordering::Relaxed)
            );
        }
    }
}

/// One transfer of `bytes` from `source` to `destination`, waiting until the device clears
/// its start bit.
fn transfer(bar0: u64, source: u64, destination: u64, command: u32, bytes: u64) {
    mmio_write(bar0 + SOURCE, source as u32);
    mmio_write(bar0 + SOURCE + 4, (source >> 32) as u32);
    mmio_write(bar0 + DESTINATION, destination as u32);
    mmio_write(bar0 + DESTINATION + 4, (destination >> 32) as u32);
    mmio_write(bar0 + COUNT, bytes as u32);
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
