//! Operations around the server: what `call-router sandbox` prints for a shell,
//! and `call-router check`, against the sandbox over HTTP.

mod common;
#[path = "common/backends.rs"]
#[macro_use]
#[allow(unused_macros)]
mod backends;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use call_router::check::{self, Checks, Status};
use call_router::config::Settings;
use call_router::provision::{self, Options, Report};
use call_router::store::Store;
use twilio::Params;
use twilio::sid::AccountSid;

const BIN: &str = env!("CARGO_BIN_EXE_call-router");

/// The variables a test must not inherit from the shell that runs it.
const ENV: [&str; 9] = [
    "CALL_ROUTER_CONFIG",
    "CALL_ROUTER_PUBLIC_URL",
    "CALL_ROUTER_DATABASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "CALL_ROUTER_TWILIO_API_BASE_URL",
    "CALL_ROUTER_TASKROUTER_BASE_URL",
    "CALL_ROUTER_WORKSPACE_SID",
    "CALL_ROUTER_WORKFLOW_SID",
];

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for var in ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `script` in bash and prints the named variables, one per line.
fn bash_vars(script: &str, names: &[&str]) -> Vec<String> {
    let print: String = names.iter().map(|n| format!("printf '%s\\n' \"${n}\"; ")).collect();
    let out = Command::new("bash").arg("-c").arg(format!("set -eu; {script}; {print}")).output().unwrap();
    assert!(out.status.success(), "bash: {}\n{script}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn sandbox_prints_lines_a_shell_can_eval_and_writes_them_to_the_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("sandbox.env");
    let mut child = Child(
        command(&["sandbox", "--listen", "127.0.0.1:0", "--number", "+12025550143", "--env-file"])
            .arg(&env_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // The block ends with the `# inspect` line; the sandbox then runs until stopped.
    let printed = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("# inspect") {
                break;
            }
        }
        text
    })
    .await
    .unwrap();
    let names = [
        "CALL_ROUTER_TWILIO_API_BASE_URL",
        "CALL_ROUTER_TASKROUTER_BASE_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
    ];
    let quoted = printed.replace('\'', "'\\''");
    let from_eval = bash_vars(&format!("eval '{quoted}'"), &names);
    assert_eq!(from_eval.len(), 4, "{printed}");
    let from_file = bash_vars(&format!(". '{}'", env_file.display()), &names);
    assert_eq!(from_eval, from_file);
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), printed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the env file is readable by others: {mode:o}");
    }

    // The variables reach the sandbox that printed them.
    let [base, taskrouter, sid, token] = <[String; 4]>::try_from(from_eval).unwrap();
    assert_eq!(base, taskrouter);
    assert!(base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"), "{base}");
    call_router::twilio_api::install_crypto_provider();
    let http = reqwest::Client::new();
    let numbers: serde_json::Value = http
        .get(format!("{base}/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json"))
        .basic_auth(&sid, Some(&token))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(numbers["incoming_phone_numbers"][0]["phone_number"], "+12025550143", "{numbers}");

    // Stopped, it removes the file, whose port and token no longer work.
    let term = Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status().unwrap();
    assert!(term.success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!env_file.exists(), "the env file outlived the sandbox");
}

/// A child process, killed when dropped (so a failing test leaves none behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// `call-router check`, against the sandbox on port 0.
// ---------------------------------------------------------------------------

const ACCOUNT: &str = "AC00000000000000000000000000000c4e";
const TOKEN: &str = "check-test-token-4f1d";
/// Nothing listens here; the sandbox's event deliveries fail, harmlessly.
const PUBLIC_URL: &str = "http://127.0.0.1:9";
const NORTH: (&str, &str, &str) = ("north", "+12025550143", "+14155550123");
const SOUTH: (&str, &str, &str) = ("south", "+12025550144", "+14155550124");

