//! `call-router bench`: the server's speed figures beside a bare HTTP server's, in one run.
//!
//! Both servers run as child processes of this binary, so that their start-up time and memory
//! are their own; the load generator runs here. The server is the real `serve` command with
//! signature checks on, a fresh SQLite file and its REST client pointed at a minimal fake of
//! Twilio's API in this process, which answers every `Calls.json` POST the dispatcher makes.
//! The server's config holds [`LOCATIONS`] locations (generated here: ten Twilio numbers with
//! a menu of ten each, five time zones), and start-up is measured to the first answered signed
//! webhook, twice: on a fresh database (the server runs the migrations) and on one where the
//! locations are stored (a restart). The server's log is kept and its ERROR lines counted.
//! The baseline is a bare axum server that returns the same TwiML bytes without reading the
//! request. Both get the same requests from the same generator on the same cores, so the ratio
//! between them is what the figures say; the absolute numbers include the generator's own cost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::domain::LocationSpec;
use crate::hours::{HolidaySpec, HoursSpec, WeeklySpec};

const ACCOUNT: &str = "AC00000000000000000000000000000be1";
const TOKEN: &str = "bench-auth-token";
const WORKSPACE: &str = "WS00000000000000000000000000000be1";
const WORKFLOW: &str = "WW00000000000000000000000000000be1";
const RESERVATION: &str = "WR00000000000000000000000000000be1";
const CALL: &str = "CA00000000000000000000000000000be2";
/// How many locations the server's config and database hold.
pub const LOCATIONS: usize = 100;

/// What `call-router bench` was asked for.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub duration: Duration,
    pub connections: usize,
    pub json: bool,
    /// The server's database; `None`: a fresh SQLite file per start.
    pub database_url: Option<String>,
    /// With more than one (PostgreSQL only), `reservation.created` is measured once more
    /// through a round-robin balancer in front of this many instances.
    pub instances: usize,
}

/// `reservation.created` through a round-robin balancer in front of several instances on one
/// PostgreSQL database.
#[derive(Debug, Clone, Serialize)]
pub struct BalancedFigures {
    pub instances: usize,
    pub reservation_created: LoadFigures,
    pub dials: DialCount,
    /// Requests each instance answered, as the balancer counted them.
    pub answered_per_instance: Vec<u64>,
    pub peak_rss_mb: Vec<f64>,
    /// ERROR lines in the instances' logs.
    pub server_log_errors: usize,
}

/// Load figures for one target.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigures {
    pub requests: u64,
    pub errors: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Every request sent, the warm-up's included.
    pub sent: u64,
    /// The servers' CPU time (every thread's, from /proc) from the start of the warm-up until
    /// the dispatcher had placed what the requests owed, per request sent, in µs; 0 where
    /// /proc is missing: the server's own cost, apart from the share of the cores the load
    /// generator and the fake Twilio API take.
    pub server_cpu_us: f64,
    /// The same for this process over the same time: the load generator, and what else the
    /// bench runs here (the fake Twilio API the dispatcher calls, the balancer). It shares
    /// the cores with the server; this is how much of them it took.
    pub generator_cpu_us: f64,
}

impl LoadFigures {
    /// These figures with the servers' CPU time: `ms` over all requests sent.
    fn with_server_cpu(mut self, ms: f64) -> Self {
        self.server_cpu_us = self.per_request_us(ms);
        self
    }

    /// These figures with this process's CPU time: `ms` over all requests sent.
    fn with_generator_cpu(mut self, ms: f64) -> Self {
        self.generator_cpu_us = self.per_request_us(ms);
        self
    }

    /// `ms` of CPU over all requests sent, in µs; 0 when unknown.
    fn per_request_us(&self, ms: f64) -> f64 {
        if self.sent > 0 && ms > 0.0 { ms * 1000.0 / self.sent as f64 } else { 0.0 }
    }
}

/// The CPU time the measured servers and this process have run so far, to count a run's share.
struct CpuMark {
    servers: Vec<u32>,
    server_ms: f64,
    here_ms: f64,
}

impl CpuMark {
    fn now(servers: &[u32]) -> Self {
        let server_ms = servers.iter().map(|&pid| process_cpu_ms(pid)).sum();
        CpuMark { servers: servers.to_vec(), server_ms, here_ms: process_cpu_ms(std::process::id()) }
    }

    /// `figures` with what each side ran since this mark.
    fn since(self, figures: LoadFigures) -> LoadFigures {
        let server_ms: f64 = self.servers.iter().map(|&pid| process_cpu_ms(pid)).sum();
        figures
            .with_server_cpu(server_ms - self.server_ms)
            .with_generator_cpu(process_cpu_ms(std::process::id()) - self.here_ms)
    }
}

/// The dials the fake API took while one run's reservations were sent and for 0.5 s after,
/// told apart by the reservation each was for (the `reservationSid` in its `Url`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DialCount {
    /// Dials for this run's reservations.
    pub placed: u64,
    /// This run's reservations dialled at least once.
    pub reservations: u64,
    /// This run's reservations dialled more than once: each owes exactly one.
    pub twice: u64,
    /// Dials for reservations of earlier runs on the same database (what a server killed at
    /// the end of an earlier run still owed, taken over and placed in this one).
    pub earlier: u64,
}

/// Every dial the fake API took, by reservation.
#[derive(Debug, Default)]
struct DialLog {
    by_reservation: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    total: AtomicU64,
}

