//! `cargo xtask linux-images`: the Linux guest's files, fetched and built, never committed.
//!
//! * `target/linux/vmlinuz`: `/boot/vmlinuz-<release>` of Debian 12's stock kernel package
//!   ([`KERNEL`], the version `linux-image-amd64` depends on when this was pinned);
//! * `target/linux/initramfs.cpio.gz`: a gzip'd newc archive, made here byte for byte (fixed
//!   owners and times, so the same inputs give the same file): busybox from Debian's
//!   `busybox-static` ([`BUSYBOX`]) with a symbolic link per applet, `/dev/console`, a
//!   40-instruction `tessera-tsc` program that prints the TSC, and `/init` =
//!   `userland/linux/init.sh`.
//!
//! The packages come from the machine's APT sources with `apt-get download` (no install),
//! pinned by name, version and SHA-256; a cached `.deb` whose digest matches is not fetched
//! again, and the extracted files are rewritten only when their content changes (so the
//! hypervisor image is not rebuilt for nothing). Tools: apt-get, dpkg-deb, tar, gzip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use super::cpio::{self, Entry};
use crate::image;

/// A Debian package pinned by version and the SHA-256 of its `.deb` (from `apt-cache show`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebPackage {
    pub name: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
}

impl DebPackage {
    /// The file name `apt-get download` gives it (an epoch's `:` is written `%3a`).
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_amd64.deb",
            self.name,
            self.version.replace(':', "%3a")
        )
    }
}

/// Debian 12's stock kernel: what `linux-image-amd64` 6.1.192-2 (bookworm-security) depends
/// on. When the mirror drops it, pin the new one: `apt-get update; apt-cache policy
/// linux-image-amd64; apt-cache depends linux-image-amd64; apt-cache show <package>`.
pub const KERNEL: DebPackage = DebPackage {
    name: "linux-image-6.1.0-56-amd64",
    version: "6.1.192-2",
    sha256: "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1",
};
/// `uname -r` of [`KERNEL`]: names its `/boot/vmlinuz-<release>`.
pub const KERNEL_RELEASE: &str = "6.1.0-56-amd64";
/// Busybox, statically linked (bookworm).
pub const BUSYBOX: DebPackage = DebPackage {
    name: "busybox-static",
    version: "1:1.35.0-4+deb12u1+b1",
    sha256: "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744",
};

/// Kernel modules copied from [`KERNEL`] into the initramfs's `/lib/modules/` (file name,
/// member of the package): the in-tree drivers of the PCI tests' functions. Debian 12
/// ships them uncompressed. `e1000e` depends on nothing that is not built in
/// (`depends=` in its `.modinfo` is empty: PTP and PPS are `=y`). The NVMe driver's chain,
/// in load order (each module's `depends=` names only modules above it): `nvme` needs
/// `nvme-core`, which needs `t10-pi` (protection information), which needs `crc-t10dif`
/// and `crc64-rocksoft`; those two need `crct10dif_common` and `crc64` and name the crypto
/// drivers `crct10dif` and `crc64-rocksoft` as soft dependencies (`softdep=pre:`), here
/// the generic ones. init.sh loads them in this order with busybox `insmod`.
pub const MODULES: [(&str, &str); 10] = [
    (
        "e1000e.ko",
        "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
    ),
    ("crct10dif_common.ko", "kernel/crypto/crct10dif_common.ko"),
    ("crct10dif_generic.ko", "kernel/crypto/crct10dif_generic.ko"),
    ("crc-t10dif.ko", "kernel/lib/crc-t10dif.ko"),
    ("crc64.ko", "kernel/lib/crc64.ko"),
    (
        "crc64_rocksoft_generic.ko",
        "kernel/crypto/crc64_rocksoft_generic.ko",
    ),
    ("crc64-rocksoft.ko", "kernel/lib/crc64-rocksoft.ko"),
    ("t10-pi.ko", "kernel/block/t10-pi.ko"),
    ("nvme-core.ko", "kernel/drivers/nvme/host/nvme-core.ko"),
    ("nvme.ko", "kernel/drivers/nvme/host/nvme.ko"),
];

