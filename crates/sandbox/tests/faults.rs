//! Twilio's failure behaviour over HTTP: connection overrides, retries, the
//! voice fallback URL, the application-error announcement, and the fault
//! injection API (REST faults, webhook faults, outage windows).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Hits, T, twiml, wait_end};
use serde_json::{Value, json};

const NUMBER: &str = "+14155550100";
const CALLER: &str = "+14155550999";
const PHONE: &str = "+14155550123";

/// A sandbox with no floor under its webhook timeouts, so virtual read
/// timeouts can be tested at a high time scale.
async fn start(time_scale: f64) -> T {
    let mut cfg = call_router_sandbox::Config::random(time_scale, 11);
    cfg.min_webhook_timeout_ms = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sb = call_router_sandbox::start(cfg, listener).await.unwrap();
    T {
        url: sb.url(),
        sid: sb.account_sid().to_string(),
        token: sb.auth_token().to_owned(),
        http: reqwest::Client::new(),
        sb,
    }
}

async fn buy(t: &T, form: &[(&str, &str)]) {
    let mut form = form.to_vec();
    form.push(("PhoneNumber", NUMBER));
    let (s, n) = t.post(&t.core("IncomingPhoneNumbers.json"), &form).await;
    assert_eq!(s, 201, "{n}");
}

async fn call(t: &T) -> String {
    let (s, v) = t.post_json(&format!("{}/sandbox/calls", t.url), json!({"from": CALLER, "to": NUMBER})).await;
    assert_eq!(s, 201, "{v}");
    v["call_sid"].as_str().unwrap().to_owned()
}

async fn add_faults(t: &T, rules: Value) -> Vec<u64> {
    let (s, v) = t.post_json(&format!("{}/sandbox/faults", t.url), json!({ "rules": rules })).await;
    assert_eq!(s, 201, "{v}");
    v["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect()
}

async fn faults(t: &T) -> Vec<Value> {
    let (s, v) = t.get(&format!("{}/sandbox/faults", t.url)).await;
    assert_eq!(s, 200, "{v}");
    v["rules"].as_array().unwrap().clone()
}

/// The sandbox's log entries sent to a path on the receiver.
async fn sent_to(t: &T, path: &str) -> Vec<Value> {
    let (_, v) = t.get(&format!("{}/sandbox/log?limit=10000", t.url)).await;
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["direction"] == "out" && e["url"].as_str().is_some_and(|u| u.ends_with(path)))
        .cloned()
        .collect()
}

fn timeline(v: &Value) -> String {
    v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test]