impl DialLog {
    /// Records a create of a call whose `Url` is `url`; how many came before it.
    fn took(&self, url: Option<&str>) -> u64 {
        let n = self.total.fetch_add(1, Ordering::Relaxed);
        let reservation = url
            .and_then(|u| u.split_once('?'))
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("reservationSid=")))
            .unwrap_or_default();
        let mut by = self.by_reservation.lock().unwrap_or_else(|e| e.into_inner());
        *by.entry(reservation.to_owned()).or_default() += 1;
        n
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The dials for reservations whose SIDs start with `prefix` (one run's), beside the
    /// `since_total` others taken since [`DialLog::total`] read that.
    fn count(&self, prefix: &str, since_total: u64) -> DialCount {
        let by = self.by_reservation.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = DialCount::default();
        for n in by.iter().filter(|(r, _)| r.starts_with(prefix)).map(|(_, n)| u64::from(*n)) {
            c.placed += n;
            c.reservations += 1;
            c.twice += u64::from(n > 1);
        }
        c.earlier = (self.total() - since_total).saturating_sub(c.placed);
        c
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub cores: usize,
    pub connections: usize,
    pub seconds_per_run: f64,
    pub release_build: bool,
    pub baseline_twiml: LoadFigures,
    pub dial_queue: LoadFigures,
    pub reservation_created: LoadFigures,
    /// Dials the server's dispatcher placed with the fake API during the run.
    pub dials: DialCount,
    /// Of the server's CPU under `reservation.created`, what SQLite's writer and
    /// checkpointer threads took (none on PostgreSQL, whose writers share the runtime).
    pub store_threads: Option<StoreThreads>,
    /// Locations in the server's config (and, for the restarts and the load, its database).
    pub locations: usize,
    /// Fresh starts to the first answered webhook: a new database, migrated by the server.
    pub startup_ms: Vec<f64>,
    /// Restarts to the first answered webhook, on a database that holds the locations.
    pub restart_startup_ms: Vec<f64>,
    /// CPU time the server had used by its first answer, for each fresh start and each restart
    /// (every thread's, from /proc; 0 elsewhere): on a shared machine the wall-clock figures
    /// include waiting for a core, these do not.
    pub startup_cpu_ms: Vec<f64>,
    pub restart_startup_cpu_ms: Vec<f64>,
    /// ERROR lines in the loaded server's log (a background task that failed, say).
    pub server_log_errors: usize,
    pub peak_rss_mb: f64,
    pub baseline_peak_rss_mb: f64,
    /// With `--instances` above 1: the same load through a balancer.
    pub balanced: Option<BalancedFigures>,
}

/// The TwiML both servers return for `/dial-queue`.
fn dial_queue_twiml() -> String {
    crate::ivr::dial_queue(RESERVATION, None).to_xml()
}

/// Serves the baseline: the same bytes for every POST to `/dial-queue`, nothing else.
pub async fn serve_baseline(listener: TcpListener) -> anyhow::Result<()> {
    let body: &'static str = Box::leak(dial_queue_twiml().into_boxed_str());
    let app = Router::new()
        .route("/dial-queue", post(move || async move { ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body) }))
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).await.context("serving the baseline")
}

/// Runs the benchmark and prints its report.
pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures mean little. Run `cargo run --release -- bench`.");
    }
    let report = measure(&options).await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

async fn measure(options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let dir = tempfile_dir()?;
    let (fake_url, dial_log) = start_fake_twilio().await?;

    let specs = bench_locations();
    // Start-up: three fresh starts, each to its first answered webhook.
    let (mut startup_ms, mut startup_cpu_ms) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let db = match &options.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", dir.join(format!("bench-{i}.db")).display()),
        };
        let (child, _, elapsed, cpu) = start_server(&exe, &dir, &db, &fake_url, &specs).await?;
        startup_ms.push(elapsed.as_secs_f64() * 1000.0);
        startup_cpu_ms.push(cpu);
        stop(child);
    }
    // Then three restarts on a database that holds the locations, stored as `locations import`
    // stores them (with their full check, here, off the measured path). The last one is loaded.
    let db = match &options.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.join("bench-stored.db").display()),
    };
    {
        let store = crate::store::Store::connect(&db).await?;
        crate::cli::import(&store, &specs).await.context("storing the bench's locations")?;
        store.pool().close().await;
    }
    let (mut restart_startup_ms, mut restart_startup_cpu_ms) = (Vec::new(), Vec::new());
    let mut server = None;
    for i in 0..3 {
        let (child, url, elapsed, cpu) = start_server(&exe, &dir, &db, &fake_url, &specs).await?;
        restart_startup_ms.push(elapsed.as_secs_f64() * 1000.0);
        restart_startup_cpu_ms.push(cpu);
        if i < 2 {
            stop(child);
        } else {
            server = Some((child, url));
        }
    }
    let (server_child, server_url) = server.expect("three starts");
    let server_child = ChildGuard(Some(server_child));

    let (baseline_child, baseline_url) = start_baseline(&exe).await?;
    let baseline_child = ChildGuard(Some(baseline_child));

    eprintln!("measuring the bare server ({} s)…", options.duration.as_secs_f64());
    let dial_queue_body = dial_queue_form();
    let baseline_twiml = {
        let url = format!("{baseline_url}/dial-queue?reservationSid={RESERVATION}");
        let body = dial_queue_body.clone();
        let cpu = CpuMark::now(&[baseline_child.pid()]);
        cpu.since(load(options, move |_| (url.clone(), body.clone(), None)).await)
    };
    let baseline_peak_rss_mb = peak_rss_mb(baseline_child.pid());

    eprintln!("measuring /dial-queue with signature checks ({} s)…", options.duration.as_secs_f64());
    let dial_queue = {
        let url = format!("{server_url}/dial-queue?reservationSid={RESERVATION}");
        let params = twilio::Params::parse(dial_queue_body.as_bytes());
        let sig = twilio::signature::sign(TOKEN.as_bytes(), &url, params.iter());
        let body = dial_queue_body.clone();
        let cpu = CpuMark::now(&[server_child.pid()]);
        cpu.since(load(options, move |_| (url.clone(), body.clone(), Some(sig.clone()))).await)
    };

    eprintln!("measuring reservation.created ({} s)…", options.duration.as_secs_f64());
    let dials_before = dial_log.total();
    let cpu = CpuMark::now(&[server_child.pid()]);
    let store_threads_before = store_threads_ns(server_child.pid());
    let started = Instant::now();
    let (reservation_created, run) = load_reservations(options, &server_url).await;
    // Let the dispatcher finish what it owes before counting its dials.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store_threads = StoreThreads::since(
        store_threads_before,
        store_threads_ns(server_child.pid()),
        started.elapsed(),
        reservation_created.sent,
    );
    let reservation_created = cpu.since(reservation_created);
    let dials = dial_log.count(&run, dials_before);
    let peak_rss_mb = peak_rss_mb(server_child.pid());

    drop(server_child);
    let server_log_errors = log_errors(&dir.join("server.log"));
    drop(baseline_child);
    let balanced = match (&options.database_url, options.instances) {
        (Some(db), n) if n > 1 => Some(measure_balanced(options, &exe, &dir, db, &fake_url, &dial_log, &specs).await?),
        _ => None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(BenchReport {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        connections: options.connections,
        seconds_per_run: options.duration.as_secs_f64(),
        release_build: !cfg!(debug_assertions),
        baseline_twiml,
        dial_queue,
        reservation_created,
        dials,
        store_threads,
        locations: specs.len(),
        startup_ms,
        restart_startup_ms,
        startup_cpu_ms,
        restart_startup_cpu_ms,
        server_log_errors,
        peak_rss_mb,
        baseline_peak_rss_mb,
        balanced,
    })
}