/// The initramfs's `/init`, relative to the workspace root.
pub const INIT_SCRIPT: &str = "userland/linux/init.sh";
/// File names in [`directory`].
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.cpio.gz";

/// Where the Linux files live: `target/linux`.
pub fn directory(root: &Path) -> PathBuf {
    image::target_directory(root).join("linux")
}

/// The built files.
#[derive(Clone, Debug)]
pub struct Images {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

/// Fetches what is missing and (re)builds `target/linux/vmlinuz` and
/// `target/linux/initramfs.cpio.gz`.
pub fn ensure(root: &Path) -> Result<Images> {
    let directory = directory(root);
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let kernel_deb = fetch(&directory, &KERNEL)?;
    let busybox_deb = fetch(&directory, &BUSYBOX)?;

    let vmlinuz = directory.join(VMLINUZ);
    let kernel_member = format!("./boot/vmlinuz-{KERNEL_RELEASE}");
    extract_cached(&kernel_deb, &KERNEL, &kernel_member, &vmlinuz)?;
    let busybox = directory.join("busybox");
    extract_cached(&busybox_deb, &BUSYBOX, "./bin/busybox", &busybox)?;

    let init = std::fs::read(root.join(INIT_SCRIPT))
        .with_context(|| format!("cannot read {INIT_SCRIPT}"))?;
    let busybox_bytes =
        std::fs::read(&busybox).with_context(|| format!("cannot read {}", busybox.display()))?;
    let applets = applets(&busybox)?;
    let mut entries = initramfs_entries(&busybox_bytes, &applets, &init);
    entries.push(Entry::directory("lib"));
    entries.push(Entry::directory("lib/modules"));
    for (name, member) in MODULES {
        let cached = directory.join(name);
        let member = format!("./lib/modules/{KERNEL_RELEASE}/{member}");
        extract_cached(&kernel_deb, &KERNEL, &member, &cached)?;
        let bytes =
            std::fs::read(&cached).with_context(|| format!("cannot read {}", cached.display()))?;
        entries.push(Entry::file(&format!("lib/modules/{name}"), 0o644, bytes));
    }
    let archive = cpio::archive(&entries);
    let compressed = gzip(&archive)?;
    let initramfs = directory.join(INITRAMFS);
    let changed = write_if_changed(&initramfs, &compressed)?;
    println!(
        "linux: {} ({} bytes), {} ({} bytes, {} applets{})",
        image::relative_to(root, &vmlinuz).display(),
        std::fs::metadata(&vmlinuz)?.len(),
        image::relative_to(root, &initramfs).display(),
        compressed.len(),
        applets.len(),
        if changed { ", rebuilt" } else { ", unchanged" }
    );
    Ok(Images { vmlinuz, initramfs })
}

/// The `.deb` of `package` in `directory`: the cached one if its SHA-256 matches, else
/// downloaded with `apt-get download` and checked.
fn fetch(directory: &Path, package: &DebPackage) -> Result<PathBuf> {
    let path = directory.join(package.file_name());
    if path.is_file() && sha256_file(&path)? == package.sha256 {
        return Ok(path);
    }
    if path.exists() {
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale {}", path.display()))?;
    }
    println!(
        "linux: apt-get download {}={}",
        package.name, package.version
    );
    let status = Command::new("apt-get")
        .args([
            "download",
            "-q",
            &format!("{}={}", package.name, package.version),
        ])
        .current_dir(directory)
        .status()
        .context("cannot run apt-get (the Linux recipe needs Debian's APT)")?;
    if !status.success() {
        bail!(
            "apt-get download {}={} failed ({status}): run `apt-get update` first; if the \
             mirror no longer has this version, pin the current one in \
             tools/xtask/src/linux/images.rs (`apt-cache policy linux-image-amd64`, \
             `apt-cache show <package>` for its SHA256)",
            package.name,
            package.version
        );
    }
    let digest = sha256_file(&path)?;
    ensure!(
        digest == package.sha256,
        "{} has SHA-256 {digest}, the pin says {}",
        path.display(),
        package.sha256
    );
    Ok(path)
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Extracts `member` of `deb` to `output` unless `output` was extracted from this very
/// package already (a `<output>.source` file holds the package's SHA-256).
fn extract_cached(deb: &Path, package: &DebPackage, member: &str, output: &Path) -> Result<()> {
    let stamp = output.with_extension("source");
    if output.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(package.sha256) {
        return Ok(());
    }
    let bytes = extract(deb, member)?;
    ensure!(
        !bytes.is_empty(),
        "{} has no {member} (or it is empty)",
        deb.display()
    );
    std::fs::write(output, &bytes).with_context(|| format!("cannot write {}", output.display()))?;
    std::fs::write(&stamp, package.sha256)
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(())
}

/// One file of a `.deb`'s data: `dpkg-deb --fsys-tarfile <deb> | tar -xO <member>`.
fn extract(deb: &Path, member: &str) -> Result<Vec<u8>> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let tar = Command::new("tar")
        .args(["-xO", "-f", "-", member])
        .stdin(dpkg.stdout.take().context("dpkg-deb has no output")?)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run tar")?;
    // dpkg-deb may die of a broken pipe once tar has what it wants; only tar's status counts.
    let _ = dpkg.wait();
    ensure!(
        tar.status.success(),
        "cannot extract {member} from {} ({})",
        deb.display(),
        tar.status
    );
    Ok(tar.stdout)
}

/// The applets of the (host-runnable, static x86-64) busybox: `busybox --list-full`, paths
/// without the leading `/` (`bin/sh`, `usr/bin/awk`, …).
fn applets(busybox: &Path) -> Result<Vec<String>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(busybox, std::fs::Permissions::from_mode(0o755))?;
    }
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("cannot run {} --list-full", busybox.display()))?;
    ensure!(
        output.status.success(),
        "{} --list-full failed",
        busybox.display()
    );
    let applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_string())
        .filter(|line| !line.is_empty() && line != "bin/busybox")
        .collect();
    ensure!(
        applets.iter().any(|applet| applet == "bin/sh"),
        "busybox has no sh applet"
    );
    Ok(applets)
}

