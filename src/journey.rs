//! The journey: one inbound call's whole lifecycle as a pure state machine.
//!
//! NOT WIRED IN YET. The handlers and the store still run the implicit
//! lifecycle described in ARCHITECTURE.md; the next step routes every event
//! through [`apply`] (see "Wiring" below).
//!
//! A journey holds the caller's leg, the task, every reservation of that task
//! with its dial attempts and the location legs they placed, and the outcome.
//! [`apply`] takes the journey, one [`Event`] and the time, and returns the
//! new journey and a [`Step`]: the [`Command`]s we owe Twilio (they go to the
//! outbox in the same transaction as the journey) and, for a webhook that
//! needs TwiML, the [`Answer`] the handler renders. No IO happens here.
//!
//! The machine is level-triggered: an event first updates what is known (each
//! fact only moves forward: call statuses by `SequenceNumber` and rank,
//! reservations and tasks towards their final states, the first final outcome
//! wins), then [`Journey::drive`] derives what is owed from the whole state.
//! So a duplicate, a reordered or a late event, or a reconciler's observation
//! of the same fact, lands on the same state and owes nothing new; and a
//! journey can start at any event (a Studio flow that enqueues without our
//! `/incoming-call` starts at `reservation.created`).
//!
//! # Rules (each one a defect of issue 8)
//! - Every failure branch acts on what the journey knows, with or without an
//!   `/incoming-call`: the caller's SID comes from the task's attributes too.
//! - A reservation that ended owes no dial: an attempt still in the outbox is
//!   withdrawn, and a leg placed for it is hung up as soon as it is known
//!   (from the dial's result, its status callback or a Calls list). A
//!   `reservation.created` after that reservation's end dials nothing.
//! - A dial waits while another leg of this caller may still ring (a dial in
//!   flight or unknown, or a leg being hung up, for at most [`HANDOFF_MS`]),
//!   so two legs never ring one location for one caller.
//! - Status callbacks apply to their own leg only, in `SequenceNumber` order;
//!   the caller's hang-up stops every live leg, whichever is current.
//! - `max_queue_secs` at `/hold` does not cut a leg that was just answered:
//!   the caller holds [`ANSWERED_GRACE_SECS`] longer while the bridge is made.
//! - Creating a call is at most once per attempt. After a 5xx, a timeout or a
//!   reset the attempt is `unknown`: the journey waits for the leg's own
//!   callbacks, then asks for a Calls list ([`Command::FindDial`]), and dials
//!   again only when the call is proven absent and the reservation is still
//!   pending. A refusal (4xx) is definite and is re-dialled too, up to
//!   [`Policy::max_dial_attempts`]; only then is the caller sent to voicemail.
//! - A command the dispatcher gives up on comes back as
//!   [`Event::ActionFailed`]; the journey is then [`Journey::degraded`] and
//!   sends it again after a back-off while it is still needed. A failed
//!   redirect also makes the next `/hold` answer `<Leave>`, which reaches the
//!   caller without the REST API.
//!
//! # Wiring (the next step)
//! A `journeys` table (the JSON of [`Journey`], a version for optimistic
//! updates, [`Journey::wake_at`], closed or not) indexed by the caller's SID,
//! the task's SID and every reservation and leg SID ([`Journey::keys`]); each
//! handler parses its request into an [`Event`], loads or creates the journey
//! by those keys, applies, and writes the journey and its commands in one
//! transaction; a scheduler sends [`Event::Tick`] at `wake_at`; the dispatcher
//! reports results as events; the dial's URLs carry `attempt`.

mod event;
#[cfg(test)]
mod invariants;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod world;

pub use event::{
    AnsweredBy, CallStatus, DialTarget, Event, QueueResult, ReservationEnd, ReservationStatus, TaskStatus,
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use twilio::E164;
use twilio::sid::{CallSid, ReservationSid, TaskSid};

use crate::config::{AnsweredByPolicy, Settings};
use crate::domain::Outcome;

/// How long after an unknown dial the journey first asks for a Calls list:
/// time for the leg's `initiated` status callback, which names the
/// reservation, to arrive by itself.
pub const LOOKUP_AFTER_MS: i64 = 5_000;
/// Between two Calls lists for one unknown dial.
pub const LOOKUP_EVERY_MS: i64 = 15_000;
/// Calls lists per unknown dial. After them the attempt stays unknown: it is
/// never re-sent, and the reservation's timeout bounds the caller's wait.
pub const MAX_LOOKUPS: u32 = 4;
/// How long a new dial waits for a leg being hung up to report its end.
pub const HANDOFF_MS: i64 = 5_000;
/// How long the outcome of a caller who hung up while a leg was being bridged
/// waits for evidence of the bridge (`reservation.accepted`, a wrap-up).
pub const BRIDGE_EVIDENCE_MS: i64 = 30_000;
/// How long `/hold` keeps a caller holding while the REST redirect to
/// voicemail is on its way; after that it answers `<Leave>`.
pub const REDIRECT_GRACE_MS: i64 = 15_000;
/// Extra queue time for a caller whose location leg has answered.
pub const ANSWERED_GRACE_SECS: u32 = 60;
/// The first back-off after a command failed for good; it doubles, up to [`RETRY_MAX_MS`].
pub const RETRY_FIRST_MS: i64 = 30_000;
pub const RETRY_MAX_MS: i64 = 600_000;
/// Create requests per reservation unless configured.
pub const DEFAULT_DIAL_ATTEMPTS: u32 = 3;

/// The settings the machine decides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_queue_secs: u32,
    pub on_machine: AnsweredByPolicy,
    pub on_unknown: AnsweredByPolicy,
    /// Create requests per reservation, the first included. Only an attempt
    /// that certainly made no call is followed by another.
    pub max_dial_attempts: u32,
}

