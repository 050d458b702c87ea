//! Prometheus metrics: the process-global recorder, the names the rest of
//! the server records under, and the sampler that sets the gauges read from
//! the database (the outbox's backlog, callers waiting, lines in use).
//!
//! Recording goes through the `metrics` facade's macros; before [`install`]
//! runs (the CLI's `provision`, say) they do nothing. [`install`] is cheap:
//! Prometheus's recorder is built behind it on a thread a second later or at
//! the first scrape (see `deferred`), off the path to the first webhooks. The recorder is
//! installed once per process, so a test process that starts several servers
//! shares one set of counters: tests look at deltas or at specific labels.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock, mpsc};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use self::deferred::Deferred;

use crate::domain::Outcome;
use crate::store::Store;

pub const WEBHOOKS: &str = "call_router_webhook_requests_total";
pub const WEBHOOK_SECONDS: &str = "call_router_webhook_duration_seconds";
pub const CALLS: &str = "call_router_calls_total";
pub const QUEUE_WAIT_SECONDS: &str = "call_router_queue_wait_seconds";
pub const CALLERS_WAITING: &str = "call_router_callers_waiting";
pub const LINES_IN_USE: &str = "call_router_lines_in_use";
pub const OUTBOX_PENDING: &str = "call_router_outbox_pending";
pub const OUTBOX_OLDEST_SECONDS: &str = "call_router_outbox_oldest_pending_age_seconds";
pub const TWILIO_REQUESTS: &str = "call_router_twilio_requests_total";
pub const TWILIO_SECONDS: &str = "call_router_twilio_request_duration_seconds";
pub const RECONCILER_REPAIRS: &str = "call_router_reconciler_repairs_total";
pub const RECONCILER_MISSED: &str = "call_router_reconciler_missed_total";
pub const BUILD_INFO: &str = "call_router_build_info";

/// How often [`Sampler`] reads the gauges from the database.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The outbox's command kinds, so that an empty backlog shows as 0 rather
/// than as no series at all. (`withdraw_dial` is carried out by the store and
/// never queued.)
const OUTBOX_KINDS: [&str; 6] = ["dial", "find_dial", "hang_up", "redirect_caller", "cancel_task", "complete_task"];

/// At most this many open journeys are read for the live gauges.
pub const MAX_OPEN: i64 = 10_000;

mod deferred;

/// The process's recorder: installed at once, Prometheus's behind it once built.
static RECORDER: Deferred<PrometheusRecorder> = Deferred::new();
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static BUILT: tokio::sync::Notify = tokio::sync::Notify::const_new();
static INSTALLED: Once = Once::new();

/// How long a scrape right after start waits for the recorder to be built.
const BUILD_WAIT: Duration = Duration::from_secs(2);

/// How long after [`install`] Prometheus's recorder is built, unless a scrape
/// asks for it first: its clock's calibration busy-waits on one core for up
/// to 200 ms, which would compete with a start's first webhooks.
const BUILD_AFTER: Duration = Duration::from_secs(1);

/// Tells the building thread not to wait out [`BUILD_AFTER`] (a scrape came).
static BUILD_NOW: Mutex<Option<mpsc::Sender<()>>> = Mutex::new(None);

/// Installs the global recorder (once per process; cheap) and builds
/// Prometheus's behind it on a thread of its own, [`BUILD_AFTER`] later or
/// at the first scrape: what is recorded meanwhile is kept and passed on.
/// When another recorder is already installed (a program embedding this
/// crate), the handle renders only what this one would have recorded:
/// nothing.
pub fn install() {
    INSTALLED.call_once(|| {
        if metrics::set_global_recorder(&RECORDER).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows nothing of this server");
        }
        describe();
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let (now, asked) = mpsc::channel();
        *BUILD_NOW.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        let built = std::thread::Builder::new().name("metrics-recorder".into()).spawn(move || {
            let _ = asked.recv_timeout(BUILD_AFTER);
            hand_over();
            BUILT.notify_waiters();
        });
        if let Err(e) = built {
            tracing::warn!(error = %e, "metrics: could not start the thread building the recorder; building it here");
            hand_over();
        }
    });
}

