//! Webhook delivery as Twilio does it: signed requests, connection overrides
//! (the `#ct=…&rt=…&tt=…&rc=…&rp=…` fragment on any webhook URL), retries,
//! and the webhook faults of [`crate::faults`].
//!
//! What is emulated, from Twilio's "Webhooks connection overrides" page:
//! - The fragment is never sent, and the signature is computed over the URL
//!   without it (the page says so; the helper libraries sign whatever URL
//!   they are given, so a server validates against its URL without the fragment).
//! - `ct` (connect timeout, 100–10000 ms, default 5000), `rt` (read timeout,
//!   100–15000, default 15000) and `tt` (total time for every try, 100–15000,
//!   default 15000) are virtual milliseconds. Each try waits at most
//!   `ct + rt`, capped by what is left of `tt`; no try starts after `tt`. A
//!   timeout is never shorter than [`crate::Config::min_webhook_timeout_ms`]
//!   real milliseconds, so scheduling noise on a busy machine at a high time
//!   scale does not read as a slow server.
//! - `rc` (retries, 0–5, default 1) and `rp` (which failures are retried: `4xx`,
//!   `5xx`, `ct` for a refused or failed connection, `rt` for a timeout, `all`;
//!   default `ct`). Retries follow at once, each on a new connection (never
//!   an idle one kept from before, which may lead to a server that has just
//!   died), and carry the same `I-Twilio-Idempotency-Token` header as the
//!   first try.
//! - `e` (edge) and `sni` are accepted and have no effect. A value out of range
//!   or a token Twilio does not know is ignored with a warning (Twilio reports
//!   11243 for a bad `rp`), and the default is used.

use std::sync::Arc;
use std::time::Duration;

use twilio::Params;

use twilio::overrides::{Overrides, split_fragment};

use crate::Shared;
use crate::faults::{Fault, Fired};
use crate::log;

/// The path of a URL, without query or fragment (`/status-callback`).
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or("/")
}

/// How one try of a webhook failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused or could not be made.
    Connect(String),
    /// No answer within the timeout.
    Timeout,
    /// The request was lost (a `drop` fault): the target never saw it.
    Dropped(String),
}

impl Failure {
    /// Twilio's error code for a TwiML fetch that failed this way.
    pub fn code(&self) -> u32 {
        match self {
            Failure::Connect(_) => 11205,
            Failure::Timeout | Failure::Dropped(_) => 11200,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connection failed: {e}"),
            Failure::Timeout => f.write_str("no answer within the timeout"),
            Failure::Dropped(why) => write!(f, "request lost: {why}"),
        }
    }
}

/// Whether a failed try is retried under these overrides' policy.
fn retries_on(o: &Overrides, result: &Result<(u16, String), Failure>) -> bool {
    let p = o.policy;
    match result {
        Ok((s, _)) if (400..500).contains(s) => p.on_4xx,
        Ok((s, _)) if (500..600).contains(s) => p.on_5xx,
        Ok(_) => false,
        Err(Failure::Connect(_)) => p.on_connect,
        Err(Failure::Timeout) => p.on_timeout,
        Err(Failure::Dropped(_)) => false,
    }
}

/// What a webhook is for, which decides how a late delivery behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// A TwiML fetch: the call waits for the answer.
    Document,
    /// A status callback, an event or a request whose answer is ignored:
    /// the sender does not wait for a late one.
    Notify,
}

impl Shared {
    /// Sends a webhook as Twilio does: overrides, retries, faults. Returns the
    /// last answer (any status) or how the last try failed.
    pub(crate) async fn webhook(
        self: &Arc<Self>,
        hook: Hook,
        method: &str,
        url: &str,
        params: &Params,
    ) -> Result<(u16, String), Failure> {
        let (target, fragment) = split_fragment(url);
        let (overrides, warnings) = Overrides::parse(fragment);
        for w in warnings {
            tracing::warn!(url = %target, "{w}");
        }
        let method = if method.eq_ignore_ascii_case("GET") { "GET" } else { "POST" };
        let fired = self.faults.webhook(method, url_path(target), self.clock.now_ms());
        match fired.as_ref().map(|f| &f.fault) {
            Some(Fault::Drop) => {
                let fired = fired.as_ref().map(Fired::label).unwrap_or_default();
                self.log_out(method, target, params, 0, String::new(), Some("dropped".into()), Some(fired.clone()), 1);
                Err(Failure::Dropped(fired))
            }
            Some(Fault::Late { delay_ms }) if hook == Hook::Notify => {
                let (sh, delay, method) = (self.clone(), *delay_ms, method.to_owned());
                let (target, params, label) = (target.to_owned(), params.clone(), fired.as_ref().map(Fired::label));
                tokio::spawn(async move {
                    sh.clock.sleep(delay).await;
                    let _ = sh.tries(&method, &target, &overrides, &params, label).await;
                });
                // The sender goes on at once: what it sends next overtakes this one.
                Ok((202, String::new()))
            }
            Some(Fault::Late { delay_ms }) => {
                self.clock.sleep(*delay_ms).await;
                self.tries(method, target, &overrides, params, fired.as_ref().map(Fired::label)).await
            }
            Some(Fault::Duplicate) => {
                let label = fired.as_ref().map(Fired::label);
                let first = self.tries(method, target, &overrides, params, label.clone()).await;
                let _ = self.tries(method, target, &overrides, params, label).await;
                first
            }
            _ => self.tries(method, target, &overrides, params, None).await,
        }
    }

