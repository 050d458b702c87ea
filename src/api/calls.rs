//! `GET /api/calls` (filtered, paged newest first) and
//! `GET /api/calls/{call_sid}` (one call with its whole timeline).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ErrorBody, rfc3339};
use crate::domain::Outcome;
use crate::http::AppState;
use crate::store::{CallFilter, HistoryCall, journey_sids};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_calls)).routes(routes!(get_call))
}

/// A page's size when `limit` is not given, and the most it may be.
pub(super) const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// The filters and paging of `GET /api/calls`. Every value is checked here
/// (not by the extractor), so a bad one is a 400 that names it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct CallsQuery {
    /// Calls that started at or after this instant (RFC 3339).
    #[param(example = "2026-11-29T00:00:00Z")]
    from: Option<String>,
    /// Calls that started before this instant (RFC 3339).
    to: Option<String>,
    /// The location's name.
    location: Option<String>,
    /// The call's outcome (`pending` while under way).
    #[param(example = "connected")]
    outcome: Option<String>,
    /// The caller's number in E.164 (URL-encode the `+` as `%2B`).
    caller: Option<String>,
    /// How many calls per page, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// One call, as the lists show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CallSummary {
    pub(crate) call_sid: String,
    /// The caller's number.
    pub(crate) caller: String,
    /// The number the caller dialled.
    pub(crate) to: String,
    pub(crate) location: Option<String>,
    /// snake_case; `pending` while the call is under way.
    #[schema(example = "connected")]
    pub(crate) outcome: String,
    /// RFC 3339, UTC.
    pub(crate) started_at: String,
    /// When the caller's leg ended; null while it is under way.
    pub(crate) ended_at: Option<String>,
    /// Seconds in the queue, as Twilio reported them when the caller left it.
    pub(crate) wait_secs: Option<i64>,
    pub(crate) task_sid: Option<String>,
    pub(crate) reservation_sid: Option<String>,
    /// The location's leg.
    pub(crate) outbound_call_sid: Option<String>,
    pub(crate) answered_by: Option<String>,
    pub(crate) has_voicemail: bool,
}

/// A page of calls, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CallPage {
    pub(crate) calls: Vec<CallSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// Where an entry of a timeline comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    /// A webhook received (TaskRouter events, the queue's exit).
    Webhook,
    /// A status callback of the caller's or a location's leg.
    Status,
    /// A command the journey queued for Twilio, with its result.
    Action,
    /// The journey itself (began, closed).
    Journey,
}

/// One thing that happened to a call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct TimelineEntry {
    /// RFC 3339, UTC.
    pub(crate) at: String,
    pub(crate) source: Source,
    /// The event type, the status, the command's kind, or what the journey did.
    #[schema(example = "reservation.created")]
    pub(crate) kind: String,
    #[schema(value_type = Object)]
    pub(crate) detail: serde_json::Value,
    #[serde(skip)]
    order: (i64, Source, i64),
}

/// One call with everything known about it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CallDetail {
    #[serde(flatten)]
    pub(crate) summary: CallSummary,
    /// The journey's state machine as stored; null when there is none.
    #[schema(value_type = Option<Object>)]
    pub(crate) state: Option<serde_json::Value>,
    /// Oldest first.
    pub(crate) timeline: Vec<TimelineEntry>,
}

/// Calls, newest first, filtered and paged.
#[utoipa::path(
    get,
    path = "/api/calls",
    tag = "calls",
    params(CallsQuery),
    responses(
        (status = 200, description = "A page of calls, newest first", body = CallPage),
        (status = 400, description = "A query value is not valid; the reason names it", body = ErrorBody),
        (status = 401, description = "No or a wrong admin token", body = ErrorBody),
    )
)]
async fn list_calls(
    State(state): State<AppState>,
    query: Result<Query<CallsQuery>, QueryRejection>,
) -> Result<Json<CallPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let filter = filter(&query).inspect_err(|e| tracing::info!(reason = %e, "api: refused a calls query"))?;
    Ok(Json(page(&state, filter).await?))
}

/// The page `filter` selects, with the cursor to the next.
pub(crate) async fn page(state: &AppState, filter: CallFilter) -> Result<CallPage, ApiError> {
    let limit = filter.limit;
    // One more than asked tells whether there is a next page.
    let mut rows = state.store().history_calls(&CallFilter { limit: limit + 1, ..filter }).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = match rows.last() {
        Some(last) if more => Some(encode_cursor(last.call.created_at_ms, &last.call.call_sid)),
        _ => None,
    };
    Ok(CallPage { calls: rows.iter().map(summary).collect(), next_cursor })
}

