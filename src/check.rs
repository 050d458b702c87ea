//! `call-router check`: whether a deployment can serve, one line per check. It writes
//! nothing: not to the database (it compares the applied migrations with the ones built
//! in, and never migrates), not to Twilio (GET requests only).
//!
//! The checks, in order, each needing the ones before it that it names:
//! - `config`: the file and the environment give valid settings;
//! - `database`: it exists, opens, and has every built-in migration applied;
//! - `twilio`: both base URLs answer an authenticated GET with these credentials;
//! - `provisioning` (config, database, twilio): `provision`'s plan changes nothing.
//!
//! `--health URL` checks only that the URL answers 2xx: a container's health check,
//! which runs every few seconds and must not reach Twilio.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::{Connection as _, Row as _};

use crate::config::{ConfigError, Settings};
use crate::provision::{self, Desired, Op};
use crate::store::{Backend, Store};
use crate::twilio_api::{Api, ApiError, TwilioClient};

/// The migrations this binary applies to a database of this backend.
fn migrator(backend: Backend) -> &'static sqlx::migrate::Migrator {
    match backend {
        Backend::Sqlite => &crate::store::SQLITE_MIGRATIONS,
        Backend::Postgres => &crate::store::POSTGRES_MIGRATIONS,
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
    /// Not run, because a check it needs failed.
    Skip,
}

/// One check's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub name: &'static str,
    pub detail: String,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check { status: Status::Ok, name, detail: detail.into() }
    }

    fn fail(name: &'static str, detail: impl Into<String>) -> Check {
        Check { status: Status::Fail, name, detail: detail.into() }
    }

    fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check { status: Status::Skip, name, detail: detail.into() }
    }

    /// `ok   database      sqlite://… migrated (2 of 2)`.
    pub fn line(&self) -> String {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        format!("{status:<4} {:<12}  {}", self.name, self.detail)
    }
}

/// Every check's line, in order.
#[derive(Debug, Default)]
pub struct Checks {
    pub checks: Vec<Check>,
    /// Strings never to print (the auth token), removed from every line.
    secrets: Vec<String>,
}

impl Checks {
    fn push(&mut self, mut check: Check) -> Status {
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            check.detail = check.detail.replace(s.as_str(), "***");
        }
        let status = check.status;
        self.checks.push(check);
        status
    }

    /// Whether every check that ran passed, and none was skipped.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status == Status::Ok)
    }

    pub fn text(&self) -> String {
        self.checks.iter().map(|c| c.line() + "\n").collect()
    }

    /// The check of that name.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// `call-router check`: prints one line per check; an error (a non-zero exit) if any failed.
