//! The UARTs an emulator writes to files, and following those files (and the emulator's own
//! output) complete line by complete line.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::table::TableInfo;
use crate::transcript::HYPERVISOR;

/// The ISA UARTs COM1 to COM4, the same in both emulators: QEMU's `-serial` options in this
/// order (the first is the UART at 0x3f8), Bochs' `com1:` to `com4:`.
pub const ISA_UART_PORTS: [u64; 4] = [0x3f8, 0x2f8, 0x3e8, 0x2e8];

/// One ISA UART whose output is captured: `label` is whose it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialCapture {
    /// Position in [`ISA_UART_PORTS`].
    pub index: usize,
    pub label: String,
    pub file: PathBuf,
}

/// The UARTs the table gives to the hypervisor console or to a partition, by index, with the
/// file each one is written to (`comN.txt`, N = index + 1, in `directory`).
pub fn serial_captures(table: &TableInfo, directory: &Path) -> Vec<SerialCapture> {
    let owner = |port: u64| -> Option<String> {
        if table.console_port == Some(port) {
            return Some(HYPERVISOR.to_string());
        }
        table
            .partitions
            .iter()
            .find(|partition| partition.device_ports.contains(&port))
            .map(|partition| partition.name.clone())
    };
    ISA_UART_PORTS
        .iter()
        .enumerate()
        .filter_map(|(index, &port)| {
            owner(port).map(|label| SerialCapture {
                index,
                label,
                file: directory.join(format!("com{}.txt", index + 1)),
            })
        })
        .collect()
}

/// Cuts a byte stream into lines, holding back a trailing partial line until it completes.
///
/// Lines lose their `\n` and a trailing `\r`; bytes that are not UTF-8 become U+FFFD.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes and returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let Some(last_newline) = self.pending.iter().rposition(|&byte| byte == b'\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        complete[..last_newline]
            .split(|&byte| byte == b'\n')
            .map(line_text)
            .collect()
    }

    /// The partial line left at the end of the stream, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let line = line_text(&self.pending);
        self.pending.clear();
        Some(line)
    }
}

fn line_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// One output file that grows while the emulator runs, labelled with whose output it is.
#[derive(Debug)]
pub struct FollowedFile {
    pub label: String,
    path: PathBuf,
    offset: u64,
    splitter: LineSplitter,
    /// Which lines are passed on (the rest of a chatty log stays in its file).
    keep: fn(&str) -> bool,
}

impl FollowedFile {
    pub fn new(label: impl Into<String>, path: PathBuf) -> Self {
        Self::filtered(label, path, |_| true)
    }

    /// Follows `path` but passes on only the lines for which `keep` is true.
    pub fn filtered(label: impl Into<String>, path: PathBuf, keep: fn(&str) -> bool) -> Self {
        Self {
            label: label.into(),
            path,
            offset: 0,
            splitter: LineSplitter::default(),
            keep,
        }
    }

    /// The lines completed since the last call. A file not created yet has none.
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        let mut lines = self.splitter.push(&bytes);
        lines.retain(|line| (self.keep)(line));
        Ok(lines)
    }

    /// The rest of the file, including a final line without a line ending.
    pub fn finish(&mut self) -> io::Result<Vec<String>> {
        let mut lines = self.poll()?;
        lines.extend(self.splitter.finish().filter(|line| (self.keep)(line)));
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_lines_until_they_complete() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(b"hel").is_empty());
        assert_eq!(splitter.push(b"lo\r\nwor"), ["hello"]);
        assert_eq!(splitter.push(b"ld\n\nlast"), ["world", ""]);
        assert_eq!(splitter.finish().as_deref(), Some("last"));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn nothing_pending_means_nothing_to_flush() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"a\nb\n"), ["a", "b"]);
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"x\xffy\n"), ["x\u{fffd}y"]);
    }

    #[test]
    fn follows_a_growing_file() {
        let directory = std::env::temp_dir().join(format!("xtask-serial-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("com1.txt");
        let _ = std::fs::remove_file(&path);
        let mut followed = FollowedFile::new("worker", path.clone());
        assert!(
            followed.poll().unwrap().is_empty(),
            "a missing file has no lines"
        );
        std::fs::write(&path, b"one\ntw").unwrap();
        assert_eq!(followed.poll().unwrap(), ["one"]);
        std::fs::write(&path, b"one\ntwo\nthree").unwrap();
        assert_eq!(followed.poll().unwrap(), ["two"]);
        assert_eq!(followed.finish().unwrap(), ["three"]);
        let mut filtered = FollowedFile::filtered("log", path.clone(), |line| line.contains('e'));
        assert_eq!(filtered.finish().unwrap(), ["one", "three"]);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
