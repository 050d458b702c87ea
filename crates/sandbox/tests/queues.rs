//! Queues and dials over HTTP against a small TwiML app: named `<Enqueue>`
//! queues and `<Dial><Queue>`, `<Queue url>`, `<Number url>` whispers, a
//! reservation's `Instruction=redirect`, and what a canceled task does (and
//! does not do) to the caller it was created for.

mod common;

use std::sync::{Arc, Mutex};

use common::{Hits, T, call, twiml, wait_end};
use serde_json::{Value, json};

const NUMBER: &str = "+14155550100";
const CALLER: &str = "+14155550999";
const CALLER_2: &str = "+14155550998";
const AGENT: &str = "+14155550123";
const SCREENED: &str = "+14155550177";

async fn summary(t: &T, sid: &str) -> Value {
    t.get(&format!("{}/sandbox/calls/{sid}", t.url)).await.1
}

/// Requests to `path` made for the call `sid`.
fn hits_for(hits: &Hits, path: &str, sid: &str) -> Vec<common::Hit> {
    common::hits_at(hits, path).into_iter().filter(|h| h.params.get("CallSid") == Some(sid)).collect()
}

async fn wait_for_hits(hits: &Hits, path: &str, sid: &str, n: usize) {
    common::until(5000, || (hits_for(hits, path, sid).len() >= n).then_some(()))
        .await
        .unwrap_or_else(|| panic!("{path} was not requested {n} times for {sid}"));
}

/// Places a call from NUMBER to `to` that runs `/agent` when answered.
async fn outbound(t: &T, base: &str, to: &str) -> String {
    let (s, c) =
        t.post(&t.core("Calls.json"), &[("To", to), ("From", NUMBER), ("Url", &format!("{base}/agent"))]).await;
    assert_eq!(s, 201, "{c}");
    c["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn named_queue_enqueue_and_dial_queue_bridge_oldest_first() {
    // At 100 virtual seconds a real one, a busy machine's scheduling delays stay well under the talk time checked.
    let (t, base, hits) = with_app_at(100.0, |path, _| match path {
        "/in" => twiml(r#"<Enqueue waitUrl="/hold" action="/qaction">support</Enqueue>"#),
        "/hold" => twiml("<Say>please hold</Say>"),
        "/qaction" => twiml("<Say>bye</Say>"),
        "/agent" => twiml(r#"<Dial action="/dialaction"><Queue url="/connecting">support</Queue></Dial>"#),
        "/connecting" => twiml("<Say>you are being connected</Say>"),
        _ => (204, String::new()),
    })
    .await;
    t.put_json(&format!("{}/sandbox/phones/{AGENT}", t.url), json!({"behaviour": "person", "talk_secs": 20})).await;
    let first = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 600})).await;
    wait_for_hits(&hits, "/hold", &first, 1).await;
    let second = call(&t, json!({"from": CALLER_2, "to": NUMBER, "patience_secs": 120})).await;
    wait_for_hits(&hits, "/hold", &second, 1).await;
    // The queue is made on first use; both wait in it, in order.
    let hold = hits_for(&hits, "/hold", &second).remove(0);
    let queue_sid = hold.params.get("QueueSid").unwrap().to_owned();
    assert!(queue_sid.starts_with("QU"), "{queue_sid}");
    assert_eq!(hits_for(&hits, "/hold", &first)[0].params.get("QueueSid"), Some(queue_sid.as_str()));
    assert_eq!((hold.params.get("QueuePosition"), hold.params.get("CurrentQueueSize")), (Some("2"), Some("2")));

    // An agent's leg dials the queue: the oldest caller hears <Queue url>, then is bridged.
    let agent = outbound(&t, &base, AGENT).await;
    let v = wait_end(&t, &first).await;
    assert_eq!(v["queue_result"], "bridged", "{v}");
    assert_eq!(v["linked_leg"].as_str(), Some(agent.as_str()));
    let talk = v["talk_ms"].as_u64().unwrap();
    // The 20 s conversation starts once the caller has heard the <Queue url>.
    assert!((19_000..=28_000).contains(&talk), "{talk}: {v}");
    let connecting = hits_for(&hits, "/connecting", &first);
    assert_eq!(connecting.len(), 1, "the <Queue url> runs on the dequeued caller");
    assert_eq!(connecting[0].params.get("DequeingCallSid"), Some(agent.as_str()));
    assert_eq!(connecting[0].params.get("QueueSid"), Some(queue_sid.as_str()));
    assert!(connecting[0].params.get("QueueTime").is_some());
    let qa = hits_for(&hits, "/qaction", &first).remove(0);
    assert_eq!((qa.params.get("QueueResult"), qa.params.get("QueueSid")), (Some("bridged"), Some(queue_sid.as_str())));
    let da = hits_for(&hits, "/dialaction", &agent).remove(0);
    assert_eq!(da.params.get("DialCallStatus"), Some("completed"));
    assert_eq!(da.params.get("DialCallSid"), Some(first.as_str()));
    assert_eq!(da.params.get("DialBridged"), Some("true"));

    // The second caller was not taken: it is still queued, now first in line.
    assert_eq!(summary(&t, &second).await["final"], false);
    let n = hits_for(&hits, "/hold", &second).len();
    wait_for_hits(&hits, "/hold", &second, n + 1).await;
    assert_eq!(hits_for(&hits, "/hold", &second).pop().unwrap().params.get("QueuePosition"), Some("1"));
    let v = wait_end(&t, &second).await;
    assert_eq!(v["queue_result"], "hangup");
    assert!(hits_for(&hits, "/connecting", &second).is_empty());
}

