//! `call-router provision` against the sandbox over HTTP: a fresh SQLite
//! database per test, both base URLs pointing at the sandbox, the Twilio
//! numbers bought in the sandbox first.

use call_router::config::Settings;
use call_router::provision::{self, Options, ProvisionError, Report};
use call_router::store::Store;
use serde_json::Value;
use twilio::Params;
use twilio::sid::AccountSid;

const ACCOUNT: &str = "AC00000000000000000000000000000a11";
const TOKEN: &str = "sandbox-test-token";
/// Nothing listens here: the sandbox's event deliveries fail, harmlessly.
const PUBLIC_URL: &str = "http://127.0.0.1:9";
const NORTH_NUMBER: &str = "+12025550143";
const SOUTH_NUMBER: &str = "+12025550144";

/// A location as a `[[locations]]` table.
struct Loc {
    name: &'static str,
    number: &'static str,
    phone: &'static str,
    lines: u32,
    digit: Option<&'static str>,
    time_zone: &'static str,
}

const NORTH: Loc = Loc {
    name: "north",
    number: NORTH_NUMBER,
    phone: "+14155550123",
    lines: 1,
    digit: None,
    time_zone: "America/New_York",
};
const SOUTH: Loc = Loc {
    name: "south",
    number: SOUTH_NUMBER,
    phone: "+14155550124",
    lines: 2,
    digit: None,
    time_zone: "America/Chicago",
};

impl Loc {
    fn toml(&self) -> String {
        let digit = self.digit.map(|d| format!("digit = \"{d}\"\n")).unwrap_or_default();
        format!(
            "[[locations]]\nname = \"{}\"\n{digit}numbers = [\"{}\"]\nphone = \"{}\"\nlines = {}\n\
             [locations.hours]\ntime_zone = \"{}\"\n[locations.hours.weekly]\nmon = [\"08:00-17:00\"]\n\n",
            self.name, self.number, self.phone, self.lines, self.time_zone
        )
    }
}

struct Harness {
    sandbox: sandbox::Sandbox,
    http: reqwest::Client,
    db: String,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let config = sandbox::Config {
            account_sid: AccountSid::parse(ACCOUNT).unwrap(),
            auth_token: TOKEN.into(),
            time_scale: 1.0,
            seed: 7,
            min_webhook_timeout_ms: sandbox::MIN_WEBHOOK_TIMEOUT_MS,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox = sandbox::start(config, listener).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("provision.db").display());
        let store = Store::connect(&db).await.unwrap();
        Harness { sandbox, http: reqwest::Client::new(), db, store, _dir: dir }
    }

    /// Starts a sandbox that owns both test numbers.
    async fn with_numbers() -> Harness {
        let h = Harness::start().await;
        for n in [NORTH_NUMBER, SOUTH_NUMBER] {
            let mut p = Params::new();
            p.push("PhoneNumber", n);
            h.post(&format!("/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"), &p).await;
        }
        h
    }

    fn toml(&self, locations: &[&Loc]) -> String {
        let url = self.sandbox.url();
        let mut text = format!(
            "public_url = \"{PUBLIC_URL}\"\ndatabase_url = \"{}\"\n[twilio]\naccount_sid = \"{ACCOUNT}\"\n\
             auth_token = \"{TOKEN}\"\napi_base_url = \"{url}\"\ntaskrouter_base_url = \"{url}\"\n\
             request_timeout_ms = 5000\n\n",
            self.db
        );
        for l in locations {
            text.push_str(&l.toml());
        }
        text
    }

    fn settings(&self, locations: &[&Loc]) -> Settings {
        Settings::from_toml(&self.toml(locations), |_| None).unwrap()
    }

    async fn provision(&self, locations: &[&Loc], options: Options) -> (Result<(), ProvisionError>, Report) {
        let mut report = Report::default();
        let result = provision::run(&self.settings(locations), &self.store, options, &mut report).await;
        (result, report)
    }

    async fn provision_ok(&self, locations: &[&Loc], options: Options) -> Report {
        let (result, report) = self.provision(locations, options).await;
        if let Err(e) = result {
            panic!("provision failed: {e}\n{}", report.text());
        }
        report
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.sandbox.url()))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn post(&self, path: &str, params: &Params) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.sandbox.url()))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(params.encode())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn delete(&self, path: &str) {
        let resp = self
            .http
            .delete(format!("{}{path}", self.sandbox.url()))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "DELETE {path}: {}", resp.status());
    }

    /// The requests the sandbox received from `since` on, and the next `since`.
    async fn requests_since(&self, since: u64) -> (Vec<(String, String)>, u64) {
        let log = self.get(&format!("/sandbox/log?since={since}&limit=10000")).await;
        let entries = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["direction"] == "in")
            .map(|e| (e["method"].as_str().unwrap().to_owned(), e["url"].as_str().unwrap().to_owned()))
            .collect();
        (entries, log["next"].as_u64().unwrap())
    }

    async fn log_position(&self) -> u64 {
        self.requests_since(0).await.1
    }

    async fn sid(&self, kind: &str, key: &str) -> String {
        self.store.resource(kind, key).await.unwrap().unwrap_or_else(|| panic!("no {kind} {key} in the database"))
    }

    async fn ws_path(&self, rest: &str) -> String {
        format!("/v1/Workspaces/{}/{rest}", self.sid("workspace", "main").await)
    }

    async fn list(&self, rest: &str, key: &str) -> Vec<Value> {
        let path = self.ws_path(rest).await;
        self.get(&path).await[key].as_array().unwrap().clone()
    }

    async fn worker(&self, location: &str) -> Value {
        let sid = self.sid("worker", location).await;
        self.get(&self.ws_path(&format!("Workers/{sid}")).await).await
    }

    async fn number(&self, number: &str) -> Value {
        let sid = self.sid("number", number).await;
        self.get(&format!("/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{sid}.json")).await
    }
}

