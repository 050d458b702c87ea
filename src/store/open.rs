//! Opening a database: the backend its URL names, the pools, the
//! migrations, and on SQLite the writer's own connection. Whatever differs
//! by backend when a store opens is here.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection as _, Executor, Row};

use super::outbox::Lease;
use super::{DEFAULT_LEASE_MS, Store, batch, lite};

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
    /// On PostgreSQL, the most connections this process opens: a quarter
    /// (1 to 4) write batches, the rest serve reads. SQLite always uses one writer and
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

/// Whether opening a store applies the pending migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Migrate {
    Yes,
    No,
}

/// How many of PostgreSQL's `max_connections` write batches side by side
/// (the rest serve reads): a quarter, 1 to 4. A batch spends most of its
/// time waiting for the server's answer to each statement, one at a time,
/// so one writer left the database and the cores idle; several batches
/// that touch the same journeys wait for each other's row locks (taken in
/// one order: `journeys::lock_in_order`), as batches of two instances do.
pub(super) fn postgres_writers(max_connections: u32) -> u32 {
    (max_connections / 4).clamp(1, 4)
}

/// The read pool's size on SQLite, where reads run beside the one writer (WAL).
pub const SQLITE_READERS: u32 = 4;
/// A PostgreSQL connection idle this long is closed.
const POSTGRES_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A PostgreSQL connection is replaced after this long, so that none lives for ever.
const POSTGRES_MAX_LIFETIME: Duration = Duration::from_secs(1800);

