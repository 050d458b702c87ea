//! Voicemail end to end: a caller reaches a closed location and leaves a
//! message in the sandbox; the server stores it with Twilio's transcription,
//! announces it to a signed-webhook receiver (which fails once, so the
//! dispatcher retries) and an SMTP sink, both on loopback, and serves it on
//! `/api/voicemails`, the audio streamed from the sandbox. The recording's
//! URL reaches neither the API's answers nor the server's info-level log.
//! Each case runs on SQLite and on PostgreSQL (see `common/backends.rs`).

#[path = "common/backends.rs"]
#[macro_use]
mod backends;

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use backends::{Backend, TestDb};
use call_router::app::Server;
use call_router::config::Settings;
use call_router::domain::LocationSpec;
use call_router::hours::{HoursSpec, WeeklySpec};
use call_router::store::Store;
use hmac::{Hmac, Mac};
use sandbox::client::{PlaceCall, SandboxClient};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const NIGHT: &str = "+12025550145";
const NIGHT_PHONE: &str = "+14155550105";
const CALLER: &str = "+13105550199";
const TIME_SCALE: f64 = 250.0;
const ADMIN: &str = "test-admin-token-0123456789";
const SECRET: &str = "webhook-secret-0123456789abcdef";
const DESK: &str = "desk@example.com";

/// Everything the server logs at info level and above, from every test of
/// this binary (one global subscriber per process).
fn info_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

/// A webhook receiver on loopback that answers 500 to the first request and
/// 200 after that.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                let status = if seen.is_empty() { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                seen.push(Received { headers, body: body.to_vec(), answered: status.as_u16() });
                status
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// One message the SMTP sink accepted.
#[derive(Debug, Clone)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

/// An SMTP sink on loopback speaking just enough SMTP for lettre without TLS.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<Mail>>>) {
    let got: Arc<Mutex<Vec<Mail>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let sink = sink.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
                let mut mail = Mail { from: String::new(), to: Vec::new(), data: String::new() };
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let answer: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 sink.test\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        mail.from = line[10..].trim().to_owned();
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        mail.to.push(line[8..].trim().to_owned());
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.unwrap();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            mail.data.push_str(&l);
                            mail.data.push('\n');
                        }
                        sink.lock().unwrap().push(mail.clone());
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else if upper == "RSET" || upper == "NOOP" {
                        b"250 OK\r\n"
                    } else {
                        b"502 not here\r\n"
                    };
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

fn night(webhook: &str) -> LocationSpec {
    LocationSpec {
        display_name: Some("Night clinic".into()),
        transcribe: true,
        notify_email: vec![DESK.into()],
        notify_webhook: Some(webhook.into()),
        ..LocationSpec::new(
            "night",
            &[NIGHT],
            NIGHT_PHONE,
            // Never open: every caller gets voicemail.
            HoursSpec {
                time_zone: "America/New_York".into(),
                weekly: WeeklySpec::every_day(&[]),
                ..HoursSpec::default()
            },
        )
    }
}

struct World {
    server: Server,
    sandbox: sandbox::Sandbox,
    client: SandboxClient,
    store: Store,
    url: String,
    sandbox_auth: (String, String),
    _db: TestDb,
}