/// `reservation.created` events for new reservations, signed over `base`'s event URL; the
/// figures, and the prefix of the run's reservation SIDs.
async fn load_reservations(options: &BenchOptions, base: &str) -> (LoadFigures, String) {
    let url = format!("{base}/tr-event-handler");
    let run_id: u32 = rand::random();
    let figures = load(options, move |n| {
        let (body, sig) = reservation_created(&url, run_id, n);
        (url.clone(), body, Some(sig))
    })
    .await;
    (figures, run_prefix(run_id))
}

/// The start of every reservation SID of one run.
fn run_prefix(run_id: u32) -> String {
    format!("WR{run_id:08x}")
}

/// Counts the ERROR lines in a server's log, and shows the first.
fn log_errors(path: &Path) -> usize {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let errors = log.lines().filter(|l| l.contains(" ERROR ")).count();
    if errors > 0 {
        let first = log.lines().find(|l| l.contains(" ERROR ")).unwrap_or_default();
        eprintln!("{} has {errors} error(s); the first: {first}", path.display());
    }
    errors
}

/// `reservation.created` through a round-robin balancer (`crate::balance`, in this process)
/// in front of `options.instances` servers on one PostgreSQL database, each with the
/// balancer's URL as its `public_url`, as in production behind HAProxy.
async fn measure_balanced(
    options: &BenchOptions,
    exe: &Path,
    dir: &Path,
    db: &str,
    fake_url: &str,
    dial_log: &DialLog,
    specs: &[LocationSpec],
) -> anyhow::Result<BalancedFigures> {
    let ports = (0..options.instances).map(|_| free_port()).collect::<anyhow::Result<Vec<_>>>()?;
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let balancer = crate::balance::Balancer::start(&urls).await?;
    let mut children = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = format!("instance-{}", i + 1);
        let config = write_config(dir, &name, balancer.url(), *port, db, fake_url, specs)?;
        children.push(spawn_with(exe, dir, &name, &config)?);
    }
    let logs: Vec<PathBuf> = (1..=options.instances).map(|i| dir.join(format!("instance-{i}.log"))).collect();
    let mut all_running = || children.iter_mut().zip(&logs).try_for_each(|(c, log)| c.running(log));
    for url in &urls {
        wait_healthy(url, &mut all_running)
            .await
            .with_context(|| format!("an instance did not start (their logs: {})", dir.display()))?;
    }
    wait_answered(&poll_client()?, balancer.url(), &mut all_running)
        .await
        .context("the instances did not answer through the balancer")?;

    eprintln!(
        "measuring reservation.created through a balancer, {} instances ({} s)…",
        options.instances,
        options.duration.as_secs_f64()
    );
    let before: Vec<u64> = balancer.counts().iter().map(|c| c.answered).collect();
    let dials_before = dial_log.total();
    let cpu = CpuMark::now(&children.iter().map(|c| c.pid()).collect::<Vec<_>>());
    let (reservation_created, run) = load_reservations(options, balancer.url()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reservation_created = cpu.since(reservation_created);
    let dials = dial_log.count(&run, dials_before);
    let answered_per_instance = balancer.counts().iter().zip(before).map(|(c, b)| c.answered - b).collect();
    let peak_rss_mb = children.iter().map(|c| peak_rss_mb(c.pid())).collect();
    drop(children);
    let server_log_errors = (1..=options.instances).map(|i| log_errors(&dir.join(format!("instance-{i}.log")))).sum();
    Ok(BalancedFigures {
        instances: options.instances,
        reservation_created,
        dials,
        answered_per_instance,
        peak_rss_mb,
        server_log_errors,
    })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("call-router-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Kills a child process when dropped, so an error mid-run leaves nothing behind.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Fails once the child has exited, with its exit status and the end of its log (`log`),
    /// where `serve` writes why it stopped.
    fn running(&mut self, log: &Path) -> anyhow::Result<()> {
        let Some(child) = self.0.as_mut() else { return Ok(()) };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                Err(anyhow::anyhow!("{}", exited(status, &std::fs::read_to_string(log).unwrap_or_default())))
            }
            Err(e) => Err(e).context("checking whether the server is still running"),
        }
    }
}

/// Why a server that was starting stopped: its exit status and the last lines of its log.
fn exited(status: std::process::ExitStatus, log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        format!("it exited ({status}) with nothing in its log")
    } else {
        format!("it exited ({status}); its log ends: {}", tail.join(" / "))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            stop(child);
        }
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A free loopback port. The tiny window between dropping the listener and the child binding
/// it is acceptable for a benchmark on loopback.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The locations of a business of some size: ten Twilio numbers, each with a menu of ten
/// locations, in five time zones, with split and ordinary weekday hours.
pub fn bench_locations() -> Vec<LocationSpec> {
    const ZONES: [&str; 5] =
        ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "Europe/London"];
    (0..LOCATIONS)
        .map(|i| {
            let day = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
            LocationSpec {
                display_name: Some(format!("Location {i}")),
                digit: Some(char::from(b'0' + (i % 10) as u8).to_string()),
                show_caller_number: i % 3 == 0,
                lines: 1 + (i % 4) as u32,
                numbers: vec![bench_number(i / 10)],
                ..LocationSpec::new(
                    &format!("location-{i:03}"),
                    &[],
                    &format!("+1415555{:04}", 100 + i % 100),
                    HoursSpec {
                        time_zone: ZONES[i % ZONES.len()].to_owned(),
                        weekly: WeeklySpec {
                            mon: day(&["08:00-12:00", "13:00-17:30"]),
                            tue: day(&["08:00-17:30"]),
                            wed: day(&["08:00-17:30"]),
                            thu: day(&["08:00-17:30"]),
                            fri: day(&["08:00-16:00"]),
                            sat: if i % 2 == 0 { day(&["09:00-12:00"]) } else { Vec::new() },
                            sun: Vec::new(),
                        },
                        holidays: vec![HolidaySpec {
                            date: "2026-12-25".into(),
                            name: Some("Christmas".into()),
                            ..HolidaySpec::default()
                        }],
                        closures: Vec::new(),
                    },
                )
            }
        })
        .collect()
}

/// The `n`th Twilio number of the bench's business.
fn bench_number(n: usize) -> String {
    format!("+1202555{:04}", 100 + n)
}

/// The server's config: its addresses, the fake API and the locations.
fn bench_config(url: &str, port: u16, db: &str, fake_url: &str, specs: &[LocationSpec]) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Locations<'a> {
        locations: &'a [LocationSpec],
    }
    Ok(format!(
        "public_url = \"{url}\"\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = {db:?}\n\
         [twilio]\naccount_sid = \"{ACCOUNT}\"\napi_base_url = \"{fake_url}\"\ntaskrouter_base_url = \"{fake_url}\"\n\
         workspace_sid = \"{WORKSPACE}\"\nworkflow_sid = \"{WORKFLOW}\"\n\n{}",
        toml::to_string(&Locations { locations: specs }).context("writing the bench's locations as TOML")?
    ))
}

