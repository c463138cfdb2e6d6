//! Tessera's two contracts, shared by every side that speaks them.
//!
//! * [`table`]: the flat, static description of the machine that `config/` lowers a
//!   partition table into and that the hypervisor's build script emits as Rust statics.
//!   The hypervisor never parses configuration; it reads these types.
//! * [`hypercall`]: the numbers and register conventions of the hypercall interface that
//!   guests (see `userland/`) use.
//!
//! Plain data only: no behaviour that needs testing lives here.
#![no_std]
#![forbid(unsafe_code)]

pub mod hypercall;
pub mod table;
pub mod virtual_platform;
