//! Assembles the server: store, REST client, dispatcher and router, on a
//! listener the caller binds (port 0 in tests), until a shutdown future;
//! then drains within `drain_secs`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::dispatch::{Dispatcher, Notifier};
use crate::drain::{Background, InFlight};
use crate::http::{self, AppState};
use crate::reconcile::Reconciler;
use crate::stats::Sampler;
use crate::store::Store;
use crate::timers::Ticker;
use crate::twilio_api::TwilioClient;

/// After a stopping server stops accepting, how long the connections it
/// accepted last have to send their request before idle ones are closed.
const ACCEPTED_SETTLE: Duration = Duration::from_millis(100);

/// How long after the server starts answering its background work begins:
/// the timers' first pass, the gauges, the reconciler, the dispatcher (with
/// whatever the outbox holds) and the calendars' check. Each is catch-up
/// work that can wait a moment; begun at once, their reads took the
/// database's first connections beside the first webhooks, which on
/// PostgreSQL opened more (each a new server process): the first answer
/// came 30.7 ms after exec against 19.4 ms with the grace (SQLite: 12.4
/// against 9.9 ms; medians of 20 interleaved starts with 100 locations).
/// A webhook's dial waits in the outbox meanwhile. A server stopped within
/// the grace leaves what its outbox holds to the next start or another
/// instance (`Dispatcher::take_over`); `serve` gives a SIGTERM
/// `cli::KEEP_ALIVE_GRACE` first, which is longer.
pub const STARTUP_GRACE: Duration = Duration::from_millis(50);

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// Where `/metrics` is served on its own, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    http_stop: watch::Sender<bool>,
    /// Stops accepting connections (see [`http::Pausable`]).
    accept_stop: watch::Sender<bool>,
    http: tokio::task::JoinHandle<anyhow::Result<()>>,
    background: Background,
    requests: InFlight,
    drain: Duration,
}

