//! The journey's property tests.
//!
//! `a_journey_in_a_faulty_world_keeps_its_invariants` runs the machine against
//! a small model of Twilio: one caller (through `/incoming-call`, or enqueued
//! by a Studio flow that never calls us), TaskRouter with one one-line worker
//! that re-offers the task after each timeout, the location's phone (a person,
//! a machine, busy, no answer, a failing line), the dispatcher and the
//! reconciler. Faults, until [`FAULTS_UNTIL_MS`]: webhooks and events delivered
//! twice, late (so out of order) or never; TwiML webhooks asked again as
//! Twilio does when an answer is lost; a create refused (4xx), failed before
//! acting (5xx) or reset after creating the call; other actions failing for
//! good; restarts between any two steps, which lose the dispatcher's answers
//! in flight. After that the world settles, and the run checks that the
//! caller, the task, the worker and every leg have come to rest.
//!
//! `arbitrary_event_sequences_keep_the_invariants` feeds sequences of any
//! events over a few SIDs, in any order, with restarts.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::invariants::Checker;
use super::tests::{at, call, callback_target, policy, res, screened_target, target, task};
use super::*;
use crate::domain::Ring;

const FAULTS_UNTIL_MS: i64 = 300_000;
const LIMIT_MS: i64 = 4_000_000;
const LATENCY_MS: i64 = 200;
const RING_TIMEOUT_MS: i64 = 20_000;
/// How long the dispatcher retries before it reports `ActionFailed`.
const GIVE_UP_AFTER_MS: i64 = 20_000;
const RECONCILE_EVERY_MS: i64 = 30_000;
const HOLD_EVERY_MS: i64 = 10_000;
const VOICEMAIL_MS: i64 = 20_000;

#[derive(Debug, Clone, Copy)]
enum Phone {
    Person { answer_s: i64, talk_s: i64 },
    Machine { answer_s: i64 },
    Unsure { answer_s: i64, talk_s: i64 },
    Busy,
    NoAnswer,
    Fails,
}

/// What a person at a screened location does at the prompt (a machine never presses).
#[derive(Debug, Clone, Copy)]
enum Press {
    Accept { after_s: i64 },
    Other { after_s: i64 },
    Nothing,
    HangUp { after_s: i64 },
}

#[derive(Debug, Clone, Copy)]
enum DialFault {
    None,
    Refused,
    ErrorBeforeActing,
    ResetAfterCreating,
}

#[derive(Debug, Clone, Copy)]
enum Delivery {
    OnTime,
    Twice { gap_ms: i64 },
    Late { by_ms: i64 },
    Lost,
}

#[derive(Debug, Clone)]
struct Scenario {
    studio: bool,
    /// The location closes this long after the caller is enqueued.
    closes_after_s: Option<i64>,
    /// The location screens its calls (without AMD).
    screening: bool,
    /// How many phones the location has (1 to 3), and whether they ring
    /// all at once rather than in order.
    location_phones: u32,
    all_at_once: bool,
    patience_s: i64,
    max_queue_secs: u32,
    reservation_timeout_s: i64,
    /// Drawn in turn, one per created call, per create request, per other
    /// action, per asynchronous delivery and per TwiML webhook.
    phones: Vec<Phone>,
    presses: Vec<Press>,
    dials: Vec<DialFault>,
    /// How long a dial waits in the outbox before it is sent (a busy dispatcher).
    dial_delays_ms: Vec<i64>,
    actions_fail: Vec<bool>,
    deliveries: Vec<Delivery>,
    retried: Vec<bool>,
    /// Machine steps before which the server restarts.
    restarts: BTreeSet<usize>,
    /// The location's announcement interval (0: off) and whether it has comfort messages.
    announce_every_secs: u32,
    comfort: bool,
}

fn phone() -> impl Strategy<Value = Phone> {
    prop_oneof![
        4 => (1i64..30, 1i64..90).prop_map(|(answer_s, talk_s)| Phone::Person { answer_s, talk_s }),
        1 => (1i64..30).prop_map(|answer_s| Phone::Machine { answer_s }),
        1 => (1i64..30, 1i64..90).prop_map(|(answer_s, talk_s)| Phone::Unsure { answer_s, talk_s }),
        2 => Just(Phone::Busy),
        2 => Just(Phone::NoAnswer),
        1 => Just(Phone::Fails),
    ]
}

fn press() -> impl Strategy<Value = Press> {
    prop_oneof![
        4 => (1i64..8).prop_map(|after_s| Press::Accept { after_s }),
        2 => (1i64..8).prop_map(|after_s| Press::Other { after_s }),
        2 => Just(Press::Nothing),
        1 => (1i64..8).prop_map(|after_s| Press::HangUp { after_s }),
    ]
}

fn dial_fault() -> impl Strategy<Value = DialFault> {
    prop_oneof![
        6 => Just(DialFault::None),
        1 => Just(DialFault::Refused),
        1 => Just(DialFault::ErrorBeforeActing),
        1 => Just(DialFault::ResetAfterCreating),
    ]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![
        6 => Just(Delivery::OnTime),
        1 => (0i64..5_000).prop_map(|gap_ms| Delivery::Twice { gap_ms }),
        2 => (500i64..40_000).prop_map(|by_ms| Delivery::Late { by_ms }),
        1 => Just(Delivery::Lost),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    use proptest::collection::{btree_set, vec};
    (
        (any::<bool>(), 5i64..400, 30u32..300, 10i64..70, proptest::option::weighted(0.25, 1i64..300)),
        (
            vec(phone(), 1..6),
            any::<bool>(),
            vec(press(), 1..5),
            prop_oneof![2 => Just(1u32), 3 => 2u32..=3],
            any::<bool>(),
        ),
        (vec(dial_fault(), 1..5), vec(prop_oneof![3 => Just(200i64), 1 => 200i64..15_000], 1..4)),
        vec(prop::bool::weighted(0.15), 1..8),
        vec(delivery(), 1..16),
        vec(prop::bool::weighted(0.2), 1..5),
        btree_set(1usize..150, 0..4),
        (prop_oneof![1 => Just(0u32), 3 => 5u32..120], any::<bool>()),
    )
        .prop_map(
            |(
                (studio, patience_s, max_queue_secs, reservation_timeout_s, closes_after_s),
                (phones, screening, presses, location_phones, all_at_once),
                (dials, dial_delays_ms),
                actions_fail,
                deliveries,
                retried,
                restarts,
                (announce_every_secs, comfort),
            )| {
                Scenario {
                    studio,
                    closes_after_s,
                    screening,
                    location_phones,
                    all_at_once,
                    patience_s,
                    max_queue_secs,
                    reservation_timeout_s,
                    phones,
                    presses,
                    dials,
                    dial_delays_ms,
                    actions_fail,
                    deliveries,
                    retried,
                    restarts,
                    announce_every_secs,
                    comfort,
                }
            },
        )
}

/// Where the caller is, in truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Queued { since: i64 },
    Bridged,
    Voicemail,
    Gone,
}

