//! The orchestration: sandbox, server, provisioning, callers, report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;

use super::report::{self, CallRow, Moment, Report};
use super::scenario::{Behaviour, ClosingPlan, PlannedCall, Scenario};
use super::{DemoArgs, Options, Progress, load_scenario};
use crate::app::Server;
use crate::config::Settings;
use crate::domain::Outcome;
use crate::outbox::OutboxState;
use crate::store::Store;

/// `call-router demo`: runs, prints progress to stderr and the report to
/// stdout, and fails (naming the calls) unless every call is ok.
pub async fn run_cli(args: &DemoArgs) -> anyhow::Result<()> {
    let time_scale = args.time_scale();
    if !(time_scale.is_finite() && (1.0..=100_000.0).contains(&time_scale)) {
        bail!("--time-scale {time_scale}: must be between 1 and 100000");
    }
    let scenario = load_scenario(args)?;
    let opts = Options {
        time_scale,
        seed: args.seed,
        database_url: args.database_url.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    if args.dashboard {
        return dashboard_cli(scenario, opts).await;
    }
    if let Some(d) = &scenario.description {
        eprintln!("{}: {d}", scenario.name);
    }
    let report = run(&scenario, &opts, &|p| match p {
        Progress::Ready { sandbox_url, server_url, calls } => {
            eprintln!("sandbox at {sandbox_url}, server at {server_url}; placing {calls} calls");
        }
        Progress::CallEnded { done, total, row } => {
            // A line per call, except in big bursts: there, the calls that
            // are not ok and a tally every tenth of the way.
            let step = (total / 10).max(1);
            if total <= 20 || !row.ok {
                let mark = if row.ok { "✓" } else { "✗" };
                let place = row.location.as_deref().unwrap_or("-");
                let how = if row.finished { row.outcome.to_string() } else { "still running at the deadline".into() };
                eprintln!("[{done}/{total}] #{} {} → {place}: {how} {mark}", row.index, row.caller);
            } else if done % step == 0 || done == total {
                eprintln!("[{done}/{total}] calls done");
            }
        }
    })
    .await?;
    eprintln!("ran for {:.1}s (real time)", report.elapsed_ms as f64 / 1000.0);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render());
    }
    let problems = report.problems();
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
        let more = if problems.len() > shown.len() {
            format!("; and {} more", problems.len() - shown.len())
        } else {
            String::new()
        };
        bail!(
            "{} of {} not ok: {}{more}",
            problems.len(),
            report::plural(report.calls.len(), "call"),
            shown.join("; ")
        );
    }
    Ok(())
}

