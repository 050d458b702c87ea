//! Shared helpers for the sandbox's HTTP-level tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use reqwest::{Client, Response};
use serde_json::Value;
use twilio::Params;

pub struct T {
    pub sb: call_router_sandbox::Sandbox,
    pub url: String,
    pub sid: String,
    pub token: String,
    pub http: Client,
}

pub async fn start(time_scale: f64) -> T {
    let cfg = call_router_sandbox::Config::random(time_scale, 7);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sb = call_router_sandbox::start(cfg, listener).await.unwrap();
    T { url: sb.url(), sid: sb.account_sid().to_string(), token: sb.auth_token().to_owned(), http: Client::new(), sb }
}

impl T {
    pub fn core(&self, rest: &str) -> String {
        format!("{}/2010-04-01/Accounts/{}/{rest}", self.url, self.sid)
    }
    pub fn tr(&self, rest: &str) -> String {
        format!("{}/v1/{rest}", self.url)
    }
    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let p: Params = form.iter().map(|(k, v)| (*k, *v)).collect();
        let r = self
            .http
            .post(url)
            .basic_auth(&self.sid, Some(&self.token))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(p.encode())
            .send()
            .await
            .unwrap();
        read(r).await
    }
    pub async fn get(&self, url: &str) -> (u16, Value) {
        read(self.http.get(url).basic_auth(&self.sid, Some(&self.token)).send().await.unwrap()).await
    }
    pub async fn delete(&self, url: &str) -> (u16, Value) {
        read(self.http.delete(url).basic_auth(&self.sid, Some(&self.token)).send().await.unwrap()).await
    }
    pub async fn put_json(&self, url: &str, v: Value) -> (u16, Value) {
        read(self.http.put(url).basic_auth(&self.sid, Some(&self.token)).json(&v).send().await.unwrap()).await
    }
    pub async fn post_json(&self, url: &str, v: Value) -> (u16, Value) {
        read(self.http.post(url).basic_auth(&self.sid, Some(&self.token)).json(&v).send().await.unwrap()).await
    }

    /// Creates a workspace with a callback URL; returns (ws, available activity, offline activity).
    pub async fn workspace(&self, callback: Option<&str>) -> (String, String, String) {
        let mut form = vec![("FriendlyName", "ws")];
        if let Some(c) = callback {
            form.push(("EventCallbackUrl", c));
        }
        let (s, ws) = self.post(&self.tr("Workspaces"), &form).await;
        assert_eq!(s, 201, "{ws}");
        let ws = ws["sid"].as_str().unwrap().to_owned();
        let (_, acts) = self.get(&self.tr(&format!("Workspaces/{ws}/Activities"))).await;
        let find = |n: &str| {
            acts["activities"].as_array().unwrap().iter().find(|a| a["friendly_name"] == n).unwrap()["sid"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        (ws, find("Available"), find("Offline"))
    }
}

/// A TwiML document with these verbs.
pub fn twiml(body: &str) -> (u16, String) {
    (200, format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>"#))
}

/// Starts a sandbox, a TwiML app answering with `app(path, params)`, and buys
/// `number` pointing at `/in`; returns the sandbox, the app's base URL and its hits.
pub async fn with_app(
    scale: f64,
    number: &str,
    app: impl Fn(&str, &Params) -> (u16, String) + Send + Sync + 'static,
) -> (T, String, Hits) {
    let t = start(scale).await;
    let (base, hits) = receiver(t.token.clone(), app).await;
    let (s, n) = t
        .post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", number), ("VoiceUrl", &format!("{base}/in"))])
        .await;
    assert_eq!(s, 201, "{n}");
    (t, base, hits)
}

/// A simulated caller (`POST /sandbox/calls` with `body`); returns the call SID.
pub async fn call(t: &T, body: Value) -> String {
    let (s, v) = t.post_json(&format!("{}/sandbox/calls", t.url), body).await;
    assert_eq!(s, 201, "{v}");
    v["call_sid"].as_str().unwrap().to_owned()
}

/// Waits (up to 20 real seconds) for a call to end; returns its summary.
pub async fn wait_end(t: &T, sid: &str) -> Value {
    let (s, v) = t.get(&format!("{}/sandbox/calls/{sid}?wait_final_ms=20000", t.url)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["final"], true, "{v}");
    v
}

pub async fn read(r: Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A received webhook: path, params, and whether the signature validated.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub params: Params,
    pub signed: bool,
}

pub type Hits = Arc<Mutex<Vec<Hit>>>;

/// A tiny receiver on port 0: records every request (signature checked with
/// the server's validator) and answers with `reply(path, params)` as TwiML.
pub async fn receiver(
    token: String,
    reply: impl Fn(&str, &Params) -> (u16, String) + Send + Sync + 'static,
) -> (String, Hits) {
    let hits: Hits = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let reply = Arc::new(reply);
    let (h, b) = (hits.clone(), base.clone());
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let (hits, base, reply, token) = (h.clone(), b.clone(), reply.clone(), token.clone());
        async move {
            let params = Params::parse(&body);
            let url = format!("{base}{uri}");
            let sig = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok());
            let signed = twilio::signature::validate_form(token.as_bytes(), &url, params.iter(), sig).is_ok();
            let path = uri.path().to_owned();
            let (status, text) = reply(&path, &params);
            hits.lock().unwrap().push(Hit { path, params, signed });
            (axum::http::StatusCode::from_u16(status).unwrap(), [("content-type", "text/xml")], text)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

pub fn hits_at(hits: &Hits, path: &str) -> Vec<Hit> {
    hits.lock().unwrap().iter().filter(|h| h.path == path).cloned().collect()
}

pub fn event_types(hits: &Hits) -> Vec<String> {
    hits.lock().unwrap().iter().filter_map(|h| h.params.get("EventType").map(str::to_owned)).collect()
}

/// Polls `f` until it returns Some or the (real) timeout passes.
pub async fn until<T>(ms: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
