//! The demo's report: one row per call, totals per outcome, rendered as a
//! table or as one JSON document. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::domain::Outcome;

/// How one call ended, joined from the server's record and the sandbox's
/// summary. Times are virtual (sandbox) milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRow {
    /// 1-based, in the scenario's order.
    pub index: usize,
    pub caller: String,
    /// The number the caller dialled.
    pub dialled: String,
    /// `None` when the call could not even be placed.
    pub call_sid: Option<String>,
    /// The location the server routed the call to.
    pub location: Option<String>,
    pub outcome: Outcome,
    /// Whether the sandbox saw the caller's call end.
    pub finished: bool,
    pub answered_by: Option<String>,
    pub wait_ms: Option<u64>,
    pub talk_ms: Option<u64>,
    pub expected_outcome: Option<Outcome>,
    /// The location the call must end at, when the scenario says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_location: Option<String>,
    /// Sentences the caller was to hear.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_heard: Vec<String>,
    pub ok: bool,
    /// Why the call is not ok, or what went wrong placing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// What the sandbox saw happen to the caller's leg, from its creation.
    pub timeline: Vec<Moment>,
    /// What the caller was told (each `<Say>`), in order.
    pub heard: Vec<String>,
}

/// One entry of a call's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moment {
    /// Virtual milliseconds since the call was created.
    pub at_ms: u64,
    pub event: String,
}

impl CallRow {
    /// Fills in `ok` and `problem` from the other fields; an earlier problem
    /// (say, the call could not be placed) is kept.
    pub fn judge(mut self) -> Self {
        let problem = if !self.finished {
            Some("the call had not ended by the deadline".to_owned())
        } else if !self.outcome.is_final() {
            Some("the call ended but the server recorded no outcome".to_owned())
        } else {
            match (self.expected_outcome, &self.expected_location) {
                (Some(want), _) if want != self.outcome => Some(format!("expected {want}, got {}", self.outcome)),
                (_, Some(want)) if self.location.as_ref() != Some(want) => Some(format!(
                    "expected to end at {want}, ended at {}",
                    self.location.as_deref().unwrap_or("no location")
                )),
                _ => self
                    .expected_heard
                    .iter()
                    .find(|t| !self.heard.contains(t))
                    .map(|t| format!("expected to hear {t:?}, did not")),
            }
        };
        self.ok = problem.is_none() && self.problem.is_none();
        self.problem = self.problem.or(problem);
        self
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub time_scale: f64,
    /// Wall-clock milliseconds from the first call to the last end.
    pub elapsed_ms: u64,
    pub calls: Vec<CallRow>,
    /// The sandbox's fault rules and how often each fired (empty without faults).
    pub faults: Vec<FaultCount>,
    /// When the scenario's closing location closed (`closes_in_secs`), if it has one.
    pub closed: Option<Closed>,
}

/// A location that closed during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Closed {
    pub location: String,
    /// The business clock's time it closed at, in the location's time zone (RFC 3339).
    pub at: String,
    /// Virtual milliseconds after the first dial.
    pub after_ms: u64,
}

/// One fault rule of the scenario and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultCount {
    /// What the rule does, as `rest POST /…/Calls.json: reset, 10%`.
    pub rule: String,
    /// Requests it matched.
    pub matched: u64,
    /// Requests it hit.
    pub fired: u64,
}

/// The JSON document `--json` prints.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    scenario: &'a str,
    time_scale: f64,
    elapsed_ms: u64,
    ok: bool,
    calls: &'a [CallRow],
    totals: BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    faults: &'a [FaultCount],
    #[serde(skip_serializing_if = "Option::is_none")]
    closed: Option<&'a Closed>,
    problems: Vec<String>,
}

impl Report {
    /// Calls per outcome, in `Outcome`'s order, only those that occurred.
    pub fn totals(&self) -> BTreeMap<Outcome, usize> {
        let mut t = BTreeMap::new();
        for c in &self.calls {
            *t.entry(c.outcome).or_insert(0) += 1;
        }
        t
    }

    pub fn ok(&self) -> bool {
        self.calls.iter().all(|c| c.ok)
    }

