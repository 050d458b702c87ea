//! The TaskRouter workspace's event callback.
//!
//! `reservation.created` is the hot path: it checks the event, then records
//! the event, the call's task and reservation, and the intent to dial in one
//! transaction, wakes the dispatcher and answers 204. It never waits on
//! Twilio's API, and a crash after the answer loses nothing.

use axum::extract::State;
use axum::http::StatusCode;

use super::{AppState, TwilioRequest, WebhookError};
use crate::domain::{Outcome, TaskAttributes};
use crate::outbox::{Action, Dial};

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
    let store = state.store();
    let payload = req.to_json();
    match event_type.as_str() {
        "reservation.created" => {
            let task_sid = sid(&req, "TaskSid")?;
            let reservation_sid = sid(&req, "ReservationSid")?;
            let raw = req.require("TaskAttributes")?;
            let attrs: TaskAttributes = serde_json::from_str(raw)
                .map_err(|e| WebhookError::BadRequest(format!("TaskAttributes is not valid task JSON: {e}")))?;
            let inbound = attrs.call_sid.as_ref().map(|c| c.as_str().to_owned());
            if let Some(c) = &inbound {
                tracing::Span::current().record("call_sid", c.as_str());
            }
            let dial = Action::Dial(Dial {
                reservation_sid: reservation_sid.to_owned(),
                task_sid: task_sid.to_owned(),
                inbound_call_sid: inbound.clone(),
                location: attrs.location,
                to: attrs.practice_phone,
                from: attrs.caller_id,
                call_token: attrs.call_token,
            });
            let fresh =
                store.record_reservation(&payload, inbound.as_deref(), task_sid, reservation_sid, &dial).await?;
            if fresh {
                state.notifier().notify();
            } else {
                tracing::info!("repeated reservation.created ignored: this reservation is already being dialled");
            }
        }
        "reservation.wrapup" | "task.wrapup" => {
            let task_sid = sid(&req, "TaskSid")?;
            let complete = Action::CompleteTask { task_sid: task_sid.to_owned(), reason: "call ended".into() };
            store.record_event_with_actions("taskrouter", &event_type, Some(task_sid), &payload, &[complete]).await?;
            if let Some(call) = store.call_by_task(task_sid).await? {
                store.settle_outcome(&call.call_sid, Outcome::Connected).await?;
            }
            state.notifier().notify();
        }
        "task.canceled" | "reservation.canceled" | "reservation.timeout" | "reservation.rescinded" => {
            // The location's phone may still be ringing for a caller who is gone, or for a
            // reservation TaskRouter took back: stop it.
            let task_sid = sid(&req, "TaskSid")?;
            store.record_event("taskrouter", &event_type, Some(task_sid), &payload).await?;
            let queued = if event_type == "task.canceled" {
                // Unless something of ours settled the call first (and stopped the location's
                // leg then), TaskRouter canceling the task means the caller left.
                match store.call_by_task(task_sid).await? {
                    Some(c) => store.settle_and_stop_location(&c.call_sid, Outcome::CallerHungUp, &[]).await?,
                    None => false,
                }
            } else {
                // Only this reservation's dial: a late event must not hang up the call placed
                // for the next reservation of the same caller.
                store.end_reservation(sid(&req, "ReservationSid")?).await?
            };
            if queued {
                state.notifier().notify();
            }
        }
        _ => {
            store.record_event("taskrouter", &event_type, req.get("ResourceSid"), &payload).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

fn sid<'a>(req: &'a TwilioRequest, key: &str) -> Result<&'a str, WebhookError> {
    let v = req.require(key)?;
    if v.len() != 34 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(WebhookError::BadRequest(format!("{key} {v:?} is not a SID")));
    }
    Ok(v)
}
