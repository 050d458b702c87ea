//! The reconciler's reads against the real sandbox over HTTP: the REST
//! client's typed lists and their paging, the task sweep, the lookup of a
//! dial in doubt and the inbound calls the server never saw; and a pass of
//! the reconciler with a real store.

use std::time::Duration;

use call_router::config::{AnsweredByPolicy, TwilioSettings};
use call_router::dispatch::Notifier;
use call_router::journey::{CallStatus, DialTarget, Event, Policy, ReservationStatus, TaskStatus};
use call_router::reconcile::{self, FindDial, Observed};
use call_router::store::Store;
use call_router::twilio_api::{Api, CallFilter, TimeBound, TwilioClient};
use jiff::Timestamp;
use sandbox::client::{PlaceCall, SandboxClient};
use serde_json::Value;
use tokio::net::TcpListener;
use twilio::sid::{CallSid, ReservationSid, TaskSid, WorkspaceSid};
use twilio::{E164, Params};

const MAIN: &str = "+12025550143";
const PHONE: &str = "+14155550123";
const OTHER_PHONE: &str = "+14155550124";

struct Env {
    _sandbox: sandbox::Sandbox,
    sb: SandboxClient,
    client: TwilioClient,
}

async fn env(time_scale: f64) -> Env {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = sandbox::start(sandbox::Config::random(time_scale, 7), listener).await.unwrap();
    let url = sandbox.url();
    let settings = TwilioSettings {
        account_sid: sandbox.account_sid().clone(),
        auth_token: sandbox.auth_token().to_owned().into(),
        api_base_url: url.clone(),
        taskrouter_base_url: url.clone(),
        workspace_sid: None,
        workflow_sid: None,
        request_timeout_ms: 5000,
        tls_roots: Default::default(),
    };
    let sb = SandboxClient::new(&url, sandbox.account_sid().as_str(), sandbox.auth_token());
    Env { client: TwilioClient::new(&settings).unwrap(), sb, _sandbox: sandbox }
}

impl Env {
    async fn now_ms(&self) -> u64 {
        self.sb.state().await.unwrap()["now_ms"].as_u64().unwrap()
    }

    /// Waits until the sandbox's virtual clock has moved `virtual_ms` on.
    async fn advance(&self, virtual_ms: u64) {
        let until = self.now_ms().await + virtual_ms;
        while self.now_ms().await < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Creates an outbound-api call from MAIN to `to` that holds for an hour.
    async fn call(&self, to: &str) -> Value {
        let mut p = Params::new();
        p.push("To", to).push("From", MAIN).push("Twiml", "<Response><Pause length=\"3600\"/></Response>");
        self.client.create(Api::Core, &self.client.account_path("Calls.json"), &p).await.unwrap()
    }

    fn to(&self, v: &Value) -> String {
        v["sid"].as_str().unwrap().to_owned()
    }
}

fn created_ms(v: &Value) -> i64 {
    jiff::fmt::rfc2822::parse(v["date_created"].as_str().unwrap()).unwrap().timestamp().as_millisecond()
}

fn sids(calls: &[call_router::twilio_api::CallRecordResource]) -> Vec<String> {
    calls.iter().map(|c| c.sid.to_string()).collect()
}

#[tokio::test]
async fn calls_page_by_their_links_keep_their_filters_and_stop_at_the_cap() {
    let e = env(1000.0).await;
    e.sb.buy_number(MAIN, None).await.unwrap();
    let mut ours = Vec::new();
    for i in 0..5 {
        ours.push(e.to(&e.call(PHONE).await));
        if i == 2 {
            e.call(OTHER_PHONE).await;
        }
    }
    ours.reverse(); // newest first, as Twilio lists them
    let today = TimeBound::day_of(Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(1)).unwrap());
    let filter = CallFilter {
        to: Some(PHONE.into()),
        start_time_from: Some(today),
        page_size: 2,
        max_pages: 10,
        ..CallFilter::default()
    };
    let all = e.client.list_calls(&filter).await.unwrap();
    assert_eq!((sids(&all.items), all.pages, all.complete), (ours.clone(), 3, true));
    let first = &all.items[0];
    assert_eq!((first.to.as_str(), first.from.as_str()), (PHONE, MAIN));
    assert_eq!(first.direction.as_deref(), Some("outbound-api"));
    assert!(first.date_created.is_some() && first.parent_call_sid.is_none());

