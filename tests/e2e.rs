//! End to end: the real server against the sandbox, both on port 0, provisioned by
//! `provision::run`, driven by simulated callers and location phones. Each case asserts the
//! outcome the server recorded and the requests the two exchanged, read from the sandbox's
//! request log (what the sandbox sent is Twilio's webhooks; what it received is the server's
//! REST calls). Each case runs on SQLite (`sqlite::`) and on PostgreSQL (`postgres::`, see
//! `common/backends.rs`).

#[path = "common/backends.rs"]
#[macro_use]
mod backends;

use std::time::Duration;

use backends::{Backend, TestDb};
use call_router::app::Server;
use call_router::clock::Clock;
use call_router::config::Settings;
use call_router::domain::{LocationSpec, Outcome};
use call_router::hours::{HoursSpec, WeeklySpec};
use call_router::store::{CallRecord, Store};
use sandbox::client::{PlaceCall, SandboxClient};
use sandbox::state::Behaviour;
use serde_json::Value;
use tokio::net::TcpListener;
use twilio::Params;

const MAIN: &str = "+12025550143";
const NIGHT: &str = "+12025550145";
const NORTH_PHONE: &str = "+14155550101";
const NIGHT_PHONE: &str = "+14155550105";
const CALLER: &str = "+13105550199";
/// Virtual seconds per real second: a 20 s ring takes 20 ms.
const TIME_SCALE: f64 = 250.0;
/// For cases that count dials or hang on timing: at 250, a loaded machine's delays can outlast
/// a reservation's 65 virtual seconds (0.26 s real), and TaskRouter's re-offer dials again.
const SLOWER: f64 = 50.0;
/// How long after the start of the closing-time case its location closes (wall time).
const CLOSING_LEAD: std::time::Duration = std::time::Duration::from_secs(6);

struct World {
    server: Server,
    sandbox: sandbox::Sandbox,
    client: SandboxClient,
    store: Store,
    _db: TestDb,
}

fn location(name: &str, number: &str, phone: &str, open: bool) -> LocationSpec {
    let all: &[&str] = if open { &["00:00-24:00"] } else { &[] };
    LocationSpec {
        display_name: Some(format!("{name} clinic")),
        ..LocationSpec::new(
            name,
            &[number],
            phone,
            HoursSpec {
                time_zone: "America/New_York".into(),
                weekly: WeeklySpec::every_day(all),
                ..HoursSpec::default()
            },
        )
    }
}

/// The sandbox, the server pointed at it on a fresh database of `backend`, `north` (open, on
/// MAIN) and `night` (never open, on NIGHT) provisioned, and north's phone set to
/// `north_phone`. None when the backend is not available here (see `backends`).
async fn world(backend: Backend, north_phone: Behaviour) -> Option<World> {
    world_with(backend, north_phone, "").await
}

/// As [`world`], with extra TOML appended to the server's settings.
async fn world_with(backend: Backend, north_phone: Behaviour, extra_toml: &str) -> Option<World> {
    world_of(backend, north_phone, extra_toml, |_| {}).await
}

/// As [`world_with`], with north's spec changed by `north` first.
async fn world_of(
    backend: Backend,
    north_phone: Behaviour,
    extra_toml: &str,
    north: impl FnOnce(&mut LocationSpec),
) -> Option<World> {
    world_at(backend, TIME_SCALE, north_phone, extra_toml, |locations| north(&mut locations[0])).await
}

/// As [`world_of`], at `time_scale` virtual seconds per real second.
async fn world_scaled(
    backend: Backend,
    time_scale: f64,
    north_phone: Behaviour,
    extra_toml: &str,
    north: impl FnOnce(&mut LocationSpec),
) -> Option<World> {
    world_at(backend, time_scale, north_phone, extra_toml, |locations| north(&mut locations[0])).await
}

/// As [`world_with`], at `time_scale`, with the locations (north, night) changed by `edit`
/// first; every number of theirs is bought, and only north's phone is set.
async fn world_at(
    backend: Backend,
    time_scale: f64,
    north_phone: Behaviour,
    extra_toml: &str,
    edit: impl FnOnce(&mut Vec<LocationSpec>),
) -> Option<World> {
    world_clocked(backend, time_scale, Clock::WALL, north_phone, extra_toml, edit).await
}

/// As [`world_at`], with the server reading hours at `clock`'s business time.
async fn world_clocked(
    backend: Backend,
    time_scale: f64,
    clock: Clock,
    north_phone: Behaviour,
    extra_toml: &str,
    edit: impl FnOnce(&mut Vec<LocationSpec>),
) -> Option<World> {
    let db = backend.database().await?;
    let sb_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = sandbox::start(sandbox::Config::random(time_scale, 7), sb_listener).await.unwrap();
    let (account, token, sb_url) = (sandbox.account_sid().to_string(), sandbox.auth_token().to_owned(), sandbox.url());
    let client = SandboxClient::new(&sb_url, &account, &token);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let text = format!(
        "public_url = {url:?}\ndatabase_url = {:?}\n[twilio]\naccount_sid = {account:?}\nauth_token = {token:?}\n\
         api_base_url = {sb_url:?}\ntaskrouter_base_url = {sb_url:?}\nrequest_timeout_ms = 5000\n{extra_toml}",
        db.url
    );
    let mut settings = Settings::from_toml(&text, |_| None).unwrap();
    let mut locations = vec![location("north", MAIN, NORTH_PHONE, true), location("night", NIGHT, NIGHT_PHONE, false)];
    edit(&mut locations);
    settings.locations = locations;
    settings.clock = clock;
    let server = Server::start(settings.clone(), listener).await.unwrap();
    let store = server.state.store().clone();

    let numbers: std::collections::BTreeSet<&String> = settings.locations.iter().flat_map(|l| &l.numbers).collect();
    for n in numbers {
        client.buy_number(n, None).await.unwrap();
    }
    client.set_phone(NORTH_PHONE, &north_phone).await.unwrap();
    let mut report = call_router::provision::Report::default();
    call_router::provision::run(&settings, &store, call_router::provision::Options::default(), &mut report)
        .await
        .unwrap_or_else(|e| panic!("provision failed: {e}\n{}", report.lines.join("\n")));
    Some(World { server, sandbox, client, store, _db: db })
}

/// One request in the sandbox's log.
#[derive(Debug, Clone)]
struct Exchange {
    /// `out`: the sandbox called the server (a webhook); `in`: the server called the sandbox.
    direction: String,
    method: String,
    path: String,
    query: String,
    params: Params,
    status: u64,
    response: String,
}