#[tokio::test]
async fn dial_queue_fails_without_the_queue_and_times_out_on_an_empty_one() {
    let mode = Arc::new(Mutex::new("enqueue"));
    let m = mode.clone();
    let (t, base, hits) = with_app_at(100.0, move |path, _| match (path, *m.lock().unwrap()) {
        ("/in", _) => twiml(r#"<Enqueue action="/qaction">sales</Enqueue>"#),
        ("/qaction", _) => twiml("<Hangup/>"),
        ("/agent", "missing") => twiml(r#"<Dial action="/dialaction"><Queue>nobody</Queue></Dial>"#),
        ("/agent", _) => twiml(r#"<Dial action="/dialaction" timeout="10"><Queue>sales</Queue></Dial>"#),
        _ => (204, String::new()),
    })
    .await;
    *mode.lock().unwrap() = "missing";
    let agent = outbound(&t, &base, AGENT).await;
    wait_end(&t, &agent).await;
    assert_eq!(hits_for(&hits, "/dialaction", &agent)[0].params.get("DialCallStatus"), Some("failed"));

    // A caller makes the queue and leaves it (no waitUrl: silence until patience runs out).
    *mode.lock().unwrap() = "empty";
    let caller = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 5})).await;
    assert_eq!(wait_end(&t, &caller).await["queue_result"], "hangup");
    let agent = outbound(&t, &base, AGENT).await;
    let a = wait_end(&t, &agent).await;
    let da = hits_for(&hits, "/dialaction", &agent).remove(0);
    assert_eq!(da.params.get("DialCallStatus"), Some("no-answer"), "an empty queue is waited on until the timeout");
    let waited: u64 = da.params.get("DialCallDuration").unwrap().parse().unwrap();
    assert!((10..=20).contains(&waited), "{waited} s, {a}");
}

