//! Call legs over HTTP: every TwiML verb against a small TwiML app, the
//! Enqueue → reservation → Dial Queue bridge, simulated phones and callers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Hits, T, call, twiml, wait_end};
use serde_json::{Value, json};

const NUMBER: &str = "+14155550100";
const CALLER: &str = "+14155550999";
const AGENT: &str = "+14155550123";

#[tokio::test]
async fn say_play_pause_gather_redirect_hangup() {
    let (t, _, hits) = with_app_at(1000.0, |path, _| match path {
        "/in" => twiml(r#"<Say>Welcome</Say><Play>http://x/a.mp3</Play><Pause length="2"/><Gather numDigits="1" action="/digits" timeout="3"><Say>Press one</Say></Gather><Say>nothing</Say><Redirect>/after</Redirect>"#),
        "/digits" => twiml("<Redirect>/after</Redirect>"),
        "/after" => twiml("<Say>bye</Say><Hangup/><Say>never</Say>"),
        _ => (404, String::new()),
    })
    .await;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "digits": "1"})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["direction"], "inbound");
    let first = &common::hits_at(&hits, "/in")[0];
    assert!(first.signed);
    assert_eq!(first.params.get("CallStatus"), Some("ringing"));
    assert_eq!(first.params.get("CallSid"), Some(sid.as_str()));
    assert_eq!(first.params.get("From"), Some(CALLER));
    assert_eq!(first.params.get("Direction"), Some("inbound"));
    assert!(first.params.get("CallToken").is_some());
    let d = &common::hits_at(&hits, "/digits")[0];
    assert_eq!(d.params.get("Digits"), Some("1"));
    assert_eq!(d.params.get("CallStatus"), Some("in-progress"));
    assert_eq!(common::hits_at(&hits, "/after").len(), 1);
    // Say (1 s) + Play (10 s) + Pause (2 s) + prompt (1 s) + keys (1 s) + bye (1 s), at least.
    let dur = v["end_ms"].as_u64().unwrap() - v["start_ms"].as_u64().unwrap();
    assert!(dur >= 16_000, "{dur}");

    // Without digits, Gather falls through to the next verb.
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    wait_end(&t, &sid).await;
    assert_eq!(common::hits_at(&hits, "/digits").len(), 1);
    assert_eq!(common::hits_at(&hits, "/after").len(), 2);
}

