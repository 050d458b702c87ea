//! A local Twilio-compatible emulator of the Voice and TaskRouter APIs.
//!
//! The call-router server reaches it only over HTTP, through its normal REST
//! client and webhooks: point a Twilio client at [`Sandbox::url`] with the
//! sandbox's account SID and auth token and it works unchanged. One base URL
//! serves the core API (`/2010-04-01/Accounts/{AC}/…`), TaskRouter
//! (`/v1/Workspaces/…`) and the control API (`/sandbox/…`). Every path,
//! including `/sandbox/…`, requires HTTP basic auth (AccountSid:AuthToken);
//! without it the answer is 401 with Twilio's body (code 20003) and
//! `WWW-Authenticate: Basic realm="Twilio API"`.
//!
//! Resources answer with the fields, list filters and checks of Twilio's
//! OpenAPI description (`tests/conformance.rs` holds them to it). Lists page
//! by `Page`/`PageSize` (1–1000, else 400) and follow their links'
//! `PageToken` (`PA<sid>`: after that item, `PB<sid>`: before it). Calls
//! filter by `StartTime`/`EndTime` (`=` a UTC day, `<` before, `>` on or
//! after; a date or a date-time); deleting a call that has not ended is 409
//! (20009).
//!
//! # Layout
//! - [`clock`]: virtual time (`time_scale` virtual seconds per real second).
//! - [`state`]: the resources, in one `State` behind a `std::sync::Mutex`.
//! - [`engine`]: TaskRouter routing, pure (state + time in, events + timers out).
//! - [`expr`]: TaskRouter's expression language.
//! - `events`: TaskRouter events to `EventCallbackUrl`, in order per task.
//! - [`webhook`]: every request the sandbox sends: signed, with connection
//!   overrides (`#ct=…&rc=…&rp=…`), retries and webhook faults.
//! - [`faults`]: fault rules (seeded, by side, method, path, share and window).
//! - `api`: the HTTP surface (core, TaskRouter, control), errors and paging.
//! - `voice`: call legs, the TwiML interpreter and simulated phones.
//! - [`log`]: every request received and sent.
//! - [`client`]: a typed HTTP client for tests and the demo.
//!
//! The IO rim lives here: `Shared::apply` delivers an engine's events and
//! arms its timers.
//!
//! # Control API (JSON, basic auth)
//! - `GET /sandbox/log?since=N[&limit=M]` → `{"entries":[{seq, direction: "in"|"out",
//!   method, url, params, status, response, error, at_ms}], "next": N}`. Reads of the
//!   log are not logged.
//! - `GET /sandbox/state` → numbers, workspaces, activities, queues, workflows,
//!   workers, tasks, reservations, calls (summaries), phones, `now_ms`.
//! - `PUT /sandbox/limits` `{"calls_per_second": 1}` (or `null`, the default: no
//!   queue); `GET` reads it. With a rate, calls created over the API wait in the
//!   account's queue as Twilio's do: `queued`, with no `start_time` (so a
//!   `StartTime` filter does not list them), until dialled one per
//!   `1 / calls_per_second` virtual seconds; canceling one there ends it `canceled`.
//! - `PUT /sandbox/phones/{e164}` with one of `{"behaviour":"person","rings":2,"talk_secs":30}`,
//!   `{"behaviour":"voicemail","rings":3}`, `{"behaviour":"busy"}`,
//!   `{"behaviour":"no_answer"}`, `{"behaviour":"fail"}`; person and voicemail take an
//!   optional `"digits":"1"` (comma-separated, one entry per `<Gather>`, on an inbound
//!   leg's `<Dial><Number>` whisper and on an API-created leg's own TwiML alike: a
//!   `<Gather>` with no entry left waits its `timeout` and falls through); voicemail an
//!   optional `"greeting_secs":3` (what `DetectMessageEnd` waits for; default 10). `GET` and
//!   `DELETE` too; `GET /sandbox/phones` lists them.
//! - `POST /sandbox/calls` `{"from":"+1…","to":"+1<IncomingPhoneNumber>","digits":"2",
//!   "patience_secs":600}` → 201 `{"call_sid":"CA…"}`. The number must exist (404)
//!   and have a VoiceUrl (400 21614).
//! - `GET /sandbox/calls/{sid}[?wait_final_ms=N]` → a summary: `final`, `status`,
//!   `direction`, `from`, `to`, `answered_by`, `parent_call_sid`, `linked_leg`,
//!   `task_sid`, `reservation_sid`, `queue_result`, `enqueued_ms`, `queue_wait_ms`,
//!   `bridge_start_ms`, `bridge_end_ms`, `talk_ms`, `start_ms`, `answered_ms`, `end_ms`,
//!   `recording_url`, `error_code`, `error_message`, `timeline: [{at_ms, event}]`,
//!   `heard: [{at_ms, verb: "say"|"play", what}]` (what the leg's party heard from its
//!   own TwiML, waitUrl documents included: a `<Say>`'s text or a `<Play>`'s URL, noted
//!   when it began; it lasts its virtual duration; a `say` also has `language` and
//!   `voice`, its attributes, null when absent).
//!   With `wait_final_ms` it long-polls (at most 120 s real) until the call is final.
//! - `POST /sandbox/faults` with a rule or `{"rules":[…]}` → 201 `{"ids":[…]}`;
//!   `GET` → `{"rules":[{id, …rule, matched, fired}], "now_ms"}`; `DELETE` clears
//!   them, `DELETE /sandbox/faults/{id}` removes one. A rule:
//!   `{"on":"rest"|"webhook", "method":"POST", "path":"/2010-04-01/Accounts/*/Calls.json",
//!   "share":0.1, "fault":…, "from_ms":…, "to_ms":…, "limit":…, "seed":…}` with `fault`
//!   one of `status` (+`status`, `retry_after_secs`), `status_after_acting` (+`status`, a
//!   5xx answered after the request took effect), `delay` (+`delay_ms`), `reset`
//!   (REST), `duplicate`, `late` (+`delay_ms`), `drop`, `refuse` (webhooks). See [`faults`].
//!
//! # Simulation rules
//! - All durations are virtual: one ring is 6 s; a number with no behaviour answers
//!   as a person after one ring and talks 30 s once bridged. `<Say>` takes about
//!   15 characters a second (at least 1 s), every `<Play>` clip 10 s (`loop="0"`:
//!   an hour), `<Pause>` its length, `<Record>` records min(maxLength, 5) s, a
//!   Gather's digits are pressed 1 s after its prompts. AMD decides after 2.5 s
//!   (human) or 4 s (machine; `DetectMessageEnd` waits for the 10 s greeting and
//!   says `machine_end_beep`); past `MachineDetectionTimeout` it says `unknown`.
//!   Real HTTP time counts too: at `time_scale` 1000, a 1 ms webhook is 1 virtual s.
//! - `<Record>`'s action gets `RecordingUrl`, `RecordingSid` and `RecordingDuration`.
//!   With `transcribe="true"` and a `transcribeCallback` (the callback alone implies
//!   it), that URL gets, 15 virtual s later, `TranscriptionSid`, `TranscriptionText`
//!   ("Hello, this is <From>. … Please call me back. (<n> seconds)"),
//!   `TranscriptionStatus` (`completed`; `failed`, without text, outside 2-120 s),
//!   `TranscriptionUrl`, `RecordingSid` and `RecordingUrl`, with the call's own
//!   parameters but `CallToken`. `GET` of the `RecordingUrl` (or with `.wav`) gives
//!   the audio: `audio/x-wav`, 8 kHz 16-bit mono of the recording's length, its
//!   samples derived from the SID; `.json` gives the resource.
//! - A simulated caller hangs up after `patience_secs` unless bridged; once
//!   bridged, the call lasts until the far person's `talk_secs` run out (that leg
//!   hangs up, and the caller's `<Enqueue action>` gets `QueueResult=bridged`).
//! - `From` of a created call must be an E.164 IncomingPhoneNumber of the account,
//!   or any E.164 number when `CallToken` is given; otherwise 400 21212.
//! - Webhooks follow their URL's connection overrides (see [`webhook`]): by
//!   default one retry after a failed connection, 15 virtual s to answer; the
//!   fragment is not sent and not signed.
//! - A TwiML fetch that fails (a refused connection: 11205; a timeout or a
//!   non-2xx answer: 11200) or a document that does not parse (12100) goes to the
//!   number's `VoiceFallbackUrl`, when set, with `ErrorCode` and `ErrorUrl`. If
//!   that fails too, or there is none, the caller hears "We are sorry, an
//!   application error has occurred. Goodbye." (an inbound call is answered for
//!   it) and the call ends `completed`, with `error_code` on its summary. A
//!   failed status callback or event is logged and the call goes on.
//! - TaskRouter: a waiting task holds up to its queue's `MaxReservedWorkers`
//!   pending reservations, one per free matching worker, workers offered
//!   longest-idle first. Accepting one (REST, or `<Dial><Queue reservationSid>`)
//!   rescinds the others (`reservation.rescinded`, their workers freed). A
//!   reservation that times out or is rejected ends; the task waits in its queue
//!   again and is offered anew, as a new reservation with a new
//!   `reservation.created`, to any eligible worker, the same one included (after
//!   a timeout the worker first moves to the workspace's `TimeoutActivitySid`).
//!   A workflow target's timeout that passes while the task is reserved moves
//!   it to the next target when its reservations end without acceptance.
//!   Tasks created over the API take `VirtualStartTime` (ISO 8601, not in the
//!   future): pending tasks are offered by priority, then by that age.
//!   A reservation update takes `ReservationStatus` or `Instruction`
//!   (`accept`, `reject`, `redirect` with `RedirectCallSid`/`RedirectUrl`/
//!   `RedirectAccept`; the others are refused with 400), and `WorkerActivitySid`
//!   moves the worker on accept or reject. A worker update with
//!   `RejectPendingReservations=true` (only with an `ActivitySid` that is not
//!   available) rejects its pending reservations and re-routes their tasks.
//!   Workspaces multitask unless `MultiTaskEnabled=false`; a worker's voice
//!   capacity (1 by default) bounds its tasks. Events go to `EventCallbackUrl`
//!   signed, filtered by `EventsFilter`, in order per task (per worker for worker
//!   events) over 16 lanes per workspace, with 2 retries 1 virtual s apart.
//! - Canceling or deleting a task that `<Enqueue workflowSid>` created leaves
//!   its caller in the queue, as Twilio documents; the caller leaving the queue
//!   (hang-up, `<Leave>`, redirect) cancels a task still waiting.
//! - `<Enqueue>name</Enqueue>` (no `workflowSid`) waits in a named queue, made on
//!   first use (1000 callers at most, then `QueueResult=queue-full`), with the
//!   same `waitUrl` loop. A `<Gather>` in a waitUrl document takes the caller's
//!   next `digits` entry: its action is fetched once with `Digits` and the queue's
//!   parameters, and its document runs in the queue (`<Leave>` dequeues); with no
//!   entry left it waits its `timeout`, and the loop goes on. `<Dial><Queue>name</Queue></Dial>` bridges its oldest
//!   caller; it waits on an empty queue until someone joins or the `<Dial>`
//!   timeout (`no-answer`), and fails on a queue that does not exist. A `url` on
//!   `<Queue>` runs on the dequeued caller (`Say`, `Play`, `Pause`, `Redirect`;
//!   with `QueueSid`, `QueueTime`, `DequeingCallSid`) before the bridge; the
//!   dequeuing leg's talk time starts once the caller is connected.
//! - `<Dial><Number>` rings a simulated phone as an `outbound-dial` child leg. A
//!   `url` on `<Number>` runs on the child once it answers, with the child's call
//!   parameters (`CallSid`, `ParentCallSid`, `Direction=outbound-dial`), while the
//!   caller hears ringing: prompts, `Gather` (answered with the phone's `digits`),
//!   `Redirect`, `Hangup`. If it hangs the child up (or cannot be fetched), the
//!   child never took the call: `DialCallStatus=no-answer`, `DialBridged=false`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use twilio::Params;
use twilio::sid::AccountSid;

