//! Persistence: locations, journeys (and the `calls` rows that show them),
//! raw events and the outbox.
//!
//! Queries are plain SQL over sqlx's `Any` driver with `$N` placeholders and
//! only integer (BIGINT) and text columns, so the same code runs on SQLite
//! (the embedded default) and PostgreSQL. What differs by backend is set up
//! in [`Store::connect_with`] only: the pool, the migrations
//! (`migrations/sqlite`, `migrations/postgres`), how a write transaction
//! begins, and SQLite's WAL checkpoints. SQLite runs in WAL mode with
//! `synchronous=NORMAL`: a committed row survives a crash of this process.

mod batch;
mod history;
mod journeys;
mod lite;
mod outbox;
mod sql;
mod voicemails;
mod waiting;

use std::str::FromStr;
use std::time::Duration;

pub use history::{ActionRow, CallFilter, EventRow, HistoryCall, JourneyRow, LiveCallers, StatusRow, journey_sids};
pub use journeys::{Audit, Delivered, Delivery, Finish, NewCall, Route, Settled};
pub use outbox::{Lease, Orphans};
pub use voicemails::{
    NewVoicemail, Transcription, Voicemail, VoicemailFilter, VoicemailKind, callback_request_id, is_callback_request_id,
};

use crate::domain::{Location, LocationSpec, Outcome};
use crate::journey::{Command, Journey, Policy};
use crate::outbox::{Lane, OutboxRow, OutboxState};
use anyhow::Context as _;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection as _, Executor, Row};
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

/// The schema of each backend, embedded at build time: what [`Store::connect_with`]
/// applies and `check` compares a database with.
pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Whether `migrator` has anything to do on this database: true unless its
/// table lists exactly the embedded migrations, each applied in full with the
/// checksum it has here. Anything else (a table not yet created, a pending or
/// failed migration, one changed or unknown to this build) is left to sqlx's
/// run, which applies what is pending and reports the rest as it always has.
async fn migrations_pending(pool: &AnyPool, migrator: &sqlx::migrate::Migrator) -> bool {
    let applied = sqlx::query(
        "SELECT version, checksum, CASE WHEN success THEN 1 ELSE 0 END AS ok FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await;
    let Ok(rows) = applied else { return true };
    let applied: Result<Vec<(i64, Vec<u8>, bool)>, sqlx::Error> = rows
        .iter()
        .map(|r| Ok((r.try_get("version")?, r.try_get("checksum")?, r.try_get::<i64, _>("ok")? == 1)))
        .collect();
    let Ok(applied) = applied else { return true };
    let embedded =
        migrator.iter().filter(|m| !m.migration_type.is_down_migration()).map(|m| (m.version, m.checksum.as_ref()));
    !same_migrations(&applied, embedded)
}

/// Whether the applied migrations (version, checksum, applied in full), in
/// order of version, are exactly the `embedded` ones.
fn same_migrations<'a>(applied: &[(i64, Vec<u8>, bool)], embedded: impl Iterator<Item = (i64, &'a [u8])>) -> bool {
    let mut embedded: Vec<(i64, &[u8])> = embedded.collect();
    embedded.sort_by_key(|(version, _)| *version);
    applied.len() == embedded.len()
        && applied
            .iter()
            .zip(&embedded)
            .all(|((version, checksum, ok), (v, c))| *ok && version == v && checksum.as_slice() == *c)
}

/// The PostgreSQL channel a write that queued a command notifies, and every
/// instance's dispatcher listens on.
pub const NOTIFY_CHANNEL: &str = "call_router_outbox";

/// How long an instance's claim on a command lasts unless set with
/// [`Store::owned_by`].
const DEFAULT_LEASE_MS: i64 = 60_000;

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
/// PostgreSQL keeps the same shape (one writer connection, the batcher),
/// with a larger read pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    writer: AnyPool,
    batcher: mpsc::Sender<batch::Op>,
    /// This instance's name and how long its claims on the outbox last.
    lease: Lease,
    backend: Backend,
}

/// The database behind a store, from its URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path`, `sqlite:path`, `sqlite::memory:`: the embedded default.
    Sqlite,
    /// `postgres://` or `postgresql://`, for several instances on one database.
    Postgres,
}

impl Backend {
    /// The backend a database URL names; an error for any other scheme.
    pub fn of(url: &str) -> anyhow::Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!(
                "unsupported database URL {}: use sqlite://FILE, sqlite::memory: or postgres://USER@HOST/DB",
                redact_url(url)
            )
        }
    }
}

/// The connection pool's limits (`[database]` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// On PostgreSQL, the most connections this process opens: one is the
    /// writer's, the rest serve reads. SQLite always uses one writer and
    /// [`SQLITE_READERS`] readers.
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { max_connections: 8, acquire_timeout: Duration::from_secs(10) }
    }
}

