//! Names are `[a-z0-9-]+` and unique among partitions, channels and devices.

use std::collections::HashMap;

use crate::diagnostics::Finding;
use crate::model::Table;
use crate::source::Located;
use crate::validate::Rule;

/// Whether `name` is a valid table name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

pub(super) fn check(table: &Table, findings: &mut Vec<Finding>) {
    let partitions: Vec<&Located<String>> = table.partitions.iter().map(|p| &p.name).collect();
    let channels: Vec<&Located<String>> = table.channels.iter().map(|c| &c.name).collect();
    let devices: Vec<&Located<String>> = table.platform.devices.iter().map(|d| &d.name).collect();
    for (kind, names) in [
        ("partition", partitions),
        ("channel", channels),
        ("device", devices),
    ] {
        let mut first: HashMap<&str, &Located<String>> = HashMap::new();
        for name in names {
            if !valid_name(name) {
                findings.push(
                    Finding::new(
                        Rule::NameSyntax,
                        name.span,
                        format!("invalid {kind} name `{}`", **name),
                    )
                    .label("not [a-z0-9-]+")
                    .hint("names use lower-case ASCII letters, digits and `-`"),
                );
            }
            if let Some(earlier) = first.get(name.as_str()) {
                findings.push(
                    Finding::new(
                        Rule::NameDuplicate,
                        name.span,
                        format!("{kind} name `{}` is used twice", **name),
                    )
                    .label("second use")
                    .related(earlier.span, "first use")
                    .hint(format!("rename one of the {kind}s")),
                );
            } else {
                first.insert(name.as_str(), name);
            }
        }
    }
}
