//! The server on port 0 against a recording fake of Twilio's API: the exact
//! TwiML it returns and the exact requests it makes.

mod common;

use common::*;
use twilio::twiml::{DialNoun, Response, Verb};

const CALL: &str = "CA00000000000000000000000000000001";
const TASK: &str = "WT00000000000000000000000000000001";
const RES: &str = "WR00000000000000000000000000000001";
const CALLER: &str = "+13105550199";

fn inbound(to: &str) -> Vec<(&'static str, &'static str)> {
    let to: &'static str = Box::leak(to.to_owned().into_boxed_str());
    vec![
        ("AccountSid", ACCOUNT),
        ("CallSid", CALL),
        ("From", CALLER),
        ("To", to),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
    ]
}

async fn twiml(resp: reqwest::Response) -> Response {
    assert_eq!(resp.status(), 200, "unexpected status");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/xml"));
    Response::parse(&resp.text().await.unwrap()).expect("the server's TwiML parses")
}

fn attrs(task_json: &str) -> serde_json::Value {
    serde_json::from_str(task_json).unwrap()
}

#[tokio::test]
async fn single_location_caller_is_enqueued_with_the_task() {
    let app = spawn_app().await;
    let doc = twiml(app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await).await;
    let enqueue = doc
        .verbs
        .iter()
        .find_map(|v| if let Verb::Enqueue(e) = v { Some(e.clone()) } else { None })
        .expect("an Enqueue");
    assert_eq!(enqueue.workflow_sid.as_deref(), Some(WORKFLOW));
    assert_eq!(enqueue.wait_url.as_deref(), Some(format!("{}/hold?location=north", app.url).as_str()));
    let task = attrs(&enqueue.task.unwrap().attributes);
    assert_eq!(task["location"], "north");
    assert_eq!(task["practicePhone"], "+14155550123");
    assert_eq!(task["callerID"], TWILIO_NUMBER);
    assert_eq!(task["caller"], CALLER);
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.location.as_deref(), Some("north"));
}

#[tokio::test]
async fn shared_number_offers_a_menu_and_routes_by_digit() {
    let app = spawn_app().await;
    let doc = twiml(app.post_signed("/incoming-call", &inbound(SHARED_NUMBER)).await).await;
    let Verb::Gather(g) = &doc.verbs[0] else { panic!("expected a Gather first: {doc:?}") };
    assert_eq!(g.num_digits, Some(1));
    assert!(matches!(doc.verbs[1], Verb::Redirect(_)), "no input falls through to a redirect");

    let mut params = inbound(SHARED_NUMBER);
    params.push(("Digits", "2"));
    let doc = twiml(app.post_signed("/menu?attempt=0", &params).await).await;
    let task = doc.verbs.iter().find_map(|v| if let Verb::Enqueue(e) = v { e.task.clone() } else { None }).unwrap();
    assert_eq!(attrs(&task.attributes)["location"], "west");
}

#[tokio::test]
async fn invalid_menu_input_repeats_then_goes_to_the_business_voicemail() {
    let app = spawn_app().await;
    twiml(app.post_signed("/incoming-call", &inbound(SHARED_NUMBER)).await).await;
    let mut params = inbound(SHARED_NUMBER);
    params.push(("Digits", "9"));
    let doc = twiml(app.post_signed("/menu?attempt=0", &params).await).await;
    assert!(matches!(doc.verbs[0], Verb::Gather(_)), "first bad input repeats the menu");
    // No digits on the last attempt: by default, the business's voicemail, no location.
    let doc = twiml(app.post_signed("/menu?attempt=1", &inbound(SHARED_NUMBER)).await).await;
    assert!(!doc.verbs.iter().any(|v| matches!(v, Verb::Enqueue(_))), "{doc:?}");
    let Some(Verb::Record(record)) = doc.verbs.iter().find(|v| matches!(v, Verb::Record(_))) else {
        panic!("expected voicemail: {doc:?}")
    };
    assert!(record.action.as_deref().unwrap().contains("/voicemail-complete?location="), "{record:?}");
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!((call.outcome.as_str(), call.location), ("no_choice", None));
}

#[tokio::test]
async fn the_no_choice_policy_can_say_goodbye_or_route_to_a_named_location() {
    let app = spawn_app_with("[ivr]\non_no_choice = \"goodbye\"").await;
    twiml(app.post_signed("/incoming-call", &inbound(SHARED_NUMBER)).await).await;
    let doc = twiml(app.post_signed("/menu?attempt=1", &inbound(SHARED_NUMBER)).await).await;
    assert!(matches!(doc.verbs.last(), Some(Verb::Hangup)), "{doc:?}");
    assert!(!doc.verbs.iter().any(|v| matches!(v, Verb::Enqueue(_) | Verb::Record(_))), "{doc:?}");
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome.as_str(), "no_choice");

    let app = spawn_app_with("[ivr]\non_no_choice = \"location:west\"").await;
    let doc = twiml(app.post_signed("/menu?attempt=1", &inbound(SHARED_NUMBER)).await).await;
    let task = doc.verbs.iter().find_map(|v| if let Verb::Enqueue(e) = v { e.task.clone() } else { None }).unwrap();
    assert_eq!(attrs(&task.attributes)["location"], "west");
}

