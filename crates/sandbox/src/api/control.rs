//! The control API (`/sandbox/…`, basic auth like the rest): the request
//! log, a state dump, simulated phones and callers, call summaries.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use twilio::E164;

use super::{ApiResult, Req, bad, method_not_allowed, ok};
use crate::Shared;
use crate::faults::Rule;
use crate::state::{Behaviour, Call};
use crate::voice;

pub(super) async fn route(shared: &Arc<Shared>, path: &str, segs: &[&str], req: &Req) -> ApiResult {
    let m = &req.method;
    match segs {
        ["log"] if m == Method::GET => {
            let since = req.query.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
            let limit = req.query.get("limit").and_then(|s| s.parse().ok()).unwrap_or(1000usize).clamp(1, 10_000);
            let (entries, next) = shared.log.since(since, limit);
            ok(json!({ "entries": entries, "next": next }))
        }
        ["state"] if m == Method::GET => ok(state_json(shared)),
        ["faults"] => match *m {
            Method::GET => ok(json!({ "rules": shared.faults.list(), "now_ms": shared.clock.now_ms() })),
            Method::POST => {
                let rules = parse_rules(&req.body)?;
                let ids = shared.faults.add(rules).map_err(|e| bad(20001, format!("fault rule is invalid: {e}")))?;
                super::created(json!({ "ids": ids }))
            }
            Method::DELETE => {
                shared.faults.remove(None);
                super::no_content()
            }
            _ => Err(method_not_allowed(m)),
        },
        ["faults", id] if m == Method::DELETE => {
            let id = id.parse().map_err(|_| super::not_found(path))?;
            if shared.faults.remove(Some(id)) { super::no_content() } else { Err(super::not_found(path)) }
        }
        ["limits"] => match *m {
            Method::GET => ok(shared.with(|st, _| json!({ "calls_per_second": st.calls_per_second }))),
            Method::PUT | Method::POST => {
                let l: Limits =
                    serde_json::from_slice(&req.body).map_err(|e| bad(20001, format!("limits are invalid: {e}")))?;
                if let Some(c) = l.calls_per_second
                    && !(c.is_finite() && c > 0.0)
                {
                    return Err(bad(20001, format!("calls_per_second {c} must be a positive number")));
                }
                shared.with(|st, _| st.calls_per_second = l.calls_per_second);
                ok(json!({ "calls_per_second": l.calls_per_second }))
            }
            _ => Err(method_not_allowed(m)),
        },
        ["phones"] if m == Method::GET => ok(shared.with(|st, _| json!(st.phones))),
        ["phones", number] => {
            // A path segment keeps '+' literal; only %XX escapes are decoded.
            let decoded = twilio::params::decode_component(number.replace('+', "%2B").as_bytes());
            let number = E164::parse(&decoded).map_err(|e| bad(21211, e.to_string()))?;
            match *m {
                Method::PUT | Method::POST => {
                    let b: Behaviour = serde_json::from_slice(&req.body)
                        .map_err(|e| bad(20001, format!("phone behaviour is invalid: {e}")))?;
                    shared.with(|st, _| st.phones.insert(number.as_str().to_owned(), b.clone()));
                    ok(json!({ "number": number.as_str(), "behaviour": b }))
                }
                Method::GET => ok(
                    json!({ "number": number.as_str(), "behaviour": shared.with(|st, _| st.behaviour(number.as_str())) }),
                ),
                Method::DELETE => {
                    shared.with(|st, _| st.phones.remove(number.as_str()));
                    super::no_content()
                }
                _ => Err(method_not_allowed(m)),
            }
        }
        ["calls"] if m == Method::POST => {
            let c: PlaceCall =
                serde_json::from_slice(&req.body).map_err(|e| bad(20001, format!("call request is invalid: {e}")))?;
            let sid = voice::api::place_inbound(shared, &c.from, &c.to, c.digits, c.patience_secs.unwrap_or(600))?;
            super::created(json!({ "call_sid": sid }))
        }
        ["calls", sid] if m == Method::GET => {
            let wait = req.query.get("wait_final_ms").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0).min(120_000);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
            loop {
                // Register interest before reading, so an end between the
                // read and the wait is not missed.
                let ended = (wait > 0).then(|| shared.on_call_end(sid));
                let summary = shared.with(|st, _| st.calls.get(sid).map(summary));
                let Some(summary) = summary else {
                    return Err(super::not_found(path));
                };
                let done = summary.get("final").and_then(Value::as_bool).unwrap_or(false);
                if done {
                    // Drop the registration just made: the call will not end again.
                    shared.call_ended(sid);
                }
                let Some(ended) = ended.filter(|_| !done && tokio::time::Instant::now() < deadline) else {
                    return ok(summary);
                };
                let mut stop = shared.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::timeout_at(deadline, ended) => {}
                    // Shutting down: answer now rather than hold up the graceful stop.
                    _ = crate::until_shutdown(&mut stop) => {
                        let latest = shared.with(|st, _| st.calls.get(sid).map(self::summary));
                        return latest.map_or_else(|| Err(super::not_found(path)), ok);
                    }
                }
            }
        }
        _ => Err(super::not_found(path)),
    }
}

