//! Persistence: locations, journeys (and the `calls` rows that show them),
//! raw events and the outbox.
//!
//! Queries are plain SQL over sqlx's `Any` driver with `$N` placeholders and
//! only integer and text columns, so the same code runs on SQLite (the
//! embedded default) and, later, PostgreSQL. SQLite runs in WAL mode with
//! `synchronous=NORMAL`: a committed row survives a crash of this process.

mod journeys;

use std::str::FromStr;
use std::time::Duration;

pub use journeys::{Audit, Delivered, Delivery, Finish, NewCall, Route, Settled};

use crate::domain::{Location, LocationSpec, Outcome};
use crate::journey::{Command, Event, Journey, Policy};
use crate::outbox::{Lane, OutboxRow, OutboxState};
use anyhow::Context as _;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::{mpsc, oneshot};

/// `SELECT … FROM calls` followed by the given clause, as a literal.
///
/// SQL is built at run time only where a statement needs as many
/// placeholders as it has rows: the batched writes ([`batch`]) and
/// [`Store::outcomes`]' `IN (…)`. Those builders write placeholders (`$N`)
/// and fixed SQL text only, never data; every value is bound.
macro_rules! select_calls {
    ($tail:literal) => {
        concat!(
            "SELECT call_sid, from_number, to_number, location, task_sid, reservation_sid, outbound_call_sid, ",
            "answered_by, recording_url, outcome, created_at_ms, updated_at_ms FROM calls ",
            $tail
        )
    };
}

/// Milliseconds since the Unix epoch, the one time format in the database.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A handle to the database; cheap to clone.
///
/// SQLite takes one writer at a time; several connections writing at once
/// wait on each other inside SQLite's busy handler, which sleeps in steps of
/// milliseconds. So reads go to `pool` and every write to `writer`, a pool
/// of one connection, where writers queue in order without sleeping. WAL
/// mode lets the reads run beside the write. The frequent writes
/// (`reservation.created`, the dispatcher's results) go through `batcher`, a
/// task that writes whatever has queued in one transaction (see [`batch`]).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    writer: AnyPool,
    batcher: mpsc::Sender<batch::Op>,
}