#[tokio::test]
async fn the_summary_says_what_the_caller_heard_and_when() {
    let (t, _, _) = with_app_at(1000.0, |path, _| match path {
        "/in" => twiml(r#"<Say>You are caller number three.</Say><Play>http://x/calm.mp3</Play><Gather numDigits="1" timeout="1"><Say>Press one</Say></Gather><Say>bye</Say>"#),
        _ => (404, String::new()),
    })
    .await;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    let heard: Vec<(&str, &str)> = v["heard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["verb"].as_str().unwrap(), h["what"].as_str().unwrap()))
        .collect();
    assert_eq!(
        heard,
        [("say", "You are caller number three."), ("play", "http://x/calm.mp3"), ("say", "Press one"), ("say", "bye")]
    );
    // Speaking takes time: 29 characters at about 15 a second, then a 10 s clip.
    let at: Vec<u64> = v["heard"].as_array().unwrap().iter().map(|h| h["at_ms"].as_u64().unwrap()).collect();
    assert!(at[1] - at[0] >= 1_900, "{at:?}");
    assert!(at[2] - at[1] >= 10_000, "{at:?}");
}

#[tokio::test]
async fn the_summary_says_in_which_language_and_voice_each_say_was_heard() {
    let (t, _, _) = with_app_at(1000.0, |path, _| match path {
        "/in" => twiml(
            r#"<Say language="es-MX" voice="Polly.Mia">Hola.</Say><Gather numDigits="1" timeout="1"><Say language="en-US">Press one</Say></Gather><Say>bye</Say><Play>http://x/a.mp3</Play>"#,
        ),
        _ => (404, String::new()),
    })
    .await;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    let heard: Vec<(Value, Value, Value)> = v["heard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["what"].clone(), h["language"].clone(), h["voice"].clone()))
        .collect();
    assert_eq!(
        heard,
        [
            (json!("Hola."), json!("es-MX"), json!("Polly.Mia")),
            (json!("Press one"), json!("en-US"), Value::Null),
            (json!("bye"), Value::Null, Value::Null),
            (json!("http://x/a.mp3"), Value::Null, Value::Null),
        ]
    );
    // A play has no language or voice at all.
    assert!(v["heard"][3].get("language").is_none(), "{}", v["heard"][3]);
}

#[tokio::test]
async fn reject_record_and_bad_documents() {
    let mode = Arc::new(Mutex::new("reject"));
    let m = mode.clone();
    let (t, _, hits) = with_app_at(1000.0, move |path, _| match (path, *m.lock().unwrap()) {
        ("/in", "reject") => twiml(r#"<Reject reason="busy"/>"#),
        ("/in", "record") => twiml(r#"<Say>leave a message</Say><Record maxLength="3" action="/rec"/>"#),
        ("/in", "bad") => twiml("<Dance/>"),
        ("/in", "500") => (500, "oops".into()),
        ("/in", _) => twiml("<Say>fine</Say>"),
        ("/rec", _) => twiml("<Hangup/>"),
        _ => (404, String::new()),
    })
    .await;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["status"], "busy");
    assert_eq!(v["answered_ms"], Value::Null, "a rejected call is never answered");

    *mode.lock().unwrap() = "record";
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    let rec = &common::hits_at(&hits, "/rec")[0];
    assert_eq!(rec.params.get("RecordingDuration"), Some("3"));
    assert!(rec.params.get("RecordingSid").unwrap().starts_with("RE"));
    let url = rec.params.get("RecordingUrl").unwrap().to_owned();
    assert_eq!(v["recording_url"].as_str(), Some(url.as_str()));
    let (s, r) = t.get(&format!("{url}.json")).await;
    assert_eq!((s, r["call_sid"].as_str()), (200, Some(sid.as_str())));

    *mode.lock().unwrap() = "bad";
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["error_code"], 12100, "{v}");
    // Like Twilio, the caller is answered to hear the application-error announcement.
    assert_eq!(v["status"], "completed");
    assert_ne!(v["answered_ms"], Value::Null);
    assert!(v.to_string().contains("said: We are sorry, an application error has occurred"), "{v}");

    *mode.lock().unwrap() = "500";
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    assert_eq!(wait_end(&t, &sid).await["error_code"], 11200);

    // The sandbox goes on.
    *mode.lock().unwrap() = "ok";
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["status"], "completed");
    assert_eq!(v["error_code"], Value::Null);
}

#[tokio::test]
async fn a_redirect_loop_fails_but_a_document_that_plays_before_redirecting_runs_on() {
    let music = Arc::new(Mutex::new(false));
    let m = music.clone();
    let (t, _, hits) = with_app_at(1000.0, move |path, _| match (path, *m.lock().unwrap()) {
        ("/in", false) => twiml("<Redirect>/in</Redirect>"),
        ("/in", true) => twiml("<Play>http://x/hold.mp3</Play><Redirect>/in</Redirect>"),
        _ => (404, String::new()),
    })
    .await;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["error_code"], 11200, "{v}");
    assert!(v.to_string().contains("more than 100 TwiML documents"), "{v}");
    assert_eq!(common::hits_at(&hits, "/in").len(), 100);

    // 10 virtual seconds of music between fetches: a caller on hold, not a loop.
    *music.lock().unwrap() = true;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 3600})).await;
    let polls =
        || common::hits_at(&hits, "/in").iter().filter(|h| h.params.get("CallSid") == Some(sid.as_str())).count();
    for _ in 0..2000 {
        if polls() > 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(polls() > 150, "{}", polls());
    let (_, c) = t.get(&t.core(&format!("Calls/{sid}.json"))).await;
    assert_eq!(c["status"], "in-progress", "{c}");
    let (s, _) = t.post(&t.core(&format!("Calls/{sid}.json")), &[("Status", "completed")]).await;
    assert_eq!(s, 200);
}

