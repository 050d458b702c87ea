//! Typed Twilio resource identifiers.
//!
//! A SID is a two-letter prefix that names the resource type followed by 32
//! lowercase hex digits (`CA0123…`). Each resource gets its own newtype so that
//! a `CallSid` can never be passed where a `ReservationSid` is expected, and a
//! malformed value is refused where it enters the program.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a SID of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SidError {
    #[error("expected a {expected} SID ({prefix} followed by 32 hex digits), got {got:?}")]
    Malformed { expected: &'static str, prefix: &'static str, got: String },
}

/// Checks `s` against a prefix without allocating. Twilio's SIDs use lowercase
/// hex, but uppercase is accepted on input because some tools upper-case them.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The two-letter prefix of this resource type.
            pub const PREFIX: &'static str = $prefix;

            /// Parses and checks a SID of this type.
            pub fn parse(s: &str) -> Result<Self, SidError> {
                if is_sid(s, $prefix) {
                    Ok(Self(s.to_ascii_lowercase().replacen(&$prefix.to_ascii_lowercase(), $prefix, 1)))
                } else {
                    Err(SidError::Malformed { expected: $what, prefix: $prefix, got: s.chars().take(64).collect() })
                }
            }

            /// Makes a new random SID of this type.
            pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
                let bytes: [u8; 16] = rng.random();
                let mut s = String::with_capacity(34);
                s.push_str($prefix);
                for b in bytes {
                    s.push_str(&format!("{b:02x}"));
                }
                Self(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = SidError;
            fn from_str(s: &str) -> Result<Self, SidError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

sid_type!(/// An account (`AC…`).
    AccountSid, "AC", "account");
sid_type!(/// A call leg (`CA…`).
    CallSid, "CA", "call");
sid_type!(/// An incoming phone number (`PN…`).
    PhoneNumberSid, "PN", "phone number");
sid_type!(/// A recording (`RE…`).
    RecordingSid, "RE", "recording");
sid_type!(/// A queue of the core API (`QU…`).
    QueueSid, "QU", "queue");
sid_type!(/// A TaskRouter workspace (`WS…`).
    WorkspaceSid, "WS", "workspace");
sid_type!(/// A TaskRouter workflow (`WW…`).
    WorkflowSid, "WW", "workflow");
sid_type!(/// A TaskRouter task queue (`WQ…`).
    TaskQueueSid, "WQ", "task queue");
sid_type!(/// A TaskRouter worker (`WK…`).
    WorkerSid, "WK", "worker");
sid_type!(/// A TaskRouter activity (`WA…`).
    ActivitySid, "WA", "activity");
sid_type!(/// A TaskRouter task (`WT…`).
    TaskSid, "WT", "task");
sid_type!(/// A TaskRouter reservation (`WR…`).
    ReservationSid, "WR", "reservation");
sid_type!(/// A TaskRouter event (`EV…`).
    EventSid, "EV", "event");
sid_type!(/// A TaskRouter task channel (`TC…`).
    TaskChannelSid, "TC", "task channel");
sid_type!(/// A TaskRouter worker channel (`WC…`).
    WorkerChannelSid, "WC", "worker channel");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_wrong_prefix_or_length() {
        let ok = "CA0123456789abcdef0123456789abcdef";
        assert_eq!(CallSid::parse(ok).unwrap().as_str(), ok);
        assert!(ReservationSid::parse(ok).is_err());
        assert!(CallSid::parse("CA0123").is_err());
        assert!(CallSid::parse("CA0123456789abcdef0123456789abcdeg").is_err());
        assert!(CallSid::parse("").is_err());
        // Multi-byte input of the right byte length must not panic on slicing.
        assert!(CallSid::parse("CAéééééééééééééééé").is_err());
    }

    #[test]
    fn uppercase_hex_is_normalised() {
        let sid = CallSid::parse("CA0123456789ABCDEF0123456789ABCDEF").unwrap();
        assert_eq!(sid.as_str(), "CA0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn generated_sids_parse_back() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let sid = TaskSid::generate(&mut rng);
            assert_eq!(TaskSid::parse(sid.as_str()).unwrap(), sid);
        }
    }

    #[test]
    fn error_names_the_kind() {
        let err = WorkerSid::parse("nope").unwrap_err();
        assert!(err.to_string().contains("worker SID"), "{err}");
    }
}
