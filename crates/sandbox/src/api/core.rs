//! The core (2010-04-01) API: IncomingPhoneNumbers, Calls and Recordings.

use std::sync::Arc;

use axum::http::Method;
use jiff::Timestamp;
use jiff::tz::Offset;
use serde_json::{Value, json};
use twilio::{E164, ErrorBody};

use super::{ApiResult, Req, bad, core_page, created, method_not_allowed, no_content, ok, paginate};
use crate::Shared;
use crate::clock::rfc2822;
use crate::state::{Call, PhoneNumber, Recording};
use crate::voice;

pub(super) async fn route(shared: &Arc<Shared>, path: &str, segs: &[&str], req: &Req) -> ApiResult {
    let m = &req.method;
    match segs {
        ["IncomingPhoneNumbers"] if m == Method::GET => list_numbers(shared, path, req),
        ["IncomingPhoneNumbers"] if m == Method::POST => create_number(shared, req),
        ["IncomingPhoneNumbers", sid] => number(shared, path, sid, req),
        ["Calls"] if m == Method::GET => list_calls(shared, path, req),
        ["Calls"] if m == Method::POST => voice::api::create_call(shared, req),
        ["Calls", sid] => match *m {
            Method::GET => {
                let v = shared.with(|st, _| st.calls.get(sid).map(|c| call_json(shared, c)));
                v.map_or_else(|| Err(super::not_found(path)), ok)
            }
            Method::POST => update_call(shared, sid, req).await,
            Method::DELETE => delete_call(shared, path, sid),
            _ => Err(method_not_allowed(m)),
        },
        ["Calls", sid, "Recordings"] if m == Method::GET => {
            let created = date_filter(req, "DateCreated")?;
            let items = shared.with(|st, _| {
                st.recordings
                    .iter()
                    .filter(|r| r.call_sid == *sid)
                    .filter(|r| created.iter().all(|f| f.matches(Some(shared.clock.wall(r.created)))))
                    .map(|r| call_recording_json(shared, r))
                    .collect::<Vec<_>>()
            });
            ok(core_page(req, path, "recordings", paginate(req, items)?))
        }
        ["Calls", call, "Recordings", sid] if m == Method::GET => {
            let v = shared.with(|st, _| {
                st.recordings.get(sid).filter(|r| r.call_sid == *call).map(|r| call_recording_json(shared, r))
            });
            v.map_or_else(|| Err(super::not_found(path)), ok)
        }
        ["Recordings", sid] if m == Method::GET => {
            let v = shared.with(|st, _| st.recordings.get(sid).map(|r| recording_json(shared, r)));
            v.map_or_else(|| Err(super::not_found(path)), ok)
        }
        [x] if matches!(*x, "IncomingPhoneNumbers" | "Calls") => Err(method_not_allowed(m)),
        _ => Err(super::not_found(path)),
    }
}

/// The media of a recording, for `GET /2010-04-01/Accounts/{AC}/Recordings/{RE}`
/// without an extension or with `.wav` (Twilio's default format): `None` for
/// any other path. The audio is a WAV file (8 kHz, 16-bit, mono) of the
/// recording's length whose samples follow from its SID, so a test can tell
/// recordings apart and compare bytes.
pub(super) fn recording_media(shared: &Shared, path: &str) -> Option<Result<Vec<u8>, ErrorBody>> {
    let prefix = account_path(shared, "Recordings/");
    let rest = path.strip_prefix(&prefix)?;
    let sid = rest.strip_suffix(".wav").unwrap_or(rest);
    if sid.is_empty() || sid.contains(['/', '.']) {
        return None;
    }
    let duration = shared.with(|st, _| st.recordings.get(sid).map(|r| r.duration_secs));
    Some(duration.map(|secs| wav(sid, secs)).ok_or_else(|| super::not_found(path)))
}

