//! The sandbox's HTTP surface: one fallback handler that checks basic auth,
//! logs the request, and routes by path segments to the core API
//! (`/2010-04-01/…`), TaskRouter (`/v1/…`) or the control API (`/sandbox/…`).
//!
//! Routing by hand (rather than axum routes) is what lets `{Sid}.json` paths
//! and Twilio's 404/405 bodies be exact.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use twilio::{ErrorBody, Params};

use crate::Shared;
use crate::faults::{Fault, Fired};

mod control;
mod core;
pub(crate) mod net;

pub(crate) use self::core::call_json;
mod taskrouter;

/// A parsed request.
pub(crate) struct Req {
    pub method: Method,
    pub query: Params,
    pub form: Params,
    /// The raw body (JSON for the control API).
    pub body: Bytes,
}

impl Req {
    /// A parameter from the form body, else the query string.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.form.get(key).or_else(|| self.query.get(key))
    }
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// A JSON reply.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

pub(crate) type ApiResult = Result<Reply, ErrorBody>;

pub(crate) fn ok(v: Value) -> ApiResult {
    Ok(Reply { status: 200, body: Some(v) })
}
pub(crate) fn created(v: Value) -> ApiResult {
    Ok(Reply { status: 201, body: Some(v) })
}
pub(crate) fn created_json(v: Value) -> ApiResult {
    created(v)
}
pub(crate) fn no_content() -> ApiResult {
    Ok(Reply { status: 204, body: None })
}
pub(crate) fn not_found(path: &str) -> ErrorBody {
    ErrorBody::new(404, 20404, format!("The requested resource {path} was not found"))
}
pub(crate) fn method_not_allowed(method: &Method) -> ErrorBody {
    ErrorBody::new(405, 20004, format!("Method {method} not allowed"))
}
pub(crate) fn bad(code: u32, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(400, code, msg)
}

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    // Handlers read their connection (`ConnectInfo<net::Conn>`), so the
    // router is served with `into_make_service_with_connect_info` over `net::Listener`.
    axum::Router::new()
        .fallback(dispatch)
        .with_state(shared)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a sandbox handler panicked");
    error_response(ErrorBody::new(500, 20500, "Internal Server Error"))
}

fn error_response(e: ErrorBody) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e)).into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(b64) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(raw) else { return false };
    let Some((user, pass)) = text.split_once(':') else {
        return false;
    };
    // Constant time, since the sandbox may listen beyond loopback.
    use subtle::ConstantTimeEq as _;
    let user_ok = user.as_bytes().ct_eq(shared.config.account_sid.as_str().as_bytes());
    let pass_ok = pass.as_bytes().ct_eq(shared.config.auth_token.as_bytes());
    bool::from(user_ok & pass_ok)
}

