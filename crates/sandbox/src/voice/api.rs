//! The Calls resource's create and update, and simulated inbound calls: the
//! checks Twilio makes, then a leg task.

use std::sync::Arc;

use tokio::sync::mpsc;
use twilio::{E164, ErrorBody, Params};

use super::Source;
use super::leg::{Leg, Outbound, StatusCb, new_call};
use super::phone;
use crate::api::{ApiResult, Req, bad, valid_url};
use crate::{LegCmd, Shared};

const EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

fn method(name: &str, v: Option<&str>) -> Result<String, ErrorBody> {
    match v.map(str::to_ascii_uppercase) {
        None => Ok("POST".into()),
        Some(m) if m == "GET" || m == "POST" => Ok(m),
        Some(m) => Err(bad(21603, format!("{name} {m:?} must be GET or POST"))),
    }
}

fn base_params(shared: &Shared, sid: &str, from: &str, to: &str, direction: &str) -> Params {
    let mut p = Params::new();
    p.push("AccountSid", shared.config.account_sid.as_str())
        .push("ApiVersion", "2010-04-01")
        .push("CallSid", sid)
        .push("From", from)
        .push("Caller", from)
        .push("To", to)
        .push("Called", to)
        .push("Direction", direction);
    p
}

fn spawn_leg(shared: &Arc<Shared>, sid: &str, base: Params, doc_url: String, cb: Option<StatusCb>) -> Leg {
    let (tx, rx) = mpsc::unbounded_channel();
    shared.legs.lock().unwrap_or_else(|e| e.into_inner()).insert(sid.to_owned(), tx);
    Leg {
        sh: shared.clone(),
        sid: sid.to_owned(),
        rx,
        base,
        doc_url,
        inputs: Default::default(),
        hangup_at: None,
        talk_secs: None,
        cb,
        cb_tx: None,
        seq: 0,
        status: "queued",
        in_queue: false,
        documents: 0,
        fallback: None,
    }
}

/// `POST Calls.json`.
pub(crate) fn create_call(shared: &Arc<Shared>, req: &Req) -> ApiResult {
    let to = req.get("To").ok_or_else(|| bad(21201, "No 'To' number is specified"))?;
    let to = E164::parse(to).map_err(|_| bad(21211, format!("Invalid 'To' Phone Number: {to}")))?;
    let from = req.get("From").ok_or_else(|| bad(21213, "No 'From' number is specified"))?;
    let from = E164::parse(from).map_err(|_| bad(21212, format!("Invalid 'From' Phone Number: {from}")))?;
    let call_token = req.get("CallToken").filter(|t| !t.is_empty());
    let (first, doc_url) = match (req.get("Twiml"), req.get("Url")) {
        (Some(t), _) => (Source::Twiml(t.to_owned()), String::new()),
        (None, Some(u)) if valid_url(u) => {
            (Source::Url { url: u.to_owned(), method: method("Method", req.get("Method"))? }, u.to_owned())
        }
        (None, Some(u)) => return Err(bad(21205, format!("Url is not a valid URL: {u}"))),
        (None, None) => return Err(bad(21205, "Either Url, Twiml or ApplicationSid is required")),
    };
    let cb = match req.get("StatusCallback").filter(|u| !u.is_empty()) {
        Some(u) if !valid_url(u) => return Err(bad(21609, format!("StatusCallback is not a valid URL: {u}"))),
        Some(u) => {
            let mut events: Vec<String> = req
                .form
                .get_all("StatusCallbackEvent")
                .flat_map(|e| e.split([' ', ',']))
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad_ev) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(bad(21626, format!("StatusCallbackEvent {bad_ev:?} is invalid")));
            }
            if events.is_empty() {
                events.push("completed".into());
            }
            Some(StatusCb {
                url: u.to_owned(),
                method: method("StatusCallbackMethod", req.get("StatusCallbackMethod"))?,
                events,
            })
        }
        None => None,
    };
    let machine_detection = match req.get("MachineDetection") {
        None => None,
        Some(m @ ("Enable" | "DetectMessageEnd")) => Some(m.to_owned()),
        Some(m) => return Err(bad(21626, format!("MachineDetection {m:?} must be Enable or DetectMessageEnd"))),
    };
    let num = |k: &str| crate::api::parse_num::<u64>(k, req.get(k));
    let timeout_secs = num("Timeout")?.unwrap_or(60).clamp(1, 600);
    let amd_timeout_secs = num("MachineDetectionTimeout")?.unwrap_or(30).clamp(3, 59);
    num("MachineDetectionSpeechThreshold")?;
    let (sid, json, dial_at) = shared.with(|st, now| {
        let owned = st.number_by_e164.get(from.as_str()).cloned();
        if owned.is_none() && call_token.is_none() {
            return Err(bad(21212, format!("'From' {from} is not a number of this account (or give a CallToken)")));
        }
        let sid = st.sid("CA");
        let mut c = new_call(&sid, from.as_str(), to.as_str(), "outbound-api", now);
        c.phone_number_sid = owned;
        let json = crate::api::call_json(shared, &c);
        st.calls.insert(sid.clone(), c);
        Ok((sid, json, st.dial_slot(now)))
    })?;
    let base = base_params(shared, &sid, from.as_str(), to.as_str(), "outbound-api");
    let leg = spawn_leg(shared, &sid, base, doc_url, cb);
    supervise(
        shared,
        &sid,
        tokio::spawn(leg.run_outbound(Outbound { dial_at, first, timeout_secs, machine_detection, amd_timeout_secs })),
    );
    crate::api::created_json(json)
}

