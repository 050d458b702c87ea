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
pub mod voicemails;

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
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(voicemails::router())
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
    let doc = Arc::new(doc.to_json().unwrap_or_else(|_| "{}".to_owned()));
    // (axum refuses a route layer on a router with no routes yet.)
    let api = if api.has_routes() {
        api.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_admin))
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
                tracing::error!(error = %format_args!("{e:#}"), "api: request failed");
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
