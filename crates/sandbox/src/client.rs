//! A typed HTTP client for the sandbox: buying numbers, setting simulated
//! phones, placing simulated calls and reading summaries, state and the log.
//! It speaks only HTTP, like every other user of the sandbox.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use twilio::Params;

use crate::state::Behaviour;

/// The control API's client; cheap to clone.
#[derive(Clone)]
pub struct SandboxClient {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: String,
}

impl std::fmt::Debug for SandboxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth token is left out on purpose.
        f.debug_struct("SandboxClient").field("base", &self.base).field("account_sid", &self.account_sid).finish()
    }
}

/// What `place_call` asks for.
#[derive(Debug, Clone, Default)]
pub struct PlaceCall {
    pub from: String,
    pub to: String,
    /// Digits pressed at Gathers, comma-separated per Gather (`"2"`, `"1,3"`).
    pub digits: Option<String>,
    /// Virtual seconds the caller waits before hanging up if not yet bridged.
    pub patience_secs: Option<u64>,
}

impl SandboxClient {
    pub fn new(base_url: impl Into<String>, account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::new(),
            base: base_url.into().trim_end_matches('/').to_owned(),
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let resp = req
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .send()
            .await
            .with_context(|| format!("sending {what} to the sandbox"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("reading the answer to {what}"))?;
        if !status.is_success() {
            bail!("{what}: the sandbox answered {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
    }

    /// Buys a number (`POST IncomingPhoneNumbers.json`) pointing at `voice_url`; returns its JSON.
    pub async fn buy_number(&self, e164: &str, voice_url: Option<&str>) -> anyhow::Result<Value> {
        let mut p = Params::new();
        p.push("PhoneNumber", e164).push_opt("VoiceUrl", voice_url);
        let url = format!("{}/2010-04-01/Accounts/{}/IncomingPhoneNumbers.json", self.base, self.account_sid);
        self.send(
            self.http.post(url).header("Content-Type", "application/x-www-form-urlencoded").body(p.encode()),
            "buy a number",
        )
        .await
    }

    /// Sets the account's rate for calls created over the API (`None`: no queue).
    pub async fn set_calls_per_second(&self, rate: Option<f64>) -> anyhow::Result<()> {
        let url = format!("{}/sandbox/limits", self.base);
        self.send(self.http.put(url).json(&json!({ "calls_per_second": rate })), "set the limits").await.map(drop)
    }

    /// Sets how a number behaves when the sandbox rings it.
    pub async fn set_phone(&self, e164: &str, behaviour: &Behaviour) -> anyhow::Result<()> {
        let url = format!("{}/sandbox/phones/{}", self.base, twilio::params::percent_encode(e164));
        self.send(self.http.put(url).json(behaviour), "set a phone").await.map(drop)
    }

    /// A simulated caller dials a Twilio number; returns the call SID.
    pub async fn place_call(&self, c: &PlaceCall) -> anyhow::Result<String> {
        let body = json!({ "from": c.from, "to": c.to, "digits": c.digits, "patience_secs": c.patience_secs });
        let v = self.send(self.http.post(format!("{}/sandbox/calls", self.base)).json(&body), "place a call").await?;
        v.get("call_sid").and_then(Value::as_str).map(str::to_owned).context("no call_sid in the answer")
    }

    /// A call's summary (status, legs, task, queue and bridge times, timeline).
    pub async fn call_summary(&self, sid: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/sandbox/calls/{sid}", self.base)), "read a call").await
    }

    /// Waits (long-polling) until a call is final or `real_timeout` passes; returns its summary.
    pub async fn wait_for_call_end(&self, sid: &str, real_timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + real_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis().min(30_000);
            let url = format!("{}/sandbox/calls/{sid}?wait_final_ms={left}", self.base);
            let v = self.send(self.http.get(url), "wait for a call").await?;
            if v.get("final").and_then(Value::as_bool) == Some(true) {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("call {sid} did not end within {real_timeout:?}: {v}");
            }
        }
    }

    /// The whole state: numbers, calls, tasks, reservations, workers, …
    pub async fn state(&self) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/sandbox/state", self.base)), "read the state").await
    }

    /// Log entries from `since`; returns them and the next `since`.
    pub async fn log(&self, since: u64) -> anyhow::Result<(Vec<Value>, u64)> {
        let v = self.send(self.http.get(format!("{}/sandbox/log?since={since}", self.base)), "read the log").await?;
        let entries = v.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
        let next = v.get("next").and_then(Value::as_u64).unwrap_or(since);
        Ok((entries, next))
    }

    /// Adds fault rules (they apply from the next request on); returns their ids.
    pub async fn add_faults(&self, rules: &[crate::faults::Rule]) -> anyhow::Result<Vec<u64>> {
        let body = json!({ "rules": rules });
        let v = self.send(self.http.post(format!("{}/sandbox/faults", self.base)).json(&body), "add faults").await?;
        Ok(v.get("ids").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_u64).collect())
    }

    /// The active fault rules, with how often each matched and fired.
    pub async fn faults(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.send(self.http.get(format!("{}/sandbox/faults", self.base)), "read the faults").await?;
        Ok(v.get("rules").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.send(self.http.delete(format!("{}/sandbox/faults", self.base)), "clear the faults").await.map(drop)
    }
}
