//! The bench report: figure name → value, unit and how it was measured; written as one JSON
//! object (`target/bench/report.json`) and printed as an aligned table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Serialize, Serializer};

use super::goals::{self, Goal};

/// One measured figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    /// Written as a JSON integer when it is a whole number, else as a JSON float.
    #[serde(serialize_with = "serialize_value")]
    pub value: f64,
    pub unit: String,
    /// How it was measured, in a sentence or two.
    pub method: String,
}

/// Whole numbers up to 2^53 are written as integers (`290`, not `290.0`).
pub fn serialize_value<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match whole(*value) {
        Some(whole) => serializer.serialize_i64(whole),
        None => serializer.serialize_f64(*value),
    }
}

/// `value` as an integer if it is one that an `f64` holds exactly.
fn whole(value: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
    (value.is_finite() && value.abs() <= EXACT && value.trunc() == value).then_some(value as i64)
}

/// A figure as the report holds it: the measurement and, when an issue sets one, its goal
/// and whether the value meets it.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Entry {
    #[serde(flatten)]
    figure: Figure,
    #[serde(skip_serializing_if = "Option::is_none")]
    goal: Option<Goal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    met: Option<bool>,
}

/// The figures of one `cargo xtask bench`, by name (sorted, so the JSON is stable).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    figures: BTreeMap<String, Entry>,
}

impl Report {
    /// Adds a figure. A name given twice or a value that is not a finite number is refused
    /// (JSON has no NaN, and a figure measured twice differently is a bug in the sources).
    pub fn insert(&mut self, name: String, figure: Figure) -> Result<(), String> {
        if !figure.value.is_finite() {
            return Err(format!(
                "figure {name}: the value {} is not a finite number",
                figure.value
            ));
        }
        if self.figures.contains_key(&name) {
            return Err(format!("figure {name} is produced by two sources"));
        }
        let goal = goals::goal_of(&name);
        let met = goal.map(|goal| goal.met_by(figure.value));
        self.figures.insert(name, Entry { figure, goal, met });
        Ok(())
    }

    /// The figures that miss their goal: `(name, value, goal)`.
    pub fn misses(&self) -> Vec<(&str, f64, Goal)> {
        self.figures
            .iter()
            .filter_map(|(name, entry)| match (entry.goal, entry.met) {
                (Some(goal), Some(false)) => Some((name.as_str(), entry.figure.value, goal)),
                _ => None,
            })
            .collect()
    }