#[tokio::test]
async fn number_url_whisper_runs_on_the_answered_child_before_the_bridge() {
    let (t, _, hits) = with_app_at(1000.0, |path, p| match path {
        "/in" => twiml(&format!(r#"<Dial action="/da"><Number url="/whisper">{SCREENED}</Number></Dial>"#)),
        "/whisper" => {
            twiml(r#"<Gather numDigits="1" action="/screen" timeout="3"><Say>Press 1</Say></Gather><Hangup/>"#)
        }
        "/screen" if p.get("Digits") == Some("1") => twiml("<Say>connecting</Say>"),
        "/screen" => twiml("<Say>declined</Say><Hangup/>"),
        "/da" => twiml("<Hangup/>"),
        _ => (404, String::new()),
    })
    .await;
    // (phone's keypress, DialCallStatus, DialBridged)
    let cases = [(Some("1"), "completed", "true"), (Some("2"), "no-answer", "false"), (None, "no-answer", "false")];
    for (digits, want, bridged) in cases {
        t.put_json(
            &format!("{}/sandbox/phones/{SCREENED}", t.url),
            json!({"behaviour": "person", "talk_secs": 10, "digits": digits}),
        )
        .await;
        let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
        let v = wait_end(&t, &sid).await;
        let da = hits_for(&hits, "/da", &sid).remove(0);
        assert_eq!(da.params.get("DialCallStatus"), Some(want), "{digits:?}: {v}");
        assert_eq!(da.params.get("DialBridged"), Some(bridged), "{digits:?}");
        let child = da.params.get("DialCallSid").unwrap().to_owned();
        // The whisper ran on the child leg, with the child's parameters.
        let w = hits_for(&hits, "/whisper", &child).remove(0);
        assert!(w.signed);
        assert_eq!(w.params.get("ParentCallSid"), Some(sid.as_str()));
        assert_eq!((w.params.get("To"), w.params.get("Direction")), (Some(SCREENED), Some("outbound-dial")));
        assert_eq!(w.params.get("CallStatus"), Some("in-progress"));
        assert!(hits_for(&hits, "/whisper", &sid).is_empty(), "nothing ran on the caller's leg");
        let screened = hits_for(&hits, "/screen", &child);
        assert_eq!(screened.first().and_then(|h| h.params.get("Digits")), digits);
        let c = summary(&t, &child).await;
        assert_eq!(c["status"], "completed");
        if want == "completed" {
            // The bridge starts only after the whisper: prompt, keypress and "connecting".
            let answered = c["answered_ms"].as_u64().unwrap();
            let bridged_at = v["bridge_start_ms"].as_u64().unwrap();
            assert!(bridged_at >= answered + 3_000, "bridged {bridged_at} answered {answered}");
            assert_eq!(v["linked_leg"].as_str(), Some(child.as_str()));
        } else {
            assert_eq!(v["bridge_start_ms"], Value::Null, "{v}");
        }
    }
}

/// A workspace with one worker; returns (workspace, workflow, worker, offline activity).
async fn taskrouter(t: &T, events: &str, worker_available: bool) -> (String, String, String, String) {
    let (ws, available, offline) = t.workspace(Some(events)).await;
    let (_, q) = t.post(&t.tr(&format!("Workspaces/{ws}/TaskQueues")), &[("FriendlyName", "q")]).await;
    let q = q["sid"].as_str().unwrap();
    let cfg = format!(r#"{{"task_routing":{{"filters":[],"default_filter":{{"queue":"{q}"}}}}}}"#);
    let (_, wf) =
        t.post(&t.tr(&format!("Workspaces/{ws}/Workflows")), &[("FriendlyName", "wf"), ("Configuration", &cfg)]).await;
    let activity = if worker_available { &available } else { &offline };
    let (_, w) =
        t.post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "loc"), ("ActivitySid", activity)]).await;
    (ws, wf["sid"].as_str().unwrap().to_owned(), w["sid"].as_str().unwrap().to_owned(), offline)
}

#[tokio::test]
async fn a_canceled_task_leaves_its_caller_in_the_queue() {
    // Twilio's TaskRouter docs ("Timeout evaluation"): a canceled voice task's call
    // "remains active"; the application must move the call itself.
    let wf = Arc::new(Mutex::new(String::new()));
    let w = wf.clone();
    let (t, base, hits) = with_app_at(1000.0, move |path, _| match path {
        "/in" => twiml(&format!(r#"<Enqueue workflowSid="{}" waitUrl="/hold" action="/qaction"/>"#, w.lock().unwrap())),
        "/hold" => twiml("<Say>hold on</Say>"),
        "/qaction" => twiml("<Say>bye</Say>"),
        _ => (204, String::new()),
    })
    .await;
    let (ws, wfsid, _, _) = taskrouter(&t, &format!("{base}/events"), false).await;
    *wf.lock().unwrap() = wfsid;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 90})).await;
    wait_for_hits(&hits, "/hold", &sid, 1).await;
    let task = summary(&t, &sid).await["task_sid"].as_str().unwrap().to_owned();
    let (s, v) = t
        .post(&t.tr(&format!("Workspaces/{ws}/Tasks/{task}")), &[("AssignmentStatus", "canceled"), ("Reason", "x")])
        .await;
    assert_eq!((s, v["assignment_status"].as_str()), (200, Some("canceled")));
    let holds = hits_for(&hits, "/hold", &sid).len();
    wait_for_hits(&hits, "/hold", &sid, holds + 2).await;
    assert!(hits_for(&hits, "/qaction", &sid).is_empty(), "canceling the task did not dequeue the caller");
    assert_eq!(summary(&t, &sid).await["final"], false);
    // Deleting it does not either; the caller waits until it gives up.
    let (s, _) = t.delete(&t.tr(&format!("Workspaces/{ws}/Tasks/{task}"))).await;
    assert_eq!(s, 204);
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["queue_result"], "hangup");
    let qa = hits_for(&hits, "/qaction", &sid);
    assert_eq!(qa.len(), 1);
    assert_eq!(qa[0].params.get("QueueResult"), Some("hangup"));
}