/// `call-router demo --dashboard`: prints where to look, runs until Ctrl-C.
async fn dashboard_cli(scenario: Scenario, opts: Options) -> anyhow::Result<()> {
    let time_scale = opts.time_scale;
    let name = scenario.name.clone();
    let placed = super::run_dashboard(
        scenario,
        opts,
        |info| {
            println!("dashboard: {}", info.url);
            println!("admin token: {}", info.token);
            println!(
                "(the sandbox is at {}; scenario {name}, time scale {time_scale}; Ctrl-C stops)",
                info.sandbox_url
            );
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await?;
    eprintln!("stopped after {placed} calls");
    Ok(())
}

/// A directory removed when dropped, for the demo's database.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = std::env::temp_dir().join(format!("call-router-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo's business, running: the sandbox, the server pointed at it,
/// provisioned, the numbers bought and the phones set as the scenario says.
/// No calls yet. Also used by `demo --dashboard` and the browser test.
pub struct Business {
    pub sandbox: sandbox::Sandbox,
    pub server: Server,
    pub client: Arc<sandbox::client::SandboxClient>,
    pub sandbox_url: String,
    pub server_url: String,
    pub settings: Settings,
    /// How the scenario's closing location closes (`closes_in_secs`), if it does.
    pub closing: Option<ClosingPlan>,
    _tmp: Option<TempDir>,
}

/// Real time allowed for starting and provisioning the business: a scenario's
/// closing time counts from a first dial this long after the start (see
/// [`wait_for_first_dial`]), since the business clock is set before the server starts.
const SET_UP_MS: i64 = 2_000;

impl Business {
    /// Starts and provisions the scenario's business. `extra_toml` is added
    /// to the server's settings (the dashboard's `[admin]` token, say).
    pub async fn start(scenario: &Scenario, opts: &Options, extra_toml: &str) -> anyhow::Result<Business> {
        let first_dial = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(SET_UP_MS);
        let closing = scenario.closing_plan(opts.time_scale, first_dial);
        let sb_listener = TcpListener::bind("127.0.0.1:0").await.context("binding the sandbox's port")?;
        // Made-up credentials: the demo never touches a real Twilio account.
        let sandbox = sandbox::start(sandbox::Config::random(opts.time_scale, opts.seed), sb_listener)
            .await
            .context("starting the sandbox")?;
        let account_sid = sandbox.account_sid().as_str().to_owned();
        let auth_token = sandbox.auth_token().to_owned();
        let sandbox_url = sandbox.url();
        let client = Arc::new(sandbox::client::SandboxClient::new(&sandbox_url, &account_sid, &auth_token));

        let mut tmp = None;
        let database_url = match &opts.database_url {
            Some(url) => url.clone(),
            None => {
                let dir = TempDir::new()?;
                let url = format!("sqlite://{}", dir.0.join("demo.db").display());
                tmp = Some(dir);
                url
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the server's port")?;
        let server_url = format!("http://{}", listener.local_addr()?);
        let text = format!(
            "public_url = {server_url:?}\ndatabase_url = {database_url:?}\n\
             [twilio]\naccount_sid = {account_sid:?}\nauth_token = {auth_token:?}\n\
             api_base_url = {sandbox_url:?}\ntaskrouter_base_url = {sandbox_url:?}\n{}\n{extra_toml}",
            scenario.server.to_settings_toml()
        );
        // The user's CALL_ROUTER_* variables are for their real server; the demo ignores them.
        let mut settings = Settings::from_toml(&text, |_| None).context("the demo's server settings")?;
        settings.locations = scenario.locations_for(closing.as_ref());
        if let Some(c) = &closing {
            settings.clock = c.clock;
            tracing::info!(
                location = %c.location,
                business_time = %c.closes,
                in_ms = c.lead_ms,
                "demo: the business clock is set so that the location closes after the first dial"
            );
        }
        let server = match Server::start(settings.clone(), listener).await.context("starting the server") {
            Ok(s) => s,
            Err(e) => {
                sandbox.shutdown().await;
                return Err(e);
            }
        };
        let business = Business { sandbox, server, client, sandbox_url, server_url, settings, closing, _tmp: tmp };
        match business.set_up(scenario).await {
            Ok(()) => Ok(business),
            Err(e) => {
                let _ = business.stop().await;
                Err(e)
            }
        }
    }

    async fn set_up(&self, scenario: &Scenario) -> anyhow::Result<()> {
        let (client, store) = (&self.client, self.store());
        // Provision points the numbers at the server; bought bare here.
        for number in scenario.numbers() {
            client.buy_number(&number, None).await.with_context(|| format!("buying {number} in the sandbox"))?;
        }
        // Spare numbers are not provision's (they serve no location), so they
        // point at the server from the start.
        let incoming = format!("{}/incoming-call", self.server_url);
        for number in &scenario.spare_numbers {
            client
                .buy_number(number, Some(&incoming))
                .await
                .with_context(|| format!("buying spare number {number} in the sandbox"))?;
        }
        for loc in &scenario.locations {
            for (k, phone) in loc.phone_list().into_iter().enumerate() {
                let key = if k == 0 { loc.name.clone() } else { format!("{}/{}", loc.name, k + 1) };
                let behaviour = scenario.phones.get(&key).cloned().unwrap_or_default();
                client
                    .set_phone(phone, &sandbox_behaviour(behaviour))
                    .await
                    .with_context(|| format!("setting {}'s phone {phone} in the sandbox", loc.name))?;
            }
        }
        // A reused database (--database-url) may hold another scenario's
        // locations, whose numbers this fresh sandbox does not own.
        for stale in
            store.location_specs().await?.iter().filter(|s| !scenario.locations.iter().any(|l| l.name == s.name))
        {
            store.remove_location(&stale.name).await?;
        }
        // Provision imports the settings' locations into the store itself.
        let mut provisioned = crate::provision::Report::default();
        crate::provision::run(&self.settings, store, crate::provision::Options::default(), &mut provisioned)
            .await
            .with_context(|| format!("provisioning the sandbox:\n{}", provisioned.text()))?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        self.server.state.store()
    }

    /// Stops the sandbox first (so it calls no more webhooks), then the server.
    /// Stops the server first, while the sandbox still answers its last
    /// requests (the other way round, its dispatcher logs retries against a
    /// sandbox that is gone), then the sandbox.
    pub async fn stop(self) -> anyhow::Result<()> {
        let stopped = self.server.shutdown().await.context("stopping the server");
        self.sandbox.shutdown().await;
        stopped
    }
}

/// Runs a scenario from start to report. Errors are for set-up failures
/// (the sandbox or server would not start, provisioning failed); how the
/// calls went is in the report.
pub async fn run(
    scenario: &Scenario,
    opts: &Options,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> anyhow::Result<Report> {
    let business = Business::start(scenario, opts, "").await?;
    let (client, store) = (&business.client, business.store().clone());
    let result = async {
        install_faults(client, &scenario.faults).await?;
        wait_for_first_dial(business.closing.as_ref()).await;
        let plan = scenario.plan();
        progress(Progress::Ready {
            sandbox_url: &business.sandbox_url,
            server_url: &business.server_url,
            calls: plan.len(),
        });
        let first_dial = jiff::Timestamp::now();
        let (calls, elapsed) = place_calls(client, &store, plan, opts, progress).await;
        Ok::<_, anyhow::Error>((calls, elapsed, first_dial))
    }
    .await;
    let closing = business.closing.clone();

    // Let the last task completions and hang-ups finish, then stop the
    // sandbox first: with nothing left in the outbox, the server has no
    // reason to call it, and it stops calling the server's webhooks.
    quiesce(client, &store, Duration::from_secs(3)).await;
    let faults = if scenario.faults.is_empty() { Vec::new() } else { fault_counts(client).await };
    let stopped = business.stop().await;
    let (calls, elapsed, first_dial) = result?;
    stopped?;
    Ok(Report {
        scenario: scenario.name.clone(),
        time_scale: opts.time_scale,
        elapsed_ms: elapsed.as_millis() as u64,
        calls,
        faults,
        closed: closing.map(|c| closed(&c, &scenario.locations, first_dial, opts.time_scale)),
    })
}

/// Waits until the first dial's time in `closing`'s plan, so that the location
/// closes `closes_in_secs` after it; returns at once without a plan or when
/// setting up took longer than [`SET_UP_MS`] (the closing then comes sooner).
async fn wait_for_first_dial(closing: Option<&ClosingPlan>) {
    let Some(c) = closing else { return };
    let ahead = c.first_dial_ms() - jiff::Timestamp::now().as_millisecond();
    if ahead > 0 {
        tokio::time::sleep(Duration::from_millis(ahead as u64)).await;
    } else {
        tracing::warn!(
            late_ms = -ahead,
            "demo: setting up took longer than planned; the location closes that much sooner after the first dial"
        );
    }
}

/// When the closing location closed, for the report: the business clock's
/// time in its time zone, and virtual seconds after the first dial.
fn closed(
    c: &ClosingPlan,
    locations: &[crate::domain::LocationSpec],
    first_dial: jiff::Timestamp,
    time_scale: f64,
) -> report::Closed {
    let zone = locations
        .iter()
        .find(|l| l.name == c.location)
        .and_then(|l| jiff::tz::TimeZone::get(&l.hours.time_zone).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let real_ms = (c.wall_ms - first_dial.as_millisecond()).max(0);
    report::Closed {
        location: c.location.clone(),
        at: jiff::ZonedDateTime::new(c.closes, zone).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        after_ms: (real_ms as f64 * time_scale).round() as u64,
    }
}

/// Sets the scenario's fault rules in the sandbox, their windows moved to
/// count from now (the first dial).
async fn install_faults(
    client: &sandbox::client::SandboxClient,
    rules: &[sandbox::faults::Rule],
) -> anyhow::Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let now = client.state().await?.get("now_ms").and_then(serde_json::Value::as_u64).unwrap_or(0);
    let shifted: Vec<_> = rules
        .iter()
        .cloned()
        .map(|mut r| {
            r.from_ms = r.from_ms.map(|t| t + now);
            r.to_ms = r.to_ms.map(|t| t + now);
            r
        })
        .collect();
    client.add_faults(&shifted).await.context("setting the scenario's faults in the sandbox")?;
    Ok(())
}

/// How often each of the sandbox's fault rules matched and fired, described
/// for the report (also used by the chaos test).
pub async fn fault_counts(client: &sandbox::client::SandboxClient) -> Vec<report::FaultCount> {
    let rules = match client.faults().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("reading the sandbox's fault counts: {e:#}");
            return Vec::new();
        }
    };
    rules
        .iter()
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
            let num = |k: &str| r.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            let mut what = format!("{} {}", text("on"), text("fault"));
            if let Some(s) = r.get("status").and_then(serde_json::Value::as_u64) {
                what.push_str(&format!(" {s}"));
            }
            if let Some(d) = r.get("delay_ms").and_then(serde_json::Value::as_u64) {
                what.push_str(&format!(" {:.1}s", d as f64 / 1000.0));
            }
            let share = r.get("share").and_then(serde_json::Value::as_f64).unwrap_or(1.0);
            let target = [text("method"), text("path")].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
            let target = if target.is_empty() { "every request".to_owned() } else { target.join(" ") };
            report::FaultCount {
                rule: format!("{what}, {:.0}% of {target}", share * 100.0),
                matched: num("matched"),
                fired: num("fired"),
            }
        })
        .collect()
}

/// Places every call at its offset, follows each to its end, and returns
/// the rows in the scenario's order with the wall time taken.
async fn place_calls(
    client: &Arc<sandbox::client::SandboxClient>,
    store: &Store,
    plan: Vec<PlannedCall>,
    opts: &Options,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> (Vec<CallRow>, Duration) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let total = plan.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for call in plan {
        let (client, store, tx, scale) = (client.clone(), store.clone(), tx.clone(), opts.time_scale);
        tokio::spawn(async move {
            let row = follow_call(&client, &store, &call, scale, deadline).await;
            let _ = tx.send(row);
        });
    }
    drop(tx);
    let mut rows = Vec::with_capacity(total);
    while let Some(row) = rx.recv().await {
        rows.push(row);
        progress(Progress::CallEnded { done: rows.len(), total, row: rows.last().expect("just pushed") });
    }
    rows.sort_by_key(|r| r.index);
    (rows, started.elapsed())
}

/// One caller: wait for the start offset, dial, wait for the end (or the
/// deadline), then wait briefly for the server to settle the outcome.
async fn follow_call(
    client: &sandbox::client::SandboxClient,
    store: &Store,
    call: &PlannedCall,
    time_scale: f64,
    deadline: tokio::time::Instant,
) -> CallRow {
    let mut row = CallRow {
        index: call.index,
        caller: call.from.clone(),
        dialled: call.to.clone(),
        call_sid: None,
        location: None,
        outcome: Outcome::Pending,
        finished: false,
        answered_by: None,
        wait_ms: None,
        talk_ms: None,
        expected_outcome: call.expect,
        expected_location: call.expect_location.clone(),
        expected_heard: call.expect_heard.clone(),
        ok: false,
        problem: None,
        timeline: Vec::new(),
        heard: Vec::new(),
    };
    tokio::time::sleep(Duration::from_secs_f64(call.start_at_ms as f64 / 1000.0 / time_scale)).await;
    let placed = client
        .place_call(&sandbox::client::PlaceCall {
            from: call.from.clone(),
            to: call.to.clone(),
            digits: call.digits.clone(),
            patience_secs: Some(u64::from(call.patience_secs)),
        })
        .await;
    let sid = match placed {
        Ok(sid) => sid,
        Err(e) => {
            row.problem = Some(format!("placing the call: {e:#}"));
            return row.judge();
        }
    };
    row.call_sid = Some(sid.clone());

    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let ended = client.wait_for_call_end(&sid, remaining).await;
    row.finished = ended.is_ok();
    // The server settles the outcome from the last webhook of the call,
    // which may arrive a moment after the sandbox marks the call ended; a
    // caller who chose a callback is settled once the location called back.
    let settle_by =
        (tokio::time::Instant::now() + Duration::from_secs(30)).min(deadline.max(tokio::time::Instant::now()));
    loop {
        if let Ok(Some(rec)) = store.call(&sid).await {
            row.location = rec.location.clone();
            row.outcome = rec.outcome;
            row.answered_by = rec.answered_by.clone();
            if rec.outcome.is_final() || !row.finished {
                break;
            }
        }
        if tokio::time::Instant::now() >= settle_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = match ended {
        Ok(summary) => Ok(summary),
        Err(_) => client.call_summary(&sid).await,
    };
    match summary {
        Ok(s) => {
            let text = |key: &str| s.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
            let ms = |key: &str| s.get(key).and_then(serde_json::Value::as_u64);
            row.answered_by = row.answered_by.or_else(|| text("answered_by"));
            row.wait_ms = ms("queue_wait_ms");
            row.talk_ms = ms("talk_ms");
            row.timeline = timeline(&s);
            row.heard = said(&s);
            tracing::debug!(call_sid = %sid, summary = %s, "the sandbox's call summary");
        }
        Err(e) => tracing::warn!(call_sid = %sid, "no call summary from the sandbox: {e:#}"),
    }
    row.judge()
}

/// What the summary says the caller heard spoken (`<Say>`), in order.
fn said(summary: &serde_json::Value) -> Vec<String> {
    let entries = summary.get("heard").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
    entries
        .iter()
        .filter(|h| h.get("verb").and_then(serde_json::Value::as_str) == Some("say"))
        .filter_map(|h| Some(h.get("what")?.as_str()?.to_owned()))
        .collect()
}

/// The summary's timeline, relative to its first entry.
fn timeline(summary: &serde_json::Value) -> Vec<Moment> {
    let entries = summary.get("timeline").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
    let start = entries.first().and_then(|e| e.get("at_ms")).and_then(serde_json::Value::as_u64).unwrap_or(0);
    entries
        .iter()
        .filter_map(|e| {
            let at = e.get("at_ms")?.as_u64()?;
            let event = e.get("event")?.as_str()?;
            Some(Moment { at_ms: at.saturating_sub(start), event: event.to_owned() })
        })
        .collect()
}

/// The sandbox's form of a scenario's phone behaviour.
pub fn sandbox_behaviour(b: Behaviour) -> sandbox::state::Behaviour {
    use sandbox::state::Behaviour as S;
    match b {
        Behaviour::Person { rings, talk_secs, digits } => S::Person { rings, talk_secs: u64::from(talk_secs), digits },
        Behaviour::Voicemail { rings, greeting_secs } => {
            S::Voicemail { rings, digits: None, greeting_secs: greeting_secs.map(u64::from) }
        }
        Behaviour::Busy => S::Busy,
        Behaviour::NoAnswer => S::NoAnswer,
        Behaviour::Fail => S::Fail,
    }
}

/// Waits, up to `limit`, until the server's outbox holds nothing to send and
/// every TaskRouter task in the sandbox is completed or canceled, so that
/// shutting down interrupts no request.
async fn quiesce(client: &sandbox::client::SandboxClient, store: &Store, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let outbox_idle = store
            .actions()
            .await
            .map(|a| a.iter().all(|(_, state, _)| !matches!(state, OutboxState::Pending | OutboxState::Sending)))
            .unwrap_or(true);
        let tasks_done = client
            .state()
            .await
            .ok()
            .and_then(|v| {
                v.get("tasks")?.as_array().map(|tasks| {
                    tasks.iter().all(|t| {
                        matches!(t.get("assignment_status").and_then(|s| s.as_str()), Some("completed" | "canceled"))
                    })
                })
            })
            .unwrap_or(true);
        if (outbox_idle && tasks_done) || Instant::now() >= until {
            if !(outbox_idle && tasks_done) {
                tracing::warn!(outbox_idle, tasks_done, "stopping with work still under way");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
