//! The partition table, as the build lowered it (see config/ and build.rs), the sizes of
//! the static state derived from it, and the typed indices into it. The bottom floor: every
//! layer may read it, it reads nothing of theirs.

include!(concat!(env!("OUT_DIR"), "/machine.rs"));

/// Table pages for every partition's stage-2 page tables, laid end to end.
pub const STAGE2_TABLE_PAGES: usize = {
    let mut total = 0;
    let mut index = 0;
    while index < PARTITION_COUNT {
        total += MACHINE.partitions[index].stage2_table_pages;
        index += 1;
    }
    total
};

/// Table pages for the DMA domains (AMD-Vi I/O page tables) of the partitions that own a
/// PCI function whose DMA is confined. A domain is built by the same planner from the same
/// memory map as the partition's stage-2 tables (device memory left out), so the stage-2
/// count bounds it.
pub const DMA_TABLE_PAGES: usize = {
    let mut total = 0;
    let mut index = 0;
    while index < PARTITION_COUNT {
        let partition = &MACHINE.partitions[index];
        let mut function = 0;
        let mut confined = false;
        while function < partition.pci_functions.len() {
            confined |= partition.pci_functions[function].dma_confined;
            function += 1;
        }
        if confined {
            total += partition.stage2_table_pages;
        }
        index += 1;
    }
    total
};

/// Every passed-through PCI function of the table, counted in table order (partition by
/// partition, then function): sizes the per-function state (remapping tables, fault
/// counters), indexed by [`pci_function_ordinal`].
pub const PCI_FUNCTION_COUNT: usize = {
    let mut count = 0;
    let mut index = 0;
    while index < PARTITION_COUNT {
        count += MACHINE.partitions[index].pci_functions.len();
        index += 1;
    }
    count
};

const _: () = assert!(CPU_COUNT > 0 && PARTITION_COUNT > 0);

/// A core's x2APIC ID, as the hardware and the table name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicId(pub u32);

impl core::fmt::Display for ApicId {
    fn fmt(&self, formatter: &mut core::fmt::Formatter) -> core::fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A core's position in the table's core list (`MACHINE.cpus`): the index of its static
/// per-core state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreIndex(pub usize);

/// A partition's position in the table (`MACHINE.partitions`): the index of its run-time
/// state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionIndex(pub usize);

impl PartitionIndex {
    /// The partition's entry in the table.
    pub fn partition(self) -> &'static tessera_abi::table::Partition {
        &MACHINE.partitions[self.0]
    }
}

/// Index of a core (by x2APIC ID) in the table's core list.
pub fn cpu_index(apic_id: ApicId) -> Option<CoreIndex> {
    MACHINE
        .cpus
        .iter()
        .position(|&id| id == apic_id.0)
        .map(CoreIndex)
}

/// The partition that owns core `apic_id`, and the core's position within the partition.
pub fn partition_of_cpu(apic_id: ApicId) -> Option<(PartitionIndex, usize)> {
    MACHINE
        .partitions
        .iter()
        .enumerate()
        .find_map(|(partition, description)| {
            description
                .cpus
                .iter()
                .position(|&id| id == apic_id.0)
                .map(|position| (PartitionIndex(partition), position))
        })
}

/// Whether `partition` holds the PCI functions of its list when the machine boots: every
/// partition but a table standby, whose list is its primary's functions, held only after
/// a takeover (docs/health.md, "PCI functions at a takeover").
pub const fn holds_pci_functions_at_boot(partition: &tessera_abi::table::Partition) -> bool {
    !matches!(
        partition.health.standby,
        tessera_abi::table::StandbyRole::Standby { .. }
    )
}

/// The ordinal of slot `slot` of partition `partition`'s functions among all the table's
/// functions (table order, below [`PCI_FUNCTION_COUNT`]): the index of the per-function
/// state that belongs to this partition's view of it (its interrupt remapping entries).
pub fn pci_function_ordinal(partition: PartitionIndex, slot: usize) -> usize {
    MACHINE.partitions[..partition.0]
        .iter()
        .map(|earlier| earlier.pci_functions.len())
        .sum::<usize>()
        + slot
}