#[tokio::test]
async fn after_hours_offers_voicemail_and_records_the_outcome() {
    let app = spawn_app().await;
    let doc = twiml(app.post_signed("/incoming-call", &inbound(CLOSED_NUMBER)).await).await;
    assert!(doc.verbs.iter().any(|v| matches!(v, Verb::Record(_))), "{doc:?}");
    assert!(!doc.verbs.iter().any(|v| matches!(v, Verb::Enqueue(_))));
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome.as_str(), "after_hours");
}

#[tokio::test]
async fn unknown_number_is_not_in_service() {
    let app = spawn_app().await;
    let doc = twiml(app.post_signed("/incoming-call", &inbound("+12025550199")).await).await;
    assert!(matches!(doc.verbs.last(), Some(Verb::Hangup)));
}

fn task_json() -> String {
    format!(
        r#"{{"location":"north","practicePhone":"+14155550123","callerID":"{TWILIO_NUMBER}","caller":"{CALLER}","call_sid":"{CALL}"}}"#
    )
}

#[tokio::test]
async fn reservation_created_dials_the_location_exactly_once() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let event = reservation_created(TASK, RES, &task_json());
    let resp = app.post_signed("/tr-event-handler", &as_refs(&event)).await;
    assert_eq!(resp.status(), 204);
    // Twilio retries webhooks; a duplicate must not dial twice.
    let resp = app.post_signed("/tr-event-handler", &as_refs(&event)).await;
    assert_eq!(resp.status(), 204);

    let calls = app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with("/Calls.json")).await;
    let req = &calls[0];
    assert_eq!(req.path, format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json"));
    assert!(req.authorized, "basic auth with the account SID and token");
    let p = &req.params;
    assert_eq!(p.get("To"), Some("+14155550123"));
    assert_eq!(p.get("From"), Some(TWILIO_NUMBER));
    let url = p.get("Url").unwrap();
    assert!(url.starts_with(&format!("{}/dial-queue?", app.url)), "{url}");
    assert!(url.contains(&format!("reservationSid={RES}")), "{url}");
    // The + of an E.164 number is percent-encoded, so it survives decoding.
    assert!(url.contains("from=%2B12025550143"), "{url}");
    assert_eq!(
        twilio::signature::query_param(url, "from").as_deref(),
        Some(TWILIO_NUMBER),
        "the number decodes back with its +"
    );
    assert!(p.get("StatusCallback").unwrap().starts_with(&format!("{}/status-callback?", app.url)));
    assert_eq!(p.get_all("StatusCallbackEvent").collect::<Vec<_>>(), ["initiated", "ringing", "answered", "completed"]);
    assert_eq!(p.get("MachineDetection"), Some("Enable"));
    assert_eq!(p.get("MachineDetectionSpeechThreshold"), Some("2400"));
    assert_eq!(p.get("Timeout"), Some("20"));

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let dials =
        app.fake.requests().into_iter().filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json")).count();
    assert_eq!(dials, 1, "one dial per reservation");
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.reservation_sid.as_deref(), Some(RES));
}

#[tokio::test]
async fn malformed_events_get_a_4xx_with_a_reason() {
    let app = spawn_app().await;
    let cases = [
        ("{not json", "TaskAttributes is not valid task JSON"),
        (r#"{"location":"north","callerID":"+12025550143"}"#, "practicePhone"),
        (r#"{"location":"north","practicePhone":"555","callerID":"+12025550143"}"#, "E.164"),
    ];
    for (attributes, reason) in cases {
        let event = reservation_created(TASK, RES, attributes);
        let resp = app.post_signed("/tr-event-handler", &as_refs(&event)).await;
        assert_eq!(resp.status(), 400, "{attributes}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(reason), "{attributes}: {body}");
    }
    let mut event = reservation_created(TASK, RES, &task_json());
    event.retain(|(k, _)| *k != "ReservationSid");
    let resp = app.post_signed("/tr-event-handler", &as_refs(&event)).await;
    assert_eq!(resp.status(), 400);
    // (The reconciler's reads are GETs; nothing may be created or changed.)
    assert!(app.fake.requests().iter().all(|r| r.method == "GET"), "nothing was dialled");
}

#[tokio::test]
async fn signatures_accounts_and_workspaces_are_checked() {
    let app = spawn_app().await;
    let params = inbound(TWILIO_NUMBER);
    let missing = app.post_with_signature("/incoming-call", &params, None).await;
    assert_eq!(missing.status(), 400);
    let wrong = app.post_with_signature("/incoming-call", &params, Some("bm90IHRoZSBzaWduYXR1cmU=")).await;
    assert_eq!(wrong.status(), 403);
    // Signed with another token.
    let url = format!("{}/incoming-call", app.url);
    let forged = twilio::signature::sign(b"other-token", &url, params.iter().copied());
    assert_eq!(app.post_with_signature("/incoming-call", &params, Some(&forged)).await.status(), 403);
    // A correctly signed request for another account.
    let mut other = params.clone();
    other[0] = ("AccountSid", "AC99999999999999999999999999999999");
    assert_eq!(app.post_signed("/incoming-call", &other).await.status(), 403);
    // An event from another workspace.
    let mut event = reservation_created(TASK, RES, &task_json());
    event[2] = ("WorkspaceSid", "WS99999999999999999999999999999999".into());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event)).await.status(), 403);
    // (The reconciler's reads are GETs; nothing may be created or changed.)
    assert!(app.fake.requests().iter().all(|r| r.method == "GET"), "{:?}", app.fake.requests());
}

