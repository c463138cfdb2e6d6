//! PCI passthrough policy (docs/pci-iommu.md): decoding configuration-space accesses a
//! partition makes through its virtual ECAM window or mechanism #1, and BAR sizing. The
//! configuration-space filter, capability re-linking and MSI checks described there are
//! not built yet.

pub mod address;
pub mod bar;
