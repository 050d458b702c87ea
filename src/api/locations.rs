//! `GET /api/locations`: each location now (open or not and until when,
//! callers waiting, lines in use) and today's finished calls by outcome.
//! `PUT` and `DELETE /api/locations/{name}`: add, replace or remove one, in
//! the database every instance reads its locations from on each webhook, so
//! the change holds from the next call on, with no restart.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ErrorBody, rfc3339};
use crate::domain::{Location, LocationSpec, check_unique};
use crate::hours::Status;
use crate::http::AppState;
use crate::store::LiveCallers;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_locations)).routes(routes!(put_location, delete_location))
}

/// One location now.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub(crate) struct LocationBoard {
    pub(crate) name: String,
    pub(crate) display_name: Option<String>,
    /// The location's phones (E.164), in the order they are rung.
    pub(crate) phones: Vec<String>,
    /// How several phones are rung: `in_order` or `all_at_once`.
    pub(crate) ring: String,
    /// IANA name, such as `America/New_York`.
    pub(crate) time_zone: String,
    /// Open by its hours, holidays and closures now.
    pub(crate) open: bool,
    /// When `open` next changes (RFC 3339, UTC); null when it does not
    /// within a year.
    pub(crate) next_change: Option<String>,
    /// Callers in the queue now.
    pub(crate) waiting: i64,
    /// Seconds since the longest-waiting caller was put in the queue (after
    /// the greeting and the menu); null when nobody waits.
    pub(crate) longest_wait_secs: Option<i64>,
    /// Lines the location has.
    pub(crate) lines: i64,
    /// Callers connected to the location now.
    pub(crate) lines_in_use: i64,
    /// Finished calls that started today (in the location's time zone), by outcome.
    #[schema(example = json!({"connected": 3, "after_hours": 1}))]
    pub(crate) today: BTreeMap<String, i64>,
}

/// Every location now.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub(crate) struct Board {
    pub(crate) locations: Vec<LocationBoard>,
}

/// Every location now: open or closed and until when, callers waiting,
/// lines in use, today's finished calls by outcome.
#[utoipa::path(
    get,
    path = "/api/locations",
    tag = "locations",
    responses(
        (status = 200, description = "Every location, by name", body = Board),
        (status = 401, description = "No or a wrong admin token", body = ErrorBody),
    )
)]
async fn list_locations(State(state): State<AppState>) -> Result<Json<Board>, ApiError> {
    Ok(Json(board(&state, Timestamp::now()).await?))
}

/// A location as stored after a `PUT`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Written {
    /// The location, with the fields of a `[[locations]]` table.
    #[schema(value_type = Object)]
    pub(crate) location: LocationSpec,
    /// Whether `provision` made its TaskRouter queue. A new location takes
    /// calls only once it has; a change of `lines` or `numbers` reaches
    /// Twilio only through `provision` too. Everything else (hours, phone,
    /// screening, prompts) holds from the next call on.
    pub(crate) provisioned: bool,
}

/// Adds or replaces a location. The body is the location as JSON, with the
/// fields of a config file's `[[locations]]` table (`name` may be left out);
/// it is checked as `locations add` checks it. Callers already waiting keep
/// what they were enqueued with (the location's phone, its closing time).
#[utoipa::path(
    put,
    path = "/api/locations/{name}",
    tag = "locations",
    params(("name" = String, Path, description = "The location's name")),
    request_body(content = Object, content_type = "application/json",
        description = "The location, as a `[[locations]]` table in JSON"),
    responses(
        (status = 200, description = "Stored; in effect from the next call", body = Written),
        (status = 400, description = "Not a valid location, or its name or digit clashes", body = ErrorBody),
        (status = 401, description = "No or a wrong admin token", body = ErrorBody),
    )
)]
async fn put_location(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Written>, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("location {name:?}: {why}"));
    let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(bad("the body must be a JSON object".into()));
    };
    match fields.get("name") {
        None => {
            fields.insert("name".into(), serde_json::Value::String(name.clone()));
        }
        Some(n) if n.as_str() == Some(name.as_str()) => {}
        Some(n) => return Err(bad(format!("name: {n} is not the name in the path"))),
    }
    let spec: LocationSpec = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    // The numbering-plan check loads the phone metadata on its first use: off the runtime.
    let spec = tokio::task::spawn_blocking(move || spec.validate().map(|()| spec))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| bad(e.to_string()))?;
    let store = state.store();
    let mut all: Vec<LocationSpec> = store.location_specs().await?.into_iter().filter(|s| s.name != name).collect();
    all.push(spec.clone());
    check_unique(&all).map_err(|e| ApiError::BadRequest(format!("locations: {e}")))?;
    store.upsert_location(&spec).await?;
    let provisioned = store.resource("queue", &name).await?.is_some();
    tracing::info!(location = %name, provisioned, "location stored through the API");
    state.notifier().notify();
    Ok(Json(Written { location: spec, provisioned }))
}

