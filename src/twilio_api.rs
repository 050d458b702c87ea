//! The Twilio REST client: typed, form-encoded, basic auth, two base URLs.
//!
//! The same client talks to Twilio and to the sandbox; only the base URLs and
//! credentials differ. Every request has a timeout. A 429 is retried with
//! jittered exponential back-off (Twilio did not act on it). Other failures
//! are retried only for requests that are safe to repeat: creating a call is
//! never re-sent after a timeout, because the first request may have placed
//! the call.

use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt as _;
use jiff::Timestamp;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::Value;
use twilio::sid::{AccountSid, CallSid, ReservationSid, TaskQueueSid, TaskSid, WorkerSid, WorkflowSid, WorkspaceSid};
use twilio::{E164, ErrorBody, Params};

use crate::config::{TlsRoots, TwilioSettings};

mod transport;

pub use transport::TransportError;
use transport::{Route, Transport};

/// How long a recording's audio may take to reach the listener, whole (the
/// API streams it through at the browser's pace).
const RECORDING_TIMEOUT: Duration = Duration::from_secs(600);

/// Which of Twilio's two API hosts a path lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/2010-04-01/…` on api.twilio.com.
    Core,
    /// `/v1/…` on taskrouter.twilio.com.
    TaskRouter,
}

/// A failed Twilio request. Each variant names the method and path.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Twilio answered with its error body.
    #[error("{method} {path}: {body}")]
    Twilio { method: &'static str, path: String, body: ErrorBody },
    /// An error status without Twilio's body (a proxy, a crash).
    #[error("{method} {path}: HTTP {status}: {snippet}")]
    Http { method: &'static str, path: String, status: u16, snippet: String },
    /// No answer in time; Twilio may or may not have acted on the request.
    #[error("{method} {path}: no answer within {timeout_ms} ms (Twilio may or may not have acted)")]
    Timeout { method: &'static str, path: String, timeout_ms: u64 },
    #[error("{method} {path}: {source}")]
    Transport { method: &'static str, path: String, source: TransportError },
    #[error("{method} {path}: unexpected response: {message}")]
    Decode { method: &'static str, path: String, message: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Twilio { body, .. } => Some(body.status),
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Twilio's error code, when it sent one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ApiError::Twilio { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// An error status with its body: Twilio's error body when it is one,
    /// else the status and the body's first 200 bytes (a proxy, a crash).
    fn refused(method: &'static str, path: String, status: u16, body: &[u8]) -> ApiError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(body) => ApiError::Twilio { method, path, body },
            Err(_) => ApiError::Http {
                method,
                path,
                status,
                snippet: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            },
        }
    }

    fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    /// Failures worth retrying for a request that is safe to repeat. A
    /// refused certificate is not one: it fails the same way each time.
    fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport { source, .. } => !source.is_certificate(),
            ApiError::Timeout { .. } => true,
            _ => self.status().is_some_and(|s| s == 429 || s >= 500),
        }
    }
}

/// A call as Twilio returns it (the fields we use).
#[derive(Debug, Clone, Deserialize)]
pub struct CallResource {
    pub sid: CallSid,
    pub status: String,
}

/// The raw items of a paged list, and whether every page was read.
#[derive(Debug, Clone, Default)]
pub struct Listing<T = Value> {
    pub items: Vec<T>,
    /// Pages read.
    pub pages: u32,
    /// False when the page cap stopped the walk with pages left: what was
    /// not read may hold more items, so the list proves no absence.
    pub complete: bool,
}

/// A call as the Calls list and fetch show it (the fields the reconciler
/// reads). `to` and `from` stay strings: they may be SIP addresses or client
/// identifiers, not only E.164 numbers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallRecordResource {
    pub sid: CallSid,
    pub to: String,
    pub from: String,
    pub status: String,
    /// `inbound`, `outbound-api`, `outbound-dial`, `trunking-…`.
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub parent_call_sid: Option<CallSid>,
    /// RFC 2822 in UTC, whole seconds.
    #[serde(default, deserialize_with = "date_opt")]
    pub date_created: Option<Timestamp>,
    /// Empty until the call is dialled (a `queued` call has none).
    #[serde(default, deserialize_with = "date_opt")]
    pub start_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "date_opt")]
    pub end_time: Option<Timestamp>,
    #[serde(default)]
    pub answered_by: Option<String>,
}

/// A time filter's bound: Twilio documents a UTC day (`YYYY-MM-DD`); its
/// helper libraries also send a date-time (ISO 8601 in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    Day(jiff::civil::Date),
    At(Timestamp),
}

impl TimeBound {
    /// The UTC day `at` falls on.
    pub fn day_of(at: Timestamp) -> Self {
        TimeBound::Day(jiff::tz::Offset::UTC.to_datetime(at).date())
    }

    fn render(self) -> String {
        match self {
            TimeBound::Day(d) => d.strftime("%Y-%m-%d").to_string(),
            TimeBound::At(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }
}

/// A Calls list's filters and its page bounds.
#[derive(Debug, Clone)]
pub struct CallFilter {
    pub to: Option<String>,
    pub from: Option<String>,
    /// Twilio's spelling: `queued`, `ringing`, `in-progress`, `completed`, …
    pub status: Option<String>,
    /// `StartTime>` (the docs write it `StartTime>=2009-07-06`: the key is
    /// `StartTime>`): calls that started on or after it. A call not yet
    /// dialled has no start time and is not listed.
    pub start_time_from: Option<TimeBound>,
    /// 1–1000.
    pub page_size: u32,
    pub max_pages: u32,
}

impl Default for CallFilter {
    fn default() -> Self {
        CallFilter { to: None, from: None, status: None, start_time_from: None, page_size: 50, max_pages: 1 }
    }
}

impl CallFilter {
    /// The query string, in the order the fields are declared.
    pub fn query(&self) -> String {
        let mut p = Params::new();
        p.push_opt("To", self.to.clone())
            .push_opt("From", self.from.clone())
            .push_opt("Status", self.status.clone())
            .push_opt("StartTime>", self.start_time_from.map(TimeBound::render))
            .push("PageSize", self.page_size.clamp(1, 1000).to_string());
        p.encode()
    }
}

/// A TaskRouter task (the fields the reconciler reads); `attributes` is the
/// JSON document as a string, unparsed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskResource {
    pub sid: TaskSid,
    pub assignment_status: String,
    #[serde(default)]
    pub attributes: String,
    /// ISO 8601 in UTC.
    #[serde(default, deserialize_with = "date_opt")]
    pub date_created: Option<Timestamp>,
    #[serde(default)]
    pub task_queue_sid: Option<TaskQueueSid>,
    #[serde(default)]
    pub workflow_sid: Option<WorkflowSid>,
}

/// One reservation of a task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReservationResource {
    pub sid: ReservationSid,
    pub reservation_status: String,
    #[serde(default)]
    pub worker_sid: Option<WorkerSid>,
    pub task_sid: TaskSid,
}

