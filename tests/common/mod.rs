//! Shared test harness: the real server on port 0, a fresh SQLite file, and a
//! recording fake of Twilio's REST API on port 0.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use call_router::app::Server;
use call_router::config::Settings;
use call_router::domain::LocationSpec;
use call_router::hours::{HoursSpec, WeeklySpec};
use twilio::Params;

pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "test-auth-token";
pub const WORKSPACE: &str = "WS0123456789abcdef0123456789abcdef";
pub const WORKFLOW: &str = "WW0123456789abcdef0123456789abcdef";
pub const TWILIO_NUMBER: &str = "+12025550143";
pub const SHARED_NUMBER: &str = "+12025550144";
pub const CLOSED_NUMBER: &str = "+12025550145";

/// One request the fake Twilio API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub params: Params,
    pub authorized: bool,
}

#[derive(Clone, Default)]
pub struct FakeTwilio {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// When set, Calls.json answers with this status and a Twilio error body.
    pub fail_calls_with: Arc<Mutex<Option<(u16, u32)>>>,
}

impl FakeTwilio {
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `n` requests matching `pred` have arrived, or panics.
    pub async fn wait_for(&self, n: usize, pred: impl Fn(&Recorded) -> bool) -> Vec<Recorded> {
        for _ in 0..300 {
            let got: Vec<_> = self.requests().into_iter().filter(&pred).collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fake Twilio did not receive {n} matching requests; got {:#?}", self.requests());
    }
}

async fn fake_handler(
    State(fake): State<FakeTwilio>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let expected = format!("Basic {}", base64_encode(&format!("{ACCOUNT}:{TOKEN}")));
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    let path = uri.path().to_owned();
    fake.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        params: Params::parse(&body),
        authorized,
    });
    if path.ends_with("/Calls.json") && method == Method::POST {
        if let Some((status, code)) = *fake.fail_calls_with.lock().unwrap() {
            let body = twilio::ErrorBody::new(status, code, "refused by the fake");
            return (StatusCode::from_u16(status).unwrap(), axum::Json(serde_json::to_value(body).unwrap()));
        }
        let n = fake.requests.lock().unwrap().len();
        let sid = format!("CA{:032x}", n);
        return (StatusCode::CREATED, axum::Json(serde_json::json!({"sid": sid, "status": "queued"})));
    }
    (StatusCode::OK, axum::Json(serde_json::json!({"sid": "XX", "status": "ok"})))
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub async fn start_fake_twilio() -> (FakeTwilio, String) {
    let fake = FakeTwilio::default();
    let app = Router::new().fallback(fake_handler).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

pub fn always_open(tz: &str) -> HoursSpec {
    HoursSpec { time_zone: tz.into(), weekly: WeeklySpec::every_day(&["00:00-24:00"]), ..HoursSpec::default() }
}

pub fn location(name: &str, digit: Option<&str>, number: &str, phone: &str, hours: HoursSpec) -> LocationSpec {
    LocationSpec {
        display_name: Some(format!("{name} clinic")),
        digit: digit.map(Into::into),
        ..LocationSpec::new(name, &[number], phone, hours)
    }
}

pub struct TestApp {
    pub server: Server,
    pub url: String,
    pub fake: FakeTwilio,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub fn settings_toml(public_url: &str, fake_url: &str, db: &str, extra: &str) -> String {
    format!(
        r#"
public_url = "{public_url}"
database_url = "{db}"
[twilio]
account_sid = "{ACCOUNT}"
auth_token = "{TOKEN}"
api_base_url = "{fake_url}"
taskrouter_base_url = "{fake_url}"
request_timeout_ms = 2000
{extra}
"#
    )
}

/// Starts the server with three locations: `north` alone on TWILIO_NUMBER,
/// `east` (1) and `west` (2) sharing SHARED_NUMBER, and `night` on
/// CLOSED_NUMBER with no opening hours at all.
pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

pub async fn spawn_app_with(extra_toml: &str) -> TestApp {
    spawn_app_tuned(extra_toml, |_| {}).await
}

/// As [`spawn_app_with`], with the settings changed by `tune` before the
/// server starts (for top-level settings, which `extra_toml` cannot reach).
pub async fn spawn_app_tuned(extra_toml: &str, tune: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_of(extra_toml, tune, |_| {}).await
}

/// As [`spawn_app_tuned`], with the four locations changed by `edit` before they are stored.
pub async fn spawn_app_of(
    extra_toml: &str,
    tune: impl FnOnce(&mut Settings),
    edit: impl FnOnce(&mut [LocationSpec]),
) -> TestApp {
    let (fake, fake_url) = start_fake_twilio().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("test.db").display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut settings = Settings::from_toml(&settings_toml(&url, &fake_url, &db, extra_toml), |_| None).unwrap();
    tune(&mut settings);

    let store = call_router::store::Store::connect(&db).await.unwrap();
    let mut specs = [
        location("north", None, TWILIO_NUMBER, "+14155550123", always_open("America/New_York")),
        location("east", Some("1"), SHARED_NUMBER, "+14155550124", always_open("America/Chicago")),
        location("west", Some("2"), SHARED_NUMBER, "+14155550125", always_open("America/Los_Angeles")),
        location(
            "night",
            None,
            CLOSED_NUMBER,
            "+14155550126",
            HoursSpec { time_zone: "Europe/London".into(), ..HoursSpec::default() },
        ),
    ];
    edit(&mut specs);
    call_router::cli::import(&store, &specs).await.unwrap();
    store.set_resource("workspace", "main", WORKSPACE).await.unwrap();
    store.set_resource("workflow", "main", WORKFLOW).await.unwrap();

    let server = Server::start(settings, listener).await.unwrap();
    TestApp { server, url, fake, client: reqwest::Client::new(), _dir: dir }
}

impl TestApp {
    /// POSTs a form signed as Twilio would sign it.
    pub async fn post_signed(&self, path_and_query: &str, params: &[(&str, &str)]) -> reqwest::Response {
        let url = format!("{}{}", self.url, path_and_query);
        let sig = twilio::signature::sign(TOKEN.as_bytes(), &url, params.iter().copied());
        self.post_with_signature(path_and_query, params, Some(&sig)).await
    }

    pub async fn post_with_signature(
        &self,
        path_and_query: &str,
        params: &[(&str, &str)],
        sig: Option<&str>,
    ) -> reqwest::Response {
        let body: Params = params.iter().map(|(k, v)| (*k, *v)).collect();
        let mut req = self
            .client
            .post(format!("{}{}", self.url, path_and_query))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.encode());
        if let Some(sig) = sig {
            req = req.header("x-twilio-signature", sig);
        }
        req.send().await.unwrap()
    }

    pub async fn get_signed(&self, path_and_query: &str) -> reqwest::Response {
        let url = format!("{}{}", self.url, path_and_query);
        let sig = twilio::signature::sign(TOKEN.as_bytes(), &url, std::iter::empty());
        self.client.get(url).header("x-twilio-signature", sig).send().await.unwrap()
    }
}

/// A `reservation.created` event as TaskRouter sends it.
pub fn reservation_created(task_sid: &str, reservation_sid: &str, attributes: &str) -> Vec<(&'static str, String)> {
    vec![
        ("EventType", "reservation.created".into()),
        ("AccountSid", ACCOUNT.into()),
        ("WorkspaceSid", WORKSPACE.into()),
        ("ResourceType", "reservation".into()),
        ("ResourceSid", reservation_sid.into()),
        ("TaskSid", task_sid.into()),
        ("ReservationSid", reservation_sid.into()),
        ("WorkerSid", "WK0123456789abcdef0123456789abcdef".into()),
        ("TaskAttributes", attributes.into()),
        ("TaskAssignmentStatus", "reserved".into()),
        ("Timestamp", "1700000000".into()),
    ]
}

pub fn as_refs<'a>(v: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
