//! The corpus: every table in `corpus/invalid/` is rejected with exactly the rules its
//! `# expect:` header names and exactly the rendered diagnostics of its `.expected` file;
//! every table in `corpus/valid/` is accepted; together the invalid tables cover every rule.
//!
//! A header `# files: check` validates with boot files (and lowers, as the build does);
//! otherwise the table is checked like `tessera check --no-files`. The tiny ELF images,
//! bzImages and initrd the tables name live in `corpus/images/` and are rewritten from
//! `common::elf_builder` and `common::bzimage_builder` here.
//! Regenerate the snapshots with `UPDATE_SNAPSHOTS=1 cargo test -p tessera-config --test corpus`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::bzimage_builder::{build_bzimage, BzImageSpec};
use common::elf_builder::{build_pvh_elf, ElfSpec};
use tessera_config::{load, load_without_files, lower, Diagnostics, Rule};

fn config_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes the corpus images (only when their bytes changed).
fn write_images() {
    let directory = config_directory().join("corpus/images");
    let default = ElfSpec::default();
    let images = [
        ("guest.elf", default.clone()),
        (
            "no-pvh-note.elf",
            ElfSpec {
                entry_note_bytes: 0,
                ..default.clone()
            },
        ),
        (
            "linked-high.elf",
            ElfSpec {
                load_address: 0x400_0000,
                entry: 0x400_0000,
                ..default.clone()
            },
        ),
        (
            "entry-outside.elf",
            ElfSpec {
                entry: 0x800_0000,
                ..default.clone()
            },
        ),
        (
            "linked-low.elf",
            ElfSpec {
                load_address: 0x1000,
                entry: 0x1000,
                ..default
            },
        ),
    ];
    let kernel = BzImageSpec::default();
    let kernels = [
        ("bzImage", kernel.clone()),
        (
            "bzImage-2.11",
            BzImageSpec {
                version: 0x020b,
                ..kernel.clone()
            },
        ),
        (
            "bzImage-at-1gib",
            BzImageSpec {
                preferred_address: 0x4000_0000,
                ..kernel.clone()
            },
        ),
        (
            "bzImage-init-31mib",
            BzImageSpec {
                preferred_address: 0x10_0000,
                init_size: 0x1f0_0000,
                ..kernel.clone()
            },
        ),
        (
            "bzImage-cmdline-64",
            BzImageSpec {
                cmdline_size: 64,
                ..kernel
            },
        ),
    ];
    let initrd: Vec<u8> = (0..0x1800u32).map(|index| (index % 241) as u8).collect();
    let files = images
        .into_iter()
        .map(|(name, spec)| (name, build_pvh_elf(&spec)))
        .chain(
            kernels
                .into_iter()
                .map(|(name, spec)| (name, build_bzimage(&spec))),
        )
        .chain([("initrd.img", initrd)]);
    for (name, bytes) in files {
        let path = directory.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            std::fs::create_dir_all(&directory).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
    }
}

/// The corpus tables of `kind` ("invalid" or "valid"), as paths relative to the crate.
fn tables(kind: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(config_directory().join("corpus").join(kind))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .map(|path| {
            Path::new("corpus")
                .join(kind)
                .join(path.file_name().unwrap())
        })
        .collect();
    paths.sort();
    paths
}

/// `# expect:` rules and whether `# files: check` is set.
fn header(path: &Path) -> (BTreeSet<String>, bool) {
    let bytes = std::fs::read(config_directory().join(path)).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let mut expected = BTreeSet::new();
    let mut files = false;
    for line in text.lines().take_while(|line| line.starts_with('#')) {
        if let Some(rules) = line.strip_prefix("# expect:") {
            expected.extend(rules.split(',').map(|rule| rule.trim().to_owned()));
        }
        if line.trim() == "# files: check" {
            files = true;
        }
    }
    (expected, files)
}

