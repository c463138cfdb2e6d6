//! The IOMMU's data formats and firmware descriptions, kept pure and host-tested: what the
//! hypervisor writes into device tables, I/O page tables and command buffers, and what it
//! reads from event logs and the firmware's IVRS table (docs/pci-iommu.md, "The IOMMU").

pub mod amd_vi;
pub mod boot_check;
pub mod ivrs;
pub mod vt_d;
