//! The few pieces of machine every partition sees the same way, whatever the hardware: the
//! ports behind its ACPI sleep and reset registers. The build describes them in each
//! partition's ACPI tables (FADT); the hypervisor traps them (no partition may own them).

/// FADT SLEEP_CONTROL_REG (hardware-reduced ACPI, ACPI 6.5 §4.8.3.7): an 8-bit I/O register.
/// Writing SLP_EN (bit 5) with SLP_TYP (bits 4:2) = [`S5_SLEEP_TYPE`] powers the partition off.
pub const SLEEP_CONTROL_PORT: u16 = 0x0510;
/// FADT SLEEP_STATUS_REG: reads as "woken" (bit 7), writes are ignored.
pub const SLEEP_STATUS_PORT: u16 = 0x0511;
/// The SLP_TYP value the DSDT's `\_S5` package names.
pub const S5_SLEEP_TYPE: u8 = 5;
/// FADT RESET_REG: writing [`RESET_VALUE`] to this 8-bit I/O port restarts the partition
/// (the port many chipsets use for a reset; never passed to the hardware).
pub const RESET_PORT: u16 = 0x0CF9;
pub const RESET_VALUE: u8 = 0x06;
/// Every port above; the validator keeps them out of every partition's devices.
pub const RESERVED_PORTS: [u16; 3] = [SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT, RESET_PORT];
