//! Reservations over HTTP: re-offers, parallel offers and rescinds,
//! `Instruction`, `WorkerActivitySid` and the Workers resource's
//! `RejectPendingReservations`.

mod common;

use common::T;
use serde_json::Value;

struct Ws {
    ws: String,
    wf: String,
    queue: String,
    available: String,
    offline: String,
}

/// A workspace posting events to `callback`, one queue for every worker, and
/// a workflow with a `timeout` s reservation timeout.
async fn workspace(t: &T, callback: &str, timeout: &str) -> Ws {
    let (ws, available, offline) = t.workspace(Some(callback)).await;
    let (s, q) = t.post(&t.tr(&format!("Workspaces/{ws}/TaskQueues")), &[("FriendlyName", "q")]).await;
    assert_eq!(s, 201, "{q}");
    let queue = q["sid"].as_str().unwrap().to_owned();
    let cfg = format!(r#"{{"task_routing":{{"filters":[],"default_filter":{{"queue":"{queue}"}}}}}}"#);
    let (s, wf) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Workflows")),
            &[("FriendlyName", "wf"), ("Configuration", &cfg), ("TaskReservationTimeout", timeout)],
        )
        .await;
    assert_eq!(s, 201, "{wf}");
    Ws { ws, wf: wf["sid"].as_str().unwrap().to_owned(), queue, available, offline }
}

async fn worker(t: &T, w: &Ws, name: &str) -> String {
    let (s, v) = t
        .post(&t.tr(&format!("Workspaces/{}/Workers", w.ws)), &[("FriendlyName", name), ("ActivitySid", &w.available)])
        .await;
    assert_eq!(s, 201, "{v}");
    v["sid"].as_str().unwrap().to_owned()
}

async fn task(t: &T, w: &Ws) -> String {
    let (s, v) =
        t.post(&t.tr(&format!("Workspaces/{}/Tasks", w.ws)), &[("WorkflowSid", &w.wf), ("Attributes", "{}")]).await;
    assert_eq!(s, 201, "{v}");
    v["sid"].as_str().unwrap().to_owned()
}

/// (reservation SID, worker SID, status), in creation order.
async fn reservations(t: &T, w: &Ws, task: &str) -> Vec<(String, String, String)> {
    let (_, v) = t.get(&t.tr(&format!("Workspaces/{}/Tasks/{task}/Reservations", w.ws))).await;
    let s = |r: &Value, k: &str| r[k].as_str().unwrap().to_owned();
    v["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (s(r, "sid"), s(r, "worker_sid"), s(r, "reservation_status")))
        .collect()
}

async fn get(t: &T, url: &str) -> Value {
    let (s, v) = t.get(url).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn parallel_offers_and_the_accepted_one_rescinds_the_other() {
    let t = common::start(1.0).await;
    let (cb, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    let w = workspace(&t, &format!("{cb}/events"), "120").await;
    let (s, q) =
        t.post(&t.tr(&format!("Workspaces/{}/TaskQueues/{}", w.ws, w.queue)), &[("MaxReservedWorkers", "2")]).await;
    assert_eq!((s, q["max_reserved_workers"].as_u64()), (200, Some(2)));
    let a = worker(&t, &w, "a").await;
    let b = worker(&t, &w, "b").await;
    let tk = task(&t, &w).await;
    let res = reservations(&t, &w, &tk).await;
    let workers: Vec<&str> = res.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(workers, [a.as_str(), b.as_str()]);
    assert!(res.iter().all(|r| r.2 == "pending"));
    assert_eq!(get(&t, &t.tr(&format!("Workspaces/{}/Tasks/{tk}", w.ws))).await["assignment_status"], "reserved");

    // Worker b accepts through its own Reservations resource, as an instruction.
    let (s, v) = t
        .post(
            &t.tr(&format!("Workspaces/{}/Workers/{b}/Reservations/{}", w.ws, res[1].0)),
            &[("Instruction", "accept")],
        )
        .await;
    assert_eq!((s, v["reservation_status"].as_str()), (200, Some("accepted")), "{v}");
    let res = reservations(&t, &w, &tk).await;
    assert_eq!((res[0].2.as_str(), res[1].2.as_str()), ("rescinded", "accepted"));
    let rescinded = common::until(3000, || {
        common::hits_at(&hits, "/events")
            .into_iter()
            .find(|h| h.params.get("EventType") == Some("reservation.rescinded"))
    })
    .await
    .expect("a reservation.rescinded event");
    assert_eq!(rescinded.params.get("ReservationSid"), Some(res[0].0.as_str()));
    assert_eq!(rescinded.params.get("WorkerSid"), Some(a.as_str()));
    // The rescinded worker is free for the next task at once.
    let next = task(&t, &w).await;
    assert_eq!(reservations(&t, &w, &next).await[0].1, a);
    // A rescinded reservation cannot be accepted.
    let (s, e) = t
        .post(
            &t.tr(&format!("Workspaces/{}/Tasks/{tk}/Reservations/{}", w.ws, res[0].0)),
            &[("ReservationStatus", "accepted")],
        )
        .await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)), "{e}");
}

