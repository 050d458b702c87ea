//! The journey: one inbound call's whole lifecycle as a pure state machine.
//!
//! Every webhook, dispatcher result, reconciler observation and tick goes
//! through [`apply`] (see "Wiring" below); nothing else decides a call's life.
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
//! - A location with several phones (`DialTarget::phones`) has them rung in
//!   order by one reservation: a leg that ends without a person marks its
//!   attempt `missed` instead of settling, and the next phone is dialled
//!   once that leg has ended (or its create certainly made no call). Only
//!   the last phone's leg settles the outcome. Rung all at once
//!   (`DialTarget::all_at_once`), each phone has its own attempts, the
//!   first leg to be bridged wins and the others are hung up; the outcome
//!   waits until every phone is done.
//! - A command the dispatcher gives up on comes back as
//!   [`Event::ActionFailed`]; the journey is then [`Journey::degraded`] and
//!   sends it again after a back-off while it is still needed. A failed
//!   redirect also makes the next `/hold` answer `<Leave>`, which reaches the
//!   caller without the REST API.
//!
//! # Wiring
//! `store::journeys` keeps each journey (its JSON, a version, [`Journey::wake_at`],
//! closed, degraded, and for counting queues without loading it its location,
//! caller state and time queued) and finds it by any SID of [`Journey::keys`]; a delivery
//! loads or creates it, applies the events, withdraws dials still in the outbox
//! when told to, and writes the journey, its commands and its `calls` row in
//! one transaction. `timers::Ticker` sends [`Event::Tick`] at `wake_at`; the
//! dispatcher reports results as events; the reconciler (`reconcile`) feeds
//! what Twilio shows; a dial's URLs carry `attempt`.

mod drive;
mod event;
mod facts;
#[cfg(test)]
mod invariants;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod world;

pub use event::{
    AnsweredBy, CallStatus, ClosingCallback, ClosingOverflow, DialTarget, Event, MAX_LATER_OPENINGS, OpenPeriod,
    QueueResult, ReservationEnd, ReservationStatus, ScreenKey, TaskStatus,
};
pub use state::{CallerState, TaskEnd};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use twilio::E164;
use twilio::sid::{CallSid, ReservationSid, TaskSid};

use crate::config::{AnsweredByPolicy, Settings};
use crate::domain::Outcome;
use state::{Attempt, AttemptState, Callback, Caller, Effort, Reservation, Task, Transferred, Voicemail, Waiting};

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
/// How many times the screening prompt is said: once, and once more after a
/// wrong key. A second wrong key, or no key, ends it as not answered.
pub const SCREEN_PROMPTS: u32 = 2;
/// Between two comfort messages when a location has them but does not
/// announce the caller's place.
pub const COMFORT_EVERY_SECS: u32 = 60;
/// Create requests per reservation unless configured.
pub const DEFAULT_DIAL_ATTEMPTS: u32 = 3;
/// Between a callback nobody answered and the next try.
pub const CALLBACK_RETRY_MS: i64 = 5 * 60 * 1000;
/// At `max_queue_secs`, a location that calls back offers it once more and
/// waits this long for the key before the caller goes to voicemail.
pub const LAST_OFFER_SECS: u32 = 30;
/// After the callback offer, it is said again this much later in the queue.
pub const CALLBACK_OFFER_EVERY_SECS: u32 = 120;
/// The longest a callback's task waits for the location (its TaskRouter
/// `Timeout`); closing time usually ends it first.
pub const CALLBACK_TASK_TTL_SECS: u32 = 8 * 3600;
/// The longest a voicemail's notifications wait for its transcription.
pub const TRANSCRIPTION_WAIT_MS: i64 = 10 * 60 * 1000;

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
    /// The caller was out of the queue (by `<Leave>`, by the redirect itself,
    /// or hung up) with `redirect` not given up on: it was withdrawn, as far
    /// as it had not gone out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    redirect_withdrawn: bool,
    /// When the location closes (see [`Event::ClosingTime`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closes_at_ms: Option<i64>,
    /// A step at or after `closes_at_ms` has run: no more dials.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    closed_now: bool,
    /// Set when a callback waits for the next opening: the start of the open
    /// period `closes_at_ms` ends (closed before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    opens_at_ms: Option<i64>,
    /// The location's later open periods (see [`Event::ClosingTime`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    later: Vec<OpenPeriod>,
    /// The callback a caller still waiting at closing time gets, instead of
    /// voicemail (see [`Event::ClosingTime`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closing_callback: Option<ClosingCallback>,
    /// The overflow location a caller still waiting at closing time moves to
    /// (see [`Event::ClosingTime`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closing_overflow: Option<ClosingOverflow>,
    /// The caller moved to the overflow location's queue at closing time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transfer: Option<Transferred>,
    /// The voicemails the caller left (one, in practice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    voicemails: Vec<Voicemail>,
    /// Time in the queue and what the caller was told there.
    #[serde(default)]
    wait: Waiting,
    /// The language the caller hears (from `CallerEnqueued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    language: Option<String>,
    /// The caller chose to be called back (see [`Event::CallbackChosen`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback: Option<Callback>,
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
            redirect_withdrawn: false,
            closes_at_ms: None,
            closed_now: false,
            opens_at_ms: None,
            later: Vec::new(),
            closing_callback: None,
            closing_overflow: None,
            transfer: None,
            voicemails: Vec::new(),
            wait: Waiting::default(),
            language: None,
            callback: None,
        }
    }
}