pub mod client;
pub mod clock;
pub mod engine;
pub mod expr;
pub mod faults;
pub mod log;
pub mod state;

mod api;
mod events;
mod voice;
pub mod webhook;

use clock::{Clock, VMs};
use engine::{Effects, Timer};
use state::State;

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct Config {
    pub account_sid: AccountSid,
    pub auth_token: String,
    /// Virtual seconds per real second; 1.0 is real time.
    pub time_scale: f64,
    /// Seeds every SID and random choice, so runs repeat.
    pub seed: u64,
    /// The shortest real time a webhook try may take before it times out,
    /// whatever its virtual timeout: at time scale 1000 a 15 s read timeout
    /// is 15 real ms, less than a busy machine's scheduling noise.
    pub min_webhook_timeout_ms: u64,
}

/// The default [`Config::min_webhook_timeout_ms`].
pub const MIN_WEBHOOK_TIMEOUT_MS: u64 = 2000;

impl Config {
    /// A made-up account SID and auth token.
    pub fn random(time_scale: f64, seed: u64) -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let token: [u8; 16] = rng.random();
        Self {
            account_sid: AccountSid::generate(&mut rng),
            auth_token: token.iter().map(|b| format!("{b:02x}")).collect(),
            time_scale,
            seed,
            min_webhook_timeout_ms: MIN_WEBHOOK_TIMEOUT_MS,
        }
    }

    /// Credentials from `TWILIO_ACCOUNT_SID` / `TWILIO_AUTH_TOKEN` when both
    /// are set and the SID is valid, else a made-up pair (`made_up = true`).
    pub fn from_env_or_random(time_scale: f64, seed: u64) -> (Config, bool) {
        let sid = std::env::var("TWILIO_ACCOUNT_SID").ok().and_then(|s| AccountSid::parse(&s).ok());
        let token = std::env::var("TWILIO_AUTH_TOKEN").ok().filter(|t| !t.is_empty());
        match (sid, token) {
            (Some(account_sid), Some(auth_token)) => {
                let config = Config {
                    account_sid,
                    auth_token,
                    time_scale,
                    seed,
                    min_webhook_timeout_ms: MIN_WEBHOOK_TIMEOUT_MS,
                };
                (config, false)
            }
            _ => (Config::random(time_scale, seed), true),
        }
    }
}