/// Removes a location: its numbers answer "not in service" (or their menu
/// no longer offers it) from the next call on. Its TaskRouter queue and
/// workers stay until `provision --prune`.
#[utoipa::path(
    delete,
    path = "/api/locations/{name}",
    tag = "locations",
    params(("name" = String, Path, description = "The location's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No or a wrong admin token", body = ErrorBody),
        (status = 404, description = "No location of that name", body = ErrorBody),
    )
)]
async fn delete_location(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    if !state.store().remove_location(&name).await? {
        return Err(ApiError::NotFound(format!("no location named {name:?}")));
    }
    tracing::info!(location = %name, "location removed through the API");
    state.notifier().notify();
    Ok(StatusCode::NO_CONTENT)
}

/// The board at wall time `wall`. Hours (open, next change, today) are read at
/// the business clock's time then; waits and the calls of the day are in wall time.
pub(crate) async fn board(state: &AppState, wall: Timestamp) -> Result<Board, ApiError> {
    let clock = state.clock();
    let now = clock.business(wall);
    let store = state.store();
    let locations = store.locations().await?;
    let live: HashMap<String, LiveCallers> =
        store.live_board(crate::stats::MAX_OPEN).await?.into_iter().map(|l| (l.location.clone(), l)).collect();
    let mut out = Vec::with_capacity(locations.len());
    for loc in &locations {
        let since = clock.wall_ms(start_of_day(loc, now)?);
        let today = store.outcomes_since(&loc.name, since).await?;
        out.push(location_board(loc, live.get(&loc.name), today, now, wall.as_millisecond()));
    }
    Ok(Board { locations: out })
}

fn start_of_day(loc: &Location, now: Timestamp) -> anyhow::Result<Timestamp> {
    Ok(now.in_tz(loc.schedule.time_zone_name())?.start_of_day()?.timestamp())
}

fn location_board(
    loc: &Location,
    live: Option<&LiveCallers>,
    today: Vec<(crate::domain::Outcome, i64)>,
    now: Timestamp,
    wall_ms: i64,
) -> LocationBoard {
    let (open, next_change) = match loc.schedule.status_at(now) {
        // A location that does not close within the search horizon reports
        // the horizon's end, where it is still open: no change.
        Status::Open { closes_at } => {
            let t = closes_at.timestamp();
            (true, (!loc.schedule.is_open(t)).then(|| rfc3339(t.as_millisecond())))
        }
        Status::Closed { opens_at, .. } => (false, opens_at.map(|t| rfc3339(t.timestamp().as_millisecond()))),
    };
    LocationBoard {
        name: loc.name.clone(),
        display_name: loc.spec.display_name.clone(),
        phones: loc.phones.iter().map(|p| p.as_str().to_owned()).collect(),
        ring: loc.ring.as_str().to_owned(),
        time_zone: loc.schedule.time_zone_name().to_owned(),
        open,
        next_change,
        waiting: live.map_or(0, |l| l.waiting),
        longest_wait_secs: live.and_then(|l| l.oldest_waiting_ms).map(|t| (wall_ms - t).max(0) / 1000),
        lines: i64::from(loc.lines),
        lines_in_use: live.map_or(0, |l| l.bridged),
        today: today.into_iter().map(|(o, n)| (o.as_str().to_owned(), n)).collect(),
    }
}