fn writes(requests: &[(String, String)]) -> Vec<&(String, String)> {
    requests.iter().filter(|(m, _)| m != "GET").collect()
}

fn has_line(report: &Report, line: &str) -> bool {
    report.lines.iter().any(|l| l == line || l.starts_with(&format!("{line} (")))
}

#[tokio::test]
async fn a_fresh_provision_creates_everything() {
    let h = Harness::with_numbers().await;
    let report = h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;
    let text = report.text();
    for line in [
        "+ create workspace call-router",
        "+ create queue north",
        "+ create queue south",
        "+ create worker north",
        "+ create worker south",
        "+ create workflow call-router/by-location",
        "~ update number +12025550143: voice_url (none) -> http://127.0.0.1:9/incoming-call#rc=3&rp=ct,5xx, status_callback (none) -> http://127.0.0.1:9/status-callback#rc=3&rp=ct,5xx",
    ] {
        assert!(has_line(&report, line), "missing {line:?} in\n{text}");
    }

    // The workspace: callback URL, exactly the handled events, timeout activity.
    let ws = h.get(h.ws_path("").await.trim_end_matches('/')).await;
    assert_eq!(ws["friendly_name"], "call-router");
    assert_eq!(ws["event_callback_url"], "http://127.0.0.1:9/tr-event-handler#rc=3&rp=ct,5xx");
    let mut events: Vec<&str> = ws["events_filter"].as_str().unwrap().split(',').collect();
    events.sort_unstable();
    let mut want = provision::EVENTS.to_vec();
    want.sort_unstable();
    assert_eq!(events, want);
    assert_eq!(ws["timeout_activity_name"], "Available");
    assert_eq!(ws["multi_task_enabled"], true);

    // Workers: Available, attributes with the marker, voice capacity = lines.
    for (loc, phone, lines) in [("north", NORTH.phone, 1), ("south", SOUTH.phone, 2)] {
        let w = h.worker(loc).await;
        assert_eq!(w["activity_name"], "Available", "{w}");
        assert_eq!(w["friendly_name"], format!("call-router/{loc}"));
        let attrs: Value = serde_json::from_str(w["attributes"].as_str().unwrap()).unwrap();
        assert_eq!(attrs["location"], loc);
        assert_eq!(attrs["phone"], phone);
        assert_eq!(attrs["managed_by"], "call-router");
        let channels = h.list(&format!("Workers/{}/Channels", w["sid"].as_str().unwrap()), "channels").await;
        let voice = channels.iter().find(|c| c["task_channel_unique_name"] == "voice").unwrap();
        assert_eq!(voice["configured_capacity"], lines, "{voice}");
        assert_eq!(voice["available"], true);
    }

    // Queues target their location's worker.
    for loc in ["north", "south"] {
        let sid = h.sid("queue", loc).await;
        let q = h.get(&h.ws_path(&format!("TaskQueues/{sid}")).await).await;
        assert_eq!(q["target_workers"], format!("location == \"{loc}\""));
    }

    // The workflow routes on the task's location to that location's queue.
    let wf_sid = h.sid("workflow", "main").await;
    let wf = h.get(&h.ws_path(&format!("Workflows/{wf_sid}")).await).await;
    assert_eq!(wf["task_reservation_timeout"], 20 + 30 + provision::RESERVATION_MARGIN_SECS);
    let config: Value = serde_json::from_str(wf["configuration"].as_str().unwrap()).unwrap();
    let filters = config["task_routing"]["filters"].as_array().unwrap();
    assert_eq!(filters.len(), 2);
    for (f, loc) in filters.iter().zip(["north", "south"]) {
        assert_eq!(f["expression"], format!("location == \"{loc}\""));
        assert_eq!(f["targets"][0]["queue"], h.sid("queue", loc).await);
    }

    // Numbers point at the server, with connection overrides so Twilio retries through a restart.
    for n in [NORTH_NUMBER, SOUTH_NUMBER] {
        let num = h.number(n).await;
        assert_eq!(num["voice_url"], "http://127.0.0.1:9/incoming-call#rc=3&rp=ct,5xx");
        assert_eq!(num["voice_method"], "POST");
        assert_eq!(num["status_callback"], "http://127.0.0.1:9/status-callback#rc=3&rp=ct,5xx");
        assert_eq!(num["voice_fallback_url"], serde_json::Value::Null, "none configured");
    }

    // Where the server reads them, and the activities.
    for (kind, key) in [("activity", "available"), ("activity", "offline"), ("activity", "unavailable")] {
        h.sid(kind, key).await;
    }
    assert_eq!(h.store.locations().await.unwrap().len(), 2, "config locations are imported");
}

