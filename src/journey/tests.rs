//! Focused tests: one per defect of issue 8 (named after it), each asserting
//! the commands and answers the machine returns, plus the fixtures the
//! property tests share.

use std::str::FromStr;

use super::*;

fn sid<T: FromStr>(prefix: &str, n: u32) -> T
where
    T::Err: std::fmt::Debug,
{
    T::from_str(&format!("{prefix}{n:032x}")).expect("a well-formed test SID")
}

pub(super) fn call(n: u32) -> CallSid {
    sid("CA", n)
}
pub(super) fn task(n: u32) -> TaskSid {
    sid("WT", n)
}
pub(super) fn res(n: u32) -> ReservationSid {
    sid("WR", n)
}

pub(super) fn target() -> DialTarget {
    DialTarget {
        location: "north".into(),
        to: E164::parse("+14155550123").expect("a test number"),
        phones: Vec::new(),
        ring: crate::domain::Ring::InOrder,
        from: E164::parse("+12025550143").expect("a test number"),
        call_token: None,
        screening: None,
        amd: true,
        caller: Some("+13105550100".into()),
        caller_name: None,
        callback: None,
        transferred: false,
    }
}

/// The target of a callback's task: screened, calling back the caller.
pub(super) fn callback_target() -> DialTarget {
    DialTarget {
        callback: Some(crate::domain::CallbackAttributes {
            number: E164::parse("+13105550100").expect("a test number"),
            since_ms: 1_000_000,
            round: 1,
        }),
        ..screened_target()
    }
}

/// The target of a location that screens its calls, without AMD.
pub(super) fn screened_target() -> DialTarget {
    DialTarget {
        screening: Some(crate::domain::Screening { timeout_secs: 8, say_name: false }),
        amd: false,
        ..target()
    }
}

pub(super) fn policy() -> Policy {
    Policy {
        max_queue_secs: 120,
        on_machine: AnsweredByPolicy::Hangup,
        on_unknown: AnsweredByPolicy::Bridge,
        max_dial_attempts: 3,
    }
}

pub(super) fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).expect("a test time in range")
}

/// A journey and a clock; `on` applies one event at the current time.
#[derive(Clone)]
struct Run {
    j: Journey,
    now: i64,
    policy: Policy,
}

const CALLER: u32 = 1;
const TASK: u32 = 1;

impl Run {
    fn new() -> Self {
        Run { j: Journey::default(), now: 1_000_000, policy: policy() }
    }

    /// A caller who came through `/incoming-call` and was enqueued.
    fn queued() -> Self {
        let mut r = Run::new();
        r.on(Event::CallerArrived { call: call(CALLER) });
        r.on(Event::CallerEnqueued { location: "north".into(), language: None });
        r
    }

    fn on(&mut self, e: Event) -> Step {
        let (j, step) = apply(std::mem::take(&mut self.j), e, at(self.now), &self.policy);
        self.j = j;
        step
    }

    fn after(&mut self, ms: i64) -> &mut Self {
        self.now += ms;
        self
    }

    fn tick_at_wake(&mut self) -> Step {
        let wake = self.j.wake_at().expect("a wake-up is due");
        self.now = wake.as_millisecond();
        self.on(Event::Tick)
    }
}

/// `/hold` at a location that announces nothing and has no comfort messages.
fn hold(queue_time_secs: u32) -> Event {
    Event::Hold { queue_time_secs, announce_every_secs: 0, comfort: false, callback_after_secs: None, queue: None }
}

/// `/hold` at a location that announces every `every` seconds, with or without comfort messages.
fn hold_at(queue_time_secs: u32, every: u32, comfort: bool) -> Event {
    Event::Hold { queue_time_secs, announce_every_secs: every, comfort, callback_after_secs: None, queue: None }
}

fn announce() -> Answer {
    Answer::Hold { announce: true, comfort: None, callback: None }
}

fn created(r: u32) -> Event {
    Event::ReservationCreated { task: task(TASK), reservation: res(r), caller: Some(call(CALLER)), target: target() }
}

fn dial(r: u32, attempt: u32) -> Command {
    Command::Dial { reservation: res(r), task: task(TASK), attempt, caller: Some(call(CALLER)), target: target() }
}

fn placed(r: u32, attempt: u32, leg: u32) -> Event {
    Event::DialPlaced { reservation: res(r), attempt, leg: call(leg) }
}

fn leg_status(r: u32, leg: u32, status: CallStatus, sequence: u32) -> Event {
    Event::LegStatus { reservation: res(r), attempt: Some(1), leg: call(leg), status, sequence: Some(sequence) }
}

fn answered(r: u32, leg: u32, by: AnsweredBy) -> Event {
    Event::LegAnswered { reservation: res(r), attempt: Some(1), leg: call(leg), answered_by: by }
}

fn ended(r: u32, why: ReservationEnd) -> Event {
    Event::ReservationEnded { task: task(TASK), reservation: res(r), why }
}

fn hang_up(leg: u32) -> Command {
    Command::HangUp { leg: call(leg), round: 1 }
}

fn redirect(reason: Outcome) -> Command {
    Command::RedirectCaller {
        call: call(CALLER),
        location: Some("north".into()),
        reason,
        round: 1,
        callback: false,
        language: None,
        transfer: None,
    }
}

fn cancel(reason: Outcome) -> Command {
    Command::CancelTask { task: task(TASK), reason, round: 1 }
}

#[test]
fn defect_1_no_calls_row_every_failure_branch_still_acts() {
    // A Studio flow enqueued the caller: the journey starts at reservation.created.
    let failures = [
        (leg_status(1, 101, CallStatus::Busy, 2), Outcome::LocationBusy),
        (leg_status(1, 101, CallStatus::NoAnswer, 2), Outcome::LocationNoAnswer),
        (leg_status(1, 101, CallStatus::Failed, 2), Outcome::DialFailed),
    ];
    for (failure, outcome) in failures {
        let mut run = Run::new();
        assert_eq!(run.on(created(1)).commands, [dial(1, 1)]);
        assert_eq!(run.on(placed(1, 1, 101)).commands, []);
        let step = run.on(failure);
        assert_eq!(step.commands, [redirect(outcome), cancel(outcome)], "{outcome}");
        assert_eq!(run.j.outcome(), outcome);
    }

    // A machine answers.
    let mut run = Run::new();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let step = run.on(answered(1, 101, AnsweredBy::Machine));
    assert_eq!(step.answer, Answer::Refuse { caller_gone: false });
    let voicemail = Outcome::LocationVoicemail;
    assert_eq!(step.commands, [redirect(voicemail), cancel(voicemail)]);

    // Twilio refuses every create request.
    let mut run = Run::new();
    run.on(created(1));
    assert_eq!(run.on(Event::DialFailed { reservation: res(1), attempt: 1 }).commands, [dial(1, 2)]);
    assert_eq!(run.on(Event::DialFailed { reservation: res(1), attempt: 2 }).commands, [dial(1, 3)]);
    let step = run.on(Event::DialFailed { reservation: res(1), attempt: 3 });
    assert_eq!(step.commands, [redirect(Outcome::DialFailed), cancel(Outcome::DialFailed)]);
}

#[test]
fn defect_2_a_reservation_taken_back_while_its_dial_is_in_flight_has_its_leg_hung_up() {
    let mut run = Run::queued();
    assert_eq!(run.on(created(1)).commands, [dial(1, 1)]);
    // Taken back while the create request is out: withdraw it if it has not gone.
    assert_eq!(
        run.on(ended(1, ReservationEnd::Timeout)).commands,
        [Command::WithdrawDial { reservation: res(1), attempt: 1 }]
    );
    // The next reservation waits: the first dial may still make a leg.
    assert_eq!(run.on(created(2)).commands, []);
    // It did: that leg is hung up as soon as it is known, and still holds the next dial back.
    assert_eq!(run.on(placed(1, 1, 101)).commands, [hang_up(101)]);
    assert_eq!(run.after(1_000).on(Event::Tick).commands, []);
    // Once it has ended, the next reservation is dialled.
    assert_eq!(run.on(leg_status(1, 101, CallStatus::Canceled, 1)).commands, [dial(2, 1)]);

    // Without the final status callback, the hand-off ends by time.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    assert_eq!(run.on(ended(1, ReservationEnd::Timeout)).commands, [hang_up(101)]);
    assert_eq!(run.on(created(2)).commands, []);
    assert_eq!(run.tick_at_wake().commands, [dial(2, 1)]);
}

#[test]
fn defect_3_a_reservation_created_after_its_timeout_does_not_dial() {
    let mut run = Run::queued();
    assert_eq!(run.on(ended(1, ReservationEnd::Timeout)).commands, []);
    assert_eq!(run.on(created(1)).commands, [], "the late reservation.created must not dial");
    // The re-offer does.
    assert_eq!(run.on(created(2)).commands, [dial(2, 1)]);
}

/// A caller connected through reservation 1 and leg 101.
fn connected() -> Run {
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let step = run.on(answered(1, 101, AnsweredBy::Human));
    assert_eq!(step.answer, Answer::Bridge { reservation: res(1), transfer: None });
    run.on(Event::ReservationAccepted { task: task(TASK), reservation: res(1) });
    assert_eq!(run.j.outcome(), Outcome::Connected);
    run
}

#[test]
fn defect_4_complete_and_cancel_never_give_up_silently() {
    let mut run = connected();
    let complete = Command::CompleteTask { task: task(TASK), round: 1 };
    assert_eq!(
        run.on(Event::Wrapup { task: task(TASK), reservation: Some(res(1)) }).commands,
        std::slice::from_ref(&complete)
    );
    // The dispatcher spent its budget: nothing now, but the journey shows it and keeps it owed.
    assert_eq!(run.on(Event::ActionFailed { command: complete }).commands, []);
    assert!(run.j.degraded());
    let again = run.tick_at_wake();
    assert_eq!(again.commands, [Command::CompleteTask { task: task(TASK), round: 2 }]);
    assert_eq!(again.commands[0].key(), format!("complete-task:{}#2", task(TASK)));
    assert!(!run.j.degraded());
    run.on(Event::TaskCompleted { task: task(TASK) });
    run.on(leg_status(1, 101, CallStatus::Completed, 4));
    assert!(run.j.is_closed());

    // A cancel that failed for good is sent again too, and a failed redirect
    // makes the next `/hold` take the caller out with `<Leave>`.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let busy = Outcome::LocationBusy;
    run.on(leg_status(1, 101, CallStatus::Busy, 2));
    run.on(Event::ActionFailed { command: redirect(busy) });
    run.on(Event::ActionFailed { command: cancel(busy) });
    assert!(run.j.degraded());
    assert_eq!(run.on(hold(30)).answer, Answer::Leave);
    assert_eq!(run.tick_at_wake().commands, [Command::CancelTask { task: task(TASK), reason: busy, round: 2 }]);
}

#[test]
fn defect_5_what_the_reconciler_observes_drives_the_same_machine() {
    // reservation.timeout and the leg's end were missed during an outage: a
    // TaskRouter list shows the timeout, and the leg is hung up.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let seen = Event::ReservationSeen { task: task(TASK), reservation: res(1), status: ReservationStatus::Timeout };
    assert_eq!(run.on(seen).commands, [hang_up(101)]);

    // The accept and the wrap-up were missed: the task seen wrapping is completed.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let step = run.on(Event::TaskSeen { task: task(TASK), status: TaskStatus::Wrapping });
    assert_eq!(step.commands, [Command::CompleteTask { task: task(TASK), round: 1 }]);
    assert_eq!(run.j.outcome(), Outcome::Connected);

    // The caller hung up while we were down: a Calls fetch settles the journey.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let step = run.on(Event::CallerSeen { call: call(CALLER), status: CallStatus::Completed });
    assert_eq!(step.commands, [hang_up(101), cancel(Outcome::CallerHungUp)]);
}

#[test]
fn defect_6_a_failed_action_is_retried_at_a_time_not_by_holding_a_slot() {
    let mut run = connected();
    run.on(Event::Wrapup { task: task(TASK), reservation: None });
    let mut gaps = Vec::new();
    for round in 1..=3 {
        let failed_at = run.now;
        let command = Command::CompleteTask { task: task(TASK), round };
        assert_eq!(run.on(Event::ActionFailed { command }).commands, []);
        let wake = run.j.wake_at().expect("a retry is scheduled").as_millisecond();
        gaps.push(wake - failed_at);
        // Early ticks send nothing.
        assert_eq!(run.after(wake - failed_at - 1).on(Event::Tick).commands, []);
        assert_eq!(run.tick_at_wake().commands, [Command::CompleteTask { task: task(TASK), round: round + 1 }]);
    }
    assert_eq!(gaps, [RETRY_FIRST_MS, 2 * RETRY_FIRST_MS, 4 * RETRY_FIRST_MS]);
}

#[test]
fn defect_7_a_late_status_callback_from_an_old_leg_does_not_take_over() {
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.on(leg_status(1, 101, CallStatus::Ringing, 1));
    assert_eq!(run.on(ended(1, ReservationEnd::Timeout)).commands, [hang_up(101)]);
    run.on(leg_status(1, 101, CallStatus::Canceled, 2));
    assert_eq!(run.on(created(2)).commands, [dial(2, 1)]);
    run.on(placed(2, 1, 102));
    run.on(leg_status(2, 102, CallStatus::Ringing, 1));
    // Late and repeated callbacks of the old leg.
    assert_eq!(run.on(leg_status(1, 101, CallStatus::Ringing, 1)).commands, []);
    assert_eq!(run.on(leg_status(1, 101, CallStatus::Initiated, 0)).commands, []);
    // An older callback of the current leg does not move it back either.
    run.on(leg_status(2, 102, CallStatus::InProgress, 3));
    run.on(leg_status(2, 102, CallStatus::Ringing, 2));
    assert_eq!(run.j.reservations[1].legs[0].reported.status, Some(CallStatus::InProgress));
    // The caller hangs up: the current leg is stopped, not the old one.
    let step = run.on(Event::QueueExit { result: QueueResult::Hangup, queue: None });
    assert_eq!(step.commands, [hang_up(102), cancel(Outcome::CallerHungUp)]);
}