async fn start_server(
    exe: &Path,
    dir: &Path,
    db: &str,
    fake_url: &str,
    specs: &[LocationSpec],
) -> anyhow::Result<(Child, String, Duration, f64)> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    // The config file, and the client that asks, are ready before the clock
    // starts: what is timed is the server, from its start to its first answer.
    let config = write_config(dir, "server", &url, port, db, fake_url, specs)?;
    let poller = poll_client()?;
    let started = Instant::now();
    let mut child = spawn_with(exe, dir, "server", &config)?;
    let log = dir.join("server.log");
    wait_answered(&poller, &url, || child.running(&log))
        .await
        .with_context(|| format!("the server did not answer /incoming-call (its log: {})", log.display()))?;
    let elapsed = started.elapsed();
    let cpu = cpu_ms(child.pid());
    Ok((child.0.take().expect("child"), url, elapsed, cpu))
}

/// Writes the config of the server named `name` into `dir`; its path.
#[allow(clippy::too_many_arguments)]
fn write_config(
    dir: &Path,
    name: &str,
    public_url: &str,
    port: u16,
    db: &str,
    fake_url: &str,
    specs: &[LocationSpec],
) -> anyhow::Result<PathBuf> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, bench_config(public_url, port, db, fake_url, specs)?)?;
    Ok(config)
}

/// Starts `serve` with the config at `config`, its log named after `name` in `dir`.
fn spawn_with(exe: &Path, dir: &Path, name: &str, config: &Path) -> anyhow::Result<ChildGuard> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(exe)
        .args(["serve", "--config"])
        .arg(config)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env_remove("TWILIO_ACCOUNT_SID")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting `call-router serve`")?;
    Ok(ChildGuard(Some(child)))
}

async fn start_baseline(exe: &Path) -> anyhow::Result<(Child, String)> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(exe)
        .args(["bench", "--serve-baseline", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the baseline server")?;
    let mut child = ChildGuard(Some(child));
    wait_healthy(&url, || child.running(Path::new("/dev/null"))).await.context("the baseline server did not start")?;
    Ok((child.0.take().expect("child"), url))
}

/// Polls `/healthz` every millisecond for up to ten seconds, or until `running` fails (the
/// server exited).
async fn wait_healthy(url: &str, mut running: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        running()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("no answer from {url}/healthz within 10 s")
}

/// The client that asks a starting server for its first answer.
fn poll_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?)
}

/// Sends a signed `/incoming-call` for the first number every millisecond until one is
/// answered with TwiML, for up to ten seconds, or until `running` fails (the server exited).
async fn wait_answered(
    client: &reqwest::Client,
    url: &str,
    mut running: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let target = format!("{url}/incoming-call");
    let mut p = twilio::Params::new();
    p.push("AccountSid", ACCOUNT)
        .push("CallSid", CALL)
        .push("From", "+13105550199")
        .push("To", bench_number(0))
        .push("CallStatus", "ringing")
        .push("Direction", "inbound")
        .push("ApiVersion", "2010-04-01");
    let sig = twilio::signature::sign(TOKEN.as_bytes(), &target, p.iter());
    let body = p.encode();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        let sent = client
            .post(&target)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-twilio-signature", &sig)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let text = r.text().await.unwrap_or_default();
                if twilio::twiml::Response::parse(&text).is_ok() {
                    return Ok(());
                }
                last = format!("an answer that is not TwiML: {text:.200}");
            }
            Ok(r) => last = format!("status {}", r.status()),
            Err(_) => {}
        }
        running()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("no TwiML from {target} within 10 s ({last})")
}

/// A fake of Twilio's REST API that accepts every request and counts created calls. A GET
/// of a list (`…/Tasks`, `…/Calls.json`) gets an empty page in Twilio's envelope, so the
/// reconciler's passes succeed as they would against Twilio with nothing to report.
async fn start_fake_twilio() -> anyhow::Result<(String, Arc<DialLog>)> {
    let dials = Arc::new(DialLog::default());
    let log = dials.clone();
    let app =
        Router::new().fallback(move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                if method == axum::http::Method::POST && uri.path().ends_with("/Calls.json") {
                    let n = log.took(twilio::Params::parse(&body).get("Url"));
                    let body = format!(r#"{{"sid":"CA{n:032x}","status":"queued"}}"#);
                    return (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], body).into_response();
                }
                let last = uri.path().rsplit('/').next().unwrap_or_default();
                let last = last.strip_suffix(".json").unwrap_or(last);
                let body = if method == axum::http::Method::GET
                    && last.starts_with(|c: char| c.is_ascii_uppercase())
                    && last.len() != 34
                {
                    // A list: the key is the resource's name in lower case (`calls`, `tasks`).
                    serde_json::json!({
                        last.to_ascii_lowercase(): [],
                        "next_page_uri": null,
                        "meta": { "next_page_url": null, "key": last.to_ascii_lowercase() },
                    })
                    .to_string()
                } else {
                    "{}".to_owned()
                };
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
        });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, dials))
}

/// The answer-URL request of an answered outbound leg.
fn dial_queue_form() -> String {
    let mut p = twilio::Params::new();
    p.push("AccountSid", ACCOUNT)
        .push("CallSid", "CA00000000000000000000000000000be1")
        .push("CallStatus", "in-progress")
        .push("Direction", "outbound-api")
        .push("From", "+12025550143")
        .push("To", "+14155550123")
        .push("AnsweredBy", "human")
        .push("ApiVersion", "2010-04-01");
    p.encode()
}

/// A signed `reservation.created` with its own task and reservation, so every request takes
/// the real write path (a repeated reservation would be deduplicated).
fn reservation_created(url: &str, run_id: u32, n: u64) -> (String, String) {
    let task = format!("WT{run_id:08x}{n:024x}");
    let reservation = format!("{}{n:024x}", run_prefix(run_id));
    let attributes =
        r#"{"location":"north","practicePhone":"+14155550123","callerID":"+12025550143","caller":"+13105550199"}"#;
    let mut p = twilio::Params::new();
    p.push("EventType", "reservation.created")
        .push("AccountSid", ACCOUNT)
        .push("WorkspaceSid", WORKSPACE)
        .push("ResourceType", "reservation")
        .push("ResourceSid", &reservation)
        .push("TaskSid", &task)
        .push("ReservationSid", &reservation)
        .push("WorkerSid", "WK00000000000000000000000000000be1")
        .push("TaskAttributes", attributes)
        .push("TaskAssignmentStatus", "reserved");
    let sig = twilio::signature::sign(TOKEN.as_bytes(), url, p.iter());
    (p.encode(), sig)
}

