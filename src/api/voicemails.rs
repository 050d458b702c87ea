//! `/api/voicemails`: the voicemails callers left, newest first; marking one
//! listened; and its audio, streamed from Twilio with the account's
//! credentials so that the recording's URL never reaches the browser (nor a
//! log line above debug level).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use twilio::sid::RecordingSid;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::notify::rfc3339_ms;
use crate::store::{Voicemail, VoicemailFilter, VoicemailKind, is_callback_request_id};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(listened)).routes(routes!(audio))
}

/// A voicemail as the API shows it: a recording, or a callback request (a
/// callback that ended at closing time, to call back by hand; no audio).
#[derive(Debug, Serialize, ToSchema)]
pub struct VoicemailView {
    /// The recording's SID (`RE…`), or a callback request's id (`CB…`).
    pub recording_sid: String,
    /// `recording` or `callback_request`.
    pub kind: String,
    pub call_sid: String,
    /// The caller's number as Twilio gave it (may be `anonymous`).
    pub caller: String,
    pub location: Option<String>,
    pub duration_secs: Option<i64>,
    /// RFC 3339, UTC.
    pub recorded_at: String,
    /// Twilio's transcription, when the location asks for one and it came.
    pub transcription: Option<String>,
    pub listened: bool,
    /// Where the audio is streamed from, on this server; null for a callback request.
    pub audio_url: Option<String>,
    /// A callback request's: since when the caller waited (RFC 3339, UTC).
    pub waiting_since: Option<String>,
}

impl From<Voicemail> for VoicemailView {
    fn from(v: Voicemail) -> Self {
        let recording = v.kind == VoicemailKind::Recording;
        VoicemailView {
            kind: v.kind.as_str().to_owned(),
            audio_url: recording.then(|| format!("/api/voicemails/{}/audio", v.recording_sid)),
            waiting_since: v.waiting_since_ms.map(rfc3339_ms),
            recorded_at: rfc3339_ms(v.recorded_at_ms),
            listened: v.listened_at_ms.is_some(),
            recording_sid: v.recording_sid,
            call_sid: v.call_sid,
            caller: v.caller,
            location: v.location,
            duration_secs: v.duration_secs,
            transcription: v.transcription,
        }
    }
}

/// A page of voicemails.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoicemailPage {
    pub voicemails: Vec<VoicemailView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// The list's filters and paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `true`: only voicemails someone listened to; `false`: only new ones.
    pub listened: Option<String>,
    /// Only this location's.
    pub location: Option<String>,
    /// 1 to 200; 50 by default.
    pub limit: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

impl ListQuery {
    fn filter(&self) -> Result<VoicemailFilter, ApiError> {
        let bad = |m: String| ApiError::BadRequest(m);
        let listened = match self.listened.as_deref() {
            None | Some("") => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => return Err(bad(format!("listened must be true or false, not {other:?}"))),
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad(format!("limit must be a whole number from 1 to {MAX_LIMIT}, not {l:?}")))?,
        };
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| bad(format!("cursor {c:?} is not one this API gave")))?),
        };
        let location = self.location.clone().filter(|l| !l.is_empty());
        Ok(VoicemailFilter { listened, location, after, limit })
    }
}

/// The cursor: the last item's time and SID, `<ms>.<RE…>`.
fn encode_cursor(v: &Voicemail) -> String {
    format!("{}.{}", v.recorded_at_ms, v.recording_sid)
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let (ms, sid) = c.split_once('.')?;
    let ms = ms.parse::<i64>().ok()?;
    known_id(sid).then(|| (ms, sid.to_owned()))
}

/// An id the voicemail list can hold: a recording's SID or a callback request's.
fn known_id(id: &str) -> bool {
    id.parse::<RecordingSid>().is_ok() || is_callback_request_id(id)
}

/// Voicemails, newest first.
#[utoipa::path(
    get,
    path = "/api/voicemails",
    tag = "voicemails",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of voicemails, newest first", body = VoicemailPage),
        (status = 400, description = "A bad query value", body = ErrorBody),
        (status = 401, description = "No admin token", body = ErrorBody),
    )
)]
async fn list(State(state): State<AppState>, Query(query): Query<ListQuery>) -> Result<Json<VoicemailPage>, ApiError> {
    Ok(Json(page(&state, query.filter()?).await?))
}

