//! Following the serial output files QEMU writes, complete line by complete line.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

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
}

impl FollowedFile {
    pub fn new(label: impl Into<String>, path: PathBuf) -> Self {
        Self {
            label: label.into(),
            path,
            offset: 0,
            splitter: LineSplitter::default(),
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
        Ok(self.splitter.push(&bytes))
    }

    /// The rest of the file, including a final line without a line ending.
    pub fn finish(&mut self) -> io::Result<Vec<String>> {
        let mut lines = self.poll()?;
        lines.extend(self.splitter.finish());
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
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