/// Runs `connections` request loops for the configured duration (after a short warm-up that
/// is not counted) and gathers latencies.
///
/// Each loop holds one HTTP/1.1 connection, kept alive as Twilio keeps its own, and talks to it
/// through hyper's connection directly rather than reqwest's pooled client: the generator
/// shares the cores with the server it measures, and reqwest's layers (its pool, its request
/// builder, its middleware) cost it more per request than the whole bare server took.
async fn load<F>(options: &BenchOptions, make: F) -> LoadFigures
where
    F: Fn(u64) -> (String, String, Option<String>) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let counter = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + options.duration;
    let mut tasks = Vec::new();
    for _ in 0..options.connections {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::with_capacity(64 * 1024);
            let mut errors = 0u64;
            let mut sent = 0u64;
            let mut conn: Option<Connection> = None;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (url, body, sig) = make(n);
                let started = Instant::now();
                sent += 1;
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, post_form(&mut conn, &url, body, sig))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")));
                let ok = match answer {
                    Ok(status) => status.is_success(),
                    Err(_) => {
                        // A connection that failed is not used again.
                        conn = None;
                        false
                    }
                };
                if started >= measure_from {
                    latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (latencies_us, errors, sent)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut sent) = (0, 0);
    for t in tasks {
        if let Ok((l, e, s)) = t.await {
            all.extend(l);
            errors += e;
            sent += s;
        }
    }
    figures(all, errors, sent, options.duration)
}

/// How long the load generator waits for one answer before it counts an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One kept-alive HTTP/1.1 connection of the load generator, and where it leads.
struct Connection {
    authority: String,
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

/// POSTs a form to `url` over `conn` (connecting first when there is none, or none to the
/// URL's host, or it was closed) and reads the whole answer; its status.
async fn post_form(
    conn: &mut Option<Connection>,
    url: &str,
    body: String,
    signature: Option<String>,
) -> anyhow::Result<StatusCode> {
    let uri: axum::http::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
    let authority = uri.authority().context("a URL without a host")?.as_str();
    let mut reuse = conn.take().filter(|c| c.authority == authority && !c.send.is_closed());
    // A kept-alive connection the server closed after its last answer is usually seen closed
    // above; on a multi-threaded runtime its driver may not have noticed yet, and then it fails
    // here, before the request went out: the request goes out on a new one.
    if let Some(c) = reuse.as_mut()
        && c.send.ready().await.is_err()
    {
        reuse = None;
    }
    let c = match reuse {
        Some(c) => conn.insert(c),
        None => {
            let mut c = connect(authority).await?;
            c.send.ready().await?;
            conn.insert(c)
        }
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = axum::http::Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(signature) = signature {
        request = request.header("x-twilio-signature", signature);
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let response = c.send.send_request(request).await?;
    let status = response.status();
    http_body_util::BodyExt::collect(response.into_body()).await?;
    Ok(status)
}

/// Opens a load generator's connection to `authority` (`host:port`).
async fn connect(authority: &str) -> anyhow::Result<Connection> {
    let stream =
        tokio::net::TcpStream::connect(authority).await.with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    let (send, driver) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(driver);
    Ok(Connection { authority: authority.to_owned(), send })
}

fn figures(mut latencies_us: Vec<u32>, errors: u64, sent: u64, duration: Duration) -> LoadFigures {
    latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((latencies_us.len() as f64 * p).ceil() as usize).clamp(1, latencies_us.len()) - 1;
        latencies_us[i] as f64 / 1000.0
    };
    let requests = latencies_us.len() as u64;
    LoadFigures {
        requests,
        errors,
        requests_per_sec: requests as f64 / duration.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies_us.last().map(|&m| m as f64 / 1000.0).unwrap_or(0.0),
        sent,
        server_cpu_us: 0.0,
        generator_cpu_us: 0.0,
    }
}

/// The CPU time a process has run, threads that have ended included, in milliseconds, from
/// `/proc/<pid>/stat` (user and system time, in the kernel's fixed 100 ticks a second for
/// user space; Linux only, 0 elsewhere). For the load runs: seconds long, so the ticks' 10 ms
/// are fine, and a thread that ends during a run (a runtime's blocking pool) still counts.
fn process_cpu_ms(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0.0, |stat| stat_cpu_ms(&stat))
}

/// User and system time from a `/proc/<pid>/stat` line, in milliseconds.
fn stat_cpu_ms(stat: &str) -> f64 {
    const TICKS_PER_SEC: f64 = 100.0;
    // After the command's name in parentheses (which may hold spaces and parentheses):
    // fields 3 on, where utime and stime are the 14th and 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 * 1000.0 / TICKS_PER_SEC
}

/// The CPU time a process's living threads have run, in milliseconds, from each one's
/// `/proc/<pid>/task/<tid>/schedstat` (Linux only; 0 elsewhere): to the nanosecond, for a
/// start-up's few milliseconds (a thread that has ended is not counted).
fn cpu_ms(pid: u32) -> f64 {
    threads_cpu_ns(pid, |_| true).map_or(0.0, |ns| ns as f64 / 1e6)
}

/// The CPU time, in nanoseconds, of those of a process's living threads whose name
/// (`/proc/<pid>/task/<tid>/comm`) `named` accepts; None when there is none (or no /proc).
fn threads_cpu_ns(pid: u32, named: impl Fn(&str) -> bool) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let times: Vec<u64> = tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|name| named(name.trim_end())))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .collect();
    (!times.is_empty()).then(|| times.iter().sum())
}

/// The CPU time SQLite's writer and checkpointer threads have run, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct StoreThreadsNs {
    writer: u64,
    checkpointer: u64,
}

/// The CPU time of a server's SQLite threads, when it has them (not on PostgreSQL).
fn store_threads_ns(pid: u32) -> Option<StoreThreadsNs> {
    let writer = threads_cpu_ns(pid, |n| n == crate::store::WRITER_THREAD)?;
    let checkpointer = threads_cpu_ns(pid, |n| n == crate::store::CHECKPOINTER_THREAD).unwrap_or(0);
    Some(StoreThreadsNs { writer, checkpointer })
}

