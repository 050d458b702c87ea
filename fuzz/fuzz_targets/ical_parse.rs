//! `locations holidays --ical` reads an iCalendar file that someone exported or that a URL
//! served, so the parser sees untrusted text.
//!
//! Properties: parsing never panics; a refusal names a line of the input; an all-day span never
//! ends before it starts; and line ends do not matter (LF and CRLF read the same).
#![no_main]

use ical::When;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let lines = text.split('\n').count();
    let parsed = ical::parse(text);
    match &parsed {
        Ok(calendar) => {
            for event in &calendar.events {
                assert!((1..=lines).contains(&event.line), "event line {} of {lines}", event.line);
                if let When::Days { first, last } = event.when {
                    assert!(first <= last, "{first} after {last}");
                }
            }
            for skipped in &calendar.skipped {
                assert!((1..=lines).contains(&skipped.line), "skipped line {} of {lines}", skipped.line);
            }
        }
        Err(e) => assert!((1..=lines).contains(&e.line), "{e} of {lines} lines"),
    }
    if !text.contains('\r') {
        assert_eq!(ical::parse(&text.replace('\n', "\r\n")), parsed, "CRLF line ends changed the result");
    }
});