/// See [`Journey::summary`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary<'a> {
    pub location: Option<&'a str>,
    pub task: Option<&'a TaskSid>,
    pub reservation: Option<&'a ReservationSid>,
    pub leg: Option<&'a CallSid>,
    pub answered_by: Option<AnsweredBy>,
}

/// What we owe Twilio (or the reconciler). The store turns each into an
/// outbox row keyed by [`Command::key`].
// `Dial` carries its whole target; commands live one step, on their way to
// the outbox, so boxing it would only add an allocation to the common case.
#[allow(clippy::large_enum_variant)]
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
    /// Take the waiting caller out of the queue to the fallback for `reason`
    /// (with `callback`, to the goodbye of a callback made at closing time).
    RedirectCaller {
        call: CallSid,
        location: Option<String>,
        reason: Outcome,
        round: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        callback: bool,
        /// The caller's language, for the fallback's words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
        /// Closed at `location`: to the queue of this overflow location
        /// instead of voicemail (the closing policy `overflow`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer: Option<String>,
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
    /// Create the task of a callback's `round`th try (TaskRouter `Tasks`
    /// create, with `VirtualStartTime` from `since_ms` so the caller keeps
    /// their place). The dispatcher answers `CallbackTaskCreated`.
    CreateCallbackTask {
        call: CallSid,
        location: String,
        number: E164,
        since_ms: i64,
        round: u32,
        /// Of the create command itself: a failed one is sent again.
        effort: u32,
    },
    /// Accept a callback's reservation (REST), its location having pressed 1.
    AcceptReservation {
        task: TaskSid,
        reservation: ReservationSid,
        round: u32,
    },
    /// Tell one of a location's recipients about a voicemail, once it is
    /// recorded and its transcription came or [`TRANSCRIPTION_WAIT_MS`]
    /// passed. The dispatcher sends it with retries (see `crate::notify`).
    NotifyVoicemail {
        recording: String,
        channel: NotifyChannel,
    },
    /// Drop the caller's redirect of `kind` (round `round`) from the outbox if
    /// it has not gone out yet: the caller no longer needs it (they left the
    /// old queue of a transfer by `<Leave>`, say), and landing later it would
    /// pull them out of where they are now. Carried out by the store, by the
    /// redirect's key ([`redirect_key`]); a redirect already sent is not
    /// called back.
    WithdrawRedirect {
        call: CallSid,
        round: u32,
        kind: RedirectKind,
    },
    /// Put a callback request in `location`'s voicemail list: the callback
    /// ended at closing time (`at_closing = "voicemail_list"`), and staff
    /// call `number` back by hand. Like [`Command::WithdrawDial`], the store
    /// carries it out in the journey's own transaction; never queued.
    ListCallbackRequest {
        call: CallSid,
        location: String,
        number: E164,
        since_ms: i64,
    },
}

/// Where a voicemail notification goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum NotifyChannel {
    Email { to: String },
    Webhook { url: String },
}