async fn dispatch(
    AxState(shared): AxState<Arc<Shared>>,
    axum::extract::ConnectInfo(conn): axum::extract::ConnectInfo<net::Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = Params::parse(uri.query().unwrap_or_default().as_bytes());
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form { Params::parse(&body) } else { Params::new() };
    let logged_params = if is_form { form.clone() } else { query.clone() };
    let req = Req { method: method.clone(), query, form, body };
    let authorized = authorized(&shared, &headers);
    let fired = if authorized { shared.faults.rest(method.as_str(), &path, shared.clock.now_ms()) } else { None };
    // A recording's media (`…/Recordings/RE…` or `.wav`) is audio, not JSON.
    let status_fault =
        matches!(&fired, Some(Fired { fault: Fault::Status { .. } | Fault::StatusAfterActing { .. }, .. }));
    if method == Method::GET
        && authorized
        && !status_fault
        && let Some(media) = core::recording_media(&shared, &path)
    {
        let (status, response, reply) = match media {
            Ok(bytes) => (
                200,
                format!("<{} bytes of audio/x-wav>", bytes.len()),
                (StatusCode::OK, [("content-type", "audio/x-wav")], bytes).into_response(),
            ),
            Err(e) => (e.status, serde_json::to_string(&e).unwrap_or_default(), error_response(e)),
        };
        shared.log.push(crate::log::Entry {
            seq: 0,
            direction: "in",
            method: method.to_string(),
            url: uri.to_string(),
            params: logged_params.into_vec(),
            status,
            response,
            error: None,
            fault: fired.as_ref().map(Fired::label),
            attempt: 1,
            at_ms: shared.clock.now_ms(),
        });
        if let Some(Fault::Delay { delay_ms }) = fired.map(|f| f.fault) {
            shared.clock.sleep(delay_ms).await;
        }
        return reply;
    }
    let result = match (&fired, authorized) {
        (_, false) => Err(ErrorBody::new(401, 20003, "Authenticate")),
        (Some(Fired { fault: Fault::Status { status, .. }, .. }), true) => Err(fault_error(*status)),
        // It takes effect; the client hears a server error instead of the result.
        (Some(Fired { fault: Fault::StatusAfterActing { status }, .. }), true) => {
            let _ = route(&shared, &path, &req).await;
            Err(fault_error(*status))
        }
        (_, true) => route(&shared, &path, &req).await,
    };
    let (status, body) = match result {
        Ok(Reply { status, body }) => (status, body),
        Err(e) => (e.status, Some(serde_json::to_value(&e).unwrap_or(Value::Null))),
    };
    let text = body.as_ref().map(Value::to_string).unwrap_or_default();
    // The log endpoint itself is not logged, or every read would grow the log.
    if !path.starts_with("/sandbox/log") {
        shared.log.push(crate::log::Entry {
            seq: 0,
            direction: "in",
            method: method.to_string(),
            url: uri.to_string(),
            params: logged_params.into_vec(),
            status,
            response: text.clone(),
            error: fired
                .as_ref()
                .filter(|f| f.fault == Fault::Reset)
                .map(|_| "answer dropped: connection reset".into()),
            fault: fired.as_ref().map(Fired::label),
            attempt: 1,
            at_ms: shared.clock.now_ms(),
        });
    }
    match fired.map(|f| f.fault) {
        Some(Fault::Reset) => {
            // It took effect; the client hears nothing.
            conn.reset();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Some(Fault::Delay { delay_ms }) => shared.clock.sleep(delay_ms).await,
        Some(Fault::Status { status: 429, retry_after_secs }) => {
            let after = retry_after_secs.unwrap_or(1).to_string();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("content-type", "application/json"), ("retry-after", after.as_str())],
                text,
            )
                .into_response();
        }
        _ => {}
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if body.is_none() {
        return code.into_response();
    }
    let mut resp = (code, [("content-type", "application/json")], text).into_response();
    if status == 401 {
        // Twilio names the scheme and realm, so clients know to send basic auth.
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
    }
    resp
}

/// Twilio's error body for an injected error status (20500, 20503, 20429…).
fn fault_error(status: u16) -> ErrorBody {
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    ErrorBody::new(status, 20000 + u32::from(status), reason)
}

async fn route(shared: &Arc<Shared>, path: &str, req: &Req) -> ApiResult {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["2010-04-01", "Accounts", account, rest @ ..] => {
            let account = account.trim_end_matches(".json");
            if account != shared.config.account_sid.as_str() {
                return Err(not_found(path));
            }
            let rest: Vec<&str> = rest.iter().map(|s| s.trim_end_matches(".json")).collect();
            core::route(shared, path, &rest, req).await
        }
        ["v1", rest @ ..] => taskrouter::route(shared, path, rest, req),
        ["sandbox", rest @ ..] => control::route(shared, path, rest, req).await,
        _ => Err(not_found(path)),
    }
}

/// `Page` and `PageSize` from the query. Twilio's default size is 50; a size
/// outside 1–1000, or a page that is not a whole number, is refused (400
/// 20001) rather than clamped.
pub(crate) fn page_params(req: &Req) -> Result<(usize, usize), ErrorBody> {
    let size = match req.get("PageSize") {
        None => 50,
        Some(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad(20001, format!("PageSize {s:?} must be an integer between 1 and 1000")))?,
    };
    let page = match req.get("Page") {
        None => 0,
        Some(s) => {
            s.trim().parse::<usize>().map_err(|_| bad(20001, format!("Page {s:?} must be a non-negative integer")))?
        }
    };
    Ok((page, size))
}

/// One page cut from a list, with what its links need.
///
/// Paging follows Twilio's links: `Page` and `PageSize`, plus a `PageToken`
/// naming where the page starts. The sandbox's tokens are `PA<sid>` (the
/// items after that SID) and `PB<sid>` (the items before it), so a client
/// walking `next_page_url` neither repeats nor skips items when others are
/// deleted, or (in the newest-first Calls list) created, meanwhile. A token
/// whose SID is no longer listed falls back to `Page × PageSize`.
pub(crate) struct Page {
    pub items: Vec<Value>,
    pub page: usize,
    pub size: usize,
    /// The index of the first item in the whole list.
    pub start: usize,
    /// Whether items follow this page.
    pub more: bool,
    /// The tokens of the next and previous pages, when there are such pages.
    pub next: Option<String>,
    pub previous: Option<String>,
}

fn sid_of(v: &Value) -> Option<&str> {
    v.get("sid").and_then(Value::as_str)
}

