//! Simulated phones: what happens when the sandbox rings a number.
//!
//! One ring is 6 virtual seconds. A number with no behaviour set answers as
//! a person after one ring and talks for 30 seconds once bridged.

use crate::state::Behaviour;

/// Virtual milliseconds per ring.
pub(crate) const RING_MS: u64 = 6_000;
/// How long AMD listens before deciding, in virtual milliseconds.
pub(crate) const AMD_HUMAN_MS: u64 = 2_500;
pub(crate) const AMD_MACHINE_MS: u64 = 4_000;
/// A voicemail greeting up to the beep, for `DetectMessageEnd`, unless the
/// phone says how long its own is.
pub(crate) const GREETING_MS: u64 = 10_000;

/// How a ringing call ends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ring {
    /// Answered after `after_ms`; `machine` for voicemail.
    Answer {
        after_ms: u64,
        machine: bool,
        talk_secs: Option<u64>,
        digits: Option<String>,
        /// A machine's greeting up to the beep.
        greeting_ms: u64,
    },
    Busy {
        after_ms: u64,
    },
    NoAnswer,
    Fail {
        after_ms: u64,
    },
}

/// What a phone does when rung for at most `timeout_secs`.
pub(crate) fn ring(b: &Behaviour, timeout_secs: u64) -> Ring {
    let limit = timeout_secs.saturating_mul(1000);
    match b {
        Behaviour::Person { rings, talk_secs, digits } => {
            let after_ms = u64::from(*rings) * RING_MS;
            if after_ms > limit {
                Ring::NoAnswer
            } else {
                Ring::Answer {
                    after_ms,
                    machine: false,
                    talk_secs: Some(*talk_secs),
                    digits: digits.clone(),
                    greeting_ms: 0,
                }
            }
        }
        Behaviour::Voicemail { rings, digits, greeting_secs } => {
            let after_ms = u64::from(*rings) * RING_MS;
            if after_ms > limit {
                Ring::NoAnswer
            } else {
                let greeting_ms = greeting_secs.map_or(GREETING_MS, |s| s.saturating_mul(1000));
                Ring::Answer { after_ms, machine: true, talk_secs: None, digits: digits.clone(), greeting_ms }
            }
        }
        Behaviour::Busy => Ring::Busy { after_ms: 2_000 },
        Behaviour::NoAnswer => Ring::NoAnswer,
        Behaviour::Fail => Ring::Fail { after_ms: 1_000 },
    }
}

/// Splits a phone's digits into one entry per `Gather`: `"1,2"` presses 1 at
/// the first Gather and 2 at the second.
pub(crate) fn gather_inputs(digits: Option<&str>) -> std::collections::VecDeque<String> {
    digits.map(|d| d.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_and_timeouts() {
        let p = Behaviour::Person { rings: 2, talk_secs: 30, digits: None };
        assert!(matches!(ring(&p, 60), Ring::Answer { after_ms: 12_000, machine: false, .. }));
        assert_eq!(ring(&p, 10), Ring::NoAnswer);
        assert!(matches!(
            ring(&Behaviour::Voicemail { rings: 3, digits: None, greeting_secs: None }, 60),
            Ring::Answer { machine: true, greeting_ms: GREETING_MS, .. }
        ));
        assert!(matches!(
            ring(&Behaviour::Voicemail { rings: 1, digits: None, greeting_secs: Some(3) }, 60),
            Ring::Answer { machine: true, greeting_ms: 3_000, .. }
        ));
        assert_eq!(ring(&Behaviour::NoAnswer, 60), Ring::NoAnswer);
        assert_eq!(gather_inputs(Some("1, 2")), ["1", "2"]);
    }
}
