//! What the journey owes, derived from its whole state after every event:
//! dials (and their withdrawal, look-up or giving up), hang-ups, the caller's
//! redirect and the task's end, each sent again after a back-off if the
//! dispatcher gave up on it.

use twilio::sid::{CallSid, TaskSid};

use super::state::{Attempt, AttemptState, CallerState, Effort, Ending, ResState, Stop, TaskEnd};
use super::{Command, Cx, DialTarget, HANDOFF_MS, Journey, LOOKUP_EVERY_MS, MAX_LOOKUPS, ReservationEnd, TaskStatus};
use crate::domain::Outcome;

impl Journey {
    /// Derives the commands the state owes, after every event.
    pub(super) fn drive(&mut self, cx: &mut Cx) {
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
        self.drive_callback(cx);
        // One reservation's step can free another's dial (its look-ups ran
        // out, or it gave up): go round until nothing moves, so a tick at the
        // same instant owes nothing more. Each pass that moves sends a command
        // or settles, which no later pass repeats.
        // Every reservation each pass (no short circuit).
        loop {
            let mut moved = false;
            for i in 0..self.reservations.len() {
                moved |= self.drive_dial(i, cx);
            }
            if !moved {
                break;
            }
        }
        self.drive_accepts(cx);
        self.drive_legs(cx);
        self.drive_closing(cx);
        // Closing time may have made a callback (the closing policy), due at once
        // when its opening has passed already.
        self.drive_callback(cx);
        self.drive_redirect(cx);
        self.drive_task(cx);
        self.drive_voicemails(cx);
    }

    /// Tells a voicemail's recipients about it, once: when it is recorded,
    /// and its transcription came or stopped being worth the wait.
    fn drive_voicemails(&mut self, cx: &mut Cx) {
        for v in self.voicemails.iter_mut().filter(|v| v.due(cx.now)) {
            v.notified = true;
            cx.commands.extend(
                v.recipients.iter().map(|channel| Command::NotifyVoicemail {
                    recording: v.recording.clone(),
                    channel: channel.clone(),
                }),
            );
        }
    }

    /// At closing time no new dial starts, and a caller still waiting with no
    /// leg in play is settled `closed_while_waiting` (and redirected to
    /// voicemail below). A leg ringing or answered then is never cut: its
    /// own end decides. A callback never rings after closing: with no leg in
    /// play it lets its task go and waits for the next opening (the open
    /// period it is in becomes the one to close), or it ends as canceled.
    fn drive_closing(&mut self, cx: &mut Cx) {
        let now = cx.now;
        if self.outcome == Outcome::Pending
            && self.closed(now)
            && !self.leg_in_play()
            && let (Some(cb), Some(task)) = (self.callback.as_mut(), &self.task)
            && cb.wait_for_opening
            && !task.status.is_final()
            && !cb.let_go(&task.sid)
        {
            // A task created or adopted while closed is let go too.
            cb.closed_task = Some(task.sid.clone());
        }
        if self.closes_at_ms.is_none_or(|t| now < t) {
            return;
        }
        self.closed_now = true;
        if self.outcome == Outcome::Pending
            && self.caller.state == CallerState::Queued
            && self.callback.is_none()
            && !self.leg_in_play()
        {
            self.closed_while_waiting(now);
        }
        if self.outcome != Outcome::Pending || self.leg_in_play() {
            return;
        }
        let Some(cb) = self.callback.as_mut() else { return };
        // The next open period that has not ended yet.
        let next = self.later.iter().position(|p| p.closes_at_ms > now);
        match next.filter(|_| cb.wait_for_opening) {
            Some(k) => {
                let period = self.later[k];
                self.later.drain(..=k);
                self.opens_at_ms = Some(period.opens_at_ms);
                self.closes_at_ms = Some(period.closes_at_ms);
                self.closed_now = false;
                cb.next_at_ms = cb.next_at_ms.max(period.opens_at_ms);
                if let Some(task) = self.task.as_ref().filter(|t| !t.status.is_final() && !cb.let_go(&t.sid)) {
                    cb.closed_task = Some(task.sid.clone());
                }
            }
            None => {
                // By policy, staff call back by hand from the voicemail list.
                if let (true, Some(call), Some(location)) = (cb.to_list, &self.caller.sid, &self.location) {
                    cx.commands.push(Command::ListCallbackRequest {
                        call: call.clone(),
                        location: location.clone(),
                        number: cb.number.clone(),
                        since_ms: cb.since_ms,
                    });
                }
                self.settle(Outcome::CallbackCanceled);
            }
        }
    }

