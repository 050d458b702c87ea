//! The reconciler's loop: at start-up and every `reconcile_secs`, what
//! Twilio says is fed to the journeys as events, through the same delivery
//! as a webhook. It decides nothing itself.
//!
//! One pass, each part bounded in requests:
//! 1. **Tasks.** Every pending, reserved, assigned or wrapping task and its
//!    reservations ([`sweep_tasks`]): a `reservation.created` missed while we
//!    were down becomes one now; an ended reservation or task ends in its
//!    journey too.
//! 2. **Stale journeys.** Open journeys nothing has touched for a while: the
//!    caller's call is fetched (`CallerSeen`), and a task the sweep no longer
//!    lists (it ended) is fetched with its reservations.
//! 3. **Callers we never heard of.** Inbound calls to our numbers since the
//!    last pass that no journey knows and that have ended ([`unseen_inbound`]):
//!    each gets a journey with the outcome `missed`, so an operator can count
//!    what an outage cost.
//!
//! Dials in doubt are the journeys' own business (`FindDial`, through the
//! dispatcher).

use std::collections::HashSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use twilio::E164;
use twilio::sid::{TaskSid, WorkspaceSid};

use super::{Observed, inbound_calls, observe_one_task, sweep_tasks, unseen_inbound};
use crate::dispatch::Notifier;
use crate::journey::{CallerState, Event, Policy};
use crate::store::{Delivery, NewCall, Route, Store, now_ms};
use crate::twilio_api::TwilioClient;

/// Task pages per sweep (200 tasks a page).
const TASK_PAGES: u32 = 5;
/// A journey untouched this long is asked about.
const STALE_MS: i64 = 60_000;
/// Stale journeys asked about per pass.
const STALE_PER_PASS: i64 = 50;
/// Calls pages per number and pass.
const INBOUND_PAGES: u32 = 5;
/// How far back the first pass after a start looks for callers we never heard of.
const FIRST_LOOKBACK: SignedDuration = SignedDuration::from_hours(1);
/// Each later pass looks back to the previous one's start, less this overlap.
const OVERLAP: SignedDuration = SignedDuration::from_mins(5);

/// What one pass did, for the log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Events delivered.
    pub observed: usize,
    /// Deliveries that owed Twilio something new: repairs.
    pub repairs: usize,
    /// Callers recorded as `missed`.
    pub missed: usize,
    /// Tasks skipped (not ours, or unreadable).
    pub skipped: usize,
}

/// The name of the lease that one reconciler at a time holds.
const LEASE: &str = "reconciler";

pub struct Reconciler {
    store: Store,
    twilio: TwilioClient,
    workspace: Option<WorkspaceSid>,
    notifier: Notifier,
    policy: Policy,
    every: Duration,
    since: Option<Timestamp>,
}

impl Reconciler {
    pub fn new(
        store: Store,
        twilio: TwilioClient,
        workspace: Option<WorkspaceSid>,
        notifier: Notifier,
        policy: Policy,
        every: Duration,
    ) -> Self {
        Reconciler { store, twilio, workspace, notifier, policy, every, since: None }
    }

