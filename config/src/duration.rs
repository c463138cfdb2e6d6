//! Durations as the table writes them: a string with a decimal number and a unit
//! ("100 ms", "10 s", "500 us"), kept in microseconds.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::size::{split_quantity, QuantityNumberError};

/// A duration in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    pub const fn microseconds(self) -> u64 {
        self.0
    }
}

/// Why a duration string could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// No leading decimal number.
    MissingNumber,
    /// A unit other than us, ms, s or min.
    UnknownUnit(String),
    /// The duration does not fit in 64 bits of microseconds.
    Overflow,
}

impl fmt::Display for DurationError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingNumber => write!(formatter, "a duration must start with a decimal number"),
            Self::UnknownUnit(unit) if unit.is_empty() => {
                write!(formatter, "a duration needs a unit (us, ms, s or min)")
            }
            Self::UnknownUnit(unit) => {
                write!(
                    formatter,
                    "unknown duration unit `{unit}` (use us, ms, s or min)"
                )
            }
            Self::Overflow => write!(
                formatter,
                "the duration does not fit in 64 bits of microseconds"
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses "100 ms", "10s", "1 min", "250 us".
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let (number, unit) = split_quantity(text).map_err(|error| match error {
        QuantityNumberError::Missing => DurationError::MissingNumber,
        QuantityNumberError::TooLarge => DurationError::Overflow,
    })?;
    let factor = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "min" => 60_000_000,
        other => return Err(DurationError::UnknownUnit(other.to_owned())),
    };
    number
        .checked_mul(factor)
        .map(Duration)
        .ok_or(DurationError::Overflow)
}

impl fmt::Display for Duration {
    /// The largest unit that divides the duration exactly ("100 ms", "10 s").
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(60_000_000, "min"), (1_000_000, "s"), (1_000, "ms")];
        for (factor, unit) in UNITS {
            if self.0 != 0 && self.0.is_multiple_of(factor) {
                return write!(formatter, "{} {unit}", self.0 / factor);
            }
        }
        write!(formatter, "{} us", self.0)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("100 ms"), Ok(Duration(100_000)));
        assert_eq!(parse_duration("10s"), Ok(Duration(10_000_000)));
        assert_eq!(parse_duration("1 min"), Ok(Duration(60_000_000)));
        assert_eq!(parse_duration(" 2_500 us "), Ok(Duration(2_500)));
    }

    #[test]
    fn rejects_bad_durations() {
        assert_eq!(
            parse_duration("100"),
            Err(DurationError::UnknownUnit(String::new()))
        );
        assert_eq!(
            parse_duration("1 h"),
            Err(DurationError::UnknownUnit("h".into()))
        );
        assert_eq!(parse_duration("ms"), Err(DurationError::MissingNumber));
        assert_eq!(
            parse_duration("99999999999999999999 s"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("18446744073709551 min"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn displays_the_largest_exact_unit() {
        assert_eq!(Duration(100_000).to_string(), "100 ms");
        assert_eq!(Duration(120_000_000).to_string(), "2 min");
        assert_eq!(Duration(1_500).to_string(), "1500 us");
    }
}