/// The sandbox owning both test numbers, and a directory for databases and configs.
struct Deployment {
    sandbox: sandbox::Sandbox,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Deployment {
    async fn start() -> Deployment {
        call_router::twilio_api::install_crypto_provider();
        let config = sandbox::Config {
            account_sid: AccountSid::parse(ACCOUNT).unwrap(),
            auth_token: TOKEN.into(),
            time_scale: 1.0,
            seed: 11,
            min_webhook_timeout_ms: sandbox::MIN_WEBHOOK_TIMEOUT_MS,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox = sandbox::start(config, listener).await.unwrap();
        let d = Deployment { sandbox, http: reqwest::Client::new(), dir: tempfile::tempdir().unwrap() };
        for (_, number, _) in [NORTH, SOUTH] {
            let mut p = Params::new();
            p.push("PhoneNumber", number);
            let resp = d
                .http
                .post(format!("{}/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json", d.sandbox.url()))
                .basic_auth(ACCOUNT, Some(TOKEN))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(p.encode())
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
        }
        d
    }

    fn db(&self, name: &str) -> String {
        format!("sqlite://{}", self.dir.path().join(name).display())
    }

    fn toml(&self, db: &str, token: &str, locations: &[(&str, &str, &str)]) -> String {
        let url = self.sandbox.url();
        let mut text = format!(
            "public_url = \"{PUBLIC_URL}\"\ndatabase_url = \"{db}\"\n[twilio]\naccount_sid = \"{ACCOUNT}\"\n\
             auth_token = \"{token}\"\napi_base_url = \"{url}\"\ntaskrouter_base_url = \"{url}\"\n\
             request_timeout_ms = 5000\n\n"
        );
        for (name, number, phone) in locations {
            text.push_str(&format!(
                "[[locations]]\nname = \"{name}\"\nnumbers = [\"{number}\"]\nphone = \"{phone}\"\n\
                 [locations.hours]\ntime_zone = \"America/New_York\"\n[locations.hours.weekly]\nmon = [\"08:00-17:00\"]\n\n"
            ));
        }
        text
    }

    fn config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn provision(&self, db: &str, locations: &[(&str, &str, &str)]) {
        let settings = Settings::from_toml(&self.toml(db, TOKEN, locations), |_| None).unwrap();
        let store = Store::connect(db).await.unwrap();
        let mut report = Report::default();
        if let Err(e) = provision::run(&settings, &store, Options::default(), &mut report).await {
            panic!("provision: {e}\n{}", report.text());
        }
    }

    /// The methods and URLs the sandbox received since `since`, and the next position.
    async fn requests_since(&self, since: u64) -> (Vec<(String, String)>, u64) {
        let log: serde_json::Value = self
            .http
            .get(format!("{}/sandbox/log?since={since}&limit=10000", self.sandbox.url()))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["direction"] == "in")
            .map(|e| (e["method"].as_str().unwrap().to_owned(), e["url"].as_str().unwrap().to_owned()))
            .collect();
        (entries, log["next"].as_u64().unwrap())
    }
}

/// Runs the checks as the library does, with no environment.
async fn run_checks(config: &Path) -> Checks {
    check::run(Some(config), |_| None).await
}

fn status_of(checks: &Checks, name: &str) -> (Status, String) {
    let c = checks.get(name).unwrap_or_else(|| panic!("no {name} check in\n{}", checks.text()));
    (c.status, c.detail.clone())
}

/// How many migrations the binary carries: one file each in migrations/sqlite.
fn migration_count() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count()
}

