//! What an event tells the journey: each handler updates the facts it
//! carries, and answers the webhooks that need TwiML.

use twilio::sid::{CallSid, ReservationSid, TaskSid};

use super::state::{
    Attempt, AttemptState, CallerState, Leg, ResState, Reservation, Screen, Stop, Task, TaskEnd, Voicemail,
};
use super::{
    ANSWERED_GRACE_SECS, Answer, AnsweredBy, BRIDGE_EVIDENCE_MS, CALLBACK_OFFER_EVERY_SECS, CALLBACK_RETRY_MS,
    COMFORT_EVERY_SECS, CallStatus, Command, Cx, DialTarget, Event, Journey, LAST_OFFER_SECS, LOOKUP_AFTER_MS,
    MAX_LATER_OPENINGS, MAX_LOOKUPS, QueueResult, REDIRECT_GRACE_MS, ReservationEnd, ReservationStatus, SCREEN_PROMPTS,
    ScreenKey, TRANSCRIPTION_WAIT_MS, TaskStatus, Transfer,
};
use crate::config::AnsweredByPolicy;
use crate::domain::Outcome;

impl Journey {
    pub(super) fn on_event(&mut self, event: Event, cx: &mut Cx) -> Answer {
        let now = cx.now;
        match event {
            Event::CallerArrived { call } => {
                self.caller.sid.get_or_insert(call);
                self.caller.advance(CallerState::Ivr);
            }
            Event::CallerEnqueued { location, language } => {
                self.location.get_or_insert(location);
                if let Some(l) = language {
                    self.language.get_or_insert(l);
                }
                self.caller.advance(CallerState::Queued);
            }
            Event::CallerTurnedAway { outcome, location } => {
                if let Some(l) = location {
                    self.location.get_or_insert(l);
                }
                self.settle(outcome);
                self.caller.advance(CallerState::Diverted);
            }
            Event::ClosingTime { at_ms, later, callback, overflow } => {
                // The first one (from the caller's arrival) holds.
                if self.closes_at_ms.is_none() && self.transfer.is_none() {
                    self.closes_at_ms = Some(at_ms);
                    self.later =
                        later.into_iter().filter(|p| p.opens_at_ms >= at_ms).take(MAX_LATER_OPENINGS).collect();
                    self.closing_callback = callback;
                    // Only to another location, open after this one closes.
                    self.closing_overflow = overflow.filter(|o| {
                        self.location.as_ref() != Some(&o.location) && o.closes_at_ms.is_none_or(|t| t > at_ms)
                    });
                }
            }
            Event::Hold { queue_time_secs, announce_every_secs, comfort, callback_after_secs, queue } => {
                if let Some(answer) = self.hold_in_old_queue(queue.as_deref(), cx.now) {
                    return answer;
                }
                return self.on_hold(queue_time_secs, announce_every_secs, comfort, callback_after_secs, cx);
            }
            Event::CallbackChosen { number, tries, wait_for_opening, to_list } => {
                return self.callback_chosen(number, tries, (wait_for_opening, to_list), now);
            }
            Event::CallbackTaskCreated { task, round } => {
                // Never a task let go by a transfer at closing time.
                let adopt = self.task.is_none() && !self.transfer.as_ref().is_some_and(|t| t.tasks.contains(&task));
                if let Some(cb) = &mut self.callback
                    && cb.round == round
                    && !cb.old_tasks.contains(&task)
                {
                    if adopt {
                        self.task = Some(Task { sid: task.clone(), status: TaskStatus::Pending, ending: None });
                    }
                    if self.task.as_ref().is_some_and(|t| t.sid == task) {
                        cb.create = None;
                    }
                }
            }
            Event::CallbackDialed { reservation, answered } => self.callback_dialed(&reservation, answered, now),
            Event::TransferAsked => return self.transfer_asked(),
            Event::QueueExit { result, queue } => {
                if let Some(answer) = self.left_old_queue(result, queue.as_deref()) {
                    return answer;
                }
                return self.on_queue_exit(result);
            }
            Event::CallerStatus { status, sequence } => self.on_caller_status(status, sequence, now),
            Event::VoicemailRecorded { recording, duration_secs, recipients, transcribe } => {
                let v = self.voicemail(recording);
                if !v.recorded {
                    v.recorded = true;
                    // An empty recording (a hang-up at the beep) is kept, not announced.
                    if duration_secs != Some(0) {
                        for r in recipients {
                            if !v.recipients.contains(&r) {
                                v.recipients.push(r);
                            }
                        }
                    }
                    // Nobody to tell, nothing to wait for.
                    let wait = transcribe && !v.recipients.is_empty();
                    v.transcript_by_ms = wait.then(|| now.saturating_add(TRANSCRIPTION_WAIT_MS));
                }
            }
            Event::Transcribed { recording } => self.voicemail(recording).transcribed = true,
            Event::CallerSeen { call, status } => {
                self.caller.sid.get_or_insert(call);
                self.on_caller_status(status, None, now);
            }
            Event::LegAnswered { reservation, attempt, leg, answered_by } => {
                let answer = self.on_leg_answered(reservation, attempt, leg, answered_by, cx);
                return self.with_transfer(answer);
            }
            Event::LegScreened { reservation, attempt, leg, prompt, key } => {
                let answer = self.on_leg_screened(reservation, attempt, leg, prompt, key, cx);
                return self.with_transfer(answer);
            }
            Event::LegStatus { reservation, attempt, leg, status, sequence } => {
                self.on_leg_status(reservation, attempt, leg, status, sequence, now);
            }
            Event::LegSeen { reservation, attempt, leg, status } => {
                self.on_leg_status(reservation, attempt, leg, status, None, now);
            }
            Event::ReservationCreated { task, reservation, caller, target } => {
                // The new task of a caller transferred at closing time.
                if self.task.is_none()
                    && target.transferred
                    && self.callback.is_none()
                    && self.transfer.as_ref().is_some_and(|t| !t.tasks.contains(&task))
                {
                    self.task = Some(Task { sid: task.clone(), status: TaskStatus::Reserved, ending: None });
                }
                // A callback's task, heard of before the dispatcher's answer.
                if self.task.is_none()
                    && target.callback.is_some()
                    && !self.transfer.as_ref().is_some_and(|t| t.tasks.contains(&task))
                    && let Some(cb) = self.callback.as_mut().filter(|cb| !cb.old_tasks.contains(&task))
                {
                    cb.create = None;
                    self.task = Some(Task { sid: task.clone(), status: TaskStatus::Reserved, ending: None });
                }
                if self.owns_task(&task, Some(TaskStatus::Reserved)) {
                    if self.caller.sid.is_none() {
                        self.caller.sid = caller;
                    }
                    self.caller.advance(CallerState::Queued);
                    self.location.get_or_insert_with(|| target.location.clone());
                    let ended = self.task_ended();
                    let r = self.reservation(reservation);
                    r.target.get_or_insert(target);
                    // Heard of after its task ended (a late event): TaskRouter ended it then.
                    if ended {
                        r.end(ReservationEnd::Canceled);
                    }
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
                        TaskStatus::Assigned | TaskStatus::Wrapping if self.callback.is_none() => {
                            self.settle(Outcome::Connected);
                        }
                        TaskStatus::Assigned | TaskStatus::Wrapping => {}
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
                let ri = self.reservation_index(reservation);
                self.note_leg(ri, leg, Some(attempt));
            }
            Event::DialFailed { reservation, attempt } | Event::DialAbsent { reservation, attempt } => {
                if let Some(a) = self.attempt_mut(&reservation, attempt)
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

    /// The voicemail of `recording`, added when new.
    fn voicemail(&mut self, recording: String) -> &mut Voicemail {
        match self.voicemails.iter().position(|v| v.recording == recording) {
            Some(i) => &mut self.voicemails[i],
            None => {
                self.voicemails.push(Voicemail::new(recording));
                self.voicemails.last_mut().expect("just pushed")
            }
        }
    }

    /// Whether a TaskRouter event about `task` is this journey's; the first
    /// task seen is adopted (one task at a time). `implied` is the task's
    /// status the event implies, if any.
    fn owns_task(&mut self, task: &TaskSid, implied: Option<TaskStatus>) -> bool {
        if self.callback.as_ref().is_some_and(|cb| cb.old_tasks.contains(task)) {
            return false;
        }
        if self.transfer.as_ref().is_some_and(|t| t.tasks.contains(task)) {
            return false;
        }
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
            // After a transfer at closing time, another task heard to have ended
            // (a new queue's task the caller was redirected out of before its
            // `reservation.created` came) is let go as well: once the journey's
            // own task is gone too, a late event of it must not be adopted, owe
            // its cancel and reopen the closed journey.
            Some(_) => {
                if let Some(t) = self.transfer.as_mut()
                    && implied.is_some_and(TaskStatus::is_final)
                    && !t.tasks.contains(task)
                {
                    t.tasks.push(task.clone());
                }
                false
            }
            // Once the caller chose a callback, only the callback's own task is
            // adopted (see `CallbackTaskCreated`): the queue's, which the journey
            // may never have heard of, ends with the caller's leaving. So after
            // a transfer at closing time: only the new queue's task, which says
            // so (see `ReservationCreated`).
            None if self.callback.is_some() => false,
            // A task heard to have ended (canceled, completed) before the journey
            // knew whose it was, the new queue's perhaps (its `reservation.created`
            // late), is let go with the old queue's: never adopted, so a late
            // event of it neither dials nor reopens the journey.
            None if self.transfer.is_some() => {
                if let Some(t) = self.transfer.as_mut()
                    && implied.is_some_and(TaskStatus::is_final)
                {
                    t.tasks.push(task.clone());
                }
                false
            }
            None => {
                let status = implied.unwrap_or(TaskStatus::Reserved);
                self.task = Some(Task { sid: task.clone(), status, ending: None });
                true
            }
        }
    }

    /// The journey's task has ended (canceled or completed), and with it
    /// every reservation TaskRouter had made for it.
    fn task_ended(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.status.is_final())
    }

    fn reservation(&mut self, sid: ReservationSid) -> &mut Reservation {
        let i = self.reservation_index(sid);
        &mut self.reservations[i]
    }

    /// A leg of a journey that has dialled nothing itself (the Node version
    /// placed it before a cut-over, or our record of the dial is gone) is
    /// taken as that reservation's dial (the attempt its URL names, else 0),
    /// already placed: it is the
    /// current leg, and the reservation is not dialled again. Once the
    /// journey has an attempt, any other leg is a stray.
    fn adopt(&mut self, ri: usize, leg: &CallSid, attempt: Option<u32>, now: i64) {
        if self.reservations.iter().all(|r| r.attempts.is_empty()) {
            self.reservations[ri].attempts.push(Attempt {
                n: attempt.unwrap_or(0),
                sent_ms: now,
                state: AttemptState::Placed { leg: leg.clone() },
                phone: 0,
                missed: None,
            });
        }
    }

    /// Records a leg of reservation `ri`; it resolves its attempt unless
    /// that attempt was [`Journey::superseded`].
    fn note_leg(&mut self, ri: usize, leg: CallSid, attempt: Option<u32>) -> usize {
        let resolve = !self.superseded(ri, attempt);
        self.reservations[ri].note_leg(leg, attempt, resolve)
    }

    /// An attempt in doubt whose look-ups ran out no longer held back other
    /// dials, and another reservation has dialled since: a leg that turns up
    /// for it now is a stray (hung up), never a second leg for the caller.
    fn superseded(&self, ri: usize, attempt: Option<u32>) -> bool {
        let r = &self.reservations[ri];
        let a = match attempt {
            Some(n) => r.attempts.iter().find(|a| a.n == n),
            None => r.attempts.last(),
        };
        let Some(a) = a else { return false };
        let gave_up = matches!(a.state, AttemptState::Unknown { lookups, .. } if lookups >= MAX_LOOKUPS);
        gave_up
            && self
                .reservations
                .iter()
                .enumerate()
                .any(|(j, other)| j != ri && other.attempts.iter().any(|b| b.sent_ms > a.sent_ms))
    }

    /// The index of that reservation, known from now on.
    fn reservation_index(&mut self, sid: ReservationSid) -> usize {
        match self.reservations.iter().position(|r| r.sid == sid) {
            Some(i) => i,
            None => {
                self.reservations.push(Reservation::new(sid));
                self.reservations.len() - 1
            }
        }
    }

    /// The first final outcome wins.
    pub(super) fn settle(&mut self, outcome: Outcome) {
        if !self.outcome.is_final() && outcome.is_final() {
            self.outcome = outcome;
            self.settle_by_ms = None;
        }
    }

    fn on_hold(
        &mut self,
        queue_time_secs: u32,
        announce_every_secs: u32,
        comfort: bool,
        callback_after_secs: Option<u32>,
        cx: &mut Cx,
    ) -> Answer {
        self.caller.advance(CallerState::Queued);
        match (self.caller.state, self.outcome) {
            (CallerState::Gone | CallerState::Diverted, _) => Answer::Leave,
            (CallerState::Bridged, _) | (_, Outcome::Connected) => Answer::MUSIC,
            // Called back at the next opening (the closing policy): out of the queue.
            (_, Outcome::Pending) if self.callback.is_some() => {
                self.caller.advance(CallerState::Diverted);
                Answer::Leave
            }
            (_, Outcome::Pending) => {
                let max = cx.policy.max_queue_secs;
                let grace = self.location_answered() && queue_time_secs < max.saturating_add(ANSWERED_GRACE_SECS);
                // Where callbacks are offered, the queue's limit offers one last
                // time: a key within `LAST_OFFER_SECS` takes it, then voicemail.
                let last_offer = callback_after_secs.is_some()
                    && queue_time_secs >= max
                    && queue_time_secs < max.saturating_add(LAST_OFFER_SECS);
                // Closing time comes first: no offer to a caller it sends on.
                let closed = self.closed(cx.now) && !self.leg_in_play();
                if queue_time_secs >= max && !grace && last_offer && !closed {
                    let w = &mut self.wait;
                    let due = w.offered_secs.is_none_or(|t| t < max || t == queue_time_secs);
                    if due {
                        w.offered_secs = Some(queue_time_secs);
                    }
                    Answer::Hold { announce: false, comfort: None, callback: Some(due) }
                } else if queue_time_secs >= max && !grace {
                    self.settle(Outcome::QueueTimeout);
                    self.caller.advance(CallerState::Diverted);
                    Answer::Leave
                } else if closed {
                    // Closed while waiting: out of the queue now, no REST redirect needed.
                    let had = self.transfer.is_some();
                    self.closed_while_waiting(cx.now);
                    match &mut self.transfer {
                        // To the overflow location's queue (`/enqueue-action` says so).
                        Some(t) if !had => t.left = true,
                        _ => self.caller.advance(CallerState::Diverted),
                    }
                    Answer::Leave
                } else {
                    let answer = self.hold_answer(queue_time_secs, announce_every_secs, comfort);
                    self.with_callback_offer(answer, queue_time_secs, callback_after_secs)
                }
            }
            // Settled while queued (busy, no answer …): the redirect to
            // voicemail (or a transfer's called off) is on its way, unless it
            // failed or is overdue.
            (_, _) => {
                let overdue = self.redirect_effort().is_none_or(|e| e.failed || cx.now - e.at_ms >= REDIRECT_GRACE_MS);
                if overdue {
                    self.caller.advance(CallerState::Diverted);
                    Answer::Leave
                } else {
                    Answer::MUSIC
                }
            }
        }
    }

    /// The caller is queued from now on, if not before: their place in the
    /// queue counts from the first time.
    pub(super) fn note_waiting(&mut self, now: i64) {
        if self.caller.state == CallerState::Queued && self.wait.since_ms.is_none() {
            self.wait.since_ms = Some(now);
        }
    }

    /// What a caller still waiting for the location hears from this `/hold`,
    /// by its queue time (Twilio's clock, the one the caller hears): their
    /// place and wait when announcements are on and the last one was at least
    /// `announce_every_secs` earlier (or never); else the next comfort message
    /// when one is due (half-way between announcements, or every
    /// [`COMFORT_EVERY_SECS`] without them); else only music. Anyone else
    /// (being bridged, settled elsewhere) hears music.
    fn hold_answer(&mut self, queue_secs: u32, announce_every_secs: u32, comfort: bool) -> Answer {
        let waiting = self.caller.state == CallerState::Queued && self.outcome == Outcome::Pending;
        if !waiting {
            return Answer::MUSIC;
        }
        let w = &mut self.wait;
        // Twilio asking again for the same queue time (the answer was lost)
        // gets the same answer: the caller has not heard it.
        if announce_every_secs > 0 && w.announced_secs == Some(queue_secs) {
            return Answer::Hold { announce: true, comfort: None, callback: None };
        }
        if comfort && w.comfort_secs == Some(queue_secs) && w.comforts > 0 {
            return Answer::Hold { announce: false, comfort: Some(w.comforts - 1), callback: None };
        }
        let since = |at: Option<u32>, gap: u32| at.is_none_or(|t| queue_secs > t && queue_secs - t >= gap);
        if announce_every_secs > 0 && since(w.announced_secs, announce_every_secs) {
            w.announced_secs = Some(queue_secs);
            return Answer::Hold { announce: true, comfort: None, callback: None };
        }
        let gap = if announce_every_secs > 0 { announce_every_secs / 2 } else { COMFORT_EVERY_SECS };
        if comfort && since(w.announced_secs.max(w.comfort_secs), gap) {
            let n = w.comforts;
            w.comforts = n.saturating_add(1);
            w.comfort_secs = Some(queue_secs);
            return Answer::Hold { announce: false, comfort: Some(n), callback: None };
        }
        Answer::MUSIC
    }

    /// A hold answer for a caller who may choose a callback: a key press
    /// takes it at any time, and the offer is said from `after_secs` in the
    /// queue on, then every [`CALLBACK_OFFER_EVERY_SECS`] (a retried `/hold`
    /// hears it again).
    fn with_callback_offer(&mut self, answer: Answer, queue_secs: u32, after_secs: Option<u32>) -> Answer {
        let Answer::Hold { announce, comfort, .. } = answer else {
            return answer;
        };
        let Some(after) = after_secs else {
            return answer;
        };
        let w = &mut self.wait;
        let due = queue_secs >= after
            && (w.offered_secs == Some(queue_secs)
                || w.offered_secs.is_none_or(|t| queue_secs > t && queue_secs - t >= CALLBACK_OFFER_EVERY_SECS));
        if due {
            w.offered_secs = Some(queue_secs);
        }
        Answer::Hold { announce, comfort, callback: Some(due) }
    }

    /// 1 at the callback offer: the caller leaves the queue and hangs up,
    /// and callback tasks take over, keeping their place. Refused (the
    /// caller holds on) once a location leg has answered, or when the
    /// caller no longer waits in the queue.
    /// `at_closing`: whether the callback waits for the next opening, and
    /// whether it goes to the voicemail list when it ends at closing time.
    fn callback_chosen(&mut self, number: twilio::E164, tries: u32, at_closing: (bool, bool), now: i64) -> Answer {
        if self.callback.is_some() {
            // Twilio asked again: the same answer while the caller is still there.
            return if self.caller.state.waiting() || self.caller.state == CallerState::Diverted {
                Answer::Leave
            } else {
                Answer::Nothing
            };
        }
        let may = self.outcome == Outcome::Pending
            && self.caller.state == CallerState::Queued
            && self.caller.sid.is_some()
            && self.location.is_some()
            && !self.location_answered();
        if !may {
            return Answer::Nothing;
        }
        let (wait_for_opening, to_list) = at_closing;
        self.start_callback(number, tries, wait_for_opening, to_list, false, now);
        self.caller.advance(CallerState::Diverted);
        Answer::Leave
    }

    /// The location's leg dialled the caller back: answered, the callback is
    /// done; else another try later, or `callback_no_answer` after the last.
    fn callback_dialed(&mut self, reservation: &ReservationSid, answered: bool, now: i64) {
        let is_callback = self
            .reservations
            .iter()
            .find(|r| r.sid == *reservation)
            .and_then(|r| r.target.as_ref())
            .is_some_and(|t| t.callback.is_some());
        let task = self.task.as_ref().map(|t| t.sid.clone());
        let Some(cb) = self.callback.as_mut() else { return };
        if !is_callback || task.is_none() || cb.ended_task == task || self.outcome.is_final() {
            return;
        }
        cb.ended_task = task;
        if answered {
            self.outcome = Outcome::CallbackConnected;
            return;
        }
        cb.missed += 1;
        cb.next_at_ms = now.saturating_add(CALLBACK_RETRY_MS);
        if cb.missed >= cb.tries {
            self.settle(Outcome::CallbackNoAnswer);
        }
    }

    /// What a location leg that accepted gets: the bridge to the queued
    /// caller, or for a callback, a dial to the caller's number.
    fn connect(&self, reservation: ReservationSid) -> Answer {
        let target = self.reservations.iter().find(|r| r.sid == reservation).and_then(|r| r.target.as_ref());
        match target.and_then(|t| t.callback.as_ref().map(|c| (t, c))) {
            Some((t, c)) => Answer::CallBack { reservation, number: c.number.clone(), from: t.from.clone() },
            None => Answer::Bridge { reservation, transfer: None },
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

    /// Whether a `/hold` or `/enqueue-action` of `queue` is of the old queue
    /// of a transfer at closing time: named so, or unnamed before the caller
    /// left it. `None` without a transfer.
    fn in_old_queue(&self, queue: Option<&str>) -> Option<bool> {
        let t = self.transfer.as_ref()?;
        Some(match queue {
            Some(q) => q != t.to,
            None => !t.left,
        })
    }

    /// `/hold` of a transferred caller: the new queue's means the caller left
    /// the old one (None: the usual answer follows). The old queue's, while
    /// the caller waits to move, holds while the redirect is on its way, and
    /// answers `<Leave>` once it failed or is overdue; `/enqueue-action`
    /// then moves the caller.
    fn hold_in_old_queue(&mut self, queue: Option<&str>, now: i64) -> Option<Answer> {
        let old = self.in_old_queue(queue)?;
        let moving = self.moving().is_some();
        let t = self.transfer.as_mut()?;
        if !old {
            t.left = true;
            return None;
        }
        if !moving {
            // Twilio asking the old queue again after the caller left it.
            return t.left.then_some(Answer::Leave);
        }
        // The overflow location has closed too: the transfer is off, and the
        // caller goes to the old location's voicemail as any caller settled
        // while queued: held while the transfer's redirect, which now leads
        // there, is on its way, else by `<Leave>`.
        if self.closed(now) {
            self.call_off_transfer();
            return None;
        }
        let t = self.transfer.as_mut()?;
        let overdue = t.redirect.is_none_or(|e| e.failed || now - e.at_ms >= REDIRECT_GRACE_MS);
        if overdue {
            t.left = true;
            Some(Answer::Leave)
        } else {
            Some(Answer::MUSIC)
        }
    }

    /// Our redirect of a transfer at closing time reached the caller. A caller
    /// already in the new queue (they left the old one by `<Leave>` and the
    /// redirect, in flight, landed after) lost that queue's task, which is let
    /// go; they join the new queue again.
    fn transfer_asked(&mut self) -> Answer {
        let Some(t) = self.transfer.as_mut() else {
            return Answer::Fallback { location: self.location.clone(), reason: Outcome::ClosedWhileWaiting };
        };
        match self.outcome {
            Outcome::Pending => {
                if t.left
                    && let Some(task) = self.task.take()
                {
                    t.tasks.push(task.sid);
                    for r in &mut self.reservations {
                        r.end(ReservationEnd::Canceled);
                    }
                }
                t.left = true;
                Answer::TransferAtClosing { from: t.from.clone(), to: t.to.clone() }
            }
            Outcome::Connected | Outcome::CallbackConnected => Answer::Goodbye,
            other => Answer::Fallback { location: self.location.clone(), reason: other },
        }
    }

    /// `/enqueue-action` of the old queue of a transfer at closing time: after
    /// our redirect, nothing to say (the redirect's document moves the
    /// caller); after `<Leave>`, the transfer. Anything else (the caller hung
    /// up there) is heard as usual (None).
    fn left_old_queue(&mut self, result: QueueResult, queue: Option<&str>) -> Option<Answer> {
        if self.outcome != Outcome::Pending {
            return None;
        }
        // Our transfer redirect, late, took the caller out of the new queue:
        // `TransferAsked` puts them back; nothing settles here.
        if self.in_old_queue(queue) == Some(false)
            && result == QueueResult::Redirected
            && self.transfer.as_ref().is_some_and(|t| t.redirect.is_some())
        {
            return Some(Answer::Nothing);
        }
        if self.in_old_queue(queue) != Some(true) {
            return None;
        }
        let t = self.transfer.as_mut()?;
        match result {
            QueueResult::Redirected => {
                t.left = true;
                Some(Answer::Nothing)
            }
            QueueResult::Leave => {
                t.left = true;
                Some(Answer::TransferAtClosing { from: t.from.clone(), to: t.to.clone() })
            }
            _ => None,
        }
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
                // Hung up after a callback was made (chosen, or by the closing
                // policy) but before leaving the queue: it goes on, as when the
                // caller's own status says they hung up.
                if self.callback.is_none() {
                    self.settle(Outcome::CallerHungUp);
                }
                Answer::Nothing
            }
            QueueResult::Leave | QueueResult::Redirected if self.callback.is_some() => {
                self.caller.advance(CallerState::Diverted);
                match (&self.callback, result) {
                    (Some(cb), QueueResult::Leave) => {
                        Answer::CallbackBye { number: cb.number.clone(), closed: cb.at_closing }
                    }
                    // Redirected by us: the redirect's own document says goodbye.
                    _ => Answer::Nothing,
                }
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
        // Ended before any webhook of ours about it: Twilio took the call while
        // we could not answer (the reconciler's sweep of our numbers finds it).
        let never_heard = self.caller.state == CallerState::Unseen && self.task.is_none();
        self.caller.advance(CallerState::Gone);
        // Hung up after choosing a callback: the callback goes on.
        if self.outcome.is_final() || self.callback.is_some() {
            return;
        }
        if never_heard {
            self.settle(Outcome::Missed);
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
        let caller_waits = self.awaits_location();
        let callback = self.callback.is_some();
        let wants_bridge = cx.policy.for_answer(answered_by) == AnsweredByPolicy::Bridge;
        let may_bridge = matches!(self.outcome, Outcome::Pending | Outcome::Connected);
        let ri = self.reservation_index(reservation.clone());
        let caller_waits = caller_waits && self.serves(ri);
        self.adopt(ri, &leg, attempt, now);
        let i = self.note_leg(ri, leg, attempt);
        let current = self.is_current(ri, &self.reservations[ri].legs[i].sid);
        let r = &mut self.reservations[ri];
        let status = r.status;
        let target = r.target.clone();
        // All at once: another phone's leg was answered first and is being bridged.
        let lost = r.other_bridging(&r.legs[i].sid);
        let l = &mut r.legs[i];
        l.reported.apply(CallStatus::InProgress, None);
        // Without detection on the dial, nothing was detected (a person is assumed).
        let detected = target.as_ref().is_none_or(|t| t.amd);
        if detected {
            l.answered_by = Some(answered_by);
        }
        let refuse = |l: &mut Leg, caller_gone: bool| {
            l.stop.get_or_insert(Stop { since_ms: now, handed_off: false, hang_up: None });
            Answer::Refuse { caller_gone }
        };
        match (current, status) {
            // A repeated `/dial-queue` (Twilio retried): the same answer, while it holds.
            (true, ResState::Pending | ResState::Accepted)
                if l.bridging
                    && l.reported.is_live()
                    && may_bridge
                    && (caller.waiting() || caller == CallerState::Bridged || callback) =>
            {
                self.connect(reservation)
            }
            // A stray leg, or a reservation TaskRouter took back: the bridge would fail (14217).
            (false, _)
            | (_, ResState::Accepted | ResState::Wrapping | ResState::Completed | ResState::Ended { .. }) => {
                refuse(l, false)
            }
            (true, ResState::Pending) if lost => refuse(l, false),
            (true, ResState::Pending) if !caller_waits => refuse(l, answered_by == AnsweredBy::Human),
            // Being hung up already (it rang for nobody before its dial's result
            // made it the current leg): neither screened nor bridged.
            (true, ResState::Pending) if l.stop.is_some() => refuse(l, false),
            // A screened location hears who is calling first (again, if Twilio asks again).
            (true, ResState::Pending) if wants_bridge => match target.as_ref().filter(|t| t.screening.is_some()) {
                Some(t) if !l.screen.is_some_and(|s| s.accepted) => {
                    let screen = l.screen.get_or_insert(Screen { prompt: 1, accepted: false });
                    screen_prompt(t, screen.prompt)
                }
                _ => {
                    l.bridging = true;
                    self.connect(reservation)
                }
            },
            (true, ResState::Pending) => {
                let answer = refuse(l, false);
                self.leg_missed(ri, i, Outcome::LocationVoicemail);
                answer
            }
        }
    }

    /// A bridge to a reservation of another location than the caller's (the
    /// workflow moved the task to the overflow location) tells the caller.
    fn with_transfer(&self, answer: Answer) -> Answer {
        match answer {
            Answer::Bridge { reservation, .. } => {
                let to = self.reservations.iter().find(|r| r.sid == reservation).and_then(|r| r.target.as_ref());
                let transfer = match (to, &self.location) {
                    (Some(t), Some(own)) if t.location != *own => {
                        Some(Transfer { to: t.location.clone(), language: self.language.clone() })
                    }
                    _ => None,
                };
                Answer::Bridge { reservation, transfer }
            }
            other => other,
        }
    }

    /// The screening prompt's answer: 1 bridges; a wrong key asks once more;
    /// no key, or a wrong key at the last asking, is not answered.
    fn on_leg_screened(
        &mut self,
        reservation: ReservationSid,
        attempt: Option<u32>,
        leg: CallSid,
        prompt: u32,
        key: ScreenKey,
        cx: &mut Cx,
    ) -> Answer {
        let now = cx.now;
        let caller = self.caller.state;
        let caller_waits = self.awaits_location();
        let callback = self.callback.is_some();
        let may_bridge = matches!(self.outcome, Outcome::Pending | Outcome::Connected);
        let ri = self.reservation_index(reservation.clone());
        let caller_waits = caller_waits && self.serves(ri);
        self.adopt(ri, &leg, attempt, now);
        let i = self.note_leg(ri, leg, attempt);
        let current = self.is_current(ri, &self.reservations[ri].legs[i].sid);
        let connect = self.connect(reservation.clone());
        let r = &mut self.reservations[ri];
        let status = r.status;
        let target = r.target.clone().filter(|t| t.screening.is_some());
        // All at once: another phone's leg accepted first and is being bridged.
        let lost = r.other_bridging(&r.legs[i].sid);
        let l = &mut r.legs[i];
        l.reported.apply(CallStatus::InProgress, None);
        let refuse = |l: &mut Leg, caller_gone: bool| {
            l.stop.get_or_insert(Stop { since_ms: now, handed_off: false, hang_up: None });
            Answer::Refuse { caller_gone }
        };
        let accepted = l.screen.is_some_and(|s| s.accepted);
        let mut no_answer = false;
        let answer = match (current, status, target) {
            // 1 again (Twilio asked again): the same bridge, while it holds.
            (true, ResState::Pending | ResState::Accepted, _)
                if accepted
                    && l.bridging
                    && l.reported.is_live()
                    && may_bridge
                    && (caller.waiting() || caller == CallerState::Bridged || callback) =>
            {
                connect
            }
            (false, _, _)
            | (_, ResState::Accepted | ResState::Wrapping | ResState::Completed | ResState::Ended { .. }, _) => {
                refuse(l, false)
            }
            (true, ResState::Pending, _) if lost => refuse(l, false),
            // A person took the call, and the caller is gone: tell them.
            (true, ResState::Pending, _) if !caller_waits || l.stop.is_some() => {
                refuse(l, key == ScreenKey::Accept && !caller_waits)
            }
            // Not a screened leg as far as the journey knows (its reservation.created
            // may come later): 1 still means a person is there, and that they accepted.
            (true, ResState::Pending, None) if key == ScreenKey::Accept => {
                // A late answer to an earlier asking leaves the prompt where it got to.
                let prompt = prompt.clamp(1, SCREEN_PROMPTS).max(l.screen.map_or(1, |s| s.prompt));
                l.screen = Some(Screen { prompt, accepted: true });
                l.answered_by.get_or_insert(AnsweredBy::Human);
                l.bridging = true;
                connect
            }
            (true, ResState::Pending, None) => {
                no_answer = true;
                refuse(l, false)
            }
            (true, ResState::Pending, Some(t)) => {
                let screen =
                    l.screen.get_or_insert(Screen { prompt: prompt.clamp(1, SCREEN_PROMPTS), accepted: false });
                match key {
                    ScreenKey::Accept => {
                        screen.accepted = true;
                        // Pressing 1 is what tells a person from a machine here.
                        l.answered_by.get_or_insert(AnsweredBy::Human);
                        l.bridging = true;
                        connect
                    }
                    // The answer to an earlier asking, asked again: the prompt as it is now.
                    _ if prompt < screen.prompt => screen_prompt(&t, screen.prompt),
                    ScreenKey::Other if screen.prompt < SCREEN_PROMPTS => {
                        screen.prompt += 1;
                        screen_prompt(&t, screen.prompt)
                    }
                    ScreenKey::Other | ScreenKey::Nothing => {
                        no_answer = true;
                        refuse(l, false)
                    }
                }
            }
        };
        if no_answer {
            self.leg_missed(ri, i, Outcome::LocationNoAnswer);
        }
        answer
    }

    fn on_leg_status(
        &mut self,
        reservation: ReservationSid,
        attempt: Option<u32>,
        leg: CallSid,
        status: CallStatus,
        sequence: Option<u32>,
        now: i64,
    ) {
        let ri = self.reservation_index(reservation);
        let caller_waits = self.awaits_location() && self.serves(ri);
        self.adopt(ri, &leg, attempt, now);
        let i = self.note_leg(ri, leg, attempt);
        let current = self.is_current(ri, &self.reservations[ri].legs[i].sid);
        let r = &mut self.reservations[ri];
        let changed = r.legs[i].reported.apply(status, sequence);
        // All at once: the legs that lost to the one being bridged speak for nothing.
        let lost = r.other_bridging(&r.legs[i].sid);
        let screening = r.legs[i].screen.is_some_and(|s| !s.accepted) && !r.legs[i].bridging;
        // Only the end of the current leg of a live reservation speaks for the caller.
        if !(changed && current && r.status == ResState::Pending && caller_waits) || lost {
            return;
        }
        match status {
            CallStatus::Busy => self.leg_missed(ri, i, Outcome::LocationBusy),
            CallStatus::NoAnswer => self.leg_missed(ri, i, Outcome::LocationNoAnswer),
            CallStatus::Failed => self.leg_missed(ri, i, Outcome::DialFailed),
            // Hung up at the screening prompt: not answered.
            CallStatus::Completed | CallStatus::Canceled if screening => {
                self.leg_missed(ri, i, Outcome::LocationNoAnswer)
            }
            // Completed or canceled without a bridge: the reservation times out and
            // TaskRouter offers the task again.
            _ => {}
        }
    }

    /// A current leg of reservation `ri` (leg `li`) ended, or was refused,
    /// without a person taking the call. In order: `outcome` settles the call
    /// when that was the reservation's last phone; otherwise the attempt is
    /// marked, and `drive` dials the next phone once this leg has ended. All
    /// at once: the leg's attempt is marked, and the call settles when every
    /// phone is done ([`Reservation::every_phone_done`]).
    fn leg_missed(&mut self, ri: usize, li: usize, outcome: Outcome) {
        // A callback's location that missed its last phone settles nothing:
        // the reservation times out and TaskRouter offers the task again
        // (closing time ends the wait).
        let settle = |j: &mut Journey| {
            if j.callback.is_none() {
                j.settle(outcome);
            }
        };
        let r = &mut self.reservations[ri];
        let phones = r.target.as_ref().map_or(1, DialTarget::phone_count);
        if r.all_at_once() {
            let n = r.legs[li].attempt;
            if let Some(a) = r.attempts.iter_mut().rev().find(|a| Some(a.n) == n) {
                a.missed.get_or_insert(outcome);
            }
            if r.every_phone_done() {
                settle(self);
            }
            return;
        }
        match r.attempts.last_mut() {
            Some(a) if a.phone + 1 < phones => {
                a.missed.get_or_insert(outcome);
            }
            _ => settle(self),
        }
    }

    fn accepted(&mut self, reservation: ReservationSid) {
        self.reservation(reservation).advance(ResState::Accepted);
        if let Some(t) = &mut self.task {
            t.set_status(TaskStatus::Assigned);
        }
        // A callback's reservation is accepted before the caller is dialled:
        // the call to them decides.
        if self.callback.is_none() {
            self.caller.advance(CallerState::Bridged);
            self.settle(Outcome::Connected);
        }
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
        if self.callback.is_none() {
            self.settle(Outcome::Connected);
        }
    }

    /// TaskRouter cancels the task of a caller who left the queue, and with it
    /// any pending reservation. Unless we settled first, the caller hung up.
    fn task_canceled(&mut self) {
        for r in &mut self.reservations {
            r.end(ReservationEnd::Canceled);
        }
        let sid = self.task.as_ref().map(|t| &t.sid);
        match &self.callback {
            // After a transfer at closing time a task may end under a caller
            // who is still there (a late redirect took them out of its queue,
            // and they join it again): it is let go, and the caller's own leg
            // decides (its hang-up settles `caller_hung_up`).
            None if self.transfer.is_some() && self.caller.state != CallerState::Gone => {
                if let (Some(t), Some(task)) = (self.transfer.as_mut(), self.task.take()) {
                    t.tasks.push(task.sid);
                }
            }
            None => self.settle(Outcome::CallerHungUp),
            // Let go at closing time: the next opening's task takes over.
            Some(cb) if sid.is_some_and(|t| cb.let_go(t)) => {}
            // A callback's task canceled (its time ran out, or someone canceled it).
            Some(_) => self.settle(Outcome::CallbackCanceled),
        }
    }

    /// Only an assigned task can be completed: someone took the call.
    fn task_completed(&mut self) {
        for r in &mut self.reservations {
            r.end(ReservationEnd::Canceled);
            r.advance(ResState::Completed);
        }
        match &self.callback {
            None => self.settle(Outcome::Connected),
            // Completed after its call to the caller: that call decided.
            // (Or it was let go at closing time.)
            Some(cb) if self.task.as_ref().is_some_and(|t| cb.let_go(&t.sid)) => {}
            Some(_) => self.settle(Outcome::CallbackCanceled),
        }
    }

    fn reservation_seen(&mut self, sid: ReservationSid, status: ReservationStatus) {
        match status {
            // Known, or a bare entry: without `reservation.created`'s target it is not dialled.
            // (Listed before its task ended: it ended with it.)
            ReservationStatus::Pending => {
                let ended = self.task_ended();
                let r = self.reservation(sid);
                if ended {
                    r.end(ReservationEnd::Canceled);
                }
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

    /// One of our own attempts; results about anything else are ignored.
    fn attempt_mut(&mut self, reservation: &ReservationSid, attempt: u32) -> Option<&mut Attempt> {
        self.reservations.iter_mut().find(|r| r.sid == *reservation)?.attempt_mut(attempt)
    }

    fn dial_unknown(&mut self, reservation: ReservationSid, attempt: u32, now: i64) {
        if let Some(a) = self.attempt_mut(&reservation, attempt)
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
            Command::RedirectCaller { round, transfer, .. } => {
                let effort = match (transfer, &mut self.transfer) {
                    (Some(_), Some(t)) => &mut t.redirect,
                    _ => &mut self.redirect,
                };
                if let Some(e) = effort {
                    e.fail(round, now);
                }
            }
            Command::CreateCallbackTask { round, effort, .. } => {
                if let Some(e) = self.callback.as_mut().filter(|cb| cb.round == round).and_then(|cb| cb.create.as_mut())
                {
                    e.fail(effort, now);
                }
            }
            Command::AcceptReservation { reservation, round, .. } => {
                if let Some(e) =
                    self.reservations.iter_mut().find(|r| r.sid == reservation).and_then(|r| r.accept.as_mut())
                {
                    e.fail(round, now);
                }
            }
            Command::CancelTask { task, round, .. } => self.task_end_failed(&task, TaskEnd::Cancel, round, now),
            Command::CompleteTask { task, round } => self.task_end_failed(&task, TaskEnd::Complete, round, now),
            // The dial's own result follows a withdrawal; lookups go on by time.
            // A notification the dispatcher gave up on stays failed in its
            // outbox row: the voicemail itself is kept and listed as new.
            // A callback request is written with the journey: it never fails alone.
            Command::WithdrawDial { .. }
            | Command::WithdrawRedirect { .. }
            | Command::FindDial { .. }
            | Command::NotifyVoicemail { .. }
            | Command::ListCallbackRequest { .. } => {}
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
}

/// The screening prompt for the leg of `target`, its `prompt`th time.
fn screen_prompt(target: &DialTarget, prompt: u32) -> Answer {
    Answer::Screen {
        prompt,
        location: target.location.clone(),
        caller: target.caller.clone(),
        caller_name: target.caller_name.clone(),
        timeout_secs: target.screening.map_or(crate::domain::DEFAULT_SCREENING_TIMEOUT_SECS, |s| s.timeout_secs),
        waiting_since_ms: target.callback.as_ref().map(|c| c.since_ms),
    }
}