/// The initramfs's entries, in archive order: directories, `/dev/console`, busybox and its
/// applet links, `tessera-tsc`, `/init`.
pub fn initramfs_entries(busybox: &[u8], applets: &[String], init: &[u8]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = [
        "bin", "dev", "etc", "proc", "root", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin",
    ]
    .iter()
    .map(|name| Entry::directory(name))
    .collect();
    // The kernel opens /dev/console for init's standard streams before init mounts devtmpfs.
    entries.push(Entry::char_device("dev/console", 0o600, 5, 1));
    entries.push(Entry::file("bin/busybox", 0o755, busybox.to_vec()));
    for applet in applets {
        if applet == "init" || applet == "bin/tessera-tsc" {
            continue;
        }
        entries.push(Entry::symlink(applet, "/bin/busybox"));
    }
    entries.push(Entry::file("bin/tessera-tsc", 0o755, tsc_program()));
    entries.push(Entry::file("init", 0o755, init.to_vec()));
    entries
}

/// A static x86-64 Linux ELF executable that prints the TSC in decimal and a newline on
/// standard output and exits 0. Its code (68 bytes, assembled once with GNU as):
///
/// ```text
/// rdtsc; shl rdx,32; or rax,rdx          ; rax = TSC
/// mov rsi,rsp; dec rsi; mov byte [rsi],10 ; digits are written below the stack pointer
/// mov ecx,10
/// 1: xor edx,edx; div rcx; add dl,'0'; dec rsi; mov [rsi],dl; test rax,rax; jnz 1b
/// mov rdx,rsp; sub rdx,rsi; mov edi,1; mov eax,1; syscall   ; write(1, rsi, rdx)
/// mov eax,60; xor edi,edi; syscall                          ; exit(0)
/// ```
///
/// Under QEMU `-icount shift=0` the TSC counts instructions since reset: the bench reads
/// the count at `/init` from it.
pub fn tsc_program() -> Vec<u8> {
    const CODE: [u8; 68] = [
        0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xe6, 0x48, 0xff, 0xce,
        0xc6, 0x06, 0x0a, 0xb9, 0x0a, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x48, 0xf7, 0xf1, 0x80, 0xc2,
        0x30, 0x48, 0xff, 0xce, 0x88, 0x16, 0x48, 0x85, 0xc0, 0x75, 0xee, 0x48, 0x89, 0xe2, 0x48,
        0x29, 0xf2, 0xbf, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8,
        0x3c, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05,
    ];
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + CODE.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // ELF header: 64-bit, little-endian, version 1, System V; executable, x86-64.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                                // One PT_LOAD, read + execute, the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags R|X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&CODE);
    elf
}

