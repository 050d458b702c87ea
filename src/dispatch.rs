//! The dispatcher: carries out the outbox's commands against Twilio, and
//! reports each result to the journey that owes it as an event.
//!
//! Webhooks write commands and call [`Notifier::notify`]; the dispatcher
//! wakes, claims pending commands, and runs them concurrently in two lanes
//! with their own capacity: dials, and everything else (hang-ups, redirects,
//! task updates, look-ups), so slow housekeeping never holds a dial back. It
//! also polls once a second, for commands written by another process, left
//! from before a restart, or waiting for their `not_before` time.
//!
//! The dispatcher decides nothing about a call. A placed dial is
//! `DialPlaced`; a refusal (4xx) `DialFailed`; a 5xx, a timeout or a reset
//! `DialUnknown` (Twilio may have created the call: it is never re-sent, the
//! journey looks it up). An update that fails is sent again after a back-off
//! kept in the outbox row, not in a slot; after [`MAX_ATTEMPTS`] it is
//! `failed`, and its journey hears `ActionFailed` and owes it again later.
//! A callback's task is the one create that is sent again: every send after
//! its round's first looks the task up before creating it, so a create whose
//! answer was lost makes no second task (`create_callback_task`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;
use twilio::Params;
use twilio::error::codes;
use twilio::sid::WorkspaceSid;

use crate::config::Settings;
use crate::ivr::Urls;
use crate::journey::{Command, Event, Policy};
use crate::outbox::{Lane, OutboxRow, OutboxState};
use crate::reconcile::{self, FindDial};
use crate::store::{
    Backend, Delivered, Delivery, DeskQueue, Finish, Handed, NOTIFY_CHANNEL, Orphans, Route, Store, now_ms,
};
use crate::twilio_api::{ApiError, CreateCall, TaskResource, TwilioClient};
use sqlx::postgres::PgListener;

/// Wakes the dispatcher's lanes, and whoever watches for changes (the
/// history API's event stream).
#[derive(Clone, Default, Debug)]
pub struct Notifier(Arc<Lanes>);

#[derive(Default, Debug)]
struct Lanes {
    dial: Notify,
    other: Notify,
    /// Every watcher at once (`notify_waiters`), so none takes a lane's wake-up.
    changed: Notify,
    /// Set when the server drains: watchers end their long-lived responses.
    closing: std::sync::atomic::AtomicBool,
}

impl Notifier {
    pub fn notify(&self) {
        self.0.dial.notify_one();
        self.0.other.notify_one();
        self.0.changed.notify_waiters();
    }

    /// After a delivery: wakes the lanes it queued commands for (a lane woken
    /// with nothing to claim would spend a claim, a write, on finding so),
    /// and the watchers when it queued any. The dials handed to the dial
    /// lane as they were written are the lane's already.
    pub fn delivered(&self, d: &Delivered) {
        if d.queued_dials > d.handed {
            self.0.dial.notify_one();
        }
        if d.queued > d.queued_dials {
            self.0.other.notify_one();
        }
        if d.queued > 0 {
            self.0.changed.notify_waiters();
        }
    }

    fn of(&self, lane: Lane) -> &Notify {
        match lane {
            Lane::Dial => &self.0.dial,
            Lane::Other => &self.0.other,
        }
    }

