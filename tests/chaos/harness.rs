//! The chaos harness: the sandbox in this process, `call-router serve` as a
//! child process (restarted, killed, rolled), a business provisioned in the
//! sandbox, seeded callers and seeded faults, and at the end the figures
//! issue 8 asks for, each failure named.
//!
//! It is independent of the database and of how many `serve` processes run:
//! the same run points at PostgreSQL through `Options::database_url`, and
//! runs several instances (issue 9) through `Options::instances`: each on its
//! own port with its own config, one database, and a round-robin balancer
//! (`call_router::balance`) in front whose URL is every instance's `public_url`.
//!
//! Times: `*_ms` fields are the sandbox's virtual milliseconds since it
//! started; `Duration`s are real time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use call_router::config::Settings;
use call_router::demo::report::FaultCount;
use call_router::demo::scenario::{PlannedCall, Scenario};
use call_router::domain::Outcome;
use call_router::store::{CallRecord, Store};
use sandbox::client::{PlaceCall, SandboxClient};
use serde_json::Value;
use tokio::net::TcpListener;
use twilio::Params;

use call_router::balance::{BackendCount, Balancer};

/// How a rolling restart is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rolling {
    /// Start a second `serve` on the same address, wait until it is ready,
    /// then SIGTERM the first: no gap, once two processes can share the
    /// port. If the second cannot bind, the harness says so, records it,
    /// and falls back to `StopThenStart` so the run goes on.
    Overlap,
    /// SIGTERM the first, wait for it to exit, start the second: a gap.
    #[allow(dead_code, reason = "the other side of the switch in tests/chaos.rs")]
    StopThenStart,
}

/// Something done to the server during the run, to one instance (0 when
/// there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disruption {
    /// `kill -9` at this virtual time, then start a new `serve` at once on
    /// the same port (so under the same instance name).
    Kill { at_ms: u64, instance: usize },
    /// A rolling restart at this virtual time.
    RollingRestart { at_ms: u64, instance: usize },
    /// The PostgreSQL server restarts at this virtual time (`.ci/postgres
    /// restart` of [`Options::postgres_dir`]): every connection is cut.
    RestartPostgres { at_ms: u64 },
}

impl Disruption {
    fn at_ms(self) -> u64 {
        match self {
            Disruption::Kill { at_ms, .. }
            | Disruption::RollingRestart { at_ms, .. }
            | Disruption::RestartPostgres { at_ms } => at_ms,
        }
    }

    fn instance(self) -> usize {
        match self {
            Disruption::Kill { instance, .. } | Disruption::RollingRestart { instance, .. } => instance,
            Disruption::RestartPostgres { .. } => 0,
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Seeds the sandbox (SIDs, choices) and, through the rules, the faults.
    pub(crate) seed: u64,
    /// Virtual seconds per real second.
    pub(crate) time_scale: f64,
    /// The business, its phones, the callers and the fault rules.
    pub(crate) scenario: Scenario,
    pub(crate) disruptions: Vec<Disruption>,
    pub(crate) rolling: Rolling,
    /// How every `serve` gets its listening socket.
    pub(crate) listener: Listener,
    /// `None`: a SQLite file in the run's temporary directory.
    pub(crate) database_url: Option<String>,
    /// The cluster `.ci/postgres start` made that serves `database_url`, for
    /// [`Disruption::RestartPostgres`].
    pub(crate) postgres_dir: Option<PathBuf>,
    /// How many `serve` instances run at once, each on its own port. With
    /// more than one, a round-robin balancer takes the webhooks.
    pub(crate) instances: usize,
    /// Real time allowed, from the first dial, for every caller's call to end.
    pub(crate) calls_deadline: Duration,
    /// Real time allowed after that for the server to end tasks and legs.
    pub(crate) settle_limit: Duration,
    /// A leg of a reservation that ended may live this many virtual
    /// milliseconds past the end (the event's trip, the hang-up's trip)
    /// before it counts as left ringing.
    pub(crate) ringing_grace_ms: u64,
    /// Keep the temporary directory (config, database, the servers' logs).
    pub(crate) keep_dir: bool,
}

/// How `serve` listens, as README's "Operating: restarts and deploys" describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The harness holds the listening socket and passes it to every `serve`
    /// as fd 3 (`LISTEN_FDS`), as systemd's socket activation does: while no
    /// process accepts (a `kill -9`), connections wait in the kernel's queue.
    Activated,
    /// Each `serve` binds `listen` itself with `SO_REUSEPORT`: while none is
    /// running, connections are refused.
    Bound,
}

/// A call, task, worker or reservation that failed a check, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub(crate) sid: String,
    pub(crate) why: String,
}

/// One restart of the server and the gap it left.
#[derive(Debug, Clone)]
pub(crate) struct Restart {
    pub(crate) kind: String,
    pub(crate) at_ms: u64,
    /// Real time the address answered nobody (0 for an overlapped roll).
    pub(crate) outage: Duration,
    /// For a rolling restart: whether the second process served beside the first.
    pub(crate) overlapped: Option<bool>,
    pub(crate) note: String,
}