impl Command {
    /// The outbox's `kind` column; dials have their own dispatcher lane.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Dial { .. } => "dial",
            Command::WithdrawDial { .. } => "withdraw_dial",
            Command::FindDial { .. } => "find_dial",
            Command::HangUp { .. } => "hang_up",
            Command::RedirectCaller { .. } => "redirect_caller",
            Command::CancelTask { .. } => "cancel_task",
            Command::CompleteTask { .. } => "complete_task",
            Command::NotifyVoicemail { .. } => "notify_voicemail",
            Command::CreateCallbackTask { .. } => "create_callback_task",
            Command::AcceptReservation { .. } => "accept_reservation",
            Command::ListCallbackRequest { .. } => "list_callback_request",
            Command::WithdrawRedirect { .. } => "withdraw_redirect",
        }
    }

    /// The SIDs it is about, for log spans: (call, task, reservation). The
    /// call is the caller's leg where known, else the leg it acts on.
    pub fn sids(&self) -> (Option<&CallSid>, Option<&TaskSid>, Option<&ReservationSid>) {
        match self {
            Command::Dial { reservation, task, caller, .. } => (caller.as_ref(), Some(task), Some(reservation)),
            Command::WithdrawDial { reservation, .. } | Command::FindDial { reservation, .. } => {
                (None, None, Some(reservation))
            }
            Command::HangUp { leg, .. } => (Some(leg), None, None),
            Command::RedirectCaller { call, .. } => (Some(call), None, None),
            Command::CancelTask { task, .. } | Command::CompleteTask { task, .. } => (None, Some(task), None),
            Command::NotifyVoicemail { .. } => (None, None, None),
            Command::CreateCallbackTask { call, .. } => (Some(call), None, None),
            Command::AcceptReservation { task, reservation, .. } => (None, Some(task), Some(reservation)),
            Command::ListCallbackRequest { call, .. } | Command::WithdrawRedirect { call, .. } => {
                (Some(call), None, None)
            }
        }
    }

    /// The outbox's dedupe key. First rounds keep the keys the handlers use
    /// today (`dial:WR…`, `hang-up:CA…`), so both can share one outbox.
    pub fn key(&self) -> String {
        fn keyed(base: String, round: u32) -> String {
            if round <= 1 { base } else { format!("{base}#{round}") }
        }
        match self {
            Command::Dial { reservation, attempt, .. } => dial_key(reservation, *attempt),
            Command::WithdrawDial { reservation, attempt } => format!("withdraw:{reservation}#{attempt}"),
            Command::FindDial { reservation, attempt, lookup, .. } => {
                format!("find-dial:{reservation}#{attempt}.{lookup}")
            }
            Command::HangUp { leg, round } => keyed(format!("hang-up:{leg}"), *round),
            Command::RedirectCaller { call, round, transfer, .. } => {
                redirect_key(call, *round, RedirectKind::of(transfer.as_deref()))
            }
            Command::WithdrawRedirect { call, round, kind } => {
                format!("withdraw:{}", redirect_key(call, *round, *kind))
            }
            Command::CancelTask { task, round, .. } => keyed(format!("cancel-task:{task}"), *round),
            Command::CompleteTask { task, round } => keyed(format!("complete-task:{task}"), *round),
            Command::CreateCallbackTask { call, round, effort, .. } => format!("callback-task:{call}#{round}.{effort}"),
            Command::AcceptReservation { reservation, round, .. } => keyed(format!("accept:{reservation}"), *round),
            Command::ListCallbackRequest { call, .. } => format!("callback-request:{call}"),
            Command::NotifyVoicemail { recording, channel } => match channel {
                NotifyChannel::Webhook { .. } => format!("{}webhook", notify_key_prefix(recording)),
                NotifyChannel::Email { to } => format!("{}email:{to}", notify_key_prefix(recording)),
            },
        }
    }
}

/// Which of the caller's redirects a [`Command::RedirectCaller`] is, and so
/// which one a [`Command::WithdrawRedirect`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectKind {
    /// Out of the queue to `/caller-fallback`: voicemail, or the goodbye of a
    /// callback made at closing time.
    Fallback,
    /// Out of the old queue of a transfer at closing time, to the overflow
    /// location's queue.
    Transfer,
}

impl RedirectKind {
    /// The kind of a redirect with this `transfer`.
    pub fn of(transfer: Option<&str>) -> Self {
        if transfer.is_some() { RedirectKind::Transfer } else { RedirectKind::Fallback }
    }
}