async fn the_fragment_is_not_sent_and_the_signature_leaves_it_out() {
    let t = start(1000.0).await;
    let (base, hits) = common::receiver(t.token.clone(), |_, _| twiml("<Say>hi</Say>")).await;
    buy(&t, &[("VoiceUrl", &format!("{base}/in?x=1#rc=2&rp=ct,5xx&ct=1000"))]).await;
    let sid = call(&t).await;
    assert_eq!(wait_end(&t, &sid).await["status"], "completed");
    let hit = &common::hits_at(&hits, "/in")[0];
    assert!(hit.signed, "signed over the URL without its fragment, as Twilio does");
    let out = sent_to(&t, "/in?x=1").await;
    assert_eq!(out.len(), 1, "{out:?}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_once_by_default_and_as_the_overrides_say() {
    let t = start(1000.0).await;
    let (base, hits) = common::receiver(t.token.clone(), |_, _| twiml("<Say>hi</Say>")).await;
    buy(&t, &[("VoiceUrl", &format!("{base}/in"))]).await;
    // The first connection is refused; Twilio's default (rc=1, rp=ct) tries again at once.
    add_faults(&t, json!([{"on": "webhook", "path": "/in", "fault": "refuse", "limit": 1}])).await;
    let sid = call(&t).await;
    let v = wait_end(&t, &sid).await;
    assert_eq!((v["status"].as_str(), &v["error_code"]), (Some("completed"), &Value::Null), "{v}");
    let out = sent_to(&t, "/in").await;
    let tries: Vec<_> = out.iter().map(|e| (e["attempt"].as_u64().unwrap(), e["status"].as_u64().unwrap())).collect();
    assert_eq!(tries, [(1, 0), (2, 200)]);
    assert_eq!(out[0]["fault"], "refuse (rule 1)");
    assert_eq!(common::hits_at(&hits, "/in").len(), 1);

    // rc=0: no retry; the call fails with 11205 and the caller hears the announcement.
    t.delete(&format!("{}/sandbox/faults", t.url)).await;
    let (_, n) = t.get(&t.core("IncomingPhoneNumbers.json")).await;
    let pn = n["incoming_phone_numbers"][0]["sid"].as_str().unwrap().to_owned();
    t.post(&t.core(&format!("IncomingPhoneNumbers/{pn}.json")), &[("VoiceUrl", &format!("{base}/in#rc=0"))]).await;
    add_faults(&t, json!([{"on": "webhook", "path": "/in", "fault": "refuse"}])).await;
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!(v["error_code"], 11205, "{v}");
    assert_eq!(v["status"], "completed", "answered to play the announcement");
    assert!(timeline(&v).contains("said: We are sorry, an application error has occurred"), "{v}");
    assert_eq!(faults(&t).await[0]["fired"], 1, "one try only");

    // rc=3 during an outage: four tries, all refused.
    t.post(&t.core(&format!("IncomingPhoneNumbers/{pn}.json")), &[("VoiceUrl", &format!("{base}/in#rc=3"))]).await;
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!(v["error_code"], 11205, "{v}");
    assert_eq!(faults(&t).await[0]["fired"], 5);
}

#[tokio::test]
async fn error_statuses_are_retried_only_when_the_policy_says() {
    let t = start(1000.0).await;
    let n = Arc::new(Mutex::new(0u32));
    let n2 = n.clone();
    // The first two requests fail with a 503, the rest succeed.
    let (base, _) = common::receiver(t.token.clone(), move |_, _| {
        let mut n = n2.lock().unwrap();
        *n += 1;
        if *n <= 2 { (503, "busy".into()) } else { twiml("<Say>hi</Say>") }
    })
    .await;
    buy(&t, &[("VoiceUrl", &format!("{base}/in"))]).await;
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!(v["error_code"], 11200, "a 5xx is not retried by default: {v}");
    assert_eq!(*n.lock().unwrap(), 1);
    let (_, list) = t.get(&t.core("IncomingPhoneNumbers.json")).await;
    let pn = list["incoming_phone_numbers"][0]["sid"].as_str().unwrap().to_owned();
    t.post(&t.core(&format!("IncomingPhoneNumbers/{pn}.json")), &[("VoiceUrl", &format!("{base}/in#rp=5xx"))]).await;
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!(v["error_code"], Value::Null, "{v}");
    assert_eq!(*n.lock().unwrap(), 3);
}

#[tokio::test]
async fn a_retry_opens_a_new_connection_and_never_reuses_a_kept_one() {
    let t = start(1000.0).await;
    // The app answers its first request with a 503 (keeping the connection
    // alive, as servers do), the rest with TwiML, and records each request's
    // peer address: one per connection.
    let peers: Arc<Mutex<Vec<std::net::SocketAddr>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let p = peers.clone();
    let app = axum::Router::new().fallback(
        move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>| {
            let p = p.clone();
            async move {
                let first = {
                    let mut p = p.lock().unwrap();
                    p.push(peer);
                    p.len() == 1
                };
                let (s, body) = if first { (503, "busy".to_owned()) } else { twiml("<Say>hi</Say>") };
                (axum::http::StatusCode::from_u16(s).unwrap(), [("content-type", "text/xml")], body)
            }
        },
    );
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    buy(&t, &[("VoiceUrl", &format!("{base}/in#rp=5xx"))]).await;
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!(v["error_code"], Value::Null, "the retry fetched the TwiML: {v}");
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 2, "one try and one retry: {peers:?}");
    assert_ne!(peers[0], peers[1], "the retry came on the first try's kept-alive connection");
}

