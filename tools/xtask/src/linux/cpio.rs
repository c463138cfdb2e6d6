//! A cpio archive in the "newc" format (`070701`), the one the Linux kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Written here rather than with cpio(1) so that device nodes need no root (`/dev/console`)
//! and the archive is reproducible: every entry is owned by root, dated 0, and numbered by
//! its position.

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// One archive member: its path without a leading `/`, permission bits and content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub permissions: u32,
    pub kind: Kind,
}

impl Entry {
    pub fn directory(name: &str) -> Self {
        Self {
            name: name.into(),
            permissions: 0o755,
            kind: Kind::Directory,
        }
    }

    pub fn file(name: &str, permissions: u32, content: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            permissions,
            kind: Kind::File(content),
        }
    }

    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            name: name.into(),
            permissions: 0o777,
            kind: Kind::Symlink(target.into()),
        }
    }

    pub fn char_device(name: &str, permissions: u32, major: u32, minor: u32) -> Self {
        Self {
            name: name.into(),
            permissions,
            kind: Kind::CharDevice { major, minor },
        }
    }

    fn mode(&self) -> u32 {
        let kind = match self.kind {
            Kind::Directory => 0o040_000,
            Kind::File(_) => 0o100_000,
            Kind::Symlink(_) => 0o120_000,
            Kind::CharDevice { .. } => 0o020_000,
        };
        kind | (self.permissions & 0o7777)
    }

    fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::File(content) => content,
            Kind::Symlink(target) => target.as_bytes(),
            Kind::Directory | Kind::CharDevice { .. } => &[],
        }
    }
}

/// The archive of `entries` in order, ended by the `TRAILER!!!` entry.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let (major, minor) = match entry.kind {
            Kind::CharDevice { major, minor } => (major, minor),
            _ => (0, 0),
        };
        let links = if entry.kind == Kind::Directory { 2 } else { 1 };
        header(
            &mut out,
            index as u32 + 1,
            entry.mode(),
            links,
            entry.data().len() as u32,
            (major, minor),
            &entry.name,
        );
        out.extend_from_slice(entry.data());
        pad(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
    out
}

/// One `070701` header and name, padded to 4 bytes.
fn header(
    out: &mut Vec<u8>,
    inode: u32,
    mode: u32,
    links: u32,
    size: u32,
    (rdev_major, rdev_minor): (u32, u32),
    name: &str,
) {
    let fields = [
        inode,
        mode,
        0, // uid
        0, // gid
        links,
        0, // mtime
        size,
        0, // devmajor
        0, // devminor
        rdev_major,
        rdev_minor,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back: name, mode, device (major, minor), data.
    type ReadEntry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads an archive back, one entry per member, without the trailer.
    fn read(mut bytes: &[u8]) -> Vec<ReadEntry> {
        let total = bytes.len();
        let mut entries = Vec::new();
        loop {
            let offset = total - bytes.len();
            assert_eq!(offset % 4, 0);
            assert_eq!(&bytes[..6], b"070701");
            let field = |index: usize| {
                let text = std::str::from_utf8(&bytes[6 + index * 8..14 + index * 8]).unwrap();
                u32::from_str_radix(text, 16).unwrap()
            };
            let (mode, size, rdev, name_size) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name_end = 110 + name_size as usize;
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .unwrap()
                .to_string();
            assert_eq!(bytes[name_end - 1], 0);
            let data_start = (offset + name_end).next_multiple_of(4) - offset;
            let data = bytes[data_start..data_start + size as usize].to_vec();
            let next = (offset + data_start + size as usize).next_multiple_of(4) - offset;
            if name == "TRAILER!!!" {
                assert_eq!(next, bytes.len());
                return entries;
            }
            entries.push((name, mode, rdev, data));
            bytes = &bytes[next..];
        }
    }

    #[test]
    fn round_trips_every_kind() {
        let entries = [
            Entry::directory("bin"),
            Entry::char_device("dev/console", 0o600, 5, 1),
            Entry::file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec()),
            Entry::symlink("bin/sh", "/bin/busybox"),
            Entry::file("e", 0o644, Vec::new()),
        ];
        let archive = archive(&entries);
        assert_eq!(archive.len() % 4, 0);
        let read = read(&archive);
        assert_eq!(
            read,
            [
                ("bin".to_string(), 0o040_755, (0, 0), vec![]),
                ("dev/console".to_string(), 0o020_600, (5, 1), vec![]),
                (
                    "init".to_string(),
                    0o100_755,
                    (0, 0),
                    b"#!/bin/sh\necho hi\n".to_vec()
                ),
                (
                    "bin/sh".to_string(),
                    0o120_777,
                    (0, 0),
                    b"/bin/busybox".to_vec()
                ),
                ("e".to_string(), 0o100_644, (0, 0), vec![]),
            ]
        );
    }

    #[test]
    fn is_reproducible() {
        let entries = [Entry::file("a", 0o644, vec![1, 2, 3])];
        assert_eq!(archive(&entries), archive(&entries));
    }
}
