//! The dashboard's routes: off without an admin token, the login form, the
//! session cookie, the embedded assets and the security headers. The page
//! itself in a browser is tests/browser.rs.

mod common;

use common::*;

const ADMIN: &str = "dashboard-admin-token-0123456789";

async fn spawn_dashboard() -> TestApp {
    spawn_app_with(&format!("[admin]\ntoken = \"{ADMIN}\"")).await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn login(app: &TestApp, token: &str) -> reqwest::Response {
    no_redirects().post(format!("{}/dashboard/login", app.url)).form(&[("token", token)]).send().await.unwrap()
}

fn csp(resp: &reqwest::Response) -> String {
    resp.headers().get("content-security-policy").expect("a CSP header").to_str().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_token_there_is_no_dashboard() {
    let app = spawn_app().await;
    let resp = app.client.get(format!("{}/dashboard", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = login(&app, "anything-at-all-0123").await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn without_a_session_the_page_is_the_login_form() {
    let app = spawn_dashboard().await;
    let resp = app.client.get(format!("{}/dashboard", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = csp(&resp);
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let body = resp.text().await.unwrap();
    assert!(body.contains(r#"action="/dashboard/login""#), "{body}");
    assert!(body.contains(r#"name="token""#), "{body}");
    assert!(!body.contains("app.js"), "the page's script is not on the login form: {body}");
    assert!(!body.contains("not the admin token"), "no error before a try: {body}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_the_form_again() {
    let app = spawn_dashboard().await;
    for wrong in ["", "dashboard-admin-token-012345678", "dashboard-admin-token-01234567890"] {
        let resp = login(&app, wrong).await;
        assert_eq!(resp.status(), 401, "{wrong:?}");
        assert!(resp.headers().get("set-cookie").is_none(), "{wrong:?}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("not the admin token") && body.contains(r#"name="token""#), "{body}");
    }
}

#[tokio::test]
async fn the_right_token_sets_a_strict_http_only_cookie_that_opens_the_page_and_the_api() {
    let app = spawn_dashboard().await;
    let resp = login(&app, ADMIN).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/dashboard");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (pair, attrs) = cookie.split_once(';').unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, call_router::api::auth::SESSION_COOKIE);
    assert_ne!(value, ADMIN, "the cookie is not the token");
    assert_eq!(value.len(), 64);
    let attrs: Vec<&str> = attrs.split(';').map(str::trim).collect();
    for want in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&want), "{want} in {cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "plain http public_url: {cookie}");

    let page = app.client.get(format!("{}/dashboard", app.url)).header("cookie", pair).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(csp(&page).contains("connect-src 'self'"));
    let body = page.text().await.unwrap();
    assert!(body.contains("/dashboard/assets/app.js") && body.contains(r#"id="board""#), "{body}");
    assert!(!body.contains(r#"action="/dashboard/login""#), "{body}");

    // The same cookie opens the API (where the page reads its data).
    let api = app.client.get(format!("{}/api/openapi.json", app.url)).header("cookie", pair).send().await.unwrap();
    assert_eq!(api.status(), 200);

    // A forged cookie does not open the page.
    let forged = format!("{name}={}", "0".repeat(64));
    let page = app.client.get(format!("{}/dashboard", app.url)).header("cookie", forged).send().await.unwrap();
    assert!(page.text().await.unwrap().contains(r#"action="/dashboard/login""#));
}

#[tokio::test]
async fn an_https_public_url_makes_the_cookie_secure() {
    let app = spawn_app_tuned(&format!("[admin]\ntoken = \"{ADMIN}\""), |s| {
        s.public_url = "https://calls.example.com".into();
    })
    .await;
    let resp = login(&app, ADMIN).await;
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");
}

#[tokio::test]
async fn logout_clears_the_cookie() {
    let app = spawn_dashboard().await;
    let resp = no_redirects().post(format!("{}/dashboard/logout", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with(&format!("{}=;", call_router::api::auth::SESSION_COOKIE)), "{cookie}");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
}

#[tokio::test]
async fn assets_are_served_with_their_content_types() {
    let app = spawn_dashboard().await;
    for (name, kind, needle) in [
        ("app.js", "text/javascript", "EventSource(\"/api/stream\")"),
        ("app.css", "text/css", "@media (max-width: 600px)"),
        ("icon.svg", "image/svg+xml", "<svg"),
    ] {
        let resp = app.client.get(format!("{}/dashboard/assets/{name}", app.url)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind), "{name}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff", "{name}");
        assert!(resp.text().await.unwrap().contains(needle), "{name}");
    }
    let resp = app.client.get(format!("{}/dashboard/assets/../Cargo.toml", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app.client.get(format!("{}/dashboard/assets/nope.js", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// The page inserts data as text only: no `innerHTML`, `outerHTML`,
/// `insertAdjacentHTML` or `document.write` anywhere in its script.
#[test]
fn the_script_never_parses_data_as_markup() {
    let js = include_str!("../src/dashboard/assets/app.js");
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
}
