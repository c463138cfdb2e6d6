//! Reading what the boot loader left in memory (the Multiboot information and its memory
//! map) before any partition is loaded over it.

/// A view of boot-loader memory below 4 GiB, or `None` when it is at address 0 or would
/// reach past 4 GiB. Only valid until the first partition is loaded: the block may lie in
/// memory a partition receives (the boot sequence reads it before loading anything).
pub fn bytes(address: u64, length: usize) -> Option<&'static [u8]> {
    if address == 0 || address.checked_add(length as u64)? > 0x1_0000_0000 {
        return None;
    }
    // SAFETY: a Multiboot loader (checked by the magic) left this information at this
    // address, below 4 GiB, which the boot page tables identity-map; it is only read, and
    // only before any partition is loaded (the boot sequence's order).
    Some(unsafe { core::slice::from_raw_parts(address as usize as *const u8, length) })
}
