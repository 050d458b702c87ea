//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver on a loopback port) against the demo's business (the
//! sandbox and the server in this process). Signs in through the form,
//! places calls so that callers wait at a one-line location, and checks that
//! the page shows the waiting count appear and change, a connected count,
//! a voicemail, and a callback request that "Called back" marks done. Saves
//! screenshots in target/artifacts/.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or CHROMEDRIVER and
//! CHROME naming the binaries). Without them the test says it skips, unless
//! CALL_ROUTER_REQUIRE_BROWSER=1 (as in CI), where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use call_router::demo::scenario::Scenario;
use call_router::demo::{Business, Options};
use call_router::journey::{Event, Policy};
use call_router::store::Delivery;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const ADMIN: &str = "browser-test-admin-token-0123456789";
/// East (its own number, no menu) has one line; a person answers after one
/// ring and talks for 30 virtual seconds. Harbor is closed: its callers
/// leave a voicemail.
const SCENARIO: &str = r#"
[phones.east]
answer = "person"
rings = 1
talk_secs = 30

[[callers]]
location = "east"
"#;
const EAST_NUMBER: &str = "+12025550144";
const HARBOR_NUMBER: &str = "+12025550145";
/// Virtual seconds per real second: each east call talks for 3 s.
const TIME_SCALE: f64 = 10.0;

fn find_binary(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(binary: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // chromedriver listens on loopback only unless told otherwise (--allowed-ips).
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not answer on {} within 15 s", driver.url);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// East's card on the board, as numbers read from the page: `[waiting, connected today]`,
/// or null while the card is not there.
const READ_EAST: &str = r#"
const card = document.querySelector('article.loc[data-location="east"]');
if (!card) return null;
const num = (k) => Number(card.querySelector(`[data-stat="${k}"]`).textContent);
return [num("waiting"), num("connected")];
"#;

async fn east(c: &Client) -> Option<(u64, u64)> {
    let v = c.execute(READ_EAST, vec![]).await.expect("reading the board");
    let a = v.as_array()?;
    Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?))
}

