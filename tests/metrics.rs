//! `/metrics`: what the server counts, read back in Prometheus's text format.
//!
//! The recorder is global to the process, so when tests share one (plain
//! `cargo test`) they see each other's counts: each test reads a value
//! before and after, or looks for labels only it produces.

mod common;

use std::time::{Duration, Instant};

use call_router::stats::Sampler;
use common::*;

const CALL: &str = "CA00000000000000000000000000000007";
const TASK: &str = "WT00000000000000000000000000000007";
const RES: &str = "WR00000000000000000000000000000007";
const CALLER: &str = "+13105550177";

fn inbound(call: &str, to: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", ACCOUNT.to_owned()),
        ("CallSid", call.to_owned()),
        ("From", CALLER.to_owned()),
        ("To", to.to_owned()),
        ("CallStatus", "ringing".to_owned()),
        ("Direction", "inbound".to_owned()),
    ]
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    let resp = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    resp.text().await.unwrap()
}

/// The value of the series `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, v) = line.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let matches = n == name && labels.iter().all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")));
        matches.then(|| v.parse().ok()).flatten()
    })
}

/// Scrapes until `name{labels}` reaches at least `at_least` (work done in the
/// background is counted when it ends), or fails after five seconds.
async fn wait_for(app: &TestApp, name: &str, labels: &[(&str, &str)], at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(&app.client, &app.url).await;
        if value(&text, name, labels).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {name}{labels:?} >= {at_least} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_count_webhooks_by_route_and_status_and_show_the_build_and_the_outbox() {
    let app = spawn_app().await;
    let route = [("route", "/incoming-call"), ("status", "200")];
    let before = scrape(&app.client, &app.url).await;
    let n0 = value(&before, "call_router_webhook_requests_total", &route).unwrap_or(0.0);
    let t0 =
        value(&before, "call_router_webhook_duration_seconds_count", &[("route", "/incoming-call")]).unwrap_or(0.0);

    let resp =
        app.post_signed(&format!("/incoming-call?callSid={CALL}"), &as_refs(&inbound(CALL, TWILIO_NUMBER))).await;
    assert_eq!(resp.status(), 200);
    // A refused webhook is counted with its status, under its route, never its URI.
    let resp = app.client.post(format!("{}/incoming-call?CallSid={CALL}", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = app.client.get(format!("{}/no/such/{CALL}", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // Unsigned, and still answered.
    let text = scrape(&app.client, &app.url).await;
    assert!(value(&text, "call_router_webhook_requests_total", &route).unwrap() >= n0 + 1.0, "{text}");
    assert!(value(&text, "call_router_webhook_duration_seconds_count", &[("route", "/incoming-call")]).unwrap() > t0);
    let refused = [("route", "/incoming-call"), ("status", "400")];
    assert!(value(&text, "call_router_webhook_requests_total", &refused).unwrap() >= 1.0, "{text}");
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert!(value(&text, "call_router_webhook_requests_total", &unmatched).unwrap() >= 1.0, "{text}");
    assert!(!text.contains(CALL), "no raw URI in a label:\n{text}");

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(value(&text, "call_router_build_info", &[("version", version)]), Some(1.0), "{text}");
    assert!(value(&text, "call_router_outbox_pending", &[("kind", "dial")]).is_some(), "{text}");
    assert!(value(&text, "call_router_outbox_oldest_pending_age_seconds", &[("kind", "hang_up")]).is_some());
    assert!(text.contains("# TYPE call_router_webhook_duration_seconds histogram"), "{text}");
}

#[tokio::test]
async fn metrics_count_settled_calls_by_outcome_and_location_and_queue_waits() {
    let app = spawn_app().await;
    let settled = [("outcome", "after_hours"), ("location", "night")];
    let waited = [("location", "north")];
    let before = scrape(&app.client, &app.url).await;
    let calls0 = value(&before, "call_router_calls_total", &settled).unwrap_or(0.0);
    let waits0 = value(&before, "call_router_queue_wait_seconds_count", &waited).unwrap_or(0.0);
    let sum0 = value(&before, "call_router_queue_wait_seconds_sum", &waited).unwrap_or(0.0);

    let night_call = "CA00000000000000000000000000000008";
    let resp = app.post_signed("/incoming-call", &as_refs(&inbound(night_call, CLOSED_NUMBER))).await;
    assert_eq!(resp.status(), 200);
    // Twilio sends a webhook again: the outcome was already final, so it is not counted twice.
    let resp = app.post_signed("/incoming-call", &as_refs(&inbound(night_call, CLOSED_NUMBER))).await;
    assert_eq!(resp.status(), 200);

    let mut left = inbound(CALL, TWILIO_NUMBER);
    left.extend([("QueueResult", "hangup".to_owned()), ("QueueTime", "42".to_owned())]);
    let resp = app.post_signed("/enqueue-action?location=north", &as_refs(&left)).await;
    assert_eq!(resp.status(), 200);

    let text = scrape(&app.client, &app.url).await;
    // Only this test makes these labels, so the deltas are exact even in a shared process.
    let calls = value(&text, "call_router_calls_total", &settled).unwrap();
    assert_eq!(calls, calls0 + 1.0, "{text}");
    let waits = value(&text, "call_router_queue_wait_seconds_count", &waited).unwrap();
    assert_eq!(waits, waits0 + 1.0, "{text}");
    let sum = value(&text, "call_router_queue_wait_seconds_sum", &waited).unwrap();
    assert_eq!(sum, sum0 + 42.0, "{text}");
}

#[tokio::test]
async fn metrics_count_twilio_requests_by_endpoint_status_and_error_code() {
    let app = spawn_app().await;
    *app.fake.fail_calls_with.lock().unwrap() = Some((400, 21211));
    let refused = [("endpoint", "POST /Calls"), ("status", "400"), ("code", "21211")];
    let n0 = value(&scrape(&app.client, &app.url).await, "call_router_twilio_requests_total", &refused).unwrap_or(0.0);

    app.post_signed("/incoming-call", &as_refs(&inbound(CALL, TWILIO_NUMBER))).await;
    let task = format!(
        r#"{{"location":"north","practicePhone":"+14155550123","callerID":"{TWILIO_NUMBER}","caller":"{CALLER}","call_sid":"{CALL}"}}"#
    );
    let event = reservation_created(TASK, RES, &task);
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event)).await.status(), 204);

    let text = wait_for(&app, "call_router_twilio_requests_total", &refused, n0 + 1.0).await;
    let timed = [("endpoint", "POST /Calls")];
    assert!(value(&text, "call_router_twilio_request_duration_seconds_count", &timed).unwrap() >= 1.0, "{text}");
    assert!(!text.contains(ACCOUNT), "no SID in an endpoint label:\n{text}");
}

#[tokio::test]
async fn callers_waiting_are_counted_per_location() {
    let app = spawn_app().await;
    let store = app.server.state.store();
    // A location only this test has, so no other server in the process sets its gauges.
    let number = "+12025550177";
    let spec = location("gauges", None, number, "+14155550177", always_open("America/Denver"));
    call_router::cli::import(store, &[spec]).await.unwrap();
    let sampler = Sampler::new(store.clone());
    sampler.sample().await.unwrap();
    let text = scrape(&app.client, &app.url).await;
    assert_eq!(value(&text, "call_router_callers_waiting", &[("location", "gauges")]), Some(0.0), "{text}");
    assert_eq!(value(&text, "call_router_lines_in_use", &[("location", "gauges")]), Some(0.0), "{text}");

    let resp = app.post_signed("/incoming-call", &as_refs(&inbound(CALL, number))).await;
    assert_eq!(resp.status(), 200);
    sampler.sample().await.unwrap();
    let text = scrape(&app.client, &app.url).await;
    assert_eq!(value(&text, "call_router_callers_waiting", &[("location", "gauges")]), Some(1.0), "{text}");
    assert_eq!(value(&text, "call_router_lines_in_use", &[("location", "gauges")]), Some(0.0), "{text}");
}

#[tokio::test]
async fn metrics_listen_serves_metrics_on_its_own_address_only() {
    let app = spawn_app_tuned("", |s| s.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let at = app.server.metrics_addr.expect("a metrics address");
    assert_ne!(at, app.server.addr);
    let text = scrape(&app.client, &format!("http://{at}")).await;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(value(&text, "call_router_build_info", &[("version", version)]), Some(1.0), "{text}");

    let resp = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // The webhooks stay on the main address.
    let resp = app.client.get(format!("http://{at}/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app.client.get(format!("{}/healthz", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
