//! JSON look-ups for deployments that keep a Studio flow: the same data the
//! built-in IVR uses.

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{AppState, TwilioRequest, WebhookError};
use crate::domain::Location;
use crate::hours::{ClosedReason, Status};

fn describe(l: &Location, now: Timestamp) -> Value {
    let status = l.schedule.status_at(now);
    let (open, reason, closes_at, opens_at) = match &status {
        Status::Open { closes_at } => (true, None, Some(closes_at.to_string()), None),
        Status::Closed { reason, opens_at } => (
            false,
            Some(match reason {
                ClosedReason::OutsideHours => "outside_hours",
                ClosedReason::Holiday { .. } => "holiday",
                ClosedReason::Closure { .. } => "closure",
            }),
            None,
            opens_at.as_ref().map(|t| t.to_string()),
        ),
    };
    json!({
        "location": l.name,
        "displayName": l.display_name,
        "digit": l.digit.map(String::from),
        "practicePhone": l.phone,
        "practicePhones": l.phones,
        "callerID": l.caller_id,
        "timeZone": l.schedule.time_zone_name(),
        "open": open,
        "closedReason": reason,
        "closesAt": closes_at,
        "opensAt": opens_at,
    })
}

/// Finds the location a request is about: by `location` name, else by the
/// called number (`To` or `number`) and, when it serves several, `Digits`.
async fn find(state: &AppState, req: &TwilioRequest) -> Result<(Vec<Location>, Option<Location>), WebhookError> {
    let store = state.store();
    if let Some(name) = req.get("location") {
        let loc = store.location(name).await?;
        return Ok((loc.iter().cloned().collect(), loc));
    }
    let number = req
        .get("To")
        .or_else(|| req.get("number"))
        .ok_or_else(|| WebhookError::BadRequest("give location, or To (the called number)".into()))?;
    let all = store.locations_for_number(number).await?;
    let chosen = match (all.len(), req.get("Digits").and_then(|d| d.chars().next())) {
        (1, _) => all.first().cloned(),
        (_, Some(d)) => all.iter().find(|l| l.digit == Some(d)).cloned(),
        _ => None,
    };
    Ok((all, chosen))
}

pub(super) async fn location_lookup(
    State(state): State<AppState>,
    req: TwilioRequest,
) -> Result<Json<Value>, WebhookError> {
    let (all, chosen) = find(&state, &req).await?;
    if all.is_empty() {
        return Err(WebhookError::BadRequest("no location serves that number or has that name".into()));
    }
    let now = state.clock().now();
    let mut body = chosen.map(|l| describe(&l, now)).unwrap_or_else(|| json!({}));
    body["locations"] = all.iter().map(|l| describe(l, now)).collect();
    Ok(Json(body))
}

pub(super) async fn business_hours(
    State(state): State<AppState>,
    req: TwilioRequest,
) -> Result<Json<Value>, WebhookError> {
    let (_, chosen) = find(&state, &req).await?;
    let loc =
        chosen.ok_or_else(|| WebhookError::BadRequest("no single location matches; give location or Digits".into()))?;
    Ok(Json(describe(&loc, state.clock().now())))
}