/// The newest `limit` voicemails, as `GET /api/voicemails?limit=…` lists them.
pub(super) fn latest(limit: i64) -> VoicemailFilter {
    VoicemailFilter { limit, ..VoicemailFilter::default() }
}

/// One page of voicemails for `filter`.
pub(super) async fn page(state: &AppState, mut filter: VoicemailFilter) -> Result<VoicemailPage, ApiError> {
    let limit = filter.limit;
    // One more than asked for tells whether there is a next page.
    filter.limit = limit + 1;
    let mut found = state.store().voicemails(&filter).await?;
    let more = found.len() as i64 > limit;
    found.truncate(limit as usize);
    let next_cursor = if more { found.last().map(encode_cursor) } else { None };
    Ok(VoicemailPage { voicemails: found.into_iter().map(VoicemailView::from).collect(), next_cursor })
}

/// Marks a voicemail listened.
#[utoipa::path(
    post,
    path = "/api/voicemails/{recording_sid}/listened",
    tag = "voicemails",
    params(("recording_sid" = String, Path, description = "The recording's SID (`RE…`), or a callback request's id (`CB…`)")),
    responses(
        (status = 204, description = "Marked listened (again: no change)"),
        (status = 401, description = "No admin token", body = ErrorBody),
        (status = 404, description = "No such voicemail", body = ErrorBody),
    )
)]
async fn listened(State(state): State<AppState>, Path(recording_sid): Path<String>) -> Result<StatusCode, ApiError> {
    let known = known_id(&recording_sid) && state.store().mark_voicemail_listened(&recording_sid).await?;
    if !known {
        return Err(not_found(&recording_sid));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The voicemail's audio, streamed from Twilio.
#[utoipa::path(
    get,
    path = "/api/voicemails/{recording_sid}/audio",
    tag = "voicemails",
    params(("recording_sid" = String, Path, description = "The recording's SID (`RE…`)")),
    responses(
        (status = 200, description = "The audio, with Twilio's Content-Type (audio/x-wav)", content_type = "audio/x-wav"),
        (status = 401, description = "No admin token", body = ErrorBody),
        (status = 404, description = "No such voicemail, a callback request (no audio), or Twilio no longer has it", body = ErrorBody),
        (status = 502, description = "Twilio did not give the audio", body = ErrorBody),
    )
)]
async fn audio(State(state): State<AppState>, Path(recording_sid): Path<String>) -> Result<Response, ApiError> {
    if is_callback_request_id(&recording_sid) {
        return Err(ApiError::NotFound(format!("{recording_sid} is a callback request: it has no recording")));
    }
    if recording_sid.parse::<RecordingSid>().is_err() {
        return Err(not_found(&recording_sid));
    }
    let Some(url) = state.store().voicemail_recording_url(&recording_sid).await? else {
        return Err(not_found(&recording_sid));
    };
    let Some(twilio) = state.twilio() else {
        // Only in the first moments of a start, before the REST client is built.
        let body = ErrorBody { error: "the server is starting; try again in a moment".to_owned() };
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    };
    let resp = match twilio.fetch_recording(&recording_sid, &url).await {
        Ok(r) => r,
        Err(e) if e.status() == Some(404) => {
            tracing::warn!(recording_sid, error = %e, "Twilio no longer has a voicemail's recording");
            return Err(ApiError::NotFound(format!("Twilio no longer has recording {recording_sid}")));
        }
        Err(e) => {
            tracing::error!(recording_sid, error = %e, "could not fetch a voicemail's recording");
            let body = ErrorBody { error: "Twilio did not give the recording; try again later".to_owned() };
            return Ok((StatusCode::BAD_GATEWAY, Json(body)).into_response());
        }
    };
    let content_type =
        resp.headers().get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("audio/x-wav"));
    let length = resp.headers().get(header::CONTENT_LENGTH).cloned();
    let mut out = Response::new(Body::from_stream(resp.into_stream()));
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(l) = length {
        headers.insert(header::CONTENT_LENGTH, l);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(out)
}

fn not_found(recording_sid: &str) -> ApiError {
    ApiError::NotFound(format!("no voicemail {recording_sid:?}"))
}