/// Provisioning will configure webhook URLs with connection overrides in the
/// fragment. Twilio neither sends nor signs a fragment, so a request for such
/// a URL, signed as Twilio signs it, validates against the public URL, path
/// and query; a MAC over the whole configured string, fragment included, is
/// refused. GET parameters go into the query, before the fragment.
#[tokio::test]
async fn webhooks_configured_with_connection_overrides_validate() {
    use twilio::signature::{append_query, sign, signed_url};
    const OVERRIDES: &str = "rc=2&rp=ct,5xx";
    let app = spawn_app().await;
    let mut menu = inbound(SHARED_NUMBER);
    menu.push(("Digits", "2"));
    let event = vec![
        ("EventType", "worker.activity.update"),
        ("AccountSid", ACCOUNT),
        ("WorkspaceSid", WORKSPACE),
        ("ResourceSid", "WK0123456789abcdef0123456789abcdef"),
    ];
    let hold = vec![("AccountSid", ACCOUNT), ("CallSid", CALL), ("QueueTime", "5")];
    let cases = [
        ("POST", "/incoming-call", inbound(TWILIO_NUMBER), 200),
        ("POST", "/menu?attempt=0", menu, 200),
        ("POST", "/tr-event-handler", event, 204),
        ("GET", "/hold?location=north", hold, 200),
    ];
    for (method, path, params, want) in cases {
        let configured = format!("{}{path}#{OVERRIDES}", app.url);
        let form: twilio::Params = params.iter().map(|(k, v)| (*k, *v)).collect();
        let (url, body, signed_params) = if method == "GET" {
            (append_query(&configured, &form.encode()), None, Vec::new())
        } else {
            (configured.clone(), Some(form.encode()), params.clone())
        };
        assert!(url.ends_with(&format!("#{OVERRIDES}")), "{url}");
        let send = |sig: String| {
            // reqwest, like Twilio, leaves the fragment out of the request.
            let req = match &body {
                Some(b) => {
                    app.client.post(&url).header("content-type", "application/x-www-form-urlencoded").body(b.clone())
                }
                None => app.client.get(&url),
            };
            req.header("x-twilio-signature", sig).send()
        };
        let twilio_sig = sign(TOKEN.as_bytes(), &url, signed_params.iter().copied());
        assert_eq!(send(twilio_sig).await.unwrap().status(), want, "{method} {url} signed as Twilio signs");

        // The signed string is the URL then each sorted key and value; a key
        // of `#…` sorts before every parameter name, so this is a MAC over
        // the configured URL with its fragment, then the parameters.
        let fragment_key = format!("#{OVERRIDES}");
        let with_fragment = sign(
            TOKEN.as_bytes(),
            signed_url(&url),
            std::iter::once((fragment_key.as_str(), "")).chain(signed_params.iter().copied()),
        );
        assert_eq!(send(with_fragment).await.unwrap().status(), 403, "{method} {url} signed with its fragment");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = spawn_app().await;
    let big = "x".repeat(70 * 1024);
    let resp = app.post_signed("/incoming-call", &[("AccountSid", ACCOUNT), ("Junk", &big)]).await;
    assert!(resp.status() == 413 || resp.status() == 400, "{}", resp.status());
}

#[tokio::test]
async fn a_person_is_bridged_to_the_reservation() {
    let app = spawn_app().await;
    let q =
        format!("/dial-queue?reservationSid={RES}&taskSid={TASK}&location=north&from=%2B12025550143&callSid={CALL}");
    let params = [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000002"), ("AnsweredBy", "human")];
    let resp = app.post_signed(&q, &params).await;
    let body = resp.text().await.unwrap();
    assert_eq!(
        body,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Queue reservationSid="{RES}"/></Dial></Response>"#
        )
    );
}

#[tokio::test]
async fn a_machine_is_hung_up_on_and_the_caller_gets_voicemail() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let q =
        format!("/dial-queue?reservationSid={RES}&taskSid={TASK}&location=north&from=%2B12025550143&callSid={CALL}");
    let params =
        [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000002"), ("AnsweredBy", "machine_start")];
    let doc = twiml(app.post_signed(&q, &params).await).await;
    assert_eq!(doc.verbs, [Verb::Hangup]);

    let redirect =
        app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with(&format!("/Calls/{CALL}.json"))).await;
    let url = redirect[0].params.get("Url").unwrap();
    assert!(url.contains("/caller-fallback?location=north&reason=location_voicemail"), "{url}");
    let cancel = app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with(&format!("/Tasks/{TASK}"))).await;
    assert_eq!(cancel[0].path, format!("/v1/Workspaces/{WORKSPACE}/Tasks/{TASK}"));
    assert_eq!(cancel[0].params.get("AssignmentStatus"), Some("canceled"));
    assert_eq!(app.server.state.store().call(CALL).await.unwrap().unwrap().outcome.as_str(), "location_voicemail");

    // The fallback TwiML offers a recording.
    let doc = twiml(app.post_signed(url.strip_prefix(&app.url).unwrap(), &inbound(TWILIO_NUMBER)).await).await;
    assert!(doc.verbs.iter().any(|v| matches!(v, Verb::Record(_))));
}