/// Runs the binary's `check`; its exit success, stdout and stderr.
fn check_binary(args: &[&str]) -> (bool, String, String) {
    let out = command(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_passes_after_provision_and_writes_nothing() {
    let d = Deployment::start().await;
    let db = d.db("ok.db");
    d.provision(&db, &[NORTH, SOUTH]).await;
    let config = d.config("ok.toml", &d.toml(&db, TOKEN, &[NORTH, SOUTH]));
    let (_, since) = d.requests_since(0).await;

    let checks = run_checks(&config).await;
    assert!(checks.passed(), "{}", checks.text());
    let names: Vec<&str> = checks.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, ["config", "database", "twilio", "provisioning"]);
    let n = migration_count();
    assert!(status_of(&checks, "database").1.ends_with(&format!("migrated ({n} of {n})")), "{}", checks.text());
    assert!(status_of(&checks, "provisioning").1.starts_with("in step: 2 location(s)"), "{}", checks.text());
    let (requests, _) = d.requests_since(since).await;
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|(m, _)| m == "GET"), "check wrote to Twilio: {requests:#?}");

    // The binary: one `ok` line per check, exit 0, and no token anywhere.
    let config_arg = config.display().to_string();
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || check_binary(&["check", "--config", &config_arg])).await.unwrap();
    assert!(ok, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with("ok   ")), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token was printed:\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn check_fails_on_wrong_credentials_without_printing_them() {
    let d = Deployment::start().await;
    let db = d.db("creds.db");
    d.provision(&db, &[NORTH]).await;
    let wrong = "not-the-token-7c2b";
    let config = d.config("creds.toml", &d.toml(&db, wrong, &[NORTH]));

    let checks = run_checks(&config).await;
    assert!(!checks.passed());
    let (status, detail) = status_of(&checks, "twilio");
    assert_eq!(status, Status::Fail, "{}", checks.text());
    assert!(detail.contains("401") && detail.contains("20003"), "{detail}");
    assert_eq!(status_of(&checks, "database").0, Status::Ok, "{}", checks.text());
    assert_eq!(status_of(&checks, "provisioning").0, Status::Skip, "{}", checks.text());

    let config_arg = config.display().to_string();
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || check_binary(&["check", "--config", &config_arg])).await.unwrap();
    assert!(!ok, "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("FAIL twilio") && l.contains("401")), "{stdout}");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong), "the token was printed:\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn check_fails_on_a_missing_or_unmigrated_database_and_migrates_nothing() {
    let d = Deployment::start().await;
    let n = migration_count();

    // Missing: a failure, and still missing afterwards.
    let missing = d.db("missing.db");
    let checks = run_checks(&d.config("missing.toml", &d.toml(&missing, TOKEN, &[NORTH]))).await;
    let (status, detail) = status_of(&checks, "database");
    assert_eq!(status, Status::Fail, "{}", checks.text());
    assert!(detail.contains("does not exist"), "{detail}");
    assert!(!d.dir.path().join("missing.db").exists(), "check created the database");
    assert_eq!(status_of(&checks, "twilio").0, Status::Ok, "{}", checks.text());
    assert_eq!(status_of(&checks, "provisioning").0, Status::Skip, "{}", checks.text());

    // An SQLite file nothing migrated.
    let empty = d.db("empty.db");
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&format!("{empty}?mode=rwc")).await.unwrap();
        sqlx::query("CREATE TABLE unrelated (x INTEGER)").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
    let checks = run_checks(&d.config("empty.toml", &d.toml(&empty, TOKEN, &[NORTH]))).await;
    let (status, detail) = status_of(&checks, "database");
    assert_eq!(status, Status::Fail, "{}", checks.text());
    assert!(detail.contains(&format!("not migrated (0 of {n};")), "{detail}");

    // Migrated, then its last migration forgotten: one behind, and check does not apply it.
    let behind = d.db("behind.db");
    let store = Store::connect(&behind).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
        .execute(store.pool())
        .await
        .unwrap();
    let checks = run_checks(&d.config("behind.toml", &d.toml(&behind, TOKEN, &[NORTH]))).await;
    let (status, detail) = status_of(&checks, "database");
    assert_eq!(status, Status::Fail, "{}", checks.text());
    assert!(detail.contains(&format!("not migrated ({} of {n};", n - 1)), "{detail}");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(store.pool()).await.unwrap();
    assert_eq!(count as usize, n - 1, "check migrated the database");
}

