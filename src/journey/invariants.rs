//! The journey's invariants, as one checker the property tests run after
//! every step ([`Checker::step`]) and at the end of a settled run
//! ([`Checker::settled`]).

use proptest::prelude::*;
use std::collections::BTreeSet;

use super::state::{AttemptState, Reported, ResState};
use super::*;

/// What the checker remembers across steps (the outbox's view: every key sent).
#[derive(Debug, Default)]
pub(super) struct Checker {
    keys: BTreeSet<String>,
    /// The rounds of the transfer's redirect owed and neither withdrawn nor
    /// given up by the dispatcher: they may still reach the caller.
    transfer_redirects: BTreeSet<u32>,
    /// The same for the redirect to voicemail (or to a callback's goodbye).
    fallback_redirects: BTreeSet<u32>,
}

impl Checker {
    /// Checks one step: `before` took `event` at `now` and became `after`, owing `step`.
    pub(super) fn step(
        &mut self,
        before: &Journey,
        event: &Event,
        now: Timestamp,
        policy: &Policy,
        after: &Journey,
        step: &Step,
    ) -> Result<(), TestCaseError> {
        let ctx = || format!("after {event:?}\nbefore: {before:#?}\nafter: {after:#?}\nstep: {step:#?}");

        // 1. Exactly one final outcome once final: never rewritten.
        if before.outcome.is_final() {
            prop_assert_eq!(after.outcome, before.outcome, "an outcome was rewritten {}", ctx());
        }

        // 2. Every command is new to the outbox: a repeated key would be dropped
        //    there, and the machine would believe it had acted.
        for c in &step.commands {
            prop_assert!(self.keys.insert(c.key()), "key {} owed twice {}", c.key(), ctx());
        }

        // 2b. One redirect at a time: the caller is not redirected to voicemail
        //     (or to a callback's goodbye) while a transfer's redirect may still
        //     go out; that one is withdrawn first (or the dispatcher gave up on it).
        if let Event::ActionFailed { command: Command::RedirectCaller { transfer: Some(_), round, .. } } = event {
            self.transfer_redirects.remove(round);
        }
        for c in &step.commands {
            match c {
                Command::WithdrawRedirect { round, kind: RedirectKind::Transfer, .. } => {
                    self.transfer_redirects.remove(round);
                }
                Command::RedirectCaller { transfer: Some(_), round, .. } => {
                    self.transfer_redirects.insert(*round);
                }
                Command::RedirectCaller { transfer: None, .. } => prop_assert!(
                    self.transfer_redirects.is_empty(),
                    "a redirect owed while the transfer's {:?} may still go out {}",
                    self.transfer_redirects,
                    ctx()
                ),
                _ => {}
            }
        }

        // 2c. Once the caller is out of the queue (by `<Leave>`, by the redirect
        //     itself, or hung up), no redirect to voicemail of theirs is left to
        //     go out: each round owed was withdrawn or given up by the
        //     dispatcher. (One still in the outbox would land on the voicemail
        //     and start it again.) A failed transfer's redirect with no transfer
        //     known fails the voicemail one, as in `action_failed`.
        if let Event::ActionFailed { command: Command::RedirectCaller { transfer, round, .. } } = event
            && (transfer.is_none() || before.transfer.is_none())
        {
            self.fallback_redirects.remove(round);
        }
        for c in &step.commands {
            match c {
                Command::WithdrawRedirect { round, kind: RedirectKind::Fallback, .. } => {
                    self.fallback_redirects.remove(round);
                }
                Command::RedirectCaller { transfer: None, round, .. } => {
                    self.fallback_redirects.insert(*round);
                }
                _ => {}
            }
        }
        if !after.caller.state.waiting() {
            prop_assert!(
                self.fallback_redirects.is_empty(),
                "the caller is out of the queue, and the redirect {:?} may still go out {}",
                self.fallback_redirects,
                ctx()
            );
        }

        // 3. No dial for a reservation that has ended, or for a caller who is not
        //    waiting; and creating a call is at most once: attempt n+1 only after
        //    attempt n certainly made no call.
        for c in &step.commands {
            if let Command::Dial { reservation, attempt, .. } = c {
                let r = after.reservations.iter().find(|r| &r.sid == reservation);
                prop_assert!(
                    r.is_some_and(|r| r.status == ResState::Pending),
                    "dialled an ended reservation {}",
                    ctx()
                );
                let was_pending = before
                    .reservations
                    .iter()
                    .find(|r| &r.sid == reservation)
                    .is_none_or(|r| r.status == ResState::Pending);
                prop_assert!(was_pending, "dialled a reservation that had ended {}", ctx());
                prop_assert!(after.awaits_location(), "dialled for a caller who is not waiting {}", ctx());
                prop_assert!(
                    !before.closed(now.as_millisecond()) && !after.closed(now.as_millisecond()),
                    "dialled while the location is closed {}",
                    ctx()
                );
                let attempts = r.map(|r| r.attempts.as_slice()).unwrap_or_default();
                if let Some(r) = r.filter(|r| r.all_at_once()) {
                    // All at once: each phone's attempts in turn, the one before
                    // certainly without a call; no phone that made a call, and
                    // none once a leg is being bridged.
                    let this = attempts.iter().rposition(|a| a.n == *attempt);
                    prop_assert!(this.is_some(), "a dial of no attempt {}", ctx());
                    let this = &attempts[this.unwrap_or_default()];
                    let same: Vec<&state::Attempt> = attempts.iter().filter(|a| a.phone == this.phone).collect();
                    prop_assert_eq!(same.last().map(|a| a.n), Some(*attempt), "{}", ctx());
                    if let [.., previous, _] = same.as_slice() {
                        prop_assert_eq!(
                            &previous.state,
                            &AttemptState::NotPlaced,
                            "re-dialled without proof {}",
                            ctx()
                        );
                    }
                    let target = r.target.as_ref();
                    prop_assert!(target.is_some_and(|t| this.phone < t.phone_count()), "no such phone {}", ctx());
                    if let Command::Dial { target: dialled, .. } = c {
                        prop_assert_eq!(Some(&dialled.to), target.map(|t| t.phone(this.phone)), "{}", ctx());
                    }
                    prop_assert!(!r.legs.iter().any(|l| l.bridging), "dialled after a leg won {}", ctx());
                    continue;
                }
                prop_assert_eq!(attempts.last().map(|a| a.n), Some(*attempt), "{}", ctx());
                // Creating a call is at most once: the attempt before this one
                // certainly made no call, or (the phones rung in order) its leg
                // ended without a person and this dial is for the next phone.
                if let [.., previous, this] = attempts {
                    let ended = |leg: &CallSid| {
                        r.is_some_and(|r| r.legs.iter().any(|l| &l.sid == leg && !l.reported.is_live()))
                    };
                    let proven = match &previous.state {
                        AttemptState::NotPlaced => true,
                        AttemptState::Placed { leg } => {
                            previous.missed.is_some() && ended(leg) && this.phone == previous.phone + 1
                        }
                        _ => false,
                    };
                    prop_assert!(proven, "re-dialled without proof {}", ctx());
                }
                // 3b. The phones are tried in order, each from the first: the same
                //     phone again only after a create that made no call, else the
                //     next one; and never a phone that already made a call.
                let Some(this) = attempts.last() else { continue };
                let target = r.and_then(|r| r.target.as_ref());
                prop_assert!(target.is_some_and(|t| this.phone < t.phone_count()), "no such phone {}", ctx());
                if let Some(Command::Dial { target: dialled, .. }) = Some(c) {
                    let want = target.map(|t| t.phone(this.phone));
                    prop_assert_eq!(Some(&dialled.to), want, "dialled another phone than its attempt's {}", ctx());
                }
                match &attempts[..attempts.len() - 1] {
                    [] => prop_assert_eq!(this.phone, 0, "the first dial is not to the first phone {}", ctx()),
                    [.., previous] => prop_assert!(
                        this.phone == previous.phone || this.phone == previous.phone + 1,
                        "phone {} after phone {} {}",
                        this.phone,
                        previous.phone,
                        ctx()
                    ),
                }
                let called_before = attempts[..attempts.len() - 1]
                    .iter()
                    .any(|a| a.phone == this.phone && matches!(a.state, AttemptState::Placed { .. }));
                prop_assert!(!called_before, "phone {} dialled twice for one reservation {}", this.phone, ctx());
            }
        }

        // 3c. Only the last phone's leg settles a leg's failure (busy, no answer,
        //     a machine, a failed dial); before it, the next phone is rung. A leg
        //     of a reservation without a target counts as its only phone.
        let leg_event = matches!(
            event,
            Event::LegStatus { .. }
                | Event::LegSeen { .. }
                | Event::LegAnswered { .. }
                | Event::LegScreened { .. }
                | Event::DialFailed { .. }
                | Event::DialAbsent { .. }
                | Event::Tick
        );
        let leg_failure = matches!(
            after.outcome,
            Outcome::LocationBusy | Outcome::LocationNoAnswer | Outcome::LocationVoicemail | Outcome::DialFailed
        );
        if leg_event && leg_failure && !before.outcome.is_final() {
            let at_last = after.reservations.iter().any(|r| match &r.target {
                None => true,
                Some(_) if r.all_at_once() => r.every_phone_done(),
                Some(t) => r.attempts.last().is_some_and(|a| a.phone + 1 >= t.phone_count()),
            });
            prop_assert!(at_last, "settled {} before the last phone {}", after.outcome, ctx());
        }
        // 3d. A missed attempt is never its reservation's last phone.
        for r in after.reservations.iter().filter(|r| !r.all_at_once()) {
            for a in r.attempts.iter().filter(|a| a.missed.is_some()) {
                let phones = r.target.as_ref().map_or(1, DialTarget::phone_count);
                prop_assert!(a.phone + 1 < phones, "the last phone's attempt marked missed {}", ctx());
            }
        }

        // 4. At most one live location leg per caller that we still want
        //    (counting a dial that may yet make one); all at once, one per
        //    phone of one reservation until a leg is bridged, then that one.
        //    At most one bridged leg per reservation.
        let mut ringing = 0;
        for r in &after.reservations {
            let legs = r.legs.iter().filter(|l| l.reported.is_live() && l.stop.is_none()).count();
            let doubt = if r.status != ResState::Pending {
                0
            } else {
                r.latest()
                    .iter()
                    .filter(|a| match a.state {
                        AttemptState::InFlight { withdrawn } => !withdrawn,
                        AttemptState::Unknown { lookups, .. } => lookups < MAX_LOOKUPS,
                        _ => false,
                    })
                    .count()
            };
            ringing += usize::from(legs + doubt > 0);
            if r.all_at_once() {
                // A dial in doubt for another phone may still turn up a leg after
                // the bridge: it is hung up once known.
                let phones = r.target.as_ref().map_or(1, |t| t.phone_count() as usize);
                prop_assert!(
                    legs + doubt <= phones,
                    "{} legs of {} for {phones} phones {}",
                    legs + doubt,
                    r.sid,
                    ctx()
                );
                if r.legs.iter().any(|l| l.bridging) {
                    prop_assert!(legs <= 1, "{legs} legs of {} wanted beside the bridged one {}", r.sid, ctx());
                }
            } else {
                prop_assert!(legs + doubt <= 1, "{} live location legs for one caller {}", legs + doubt, ctx());
            }
        }
        prop_assert!(ringing <= 1, "legs of {ringing} reservations wanted for one caller {}", ctx());
        for r in &after.reservations {
            let bridged = r.legs.iter().filter(|l| l.bridging).count();
            prop_assert!(bridged <= 1, "{bridged} legs of {} bridged {}", r.sid, ctx());
        }

        // 5. A leg placed for a reservation that ended, or ringing for a caller who
        //    left or was settled elsewhere, is being stopped, and its hang-up was
        //    owed (or its answer refused it).
        // A caller who chose a callback hung up, and still waits for the location.
        let caller_left = (after.caller.state == CallerState::Gone && after.callback.is_none())
            || (after.outcome.is_final() && after.outcome != Outcome::Connected);
        for r in &after.reservations {
            for l in r.legs.iter().filter(|l| l.reported.is_live()) {
                // A callback's leg that accepted calls the caller itself: TaskRouter
                // taking its reservation back does not end that call.
                let calls_back = l.bridging
                    && matches!(r.status, ResState::Ended { .. })
                    && r.target.as_ref().is_some_and(|t| t.callback.is_some());
                let unwanted = (r.status.is_final() && !calls_back) || (r.status == ResState::Pending && caller_left);
                if unwanted {
                    prop_assert!(l.stop.is_some(), "leg {} left ringing {}", l.sid, ctx());
                }
                if let Some(e) = l.stop.as_ref().and_then(|s| s.hang_up) {
                    let key = Command::HangUp { leg: l.sid.clone(), round: e.round }.key();
                    prop_assert!(self.keys.contains(&key), "hang-up of {} never owed {}", l.sid, ctx());
                }
            }
        }

        // 6. A leg answered for a caller who has left is not bridged.
        if let Answer::Bridge { reservation, transfer } = &step.answer {
            // The caller is told of a transfer exactly when the reservation is another location's.
            let to = after.reservations.iter().find(|r| &r.sid == reservation).and_then(|r| r.target.as_ref());
            let other = to.map(|t| &t.location).filter(|l| after.location.as_ref().is_some_and(|own| own != *l));
            prop_assert_eq!(transfer.as_ref().map(|t| &t.to), other, "{}", ctx());
            prop_assert!(
                !matches!(before.caller.state, CallerState::Gone | CallerState::Diverted),
                "bridged a leg to a caller who left {}",
                ctx()
            );
            prop_assert!(matches!(before.outcome, Outcome::Pending | Outcome::Connected), "{}", ctx());
            prop_assert!(matches!(after.outcome, Outcome::Pending | Outcome::Connected), "{}", ctx());
            let r = after.reservations.iter().find(|r| &r.sid == reservation);
            prop_assert!(r.is_some_and(|r| matches!(r.status, ResState::Pending | ResState::Accepted)), "{}", ctx());
        }

        // 6b. No bridge of a screened leg before its person pressed 1, and the
        //     screening prompt only for a wanted leg of a waiting caller.
        let screens = |j: &Journey, sid: &ReservationSid| {
            j.reservations
                .iter()
                .find(|r| &r.sid == sid)
                .and_then(|r| r.target.as_ref())
                .is_some_and(|t| t.screening.is_some())
        };
        let event_leg = match event {
            Event::LegAnswered { reservation, leg, .. } | Event::LegScreened { reservation, leg, .. } => {
                Some((reservation, leg))
            }
            _ => None,
        };
        let leg_of = |j: &Journey, r: &ReservationSid, l: &CallSid| {
            j.reservations.iter().find(|x| &x.sid == r).and_then(|x| x.legs.iter().find(|y| &y.sid == l)).cloned()
        };
        if let (Answer::Bridge { reservation, .. }, Some((r, leg))) = (&step.answer, event_leg)
            && screens(before, reservation)
        {
            let pressed_one = matches!(event, Event::LegScreened { key: ScreenKey::Accept, .. });
            let had_accepted = leg_of(before, r, leg).and_then(|l| l.screen).is_some_and(|s| s.accepted);
            // Told to bridge before `reservation.created` said the location
            // screens: Twilio asking again gets the same answer.
            let was_bridging = leg_of(before, r, leg).is_some_and(|l| l.bridging && l.screen.is_none());
            prop_assert!(
                pressed_one || had_accepted || was_bridging,
                "bridged a screened leg before it accepted {}",
                ctx()
            );
            let now_accepted = leg_of(after, r, leg).and_then(|l| l.screen).is_some_and(|s| s.accepted);
            prop_assert!(now_accepted || was_bridging, "bridged a screened leg not marked accepted {}", ctx());
        }
        for ra in &after.reservations {
            for la in &ra.legs {
                let was = leg_of(before, &ra.sid, &la.sid).and_then(|l| l.screen).is_some_and(|s| s.accepted);
                if la.screen.is_some_and(|s| s.accepted) && !was {
                    let by_one =
                        matches!(event, Event::LegScreened { key: ScreenKey::Accept, leg, .. } if *leg == la.sid);
                    prop_assert!(by_one, "leg {} accepted without a 1 {}", la.sid, ctx());
                }
                if let Some(sc) = la.screen {
                    prop_assert!(
                        (1..=SCREEN_PROMPTS).contains(&sc.prompt),
                        "prompt {} of leg {} {}",
                        sc.prompt,
                        la.sid,
                        ctx()
                    );
                }
            }
        }
        if let (Answer::Screen { prompt, .. }, Some((r, leg))) = (&step.answer, event_leg) {
            prop_assert!((1..=SCREEN_PROMPTS).contains(prompt), "screening prompt {prompt} {}", ctx());
            prop_assert!(screens(after, r), "screened a leg of a location that does not screen {}", ctx());
            prop_assert!(after.awaits_location(), "screened a leg for a caller who is not waiting {}", ctx());
            let ri = after.reservations.iter().position(|x| &x.sid == r);
            prop_assert!(
                ri.is_some_and(|i| after.reservations[i].status == ResState::Pending && after.is_current(i, leg)),
                "screened a leg that is not its pending reservation's own {}",
                ctx()
            );
        }

        // 7. The task's end is asked for, once due: canceled when the outcome is
        //    final and nobody took the call (a callback's task: nobody accepted
        //    a reservation of it, whatever its call back did, nor one of its
        //    earlier tries' tasks).
        let own = after.callback.as_ref().map_or(0, |cb| cb.first_reservation as usize);
        if let Some(t) = &after.task
            && !t.status.is_final()
            && after.outcome.is_final()
            && after.outcome != Outcome::Connected
            && !after.reservations.iter().skip(own).any(|r| r.status.took())
            && !matches!(t.status, TaskStatus::Assigned | TaskStatus::Wrapping)
        {
            prop_assert!(t.ending.as_ref().is_some_and(|e| e.end == TaskEnd::Cancel), "task left open {}", ctx());
        }

        // 8. Facts only move forward, so a late or repeated report cannot undo a
        //    newer one: call statuses, where the caller is, reservations, the
        //    task's end, and which leg is a reservation's own.
        // (The context is formatted only on failure: it is the journey twice over.)
        monotone(before, after).map_err(|e| TestCaseError::fail(format!("{e} {}", ctx())))?;

        // 9. The queue's time limit does not cut a leg that was just answered.
        if let (Event::Hold { queue_time_secs, .. }, Answer::Leave) = (event, &step.answer)
            && before.outcome == Outcome::Pending
        {
            let pending = before.reservations.iter().enumerate().filter(|(_, r)| r.status == ResState::Pending);
            let answered = pending.into_iter().any(|(i, r)| {
                r.legs.iter().any(|l| {
                    before.is_current(i, &l.sid)
                        && l.reported.is_live()
                        && l.stop.is_none()
                        && (l.bridging || l.reported.status == Some(CallStatus::InProgress))
                })
            });
            prop_assert!(
                !answered || *queue_time_secs >= policy.max_queue_secs + ANSWERED_GRACE_SECS,
                "the queue's limit cut an answered leg {}",
                ctx()
            );
        }

        // 12. A `/hold` speaks only to a caller still waiting for the location:
        //    their place when the location announces and the last announcement
        //    was at least its interval ago (or at the same queue time: Twilio
        //    asked again); a comfort message only where there are some, never
        //    together with an announcement.
        if let (
            Event::Hold { queue_time_secs, announce_every_secs, comfort, callback_after_secs, .. },
            Answer::Hold { announce, comfort: said, callback },
        ) = (event, &step.answer)
        {
            // The callback is offered only where the location has it, and
            // said first at `callback_after_secs` in the queue.
            prop_assert!(
                callback.is_none() || callback_after_secs.is_some(),
                "a callback offer where there is none {}",
                ctx()
            );
            if *callback == Some(true) {
                prop_assert!(
                    callback_after_secs.is_some_and(|a| *queue_time_secs >= a.min(policy.max_queue_secs)),
                    "offered too soon {}",
                    ctx()
                );
                prop_assert!(
                    after.outcome == Outcome::Pending && after.caller.state == CallerState::Queued,
                    "offered a callback to a caller not waiting {}",
                    ctx()
                );
            }
            if *announce || said.is_some() {
                prop_assert!(
                    after.outcome == Outcome::Pending && after.caller.state == CallerState::Queued,
                    "spoke to a caller not waiting {}",
                    ctx()
                );
            }
            if *announce {
                prop_assert!(*announce_every_secs > 0, "announced with announcements off {}", ctx());
                prop_assert!(
                    before.wait.announced_secs.is_none_or(|t| {
                        *queue_time_secs == t || *queue_time_secs >= t.saturating_add(*announce_every_secs)
                    }),
                    "announced again too soon {}",
                    ctx()
                );
                prop_assert!(said.is_none(), "a comfort message with an announcement {}", ctx());
            }
            prop_assert!(said.is_none() || *comfort, "a comfort message where there are none {}", ctx());
        }

        // 10. Everything owed at `now` was owed by this step: a tick at the same
        //    time owes nothing more, and the next wake-up is ahead.
        let (_, again) = apply(after.clone(), Event::Tick, now, policy);
        prop_assert!(again.commands.is_empty(), "a tick owed more: {:?} {}", again.commands, ctx());
        if let Some(wake) = after.wake_at() {
            prop_assert!(wake > now, "wake-up at {wake} is not after {now} {}", ctx());
        }

        // 10b. Once the location has closed, a caller still waiting has a leg
        //      in play (ringing or answered, never cut): otherwise they were
        //      sent on.
        //      (or, by the closing policy, they are to be called back, and
        //      leave the queue by the redirect owed).
        if after.closed(now.as_millisecond())
            && after.outcome == Outcome::Pending
            && after.caller.state == CallerState::Queued
        {
            let called_back = after.callback.as_ref().is_some_and(|cb| cb.at_closing && cb.wait_for_opening)
                && after.redirect_needed().is_some();
            prop_assert!(after.leg_in_play() || called_back, "a caller left waiting after closing {}", ctx());
        }

        // 10c. A callback never rings after closing: while the location is
        //      closed and no leg is in play, it waits for the next opening with
        //      its task let go (canceled), or it has ended; no task is created.
        if after.outcome == Outcome::Pending
            && after.closed(now.as_millisecond())
            && !after.leg_in_play()
            && let Some(cb) = &after.callback
        {
            prop_assert!(cb.wait_for_opening, "a callback kept past closing {}", ctx());
            prop_assert!(
                after.opens_at_ms.is_some_and(|o| o > now.as_millisecond()) || after.closes_at_ms.is_none(),
                "a callback waits past closing with no opening ahead {}",
                ctx()
            );
            prop_assert!(
                after.task.as_ref().is_none_or(|t| t.status.is_final() || cb.let_go(&t.sid)),
                "a callback's task kept while the location is closed {}",
                ctx()
            );
        }
        for c in &step.commands {
            if let Command::CreateCallbackTask { .. } = c {
                prop_assert!(!after.closed(now.as_millisecond()), "a callback's task created while closed {}", ctx());
            }
        }

        // 10d. A transfer at closing time (the closing policy `overflow`) is
        //      made once, to another location, and from then on the journey
        //      is the overflow location's: no task of the old queue is its
        //      own, and only a reservation of a task transferred there is
        //      dialled (or a callback's, chosen there), never at the closed
        //      location.
        if let Some(t) = &after.transfer {
            if let Some(b) = &before.transfer {
                prop_assert_eq!((&b.from, &b.to), (&t.from, &t.to), "a second transfer {}", ctx());
                prop_assert!(!b.left || t.left, "back into the old queue {}", ctx());
            }
            prop_assert!(t.from != t.to, "a transfer to the same location {}", ctx());
            // Called off (the overflow location closed before the caller left the
            // old queue), the journey is the old location's again, closed while waiting.
            let at = if t.called_off { &t.from } else { &t.to };
            prop_assert_eq!(after.location.as_ref(), Some(at), "{}", ctx());
            if t.called_off {
                prop_assert_eq!(after.outcome, Outcome::ClosedWhileWaiting, "{}", ctx());
            }
            match &before.transfer {
                Some(b) if b.called_off => prop_assert!(t.called_off, "a transfer called off, then on again {}", ctx()),
                Some(b) if t.called_off => {
                    prop_assert!(!b.left, "a transfer called off after the caller left the old queue {}", ctx());
                    prop_assert_eq!(before.outcome, Outcome::Pending, "{}", ctx());
                }
                _ => {}
            }
            prop_assert!(
                after.task.as_ref().is_none_or(|task| !t.tasks.contains(&task.sid)),
                "the old queue's task kept after a transfer {}",
                ctx()
            );
            for c in &step.commands {
                if let Command::Dial { reservation, .. } = c {
                    let r = after.reservations.iter().find(|r| &r.sid == reservation);
                    let target = r.and_then(|r| r.target.as_ref());
                    // The new queue's task, or a callback the caller chose there.
                    let ours = target.is_some_and(|x| x.transferred || x.callback.is_some());
                    prop_assert!(ours, "dialled the old queue's reservation after a transfer {}", ctx());
                    let closed = target.is_some_and(|x| x.location == t.from);
                    prop_assert!(!closed, "dialled the closed location after a transfer {}", ctx());
                }
            }
        }
        if before.transfer.is_none() && after.transfer.is_some() {
            prop_assert!(before.outcome == Outcome::Pending && !after.leg_in_play(), "{}", ctx());
        }

        // 11. A voicemail's recipients hear of it once, and only of a recording:
        //     each notification is owed in the step that made it due, never
        //     before the transcription came or its wait ran out.
        for c in &step.commands {
            if let Command::NotifyVoicemail { recording, .. } = c {
                let b = before.voicemails.iter().find(|v| &v.recording == recording);
                let a = after.voicemails.iter().find(|v| &v.recording == recording);
                prop_assert!(b.is_none_or(|v| !v.notified), "{recording} announced twice {}", ctx());
                prop_assert!(a.is_some_and(|v| v.recorded && v.notified), "{recording} announced unrecorded {}", ctx());
                let waited = a.and_then(|v| v.transcript_by_ms).is_none_or(|t| now.as_millisecond() >= t);
                prop_assert!(
                    waited || a.is_some_and(|v| v.transcribed),
                    "{recording} announced before its transcription {}",
                    ctx()
                );
            }
        }
        for v in &after.voicemails {
            prop_assert!(!v.due(now.as_millisecond()), "voicemail {} due and not announced {}", v.recording, ctx());
        }

        // 12. It survives a restart between any two steps.
        let json = serde_json::to_string(after).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Journey = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, after, "the journey did not survive serialisation");
        Ok(())
    }

    /// After a run in which the world settled: the journey is closed, with a
    /// final outcome and nothing owed that failed.
    pub(super) fn settled(&self, j: &Journey) -> Result<(), TestCaseError> {
        prop_assert!(j.outcome.is_final(), "no final outcome: {j:#?}");
        prop_assert!(j.is_closed(), "journey not closed: {j:#?}");
        prop_assert!(!j.degraded(), "journey degraded: {j:#?}");
        Ok(())
    }
}

