//! REST fidelity over HTTP: list filters the spec documents, enum and range
//! checks, paging tokens, IncomingPhoneNumber settings, links, call deletion
//! and updates, and the 401 challenge.

mod common;

use std::time::{Duration, Instant};

use common::{T, twiml};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const NUMBER: &str = "+14155550100";

fn sid(v: &Value) -> String {
    v["sid"].as_str().unwrap_or_else(|| panic!("no sid in {v}")).to_owned()
}

fn sids(list: &Value, key: &str) -> Vec<String> {
    list[key].as_array().unwrap_or_else(|| panic!("no {key} in {list}")).iter().map(sid).collect()
}

fn code(v: &Value) -> Option<u64> {
    v["code"].as_u64()
}

/// A sandbox with a TwiML app (`/hold` keeps a call up, anything else hangs
/// up) and NUMBER bought.
async fn with_calls(scale: f64) -> (T, String) {
    let t = common::start(scale).await;
    let (app, _) = common::receiver(t.token.clone(), |path, _| match path {
        "/hold" => twiml(r#"<Pause length="3600"/>"#),
        _ => twiml("<Hangup/>"),
    })
    .await;
    let (s, n) = t.post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", NUMBER)]).await;
    assert_eq!(s, 201, "{n}");
    (t, app)
}

async fn place(t: &T, to: &str, url: &str) -> String {
    let (s, c) = t.post(&t.core("Calls.json"), &[("To", to), ("From", NUMBER), ("Url", url)]).await;
    assert_eq!(s, 201, "{c}");
    sid(&c)
}

/// Polls a call until `f` holds for it (at most 20 s real).
async fn call_until(t: &T, call: &str, f: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, c) = t.get(&t.core(&format!("Calls/{call}.json"))).await;
        if f(&c) {
            return c;
        }
        assert!(Instant::now() < end, "the call never reached the state waited for: {c}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_final(t: &T, call: &str) {
    let (s, v) = t.get(&format!("{}/sandbox/calls/{call}?wait_final_ms=20000", t.url)).await;
    assert_eq!((s, &v["final"]), (200, &json!(true)), "{}", v["status"]);
}

fn rfc2822(v: &Value) -> Timestamp {
    jiff::fmt::rfc2822::parse(v.as_str().unwrap_or_else(|| panic!("not a date: {v}"))).unwrap().timestamp()
}

fn day(t: Timestamp) -> String {
    jiff::tz::Offset::UTC.to_datetime(t).date().to_string()
}

fn iso(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `Calls.json?…` with the query encoded.
fn calls_query(t: &T, pairs: &[(&str, &str)]) -> String {
    let q: twilio::Params = pairs.iter().map(|(k, v)| (*k, *v)).collect();
    t.core(&format!("Calls.json?{}", q.encode()))
}

#[tokio::test]
async fn calls_list_by_start_and_end_time() {
    let (t, app) = with_calls(100.0).await;
    let ended = place(&t, "+14155550201", &format!("{app}/bye")).await;
    wait_final(&t, &ended).await;
    let live = place(&t, "+14155550202", &format!("{app}/hold")).await;
    let c = call_until(&t, &live, |c| c["status"] == "in-progress").await;
    let (_, e) = t.get(&t.core(&format!("Calls/{ended}.json"))).await;
    let (start, end) = (rfc2822(&e["start_time"]), rfc2822(&e["end_time"]));
    let live_start = rfc2822(&c["start_time"]);
    // Day bounds taken from the calls' own times, so a run across midnight
    // (UTC) still holds: `d` is the first call's day, `after` the day after
    // the last start, `after_end` the day after the first call's end.
    let hours_24 = SignedDuration::from_hours(24);
    let (d, after, after_end) = (day(start), day(live_start + hours_24), day(end + hours_24));
    let second = SignedDuration::from_secs(1);

    let list = |pairs: Vec<(&'static str, String)>| {
        let url = calls_query(&t, &pairs.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
        let t = &t;
        async move {
            let (s, l) = t.get(&url).await;
            assert_eq!(s, 200, "{url}: {l}");
            let mut got = sids(&l, "calls");
            got.sort();
            got
        }
    };
    let mut both = vec![ended.clone(), live.clone()];
    both.sort();
    let none: Vec<String> = Vec::new();
    // The calls started today (UTC) unless the test straddles midnight, which
    // the live call's own start date accounts for.
    let started_on_d: Vec<String> = {
        let mut v = vec![ended.clone()];
        if day(live_start) == d {
            v.push(live.clone());
        }
        v.sort();
        v
    };
    assert_eq!(list(vec![("StartTime", d.clone())]).await, started_on_d);
    // A date-time with `=` means its day.
    assert_eq!(list(vec![("StartTime", iso(start))]).await, started_on_d);
    assert_eq!(list(vec![("StartTime<", d.clone())]).await, none, "before the day excludes the day");
    assert_eq!(list(vec![("StartTime>", d.clone())]).await, both, "on or after the day");
    assert_eq!(list(vec![("StartTime>", after.clone())]).await, none);
    assert_eq!(list(vec![("StartTime<", after.clone())]).await, both);
    // Instants bound exactly: `<` strictly before, `>` on or after.
    assert_eq!(list(vec![("StartTime>", iso(live_start + second))]).await, none);
    assert!(list(vec![("StartTime<", iso(start + second))]).await.contains(&ended));
    assert!(!list(vec![("StartTime>", iso(start + second))]).await.contains(&ended));
    // The reliability use: calls to a number since an instant.
    let to_since = list(vec![("To", "+14155550201".into()), ("StartTime>", iso(start - second))]).await;
    assert_eq!(to_since, vec![ended.clone()]);
    let to_since = list(vec![("To", "+14155550202".into()), ("StartTime>", iso(start - second))]).await;
    assert_eq!(to_since, vec![live.clone()]);
    // A call that has not ended has no end time, so no EndTime filter keeps it.
    assert_eq!(list(vec![("EndTime", day(end))]).await, vec![ended.clone()]);
    assert_eq!(list(vec![("EndTime>", d.clone())]).await, vec![ended.clone()]);
    assert_eq!(list(vec![("EndTime<", after_end)]).await, vec![ended.clone()]);
    assert_eq!(list(vec![("EndTime<", d.clone())]).await, none);
    // Combined bounds: a window around the ended call only.
    let window = list(vec![("StartTime>", iso(start - second)), ("EndTime<", iso(end + second))]).await;
    assert_eq!(window, vec![ended.clone()]);

    for (k, v) in [("StartTime", "yesterday"), ("EndTime>", "2009-13-01"), ("StartTime<", "06/11/2019")] {
        let (s, e) = t.get(&calls_query(&t, &[(k, v)])).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "{k}={v}: {e}");
    }
    let (s, e) = t.get(&t.core("Calls.json?Status=bogus")).await;
    assert_eq!((s, code(&e)), (400, Some(20001)), "{e}");
    let (_, l) = t.get(&t.core("Calls.json?Status=in-progress")).await;
    assert_eq!(sids(&l, "calls"), vec![live]);
}

#[tokio::test]
async fn deleting_and_ending_calls_answer_as_twilio_does() {
    let (t, app) = with_calls(100.0).await;
    // Ringing for 50 rings (5 virtual minutes), long enough to cancel.
    t.put_json(&format!("{}/sandbox/phones/+14155550203", t.url), json!({"behaviour": "person", "rings": 50})).await;
    let ringing = place(&t, "+14155550203", &format!("{app}/hold")).await;
    call_until(&t, &ringing, |c| c["status"] == "ringing").await;
    let (s, e) = t.delete(&t.core(&format!("Calls/{ringing}.json"))).await;
    assert_eq!((s, code(&e)), (409, Some(20009)), "{e}");
    let (s, c) = t.post(&t.core(&format!("Calls/{ringing}.json")), &[("Status", "canceled")]).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("canceled")), "{c}");
    wait_final(&t, &ringing).await;
    let (_, c) = t.get(&t.core(&format!("Calls/{ringing}.json"))).await;
    assert_eq!(c["status"], "canceled", "the answer told the truth");

    let live = place(&t, "+14155550204", &format!("{app}/hold")).await;
    call_until(&t, &live, |c| c["status"] == "in-progress").await;
    let (s, e) = t.delete(&t.core(&format!("Calls/{live}.json"))).await;
    assert_eq!((s, code(&e), e["status"].as_u64()), (409, Some(20009), Some(409)), "{e}");
    let (s, c) = t.get(&t.core(&format!("Calls/{live}.json"))).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("in-progress")), "a refused delete keeps the call");
    // Canceling a call in progress leaves it alone, as Twilio does.
    let (s, c) = t.post(&t.core(&format!("Calls/{live}.json")), &[("Status", "canceled")]).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("in-progress")), "{c}");
    let (s, c) = t.post(&t.core(&format!("Calls/{live}.json")), &[("Status", "completed")]).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("completed")), "{c}");
    wait_final(&t, &live).await;
    let (_, c) = t.get(&t.core(&format!("Calls/{live}.json"))).await;
    assert_eq!(c["status"], "completed");
    let (s, _) = t.delete(&t.core(&format!("Calls/{live}.json"))).await;
    assert_eq!(s, 204);
    let (s, e) = t.get(&t.core(&format!("Calls/{live}.json"))).await;
    assert_eq!((s, code(&e)), (404, Some(20404)));
    let (s, e) = t.delete(&t.core(&format!("Calls/{live}.json"))).await;
    assert_eq!((s, code(&e)), (404, Some(20404)));
}