/// `gzip -9 -n` (no name, no time stamp: the same archive gives the same bytes).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().context("gzip has no input")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().context("gzip failed")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the gzip writer panicked"))?
        .context("cannot feed gzip")?;
    ensure!(output.status.success(), "gzip failed ({})", output.status);
    Ok(output.stdout)
}

/// Writes `bytes` to `path` unless it holds them already; returns whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(false);
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// The Linux files among the boot files of the table at `path` that live in
/// `target/linux` (relative paths resolved against the table's directory).
pub fn table_needs_images(root: &Path, path: &Path) -> bool {
    let Ok(table) = tessera_config::load_without_files(path) else {
        // Building reports the table's problems.
        return false;
    };
    // Compared lexically: on a fresh checkout target/linux does not exist yet, so the paths
    // cannot be canonicalised.
    let wanted = lexically_normal(&std::path::absolute(directory(root)).unwrap_or_default());
    table.partitions.iter().any(|partition| {
        let boot = &*partition.boot;
        [boot.kernel.as_ref(), boot.initrd.as_ref()]
            .into_iter()
            .flatten()
            .any(|file| {
                let resolved = std::path::absolute(table.resolve_path(file)).unwrap_or_default();
                resolved.parent().map(lexically_normal) == Some(wanted.clone())
            })
    })
}

/// The path with `.` and `..` components resolved without touching the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compare_without_the_file_system() {
        assert_eq!(
            lexically_normal(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }

    #[test]
    fn deb_file_names_escape_the_epoch() {
        assert_eq!(
            BUSYBOX.file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
        assert_eq!(
            KERNEL.file_name(),
            "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"
        );
        assert!(KERNEL.name.ends_with(KERNEL_RELEASE));
    }

    #[test]
    fn the_initramfs_has_init_console_and_applets() {
        let applets = vec!["bin/sh".to_string(), "sbin/reboot".to_string()];
        let entries = initramfs_entries(b"BB", &applets, b"#!/bin/sh\n");
        let names: Vec<&str> = entries.iter().map(|entry| entry.name.as_str()).collect();
        for wanted in [
            "dev/console",
            "bin/busybox",
            "bin/sh",
            "sbin/reboot",
            "init",
            "proc",
        ] {
            assert!(names.contains(&wanted), "no {wanted} in {names:?}");
        }
        // Parents come before what they hold.
        let position = |name: &str| names.iter().position(|n| *n == name).unwrap();
        assert!(position("usr") < position("usr/bin"));
        assert!(position("bin") < position("bin/sh"));
    }

    #[test]
    fn the_init_script_prints_every_line_the_checks_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = std::fs::read_to_string(root.join(INIT_SCRIPT)).unwrap();
        for needed in [
            "TESSERA-LINUX: init reached",
            "kernel: ",
            "nproc: ",
            "MemTotal: ",
            "x2apic",
            "/proc/interrupts",
            "restarts: ",
            "tessera.reboot-test",
            "TESSERA-LINUX: rebooting",
            "reboot -f",
            "TESSERA-LINUX: heartbeat",
        ] {
            assert!(script.contains(needed), "init.sh lacks {needed:?}");
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn the_tsc_program_prints_a_number() {
        use std::os::unix::fs::PermissionsExt;
        let directory = std::env::temp_dir().join(format!("tessera-tsc-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("tessera-tsc");
        std::fs::write(&path, tsc_program()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let output = Command::new(&path).output().unwrap();
        std::fs::remove_dir_all(&directory).unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        let value: u64 = text.trim().parse().unwrap();
        assert!(value > 0);
    }
}
