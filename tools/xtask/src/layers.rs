//! The hypervisor's floors, checked: every `crate::…` or `super::…` path in
//! hypervisor/src must name a module on the same floor or a lower one, and `unsafe` may
//! appear only on the two hardware floors (`arch/`, `virt/`). Part of `cargo xtask lint`.
//!
//! How it checks: each file is lexed just enough to blank out comments, string and
//! character literals (so a path in a comment or an `unsafe` in a SAFETY note does not
//! count); the remaining text is searched for `crate::` and `super::` paths, which are
//! resolved against the file's own module path to the top-level module they enter
//! (`crate::{a, b}` groups count each member). A file's floor is given by the first
//! component of its path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The floors from the bottom up: a module may import from its own floor and below.
pub const FLOORS: [(&str, &str); 7] = [
    ("table", "the generated partition table and typed indices"),
    ("arch", "hardware leaves"),
    ("virt", "the vCPU interface and the SVM and VMX backends"),
    ("exits", "what each VM exit means"),
    ("runtime", "partitions and cores at run time"),
    ("boot", "the boot sequence"),
    ("main", "the crate root"),
];

/// The floors where `unsafe` may appear: the ones that touch hardware.
pub const UNSAFE_FLOORS: [&str; 2] = ["arch", "virt"];

fn floor_rank(module: &str) -> Option<usize> {
    FLOORS.iter().position(|(name, _)| *name == module)
}

/// A rule broken in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `file` on floor `from` names `to`, a module above it.
    UpwardImport {
        file: String,
        line: usize,
        from: String,
        to: String,
    },
    /// `unsafe` outside the hardware floors.
    UnsafeOutsideHardwareFloors { file: String, line: usize },
    /// A file whose first path component is no floor.
    UnknownFloor { file: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Violation::UpwardImport {
                file,
                line,
                from,
                to,
            } => write!(
                formatter,
                "hypervisor/src/{file}:{line}: `{from}` imports `{to}`, which is on a higher floor (imports must point down: {})",
                FLOORS.map(|(name, _)| name).join(" → ")
            ),
            Violation::UnsafeOutsideHardwareFloors { file, line } => write!(
                formatter,
                "hypervisor/src/{file}:{line}: `unsafe` outside the hardware floors ({}); move the hardware access into a safe function there",
                UNSAFE_FLOORS.join(", ")
            ),
            Violation::UnknownFloor { file } => write!(
                formatter,
                "hypervisor/src/{file}: not on any floor; name its floor in tools/xtask/src/layers.rs"
            ),
        }
    }
}

/// What the check found: violations, and `unsafe` sites counted per floor.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub unsafe_sites: BTreeMap<String, usize>,
}

