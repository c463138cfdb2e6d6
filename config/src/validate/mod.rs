//! Validation: every rule a table must obey before it can boot. Each check adds
//! [`Finding`]s and carries on, so one run reports every problem in the table.
//!
//! Checks are grouped by subject (names, cores, memory, devices, PCI functions, machine-wide
//! ports, references, user-mode hypercalls, health monitor, boot); a new invariant gets a
//! [`Rule`] with a stable identifier and a check in the matching module.

pub(crate) mod boot;
mod cores;
mod devices;
mod health;
mod hypercalls;
mod machine_ports;
mod memory;
mod names;
pub mod pci;
mod references;
mod rule;
mod standby;
pub mod sweep;

pub use boot::{BootFile, BootImage, ElfBoot, LinuxBoot};
pub(crate) use hypercalls::call_named;
pub use machine_ports::{KnownPlatform, PortBlock, KNOWN_PLATFORMS, MACHINE_WIDE_PORTS};
pub use rule::Rule;

use std::collections::HashMap;

use crate::diagnostics::Finding;
use crate::model::Table;
use boot::{BootFileReader, ReadFile};

/// Whether validation reads the boot files the table names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileChecks {
    /// Check that boot files exist and that ELF images fit the partition.
    Check,
    /// Skip every check that needs a boot file (for tables away from their images).
    Skip,
}

/// Runs every check and returns all findings (empty when the table is valid).
pub fn validate(table: &Table, files: FileChecks) -> Vec<Finding> {
    validate_reading(table, files, &mut |path| std::fs::read(path)).findings
}

/// What validation found, and what it read of the boot files.
pub(crate) struct Validation {
    pub findings: Vec<Finding>,
    /// Per partition, in table order.
    pub boot_images: Vec<Option<BootImage>>,
}

/// Runs every check, reading boot files (with [`FileChecks::Check`]) through `read`.
pub(crate) fn validate_reading(
    table: &Table,
    files: FileChecks,
    read: &mut ReadFile<'_>,
) -> Validation {
    let mut findings = Vec::new();
    names::check(table, &mut findings);
    cores::check(table, &mut findings);
    memory::check(table, &mut findings);
    devices::check(table, &mut findings);
    pci::check(table, &mut findings);
    machine_ports::check(table, &mut findings);
    references::check(table, &mut findings);
    hypercalls::check(table, &mut findings);
    health::check(table, &mut findings);
    standby::check(table, &mut findings);
    let boot_images = boot::check(table, files, &mut BootFileReader::new(read), &mut findings);
    Validation {
        findings,
        boot_images,
    }
}

/// A table that passed every rule with its boot files checked, and those files as
/// validation read and parsed them: what [`crate::lower()`] consumes, so that no boot file
/// is read or parsed twice. Only [`crate::load`] makes one.
#[derive(Clone, Debug)]
pub struct Validated {
    pub(crate) table: Table,
    /// Per partition, in table order; every entry is `Some` after a successful load.
    pub(crate) boot_images: Vec<Option<BootImage>>,
}

impl Validated {
    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn into_table(self) -> Table {
        self.table
    }

    /// What validation read and parsed for the boot of partition `index`.
    pub fn boot_image(&self, index: usize) -> Option<&BootImage> {
        self.boot_images.get(index)?.as_ref()
    }
}

/// Who owns a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    /// The hypervisor (its console).
    Hypervisor,
    /// The partition with this index.
    Partition(usize),
}

/// The owner of each owned device: the hypervisor for its console, else the first partition
/// that lists it (a second owner is a `device-shared` finding).
pub(crate) fn device_owners(table: &Table) -> HashMap<&str, Owner> {
    let mut owners = HashMap::new();
    if table.device(&table.hypervisor.console).is_some() {
        owners.insert(table.hypervisor.console.as_str(), Owner::Hypervisor);
    }
    for (index, partition) in table.partitions.iter().enumerate() {
        for name in &partition.devices {
            if table.device(name).is_some() {
                owners
                    .entry(name.as_str())
                    .or_insert(Owner::Partition(index));
            }
        }
    }
    owners
}

/// "the hypervisor" or "partition `name`", for messages.
pub(crate) fn owner_name(table: &Table, owner: Owner) -> String {
    match owner {
        Owner::Hypervisor => "the hypervisor".to_owned(),
        Owner::Partition(index) => format!("partition `{}`", *table.partitions[index].name),
    }
}

/// Singular or plural, for messages.
fn plural(count: u64, word: &str) -> String {
    if count == 1 {
        format!("{count} {word}")
    } else {
        format!("{count} {word}s")
    }
}

/// A range for messages: `[0x1000, 0x2000)`.
fn show_range(base: u64, size: u64) -> String {
    match base.checked_add(size) {
        Some(end) => format!("[{base:#x}, {end:#x})"),
        None => format!("[{base:#x}, wraps)"),
    }
}