#[tokio::test]
async fn machine_can_be_bridged_by_policy() {
    let app = spawn_app_with("[dialing]\non_machine = \"bridge\"").await;
    let q = format!("/dial-queue?reservationSid={RES}&callSid={CALL}");
    let params =
        [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000002"), ("AnsweredBy", "machine_start")];
    let doc = twiml(app.post_signed(&q, &params).await).await;
    assert!(matches!(&doc.verbs[0], Verb::Dial(d) if matches!(&d.nouns[0], DialNoun::Queue(_))));
}

#[tokio::test]
async fn busy_location_sends_the_caller_to_voicemail_and_records_every_status() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let q = format!("/status-callback?reservationSid={RES}&taskSid={TASK}&location=north&callSid={CALL}");
    let outbound = "CA00000000000000000000000000000002";
    for (seq, status) in [("0", "initiated"), ("1", "ringing"), ("2", "busy")] {
        let mut p =
            vec![("AccountSid", ACCOUNT), ("CallSid", outbound), ("CallStatus", status), ("SequenceNumber", seq)];
        if status == "busy" {
            p.push(("SipResponseCode", "486"));
            p.push(("CallDuration", "0"));
        }
        assert_eq!(app.post_signed(&q, &p).await.status(), 200);
    }
    let store = app.server.state.store();
    let statuses = store.statuses(outbound).await.unwrap();
    assert_eq!(statuses.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["initiated", "ringing", "busy"]);
    assert_eq!(statuses[2].sip_response_code, Some(486));
    assert_eq!(store.call(CALL).await.unwrap().unwrap().outcome.as_str(), "location_busy");
    app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with(&format!("/Calls/{CALL}.json"))).await;
    app.fake
        .wait_for(1, |r| {
            r.path.ends_with(&format!("/Tasks/{TASK}")) && r.params.get("AssignmentStatus") == Some("canceled")
        })
        .await;
}

#[tokio::test]
async fn wrapup_completes_the_task_with_a_reason() {
    let app = spawn_app().await;
    let event = [
        ("EventType", "reservation.wrapup"),
        ("AccountSid", ACCOUNT),
        ("WorkspaceSid", WORKSPACE),
        ("TaskSid", TASK),
        ("ReservationSid", RES),
    ];
    assert_eq!(app.post_signed("/tr-event-handler", &event).await.status(), 204);
    let done = app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with(&format!("/Tasks/{TASK}"))).await;
    assert_eq!(done[0].method, "POST");
    assert_eq!(done[0].params.get("AssignmentStatus"), Some("completed"));
    assert!(done[0].params.get("Reason").is_some());
}

#[tokio::test]
async fn other_events_are_acknowledged_and_ignored() {
    let app = spawn_app().await;
    let event = [("EventType", "worker.activity.update"), ("AccountSid", ACCOUNT), ("WorkspaceSid", WORKSPACE)];
    assert_eq!(app.post_signed("/tr-event-handler", &event).await.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // (The reconciler's reads are GETs; nothing may be created or changed.)
    assert!(app.fake.requests().iter().all(|r| r.method == "GET"), "{:?}", app.fake.requests());
}

#[tokio::test]
async fn twilio_refusing_the_dial_sends_the_caller_to_voicemail() {
    let app = spawn_app().await;
    *app.fake.fail_calls_with.lock().unwrap() = Some((400, 21212));
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let event = reservation_created(TASK, RES, &task_json());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event)).await.status(), 204);
    let redirect =
        app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with(&format!("/Calls/{CALL}.json"))).await;
    assert!(redirect[0].params.get("Url").unwrap().contains("reason=dial_failed"));
    assert_eq!(app.server.state.store().call(CALL).await.unwrap().unwrap().outcome.as_str(), "dial_failed");
    // A refusal proves no call exists, so the journey may dial again, up to its attempts
    // (three by default), and only then sends the caller to voicemail. Each attempt has its
    // own outbox key; no attempt is sent twice.
    let dials =
        app.fake.requests().into_iter().filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json")).count();
    assert_eq!(dials, call_router::journey::DEFAULT_DIAL_ATTEMPTS as usize, "every attempt is sent once");
    let keys: Vec<String> = app.server.state.store().actions().await.unwrap().into_iter().map(|a| a.0).collect();
    assert!(keys.contains(&format!("dial:{RES}")) && keys.contains(&format!("dial:{RES}#3")), "{keys:?}");
}

#[tokio::test]
async fn lookups_return_the_ivr_data() {
    let app = spawn_app().await;
    let resp = app.get_signed(&format!("/location-lookup?To=%2B{}", &TWILIO_NUMBER[1..])).await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["location"], "north");
    assert_eq!(v["practicePhone"], "+14155550123");
    assert_eq!(v["open"], true);

    let resp = app.get_signed("/businesshours?location=night").await;
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["open"], false);
    assert_eq!(v["timeZone"], "Europe/London");

    let resp = app.client.get(format!("{}/businesshours?location=night", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 400, "unsigned look-ups are refused");
}

