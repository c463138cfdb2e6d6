//! The guest command line: space-separated words, `flag` or `key=value`.

/// A borrowed command line with lookups for flags and `key=value` words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLine<'a> {
    text: &'a str,
}

impl<'a> CommandLine<'a> {
    pub fn new(text: &'a str) -> CommandLine<'a> {
        CommandLine { text }
    }

    /// The whole command line.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The words, split at ASCII whitespace.
    pub fn words(&self) -> impl Iterator<Item = &'a str> {
        self.text.split_ascii_whitespace()
    }

    /// Whether the word `flag` appears on its own.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.words().any(|word| word == flag)
    }

    /// The value of the first `key=value` word, if any.
    pub fn value(&self, key: &str) -> Option<&'a str> {
        self.words().find_map(|word| {
            let (word_key, value) = word.split_once('=')?;
            (word_key == key).then_some(value)
        })
    }

    /// The value of `key=…` as a number (`0x` hexadecimal or decimal).
    pub fn number(&self, key: &str) -> Option<u64> {
        parse_number(self.value(key)?)
    }

    /// The UART I/O port named by `console=0x…`, if any.
    pub fn console_port(&self) -> Option<u16> {
        u16::try_from(self.number("console")?).ok()
    }
}

/// Parses `0x…` (hexadecimal, `_` separators allowed) or plain decimal.
pub fn parse_number(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hexadecimal) => (hexadecimal, 16),
        None => (text, 10),
    };
    let mut value: u64 = 0;
    let mut any_digit = false;
    for character in digits.chars() {
        if character == '_' {
            continue;
        }
        let digit = character.to_digit(radix)?;
        value = value.checked_mul(radix as u64)?.checked_add(digit as u64)?;
        any_digit = true;
    }
    any_digit.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_values() {
        let line = CommandLine::new("console=0x3f8  wait-for-others power-off name=control");
        assert!(line.has_flag("wait-for-others"));
        assert!(line.has_flag("power-off"));
        assert!(!line.has_flag("power"));
        assert_eq!(line.value("name"), Some("control"));
        assert_eq!(line.console_port(), Some(0x3f8));
        assert_eq!(line.value("probe-outside"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x2000000"), Some(0x200_0000));
        assert_eq!(parse_number("0X2E8"), Some(0x2e8));
        assert_eq!(parse_number("1_024"), Some(1024));
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("12z"), None);
        assert_eq!(parse_number("0x1_0000_0000_0000_0000"), None);
        assert_eq!(CommandLine::new("console=0x10000").console_port(), None);
    }
}