fn hand_over() {
    let recorder = build();
    let handle = recorder.handle();
    // Handed over before the handle is shown, so that a render sees what came early.
    let _ = RECORDER.ready(recorder);
    let _ = HANDLE.set(handle);
}

fn build() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(QUEUE_WAIT_SECONDS.into()),
                &[5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0],
            )
        })
        .expect("bucket lists are not empty")
        .build_recorder()
}

/// The recorder's handle: has it built now if it is not yet, and waits for
/// it (up to [`BUILD_WAIT`]), after installing the recorder if nobody had.
async fn handle() -> Option<&'static PrometheusHandle> {
    install();
    let built = BUILT.notified();
    tokio::pin!(built);
    built.as_mut().enable();
    if let Some(h) = HANDLE.get() {
        return Some(h);
    }
    if let Some(now) = &*BUILD_NOW.lock().unwrap_or_else(|e| e.into_inner()) {
        let _ = now.send(());
    }
    let _ = tokio::time::timeout(BUILD_WAIT, built).await;
    HANDLE.get()
}

/// The text exposition of every metric; `None` when the recorder is still
/// not built after the wait.
pub async fn render() -> Option<String> {
    handle().await.map(PrometheusHandle::render)
}

/// Samplers whose first reading of the gauges has not run yet: a sampler's
/// first reading runs once the start-up grace is over (`app::STARTUP_GRACE`),
/// not before the first webhooks, and a scrape waits for every one (a test
/// process runs several servers).
static UNSAMPLED: AtomicUsize = AtomicUsize::new(0);
static SAMPLED_NOW: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// How long a scrape right after start waits for the gauges' first reading.
const FIRST_SAMPLE_WAIT: Duration = Duration::from_secs(2);

