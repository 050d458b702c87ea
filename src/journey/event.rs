//! What a journey hears: webhooks, the results of our own requests, the
//! reconciler's observations and the passing of time, as typed events.
//!
//! Handlers and the reconciler build these from the wire (`parse` functions
//! here take Twilio's spelling); the state machine never sees a raw string.

use serde::{Deserialize, Serialize};
use twilio::E164;
use twilio::sid::{CallSid, ReservationSid, TaskSid};

use super::{Command, NotifyChannel};
use crate::domain::{CallbackAttributes, Outcome, Ring, Screening, TaskAttributes};

/// One thing that happened to a journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    // -- the caller's leg (webhooks on our number) ---------------------------
    /// `/incoming-call`: the caller reached us.
    CallerArrived { call: CallSid },
    /// The IVR put the caller in the queue for a location (`<Enqueue>`), in
    /// the language they hear (a tag of `ivr.languages`), which their fallback
    /// after a REST redirect keeps.
    CallerEnqueued {
        location: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// The IVR settled the call without the queue (closed, not in service, no
    /// workflow): the caller gets voicemail or a message from the IVR, of
    /// `location` when one was chosen.
    CallerTurnedAway { outcome: Outcome, location: Option<String> },
    /// When the location the caller waits for closes, from its hours at the
    /// time the caller was enqueued. A caller still waiting then, with no leg
    /// ringing or answered, is sent to voicemail (`closed_while_waiting`);
    /// no dial starts after it. `later` lists the location's next open
    /// periods, in order, for a callback that waits for the next opening
    /// (at most [`MAX_LATER_OPENINGS`]; empty when it has no such callback).
    ///
    /// With `callback` (the location's closing policy is a callback and the
    /// caller's number can be called), a caller still waiting then is told
    /// they will be called back at the next opening, and leaves the queue.
    ClosingTime {
        at_ms: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        later: Vec<OpenPeriod>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        callback: Option<ClosingCallback>,
        /// With `overflow` (the location's closing policy is its overflow
        /// location, open then), a caller still waiting then is told so and
        /// moves to that location's queue, with a new task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        overflow: Option<ClosingOverflow>,
    },
    /// `/hold`, the queue's `waitUrl`. Answered with [`super::Answer::Hold`] or
    /// [`super::Answer::Leave`]. It carries the location's settings for what
    /// a waiting caller hears: announce their place every
    /// `announce_every_secs` (0: never), and whether it has comfort messages.
    Hold {
        queue_time_secs: u32,
        #[serde(default)]
        announce_every_secs: u32,
        #[serde(default)]
        comfort: bool,
        /// The location calls back, and says so from this queue time on
        /// (none: no callback offer; 1 at `/callback-choice` is refused).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        callback_after_secs: Option<u32>,
        /// The location whose queue asks (the `waitUrl` names it; absent from
        /// older URLs and Studio flows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
    },
    /// `/callback-choice`: the waiting caller pressed 1 to hang up and be
    /// called back at `number`, keeping their place; the location tries to
    /// reach them `tries` times. Answered with [`super::Answer::Leave`] when
    /// taken, else nothing (the caller holds on). With `wait_for_opening`, a
    /// callback still waiting at closing time waits for the next opening
    /// (see `ClosingTime`'s `later`); without, it ends `callback_canceled`.
    CallbackChosen {
        number: E164,
        tries: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait_for_opening: bool,
        /// Ended at closing time (without `wait_for_opening`), it leaves a
        /// callback request in the location's voicemail list
        /// ([`super::Command::ListCallbackRequest`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        to_list: bool,
    },
    /// The dispatcher created the callback's task (round `round`).
    CallbackTaskCreated { task: TaskSid, round: u32 },
    /// `/callback-dialed`: the location's leg dialled the caller back for
    /// `reservation`; `answered` when the caller picked up.
    CallbackDialed { reservation: ReservationSid, answered: bool },
    /// `/caller-fallback?…&transfer=…`: our redirect out of the old queue of
    /// a transfer at closing time reached the caller. Answered with
    /// [`super::Answer::TransferAtClosing`] while the caller is still to be
    /// moved (again, if a late redirect took them out of the new queue), else
    /// what fits the outcome (`Goodbye` after a connected call, `Fallback`).
    TransferAsked,
    /// `/enqueue-action`: the caller's leg left the queue of `queue` (the
    /// action URL names the location; absent from older URLs and Studio flows).
    QueueExit {
        result: QueueResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
    },
    /// The number's status callback for the caller's own leg.
    CallerStatus { status: CallStatus, sequence: Option<u32> },
    /// `/voicemail-complete`: the caller left a recording. `recipients` are
    /// its location's (`notify_email`, `notify_webhook`); with `transcribe`
    /// the notifications wait for the transcription.
    VoicemailRecorded {
        recording: String,
        duration_secs: Option<u32>,
        recipients: Vec<NotifyChannel>,
        transcribe: bool,
    },
    /// `/voicemail-transcription`: Twilio's transcription of that recording
    /// came, completed or failed.
    Transcribed { recording: String },

    // -- the location's legs (webhooks on the calls we create) ---------------
    /// `/dial-queue`: a leg we placed was answered. Answered with
    /// [`super::Answer::Bridge`] or [`super::Answer::Refuse`].
    LegAnswered { reservation: ReservationSid, attempt: Option<u32>, leg: CallSid, answered_by: AnsweredBy },
    /// `/screen`: the screening prompt's answer on a leg we placed, at its
    /// `prompt`th asking (its URL says which): the key pressed, or none in
    /// time. Answered with [`super::Answer::Bridge`] (1 was pressed),
    /// [`super::Answer::Screen`] (the prompt again) or [`super::Answer::Refuse`].
    LegScreened { reservation: ReservationSid, attempt: Option<u32>, leg: CallSid, prompt: u32, key: ScreenKey },
    /// `/status-callback` of a leg we placed. Its URL names the reservation
    /// (and, from the journey on, the attempt), so even the `initiated`
    /// callback of a dial whose answer was lost tells us the leg exists.
    LegStatus {
        reservation: ReservationSid,
        attempt: Option<u32>,
        leg: CallSid,
        status: CallStatus,
        sequence: Option<u32>,
    },

    // -- TaskRouter ----------------------------------------------------------
    /// `reservation.created`. The first event of a journey when a Studio flow
    /// enqueued the caller without our `/incoming-call`.
    ReservationCreated { task: TaskSid, reservation: ReservationSid, caller: Option<CallSid>, target: DialTarget },
    /// `reservation.accepted`: the `<Dial><Queue reservationSid>` bridge took it.
    ReservationAccepted { task: TaskSid, reservation: ReservationSid },
    /// `reservation.timeout`, `.canceled`, `.rescinded`, `.rejected`: TaskRouter took it back.
    ReservationEnded { task: TaskSid, reservation: ReservationSid, why: ReservationEnd },
    /// `reservation.completed`.
    ReservationCompleted { task: TaskSid, reservation: ReservationSid },
    /// `task.wrapup` (no reservation) or `reservation.wrapup`: the bridged call ended.
    Wrapup { task: TaskSid, reservation: Option<ReservationSid> },
    /// `task.canceled`.
    TaskCanceled { task: TaskSid },
    /// `task.completed`.
    TaskCompleted { task: TaskSid },

    // -- results of our requests (from the dispatcher) ----------------------
    /// Creating the call succeeded.
    DialPlaced { reservation: ReservationSid, attempt: u32, leg: CallSid },
    /// Definitely no call: Twilio refused the create (4xx), or the dial was
    /// withdrawn from the outbox before it was sent.
    DialFailed { reservation: ReservationSid, attempt: u32 },
    /// A call may or may not exist: a 5xx, a timeout, a reset connection, or a
    /// restart while the request was out.
    DialUnknown { reservation: ReservationSid, attempt: u32 },
    /// The dispatcher spent its retry budget on this command.
    ActionFailed { command: Command },

    // -- the reconciler's observations --------------------------------------
    /// The caller's leg as a Calls fetch or list shows it.
    CallerSeen { call: CallSid, status: CallStatus },
    /// A location leg found by a Calls list (by `To` and `StartTime`) and
    /// attributed to this reservation and attempt.
    LegSeen { reservation: ReservationSid, attempt: Option<u32>, leg: CallSid, status: CallStatus },
    /// A Calls list proved that this attempt created no call.
    DialAbsent { reservation: ReservationSid, attempt: u32 },
    /// The task as TaskRouter lists it.
    TaskSeen { task: TaskSid, status: TaskStatus },
    /// One of the task's reservations as TaskRouter lists it. A pending
    /// reservation the journey does not know is fed as `ReservationCreated`
    /// instead, with the task's attributes.
    ReservationSeen { task: TaskSid, reservation: ReservationSid, status: ReservationStatus },

    // -- time ------------------------------------------------------------------
    /// The scheduler's wake-up at [`super::Journey::wake_at`] (early or late
    /// ticks are harmless).
    Tick,
}