/// `POST Calls/{sid}.json`: hang up, cancel or redirect a live call.
pub(crate) async fn update_call(shared: &Arc<Shared>, sid: &str, req: &Req) -> ApiResult {
    let status = shared
        .with(|st, _| st.calls.get(sid).map(|c| c.status.clone()))
        .ok_or_else(|| crate::api::not_found(&format!("Call {sid}")))?;
    let live = !matches!(status.as_str(), "completed" | "busy" | "failed" | "no-answer" | "canceled");
    let early = matches!(status.as_str(), "queued" | "ringing");
    let cmd = match (req.get("Status"), req.get("Twiml"), req.get("Url")) {
        (Some("canceled"), _, _) => early.then_some(LegCmd::Hangup { status: "canceled" }),
        (Some("completed"), _, _) => Some(LegCmd::Hangup { status: if early { "canceled" } else { "completed" } }),
        (Some(s), _, _) => return Err(bad(21218, format!("Status {s:?} must be canceled or completed"))),
        (None, Some(t), _) => Some(LegCmd::Redirect(Source::Twiml(t.to_owned()))),
        (None, None, Some(u)) if valid_url(u) => {
            Some(LegCmd::Redirect(Source::Url { url: u.to_owned(), method: method("Method", req.get("Method"))? }))
        }
        (None, None, Some(u)) => return Err(bad(21205, format!("Url is not a valid URL: {u}"))),
        (None, None, None) => None,
    };
    if let Some(cmd) = cmd {
        if !live {
            return Err(bad(21220, "Call is not in-progress. Cannot redirect."));
        }
        let sent =
            shared.legs.lock().unwrap_or_else(|e| e.into_inner()).get(sid).is_some_and(|tx| tx.send(cmd).is_ok());
        if !sent {
            return Err(bad(21220, "Call is not in-progress. Cannot redirect."));
        }
    }
    let json = shared.with(|st, _| st.calls.get(sid).map(|c| crate::api::call_json(shared, c)));
    json.map_or_else(|| Err(crate::api::not_found(sid)), crate::api::ok)
}

/// A simulated caller dials a Twilio number (the control API's `POST /sandbox/calls`).
pub(crate) fn place_inbound(
    shared: &Arc<Shared>,
    from: &str,
    to: &str,
    digits: Option<String>,
    patience_secs: u64,
) -> Result<String, ErrorBody> {
    let from = E164::parse(from).map_err(|_| bad(21212, format!("Invalid 'from' number: {from}")))?;
    let to = E164::parse(to).map_err(|_| bad(21211, format!("Invalid 'to' number: {to}")))?;
    let (sid, url, method, number_sid, token, fallback) = shared.with(|st, now| {
        let pn =
            st.number_by_e164.get(to.as_str()).and_then(|s| st.numbers.get(s)).cloned().ok_or_else(|| {
                ErrorBody::new(404, 20404, format!("{to} is not an IncomingPhoneNumber of this account"))
            })?;
        let url = pn.voice_url.clone().ok_or_else(|| bad(21614, format!("{to} has no VoiceUrl")))?;
        let sid = st.sid("CA");
        let token = format!("sandbox-call-token-{}", st.sid("CT"));
        let mut c = new_call(&sid, from.as_str(), to.as_str(), "inbound", now);
        c.status = "ringing".into();
        c.phone_number_sid = Some(pn.sid.clone());
        st.calls.insert(sid.clone(), c);
        let cb = pn.status_callback.clone().map(|u| (u, pn.status_callback_method.clone()));
        let fallback = pn.voice_fallback_url.clone().map(|u| (u, pn.voice_fallback_method.clone()));
        Ok((sid, url, pn.voice_method.clone(), cb, token, fallback))
    })?;
    let mut base = base_params(shared, &sid, from.as_str(), to.as_str(), "inbound");
    base.push("CallToken", token);
    let cb = number_sid.map(|(url, method)| StatusCb { url, method, events: vec!["completed".into()] });
    let mut leg = spawn_leg(shared, &sid, base, url.clone(), cb);
    leg.inputs = phone::gather_inputs(digits.as_deref());
    leg.fallback = fallback;
    leg.hangup_at = Some(shared.clock.now_ms().saturating_add(patience_secs.saturating_mul(1000)));
    supervise(shared, &sid, tokio::spawn(leg.run_inbound(url, method)));
    Ok(sid)
}

/// Watches a leg's task: should it ever panic, the call still ends (failed,
/// with the error recorded) and its waiters wake, so nothing hangs on it.
fn supervise(shared: &Arc<Shared>, sid: &str, leg: tokio::task::JoinHandle<()>) {
    let (shared, sid) = (shared.clone(), sid.to_owned());
    tokio::spawn(async move {
        if leg.await.is_err() {
            tracing::error!(call_sid = %sid, "a call leg panicked; the call is marked failed");
            shared.legs.lock().unwrap_or_else(|e| e.into_inner()).remove(&sid);
            shared.with(|st, now| {
                if let Some(c) = st.calls.get_mut(&sid).filter(|c| !c.is_final()) {
                    c.status = "failed".into();
                    c.end = Some(now);
                    c.error_message = Some("internal sandbox error".into());
                    c.note(now, "leg panicked");
                }
            });
            shared.call_ended(&sid);
        }
    });
}
