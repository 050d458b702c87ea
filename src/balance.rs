//! A round-robin HTTP load balancer on loopback, for running several
//! `serve` instances behind one public URL (issue 9).
//!
//! Per request, not per connection: the sandbox keeps its connections to a
//! webhook host alive, so spreading connections would leave most webhooks on
//! whichever instance got the first few. Each request goes to the next
//! backend in turn; one that cannot be reached, or drops the request without
//! an answer (a `kill -9` mid-request), is skipped and the request goes to
//! the next, as HAProxy does with `option redispatch` and
//! `retry-on conn-failure empty-response`. Webhooks may be delivered twice
//! that way, which Twilio does too and the server must bear.
//!
//! Headers pass through unchanged (`X-Twilio-Signature` among them), so the
//! signature the sandbox made over the balancer's URL checks out on every
//! instance whose `public_url` is the balancer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

/// The largest webhook body passed on.
const MAX_BODY: usize = 1 << 20;

/// What the balancer did for one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendCount {
    /// Requests it answered (any status).
    pub answered: u64,
    /// Requests sent to it that it did not answer (refused, reset, timed
    /// out); each went on to the next backend.
    pub skipped: u64,
}

struct Backend {
    url: String,
    answered: AtomicU64,
    skipped: AtomicU64,
}

struct Shared {
    backends: Vec<Backend>,
    next: AtomicUsize,
    /// Requests no backend answered (the client got a 502).
    unanswered: AtomicU64,
    http: reqwest::Client,
}

/// The balancer; stops serving when dropped.
pub struct Balancer {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// Listens on a free loopback port and spreads requests over `backends`
    /// (base URLs such as `http://127.0.0.1:4001`), in this order.
    pub async fn start(backends: &[String]) -> anyhow::Result<Balancer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the balancer's port")?;
        let url = format!("http://{}", listener.local_addr()?);
        let http = reqwest::Client::builder()
            .no_proxy()
            // Longer than serve's own 10 s request timeout.
            .timeout(Duration::from_secs(15))
            .build()
            .context("building the balancer's client")?;
        let shared = Arc::new(Shared {
            backends: backends
                .iter()
                .map(|u| Backend { url: u.clone(), answered: AtomicU64::new(0), skipped: AtomicU64::new(0) })
                .collect(),
            next: AtomicUsize::new(0),
            unanswered: AtomicU64::new(0),
            http,
        });
        let router = axum::Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("balancer: serving failed: {e}");
            }
        });
        Ok(Balancer { url, shared, task })
    }

    /// The public URL: where webhooks go.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Per backend, in the order given.
    pub fn counts(&self) -> Vec<BackendCount> {
        self.shared
            .backends
            .iter()
            .map(|b| BackendCount {
                answered: b.answered.load(Ordering::Relaxed),
                skipped: b.skipped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Requests no backend answered.
    pub fn unanswered(&self) -> u64 {
        self.shared.unanswered.load(Ordering::Relaxed)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hop-by-hop headers, and those the client recomputes.
fn passes(name: &header::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if passes(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::BAD_REQUEST, "the request's body could not be read").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let n = shared.backends.len();
    let first = shared.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..n {
        let backend = &shared.backends[(first + k) % n];
        match send(&shared.http, backend, &parts.method, path, &parts.headers, body.clone()).await {
            Ok(resp) => {
                backend.answered.fetch_add(1, Ordering::Relaxed);
                return resp;
            }
            Err(_) => {
                backend.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    shared.unanswered.fetch_add(1, Ordering::Relaxed);
    (StatusCode::BAD_GATEWAY, "no backend answered").into_response()
}

/// One try on one backend: its whole answer, or an error if it gave none.
async fn send(
    http: &reqwest::Client,
    backend: &Backend,
    method: &axum::http::Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> anyhow::Result<Response> {
    let mut out = http.request(method.clone(), format!("{}{path}", backend.url)).body(body);
    let mut forwarded = HeaderMap::new();
    copy_headers(headers, &mut forwarded);
    out = out.headers(forwarded);
    let resp = out.send().await?;
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    let mut answer = Response::new(Body::from(bytes));
    *answer.status_mut() = status;
    copy_headers(&resp_headers, answer.headers_mut());
    Ok(answer)
}