/// A TwiML app that answers `/slow` after `delay` real time, everything else at once.
async fn slow_app(token: String, delay: Duration) -> (String, Hits) {
    let hits: Hits = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let h = hits.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let (h, token) = (h.clone(), token.clone());
        async move {
            let _ = token;
            let params = twilio::Params::parse(&body);
            h.lock().unwrap().push(common::Hit { path: uri.path().to_owned(), params, signed: true });
            if uri.path() == "/slow" {
                tokio::time::sleep(delay).await;
            }
            let (s, body) = twiml("<Say>hello</Say>");
            (axum::http::StatusCode::from_u16(s).unwrap(), [("content-type", "text/xml")], body)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

#[tokio::test]
async fn a_slow_voice_url_times_out_in_virtual_time_and_falls_back() {
    // At time scale 100, 400 real ms are 40 virtual s: past a 2 s read timeout.
    let t = start(100.0).await;
    let (base, hits) = slow_app(t.token.clone(), Duration::from_millis(400)).await;
    buy(
        &t,
        &[
            ("VoiceUrl", &format!("{base}/slow#rt=2000&ct=1000&rc=0")),
            ("VoiceFallbackUrl", &format!("{base}/fallback")),
            ("VoiceFallbackMethod", "POST"),
        ],
    )
    .await;
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!((v["status"].as_str(), &v["error_code"]), (Some("completed"), &Value::Null), "{v}");
    let fb = &common::hits_at(&hits, "/fallback")[0];
    assert_eq!(fb.params.get("ErrorCode"), Some("11200"));
    assert_eq!(fb.params.get("ErrorUrl"), Some(format!("{base}/slow").as_str()));
    assert!(timeline(&v).contains("requesting the fallback URL"), "{v}");
    let out = sent_to(&t, "/slow").await;
    assert!(out[0]["error"].as_str().unwrap().contains("timeout"), "{out:?}");
}

#[tokio::test]
async fn the_fallback_url_serves_a_failed_document_and_its_failure_is_an_application_error() {
    let t = start(1000.0).await;
    let mode = Arc::new(Mutex::new("ok"));
    let m = mode.clone();
    let (base, hits) = common::receiver(t.token.clone(), move |path, _| match (path, *m.lock().unwrap()) {
        ("/in", _) => (500, "broken".into()),
        ("/fallback", "ok") => twiml("<Say>sorry, try later</Say>"),
        ("/fallback", _) => twiml("<NotAVerb/>"),
        _ => (404, String::new()),
    })
    .await;
    buy(&t, &[("VoiceUrl", &format!("{base}/in")), ("VoiceFallbackUrl", &format!("{base}/fallback"))]).await;
    let (_, list) = t.get(&t.core("IncomingPhoneNumbers.json")).await;
    assert_eq!(list["incoming_phone_numbers"][0]["voice_fallback_url"], format!("{base}/fallback"));
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!(v["error_code"], Value::Null, "{v}");
    let fb = &common::hits_at(&hits, "/fallback")[0];
    assert_eq!((fb.params.get("ErrorCode"), fb.params.get("CallStatus")), (Some("11200"), Some("ringing")));
    assert!(fb.signed);

    *mode.lock().unwrap() = "bad";
    let v = wait_end(&t, &call(&t).await).await;
    assert_eq!(v["error_code"], 12100, "the fallback's own failure is the call's: {v}");
    assert!(timeline(&v).contains("application error"), "{v}");
}

#[tokio::test]
async fn rest_faults_answer_errors_delay_and_reset_after_acting() {
    let t = start(100.0).await;
    let (base, _) = common::receiver(t.token.clone(), |_, _| twiml("<Pause length=\"1\"/>")).await;
    buy(&t, &[("VoiceUrl", &format!("{base}/in"))]).await;
    let calls = t.core("Calls.json");
    let create = [("To", PHONE), ("From", NUMBER), ("Url", &format!("{base}/in") as &str)];
    let count = |v: &Value| v["calls"].as_array().unwrap().len();

    // A 500 with Twilio's body; nothing is created.
    add_faults(&t, json!([{"on": "rest", "method": "POST", "path": "/2010-04-01/Accounts/*/Calls.json", "fault": "status", "status": 500, "limit": 1}])).await;
    let (s, v) = t.post(&calls, &create).await;
    assert_eq!((s, &v["code"], &v["status"]), (500, &json!(20500), &json!(500)), "{v}");
    assert!(v["message"].is_string() && v["more_info"].is_string(), "{v}");
    assert_eq!(count(&t.get(&calls).await.1), 0);

    // A 429 carries Retry-After.
    add_faults(
        &t,
        json!([{"on": "rest", "method": "POST", "fault": "status", "status": 429, "retry_after_secs": 3, "limit": 1}]),
    )
    .await;
    let r = t.http.post(&calls).basic_auth(&t.sid, Some(&t.token)).form(&create).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (429, "3"));
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 20429);

    // Reset after acting: the client sees no answer, but the call was made.
    add_faults(&t, json!([{"on": "rest", "method": "POST", "path": "/2010-04-01/Accounts/*/Calls.json", "fault": "reset", "limit": 1}])).await;
    let r = t.http.post(&calls).basic_auth(&t.sid, Some(&t.token)).form(&create).send().await;
    let err = match r {
        Err(e) => e.to_string(),
        Ok(resp) => match resp.text().await {
            Err(e) => e.to_string(),
            Ok(body) => panic!("an answer came through a reset: {body}"),
        },
    };
    assert!(!err.is_empty());
    let (_, list) = t.get(&calls).await;
    assert_eq!(count(&list), 1, "the create took effect: {list}");
    let (_, log) = t.get(&format!("{}/sandbox/log?limit=10000", t.url)).await;
    let entry = log["entries"].as_array().unwrap().iter().rev().find(|e| e["fault"].is_string()).unwrap().clone();
    assert_eq!((entry["status"].as_u64(), entry["fault"].as_str()), (Some(201), Some("reset (rule 3)")), "{entry}");

    // A delay: at time scale 100, 30 virtual seconds are 300 real ms.
    add_faults(&t, json!([{"on": "rest", "method": "GET", "fault": "delay", "delay_ms": 30000, "limit": 1}])).await;
    let started = Instant::now();
    let (s, _) = t.get(&calls).await;
    assert_eq!(s, 200);
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());

    // Every rule shows how often it matched and fired; the control API is never faulted.
    let rules = faults(&t).await;
    let fired: Vec<_> = rules.iter().map(|r| (r["id"].as_u64().unwrap(), r["fired"].as_u64().unwrap())).collect();
    assert_eq!(fired, [(1, 1), (2, 1), (3, 1), (4, 1)]);
    let (s, _) = t.delete(&format!("{}/sandbox/faults/2", t.url)).await;
    assert_eq!(s, 204);
    let (s, _) = t.delete(&format!("{}/sandbox/faults/2", t.url)).await;
    assert_eq!(s, 404);
}

