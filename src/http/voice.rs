//! Voice webhooks: the caller's leg (incoming call, menu, hold, queue exit,
//! voicemail) and the location's leg (dial-queue, status callbacks).

use axum::extract::State;
use jiff::Timestamp;

use super::{AppState, TwiML, TwilioRequest, WebhookError};
use crate::config::AnsweredByPolicy;
use crate::domain::{Location, Outcome};
use crate::ivr::{self, Caller, Choice, Routed};
use crate::outbox::Action;
use crate::store::StatusRecord;

fn param_sid<'a>(req: &'a TwilioRequest, key: &str) -> Result<&'a str, WebhookError> {
    let v = req.require(key)?;
    if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(WebhookError::BadRequest(format!("{key} {v:?} is not a SID")));
    }
    Ok(v)
}

/// The phone number's voice URL: greet, check hours, offer a menu or enqueue.
pub(super) async fn incoming_call(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call_sid = param_sid(&req, "CallSid")?;
    let to = req.require("To")?;
    let from = req.get("From").unwrap_or("anonymous");
    let store = state.store();
    store.record_inbound_call(call_sid, from, to).await?;
    let locations = store.locations_for_number(to).await?;
    let settings = state.settings();
    match locations.as_slice() {
        [] => {
            tracing::warn!(to, "call to a number that serves no location");
            store.settle_outcome(call_sid, Outcome::NotInService).await?;
            Ok(TwiML(ivr::not_in_service(settings)))
        }
        [only] => route_to(&state, &req, call_sid, only, true).await,
        several => Ok(TwiML(ivr::menu(settings, &state.urls(), several, 0))),
    }
}

/// The menu's `Gather` action (and its no-input redirect).
pub(super) async fn menu(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call_sid = param_sid(&req, "CallSid")?;
    let to = req.require("To")?;
    let attempt: u32 = req.query.get("attempt").and_then(|a| a.parse().ok()).unwrap_or(0).min(10);
    let locations = state.store().locations_for_number(to).await?;
    if locations.is_empty() {
        state.store().settle_outcome(call_sid, Outcome::NotInService).await?;
        return Ok(TwiML(ivr::not_in_service(state.settings())));
    }
    let digits = req.params.get("Digits");
    match ivr::choose(&locations, digits, attempt, state.settings().ivr.menu_attempts) {
        Choice::Location(i) => route_to(&state, &req, call_sid, &locations[i], false).await,
        Choice::Retry { attempt } => Ok(TwiML(ivr::menu(state.settings(), &state.urls(), &locations, attempt))),
    }
}

async fn route_to(
    state: &AppState,
    req: &TwilioRequest,
    call_sid: &str,
    location: &Location,
    greet: bool,
) -> Result<TwiML, WebhookError> {
    let store = state.store();
    store.set_call_location(call_sid, &location.name).await?;
    let Some(workflow) = state.workflow_sid().await? else {
        // Not provisioned yet. A 503 would make Twilio play its "application error" to the
        // caller; voicemail still works without TaskRouter, so offer that.
        tracing::error!(location = %location.name, "no workflow SID: run `call-router provision`; caller offered voicemail");
        store.settle_outcome(call_sid, Outcome::DialFailed).await?;
        let msg = "Sorry, we cannot connect your call right now.";
        return Ok(TwiML(ivr::voicemail(state.settings(), &state.urls(), &location.name, msg)));
    };
    let caller = Caller { number: req.get("From").unwrap_or("anonymous"), call_token: req.get("CallToken") };
    let (twiml, routed) =
        ivr::route(state.settings(), &state.urls(), workflow.as_str(), location, &caller, Timestamp::now(), greet);
    if routed == Routed::Closed {
        store.settle_outcome(call_sid, Outcome::AfterHours).await?;
    }
    tracing::info!(location = %location.name, ?routed, "caller routed");
    Ok(TwiML(twiml))
}