/// Waits (up to [`FIRST_SAMPLE_WAIT`]) until every sampler has read the
/// gauges once, so that the first scrape shows them rather than no series.
pub async fn first_sample() {
    let deadline = tokio::time::Instant::now() + FIRST_SAMPLE_WAIT;
    loop {
        let notified = SAMPLED_NOW.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if UNSAMPLED.load(Ordering::Acquire) == 0 || tokio::time::timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

/// Counts one sampler in [`UNSAMPLED`] until dropped: after its first
/// reading, or with the sampler if it never ran.
struct FirstSample;

impl FirstSample {
    fn new() -> Self {
        UNSAMPLED.fetch_add(1, Ordering::AcqRel);
        FirstSample
    }
}

impl Drop for FirstSample {
    fn drop(&mut self) {
        UNSAMPLED.fetch_sub(1, Ordering::AcqRel);
        SAMPLED_NOW.notify_waiters();
    }
}

fn describe() {
    describe_counter!(WEBHOOKS, "HTTP requests answered, by matched route and status");
    describe_histogram!(WEBHOOK_SECONDS, metrics::Unit::Seconds, "time to answer an HTTP request, by route");
    describe_counter!(CALLS, "inbound calls whose outcome became final, by outcome and location");
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "how long callers waited in the queue (Twilio's QueueTime at /enqueue-action), by location"
    );
    describe_gauge!(CALLERS_WAITING, "callers in the queue now, by location");
    describe_gauge!(LINES_IN_USE, "callers bridged to a location now, by location");
    describe_gauge!(OUTBOX_PENDING, "commands in the outbox not yet carried out (pending or sending), by kind");
    describe_gauge!(OUTBOX_OLDEST_SECONDS, "age of the oldest command not yet carried out, by kind");
    describe_counter!(TWILIO_REQUESTS, "requests to Twilio's REST API, by endpoint, status and Twilio error code");
    describe_histogram!(TWILIO_SECONDS, metrics::Unit::Seconds, "time to an answer from Twilio's REST API");
    describe_counter!(RECONCILER_REPAIRS, "deliveries of the reconciler's observations that owed Twilio something");
    describe_counter!(RECONCILER_MISSED, "callers the reconciler recorded as missed");
    describe_gauge!(BUILD_INFO, "the running build; the value is always 1");
}

/// A call whose outcome became final.
pub fn call_settled(outcome: Outcome, location: Option<&str>) {
    counter!(CALLS, "outcome" => outcome.as_str(), "location" => location.unwrap_or("unknown").to_owned()).increment(1);
}

/// A caller left the queue after `secs`.
pub fn queue_wait(location: Option<&str>, secs: f64) {
    histogram!(QUEUE_WAIT_SECONDS, "location" => location.unwrap_or("unknown").to_owned()).record(secs);
}

/// One request to Twilio: `status` is the HTTP status, or `timeout` / `error`
/// when none came; `code` is Twilio's error code, empty when there is none.
pub fn twilio_request(method: &str, path: &str, status: &str, code: Option<u32>, took: Duration) {
    let endpoint = format!("{method} {}", endpoint_template(path));
    let code = code.map(|c| c.to_string()).unwrap_or_default();
    histogram!(TWILIO_SECONDS, "endpoint" => endpoint.clone()).record(took.as_secs_f64());
    counter!(TWILIO_REQUESTS, "endpoint" => endpoint, "status" => status.to_owned(), "code" => code).increment(1);
}

/// A finished reconciler pass.
pub fn reconciled(repairs: usize, missed: usize) {
    counter!(RECONCILER_REPAIRS).increment(repairs as u64);
    counter!(RECONCILER_MISSED).increment(missed as u64);
}

/// A Twilio REST path as a bounded label: no query, no API version, no
/// account or workspace scope, no `.json`, and every SID as `{sid}`
/// (`/2010-04-01/Accounts/AC…/Calls/CA….json?x=1` → `/Calls/{sid}`).
pub fn endpoint_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if matches!(segments.first(), Some(&"2010-04-01" | &"v1")) {
        segments.remove(0);
    }
    // The account's or workspace's own scope says nothing about the endpoint;
    // the resource itself (`/Workspaces/{sid}`) is kept.
    if segments.len() > 2 && matches!(segments[0], "Accounts" | "Workspaces") && looks_like_sid(segments[1]) {
        segments.drain(..2);
    }
    let mut out = String::new();
    for s in segments {
        let s = s.strip_suffix(".json").unwrap_or(s);
        out.push('/');
        if looks_like_sid(s) {
            out.push_str("{sid}");
        } else if s.bytes().any(|b| b.is_ascii_digit()) {
            // Anything else that carries an identifier (a phone number, a date).
            out.push_str("{id}");
        } else {
            out.push_str(s);
        }
    }
    if out.is_empty() { "/".to_owned() } else { out }
}

/// Two upper-case letters and 32 hex digits.
fn looks_like_sid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 34 && b[..2].iter().all(u8::is_ascii_uppercase) && b[2..].iter().all(u8::is_ascii_hexdigit)
}

/// Sets the gauges read from the database, every [`SAMPLE_EVERY`], and keeps
/// the recorder's histograms drained between scrapes.
pub struct Sampler {
    store: Store,
    /// Let go after the first reading (or try), by `sample`.
    first: Mutex<Option<FirstSample>>,
}

