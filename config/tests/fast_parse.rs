//! The fast parse (`toml`'s light tree, one parse) against the reference parse (toml_edit's
//! full document with the reporting schema pass): for every corpus table, every partition
//! table of the repository, generated tables and tables written the TOML 1.1 way, `parse`
//! and `parse_reference` agree — the same model with the same spans, or the same findings.
//! The fast path lexes a large text in pieces cut before table headers; every table is also
//! parsed cut before every header, which must come out the same.

use std::path::{Path, PathBuf};

use tessera_config::{
    parse, parse_fast_only, parse_fast_only_in_pieces, parse_reference, synthetic, Diagnostics,
    Table,
};

fn config_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Everything `parse` produced, spans included, as text (the name index is built from the
/// model, and its hash maps print in no fixed order).
fn model(table: &Table) -> String {
    format!(
        "{:#?}\n{:#?}\n{:#?}\n{:#?}\n{:#?}",
        table.platform, table.hypervisor, table.partitions, table.channels, table.run
    )
}

fn findings(diagnostics: &Diagnostics) -> String {
    format!("{:#?}", diagnostics.findings)
}

/// Asserts that both parses of `text` agree: whatever the fast path accepts on its own,
/// the reference parse accepts as the same model, and `parse` (the fast path with its
/// fallback) says what the reference parse says. Returns whether the fast path accepted.
fn assert_same(name: &str, text: &str) -> bool {
    let path = Path::new("agree.toml");
    let fast_only = parse_fast_only(path, text.to_owned());
    let fast = parse(path, text.to_owned());
    let reference = parse_reference(path, text.to_owned());
    match (&fast, &reference) {
        (Ok(fast), Ok(reference)) => {
            assert_same_text(name, "models", &model(fast), &model(reference));
        }
        (Err(fast), Err(reference)) => {
            assert_same_text(name, "findings", &findings(fast), &findings(reference));
        }
        _ => panic!(
            "{name}: the fast parse says {}, the reference parse {}",
            verdict(&fast),
            verdict(&reference)
        ),
    }
    // Cut before every header: the pieces join into the same model. A cut inside a
    // multi-line string or array makes the fast path refuse the table, never misread it.
    let in_pieces = parse_fast_only_in_pieces(path, text.to_owned(), 1);
    match (&in_pieces, &fast_only) {
        (Some(in_pieces), Some(fast_only)) => {
            assert_same_text(
                name,
                "models in pieces",
                &model(in_pieces),
                &model(fast_only),
            );
        }
        (Some(_), None) => panic!("{name}: the fast path accepts the table only in pieces"),
        (None, Some(_)) => assert!(
            text.contains("\"\"\"") || text.contains("'''") || text.contains("[\n["),
            "{name}: the fast path refuses the table in pieces"
        ),
        (None, None) => {}
    }
    match (&fast_only, &reference) {
        (Some(fast_only), Ok(reference)) => {
            assert_same_text(name, "models", &model(fast_only), &model(reference));
            true
        }
        (Some(_), Err(reference)) => panic!(
            "{name}: the fast path accepts a table the reference parse refuses: {}",
            reference.summary()
        ),
        (None, _) => false,
    }
}

/// Panics at the first line where `fast` and `reference` differ, showing it in context.
fn assert_same_text(name: &str, what: &str, fast: &str, reference: &str) {
    let (fast_lines, reference_lines): (Vec<&str>, Vec<&str>) =
        (fast.lines().collect(), reference.lines().collect());
    if let Some(first) = (0..fast_lines.len().max(reference_lines.len()))
        .find(|&line| fast_lines.get(line) != reference_lines.get(line))
    {
        let context = |lines: &[&str]| {
            lines[first.saturating_sub(12)..(first + 3).min(lines.len())].join("\n")
        };
        panic!(
            "{name}: the {what} differ at line {}\n--- fast:\n{}\n--- reference:\n{}",
            first + 1,
            context(&fast_lines),
            context(&reference_lines)
        );
    }
}

fn verdict(result: &Result<Table, Diagnostics>) -> String {
    match result {
        Ok(_) => "valid".to_owned(),
        Err(diagnostics) => diagnostics.summary(),
    }
}

fn tables_in(directory: &Path) -> Vec<PathBuf> {
    let mut tables: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("{}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    tables.sort();
    tables
}

#[test]
fn both_parses_agree_on_every_table_of_the_repository() {
    let root = config_directory();
    let mut directories = vec![
        root.join("corpus/valid"),
        root.join("corpus/invalid"),
        root.join("../partitions"),
    ];
    directories.retain(|directory| directory.is_dir());
    let mut parsed = 0;
    let mut checked = 0;
    for directory in directories {
        for path in tables_in(&directory) {
            // A table that is not UTF-8 text never reaches the parser.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            parsed += usize::from(assert_same(&path.display().to_string(), &text));
            checked += 1;
        }
    }
    // Most tables of the invalid corpus parse (their findings come from the rules), so the
    // spans of the model are compared on them, not only on the valid ones.
    assert!(
        checked > 150 && parsed > 140,
        "the fast path accepted {parsed} of {checked} tables"
    );
}

#[test]
fn both_parses_agree_on_generated_tables() {
    for (partitions, regions) in [(1, 1), (3, 4), (17, 100), (200, 2000)] {
        let text = synthetic::table(partitions, regions);
        assert!(assert_same(
            &format!("synthetic({partitions}, {regions})"),
            &text
        ));
    }
}

/// A small generated table (3 partitions, channel `c0`) with `edit` applied.
fn edited(edit: impl Fn(&str) -> String) -> String {
    let text = synthetic::table(3, 4);
    assert!(assert_same("the table before the edit", &text));
    let changed = edit(&text);
    assert_ne!(changed, text, "the edit must change the table");
    changed
}

/// TOML 1.1 allows what the format (TOML 1.0) refuses; the fast parser reads TOML 1.1, so
/// these must come out as the reference parse's syntax errors, not as tables.
#[test]
fn toml_1_1_syntax_stays_a_syntax_error() {
    let cases = [
        (
            "an inline table over two lines",
            edited(|text| text.replacen("doorbell = { vector", "doorbell = {\n vector", 1)),
        ),
        (
            "an inline table with a trailing comma",
            edited(|text| {
                text.replacen(
                    "doorbell = { vector = 0x40 }",
                    "doorbell = { vector = 0x40, }",
                    1,
                )
            }),
        ),
        (
            "the \\e escape",
            edited(|text| text.replacen("name = \"c0\"", "name = \"c\\e0\"", 1)),
        ),
        (
            "the \\x escape",
            edited(|text| text.replacen("name = \"c0\"", "name = \"c\\x410\"", 1)),
        ),
        (
            "a control character in a comment",
            edited(|text| format!("# a bell \u{7}\n{text}")),
        ),
        (
            "a time without seconds",
            edited(|text| format!("{text}\n[run]\nseconds = 07:32\n")),
        ),
    ];
    for (name, text) in cases {
        assert!(
            !assert_same(name, &text),
            "{name}: the fast path accepted the table"
        );
        let diagnostics = parse(Path::new("agree.toml"), text).expect_err(name);
        assert_eq!(diagnostics.findings[0].rule.id(), "syntax", "{name}");
    }
}

/// Literal strings and comments may hold what looks like a TOML 1.1 escape: the fast path
/// hands them to the reference parse, which accepts them.
#[test]
fn escape_lookalikes_outside_basic_strings_are_fine() {
    let text = edited(|text| format!("# not an escape: \\e \\x41\n{text}"));
    assert_same("a comment with backslashes", &text);
    assert!(parse(Path::new("agree.toml"), text).is_ok());
}

#[test]
fn both_parses_agree_on_broken_tables() {
    let text = synthetic::table(3, 4);
    // Every prefix at a line end, and every line removed in turn.
    let lines: Vec<&str> = text.lines().collect();
    for end in 0..lines.len() {
        let prefix = lines[..end].join("\n");
        assert_same(&format!("the first {end} lines"), &prefix);
        let without: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != end)
            .map(|(_, line)| *line)
            .collect();
        assert_same(&format!("without line {}", end + 1), &without.join("\n"));
    }
}

/// The same table written in the other ways TOML 1.0 allows (and a few it does not): each
/// way, both parses agree, and the fast path takes the ones it should.
#[test]
fn both_parses_agree_on_other_spellings() {
    // (what, from, to, whether the fast path should accept it)
    let spellings = [
        ("a hexadecimal core", "cpus = [1]", "cpus = [0x1]", true),
        ("an octal core", "cpus = [1]", "cpus = [0o1]", true),
        ("a binary core", "cpus = [1]", "cpus = [0b1]", true),
        ("a plus sign", "cpus = [1]", "cpus = [+1]", true),
        ("an underscore", "cpus = [1]", "cpus = [0_1]", false),
        ("a leading zero", "cpus = [1]", "cpus = [01]", false),
        ("a literal string", "name = \"p1\"", "name = 'p1'", true),
        ("a quoted key", "name = \"p1\"", "\"name\" = \"p1\"", true),
        ("an escaped name", "name = \"p1\"", "name = \"\\u0070\\u0031\"", true),
        ("a surrogate escape", "name = \"p1\"", "name = \"\\uD800\"", false),
        ("a dotted key", "boot = { kind = \"elf\", image = \"guest.elf\" }\non-fault = \"halt\"\n\n[[partition]]\nname = \"p2\"", "boot.kind = \"elf\"\nboot.image = \"guest.elf\"\non-fault = \"halt\"\n\n[[partition]]\nname = \"p2\"", false),
        ("a boot sub-table", "boot = { kind = \"elf\", image = \"guest.elf\" }\non-fault = \"halt\"\n\n[[partition]]\nname = \"p2\"", "on-fault = \"halt\"\n[partition.boot]\nkind = \"elf\"\nimage = \"guest.elf\"\n\n[[partition]]\nname = \"p2\"", true),
        ("an implicit health table", "capabilities = [\"power\", \"stats:*\"]\n", "capabilities = [\"power\", \"stats:*\"]\n[partition.health.watchdog]\nperiod = \"100 ms\"\n", false),
        ("a health table", "capabilities = [\"power\", \"stats:*\"]\n", "capabilities = [\"power\", \"stats:*\"]\n[partition.health]\nrestart-limit = 3\n[partition.health.watchdog]\nperiod = \"100 ms\"\n", true),
        ("memory as an array of tables", "memory = [\n    { base = 0x1020000, size = \"64 KiB\" },\n]\ndevices = [\"uart1\"]\nboot = { kind = \"elf\", image = \"guest.elf\" }\non-fault = \"halt\"\n", "devices = [\"uart1\"]\nboot = { kind = \"elf\", image = \"guest.elf\" }\non-fault = \"halt\"\n[[partition.memory]]\nbase = 0x1020000\nsize = \"64 KiB\"\n", true),
        ("a comment after a value", "cpus = [1]", "cpus = [1] # core one", true),
        ("no spaces", "cpus = [1]", "cpus=[1]", true),
        ("a key twice", "cpus = [1]", "cpus = [1]\ncpus = [1]", false),
        ("a size as a float", "size = \"64 KiB\" },", "size = 65536.0 },", false),
        ("a negative size", "size = \"64 KiB\" },", "size = -65536 },", false),
        ("an integer beyond 64 bits", "cpus = [1]", "cpus = [99999999999999999999]", false),
        ("a date", "cpus = [1]", "cpus = [1979-05-27]", false),
    ];
    let device_header = edited(|text| {
        let without = text.replacen(
            "console = { ports = [ { base = 0x3f8, size = 8 } ] }\n",
            "",
            1,
        );
        format!("{without}\n[platform.devices.console]\nports = [ {{ base = 0x3f8, size = 8 }} ]\n")
    });
    assert!(assert_same("a device under its own header", &device_header));
    for (what, from, to, fast) in spellings {
        let text = edited(|text| text.replacen(from, to, 1));
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(assert_same(what, &text), fast, "{what}: the fast path");
        assert_eq!(
            assert_same(what, &crlf),
            fast,
            "{what} (CRLF): the fast path"
        );
    }
}

/// A cut before a line that starts with `[` inside a multi-line string or array leaves the
/// piece before it open: the fast path refuses such a table when cut there (the reference
/// parse then reads it) and reads it whole otherwise.
#[test]
fn a_header_lookalike_inside_a_value_is_not_a_cut() {
    for inside in [
        "qemu-devices = [\"\"\"\n[[partition]]\nname = \"x\"\n\"\"\"]\n",
        "qemu-devices = [\n[\"nested\"],\n]\n",
    ] {
        let text = format!("{}\n[run]\n{inside}", synthetic::table(3, 4));
        let path = Path::new("agree.toml");
        let whole = parse_fast_only(path, text.clone());
        let in_pieces = parse_fast_only_in_pieces(path, text.clone(), 1);
        assert!(
            in_pieces.is_none(),
            "{inside:?}: cut inside the value, yet accepted"
        );
        if inside.contains("\"\"\"") {
            let whole = whole.expect("the table read whole");
            assert_eq!(
                whole.run.qemu_devices[0].value,
                "[[partition]]\nname = \"x\"\n"
            );
            assert!(parse(path, text).is_ok());
        } else {
            // An array in an array of strings: TOML, but not the format; refused either way.
            assert!(whole.is_none());
        }
    }
}