impl Policy {
    pub fn from_settings(settings: &Settings) -> Self {
        Policy {
            max_queue_secs: settings.ivr.max_queue_secs,
            on_machine: settings.dialing.on_machine,
            on_unknown: settings.dialing.on_unknown,
            max_dial_attempts: DEFAULT_DIAL_ATTEMPTS,
        }
    }

    fn for_answer(&self, answered_by: AnsweredBy) -> AnsweredByPolicy {
        match answered_by {
            AnsweredBy::Human => AnsweredByPolicy::Bridge,
            AnsweredBy::Machine => self.on_machine,
            AnsweredBy::Unknown => self.on_unknown,
        }
    }
}

/// One inbound call's lifecycle. Serialisable, so the store can keep it
/// between events (and a restart between any two events loses nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    caller: Caller,
    location: Option<String>,
    task: Option<Task>,
    reservations: Vec<Reservation>,
    outcome: Outcome,
    /// The caller hung up while a leg was being bridged: without evidence of
    /// the bridge by then, the outcome is `caller_hung_up`.
    settle_by_ms: Option<i64>,
    redirect: Option<Effort>,
}

impl Default for Journey {
    fn default() -> Self {
        Journey {
            caller: Caller::default(),
            location: None,
            task: None,
            reservations: Vec::new(),
            outcome: Outcome::Pending,
            settle_by_ms: None,
            redirect: None,
        }
    }
}

/// Where the caller's leg is, as far as the journey knows. Only moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerState {
    /// Not heard from (the journey began at a TaskRouter event).
    #[default]
    Unseen,
    /// At the greeting or the menu.
    Ivr,
    /// In the queue, waiting for a location.
    Queued,
    /// Connected to a location leg.
    Bridged,
    /// Out of the queue and still on the line: voicemail or a message.
    Diverted,
    /// The caller's leg has ended.
    Gone,
}

impl CallerState {
    fn rank(self) -> u8 {
        match self {
            CallerState::Unseen => 0,
            CallerState::Ivr => 1,
            CallerState::Queued => 2,
            CallerState::Bridged | CallerState::Diverted => 3,
            CallerState::Gone => 4,
        }
    }

    /// May still be in the queue, waiting for a location.
    pub fn waiting(self) -> bool {
        self.rank() <= 2
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Caller {
    sid: Option<CallSid>,
    state: CallerState,
    reported: Reported,
}

impl Caller {
    fn advance(&mut self, to: CallerState) {
        if to.rank() > self.state.rank() {
            self.state = to;
        }
    }
}

/// A leg's status as reported: forward only, in `SequenceNumber` order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Reported {
    status: Option<CallStatus>,
    sequence: Option<u32>,
}

impl Reported {
    /// Applies a report unless it is stale: an older `SequenceNumber`, or a
    /// status that is not further along (a final status is never replaced).
    /// Returns whether it changed anything.
    fn apply(&mut self, status: CallStatus, sequence: Option<u32>) -> bool {
        if let (Some(seen), Some(new)) = (self.sequence, sequence)
            && new <= seen
        {
            return false;
        }
        if self.status.is_some_and(|cur| cur.is_final() || status.rank() <= cur.rank()) {
            return false;
        }
        self.status = Some(status);
        self.sequence = sequence.max(self.sequence);
        true
    }

    fn is_live(&self) -> bool {
        !self.status.is_some_and(CallStatus::is_final)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Task {
    sid: TaskSid,
    status: TaskStatus,
    ending: Option<Ending>,
}

impl Task {
    /// Final statuses stay; an assigned task never goes back to pending.
    fn set_status(&mut self, to: TaskStatus) {
        use TaskStatus::*;
        let keep = self.status.is_final()
            || matches!((self.status, to), (Assigned | Wrapping, Pending | Reserved) | (Wrapping, Assigned));
        if !keep {
            self.status = to;
        }
    }
}

/// How we end a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEnd {
    Cancel,
    Complete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ending {
    end: TaskEnd,
    effort: Effort,
}

/// A command we sent, and whether the dispatcher gave up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Effort {
    /// The round of the command: its key carries it from the second on.
    round: u32,
    at_ms: i64,
    failed: bool,
}

impl Effort {
    fn first(now: i64) -> Self {
        Effort { round: 1, at_ms: now, failed: false }
    }

    fn retry_at(&self) -> Option<i64> {
        let backoff = (RETRY_FIRST_MS << self.round.saturating_sub(1).min(5)).min(RETRY_MAX_MS);
        self.failed.then(|| self.at_ms.saturating_add(backoff))
    }

    fn due(&self, now: i64) -> bool {
        self.retry_at().is_some_and(|t| now >= t)
    }

    fn again(&mut self, now: i64) {
        *self = Effort { round: self.round + 1, at_ms: now, failed: false };
    }

