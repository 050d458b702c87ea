//! What the store's tests share: a store on a fresh database of each
//! backend, SIDs, and the deliveries the tests make.

use twilio::E164;

use super::{Delivery, NewCall, Store};
use crate::config::AnsweredByPolicy;
use crate::domain::Outcome;
use crate::journey::{DialTarget, Event, Policy};
use crate::outbox::OutboxState;
use crate::test_backends::{Backend, TestDb};

/// A store on a fresh database of `backend`; None when that backend is
/// not available here (see `test_backends`).
pub(super) async fn store(backend: Backend) -> Option<(Store, TestDb)> {
    let db = backend.database().await?;
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(store.backend() == super::Backend::Postgres, backend == Backend::Postgres);
    Some((store, db))
}

pub(super) const POLICY: Policy = Policy {
    max_queue_secs: 300,
    on_machine: AnsweredByPolicy::Hangup,
    on_unknown: AnsweredByPolicy::Bridge,
    max_dial_attempts: 3,
};

/// A SID of `prefix` numbered `n`.
pub(super) fn sid<T: std::str::FromStr>(prefix: &str, n: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    format!("{prefix}{n:032x}").parse().unwrap()
}

/// A dial to north's one phone, with answering-machine detection.
pub(crate) fn north_target() -> DialTarget {
    DialTarget {
        location: "north".into(),
        to: E164::parse("+14155550123").unwrap(),
        phones: Vec::new(),
        ring: Default::default(),
        from: E164::parse("+14155550100").unwrap(),
        call_token: None,
        screening: None,
        amd: true,
        caller: None,
        caller_name: None,
        callback: None,
        transferred: false,
    }
}

pub(crate) fn created(call: usize, res: usize) -> Delivery {
    let (task, reservation): (twilio::sid::TaskSid, twilio::sid::ReservationSid) = (sid("WT", call), sid("WR", res));
    let caller: twilio::sid::CallSid = sid("CA", call);
    let keys = vec![reservation.to_string(), task.to_string(), caller.to_string()];
    let target = north_target();
    let event = Event::ReservationCreated { task, reservation, caller: Some(caller), target };
    Delivery::to_keys(keys, vec![event], POLICY).with_audit("taskrouter", "reservation.created", None, "{}".into())
}

pub(crate) fn arrived(call: usize) -> Delivery {
    let caller: twilio::sid::CallSid = sid("CA", call);
    let events = vec![
        Event::CallerArrived { call: caller.clone() },
        Event::CallerEnqueued { location: "north".into(), language: None },
    ];
    let mut d = Delivery::to_keys([caller.to_string()], events, POLICY);
    d.caller = Some(NewCall { from: "+14155550100".into(), to: "+14155550999".into() });
    d
}

/// Caller `n` is connected: reservation `n`'s leg (`CA` numbered `n + 100`)
/// was placed and the reservation accepted.
pub(super) fn connected(n: usize) -> Delivery {
    let (task, reservation, leg): (twilio::sid::TaskSid, twilio::sid::ReservationSid, twilio::sid::CallSid) =
        (sid("WT", n), sid("WR", n), sid("CA", n + 100));
    let events = vec![
        Event::DialPlaced { reservation: reservation.clone(), attempt: 1, leg },
        Event::ReservationAccepted { task, reservation: reservation.clone() },
    ];
    Delivery::to_keys([reservation.to_string()], events, POLICY)
}

pub(super) fn dials(actions: &[(String, OutboxState, Option<String>)]) -> Vec<(&str, OutboxState)> {
    actions.iter().filter(|(k, _, _)| k.starts_with("dial:")).map(|(k, s, _)| (k.as_str(), *s)).collect()
}

/// A caller from `from` turned away as after hours at `north`.
pub(super) fn after_hours(call: usize, from: &str) -> Delivery {
    let caller: twilio::sid::CallSid = sid("CA", call);
    let away = Event::CallerTurnedAway { outcome: Outcome::AfterHours, location: Some("north".into()) };
    let mut d = Delivery::to_keys([caller.to_string()], vec![Event::CallerArrived { call: caller }, away], POLICY);
    d.caller = Some(NewCall { from: from.into(), to: "+14155550999".into() });
    d
}