#[derive(Debug)]
struct WorldLeg {
    reservation: usize,
    attempt: u32,
    /// Which of the location's phones it rings.
    phone_index: u32,
    status: CallStatus,
    sequence: u32,
    phone: Phone,
    bridged: bool,
}

#[derive(Debug)]
enum Item {
    /// An event on its way to the machine.
    Deliver(Event),
    /// The dispatcher's report of a command's result (lost by a restart, for a dial).
    Result(Event),
    Execute(Command),
    Tick,
    Offer,
    ReservationTimeout(usize),
    LegProgress(usize, CallStatus),
    PhonePicksUp(usize),
    PhoneAnswers(usize),
    Bridges(usize),
    TalkEnds(usize),
    /// The screening prompt's answer: a key at that asking, or none in time.
    Pressed(usize, u32, ScreenKey),
    ScreenHangUp(usize),
    Patience,
    HoldPoll,
    VoicemailEnds,
    /// Twilio's transcription of the caller's voicemail is ready.
    Transcribed,
    Reconcile,
}

struct World {
    sc: Scenario,
    policy: Policy,
    now: i64,
    seq: u64,
    queue: BTreeMap<(i64, u64), Item>,
    ticks: BTreeSet<i64>,
    journey: Journey,
    checker: Checker,
    steps: usize,
    /// How many of each fault list were drawn.
    drawn: [usize; 7],
    caller: Where,
    task: TaskStatus,
    reservations: Vec<ReservationStatus>,
    /// Calls created per reservation and phone.
    calls_per_phone: BTreeMap<(usize, u32), u32>,
    legs: Vec<WorldLeg>,
    sent_dials: BTreeSet<(usize, u32)>,
    withdrawn: BTreeSet<(usize, u32)>,
    failure: Option<TestCaseError>,
    tally: Tally,
    /// When the journey settled a still-queued caller elsewhere (busy, no answer …).
    settled_while_queued: Option<i64>,
    /// A redirect of the caller failed for good: the caller may wait for its retry.
    redirect_failed: bool,
    /// When the caller last heard their place announced.
    announced_at: Option<i64>,
}

/// How long a caller settled elsewhere may still hear hold music.
const STRANDED_MS: i64 = 60_000;

/// What a run went through, so a test can show the world is not vacuous.
#[derive(Debug, Default)]
struct Tally {
    outcomes: BTreeMap<&'static str, usize>,
    /// Events fed to the machine and commands it owed, by kind.
    seen: BTreeMap<String, usize>,
    restarts: usize,
}

impl Tally {
    fn add(&mut self, what: impl Into<String>) {
        *self.seen.entry(what.into()).or_default() += 1;
    }
}

/// The variant's name, from its `Debug` form.
fn kind(x: &impl std::fmt::Debug) -> String {
    format!("{x:?}").split([' ', '(', '{']).next().unwrap_or_default().to_owned()
}

fn pick<T: Copy>(list: &[T], drawn: &mut usize) -> Option<T> {
    let x = list.get(*drawn % list.len().max(1)).copied();
    *drawn += 1;
    x
}

fn leg_sid(i: usize) -> CallSid {
    call(100 + i as u32)
}

fn res_sid(k: usize) -> ReservationSid {
    res(k as u32 + 1)
}

const CALLER: u32 = 1;
const TASK: u32 = 1;

