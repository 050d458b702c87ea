//! The TaskRouter workspace's event callback.
//!
//! Every event the journey hears becomes a journey event, delivered with
//! its audit row in one transaction (`reservation.created`'s dial intent
//! included) before the 204. It never waits on Twilio's API, and a crash
//! after the answer loses nothing. Other events are kept for audit only.

use axum::extract::State;
use axum::http::StatusCode;
use twilio::sid::{ReservationSid, TaskSid};

use super::voice::{deliver, sid_param};
use super::{AppState, TwilioRequest, WebhookError};
use crate::domain::TaskAttributes;
use crate::journey::{DialTarget, Event, ReservationEnd};
use crate::store::Delivery;

pub(super) async fn tr_event_handler(
    State(state): State<AppState>,
    req: TwilioRequest,
) -> Result<StatusCode, WebhookError> {
    let event_type = req.require("EventType")?.to_owned();
    let workspace = req.require("WorkspaceSid")?;
    let ours = match state.workspace_sid().await? {
        Some(ours) if ours.as_str() != workspace => state.workspace_sid_fresh().await?,
        cached => cached,
    };
    match ours {
        Some(ours) if ours.as_str() == workspace => {}
        Some(_) => {
            return Err(WebhookError::Forbidden(format!("WorkspaceSid {workspace} is not this server's workspace")));
        }
        None => {
            return Err(WebhookError::NotReady("no workspace SID: run `call-router provision` first".into()));
        }
    }
    let payload = req.to_json();
    let Some(event) = journey_event(&event_type, &req)? else {
        state.store().record_event("taskrouter", &event_type, req.get("ResourceSid"), &payload).await?;
        return Ok(StatusCode::NO_CONTENT);
    };
    // The SIDs that find the journey: the reservation, the task, and the
    // caller's call named in the task's attributes (added by `<Enqueue>`).
    let mut keys: Vec<String> =
        ["ReservationSid", "TaskSid"].iter().filter_map(|k| req.get(k)).map(str::to_owned).collect();
    if let Some(call) = attributes(&req).ok().flatten().and_then(|a| a.call_sid) {
        tracing::Span::current().record("call_sid", call.as_str());
        keys.push(call.to_string());
    }
    let resource = req.get("ResourceSid").or_else(|| req.get("TaskSid"));
    let d =
        Delivery::to_keys(keys, vec![event], state.policy()).with_audit("taskrouter", &event_type, resource, payload);
    let done = deliver(&state, d).await?;
    if event_type == "reservation.created" && done.queued == 0 {
        tracing::info!(outcome = %done.outcome, "reservation.created owes no dial (a repeat, or the reservation or the caller is done)");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The task's attributes, when the event carries them.
fn attributes(req: &TwilioRequest) -> Result<Option<TaskAttributes>, WebhookError> {
    req.get("TaskAttributes")
        .map(|raw| {
            serde_json::from_str(raw)
                .map_err(|e| WebhookError::BadRequest(format!("TaskAttributes is not valid task JSON: {e}")))
        })
        .transpose()
}

/// The `location` attribute of the reserved worker (`WorkerAttributes`).
fn worker_location(req: &TwilioRequest) -> Option<String> {
    let attrs: serde_json::Value = serde_json::from_str(req.get("WorkerAttributes")?).ok()?;
    attrs.get("location")?.as_str().map(str::to_owned)
}

/// The journey's event for a TaskRouter event; None for one it does not hear.
fn journey_event(event_type: &str, req: &TwilioRequest) -> Result<Option<Event>, WebhookError> {
    let task = || sid_param::<TaskSid>(req, "TaskSid");
    let reservation = || sid_param::<ReservationSid>(req, "ReservationSid");
    let ended = |why| -> Result<Option<Event>, WebhookError> {
        Ok(Some(Event::ReservationEnded { task: task()?, reservation: reservation()?, why }))
    };
    Ok(Some(match event_type {
        "reservation.created" => {
            let attrs =
                attributes(req)?.ok_or_else(|| WebhookError::BadRequest("missing parameter TaskAttributes".into()))?;
            Event::ReservationCreated {
                task: task()?,
                reservation: reservation()?,
                caller: attrs.call_sid.clone(),
                target: DialTarget::for_worker(&attrs, worker_location(req).as_deref()),
            }
        }
        "reservation.accepted" => Event::ReservationAccepted { task: task()?, reservation: reservation()? },
        "reservation.timeout" => return ended(ReservationEnd::Timeout),
        "reservation.canceled" => return ended(ReservationEnd::Canceled),
        "reservation.rescinded" => return ended(ReservationEnd::Rescinded),
        "reservation.rejected" => return ended(ReservationEnd::Rejected),
        "reservation.completed" => Event::ReservationCompleted { task: task()?, reservation: reservation()? },
        "reservation.wrapup" => Event::Wrapup { task: task()?, reservation: Some(reservation()?) },
        "task.wrapup" => Event::Wrapup { task: task()?, reservation: None },
        "task.canceled" => Event::TaskCanceled { task: task()? },
        "task.completed" => Event::TaskCompleted { task: task()? },
        _ => return Ok(None),
    }))
}
