//! The schema pass: before the table is deserialized, its TOML document is walked against a
//! description of every key, so that one run reports every unknown key (with a "did you
//! mean" suggestion), every missing key and every mistyped value, each at its own span.
//! Serde's deserializer stops at the first such problem; this pass does not.
//!
//! The schema here and the serde structures of [`crate::model`] describe the same format;
//! a document that passes this pass deserializes (the fuzz target and the corpus tests keep
//! the two in step: a serde error after a clean schema pass is reported as `syntax`).

use std::fmt;

use toml_edit::{ImDocument, Item, Table, Value};

use crate::diagnostics::Finding;
use crate::duration::parse_duration;
use crate::model::{PciAddress, NO_SPAN};
use crate::size::parse_size;
use crate::source::Span;
use crate::toml_tree;
use crate::validate::Rule;

/// What a value must look like.
#[derive(Clone, Copy, Debug)]
enum Shape {
    String,
    /// `true` or `false`.
    Bool,
    /// A non-negative integer at most `max`.
    Integer {
        max: u64,
    },
    /// Bytes as an integer, or a string with a binary unit.
    Size,
    /// A PCI function address `bb:dd.f`.
    Pci,
    /// A duration string with a unit ("100 ms").
    Duration,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// An array whose elements have this shape.
    Array(&'static Shape),
    /// A table with these keys.
    Table(&'static [Field]),
    /// A table whose keys are names chosen by the author, each value of this shape.
    Map(&'static Shape),
}

/// One key of a table.
#[derive(Clone, Copy, Debug)]
struct Field {
    key: &'static str,
    shape: Shape,
    required: bool,
}

const fn required(key: &'static str, shape: Shape) -> Field {
    Field {
        key,
        shape,
        required: true,
    }
}

const fn optional(key: &'static str, shape: Shape) -> Field {
    Field {
        key,
        shape,
        required: false,
    }
}

const ADDRESS: Shape = Shape::Integer {
    max: i64::MAX as u64,
};
const U32: Shape = Shape::Integer {
    max: u32::MAX as u64,
};
const U32_LIST: Shape = Shape::Array(&U32);
const STRING_LIST: Shape = Shape::Array(&Shape::String);
const RANGE: Shape = Shape::Table(&[required("base", ADDRESS), required("size", Shape::Size)]);
const RANGE_LIST: Shape = Shape::Array(&RANGE);
const IOAPIC: Shape = Shape::Table(&[required("base", ADDRESS), required("pins", U32)]);
const DEVICE: Shape = Shape::Table(&[
    optional("ports", RANGE_LIST),
    optional("mmio", RANGE_LIST),
    optional("pci", Shape::Pci),
    optional("irq", U32),
    optional("virtual-pci", Shape::Pci),
    optional(
        "interrupt",
        Shape::Table(&[
            required("kind", Shape::Choice(&["intx", "msi", "msix"])),
            optional("vectors", U32),
        ]),
    ),
    optional("dma", Shape::Choice(&["confined", "unconfined"])),
]);
const IOMMU: Shape = Shape::Table(&[
    required("base", ADDRESS),
    required("size", Shape::Size),
    optional("covers", Shape::Array(&Shape::Pci)),
]);
const PCI_BRIDGE: Shape = Shape::Table(&[
    required("pci", Shape::Pci),
    required("secondary", Shape::Integer { max: 255 }),
    optional("subordinate", Shape::Integer { max: 255 }),
    required("kind", Shape::Choice(&["pci", "pcie-to-pci", "pcie-port"])),
]);
const PLATFORM: Shape = Shape::Table(&[
    required("name", Shape::String),
    required("cpus", U32_LIST),
    required("ram", RANGE_LIST),
    optional("ioapic", IOAPIC),
    optional("ecam", RANGE),
    optional("iommu", Shape::Array(&IOMMU)),
    optional("pci-bridges", Shape::Array(&PCI_BRIDGE)),
    optional("devices", Shape::Map(&DEVICE)),
]);
const HYPERVISOR: Shape = Shape::Table(&[
    required("memory", RANGE),
    required("console", Shape::String),
]);
const REGION: Shape = Shape::Table(&[
    required("base", ADDRESS),
    required("size", Shape::Size),
    optional("guest", ADDRESS),
]);
const BOOT: Shape = Shape::Table(&[
    required("kind", Shape::Choice(&["elf", "linux"])),
    optional("image", Shape::String),
    optional("kernel", Shape::String),
    optional("initrd", Shape::String),
    optional("cmdline", Shape::String),
]);
const ACTION: Shape = Shape::Choice(&[
    "log",
    "halt",
    "warm-restart",
    "cold-restart",
    "standby",
    "machine-reset",
    "machine-power-off",
]);
const EVENT: Shape = Shape::Choice(&[
    "memory-violation",
    "shutdown",
    "entry-failure",
    "reset-request",
    "unexpected-exit",
    "watchdog-expiry",
    "restart-budget-exhausted",
    "declared-fatal",
    "device-fault",
]);
const HEALTH_EVENTS: Shape = Shape::Table(&[
    optional("memory-violation", ACTION),
    optional("shutdown", ACTION),
    optional("entry-failure", ACTION),
    optional("reset-request", ACTION),
    optional("unexpected-exit", ACTION),
    optional("watchdog-expiry", ACTION),
    optional("restart-budget-exhausted", ACTION),
    optional("declared-fatal", ACTION),
    optional("device-fault", ACTION),
]);
const ESCALATION: Shape = Shape::Table(&[
    optional("event", EVENT),
    optional("action", ACTION),
    required("count", U32),
    required("window", Shape::Duration),
    required("to", ACTION),
]);
const HEALTH: Shape = Shape::Table(&[
    optional("events", HEALTH_EVENTS),
    optional("restart-limit", U32),
    optional(
        "watchdog",
        Shape::Table(&[required("period", Shape::Duration)]),
    ),
    optional("escalate", Shape::Array(&ESCALATION)),
]);
const PARTITION: Shape = Shape::Table(&[
    required("name", Shape::String),
    required("cpus", U32_LIST),
    required("memory", Shape::Array(&REGION)),
    optional("devices", STRING_LIST),
    required("boot", BOOT),
    required("on-fault", Shape::Choice(&["halt", "restart"])),
    optional("health", HEALTH),
    optional("capabilities", STRING_LIST),
    optional("user-hypercalls", STRING_LIST),
    optional("wbinvd", Shape::Choice(&["native", "trap"])),
    optional("standby-for", Shape::String),
    optional("takeover-vector", ADDRESS),
    optional("rejoin-as-standby", Shape::Bool),
    optional(
        "pci-config",
        Shape::Choice(&["ecam-only", "ecam-and-conf1"]),
    ),
]);
const CHANNEL: Shape = Shape::Table(&[
    required("name", Shape::String),
    required("partitions", STRING_LIST),
    required("memory", RANGE),
    required("doorbell", Shape::Table(&[required("vector", ADDRESS)])),
    optional("doorbell-budget", ADDRESS),
]);
const RUN: Shape = Shape::Table(&[
    optional("expect-faults", STRING_LIST),
    optional("seconds", ADDRESS),
    optional("qemu-devices", STRING_LIST),
    optional("bochs-pci-slots", STRING_LIST),
    optional("qemu-disks", Shape::Array(&QEMU_DISK)),
]);
const QEMU_DISK: Shape = Shape::Table(&[
    required("file", Shape::String),
    required("size", Shape::Size),
    required("device", Shape::String),
]);
const DOCUMENT: &[Field] = &[
    required("platform", PLATFORM),
    required("hypervisor", HYPERVISOR),
    optional("partition", Shape::Array(&PARTITION)),
    optional("channel", Shape::Array(&CHANNEL)),
    optional("run", RUN),
];

/// How messages name the document's top level.
/// What a value is, for messages; built as the walk descends and written out only when a
/// finding needs it (formatting a description for every value of a large table was a fifth
/// of the schema pass's cost).
#[derive(Clone, Copy)]
enum What<'a> {
    /// The document itself.
    TopLevel,
    /// A top-level `[table]` or `[[array]]` of this key.
    Header { key: &'a str, array: bool },
    /// The value of a key below the top level.
    Key(&'a str),
    /// The element with this `name` of an array.
    Named(&'a What<'a>, &'a str),
    /// An element of an array by its position (0-based).
    Element(&'a What<'a>, usize),
}

impl fmt::Display for What<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::TopLevel => formatter.write_str("the top level"),
            What::Header { key, array: true } => write!(formatter, "[[{key}]]"),
            What::Header { key, array: false } => write!(formatter, "[{key}]"),
            What::Key(key) => write!(formatter, "`{key}`"),
            What::Named(array, name) => write!(formatter, "{array} `{name}`"),
            What::Element(array, index) => write!(formatter, "element {} of {array}", index + 1),
        }
    }
}

/// Parses `text` as TOML and checks it against the schema. Returns every finding (empty
/// when the document has the table's shape).
pub fn check(text: &str) -> Vec<Finding> {
    match parse_document(text) {
        Ok(document) => check_document(&document, text),
        Err(finding) => vec![*finding],
    }
}

/// Parses `text` as TOML (keeping spans), or the syntax error as a finding.
pub fn parse_document(text: &str) -> Result<ImDocument<&str>, Box<Finding>> {
    ImDocument::parse(text).map_err(|error| {
        let span = error.span().map(Span::from).unwrap_or(NO_SPAN);
        Box::new(
            Finding::new(Rule::Syntax, span, error.message().trim().to_owned())
                .label("not valid TOML"),
        )
    })
}

/// [`check`] on a document already parsed from `text`: the caller can deserialize the same
/// document afterwards instead of parsing the text a second time.
pub fn check_document(document: &ImDocument<&str>, text: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let root: &Table = document.as_table();
    let mut checker = Checker {
        text,
        findings: &mut findings,
    };
    checker.entries(Entries::Table(root), DOCUMENT, &What::TopLevel, NO_SPAN);
    findings.sort_by_key(|finding| finding.span.start);
    findings
}

/// A table's entries, whether written as a `[table]` or as an inline `{ … }`.
#[derive(Clone, Copy)]
enum Entries<'a> {
    Table(&'a Table),
    Inline(&'a toml_edit::InlineTable),
}

/// One entry: key, the key's span and the value.
struct Entry<'a> {
    key: &'a str,
    key_span: Span,
    value: Node<'a>,
}

impl<'a> Entries<'a> {
    fn list(self) -> Vec<Entry<'a>> {
        match self {
            Entries::Table(table) => table
                .iter()
                .filter(|(_, item)| !item.is_none())
                .map(|(key, item)| Entry {
                    key,
                    key_span: table
                        .key(key)
                        .and_then(|key| key.span())
                        .map(Span::from)
                        .unwrap_or(NO_SPAN),
                    value: Node::Item(item),
                })
                .collect(),
            Entries::Inline(table) => table
                .iter()
                .map(|(key, value)| Entry {
                    key,
                    key_span: table
                        .key(key)
                        .and_then(|key| key.span())
                        .map(Span::from)
                        .unwrap_or(NO_SPAN),
                    value: Node::Value(value),
                })
                .collect(),
        }
    }

    /// The table's span; for a `[table]`, only its header line.
    fn span(self, text: &str) -> Option<Span> {
        match self {
            Entries::Table(table) => table.span().map(|range| {
                let line_end = text
                    .get(range.clone())
                    .and_then(|written| written.find('\n'))
                    .map_or(range.end, |newline| range.start + newline);
                Span::new(range.start, line_end)
            }),
            Entries::Inline(table) => table.span().map(Span::from),
        }
    }

    /// The value of a `name = "…"` entry, to name array elements in messages.
    fn name(self) -> Option<&'a str> {
        match self {
            Entries::Table(table) => table.get("name").and_then(Item::as_str),
            Entries::Inline(table) => table.get("name").and_then(Value::as_str),
        }
    }
}

