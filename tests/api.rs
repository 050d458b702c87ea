//! The history API (`/api/`): off without an admin token, and behind it
//! when on. The resources' own tests sit with each resource below.

mod common;

use common::*;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub async fn spawn_api() -> TestApp {
    spawn_app_with(&format!("[admin]\ntoken = \"{ADMIN}\"")).await
}

#[tokio::test]
async fn without_a_token_the_api_is_not_served() {
    let app = spawn_app().await;
    let resp = app.client.get(format!("{}/api/openapi.json", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_names_the_bearer_scheme() {
    let app = spawn_api().await;
    let resp = app.client.get(format!("{}/api/openapi.json", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer", "{doc}");
}

#[tokio::test]
async fn a_short_admin_token_is_refused_at_load() {
    let err = call_router::config::Settings::from_toml(
        &settings_toml("http://127.0.0.1:1", "http://127.0.0.1:2", "sqlite::memory:", "[admin]\ntoken = \"short\""),
        |_| None,
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("admin.token: must be at least 16"), "{err}");
}
