//! The webhook server: routes, the signature check, and the error type.
//!
//! Only this module knows axum. Every Twilio-facing route takes a
//! [`TwilioRequest`], which refuses the request unless `X-Twilio-Signature`
//! matches the configured public URL and the account matches ours. Handlers
//! then call the pure `ivr` functions, the store and the outbox.

mod events;
mod lookup;
mod voice;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use twilio::Params;
use twilio::sid::{WorkflowSid, WorkspaceSid};
use twilio::signature::{self, SignatureError};

use crate::config::Settings;
use crate::dispatch::Notifier;
use crate::ivr::Urls;
use crate::journey::Policy;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    policy: Policy,
    store: Store,
    notifier: Notifier,
    /// Provisioned SIDs, read from the database on first use (provision may
    /// run after the server starts) unless set in the config.
    workspace_sid: SidCache<WorkspaceSid>,
    workflow_sid: SidCache<WorkflowSid>,
    /// The REST client, for the API's reads from Twilio (a voicemail's
    /// audio); set once built, which is after the first webhooks are
    /// answered (see `app`), and never in states built without one.
    twilio: std::sync::OnceLock<crate::twilio_api::TwilioClient>,
}

impl AppState {
    pub fn new(settings: Settings, store: Store, notifier: Notifier) -> Self {
        let workspace_sid = SidCache::new(settings.twilio.workspace_sid.clone(), "workspace");
        let workflow_sid = SidCache::new(settings.twilio.workflow_sid.clone(), "workflow");
        let policy = Policy::from_settings(&settings);
        let twilio = std::sync::OnceLock::new();
        Self { inner: Arc::new(Inner { settings, policy, store, notifier, workspace_sid, workflow_sid, twilio }) }
    }

    /// Gives the state the REST client the API reads Twilio with; the first
    /// one given stays.
    pub fn set_twilio(&self, twilio: crate::twilio_api::TwilioClient) {
        let _ = self.inner.twilio.set(twilio);
    }

    pub(crate) fn twilio(&self) -> Option<&crate::twilio_api::TwilioClient> {
        self.inner.twilio.get()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The business clock hours are read at (the wall clock but in tests and demos).
    pub fn clock(&self) -> crate::clock::Clock {
        self.inner.settings.clock
    }

    /// What the journeys decide with.
    pub fn policy(&self) -> Policy {
        self.inner.policy
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    pub(crate) fn urls(&self) -> Urls<'_> {
        Urls { base: &self.inner.settings.public_url }
    }

    pub(crate) async fn workspace_sid(&self) -> anyhow::Result<Option<WorkspaceSid>> {
        self.inner.workspace_sid.get(&self.inner.store, SID_MAX_AGE).await
    }

    /// The workspace SID read from the database now, for an event that names another one:
    /// `provision` may have made a new workspace since it was cached.
    pub(crate) async fn workspace_sid_fresh(&self) -> anyhow::Result<Option<WorkspaceSid>> {
        self.inner.workspace_sid.get(&self.inner.store, Duration::ZERO).await
    }

    pub(crate) async fn workflow_sid(&self) -> anyhow::Result<Option<WorkflowSid>> {
        self.inner.workflow_sid.get(&self.inner.store, SID_MAX_AGE).await
    }
}

/// How long a provisioned SID is used before it is read from the database again.
const SID_MAX_AGE: Duration = Duration::from_secs(10);

/// A provisioned SID (workspace, workflow), read from the database and kept for a while, so
/// that the hot path does not read it on every webhook, yet a re-provision takes effect
/// without a restart. A SID pinned in the config is used as it is.
struct SidCache<T> {
    pinned: Option<T>,
    kind: &'static str,
    slot: RwLock<Option<(T, Instant)>>,
}

impl<T: Clone + std::str::FromStr> SidCache<T> {
    fn new(pinned: Option<T>, kind: &'static str) -> Self {
        Self { pinned, kind, slot: RwLock::new(None) }
    }

