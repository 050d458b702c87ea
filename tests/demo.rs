//! Every shipped scenario through the demo's library entry point (the
//! sandbox and the server in this process), checking that each call ends
//! with a final outcome, the one the scenario expects, and the JSON shape.

use std::time::Duration;

use call_router::demo::report::Report;
use call_router::demo::scenario::{self, Scenario};
use call_router::demo::{self, Options};
use call_router::domain::Outcome;

fn options() -> Options {
    Options { time_scale: 100.0, seed: 7, database_url: None, timeout: Duration::from_secs(30) }
}

async fn run(scenario: Scenario) -> Report {
    if std::env::var_os("TEST_LOG").is_some() {
        call_router::telemetry::init(false, "info");
    }
    demo::run(&scenario, &options(), &|_| {}).await.expect("the demo runs")
}

async fn run_shipped(name: &str) -> Report {
    let report = run(scenario::built_in(name).expect("shipped")).await;
    let expected = scenario::built_in(name).unwrap().plan();
    assert_eq!(report.calls.len(), expected.len(), "{name}: one row per call");
    for (row, plan) in report.calls.iter().zip(&expected) {
        assert!(row.finished, "{name}: call #{} did not end\n{}", row.index, report.render());
        assert!(row.outcome.is_final(), "{name}: call #{} has no outcome\n{}", row.index, report.render());
        if plan.expect.is_some() {
            assert_eq!(Some(row.outcome), plan.expect, "{name}: call #{}\n{}", row.index, report.render());
        }
        assert!(row.ok, "{name}: call #{}: {:?}", row.index, row.problem);
        assert!(row.call_sid.is_some());
    }
    assert!(report.ok(), "{}", report.render());
    report
}

#[tokio::test]
async fn mix_shows_four_distinct_outcomes() {
    let report = run_shipped("mix").await;
    let totals = report.totals();
    for o in [Outcome::Connected, Outcome::LocationVoicemail, Outcome::LocationBusy, Outcome::CallerHungUp] {
        assert_eq!(totals.get(&o), Some(&1), "{o}\n{}", report.render());
    }
    let connected = report.calls.iter().find(|c| c.outcome == Outcome::Connected).unwrap();
    assert_eq!(connected.location.as_deref(), Some("north"));
    assert_eq!(connected.answered_by.as_deref(), Some("human"));
    assert!(connected.talk_ms.unwrap_or(0) > 0, "{}", report.render());
}

