//! The history API (`/api/`): off without an admin token, and behind it
//! when on. The resources' own tests sit with each resource below.

mod common;

use common::*;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub async fn spawn_api() -> TestApp {
    spawn_app_with(&format!("[admin]\ntoken = \"{ADMIN}\"")).await
}

#[tokio::test]
async fn without_a_token_the_api_is_not_served() {
    let app = spawn_app().await;
    let resp = app.client.get(format!("{}/api/openapi.json", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_names_the_bearer_scheme() {
    let app = spawn_api().await;
    let resp = app.client.get(format!("{}/api/openapi.json", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer", "{doc}");
}

#[tokio::test]
async fn a_short_admin_token_is_refused_at_load() {
    let err = call_router::config::Settings::from_toml(
        &settings_toml("http://127.0.0.1:1", "http://127.0.0.1:2", "sqlite::memory:", "[admin]\ntoken = \"short\""),
        |_| None,
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("admin.token: must be at least 16"), "{err}");
}

// -- helpers --------------------------------------------------------------

const NORTH_CALLER: &str = "+13105550101";

fn inbound(call: &str, to: &str, from: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AccountSid", ACCOUNT.to_owned()),
        ("CallSid", call.to_owned()),
        ("From", from.to_owned()),
        ("To", to.to_owned()),
        ("CallStatus", "ringing".to_owned()),
        ("Direction", "inbound".to_owned()),
    ]
}

fn call_sid(n: u32) -> String {
    format!("CA{n:032x}")
}

/// A caller rings `to` (a number of `common`'s locations).
async fn ring(app: &TestApp, call: &str, to: &str, from: &str) {
    let resp = app.post_signed("/incoming-call", &as_refs(&inbound(call, to, from))).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// A TaskRouter event about the reservation `n` of `call` at north.
async fn taskrouter(app: &TestApp, event_type: &str, call: &str, n: u32) -> (String, String) {
    let (task, res) = (format!("WT{n:032x}"), format!("WR{n:032x}"));
    let attrs = format!(
        r#"{{"location":"north","practicePhone":"+14155550123","callerID":"{TWILIO_NUMBER}","caller":"{NORTH_CALLER}","call_sid":"{call}"}}"#
    );
    let mut event = reservation_created(&task, &res, &attrs);
    event[0].1 = event_type.to_owned();
    let resp = app.post_signed("/tr-event-handler", &as_refs(&event)).await;
    assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap());
    (task, res)
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(format!("{}{path}", app.url)).bearer_auth(ADMIN).send().await.unwrap()
}

async fn get_json(app: &TestApp, path: &str) -> serde_json::Value {
    let resp = get(app, path).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

fn sids(page: &serde_json::Value) -> Vec<String> {
    page["calls"].as_array().unwrap().iter().map(|c| c["call_sid"].as_str().unwrap().to_owned()).collect()
}

fn board_of<'a>(board: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    board["locations"].as_array().unwrap().iter().find(|l| l["name"] == name).unwrap()
}

// -- auth and the document -----------------------------------------------------

#[tokio::test]
async fn every_documented_route_needs_the_token_and_answers_with_it() {
    let app = spawn_api().await;
    let call = call_sid(0x100);
    ring(&app, &call, TWILIO_NUMBER, NORTH_CALLER).await;
    let doc: serde_json::Value =
        app.client.get(format!("{}/api/openapi.json", app.url)).send().await.unwrap().json().await.unwrap();
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    for ours in ["/api/calls", "/api/calls/{call_sid}", "/api/locations", "/api/stream"] {
        assert!(paths.iter().any(|p| p == ours), "{ours} is not in the document: {paths:?}");
    }
    let token = secrecy::SecretString::from(ADMIN);
    let cookie =
        format!("{}={}", call_router::api::auth::SESSION_COOKIE, call_router::api::auth::session_value(&token));
    let mut checked = 0;
    for path in &paths {
        if doc["paths"][path].get("get").is_none() {
            continue;
        }
        let url = format!("{}{}", app.url, path.replace("{call_sid}", &call));
        let none = app.client.get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path} without a token");
        let wrong = app.client.get(&url).bearer_auth("not-the-admin-token-at-all").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let body: serde_json::Value = wrong.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
        let stale = app.client.get(&url).header("cookie", "call_router_session=00").send().await.unwrap();
        assert_eq!(stale.status(), 401, "{path} with a wrong cookie");
        if path.contains('{') && !path.contains("{call_sid}") {
            continue; // another resource's SID: its own tests cover it
        }
        let bearer = app.client.get(&url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(bearer.status(), 200, "{path} with the token");
        let session = app.client.get(&url).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(session.status(), 200, "{path} with the session cookie");
        checked += 1;
    }
    assert!(checked >= 4, "{paths:?}");
    // Each operation names its responses, and their schemas are in the document.
    for name in ["CallPage", "CallSummary", "CallDetail", "TimelineEntry", "Board", "LocationBoard", "ErrorBody"] {
        assert!(doc["components"]["schemas"][name].is_object(), "schema {name} missing");
    }
    assert!(
        doc["paths"]["/api/calls"]["get"]["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "cursor"),
        "the query parameters are documented"
    );
}

// -- calls ---------------------------------------------------------------------

#[tokio::test]
async fn calls_filter_by_location_outcome_caller_and_time_and_page_through_the_cursor() {
    let app = spawn_api().await;
    let start = jiff::Timestamp::now();
    // Two calls at north (one leaves the queue after 7 s), two at night (closed).
    let (a, b, c, d) = (call_sid(1), call_sid(2), call_sid(3), call_sid(4));
    ring(&app, &a, TWILIO_NUMBER, NORTH_CALLER).await;
    let mut left = inbound(&a, TWILIO_NUMBER, NORTH_CALLER);
    left.extend([("QueueResult", "hangup".to_owned()), ("QueueTime", "7".to_owned())]);
    assert_eq!(app.post_signed("/enqueue-action?location=north", &as_refs(&left)).await.status(), 200);
    ring(&app, &b, CLOSED_NUMBER, "+13105550102").await;
    ring(&app, &c, TWILIO_NUMBER, "+13105550103").await;
    ring(&app, &d, CLOSED_NUMBER, "+13105550102").await;

    let all = get_json(&app, "/api/calls").await;
    assert_eq!(sids(&all), [d.clone(), c.clone(), b.clone(), a.clone()], "newest first");
    assert!(all["next_cursor"].is_null());
    let first = &all["calls"][3];
    assert_eq!(first["caller"], NORTH_CALLER);
    assert_eq!(first["to"], TWILIO_NUMBER);
    assert_eq!(first["location"], "north");
    assert_eq!(first["outcome"], "caller_hung_up");
    assert_eq!(first["wait_secs"], 7);
    assert_eq!(first["has_voicemail"], false);
    assert!(first["ended_at"].is_string(), "it left the queue and its journey closed: {first}");
    let waiting = &all["calls"][1];
    for key in ["ended_at", "wait_secs", "task_sid", "reservation_sid", "outbound_call_sid", "answered_by"] {
        assert!(waiting.get(key).is_some_and(|v| v.is_null()), "{key} is null, not omitted: {waiting}");
    }
    let started: jiff::Timestamp = first["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started >= start.checked_sub(jiff::SignedDuration::from_millis(1)).unwrap(), "{first}");
    assert_eq!(all["calls"][1]["outcome"], "pending");

    assert_eq!(sids(&get_json(&app, "/api/calls?location=north").await), [c.clone(), a.clone()]);
    assert_eq!(sids(&get_json(&app, "/api/calls?outcome=after_hours").await), [d.clone(), b.clone()]);
    assert_eq!(sids(&get_json(&app, "/api/calls?outcome=pending&location=north").await), [c.as_str()]);
    assert_eq!(sids(&get_json(&app, "/api/calls?caller=%2B13105550102").await), [d.clone(), b.clone()]);
    assert_eq!(sids(&get_json(&app, "/api/calls?location=nowhere").await), Vec::<String>::new());
    let t = |ts: jiff::Timestamp| ts.to_string().replace('+', "%2B");
    let later = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_secs(60)).unwrap();
    let earlier = start.checked_sub(jiff::SignedDuration::from_secs(60)).unwrap();
    assert_eq!(sids(&get_json(&app, &format!("/api/calls?from={}", t(later))).await), Vec::<String>::new());
    assert_eq!(sids(&get_json(&app, &format!("/api/calls?to={}", t(earlier))).await), Vec::<String>::new());
    let window = format!("/api/calls?from={}&to={}", t(earlier), t(later));
    assert_eq!(sids(&get_json(&app, &window).await).len(), 4);

    // One at a time: every call once, in order, and the last page says so.
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/calls?limit=1&cursor={c}"),
            None => "/api/calls?limit=1".to_owned(),
        };
        let page = get_json(&app, &path).await;
        seen.extend(sids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, sids(&all), "no call repeated or missed");
    // A filter holds across pages.
    let page = get_json(&app, "/api/calls?limit=1&location=north").await;
    let next = page["next_cursor"].as_str().unwrap();
    assert_eq!(sids(&get_json(&app, &format!("/api/calls?limit=1&location=north&cursor={next}")).await), [a.as_str()]);

    for (query, names) in [
        ("cursor=zz", "cursor"),
        ("cursor=3132", "cursor"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=many", "limit"),
        ("outcome=won", "outcome"),
        ("from=yesterday", "from"),
        ("to=2026-02-30T00:00:00Z", "to"),
    ] {
        let resp = get(&app, &format!("/api/calls?{query}")).await;
        assert_eq!(resp.status(), 400, "{query}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().starts_with(names), "{query}: {body}");
    }
}

#[tokio::test]
async fn a_calls_timeline_has_its_webhooks_statuses_and_actions_in_order() {
    let app = spawn_api().await;
    let call = call_sid(0x200);
    ring(&app, &call, TWILIO_NUMBER, NORTH_CALLER).await;
    let (task, res) = taskrouter(&app, "reservation.created", &call, 0x200).await;
    // The dispatcher places the location's leg.
    app.fake.wait_for(1, |r| r.path.ends_with("/Calls.json")).await;
    taskrouter(&app, "reservation.accepted", &call, 0x200).await;
    let mut done = inbound(&call, TWILIO_NUMBER, NORTH_CALLER);
    done[4].1 = "completed".to_owned();
    done.extend([("SequenceNumber", "2".to_owned()), ("CallDuration", "31".to_owned())]);
    assert_eq!(app.post_signed("/status-callback", &as_refs(&done)).await.status(), 200);

    let detail = get_json(&app, &format!("/api/calls/{call}")).await;
    assert_eq!(detail["call_sid"], call.as_str());
    assert_eq!(detail["outcome"], "connected");
    assert_eq!(detail["task_sid"], task.as_str());
    assert_eq!(detail["reservation_sid"], res.as_str());
    assert!(detail["ended_at"].is_string(), "{detail}");
    assert_eq!(detail["state"]["location"], "north", "{detail}");
    let timeline = detail["timeline"].as_array().unwrap();
    let at: Vec<jiff::Timestamp> = timeline.iter().map(|e| e["at"].as_str().unwrap().parse().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "oldest first: {timeline:#?}");
    let position = |source: &str, kind: &str| {
        timeline
            .iter()
            .position(|e| e["source"] == source && e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {source} {kind} in {timeline:#?}"))
    };
    let created = position("webhook", "reservation.created");
    let dial = position("action", "dial");
    let accepted = position("webhook", "reservation.accepted");
    let completed = position("status", "completed");
    assert!(position("journey", "began") < created, "{timeline:#?}");
    assert!(created < dial && dial < accepted && accepted < completed, "{timeline:#?}");
    assert_eq!(timeline[created]["detail"]["params"]["ReservationSid"], res.as_str());
    assert_eq!(timeline[dial]["detail"]["key"], format!("dial:{res}"));
    assert_eq!(timeline[completed]["detail"]["leg"], "caller");
    assert_eq!(timeline[completed]["detail"]["call_duration_secs"], 31);

    let missing = get(&app, &format!("/api/calls/{}", call_sid(0xdead))).await;
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains(&call_sid(0xdead)), "{body}");
}

// -- locations -----------------------------------------------------------------

#[tokio::test]
async fn the_board_follows_a_caller_from_the_queue_to_a_line() {
    let app = spawn_api().await;
    let board = get_json(&app, "/api/locations").await;
    let names: Vec<&str> = board["locations"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["east", "night", "north", "west"]);
    let north = board_of(&board, "north");
    assert_eq!((north["open"].as_bool(), north["next_change"].is_null()), (Some(true), true), "always open: {north}");
    assert_eq!(north["time_zone"], "America/New_York");
    assert_eq!(north["display_name"], "north clinic");
    assert_eq!(
        (north["waiting"].as_i64(), north["lines_in_use"].as_i64(), north["lines"].as_i64()),
        (Some(0), Some(0), Some(1))
    );
    assert!(north["longest_wait_secs"].is_null());
    assert_eq!(north["today"], serde_json::json!({}));
    let night = board_of(&board, "night");
    assert_eq!((night["open"].as_bool(), night["next_change"].is_null()), (Some(false), true), "never open: {night}");

    let call = call_sid(0x300);
    ring(&app, &call, TWILIO_NUMBER, NORTH_CALLER).await;
    ring(&app, &call_sid(0x301), CLOSED_NUMBER, "+13105550111").await;
    let board = get_json(&app, "/api/locations").await;
    let north = board_of(&board, "north");
    assert_eq!((north["waiting"].as_i64(), north["lines_in_use"].as_i64()), (Some(1), Some(0)), "{north}");
    assert!(north["longest_wait_secs"].as_i64().is_some_and(|s| s >= 0), "{north}");
    assert_eq!(board_of(&board, "night")["today"], serde_json::json!({"after_hours": 1}));

    taskrouter(&app, "reservation.created", &call, 0x300).await;
    taskrouter(&app, "reservation.accepted", &call, 0x300).await;
    let board = get_json(&app, "/api/locations").await;
    let north = board_of(&board, "north");
    assert_eq!((north["waiting"].as_i64(), north["lines_in_use"].as_i64()), (Some(0), Some(1)), "{north}");
    assert!(north["longest_wait_secs"].is_null());
    assert_eq!(north["today"], serde_json::json!({"connected": 1}));
}

// -- stream --------------------------------------------------------------------

/// Reads server-sent events until `want` of them have come: (event, data).
async fn read_events(resp: &mut reqwest::Response, buf: &mut String, want: usize) -> Vec<(String, serde_json::Value)> {
    let mut events = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let name = block.lines().find_map(|l| l.strip_prefix("event:")).map(|s| s.trim().to_owned());
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            if let Some(name) = name {
                events.push((name, serde_json::from_str(&data).unwrap()));
                if events.len() == want {
                    return events;
                }
            }
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is still open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_stream_sends_the_board_calls_and_voicemails_at_once_then_on_change() {
    let app = spawn_api().await;
    let mut resp = get(&app, "/api/stream").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut buf = String::new();
    let first = read_events(&mut resp, &mut buf, 3).await;
    assert_eq!(first[0].0, "board");
    assert_eq!(first[0].1, get_json(&app, "/api/locations").await, "the same body as GET /api/locations");
    assert_eq!(first[1].0, "calls");
    assert_eq!(first[1].1, serde_json::json!({"calls": [], "next_cursor": null}));
    assert_eq!(first[2].0, "voicemails");
    assert_eq!(first[2].1, serde_json::json!({"voicemails": [], "next_cursor": null}));

    let call = call_sid(0x400);
    ring(&app, &call, TWILIO_NUMBER, NORTH_CALLER).await;
    // Both change: north has a caller waiting, and the call is listed.
    let next = read_events(&mut resp, &mut buf, 2).await;
    let calls = next.iter().find(|(n, _)| n == "calls").expect("a calls event");
    assert_eq!(sids(&calls.1), [call.as_str()]);
    let board = next.iter().find(|(n, _)| n == "board").expect("a board event");
    assert_eq!(board_of(&board.1, "north")["waiting"], 1);
    assert!(next.iter().all(|(n, _)| n != "voicemails"), "no voicemail yet: {next:?}");

    // The caller leaves a voicemail: the list is sent again, with it.
    let recording = format!("RE{:032x}", 0x400);
    let mut params = inbound(&call, TWILIO_NUMBER, NORTH_CALLER);
    params.extend([
        ("RecordingSid", recording.clone()),
        ("RecordingUrl", format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{recording}")),
        ("RecordingDuration", "9".to_owned()),
    ]);
    let posted = app.post_signed("/voicemail-complete?location=north", &as_refs(&params)).await;
    assert_eq!(posted.status(), 200);
    let vm = loop {
        let [(name, body)] = read_events(&mut resp, &mut buf, 1).await.try_into().unwrap();
        if name == "voicemails" {
            break body;
        }
    };
    assert_eq!(vm["voicemails"][0]["recording_sid"], recording.as_str(), "{vm}");
    assert_eq!(vm["voicemails"][0]["listened"], false);
    assert!(vm.to_string().find("api.twilio.com").is_none(), "the recording's URL stays on the server: {vm}");
    // A draining server ends the stream rather than waiting for the client.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(5), app.server.shutdown()).await;
    drained.expect("the shutdown did not wait for the stream").unwrap();
    let rest = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}

/// A callback ended at closing time by its location's policy sits in the voicemail list as a
/// callback request: listed with whom to call and since when, without audio, marked done like a
/// voicemail is marked listened, and paged through by its id like a recording's.
#[tokio::test]
async fn a_callback_request_is_listed_without_audio_and_can_be_marked_done() {
    use call_router::journey::{Event, Policy};
    let app = spawn_api().await;
    let store = app.server.state.store().clone();
    let policy = Policy::from_settings(app.server.state.settings());
    let call = call_sid(0x500);
    let number = twilio::E164::parse(NORTH_CALLER).unwrap();
    let events = vec![
        Event::CallerArrived { call: call.parse().unwrap() },
        Event::CallerEnqueued { location: "north".into(), language: None },
        Event::CallbackChosen { number, tries: 1, wait_for_opening: false, to_list: true },
        Event::ClosingTime { at_ms: 1_000, later: Vec::new(), callback: None, overflow: None },
    ];
    store.deliver(call_router::store::Delivery::to_keys([call.clone()], events, policy)).await.unwrap();
    // And a recording, left later by another caller.
    let recording = format!("RE{:032x}", 0x501);
    let mut params = inbound(&call_sid(0x501), TWILIO_NUMBER, "+13105550102");
    params.extend([
        ("RecordingSid", recording.clone()),
        ("RecordingUrl", format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{recording}")),
        ("RecordingDuration", "9".to_owned()),
    ]);
    assert_eq!(app.post_signed("/voicemail-complete?location=north", &as_refs(&params)).await.status(), 200);

    let page = get_json(&app, "/api/voicemails?limit=1").await;
    assert_eq!(page["voicemails"][0]["kind"], "recording", "{page}");
    let cursor = page["next_cursor"].as_str().expect("a second page").to_owned();
    let page = get_json(&app, &format!("/api/voicemails?limit=1&cursor={cursor}")).await;
    let id = call_router::store::callback_request_id(&call);
    let cb = &page["voicemails"][0];
    assert_eq!(cb["recording_sid"], id.as_str(), "{page}");
    assert_eq!(cb["kind"], "callback_request");
    assert_eq!(
        (&cb["caller"], &cb["location"], &cb["call_sid"]),
        (&NORTH_CALLER.into(), &"north".into(), &call.clone().into())
    );
    assert_eq!(cb["audio_url"], serde_json::Value::Null);
    assert!(cb["waiting_since"].as_str().is_some_and(|t| t.ends_with('Z')), "{cb}");
    assert_eq!(cb["listened"], false);
    // Paging on past it: the end.
    let after = page["next_cursor"].clone();
    assert_eq!(after, serde_json::Value::Null, "{page}");
    let cursor = format!("{}.{id}", recorded_ms(cb));
    let rest = get_json(&app, &format!("/api/voicemails?cursor={cursor}")).await;
    assert_eq!(rest["voicemails"], serde_json::json!([]), "a cursor at a callback request is one this API gave");

    let audio = get(&app, &format!("/api/voicemails/{id}/audio")).await;
    assert_eq!(audio.status(), 404);
    assert!(audio.text().await.unwrap().contains("callback request"), "the reason is said");
    let done = app.client.post(format!("{}/api/voicemails/{id}/listened", app.url)).bearer_auth(ADMIN).send();
    assert_eq!(done.await.unwrap().status(), 204);
    let new = get_json(&app, "/api/voicemails?listened=false").await;
    assert_eq!(sids_of_voicemails(&new), [recording]);
}

/// The milliseconds of a listed voicemail's `recorded_at`.
fn recorded_ms(v: &serde_json::Value) -> i64 {
    let t: jiff::Timestamp = v["recorded_at"].as_str().unwrap().parse().unwrap();
    t.as_millisecond()
}

fn sids_of_voicemails(page: &serde_json::Value) -> Vec<String> {
    page["voicemails"].as_array().unwrap().iter().map(|v| v["recording_sid"].as_str().unwrap().to_owned()).collect()
}