impl World {
    fn new(sc: Scenario) -> Self {
        let policy = Policy { max_queue_secs: sc.max_queue_secs, ..policy() };
        World {
            sc,
            policy,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            ticks: BTreeSet::new(),
            journey: Journey::default(),
            checker: Checker::default(),
            steps: 0,
            drawn: [0; 7],
            caller: Where::Queued { since: 0 },
            task: TaskStatus::Pending,
            reservations: Vec::new(),
            calls_per_phone: BTreeMap::new(),
            legs: Vec::new(),
            sent_dials: BTreeSet::new(),
            withdrawn: BTreeSet::new(),
            failure: None,
            tally: Tally::default(),
            settled_while_queued: None,
            redirect_failed: false,
            announced_at: None,
        }
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(TestCaseError::fail(format!("{why} at {} ms\n{:#?}", self.now, self.journey)));
        }
    }

    fn later(&mut self, delay_ms: i64, item: Item) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), item);
    }

    fn faulty(&self) -> bool {
        self.now < FAULTS_UNTIL_MS
    }

    fn run(self) -> Result<(), TestCaseError> {
        self.run_tallied(&mut Tally::default())
    }

    fn run_tallied(mut self, tally: &mut Tally) -> Result<(), TestCaseError> {
        let result = self.run_to_rest();
        *self.tally.outcomes.entry(self.journey.outcome().as_str()).or_default() += 1;
        for (k, n) in std::mem::take(&mut self.tally.seen) {
            *tally.seen.entry(k).or_default() += n;
        }
        for (k, n) in &self.tally.outcomes {
            *tally.outcomes.entry(k).or_default() += n;
        }
        tally.restarts += self.tally.restarts;
        result
    }

    fn run_to_rest(&mut self) -> Result<(), TestCaseError> {
        self.start();
        while let Some(((t, _), item)) = self.queue.pop_first() {
            if t > LIMIT_MS || self.failure.is_some() {
                break;
            }
            self.now = t;
            self.handle(item);
        }
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        prop_assert!(self.task.is_final(), "the task is left {:?}", self.task);
        let open = self.reservations.iter().filter(|r| !reservation_final(**r)).count();
        prop_assert_eq!(open, 0, "a worker's capacity is still taken: {:?}", self.reservations);
        prop_assert!(self.legs.iter().all(|l| l.status.is_final()), "a leg is still live: {:?}", self.legs);
        prop_assert_eq!(self.caller, Where::Gone);
        // A leg's failure is the outcome only once the last phone was rung.
        let last = self.sc.location_phones.max(1) - 1;
        if matches!(
            self.journey.outcome(),
            Outcome::LocationBusy | Outcome::LocationNoAnswer | Outcome::LocationVoicemail
        ) && !self.sc.all_at_once
        {
            let rang_last = self.legs.iter().any(|l| l.phone_index == last);
            prop_assert!(rang_last, "{} before phone {last} rang: {:?}", self.journey.outcome(), self.legs);
        }
        self.checker.settled(&self.journey)
    }

    /// One step of the machine: every invariant is checked on it.
    fn machine(&mut self, event: Event) -> Answer {
        if self.failure.is_some() {
            return Answer::Nothing;
        }
        self.steps += 1;
        if self.sc.restarts.contains(&self.steps) {
            self.restart();
        }
        let before = std::mem::take(&mut self.journey);
        let now = at(self.now);
        let (after, step) = apply(before.clone(), event.clone(), now, &self.policy);
        if let Err(e) = self.checker.step(&before, &event, now, &self.policy, &after, &step) {
            self.failure = Some(e);
        }
        self.journey = after;
        self.tally.add(format!("event {}", kind(&event)));
        for c in &step.commands {
            self.tally.add(format!("command {}", kind(c)));
        }
        if step.answer != Answer::Nothing {
            self.tally.add(format!("answer {}", kind(&step.answer)));
        }
        for c in step.commands {
            match c {
                // The store drops a dial still in the outbox in the same transaction.
                Command::WithdrawDial { reservation, attempt } => {
                    if let Some(k) = self.reservation_index(&reservation)
                        && !self.sent_dials.contains(&(k, attempt))
                    {
                        self.withdrawn.insert((k, attempt));
                        self.later(LATENCY_MS, Item::Result(Event::DialFailed { reservation, attempt }));
                    }
                }
                Command::Dial { .. } => {
                    let delay = pick(&self.sc.dial_delays_ms, &mut self.drawn[5]).unwrap_or(LATENCY_MS);
                    self.later(delay, Item::Execute(c));
                }
                c => self.later(LATENCY_MS, Item::Execute(c)),
            }
        }
        let elsewhere =
            !matches!(self.journey.outcome(), Outcome::Pending | Outcome::Connected | Outcome::CallerHungUp);
        if elsewhere && self.settled_while_queued.is_none() && matches!(self.caller, Where::Queued { .. }) {
            self.settled_while_queued = Some(self.now);
        }
        if let Some(wake) = self.journey.wake_at().map(|w| w.as_millisecond())
            && self.ticks.insert(wake)
        {
            self.seq += 1;
            self.queue.insert((wake, self.seq), Item::Tick);
        }
        step.answer
    }

    /// The journey goes through its JSON (as the store will keep it), and the
    /// dispatcher's answers in flight are lost: those dials are in doubt.
    fn restart(&mut self) {
        self.tally.restarts += 1;
        let read_back = serde_json::to_string(&self.journey).and_then(|j| serde_json::from_str::<Journey>(&j));
        match read_back {
            Ok(j) => self.journey = j,
            Err(e) => self.fail(format!("the journey did not survive a restart: {e}")),
        }
        for item in self.queue.values_mut() {
            if let Item::Result(Event::DialPlaced { reservation, attempt, .. }) = item {
                *item = Item::Result(Event::DialUnknown { reservation: reservation.clone(), attempt: *attempt });
            }
        }
    }

    /// A webhook that needs TwiML: Twilio may ask twice when the first answer is lost.
    fn webhook(&mut self, event: Event) -> Answer {
        let first = self.machine(event.clone());
        let retried = self.faulty() && pick(&self.sc.retried, &mut self.drawn[4]).unwrap_or(false);
        if !retried {
            return first;
        }
        let second = self.machine(event.clone());
        self.tally.add("webhook asked again");
        if first != second {
            self.fail(format!("{event:?} asked again got {second:?} after {first:?}"));
        }
        second
    }

    /// A webhook or event without TwiML: delivered on time, twice, late or never.
    fn send(&mut self, event: Event) {
        let delivery = if self.faulty() { pick(&self.sc.deliveries, &mut self.drawn[3]) } else { None }
            .unwrap_or(Delivery::OnTime);
        self.tally.add(format!("delivery {}", kind(&delivery)));
        match delivery {
            Delivery::OnTime => self.later(LATENCY_MS, Item::Deliver(event)),
            Delivery::Twice { gap_ms } => {
                self.later(LATENCY_MS, Item::Deliver(event.clone()));
                self.later(LATENCY_MS + gap_ms, Item::Deliver(event));
            }
            Delivery::Late { by_ms } => self.later(LATENCY_MS + by_ms, Item::Deliver(event)),
            Delivery::Lost => {}
        }
    }

    fn start(&mut self) {
        if !self.sc.studio {
            self.webhook(Event::CallerArrived { call: call(CALLER) });
            self.webhook(Event::CallerEnqueued { location: "north".into(), language: None });
            if let Some(s) = self.sc.closes_after_s {
                self.webhook(Event::ClosingTime {
                    at_ms: self.now + s * 1000,
                    later: Vec::new(),
                    callback: None,
                    overflow: None,
                });
            }
            self.later(0, Item::HoldPoll);
        }
        self.later(500, Item::Offer);
        self.later(self.sc.patience_s * 1000, Item::Patience);
        self.later(RECONCILE_EVERY_MS, Item::Reconcile);
    }

    fn handle(&mut self, item: Item) {
        match item {
            Item::Deliver(e) | Item::Result(e) => {
                let answer = self.machine(e.clone());
                if answer != Answer::Nothing {
                    self.fail(format!("{e:?} is no webhook with TwiML but got {answer:?}"));
                }
            }
            Item::Execute(c) => self.execute(c),
            Item::Tick => {
                self.ticks.remove(&self.now);
                self.machine(Event::Tick);
            }
            Item::Offer => self.offer(),
            Item::ReservationTimeout(k) => {
                if self.reservations[k] == ReservationStatus::Pending {
                    self.reservations[k] = ReservationStatus::Timeout;
                    if self.task == TaskStatus::Reserved {
                        self.task = TaskStatus::Pending;
                    }
                    self.send(Event::ReservationEnded {
                        task: task(TASK),
                        reservation: res_sid(k),
                        why: ReservationEnd::Timeout,
                    });
                    self.later(1_000, Item::Offer);
                }
            }
            Item::LegProgress(i, status) => {
                let leg = &self.legs[i];
                let ending = !matches!(status, CallStatus::Initiated | CallStatus::Ringing);
                let answered = leg.status == CallStatus::InProgress;
                if !leg.status.is_final() && status.rank() > leg.status.rank() && !(ending && answered) {
                    self.set_leg(i, status);
                }
            }
            Item::PhonePicksUp(i) => self.phone_picks_up(i),
            Item::PhoneAnswers(i) => self.phone_answers(i),
            Item::Bridges(i) => self.bridges(i),
            Item::TalkEnds(i) => self.talk_ends(i),
            Item::Pressed(i, prompt, key) => self.pressed(i, prompt, key),
            Item::ScreenHangUp(i) => {
                if self.legs[i].status == CallStatus::InProgress && !self.legs[i].bridged {
                    self.set_leg(i, CallStatus::Completed);
                }
            }
            Item::Patience => {
                if let Where::Queued { .. } = self.caller {
                    self.caller = Where::Gone;
                    if !self.sc.studio {
                        let answer = self.webhook(Event::QueueExit { result: QueueResult::Hangup, queue: None });
                        if answer != Answer::Nothing {
                            self.fail(format!("a caller who hung up got {answer:?}"));
                        }
                        self.send(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) });
                    }
                    self.left_queue();
                }
            }
            Item::HoldPoll => self.hold_poll(),
            Item::VoicemailEnds => {
                if self.caller == Where::Voicemail {
                    self.caller = Where::Gone;
                    if !self.sc.studio {
                        // The caller left a message; every other one is transcribed.
                        let transcribe = self.seq.is_multiple_of(2);
                        self.send(Event::VoicemailRecorded {
                            recording: recording(1),
                            duration_secs: Some(20),
                            recipients: vec![NotifyChannel::Email { to: "desk@example.com".into() }],
                            transcribe,
                        });
                        if transcribe {
                            self.later(20_000, Item::Transcribed);
                        }
                        self.send(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) });
                    }
                }
            }
            Item::Transcribed => self.send(Event::Transcribed { recording: recording(1) }),
            Item::Reconcile => self.reconcile(),
        }
    }

    /// TaskRouter offers the task to the location's one-line worker when it is free.
    fn offer(&mut self) {
        let busy = self.reservations.iter().any(|r| !reservation_final(*r));
        if self.task != TaskStatus::Pending || busy {
            return;
        }
        let k = self.reservations.len();
        self.reservations.push(ReservationStatus::Pending);
        self.task = TaskStatus::Reserved;
        self.send(created(k, &self.sc));
        self.later(self.sc.reservation_timeout_s * 1000, Item::ReservationTimeout(k));
    }

    fn reservation_index(&mut self, sid: &ReservationSid) -> Option<usize> {
        let k = (0..self.reservations.len()).find(|k| res_sid(*k) == *sid);
        if k.is_none() {
            self.fail(format!("a command names {sid}, which TaskRouter never created"));
        }
        k
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Dial { reservation, attempt, target, .. } => {
                let Some(k) = self.reservation_index(&reservation) else { return };
                let phones = self.sc.location_phones.max(1);
                let phone_index = (0..phones).find(|i| with_phones(target.clone(), phones).phone(*i) == &target.to);
                let Some(phone_index) = phone_index else {
                    return self.fail(format!("a dial to {}, none of the location's phones", target.to));
                };
                if self.withdrawn.contains(&(k, attempt)) {
                    return;
                }
                let ended = self.journey.reservations.iter().any(|r| r.sid == reservation && r.status.is_final());
                if ended {
                    self.fail(format!("sent a dial for {reservation}, which the journey knew had ended"));
                }
                let result = {
                    self.sent_dials.insert((k, attempt));
                    let fault = if self.faulty() { pick(&self.sc.dials, &mut self.drawn[1]) } else { None };
                    let fault = fault.unwrap_or(DialFault::None);
                    self.tally.add(format!("dial fault {}", kind(&fault)));
                    match fault {
                        DialFault::None => {
                            let leg = self.create_leg(k, attempt, phone_index);
                            Event::DialPlaced { reservation, attempt, leg }
                        }
                        DialFault::Refused => Event::DialFailed { reservation, attempt },
                        DialFault::ErrorBeforeActing => Event::DialUnknown { reservation, attempt },
                        DialFault::ResetAfterCreating => {
                            self.create_leg(k, attempt, phone_index);
                            Event::DialUnknown { reservation, attempt }
                        }
                    }
                };
                self.later(LATENCY_MS, Item::Result(result));
            }
            // The reconciler's Calls list, which in this world is never wrong.
            Command::FindDial { reservation, attempt, .. } => {
                let Some(k) = self.reservation_index(&reservation) else { return };
                let found = self.legs.iter().position(|l| l.reservation == k && l.attempt == attempt);
                let seen = match found {
                    Some(i) => Event::LegSeen {
                        reservation,
                        attempt: Some(attempt),
                        leg: leg_sid(i),
                        status: self.legs[i].status,
                    },
                    None => Event::DialAbsent { reservation, attempt },
                };
                self.later(1_000, Item::Result(seen));
            }
            other => {
                let fails = self.faulty() && pick(&self.sc.actions_fail, &mut self.drawn[2]).unwrap_or(false);
                if fails {
                    self.tally.add("action failed for good");
                    self.redirect_failed |= matches!(other, Command::RedirectCaller { .. });
                    self.later(GIVE_UP_AFTER_MS, Item::Result(Event::ActionFailed { command: other }));
                    return;
                }
                match other {
                    Command::HangUp { leg, .. } => self.hang_up(&leg),
                    Command::RedirectCaller { .. } => self.redirect(),
                    Command::CancelTask { .. } => {
                        if matches!(self.task, TaskStatus::Pending | TaskStatus::Reserved) {
                            self.cancel_task();
                        }
                    }
                    Command::CompleteTask { .. } => {
                        if matches!(self.task, TaskStatus::Assigned | TaskStatus::Wrapping) {
                            self.complete_task();
                        }
                    }
                    Command::Dial { .. }
                    | Command::WithdrawDial { .. }
                    | Command::WithdrawRedirect { .. }
                    | Command::FindDial { .. }
                    | Command::NotifyVoicemail { .. } => {}
                    // This world's callers never choose a callback.
                    Command::CreateCallbackTask { .. }
                    | Command::AcceptReservation { .. }
                    | Command::ListCallbackRequest { .. } => {
                        self.fail(format!("a callback command without a callback: {other:?}"));
                    }
                }
            }
        }
    }

    fn create_leg(&mut self, k: usize, attempt: u32, phone_index: u32) -> CallSid {
        let i = self.legs.len();
        let phone = pick(&self.sc.phones, &mut self.drawn[0]).unwrap_or(Phone::NoAnswer);
        // Rung in order: never two live legs of one reservation at once.
        let in_order = !(self.sc.all_at_once && self.sc.location_phones > 1);
        if !in_order && self.legs.iter().any(|l| l.reservation == k && !l.status.is_final()) {
            self.tally.add("rang together");
        }
        if let Some(live) = self.legs.iter().position(|l| l.reservation == k && !l.status.is_final())
            && in_order
        {
            self.fail(format!("reservation {} dialled while its leg {} is live", res_sid(k), leg_sid(live)));
        }
        self.legs.push(WorldLeg {
            reservation: k,
            attempt,
            phone_index,
            status: CallStatus::Queued,
            sequence: 0,
            phone,
            bridged: false,
        });
        let calls = self.calls_per_phone.entry((k, phone_index)).or_default();
        *calls += 1;
        if *calls > 1 {
            self.fail(format!("phone {phone_index} of reservation {} dialled twice", res_sid(k)));
        }
        self.tally.add(format!("dialled phone {phone_index}"));
        self.later(100, Item::LegProgress(i, CallStatus::Initiated));
        self.later(1_000, Item::LegProgress(i, CallStatus::Ringing));
        match phone {
            Phone::Person { answer_s, .. } | Phone::Machine { answer_s } | Phone::Unsure { answer_s, .. }
                if answer_s * 1000 < RING_TIMEOUT_MS =>
            {
                self.later(answer_s * 1000, Item::PhonePicksUp(i));
            }
            Phone::Busy => self.later(1_500, Item::LegProgress(i, CallStatus::Busy)),
            Phone::Fails => self.later(500, Item::LegProgress(i, CallStatus::Failed)),
            _ => self.later(RING_TIMEOUT_MS, Item::LegProgress(i, CallStatus::NoAnswer)),
        }
        leg_sid(i)
    }

    /// A status callback for every change of a leg, numbered.
    fn set_leg(&mut self, i: usize, status: CallStatus) {
        let leg = &mut self.legs[i];
        leg.status = status;
        let sequence = leg.sequence;
        leg.sequence += 1;
        let event = Event::LegStatus {
            reservation: res_sid(leg.reservation),
            attempt: Some(leg.attempt),
            leg: leg_sid(i),
            status,
            sequence: Some(sequence),
        };
        self.send(event);
    }

    /// The phone is picked up: the leg is in progress while answering-machine
    /// detection listens, then `/dial-queue` asks what to do.
    fn phone_picks_up(&mut self, i: usize) {
        if self.legs[i].status.rank() >= CallStatus::InProgress.rank() {
            return;
        }
        self.set_leg(i, CallStatus::InProgress);
        let detection_ms = match self.legs[i].phone {
            // Screened without AMD: `/dial-queue` comes at once.
            _ if self.sc.screening => 300,
            Phone::Machine { .. } => 4_000,
            Phone::Unsure { .. } => 30_000,
            _ => 2_500,
        };
        self.later(detection_ms, Item::PhoneAnswers(i));
    }

    fn phone_answers(&mut self, i: usize) {
        if self.legs[i].status != CallStatus::InProgress || self.legs[i].bridged {
            return;
        }
        let (k, attempt, phone) = (self.legs[i].reservation, self.legs[i].attempt, self.legs[i].phone);
        let answered_by = match phone {
            _ if self.sc.screening => AnsweredBy::Human,
            Phone::Machine { .. } => AnsweredBy::Machine,
            Phone::Unsure { .. } => AnsweredBy::Unknown,
            _ => AnsweredBy::Human,
        };
        let event =
            Event::LegAnswered { reservation: res_sid(k), attempt: Some(attempt), leg: leg_sid(i), answered_by };
        match self.webhook(event) {
            Answer::Bridge { reservation, .. } => {
                if reservation != res_sid(k) {
                    self.fail(format!("leg {} told to bridge {reservation}", leg_sid(i)));
                }
                self.later(1_000, Item::Bridges(i));
            }
            Answer::Screen { prompt, timeout_secs, .. } => self.prompted(i, prompt, timeout_secs),
            Answer::Refuse { .. } => self.set_leg(i, CallStatus::Completed),
            other => self.fail(format!("/dial-queue got {other:?}")),
        }
    }

    /// The screening prompt is said (about 5 s); the person presses, or not.
    fn prompted(&mut self, i: usize, prompt: u32, timeout_secs: u32) {
        const SAY_MS: i64 = 5_000;
        let press = match self.legs[i].phone {
            Phone::Machine { .. } => Press::Nothing,
            _ => pick(&self.sc.presses, &mut self.drawn[6]).unwrap_or(Press::Nothing),
        };
        self.tally.add(format!("press {}", kind(&press)));
        match press {
            Press::Accept { after_s } => {
                self.later(SAY_MS + after_s * 1000, Item::Pressed(i, prompt, ScreenKey::Accept))
            }
            Press::Other { after_s } => self.later(SAY_MS + after_s * 1000, Item::Pressed(i, prompt, ScreenKey::Other)),
            Press::Nothing => {
                let wait = SAY_MS + i64::from(timeout_secs) * 1000;
                self.later(wait, Item::Pressed(i, prompt, ScreenKey::Nothing));
            }
            Press::HangUp { after_s } => self.later(SAY_MS + after_s * 1000, Item::ScreenHangUp(i)),
        }
    }

    /// The prompt's `Gather` action (or its redirect, with no key).
    fn pressed(&mut self, i: usize, prompt: u32, key: ScreenKey) {
        if self.legs[i].status != CallStatus::InProgress || self.legs[i].bridged {
            return;
        }
        let (k, attempt) = (self.legs[i].reservation, self.legs[i].attempt);
        let event =
            Event::LegScreened { reservation: res_sid(k), attempt: Some(attempt), leg: leg_sid(i), prompt, key };
        match self.webhook(event) {
            Answer::Bridge { reservation, .. } => {
                if key != ScreenKey::Accept {
                    self.fail(format!("leg {} bridged after {key:?}", leg_sid(i)));
                }
                if reservation != res_sid(k) {
                    self.fail(format!("leg {} told to bridge {reservation}", leg_sid(i)));
                }
                self.later(1_000, Item::Bridges(i));
            }
            Answer::Screen { prompt, timeout_secs, .. } => self.prompted(i, prompt, timeout_secs),
            Answer::Refuse { .. } => self.set_leg(i, CallStatus::Completed),
            other => self.fail(format!("/screen got {other:?}")),
        }
    }

    /// `<Dial><Queue reservationSid>` takes effect, or fails.
    fn bridges(&mut self, i: usize) {
        if self.legs[i].status.is_final() {
            return;
        }
        let (k, phone) = (self.legs[i].reservation, self.legs[i].phone);
        let queued = matches!(self.caller, Where::Queued { .. });
        if self.reservations[k] != ReservationStatus::Pending || !queued {
            // 14217, or nobody left to bridge to: the leg's TwiML ends, and the leg.
            return self.set_leg(i, CallStatus::Completed);
        }
        self.reservations[k] = ReservationStatus::Accepted;
        self.task = TaskStatus::Assigned;
        self.send(Event::ReservationAccepted { task: task(TASK), reservation: res_sid(k) });
        self.caller = Where::Bridged;
        self.legs[i].bridged = true;
        let talk_s = match phone {
            Phone::Person { talk_s, .. } | Phone::Unsure { talk_s, .. } => talk_s,
            _ => 10,
        };
        self.later(talk_s * 1000, Item::TalkEnds(i));
    }

    fn talk_ends(&mut self, i: usize) {
        if !self.legs[i].bridged || self.legs[i].status.is_final() {
            return;
        }
        self.set_leg(i, CallStatus::Completed);
        let k = self.legs[i].reservation;
        if self.caller == Where::Bridged {
            self.caller = Where::Gone;
            if !self.sc.studio {
                let answer = self.webhook(Event::QueueExit { result: QueueResult::Bridged, queue: None });
                if answer != Answer::Goodbye {
                    self.fail(format!("a bridged caller's queue exit got {answer:?}"));
                }
                self.send(Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) });
            }
        }
        if self.reservations[k] == ReservationStatus::Accepted {
            self.reservations[k] = ReservationStatus::Wrapping;
        }
        if self.task == TaskStatus::Assigned {
            self.task = TaskStatus::Wrapping;
            self.send(Event::Wrapup { task: task(TASK), reservation: Some(res_sid(k)) });
            self.send(Event::Wrapup { task: task(TASK), reservation: None });
        }
    }

    fn hang_up(&mut self, leg: &CallSid) {
        let Some(i) = (0..self.legs.len()).find(|i| leg_sid(*i) == *leg) else {
            return self.fail(format!("hang-up of {leg}, which was never created"));
        };
        if self.legs[i].status.is_final() {
            return;
        }
        if self.legs[i].bridged {
            self.fail(format!("hung up {leg}, a connected call"));
            return self.talk_ends(i);
        }
        let answered = self.legs[i].status == CallStatus::InProgress;
        self.set_leg(i, if answered { CallStatus::Completed } else { CallStatus::Canceled });
    }

    fn redirect(&mut self) {
        match self.caller {
            Where::Queued { .. } => {
                self.caller = Where::Voicemail;
                self.left_queue();
                self.later(VOICEMAIL_MS, Item::VoicemailEnds);
            }
            Where::Bridged => self.fail("redirected a connected caller".into()),
            Where::Voicemail | Where::Gone => {}
        }
    }

    fn hold_poll(&mut self) {
        let Where::Queued { since } = self.caller else { return };
        let queue_time_secs = u32::try_from((self.now - since) / 1000).unwrap_or(u32::MAX);
        let (announce_every_secs, comfort) = (self.sc.announce_every_secs, self.sc.comfort);
        match self.webhook(Event::Hold {
            queue_time_secs,
            announce_every_secs,
            comfort,
            callback_after_secs: None,
            queue: None,
        }) {
            Answer::Hold { announce, comfort: said, .. } => {
                if announce {
                    self.tally.add("answer Hold announce");
                    // On entry, then never sooner than the interval of queue time.
                    let every = i64::from(announce_every_secs) * 1000;
                    if announce_every_secs == 0 || self.announced_at.is_some_and(|t| self.now - t < every - 1000) {
                        self.fail(format!(
                            "announced at {} after {:?} (every {every} ms)",
                            self.now, self.announced_at
                        ));
                    }
                    self.announced_at = Some(self.now);
                }
                if said.is_some() {
                    self.tally.add("answer Hold comfort");
                    if !comfort || announce {
                        self.fail(format!("a comfort message {said:?} (comfort: {comfort}, announce: {announce})"));
                    }
                }
                self.later(HOLD_EVERY_MS, Item::HoldPoll)
            }
            Answer::Leave => {
                let exit = self.webhook(Event::QueueExit { result: QueueResult::Leave, queue: None });
                if !matches!(exit, Answer::Fallback { .. }) {
                    self.fail(format!("a caller who left the queue got {exit:?}"));
                }
                self.caller = Where::Voicemail;
                self.left_queue();
                self.later(VOICEMAIL_MS, Item::VoicemailEnds);
            }
            other => self.fail(format!("/hold got {other:?}")),
        }
    }

    /// TaskRouter cancels the task of a caller who leaves the queue.
    fn left_queue(&mut self) {
        if let Some(t) = self.settled_while_queued
            && self.now - t > STRANDED_MS
            && !self.redirect_failed
        {
            self.fail(format!("the caller held {} ms after the journey settled them", self.now - t));
        }
        if matches!(self.task, TaskStatus::Pending | TaskStatus::Reserved) {
            self.cancel_task();
        }
    }

    fn cancel_task(&mut self) {
        self.task = TaskStatus::Canceled;
        self.send(Event::TaskCanceled { task: task(TASK) });
        for k in 0..self.reservations.len() {
            if self.reservations[k] == ReservationStatus::Pending {
                self.reservations[k] = ReservationStatus::Canceled;
                let why = ReservationEnd::Canceled;
                self.send(Event::ReservationEnded { task: task(TASK), reservation: res_sid(k), why });
            }
        }
    }

    fn complete_task(&mut self) {
        self.task = TaskStatus::Completed;
        self.send(Event::TaskCompleted { task: task(TASK) });
        for k in 0..self.reservations.len() {
            if matches!(self.reservations[k], ReservationStatus::Accepted | ReservationStatus::Wrapping) {
                self.reservations[k] = ReservationStatus::Completed;
                self.send(Event::ReservationCompleted { task: task(TASK), reservation: res_sid(k) });
            }
        }
    }

    /// What the reconciler reads from TaskRouter and the Calls API, fed as events.
    fn reconcile(&mut self) {
        let mut seen = vec![Event::TaskSeen { task: task(TASK), status: self.task }];
        for (k, r) in self.reservations.iter().enumerate() {
            seen.push(match r {
                ReservationStatus::Pending => created(k, &self.sc),
                status => Event::ReservationSeen { task: task(TASK), reservation: res_sid(k), status: *status },
            });
        }
        for (i, l) in self.legs.iter().enumerate() {
            let reservation = res_sid(l.reservation);
            seen.push(Event::LegSeen { reservation, attempt: Some(l.attempt), leg: leg_sid(i), status: l.status });
        }
        if self.caller == Where::Gone {
            seen.push(Event::CallerSeen { call: call(CALLER), status: CallStatus::Completed });
        }
        for e in seen {
            self.later(0, Item::Deliver(e));
        }
        if !(self.at_rest() && self.journey.is_closed()) {
            self.later(RECONCILE_EVERY_MS, Item::Reconcile);
        }
    }

    fn at_rest(&self) -> bool {
        self.task.is_final()
            && self.reservations.iter().all(|r| reservation_final(*r))
            && self.legs.iter().all(|l| l.status.is_final())
            && self.caller == Where::Gone
    }
}