/// A workspace, queue, workflow and one available worker; returns the workflow SID.
async fn taskrouter(t: &T, events: &str) -> (String, String) {
    let (ws, available, _) = t.workspace(Some(events)).await;
    let (_, q) = t.post(&t.tr(&format!("Workspaces/{ws}/TaskQueues")), &[("FriendlyName", "q")]).await;
    let q = q["sid"].as_str().unwrap();
    let cfg = format!(r#"{{"task_routing":{{"filters":[],"default_filter":{{"queue":"{q}"}}}}}}"#);
    let (_, wf) =
        t.post(&t.tr(&format!("Workspaces/{ws}/Workflows")), &[("FriendlyName", "wf"), ("Configuration", &cfg)]).await;
    let (_, _) = t
        .post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "loc"), ("ActivitySid", &available)])
        .await;
    (ws, wf["sid"].as_str().unwrap().to_owned())
}

/// (sandbox URL, account SID, auth token, app base URL), for the app's own REST calls.
type AppCtx = (String, String, String, String);

#[tokio::test]
async fn enqueue_reservation_dial_queue_bridge() {
    let wf = Arc::new(Mutex::new(String::new()));
    let ctx: Arc<Mutex<Option<AppCtx>>> = Arc::default();
    let (w, c) = (wf.clone(), ctx.clone());
    let (t, base, hits) = with_app_at(200.0, move |path, p| {
        if path == "/in" {
            return twiml(&format!(
                r#"<Enqueue workflowSid="{}" waitUrl="/hold" action="/qaction"><Task>{{"location":"north"}}</Task></Enqueue>"#,
                w.lock().unwrap()
            ));
        }
        if path == "/hold" {
            return twiml(r#"<Play>http://x/music.mp3</Play>"#);
        }
        if path == "/qaction" {
            return twiml("<Say>thanks</Say>");
        }
        if path == "/events" && p.get("EventType") == Some("reservation.created") {
            // Dial the location as the server would: a REST call from the app.
            let (url, sid, token, base) = c.lock().unwrap().clone().unwrap();
            let res = p.get("ReservationSid").unwrap().to_owned();
            tokio::spawn(async move {
                let form = [
                    ("To", AGENT),
                    ("From", NUMBER),
                    ("Url", &format!("{base}/agent/{res}")),
                    ("StatusCallback", &format!("{base}/status")),
                    ("StatusCallbackEvent", "initiated"),
                    ("StatusCallbackEvent", "ringing"),
                    ("StatusCallbackEvent", "answered"),
                    ("StatusCallbackEvent", "completed"),
                    ("MachineDetection", "Enable"),
                ];
                let r = reqwest::Client::new()
                    .post(format!("{url}/2010-04-01/Accounts/{sid}/Calls.json"))
                    .basic_auth(&sid, Some(&token))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
            });
            return (204, String::new());
        }
        if let Some(res) = path.strip_prefix("/agent/") {
            assert_eq!(p.get("AnsweredBy"), Some("human"));
            return twiml(&format!(r#"<Dial action="/dialaction"><Queue reservationSid="{res}"/></Dial>"#));
        }
        (204, String::new())
    })
    .await;
    *ctx.lock().unwrap() = Some((t.url.clone(), t.sid.clone(), t.token.clone(), base.clone()));
    let (ws, wfsid) = taskrouter(&t, &format!("{base}/events")).await;
    *wf.lock().unwrap() = wfsid;
    t.put_json(
        &format!("{}/sandbox/phones/{AGENT}", t.url),
        json!({"behaviour": "person", "rings": 2, "talk_secs": 30}),
    )
    .await;

    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 600})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["queue_result"], "bridged", "{v}");
    let talk = v["talk_ms"].as_u64().unwrap();
    assert!((29_000..=36_000).contains(&talk), "{talk}");
    let agent = v["linked_leg"].as_str().unwrap().to_owned();
    let qa = &common::hits_at(&hits, "/qaction")[0];
    assert_eq!(qa.params.get("QueueResult"), Some("bridged"));
    assert!(qa.params.get("QueueSid").unwrap().starts_with("QU"));
    let hold = &common::hits_at(&hits, "/hold")[0];
    for k in ["QueuePosition", "QueueSid", "QueueTime", "AvgQueueTime", "CurrentQueueSize"] {
        assert!(hold.params.get(k).is_some(), "{k}");
    }
    let a = wait_end(&t, &agent).await;
    assert_eq!((a["direction"].as_str(), a["answered_by"].as_str()), (Some("outbound-api"), Some("human")));
    let statuses: Vec<String> =
        common::hits_at(&hits, "/status").iter().map(|h| h.params.get("CallStatus").unwrap().to_owned()).collect();
    assert_eq!(statuses, ["initiated", "ringing", "in-progress", "completed"]);
    let last = common::hits_at(&hits, "/status").pop().unwrap();
    assert_eq!(last.params.get("SequenceNumber"), Some("3"));
    assert_eq!(last.params.get("CallbackSource"), Some("call-progress-events"));
    assert!(last.signed);

    // The task wraps up; the events came in order.
    let task = v["task_sid"].as_str().unwrap();
    let (_, tv) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks/{task}"))).await;
    assert_eq!(tv["assignment_status"], "wrapping");
    let attrs: Value = serde_json::from_str(tv["attributes"].as_str().unwrap()).unwrap();
    assert_eq!((attrs["location"].as_str(), attrs["call_sid"].as_str()), (Some("north"), Some(sid.as_str())));
    let ev = common::until(2000, || {
        let e = common::event_types(&hits);
        e.contains(&"reservation.wrapup".to_owned()).then_some(e)
    })
    .await
    .unwrap();
    let pos = |n: &str| ev.iter().position(|e| e == n).unwrap_or_else(|| panic!("{n} in {ev:?}"));
    assert!(pos("task.created") < pos("reservation.created"));
    assert!(pos("reservation.created") < pos("reservation.accepted"));
    assert!(pos("reservation.accepted") < pos("task.wrapup"));
}