/// The queue's `waitUrl`: hold music, until the caller has waited too long.
pub(super) async fn hold(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let waited: u32 = req.get("QueueTime").and_then(|t| t.parse().ok()).unwrap_or(0);
    let settings = state.settings();
    if waited >= settings.ivr.max_queue_secs {
        if let Some(call_sid) = req.get("CallSid") {
            // The queue exit (QueueResult=leave) offers voicemail; cancel
            // the task so no location is dialled for a caller who left.
            let mut actions = Vec::new();
            if let Some(call) = state.store().call(call_sid).await?
                && let Some(task) = call.task_sid
            {
                actions.push(Action::CancelTask { task_sid: task, reason: "caller waited too long".into() });
            }
            if state.store().settle_and_stop_location(call_sid, Outcome::QueueTimeout, &actions).await? {
                state.notifier().notify();
            }
        }
        return Ok(TwiML(twilio::twiml::Response::new().verb(twilio::twiml::Verb::Leave)));
    }
    Ok(TwiML(ivr::hold(settings)))
}

/// The `Enqueue` action: the caller's leg left the queue.
pub(super) async fn enqueue_action(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call_sid = param_sid(&req, "CallSid")?;
    let result = req.get("QueueResult").unwrap_or("error");
    let store = state.store();
    store.record_event("voice", &format!("queue.{result}"), Some(call_sid), &req.to_json()).await?;
    let settings = state.settings();
    match result {
        "bridged" => {
            store.settle_outcome(call_sid, Outcome::Connected).await?;
            Ok(TwiML(ivr::goodbye(settings)))
        }
        // `bridging-in-process`: the caller hung up just as the location was being connected.
        "hangup" | "bridging-in-process" => {
            // The caller is gone. If the location's phone is still ringing,
            // stop it; TaskRouter cancels the task itself.
            if store.settle_and_stop_location(call_sid, Outcome::CallerHungUp, &[]).await? {
                state.notifier().notify();
            }
            Ok(TwiML(ivr::empty()))
        }
        other => {
            // leave, redirected, queue-full, error, system-error: the caller
            // is still on the line and gets voicemail.
            let location = location_of(&state, &req).await?;
            let outcome = match store.call(call_sid).await? {
                Some(c) if c.outcome.is_final() => c.outcome,
                _ => {
                    tracing::warn!(queue_result = other, "caller left the queue unexpectedly");
                    if store.settle_and_stop_location(call_sid, Outcome::DialFailed, &[]).await? {
                        state.notifier().notify();
                    }
                    Outcome::DialFailed
                }
            };
            Ok(TwiML(match location {
                Some(l) => ivr::fallback(settings, &state.urls(), &l, outcome),
                None => ivr::voicemail(settings, &state.urls(), "", "Sorry, we could not connect your call."),
            }))
        }
    }
}

async fn location_of(state: &AppState, req: &TwilioRequest) -> Result<Option<Location>, WebhookError> {
    match req.query.get("location") {
        Some(name) => Ok(state.store().location(name).await?),
        None => Ok(None),
    }
}

/// Where the caller is redirected after a failed attempt to reach the location.
pub(super) async fn caller_fallback(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let reason = req.query.get("reason").and_then(Outcome::parse).unwrap_or(Outcome::DialFailed);
    let settings = state.settings();
    Ok(TwiML(match location_of(&state, &req).await? {
        Some(l) => ivr::fallback(settings, &state.urls(), &l, reason),
        None => ivr::voicemail(settings, &state.urls(), "", "Sorry, we could not connect your call."),
    }))
}

/// The `Record` action: keep the recording's URL and say goodbye.
pub(super) async fn voicemail_complete(
    State(state): State<AppState>,
    req: TwilioRequest,
) -> Result<TwiML, WebhookError> {
    let call_sid = param_sid(&req, "CallSid")?;
    if let Some(url) = req.get("RecordingUrl") {
        state.store().set_recording(call_sid, url).await?;
        tracing::info!(recording_url = url, "voicemail recorded");
    }
    Ok(TwiML(ivr::goodbye(state.settings())))
}