/// Everything measured.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) time_scale: f64,
    pub(crate) listener: Listener,
    pub(crate) seed: u64,
    /// The sandbox's clock when the scenario's time 0 began.
    pub(crate) first_dial_ms: u64,
    pub(crate) callers: usize,
    /// Callers the sandbox accepted (`POST /sandbox/calls`).
    pub(crate) placed: usize,
    /// Callers that could not even be placed in the sandbox.
    pub(crate) not_placed: Vec<Named>,
    /// Callers whose call had not ended in the sandbox by the deadline.
    pub(crate) still_live: Vec<Named>,
    /// The server's outcome per caller, by name; `(no row)` for none.
    pub(crate) outcomes: BTreeMap<String, usize>,
    /// A `calls` row whose outcome is still `pending`.
    pub(crate) not_final: Vec<Named>,
    /// No `calls` row at all for a call the sandbox placed.
    pub(crate) without_outcome: Vec<Named>,
    pub(crate) open_tasks: Vec<Named>,
    pub(crate) busy_workers: Vec<Named>,
    /// `POST Calls.json` requests, and the calls they created.
    pub(crate) dial_requests: usize,
    pub(crate) dials: usize,
    pub(crate) dialled_twice: Vec<Named>,
    /// Legs of a reservation that had ended, alive past the grace.
    pub(crate) ringing_after_end: Vec<Named>,
    /// Legs placed after their reservation had ended (informational).
    pub(crate) dialled_after_end: usize,
    /// Legs a person or machine answered after their reservation had
    /// ended: nobody to bridge them to (informational, named).
    pub(crate) answered_after_end: Vec<Named>,
    /// Callers lost to a fault: a dial that failed for good, an application error.
    pub(crate) lost_to_fault: Vec<Named>,
    pub(crate) faults: Vec<FaultCount>,
    pub(crate) restarts: Vec<Restart>,
    /// Real time the server took to end every task and leg after the last
    /// caller's call ended; `None` if it had not by `settle_limit`.
    pub(crate) settled_in: Option<Duration>,
    /// How the last `serve` stopped on SIGTERM.
    pub(crate) final_stop: String,
    /// Per instance, what each of its `serve` processes did, by its log
    /// and (behind the balancer) by the balancer's count.
    pub(crate) instances: Vec<InstanceFigures>,
    /// Requests the balancer could get no instance to answer (502).
    pub(crate) unbalanced: u64,
    pub(crate) wall: Duration,
    /// Where the config, database and logs are, when kept.
    pub(crate) kept_dir: Option<PathBuf>,
}

/// One instance: its address (its name on the database is `host:port`) and
/// what each `serve` process that ran it did.
#[derive(Debug, Clone)]
pub(crate) struct InstanceFigures {
    /// `a`, `b`, …
    pub(crate) label: String,
    pub(crate) addr: String,
    /// Requests the balancer had answered by it, and skipped it for (`None` without a balancer).
    pub(crate) balanced: Option<BackendCount>,
    pub(crate) processes: Vec<ProcessFigures>,
}

impl InstanceFigures {
    /// Webhooks its processes logged answering.
    pub(crate) fn webhooks(&self) -> usize {
        self.processes.iter().map(|p| p.webhooks).sum()
    }

    /// Calls its processes logged creating (`dialled the location`).
    pub(crate) fn dials(&self) -> usize {
        self.processes.iter().map(|p| p.dials).sum()
    }
}

/// One `serve` process, counted from its log.
#[derive(Debug, Clone)]
pub(crate) struct ProcessFigures {
    /// Its number in the run (`serve-a2.log` is instance a's second process).
    pub(crate) n: usize,
    /// How it ended: `kill -9 at 70.1s`, `SIGTERM at the end: exited …`.
    pub(crate) ended: String,
    /// Webhooks it answered: `finished processing request` lines, `/healthz` aside.
    pub(crate) webhooks: usize,
    /// Calls it created: `dialled the location` lines (a dial whose answer
    /// was lost to a reset made a call but no line).
    pub(crate) dials: usize,
    /// Outbox commands it took over from a stopped sender (requeued + looked up).
    pub(crate) took_over: u64,
}

impl ProcessFigures {
    /// Counts what `log` says.
    fn from_log(n: usize, ended: String, log: &std::path::Path) -> ProcessFigures {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut p = ProcessFigures { n, ended, webhooks: 0, dials: 0, took_over: 0 };
        for line in text.lines() {
            if line.contains("finished processing request") && !line.contains("/healthz") {
                p.webhooks += 1;
            } else if line.contains("dialled the location") {
                p.dials += 1;
            } else if line.contains("took over commands") {
                p.took_over += field(line, "requeued") + field(line, "unknown");
            }
        }
        p
    }
}

/// `name=N` in a log line, or 0.
fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or(0)
}

impl Figures {
    /// The share of callers lost to a fault.
    pub(crate) fn lost_share(&self) -> f64 {
        if self.callers == 0 { 0.0 } else { self.lost_to_fault.len() as f64 / self.callers as f64 }
    }