/// How many of a location's later open periods a [`Event::ClosingTime`]
/// carries: a callback not reached in them ends `callback_canceled`.
pub const MAX_LATER_OPENINGS: usize = 8;

/// The callback a caller still waiting at closing time gets: whom to call,
/// how many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosingCallback {
    pub number: E164,
    pub tries: u32,
}

/// Where a caller still waiting at closing time is transferred: the
/// overflow `location`, open at that time, and when it closes in turn (none:
/// it does not within the days its hours are read for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosingOverflow {
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes_at_ms: Option<i64>,
}

/// A time the location is open, from `opens_at_ms` until `closes_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenPeriod {
    pub opens_at_ms: i64,
    pub closes_at_ms: i64,
}

/// Where a reservation's dial goes, from the task's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialTarget {
    pub location: String,
    /// The phone this dial goes to: in a reservation's target, the first.
    pub to: E164,
    /// Every phone of the location in the order they are rung, when it has
    /// more than one (absent in older journeys: `to` alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<E164>,
    /// How those phones ring: in order (absent), or all at once.
    #[serde(default, skip_serializing_if = "Ring::is_in_order")]
    pub ring: Ring,
    pub from: E164,
    pub call_token: Option<String>,
    /// The location screens the call: its leg hears a prompt and must press 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screening: Option<Screening>,
    /// Dial with answering-machine detection (absent in older journeys: yes).
    #[serde(default = "yes")]
    pub amd: bool,
    /// The caller's number and name, for the screening prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
    /// A callback's task: the location's leg, once it accepts, dials the
    /// caller back instead of taking them from the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackAttributes>,
    /// The task of a caller transferred here at another location's closing
    /// time (the task's `transferred_from`): only such a task is the
    /// journey's once it made the transfer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transferred: bool,
}