/// A rule, or `{"rules": [...]}`.
fn parse_rules(body: &[u8]) -> Result<Vec<Rule>, twilio::ErrorBody> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Body {
        Many { rules: Vec<Value> },
        One(Value),
    }
    let invalid = |e: String| bad(20001, format!("fault rule is invalid: {e}"));
    let values = match serde_json::from_slice::<Body>(body).map_err(|e| invalid(e.to_string()))? {
        Body::Many { rules } => rules,
        Body::One(v) => vec![v],
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Rule::from_json(v).map_err(|e| invalid(format!("rules[{i}]: {e}"))))
        .collect()
}

#[derive(Deserialize)]
struct PlaceCall {
    from: String,
    to: String,
    #[serde(default)]
    digits: Option<String>,
    #[serde(default)]
    patience_secs: Option<u64>,
}

/// A call's summary for tests and the demo.
pub(crate) fn summary(c: &Call) -> Value {
    let talk_ms = match (c.bridge_start, c.bridge_end) {
        (Some(s), Some(e)) => Some(e.saturating_sub(s)),
        _ => None,
    };
    json!({
        "sid": c.sid,
        "final": c.is_final(),
        "status": c.status,
        "direction": c.direction,
        "from": c.from,
        "to": c.to,
        "answered_by": c.answered_by,
        "parent_call_sid": c.parent_call_sid,
        "linked_leg": c.linked_leg,
        "task_sid": c.task_sid,
        "reservation_sid": c.reservation_sid,
        "queue_result": c.queue_result,
        "enqueued_ms": c.enqueued,
        "queue_wait_ms": c.queue_time_ms,
        "bridge_start_ms": c.bridge_start,
        "bridge_end_ms": c.bridge_end,
        "talk_ms": talk_ms,
        "start_ms": c.start,
        "answered_ms": c.answered,
        "end_ms": c.end,
        "recording_url": c.recording_url,
        "error_code": c.error_code,
        "error_message": c.error_message,
        "timeline": c.timeline.iter().map(|(t, e)| json!({"at_ms": t, "event": e})).collect::<Vec<_>>(),
        "heard": c.heard.iter().map(heard_json).collect::<Vec<_>>(),
    })
}

fn state_json(shared: &Shared) -> Value {
    shared.with(|st, now| {
        json!({
            "now_ms": now,
            "account_sid": shared.config.account_sid.as_str(),
            "numbers": st.numbers.iter().map(|n| json!({"sid": n.sid, "phone_number": n.phone_number, "voice_url": n.voice_url, "friendly_name": n.friendly_name})).collect::<Vec<_>>(),
            "workspaces": st.workspaces.iter().map(|w| json!({"sid": w.sid, "friendly_name": w.friendly_name, "event_callback_url": w.event_callback_url, "events_filter": w.events_filter, "pending_tasks": w.pending})).collect::<Vec<_>>(),
            "activities": st.activities.iter().map(|a| json!({"sid": a.sid, "workspace_sid": a.workspace_sid, "friendly_name": a.friendly_name, "available": a.available})).collect::<Vec<_>>(),
            "queues": st.queues.iter().map(|q| json!({"sid": q.sid, "workspace_sid": q.workspace_sid, "friendly_name": q.friendly_name, "target_workers": q.target_workers})).collect::<Vec<_>>(),
            "workflows": st.workflows.iter().map(|w| json!({"sid": w.sid, "workspace_sid": w.workspace_sid, "friendly_name": w.friendly_name, "configuration": w.configuration, "task_reservation_timeout": w.task_reservation_timeout})).collect::<Vec<_>>(),
            "workers": st.workers.iter().map(|w| json!({
                "sid": w.sid, "friendly_name": w.friendly_name, "attributes": w.attributes,
                "activity_sid": w.activity_sid,
                "activity_name": st.activities.get(&w.activity_sid).map(|a| a.friendly_name.clone()),
                "capacity": w.capacity, "in_use": w.in_use,
            })).collect::<Vec<_>>(),
            "tasks": st.tasks.iter().map(|t| json!({"sid": t.sid, "assignment_status": t.status.as_str(), "attributes": t.attributes, "queue_sid": t.queue_sid, "reason": t.reason, "reservation_sid": t.reservation_sid, "priority": t.priority})).collect::<Vec<_>>(),
            "reservations": st.reservations.iter().map(|r| json!({"sid": r.sid, "task_sid": r.task_sid, "worker_sid": r.worker_sid, "reservation_status": r.status.as_str()})).collect::<Vec<_>>(),
            "calls": st.calls.iter().map(summary).collect::<Vec<_>>(),
            "phones": st.phones,
        })
    })
}

/// `PUT /sandbox/limits`: the account's rate for calls created over the API
/// (`null`: no queue, the default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    calls_per_second: Option<f64>,
}

/// One entry of a summary's `heard`: a `<Say>` with its `language` and
/// `voice` (null when the TwiML gave none: Twilio's defaults), a `<Play>`
/// with its URL.
fn heard_json(h: &crate::state::Heard) -> serde_json::Value {
    let mut v = json!({"at_ms": h.at_ms, "verb": h.verb, "what": h.what});
    if h.verb == "say" {
        v["language"] = json!(h.language);
        v["voice"] = json!(h.voice);
    }
    v
}