/// A date as Twilio writes it: RFC 2822 in the core API, ISO 8601 in
/// TaskRouter. Missing or empty is `None`; anything else is an error.
fn date_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let raw: Option<String> = Option::deserialize(d)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<Timestamp>()
            .or_else(|_| jiff::fmt::rfc2822::parse(s).map(|z| z.timestamp()))
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is neither an RFC 2822 nor an ISO 8601 date"))),
    }
}

/// What `create_call` sends.
#[derive(Debug, Clone)]
pub struct CreateCall {
    pub to: E164,
    pub from: E164,
    pub url: String,
    pub status_callback: String,
    pub timeout_secs: u32,
    /// Answering-machine detection (`MachineDetection=Enable` and its settings).
    pub machine_detection: bool,
    pub machine_detection_speech_threshold_ms: u32,
    pub machine_detection_timeout_secs: u32,
    pub call_token: Option<String>,
}

impl CreateCall {
    /// The form parameters, in the order they are sent.
    pub fn params(&self) -> Params {
        let mut p = Params::new();
        p.push("To", self.to.as_str())
            .push("From", self.from.as_str())
            .push("Url", &self.url)
            .push("Method", "POST")
            .push("StatusCallback", &self.status_callback)
            .push("StatusCallbackMethod", "POST");
        for ev in ["initiated", "ringing", "answered", "completed"] {
            p.push("StatusCallbackEvent", ev);
        }
        if self.machine_detection {
            p.push("MachineDetection", "Enable")
                .push("MachineDetectionSpeechThreshold", self.machine_detection_speech_threshold_ms.to_string())
                .push("MachineDetectionTimeout", self.machine_detection_timeout_secs.to_string());
        }
        p.push("Timeout", self.timeout_secs.to_string()).push_opt("CallToken", self.call_token.clone());
        p
    }
}

/// A recording's audio on its way: the answer's head, and its body to
/// stream, bounded by the deadline the fetch started with.
pub struct Recording {
    resp: http::Response<hyper::body::Incoming>,
    deadline: tokio::time::Instant,
}

impl Recording {
    pub fn headers(&self) -> &http::HeaderMap {
        self.resp.headers()
    }

    /// The audio, chunk by chunk as Twilio sends it: nothing is held whole.
    /// Past the deadline the stream ends with an error.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let deadline = self.deadline;
        futures_util::stream::unfold(Some(self.resp.into_body()), move |body| async move {
            let mut body = body?;
            loop {
                let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                    Err(_) => {
                        let late =
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "the audio did not arrive in time");
                        return Some((Err(late), None));
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(e))) => return Some((Err(std::io::Error::other(e)), None)),
                    Ok(Some(Ok(frame))) => frame,
                };
                // Trailers carry no audio.
                if let Ok(data) = frame.into_data() {
                    return Some((Ok(data), Some(body)));
                }
            }
        })
    }
}

/// Installs ring as rustls's crypto provider for every HTTPS client in the process. reqwest is
/// built without a default provider to keep the build lean, so this runs before any client is
/// built; a second call changes nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client builder for HTTPS to the internet (webhooks), verifying servers against `roots`.
pub fn https_client(roots: TlsRoots) -> anyhow::Result<reqwest::ClientBuilder> {
    install_crypto_provider();
    let builder = reqwest::Client::builder();
    Ok(match roots {
        TlsRoots::System => builder,
        TlsRoots::Mozilla => builder.tls_backend_preconfigured(mozilla_tls(Vec::new())?),
    })
}

/// rustls on ring for Twilio's API, verifying servers against `roots`: the
/// same checks as [`https_client`] (the system's store through the platform
/// verifier, which reads `SSL_CERT_FILE` and `SSL_CERT_DIR`, as reqwest does).
fn api_tls(roots: TlsRoots) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    match roots {
        TlsRoots::Mozilla => mozilla_tls(Vec::new()),
        TlsRoots::System => {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            Ok(rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("setting up TLS")?
                .with_platform_verifier()
                .context("reading the system's root certificates")?
                .with_no_client_auth())
        }
    }
}

/// rustls on ring, trusting Mozilla's roots and `extra` (tests add their own CA).
fn mozilla_tls(extra: Vec<rustls::pki_types::CertificateDer<'static>>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots.add(cert).context("adding a root certificate")?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct TwilioClient {
    http: Transport,
    core_base: String,
    taskrouter_base: String,
    account_sid: AccountSid,
    timeout: Duration,
}

impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("core_base", &self.core_base)
            .field("taskrouter_base", &self.taskrouter_base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

enum Body {
    None,
    Form(Bytes),
}

impl TwilioClient {
    /// The client for `settings`, through the proxy the environment names
    /// for Twilio's hosts, if any (`HTTPS_PROXY`, `NO_PROXY`: see
    /// `twilio_api/transport.rs`).
    pub fn new(settings: &TwilioSettings) -> anyhow::Result<Self> {
        let proxies = hyper_util::client::proxy::matcher::Matcher::from_env();
        Self::with_tls(settings, api_tls(settings.tls_roots)?, &proxies)
    }

    fn with_tls(
        settings: &TwilioSettings,
        tls: rustls::ClientConfig,
        proxies: &hyper_util::client::proxy::matcher::Matcher,
    ) -> anyhow::Result<Self> {
        Self::with_tls_within(settings, tls, proxies, transport::CONNECT_TIMEOUT)
    }

    /// As [`TwilioClient::with_tls`], with new connections set up within `connect_within`.
    fn with_tls_within(
        settings: &TwilioSettings,
        tls: rustls::ClientConfig,
        proxies: &hyper_util::client::proxy::matcher::Matcher,
        connect_within: Duration,
    ) -> anyhow::Result<Self> {
        // This client has its own provider; reqwest's, built later in the
        // process (the sandbox's, webhooks'), take the process's.
        install_crypto_provider();
        let route = Route::for_bases(proxies, [settings.api_base_url.as_str(), settings.taskrouter_base_url.as_str()])?;
        if let Route::Proxy { uri, .. } = &route {
            tracing::info!(proxy = %transport::without_credentials(uri), "requests to Twilio's API go through a proxy");
        }
        let http = Transport::new(
            tls,
            route,
            connect_within,
            settings.account_sid.as_str(),
            settings.auth_token.expose_secret(),
        )?;
        Ok(Self {
            http,
            core_base: settings.api_base_url.clone(),
            taskrouter_base: settings.taskrouter_base_url.clone(),
            account_sid: settings.account_sid.clone(),
            timeout: Duration::from_millis(settings.request_timeout_ms),
        })
    }

    pub fn account_sid(&self) -> &AccountSid {
        &self.account_sid
    }

    fn base(&self, api: Api) -> &str {
        match api {
            Api::Core => &self.core_base,
            Api::TaskRouter => &self.taskrouter_base,
        }
    }

    /// The path of an account-scoped core resource.
    pub fn account_path(&self, rest: &str) -> String {
        format!("/2010-04-01/Accounts/{}/{rest}", self.account_sid)
    }

    /// One request, no retries, counted in the metrics. `path` may carry a query string.
    async fn send_once(&self, method: &'static str, api: Api, path: &str, body: &Body) -> Result<Value, ApiError> {
        let started = std::time::Instant::now();
        let mut status = None;
        let result = self.send_inner(method, api, path, body, &mut status).await;
        let status = match (status, &result) {
            (Some(s), _) => s.to_string(),
            (None, Err(ApiError::Timeout { .. })) => "timeout".to_owned(),
            (None, _) => "error".to_owned(),
        };
        let code = result.as_ref().err().and_then(ApiError::code);
        crate::stats::twilio_request(method, path, &status, code, started.elapsed());
        result
    }

    /// One request; notes the HTTP status in `status_seen` when one came
    /// (a 2xx whose body does not decode has one, and no error code).
    async fn send_inner(
        &self,
        method: &'static str,
        api: Api,
        path: &str,
        body: &Body,
        status_seen: &mut Option<u16>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{}", self.base(api), path);
        let form = match body {
            Body::Form(form) => Some(form.clone()),
            Body::None => None,
        };
        let method_ = match method {
            "GET" => Method::GET,
            "DELETE" => Method::DELETE,
            _ => Method::POST,
        };
        // The timeout bounds the whole exchange: connecting, the answer's head and its body.
        let exchange = async {
            let resp = self.http.send(method_, &url, form, true).await?;
            let status = resp.status().as_u16();
            *status_seen = Some(status);
            let bytes = resp.into_body().collect().await.map_err(TransportError::Read)?.to_bytes();
            Ok::<_, TransportError>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(done) => done.map_err(|source| ApiError::Transport { method, path: path.to_owned(), source })?,
            Err(_) => return Err(self.timed_out(method, path, self.timeout)),
        };
        if (200..300).contains(&status) {
            if bytes.is_empty() || status == 204 {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
                method,
                path: path.to_owned(),
                message: e.to_string(),
            });
        }
        Err(ApiError::refused(method, path.to_owned(), status, &bytes))
    }

    fn timed_out(&self, method: &'static str, path: &str, after: Duration) -> ApiError {
        ApiError::Timeout { method, path: path.to_owned(), timeout_ms: after.as_millis() as u64 }
    }

    fn backoff() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(4)
            .with_jitter()
    }

    /// A request that is safe to repeat: retried on 429, 5xx and timeouts.
    async fn send_idempotent(&self, method: &'static str, api: Api, path: &str, body: Body) -> Result<Value, ApiError> {
        (|| self.send_once(method, api, path, &body))
            .retry(Self::backoff())
            .when(ApiError::is_transient)
            .notify(|e, after| tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "retrying Twilio request"))
            .await
    }

    /// A request that creates something: retried only on 429, which Twilio
    /// documents as not acted upon.
    async fn send_create(&self, api: Api, path: &str, body: Body) -> Result<Value, ApiError> {
        (|| self.send_once("POST", api, path, &body))
            .retry(Self::backoff())
            .when(ApiError::is_rate_limited)
            .notify(
                |e, after| tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "rate limited; retrying"),
            )
            .await
    }

    /// Starts fetching a recording's audio (`GET …/Recordings/{RE…}`, WAV),
    /// for the caller to stream the body on. `stored_url` (the Record
    /// action's `RecordingUrl`) is used only when it lies under the
    /// configured core base URL, so the account's credentials go nowhere
    /// else; otherwise the recording's path is built from its SID. Errors
    /// name the path, never the URL.
    pub async fn fetch_recording(&self, recording_sid: &str, stored_url: &str) -> Result<Recording, ApiError> {
        let path = self.account_path(&format!("Recordings/{recording_sid}"));
        let ours = stored_url
            .strip_prefix(self.core_base.as_str())
            .filter(|rest| rest.starts_with(&path) && !rest.contains(['?', '#']));
        let url = match ours {
            Some(rest) => format!("{}{rest}", self.core_base),
            None => format!("{}{path}", self.core_base),
        };
        // The API's timeout is for API calls: the audio streams to a browser at
        // the listener's pace, so the whole of it, head and body, has longer.
        let allowed = RECORDING_TIMEOUT.max(self.timeout);
        let deadline = tokio::time::Instant::now() + allowed;
        let started = std::time::Instant::now();
        let sent = match tokio::time::timeout_at(deadline, self.http.send(Method::GET, &url, None, false)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(source)) => Err(ApiError::Transport { method: "GET", path: path.clone(), source }),
            Err(_) => Err(self.timed_out("GET", &path, allowed)),
        };
        let status = match &sent {
            Ok(r) => r.status().as_u16().to_string(),
            Err(ApiError::Timeout { .. }) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        crate::stats::twilio_request("GET", &path, &status, None, started.elapsed());
        let resp = sent?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(Recording { resp, deadline });
        }
        let bytes = match tokio::time::timeout_at(deadline, resp.into_body().collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) => {
                return Err(ApiError::Transport { method: "GET", path, source: TransportError::Read(e) });
            }
            Err(_) => return Err(self.timed_out("GET", &path, allowed)),
        };
        Err(ApiError::refused("GET", path, status, &bytes))
    }

    pub async fn get(&self, api: Api, path: &str) -> Result<Value, ApiError> {
        self.send_idempotent("GET", api, path, Body::None).await
    }

    /// Updates an existing resource (POST to its URL); safe to repeat.
    pub async fn update(&self, api: Api, path: &str, params: &Params) -> Result<Value, ApiError> {
        self.send_idempotent("POST", api, path, Body::Form(params.encode().into())).await
    }

    /// Creates a resource; never repeated after a timeout.
    pub async fn create(&self, api: Api, path: &str, params: &Params) -> Result<Value, ApiError> {
        self.send_create(api, path, Body::Form(params.encode().into())).await
    }

    pub async fn delete(&self, api: Api, path: &str) -> Result<(), ApiError> {
        self.send_idempotent("DELETE", api, path, Body::None).await.map(drop)
    }

    /// Every item of a list resource, following Twilio's paging (at most
    /// 100 pages). `key` is the array's name in the envelope (`workers`,
    /// `incoming_phone_numbers`).
    pub async fn list(&self, api: Api, path: &str, key: &str) -> Result<Vec<Value>, ApiError> {
        Ok(self.list_pages(api, path, key, 100).await?.items)
    }

    /// The items of at most `max_pages` pages of a list resource (at least
    /// one page is read), following Twilio's links: the core API's relative
    /// `next_page_uri`, TaskRouter's absolute `meta.next_page_url`. Links
    /// carry the request's filters and page size, so only the first path
    /// names them.
    pub async fn list_pages(&self, api: Api, path: &str, key: &str, max_pages: u32) -> Result<Listing, ApiError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(p) = next.take() {
            let page = self.get(api, &p).await?;
            let found = page.get(key).and_then(Value::as_array).ok_or_else(|| ApiError::Decode {
                method: "GET",
                path: p.clone(),
                message: format!("no {key:?} array in the list envelope"),
            })?;
            items.extend(found.iter().cloned());
            pages += 1;
            // Keep only the path and query of a link, so that paging stays
            // on the configured base URL.
            let raw = page
                .get("next_page_uri")
                .and_then(Value::as_str)
                .or_else(|| page.pointer("/meta/next_page_url").and_then(Value::as_str))
                .filter(|l| !l.is_empty());
            match raw {
                Some(link) if pages < max_pages.max(1) => next = Some(path_and_query(link)),
                Some(_) => return Ok(Listing { items, pages, complete: false }),
                None => {}
            }
        }
        Ok(Listing { items, pages, complete: true })
    }

    // -- the call flow's typed requests ----------------------------------------

    /// Places the outbound call to a location.
    pub async fn create_call(&self, req: &CreateCall) -> Result<CallResource, ApiError> {
        let path = self.account_path("Calls.json");
        let v = self.create(Api::Core, &path, &req.params()).await?;
        serde_json::from_value(v).map_err(|e| ApiError::Decode { method: "POST", path, message: e.to_string() })
    }

    /// Updates a live call: `Status=completed|canceled`, or a new `Url`.
    pub async fn update_call(&self, call_sid: &str, params: &Params) -> Result<Value, ApiError> {
        let path = self.account_path(&format!("Calls/{call_sid}.json"));
        self.update(Api::Core, &path, params).await
    }

    /// Sets a task's assignment status (`completed`, `canceled`) with a reason.
    pub async fn update_task_status(
        &self,
        workspace: &WorkspaceSid,
        task_sid: &str,
        status: &str,
        reason: &str,
    ) -> Result<Value, ApiError> {
        let path = format!("/v1/Workspaces/{workspace}/Tasks/{task_sid}");
        let mut p = Params::new();
        p.push("AssignmentStatus", status).push("Reason", reason);
        self.update(Api::TaskRouter, &path, &p).await
    }

    /// Creates a task on the voice channel (a callback's), its age in the
    /// queue counted from `virtual_start`.
    pub async fn create_task(
        &self,
        workspace: &WorkspaceSid,
        workflow: &str,
        attributes: &str,
        virtual_start: Timestamp,
        timeout_secs: u32,
    ) -> Result<TaskResource, ApiError> {
        let path = format!("/v1/Workspaces/{workspace}/Tasks");
        let mut p = Params::new();
        p.push("WorkflowSid", workflow)
            .push("Attributes", attributes)
            .push("TaskChannel", "voice")
            .push("Timeout", timeout_secs.to_string())
            .push("VirtualStartTime", virtual_start.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        decode("POST", &path, self.create(Api::TaskRouter, &path, &p).await?)
    }

    /// Accepts a pending reservation (`ReservationStatus=accepted`).
    pub async fn accept_reservation(
        &self,
        workspace: &WorkspaceSid,
        task_sid: &str,
        reservation_sid: &str,
    ) -> Result<Value, ApiError> {
        let path = format!("/v1/Workspaces/{workspace}/Tasks/{task_sid}/Reservations/{reservation_sid}");
        let mut p = Params::new();
        p.push("ReservationStatus", "accepted");
        self.update(Api::TaskRouter, &path, &p).await
    }
}