    /// The closing policy for a caller still waiting at closing time, with no
    /// leg in play: a callback at the next opening, when one is known; else
    /// voicemail (`closed_while_waiting`).
    pub(super) fn closed_while_waiting(&mut self, now: i64) {
        // The overflow location closed before the caller left the old queue.
        if self.moving().is_some() {
            self.call_off_transfer();
            return;
        }
        // (A callback needs the caller's call and location, as a chosen one does.)
        let can = self.caller.sid.is_some() && self.location.is_some();
        // (Not to an overflow location that has closed by now too.)
        let elsewhere = |o: &super::ClosingOverflow| self.location.as_ref() != Some(&o.location);
        if let Some(o) =
            self.closing_overflow.take().filter(|o| can && elsewhere(o) && o.closes_at_ms.is_none_or(|t| t > now))
        {
            self.transfer_at_closing(o);
            return;
        }
        match self.closing_callback.take().filter(|_| can && self.later.iter().any(|p| p.closes_at_ms > now)) {
            Some(cb) => self.call_back_at_opening(cb, now),
            None => self.settle(Outcome::ClosedWhileWaiting),
        }
    }

    /// The caller, still in the queue at closing time, moves to the overflow
    /// location's queue: the old queue's task (if known) and its reservations
    /// are let go (TaskRouter cancels the task as the caller leaves), the
    /// caller leaves (by the redirect owed below, or at the next `/hold`), and
    /// from then on the journey is the overflow location's: its closing time,
    /// its voicemail, and only a task `transferred` here is adopted. The
    /// caller's place and what they were told start again in the new queue.
    fn transfer_at_closing(&mut self, o: super::ClosingOverflow) {
        let Some(from) = self.location.clone() else { return };
        let old = self.task.take().map(|t| t.sid);
        for r in &mut self.reservations {
            r.end(ReservationEnd::Canceled);
        }
        self.transfer = Some(super::state::Transferred {
            from,
            to: o.location.clone(),
            left: false,
            redirect: None,
            tasks: old.into_iter().collect(),
            withdrawn: false,
            called_off: false,
        });
        self.location = Some(o.location);
        self.closes_at_ms = o.closes_at_ms;
        self.closed_now = false;
        self.opens_at_ms = None;
        self.later.clear();
        self.closing_callback = None;
        self.wait = super::state::Waiting::default();
    }

    /// The overflow location closed too while the caller was still in the
    /// old queue (the transfer's redirect still on its way): the transfer is
    /// called off, and the call ends as when the overflow location had closed
    /// first: the old location's, closed while waiting. One redirect takes the
    /// caller to its voicemail: the transfer's, which may be on the wire
    /// already and whose document now leads there (see `stand_in`), else one
    /// owed below, unless they leave by `<Leave>`.
    pub(super) fn call_off_transfer(&mut self) {
        if let Some(t) = self.transfer.as_mut().filter(|t| !t.left) {
            t.called_off = true;
            self.location = Some(t.from.clone());
        }
        self.settle(Outcome::ClosedWhileWaiting);
    }

    /// The caller, still in the queue at closing time, is to be called back
    /// at the next opening: the queue's task is let go (TaskRouter cancels it
    /// as the caller leaves), and the caller leaves the queue (at the next
    /// `/hold`, or by the redirect owed below) to hear so.
    fn call_back_at_opening(&mut self, cb: super::ClosingCallback, now: i64) {
        self.start_callback(cb.number, cb.tries, true, false, true, now);
    }