/// One inbound call as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRecord {
    pub call_sid: String,
    pub from_number: String,
    pub to_number: String,
    pub location: Option<String>,
    pub task_sid: Option<String>,
    pub reservation_sid: Option<String>,
    pub outbound_call_sid: Option<String>,
    pub answered_by: Option<String>,
    pub recording_url: Option<String>,
    pub outcome: Outcome,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One status callback of an outbound leg.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusRecord {
    pub call_sid: String,
    pub inbound_call_sid: Option<String>,
    pub status: String,
    pub sequence_number: Option<i64>,
    pub call_duration: Option<i64>,
    pub answered_by: Option<String>,
    pub sip_response_code: Option<i64>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let url = sqlite_url_with_create(url);
        let is_memory = url.contains(":memory:");
        let options = |max: u32| {
            // No ping before each acquire: a SQLite connection is a file
            // handle that cannot go stale, and the ping is a round trip to
            // its worker thread on every query. (Worth turning back on for a
            // network database.)
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                .test_before_acquire(false)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        // Checkpoints run on their own (see `checkpoints`),
                        // not inside whichever COMMIT crosses the threshold,
                        // where their fsyncs stalled every queued write.
                        conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                        Ok(())
                    })
                })
        };
        let open = |max: u32| {
            let url = url.clone();
            async move { options(max).connect(&url).await.with_context(|| format!("opening database {}", redact_url(&url))) }
        };
        // The writer opens (and so creates) the file before the readers do.
        let writer = open(1).await?;
        // An in-memory SQLite database exists per connection, so readers and
        // the writer must share the one connection there.
        let pool = if is_memory { writer.clone() } else { open(4).await? };
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.context("migrating the database")?;
        let (batcher, queue) = mpsc::channel(batch::QUEUE);
        // A delivery reads its journey, then writes it. On SQLite the write
        // lock is taken up front (BEGIN IMMEDIATE), so a second process on the
        // same file (a rolling restart) waits its turn in the busy handler
        // rather than failing with SQLITE_BUSY when it upgrades from a read.
        let begin = if url.starts_with("sqlite:") { "BEGIN IMMEDIATE" } else { "BEGIN" };
        tokio::spawn(batch::run(writer.clone(), queue, begin));
        if url.starts_with("sqlite:") && !is_memory {
            tokio::spawn(checkpoints(pool.clone(), batcher.downgrade()));
        }
        Ok(Store { pool, writer, batcher })
    }

    /// Hands one write to the batcher and waits for its answer, which comes
    /// after the batch's COMMIT.
    async fn batched<T>(&self, op: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> batch::Op) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        let stopped = || anyhow::anyhow!("the database writer has stopped");
        self.batcher.send(op(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // -- locations ---------------------------------------------------------

    /// Inserts or replaces a location. The spec must already be checked.
    pub async fn upsert_location(&self, spec: &LocationSpec) -> anyhow::Result<()> {
        let loc = Location::from_spec(spec.clone()).context("storing an unchecked location")?;
        let json = serde_json::to_string(spec)?;
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO locations (name, spec_json, updated_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&loc.name)
        .bind(&json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM location_numbers WHERE location = $1").bind(&loc.name).execute(&mut *tx).await?;
        for n in &loc.numbers {
            sqlx::query("INSERT INTO location_numbers (number, location) VALUES ($1, $2)")
                .bind(n.as_str())
                .bind(&loc.name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a location; false when there was none of that name.
    pub async fn remove_location(&self, name: &str) -> anyhow::Result<bool> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM location_numbers WHERE location = $1").bind(name).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM locations WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn location_specs(&self) -> anyhow::Result<Vec<LocationSpec>> {
        let rows = sqlx::query("SELECT spec_json FROM locations ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?)).collect()
    }

    pub async fn locations(&self) -> anyhow::Result<Vec<Location>> {
        self.location_specs().await?.into_iter().map(stored_location).collect()
    }

    pub async fn location(&self, name: &str) -> anyhow::Result<Option<Location>> {
        let row = sqlx::query("SELECT spec_json FROM locations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| stored_location(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?)).transpose()
    }

    /// The locations a Twilio number serves, ordered by menu digit.
    pub async fn locations_for_number(&self, number: &str) -> anyhow::Result<Vec<Location>> {
        let rows = sqlx::query(
            "SELECT l.spec_json FROM locations l JOIN location_numbers n ON n.location = l.name
             WHERE n.number = $1 ORDER BY l.name",
        )
        .bind(number)
        .fetch_all(&self.pool)
        .await?;
        let mut locs = rows
            .iter()
            .map(|r| stored_location(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?))
            .collect::<anyhow::Result<Vec<_>>>()?;
        locs.sort_by_key(|l| (l.digit, l.name.clone()));
        Ok(locs)
    }

    // -- Twilio resource SIDs ---------------------------------------------

    pub async fn set_resource(&self, kind: &str, key: &str, sid: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO twilio_resources (kind, key, sid, updated_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, key) DO UPDATE SET sid = excluded.sid, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(kind)
        .bind(key)
        .bind(sid)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn resource(&self, kind: &str, key: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT sid FROM twilio_resources WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("sid")).transpose()?)
    }

    pub async fn remove_resource(&self, kind: &str, key: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM twilio_resources WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Every stored resource as (kind, key, sid).
    pub async fn resources(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let rows =
            sqlx::query("SELECT kind, key, sid FROM twilio_resources ORDER BY kind, key").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("key")?, r.try_get("sid")?))).collect()
    }

    // -- journeys, calls and events ------------------------------------------

    /// Delivers events to their journey and writes what it owes, with
    /// whatever else is queued for the writer (group commit); answered after
    /// the COMMIT. See [`journeys`].
    pub async fn deliver(&self, delivery: Delivery) -> anyhow::Result<Delivered> {
        self.batched(|reply| batch::Op::Deliver(Box::new(delivery), reply)).await
    }

    /// Journeys whose wake-up time has come.
    pub async fn due_journeys(&self, now_ms: i64, limit: i64) -> anyhow::Result<Vec<i64>> {
        journeys::due(&self.pool, now_ms, limit).await
    }

    /// How many journeys owe a command the dispatcher gave up on.
    pub async fn degraded_journeys(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM journeys WHERE degraded = 1").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// The outbox's commands not yet carried out (pending, also waiting out a
    /// back-off, or being sent), by kind: (kind, how many, the oldest's
    /// `created_at_ms`). For the metrics.
    pub async fn outbox_backlog(&self) -> anyhow::Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) AS n, MIN(created_at_ms) AS oldest FROM outbox WHERE state IN ($1, $2)
             GROUP BY kind",
        )
        .bind(OutboxState::Pending.as_str())
        .bind(OutboxState::Sending.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("n")?, r.try_get("oldest")?))).collect()
    }

    /// The names of the locations, in order (without parsing their specs).
    pub async fn location_names(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM locations ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Callers waiting in the queue and callers bridged, by location, among at
    /// most `limit` open journeys: (location, waiting, bridged). Counted by
    /// the database from the journeys' generated `location` and
    /// `caller_state` columns, so no journey is loaded. For the metrics.
    pub async fn live_callers(&self, limit: i64) -> anyhow::Result<Vec<(String, i64, i64)>> {
        // A caller state as `state_json` spells it.
        let name = |state: crate::journey::CallerState| match serde_json::to_value(state) {
            Ok(serde_json::Value::String(s)) => Ok(s),
            other => Err(anyhow::anyhow!("caller state {state:?} does not serialise as a string: {other:?}")),
        };
        let rows = sqlx::query(
            "SELECT location,
                    SUM(CASE WHEN caller_state = $1 THEN 1 ELSE 0 END) AS waiting,
                    SUM(CASE WHEN caller_state = $2 THEN 1 ELSE 0 END) AS bridged
             FROM (SELECT location, caller_state FROM journeys WHERE closed = 0 LIMIT $3) AS open
             WHERE location IS NOT NULL AND caller_state IN ($1, $2)
             GROUP BY location",
        )
        .bind(name(crate::journey::CallerState::Queued)?)
        .bind(name(crate::journey::CallerState::Bridged)?)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("location")?, r.try_get("waiting")?, r.try_get("bridged")?))).collect()
    }

    /// Every Twilio number that serves a location.
    pub async fn numbers(&self) -> anyhow::Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT DISTINCT number FROM location_numbers ORDER BY number").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("number")?)).collect()
    }

    /// Open journeys nothing has touched since `before_ms`, oldest first: the
    /// reconciler asks Twilio about them.
    pub async fn stale_journeys(&self, before_ms: i64, limit: i64) -> anyhow::Result<Vec<(i64, Journey)>> {
        let rows = sqlx::query(
            "SELECT id, state_json FROM journeys WHERE closed = 0 AND updated_at_ms < $1 ORDER BY updated_at_ms
             LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let json: String = r.try_get("state_json")?;
                Ok((id, serde_json::from_str(&json).with_context(|| format!("journey {id} does not parse"))?))
            })
            .collect()
    }

    /// Which of these SIDs some journey is known by.
    pub async fn known_sids(&self, sids: &[String]) -> anyhow::Result<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        for sid in sids {
            let row =
                sqlx::query("SELECT sid FROM journey_keys WHERE sid = $1").bind(sid).fetch_optional(&self.pool).await?;
            if row.is_some() {
                known.insert(sid.clone());
            }
        }
        Ok(known)
    }

    /// A journey's state, as JSON (for inspection and tests).
    pub async fn journey_json(&self, sid: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query(
            "SELECT j.state_json FROM journeys j JOIN journey_keys k ON k.journey_id = j.id WHERE k.sid = $1",
        )
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get("state_json")?)).transpose()
    }

    pub async fn set_recording(&self, call_sid: &str, url: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE calls SET recording_url = $2, updated_at_ms = $3 WHERE call_sid = $1")
            .bind(call_sid)
            .bind(url)
            .bind(now_ms())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Keeps a webhook that concerns no journey, for audit.
    pub async fn record_event(
        &self,
        source: &'static str,
        event_type: &str,
        resource_sid: Option<&str>,
        payload: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.writer.begin().await?;
        insert_event(&mut tx, source, event_type, resource_sid, payload, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn statuses(&self, call_sid: &str) -> anyhow::Result<Vec<StatusRecord>> {
        let rows = sqlx::query(
            "SELECT call_sid, inbound_call_sid, status, sequence_number, call_duration, answered_by, sip_response_code
             FROM call_statuses WHERE call_sid = $1 ORDER BY id",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StatusRecord {
                    call_sid: r.try_get("call_sid")?,
                    inbound_call_sid: r.try_get("inbound_call_sid")?,
                    status: r.try_get("status")?,
                    sequence_number: r.try_get("sequence_number")?,
                    call_duration: r.try_get("call_duration")?,
                    answered_by: r.try_get("answered_by")?,
                    sip_response_code: r.try_get("sip_response_code")?,
                })
            })
            .collect()
    }

    pub async fn call(&self, call_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        let row = sqlx::query(select_calls!("WHERE call_sid = $1")).bind(call_sid).fetch_optional(&self.pool).await?;
        row.map(|r| call_record(&r)).transpose()
    }

    pub async fn calls(&self) -> anyhow::Result<Vec<CallRecord>> {
        let rows = sqlx::query(select_calls!("ORDER BY created_at_ms, call_sid")).fetch_all(&self.pool).await?;
        rows.iter().map(call_record).collect()
    }

    pub async fn event_count(&self, event_type: &str) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    // -- outbox ---------------------------------------------------------------

    /// Queues one command outside any journey (tests, tools); false when one
    /// with its key exists already.
    pub async fn enqueue_command(&self, command: &Command) -> anyhow::Result<bool> {
        let mut tx = self.writer.begin().await?;
        let inserted = journeys::insert_command(&mut tx, command, None, now_ms()).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Claims up to `limit` pending commands of `lane` whose time has come,
    /// marking them `sending`, oldest first. Through the batcher: the claim
    /// shares a transaction (one commit) with the writes queued beside it,
    /// and sees the commands they queued.
    pub async fn claim(&self, lane: Lane, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        self.batched(|reply| batch::Op::Claim(lane, limit, reply)).await
    }

    /// Records how a command ended, or when to send it again (batched).
    pub async fn finish(&self, finish: Finish) -> anyhow::Result<()> {
        self.batched(|reply| batch::Op::Finish(finish, reply)).await
    }

    /// After a crash: commands that were being sent are either safe to send
    /// again (updates are idempotent) or not (creating a call). The first go
    /// back to pending; the second are marked `unknown` and their journey
    /// hears `DialUnknown`, so it looks the call up instead of re-sending it.
    /// Returns (requeued, unknown).
    pub async fn recover_actions(&self, policy: Policy) -> anyhow::Result<(u64, u64)> {
        let rows = sqlx::query("SELECT id, payload, journey_id FROM outbox WHERE state = $1")
            .bind(OutboxState::Sending.as_str())
            .fetch_all(&self.pool)
            .await?;
        let (mut requeued, mut unknown) = (0, 0);
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let journey: Option<i64> = r.try_get("journey_id")?;
            let command: Command = serde_json::from_str(&r.try_get::<String, _>("payload")?)
                .with_context(|| format!("outbox row {id} payload"))?;
            let error = Some("interrupted by a restart".to_owned());
            let finish = |state| Finish { id, state, result: None, error: error.clone(), not_before_ms: 0 };
            match (&command, journey) {
                (Command::Dial { reservation, attempt, .. }, Some(journey)) => {
                    unknown += 1;
                    let event = Event::DialUnknown { reservation: reservation.clone(), attempt: *attempt };
                    let mut d = Delivery::new(Route::Id(journey), vec![event], policy);
                    d.finish = Some(finish(OutboxState::Unknown));
                    self.deliver(d).await?;
                }
                (Command::Dial { .. }, None) => {
                    unknown += 1;
                    self.finish(finish(OutboxState::Unknown)).await?;
                }
                _ => {
                    requeued += 1;
                    self.finish(finish(OutboxState::Pending)).await?;
                }
            }
        }
        Ok((requeued, unknown))
    }

    /// Every command with its state (for tests and inspection).
    pub async fn actions(&self) -> anyhow::Result<Vec<(String, OutboxState, Option<String>)>> {
        let rows =
            sqlx::query("SELECT dedupe_key, state, last_error FROM outbox ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((r.try_get("dedupe_key")?, OutboxState::from_str(&state)?, r.try_get("last_error")?))
            })
            .collect()
    }
}

