//! What a waiting caller is told: their place in the queue and the expected
//! wait ("You are caller number three. The expected wait is about 4
//! minutes."). Pure: the handler reads the numbers from the store, the
//! journey decides when to speak, and this module only does arithmetic and
//! words.
//!
//! # The estimate
//! The handle time of a call is how long the location's leg of a connected
//! call lasted (its `CallDuration`: from the answer to the hang-up, so it
//! includes the few seconds of answering-machine detection): that is how
//! long the call kept one of the location's lines busy. From the last
//! [`SAMPLE_CALLS`] connected calls of the location in the last
//! [`SAMPLE_WINDOW_MS`], the mean handle time `h`. With `lines` lines, of
//! which `in_use` are connected now, and `ahead` callers queued before this
//! one, the caller needs `ahead + 1` lines to come free when none is free
//! now; on average one comes free every `h / lines`. So the expected wait is
//! `(ahead + 1 - free) × h / lines` with `free = lines - in_use`, and nothing
//! when a line is free for them (they are being rung for). It is rounded up,
//! never down. It assumes every line takes calls at the same pace and that a
//! call under way still has a whole handle time to go (so it leans long), and
//! it ignores ringing time, callers who give up ahead of this one, a line
//! nobody answers, and the location's hours.

/// How many recent connected calls the estimate averages.
pub const SAMPLE_CALLS: i64 = 20;
/// How far back those calls may be.
pub const SAMPLE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Where a caller stands, as the store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Callers of the same location waiting since before this one.
    pub ahead: u32,
    /// The location's lines, and how many are connected to a caller now.
    pub lines: u32,
    pub in_use: u32,
}

impl Standing {
    /// The caller's place: 1 for the next caller.
    pub fn position(&self) -> u32 {
        self.ahead.saturating_add(1)
    }
}

/// The expected wait in seconds, from the handle times (seconds) of recent
/// connected calls; `None` without any.
pub fn expected_wait_secs(standing: Standing, handle_secs: &[u32]) -> Option<u32> {
    if handle_secs.is_empty() {
        return None;
    }
    let lines = u64::from(standing.lines.max(1));
    let free = lines.saturating_sub(u64::from(standing.in_use));
    let needed = u64::from(standing.ahead) + 1;
    let turns = needed.saturating_sub(free);
    let total: u64 = handle_secs.iter().map(|&s| u64::from(s)).sum();
    let n = handle_secs.len() as u64;
    // turns × mean / lines, rounded up.
    let wait = (turns * total).div_ceil(n * lines);
    Some(u32::try_from(wait).unwrap_or(u32::MAX))
}

/// The expected wait in words, rounded up so it never promises less than
/// the data says: "less than a minute" below 60 s, whole minutes up to ten,
/// then steps of five minutes, and "more than an hour" beyond.
pub fn spoken_wait(secs: u32) -> String {
    if secs < 60 {
        return "less than a minute".into();
    }
    let minutes = secs.div_ceil(60);
    let minutes = if minutes <= 10 { minutes } else { minutes.div_ceil(5) * 5 };
    match minutes {
        1 => "about 1 minute".into(),
        m if m <= 60 => format!("about {m} minutes"),
        _ => "more than an hour".into(),
    }
}

/// A number as it is said: words from one to ninety-nine, digits beyond
/// (text-to-speech reads those well).
pub fn number_words(n: u32) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
    match n {
        0..=19 => ONES[n as usize].into(),
        20..=99 => {
            let (t, o) = ((n / 10) as usize, (n % 10) as usize);
            if o == 0 { TENS[t].into() } else { format!("{}-{}", TENS[t], ONES[o]) }
        }
        _ => n.to_string(),
    }
}