/// Replaces comments and the contents of string and character literals with spaces,
/// keeping line breaks, so that only code remains to be searched.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    let blank = |byte: u8| if byte == b'\n' { b'\n' } else { b' ' };
    while index < bytes.len() {
        let rest = &bytes[index..];
        if rest.starts_with(b"//") {
            while index < bytes.len() && bytes[index] != b'\n' {
                out.push(b' ');
                index += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while index < bytes.len() {
                if bytes[index..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    index += 2;
                } else if bytes[index..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    index += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(bytes[index]));
                    index += 1;
                }
            }
        } else if rest.starts_with(b"r#") || rest.starts_with(b"r\"") {
            // A raw string: r"…" or r#…#"…"#…#.
            let hashes = rest[1..].iter().take_while(|&&byte| byte == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(bytes[index]);
                index += 1;
                continue;
            }
            let mut closing = vec![b'"'];
            closing.extend(std::iter::repeat_n(b'#', hashes));
            out.extend(std::iter::repeat_n(b' ', 2 + hashes));
            index += 2 + hashes;
            while index < bytes.len() && !bytes[index..].starts_with(&closing) {
                out.push(blank(bytes[index]));
                index += 1;
            }
            let end = (index + closing.len()).min(bytes.len());
            out.extend(std::iter::repeat_n(b' ', end - index));
            index = end;
        } else if rest[0] == b'"' {
            out.push(b' ');
            index += 1;
            while index < bytes.len() && bytes[index] != b'"' {
                if bytes[index] == b'\\' && index + 1 < bytes.len() {
                    out.push(b' ');
                    index += 1;
                }
                out.push(blank(bytes[index]));
                index += 1;
            }
            out.push(b' ');
            index += 1;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '\'') — or a lifetime, which is left alone.
            let literal_length = if rest.get(1) == Some(&b'\\') {
                rest.iter()
                    .skip(2)
                    .position(|&byte| byte == b'\'')
                    .map(|at| at + 3)
            } else if rest.get(2) == Some(&b'\'') {
                Some(3)
            } else {
                None
            };
            match literal_length {
                Some(length) => {
                    out.extend(std::iter::repeat_n(b' ', length));
                    index += length;
                }
                None => {
                    out.push(b'\'');
                    index += 1;
                }
            }
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The module path of a file under src/: `arch/x2apic.rs` → [arch, x2apic],
/// `virt/svm/mod.rs` → [virt, svm], `main.rs` → [] (the crate root).
fn module_path(file: &str) -> Vec<String> {
    let without_extension = file.strip_suffix(".rs").unwrap_or(file);
    let mut parts: Vec<String> = without_extension.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if parts == ["main"] {
        parts.clear();
    }
    parts
}

fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The top-level modules a path starting at `at` (just after `crate::`) enters: one name,
/// or each member of a `{…}` group.
fn entered_modules(code: &str, at: usize) -> Vec<String> {
    let rest = code[at..].trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut names = Vec::new();
        let mut depth = 0;
        let mut current = String::new();
        let mut at_start = true;
        for character in group.chars() {
            match character {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => at_start = true,
                character if depth == 0 && at_start && is_identifier_byte(character as u8) => {
                    current.push(character)
                }
                _ if !current.is_empty() => {
                    names.push(std::mem::take(&mut current));
                    at_start = false;
                }
                _ => {}
            }
        }
        if !current.is_empty() {
            names.push(current);
        }
        names
    } else {
        let name: String = rest
            .bytes()
            .take_while(|&byte| is_identifier_byte(byte))
            .map(char::from)
            .collect();
        vec![name]
    }
}

/// Checks one file (path relative to hypervisor/src, its text).
pub fn check_file(file: &str, source: &str, report: &mut Report) {
    let module = module_path(file);
    let floor = module.first().map_or("main", String::as_str).to_string();
    let Some(rank) = floor_rank(&floor) else {
        report.violations.push(Violation::UnknownFloor {
            file: file.to_string(),
        });
        return;
    };
    let code = code_only(source);
    let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
    let bytes = code.as_bytes();
    let word_at = |offset: usize, word: &str| {
        code[offset..].starts_with(word)
            && (offset == 0 || !is_identifier_byte(bytes[offset - 1]))
            && !bytes
                .get(offset + word.len())
                .is_some_and(|&byte| is_identifier_byte(byte))
    };
    for (offset, _) in code.match_indices("unsafe") {
        if !word_at(offset, "unsafe") {
            continue;
        }
        *report.unsafe_sites.entry(floor.clone()).or_default() += 1;
        if !UNSAFE_FLOORS.contains(&floor.as_str()) {
            report
                .violations
                .push(Violation::UnsafeOutsideHardwareFloors {
                    file: file.to_string(),
                    line: line_of(offset),
                });
        }
    }
    let mut targets: Vec<(usize, String)> = Vec::new();
    for (offset, _) in code.match_indices("crate::") {
        if word_at(offset, "crate") {
            for name in entered_modules(&code, offset + "crate::".len()) {
                targets.push((offset, name));
            }
        }
    }
    for (offset, _) in code.match_indices("super::") {
        if !word_at(offset, "super") || (offset >= 2 && &code[offset - 2..offset] == "::") {
            continue;
        }
        // super::super::… climbs one module per step from the file's own module.
        let mut climbs = 0;
        let mut at = offset;
        while code[at..].starts_with("super::") {
            climbs += 1;
            at += "super::".len();
        }
        let Some(kept) = module.len().checked_sub(climbs) else {
            continue;
        };
        if kept > 0 {
            targets.push((offset, module[0].clone()));
        } else {
            for name in entered_modules(&code, at) {
                targets.push((offset, name));
            }
        }
    }
    for (offset, target) in targets {
        // Names that are not floors (macros, items of the crate root) carry no rank.
        let Some(target_rank) = floor_rank(&target) else {
            continue;
        };
        if target_rank > rank {
            report.violations.push(Violation::UpwardImport {
                file: file.to_string(),
                line: line_of(offset),
                from: floor.clone(),
                to: target,
            });
        }
    }
}