/// (sandbox URL, account SID, auth token, app base URL), for the app's own REST calls.
type AppCtx = (String, String, String, String);

#[tokio::test]
async fn instruction_redirect_accepts_and_moves_the_queued_call() {
    let wf = Arc::new(Mutex::new(String::new()));
    let ctx: Arc<Mutex<Option<AppCtx>>> = Arc::default();
    let (w, c) = (wf.clone(), ctx.clone());
    let (t, base, hits) = with_app_at(1000.0, move |path, p| match path {
        "/in" => twiml(&format!(r#"<Enqueue workflowSid="{}" waitUrl="/hold" action="/qaction"/>"#, w.lock().unwrap())),
        "/hold" => twiml("<Say>hold on</Say>"),
        "/qaction" => twiml("<Say>ignored</Say>"),
        "/elsewhere" => twiml("<Say>moved</Say>"),
        "/events" if p.get("EventType") == Some("reservation.created") => {
            let (url, sid, token, base) = c.lock().unwrap().clone().unwrap();
            let (ws, task, res) = (p.get("WorkspaceSid"), p.get("TaskSid"), p.get("ReservationSid"));
            let res_url =
                format!("{url}/v1/Workspaces/{}/Tasks/{}/Reservations/{}", ws.unwrap(), task.unwrap(), res.unwrap());
            let call_sid = serde_json::from_str::<Value>(p.get("TaskAttributes").unwrap()).unwrap()["call_sid"]
                .as_str()
                .unwrap()
                .to_owned();
            tokio::spawn(async move {
                let form = [
                    ("Instruction", "redirect"),
                    ("RedirectCallSid", call_sid.as_str()),
                    ("RedirectUrl", &format!("{base}/elsewhere")),
                    ("RedirectAccept", "true"),
                ];
                let r = reqwest::Client::new().post(res_url).basic_auth(&sid, Some(&token)).form(&form).send().await;
                assert_eq!(r.unwrap().status().as_u16(), 200);
            });
            (204, String::new())
        }
        _ => (204, String::new()),
    })
    .await;
    *ctx.lock().unwrap() = Some((t.url.clone(), t.sid.clone(), t.token.clone(), base.clone()));
    let (ws, wfsid, _, _) = taskrouter(&t, &format!("{base}/events"), true).await;
    *wf.lock().unwrap() = wfsid;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 600})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["queue_result"], "redirected", "{v}");
    assert_eq!(hits_for(&hits, "/elsewhere", &sid).len(), 1);
    let task = v["task_sid"].as_str().unwrap();
    let (_, tv) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks/{task}"))).await;
    assert_eq!(tv["assignment_status"], "assigned", "RedirectAccept accepted the reservation");
    let (_, rv) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks/{task}/Reservations"))).await;
    assert_eq!(rv["reservations"][0]["reservation_status"], "accepted");
}