/// The first page of every call, `limit` long (the event stream's).
pub(crate) fn latest(limit: i64) -> CallFilter {
    CallFilter { limit, ..CallFilter::default() }
}

fn filter(q: &CallsQuery) -> Result<CallFilter, ApiError> {
    let bad = |name: &str, why: String| ApiError::BadRequest(format!("{name}: {why}"));
    let instant = |name: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|s| {
                s.parse::<jiff::Timestamp>()
                    .map(|t| t.as_millisecond())
                    .map_err(|_| bad(name, format!("{s:?} is not an RFC 3339 time such as 2026-11-29T20:31:07Z")))
            })
            .transpose()
    };
    let from_ms = instant("from", &q.from)?;
    let to_ms = instant("to", &q.to)?;
    if let (Some(f), Some(t)) = (from_ms, to_ms)
        && t < f
    {
        return Err(bad("to", "is before from".into()));
    }
    let outcome = q
        .outcome
        .as_deref()
        .map(|s| {
            Outcome::parse(s).ok_or_else(|| {
                let known: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
                bad("outcome", format!("{s:?} is not one of {}", known.join(", ")))
            })
        })
        .transpose()?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(bad("limit", format!("{s:?} is not a whole number from 1 to {MAX_LIMIT}"))),
        },
    };
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c).ok_or_else(|| bad("cursor", "is not a cursor this API gave out".into())))
        .transpose()?;
    // A `+` that was not URL-encoded arrives as a space.
    let caller = q.caller.as_deref().map(|c| match c.strip_prefix(' ') {
        Some(rest) => format!("+{}", rest.trim()),
        None => c.trim().to_owned(),
    });
    let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    Ok(CallFilter { from_ms, to_ms, location: text(&q.location), outcome, caller, after, limit })
}

/// The cursor after a call: its start and SID, hex-encoded so that it is
/// one opaque URL-safe token.
fn encode_cursor(created_at_ms: i64, call_sid: &str) -> String {
    format!("{created_at_ms}:{call_sid}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 256 {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ms, sid) = text.split_once(':')?;
    let ok_sid = !sid.is_empty() && sid.bytes().all(|b| b.is_ascii_alphanumeric());
    Some((ms.parse().ok()?, sid.to_owned())).filter(|_| ok_sid)
}

pub(crate) fn summary(h: &HistoryCall) -> CallSummary {
    let c = &h.call;
    CallSummary {
        call_sid: c.call_sid.clone(),
        caller: c.from_number.clone(),
        to: c.to_number.clone(),
        location: c.location.clone(),
        outcome: c.outcome.as_str().to_owned(),
        started_at: rfc3339(c.created_at_ms),
        ended_at: h.ended_at_ms.map(rfc3339),
        wait_secs: h.wait_secs,
        task_sid: c.task_sid.clone(),
        reservation_sid: c.reservation_sid.clone(),
        outbound_call_sid: c.outbound_call_sid.clone(),
        answered_by: c.answered_by.clone(),
        has_voicemail: c.recording_url.is_some(),
    }
}

/// One call: its summary, its journey's state, and its timeline.
#[utoipa::path(
    get,
    path = "/api/calls/{call_sid}",
    tag = "calls",
    params(("call_sid" = String, Path, description = "The caller's call SID (CA…)")),
    responses(
        (status = 200, description = "The call and its timeline, oldest first", body = CallDetail),
        (status = 404, description = "No call with this SID", body = ErrorBody),
        (status = 401, description = "No or a wrong admin token", body = ErrorBody),
    )
)]
async fn get_call(State(state): State<AppState>, Path(call_sid): Path<String>) -> Result<Json<CallDetail>, ApiError> {
    // On the request's span, so that a failure's log line (written as the
    // error becomes a response, still inside it) names the call.
    tracing::Span::current().record("call_sid", call_sid.as_str());
    let detail = call_detail(&state, &call_sid).await;
    if let Err(ApiError::NotFound(reason)) = &detail {
        tracing::info!(%reason, "api: no such call");
    }
    detail.map(Json)
}