#[test]
fn defect_8_max_queue_time_does_not_cut_a_leg_just_answered() {
    let max = policy().max_queue_secs;
    // Told to bridge just before the caller's wait ran out.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    assert_eq!(
        run.on(answered(1, 101, AnsweredBy::Human)).answer,
        Answer::Bridge { reservation: res(1), transfer: None }
    );
    let step = run.on(hold(max));
    assert_eq!((step.answer, step.commands), (Answer::MUSIC, vec![]));
    assert_eq!(run.j.outcome(), Outcome::Pending);

    // Answered, answering-machine detection still running.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.on(leg_status(1, 101, CallStatus::InProgress, 2));
    let step = run.on(hold(max + 5));
    assert_eq!((step.answer, step.commands), (Answer::MUSIC, vec![]));
    // The grace is bounded.
    let step = run.on(hold(max + ANSWERED_GRACE_SECS));
    assert_eq!(step.answer, Answer::Leave);
    assert_eq!(step.commands, [hang_up(101), cancel(Outcome::QueueTimeout)]);

    // Still ringing: the wait ends, the leg is hung up, the task canceled.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.on(leg_status(1, 101, CallStatus::Ringing, 1));
    let step = run.on(hold(max));
    assert_eq!(step.answer, Answer::Leave);
    assert_eq!(step.commands, [hang_up(101), cancel(Outcome::QueueTimeout)]);
    let exit = run.on(Event::QueueExit { result: QueueResult::Leave, queue: None });
    assert_eq!(exit.answer, Answer::Fallback { location: Some("north".into()), reason: Outcome::QueueTimeout });
}

#[test]
fn a_dial_in_doubt_is_looked_up_and_redialled_only_when_proven_absent() {
    let mut run = Run::queued();
    run.on(created(1));
    // A 500 (or a reset): no voicemail, no second create.
    assert_eq!(run.on(Event::DialUnknown { reservation: res(1), attempt: 1 }).commands, []);
    assert_eq!(run.j.outcome(), Outcome::Pending);
    let step = run.tick_at_wake();
    let find =
        Command::FindDial { reservation: res(1), attempt: 1, lookup: 1, to: target().to, placed_after_ms: 1_000_000 };
    assert_eq!(step.commands, [find]);
    assert_eq!(run.on(Event::DialAbsent { reservation: res(1), attempt: 1 }).commands, [dial(1, 2)]);

    // The leg's own `initiated` callback resolves the doubt: never dialled again.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(Event::DialUnknown { reservation: res(1), attempt: 1 });
    assert_eq!(run.on(leg_status(1, 101, CallStatus::Initiated, 0)).commands, []);
    assert_eq!(run.j.wake_at(), None);
    assert_eq!(run.after(600_000).on(Event::Tick).commands, []);

    // Proven absent after the reservation ended: nothing to dial.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(Event::DialUnknown { reservation: res(1), attempt: 1 });
    run.on(ended(1, ReservationEnd::Timeout));
    assert_eq!(run.on(Event::DialAbsent { reservation: res(1), attempt: 1 }).commands, []);
}

#[test]
fn a_leg_answered_for_a_caller_who_left_is_not_bridged() {
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let step = run.on(Event::QueueExit { result: QueueResult::Hangup, queue: None });
    assert!(step.commands.contains(&hang_up(101)));
    let step = run.on(answered(1, 101, AnsweredBy::Human));
    assert_eq!(step.answer, Answer::Refuse { caller_gone: true });
    assert_eq!(step.commands, []);
}

#[test]
fn the_callers_completed_overtaking_the_bridge_waits_for_evidence() {
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.on(answered(1, 101, AnsweredBy::Human));
    // The caller is gone either way: the location's leg is stopped, the outcome waits.
    let step = run.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(5) });
    assert_eq!(step.commands, [hang_up(101)]);
    assert_eq!(run.j.outcome(), Outcome::Pending);
    run.on(Event::ReservationAccepted { task: task(TASK), reservation: res(1) });
    assert_eq!(run.j.outcome(), Outcome::Connected);

    // Without evidence, the caller hung up.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.on(answered(1, 101, AnsweredBy::Human));
    run.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(5) });
    assert_eq!(run.after(BRIDGE_EVIDENCE_MS - 1).on(Event::Tick).commands, []);
    assert_eq!(run.j.outcome(), Outcome::Pending);
    let step = run.after(1).on(Event::Tick);
    assert_eq!(run.j.outcome(), Outcome::CallerHungUp);
    assert_eq!(step.commands, [cancel(Outcome::CallerHungUp)]);
}

#[test]
fn a_journey_survives_serialisation() {
    let run = connected();
    let json = serde_json::to_string(&run.j).expect("a journey serialises");
    let back: Journey = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(back, run.j);
    assert_eq!(back.keys().len(), 4, "caller, task, reservation, leg: {:?}", back.keys());
}