pub async fn run_command(config: Option<&Path>, health: Option<&str>) -> anyhow::Result<()> {
    let checks = match health {
        Some(url) => {
            let mut checks = Checks::default();
            checks.push(health_check(url).await);
            checks
        }
        None => run(config, |k| std::env::var(k).ok()).await,
    };
    print!("{}", checks.text());
    if !checks.passed() {
        let failed = checks.checks.iter().filter(|c| c.status == Status::Fail).count();
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// Runs every check against the config file and the given environment.
pub async fn run(config: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Checks {
    let mut checks = Checks::default();
    // A token from the environment is known even when the file does not parse.
    if let Some(token) = env(crate::config::env::AUTH_TOKEN) {
        checks.secrets.push(token);
    }
    let settings = match Settings::load_with_env(config, &env) {
        Ok(s) => s,
        Err(e) => {
            checks.push(Check::fail("config", config_error(&e)));
            for name in ["database", "twilio", "provisioning"] {
                checks.push(Check::skip(name, "needs a valid config"));
            }
            return checks;
        }
    };
    checks.secrets.push(settings.twilio.auth_token.expose_secret().to_owned());
    let source = config.map_or_else(|| "the environment".to_owned(), |p| p.display().to_string());
    checks.push(Check::ok(
        "config",
        format!("{source}: {} location(s) in the file, public_url {}", settings.locations.len(), settings.public_url),
    ));
    let database = checks.push(database_check(&settings.database_url).await);
    let twilio = match TwilioClient::new(&settings.twilio) {
        Ok(client) => {
            let status = checks.push(twilio_check(&client, &settings).await);
            (status == Status::Ok).then_some(client)
        }
        Err(e) => {
            checks.push(Check::fail("twilio", format!("building the client: {e:#}")));
            None
        }
    };
    match (database, twilio) {
        (Status::Ok, Some(client)) => {
            checks.push(provisioning_check(&settings, &client).await);
        }
        (Status::Ok, None) => {
            checks.push(Check::skip("provisioning", "needs Twilio"));
        }
        (_, Some(_)) => {
            checks.push(Check::skip("provisioning", "needs the database"));
        }
        (_, None) => {
            checks.push(Check::skip("provisioning", "needs the database and Twilio"));
        }
    }
    checks
}

/// A config error, with any `auth_token = …` line a TOML parse error quotes masked.
fn config_error(e: &ConfigError) -> String {
    let text = e.to_string();
    text.lines()
        .map(|line| match line.find("auth_token") {
            Some(at) if line[at..].contains('=') => format!("{}auth_token = ***", &line[..at]),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The database exists and every built-in migration is applied, unchanged. Nothing is
/// created or migrated.
async fn database_check(url: &str) -> Check {
    const NAME: &str = "database";
    let shown = crate::store::redact_url(url);
    let backend = match Backend::of(url) {
        Ok(b) => b,
        Err(e) => return Check::fail(NAME, format!("{e:#}")),
    };
    if url.contains(":memory:") {
        return Check::fail(NAME, format!("{shown}: an in-memory database keeps nothing between runs"));
    }
    if let Some(path) = crate::store::sqlite_path(url)
        && !path.exists()
    {
        return Check::fail(
            NAME,
            format!("{shown}: {} does not exist (`call-router provision` creates and migrates it)", path.display()),
        );
    }
    sqlx::any::install_default_drivers();
    let mut conn = match sqlx::AnyConnection::connect(url).await {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, format!("{shown}: cannot open: {}", crate::telemetry::chain(&e))),
    };
    let applied = applied_migrations(&mut conn, backend).await;
    let _ = conn.close().await;
    let applied = match applied {
        Ok(a) => a,
        Err(e) => {
            return Check::fail(NAME, format!("{shown}: reading its migrations: {}", crate::telemetry::chain(&e)));
        }
    };
    match compare_migrations(migrator(backend), &applied) {
        Ok(summary) => Check::ok(NAME, format!("{shown} {summary}")),
        Err(why) => Check::fail(NAME, format!("{shown} {why}")),
    }
}

/// A database's schema beside this binary's migrations, read without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// No migration applied: a new, empty database.
    Empty,
    /// Every migration applied.
    Current,
    /// Some applied, the later ones not yet (an upgrade): those, as `12 journey keys`
    /// (version and description).
    Behind(Vec<String>),
}

/// The schema of the existing database at `url` (see [`Schema`]). An error when it does not
/// open, or when its migrations are not a prefix of this binary's (one failed, one this
/// binary does not know, one changed): opening it would fail too.
pub async fn schema_of(url: &str) -> anyhow::Result<Schema> {
    let backend = Backend::of(url)?;
    let shown = crate::store::redact_url(url);
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("{shown}: cannot open: {}", crate::telemetry::chain(&e)))?;
    let applied = applied_migrations(&mut conn, backend).await;
    let _ = conn.close().await;
    let applied =
        applied.map_err(|e| anyhow::anyhow!("{shown}: reading its migrations: {}", crate::telemetry::chain(&e)))?;
    if applied.is_empty() {
        return Ok(Schema::Empty);
    }
    let migrator = migrator(backend);
    let known = |a: &Applied| {
        a.success && migrator.iter().any(|m| m.version == a.version && m.checksum.as_ref() == a.checksum.as_slice())
    };
    match compare_migrations(migrator, &applied) {
        Ok(_) => Ok(Schema::Current),
        Err(_) if applied.iter().all(known) => Ok(Schema::Behind(
            migrator
                .iter()
                .filter(|m| m.migration_type.is_up_migration() && !applied.iter().any(|a| a.version == m.version))
                .map(|m| format!("{} {}", m.version, m.description))
                .collect(),
        )),
        Err(why) => anyhow::bail!("{shown} {why}"),
    }
}

/// One row of sqlx's `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// The applied migrations; none when sqlx's table is not there.
async fn applied_migrations(conn: &mut sqlx::AnyConnection, backend: Backend) -> Result<Vec<Applied>, sqlx::Error> {
    let (exists, rows) = match backend {
        Backend::Sqlite => (
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            "SELECT version, checksum, CAST(success AS INTEGER) AS success FROM _sqlx_migrations ORDER BY version",
        ),
        Backend::Postgres => (
            "SELECT COUNT(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            "SELECT version, checksum, CAST(CASE WHEN success THEN 1 ELSE 0 END AS BIGINT) AS success
             FROM _sqlx_migrations ORDER BY version",
        ),
    };
    let exists: i64 = sqlx::query(exists).fetch_one(&mut *conn).await?.try_get(0)?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(rows).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                checksum: r.try_get("checksum")?,
                success: r.try_get::<i64, _>("success")? != 0,
            })
        })
        .collect()
}

