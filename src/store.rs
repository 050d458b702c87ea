//! Persistence: locations, call records, raw events and the outbox.
//!
//! Queries are plain SQL over sqlx's `Any` driver with `$N` placeholders and
//! only integer and text columns, so the same code runs on SQLite (the
//! embedded default) and, later, PostgreSQL. SQLite runs in WAL mode with
//! `synchronous=NORMAL`: a committed row survives a crash of this process.

use std::str::FromStr;
use std::time::Duration;

use crate::domain::{Location, LocationSpec, Outcome};
use crate::outbox::{Action, OutboxRow, OutboxState};
use anyhow::Context as _;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

/// `SELECT … FROM calls` followed by the given clause, as a literal so that
/// no SQL is ever built at run time.
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
/// mode lets the reads run beside the write.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    writer: AnyPool,
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
            AnyPoolOptions::new().max_connections(max).acquire_timeout(Duration::from_secs(10)).after_connect(
                |conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        Ok(())
                    })
                },
            )
        };
        let open = |max: u32| {
            let url = url.clone();
            async move {
                options(max).connect(&url).await.with_context(|| format!("opening database {}", redact_url(&url)))
            }
        };
        // The writer opens (and so creates) the file before the readers do.
        let writer = open(1).await?;
        // An in-memory SQLite database exists per connection, so readers and
        // the writer must share the one connection there.
        let pool = if is_memory { writer.clone() } else { open(4).await? };
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("migrating the database")?;
        Ok(Store { pool, writer })
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
        sqlx::query("DELETE FROM location_numbers WHERE location = $1")
            .bind(&loc.name)
            .execute(&mut *tx)
            .await?;
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
        sqlx::query("DELETE FROM location_numbers WHERE location = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM locations WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn location_specs(&self) -> anyhow::Result<Vec<LocationSpec>> {
        let rows = sqlx::query("SELECT spec_json FROM locations ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?))
            .collect()
    }

    pub async fn locations(&self) -> anyhow::Result<Vec<Location>> {
        self.location_specs().await?.into_iter().map(stored_location).collect()
    }

    pub async fn location(&self, name: &str) -> anyhow::Result<Option<Location>> {
        let row = sqlx::query("SELECT spec_json FROM locations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| stored_location(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?))
            .transpose()
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
        let rows = sqlx::query("SELECT kind, key, sid FROM twilio_resources ORDER BY kind, key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("key")?, r.try_get("sid")?)))
            .collect()
    }

    // -- calls and events ---------------------------------------------------

    /// Records a new inbound call; a repeated webhook for the same call is a no-op.
    pub async fn record_inbound_call(&self, call_sid: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO calls (call_sid, from_number, to_number, outcome, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (call_sid) DO NOTHING",
        )
        .bind(call_sid)
        .bind(from)
        .bind(to)
        .bind(Outcome::Pending.as_str())
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn set_call_location(&self, call_sid: &str, location: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE calls SET location = $2, updated_at_ms = $3 WHERE call_sid = $1")
            .bind(call_sid)
            .bind(location)
            .bind(now_ms())
            .execute(&self.writer)
            .await?;
        Ok(())
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

    /// Sets a call's outcome unless it already has a final one: the first
    /// defined outcome wins, so a late or repeated event cannot rewrite it.
    /// Returns whether this call set it.
    pub async fn settle_outcome(&self, call_sid: &str, outcome: Outcome) -> anyhow::Result<bool> {
        let done =
            sqlx::query("UPDATE calls SET outcome = $2, updated_at_ms = $3 WHERE call_sid = $1 AND outcome = $4")
                .bind(call_sid)
                .bind(outcome.as_str())
                .bind(now_ms())
                .bind(Outcome::Pending.as_str())
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Settles the outcome and queues the actions it needs in one
    /// transaction, so that a crash cannot leave one without the other.
    /// Returns false (and queues nothing) when the outcome was already set.
    pub async fn settle_with_actions(
        &self,
        call_sid: &str,
        outcome: Outcome,
        actions: &[Action],
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let done =
            sqlx::query("UPDATE calls SET outcome = $2, updated_at_ms = $3 WHERE call_sid = $1 AND outcome = $4")
                .bind(call_sid)
                .bind(outcome.as_str())
                .bind(now)
                .bind(Outcome::Pending.as_str())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for a in actions {
            insert_action(&mut tx, a, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The heart of `reservation.created`: audit the event, link the call
    /// to its task and reservation, and queue the dial, all in one
    /// transaction. Returns false when this reservation was seen before, in
    /// which case nothing is queued (no location is dialled twice for one
    /// reservation).
    pub async fn record_reservation(
        &self,
        payload: &str,
        inbound_call_sid: Option<&str>,
        task_sid: &str,
        reservation_sid: &str,
        dial: &Action,
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        insert_event(
            &mut tx,
            "taskrouter",
            "reservation.created",
            Some(reservation_sid),
            payload,
            now,
        )
        .await?;
        let inserted = insert_action(&mut tx, dial, now).await?;
        if inserted {
            if let Some(call) = inbound_call_sid {
                sqlx::query(
                    "UPDATE calls SET task_sid = $2, reservation_sid = $3, updated_at_ms = $4 WHERE call_sid = $1",
                )
                .bind(call)
                .bind(task_sid)
                .bind(reservation_sid)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Audits an event and queues actions, in one transaction.
    pub async fn record_event_with_actions(
        &self,
        source: &str,
        event_type: &str,
        resource_sid: Option<&str>,
        payload: &str,
        actions: &[Action],
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        insert_event(&mut tx, source, event_type, resource_sid, payload, now).await?;
        for a in actions {
            insert_action(&mut tx, a, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn record_event(
        &self,
        source: &str,
        event_type: &str,
        resource_sid: Option<&str>,
        payload: &str,
    ) -> anyhow::Result<()> {
        self.record_event_with_actions(source, event_type, resource_sid, payload, &[])
            .await
    }

    /// Remembers which outbound leg rings the location for an inbound call.
    pub async fn link_outbound_call(&self, inbound_call_sid: &str, outbound_call_sid: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE calls SET outbound_call_sid = $2, updated_at_ms = $3 WHERE call_sid = $1")
            .bind(inbound_call_sid)
            .bind(outbound_call_sid)
            .bind(now_ms())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn record_status(&self, s: &StatusRecord) -> anyhow::Result<()> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
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
        .execute(&mut *tx)
        .await?;
        if let Some(inbound) = &s.inbound_call_sid {
            sqlx::query(
                "UPDATE calls SET outbound_call_sid = $2, answered_by = COALESCE($3, answered_by), updated_at_ms = $4
                 WHERE call_sid = $1",
            )
            .bind(inbound)
            .bind(&s.call_sid)
            .bind(&s.answered_by)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
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
        let row = sqlx::query(select_calls!("WHERE call_sid = $1"))
            .bind(call_sid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| call_record(&r)).transpose()
    }

    /// The inbound call whose task is `task_sid`.
    pub async fn call_by_task(&self, task_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        let row = sqlx::query(select_calls!("WHERE task_sid = $1"))
            .bind(task_sid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| call_record(&r)).transpose()
    }

    pub async fn calls(&self) -> anyhow::Result<Vec<CallRecord>> {
        let rows = sqlx::query(select_calls!("ORDER BY created_at_ms, call_sid"))
            .fetch_all(&self.pool)
            .await?;
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

    /// Queues one action; false when an action with its key exists already.
    pub async fn enqueue_action(&self, action: &Action) -> anyhow::Result<bool> {
        let mut tx = self.writer.begin().await?;
        let inserted = insert_action(&mut tx, action, now_ms()).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Claims up to `limit` pending actions by marking them `sending`.
    pub async fn claim_actions(&self, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        let mut tx = self.writer.begin().await?;
        let rows =
            sqlx::query("SELECT id, dedupe_key, payload, attempts FROM outbox WHERE state = $1 ORDER BY id LIMIT $2")
                .bind(OutboxState::Pending.as_str())
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get("id")?;
            sqlx::query("UPDATE outbox SET state = $2, attempts = attempts + 1, updated_at_ms = $3 WHERE id = $1")
                .bind(id)
                .bind(OutboxState::Sending.as_str())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            let payload: String = r.try_get("payload")?;
            out.push(OutboxRow {
                id,
                key: r.try_get("dedupe_key")?,
                action: serde_json::from_str(&payload).with_context(|| format!("outbox row {id} payload"))?,
                attempts: r.try_get::<i64, _>("attempts")? + 1,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records how an action ended.
    pub async fn finish_action(
        &self,
        id: i64,
        state: OutboxState,
        result: Option<&str>,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbox SET state = $2, result = $3, last_error = $4, updated_at_ms = $5 WHERE id = $1")
            .bind(id)
            .bind(state.as_str())
            .bind(result)
            .bind(error)
            .bind(now_ms())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// After a crash: actions that were being sent are either safe to send
    /// again (they are idempotent updates) or not (creating a call). The
    /// first go back to pending; the second are marked `unknown` and are
    /// never re-sent blindly. Returns (requeued, unknown).
    pub async fn recover_actions(&self) -> anyhow::Result<(u64, u64)> {
        let rows = sqlx::query("SELECT id, payload FROM outbox WHERE state = $1")
            .bind(OutboxState::Sending.as_str())
            .fetch_all(&self.pool)
            .await?;
        let (mut requeued, mut unknown) = (0, 0);
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let action: Action = serde_json::from_str(&r.try_get::<String, _>("payload")?)?;
            let state = if action.is_idempotent() {
                requeued += 1;
                OutboxState::Pending
            } else {
                unknown += 1;
                OutboxState::Unknown
            };
            self.finish_action(id, state, None, Some("interrupted by a restart"))
                .await?;
        }
        Ok((requeued, unknown))
    }

    /// Every action with its state (for tests and inspection).
    pub async fn actions(&self) -> anyhow::Result<Vec<(String, OutboxState, Option<String>)>> {
        let rows = sqlx::query("SELECT dedupe_key, state, last_error FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((
                    r.try_get("dedupe_key")?,
                    OutboxState::from_str(&state)?,
                    r.try_get("last_error")?,
                ))
            })
            .collect()
    }
}

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

async fn insert_action(tx: &mut sqlx::Transaction<'_, sqlx::Any>, action: &Action, now: i64) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO outbox (dedupe_key, kind, payload, state, attempts, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, 0, $5, $5) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(action.dedupe_key())
    .bind(action.kind())
    .bind(serde_json::to_string(action)?)
    .bind(OutboxState::Pending.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Action;
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

    fn dial(res: &str) -> Action {
        Action::Dial(crate::outbox::Dial {
            reservation_sid: res.into(),
            task_sid: "WT0123456789abcdef0123456789abcdef".into(),
            inbound_call_sid: Some("CA0123456789abcdef0123456789abcdef".into()),
            location: "north".into(),
            to: E164::parse("+14155550123").unwrap(),
            from: E164::parse("+12025550143").unwrap(),
            call_token: None,
        })
    }

    #[tokio::test]
    async fn a_reservation_queues_one_dial_however_often_it_arrives() {
        let (s, _d) = store().await;
        s.record_inbound_call("CA0123456789abcdef0123456789abcdef", "+13105550199", "+12025550143")
            .await
            .unwrap();
        let res = "WR0123456789abcdef0123456789abcdef";
        let a = dial(res);
        assert!(
            s.record_reservation("{}", Some("CA0123456789abcdef0123456789abcdef"), "WT1", res, &a)
                .await
                .unwrap()
        );
        assert!(
            !s.record_reservation("{}", Some("CA0123456789abcdef0123456789abcdef"), "WT1", res, &a)
                .await
                .unwrap()
        );
        let claimed = s.claim_actions(10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(
            s.claim_actions(10).await.unwrap().is_empty(),
            "a claimed action is not handed out twice"
        );
        assert_eq!(
            s.event_count("reservation.created").await.unwrap(),
            2,
            "both deliveries are audited"
        );
    }

    #[tokio::test]
    async fn an_interrupted_dial_is_never_resent_but_an_update_is() {
        let (s, _d) = store().await;
        s.enqueue_action(&dial("WR0123456789abcdef0123456789abcdef"))
            .await
            .unwrap();
        s.enqueue_action(&Action::CompleteTask {
            task_sid: "WT1".into(),
            reason: "done".into(),
        })
        .await
        .unwrap();
        assert_eq!(s.claim_actions(10).await.unwrap().len(), 2);
        assert_eq!(s.recover_actions().await.unwrap(), (1, 1));
        let states: Vec<_> = s.actions().await.unwrap().into_iter().map(|(_, st, _)| st).collect();
        assert_eq!(states, [OutboxState::Unknown, OutboxState::Pending]);
    }

    #[tokio::test]
    async fn the_first_final_outcome_wins() {
        let (s, _d) = store().await;
        s.record_inbound_call("CA1", "+1", "+2").await.unwrap();
        assert!(s.settle_outcome("CA1", Outcome::Connected).await.unwrap());
        assert!(!s.settle_outcome("CA1", Outcome::CallerHungUp).await.unwrap());
        assert_eq!(s.call("CA1").await.unwrap().unwrap().outcome, Outcome::Connected);
    }

    #[test]
    fn urls() {
        assert_eq!(sqlite_url_with_create("sqlite://x.db"), "sqlite://x.db?mode=rwc");
        assert_eq!(sqlite_url_with_create("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://***@h/db");
    }
}
