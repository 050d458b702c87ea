//! The parts of a journey: the caller's leg, the task, each reservation with
//! its dial attempts and location legs, and the commands in progress. Each
//! part's facts only move forward.

use serde::{Deserialize, Serialize};
use twilio::E164;
use twilio::sid::{CallSid, ReservationSid, TaskSid};

use crate::domain::Outcome;

use super::{
    AnsweredBy, CallStatus, DialTarget, NotifyChannel, RETRY_FIRST_MS, RETRY_MAX_MS, ReservationEnd, TaskStatus,
};

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
    /// The state as `state_json` spells it (serde's snake_case), and as the
    /// journeys' `caller_state` column keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            CallerState::Unseen => "unseen",
            CallerState::Ivr => "ivr",
            CallerState::Queued => "queued",
            CallerState::Bridged => "bridged",
            CallerState::Diverted => "diverted",
            CallerState::Gone => "gone",
        }
    }

    pub(super) fn rank(self) -> u8 {
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
pub(super) struct Caller {
    pub(super) sid: Option<CallSid>,
    pub(super) state: CallerState,
    pub(super) reported: Reported,
}

impl Caller {
    pub(super) fn advance(&mut self, to: CallerState) {
        if to.rank() > self.state.rank() {
            self.state = to;
        }
    }
}

/// The caller's time in the queue, as the journey remembers it: when they
/// began to wait (the server's clock, for their place in the queue), and at
/// which queue time (Twilio's `QueueTime`, the clock the caller hears) they
/// were last told something. Only moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Waiting {
    /// When the caller was first known to be queued (ms); the queue's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) since_ms: Option<i64>,
    /// The queue time of the last `/hold` answered with an announcement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) announced_secs: Option<u32>,
    /// The queue time of the last `/hold` answered with a comfort message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) comfort_secs: Option<u32>,
    /// Comfort messages said so far: the next one is this one, in turn.
    #[serde(default)]
    pub(super) comforts: u32,
    /// The queue time of the last `/hold` answered with the callback offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) offered_secs: Option<u32>,
}

/// A leg's status as reported: forward only, in `SequenceNumber` order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Reported {
    pub(super) status: Option<CallStatus>,
    pub(super) sequence: Option<u32>,
}