#[tokio::test]
async fn unauthenticated_requests_get_the_basic_challenge() {
    let t = common::start(1.0).await;
    for url in [t.core("Calls.json"), t.tr("Workspaces"), format!("{}/sandbox/state", t.url)] {
        let r = t.http.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let h = r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(h.as_deref(), Some(r#"Basic realm="Twilio API""#), "{url}");
        let (_, body) = common::read(r).await;
        assert_eq!(code(&body), Some(20003));
    }
    let r = t.http.get(t.core("Calls.json")).basic_auth(&t.sid, Some(&t.token)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("www-authenticate").is_none());
}

#[tokio::test]
async fn page_tokens_walk_without_repeats_or_gaps() {
    let t = common::start(1.0).await;
    let mut numbers = Vec::new();
    for i in 0..5 {
        let (s, n) = t.post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", &format!("+1415555020{i}"))]).await;
        assert_eq!(s, 201, "{n}");
        numbers.push(sid(&n));
    }
    let (_, p0) = t.get(&t.core("IncomingPhoneNumbers.json?PageSize=2")).await;
    assert_eq!(sids(&p0, "incoming_phone_numbers"), numbers[..2]);
    let next = p0["next_page_uri"].as_str().unwrap().to_owned();
    assert!(next.contains(&format!("PageToken=PA{}", numbers[1])), "{next}");
    assert!(next.contains("Page=1") && next.contains("PageSize=2"), "{next}");
    // Deleting an item already seen shifts offsets, not the token's place.
    assert_eq!(t.delete(&t.core(&format!("IncomingPhoneNumbers/{}.json", numbers[0]))).await.0, 204);
    let (_, p1) = t.get(&format!("{}{next}", t.url)).await;
    assert_eq!(sids(&p1, "incoming_phone_numbers"), numbers[2..4]);
    assert_eq!((p1["page"].as_u64(), p1["start"].as_u64(), p1["end"].as_u64()), (Some(1), Some(1), Some(2)));
    let prev = p1["previous_page_uri"].as_str().unwrap().to_owned();
    assert!(prev.contains(&format!("PageToken=PB{}", numbers[2])), "{prev}");
    let (_, back) = t.get(&format!("{}{prev}", t.url)).await;
    assert_eq!(sids(&back, "incoming_phone_numbers"), numbers[1..2]);
    let (_, p2) = t.get(&format!("{}{}", t.url, p1["next_page_uri"].as_str().unwrap())).await;
    assert_eq!(sids(&p2, "incoming_phone_numbers"), numbers[4..]);
    assert_eq!(p2["next_page_uri"], Value::Null);
    // Page and PageSize alone still page by number.
    let (_, p) = t.get(&t.core("IncomingPhoneNumbers.json?PageSize=2&Page=1")).await;
    assert_eq!(sids(&p, "incoming_phone_numbers"), numbers[3..5]);
    let (s, e) = t.get(&t.core("IncomingPhoneNumbers.json?PageToken=nonsense")).await;
    assert_eq!((s, code(&e)), (400, Some(20001)), "{e}");

    // TaskRouter's absolute next_page_url carries the token too.
    let (ws, _, _) = t.workspace(None).await;
    let mut workers = Vec::new();
    for i in 0..3 {
        let (_, w) = t.post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", &format!("w{i}"))]).await;
        workers.push(sid(&w));
    }
    let (_, p) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers?PageSize=2"))).await;
    let next = p["meta"]["next_page_url"].as_str().unwrap().to_owned();
    assert!(next.starts_with(&t.url) && next.contains(&format!("PageToken=PA{}", workers[1])), "{next}");
    let (_, p) = t.get(&next).await;
    assert_eq!(sids(&p, "workers"), workers[2..]);
}

#[tokio::test]
async fn page_size_is_checked_not_clamped() {
    let t = common::start(1.0).await;
    let (ws, _, _) = t.workspace(None).await;
    for bad in ["0", "1001", "abc", "-1"] {
        let (s, e) = t.get(&t.core(&format!("IncomingPhoneNumbers.json?PageSize={bad}"))).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "core PageSize={bad}: {e}");
        let (s, e) = t.get(&t.tr(&format!("Workspaces/{ws}/Activities?PageSize={bad}"))).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "TaskRouter PageSize={bad}: {e}");
    }
    let (s, e) = t.get(&t.core("Calls.json?Page=-1")).await;
    assert_eq!((s, code(&e)), (400, Some(20001)), "{e}");
    for good in ["1", "1000"] {
        let (s, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Activities?PageSize={good}"))).await;
        assert_eq!((s, l["meta"]["page_size"].as_u64()), (200, good.parse().ok()), "{l}");
    }
}

/// A workspace with queues `voice` (skill == "voice") and `all` (1==1), a
/// workflow routing `{"q":"voice"}` tasks to the first and the rest to the
/// second, and the workspace's activities: (ws, workflow, voice, all, available).
async fn routing(t: &T) -> (String, String, String, String, String) {
    let (ws, available, _) = t.workspace(None).await;
    let queue = |name: &'static str, target: &'static str| {
        let url = t.tr(&format!("Workspaces/{ws}/TaskQueues"));
        async move {
            let (s, q) = t.post(&url, &[("FriendlyName", name), ("TargetWorkers", target)]).await;
            assert_eq!(s, 201, "{q}");
            sid(&q)
        }
    };
    let voice = queue("voice", r#"skill == "voice""#).await;
    let all = queue("all", "1==1").await;
    let cfg = json!({"task_routing": {
        "filters": [{"filter_friendly_name": "voice", "expression": r#"q == "voice""#, "targets": [{"queue": voice}]}],
        "default_filter": {"queue": all},
    }})
    .to_string();
    let (s, wf) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Workflows")),
            &[("FriendlyName", "wf"), ("Configuration", &cfg), ("TaskReservationTimeout", "3600")],
        )
        .await;
    assert_eq!(s, 201, "{wf}");
    (ws, sid(&wf), voice, all, available)
}

/// How the server finds a callback's task by its caller and round: a nested
/// key, a number compared as a number, and `AND`, in any status.
#[tokio::test]
async fn tasks_by_nested_numeric_attributes_joined_with_and() {
    let t = common::start(1000.0).await;
    let (ws, wf, _, _, _) = routing(&t).await;
    let mut tasks = Vec::new();
    for (call, round) in [("CA01", json!(1)), ("CA01", json!(2)), ("CA02", json!(2)), ("CA01", json!("2"))] {
        let attrs = json!({ "call_sid": call, "callback": { "number": "+14155550100", "round": round } }).to_string();
        let (s, task) =
            t.post(&t.tr(&format!("Workspaces/{ws}/Tasks")), &[("WorkflowSid", &wf), ("Attributes", &attrs)]).await;
        assert_eq!(s, 201, "{task}");
        tasks.push(sid(&task));
    }
    // The second one ends: a look-up finds a task in any status.
    let (s, v) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Tasks/{}", tasks[1])),
            &[("AssignmentStatus", "canceled"), ("Reason", "test")],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let list = |expr: &str| {
        let q = serde_urlencoded::to_string([("EvaluateTaskAttributes", expr)]).unwrap();
        let url = t.tr(&format!("Workspaces/{ws}/Tasks?{q}"));
        let t = &t;
        async move {
            let (s, l) = t.get(&url).await;
            assert_eq!(s, 200, "{url}: {l}");
            sids(&l, "tasks")
        }
    };
    let pick = |idx: &[usize]| idx.iter().map(|&i| tasks[i].clone()).collect::<Vec<_>>();
    assert_eq!(list(r#"call_sid == "CA01" AND callback.round == 2"#).await, pick(&[1]));
    assert_eq!(list(r#"call_sid == 'CA01' and callback.round == 1"#).await, pick(&[0]));
    assert_eq!(list(r#"callback.round == 2"#).await, pick(&[1, 2]), "a string \"2\" is not the number 2");
    assert_eq!(list(r#"callback.round >= 1 AND call_sid == "CA01""#).await, pick(&[0, 1]));
    assert_eq!(list(r#"call_sid == "CA01" AND callback.round == 3"#).await, pick(&[]));
    assert_eq!(list(r#"callback.missing == 2"#).await, pick(&[]));
}

#[tokio::test]
async fn workers_by_the_queue_they_are_eligible_for() {
    let t = common::start(1.0).await;
    let (ws, _, voice, all, available) = routing(&t).await;
    let worker = |name: &'static str, attrs: &'static str| {
        let url = t.tr(&format!("Workspaces/{ws}/Workers"));
        let available = available.clone();
        let t = &t;
        async move {
            let (s, w) =
                t.post(&url, &[("FriendlyName", name), ("Attributes", attrs), ("ActivitySid", &available)]).await;
            assert_eq!(s, 201, "{w}");
            sid(&w)
        }
    };
    let speaker = worker("speaker", r#"{"skill":"voice"}"#).await;
    let texter = worker("texter", r#"{"skill":"sms"}"#).await;
    let list = |q: String| {
        let url = t.tr(&format!("Workspaces/{ws}/Workers?{q}"));
        let t = &t;
        async move {
            let (s, l) = t.get(&url).await;
            assert_eq!(s, 200, "{url}: {l}");
            sids(&l, "workers")
        }
    };
    assert_eq!(list(format!("TaskQueueSid={voice}")).await, vec![speaker.clone()]);
    assert_eq!(list("TaskQueueName=voice".into()).await, vec![speaker.clone()]);
    assert_eq!(list(format!("TaskQueueSid={all}")).await, vec![speaker.clone(), texter.clone()]);
    assert_eq!(list("TaskQueueName=all&FriendlyName=texter".into()).await, vec![texter.clone()]);
    assert_eq!(list("TaskQueueName=nosuchqueue".into()).await, Vec::<String>::new());
    assert_eq!(list("TaskQueueSid=WQ00000000000000000000000000000000".into()).await, Vec::<String>::new());

    // And the other way round: the queues a worker is eligible for.
    let (_, l) = t.get(&t.tr(&format!("Workspaces/{ws}/TaskQueues?WorkerSid={texter}"))).await;
    assert_eq!(sids(&l, "task_queues"), vec![all.clone()]);
    let (_, l) = t
        .get(&t.tr(&format!("Workspaces/{ws}/TaskQueues?EvaluateWorkerAttributes=%7B%22skill%22%3A%22voice%22%7D")))
        .await;
    assert_eq!(sids(&l, "task_queues"), vec![voice, all]);
}

#[tokio::test]
async fn available_takes_true_1_and_yes() {
    let t = common::start(1.0).await;
    let (ws, available, offline) = t.workspace(None).await;
    let (_, on) = t
        .post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "on"), ("ActivitySid", &available)])
        .await;
    let (_, off) =
        t.post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "off"), ("ActivitySid", &offline)]).await;
    for yes in ["true", "1", "yes", "YES", "True"] {
        let (s, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers?Available={yes}"))).await;
        assert_eq!((s, sids(&l, "workers")), (200, vec![sid(&on)]), "Available={yes}");
        let (s, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Activities?Available={yes}"))).await;
        assert_eq!(s, 200);
        assert!(l["activities"].as_array().unwrap().iter().all(|a| a["available"] == true), "{l}");
        assert_eq!(sids(&l, "activities"), vec![available.clone()]);
    }
    // Any other value lists the unavailable ones, as the spec says.
    for no in ["false", "0", "no", "maybe"] {
        let (s, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers?Available={no}"))).await;
        assert_eq!((s, sids(&l, "workers")), (200, vec![sid(&off)]), "Available={no}");
        let (_, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Activities?Available={no}"))).await;
        assert!(l["activities"].as_array().unwrap().iter().all(|a| a["available"] == false), "{l}");
        assert_eq!(l["activities"].as_array().unwrap().len(), 2, "Offline and Unavailable: {l}");
    }
}

#[tokio::test]
async fn tasks_by_priority_queue_name_and_ordering() {
    // Fast virtual time, so each task is created at a distinct virtual instant.
    let t = common::start(1000.0).await;
    let (ws, wf, _, _, _) = routing(&t).await;
    let mut tasks = Vec::new();
    for (q, priority) in [("voice", "5"), ("sms", "1"), ("voice", "5"), ("sms", "3"), ("voice", "0")] {
        let attrs = json!({ "q": q }).to_string();
        let (s, task) = t
            .post(
                &t.tr(&format!("Workspaces/{ws}/Tasks")),
                &[("WorkflowSid", &wf), ("Attributes", &attrs), ("Priority", priority)],
            )
            .await;
        assert_eq!(s, 201, "{task}");
        tasks.push(sid(&task));
    }
    let list = |q: &str| {
        let url = t.tr(&format!("Workspaces/{ws}/Tasks?{q}"));
        let t = &t;
        async move {
            let (s, l) = t.get(&url).await;
            assert_eq!(s, 200, "{url}: {l}");
            sids(&l, "tasks")
        }
    };
    let pick = |idx: &[usize]| idx.iter().map(|&i| tasks[i].clone()).collect::<Vec<_>>();
    assert_eq!(list("").await, pick(&[0, 1, 2, 3, 4]), "creation order by default");
    assert_eq!(list("Priority=5").await, pick(&[0, 2]));
    assert_eq!(list("Priority=0").await, pick(&[4]));
    assert_eq!(list("TaskQueueName=voice").await, pick(&[0, 2, 4]));
    assert_eq!(list("TaskQueueName=all&Priority=3").await, pick(&[3]));
    assert_eq!(list("TaskQueueName=none").await, pick(&[]));
    assert_eq!(list("WorkflowName=wf").await.len(), 5);
    assert_eq!(list("EvaluateTaskAttributes=q%20%3D%3D%20%22sms%22").await, pick(&[1, 3]));
    assert_eq!(list("Ordering=DateCreated:desc").await, pick(&[4, 3, 2, 1, 0]));
    assert_eq!(list("Ordering=DateCreated:asc").await, pick(&[0, 1, 2, 3, 4]));
    assert_eq!(list("Ordering=Priority:desc,DateCreated:asc").await, pick(&[0, 2, 3, 1, 4]));
    assert_eq!(list("Ordering=Priority:desc,DateCreated:desc").await, pick(&[2, 0, 3, 1, 4]));
    assert_eq!(list("Ordering=Priority:asc").await, pick(&[4, 1, 3, 0, 2]));
    assert_eq!(list("Ordering=Priority:desc&TaskQueueName=voice").await, pick(&[0, 2, 4]));
    for bad in
        ["Priority", "Priority:up", "Size:asc", "DateCreated:asc,VirtualStartTime:desc", "Priority:asc,Priority:desc"]
    {
        let (s, e) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks?Ordering={bad}"))).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "Ordering={bad}: {e}");
    }
    for bad in ["Priority=high", "AssignmentStatus=lost", "HasAddons=perhaps", "EvaluateTaskAttributes=q%20%3D%3D"] {
        let (s, e) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks?{bad}"))).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "{bad}: {e}");
    }
    assert_eq!(list("HasAddons=true").await, pick(&[]));
    assert_eq!(list("HasAddons=false").await.len(), 5);
}

#[tokio::test]
async fn reservations_by_worker_and_their_urls() {
    let t = common::start(1.0).await;
    let (ws, wf, _, _, available) = routing(&t).await;
    let mut workers = Vec::new();
    for name in ["first", "second"] {
        let (s, w) = t
            .post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", name), ("ActivitySid", &available)])
            .await;
        assert_eq!(s, 201, "{w}");
        workers.push(sid(&w));
    }
    let (_, task) = t.post(&t.tr(&format!("Workspaces/{ws}/Tasks")), &[("WorkflowSid", &wf)]).await;
    let wt = sid(&task);
    let by_task = t.tr(&format!("Workspaces/{ws}/Tasks/{wt}/Reservations"));
    let (_, l) = t.get(&by_task).await;
    let first = l["reservations"][0].clone();
    let (wr1, wk1) = (sid(&first), first["worker_sid"].as_str().unwrap().to_owned());
    let (s, r) = t.post(&format!("{by_task}/{wr1}"), &[("ReservationStatus", "rejected")]).await;
    assert_eq!((s, r["reservation_status"].as_str()), (200, Some("rejected")), "{r}");
    let (_, l) = t.get(&by_task).await;
    assert_eq!(l["reservations"].as_array().unwrap().len(), 2, "offered to the other worker: {l}");
    let wk2 = workers.iter().find(|w| **w != wk1).unwrap().clone();

    let (_, l) = t.get(&format!("{by_task}?WorkerSid={wk1}")).await;
    assert_eq!(sids(&l, "reservations"), vec![wr1.clone()]);
    let (_, l) = t.get(&format!("{by_task}?WorkerSid={wk2}")).await;
    let wr2 = sids(&l, "reservations");
    assert_eq!(wr2.len(), 1, "{l}");
    assert_ne!(wr2[0], wr1);
    let (_, l) = t.get(&format!("{by_task}?WorkerSid={wk2}&ReservationStatus=rejected")).await;
    assert_eq!(sids(&l, "reservations"), Vec::<String>::new());
    let (s, e) = t.get(&format!("{by_task}?ReservationStatus=lost")).await;
    assert_eq!((s, code(&e)), (400, Some(20001)), "{e}");

    // The url names the path the reservation was reached by.
    let base = t.tr(&format!("Workspaces/{ws}"));
    let (_, r) = t.get(&format!("{by_task}/{wr1}")).await;
    assert_eq!(r["url"], format!("{base}/Tasks/{wt}/Reservations/{wr1}"));
    let by_worker = format!("{base}/Workers/{wk1}/Reservations");
    let (_, r) = t.get(&format!("{by_worker}/{wr1}")).await;
    assert_eq!(r["url"], format!("{by_worker}/{wr1}"));
    assert_eq!(r["links"]["task"], format!("{base}/Tasks/{wt}"));
    assert_eq!(r["links"]["worker"], format!("{base}/Workers/{wk1}"));
    assert_eq!(r["links"]["workspace"], base);
    let (_, l) = t.get(&by_worker).await;
    assert_eq!(l["reservations"][0]["url"], format!("{by_worker}/{wr1}"));

    // Workspace, worker and task links carry what Twilio's examples show.
    let (_, w) = t.get(&base).await;
    for k in ["activities", "statistics", "real_time_statistics", "cumulative_statistics", "task_queues", "tasks"] {
        assert!(w["links"][k].is_string(), "workspace links lack {k}: {}", w["links"]);
    }
    for k in ["task_channels", "events", "workers", "workflows"] {
        assert_eq!(w["links"][k].as_str().map(|u| u.starts_with(&base)), Some(true), "{k}");
    }
    let (_, w) = t.get(&format!("{base}/Workers/{wk1}")).await;
    assert_eq!(w["links"]["activity"], format!("{base}/Activities/{}", w["activity_sid"].as_str().unwrap()));
    assert_eq!(w["links"]["workspace"], base);
    assert_eq!(w["links"]["worker_channels"], format!("{base}/Workers/{wk1}/Channels"));
    let (_, task) = t.get(&format!("{base}/Tasks/{wt}")).await;
    assert_eq!(task["links"]["workflow"], format!("{base}/Workflows/{wf}"));
    assert_eq!(task["links"]["task_queue"], format!("{base}/TaskQueues/{}", task["task_queue_sid"].as_str().unwrap()));
}

#[tokio::test]
async fn bad_enums_and_ranges_are_refused_and_not_stored() {
    let t = common::start(1.0).await;
    let (ws, wf, voice, _, _) = routing(&t).await;
    let queues = t.tr(&format!("Workspaces/{ws}/TaskQueues"));
    let count = |l: &Value| l["task_queues"].as_array().unwrap().len();
    let (_, before) = t.get(&queues).await;
    for form in [
        vec![("FriendlyName", "x"), ("TaskOrder", "RANDOM")],
        vec![("FriendlyName", "x"), ("TaskOrder", "fifo")],
        vec![("FriendlyName", "x"), ("MaxReservedWorkers", "0")],
        vec![("FriendlyName", "x"), ("MaxReservedWorkers", "51")],
    ] {
        let (s, e) = t.post(&queues, &form).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "{form:?}: {e}");
    }
    let (_, after) = t.get(&queues).await;
    assert_eq!(count(&after), count(&before), "no queue was created");
    let one = format!("{queues}/{voice}");
    for form in [vec![("TaskOrder", "LIFO "), ("FriendlyName", "renamed")], vec![("MaxReservedWorkers", "100")]] {
        let (s, e) = t.post(&one, &form).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "{form:?}: {e}");
    }
    let (_, q) = t.get(&one).await;
    assert_eq!(
        (q["task_order"].as_str(), q["max_reserved_workers"].as_u64(), q["friendly_name"].as_str()),
        (Some("FIFO"), Some(1), Some("voice"))
    );
    let (s, q) = t.post(&one, &[("TaskOrder", "LIFO"), ("MaxReservedWorkers", "50")]).await;
    assert_eq!((s, q["task_order"].as_str(), q["max_reserved_workers"].as_u64()), (200, Some("LIFO"), Some(50)));

    let tasks = t.tr(&format!("Workspaces/{ws}/Tasks"));
    for form in [
        vec![("WorkflowSid", wf.as_str()), ("Priority", "-1")],
        vec![("WorkflowSid", wf.as_str()), ("Priority", "2147483648")],
        vec![("WorkflowSid", wf.as_str()), ("Timeout", "1209601")],
        vec![("WorkflowSid", wf.as_str()), ("Timeout", "0")],
    ] {
        let (s, e) = t.post(&tasks, &form).await;
        assert_eq!((s, code(&e)), (400, Some(20001)), "{form:?}: {e}");
    }
    let (_, l) = t.get(&tasks).await;
    assert_eq!(l["tasks"].as_array().unwrap().len(), 0, "no task was created");
    let (s, task) = t.post(&tasks, &[("WorkflowSid", &wf), ("Priority", "2147483647"), ("Timeout", "1209600")]).await;
    assert_eq!((s, task["timeout"].as_u64(), task["priority"].as_u64()), (201, Some(1_209_600), Some(2_147_483_647)));
    let one = format!("{tasks}/{}", sid(&task));
    let (s, e) = t.post(&one, &[("Priority", "-5")]).await;
    assert_eq!((s, code(&e)), (400, Some(20001)), "{e}");
    let (_, task) = t.get(&one).await;
    assert_eq!(task["priority"].as_u64(), Some(2_147_483_647));
}

/// TaskRouter's "Channel Capacity per Worker" limit (50, its resource limits
/// page): a voice channel takes 50 and refuses 51 with Twilio's error body,
/// keeping what it had.
#[tokio::test]
async fn a_worker_channel_holds_at_most_fifty_tasks() {
    let t = common::start(1.0).await;
    let (ws, _, _, _, available) = routing(&t).await;
    let (s, w) = t
        .post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "desk"), ("ActivitySid", &available)])
        .await;
    assert_eq!(s, 201, "{w}");
    let voice = t.tr(&format!("Workspaces/{ws}/Workers/{}/Channels/voice", sid(&w)));
    let (s, ch) = t.post(&voice, &[("Capacity", "50")]).await;
    assert_eq!((s, ch["configured_capacity"].as_u64()), (200, Some(50)), "{ch}");
    let (s, e) = t.post(&voice, &[("Capacity", "51")]).await;
    assert_eq!((s, code(&e), e["status"].as_u64()), (400, Some(20001), Some(400)), "{e}");
    assert_eq!(e["message"], "Capacity must be between 0 and 50");
    assert_eq!(e["more_info"], "https://www.twilio.com/docs/errors/20001");
    let (_, ch) = t.get(&voice).await;
    assert_eq!(ch["configured_capacity"].as_u64(), Some(50), "the refused update changed nothing");
}

#[tokio::test]
async fn incoming_numbers_store_every_setting() {
    let t = common::start(1.0).await;
    let numbers = t.core("IncomingPhoneNumbers.json");
    let (s, n) = t.post(&numbers, &[("PhoneNumber", NUMBER), ("VoiceUrl", "http://x/in")]).await;
    assert_eq!(s, 201, "{n}");
    assert_eq!((n["voice_fallback_url"].clone(), n["voice_fallback_method"].as_str()), (Value::Null, Some("POST")));
    assert_eq!((n["sms_url"].as_str(), n["emergency_status"].as_str()), (Some(""), Some("Inactive")));
    let url = t.core(&format!("IncomingPhoneNumbers/{}.json", sid(&n)));
    let settings = [
        ("VoiceFallbackUrl", "voice_fallback_url", "http://x/fallback"),
        ("VoiceFallbackMethod", "voice_fallback_method", "GET"),
        ("SmsUrl", "sms_url", "http://x/sms"),
        ("SmsMethod", "sms_method", "GET"),
        ("SmsFallbackUrl", "sms_fallback_url", "http://x/sms-fallback"),
        ("SmsFallbackMethod", "sms_fallback_method", "GET"),
        ("StatusCallback", "status_callback", "http://x/status"),
        ("StatusCallbackMethod", "status_callback_method", "GET"),
        ("VoiceReceiveMode", "voice_receive_mode", "fax"),
        ("ApiVersion", "api_version", "2008-08-01"),
        ("EmergencyStatus", "emergency_status", "Active"),
        ("VoiceApplicationSid", "voice_application_sid", "AP0123456789abcdef0123456789abcdef"),
        ("SmsApplicationSid", "sms_application_sid", "AP0123456789abcdef0123456789abcdee"),
        ("TrunkSid", "trunk_sid", "TK0123456789abcdef0123456789abcdef"),
        ("IdentitySid", "identity_sid", "RI0123456789abcdef0123456789abcdef"),
        ("AddressSid", "address_sid", "AD0123456789abcdef0123456789abcdef"),
        ("BundleSid", "bundle_sid", "BU0123456789abcdef0123456789abcdef"),
        ("EmergencyAddressSid", "emergency_address_sid", "AD0123456789abcdef0123456789abcdee"),
        ("FriendlyName", "friendly_name", "front desk"),
    ];
    let mut form: Vec<(&str, &str)> = settings.iter().map(|(p, _, v)| (*p, *v)).collect();
    form.push(("VoiceCallerIdLookup", "true"));
    let (s, n) = t.post(&url, &form).await;
    assert_eq!(s, 200, "{n}");
    let (_, fetched) = t.get(&url).await;
    for (param, field, value) in settings {
        assert_eq!(fetched[field].as_str(), Some(value), "{param} did not read back as {field}: {fetched}");
        assert_eq!(n[field], fetched[field], "{field}");
    }
    assert_eq!(fetched["voice_caller_id_lookup"], true);
    assert_eq!(fetched["emergency_address_status"], "registered");
    assert_eq!(fetched["voice_url"], "http://x/in", "untouched settings stay");

    // Each bad value is refused with Twilio's code, and nothing is stored.
    for (param, value, want) in [
        ("VoiceFallbackUrl", "not a url", 21502),
        ("SmsUrl", "ftp://x", 21502),
        ("VoiceFallbackMethod", "PUT", 21503),
        ("SmsMethod", "DELETE", 21503),
        ("VoiceReceiveMode", "video", 20001),
        ("EmergencyStatus", "active", 20001),
        ("TrunkSid", "TK123", 20001),
        ("VoiceCallerIdLookup", "perhaps", 20001),
    ] {
        let (s, e) = t.post(&url, &[(param, value), ("FriendlyName", "changed")]).await;
        assert_eq!((s, code(&e)), (400, Some(want)), "{param}={value}: {e}");
    }
    let (_, again) = t.get(&url).await;
    assert_eq!(again, fetched, "a refused update changed nothing");
    let (s, e) = t.post(&numbers, &[("PhoneNumber", "+14155550111"), ("SmsFallbackMethod", "PATCH")]).await;
    assert_eq!((s, code(&e)), (400, Some(21503)), "{e}");
    let (_, l) = t.get(&numbers).await;
    assert_eq!(l["incoming_phone_numbers"].as_array().unwrap().len(), 1, "no number was bought");

    // An empty URL clears the setting.
    let (_, n) = t.post(&url, &[("VoiceFallbackUrl", ""), ("SmsUrl", "")]).await;
    assert_eq!((n["voice_fallback_url"].clone(), n["sms_url"].as_str()), (Value::Null, Some("")));
    let (_, l) = t.get(&t.core("IncomingPhoneNumbers.json?Origin=hosted")).await;
    assert_eq!(l["incoming_phone_numbers"].as_array().unwrap().len(), 0);
}