    /// The figures as a table, then every named failure.
    pub(crate) fn table(&self, max_lost_share: f64) -> String {
        let mut out = String::new();
        let vs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
        let mut row = |name: &str, value: String, target: &str, ok: Option<bool>| {
            let mark = match ok {
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "",
            };
            let _ = writeln!(out, "  {name:<62} {value:>14}  {target:<6} {mark}");
        };
        row("callers", self.callers.to_string(), "", None);
        row("  placed in the sandbox", self.placed.to_string(), "", Some(self.not_placed.is_empty()));
        row(
            "  call not ended in the sandbox by the deadline",
            self.still_live.len().to_string(),
            "0",
            Some(self.still_live.is_empty()),
        );
        for (outcome, n) in &self.outcomes {
            row(&format!("  outcome {outcome}"), n.to_string(), "", None);
        }
        row("calls not final (row pending)", self.not_final.len().to_string(), "0", Some(self.not_final.is_empty()));
        row(
            "calls without an outcome (no row)",
            self.without_outcome.len().to_string(),
            "0",
            Some(self.without_outcome.is_empty()),
        );
        row("open tasks at the end", self.open_tasks.len().to_string(), "0", Some(self.open_tasks.is_empty()));
        row("busy workers at the end", self.busy_workers.len().to_string(), "0", Some(self.busy_workers.is_empty()));
        row("dial requests (POST Calls.json)", self.dial_requests.to_string(), "", None);
        row("  calls they created", self.dials.to_string(), "", None);
        row(
            "reservations dialled twice",
            self.dialled_twice.len().to_string(),
            "0",
            Some(self.dialled_twice.is_empty()),
        );
        row(
            "legs left ringing for an ended reservation",
            self.ringing_after_end.len().to_string(),
            "0",
            Some(self.ringing_after_end.is_empty()),
        );
        row("  legs placed after their reservation ended", self.dialled_after_end.to_string(), "", None);
        row("  legs answered after their reservation ended", self.answered_after_end.len().to_string(), "", None);
        let lost = format!("{} ({:.1}%)", self.lost_to_fault.len(), self.lost_share() * 100.0);
        let target = format!("<={:.0}%", max_lost_share * 100.0);
        row("callers lost to a fault", lost, &target, Some(self.lost_share() <= max_lost_share));
        for f in &self.faults {
            row(&format!("fault {}", f.rule), format!("{} of {}", f.fired, f.matched), "", None);
        }
        for r in &self.restarts {
            let overlap = match r.overlapped {
                Some(true) => ", overlapped",
                Some(false) => ", NOT overlapped",
                None => "",
            };
            let outage = format!(
                "{}ms = {}",
                r.outage.as_millis(),
                vs((r.outage.as_secs_f64() * 1000.0 * self.time_scale) as u64)
            );
            row(&format!("{} at {}{overlap}: outage", r.kind, vs(r.at_ms)), outage, "", r.overlapped);
        }
        if self.instances.len() > 1 {
            for i in &self.instances {
                let balanced = i.balanced.as_ref().map_or_else(String::new, |b| {
                    format!("; the balancer: {} answered, skipped {}", b.answered, b.skipped)
                });
                row(
                    &format!("instance {} ({}){balanced}", i.label, i.addr),
                    format!("{} / {}", i.webhooks(), i.dials()),
                    "> 0",
                    Some(i.webhooks() > 0 && i.dials() > 0),
                );
                for p in &i.processes {
                    let took = if p.took_over > 0 { format!(", took over {}", p.took_over) } else { String::new() };
                    row(
                        &format!("  serve-{}{} ({}{took})", i.label, p.n, p.ended),
                        format!("{} / {}", p.webhooks, p.dials),
                        "",
                        None,
                    );
                }
            }
            row("requests no instance answered (502)", self.unbalanced.to_string(), "", None);
        }
        let settled = self.settled_in.map_or_else(|| "not settled".to_owned(), |d| format!("{}ms", d.as_millis()));
        row("settled after the last caller (real)", settled, "", Some(self.settled_in.is_some()));
        row("last serve on SIGTERM", self.final_stop.clone(), "", None);
        row("wall time", format!("{:.1}s", self.wall.as_secs_f64()), "", None);
        let instances = match self.instances.len() {
            0 | 1 => String::new(),
            n => format!(
                "{n} instances on one database behind a round-robin balancer (per request; `webhooks / dials` \
                 are counted from each serve's log); "
            ),
        };
        let mut out = format!(
            "chaos run: seed {}, time scale {} (virtual seconds per real second); {instances}serve's socket: {}; \
             times are the sandbox's virtual clock, the first caller dialled at {}\n{out}",
            self.seed,
            self.time_scale,
            match self.listener {
                Listener::Activated => "passed to each serve (socket activation)",
                Listener::Bound => "bound by each serve (SO_REUSEPORT)",
            },
            vs(self.first_dial_ms)
        );
        let lists: [(&str, &[Named]); 10] = [
            ("not placed", &self.not_placed),
            ("not ended in the sandbox", &self.still_live),
            ("not final", &self.not_final),
            ("without an outcome", &self.without_outcome),
            ("open tasks", &self.open_tasks),
            ("busy workers", &self.busy_workers),
            ("dialled twice", &self.dialled_twice),
            ("left ringing", &self.ringing_after_end),
            ("answered after their reservation ended (informational)", &self.answered_after_end),
            ("lost to a fault", &self.lost_to_fault),
        ];
        for (title, list) in lists {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title} ({}):", list.len());
            for n in list {
                let _ = writeln!(out, "  {}: {}", n.sid, n.why);
            }
        }
        for r in self.restarts.iter().filter(|r| !r.note.is_empty()) {
            let _ = writeln!(out, "{} at {}: {}", r.kind, vs(r.at_ms), r.note);
        }
        if let Some(d) = &self.kept_dir {
            let _ = writeln!(out, "kept: {}", d.display());
        }
        out
    }
}

// ---------------------------------------------------------------------------
// `serve` as a child process.
// ---------------------------------------------------------------------------

/// One `call-router serve` process; killed when dropped.
struct Serve {
    n: usize,
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `kill -9`, and reaps it, so its socket is closed when this returns.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, by process id (the process this harness started).
    fn sigterm(&self) -> anyhow::Result<()> {
        let status =
            Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.pid());
        }
        Ok(())
    }

    /// Waits up to `limit` for it to exit.
    async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Its `error: …` line (what `main` prints when a command fails), or its last lines.
    fn failure(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(line) = text.lines().rev().find(|l| l.starts_with("error:")) {
            return line.to_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Whether it has logged that it is ready (it binds before it says so).
    fn said_ready(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .is_ok_and(|t| t.lines().any(|l| l.contains(" ready") && l.contains("startup_ms")))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill9();
        }
    }
}

/// Starts `serve` processes on one address with one config: one instance.
struct Fleet {
    /// `a`, `b`, … with several instances (logs `serve-a1.log`, …); empty with one (`serve-1.log`).
    label: String,
    exe: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    url: String,
    started: usize,
    http: reqwest::Client,
    /// The socket every `serve` inherits ([`Listener::Activated`]).
    socket: Option<socket2::Socket>,
    /// Every process started: its number, its log and how it ended (empty while it runs).
    processes: Vec<(usize, PathBuf, String)>,
}

