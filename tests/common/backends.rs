//! The databases a test runs on: a SQLite file in a temporary directory, or
//! a fresh, empty PostgreSQL database on the server that
//! `CALL_ROUTER_TEST_POSTGRES_URL` names (`eval "$(.ci/postgres start)"`
//! starts a throwaway one), dropped when the test ends.
//!
//! Without that variable the PostgreSQL variant of a test prints a skip line
//! and passes, unless `CALL_ROUTER_REQUIRE_POSTGRES=1` (CI), where it fails.
//!
//! One file for every test: the library's unit tests include it from
//! `src/lib.rs`, the integration tests with `#[path]`.
#![allow(dead_code, unreachable_pub)]

/// The admin URL of a PostgreSQL server the tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "CALL_ROUTER_TEST_POSTGRES_URL";
/// Set to 1 where a missing PostgreSQL must fail the tests (CI).
pub const REQUIRE_POSTGRES_VAR: &str = "CALL_ROUTER_REQUIRE_POSTGRES";

/// A backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test; removed when dropped.
pub struct TestDb {
    /// What `database_url` and `Store::connect` take.
    pub url: String,
    keep: Keep,
}

enum Keep {
    /// The SQLite file's directory.
    Dir(tempfile::TempDir),
    /// The PostgreSQL database, dropped through the admin URL.
    Postgres { admin: String, name: String },
}

impl Backend {
    /// A fresh database on this backend, or `None` (after saying why on
    /// stderr) when PostgreSQL is not configured here. Panics when it is
    /// required but missing, or when the server refuses a new database.
    pub async fn database(self) -> Option<TestDb> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Some(TestDb { url, keep: Keep::Dir(dir) })
            }
            Backend::Postgres => {
                let admin = postgres_admin_url()?;
                let name = format!("call_router_test_{}_{:016x}", std::process::id(), rand::random::<u64>());
                let mut conn = admin_connection(&admin).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
                let _ = sqlx::Connection::close(conn).await;
                Some(TestDb { url: database_url(&admin, &name), keep: Keep::Postgres { admin, name } })
            }
        }
    }
}

/// `CALL_ROUTER_TEST_POSTGRES_URL`; `None` after the skip line when it is
/// unset, a panic when `CALL_ROUTER_REQUIRE_POSTGRES=1`.
fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") => {
            panic!(
                "{REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set: start a server with \
                 `eval \"$(.ci/postgres start)\"`"
            )
        }
        _ => {
            eprintln!("skipping the PostgreSQL run: {POSTGRES_URL_VAR} is not set (see .ci/postgres)");
            None
        }
    }
}

async fn admin_connection(admin: &str) -> sqlx::postgres::PgConnection {
    <sqlx::postgres::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR} (see .ci/postgres): {e}"))
}

/// The admin URL with its database replaced by `name`, query kept.
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Keep::Postgres { admin, name } = &self.keep else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // the DROP gets its own thread and runtime. FORCE ends the test's
        // connections still open (a server that outlived its test).
        let (admin, drop_sql) = (admin.clone(), format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async {
                let mut conn = admin_connection(&admin).await;
                sqlx::query(sqlx::AssertSqlSafe(drop_sql)).execute(&mut conn).await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test database {name}: {e}");
        }
    }
}

/// One `#[tokio::test]` per backend for each `async fn NAME(backend: Backend)`
/// named: `sqlite::NAME` and `postgres::NAME` (select one backend's with
/// `cargo nextest run -E 'test(/::postgres::/)'`). `Backend` must be in scope.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_test_database_url_keeps_the_server_and_the_options() {
        use super::database_url;
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5/t1"
        );
        assert_eq!(
            database_url("postgres://u:p@h:5/db?sslmode=disable", "t1"),
            "postgres://u:p@h:5/t1?sslmode=disable"
        );
        assert_eq!(database_url("postgresql://h", "t1"), "postgresql://h/t1");
    }
}