fn reservation_final(r: ReservationStatus) -> bool {
    !matches!(r, ReservationStatus::Pending | ReservationStatus::Accepted | ReservationStatus::Wrapping)
}

fn created(k: usize, sc: &Scenario) -> Event {
    let target = if sc.screening { screened_target() } else { target() };
    Event::ReservationCreated {
        task: task(TASK),
        reservation: res_sid(k),
        caller: Some(call(CALLER)),
        target: DialTarget {
            ring: if sc.all_at_once { Ring::AllAtOnce } else { Ring::InOrder },
            ..with_phones(target, sc.location_phones)
        },
    }
}

/// Phone `k` of the model's location.
fn phone_number(k: u32) -> E164 {
    E164::parse(&format!("+1415555010{}", k + 1)).expect("a test number")
}

/// `target` with `n` phones, rung in order (one: as before phones existed).
fn with_phones(target: DialTarget, n: u32) -> DialTarget {
    if n <= 1 {
        return target;
    }
    DialTarget { to: phone_number(0), phones: (0..n).map(phone_number).collect(), ..target }
}

// -- arbitrary sequences -----------------------------------------------------------

fn one_of<T: Clone + std::fmt::Debug + 'static>(values: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(values)
}

fn call_status() -> impl Strategy<Value = CallStatus> {
    use CallStatus::*;
    one_of(vec![Queued, Initiated, Ringing, InProgress, Completed, Busy, NoAnswer, Failed, Canceled])
}

