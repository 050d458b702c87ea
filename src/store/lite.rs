//! The SQLite writer: one rusqlite connection, owned by one thread, that
//! writes each batch of the group commit in a single call.
//!
//! Through sqlx every statement is a round trip to its SQLite worker thread
//! (a channel send, a wake-up, a reply): a delivery costs about ten of them,
//! and on two cores each one is a context switch. Here a batch crosses
//! threads once: the batcher's thread runs every statement of the batch
//! itself, against prepared statements it keeps.
//!
//! The connection opens after sqlx has created the file, and only ever
//! writes; the reads stay on sqlx's pool (WAL lets them run beside the
//! writer). A new file's migrations also run here ([`migrate_new_file`]).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::types::ValueRef;

use super::sql::{Arg, Cell, Conn, Insert, Row};

/// Enough for every statement the writer runs, so none is prepared twice.
const STATEMENT_CACHE: usize = 64;

/// `$1` … `$16`: the parameter names the statements use.
const NAMES: [&str; 16] =
    ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$16"];

/// How long a statement waits for another connection's lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the writer's connection to an existing, migrated database file.
pub(super) fn open(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} for writing", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The same settings as sqlx's connections (see `Store::connect_with`).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = 0;",
    )
    .context("setting up the writer's connection")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// sqlx's table of applied migrations: the same columns and types as sqlx
/// creates, so that its migrator (and `migrations_pending`) read these rows
/// as its own and apply only later migrations.
const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Applies every migration of `migrator` to a new, empty file in one
/// transaction, recording each as sqlx would (version, description,
/// checksum, execution time in nanoseconds): at once as the squashed schema
/// (`migrations/sqlite-schema.sql`) when it was made from exactly these
/// migrations, else one by one. All or nothing: a failure rolls
/// back and leaves the file empty. Returns false, having done nothing, when
/// a migration must run outside a transaction (sqlx's `no_tx`), which only
/// sqlx's migrator does, or when the file is not new after all (another
/// process migrated it first).
pub(super) fn migrate_new_file(
    conn: &rusqlite::Connection,
    migrator: &sqlx::migrate::Migrator,
) -> anyhow::Result<bool> {
    let mut ups: Vec<_> = migrator.iter().filter(|m| !m.migration_type.is_down_migration()).collect();
    if ups.iter().any(|m| m.no_tx) {
        return Ok(false);
    }
    ups.sort_by_key(|m| m.version);
    // The write lock first: another process that found the file new at the
    // same moment waits here, then sees the table and leaves it to sqlx.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .context("starting the migrations' transaction")?;
    let begun: bool = tx
        .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = '_sqlx_migrations')", [], |r| r.get(0))
        .context("reading the schema")?;
    if begun {
        return Ok(false);
    }
    tx.execute_batch(MIGRATIONS_TABLE).context("creating the migrations' table")?;
    // When the squashed schema was made from exactly these migrations, it
    // stands for all of them, and each is recorded as applied with no time
    // of its own.
    let squashed = squashed_schema(&ups);
    if let Some(schema) = squashed {
        tx.execute_batch(schema).context("creating the schema (migrations/sqlite-schema.sql)")?;
    }
    for m in ups {
        let started = std::time::Instant::now();
        if squashed.is_none() {
            tx.execute_batch(m.sql.as_str()).with_context(|| format!("migration {} ({})", m.version, m.description))?;
        }
        let took = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            rusqlite::params![m.version, &*m.description, &*m.checksum, took],
        )
        .with_context(|| format!("recording migration {}", m.version))?;
    }
    tx.commit().context("committing the migrations")?;
    Ok(true)
}

/// The schema the migrations in `migrations/sqlite` make, as SQLite keeps
/// it, headed by the migrations it was made from (one `-- migration N
/// CHECKSUM` line each). A new file gets it in one step: the migrations one
/// by one spent most of their time rewriting tables they had just made
/// (migration 11 alone, 1.4 ms of a 3 ms total).
const SQUASHED_SCHEMA: &str = include_str!("../../migrations/sqlite-schema.sql");

/// The header line of the squashed schema for migration `m`.
fn squash_line(m: &sqlx::migrate::Migration) -> String {
    let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
    format!("-- migration {} {hex}", m.version)
}

/// The squashed schema, when it was made from exactly `ups` (in order of
/// version); None when any migration was added or changed since, and the
/// migrations must run one by one.
fn squashed_schema(ups: &[&sqlx::migrate::Migration]) -> Option<&'static str> {
    let made_from = SQUASHED_SCHEMA.lines().filter(|l| l.starts_with("-- migration "));
    let same = made_from.map(str::to_owned).eq(ups.iter().map(|m| squash_line(m)));
    same.then_some(SQUASHED_SCHEMA)
}

/// The writer's connection inside a transaction.
pub(super) struct LiteConn<'c>(pub(super) &'c rusqlite::Connection);