/// The announcement: the position when known, the expected wait when there
/// is data for it; `None` when there is nothing to say.
pub fn announcement(position: Option<u32>, wait_secs: Option<u32>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(p) = position.filter(|&p| p > 0) {
        parts.push(format!("You are caller number {}.", number_words(p)));
    }
    if let Some(w) = wait_secs {
        parts.push(format!("The expected wait is {}.", spoken_wait(w)));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn standing(ahead: u32, lines: u32, in_use: u32) -> Standing {
        Standing { ahead, lines, in_use }
    }

    #[test]
    fn the_issues_example_reads_as_written() {
        assert_eq!(
            announcement(Some(3), Some(4 * 60)).as_deref(),
            Some("You are caller number three. The expected wait is about 4 minutes.")
        );
    }

    #[test]
    fn nothing_is_said_about_what_is_not_known() {
        assert_eq!(announcement(Some(2), None).as_deref(), Some("You are caller number two."));
        assert_eq!(announcement(None, Some(30)).as_deref(), Some("The expected wait is less than a minute."));
        assert_eq!(announcement(None, None), None);
        assert_eq!(announcement(Some(0), None), None);
    }

    #[test]
    fn numbers_are_spoken_as_words() {
        let said: Vec<String> = [1, 7, 13, 20, 21, 45, 99, 100, 1234].into_iter().map(number_words).collect();
        assert_eq!(
            said,
            ["one", "seven", "thirteen", "twenty", "twenty-one", "forty-five", "ninety-nine", "100", "1234"]
        );
    }

    #[test]
    fn the_wait_is_rounded_up() {
        let cases = [
            (0, "less than a minute"),
            (59, "less than a minute"),
            (60, "about 1 minute"),
            (61, "about 2 minutes"),
            (240, "about 4 minutes"),
            (600, "about 10 minutes"),
            (601, "about 15 minutes"),
            (3600, "about 60 minutes"),
            (3601, "more than an hour"),
        ];
        for (secs, words) in cases {
            assert_eq!(spoken_wait(secs), words, "{secs} s");
        }
    }

    #[test]
    fn no_handled_call_means_no_estimate() {
        assert_eq!(expected_wait_secs(standing(3, 1, 1), &[]), None);
    }

    #[test]
    fn one_line_busy_each_caller_ahead_costs_one_handle_time() {
        // Mean 120 s. Next in line: the call under way. Third: two more before.
        assert_eq!(expected_wait_secs(standing(0, 1, 1), &[100, 140]), Some(120));
        assert_eq!(expected_wait_secs(standing(2, 1, 1), &[100, 140]), Some(360));
    }

    #[test]
    fn a_free_line_means_no_wait_and_lines_share_the_queue() {
        assert_eq!(expected_wait_secs(standing(0, 2, 1), &[300]), Some(0));
        assert_eq!(expected_wait_secs(standing(1, 2, 1), &[300]), Some(150));
        assert_eq!(expected_wait_secs(standing(3, 2, 2), &[300]), Some(600));
        // More lines in use than configured (a change of config): no free line.
        assert_eq!(expected_wait_secs(standing(0, 1, 3), &[60]), Some(60));
    }

    proptest! {
        /// Never less than the data says: the words' lower bound is at most
        /// the estimate's upper bound, rounded up.
        #[test]
        fn the_words_never_promise_less_than_the_estimate(secs in 0u32..10_000) {
            let words = spoken_wait(secs);
            if let Some(m) = words.strip_prefix("about ").and_then(|w| w.split(' ').next()) {
                let m: u32 = m.parse().unwrap();
                prop_assert!(m * 60 >= secs, "{secs} s said as {words}");
                prop_assert!(m * 60 < secs + 5 * 60, "{secs} s said as {words}");
            } else if words == "less than a minute" {
                prop_assert!(secs < 60);
            } else {
                prop_assert_eq!(words, "more than an hour");
                prop_assert!(secs > 3600);
            }
        }

        /// A caller further back never hears a shorter wait.
        #[test]
        fn the_estimate_grows_with_the_position(ahead in 0u32..50, lines in 1u32..5, in_use in 0u32..6,
                                                 samples in proptest::collection::vec(1u32..3600, 1..20)) {
            let here = expected_wait_secs(standing(ahead, lines, in_use), &samples).unwrap();
            let behind = expected_wait_secs(standing(ahead + 1, lines, in_use), &samples).unwrap();
            prop_assert!(behind >= here);
        }
    }
}