/// The outbound leg's answer URL: bridge a person, apply the policy to
/// machines.
pub(super) async fn dial_queue(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let reservation = param_sid(&req, "reservationSid")?;
    tracing::Span::current().record("reservation_sid", reservation);
    let answered_by = req.params.get("AnsweredBy").unwrap_or("human");
    let policy = match answered_by {
        "human" => AnsweredByPolicy::Bridge,
        "unknown" => state.settings().dialing.on_unknown,
        _ => state.settings().dialing.on_machine,
    };
    if policy == AnsweredByPolicy::Bridge {
        // The caller may have hung up, or been sent to voicemail, while this phone rang:
        // bridging would connect the location to nobody.
        if let Some(inbound) = req.query.get("callSid")
            && let Some(call) = state.store().call(inbound).await?
            && call.outcome.is_final()
            && call.outcome != Outcome::Connected
        {
            tracing::info!(outcome = %call.outcome, "the caller is gone; not bridging the location");
            return Ok(TwiML(ivr::caller_gone(state.settings())));
        }
        return Ok(TwiML(ivr::dial_queue(reservation)));
    }
    // Leave the location's machine alone and give the caller voicemail here.
    if let Some(inbound) = req.query.get("callSid") {
        let mut actions = vec![redirect_caller(&state, inbound, req.query.get("location"), Outcome::LocationVoicemail)];
        if let Some(task) = req.query.get("taskSid") {
            actions
                .push(Action::CancelTask { task_sid: task.to_owned(), reason: format!("answered by {answered_by}") });
        }
        if state.store().settle_with_actions(inbound, Outcome::LocationVoicemail, &actions).await? {
            state.notifier().notify();
        }
    }
    tracing::info!(answered_by, "not bridging a machine");
    Ok(TwiML(ivr::hangup()))
}

fn redirect_caller(state: &AppState, inbound: &str, location: Option<&str>, reason: Outcome) -> Action {
    let url =
        state.urls().url("/caller-fallback", &[("location", location.unwrap_or("")), ("reason", reason.as_str())]);
    Action::RedirectCaller { call_sid: inbound.to_owned(), url }
}

/// The number's own status callback reports the caller's leg. When it ends before any
/// reservation was linked to it (the caller hung up during the greeting or at the menu, or
/// while queued), nothing else will settle it, so this does. A call with a reservation is
/// settled by the queue exit and TaskRouter's events instead: a `completed` that overtakes
/// the `bridged` queue exit must not turn a connected call into a hang-up.
async fn settle_caller_gone_before_queue(state: &AppState, call_sid: &str, status: &str) -> Result<(), WebhookError> {
    if !matches!(status, "completed" | "canceled" | "failed" | "busy" | "no-answer") {
        return Ok(());
    }
    let Some(call) = state.store().call(call_sid).await? else {
        return Ok(());
    };
    if call.task_sid.is_none() && !call.outcome.is_final() {
        state.store().settle_outcome(call_sid, Outcome::CallerHungUp).await?;
        tracing::info!(status, "the caller hung up before reaching a location");
    }
    Ok(())
}

/// Every status of the outbound leg is recorded; a failed attempt sends the
/// caller to voicemail and cancels the task. Statuses of the caller's own leg
/// (no `callSid` in the query) are recorded too, and may settle a hang-up.
pub(super) async fn status_callback(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call_sid = param_sid(&req, "CallSid")?;
    let status = req.require("CallStatus")?;
    let num = |k: &str| req.params.get(k).and_then(|v| v.parse::<i64>().ok());
    let inbound = req.query.get("callSid").map(str::to_owned);
    let record = StatusRecord {
        call_sid: call_sid.to_owned(),
        inbound_call_sid: inbound.clone(),
        status: status.to_owned(),
        sequence_number: num("SequenceNumber"),
        call_duration: num("CallDuration"),
        answered_by: req.params.get("AnsweredBy").map(str::to_owned),
        sip_response_code: num("SipResponseCode"),
    };
    state.store().record_status(&record).await?;
    if inbound.is_none() {
        settle_caller_gone_before_queue(&state, call_sid, status).await?;
        return Ok(TwiML(ivr::empty()));
    }
    let outcome = match status {
        "busy" => Some(Outcome::LocationBusy),
        "no-answer" => Some(Outcome::LocationNoAnswer),
        "failed" => Some(Outcome::DialFailed),
        _ => None,
    };
    if let (Some(outcome), Some(inbound)) = (outcome, inbound) {
        let mut actions = vec![redirect_caller(&state, &inbound, req.query.get("location"), outcome)];
        if let Some(task) = req.query.get("taskSid") {
            actions.push(Action::CancelTask { task_sid: task.to_owned(), reason: format!("location {status}") });
        }
        if state.store().settle_with_actions(&inbound, outcome, &actions).await? {
            tracing::info!(%outcome, "location not reached; caller offered voicemail");
            state.notifier().notify();
        }
    }
    Ok(TwiML(ivr::empty()))
}