/// The outbox key of the caller's redirect of `kind`, round `round` (what a
/// [`Command::WithdrawRedirect`] withdraws). A transfer's redirect is a
/// redirect of its own: a later one (to the overflow location's voicemail,
/// say) must not share its key. First rounds keep the handlers' keys.
pub fn redirect_key(call: &CallSid, round: u32, kind: RedirectKind) -> String {
    let base = match kind {
        RedirectKind::Fallback => format!("redirect:{call}"),
        RedirectKind::Transfer => format!("redirect:{call}:transfer"),
    };
    if round <= 1 { base } else { format!("{base}#{round}") }
}

/// The start of the outbox keys of a voicemail's notifications.
pub fn notify_key_prefix(recording: &str) -> String {
    format!("notify:{recording}:")
}

/// The outbox key of a reservation's dial attempt (what a
/// [`Command::WithdrawDial`] withdraws).
pub fn dial_key(reservation: &ReservationSid, attempt: u32) -> String {
    if attempt <= 1 { format!("dial:{reservation}") } else { format!("dial:{reservation}#{attempt}") }
}

/// The TwiML decision for a webhook that needs one; handlers only render it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Answer {
    /// No decision: TaskRouter events (204), status callbacks (empty TwiML),
    /// and events that are not webhooks.
    #[default]
    Nothing,
    /// `/hold`: hold music, after the caller's place and expected wait when
    /// `announce`, or else after comfort message number `comfort` (counted
    /// from 0; the handler takes it in turn from the location's list). With
    /// `callback`, a key press takes the callback, and `Some(true)` says the offer.
    Hold { announce: bool, comfort: Option<u32>, callback: Option<bool> },
    /// `/hold`: `<Leave>`; `/enqueue-action` follows with `QueueResult=leave`.
    Leave,
    /// `/dial-queue`: `<Dial><Queue reservationSid>`. With `transfer`, the
    /// reservation is the overflow location's (named), and the caller hears
    /// that they are being transferred there before the bridge.
    Bridge { reservation: ReservationSid, transfer: Option<Transfer> },
    /// `/dial-queue` or `/screen`: the screening prompt, its `prompt`th time:
    /// who is calling, for which location, and "press 1 to accept", waiting
    /// `timeout_secs` for one key.
    /// For a callback, `waiting_since_ms` says since when the caller waits.
    Screen {
        prompt: u32,
        location: String,
        caller: Option<String>,
        caller_name: Option<String>,
        timeout_secs: u32,
        waiting_since_ms: Option<i64>,
    },
    /// `/dial-queue` or `/screen` of a callback's location leg that accepted:
    /// `<Dial callerId=from><Number>number</Number></Dial>`, its action
    /// `/callback-dialed` naming the reservation.
    CallBack { reservation: ReservationSid, number: E164, from: E164 },
    /// `/enqueue-action` after `<Leave>` at closing time with the closing
    /// policy `overflow`: "`from` has closed for now; we are transferring you
    /// to `to`", and `<Enqueue>` in `to`'s queue, the task `transferred_from`.
    TransferAtClosing { from: String, to: String },
    /// `/enqueue-action` after the caller chose a callback: "we will call
    /// you back at …", and hang up; with `closed`, the callback came from
    /// the closing policy: "we have closed for now; … when we open".
    CallbackBye { number: E164, closed: bool },
    /// `/dial-queue`: hang up the location's leg, first telling a person that
    /// the caller is gone when `caller_gone`.
    Refuse { caller_gone: bool },
    /// `/enqueue-action` after a bridge.
    Goodbye,
    /// `/enqueue-action` with the caller still on the line: voicemail.
    Fallback { location: Option<String>, reason: Outcome },
}

/// A bridge to the overflow location: its name, and the caller's language
/// (when the caller chose one) for the words they hear about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub to: String,
    pub language: Option<String>,
}

impl Answer {
    /// `/hold` with hold music only.
    pub const MUSIC: Answer = Answer::Hold { announce: false, comfort: None, callback: None };
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
    journey.note_waiting(cx.now);
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