#[test]
fn a_leg_the_journey_never_dialled_is_bridged_when_the_caller_waits() {
    // The Node version placed this leg before a cut-over (`/dial-queue?queue=WR…`):
    // the journey knows the caller, and of the reservation only what the leg's URL says.
    let mut run = Run::queued();
    run.on(Event::ReservationSeen { task: task(TASK), reservation: res(1), status: ReservationStatus::Pending });
    let step = run.on(answered(1, 101, AnsweredBy::Human));
    assert_eq!(step.answer, Answer::Bridge { reservation: res(1), transfer: None });
    assert_eq!(step.commands, []);

    // The same leg busy instead: the caller gets voicemail and the task is canceled.
    let mut run = Run::queued();
    run.on(Event::ReservationSeen { task: task(TASK), reservation: res(1), status: ReservationStatus::Pending });
    let step = run.on(leg_status(1, 101, CallStatus::Busy, 2));
    assert_eq!(step.commands, [redirect(Outcome::LocationBusy), cancel(Outcome::LocationBusy)]);

    // The first leg heard of is the reservation's; another is a stray, never a second
    // leg ringing for one caller.
    let mut run = Run::queued();
    run.on(answered(1, 101, AnsweredBy::Human));
    let step = run.on(answered(1, 102, AnsweredBy::Human));
    assert_eq!(step.answer, Answer::Refuse { caller_gone: false });
    // And the adopted reservation is not dialled again when its `reservation.created` arrives.
    let step = run.on(created(1));
    assert!(!step.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{:?}", step.commands);
}

#[test]
fn a_caller_that_ended_before_any_webhook_of_ours_was_missed() {
    // The reconciler's sweep of our numbers finds a call the server never heard of.
    let mut run = Run::new();
    run.on(Event::CallerSeen { call: call(CALLER), status: CallStatus::Completed });
    assert_eq!(run.j.caller_sid(), Some(&call(CALLER)), "the journey is known by the call from now on");
    assert_eq!(run.j.outcome(), Outcome::Missed);
    assert!(run.j.is_closed());

    // A caller we greeted who hangs up at the menu did not go missing.
    let mut run = Run::new();
    run.on(Event::CallerArrived { call: call(CALLER) });
    run.on(Event::CallerStatus { status: CallStatus::Completed, sequence: None });
    assert_eq!(run.j.outcome(), Outcome::CallerHungUp);
}

#[test]
fn a_repeated_answer_of_a_leg_that_has_ended_is_not_bridged() {
    // Found by the property test: `/dial-queue` bridged, then the leg's `busy`
    // (the caller is sent to voicemail), then Twilio retries `/dial-queue`.
    let mut run = Run::new();
    assert_eq!(
        run.on(answered(1, 110, AnsweredBy::Human)).answer,
        Answer::Bridge { reservation: res(1), transfer: None }
    );
    run.on(leg_status(1, 110, CallStatus::Busy, 2));
    assert_eq!(run.j.outcome(), Outcome::LocationBusy);
    assert!(matches!(run.on(answered(1, 110, AnsweredBy::Human)).answer, Answer::Refuse { .. }));

    // While a plain retry of the same answer, with the leg still up, is answered the same.
    let mut run = Run::new();
    run.on(answered(1, 110, AnsweredBy::Human));
    assert_eq!(
        run.on(answered(1, 110, AnsweredBy::Human)).answer,
        Answer::Bridge { reservation: res(1), transfer: None }
    );
}

fn voicemail(duration_secs: Option<u32>, transcribe: bool) -> Event {
    Event::VoicemailRecorded {
        recording: "RE1".into(),
        duration_secs,
        recipients: vec![
            NotifyChannel::Email { to: "desk@example.com".into() },
            NotifyChannel::Webhook { url: "https://hooks.example.com/vm".into() },
        ],
        transcribe,
    }
}

fn notified(step: &Step) -> Vec<String> {
    step.commands.iter().filter(|c| matches!(c, Command::NotifyVoicemail { .. })).map(Command::key).collect()
}

/// An after-hours caller's voicemail is announced to each recipient once,
/// and the journey stays open until it is.
#[test]
fn a_voicemail_is_announced_once_to_each_recipient() {
    let mut run = Run::new();
    run.on(Event::CallerArrived { call: call(CALLER) });
    run.on(Event::CallerTurnedAway { outcome: Outcome::AfterHours, location: Some("north".into()) });
    assert!(run.j.is_closed());
    let step = run.on(voicemail(Some(12), false));
    assert_eq!(notified(&step), ["notify:RE1:email:desk@example.com", "notify:RE1:webhook"]);
    assert!(run.j.is_closed() && run.j.wake_at().is_none());
    assert!(run.j.keys().contains(&"RE1".to_owned()), "found by its recording");
    // Twilio asks the Record action again.
    assert_eq!(notified(&run.on(voicemail(Some(12), false))), Vec::<String>::new());
}

/// With a transcription wanted, the notifications wait for it, at most
/// `TRANSCRIPTION_WAIT_MS`; an empty recording is announced to nobody.
#[test]
fn notifications_wait_for_the_transcription_but_not_forever() {
    let mut run = Run::new();
    run.on(Event::CallerArrived { call: call(CALLER) });
    run.on(Event::CallerTurnedAway { outcome: Outcome::AfterHours, location: Some("north".into()) });
    assert!(notified(&run.on(voicemail(Some(30), true))).is_empty());
    assert!(!run.j.is_closed(), "a voicemail is still to be announced");
    let deadline = run.now + TRANSCRIPTION_WAIT_MS;
    assert_eq!(run.j.wake_at(), Some(at(deadline)));
    assert!(notified(&run.after(60_000).on(Event::Tick)).is_empty());
    assert_eq!(notified(&run.on(Event::Transcribed { recording: "RE1".into() })).len(), 2);
    assert!(run.j.is_closed());

    // The transcription never comes: the tick at the deadline sends them.
    let mut run = Run::new();
    run.on(Event::CallerArrived { call: call(CALLER) });
    run.on(voicemail(Some(30), true));
    let wake = run.j.wake_at().expect("a deadline").as_millisecond();
    run.now = wake - 1;
    assert!(notified(&run.on(Event::Tick)).is_empty());
    run.now = wake;
    assert_eq!(notified(&run.on(Event::Tick)).len(), 2);
    // A late transcription announces nothing again.
    assert!(notified(&run.on(Event::Transcribed { recording: "RE1".into() })).is_empty());

    // The transcription came before the recording's own callback: no wait.
    let mut run = Run::new();
    run.on(Event::Transcribed { recording: "RE1".into() });
    assert_eq!(notified(&run.on(voicemail(Some(30), true))).len(), 2);

    // A hang-up at the beep: kept, announced to nobody, nothing to wait for.
    let mut run = Run::new();
    assert!(notified(&run.on(voicemail(Some(0), true))).is_empty());
    assert_eq!(run.j.wake_at(), None);
}

/// A caller still waiting when the location closes is sent to voicemail at
/// closing time, by the tick or by the next `/hold`, and the task canceled.
#[test]
fn a_caller_waiting_at_closing_time_is_sent_to_voicemail() {
    let closed = Outcome::ClosedWhileWaiting;
    // No reservation yet (every line busy): the tick at closing time redirects.
    let mut run = Run::queued();
    run.on(Event::ClosingTime { at_ms: run.now + 60_000, later: vec![], callback: None, overflow: None });
    assert_eq!(run.j.wake_at(), Some(at(run.now + 60_000)), "a wake-up at closing time");
    assert_eq!(run.after(59_999).on(Event::Tick).commands, []);
    let step = run.tick_at_wake();
    assert_eq!(step.commands, [redirect(closed)]);
    assert_eq!(run.j.outcome(), closed);
    assert_eq!(run.j.wake_at(), None);

    // With a task and no leg: at `/hold` after closing, the caller leaves at once.
    let mut run = Run::queued();
    run.on(Event::ClosingTime { at_ms: run.now + 1_000, later: vec![], callback: None, overflow: None });
    run.on(created(1));
    run.on(ended(1, ReservationEnd::Timeout));
    run.now += 1_000;
    let step = run.on(hold(30));
    assert_eq!(step.answer, Answer::Leave);
    assert_eq!(step.commands, [cancel(closed)]);
    let exit = run.on(Event::QueueExit { result: QueueResult::Leave, queue: None });
    assert_eq!(exit.answer, Answer::Fallback { location: Some("north".into()), reason: closed });
}

/// A leg ringing or answered at closing time is never cut: its own end
/// decides, and no new dial starts after closing.
#[test]
fn closing_time_never_cuts_a_ringing_leg_and_starts_no_dial() {
    let mut run = Run::queued();
    run.on(Event::ClosingTime { at_ms: run.now + 10_000, later: vec![], callback: None, overflow: None });
    assert_eq!(run.on(created(1)).commands, [dial(1, 1)]);
    run.on(placed(1, 1, 101));
    run.on(leg_status(1, 101, CallStatus::Ringing, 1));
    run.now += 10_000;
    assert_eq!(run.on(Event::Tick).commands, [], "the ringing leg goes on");
    assert_eq!(run.j.outcome(), Outcome::Pending);
    let step = run.on(answered(1, 101, AnsweredBy::Human));
    assert_eq!(step.answer, Answer::Bridge { reservation: res(1), transfer: None });

    // Rung out after closing: voicemail for the reason the leg gives.
    let mut run = Run::queued();
    run.on(Event::ClosingTime { at_ms: run.now + 10_000, later: vec![], callback: None, overflow: None });
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.now += 20_000;
    let step = run.on(leg_status(1, 101, CallStatus::NoAnswer, 2));
    let no_answer = Outcome::LocationNoAnswer;
    assert_eq!(step.commands, [redirect(no_answer), cancel(no_answer)]);

    // A reservation offered after closing is not dialled.
    let mut run = Run::queued();
    run.on(Event::ClosingTime { at_ms: run.now, later: vec![], callback: None, overflow: None });
    let step = run.on(created(1));
    assert!(!step.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{:?}", step.commands);
    assert_eq!(run.j.outcome(), Outcome::ClosedWhileWaiting);
}

// -- screening ------------------------------------------------------------------

fn screened_created(r: u32) -> Event {
    Event::ReservationCreated {
        task: task(TASK),
        reservation: res(r),
        caller: Some(call(CALLER)),
        target: screened_target(),
    }
}

fn screened(leg: u32, prompt: u32, key: ScreenKey) -> Event {
    Event::LegScreened { reservation: res(1), attempt: Some(1), leg: call(leg), prompt, key }
}

fn prompt(n: u32) -> Answer {
    Answer::Screen {
        prompt: n,
        location: "north".into(),
        caller: Some("+13105550100".into()),
        caller_name: None,
        timeout_secs: 8,
        waiting_since_ms: None,
    }
}

/// A queued caller whose screened location's leg has just answered.
fn screening_run() -> Run {
    let mut run = Run::queued();
    let step = run.on(screened_created(1));
    assert!(matches!(&step.commands[..], [Command::Dial { target, .. }] if !target.amd && target.screening.is_some()));
    run.on(placed(1, 1, 101));
    assert_eq!(run.on(answered(1, 101, AnsweredBy::Human)).answer, prompt(1));
    run
}

#[test]
fn screening_bridges_only_after_1() {
    let mut run = screening_run();
    // Twilio asks `/dial-queue` again: the same prompt, no bridge.
    assert_eq!(run.on(answered(1, 101, AnsweredBy::Human)).answer, prompt(1));
    let step = run.after(6_000).on(screened(101, 1, ScreenKey::Accept));
    assert_eq!(step.answer, Answer::Bridge { reservation: res(1), transfer: None });
    assert_eq!(step.commands, []);
    assert_eq!(run.j.outcome(), Outcome::Pending);
    // The same action asked again: the same bridge.
    assert_eq!(
        run.on(screened(101, 1, ScreenKey::Accept)).answer,
        Answer::Bridge { reservation: res(1), transfer: None }
    );
    run.on(Event::ReservationAccepted { task: task(TASK), reservation: res(1) });
    assert_eq!(run.j.outcome(), Outcome::Connected);
}

#[test]
fn screening_without_a_key_is_not_answered() {
    let mut run = screening_run();
    let step = run.after(13_000).on(screened(101, 1, ScreenKey::Nothing));
    assert_eq!(step.answer, Answer::Refuse { caller_gone: false });
    let no_answer = Outcome::LocationNoAnswer;
    assert_eq!(step.commands, [redirect(no_answer), cancel(no_answer)]);
    assert_eq!(run.j.outcome(), no_answer);
    // The same action asked again: the same answer, and nothing more owed.
    let again = run.on(screened(101, 1, ScreenKey::Nothing));
    assert_eq!((again.answer, again.commands), (Answer::Refuse { caller_gone: false }, vec![]));
    // A late 1 bridges nothing: the person hears that the caller is gone.
    assert_eq!(run.on(screened(101, 1, ScreenKey::Accept)).answer, Answer::Refuse { caller_gone: true });
}

#[test]
fn screening_a_wrong_key_repeats_the_prompt_once() {
    let mut run = screening_run();
    assert_eq!(run.on(screened(101, 1, ScreenKey::Other)).answer, prompt(2));
    // That action asked again: still the second prompt, not the end.
    assert_eq!(run.on(screened(101, 1, ScreenKey::Other)).answer, prompt(2));
    assert_eq!(run.j.outcome(), Outcome::Pending);
    let step = run.on(screened(101, 2, ScreenKey::Other));
    assert_eq!(step.answer, Answer::Refuse { caller_gone: false });
    assert_eq!(run.j.outcome(), Outcome::LocationNoAnswer);

    // A wrong key, then 1: bridged.
    let mut run = screening_run();
    assert_eq!(run.on(screened(101, 1, ScreenKey::Other)).answer, prompt(2));
    assert_eq!(
        run.on(screened(101, 2, ScreenKey::Accept)).answer,
        Answer::Bridge { reservation: res(1), transfer: None }
    );

    // A wrong key, then silence: not answered.
    let mut run = screening_run();
    run.on(screened(101, 1, ScreenKey::Other));
    assert_eq!(run.on(screened(101, 2, ScreenKey::Nothing)).answer, Answer::Refuse { caller_gone: false });
    assert_eq!(run.j.outcome(), Outcome::LocationNoAnswer);
}

#[test]
fn screening_a_hang_up_at_the_prompt_is_not_answered() {
    let mut run = screening_run();
    let step = run.on(leg_status(1, 101, CallStatus::Completed, 4));
    assert_eq!(run.j.outcome(), Outcome::LocationNoAnswer);
    assert_eq!(step.commands, [redirect(Outcome::LocationNoAnswer), cancel(Outcome::LocationNoAnswer)]);
}

#[test]
fn screening_tells_a_person_who_accepts_that_the_caller_left() {
    let mut run = screening_run();
    run.on(Event::QueueExit { result: QueueResult::Hangup, queue: None });
    let step = run.on(screened(101, 1, ScreenKey::Accept));
    assert_eq!(step.answer, Answer::Refuse { caller_gone: true });
    assert_eq!(run.j.outcome(), Outcome::CallerHungUp);
}

#[test]
fn screening_still_lets_amd_turn_a_machine_away() {
    // A screened location that keeps AMD: a machine never hears the prompt.
    let mut run = Run::queued();
    let target = DialTarget { amd: true, ..screened_target() };
    run.on(Event::ReservationCreated { task: task(TASK), reservation: res(1), caller: Some(call(CALLER)), target });
    run.on(placed(1, 1, 101));
    assert_eq!(run.on(answered(1, 101, AnsweredBy::Machine)).answer, Answer::Refuse { caller_gone: false });
    assert_eq!(run.j.outcome(), Outcome::LocationVoicemail);
}

#[test]
fn a_journey_stored_before_screening_reads_as_unscreened_with_amd() {
    let json = r#"{"location":"north","to":"+14155550123","from":"+12025550143","call_token":null}"#;
    let t: DialTarget = serde_json::from_str(json).unwrap();
    assert!(t.amd);
    assert_eq!(t.screening, None);
}

#[test]
fn the_place_is_announced_on_entry_and_then_every_interval() {
    let mut run = Run::queued();
    let since = run.now;
    assert_eq!(run.j.waiting_since_ms(), Some(since), "waiting counts from the enqueue");
    // By queue time, Twilio's clock: the one the caller hears.
    let answers: Vec<Answer> =
        [0, 12, 22, 29, 30, 59].into_iter().map(|q| run.after(1).on(hold_at(q, 30, false)).answer).collect();
    assert_eq!(answers, [announce(), Answer::MUSIC, Answer::MUSIC, Answer::MUSIC, announce(), Answer::MUSIC]);
    // A late `/hold` from before the last announcement says nothing; Twilio asking again
    // for the same queue time (its answer was lost) gets the announcement again.
    assert_eq!(run.on(hold_at(25, 30, false)).answer, Answer::MUSIC);
    assert_eq!(run.on(hold_at(30, 30, false)).answer, announce());
    // The journey survives a restart between two `/hold`s and still knows.
    run.j = serde_json::from_str(&serde_json::to_string(&run.j).unwrap()).unwrap();
    assert_eq!(run.after(1_000).on(hold_at(61, 30, false)).answer, announce());
    assert_eq!(run.j.waiting_since_ms(), Some(since), "the place in the queue never moves");
}

#[test]
fn announcements_off_means_music_only() {
    let mut run = Run::queued();
    for q in [0, 10, 100, 110] {
        assert_eq!(run.on(hold(q)).answer, Answer::MUSIC);
    }
}

#[test]
fn comfort_messages_come_in_turn_half_way_between_announcements() {
    let mut run = Run::queued();
    let answers: Vec<Answer> = (0..8).map(|i| run.on(hold_at(i * 10, 40, true)).answer).collect();
    let comfort = |n| Answer::Hold { announce: false, comfort: Some(n), callback: None };
    // 0 s announce, 10 music, 20 comfort 0 (half of 40 s), 30 music, 40 announce, 50 music,
    // 60 comfort 1, 70 music.
    assert_eq!(
        answers,
        [announce(), Answer::MUSIC, comfort(0), Answer::MUSIC, announce(), Answer::MUSIC, comfort(1), Answer::MUSIC]
    );

    // Without announcements, a comfort message every COMFORT_EVERY_SECS.
    let mut run = Run::queued();
    assert_eq!(run.on(hold_at(1, 0, true)).answer, comfort(0));
    assert_eq!(run.on(hold_at(COMFORT_EVERY_SECS, 0, true)).answer, Answer::MUSIC);
    assert_eq!(run.on(hold_at(COMFORT_EVERY_SECS + 1, 0, true)).answer, comfort(1));
}

#[test]
fn nothing_is_announced_to_a_caller_no_longer_waiting() {
    // Told to bridge: the caller is about to be connected, music only.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.on(answered(1, 101, AnsweredBy::Human));
    run.on(Event::ReservationAccepted { task: task(TASK), reservation: res(1) });
    assert_eq!(run.j.outcome(), Outcome::Connected);
    assert_eq!(run.on(hold_at(5, 30, true)).answer, Answer::MUSIC);

    // Settled elsewhere while queued (busy): music until the redirect arrives.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    run.on(leg_status(1, 101, CallStatus::Busy, 3));
    assert_eq!(run.j.outcome(), Outcome::LocationBusy);
    assert_eq!(run.on(hold_at(5, 30, true)).answer, Answer::MUSIC);
}

#[test]
fn a_reservation_of_the_overflow_location_dials_there_and_tells_the_caller() {
    let south = DialTarget { location: "south".into(), to: E164::parse("+14155550199").unwrap(), ..target() };
    let mut run = Run::queued();
    let reserved = Event::ReservationCreated {
        task: task(TASK),
        reservation: res(1),
        caller: Some(call(CALLER)),
        target: south.clone(),
    };
    let want =
        Command::Dial { reservation: res(1), task: task(TASK), attempt: 1, caller: Some(call(CALLER)), target: south };
    assert_eq!(run.on(reserved).commands, [want]);
    run.on(placed(1, 1, 101));
    let step = run.on(answered(1, 101, AnsweredBy::Human));
    assert_eq!(
        step.answer,
        Answer::Bridge { reservation: res(1), transfer: Some(Transfer { to: "south".into(), language: None }) }
    );
    // The calls row shows where the call ended.
    assert_eq!(run.j.summary().location, Some("south"));
    // The caller's own location's reservation is no transfer.
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    assert_eq!(
        run.on(answered(1, 101, AnsweredBy::Human)).answer,
        Answer::Bridge { reservation: res(1), transfer: None }
    );
    assert_eq!(run.j.summary().location, Some("north"));
}

#[test]
fn a_worker_of_the_overflow_location_gets_the_overflow_target() {
    let attrs: crate::domain::TaskAttributes = serde_json::from_value(serde_json::json!({
        "location": "north", "practicePhone": "+14155550123", "callerID": "+12025550143", "caller": "+13105550100",
        "overflow": {"location": "south", "practicePhone": "+14155550199", "callerID": "+12025550144",
                     "screening": {"timeoutSecs": 8, "sayName": false}, "amd": false}
    }))
    .unwrap();
    let own = DialTarget::for_worker(&attrs, Some("north"));
    assert_eq!((own.location.as_str(), own.to.as_str(), own.amd), ("north", "+14155550123", true));
    assert_eq!(DialTarget::for_worker(&attrs, None), own, "an unknown worker dials the task's own location");
    let south = DialTarget::for_worker(&attrs, Some("south"));
    assert_eq!(
        (south.location.as_str(), south.to.as_str(), south.from.as_str()),
        ("south", "+14155550199", "+12025550144")
    );
    assert!(south.screening.is_some() && !south.amd);
    assert_eq!(south.caller.as_deref(), Some("+13105550100"));
}

#[test]
fn the_callers_language_follows_them_to_the_fallback() {
    // Enqueued in Spanish: the redirect after a busy line keeps it, so the
    // voicemail offer is said in Spanish.
    let mut run = Run::new();
    run.on(Event::CallerArrived { call: call(CALLER) });
    run.on(Event::CallerEnqueued { location: "north".into(), language: Some("es-MX".into()) });
    run.on(Event::ReservationSeen { task: task(TASK), reservation: res(1), status: ReservationStatus::Pending });
    let step = run.on(leg_status(1, 101, CallStatus::Busy, 2));
    let spanish = Command::RedirectCaller {
        call: call(CALLER),
        location: Some("north".into()),
        reason: Outcome::LocationBusy,
        round: 1,
        callback: false,
        language: Some("es-MX".into()),
        transfer: None,
    };
    assert_eq!(step.commands, [spanish, cancel(Outcome::LocationBusy)]);
    // It survives the store's round trip, and a journey stored before it existed reads back.
    let json = serde_json::to_string(&run.j).unwrap();
    assert!(json.contains("\"language\":\"es-MX\""), "{json}");
    let back: Journey = serde_json::from_str(&json).unwrap();
    assert_eq!(back, run.j);
    let old = json.replace(",\"language\":\"es-MX\"", "");
    assert!(serde_json::from_str::<Journey>(&old).is_ok());
}

// -- callback instead of waiting -----------------------------------------------------

fn number() -> E164 {
    E164::parse("+13105550100").expect("a test number")
}

fn hold_cb(queue_time_secs: u32, after: u32) -> Event {
    Event::Hold {
        queue_time_secs,
        announce_every_secs: 0,
        comfort: false,
        callback_after_secs: Some(after),
        queue: None,
    }
}

/// 1 at the offer, for a location whose callbacks end at closing time.
fn chosen(tries: u32) -> Event {
    Event::CallbackChosen { number: number(), tries, wait_for_opening: false, to_list: false }
}

fn callback_created(task_n: u32, r: u32) -> Event {
    Event::ReservationCreated {
        task: task(task_n),
        reservation: res(r),
        caller: Some(call(CALLER)),
        target: callback_target(),
    }
}

/// A queued caller of a reserved task who chose a callback and left the
/// queue (the queue's task is TaskRouter's to cancel).
fn called_back(tries: u32) -> Run {
    let mut r = Run::queued();
    r.on(created(1));
    let choice = r.on(chosen(tries));
    assert_eq!(choice.answer, Answer::Leave);
    // The first try's task is asked for at once, with the caller's place.
    let since = r.j.waiting_since_ms().expect("queued");
    // The queue's dial still in the outbox is withdrawn, and the queue's
    // task is TaskRouter's to cancel.
    assert_eq!(
        choice.commands,
        [
            Command::CreateCallbackTask {
                call: call(CALLER),
                location: "north".into(),
                number: number(),
                since_ms: since,
                round: 1,
                effort: 1
            },
            Command::WithdrawDial { reservation: res(1), attempt: 1 }
        ],
    );
    // Withdrawn before it was sent: the dispatcher says so.
    r.on(Event::DialFailed { reservation: res(1), attempt: 1 });
    let bye = r.on(Event::QueueExit { result: QueueResult::Leave, queue: None });
    assert_eq!(bye.answer, Answer::CallbackBye { number: number(), closed: false });
    r.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(3) });
    assert_eq!(r.j.outcome(), Outcome::Pending, "hanging up after choosing a callback settles nothing");
    r
}