#[tokio::test]
async fn a_second_run_changes_nothing() {
    let h = Harness::with_numbers().await;
    h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;
    let before = h.store.resources().await.unwrap();
    let since = h.log_position().await;

    let report = h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;
    let (requests, _) = h.requests_since(since).await;
    assert!(writes(&requests).is_empty(), "second run wrote: {:#?}", writes(&requests));
    assert!(!requests.is_empty());
    assert!(report.lines.iter().any(|l| l.starts_with("nothing to change")), "{}", report.text());
    assert!(has_line(&report, "= worker north unchanged"), "{}", report.text());
    assert_eq!(h.store.resources().await.unwrap(), before);
}

#[tokio::test]
async fn a_voice_fallback_url_and_other_overrides_are_set_and_kept() {
    let h = Harness::with_numbers().await;
    h.provision_ok(&[&NORTH], Options::default()).await;
    // The operator adds a fallback and picks other overrides: provision repairs every number.
    let text = format!(
        "{}[provision]\nvoice_fallback_url = \"https://backup.example.com/incoming-call\"\nconnection_overrides = \"rc=2&rp=ct\"\n",
        h.toml(&[&NORTH])
    );
    let settings = Settings::from_toml(&text, |_| None).unwrap();
    let mut report = Report::default();
    provision::run(&settings, &h.store, Options::default(), &mut report).await.unwrap();
    let num = h.number(NORTH_NUMBER).await;
    assert_eq!(num["voice_fallback_url"], "https://backup.example.com/incoming-call", "{}", report.text());
    assert_eq!(num["voice_fallback_method"], "POST");
    assert_eq!(num["voice_url"], "http://127.0.0.1:9/incoming-call#rc=2&rp=ct");
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("voice_fallback_url (none) -> https://backup.example.com/incoming-call")),
        "{}",
        report.text()
    );
    // Run again: nothing to change.
    let mut again = Report::default();
    provision::run(&settings, &h.store, Options::default(), &mut again).await.unwrap();
    assert!(!again.lines.iter().any(|l| l.starts_with('~') || l.starts_with('+')), "{}", again.text());
}