    /// One line per call that is not ok: `#3 (+13105550102): expected …`.
    pub fn problems(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("call #{} from {}: {}", c.index, c.caller, c.problem.as_deref().unwrap_or("not ok")))
            .collect()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let totals = self.totals().into_iter().map(|(o, n)| (o.as_str(), n)).collect();
        serde_json::to_value(JsonReport {
            scenario: &self.scenario,
            time_scale: self.time_scale,
            elapsed_ms: self.elapsed_ms,
            ok: self.ok(),
            calls: &self.calls,
            totals,
            faults: &self.faults,
            closed: self.closed.as_ref(),
            problems: self.problems(),
        })
        .expect("the report serializes")
    }

    /// The table, totals and verdict, for a terminal.
    pub fn render(&self) -> String {
        let any_expected = self.calls.iter().any(|c| c.expected_outcome.is_some());
        let mut header = vec!["#", "caller", "dialled", "location", "outcome", "answered_by", "wait", "talk"];
        if any_expected {
            header.push("expected");
        }
        let rows: Vec<Vec<String>> = self
            .calls
            .iter()
            .map(|c| {
                let mut row = vec![
                    c.index.to_string(),
                    c.caller.clone(),
                    c.dialled.clone(),
                    c.location.clone().unwrap_or_else(|| "-".into()),
                    if c.finished { c.outcome.to_string() } else { format!("{} (unfinished)", c.outcome) },
                    c.answered_by.clone().unwrap_or_else(|| "-".into()),
                    secs(c.wait_ms),
                    secs(c.talk_ms),
                ];
                if any_expected {
                    row.push(match (c.expected_outcome, c.ok) {
                        (Some(e), true) => format!("✓ {e}"),
                        (Some(e), false) => format!("✗ {e}"),
                        (None, true) => "✓".into(),
                        (None, false) => "✗".into(),
                    });
                }
                row
            })
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[&str]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(cell);
                if i + 1 < cells.len() {
                    s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
                }
            }
            s.push('\n');
            s
        };

        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} ({}, time scale {}x)",
            self.scenario,
            plural(self.calls.len(), "call"),
            self.time_scale
        );
        if let Some(c) = &self.closed {
            let _ = writeln!(
                out,
                "{} closed at {} (the demo's business clock), {} after the first call",
                c.location,
                c.at,
                secs(Some(c.after_ms))
            );
        }
        out.push('\n');
        out.push_str(&line(&header));
        for row in &rows {
            out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
        }
        out.push('\n');
        out.push_str("totals:\n");
        let totals = self.totals();
        let ow = totals.keys().map(|o| o.as_str().len()).max().unwrap_or(0);
        for (o, n) in &totals {
            let _ = writeln!(out, "  {:<ow$}  {n}", o.as_str());
        }
        out.push('\n');
        if !self.faults.is_empty() {
            out.push_str("faults injected (fired of matched):\n");
            let rw = self.faults.iter().map(|f| f.rule.chars().count()).max().unwrap_or(0);
            for f in &self.faults {
                let _ = writeln!(out, "  {:<rw$}  {} of {}", f.rule, f.fired, f.matched);
            }
            out.push('\n');
        }
        let problems = self.problems();
        let n = self.calls.len();
        let checked = self.calls.iter().filter(|c| c.expected_outcome.is_some()).count();
        match (problems.is_empty(), checked) {
            (true, 0) => {
                let _ =
                    writeln!(out, "{} ended", if n == 1 { "the call".to_owned() } else { format!("all {n} calls") });
            }
            (true, _) => {
                let all = if n == 1 { "the call".to_owned() } else { format!("all {n} calls") };
                let _ = writeln!(out, "{all} ended as expected");
            }
            (false, _) => {
                let _ = writeln!(out, "{} of {} not ok:", problems.len(), plural(n, "call"));
                for p in problems {
                    let _ = writeln!(out, "  {p}");
                }
                // What the caller went through explains most surprises.
                for c in self.calls.iter().filter(|c| !c.ok && !c.timeline.is_empty()).take(10) {
                    let steps: Vec<String> =
                        c.timeline.iter().map(|m| format!("{} {}", secs(Some(m.at_ms)), m.event)).collect();
                    let _ = writeln!(out, "  #{}: {}", c.index, steps.join(", "));
                }
            }
        }
        out
    }
}