#[tokio::test]
async fn healthz_needs_no_signature() {
    let app = spawn_app().await;
    let resp = app.client.get(format!("{}/healthz", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_caller_who_hung_up_before_the_reservation_gets_no_dial() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    // The caller gives up while still in the queue: Twilio calls the Enqueue action.
    let gone = [("AccountSid", ACCOUNT), ("CallSid", CALL), ("QueueResult", "hangup"), ("CallStatus", "completed")];
    let resp = app.post_signed("/enqueue-action?location=north", &gone).await;
    assert_eq!(resp.status(), 200);
    // A reservation made just before TaskRouter noticed still arrives.
    let event = reservation_created(TASK, RES, &task_json());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event)).await.status(), 204);

    // The journey knows the caller left: the reservation owes no dial. Give the
    // dispatcher time to act on anything that was queued, then look.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let actions = app.server.state.store().actions().await.unwrap();
    assert!(!actions.iter().any(|(k, _, _)| k.starts_with("dial:")), "no dial was owed: {actions:?}");
    assert!(
        app.fake.requests().iter().all(|r| r.method != "POST" || !r.path.ends_with("/Calls.json")),
        "no location was dialled"
    );
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome, call_router::domain::Outcome::CallerHungUp);
}

#[tokio::test]
async fn the_callers_own_final_status_settles_a_call_that_never_reached_the_queue() {
    let app = spawn_app().await;
    // A caller at the shared number's menu hangs up without pressing anything.
    app.post_signed("/incoming-call", &inbound(SHARED_NUMBER)).await;
    let done = [("AccountSid", ACCOUNT), ("CallSid", CALL), ("CallStatus", "completed"), ("CallDuration", "9")];
    assert_eq!(app.post_signed("/status-callback", &done).await.status(), 200);
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome, call_router::domain::Outcome::CallerHungUp);
}

#[tokio::test]
async fn the_callers_own_completed_status_does_not_override_a_reserved_call() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let event = reservation_created(TASK, RES, &task_json());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event)).await.status(), 204);
    let q = format!("/dial-queue?reservationSid={RES}&taskSid={TASK}&callSid={CALL}");
    let answered =
        [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000002"), ("AnsweredBy", "human")];
    let doc = twiml(app.post_signed(&q, &answered).await).await;
    assert!(matches!(doc.verbs.first(), Some(Verb::Dial(_))), "{doc:?}");
    // The caller's leg ends after a bridge; its status may overtake the `bridged` queue exit.
    let done = [("AccountSid", ACCOUNT), ("CallSid", CALL), ("CallStatus", "completed")];
    assert_eq!(app.post_signed("/status-callback", &done).await.status(), 200);
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome, call_router::domain::Outcome::Pending, "left for the queue exit to settle");
    let exit = [("AccountSid", ACCOUNT), ("CallSid", CALL), ("QueueResult", "bridged")];
    app.post_signed("/enqueue-action?location=north", &exit).await;
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome, call_router::domain::Outcome::Connected);
}

#[tokio::test]
async fn a_location_answering_for_a_caller_who_left_is_not_bridged() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let gone = [("AccountSid", ACCOUNT), ("CallSid", CALL), ("QueueResult", "hangup")];
    app.post_signed("/enqueue-action?location=north", &gone).await;
    let answered =
        [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000002"), ("AnsweredBy", "human")];
    let doc = twiml(
        app.post_signed(&format!("/dial-queue?reservationSid={RES}&taskSid={TASK}&callSid={CALL}"), &answered).await,
    )
    .await;
    assert!(!doc.verbs.iter().any(|v| matches!(v, Verb::Dial(_))), "{doc:?}");
    assert!(matches!(doc.verbs.last(), Some(Verb::Hangup)), "{doc:?}");
    // While a caller who is still waiting (another caller: their own task, reservation and
    // location leg) is bridged as usual.
    let other = "CA00000000000000000000000000000003";
    let (task2, res2) = ("WT00000000000000000000000000000002", "WR00000000000000000000000000000002");
    let answered2 =
        [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000004"), ("AnsweredBy", "human")];
    let doc = twiml(
        app.post_signed(&format!("/dial-queue?reservationSid={res2}&taskSid={task2}&callSid={other}"), &answered2)
            .await,
    )
    .await;
    assert!(matches!(doc.verbs.first(), Some(Verb::Dial(_))), "{doc:?}");
}

#[tokio::test]
async fn a_caller_lost_while_being_bridged_counts_as_a_hang_up() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let exit = [("AccountSid", ACCOUNT), ("CallSid", CALL), ("QueueResult", "bridging-in-process")];
    assert_eq!(app.post_signed("/enqueue-action?location=north", &exit).await.status(), 200);
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome, call_router::domain::Outcome::CallerHungUp);
}

#[tokio::test]
async fn an_unprovisioned_server_offers_voicemail_instead_of_an_error() {
    let app = spawn_app().await;
    app.server.state.store().remove_resource("workflow", "main").await.unwrap();
    let doc = twiml(app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await).await;
    assert!(doc.verbs.iter().any(|v| matches!(v, Verb::Record(_))), "{doc:?}");
    assert!(!doc.verbs.iter().any(|v| matches!(v, Verb::Enqueue(_))), "{doc:?}");
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome, call_router::domain::Outcome::DialFailed);
}

#[tokio::test]
async fn a_reservation_timeout_hangs_up_the_call_placed_for_it() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let event = reservation_created(TASK, RES, &task_json());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event)).await.status(), 204);
    app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with("/Calls.json")).await;
    // The dial's result (the call's SID) is recorded just after Twilio answers.
    let mut recorded = false;
    for _ in 0..300 {
        let actions = app.server.state.store().actions().await.unwrap();
        if actions.iter().any(|(k, s, _)| k.starts_with("dial:") && *s == call_router::outbox::OutboxState::Done) {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(recorded, "the dial was never recorded as done");

    let mut timeout = reservation_created(TASK, RES, &task_json());
    timeout[0].1 = "reservation.timeout".into();
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&timeout)).await.status(), 204);
    let stops = app.fake.wait_for(1, |r| r.path.contains("/Calls/CA") && r.params.get("Status").is_some()).await;
    assert_eq!(stops[0].params.get("Status"), Some("completed"), "{stops:?}");
}