#[tokio::test]
async fn check_reads_the_migrations_of_a_postgres_database() {
    let Some(db) = backends::Backend::Postgres.database().await else { return };
    let d = Deployment::start().await;
    // Empty: nothing migrated, and check migrates nothing.
    let config = d.config("pg.toml", &d.toml(&db.url, TOKEN, &[NORTH]));
    let checks = run_checks(&config).await;
    let (status, detail) = status_of(&checks, "database");
    assert_eq!(status, Status::Fail, "{}", checks.text());
    assert!(detail.contains("not migrated (0 of "), "{detail}");
    assert!(!detail.contains("password"), "{detail}");
    // Migrated by the store: every PostgreSQL migration is there.
    let store = Store::connect(&db.url).await.unwrap();
    let checks = run_checks(&config).await;
    let (status, detail) = status_of(&checks, "database");
    assert_eq!(status, Status::Ok, "{}", checks.text());
    let n = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres")).unwrap().count();
    assert!(detail.ends_with(&format!("migrated ({n} of {n})")), "{detail}");
    store.pool().close().await;
}

#[tokio::test]
async fn check_fails_for_a_location_not_provisioned() {
    let d = Deployment::start().await;
    let db = d.db("partial.db");
    d.provision(&db, &[NORTH]).await;
    let config = d.config("partial.toml", &d.toml(&db, TOKEN, &[NORTH, SOUTH]));
    let (_, since) = d.requests_since(0).await;

    let checks = run_checks(&config).await;
    let (status, detail) = status_of(&checks, "provisioning");
    assert_eq!(status, Status::Fail, "{}", checks.text());
    assert!(detail.contains("create worker south") && detail.contains("call-router provision"), "{detail}");
    assert!(!detail.contains("north"), "north is provisioned: {detail}");
    let (requests, _) = d.requests_since(since).await;
    assert!(requests.iter().all(|(m, _)| m == "GET"), "check wrote to Twilio: {requests:#?}");
    // Nor did it copy the file's new location into the database, as provision would.
    let store = Store::connect(&db).await.unwrap();
    let names: Vec<String> = store.location_specs().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["north"]);
}

#[tokio::test]
async fn check_reports_a_bad_config_and_skips_the_rest() {
    let d = Deployment::start().await;
    let text = d.toml(&d.db("x.db"), TOKEN, &[NORTH]).replace(PUBLIC_URL, "not a url");
    let checks = run_checks(&d.config("bad.toml", &text)).await;
    let (status, detail) = status_of(&checks, "config");
    assert_eq!(status, Status::Fail, "{}", checks.text());
    assert!(detail.contains("public_url"), "{detail}");
    assert!(checks.checks[1..].iter().all(|c| c.status == Status::Skip), "{}", checks.text());

    // A TOML error quotes the line it is on; an auth_token line is masked.
    let broken = d.toml(&d.db("x.db"), TOKEN, &[NORTH]).replace(&format!("\"{TOKEN}\""), &format!("\"{TOKEN}"));
    let checks = run_checks(&d.config("broken.toml", &broken)).await;
    assert_eq!(status_of(&checks, "config").0, Status::Fail, "{}", checks.text());
    assert!(!checks.text().contains(TOKEN), "{}", checks.text());
}

#[tokio::test]
async fn check_health_asks_the_url_only() {
    let app = common::spawn_app().await;
    let c = check::health_check(&format!("{}/healthz", app.url)).await;
    assert_eq!(c.status, Status::Ok, "{}", c.line());
    assert!(c.detail.ends_with(" 200 ok"), "{}", c.line());
    let c = check::health_check(&format!("{}/no-such-route", app.url)).await;
    assert_eq!(c.status, Status::Fail, "{}", c.line());
    assert!(c.detail.contains(" 404"), "{}", c.line());

    // The binary, as a container's HEALTHCHECK runs it: no config needed, the exit status says it.
    let url = format!("{}/healthz", app.url);
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || check_binary(&["check", "--health", &url])).await.unwrap();
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.starts_with("ok   health"), "{stdout}");
    // Nothing listens on a port we just closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/healthz", l.local_addr().unwrap())
    };
    let (ok, stdout, _) =
        tokio::task::spawn_blocking(move || check_binary(&["check", "--health", &closed])).await.unwrap();
    assert!(!ok, "{stdout}");
    assert!(stdout.starts_with("FAIL health"), "{stdout}");
}

// ---------------------------------------------------------------------------
// deploy/: the files name what the binary really has.
// ---------------------------------------------------------------------------

fn deploy_file(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(rel)).unwrap()
}