impl Server {
    /// Opens the database, starts the dispatcher and serves on `listener`.
    pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<Server> {
        if !settings.security.validate_signatures {
            tracing::warn!(
                "!!! X-Twilio-Signature checks are OFF ({}). Anyone who can reach this server can forge calls. \
                 Never run like this in production. !!!",
                crate::config::env::INSECURE_SKIP_SIGNATURES
            );
        }
        crate::stats::install();
        let addr = listener.local_addr()?;
        let store = Store::connect_with(&settings.database_url, settings.database)
            .await?
            .owned_by(&instance_name(addr), lease_ms(settings.twilio.request_timeout_ms));
        tracing::info!(instance = store.owner(), "this instance's name on the database");
        let notifier = Notifier::default();
        let state = AppState::new(settings.clone(), store.clone(), notifier.clone());
        let drain = Duration::from_secs(settings.drain_secs);

        // Background work: each task gets the one stop signal, given after the
        // webhooks have drained (see `shutdown`). New tasks join here, and
        // those that read or write the database begin after STARTUP_GRACE.
        let mut background = Background::default();
        let background_at = tokio::time::Instant::now() + STARTUP_GRACE;
        let ticker = Ticker::new(store.clone(), notifier.clone(), state.policy());
        background.spawn_at("ticker", background_at, move |stop| ticker.run(stop.wait()));
        // The gauges are read once the start-up grace is over (a scrape waits
        // for that reading), then every few seconds.
        let sampler = Sampler::new(store.clone());
        background.spawn_at("metrics", background_at, move |stop| sampler.run(stop.wait()));
        let metrics_addr = match settings.metrics_listen {
            Some(at) => {
                let listener = TcpListener::bind(at).await.with_context(|| format!("binding metrics_listen {at}"))?;
                let bound = listener.local_addr()?;
                background.spawn("metrics server", move |stop| async move {
                    if let Err(e) = http::serve(listener, http::metrics_router(), stop.wait()).await {
                        tracing::error!(error = %e, "the metrics server failed");
                    }
                });
                tracing::info!(addr = %bound, "metrics listening");
                Some(bound)
            }
            None => None,
        };
        let requests = InFlight::default();
        let router = http::router(state.clone()).layer(requests.layer());
        let (http_stop, mut stopped) = watch::channel(false);
        let (accept_stop, paused) = watch::channel(false);
        let listener = http::Pausable::new(listener, paused);
        let http = tokio::spawn(async move {
            http::serve(listener, router, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
            .context("serving HTTP")
        });
        tracing::info!(%addr, "call-router listening");
        // Off the path to the first answer, once webhooks are answered, since
        // no webhook needs them: the REST client (building it reads the
        // system's root certificates, several ms of CPU that competed with the
        // database's opening for two cores) is built on a blocking thread, and
        // the locations' calendars are read for the warning about past ones.
        // The config's locations get their numbering-plan check later still
        // (see `check_location_numbers_later`).
        let twilio = {
            let twilio_settings = settings.twilio.clone();
            tokio::task::spawn_blocking(move || TwilioClient::new(&twilio_settings))
        };
        {
            let store = store.clone();
            let clock = settings.clock;
            background.spawn_at("calendars", background_at, move |_stop| async move {
                warn_past_calendars(&store, clock).await
            });
        }
        // Webhooks are answered from here on; what they queue waits in the
        // outbox for the dispatcher, which starts once the REST client is
        // built (loading the root certificates was most of a restart).
        let twilio = match twilio.await.context("the thread building the Twilio client failed").and_then(|built| built)
        {
            Ok(client) => client,
            Err(e) => {
                // Stop what already runs, so a failed start leaves nothing behind.
                let _ = http_stop.send(true);
                let _ = http.await;
                background.stop(tokio::time::Instant::now() + drain).await;
                return Err(e.context("building the Twilio client"));
            }
        };
        state.set_twilio(twilio.clone());
        let reconciler = Reconciler::new(
            store.clone(),
            twilio.clone(),
            settings.twilio.workspace_sid.clone(),
            notifier.clone(),
            state.policy(),
            Duration::from_secs(settings.reconcile_secs),
        );
        background.spawn_at("reconciler", background_at, move |stop| reconciler.run(stop.wait()));
        let dispatcher = Dispatcher::new(store, twilio, settings, notifier);
        background.spawn_at("dispatcher", background_at, move |stop| dispatcher.run(stop.wait()));
        if state.settings().admin.token.is_some() {
            tracing::info!(api = %format_args!("{}/api/", state.settings().public_url), "history API on (admin token set)");
        } else {
            tracing::info!(
                "history API and dashboard off: no admin token (set {} or [admin] token)",
                crate::config::env::ADMIN_TOKEN
            );
        }
        check_location_numbers_later(state.settings());
        Ok(Server { addr, metrics_addr, state, http_stop, accept_stop, http, background, requests, drain })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drains and returns: stops accepting connections at once, lets the
    /// webhooks in flight finish, then stops the background tasks (the
    /// dispatcher finishes its running actions), all within `drain_secs`.
    /// What is still running at the deadline is cut and logged.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown_after(Duration::ZERO).await
    }

    /// As [`Server::shutdown`], after `grace` of answering every request
    /// with `Connection: close` (and still accepting), so that clients on
    /// keep-alive connections move off before the idle ones are closed.
    /// `serve` uses this on SIGTERM; `grace` counts against `drain_secs`.
    pub async fn shutdown_after(self, grace: Duration) -> anyhow::Result<()> {
        let Server { state, http_stop, accept_stop, mut http, background, requests, drain, .. } = self;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + drain;
        if !grace.is_zero() {
            requests.close_connections();
            tracing::info!(grace_ms = grace.min(drain).as_millis() as u64, "closing keep-alive connections");
            tokio::time::sleep_until((tokio::time::Instant::now() + grace).min(deadline)).await;
            // Accept no more, but answer what was accepted a moment ago: closing
            // its connection as idle before its request was read would lose it.
            let _ = accept_stop.send(true);
            tokio::time::sleep_until((tokio::time::Instant::now() + ACCEPTED_SETTLE).min(deadline)).await;
        }
        tracing::info!(
            requests_in_flight = requests.now(),
            drain_secs = drain.as_secs(),
            "draining: no new connections; finishing the webhooks in flight, then the background tasks"
        );
        requests.close_connections();
        // The history API's event streams end, so their connections close.
        state.notifier().close();
        let _ = http_stop.send(true);
        // The dispatcher keeps running while the webhooks finish, so the
        // actions their last requests wrote are still sent by this process
        // (once it has begun: see STARTUP_GRACE).
        let served = match tokio::time::timeout_at(deadline, &mut http).await {
            Ok(joined) => Some(joined.context("the HTTP server task panicked")?),
            Err(_) => {
                http.abort();
                None
            }
        };
        let requests_cut = if served.is_some() { 0 } else { requests.now() };
        let http_ms = started.elapsed().as_millis() as u64;
        let tasks_cut = background.stop(deadline).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if served.is_some() && tasks_cut.is_empty() {
            tracing::info!(elapsed_ms, http_ms, requests_served = requests.total(), "drained");
        } else {
            tracing::warn!(
                elapsed_ms,
                requests_cut,
                tasks_cut = ?tasks_cut,
                requests_served = requests.total(),
                "drain deadline passed (drain_secs = {}): cut what was still running; actions cut mid-request \
                 are recovered when an instance next starts",
                drain.as_secs()
            );
        }
        served.unwrap_or(Ok(()))
    }

    /// Runs until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// How long after start-up the config's numbering-plan check runs: its
/// ~200 ms of CPU (loading the phone metadata) would otherwise compete with
/// the first webhooks for the cores.
const CHECK_NUMBERS_AFTER: Duration = Duration::from_secs(5);

/// Logs one warning per location whose dated holidays and closures are all in the past: its
/// calendar has probably not been kept up (a recurring holiday never counts as past).
async fn warn_past_calendars(store: &Store, clock: crate::clock::Clock) {
    let now = clock.now();
    match store.locations().await {
        Ok(locations) => {
            for l in locations {
                if let Some(warning) = l.schedule.past_calendar_warning(now) {
                    tracing::warn!(location = %l.name, instance = store.owner(), "location {}: {warning}", l.name);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "could not read the locations to check their holidays")
        }
    }
}

/// Runs the numbering-plan check of the config file's locations on a
/// blocking thread, a few seconds after start-up, and logs what it refuses.
/// `serve` reads its locations from the database, where every one was
/// checked in full when stored, so nothing waits for this; `provision` and
/// `locations import` refuse such a number before storing it.
fn check_location_numbers_later(settings: &Settings) {
    if settings.locations.is_empty() {
        return;
    }
    let settings = settings.clone();
    tokio::spawn(async move {
        tokio::time::sleep(CHECK_NUMBERS_AFTER).await;
        let checked = tokio::task::spawn_blocking(move || settings.check_location_numbers()).await;
        if let Ok(Err(e)) = checked {
            tracing::error!(
                error = %e,
                "a location in the config file has a phone number its country does not assign; \
                 `provision` and `locations import` will refuse it until it is corrected"
            );
        }
    });
}

/// Resolves on Ctrl-C or SIGTERM.
/// This instance's name on a shared database: the host and the port it
/// serves on. Stable across restarts, so a restarted instance takes back at
/// once what it was sending when it stopped (see `Store::take_over`); two
/// instances on one host differ by port.
fn instance_name(addr: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", addr.port())
}

/// How long a claim on an outbox command lasts before another instance may
/// take it over: longer than the longest send (a request retried up to five
/// times, each bounded by `request_timeout_ms`, with back-offs between).
fn lease_ms(request_timeout_ms: u64) -> i64 {
    (request_timeout_ms as i64).saturating_mul(6).saturating_add(30_000)
}

/// `serve` on SIGHUP: the config file's `[[locations]]` (loaded and checked as
/// at start, environment included) into the database, as `provision` and
/// `locations import` put them there: all or nothing, replacing the stored
/// locations of the same names and leaving the others. Every instance reads
/// its locations from the database on each webhook, so the change holds for
/// all of them from the next call on. Returns how many locations the file has.
pub async fn reload_locations(config: Option<&std::path::Path>, store: &Store) -> anyhow::Result<usize> {
    let settings = Settings::load(config)?;
    crate::cli::import(store, &settings.locations).await?;
    Ok(settings.locations.len())
}

/// Handles SIGHUP from now on (`serve` only; not on Windows): the returned
/// future runs [`reload_locations`] on each one until dropped. Settings other
/// than the locations still need a restart.
pub fn reload_on_hangup(config: Option<std::path::PathBuf>, store: Store) -> impl Future<Output = ()> + Send + 'static {
    // Registered here, before the caller says it is ready: a SIGHUP's default
    // action ends the process.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let mut hangups = match hangups {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP cannot be handled: the config file's locations load only at start");
                    return;
                }
            };
            while hangups.recv().await.is_some() {
                match reload_locations(config.as_deref(), &store).await {
                    Ok(n) => tracing::info!(
                        locations = n,
                        "SIGHUP: the config file's locations are in the database and hold from the next call \
                         (settings other than [[locations]] need a restart; new locations and changed lines or \
                         numbers need `provision`)"
                    ),
                    Err(e) => tracing::warn!(
                        error = %crate::telemetry::chain(e.as_ref()),
                        "SIGHUP: the config file was not loaded; the locations stay as they were"
                    ),
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (config, store);
        }
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
