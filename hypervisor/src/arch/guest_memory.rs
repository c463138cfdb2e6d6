//! Partition memory as the hypervisor touches it: clearing RAM and copying boot images in
//! before a partition runs, and reading its page tables while it runs (for instruction
//! fetches behind trapped MMIO).
//!
//! Every access goes through a mapping of the static partition table, whose memory the
//! build validated to be disjoint from the hypervisor and from every other partition, and
//! which the boot checks found to be RAM below 4 GiB, identity-mapped by the boot page
//! tables. Accesses are raw copies: no Rust reference to guest memory is ever formed, so a
//! guest writing the same bytes concurrently can only make the data stale, never break the
//! hypervisor's own memory safety.

use tessera_abi::table::{Channel, MappingKind, MemoryMapping, Partition};

/// The host-physical address of guest range `[guest, guest + length)` if one mapping of an
/// accepted kind covers it whole.
pub fn host_address(
    memory: &[MemoryMapping],
    guest: u64,
    length: u64,
    accepted: impl Fn(MappingKind) -> bool,
) -> Option<u64> {
    memory.iter().find_map(|mapping| {
        let offset = guest.checked_sub(mapping.guest)?;
        (accepted(mapping.kind) && offset.checked_add(length)? <= mapping.host.size)
            .then_some(mapping.host.base + offset)
    })
}

/// Sets every byte of a partition's RAM mappings to zero.
pub fn clear_ram(partition: &'static Partition) {
    for mapping in partition
        .memory
        .iter()
        .filter(|mapping| mapping.kind == MappingKind::Ram)
    {
        // SAFETY: the mapping is the partition's own RAM (module comment: validated disjoint
        // from the hypervisor, present, identity-mapped); a raw fill forms no reference.
        unsafe {
            core::ptr::write_bytes(
                mapping.host.base as usize as *mut u8,
                0,
                mapping.host.size as usize,
            )
        };
    }
}

/// Sets every byte of a channel's memory to zero. Called by the boot core before any member
/// runs, so that what an earlier boot left there is not read by the members; never again
/// (a restarted member's partner may be using the channel).
pub fn clear_channel(channel: &Channel) {
    // SAFETY: the channel's memory is a mapping of each of its members (kind Channel), so
    // the module comment holds for it: validated disjoint from the hypervisor and from every
    // other partition, present, identity-mapped. No member runs yet, and a raw fill forms no
    // reference.
    unsafe {
        core::ptr::write_bytes(
            channel.memory.base as usize as *mut u8,
            0,
            channel.memory.size as usize,
        )
    };
}

/// The host-physical address of guest range `[guest, guest + length)` if one of the
/// partition's RAM mappings holds it whole.
pub fn ram_address(partition: &Partition, guest: u64, length: u64) -> Option<u64> {
    host_address(partition.memory, guest, length, |kind| {
        kind == MappingKind::Ram
    })
}

/// Bytes of RAM the partition has (channels and device windows not counted).
pub fn ram_bytes(partition: &Partition) -> u64 {
    partition
        .memory
        .iter()
        .filter(|mapping| mapping.kind == MappingKind::Ram)
        .map(|mapping| mapping.host.size)
        .sum()
}

/// Copies `bytes` into the partition's RAM at guest-physical `guest`; `None` if no single
/// RAM mapping holds the whole range.
pub fn write(partition: &'static Partition, guest: u64, bytes: &[u8]) -> Option<()> {
    let host = ram_address(partition, guest, bytes.len() as u64)?;
    // SAFETY: the range lies inside one RAM mapping of the partition (checked above; module
    // comment for why that memory is the partition's and identity-mapped); the source is
    // hypervisor memory, which is disjoint from it.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), host as usize as *mut u8, bytes.len())
    };
    Some(())
}

/// Reads an aligned 8-byte word of a partition's RAM or channel memory by guest-physical
/// address (for walking its page tables); `None` outside them.
pub fn read_u64(partition: &'static Partition, guest: u64) -> Option<u64> {
    if !guest.is_multiple_of(8) {
        return None;
    }
    let host = host_address(partition.memory, guest, 8, |kind| {
        kind != MappingKind::DeviceMmio
    })?;
    // SAFETY: the word lies inside memory the table gives this partition (module comment);
    // an aligned read of plain memory cannot fault, and a concurrent guest write only makes
    // the value stale, which the guest could do to itself anyway.
    Some(unsafe { core::ptr::read_volatile(host as usize as *const u64) })
}