    /// Resolves at the next [`Notifier::notify`] or [`Notifier::close`].
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.changed.notified()
    }

    /// The server is draining: long-lived responses should end.
    pub fn close(&self) {
        self.0.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    pub fn is_closing(&self) -> bool {
        self.0.closing.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How many requests of each lane run at once.
const DIAL_SLOTS: usize = 24;
const OTHER_SLOTS: usize = 16;
/// The fewest free slots a lane waits for before it claims again while
/// commands are running, so that one claim (one write) serves several
/// commands under load instead of one each.
const MIN_CLAIM: usize = 4;
/// An update is sent this many times before it is marked failed (each send
/// is itself retried briefly by the REST client on 429, 5xx and timeouts).
pub const MAX_ATTEMPTS: i64 = 5;
/// How often an idle lane claims, for commands no wake-up told it of
/// (another instance's, or waiting for their `not_before` time).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often the dispatcher looks for claims another instance left behind.
const ORPHANS_EVERY: Duration = Duration::from_secs(5);
/// The first wait before an update is sent again; it doubles.
const RETRY_FIRST_MS: i64 = 1_000;

pub struct Dispatcher {
    store: Store,
    twilio: TwilioClient,
    settings: Settings,
    policy: Policy,
    notifier: Notifier,
    /// Voicemail notifications (webhooks, emails); `None` when it could not
    /// be built (logged), and those commands then fail.
    sender: Option<crate::notify::Sender>,
}

/// The next dial handed to a lane: never, for a lane without a desk, or
/// once its queue has ended (its desk replaced).
async fn next_handed(handed: &mut Option<DeskQueue>) -> Handed {
    if let Some(rx) = handed
        && let Some(h) = rx.recv().await
    {
        return h;
    }
    std::future::pending().await
}

impl Dispatcher {
    pub fn new(store: Store, twilio: TwilioClient, settings: Settings, notifier: Notifier) -> Self {
        let policy = Policy::from_settings(&settings);
        let sender = match crate::notify::Sender::new(
            &settings.notifications,
            &settings.public_url,
            settings.twilio.tls_roots,
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "cannot send voicemail notifications");
                None
            }
        };
        Self { store, twilio, settings, policy, notifier, sender }
    }

    /// Runs until `shutdown` resolves, then lets running commands finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        // What a previous run of this instance was sending when it stopped.
        self.take_over(Orphans::ExpiredAndMine).await;
        let this = Arc::new(self);
        let (stop, stopped) = watch::channel(false);
        let lanes = [
            tokio::spawn(this.clone().lane(Lane::Dial, DIAL_SLOTS, stopped.clone())),
            tokio::spawn(this.clone().lane(Lane::Other, OTHER_SLOTS, stopped.clone())),
            tokio::spawn(this.clone().orphans(stopped.clone())),
            tokio::spawn(this.clone().listen(stopped)),
        ];
        shutdown.await;
        let _ = stop.send(true);
        for lane in lanes {
            if let Err(e) = lane.await {
                tracing::error!(error = %format_args!("{e:#}"), "a dispatcher lane panicked");
            }
        }
    }

    /// Takes over commands being sent by an instance that is gone (see
    /// [`Store::take_over`]), and wakes the lanes for the ones requeued.
    async fn take_over(&self, which: Orphans) {
        match self.store.take_over(which, self.policy).await {
            Ok((0, 0)) => {}
            Ok((requeued, unknown)) => {
                tracing::warn!(
                    requeued,
                    unknown,
                    "took over commands whose sender stopped; calls whose creation was interrupted are looked up, \
                     not re-sent"
                );
                self.notifier.notify();
            }
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "could not take over interrupted commands")
            }
        }
    }

    /// On PostgreSQL, wakes the lanes when any instance's write queued a
    /// command (the batcher's `pg_notify` at COMMIT), so a dial queued by a
    /// webhook another instance took starts at once rather than at the next
    /// poll. The poll stays as the fallback: a lost connection only delays.
    async fn listen(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.store.backend() != Backend::Postgres {
            return;
        }
        let mut listener = None;
        // Since a LISTEN connection was lost (logged), until one is back.
        let mut lost = false;
        loop {
            if listener.is_none() {
                match PgListener::connect(&self.settings.database_url).await {
                    Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                        Ok(()) => {
                            if std::mem::take(&mut lost) {
                                tracing::info!("listening for new commands again");
                            }
                            listener = Some(l);
                        }
                        Err(e) => {
                            tracing::warn!(error = %crate::telemetry::chain(&e), "could not LISTEN for new commands; polling")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %crate::telemetry::chain(&e), "could not connect to LISTEN for new commands; polling")
                    }
                }
            }
            let Some(l) = listener.as_mut() else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            };
            tokio::select! {
                got = l.recv() => match got {
                    Ok(_) => self.notifier.notify(),
                    Err(e) => {
                        tracing::warn!(error = %crate::telemetry::chain(&e), "lost the LISTEN connection; polling until it is back");
                        listener = None;
                        lost = true;
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Looks for expired claims every few seconds, until stopped.
    async fn orphans(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(ORPHANS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.take_over(Orphans::Expired).await;
        }
    }

    async fn lane(self: Arc<Self>, lane: Lane, slots: usize, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(slots));
        let mut running = JoinSet::new();
        let min_claim = MIN_CLAIM.min(slots) as u32;
        // The dial lane takes the dials written while it has free slots
        // straight from the writer, claimed (see `store::Desk`).
        let mut handed = (lane == Lane::Dial).then(|| self.store.open_desk(permits.clone()));
        // When to claim next: at once at the start, after a wake-up, and
        // while claims find rows; else at the next poll.
        let mut claim_at = tokio::time::Instant::now();
        'lane: while !*stop.borrow() {
            // Until it is time to claim, run what is handed over. A wake-up or
            // the poll comes first, so a steady stream of handed dials never
            // holds back a claim of the dials that found no free slot.
            loop {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break 'lane,
                    _ = self.notifier.of(lane).notified() => break,
                    _ = tokio::time::sleep_until(claim_at) => break,
                    h = next_handed(&mut handed) => self.start(&mut running, h.row, h.slot),
                }
                while running.try_join_next().is_some() {}
            }
            // Take the slots first and claim only as many rows as there are
            // free slots: every claimed command starts at once.
            let first = loop {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break 'lane,
                    h = next_handed(&mut handed) => self.start(&mut running, h.row, h.slot),
                    p = permits.clone().acquire_many_owned(min_claim) => break p.expect("semaphore never closed"),
                }
            };
            let mut free = vec![first];
            let mut count = min_claim as usize;
            while count < slots {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => {
                        free.push(p);
                        count += 1;
                    }
                    Err(_) => break,
                }
            }
            let rows = match self.store.claim(lane, count as i64).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "could not read the outbox");
                    Vec::new()
                }
            };
            claim_at = tokio::time::Instant::now() + if rows.is_empty() { POLL_EVERY } else { Duration::ZERO };
            // One slot per command: split the first, many-permit slot into ones.
            let mut first = free.remove(0);
            let mut singles = Vec::with_capacity(count);
            while first.num_permits() > 1 {
                singles.push(first.split(1).expect("more than one permit left"));
            }
            singles.push(first);
            singles.extend(free);
            for (row, permit) in rows.into_iter().zip(singles) {
                self.start(&mut running, row, permit);
            }
            while running.try_join_next().is_some() {}
        }
        // No more dials handed over; those written meanwhile still run.
        if let Some(mut handed) = handed.take() {
            self.store.close_desk(&handed);
            while let Some(h) = handed.recv().await {
                self.start(&mut running, h.row, h.slot);
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Starts a claimed command in its slot, in a span with its SIDs.
    fn start(self: &Arc<Self>, running: &mut JoinSet<()>, row: OutboxRow, permit: OwnedSemaphorePermit) {
        let this = self.clone();
        let (call_sid, task_sid, reservation_sid) = row.command.sids();
        // `send`: which claim of the row this is (1 the first, more
        // after a retry); a dial's `attempt` is the journey's, logged
        // with the dial.
        let span = tracing::info_span!(
            "action",
            key = %row.key,
            send = row.attempts,
            call_sid = call_sid.map(|s| s.as_str()),
            task_sid = task_sid.map(|s| s.as_str()),
            reservation_sid = reservation_sid.map(|s| s.as_str()),
        );
        running.spawn(
            async move {
                this.execute(row, permit).await;
            }
            .instrument(span),
        );
    }

    /// Carries out one claimed command in its slot (`slot`), which it gives back once the
    /// command's request has its answer.
    async fn execute(&self, row: OutboxRow, slot: OwnedSemaphorePermit) {
        let result = match &row.command {
            Command::Dial { .. } => return self.dial(&row, slot).await,
            Command::FindDial { .. } => return self.find_dial(&row).await,
            Command::NotifyVoicemail { .. } => return self.notify_voicemail(&row).await,
            // Carried out by the store when it is owed; never queued.
            Command::WithdrawDial { .. } | Command::WithdrawRedirect { .. } | Command::ListCallbackRequest { .. } => {
                Ok(())
            }
            Command::HangUp { leg, .. } => {
                // `completed` hangs up a call in any live state. `canceled` would be ignored,
                // with a 200, once the location has answered (during answering-machine
                // detection, say), leaving that leg to be bridged to nobody.
                let mut p = Params::new();
                p.push("Status", "completed");
                self.twilio.update_call(leg.as_str(), &p).await.map(drop)
            }
            Command::RedirectCaller { call, location, reason, language, callback, transfer, .. } => {
                let urls = Urls { base: &self.settings.public_url };
                let mut query = vec![("location", location.as_deref().unwrap_or("")), ("reason", reason.as_str())];
                if *callback {
                    query.push(("callback", "1"));
                }
                query.extend(transfer.as_deref().map(|t| ("transfer", t)));
                query.extend(language.as_deref().map(|l| ("lang", l)));
                let url = urls.url("/caller-fallback", &query);
                let mut p = Params::new();
                p.push("Url", &url).push("Method", "POST");
                self.twilio.update_call(call.as_str(), &p).await.map(drop)
            }
            Command::CancelTask { task, reason, .. } => {
                self.task_status(task.as_str(), "canceled", &format!("caller's outcome: {reason}")).await
            }
            Command::CompleteTask { task, .. } => self.task_status(task.as_str(), "completed", "call ended").await,
            Command::CreateCallbackTask { .. } => return self.create_callback_task(&row).await,
            Command::AcceptReservation { task, reservation, .. } => match self.workspace().await {
                Some(ws) => self.twilio.accept_reservation(&ws, task.as_str(), reservation.as_str()).await.map(drop),
                None => Err(no_workspace("Reservations")),
            },
        };
        match result {
            Ok(()) => self.finish(&row, OutboxState::Done, None, None).await,
            // The thing we wanted is already true or can no longer be done:
            // a task that is already canceled or completed, a call that has
            // already ended. Sending it again would not change that.
            Err(e) if is_settled(&e) => {
                tracing::info!(error = %e, "nothing to do: already settled");
                self.finish(&row, OutboxState::Done, None, Some(&e.to_string())).await
            }
            Err(e) => self.failed(&row, &e.to_string()).await,
        }
    }

    /// A send failed: again later, or for good after [`MAX_ATTEMPTS`].
    async fn failed(&self, row: &OutboxRow, error: &str) {
        if row.attempts < MAX_ATTEMPTS {
            let wait = RETRY_FIRST_MS << (row.attempts - 1).clamp(0, 6);
            tracing::warn!(error, retry_in_ms = wait, "command failed; will send it again");
            let finish =
                Finish { not_before_ms: now_ms() + wait, ..ended(row, OutboxState::Pending, None, Some(error)) };
            self.write(finish).await;
            return;
        }
        if row.journey_id.is_some() {
            tracing::error!(error, attempts = row.attempts, "command failed for good; its journey will owe it again");
        } else {
            tracing::error!(error, attempts = row.attempts, "command failed for good");
        }
        let event = Event::ActionFailed { command: row.command.clone() };
        self.report(row, OutboxState::Failed, None, Some(error), event).await;
    }

    async fn task_status(&self, task_sid: &str, status: &str, reason: &str) -> Result<(), ApiError> {
        let workspace = self.workspace().await.ok_or_else(|| no_workspace(&format!("Tasks/{task_sid}")))?;
        self.twilio.update_task_status(&workspace, task_sid, status, reason).await.map(drop)
    }

    /// Creates a callback's task for its location, keeping the caller's place
    /// (`VirtualStartTime`), and tells the journey its SID. A failure is sent
    /// again like any command; after [`MAX_ATTEMPTS`] the journey owes it again.
    ///
    /// At most one task per round: a create whose answer was lost (a 5xx, a
    /// timeout, a reset, a crash) may have made the task, so every send after
    /// the round's first (a retry of this row, or the journey's next effort)
    /// looks the round's task up first (by the caller's call SID and the
    /// round in its attributes) and reports the one it finds, in any status.
    /// It creates only when the look-up proves there is none; a look-up that
    /// fails, or is cut by its page cap, is tried again like a failed send.
    async fn create_callback_task(&self, row: &OutboxRow) {
        let Command::CreateCallbackTask { call, location, number, since_ms, round, effort } = &row.command else {
            return;
        };
        let repeat = may_exist_already(row.attempts, *effort);
        let result: Result<(TaskResource, bool), ApiError> = async {
            let workspace = self.workspace().await.ok_or_else(|| no_workspace("Tasks"))?;
            if repeat && let Some(task) = self.find_callback_task(&workspace, call.as_str(), *round).await? {
                return Ok((task, true));
            }
            let workflow = self
                .store
                .resource("workflow", "main")
                .await
                .ok()
                .flatten()
                .or_else(|| self.settings.twilio.workflow_sid.as_ref().map(|w| w.to_string()))
                .ok_or_else(|| no_workspace("Tasks"))?;
            let found = self.store.location(location).await.map_err(|e| ApiError::Decode {
                method: "POST",
                path: "Tasks".into(),
                message: format!("could not read location {location:?}: {e:#}"),
            })?;
            let found = found.ok_or_else(|| ApiError::Decode {
                method: "POST",
                path: "Tasks".into(),
                message: format!("location {location:?} no longer exists"),
            })?;
            let attrs = crate::ivr::callback_attributes(&found, call.as_str(), number, *since_ms, *round);
            let attrs = serde_json::to_string(&attrs).expect("task attributes serialise");
            let since = jiff::Timestamp::from_millisecond(*since_ms).unwrap_or_else(|_| jiff::Timestamp::now());
            let ttl = crate::journey::CALLBACK_TASK_TTL_SECS;
            Ok((self.twilio.create_task(&workspace, &workflow, &attrs, since, ttl).await?, false))
        }
        .await;
        match result {
            Ok((task, found)) => {
                if found {
                    tracing::info!(task_sid = %task.sid, status = %task.assignment_status, round, "found the callback's task an earlier send made");
                } else {
                    tracing::info!(task_sid = %task.sid, round, "created the callback's task");
                }
                let event = Event::CallbackTaskCreated { task: task.sid.clone(), round: *round };
                self.report(row, OutboxState::Done, Some(task.sid.as_str()), None, event).await;
            }
            Err(e) => self.failed(row, &e.to_string()).await,
        }
    }

    /// The oldest task of `call`'s callback `round`, in any status; `None`
    /// only when the whole list was read and holds none.
    async fn find_callback_task(
        &self,
        workspace: &WorkspaceSid,
        call: &str,
        round: u32,
    ) -> Result<Option<TaskResource>, ApiError> {
        let lookup_error = |message: String| ApiError::Decode { method: "GET", path: "Tasks".into(), message };
        let query = crate::ivr::callback_task_query(call, round)
            .ok_or_else(|| lookup_error(format!("cannot look up the callback task of call {call:?}")))?;
        let listing = self.twilio.find_tasks(workspace, &query, 2).await?;
        match listing.items.into_iter().next() {
            Some(task) => Ok(Some(task)),
            None if listing.complete => Ok(None),
            None => {
                Err(lookup_error("the Tasks list was cut by its page cap; the callback's task stays in doubt".into()))
            }
        }
    }

    async fn workspace(&self) -> Option<WorkspaceSid> {
        if let Some(ws) = &self.settings.twilio.workspace_sid {
            return Some(ws.clone());
        }
        self.store.resource("workspace", "main").await.ok().flatten().and_then(|s| s.parse().ok())
    }

    async fn finish(&self, row: &OutboxRow, state: OutboxState, result: Option<&str>, error: Option<&str>) {
        self.write(ended(row, state, result, error)).await;
    }

    async fn write(&self, finish: Finish) {
        if let Err(e) = self.store.finish(finish).await {
            tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "could not record a command's result");
        }
    }

    /// Records the row's end and tells its journey, in one write.
    async fn report(
        &self,
        row: &OutboxRow,
        state: OutboxState,
        result: Option<&str>,
        error: Option<&str>,
        event: Event,
    ) {
        let finish = ended(row, state, result, error);
        let Some(journey) = row.journey_id else {
            return self.write(finish).await;
        };
        let mut d = Delivery::new(Route::Id(journey), vec![event], self.policy);
        d.finish = Some(finish);
        match self.store.deliver(d).await {
            Ok(done) => self.notifier.delivered(&done),
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "could not record a command's result")
            }
        }
    }

    /// Places the location's leg for one attempt of a reservation. Its slot is given back
    /// once Twilio answered, before the result is stored: the slots bound the requests to
    /// Twilio at once, and a slot held through the write (milliseconds on PostgreSQL under
    /// load, beside the request's 1 ms on loopback) held the lane to about 1,000 dials/s
    /// while webhooks queued 1,250/s.
    async fn dial(&self, row: &OutboxRow, slot: OwnedSemaphorePermit) {
        let Command::Dial { reservation, task, attempt, caller, target } = &row.command else {
            return;
        };
        let urls = Urls { base: &self.settings.public_url };
        let attempt_s = attempt.to_string();
        let mut query: Vec<(&str, &str)> = vec![
            ("reservationSid", reservation.as_str()),
            ("taskSid", task.as_str()),
            ("attempt", &attempt_s),
            ("location", &target.location),
            ("from", target.from.as_str()),
        ];
        if let Some(c) = caller {
            query.push(("callSid", c.as_str()));
        }
        let dialing = &self.settings.dialing;
        let req = CreateCall {
            to: target.to.clone(),
            from: target.from.clone(),
            url: urls.url("/dial-queue", &query),
            status_callback: urls.url("/status-callback", &query),
            timeout_secs: dialing.ring_timeout_secs,
            machine_detection: target.amd,
            machine_detection_speech_threshold_ms: dialing.machine_detection_speech_threshold_ms,
            machine_detection_timeout_secs: dialing.machine_detection_timeout_secs,
            call_token: target.call_token.clone(),
        };
        let (reservation, attempt) = (reservation.clone(), *attempt);
        let created = self.twilio.create_call(&req).await;
        drop(slot);
        match created {
            Ok(call) => {
                tracing::info!(outbound_call_sid = %call.sid, to = %target.to, attempt, "dialled the location");
                let event = Event::DialPlaced { reservation, attempt, leg: call.sid.clone() };
                self.report(row, OutboxState::Done, Some(call.sid.as_str()), None, event).await;
            }
            // Twilio refused: no call exists. The journey dials again or gives up.
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                tracing::error!(error = %e, attempt, "Twilio refused the dial");
                let event = Event::DialFailed { reservation, attempt };
                self.report(row, OutboxState::Failed, None, Some(&e.to_string()), event).await;
            }
            // A 5xx, a timeout, a reset: the call may exist. Never re-sent.
            Err(e) => {
                tracing::error!(error = %e, attempt, "dial outcome unknown; it will be looked up, not re-sent");
                let event = Event::DialUnknown { reservation, attempt };
                self.report(row, OutboxState::Unknown, None, Some(&e.to_string()), event).await;
            }
        }
    }

    /// Sends one voicemail notification. A failure that may pass is sent
    /// again after a back-off (up to [`MAX_ATTEMPTS`]); one that will not is
    /// recorded as failed at once.
    async fn notify_voicemail(&self, row: &OutboxRow) {
        let Command::NotifyVoicemail { recording, channel } = &row.command else {
            return;
        };
        let Some(sender) = &self.sender else {
            return self
                .finish(row, OutboxState::Failed, None, Some("notifications are not set up (see the log)"))
                .await;
        };
        let voicemail = match self.store.voicemail(recording).await {
            Ok(Some(v)) => v,
            Ok(None) => return self.finish(row, OutboxState::Failed, None, Some("no such voicemail")).await,
            Err(e) => return self.failed(row, &crate::telemetry::chain(e.as_ref()).to_string()).await,
        };
        let location = match &voicemail.location {
            Some(name) => match self.store.location(name).await {
                Ok(l) => l,
                Err(e) => return self.failed(row, &crate::telemetry::chain(e.as_ref()).to_string()).await,
            },
            None => None,
        };
        match sender.send(channel, &voicemail, location.as_ref()).await {
            Ok(()) => {
                tracing::info!(recording_sid = %recording, "voicemail notification sent");
                self.finish(row, OutboxState::Done, None, None).await
            }
            Err(e) if e.permanent => {
                tracing::error!(recording_sid = %recording, error = %e.message, "voicemail notification refused; not sent again");
                self.finish(row, OutboxState::Failed, None, Some(&e.message)).await
            }
            Err(e) => self.failed(row, &e.message).await,
        }
    }

    /// Looks up whether a dial in doubt created a call (see
    /// [`reconcile::find_dial`]): `LegSeen` or `DialAbsent`. A lookup cut by
    /// its page cap proves nothing and reports nothing; the journey asks again.
    async fn find_dial(&self, row: &OutboxRow) {
        let Some(find) = FindDial::from_command(&row.command) else {
            return;
        };
        let calls = match reconcile::dial_candidates(&self.twilio, &find).await {
            Ok(Some(calls)) => calls,
            Ok(None) => {
                tracing::warn!("too many calls to that phone to prove anything; the dial stays in doubt");
                return self.finish(row, OutboxState::Done, None, Some("the Calls list was cut by its page cap")).await;
            }
            Err(e) => return self.failed(row, &e.to_string()).await,
        };
        let sids: Vec<String> = calls.iter().map(|c| c.sid.to_string()).collect();
        let known = match self.store.known_sids(&sids).await {
            Ok(k) => k,
            Err(e) => return self.failed(row, &crate::telemetry::chain(e.as_ref()).to_string()).await,
        };
        let event = reconcile::attribute_dial(&find, &calls, |sid| known.contains(sid));
        match &event {
            Event::LegSeen { leg, status, .. } => tracing::info!(%leg, ?status, "found the call of a dial in doubt"),
            _ => tracing::info!("a dial in doubt made no call"),
        }
        self.report(row, OutboxState::Done, None, None, event).await;
    }
}