#[tokio::test]
async fn rejects_move_the_worker_or_offer_the_task_again() {
    let t = common::start(1000.0).await;
    let (cb, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    let w = workspace(&t, &format!("{cb}/events"), "3600").await;
    let ws_json = get(&t, &t.tr(&format!("Workspaces/{}", w.ws))).await;
    assert_eq!(ws_json["multi_task_enabled"], true, "Twilio's default");
    let k = worker(&t, &w, "k").await;
    let tk = task(&t, &w).await;
    let first = reservations(&t, &w, &tk).await.remove(0).0;
    let res_url = |r: &str| t.tr(&format!("Workspaces/{}/Tasks/{tk}/Reservations/{r}", w.ws));

    // Instructions the sandbox does not simulate, and contradictions, are refused.
    for form in [
        vec![("Instruction", "dequeue")],
        vec![("Instruction", "reject"), ("ReservationStatus", "accepted")],
        vec![("ReservationStatus", "rejected"), ("WorkerActivitySid", "WA00000000000000000000000000000000")],
    ] {
        let (s, e) = t.post(&res_url(&first), &form).await;
        assert_eq!((s, e["code"].as_u64()), (400, Some(20001)), "{form:?}: {e}");
    }
    assert_eq!(reservations(&t, &w, &tk).await[0].2, "pending");

    // A plain reject leaves the worker available: it is offered the task again, as a new reservation.
    let (s, _) = t.post(&res_url(&first), &[("ReservationStatus", "rejected")]).await;
    assert_eq!(s, 200);
    let res = reservations(&t, &w, &tk).await;
    assert_eq!(res.len(), 2);
    assert_eq!((res[0].2.as_str(), res[1].1.as_str(), res[1].2.as_str()), ("rejected", k.as_str(), "pending"));
    let second = res[1].0.clone();
    assert_ne!(second, first);

    // Rejecting with WorkerActivitySid moves the worker out of routing.
    let (s, _) = t.post(&res_url(&second), &[("Instruction", "reject"), ("WorkerActivitySid", &w.offline)]).await;
    assert_eq!(s, 200);
    let wk = get(&t, &t.tr(&format!("Workspaces/{}/Workers/{k}", w.ws))).await;
    assert_eq!(wk["activity_sid"], w.offline.as_str());
    assert_eq!(reservations(&t, &w, &tk).await.len(), 2, "no third offer");
    assert_eq!(get(&t, &t.tr(&format!("Workspaces/{}/Tasks/{tk}", w.ws))).await["assignment_status"], "pending");

    // Back to Available: offered again.
    t.post(&t.tr(&format!("Workspaces/{}/Workers/{k}", w.ws)), &[("ActivitySid", &w.available)]).await;
    let res = reservations(&t, &w, &tk).await;
    assert_eq!((res.len(), res[2].1.as_str(), res[2].2.as_str()), (3, k.as_str(), "pending"));

    // RejectPendingReservations: only with a move to an unavailable activity.
    let worker_url = t.tr(&format!("Workspaces/{}/Workers/{k}", w.ws));
    let (s, e) = t.post(&worker_url, &[("RejectPendingReservations", "true"), ("ActivitySid", &w.available)]).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)), "{e}");
    let (s, e) = t.post(&worker_url, &[("RejectPendingReservations", "true")]).await;
    assert_eq!(s, 400, "{e}");
    let (s, v) = t.post(&worker_url, &[("RejectPendingReservations", "true"), ("ActivitySid", &w.offline)]).await;
    assert_eq!((s, v["activity_sid"].as_str()), (200, Some(w.offline.as_str())), "{v}");
    let res = reservations(&t, &w, &tk).await;
    assert_eq!((res.len(), res[2].2.as_str()), (3, "rejected"));
    let rejected = common::until(3000, || {
        common::hits_at(&hits, "/events").into_iter().find(|h| {
            h.params.get("EventType") == Some("reservation.rejected")
                && h.params.get("ReservationSid") == Some(res[2].0.as_str())
        })
    })
    .await;
    assert!(rejected.is_some(), "{:?}", common::event_types(&hits));
}

#[tokio::test]
async fn a_timeout_re_offers_the_task_to_the_same_available_worker() {
    let t = common::start(1000.0).await;
    let (cb, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    let w = workspace(&t, &format!("{cb}/events"), "5").await;
    // As call-router provisions it: a worker whose reservation timed out stays Available.
    let (s, _) = t.post(&t.tr(&format!("Workspaces/{}", w.ws)), &[("TimeoutActivitySid", w.available.as_str())]).await;
    assert_eq!(s, 200);
    let k = worker(&t, &w, "k").await;
    let tk = task(&t, &w).await;
    // Nobody answers: every 5 virtual seconds the reservation times out and a new one is made.
    let events = common::until(5000, || {
        let ev: Vec<common::Hit> = common::hits_at(&hits, "/events")
            .into_iter()
            .filter(|h| h.params.get("TaskSid") == Some(tk.as_str()))
            .filter(|h| matches!(h.params.get("EventType"), Some("reservation.created" | "reservation.timeout")))
            .collect();
        (ev.len() >= 5).then_some(ev)
    })
    .await
    .unwrap_or_else(|| panic!("{:?}", common::event_types(&hits)));
    let kinds: Vec<&str> = events.iter().map(|h| h.params.get("EventType").unwrap()).collect();
    assert_eq!(
        kinds[..5],
        [
            "reservation.created",
            "reservation.timeout",
            "reservation.created",
            "reservation.timeout",
            "reservation.created"
        ]
    );
    assert!(events.iter().all(|h| h.params.get("WorkerSid") == Some(k.as_str())));
    let sid = |i: usize| events[i].params.get("ReservationSid").unwrap().to_owned();
    assert_eq!((sid(0), sid(2)), (sid(1), sid(3)), "each timeout is of the reservation just made");
    assert!(sid(0) != sid(2) && sid(2) != sid(4), "every offer is a new reservation");
}