impl LiteConn<'_> {
    fn prepare(&self, sql: &'static str, args: &[Arg<'_>]) -> anyhow::Result<rusqlite::CachedStatement<'_>> {
        let mut st = self.0.prepare_cached(sql)?;
        anyhow::ensure!(args.len() <= NAMES.len(), "a statement with {} parameters", args.len());
        for (name, arg) in NAMES.iter().zip(args) {
            // A number the statement does not use is skipped (as sqlx does).
            let Some(i) = st.parameter_index(name)? else { continue };
            match *arg {
                Arg::Int(v) => st.raw_bind_parameter(i, v)?,
                Arg::Text(v) => st.raw_bind_parameter(i, v)?,
            }
        }
        Ok(st)
    }

    fn execute_now(&self, sql: &'static str, args: &[Arg<'_>]) -> anyhow::Result<u64> {
        let mut st = self.prepare(sql, args)?;
        Ok(st.raw_execute()? as u64)
    }

    /// An INSERT of one row; its rowid, or None when it inserted none.
    fn insert_now(&self, sql: &'static str, args: &[Arg<'_>]) -> anyhow::Result<Option<i64>> {
        let inserted = self.execute_now(sql, args)?;
        Ok((inserted > 0).then(|| self.0.last_insert_rowid()))
    }

    fn fetch_now(&self, sql: &'static str, args: &[Arg<'_>]) -> anyhow::Result<Vec<Row>> {
        let mut st = self.prepare(sql, args)?;
        let columns = st.column_count();
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let row = (0..columns)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(n) => Cell::Int(n),
                        ValueRef::Text(t) => Cell::Text(
                            std::str::from_utf8(t).with_context(|| format!("column {i} is not UTF-8"))?.to_owned(),
                        ),
                        ValueRef::Real(_) | ValueRef::Blob(_) => {
                            anyhow::bail!("column {i} is neither integer nor text")
                        }
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            out.push(Row(row));
        }
        Ok(out)
    }
}

impl Conn for LiteConn<'_> {
    // Synchronous underneath: each future is ready when it is made.
    fn execute(&mut self, sql: &'static str, args: &[Arg<'_>]) -> impl Future<Output = anyhow::Result<u64>> {
        std::future::ready(self.execute_now(sql, args))
    }

    fn fetch(&mut self, sql: &'static str, args: &[Arg<'_>]) -> impl Future<Output = anyhow::Result<Vec<Row>>> {
        std::future::ready(self.fetch_now(sql, args))
    }

    fn insert_id(&mut self, insert: Insert, args: &[Arg<'_>]) -> impl Future<Output = anyhow::Result<Option<i64>>> {
        std::future::ready(self.insert_now(insert.plain, args))
    }
}

#[cfg(test)]
mod tests {
    use super::super::sql::args;
    use super::*;

