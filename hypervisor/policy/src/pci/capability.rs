//! The capability lists a partition sees: the function's list walked once at boot and
//! re-linked so that only the kept capabilities appear (PCI Local Bus 3.0 §6.7; PCIe Base
//! 4.0 §7.5.3), and the extended list from 0x100 likewise (PCIe Base 4.0 §7.6).
//!
//! Both walks are bounded: a list that loops, points into the header or runs off the end of
//! configuration space ends there, so a broken or hostile function can make the walk
//! neither endless nor read outside its space.

/// Capability IDs kept (PCI Code and ID Assignment 1.11 §2): Power Management, MSI, PCI
/// Express, MSI-X. Everything else (vendor-specific 0x09, PCI-X, AGP, debug port, hot-plug,
/// subsystem ID, …) is skipped by the pointers the guest reads.
pub const KEPT_CAPABILITIES: [u8; 4] = [0x01, 0x05, 0x10, 0x11];
pub const POWER_MANAGEMENT: u8 = 0x01;
pub const MSI: u8 = 0x05;
pub const PCI_EXPRESS: u8 = 0x10;
pub const MSI_X: u8 = 0x11;
/// Extended capability IDs kept: Advanced Error Reporting (0x0001). SR-IOV (0x0010),
/// resizable BAR (0x0015), ACS, ATS, PASID, vendor-specific (0x000B) and the rest are
/// hidden.
pub const KEPT_EXTENDED: [u16; 1] = [EXTENDED_AER];
/// The Advanced Error Reporting extended capability's ID (PCIe Base 4.0 §7.8.4).
pub const EXTENDED_AER: u16 = 0x0001;

/// The most capabilities a list may hold: 192 bytes of capability space at 4 bytes each
/// (48 entries) bounds any loop-free list (docs/pci-iommu.md).
pub const MAX_CAPABILITIES: usize = 48;
/// Extended space holds at most (4096 − 256) / 4 headers.
pub const MAX_EXTENDED: usize = 960;
/// Entries kept per list (at most every kept ID once, and a few duplicates).
const KEPT_SLOTS: usize = 8;

/// One kept capability: where it is and its ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Capability {
    pub offset: u16,
    pub id: u16,
}

/// A re-linked list: the kept capabilities in list order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CapabilityList {
    kept: [Capability; KEPT_SLOTS],
    count: usize,
    /// Entries walked (kept or not); for the log.
    pub walked: usize,
}

impl CapabilityList {
    /// The kept capabilities, in list order.
    pub fn kept(&self) -> &[Capability] {
        &self.kept[..self.count]
    }

    /// The first kept capability's offset (0: none).
    pub fn first(&self) -> u16 {
        self.kept()
            .first()
            .map_or(0, |capability| capability.offset)
    }

    /// The kept capability with `id`, if any.
    pub fn find(&self, id: u16) -> Option<Capability> {
        self.kept()
            .iter()
            .copied()
            .find(|capability| capability.id == id)
    }

    /// The kept capability at `offset`, and the next kept one's offset (0 at the end).
    fn at(&self, offset: u16) -> Option<u16> {
        let index = self
            .kept()
            .iter()
            .position(|capability| capability.offset == offset)?;
        Some(self.kept().get(index + 1).map_or(0, |next| next.offset))
    }

    /// Keeps only the capabilities `keep` accepts (list order unchanged).
    pub fn retain(&mut self, mut keep: impl FnMut(&Capability) -> bool) {
        let mut kept = 0;
        for index in 0..self.count {
            if keep(&self.kept[index]) {
                self.kept[kept] = self.kept[index];
                kept += 1;
            }
        }
        self.count = kept;
    }

    fn push(&mut self, capability: Capability) {
        if self.count < KEPT_SLOTS {
            self.kept[self.count] = capability;
            self.count += 1;
        }
    }

