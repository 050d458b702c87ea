use proptest::prelude::*;
use serde_json::json;

use super::*;

const TASK: &str = "WT00000000000000000000000000000001";
const CALLER: &str = "CA00000000000000000000000000000009";
const PHONE: &str = "+14155550123";
const OTHER_PHONE: &str = "+14155550124";
/// 2023-11-14T22:13:20Z.
const PLACED: i64 = 1_700_000_000_000;

fn res_sid(n: u32) -> String {
    format!("WR{n:032x}")
}

fn call_sid(n: u32) -> String {
    format!("CA{n:032x}")
}

fn attributes(with_caller: bool) -> String {
    let mut a =
        json!({"location": "north", "practicePhone": PHONE, "callerID": "+12025550143", "caller": "+13105550199"});
    if with_caller {
        a["call_sid"] = json!(CALLER);
    }
    a.to_string()
}

fn task(status: &str, attributes: &str) -> TaskResource {
    serde_json::from_value(json!({
        "sid": TASK, "assignment_status": status, "attributes": attributes,
        "date_created": "2023-11-14T22:13:20Z", "task_queue_sid": null, "workflow_sid": null,
    }))
    .unwrap()
}

fn reservation(n: u32, status: &str) -> ReservationResource {
    serde_json::from_value(json!({
        "sid": res_sid(n), "reservation_status": status,
        "worker_sid": "WK00000000000000000000000000000001", "task_sid": TASK,
    }))
    .unwrap()
}

/// A call as the Calls list shows it, created `created_ms` after the epoch.
fn call(n: u32, to: &str, direction: &str, created_ms: i64, status: &str) -> CallRecordResource {
    let t = Timestamp::from_millisecond(created_ms).unwrap();
    let rfc = t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string();
    serde_json::from_value(json!({
        "sid": call_sid(n), "to": to, "from": "+12025550143", "status": status, "direction": direction,
        "parent_call_sid": null, "date_created": rfc, "start_time": rfc, "end_time": null, "answered_by": null,
    }))
    .unwrap()
}

fn find() -> FindDial {
    FindDial {
        reservation: ReservationSid::parse(&res_sid(1)).unwrap(),
        attempt: 2,
        to: E164::parse(PHONE).unwrap(),
        placed_after_ms: PLACED,
    }
}

fn nobody_known(_: &str) -> bool {
    false
}

#[test]
fn a_pending_reservation_is_a_missed_reservation_created() {
    let t = task("reserved", &attributes(true));
    let seen = observe_task(&t, &[reservation(1, "timeout"), reservation(2, "pending")], &Default::default()).unwrap();
    let attrs: TaskAttributes = serde_json::from_str(&attributes(true)).unwrap();
    let task_sid = TaskSid::parse(TASK).unwrap();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(
        seen[0],
        Observed {
            keys: vec![CALLER.into(), TASK.into(), res_sid(2)],
            event: Event::ReservationCreated {
                task: task_sid.clone(),
                reservation: ReservationSid::parse(&res_sid(2)).unwrap(),
                caller: Some(CallSid::parse(CALLER).unwrap()),
                target: DialTarget::from_attributes(&attrs),
            },
            create: true,
        }
    );
    assert_eq!(
        seen[1],
        Observed {
            keys: vec![CALLER.into(), TASK.into(), res_sid(1)],
            event: Event::ReservationSeen {
                task: task_sid.clone(),
                reservation: ReservationSid::parse(&res_sid(1)).unwrap(),
                status: ReservationStatus::Timeout,
            },
            create: false,
        }
    );
    assert_eq!(
        seen[2],
        Observed {
            keys: vec![CALLER.into(), TASK.into()],
            event: Event::TaskSeen { task: task_sid, status: TaskStatus::Reserved },
            create: false,
        }
    );
}

#[test]
fn without_a_caller_sid_the_task_and_reservation_route_the_events() {
    let seen = observe_task(&task("assigned", &attributes(false)), &[reservation(1, "accepted")], &Default::default())
        .unwrap();
    assert_eq!(seen[0].keys, [TASK.to_owned(), res_sid(1)]);
    assert!(!seen[0].create);
    assert_eq!(seen[1].keys, [TASK.to_owned()]);
    let Event::ReservationSeen { status, .. } = &seen[0].event else { panic!("{seen:?}") };
    assert_eq!(*status, ReservationStatus::Accepted);
}