impl Fleet {
    fn spawn(&mut self) -> anyhow::Result<Serve> {
        self.started += 1;
        let n = self.started;
        let log = self.dir.join(format!("serve-{}{n}.log", self.label));
        self.processes.push((n, log.clone(), String::new()));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // A clean environment: the developer's CALL_ROUTER_* and TWILIO_* are not this run's.
        let mut cmd = match &self.socket {
            Some(s) => {
                use std::os::fd::AsRawFd as _;
                // std has no safe way to place an inherited fd at 3: a shell does it.
                // `$$` is the pid that `exec` keeps.
                let mut c = Command::new("/bin/bash");
                c.arg("-c")
                    .arg(
                        r#"exec 3<&"$SOCK_FD"; [ "$SOCK_FD" = 3 ] || eval "exec $SOCK_FD<&-";
                           export LISTEN_FDS=1 LISTEN_PID=$$; exec "$0" "$@""#,
                    )
                    .arg(&self.exe)
                    .env_clear()
                    .env("SOCK_FD", s.as_raw_fd().to_string());
                c
            }
            None => {
                let mut c = Command::new(&self.exe);
                c.env_clear();
                c
            }
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            // One line per webhook answered (`finished processing request`), for the figures per instance.
            .env("RUST_LOG", "info,sqlx=warn,tower_http=warn,tower_http::trace::on_response=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting call-router serve")?;
        Ok(Serve { n, child, log })
    }

    /// Records how process `n` ended.
    fn ended(&mut self, n: usize, how: String) {
        if let Some(p) = self.processes.iter_mut().find(|p| p.0 == n) {
            p.2 = how;
        }
    }

    /// Waits until `/healthz` answers on the address (any process behind
    /// it) or `serve` exits; returns how long it took.
    async fn healthy(&self, serve: &mut Serve, limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(status) = serve.exited() {
                bail!("serve #{} exited ({status}) before it was healthy: {}", serve.n, serve.failure());
            }
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                bail!("serve #{} not healthy within {limit:?}: {}", serve.n, serve.failure());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until this very process says it is ready (another may be
    /// answering on the same address), or exits.
    async fn ready(&self, serve: &mut Serve, limit: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(status) = serve.exited() {
                bail!("serve #{} exited ({status}): {}", serve.n, serve.failure());
            }
            if serve.said_ready() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                bail!("serve #{} not ready within {limit:?}: {}", serve.n, serve.failure());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// A listening socket on that loopback port that children inherit.
fn passable_socket(port: u16) -> anyhow::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).context("making a socket")?;
    s.set_reuse_address(true)?;
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).context("binding the shared socket")?;
    s.listen(1024)?;
    s.set_cloexec(false)?;
    Ok(s)
}

/// A free loopback port; the next `serve` binds it (a tiny race, fine on loopback).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

/// What happened to one caller, as the sandbox saw it.
struct Caller {
    planned: PlannedCall,
    sid: Result<String, String>,
    /// The final summary, or the last one read if it did not end.
    summary: Option<Value>,
    ended: bool,
}

/// Runs the whole thing. Errors are set-up failures; how the callers fared
/// is in the figures.
pub(crate) async fn run(opts: &Options) -> anyhow::Result<Figures> {
    let wall = Instant::now();
    let dir = tempfile::Builder::new().prefix("call-router-chaos-").tempdir().context("creating a temp dir")?;
    let sb_listener = TcpListener::bind("127.0.0.1:0").await.context("binding the sandbox's port")?;
    let sandbox = sandbox::start(sandbox::Config::random(opts.time_scale, opts.seed), sb_listener)
        .await
        .context("starting the sandbox")?;
    let (account, token, sb_url) = (sandbox.account_sid().to_string(), sandbox.auth_token().to_owned(), sandbox.url());
    let client = SandboxClient::new(&sb_url, &account, &token);

    let db = match &opts.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("chaos.db").display()),
    };
    let count = opts.instances.max(1);
    let ports = (0..count).map(|_| free_port()).collect::<anyhow::Result<Vec<u16>>>()?;
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    // With several instances the webhooks go to the balancer, and so do the
    // URLs every instance gives Twilio.
    let balancer = if count > 1 { Some(Balancer::start(&urls).await?) } else { None };
    let public_url = balancer.as_ref().map_or_else(|| urls[0].clone(), |b| b.url().to_owned());
    let config_toml = |port: u16| {
        format!(
            // The reconciler every 2 real seconds (20 virtual at scale 10), so that a caller an
            // outage cost is found and counted within the run.
            "public_url = {public_url:?}\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = {db:?}\nreconcile_secs = 2\n\
             [twilio]\naccount_sid = {account:?}\nauth_token = {token:?}\n\
             api_base_url = {sb_url:?}\ntaskrouter_base_url = {sb_url:?}\n{}",
            opts.scenario.server.to_settings_toml()
        )
    };
    std::fs::write(dir.path().join("scenario.txt"), format!("{:#?}", opts.scenario)).ok();