#[test]
fn the_callback_offer_is_said_from_its_time_on_and_a_key_works_before() {
    let mut r = Run::queued();
    r.policy.max_queue_secs = 600;
    r.on(created(1));
    let quiet = Answer::Hold { announce: false, comfort: None, callback: Some(false) };
    let offer = Answer::Hold { announce: false, comfort: None, callback: Some(true) };
    assert_eq!(r.on(hold_cb(10, 60)).answer, quiet, "the Gather is there, the offer not yet");
    assert_eq!(r.on(hold_cb(60, 60)).answer, offer);
    assert_eq!(r.on(hold_cb(60, 60)).answer, offer, "Twilio asking again hears it again");
    assert_eq!(r.on(hold_cb(70, 60)).answer, quiet);
    assert_eq!(r.on(hold_cb(60 + CALLBACK_OFFER_EVERY_SECS, 60)).answer, offer);
    assert_eq!(r.on(hold(200)).answer, Answer::MUSIC, "no callback at this location: no Gather");
}

#[test]
fn a_callback_leaves_the_queue_creates_a_task_with_the_callers_place_and_calls_back() {
    let mut r = called_back(2);
    assert!(r.on(Event::Tick).commands.is_empty(), "the create is owed once");
    // Events of the queue's task are no longer the journey's.
    r.on(Event::TaskCanceled { task: task(TASK) });
    assert_eq!(r.j.outcome(), Outcome::Pending);

    r.on(Event::CallbackTaskCreated { task: task(2), round: 1 });
    assert_eq!(r.j.task_sid(), Some(&task(2)));
    let step = r.on(callback_created(2, 5));
    assert!(step.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "the location is dialled: {step:?}");
    r.on(placed(5, 1, 50));
    // The location hears who is waiting since when, and presses 1.
    let screen = r.on(answered(5, 50, AnsweredBy::Unknown));
    assert!(matches!(screen.answer, Answer::Screen { waiting_since_ms: Some(1_000_000), .. }), "{screen:?}");
    let accept = r.on(Event::LegScreened {
        reservation: res(5),
        attempt: Some(1),
        leg: call(50),
        prompt: 1,
        key: ScreenKey::Accept,
    });
    assert_eq!(
        accept.answer,
        Answer::CallBack { reservation: res(5), number: number(), from: callback_target().from },
        "{accept:?}"
    );
    assert!(accept.commands.iter().any(|c| matches!(c, Command::AcceptReservation { round: 1, .. })));
    r.on(Event::ReservationAccepted { task: task(2), reservation: res(5) });
    assert_eq!(r.j.outcome(), Outcome::Pending, "accepting is not yet talking to the caller");
    let done = r.on(Event::CallbackDialed { reservation: res(5), answered: true });
    assert_eq!(r.j.outcome(), Outcome::CallbackConnected);
    assert!(done.commands.iter().any(|c| matches!(c, Command::CompleteTask { .. })), "{done:?}");
}

/// One try of a callback: its task (`task`, created for `round`) reserved as
/// reservation `r`, whose leg `leg` answers and presses 1.
fn accepted_try(run: &mut Run, (t, round): (u32, u32), r: u32, leg: u32) {
    run.on(Event::CallbackTaskCreated { task: task(t), round });
    run.on(callback_created(t, r));
    run.on(placed(r, 1, leg));
    run.on(answered(r, leg, AnsweredBy::Unknown));
    run.on(Event::LegScreened {
        reservation: res(r),
        attempt: Some(1),
        leg: call(leg),
        prompt: 1,
        key: ScreenKey::Accept,
    });
}

#[test]
fn a_callback_nobody_answers_is_tried_again_later_then_given_up() {
    let mut r = called_back(2);
    accepted_try(&mut r, (2, 1), 5, 50);
    r.on(Event::ReservationAccepted { task: task(2), reservation: res(5) });
    let missed = r.on(Event::CallbackDialed { reservation: res(5), answered: false });
    assert_eq!(r.j.outcome(), Outcome::Pending, "one of two tries");
    assert!(missed.commands.iter().any(|c| matches!(c, Command::CompleteTask { .. })));
    r.on(Event::TaskCompleted { task: task(2) });
    // No second task before the pause; then one, round 2.
    assert!(!r.after(1_000).on(Event::Tick).commands.iter().any(|c| matches!(c, Command::CreateCallbackTask { .. })));
    let again = r.after(CALLBACK_RETRY_MS).on(Event::Tick);
    assert!(again.commands.iter().any(|c| matches!(c, Command::CreateCallbackTask { round: 2, .. })), "{again:?}");
    accepted_try(&mut r, (3, 2), 6, 60);
    r.on(Event::CallbackDialed { reservation: res(6), answered: false });
    assert_eq!(r.j.outcome(), Outcome::CallbackNoAnswer);
}

#[test]
fn a_callback_never_rings_after_closing() {
    let mut r = called_back(2);
    r.on(Event::ClosingTime { at_ms: r.now + 60_000, later: vec![], callback: None, overflow: None });
    r.on(Event::CallbackTaskCreated { task: task(2), round: 1 });
    let step = r.after(61_000).on(callback_created(2, 5));
    assert!(!step.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{step:?}");
    assert_eq!(r.j.outcome(), Outcome::CallbackCanceled);
    assert!(step.commands.iter().any(|c| matches!(c, Command::CancelTask { .. })), "{step:?}");
}

const HOUR_MS: i64 = 3_600_000;

/// A callback chosen before closing time, at a location open again from
/// `opens` to `closes` (ms after the choice) and then for a day a day later.
fn waiting_callback(closes_in: i64, opens: i64, closes: i64) -> (Run, i64) {
    let mut r = Run::queued();
    let t0 = r.now;
    let later = vec![
        OpenPeriod { opens_at_ms: t0 + opens, closes_at_ms: t0 + closes },
        OpenPeriod { opens_at_ms: t0 + opens + 24 * HOUR_MS, closes_at_ms: t0 + closes + 24 * HOUR_MS },
    ];
    r.on(Event::ClosingTime { at_ms: t0 + closes_in, later, callback: None, overflow: None });
    let step = r.on(Event::CallbackChosen { number: number(), tries: 2, wait_for_opening: true, to_list: false });
    assert_eq!(step.answer, Answer::Leave);
    (r, t0)
}

#[test]
fn a_callback_still_waiting_at_closing_waits_for_the_next_opening_and_keeps_its_place() {
    let (mut r, t0) = waiting_callback(60_000, 15 * HOUR_MS, 23 * HOUR_MS);
    let since = r.j.waiting_since_ms().expect("queued");
    r.on(Event::CallbackTaskCreated { task: task(2), round: 1 });
    // Closing time: the task is let go (canceled), nothing settles, the next wake-up is the opening.
    let closing = r.after(60_000).on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::Pending);
    assert!(
        closing.commands.iter().any(|c| matches!(c, Command::CancelTask { task: t, .. } if *t == task(2))),
        "{closing:?}"
    );
    // TaskRouter reserves the worker for it during the night anyway: nobody is dialled.
    let night = r.after(1_000).on(callback_created(2, 5));
    assert!(!night.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{night:?}");
    r.on(Event::TaskCanceled { task: task(2) });
    assert_eq!(r.j.outcome(), Outcome::Pending, "a canceled task of the night ends nothing");
    assert_eq!(r.j.wake_at(), Some(at(t0 + 15 * HOUR_MS)), "waits for the opening");
    assert!(!r.on(Event::Tick).commands.iter().any(|c| matches!(c, Command::CreateCallbackTask { .. })));
    // At the opening: a new task, with the caller's place, and it is dialled.
    r.now = t0 + 15 * HOUR_MS;
    let opening = r.on(Event::Tick);
    let create = opening.commands.iter().find(|c| matches!(c, Command::CreateCallbackTask { .. }));
    assert!(
        matches!(create, Some(Command::CreateCallbackTask { round: 2, effort: 1, since_ms, .. }) if *since_ms == since),
        "{opening:?}"
    );
    r.on(Event::CallbackTaskCreated { task: task(3), round: 2 });
    let dial = r.after(1_000).on(callback_created(3, 6));
    assert!(dial.commands.iter().any(|c| matches!(c, Command::Dial { reservation, .. } if *reservation == res(6))));
    // A try missed at the opening does not count against the night: one more try is owed.
    assert_eq!(r.j.callback.as_ref().map(|cb| cb.missed), Some(0));
}

#[test]
fn a_callback_not_reached_by_the_next_closing_waits_again_and_ends_when_no_opening_is_known() {
    let (mut r, t0) = waiting_callback(60_000, 15 * HOUR_MS, 23 * HOUR_MS);
    // The location is unreachable all the next day: it waits for the day after.
    r.now = t0 + 15 * HOUR_MS;
    r.on(Event::Tick);
    r.on(Event::CallbackTaskCreated { task: task(3), round: 1 });
    r.now = t0 + 23 * HOUR_MS;
    let second = r.on(Event::Tick);
    assert!(second.commands.iter().any(|c| matches!(c, Command::CancelTask { .. })), "{second:?}");
    r.on(Event::TaskCanceled { task: task(3) });
    assert_eq!(r.j.wake_at(), Some(at(t0 + 39 * HOUR_MS)));
    r.now = t0 + 39 * HOUR_MS;
    let opening = r.on(Event::Tick);
    assert!(opening.commands.iter().any(|c| matches!(c, Command::CreateCallbackTask { round: 2, .. })));
    r.on(Event::CallbackTaskCreated { task: task(4), round: 2 });
    // Closing with no later opening known: canceled, listed for staff.
    r.now = t0 + 47 * HOUR_MS;
    let end = r.on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::CallbackCanceled);
    assert!(end.commands.iter().any(|c| matches!(c, Command::CancelTask { task: t, .. } if *t == task(4))));
}

#[test]
fn a_callback_ringing_at_closing_is_not_cut_and_waits_after_its_leg() {
    let (mut r, t0) = waiting_callback(60_000, 15 * HOUR_MS, 23 * HOUR_MS);
    r.on(Event::CallbackTaskCreated { task: task(2), round: 1 });
    r.on(callback_created(2, 5));
    r.on(placed(5, 1, 50));
    // Closing while the location's phone rings: nothing is canceled.
    let closing = r.after(60_000).on(Event::Tick);
    assert!(!closing.commands.iter().any(|c| matches!(c, Command::CancelTask { .. } | Command::HangUp { .. })));
    // Its end (no answer) lets the task go; the next opening takes over.
    let missed = r.after(10_000).on(Event::LegStatus {
        reservation: res(5),
        attempt: Some(1),
        leg: call(50),
        status: CallStatus::NoAnswer,
        sequence: None,
    });
    assert!(missed.commands.iter().any(|c| matches!(c, Command::CancelTask { .. })), "{missed:?}");
    assert_eq!(r.j.outcome(), Outcome::Pending);
    r.on(Event::TaskCanceled { task: task(2) });
    assert_eq!(r.j.wake_at(), Some(at(t0 + 15 * HOUR_MS)));
}