// -- reconciliation: what Twilio says happened ------------------------------

impl TwilioClient {
    /// Calls matching `filter`, newest first, up to its page cap.
    pub async fn list_calls(&self, filter: &CallFilter) -> Result<Listing<CallRecordResource>, ApiError> {
        let path = self.account_path(&format!("Calls.json?{}", filter.query()));
        let raw = self.list_pages(Api::Core, &path, "calls", filter.max_pages).await?;
        Ok(Listing { items: decode_all(&path, raw.items)?, pages: raw.pages, complete: raw.complete })
    }

    pub async fn fetch_call(&self, sid: &CallSid) -> Result<CallRecordResource, ApiError> {
        let path = self.account_path(&format!("Calls/{sid}.json"));
        decode("GET", &path, self.get(Api::Core, &path).await?)
    }

    /// A workspace's tasks in any of `assignment_statuses` (all when empty;
    /// sent comma-separated in one `AssignmentStatus`, as TaskRouter's docs
    /// write a list), oldest first, `page_size` a page, up to `max_pages` pages.
    pub async fn list_tasks(
        &self,
        workspace: &WorkspaceSid,
        assignment_statuses: &[&str],
        page_size: u32,
        max_pages: u32,
    ) -> Result<Listing<TaskResource>, ApiError> {
        let mut q = Params::new();
        if !assignment_statuses.is_empty() {
            q.push("AssignmentStatus", assignment_statuses.join(","));
        }
        q.push("PageSize", page_size.clamp(1, 1000).to_string());
        let path = Self::workspace_path(workspace.as_str(), &format!("Tasks?{}", q.encode()));
        let raw = self.list_pages(Api::TaskRouter, &path, "tasks", max_pages).await?;
        Ok(Listing { items: decode_all(&path, raw.items)?, pages: raw.pages, complete: raw.complete })
    }

    /// A workspace's tasks, in any status, whose attributes match
    /// `expression` (TaskRouter's `EvaluateTaskAttributes`), oldest first,
    /// up to `max_pages` pages of fifty.
    pub async fn find_tasks(
        &self,
        workspace: &WorkspaceSid,
        expression: &str,
        max_pages: u32,
    ) -> Result<Listing<TaskResource>, ApiError> {
        let mut q = Params::new();
        q.push("EvaluateTaskAttributes", expression).push("Ordering", "DateCreated:asc").push("PageSize", "50");
        let path = Self::workspace_path(workspace.as_str(), &format!("Tasks?{}", q.encode()));
        let raw = self.list_pages(Api::TaskRouter, &path, "tasks", max_pages).await?;
        Ok(Listing { items: decode_all(&path, raw.items)?, pages: raw.pages, complete: raw.complete })
    }

    pub async fn fetch_task(&self, workspace: &WorkspaceSid, task: &TaskSid) -> Result<TaskResource, ApiError> {
        let path = Self::workspace_path(workspace.as_str(), &format!("Tasks/{task}"));
        decode("GET", &path, self.get(Api::TaskRouter, &path).await?)
    }

    /// A worker's `location` attribute (what provision gives every worker).
    pub async fn worker_location(
        &self,
        workspace: &WorkspaceSid,
        worker: &WorkerSid,
    ) -> Result<Option<String>, ApiError> {
        let path = Self::workspace_path(workspace.as_str(), &format!("Workers/{worker}"));
        let w: WorkerResource = decode("GET", &path, self.get(Api::TaskRouter, &path).await?)?;
        let attrs: Value = w.attributes.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(Value::Null);
        Ok(attrs.get("location").and_then(Value::as_str).map(str::to_owned))
    }

    /// Every reservation of one task (a task has few: one per offer), up to
    /// ten pages of a thousand.
    pub async fn list_task_reservations(
        &self,
        workspace: &WorkspaceSid,
        task: &TaskSid,
    ) -> Result<Listing<ReservationResource>, ApiError> {
        let path = Self::workspace_path(workspace.as_str(), &format!("Tasks/{task}/Reservations?PageSize=1000"));
        let raw = self.list_pages(Api::TaskRouter, &path, "reservations", 10).await?;
        Ok(Listing { items: decode_all(&path, raw.items)?, pages: raw.pages, complete: raw.complete })
    }
}

// -- provisioning: TaskRouter and IncomingPhoneNumbers resources ------------
//
// Wire structs for what `provision` reads, with Twilio's snake_case JSON
// field names. Only the fields provision compares are kept; nullable ones are
// `Option`.