    provision(&client, &config_toml(ports[0]), &db, &opts.scenario).await?;
    client.add_faults(&opts.scenario.faults).await.context("adding the fault rules")?;

    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(500)).build()?;
    let mut fleets = Vec::new();
    for (i, (&port, url)) in ports.iter().zip(&urls).enumerate() {
        let label = if count > 1 { char::from(b'a' + i as u8).to_string() } else { String::new() };
        let config = dir.path().join(if count > 1 { format!("serve-{label}.toml") } else { "serve.toml".into() });
        std::fs::write(&config, config_toml(port)).context("writing serve's config")?;
        fleets.push(Fleet {
            label,
            exe: PathBuf::from(env!("CARGO_BIN_EXE_call-router")),
            config,
            dir: dir.path().to_owned(),
            url: url.clone(),
            started: 0,
            http: http.clone(),
            socket: match opts.listener {
                Listener::Activated => Some(passable_socket(port)?),
                Listener::Bound => None,
            },
            processes: Vec::new(),
        });
    }
    let mut serves = Vec::new();
    for fleet in &mut fleets {
        let mut serve = fleet.spawn()?;
        fleet.healthy(&mut serve, Duration::from_secs(30)).await.context("the first serve")?;
        serves.push(serve);
    }

    // From here on, virtual time is read off the real clock: v = v0 + real × scale.
    let v0 = now_ms(&client).await?;
    let t0 = Instant::now();
    let virt =
        move |at: Instant| v0 + (at.saturating_duration_since(t0).as_secs_f64() * 1000.0 * opts.time_scale) as u64;
    let real_at = move |ms: u64| t0 + Duration::from_secs_f64(ms as f64 / 1000.0 / opts.time_scale);
    let vs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);

    let deadline = tokio::time::Instant::from_std(t0 + opts.calls_deadline);
    let mut callers = tokio::task::JoinSet::new();
    for planned in opts.scenario.plan() {
        let (client, at) = (client.clone(), real_at(planned.start_at_ms));
        callers.spawn(async move { follow(&client, planned, at, deadline).await });
    }

    let mut disruptions = opts.disruptions.clone();
    disruptions.sort_by_key(|d| d.at_ms());
    let mut restarts = Vec::new();
    for d in disruptions {
        let i = d.instance();
        anyhow::ensure!(i < count, "a disruption of instance {i}, and there are {count}");
        tokio::time::sleep_until(tokio::time::Instant::from_std(real_at(d.at_ms()))).await;
        let at_ms = virt(Instant::now());
        let (fleet, serve) = (&mut fleets[i], &mut serves[i]);
        let of = if count > 1 { format!(" of instance {}", fleet.label) } else { String::new() };
        let restart = match d {
            Disruption::Kill { .. } => {
                let down = Instant::now();
                serve.kill9();
                fleet.ended(serve.n, format!("kill -9 at {}", vs(at_ms)));
                *serve = fleet.spawn()?;
                fleet.healthy(serve, Duration::from_secs(30)).await.context("serve after kill -9")?;
                Restart {
                    kind: format!("kill -9{of}"),
                    at_ms,
                    outage: down.elapsed(),
                    overlapped: None,
                    note: String::new(),
                }
            }
            Disruption::RollingRestart { .. } => {
                let mut restart = roll(fleet, serve, opts.rolling, at_ms).await?;
                restart.kind.push_str(&of);
                restart
            }
            Disruption::RestartPostgres { .. } => {
                let dir = opts.postgres_dir.clone().context("a PostgreSQL restart needs Options::postgres_dir")?;
                let down = Instant::now();
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres");
                let status = tokio::task::spawn_blocking(move || {
                    Command::new("bash").arg(script).arg("restart").arg(dir).status()
                })
                .await??;
                anyhow::ensure!(status.success(), "`.ci/postgres restart` failed: {status}");
                Restart {
                    kind: "PostgreSQL restarted (fast: connections cut)".into(),
                    at_ms,
                    outage: down.elapsed(),
                    overlapped: None,
                    note: String::new(),
                }
            }
        };
        eprintln!(
            "chaos: {} at {:.1}s virtual: outage {} ms",
            restart.kind,
            at_ms as f64 / 1000.0,
            restart.outage.as_millis()
        );
        restarts.push(restart);
    }

    let mut results = Vec::new();
    while let Some(r) = callers.join_next().await {
        results.push(r.context("a caller's task panicked")?);
    }
    results.sort_by_key(|c| c.planned.index);

    let settle_start = Instant::now();
    let settled_in = settle(&client, opts.settle_limit).await.then(|| settle_start.elapsed());

    for serve in &serves {
        serve.sigterm()?;
    }
    let mut stops = Vec::new();
    for (fleet, serve) in fleets.iter_mut().zip(&mut serves) {
        let stop = match serve.wait_exit(Duration::from_secs(20)).await {
            Some(s) => format!("exited {s}"),
            None => {
                serve.kill9();
                "no exit in 20s, killed".into()
            }
        };
        fleet.ended(serve.n, format!("SIGTERM at the end: {stop}"));
        stops.push(if count > 1 { format!("{}: {stop}", fleet.label) } else { stop });
    }
    let final_stop = stops.join("; ");

    let log = full_log(&client).await?;
    let state = client.state().await.context("reading the sandbox's state")?;
    let faults = call_router::demo::fault_counts(&client).await;
    sandbox.shutdown().await;
    let store = Store::connect(&db).await.context("opening the server's database")?;
    let rows: HashMap<String, CallRecord> =
        store.calls().await.context("reading calls")?.into_iter().map(|c| (c.call_sid.clone(), c)).collect();
    drop(store);

    let balanced = balancer.as_ref().map(Balancer::counts);
    let instances = fleets
        .iter()
        .enumerate()
        .map(|(i, f)| InstanceFigures {
            label: if f.label.is_empty() { "-".into() } else { f.label.clone() },
            addr: f.url.trim_start_matches("http://").to_owned(),
            balanced: balanced.as_ref().and_then(|b| b.get(i).cloned()),
            processes: f.processes.iter().map(|(n, log, how)| ProcessFigures::from_log(*n, how.clone(), log)).collect(),
        })
        .collect();
    let kept_dir = opts.keep_dir.then(|| dir.keep());
    let mut figures = measure(opts, v0, &results, &rows, &log, &state);
    figures.faults = faults;
    figures.restarts = restarts;
    figures.settled_in = settled_in;
    figures.final_stop = final_stop;
    figures.instances = instances;
    figures.unbalanced = balancer.as_ref().map_or(0, Balancer::unanswered);
    figures.kept_dir = kept_dir;
    figures.wall = wall.elapsed();
    Ok(figures)
}