/// A location whose closing policy is a callback, closing in a minute and open again
/// from 15 h to 23 h after now (`later`: false, none known).
fn closing_with_callback(r: &mut Run, later: bool) -> i64 {
    let t0 = r.now;
    let later = match later {
        true => vec![OpenPeriod { opens_at_ms: t0 + 15 * HOUR_MS, closes_at_ms: t0 + 23 * HOUR_MS }],
        false => Vec::new(),
    };
    let callback = Some(ClosingCallback { number: number(), tries: 2 });
    r.on(Event::ClosingTime { at_ms: t0 + 60_000, later, callback, overflow: None });
    t0
}

#[test]
fn the_closing_policy_calls_a_waiting_caller_back_at_the_next_opening() {
    let mut r = Run::queued();
    let since = r.j.waiting_since_ms().expect("queued");
    let t0 = closing_with_callback(&mut r, true);
    // Every line busy: the caller's task waits, with no reservation, at closing time.
    r.on(Event::TaskSeen { task: task(TASK), status: TaskStatus::Pending });
    let missed = r.after(60_000).on(Event::Tick);
    // The caller is told and leaves the queue (the redirect), and nothing settles.
    assert_eq!(r.j.outcome(), Outcome::Pending);
    assert!(!missed.commands.iter().any(|c| matches!(c, Command::CancelTask { .. })), "TaskRouter cancels it");
    let redirect = missed.commands.iter().find(|c| matches!(c, Command::RedirectCaller { .. }));
    assert!(
        matches!(redirect, Some(Command::RedirectCaller { callback: true, reason: Outcome::ClosedWhileWaiting, .. })),
        "{missed:?}"
    );
    // The next `/hold` (if it comes first) lets them leave, and they hear why.
    assert_eq!(r.on(hold(200)).answer, Answer::Leave);
    let bye = r.on(Event::QueueExit { result: QueueResult::Leave, queue: None });
    assert_eq!(bye.answer, Answer::CallbackBye { number: number(), closed: true });
    r.on(Event::TaskCanceled { task: task(TASK) });
    r.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(3) });
    assert_eq!(r.j.outcome(), Outcome::Pending, "the queue's task canceled, the caller gone: still to call back");
    assert_eq!(r.j.wake_at(), Some(at(t0 + 15 * HOUR_MS)));
    // At the opening: a callback task with the caller's place.
    r.now = t0 + 15 * HOUR_MS;
    let opening = r.on(Event::Tick);
    assert!(
        opening
            .commands
            .iter()
            .any(|c| matches!(c, Command::CreateCallbackTask { round: 1, since_ms, .. } if *since_ms == since)),
        "{opening:?}"
    );
}

#[test]
fn the_closing_policy_at_a_hold_after_closing_time_says_goodbye_without_a_redirect() {
    let mut r = Run::queued();
    closing_with_callback(&mut r, true);
    // The `/hold` comes before the tick: the caller leaves from it.
    let step = r.after(61_000).on(hold(61));
    assert_eq!(step.answer, Answer::Leave);
    assert!(!step.commands.iter().any(|c| matches!(c, Command::RedirectCaller { .. })), "{step:?}");
    assert_eq!(r.j.outcome(), Outcome::Pending);
    let bye = r.on(Event::QueueExit { result: QueueResult::Leave, queue: None });
    assert_eq!(bye.answer, Answer::CallbackBye { number: number(), closed: true });
}

#[test]
fn the_closing_policy_falls_back_to_voicemail_without_a_known_opening() {
    let mut r = Run::queued();
    closing_with_callback(&mut r, false);
    let step = r.after(60_000).on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::ClosedWhileWaiting);
    assert!(step.commands.iter().any(|c| matches!(c, Command::RedirectCaller { callback: false, .. })), "{step:?}");
}

#[test]
fn a_callback_is_refused_once_a_location_leg_answered() {
    let mut r = Run::queued();
    r.on(created(1));
    r.on(placed(1, 1, 10));
    r.on(answered(1, 10, AnsweredBy::Human));
    assert_eq!(r.on(chosen(2)).answer, Answer::Nothing, "the bridge is being made");
    assert!(r.j.callback.is_none());
}

// -- several phones, rung in order -------------------------------------------------

fn phone_number(k: u32) -> E164 {
    E164::parse(&format!("+1415555010{}", k + 1)).expect("a test number")
}

/// North with `n` phones, rung in order.
fn phones_target(n: u32) -> DialTarget {
    DialTarget { to: phone_number(0), phones: (0..n).map(phone_number).collect(), ..target() }
}

fn created_with(r: u32, target: DialTarget) -> Event {
    Event::ReservationCreated { task: task(TASK), reservation: res(r), caller: Some(call(CALLER)), target }
}

/// The dial of attempt `attempt` to phone `k` of a `n`-phone target.
fn dial_phone(attempt: u32, n: u32, k: u32) -> Command {
    Command::Dial {
        reservation: res(1),
        task: task(TASK),
        attempt,
        caller: Some(call(CALLER)),
        target: DialTarget { to: phone_number(k), ..phones_target(n) },
    }
}

fn status_of(attempt: u32, leg: u32, status: CallStatus, sequence: u32) -> Event {
    Event::LegStatus { reservation: res(1), attempt: Some(attempt), leg: call(leg), status, sequence: Some(sequence) }
}

#[test]
fn phones_in_order_a_busy_first_phone_rings_the_second_which_answers() {
    let mut run = Run::queued();
    assert_eq!(run.on(created_with(1, phones_target(2))).commands, [dial_phone(1, 2, 0)]);
    run.on(placed(1, 1, 101));
    // The first phone is busy: no outcome, the second phone is dialled at once.
    let step = run.on(status_of(1, 101, CallStatus::Busy, 2));
    assert_eq!(step.commands, [dial_phone(2, 2, 1)]);
    assert_eq!(run.j.outcome(), Outcome::Pending);
    run.on(placed(1, 2, 102));
    // A late callback of the first leg speaks for nothing.
    assert_eq!(run.on(status_of(1, 101, CallStatus::Busy, 2)).commands, []);
    let answer = run.on(Event::LegAnswered {
        reservation: res(1),
        attempt: Some(2),
        leg: call(102),
        answered_by: AnsweredBy::Human,
    });
    assert_eq!(answer.answer, Answer::Bridge { reservation: res(1), transfer: None });
    run.on(Event::ReservationAccepted { task: task(TASK), reservation: res(1) });
    assert_eq!(run.j.outcome(), Outcome::Connected);
    assert_eq!(run.j.summary().leg, Some(&call(102)));
}

#[test]
fn phones_in_order_the_last_phones_outcome_settles_after_each_was_dialled_once() {
    let mut run = Run::queued();
    assert_eq!(run.on(created_with(1, phones_target(3))).commands, [dial_phone(1, 3, 0)]);
    run.on(placed(1, 1, 101));
    assert_eq!(run.on(status_of(1, 101, CallStatus::NoAnswer, 2)).commands, [dial_phone(2, 3, 1)]);
    run.on(placed(1, 2, 102));
    assert_eq!(run.on(status_of(2, 102, CallStatus::Failed, 2)).commands, [dial_phone(3, 3, 2)]);
    run.on(placed(1, 3, 103));
    let busy = Outcome::LocationBusy;
    assert_eq!(run.on(status_of(3, 103, CallStatus::Busy, 2)).commands, [redirect(busy), cancel(busy)]);
    assert_eq!(run.j.outcome(), busy, "the last leg's outcome");
}

#[test]
fn phones_in_order_a_machine_holds_the_next_phone_back_until_its_leg_has_ended() {
    let mut run = Run::queued();
    run.on(created_with(1, phones_target(2)));
    run.on(placed(1, 1, 101));
    let step = run.on(answered(1, 101, AnsweredBy::Machine));
    assert_eq!(step.answer, Answer::Refuse { caller_gone: false });
    assert_eq!(step.commands, [], "the machine's leg is still up: no second call yet");
    assert_eq!(run.j.outcome(), Outcome::Pending);
    // Its hang-up is reported: now the second phone.
    assert_eq!(run.after(1_000).on(status_of(1, 101, CallStatus::Completed, 3)).commands, [dial_phone(2, 2, 1)]);
}

#[test]
fn phones_in_order_a_phone_twilio_refuses_is_passed_over_after_its_attempts() {
    let mut run = Run::queued();
    run.on(created_with(1, phones_target(2)));
    let refused = |n| Event::DialFailed { reservation: res(1), attempt: n };
    assert_eq!(run.on(refused(1)).commands, [dial_phone(2, 2, 0)]);
    assert_eq!(run.on(refused(2)).commands, [dial_phone(3, 2, 0)]);
    assert_eq!(run.on(refused(3)).commands, [dial_phone(4, 2, 1)], "three creates, then the next phone");
    assert_eq!(run.on(refused(4)).commands, [dial_phone(5, 2, 1)]);
    assert_eq!(run.on(refused(5)).commands, [dial_phone(6, 2, 1)]);
    let failed = Outcome::DialFailed;
    assert_eq!(run.on(refused(6)).commands, [redirect(failed), cancel(failed)]);
}

#[test]
fn phones_in_order_a_dial_in_doubt_is_looked_up_at_its_own_phone() {
    let mut run = Run::queued();
    run.on(created_with(1, phones_target(2)));
    run.on(placed(1, 1, 101));
    run.on(status_of(1, 101, CallStatus::Busy, 2));
    run.on(Event::DialUnknown { reservation: res(1), attempt: 2 });
    let step = run.tick_at_wake();
    let to = step.commands.iter().find_map(|c| match c {
        Command::FindDial { to, attempt: 2, .. } => Some(to.clone()),
        _ => None,
    });
    assert_eq!(to, Some(phone_number(1)), "{:?}", step.commands);
}

#[test]
fn phones_in_order_screening_no_key_at_the_first_phone_rings_the_second() {
    let mut run = Run::queued();
    let target = DialTarget { phones: (0..2).map(phone_number).collect(), to: phone_number(0), ..screened_target() };
    run.on(created_with(1, target.clone()));
    run.on(placed(1, 1, 101));
    let prompt = run.on(answered(1, 101, AnsweredBy::Human)).answer;
    assert!(matches!(prompt, Answer::Screen { prompt: 1, .. }), "{prompt:?}");
    let none = run.on(Event::LegScreened {
        reservation: res(1),
        attempt: Some(1),
        leg: call(101),
        prompt: 1,
        key: ScreenKey::Nothing,
    });
    assert_eq!(none.answer, Answer::Refuse { caller_gone: false });
    assert_eq!(none.commands, []);
    let step = run.on(status_of(1, 101, CallStatus::Completed, 3));
    let want = Command::Dial {
        reservation: res(1),
        task: task(TASK),
        attempt: 2,
        caller: Some(call(CALLER)),
        target: target.for_phone(1),
    };
    assert_eq!(step.commands, [want]);
}

#[test]
fn a_stored_journey_from_before_phones_reads_as_one_phone() {
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let mut json = serde_json::to_value(&run.j).unwrap();
    assert!(json["reservations"][0]["target"].get("phones").is_none());
    let attempt = &mut json["reservations"][0]["attempts"][0];
    assert!(attempt.get("phone").is_none() && attempt.get("missed").is_none(), "{attempt}");
    attempt.as_object_mut().unwrap().remove("phone");
    let back: Journey = serde_json::from_value(json).unwrap();
    assert_eq!(back, run.j);
    run.j = back;
    let busy = Outcome::LocationBusy;
    assert_eq!(run.on(leg_status(1, 101, CallStatus::Busy, 2)).commands, [redirect(busy), cancel(busy)]);
}

// -- several phones, all at once ---------------------------------------------------------

fn together(n: u32) -> DialTarget {
    DialTarget { ring: crate::domain::Ring::AllAtOnce, ..phones_target(n) }
}

fn dial_together(attempt: u32, n: u32, k: u32) -> Command {
    Command::Dial {
        reservation: res(1),
        task: task(TASK),
        attempt,
        caller: Some(call(CALLER)),
        target: together(n).for_phone(k),
    }
}

#[test]
fn phones_all_at_once_the_first_to_answer_is_bridged_and_the_others_hung_up() {
    let mut run = Run::queued();
    let step = run.on(created_with(1, together(3)));
    assert_eq!(step.commands, [dial_together(1, 3, 0), dial_together(2, 3, 1), dial_together(3, 3, 2)]);
    let keys: std::collections::BTreeSet<String> = step.commands.iter().map(Command::key).collect();
    assert_eq!(keys.len(), 3, "distinct keys");
    run.on(placed(1, 1, 101));
    run.on(placed(1, 2, 102));
    // The third phone's create is refused: it is dialled again by itself.
    assert_eq!(run.on(Event::DialFailed { reservation: res(1), attempt: 3 }).commands, [dial_together(4, 3, 2)]);
    run.on(placed(1, 4, 104));
    // A busy phone settles nothing while others ring.
    assert_eq!(run.on(status_of(1, 101, CallStatus::Busy, 2)).commands, []);
    assert_eq!(run.j.outcome(), Outcome::Pending);
    // The second phone answers first: bridged, and the third is hung up.
    let step = run.on(Event::LegAnswered {
        reservation: res(1),
        attempt: Some(2),
        leg: call(102),
        answered_by: AnsweredBy::Human,
    });
    assert_eq!(step.answer, Answer::Bridge { reservation: res(1), transfer: None });
    assert_eq!(step.commands, [hang_up(104)]);
    // The third answers before its hang-up lands: it lost.
    let late = run.on(Event::LegAnswered {
        reservation: res(1),
        attempt: Some(4),
        leg: call(104),
        answered_by: AnsweredBy::Human,
    });
    assert_eq!(late.answer, Answer::Refuse { caller_gone: false });
    run.on(Event::ReservationAccepted { task: task(TASK), reservation: res(1) });
    assert_eq!(run.j.outcome(), Outcome::Connected);
}