/// A WAV file: 8 kHz, 16-bit PCM, mono, `secs` long, a tone whose pitch
/// depends on `seed`.
fn wav(seed: &str, secs: u64) -> Vec<u8> {
    const RATE: u32 = 8000;
    let samples = RATE as usize * secs.min(3600) as usize;
    let data_len = (samples * 2) as u32;
    let step = 1 + seed.bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b))) % 97;
    let mut out = Vec::with_capacity(44 + samples * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples as u32 {
        // A sawtooth: quiet, and cheap to make.
        let v = ((i.wrapping_mul(step) % 512) as i16 - 256) * 16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn account_path(shared: &Shared, rest: &str) -> String {
    format!("/2010-04-01/Accounts/{}/{rest}", shared.config.account_sid)
}

/// An IncomingPhoneNumber with all the fields of Twilio's resource. Unset
/// settings read as Twilio's examples show them: the SMS settings and
/// `status_callback` as "", the voice URLs and SIDs as null.
fn number_json(shared: &Shared, n: &PhoneNumber) -> Value {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    json!({
        "account_sid": shared.config.account_sid.as_str(),
        "sid": n.sid,
        "phone_number": n.phone_number,
        "friendly_name": n.friendly_name,
        "api_version": n.api_version,
        "voice_url": n.voice_url,
        "voice_method": n.voice_method,
        "voice_fallback_url": n.voice_fallback_url,
        "voice_fallback_method": n.voice_fallback_method,
        "voice_caller_id_lookup": n.voice_caller_id_lookup,
        "voice_application_sid": text(&n.voice_application_sid),
        "voice_receive_mode": n.voice_receive_mode,
        "status_callback": text(&n.status_callback),
        "status_callback_method": n.status_callback_method,
        "sms_url": text(&n.sms_url),
        "sms_method": n.sms_method,
        "sms_fallback_url": text(&n.sms_fallback_url),
        "sms_fallback_method": n.sms_fallback_method,
        "sms_application_sid": text(&n.sms_application_sid),
        "trunk_sid": n.trunk_sid,
        "identity_sid": n.identity_sid,
        "address_sid": n.address_sid,
        "address_requirements": "none",
        "bundle_sid": n.bundle_sid,
        "emergency_status": n.emergency_status,
        "emergency_address_sid": n.emergency_address_sid,
        "emergency_address_status": if n.emergency_address_sid.is_some() { "registered" } else { "unregistered" },
        "capabilities": {"voice": true, "sms": true, "mms": true, "fax": false},
        "status": "in-use",
        "origin": "twilio",
        "type": "local",
        "beta": false,
        "date_created": rfc2822(shared.clock.wall(n.created)),
        "date_updated": rfc2822(shared.clock.wall(n.updated)),
        "uri": account_path(shared, &format!("IncomingPhoneNumbers/{}.json", n.sid)),
    })
}

fn list_numbers(shared: &Shared, path: &str, req: &Req) -> ApiResult {
    let want = req.query.get("PhoneNumber").map(|p| p.trim().to_owned());
    let name = req.query.get("FriendlyName");
    // Every sandbox number is a non-beta number of Twilio's own origin.
    req.query.get("Beta").map(|v| super::parse_bool("Beta", v)).transpose()?;
    let origin = req.query.get("Origin");
    let items = shared.with(|st, _| {
        st.numbers
            .iter()
            .filter(|n| want.as_deref().is_none_or(|w| n.phone_number.contains(w.trim_start_matches('+'))))
            .filter(|n| name.is_none_or(|f| n.friendly_name == f))
            .filter(|_| origin.is_none_or(|o| o.eq_ignore_ascii_case("twilio")))
            .map(|n| number_json(shared, n))
            .collect::<Vec<_>>()
    });
    ok(core_page(req, path, "incoming_phone_numbers", paginate(req, items)?))
}

/// The number's URL parameters.
const NUMBER_URLS: [&str; 5] = ["VoiceUrl", "VoiceFallbackUrl", "StatusCallback", "SmsUrl", "SmsFallbackUrl"];
/// The number's method parameters.
const NUMBER_METHODS: [&str; 5] =
    ["VoiceMethod", "VoiceFallbackMethod", "StatusCallbackMethod", "SmsMethod", "SmsFallbackMethod"];
/// The number's SID parameters, with the prefix each must have.
const NUMBER_SIDS: [(&str, &str); 7] = [
    ("VoiceApplicationSid", "AP"),
    ("SmsApplicationSid", "AP"),
    ("TrunkSid", "TK"),
    ("IdentitySid", "RI"),
    ("AddressSid", "AD"),
    ("BundleSid", "BU"),
    ("EmergencyAddressSid", "AD"),
];

/// Checks every parameter of a number's create or update before anything is
/// stored, so a bad request changes nothing.
fn check_number(req: &Req) -> Result<(), ErrorBody> {
    for key in NUMBER_URLS {
        if let Some(u) = req.get(key)
            && !u.is_empty()
            && !super::valid_url(u)
        {
            return Err(bad(21502, format!("{key} is not a valid URL: {u}")));
        }
    }
    for key in NUMBER_METHODS {
        if let Some(m) = req.get(key)
            && !m.eq_ignore_ascii_case("GET")
            && !m.eq_ignore_ascii_case("POST")
        {
            return Err(bad(21503, format!("{key} must be GET or POST")));
        }
    }
    for (key, prefix) in NUMBER_SIDS {
        if let Some(v) = req.get(key)
            && !v.is_empty()
            && !is_sid(v, prefix)
        {
            return Err(bad(20001, format!("{key} {v:?} is not a valid {prefix} SID")));
        }
    }
    let one_of = |key: &str, allowed: &[&str]| match req.get(key) {
        Some(v) if !allowed.contains(&v) => {
            Err(bad(20001, format!("{key} {v:?} must be one of {}", allowed.join(", "))))
        }
        _ => Ok(()),
    };
    one_of("VoiceReceiveMode", &["voice", "fax"])?;
    one_of("EmergencyStatus", &["Active", "Inactive"])?;
    one_of("ApiVersion", &["2010-04-01", "2008-08-01"])?;
    if let Some(v) = req.get("VoiceCallerIdLookup") {
        super::parse_bool("VoiceCallerIdLookup", v)?;
    }
    if let Some(n) = req.get("FriendlyName")
        && n.chars().count() > 64
    {
        return Err(bad(20001, "FriendlyName must be at most 64 characters"));
    }
    Ok(())
}

/// `AP` followed by 32 hex digits, and the like.
fn is_sid(v: &str, prefix: &str) -> bool {
    v.len() == 34 && v.starts_with(prefix) && v[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Stores a checked create or update ([`check_number`] ran first).
fn apply_number(req: &Req, n: &mut PhoneNumber, now: u64) {
    let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    for (key, slot) in [
        ("VoiceUrl", &mut n.voice_url),
        ("VoiceFallbackUrl", &mut n.voice_fallback_url),
        ("StatusCallback", &mut n.status_callback),
        ("SmsUrl", &mut n.sms_url),
        ("SmsFallbackUrl", &mut n.sms_fallback_url),
        ("VoiceApplicationSid", &mut n.voice_application_sid),
        ("SmsApplicationSid", &mut n.sms_application_sid),
        ("TrunkSid", &mut n.trunk_sid),
        ("IdentitySid", &mut n.identity_sid),
        ("AddressSid", &mut n.address_sid),
        ("BundleSid", &mut n.bundle_sid),
        ("EmergencyAddressSid", &mut n.emergency_address_sid),
    ] {
        if let Some(v) = req.get(key) {
            *slot = text(v);
        }
    }
    for (key, slot) in [
        ("VoiceMethod", &mut n.voice_method),
        ("VoiceFallbackMethod", &mut n.voice_fallback_method),
        ("StatusCallbackMethod", &mut n.status_callback_method),
        ("SmsMethod", &mut n.sms_method),
        ("SmsFallbackMethod", &mut n.sms_fallback_method),
    ] {
        if let Some(v) = req.get(key) {
            *slot = v.to_ascii_uppercase();
        }
    }
    for (key, slot) in [
        ("FriendlyName", &mut n.friendly_name),
        ("ApiVersion", &mut n.api_version),
        ("VoiceReceiveMode", &mut n.voice_receive_mode),
        ("EmergencyStatus", &mut n.emergency_status),
    ] {
        if let Some(v) = req.get(key) {
            *slot = v.to_owned();
        }
    }
    if let Some(Ok(v)) = req.get("VoiceCallerIdLookup").map(|v| super::parse_bool("VoiceCallerIdLookup", v)) {
        n.voice_caller_id_lookup = v;
    }
    n.updated = now;
}

fn create_number(shared: &Shared, req: &Req) -> ApiResult {
    let raw = req
        .get("PhoneNumber")
        .ok_or_else(|| bad(21452, "Missing required parameter PhoneNumber (or AreaCode) in the post body"))?;
    let number = E164::parse(raw).map_err(|_| bad(21421, format!("PhoneNumber {raw} is invalid")))?;
    check_number(req)?;
    shared.with(|st, now| {
        if st.number_by_e164.contains_key(number.as_str()) {
            return Err(bad(21422, format!("PhoneNumber {number} is not available")));
        }
        let sid = st.sid("PN");
        let mut n = PhoneNumber::new(sid.clone(), number.as_str().into(), pretty(number.as_str()), now);
        apply_number(req, &mut n, now);
        let v = number_json(shared, &n);
        st.number_by_e164.insert(n.phone_number.clone(), sid.clone());
        st.numbers.insert(sid, n);
        created(v)
    })
}

/// `(415) 555-0100` for North American numbers, else the number itself.
fn pretty(e164: &str) -> String {
    match e164.strip_prefix("+1") {
        Some(d) if d.len() == 10 => format!("({}) {}-{}", &d[..3], &d[3..6], &d[6..]),
        _ => e164.into(),
    }
}

fn number(shared: &Shared, path: &str, sid: &str, req: &Req) -> ApiResult {
    if req.method == Method::POST {
        check_number(req)?;
    }
    shared.with(|st, now| {
        if st.numbers.get(sid).is_none() {
            return Err(super::not_found(path));
        }
        match req.method {
            Method::GET => {}
            Method::POST => {
                if let Some(n) = st.numbers.get_mut(sid) {
                    apply_number(req, n, now);
                }
            }
            Method::DELETE => {
                if let Some(n) = st.numbers.remove(sid) {
                    st.number_by_e164.remove(&n.phone_number);
                }
                return no_content();
            }
            _ => return Err(method_not_allowed(&req.method)),
        }
        let n = st.numbers.get(sid).ok_or_else(|| super::not_found(path))?;
        ok(number_json(shared, n))
    })
}

/// `POST Calls/{sid}.json`. The leg's task ends the call a moment later, but
/// the answer already shows the status the update leads to, as Twilio's does.
async fn update_call(shared: &Arc<Shared>, sid: &str, req: &Req) -> ApiResult {
    let before = shared.with(|st, _| st.calls.get(sid).map(|c| c.status.clone()));
    let mut reply = voice::api::update_call(shared, sid, req).await?;
    let after = before.as_deref().and_then(|b| status_after_update(b, req.get("Status")));
    if let (Some(after), Some(Value::Object(body))) = (after, reply.body.as_mut()) {
        body.insert("status".into(), Value::String(after.into()));
    }
    Ok(reply)
}

/// The status a `Status=` update moves a call to, from the status it had:
/// `canceled` ends a queued or ringing call (and leaves a live one alone);
/// `completed` hangs up a live call, and cancels one not yet answered.
fn status_after_update(before: &str, requested: Option<&str>) -> Option<&'static str> {
    let early = matches!(before, "queued" | "ringing");
    match (requested, early, before) {
        (Some("canceled" | "completed"), true, _) => Some("canceled"),
        (Some("completed"), false, "in-progress") => Some("completed"),
        _ => None,
    }
}

/// `DELETE Calls/{sid}.json`: only a call that has ended can be deleted.
/// Twilio refuses the others with error 20009 ("Cannot delete this resource
/// before it is complete"); its docs give the code but not the HTTP status,
/// so the sandbox answers 409, the status for a request that conflicts with
/// the resource's state.
fn delete_call(shared: &Shared, path: &str, sid: &str) -> ApiResult {
    shared.with(|st, _| match st.calls.get(sid).map(Call::is_final) {
        None => Err(super::not_found(path)),
        Some(false) => Err(ErrorBody::new(409, 20009, "Cannot delete this resource before it is complete")),
        Some(true) => {
            st.calls.remove(sid);
            no_content()
        }
    })
}

/// A call as the Calls resource shows it.
pub(crate) fn call_json(shared: &Shared, c: &Call) -> Value {
    let wall = |t: Option<u64>| t.map(|t| rfc2822(shared.clock.wall(t)));
    let duration = match (c.answered, c.end) {
        (Some(a), Some(e)) => Some(((e.saturating_sub(a)) / 1000).to_string()),
        (None, Some(_)) => Some("0".to_owned()),
        _ => None,
    };
    json!({
        "sid": c.sid,
        "account_sid": shared.config.account_sid.as_str(),
        "parent_call_sid": c.parent_call_sid,
        "to": c.to,
        "to_formatted": pretty(&c.to),
        "from": c.from,
        "from_formatted": pretty(&c.from),
        "phone_number_sid": c.phone_number_sid,
        "status": c.status,
        "direction": c.direction,
        "answered_by": c.answered_by,
        "start_time": wall(c.start),
        "end_time": wall(c.end),
        "duration": duration,
        "queue_time": c.queue_time_ms.unwrap_or(0).to_string(),
        "price": null,
        "price_unit": "USD",
        "api_version": "2010-04-01",
        "forwarded_from": null,
        "caller_name": null,
        "group_sid": null,
        "trunk_sid": null,
        "date_created": rfc2822(shared.clock.wall(c.created)),
        "date_updated": rfc2822(shared.clock.wall(c.updated)),
        "uri": account_path(shared, &format!("Calls/{}.json", c.sid)),
        "subresource_uris": subresource_uris(shared, &format!("Calls/{}", c.sid), &[
            "notifications", "recordings", "payments", "events", "siprec", "streams", "transcriptions",
            "user_defined_message_subscriptions", "user_defined_messages",
        ]),
    })
}

/// `{"recordings": ".../Calls/CA…/Recordings.json", …}`: the sub-resources
/// Twilio links, whether or not the sandbox serves them.
fn subresource_uris(shared: &Shared, base: &str, names: &[&str]) -> Value {
    let camel = |n: &str| -> String { n.split('_').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect() };
    names
        .iter()
        .map(|n| (n.to_string(), Value::String(account_path(shared, &format!("{base}/{}.json", camel(n))))))
        .collect()
}

/// A recording as `Calls/{CA}/Recordings` shows it.
fn call_recording_json(shared: &Shared, r: &Recording) -> Value {
    let wall = |t: u64| rfc2822(shared.clock.wall(t));
    json!({
        "sid": r.sid,
        "account_sid": shared.config.account_sid.as_str(),
        "call_sid": r.call_sid,
        "conference_sid": null,
        "api_version": "2010-04-01",
        "date_created": wall(r.created),
        "date_updated": wall(r.created),
        "start_time": wall(r.created.saturating_sub(r.duration_secs.saturating_mul(1000))),
        "duration": r.duration_secs.to_string(),
        "price": null,
        "price_unit": "USD",
        "status": "completed",
        "channels": 1,
        "source": "RecordVerb",
        "error_code": null,
        "track": "both",
        "encryption_details": null,
        "uri": account_path(shared, &format!("Calls/{}/Recordings/{}.json", r.call_sid, r.sid)),
    })
}

/// A recording as `Recordings/{RE}` shows it.
fn recording_json(shared: &Shared, r: &Recording) -> Value {
    let wall = |t: u64| rfc2822(shared.clock.wall(t));
    let base = format!("Recordings/{}", r.sid);
    json!({
        "sid": r.sid,
        "account_sid": shared.config.account_sid.as_str(),
        "call_sid": r.call_sid,
        "conference_sid": null,
        "api_version": "2010-04-01",
        "date_created": wall(r.created),
        "date_updated": wall(r.created),
        "start_time": wall(r.created.saturating_sub(r.duration_secs.saturating_mul(1000))),
        "duration": r.duration_secs.to_string(),
        "price": null,
        "price_unit": "USD",
        "status": "completed",
        "channels": 1,
        "source": "RecordVerb",
        "error_code": null,
        "encryption_details": null,
        "uri": account_path(shared, &format!("{base}.json")),
        "media_url": format!("{}{}", shared.base_url, account_path(shared, &base)),
        "subresource_uris": subresource_uris(shared, &base, &["add_on_results", "transcriptions"]),
    })
}

/// The call statuses Twilio lists by (`Status=`).
const CALL_STATUSES: [&str; 8] =
    ["queued", "ringing", "in-progress", "canceled", "completed", "failed", "busy", "no-answer"];

/// `GET Calls.json`, newest first, filtered by `To`, `From`, `ParentCallSid`,
/// `Status`, and the six time filters (see [`date_filter`]).
fn list_calls(shared: &Shared, path: &str, req: &Req) -> ApiResult {
    let q = &req.query;
    if let Some(s) = q.get("Status")
        && !CALL_STATUSES.contains(&s)
    {
        return Err(bad(20001, format!("Status {s:?} must be one of {}", CALL_STATUSES.join(", "))));
    }
    let started = date_filter(req, "StartTime")?;
    let ended = date_filter(req, "EndTime")?;
    let wall = |t: Option<u64>| t.map(|t| shared.clock.wall(t));
    let items = shared.with(|st, _| {
        st.calls
            .iter()
            .filter(|c| q.get("To").is_none_or(|v| c.to == v))
            .filter(|c| q.get("From").is_none_or(|v| c.from == v))
            .filter(|c| q.get("Status").is_none_or(|v| c.status == v))
            .filter(|c| q.get("ParentCallSid").is_none_or(|v| c.parent_call_sid.as_deref() == Some(v)))
            .filter(|c| started.iter().all(|f| f.matches(wall(c.start))))
            .filter(|c| ended.iter().all(|f| f.matches(wall(c.end))))
            .map(|c| call_json(shared, c))
            .collect::<Vec<_>>()
    });
    // Twilio lists the newest calls first.
    let mut items = items;
    items.reverse();
    ok(core_page(req, path, "calls", paginate(req, items)?))
}

/// When a time filter's value points: a whole UTC day, or an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    Day(jiff::civil::Date),
    At(Timestamp),
}

impl When {
    /// Twilio documents `YYYY-MM-DD` (a UTC day); its helper libraries also
    /// send full date-times, so the sandbox takes, as instants: RFC 3339
    /// (`2009-07-06T20:30:00Z`, or with an offset), `YYYY-MM-DD HH:MM:SS[.fff]`
    /// (UTC), and RFC 2822 (the format the API writes its own dates in).
    fn parse(name: &str, v: &str) -> Result<When, ErrorBody> {
        let v = v.trim();
        if let Ok(d) = v.parse::<jiff::civil::Date>()
            && v.len() == 10
        {
            return Ok(When::Day(d));
        }
        if let Ok(t) = v.parse::<Timestamp>() {
            return Ok(When::At(t));
        }
        if let Ok(dt) = v.parse::<jiff::civil::DateTime>()
            && let Ok(t) = Offset::UTC.to_timestamp(dt)
        {
            return Ok(When::At(t));
        }
        if let Ok(z) = jiff::fmt::rfc2822::parse(v) {
            return Ok(When::At(z.timestamp()));
        }
        Err(bad(20001, format!("{name} {v:?} is not a date (YYYY-MM-DD) or a date-time")))
    }

    /// The instant the day or time begins.
    fn begin(self) -> Timestamp {
        match self {
            When::At(t) => t,
            When::Day(d) => Offset::UTC.to_timestamp(d.into()).unwrap_or(Timestamp::MIN),
        }
    }

    /// The UTC day it falls on.
    fn day(self) -> jiff::civil::Date {
        match self {
            When::Day(d) => d,
            When::At(t) => Offset::UTC.to_datetime(t).date(),
        }
    }
}

/// One time filter: `Name` (on that UTC day, also when given a date-time),
/// `Name<` (strictly before the day, or the instant) and `Name>` (on or after
/// it).
#[derive(Debug, Clone, Copy)]
enum DateFilter {
    On(jiff::civil::Date),
    Before(Timestamp),
    From(Timestamp),
}

impl DateFilter {
    /// Whether a resource's time passes. A resource without that time (a
    /// call not yet started, or not ended) never does.
    fn matches(&self, t: Option<Timestamp>) -> bool {
        let Some(t) = t else { return false };
        match *self {
            DateFilter::On(d) => Offset::UTC.to_datetime(t).date() == d,
            DateFilter::Before(b) => t < b,
            DateFilter::From(b) => t >= b,
        }
    }
}

/// The filters `name`, `name<` and `name>` of a request's query.
fn date_filter(req: &Req, name: &str) -> Result<Vec<DateFilter>, ErrorBody> {
    let mut out = Vec::new();
    for (suffix, make) in [
        ("", (|w: When| DateFilter::On(w.day())) as fn(When) -> DateFilter),
        ("<", |w: When| DateFilter::Before(w.begin())),
        (">", |w: When| DateFilter::From(w.begin())),
    ] {
        let key = format!("{name}{suffix}");
        for v in req.query.get_all(&key) {
            out.push(make(When::parse(&key, v)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn time_filter_values() {
        let day = "2009-07-06".parse::<jiff::civil::Date>().unwrap();
        assert_eq!(When::parse("StartTime", "2009-07-06").unwrap(), When::Day(day));
        assert_eq!(When::parse("StartTime", "2009-07-06T20:30:00Z").unwrap(), When::At(ts("2009-07-06T20:30:00Z")));
        assert_eq!(
            When::parse("StartTime", "2009-07-06T22:30:00+02:00").unwrap(),
            When::At(ts("2009-07-06T20:30:00Z"))
        );
        assert_eq!(When::parse("StartTime", "2009-07-06 20:30:00.000").unwrap(), When::At(ts("2009-07-06T20:30:00Z")));
        assert_eq!(
            When::parse("StartTime", "Mon, 06 Jul 2009 20:30:00 +0000").unwrap(),
            When::At(ts("2009-07-06T20:30:00Z"))
        );
        for bad in ["yesterday", "2009-13-01", "", "06/11/2019 22:05:25 MST"] {
            let e = When::parse("StartTime<", bad).unwrap_err();
            assert_eq!((e.status, e.code), (400, 20001), "{bad}");
        }
    }

    #[test]
    fn time_filters_bound_as_documented() {
        let on = |v| DateFilter::On(When::parse("x", v).unwrap().day());
        let before = |v| DateFilter::Before(When::parse("x", v).unwrap().begin());
        let from = |v| DateFilter::From(When::parse("x", v).unwrap().begin());
        let t = Some(ts("2009-07-06T23:59:59Z"));
        assert!(on("2009-07-06").matches(t));
        assert!(on("2009-07-06T01:00:00Z").matches(t));
        assert!(!on("2009-07-07").matches(t));
        assert!(before("2009-07-07").matches(t));
        assert!(!before("2009-07-06").matches(t));
        assert!(!before("2009-07-06T23:59:59Z").matches(t));
        assert!(from("2009-07-06").matches(t));
        assert!(from("2009-07-06T23:59:59Z").matches(t));
        assert!(!from("2009-07-07").matches(t));
        assert!(!from("2000-01-01").matches(None));
    }

    #[test]
    fn update_status_results() {
        assert_eq!(status_after_update("ringing", Some("canceled")), Some("canceled"));
        assert_eq!(status_after_update("queued", Some("completed")), Some("canceled"));
        assert_eq!(status_after_update("in-progress", Some("completed")), Some("completed"));
        assert_eq!(status_after_update("in-progress", Some("canceled")), None);
        assert_eq!(status_after_update("completed", Some("completed")), None);
        assert_eq!(status_after_update("ringing", None), None);
    }
}