#[tokio::test]
async fn drift_is_shown_and_repaired() {
    let h = Harness::with_numbers().await;
    h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;

    // By hand: north's worker Offline, a number's VoiceUrl changed, south's queue deleted.
    let offline = h.sid("activity", "offline").await;
    let north = h.sid("worker", "north").await;
    let mut p = Params::new();
    p.push("ActivitySid", &offline);
    h.post(&h.ws_path(&format!("Workers/{north}")).await, &p).await;
    let number = h.sid("number", NORTH_NUMBER).await;
    let mut p = Params::new();
    p.push("VoiceUrl", "https://old.example.com/voice");
    h.post(&format!("/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{number}.json"), &p).await;
    let old_south_queue = h.sid("queue", "south").await;
    h.delete(&h.ws_path(&format!("TaskQueues/{old_south_queue}")).await).await;
    assert_eq!(h.worker("north").await["activity_name"], "Offline");

    let report = h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;
    let text = report.text();
    for line in [
        "~ update worker north: activity Offline -> Available",
        "~ update number +12025550143: voice_url https://old.example.com/voice -> http://127.0.0.1:9/incoming-call#rc=3&rp=ct,5xx",
        "+ create queue south",
    ] {
        assert!(has_line(&report, line), "missing {line:?} in\n{text}");
    }
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("~ update workflow call-router/by-location: route [location == \"south\"]")),
        "{text}"
    );

    assert_eq!(h.worker("north").await["activity_name"], "Available");
    assert_eq!(h.number(NORTH_NUMBER).await["voice_url"], "http://127.0.0.1:9/incoming-call#rc=3&rp=ct,5xx");
    let new_south_queue = h.sid("queue", "south").await;
    assert_ne!(new_south_queue, old_south_queue);
    let wf = h.get(&h.ws_path(&format!("Workflows/{}", h.sid("workflow", "main").await)).await).await;
    assert!(wf["configuration"].as_str().unwrap().contains(&new_south_queue), "{wf}");

    // And then it is in sync again.
    let again = h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;
    assert!(again.lines.iter().any(|l| l.starts_with("nothing to change")), "{}", again.text());
}