impl Sampler {
    pub fn new(store: Store) -> Self {
        Self { store, first: Mutex::new(Some(FirstSample::new())) }
    }

    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = &mut stop => return,
            }
            if let Err(e) = self.sample().await {
                tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "metrics: could not read the gauges from the database");
            }
            if let Some(h) = HANDLE.get() {
                h.run_upkeep();
            }
        }
    }

    /// One reading of every database gauge. After the first (whether it
    /// read them or not), a scrape need not wait for this sampler any longer.
    pub async fn sample(&self) -> anyhow::Result<()> {
        let read = self.read().await;
        drop(self.first.lock().unwrap_or_else(|e| e.into_inner()).take());
        read
    }

    async fn read(&self) -> anyhow::Result<()> {
        let now = crate::store::now_ms();
        let mut backlog: BTreeMap<String, (i64, i64)> =
            OUTBOX_KINDS.iter().map(|k| ((*k).to_owned(), (0, now))).collect();
        for (kind, n, oldest) in self.store.outbox_backlog().await? {
            backlog.insert(kind, (n, oldest));
        }
        for (kind, (n, oldest)) in backlog {
            let age = if n == 0 { 0.0 } else { (now - oldest).max(0) as f64 / 1000.0 };
            gauge!(OUTBOX_PENDING, "kind" => kind.clone()).set(n as f64);
            gauge!(OUTBOX_OLDEST_SECONDS, "kind" => kind).set(age);
        }

        // Counted by the database: loading the open journeys to count them
        // held every one in memory at once (10,000 of them under load).
        let mut live: BTreeMap<String, (i64, i64)> =
            self.store.location_names().await?.into_iter().map(|name| (name, (0, 0))).collect();
        for (location, waiting, bridged) in self.store.live_callers(MAX_OPEN).await? {
            live.insert(location, (waiting, bridged));
        }
        for (location, (waiting, bridged)) in live {
            gauge!(CALLERS_WAITING, "location" => location.clone()).set(waiting as f64);
            gauge!(LINES_IN_USE, "location" => location).set(bridged as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_template;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const CA: &str = "CA0123456789abcdef0123456789abcdef";
    const WS: &str = "WS0123456789abcdef0123456789abcdef";
    const WT: &str = "WT0123456789abcdef0123456789abcdef";
    const WR: &str = "WR0123456789abcdef0123456789abcdef";

    #[test]
    fn twilio_paths_become_bounded_templates() {
        let cases = [
            (format!("/2010-04-01/Accounts/{AC}/Calls.json"), "/Calls"),
            (format!("/2010-04-01/Accounts/{AC}/Calls.json?To=%2B14155550123&StartTime%3E=2026-11-29"), "/Calls"),
            (format!("/2010-04-01/Accounts/{AC}/Calls/{CA}.json"), "/Calls/{sid}"),
            (format!("/v1/Workspaces/{WS}/Tasks/{WT}"), "/Tasks/{sid}"),
            (format!("/v1/Workspaces/{WS}/Tasks/{WT}/Reservations?PageSize=50"), "/Tasks/{sid}/Reservations"),
            (format!("/v1/Workspaces/{WS}/Tasks/{WT}/Reservations/{WR}"), "/Tasks/{sid}/Reservations/{sid}"),
            (format!("/v1/Workspaces/{WS}"), "/Workspaces/{sid}"),
            ("/v1/Workspaces?FriendlyName=x".to_owned(), "/Workspaces"),
            (
                format!("/v1/Workspaces/{WS}/Workers/WK0123456789abcdef0123456789abcdef/Channels/voice"),
                "/Workers/{sid}/Channels/voice",
            ),
            (format!("/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers/+14155550123.json"), "/IncomingPhoneNumbers/{id}"),
        ];
        for (path, want) in cases {
            assert_eq!(endpoint_template(&path), want, "{path}");
        }
    }

    #[test]
    fn a_sid_needs_its_prefix_and_32_hex_digits() {
        assert_eq!(endpoint_template("/Calls/CA0123"), "/Calls/{id}");
        assert_eq!(endpoint_template("/Calls/ca0123456789abcdef0123456789abcdef"), "/Calls/{id}");
        assert_eq!(endpoint_template(&format!("/Calls/{CA}x")), "/Calls/{id}");
        assert_eq!(endpoint_template(""), "/");
    }
}