/// How `row` ended; with `not_before_ms` set instead, when to send it again.
fn ended(row: &OutboxRow, state: OutboxState, result: Option<&str>, error: Option<&str>) -> Finish {
    Finish { id: row.id, state, result: result.map(str::to_owned), error: error.map(str::to_owned), not_before_ms: 0 }
}

/// Whether a callback task's create may have been sent before for its round,
/// so that the task may exist: any claim of its row after the first (a retry,
/// or a take-over after a crash), or any effort after the journey's first.
fn may_exist_already(attempts: i64, effort: u32) -> bool {
    attempts > 1 || effort > 1
}

/// Errors that mean the goal is already met or moot.
fn is_settled(e: &ApiError) -> bool {
    matches!(e.code(), Some(codes::CALL_NOT_IN_PROGRESS) | Some(codes::NOT_FOUND))
        || (e.status() == Some(400) && e.code() == Some(codes::CONFLICT))
}

/// The error of a TaskRouter command sent before `provision` stored the SIDs.
fn no_workspace(path: &str) -> ApiError {
    ApiError::Decode {
        method: "POST",
        path: path.to_owned(),
        message: "no workspace or workflow SID known; run provision".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Whether `lane` has a wake-up waiting for it.
    fn woken(n: &Notifier, lane: Lane) -> bool {
        use futures_util::FutureExt as _;
        n.of(lane).notified().now_or_never().is_some()
    }

    /// A delivery wakes only the lanes it queued commands for: a lane woken
    /// for nothing would spend a claim (a write) on finding nothing.
    #[tokio::test]
    async fn a_delivery_wakes_the_lanes_it_queued_commands_for_and_no_other() {
        use futures_util::FutureExt as _;
        let delivered = |queued, queued_dials, handed| Delivered {
            answer: crate::journey::Answer::Nothing,
            outcome: crate::domain::Outcome::Pending,
            queued,
            queued_dials,
            handed,
            journey: Some(1),
            settled: None,
        };
        for (queued, dials, handed, dial_lane, other_lane) in [
            (0, 0, 0, false, false),
            (1, 1, 0, true, false),
            (1, 0, 0, false, true),
            (3, 1, 0, true, true),
            // A dial handed to the lane as it was written: nothing for the lane to claim.
            (1, 1, 1, false, false),
            (3, 2, 1, true, true),
        ] {
            let n = Notifier::default();
            let watcher = n.changed();
            tokio::pin!(watcher);
            watcher.as_mut().enable();
            n.delivered(&delivered(queued, dials, handed));
            assert_eq!(
                (woken(&n, Lane::Dial), woken(&n, Lane::Other), watcher.now_or_never().is_some()),
                (dial_lane, other_lane, queued > 0),
                "{queued} queued, {dials} of them dials, {handed} handed"
            );
        }
    }

    /// A fake of Twilio's Calls resource that answers each create after `hold`; the creates
    /// it held at once at most, and in all.
    async fn slow_calls(hold: Duration) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (now, most, created) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let app = axum::Router::new().fallback({
            let (most, created) = (most.clone(), created.clone());
            move || {
                let (now, most, created) = (now.clone(), most.clone(), created.clone());
                async move {
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(hold).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let n = created.fetch_add(1, Ordering::SeqCst);
                    let body = format!(r#"{{"sid":"CA{n:032x}","status":"queued"}}"#);
                    (axum::http::StatusCode::CREATED, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, most, created)
    }

    fn dial(n: usize) -> Command {
        Command::Dial {
            reservation: format!("WR{n:032x}").parse().unwrap(),
            task: format!("WT{n:032x}").parse().unwrap(),
            attempt: 1,
            caller: None,
            target: crate::store::testing::north_target(),
        }
    }

    /// The slots bound the dials at Twilio at once, though each gives its slot back before
    /// its result is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_dial_lane_has_at_most_its_slots_at_twilio_at_once_and_places_every_dial() {
        let (url, most, created) = slow_calls(Duration::from_millis(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("d.db").display())).await.unwrap();
        let settings = settings(&url);
        const DIALS: usize = 60;
        for n in 0..DIALS {
            assert!(store.enqueue_command(&dial(n)).await.unwrap());
        }
        let twilio = TwilioClient::new(&settings.twilio).unwrap();
        let dispatcher = Dispatcher::new(store.clone(), twilio, settings, Notifier::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(dispatcher.run(async move {
            let _ = stopped.await;
        }));
        let placed = async {
            loop {
                let actions = store.actions().await.unwrap();
                if actions.iter().filter(|(_, state, _)| *state == OutboxState::Done).count() == DIALS {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), placed).await.expect("every dial placed and stored");
        let _ = stop.send(());
        running.await.unwrap();
        assert_eq!(created.load(Ordering::SeqCst), DIALS, "each dial placed once");
        // 60 dials held 200 ms each: the lane fills its slots, and no more.
        assert_eq!(most.load(Ordering::SeqCst), DIAL_SLOTS);
    }

    /// Settings for a dispatcher that sends to the fake API at `url`.
    fn settings(url: &str) -> Settings {
        Settings::from_toml(
            &format!(
                r#"
public_url = "https://router.example.com"
[twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "secret"
api_base_url = "{url}"
"#
            ),
            |_| None,
        )
        .unwrap()
    }

    /// A dial handed over by a write that was under way when the lane
    /// stopped is still placed before `run` returns: the lane closes its
    /// desk, then starts what the writes under way hand it, rather than
    /// leaving it claimed until its lease ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dial_handed_over_while_the_lane_stops_is_placed_before_it_ends() {
        use crate::store::testing::created;
        let (url, _, placed) = slow_calls(Duration::from_millis(10)).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let store = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let settings = settings(&url);
        let twilio = TwilioClient::new(&settings.twilio).unwrap();
        let dispatcher = Dispatcher::new(store.clone(), twilio, settings, Notifier::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut running = tokio::spawn(dispatcher.run(async move {
            let _ = stopped.await;
        }));
        // Once the lane has its desk, a new dial is handed to it.
        let mut n = 0;
        loop {
            n += 1;
            if store.deliver(created(n, n)).await.unwrap().handed == 1 {
                break;
            }
            assert!(n < 200, "the dial lane never opened its desk");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The database's write lock, held elsewhere, keeps the next delivery
        // under way (it carries the open desk) while the lane is told to stop.
        let lock = rusqlite::Connection::open(&path).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let handing = tokio::spawn({
            let store = store.clone();
            async move { store.deliver(created(n + 1, n + 1)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!running.is_finished(), "the lane waits for the write under way");
        lock.execute_batch("ROLLBACK").unwrap();
        assert_eq!(handing.await.unwrap().unwrap().handed, 1, "handed to the stopping lane");
        tokio::time::timeout(Duration::from_secs(10), &mut running).await.expect("the lane ends").unwrap();
        assert_eq!(placed.load(Ordering::SeqCst), n + 1, "every dial placed, the last after the stop");
        let actions = store.actions().await.unwrap();
        assert_eq!(actions.len(), n + 1, "{actions:?}");
        assert!(actions.iter().all(|(_, state, _)| *state == OutboxState::Done), "none left claimed: {actions:?}");
    }

    #[test]
    fn only_the_first_send_of_a_callback_round_creates_without_looking() {
        assert!(!may_exist_already(1, 1), "the round's first send");
        assert!(may_exist_already(2, 1), "this row sent again (a retry, a take-over)");
        assert!(may_exist_already(1, 2), "the journey's next effort after the dispatcher gave up");
        assert!(may_exist_already(MAX_ATTEMPTS, 3));
    }
}
