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

use super::sql::{Arg, Cell, Conn, Row};

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
    // The same settings as sqlx's connections (see `Store::connect`).
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
/// checksum, execution time in nanoseconds). All or nothing: a failure rolls
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
    for m in ups {
        let started = std::time::Instant::now();
        tx.execute_batch(m.sql.as_str()).with_context(|| format!("migration {} ({})", m.version, m.description))?;
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
}