/// `1 call`, `2 calls`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// Virtual milliseconds as seconds with one decimal: `12.0s`; `-` if unknown.
pub fn secs(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            let tenths = (ms + 50) / 100;
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: usize, outcome: Outcome, expect: Option<Outcome>) -> CallRow {
        unjudged(index, outcome, expect).judge()
    }

    fn unjudged(index: usize, outcome: Outcome, expect: Option<Outcome>) -> CallRow {
        CallRow {
            index,
            caller: format!("+1310555010{index}"),
            dialled: "+12025550143".into(),
            call_sid: Some(format!("CA{index:032}")),
            location: Some("north".into()),
            outcome,
            finished: true,
            answered_by: Some("human".into()),
            wait_ms: Some(4_000),
            talk_ms: Some(30_000),
            expected_outcome: expect,
            expected_location: None,
            expected_heard: Vec::new(),
            ok: false,
            problem: None,
            timeline: Vec::new(),
            heard: Vec::new(),
        }
    }

    fn report(calls: Vec<CallRow>) -> Report {
        Report { scenario: "mix".into(), time_scale: 500.0, elapsed_ms: 1234, calls, faults: Vec::new(), closed: None }
    }

    #[test]
    fn seconds_have_one_decimal() {
        let cases = [
            (None, "-"),
            (Some(0), "0.0s"),
            (Some(12_000), "12.0s"),
            (Some(1_249), "1.2s"),
            (Some(1_250), "1.3s"),
            (Some(9_960), "10.0s"),
        ];
        for (ms, want) in cases {
            assert_eq!(secs(ms), want, "{ms:?}");
        }
    }

    #[test]
    fn a_call_must_hear_what_it_expects_to_hear() {
        let mut c = unjudged(1, Outcome::Connected, Some(Outcome::Connected));
        c.heard = vec!["Gracias por llamar a Acme.".into(), "Por favor, espere.".into()];
        c.expected_heard = vec!["Por favor, espere.".into()];
        assert!(c.clone().judge().ok);
        c.expected_heard.push("Please hold.".into());
        let judged = c.judge();
        assert!(!judged.ok);
        assert_eq!(judged.problem.as_deref(), Some("expected to hear \"Please hold.\", did not"));
    }

    #[test]
    fn judging_a_call() {
        let cases = [
            (Outcome::Connected, None, true, true, None),
            (Outcome::Connected, Some(Outcome::Connected), true, true, None),
            (
                Outcome::LocationBusy,
                Some(Outcome::Connected),
                true,
                false,
                Some("expected connected, got location_busy"),
            ),
            (Outcome::Pending, None, true, false, Some("no outcome")),
            (Outcome::Pending, Some(Outcome::Connected), false, false, Some("had not ended")),
            (Outcome::Connected, Some(Outcome::Connected), false, false, Some("had not ended")),
        ];
        for (outcome, expect, finished, ok, problem) in cases {
            let mut r = unjudged(1, outcome, expect);
            r.finished = finished;
            let r = r.judge();
            assert_eq!(r.ok, ok, "{outcome} {expect:?} {finished}");
            match problem {
                Some(p) => assert!(r.problem.as_deref().unwrap_or("").contains(p), "{:?}", r.problem),
                None => assert_eq!(r.problem, None),
            }
        }
        let mut placed_badly = unjudged(1, Outcome::Pending, None);
        placed_badly.finished = false;
        placed_badly.problem = Some("placing the call: refused".into());
        let r = placed_badly.judge();
        assert!(!r.ok);
        assert_eq!(r.problem.as_deref(), Some("placing the call: refused"));

        // An overflow scenario also says where the call must end.
        let mut elsewhere = unjudged(1, Outcome::Connected, Some(Outcome::Connected));
        elsewhere.expected_location = Some("south".into());
        let r = elsewhere.clone().judge();
        assert_eq!(r.problem.as_deref(), Some("expected to end at south, ended at north"));
        elsewhere.location = Some("south".into());
        assert!(elsewhere.judge().ok);
    }

    #[test]
    fn totals_count_each_outcome() {
        let r = report(vec![
            row(1, Outcome::Connected, None),
            row(2, Outcome::LocationBusy, None),
            row(3, Outcome::Connected, None),
        ]);
        let t = r.totals();
        assert_eq!(t[&Outcome::Connected], 2);
        assert_eq!(t[&Outcome::LocationBusy], 1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_table_lines_up_and_marks_expectations() {
        let r = report(vec![
            row(1, Outcome::Connected, Some(Outcome::Connected)),
            row(2, Outcome::LocationVoicemail, Some(Outcome::LocationBusy)),
        ]);
        let text = r.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "scenario mix (2 calls, time scale 500x)");
        assert!(
            text.ends_with("  call #2 from +13105550102: expected location_busy, got location_voicemail\n"),
            "{text}"
        );
        let header = lines[2];
        assert!(
            header.starts_with(
                "#  caller        dialled       location  outcome             answered_by  wait  talk   expected"
            ),
            "{header}"
        );
        assert_eq!(
            lines[3],
            "1  +13105550101  +12025550143  north     connected           human        4.0s  30.0s  ✓ connected"
        );
        assert_eq!(
            lines[4],
            "2  +13105550102  +12025550143  north     location_voicemail  human        4.0s  30.0s  ✗ location_busy"
        );
        assert!(text.contains("totals:\n  connected           1\n  location_voicemail  1\n"), "{text}");
        assert!(
            text.contains(
                "1 of 2 calls not ok:\n  call #2 from +13105550102: expected location_busy, got location_voicemail"
            ),
            "{text}"
        );
        assert!(!r.ok());
        let mut r = r;
        r.calls[1].timeline =
            vec![Moment { at_ms: 0, event: "created".into() }, Moment { at_ms: 12_300, event: "pressed 2".into() }];
        assert!(r.render().ends_with("  #2: 0.0s created, 12.3s pressed 2\n"), "{}", r.render());
    }

    #[test]
    fn without_expectations_there_is_no_expected_column() {
        let mut unfinished = unjudged(2, Outcome::Pending, None);
        unfinished.finished = false;
        unfinished.location = None;
        unfinished.answered_by = None;
        unfinished.wait_ms = None;
        unfinished.talk_ms = None;
        let r = report(vec![row(1, Outcome::Connected, None), unfinished.judge()]);
        let text = r.render();
        assert!(!text.contains("expected"), "{text}");
        assert!(
            text.contains("2  +13105550102  +12025550143  -         pending (unfinished)  -            -     -\n"),
            "{text}"
        );
        let ok = report(vec![row(1, Outcome::Connected, Some(Outcome::Connected))]);
        assert!(ok.render().ends_with("the call ended as expected\n"), "{}", ok.render());
        assert!(ok.render().starts_with("scenario mix (1 call, time scale 500x)\n"), "{}", ok.render());
    }

    #[test]
    fn json_has_the_documented_shape() {
        let r = report(vec![row(1, Outcome::Connected, Some(Outcome::Connected)), row(2, Outcome::LocationBusy, None)]);
        let j = r.to_json();
        assert_eq!(j["ok"], true);
        assert_eq!(j["scenario"], "mix");
        let c = &j["calls"][0];
        for key in
            ["call_sid", "caller", "location", "outcome", "answered_by", "wait_ms", "talk_ms", "expected_outcome", "ok"]
        {
            assert!(c.get(key).is_some(), "calls[0].{key} missing in {c}");
        }
        assert_eq!(c["outcome"], "connected");
        assert_eq!(c["wait_ms"], 4000);
        assert_eq!(j["calls"][1]["expected_outcome"], serde_json::Value::Null);
        assert_eq!(j["totals"], serde_json::json!({"connected": 1, "location_busy": 1}));
        assert_eq!(j["problems"], serde_json::json!([]));
    }
}