/// A value anywhere in the document.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(Item::Value(value)) | Node::Value(value) => Some(value),
            _ => None,
        }
    }

    fn span(self) -> Option<Span> {
        let range = match self {
            Node::Item(Item::Value(value)) | Node::Value(value) => value.span(),
            Node::Item(Item::Table(table)) | Node::Table(table) => table.span(),
            Node::Item(Item::ArrayOfTables(array)) => array.span(),
            Node::Item(Item::None) => None,
        };
        range.map(Span::from)
    }

    fn entries(self) -> Option<Entries<'a>> {
        match self {
            Node::Item(Item::Table(table)) | Node::Table(table) => Some(Entries::Table(table)),
            Node::Item(Item::Value(Value::InlineTable(table)))
            | Node::Value(Value::InlineTable(table)) => Some(Entries::Inline(table)),
            _ => None,
        }
    }

    fn elements(self) -> Option<Vec<Node<'a>>> {
        match self {
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                Some(array.iter().map(Node::Value).collect())
            }
            Node::Item(Item::ArrayOfTables(array)) => Some(array.iter().map(Node::Table).collect()),
            _ => None,
        }
    }

    /// "a string", "an integer", … for messages.
    fn describe(self) -> &'static str {
        match self {
            Node::Item(Item::Value(value)) | Node::Value(value) => match value {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a date-time",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "a table",
            },
            Node::Item(Item::Table(_)) | Node::Table(_) => "a table",
            Node::Item(Item::ArrayOfTables(_)) => "an array of tables",
            Node::Item(Item::None) => "nothing",
        }
    }
}