async fn world(backend: Backend, locations: Vec<LocationSpec>, smtp_port: u16) -> Option<World> {
    let db = backend.database().await?;
    let sb_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = sandbox::start(sandbox::Config::random(TIME_SCALE, 11), sb_listener).await.unwrap();
    let (account, token, sb_url) = (sandbox.account_sid().to_string(), sandbox.auth_token().to_owned(), sandbox.url());
    let client = SandboxClient::new(&sb_url, &account, &token);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let text = format!(
        "public_url = {url:?}\ndatabase_url = {:?}\n[twilio]\naccount_sid = {account:?}\nauth_token = {token:?}\n\
         api_base_url = {sb_url:?}\ntaskrouter_base_url = {sb_url:?}\nrequest_timeout_ms = 5000\n\
         [admin]\ntoken = {ADMIN:?}\n\
         [notifications]\nwebhook_secret = {SECRET:?}\nsmtp_server = \"127.0.0.1\"\nsmtp_port = {smtp_port}\n\
         smtp_security = \"none\"\nsmtp_from = \"calls@example.com\"\nsmtp_timeout_secs = 5\n",
        db.url
    );
    let mut settings = Settings::from_toml(&text, |_| None).unwrap();
    settings.locations = locations;
    let server = Server::start(settings.clone(), listener).await.unwrap();
    let store = server.state.store().clone();
    for n in settings.locations.iter().flat_map(|l| &l.numbers) {
        client.buy_number(n, None).await.unwrap();
    }
    let mut report = call_router::provision::Report::default();
    call_router::provision::run(&settings, &store, call_router::provision::Options::default(), &mut report)
        .await
        .unwrap_or_else(|e| panic!("provision failed: {e}\n{}", report.lines.join("\n")));
    Some(World { server, sandbox, client, store, url, sandbox_auth: (account, token), _db: db })
}

/// Polls `f` every 20 ms until it is true, for at most 20 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