/// Checks every `.rs` file under `source_root` (hypervisor/src).
pub fn check_tree(source_root: &Path) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut pending = vec![source_root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let relative = path
            .strip_prefix(source_root)
            .expect("found under the root")
            .to_string_lossy()
            .replace('\\', "/");
        check_file(&relative, &std::fs::read_to_string(&path)?, &mut report);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: &str, source: &str) -> Report {
        let mut report = Report::default();
        check_file(file, source, &mut report);
        report
    }

    #[test]
    fn downward_and_same_floor_imports_pass() {
        let report = check(
            "runtime/cores.rs",
            "use crate::arch::x2apic;\nuse crate::exits::{handle_exit, Flow};\nuse super::partition;\n",
        );
        assert_eq!(report.violations, vec![]);
    }

    #[test]
    fn a_planted_upward_import_fails() {
        let report = check(
            "arch/cpu.rs",
            "fn f() {\n    crate::runtime::cores::host_nmi();\n}\n",
        );
        assert_eq!(
            report.violations,
            vec![Violation::UpwardImport {
                file: "arch/cpu.rs".into(),
                line: 2,
                from: "arch".into(),
                to: "runtime".into(),
            }]
        );
    }

    #[test]
    fn groups_and_super_chains_are_resolved() {
        let report = check(
            "virt/svm/mod.rs",
            "use crate::{arch::msr, exits::Flow};\nuse super::super::boot;\nuse super::Exit;\n",
        );
        let targets: Vec<_> = report
            .violations
            .iter()
            .map(|violation| match violation {
                Violation::UpwardImport { to, line, .. } => (to.as_str(), *line),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(targets, vec![("exits", 1), ("boot", 2)]);
    }

    #[test]
    fn unsafe_counts_only_in_code_and_fails_outside_hardware_floors() {
        let source =
            "// unsafe in a comment\nlet text = \"unsafe\";\n/* unsafe */\nunsafe { f() }\n";
        let report = check("runtime/memory.rs", source);
        assert_eq!(
            report.violations,
            vec![Violation::UnsafeOutsideHardwareFloors {
                file: "runtime/memory.rs".into(),
                line: 4,
            }]
        );
        let report = check("arch/port.rs", source);
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.unsafe_sites.get("arch"), Some(&1));
    }

    #[test]
    fn paths_inside_raw_strings_and_lifetimes_are_not_code() {
        let source = "fn f<'a>(x: &'a u8) {}\nglobal_asm!(r#\"\n call crate::boot\n\"#);\nlet c = '\"';\nuse crate::runtime;\n";
        let report = check("exits/io.rs", source);
        assert_eq!(
            report.violations,
            vec![Violation::UpwardImport {
                file: "exits/io.rs".into(),
                line: 6,
                from: "exits".into(),
                to: "runtime".into(),
            }]
        );
    }

    #[test]
    fn a_file_on_no_floor_is_reported() {
        let report = check("drivers/uart.rs", "");
        assert_eq!(
            report.violations,
            vec![Violation::UnknownFloor {
                file: "drivers/uart.rs".into()
            }]
        );
    }

    /// The real tree passes: the check runs in `cargo xtask lint` too, this keeps host
    /// tests honest about it.
    #[test]
    fn the_hypervisor_source_keeps_its_floors() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hypervisor/src");
        let report = check_tree(&root).unwrap();
        let messages: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        assert!(messages.is_empty(), "{}", messages.join("\n"));
        assert!(report.unsafe_sites.get("arch").copied().unwrap_or(0) > 0);
    }
}