impl Exchange {
    fn from_json(v: &Value) -> Exchange {
        let url = v["url"].as_str().unwrap_or_default();
        let after_host = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let path_and_query = after_host.find('/').map(|i| &after_host[i..]).unwrap_or("/");
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let params = v["params"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some((p.get(0)?.as_str()?.to_owned(), p.get(1)?.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Exchange {
            direction: v["direction"].as_str().unwrap_or_default().to_owned(),
            method: v["method"].as_str().unwrap_or_default().to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            params,
            status: v["status"].as_u64().unwrap_or(0),
            response: v["response"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

impl World {
    /// Every exchange in the sandbox's log, page by page.
    async fn exchanges(&self) -> Vec<Exchange> {
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let (entries, next) = self.client.log(since).await.unwrap();
            if entries.is_empty() {
                return all;
            }
            all.extend(entries.iter().map(Exchange::from_json));
            since = next;
        }
    }

    /// Webhooks the sandbox sent to the server's `path`.
    async fn webhooks(&self, path: &str) -> Vec<Exchange> {
        self.exchanges().await.into_iter().filter(|e| e.direction == "out" && e.path == path).collect()
    }

    /// REST requests the server sent to the sandbox whose path ends with `suffix`.
    async fn rest(&self, method: &str, suffix: &str) -> Vec<Exchange> {
        self.exchanges()
            .await
            .into_iter()
            .filter(|e| e.direction == "in" && e.method == method && e.path.ends_with(suffix))
            .filter(|e| !e.path.starts_with("/sandbox/"))
            .collect()
    }

    /// Dials `to` as a simulated caller, waits for the caller's call to end in the sandbox
    /// and for the server to settle its outcome.
    async fn call(&self, to: &str, patience_secs: Option<u64>) -> (Value, CallRecord) {
        let sid = self
            .client
            .place_call(&PlaceCall { from: CALLER.into(), to: to.into(), digits: None, patience_secs })
            .await
            .unwrap();
        let summary = self.client.wait_for_call_end(&sid, Duration::from_secs(20)).await.unwrap();
        let record = self.settled(&sid).await;
        (summary, record)
    }

    async fn settled(&self, call_sid: &str) -> CallRecord {
        for _ in 0..500 {
            if let Some(c) = self.store.call(call_sid).await.unwrap()
                && c.outcome.is_final()
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server never settled {call_sid}: {:?}", self.store.call(call_sid).await.unwrap());
    }

    /// Waits until the server's outbox has nothing pending or in flight.
    async fn quiet(&self) {
        use call_router::outbox::OutboxState::{Pending, Sending};
        for _ in 0..500 {
            let actions = self.store.actions().await.unwrap();
            if actions.iter().all(|(_, s, _)| !matches!(s, Pending | Sending)) {
                // One more beat for the sandbox to deliver the events those actions cause.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the outbox never drained: {:?}", self.store.actions().await.unwrap());
    }

    async fn task(&self, task_sid: &str) -> Value {
        let state = self.client.state().await.unwrap();
        find_by_sid(&state["tasks"], task_sid).unwrap_or_else(|| panic!("no task {task_sid} in {state}"))
    }

    async fn finish(self) {
        self.sandbox.shutdown().await;
        self.server.shutdown().await.unwrap();
    }
}

/// Finds a resource by SID in a JSON array or object of resources.
fn find_by_sid(collection: &Value, sid: &str) -> Option<Value> {
    let matches = |v: &&Value| v["sid"].as_str() == Some(sid);
    match collection {
        Value::Array(a) => a.iter().find(matches).cloned(),
        Value::Object(m) => m.get(sid).cloned().or_else(|| m.values().find(matches).cloned()),
        _ => None,
    }
}

/// The one dial the server placed: Calls.json, to the location, from its Twilio number, with
/// AMD and the four status events, and a `+` that survives in the answer URL.
fn assert_one_dial(dials: &[Exchange]) -> &Exchange {
    assert_eq!(dials.len(), 1, "exactly one dial for one reservation: {dials:#?}");
    let d = &dials[0];
    assert!(d.status == 201 || d.status == 200, "the sandbox accepted the dial: {d:?}");
    let p = &d.params;
    assert_eq!(p.get("To"), Some(NORTH_PHONE));
    assert_eq!(p.get("From"), Some(MAIN));
    assert_eq!(p.get("MachineDetection"), Some("Enable"));
    assert_eq!(p.get_all("StatusCallbackEvent").collect::<Vec<_>>(), ["initiated", "ringing", "answered", "completed"]);
    let url = p.get("Url").unwrap();
    assert_eq!(twilio::signature::query_param(url, "from").as_deref(), Some(MAIN), "{url}");
    d
}

fn task_sid_of(record: &CallRecord) -> String {
    record.task_sid.clone().unwrap_or_else(|| panic!("the server linked no task to {record:?}"))
}

async fn a_person_answers_is_bridged_and_the_task_completes(backend: Backend) {
    let person = Behaviour::Person { rings: 2, talk_secs: 30, digits: None };
    let Some(w) = world_scaled(backend, SLOWER, person, "", |_| {}).await else { return };
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, Outcome::Connected, "{summary}");
    assert_eq!(record.location.as_deref(), Some("north"));
    assert_eq!(record.answered_by.as_deref(), Some("human"));
    w.quiet().await;

    // The caller's leg: the voice URL, then queue exit as bridged.
    let incoming = w.webhooks("/incoming-call").await;
    assert_eq!(incoming.len(), 1);
    assert!(incoming[0].response.contains("<Enqueue"), "{}", incoming[0].response);
    let exits = w.webhooks("/enqueue-action").await;
    assert_eq!(exits.iter().filter_map(|e| e.params.get("QueueResult")).collect::<Vec<_>>(), ["bridged"]);

    // TaskRouter's reservation, the dial it caused, and the bridge.
    let events = w.webhooks("/tr-event-handler").await;
    let types: Vec<&str> = events.iter().filter_map(|e| e.params.get("EventType")).collect();
    assert!(types.contains(&"reservation.created"), "{types:?}");
    assert!(events.iter().all(|e| e.status == 204), "every event acknowledged with 204");
    let dial = assert_one_dial(&w.rest("POST", "/Calls.json").await).clone();
    let answered = w.webhooks("/dial-queue").await;
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].params.get("AnsweredBy"), Some("human"));
    let reservation = record.reservation_sid.clone().unwrap();
    assert!(answered[0].response.contains(&format!("reservationSid=\"{reservation}\"")), "{}", answered[0].response);
    // The answer URL the server gave in the dial is the one the sandbox fetched.
    assert!(answered[0].query.contains(&format!("reservationSid={reservation}")), "{}", answered[0].query);
    assert!(dial.params.get("Url").unwrap().contains(&reservation));

    // Every status of the location's leg was recorded, ending in completed.
    let outbound = record.outbound_call_sid.clone().expect("the outbound leg is linked");
    let statuses: Vec<String> = w.store.statuses(&outbound).await.unwrap().into_iter().map(|s| s.status).collect();
    assert!(statuses.contains(&"in-progress".to_owned()) || statuses.contains(&"answered".to_owned()), "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("completed"), "{statuses:?}");

    // Wrap-up completed the task with a reason.
    let task = task_sid_of(&record);
    let completes = w.rest("POST", &format!("/Tasks/{task}")).await;
    assert!(
        completes
            .iter()
            .any(|e| e.params.get("AssignmentStatus") == Some("completed") && e.params.get("Reason").is_some()),
        "{completes:#?}"
    );
    assert_eq!(w.task(&task).await["assignment_status"], "completed");
    w.finish().await;
}

on_both_backends!(
    a_person_answers_is_bridged_and_the_task_completes,
    voicemail_answers_and_the_caller_gets_our_voicemail,
    a_busy_line_sends_the_caller_to_voicemail,
    nobody_answers_and_the_caller_gets_voicemail,
    a_failing_line_sends_the_caller_to_voicemail,
    a_caller_who_waits_too_long_leaves_the_queue_for_voicemail,
    a_caller_still_waiting_at_closing_time_gets_voicemail_and_the_call_in_progress_goes_on,
    the_caller_hangs_up_while_the_location_rings,
    after_hours_the_caller_gets_voicemail_and_nothing_is_queued,
    every_webhook_the_sandbox_sends_passes_the_servers_signature_check,
    screening_the_receptionist_presses_1_and_is_connected,
    screening_no_key_is_not_answered_and_the_caller_gets_voicemail,
    screening_a_voicemail_greeting_with_amd_off_is_never_bridged,
    screening_a_wrong_key_twice_is_not_answered,
    waiting_callers_hear_their_place_then_the_expected_wait,
    a_caller_still_waiting_at_closing_time_is_transferred_to_the_overflow_location,
    a_callback_not_reached_by_closing_time_goes_to_the_voicemail_list,
    a_caller_who_finds_the_location_closed_is_transferred_to_its_overflow_location,
    a_caller_still_waiting_after_overflow_after_secs_is_taken_by_the_overflow_location,
    a_caller_who_finds_every_line_busy_is_transferred_to_the_overflow_location,
    more_lines_than_one_worker_holds_bridge_that_many_callers_at_once,
    a_caller_who_presses_the_language_key_hears_spanish_through_the_menu_and_the_hold,
    a_spanish_callers_fallback_after_a_busy_line_is_in_spanish,
    a_spanish_speaking_location_greets_in_spanish_and_screens_in_spanish,
    a_caller_who_chooses_a_callback_hangs_up_and_is_called_back_when_the_location_accepts,
    a_callback_still_waiting_at_closing_time_waits_for_the_next_opening_and_keeps_its_place,
    a_callback_task_whose_created_answer_was_lost_is_found_and_not_made_twice,
    a_callback_task_in_doubt_is_not_created_while_its_look_up_fails,
    phones_in_order_the_first_is_busy_and_the_second_answers,
    phones_in_order_nobody_answers_each_is_dialled_once_then_voicemail,
    phones_all_at_once_the_first_to_answer_wins_and_the_other_is_hung_up,
);

/// A location that does not connect sends the caller to voicemail: the server redirects the
/// caller's leg, cancels the task, and records why.
async fn not_connected(backend: Backend, behaviour: Behaviour, outcome: Outcome, status_or_answered: (&str, &str)) {
    let Some(w) = world_scaled(backend, SLOWER, behaviour, "", |_| {}).await else { return };
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, outcome, "{summary}");
    w.quiet().await;

    assert_one_dial(&w.rest("POST", "/Calls.json").await);
    let (key, value) = status_or_answered;
    let seen: Vec<Exchange> = [w.webhooks("/status-callback").await, w.webhooks("/dial-queue").await].concat();
    assert!(seen.iter().any(|e| e.params.get(key) == Some(value)), "expected {key}={value} in {seen:#?}");

    // The caller is taken out of the queue to the fallback, which offers voicemail.
    let redirects = w.rest("POST", &format!("/Calls/{}.json", record.call_sid)).await;
    assert!(
        redirects.iter().any(|e| e.params.get("Url").is_some_and(|u| u.contains("/caller-fallback"))),
        "{redirects:#?}"
    );
    let fallback = w.webhooks("/caller-fallback").await;
    assert_eq!(fallback.len(), 1, "the caller heard the fallback once");
    assert!(fallback[0].response.contains("<Record"), "{}", fallback[0].response);

    // The task is canceled, so TaskRouter does not offer it again.
    let task = task_sid_of(&record);
    let cancels = w.rest("POST", &format!("/Tasks/{task}")).await;
    assert!(cancels.iter().any(|e| e.params.get("AssignmentStatus") == Some("canceled")), "{cancels:#?}");
    assert_eq!(w.task(&task).await["assignment_status"], "canceled");
    w.finish().await;
}

async fn voicemail_answers_and_the_caller_gets_our_voicemail(backend: Backend) {
    not_connected(
        backend,
        Behaviour::Voicemail { rings: 2, digits: None, greeting_secs: None },
        Outcome::LocationVoicemail,
        ("AnsweredBy", "machine_start"),
    )
    .await;
}

async fn a_busy_line_sends_the_caller_to_voicemail(backend: Backend) {
    not_connected(backend, Behaviour::Busy, Outcome::LocationBusy, ("CallStatus", "busy")).await;
}

async fn nobody_answers_and_the_caller_gets_voicemail(backend: Backend) {
    not_connected(backend, Behaviour::NoAnswer, Outcome::LocationNoAnswer, ("CallStatus", "no-answer")).await;
}

async fn a_failing_line_sends_the_caller_to_voicemail(backend: Backend) {
    not_connected(backend, Behaviour::Fail, Outcome::DialFailed, ("CallStatus", "failed")).await;
}

async fn a_caller_who_waits_too_long_leaves_the_queue_for_voicemail(backend: Backend) {
    // One line, taken for ten minutes by the first caller; the second may wait 60 s.
    let Some(w) = world_scaled(
        backend,
        SLOWER,
        Behaviour::Person { rings: 1, talk_secs: 600, digits: None },
        "[ivr]\nmax_queue_secs = 60\n",
        |_| {},
    )
    .await
    else {
        return;
    };
    let place = |from: &str| PlaceCall { from: from.into(), to: MAIN.into(), digits: None, patience_secs: Some(3600) };
    let first = w.client.place_call(&place(CALLER)).await.unwrap();
    // The first caller is talking before the second dials.
    for _ in 0..500 {
        if w.client.call_summary(&first).await.unwrap()["bridge_start_ms"].is_u64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = w.client.place_call(&place("+13105550188")).await.unwrap();
    w.client.wait_for_call_end(&second, Duration::from_secs(20)).await.unwrap();
    let record = w.settled(&second).await;
    assert_eq!(record.outcome, Outcome::QueueTimeout);

    // The hold URL told the caller to leave, the queue exit offered voicemail, and the task
    // was canceled so the location is not dialled for a caller who left.
    let holds = w.webhooks("/hold").await;
    assert!(holds.iter().any(|e| e.response.contains("<Leave")), "{holds:#?}");
    let exits = w.webhooks("/enqueue-action").await;
    let left =
        exits.iter().find(|e| e.params.get("CallSid") == Some(second.as_str())).expect("the second caller's exit");
    assert_eq!(left.params.get("QueueResult"), Some("leave"));
    assert!(left.response.contains("<Record"), "{}", left.response);
    w.quiet().await;
    let task = task_sid_of_call(&w, &second).await;
    assert_eq!(w.task(&task).await["assignment_status"], "canceled");
    // Only the first caller's reservation was dialled.
    assert_eq!(w.rest("POST", "/Calls.json").await.len(), 1);
    // The first caller is still talking, undisturbed (connected since the location took the
    // reservation).
    assert_eq!(w.store.call(&first).await.unwrap().unwrap().outcome, Outcome::Connected);
    let summary = w.client.call_summary(&first).await.unwrap();
    assert!(summary["end_ms"].is_null() && summary["status"] == "in-progress", "{summary}");
    w.finish().await;
}

/// A closure of the location from the next whole wall minute, for `minutes`, read on a business
/// clock set [`CLOSING_LEAD`] before it (hours are whole minutes; New York's minutes start when
/// UTC's do): the clock, the closure, and when it begins and ends in wall time (ms).
fn closing_soon(minutes: i64) -> (Clock, Vec<call_router::hours::ClosureSpec>, i64, i64) {
    let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let wall = jiff::Timestamp::now();
    let closes = jiff::Timestamp::from_millisecond(wall.as_millisecond() / 60_000 * 60_000).unwrap();
    let opens = closes + jiff::SignedDuration::from_mins(minutes);
    let clock = Clock::reading(closes - CLOSING_LEAD, wall);
    let (closes_ms, opens_ms) = (clock.wall_ms(closes), clock.wall_ms(opens));
    assert_eq!(closes_ms, wall.as_millisecond() + CLOSING_LEAD.as_millis() as i64);
    let local = |t: jiff::Timestamp| tz.to_datetime(t).strftime("%Y-%m-%dT%H:%M").to_string();
    let closures = vec![call_router::hours::ClosureSpec {
        from: local(closes),
        to: local(opens),
        reason: Some("staff meeting".into()),
        message: None,
    }];
    (clock, closures, closes_ms, opens_ms)
}

/// A location closes with one caller talking and one waiting. At closing time the waiting
/// caller gets voicemail; the call in progress is not cut. Hours are in whole minutes, so the
/// server's business clock is set to read a few seconds before a whole minute, at which a
/// closure begins: the test waits those seconds, not up to a minute.
async fn a_caller_still_waiting_at_closing_time_gets_voicemail_and_the_call_in_progress_goes_on(backend: Backend) {
    let (clock, closures, closes_ms, _) = closing_soon(60);
    // The sandbox runs 50 times faster than the wall clock the journey acts at (SLOWER: this
    // case counts dials): the first caller talks, and the second waits, far longer than the lead.
    let long = 100_000;
    let Some(w) = world_clocked(
        backend,
        SLOWER,
        clock,
        Behaviour::Person { rings: 1, talk_secs: long, digits: None },
        &format!(
            "[ivr]
max_queue_secs = {long}
"
        ),
        |l| l[0].hours.closures = closures,
    )
    .await
    else {
        return;
    };
    let place = |from: &str| PlaceCall { from: from.into(), to: MAIN.into(), digits: None, patience_secs: Some(long) };
    let first = w.client.place_call(&place(CALLER)).await.unwrap();
    for _ in 0..500 {
        if w.client.call_summary(&first).await.unwrap()["bridge_start_ms"].is_u64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = w.client.place_call(&place("+13105550188")).await.unwrap();
    let until_closing = (closes_ms - jiff::Timestamp::now().as_millisecond()).max(0) as u64;
    assert!(until_closing > 0, "the lead ({CLOSING_LEAD:?}) ran out before the second caller dialled");
    w.client.wait_for_call_end(&second, Duration::from_millis(until_closing + 30_000)).await.unwrap();
    assert!(jiff::Timestamp::now().as_millisecond() >= closes_ms, "the caller left before closing time");
    let record = w.settled(&second).await;
    assert_eq!(record.outcome, Outcome::ClosedWhileWaiting);
    // Out of the queue (at the next `/hold`, or by the REST redirect the tick at closing
    // time sends, whichever comes first) to the location's voicemail, with why.
    let heard: Vec<Exchange> = [w.webhooks("/enqueue-action").await, w.webhooks("/caller-fallback").await]
        .concat()
        .into_iter()
        .filter(|e| e.params.get("CallSid") == Some(second.as_str()))
        .collect();
    assert!(
        heard.iter().any(|e| e.response.contains("north clinic has closed for now") && e.response.contains("<Record")),
        "{heard:#?}"
    );
    w.quiet().await;
    let task = task_sid_of_call(&w, &second).await;
    assert_eq!(w.task(&task).await["assignment_status"], "canceled");
    // The first caller is still talking, and only their reservation was dialled.
    let summary = w.client.call_summary(&first).await.unwrap();
    assert!(summary["end_ms"].is_null() && summary["status"] == "in-progress", "{summary}");
    assert_eq!(w.rest("POST", "/Calls.json").await.len(), 1);
    w.finish().await;
}

/// A callback not reached by closing time (nobody on shift), at a location whose callbacks go to
/// the voicemail list at closing: it ends as `callback_canceled`, its task is canceled, nobody is
/// dialled, and a callback request for the caller is in north's voicemail list.
async fn a_callback_not_reached_by_closing_time_goes_to_the_voicemail_list(backend: Backend) {
    let (clock, closures, closes_ms, _) = closing_soon(60);
    let receptionist = Behaviour::Person { rings: 1, talk_secs: 30, digits: Some("1".into()) };
    let Some(w) = world_clocked(backend, SLOWER, clock, receptionist, "", |l| {
        l[0].callback = Some(call_router::domain::CallbackSpec {
            offer_after_secs: 0,
            at_closing: call_router::domain::AtClosing::VoicemailList,
            ..Default::default()
        });
        l[0].hours.closures = closures;
    })
    .await
    else {
        return;
    };
    let (sid, _) = caller_chooses_a_callback(&w).await;
    assert!(jiff::Timestamp::now().as_millisecond() < closes_ms, "the lead ({CLOSING_LEAD:?}) ran out");
    let until_closing = (closes_ms - jiff::Timestamp::now().as_millisecond()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(until_closing)).await;
    let record = w.settled(&sid).await;
    assert_eq!(record.outcome, Outcome::CallbackCanceled);
    w.quiet().await;
    let listed = w.store.voicemails(&call_router::store::VoicemailFilter { limit: 10, ..Default::default() }).await;
    let listed = listed.unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let request = &listed[0];
    assert_eq!(request.kind, call_router::store::VoicemailKind::CallbackRequest);
    assert_eq!((request.caller.as_str(), request.location.as_deref()), (CALLER, Some("north")));
    assert_eq!(request.call_sid, sid);
    assert!(request.recorded_at_ms >= closes_ms, "listed at closing time: {request:?}");
    // The callback's task was canceled, and nobody was dialled.
    let tasks = tasks_of_call(&w, &sid).await;
    assert!(
        !tasks.is_empty() && tasks.iter().all(|t| t.status == "canceled"),
        "{:?}",
        tasks.iter().map(|t| &t.status).collect::<Vec<_>>()
    );
    assert!(w.rest("POST", "/Calls.json").await.is_empty());
    w.finish().await;
}

/// A location whose closing policy is its overflow location: a caller still waiting at closing
/// time (nobody on shift) is told so and moves to the overflow location's queue, with a new task
/// that says where it came from, and is connected there. The closed location is never dialled.
async fn a_caller_still_waiting_at_closing_time_is_transferred_to_the_overflow_location(backend: Backend) {
    const SOUTH: &str = "+12025550146";
    const SOUTH_PHONE: &str = "+14155550106";
    let (clock, closures, closes_ms, _) = closing_soon(60);
    let person = Behaviour::Person { rings: 1, talk_secs: 30, digits: None };
    let Some(w) = world_clocked(backend, SLOWER, clock, person.clone(), "", |l| {
        l[0].overflow = Some("south".into());
        l[0].closing_policy = call_router::domain::ClosingPolicy::Overflow;
        l[0].hours.closures = closures;
        l.push(location("south", SOUTH, SOUTH_PHONE, true));
    })
    .await
    else {
        return;
    };
    w.client.set_phone(SOUTH_PHONE, &person).await.unwrap();
    set_on_shift(&w, "north", false).await;
    let place = PlaceCall { from: CALLER.into(), to: MAIN.into(), digits: None, patience_secs: Some(3600) };
    let sid = w.client.place_call(&place).await.unwrap();
    let until_closing = (closes_ms - jiff::Timestamp::now().as_millisecond()).max(0) as u64;
    assert!(until_closing > 0, "the lead ({CLOSING_LEAD:?}) ran out before the caller dialled");
    let summary = w.client.wait_for_call_end(&sid, Duration::from_millis(until_closing + 60_000)).await.unwrap();
    assert!(jiff::Timestamp::now().as_millisecond() >= closes_ms, "the caller left before closing time");
    let record = w.settled(&sid).await;
    assert_eq!((record.outcome, record.location.as_deref()), (Outcome::Connected, Some("south")), "{summary}");
    let heard = summary["heard"].to_string();
    assert!(heard.contains("north clinic has closed for now. We are transferring you to south clinic."), "{summary}");
    w.quiet().await;
    // Only south was dialled, once.
    let dials = w.rest("POST", "/Calls.json").await;
    assert_eq!(dials.iter().map(|d| d.params.get("To").unwrap_or_default()).collect::<Vec<_>>(), [SOUTH_PHONE]);
    // Two tasks for the caller: north's canceled as they left its queue, and south's, which
    // names north as where the caller came from, completed.
    let mut tasks = tasks_of_call(&w, &sid).await;
    tasks.sort_by_key(|t| t.status.clone());
    let seen: Vec<_> = tasks
        .iter()
        .map(|t| (t.status.as_str(), &t.attributes["location"], &t.attributes["transferredFrom"]))
        .collect();
    assert_eq!(
        seen,
        [
            ("canceled", &Value::from("north"), &Value::Null),
            ("completed", &Value::from("south"), &Value::from("north"))
        ]
    );
    w.finish().await;
}

async fn a_caller_who_finds_the_location_closed_is_transferred_to_its_overflow_location(backend: Backend) {
    let person = Behaviour::Person { rings: 1, talk_secs: 30, digits: None };
    let Some(w) = world_at(backend, SLOWER, person, "", |l| l[1].overflow = Some("north".into())).await else {
        return;
    };
    let (summary, record) = w.call(NIGHT, None).await;
    // Connected at north, which the calls row records as where the call ended.
    assert_eq!(record.outcome, Outcome::Connected, "{summary}");
    assert_eq!(record.location.as_deref(), Some("north"));
    let incoming = w.webhooks("/incoming-call").await;
    assert!(
        incoming[0].response.contains("night clinic is closed right now. We are transferring you to north clinic."),
        "{}",
        incoming[0].response
    );
    w.quiet().await;
    assert_one_dial(&w.rest("POST", "/Calls.json").await);
    w.finish().await;
}

async fn a_caller_still_waiting_after_overflow_after_secs_is_taken_by_the_overflow_location(backend: Backend) {
    const SOUTH: &str = "+12025550146";
    const SOUTH_PHONE: &str = "+14155550106";
    let person = Behaviour::Person { rings: 1, talk_secs: 30, digits: None };
    let Some(w) = world_at(backend, SLOWER, person.clone(), "", |l| {
        l[0].overflow = Some("south".into());
        l[0].overflow_after_secs = Some(30);
        l.push(location("south", SOUTH, SOUTH_PHONE, true));
    })
    .await
    else {
        return;
    };
    w.client.set_phone(SOUTH_PHONE, &person).await.unwrap();
    // Nobody is on shift at north: its worker is offline, so the task waits in north's queue.
    let settings = w.server.state.settings();
    let api = call_router::twilio_api::TwilioClient::new(&settings.twilio).unwrap();
    let ws = w.store.resource("workspace", "main").await.unwrap().unwrap();
    let offline = api.list_activities(&ws).await.unwrap().into_iter().find(|a| !a.available).unwrap();
    let north = api
        .list_workers(&ws)
        .await
        .unwrap()
        .into_iter()
        .find(|wk| wk.attributes.as_deref().is_some_and(|a| a.contains(r#""location":"north""#)))
        .expect("north's worker");
    let mut p = Params::new();
    p.push("ActivitySid", &offline.sid);
    api.update_worker(&ws, &north.sid, &p).await.unwrap();

    let (summary, record) = w.call(MAIN, Some(600)).await;
    assert_eq!(record.outcome, Outcome::Connected, "{summary}");
    assert_eq!(record.location.as_deref(), Some("south"), "where the call ended");
    // South's phone was dialled, once, and the caller heard of the transfer just before the bridge.
    w.quiet().await;
    let dials = w.rest("POST", "/Calls.json").await;
    assert_eq!(dials.iter().map(|d| d.params.get("To").unwrap_or_default()).collect::<Vec<_>>(), [SOUTH_PHONE]);
    let notices = w.webhooks("/transfer-notice").await;
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert_eq!(notices[0].params.get("CallSid"), Some(record.call_sid.as_str()));
    assert!(notices[0].response.contains("We are transferring you to south clinic."), "{}", notices[0].response);
    // The task moved after the caller had waited the 30 s for north.
    let waited: u64 = notices[0].params.get("QueueTime").and_then(|t| t.parse().ok()).unwrap();
    assert!(waited >= 30, "moved after {waited} s");
    let heard = summary["heard"].to_string();
    assert!(heard.contains("We are transferring you to south clinic."), "{summary}");
    w.finish().await;
}

async fn a_caller_who_finds_every_line_busy_is_transferred_to_the_overflow_location(backend: Backend) {
    const SOUTH: &str = "+12025550146";
    const SOUTH_PHONE: &str = "+14155550106";
    let long = Behaviour::Person { rings: 1, talk_secs: 600, digits: None };
    let Some(w) = world_at(backend, SLOWER, long.clone(), "", |l| {
        l[0].overflow = Some("south".into());
        l.push(location("south", SOUTH, SOUTH_PHONE, true));
    })
    .await
    else {
        return;
    };
    w.client.set_phone(SOUTH_PHONE, &Behaviour::Person { rings: 1, talk_secs: 30, digits: None }).await.unwrap();
    let place = |from: &str| PlaceCall { from: from.into(), to: MAIN.into(), digits: None, patience_secs: Some(3600) };
    // North's one line is taken.
    let first = w.client.place_call(&place(CALLER)).await.unwrap();
    let mut connected = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while connected.is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        connected = w.store.call(&first).await.unwrap().filter(|c| c.outcome == Outcome::Connected);
    }
    assert_eq!(connected.expect("the first caller is connected").location.as_deref(), Some("north"));
    let second = w.client.place_call(&place("+13105550188")).await.unwrap();
    let summary = w.client.wait_for_call_end(&second, Duration::from_secs(20)).await.unwrap();
    let record = w.settled(&second).await;
    assert_eq!((record.outcome, record.location.as_deref()), (Outcome::Connected, Some("south")), "{summary}");
    let heard = summary["heard"].to_string();
    assert!(
        heard.contains("All of north clinic's lines are busy. We are transferring you to south clinic."),
        "{heard}"
    );
    w.quiet().await;
    let dials = w.rest("POST", "/Calls.json").await;
    assert_eq!(
        dials.iter().map(|d| d.params.get("To").unwrap_or_default()).collect::<Vec<_>>(),
        [NORTH_PHONE, SOUTH_PHONE]
    );
    w.finish().await;
}

/// The task the sandbox created for a caller's `<Enqueue>`.
async fn task_sid_of_call(w: &World, call_sid: &str) -> String {
    let summary = w.client.call_summary(call_sid).await.unwrap();
    summary["task_sid"].as_str().unwrap_or_else(|| panic!("no task for {call_sid}: {summary}")).to_owned()
}

async fn the_caller_hangs_up_while_the_location_rings(backend: Backend) {
    // The location would ring for two minutes (a 120 s ring timeout, 30 rings before a person
    // picks up); the caller gives up after 40 s. The margins are wide on purpose, and the time
    // scale is the slower one: at the fast one 4 ms of real delay (a busy CI machine) are a
    // virtual second, and a reservation's 65 s can run out before the dial, which is counted.
    let Some(w) = world_scaled(
        backend,
        SLOWER,
        Behaviour::Person { rings: 30, talk_secs: 30, digits: None },
        "[dialing]\nring_timeout_secs = 120\n",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (summary, record) = w.call(MAIN, Some(40)).await;
    assert_eq!(record.outcome, Outcome::CallerHungUp, "{summary}");
    w.quiet().await;

    let exits = w.webhooks("/enqueue-action").await;
    assert!(exits.iter().any(|e| e.params.get("QueueResult") == Some("hangup")), "{exits:#?}");
    let dial = assert_one_dial(&w.rest("POST", "/Calls.json").await).clone();
    // The location's phone was stopped, and never bridged to anyone.
    let outbound = record.outbound_call_sid.clone().expect("the outbound leg is linked");
    let stops = w.rest("POST", &format!("/Calls/{outbound}.json")).await;
    assert!(
        stops.iter().any(|e| matches!(e.params.get("Status"), Some("canceled") | Some("completed"))),
        "the ringing leg is hung up: {stops:#?} (dial: {dial:?})"
    );
    assert!(w.webhooks("/dial-queue").await.is_empty(), "nobody answered, so nothing was bridged");
    let state = w.client.state().await.unwrap();
    let leg = find_by_sid(&state["calls"], &outbound).unwrap_or_else(|| panic!("no call {outbound} in {state}"));
    assert!(matches!(leg["status"].as_str(), Some("canceled") | Some("completed")), "{leg}");
    w.finish().await;
}

async fn after_hours_the_caller_gets_voicemail_and_nothing_is_queued(backend: Backend) {
    let Some(w) = world(backend, Behaviour::default()).await else { return };
    let (summary, record) = w.call(NIGHT, None).await;
    assert_eq!(record.outcome, Outcome::AfterHours, "{summary}");
    assert_eq!(record.location.as_deref(), Some("night"));
    w.quiet().await;

    let incoming = w.webhooks("/incoming-call").await;
    assert_eq!(incoming.len(), 1);
    assert!(incoming[0].response.contains("<Record"), "{}", incoming[0].response);
    assert!(!incoming[0].response.contains("<Enqueue"), "{}", incoming[0].response);
    assert!(
        w.webhooks("/tr-event-handler").await.iter().all(|e| e.params.get("EventType") != Some("reservation.created"))
    );
    assert!(w.rest("POST", "/Calls.json").await.is_empty(), "no location is dialled after hours");
    assert!(record.task_sid.is_none());
    w.finish().await;
}

async fn every_webhook_the_sandbox_sends_passes_the_servers_signature_check(backend: Backend) {
    let Some(w) = world(backend, Behaviour::Busy).await else { return };
    w.call(MAIN, None).await;
    w.quiet().await;
    let webhooks: Vec<Exchange> = w.exchanges().await.into_iter().filter(|e| e.direction == "out").collect();
    assert!(webhooks.len() >= 5, "{webhooks:#?}");
    for e in &webhooks {
        assert!(e.status != 400 && e.status != 403, "the server refused a sandbox webhook: {e:?}");
        assert!(e.status < 500, "the server failed on {e:?}");
    }
    w.finish().await;
}

// -- screening ------------------------------------------------------------------

/// North screens its calls (AMD off, the default with screening); its phone is `phone`. At the
/// slower time scale: the cases count dials.
async fn screened_world(backend: Backend, phone: Behaviour) -> Option<World> {
    world_scaled(backend, SLOWER, phone, "", |north| north.screening = true).await
}

/// The one dial of a screened location: without answering-machine detection.
fn assert_screened_dial(dials: &[Exchange]) {
    assert_eq!(dials.len(), 1, "exactly one dial: {dials:#?}");
    let p = &dials[0].params;
    assert_eq!(p.get("To"), Some(NORTH_PHONE));
    assert_eq!(p.get("MachineDetection"), None, "screening dials without AMD: {p:?}");
    assert_eq!(p.get("MachineDetectionTimeout"), None);
}

/// `/dial-queue` answered with the screening prompt: a Gather for one key whose action is
/// `/screen` with the same identifiers as the leg's own URL, and no bridge.
fn assert_prompted(answer: &Exchange) {
    let r = &answer.response;
    assert!(r.contains("<Gather") && r.contains(r#"numDigits="1""#) && r.contains(r#"timeout="8""#), "{r}");
    assert!(r.contains("Call for north clinic from 3 1 0, 5 5 5, 0 1 9 9. Press 1 to accept, or hang up."), "{r}");
    assert!(!r.contains("<Dial"), "no bridge before 1 is pressed: {r}");
    let action = r.split_once(r#"action=""#).and_then(|(_, rest)| rest.split_once('"')).map(|(a, _)| a);
    let action = action.unwrap_or_else(|| panic!("no action in {r}")).replace("&amp;", "&");
    assert!(action.contains("/screen?"), "{action}");
    let leg_url = format!("http://x{}?{}", answer.path, answer.query);
    for key in ["reservationSid", "taskSid", "attempt", "callSid", "location"] {
        let want = twilio::signature::query_param(&leg_url, key);
        assert!(want.is_some(), "the leg's URL has {key}: {leg_url}");
        assert_eq!(twilio::signature::query_param(&action, key), want, "{key} in {action}");
    }
    assert_eq!(twilio::signature::query_param(&action, "prompt").as_deref(), Some("1"), "{action}");
}

async fn screening_the_receptionist_presses_1_and_is_connected(backend: Backend) {
    let phone = Behaviour::Person { rings: 1, talk_secs: 30, digits: Some("1".into()) };
    let Some(w) = screened_world(backend, phone).await else { return };
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, Outcome::Connected, "{summary}");
    assert_eq!(record.answered_by.as_deref(), Some("human"), "pressing 1 tells a person");
    w.quiet().await;
    assert_screened_dial(&w.rest("POST", "/Calls.json").await);
    let reservation = record.reservation_sid.clone().unwrap();
    let answered = w.webhooks("/dial-queue").await;
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].params.get("AnsweredBy"), None);
    assert_prompted(&answered[0]);

    // The Gather's action: Digits=1, signed and accepted, answered with the bridge.
    let screens = w.webhooks("/screen").await;
    assert_eq!(screens.len(), 1, "{screens:#?}");
    assert_eq!(screens[0].status, 200, "{:?}", screens[0]);
    assert_eq!(screens[0].params.get("Digits"), Some("1"));
    assert!(screens[0].query.contains(&format!("reservationSid={reservation}")), "{}", screens[0].query);
    assert!(screens[0].response.contains(&format!("reservationSid=\"{reservation}\"")), "{}", screens[0].response);
    let exits = w.webhooks("/enqueue-action").await;
    assert_eq!(exits.iter().filter_map(|e| e.params.get("QueueResult")).collect::<Vec<_>>(), ["bridged"]);
    let task = task_sid_of(&record);
    assert_eq!(w.task(&task).await["assignment_status"], "completed");
    w.finish().await;
}

/// A screened location that does not accept: the caller is redirected to the fallback
/// (voicemail), the task canceled, the location's leg never bridged; returns the `/screen`
/// webhooks (None when the backend is not available here).
async fn screened_not_answered(backend: Backend, phone: Behaviour) -> Option<Vec<Exchange>> {
    let w = screened_world(backend, phone).await?;
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, Outcome::LocationNoAnswer, "{summary}");
    assert_eq!(record.answered_by, None, "nothing was detected: {record:?}");
    w.quiet().await;
    assert_screened_dial(&w.rest("POST", "/Calls.json").await);
    let answered = w.webhooks("/dial-queue").await;
    assert_eq!(answered.len(), 1);
    assert_prompted(&answered[0]);
    let screens = w.webhooks("/screen").await;
    for e in &screens {
        assert_eq!(e.status, 200, "{e:?}");
        assert!(!e.response.contains("<Dial"), "bridged a leg that did not accept: {e:?}");
    }
    assert!(screens.last().is_some_and(|e| e.response.contains("<Hangup")), "{screens:#?}");
    let redirects = w.rest("POST", &format!("/Calls/{}.json", record.call_sid)).await;
    assert!(
        redirects.iter().any(|e| e.params.get("Url").is_some_and(|u| u.contains("/caller-fallback"))),
        "{redirects:#?}"
    );
    let fallback = w.webhooks("/caller-fallback").await;
    assert_eq!(fallback.len(), 1, "the caller heard the fallback once");
    assert!(fallback[0].response.contains("<Record"), "{}", fallback[0].response);
    let task = task_sid_of(&record);
    assert_eq!(w.task(&task).await["assignment_status"], "canceled");
    let exits = w.webhooks("/enqueue-action").await;
    assert!(exits.iter().all(|e| e.params.get("QueueResult") != Some("bridged")), "{exits:#?}");
    w.finish().await;
    Some(screens)
}

async fn screening_no_key_is_not_answered_and_the_caller_gets_voicemail(backend: Backend) {
    let phone = Behaviour::Person { rings: 1, talk_secs: 30, digits: None };
    let Some(screens) = screened_not_answered(backend, phone).await else { return };
    // The Gather timed out and fell through to the redirect: the action without Digits.
    assert_eq!(screens.len(), 1, "{screens:#?}");
    assert_eq!(screens[0].params.get("Digits"), None);
    assert!(screens[0].query.contains("prompt=1"), "{}", screens[0].query);
}

async fn screening_a_voicemail_greeting_with_amd_off_is_never_bridged(backend: Backend) {
    let phone = Behaviour::Voicemail { rings: 2, digits: None, greeting_secs: Some(3) };
    let Some(screens) = screened_not_answered(backend, phone).await else { return };
    assert_eq!(screens.len(), 1, "{screens:#?}");
    assert_eq!(screens[0].params.get("Digits"), None);
}

async fn screening_a_wrong_key_twice_is_not_answered(backend: Backend) {
    let phone = Behaviour::Person { rings: 1, talk_secs: 30, digits: Some("9,9".into()) };
    let Some(screens) = screened_not_answered(backend, phone).await else { return };
    assert_eq!(screens.len(), 2, "{screens:#?}");
    assert_eq!(screens.iter().filter_map(|e| e.params.get("Digits")).collect::<Vec<_>>(), ["9", "9"]);
    // The first wrong key repeats the prompt, once.
    let again = &screens[0].response;
    assert!(
        again.contains("<Gather") && again.contains("prompt=2") && again.contains("Sorry, that was not 1."),
        "{again}"
    );
    assert!(screens[1].query.contains("prompt=2"), "{}", screens[1].query);
}

/// What a caller heard, in order: (`say` or `play`, the text or URL).
async fn heard(w: &World, call_sid: &str) -> Vec<(String, String)> {
    let summary = w.client.call_summary(call_sid).await.unwrap();
    summary["heard"]
        .as_array()
        .unwrap_or_else(|| panic!("no heard in {summary}"))
        .iter()
        .map(|h| (h["verb"].as_str().unwrap().to_owned(), h["what"].as_str().unwrap().to_owned()))
        .collect()
}

/// The announcements a caller heard, in order.
async fn announcements(w: &World, call_sid: &str) -> Vec<String> {
    heard(w, call_sid)
        .await
        .into_iter()
        .filter(|(v, t)| v == "say" && t.starts_with("You are caller"))
        .map(|(_, t)| t)
        .collect()
}

async fn waiting_callers_hear_their_place_then_the_expected_wait(backend: Backend) {
    const MUSIC: &str = "https://music.example.com/north.mp3";
    const COMFORT: &str = "Thank you for waiting. Your call matters to North.";
    // One line, taken by a first caller for five minutes before the others call.
    let Some(w) = world_of(
        backend,
        Behaviour::Person { rings: 1, talk_secs: 300, digits: None },
        "[ivr]\nmax_queue_secs = 1200\nannounce_every_secs = 30\n",
        |north| {
            north.hold_music = Some(MUSIC.into());
            north.comfort_messages = vec![COMFORT.into()];
        },
    )
    .await
    else {
        return;
    };
    let place = |from: &str, patience: u64| PlaceCall {
        from: from.into(),
        to: MAIN.into(),
        digits: None,
        patience_secs: Some(patience),
    };
    let first = w.client.place_call(&place(CALLER, 3600)).await.unwrap();
    for _ in 0..500 {
        if w.client.call_summary(&first).await.unwrap()["bridge_start_ms"].is_u64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(w.client.call_summary(&first).await.unwrap()["bridge_start_ms"].is_u64(), "the first caller is talking");
    // Three more queue behind it, each once the one before heard its place.
    let mut waiting = Vec::new();
    for (i, from) in ["+13105550111", "+13105550122", "+13105550133"].into_iter().enumerate() {
        let sid = w.client.place_call(&place(from, 450)).await.unwrap();
        for _ in 0..500 {
            if !announcements(&w, &sid).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let said = announcements(&w, &sid).await;
        let number = ["one", "two", "three"][i];
        // No call was handled yet: the place only, nothing about the wait.
        assert_eq!(said.first(), Some(&format!("You are caller number {number}.")), "{said:?}");
        waiting.push(sid);
    }

    // The second waits through the first caller's whole call, and hears the expected
    // wait once that call was handled: its location leg's length per call ahead. Next in
    // line (one) or behind the caller being rung (two), one call ahead; for a moment after
    // the first call's leg ended and before its caller's leg reported its end, that call
    // still holds the line: two calls ahead.
    let second = &waiting[1];
    w.client.wait_for_call_end(second, Duration::from_secs(30)).await.unwrap();
    let record = w.settled(&first).await;
    assert_eq!(record.outcome, Outcome::Connected);
    let leg = record.outbound_call_sid.clone().expect("the first caller's leg");
    let handled = w.store.statuses(&leg).await.unwrap();
    let secs = handled.iter().find(|s| s.status == "completed").and_then(|s| s.call_duration).expect("its duration");
    let secs = u32::try_from(secs).unwrap();
    let wait = call_router::announce::spoken_wait(secs);
    assert!(wait.starts_with("about 5 minutes") || wait.starts_with("about 6 minutes"), "{secs} s: {wait}");
    let exact = [
        format!("You are caller number one. The expected wait is {wait}."),
        format!("You are caller number two. The expected wait is {wait}."),
    ];
    let said = announcements(&w, second).await;
    let with_wait: Vec<&String> = said.iter().filter(|t| t.contains("expected wait")).collect();
    assert!(!with_wait.is_empty(), "the second caller never heard a wait: {said:?}");
    assert!(with_wait.iter().any(|t| exact.contains(t)), "{with_wait:?} (handled in {secs} s)");
    // Under a loaded machine the journeys' states lag the calls for a moment (a finished
    // call's journey still holding the line, or the next caller already out of the queue):
    // then the wait is one handle time more or less, never anything else.
    let near = [call_router::announce::spoken_wait(0), wait.clone(), call_router::announce::spoken_wait(2 * secs)];
    for t in &with_wait {
        let ok = ["one", "two"]
            .iter()
            .any(|n| near.iter().any(|w| **t == format!("You are caller number {n}. The expected wait is {w}.")));
        let first = w.client.call_summary(&waiting[0]).await.unwrap();
        assert!(ok, "{t:?} (handled in {secs} s; the caller ahead: {first})");
    }
    // Before any call was handled, nothing was said about the wait; announcements came
    // every 30 s of queue time or more (by the `QueueTime` of the `/hold`s that announced).
    assert!(!said[0].contains("expected wait"), "{said:?}");
    let holds = w.webhooks("/hold").await;
    let at: Vec<u32> = holds
        .iter()
        .filter(|e| e.params.get("CallSid") == Some(second.as_str()) && e.response.contains("You are caller"))
        .map(|e| e.params.get("QueueTime").unwrap().parse().unwrap())
        .collect();
    assert_eq!(at.len(), said.len(), "one announcement per /hold that announced: {at:?} {said:?}");
    assert!(at.windows(2).all(|p| p[1] - p[0] >= 30), "{at:?}");
    assert!(at.len() >= 6, "a 450 s wait with an announcement every 30 s: {at:?}");

    // The location's own music and comfort message, between announcements.
    let all = heard(&w, second).await;
    assert!(all.iter().any(|(v, u)| v == "play" && u == MUSIC), "{all:?}");
    assert!(!all.iter().any(|(v, u)| v == "play" && u != MUSIC), "{all:?}");
    assert!(all.iter().any(|(v, t)| v == "say" && t == COMFORT), "{all:?}");
    w.finish().await;
}

/// The location's workers in the sandbox, sorted by name: (name, capacity, in use).
async fn workers_of(w: &World, location: &str) -> Vec<(String, u64, u64)> {
    let state = w.client.state().await.unwrap();
    let mut out: Vec<(String, u64, u64)> = state["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| {
            let attrs = match &k["attributes"] {
                Value::String(text) => serde_json::from_str(text).unwrap_or_default(),
                other => other.clone(),
            };
            attrs["location"] == location
        })
        .map(|k| {
            (
                k["friendly_name"].as_str().unwrap().to_owned(),
                k["capacity"].as_u64().unwrap(),
                k["in_use"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Five lines with workers of two (`provision.worker_capacity = 2`, so the test needs five
/// callers rather than TaskRouter's 51): three workers, and five callers talking at once
/// through them; a sixth waits, since the lines are all taken. At 50 virtual seconds a real
/// one: at 250, five callers' webhooks at once on a loaded machine (PostgreSQL, the whole suite
/// running) took longer than the 65 s reservation timeout, and every reservation timed out.
async fn more_lines_than_one_worker_holds_bridge_that_many_callers_at_once(backend: Backend) {
    let talk = Behaviour::Person { rings: 1, talk_secs: 3600, digits: None };
    let extra = "[ivr]\nmax_queue_secs = 3600\n[provision]\nworker_capacity = 2\n";
    let Some(w) = world_scaled(backend, SLOWER, talk, extra, |north| north.lines = 5).await else {
        return;
    };
    let capacities: Vec<(String, u64)> = workers_of(&w, "north").await.into_iter().map(|(n, c, _)| (n, c)).collect();
    let want = [("call-router/north", 2), ("call-router/north/2", 2), ("call-router/north/3", 1)];
    assert_eq!(capacities, want.map(|(n, c)| (n.to_owned(), c)));

    let place = |i: usize| PlaceCall {
        from: format!("+1310555{:04}", 100 + i),
        to: MAIN.into(),
        digits: None,
        patience_secs: Some(36_000),
    };
    let mut callers = Vec::new();
    for i in 0..5 {
        callers.push(w.client.place_call(&place(i)).await.unwrap());
    }
    let mut bridged = Vec::new();
    for sid in &callers {
        let mut summary = Value::Null;
        for _ in 0..2000 {
            summary = w.client.call_summary(sid).await.unwrap();
            if summary["bridge_start_ms"].is_u64() || summary["final"] == true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !summary["bridge_start_ms"].is_u64() {
            let state = w.client.state().await.unwrap();
            let journey = w.store.journey_json(sid).await.unwrap();
            let dials = w.rest("POST", "/Calls.json").await.len();
            let legs: Vec<(String, u64, String)> = w
                .webhooks("/dial-queue")
                .await
                .into_iter()
                .chain(w.webhooks("/status-callback").await)
                .map(|e| (e.path.clone() + "?" + &e.query, e.status, e.response.chars().take(200).collect()))
                .collect();
            panic!(
                "caller {sid} was never bridged: {summary}\nworkers {:#}\nreservations {}\ndials {dials}\n\
                 legs {legs:#?}\njourney {journey:?}",
                state["workers"],
                state["reservations"].as_array().unwrap().len(),
            );
        }
        bridged.push(summary);
    }
    // All five talk at the same time: every bridge began before any ended.
    let latest_start = bridged.iter().map(|s| s["bridge_start_ms"].as_u64().unwrap()).max().unwrap();
    assert!(bridged.iter().all(|s| s["bridge_end_ms"].is_null()), "{bridged:#?}");
    let now = w.client.state().await.unwrap()["now_ms"].as_u64().unwrap();
    assert!(latest_start <= now);
    // Every worker is full.
    assert_eq!(
        workers_of(&w, "north").await.into_iter().map(|(_, c, u)| (c, u)).collect::<Vec<_>>(),
        [(2, 2), (2, 2), (1, 1)]
    );
    for sid in &callers {
        assert_eq!(w.settled(sid).await.outcome, Outcome::Connected, "{sid}");
    }

    // A sixth caller waits: the location's five lines are taken.
    let sixth = w.client.place_call(&place(5)).await.unwrap();
    let mut task = None;
    for _ in 0..2000 {
        task = w.client.call_summary(&sixth).await.unwrap()["task_sid"].as_str().map(str::to_owned);
        if task.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let task = task.expect("the sixth caller was never enqueued");
    // TaskRouter routes a new task at once: with a free line it would be reserved now.
    assert_eq!(w.task(&task).await["assignment_status"], "pending");
    w.quiet().await;
    let record = w.store.call(&sixth).await.unwrap();
    assert_eq!(w.task(&task).await["assignment_status"], "pending", "{record:?}");
    assert!(w.client.call_summary(&sixth).await.unwrap()["bridge_start_ms"].is_null());
    w.finish().await;
}

/// English and Spanish, Spanish spoken by Polly.Mia; north is "Clínica Norte" in Spanish.
const TWO_LANGUAGES: &str = "[ivr]\nlanguages = ['en-US', 'es-MX']\nmax_queue_secs = 1200\nannounce_every_secs = 30\n\
                             [language.es-MX]\nvoice = 'Polly.Mia'\n";
const SPANISH_COMFORT: &str = "Gracias por esperar. Su llamada es importante.";

fn spanish_north(north: &mut LocationSpec) {
    let text = call_router::domain::LocationText {
        display_name: Some("Clínica Norte".into()),
        comfort_messages: vec![SPANISH_COMFORT.into()],
    };
    north.translations.insert("es-MX".into(), text);
    north.comfort_messages = vec!["Thank you for waiting.".into()];
}

/// Each `<Say>` a caller heard: its text, language and voice.
async fn said_in(w: &World, call_sid: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let summary = w.client.call_summary(call_sid).await.unwrap();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    summary["heard"]
        .as_array()
        .unwrap_or_else(|| panic!("no heard in {summary}"))
        .iter()
        .filter(|h| h["verb"] == "say")
        .map(|h| (text(&h["what"]).unwrap(), text(&h["language"]), text(&h["voice"])))
        .collect()
}

async fn a_caller_who_presses_the_language_key_hears_spanish_through_the_menu_and_the_hold(backend: Backend) {
    // One line, taken by an English caller for two minutes; a second caller presses 9.
    let Some(w) =
        world_of(backend, Behaviour::Person { rings: 1, talk_secs: 120, digits: None }, TWO_LANGUAGES, spanish_north)
            .await
    else {
        return;
    };
    let place = |from: &str, digits: Option<&str>| PlaceCall {
        from: from.into(),
        to: MAIN.into(),
        digits: digits.map(str::to_owned),
        patience_secs: Some(900),
    };
    let first = w.client.place_call(&place(CALLER, None)).await.unwrap();
    for _ in 0..500 {
        if w.client.call_summary(&first).await.unwrap()["bridge_start_ms"].is_u64() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = w.client.place_call(&place("+13105550111", Some("9"))).await.unwrap();
    w.client.wait_for_call_end(&second, Duration::from_secs(30)).await.unwrap();
    let record = w.settled(&second).await;
    assert_eq!(record.outcome, Outcome::Connected);
    assert_eq!(w.settled(&first).await.outcome, Outcome::Connected);

    let es = |t: &str| (t.to_owned(), Some("es-MX".to_owned()), Some("Polly.Mia".to_owned()));
    let en = |t: &str| (t.to_owned(), Some("en-US".to_owned()), None);
    let said = said_in(&w, &second).await;
    // The greeting in English with the offer in Spanish; after 9, the greeting again in
    // Spanish with the offer of English (its key, the next free one, 8), then the queue.
    assert_eq!(
        said[..5],
        [
            en("Thank you for calling north clinic."),
            es("Para español, oprima 9."),
            es("Gracias por llamar a Clínica Norte."),
            en("For English, press 8."),
            es("Por favor, espere mientras lo comunicamos."),
        ],
        "{said:#?}"
    );
    // Everything after it, while waiting, is Spanish: the place, the Spanish comfort message.
    let waiting = &said[5..];
    assert_eq!(waiting.first(), Some(&es("Usted es la persona número uno en la fila.")), "{said:#?}");
    assert!(
        waiting.iter().all(|s| s.1.as_deref() == Some("es-MX") && s.2.as_deref() == Some("Polly.Mia")),
        "{said:#?}"
    );
    assert!(waiting.contains(&es(SPANISH_COMFORT)), "{said:#?}");
    // Twilio asked the hold music with the caller's language in the (signed) URL.
    let holds: Vec<Exchange> =
        w.webhooks("/hold").await.into_iter().filter(|e| e.params.get("CallSid") == Some(second.as_str())).collect();
    assert!(!holds.is_empty() && holds.iter().all(|h| h.query.contains("lang=es-MX")), "{holds:#?}");

    // The first caller pressed nothing: English throughout, with Spanish only in its offer.
    let said = said_in(&w, &first).await;
    assert_eq!(
        said[..3],
        [
            en("Thank you for calling north clinic."),
            es("Para español, oprima 9."),
            en("Please hold while we connect you."),
        ],
        "{said:#?}"
    );
    w.finish().await;
}

async fn a_spanish_callers_fallback_after_a_busy_line_is_in_spanish(backend: Backend) {
    let Some(w) = world_of(backend, Behaviour::Busy, TWO_LANGUAGES, spanish_north).await else { return };
    let sid = w
        .client
        .place_call(&PlaceCall { from: CALLER.into(), to: MAIN.into(), digits: Some("9".into()), patience_secs: None })
        .await
        .unwrap();
    w.client.wait_for_call_end(&sid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(w.settled(&sid).await.outcome, Outcome::LocationBusy);
    w.quiet().await;
    // The server's REST redirect named the caller's language; the fallback spoke it.
    let fallback = w.webhooks("/caller-fallback").await;
    assert_eq!(fallback.len(), 1, "{fallback:#?}");
    assert!(fallback[0].query.contains("lang=es-MX"), "{}", fallback[0].query);
    let said: Vec<String> =
        said_in(&w, &sid).await.into_iter().filter(|s| s.1.as_deref() == Some("es-MX")).map(|s| s.0).collect();
    for want in [
        "Lo sentimos, Clínica Norte está atendiendo otra llamada.",
        "Por favor, deje un mensaje después del tono y le devolveremos la llamada.",
        "Gracias por llamar. Adiós.",
    ] {
        assert!(said.iter().any(|s| s == want), "{want:?} not in {said:#?}");
    }
    w.finish().await;
}

async fn a_spanish_speaking_location_greets_in_spanish_and_screens_in_spanish(backend: Backend) {
    // North speaks Spanish with its own voice and screens; MAIN serves only north.
    let phone = Behaviour::Person { rings: 1, talk_secs: 30, digits: Some("1".into()) };
    let Some(w) = world_of(backend, phone, TWO_LANGUAGES, |north| {
        north.language = Some("es-MX".into());
        north.voice = Some("Polly.Lupe".into());
        north.display_name = Some("Clínica Norte".into());
        north.screening = true;
    })
    .await
    else {
        return;
    };
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, Outcome::Connected, "{summary}");
    // The caller pressed nothing: the location's language, in the location's voice.
    let lupe = |t: &str| (t.to_owned(), Some("es-MX".to_owned()), Some("Polly.Lupe".to_owned()));
    let said = said_in(&w, &record.call_sid).await;
    assert_eq!(
        said[..3],
        [
            lupe("Gracias por llamar a Clínica Norte."),
            ("For English, press 8.".to_owned(), Some("en-US".to_owned()), None),
            lupe("Por favor, espere mientras lo comunicamos."),
        ],
        "{said:#?}"
    );
    // The receptionist hears the screening prompt in Spanish.
    let leg = record.outbound_call_sid.clone().expect("the location's leg");
    let prompt = said_in(&w, &leg).await;
    assert_eq!(
        prompt.first(),
        Some(&lupe("Llamada para Clínica Norte de 3 1 0, 5 5 5, 0 1 9 9. Oprima 1 para aceptar, o cuelgue.")),
        "{prompt:#?}"
    );
    w.finish().await;
}

// -- several phones per location, rung in order ---------------------------------------------

const NORTH_SECOND: &str = "+14155550102";

/// North with two phones (NORTH_PHONE, then NORTH_SECOND) rung in order, at the slower
/// time scale (these cases count dials), the first phone behaving as `first` and the
/// second as `second`.
async fn two_phones(backend: Backend, first: Behaviour, second: Behaviour) -> Option<World> {
    let w = world_at(backend, SLOWER, first, "", |l| {
        l[0].phone = String::new();
        l[0].phones = vec![NORTH_PHONE.into(), NORTH_SECOND.into()];
    })
    .await?;
    w.client.set_phone(NORTH_SECOND, &second).await.unwrap();
    Some(w)
}

/// The numbers the server dialled, in order.
async fn dialled(w: &World) -> Vec<String> {
    w.rest("POST", "/Calls.json").await.iter().filter_map(|e| e.params.get("To").map(str::to_owned)).collect()
}

async fn phones_in_order_the_first_is_busy_and_the_second_answers(backend: Backend) {
    let person = Behaviour::Person { rings: 2, talk_secs: 20, digits: None };
    let Some(w) = two_phones(backend, Behaviour::Busy, person).await else { return };
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, Outcome::Connected, "{summary}");
    w.quiet().await;
    // One reservation, its two phones once each, in order.
    assert_eq!(dialled(&w).await, [NORTH_PHONE, NORTH_SECOND]);
    let reservation = record.reservation_sid.clone().unwrap();
    let events = w.webhooks("/tr-event-handler").await;
    let created: Vec<&Exchange> =
        events.iter().filter(|e| e.params.get("EventType") == Some("reservation.created")).collect();
    assert_eq!(created.len(), 1, "the second phone rang for the same reservation");
    assert!(created[0].params.get("ReservationSid") == Some(reservation.as_str()), "{:?}", created[0].params);
    // The second phone's leg is the one bridged.
    let answered = w.webhooks("/dial-queue").await;
    assert_eq!(answered.len(), 1, "{answered:#?}");
    assert_eq!(answered[0].params.get("To"), Some(NORTH_SECOND));
    assert!(answered[0].response.contains(&format!("reservationSid=\"{reservation}\"")), "{}", answered[0].response);
    assert_eq!(record.outbound_call_sid.as_deref(), answered[0].params.get("CallSid"));
    // The busy first phone sent nobody to voicemail.
    assert!(w.webhooks("/caller-fallback").await.is_empty());
    assert_eq!(w.task(&task_sid_of(&record)).await["assignment_status"], "completed");
    w.finish().await;
}

async fn phones_in_order_nobody_answers_each_is_dialled_once_then_voicemail(backend: Backend) {
    let Some(w) = two_phones(backend, Behaviour::NoAnswer, Behaviour::NoAnswer).await else { return };
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, Outcome::LocationNoAnswer, "{summary}");
    w.quiet().await;
    assert_eq!(dialled(&w).await, [NORTH_PHONE, NORTH_SECOND], "each phone once, in order");
    let statuses: Vec<(String, String)> = w
        .webhooks("/status-callback")
        .await
        .iter()
        .filter(|e| e.params.get("CallStatus") == Some("no-answer"))
        .filter_map(|e| Some((e.params.get("To")?.to_owned(), e.params.get("CallStatus")?.to_owned())))
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    // Only after the last phone: the caller's fallback, once, offering voicemail.
    let fallback = w.webhooks("/caller-fallback").await;
    assert_eq!(fallback.len(), 1, "the caller heard the fallback once");
    assert!(fallback[0].response.contains("<Record"), "{}", fallback[0].response);
    assert_eq!(w.task(&task_sid_of(&record)).await["assignment_status"], "canceled");
    w.finish().await;
}

async fn phones_all_at_once_the_first_to_answer_wins_and_the_other_is_hung_up(backend: Backend) {
    // The first phone would ring out; the second answers after two rings.
    let person = Behaviour::Person { rings: 2, talk_secs: 20, digits: None };
    let Some(w) = world_at(backend, SLOWER, Behaviour::NoAnswer, "", |l| {
        l[0].phone = String::new();
        l[0].phones = vec![NORTH_PHONE.into(), NORTH_SECOND.into()];
        l[0].ring = call_router::domain::Ring::AllAtOnce;
    })
    .await
    else {
        return;
    };
    w.client.set_phone(NORTH_SECOND, &person).await.unwrap();
    let (summary, record) = w.call(MAIN, None).await;
    assert_eq!(record.outcome, Outcome::Connected, "{summary}");
    w.quiet().await;
    // Both phones dialled once, for one reservation.
    let mut numbers = dialled(&w).await;
    numbers.sort();
    assert_eq!(numbers, [NORTH_PHONE, NORTH_SECOND]);
    let answered = w.webhooks("/dial-queue").await;
    assert_eq!(answered.len(), 1, "{answered:#?}");
    assert_eq!(answered[0].params.get("To"), Some(NORTH_SECOND));
    assert_eq!(record.outbound_call_sid.as_deref(), answered[0].params.get("CallSid"));
    // The first phone's leg, still ringing, was hung up when the second won.
    let first_leg = w
        .rest("POST", "/Calls.json")
        .await
        .into_iter()
        .find(|e| e.params.get("To") == Some(NORTH_PHONE))
        .map(|e| e.response)
        .and_then(|r| serde_json::from_str::<Value>(&r).ok())
        .and_then(|v| v["sid"].as_str().map(str::to_owned))
        .expect("the first phone's leg");
    let hang_ups = w.rest("POST", &format!("/Calls/{first_leg}.json")).await;
    assert!(hang_ups.iter().any(|e| e.params.get("Status") == Some("completed")), "{hang_ups:#?}");
    assert!(w.webhooks("/caller-fallback").await.is_empty());
    w.finish().await;
}

/// Puts `location`'s worker on shift (available) or off it (offline), over the REST API.
/// With nobody on north's shift, `CALLER` waits at north, presses 1 for a callback and hangs
/// up (out of the queue by `<Leave>`): the call's SID and the sandbox's summary of it.
async fn caller_chooses_a_callback(w: &World) -> (String, Value) {
    set_on_shift(w, "north", false).await;
    let place = PlaceCall { from: CALLER.into(), to: MAIN.into(), digits: Some("1".into()), patience_secs: Some(600) };
    let sid = w.client.place_call(&place).await.unwrap();
    let summary = w.client.wait_for_call_end(&sid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary["queue_result"], "leave", "{summary}");
    (sid, summary)
}

async fn set_on_shift(w: &World, location: &str, on: bool) {
    let settings = w.server.state.settings();
    let api = call_router::twilio_api::TwilioClient::new(&settings.twilio).unwrap();
    let ws = w.store.resource("workspace", "main").await.unwrap().unwrap();
    let activity = api.list_activities(&ws).await.unwrap().into_iter().find(|a| a.available == on).unwrap();
    let marker = format!(r#""location":"{location}""#);
    let worker = api
        .list_workers(&ws)
        .await
        .unwrap()
        .into_iter()
        .find(|wk| wk.attributes.as_deref().is_some_and(|a| a.contains(&marker)))
        .expect("the location's worker");
    let mut p = Params::new();
    p.push("ActivitySid", &activity.sid);
    api.update_worker(&ws, &worker.sid, &p).await.unwrap();
}

/// A callback not reached by closing time (nobody on shift) waits for the next opening: its
/// task is canceled at closing, no task exists while closed, and at the opening a new one, with
/// the same place in line, rings the location, which calls the caller back. A second caller,
/// still waiting in the queue at closing time, gets the closing policy (`callback`): told so,
/// out of the queue, and called back at the opening too. Hours are whole minutes, so the
/// location is closed for one minute (a closure), read on a business clock set a few seconds
/// before it: the case takes a little over a minute.
async fn a_callback_still_waiting_at_closing_time_waits_for_the_next_opening_and_keeps_its_place(backend: Backend) {
    let (clock, closures, closes_ms, opens_ms) = closing_soon(1);
    let receptionist = Behaviour::Person { rings: 1, talk_secs: 30, digits: Some("1".into()) };
    let Some(w) = world_clocked(backend, SLOWER, clock, receptionist, "", |l| {
        l[0].screening = true;
        l[0].callback = Some(call_router::domain::CallbackSpec { offer_after_secs: 0, ..Default::default() });
        l[0].closing_policy = call_router::domain::ClosingPolicy::Callback;
        l[0].hours.closures = closures;
    })
    .await
    else {
        return;
    };
    // Nobody is on shift: the first caller presses 1 and hangs up; the callback's task waits.
    // The second only waits.
    set_on_shift(&w, "north", false).await;
    const SECOND: &str = "+13105550188";
    let call = |from: &str, digits: Option<&str>| PlaceCall {
        from: from.into(),
        to: MAIN.into(),
        digits: digits.map(Into::into),
        patience_secs: Some(600),
    };
    let sid = w.client.place_call(&call(CALLER, Some("1"))).await.unwrap();
    let summary = w.client.wait_for_call_end(&sid, Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary["queue_result"], "leave", "{summary}");
    let second = w.client.place_call(&call(SECOND, None)).await.unwrap();
    assert!(jiff::Timestamp::now().as_millisecond() < closes_ms, "the lead ({CLOSING_LEAD:?}) ran out");
    let mut created = Vec::new();
    for _ in 0..500 {
        created = w.rest("POST", "/Tasks").await;
        if !created.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(created.len(), 1, "{created:#?}");
    // Adopted once the create's answer is in.
    let mut first_task = None;
    for _ in 0..500 {
        first_task = w.store.call(&sid).await.unwrap().and_then(|c| c.task_sid);
        if first_task.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_task = first_task.expect("the callback's task");

    // Closing time: the task is canceled; the callback waits (not canceled). The second caller
    // hears that they will be called back, and leaves. Someone comes on shift during the
    // closure, which rings nobody.
    let until = |t: i64| Duration::from_millis((t - jiff::Timestamp::now().as_millisecond()).max(0) as u64);
    let ended = w.client.wait_for_call_end(&second, until(closes_ms) + Duration::from_secs(30)).await.unwrap();
    assert!(jiff::Timestamp::now().as_millisecond() >= closes_ms, "the second caller left before closing");
    let heard = ended["heard"].to_string();
    assert!(
        heard.contains("north clinic has closed for now. We will call you back at 3 1 0, 5 5 5, 0 1 8 8 when we open"),
        "{ended}"
    );
    for _ in 0..500 {
        if w.task(&first_task).await["assignment_status"] == "canceled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.task(&first_task).await["assignment_status"], "canceled");
    for c in [&sid, &second] {
        assert_eq!(w.store.call(c).await.unwrap().unwrap().outcome, Outcome::Pending, "{c} waits for the opening");
    }
    set_on_shift(&w, "north", true).await;
    tokio::time::sleep(until(opens_ms).saturating_sub(Duration::from_secs(2))).await;
    assert_eq!(w.rest("POST", "/Tasks").await.len(), 1, "no task while closed");
    assert!(w.rest("POST", "/Calls.json").await.is_empty(), "nobody rung while closed");

    // The opening: a second task for the first caller with the same place, and one for the
    // second caller; north presses 1 for each and calls them back.
    let record = w.settled(&sid).await;
    assert!(jiff::Timestamp::now().as_millisecond() >= opens_ms);
    assert_eq!(record.outcome, Outcome::CallbackConnected);
    assert_eq!(w.settled(&second).await.outcome, Outcome::CallbackConnected);
    let created = w.rest("POST", "/Tasks").await;
    assert_eq!(created.len(), 3, "{created:#?}");
    let place_of = |number: &str| -> Vec<String> {
        created
            .iter()
            .filter(|e| e.params.get("Attributes").is_some_and(|a| a.contains(number)))
            .filter_map(|e| e.params.get("VirtualStartTime").map(str::to_owned))
            .collect()
    };
    let first_places = place_of(CALLER);
    assert_eq!(first_places.len(), 2);
    assert_eq!(first_places[0], first_places[1], "the same place in line");
    // VirtualStartTime is in whole seconds; the attributes keep the milliseconds.
    let since_of = |number: &str| -> Vec<i64> {
        created
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e.params.get("Attributes")?).ok())
            .filter(|a| a["callback"]["number"] == number)
            .filter_map(|a| a["callback"]["sinceMs"].as_i64())
            .collect()
    };
    let (first, second_since) = (since_of(CALLER), since_of(SECOND));
    assert_eq!((first.len(), second_since.len()), (2, 1), "{created:#?}");
    assert_eq!(first[0], first[1], "the same place in line");
    assert!(place_of(SECOND)[0] >= first_places[0]);
    assert!(second_since[0] > first[0], "the second caller's place is after the first's");
    let dials = w.rest("POST", "/Calls.json").await;
    assert_eq!(dials.iter().map(|d| d.params.get("To").unwrap_or_default()).collect::<Vec<_>>(), [NORTH_PHONE; 2]);
    w.quiet().await;
    let second_task = record.task_sid.clone().expect("the second task");
    assert_ne!(second_task, first_task);
    assert_eq!(w.task(&second_task).await["assignment_status"], "completed");
    w.finish().await;
}

async fn a_caller_who_chooses_a_callback_hangs_up_and_is_called_back_when_the_location_accepts(backend: Backend) {
    // The receptionist presses 1 at the screening prompt.
    let receptionist = Behaviour::Person { rings: 1, talk_secs: 30, digits: Some("1".into()) };
    let Some(w) = world_scaled(backend, SLOWER, receptionist, "", |north| {
        north.screening = true;
        north.callback =
            Some(call_router::domain::CallbackSpec { offer_after_secs: 0, tries: 2, ..Default::default() });
    })
    .await
    else {
        return;
    };
    // Nobody is on shift: the caller waits, hears the offer and presses 1.
    let (sid, summary) = caller_chooses_a_callback(&w).await;
    let heard = summary["heard"].to_string();
    assert!(heard.contains("To hang up and keep your place in line, press 1."), "{summary}");
    assert!(heard.contains("We will call you back at 3 1 0, 5 5 5, 0 1 9 9"), "{summary}");
    let queue_task = task_sid_of_call(&w, &sid).await;

    // The callback's task keeps the caller's place: its VirtualStartTime is when they queued.
    let record = w.store.call(&sid).await.unwrap().expect("the caller's record");
    assert_eq!(record.outcome, Outcome::Pending, "the callback is still to come");
    let mut created = Vec::new();
    for _ in 0..500 {
        created = w.rest("POST", "/Tasks").await;
        if !created.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(created.len(), 1, "one callback task: {created:#?}");
    let vst: jiff::Timestamp = created[0].params.get("VirtualStartTime").unwrap().parse().unwrap();
    assert!(vst < jiff::Timestamp::now(), "{vst}");
    assert!(created[0].params.get("Attributes").unwrap().contains(r#""callback":{"number":"+13105550199""#));

    // Someone comes on shift: north is dialled, hears who waits since when, presses 1, and
    // its leg dials the caller, who answers.
    set_on_shift(&w, "north", true).await;
    let record = w.settled(&sid).await;
    assert_eq!(record.outcome, Outcome::CallbackConnected);
    w.quiet().await;
    let screens = w.webhooks("/dial-queue").await;
    assert_eq!(screens.len(), 1, "{screens:#?}");
    assert!(
        screens[0].response.contains("Callback for north clinic: 3 1 0, 5 5 5, 0 1 9 9, waiting since"),
        "{}",
        screens[0].response
    );
    let accepted = w.webhooks("/screen").await;
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert!(accepted[0].response.contains(&format!("<Number>{CALLER}</Number>")), "{}", accepted[0].response);
    let dialled = w.webhooks("/callback-dialed").await;
    assert_eq!(dialled.len(), 1, "{dialled:#?}");
    assert_eq!(dialled[0].params.get("DialCallStatus"), Some("completed"));
    // One leg to north; the queue's task canceled by TaskRouter, the callback's completed.
    let dials = w.rest("POST", "/Calls.json").await;
    assert_eq!(dials.iter().map(|d| d.params.get("To").unwrap_or_default()).collect::<Vec<_>>(), [NORTH_PHONE]);
    assert_eq!(w.task(&queue_task).await["assignment_status"], "canceled");
    let callback_task = record.task_sid.clone().expect("the callback's task");
    assert_ne!(callback_task, queue_task);
    assert_eq!(w.task(&callback_task).await["assignment_status"], "completed");
    w.finish().await;
}

/// The server's look-ups of a task by its attributes, from the sandbox's log.
async fn look_ups(w: &World) -> Vec<Exchange> {
    w.rest("GET", "/Tasks").await.into_iter().filter(|e| e.query.contains("EvaluateTaskAttributes")).collect()
}

/// The sandbox's tasks whose attributes name `call_sid` and callback `round`, sorted.
async fn callback_tasks_of(w: &World, call_sid: &str, round: u64) -> Vec<String> {
    let tasks = tasks_of_call(w, call_sid).await;
    tasks.into_iter().filter(|t| t.attributes["callback"]["round"] == round).map(|t| t.sid).collect()
}

/// A task of the sandbox's, its attributes parsed.
struct SandboxTask {
    sid: String,
    status: String,
    attributes: Value,
}

/// The sandbox's tasks whose attributes name `call_sid`, by SID.
async fn tasks_of_call(w: &World, call_sid: &str) -> Vec<SandboxTask> {
    let state = w.client.state().await.unwrap();
    let all: Vec<Value> = match &state["tasks"] {
        Value::Array(a) => a.clone(),
        Value::Object(m) => m.values().cloned().collect(),
        other => panic!("no tasks in the sandbox's state: {other}"),
    };
    let mut found: Vec<SandboxTask> = all
        .iter()
        .map(|t| SandboxTask {
            sid: t["sid"].as_str().unwrap().to_owned(),
            status: t["assignment_status"].as_str().unwrap_or_default().to_owned(),
            attributes: match &t["attributes"] {
                Value::String(text) => serde_json::from_str(text).unwrap_or_default(),
                other => other.clone(),
            },
        })
        .filter(|t| t.attributes["call_sid"] == call_sid)
        .collect();
    found.sort_by(|a, b| a.sid.cmp(&b.sid));
    found
}

async fn a_callback_task_whose_created_answer_was_lost_is_found_and_not_made_twice(backend: Backend) {
    lost_callback_create(backend, false).await
}

async fn a_callback_task_in_doubt_is_not_created_while_its_look_up_fails(backend: Backend) {
    lost_callback_create(backend, true).await
}

/// The callback's task is made but its create is answered 503; with `look_up_outage`, its
/// look-ups fail too until the server has tried them twice over.
async fn lost_callback_create(backend: Backend, look_up_outage: bool) {
    let receptionist = Behaviour::Person { rings: 1, talk_secs: 30, digits: Some("1".into()) };
    let Some(w) = world_scaled(backend, SLOWER, receptionist, "", |north| {
        north.screening = true;
        north.callback =
            Some(call_router::domain::CallbackSpec { offer_after_secs: 0, tries: 2, ..Default::default() });
    })
    .await
    else {
        return;
    };
    // TaskRouter makes the callback's task, then answers a 503: the server cannot tell it from a
    // failure. (The queue's own task is made by `<Enqueue>`, not by this POST.)
    let rule = sandbox::faults::Rule::from_json(serde_json::json!({
        "on": "rest", "method": "POST", "path": "/v1/Workspaces/*/Tasks",
        "fault": "status_after_acting", "status": 503, "limit": 1,
    }))
    .unwrap();
    w.client.add_faults(&[rule]).await.unwrap();
    if look_up_outage {
        let rule = sandbox::faults::Rule::from_json(serde_json::json!({
            "on": "rest", "method": "GET", "path": "/v1/Workspaces/*/Tasks", "fault": "status", "status": 500,
        }))
        .unwrap();
        w.client.add_faults(&[rule]).await.unwrap();
    }
    let (sid, _) = caller_chooses_a_callback(&w).await;
    let queue_task = task_sid_of_call(&w, &sid).await;
    if look_up_outage {
        // The REST client tries a look-up five times; more than that is the dispatcher's
        // second send, which looked up again rather than create blind.
        let mut failed = 0;
        for _ in 0..3000 {
            failed = look_ups(&w).await.iter().filter(|e| e.status == 500).count();
            if failed > 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(failed > 5, "the look-up was tried again: {failed}");
        assert_eq!(w.rest("POST", "/Tasks").await.len(), 1, "nothing created while the look-up fails");
        let record = w.store.call(&sid).await.unwrap().expect("the caller's record");
        assert!(record.task_sid.as_ref().is_none_or(|t| *t == queue_task), "nothing adopted yet: {record:?}");
        w.client.clear_faults().await.unwrap();
    }

    // The journey adopts the task the lost create made, once the dispatcher's retry finds it.
    let mut adopted = None;
    for _ in 0..1000 {
        let record = w.store.call(&sid).await.unwrap().expect("the caller's record");
        if let Some(t) = record.task_sid.filter(|t| *t != queue_task) {
            adopted = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let adopted = adopted.expect("the journey adopted a callback task");
    assert_eq!(callback_tasks_of(&w, &sid, 1).await, std::slice::from_ref(&adopted), "exactly one task for round 1");
    let creates = w.rest("POST", "/Tasks").await;
    assert_eq!(creates.iter().map(|c| c.status).collect::<Vec<_>>(), [503], "one create, answered 503: {creates:#?}");
    assert!(creates[0].params.get("Attributes").unwrap().contains(r#""round":1"#), "{:?}", creates[0].params);
    let lookups = look_ups(&w).await;
    let answered: Vec<_> = lookups.iter().filter(|e| e.status == 200).collect();
    assert_eq!(answered.len(), 1, "one look-up answered, which found the task: {lookups:#?}");
    let query = format!(r#"call_sid == "{sid}" AND callback.round == 1"#);
    assert!(lookups.iter().all(|e| e.params.get("EvaluateTaskAttributes") == Some(query.as_str())), "{lookups:#?}");

    // The adopted task is the callback: north takes it, presses 1 and the caller is called back.
    set_on_shift(&w, "north", true).await;
    let record = w.settled(&sid).await;
    assert_eq!(record.outcome, Outcome::CallbackConnected);
    w.quiet().await;
    assert_eq!(record.task_sid.as_deref(), Some(adopted.as_str()));
    assert_eq!(w.task(&adopted).await["assignment_status"], "completed");
    assert_eq!(callback_tasks_of(&w, &sid, 1).await, [adopted], "still one task for round 1");
    assert_eq!(w.rest("POST", "/Tasks").await.len(), 1, "no task was created after the lost one");
    w.finish().await;
}