/// The read pool's size on SQLite, where reads run beside the one writer (WAL).
pub const SQLITE_READERS: u32 = 4;
/// A PostgreSQL connection idle this long is closed.
const POSTGRES_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A PostgreSQL connection is replaced after this long, so that none lives for ever.
const POSTGRES_MAX_LIFETIME: Duration = Duration::from_secs(1800);

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
    /// Opens (creating if needed) the database at `url` and migrates it,
    /// with the default pool settings.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Store::connect_with(url, PoolSettings::default()).await
    }

    /// Opens the database at `url` (its scheme picks the backend: `sqlite:`
    /// or `postgres:`/`postgresql:`) and migrates it.
    pub async fn connect_with(url: &str, settings: PoolSettings) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url_with_create(url),
            Backend::Postgres => url.to_owned(),
        };
        let is_memory = backend == Backend::Sqlite && url.contains(":memory:");
        // A new file is switched to WAL with syncing off: the switch writes
        // the header through a rollback journal, and with the default
        // `synchronous = FULL` its fsyncs were most of a fresh start (50 ms
        // on a busy disk). A crash then loses only an empty file, which the
        // next start creates again. An existing file is already in WAL mode
        // and its switch is a no-op, so it never runs unsynced.
        let fresh_file = backend == Backend::Sqlite && sqlite_path(&url).is_some_and(|p| !p.exists());
        let options = |max: u32| match backend {
            // No ping before each acquire: a SQLite connection is a file
            // handle that cannot go stale, and the ping is a round trip to
            // its worker thread on every query.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(settings.acquire_timeout)
                .test_before_acquire(false)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        // One round trip to the connection's thread, not one per PRAGMA.
                        // Checkpoints run on their own (see
                        // `batch::Checkpoints`), not inside whichever COMMIT
                        // crosses the threshold, where their fsyncs stalled
                        // every queued write.
                        let settings = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                        PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                                        PRAGMA wal_autocheckpoint = 0;";
                        if fresh_file {
                            conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA synchronous = OFF; {settings}"))).await?;
                        } else {
                            conn.execute(settings).await?;
                        }
                        Ok(())
                    })
                }),
            // A network connection can die while it idles in the pool (a
            // server restart, a failover, a firewall's timeout): each is
            // pinged before use and replaced when it does not answer, and
            // idle ones are closed after a while.
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(settings.acquire_timeout)
                .test_before_acquire(true)
                .idle_timeout(Some(POSTGRES_IDLE_TIMEOUT))
                .max_lifetime(Some(POSTGRES_MAX_LIFETIME)),
        };
        let open = |max: u32| {
            let url = url.clone();
            let pool = options(max);
            async move { pool.connect(&url).await.with_context(|| format!("opening database {}", redact_url(&url))) }
        };
        if backend == Backend::Postgres {
            // A pool that cannot connect retries until its acquire timeout and
            // then says only that it timed out; one plain connection first
            // reports why (refused, no such database, authentication).
            // sqlx's message for an IO error already quotes its cause, which
            // `{:#}` would print a second time: keep the message alone.
            let probe = sqlx::AnyConnection::connect(&url)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("opening database {}", redact_url(&url)))?;
            let _ = probe.close().await;
        }
        let (writer, pool) = match backend {
            // An in-memory SQLite database exists per connection, so readers
            // and the writer must share the one connection there.
            Backend::Sqlite if is_memory => {
                let writer = open(1).await?;
                (writer.clone(), writer)
            }
            // On a file, the readers open (and so create) it. The batches
            // have a writer of their own (see `lite`), so sqlx's writer serves
            // only the rare writes (locations, resources, leases) and opens
            // at the first: each connection reads the whole schema when it
            // opens, which was a share of every start.
            Backend::Sqlite => {
                let pool = open(SQLITE_READERS).await?;
                let writer =
                    options(1).connect_lazy(&url).with_context(|| format!("opening database {}", redact_url(&url)))?;
                (writer, pool)
            }
            // One of `max_connections` is the writer's.
            Backend::Postgres => (open(1).await?, open(settings.max_connections.saturating_sub(1).max(1)).await?),
        };
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        // The writer's own connection to a SQLite file (see `lite`).
        let lite = match sqlite_path(&url) {
            Some(path) if backend == Backend::Sqlite => Some((lite::open(&path)?, path)),
            _ => None,
        };
        // A new file: every migration in one transaction on the writer's
        // connection, recorded as sqlx records them (sqlx's migrator runs
        // each in a transaction of its own, a dozen round trips apiece).
        let migrated = match &lite {
            Some((conn, _)) if fresh_file => {
                lite::migrate_new_file(conn, migrator).context("migrating the new database")?
            }
            _ => false,
        };
        // sqlx's run takes its lock, creates its table if needed and reads it
        // again, a round trip each, even when nothing is pending: one read
        // tells whether anything is.
        if !migrated && (fresh_file || migrations_pending(&pool, migrator).await) {
            migrator.run(&pool).await.context("migrating the database")?;
        }
        let (batcher, queue) = mpsc::channel(batch::QUEUE);
        match lite {
            // A SQLite file: the batches go to a thread with its own
            // connection (see `lite`).
            Some((conn, path)) => batch::spawn_lite(conn, &path, batch::CHECKPOINT_PACE, queue)?,
            // A delivery reads its journey, then writes it. On SQLite the
            // write lock is taken up front (BEGIN IMMEDIATE), so that nothing
            // fails with SQLITE_BUSY when it upgrades from a read. PostgreSQL
            // locks the rows a transaction writes; a plain BEGIN.
            _ => {
                let begin = match backend {
                    Backend::Sqlite => "BEGIN IMMEDIATE",
                    Backend::Postgres => "BEGIN",
                };
                tokio::spawn(batch::run(batch::SqlxWriter::new(writer.clone(), begin), queue));
            }
        }
        let lease = Lease { owner: format!("store-{:016x}", rand::random::<u64>()).into(), ms: DEFAULT_LEASE_MS };
        Ok(Store { pool, writer, batcher, lease, backend })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Hands one write to the batcher and waits for its answer, which comes
    /// after the batch's COMMIT.
    async fn batched<T>(&self, op: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> batch::Op) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        let stopped = || anyhow::anyhow!("the database writer has stopped");
        self.batcher.send(op(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// The same store, claiming the outbox's commands as `owner` for `lease_ms`
    /// (an instance's name: see [`Orphans`]).
    pub fn owned_by(mut self, owner: &str, lease_ms: i64) -> Store {
        self.lease = Lease { owner: owner.into(), ms: lease_ms };
        self
    }

    /// This instance's name, as it claims commands and leases.
    pub fn owner(&self) -> &str {
        &self.lease.owner
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
        Ok(self.live_board(limit).await?.into_iter().map(|l| (l.location, l.waiting, l.bridged)).collect())
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

    /// Keeps a recording's URL on the caller's `calls` row (batched).
    pub async fn set_recording(&self, call_sid: &str, url: &str) -> anyhow::Result<()> {
        let (call, url) = (call_sid.to_owned(), url.to_owned());
        self.batched(|reply| batch::Op::Recording { call, url, reply }).await
    }

    // -- voicemails ------------------------------------------------------------

    pub async fn voicemail(&self, recording_sid: &str) -> anyhow::Result<Option<Voicemail>> {
        let mut conn = self.pool.acquire().await?;
        voicemails::get(&mut *conn, recording_sid).await
    }

    /// A page of voicemails, newest first.
    pub async fn voicemails(&self, filter: &VoicemailFilter) -> anyhow::Result<Vec<Voicemail>> {
        let mut conn = self.pool.acquire().await?;
        voicemails::list(&mut *conn, filter).await
    }

    /// Where Twilio keeps a voicemail's audio; for the server's own fetch
    /// only, never to be shown or logged at info level.
    pub async fn voicemail_recording_url(&self, recording_sid: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        voicemails::recording_url(&mut *conn, recording_sid).await
    }

    /// Marks a voicemail listened; false when there is none with that SID.
    pub async fn mark_voicemail_listened(&self, recording_sid: &str) -> anyhow::Result<bool> {
        let mut conn = self.writer.acquire().await?;
        voicemails::mark_listened(&mut *conn, recording_sid, now_ms()).await
    }

    /// Keeps a webhook that concerns no journey, for audit (batched).
    pub async fn record_event(
        &self,
        source: &'static str,
        event_type: &str,
        resource_sid: Option<&str>,
        payload: &str,
    ) -> anyhow::Result<()> {
        let audit = Audit {
            source,
            event_type: event_type.to_owned(),
            resource_sid: resource_sid.map(str::to_owned),
            payload: payload.to_owned(),
        };
        self.batched(|reply| batch::Op::Audit(audit, reply)).await
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
        let command = Box::new(command.clone());
        self.batched(|reply| batch::Op::Enqueue(command, reply)).await
    }

    /// Claims up to `limit` pending commands of `lane` whose time has come,
    /// marking them `sending`, oldest first. Through the batcher: the claim
    /// shares a transaction (one commit) with the writes queued beside it,
    /// and sees the commands they queued.
    pub async fn claim(&self, lane: Lane, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        let lease = self.lease.clone();
        self.batched(|reply| batch::Op::Claim(lane, limit, lease, reply)).await
    }

    /// Records how a command ended, or when to send it again (batched).
    pub async fn finish(&self, finish: Finish) -> anyhow::Result<()> {
        self.batched(|reply| batch::Op::Finish(finish, reply)).await
    }

    /// Takes over commands being sent by an instance that is gone: updates
    /// (idempotent) go back to pending; a dial, which must not be sent twice,
    /// is marked `unknown` and its journey hears `DialUnknown`, so it looks
    /// the call up instead. With [`Orphans::ExpiredAndMine`] (at start-up),
    /// also what this instance's name still holds from a previous run.
    /// Returns (requeued, unknown).
    pub async fn take_over(&self, which: Orphans, policy: Policy) -> anyhow::Result<(u64, u64)> {
        let (mut requeued, mut unknown) = (0, 0);
        loop {
            let lease = self.lease.clone();
            let (r, u) = self.batched(|reply| batch::Op::TakeOver(which, lease, policy, reply)).await?;
            (requeued, unknown) = (requeued + r, unknown + u);
            if r + u == 0 {
                return Ok((requeued, unknown));
            }
        }
    }

    /// Takes or renews the named lease for `ms` as this instance: true when
    /// this instance holds it (one reconciler among several instances).
    pub async fn hold_lease(&self, name: &'static str, ms: i64) -> anyhow::Result<bool> {
        let owner = self.lease.owner.clone();
        self.batched(|reply| batch::Op::Hold { name, owner, ms, reply }).await
    }

    /// Gives the named lease up, if this instance holds it.
    pub async fn release_lease(&self, name: &'static str) -> anyhow::Result<()> {
        let owner = self.lease.owner.clone();
        self.batched(|reply| batch::Op::Release { name, owner, reply }).await
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

/// A database URL with any password removed, for messages: the user and
/// password before `@`, and a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &base[..s], &base[at..]),
        _ => base.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<&str> = q
            .split('&')
            .map(|kv| {
                if kv.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("password")) {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::config::AnsweredByPolicy;
    use crate::journey::{Answer, DialTarget, Event, ReservationEnd};
    use crate::test_backends::{Backend, TestDb};
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

    /// A store on a fresh database of `backend`; None when that backend is
    /// not available here (see `test_backends`).
    async fn store(backend: Backend) -> Option<(Store, TestDb)> {
        let db = backend.database().await?;
        let store = Store::connect(&db.url).await.unwrap();
        assert_eq!(store.backend() == super::Backend::Postgres, backend == Backend::Postgres);
        Some((store, db))
    }

    #[tokio::test]
    async fn on_postgres_a_write_that_queued_a_command_notifies_the_dispatchers() {
        let Some((s, db)) = store(Backend::Postgres).await else { return };
        let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
        listener.listen(NOTIFY_CHANNEL).await.unwrap();
        // A delivery that queues nothing notifies nobody.
        s.deliver(arrived(1)).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
        assert!(quiet.is_err(), "no notification without a new command: {quiet:?}");
        // reservation.created queues a dial: every listener hears of it at COMMIT.
        assert_eq!(s.deliver(created(1, 1)).await.unwrap().queued, 1);
        let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
        assert_eq!(heard.expect("notified").unwrap().channel(), NOTIFY_CHANNEL);
    }

    on_both_backends!(
        a_reservation_queues_one_dial_however_often_it_arrives,
        a_journey_begins_at_any_event_and_keeps_one_row_per_caller,
        a_dial_still_in_the_outbox_is_withdrawn_when_its_reservation_ends,
        a_dial_queued_and_withdrawn_by_one_delivery_to_a_new_journey_is_never_sent,
        a_delivery_that_changes_nothing_writes_nothing,
        a_redirect_to_voicemail_still_in_the_outbox_is_withdrawn_once_the_caller_is_out_of_the_queue,
        an_interrupted_dial_is_never_resent_but_an_update_is,
        a_retry_waits_in_the_outbox_not_in_a_slot_and_lanes_are_separate,
        a_failed_batch_is_written_again_one_by_one_so_only_the_bad_write_fails,
        a_closed_database_is_an_error_for_every_caller,
        a_database_that_refuses_writes_is_an_error_for_every_caller,
        concurrent_claims_hand_out_each_pending_action_once,
        a_claim_whose_lease_expired_is_taken_over_by_another_instance,
        one_instance_at_a_time_holds_a_named_lease,
        history_pages_newest_first_and_filters,
        history_reads_a_calls_webhooks_statuses_and_actions,
        the_board_counts_callers_and_todays_outcomes,
        a_callers_place_counts_those_waiting_before_them_and_handled_calls_give_their_length,
        migrations_are_skipped_when_none_is_pending_and_applied_when_one_is,
    );

    #[test]
    fn migrations_are_the_same_only_when_every_embedded_one_is_applied_unchanged() {
        let embedded: [(i64, &[u8]); 2] = [(1, b"a"), (2, b"b")];
        type Applied = Vec<(i64, Vec<u8>, bool)>;
        let row = |v: i64, c: &[u8], ok: bool| (v, c.to_vec(), ok);
        let cases: [(&str, Applied, bool); 6] = [
            ("all applied", vec![row(1, b"a", true), row(2, b"b", true)], true),
            ("one pending", vec![row(1, b"a", true)], false),
            ("none applied", vec![], false),
            ("one failed", vec![row(1, b"a", true), row(2, b"b", false)], false),
            ("one changed since", vec![row(1, b"a", true), row(2, b"X", true)], false),
            ("one unknown here", vec![row(1, b"a", true), row(2, b"b", true), row(3, b"c", true)], false),
        ];
        for (name, applied, same) in cases {
            assert_eq!(same_migrations(&applied, embedded.iter().copied()), same, "{name}");
        }
    }

    async fn migrations_are_skipped_when_none_is_pending_and_applied_when_one_is(backend: Backend) {
        let Some((s, db)) = store(backend).await else { return };
        let migrator = match s.backend() {
            super::Backend::Sqlite => &SQLITE_MIGRATIONS,
            super::Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        assert!(!migrations_pending(s.pool(), migrator).await, "all applied by connect");
        // Migration 6 undone: it is pending again, and the next start applies it.
        sqlx::query("DROP TABLE voicemails").execute(s.pool()).await.unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 6").execute(s.pool()).await.unwrap();
        assert!(migrations_pending(s.pool(), migrator).await, "version 6 is pending");
        s.pool().close().await;
        let s = Store::connect(&db.url).await.unwrap();
        assert!(!migrations_pending(s.pool(), migrator).await, "applied again");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voicemails").fetch_one(s.pool()).await.unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_new_file_migrated_in_one_transaction_is_what_sqlx_would_have_made() {
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        // By connect (a new file: one transaction on the writer's connection) …
        let ours = Store::connect(&url("ours.db")).await.unwrap();
        // … and by sqlx's migrator alone.
        let theirs = sqlx::AnyPool::connect(&sqlite_url_with_create(&url("theirs.db"))).await.unwrap();
        SQLITE_MIGRATIONS.run(&theirs).await.unwrap();
        let schema = |pool: AnyPool| async move {
            let rows: Vec<(String, String, String)> =
                sqlx::query_as("SELECT type, name, COALESCE(sql, '') FROM sqlite_schema ORDER BY type, name")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let applied: Vec<(i64, String, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT version, description, checksum, CASE WHEN success THEN 1 ELSE 0 END FROM _sqlx_migrations
                 ORDER BY version",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            (rows, applied)
        };
        let (ours_schema, ours_applied) = schema(ours.pool().clone()).await;
        let (theirs_schema, theirs_applied) = schema(theirs.clone()).await;
        assert!(ours_schema.iter().any(|(_, name, _)| name == "journeys"), "{ours_schema:?}");
        assert_eq!(ours_schema, theirs_schema);
        assert_eq!(ours_applied.len(), SQLITE_MIGRATIONS.iter().count());
        assert_eq!(ours_applied, theirs_applied);
        // sqlx's migrator takes the rows as its own: nothing pending, nothing run again.
        assert!(!migrations_pending(ours.pool(), &SQLITE_MIGRATIONS).await);
        SQLITE_MIGRATIONS.run(ours.pool()).await.unwrap();
        assert_eq!(schema(ours.pool().clone()).await.1, theirs_applied);
        // A second process that also found the file new leaves it to sqlx once it has the lock.
        let late = lite::open(&dir.path().join("ours.db")).unwrap();
        assert!(!lite::migrate_new_file(&late, &SQLITE_MIGRATIONS).unwrap());
        assert_eq!(schema(ours.pool().clone()).await.1, theirs_applied);
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
            phones: Vec::new(),
            ring: Default::default(),
            from: E164::parse("+14155550100").unwrap(),
            call_token: None,
            screening: None,
            amd: true,
            caller: None,
            caller_name: None,
            callback: None,
            transferred: false,
        };
        let event = Event::ReservationCreated { task, reservation, caller: Some(caller), target };
        Delivery::to_keys(keys, vec![event], POLICY).with_audit("taskrouter", "reservation.created", None, "{}".into())
    }

    fn arrived(call: usize) -> Delivery {
        let caller: twilio::sid::CallSid = sid("CA", call);
        let events = vec![
            Event::CallerArrived { call: caller.clone() },
            Event::CallerEnqueued { location: "north".into(), language: None },
        ];
        let mut d = Delivery::to_keys([caller.to_string()], events, POLICY);
        d.caller = Some(NewCall { from: "+14155550100".into(), to: "+14155550999".into() });
        d
    }

    fn dials(actions: &[(String, OutboxState, Option<String>)]) -> Vec<(&str, OutboxState)> {
        actions.iter().filter(|(k, _, _)| k.starts_with("dial:")).map(|(k, s, _)| (k.as_str(), *s)).collect()
    }

    async fn a_reservation_queues_one_dial_however_often_it_arrives(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
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

    async fn a_journey_begins_at_any_event_and_keeps_one_row_per_caller(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // A Studio flow enqueued the caller: no /incoming-call came first.
        let d = s.deliver(created(2, 2)).await.unwrap();
        assert_eq!(d.queued, 1);
        let d2 = s.deliver(arrived(2)).await.unwrap();
        assert_eq!(d2.journey, d.journey, "found by the caller's SID");
        let calls = s.calls().await.unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].from_number, "+14155550100", "filled in when the caller's webhook came");
    }

    async fn a_dial_still_in_the_outbox_is_withdrawn_when_its_reservation_ends(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(3)).await.unwrap();
        s.deliver(created(3, 3)).await.unwrap();
        let (task, reservation) = (sid("WT", 3), sid::<twilio::sid::ReservationSid>("WR", 3));
        let ended = Event::ReservationEnded { task, reservation: reservation.clone(), why: ReservationEnd::Timeout };
        let d = s.deliver(Delivery::to_keys([reservation.to_string()], vec![ended], POLICY)).await.unwrap();
        assert_eq!(d.queued, 0, "nothing new: the dial is withdrawn, not re-sent");
        assert_dial_withdrawn(&s, &reservation).await;
    }

    /// The reservation's dial was withdrawn before it went out: done, never
    /// claimed, and the journey knows the attempt made no call.
    async fn assert_dial_withdrawn(s: &Store, reservation: &twilio::sid::ReservationSid) {
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| k.starts_with("dial:")).unwrap();
        assert_eq!(*state, OutboxState::Done, "{actions:?}");
        assert!(why.as_deref().unwrap().starts_with("withdrawn"), "{why:?}");
        assert!(s.claim(Lane::Dial, 10).await.unwrap().is_empty());
        let json = s.journey_json(reservation.as_str()).await.unwrap().unwrap();
        assert!(json.contains("not_placed"), "the journey knows the attempt made no call: {json}");
    }

    async fn a_dial_queued_and_withdrawn_by_one_delivery_to_a_new_journey_is_never_sent(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // The journey's first delivery (its row not yet written) carries the
        // reservation and its end: the dial it queues is withdrawn at once.
        let (task, reservation) = (sid("WT", 9), sid::<twilio::sid::ReservationSid>("WR", 9));
        let mut d = arrived(9);
        d.events.extend(created(9, 9).events);
        d.events.push(Event::ReservationEnded { task, reservation: reservation.clone(), why: ReservationEnd::Timeout });
        s.deliver(d).await.unwrap();
        assert_dial_withdrawn(&s, &reservation).await;
    }

    async fn a_delivery_that_changes_nothing_writes_nothing(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(5)).await.unwrap();
        s.deliver(created(5, 5)).await.unwrap();
        let (reservation, leg) = (sid::<twilio::sid::ReservationSid>("WR", 5), sid::<twilio::sid::CallSid>("CA", 105));
        let placed = Event::DialPlaced { reservation: reservation.clone(), attempt: 1, leg: leg.clone() };
        s.deliver(Delivery::to_keys([reservation.to_string()], vec![placed], POLICY)).await.unwrap();
        let answered = || {
            let event = Event::LegAnswered {
                reservation: reservation.clone(),
                attempt: Some(1),
                leg: leg.clone(),
                answered_by: crate::journey::AnsweredBy::Human,
            };
            Delivery::to_keys([reservation.to_string(), leg.to_string()], vec![event], POLICY)
        };
        let row = || async {
            let row: (i64, i64, String) = sqlx::query_as("SELECT version, updated_at_ms, state_json FROM journeys")
                .fetch_one(s.pool())
                .await
                .unwrap();
            let calls: i64 = sqlx::query_scalar("SELECT updated_at_ms FROM calls").fetch_one(s.pool()).await.unwrap();
            (row, calls)
        };
        // The first answer changes the journey: it is written.
        let before = row().await;
        let first = s.deliver(answered()).await.unwrap();
        assert!(matches!(first.answer, Answer::Bridge { .. }), "{:?}", first.answer);
        let after = row().await;
        assert_eq!(after.0.0, before.0.0 + 1, "the answer is a new version");
        // Twilio asks again: the same answer, and nothing written, not even a time.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = s.deliver(answered()).await.unwrap();
        assert_eq!(format!("{:?}", again.answer), format!("{:?}", first.answer));
        assert_eq!((again.queued, again.journey), (0, first.journey));
        assert_eq!(row().await, after, "a repeated webhook leaves the journey's and the call's rows alone");
    }

    /// Caller `n`'s location was busy: the journey owes the redirect to voicemail.
    async fn busy_with_redirect_owed(s: &Store, n: usize) -> String {
        use crate::journey::CallStatus;
        s.deliver(arrived(n)).await.unwrap();
        s.deliver(created(n, n)).await.unwrap();
        let (reservation, leg) =
            (sid::<twilio::sid::ReservationSid>("WR", n), sid::<twilio::sid::CallSid>("CA", n + 100));
        let events = vec![
            Event::DialPlaced { reservation: reservation.clone(), attempt: 1, leg: leg.clone() },
            Event::LegStatus {
                reservation: reservation.clone(),
                attempt: Some(1),
                leg,
                status: CallStatus::Busy,
                sequence: Some(2),
            },
        ];
        s.deliver(Delivery::to_keys([reservation.to_string()], events, POLICY)).await.unwrap();
        let key = format!("redirect:{}", sid::<twilio::sid::CallSid>("CA", n));
        let actions = s.actions().await.unwrap();
        assert!(actions.iter().any(|(k, state, _)| *k == key && *state == OutboxState::Pending), "{actions:?}");
        key
    }

    async fn a_redirect_to_voicemail_still_in_the_outbox_is_withdrawn_once_the_caller_is_out_of_the_queue(
        backend: Backend,
    ) {
        let Some((s, _d)) = store(backend).await else { return };
        let hung_up = |n: usize| {
            let caller: twilio::sid::CallSid = sid("CA", n);
            let status = Event::CallerStatus { status: crate::journey::CallStatus::Completed, sequence: Some(9) };
            Delivery::to_keys([caller.to_string()], vec![status], POLICY)
        };
        // Still pending when the caller hangs up (as when `/hold` lets them go
        // by `<Leave>` after the grace): dropped, and never claimed.
        let key = busy_with_redirect_owed(&s, 7).await;
        assert_eq!(s.deliver(hung_up(7)).await.unwrap().queued, 0, "a withdrawal queues nothing");
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| *k == key).unwrap();
        assert_eq!(*state, OutboxState::Done);
        assert!(why.as_deref().unwrap().starts_with("withdrawn"), "{why:?}");
        let claimed = s.claim(Lane::Other, 10).await.unwrap();
        assert!(!claimed.iter().any(|r| r.key == key), "{claimed:?}");

        // Already claimed by the dispatcher: on its way, it is left alone.
        let key = busy_with_redirect_owed(&s, 8).await;
        let claimed = s.claim(Lane::Other, 10).await.unwrap();
        assert!(claimed.iter().any(|r| r.key == key), "{claimed:?}");
        s.deliver(hung_up(8)).await.unwrap();
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| *k == key).unwrap();
        assert_eq!((*state, why.as_deref()), (OutboxState::Sending, None));
    }

    async fn an_interrupted_dial_is_never_resent_but_an_update_is(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(4)).await.unwrap();
        s.deliver(created(4, 4)).await.unwrap();
        let hang_up = Command::HangUp { leg: sid("CA", 99), round: 1 };
        s.enqueue_command(&hang_up).await.unwrap();
        assert_eq!(s.claim(Lane::Dial, 10).await.unwrap().len(), 1);
        assert_eq!(s.claim(Lane::Other, 10).await.unwrap().len(), 1);
        // Another instance on the same database: the claims are not yet
        // expired and not its own, so it leaves them alone.
        let other = s.clone().owned_by("other", 60_000);
        assert_eq!(other.take_over(Orphans::Expired, POLICY).await.unwrap(), (0, 0));
        assert_eq!(other.take_over(Orphans::ExpiredAndMine, POLICY).await.unwrap(), (0, 0));
        // This instance's name after a restart takes back what it held.
        assert_eq!(s.take_over(Orphans::ExpiredAndMine, POLICY).await.unwrap(), (1, 1));
        let actions = s.actions().await.unwrap();
        assert!(actions.iter().any(|(k, st, _)| k.starts_with("dial:") && *st == OutboxState::Unknown), "{actions:?}");
        assert!(actions.iter().any(|(k, st, _)| k.starts_with("hang-up:") && *st == OutboxState::Pending));
        let json = s.journey_json(sid::<twilio::sid::CallSid>("CA", 4).as_str()).await.unwrap().unwrap();
        assert!(json.contains("\"unknown\""), "the journey looks the call up instead: {json}");
        assert_eq!(s.due_journeys(now_ms() + 60_000, 10).await.unwrap().len(), 1, "it wants a tick for the lookup");
    }

    async fn a_claim_whose_lease_expired_is_taken_over_by_another_instance(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(5)).await.unwrap();
        s.deliver(created(5, 5)).await.unwrap();
        s.enqueue_command(&Command::HangUp { leg: sid("CA", 98), round: 1 }).await.unwrap();
        // The first instance's claims last 1 ms; it then "dies".
        let dead = s.clone().owned_by("dead", 1);
        assert_eq!(dead.claim(Lane::Dial, 10).await.unwrap().len(), 1);
        assert_eq!(dead.claim(Lane::Other, 10).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let alive = s.clone().owned_by("alive", 60_000);
        assert_eq!(alive.take_over(Orphans::Expired, POLICY).await.unwrap(), (1, 1));
        assert_eq!(alive.take_over(Orphans::Expired, POLICY).await.unwrap(), (0, 0), "once only");
        // The update is claimed again by the live instance; the dial never is.
        let again = alive.claim(Lane::Other, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert!(alive.claim(Lane::Dial, 10).await.unwrap().is_empty());
        // A live instance's claim is left alone by the others.
        assert_eq!(dead.take_over(Orphans::ExpiredAndMine, POLICY).await.unwrap(), (0, 0));
    }

    async fn one_instance_at_a_time_holds_a_named_lease(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let (a, b) = (s.clone().owned_by("a", 60_000), s.clone().owned_by("b", 60_000));
        assert!(a.hold_lease("reconciler", 60_000).await.unwrap());
        assert!(!b.hold_lease("reconciler", 60_000).await.unwrap(), "held by a");
        assert!(a.hold_lease("reconciler", 60_000).await.unwrap(), "a renews");
        a.release_lease("reconciler").await.unwrap();
        assert!(b.hold_lease("reconciler", 1).await.unwrap(), "free once a gives it up");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(a.hold_lease("reconciler", 60_000).await.unwrap(), "b's lease expired");
        assert!(!b.hold_lease("reconciler", 60_000).await.unwrap());
    }

    async fn a_retry_waits_in_the_outbox_not_in_a_slot_and_lanes_are_separate(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
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

    async fn a_failed_batch_is_written_again_one_by_one_so_only_the_bad_write_fails(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // One poisoned event makes its whole transaction fail.
        let trigger: &[&'static str] = match backend {
            Backend::Sqlite => &["CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.payload = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END"],
            Backend::Postgres => &[
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.payload = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
                "CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom()",
            ],
        };
        for sql in trigger {
            sqlx::query(*sql).execute(&s.writer).await.unwrap();
        }
        // Hold the writer so that the requests queue into one batch: on
        // PostgreSQL its pooled connection; on a SQLite file, whose writer is
        // a thread with its own connection, the database's write lock.
        let mut held = s.writer.acquire().await.unwrap();
        if backend == Backend::Sqlite {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *held).await.unwrap();
        }
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
        if backend == Backend::Sqlite {
            sqlx::query("ROLLBACK").execute(&mut *held).await.unwrap();
        }
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

    async fn a_closed_database_is_an_error_for_every_caller(backend: Backend) {
        // The batches go through sqlx's writer pool, which is closed here: on
        // PostgreSQL, and on SQLite in memory (a SQLite file's writer is its
        // own thread: see the next test).
        let (s, _d) = match backend {
            Backend::Sqlite => (Store::connect("sqlite::memory:").await.unwrap(), None),
            Backend::Postgres => match store(backend).await {
                Some((s, d)) => (s, Some(d)),
                None => return,
            },
        };
        s.writer.close().await;
        let (a, b) = tokio::join!(s.deliver(created(1, 1)), s.deliver(created(2, 2)));
        assert!(a.is_err() && b.is_err());
    }

    async fn a_database_that_refuses_writes_is_an_error_for_every_caller(backend: Backend) {
        // A table the writer writes to is gone, so every write of the batch,
        // and each written again alone, fails.
        let Some((s, _d)) = store(backend).await else { return };
        sqlx::query("DROP TABLE call_statuses").execute(&s.pool).await.unwrap();
        sqlx::query("DROP TABLE events").execute(&s.pool).await.unwrap();
        let (a, b) = tokio::join!(s.deliver(created(1, 1)), s.deliver(created(2, 2)));
        let (a, b) = (format!("{:#}", a.unwrap_err()), format!("{:#}", b.unwrap_err()));
        assert!(a.contains("events"), "{a}");
        assert!(b.contains("events"), "{b}");
        // Nothing of either was kept.
        assert!(s.actions().await.unwrap().is_empty());
    }

    async fn concurrent_claims_hand_out_each_pending_action_once(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
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

    /// A caller from `from` turned away as after hours at `north`.
    fn after_hours(call: usize, from: &str) -> Delivery {
        let caller: twilio::sid::CallSid = sid("CA", call);
        let away = Event::CallerTurnedAway { outcome: Outcome::AfterHours, location: Some("north".into()) };
        let mut d = Delivery::to_keys([caller.to_string()], vec![Event::CallerArrived { call: caller }, away], POLICY);
        d.caller = Some(NewCall { from: from.into(), to: "+14155550999".into() });
        d
    }

    async fn history_pages_newest_first_and_filters(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let t0 = now_ms();
        for i in 1..=5 {
            s.deliver(arrived(i)).await.unwrap();
        }
        s.deliver(after_hours(6, "+14155550166")).await.unwrap();
        let all = s.history_calls(&CallFilter { limit: 50, ..CallFilter::default() }).await.unwrap();
        assert_eq!(all.len(), 6);
        let order: Vec<(i64, &str)> = all.iter().map(|h| (h.call.created_at_ms, h.call.call_sid.as_str())).collect();
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(order, sorted, "newest first, then by SID");
        // Two at a time through the keyset: nothing repeated or missed.
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = s.history_calls(&CallFilter { limit: 2, after: after.clone(), ..CallFilter::default() }).await;
            let page = page.unwrap();
            if page.is_empty() {
                break;
            }
            let last = &page.last().unwrap().call;
            after = Some((last.created_at_ms, last.call_sid.clone()));
            seen.extend(page.into_iter().map(|h| h.call.call_sid));
        }
        assert_eq!(seen, all.iter().map(|h| h.call.call_sid.clone()).collect::<Vec<_>>());
        let count = |f: CallFilter| {
            let s = s.clone();
            async move { s.history_calls(&CallFilter { limit: 50, ..f }).await.unwrap().len() }
        };
        assert_eq!(count(CallFilter { location: Some("north".into()), ..Default::default() }).await, 6);
        assert_eq!(count(CallFilter { location: Some("south".into()), ..Default::default() }).await, 0);
        assert_eq!(count(CallFilter { outcome: Some(Outcome::AfterHours), ..Default::default() }).await, 1);
        assert_eq!(count(CallFilter { outcome: Some(Outcome::Pending), ..Default::default() }).await, 5);
        assert_eq!(count(CallFilter { caller: Some("+14155550166".into()), ..Default::default() }).await, 1);
        assert_eq!(count(CallFilter { from_ms: Some(t0), ..Default::default() }).await, 6);
        assert_eq!(count(CallFilter { to_ms: Some(t0), ..Default::default() }).await, 0);
        assert_eq!(count(CallFilter { from_ms: Some(now_ms() + 1), ..Default::default() }).await, 0);
    }

    async fn history_reads_a_calls_webhooks_statuses_and_actions(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let caller = sid::<twilio::sid::CallSid>("CA", 7).to_string();
        let reservation = sid::<twilio::sid::ReservationSid>("WR", 7).to_string();
        s.deliver(arrived(7)).await.unwrap();
        let mut d = created(7, 7);
        d.audit.as_mut().unwrap().resource_sid = Some(reservation.clone());
        s.deliver(d).await.unwrap();
        let mut left = Delivery::to_keys(
            [caller.clone()],
            vec![Event::QueueExit { result: crate::journey::QueueResult::Hangup, queue: None }],
            POLICY,
        )
        .with_audit("voice", "queue.hangup", Some(&caller), r#"{"QueueTime":"12"}"#.into());
        left.status = None;
        s.deliver(left).await.unwrap();
        let mut ended = Delivery::to_keys(
            [caller.clone()],
            vec![Event::CallerStatus { status: crate::journey::CallStatus::Completed, sequence: Some(3) }],
            POLICY,
        );
        ended.status = Some(StatusRecord {
            call_sid: caller.clone(),
            inbound_call_sid: None,
            status: "completed".into(),
            sequence_number: Some(3),
            call_duration: Some(30),
            answered_by: None,
            sip_response_code: None,
        });
        s.deliver(ended).await.unwrap();

        let call = s.history_call(&caller).await.unwrap().unwrap();
        assert_eq!((call.wait_secs, call.call.outcome), (Some(12), Outcome::CallerHungUp));
        assert!(call.ended_at_ms.is_some_and(|t| t >= call.call.created_at_ms), "{call:?}");
        assert!(s.history_call("CA-none").await.unwrap().is_none());

        let journey = s.journey_of(&caller).await.unwrap().unwrap();
        let sids = journey_sids(&caller, Some(&journey));
        assert!(sids.contains(&reservation) && sids.contains(&caller), "{sids:?}");
        let events = s.events_for(&sids).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(kinds, ["reservation.created", "queue.hangup"]);
        let statuses = s.statuses_for(&sids).await.unwrap();
        assert_eq!(statuses.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["completed"]);
        assert_eq!(statuses[0].call_duration, Some(30));
        let actions = s.actions_of(journey.id).await.unwrap();
        assert!(actions.iter().any(|a| a.kind == "dial" && a.key == format!("dial:{reservation}")), "{actions:?}");
        assert!(s.actions_of(journey.id + 1000).await.unwrap().is_empty());
    }

    async fn the_board_counts_callers_and_todays_outcomes(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let t0 = now_ms();
        assert!(s.live_board(100).await.unwrap().is_empty());
        s.deliver(arrived(1)).await.unwrap();
        s.deliver(arrived(2)).await.unwrap();
        s.deliver(after_hours(3, "+14155550103")).await.unwrap();
        let board = s.live_board(100).await.unwrap();
        assert_eq!(board.len(), 1, "{board:?}");
        let north = &board[0];
        assert_eq!((north.location.as_str(), north.waiting, north.bridged), ("north", 2, 0));
        assert!(north.oldest_waiting_ms.is_some_and(|t| t >= t0 && t <= now_ms()), "{north:?}");
        assert_eq!(s.live_callers(100).await.unwrap(), [("north".to_owned(), 2, 0)], "the metrics read the same");
        assert_eq!(s.outcomes_since("north", t0).await.unwrap(), [(Outcome::AfterHours, 1)], "pending not counted");
        assert!(s.outcomes_since("north", now_ms() + 1).await.unwrap().is_empty());
        assert!(s.outcomes_since("south", t0).await.unwrap().is_empty());
    }

    async fn a_callers_place_counts_those_waiting_before_them_and_handled_calls_give_their_length(backend: Backend) {
        use crate::announce::Standing;
        use crate::journey::CallStatus;
        let Some((s, _d)) = store(backend).await else { return };
        for c in 1..=3 {
            s.deliver(arrived(c)).await.unwrap();
        }
        let ca = |n: usize| sid::<twilio::sid::CallSid>("CA", n).to_string();
        let standing = |ahead, in_use| Some(Standing { ahead, lines: 2, in_use });
        assert_eq!(s.standing(&ca(1), 2).await.unwrap(), standing(0, 0));
        assert_eq!(s.standing(&ca(2), 2).await.unwrap(), standing(1, 0));
        assert_eq!(s.standing(&ca(3), 2).await.unwrap(), standing(2, 0));
        assert_eq!(s.standing(&ca(9), 2).await.unwrap(), None, "a call with no journey");
        assert!(s.handle_times("north", 0, 20).await.unwrap().is_empty());

        // The first caller is connected: it holds a line and is no longer ahead of anyone.
        s.deliver(created(1, 1)).await.unwrap();
        let (task, res, leg): (twilio::sid::TaskSid, twilio::sid::ReservationSid, twilio::sid::CallSid) =
            (sid("WT", 1), sid("WR", 1), sid("CA", 101));
        let events = vec![
            Event::DialPlaced { reservation: res.clone(), attempt: 1, leg: leg.clone() },
            Event::ReservationAccepted { task, reservation: res.clone() },
        ];
        s.deliver(Delivery::to_keys([res.to_string()], events, POLICY)).await.unwrap();
        assert_eq!(s.standing(&ca(1), 2).await.unwrap(), None, "connected, not waiting");
        assert_eq!(s.standing(&ca(2), 2).await.unwrap(), standing(0, 1));
        assert_eq!(s.standing(&ca(3), 2).await.unwrap(), standing(1, 1));
        assert!(s.handle_times("north", 0, 20).await.unwrap().is_empty(), "still under way");

        // Its location leg ends after 125 s: a handled call of that length.
        let status = Event::LegStatus {
            reservation: res.clone(),
            attempt: Some(1),
            leg: leg.clone(),
            status: CallStatus::Completed,
            sequence: Some(3),
        };
        let mut d = Delivery::to_keys([res.to_string(), leg.to_string()], vec![status], POLICY);
        d.status = Some(StatusRecord {
            call_sid: leg.to_string(),
            inbound_call_sid: Some(ca(1)),
            status: "completed".into(),
            sequence_number: Some(3),
            call_duration: Some(125),
            answered_by: None,
            sip_response_code: None,
        });
        s.deliver(d).await.unwrap();
        assert_eq!(s.handle_times("north", 0, 20).await.unwrap(), [125]);
        assert!(s.handle_times("north", now_ms() + 1, 20).await.unwrap().is_empty(), "outside the window");
        assert!(s.handle_times("south", 0, 20).await.unwrap().is_empty());
        assert!(s.handle_times("north", 0, 0).await.unwrap().is_empty());
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
        assert_eq!(
            redact_url("postgres://h:5432/db?user=u&password=p&sslmode=x"),
            "postgres://h:5432/db?user=u&password=***&sslmode=x"
        );
        assert_eq!(redact_url("postgresql://u:p%40ss@h/db?password=p"), "postgresql://***@h/db?password=***");
        assert_eq!(redact_url("sqlite://x.db?mode=rwc"), "sqlite://x.db?mode=rwc");
    }

    #[tokio::test]
    async fn an_unreachable_postgres_says_why_once_and_hides_the_password() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://user:hunter2@127.0.0.1:{port}/db");
        let Err(e) = Store::connect(&url).await else { panic!("nothing listens there") };
        let text = format!("{e:#}");
        assert!(text.starts_with(&format!("opening database postgres://***@127.0.0.1:{port}/db: ")), "{text}");
        assert_eq!(text.matches("refused").count(), 1, "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