#[test]
fn phones_all_at_once_the_summary_shows_the_leg_that_answered_not_the_last_dialled() {
    let mut run = Run::queued();
    run.on(created_with(1, together(2)));
    run.on(placed(1, 1, 101));
    run.on(placed(1, 2, 102));
    assert_eq!(run.j.summary().leg, Some(&call(102)), "before an answer: the latest leg");
    // The first phone dialled is the one that answers.
    let step = run.on(answered(1, 101, AnsweredBy::Human));
    assert_eq!(step.answer, Answer::Bridge { reservation: res(1), transfer: None });
    let summary = run.j.summary();
    assert_eq!((summary.leg, summary.answered_by), (Some(&call(101)), Some(AnsweredBy::Human)));
}

#[test]
fn phones_all_at_once_the_last_to_fail_settles_the_call() {
    let mut run = Run::queued();
    run.on(created_with(1, together(2)));
    run.on(placed(1, 1, 101));
    run.on(placed(1, 2, 102));
    assert_eq!(run.on(status_of(2, 102, CallStatus::Busy, 2)).commands, []);
    let no_answer = Outcome::LocationNoAnswer;
    let step = run.on(status_of(1, 101, CallStatus::NoAnswer, 2));
    assert_eq!(step.commands, [redirect(no_answer), cancel(no_answer)]);
}

#[test]
fn the_queues_limit_offers_a_callback_once_more_then_voicemail() {
    let mut r = Run::queued();
    r.on(created(1));
    let max = r.policy.max_queue_secs;
    // The offer would come only after 600 s, but the limit comes first: it offers it now.
    let last = Answer::Hold { announce: false, comfort: None, callback: Some(true) };
    assert_eq!(r.on(hold_cb(max, 600)).answer, last);
    assert_eq!(
        r.on(hold_cb(max + 10, 600)).answer,
        Answer::Hold { announce: false, comfort: None, callback: Some(false) }
    );
    assert_eq!(r.j.outcome(), Outcome::Pending);
    // No key in time: voicemail, as without callbacks.
    assert_eq!(r.on(hold_cb(max + LAST_OFFER_SECS, 600)).answer, Answer::Leave);
    assert_eq!(r.j.outcome(), Outcome::QueueTimeout);
    // A location without callbacks sends the caller to voicemail at the limit itself.
    let mut plain = Run::queued();
    plain.on(created(1));
    assert_eq!(plain.on(hold(max)).answer, Answer::Leave);
}

/// A location whose closing policy is its overflow location, south, closing in
/// a minute; south closes an hour after that.
fn closing_with_overflow(r: &mut Run) -> i64 {
    let t0 = r.now;
    let overflow = Some(ClosingOverflow { location: "south".into(), closes_at_ms: Some(t0 + 60_000 + HOUR_MS) });
    r.on(Event::ClosingTime { at_ms: t0 + 60_000, later: Vec::new(), callback: None, overflow });
    t0
}

fn hold_in(queue: &str, queue_time_secs: u32) -> Event {
    Event::Hold {
        queue_time_secs,
        announce_every_secs: 0,
        comfort: false,
        callback_after_secs: None,
        queue: Some(queue.into()),
    }
}

fn exit_from(queue: &str, result: QueueResult) -> Event {
    Event::QueueExit { result, queue: Some(queue.into()) }
}

/// The reservation of the task a transferred caller joined at south.
fn transferred_created(t: u32, r: u32) -> Event {
    Event::ReservationCreated {
        task: task(t),
        reservation: res(r),
        caller: Some(call(CALLER)),
        target: DialTarget { location: "south".into(), transferred: true, ..target() },
    }
}

#[test]
fn the_overflow_closing_policy_moves_a_waiting_caller_to_the_overflow_queue() {
    let mut r = Run::queued();
    let t0 = closing_with_overflow(&mut r);
    // Every line busy: north's task waits with a reservation nobody dialled yet.
    r.on(Event::TaskSeen { task: task(TASK), status: TaskStatus::Pending });
    let step = r.after(60_000).on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::Pending, "not settled: the caller moves on");
    let redirect = step.commands.iter().find(|c| matches!(c, Command::RedirectCaller { .. }));
    assert_eq!(
        redirect,
        Some(&Command::RedirectCaller {
            call: call(CALLER),
            location: Some("north".into()),
            reason: Outcome::ClosedWhileWaiting,
            round: 1,
            callback: false,
            language: None,
            transfer: Some("south".into()),
        }),
        "{step:?}"
    );
    assert!(!step.commands.iter().any(|c| matches!(c, Command::CancelTask { .. })), "TaskRouter cancels it");
    // A `/hold` of north's queue while the redirect is on its way: music.
    assert_eq!(r.on(hold_in("north", 70)).answer, Answer::MUSIC);
    // The redirect takes the caller out of north's queue; its action says nothing.
    assert_eq!(r.on(exit_from("north", QueueResult::Redirected)).answer, Answer::Nothing);
    // North's task is canceled as the caller leaves it: not the caller's end.
    r.on(Event::TaskCanceled { task: task(TASK) });
    assert_eq!(r.j.outcome(), Outcome::Pending);
    // South's queue asks for hold music: the caller waits there, counted anew.
    assert_eq!(r.on(hold_in("south", 0)).answer, Answer::MUSIC);
    assert_eq!(r.j.summary().location, Some("south"));
    // A late reservation of north's task is not the caller's.
    let late = r.on(created(3));
    assert!(!late.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{late:?}");
    // South's own task: dialled, bridged without another transfer notice, connected.
    let dialled = r.on(transferred_created(2, 4));
    assert!(dialled.commands.iter().any(|c| matches!(c, Command::Dial { reservation, .. } if *reservation == res(4))));
    assert_eq!(r.j.task_sid(), Some(&task(2)));
    r.on(Event::DialPlaced { reservation: res(4), attempt: 1, leg: call(40) });
    let bridge = r.on(Event::LegAnswered {
        reservation: res(4),
        attempt: Some(1),
        leg: call(40),
        answered_by: AnsweredBy::Human,
    });
    assert_eq!(bridge.answer, Answer::Bridge { reservation: res(4), transfer: None });
    r.on(exit_from("south", QueueResult::Bridged));
    assert_eq!(r.j.outcome(), Outcome::Connected);
    assert_eq!(r.j.summary().location, Some("south"));
    // South's closing is the one that counts now (an hour later): no wake-up before it.
    assert!(r.j.wake_at().is_none_or(|w| w.as_millisecond() != t0 + 60_000));
}

#[test]
fn the_overflow_closing_policy_at_a_hold_after_closing_time_leaves_then_transfers() {
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    // The `/hold` comes before the tick: the caller leaves from it, no redirect.
    let step = r.after(61_000).on(hold_in("north", 61));
    assert_eq!(step.answer, Answer::Leave);
    assert!(!step.commands.iter().any(|c| matches!(c, Command::RedirectCaller { .. })), "{step:?}");
    let to = Answer::TransferAtClosing { from: "north".into(), to: "south".into() };
    assert_eq!(r.on(exit_from("north", QueueResult::Leave)).answer, to);
    // Twilio asking the action again gets the same answer.
    assert_eq!(r.on(exit_from("north", QueueResult::Leave)).answer, to);
    assert_eq!(r.j.outcome(), Outcome::Pending);
    // In south's queue the caller can still hang up, as anywhere.
    r.on(exit_from("south", QueueResult::Hangup));
    assert_eq!(r.j.outcome(), Outcome::CallerHungUp);
}

#[test]
fn a_failed_transfer_redirect_lets_the_next_hold_move_the_caller() {
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    let step = r.after(60_000).on(Event::Tick);
    let redirect = step.commands.iter().find(|c| matches!(c, Command::RedirectCaller { .. })).cloned();
    let redirect = redirect.expect("a redirect");
    r.after(20_000).on(Event::ActionFailed { command: redirect.clone() });
    assert!(r.j.degraded());
    assert_eq!(r.on(hold_in("north", 100)).answer, Answer::Leave);
    assert!(!r.j.degraded(), "the caller left by itself: no redirect owed");
    // After the transfer, south's own failure still redirects to voicemail, with a key of its own.
    r.on(transferred_created(2, 4));
    r.on(Event::DialPlaced { reservation: res(4), attempt: 1, leg: call(40) });
    r.on(hold_in("south", 0));
    let busy = r.on(Event::LegStatus {
        reservation: res(4),
        attempt: Some(1),
        leg: call(40),
        status: CallStatus::Busy,
        sequence: Some(2),
    });
    assert_eq!(r.j.outcome(), Outcome::LocationBusy);
    let to_voicemail = busy.commands.iter().find(|c| matches!(c, Command::RedirectCaller { .. }));
    match to_voicemail {
        Some(c @ Command::RedirectCaller { location, transfer: None, .. }) => {
            assert_eq!(location.as_deref(), Some("south"));
            assert_ne!(c.key(), redirect.key());
        }
        other => panic!("no redirect to south's voicemail: {other:?}"),
    }
}

#[test]
fn the_overflow_closing_policy_needs_the_overflow_location_still_open() {
    let mut r = Run::queued();
    let t0 = r.now;
    // South closes before north does: no transfer.
    let overflow = Some(ClosingOverflow { location: "south".into(), closes_at_ms: Some(t0 + 30_000) });
    r.on(Event::ClosingTime { at_ms: t0 + 60_000, later: Vec::new(), callback: None, overflow });
    let step = r.after(60_000).on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::ClosedWhileWaiting);
    assert!(step.commands.iter().any(|c| matches!(c, Command::RedirectCaller { transfer: None, .. })), "{step:?}");
    // Nor when the tick comes after south closed too.
    let mut r = Run::queued();
    let overflow = Some(ClosingOverflow { location: "south".into(), closes_at_ms: Some(t0 + 90_000) });
    r.on(Event::ClosingTime { at_ms: t0 + 60_000, later: Vec::new(), callback: None, overflow });
    r.now = t0 + 100_000;
    r.on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::ClosedWhileWaiting);
}

#[test]
fn a_leg_ringing_at_closing_time_is_not_cut_by_the_overflow_policy() {
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    r.on(created(1));
    r.on(placed(1, 1, 10));
    let step = r.after(60_000).on(Event::Tick);
    assert!(step.commands.is_empty(), "{step:?}");
    assert!(r.j.transfer.is_none());
    // Its end (no answer): the caller gets voicemail, not a transfer (the leg's end decides).
    r.on(leg_status(1, 10, CallStatus::NoAnswer, 3));
    assert_eq!(r.j.outcome(), Outcome::LocationNoAnswer);
}

#[test]
fn a_callback_ended_at_closing_time_goes_to_the_voicemail_list_by_policy() {
    for (to_list, wait_for_opening, listed) in [(true, false, true), (false, false, false), (true, true, false)] {
        let mut r = Run::queued();
        let t0 = r.now;
        r.on(Event::ClosingTime { at_ms: t0 + 60_000, later: Vec::new(), callback: None, overflow: None });
        let since = r.j.waiting_since_ms().expect("queued");
        r.on(Event::CallbackChosen { number: number(), tries: 2, wait_for_opening, to_list });
        let step = r.after(60_000).on(Event::Tick);
        // Whatever the policy, it ends: no later opening is known.
        assert_eq!(r.j.outcome(), Outcome::CallbackCanceled, "to_list {to_list}, waits {wait_for_opening}");
        let request = Command::ListCallbackRequest {
            call: call(CALLER),
            location: "north".into(),
            number: number(),
            since_ms: since,
        };
        assert_eq!(step.commands.contains(&request), listed, "to_list {to_list}, waits {wait_for_opening}: {step:?}");
        // Owed once: the next tick owes nothing.
        assert!(
            !r.after(1_000).on(Event::Tick).commands.iter().any(|c| matches!(c, Command::ListCallbackRequest { .. }))
        );
    }
}

#[test]
fn a_transfer_redirect_that_lands_late_puts_the_caller_back_in_the_new_queue() {
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    let step = r.after(60_000).on(Event::Tick);
    assert!(step.commands.iter().any(|c| matches!(c, Command::RedirectCaller { transfer: Some(_), .. })));
    // The redirect waits in a busy outbox; after the grace the next `/hold` lets the caller go.
    let left = r.after(REDIRECT_GRACE_MS).on(hold_in("north", 80));
    assert_eq!(left.answer, Answer::Leave);
    // The redirect still pending is withdrawn.
    let withdraw = Command::WithdrawRedirect { call: call(CALLER), round: 1, kind: RedirectKind::Transfer };
    assert!(left.commands.contains(&withdraw), "{left:?}");
    assert!(r.on(exit_from("north", QueueResult::Leave)).answer == to_south());
    r.on(hold_in("south", 0));
    r.on(transferred_created(2, 4));
    assert_eq!(r.j.task_sid(), Some(&task(2)));
    // It was in flight already, and lands: out of south's queue, which settles nothing…
    assert_eq!(r.on(exit_from("south", QueueResult::Redirected)).answer, Answer::Nothing);
    assert_eq!(r.j.outcome(), Outcome::Pending);
    // …and its document puts the caller back in south's queue, letting the first task go
    // (and withdrawing its dial, still in the outbox: the store then says it failed).
    let again = r.on(Event::TransferAsked);
    assert_eq!(again.answer, to_south());
    assert!(again.commands.contains(&Command::WithdrawDial { reservation: res(4), attempt: 1 }), "{again:?}");
    r.on(Event::DialFailed { reservation: res(4), attempt: 1 });
    assert_eq!(r.j.task_sid(), None);
    r.on(Event::TaskCanceled { task: task(2) });
    assert_eq!(r.j.outcome(), Outcome::Pending, "the caller is still there");
    // South's next task is the caller's, and is dialled.
    let dialled = r.on(transferred_created(3, 6));
    assert!(dialled.commands.iter().any(|c| matches!(c, Command::Dial { reservation, .. } if *reservation == res(6))));
    // The caller hangs up: their own leg settles it.
    r.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) });
    assert_eq!(r.j.outcome(), Outcome::CallerHungUp);
}

