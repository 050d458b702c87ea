//! The dashboard: one page for the people who run the phones, served by the
//! binary itself, with its script and style embedded (no build step, no
//! CDN). It reads the history API (`/api/…`) from the browser with the
//! session cookie that its login form sets.
//!
//! Routes (only when an admin token is configured, like `/api/`):
//! - `GET /dashboard`: the page, or the login form without a valid session;
//! - `POST /dashboard/login`: form `token=…`; right → 303 to the page with
//!   the session cookie (`HttpOnly; SameSite=Strict; Path=/`, `Secure` when
//!   the public URL is https); wrong → the form again with 401;
//! - `POST /dashboard/logout`: clears the cookie;
//! - `GET /dashboard/assets/{app.js,app.css,icon.svg}`: the embedded assets.
//!
//! Every response carries a Content-Security-Policy that allows only this
//! origin (no inline script or style), so data shown on the page cannot run.

use axum::Form;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::api::auth::{SESSION_COOKIE, is_admin, same_secret, session_value};
use crate::http::AppState;

const PAGE: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// Where the login form shows its one message; empty unless the token was wrong.
const MESSAGE_SLOT: &str = "<!--message-->";
const WRONG_TOKEN: &str = r#"<p class="error" role="alert">That token is not the admin token.</p>"#;

/// Only this origin: scripts, styles, images, audio and the event stream
/// (`connect-src`). No inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `/dashboard…` for the main router, or `None` without an admin token.
pub fn router(state: &AppState) -> Option<Router<AppState>> {
    state.settings().admin.token.as_ref()?;
    Some(
        Router::new()
            .route("/dashboard", get(page))
            .route("/dashboard/login", post(login))
            .route("/dashboard/logout", post(logout))
            .route("/dashboard/assets/{name}", get(asset))
            .layer(axum::middleware::map_response(security_headers)),
    )
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn login_form(status: StatusCode, wrong: bool) -> Response {
    html(status, LOGIN.replace(MESSAGE_SLOT, if wrong { WRONG_TOKEN } else { "" }))
}

fn signed_in(state: &AppState, headers: &HeaderMap) -> bool {
    state.settings().admin.token.as_ref().is_some_and(|t| is_admin(headers, t))
}

async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers) { html(StatusCode::OK, PAGE.to_owned()) } else { login_form(StatusCode::OK, false) }
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

/// The cookie's attributes; `Secure` when the server is reached over https.
fn cookie(state: &AppState, value: &str, max_age: Option<u32>) -> String {
    let mut c = format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if state.settings().public_url.starts_with("https://") {
        c.push_str("; Secure");
    }
    c
}

fn see_other(set_cookie: String) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&set_cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let Some(token) = state.settings().admin.token.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !same_secret(form.token.trim(), token.expose_secret()) {
        tracing::warn!("dashboard: a sign-in with a wrong token");
        return login_form(StatusCode::UNAUTHORIZED, true);
    }
    see_other(cookie(&state, &session_value(token), None))
}

async fn logout(State(state): State<AppState>) -> Response {
    see_other(cookie(&state, "", Some(0)))
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Outcome;

    /// Every outcome a call can end with has a label, a place in the chart and a colour.
    #[test]
    fn every_final_outcome_is_labelled_charted_and_coloured() {
        for o in Outcome::ALL.into_iter().filter(|o| o.is_final()) {
            let name = o.as_str();
            assert!(APP_JS.contains(&format!("  {name}: \"")), "no label for {name} in app.js");
            assert!(APP_JS.contains(&format!("\"{name}\"")), "{name} is not in app.js's OUTCOMES");
            assert!(APP_CSS.contains(&format!(".o-{name} {{")), "no colour for {name} in app.css");
        }
    }
}