    async fn get(&self, store: &Store, max_age: Duration) -> anyhow::Result<Option<T>> {
        if let Some(p) = &self.pinned {
            return Ok(Some(p.clone()));
        }
        let cached = self.slot.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((v, at)) = cached
            && at.elapsed() < max_age
        {
            return Ok(Some(v));
        }
        let found = store.resource(self.kind, "main").await?.and_then(|s| s.parse::<T>().ok());
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = found.clone().map(|v| (v, Instant::now()));
        Ok(found)
    }
}

/// Builds the router with its middleware; with `/metrics` unless the
/// settings give it its own address (`metrics_listen`, see [`metrics_router`]).
pub fn router(state: AppState) -> Router {
    let max_body = state.settings().security.max_body_bytes;
    let with_metrics = state.settings().metrics_listen.is_none();
    let routes = Router::new()
        .route("/incoming-call", post(voice::incoming_call))
        .route("/menu", post(voice::menu))
        .route("/hold", post(voice::hold).get(voice::hold))
        .route("/enqueue-action", post(voice::enqueue_action))
        .route("/caller-fallback", post(voice::caller_fallback))
        .route("/voicemail-complete", post(voice::voicemail_complete))
        .route("/voicemail-transcription", post(voice::voicemail_transcription))
        .route("/dial-queue", post(voice::dial_queue))
        .route("/screen", post(voice::screen))
        .route("/transfer-notice", post(voice::transfer_notice))
        .route("/callback-choice", post(voice::callback_choice))
        .route("/callback-dialed", post(voice::callback_dialed))
        .route("/status-callback", post(voice::status_callback))
        .route("/tr-event-handler", post(events::tr_event_handler))
        .route("/location-lookup", get(lookup::location_lookup).post(lookup::location_lookup))
        .route("/businesshours", get(lookup::business_hours).post(lookup::business_hours))
        .route("/healthz", get(healthz));
    let routes = if with_metrics { routes.route("/metrics", get(metrics)) } else { routes };
    let routes = match crate::api::router(&state) {
        Some(api) => routes.merge(api),
        None => routes,
    };
    let routes = match crate::dashboard::router(&state) {
        Some(dashboard) => routes.merge(dashboard),
        None => routes,
    };
    routes
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(10)))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            tracing::info_span!(
                "webhook",
                method = %req.method(),
                path = req.uri().path(),
                call_sid = tracing::field::Empty,
                task_sid = tracing::field::Empty,
                reservation_sid = tracing::field::Empty,
            )
        }))
        .layer(middleware::from_fn(count_requests))
}

/// `/metrics` alone, for its own listen address (`metrics_listen`).
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(metrics))
}

/// Prometheus's text format. Not signed: it tells nothing of a caller; bind it
/// to its own address (`metrics_listen`) to keep it off the public one.
async fn metrics() -> Response {
    crate::stats::first_sample().await;
    let Some(body) = crate::stats::render().await else {
        tracing::warn!("a scrape came before the metrics recorder was built");
        return (StatusCode::SERVICE_UNAVAILABLE, "the metrics recorder is not ready yet; scrape again\n")
            .into_response();
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

/// Counts every request by its matched route (never the raw URI, which
/// carries SIDs and query strings) and status, and times it.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!(crate::stats::WEBHOOK_SECONDS, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::stats::WEBHOOKS, "route" => route, "status" => status).increment(1);
    resp
}

/// `ok`, or `degraded` (still 200: the server works) with the number of
/// journeys that owe a command the dispatcher gave up on; they are sent again
/// after a back-off, and the logs name them.
async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store().degraded_journeys().await {
        Ok(0) => "ok".into_response(),
        Ok(n) => format!("degraded: {n} calls owe a Twilio request that failed for good; it is being retried")
            .into_response(),
        Err(e) => {
            tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "healthz could not read the database");
            (StatusCode::SERVICE_UNAVAILABLE, "the database cannot be read").into_response()
        }
    }
}

/// The webhook boundary's error: the caller's faults become 4xx with a
/// reason; anything else is a 500 with an opaque body and a full log line.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("missing X-Twilio-Signature header")]
    MissingSignature,
    #[error("X-Twilio-Signature does not match the request")]
    BadSignature,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the server is not ready: {0}")]
    NotReady(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::MissingSignature | WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::BadSignature | WebhookError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebhookError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebhookError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // The span carries the call, task and reservation SIDs.
        match &self {
            WebhookError::Unexpected(e) => {
                tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "webhook failed")
            }
            other => tracing::warn!(status = status.as_u16(), reason = %other, "webhook refused"),
        }
        let body = match &self {
            WebhookError::Unexpected(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        (status, body).into_response()
    }
}