#[tokio::test]
async fn a_new_workspace_from_a_re_provision_is_picked_up_without_a_restart() {
    let app = spawn_app().await;
    let event = |ws: &str| {
        vec![
            ("EventType", "worker.activity.update".to_owned()),
            ("AccountSid", ACCOUNT.to_owned()),
            ("WorkspaceSid", ws.to_owned()),
            ("ResourceSid", "WK0123456789abcdef0123456789abcdef".to_owned()),
        ]
    };
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event(WORKSPACE))).await.status(), 204);
    let new_ws = "WS9999999999abcdef0123456789abcdef";
    app.server.state.store().set_resource("workspace", "main", new_ws).await.unwrap();
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event(new_ws))).await.status(), 204);
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event(WORKSPACE))).await.status(), 403);
}

#[tokio::test]
async fn the_node_versions_dial_queue_parameters_still_bridge() {
    // A leg the Node version placed before the cut-over: `/dial-queue?queue=WR…&from=…`.
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let q = format!("/dial-queue?queue={RES}&from=%2B12025550143");
    let params = [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000002"), ("AnsweredBy", "human")];
    let body = app.post_signed(&q, &params).await.text().await.unwrap();
    assert!(body.contains(&format!(r#"<Queue reservationSid="{RES}"/>"#)), "{body}");
    // Its status callbacks are taken as a location leg's, not as the caller's.
    let status =
        [("AccountSid", ACCOUNT), ("CallSid", "CA00000000000000000000000000000002"), ("CallStatus", "ringing")];
    let cb = format!("/status-callback?queue={RES}&from=%2B12025550143");
    assert_eq!(app.post_signed(&cb, &status).await.status(), 200);
    // A `queue` that is not a reservation SID is refused with a reason.
    let resp = app.post_signed("/dial-queue?queue=support&from=%2B12025550143", &params).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("queue"));
}

#[tokio::test]
async fn a_reservation_created_after_its_timeout_dials_nothing() {
    let app = spawn_app().await;
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    // TaskRouter's events arrive out of order: the timeout first.
    let mut timeout = reservation_created(TASK, RES, &task_json());
    timeout[0].1 = "reservation.timeout".into();
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&timeout)).await.status(), 204);
    let created = reservation_created(TASK, RES, &task_json());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&created)).await.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        app.fake.requests().iter().all(|r| r.method != "POST" || !r.path.ends_with("/Calls.json")),
        "the ended reservation is not dialled"
    );
    // The next reservation of the same task is.
    let next = reservation_created(TASK, "WR00000000000000000000000000000009", &task_json());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&next)).await.status(), 204);
    let dials = app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with("/Calls.json")).await;
    assert!(dials[0].params.get("Url").unwrap().contains("WR00000000000000000000000000000009"));
}

#[tokio::test]
async fn a_status_callback_with_an_unknown_status_is_refused_with_a_reason() {
    let app = spawn_app().await;
    let status = [("AccountSid", ACCOUNT), ("CallSid", CALL), ("CallStatus", "exploded")];
    let resp = app.post_signed("/status-callback", &status).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("CallStatus"));
}

#[tokio::test]
async fn a_studio_enqueued_caller_still_gets_voicemail_when_the_line_is_busy() {
    // Defect 1 of issue 8: no `/incoming-call` (a Studio flow enqueued the caller), so the
    // journey starts at `reservation.created`; a busy line must still redirect the caller and
    // cancel the task, not leave them on hold while the reservation is offered again.
    let app = spawn_app().await;
    let event = reservation_created(TASK, RES, &task_json());
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&event)).await.status(), 204);
    let dial = app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with("/Calls.json")).await;
    let cb = dial[0].params.get("StatusCallback").unwrap().strip_prefix(&app.url).unwrap().to_owned();
    // The dial's result (the leg's SID) is recorded just after the fake answers.
    let mut leg = None;
    for _ in 0..300 {
        leg = app.server.state.store().call(CALL).await.unwrap().and_then(|c| c.outbound_call_sid);
        if leg.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let leg = leg.expect("the placed leg is recorded");
    let busy = [("AccountSid", ACCOUNT), ("CallSid", leg.as_str()), ("CallStatus", "busy"), ("SequenceNumber", "2")];
    assert_eq!(app.post_signed(&cb, &busy).await.status(), 200);
    let redirect =
        app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with(&format!("/Calls/{CALL}.json"))).await;
    assert!(redirect[0].params.get("Url").unwrap().contains("reason=location_busy"));
    app.fake
        .wait_for(1, |r| {
            r.path.ends_with(&format!("/Tasks/{TASK}")) && r.params.get("AssignmentStatus") == Some("canceled")
        })
        .await;
    assert_eq!(app.server.state.store().call(CALL).await.unwrap().unwrap().outcome.as_str(), "location_busy");
}

