use jiff::civil::{Weekday, date};
use proptest::prelude::*;

use super::*;

/// A calendar around `events`, with CRLF line ends as RFC 5545 writes them.
fn cal(events: &str) -> String {
    let body: Vec<&str> = events.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{}\r\nEND:VCALENDAR\r\n", body.join("\r\n"))
}

fn only_event(text: &str) -> Event {
    let c = parse(text).unwrap();
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    assert_eq!(c.events.len(), 1, "{:?}", c.events);
    c.events.into_iter().next().unwrap()
}

fn only_skipped(text: &str) -> Skipped {
    let c = parse(text).unwrap();
    assert!(c.events.is_empty(), "{:?}", c.events);
    assert_eq!(c.skipped.len(), 1);
    c.skipped.into_iter().next().unwrap()
}

#[test]
fn all_day_events_are_date_spans() {
    let e = only_event(&cal("
        BEGIN:VEVENT
        UID:1
        DTSTART;VALUE=DATE:20261225
        DTEND;VALUE=DATE:20261226
        SUMMARY:Christmas Day
        END:VEVENT"));
    assert_eq!(e.line, 4);
    assert_eq!(e.summary.as_deref(), Some("Christmas Day"));
    assert_eq!(e.when, When::Days { first: date(2026, 12, 25), last: date(2026, 12, 25) });

    // Several days; DTEND is exclusive. No DTEND is one day; DURATION counts days.
    let e = only_event(&cal("BEGIN:VEVENT\nDTSTART;VALUE=DATE:20261228\nDTEND;VALUE=DATE:20270102\nEND:VEVENT"));
    assert_eq!(e.when, When::Days { first: date(2026, 12, 28), last: date(2027, 1, 1) });
    let e = only_event(&cal("BEGIN:VEVENT\nDTSTART:20260704\nEND:VEVENT"));
    assert_eq!(e.when, When::Days { first: date(2026, 7, 4), last: date(2026, 7, 4) });
    let e = only_event(&cal("BEGIN:VEVENT\nDTSTART;VALUE=DATE:20260803\nDURATION:P1W\nEND:VEVENT"));
    assert_eq!(e.when, When::Days { first: date(2026, 8, 3), last: date(2026, 8, 9) });
}

#[test]
fn timed_events_keep_their_form() {
    let e = only_event(&cal("
        BEGIN:VEVENT
        DTSTART;TZID=America/New_York:20261224T120000
        DTEND;TZID=America/New_York:20261224T170000
        SUMMARY:Staff party\\, early close
        BEGIN:VALARM
        SUMMARY:not this one
        END:VALARM
        END:VEVENT"));
    assert_eq!(e.summary.as_deref(), Some("Staff party, early close"));
    let ny = |h| Time::Zoned { time: date(2026, 12, 24).at(h, 0, 0, 0), tzid: "America/New_York".into() };
    assert_eq!(e.when, When::Timed { start: ny(12), end: ny(17) });

    let e = only_event(&cal("BEGIN:VEVENT\nDTSTART:20260301T090000Z\nDURATION:PT2H30M\nEND:VEVENT"));
    let utc = |h, m| Time::Utc(date(2026, 3, 1).at(h, m, 0, 0));
    assert_eq!(e.when, When::Timed { start: utc(9, 0), end: utc(11, 30) });

    let e = only_event(&cal("BEGIN:VEVENT\nDTSTART:20260301T230000\nDTEND:20260302T013000\nEND:VEVENT"));
    let floating = |d, h, m| Time::Floating(date(2026, 3, d).at(h, m, 0, 0));
    assert_eq!(e.when, When::Timed { start: floating(1, 23, 0), end: floating(2, 1, 30) });
}

#[test]
fn folded_lines_and_parameters_are_read() {
    // A folded SUMMARY, a quoted parameter holding ':' and ';', lower-case names, LF ends.
    let text = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nsummary;LANGUAGE=en:Founders\n  Day\nDTSTART;X-NOTE=\"a:b;c\";VALUE=DATE:20260601\nEND:VEVENT\nEND:VCALENDAR";
    let e = only_event(text);
    assert_eq!(e.summary.as_deref(), Some("Founders Day"));
    assert_eq!(e.when, When::Days { first: date(2026, 6, 1), last: date(2026, 6, 1) });
}

#[test]
#[rustfmt::skip]
fn yearly_repeats_become_rules() {
    let rule = |rrule: &str, start: &str| {
        let e = only_event(&cal(&format!("BEGIN:VEVENT\nDTSTART;VALUE=DATE:{start}\nRRULE:{rrule}\nEND:VEVENT")));
        match e.when {
            When::Yearly(y) => y,
            other => panic!("{rrule}: {other:?}"),
        }
    };
    assert_eq!(rule("FREQ=YEARLY", "20201225"), Yearly::Date { month: 12, day: 25 });
    assert_eq!(rule("FREQ=YEARLY;INTERVAL=1;BYMONTH=7;BYMONTHDAY=4", "20200704"), Yearly::Date { month: 7, day: 4 });
    assert_eq!(rule("FREQ=YEARLY;BYMONTH=11;BYDAY=4TH", "20201126"),
        Yearly::NthWeekday { nth: 4, weekday: Weekday::Thursday, month: 11 });
    assert_eq!(rule("FREQ=YEARLY;BYDAY=-1MO;BYMONTH=5", "20200525"),
        Yearly::NthWeekday { nth: -1, weekday: Weekday::Monday, month: 5 });
    assert_eq!(rule("FREQ=YEARLY;BYMONTH=1;BYDAY=MO;BYSETPOS=3", "20200120"),
        Yearly::NthWeekday { nth: 3, weekday: Weekday::Monday, month: 1 });
}

#[test]
#[rustfmt::skip]
fn what_cannot_be_said_is_skipped_with_a_reason() {
    let cases = [
        ("DTSTART;VALUE=DATE:20260105\nRRULE:FREQ=WEEKLY;BYDAY=MO", "RRULE FREQ=WEEKLY: only FREQ=YEARLY can be imported"),
        ("DTSTART;VALUE=DATE:20261225\nRRULE:FREQ=YEARLY;COUNT=3",
            "RRULE COUNT=3: only repeats every year without end can be imported"),
        ("DTSTART;VALUE=DATE:20261225\nRRULE:FREQ=YEARLY\nEXDATE;VALUE=DATE:20271225",
            "a repeat with exceptions or extra dates (EXDATE, RDATE) is not supported"),
        ("DTSTART:20261224T120000\nDTEND:20261224T130000\nRRULE:FREQ=YEARLY",
            "a repeating timed event cannot be imported; add its closures one by one"),
        ("DTSTART;VALUE=DATE:20261225\nRRULE:FREQ=YEARLY;BYMONTH=1,2", "RRULE BYMONTH=1,2: only one plain number is supported"),
        ("DTSTART;VALUE=DATE:20261225\nRECURRENCE-ID;VALUE=DATE:20261225",
            "changes one occurrence of a repeating event (RECURRENCE-ID), which is not supported"),
        ("DTSTART:20261224T120000", "a timed event with no end (no DTEND or DURATION)"),
        ("DTSTART:20261224T120000\nDTEND:20261224T110000", "ends at or before its start"),
        ("STATUS:CANCELLED\nDTSTART;VALUE=DATE:20261225", "cancelled"),
        ("SUMMARY:nothing", "no DTSTART"),
    ];
    for (props, why) in cases {
        let s = only_skipped(&cal(&format!("BEGIN:VEVENT\n{props}\nEND:VEVENT")));
        assert_eq!(s.why, why, "{props}");
        assert_eq!(s.line, 4, "{props}");
    }
}

#[test]
#[rustfmt::skip]
fn broken_files_are_refused_with_their_line() {
    let cases = [
        ("", "line 1: not an iCalendar file: it is empty"),
        ("<html>nope</html>", "line 1: not an iCalendar file: it must start with BEGIN:VCALENDAR"),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:2026-12-25\nEND:VEVENT\nEND:VCALENDAR",
            r#"line 3: DTSTART: "2026-12-25" is not a date-time YYYYMMDDTHHMMSS[Z]"#),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20260230\nEND:VEVENT\nEND:VCALENDAR",
            r#"line 3: DTSTART: "20260230" is not a date YYYYMMDD"#),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20261225T250000\nEND:VEVENT\nEND:VCALENDAR",
            r#"line 3: DTSTART: "20261225T250000" is not a date-time YYYYMMDDTHHMMSS[Z]"#),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20261225T090000\nDURATION:PT\nEND:VEVENT\nEND:VCALENDAR",
            r#"line 4: DURATION: "PT" is not a duration such as P1D or PT2H30M"#),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nno colon here\nEND:VEVENT\nEND:VCALENDAR", "line 3: a line with no ':' before its value"),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nEND:VCALENDAR", "line 3: END:VCALENDAR where END:VEVENT was expected"),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20261225\n", "line 2: BEGIN:VEVENT is never closed"),
        (" folded\nBEGIN:VCALENDAR", "line 1: a continuation line with nothing before it"),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nRRULE:BYMONTH=1\nDTSTART;VALUE=DATE:20261225\nEND:VEVENT\nEND:VCALENDAR",
            "line 3: RRULE without FREQ"),
        ("BEGIN:VCALENDAR\nX-A;P=\"open:1\n", "line 2: a quoted parameter value is not closed"),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text).map(|c| c.events).unwrap_err().to_string(), want, "{text:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn any_text_is_read_or_refused_without_panicking(text in "\\PC{0,300}") {
        let _ = parse(&text);
    }

    /// Random lines from a vocabulary of real properties, so that most inputs get past the header
    /// and exercise the event reader; every refusal names a line that exists.
    #[test]
    fn plausible_calendars_never_panic(lines in proptest::collection::vec(prop_oneof![
        Just("BEGIN:VEVENT".to_owned()), Just("END:VEVENT".to_owned()), Just("BEGIN:VALARM".to_owned()),
        Just("END:VALARM".to_owned()), Just(" continued".to_owned()),
        "DTSTART(;VALUE=DATE|;TZID=Europe/London)?:[0-9]{8}(T[0-9]{6}Z?)?",
        "DTEND(;VALUE=DATE)?:[0-9]{8}(T[0-9]{6})?",
        "DURATION:[+-]?P[0-9WDTHMS]{0,8}",
        "RRULE:(FREQ=[A-Z]{0,8};?)?((BYMONTH|BYDAY|BYSETPOS|BYMONTHDAY|COUNT)=[-+0-9A-Z,]{0,5};?){0,3}",
        "SUMMARY:[\\\\a-z ,;]{0,12}", "(STATUS:CANCELLED|EXDATE:20260101|RECURRENCE-ID:20260101)",
    ], 0..16)) {
        let text = format!("BEGIN:VCALENDAR\r\n{}\r\nEND:VCALENDAR\r\n", lines.join("\r\n"));
        let total = text.split('\n').count();
        match parse(&text) {
            Ok(c) => {
                for e in &c.events {
                    prop_assert!(e.line >= 1 && e.line <= total);
                    if let When::Days { first, last } = e.when {
                        prop_assert!(first <= last);
                    }
                }
            }
            Err(e) => prop_assert!(e.line >= 1 && e.line <= total, "{e} of {total} lines"),
        }
    }
}
