//! Who may read the history: the holder of the admin token.
//!
//! Two ways to show it: `Authorization: Bearer <token>` (scripts, the API's
//! users), or the dashboard's session cookie, whose value is an HMAC of a
//! fixed label under the token, so the token itself never sits in a browser.
//! Both are compared in constant time over SHA-256 digests, so neither the
//! content nor the length of a guess leaks through timing.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::http::AppState;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "call_router_session";

const SESSION_LABEL: &[u8] = b"call-router dashboard session v1";

/// The session cookie's value for `token`: hex HMAC-SHA256 of a fixed label.
pub fn session_value(token: &SecretString) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes()).expect("HMAC takes any key length");
    mac.update(SESSION_LABEL);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` equals `expected`, in time that depends on neither.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(expected.as_bytes()));
    bool::from(a.ct_eq(&b))
}

/// Whether the request carries the token or a valid session cookie.
pub fn is_admin(headers: &HeaderMap, token: &SecretString) -> bool {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    if let Some(given) = bearer {
        return same_secret(given, token.expose_secret());
    }
    let expected = session_value(token);
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == SESSION_COOKIE && same_secret(value, &expected))
}

/// Middleware: lets the request through only with the admin token.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let allowed = state.settings().admin.token.as_ref().is_some_and(|t| is_admin(req.headers(), t));
    if !allowed {
        tracing::warn!(path = req.uri().path(), "api: refused a request without the admin token");
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn token() -> SecretString {
        SecretString::from("0123456789abcdef-token")
    }

    fn headers(name: axum::http::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        assert!(is_admin(&headers(AUTHORIZATION, "Bearer 0123456789abcdef-token"), &token()));
        assert!(!is_admin(&headers(AUTHORIZATION, "Bearer 0123456789abcdef-toke"), &token()));
        assert!(!is_admin(&headers(AUTHORIZATION, "Basic 0123456789abcdef-token"), &token()));
        assert!(!is_admin(&HeaderMap::new(), &token()));
    }

    #[test]
    fn the_session_cookie_is_not_the_token() {
        let value = session_value(&token());
        assert_ne!(value, token().expose_secret());
        assert_eq!(value.len(), 64);
        assert!(is_admin(&headers(COOKIE, &format!("a=b; {SESSION_COOKIE}={value}")), &token()));
        assert!(!is_admin(&headers(COOKIE, &format!("{SESSION_COOKIE}={}", token().expose_secret())), &token()));
        let other = session_value(&SecretString::from("another-token-of-16+"));
        assert!(!is_admin(&headers(COOKIE, &format!("{SESSION_COOKIE}={other}")), &token()));
    }
}