fn to_south() -> Answer {
    Answer::TransferAtClosing { from: "north".into(), to: "south".into() }
}

#[test]
fn a_transfer_redirect_after_the_call_was_connected_says_goodbye() {
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    r.after(60_000).on(Event::Tick);
    assert_eq!(r.on(Event::TransferAsked).answer, to_south());
    r.on(transferred_created(2, 4));
    r.on(Event::DialPlaced { reservation: res(4), attempt: 1, leg: call(40) });
    r.on(Event::LegAnswered { reservation: res(4), attempt: Some(1), leg: call(40), answered_by: AnsweredBy::Human });
    r.on(exit_from("south", QueueResult::Bridged));
    assert_eq!(r.j.outcome(), Outcome::Connected);
    // Twilio asks the redirect's document again (or it lands late): no second queue.
    assert_eq!(r.on(Event::TransferAsked).answer, Answer::Goodbye);
}

#[test]
fn after_a_transfer_the_closed_location_is_never_dialled() {
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    r.after(60_000).on(Event::Tick);
    r.on(Event::TransferAsked);
    // The workflow offers the new task to north's worker (south overflows back to north).
    let north = Event::ReservationCreated {
        task: task(2),
        reservation: res(4),
        caller: Some(call(CALLER)),
        target: DialTarget { location: "north".into(), transferred: true, ..target() },
    };
    let step = r.on(north);
    assert!(!step.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{step:?}");
    assert_eq!(r.j.outcome(), Outcome::Pending);
}

/// A callback's try whose location pressed 1 (its leg now dials the caller)
/// while the reservation runs out before `AcceptReservation` lands (the
/// accept failed, or came too late): TaskRouter times the reservation out.
fn callback_accepted_but_timed_out(tries: u32) -> Run {
    let mut r = called_back(tries);
    accepted_try(&mut r, (2, 1), 5, 50);
    let timed_out =
        r.after(5_000).on(Event::ReservationEnded { task: task(2), reservation: res(5), why: ReservationEnd::Timeout });
    assert!(!timed_out.commands.contains(&hang_up(50)), "the leg calling the caller back was cut: {timed_out:?}");
    r
}

#[test]
fn a_call_back_under_way_is_not_cut_when_its_reservation_times_out_before_the_accept() {
    let mut r = callback_accepted_but_timed_out(1);
    // Nothing cuts it later either: the call to the caller decides.
    assert!(!r.after(HANDOFF_MS).on(Event::Tick).commands.contains(&hang_up(50)));
    r.on(Event::CallbackDialed { reservation: res(5), answered: true });
    assert_eq!(r.j.outcome(), Outcome::CallbackConnected);
}

#[test]
fn a_callback_try_that_ended_unaccepted_is_counted_and_its_task_not_dialled_again() {
    let mut r = callback_accepted_but_timed_out(2);
    let missed = r.after(20_000).on(Event::CallbackDialed { reservation: res(5), answered: false });
    assert_eq!(r.j.outcome(), Outcome::Pending, "one of two tries");
    // The try's task is done with: canceled (nobody accepted it), not offered again.
    let cancel = Command::CancelTask { task: task(2), reason: Outcome::Pending, round: 1 };
    assert!(missed.commands.contains(&cancel), "{missed:?}");
    r.on(leg_status(5, 50, CallStatus::Completed, 4));
    // TaskRouter offers it again before the cancel lands: the location is not rung.
    let again = r.after(1_000).on(Event::ReservationCreated {
        task: task(2),
        reservation: res(6),
        caller: Some(call(CALLER)),
        target: callback_target(),
    });
    assert!(!again.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{again:?}");
    r.on(Event::TaskCanceled { task: task(2) });
    assert_eq!(r.j.outcome(), Outcome::Pending);
    // The next try's task comes after the pause, as after a try nobody answered.
    let next = r.after(CALLBACK_RETRY_MS).on(Event::Tick);
    assert!(next.commands.iter().any(|c| matches!(c, Command::CreateCallbackTask { round: 2, .. })), "{next:?}");
}

#[test]
fn a_callback_whose_every_dial_is_refused_settles_nothing_and_waits_for_the_next_reservation() {
    let all_at_once = DialTarget { ring: crate::domain::Ring::AllAtOnce, ..callback_target() };
    let all_at_once = DialTarget { to: phone_number(0), phones: vec![phone_number(0), phone_number(1)], ..all_at_once };
    for target in [callback_target(), all_at_once] {
        let mut r = called_back(2);
        r.on(Event::CallbackTaskCreated { task: task(2), round: 1 });
        let created = Event::ReservationCreated {
            task: task(2),
            reservation: res(5),
            caller: Some(call(CALLER)),
            target: target.clone(),
        };
        // Twilio refuses every create (4xx), up to the attempts each phone has.
        let mut owed = r.on(created).commands;
        let mut refused = 0;
        while let Some(c) = owed.pop() {
            assert!(!matches!(c, Command::CancelTask { .. }), "{c:?}");
            if let Command::Dial { attempt, .. } = c {
                refused += 1;
                owed.extend(r.after(200).on(Event::DialFailed { reservation: res(5), attempt }).commands);
            }
        }
        assert_eq!(refused, 3 * target.phone_count(), "{target:?}");
        // As when its location misses the call: not the callback's end; the
        // reservation times out and TaskRouter offers the task again.
        assert_eq!(r.j.outcome(), Outcome::Pending, "{target:?}");
        r.after(30_000).on(Event::ReservationEnded {
            task: task(2),
            reservation: res(5),
            why: ReservationEnd::Timeout,
        });
        let again = r.after(1_000).on(Event::ReservationCreated {
            task: task(2),
            reservation: res(6),
            caller: Some(call(CALLER)),
            target,
        });
        assert!(again.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{again:?}");
    }
}

#[test]
fn a_callback_connected_after_its_reservation_ran_out_cancels_its_unassigned_task() {
    // The accept came too late: TaskRouter timed the reservation out, and the
    // task is pending again. Only canceling ends it (a pending task cannot be
    // completed); left open, it would hold the location's worker with
    // reservations for hours.
    let mut r = callback_accepted_but_timed_out(2);
    let reached = r.after(20_000).on(Event::CallbackDialed { reservation: res(5), answered: true });
    assert_eq!(r.j.outcome(), Outcome::CallbackConnected);
    let cancel = Command::CancelTask { task: task(2), reason: Outcome::CallbackConnected, round: 1 };
    assert_eq!(reached.commands, [cancel], "{reached:?}");
    r.on(leg_status(5, 50, CallStatus::Completed, 4));
    r.on(Event::TaskCanceled { task: task(2) });
    assert_eq!(r.j.outcome(), Outcome::CallbackConnected);
    assert!(r.j.is_closed(), "{:#?}", r.j);

    // The accept landed, but its `reservation.accepted` comes after the call
    // back: canceling did not fit, so the task is completed.
    let mut r = called_back(2);
    accepted_try(&mut r, (2, 1), 5, 50);
    r.after(20_000).on(Event::CallbackDialed { reservation: res(5), answered: true });
    let accepted = r.on(Event::ReservationAccepted { task: task(2), reservation: res(5) });
    assert_eq!(accepted.commands, [Command::CompleteTask { task: task(2), round: 2 }], "{accepted:?}");
}

#[test]
fn a_callback_canceled_at_closing_cancels_the_tasks_of_later_tries_after_an_earlier_one_was_accepted() {
    let mut r = called_back(2);
    r.on(Event::ClosingTime { at_ms: r.now + 20 * 60_000, later: Vec::new(), callback: None, overflow: None });
    // The first try: accepted, nobody picks up; its task is completed.
    accepted_try(&mut r, (2, 1), 5, 50);
    r.on(Event::ReservationAccepted { task: task(2), reservation: res(5) });
    r.after(20_000).on(Event::CallbackDialed { reservation: res(5), answered: false });
    r.on(Event::TaskCompleted { task: task(2) });
    // The second try's task waits for the location until closing time.
    let next = r.after(CALLBACK_RETRY_MS).on(Event::Tick);
    assert!(next.commands.iter().any(|c| matches!(c, Command::CreateCallbackTask { round: 2, .. })), "{next:?}");
    r.on(Event::CallbackTaskCreated { task: task(3), round: 2 });
    r.now = r.j.closes_at_ms.expect("a closing time");
    let closing = r.on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::CallbackCanceled);
    // Nobody took this task (the first try's accepted reservation is not its own): canceled.
    let cancel = Command::CancelTask { task: task(3), reason: Outcome::CallbackCanceled, round: 1 };
    assert_eq!(closing.commands, [cancel], "{closing:?}");
}

#[test]
fn a_callback_task_create_that_failed_before_closing_is_sent_again_at_the_opening_not_woken_for_while_closed() {
    let (mut r, t0) = waiting_callback(60_000, 15 * HOUR_MS, 23 * HOUR_MS);
    let since = r.j.waiting_since_ms().expect("queued");
    let create = Command::CreateCallbackTask {
        call: call(CALLER),
        location: "north".into(),
        number: number(),
        since_ms: since,
        round: 1,
        effort: 1,
    };
    // The dispatcher gives up on the create just before closing; its back-off ends after it.
    r.now = t0 + 50_000;
    r.on(Event::ActionFailed { command: create });
    r.now = t0 + 60_000;
    r.on(Event::Tick);
    // Closed: no create now, and no wake-up before the opening either.
    for _ in 0..3 {
        let now = r.now;
        let step = r.tick_at_wake();
        let wake = r.j.wake_at().map(|w| w.as_millisecond());
        assert!(wake.is_some_and(|w| w > r.now), "woken at {} (after {now}) for nothing: {step:?}", r.now);
        if r.now >= t0 + 15 * HOUR_MS {
            assert!(
                step.commands.iter().any(|c| matches!(c, Command::CreateCallbackTask { effort: 2, .. })),
                "{step:?}"
            );
            return;
        }
        assert!(step.commands.is_empty(), "{step:?}");
    }
    panic!("never sent again by the opening");
}

#[test]
fn a_caller_who_hangs_up_before_leaving_the_queue_for_a_callback_is_still_called_back() {
    // Chosen: 1 pressed, and the caller hangs up before the `<Leave>` takes them out.
    let mut r = Run::queued();
    r.on(created(1));
    assert_eq!(r.on(chosen(2)).answer, Answer::Leave);
    r.on(Event::QueueExit { result: QueueResult::Hangup, queue: None });
    assert_eq!(r.j.outcome(), Outcome::Pending, "the callback goes on, as when the caller's status says so");
    r.on(Event::CallbackTaskCreated { task: task(2), round: 1 });
    assert_eq!(r.j.task_sid(), Some(&task(2)));

    // Made by the closing policy: the caller hangs up before the redirect tells them.
    let mut r = Run::queued();
    closing_with_callback(&mut r, true);
    let closing = r.after(60_000).on(Event::Tick);
    assert!(closing.commands.iter().any(|c| matches!(c, Command::RedirectCaller { callback: true, .. })));
    r.on(Event::QueueExit { result: QueueResult::Hangup, queue: None });
    r.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(3) });
    assert_eq!(r.j.outcome(), Outcome::Pending, "called back at the opening all the same");
}

#[test]
fn a_task_let_go_by_a_transfer_is_never_adopted_as_a_callbacks() {
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    r.on(Event::TaskSeen { task: task(TASK), status: TaskStatus::Pending });
    r.after(60_000).on(Event::Tick);
    assert!(r.j.transfer.is_some());
    // Still in north's queue, the caller presses 1 for a callback.
    assert_eq!(r.on(chosen(1)).answer, Answer::Leave);
    // A report naming north's old task (which TaskRouter cancels) is not the callback's.
    r.on(Event::CallbackTaskCreated { task: task(TASK), round: 1 });
    assert_eq!(r.j.task_sid(), None);
    let late = r.on(callback_created(TASK, 7));
    assert_eq!(r.j.task_sid(), None, "{late:?}");
    r.on(Event::CallbackTaskCreated { task: task(2), round: 1 });
    assert_eq!(r.j.task_sid(), Some(&task(2)));
}

/// North closes with its overflow location, south, closing `south_after_ms`
/// later; the caller is still in north's queue with north's task let go.
fn transfer_owed(south_after_ms: i64) -> (Run, i64) {
    let mut r = Run::queued();
    let t0 = r.now;
    let overflow = Some(ClosingOverflow { location: "south".into(), closes_at_ms: Some(t0 + 60_000 + south_after_ms) });
    r.on(Event::ClosingTime { at_ms: t0 + 60_000, later: Vec::new(), callback: None, overflow });
    r.on(Event::TaskSeen { task: task(TASK), status: TaskStatus::Pending });
    (r, t0)
}