/// Buys the numbers, sets the phones and provisions, in this process, on
/// the database `serve` will use.
async fn provision(client: &SandboxClient, toml: &str, db: &str, scenario: &Scenario) -> anyhow::Result<()> {
    for number in scenario.numbers() {
        client.buy_number(&number, None).await.with_context(|| format!("buying {number}"))?;
    }
    for loc in &scenario.locations {
        let b = scenario.phones.get(&loc.name).cloned().unwrap_or_default();
        client.set_phone(&loc.phone, &call_router::demo::sandbox_behaviour(b)).await?;
    }
    let mut settings = Settings::from_toml(toml, |_| None).context("serve's settings")?;
    settings.locations = scenario.locations.clone();
    let store = Store::connect(db).await.context("opening the database to provision")?;
    let mut report = call_router::provision::Report::default();
    call_router::provision::run(&settings, &store, call_router::provision::Options::default(), &mut report)
        .await
        .with_context(|| format!("provisioning:\n{}", report.lines.join("\n")))?;
    store.pool().close().await;
    Ok(())
}

/// A rolling restart: `serve` is the process now serving when it returns.
async fn roll(fleet: &mut Fleet, serve: &mut Serve, mode: Rolling, at_ms: u64) -> anyhow::Result<Restart> {
    let at = format!("{:.1}s", at_ms as f64 / 1000.0);
    let mut note = String::new();
    if mode == Rolling::Overlap {
        let mut next = fleet.spawn()?;
        match fleet.ready(&mut next, Duration::from_secs(30)).await {
            Ok(_) => {
                // The second serves; the first drains and exits.
                let mut old = std::mem::replace(serve, next);
                old.sigterm()?;
                let drained = old.wait_exit(Duration::from_secs(30)).await;
                let how = match drained {
                    Some(s) => format!("rolled at {at}: exited {s}"),
                    None => {
                        note = "the first serve did not exit within 30 s of SIGTERM; killed".into();
                        old.kill9();
                        format!("rolled at {at}: killed")
                    }
                };
                fleet.ended(old.n, how);
                let restart = Restart {
                    kind: "rolling restart".into(),
                    at_ms,
                    outage: Duration::ZERO,
                    overlapped: Some(true),
                    note,
                };
                return Ok(restart);
            }
            Err(e) => {
                note = format!(
                    "the second serve could not start beside the first on {} (no shared port yet: \
                     SO_REUSEPORT or socket activation); fell back to stop-then-start: {e:#}",
                    fleet.url
                );
                eprintln!("chaos: rolling restart: {note}");
                fleet.ended(next.n, format!("could not start beside the first at {at}"));
                drop(next);
            }
        }
    }
    let down = Instant::now();
    serve.sigterm()?;
    let how = if serve.wait_exit(Duration::from_secs(30)).await.is_none() {
        note.push_str("; the first serve did not exit within 30 s of SIGTERM, killed");
        serve.kill9();
        format!("stopped at {at}: killed")
    } else {
        format!("stopped at {at}: exited")
    };
    fleet.ended(serve.n, how);
    *serve = fleet.spawn()?;
    fleet.healthy(serve, Duration::from_secs(30)).await.context("serve after the rolling restart")?;
    let overlapped = (mode == Rolling::Overlap).then_some(false);
    Ok(Restart { kind: "rolling restart".into(), at_ms, outage: down.elapsed(), overlapped, note })
}

async fn now_ms(client: &SandboxClient) -> anyhow::Result<u64> {
    client.state().await?.get("now_ms").and_then(Value::as_u64).context("no now_ms in the sandbox's state")
}

