//! `GET /api/stream`: server-sent events for a live screen. `board` carries
//! the body of `GET /api/locations`, `calls` that of `GET /api/calls?limit=20`,
//! `voicemails` that of `GET /api/voicemails?limit=20`; each is sent at once, then whenever it changes (checked every second, or
//! sooner when the server's notifier fires), with a keep-alive comment every
//! 15 s. The stream ends when the server drains.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ErrorBody, calls, locations, voicemails};
use crate::http::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// How often the stream looks for changes when nothing wakes it.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The calls, and the voicemails, the stream carries: the newest this many.
const CALLS: i64 = 20;
const VOICEMAILS: i64 = 20;

/// Live updates: `board`, `calls` and `voicemails` events.
#[utoipa::path(
    get,
    path = "/api/stream",
    tag = "stream",
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "Server-sent events: `board` (data: the GET /api/locations body), `calls` \
                        (data: the GET /api/calls?limit=20 body) and `voicemails` (data: the \
                        GET /api/voicemails?limit=20 body), each at once and then on every change; \
                        a keep-alive comment every 15 s",
         body = String),
        (status = 401, description = "No or a wrong admin token", body = ErrorBody),
    )
)]
async fn stream(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watch = Watch { state, board: None, calls: None, voicemails: None, queued: Vec::new(), first: true };
    let events = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(event) = w.queued.pop() {
                return Some((Ok(event), w));
            }
            if w.state.notifier().is_closing() {
                return None;
            }
            if !w.first {
                let notifier = w.state.notifier().clone();
                let changed = notifier.changed();
                tokio::pin!(changed);
                // Registered before the check, so a change in between is not missed.
                changed.as_mut().enable();
                if notifier.is_closing() {
                    return None;
                }
                let _ = tokio::time::timeout(CHECK_EVERY, changed).await;
            }
            w.first = false;
            w.check().await;
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// What one stream last sent.
struct Watch {
    state: AppState,
    board: Option<String>,
    calls: Option<String>,
    voicemails: Option<String>,
    /// Events to send, last first.
    queued: Vec<Event>,
    first: bool,
}

impl Watch {
    /// Reads the bodies and queues those that changed. A failed read is
    /// logged and tried again at the next check.
    async fn check(&mut self) {
        let board = locations::board(&self.state, jiff::Timestamp::now())
            .await
            .and_then(|b| serde_json::to_string(&b).map_err(|e| super::ApiError::Internal(e.into())));
        let calls = calls::page(&self.state, calls::latest(CALLS))
            .await
            .and_then(|p| serde_json::to_string(&p).map_err(|e| super::ApiError::Internal(e.into())));
        let voicemails = voicemails::page(&self.state, voicemails::latest(VOICEMAILS))
            .await
            .and_then(|p| serde_json::to_string(&p).map_err(|e| super::ApiError::Internal(e.into())));
        // `queued` pops from the end: sent in the order board, calls, voicemails.
        let bodies = [
            ("voicemails", voicemails, &mut self.voicemails),
            ("calls", calls, &mut self.calls),
            ("board", board, &mut self.board),
        ];
        for (name, body, last) in bodies {
            match body {
                Ok(body) if last.as_deref() != Some(body.as_str()) => {
                    self.queued.push(Event::default().event(name).data(&body));
                    *last = Some(body);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(event = name, error = %e, "api: the event stream could not read its data"),
            }
        }
    }
}