#[test]
fn south_closing_before_the_caller_left_norths_queue_calls_the_transfer_off() {
    // What the caller gets when south has closed already at north's closing time.
    let (mut first, _) = transfer_owed(-10_000);
    let expected = first.after(60_000).on(Event::Tick);
    let expected: Vec<Command> =
        expected.commands.into_iter().filter(|c| matches!(c, Command::RedirectCaller { .. })).collect();
    assert_eq!(expected, [redirect(Outcome::ClosedWhileWaiting)]);

    // South closes 30 s after north, while the transfer's redirect may still
    // wait in the outbox (or be on its way): it stays, and takes the caller to
    // north's voicemail, as if south had closed first; no second redirect.
    let (mut r, t0) = transfer_owed(30_000);
    let closing = r.after(60_000).on(Event::Tick);
    let transfer = closing.commands.iter().find(|c| matches!(c, Command::RedirectCaller { transfer: Some(_), .. }));
    assert!(transfer.is_some(), "{closing:?}");
    r.now = t0 + 90_000;
    let step = r.on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::ClosedWhileWaiting);
    assert!(
        !step.commands.iter().any(|c| matches!(c, Command::RedirectCaller { .. } | Command::WithdrawRedirect { .. })),
        "{step:?}"
    );
    assert_eq!(r.j.summary().location, Some("north"));
    // Its document says voicemail at north.
    let mut landed = r.clone();
    landed.on(exit_from("north", QueueResult::Redirected));
    let late = landed.on(Event::TransferAsked);
    let voicemail = Answer::Fallback { location: Some("north".into()), reason: Outcome::ClosedWhileWaiting };
    assert_eq!(late.answer, voicemail);
    assert!(!late.commands.iter().any(|c| matches!(c, Command::RedirectCaller { .. })), "{late:?}");
    // Overdue by the next `/hold` of north's queue (as it would be for the
    // transfer): `<Leave>` takes the caller to voicemail, and it is withdrawn.
    let hold = r.after(1_000).on(hold_in("north", 91));
    assert_eq!(hold.answer, Answer::Leave);
    let withdraw = Command::WithdrawRedirect { call: call(CALLER), round: 1, kind: RedirectKind::Transfer };
    assert_eq!(hold.commands, [withdraw], "{hold:?}");
    assert!(r.after(60_000).on(Event::Tick).commands.is_empty());
}

/// South closes 10 s after north, within the transfer redirect's grace.
fn called_off_within_the_grace() -> (Run, i64) {
    let (mut r, t0) = transfer_owed(10_000);
    let closing = r.after(60_000).on(Event::Tick);
    assert!(closing.commands.iter().any(|c| matches!(c, Command::RedirectCaller { transfer: Some(_), .. })));
    (r, t0)
}

#[test]
fn a_transfer_called_off_lets_its_redirect_take_the_caller_to_voicemail_once() {
    let not_redirected = |s: &Step| {
        !s.commands.iter().any(|c| matches!(c, Command::RedirectCaller { .. } | Command::WithdrawRedirect { .. }))
    };
    let voicemail = Answer::Fallback { location: Some("north".into()), reason: Outcome::ClosedWhileWaiting };
    // Called off at a tick: the transfer's redirect, maybe on the wire, stands
    // for the redirect to voicemail: not withdrawn, none other owed, and
    // north's queue holds the caller for it within its grace.
    let (mut r, t0) = called_off_within_the_grace();
    r.now = t0 + 70_000;
    let step = r.on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::ClosedWhileWaiting);
    assert!(not_redirected(&step), "{step:?}");
    let hold = r.after(1_000).on(hold_in("north", 71));
    assert_eq!(hold.answer, Answer::MUSIC);
    assert!(not_redirected(&hold), "{hold:?}");
    // It lands: north's voicemail, once.
    r.on(exit_from("north", QueueResult::Redirected));
    assert_eq!(r.on(Event::TransferAsked).answer, voicemail);
    assert!(not_redirected(&r.after(60_000).on(Event::Tick)));

    // Called off at a `/hold` of north's queue within the grace: held too.
    let (mut r, t0) = called_off_within_the_grace();
    r.now = t0 + 71_000;
    let hold = r.on(hold_in("north", 71));
    assert_eq!(r.j.outcome(), Outcome::ClosedWhileWaiting);
    assert_eq!(hold.answer, Answer::MUSIC);
    assert!(not_redirected(&hold), "{hold:?}");

    // The dispatcher gave up on it: the redirect to voicemail is owed instead.
    let (mut r, t0) = called_off_within_the_grace();
    r.now = t0 + 70_000;
    r.on(Event::Tick);
    let transfer = Command::RedirectCaller {
        call: call(CALLER),
        location: Some("north".into()),
        reason: Outcome::ClosedWhileWaiting,
        round: 1,
        callback: false,
        language: None,
        transfer: Some("south".into()),
    };
    let failed = r.on(Event::ActionFailed { command: transfer });
    assert!(failed.commands.contains(&redirect(Outcome::ClosedWhileWaiting)), "{failed:?}");
}

#[test]
fn south_closed_at_a_hold_in_norths_queue_lets_the_caller_go_to_norths_voicemail_once() {
    // The transfer's redirect is overdue, and south has closed by the next `/hold` of north's queue.
    let (mut r, t0) = transfer_owed(10_000);
    r.after(60_000).on(Event::Tick);
    r.now = t0 + 60_000 + REDIRECT_GRACE_MS;
    let hold = r.on(hold_in("north", 75));
    assert_eq!(hold.answer, Answer::Leave);
    assert_eq!(r.j.outcome(), Outcome::ClosedWhileWaiting);
    // `<Leave>` takes the caller out: no REST redirect besides, and the transfer's is withdrawn.
    assert!(!hold.commands.iter().any(|c| matches!(c, Command::RedirectCaller { .. })), "{hold:?}");
    assert!(
        hold.commands.contains(&Command::WithdrawRedirect {
            call: call(CALLER),
            round: 1,
            kind: RedirectKind::Transfer
        }),
        "{hold:?}"
    );
    let exit = r.on(exit_from("north", QueueResult::Leave));
    let voicemail = Answer::Fallback { location: Some("north".into()), reason: Outcome::ClosedWhileWaiting };
    assert_eq!(exit.answer, voicemail);
    assert!(exit.commands.is_empty(), "{exit:?}");
    assert!(r.after(1_000).on(Event::Tick).commands.is_empty());
}

#[test]
fn a_leg_of_a_reservation_unheard_of_while_the_caller_moves_to_south_settles_nothing() {
    // North closed and the caller is being moved to south's queue, its redirect owed.
    // A leg of a reservation the journey never heard of can only be north's (south's
    // task is made once the caller is in its queue): its end speaks for nobody.
    for (key, status) in
        [(Some(ScreenKey::Other), None), (Some(ScreenKey::Nothing), None), (None, Some(CallStatus::Busy))]
    {
        let mut r = Run::queued();
        closing_with_overflow(&mut r);
        let moving = r.after(60_000).on(Event::Tick);
        assert!(moving.commands.iter().any(|c| matches!(c, Command::RedirectCaller { transfer: Some(_), .. })));
        let (reservation, leg) = (res(9), call(178));
        let step = match (key, status) {
            (Some(key), _) => r.on(Event::LegScreened { reservation, attempt: None, leg, prompt: 2, key }),
            (_, Some(status)) => r.on(Event::LegStatus { reservation, attempt: None, leg, status, sequence: Some(3) }),
            _ => unreachable!(),
        };
        assert!(!matches!(step.answer, Answer::Bridge { .. }), "{step:?}");
        assert!(!step.commands.iter().any(|c| matches!(c, Command::RedirectCaller { .. })), "{step:?}");
        assert_eq!(r.j.outcome(), Outcome::Pending, "{key:?} {status:?}");
        // The caller arrives in south's queue as before.
        assert_eq!(r.on(Event::TransferAsked).answer, to_south());
    }
}

#[test]
fn a_reservation_heard_of_after_its_task_ended_is_ended_with_it() {
    // The caller hung up and TaskRouter canceled the task (with its pending reservations).
    let mut r = Run::queued();
    r.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) });
    r.on(Event::TaskCanceled { task: task(TASK) });
    assert!(r.j.is_closed(), "{:#?}", r.j);
    // A reservation.created from before the cancel, delivered late: no dial, nothing to end, still closed.
    let late = r.on(created(2));
    assert_eq!(late.commands, []);
    assert!(r.j.is_closed(), "reopened by a late reservation.created: {:#?}", r.j);
    // Nor by the reconciler listing one of its reservations as pending (it read before the cancel).
    let seen =
        r.on(Event::ReservationSeen { task: task(TASK), reservation: res(3), status: ReservationStatus::Pending });
    assert_eq!(seen.commands, []);
    assert!(r.j.is_closed(), "reopened by a stale listing: {:#?}", r.j);
    assert_eq!(r.j.outcome(), Outcome::CallerHungUp);
}

#[test]
fn a_late_reservation_of_souths_task_after_the_caller_hung_up_leaves_the_journey_closed() {
    // The caller moved to south's queue at north's closing time, and hangs up there
    // before the journey heard of south's task.
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    r.after(60_000).on(Event::Tick);
    assert_eq!(r.on(Event::TransferAsked).answer, to_south());
    r.on(hold_in("south", 0));
    r.after(5_000).on(exit_from("south", QueueResult::Hangup));
    r.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) });
    assert_eq!(r.j.outcome(), Outcome::CallerHungUp);
    // TaskRouter cancels south's task as the caller leaves its queue, with its reservation.
    r.on(Event::TaskCanceled { task: task(2) });
    r.on(Event::ReservationEnded { task: task(2), reservation: res(4), why: ReservationEnd::Canceled });
    assert!(r.j.is_closed(), "{:#?}", r.j);
    // South's reservation.created, delivered late: as for an ordinary journey's, no dial and
    // nothing left open (the task is known to have ended), and the outcome stays.
    let late = r.on(transferred_created(2, 4));
    assert_eq!(late.commands, [], "{late:?}");
    assert!(r.j.is_closed(), "reopened by a late reservation.created: {:#?}", r.j);
    assert_eq!(r.j.outcome(), Outcome::CallerHungUp);

    // Had TaskRouter's cancel not been heard (lost), the task is ended as an
    // ordinary journey's would be: canceled, once.
    let mut r = Run::queued();
    closing_with_overflow(&mut r);
    r.after(60_000).on(Event::Tick);
    r.on(Event::TransferAsked);
    r.after(5_000).on(exit_from("south", QueueResult::Hangup));
    let late = r.on(transferred_created(2, 4));
    assert!(!late.commands.iter().any(|c| matches!(c, Command::Dial { .. })), "{late:?}");
    let cancel = Command::CancelTask { task: task(2), reason: Outcome::CallerHungUp, round: 1 };
    assert!(late.commands.contains(&cancel), "{late:?}");
    r.on(Event::TaskCanceled { task: task(2) });
    assert!(r.j.is_closed(), "{:#?}", r.j);
    assert_eq!(r.j.outcome(), Outcome::CallerHungUp);
}

/// A caller settled while queued (busy here), with the redirect to voicemail owed.
fn busy_with_redirect_owed() -> Run {
    let mut run = Run::queued();
    run.on(created(1));
    run.on(placed(1, 1, 101));
    let step = run.on(leg_status(1, 101, CallStatus::Busy, 2));
    assert!(step.commands.contains(&redirect(Outcome::LocationBusy)), "{step:?}");
    run
}

#[test]
fn a_redirect_to_voicemail_still_owed_is_withdrawn_when_hold_lets_the_caller_go() {
    let withdraw = Command::WithdrawRedirect { call: call(CALLER), round: 1, kind: RedirectKind::Fallback };
    // Within the grace the caller holds for the redirect, which stays owed.
    let mut run = busy_with_redirect_owed();
    let held = run.after(REDIRECT_GRACE_MS - 1).on(hold(30));
    assert_eq!(held.answer, Answer::MUSIC);
    assert!(held.commands.is_empty(), "{held:?}");
    // After it, `<Leave>` takes the caller to voicemail, and the redirect, if
    // it still waits in the outbox, must not go out: landing on the voicemail
    // it would start it again.
    let left = run.after(1).on(hold(35));
    assert_eq!(left.answer, Answer::Leave);
    assert_eq!(left.commands, std::slice::from_ref(&withdraw));
    assert_eq!(withdraw.key(), format!("withdraw:redirect:{}", call(CALLER)));
    // Once: not again when `/enqueue-action` follows, nor when Twilio asks `/hold` again.
    let exit = run.on(Event::QueueExit { result: QueueResult::Leave, queue: None });
    assert_eq!(exit.answer, Answer::Fallback { location: Some("north".into()), reason: Outcome::LocationBusy });
    assert!(exit.commands.is_empty(), "{exit:?}");
    assert_eq!(run.on(hold(35)).answer, Answer::Leave);
    assert!(run.after(60_000).on(Event::Tick).commands.is_empty());

    // A redirect the dispatcher gave up on is in the outbox no more: nothing to withdraw.
    let mut run = busy_with_redirect_owed();
    run.on(Event::ActionFailed { command: redirect(Outcome::LocationBusy) });
    let left = run.on(hold(30));
    assert_eq!(left.answer, Answer::Leave);
    assert!(!left.commands.iter().any(|c| matches!(c, Command::WithdrawRedirect { .. })), "{left:?}");

    // A caller who hangs up while it waits no longer needs it either.
    let mut run = busy_with_redirect_owed();
    let gone = run.on(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) });
    assert!(gone.commands.contains(&withdraw), "{gone:?}");
}

#[test]
fn a_callback_chosen_after_closing_with_a_dial_in_doubt_wakes_no_sooner_than_it_can_act() {
    // North closes with no later opening while a dial of its is in doubt; the
    // caller, still waiting for it, then chooses to be called back at the opening.
    let mut r = Run::queued();
    let t0 = r.now;
    r.on(Event::ClosingTime { at_ms: t0 + 60_000, later: Vec::new(), callback: None, overflow: None });
    r.on(created(1));
    r.on(Event::DialUnknown { reservation: res(1), attempt: 1 });
    r.after(61_000).on(Event::Tick);
    assert_eq!(r.j.outcome(), Outcome::Pending);
    r.after(1_000).on(Event::CallbackChosen { number: number(), tries: 1, wait_for_opening: true, to_list: false });
    // Nothing is created while closed: no wake-up for it now (the dial's
    // lookups and end decide).
    let now = at(r.now);
    assert!(r.j.wake_at().is_none_or(|w| w > now), "wake-up at {:?}, now {now}: {:#?}", r.j.wake_at(), r.j);
}