#[test]
fn the_prometheus_files_use_only_exported_metric_names() {
    use call_router::stats::*;
    let exported = [
        WEBHOOKS,
        WEBHOOK_SECONDS,
        CALLS,
        QUEUE_WAIT_SECONDS,
        CALLERS_WAITING,
        LINES_IN_USE,
        OUTBOX_PENDING,
        OUTBOX_OLDEST_SECONDS,
        TWILIO_REQUESTS,
        TWILIO_SECONDS,
        RECONCILER_REPAIRS,
        RECONCILER_MISSED,
        BUILD_INFO,
    ];
    let histograms = [WEBHOOK_SECONDS, QUEUE_WAIT_SECONDS, TWILIO_SECONDS];
    let rules = deploy_file("prometheus/call-router.rules.yml");
    let text = rules.clone() + &deploy_file("prometheus/prometheus.yml");
    let mut used = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("call_router_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        used.push(name);
    }
    assert!(!used.is_empty());
    for name in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| histograms.contains(b)))
            .unwrap_or(name);
        assert!(exported.contains(&base), "{name} is not a metric call-router exports");
    }
    // The three alerts: callers waiting too long, the outbox backing up, Twilio errors.
    for needed in [QUEUE_WAIT_SECONDS, OUTBOX_OLDEST_SECONDS, TWILIO_REQUESTS] {
        assert!(used.iter().any(|u| u.starts_with(needed)), "no rule uses {needed}");
    }
    assert!(rules.contains("- alert: CallersWaitingTooLong") && rules.contains("- alert: TwilioErrors"));
}

/// The words after `ExecStart=` in a unit.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("no ExecStart");
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_systemd_units_activate_the_service_with_arguments_the_binary_accepts() {
    let service = deploy_file("systemd/call-router.service");
    let socket = deploy_file("systemd/call-router.socket");
    assert!(socket.contains("\nListenStream="), "{socket}");
    assert!(service.contains("\nRequires=call-router.socket"), "{service}");
    for hardening in ["ProtectSystem=strict", "NoNewPrivileges=yes", "DynamicUser=yes", "CapabilityBoundingSet=\n"] {
        assert!(service.contains(hardening), "no {hardening:?}");
    }
    let args = exec_start(&service);
    assert_eq!(args[0], "/usr/local/bin/call-router");
    assert!(args.contains(&"serve".to_owned()), "{args:?}");
    // The binary parses the arguments (`--help` after them answers only if they parse).
    let out = command(&[]).args(&args[1..]).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    // Stopping waits longer than the default drain.
    let stop: u64 =
        service.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).and_then(|v| v.parse().ok()).unwrap();
    assert!(stop > 30, "TimeoutStopSec={stop} is not above drain_secs' default");
}

#[tokio::test]
async fn the_container_health_check_runs_the_binary_against_healthz() {
    let dockerfile = deploy_file("Dockerfile");
    for needed in ["\nFROM ", " AS build", "\nUSER 65532", "\nHEALTHCHECK "] {
        assert!(dockerfile.contains(needed), "no {needed:?}");
    }
    assert_eq!(dockerfile.matches("\nFROM ").count(), 2, "a build stage and a runtime stage");
    // The health check's exec form, on the line after HEALTHCHECK.
    let at = dockerfile.find("\nHEALTHCHECK ").unwrap();
    let cmd = dockerfile[at..].lines().find_map(|l| l.trim().strip_prefix("CMD ")).unwrap();
    let args: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert_eq!(args[0], "/usr/local/bin/call-router");
    let url = args.last().unwrap().clone();
    assert!(url.ends_with("/healthz"), "{url}");

    // The same arguments against a real server: the image's port swapped for the test's.
    let app = common::spawn_app().await;
    let port_at = url.find("127.0.0.1:").unwrap();
    let path_at = port_at + url[port_at..].find('/').unwrap();
    let real = format!("{}{}", app.url, &url[path_at..]);
    let mut args = args[1..].to_vec();
    *args.last_mut().unwrap() = real;
    let out = tokio::task::spawn_blocking(move || command(&[]).args(&args).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