/// A TaskRouter workspace.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceResource {
    pub sid: String,
    pub friendly_name: String,
    #[serde(default)]
    pub event_callback_url: Option<String>,
    #[serde(default)]
    pub events_filter: Option<String>,
    #[serde(default)]
    pub multi_task_enabled: Option<bool>,
    #[serde(default)]
    pub timeout_activity_sid: Option<String>,
    #[serde(default)]
    pub timeout_activity_name: Option<String>,
}

/// A workspace's activity (Available, Offline, …).
#[derive(Debug, Clone, Deserialize)]
pub struct ActivityResource {
    pub sid: String,
    pub friendly_name: String,
    #[serde(default)]
    pub available: bool,
}

/// A task queue.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskQueueResource {
    pub sid: String,
    pub friendly_name: String,
    #[serde(default)]
    pub target_workers: Option<String>,
    #[serde(default)]
    pub max_reserved_workers: Option<u32>,
}

/// A worker; `attributes` is a JSON document in a string.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerResource {
    pub sid: String,
    pub friendly_name: String,
    #[serde(default)]
    pub attributes: Option<String>,
    #[serde(default)]
    pub activity_sid: Option<String>,
    #[serde(default)]
    pub activity_name: Option<String>,
}

/// One of a worker's task channels (`voice`, `chat`, …).
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerChannelResource {
    pub sid: String,
    #[serde(default)]
    pub task_channel_unique_name: Option<String>,
    #[serde(default)]
    pub configured_capacity: Option<u32>,
    #[serde(default)]
    pub available: Option<bool>,
}

/// A workflow; `configuration` is a JSON document in a string.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowResource {
    pub sid: String,
    pub friendly_name: String,
    #[serde(default)]
    pub configuration: Option<String>,
    #[serde(default)]
    pub task_reservation_timeout: Option<u32>,
}

/// A phone number the account owns.
#[derive(Debug, Clone, Deserialize)]
pub struct IncomingNumberResource {
    pub sid: String,
    pub phone_number: String,
    #[serde(default)]
    pub voice_url: Option<String>,
    #[serde(default)]
    pub voice_method: Option<String>,
    #[serde(default)]
    pub status_callback: Option<String>,
    #[serde(default)]
    pub status_callback_method: Option<String>,
    #[serde(default)]
    pub voice_fallback_url: Option<String>,
    #[serde(default)]
    pub voice_application_sid: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(method: &'static str, path: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Decode { method, path: path.to_owned(), message: e.to_string() })
}

fn decode_all<T: serde::de::DeserializeOwned>(path: &str, items: Vec<Value>) -> Result<Vec<T>, ApiError> {
    items.into_iter().map(|v| decode("GET", path, v)).collect()
}

/// The TaskRouter resources of one workspace, and the account's numbers.
impl TwilioClient {
    fn workspace_path(workspace: &str, rest: &str) -> String {
        if rest.is_empty() {
            format!("/v1/Workspaces/{workspace}")
        } else {
            format!("/v1/Workspaces/{workspace}/{rest}")
        }
    }

    /// Workspaces, optionally only those with this FriendlyName.
    pub async fn list_workspaces(&self, friendly_name: Option<&str>) -> Result<Vec<WorkspaceResource>, ApiError> {
        let mut path = "/v1/Workspaces?PageSize=100".to_owned();
        if let Some(name) = friendly_name {
            path.push_str(&format!("&FriendlyName={}", twilio::params::percent_encode(name)));
        }
        let items = self.list(Api::TaskRouter, &path, "workspaces").await?;
        decode_all(&path, items)
    }

    pub async fn fetch_workspace(&self, sid: &str) -> Result<WorkspaceResource, ApiError> {
        let path = Self::workspace_path(sid, "");
        decode("GET", &path, self.get(Api::TaskRouter, &path).await?)
    }

    pub async fn create_workspace(&self, params: &Params) -> Result<WorkspaceResource, ApiError> {
        let path = "/v1/Workspaces";
        decode("POST", path, self.create(Api::TaskRouter, path, params).await?)
    }

    pub async fn update_workspace(&self, sid: &str, params: &Params) -> Result<WorkspaceResource, ApiError> {
        let path = Self::workspace_path(sid, "");
        decode("POST", &path, self.update(Api::TaskRouter, &path, params).await?)
    }

    pub async fn list_activities(&self, workspace: &str) -> Result<Vec<ActivityResource>, ApiError> {
        let path = Self::workspace_path(workspace, "Activities?PageSize=100");
        let items = self.list(Api::TaskRouter, &path, "activities").await?;
        decode_all(&path, items)
    }

    pub async fn create_activity(
        &self,
        workspace: &str,
        name: &str,
        available: bool,
    ) -> Result<ActivityResource, ApiError> {
        let path = Self::workspace_path(workspace, "Activities");
        let mut p = Params::new();
        p.push("FriendlyName", name).push("Available", available.to_string());
        decode("POST", &path, self.create(Api::TaskRouter, &path, &p).await?)
    }

    pub async fn list_task_queues(&self, workspace: &str) -> Result<Vec<TaskQueueResource>, ApiError> {
        let path = Self::workspace_path(workspace, "TaskQueues?PageSize=100");
        let items = self.list(Api::TaskRouter, &path, "task_queues").await?;
        decode_all(&path, items)
    }

    pub async fn create_task_queue(&self, workspace: &str, params: &Params) -> Result<TaskQueueResource, ApiError> {
        let path = Self::workspace_path(workspace, "TaskQueues");
        decode("POST", &path, self.create(Api::TaskRouter, &path, params).await?)
    }

    pub async fn update_task_queue(
        &self,
        workspace: &str,
        sid: &str,
        params: &Params,
    ) -> Result<TaskQueueResource, ApiError> {
        let path = Self::workspace_path(workspace, &format!("TaskQueues/{sid}"));
        decode("POST", &path, self.update(Api::TaskRouter, &path, params).await?)
    }

    pub async fn delete_task_queue(&self, workspace: &str, sid: &str) -> Result<(), ApiError> {
        self.delete(Api::TaskRouter, &Self::workspace_path(workspace, &format!("TaskQueues/{sid}"))).await
    }

    pub async fn list_workers(&self, workspace: &str) -> Result<Vec<WorkerResource>, ApiError> {
        let path = Self::workspace_path(workspace, "Workers?PageSize=100");
        let items = self.list(Api::TaskRouter, &path, "workers").await?;
        decode_all(&path, items)
    }

    pub async fn create_worker(&self, workspace: &str, params: &Params) -> Result<WorkerResource, ApiError> {
        let path = Self::workspace_path(workspace, "Workers");
        decode("POST", &path, self.create(Api::TaskRouter, &path, params).await?)
    }

    pub async fn update_worker(&self, workspace: &str, sid: &str, params: &Params) -> Result<WorkerResource, ApiError> {
        let path = Self::workspace_path(workspace, &format!("Workers/{sid}"));
        decode("POST", &path, self.update(Api::TaskRouter, &path, params).await?)
    }

    pub async fn delete_worker(&self, workspace: &str, sid: &str) -> Result<(), ApiError> {
        self.delete(Api::TaskRouter, &Self::workspace_path(workspace, &format!("Workers/{sid}"))).await
    }