/// Every fact of `before` still holds, or has moved forward, in `after`.
fn monotone(before: &Journey, after: &Journey) -> Result<(), String> {
    let status_forward = |b: &Reported, a: &Reported, what: &str| match (b.status, a.status) {
        (Some(x), Some(y)) if x.is_final() && x != y => Err(format!("{what}: final {x:?} became {y:?}")),
        (Some(x), Some(y)) if y.rank() < x.rank() => Err(format!("{what}: {x:?} went back to {y:?}")),
        (Some(x), None) => Err(format!("{what}: {x:?} forgotten")),
        _ => Ok(()),
    };
    status_forward(&before.caller.reported, &after.caller.reported, "the caller's leg")?;
    if after.caller.state.rank() < before.caller.state.rank() {
        return Err(format!("the caller went back from {:?} to {:?}", before.caller.state, after.caller.state));
    }
    let (wb, wa) = (&before.wait, &after.wait);
    // A transfer at closing time starts a new wait in another queue (its
    // queue time counts from 0): only at that step may it start again.
    let transferred = before.transfer.is_none() && after.transfer.is_some();
    if transferred {
        if wa.announced_secs.is_some() || wa.comfort_secs.is_some() || wa.offered_secs.is_some() {
            return Err(format!("a transfer kept what the old queue's caller was told: {wa:?}"));
        }
    } else if wb.since_ms.is_some() && wa.since_ms != wb.since_ms {
        return Err(format!("waiting since {:?} became {:?}", wb.since_ms, wa.since_ms));
    }
    if !transferred
        && (wa.announced_secs < wb.announced_secs || wa.comfort_secs < wb.comfort_secs || wa.comforts < wb.comforts)
    {
        return Err(format!("what the caller was told went back: {wb:?} to {wa:?}"));
    }
    // A callback, once chosen, stays; its old tasks only grow; and only a
    // callback lets go of a task (the queue's, or a finished try's).
    let old_tasks = |j: &Journey| j.callback.as_ref().map(|c| c.old_tasks.clone()).unwrap_or_default();
    if before.callback.is_some() && after.callback.is_none() {
        return Err("the callback was forgotten".into());
    }
    if !old_tasks(before).iter().all(|t| old_tasks(after).contains(t)) {
        return Err("a callback's old task was forgotten".into());
    }
    // A transfer at closing time lets go of the old queue's task too.
    let transfer_tasks = |j: &Journey| j.transfer.as_ref().map(|t| t.tasks.clone()).unwrap_or_default();
    if !transfer_tasks(before).iter().all(|t| transfer_tasks(after).contains(t)) {
        return Err("a transfer's old task was forgotten".into());
    }
    let let_go = before
        .task
        .as_ref()
        .is_some_and(|b| old_tasks(after).contains(&b.sid) || transfer_tasks(after).contains(&b.sid));
    if let (Some(b), Some(a)) = (&before.task, &after.task) {
        if (b.sid != a.sid && !let_go) || (b.sid == a.sid && b.status.is_final() && a.status != b.status) {
            return Err(format!("task {:?} {:?} became {:?} {:?}", b.sid, b.status, a.sid, a.status));
        }
    } else if before.task.is_some() && !let_go {
        return Err("the task was forgotten".into());
    }
    for rb in &before.reservations {
        let Some(ra) = after.reservations.iter().find(|r| r.sid == rb.sid) else {
            return Err(format!("reservation {} forgotten", rb.sid));
        };
        if ra.status.rank() < rb.status.rank() || (rb.status.is_final() && ra.status != rb.status) {
            return Err(format!("reservation {} went from {:?} to {:?}", rb.sid, rb.status, ra.status));
        }
        if rb.attempts.len() > ra.attempts.len() {
            return Err(format!("reservation {} forgot an attempt", rb.sid));
        }
        for (ab, aa) in rb.attempts.iter().zip(&ra.attempts) {
            if let AttemptState::Placed { leg } = &ab.state
                && aa.state != ab.state
            {
                return Err(format!("attempt {} of {} placed {leg}, then {:?}", ab.n, rb.sid, aa.state));
            }
            if ab.phone != aa.phone || (ab.missed.is_some() && aa.missed != ab.missed) {
                return Err(format!("attempt {} of {} went from {ab:?} to {aa:?}", ab.n, rb.sid));
            }
        }
        for lb in &rb.legs {
            let Some(la) = ra.legs.iter().find(|l| l.sid == lb.sid) else {
                return Err(format!("leg {} forgotten", lb.sid));
            };
            status_forward(&lb.reported, &la.reported, &format!("leg {}", lb.sid))?;
            if lb.stop.is_some() && la.stop.is_none() {
                return Err(format!("leg {} was being stopped, then wanted again", lb.sid));
            }
            match (lb.screen, la.screen) {
                (Some(_), None) => return Err(format!("leg {}'s screening forgotten", lb.sid)),
                (Some(b), Some(a)) if a.prompt < b.prompt || (b.accepted && !a.accepted) => {
                    return Err(format!("leg {}'s screening went from {b:?} to {a:?}", lb.sid));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
