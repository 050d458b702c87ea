//! The journeys' clock: sends [`Event::Tick`] to every journey whose
//! [`Journey::wake_at`](crate::journey::Journey::wake_at) has come (a dial in
//! doubt to look up, a hand-off that waited long enough, a command to send
//! again, an outcome to settle). What a tick does is the journey's business;
//! an early or late tick is harmless.

use std::time::Duration;

use crate::dispatch::Notifier;
use crate::journey::{Event, Policy};
use crate::store::{Delivery, Route, Store, now_ms};

/// How often due journeys are looked for. The journeys' deadlines are
/// seconds long, so a quarter second late is nothing.
const EVERY: Duration = Duration::from_millis(250);
/// The most journeys ticked per round.
const MAX_DUE: i64 = 256;

pub struct Ticker {
    store: Store,
    notifier: Notifier,
    policy: Policy,
}

impl Ticker {
    pub fn new(store: Store, notifier: Notifier, policy: Policy) -> Self {
        Ticker { store, notifier, policy }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = &mut shutdown => return,
            }
            if let Err(e) = self.round().await {
                tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "could not tick the due journeys");
            }
        }
    }

    /// Ticks every journey due now; returns how many.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let due = self.store.due_journeys(now_ms(), MAX_DUE).await?;
        // Concurrently, so that the writer takes them in one batch.
        let mut ticks = tokio::task::JoinSet::new();
        for &id in &due {
            let (store, policy) = (self.store.clone(), self.policy);
            ticks.spawn(
                async move { (id, store.deliver(Delivery::new(Route::Id(id), vec![Event::Tick], policy)).await) },
            );
        }
        let mut queued = 0;
        while let Some(done) = ticks.join_next().await {
            match done {
                Ok((_, Ok(d))) => queued += d.queued,
                Ok((id, Err(e))) => {
                    tracing::error!(error = %crate::telemetry::chain(e.as_ref()), journey = id, "could not tick a journey")
                }
                Err(e) => tracing::error!(error = %format_args!("{e:#}"), "a tick panicked"),
            }
        }
        if queued > 0 {
            self.notifier.notify();
        }
        Ok(due.len())
    }
}
