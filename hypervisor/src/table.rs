//! The partition table, as the build lowered it (see config/ and build.rs), and the sizes
//! of the static state derived from it.

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

const _: () = assert!(CPU_COUNT > 0 && PARTITION_COUNT > 0);

/// Index of a core (by x2APIC ID) in the table's core list.
pub fn cpu_index(apic_id: u32) -> Option<usize> {
    MACHINE.cpus.iter().position(|&id| id == apic_id)
}

/// The partition that owns core `apic_id`, and the core's position within the partition.
pub fn partition_of_cpu(apic_id: u32) -> Option<(usize, usize)> {
    MACHINE
        .partitions
        .iter()
        .enumerate()
        .find_map(|(partition, description)| {
            description
                .cpus
                .iter()
                .position(|&id| id == apic_id)
                .map(|position| (partition, position))
        })
}