impl Store {
    /// Opens (creating if needed) the database at `url` and migrates it,
    /// with the default pool settings.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Store::connect_with(url, PoolSettings::default()).await
    }

    /// Opens the database at `url` (its scheme picks the backend: `sqlite:`
    /// or `postgres:`/`postgresql:`) and migrates it.
    pub async fn connect_with(url: &str, settings: PoolSettings) -> anyhow::Result<Store> {
        Store::open(url, settings, Migrate::Yes).await
    }

    /// Opens the database at `url` as it is, for reading: its migrations are
    /// not applied (`provision --dry-run`, which writes nothing). Only tables
    /// of the first migration can be relied on.
    pub async fn connect_unmigrated(url: &str, settings: PoolSettings) -> anyhow::Result<Store> {
        Store::open(url, settings, Migrate::No).await
    }

    async fn open(url: &str, settings: PoolSettings, migrate: Migrate) -> anyhow::Result<Store> {
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
        // sqlx's own words, as `telemetry::chain` gives them, kept as text so
        // that `{:#}` does not print sqlx's causes a second time; a pool's
        // timeout says how long it tried.
        let unreached = format!("no connection within {} s", settings.acquire_timeout.as_secs_f64());
        let said = move |e: sqlx::Error| match e {
            sqlx::Error::PoolTimedOut => anyhow::anyhow!("{unreached}"),
            e => anyhow::anyhow!("{}", crate::telemetry::chain(&e)),
        };
        let open = |max: u32| {
            let (url, said) = (url.clone(), said.clone());
            let pool = options(max);
            async move {
                pool.connect(&url).await.map_err(said).with_context(|| format!("opening database {}", redact_url(&url)))
            }
        };
        // A pool that cannot connect retries a refused connection until its
        // acquire timeout, and then says only that it timed out; one plain
        // connection beside it reports why at once (refused, no such
        // database, authentication), within the same time.
        let probe = || async {
            let opened = tokio::time::timeout(settings.acquire_timeout, sqlx::AnyConnection::connect(&url)).await;
            let probe = opened
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
                .map_err(said.clone())
                .with_context(|| format!("opening database {}", redact_url(&url)))?;
            let _ = probe.close().await;
            anyhow::Ok(())
        };
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
            // Some of `max_connections` are the writers'. The probe and each
            // pool's first connection open side by side (each is a new
            // process on the server's side, ~3 ms; one after another they
            // were a third of the time to the first answer), and the first
            // error ends the wait.
            Backend::Postgres => {
                let writers = postgres_writers(settings.max_connections);
                let readers = settings.max_connections.saturating_sub(writers).max(1);
                let (writer, pool, ()) = tokio::try_join!(open(writers), open(readers), probe())?;
                (writer, pool)
            }
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
        // connection (as the squashed schema when it stands for them: see
        // `lite::migrate_new_file`), recorded as sqlx records them (sqlx's
        // migrator runs each in a transaction of its own, a dozen round trips
        // apiece).
        let migrated = match &lite {
            Some((conn, _)) if fresh_file && migrate == Migrate::Yes => {
                lite::migrate_new_file(conn, migrator).context("migrating the new database")?
            }
            _ => false,
        };
        // sqlx's run takes its lock, creates its table if needed and reads it
        // again, a round trip each, even when nothing is pending: one read
        // tells whether anything is.
        if migrate == Migrate::Yes && !migrated && (fresh_file || migrations_pending(&pool, migrator).await) {
            migrator.run(&pool).await.context("migrating the database")?;
        }
        let (batcher, queue) = batch::queue();
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
                let writers = match backend {
                    Backend::Sqlite => 1,
                    Backend::Postgres => postgres_writers(settings.max_connections),
                };
                for _ in 0..writers {
                    tokio::spawn(batch::run(batch::SqlxWriter::new(writer.clone(), begin), queue.clone()));
                }
            }
        }
        let lease = Lease { owner: format!("store-{:016x}", rand::random::<u64>()).into(), ms: DEFAULT_LEASE_MS };
        Ok(Store { pool, writer, batcher, lease, backend, desk: Default::default() })
    }
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
    use super::super::testing::{arrived, created, sid, store};
    use super::*;
    use crate::outbox::Lane;
    use crate::test_backends::Backend;

    #[test]
    fn sqlite_paths() {
        use std::path::PathBuf;
        assert_eq!(sqlite_path("sqlite://call-router.db"), Some(PathBuf::from("call-router.db")));
        assert_eq!(sqlite_path("sqlite:call-router.db"), Some(PathBuf::from("call-router.db")));
        assert_eq!(sqlite_path("sqlite:///var/db/x.db?mode=rwc"), Some(PathBuf::from("/var/db/x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://u:p@h/db"), None);
    }

    /// Each way a PostgreSQL database fails to open is said at once, in the
    /// server's words, with no line of the server's source in them.
    #[tokio::test]
    async fn on_postgres_a_database_that_does_not_open_says_why_at_once() {
        let Some(db) = Backend::Postgres.database().await else { return };
        let missing = match db.url.split_once('?') {
            Some((base, query)) => format!("{base}_missing?{query}"),
            None => format!("{}_missing", db.url),
        };
        let settings = PoolSettings { acquire_timeout: Duration::from_secs(10), ..PoolSettings::default() };
        let Err(e) = Store::connect_with(&missing, settings).await else {
            panic!("opened a database that does not exist")
        };
        let said = format!("{e:#}");
        assert!(said.contains("_missing\" does not exist"), "{said}");
        assert!(!said.contains(" at line "), "{said}");
        // `provision` and `locations` look at the schema first, on a connection of their own.
        let Err(e) = crate::check::schema_of(&missing).await else {
            panic!("read the schema of a database that does not exist")
        };
        let said = format!("{e:#}");
        assert!(said.contains("_missing\" does not exist"), "{said}");
        assert!(!said.contains(" at line "), "{said}");
        // Nothing listens on port 1: the pools would retry until their
        // acquire timeout; the probe beside them ends the wait.
        let started = std::time::Instant::now();
        let Err(e) = Store::connect_with("postgres://nobody@127.0.0.1:1/none", settings).await else {
            panic!("opened a database on a port nothing listens on")
        };
        let said = format!("{e:#}");
        assert!(said.contains("Connection refused"), "{said}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}: {said}", started.elapsed());
    }

    on_both_backends!(
        migrations_are_skipped_when_none_is_pending_and_applied_when_one_is,
        the_queue_columns_keep_their_values_when_they_stop_being_generated,
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

    /// Migration 11 turns the journeys' generated `location`, `caller_state`
    /// and `waiting_since_ms` into columns the store writes: the rows already
    /// there keep what was generated for them, and the index still finds them.
    async fn the_queue_columns_keep_their_values_when_they_stop_being_generated(backend: Backend) {
        let Some(db) = backend.database().await else { return };
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&sqlite_url_with_create(&db.url)).await.unwrap();
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run_to(10, &pool).await.unwrap();
        let states = [
            r#"{"location":"north","caller":{"state":"queued"},"wait":{"since_ms":1700000000123}}"#,
            r#"{"location":"south","caller":{"state":"bridged"},"wait":{}}"#,
            r#"{"caller":{"state":"unseen"},"wait":{}}"#,
        ];
        for json in states {
            sqlx::query(
                "INSERT INTO journeys (state_json, version, wake_at_ms, closed, degraded, created_at_ms, updated_at_ms)
                 VALUES ($1, 1, NULL, 0, 0, 0, 0)",
            )
            .bind(json)
            .execute(&pool)
            .await
            .unwrap();
        }
        let read = || async {
            let rows: Vec<(Option<String>, Option<String>, Option<i64>)> =
                sqlx::query_as("SELECT location, caller_state, waiting_since_ms FROM journeys ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            rows
        };
        let generated = read().await;
        assert_eq!(generated[0], (Some("north".into()), Some("queued".into()), Some(1_700_000_000_123)));
        migrator.run(&pool).await.unwrap();
        assert_eq!(read().await, generated, "the values were kept");
        // Written now, not generated: a new state leaves them as they are.
        sqlx::query("UPDATE journeys SET state_json = '{}'").execute(&pool).await.unwrap();
        assert_eq!(read().await, generated);
        let queued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM journeys WHERE closed = 0 AND location = 'north' AND caller_state = 'queued'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(queued, 1);
        let index = match backend {
            Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND name = 'journeys_waiting'",
            Backend::Postgres => "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'journeys_waiting'",
        };
        let indexes: i64 = sqlx::query_scalar(index).fetch_one(&pool).await.unwrap();
        assert_eq!(indexes, 1, "journeys_waiting is there");
    }

    /// Migration 12 rebuilds SQLite's `journey_keys` without a rowid: the
    /// keys already there still find their journeys, and a key written again
    /// still changes nothing.
    #[tokio::test]
    async fn journey_keys_keep_their_rows_when_they_lose_their_rowid() {
        let Some(db) = Backend::Sqlite.database().await else { return };
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&sqlite_url_with_create(&db.url)).await.unwrap();
        SQLITE_MIGRATIONS.run_to(11, &pool).await.unwrap();
        for (sid, journey) in [("CA01", 1i64), ("WT01", 1), ("WR02", 2)] {
            sqlx::query("INSERT INTO journey_keys (sid, journey_id) VALUES ($1, $2)")
                .bind(sid)
                .bind(journey)
                .execute(&pool)
                .await
                .unwrap();
        }
        SQLITE_MIGRATIONS.run(&pool).await.unwrap();
        let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE name = 'journey_keys'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(sql.ends_with("WITHOUT ROWID"), "{sql}");
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT sid, journey_id FROM journey_keys ORDER BY sid").fetch_all(&pool).await.unwrap();
        assert_eq!(rows, [("CA01".to_owned(), 1), ("WR02".to_owned(), 2), ("WT01".to_owned(), 1)]);
        let again =
            sqlx::query("INSERT INTO journey_keys (sid, journey_id) VALUES ($1, $2) ON CONFLICT (sid) DO NOTHING")
                .bind("WR02")
                .bind(9i64)
                .execute(&pool)
                .await
                .unwrap();
        assert_eq!(again.rows_affected(), 0);
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
    async fn a_sqlite_file_that_cannot_be_opened_says_why_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/no-such-dir/x.db", dir.path().display());
        let Err(e) = Store::connect(&url).await else { panic!("there is no such directory") };
        let text = format!("{e:#}");
        assert!(text.starts_with(&format!("opening database {url}")), "{text}");
        assert_eq!(text.matches("unable to open database file").count(), 1, "{text}");
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