async fn call_detail(state: &AppState, call_sid: &str) -> Result<CallDetail, ApiError> {
    let store = state.store();
    let Some(call) = store.history_call(call_sid).await? else {
        return Err(ApiError::NotFound(format!("no call {call_sid}")));
    };
    let journey = store.journey_of(call_sid).await?;
    let sids = journey_sids(call_sid, journey.as_ref());
    let mut timeline = Vec::new();
    for e in store.events_for(&sids).await? {
        let payload: serde_json::Value =
            serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::String(e.payload.clone()));
        timeline.push(entry(
            e.received_at_ms,
            Source::Webhook,
            e.id,
            e.event_type,
            serde_json::json!({"from": e.source, "resource_sid": e.resource_sid, "params": payload}),
        ));
    }
    for s in store.statuses_for(&sids).await? {
        let leg = if s.call_sid == call_sid { "caller" } else { "location" };
        timeline.push(entry(
            s.received_at_ms,
            Source::Status,
            s.id,
            s.status,
            serde_json::json!({
                "leg": leg, "call_sid": s.call_sid, "sequence_number": s.sequence_number,
                "call_duration_secs": s.call_duration, "answered_by": s.answered_by,
                "sip_response_code": s.sip_response_code,
            }),
        ));
    }
    let mut state_json = None;
    if let Some(j) = &journey {
        for a in store.actions_of(j.id).await? {
            let command: serde_json::Value = serde_json::from_str(&a.payload).unwrap_or(serde_json::Value::Null);
            let result: Option<serde_json::Value> =
                a.result.as_deref().map(|r| serde_json::from_str(r).unwrap_or(serde_json::Value::String(r.into())));
            let finished = matches!(a.state, crate::outbox::OutboxState::Done | crate::outbox::OutboxState::Failed);
            timeline.push(entry(
                a.created_at_ms,
                Source::Action,
                a.id,
                a.kind,
                serde_json::json!({
                    "key": a.key, "state": a.state.as_str(), "attempts": a.attempts, "command": command,
                    "result": result, "error": a.last_error,
                    "finished_at": finished.then(|| rfc3339(a.updated_at_ms)),
                }),
            ));
        }
        timeline.push(entry(j.created_at_ms, Source::Journey, 0, "began".into(), serde_json::json!({"id": j.id})));
        if j.closed {
            timeline.push(entry(
                j.updated_at_ms,
                Source::Journey,
                1,
                "closed".into(),
                serde_json::json!({"id": j.id, "outcome": call.call.outcome.as_str()}),
            ));
        }
        state_json = serde_json::from_str(&j.state_json).ok();
    }
    timeline.sort_by_key(|e| e.order);
    Ok(CallDetail { summary: summary(&call), state: state_json, timeline })
}

fn entry(at_ms: i64, source: Source, id: i64, kind: String, detail: serde_json::Value) -> TimelineEntry {
    // A journey began before anything it caused in the same millisecond.
    let rank =
        if source == Source::Journey && id == 0 { (at_ms, Source::Webhook, i64::MIN) } else { (at_ms, source, id) };
    TimelineEntry { at: rfc3339(at_ms), source, kind, detail, order: rank }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_anything_else_is_refused() {
        let c = encode_cursor(1_764_000_000_123, "CA0123456789abcdef0123456789abcdef");
        assert_eq!(decode_cursor(&c), Some((1_764_000_000_123, "CA0123456789abcdef0123456789abcdef".to_owned())));
        for bad in ["", "zz", "abc", "3132", "31323a", "31323a2d2d", &"00".repeat(200)] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_values_name_their_parameter() {
        let cases = [
            (CallsQuery { from: Some("yesterday".into()), ..Default::default() }, "from:"),
            (CallsQuery { to: Some("2026-13-01T00:00:00Z".into()), ..Default::default() }, "to:"),
            (CallsQuery { outcome: Some("won".into()), ..Default::default() }, "outcome:"),
            (CallsQuery { limit: Some("0".into()), ..Default::default() }, "limit:"),
            (CallsQuery { limit: Some("201".into()), ..Default::default() }, "limit:"),
            (CallsQuery { cursor: Some("nope".into()), ..Default::default() }, "cursor:"),
        ];
        for (q, want) in cases {
            let err = filter(&q).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let f = filter(&CallsQuery { caller: Some(" 14155550100".into()), ..Default::default() }).unwrap();
        assert_eq!((f.caller.as_deref(), f.limit), (Some("+14155550100"), DEFAULT_LIMIT));
    }
}