#[tokio::test]
async fn prune_removes_a_dropped_location_and_leaves_unmarked_workers_alone() {
    let h = Harness::with_numbers().await;
    h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;
    let south_worker = h.sid("worker", "south").await;
    let south_queue = h.sid("queue", "south").await;

    // A worker someone made by hand, with no marker.
    let mut p = Params::new();
    p.push("FriendlyName", "front-desk").push("Attributes", r#"{"location":"south"}"#);
    h.post(&h.ws_path("Workers").await, &p).await;

    // Out of the config file but still in the database, south stays: the
    // database is what the server routes with.
    let since = h.log_position().await;
    let report = h.provision_ok(&[&NORTH], Options { prune: true, ..Options::default() }).await;
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("note: location south is in the database but not in the config file")),
        "{}",
        report.text()
    );
    assert!(report.lines.iter().any(|l| l.starts_with("nothing to change")), "{}", report.text());
    assert!(writes(&h.requests_since(since).await.0).is_empty());

    // South leaves the database too.
    assert!(h.store.remove_location("south").await.unwrap());

    // Without --prune it is only reported.
    let since = h.log_position().await;
    let report = h.provision_ok(&[&NORTH], Options::default()).await;
    assert!(
        has_line(&report, "? worker south: its location is gone; run with --prune to delete it"),
        "{}",
        report.text()
    );
    let (requests, _) = h.requests_since(since).await;
    assert!(!writes(&requests).iter().any(|(m, _)| m == "DELETE"), "{requests:#?}");

    let report = h.provision_ok(&[&NORTH], Options { prune: true, ..Options::default() }).await;
    let text = report.text();
    for line in [
        "- delete worker south (pruned)",
        "- delete queue south (pruned)",
        "  keep worker front-desk: not created by call-router",
    ] {
        assert!(has_line(&report, line), "missing {line:?} in\n{text}");
    }
    let workers = h.list("Workers", "workers").await;
    let names: Vec<&str> = workers.iter().map(|w| w["friendly_name"].as_str().unwrap()).collect();
    assert!(names.contains(&"front-desk"), "{names:?}");
    assert!(!workers.iter().any(|w| w["sid"] == south_worker.as_str()));
    let queues = h.list("TaskQueues", "task_queues").await;
    assert!(!queues.iter().any(|q| q["sid"] == south_queue.as_str()));
    assert_eq!(h.store.resource("worker", "south").await.unwrap(), None);
    assert_eq!(h.store.resource("queue", "south").await.unwrap(), None);
    // The workflow no longer routes to the deleted queue.
    let wf = h.get(&h.ws_path(&format!("Workflows/{}", h.sid("workflow", "main").await)).await).await;
    assert!(!wf["configuration"].as_str().unwrap().contains(&south_queue));
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let h = Harness::with_numbers().await;
    let since = h.log_position().await;
    let report = h.provision_ok(&[&NORTH, &SOUTH], Options { dry_run: true, ..Options::default() }).await;
    let text = report.text();
    assert!(has_line(&report, "+ create workspace call-router"), "{text}");
    assert!(has_line(&report, "+ create worker south"), "{text}");
    assert!(report.lines.iter().any(|l| l.starts_with("summary: would create")), "{text}");
    let (requests, _) = h.requests_since(since).await;
    assert!(!requests.is_empty());
    assert!(writes(&requests).is_empty(), "dry run wrote: {requests:#?}");
    assert!(h.store.resources().await.unwrap().is_empty());
    assert!(h.store.location_specs().await.unwrap().is_empty(), "dry run imported locations");

    // After a real run and some drift, a dry run shows the repair and still only reads.
    h.provision_ok(&[&NORTH, &SOUTH], Options::default()).await;
    let north = h.sid("worker", "north").await;
    let mut p = Params::new();
    p.push("ActivitySid", h.sid("activity", "offline").await);
    h.post(&h.ws_path(&format!("Workers/{north}")).await, &p).await;
    let stored = h.store.resources().await.unwrap();
    let since = h.log_position().await;
    let report = h.provision_ok(&[&NORTH, &SOUTH], Options { dry_run: true, ..Options::default() }).await;
    assert!(has_line(&report, "~ update worker north: activity Offline -> Available"), "{}", report.text());
    let (requests, _) = h.requests_since(since).await;
    assert!(writes(&requests).is_empty(), "dry run wrote: {requests:#?}");
    assert_eq!(h.worker("north").await["activity_name"], "Offline");
    assert_eq!(h.store.resources().await.unwrap(), stored);
}

impl Harness {
    /// Each of the location's workers in the sandbox, by key: its voice capacity and
    /// whether its channel is available.
    async fn capacities(&self, location: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for w in self.list("Workers", "workers").await {
            let attrs: Value = serde_json::from_str(w["attributes"].as_str().unwrap()).unwrap();
            if attrs["location"] != location {
                continue;
            }
            let channels = self.list(&format!("Workers/{}/Channels", w["sid"].as_str().unwrap()), "channels").await;
            let voice = channels.iter().find(|c| c["task_channel_unique_name"] == "voice").unwrap();
            assert_eq!(voice["available"], true, "{w}");
            out.push((w["friendly_name"].as_str().unwrap().to_owned(), voice["configured_capacity"].as_u64().unwrap()));
        }
        out.sort();
        out
    }
}