#[tokio::test]
async fn faults_fire_and_every_caller_still_ends_with_an_outcome() {
    let report = run_shipped("faults").await;
    assert_eq!(report.faults.len(), 6, "{}", report.render());
    let fired: u64 = report.faults.iter().map(|f| f.fired).sum();
    assert!(fired > 0, "{}", report.render());
    for f in &report.faults {
        assert!(f.fired <= f.matched, "{f:?}");
    }
    // Webhook faults have something to hit in every run.
    let duplicated = report.faults.iter().find(|f| f.rule.starts_with("webhook duplicate")).unwrap();
    assert!(duplicated.matched > 0 && duplicated.fired > 0, "{}", report.render());
    let text = report.render();
    assert!(text.contains("faults injected (fired of matched):"), "{text}");
    assert_eq!(report.to_json()["faults"].as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn happy_path() {
    let report = run_shipped("happy-path").await;
    let locations: Vec<_> = report.calls.iter().map(|c| c.location.as_deref()).collect();
    assert_eq!(locations, [Some("north"), Some("south"), Some("east")]);
}

#[tokio::test]
async fn screening_bridges_only_the_receptionist_who_presses_1() {
    let report = run_shipped("screening").await;
    let by_location = |name: &str| report.calls.iter().find(|c| c.location.as_deref() == Some(name)).unwrap();
    let north = by_location("north");
    assert_eq!(north.outcome, Outcome::Connected, "{}", report.render());
    assert!(north.talk_ms.unwrap_or(0) > 0, "{}", report.render());
    // Screening without AMD: pressing 1 tells a person; nobody else was put through,
    // and nothing was detected at the others.
    assert_eq!(north.answered_by.as_deref(), Some("human"), "{}", report.render());
    for name in ["south", "west", "east"] {
        let c = by_location(name);
        assert_eq!(c.outcome, Outcome::LocationNoAnswer, "{name}\n{}", report.render());
        assert!(c.talk_ms.unwrap_or(0) == 0, "{name} was bridged\n{}", report.render());
        assert_eq!(c.answered_by, None, "{name}\n{}", report.render());
    }
}

#[tokio::test]
async fn callback_the_caller_who_pressed_1_is_called_back_after_the_first_call() {
    let report = run_shipped("callback").await;
    let (first, second) = (&report.calls[0], &report.calls[1]);
    assert_eq!(first.outcome, Outcome::Connected, "{}", report.render());
    assert_eq!(second.outcome, Outcome::CallbackConnected, "{}", report.render());
    // The second caller left the queue and was never bridged from it: they talked on the callback.
    assert!(second.talk_ms.unwrap_or(0) == 0, "{}", report.render());
    assert!(second.timeline.iter().any(|t| t.event.contains("left queue: leave")), "{}", report.render());
}

#[tokio::test]
async fn phones_ring_in_order_until_a_person_answers_or_the_last_has_rung() {
    let report = run_shipped("phones").await;
    let by_location = |name: &str| report.calls.iter().find(|c| c.location.as_deref() == Some(name)).unwrap();
    let north = by_location("north");
    assert_eq!(north.outcome, Outcome::Connected, "{}", report.render());
    assert!(north.talk_ms.unwrap_or(0) > 0, "{}", report.render());
    assert_eq!(by_location("south").outcome, Outcome::LocationNoAnswer, "{}", report.render());
}

#[tokio::test]
async fn busy() {
    run_shipped("busy").await;
}

#[tokio::test]
async fn voicemail() {
    run_shipped("voicemail").await;
}

#[tokio::test]
async fn caller_hangs_up() {
    run_shipped("caller-hangs-up").await;
}

#[tokio::test]
async fn after_hours() {
    run_shipped("after-hours").await;
}

#[tokio::test]
async fn unreachable() {
    run_shipped("unreachable").await;
}

#[tokio::test]
async fn queue_timeout() {
    run_shipped("queue-timeout").await;
}

#[tokio::test]
async fn not_in_service() {
    run_shipped("not-in-service").await;
}

#[tokio::test]
async fn announcements_tell_each_caller_their_place_then_the_wait() {
    let report = run_shipped("announcements").await;
    let places: Vec<Vec<&String>> =
        report.calls.iter().map(|c| c.heard.iter().filter(|t| t.starts_with("You are caller")).collect()).collect();
    // On entry: the place, and nothing about the wait before any call was handled.
    for (i, number) in ["one", "two", "three"].into_iter().enumerate() {
        assert_eq!(
            places[i].first().map(|t| t.as_str()),
            Some(format!("You are caller number {number}.").as_str()),
            "{places:?}"
        );
    }
    // The third waits through the first call and hears the wait once it was handled.
    assert!(places[2].iter().any(|t| t.contains("The expected wait is about")), "{places:?}");
    let json = report.to_json();
    assert!(json["calls"][0]["heard"].as_array().is_some_and(|h| !h.is_empty()), "{json}");
}

#[tokio::test]
async fn languages_each_caller_hears_the_language_they_chose() {
    // Every caller's `expect_heard` is checked by the run (a row is not ok without it).
    let report = run_shipped("languages").await;
    let english = &report.calls[1];
    assert!(english.heard.contains(&"For South Clinic, press 2.".to_owned()), "{}", report.render());
    // After pressing 9 the English caller hears no Spanish but the offer to go back.
    let after: Vec<&String> = english.heard.iter().skip_while(|t| *t != "For South Clinic, press 2.").collect();
    assert!(after.iter().all(|t| !t.contains("Clínica") && !t.contains("espere")), "{after:?}");
    let json = report.to_json();
    assert_eq!(json["calls"][0]["expected_heard"][0], "Gracias por llamar a Clínicas Acme.", "{json}");
}

#[tokio::test]
async fn closing_sends_the_waiting_callers_to_voicemail_and_the_call_in_progress_goes_on() {
    let report = run_shipped("closing").await;
    let closed = report.closed.clone().unwrap_or_else(|| panic!("no closing time in\n{}", report.render()));
    assert_eq!(closed.location, "north");
    // 400 virtual seconds after the first dial (sooner only if setting up ran late), at a
    // whole minute of the business clock.
    assert!((1..=400_000).contains(&closed.after_ms), "{closed:?}");
    assert!(closed.at.ends_with(":00+00:00"), "{closed:?}");
    assert!(report.render().contains(&format!("north closed at {}", closed.at)), "{}", report.render());
    assert_eq!(report.to_json()["closed"]["location"], "north");
    let [talking, waiting @ ..] = &report.calls[..] else { panic!("{}", report.render()) };
    // The call in progress was bridged before closing time and went on after it, to the end.
    let (bridged_after, talked) = (talking.wait_ms.unwrap_or(u64::MAX), talking.talk_ms.unwrap_or(0));
    assert!(bridged_after < closed.after_ms, "{}", report.render());
    assert!(talked >= 590_000, "{}", report.render());
    // The waiting callers left the queue at closing time, not before (their wait counts from
    // the queue, a few seconds of greeting after their dial at 20 and 40 s).
    assert_eq!(waiting.len(), 2);
    for (c, start_ms) in waiting.iter().zip([20_000, 40_000]) {
        let left = start_ms + c.wait_ms.unwrap_or(0);
        assert!(
            left + 15_000 >= closed.after_ms && left <= closed.after_ms + 60_000,
            "#{}: {}",
            c.index,
            report.render()
        );
    }
}

#[tokio::test]
async fn burst_queues_callers_for_one_line() {
    let report = run_shipped("burst").await;
    let mut waits: Vec<u64> = report.calls.iter().map(|c| c.wait_ms.unwrap_or(0)).collect();
    waits.sort_unstable();
    assert!(waits.last() > waits.first(), "later callers wait for the one line: {waits:?}");
}

#[tokio::test]
async fn burst_scales_with_calls() {
    let mut s = scenario::built_in("burst").unwrap();
    s.scale_bursts(12).unwrap();
    let report = run(s).await;
    assert_eq!(report.calls.len(), 12);
    assert!(report.ok(), "{}", report.render());
}

#[tokio::test]
async fn json_report_has_the_documented_shape() {
    let report = run_shipped("busy").await;
    let j = report.to_json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["scenario"], "busy");
    let calls = j["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    for c in calls {
        for key in
            ["call_sid", "caller", "location", "outcome", "answered_by", "wait_ms", "talk_ms", "expected_outcome", "ok"]
        {
            assert!(c.get(key).is_some(), "calls[].{key} missing in {c}");
        }
        assert_eq!(c["outcome"], "location_busy");
        assert_eq!(c["expected_outcome"], "location_busy");
        assert_eq!(c["ok"], true);
        assert!(c["call_sid"].as_str().unwrap().starts_with("CA"));
    }
    assert_eq!(j["totals"], serde_json::json!({"location_busy": 2}));
}

#[tokio::test]
async fn a_wrong_expectation_is_reported_by_name() {
    let text = "[phones.east]\nanswer = 'busy'\n[[callers]]\nlocation = 'east'\nexpect = 'connected'";
    let report = run(Scenario::parse(text, "wrong.toml").unwrap()).await;
    assert!(!report.ok());
    let problems = report.problems();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("expected connected, got location_busy"), "{problems:?}");
    assert!(report.render().contains("✗ connected"), "{}", report.render());
}