    /// A pass at once, then one every `every`, until `shutdown` resolves;
    /// each only while this instance holds the reconciler's lease.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut every = tokio::time::interval(self.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether this instance held the lease at its last try, to log each change once.
        let mut holding = false;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = &mut shutdown => {
                    // The next instance need not wait for the lease to expire.
                    if let Err(e) = self.store.release_lease(LEASE).await {
                        tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "could not give the reconciler's lease up");
                    }
                    return;
                }
            }
            // One reconciler among several instances: the one holding the
            // lease, renewed each pass; another takes over once it expires.
            let lease_ms = (self.every.as_millis() as i64).saturating_mul(2).saturating_add(30_000);
            match self.store.hold_lease(LEASE, lease_ms).await {
                Ok(true) => {
                    if !holding {
                        tracing::info!(instance = %self.store.owner(), "this instance runs the reconciler");
                        holding = true;
                    }
                }
                Ok(false) => {
                    if holding {
                        tracing::info!(instance = %self.store.owner(), "another instance took the reconciler's lease");
                        holding = false;
                    }
                    tracing::debug!("another instance holds the reconciler's lease");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "could not take the reconciler's lease; the next pass tries again");
                    continue;
                }
            }
            let started = std::time::Instant::now();
            let pass = self.pass().await;
            if let Ok(p) = &pass {
                crate::stats::reconciled(p.repairs, p.missed);
            }
            match pass {
                Ok(p) if p.repairs + p.missed > 0 => tracing::warn!(
                    observed = p.observed,
                    repairs = p.repairs,
                    missed = p.missed,
                    skipped = p.skipped,
                    took_ms = started.elapsed().as_millis() as u64,
                    "reconciler repaired what events had missed"
                ),
                Ok(p) => tracing::debug!(observed = p.observed, skipped = p.skipped, "reconciler: nothing to repair"),
                Err(e) => {
                    tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "reconciler pass failed; the next one tries again")
                }
            }
        }
    }

    /// One pass (see the module documentation).
    pub async fn pass(&mut self) -> anyhow::Result<Pass> {
        let started = Timestamp::now();
        let mut pass = Pass::default();
        let mut swept: HashSet<TaskSid> = HashSet::new();
        if let Some(ws) = self.workspace().await {
            let (observed, skipped) = sweep_tasks(&self.twilio, &ws, TASK_PAGES).await?;
            for (task, why) in &skipped {
                tracing::debug!(task_sid = %task, why, "reconciler skipped a task");
            }
            pass.skipped += skipped.len();
            for o in observed {
                if let Event::TaskSeen { task, .. } = &o.event {
                    swept.insert(task.clone());
                }
                self.observe(o, &mut pass).await?;
            }
            self.stale(&ws, &swept, &mut pass).await?;
        }
        let since = self.since.map_or(started - FIRST_LOOKBACK, |s| s - OVERLAP);
        self.missed(since, &mut pass).await?;
        self.since = Some(started);
        if pass.repairs > 0 {
            self.notifier.notify();
        }
        Ok(pass)
    }

    async fn workspace(&self) -> Option<WorkspaceSid> {
        if let Some(ws) = &self.workspace {
            return Some(ws.clone());
        }
        self.store.resource("workspace", "main").await.ok().flatten().and_then(|s| s.parse().ok())
    }

    async fn observe(&self, o: Observed, pass: &mut Pass) -> anyhow::Result<()> {
        let Observed { keys, event, create } = o;
        let d = Delivery::new(Route::Keys { keys, create }, vec![event], self.policy);
        self.deliver(d, pass).await
    }

    async fn deliver(&self, d: Delivery, pass: &mut Pass) -> anyhow::Result<()> {
        let done = self.store.deliver(d).await?;
        pass.observed += 1;
        if done.queued > 0 {
            pass.repairs += 1;
        }
        Ok(())
    }

    /// Open journeys nothing has touched for a while: their caller's call,
    /// and a task the sweep did not list (so it has ended).
    async fn stale(&self, ws: &WorkspaceSid, swept: &HashSet<TaskSid>, pass: &mut Pass) -> anyhow::Result<()> {
        for (id, journey) in self.store.stale_journeys(now_ms() - STALE_MS, STALE_PER_PASS).await? {
            if let Some(caller) = journey.caller_sid()
                && journey.caller_state() != CallerState::Gone
            {
                match self.twilio.fetch_call(caller).await {
                    Ok(call) => match crate::journey::CallStatus::parse(&call.status) {
                        Some(status) => {
                            let d = Delivery::new(
                                Route::Id(id),
                                vec![Event::CallerSeen { call: caller.clone(), status }],
                                self.policy,
                            );
                            self.deliver(d, pass).await?;
                        }
                        None => tracing::warn!(call_sid = %caller, status = call.status, "unknown call status"),
                    },
                    Err(e) => {
                        tracing::warn!(call_sid = %caller, error = %e, "reconciler could not fetch a caller's call")
                    }
                }
            }
            // Touched now, whatever Twilio says: the next pass asks about others first.
            let d = Delivery::new(Route::Id(id), vec![Event::Tick], self.policy);
            self.store.deliver(d).await?;
            let open_task = journey.task_sid().filter(|_| journey.task_status().is_some_and(|s| !s.is_final()));
            if let Some(task) = open_task
                && !swept.contains(task)
            {
                match observe_one_task(&self.twilio, ws, task).await {
                    Ok(Ok(observed)) => {
                        for o in observed {
                            let d = Delivery::new(Route::Id(id), vec![o.event], self.policy);
                            self.deliver(d, pass).await?;
                        }
                    }
                    Ok(Err(why)) => tracing::debug!(task_sid = %task, why, "reconciler skipped a task"),
                    Err(e) => tracing::warn!(task_sid = %task, error = %e, "reconciler could not fetch a task"),
                }
            }
        }
        Ok(())
    }

    /// Callers Twilio took while we could not answer.
    async fn missed(&self, since: Timestamp, pass: &mut Pass) -> anyhow::Result<()> {
        let numbers: Vec<E164> = self.store.numbers().await?.iter().filter_map(|n| E164::parse(n).ok()).collect();
        if numbers.is_empty() {
            return Ok(());
        }
        let listed = inbound_calls(&self.twilio, &numbers, since, INBOUND_PAGES).await?;
        if !listed.complete {
            tracing::warn!(pages = listed.pages, "more inbound calls than one pass reads; the rest wait for the next");
        }
        let sids: Vec<String> = listed.items.iter().map(|c| c.sid.to_string()).collect();
        let known = self.store.known_sids(&sids).await?;
        for call in unseen_inbound(&listed.items, &numbers, |sid| known.contains(sid)) {
            tracing::warn!(call_sid = %call.call, to = %call.to, "a caller reached Twilio while the server could not answer");
            let keys = [call.call.to_string()];
            let mut d = Delivery::to_keys(
                keys,
                vec![Event::CallerSeen { call: call.call.clone(), status: call.status }],
                self.policy,
            );
            d.caller = Some(NewCall { from: call.from, to: call.to.to_string() });
            self.deliver(d, pass).await?;
            pass.missed += 1;
        }
        Ok(())
    }
}