    pub async fn list_worker_channels(
        &self,
        workspace: &str,
        worker: &str,
    ) -> Result<Vec<WorkerChannelResource>, ApiError> {
        let path = Self::workspace_path(workspace, &format!("Workers/{worker}/Channels?PageSize=100"));
        let items = self.list(Api::TaskRouter, &path, "channels").await?;
        decode_all(&path, items)
    }

    /// Sets a worker channel's `Capacity` and/or `Available`.
    pub async fn update_worker_channel(
        &self,
        workspace: &str,
        worker: &str,
        channel: &str,
        params: &Params,
    ) -> Result<WorkerChannelResource, ApiError> {
        let path = Self::workspace_path(workspace, &format!("Workers/{worker}/Channels/{channel}"));
        decode("POST", &path, self.update(Api::TaskRouter, &path, params).await?)
    }

    pub async fn list_workflows(&self, workspace: &str) -> Result<Vec<WorkflowResource>, ApiError> {
        let path = Self::workspace_path(workspace, "Workflows?PageSize=100");
        let items = self.list(Api::TaskRouter, &path, "workflows").await?;
        decode_all(&path, items)
    }

    pub async fn create_workflow(&self, workspace: &str, params: &Params) -> Result<WorkflowResource, ApiError> {
        let path = Self::workspace_path(workspace, "Workflows");
        decode("POST", &path, self.create(Api::TaskRouter, &path, params).await?)
    }

    pub async fn update_workflow(
        &self,
        workspace: &str,
        sid: &str,
        params: &Params,
    ) -> Result<WorkflowResource, ApiError> {
        let path = Self::workspace_path(workspace, &format!("Workflows/{sid}"));
        decode("POST", &path, self.update(Api::TaskRouter, &path, params).await?)
    }

    /// The account's numbers equal to `number` (none when it is not ours).
    pub async fn find_incoming_numbers(&self, number: &E164) -> Result<Vec<IncomingNumberResource>, ApiError> {
        let path = self.account_path(&format!(
            "IncomingPhoneNumbers.json?PhoneNumber={}",
            twilio::params::percent_encode(number.as_str())
        ));
        let items = self.list(Api::Core, &path, "incoming_phone_numbers").await?;
        let all: Vec<IncomingNumberResource> = decode_all(&path, items)?;
        // The filter matches a pattern; keep only the exact number.
        Ok(all.into_iter().filter(|n| n.phone_number == number.as_str()).collect())
    }

    pub async fn update_incoming_number(&self, sid: &str, params: &Params) -> Result<IncomingNumberResource, ApiError> {
        let path = self.account_path(&format!("IncomingPhoneNumbers/{sid}.json"));
        decode("POST", &path, self.update(Api::Core, &path, params).await?)
    }
}

/// `https://host/v1/x?PageToken=…` → `/v1/x?PageToken=…`; a relative URI
/// passes through.
fn path_and_query(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| rest[i..].to_owned()).unwrap_or_else(|| "/".to_owned()),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_call_params_repeat_status_events_and_keep_plus() {
        let req = CreateCall {
            to: E164::parse("+14155550123").unwrap(),
            from: E164::parse("+12025550143").unwrap(),
            url: "https://x/dial-queue?from=%2B1".into(),
            status_callback: "https://x/status-callback".into(),
            timeout_secs: 20,
            machine_detection: true,
            machine_detection_speech_threshold_ms: 2400,
            machine_detection_timeout_secs: 30,
            call_token: None,
        };
        let p = req.params();
        assert_eq!(p.get("MachineDetection"), Some("Enable"));
        let without = CreateCall { machine_detection: false, ..req.clone() }.params();
        assert_eq!(without.get("MachineDetection"), None);
        assert_eq!(without.get("MachineDetectionTimeout"), None);
        assert_eq!(without.get("Timeout"), Some("20"));
        assert_eq!(
            p.get_all("StatusCallbackEvent").collect::<Vec<_>>(),
            ["initiated", "ringing", "answered", "completed"]
        );
        let body = p.encode();
        assert!(body.contains("To=%2B14155550123"), "{body}");
        assert!(body.contains("Url=https%3A%2F%2Fx%2Fdial-queue%3Ffrom%3D%252B1"), "{body}");
        assert_eq!(Params::parse(body.as_bytes()).get("Url"), Some("https://x/dial-queue?from=%2B1"));
    }

    #[test]
    fn call_filters_use_twilios_keys() {
        let f = CallFilter {
            to: Some("+14155550123".into()),
            status: Some("queued".into()),
            start_time_from: Some(TimeBound::day_of("2009-07-06T23:59:59Z".parse().unwrap())),
            page_size: 5000,
            ..CallFilter::default()
        };
        // `StartTime>=2009-07-06` in Twilio's docs is the key `StartTime>`.
        assert_eq!(f.query(), "To=%2B14155550123&Status=queued&StartTime%3E=2009-07-06&PageSize=1000");
        let at = CallFilter {
            start_time_from: Some(TimeBound::At("2009-07-06T20:30:05.250Z".parse().unwrap())),
            ..CallFilter::default()
        };
        assert_eq!(at.query(), "StartTime%3E=2009-07-06T20%3A30%3A05Z&PageSize=50");
    }

    #[test]
    fn dates_read_in_both_of_twilios_formats() {
        let call: CallRecordResource = serde_json::from_value(serde_json::json!({
            "sid": "CA00000000000000000000000000000001", "to": "client:alice", "from": "+12025550143",
            "status": "queued", "direction": "outbound-api", "date_created": "Mon, 06 Jul 2009 20:30:05 +0000",
            "start_time": null, "parent_call_sid": null,
        }))
        .unwrap();
        assert_eq!(call.date_created, Some("2009-07-06T20:30:05Z".parse().unwrap()));
        assert_eq!((call.start_time, call.end_time, call.answered_by), (None, None, None));
        let task: TaskResource = serde_json::from_value(serde_json::json!({
            "sid": "WT00000000000000000000000000000001", "assignment_status": "pending",
            "attributes": "{}", "date_created": "2009-07-06T20:30:05Z",
        }))
        .unwrap();
        assert_eq!(task.date_created, Some("2009-07-06T20:30:05Z".parse().unwrap()));
        let bad = serde_json::from_value::<CallRecordResource>(serde_json::json!({
            "sid": "CA00000000000000000000000000000001", "to": "x", "from": "y", "status": "queued",
            "date_created": "yesterday",
        }))
        .unwrap_err();
        assert!(bad.to_string().contains("yesterday"), "{bad}");
    }

