//! TaskRouter routing over HTTP: expressions, capacity, reservation timeout,
//! task TTL, and signed event callbacks with EventsFilter.

mod common;

use common::T;
use serde_json::Value;

struct Setup {
    ws: String,
    wf: String,
    available: String,
    offline: String,
}

async fn setup(
    t: &T,
    callback: Option<&str>,
    target_workers: &str,
    config: impl Fn(&str) -> String,
    timeout: &str,
) -> Setup {
    let (ws, available, offline) = t.workspace(callback).await;
    let (s, q) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/TaskQueues")),
            &[("FriendlyName", "q"), ("TargetWorkers", target_workers)],
        )
        .await;
    assert_eq!(s, 201, "{q}");
    let q = q["sid"].as_str().unwrap().to_owned();
    let (s, wf) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Workflows")),
            &[("FriendlyName", "wf"), ("Configuration", &config(&q)), ("TaskReservationTimeout", timeout)],
        )
        .await;
    assert_eq!(s, 201, "{wf}");
    Setup { ws, wf: wf["sid"].as_str().unwrap().to_owned(), available, offline }
}

fn simple(q: &str) -> String {
    format!(r#"{{"task_routing":{{"filters":[],"default_filter":{{"queue":"{q}"}}}}}}"#)
}

async fn worker(t: &T, s: &Setup, name: &str, attrs: &str) -> String {
    let (st, w) = t
        .post(
            &t.tr(&format!("Workspaces/{}/Workers", s.ws)),
            &[("FriendlyName", name), ("Attributes", attrs), ("ActivitySid", &s.available)],
        )
        .await;
    assert_eq!(st, 201, "{w}");
    w["sid"].as_str().unwrap().to_owned()
}

async fn task(t: &T, s: &Setup, attrs: &str, extra: &[(&str, &str)]) -> String {
    let mut form = vec![("Attributes", attrs), ("WorkflowSid", s.wf.as_str())];
    form.extend_from_slice(extra);
    let (st, v) = t.post(&t.tr(&format!("Workspaces/{}/Tasks", s.ws)), &form).await;
    assert_eq!(st, 201, "{v}");
    v["sid"].as_str().unwrap().to_owned()
}

async fn get_task(t: &T, s: &Setup, sid: &str) -> Value {
    t.get(&t.tr(&format!("Workspaces/{}/Tasks/{sid}", s.ws))).await.1
}

async fn reservations(t: &T, s: &Setup, task: &str) -> Vec<Value> {
    let (_, v) = t.get(&t.tr(&format!("Workspaces/{}/Tasks/{task}/Reservations", s.ws))).await;
    v["reservations"].as_array().unwrap().clone()
}

/// (queue TargetWorkers, workflow filter and target expressions, task attributes, expected worker).
type Case = (&'static str, Option<(&'static str, Option<&'static str>)>, &'static str, Option<&'static str>);

#[tokio::test]
async fn expressions_pick_the_worker() {
    // (queue TargetWorkers, workflow filter expression + target expression, task attributes, expected worker)
    let cases: &[Case] = &[
        ("1==1", None, r#"{"location":"north"}"#, Some("north")),
        ("location == \"south\"", None, r#"{}"#, Some("south")),
        ("location == task.location", None, r#"{"location":"south"}"#, Some("south")),
        ("location == task.location", None, r#"{"location":"east"}"#, None),
        (
            "1==1",
            Some(("location == \"south\"", Some("worker.location == task.location"))),
            r#"{"location":"south"}"#,
            Some("south"),
        ),
        ("skills HAS \"spanish\"", None, r#"{}"#, Some("south")),
    ];
    for (i, (tw, filter, attrs, want)) in cases.iter().enumerate() {
        let t = common::start(1.0).await;
        let config = |q: &str| match filter {
            None => simple(q),
            Some((fe, te)) => {
                let texpr =
                    te.map(|e| format!(r#","expression":{}"#, serde_json::to_string(e).unwrap())).unwrap_or_default();
                format!(
                    r#"{{"task_routing":{{"filters":[{{"filter_friendly_name":"f","expression":{},"targets":[{{"queue":"{q}"{texpr}}}]}}]}}}}"#,
                    serde_json::to_string(fe).unwrap()
                )
            }
        };
        let s = setup(&t, None, tw, config, "120").await;
        let north = worker(&t, &s, "north", r#"{"location":"north","skills":["english"]}"#).await;
        let south = worker(&t, &s, "south", r#"{"location":"south","skills":["spanish"]}"#).await;
        let tk = task(&t, &s, attrs, &[]).await;
        let res = reservations(&t, &s, &tk).await;
        let got = res.first().map(|r| r["worker_sid"].as_str().unwrap().to_owned());
        let want = want.map(|w| if w == "north" { north.clone() } else { south.clone() });
        assert_eq!(got, want, "case {i}: {tw} / {filter:?} / {attrs}");
    }
}

#[tokio::test]
async fn capacity_one_makes_the_second_task_wait() {
    let t = common::start(1.0).await;
    let s = setup(&t, None, "1==1", simple, "120").await;
    let w = worker(&t, &s, "w", "{}").await;
    let t1 = task(&t, &s, "{}", &[]).await;
    let t2 = task(&t, &s, "{}", &[]).await;
    assert_eq!(get_task(&t, &s, &t1).await["assignment_status"], "reserved");
    assert_eq!(get_task(&t, &s, &t2).await["assignment_status"], "pending");
    let r1 = reservations(&t, &s, &t1).await[0]["sid"].as_str().unwrap().to_owned();
    t.post(&t.tr(&format!("Workspaces/{}/Workers/{w}/Reservations/{r1}", s.ws)), &[("ReservationStatus", "accepted")])
        .await;
    assert_eq!(get_task(&t, &s, &t2).await["assignment_status"], "pending");
    let (st, _) = t
        .post(&t.tr(&format!("Workspaces/{}/Tasks/{t1}", s.ws)), &[("AssignmentStatus", "completed"), ("Reason", "x")])
        .await;
    assert_eq!(st, 200);
    assert_eq!(get_task(&t, &s, &t2).await["assignment_status"], "reserved");
    // Capacity 2 lets a third task in alongside, in a workspace that multitasks (Twilio's
    // default; provision also sets it explicitly).
    t.post(&t.tr(&format!("Workspaces/{}", s.ws)), &[("MultiTaskEnabled", "true")]).await;
    t.post(&t.tr(&format!("Workspaces/{}/Workers/{w}/Channels/voice", s.ws)), &[("Capacity", "2")]).await;
    let t3 = task(&t, &s, "{}", &[]).await;
    assert_eq!(get_task(&t, &s, &t3).await["assignment_status"], "reserved");
}

#[tokio::test]
async fn an_older_virtual_start_time_goes_first_and_a_bad_one_is_refused() {
    let t = common::start(1.0).await;
    let s = setup(&t, None, "1==1", simple, "120").await;
    let w = worker(&t, &s, "w", "{}").await;
    let busy = task(&t, &s, "{}", &[]).await;
    let newer = task(&t, &s, r#"{"n":"newer"}"#, &[]).await;
    // Created after `newer`, but it says it began waiting an hour ago: a callback keeps its place.
    let hour_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    let older = task(&t, &s, r#"{"n":"older"}"#, &[("VirtualStartTime", &hour_ago)]).await;
    let v = get_task(&t, &s, &older).await;
    let vst: jiff::Timestamp = v["virtual_start_time"].as_str().unwrap().parse().unwrap();
    let want: jiff::Timestamp = hour_ago.parse().unwrap();
    assert!(vst.duration_since(want).as_secs().abs() <= 1, "{v}");
    assert_ne!(v["virtual_start_time"], v["date_created"]);

    // The worker frees up: the task that waited longest is offered first.
    let r = reservations(&t, &s, &busy).await[0]["sid"].as_str().unwrap().to_owned();
    t.post(&t.tr(&format!("Workspaces/{}/Workers/{w}/Reservations/{r}", s.ws)), &[("ReservationStatus", "accepted")])
        .await;
    t.post(&t.tr(&format!("Workspaces/{}/Tasks/{busy}", s.ws)), &[("AssignmentStatus", "completed"), ("Reason", "x")])
        .await;
    assert_eq!(get_task(&t, &s, &older).await["assignment_status"], "reserved");
    assert_eq!(get_task(&t, &s, &newer).await["assignment_status"], "pending");

    let (st, v) = t
        .post(
            &t.tr(&format!("Workspaces/{}/Tasks", s.ws)),
            &[("WorkflowSid", s.wf.as_str()), ("VirtualStartTime", "yesterday")],
        )
        .await;
    assert_eq!((st, v["code"].as_u64()), (400, Some(20001)), "{v}");
}

#[tokio::test]
async fn reservation_timeout_moves_on_and_task_ttl_cancels() {
    let t = common::start(1000.0).await;
    let (cb, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    let s = setup(&t, Some(&format!("{cb}/events")), "1==1", simple, "30").await;
    let a = worker(&t, &s, "a", "{}").await;
    let b = worker(&t, &s, "b", "{}").await;
    let tk = task(&t, &s, "{}", &[]).await;
    let first = reservations(&t, &s, &tk).await[0]["worker_sid"].as_str().unwrap().to_owned();
    assert_eq!(first, a);
    // 30 virtual seconds = 30 ms real.
    let moved = common::until(3000, || {
        let ev = common::event_types(&hits);
        (ev.iter().filter(|e| *e == "reservation.created").count() >= 2).then_some(())
    })
    .await;
    assert!(moved.is_some(), "{:?}", common::event_types(&hits));
    let res = reservations(&t, &s, &tk).await;
    assert_eq!(res[0]["reservation_status"], "timeout");
    assert_eq!(res[1]["worker_sid"], b.as_str());
    let (_, wa) = t.get(&t.tr(&format!("Workspaces/{}/Workers/{a}", s.ws))).await;
    assert_eq!(wa["activity_sid"], s.offline.as_str());

    // TTL: 5 virtual seconds, with no worker free.
    let (_, _) = t.post(&t.tr(&format!("Workspaces/{}/Workers/{b}", s.ws)), &[("ActivitySid", &s.offline)]).await;
    let short = task(&t, &s, "{}", &[("Timeout", "5")]).await;
    let canceled = common::until(3000, || {
        common::hits_at(&hits, "/events")
            .iter()
            .any(|h| {
                h.params.get("EventType") == Some("task.canceled") && h.params.get("TaskSid") == Some(short.as_str())
            })
            .then_some(())
    })
    .await;
    assert!(canceled.is_some());
    let tv = get_task(&t, &s, &short).await;
    assert_eq!(tv["assignment_status"], "canceled");
    assert_eq!(tv["reason"], "Task TTL Exceeded");
    // Every event was signed and carried the documented fields.
    for h in common::hits_at(&hits, "/events") {
        assert!(h.signed, "{:?}", h.params);
        for k in [
            "EventType",
            "AccountSid",
            "WorkspaceSid",
            "WorkspaceName",
            "Timestamp",
            "Sid",
            "ResourceType",
            "ResourceSid",
        ] {
            assert!(h.params.get(k).is_some(), "{k} missing in {:?}", h.params);
        }
    }
    let created = common::hits_at(&hits, "/events")
        .into_iter()
        .find(|h| h.params.get("EventType") == Some("reservation.created"))
        .unwrap();
    for k in [
        "TaskSid",
        "TaskAttributes",
        "TaskQueueSid",
        "TaskQueueName",
        "WorkflowSid",
        "ReservationSid",
        "WorkerSid",
        "WorkerName",
        "WorkerActivityName",
        "TaskAge",
    ] {
        assert!(created.params.get(k).is_some(), "{k} missing");
    }
}

#[tokio::test]
async fn events_are_ordered_and_filtered() {
    let t = common::start(1.0).await;
    let (cb, hits) = common::receiver(t.token.clone(), |_, _| (200, String::new())).await;
    let s = setup(&t, Some(&format!("{cb}/events")), "1==1", simple, "120").await;
    let w = worker(&t, &s, "w", "{}").await;
    let tk = task(&t, &s, "{}", &[]).await;
    let r = reservations(&t, &s, &tk).await[0]["sid"].as_str().unwrap().to_owned();
    t.post(&t.tr(&format!("Workspaces/{}/Tasks/{tk}/Reservations/{r}", s.ws)), &[("ReservationStatus", "accepted")])
        .await;
    t.post(&t.tr(&format!("Workspaces/{}/Tasks/{tk}", s.ws)), &[("AssignmentStatus", "wrapping")]).await;
    t.post(&t.tr(&format!("Workspaces/{}/Tasks/{tk}", s.ws)), &[("AssignmentStatus", "completed")]).await;
    let want = [
        "task.created",
        "reservation.created",
        "reservation.accepted",
        "task.wrapup",
        "reservation.wrapup",
        "task.completed",
        "reservation.completed",
    ];
    let got = common::until(3000, || {
        let ev: Vec<String> = common::event_types(&hits).into_iter().filter(|e| want.contains(&e.as_str())).collect();
        (ev.len() >= want.len()).then_some(ev)
    })
    .await
    .unwrap_or_else(|| common::event_types(&hits));
    assert_eq!(got, want);

    // Only the filtered types arrive after EventsFilter is set.
    t.post(&t.tr(&format!("Workspaces/{}", s.ws)), &[("EventsFilter", "task.canceled,worker.activity.update")]).await;
    hits.lock().unwrap().clear();
    let t2 = task(&t, &s, "{}", &[]).await;
    t.post(&t.tr(&format!("Workspaces/{}/Workers/{w}", s.ws)), &[("ActivitySid", &s.offline)]).await;
    t.post(&t.tr(&format!("Workspaces/{}/Tasks/{t2}", s.ws)), &[("AssignmentStatus", "canceled"), ("Reason", "test")])
        .await;
    let got = common::until(3000, || {
        let ev = common::event_types(&hits);
        (ev.len() >= 2).then_some(ev)
    })
    .await
    .unwrap_or_default();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let all = common::event_types(&hits);
    assert!(all.iter().all(|e| e == "task.canceled" || e == "worker.activity.update"), "{all:?}");
    assert!(got.contains(&"task.canceled".to_owned()), "{all:?}");
}
