//! Persistence: locations, call records, raw events and the outbox.
//!
//! Queries are plain SQL over sqlx's `Any` driver with `$N` placeholders and
//! only integer and text columns, so the same code runs on SQLite (the
//! embedded default) and, later, PostgreSQL. SQLite runs in WAL mode with
//! `synchronous=NORMAL`: a committed row survives a crash of this process.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::domain::{Location, LocationSpec, Outcome};
use crate::outbox::{Action, OutboxRow, OutboxState};
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
        tokio::spawn(batch::run(writer.clone(), queue));
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
        if !settle_in(&mut tx, call_sid, outcome, now).await? {
            return Ok(false);
        }
        for a in actions {
            insert_action(&mut tx, a, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Settles the outcome of a caller's call that will not reach the location (the caller hung
    /// up, waited too long, or left the queue), queues `actions`, and, in the same transaction,
    /// a hang-up of the location's leg when one is linked and has not ended. Reading the link
    /// inside the transaction closes the race with a dial that is being recorded right now:
    /// writes are serialised, so either this sees the link, or the dial's own write sees this
    /// outcome and hangs up (see `finish_dial`). Returns false when the call was settled before.
    pub async fn settle_and_stop_location(
        &self,
        call_sid: &str,
        outcome: Outcome,
        actions: &[Action],
    ) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        if !settle_in(&mut tx, call_sid, outcome, now).await? {
            return Ok(false);
        }
        let outbound: Option<String> = sqlx::query("SELECT outbound_call_sid FROM calls WHERE call_sid = $1")
            .bind(call_sid)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("outbound_call_sid"))
            .transpose()?
            .flatten();
        if let Some(outbound) = outbound
            && !leg_ended(&mut tx, &outbound).await?
        {
            insert_action(&mut tx, &Action::HangUpCall { call_sid: outbound }, now).await?;
        }
        for a in actions {
            insert_action(&mut tx, a, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// TaskRouter took a reservation back (timeout, cancel, rescind): a dial for it that has
    /// not gone out yet never will, and a call placed for it that has not ended is hung up.
    /// Only this reservation's own call is touched, never a later one for the same caller.
    /// Returns whether a hang-up was queued.
    pub async fn end_reservation(&self, reservation_sid: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        let key = format!("dial:{reservation_sid}");
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE outbox SET state = $2, last_error = $3, updated_at_ms = $4 WHERE dedupe_key = $1 AND state = $5",
        )
        .bind(&key)
        .bind(OutboxState::Done.as_str())
        .bind("skipped: the reservation ended before the dial went out")
        .bind(now)
        .bind(OutboxState::Pending.as_str())
        .execute(&mut *tx)
        .await?;
        let placed: Option<String> = sqlx::query("SELECT result FROM outbox WHERE dedupe_key = $1 AND state = $2")
            .bind(&key)
            .bind(OutboxState::Done.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("result"))
            .transpose()?
            .flatten();
        let mut queued = false;
        if let Some(call) = placed
            && !leg_ended(&mut tx, &call).await?
        {
            queued = insert_action(&mut tx, &Action::HangUpCall { call_sid: call }, now).await?;
        }
        tx.commit().await?;
        Ok(queued)
    }

    /// The heart of `reservation.created`: audit the event, link the call
    /// to its task and reservation, and queue the dial, all in one
    /// transaction. Returns false when this reservation was seen before, in
    /// which case nothing is queued (no location is dialled twice for one
    /// reservation). Written with whatever else is queued (group commit);
    /// answered after the COMMIT.
    pub async fn record_reservation(
        &self,
        payload: &str,
        inbound_call_sid: Option<&str>,
        task_sid: &str,
        reservation_sid: &str,
        dial: &Action,
    ) -> anyhow::Result<bool> {
        let r = batch::Reservation {
            payload: payload.to_owned(),
            inbound_call_sid: inbound_call_sid.map(str::to_owned),
            task_sid: task_sid.to_owned(),
            reservation_sid: reservation_sid.to_owned(),
            dedupe_key: dial.dedupe_key(),
            kind: dial.kind(),
            action_json: serde_json::to_string(dial)?,
            received_at_ms: now_ms(),
        };
        self.batched(|reply| batch::Op::Reservation(r, reply)).await
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
        self.record_event_with_actions(source, event_type, resource_sid, payload, &[]).await
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
        let row = sqlx::query(select_calls!("WHERE call_sid = $1")).bind(call_sid).fetch_optional(&self.pool).await?;
        row.map(|r| call_record(&r)).transpose()
    }

    /// The inbound call whose task is `task_sid`.
    pub async fn call_by_task(&self, task_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        let row = sqlx::query(select_calls!("WHERE task_sid = $1")).bind(task_sid).fetch_optional(&self.pool).await?;
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

    /// Queues one action; false when an action with its key exists already.
    pub async fn enqueue_action(&self, action: &Action) -> anyhow::Result<bool> {
        let mut tx = self.writer.begin().await?;
        let inserted = insert_action(&mut tx, action, now_ms()).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Claims up to `limit` pending actions by marking them `sending`, in
    /// one statement; oldest first. Rows written by the same batch can be
    /// claimed by it; they are handed out only after its COMMIT.
    pub async fn claim_actions(&self, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        // Through the batcher: the claim shares a transaction (one commit)
        // with the webhooks' and results' writes queued beside it.
        self.batched(|reply| batch::Op::Claim(limit, reply)).await
    }

    /// Records how an action ended (batched with other writes).
    pub async fn finish_action(
        &self,
        id: i64,
        state: OutboxState,
        result: Option<&str>,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let f =
            batch::Finish { id, state, result: result.map(str::to_owned), error: error.map(str::to_owned), link: None };
        self.batched(|reply| batch::Op::Finish(f, reply)).await.map(drop)
    }

    /// Records a placed dial: its outbox row done with the new leg's SID,
    /// and the caller's call linked to that leg, in one transaction. Returns
    /// the caller's outcome as it stood then (None without a caller's call),
    /// so that a leg placed while the caller left can be hung up.
    pub async fn finish_dial(
        &self,
        id: i64,
        outbound_call_sid: &str,
        inbound_call_sid: Option<&str>,
    ) -> anyhow::Result<Option<Outcome>> {
        let f = batch::Finish {
            id,
            state: OutboxState::Done,
            result: Some(outbound_call_sid.to_owned()),
            error: None,
            link: inbound_call_sid.map(|i| (i.to_owned(), outbound_call_sid.to_owned())),
        };
        self.batched(|reply| batch::Op::Finish(f, reply)).await
    }

    /// The outcomes of the given calls that exist, in one query per
    /// [`batch::MAX_BATCH`] SIDs.
    pub async fn outcomes(&self, call_sids: &[&str]) -> anyhow::Result<HashMap<String, Outcome>> {
        let mut out = HashMap::new();
        for chunk in call_sids.chunks(batch::MAX_BATCH) {
            let mut sql = String::from("SELECT call_sid, outcome FROM calls WHERE call_sid IN (");
            for i in 1..=chunk.len() {
                // Placeholders only; the SIDs are bound.
                sql.push_str(if i == 1 { "$" } else { ", $" });
                sql.push_str(&i.to_string());
            }
            sql.push(')');
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for sid in chunk {
                q = q.bind(*sid);
            }
            for r in q.fetch_all(&self.pool).await? {
                let outcome: String = r.try_get("outcome")?;
                let outcome =
                    Outcome::parse(&outcome).with_context(|| format!("unknown outcome {outcome:?} in calls"))?;
                out.insert(r.try_get("call_sid")?, outcome);
            }
        }
        Ok(out)
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
            self.finish_action(id, state, None, Some("interrupted by a restart")).await?;
        }
        Ok((requeued, unknown))
    }

    /// Every action with its state (for tests and inspection).
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

/// Sets a call's outcome unless it already has a final one (the first wins).
async fn settle_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    call_sid: &str,
    outcome: Outcome,
    now: i64,
) -> anyhow::Result<bool> {
    let done = sqlx::query("UPDATE calls SET outcome = $2, updated_at_ms = $3 WHERE call_sid = $1 AND outcome = $4")
        .bind(call_sid)
        .bind(outcome.as_str())
        .bind(now)
        .bind(Outcome::Pending.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether a leg's status callbacks already reported a final status.
async fn leg_ended(tx: &mut sqlx::Transaction<'_, sqlx::Any>, call_sid: &str) -> anyhow::Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS ended FROM call_statuses WHERE call_sid = $1 \
         AND status IN ('completed', 'busy', 'failed', 'no-answer', 'canceled') LIMIT 1",
    )
    .bind(call_sid)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
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

/// Group commit for the frequent writes: `reservation.created` and the
/// dispatcher's results.
///
/// One task owns the writes that go through it. It takes the first queued
/// request, waits for the writer connection, then drains whatever else has
/// queued meanwhile (up to [`MAX_BATCH`]) and writes them all in one
/// transaction with multi-row statements: a handful of round trips to
/// SQLite's thread per batch instead of several per request. Each caller is
/// answered only after COMMIT, so durability before the webhook's answer is
/// unchanged; if anything in the batch fails, the transaction rolls back and
/// every caller of that batch gets the error.
///
/// The statements' text is built by [`batch::rows_sql`] from fixed fragments
/// and placeholders for the row count only (hence `AssertSqlSafe`); every
/// value is bound.
mod batch {
    use std::collections::{HashMap, HashSet};
    use std::fmt::Write as _;

    use anyhow::Context as _;
    use sqlx::{AnyConnection, AnyPool, Connection as _, Row};
    use tokio::sync::{mpsc, oneshot};

    use super::now_ms;
    use crate::domain::Outcome;
    use crate::outbox::{OutboxRow, OutboxState};

    /// SQLite's limit on bound parameters per statement
    /// (`SQLITE_MAX_VARIABLE_NUMBER`, 32766 since 3.32; PostgreSQL's is 65535).
    const MAX_PARAMS: usize = 32766;
    /// The most parameters one row of a batched statement binds (the outbox
    /// update: id, state, result, error) and those one statement shares.
    const ROW_PARAMS: usize = 4;
    const SHARED_PARAMS: usize = 2;
    /// The most requests written in one transaction: bounded by the parameter
    /// limit, and small enough that one slow batch does not hold the writer
    /// for long.
    pub(super) const MAX_BATCH: usize = min(256, (MAX_PARAMS - SHARED_PARAMS) / ROW_PARAMS);

    const _: () = assert!(MAX_BATCH * ROW_PARAMS + SHARED_PARAMS <= MAX_PARAMS);

    const fn min(a: usize, b: usize) -> usize {
        if a < b { a } else { b }
    }

    /// How many requests may wait for the writer task before callers wait to
    /// queue (back-pressure rather than unbounded memory).
    pub(super) const QUEUE: usize = MAX_BATCH * 8;

    /// One `reservation.created` to record.
    pub(super) struct Reservation {
        pub payload: String,
        pub inbound_call_sid: Option<String>,
        pub task_sid: String,
        pub reservation_sid: String,
        pub dedupe_key: String,
        pub kind: &'static str,
        pub action_json: String,
        pub received_at_ms: i64,
    }

    /// How an outbox action ended, and for a placed dial the link from the
    /// caller's call to the new leg.
    pub(super) struct Finish {
        pub id: i64,
        pub state: OutboxState,
        pub result: Option<String>,
        pub error: Option<String>,
        /// (inbound call SID, outbound call SID).
        pub link: Option<(String, String)>,
    }

    pub(super) enum Op {
        /// Answered with whether this request queued the dial.
        Reservation(Reservation, oneshot::Sender<anyhow::Result<bool>>),
        /// Answered, for a link, with the caller's call outcome as it stood
        /// when the link was written (None without a link or a call row).
        Finish(Finish, oneshot::Sender<anyhow::Result<Option<Outcome>>>),
        /// Claims up to this many pending actions.
        Claim(i64, oneshot::Sender<anyhow::Result<Vec<OutboxRow>>>),
    }

    impl Op {
        fn fail(self, message: &str) {
            let e = || anyhow::anyhow!("{message}");
            // A caller that went away no longer needs its answer.
            match self {
                Op::Reservation(_, reply) => drop(reply.send(Err(e()))),
                Op::Finish(_, reply) => drop(reply.send(Err(e()))),
                Op::Claim(_, reply) => drop(reply.send(Err(e()))),
            }
        }
    }

    /// Runs until every sender (every `Store` clone) is gone.
    pub(super) async fn run(writer: AnyPool, mut rx: mpsc::Receiver<Op>) {
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
            let written = write(&mut conn, &ops).await;
            stats.add(ops.len(), started.elapsed());
            match written {
                Ok(answers) => answer(ops, answers),
                // The batch was rolled back whole, so nothing of it is kept: write each request
                // alone, so that one bad write fails only its own webhook, not its neighbours'.
                Err(e) if ops.len() > 1 => {
                    tracing::warn!(error = ?e, writes = ops.len(), "a batch of writes failed; writing each alone");
                    for op in ops {
                        match write(&mut conn, std::slice::from_ref(&op)).await {
                            Ok(answers) => answer(vec![op], answers),
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

    /// The answers of one batch, in the order of its requests of each kind.
    struct Answers {
        fresh: Vec<bool>,
        outcomes: Vec<Option<Outcome>>,
        claims: Vec<Vec<OutboxRow>>,
    }

    /// Gives each request of a written batch its answer, in order.
    fn answer(ops: Vec<Op>, answers: Answers) {
        let mut fresh = answers.fresh.into_iter();
        let mut outcomes = answers.outcomes.into_iter();
        let mut claims = answers.claims.into_iter();
        for op in ops {
            // A caller that went away no longer needs its answer.
            match op {
                Op::Reservation(_, reply) => drop(reply.send(Ok(fresh.next().unwrap_or(false)))),
                Op::Finish(_, reply) => drop(reply.send(Ok(outcomes.next().flatten()))),
                Op::Claim(_, reply) => drop(reply.send(Ok(claims.next().unwrap_or_default()))),
            }
        }
    }

    /// Writes one batch in one transaction; nothing of it is kept on error.
    async fn write(conn: &mut AnyConnection, ops: &[Op]) -> anyhow::Result<Answers> {
        let mut reservations = Vec::new();
        let mut finishes = Vec::new();
        let mut claim_limits = Vec::new();
        for op in ops {
            match op {
                Op::Reservation(r, _) => reservations.push(r),
                Op::Finish(f, _) => finishes.push(f),
                Op::Claim(limit, _) => claim_limits.push(*limit),
            }
        }
        let now = now_ms();
        let mut tx = conn.begin().await?;
        let fresh = write_reservations(&mut tx, &reservations, now)
            .await
            .with_context(|| format!("recording a batch of {} reservations", reservations.len()))?;
        let outcomes = write_finishes(&mut tx, &finishes, now)
            .await
            .with_context(|| format!("recording a batch of {} action results", finishes.len()))?;
        let mut claims = Vec::with_capacity(claim_limits.len());
        for limit in claim_limits {
            claims.push(claim(&mut tx, limit, now).await.context("claiming pending actions")?);
        }
        tx.commit().await.context("committing a batch of writes")?;
        Ok(Answers { fresh, outcomes, claims })
    }

    type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

    /// Events for all, the dial intent for the first request of each
    /// reservation, and the call's link for the reservations that queued a
    /// dial: the same as the requests one by one in their order.
    async fn write_reservations(tx: &mut Tx<'_>, rs: &[&Reservation], now: i64) -> anyhow::Result<Vec<bool>> {
        if rs.is_empty() {
            return Ok(Vec::new());
        }
        // Every delivery is audited, repeats included.
        let sql = rows_sql(
            "INSERT INTO events (source, event_type, resource_sid, payload, received_at_ms) VALUES ",
            rs.len(),
            2,
            &["$1", "$2", "?", "?", "?"],
            "",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind("taskrouter").bind("reservation.created");
        for r in rs {
            q = q.bind(&r.reservation_sid).bind(&r.payload).bind(r.received_at_ms);
        }
        q.execute(&mut **tx).await?;

        // Within the batch the first request of a key is the candidate; the
        // table's unique key decides against earlier batches.
        let mut seen = HashSet::new();
        let candidate: Vec<bool> = rs.iter().map(|r| seen.insert(r.dedupe_key.as_str())).collect();
        let firsts: Vec<&&Reservation> = rs.iter().zip(&candidate).filter(|(_, c)| **c).map(|(r, _)| r).collect();
        let sql = rows_sql(
            "INSERT INTO outbox (dedupe_key, kind, payload, state, attempts, created_at_ms, updated_at_ms) VALUES ",
            firsts.len(),
            2,
            &["?", "?", "?", "$1", "0", "$2", "$2"],
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(OutboxState::Pending.as_str()).bind(now);
        for r in &firsts {
            q = q.bind(&r.dedupe_key).bind(r.kind).bind(&r.action_json);
        }
        let inserted: HashSet<String> =
            q.fetch_all(&mut **tx).await?.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
        let fresh: Vec<bool> = rs.iter().zip(&candidate).map(|(r, c)| *c && inserted.contains(&r.dedupe_key)).collect();

        // One row per call; when two fresh reservations name the same call,
        // the later one is what the requests in order would have left.
        let mut link: HashMap<&str, usize> = HashMap::new();
        for (i, r) in rs.iter().enumerate() {
            if let (true, Some(call)) = (fresh[i], r.inbound_call_sid.as_deref()) {
                link.insert(call, i);
            }
        }
        if !link.is_empty() {
            let mut linked: Vec<usize> = link.into_values().collect();
            linked.sort_unstable();
            let sql = rows_sql(
                "UPDATE calls SET task_sid = v.column2, reservation_sid = v.column3, updated_at_ms = $1 FROM (VALUES ",
                linked.len(),
                1,
                &["?", "?", "?"],
                ") AS v WHERE calls.call_sid = v.column1",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for i in linked {
                let r = rs[i];
                q = q.bind(r.inbound_call_sid.as_deref()).bind(&r.task_sid).bind(&r.reservation_sid);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(fresh)
    }

    /// The outbox rows' new states, then the links of placed dials, whose
    /// statement also reads back the caller's outcome in this transaction.
    async fn write_finishes(tx: &mut Tx<'_>, fs: &[&Finish], now: i64) -> anyhow::Result<Vec<Option<Outcome>>> {
        if fs.is_empty() {
            return Ok(Vec::new());
        }
        // The last result of a row wins, as in order.
        let mut last: HashMap<i64, usize> = HashMap::new();
        for (i, f) in fs.iter().enumerate() {
            last.insert(f.id, i);
        }
        let mut rows: Vec<usize> = last.into_values().collect();
        rows.sort_unstable();
        let sql = rows_sql(
            "UPDATE outbox SET state = v.column2, result = v.column3, last_error = v.column4, updated_at_ms = $1 \
             FROM (VALUES ",
            rows.len(),
            1,
            &["CAST(? AS BIGINT)", "?", "?", "?"],
            ") AS v WHERE outbox.id = v.column1",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for i in rows {
            let f = fs[i];
            q = q.bind(f.id).bind(f.state.as_str()).bind(f.result.as_deref()).bind(f.error.as_deref());
        }
        q.execute(&mut **tx).await?;

        let mut link: HashMap<&str, usize> = HashMap::new();
        for (i, f) in fs.iter().enumerate() {
            if let Some((inbound, _)) = &f.link {
                link.insert(inbound.as_str(), i);
            }
        }
        let mut outcome: HashMap<String, Outcome> = HashMap::new();
        if !link.is_empty() {
            let mut linked: Vec<usize> = link.into_values().collect();
            linked.sort_unstable();
            let sql = rows_sql(
                "UPDATE calls SET outbound_call_sid = v.column2, updated_at_ms = $1 FROM (VALUES ",
                linked.len(),
                1,
                &["?", "?"],
                ") AS v WHERE calls.call_sid = v.column1 RETURNING call_sid, outcome",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for i in linked {
                let (inbound, outbound) = fs[i].link.as_ref().expect("only links were kept");
                q = q.bind(inbound).bind(outbound);
            }
            for row in q.fetch_all(&mut **tx).await? {
                let sid: String = row.try_get(0)?;
                let o: String = row.try_get(1)?;
                let o = Outcome::parse(&o).with_context(|| format!("unknown outcome {o:?} in calls"))?;
                outcome.insert(sid, o);
            }
        }
        Ok(fs.iter().map(|f| f.link.as_ref().and_then(|(inbound, _)| outcome.get(inbound).copied())).collect())
    }

    async fn claim(tx: &mut Tx<'_>, limit: i64, now: i64) -> anyhow::Result<Vec<OutboxRow>> {
        // `state = $1` again outside the subquery: on PostgreSQL a row
        // another claimer took meanwhile is then skipped, not taken twice.
        let rows = sqlx::query(
            "UPDATE outbox SET state = $2, attempts = attempts + 1, updated_at_ms = $3
             WHERE state = $1 AND id IN (SELECT id FROM outbox WHERE state = $1 ORDER BY id LIMIT $4)
             RETURNING id, dedupe_key, payload, attempts",
        )
        .bind(OutboxState::Pending.as_str())
        .bind(OutboxState::Sending.as_str())
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let payload: String = r.try_get("payload")?;
                Ok(OutboxRow {
                    id,
                    key: r.try_get("dedupe_key")?,
                    action: serde_json::from_str(&payload).with_context(|| format!("outbox row {id} payload"))?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // RETURNING's order is not defined.
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// `head` + `rows` comma-separated `(…)` groups + `tail`. Each group is
    /// `row`'s fragments joined by commas, every `?` replaced by the next
    /// placeholder number after the `shared` ones (`$1`…`$shared`), which
    /// fragments name directly. Only placeholders and the fixed fragments
    /// given here go into the text, never a value.
    pub(super) fn rows_sql(head: &str, rows: usize, shared: usize, row: &[&str], tail: &str) -> String {
        let mut sql = String::with_capacity(head.len() + tail.len() + rows * row.len() * 8);
        sql.push_str(head);
        let mut n = shared;
        for i in 0..rows {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for (j, frag) in row.iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                match frag.split_once('?') {
                    Some((before, after)) => {
                        n += 1;
                        let _ = write!(sql, "{before}${n}{after}");
                    }
                    None => sql.push_str(frag),
                }
            }
            sql.push(')');
        }
        sql.push_str(tail);
        sql
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

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
        s.record_inbound_call("CA0123456789abcdef0123456789abcdef", "+13105550199", "+12025550143").await.unwrap();
        let res = "WR0123456789abcdef0123456789abcdef";
        let a = dial(res);
        assert!(s.record_reservation("{}", Some("CA0123456789abcdef0123456789abcdef"), "WT1", res, &a).await.unwrap());
        assert!(!s.record_reservation("{}", Some("CA0123456789abcdef0123456789abcdef"), "WT1", res, &a).await.unwrap());
        let claimed = s.claim_actions(10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(s.claim_actions(10).await.unwrap().is_empty(), "a claimed action is not handed out twice");
        assert_eq!(s.event_count("reservation.created").await.unwrap(), 2, "both deliveries are audited");
    }

    #[tokio::test]
    async fn an_interrupted_dial_is_never_resent_but_an_update_is() {
        let (s, _d) = store().await;
        s.enqueue_action(&dial("WR0123456789abcdef0123456789abcdef")).await.unwrap();
        s.enqueue_action(&Action::CompleteTask { task_sid: "WT1".into(), reason: "done".into() }).await.unwrap();
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

    /// A store on a file whose calls table has `n` pending calls CA0…CA{n-1}.
    async fn store_with_calls(n: usize) -> (Store, tempfile::TempDir) {
        let (s, d) = store().await;
        for i in 0..n {
            s.record_inbound_call(&format!("CA{i}"), "+13105550199", "+12025550143").await.unwrap();
        }
        (s, d)
    }

    fn dial_for(res: &str, call: &str) -> Action {
        let Action::Dial(mut d) = dial(res) else { unreachable!() };
        d.inbound_call_sid = Some(call.into());
        Action::Dial(d)
    }

    #[tokio::test]
    async fn concurrent_reservations_queue_one_dial_each_and_answer_each_caller_right() {
        let (s, _d) = store_with_calls(40).await;
        // 40 reservations, each delivered three times at once: 120 writers.
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..3 {
            for i in 0..40 {
                let s = s.clone();
                tasks.spawn(async move {
                    let (res, call) = (format!("WR{i}"), format!("CA{i}"));
                    let fresh = s
                        .record_reservation(
                            &format!("{{\"round\":{round}}}"),
                            Some(&call),
                            &format!("WT{i}"),
                            &res,
                            &dial_for(&res, &call),
                        )
                        .await
                        .unwrap();
                    (i, fresh)
                });
            }
        }
        let mut fresh_per_reservation = vec![0; 40];
        while let Some(r) = tasks.join_next().await {
            let (i, fresh) = r.unwrap();
            fresh_per_reservation[i] += usize::from(fresh);
        }
        assert_eq!(fresh_per_reservation, vec![1; 40], "exactly one delivery of each reservation is told it is fresh");
        let actions = s.actions().await.unwrap();
        assert_eq!(actions.len(), 40, "one outbox row per reservation");
        let keys: HashSet<_> = actions.iter().map(|(k, _, _)| k.clone()).collect();
        assert_eq!(keys, (0..40).map(|i| format!("dial:WR{i}")).collect::<HashSet<_>>());
        assert_eq!(s.event_count("reservation.created").await.unwrap(), 120, "every delivery is audited");
        for i in 0..40 {
            let call = s.call(&format!("CA{i}")).await.unwrap().unwrap();
            assert_eq!(call.task_sid.as_deref(), Some(format!("WT{i}").as_str()));
            assert_eq!(call.reservation_sid.as_deref(), Some(format!("WR{i}").as_str()));
        }
        // A later delivery of a known reservation is not fresh either.
        assert!(!s.record_reservation("{}", Some("CA0"), "WT0", "WR0", &dial_for("WR0", "CA0")).await.unwrap());
    }

    #[tokio::test]
    async fn a_failed_batch_is_written_again_one_by_one_so_only_the_bad_write_fails() {
        let (s, _d) = store_with_calls(0).await;
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
                let res = format!("WR{i}");
                let payload = if i == 7 { "boom" } else { "{}" };
                s.record_reservation(payload, None, "WT1", &res, &dial(&res)).await
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
        let (mut errors, mut fresh) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(f) => fresh += usize::from(f),
                Err(e) => {
                    assert!(format!("{e:#}").contains("boom"), "{e:#}");
                    errors += 1;
                }
            }
        }
        assert_eq!((errors, fresh), (1, 19), "only the poisoned write fails");
        let actions = s.actions().await.unwrap();
        assert_eq!(actions.len(), 19, "{actions:?}");
        assert!(!actions.iter().any(|(k, _, _)| k == "dial:WR7"), "nothing of the failed write was kept");
        assert_eq!(s.event_count("reservation.created").await.unwrap(), 19);
        // The writer carries on with the next batch.
        assert!(s.record_reservation("{}", None, "WT1", "WR20", &dial("WR20")).await.unwrap());
    }

    fn hang_ups(actions: &[(String, OutboxState, Option<String>)]) -> Vec<&str> {
        actions.iter().filter_map(|(k, _, _)| k.strip_prefix("hang-up:")).collect()
    }

    #[tokio::test]
    async fn an_ended_reservation_skips_its_pending_dial_and_hangs_up_only_its_own_call() {
        let (s, _d) = store_with_calls(1).await;
        // R1's dial is still pending when TaskRouter takes R1 back: it never goes out.
        assert!(s.record_reservation("{}", Some("CA0"), "WT0", "WR1", &dial_for("WR1", "CA0")).await.unwrap());
        assert!(!s.end_reservation("WR1").await.unwrap(), "nothing was placed, so nothing to hang up");
        assert!(s.claim_actions(10).await.unwrap().is_empty(), "the skipped dial is not claimed");
        let actions = s.actions().await.unwrap();
        assert!(actions.iter().any(|(k, st, e)| k == "dial:WR1"
            && *st == OutboxState::Done
            && e.as_deref().is_some_and(|e| e.contains("skipped"))));

        // R2 is dialled; R3, the caller's next reservation, too.
        for r in ["WR2", "WR3"] {
            assert!(s.record_reservation("{}", Some("CA0"), "WT0", r, &dial_for(r, "CA0")).await.unwrap());
        }
        let claimed = s.claim_actions(10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        for row in &claimed {
            let outbound = if row.key == "dial:WR2" { "CAout2" } else { "CAout3" };
            s.finish_dial(row.id, outbound, Some("CA0")).await.unwrap();
        }
        // A late timeout of R2 hangs up R2's call, not R3's (the caller's latest).
        assert!(s.end_reservation("WR2").await.unwrap());
        assert_eq!(hang_ups(&s.actions().await.unwrap()), ["CAout2"]);
        // Once R3's leg has ended, its end needs no hang-up.
        let ended = StatusRecord {
            call_sid: "CAout3".into(),
            inbound_call_sid: Some("CA0".into()),
            status: "completed".into(),
            sequence_number: Some(3),
            call_duration: Some(40),
            answered_by: Some("human".into()),
            sip_response_code: Some(200),
        };
        s.record_status(&ended).await.unwrap();
        assert!(!s.end_reservation("WR3").await.unwrap());
        assert_eq!(hang_ups(&s.actions().await.unwrap()), ["CAout2"]);
    }

    #[tokio::test]
    async fn settling_a_gone_caller_stops_the_linked_leg_in_the_same_write() {
        let (s, _d) = store_with_calls(3).await;
        // No leg yet: settled, nothing to stop.
        assert!(s.settle_and_stop_location("CA0", Outcome::CallerHungUp, &[]).await.unwrap());
        assert!(hang_ups(&s.actions().await.unwrap()).is_empty());
        // A linked, live leg is stopped with the settling, once.
        s.link_outbound_call("CA1", "CAleg1").await.unwrap();
        assert!(s.settle_and_stop_location("CA1", Outcome::QueueTimeout, &[]).await.unwrap());
        assert!(!s.settle_and_stop_location("CA1", Outcome::CallerHungUp, &[]).await.unwrap(), "first wins");
        assert_eq!(hang_ups(&s.actions().await.unwrap()), ["CAleg1"]);
        assert_eq!(s.call("CA1").await.unwrap().unwrap().outcome, Outcome::QueueTimeout);
        // A leg that already reported busy needs no hang-up.
        s.link_outbound_call("CA2", "CAleg2").await.unwrap();
        let busy = StatusRecord {
            call_sid: "CAleg2".into(),
            inbound_call_sid: Some("CA2".into()),
            status: "busy".into(),
            sequence_number: Some(2),
            call_duration: None,
            answered_by: None,
            sip_response_code: Some(486),
        };
        s.record_status(&busy).await.unwrap();
        assert!(s.settle_and_stop_location("CA2", Outcome::CallerHungUp, &[]).await.unwrap());
        assert_eq!(hang_ups(&s.actions().await.unwrap()), ["CAleg1"]);
    }

    #[tokio::test]
    async fn a_closed_database_is_an_error_for_every_caller() {
        let (s, _d) = store().await;
        s.writer.close().await;
        let (d1, d2) = (dial("WR1"), dial("WR2"));
        let (a, b) = tokio::join!(
            s.record_reservation("{}", None, "WT1", "WR1", &d1),
            s.record_reservation("{}", None, "WT1", "WR2", &d2),
        );
        assert!(a.is_err() && b.is_err());
    }

    #[tokio::test]
    async fn concurrent_claims_hand_out_each_pending_action_once() {
        let (s, _d) = store().await;
        for i in 0..100 {
            s.enqueue_action(&dial(&format!("WR{i}"))).await.unwrap();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let rows = s.claim_actions(7).await.unwrap();
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
    async fn a_placed_dial_is_recorded_linked_and_reports_the_callers_outcome() {
        let (s, _d) = store_with_calls(2).await;
        s.enqueue_action(&dial_for("WR0", "CA0")).await.unwrap();
        s.enqueue_action(&dial_for("WR1", "CA1")).await.unwrap();
        let rows = s.claim_actions(10).await.unwrap();
        assert!(s.settle_outcome("CA1", Outcome::CallerHungUp).await.unwrap());
        let outcomes = s.outcomes(&["CA0", "CA1", "CA-none"]).await.unwrap();
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes["CA1"], Outcome::CallerHungUp);
        let (a, b) = tokio::join!(
            s.finish_dial(rows[0].id, "CAout0", Some("CA0")),
            s.finish_dial(rows[1].id, "CAout1", Some("CA1")),
        );
        assert_eq!(a.unwrap(), Some(Outcome::Pending));
        assert_eq!(b.unwrap(), Some(Outcome::CallerHungUp), "the caller left while the leg was placed");
        assert_eq!(s.call("CA0").await.unwrap().unwrap().outbound_call_sid.as_deref(), Some("CAout0"));
        assert_eq!(s.call("CA1").await.unwrap().unwrap().outbound_call_sid.as_deref(), Some("CAout1"));
        assert!(s.actions().await.unwrap().iter().all(|(_, st, _)| *st == OutboxState::Done));
        assert_eq!(s.finish_dial(rows[0].id, "CAout0", None).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_in_memory_database_works_through_the_batcher() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        s.record_inbound_call("CA0", "+1", "+2").await.unwrap();
        assert!(s.record_reservation("{}", Some("CA0"), "WT0", "WR0", &dial_for("WR0", "CA0")).await.unwrap());
        let rows = s.claim_actions(10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(s.finish_dial(rows[0].id, "CAout", Some("CA0")).await.unwrap(), Some(Outcome::Pending));
        assert_eq!(s.call("CA0").await.unwrap().unwrap().task_sid.as_deref(), Some("WT0"));
    }

    #[test]
    fn batched_statements_hold_placeholders_only() {
        assert_eq!(
            batch::rows_sql("INSERT INTO t (a, b, c) VALUES ", 2, 1, &["?", "$1", "CAST(? AS BIGINT)"], " RETURNING a"),
            "INSERT INTO t (a, b, c) VALUES ($2, $1, CAST($3 AS BIGINT)), ($4, $1, CAST($5 AS BIGINT)) RETURNING a"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(sqlite_url_with_create("sqlite://x.db"), "sqlite://x.db?mode=rwc");
        assert_eq!(sqlite_url_with_create("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://***@h/db");
    }
}