    /// The caller is to be called back from now on (`wait_for_opening`, and
    /// `at_closing`: made by the closing policy): the queue's task ends with
    /// the caller's leaving (TaskRouter cancels it), so it and its
    /// reservations are let go, and callback tasks take over with the
    /// caller's place.
    pub(super) fn start_callback(
        &mut self,
        number: twilio::E164,
        tries: u32,
        wait_for_opening: bool,
        to_list: bool,
        at_closing: bool,
        now: i64,
    ) {
        let old = self.task.take().map(|t| t.sid);
        for r in &mut self.reservations {
            r.end(ReservationEnd::Canceled);
        }
        self.callback = Some(super::state::Callback {
            number,
            since_ms: self.wait.since_ms.unwrap_or(now),
            tries: tries.max(1),
            missed: 0,
            round: 0,
            create: None,
            next_at_ms: now,
            old_tasks: old.into_iter().collect(),
            ended_task: None,
            wait_for_opening,
            closed_task: None,
            at_closing,
            to_list: to_list && !wait_for_opening,
            first_reservation: self.reservations.len() as u32,
        });
    }

    /// A callback's tasks: once the last one's call to the caller ended (and
    /// the task is completed), the next try's task after the pause; created
    /// again after a back-off if the dispatcher gave up on it.
    fn drive_callback(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let closed = self.closed(now);
        let (Some(cb), Some(call), Some(location)) = (self.callback.as_mut(), &self.caller.sid, &self.location) else {
            return;
        };
        if self.outcome != Outcome::Pending {
            return;
        }
        // The last try's task is done with (or the location closed on it): it
        // is no longer the journey's.
        if let Some(t) = self.task.as_ref().filter(|t| t.status.is_final() && cb.let_go(&t.sid)) {
            cb.old_tasks.push(t.sid.clone());
            self.task = None;
            for r in &mut self.reservations {
                r.end(ReservationEnd::Canceled);
            }
            cb.first_reservation = self.reservations.len() as u32;
        }
        // Nothing is created while the location is closed.
        if closed || self.task.is_some() || now < cb.next_at_ms {
            return;
        }
        let effort = match &mut cb.create {
            None => {
                cb.round += 1;
                cb.create = Some(Effort::first(now));
                1
            }
            Some(e) if e.due(now) => {
                e.again(now);
                e.round
            }
            Some(_) => return,
        };
        cx.commands.push(Command::CreateCallbackTask {
            call: call.clone(),
            location: location.clone(),
            number: cb.number.clone(),
            since_ms: cb.since_ms,
            round: cb.round,
            effort,
        });
    }

    /// Accepts a callback's reservation once its location pressed 1 (again
    /// after a back-off if the dispatcher gave up on it).
    fn drive_accepts(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(task) = self.task.as_ref().map(|t| t.sid.clone()) else { return };
        for r in &mut self.reservations {
            let callback = r.target.as_ref().is_some_and(|t| t.callback.is_some());
            let took = r.legs.iter().any(|l| l.bridging && r.is_current(&l.sid));
            if !(callback && took && r.status == ResState::Pending) {
                continue;
            }
            let round = match &mut r.accept {
                None => {
                    r.accept = Some(Effort::first(now));
                    1
                }
                Some(e) if e.due(now) => {
                    e.again(now);
                    e.round
                }
                Some(_) => continue,
            };
            cx.commands.push(Command::AcceptReservation { task: task.clone(), reservation: r.sid.clone(), round });
        }
    }

