//! The pure decisions of the Tessera hypervisor, kept apart from the code that executes them.
//!
//! Everything here is `no_std`, allocation-free and free of `unsafe`, so it builds for the
//! hypervisor's `x86_64-unknown-none` target and is unit-tested on the host. The hypervisor's
//! arch/virt modules do the privileged work (write VMCB/VMCS fields, load page-table roots,
//! send IPIs); the modules below decide *what* to write:
//!
//! * [`bytes`]: bounds-checked little-endian reads, shared by every parser.
//! * [`range`]: address-range arithmetic.
//! * [`stage2`]: nested (AMD NPT) / extended (Intel EPT) page-table planning, building, walking.
//! * [`io_bitmap`]: the I/O-port intercept bitmap.
//! * [`msr`]: the MSR pass-through policy and its SVM / VMX bitmap encodings.
//! * [`cpuid`]: what a guest sees when it executes CPUID.
//! * [`icr`]: x2APIC interrupt-command-register decoding and the IPI filter.
//! * [`ioapic`]: a partition's view of the IOAPIC register window.
//! * [`mmio_decode`]: decoding the MOV instruction behind a trapped MMIO access.
//! * [`guest_walk`]: a software walk of a guest's page tables.
//! * [`host_page_tables`]: the hypervisor's own page tables: W^X by section, guard pages.
//! * [`acpi_s5`]: finding the `\_S5_` sleep type in a DSDT, for powering off.
//! * [`firmware_acpi`]: the firmware's ACPI tables (RSDP, RSDT/XSDT, MADT, FADT, DSDT), read
//!   through the `acpi` crate.
//! * [`pci`]: PCI passthrough: configuration-space address decoding (ECAM, 0xCF8/0xCFC), BAR
//!   sizing, the header write filter and virtual host bridge, capability re-linking, MSI
//!   checks, the MCFG entry, and a function's whole virtual configuration space.
//! * [`pvh`]: the PVH `hvm_start_info` block a guest receives at boot.
//! * [`multiboot`]: the boot information (Multiboot v1 memory map, Multiboot2 tags, RSDP).
//! * [`virtual_platform`]: the partition's ACPI sleep and reset ports.
//! * [`vmx`]: fitting VMX controls to the processor, naming VM-instruction errors.
//! * [`xcr0`]: which values a guest's XSETBV may load.
//! * [`control_registers`]: guest writes to CR0, CR4 and EFER, and the VMCS values they need.
//! * [`health`]: the health monitor: events, actions, escalation, restart budget, watchdog.
#![no_std]
// Tests map synthetic firmware images for the `acpi` crate, whose handler trait is unsafe:
// only that test code may use `unsafe` (it allows it locally); the library never does.
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

pub mod acpi_s5;
pub mod boot_timing;
pub mod bytes;
pub mod control_registers;
pub mod cpuid;
pub mod firmware_acpi;
pub mod guest_nmi;
pub mod guest_walk;
pub mod health;
pub mod host_page_tables;
pub mod icr;
pub mod io_bitmap;
pub mod ioapic;
pub mod iommu;
pub mod mmio_decode;
pub mod msr;
pub mod multiboot;
pub mod pci;
pub mod pvclock;
pub mod pvh;
pub mod range;
pub mod sha256;
pub mod stage2;
pub mod virtual_platform;
pub mod vmx;
pub mod xcr0;

// Tests use `std` (vectors for table pools and layouts); the library itself never does.
#[cfg(test)]
extern crate std;
