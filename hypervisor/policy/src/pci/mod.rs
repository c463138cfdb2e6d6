//! PCI passthrough policy (docs/pci-iommu.md): decoding configuration-space accesses a
//! partition makes through its virtual ECAM window or mechanism #1, BAR sizing, the header
//! write filter and the virtual host bridge, capability re-linking, MSI/MSI-X message
//! checks, the MSI-X table layout and shadow, and the firmware's MCFG entry for segment 0.

pub mod address;
pub mod bar;
pub mod capability;
pub mod function;
pub mod header;
pub mod mcfg;
pub mod msi;
pub mod msix;
pub mod reset;
pub mod topology;