fn hmac_hex(key: &str, material: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(material);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

async fn a_voicemail_is_stored_announced_and_served(backend: Backend) {
    let log = info_log();
    let (hook, received) = webhook_receiver().await;
    let (smtp_port, mails) = smtp_sink().await;
    let Some(w) = world(backend, vec![night(&hook)], smtp_port).await else { return };

    let call = w
        .client
        .place_call(&PlaceCall { from: CALLER.into(), to: NIGHT.into(), digits: None, patience_secs: None })
        .await
        .unwrap();
    let summary = w.client.wait_for_call_end(&call, Duration::from_secs(20)).await.unwrap();
    let recording_url = summary["recording_url"].as_str().expect("the caller left a recording").to_owned();
    let recording_sid = recording_url.rsplit('/').next().unwrap().to_owned();

    // The webhook: refused once with a 500, then sent again and accepted.
    eventually("the webhook is accepted after a retry", || received.lock().unwrap().iter().any(|r| r.answered == 200))
        .await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 200], "one retry, then done");
    for r in &got {
        let ts = r.headers["x-call-router-timestamp"].to_str().unwrap();
        let sig = r.headers["x-call-router-signature"].to_str().unwrap();
        let material = [ts.as_bytes(), b".", &r.body].concat();
        assert_eq!(sig, format!("sha256={}", hmac_hex(SECRET, &material)), "signed over <timestamp>.<body>");
        assert_ne!(sig, format!("sha256={}", hmac_hex("another secret 0123456789", &material)));
        let age = jiff::Timestamp::now().as_second() - ts.parse::<i64>().unwrap();
        assert!((0..60).contains(&age), "a current timestamp: {ts}");
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let body: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(body["event"], "voicemail.recorded");
    assert_eq!(body["recording_sid"], recording_sid.as_str());
    assert_eq!(body["call_sid"], call.as_str());
    assert_eq!(body["caller"], CALLER);
    assert_eq!(body["location"], "night");
    assert_eq!(body["time_zone"], "America/New_York");
    let local = body["recorded_at_local"].as_str().unwrap();
    assert!(local.ends_with("-05:00") || local.ends_with("-04:00"), "New York time: {local}");
    assert_eq!(body["dashboard_url"], format!("{}/dashboard", w.url));
    let transcription = body["transcription"].as_str().expect("the transcription travels with it");
    assert!(transcription.contains(CALLER) && transcription.contains("call me back"), "{transcription}");
    assert!(!String::from_utf8_lossy(&got[1].body).contains(&recording_url), "no recording URL in the webhook");

    // The email.
    eventually("the email is delivered", || !mails.lock().unwrap().is_empty()).await;
    let mut mail = mails.lock().unwrap()[0].clone();
    // The body is quoted-printable: join its soft line breaks.
    mail.data = mail.data.replace("=\n", "");
    assert_eq!(mail.from, "<calls@example.com>");
    assert_eq!(mail.to, [format!("<{DESK}>")]);
    assert!(mail.data.contains("Subject: Voicemail from +13105550199 for Night clinic"), "{}", mail.data);
    assert!(mail.data.contains(&format!("From: {CALLER}")), "{}", mail.data);
    assert!(mail.data.contains("call me back"), "the transcription: {}", mail.data);
    assert!(mail.data.contains(&format!("{}/dashboard", w.url)), "{}", mail.data);
    assert!(!mail.data.contains(&recording_url));

    // The API.
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}{path}", w.url);
    let list = http.get(api("/api/voicemails")).send().await.unwrap();
    assert_eq!(list.status(), 401, "the API needs the token");
    let list = http.get(api("/api/voicemails")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let text = list.text().await.unwrap();
    assert!(!text.contains("/Recordings/"), "the recording's URL never reaches the browser: {text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["next_cursor"], Value::Null);
    let vm = &page["voicemails"][0];
    assert_eq!(page["voicemails"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(vm["recording_sid"], recording_sid.as_str());
    assert_eq!(vm["call_sid"], call.as_str());
    assert_eq!(vm["caller"], CALLER);
    assert_eq!(vm["location"], "night");
    assert_eq!(vm["duration_secs"], 5);
    assert_eq!(vm["transcription"], transcription);
    assert_eq!(vm["listened"], false);
    assert_eq!(vm["audio_url"], format!("/api/voicemails/{recording_sid}/audio"));
    assert!(vm["recorded_at"].as_str().unwrap().ends_with('Z'), "{vm}");

    // The audio: the sandbox's bytes, through the server.
    let audio = http.get(api(&format!("/api/voicemails/{recording_sid}/audio"))).bearer_auth(ADMIN).send().await;
    let audio = audio.unwrap();
    assert_eq!(audio.status(), 200);
    assert_eq!(audio.headers()["content-type"], "audio/x-wav");
    let streamed = audio.bytes().await.unwrap();
    let (account, token) = &w.sandbox_auth;
    let direct = http.get(&recording_url).basic_auth(account, Some(token)).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    let direct = direct.bytes().await.unwrap();
    assert!(direct.starts_with(b"RIFF") && direct.len() > 44, "a WAV file");
    assert_eq!(streamed, direct, "the same bytes as Twilio's");
    let without = http.get(api(&format!("/api/voicemails/{recording_sid}/audio"))).send().await.unwrap();
    assert_eq!(without.status(), 401);

    // Unknown SIDs, bad values.
    let unknown = "RE00000000000000000000000000000000";
    for path in [format!("/api/voicemails/{unknown}/audio"), "/api/voicemails/nonsense/audio".to_owned()] {
        let r = http.get(api(&path)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    }
    let r = http.post(api(&format!("/api/voicemails/{unknown}/listened"))).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 404);
    for q in ["limit=0", "limit=201", "listened=maybe", "cursor=nonsense"] {
        let r = http.get(api(&format!("/api/voicemails?{q}"))).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().len() > 5);
    }

    // Listened.
    let r = http.post(api(&format!("/api/voicemails/{recording_sid}/listened"))).bearer_auth(ADMIN).send().await;
    assert_eq!(r.unwrap().status(), 204);
    let count = |q: &'static str| {
        let (http, url) = (http.clone(), api(&format!("/api/voicemails?{q}")));
        async move {
            let page: Value = http.get(url).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
            page["voicemails"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("listened=true").await, 1);
    assert_eq!(count("listened=false").await, 0);
    assert_eq!(count("location=elsewhere").await, 0);
    assert_eq!(count("location=night&listened=true").await, 1);

    // The log said what happened, and never where the recording is.
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(text.contains("voicemail recorded") && text.contains(&recording_sid), "the log is captured");
    assert!(text.contains("voicemail notification sent"));
    assert!(!text.contains(&recording_url), "the recording URL is not logged at info level");
    let _ = std::io::stderr().flush();

    // Nothing else owed: both notifications done.
    let actions = w.store.actions().await.unwrap();
    let notes: Vec<_> = actions.iter().filter(|(k, _, _)| k.starts_with("notify:")).collect();
    assert_eq!(notes.len(), 2, "{actions:?}");
    assert!(notes.iter().all(|(_, s, _)| *s == call_router::outbox::OutboxState::Done), "{notes:?}");
    w.sandbox.shutdown().await;
    w.server.shutdown().await.unwrap();
}

/// A location that shows the caller's number dials with the caller's
/// `CallToken`; once the call is over the token is kept nowhere: not in the
/// raw webhooks of the audit log (the caller's own, TaskRouter's task
/// attributes), not in the journey, not in the sent dial.
async fn call_tokens_are_not_kept_after_the_call(backend: Backend) {
    const DAY: &str = "+12025550143";
    const DAY_PHONE: &str = "+14155550101";
    let mut day = night("http://127.0.0.1:9/unused");
    day.name = "day".into();
    day.numbers = vec![DAY.into()];
    day.phone = DAY_PHONE.into();
    day.hours.weekly = WeeklySpec::every_day(&["00:00-24:00"]);
    day.show_caller_number = true;
    (day.transcribe, day.notify_email, day.notify_webhook) = (false, Vec::new(), None);
    let Some(w) = world(backend, vec![day], 9).await else { return };
    let person = sandbox::state::Behaviour::Person { rings: 1, talk_secs: 5, digits: None };
    w.client.set_phone(DAY_PHONE, &person).await.unwrap();
    let call = w
        .client
        .place_call(&PlaceCall { from: CALLER.into(), to: DAY.into(), digits: None, patience_secs: None })
        .await
        .unwrap();
    w.client.wait_for_call_end(&call, Duration::from_secs(20)).await.unwrap();

    // The dial went out with the caller's token (so there was one to keep).
    let (log, _) = w.client.log(0).await.unwrap();
    let token = log
        .iter()
        .filter(|e| e["direction"] == "in" && e["url"].as_str().is_some_and(|u| u.ends_with("/Calls.json")))
        .flat_map(|e| e["params"].as_array().cloned().unwrap_or_default())
        .find(|p| p[0] == "CallToken")
        .and_then(|p| p[1].as_str().map(str::to_owned))
        .expect("the dial carried the caller's CallToken");
    assert!(token.len() > 8);

    // Wait until the journey is closed, then look everywhere.
    let pool = w.store.pool().clone();
    let mut closed = false;
    for _ in 0..1000 {
        let open: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) AS n FROM journeys WHERE closed = 0").fetch_one(&pool).await.unwrap(),
            "n",
        );
        if open == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the journey closed");
    // The call is over: no line of the location counts as in use.
    let board = w.store.live_board(100).await.unwrap();
    assert!(board.iter().all(|l| l.bridged == 0 && l.waiting == 0), "{board:?}");
    // A beat for the webhooks after the close (the caller's last status) to be kept.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<String> = sqlx::query_scalar("SELECT payload FROM events").fetch_all(&pool).await.unwrap();
    assert!(events.iter().any(|p| p.contains("TaskAttributes")), "TaskRouter's events were kept: {events:?}");
    let journeys: Vec<String> = sqlx::query_scalar("SELECT state_json FROM journeys").fetch_all(&pool).await.unwrap();
    let outbox: Vec<String> = sqlx::query_scalar("SELECT payload FROM outbox").fetch_all(&pool).await.unwrap();
    assert!(outbox.iter().any(|p| p.contains("\"dial\"")), "{outbox:?}");
    for text in events.iter().chain(&journeys).chain(&outbox) {
        assert!(!text.contains(&token), "the call token is not kept: {text}");
        assert!(!text.contains("CallToken") && !text.contains("callToken"), "{text}");
    }
    w.sandbox.shutdown().await;
    w.server.shutdown().await.unwrap();
}

on_both_backends!(a_voicemail_is_stored_announced_and_served, call_tokens_are_not_kept_after_the_call);