    let capped = e.client.list_calls(&CallFilter { max_pages: 2, ..filter.clone() }).await.unwrap();
    assert_eq!((sids(&capped.items), capped.pages, capped.complete), (ours[..4].to_vec(), 2, false));

    // A day after today lists nothing: the bound is sent and honoured.
    let tomorrow = TimeBound::day_of(Timestamp::now().checked_add(jiff::SignedDuration::from_hours(48)).unwrap());
    let none = e.client.list_calls(&CallFilter { start_time_from: Some(tomorrow), ..filter.clone() }).await.unwrap();
    assert!(none.items.is_empty() && none.complete, "{:?}", none.items);

    let fetched = e.client.fetch_call(&CallSid::parse(&ours[0]).unwrap()).await.unwrap();
    let listed = &all.items[0];
    assert_eq!(
        (&fetched.sid, &fetched.to, &fetched.direction, fetched.date_created, fetched.start_time),
        (&listed.sid, &listed.to, &listed.direction, listed.date_created, listed.start_time)
    );
}

/// A workspace with one queue for every worker and a workflow whose
/// reservations last an hour; returns (workspace, workflow, Available).
async fn workspace(client: &TwilioClient) -> (WorkspaceSid, String, String) {
    let mut p = Params::new();
    p.push("FriendlyName", "reconcile");
    let ws = client.create_workspace(&p).await.unwrap().sid;
    let available = client.list_activities(&ws).await.unwrap().into_iter().find(|a| a.available).unwrap().sid;
    let mut p = Params::new();
    p.push("FriendlyName", "q");
    let queue = client.create_task_queue(&ws, &p).await.unwrap().sid;
    let cfg = format!(r#"{{"task_routing":{{"filters":[],"default_filter":{{"queue":"{queue}"}}}}}}"#);
    let mut p = Params::new();
    p.push("FriendlyName", "wf").push("Configuration", cfg).push("TaskReservationTimeout", "3600");
    let wf = client.create_workflow(&ws, &p).await.unwrap().sid;
    (WorkspaceSid::parse(&ws).unwrap(), wf, available)
}

async fn task(client: &TwilioClient, ws: &WorkspaceSid, wf: &str, attributes: &str) -> TaskSid {
    let mut p = Params::new();
    p.push("WorkflowSid", wf).push("Attributes", attributes);
    let v = client.create(Api::TaskRouter, &format!("/v1/Workspaces/{ws}/Tasks"), &p).await.unwrap();
    TaskSid::parse(v["sid"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_sweep_sees_a_pending_reservation_as_a_missed_reservation_created() {
    let e = env(10.0).await;
    let (ws, wf, available) = workspace(&e.client).await;
    let caller = "CA00000000000000000000000000000042";
    let attrs = format!(
        r#"{{"location":"north","practicePhone":"{PHONE}","callerID":"{MAIN}","caller":"+13105550199","call_sid":"{caller}"}}"#
    );
    // The first task takes the only worker; the others wait.
    let mut p = Params::new();
    p.push("FriendlyName", "north").push("ActivitySid", available.as_str());
    e.client.create_worker(ws.as_str(), &p).await.unwrap();
    let reserved = task(&e.client, &ws, &wf, &attrs).await;
    let foreign = task(&e.client, &ws, &wf, r#"{"type":"chat"}"#).await;
    let waiting = task(&e.client, &ws, &wf, &attrs.replace(caller, "CA00000000000000000000000000000043")).await;
    // A canceled task is not swept.
    let done = task(&e.client, &ws, &wf, &attrs.replace(caller, "CA00000000000000000000000000000044")).await;
    e.client.update_task_status(&ws, done.as_str(), "canceled", "test").await.unwrap();

    // One task a page: the sweep follows TaskRouter's meta.next_page_url.
    let (seen, skipped) = reconcile::sweep_tasks_paged(&e.client, &ws, 1, 10).await.unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, foreign);
    assert!(skipped[0].1.contains("attributes"), "{}", skipped[0].1);

    let reservations = e.client.list_task_reservations(&ws, &reserved).await.unwrap().items;
    assert_eq!(reservations.len(), 1);
    let reservation: ReservationSid = reservations[0].sid.clone();
    assert_eq!(reservations[0].reservation_status, "pending");
    let target = DialTarget {
        location: "north".into(),
        to: E164::parse(PHONE).unwrap(),
        phones: Vec::new(),
        ring: Default::default(),
        from: E164::parse(MAIN).unwrap(),
        call_token: None,
        screening: None,
        amd: true,
        caller: Some("+13105550199".into()),
        caller_name: None,
        callback: None,
        transferred: false,
    };
    let expected = [
        Observed {
            keys: vec![caller.into(), reserved.to_string(), reservation.to_string()],
            event: Event::ReservationCreated {
                task: reserved.clone(),
                reservation: reservation.clone(),
                caller: Some(CallSid::parse(caller).unwrap()),
                target,
            },
            create: true,
        },
        Observed {
            keys: vec![caller.into(), reserved.to_string()],
            event: Event::TaskSeen { task: reserved.clone(), status: TaskStatus::Reserved },
            create: false,
        },
        Observed {
            keys: vec!["CA00000000000000000000000000000043".into(), waiting.to_string()],
            event: Event::TaskSeen { task: waiting.clone(), status: TaskStatus::Pending },
            create: false,
        },
    ];
    assert_eq!(seen, expected);

    // The cap bounds the sweep: one page sees the first task only.
    let (seen, skipped) = reconcile::sweep_tasks_paged(&e.client, &ws, 1, 1).await.unwrap();
    assert_eq!((seen.len(), skipped.len()), (2, 0), "{seen:#?}");

    // Once the reservation is rejected the sweep says so, and the task is offered again.
    let mut p = Params::new();
    p.push("ReservationStatus", "rejected");
    let path = format!("/v1/Workspaces/{ws}/Tasks/{reserved}/Reservations/{reservation}");
    e.client.update(Api::TaskRouter, &path, &p).await.unwrap();
    let observed = reconcile::observe_one_task(&e.client, &ws, &reserved).await.unwrap().unwrap();
    assert!(
        observed.iter().any(|o| o.event
            == Event::ReservationSeen {
                task: reserved.clone(),
                reservation: reservation.clone(),
                status: ReservationStatus::Rejected
            }),
        "{observed:#?}"
    );
}

#[tokio::test]
async fn find_dial_attributes_the_call_made_in_its_window_to_its_phone() {
    let e = env(1000.0).await;
    e.sb.buy_number(MAIN, None).await.unwrap();
    let before = e.call(PHONE).await;
    e.advance(30_000).await;
    let placed = e.call(PHONE).await;
    let elsewhere = e.call(OTHER_PHONE).await;
    let find = FindDial {
        reservation: ReservationSid::parse("WR00000000000000000000000000000001").unwrap(),
        attempt: 1,
        to: E164::parse(PHONE).unwrap(),
        // The dial was owed in the second Twilio stamped on it.
        placed_after_ms: created_ms(&placed) + 500,
    };
    assert!(created_ms(&elsewhere) >= find.window_start_ms());
    assert!(created_ms(&before) < find.window_start_ms());

    let found = reconcile::find_dial(&e.client, &find, |_| false).await.unwrap();
    let Some(Event::LegSeen { reservation, attempt, leg, status }) = found else { panic!("{found:?}") };
    assert_eq!((reservation, attempt, leg.to_string()), (find.reservation.clone(), Some(1), e.to(&placed)));
    // Whatever the call's progress by now, it is one of Twilio's statuses.
    assert_ne!(status, CallStatus::Canceled, "an unanswered Pause is never canceled");

    // Known elsewhere, it is not taken again; the older call to the phone and
    // the call to another phone do not stand in for it.
    let placed_sid = e.to(&placed);
    let found = reconcile::find_dial(&e.client, &find, |s| s == placed_sid).await.unwrap();
    assert_eq!(found, Some(Event::DialAbsent { reservation: find.reservation.clone(), attempt: 1 }));

    // Before the window opened for the older call, it would have been the one.
    let earlier = FindDial { placed_after_ms: created_ms(&before), ..find.clone() };
    let found = reconcile::find_dial(&e.client, &earlier, |_| false).await.unwrap();
    let Some(Event::LegSeen { leg, .. }) = found else { panic!("{found:?}") };
    assert_eq!(leg.to_string(), e.to(&before));
}

#[tokio::test]
async fn inbound_calls_the_server_never_saw_are_listed_once_ended() {
    let e = env(1000.0).await;
    // A voice URL nobody answers: the server was down.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}/incoming-call", gone.local_addr().unwrap());
    drop(gone);
    e.sb.buy_number(MAIN, Some(&down)).await.unwrap();
    let since = Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(60)).unwrap();
    let caller = e
        .sb
        .place_call(&PlaceCall { from: "+13105550199".into(), to: MAIN.into(), digits: None, patience_secs: Some(60) })
        .await
        .unwrap();
    let summary = e.sb.wait_for_call_end(&caller, Duration::from_secs(30)).await.unwrap();
    assert_eq!(summary["final"], true, "{summary}");
    e.call(PHONE).await; // outbound: not a caller

    let numbers = [E164::parse(MAIN).unwrap()];
    let listed = reconcile::inbound_calls(&e.client, &numbers, since, 2).await.unwrap();
    assert!(listed.complete);
    assert_eq!(sids(&listed.items), vec![caller.clone()]);
    let unseen = reconcile::unseen_inbound(&listed.items, &numbers, |_| false);
    assert_eq!(unseen.len(), 1);
    assert_eq!((unseen[0].call.to_string(), unseen[0].from.as_str()), (caller.clone(), "+13105550199"));
    assert!(unseen[0].status.is_final());
    assert!(reconcile::unseen_inbound(&listed.items, &numbers, |s| s == caller).is_empty());
}

#[tokio::test]
async fn find_dial_finds_a_call_still_in_the_accounts_queue() {
    let e = env(100.0).await;
    e.sb.buy_number(MAIN, None).await.unwrap();
    // One call each 10 000 virtual s: the first is dialled, the next waits.
    e.sb.set_calls_per_second(Some(0.0001)).await.unwrap();
    e.call(OTHER_PHONE).await;
    let queued = e.call(PHONE).await;
    let find = FindDial {
        reservation: ReservationSid::parse("WR00000000000000000000000000000002").unwrap(),
        attempt: 1,
        to: E164::parse(PHONE).unwrap(),
        placed_after_ms: created_ms(&queued),
    };
    // Not started, so a StartTime list alone misses it.
    let since = CallFilter {
        to: Some(PHONE.into()),
        start_time_from: Some(TimeBound::day_of(Timestamp::now())),
        ..CallFilter::default()
    };
    assert!(e.client.list_calls(&since).await.unwrap().items.is_empty());

    let found = reconcile::find_dial(&e.client, &find, |_| false).await.unwrap();
    let expected = Event::LegSeen {
        reservation: find.reservation.clone(),
        attempt: Some(1),
        leg: CallSid::parse(&e.to(&queued)).unwrap(),
        status: CallStatus::Queued,
    };
    assert_eq!(found, Some(expected));
}

/// The reconciler's pass, with a real store: a `reservation.created` the server
/// missed (it was down) is acted on, and a second pass repairs nothing more.
#[tokio::test]
async fn a_pass_acts_on_a_missed_reservation_once() {
    let e = env(10.0).await;
    let (ws, wf, available) = workspace(&e.client).await;
    let caller = "CA00000000000000000000000000000052";
    let attrs = format!(
        r#"{{"location":"north","practicePhone":"{PHONE}","callerID":"{MAIN}","caller":"+13105550199","call_sid":"{caller}"}}"#
    );
    let mut p = Params::new();
    p.push("FriendlyName", "north").push("ActivitySid", available.as_str());
    e.client.create_worker(ws.as_str(), &p).await.unwrap();
    let reserved = task(&e.client, &ws, &wf, &attrs).await;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("r.db").display())).await.unwrap();
    let policy = Policy {
        max_queue_secs: 300,
        on_machine: AnsweredByPolicy::Hangup,
        on_unknown: AnsweredByPolicy::Bridge,
        max_dial_attempts: 3,
    };
    let mut reconciler = reconcile::Reconciler::new(
        store.clone(),
        e.client.clone(),
        Some(ws.clone()),
        Notifier::default(),
        policy,
        Duration::from_secs(60),
    );
    let first = reconciler.pass().await.unwrap();
    assert_eq!(first.repairs, 1, "{first:?}");
    let actions = store.actions().await.unwrap();
    let dials: Vec<_> = actions.iter().filter(|(k, _, _)| k.starts_with("dial:")).collect();
    assert_eq!(dials.len(), 1, "{actions:?}");
    let call = store.call(caller).await.unwrap().expect("the caller's journey has its calls row");
    assert_eq!(call.task_sid.as_deref(), Some(reserved.as_str()));

    let second = reconciler.pass().await.unwrap();
    assert_eq!(second.repairs, 0, "the same observations owe nothing new: {second:?}");
    assert_eq!(store.actions().await.unwrap().len(), actions.len());
}