/// One caller: dial at `at`, then wait for the call to end (or the deadline).
async fn follow(client: &SandboxClient, planned: PlannedCall, at: Instant, deadline: tokio::time::Instant) -> Caller {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    let placed = client
        .place_call(&PlaceCall {
            from: planned.from.clone(),
            to: planned.to.clone(),
            digits: planned.digits.clone(),
            patience_secs: Some(u64::from(planned.patience_secs)),
        })
        .await
        .map_err(|e| format!("{e:#}"));
    let Ok(sid) = &placed else {
        return Caller { planned, sid: placed, summary: None, ended: false };
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let (summary, ended) = match client.wait_for_call_end(sid, left).await {
        Ok(s) => (Some(s), true),
        Err(_) => (client.call_summary(sid).await.ok(), false),
    };
    Caller { planned, sid: placed, summary, ended }
}

/// Waits until every call in the sandbox has ended, no task is open and no
/// worker is busy, or `limit` passes; true if it got there.
async fn settle(client: &SandboxClient, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if let Ok(state) = client.state().await {
            let calls_done = array(&state, "calls").iter().all(|c| c["final"].as_bool() == Some(true));
            if calls_done && open_tasks(&state).is_empty() && busy_workers(&state).is_empty() {
                return true;
            }
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sandbox's whole request log.
async fn full_log(client: &SandboxClient) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut since = 0;
    loop {
        let (entries, next) = client.log(since).await.context("reading the sandbox's log")?;
        if entries.is_empty() {
            return Ok(all);
        }
        all.extend(entries);
        since = next;
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn open_tasks(state: &Value) -> Vec<Named> {
    array(state, "tasks")
        .iter()
        .filter(|t| !matches!(text(t, "assignment_status"), "completed" | "canceled"))
        .map(|t| {
            let caller = serde_json::from_str::<Value>(text(t, "attributes"))
                .ok()
                .and_then(|a| a.get("call_sid").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "?".into());
            Named { sid: text(t, "sid").into(), why: format!("{} (caller {caller})", text(t, "assignment_status")) }
        })
        .collect()
}

fn busy_workers(state: &Value) -> Vec<Named> {
    array(state, "workers")
        .iter()
        .filter(|w| w["in_use"].as_u64().unwrap_or(0) > 0)
        .map(|w| Named {
            sid: text(w, "sid").into(),
            why: format!(
                "{}: {} task(s) in use, activity {}",
                text(w, "friendly_name"),
                w["in_use"],
                text(w, "activity_name")
            ),
        })
        .collect()
}

/// A request to `POST …/Calls.json`, as the sandbox logged it.
struct Dial {
    at_ms: u64,
    status: u64,
    fault: Option<String>,
    reservation: String,
    caller: Option<String>,
    /// The call it created (201, including a reset after creating).
    leg: Option<String>,
}

fn dials(log: &[Value]) -> Vec<Dial> {
    log.iter()
        .filter(|e| {
            text(e, "direction") == "in"
                && text(e, "method") == "POST"
                && sandbox::faults::glob(
                    "/2010-04-01/Accounts/*/Calls.json",
                    text(e, "url").split('?').next().unwrap_or(""),
                )
        })
        .map(|e| {
            let params: Params = array(e, "params")
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_str()?.to_owned(), p.get(1)?.as_str()?.to_owned())))
                .collect();
            let url = params.get("Url").unwrap_or_default();
            let query =
                Params::parse(url.split_once('?').map_or("", |(_, q)| q.split('#').next().unwrap_or("")).as_bytes());
            let status = e["status"].as_u64().unwrap_or(0);
            let leg = (status == 201)
                .then(|| serde_json::from_str::<Value>(text(e, "response")).ok())
                .flatten()
                .and_then(|r| r.get("sid").and_then(Value::as_str).map(str::to_owned));
            Dial {
                at_ms: e["at_ms"].as_u64().unwrap_or(0),
                status,
                fault: e.get("fault").and_then(Value::as_str).map(str::to_owned),
                reservation: query.get("reservationSid").unwrap_or_default().to_owned(),
                caller: query.get("callSid").map(str::to_owned),
                leg,
            }
        })
        .collect()
}

/// When each reservation ended without being accepted: the first
/// `reservation.{timeout,canceled,rescinded,rejected}` event the sandbox
/// tried to deliver for it.
fn reservation_ends(log: &[Value]) -> HashMap<String, (u64, String)> {
    let mut ends: HashMap<String, (u64, String)> = HashMap::new();
    for e in log.iter().filter(|e| text(e, "direction") == "out") {
        let params: Params = array(e, "params")
            .iter()
            .filter_map(|p| Some((p.get(0)?.as_str()?.to_owned(), p.get(1)?.as_str()?.to_owned())))
            .collect();
        let Some(kind) = params.get("EventType") else { continue };
        if !matches!(
            kind,
            "reservation.timeout" | "reservation.canceled" | "reservation.rescinded" | "reservation.rejected"
        ) {
            continue;
        }
        let Some(res) = params.get("ReservationSid") else { continue };
        let at = e["at_ms"].as_u64().unwrap_or(0);
        let entry = ends.entry(res.to_owned()).or_insert((at, kind.to_owned()));
        if at < entry.0 {
            *entry = (at, kind.to_owned());
        }
    }
    ends
}

/// The webhooks about a call that got no answer (every try), as `POST /incoming-call at 75.3s: connection refused ×4`.
fn failed_fetches(log: &[Value], call_sid: &str) -> Vec<String> {
    let mut out: Vec<(String, u64, String, u32)> = Vec::new();
    for e in log.iter().filter(|e| text(e, "direction") == "out" && e["status"].as_u64() == Some(0)) {
        let about_call = array(e, "params").iter().any(|p| {
            p.get(0).and_then(Value::as_str) == Some("CallSid") && p.get(1).and_then(Value::as_str) == Some(call_sid)
        });
        if !about_call {
            continue;
        }
        let path = sandbox::webhook::url_path(text(e, "url")).to_owned();
        let error = text(e, "error").split(':').next().unwrap_or_default().to_owned();
        match out.last_mut() {
            Some(last) if last.0 == path && last.2 == error => last.3 += 1,
            _ => out.push((path, e["at_ms"].as_u64().unwrap_or(0), error, 1)),
        }
    }
    out.into_iter().map(|(path, at, error, n)| format!("{path} at {:.1}s: {error} ×{n}", at as f64 / 1000.0)).collect()
}

fn describe_dial(d: &Dial) -> String {
    let fault = d.fault.as_deref().map(|f| format!(" [{f}]")).unwrap_or_default();
    let made = d.leg.as_deref().map(|l| format!(", created {l}")).unwrap_or_default();
    format!("{} at {:.1}s → {}{fault}{made}", d.reservation, d.at_ms as f64 / 1000.0, d.status)
}

fn measure(
    opts: &Options,
    first_dial_ms: u64,
    callers: &[Caller],
    rows: &HashMap<String, CallRecord>,
    log: &[Value],
    state: &Value,
) -> Figures {
    let calls: HashMap<&str, &Value> = array(state, "calls").iter().map(|c| (text(c, "sid"), c)).collect();
    let dials = dials(log);
    let ends = reservation_ends(log);
    let mut f = Figures {
        time_scale: opts.time_scale,
        listener: opts.listener,
        seed: opts.seed,
        first_dial_ms,
        callers: callers.len(),
        placed: 0,
        not_placed: Vec::new(),
        still_live: Vec::new(),
        outcomes: BTreeMap::new(),
        not_final: Vec::new(),
        without_outcome: Vec::new(),
        open_tasks: open_tasks(state),
        busy_workers: busy_workers(state),
        dial_requests: dials.len(),
        dials: dials.iter().filter(|d| d.leg.is_some()).count(),
        dialled_twice: Vec::new(),
        ringing_after_end: Vec::new(),
        dialled_after_end: 0,
        answered_after_end: Vec::new(),
        lost_to_fault: Vec::new(),
        faults: Vec::new(),
        restarts: Vec::new(),
        settled_in: None,
        final_stop: String::new(),
        instances: Vec::new(),
        unbalanced: 0,
        wall: Duration::ZERO,
        kept_dir: None,
    };

    for c in callers {
        let who = format!(
            "caller #{} {} → {}",
            c.planned.index,
            c.planned.from,
            c.planned.location.as_deref().unwrap_or(&c.planned.to)
        );
        let sid = match &c.sid {
            Ok(sid) => sid,
            Err(e) => {
                f.not_placed.push(Named { sid: format!("#{}", c.planned.index), why: format!("{who}: {e}") });
                continue;
            }
        };
        f.placed += 1;
        let summary = c.summary.as_ref().or_else(|| calls.get(sid.as_str()).copied());
        let status = summary.map(|s| text(s, "status")).unwrap_or("?");
        if !c.ended {
            f.still_live.push(Named { sid: sid.clone(), why: format!("{who}: still {status}") });
        }
        let started = summary.and_then(|s| s["start_ms"].as_u64()).unwrap_or(0);
        let row = rows.get(sid);
        let outcome = row.map(|r| r.outcome);
        *f.outcomes.entry(outcome.map_or("(no row)", Outcome::as_str).to_owned()).or_default() += 1;
        match outcome {
            None => f.without_outcome.push(Named {
                sid: sid.clone(),
                why: format!("{who}, dialled at {:.1}s: no calls row; the sandbox says {status}", started as f64 / 1000.0),
            }),
            Some(Outcome::Pending) => f.not_final.push(Named {
                sid: sid.clone(),
                why: format!(
                    "{who}, dialled at {:.1}s: pending; task {}, reservation {}; the sandbox says {status}, queue result {}",
                    started as f64 / 1000.0,
                    row.and_then(|r| r.task_sid.as_deref()).unwrap_or("-"),
                    row.and_then(|r| r.reservation_sid.as_deref()).unwrap_or("-"),
                    summary.map(|s| text(s, "queue_result")).filter(|q| !q.is_empty()).unwrap_or("-"),
                ),
            }),
            Some(_) => {}
        }
        // Lost to a fault: Twilio could not get TwiML (an application error),
        // or the server gave up on dialling.
        if let Some(code) = summary.and_then(|s| s["error_code"].as_u64()) {
            let failed = failed_fetches(log, sid);
            f.lost_to_fault.push(Named {
                sid: sid.clone(),
                why: format!(
                    "{who}: application error {code}; {}",
                    if failed.is_empty() {
                        text(summary.unwrap_or(&Value::Null), "error_message").to_owned()
                    } else {
                        failed.join(", ")
                    }
                ),
            });
        } else if outcome == Some(Outcome::DialFailed) {
            let mine: Vec<String> =
                dials.iter().filter(|d| d.caller.as_deref() == Some(sid.as_str())).map(describe_dial).collect();
            f.lost_to_fault.push(Named {
                sid: sid.clone(),
                why: format!(
                    "{who}: dial_failed; dials: {}",
                    if mine.is_empty() { "none".into() } else { mine.join(", ") }
                ),
            });
        }
    }

    let mut per_reservation: BTreeMap<&str, Vec<&Dial>> = BTreeMap::new();
    for d in &dials {
        if d.leg.is_some() {
            per_reservation.entry(d.reservation.as_str()).or_default().push(d);
        }
    }
    for (res, ds) in &per_reservation {
        if ds.len() > 1 {
            let legs: Vec<String> =
                ds.iter().map(|d| format!("{} ({})", d.leg.as_deref().unwrap_or("?"), describe_dial(d))).collect();
            f.dialled_twice
                .push(Named { sid: (*res).to_owned(), why: format!("{} calls: {}", ds.len(), legs.join(", ")) });
        }
        for d in ds {
            let Some((end, kind)) = ends.get(*res) else { continue };
            let leg_sid = d.leg.as_deref().unwrap_or_default();
            let leg = calls.get(leg_sid);
            let start = leg.and_then(|l| l["start_ms"].as_u64()).unwrap_or(d.at_ms);
            if start > *end {
                f.dialled_after_end += 1;
            }
            let leg_end = leg.and_then(|l| l["end_ms"].as_u64());
            if let Some(answered) = leg.and_then(|l| l["answered_ms"].as_u64()).filter(|a| a > end) {
                f.answered_after_end.push(Named {
                    sid: leg_sid.to_owned(),
                    why: format!(
                        "leg of {res} (caller {}): {kind} at {:.1}s, answered by {} at {:.1}s",
                        d.caller.as_deref().unwrap_or("?"),
                        *end as f64 / 1000.0,
                        leg.map(|l| text(l, "answered_by")).filter(|a| !a.is_empty()).unwrap_or("?"),
                        answered as f64 / 1000.0
                    ),
                });
            }
            if leg_end.is_none_or(|e| e > end + opts.ringing_grace_ms) {
                let lived = leg_end.map_or_else(
                    || "still up at the end".to_owned(),
                    |e| format!("up until {:.1}s", e as f64 / 1000.0),
                );
                f.ringing_after_end.push(Named {
                    sid: leg_sid.to_owned(),
                    why: format!(
                        "leg of {res} (caller {}): {kind} at {:.1}s, leg placed at {:.1}s, {lived}, status {}",
                        d.caller.as_deref().unwrap_or("?"),
                        *end as f64 / 1000.0,
                        start as f64 / 1000.0,
                        leg.map(|l| text(l, "status")).unwrap_or("?")
                    ),
                });
            }
        }
    }
    f
}