    fn conn() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT)").unwrap();
        c
    }

    fn now<T>(f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a rusqlite future was not ready"),
        }
    }

    /// The schema as it is after every migration in `migrations/sqlite`,
    /// in the squashed schema's form: the header, then each table and index
    /// as SQLite keeps it (tables first, in the order they were made).
    fn squash_of_the_migrations() -> String {
        let migrator = &crate::store::SQLITE_MIGRATIONS;
        let mut ups: Vec<_> = migrator.iter().filter(|m| !m.migration_type.is_down_migration()).collect();
        ups.sort_by_key(|m| m.version);
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for m in &ups {
            c.execute_batch(m.sql.as_str()).unwrap();
        }
        // The squash keeps the schema only: a migration that wrote rows or
        // set the user version would be lost to new files.
        assert_eq!(c.total_changes(), 0, "a SQLite migration writes rows: the squashed schema cannot stand for it");
        let user_version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(user_version, 0, "a SQLite migration sets user_version: the squashed schema cannot stand for it");
        let mut out = String::from(SQUASH_HEADER);
        for m in &ups {
            out.push_str(&squash_line(m));
            out.push('\n');
        }
        let mut st = c
            .prepare(
                "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name <> 'sqlite_sequence'
                 ORDER BY type = 'index', rowid",
            )
            .unwrap();
        for sql in st.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            out.push('\n');
            out.push_str(&sql.unwrap());
            out.push_str(";\n");
        }
        out
    }

    const SQUASH_HEADER: &str = "\
-- The schema the migrations in migrations/sqlite make, as SQLite keeps it:
-- what a new database file gets in one step (src/store/lite.rs) while the
-- migrations are exactly those listed below. Generated; do not edit. After
-- adding or changing a migration, make it again with
--   CALL_ROUTER_WRITE_SCHEMA=1 cargo test --lib squashed_schema
";

    #[test]
    fn the_squashed_schema_is_what_the_migrations_make() {
        let made = squash_of_the_migrations();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite-schema.sql");
        if std::env::var_os("CALL_ROUTER_WRITE_SCHEMA").is_some() {
            // What is compiled in is the file as it was: checked at the next build.
            std::fs::write(&path, &made).unwrap();
            return;
        }
        assert!(
            made == SQUASHED_SCHEMA,
            "migrations/sqlite-schema.sql is not what the migrations make: run \
             CALL_ROUTER_WRITE_SCHEMA=1 cargo test --lib squashed_schema"
        );
        let mut ups: Vec<_> = crate::store::SQLITE_MIGRATIONS.iter().collect();
        ups.sort_by_key(|m| m.version);
        assert!(squashed_schema(&ups).is_some(), "the squash stands for the migrations");
        // One migration fewer, or one more: not the migrations it was made from.
        assert!(squashed_schema(&ups[..ups.len() - 1]).is_none());
        let mut changed = (*ups[0]).clone();
        changed.checksum = std::borrow::Cow::Owned(vec![0; 48]);
        ups[0] = &changed;
        assert!(squashed_schema(&ups).is_none(), "a changed migration");
    }

    #[test]
    fn without_a_squash_made_from_them_the_migrations_run_one_by_one() {
        let mut ups: Vec<sqlx::migrate::Migration> = crate::store::SQLITE_MIGRATIONS.iter().cloned().collect();
        ups.sort_by_key(|m| m.version);
        ups.pop();
        let schema = |c: &rusqlite::Connection| -> Vec<(String, String)> {
            let mut st = c
                .prepare("SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND name <> '_sqlx_migrations' ORDER BY name")
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
        };
        // The schema of all the migrations but the last, each run as it is …
        let by_hand = rusqlite::Connection::open_in_memory().unwrap();
        for m in &ups {
            by_hand.execute_batch(m.sql.as_str()).unwrap();
        }
        // … and as a new file gets it from those migrations.
        let count = ups.len() as i64;
        let all_but_the_last = sqlx::migrate::Migrator::with_migrations(ups);
        let c = rusqlite::Connection::open_in_memory().unwrap();
        assert!(migrate_new_file(&c, &all_but_the_last).unwrap());
        assert_eq!(schema(&c), schema(&by_hand));
        assert_ne!(schema(&c), schema(&squashed()), "the squash was not used");
        let recorded: i64 = c.query_row("SELECT COUNT(*) FROM _sqlx_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(recorded, count);
    }

    /// A database with the squashed schema.
    fn squashed() -> rusqlite::Connection {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(SQUASHED_SCHEMA).unwrap();
        c
    }

    #[test]
    fn binds_by_name_in_any_order_and_reads_back_each_type() {
        let c = conn();
        let mut lite = LiteConn(&c);
        // `$2` before `$1`, `$3` twice, a NULL of each type.
        let n = now(lite.execute("INSERT INTO t (s, n) VALUES ($2 || $3 || $3, $1)", args![7i64, "a", "b"])).unwrap();
        assert_eq!(n, 1);
        now(lite.execute("INSERT INTO t (s, n) VALUES ($1, $2)", args![None::<&str>, None::<i64>])).unwrap();
        let rows = now(lite.fetch("SELECT id, n, s FROM t ORDER BY id", args![])).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].int(1).unwrap(), 7);
        assert_eq!(rows[0].text(2).unwrap(), "abb");
        assert_eq!(rows[1].opt_int(1).unwrap(), None);
        assert_eq!(rows[1].opt_text(2).unwrap(), None);
        assert!(rows[0].text(1).is_err(), "an integer is not read as text");
    }

    #[test]
    fn returning_rows_come_back_from_fetch_and_changes_from_execute() {
        let c = conn();
        let mut lite = LiteConn(&c);
        let ids = now(lite.fetch("INSERT INTO t (n) VALUES ($1) RETURNING id", args![1i64])).unwrap();
        assert_eq!(ids[0].int(0).unwrap(), 1);
        now(lite.execute("INSERT INTO t (n) VALUES ($1)", args![1i64])).unwrap();
        let changed = now(lite.execute("UPDATE t SET n = n + 1 WHERE n = $1", args![1i64])).unwrap();
        assert_eq!(changed, 2);
        let none = now(lite.fetch_optional("SELECT id FROM t WHERE n = $1", args![99i64])).unwrap();
        assert!(none.is_none());
    }

    /// `insert_id` gives the new row's id as `RETURNING id` would, and None
    /// for an insert that `ON CONFLICT … DO NOTHING` skipped, right after
    /// statements that did change rows (whose counts and ids must not leak).
    #[test]
    fn insert_id_reads_the_new_rows_id_and_none_for_a_skipped_insert() {
        let c = conn();
        c.execute_batch("CREATE UNIQUE INDEX t_s ON t (s)").unwrap();
        let mut lite = LiteConn(&c);
        let add = super::super::sql::insert!("INSERT INTO t (s, n) VALUES ($1, $2) ON CONFLICT (s) DO NOTHING");
        assert_eq!(now(lite.insert_id(add, args!["a", 1i64])).unwrap(), Some(1));
        assert_eq!(now(lite.insert_id(add, args!["b", 2i64])).unwrap(), Some(2));
        now(lite.execute("UPDATE t SET n = n + 1", args![])).unwrap();
        assert_eq!(now(lite.insert_id(add, args!["a", 3i64])).unwrap(), None, "a skipped insert has no id");
        let returned = now(lite.fetch(add.returning, args!["c", 4i64])).unwrap();
        assert_eq!(returned[0].int(0).unwrap(), 3, "the same statement with RETURNING");
        assert_eq!(now(lite.insert_id(add, args!["d", 5i64])).unwrap(), Some(4));
    }
}
