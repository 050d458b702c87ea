//! The dispatcher: carries out the outbox's actions against Twilio.
//!
//! Webhooks write actions and call [`Notifier::notify`]; the dispatcher wakes,
//! claims pending actions, and runs them concurrently (bounded). It also
//! polls once a second, so an action written by another process or left from
//! before a restart is not forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;
use twilio::Params;
use twilio::error::codes;
use twilio::sid::WorkspaceSid;

use crate::config::Settings;
use crate::domain::Outcome;
use crate::ivr::Urls;
use crate::outbox::{Action, Dial, OutboxRow, OutboxState};
use crate::store::Store;
use crate::twilio_api::{ApiError, CreateCall, TwilioClient};

/// Wakes the dispatcher.
#[derive(Clone, Default, Debug)]
pub struct Notifier(Arc<Notify>);

impl Notifier {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// How many Twilio requests run at once.
const CONCURRENCY: usize = 32;
/// The fewest free slots the dispatcher waits for before it claims again
/// while actions are running, so that one claim (one write) serves several
/// actions under load instead of one each.
const MIN_CLAIM: u32 = 8;
/// An idempotent action is tried this many times before it is marked failed.
const MAX_ATTEMPTS: i64 = 5;

pub struct Dispatcher {
    store: Store,
    twilio: TwilioClient,
    settings: Settings,
    notifier: Notifier,
}

impl Dispatcher {
    pub fn new(store: Store, twilio: TwilioClient, settings: Settings, notifier: Notifier) -> Self {
        Self { store, twilio, settings, notifier }
    }