fn yes() -> bool {
    true
}

impl DialTarget {
    /// How many phones a reservation of this target rings (at least one).
    pub fn phone_count(&self) -> u32 {
        u32::try_from(self.phones.len()).unwrap_or(u32::MAX).max(1)
    }

    /// Phone `k` (from 0) in ring order; `to` past the list.
    pub fn phone(&self, k: u32) -> &E164 {
        self.phones.get(k as usize).unwrap_or(&self.to)
    }

    /// Its phones ring all at once (and there are several).
    pub fn all_at_once(&self) -> bool {
        self.ring == Ring::AllAtOnce && self.phones.len() > 1
    }

    /// The target of the dial to phone `k`: `to` is that phone.
    pub fn for_phone(&self, k: u32) -> DialTarget {
        DialTarget { to: self.phone(k).clone(), ..self.clone() }
    }

    /// Where a reservation of the worker of `worker_location` dials: the
    /// task's overflow location when that is the worker's, else the task's
    /// own location.
    pub fn for_worker(attrs: &TaskAttributes, worker_location: Option<&str>) -> Self {
        match &attrs.overflow {
            Some(o) if worker_location == Some(o.location.as_str()) && o.location != attrs.location => DialTarget {
                location: o.location.clone(),
                to: o.practice_phone.clone(),
                phones: o.practice_phones.clone(),
                ring: o.ring.unwrap_or_default(),
                from: o.caller_id.clone(),
                call_token: o.call_token.clone(),
                screening: o.screening,
                amd: o.amd.unwrap_or(true) || o.screening.is_none(),
                caller: attrs.caller.clone(),
                caller_name: attrs.caller_name.clone().filter(|_| o.screening.is_some_and(|s| s.say_name)),
                callback: None,
                transferred: attrs.transferred_from.is_some(),
            },
            _ => Self::from_attributes(attrs),
        }
    }