/// A create that took effect but whose answer is a 5xx: the client cannot
/// tell it from a failure, and only a look-up shows the resource.
#[tokio::test]
async fn status_after_acting_creates_then_answers_a_server_error() {
    let t = start(100.0).await;
    let (ws, _, _) = t.workspace(None).await;
    let (s, q) = t.post(&t.tr(&format!("Workspaces/{ws}/TaskQueues")), &[("FriendlyName", "q")]).await;
    assert_eq!(s, 201, "{q}");
    let cfg = json!({"task_routing": {"filters": [], "default_filter": {"queue": q["sid"]}}}).to_string();
    let (s, wf) =
        t.post(&t.tr(&format!("Workspaces/{ws}/Workflows")), &[("FriendlyName", "wf"), ("Configuration", &cfg)]).await;
    assert_eq!(s, 201, "{wf}");
    let tasks = t.tr(&format!("Workspaces/{ws}/Tasks"));
    let create = [("WorkflowSid", wf["sid"].as_str().unwrap()), ("Attributes", r#"{"n":1}"#)];
    let count = |v: &Value| v["tasks"].as_array().unwrap().len();

    add_faults(&t, json!([{"on": "rest", "method": "POST", "path": "/v1/Workspaces/*/Tasks", "fault": "status_after_acting", "status": 503, "limit": 1}])).await;
    let (s, v) = t.post(&tasks, &create).await;
    assert_eq!((s, &v["code"], &v["status"]), (503, &json!(20503), &json!(503)), "{v}");
    assert!(v["message"].is_string() && v["more_info"].is_string(), "{v}");
    let (_, list) = t.get(&tasks).await;
    assert_eq!(count(&list), 1, "the create took effect: {list}");
    let (_, log) = t.get(&format!("{}/sandbox/log?limit=10000", t.url)).await;
    let entry = log["entries"].as_array().unwrap().iter().rev().find(|e| e["fault"].is_string()).unwrap().clone();
    assert_eq!(
        (entry["status"].as_u64(), entry["fault"].as_str()),
        (Some(503), Some("status_after_acting (rule 1)")),
        "{entry}"
    );
    // The rule's limit is spent: the next create answers normally.
    let (s, v) = t.post(&tasks, &create).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(count(&t.get(&tasks).await.1), 2);
}

#[tokio::test]
async fn fault_rules_are_checked_with_a_reason() {
    let t = start(1000.0).await;
    let url = format!("{}/sandbox/faults", t.url);
    for (rule, says) in [
        (json!({"on": "rest", "fault": "drop"}), "does not apply to rest"),
        (json!({"on": "webhook", "fault": "late"}), "delay_ms"),
        (json!({"on": "rest", "fault": "reset", "shares": 0.5}), "unknown key \"shares\""),
        (json!({"on": "rest", "fault": "status", "status": 302}), "4xx or 5xx"),
        (json!({"on": "sideways", "fault": "reset"}), "unknown variant"),
    ] {
        let (s, v) = t.post_json(&url, rule.clone()).await;
        assert_eq!((s, &v["code"]), (400, &json!(20001)), "{rule}: {v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{rule}: {v}");
    }
    assert!(faults(&t).await.is_empty());
    // One rule alone, without the list around it, is fine too.
    let (s, v) = t.post_json(&url, json!({"on": "webhook", "fault": "drop", "share": 0.25})).await;
    assert_eq!((s, &v["ids"]), (201, &json!([1])), "{v}");
}

/// Sets up an outbound call to a person with all four status callbacks.
async fn outbound_with_callbacks(t: &T, base: &str) -> String {
    buy(t, &[("VoiceUrl", &format!("{base}/in"))]).await;
    let (s, v) = t
        .post(
            &t.core("Calls.json"),
            &[
                ("To", PHONE),
                ("From", NUMBER),
                ("Twiml", "<Response><Pause length=\"2\"/></Response>"),
                ("StatusCallback", &format!("{base}/status")),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing"),
                ("StatusCallbackEvent", "answered"),
                ("StatusCallbackEvent", "completed"),
            ],
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v["sid"].as_str().unwrap().to_owned()
}

fn sequence(hits: &Hits) -> Vec<String> {
    common::hits_at(hits, "/status").iter().map(|h| h.params.get("SequenceNumber").unwrap().to_owned()).collect()
}

#[tokio::test]
async fn webhook_faults_duplicate_reorder_and_drop_status_callbacks() {
    // Duplicates: every callback twice.
    let t = start(1000.0).await;
    let (base, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    add_faults(&t, json!([{"on": "webhook", "path": "/status", "fault": "duplicate"}])).await;
    let sid = outbound_with_callbacks(&t, &base).await;
    wait_end(&t, &sid).await;
    assert_eq!(sequence(&hits), ["0", "0", "1", "1", "2", "2", "3", "3"]);
    assert!(common::hits_at(&hits, "/status").iter().all(|h| h.signed));

    // Late: the first callback arrives after the others (ten virtual minutes late, 600 real ms,
    // long after the call's few virtual seconds, however loaded the machine).
    let t = start(1000.0).await;
    let (base, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    add_faults(&t, json!([{"on": "webhook", "path": "/status", "fault": "late", "delay_ms": 600000, "limit": 1}]))
        .await;
    let sid = outbound_with_callbacks(&t, &base).await;
    wait_end(&t, &sid).await;
    let got = common::until(5000, || (sequence(&hits).len() == 4).then(|| sequence(&hits))).await.unwrap();
    assert_eq!(got, ["1", "2", "3", "0"]);

    // Dropped: never arrives, and the call goes on.
    let t = start(1000.0).await;
    let (base, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    add_faults(&t, json!([{"on": "webhook", "path": "/status", "fault": "drop", "limit": 2}])).await;
    let sid = outbound_with_callbacks(&t, &base).await;
    assert_eq!(wait_end(&t, &sid).await["status"], "completed");
    assert_eq!(sequence(&hits), ["2", "3"]);
    let dropped = sent_to(&t, "/status").await.into_iter().filter(|e| e["error"] == "dropped").count();
    assert_eq!(dropped, 2);
}

#[tokio::test]
async fn taskrouter_events_meet_outages_and_are_retried_once() {
    let t = start(1000.0).await;
    let (base, hits) = common::receiver(t.token.clone(), |_, _| (204, String::new())).await;
    let (ws, available, _) = t.workspace(Some(&format!("{base}/events"))).await;
    // An outage for the next ten minutes of virtual time (600 real ms: wide, so a loaded
    // machine's stall cannot end it between the two tries), with every retry refused.
    let (_, state) = t.get(&format!("{}/sandbox/state", t.url)).await;
    let now = state["now_ms"].as_u64().unwrap();
    add_faults(
        &t,
        json!([{"on": "webhook", "path": "/events", "fault": "refuse", "from_ms": now, "to_ms": now + 600_000}]),
    )
    .await;
    let (s, w) = t.post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "w1")]).await;
    assert_eq!(s, 201, "{w}");
    let worker = t.tr(&format!("Workspaces/{ws}/Workers/{}", w["sid"].as_str().unwrap()));
    let (s, _) = t.post(&worker, &[("ActivitySid", &available)]).await;
    assert_eq!(s, 200);
    for _ in 0..500 {
        if faults(&t).await[0]["fired"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time for a third try, which must not come.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rules = faults(&t).await;
    assert_eq!(rules[0]["fired"], 2, "the event was tried twice (rc=1, rp=ct): {rules:?}");
    assert!(common::event_types(&hits).is_empty(), "nothing gets through an outage");
    // After the outage, events arrive again.
    t.delete(&format!("{}/sandbox/faults", t.url)).await;
    let (_, offline) = t.get(&t.tr(&format!("Workspaces/{ws}/Activities?FriendlyName=Offline"))).await;
    t.post(&worker, &[("ActivitySid", offline["activities"][0]["sid"].as_str().unwrap())]).await;
    let got =
        common::until(5000, || (!common::event_types(&hits).is_empty()).then(|| common::event_types(&hits))).await;
    assert_eq!(got.unwrap(), ["worker.activity.update"]);
}