#[test]
fn a_reservation_of_another_task_is_ignored() {
    let mut other = reservation(3, "pending");
    other.task_sid = TaskSid::parse("WT00000000000000000000000000000002").unwrap();
    let seen = observe_task(&task("pending", &attributes(true)), &[other], &Default::default()).unwrap();
    assert_eq!(seen.len(), 1);
    assert!(matches!(seen[0].event, Event::TaskSeen { status: TaskStatus::Pending, .. }));
}

#[test]
fn tasks_that_are_not_ours_are_skipped_with_a_reason() {
    let why = observe_task(&task("reserved", r#"{"type":"chat"}"#), &[reservation(1, "pending")], &Default::default())
        .unwrap_err();
    assert!(why.contains("attributes"), "{why}");
    let why = observe_task(&task("reserved", "not json"), &[], &Default::default()).unwrap_err();
    assert!(why.contains("attributes"), "{why}");
    let why = observe_task(&task("lost", &attributes(true)), &[], &Default::default()).unwrap_err();
    assert!(why.contains("\"lost\""), "{why}");
    let why = observe_task(&task("reserved", &attributes(true)), &[reservation(1, "pondering")], &Default::default())
        .unwrap_err();
    assert!(why.contains(&res_sid(1)) && why.contains("pondering"), "{why}");
}

#[test]
fn the_oldest_unknown_outbound_call_to_the_phone_in_the_window_is_the_leg() {
    let calls = [
        call(5, PHONE, "outbound-api", PLACED + 4_000, "ringing"),
        call(4, OTHER_PHONE, "outbound-api", PLACED + 500, "ringing"),
        call(3, PHONE, "outbound-dial", PLACED + 300, "ringing"),
        call(2, PHONE, "outbound-api", PLACED + 1_000, "in-progress"),
        call(1, PHONE, "outbound-api", PLACED - CREATED_SLACK_MS - 1_000, "completed"),
    ];
    let leg = |n: u32, status| Event::LegSeen {
        reservation: find().reservation,
        attempt: Some(2),
        leg: CallSid::parse(&call_sid(n)).unwrap(),
        status,
    };
    assert_eq!(attribute_dial(&find(), &calls, nobody_known), leg(2, CallStatus::InProgress));
    // Once 2 is another journey's leg, 5 is the only candidate.
    let two = call_sid(2);
    assert_eq!(attribute_dial(&find(), &calls, |s| s == two), leg(5, CallStatus::Ringing));
    // Nothing left: proof of absence.
    let absent = Event::DialAbsent { reservation: find().reservation, attempt: 2 };
    assert_eq!(attribute_dial(&find(), &calls, |s| s != call_sid(1)), absent);
    assert_eq!(attribute_dial(&find(), &[], nobody_known), absent);
}

#[test]
fn the_slack_admits_a_call_stamped_up_to_two_seconds_early() {
    // Twilio stamps whole seconds: a call created 900 ms after the dial was
    // owed, in the same second, reads up to 999 ms early.
    let inside = [call(1, PHONE, "outbound-api", PLACED - CREATED_SLACK_MS, "queued")];
    assert!(matches!(attribute_dial(&find(), &inside, nobody_known), Event::LegSeen { .. }));
    let outside = [call(1, PHONE, "outbound-api", PLACED - CREATED_SLACK_MS - 1, "queued")];
    assert!(matches!(attribute_dial(&find(), &outside, nobody_known), Event::DialAbsent { .. }));
}

#[test]
fn same_second_ties_go_to_the_call_listed_last_and_unknown_statuses_read_queued() {
    let calls = [call(7, PHONE, "outbound-api", PLACED, "dialling"), call(6, PHONE, "outbound-api", PLACED, "ringing")];
    let Event::LegSeen { leg, status, .. } = attribute_dial(&find(), &calls, nobody_known) else { panic!() };
    assert_eq!(leg.as_str(), call_sid(6));
    assert_eq!(status, CallStatus::Ringing);
    let Event::LegSeen { leg, status, .. } = attribute_dial(&find(), &calls[..1], nobody_known) else { panic!() };
    assert_eq!((leg.as_str(), status), (call_sid(7).as_str(), CallStatus::Queued));
}

#[test]
fn find_dial_reads_its_command() {
    let command = Command::FindDial {
        reservation: find().reservation,
        attempt: 2,
        lookup: 3,
        to: E164::parse(PHONE).unwrap(),
        placed_after_ms: PLACED,
    };
    assert_eq!(FindDial::from_command(&command), Some(find()));
    assert_eq!(FindDial::from_command(&Command::CompleteTask { task: TaskSid::parse(TASK).unwrap(), round: 1 }), None);
}

#[test]
fn unseen_inbound_calls_are_ended_calls_to_our_numbers_we_never_heard_of() {
    let ours = [E164::parse("+12025550143").unwrap()];
    let mut calls = vec![
        call(1, "+12025550143", "inbound", PLACED, "completed"),
        call(2, "+12025550143", "inbound", PLACED, "in-progress"),
        call(3, "+12025550199", "inbound", PLACED, "completed"),
        call(4, "+12025550143", "outbound-api", PLACED, "completed"),
        call(5, "+12025550143", "inbound", PLACED, "no-answer"),
        call(6, "+12025550143", "inbound", PLACED, "busy"),
    ];
    let mut child = call(7, "+12025550143", "inbound", PLACED, "completed");
    child.parent_call_sid = Some(CallSid::parse(&call_sid(1)).unwrap());
    calls.push(child);
    let known = call_sid(6);
    let unseen = unseen_inbound(&calls, &ours, |s| s == known);
    let sids: Vec<&str> = unseen.iter().map(|u| u.call.as_str()).collect();
    assert_eq!(sids, [call_sid(1), call_sid(5)]);
    assert_eq!(unseen[1].status, CallStatus::NoAnswer);
    assert_eq!(unseen[0].to, ours[0]);
    assert_eq!(unseen[0].start_time, Some(Timestamp::from_millisecond(PLACED).unwrap()));
}

/// Calls with distinct SIDs (their index), any phone, direction, time
/// around the dial (whole seconds, as Twilio stamps them) and status.
fn arb_calls() -> impl Strategy<Value = Vec<CallRecordResource>> {
    let one = (
        prop_oneof![Just(PHONE), Just(OTHER_PHONE)],
        prop_oneof![Just("outbound-api"), Just("outbound-dial"), Just("inbound")],
        -6_000i64..6_000,
        prop_oneof![Just("queued"), Just("ringing"), Just("completed"), Just("busy")],
    );
    proptest::collection::vec(one, 0..12).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (to, dir, offset, status))| call(i as u32, to, dir, PLACED + offset, status))
            .collect()
    })
}