    pub fn from_attributes(attrs: &TaskAttributes) -> Self {
        DialTarget {
            location: attrs.location.clone(),
            to: attrs.practice_phone.clone(),
            phones: attrs.practice_phones.clone(),
            ring: attrs.ring.unwrap_or_default(),
            from: attrs.caller_id.clone(),
            call_token: attrs.call_token.clone(),
            screening: attrs.screening,
            // Without screening, detection is what protects the caller.
            amd: attrs.amd.unwrap_or(true) || attrs.screening.is_none(),
            caller: attrs.caller.clone(),
            caller_name: attrs.caller_name.clone(),
            callback: attrs.callback.clone(),
            transferred: attrs.transferred_from.is_some(),
        }
    }
}

/// A call leg's `CallStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl CallStatus {
    /// Twilio's spelling; `answered` (a `StatusCallbackEvent`) reads as `in-progress`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => CallStatus::Queued,
            "initiated" => CallStatus::Initiated,
            "ringing" => CallStatus::Ringing,
            "in-progress" | "answered" => CallStatus::InProgress,
            "completed" => CallStatus::Completed,
            "busy" => CallStatus::Busy,
            "no-answer" => CallStatus::NoAnswer,
            "failed" => CallStatus::Failed,
            "canceled" => CallStatus::Canceled,
            _ => return None,
        })
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        self.rank() == 4
    }

    /// Statuses only move forward; without a `SequenceNumber` the rank orders them.
    pub(super) fn rank(self) -> u8 {
        match self {
            CallStatus::Queued => 0,
            CallStatus::Initiated => 1,
            CallStatus::Ringing => 2,
            CallStatus::InProgress => 3,
            CallStatus::Completed
            | CallStatus::Busy
            | CallStatus::NoAnswer
            | CallStatus::Failed
            | CallStatus::Canceled => 4,
        }
    }
}

/// `AnsweredBy` of answering-machine detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    Human,
    /// `machine_start`, `machine_end_*` or `fax`.
    Machine,
    /// `unknown`, or a value this version does not know.
    Unknown,
}

impl AnsweredBy {
    pub fn as_str(self) -> &'static str {
        match self {
            AnsweredBy::Human => "human",
            AnsweredBy::Machine => "machine",
            AnsweredBy::Unknown => "unknown",
        }
    }

    /// Without AMD (no `AnsweredBy`), a person is assumed, as the handlers do today.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            None | Some("human") => AnsweredBy::Human,
            Some(m) if m.starts_with("machine") || m == "fax" => AnsweredBy::Machine,
            Some(_) => AnsweredBy::Unknown,
        }
    }
}

/// What the location pressed at the screening prompt (`Digits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreenKey {
    /// 1: take the call.
    Accept,
    /// Another key.
    Other,
    /// No key within the prompt's timeout.
    Nothing,
}

impl ScreenKey {
    pub fn as_str(self) -> &'static str {
        match self {
            ScreenKey::Accept => "accept",
            ScreenKey::Other => "other",
            ScreenKey::Nothing => "nothing",
        }
    }

    pub fn parse(digits: Option<&str>) -> Self {
        match digits.map(str::trim) {
            None | Some("") => ScreenKey::Nothing,
            Some("1") => ScreenKey::Accept,
            Some(_) => ScreenKey::Other,
        }
    }
}