    /// Walks the standard list: `status_has_list` is status bit 4 (Capabilities List,
    /// PCI 3.0 §6.2.3), `read_dword` reads a dword of the function's space.
    pub fn walk(status_has_list: bool, mut read_dword: impl FnMut(u16) -> u32) -> Self {
        let mut list = Self::default();
        if !status_has_list {
            return list;
        }
        // The pointer's low two bits are reserved (§6.7).
        let mut offset = (read_dword(0x34) & 0xfc) as u16;
        let mut visited = [false; 64];
        while offset >= 0x40 && list.walked < MAX_CAPABILITIES {
            let slot = usize::from(offset / 4);
            if visited[slot] {
                break;
            }
            visited[slot] = true;
            list.walked += 1;
            let header = read_dword(offset);
            let id = (header & 0xff) as u16;
            if KEPT_CAPABILITIES.contains(&(id as u8)) {
                list.push(Capability { offset, id });
            }
            offset = ((header >> 8) & 0xfc) as u16;
        }
        list
    }

    /// Walks the extended list from 0x100 (PCIe 4.0 §7.6.3: ID in bits 15:0, version
    /// 19:16, next offset 31:20; an all-zero header means there is none).
    pub fn walk_extended(mut read_dword: impl FnMut(u16) -> u32) -> Self {
        let mut list = Self::default();
        let mut offset = 0x100u16;
        let mut visited = [false; MAX_EXTENDED];
        while (0x100..0x1000).contains(&offset) && list.walked < MAX_EXTENDED {
            let slot = usize::from((offset - 0x100) / 4);
            if visited[slot] {
                break;
            }
            visited[slot] = true;
            let header = read_dword(offset);
            if header == 0 || header == u32::MAX {
                break;
            }
            list.walked += 1;
            let id = (header & 0xffff) as u16;
            if KEPT_EXTENDED.contains(&id) {
                list.push(Capability { offset, id });
            }
            offset = ((header >> 20) & 0xffc) as u16;
        }
        list
    }

    /// What the guest reads from the standard list's dword at `dword` (0x40–0xFC) given the
    /// hardware's value, or from the capabilities pointer (0x34).
    pub fn read(&self, dword: u16, hardware: u32) -> u32 {
        if dword == 0x34 {
            return (hardware & !0xff) | u32::from(self.first());
        }
        match self.at(dword) {
            Some(next) => (hardware & !0xff00) | (u32::from(next) << 8),
            None => hardware,
        }
    }