    /// The location the journey is about: the one the caller was enqueued
    /// for, turned away from, or moved to (an overflow), as `state_json`'s
    /// `location` has it.
    pub fn queue_location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    pub fn caller_sid(&self) -> Option<&CallSid> {
        self.caller.sid.as_ref()
    }

    /// When the caller began to wait in the queue (ms), if they did.
    pub fn waiting_since_ms(&self) -> Option<i64> {
        self.wait.since_ms
    }

    pub fn task_sid(&self) -> Option<&TaskSid> {
        self.task.as_ref().map(|t| &t.sid)
    }

    /// The task's status as far as the journey knows.
    pub fn task_status(&self) -> Option<TaskStatus> {
        self.task.as_ref().map(|t| t.status)
    }

    /// What the `calls` table shows of this journey: where it ended, its task,
    /// latest reservation, its location leg and how that leg was answered.
    /// The leg is the latest reservation's bridged one, else its latest
    /// answered one, else its latest: with phones rung all at once, the
    /// phone that answered may have been dialled before the others.
    pub fn summary(&self) -> Summary<'_> {
        let leg = self.reservations.iter().rev().find_map(|r| {
            let latest = |f: fn(&&state::Leg) -> bool| r.legs.iter().rev().find(f);
            latest(|l| l.bridging).or_else(|| latest(|l| l.answered_by.is_some())).or_else(|| r.legs.last())
        });
        // Where the call ended: the location of the latest reservation, which
        // is the overflow location's once the workflow moved the task there.
        // After a transfer at closing time, only the new task's count.
        let ended_at = self
            .reservations
            .iter()
            .rev()
            .filter_map(|r| r.target.as_ref())
            .find(|t| self.transfer.is_none() || t.transferred)
            .map(|t| t.location.as_str());
        Summary {
            location: ended_at.or(self.location.as_deref()),
            task: self.task.as_ref().map(|t| &t.sid),
            reservation: self.reservations.last().map(|r| &r.sid),
            leg: leg.map(|l| &l.sid),
            answered_by: leg.and_then(|l| l.answered_by),
        }
    }

    /// Whether `leg` is a leg of reservation `i` we still want: the leg of
    /// its latest attempt, or of each phone's when they ring all at once
    /// (see `facts` for a leg we never dialled).
    pub(crate) fn is_current(&self, i: usize, leg: &CallSid) -> bool {
        self.reservations[i].is_current(leg)
    }

    /// Every SID that routes an event to this journey: the caller's, the task's,
    /// each reservation's and location leg's, and each voicemail's recording.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.caller.sid.iter().map(|s| s.to_string()).collect();
        keys.extend(self.task.iter().map(|t| t.sid.to_string()));
        for r in &self.reservations {
            keys.push(r.sid.to_string());
            keys.extend(r.legs.iter().map(|l| l.sid.to_string()));
        }
        keys.extend(self.voicemails.iter().map(|v| v.recording.clone()));
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
            for a in r.latest() {
                if let Attempt { state: AttemptState::Unknown { next_lookup_ms, lookups }, .. } = a
                    && *lookups < MAX_LOOKUPS
                {
                    at.push(*next_lookup_ms);
                }
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
            at.extend(self.redirect_effort().and_then(|e| e.retry_at()));
        }
        if let (Some(want), Some(Task { ending: Some(e), .. })) = (self.task_end_wanted(), &self.task)
            && e.end == want
        {
            at.extend(e.effort.retry_at());
        }
        // Once it has passed, what settles a caller still waiting is the end
        // of the leg in play, an event of its own.
        if !self.closed_now && self.outcome == Outcome::Pending && self.caller.state.waiting() {
            at.extend(self.closes_at_ms);
        }
        at.extend(self.voicemails.iter().filter_map(Voicemail::waiting_until));
        if let Some(cb) = self.callback.as_ref().filter(|_| self.outcome == Outcome::Pending) {
            // Nothing is created while the location is closed: the next try's
            // task at its opening, if it has one (closed for good, a leg's end
            // or its lookups decide, each waking the journey on its own).
            if self.task.is_none() && cb.create.is_none() {
                let create_at = self.opens_at_ms.map_or(cb.next_at_ms, |o| o.max(cb.next_at_ms));
                if !self.closed(create_at) {
                    at.push(create_at);
                }
            }
            // A create sent again waits for the location's opening (and the
            // pause between tries) like a first one.
            let opens = self.opens_at_ms.unwrap_or(i64::MIN).max(cb.next_at_ms);
            at.extend(cb.create.and_then(|e| e.retry_at()).map(|t| t.max(opens)));
            if !self.closed_now {
                at.extend(self.closes_at_ms);
            }
        }
        at.extend(
            self.reservations
                .iter()
                .filter(|r| r.status == state::ResState::Pending)
                .filter_map(|r| r.accept.and_then(|e| e.retry_at())),
        );
        at.into_iter().min().and_then(|ms| Timestamp::from_millisecond(ms).ok())
    }

    /// The location is closed at `now`, as far as the journey knows: past its
    /// closing time, or (for a callback that waits for it) before the next
    /// opening. No dial starts then.
    pub(crate) fn closed(&self, now: i64) -> bool {
        self.closes_at_ms.is_some_and(|t| now >= t) || self.opens_at_ms.is_some_and(|o| now < o)
    }

    /// Someone still waits for the location: the caller in the queue, or a
    /// caller who chose to be called back.
    pub(crate) fn awaits_location(&self) -> bool {
        self.outcome == Outcome::Pending && (self.caller.state.waiting() || self.callback.is_some())
    }

    /// Whether reservation `i` is of the phase the journey is in: a callback's
    /// task once the caller chose one, the queue's before; and not at a
    /// location the caller was transferred away from at its closing time. A
    /// reservation of the other kind is neither dialled nor bridged.
    pub(crate) fn serves(&self, i: usize) -> bool {
        // After a transfer at closing time, never the location that closed
        // (TaskRouter's workflow may offer the task to its worker again).
        let closed = |t: &DialTarget| self.transfer.as_ref().is_some_and(|x| x.from == t.location);
        match &self.reservations[i].target {
            Some(t) => t.callback.is_some() == self.callback.is_some() && !closed(t),
            // Not known yet (its `reservation.created` may come later): the queue's.
            // While a transfer still moves the caller out of the old queue, that
            // is the old queue's: the new queue's task is made once the caller is
            // in it.
            None => self.callback.is_none() && self.transfer.as_ref().is_none_or(|t| t.left),
        }
    }

    /// A location leg of this caller is in play: a dial in flight or in
    /// doubt, or a live leg we still want. Closing time waits for it.
    pub(crate) fn leg_in_play(&self) -> bool {
        self.reservations.iter().enumerate().any(|(i, r)| {
            let doubt = r.latest().iter().any(|a| match a.state {
                AttemptState::InFlight { withdrawn } => !withdrawn,
                AttemptState::Unknown { lookups, .. } => lookups < MAX_LOOKUPS,
                _ => false,
            });
            let live = r.legs.iter().any(|l| l.reported.is_live() && l.stop.is_none() && self.is_current(i, &l.sid));
            doubt || live
        })
    }

    /// A command the dispatcher gave up on is still owed (for `/healthz`).
    pub fn degraded(&self) -> bool {
        let legs = self.reservations.iter().flat_map(|r| &r.legs);
        let leg_failed = legs
            .filter(|l| l.reported.is_live())
            .any(|l| l.stop.as_ref().and_then(|s| s.hang_up).is_some_and(|e| e.failed));
        let redirect_failed = self.redirect_needed().is_some() && self.redirect_effort().is_some_and(|e| e.failed);
        let task_failed = match (self.task_end_wanted(), &self.task) {
            (Some(want), Some(Task { ending: Some(e), .. })) => e.end == want && e.effort.failed,
            _ => false,
        };
        leg_failed || redirect_failed || task_failed
    }

    /// The same journey without the callers' `CallToken`s (kept only to dial
    /// with the caller's number): what is stored once the journey is closed.
    pub fn without_call_tokens(&self) -> Journey {
        let mut j = self.clone();
        for t in j.reservations.iter_mut().filter_map(|r| r.target.as_mut()) {
            t.call_token = None;
        }
        j
    }

    /// Nothing more is expected: the outcome is final, the task and every
    /// reservation have ended, no leg is live, no dial is in doubt and every
    /// recorded voicemail has been announced.
    pub fn is_closed(&self) -> bool {
        self.outcome.is_final()
            && self.voicemails.iter().all(|v| !v.recorded || v.notified)
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
}
