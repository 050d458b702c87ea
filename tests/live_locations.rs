//! A running server picks up changed locations without a restart: from the
//! history API (`PUT`/`DELETE /api/locations/{name}`), from `locations
//! add|remove|import` on the same database, and from the config file
//! (`app::reload_locations`, what `serve` runs on SIGHUP). The server on
//! port 0 answers the next call differently each time.

mod common;

use call_router::cli::{DbArgs, LocationsCommand};
use call_router::hours::HoursSpec;
use common::*;
use twilio::twiml::{Response, Verb};

const ADMIN: &str = "test-admin-token-0123456789";

/// `[[locations]]` tables in TOML.
fn locations_toml(locations: &[&call_router::domain::LocationSpec]) -> String {
    #[derive(serde::Serialize)]
    struct File<'a> {
        locations: &'a [&'a call_router::domain::LocationSpec],
    }
    toml::to_string(&File { locations }).unwrap()
}
const CALLER: &str = "+13105550199";

/// What the server answers a new call to `to`, in short: `queued` (enqueued), `closed`
/// (after hours: voicemail) or `not in service` (no location).
async fn answer(app: &TestApp, n: u32, to: &str) -> &'static str {
    let call = format!("CA{n:032x}");
    let params = [
        ("AccountSid", ACCOUNT),
        ("CallSid", call.as_str()),
        ("From", CALLER),
        ("To", to),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
    ];
    let resp = app.post_signed("/incoming-call", &params).await;
    assert_eq!(resp.status(), 200);
    let doc = Response::parse(&resp.text().await.unwrap()).unwrap();
    if doc.verbs.iter().any(|v| matches!(v, Verb::Enqueue(_))) {
        "queued"
    } else if doc.verbs.iter().any(|v| matches!(v, Verb::Record(_))) {
        "closed"
    } else if matches!(doc.verbs.last(), Some(Verb::Hangup)) {
        "not in service"
    } else {
        panic!("an unexpected answer: {doc:?}")
    }
}

fn never_open() -> HoursSpec {
    HoursSpec { time_zone: "America/New_York".into(), ..HoursSpec::default() }
}