proptest! {
    #[test]
    fn attribute_dial_never_takes_a_known_leg_or_one_before_the_window(
        calls in arb_calls(),
        known in proptest::collection::btree_set(0u32..12, 0..8),
    ) {
        let known: Vec<String> = known.into_iter().map(call_sid).collect();
        let is_known = |s: &str| known.iter().any(|k| k == s);
        let eligible: Vec<&CallRecordResource> = calls
            .iter()
            .filter(|c| c.to == PHONE && c.direction.as_deref() == Some("outbound-api"))
            .filter(|c| c.date_created.unwrap().as_millisecond() >= PLACED - CREATED_SLACK_MS)
            .filter(|c| !is_known(c.sid.as_str()))
            .collect();
        match attribute_dial(&find(), &calls, is_known) {
            Event::LegSeen { reservation, attempt, leg, .. } => {
                prop_assert_eq!(reservation, find().reservation);
                prop_assert_eq!(attempt, Some(2));
                prop_assert!(!is_known(leg.as_str()), "took a known leg");
                let taken = calls.iter().find(|c| c.sid == leg).unwrap();
                let created = taken.date_created.unwrap().as_millisecond();
                prop_assert!(created >= PLACED - CREATED_SLACK_MS, "took a call from before the window");
                prop_assert!(eligible.iter().any(|c| c.sid == leg));
                prop_assert!(eligible.iter().all(|c| c.date_created.unwrap().as_millisecond() >= created));
            }
            Event::DialAbsent { attempt, .. } => {
                prop_assert_eq!(attempt, 2);
                prop_assert!(eligible.is_empty(), "absent with a candidate: {:?}", eligible);
            }
            other => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}
