//! A table with a Linux partition beside an ELF one, written with a synthetic bzImage, an
//! initrd and an ELF guest, for the Linux lowering and snapshot tests.

use std::path::PathBuf;

use super::bzimage_builder::{build_bzimage, BzImageSpec};

pub const TABLE: &str = r#"[platform]
name = "linux-small"
cpus = [0, 1, 2]
ram = [ { base = 0x100000, size = "1023 MiB" } ]
ioapic = { base = 0xfec00000, pins = 24 }

[platform.devices]
com1 = { ports = [ { base = 0x3f8, size = 8 } ], irq = 4 }
com2 = { ports = [ { base = 0x2f8, size = 8 } ], irq = 3 }
com3 = { ports = [ { base = 0x3e8, size = 8 } ] }
gpio = { ports = [ { base = 0x400, size = 4 } ] }

[hypervisor]
memory = { base = 0x100000, size = "15 MiB" }
console = "com3"

[[partition]]
name = "linux"
cpus = [1, 2]
memory = [
    { base = 0x2000000, size = "48 MiB" },
    { base = 0x8000000, size = "16 MiB", guest = 0x4000000 },
]
devices = ["com1", "gpio"]
boot = { kind = "linux", kernel = "bzImage", initrd = "initrd.img", cmdline = "console=ttyS0 nokaslr" }
on-fault = "restart"

[[partition]]
name = "rt"
cpus = [0]
memory = [ { base = 0x1000000, size = "16 MiB" } ]
devices = ["com2"]
boot = { kind = "elf", image = "guest.elf" }
on-fault = "halt"

[[channel]]
name = "ring"
partitions = ["linux", "rt"]
memory = { base = 0x5000000, size = "64 KiB" }
doorbell = { vector = 0x40 }
"#;

pub const MIB: u64 = 1 << 20;
pub const INITRD_SIZE: usize = 0x1800;

/// Writes the table, a bzImage, an initrd and an ELF guest to a scratch directory; returns
/// the table's path, the kernel's bytes and the initrd's bytes.
pub fn write_linux_table(name: &str) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let directory = super::scratch_directory(name);
    let kernel = build_bzimage(&BzImageSpec::default());
    let initrd: Vec<u8> = (0..INITRD_SIZE).map(|index| (index % 239) as u8).collect();
    super::write_file(&directory, "bzImage", &kernel);
    super::write_file(&directory, "initrd.img", &initrd);
    let guest = super::elf_builder::build_pvh_elf(&super::elf_builder::ElfSpec::default());
    super::write_file(&directory, "guest.elf", guest);
    (
        super::write_file(&directory, "linux.toml", TABLE),
        kernel,
        initrd,
    )
}