    /// The tries of one delivery, as the overrides allow.
    async fn tries(
        &self,
        method: &str,
        target: &str,
        o: &Overrides,
        params: &Params,
        fault: Option<String>,
    ) -> Result<(u16, String), Failure> {
        let start = self.clock.now_ms();
        // Only retries carry the idempotency token, so most deliveries never
        // need one (nor the state lock that making one takes).
        let mut token: Option<String> = None;
        let mut attempt = 1;
        loop {
            let left = o.total_ms.saturating_sub(self.clock.now_ms().saturating_sub(start));
            let budget = (o.connect_ms + o.read_ms).min(left.max(1));
            let floor = Duration::from_millis(self.config.min_webhook_timeout_ms);
            let timeout = self.clock.real(budget).max(floor);
            let refused = self.faults.refused(method, url_path(target), self.clock.now_ms());
            let result = match &refused {
                Some(f) => {
                    let label = f.label();
                    self.log_out(
                        method,
                        target,
                        params,
                        0,
                        String::new(),
                        Some("connection refused".into()),
                        Some(label),
                        attempt,
                    );
                    Err(Failure::Connect(format!("connection refused ({})", f.label())))
                }
                None => {
                    if attempt > 1 && token.is_none() {
                        token = Some(self.with(|st, _| st.sid("IT")));
                    }
                    self.send_once(method, target, params, token.as_deref(), attempt, timeout, fault.clone()).await
                }
            };
            let elapsed = self.clock.now_ms().saturating_sub(start);
            if attempt > o.retries || elapsed >= o.total_ms || !retries_on(o, &result) {
                return result;
            }
            attempt += 1;
        }
    }

    /// One signed request (POST, or GET with the parameters in the query), logged.
    #[allow(clippy::too_many_arguments)]
    async fn send_once(
        &self,
        method: &str,
        url: &str,
        params: &Params,
        token: Option<&str>,
        attempt: u32,
        timeout: Duration,
        fault: Option<String>,
    ) -> Result<(u16, String), Failure> {
        let get = method == "GET";
        let full_url = if get && !params.is_empty() {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}{}", params.encode())
        } else {
            url.to_owned()
        };
        let key = self.config.auth_token.as_bytes();
        let signature = if get {
            twilio::signature::sign(key, &full_url, std::iter::empty())
        } else {
            twilio::signature::sign(key, url, params.iter())
        };
        let http = if attempt > 1 { &self.http_retry } else { &self.http };
        let req = if get {
            http.get(&full_url)
        } else {
            http.post(url).header("Content-Type", "application/x-www-form-urlencoded").body(params.encode())
        };
        let mut req = req
            .timeout(timeout)
            .header("X-Twilio-Signature", signature)
            .header("User-Agent", "TwilioProxy/1.1 (call-router-sandbox)");
        if let Some(token) = token {
            req = req.header("I-Twilio-Idempotency-Token", token);
        }
        let result = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.text().await {
                    Ok(body) => Ok((status, body)),
                    Err(e) if e.is_timeout() => Err(Failure::Timeout),
                    Err(e) => Err(Failure::Connect(e.to_string())),
                }
            }
            Err(e) if e.is_timeout() => Err(Failure::Timeout),
            Err(e) => Err(Failure::Connect(e.to_string())),
        };
        let (status, body, error) = match &result {
            Ok((s, b)) => (*s, b.clone(), None),
            Err(f) => (0, String::new(), Some(f.to_string())),
        };
        self.log_out(method, url, params, status, body, error, fault, attempt);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn log_out(
        &self,
        method: &str,
        url: &str,
        params: &Params,
        status: u16,
        response: String,
        error: Option<String>,
        fault: Option<String>,
        attempt: u32,
    ) {
        self.log.push(log::Entry {
            seq: 0,
            direction: "out",
            method: method.to_owned(),
            url: url.to_owned(),
            params: params.clone().into_vec(),
            status,
            response,
            error,
            fault,
            attempt,
            at_ms: self.clock.now_ms(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(url_path("http://h:1/status-callback?x=1#rc=1"), "/status-callback");
        assert_eq!(url_path("http://h:1"), "/");
    }

    #[test]
    fn which_failures_are_retried() {
        let (o, _) = Overrides::parse(Some("rp=4xx,ct"));
        assert!(retries_on(&o, &Ok((404, String::new()))));
        assert!(!retries_on(&o, &Ok((503, String::new()))));
        assert!(!retries_on(&o, &Ok((200, String::new()))));
        assert!(retries_on(&o, &Err(Failure::Connect("refused".into()))));
        assert!(!retries_on(&o, &Err(Failure::Timeout)));
        assert!(!retries_on(&o, &Err(Failure::Dropped("rule 1".into()))), "a lost request is never seen to fail");
    }
}
