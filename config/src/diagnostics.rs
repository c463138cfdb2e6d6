//! Findings and their rustc-like rendering (file:line:column, rule id, both items of a
//! collision, a hint).

use std::fmt;
use std::path::PathBuf;

use ariadne::{CharSet, Config, IndexType, Label, Report, ReportKind, Source};

use crate::source::{line_column, LineColumn, Span};
use crate::validate::Rule;

/// The other item involved in a finding (e.g. the second partition of an overlap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    pub span: Span,
    pub label: String,
}

/// One problem in a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    /// Where the problem is.
    pub span: Span,
    /// The headline.
    pub message: String,
    /// What the primary span is, shown under it.
    pub label: Option<String>,
    /// The other item of a collision.
    pub related: Option<Related>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Finding {
    pub fn new(rule: Rule, span: Span, message: impl Into<String>) -> Self {
        Self {
            rule,
            span,
            message: message.into(),
            label: None,
            related: None,
            hint: None,
        }
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related = Some(Related {
            span,
            label: label.into(),
        });
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every finding for one table file, with the text needed to show them.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub path: PathBuf,
    pub text: String,
    pub findings: Vec<Finding>,
}

impl Diagnostics {
    /// The rules broken, in finding order (with repeats).
    pub fn rules(&self) -> Vec<Rule> {
        self.findings.iter().map(|finding| finding.rule).collect()
    }

    /// Where a finding's primary span starts.
    pub fn location(&self, finding: &Finding) -> LineColumn {
        line_column(&self.text, finding.span.start)
    }

    /// One line per finding: `file:line:column: error[rule]: message`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&format!(
                "{}:{}: error[{}]: {}\n",
                self.path.display(),
                self.location(finding),
                finding.rule,
                finding.message
            ));
        }
        out
    }

    /// The rustc-like rendering of every finding (no colours).
    pub fn render(&self) -> String {
        render(self)
    }

    /// The same findings as JSON, for CI systems: `{ "file", "findings": [ { "rule",
    /// "message", "line", "column", "end_line", "end_column", "label", "related", "hint" } ] }`
    /// (lines and columns 1-based; `related` is `null` or `{ line, column, end_line,
    /// end_column, label }`).
    pub fn to_json(&self) -> serde_json::Value {
        let position = |span: Span| {
            let start = line_column(&self.text, span.start);
            let end = line_column(&self.text, span.end.max(span.start));
            (start, end)
        };
        let findings: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|finding| {
                let (start, end) = position(finding.span);
                let related = finding.related.as_ref().map(|related| {
                    let (start, end) = position(related.span);
                    serde_json::json!({
                        "line": start.line,
                        "column": start.column,
                        "end_line": end.line,
                        "end_column": end.column,
                        "label": related.label,
                    })
                });
                serde_json::json!({
                    "rule": finding.rule.id(),
                    "message": finding.message,
                    "line": start.line,
                    "column": start.column,
                    "end_line": end.line,
                    "end_column": end.column,
                    "label": finding.label,
                    "related": related,
                    "hint": finding.hint,
                })
            })
            .collect();
        serde_json::json!({
            "file": self.path.display().to_string(),
            "findings": findings,
        })
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

/// Renders every finding like rustc does: headline with the rule id, `file:line:column`,
/// the source lines with the primary and the related item labelled, and the hint.
pub fn render(diagnostics: &Diagnostics) -> String {
    let file = diagnostics.path.display().to_string();
    let config = Config::default()
        .with_color(false)
        .with_char_set(CharSet::Unicode)
        .with_index_type(IndexType::Byte);
    let mut out = String::new();
    for finding in &diagnostics.findings {
        if diagnostics.text.is_empty() {
            // Nothing to quote: a rustc-like headline and location only.
            let location = diagnostics.location(finding);
            out.push_str(&format!(
                "[{}] Error: {}\n  --> {file}:{location}\n",
                finding.rule, finding.message
            ));
            if let Some(hint) = &finding.hint {
                out.push_str(&format!("  = help: {hint}\n"));
            }
            out.push('\n');
            continue;
        }
        let primary = clamp(finding.span, &diagnostics.text);
        let mut report = Report::build(ReportKind::Error, (file.as_str(), primary.clone()))
            .with_config(config)
            .with_code(finding.rule.id())
            .with_message(&finding.message)
            .with_label(
                Label::new((file.as_str(), primary))
                    .with_message(finding.label.as_deref().unwrap_or("here"))
                    .with_order(0),
            );
        if let Some(related) = &finding.related {
            report = report.with_label(
                Label::new((file.as_str(), clamp(related.span, &diagnostics.text)))
                    .with_message(&related.label)
                    .with_order(1),
            );
        }
        if let Some(hint) = &finding.hint {
            report = report.with_help(hint);
        }
        let mut bytes = Vec::new();
        let written = report.finish().write(
            (file.as_str(), Source::from(diagnostics.text.as_str())),
            &mut bytes,
        );
        if written.is_ok() {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
        out.push('\n');
    }
    let count = diagnostics.findings.len();
    out.push_str(&format!(
        "error: {file}: {count} problem{} found\n",
        if count == 1 { "" } else { "s" }
    ));
    out
}

fn clamp(span: Span, text: &str) -> std::ops::Range<usize> {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    start..end
}