#[tokio::test]
async fn healthz_says_degraded_while_a_call_owes_a_request_that_failed_for_good() {
    use call_router::journey::{Command, Event};
    use call_router::store::{Delivery, Route};
    let app = spawn_app().await;
    assert_eq!(app.client.get(format!("{}/healthz", app.url)).send().await.unwrap().text().await.unwrap(), "ok");
    // A wrap-up owes the task's completion; the dispatcher then gives up on it.
    app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await;
    let mut wrapup = reservation_created(TASK, RES, &task_json());
    wrapup[0].1 = "reservation.wrapup".into();
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&wrapup)).await.status(), 204);
    let store = app.server.state.store();
    let complete = Command::CompleteTask { task: TASK.parse().unwrap(), round: 1 };
    let failed = Event::ActionFailed { command: complete };
    let d = Delivery::new(
        Route::Keys { keys: vec![TASK.to_owned()], create: false },
        vec![failed],
        app.server.state.policy(),
    );
    store.deliver(d).await.unwrap();
    let health = app.client.get(format!("{}/healthz", app.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body = health.text().await.unwrap();
    assert!(body.starts_with("degraded: 1 "), "{body}");
    // TaskRouter reports the task completed after all: the call no longer owes anything.
    let mut done = reservation_created(TASK, RES, &task_json());
    done[0].1 = "task.completed".into();
    assert_eq!(app.post_signed("/tr-event-handler", &as_refs(&done)).await.status(), 204);
    assert_eq!(app.client.get(format!("{}/healthz", app.url)).send().await.unwrap().text().await.unwrap(), "ok");
}

/// Stores `night` again with `hours`, as `locations add` would; the server reads locations from
/// the database on each call.
async fn store_night_hours(app: &TestApp, hours: call_router::hours::HoursSpec) {
    let spec = location("night", None, CLOSED_NUMBER, "+14155550126", hours);
    call_router::cli::import(app.server.state.store(), &[spec]).await.unwrap();
}

fn says(doc: &Response) -> Vec<String> {
    doc.verbs.iter().filter_map(|v| if let Verb::Say(s) = v { Some(s.text.clone()) } else { None }).collect()
}

#[tokio::test]
async fn a_closed_caller_hears_the_closures_message() {
    use call_router::hours::{ClosureSpec, HoursSpec};
    let app = spawn_app().await;
    // A closure around now, in the location's own zone.
    let today = jiff::tz::TimeZone::get("Europe/London").unwrap().to_datetime(jiff::Timestamp::now()).date();
    let day = |n: i64| today.checked_add(jiff::Span::new().days(n)).unwrap().strftime("%Y-%m-%dT00:00").to_string();
    let closure = ClosureSpec {
        from: day(-1),
        to: day(2),
        reason: Some("burst pipe".into()),
        message: Some("We are closed while a burst pipe is mended.".into()),
    };
    store_night_hours(
        &app,
        HoursSpec { time_zone: "Europe/London".into(), closures: vec![closure], ..HoursSpec::default() },
    )
    .await;
    let doc = twiml(app.post_signed("/incoming-call", &inbound(CLOSED_NUMBER)).await).await;
    let said = says(&doc);
    assert!(said[0].ends_with(". We are closed while a burst pipe is mended."), "{said:?}");
    assert!(!said.iter().any(|s| s.contains("burst pipe.") || s.contains("closed right now")), "{said:?}");
    assert!(doc.verbs.iter().any(|v| matches!(v, Verb::Record(_))), "still offered voicemail: {doc:?}");
    let call = app.server.state.store().call(CALL).await.unwrap().unwrap();
    assert_eq!(call.outcome.as_str(), "after_hours");
}

/// Everything logged at WARN and above while `f` runs on this thread (the test's runtime is
/// single-threaded, so that is everything the server start does inline).
/// Runs `f` with warnings captured, then goes on capturing until `seen`
/// holds of them (what `f` spawned logs later, such as a check run beside
/// the first webhooks) or 10 s pass, and a little longer, so that a repeat
/// is captured too.
async fn warnings_during<F: std::future::Future>(f: F, seen: impl Fn(&str) -> bool) -> (F::Output, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let out = f.await;
    let text = || String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen(&text()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(guard);
    (out, text())
}

#[tokio::test]
async fn start_up_warns_once_per_location_whose_holidays_are_all_past() {
    use call_router::hours::{HolidaySpec, HoursSpec};
    let app = spawn_app().await;
    let past = |date: &str| HolidaySpec { date: date.into(), ..HolidaySpec::default() };
    store_night_hours(
        &app,
        HoursSpec {
            time_zone: "Europe/London".into(),
            holidays: vec![past("2024-12-25"), past("2025-01-01")],
            ..HoursSpec::default()
        },
    )
    .await;
    // A second instance on the same database starts, and reads the locations.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = app.server.state.settings().clone();
    // The check runs beside the first webhooks, after `start` returns.
    // The first instance's own check begins after its start-up grace and
    // may warn too, inside this log: each line names its instance.
    let owner = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let named = owner.clone();
    let start = async move {
        let second = call_router::app::Server::start(settings, listener).await;
        if let Ok(s) = &second {
            *named.lock().unwrap() = Some(s.state.store().owner().to_owned());
        }
        second
    };
    let ours = |log: &str, owner: &str| log.lines().filter(|l| l.contains("in the past") && l.contains(owner)).count();
    let (second, log) =
        warnings_during(start, |log| owner.lock().unwrap().as_deref().is_some_and(|o| ours(log, o) > 0)).await;
    second.unwrap();
    let owner = owner.lock().unwrap().clone().expect("the second instance started");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("in the past") && l.contains(&owner)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("location night") && lines[0].contains("2025-01-01"),
        "{log}"
    );
}

/// The REST redirect of a caller the closing policy gives a callback lands on
/// `/caller-fallback?…&callback=1`: the goodbye that says so, not voicemail.
#[tokio::test]
async fn the_closing_policys_redirect_says_the_callback_goodbye() {
    let app = spawn_app_of(
        "",
        |_| {},
        |specs| {
            specs[0].callback = Some(call_router::domain::CallbackSpec::default());
            specs[0].closing_policy = call_router::domain::ClosingPolicy::Callback;
        },
    )
    .await;
    let url = "/caller-fallback?location=north&reason=closed_while_waiting";
    let doc = twiml(app.post_signed(&format!("{url}&callback=1"), &inbound(TWILIO_NUMBER)).await).await;
    let said = format!("{doc:?}");
    assert!(said.contains("has closed for now. We will call you back at 3 1 0, 5 5 5, 0 1 9 9 when we open"), "{said}");
    assert!(matches!(doc.verbs.last(), Some(Verb::Hangup)), "{doc:?}");
    assert!(!said.contains("Record"), "{said}");
    // Without it (or with a withheld number), voicemail as before.
    let doc = twiml(app.post_signed(url, &inbound(TWILIO_NUMBER)).await).await;
    assert!(format!("{doc:?}").contains("Record"), "{doc:?}");
    let withheld: Vec<(&str, &str)> =
        inbound(TWILIO_NUMBER).into_iter().map(|(k, v)| if k == "From" { (k, "anonymous") } else { (k, v) }).collect();
    let doc = twiml(app.post_signed(&format!("{url}&callback=1"), &withheld).await).await;
    assert!(format!("{doc:?}").contains("Record"), "{doc:?}");
}

#[tokio::test]
async fn a_waiting_caller_may_press_1_for_a_callback_and_is_told_when_they_hang_up() {
    let app = spawn_app_of(
        "",
        |_| {},
        |specs| {
            specs[0].callback =
                Some(call_router::domain::CallbackSpec { offer_after_secs: 30, tries: 2, ..Default::default() })
        },
    )
    .await;
    twiml(app.post_signed("/incoming-call", &inbound(TWILIO_NUMBER)).await).await;
    let hold = |secs: &'static str| {
        let mut p = inbound(TWILIO_NUMBER);
        p.push(("QueueTime", secs));
        p
    };
    // Before the offer's time the music is inside the Gather, without the offer; then with it.
    for (secs, offered) in [("0", false), ("30", true)] {
        let doc = twiml(app.post_signed("/hold?location=north", &hold(secs)).await).await;
        let Verb::Gather(g) = &doc.verbs[0] else { panic!("a Gather around the hold music: {doc:?}") };
        assert_eq!(g.action.as_deref(), Some(format!("{}/callback-choice?location=north", app.url).as_str()));
        assert_eq!(g.num_digits, Some(1));
        let said = format!("{:?}", g.prompts);
        assert_eq!(said.contains("To hang up and keep your place in line, press 1."), offered, "{said}");
    }
    // Another key, or a withheld number: the caller holds on (an empty document).
    let mut other = hold("40");
    other.push(("Digits", "2"));
    let doc = twiml(app.post_signed("/callback-choice?location=north", &other).await).await;
    assert!(doc.verbs.is_empty(), "{doc:?}");
    let mut withheld: Vec<(&str, &str)> =
        hold("40").into_iter().map(|(k, v)| if k == "From" { (k, "anonymous") } else { (k, v) }).collect();
    withheld.push(("Digits", "1"));
    let doc = twiml(app.post_signed("/callback-choice?location=north", &withheld).await).await;
    assert!(doc.verbs.is_empty(), "{doc:?}");
    // 1: out of the queue, told they will be called back, and a callback task keeps their place.
    let mut one = hold("40");
    one.push(("Digits", "1"));
    let doc = twiml(app.post_signed("/callback-choice?location=north", &one).await).await;
    assert!(matches!(doc.verbs.as_slice(), [Verb::Leave]), "{doc:?}");
    let mut left = inbound(TWILIO_NUMBER);
    left.push(("QueueResult", "leave"));
    let doc = twiml(app.post_signed("/enqueue-action?location=north", &left).await).await;
    let said = format!("{doc:?}");
    assert!(said.contains("We will call you back at 3 1 0, 5 5 5, 0 1 9 9 when it is your turn."), "{said}");
    assert!(matches!(doc.verbs.last(), Some(Verb::Hangup)), "{doc:?}");
    let created = app.fake.wait_for(1, |r| r.method == "POST" && r.path.ends_with("/Tasks")).await;
    let attributes: serde_json::Value = serde_json::from_str(created[0].params.get("Attributes").unwrap()).unwrap();
    assert_eq!(attributes["callback"]["number"], CALLER);
    assert_eq!(attributes["call_sid"], CALL);
    assert_eq!(attributes["location"], "north");
    assert!(created[0].params.get("VirtualStartTime").is_some());
    assert_eq!(created[0].params.get("WorkflowSid"), Some(WORKFLOW));
}