    fn fail(&mut self, round: u32, now: i64) {
        if self.round == round && !self.failed {
            self.failed = true;
            self.at_ms = now;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reservation {
    sid: ReservationSid,
    /// From `reservation.created`; without it there is nothing to dial.
    target: Option<DialTarget>,
    status: ResState,
    attempts: Vec<Attempt>,
    legs: Vec<Leg>,
}

/// A reservation as the journey knows it. Only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum ResState {
    Pending,
    Accepted,
    Wrapping,
    Completed,
    Ended { why: ReservationEnd },
}

impl ResState {
    fn rank(self) -> u8 {
        match self {
            ResState::Pending => 0,
            ResState::Accepted => 1,
            ResState::Wrapping => 2,
            ResState::Completed | ResState::Ended { .. } => 3,
        }
    }

    fn is_final(self) -> bool {
        self.rank() == 3
    }

    /// A worker took it: the call was bridged.
    fn took(self) -> bool {
        matches!(self, ResState::Accepted | ResState::Wrapping | ResState::Completed)
    }
}

/// One create request for a reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Attempt {
    n: u32,
    sent_ms: i64,
    state: AttemptState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum AttemptState {
    /// In the outbox or on the wire.
    InFlight {
        withdrawn: bool,
    },
    /// The answer was lost: a call may exist.
    Unknown {
        next_lookup_ms: i64,
        lookups: u32,
    },
    Placed {
        leg: CallSid,
    },
    /// Certainly no call.
    NotPlaced,
}

impl AttemptState {
    fn unresolved(&self) -> bool {
        matches!(self, AttemptState::InFlight { .. } | AttemptState::Unknown { .. })
    }
}

/// A location leg placed for a reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Leg {
    sid: CallSid,
    attempt: Option<u32>,
    reported: Reported,
    answered_by: Option<AnsweredBy>,
    /// `/dial-queue` answered it with the bridge.
    bridging: bool,
    stop: Option<Stop>,
}

/// We want this leg gone: refused at `/dial-queue` (its TwiML hangs up) or
/// hung up over the REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stop {
    since_ms: i64,
    /// [`HANDOFF_MS`] passed: it no longer holds back the next dial.
    handed_off: bool,
    hang_up: Option<Effort>,
}

impl Reservation {
    fn new(sid: ReservationSid) -> Self {
        Reservation { sid, target: None, status: ResState::Pending, attempts: Vec::new(), legs: Vec::new() }
    }

    fn advance(&mut self, to: ResState) {
        if !self.status.is_final() && to.rank() > self.status.rank() {
            self.status = to;
        }
    }

    /// TaskRouter takes back only a pending reservation.
    fn end(&mut self, why: ReservationEnd) {
        if self.status == ResState::Pending {
            self.status = ResState::Ended { why };
        }
    }

    fn attempt_mut(&mut self, n: u32) -> Option<&mut Attempt> {
        self.attempts.iter_mut().find(|a| a.n == n)
    }

    /// The leg of the latest attempt; any other leg is a stray.
    fn current_leg(&self) -> Option<&CallSid> {
        match &self.attempts.last()?.state {
            AttemptState::Placed { leg } => Some(leg),
            _ => None,
        }
    }

    /// Records that `sid` is a leg of this reservation (of `attempt`, or of the
    /// latest when the URL did not say), resolving that attempt if it was in
    /// doubt. Returns the leg's index.
    fn note_leg(&mut self, sid: CallSid, attempt: Option<u32>) -> usize {
        let n = attempt.or_else(|| self.attempts.last().map(|a| a.n));
        if let Some(a) = n.and_then(|n| self.attempt_mut(n))
            && matches!(a.state, AttemptState::InFlight { .. } | AttemptState::Unknown { .. } | AttemptState::NotPlaced)
        {
            a.state = AttemptState::Placed { leg: sid.clone() };
        }
        match self.legs.iter().position(|l| l.sid == sid) {
            Some(i) => i,
            None => {
                self.legs.push(Leg {
                    sid,
                    attempt: n,
                    reported: Reported::default(),
                    answered_by: None,
                    bridging: false,
                    stop: None,
                });
                self.legs.len() - 1
            }
        }
    }
}

/// What we owe Twilio (or the reconciler). The store turns each into an
/// outbox row keyed by [`Command::key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Create the location's leg. Never re-sent by the dispatcher: its result
    /// comes back as `DialPlaced`, `DialFailed` or `DialUnknown`.
    Dial {
        reservation: ReservationSid,
        task: TaskSid,
        attempt: u32,
        caller: Option<CallSid>,
        target: DialTarget,
    },
    /// Drop that dial from the outbox if it has not been sent; the dispatcher
    /// answers `DialFailed` then, else the dial's own result follows.
    WithdrawDial {
        reservation: ReservationSid,
        attempt: u32,
    },
    /// Ask the reconciler whether that attempt created a call (a Calls list
    /// by `To` and `StartTime` after `placed_after_ms`); it answers `LegSeen`
    /// or `DialAbsent`.
    FindDial {
        reservation: ReservationSid,
        attempt: u32,
        lookup: u32,
        to: E164,
        placed_after_ms: i64,
    },
    /// End a location leg (`Status=completed`).
    HangUp {
        leg: CallSid,
        round: u32,
    },
    /// Take the waiting caller out of the queue to the fallback for `reason`.
    RedirectCaller {
        call: CallSid,
        location: Option<String>,
        reason: Outcome,
        round: u32,
    },
    CancelTask {
        task: TaskSid,
        reason: Outcome,
        round: u32,
    },
    CompleteTask {
        task: TaskSid,
        round: u32,
    },
}

impl Command {
    /// The outbox's dedupe key. First rounds keep the keys the handlers use
    /// today (`dial:WR…`, `hang-up:CA…`), so both can share one outbox.
    pub fn key(&self) -> String {
        fn keyed(base: String, round: u32) -> String {
            if round <= 1 { base } else { format!("{base}#{round}") }
        }
        match self {
            Command::Dial { reservation, attempt, .. } => keyed(format!("dial:{reservation}"), *attempt),
            Command::WithdrawDial { reservation, attempt } => format!("withdraw:{reservation}#{attempt}"),
            Command::FindDial { reservation, attempt, lookup, .. } => {
                format!("find-dial:{reservation}#{attempt}.{lookup}")
            }
            Command::HangUp { leg, round } => keyed(format!("hang-up:{leg}"), *round),
            Command::RedirectCaller { call, round, .. } => keyed(format!("redirect:{call}"), *round),
            Command::CancelTask { task, round, .. } => keyed(format!("cancel-task:{task}"), *round),
            Command::CompleteTask { task, round } => keyed(format!("complete-task:{task}"), *round),
        }
    }
}

/// The TwiML decision for a webhook that needs one; handlers only render it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Answer {
    /// No decision: TaskRouter events (204), status callbacks (empty TwiML),
    /// and events that are not webhooks.
    #[default]
    Nothing,
    /// `/hold`: hold music.
    Hold,
    /// `/hold`: `<Leave>`; `/enqueue-action` follows with `QueueResult=leave`.
    Leave,
    /// `/dial-queue`: `<Dial><Queue reservationSid>`.
    Bridge { reservation: ReservationSid },
    /// `/dial-queue`: hang up the location's leg, first telling a person that
    /// the caller is gone when `caller_gone`.
    Refuse { caller_gone: bool },
    /// `/enqueue-action` after a bridge.
    Goodbye,
    /// `/enqueue-action` with the caller still on the line: voicemail.
    Fallback { location: Option<String>, reason: Outcome },
}