/// A reservation (1 or 2) with one of its two legs.
fn reservation_leg() -> impl Strategy<Value = (ReservationSid, CallSid)> {
    (1u32..3, 0u32..2).prop_map(|(r, n)| (res(r), call(100 + r * 10 + n)))
}

fn some_task() -> impl Strategy<Value = TaskSid> {
    prop_oneof![4 => Just(task(1)), 1 => Just(task(2)), 1 => Just(task(3))]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (1u32..3, 1u32..4).prop_map(|(r, attempt)| Command::Dial {
            reservation: res(r),
            task: task(1),
            attempt,
            caller: Some(call(CALLER)),
            target: target()
        }),
        (reservation_leg(), 1u32..3).prop_map(|((_, leg), round)| Command::HangUp { leg, round }),
        (1u32..3).prop_map(|round| Command::RedirectCaller {
            call: call(CALLER),
            location: Some("north".into()),
            reason: Outcome::LocationBusy,
            round,
            callback: false,
            language: None,
            transfer: None,
        }),
        (1u32..3).prop_map(|round| Command::RedirectCaller {
            call: call(CALLER),
            location: Some("north".into()),
            reason: Outcome::ClosedWhileWaiting,
            round,
            callback: false,
            language: None,
            transfer: Some("south".into()),
        }),
        (1u32..3).prop_map(|round| Command::CancelTask { task: task(1), reason: Outcome::CallerHungUp, round }),
        (1u32..3).prop_map(|round| Command::CompleteTask { task: task(1), round }),
        (1u32..3, notify_channel())
            .prop_map(|(n, channel)| Command::NotifyVoicemail { recording: recording(n), channel }),
        (1u32..3, 1u32..3).prop_map(|(round, effort)| Command::CreateCallbackTask {
            call: call(CALLER),
            location: "north".into(),
            number: E164::parse("+13105550100").expect("a test number"),
            since_ms: 1_000_000,
            round,
            effort,
        }),
        (some_task(), 1u32..3, 1u32..3).prop_map(|(task, r, round)| Command::AcceptReservation {
            task,
            reservation: res(r),
            round
        }),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let attempt = proptest::option::of(1u32..4);
    let sequence = proptest::option::of(0u32..6);
    prop_oneof![
        1 => Just(Event::CallerArrived { call: call(CALLER) }),
        1 => Just(Event::CallerEnqueued { location: "north".into(), language: None }),
        // The IVR never settles a callback's outcomes.
        1 => one_of(Outcome::ALL.iter().copied().filter(|o| !o.as_str().starts_with("callback")).collect())
            .prop_map(|outcome| Event::CallerTurnedAway { outcome, location: None }),
        1 => (0u32..400, prop_oneof![Just(0u32), 1u32..120], any::<bool>(), proptest::option::of(0u32..200), queue())
            .prop_map(|(queue_time_secs, announce_every_secs, comfort, callback_after_secs, queue)| {
                Event::Hold { queue_time_secs, announce_every_secs, comfort, callback_after_secs, queue }
            }),
        1 => (1u32..4, any::<bool>(), any::<bool>()).prop_map(|(tries, wait_for_opening, to_list)| Event::CallbackChosen {
            number: E164::parse("+13105550100").expect("a test number"),
            tries,
            wait_for_opening,
            to_list,
        }),
        1 => (some_task(), 1u32..3).prop_map(|(task, round)| Event::CallbackTaskCreated { task, round }),
        1 => Just(Event::TransferAsked),
        1 => (1u32..3, any::<bool>()).prop_map(|(r, answered)| Event::CallbackDialed { reservation: res(r), answered }),
        1 => one_of(vec![QueueResult::Bridged, QueueResult::BridgingInProcess, QueueResult::Hangup, QueueResult::Leave, QueueResult::Error])
            .prop_map(|result| Event::QueueExit { result, queue: None }),
        1 => (one_of(vec![QueueResult::Redirected, QueueResult::Leave, QueueResult::Hangup, QueueResult::Bridged]), queue())
            .prop_map(|(result, queue)| Event::QueueExit { result, queue }),
        1 => (call_status(), sequence.clone()).prop_map(|(status, sequence)| Event::CallerStatus { status, sequence }),
        1 => (reservation_leg(), attempt.clone(), one_of(vec![AnsweredBy::Human, AnsweredBy::Machine, AnsweredBy::Unknown]))
            .prop_map(|((reservation, leg), attempt, answered_by)| Event::LegAnswered { reservation, attempt, leg, answered_by }),
        2 => (reservation_leg(), attempt.clone(), 1u32..4, one_of(vec![ScreenKey::Accept, ScreenKey::Other, ScreenKey::Nothing]))
            .prop_map(|((reservation, leg), attempt, prompt, key)| Event::LegScreened { reservation, attempt, leg, prompt, key }),
        3 => (reservation_leg(), attempt.clone(), call_status(), sequence).prop_map(|((reservation, leg), attempt, status, sequence)| {
            Event::LegStatus { reservation, attempt, leg, status, sequence }
        }),
        3 => (some_task(), 1u32..3, 0u8..11).prop_map(|(task, r, kind)| Event::ReservationCreated {
            task,
            reservation: res(r),
            caller: Some(call(CALLER)),
            // Mostly north's own target; sometimes screened, sometimes the overflow
            // location's, sometimes a callback's.
            target: match kind {
                0 => screened_target(),
                1 => DialTarget { location: "south".into(), ..target() },
                2 => with_phones(target(), 3),
                3 => with_phones(screened_target(), 2),
                4 => DialTarget { ring: Ring::AllAtOnce, ..with_phones(target(), 3) },
                5 => DialTarget { ring: Ring::AllAtOnce, ..with_phones(screened_target(), 2) },
                6 => callback_target(),
                // The task of a caller transferred at closing time.
                7 => DialTarget { location: "south".into(), transferred: true, ..target() },
                _ => target(),
            }
        }),
        1 => (some_task(), 1u32..3).prop_map(|(task, r)| Event::ReservationAccepted { task, reservation: res(r) }),
        1 => (some_task(), 1u32..3, one_of(vec![ReservationEnd::Timeout, ReservationEnd::Canceled, ReservationEnd::Rescinded, ReservationEnd::Rejected]))
            .prop_map(|(task, r, why)| Event::ReservationEnded { task, reservation: res(r), why }),
        1 => (some_task(), 1u32..3).prop_map(|(task, r)| Event::ReservationCompleted { task, reservation: res(r) }),
        1 => (some_task(), proptest::option::of(1u32..3)).prop_map(|(task, r)| Event::Wrapup { task, reservation: r.map(res) }),
        1 => some_task().prop_map(|task| Event::TaskCanceled { task }),
        1 => some_task().prop_map(|task| Event::TaskCompleted { task }),
        2 => (reservation_leg(), 1u32..4).prop_map(|((reservation, leg), attempt)| Event::DialPlaced { reservation, attempt, leg }),
        1 => (1u32..3, 1u32..4).prop_map(|(r, attempt)| Event::DialFailed { reservation: res(r), attempt }),
        2 => (1u32..3, 1u32..4).prop_map(|(r, attempt)| Event::DialUnknown { reservation: res(r), attempt }),
        1 => command().prop_map(|command| Event::ActionFailed { command }),
        1 => call_status().prop_map(|status| Event::CallerSeen { call: call(CALLER), status }),
        1 => (reservation_leg(), attempt, call_status()).prop_map(|((reservation, leg), attempt, status)| Event::LegSeen { reservation, attempt, leg, status }),
        1 => (1u32..3, 1u32..4).prop_map(|(r, attempt)| Event::DialAbsent { reservation: res(r), attempt }),
        1 => (some_task(), one_of(vec![TaskStatus::Pending, TaskStatus::Reserved, TaskStatus::Assigned, TaskStatus::Wrapping, TaskStatus::Completed, TaskStatus::Canceled]))
            .prop_map(|(task, status)| Event::TaskSeen { task, status }),
        1 => (some_task(), 1u32..3, one_of(vec![ReservationStatus::Pending, ReservationStatus::Accepted, ReservationStatus::Timeout, ReservationStatus::Canceled, ReservationStatus::Wrapping, ReservationStatus::Completed]))
            .prop_map(|(task, r, status)| Event::ReservationSeen { task, reservation: res(r), status }),
        1 => (1u32..3, proptest::option::of(0u32..30), proptest::collection::vec(notify_channel(), 0..3), any::<bool>())
            .prop_map(|(n, duration_secs, recipients, transcribe)| Event::VoicemailRecorded {
                recording: recording(n),
                duration_secs,
                recipients,
                transcribe,
            }),
        1 => (1u32..3).prop_map(|n| Event::Transcribed { recording: recording(n) }),
        1 => (1_000_000i64..2_000_000, proptest::collection::vec((1i64..400_000, 1i64..400_000), 0..4), proptest::option::of(1u32..3), 0u8..4, 1i64..400_000)
            .prop_map(|(at_ms, gaps, tries, policy, open_for)| {
                // Later open periods, each after a closed gap.
                let mut t = at_ms;
                let later = gaps
                    .into_iter()
                    .map(|(closed, open)| {
                        let opens_at_ms = t + closed;
                        t = opens_at_ms + open;
                        OpenPeriod { opens_at_ms, closes_at_ms: t }
                    })
                    .collect();
                // The closing policy's callback, sometimes.
                let callback = tries.map(|tries| ClosingCallback {
                    number: E164::parse("+13105550100").expect("a test number"),
                    tries,
                });
                // Or the closing policy's overflow location, sometimes.
                let overflow = match policy {
                    0 => Some(ClosingOverflow { location: "south".into(), closes_at_ms: Some(at_ms + open_for) }),
                    1 => Some(ClosingOverflow { location: "south".into(), closes_at_ms: None }),
                    _ => None,
                };
                let callback = callback.filter(|_| overflow.is_none());
                Event::ClosingTime { at_ms, later, callback, overflow }
            }),
        3 => Just(Event::Tick),
    ]
}