    /// Dial, withdraw, look up or give up, for one reservation. Returns
    /// whether it did any of them.
    fn drive_dial(&mut self, i: usize, cx: &mut Cx) -> bool {
        let now = cx.now;
        // Not for a callback's task that is done with (its try ended, or the
        // location closed on it), which TaskRouter may offer again.
        let let_go = |t: &super::state::Task| self.callback.as_ref().is_some_and(|cb| cb.let_go(&t.sid));
        let may_dial = self.awaits_location() && self.task.as_ref().is_some_and(|t| !t.status.is_final() && !let_go(t));
        // After closing no new dial starts; one already on its way goes on.
        let may_start = may_dial && !self.closed(now);
        let blocked = self.dial_blocked(i);
        let serves = self.serves(i);
        // Without a task nothing is dialled, but withdrawals and look-ups go on.
        let (task, caller) = (self.task.as_ref().map(|t| t.sid.clone()), self.caller.sid.clone());
        let owed = cx.commands.len();
        let max = cx.policy.max_dial_attempts.max(1);
        let may_dial = may_dial && serves;
        if self.reservations[i].all_at_once() {
            let start = may_dial && may_start && !blocked && task.is_some();
            return self.drive_dial_all(i, (task, caller), (may_dial, start), cx) || cx.commands.len() > owed;
        }
        let r = &mut self.reservations[i];
        let wants = may_dial && r.status == ResState::Pending;
        let next = r.attempts.len() as u32 + 1;
        let phones = r.target.as_ref().map_or(1, DialTarget::phone_count);
        // Which phone a new attempt would dial: the first; the same one again
        // after a create that certainly made no call (up to `max` creates per
        // phone, then the next phone); the next one after a leg that ended
        // without a person (see `Attempt::missed`). None: nothing to dial yet.
        let phone = match r.attempts.last() {
            None => Some(0),
            Some(a @ Attempt { state: AttemptState::NotPlaced, .. }) => {
                let creates = r.attempts.iter().filter(|b| b.phone == a.phone).count();
                Some(if creates as u32 >= max { a.phone + 1 } else { a.phone })
            }
            Some(Attempt { state: AttemptState::Placed { leg }, missed: Some(_), phone, .. }) => {
                let ended = r.legs.iter().any(|l| l.sid == *leg && !l.reported.is_live());
                ended.then_some(phone + 1)
            }
            Some(_) => None,
        };
        let mut give_up = false;
        let last_placed = r.attempts.last().is_some_and(|a| matches!(a.state, AttemptState::Placed { .. }));
        match r.attempts.last_mut().map(|a| &mut a.state) {
            None | Some(AttemptState::NotPlaced) | Some(AttemptState::Placed { .. })
                if wants && may_start && phone.is_some() =>
            {
                let phone = phone.unwrap_or_default();
                match &r.target {
                    Some(_) if phone >= phones && !last_placed => give_up = true,
                    Some(target) if !blocked && phone < phones && task.is_some() => {
                        let (target, task) = (target.for_phone(phone), task.clone().expect("checked"));
                        r.attempts.push(Attempt {
                            n: next,
                            sent_ms: now,
                            state: AttemptState::InFlight { withdrawn: false },
                            phone,
                            missed: None,
                        });
                        cx.commands.push(Command::Dial {
                            reservation: r.sid.clone(),
                            task,
                            attempt: next,
                            caller,
                            target,
                        });
                    }
                    _ => {}
                }
            }
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
                        to: target.phone(a.phone).clone(),
                        placed_after_ms: a.sent_ms,
                    });
                }
            }
            _ => {}
        }
        // A callback's location that could not be dialled settles nothing, as
        // when it misses the call: the reservation times out and TaskRouter
        // offers the task again (closing time ends the wait).
        if give_up && !self.outcome.is_final() && self.callback.is_none() {
            self.settle(Outcome::DialFailed);
            return true;
        }
        cx.commands.len() > owed
    }

    /// [`Journey::drive_dial`] for a reservation whose phones ring all at once:
    /// each phone gets its own attempts (dialled together, each again after a
    /// create that certainly made no call, up to `max_dial_attempts`), none
    /// once a leg is being bridged; the call settles `dial_failed` when every
    /// phone's creates were refused. `may` is (may dial, may start a dial).
    fn drive_dial_all(
        &mut self,
        i: usize,
        (task, caller): (Option<TaskSid>, Option<CallSid>),
        (may_dial, may_start): (bool, bool),
        cx: &mut Cx,
    ) -> bool {
        let now = cx.now;
        let max = cx.policy.max_dial_attempts.max(1);
        let r = &mut self.reservations[i];
        let Some(target) = r.target.clone() else { return false };
        let wants = may_dial && r.status == ResState::Pending;
        let bridging = r.legs.iter().any(|l| l.bridging);
        for k in 0..target.phone_count() {
            let creates = r.attempts.iter().filter(|a| a.phone == k).count() as u32;
            let latest = r.attempts.iter().rposition(|a| a.phone == k);
            // Above every attempt known, an adopted one included: keys stay unique.
            let next = r.attempts.iter().map(|a| a.n).max().unwrap_or(0).max(r.attempts.len() as u32) + 1;
            match latest.map(|j| (j, &mut r.attempts[j].state)) {
                None | Some((_, AttemptState::NotPlaced)) if wants && may_start && !bridging && creates < max => {
                    let Some(task) = task.clone() else { continue };
                    r.attempts.push(Attempt {
                        n: next,
                        sent_ms: now,
                        state: AttemptState::InFlight { withdrawn: false },
                        phone: k,
                        missed: None,
                    });
                    cx.commands.push(Command::Dial {
                        reservation: r.sid.clone(),
                        task,
                        attempt: next,
                        caller: caller.clone(),
                        target: target.for_phone(k),
                    });
                }
                Some((j, AttemptState::InFlight { withdrawn })) if (!wants || bridging) && !*withdrawn => {
                    *withdrawn = true;
                    let attempt = r.attempts[j].n;
                    cx.commands.push(Command::WithdrawDial { reservation: r.sid.clone(), attempt });
                }
                Some((j, AttemptState::Unknown { next_lookup_ms, lookups }))
                    if *lookups < MAX_LOOKUPS && now >= *next_lookup_ms =>
                {
                    *lookups += 1;
                    *next_lookup_ms = now.saturating_add(LOOKUP_EVERY_MS);
                    let lookup = *lookups;
                    let a = &r.attempts[j];
                    cx.commands.push(Command::FindDial {
                        reservation: r.sid.clone(),
                        attempt: a.n,
                        lookup,
                        to: target.phone(k).clone(),
                        placed_after_ms: a.sent_ms,
                    });
                }
                _ => {}
            }
        }
        let refused_everywhere = (0..target.phone_count()).all(|k| {
            let creates = r.attempts.iter().filter(|a| a.phone == k).count() as u32;
            let latest = r.attempts.iter().rev().find(|a| a.phone == k);
            creates >= max && latest.is_some_and(|a| a.state == AttemptState::NotPlaced)
        });
        if wants && may_start && refused_everywhere && !self.outcome.is_final() && self.callback.is_none() {
            self.settle(Outcome::DialFailed);
            return true;
        }
        false
    }

    /// Another leg of this caller may be ringing: a dial in flight or in doubt
    /// (until its lookups run out), or a live leg not yet handed off.
    fn dial_blocked(&self, i: usize) -> bool {
        self.reservations.iter().enumerate().any(|(j, r)| {
            let dial_in_doubt = j != i
                && r.latest().iter().any(|a| match a.state {
                    AttemptState::InFlight { .. } => true,
                    AttemptState::Unknown { lookups, .. } => lookups < MAX_LOOKUPS,
                    _ => false,
                });
            let live_leg = r.legs.iter().any(|l| {
                l.reported.is_live()
                    && !(j == i && r.is_current(&l.sid))
                    && l.stop.as_ref().is_none_or(|s| !s.handed_off)
            });
            dial_in_doubt || live_leg
        })
    }

    /// Hangs up every live leg nobody wants: of an ended reservation, a stray,
    /// or one ringing for a caller who is gone or settled elsewhere.
    fn drive_legs(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let caller_waits = self.awaits_location();
        // Connected, perhaps with the accept missed: the current leg may be the
        // bridged one, and cutting it would cut the conversation.
        let in_call = self.outcome == Outcome::Connected && self.caller.state != CallerState::Gone;
        let serving: Vec<bool> = (0..self.reservations.len()).map(|i| self.serves(i)).collect();
        for (r, serves) in self.reservations.iter_mut().zip(serving) {
            let status = r.status;
            // A callback's leg that accepted dials the caller itself: that call
            // goes on when TaskRouter takes the reservation back before our
            // accept landed (it failed, or came too late).
            let calls_back = r.target.as_ref().is_some_and(|t| t.callback.is_some());
            // The current legs, less those that lost to a leg being bridged (all at once).
            let wanted: Vec<CallSid> = r
                .legs
                .iter()
                .filter(|l| r.is_current(&l.sid) && !r.other_bridging(&l.sid))
                .map(|l| l.sid.clone())
                .collect();
            for l in r.legs.iter_mut().filter(|l| l.reported.is_live()) {
                let is_current = wanted.contains(&l.sid);
                let keep = is_current
                    && match status {
                        ResState::Pending => (caller_waits && serves) || in_call,
                        ResState::Accepted | ResState::Wrapping => true,
                        ResState::Ended { .. } => calls_back && l.bridging,
                        ResState::Completed => false,
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

    /// A transfer at closing time whose caller is still in the old queue.
    pub(super) fn moving(&self) -> Option<&super::state::Transferred> {
        self.transfer
            .as_ref()
            .filter(|t| !t.left && self.outcome == Outcome::Pending && self.caller.state == CallerState::Queued)
    }

    /// The effort of the redirect owed: the transfer's while it moves the
    /// caller, or while it stands for the one to voicemail, else that one.
    pub(super) fn redirect_effort(&self) -> Option<Effort> {
        match self.moving() {
            Some(t) => t.redirect,
            None => self.stand_in().or(self.redirect),
        }
    }

    /// The redirect of a transfer called off before the caller left the old
    /// queue, owed and not given up by the dispatcher: it may be on the wire
    /// already (a withdrawal would not stop it), and its document now leads
    /// to the old location's voicemail (`transfer_asked`). So it stands for
    /// the redirect to voicemail: none other is owed while it may still land,
    /// and `/hold` holds the caller for it within its grace.
    pub(super) fn stand_in(&self) -> Option<Effort> {
        let t = self.transfer.as_ref().filter(|t| t.called_off && !t.left && !t.withdrawn)?;
        t.redirect.filter(|e| !e.failed)
    }

    /// The caller to redirect: to voicemail when settled by a failure while
    /// still queued, or out of the old queue of a transfer at closing time.
    pub(super) fn redirect_needed(&self) -> Option<&CallSid> {
        if self.moving().is_some() {
            return self.caller.sid.as_ref();
        }
        let diverting = matches!(
            self.outcome,
            Outcome::LocationBusy
                | Outcome::LocationNoAnswer
                | Outcome::LocationVoicemail
                | Outcome::DialFailed
                | Outcome::ClosedWhileWaiting
        );
        // A callback made at closing time, the caller still in the queue.
        let called_back = self.callback.as_ref().is_some_and(|cb| cb.at_closing)
            && self.outcome == Outcome::Pending
            && self.caller.state == CallerState::Queued;
        if (diverting || called_back) && self.caller.state.waiting() { self.caller.sid.as_ref() } else { None }
    }

    fn drive_redirect(&mut self, cx: &mut Cx) {
        // Out of the old queue, by whatever way, or (the transfer called off)
        // out of the queue: a transfer redirect still in the outbox must not go
        // out (it would pull the caller out of the new queue, or send them to
        // voicemail a second time). Harmless when it has landed already.
        let out = !self.caller.state.waiting();
        if let (Some(t), Some(call)) = (&mut self.transfer, &self.caller.sid)
            && (t.left || (t.called_off && out))
            && !t.withdrawn
            && let Some(e) = t.redirect.filter(|e| !e.failed)
        {
            t.withdrawn = true;
            cx.commands.push(Command::WithdrawRedirect {
                call: call.clone(),
                round: e.round,
                kind: super::RedirectKind::Transfer,
            });
        }
        // Out of the queue, by whatever way (`/hold` let them go by `<Leave>`
        // after the grace, say, or they hung up): the redirect to voicemail (or
        // to a callback's goodbye) still in the outbox must not go out, as it
        // would start the voicemail again. Harmless when it has landed already.
        if !self.redirect_withdrawn
            && !self.caller.state.waiting()
            && let (Some(call), Some(e)) = (&self.caller.sid, self.redirect.filter(|e| !e.failed))
        {
            self.redirect_withdrawn = true;
            cx.commands.push(Command::WithdrawRedirect {
                call: call.clone(),
                round: e.round,
                kind: super::RedirectKind::Fallback,
            });
        }
        let Some(call) = self.redirect_needed().cloned() else {
            return;
        };
        if self.stand_in().is_some() {
            return;
        }
        let moving = self.moving().map(|t| (t.from.clone(), t.to.clone()));
        let effort = match (&moving, &mut self.transfer) {
            (Some(_), Some(t)) => &mut t.redirect,
            _ => &mut self.redirect,
        };
        let round = match effort {
            None => {
                *effort = Some(Effort::first(cx.now));
                1
            }
            Some(e) if e.due(cx.now) => {
                e.again(cx.now);
                e.round
            }
            Some(_) => return,
        };
        let callback = self.callback.is_some();
        let (location, transfer) = match moving {
            Some((from, to)) => (Some(from), Some(to)),
            None => (self.location.clone(), None),
        };
        cx.commands.push(Command::RedirectCaller {
            call,
            location,
            // A callback or a transfer made at closing time: closed while
            // waiting, though not settled so.
            reason: if callback || transfer.is_some() { Outcome::ClosedWhileWaiting } else { self.outcome },
            round,
            callback,
            language: self.language.clone(),
            transfer,
        });
    }

    /// How the task must end, once that is decided: completed if a worker took
    /// the call and it is over, canceled if the outcome is final without that.
    pub(super) fn task_end_wanted(&self) -> Option<TaskEnd> {
        let task = self.task.as_ref()?;
        if task.status.is_final() {
            return None;
        }
        // A callback's task is assigned only by our accept of a reservation:
        // a call back made while TaskRouter took the reservation back (the
        // accept failed or came too late) leaves the task pending, which only
        // canceling ends (if the accept did land, its `reservation.accepted`
        // turns this into completing).
        // Only the current try's reservations speak for its task.
        let (connected, own) = match &self.callback {
            None => (self.outcome == Outcome::Connected, 0),
            Some(cb) => (false, cb.first_reservation as usize),
        };
        let took = connected
            || matches!(task.status, TaskStatus::Assigned | TaskStatus::Wrapping)
            || self.reservations.iter().skip(own).any(|r| r.status.took());
        // A callback's task let go: the location closed on it, or its try
        // ended without anyone accepting the reservation (TaskRouter took it
        // back first): nobody will complete it.
        let let_go = self.callback.as_ref().is_some_and(|cb| cb.let_go(&task.sid));
        if took {
            // A callback's task is over once its call to the caller ended (or
            // the location closed on it); the caller's own leg ended long before.
            let over = match &self.callback {
                Some(cb) => cb.let_go(&task.sid) || self.outcome.is_final(),
                None => {
                    task.status == TaskStatus::Wrapping
                        || self.reservations.iter().any(|r| r.status == ResState::Wrapping)
                        || self.caller.state == CallerState::Gone
                }
            };
            over.then_some(TaskEnd::Complete)
        } else if self.outcome.is_final() || let_go {
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