async fn with_app_at(
    scale: f64,
    app: impl Fn(&str, &twilio::Params) -> (u16, String) + Send + Sync + 'static,
) -> (T, String, Hits) {
    common::with_app(scale, NUMBER, app).await
}

#[tokio::test]
async fn a_gather_in_the_wait_url_posts_its_digits_and_runs_the_answer_in_the_queue() {
    let (t, _, hits) = with_app_at(100.0, |path, p| match path {
        "/in" => twiml(r#"<Enqueue waitUrl="/hold" action="/qaction">support</Enqueue>"#),
        "/hold" => twiml(r#"<Gather numDigits="1" action="/choice" timeout="2"><Say>press 1 to leave</Say></Gather>"#),
        "/choice" if p.get("Digits") == Some("1") => twiml("<Say>leaving</Say><Leave/>"),
        "/choice" => twiml("<Say>staying</Say>"),
        "/qaction" => twiml("<Hangup/>"),
        _ => (204, String::new()),
    })
    .await;
    // Presses 7 at the first hold Gather, 1 at the second; a third Gather finds no key.
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "digits": "7,1", "patience_secs": 600})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["queue_result"], "leave", "{v}");
    let choices = hits_for(&hits, "/choice", &sid);
    let digits: Vec<_> = choices.iter().map(|h| h.params.get("Digits").unwrap_or_default().to_owned()).collect();
    assert_eq!(digits, ["7", "1"]);
    // The action is fetched from the queue: it carries the queue's parameters.
    assert!(choices.iter().all(|h| h.params.get("QueueSid").is_some_and(|q| q.starts_with("QU"))), "{choices:?}");
    // After "staying" the waitUrl loop went on: a second /hold was fetched before the 1.
    assert_eq!(hits_for(&hits, "/hold", &sid).len(), 2);
    let heard: Vec<_> = v["heard"].as_array().unwrap().iter().map(|h| h["what"].as_str().unwrap().to_owned()).collect();
    assert_eq!(heard, ["press 1 to leave", "staying", "press 1 to leave", "leaving"]);
}

#[tokio::test]
async fn a_gather_in_the_wait_url_without_a_key_waits_its_timeout_and_the_loop_goes_on() {
    let (t, _, hits) = with_app_at(100.0, |path, _| match path {
        "/in" => twiml(r#"<Enqueue waitUrl="/hold" action="/qaction">support</Enqueue>"#),
        "/hold" => twiml(r#"<Gather numDigits="1" action="/choice" timeout="5"><Say>press 1</Say></Gather>"#),
        "/qaction" => twiml("<Hangup/>"),
        _ => (204, String::new()),
    })
    .await;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 20})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["queue_result"], "hangup", "{v}");
    assert!(hits_for(&hits, "/choice", &sid).is_empty());
    // Each poll: the prompt (1 s) and the 5 s timeout, so about 3 polls in 20 s, not 20.
    let polls = hits_for(&hits, "/hold", &sid).len();
    assert!((3..=4).contains(&polls), "{polls}");
}
