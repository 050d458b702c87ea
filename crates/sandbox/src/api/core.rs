//! The core (2010-04-01) API: IncomingPhoneNumbers and Calls.

use std::sync::Arc;

use axum::http::Method;
use serde_json::{Value, json};
use twilio::{E164, ErrorBody};

use super::{ApiResult, Req, bad, core_page, created, method_not_allowed, no_content, ok, paginate};
use crate::Shared;
use crate::clock::rfc2822;
use crate::state::{Call, PhoneNumber, State};
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
            Method::POST => voice::api::update_call(shared, sid, req).await,
            Method::DELETE => {
                let removed = shared
                    .with(|st, _| st.calls.get(sid).is_some_and(Call::is_final) && st.calls.remove(sid).is_some());
                if removed { no_content() } else { Err(super::not_found(path)) }
            }
            _ => Err(method_not_allowed(m)),
        },
        ["Calls", sid, "Recordings"] if m == Method::GET => {
            let items = shared.with(|st, _| {
                st.recordings
                    .iter()
                    .filter(|r| r.call_sid == *sid)
                    .map(|r| recording_json(shared, st, r))
                    .collect::<Vec<_>>()
            });
            let (items, page, size, more) = paginate(req, items);
            ok(core_page(req, path, "recordings", items, page, size, more))
        }
        ["Recordings", sid] if m == Method::GET => {
            let v = shared.with(|st, _| st.recordings.get(sid).map(|r| recording_json(shared, st, r)));
            v.map_or_else(|| Err(super::not_found(path)), ok)
        }
        [x] if matches!(*x, "IncomingPhoneNumbers" | "Calls") => Err(method_not_allowed(m)),
        _ => Err(super::not_found(path)),
    }
}

fn account_path(shared: &Shared, rest: &str) -> String {
    format!("/2010-04-01/Accounts/{}/{rest}", shared.config.account_sid)
}

fn number_json(shared: &Shared, n: &PhoneNumber) -> Value {
    json!({
        "account_sid": shared.config.account_sid.as_str(),
        "sid": n.sid,
        "phone_number": n.phone_number,
        "friendly_name": n.friendly_name,
        "voice_url": n.voice_url,
        "voice_method": n.voice_method,
        "voice_fallback_url": n.voice_fallback_url,
        "voice_fallback_method": n.voice_fallback_method,
        "voice_caller_id_lookup": false,
        "voice_application_sid": null,
        "voice_receive_mode": "voice",
        "status_callback": n.status_callback.clone().unwrap_or_default(),
        "status_callback_method": n.status_callback_method,
        "sms_url": null,
        "sms_method": "POST",
        "api_version": "2010-04-01",
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
    let items = shared.with(|st, _| {
        st.numbers
            .iter()
            .filter(|n| want.as_deref().is_none_or(|w| n.phone_number.contains(w.trim_start_matches('+'))))
            .filter(|n| name.is_none_or(|f| n.friendly_name == f))
            .map(|n| number_json(shared, n))
            .collect::<Vec<_>>()
    });
    let (items, page, size, more) = paginate(req, items);
    ok(core_page(req, path, "incoming_phone_numbers", items, page, size, more))
}

fn check_urls(req: &Req) -> Result<(), ErrorBody> {
    for key in ["VoiceUrl", "StatusCallback", "VoiceFallbackUrl"] {
        if let Some(u) = req.get(key)
            && !u.is_empty()
            && !super::valid_url(u)
        {
            return Err(bad(21502, format!("{key} is not a valid URL: {u}")));
        }
    }
    for key in ["VoiceMethod", "VoiceFallbackMethod", "StatusCallbackMethod"] {
        if let Some(m) = req.get(key)
            && !m.eq_ignore_ascii_case("GET")
            && !m.eq_ignore_ascii_case("POST")
        {
            return Err(bad(21503, format!("{key} must be GET or POST")));
        }
    }
    Ok(())
}

fn apply_number(req: &Req, n: &mut PhoneNumber, now: u64) {
    if let Some(v) = req.get("FriendlyName") {
        n.friendly_name = v.into();
    }
    if let Some(v) = req.get("VoiceUrl") {
        n.voice_url = (!v.is_empty()).then(|| v.to_owned());
    }
    if let Some(v) = req.get("VoiceFallbackUrl") {
        n.voice_fallback_url = (!v.is_empty()).then(|| v.to_owned());
    }
    if let Some(v) = req.get("VoiceFallbackMethod") {
        n.voice_fallback_method = v.to_ascii_uppercase();
    }
    if let Some(v) = req.get("VoiceMethod") {
        n.voice_method = v.to_ascii_uppercase();
    }
    if let Some(v) = req.get("StatusCallback") {
        n.status_callback = (!v.is_empty()).then(|| v.to_owned());
    }
    if let Some(v) = req.get("StatusCallbackMethod") {
        n.status_callback_method = v.to_ascii_uppercase();
    }
    n.updated = now;
}

fn create_number(shared: &Shared, req: &Req) -> ApiResult {
    let raw = req
        .get("PhoneNumber")
        .ok_or_else(|| bad(21452, "Missing required parameter PhoneNumber (or AreaCode) in the post body"))?;
    let number = E164::parse(raw).map_err(|_| bad(21421, format!("PhoneNumber {raw} is invalid")))?;
    check_urls(req)?;
    shared.with(|st, now| {
        if st.number_by_e164.contains_key(number.as_str()) {
            return Err(bad(21422, format!("PhoneNumber {number} is not available")));
        }
        let sid = st.sid("PN");
        let mut n = PhoneNumber {
            sid: sid.clone(),
            phone_number: number.as_str().into(),
            friendly_name: pretty(number.as_str()),
            voice_url: None,
            voice_method: "POST".into(),
            voice_fallback_url: None,
            voice_fallback_method: "POST".into(),
            status_callback: None,
            status_callback_method: "POST".into(),
            created: now,
            updated: now,
        };
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
        check_urls(req)?;
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
        "subresource_uris": {
            "recordings": account_path(shared, &format!("Calls/{}/Recordings.json", c.sid)),
        },
    })
}

fn recording_json(shared: &Shared, st: &State, r: &crate::state::Recording) -> Value {
    let _ = st;
    json!({
        "sid": r.sid,
        "account_sid": shared.config.account_sid.as_str(),
        "call_sid": r.call_sid,
        "duration": r.duration_secs.to_string(),
        "status": "completed",
        "source": "RecordVerb",
        "channels": 1,
        "api_version": "2010-04-01",
        "date_created": rfc2822(shared.clock.wall(r.created)),
        "uri": account_path(shared, &format!("Recordings/{}.json", r.sid)),
    })
}

fn list_calls(shared: &Shared, path: &str, req: &Req) -> ApiResult {
    let q = &req.query;
    let items = shared.with(|st, _| {
        st.calls
            .iter()
            .filter(|c| q.get("To").is_none_or(|v| c.to == v))
            .filter(|c| q.get("From").is_none_or(|v| c.from == v))
            .filter(|c| q.get("Status").is_none_or(|v| c.status == v))
            .filter(|c| q.get("ParentCallSid").is_none_or(|v| c.parent_call_sid.as_deref() == Some(v)))
            .map(|c| call_json(shared, c))
            .collect::<Vec<_>>()
    });
    // Twilio lists the newest calls first.
    let mut items = items;
    items.reverse();
    let (items, page, size, more) = paginate(req, items);
    ok(core_page(req, path, "calls", items, page, size, more))
}