    #[test]
    fn paging_urls_stay_on_our_base() {
        assert_eq!(
            path_and_query("https://taskrouter.twilio.com/v1/Workspaces?PageSize=50&Page=1"),
            "/v1/Workspaces?PageSize=50&Page=1"
        );
        assert_eq!(
            path_and_query("/2010-04-01/Accounts/AC1/Calls.json?Page=1"),
            "/2010-04-01/Accounts/AC1/Calls.json?Page=1"
        );
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

    pub(super) fn settings(base: &str, request_timeout_ms: u64) -> TwilioSettings {
        TwilioSettings {
            account_sid: ACCOUNT.parse().unwrap(),
            auth_token: "x".repeat(32).into(),
            api_base_url: base.parse().unwrap(),
            taskrouter_base_url: base.parse().unwrap(),
            workspace_sid: None,
            workflow_sid: None,
            request_timeout_ms,
            tls_roots: TlsRoots::Mozilla,
        }
    }

    /// Serves `app` on a loopback port; its base URL.
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    /// A recording that takes longer to stream than the client's request
    /// timeout arrives whole: that timeout is for API calls, not audio.
    #[tokio::test]
    async fn a_recording_slower_than_the_request_timeout_streams_whole() {
        use futures_util::TryStreamExt as _;
        const RECORDING: &str = "RE0123456789abcdef0123456789abcdef";
        let chunks = || {
            futures_util::stream::unfold(0u8, |n| async move {
                if n == 4 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                Some((Ok::<_, std::convert::Infallible>(vec![n; 1000]), n + 1))
            })
        };
        let path = format!("/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RECORDING}");
        let app = axum::Router::new()
            .route(&path, axum::routing::get(move || async move { axum::body::Body::from_stream(chunks()) }));
        let base = serve(app).await;
        let client = TwilioClient::new(&settings(&base, 400)).unwrap();
        let recording = client.fetch_recording(RECORDING, &format!("{base}{path}")).await.unwrap();
        let chunks: Vec<Bytes> =
            recording.into_stream().try_collect().await.expect("the whole body, past the 400 ms request timeout");
        let body = chunks.concat();
        assert_eq!(body.len(), 4000);
        assert_eq!(body[3999], 3);
    }

    /// What a create reaches the server as: one POST with the account's basic
    /// auth, our user agent, JSON accepted, and the form as sent.
    #[tokio::test]
    async fn a_create_sends_the_credentials_and_the_form() {
        use axum::http::HeaderMap;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let app = axum::Router::new().route(
            "/2010-04-01/Accounts/{account}/Things.json",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap, body: String| async move {
                    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                    seen.lock().unwrap().push((
                        header("authorization"),
                        header("user-agent"),
                        header("accept"),
                        header("content-type"),
                        body,
                    ));
                    (axum::http::StatusCode::CREATED, axum::Json(serde_json::json!({ "sid": "TH1" })))
                }
            }),
        );
        let base = serve(app).await;
        let client = TwilioClient::new(&settings(&base, 2000)).unwrap();
        let mut params = Params::new();
        params.push("To", "+15551230000").push("Url", "https://example.com/a?b=c&d=e");
        let made = client.create(Api::Core, &client.account_path("Things.json"), &params).await.unwrap();
        assert_eq!(made, serde_json::json!({ "sid": "TH1" }));
        let seen = seen.lock().unwrap();
        let [(auth, agent, accept, content_type, body)] = seen.as_slice() else { panic!("one request: {seen:?}") };
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{}", "x".repeat(32)));
        assert_eq!(auth.as_deref(), Some(format!("Basic {expected}").as_str()));
        assert!(agent.as_deref().is_some_and(|a| a.starts_with("call-router/")), "{agent:?}");
        assert_eq!(accept.as_deref(), Some("application/json"));
        assert_eq!(content_type.as_deref(), Some("application/x-www-form-urlencoded"));
        assert_eq!(body, "To=%2B15551230000&Url=https%3A%2F%2Fexample.com%2Fa%3Fb%3Dc%26d%3De");
    }

    /// A server that takes the request and never answers: the create ends in
    /// a timeout (Twilio may have acted), after the request timeout, and is
    /// not sent again.
    #[tokio::test]
    async fn a_create_without_an_answer_times_out_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn({
            let accepted = accepted.clone();
            async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    held.push(socket);
                }
            }
        });
        let client = TwilioClient::new(&settings(&base, 300)).unwrap();
        let started = std::time::Instant::now();
        let err = client.create(Api::Core, "/2010-04-01/Calls.json", &Params::new()).await.unwrap_err();
        assert!(matches!(err, ApiError::Timeout { timeout_ms: 300, .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "sent once");
    }

    /// A CONNECT proxy on loopback: its address, and the head of each
    /// CONNECT it took.
    pub(super) async fn connect_proxy() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn({
            let heads = heads.clone();
            async move {
                while let Ok((mut client, _)) = proxy.accept().await {
                    let heads = heads.clone();
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if client.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        let head = String::from_utf8(head).unwrap();
                        let target = head.split(' ').nth(1).unwrap().to_owned();
                        heads.lock().unwrap().push(head);
                        let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                }
            }
        });
        (addr, heads)
    }

    /// With a proxy set for Twilio's hosts, requests go through its CONNECT
    /// tunnel, with its credentials, and come back whole.
    #[tokio::test]
    async fn a_proxy_set_for_twilio_carries_the_requests_through_its_tunnel() {
        let app = axum::Router::new().route(
            "/2010-04-01/Accounts.json",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "via": "tunnel" })) }),
        );
        let base = serve(app).await;
        let (proxy_addr, heads) = connect_proxy().await;
        let proxies =
            hyper_util::client::proxy::matcher::Matcher::builder().all(format!("http://ops:pw@{proxy_addr}")).build();
        let client =
            TwilioClient::with_tls(&settings(&base, 2000), api_tls(TlsRoots::Mozilla).unwrap(), &proxies).unwrap();
        let answer = client.get(Api::Core, "/2010-04-01/Accounts.json").await.unwrap();
        assert_eq!(answer, serde_json::json!({ "via": "tunnel" }));
        let heads = heads.lock().unwrap();
        let [head] = heads.as_slice() else { panic!("one tunnel: {heads:?}") };
        let target = base.trim_start_matches("http://");
        assert!(head.starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")), "{head}");
        assert!(head.to_ascii_lowercase().contains("proxy-authorization: basic b3bzonb3"), "{head}");
    }

    /// A server that takes the connection and never starts TLS: the request
    /// ends at the connect timeout, long before the request timeout, and says
    /// why.
    #[tokio::test]
    async fn a_stalled_tls_handshake_ends_at_the_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let none = hyper_util::client::proxy::matcher::Matcher::builder().build();
        let tls = api_tls(TlsRoots::Mozilla).unwrap();
        let client =
            TwilioClient::with_tls_within(&settings(&base, 10_000), tls, &none, Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let err = client.create(Api::Core, "/2010-04-01/Calls.json", &Params::new()).await.unwrap_err();
        assert!(matches!(err, ApiError::Transport { .. }), "{err}");
        assert!(err.to_string().contains("no connection within 200 ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    /// A recording still arriving at its deadline ends in an error, not
    /// whole-looking audio cut short.
    #[tokio::test]
    async fn a_recording_past_its_deadline_ends_in_an_error() {
        use futures_util::StreamExt as _;
        let chunks = || {
            futures_util::stream::unfold(0u8, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                (n < 3).then(|| (Ok::<_, std::convert::Infallible>(vec![n; 1000]), n + 1))
            })
        };
        let app = axum::Router::new()
            .route("/audio", axum::routing::get(move || async move { axum::body::Body::from_stream(chunks()) }));
        let base = serve(app).await;
        let client = TwilioClient::new(&settings(&base, 2000)).unwrap();
        let resp = client.http.send(Method::GET, &format!("{base}/audio"), None, false).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(450);
        let mut stream = std::pin::pin!(Recording { resp, deadline }.into_stream());
        let mut got = 0;
        let end = loop {
            match stream.next().await {
                Some(Ok(bytes)) => got += bytes.len(),
                Some(Err(e)) => break e,
                None => panic!("the stream ended as if whole after {got} bytes"),
            }
        };
        assert_eq!(end.kind(), std::io::ErrorKind::TimedOut, "{end}");
        assert!(got < 3000, "{got}");
        assert!(stream.next().await.is_none(), "nothing after the error");
    }

    /// Nothing listens: a transport error that says why.
    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error_that_says_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = TwilioClient::new(&settings(&base, 2000)).unwrap();
        let err = client.create(Api::Core, "/2010-04-01/Calls.json", &Params::new()).await.unwrap_err();
        assert!(matches!(err, ApiError::Transport { .. }), "{err}");
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }
}