#[tokio::test]
async fn leave_patience_and_redirect_out_of_the_queue() {
    let wf = Arc::new(Mutex::new(String::new()));
    let leave = Arc::new(Mutex::new(false));
    let (w, l) = (wf.clone(), leave.clone());
    let (t, base, hits) = with_app_at(250.0, move |path, _| match path {
        "/in" => twiml(&format!(r#"<Enqueue workflowSid="{}" waitUrl="/hold" action="/qaction"/>"#, w.lock().unwrap())),
        "/hold" if *l.lock().unwrap() => twiml("<Leave/>"),
        "/hold" => twiml(r#"<Say>hold on</Say>"#),
        "/qaction" => twiml("<Say>left</Say>"),
        "/elsewhere" => twiml("<Say>moved</Say>"),
        _ => (204, String::new()),
    })
    .await;
    let (ws, wfsid) = taskrouter(&t, &format!("{base}/events")).await;
    *wf.lock().unwrap() = wfsid;
    // Make the only worker unavailable, so callers wait.
    let (_, workers) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers"))).await;
    let wk = workers["workers"][0]["sid"].as_str().unwrap().to_owned();
    let (_, acts) = t.get(&t.tr(&format!("Workspaces/{ws}/Activities?FriendlyName=Offline"))).await;
    let offline = acts["activities"][0]["sid"].as_str().unwrap().to_owned();
    t.post(&t.tr(&format!("Workspaces/{ws}/Workers/{wk}")), &[("ActivitySid", &offline)]).await;

    // Patience runs out: hangup.
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 30})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["queue_result"], "hangup");
    let qt = v["queue_wait_ms"].as_u64().unwrap();
    // Real HTTP time counts as virtual time too (4 ms = 1 virtual s here), so allow slack.
    assert!((15_000..=40_000).contains(&qt), "{qt}");
    let (_, tv) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks/{}", v["task_sid"].as_str().unwrap()))).await;
    assert_eq!(tv["assignment_status"], "canceled");
    assert_eq!(common::hits_at(&hits, "/qaction")[0].params.get("QueueResult"), Some("hangup"));

    // Redirect by the API while queued.
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER, "patience_secs": 6000})).await;
    common::until(2000, || (!common::hits_at(&hits, "/hold").is_empty()).then_some(())).await.unwrap();
    let (s, _) = t
        .post(&t.core(&format!("Calls/{sid}.json")), &[("Url", &format!("{base}/elsewhere")), ("Method", "POST")])
        .await;
    assert_eq!(s, 200);
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["queue_result"], "redirected");
    assert_eq!(common::hits_at(&hits, "/elsewhere").len(), 1);

    // <Leave/> from the waitUrl.
    *leave.lock().unwrap() = true;
    let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!(v["queue_result"], "leave");
    assert!(common::hits_at(&hits, "/qaction").iter().any(|h| h.params.get("QueueResult") == Some("leave")));
}

