//! A phone number in E.164 form: `+`, a country code, at most 15 digits.
//!
//! This checks the shape only. Whether the number is assigned in its
//! country's numbering plan is a question for the caller (the server checks
//! it with the `phonenumber` crate where locations are entered).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an E.164 phone number (expected + then 8 to 15 digits, like +14155550100)")]
pub struct E164Error(pub String);

/// A phone number in E.164 form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// Parses `+` followed by 8 to 15 digits, the first not zero. Spaces,
    /// dashes, dots and parentheses are removed first, so `+1 (415) 555-0100`
    /// is accepted and stored as `+14155550100`.
    pub fn parse(s: &str) -> Result<Self, E164Error> {
        let trimmed = s.trim();
        let mut out = String::with_capacity(16);
        for (i, c) in trimmed.chars().enumerate() {
            match c {
                '+' if i == 0 => out.push('+'),
                '0'..='9' => out.push(c),
                ' ' | '-' | '.' | '(' | ')' if i > 0 => {}
                _ => return Err(E164Error(s.chars().take(40).collect())),
            }
        }
        let digits = out.len().saturating_sub(1);
        if !out.starts_with('+') || !(8..=15).contains(&digits) || out.as_bytes()[1] == b'0' {
            return Err(E164Error(s.chars().take(40).collect()));
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for E164 {
    type Err = E164Error;
    fn from_str(s: &str) -> Result<Self, E164Error> {
        Self::parse(s)
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for E164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(E164::parse("+14155550100").unwrap().as_str(), "+14155550100");
        assert_eq!(E164::parse(" +1 (415) 555-0100 ").unwrap().as_str(), "+14155550100");
        assert_eq!(E164::parse("+442071838750").unwrap().as_str(), "+442071838750");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "+",
            "14155550100",
            "+0123456789",
            "+1415",
            "+1234567890123456",
            "+1415abc0100",
            "++14155550100",
            " 4155550100",
        ] {
            assert!(E164::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