/// A running sandbox.
pub struct Sandbox {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

/// Starts a sandbox on a bound listener.
pub async fn start(config: Config, listener: tokio::net::TcpListener) -> anyhow::Result<Sandbox> {
    use anyhow::Context as _;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = listener.local_addr().context("reading the listener's address")?;
    let base_url = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .pool_max_idle_per_host(256)
        .build()
        .context("building the webhook HTTP client")?;
    // Retries open a connection of their own: after a server dies, the pool's
    // idle connections to it may not have been seen to close yet, and a retry
    // sent on one fails like the first try did.
    let http_retry = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .pool_max_idle_per_host(0)
        .build()
        .context("building the webhook retries' HTTP client")?;
    let (shutdown, mut rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        clock: Clock::new(config.time_scale),
        state: Mutex::new(State::new(config.seed)),
        faults: faults::Faults::new(config.seed),
        config,
        base_url,
        log: log::RequestLog::default(),
        http,
        http_retry,
        events: events::EventBus::default(),
        legs: Mutex::new(HashMap::new()),
        waiters: Mutex::new(HashMap::new()),
        shutdown: shutdown.subscribe(),
    });
    let router = api::router(shared.clone());
    let server = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let listener = api::net::Listener(listener);
        let service = router.into_make_service_with_connect_info::<api::net::Conn>();
        if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    });
    Ok(Sandbox { shared, addr, shutdown, server })
}