    /// What the guest reads from the extended dword at `dword` (0x100–0xFFC).
    pub fn read_extended(&self, dword: u16, hardware: u32) -> u32 {
        if let Some(next) = self.at(dword) {
            return (hardware & 0x000f_ffff) | (u32::from(next) << 20);
        }
        if dword == 0x100 {
            // The first header is hidden: an ID 0, version 0 header pointing at the first
            // kept one, the spec's form for "no capability here" (§7.6.3).
            let first = self.first();
            return if first == 0 {
                0
            } else {
                u32::from(first) << 20
            };
        }
        hardware
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A configuration space of 4 KiB as dwords.
    struct Space([u32; 1024]);

    impl Space {
        fn new() -> Self {
            Self([0; 1024])
        }
        fn set(&mut self, offset: u16, value: u32) {
            self.0[usize::from(offset / 4)] = value;
        }
        fn read(&self, offset: u16) -> u32 {
            self.0[usize::from(offset / 4)]
        }
        fn capability(&mut self, offset: u16, id: u8, next: u16) {
            self.set(offset, u32::from(id) | u32::from(next) << 8);
        }
    }

    /// Follows the re-linked list as a guest would.
    fn guest_walk(list: &CapabilityList, space: &Space) -> Vec<(u16, u8)> {
        let mut seen = Vec::new();
        let mut offset = (list.read(0x34, space.read(0x34)) & 0xfc) as u16;
        while offset != 0 && seen.len() < 64 {
            let header = list.read(offset, space.read(offset));
            seen.push((offset, header as u8));
            offset = ((header >> 8) & 0xfc) as u16;
        }
        seen
    }

    #[test]
    fn vendor_specific_and_others_are_skipped() {
        let mut space = Space::new();
        space.set(0x34, 0x40);
        space.capability(0x40, 0x09, 0x50); // vendor-specific
        space.capability(0x50, 0x01, 0x60); // PM
        space.capability(0x60, 0x07, 0x70); // PCI-X
        space.capability(0x70, 0x05, 0x80); // MSI
        space.capability(0x80, 0x11, 0x90); // MSI-X
        space.capability(0x90, 0x0d, 0x00); // subsystem ID
        let list = CapabilityList::walk(true, |offset| space.read(offset));
        assert_eq!(list.walked, 6);
        assert_eq!(
            guest_walk(&list, &space),
            vec![(0x50, 0x01), (0x70, 0x05), (0x80, 0x11)]
        );
        assert_eq!(list.find(u16::from(MSI)).map(|c| c.offset), Some(0x70));
    }

    #[test]
    fn loops_and_bad_pointers_end_the_walk() {
        let mut space = Space::new();
        space.set(0x34, 0x40);
        space.capability(0x40, 0x05, 0x50);
        space.capability(0x50, 0x10, 0x40); // loops back
        let list = CapabilityList::walk(true, |offset| space.read(offset));
        assert_eq!(list.walked, 2);
        assert_eq!(guest_walk(&list, &space), vec![(0x40, 0x05), (0x50, 0x10)]);
        // A pointer into the header ends the list.
        space.capability(0x50, 0x10, 0x20);
        let list = CapabilityList::walk(true, |offset| space.read(offset));
        assert_eq!(list.walked, 2);
        // No list when the status bit is clear.
        let list = CapabilityList::walk(false, |offset| space.read(offset));
        assert_eq!(list.first(), 0);
        assert_eq!(list.read(0x34, 0x40), 0);
    }

    #[test]
    fn extended_list_hides_sr_iov_and_resizable_bar() {
        let mut space = Space::new();
        // SR-IOV at 0x100 → AER at 0x140 → resizable BAR at 0x180.
        space.set(0x100, 0x0010 | 1 << 16 | 0x140 << 20);
        space.set(0x140, 0x0001 | 2 << 16 | 0x180 << 20);
        space.set(0x180, 0x0015 | 1 << 16);
        let list = CapabilityList::walk_extended(|offset| space.read(offset));
        assert_eq!(list.walked, 3);
        assert_eq!(list.read_extended(0x100, space.read(0x100)), 0x140 << 20);
        assert_eq!(list.read_extended(0x140, space.read(0x140)), 0x0002_0001);
        // Nothing kept: 0x100 reads as an empty header.
        space.set(0x140, 0x000b | 1 << 16);
        space.set(0x100, 0x0010 | 1 << 16 | 0x140 << 20);
        let list = CapabilityList::walk_extended(|offset| space.read(offset));
        assert_eq!(list.read_extended(0x100, space.read(0x100)), 0);
        // A loop in extended space ends.
        space.set(0x140, 0x0001 | 0x100 << 20);
        let list = CapabilityList::walk_extended(|offset| space.read(offset));
        assert_eq!(list.walked, 2);
    }

    proptest::proptest! {
        /// Any contents of configuration space: the walk ends, the guest's walk of the
        /// re-linked list ends, and it shows only kept IDs, each at most once per offset.
        #[test]
        fn any_space_gives_a_finite_kept_list(dwords in proptest::collection::vec(proptest::num::u32::ANY, 64)) {
            let mut space = Space::new();
            for (index, value) in dwords.iter().enumerate() {
                space.0[index] = *value;
            }
            let list = CapabilityList::walk(true, |offset| space.read(offset));
            proptest::prop_assert!(list.walked <= MAX_CAPABILITIES);
            let seen = guest_walk(&list, &space);
            proptest::prop_assert!(seen.len() <= KEPT_SLOTS);
            for (offset, id) in &seen {
                proptest::prop_assert!(KEPT_CAPABILITIES.contains(id));
                proptest::prop_assert!(*offset >= 0x40);
            }
        }
    }
}