/// The queue a `/hold` or `/enqueue-action` names: north's, the overflow
/// location's, or none (an older URL).
fn queue() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), Just(Some("north".to_owned())), Just(Some("south".to_owned()))]
}

fn recording(n: u32) -> String {
    format!("RE{n:032x}")
}

fn notify_channel() -> impl Strategy<Value = NotifyChannel> {
    prop_oneof![
        (0u32..3).prop_map(|n| NotifyChannel::Email { to: format!("desk{n}@example.com") }),
        Just(NotifyChannel::Webhook { url: "https://hooks.example.com/vm".into() }),
    ]
}

/// The world is not vacuous: over a few hundred seeded scenarios it reaches
/// every outcome a queued caller can have, every fault, and every recovery path.
#[test]
fn the_world_reaches_every_outcome_fault_and_recovery() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut tally = Tally::default();
    for _ in 0..200 {
        let sc = scenario().new_tree(&mut runner).expect("a scenario").current();
        if let Err(e) = World::new(sc).run_tallied(&mut tally) {
            panic!("{e}");
        }
    }
    let outcomes = [
        Outcome::Connected,
        Outcome::LocationBusy,
        Outcome::LocationNoAnswer,
        Outcome::LocationVoicemail,
        Outcome::DialFailed,
        Outcome::CallerHungUp,
        Outcome::QueueTimeout,
        Outcome::ClosedWhileWaiting,
    ];
    for o in outcomes {
        assert!(tally.outcomes.get(o.as_str()).is_some_and(|n| *n > 0), "no run ended {o}: {tally:#?}");
    }
    let paths = [
        "delivery Twice",
        "delivery Late",
        "delivery Lost",
        "dial fault Refused",
        "dial fault ErrorBeforeActing",
        "dial fault ResetAfterCreating",
        "action failed for good",
        "webhook asked again",
        "event DialUnknown",
        "event DialAbsent",
        "event ActionFailed",
        "event LegSeen",
        "event ReservationSeen",
        "event TaskSeen",
        "command WithdrawDial",
        "command FindDial",
        "command HangUp",
        "command RedirectCaller",
        "command CancelTask",
        "command CompleteTask",
        "command NotifyVoicemail",
        "answer Bridge",
        "answer Screen",
        "event LegScreened",
        "press Accept",
        "press Other",
        "press Nothing",
        "press HangUp",
        "answer Refuse",
        "answer Leave",
        "answer Fallback",
        "answer Hold announce",
        "answer Hold comfort",
        "dialled phone 1",
        "dialled phone 2",
        "rang together",
    ];
    for p in paths {
        assert!(tally.seen.get(p).is_some_and(|n| *n > 0), "no run went through {p}: {tally:#?}");
    }
    assert!(tally.restarts > 0, "no run restarted");
    eprintln!("{tally:#?}");
}

/// Cases per property: `PROPTEST_CASES` for a deeper run, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_journey_in_a_faulty_world_keeps_its_invariants(sc in scenario()) {
        World::new(sc).run()?;
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_event_sequences_keep_the_invariants(
        steps in proptest::collection::vec((event(), 0i64..40_000, prop::bool::weighted(0.1)), 1..80),
    ) {
        let policy = policy();
        let mut checker = Checker::default();
        let mut journey = Journey::default();
        let mut now = 1_000_000;
        for (event, gap_ms, restart) in steps {
            now += gap_ms;
            if restart {
                let json = serde_json::to_string(&journey).map_err(|e| TestCaseError::fail(e.to_string()))?;
                journey = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let (after, step) = apply(journey.clone(), event.clone(), at(now), &policy);
            checker.step(&journey, &event, at(now), &policy, &after, &step)?;
            journey = after;
        }
    }
}