/// What one event leads to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    pub answer: Answer,
    pub commands: Vec<Command>,
}

struct Cx<'a> {
    now: i64,
    policy: &'a Policy,
    commands: Vec<Command>,
}

/// Applies one event at `now`. Pure: the same journey, event, time and policy
/// always give the same result.
pub fn apply(mut journey: Journey, event: Event, now: Timestamp, policy: &Policy) -> (Journey, Step) {
    let mut cx = Cx { now: now.as_millisecond(), policy, commands: Vec::new() };
    let answer = journey.on_event(event, &mut cx);
    journey.drive(&mut cx);
    (journey, Step { answer, commands: cx.commands })
}

impl Journey {
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    pub fn caller_state(&self) -> CallerState {
        self.caller.state
    }

    pub fn caller_sid(&self) -> Option<&CallSid> {
        self.caller.sid.as_ref()
    }

    pub fn task_sid(&self) -> Option<&TaskSid> {
        self.task.as_ref().map(|t| &t.sid)
    }

    /// Every SID that routes an event to this journey: the caller's, the task's,
    /// and each reservation's and location leg's.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.caller.sid.iter().map(|s| s.to_string()).collect();
        keys.extend(self.task.iter().map(|t| t.sid.to_string()));
        for r in &self.reservations {
            keys.push(r.sid.to_string());
            keys.extend(r.legs.iter().map(|l| l.sid.to_string()));
        }
        keys
    }

    /// When the journey wants an [`Event::Tick`]: the earliest deadline still
    /// ahead (a lookup, a hand-off, a retry, a deferred outcome). After a tick
    /// at or past it, the next one is later.
    pub fn wake_at(&self) -> Option<Timestamp> {
        let mut at: Vec<i64> = Vec::new();
        if !self.outcome.is_final() {
            at.extend(self.settle_by_ms);
        }
        for r in &self.reservations {
            if let Some(Attempt { state: AttemptState::Unknown { next_lookup_ms, lookups }, .. }) = r.attempts.last()
                && *lookups < MAX_LOOKUPS
            {
                at.push(*next_lookup_ms);
            }
            for leg in r.legs.iter().filter(|l| l.reported.is_live()) {
                if let Some(stop) = &leg.stop {
                    if !stop.handed_off {
                        at.push(stop.since_ms.saturating_add(HANDOFF_MS));
                    }
                    at.extend(stop.hang_up.and_then(|e| e.retry_at()));
                }
            }
        }
        if self.redirect_needed().is_some() {
            at.extend(self.redirect.and_then(|e| e.retry_at()));
        }
        if let (Some(want), Some(Task { ending: Some(e), .. })) = (self.task_end_wanted(), &self.task)
            && e.end == want
        {
            at.extend(e.effort.retry_at());
        }
        at.into_iter().min().and_then(|ms| Timestamp::from_millisecond(ms).ok())
    }

    /// A command the dispatcher gave up on is still owed (for `/healthz`).
    pub fn degraded(&self) -> bool {
        let legs = self.reservations.iter().flat_map(|r| &r.legs);
        let leg_failed = legs
            .filter(|l| l.reported.is_live())
            .any(|l| l.stop.as_ref().and_then(|s| s.hang_up).is_some_and(|e| e.failed));
        let redirect_failed = self.redirect_needed().is_some() && self.redirect.is_some_and(|e| e.failed);
        let task_failed = match (self.task_end_wanted(), &self.task) {
            (Some(want), Some(Task { ending: Some(e), .. })) => e.end == want && e.effort.failed,
            _ => false,
        };
        leg_failed || redirect_failed || task_failed
    }

    /// Nothing more is expected: the outcome is final, the task and every
    /// reservation have ended, no leg is live and no dial is in doubt.
    pub fn is_closed(&self) -> bool {
        self.outcome.is_final()
            && self.settle_by_ms.is_none()
            && self.task.as_ref().is_none_or(|t| t.status.is_final())
            && self.reservations.iter().all(|r| {
                r.status.is_final()
                    && r.legs.iter().all(|l| !l.reported.is_live())
                    && r.attempts.iter().all(|a| match a.state {
                        AttemptState::InFlight { .. } => false,
                        AttemptState::Unknown { lookups, .. } => lookups >= MAX_LOOKUPS,
                        _ => true,
                    })
            })
    }

    // -- facts ----------------------------------------------------------------

    fn on_event(&mut self, event: Event, cx: &mut Cx) -> Answer {
        let now = cx.now;
        match event {
            Event::CallerArrived { call } => {
                self.caller.sid.get_or_insert(call);
                self.caller.advance(CallerState::Ivr);
            }
            Event::CallerEnqueued { location } => {
                self.location.get_or_insert(location);
                self.caller.advance(CallerState::Queued);
            }
            Event::CallerTurnedAway { outcome } => {
                self.settle(outcome);
                self.caller.advance(CallerState::Diverted);
            }
            Event::Hold { queue_time_secs } => return self.on_hold(queue_time_secs, cx),
            Event::QueueExit { result } => return self.on_queue_exit(result),
            Event::CallerStatus { status, sequence } => self.on_caller_status(status, sequence, now),
            Event::CallerSeen { status } => self.on_caller_status(status, None, now),
            Event::LegAnswered { reservation, attempt, leg, answered_by } => {
                return self.on_leg_answered(reservation, attempt, leg, answered_by, cx);
            }
            Event::LegStatus { reservation, attempt, leg, status, sequence } => {
                self.on_leg_status(reservation, attempt, leg, status, sequence);
            }
            Event::LegSeen { reservation, attempt, leg, status } => {
                self.on_leg_status(reservation, attempt, leg, status, None);
            }
            Event::ReservationCreated { task, reservation, caller, target } => {
                if self.owns_task(&task, Some(TaskStatus::Reserved)) {
                    if self.caller.sid.is_none() {
                        self.caller.sid = caller;
                    }
                    self.caller.advance(CallerState::Queued);
                    self.location.get_or_insert_with(|| target.location.clone());
                    self.reservation(reservation).target.get_or_insert(target);
                }
            }
            Event::ReservationAccepted { task, reservation } => {
                if self.owns_task(&task, Some(TaskStatus::Assigned)) {
                    self.accepted(reservation);
                }
            }
            Event::ReservationEnded { task, reservation, why } => {
                if self.owns_task(&task, Some(TaskStatus::Pending)) {
                    self.reservation(reservation).end(why);
                }
            }
            // A reservation completes with its task; completing it again is harmless,
            // so the task counts as wrapping until TaskRouter says it completed.
            Event::ReservationCompleted { task, reservation } => {
                if self.owns_task(&task, Some(TaskStatus::Wrapping)) {
                    self.reservation(reservation).advance(ResState::Completed);
                }
            }
            Event::Wrapup { task, reservation } => {
                if self.owns_task(&task, Some(TaskStatus::Wrapping)) {
                    self.wrapped_up(reservation);
                }
            }
            Event::TaskCanceled { task } => {
                if self.owns_task(&task, Some(TaskStatus::Canceled)) {
                    self.task_canceled();
                }
            }
            Event::TaskCompleted { task } => {
                if self.owns_task(&task, Some(TaskStatus::Completed)) {
                    self.task_completed();
                }
            }
            Event::TaskSeen { task, status } => {
                if self.owns_task(&task, Some(status)) {
                    match status {
                        TaskStatus::Pending | TaskStatus::Reserved => {}
                        TaskStatus::Assigned | TaskStatus::Wrapping => {
                            self.settle(Outcome::Connected);
                        }
                        TaskStatus::Completed => self.task_completed(),
                        TaskStatus::Canceled => self.task_canceled(),
                    }
                }
            }
            Event::ReservationSeen { task, reservation, status } => {
                if self.owns_task(&task, None) {
                    self.reservation_seen(reservation, status);
                }
            }
            Event::DialPlaced { reservation, attempt, leg } => {
                self.reservation(reservation).note_leg(leg, Some(attempt));
            }
            Event::DialFailed { reservation, attempt } | Event::DialAbsent { reservation, attempt } => {
                if let Some(a) = self.reservation(reservation).attempt_mut(attempt)
                    && a.state.unresolved()
                {
                    a.state = AttemptState::NotPlaced;
                }
            }
            Event::DialUnknown { reservation, attempt } => self.dial_unknown(reservation, attempt, now),
            Event::ActionFailed { command } => self.action_failed(command, now),
            Event::Tick => {}
        }
        Answer::Nothing
    }

    /// Whether a TaskRouter event about `task` is this journey's; the first
    /// task seen is adopted (one task per journey). `implied` is the task's
    /// status the event implies, if any.
    fn owns_task(&mut self, task: &TaskSid, implied: Option<TaskStatus>) -> bool {
        match &mut self.task {
            Some(t) if t.sid == *task => {
                // A reservation's end puts a reserved task back to pending only.
                if let Some(to) = implied
                    && (to != TaskStatus::Pending || t.status == TaskStatus::Reserved)
                {
                    t.set_status(to);
                }
                true
            }
            Some(_) => false,
            None => {
                let status = implied.unwrap_or(TaskStatus::Reserved);
                self.task = Some(Task { sid: task.clone(), status, ending: None });
                true
            }
        }
    }

    fn reservation(&mut self, sid: ReservationSid) -> &mut Reservation {
        let i = match self.reservations.iter().position(|r| r.sid == sid) {
            Some(i) => i,
            None => {
                self.reservations.push(Reservation::new(sid));
                self.reservations.len() - 1
            }
        };
        &mut self.reservations[i]
    }

    /// The first final outcome wins.
    fn settle(&mut self, outcome: Outcome) {
        if !self.outcome.is_final() && outcome.is_final() {
            self.outcome = outcome;
            self.settle_by_ms = None;
        }
    }

    fn on_hold(&mut self, queue_time_secs: u32, cx: &mut Cx) -> Answer {
        self.caller.advance(CallerState::Queued);
        match (self.caller.state, self.outcome) {
            (CallerState::Gone | CallerState::Diverted, _) => Answer::Leave,
            (CallerState::Bridged, _) | (_, Outcome::Connected) => Answer::Hold,
            (_, Outcome::Pending) => {
                let max = cx.policy.max_queue_secs;
                let grace = self.location_answered() && queue_time_secs < max.saturating_add(ANSWERED_GRACE_SECS);
                if queue_time_secs >= max && !grace {
                    self.settle(Outcome::QueueTimeout);
                    self.caller.advance(CallerState::Diverted);
                    Answer::Leave
                } else {
                    Answer::Hold
                }
            }
            // Settled while queued (busy, no answer …): the redirect to
            // voicemail is on its way, unless it failed or is overdue.
            (_, _) => {
                let overdue = self.redirect.is_none_or(|e| e.failed || cx.now - e.at_ms >= REDIRECT_GRACE_MS);
                if overdue {
                    self.caller.advance(CallerState::Diverted);
                    Answer::Leave
                } else {
                    Answer::Hold
                }
            }
        }
    }

    /// A leg answered (AMD running, or told to bridge) and not being stopped.
    fn location_answered(&self) -> bool {
        self.reservations.iter().flat_map(|r| &r.legs).any(|l| {
            l.reported.is_live()
                && l.stop.is_none()
                && (l.bridging || l.reported.status == Some(CallStatus::InProgress))
        })
    }

    fn on_queue_exit(&mut self, result: QueueResult) -> Answer {
        match result {
            QueueResult::Bridged | QueueResult::RedirectedFromBridged => {
                if self.caller.state != CallerState::Gone {
                    self.caller.state = CallerState::Bridged;
                }
                self.settle(Outcome::Connected);
                Answer::Goodbye
            }
            QueueResult::Hangup | QueueResult::BridgingInProcess => {
                self.caller.advance(CallerState::Gone);
                self.settle(Outcome::CallerHungUp);
                Answer::Nothing
            }
            QueueResult::Leave
            | QueueResult::Redirected
            | QueueResult::QueueFull
            | QueueResult::Error
            | QueueResult::SystemError => {
                self.caller.advance(CallerState::Diverted);
                self.settle(Outcome::DialFailed);
                Answer::Fallback { location: self.location.clone(), reason: self.outcome }
            }
        }
    }

    fn on_caller_status(&mut self, status: CallStatus, sequence: Option<u32>, now: i64) {
        if !self.caller.reported.apply(status, sequence) || !status.is_final() {
            return;
        }
        self.caller.advance(CallerState::Gone);
        if self.outcome.is_final() {
            return;
        }
        // The caller's `completed` can overtake the evidence of a bridge.
        let bridging = self.reservations.iter().flat_map(|r| &r.legs).any(|l| l.bridging);
        if bridging {
            self.settle_by_ms.get_or_insert(now.saturating_add(BRIDGE_EVIDENCE_MS));
        } else {
            self.settle(Outcome::CallerHungUp);
        }
    }

    fn on_leg_answered(
        &mut self,
        reservation: ReservationSid,
        attempt: Option<u32>,
        leg: CallSid,
        answered_by: AnsweredBy,
        cx: &mut Cx,
    ) -> Answer {
        let now = cx.now;
        let caller = self.caller.state;
        let caller_waits = caller.waiting() && self.outcome == Outcome::Pending;
        let wants_bridge = cx.policy.for_answer(answered_by) == AnsweredByPolicy::Bridge;
        let r = self.reservation(reservation.clone());
        let i = r.note_leg(leg, attempt);
        let current = r.current_leg() == Some(&r.legs[i].sid);
        let status = r.status;
        let l = &mut r.legs[i];
        l.reported.apply(CallStatus::InProgress, None);
        l.answered_by = Some(answered_by);
        let refuse = |l: &mut Leg, caller_gone: bool| {
            l.stop.get_or_insert(Stop { since_ms: now, handed_off: false, hang_up: None });
            Answer::Refuse { caller_gone }
        };
        match (current, status) {
            // A repeated `/dial-queue` (Twilio retried): the same answer, while it holds.
            (true, ResState::Pending | ResState::Accepted)
                if l.bridging && (caller.waiting() || caller == CallerState::Bridged) =>
            {
                Answer::Bridge { reservation }
            }
            // A stray leg, or a reservation TaskRouter took back: the bridge would fail (14217).
            (false, _)
            | (_, ResState::Accepted | ResState::Wrapping | ResState::Completed | ResState::Ended { .. }) => {
                refuse(l, false)
            }
            (true, ResState::Pending) if !caller_waits => refuse(l, answered_by == AnsweredBy::Human),
            (true, ResState::Pending) if wants_bridge => {
                l.bridging = true;
                Answer::Bridge { reservation }
            }
            (true, ResState::Pending) => {
                let answer = refuse(l, false);
                self.settle(Outcome::LocationVoicemail);
                answer
            }
        }
    }

    fn on_leg_status(
        &mut self,
        reservation: ReservationSid,
        attempt: Option<u32>,
        leg: CallSid,
        status: CallStatus,
        sequence: Option<u32>,
    ) {
        let caller_waits = self.caller.state.waiting() && self.outcome == Outcome::Pending;
        let r = self.reservation(reservation);
        let i = r.note_leg(leg, attempt);
        let current = r.current_leg() == Some(&r.legs[i].sid);
        let changed = r.legs[i].reported.apply(status, sequence);
        // Only the end of the current leg of a live reservation speaks for the caller.
        if !(changed && current && r.status == ResState::Pending && caller_waits) {
            return;
        }
        match status {
            CallStatus::Busy => self.settle(Outcome::LocationBusy),
            CallStatus::NoAnswer => self.settle(Outcome::LocationNoAnswer),
            CallStatus::Failed => self.settle(Outcome::DialFailed),
            // Completed or canceled without a bridge: the reservation times out and
            // TaskRouter offers the task again.
            _ => {}
        }
    }

    fn accepted(&mut self, reservation: ReservationSid) {
        self.reservation(reservation).advance(ResState::Accepted);
        if let Some(t) = &mut self.task {
            t.set_status(TaskStatus::Assigned);
        }
        self.caller.advance(CallerState::Bridged);
        self.settle(Outcome::Connected);
    }

    fn wrapped_up(&mut self, reservation: Option<ReservationSid>) {
        if let Some(t) = &mut self.task {
            t.set_status(TaskStatus::Wrapping);
        }
        match reservation {
            Some(sid) => self.reservation(sid).advance(ResState::Wrapping),
            None => {
                for r in self.reservations.iter_mut().filter(|r| r.status == ResState::Accepted) {
                    r.advance(ResState::Wrapping);
                }
            }
        }
        self.settle(Outcome::Connected);
    }

    /// TaskRouter cancels the task of a caller who left the queue, and with it
    /// any pending reservation. Unless we settled first, the caller hung up.
    fn task_canceled(&mut self) {
        for r in &mut self.reservations {
            r.end(ReservationEnd::Canceled);
        }
        self.settle(Outcome::CallerHungUp);
    }

    /// Only an assigned task can be completed: someone took the call.
    fn task_completed(&mut self) {
        for r in &mut self.reservations {
            r.end(ReservationEnd::Canceled);
            r.advance(ResState::Completed);
        }
        self.settle(Outcome::Connected);
    }

    fn reservation_seen(&mut self, sid: ReservationSid, status: ReservationStatus) {
        match status {
            // Known, or a bare entry: without `reservation.created`'s target it is not dialled.
            ReservationStatus::Pending => {
                self.reservation(sid);
            }
            ReservationStatus::Accepted => self.accepted(sid),
            ReservationStatus::Wrapping => self.wrapped_up(Some(sid)),
            ReservationStatus::Completed => self.reservation(sid).advance(ResState::Completed),
            ReservationStatus::Timeout => self.reservation(sid).end(ReservationEnd::Timeout),
            ReservationStatus::Canceled => self.reservation(sid).end(ReservationEnd::Canceled),
            ReservationStatus::Rescinded => self.reservation(sid).end(ReservationEnd::Rescinded),
            ReservationStatus::Rejected => self.reservation(sid).end(ReservationEnd::Rejected),
        }
    }

    fn dial_unknown(&mut self, reservation: ReservationSid, attempt: u32, now: i64) {
        if let Some(a) = self.reservation(reservation).attempt_mut(attempt)
            && matches!(a.state, AttemptState::InFlight { .. })
        {
            a.state = AttemptState::Unknown { next_lookup_ms: now.saturating_add(LOOKUP_AFTER_MS), lookups: 0 };
        }
    }

    fn action_failed(&mut self, command: Command, now: i64) {
        match command {
            // Whatever stopped the dispatcher, a call may exist: at most once.
            Command::Dial { reservation, attempt, .. } => self.dial_unknown(reservation, attempt, now),
            Command::HangUp { leg, round } => {
                let legs = self.reservations.iter_mut().flat_map(|r| &mut r.legs);
                for l in legs.filter(|l| l.sid == leg) {
                    if let Some(e) = l.stop.as_mut().and_then(|s| s.hang_up.as_mut()) {
                        e.fail(round, now);
                    }
                }
            }
            Command::RedirectCaller { round, .. } => {
                if let Some(e) = &mut self.redirect {
                    e.fail(round, now);
                }
            }
            Command::CancelTask { task, round, .. } => self.task_end_failed(&task, TaskEnd::Cancel, round, now),
            Command::CompleteTask { task, round } => self.task_end_failed(&task, TaskEnd::Complete, round, now),
            // The dial's own result follows a withdrawal; lookups go on by time.
            Command::WithdrawDial { .. } | Command::FindDial { .. } => {}
        }
    }

    fn task_end_failed(&mut self, task: &TaskSid, end: TaskEnd, round: u32, now: i64) {
        if let Some(Task { sid, ending: Some(e), .. }) = &mut self.task
            && sid == task
            && e.end == end
        {
            e.effort.fail(round, now);
        }
    }

    // -- what is owed -----------------------------------------------------------

    /// Derives the commands the state owes, after every event.
    fn drive(&mut self, cx: &mut Cx) {
        let now = cx.now;
        if let Some(t) = self.settle_by_ms {
            if self.outcome.is_final() {
                self.settle_by_ms = None;
            } else if now >= t {
                self.settle(Outcome::CallerHungUp);
            }
        }
        for stop in self.reservations.iter_mut().flat_map(|r| &mut r.legs).filter_map(|l| l.stop.as_mut()) {
            if !stop.handed_off && now >= stop.since_ms.saturating_add(HANDOFF_MS) {
                stop.handed_off = true;
            }
        }
        for i in 0..self.reservations.len() {
            self.drive_dial(i, cx);
        }
        self.drive_legs(cx);
        self.drive_redirect(cx);
        self.drive_task(cx);
    }

    /// Dial, withdraw, look up or give up, for one reservation.
    fn drive_dial(&mut self, i: usize, cx: &mut Cx) {
        let now = cx.now;
        let may_dial = self.outcome == Outcome::Pending
            && self.caller.state.waiting()
            && self.task.as_ref().is_some_and(|t| !t.status.is_final());
        let blocked = self.dial_blocked(i);
        let (Some(task), caller) = (self.task.as_ref().map(|t| t.sid.clone()), self.caller.sid.clone()) else {
            return;
        };
        let max = cx.policy.max_dial_attempts.max(1);
        let r = &mut self.reservations[i];
        let wants = may_dial && r.status == ResState::Pending;
        let next = r.attempts.len() as u32 + 1;
        let mut give_up = false;
        match r.attempts.last_mut().map(|a| &mut a.state) {
            None | Some(AttemptState::NotPlaced) if wants => match &r.target {
                Some(_) if next > max => give_up = true,
                Some(target) if !blocked => {
                    let target = target.clone();
                    r.attempts.push(Attempt {
                        n: next,
                        sent_ms: now,
                        state: AttemptState::InFlight { withdrawn: false },
                    });
                    cx.commands.push(Command::Dial { reservation: r.sid.clone(), task, attempt: next, caller, target });
                }
                _ => {}
            },
            Some(AttemptState::InFlight { withdrawn }) if !wants && !*withdrawn => {
                *withdrawn = true;
                cx.commands.push(Command::WithdrawDial { reservation: r.sid.clone(), attempt: next - 1 });
            }
            Some(AttemptState::Unknown { next_lookup_ms, lookups })
                if *lookups < MAX_LOOKUPS && now >= *next_lookup_ms =>
            {
                *lookups += 1;
                *next_lookup_ms = now.saturating_add(LOOKUP_EVERY_MS);
                let lookup = *lookups;
                if let Some(a) = r.attempts.last()
                    && let Some(target) = &r.target
                {
                    cx.commands.push(Command::FindDial {
                        reservation: r.sid.clone(),
                        attempt: a.n,
                        lookup,
                        to: target.to.clone(),
                        placed_after_ms: a.sent_ms,
                    });
                }
            }
            _ => {}
        }
        if give_up {
            self.settle(Outcome::DialFailed);
        }
    }

    /// Another leg of this caller may be ringing: a dial in flight or in doubt
    /// (until its lookups run out), or a live leg not yet handed off.
    fn dial_blocked(&self, i: usize) -> bool {
        self.reservations.iter().enumerate().any(|(j, r)| {
            let dial_in_doubt = j != i
                && r.attempts.last().is_some_and(|a| match a.state {
                    AttemptState::InFlight { .. } => true,
                    AttemptState::Unknown { lookups, .. } => lookups < MAX_LOOKUPS,
                    _ => false,
                });
            let current = r.current_leg();
            let live_leg = r.legs.iter().any(|l| {
                l.reported.is_live()
                    && !(j == i && current == Some(&l.sid))
                    && l.stop.as_ref().is_none_or(|s| !s.handed_off)
            });
            dial_in_doubt || live_leg
        })
    }

    /// Hangs up every live leg nobody wants: of an ended reservation, a stray,
    /// or one ringing for a caller who is gone or settled elsewhere.
    fn drive_legs(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let caller_waits = self.caller.state.waiting() && self.outcome == Outcome::Pending;
        // Connected, perhaps with the accept missed: the current leg may be the
        // bridged one, and cutting it would cut the conversation.
        let in_call = self.outcome == Outcome::Connected && self.caller.state != CallerState::Gone;
        for r in &mut self.reservations {
            let current = r.current_leg().cloned();
            let status = r.status;
            for l in r.legs.iter_mut().filter(|l| l.reported.is_live()) {
                let is_current = current.as_ref() == Some(&l.sid);
                let keep = is_current
                    && match status {
                        ResState::Pending => caller_waits || in_call,
                        ResState::Accepted | ResState::Wrapping => true,
                        ResState::Completed | ResState::Ended { .. } => false,
                    };
                let round = match &mut l.stop {
                    None if !keep => {
                        l.stop = Some(Stop { since_ms: now, handed_off: false, hang_up: Some(Effort::first(now)) });
                        Some(1)
                    }
                    // Refused at `/dial-queue` and still live after the hand-off: its TwiML did not end it.
                    Some(s @ Stop { hang_up: None, handed_off: true, .. }) => {
                        s.hang_up = Some(Effort::first(now));
                        Some(1)
                    }
                    Some(Stop { hang_up: Some(e), .. }) if e.due(now) => {
                        e.again(now);
                        Some(e.round)
                    }
                    _ => None,
                };
                if let Some(round) = round {
                    cx.commands.push(Command::HangUp { leg: l.sid.clone(), round });
                }
            }
        }
    }

    /// The caller to redirect to voicemail: settled by a failure while still queued.
    fn redirect_needed(&self) -> Option<&CallSid> {
        let diverting = matches!(
            self.outcome,
            Outcome::LocationBusy | Outcome::LocationNoAnswer | Outcome::LocationVoicemail | Outcome::DialFailed
        );
        if diverting && self.caller.state.waiting() { self.caller.sid.as_ref() } else { None }
    }

    fn drive_redirect(&mut self, cx: &mut Cx) {
        let Some(call) = self.redirect_needed().cloned() else {
            return;
        };
        let round = match &mut self.redirect {
            None => {
                self.redirect = Some(Effort::first(cx.now));
                1
            }
            Some(e) if e.due(cx.now) => {
                e.again(cx.now);
                e.round
            }
            Some(_) => return,
        };
        cx.commands.push(Command::RedirectCaller {
            call,
            location: self.location.clone(),
            reason: self.outcome,
            round,
        });
    }

    /// How the task must end, once that is decided: completed if a worker took
    /// the call and it is over, canceled if the outcome is final without that.
    fn task_end_wanted(&self) -> Option<TaskEnd> {
        let task = self.task.as_ref()?;
        if task.status.is_final() {
            return None;
        }
        let took = self.outcome == Outcome::Connected
            || matches!(task.status, TaskStatus::Assigned | TaskStatus::Wrapping)
            || self.reservations.iter().any(|r| r.status.took());
        if took {
            let over = task.status == TaskStatus::Wrapping
                || self.reservations.iter().any(|r| r.status == ResState::Wrapping)
                || self.caller.state == CallerState::Gone;
            over.then_some(TaskEnd::Complete)
        } else if self.outcome.is_final() {
            Some(TaskEnd::Cancel)
        } else {
            None
        }
    }

    fn drive_task(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(want) = self.task_end_wanted() else {
            return;
        };
        let reason = self.outcome;
        let Some(task) = &mut self.task else {
            return;
        };
        let round = match &mut task.ending {
            None => {
                task.ending = Some(Ending { end: want, effort: Effort::first(now) });
                1
            }
            // Canceling did not fit (someone took the call after all): complete it.
            // Rounds go on, so no key is ever used twice.
            Some(e) if e.end != want => {
                let round = e.effort.round + 1;
                *e = Ending { end: want, effort: Effort { round, at_ms: now, failed: false } };
                round
            }
            Some(e) if e.effort.due(now) => {
                e.effort.again(now);
                e.effort.round
            }
            Some(_) => return,
        };
        let sid = task.sid.clone();
        cx.commands.push(match want {
            TaskEnd::Cancel => Command::CancelTask { task: sid, reason, round },
            TaskEnd::Complete => Command::CompleteTask { task: sid, round },
        });
    }
}