/// What SQLite's own threads took of the server's CPU during one load. It moves with the
/// VM's speed as every figure does, but it leaves out the HTTP side and how the two cores
/// were shared, so in runs taken in turn a change to the store's writes shows in it where
/// the noise of requests/s hides it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StoreThreads {
    /// The writer thread's CPU per request sent, in µs.
    pub writer_us: f64,
    /// The share of the measured time the writer was on a core, in percent. That time is
    /// the load's (its warm-up included) and the 0.5 s after it, while the dispatcher
    /// finishes, when fewer writes come: under the load alone the share is a little higher.
    pub writer_busy_pct: f64,
    /// The checkpointer thread's CPU per request sent, in µs.
    pub checkpointer_us: f64,
}

impl StoreThreads {
    fn since(before: Option<StoreThreadsNs>, after: Option<StoreThreadsNs>, wall: Duration, sent: u64) -> Option<Self> {
        let (before, after) = (before?, after?);
        if sent == 0 || wall.is_zero() {
            return None;
        }
        let writer_ns = after.writer.saturating_sub(before.writer);
        let per_request = |ns: u64| ns as f64 / 1000.0 / sent as f64;
        Some(StoreThreads {
            writer_us: per_request(writer_ns),
            writer_busy_pct: writer_ns as f64 / wall.as_nanos() as f64 * 100.0,
            checkpointer_us: per_request(after.checkpointer.saturating_sub(before.checkpointer)),
        })
    }
}

/// The peak resident set size of a process, from /proc (Linux only; 0 elsewhere).
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The report as a person reads it: each figure beside its target.
pub fn render(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "call-router bench: {} cores, {} connections, {:.0} s per run, {} build",
        r.cores,
        r.connections,
        r.seconds_per_run,
        if r.release_build { "release" } else { "DEBUG" }
    );
    let _ = writeln!(
        out,
        "{:<40} {:>12} {:>9} {:>9} {:>7} {:>9} {:>7}  target",
        "", "requests/s", "p50 ms", "p99 ms", "errors", "CPU µs", "gen µs"
    );
    let row = |out: &mut String, name: &str, f: &LoadFigures, target: String| {
        // CPU per request: the servers' and the load generator's (see `LoadFigures`).
        let us = |v: f64| if v > 0.0 { format!("{v:.0}") } else { "-".to_owned() };
        let _ = writeln!(
            out,
            "{:<40} {:>12.0} {:>9.2} {:>9.2} {:>7} {:>9} {:>7}  {}",
            name,
            f.requests_per_sec,
            f.p50_ms,
            f.p99_ms,
            f.errors,
            us(f.server_cpu_us),
            us(f.generator_cpu_us),
            target
        );
    };
    row(&mut out, "bare axum, same TwiML bytes", &r.baseline_twiml, "(baseline)".into());
    let of_bare = |f: &LoadFigures| {
        if r.baseline_twiml.requests_per_sec > 0.0 {
            f.requests_per_sec / r.baseline_twiml.requests_per_sec * 100.0
        } else {
            0.0
        }
    };
    let ratio = of_bare(&r.dial_queue);
    row(
        &mut out,
        "/dial-queue, signature checked",
        &r.dial_queue,
        format!("{ratio:.0}% of bare; target >= 60% {}", verdict(ratio >= 60.0)),
    );
    let rc = &r.reservation_created;
    row(
        &mut out,
        "reservation.created (stored + outbox)",
        rc,
        format!(
            "{:.1}% of bare; >= 10000/s and p99 < 5 ms {}",
            of_bare(rc),
            verdict(rc.requests_per_sec >= 10_000.0 && rc.p99_ms < 5.0 && rc.errors == 0)
        ),
    );
    let _ = writeln!(out, "{:<40} {:>12}  {}", "", r.dials.placed, dials_said(&r.dials, rc.sent));
    if let Some(t) = &r.store_threads {
        let _ = writeln!(
            out,
            "{:<40} {:>12.0}  µs of the server's CPU per reservation in SQLite's writer thread (on a core \
             {:.0}% of the run); {:.0} in its checkpointer",
            "", t.writer_us, t.writer_busy_pct, t.checkpointer_us
        );
    }
    let median = |runs: &[f64]| {
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
    };
    let startup = |out: &mut String, name: &str, runs: &[f64], cpu: &[f64]| {
        let m = median(runs);
        let _ = writeln!(
            out,
            "{:<40} {:>9.1} ms (median of {}: {}; CPU {:.1} ms)  target < 20 ms {}",
            name,
            m,
            runs.len(),
            runs.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>().join(", "),
            median(cpu),
            verdict(m > 0.0 && m < 20.0)
        );
    };
    let _ = writeln!(out, "start-up to the first answered webhook, {} locations in the config:", r.locations);
    startup(&mut out, "  fresh database (migrations run)", &r.startup_ms, &r.startup_cpu_ms);
    startup(&mut out, "  restart, locations stored", &r.restart_startup_ms, &r.restart_startup_cpu_ms);
    let _ = writeln!(
        out,
        "{:<40} {:>9.1} MB (bare server: {:.1} MB)  target < 64 MB {}",
        "peak RSS under that load",
        r.peak_rss_mb,
        r.baseline_peak_rss_mb,
        verdict(r.peak_rss_mb > 0.0 && r.peak_rss_mb < 64.0)
    );
    if r.server_log_errors > 0 {
        let _ = writeln!(out, "the server logged {} error(s) during the run", r.server_log_errors);
    }
    if let Some(b) = &r.balanced {
        row(
            &mut out,
            &format!("reservation.created, {} instances", b.instances),
            &b.reservation_created,
            format!("{:.1}% of bare; through a round-robin balancer in this process", of_bare(&b.reservation_created)),
        );
        let _ = writeln!(
            out,
            "{:<40} {:>12}  {}; answered per instance: {}; peak RSS {} MB",
            "",
            b.dials.placed,
            dials_said(&b.dials, b.reservation_created.sent),
            b.answered_per_instance.iter().map(u64::to_string).collect::<Vec<_>>().join(" / "),
            b.peak_rss_mb.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" / "),
        );
        if b.server_log_errors > 0 {
            let _ = writeln!(out, "the instances logged {} error(s) during the run", b.server_log_errors);
        }
    }
    out
}