#[tokio::test]
async fn dial_number_rings_simulated_phones() {
    let (t, _, hits) = with_app_at(1000.0, |path, _| match path {
        "/in" => twiml(r#"<Dial action="/da" timeout="20"><Number>+14155550177</Number></Dial>"#),
        "/da" => twiml("<Hangup/>"),
        _ => (404, String::new()),
    })
    .await;
    for (behaviour, want) in [
        (json!({"behaviour": "person", "talk_secs": 5}), "completed"),
        (json!({"behaviour": "busy"}), "busy"),
        (json!({"behaviour": "no_answer"}), "no-answer"),
        (json!({"behaviour": "fail"}), "failed"),
    ] {
        t.put_json(&format!("{}/sandbox/phones/+14155550177", t.url), behaviour).await;
        let sid = call(&t, json!({"from": CALLER, "to": NUMBER})).await;
        wait_end(&t, &sid).await;
        let da = common::hits_at(&hits, "/da").pop().unwrap();
        assert_eq!(da.params.get("DialCallStatus"), Some(want));
        let child = da.params.get("DialCallSid").unwrap();
        let (_, c) = t.get(&t.core(&format!("Calls/{child}.json"))).await;
        assert_eq!(
            (c["parent_call_sid"].as_str(), c["direction"].as_str()),
            (Some(sid.as_str()), Some("outbound-dial"))
        );
    }
}

#[tokio::test]
async fn outbound_calls_to_simulated_phones() {
    let (t, base, hits) = with_app_at(1000.0, |path, _| match path {
        "/answer" => twiml("<Say>hello</Say>"),
        _ => (204, String::new()),
    })
    .await;
    let cases = [
        ("+14155550201", json!({"behaviour": "person", "rings": 2}), "completed", Some("human"), None),
        ("+14155550202", json!({"behaviour": "voicemail", "rings": 3}), "completed", Some("machine_start"), None),
        ("+14155550203", json!({"behaviour": "busy"}), "busy", None, Some("486")),
        ("+14155550204", json!({"behaviour": "no_answer"}), "no-answer", None, Some("480")),
        ("+14155550205", json!({"behaviour": "fail"}), "failed", None, Some("500")),
    ];
    for (to, behaviour, want, answered_by, sip) in cases {
        t.put_json(&format!("{}/sandbox/phones/{}", t.url, to), behaviour).await;
        let cb = format!("{base}/status/{}", &to[1..]);
        let (s, c) = t
            .post(
                &t.core("Calls.json"),
                &[
                    ("To", to),
                    ("From", NUMBER),
                    ("Url", &format!("{base}/answer")),
                    ("StatusCallback", &cb),
                    ("StatusCallbackEvent", "answered"),
                    ("StatusCallbackEvent", "completed"),
                    ("MachineDetection", "Enable"),
                    ("Timeout", "20"),
                ],
            )
            .await;
        assert_eq!(s, 201, "{c}");
        assert_eq!(c["status"], "queued");
        let sid = c["sid"].as_str().unwrap().to_owned();
        let v = wait_end(&t, &sid).await;
        assert_eq!(v["status"], want, "{to}");
        assert_eq!(v["answered_by"].as_str(), answered_by, "{to}");
        let path = format!("/status/{}", &to[1..]);
        let done = common::until(2000, || {
            common::hits_at(&hits, &path).pop().filter(|h| h.params.get("CallStatus") == Some(want))
        })
        .await
        .unwrap();
        assert_eq!(done.params.get("SipResponseCode"), sip, "{to}");
        if let Some(ab) = answered_by {
            let ans = &common::hits_at(&hits, "/answer");
            assert!(
                ans.iter()
                    .any(|h| h.params.get("CallSid") == Some(sid.as_str()) && h.params.get("AnsweredBy") == Some(ab))
            );
        }
        let (_, fetched) = t.get(&t.core(&format!("Calls/{sid}.json"))).await;
        assert_eq!(fetched["status"], want);
    }
    let (_, l) = t.get(&t.core("Calls.json?Status=busy")).await;
    assert_eq!(l["calls"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn call_create_errors_and_cancel() {
    let (t, base, _) = with_app_at(1.0, |_, _| twiml("<Pause length=\"600\"/>")).await;
    let url = format!("{base}/x");
    for (form, code) in [
        (vec![("From", NUMBER), ("Url", url.as_str())], 21201),
        (vec![("To", "12"), ("From", NUMBER), ("Url", url.as_str())], 21211),
        (vec![("To", AGENT), ("From", NUMBER), ("Url", "notaurl")], 21205),
        (vec![("To", AGENT), ("From", "+14155559999"), ("Url", url.as_str())], 21212),
    ] {
        let (s, e) = t.post(&t.core("Calls.json"), &form).await;
        assert_eq!((s, e["code"].as_u64()), (400, Some(code)), "{form:?}: {e}");
    }
    // Any From with a CallToken.
    let (s, _) = t
        .post(&t.core("Calls.json"), &[("To", AGENT), ("From", "+14155559999"), ("Url", &url), ("CallToken", "tok")])
        .await;
    assert_eq!(s, 201);
    // Cancel while ringing (real time: a ring is 6 s).
    let (_, c) = t.post(&t.core("Calls.json"), &[("To", AGENT), ("From", NUMBER), ("Url", &url)]).await;
    let sid = c["sid"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (s, _) = t.post(&t.core(&format!("Calls/{sid}.json")), &[("Status", "canceled")]).await;
    assert_eq!(s, 200);
    assert_eq!(wait_end(&t, sid).await["status"], "canceled");
    let (s, e) = t.post(&t.core(&format!("Calls/{sid}.json")), &[("Url", &url)]).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(21220)));
    let (s, e) = t.get(&t.core("Calls/CA00000000000000000000000000000000.json")).await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(20404)));
}

#[tokio::test]
async fn client_drives_a_call() {
    use call_router_sandbox::client::{PlaceCall, SandboxClient};
    let t = common::start(1000.0).await;
    let (base, _) = common::receiver(t.token.clone(), |_, _| twiml("<Say>hi</Say>")).await;
    let c = SandboxClient::new(&t.url, &t.sid, &t.token);
    c.buy_number(NUMBER, Some(&format!("{base}/in"))).await.unwrap();
    c.set_phone(AGENT, &call_router_sandbox::state::Behaviour::Busy).await.unwrap();
    let sid = c.place_call(&PlaceCall { from: CALLER.into(), to: NUMBER.into(), ..Default::default() }).await.unwrap();
    let v = c.wait_for_call_end(&sid, Duration::from_secs(5)).await.unwrap();
    assert_eq!(v["status"], "completed");
    let st = c.state().await.unwrap();
    assert_eq!(st["phones"][AGENT]["behaviour"], "busy");
    let (entries, next) = c.log(0).await.unwrap();
    assert!(entries.iter().any(|e| e["direction"] == "out"));
    assert!(next > 0);
    assert!(
        c.place_call(&PlaceCall { from: CALLER.into(), to: "+14155550000".into(), ..Default::default() })
            .await
            .is_err()
    );
}

async fn with_app_at(
    scale: f64,
    app: impl Fn(&str, &twilio::Params) -> (u16, String) + Send + Sync + 'static,
) -> (T, String, Hits) {
    common::with_app(scale, NUMBER, app).await
}

/// The start time of a call as the Calls resource shows it, in ms.
fn start_ms(c: &Value) -> Option<i64> {
    let t = c["start_time"].as_str()?;
    Some(jiff::fmt::rfc2822::parse(t).unwrap().timestamp().as_millisecond())
}

#[tokio::test]
async fn api_calls_wait_in_the_accounts_queue_without_a_start_time() {
    let (t, _, _) = with_app_at(100.0, |_, _| twiml("<Pause length=\"600\"/>")).await;
    let (s, l) = t.put_json(&format!("{}/sandbox/limits", t.url), json!({"calls_per_second": 0.0001})).await;
    assert_eq!((s, &l["calls_per_second"]), (200, &json!(0.0001)), "{l}");
    let (s, e) = t.put_json(&format!("{}/sandbox/limits", t.url), json!({"calls_per_second": 0})).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)), "{e}");
    let twiml = "<Response><Pause length=\"600\"/></Response>";
    let form = [("To", AGENT), ("From", NUMBER), ("Twiml", twiml)];
    let (_, first) = t.post(&t.core("Calls.json"), &form).await;
    let (_, second) = t.post(&t.core("Calls.json"), &form).await;
    let (first, second) = (first["sid"].as_str().unwrap(), second["sid"].as_str().unwrap());
    // The first leaves the queue at once; the second waits 10 000 virtual s.
    let mut started = None;
    for _ in 0..2000 {
        let (_, c) = t.get(&t.core(&format!("Calls/{first}.json"))).await;
        if c["status"] != "queued" {
            started = start_ms(&c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started.is_some(), "the first call never left the queue");
    let (_, c) = t.get(&t.core(&format!("Calls/{second}.json"))).await;
    assert_eq!((c["status"].as_str(), start_ms(&c)), (Some("queued"), None), "{c}");

    // A StartTime filter does not list it (it has not started); Status=queued does.
    let listed = |q: String| {
        let t = &t;
        async move {
            let (s, l) = t.get(&t.core(&format!("Calls.json?{q}"))).await;
            assert_eq!(s, 200, "{l}");
            l["calls"].as_array().unwrap().iter().map(|c| c["sid"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("To=%2B14155550123&StartTime%3E=2000-01-01".into()).await, [first]);
    assert_eq!(listed("To=%2B14155550123&Status=queued".into()).await, [second]);

    // Canceled while queued, it ends `canceled` without ringing.
    let (s, _) = t.post(&t.core(&format!("Calls/{second}.json")), &[("Status", "canceled")]).await;
    assert_eq!(s, 200);
    let summary = wait_end(&t, second).await;
    assert_eq!((summary["status"].as_str(), &summary["start_ms"]), (Some("canceled"), &Value::Null), "{summary}");
}

#[tokio::test]
async fn api_calls_leave_the_queue_at_the_accounts_rate() {
    let (t, _, _) = with_app_at(1000.0, |_, _| twiml("<Pause length=\"600\"/>")).await;
    let (s, _) = t.put_json(&format!("{}/sandbox/limits", t.url), json!({"calls_per_second": 0.05})).await;
    assert_eq!(s, 200);
    let form = [("To", AGENT), ("From", NUMBER), ("Twiml", "<Response><Pause length=\"600\"/></Response>")];
    let mut sids = Vec::new();
    for _ in 0..3 {
        let (_, c) = t.post(&t.core("Calls.json"), &form).await;
        sids.push(c["sid"].as_str().unwrap().to_owned());
    }
    let mut starts = Vec::new();
    for sid in &sids {
        let mut start = None;
        for _ in 0..4000 {
            let (_, c) = t.get(&t.core(&format!("Calls/{sid}.json"))).await;
            if let Some(s) = start_ms(&c) {
                start = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        starts.push(start.unwrap_or_else(|| panic!("{sid} never started")));
    }
    // One call each 20 virtual s, in creation order (start times are whole seconds).
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= 19_000, "{starts:?}");
    }
    let (_, l) = t.get(&format!("{}/sandbox/limits", t.url)).await;
    assert_eq!(l["calls_per_second"], json!(0.05));
}

/// An API-created leg runs a `<Gather>` with its phone's digits, one entry per Gather, posts
/// `Digits` to the action, and runs the action's TwiML; a phone with no entry left (a
/// voicemail never has one) waits the timeout and falls through. Without `MachineDetection`
/// no `AnsweredBy` is sent.
#[tokio::test]
async fn outbound_legs_answer_gathers_with_their_digits() {
    let prompt =
        r#"<Gather numDigits="1" action="/screen" timeout="4"><Say>Press 1</Say></Gather><Redirect>/screen</Redirect>"#;
    let (t, base, hits) = with_app_at(1000.0, move |path, p| match (path, p.get("Digits")) {
        ("/answer", _) => twiml(prompt),
        ("/screen", Some("1")) => twiml("<Say>connecting</Say>"),
        ("/screen", Some(_)) => twiml(prompt),
        ("/screen", None) => twiml("<Hangup/>"),
        _ => (204, String::new()),
    })
    .await;
    let cases = [
        ("+14155550211", json!({"behaviour": "person", "rings": 1, "digits": "9,1"}), vec![Some("9"), Some("1")]),
        ("+14155550212", json!({"behaviour": "voicemail", "rings": 1, "greeting_secs": 3}), vec![None]),
        ("+14155550213", json!({"behaviour": "person", "rings": 1}), vec![None]),
    ];
    for (to, behaviour, want) in cases {
        t.put_json(&format!("{}/sandbox/phones/{}", t.url, to), behaviour).await;
        let form = [("To", to), ("From", NUMBER), ("Url", &format!("{base}/answer")), ("Timeout", "20")];
        let (s, c) = t.post(&t.core("Calls.json"), &form).await;
        assert_eq!(s, 201, "{c}");
        let sid = c["sid"].as_str().unwrap().to_owned();
        let v = wait_end(&t, &sid).await;
        assert_eq!(v["status"], "completed", "{to}: {v}");
        assert_eq!(v["answered_by"], Value::Null, "{to}: no AMD was asked for");
        let screens: Vec<_> =
            common::hits_at(&hits, "/screen").into_iter().filter(|h| h.params.get("CallSid") == Some(&sid)).collect();
        let digits: Vec<Option<&str>> = screens.iter().map(|h| h.params.get("Digits")).collect();
        assert_eq!(digits, want, "{to}");
        assert!(screens.iter().all(|h| h.signed && h.params.get("AnsweredBy").is_none()), "{to}");
        assert!(screens.iter().all(|h| h.params.get("Direction") == Some("outbound-api")), "{to}");
    }
}