/// Validates a corpus table the way `tessera check` does (from the crate directory).
fn check(path: &Path, files: bool) -> Result<(), Diagnostics> {
    let absolute = config_directory().join(path);
    // Load through the absolute path, report with the relative one (stable snapshots).
    let result = if files {
        load(&absolute).and_then(|validated| lower(&validated).map(|_| ()))
    } else {
        load_without_files(&absolute).map(|_| ())
    };
    result.map_err(|mut diagnostics| {
        diagnostics.path = path.to_path_buf();
        diagnostics
    })
}

/// The rendering with machine-specific paths replaced.
fn stable_render(diagnostics: &Diagnostics) -> String {
    let directory = config_directory();
    let canonical = std::fs::canonicalize(&directory).unwrap_or(directory.clone());
    diagnostics
        .render()
        .replace(&canonical.display().to_string(), "@CONFIG@")
        .replace(&directory.display().to_string(), "@CONFIG@")
}

#[test]
fn every_invalid_table_is_rejected_as_its_snapshot_says() {
    write_images();
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    let invalid = tables("invalid");
    assert!(
        invalid.len() >= 60,
        "the corpus needs at least 60 invalid tables"
    );
    for path in &invalid {
        let (expected_rules, files) = header(path);
        let diagnostics = match check(path, files) {
            Ok(()) => {
                failures.push(format!(
                    "{}: accepted, but must be rejected",
                    path.display()
                ));
                continue;
            }
            Err(diagnostics) => diagnostics,
        };
        let found: BTreeSet<String> = diagnostics
            .findings
            .iter()
            .map(|finding| finding.rule.id().to_owned())
            .collect();
        if found != expected_rules {
            failures.push(format!(
                "{}: rules {:?}, but the header expects {:?}\n{}",
                path.display(),
                found,
                expected_rules,
                diagnostics.render()
            ));
        }
        for finding in &diagnostics.findings {
            if finding.rule != Rule::TableUnreadable && finding.span.end > diagnostics.text.len() {
                failures.push(format!("{}: a span beyond the text", path.display()));
            }
        }
        let json = diagnostics.to_json();
        if json["findings"].as_array().map(Vec::len) != Some(diagnostics.findings.len()) {
            failures.push(format!(
                "{}: JSON differs from the findings",
                path.display()
            ));
        }
        let rendered = stable_render(&diagnostics);
        let snapshot = config_directory().join(path.with_extension("expected"));
        if update {
            std::fs::write(&snapshot, &rendered).unwrap();
        }
        match std::fs::read_to_string(&snapshot) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => failures.push(format!(
                "{}: diagnostics differ from {}\n--- expected\n{expected}\n--- found\n{rendered}",
                path.display(),
                snapshot.display()
            )),
            Err(_) => failures.push(format!(
                "{}: no snapshot {} (run with UPDATE_SNAPSHOTS=1)",
                path.display(),
                snapshot.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus tables failed:\n\n{}",
        failures.len(),
        invalid.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_invalid_corpus_covers_every_rule() {
    let mut covered = BTreeSet::new();
    for path in tables("invalid") {
        covered.extend(header(&path).0);
    }
    let missing: Vec<&str> = Rule::ALL
        .iter()
        .map(|rule| rule.id())
        .filter(|id| !covered.contains(*id))
        .collect();
    assert!(missing.is_empty(), "no corpus table for {missing:?}");
    for id in &covered {
        assert!(
            Rule::from_id(id).is_some(),
            "unknown rule `{id}` in a header"
        );
    }
}

#[test]
fn every_valid_table_is_accepted() {
    write_images();
    let valid = tables("valid");
    assert!(!valid.is_empty());
    for path in valid {
        let (_, files) = header(&path);
        if let Err(diagnostics) = check(&path, files) {
            panic!("{} is rejected:\n{}", path.display(), diagnostics.render());
        }
    }
}

#[test]
fn every_rule_is_documented() {
    let documentation =
        std::fs::read_to_string(config_directory().join("../docs/validation.md")).unwrap();
    for rule in Rule::ALL {
        assert!(
            documentation.contains(&format!("### `{}`", rule.id())),
            "docs/validation.md has no section for `{}`",
            rule.id()
        );
    }
}