/// `migrated (2 of 2)`, or why the applied migrations are not the built-in ones.
pub fn compare_migrations(migrator: &sqlx::migrate::Migrator, applied: &[Applied]) -> Result<String, String> {
    let embedded: Vec<&sqlx::migrate::Migration> =
        migrator.iter().filter(|m| m.migration_type.is_up_migration()).collect();
    let total = embedded.len();
    if let Some(a) = applied.iter().find(|a| !a.success) {
        return Err(format!("migration {} failed part-way; restore a backup", a.version));
    }
    if let Some(a) = applied.iter().find(|a| !embedded.iter().any(|m| m.version == a.version)) {
        return Err(format!(
            "has migration {} that this binary does not know (a newer call-router migrated it)",
            a.version
        ));
    }
    let mut missing = Vec::new();
    for m in &embedded {
        match applied.iter().find(|a| a.version == m.version) {
            Some(a) if a.checksum != m.checksum.as_ref() => {
                return Err(format!("migration {} ({}) differs from this binary's", m.version, m.description));
            }
            Some(_) => {}
            None => missing.push(format!("{} {}", m.version, m.description)),
        }
    }
    if missing.is_empty() {
        Ok(format!("migrated ({total} of {total})"))
    } else {
        Err(format!(
            "not migrated ({} of {total}; missing {}): `call-router provision` or `serve` migrates it",
            total - missing.len(),
            missing.join(", ")
        ))
    }
}

/// One authenticated GET on each base URL: the core API's numbers and TaskRouter's
/// workspaces, a page of one each.
async fn twilio_check(client: &TwilioClient, settings: &Settings) -> Check {
    const NAME: &str = "twilio";
    let core = client.account_path("IncomingPhoneNumbers.json?PageSize=1");
    if let Err(e) = client.get(Api::Core, &core).await {
        return Check::fail(NAME, format!("{}: {}", settings.twilio.api_base_url, describe(&e)));
    }
    if let Err(e) = client.get(Api::TaskRouter, "/v1/Workspaces?PageSize=1").await {
        return Check::fail(NAME, format!("{}: {}", settings.twilio.taskrouter_base_url, describe(&e)));
    }
    Check::ok(
        NAME,
        format!(
            "account {} answers at {} and {}",
            settings.twilio.account_sid, settings.twilio.api_base_url, settings.twilio.taskrouter_base_url
        ),
    )
}

/// `401 Twilio error 20003: Authenticate (GET /2010-04-01/…)`.
fn describe(e: &ApiError) -> String {
    match e {
        ApiError::Twilio { method, path, body } => {
            format!("{} Twilio error {}: {} ({method} {path})", body.status, body.code, body.message)
        }
        ApiError::Http { method, path, status, .. } => {
            format!("{status} without Twilio's error body ({method} {path})")
        }
        other => other.to_string(),
    }
}

/// `provision --dry-run` has nothing to change: its plan, read with GETs only.
async fn provisioning_check(settings: &Settings, client: &TwilioClient) -> Check {
    const NAME: &str = "provisioning";
    // The database is migrated (the database check passed), so connecting migrates nothing.
    let store = match Store::connect(&settings.database_url).await {
        Ok(s) => s,
        Err(e) => return Check::fail(NAME, format!("opening the database: {e:#}")),
    };
    if let Err(e) = provision::check_public_url(settings) {
        return Check::fail(NAME, e.to_string());
    }
    let locations = match provision::checked_locations(settings, &store).await {
        Ok(l) => l,
        Err(e) => return Check::fail(NAME, e.to_string()),
    };
    let desired = Desired::new(settings, &locations, false);
    let actual = match provision::read_actual(client, settings, &store, &desired).await {
        Ok(a) => a,
        Err(e) => return Check::fail(NAME, e.to_string()),
    };
    let changes = provision::plan(&desired, &actual);
    let owed: Vec<String> =
        changes.iter().filter(|c| c.is_write() || matches!(c.op, Op::Invalid(_))).map(|c| c.line()).collect();
    if owed.is_empty() {
        let checked = changes.iter().filter(|c| c.op == Op::Unchanged).count();
        Check::ok(NAME, format!("in step: {} location(s), {checked} resources unchanged", locations.len()))
    } else {
        Check::fail(NAME, format!("{} change(s) owed; run `call-router provision`: {}", owed.len(), owed.join("; ")))
    }
}

/// `--health URL`: a GET that answers 2xx within five seconds.
pub async fn health_check(url: &str) -> Check {
    const NAME: &str = "health";
    crate::twilio_api::install_crypto_provider();
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(5)).build() {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, format!("{url}: {e}")),
    };
    match client.get(url).send().await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let first = body.lines().next().unwrap_or_default().chars().take(120).collect::<String>();
            let detail = format!("{url} {} {first}", status.as_u16());
            if status.is_success() { Check::ok(NAME, detail) } else { Check::fail(NAME, detail) }
        }
        Err(e) => Check::fail(NAME, format!("{url}: {e}")),
    }
}
