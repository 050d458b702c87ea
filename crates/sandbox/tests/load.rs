//! Many concurrent complete flows (Enqueue → reservation → REST dial → Dial
//! Queue → bridge → wrap-up) through one sandbox. `SANDBOX_LOAD_CALLS` sets
//! how many (default 200).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

const NUMBER: &str = "+14155550100";
const AGENT: &str = "+14155550123";

fn twiml(body: &str) -> (u16, String) {
    (200, format!("<Response>{body}</Response>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_flows() {
    let n: usize = std::env::var("SANDBOX_LOAD_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let t = common::start(100.0).await;
    let wf = Arc::new(Mutex::new(String::new()));
    let (w, url, sid, token) = (wf.clone(), t.url.clone(), t.sid.clone(), t.token.clone());
    let http = reqwest::Client::new();
    let app_base: Arc<Mutex<String>> = Arc::default();
    let ab = app_base.clone();
    let (base, _hits) = common::receiver(t.token.clone(), move |path, p| match path {
        "/in" => twiml(&format!(
            r#"<Enqueue workflowSid="{}" waitUrl="/hold" action="/done"><Task>{{"n":1}}</Task></Enqueue>"#,
            w.lock().unwrap()
        )),
        "/hold" => twiml("<Pause length=\"5\"/>"),
        "/done" => twiml("<Hangup/>"),
        "/events" => {
            if p.get("EventType") == Some("reservation.created") {
                let res = p.get("ReservationSid").unwrap().to_owned();
                let (http, url, sid, token, base) =
                    (http.clone(), url.clone(), sid.clone(), token.clone(), ab.lock().unwrap().clone());
                tokio::spawn(async move {
                    let form = [("To", AGENT), ("From", NUMBER), ("Url", &format!("{base}/agent/{res}"))];
                    let _ = http
                        .post(format!("{url}/2010-04-01/Accounts/{sid}/Calls.json"))
                        .basic_auth(&sid, Some(&token))
                        .form(&form)
                        .send()
                        .await;
                });
            }
            if p.get("EventType") == Some("task.wrapup") {
                // Complete the task, as the server does, to free the worker.
                let task = p.get("TaskSid").unwrap().to_owned();
                let ws = p.get("WorkspaceSid").unwrap().to_owned();
                let (http, url, sid, token) = (http.clone(), url.clone(), sid.clone(), token.clone());
                tokio::spawn(async move {
                    let _ = http
                        .post(format!("{url}/v1/Workspaces/{ws}/Tasks/{task}"))
                        .basic_auth(&sid, Some(&token))
                        .form(&[("AssignmentStatus", "completed"), ("Reason", "done")])
                        .send()
                        .await;
                });
            }
            (204, String::new())
        }
        p if p.starts_with("/agent/") => twiml(&format!(r#"<Dial><Queue reservationSid="{}"/></Dial>"#, &p[7..])),
        _ => (204, String::new()),
    })
    .await;
    *app_base.lock().unwrap() = base.clone();
    t.post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", NUMBER), ("VoiceUrl", &format!("{base}/in"))]).await;
    let (ws, available, _) = t.workspace(Some(&format!("{base}/events"))).await;
    let (_, q) = t.post(&t.tr(&format!("Workspaces/{ws}/TaskQueues")), &[("FriendlyName", "q")]).await;
    let cfg =
        format!(r#"{{"task_routing":{{"filters":[],"default_filter":{{"queue":"{}"}}}}}}"#, q["sid"].as_str().unwrap());
    let (_, wfv) =
        t.post(&t.tr(&format!("Workspaces/{ws}/Workflows")), &[("FriendlyName", "wf"), ("Configuration", &cfg)]).await;
    *wf.lock().unwrap() = wfv["sid"].as_str().unwrap().to_owned();
    for i in 0..20 {
        let (_, wk) = t
            .post(
                &t.tr(&format!("Workspaces/{ws}/Workers")),
                &[("FriendlyName", &format!("w{i}")), ("ActivitySid", &available)],
            )
            .await;
        let wk = wk["sid"].as_str().unwrap();
        t.post(&t.tr(&format!("Workspaces/{ws}/Workers/{wk}/Channels/voice")), &[("Capacity", "50")]).await;
    }
    t.put_json(
        &format!("{}/sandbox/phones/{AGENT}", t.url),
        json!({"behaviour": "person", "rings": 1, "talk_secs": 10}),
    )
    .await;

    let started = Instant::now();
    let mut calls = Vec::new();
    for _ in 0..n {
        let (s, v) =
            t.post_json(&format!("{}/sandbox/calls", t.url), json!({"from": "+14155550999", "to": NUMBER})).await;
        assert_eq!(s, 201);
        calls.push(v["call_sid"].as_str().unwrap().to_owned());
    }
    let mut bridged = 0;
    for c in &calls {
        let (_, v) = t.get(&format!("{}/sandbox/calls/{c}?wait_final_ms=60000", t.url)).await;
        assert_eq!(v["final"], true, "{v}");
        if v["queue_result"] == "bridged" {
            bridged += 1;
        } else if bridged + 5 > n {
            eprintln!("not bridged: {v}");
        }
    }
    let took = started.elapsed();
    eprintln!("{n} flows in {took:?}: {:.0} flows/s, {bridged} bridged", n as f64 / took.as_secs_f64());
    assert_eq!(bridged, n);
    assert!(took < Duration::from_secs(60));
}
