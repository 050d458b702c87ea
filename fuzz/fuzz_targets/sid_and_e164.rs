//! SIDs and E.164 numbers arrive in every webhook (`CallSid`, `From`, `To`,
//! `ReservationSid`) and in TaskRouter event bodies.
//!
//! Properties: parsing never panics; a parsed value has the documented shape;
//! its `as_str()` parses back to the same value; serde deserialization agrees
//! with `parse`; a string is never both a call SID and a reservation SID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use twilio::E164;
use twilio::sid::{CallSid, ReservationSid};

fn check_sid(s: &str, parsed: Option<&str>, prefix: &str) {
    if let Some(v) = parsed {
        assert_eq!(v.len(), 34, "{v}");
        assert!(v.starts_with(prefix), "{v}");
        assert!(v[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "not lowercase hex: {v}");
        assert!(v.eq_ignore_ascii_case(s), "{v} is not {s:?} up to case");
    }
}

fuzz_target!(|s: &str| {
    let call = CallSid::parse(s).ok();
    check_sid(s, call.as_ref().map(CallSid::as_str), CallSid::PREFIX);
    if let Some(sid) = &call {
        assert_eq!(CallSid::parse(sid.as_str()).as_ref(), Ok(sid));
    }
    let from_json = serde_json::from_value::<CallSid>(Value::String(s.to_owned())).ok();
    assert_eq!(from_json, call);

    let reservation = ReservationSid::parse(s).ok();
    check_sid(s, reservation.as_ref().map(ReservationSid::as_str), ReservationSid::PREFIX);
    if let Some(sid) = &reservation {
        assert_eq!(ReservationSid::parse(sid.as_str()).as_ref(), Ok(sid));
    }
    assert!(call.is_none() || reservation.is_none(), "{s:?} is both a CA and a WR SID");

    let number = E164::parse(s).ok();
    if let Some(n) = &number {
        let digits = &n.as_str()[1..];
        assert!(n.as_str().starts_with('+'), "{n}");
        assert!((8..=15).contains(&digits.len()), "{n}");
        assert!(digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'), "{n}");
        assert_eq!(E164::parse(n.as_str()).as_ref(), Ok(n));
    }
    let from_json = serde_json::from_value::<E164>(Value::String(s.to_owned())).ok();
    assert_eq!(from_json, number);
});