    /// Whether the report holds a figure of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.figures.contains_key(name)
    }

    pub fn is_empty(&self) -> bool {
        self.figures.is_empty()
    }

    pub fn len(&self) -> usize {
        self.figures.len()
    }

    /// The report as pretty-printed JSON: one object, figure name → `{value, unit, method}`,
    /// ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.figures)
            .expect("a map of strings and finite numbers always serializes");
        text.push('\n');
        text
    }

    /// Writes [`Report::to_json`] to `path`, creating its directory.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
        }
        std::fs::write(path, self.to_json())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The report as a table: name, value (right-aligned), goal, whether it is met (`ok`,
    /// `MISS`, empty without a goal), unit, method; one figure a line.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .figures
            .iter()
            .map(|(name, entry)| {
                [
                    name.clone(),
                    format_value(entry.figure.value),
                    entry.goal.map(|goal| goal.to_string()).unwrap_or_default(),
                    match entry.met {
                        Some(true) => "ok".into(),
                        Some(false) => "MISS".into(),
                        None => String::new(),
                    },
                    entry.figure.unit.clone(),
                    entry.figure.method.clone(),
                ]
            })
            .collect();
        let header = ["figure", "value", "goal", "met", "unit", "method"].map(String::from);
        let width = |column: usize| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (name_width, value_width, goal_width, met_width, unit_width) =
            (width(0), width(1), width(2), width(3), width(4));
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            let line = format!(
                "{:<name_width$}  {:>value_width$}  {:<goal_width$}  {:<met_width$}  \
                 {:<unit_width$}  {}",
                row[0], row[1], row[2], row[3], row[4], row[5]
            );
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A value for the table: whole numbers as integers, others with 3 significant decimals.
pub fn format_value(value: f64) -> String {
    match whole(value) {
        Some(whole) => whole.to_string(),
        None if value.abs() >= 100.0 => format!("{value:.1}"),
        None => format!("{value:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(value: f64, unit: &str, method: &str) -> Figure {
        Figure {
            value,
            unit: unit.into(),
            method: method.into(),
        }
    }

    fn sample() -> Report {
        let mut report = Report::default();
        report
            .insert(
                "svm_exit_round_trip_instructions".into(),
                figure(290.0, "instructions", "guest RDTSC"),
            )
            .unwrap();
        report
            .insert("validate".into(), figure(12.5, "ms", "median"))
            .unwrap();
        report
    }

    #[test]
    fn writes_one_object_of_figures_with_whole_numbers_as_integers() {
        let json = sample().to_json();
        assert_eq!(
            json,
            r#"{
  "svm_exit_round_trip_instructions": {
    "value": 290,
    "unit": "instructions",
    "method": "guest RDTSC"
  },
  "validate": {
    "value": 12.5,
    "unit": "ms",
    "method": "median"
  }
}
"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["svm_exit_round_trip_instructions"]["value"], 290);
        assert!(parsed["validate"]["value"].is_f64());
    }

    #[test]
    fn writes_the_file_and_its_directory() {
        let directory = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let path = directory.join("bench").join("report.json");
        sample().write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), sample().to_json());
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn refuses_duplicates_and_non_numbers() {
        let mut report = sample();
        assert_eq!(
            report.insert("validate".into(), figure(1.0, "ms", "again")),
            Err("figure validate is produced by two sources".into())
        );
        assert!(report
            .insert("ratio".into(), figure(f64::NAN, "x", "0/0"))
            .unwrap_err()
            .contains("not a finite number"));
        assert_eq!(report.len(), 2);
        assert_eq!(Report::default().to_json(), "{}\n");
    }

    #[test]
    fn prints_an_aligned_table() {
        assert_eq!(
            sample().table(),
            "figure                             value  goal  met  unit          method\n\
             svm_exit_round_trip_instructions     290             instructions  guest RDTSC\n\
             validate                          12.500             ms            median\n"
        );
    }

    #[test]
    fn shows_each_goal_beside_the_value_and_flags_misses() {
        let mut report = sample();
        report
            .insert(
                "ipi_exit_instructions".into(),
                figure(433.0, "instructions", "ICR"),
            )
            .unwrap();
        report
            .insert(
                "doorbell_round_trip_instructions".into(),
                figure(200.0, "instructions", "ping"),
            )
            .unwrap();
        let table = report.table();
        assert!(
            table.contains("ipi_exit_instructions                433  <= 150  MISS  instructions"),
            "{table}"
        );
        assert!(
            table.contains("doorbell_round_trip_instructions     200  <= 200  ok    instructions"),
            "{table}"
        );
        let misses = report.misses();
        assert_eq!(misses.len(), 1);
        assert_eq!(misses[0].0, "ipi_exit_instructions");
        let parsed: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(parsed["ipi_exit_instructions"]["goal"]["at_most"], 150);
        assert_eq!(
            parsed["ipi_exit_instructions"]["goal"]["set_by"],
            "issue 14"
        );
        assert_eq!(parsed["ipi_exit_instructions"]["met"], false);
        assert_eq!(parsed["doorbell_round_trip_instructions"]["met"], true);
        assert!(parsed["validate"].get("goal").is_none());
    }

    #[test]
    fn formats_values() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(1234.0), "1234");
        assert_eq!(format_value(1.98765), "1.988");
        assert_eq!(format_value(123.456), "123.5");
        assert_eq!(whole(1e300), None);
        assert_eq!(whole(-3.0), Some(-3));
    }
}