/// A caller who hangs up at the menu, before choosing a location. Only the
/// number's StatusCallback (`completed`, no `callSid` query) says so, and it
/// must settle the call.
#[tokio::test]
async fn a_caller_who_hangs_up_at_the_menu_still_gets_an_outcome() {
    let text = "[[callers]]\nlocation = 'north'\npatience_secs = 3\nexpect = 'caller_hung_up'";
    let report = run(Scenario::parse(text, "menu-hangup.toml").unwrap()).await;
    assert!(report.ok(), "{}", report.render());
}

/// `demo --dashboard`: the business keeps running with callers arriving,
/// the dashboard answers with the printed token, and it stops when told.
#[tokio::test]
async fn dashboard_mode_serves_the_dashboard_while_callers_arrive() {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = Options { time_scale: 200.0, ..options() };
    let running = tokio::spawn(demo::run_dashboard(
        scenario::built_in("mix").unwrap(),
        opts,
        move |info| {
            let _ = ready_tx.send(info.clone());
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let info = tokio::time::timeout(Duration::from_secs(30), ready_rx).await.expect("ready in time").unwrap();
    assert!(info.url.starts_with("http://127.0.0.1:") && info.url.ends_with("/dashboard"), "{}", info.url);
    assert_eq!(info.token.len(), 32);

    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = http.get(&info.url).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("/dashboard/login"));
    let login = http.post(format!("{}/login", info.url)).form(&[("token", info.token.as_str())]).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = http.get(&info.url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/dashboard/assets/app.js"));

    let doc = format!("{}/api/openapi.json", info.server_url);
    assert_eq!(http.get(&doc).send().await.unwrap().status(), 200, "the API is on with the dashboard");

    // Callers keep arriving: the sandbox sees a second caller's call.
    let sandbox =
        sandbox::client::SandboxClient::new(&info.sandbox_url, &info.sandbox_account_sid, &info.sandbox_auth_token);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = sandbox.state().await.unwrap();
        let callers: std::collections::BTreeSet<&str> = state["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["from"].as_str())
            .filter(|from| from.starts_with("+1310555"))
            .collect();
        if callers.len() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no second caller within 20 s: {callers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    let placed = tokio::time::timeout(Duration::from_secs(30), running).await.expect("stops in time").unwrap().unwrap();
    assert!(placed >= 2, "callers keep arriving: {placed} placed");
}