impl Sandbox {
    /// The one base URL serving `/2010-04-01/…`, `/v1/…` and `/sandbox/…`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn account_sid(&self) -> &AccountSid {
        &self.shared.config.account_sid
    }
    pub fn auth_token(&self) -> &str {
        &self.shared.config.auth_token
    }
    /// Stops serving; call legs and timers notice and end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
    }
}

/// Resolves once the sandbox is shutting down (never if the sender is gone
/// without saying so). No borrow of the value is held across an await, so
/// the future stays `Send`.
pub(crate) async fn until_shutdown(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Commands a call leg's task obeys while it waits.
#[derive(Debug)]
pub(crate) enum LegCmd {
    /// The far end or the API hung up this leg (`status` is its final status).
    Hangup { status: &'static str },
    /// The API redirected the leg to new TwiML.
    Redirect(voice::Source),
    /// An enqueued caller was bridged to an agent leg.
    Bridge { peer: String },
    /// The other side of a bridge hung up.
    PeerEnded,
}

/// Everything the sandbox's tasks share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) base_url: String,
    pub(crate) clock: Clock,
    pub(crate) state: Mutex<State>,
    pub(crate) log: log::RequestLog,
    pub(crate) http: reqwest::Client,
    /// Webhook retries: no idle connections kept, so each opens a new one.
    pub(crate) http_retry: reqwest::Client,
    pub(crate) events: events::EventBus,
    pub(crate) faults: faults::Faults,
    pub(crate) legs: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<LegCmd>>>,
    /// Long-polls waiting for a call to end, by call SID. Per call, so one
    /// ending call wakes only its own waiters.
    pub(crate) waiters: Mutex<HashMap<String, Vec<tokio::sync::oneshot::Sender<()>>>>,
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// Runs `f` on the state under the lock, with the current virtual time.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State, VMs) -> R) -> R {
        let now = self.clock.now_ms();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut st, now)
    }

    /// Registers interest in a call's end. Register before reading the call,
    /// so an end in between is not missed.
    pub(crate) fn on_call_end(&self, sid: &str) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).entry(sid.to_owned()).or_default().push(tx);
        rx
    }

    /// Wakes the long-polls of a call that reached a final status.
    pub(crate) fn call_ended(&self, sid: &str) {
        let waiting = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(sid);
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Delivers an engine's events and arms its timers.
    pub(crate) fn apply(self: &Arc<Self>, fx: Effects) {
        if !fx.events.is_empty() {
            let deliveries: Vec<(String, events::Delivery)> = self.with(|st, _| {
                fx.events
                    .into_iter()
                    .filter_map(|ev| {
                        let ws = st.workspaces.get(&ev.workspace_sid)?;
                        let url = ws.event_callback_url.clone()?;
                        if !events::wanted(ws.events_filter.as_deref(), &ev.event_type) {
                            return None;
                        }
                        let mut params = Params::new();
                        params.push("AccountSid", self.config.account_sid.as_str());
                        for (k, v) in ev.params.iter() {
                            // The engine counts virtual time from the start; receivers
                            // expect Unix time, so the rim converts.
                            match k {
                                "Timestamp" | "TaskDateCreated" => {
                                    let secs = v.parse::<u64>().unwrap_or(0).saturating_mul(1000);
                                    params.push(k, self.clock.wall(secs).as_second().to_string())
                                }
                                "TimestampMs" => {
                                    params.push(k, self.clock.wall(v.parse().unwrap_or(0)).as_millisecond().to_string())
                                }
                                _ => params.push(k, v),
                            };
                        }
                        Some((ev.workspace_sid, events::Delivery { url, params }))
                    })
                    .collect()
            });
            for (ws, d) in deliveries {
                self.events.send(self, &ws, d);
            }
        }
        for timer in fx.timers {
            self.arm(timer);
        }
        for (call_sid, url) in fx.redirects {
            let legs = self.legs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = legs.get(&call_sid) {
                let _ = tx.send(LegCmd::Redirect(voice::Source::Url { url, method: "POST".into() }));
            }
        }
    }

    fn arm(self: &Arc<Self>, timer: Timer) {
        let shared = Arc::downgrade(self);
        let clock = self.clock.clone();
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = clock.sleep_until(timer.at()) => {}
                _ = until_shutdown(&mut stop) => return,
            }
            let Some(shared) = shared.upgrade() else { return };
            let fx = shared.with(|st, now| engine::fire(st, now, &timer));
            shared.apply(fx);
        });
    }
}