async fn place(business: &Business, from: &str, to: &str) -> String {
    business
        .client
        .place_call(&sandbox::client::PlaceCall {
            from: from.into(),
            to: to.into(),
            digits: None,
            patience_secs: Some(600),
        })
        .await
        .expect("placing a call in the sandbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_callers_waiting_connecting_and_a_voicemail() {
    let required = std::env::var("CALL_ROUTER_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver_bin), Some(chrome_bin)) =
        (find_binary("CHROMEDRIVER", &["chromedriver"]), find_binary("CHROME", &["chromium", "chromium-browser"]))
    else {
        assert!(!required, "CALL_ROUTER_REQUIRE_BROWSER=1 but chromedriver or chromium is missing");
        eprintln!(
            "SKIPPED the_dashboard_shows_callers_waiting_connecting_and_a_voicemail: no chromedriver or chromium \
             (apt-get install chromium chromium-driver, or set CHROMEDRIVER and CHROME)"
        );
        return;
    };
    let started = Instant::now();
    let driver = start_driver(&driver_bin).await;
    let scenario = Scenario::parse(SCENARIO, "browser.toml").unwrap();
    let opts = Options { time_scale: TIME_SCALE, seed: 3, ..Options::default() };
    let business = Business::start(&scenario, &opts, &format!("[admin]\ntoken = \"{ADMIN}\"\n"))
        .await
        .expect("the demo business starts");

    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chrome_bin,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1100",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.expect("a WebDriver session");

    let result = drive(&c, &business).await;
    let shot = c.screenshot().await;
    let _ = c.close().await;
    business.stop().await.unwrap();
    drop(driver);
    if let Ok(png) = shot {
        std::fs::write(artifacts_dir().join("dashboard-last.png"), png).unwrap();
    }
    if let Err(e) = result {
        panic!("{e}\n(the page at the end: target/artifacts/dashboard-last.png)");
    }
    eprintln!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}

/// The test's steps; an error says which expectation the page missed.
async fn drive(c: &Client, business: &Business) -> Result<(), String> {
    let page = format!("{}/dashboard", business.server_url);
    c.goto(&page).await.map_err(|e| format!("opening {page}: {e}"))?;

    // Not signed in: the form. A wrong token keeps us there.
    let form = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("form#login")).await;
    form.map_err(|e| format!("no login form: {e}"))?;
    sign_in(c, "not-the-admin-token-at-all").await?;
    let text = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("p.error"))
        .await
        .map_err(|e| format!("no error for a wrong token: {e}"))?;
    let text = text.text().await.map_err(|e| e.to_string())?;
    if !text.contains("not the admin token") {
        return Err(format!("wrong-token message: {text:?}"));
    }
    sign_in(c, ADMIN).await?;
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(r#"article.loc[data-location="east"]"#))
        .await
        .map_err(|e| format!("signed in, but the board shows no east card: {e}"))?;
    let before = east(c).await.ok_or("east's card has no numbers")?;
    if before != (0, 0) {
        return Err(format!("east before any call: {before:?}, expected no one waiting and no one connected"));
    }

    // Three callers at once for east's one line: one talks, two wait, then
    // the next connects when the line frees up. One caller for closed harbor,
    // who leaves a voicemail.
    for i in 0..3 {
        place(business, &format!("+1310555030{i}"), EAST_NUMBER).await;
    }
    place(business, "+13105550399", HARBOR_NUMBER).await;

    // The waiting count appears (> 0), then changes; a connected count appears.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<(u64, u64)> = vec![before];
    let mut max_waiting = 0;
    loop {
        if let Some(now) = east(c).await {
            if seen.last() != Some(&now) {
                seen.push(now);
            }
            max_waiting = max_waiting.max(now.0);
            let changed_after_peak = max_waiting > 0 && now.0 < max_waiting;
            if changed_after_peak && now.1 >= 1 {
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "within 30 s the page did not show east's waiting count rise and fall with a connected \
                 count: (waiting, connected today) seen {seen:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The recent calls list shows the calls; a row opens its timeline.
    let row = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#calls tbody tr.call"))
        .await
        .map_err(|e| format!("no calls listed: {e}"))?;
    row.click().await.map_err(|e| format!("clicking a call: {e}"))?;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#timeline li time"))
        .await
        .map_err(|e| format!("the call's timeline did not show: {e}"))?;
    c.find(Locator::Id("detail-close")).await.map_err(|e| e.to_string())?.click().await.map_err(|e| e.to_string())?;

    // A phone-sized screen: one column, cards the width of the screen, nothing wider.
    c.set_window_size(390, 844).await.map_err(|e| e.to_string())?;
    let widths: Value = c
        .execute(
            "const card = document.querySelector('article.loc').getBoundingClientRect();\
             const root = document.documentElement;\
             return [card.width, card.right, root.clientWidth, root.scrollWidth];",
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?;
    let w = |i: usize| widths[i].as_f64().unwrap_or(f64::NAN);
    let (card, right, viewport, page) = (w(0), w(1), w(2), w(3));
    if !(card >= viewport * 0.8 && right <= viewport && page <= viewport) {
        return Err(format!(
            "on a 390 px screen: a location card {card} px wide ending at {right} px, the page {page} px wide, \
             the viewport {viewport} px: not one column that fits"
        ));
    }
    let png = c.screenshot().await.map_err(|e| format!("screenshot: {e}"))?;
    std::fs::write(artifacts_dir().join("dashboard-phone.png"), png).unwrap();
    c.set_window_size(1280, 1100).await.map_err(|e| e.to_string())?;

    // Harbor's caller's voicemail appears, with a player for the server's audio route.
    let vm = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#voicemails li.vm"))
        .await
        .map_err(|e| format!("no voicemail appeared on the page within 20 s: {e}"))?;
    let vm_text = vm.text().await.map_err(|e| e.to_string())?;
    if !vm_text.contains("+13105550399") {
        return Err(format!("the voicemail does not name its caller: {vm_text:?}"));
    }
    let src = c
        .execute("return document.querySelector('#voicemails li.vm audio').getAttribute('src');", vec![])
        .await
        .map_err(|e| e.to_string())?;
    if !src.as_str().is_some_and(|s| s.starts_with("/api/voicemails/") && s.ends_with("/audio")) {
        return Err(format!("the player's source is not the server's audio route: {src}"));
    }

    // A callback request (a callback east did not reach by closing time, by its policy) shows in
    // the same list: whom to call back, with a button that marks it done.
    let caller = "+13105550398";
    let call = format!("CA{:032x}", 0xcb);
    let events = vec![
        Event::CallerArrived { call: call.parse().unwrap() },
        Event::CallerEnqueued { location: "east".into(), language: None },
        Event::CallbackChosen {
            number: twilio::E164::parse(caller).unwrap(),
            tries: 1,
            wait_for_opening: false,
            to_list: true,
        },
        Event::ClosingTime { at_ms: 1_000, later: Vec::new(), callback: None, overflow: None },
    ];
    let policy = Policy::from_settings(&business.settings);
    let store = business.server.state.store();
    store.deliver(Delivery::to_keys([call.clone()], events, policy)).await.map_err(|e| format!("{e:#}"))?;
    let request = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#voicemails li.callback-request"))
        .await
        .map_err(|e| format!("no callback request appeared on the page within 20 s: {e}"))?;
    let text = request.text().await.map_err(|e| e.to_string())?;
    if !(text.contains(&format!("Call back {caller}")) && text.contains("not reached before closing")) {
        return Err(format!("the callback request does not say whom to call back: {text:?}"));
    }
    let done =
        request.find(Locator::Css("button:not(.quiet)")).await.map_err(|e| format!("no Called back button: {e}"))?;
    done.click().await.map_err(|e| format!("clicking Called back: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let badge = c
            .execute("return document.querySelector('#voicemails li.callback-request .badge').textContent;", vec![])
            .await
            .map_err(|e| e.to_string())?;
        if badge == "done" {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("Called back did not mark the request done: its badge says {badge}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = call_router::store::callback_request_id(&call);
    let listened = store.voicemail(&id).await.map_err(|e| e.to_string())?.and_then(|v| v.listened_at_ms);
    if listened.is_none() {
        return Err(format!("the server does not have callback request {id} marked done"));
    }

    // Wait until the last east caller is through, for a settled screenshot.
    let settle = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle {
        if east(c).await.is_some_and(|(w, n)| w == 0 && n >= 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let png = c.screenshot().await.map_err(|e| format!("screenshot: {e}"))?;
    std::fs::write(artifacts_dir().join("dashboard.png"), png).unwrap();

    Ok(())
}

async fn sign_in(c: &Client, token: &str) -> Result<(), String> {
    let input = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("form#login input[name=token]"))
        .await
        .map_err(|e| format!("no token field: {e}"))?;
    input.send_keys(token).await.map_err(|e| e.to_string())?;
    let button = c.find(Locator::Css("form#login button[type=submit]")).await.map_err(|e| e.to_string())?;
    button.click().await.map_err(|e| format!("submitting the login form: {e}"))?;
    Ok(())
}