async fn put(app: &TestApp, name: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let resp =
        app.client.put(format!("{}/api/locations/{name}", app.url)).bearer_auth(ADMIN).json(body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_location_edited_through_the_api_holds_from_the_next_call() {
    let app = spawn_app_with(&format!("[admin]\ntoken = \"{ADMIN}\"")).await;
    assert_eq!(answer(&app, 1, TWILIO_NUMBER).await, "queued");

    // North closes: the next call is after hours.
    let mut north = location("north", None, TWILIO_NUMBER, "+14155550123", never_open());
    let (status, body) = put(&app, "north", &serde_json::to_value(&north).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["location"]["name"], "north");
    assert_eq!(body["provisioned"], false, "the test server has no queue stored for it");
    assert_eq!(answer(&app, 2, TWILIO_NUMBER).await, "closed");

    // Open again, the name taken from the path.
    north.hours = always_open("America/New_York");
    let mut unnamed = serde_json::to_value(&north).unwrap();
    unnamed.as_object_mut().unwrap().remove("name");
    assert_eq!(put(&app, "north", &unnamed).await.0, 200);
    assert_eq!(answer(&app, 3, TWILIO_NUMBER).await, "queued");

    // Refused, and nothing changes: too many lines, a name that is not the path's, a clash.
    north.lines = 501;
    let (status, body) = put(&app, "north", &serde_json::to_value(&north).unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("lines: 501 must be between 1 and 500"), "{body}");
    north.lines = 1;
    let (status, body) = put(&app, "south", &serde_json::to_value(&north).unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not the name in the path"), "{body}");
    let clash = location("north2", None, TWILIO_NUMBER, "+14155550127", always_open("UTC"));
    let (status, body) = put(&app, "north2", &serde_json::to_value(&clash).unwrap()).await;
    assert_eq!(status, 400, "two locations alone on one number without digits: {body}");
    assert_eq!(answer(&app, 4, TWILIO_NUMBER).await, "queued");
    let unauthorised = app
        .client
        .put(format!("{}/api/locations/north", app.url))
        .json(&serde_json::to_value(&north).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);

    // Removed: the number is no longer in service.
    let delete = |name: &'static str| {
        let req = app.client.delete(format!("{}/api/locations/{name}", app.url)).bearer_auth(ADMIN);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete("north").await, 204);
    assert_eq!(answer(&app, 5, TWILIO_NUMBER).await, "not in service");
    assert_eq!(delete("north").await, 404);
}

#[tokio::test]
async fn a_location_edited_with_the_locations_command_holds_from_the_next_call() {
    let app = spawn_app().await;
    let db = DbArgs { config: None, database_url: Some(app.server.state.settings().database_url.clone()) };
    assert_eq!(answer(&app, 1, CLOSED_NUMBER).await, "closed");

    // `locations import`: night opens around the clock.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("night.toml");
    let night = location("night", None, CLOSED_NUMBER, "+14155550126", always_open("Europe/London"));
    std::fs::write(&file, locations_toml(&[&night])).unwrap();
    call_router::cli::run_locations(&db, &LocationsCommand::Import { file }).await.unwrap();
    assert_eq!(answer(&app, 2, CLOSED_NUMBER).await, "queued");

    // `locations remove`.
    call_router::cli::run_locations(&db, &LocationsCommand::Remove { name: "night".into() }).await.unwrap();
    assert_eq!(answer(&app, 3, CLOSED_NUMBER).await, "not in service");
}

#[tokio::test]
async fn a_reloaded_config_file_holds_from_the_next_call() {
    let app = spawn_app().await;
    assert_eq!(answer(&app, 1, TWILIO_NUMBER).await, "queued");
    let settings = app.server.state.settings();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call-router.toml");
    let write = |north: &call_router::domain::LocationSpec| {
        let base = settings_toml(&settings.public_url, "http://127.0.0.1:9", &settings.database_url, "");
        let locations = locations_toml(&[north]);
        std::fs::write(&path, format!("{base}\n{locations}")).unwrap();
    };
    write(&location("north", None, TWILIO_NUMBER, "+14155550123", never_open()));
    assert_eq!(call_router::app::reload_locations(Some(&path), app.server.state.store()).await.unwrap(), 1);
    assert_eq!(answer(&app, 2, TWILIO_NUMBER).await, "closed");

    // A file that does not load changes nothing.
    let mut bad = location("north", None, TWILIO_NUMBER, "+14155550123", always_open("America/New_York"));
    bad.lines = 0;
    write(&bad);
    let e = call_router::app::reload_locations(Some(&path), app.server.state.store()).await.unwrap_err();
    assert!(format!("{e:#}").contains("lines"), "{e:#}");
    assert_eq!(answer(&app, 3, TWILIO_NUMBER).await, "closed");
}

#[tokio::test]
async fn a_location_with_several_phones_through_the_api_is_shown_and_enqueued_with_them() {
    let app = spawn_app_with(&format!("[admin]\ntoken = \"{ADMIN}\"")).await;
    let mut north = location("north", None, TWILIO_NUMBER, "", always_open("America/New_York"));
    north.phones = vec!["+14155550123".into(), "+14155550124".into()];
    let (status, body) = put(&app, "north", &serde_json::to_value(&north).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["location"]["phones"], serde_json::json!(["+14155550123", "+14155550124"]), "{body}");

    // The board shows every phone, in ring order.
    let board: serde_json::Value = app
        .client
        .get(format!("{}/api/locations", app.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shown = board["locations"].as_array().unwrap().iter().find(|l| l["name"] == "north").unwrap().clone();
    assert_eq!(shown["phones"], serde_json::json!(["+14155550123", "+14155550124"]), "{shown}");
    assert_eq!(shown["ring"], "in_order");

    // The next caller's task carries both; `practicePhone` stays the first.
    let params = [
        ("AccountSid", ACCOUNT),
        ("CallSid", "CA000000000000000000000000000000f1"),
        ("From", CALLER),
        ("To", TWILIO_NUMBER),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
    ];
    let resp = app.post_signed("/incoming-call", &params).await;
    let doc = Response::parse(&resp.text().await.unwrap()).unwrap();
    let attributes = doc
        .verbs
        .iter()
        .find_map(|v| match v {
            Verb::Enqueue(e) => e.task.as_ref().map(|t| t.attributes.clone()),
            _ => None,
        })
        .expect("enqueued with a task");
    let attrs: serde_json::Value = serde_json::from_str(&attributes).unwrap();
    assert_eq!(attrs["practicePhone"], "+14155550123");
    assert_eq!(attrs["practicePhones"], serde_json::json!(["+14155550123", "+14155550124"]));

    // Both `phone` and `phones` is refused, naming the field.
    north.phone = "+14155550125".into();
    let (status, body) = put(&app, "north", &serde_json::to_value(&north).unwrap()).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("phones: set `phone` or `phones`, not both"), "{body}");
}