/// Cuts one page from `items` (each with a `sid`), honouring `PageToken`.
pub(crate) fn paginate(req: &Req, items: Vec<Value>) -> Result<Page, ErrorBody> {
    let (page, size) = page_params(req)?;
    let total = items.len();
    let position = |sid: &str| items.iter().position(|v| sid_of(v) == Some(sid));
    let by_page = || {
        let start = page.saturating_mul(size).min(total);
        (start, start.saturating_add(size).min(total))
    };
    let (start, end) = match req.get("PageToken").filter(|t| !t.is_empty()) {
        None => by_page(),
        Some(t) => match (t.get(..2), t.get(2..)) {
            (Some("PA"), Some(sid)) => match position(sid) {
                Some(i) => (i + 1, (i + 1).saturating_add(size).min(total)),
                None => by_page(),
            },
            (Some("PB"), Some(sid)) => match position(sid) {
                Some(i) => (i.saturating_sub(size), i),
                None => by_page(),
            },
            _ => return Err(bad(20001, format!("PageToken {t:?} is invalid"))),
        },
    };
    let more = end < total;
    let next =
        end.checked_sub(1).and_then(|i| items.get(i)).and_then(sid_of).filter(|_| more).map(|s| format!("PA{s}"));
    let previous = items.get(start).and_then(sid_of).filter(|_| start > 0).map(|s| format!("PB{s}"));
    let items = items.into_iter().skip(start).take(end.saturating_sub(start)).collect();
    Ok(Page { items, page, size, start, more, next, previous })
}

/// The query string of a page link: the request's filters plus paging.
fn page_query(req: &Req, page: usize, size: usize, token: Option<&str>) -> String {
    let mut q = Params::new();
    for (k, v) in req.query.iter().filter(|(k, _)| !matches!(*k, "Page" | "PageSize" | "PageToken")) {
        q.push(k, v);
    }
    q.push("PageSize", size.to_string()).push("Page", page.to_string());
    if let Some(t) = token {
        q.push("PageToken", t);
    }
    q.encode()
}

/// The links of a page: (this page, first, next, previous), as query strings.
fn page_links(req: &Req, p: &Page) -> (String, String, Option<String>, Option<String>) {
    let this = page_query(req, p.page, p.size, req.get("PageToken").filter(|t| !t.is_empty()));
    let first = page_query(req, 0, p.size, None);
    // A neighbour without a SID to name it (never the case for the
    // resources served) is linked by its number alone.
    let next = p.more.then(|| page_query(req, p.page.saturating_add(1), p.size, p.next.as_deref()));
    let previous = (p.start > 0).then(|| page_query(req, p.page.saturating_sub(1), p.size, p.previous.as_deref()));
    (this, first, next, previous)
}

/// The core API's list envelope; URIs are relative.
pub(crate) fn core_page(req: &Req, path: &str, key: &str, p: Page) -> Value {
    let (this, first, next, previous) = page_links(req, &p);
    let end = p.start.saturating_add(p.items.len().saturating_sub(1));
    let link = |q: Option<String>| q.map_or(Value::Null, |q| Value::String(format!("{path}?{q}")));
    json!({
        "page": p.page,
        "page_size": p.size,
        "start": p.start,
        "end": end,
        "uri": format!("{path}?{this}"),
        "first_page_uri": format!("{path}?{first}"),
        "next_page_uri": link(next),
        "previous_page_uri": link(previous),
        key: p.items,
    })
}

/// TaskRouter's list envelope; URLs are absolute.
pub(crate) fn tr_page(base: &str, req: &Req, path: &str, key: &str, p: Page) -> Value {
    let (this, first, next, previous) = page_links(req, &p);
    let link = |q: Option<String>| q.map_or(Value::Null, |q| Value::String(format!("{base}{path}?{q}")));
    json!({
        "meta": {
            "page": p.page,
            "page_size": p.size,
            "first_page_url": format!("{base}{path}?{first}"),
            "previous_page_url": link(previous),
            "next_page_url": link(next),
            "url": format!("{base}{path}?{this}"),
            "key": key,
        },
        key: p.items,
    })
}

/// A list filter's yes/no as Twilio reads it: `true`, `1` or `yes` (any
/// case) mean yes; any other value means no.
pub(crate) fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// Parses a boolean form value as Twilio does (`true`/`false`, any case).
pub(crate) fn parse_bool(name: &str, v: &str) -> Result<bool, ErrorBody> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(20001, format!("{name} must be true or false"))),
    }
}

pub(crate) fn parse_num<T: std::str::FromStr>(name: &str, v: Option<&str>) -> Result<Option<T>, ErrorBody> {
    v.map(|s| s.trim().parse().map_err(|_| bad(20001, format!("{name} {s:?} is not a valid number")))).transpose()
}

/// A URL Twilio would accept for a webhook: absolute http(s).
pub(crate) fn valid_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://")) && u.len() > 8 && !u.contains(char::is_whitespace)
}