/// The run's dials against its reservations sent (each owes exactly one): any reservation
/// dialled twice; else whether each got its dial, or how many the dispatcher still owed
/// 0.5 s after the load (or failed). Dials for earlier runs' reservations are told apart.
fn dials_said(d: &DialCount, sent: u64) -> String {
    const SENT: &str = "reservations sent (warm-up included)";
    let mut said = if d.twice > 0 {
        format!("dials placed for {sent} {SENT}: {} RESERVATIONS DIALLED TWICE", d.twice)
    } else if d.reservations == sent {
        format!("dials placed, one for each of the {sent} {SENT}")
    } else {
        format!(
            "dials placed for {sent} {SENT}: {} not placed 0.5 s after the load",
            sent.saturating_sub(d.reservations)
        )
    };
    if d.earlier > 0 {
        said.push_str(&format!("; and {} for earlier runs' reservations on this database", d.earlier));
    }
    said
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on port 0 that answers `/ok` 204 (counting the requests and their bodies'
    /// bytes, and closing the connection after every third request's answer) and `/fail` 500.
    async fn counting_server() -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
        let (requests, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, b) = (requests.clone(), bytes.clone());
        let app = Router::new()
            .route(
                "/ok",
                post(move |body: String| async move {
                    let n = r.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(body.len() as u64, Ordering::Relaxed);
                    let close = if n % 3 == 2 { "close" } else { "keep-alive" };
                    (StatusCode::NO_CONTENT, [(header::CONNECTION, close)])
                }),
            )
            .route("/fail", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, requests, bytes)
    }

    fn short_run() -> BenchOptions {
        BenchOptions {
            duration: Duration::from_millis(200),
            connections: 2,
            json: false,
            database_url: None,
            instances: 1,
        }
    }

    #[tokio::test]
    async fn the_load_generator_sends_every_body_and_counts_only_answers_that_fail() {
        let (url, requests, bytes) = counting_server().await;
        let ok = format!("{url}/ok");
        let figures = load(&short_run(), move |n| (ok.clone(), format!("n={n:08}"), None)).await;
        assert_eq!(figures.errors, 0, "{figures:?}");
        assert!(figures.requests > 0, "{figures:?}");
        // Every request sent arrived, whole, and connections the server closed were opened again.
        assert_eq!(requests.load(Ordering::Relaxed), figures.sent);
        assert_eq!(bytes.load(Ordering::Relaxed), figures.sent * 10);

        let fail = format!("{url}/fail");
        let figures = load(&short_run(), move |_| (fail.clone(), String::new(), None)).await;
        assert!(figures.requests > 0 && figures.errors == figures.requests, "{figures:?}");
    }

    #[tokio::test]
    async fn a_server_that_refuses_connections_counts_as_errors() {
        // Nothing listens on port 1 (another test's server could take a port found free).
        let url = "http://127.0.0.1:1/ok".to_owned();
        let figures = load(&short_run(), move |_| (url.clone(), String::new(), None)).await;
        assert!(figures.errors > 0 && figures.errors == figures.requests, "{figures:?}");
    }

    /// A server that stops while it starts (a bad database URL, say) fails the wait at once,
    /// with what it wrote last, instead of after ten seconds of "no answer".
    #[tokio::test]
    async fn a_server_that_exits_while_starting_fails_the_wait_at_once_with_its_last_words() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let child = Command::new("sh")
            .args(["-c", "echo starting >&2; echo 'error: unsupported database URL mysql://x/y' >&2; exit 2"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut guard = ChildGuard(Some(child));
        crate::twilio_api::install_crypto_provider();
        let started = Instant::now();
        // Nothing listens on port 1.
        let e = wait_answered(&poll_client().unwrap(), "http://127.0.0.1:1", || guard.running(&log)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
        let e = format!("{e:#}");
        assert!(
            e.contains("exit status: 2") && e.contains("starting / error: unsupported database URL mysql://x/y"),
            "{e}"
        );

        let mut running = ChildGuard(Some(Command::new("sleep").arg("10").spawn().unwrap()));
        assert!(running.running(&log).is_ok());
        let e = wait_healthy("http://127.0.0.1:1", || anyhow::bail!("it stopped")).await.unwrap_err();
        assert_eq!(e.to_string(), "it stopped");
    }

    #[test]
    fn a_server_that_left_no_log_says_so() {
        use std::os::unix::process::ExitStatusExt as _;
        let status = std::process::ExitStatus::from_raw(9);
        assert_eq!(exited(status, "\n \n"), "it exited (signal: 9 (SIGKILL)) with nothing in its log");
        assert_eq!(exited(status, "a\nb\nc\nd\n"), "it exited (signal: 9 (SIGKILL)); its log ends: b / c / d");
    }

    #[test]
    fn a_process_cpu_time_is_its_user_and_system_ticks() {
        let stat = "4242 (call-router (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 8 9 20 0 12 0";
        assert_eq!(stat_cpu_ms(stat), (1234 + 567) as f64 * 10.0);
        assert_eq!(stat_cpu_ms("garbage"), 0.0);
        // This process's own: 80 ms of CPU, by the threads' precise count, shows in it too
        // (give or take the ticks' 10 ms).
        let me = std::process::id();
        let (before, precise) = (process_cpu_ms(me), cpu_ms(me));
        while cpu_ms(me) - precise < 80.0 {
            std::hint::black_box(0u64);
        }
        let ran = process_cpu_ms(me) - before;
        assert!((60.0..=200.0).contains(&ran), "{ran} ms");
    }

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let lat: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let f = figures(lat, 0, 250, Duration::from_secs(2));
        assert_eq!(f.requests, 100);
        assert_eq!(f.requests_per_sec, 50.0);
        assert_eq!(f.p50_ms, 50.0);
        assert_eq!(f.p99_ms, 99.0);
        assert_eq!(f.max_ms, 100.0);
        assert_eq!(f.sent, 250);
        let empty = figures(Vec::new(), 3, 3, Duration::from_secs(1));
        assert_eq!((empty.p99_ms, empty.errors), (0.0, 3));
    }

    #[test]
    fn the_bench_config_loads_with_its_locations_and_they_pass_the_full_check() {
        let specs = bench_locations();
        assert_eq!(specs.len(), LOCATIONS);
        let text = bench_config("http://127.0.0.1:9", 9, "sqlite:///tmp/x.db", "http://127.0.0.1:8", &specs).unwrap();
        let settings =
            crate::config::Settings::from_toml(&text, |k| (k == "TWILIO_AUTH_TOKEN").then(|| TOKEN.into())).unwrap();
        assert_eq!(settings.locations, specs);
        settings.check_location_numbers().unwrap();
        let zones: std::collections::BTreeSet<&str> = specs.iter().map(|s| s.hours.time_zone.as_str()).collect();
        let numbers: std::collections::BTreeSet<&str> = specs.iter().map(|s| s.numbers[0].as_str()).collect();
        assert_eq!((zones.len(), numbers.len()), (5, 10));
    }

    #[test]
    fn the_table_gives_each_load_as_a_share_of_the_bare_server() {
        let load = |rps: f64, p99_ms: f64| LoadFigures {
            requests: (rps * 8.0) as u64,
            errors: 0,
            requests_per_sec: rps,
            p50_ms: 1.0,
            p99_ms,
            max_ms: p99_ms,
            sent: (rps * 8.5) as u64,
            server_cpu_us: 0.0,
            generator_cpu_us: 0.0,
        };
        let report = BenchReport {
            cores: 2,
            connections: 10,
            seconds_per_run: 8.0,
            release_build: true,
            baseline_twiml: load(20_000.0, 1.0),
            dial_queue: load(13_000.0, 2.0),
            reservation_created: load(2_500.0, 4.0).with_server_cpu(4_250.0).with_generator_cpu(1_700.0),
            dials: DialCount { placed: 20_000, reservations: 20_000, twice: 0, earlier: 0 },
            // 1,700 ms of the writer's and 170 of the checkpointer's over 8.5 s and 21,250 requests.
            store_threads: StoreThreads::since(
                Some(StoreThreadsNs { writer: 1_000_000_000, checkpointer: 5_000_000_000 }),
                Some(StoreThreadsNs { writer: 2_700_000_000, checkpointer: 5_170_000_000 }),
                Duration::from_millis(8_500),
                21_250,
            ),
            locations: 100,
            startup_ms: vec![18.0, 19.0, 25.0],
            restart_startup_ms: vec![12.0, 13.0, 14.0],
            startup_cpu_ms: vec![17.0, 18.0, 19.0],
            restart_startup_cpu_ms: vec![11.0, 12.0, 13.0],
            server_log_errors: 0,
            peak_rss_mb: 45.0,
            baseline_peak_rss_mb: 12.0,
            balanced: None,
        };
        let table = render(&report);
        let line = |name: &str| table.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
        assert!(line("/dial-queue").ends_with("65% of bare; target >= 60% met"), "{table}");
        assert!(line("reservation.created").ends_with("12.5% of bare; >= 10000/s and p99 < 5 ms NOT MET"), "{table}");
        assert!(line("  fresh database").contains("19.0 ms (median of 3"), "{table}");
        // CPU per request sent, the servers' then the generator's: 4,250 and 1,700 ms over
        // 21,250 requests; unknown shows as -.
        assert!(line("reservation.created").contains(" 0       200      80  12.5% of bare"), "{table}");
        assert!(line("/dial-queue").contains(" 0         -       -  65% of bare"), "{table}");
        assert!(
            table.contains(
                "80  µs of the server's CPU per reservation in SQLite's writer thread (on a core 20% of the run); 8 \
                 in its checkpointer"
            ),
            "{table}"
        );
        // 21,250 reservations sent, 20,000 dials counted.
        assert!(
            table.contains("20000  dials placed for 21250 reservations sent (warm-up included): 1250 not placed"),
            "{table}"
        );
    }

    #[test]
    fn a_thread_cpu_time_is_found_by_its_name() {
        // Linux with its scheduler's statistics (a kernel without them reads 0 or nothing).
        let own_ns = || -> Option<u64> {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
            stat.split_whitespace().next()?.parse().ok().filter(|&ns| ns > 0)
        };
        if own_ns().is_none() {
            eprintln!("skipped: no per-thread CPU time in /proc here");
            return;
        }
        // A name of its own: under `cargo test` other tests' SQLite writers share the process.
        const NAME: &str = "bench-test-busy";
        // The thread spins until it has run 30 ms by its own count (within 10 s), then
        // waits to be read.
        let (ran_tx, ran_rx) = std::sync::mpsc::channel::<u64>();
        let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name(NAME.into())
            .spawn(move || {
                let start = Instant::now();
                while own_ns().unwrap_or(0) < 30_000_000 && start.elapsed() < Duration::from_secs(10) {
                    std::hint::black_box((0..10_000u64).sum::<u64>());
                }
                ran_tx.send(own_ns().unwrap_or(0)).unwrap();
                read_rx.recv().ok();
            })
            .unwrap();
        let ran = ran_rx.recv().unwrap();
        assert!(ran >= 30_000_000, "the thread ran {ran} ns in 10 s");
        let ns = threads_cpu_ns(std::process::id(), |n| n == NAME).expect("the thread is found by its name");
        assert!(ns >= ran && ns < ran + 50_000_000, "it had run {ran} ns; read {ns} ns");
        read_tx.send(()).unwrap();
        busy.join().unwrap();
        assert_eq!(threads_cpu_ns(std::process::id(), |n| n == "no-such-thread"), None);
        let some = Some(StoreThreadsNs { writer: 1, checkpointer: 1 });
        assert!(StoreThreads::since(None, some, Duration::from_secs(1), 10).is_none());
    }

    #[test]
    fn the_table_says_whether_each_reservation_sent_got_one_dial() {
        let said =
            |placed, reservations, twice, earlier| dials_said(&DialCount { placed, reservations, twice, earlier }, 7);
        assert_eq!(said(7, 7, 0, 0), "dials placed, one for each of the 7 reservations sent (warm-up included)");
        assert!(said(9, 7, 2, 0).ends_with(": 2 RESERVATIONS DIALLED TWICE"));
        assert!(said(5, 5, 0, 0).ends_with(": 2 not placed 0.5 s after the load"));
        // Two missing and two dialled twice add up to 7 dials: still said.
        assert!(said(7, 5, 2, 0).ends_with(": 2 RESERVATIONS DIALLED TWICE"));
        assert!(said(7, 7, 0, 3).ends_with("one for each of the 7 reservations sent (warm-up included); and 3 for earlier runs' reservations on this database"));
    }

    #[test]
    fn dials_are_counted_by_the_reservation_in_their_url() {
        let log = DialLog::default();
        let url = |r: &str| format!("http://x/dial-queue?reservationSid={r}&taskSid=WT1&attempt=1");
        log.took(Some(&url("WR00000001a")));
        let before = log.total();
        for r in ["WR00000002a", "WR00000002b", "WR00000002b", "WR00000001b"] {
            log.took(Some(&url(r)));
        }
        log.took(None);
        let c = log.count("WR00000002", before);
        assert_eq!(c, DialCount { placed: 3, reservations: 2, twice: 1, earlier: 2 });
    }

    #[test]
    fn reservation_events_are_unique_and_signed_over_their_url() {
        let url = "http://127.0.0.1:1/tr-event-handler";
        let (a, sig_a) = reservation_created(url, 7, 1);
        let (b, _) = reservation_created(url, 7, 2);
        assert_ne!(a, b);
        let p = twilio::Params::parse(a.as_bytes());
        assert!(twilio::signature::validate_form(TOKEN.as_bytes(), url, p.iter(), Some(&sig_a)).is_ok());
        assert!(twilio::sid::ReservationSid::parse(p.get("ReservationSid").unwrap()).is_ok());
        assert!(twilio::sid::TaskSid::parse(p.get("TaskSid").unwrap()).is_ok());
    }
}