/// A request that Twilio signed: its form parameters and its own query
/// parameters (which are part of the signed URL, so equally trusted).
#[derive(Debug)]
pub struct TwilioRequest {
    pub params: Params,
    pub query: Params,
}

impl TwilioRequest {
    /// A parameter from the body, else from the query.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).or_else(|| self.query.get(key)).filter(|v| !v.is_empty())
    }

    pub fn require(&self, key: &str) -> Result<&str, WebhookError> {
        self.get(key).ok_or_else(|| WebhookError::BadRequest(format!("missing parameter {key}")))
    }

    /// The body parameters as JSON, for the audit log.
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> =
            self.params.iter().map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned()))).collect();
        serde_json::Value::Object(map).to_string()
    }
}

impl FromRequest<AppState> for TwilioRequest {
    type Rejection = WebhookError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, state.settings().security.max_body_bytes)
            .await
            .map_err(|_| WebhookError::BadRequest("request body too large or unreadable".into()))?;
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let query = Params::parse(parts.uri.query().unwrap_or_default().as_bytes());
        let is_json = content_type_is(&parts.headers, "application/json");
        let params =
            if is_json || parts.method == axum::http::Method::GET { Params::new() } else { Params::parse(&body) };

        let span = Span::current();
        for (param, field) in [("CallSid", "call_sid"), ("TaskSid", "task_sid"), ("ReservationSid", "reservation_sid")]
        {
            if let Some(v) = params.get(param).or_else(|| query.get(param)) {
                span.record(field, v);
            }
        }

        let settings = state.settings();
        if settings.security.validate_signatures {
            // The URL Twilio signed: our public URL, the path and the query. A
            // webhook configured with connection overrides (`…#rc=2&rp=ct,5xx`)
            // is signed without its fragment, which is never sent, so no
            // configured fragment needs to be known here (see `signed_url`).
            let url = format!("{}{}", settings.public_url, path_and_query);
            let sig = parts.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok());
            let token = settings.twilio.auth_token.expose_secret().as_bytes();
            let checked = if is_json {
                signature::validate_json(token, &url, &body, sig)
            } else {
                signature::validate_form(token, &url, params.iter(), sig)
            };
            checked.map_err(|e| match e {
                SignatureError::Missing => WebhookError::MissingSignature,
                SignatureError::Mismatch | SignatureError::BodyHashMismatch => WebhookError::BadSignature,
            })?;
        }
        if let Some(account) = params.get("AccountSid").or_else(|| query.get("AccountSid"))
            && account != settings.twilio.account_sid.as_str()
        {
            return Err(WebhookError::Forbidden(format!("AccountSid {account} is not this server's account")));
        }
        Ok(TwilioRequest { params, query })
    }
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(want))
}

/// A TwiML response.
pub struct TwiML(pub twilio::twiml::Response);

impl IntoResponse for TwiML {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"))], self.0.to_xml()).into_response()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr>,
{
    use axum::serve::ListenerExt as _;
    // Each answer goes out at once, not held back by Nagle's algorithm until the
    // client acknowledges what came before it (a delayed ACK can hold it for 40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// A listener that can stop accepting without closing. On a socket shared
/// with another instance (passed by systemd), connections not yet accepted
/// then go to the other instance, while this one answers those it already
/// took: a connection accepted a moment before the drain has time to send
/// its request before idle connections are closed.
pub struct Pausable {
    inner: tokio::net::TcpListener,
    paused: tokio::sync::watch::Receiver<bool>,
}

impl Pausable {
    /// `listener`, which stops accepting once `paused` is true (or its sender is gone).
    pub fn new(inner: tokio::net::TcpListener, paused: tokio::sync::watch::Receiver<bool>) -> Self {
        Pausable { inner, paused }
    }
}

impl axum::serve::Listener for Pausable {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let paused = &mut self.paused;
        let until_paused = async move {
            // Dropped here: the guard `wait_for` returns is not `Send`.
            let _ = paused.wait_for(|p| *p).await.map(drop);
        };
        tokio::select! {
            biased;
            () = until_paused => std::future::pending().await,
            // Cancel-safe: tokio's accept takes nothing from the queue unless it returns.
            conn = axum::serve::Listener::accept(&mut self.inner) => conn,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
