//! The history API under `/api/`: authenticated JSON for the people who run
//! the phones (calls, one call's timeline, locations now, voicemails).
//!
//! Off unless an admin token is configured (`[admin] token` or
//! `CALL_ROUTER_ADMIN_TOKEN`). Every route but `/api/openapi.json` needs the
//! token, as `Authorization: Bearer <token>` or as the dashboard's session
//! cookie (see [`auth`]). The OpenAPI document is generated from the
//! handlers' annotations (utoipa), so a route cannot exist without being in it.
//!
//! Each resource is a module that returns an [`OpenApiRouter`]; [`router`]
//! merges them. Handlers read through the store and decide nothing about a
//! call's life: the API is a window, not a control.

pub mod auth;
mod calls;
mod locations;
mod stream;
pub mod voicemails;

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::http::AppState;

/// The document's fixed part; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "call-router history API", description = "Calls, timelines, locations and voicemails."),
    modifiers(&BearerScheme),
    security(("admin_token" = []))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes (all under `/api/`) and the OpenAPI document that
/// describes them. Each resource module adds its router here.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(calls::router())
        .merge(locations::router())
        .merge(stream::router())
        .merge(voicemails::router())
}

/// The generated OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// `/api/…` for the main router, or `None` (and a log line saying so) when
/// no admin token is configured.
pub fn router(state: &AppState) -> Option<axum::Router<AppState>> {
    state.settings().admin.token.as_ref()?;
    let (api, doc) = routes().split_for_parts();
    let documented: Arc<HashSet<String>> = Arc::new(doc.paths.paths.keys().cloned().collect());
    let doc = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".to_owned()));
    // (axum refuses a route layer on a router with no routes yet.)
    let api = if api.has_routes() {
        api.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_admin))
            .route_layer(axum::middleware::from_fn_with_state(documented, only_documented))
    } else {
        api
    };
    Some(api.route(
        "/api/openapi.json",
        get(move || {
            let doc = Arc::clone(&doc);
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned()) }
        }),
    ))
}

/// Refuses a route that is not in the OpenAPI document (a 500 and an error
/// log), so that a route added without its annotation fails its first test
/// instead of going undocumented.
async fn only_documented(
    axum::extract::State(documented): axum::extract::State<Arc<HashSet<String>>>,
    path: axum::extract::MatchedPath,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if documented.contains(path.as_str()) {
        return next.run(req).await;
    }
    ApiError::Internal(anyhow::anyhow!("route {} is not in the OpenAPI document: annotate it", path.as_str()))
        .into_response()
}

/// Milliseconds since the epoch as the API writes times: RFC 3339 in UTC
/// with milliseconds (`2026-11-29T20:31:07.123Z`).
pub(crate) fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => String::new(),
    }
}

/// The API boundary's error: a status and a reason, as JSON
/// (`{"error": "…"}`). Store failures are logged in full and answered
/// with an opaque 500.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the admin token is missing or wrong")]
    Unauthorized,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The body of every error the API returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Internal(e) => {
                tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "api: request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let error = match &self {
            ApiError::Internal(_) => "internal error; see the server's log".to_owned(),
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn a_route_missing_from_the_document_is_refused() {
        let documented: Arc<HashSet<String>> = Arc::new(HashSet::from(["/api/known/{sid}".to_owned()]));
        let app = axum::Router::new()
            .route("/api/known/{sid}", get(|| async { "ok" }))
            .route("/api/hidden", get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn_with_state(documented, only_documented));
        let status = |uri: &'static str| {
            let app = app.clone();
            async move { app.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap().status() }
        };
        assert_eq!(status("/api/known/CA1").await, StatusCode::OK);
        assert_eq!(status("/api/hidden").await, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn every_route_served_is_in_the_document() {
        let paths: Vec<String> = openapi().paths.paths.keys().cloned().collect();
        for p in ["/api/calls", "/api/calls/{call_sid}", "/api/locations", "/api/stream"] {
            assert!(paths.iter().any(|d| d == p), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_795_984_267_123), "2026-11-29T20:31:07.123Z");
        assert_eq!(rfc3339(1_795_984_267_000), "2026-11-29T20:31:07.000Z");
    }
}