/// More lines than TaskRouter's 50 a worker: several workers, kept in step with `lines`.
#[tokio::test]
async fn lines_beyond_one_workers_capacity_are_served_by_several_workers() {
    let h = Harness::with_numbers().await;
    let big = Loc { lines: 120, ..NORTH };
    let report = h.provision_ok(&[&big], Options { dry_run: true, ..Options::default() }).await;
    for line in ["+ create worker north (capacity 40)", "+ create worker north/3 (capacity 40)"] {
        assert!(has_line(&report, line), "dry run lacks {line:?}:\n{}", report.text());
    }
    h.provision_ok(&[&big], Options::default()).await;
    let three = |c: u64| {
        vec![("call-router/north".into(), c), ("call-router/north/2".into(), c), ("call-router/north/3".into(), c)]
    };
    assert_eq!(h.capacities("north").await, three(40));
    let q = h.get(&h.ws_path(&format!("TaskQueues/{}", h.sid("queue", "north").await)).await).await;
    assert_eq!(
        (q["target_workers"].as_str(), q["max_reserved_workers"].as_u64()),
        (Some("location == \"north\""), Some(1))
    );

    // Again: nothing to write.
    let since = h.log_position().await;
    let report = h.provision_ok(&[&big], Options::default()).await;
    let (requests, _) = h.requests_since(since).await;
    assert!(writes(&requests).is_empty(), "second run wrote: {:#?}", writes(&requests));
    assert!(has_line(&report, "= worker north/3 unchanged"), "{}", report.text());

    // Up to 150: three of 50. Down to 60: two of 30, the third deleted and forgotten.
    h.provision_ok(&[&Loc { lines: 150, ..NORTH }], Options::default()).await;
    assert_eq!(h.capacities("north").await, three(50));
    let third = h.sid("worker", "north/3").await;
    let report = h.provision_ok(&[&Loc { lines: 60, ..NORTH }], Options::default()).await;
    assert!(
        has_line(&report, "- delete worker north/3 (its location's lines need fewer workers)"),
        "{}",
        report.text()
    );
    assert_eq!(
        h.capacities("north").await,
        [("call-router/north".to_owned(), 30), ("call-router/north/2".to_owned(), 30)]
    );
    assert!(h.store.resource("worker", "north/3").await.unwrap().is_none());
    assert!(!h.list("Workers", "workers").await.iter().any(|w| w["sid"] == third.as_str()));
    let report = h.provision_ok(&[&Loc { lines: 60, ..NORTH }], Options::default()).await;
    assert!(report.lines.iter().any(|l| l.starts_with("nothing to change")), "{}", report.text());
}

#[tokio::test]
async fn an_invalid_config_is_refused_before_any_request() {
    let h = Harness::with_numbers().await;
    let since = h.log_position().await;

    // The file's own checks name the field.
    let bad_phone = Loc { phone: "+1555", ..NORTH };
    let bad_zone = Loc { time_zone: "Mars/Olympus_Mons", ..NORTH };
    for (text, field) in [
        (h.toml(&[&bad_phone]), "phone"),
        (h.toml(&[&bad_zone]), "hours"),
        (h.toml(&[&NORTH]).replace(&format!("public_url = \"{PUBLIC_URL}\"\n"), ""), "public_url"),
        (
            h.toml(&[&Loc { digit: Some("1"), ..NORTH }, &Loc { number: NORTH_NUMBER, digit: Some("1"), ..SOUTH }]),
            "digit",
        ),
    ] {
        let err = Settings::from_toml(&text, |_| None).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }

    // A location already in the database clashes with the file's: same number, same digit.
    let east = Loc { name: "east", digit: Some("1"), number: SOUTH_NUMBER, ..NORTH };
    let settings = Settings::from_toml(&h.toml(&[&east]), |_| None).unwrap();
    call_router::cli::import(&h.store, &settings.locations).await.unwrap();
    let west = Loc { name: "west", digit: Some("1"), number: SOUTH_NUMBER, ..SOUTH };
    let (result, _) = h.provision(&[&west], Options::default()).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ProvisionError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("digit 1"), "{err}");

    // A stored location that no longer passes the checks (written by an older version).
    sqlx::query("UPDATE locations SET spec_json = replace(spec_json, 'America/New_York', 'Mars/Olympus_Mons')")
        .execute(h.store.pool())
        .await
        .unwrap();
    let (result, _) = h.provision(&[&NORTH], Options::default()).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("\"east\" (database)") && err.contains("hours"), "{err}");

    let (requests, _) = h.requests_since(since).await;
    assert!(requests.is_empty(), "requests were sent: {requests:#?}");
}