/// Copies the WAL back into the database file every so often, on a reader
/// connection: a PASSIVE checkpoint runs beside the writer's commits instead
/// of inside one (SQLite's automatic checkpoint, turned off in `connect`,
/// made the COMMIT that crossed 1000 pages wait for two fsyncs, ~5 ms, and
/// every webhook queued behind it). Stops when the store is dropped.
async fn checkpoints(pool: AnyPool, alive: mpsc::WeakSender<batch::Op>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() || pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
        }
    }
}

/// How often the WAL is checkpointed: at 5,000 reservations/s it grows
/// by ~1 MB in this time.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

fn call_record(r: &AnyRow) -> anyhow::Result<CallRecord> {
    let outcome: String = r.try_get("outcome")?;
    Ok(CallRecord {
        call_sid: r.try_get("call_sid")?,
        from_number: r.try_get("from_number")?,
        to_number: r.try_get("to_number")?,
        location: r.try_get("location")?,
        task_sid: r.try_get("task_sid")?,
        reservation_sid: r.try_get("reservation_sid")?,
        outbound_call_sid: r.try_get("outbound_call_sid")?,
        answered_by: r.try_get("answered_by")?,
        recording_url: r.try_get("recording_url")?,
        outcome: Outcome::parse(&outcome).with_context(|| format!("unknown outcome {outcome:?} in calls"))?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    source: &str,
    event_type: &str,
    resource_sid: Option<&str>,
    payload: &str,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO events (source, event_type, resource_sid, payload, received_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(source)
    .bind(event_type)
    .bind(resource_sid)
    .bind(payload)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_status(tx: &mut sqlx::Transaction<'_, sqlx::Any>, s: &StatusRecord, now: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO call_statuses (call_sid, inbound_call_sid, status, sequence_number, call_duration,
             answered_by, sip_response_code, received_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&s.call_sid)
    .bind(&s.inbound_call_sid)
    .bind(&s.status)
    .bind(s.sequence_number)
    .bind(s.call_duration)
    .bind(&s.answered_by)
    .bind(s.sip_response_code)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rebuilds a stored location. It was fully checked when stored; the
/// numbering-plan check is not repeated on this hot path.
fn stored_location(spec: LocationSpec) -> anyhow::Result<Location> {
    Location::from_stored(spec).context("a stored location no longer parses")
}

/// Adds `mode=rwc` to a SQLite file URL so a missing file is created.
fn sqlite_url_with_create(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains(":memory:") && !url.contains("mode=") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

/// The file behind a `sqlite:` URL (`sqlite://call-router.db`, `sqlite:///var/db/x.db?mode=rwc`),
/// or None for another database or an in-memory one.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| std::path::PathBuf::from(path))
}

/// A database URL with any password removed, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Group commit for the frequent writes: every journey delivery and the
/// dispatcher's claims and results.
///
/// One task owns the writes that go through it. It takes the first queued
/// request, waits for the writer connection, then drains whatever else has
/// queued meanwhile (up to [`MAX_BATCH`]) and writes them all, in order, in
/// one transaction: one COMMIT (and one fsync) per batch instead of one per
/// request. Each caller is answered only after COMMIT, so durability before
/// the webhook's answer is unchanged; if anything in the batch fails, the
/// transaction rolls back and each request is written again alone, so one
/// bad write fails only its own caller.
mod batch {
    use anyhow::Context as _;
    use sqlx::{AnyConnection, AnyPool, Connection as _};
    use tokio::sync::{mpsc, oneshot};

    use super::journeys::{self, Delivered, Delivery, Finish};
    use super::now_ms;
    use crate::outbox::{Lane, OutboxRow};

    /// The most requests written in one transaction: small enough that one
    /// slow batch does not hold the writer for long.
    pub(super) const MAX_BATCH: usize = 256;

    /// How many requests may wait for the writer task before callers wait to
    /// queue (back-pressure rather than unbounded memory).
    pub(super) const QUEUE: usize = MAX_BATCH * 8;

    pub(super) enum Op {
        Deliver(Box<Delivery>, oneshot::Sender<anyhow::Result<Delivered>>),
        Finish(Finish, oneshot::Sender<anyhow::Result<()>>),
        /// Claims up to this many pending commands of the lane.
        Claim(Lane, i64, oneshot::Sender<anyhow::Result<Vec<OutboxRow>>>),
    }

    enum Reply {
        Delivered(Delivered),
        Finished,
        Claimed(Vec<OutboxRow>),
    }

    impl Op {
        fn fail(self, message: &str) {
            let e = || anyhow::anyhow!("{message}");
            // A caller that went away no longer needs its answer.
            match self {
                Op::Deliver(_, reply) => drop(reply.send(Err(e()))),
                Op::Finish(_, reply) => drop(reply.send(Err(e()))),
                Op::Claim(_, _, reply) => drop(reply.send(Err(e()))),
            }
        }

        fn answer(self, reply: Reply) {
            match (self, reply) {
                (Op::Deliver(_, tx), Reply::Delivered(d)) => {
                    // Counted here, after the COMMIT and whether or not the caller still
                    // waits: a batch written again answers only with the second writing.
                    if let Some(s) = &d.settled {
                        crate::stats::call_settled(s.outcome, s.location.as_deref());
                    }
                    drop(tx.send(Ok(d)))
                }
                (Op::Finish(_, tx), Reply::Finished) => drop(tx.send(Ok(()))),
                (Op::Claim(_, _, tx), Reply::Claimed(rows)) => drop(tx.send(Ok(rows))),
                (op, _) => op.fail("internal error: a write got another write's answer"),
            }
        }
    }

    /// Runs until every sender (every `Store` clone) is gone.
    pub(super) async fn run(writer: AnyPool, mut rx: mpsc::Receiver<Op>, begin: &'static str) {
        let mut stats = Stats::default();
        while let Some(first) = rx.recv().await {
            // Wait for the connection before draining, so that what queues
            // behind another write joins this batch.
            let conn = writer.acquire().await;
            let mut ops = vec![first];
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    let message = format!("no database connection for a batch of {} writes: {e}", ops.len());
                    ops.into_iter().for_each(|op| op.fail(&message));
                    continue;
                }
            };
            let started = std::time::Instant::now();
            let written = write(&mut conn, &ops, begin).await;
            stats.add(ops.len(), started.elapsed());
            match written {
                Ok(replies) => ops.into_iter().zip(replies).for_each(|(op, r)| op.answer(r)),
                // The batch was rolled back whole, so nothing of it is kept: write each request
                // alone, so that one bad write fails only its own webhook, not its neighbours'.
                Err(e) if ops.len() > 1 => {
                    tracing::warn!(error = ?e, writes = ops.len(), "a batch of writes failed; writing each alone");
                    for op in ops {
                        match write(&mut conn, std::slice::from_ref(&op), begin).await {
                            Ok(mut replies) => match replies.pop() {
                                Some(r) => op.answer(r),
                                None => op.fail("internal error: no answer"),
                            },
                            Err(e) => {
                                tracing::error!(error = ?e, "a write failed");
                                op.fail(&format!("{e:#}"));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = ?e, "a write failed");
                    let message = format!("{e:#}");
                    ops.into_iter().for_each(|op| op.fail(&message));
                }
            }
        }
    }

    /// Batch sizes and times, logged at debug level once a second.
    #[derive(Default)]
    struct Stats {
        since: Option<std::time::Instant>,
        batches: u64,
        writes: u64,
        busy: std::time::Duration,
        longest: std::time::Duration,
    }

    impl Stats {
        fn add(&mut self, writes: usize, took: std::time::Duration) {
            if !tracing::enabled!(tracing::Level::DEBUG) {
                return;
            }
            let since = *self.since.get_or_insert_with(std::time::Instant::now);
            self.batches += 1;
            self.writes += writes as u64;
            self.busy += took;
            self.longest = self.longest.max(took);
            if since.elapsed() >= std::time::Duration::from_secs(1) {
                tracing::debug!(
                    batches = self.batches,
                    writes = self.writes,
                    mean_writes = self.writes as f64 / self.batches as f64,
                    mean_ms = self.busy.as_secs_f64() * 1e3 / self.batches as f64,
                    longest_ms = self.longest.as_secs_f64() * 1e3,
                    busy = self.busy.as_secs_f64() / since.elapsed().as_secs_f64(),
                    "database writer"
                );
                *self = Stats::default();
            }
        }
    }

    /// Writes one batch in one transaction, in order; nothing of it is kept
    /// on error.
    async fn write(conn: &mut AnyConnection, ops: &[Op], begin: &'static str) -> anyhow::Result<Vec<Reply>> {
        let now = now_ms();
        let mut tx = conn.begin_with(begin).await?;
        let mut replies = Vec::with_capacity(ops.len());
        for op in ops {
            replies.push(match op {
                Op::Deliver(d, _) => {
                    Reply::Delivered(journeys::deliver_in(&mut tx, d, now).await.context("delivering an event")?)
                }
                Op::Finish(f, _) => {
                    journeys::finish_in(&mut tx, f, now).await.context("recording a command's result")?;
                    Reply::Finished
                }
                Op::Claim(lane, limit, _) => {
                    Reply::Claimed(journeys::claim(&mut tx, *lane, *limit, now).await.context("claiming commands")?)
                }
            });
        }
        tx.commit().await.context("committing a batch of writes")?;
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::config::AnsweredByPolicy;
    use crate::journey::{DialTarget, ReservationEnd};
    use twilio::E164;

    #[test]
    fn sqlite_paths() {
        use std::path::PathBuf;
        assert_eq!(sqlite_path("sqlite://call-router.db"), Some(PathBuf::from("call-router.db")));
        assert_eq!(sqlite_path("sqlite:call-router.db"), Some(PathBuf::from("call-router.db")));
        assert_eq!(sqlite_path("sqlite:///var/db/x.db?mode=rwc"), Some(PathBuf::from("/var/db/x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://u:p@h/db"), None);
    }

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    const POLICY: Policy = Policy {
        max_queue_secs: 300,
        on_machine: AnsweredByPolicy::Hangup,
        on_unknown: AnsweredByPolicy::Bridge,
        max_dial_attempts: 3,
    };

    /// A SID of `prefix` numbered `n`.
    fn sid<T: std::str::FromStr>(prefix: &str, n: usize) -> T
    where
        T::Err: std::fmt::Debug,
    {
        format!("{prefix}{n:032x}").parse().unwrap()
    }

    fn created(call: usize, res: usize) -> Delivery {
        let (task, reservation): (twilio::sid::TaskSid, twilio::sid::ReservationSid) =
            (sid("WT", call), sid("WR", res));
        let caller: twilio::sid::CallSid = sid("CA", call);
        let keys = vec![reservation.to_string(), task.to_string(), caller.to_string()];
        let target = DialTarget {
            location: "north".into(),
            to: E164::parse("+14155550123").unwrap(),
            from: E164::parse("+14155550100").unwrap(),
            call_token: None,
        };
        let event = Event::ReservationCreated { task, reservation, caller: Some(caller), target };
        Delivery::to_keys(keys, vec![event], POLICY).with_audit("taskrouter", "reservation.created", None, "{}".into())
    }

    fn arrived(call: usize) -> Delivery {
        let caller: twilio::sid::CallSid = sid("CA", call);
        let events =
            vec![Event::CallerArrived { call: caller.clone() }, Event::CallerEnqueued { location: "north".into() }];
        let mut d = Delivery::to_keys([caller.to_string()], events, POLICY);
        d.caller = Some(NewCall { from: "+14155550100".into(), to: "+14155550999".into() });
        d
    }

    fn dials(actions: &[(String, OutboxState, Option<String>)]) -> Vec<(&str, OutboxState)> {
        actions.iter().filter(|(k, _, _)| k.starts_with("dial:")).map(|(k, s, _)| (k.as_str(), *s)).collect()
    }

    #[tokio::test]
    async fn a_reservation_queues_one_dial_however_often_it_arrives() {
        let (s, _d) = store().await;
        s.deliver(arrived(1)).await.unwrap();
        let first = s.deliver(created(1, 1)).await.unwrap();
        assert_eq!(first.queued, 1);
        let again = s.deliver(created(1, 1)).await.unwrap();
        assert_eq!((again.queued, again.journey), (0, first.journey), "the same journey, nothing new owed");
        assert_eq!(
            dials(&s.actions().await.unwrap()),
            [(format!("dial:{}", sid::<twilio::sid::ReservationSid>("WR", 1)).as_str(), OutboxState::Pending)]
        );
        let call = s.call(sid::<twilio::sid::CallSid>("CA", 1).as_str()).await.unwrap().unwrap();
        assert_eq!(call.task_sid, Some(sid::<twilio::sid::TaskSid>("WT", 1).to_string()));
        assert_eq!((call.from_number.as_str(), call.location.as_deref()), ("+14155550100", Some("north")));
        assert_eq!(s.event_count("reservation.created").await.unwrap(), 2, "every delivery is audited");
    }

    #[tokio::test]
    async fn a_journey_begins_at_any_event_and_keeps_one_row_per_caller() {
        let (s, _d) = store().await;
        // A Studio flow enqueued the caller: no /incoming-call came first.
        let d = s.deliver(created(2, 2)).await.unwrap();
        assert_eq!(d.queued, 1);
        let d2 = s.deliver(arrived(2)).await.unwrap();
        assert_eq!(d2.journey, d.journey, "found by the caller's SID");
        let calls = s.calls().await.unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].from_number, "+14155550100", "filled in when the caller's webhook came");
    }

    #[tokio::test]
    async fn a_dial_still_in_the_outbox_is_withdrawn_when_its_reservation_ends() {
        let (s, _d) = store().await;
        s.deliver(arrived(3)).await.unwrap();
        s.deliver(created(3, 3)).await.unwrap();
        let (task, reservation) = (sid("WT", 3), sid::<twilio::sid::ReservationSid>("WR", 3));
        let ended = Event::ReservationEnded { task, reservation: reservation.clone(), why: ReservationEnd::Timeout };
        let d = s.deliver(Delivery::to_keys([reservation.to_string()], vec![ended], POLICY)).await.unwrap();
        assert_eq!(d.queued, 0, "nothing new: the dial is withdrawn, not re-sent");
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| k.starts_with("dial:")).unwrap();
        assert_eq!(*state, OutboxState::Done);
        assert!(why.as_deref().unwrap().starts_with("withdrawn"), "{why:?}");
        assert!(s.claim(Lane::Dial, 10).await.unwrap().is_empty());
        let json = s.journey_json(reservation.as_str()).await.unwrap().unwrap();
        assert!(json.contains("not_placed"), "the journey knows the attempt made no call: {json}");
    }

    #[tokio::test]
    async fn an_interrupted_dial_is_never_resent_but_an_update_is() {
        let (s, _d) = store().await;
        s.deliver(arrived(4)).await.unwrap();
        s.deliver(created(4, 4)).await.unwrap();
        let hang_up = Command::HangUp { leg: sid("CA", 99), round: 1 };
        s.enqueue_command(&hang_up).await.unwrap();
        assert_eq!(s.claim(Lane::Dial, 10).await.unwrap().len(), 1);
        assert_eq!(s.claim(Lane::Other, 10).await.unwrap().len(), 1);
        assert_eq!(s.recover_actions(POLICY).await.unwrap(), (1, 1));
        let actions = s.actions().await.unwrap();
        assert!(actions.iter().any(|(k, st, _)| k.starts_with("dial:") && *st == OutboxState::Unknown), "{actions:?}");
        assert!(actions.iter().any(|(k, st, _)| k.starts_with("hang-up:") && *st == OutboxState::Pending));
        let json = s.journey_json(sid::<twilio::sid::CallSid>("CA", 4).as_str()).await.unwrap().unwrap();
        assert!(json.contains("\"unknown\""), "the journey looks the call up instead: {json}");
        assert_eq!(s.due_journeys(now_ms() + 60_000, 10).await.unwrap().len(), 1, "it wants a tick for the lookup");
    }

    #[tokio::test]
    async fn a_retry_waits_in_the_outbox_not_in_a_slot_and_lanes_are_separate() {
        let (s, _d) = store().await;
        s.enqueue_command(&Command::HangUp { leg: sid("CA", 5), round: 1 }).await.unwrap();
        let rows = s.claim(Lane::Other, 10).await.unwrap();
        let later = now_ms() + 60_000;
        let retry = Finish {
            id: rows[0].id,
            state: OutboxState::Pending,
            result: None,
            error: Some("500".into()),
            not_before_ms: later,
        };
        s.finish(retry).await.unwrap();
        assert!(s.claim(Lane::Other, 10).await.unwrap().is_empty(), "not before its time");
        sqlx::query("UPDATE outbox SET not_before_ms = 0").execute(&s.writer).await.unwrap();
        assert!(s.claim(Lane::Dial, 10).await.unwrap().is_empty(), "a hang-up is not in the dial lane");
        let again = s.claim(Lane::Other, 10).await.unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));
    }

    #[tokio::test]
    async fn a_failed_batch_is_written_again_one_by_one_so_only_the_bad_write_fails() {
        let (s, _d) = store().await;
        // One poisoned event makes its whole transaction fail.
        sqlx::query(
            "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.payload = 'boom'
             BEGIN SELECT RAISE(ABORT, 'boom'); END",
        )
        .execute(&s.writer)
        .await
        .unwrap();
        // Hold the writer connection so that every request queues into one batch.
        let held = s.writer.acquire().await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let s = s.clone();
            tasks.spawn(async move {
                let mut d = created(100 + i, 100 + i);
                if i == 7 {
                    d.audit.as_mut().unwrap().payload = "boom".into();
                }
                s.deliver(d).await
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
        let (mut errors, mut queued) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(d) => queued += d.queued,
                Err(e) => {
                    assert!(format!("{e:#}").contains("boom"), "{e:#}");
                    errors += 1;
                }
            }
        }
        assert_eq!((errors, queued), (1, 19), "only the poisoned write fails");
        let actions = s.actions().await.unwrap();
        assert_eq!(actions.len(), 19, "{actions:?}");
        let poisoned = format!("dial:{}", sid::<twilio::sid::ReservationSid>("WR", 107));
        assert!(!actions.iter().any(|(k, _, _)| *k == poisoned), "nothing of the failed write was kept");
        assert_eq!(s.event_count("reservation.created").await.unwrap(), 19);
        assert_eq!(s.calls().await.unwrap().len(), 19);
        // The writer carries on with the next batch.
        assert_eq!(s.deliver(created(200, 200)).await.unwrap().queued, 1);
    }

    #[tokio::test]
    async fn a_closed_database_is_an_error_for_every_caller() {
        let (s, _d) = store().await;
        s.writer.close().await;
        let (a, b) = tokio::join!(s.deliver(created(1, 1)), s.deliver(created(2, 2)));
        assert!(a.is_err() && b.is_err());
    }

    #[tokio::test]
    async fn concurrent_claims_hand_out_each_pending_action_once() {
        let (s, _d) = store().await;
        for i in 0..100 {
            s.enqueue_command(&Command::HangUp { leg: sid("CA", i), round: 1 }).await.unwrap();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let rows = s.claim(Lane::Other, 7).await.unwrap();
                    if rows.is_empty() {
                        return mine;
                    }
                    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
                    assert!(rows.iter().all(|r| r.attempts == 1));
                    mine.extend(rows.into_iter().map(|r| r.key));
                }
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r.unwrap());
        }
        all.sort();
        let unique: HashSet<_> = all.iter().cloned().collect();
        assert_eq!(all.len(), 100, "no action is handed out twice");
        assert_eq!(unique.len(), 100, "every action is handed out");
        assert!(s.actions().await.unwrap().iter().all(|(_, st, _)| *st == OutboxState::Sending));
    }

    #[tokio::test]
    async fn an_in_memory_database_works_through_the_batcher() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        s.deliver(arrived(1)).await.unwrap();
        assert_eq!(s.deliver(created(1, 1)).await.unwrap().queued, 1);
        assert_eq!(s.claim(Lane::Dial, 10).await.unwrap().len(), 1);
        let call = s.call(sid::<twilio::sid::CallSid>("CA", 1).as_str()).await.unwrap().unwrap();
        assert_eq!(call.task_sid, Some(sid::<twilio::sid::TaskSid>("WT", 1).to_string()));
    }

    #[test]
    fn urls() {
        assert_eq!(sqlite_url_with_create("sqlite://x.db"), "sqlite://x.db?mode=rwc");
        assert_eq!(sqlite_url_with_create("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://***@h/db");
    }
}