fn expected(shape: Shape) -> &'static str {
    match shape {
        Shape::String | Shape::Choice(_) => "a string",
        Shape::Bool => "a boolean (true or false)",
        Shape::Integer { .. } => "an integer",
        Shape::Size => "a size (an integer number of bytes or a string like \"16 MiB\")",
        Shape::Pci => "a PCI address string \"bb:dd.f\"",
        Shape::Duration => "a duration string like \"100 ms\"",
        Shape::Array(_) => "an array",
        Shape::Table(_) | Shape::Map(_) => "a table",
    }
}

/// Walks the document, collecting findings.
struct Checker<'a> {
    text: &'a str,
    findings: &'a mut Vec<Finding>,
}

impl Checker<'_> {
    fn entries(&mut self, entries: Entries, fields: &[Field], context: &What, fallback: Span) {
        let top_level = matches!(context, What::TopLevel);
        let table_span = entries.span(self.text).unwrap_or(fallback);
        let list = entries.list();
        for entry in &list {
            match fields.iter().find(|field| field.key == entry.key) {
                Some(field) => {
                    let span = entry.value.span().unwrap_or(entry.key_span);
                    // `[[partition]]` and `[[channel]]` read better than `partition`.
                    let what = match (top_level, field.shape) {
                        (true, Shape::Array(Shape::Table(_))) => What::Header {
                            key: entry.key,
                            array: true,
                        },
                        (true, Shape::Table(_)) => What::Header {
                            key: entry.key,
                            array: false,
                        },
                        _ => What::Key(entry.key),
                    };
                    self.node(entry.value, field.shape, &what, span);
                }
                None => {
                    let known: Vec<&str> = fields.iter().map(|field| field.key).collect();
                    let mut finding = Finding::new(
                        Rule::UnknownKey,
                        entry.key_span,
                        format!("unknown key `{}` in {context}", entry.key),
                    )
                    .label("unknown key");
                    finding = match did_you_mean(entry.key, &known) {
                        Some(suggestion) => finding.hint(format!("did you mean `{suggestion}`?")),
                        None => finding.hint(format!(
                            "the keys of {context} are {}",
                            known
                                .iter()
                                .map(|key| format!("`{key}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    };
                    self.findings.push(finding);
                }
            }
        }
        for field in fields.iter().filter(|field| field.required) {
            if !list.iter().any(|entry| entry.key == field.key) {
                self.findings.push(
                    Finding::new(
                        Rule::MissingKey,
                        table_span,
                        format!("{context} needs the key `{}`", field.key),
                    )
                    .label(format!("no `{}` here", field.key))
                    .hint(match (top_level, field.shape) {
                        (true, Shape::Table(_)) => {
                            format!("add a `[{}]` table; see docs/partition-table.md", field.key)
                        }
                        _ => format!(
                            "add `{} = …` ({}); see docs/partition-table.md",
                            field.key,
                            expected(field.shape)
                        ),
                    }),
                );
            }
        }
    }

    fn node(&mut self, node: Node, shape: Shape, what: &What, fallback: Span) {
        let span = node.span().unwrap_or(fallback);
        let findings = &mut *self.findings;
        let wrong_type = |findings: &mut Vec<Finding>| {
            findings.push(
                Finding::new(
                    Rule::WrongType,
                    span,
                    format!(
                        "{what} must be {}, not {}",
                        expected(shape),
                        node.describe()
                    ),
                )
                .label(format!("expected {}", expected(shape))),
            );
        };
        match shape {
            Shape::String => {
                if !matches!(node.value(), Some(Value::String(_))) {
                    wrong_type(findings);
                }
            }
            Shape::Bool => {
                if !matches!(node.value(), Some(Value::Boolean(_))) {
                    wrong_type(findings);
                }
            }
            Shape::Integer { max } => match node.value() {
                Some(Value::Integer(integer)) => {
                    let value = *integer.value();
                    if value < 0 || value as u64 > max {
                        findings.push(
                            Finding::new(
                                Rule::IntegerRange,
                                span,
                                format!("{what} is {value}, outside 0..={max:#x}"),
                            )
                            .label("out of range"),
                        );
                    }
                }
                _ => wrong_type(findings),
            },
            Shape::Size => match node.value() {
                Some(Value::Integer(integer)) => {
                    if *integer.value() < 0 {
                        findings.push(
                            Finding::new(
                                Rule::IntegerRange,
                                span,
                                format!("{what} is negative ({})", integer.value()),
                            )
                            .label("a size cannot be negative"),
                        );
                    }
                }
                Some(Value::String(text)) => {
                    if let Err(error) = parse_size(text.value()) {
                        findings.push(
                        Finding::new(
                            Rule::SizeUnit,
                            span,
                            format!("{what}: invalid size \"{}\": {error}", text.value()),
                        )
                        .label("not a size")
                        .hint("write bytes as an integer, or a number with B, KiB, MiB, GiB or TiB (\"16 MiB\")"),
                    );
                    }
                }
                _ => wrong_type(findings),
            },
            Shape::Pci => match node.value() {
                Some(Value::String(text)) => {
                    if let Err(error) = text.value().parse::<PciAddress>() {
                        findings.push(
                        Finding::new(
                            Rule::PciSyntax,
                            span,
                            format!("{what}: invalid PCI address \"{}\": {error}", text.value()),
                        )
                        .label("not bb:dd.f")
                        .hint("bus and device in hexadecimal, device ≤ 1f, function ≤ 7: \"00:1f.3\""),
                    );
                    }
                }
                _ => wrong_type(findings),
            },
            Shape::Duration => match node.value() {
                Some(Value::String(text)) => {
                    if let Err(error) = parse_duration(text.value()) {
                        findings.push(
                            Finding::new(
                                Rule::DurationUnit,
                                span,
                                format!("{what}: invalid duration \"{}\": {error}", text.value()),
                            )
                            .label("not a duration")
                            .hint("write a number with us, ms, s or min (\"100 ms\")"),
                        );
                    }
                }
                _ => wrong_type(findings),
            },
            Shape::Choice(choices) => match node.value() {
                Some(Value::String(text)) => {
                    if !choices.contains(&text.value().as_str()) {
                        let listed = choices
                            .iter()
                            .map(|choice| format!("\"{choice}\""))
                            .collect::<Vec<_>>()
                            .join(" or ");
                        let mut finding = Finding::new(
                            Rule::UnknownValue,
                            span,
                            format!("{what} is \"{}\", but must be {listed}", text.value()),
                        )
                        .label("unknown value");
                        if let Some(suggestion) = did_you_mean(text.value(), choices) {
                            finding = finding.hint(format!("did you mean \"{suggestion}\"?"));
                        }
                        findings.push(finding);
                    }
                }
                _ => wrong_type(findings),
            },
            Shape::Array(element) => match node.elements() {
                Some(elements) => {
                    for (number, element_node) in elements.into_iter().enumerate() {
                        // Name an element by its `name` when it has one.
                        let description = match element_node.entries().and_then(Entries::name) {
                            Some(name) => What::Named(what, name),
                            None => What::Element(what, number),
                        };
                        self.node(element_node, *element, &description, span);
                    }
                }
                None => wrong_type(findings),
            },
            Shape::Table(fields) => match node.entries() {
                Some(entries) => self.entries(entries, fields, what, span),
                None => wrong_type(findings),
            },
            Shape::Map(value_shape) => match node.entries() {
                Some(entries) => {
                    for entry in entries.list() {
                        let entry_span = entry.value.span().unwrap_or(entry.key_span);
                        self.node(entry.value, *value_shape, &What::Key(entry.key), entry_span);
                    }
                }
                None => wrong_type(findings),
            },
        }
    }
}

/// Whether `text` avoids everything TOML 1.1 added to TOML 1.0 that a byte scan can see:
/// control characters in comments (other than tab), a carriage return not before a line
/// feed, and the `\e` and `\xHH` escapes (written anywhere: a literal string or a comment
/// with them only costs the slower path). The fast path parses with a TOML 1.1 parser; the
/// format is TOML 1.0, so a table using these goes to [`parse_document`], whose verdict and
/// messages are the format's.
pub fn toml_1_0_bytes(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Tables are mostly printable characters and line feeds: check that first, a chunk at
    // a time without branches (the compiler vectorises it), and look closer only if a chunk
    // holds anything else.
    let plain = |chunk: &[u8]| {
        chunk.iter().fold(true, |plain, &byte| {
            plain & ((byte >= b' ' && byte != b'\\' && byte != 0x7f) | (byte == b'\n'))
        })
    };
    if bytes.chunks(64).all(plain) {
        return true;
    }
    bytes.iter().enumerate().all(|(index, &byte)| match byte {
        b'\t' | b'\n' | b' '..=b'~' if byte != b'\\' => true,
        b'\\' => !matches!(bytes.get(index + 1), Some(b'e' | b'x')),
        b'\r' => bytes.get(index + 1) == Some(&b'\n'),
        0x80..=0xff => true,
        _ => false,
    })
}

/// Whether the fast parse's tree of `text` ([`crate::toml_tree`]) has the table's shape:
/// the yes-or-no form of [`check_document`], with no findings and no messages. A document
/// it refuses (and one it accepts that serde then refuses) goes through [`parse_document`]
/// and [`check_document`], which say what is wrong; it also refuses inline tables written
/// the TOML 1.1 way (over several lines or with a trailing comma), which TOML 1.0 does not
/// allow.
pub fn conforms(root: toml_tree::Value<'_, '_>, text: &str) -> bool {
    LightChecker { text }.table(root, DOCUMENT)
}

/// The walk of [`conforms`].
struct LightChecker<'a> {
    text: &'a str,
}

impl LightChecker<'_> {
    fn table(&self, table: toml_tree::Value<'_, '_>, fields: &[Field]) -> bool {
        let toml_tree::Kind::Table { mut entries, .. } = table.kind() else {
            return false;
        };
        let known = entries.all(|entry| {
            fields
                .iter()
                .find(|field| field.key == entry.key())
                .is_some_and(|field| self.node(entry, field.shape))
        });
        known
            && fields
                .iter()
                .filter(|field| field.required)
                .all(|field| table.get(field.key).is_some())
    }

    fn node(&self, node: toml_tree::Value<'_, '_>, shape: Shape) -> bool {
        use toml_tree::Kind;
        // The tree holds only non-negative integers that fit in an `i64`.
        match (shape, node.kind()) {
            (Shape::String, Kind::String(_)) | (Shape::Bool, Kind::Bool(_)) => true,
            (Shape::Integer { max }, Kind::Integer(value)) => value as u64 <= max,
            (Shape::Size, Kind::Integer(_)) => true,
            (Shape::Size, Kind::String(text)) => parse_size(text).is_ok(),
            (Shape::Pci, Kind::String(text)) => text.parse::<PciAddress>().is_ok(),
            (Shape::Duration, Kind::String(text)) => parse_duration(text).is_ok(),
            (Shape::Choice(choices), Kind::String(text)) => choices.contains(&text),
            (Shape::Array(element), Kind::Array(mut elements)) => {
                elements.all(|element_node| self.node(element_node, *element))
            }
            (Shape::Table(fields), Kind::Table { inline, .. }) => {
                self.written_as_toml_1_0(node, inline) && self.table(node, fields)
            }
            (
                Shape::Map(value_shape),
                Kind::Table {
                    mut entries,
                    inline,
                },
            ) => {
                self.written_as_toml_1_0(node, inline)
                    && entries.all(|entry| self.node(entry, *value_shape))
            }
            _ => false,
        }
    }

    /// Whether a table is written in a way the fast path takes: with a `[header]` (or
    /// `[[header]]`), or inline (`{ … }`) on one line without a trailing comma, as TOML 1.0
    /// wants it (a comment cannot be inside: it would run to the end of the line, past the
    /// closing brace). (The tree has no tables made by dotted keys: it refuses them.)
    fn written_as_toml_1_0(&self, node: toml_tree::Value<'_, '_>, inline: bool) -> bool {
        if !inline {
            return true;
        }
        self.text
            .get(node.span())
            .and_then(|written| written.strip_prefix('{'))
            .and_then(|after_brace| after_brace.strip_suffix('}'))
            .is_some_and(|inside| !inside.contains('\n') && !inside.trim_end().ends_with(','))
    }
}

/// The known word closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    known
        .iter()
        .map(|candidate| (strsim::levenshtein(word, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
        .or_else(|| {
            // Case or separator mix-ups (`on_fault`, `OnFault`).
            let normalized = word.to_ascii_lowercase().replace('_', "-");
            known
                .iter()
                .copied()
                .find(|candidate| candidate.replace('-', "") == normalized.replace('-', ""))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<&'static str> {
        check(text)
            .iter()
            .map(|finding| finding.rule.id())
            .collect()
    }

    #[test]
    fn suggests_close_keys() {
        assert_eq!(
            did_you_mean("on_fault", &["on-fault", "name"]),
            Some("on-fault")
        );
        assert_eq!(
            did_you_mean("capabilites", &["capabilities"]),
            Some("capabilities")
        );
        assert_eq!(did_you_mean("colour", &["cpus", "memory"]), None);
    }

    #[test]
    fn reports_every_problem_of_a_document() {
        let text = r#"
[platform]
nme = "x"
cpus = [0, -1, "two"]
ram = [ { base = 0, size = "4 KB" } ]
[hypervisor]
memory = { base = 0, size = 4096 }
[[partition]]
name = "a"
cpus = [0]
memory = []
boot = { kind = "elfs" }
on-fault = 3
"#;
        let mut found = rules(text);
        found.sort_unstable();
        assert_eq!(
            found,
            [
                "integer-range",
                "missing-key",
                "missing-key",
                "size-unit",
                "unknown-key",
                "unknown-value",
                "wrong-type",
                "wrong-type"
            ]
        );
    }

    #[test]
    fn finds_what_toml_1_1_added_in_the_bytes() {
        assert!(toml_1_0_bytes("a = \"b\"\r\n\tc = 1 # é\n"));
        assert!(toml_1_0_bytes(&"x = 1\n".repeat(100)));
        assert!(toml_1_0_bytes("a = \"\\n\\u0041\""));
        assert!(!toml_1_0_bytes("a = \"\\e\""));
        assert!(!toml_1_0_bytes(&format!(
            "{}a = \"\\x41\"",
            "x = 1\n".repeat(100)
        )));
        assert!(!toml_1_0_bytes("a = 1 # \u{7}\n"));
        assert!(!toml_1_0_bytes("a = 1\rb = 2"));
        assert!(!toml_1_0_bytes("a = 1 # \u{7f}"));
    }

    #[test]
    fn syntax_errors_have_a_span() {
        let findings = check("[platform\nname = 1");
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rule, Rule::Syntax);
    }
}