impl Reported {
    /// Applies a report unless it is stale: an older `SequenceNumber`, or a
    /// status that is not further along (a final status is never replaced).
    /// Returns whether it changed anything.
    pub(super) fn apply(&mut self, status: CallStatus, sequence: Option<u32>) -> bool {
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

    pub(super) fn is_live(&self) -> bool {
        !self.status.is_some_and(CallStatus::is_final)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Task {
    pub(super) sid: TaskSid,
    pub(super) status: TaskStatus,
    pub(super) ending: Option<Ending>,
}

impl Task {
    /// Final statuses stay; an assigned task never goes back to pending.
    pub(super) fn set_status(&mut self, to: TaskStatus) {
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
pub(super) struct Ending {
    pub(super) end: TaskEnd,
    pub(super) effort: Effort,
}

/// A command we sent, and whether the dispatcher gave up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Effort {
    /// The round of the command: its key carries it from the second on.
    pub(super) round: u32,
    pub(super) at_ms: i64,
    pub(super) failed: bool,
}

impl Effort {
    pub(super) fn first(now: i64) -> Self {
        Effort { round: 1, at_ms: now, failed: false }
    }

    pub(super) fn retry_at(&self) -> Option<i64> {
        let backoff = (RETRY_FIRST_MS << self.round.saturating_sub(1).min(5)).min(RETRY_MAX_MS);
        self.failed.then(|| self.at_ms.saturating_add(backoff))
    }

    pub(super) fn due(&self, now: i64) -> bool {
        self.retry_at().is_some_and(|t| now >= t)
    }

    pub(super) fn again(&mut self, now: i64) {
        *self = Effort { round: self.round + 1, at_ms: now, failed: false };
    }

    pub(super) fn fail(&mut self, round: u32, now: i64) {
        if self.round == round && !self.failed {
            self.failed = true;
            self.at_ms = now;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Reservation {
    pub(super) sid: ReservationSid,
    /// From `reservation.created`; without it there is nothing to dial.
    pub(super) target: Option<DialTarget>,
    pub(super) status: ResState,
    pub(super) attempts: Vec<Attempt>,
    pub(super) legs: Vec<Leg>,
    /// A callback's reservation is accepted over the REST API once its
    /// location pressed 1 (no `<Dial><Queue>` accepts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) accept: Option<Effort>,
}

/// A reservation as the journey knows it. Only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum ResState {
    Pending,
    Accepted,
    Wrapping,
    Completed,
    Ended { why: ReservationEnd },
}

impl ResState {
    pub(super) fn rank(self) -> u8 {
        match self {
            ResState::Pending => 0,
            ResState::Accepted => 1,
            ResState::Wrapping => 2,
            ResState::Completed | ResState::Ended { .. } => 3,
        }
    }

    pub(super) fn is_final(self) -> bool {
        self.rank() == 3
    }

    /// A worker took it: the call was bridged.
    pub(super) fn took(self) -> bool {
        matches!(self, ResState::Accepted | ResState::Wrapping | ResState::Completed)
    }
}

/// One create request for a reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Attempt {
    pub(super) n: u32,
    pub(super) sent_ms: i64,
    pub(super) state: AttemptState,
    /// Which of the target's phones it dials, from 0 (absent in older
    /// journeys: the first, their only one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) phone: u32,
    /// Its leg ended, or was refused, without a person taking the call, and
    /// a later phone of the reservation is rung instead of settling this
    /// outcome (the phones are rung in order). Never set on the last phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) missed: Option<Outcome>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum AttemptState {
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
    pub(super) fn unresolved(&self) -> bool {
        matches!(self, AttemptState::InFlight { .. } | AttemptState::Unknown { .. })
    }
}

/// A location leg placed for a reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Leg {
    pub(super) sid: CallSid,
    pub(super) attempt: Option<u32>,
    pub(super) reported: Reported,
    pub(super) answered_by: Option<AnsweredBy>,
    /// `/dial-queue` answered it with the bridge.
    pub(super) bridging: bool,
    pub(super) stop: Option<Stop>,
    /// Its screening, when the location screens: no bridge before `accepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) screen: Option<Screen>,
}

/// A leg at the screening prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Screen {
    /// How many times the prompt has been said (up to `SCREEN_PROMPTS`).
    pub(super) prompt: u32,
    /// 1 was pressed.
    pub(super) accepted: bool,
}

/// We want this leg gone: refused at `/dial-queue` (its TwiML hangs up) or
/// hung up over the REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Stop {
    pub(super) since_ms: i64,
    /// [`HANDOFF_MS`] passed: it no longer holds back the next dial.
    pub(super) handed_off: bool,
    pub(super) hang_up: Option<Effort>,
}

impl Reservation {
    pub(super) fn new(sid: ReservationSid) -> Self {
        Reservation {
            sid,
            target: None,
            status: ResState::Pending,
            attempts: Vec::new(),
            legs: Vec::new(),
            accept: None,
        }
    }

    pub(super) fn advance(&mut self, to: ResState) {
        if !self.status.is_final() && to.rank() > self.status.rank() {
            self.status = to;
        }
    }

    /// TaskRouter takes back only a pending reservation.
    pub(super) fn end(&mut self, why: ReservationEnd) {
        if self.status == ResState::Pending {
            self.status = ResState::Ended { why };
        }
    }

    pub(super) fn attempt_mut(&mut self, n: u32) -> Option<&mut Attempt> {
        self.attempts.iter_mut().find(|a| a.n == n)
    }

    /// Its phones ring all at once (see `DialTarget::all_at_once`).
    pub(super) fn all_at_once(&self) -> bool {
        self.target.as_ref().is_some_and(DialTarget::all_at_once)
    }

    /// The attempts that speak for the reservation: the latest one; when its
    /// phones ring all at once, the latest of each phone.
    pub(super) fn latest(&self) -> Vec<&Attempt> {
        if !self.all_at_once() {
            return self.attempts.last().into_iter().collect();
        }
        let mut latest: Vec<&Attempt> = Vec::new();
        for a in self.attempts.iter().rev() {
            if !latest.iter().any(|b| b.phone == a.phone) {
                latest.push(a);
            }
        }
        latest
    }

    /// `leg` is the leg of one of its [`Reservation::latest`] attempts; any
    /// other leg is a stray. See `Journey::is_current` for legs of a
    /// reservation we never dialled.
    pub(super) fn is_current(&self, leg: &CallSid) -> bool {
        self.latest().iter().any(|a| matches!(&a.state, AttemptState::Placed { leg: l } if l == leg))
    }

    /// All at once: every phone was dialled and its latest attempt is done,
    /// its leg missed or its create refused; nothing more will ring.
    pub(super) fn every_phone_done(&self) -> bool {
        let phones = self.target.as_ref().map_or(1, DialTarget::phone_count);
        let latest = self.latest();
        (0..phones).all(|k| {
            latest.iter().any(|a| a.phone == k && (a.missed.is_some() || matches!(a.state, AttemptState::NotPlaced)))
        })
    }

    /// Another leg than `leg` is being bridged (all at once: it won).
    pub(super) fn other_bridging(&self, leg: &CallSid) -> bool {
        self.legs.iter().any(|l| l.bridging && l.sid != *leg)
    }

    /// Records that `sid` is a leg of this reservation (of `attempt`, or of the
    /// latest when the URL did not say), resolving that attempt if it was in
    /// doubt. Returns the leg's index.
    /// With `resolve` false the attempt stays as it is (see
    /// `Journey::superseded`): the leg is known, but not this attempt's.
    pub(super) fn note_leg(&mut self, sid: CallSid, attempt: Option<u32>, resolve: bool) -> usize {
        let n = attempt.or_else(|| self.attempts.last().map(|a| a.n));
        if let Some(a) = n.and_then(|n| self.attempt_mut(n))
            && resolve
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
                    screen: None,
                });
                self.legs.len() - 1
            }
        }
    }
}