#[tokio::test]
async fn an_unowned_number_fails_alone_and_the_rest_is_provisioned() {
    let h = Harness::start().await;
    // Only north's number is bought.
    let mut p = Params::new();
    p.push("PhoneNumber", NORTH_NUMBER);
    h.post(&format!("/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"), &p).await;

    let (result, report) = h.provision(&[&NORTH, &SOUTH], Options::default()).await;
    let text = report.text();
    assert!(matches!(result, Err(ProvisionError::Failed { failed: 1 })), "{result:?}\n{text}");
    assert!(
        has_line(
            &report,
            "! number +12025550144: not a number of this account (buy it, or fix the location's numbers)"
        ),
        "{text}"
    );
    assert!(report.lines.iter().any(|l| l.starts_with("summary:") && l.ends_with("1 failed")), "{text}");
    assert_eq!(h.worker("south").await["activity_name"], "Available");
    assert_eq!(h.number(NORTH_NUMBER).await["voice_url"], "http://127.0.0.1:9/incoming-call#rc=3&rp=ct,5xx");
}

#[tokio::test]
async fn the_binary_prints_the_plan_and_exits_non_zero_on_a_bad_config() {
    let h = Harness::with_numbers().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, h.toml(&[&NORTH])).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, h.toml(&[&Loc { phone: "+1555", ..NORTH }])).unwrap();
    let run = |path: &std::path::Path, extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_call-router"));
        cmd.arg("provision").arg("--config").arg(path).args(extra);
        for var in [
            "CALL_ROUTER_CONFIG",
            "CALL_ROUTER_PUBLIC_URL",
            "CALL_ROUTER_DATABASE_URL",
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "CALL_ROUTER_TWILIO_API_BASE_URL",
            "CALL_ROUTER_TASKROUTER_BASE_URL",
            "CALL_ROUTER_WORKSPACE_SID",
            "CALL_ROUTER_WORKFLOW_SID",
        ] {
            cmd.env_remove(var);
        }
        cmd.output().unwrap()
    };
    let since = h.log_position().await;
    let out = tokio::task::spawn_blocking({
        let bad = bad.clone();
        move || run(&bad, &[])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("phone"), "{stderr}");
    assert!(h.requests_since(since).await.0.is_empty());

    let out = tokio::task::spawn_blocking(move || run(&good, &["--dry-run"])).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("dry run: nothing will be written"), "{stdout}");
    assert!(stdout.contains("+ create worker north"), "{stdout}");
    assert!(!stdout.contains(TOKEN), "the auth token was printed");

    // A dry run does not even create the database file.
    let never = dir.path().join("never.db");
    let fresh = dir.path().join("fresh.toml");
    std::fs::write(&fresh, h.toml(&[&NORTH]).replace(&h.db, &format!("sqlite://{}", never.display()))).unwrap();
    let out = tokio::task::spawn_blocking(move || run(&fresh, &["--dry-run"])).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("does not exist yet"), "{stdout}");
    assert!(stdout.contains("+ create worker north"), "{stdout}");
    assert!(!never.exists(), "the dry run created {}", never.display());
}
