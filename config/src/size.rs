//! Byte sizes as the table writes them: an integer number of bytes, or a string with a
//! binary unit ("4 KiB", "16 MiB", "2 GiB").

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A size in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// Why a size string could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// No leading decimal number.
    MissingNumber,
    /// The number does not fit in 64 bits.
    NumberTooLarge,
    /// A unit other than B, KiB, MiB, GiB or TiB.
    UnknownUnit(String),
    /// The number times the unit does not fit in 64 bits.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingNumber => write!(formatter, "a size must start with a decimal number"),
            Self::NumberTooLarge => write!(formatter, "the number does not fit in 64 bits"),
            Self::UnknownUnit(unit) => write!(
                formatter,
                "unknown size unit `{unit}` (use B, KiB, MiB, GiB or TiB; units are binary)"
            ),
            Self::Overflow => write!(formatter, "the size does not fit in 64 bits"),
        }
    }
}

impl std::error::Error for SizeError {}

/// Why the number of a quantity (a size or a duration) cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuantityNumberError {
    /// The text does not start with a decimal digit.
    Missing,
    /// The number does not fit in 64 bits.
    TooLarge,
}

/// Splits a quantity as tables write it ("16 MiB", "100ms", "1_000 us") into its decimal
/// number (underscores allowed between digits) and the unit text after it, trimmed.
pub(crate) fn split_quantity(text: &str) -> Result<(u64, &str), QuantityNumberError> {
    let text = text.trim();
    let digits_end = text
        .find(|character: char| !character.is_ascii_digit() && character != '_')
        .unwrap_or(text.len());
    // The digits without their underscores, read in place (a table has one of these per
    // memory region: no allocation per value).
    let mut digits = text[..digits_end]
        .bytes()
        .filter(|byte| *byte != b'_')
        .peekable();
    if digits.peek().is_none() {
        return Err(QuantityNumberError::Missing);
    }
    let number = digits.try_fold(0u64, |number, digit| {
        number
            .checked_mul(10)
            .and_then(|number| number.checked_add(u64::from(digit - b'0')))
            .ok_or(QuantityNumberError::TooLarge)
    })?;
    Ok((number, text[digits_end..].trim()))
}

/// Parses "16 MiB", "16MiB", "4096", "4096 B".
pub fn parse_size(text: &str) -> Result<Size, SizeError> {
    let (number, unit) = split_quantity(text).map_err(|error| match error {
        QuantityNumberError::Missing => SizeError::MissingNumber,
        QuantityNumberError::TooLarge => SizeError::NumberTooLarge,
    })?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => return Err(SizeError::UnknownUnit(other.to_owned())),
    };
    number
        .checked_mul(1 << shift)
        .map(Size)
        .ok_or(SizeError::Overflow)
}

impl fmt::Display for Size {
    /// The largest binary unit that divides the size exactly ("16 MiB", "4095 B").
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        for (shift, unit) in UNITS {
            let unit_bytes = 1u64 << shift;
            if self.0 != 0 && self.0.is_multiple_of(unit_bytes) {
                return write!(formatter, "{} {unit}", self.0 / unit_bytes);
            }
        }
        write!(formatter, "{} B", self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    formatter,
                    "a size: bytes as an integer or a string like \"16 MiB\""
                )
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Size, E> {
                Ok(Size(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Size, E> {
                u64::try_from(value)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Size, E> {
                parse_size(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_size("4 KiB"), Ok(Size(4096)));
        assert_eq!(parse_size("16 MiB"), Ok(Size(16 << 20)));
        assert_eq!(parse_size("2 GiB"), Ok(Size(2 << 30)));
        assert_eq!(parse_size("1 TiB"), Ok(Size(1 << 40)));
        assert_eq!(parse_size("512 B"), Ok(Size(512)));
        assert_eq!(parse_size("512"), Ok(Size(512)));
        assert_eq!(parse_size("2047MiB"), Ok(Size(2047 << 20)));
        assert_eq!(parse_size(" 1_024 KiB "), Ok(Size(1 << 20)));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(parse_size("4 KB"), Err(SizeError::UnknownUnit("KB".into())));
        assert_eq!(
            parse_size("4 kib"),
            Err(SizeError::UnknownUnit("kib".into()))
        );
        assert_eq!(parse_size("MiB"), Err(SizeError::MissingNumber));
        assert_eq!(parse_size("-4 MiB"), Err(SizeError::MissingNumber));
        assert_eq!(
            parse_size("99999999999999999999"),
            Err(SizeError::NumberTooLarge)
        );
        assert_eq!(parse_size("17000000 TiB"), Err(SizeError::Overflow));
        assert_eq!(parse_size("___ MiB"), Err(SizeError::MissingNumber));
        assert_eq!(
            parse_size("18_446_744_073_709_551_616"),
            Err(SizeError::NumberTooLarge)
        );
        assert_eq!(parse_size("18_446_744_073_709_551_615"), Ok(Size(u64::MAX)));
    }

    #[test]
    fn displays_largest_exact_unit() {
        assert_eq!(Size(16 << 20).to_string(), "16 MiB");
        assert_eq!(Size(4095).to_string(), "4095 B");
        assert_eq!(Size(0).to_string(), "0 B");
        assert_eq!(Size(3 << 10).to_string(), "3 KiB");
    }
}