#[cfg(test)]
mod tls_tests {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

    fn pem_cert(name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(format!("{FIXTURES}/{name}")).expect("a test certificate")
    }

    /// Serves HTTPS on loopback with a certificate for 127.0.0.1 from a CA
    /// that no root store holds, answering every request "ok"; its URL.
    async fn untrusted_https_server() -> String {
        untrusted_https_server_on("127.0.0.1").await
    }

    /// [`untrusted_https_server`] on another loopback address (its
    /// certificate names only 127.0.0.1 and localhost).
    async fn untrusted_https_server_on(ip: &str) -> String {
        let key = PrivateKeyDer::from_pem_file(format!("{FIXTURES}/server.key")).expect("the test key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pem_cert("server.pem"), pem_cert("ca.pem")], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let url = format!("https://{ip}:{}/", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}";
                    let _ = tls.write_all(answer).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        url
    }

    /// The client for Twilio and webhooks checks certificates against
    /// Mozilla's roots: a certificate from an unknown CA is refused.
    #[tokio::test]
    async fn the_https_client_refuses_a_certificate_from_an_unknown_ca() {
        let url = untrusted_https_server().await;
        let client = https_client(TlsRoots::Mozilla).unwrap().build().unwrap();
        let err = client.get(&url).send().await.expect_err("an untrusted certificate must be refused");
        let chain = format!("{:?}", anyhow::Error::from(err));
        assert!(chain.contains("UnknownIssuer"), "refused for another reason: {chain}");
    }

    /// The same TLS set-up speaks HTTPS through reqwest once the server's CA
    /// is among the roots: what the first test sees is the check, not a
    /// client that cannot connect at all.
    #[tokio::test]
    async fn the_https_client_talks_to_a_server_whose_ca_it_trusts() {
        let url = untrusted_https_server().await;
        let tls = mozilla_tls(vec![pem_cert("ca.pem")]).unwrap();
        let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build().unwrap();
        let answer = client.get(&url).send().await.expect("a trusted certificate is accepted");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), r#"{"ok":true}"#);
    }

    fn api_client(url: &str, tls: rustls::ClientConfig) -> TwilioClient {
        let settings = super::request_tests::settings(url.trim_end_matches('/'), 5000);
        TwilioClient::with_tls(&settings, tls, &hyper_util::client::proxy::matcher::Matcher::builder().build()).unwrap()
    }

    /// The client for Twilio's API checks certificates against Mozilla's
    /// roots too: a certificate from an unknown CA is refused, and the error
    /// says why.
    #[tokio::test]
    async fn the_api_client_refuses_a_certificate_from_an_unknown_ca() {
        let url = untrusted_https_server().await;
        let client = api_client(&url, api_tls(TlsRoots::Mozilla).unwrap());
        let started = std::time::Instant::now();
        let err = client.get(Api::Core, "/2010-04-01/Accounts.json").await.expect_err("must be refused");
        assert!(matches!(err, ApiError::Transport { .. }), "{err}");
        assert!(err.to_string().contains("UnknownIssuer"), "refused for another reason: {err}");
        // Not sent again: the back-off's first wait alone is 100 ms or more.
        assert!(!err.is_transient(), "a refused certificate is retried");
        assert!(started.elapsed() < Duration::from_millis(100), "retried: {:?}", started.elapsed());
    }

    /// ... and speaks HTTPS once the server's CA is among its roots.
    #[tokio::test]
    async fn the_api_client_talks_to_a_server_whose_ca_it_trusts() {
        let url = untrusted_https_server().await;
        let client = api_client(&url, mozilla_tls(vec![pem_cert("ca.pem")]).unwrap());
        let answer = client.get(Api::Core, "/2010-04-01/Accounts.json").await.expect("a trusted certificate");
        assert_eq!(answer, serde_json::json!({ "ok": true }));
    }

    /// ... but not to a server whose certificate names another host, though
    /// its CA is trusted.
    #[tokio::test]
    async fn the_api_client_refuses_a_trusted_certificate_for_another_host() {
        let url = untrusted_https_server_on("127.0.0.2").await;
        let client = api_client(&url, mozilla_tls(vec![pem_cert("ca.pem")]).unwrap());
        let err = client.get(Api::Core, "/2010-04-01/Accounts.json").await.expect_err("must be refused");
        assert!(err.to_string().contains("not valid for name"), "refused for another reason: {err}");
        assert!(!err.is_transient(), "a refused certificate is retried");
    }

    /// Through a proxy's tunnel, TLS is between the client and Twilio's
    /// host: the certificate is checked against the host's name, and the
    /// proxy sees only the CONNECT.
    #[tokio::test]
    async fn https_through_a_proxys_tunnel_checks_the_hosts_certificate() {
        let url = untrusted_https_server().await;
        let (proxy_addr, heads) = super::request_tests::connect_proxy().await;
        let proxies =
            hyper_util::client::proxy::matcher::Matcher::builder().all(format!("http://{proxy_addr}")).build();
        let settings = |base: &str| super::request_tests::settings(base, 5000);
        let base = url.trim_end_matches('/');
        let trusting = mozilla_tls(vec![pem_cert("ca.pem")]).unwrap();
        let client = TwilioClient::with_tls(&settings(base), trusting, &proxies).unwrap();
        let answer = client.get(Api::Core, "/2010-04-01/Accounts.json").await.expect("through the tunnel");
        assert_eq!(answer, serde_json::json!({ "ok": true }));
        let untrusting =
            TwilioClient::with_tls(&settings(base), api_tls(TlsRoots::Mozilla).unwrap(), &proxies).unwrap();
        let err = untrusting.get(Api::Core, "/2010-04-01/Accounts.json").await.expect_err("must be refused");
        assert!(err.to_string().contains("UnknownIssuer"), "refused for another reason: {err}");
        let heads = heads.lock().unwrap();
        let target = base.trim_start_matches("https://");
        assert!(!heads.is_empty() && heads.iter().all(|h| h.starts_with(&format!("CONNECT {target} "))), "{heads:?}");
    }
}