/// `QueueResult` of the `<Enqueue>` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueResult {
    Bridged,
    BridgingInProcess,
    Error,
    Hangup,
    Leave,
    Redirected,
    RedirectedFromBridged,
    QueueFull,
    SystemError,
}

impl QueueResult {
    /// An unknown or missing value reads as `error`: the caller is still on the line.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("bridged") => QueueResult::Bridged,
            Some("bridging-in-process") => QueueResult::BridgingInProcess,
            Some("hangup") => QueueResult::Hangup,
            Some("leave") => QueueResult::Leave,
            Some("redirected") => QueueResult::Redirected,
            Some("redirected-from-bridged") => QueueResult::RedirectedFromBridged,
            Some("queue-full") => QueueResult::QueueFull,
            Some("system-error") => QueueResult::SystemError,
            _ => QueueResult::Error,
        }
    }
}

/// Why TaskRouter took a reservation back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationEnd {
    Timeout,
    Canceled,
    Rescinded,
    Rejected,
}

/// A task's `AssignmentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Reserved,
    Assigned,
    Wrapping,
    Completed,
    Canceled,
}

impl TaskStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "reserved" => TaskStatus::Reserved,
            "assigned" => TaskStatus::Assigned,
            "wrapping" => TaskStatus::Wrapping,
            "completed" => TaskStatus::Completed,
            "canceled" => TaskStatus::Canceled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Canceled)
    }
}

/// A reservation's `ReservationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Pending,
    Accepted,
    Rejected,
    Timeout,
    Canceled,
    Rescinded,
    Wrapping,
    Completed,
}

impl ReservationStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ReservationStatus::Pending,
            "accepted" => ReservationStatus::Accepted,
            "rejected" => ReservationStatus::Rejected,
            "timeout" => ReservationStatus::Timeout,
            "canceled" => ReservationStatus::Canceled,
            "rescinded" => ReservationStatus::Rescinded,
            "wrapping" => ReservationStatus::Wrapping,
            "completed" => ReservationStatus::Completed,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_parse() {
        assert_eq!(CallStatus::parse("no-answer"), Some(CallStatus::NoAnswer));
        assert_eq!(CallStatus::parse("answered"), Some(CallStatus::InProgress));
        assert_eq!(CallStatus::parse("ringin"), None);
        assert_eq!(AnsweredBy::parse(Some("machine_end_beep")), AnsweredBy::Machine);
        assert_eq!(AnsweredBy::parse(Some("fax")), AnsweredBy::Machine);
        assert_eq!(AnsweredBy::parse(None), AnsweredBy::Human);
        assert_eq!(AnsweredBy::parse(Some("robot")), AnsweredBy::Unknown);
        assert_eq!(QueueResult::parse(Some("bridging-in-process")), QueueResult::BridgingInProcess);
        assert_eq!(QueueResult::parse(None), QueueResult::Error);
        assert_eq!(ScreenKey::parse(Some("1")), ScreenKey::Accept);
        assert_eq!(ScreenKey::parse(Some("2")), ScreenKey::Other);
        assert_eq!(ScreenKey::parse(Some("11")), ScreenKey::Other);
        assert_eq!(ScreenKey::parse(Some("")), ScreenKey::Nothing);
        assert_eq!(ScreenKey::parse(None), ScreenKey::Nothing);
        assert_eq!(TaskStatus::parse("wrapping"), Some(TaskStatus::Wrapping));
        assert_eq!(ReservationStatus::parse("rescinded"), Some(ReservationStatus::Rescinded));
        for s in ["completed", "busy", "no-answer", "failed", "canceled"] {
            assert!(CallStatus::parse(s).is_some_and(CallStatus::is_final), "{s}");
        }
        for s in ["queued", "initiated", "ringing", "in-progress"] {
            assert!(CallStatus::parse(s).is_some_and(|c| !c.is_final()), "{s}");
        }
    }
}