    /// Runs until `shutdown` resolves, then lets running actions finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        match self.store.recover_actions().await {
            Ok((0, 0)) => {}
            Ok((requeued, unknown)) => tracing::warn!(
                requeued,
                unknown,
                "recovered actions interrupted by a restart; calls whose creation was interrupted are not re-sent"
            ),
            Err(e) => tracing::error!(error = ?e, "could not recover interrupted actions"),
        }
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let mut running = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            // Take the slots first and claim only as many rows as there are
            // free slots: every claimed action starts at once, so a dial's
            // check of the caller's outcome (made for the whole claim below)
            // comes right before its request, never after a wait for a slot.
            let first = permits
                .clone()
                .acquire_many_owned(MIN_CLAIM.min(CONCURRENCY as u32))
                .await
                .expect("semaphore never closed");
            let mut slots: Vec<_> = std::iter::once(first).collect();
            let mut free = MIN_CLAIM as usize;
            while free < CONCURRENCY {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => {
                        slots.push(p);
                        free += 1;
                    }
                    Err(_) => break,
                }
            }
            let rows = match this.store.claim_actions(free as i64).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = ?e, "could not read the outbox");
                    Vec::new()
                }
            };
            let idle = rows.is_empty();
            let settled = this.settled_outcomes(&rows).await;
            // One slot per action: split the first, many-permit slot into ones.
            let mut first = slots.remove(0);
            let mut singles = Vec::with_capacity(free);
            while first.num_permits() > 1 {
                singles.push(first.split(1).expect("more than one permit left"));
            }
            singles.push(first);
            singles.extend(slots);
            for (row, permit) in rows.into_iter().zip(singles) {
                let this = this.clone();
                let (call_sid, task_sid, reservation_sid) = row.action.sids();
                let span = tracing::info_span!(
                    "action",
                    key = %row.key,
                    attempt = row.attempts,
                    call_sid,
                    task_sid,
                    reservation_sid,
                );
                let caller_outcome = match &row.action {
                    Action::Dial(d) => d.inbound_call_sid.as_ref().and_then(|c| settled.get(c).copied()),
                    _ => None,
                };
                running.spawn(
                    async move {
                        this.execute(row, caller_outcome).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            while running.try_join_next().is_some() {}
            if idle {
                tokio::select! {
                    _ = this.notifier.0.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut shutdown => break,
                }
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// `caller_outcome`: for a dial, its caller's call outcome when final,
    /// read just before this action started.
    async fn execute(&self, row: OutboxRow, caller_outcome: Option<Outcome>) {
        let result = match &row.action {
            Action::Dial(d) => return self.dial(&row, d, caller_outcome).await,
            Action::RedirectCaller { call_sid, url } => {
                let mut p = Params::new();
                p.push("Url", url).push("Method", "POST");
                self.twilio.update_call(call_sid, &p).await.map(drop)
            }
            Action::HangUpCall { call_sid } => {
                // `completed` hangs up a call in any live state. `canceled` would be ignored,
                // with a 200, once the location has answered (during answering-machine
                // detection, say), leaving that leg to be bridged to nobody.
                let mut p = Params::new();
                p.push("Status", "completed");
                self.twilio.update_call(call_sid, &p).await.map(drop)
            }
            Action::CancelTask { task_sid, reason } => self.task_status(task_sid, "canceled", reason).await,
            Action::CompleteTask { task_sid, reason } => self.task_status(task_sid, "completed", reason).await,
        };
        match result {
            Ok(()) => self.finish(&row, OutboxState::Done, None, None).await,
            // The thing we wanted is already true or can no longer be done:
            // a task that is already canceled or completed, a call that has
            // already ended. Retrying would not change that.
            Err(e) if is_settled(&e) => {
                tracing::info!(error = %e, "nothing to do: already settled");
                self.finish(&row, OutboxState::Done, None, Some(&e.to_string())).await
            }
            Err(e) if row.attempts < MAX_ATTEMPTS => {
                tracing::warn!(error = %e, "action failed; will retry");
                let backoff = Duration::from_millis(200 * (1 << row.attempts.min(6)) as u64);
                tokio::time::sleep(backoff).await;
                self.finish(&row, OutboxState::Pending, None, Some(&e.to_string())).await;
                self.notifier.notify();
            }
            Err(e) => {
                tracing::error!(error = %e, "action failed for good");
                self.finish(&row, OutboxState::Failed, None, Some(&e.to_string())).await
            }
        }
    }

    async fn task_status(&self, task_sid: &str, status: &str, reason: &str) -> Result<(), ApiError> {
        let workspace = self.workspace().await.ok_or_else(|| ApiError::Decode {
            method: "POST",
            path: format!("Tasks/{task_sid}"),
            message: "no workspace SID known; run provision".into(),
        })?;
        self.twilio.update_task_status(&workspace, task_sid, status, reason).await.map(drop)
    }

    async fn workspace(&self) -> Option<WorkspaceSid> {
        if let Some(ws) = &self.settings.twilio.workspace_sid {
            return Some(ws.clone());
        }
        self.store.resource("workspace", "main").await.ok().flatten().and_then(|s| s.parse().ok())
    }

    async fn finish(&self, row: &OutboxRow, state: OutboxState, result: Option<&str>, error: Option<&str>) {
        if let Err(e) = self.store.finish_action(row.id, state, result, error).await {
            tracing::error!(error = ?e, "could not record an action's result");
        }
    }

    /// Places the outbound call. A timeout leaves it `unknown`: Twilio may
    /// have placed the call, and a second request could ring the location
    /// twice for one reservation. TaskRouter's reservation timeout then
    /// bounds the caller's wait.
    async fn dial(&self, row: &OutboxRow, d: &Dial, caller_outcome: Option<Outcome>) {
        // A caller who hung up (or was sent to voicemail) while this dial waited in the outbox
        // must not have the location rung for nobody.
        if let Some(settled) = caller_outcome {
            tracing::info!(outcome = %settled, "the caller's call is already settled; not dialling");
            self.finish(row, OutboxState::Done, None, Some(&format!("skipped: call already {settled}"))).await;
            return;
        }
        let urls = Urls { base: &self.settings.public_url };
        let mut query: Vec<(&str, &str)> = vec![
            ("reservationSid", &d.reservation_sid),
            ("taskSid", &d.task_sid),
            ("location", &d.location),
            ("from", d.from.as_str()),
        ];
        if let Some(c) = &d.inbound_call_sid {
            query.push(("callSid", c));
        }
        let dialing = &self.settings.dialing;
        let req = CreateCall {
            to: d.to.clone(),
            from: d.from.clone(),
            url: urls.url("/dial-queue", &query),
            status_callback: urls.url("/status-callback", &query),
            timeout_secs: dialing.ring_timeout_secs,
            machine_detection_speech_threshold_ms: dialing.machine_detection_speech_threshold_ms,
            machine_detection_timeout_secs: dialing.machine_detection_timeout_secs,
            call_token: d.call_token.clone(),
        };
        match self.twilio.create_call(&req).await {
            Ok(call) => {
                tracing::info!(outbound_call_sid = %call.sid, to = %d.to, "dialled the location");
                // Link the legs now rather than at the first status callback, so that a caller
                // who hangs up in the meantime still has the location's phone stopped. The same
                // write reads the caller's outcome back.
                let now = match self.store.finish_dial(row.id, call.sid.as_str(), d.inbound_call_sid.as_deref()).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        tracing::error!(error = ?e, "could not record the dial and link the outbound call");
                        None
                    }
                };
                // The caller may have left while the request was in flight: stop the ringing.
                if let Some(settled) = now.filter(|o| o.is_final()) {
                    tracing::info!(outcome = %settled, "the caller left while the location was dialled; hanging up");
                    let hang_up = Action::HangUpCall { call_sid: call.sid.as_str().to_owned() };
                    match self.store.enqueue_action(&hang_up).await {
                        Ok(_) => self.notifier.notify(),
                        Err(e) => tracing::error!(error = ?e, "could not queue the hang-up"),
                    }
                }
            }
            Err(e @ ApiError::Timeout { .. }) => {
                tracing::error!(error = %e, "dial outcome unknown; not re-sending");
                self.finish(row, OutboxState::Unknown, None, Some(&e.to_string())).await;
            }
            Err(e) => {
                // Twilio refused the call (bad number, unverified From …) or
                // could not be reached: the caller gets voicemail now rather
                // than holding until the reservation times out.
                tracing::error!(error = %e, "could not dial the location");
                self.finish(row, OutboxState::Failed, None, Some(&e.to_string())).await;
                if let Some(inbound) = &d.inbound_call_sid {
                    let url = urls.url(
                        "/caller-fallback",
                        &[("location", d.location.as_str()), ("reason", Outcome::DialFailed.as_str())],
                    );
                    let actions = [
                        Action::RedirectCaller { call_sid: inbound.clone(), url },
                        Action::CancelTask {
                            task_sid: d.task_sid.clone(),
                            reason: "could not dial the location".into(),
                        },
                    ];
                    match self.store.settle_with_actions(inbound, Outcome::DialFailed, &actions).await {
                        Ok(true) => self.notifier.notify(),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = ?e, "could not queue the caller's fallback"),
                    }
                }
            }
        }
    }
}

impl Dispatcher {
    /// The final outcomes of the callers' calls of the claimed dials, in one
    /// read: before a dial, a final outcome means the caller is gone or was
    /// sent elsewhere.
    async fn settled_outcomes(&self, rows: &[OutboxRow]) -> HashMap<String, Outcome> {
        let callers: Vec<&str> = rows
            .iter()
            .filter_map(|r| match &r.action {
                Action::Dial(d) => d.inbound_call_sid.as_deref(),
                _ => None,
            })
            .collect();
        if callers.is_empty() {
            return HashMap::new();
        }
        match self.store.outcomes(&callers).await {
            Ok(mut outcomes) => {
                outcomes.retain(|_, o| o.is_final());
                outcomes
            }
            Err(e) => {
                tracing::error!(error = ?e, "could not read the callers' calls; dialling anyway");
                HashMap::new()
            }
        }
    }
}

/// Errors that mean the goal is already met or moot.
fn is_settled(e: &ApiError) -> bool {
    matches!(e.code(), Some(codes::CALL_NOT_IN_PROGRESS) | Some(codes::NOT_FOUND))
        || (e.status() == Some(400) && e.code() == Some(codes::CONFLICT))
}