/// A voicemail the caller left, and whether its location's recipients have
/// been told. Known from its recording (`/voicemail-complete`) or, when the
/// callbacks cross, first from its transcription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Voicemail {
    pub(super) recording: String,
    /// `/voicemail-complete` reported it.
    pub(super) recorded: bool,
    /// Who hears of it; empty for an empty recording.
    pub(super) recipients: Vec<NotifyChannel>,
    /// The notifications wait for the transcription until then.
    pub(super) transcript_by_ms: Option<i64>,
    /// The transcription callback came (completed or failed).
    pub(super) transcribed: bool,
    /// The notifications are owed (once).
    pub(super) notified: bool,
}

impl Voicemail {
    pub(super) fn new(recording: String) -> Self {
        Voicemail {
            recording,
            recorded: false,
            recipients: Vec::new(),
            transcript_by_ms: None,
            transcribed: false,
            notified: false,
        }
    }

    /// Recorded, not yet announced, and still waiting for its transcription:
    /// until when.
    pub(super) fn waiting_until(&self) -> Option<i64> {
        if self.recorded && !self.notified && !self.transcribed { self.transcript_by_ms } else { None }
    }

    /// Its notifications are owed now.
    pub(super) fn due(&self, now: i64) -> bool {
        self.recorded && !self.notified && self.waiting_until().is_none_or(|t| now >= t)
    }
}

/// The caller chose to be called back: they hung up, and the journey now
/// waits for the location through callback tasks, one per try, each created
/// with the caller's place in the queue (`since_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Callback {
    /// Whom to call back.
    pub(super) number: E164,
    /// When the caller began to wait: each task's `VirtualStartTime`.
    pub(super) since_ms: i64,
    /// Calls to the caller the location may make.
    pub(super) tries: u32,
    /// Calls to the caller made so far that nobody answered.
    pub(super) missed: u32,
    /// Callback tasks asked for so far; the current one's round.
    pub(super) round: u32,
    /// The current round's create command, until its task is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) create: Option<Effort>,
    /// No task is created before then (a retry's pause).
    pub(super) next_at_ms: i64,
    /// Tasks of this caller that are no longer the journey's: the queue's
    /// (canceled by TaskRouter when the caller left) and earlier tries'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) old_tasks: Vec<TaskSid>,
    /// The task whose call to the caller has ended (it is completed next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ended_task: Option<TaskSid>,
    /// Wait for the next opening at closing time (else end there).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) wait_for_opening: bool,
    /// The task let go because the location closed (it is canceled next; a
    /// new one is created at the next opening).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) closed_task: Option<TaskSid>,
    /// Made by the closing policy, not by the caller's key: the caller was
    /// still in the queue, and hears that the location closed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) at_closing: bool,
    /// Ended at closing time, it leaves a callback request in the
    /// location's voicemail list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) to_list: bool,
    /// The journey's reservations from this index on are the current try's;
    /// those before are the queue's and earlier tries' (an accepted one of
    /// those says nothing of the current task).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) first_reservation: u32,
}

impl Callback {
    /// `task` is done with: its call to the caller ended, or the location closed.
    pub(super) fn let_go(&self, task: &TaskSid) -> bool {
        self.ended_task.as_ref() == Some(task) || self.closed_task.as_ref() == Some(task)
    }
}

/// A caller moved at closing time from `from`'s queue to `to`'s (the closing
/// policy `overflow`): out of the old queue by the REST redirect (or a
/// `<Leave>` at its next `/hold`), into the new one with a new task, whose
/// reservations say `transferred`. Only moves forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Transferred {
    pub(super) from: String,
    pub(super) to: String,
    /// Out of `from`'s queue: its `<Enqueue>` action was heard, or `to`'s
    /// queue asked for hold music.
    pub(super) left: bool,
    /// The redirect that takes the caller out of `from`'s queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) redirect: Option<Effort>,
    /// `from`'s task, when it was known: let go (TaskRouter cancels it as the
    /// caller leaves that queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) tasks: Vec<TaskSid>,
    /// The redirect was withdrawn (as far as it had not gone out) once the
    /// caller left the old queue (or, the transfer called off, the queue).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) withdrawn: bool,
    /// `to` closed too before the caller left `from`'s queue: the transfer
    /// did not happen, and the journey is `from`'s again, closed while
    /// waiting (as when `to` had closed first).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) called_off: bool,
}

#[cfg(test)]
mod tests {
    use super::CallerState;

    #[test]
    fn a_caller_state_is_spelled_as_serde_spells_it() {
        use CallerState::*;
        for state in [Unseen, Ivr, Queued, Bridged, Diverted, Gone] {
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::Value::from(state.as_str()), "{state:?}");
        }
    }
}
