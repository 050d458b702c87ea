//! The command line: argument definitions and the commands behind them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::config::{self, Settings};
use crate::domain::{Location, LocationSpec, check_unique};
use crate::hours::{HolidaySpec, HoursSpec, WeeklySpec};
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "call-router",
    version,
    about = "Routes callers on one Twilio number to the right location's phone line."
)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub json_logs: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Twilio's webhooks.
    Serve {
        /// The TOML config file (environment variables override it).
        #[arg(long, short, env = "CALL_ROUTER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a simulated business end to end on this machine: no Twilio account needed.
    #[command(long_about = crate::demo::LONG_HELP)]
    Demo(Box<crate::demo::DemoArgs>),
    /// Run a local Twilio-compatible emulator of the Voice and TaskRouter APIs on loopback.
    ///
    /// Credentials come from TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; when they are absent the
    /// sandbox makes up a pair and prints it. It prints `export` lines (and `#` comments) that a
    /// shell can run as they are: paste them, or write them with --env-file and `. ./FILE`.
    Sandbox {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081", env = "CALL_ROUTER_SANDBOX_LISTEN")]
        listen: std::net::SocketAddr,
        /// Virtual seconds per real second: 100 makes a 20 s ring take 0.2 s.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Seeds every SID and random choice, so runs repeat.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A Twilio number the account owns from the start, in E.164 (repeatable).
        #[arg(long = "number", value_name = "E164")]
        numbers: Vec<String>,
        /// Also write the `export` lines to FILE (readable by its owner only) once the sandbox
        /// listens, and remove it when the sandbox stops; load it with `. ./FILE`.
        #[arg(long, value_name = "FILE")]
        env_file: Option<PathBuf>,
    },
    /// Measure the server against a bare HTTP server on this machine (use a release build).
    Bench {
        /// Seconds of load per measured run.
        #[arg(long, default_value_t = 5)]
        duration_secs: u64,
        /// Concurrent connections of the load generator.
        #[arg(long, default_value_t = 10)]
        connections: usize,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// The server's database (postgres://… to measure PostgreSQL; its tables are reused);
        /// default: a fresh SQLite file per start in a temporary directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Also measure reservation.created through a round-robin balancer in front of this many
        /// instances (needs --database-url postgres://…).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
        instances: u16,
        /// Internal: serve the bare baseline on ADDR (the benchmark starts this itself).
        #[arg(long, value_name = "ADDR", hide = true)]
        serve_baseline: Option<std::net::SocketAddr>,
    },
    /// Create or repair the Twilio resources the locations need (TaskRouter workspace, queues, workers,
    /// workflow, number webhooks). Safe to re-run.
    Provision {
        /// The TOML config file (environment variables override it).
        #[arg(long, short, env = "CALL_ROUTER_CONFIG")]
        config: Option<PathBuf>,
        /// Print the plan and write nothing (only GET requests are sent).
        #[arg(long)]
        dry_run: bool,
        /// Delete the queues and workers provision created for locations no longer in the database.
        #[arg(long)]
        prune: bool,
    },
    /// Check a deployment, one line per check: the config, the database (exists and migrated;
    /// nothing is migrated), Twilio with these credentials, and provisioning in step with the
    /// locations (GET requests only). Exits non-zero when a check fails.
    Check {
        /// The TOML config file (environment variables override it).
        #[arg(long, short, env = "CALL_ROUTER_CONFIG")]
        config: Option<PathBuf>,
        /// Check only that URL answers 2xx, e.g. http://127.0.0.1:8080/healthz (a container's
        /// health check: no config, database or Twilio needed).
        #[arg(long, value_name = "URL")]
        health: Option<String>,
    },
    /// Manage locations in the database.
    Locations {
        #[command(flatten)]
        db: DbArgs,
        #[command(subcommand)]
        command: LocationsCommand,
    },
}

/// Where the database is: `--database-url`, else the config file's, else the default.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The config file to read `database_url` from.
    #[arg(long, short, env = "CALL_ROUTER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The database URL (overrides the config file).
    #[arg(long, env = "CALL_ROUTER_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LocationsCommand {
    /// Add or replace one location.
    Add(Box<AddLocation>),
    /// List the locations.
    List,
    /// Remove a location by name.
    Remove { name: String },
    /// Add or replace every location in a TOML file of `[[locations]]` tables.
    Import { file: PathBuf },
    /// Add a location's holidays and closures from an iCalendar (.ics) file or URL.
    ///
    /// All-day events become holidays (several days: one closure), timed events closures, and
    /// yearly repeats recurring holidays; entries the location already has are kept as they
    /// are. Events that cannot be expressed (weekly repeats, exceptions) are listed and left out.
    Holidays {
        /// The location's name.
        name: String,
        /// A path, or an http(s):// or webcal:// URL (fetched with a 20 s timeout, at most 2 MiB).
        #[arg(long)]
        ical: String,
        /// Print what would be added, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct AddLocation {
    /// Short identifier (a-z, 0-9, -, _); what the workflow routes on.
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub display_name: Option<String>,
    /// Menu digit, when a number serves several locations.
    #[arg(long)]
    pub digit: Option<String>,
    /// A Twilio number that serves the location (repeatable).
    #[arg(long = "number", required = true)]
    pub numbers: Vec<String>,
    /// The location's phone line, in E.164 (+14155550123); repeat it for
    /// several phones, rung in the order given.
    #[arg(long = "phone", required = true)]
    pub phones: Vec<String>,
    /// How several phones ring: in_order (default) or all_at_once.
    #[arg(long, default_value = "in_order", value_parser = ["in_order", "all_at_once"])]
    pub ring: String,
    /// The number the location sees; defaults to the first Twilio number.
    #[arg(long)]
    pub caller_id: Option<String>,
    /// Show the caller's own number to the location (uses Twilio's CallToken).
    #[arg(long)]
    pub show_caller_number: bool,
    #[arg(long, default_value_t = 1)]
    pub lines: u32,
    /// IANA time zone, e.g. America/New_York.
    #[arg(long)]
    pub time_zone: String,
    /// Opening hours as DAY=HH:MM-HH:MM[,HH:MM-HH:MM]; DAY is mon..sun, or a range like mon-fri (repeatable).
    #[arg(long = "hours")]
    pub hours: Vec<String>,
    /// A holiday: a date YYYY-MM-DD, a yearly date --MM-DD, or a rule such as "4th thu nov" or
    /// "easter+1" (repeatable).
    #[arg(long = "holiday")]
    pub holidays: Vec<String>,
    /// Have Twilio transcribe the location's voicemails.
    #[arg(long)]
    pub transcribe: bool,
    /// An address that gets an email for each voicemail (repeatable).
    #[arg(long = "notify-email")]
    pub notify_email: Vec<String>,
    /// A URL that gets a signed JSON notification of each voicemail.
    #[arg(long)]
    pub notify_webhook: Option<String>,
    /// Screen calls: the location hears who is calling and presses 1 to
    /// accept. On for locations added here; `--screening false` turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub screening: bool,
    /// Seconds the screening prompt waits for a key (3-30, default 8).
    #[arg(long)]
    pub screening_timeout_secs: Option<u32>,
    /// Say the caller's name (Twilio's CallerName, when present) in the screening prompt.
    #[arg(long)]
    pub screening_caller_name: bool,
    /// Answering-machine detection on the location's leg (default: on without
    /// screening, off with it).
    #[arg(long, action = clap::ArgAction::Set)]
    pub amd: Option<bool>,
    /// Tell waiting callers their place and expected wait every this many seconds (0: never;
    /// unset: `ivr.announce_every_secs`).
    #[arg(long)]
    pub announce_every_secs: Option<u32>,
    /// The location's hold music (https://…); unset: `ivr.hold_music_url`.
    #[arg(long)]
    pub hold_music: Option<String>,
    /// A message said in turn to waiting callers (repeatable).
    #[arg(long = "comfort-message")]
    pub comfort_messages: Vec<String>,
    /// Another location that takes this one's callers when it is closed or every line is busy.
    #[arg(long)]
    pub overflow: Option<String>,
    /// Seconds a caller waits here before being offered to the overflow location (10-3600).
    #[arg(long)]
    pub overflow_after_secs: Option<u32>,
    /// Offer waiting callers a callback: press 1 to hang up and keep their place.
    #[arg(long)]
    pub callback: bool,
    /// Seconds in the queue before the callback offer is said (default 60; a key works at any time).
    #[arg(long, requires = "callback")]
    pub callback_after_secs: Option<u32>,
    /// How many times the caller is called back before giving up (1-5, default 2).
    #[arg(long, requires = "callback")]
    pub callback_tries: Option<u32>,
    /// A callback still waiting at closing time: `next-opening` (default) keeps it for the next
    /// opening, `cancel` ends it (listed as callback_canceled), `voicemail-list` ends it and puts a
    /// callback request in the location's voicemail list.
    #[arg(long, requires = "callback", value_parser = ["next-opening", "cancel", "voicemail-list"])]
    pub callback_at_closing: Option<String>,
    /// What callers still waiting at closing time get: `voicemail` (default), `callback` (at the
    /// next opening; needs --callback) or `overflow` (the --overflow location's queue, when open).
    #[arg(long, value_parser = ["voicemail", "callback", "overflow"])]
    pub closing_policy: Option<String>,
    /// The location's language, one of `ivr.languages` (e.g. es-MX); unset: the first.
    #[arg(long)]
    pub language: Option<String>,
    /// The `<Say voice>` for its language (e.g. Polly.Mia); unset: the language's.
    #[arg(long)]
    pub voice: Option<String>,
}

/// Runs a command that needs no sandbox or provisioning.
pub async fn run_locations(db: &DbArgs, cmd: &LocationsCommand) -> anyhow::Result<()> {
    let url = database_url(db)?;
    let store = Store::connect(&url).await?;
    match cmd {
        LocationsCommand::Add(add) => {
            let spec = add.to_spec()?;
            let loc = Location::from_spec(spec.clone()).map_err(|e| anyhow::anyhow!("location {}: {e}", spec.name))?;
            let mut all: Vec<LocationSpec> =
                store.location_specs().await?.into_iter().filter(|s| s.name != spec.name).collect();
            all.push(spec.clone());
            check_unique(&all)?;
            store.upsert_location(&spec).await?;
            let screening = if spec.screening { "screening on" } else { "screening off" };
            println!("saved location {} ({}), {screening}", loc.name, loc.display_name);
        }
        LocationsCommand::List => {
            let locs = store.locations().await?;
            if locs.is_empty() {
                println!("no locations; add one with `call-router locations add` or `import`");
            }
            // A command of its own, with no server settings: always the wall clock.
            let now = crate::clock::Clock::WALL.now();
            println!(
                "{:<16} {:<5} {:<16} {:<16} {:<24} {:<5} numbers",
                "name", "digit", "phone", "caller id", "time zone", "open"
            );
            for l in &locs {
                println!(
                    "{:<16} {:<5} {:<16} {:<16} {:<24} {:<5} {}",
                    l.name,
                    l.digit.map(String::from).unwrap_or_default(),
                    l.phones.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(","),
                    l.caller_id,
                    l.schedule.time_zone_name(),
                    if l.schedule.is_open(now) { "yes" } else { "no" },
                    l.numbers.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",")
                );
            }
            for l in &locs {
                if let Some(warning) = l.schedule.past_calendar_warning(now) {
                    println!("warning: location {}: {warning}", l.name);
                }
            }
        }
        LocationsCommand::Remove { name } => {
            let dependents: Vec<String> = store
                .location_specs()
                .await?
                .into_iter()
                .filter(|s| s.overflow.as_deref() == Some(name.as_str()))
                .map(|s| s.name)
                .collect();
            if !dependents.is_empty() {
                let verb = if dependents.len() == 1 { "overflows" } else { "overflow" };
                bail!(
                    "{} {verb} to {name:?}: change their `overflow` first (locations add … or import)",
                    dependents.join(", ")
                );
            }
            if store.remove_location(name).await? {
                println!("removed location {name}");
            } else {
                bail!("no location named {name:?}");
            }
        }
        LocationsCommand::Import { file } => {
            let specs = read_locations_file(file)?;
            import(&store, &specs).await?;
            println!("imported {} location(s) from {}", specs.len(), file.display());
        }
        LocationsCommand::Holidays { name, ical, dry_run } => {
            let mut spec = store
                .location_specs()
                .await?
                .into_iter()
                .find(|s| &s.name == name)
                .with_context(|| format!("no location named {name:?}"))?;
            let text = read_calendar_source(ical, ICAL_TIMEOUT, ICAL_MAX_BYTES).await?;
            let calendar = ical::parse(&text).with_context(|| ical.clone())?;
            let tz = jiff::tz::TimeZone::get(&spec.hours.time_zone)
                .with_context(|| format!("location {name}: time zone {:?}", spec.hours.time_zone))?;
            let imported = crate::ical_import::from_calendar(&calendar, &tz);
            for note in &imported.notes {
                eprintln!("{ical}: {note}");
            }
            let before = spec.hours.clone();
            let (holidays, closures) = crate::ical_import::merge(&mut spec.hours, &imported);
            let added = added_entries_toml(&before, &spec.hours)?;
            Location::from_spec(spec.clone()).map_err(|e| anyhow::anyhow!("location {name}: {e}"))?;
            if *dry_run {
                println!("would add {holidays} holiday(s) and {closures} closure(s) to {name}:\n{added}");
                return Ok(());
            }
            store.upsert_location(&spec).await?;
            println!("added {holidays} holiday(s) and {closures} closure(s) to {name}");
            if declared_in_config(db, name) {
                println!(
                    "note: {name} is also declared in the config file, and `provision` stores the file's version; \
                     add these to its [locations.hours] there too:\n{added}"
                );
            }
        }
    }
    Ok(())
}

/// The longest a calendar URL may take to answer, and the largest calendar read.
const ICAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const ICAL_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Reads an iCalendar file from a path, or from an `http://`, `https://` or `webcal://` URL
/// (webcal is fetched over https), within `timeout` and `max_bytes`.
pub async fn read_calendar_source(
    source: &str,
    timeout: std::time::Duration,
    max_bytes: usize,
) -> anyhow::Result<String> {
    let too_big = || anyhow::anyhow!("{source}: larger than {} KiB", max_bytes / 1024);
    let bytes = if let Some(rest) = source.strip_prefix("webcal://") {
        Box::pin(read_calendar_source(&format!("https://{rest}"), timeout, max_bytes)).await?.into_bytes()
    } else if source.starts_with("http://") || source.starts_with("https://") {
        crate::twilio_api::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(timeout).build().context("building an HTTP client")?;
        let fetch = async {
            let mut response = client.get(source).send().await?.error_for_status()?;
            if response.content_length().is_some_and(|n| n > max_bytes as u64) {
                return Ok(None);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() > max_bytes {
                    return Ok(None);
                }
            }
            Ok::<_, reqwest::Error>(Some(body))
        };
        match fetch.await {
            Ok(Some(body)) => body,
            Ok(None) => return Err(too_big()),
            Err(e) if e.is_timeout() => bail!("{source}: no complete answer within {} s", timeout.as_secs_f32()),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("fetching {source}"))),
        }
    } else {
        let len = std::fs::metadata(source).with_context(|| format!("reading {source}"))?.len();
        if len > max_bytes as u64 {
            return Err(too_big());
        }
        std::fs::read(source).with_context(|| format!("reading {source}"))?
    };
    String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{source}: not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// The holidays and closures `after` has beyond `before`, as TOML lines to paste into a
/// location's `[locations.hours]`.
fn added_entries_toml(before: &HoursSpec, after: &HoursSpec) -> anyhow::Result<String> {
    let inline = |v: toml::Value| v.to_string();
    let mut out = String::new();
    let new_holidays = &after.holidays[before.holidays.len()..];
    let new_closures = &after.closures[before.closures.len()..];
    for (key, items) in [
        ("holidays", new_holidays.iter().map(toml::Value::try_from).collect::<Result<Vec<_>, _>>()?),
        ("closures", new_closures.iter().map(toml::Value::try_from).collect::<Result<Vec<_>, _>>()?),
    ] {
        if items.is_empty() {
            continue;
        }
        out.push_str(&format!("{key} = [\n"));
        for item in items {
            out.push_str(&format!("  {},\n", inline(item)));
        }
        out.push_str("]\n");
    }
    Ok(out)
}

/// Whether the config file (if any) declares a location by this name.
fn declared_in_config(db: &DbArgs, name: &str) -> bool {
    let Some(path) = &db.config else { return false };
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Ok(value) = toml::from_str::<toml::Value>(&text) else { return false };
    value
        .get("locations")
        .and_then(toml::Value::as_array)
        .is_some_and(|ls| ls.iter().any(|l| l.get("name").and_then(toml::Value::as_str) == Some(name)))
}

/// Checks every spec, and all of them together with what is stored, before
/// writing any: an import is all or nothing.
pub async fn import(store: &Store, specs: &[LocationSpec]) -> anyhow::Result<()> {
    for s in specs {
        s.validate().map_err(|e| anyhow::anyhow!("location {:?}: {e}", s.name))?;
    }
    let mut all: Vec<LocationSpec> =
        store.location_specs().await?.into_iter().filter(|s| !specs.iter().any(|n| n.name == s.name)).collect();
    all.extend(specs.iter().cloned());
    check_unique(&all)?;
    for s in specs {
        store.upsert_location(s).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationsFile {
    locations: Vec<LocationSpec>,
}

pub fn read_locations_file(path: &Path) -> anyhow::Result<Vec<LocationSpec>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: LocationsFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(file.locations)
}

fn database_url(db: &DbArgs) -> anyhow::Result<String> {
    if let Some(url) = &db.database_url {
        return Ok(url.clone());
    }
    if let Some(path) = &db.config {
        #[derive(Deserialize)]
        struct OnlyDb {
            database_url: Option<String>,
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let raw: toml::Table = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let only: OnlyDb = raw.try_into().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Some(url) = only.database_url {
            return Ok(url);
        }
    }
    Ok("sqlite://call-router.db".to_owned())
}

impl AddLocation {
    fn to_spec(&self) -> anyhow::Result<LocationSpec> {
        let mut weekly: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        for h in &self.hours {
            let (days, ranges) = h
                .split_once('=')
                .with_context(|| format!("--hours {h:?}: expected DAY=HH:MM-HH:MM, like mon-fri=08:00-17:00"))?;
            let days = days.trim().to_ascii_lowercase();
            let selected: Vec<&str> = match days.split_once('-') {
                Some((a, b)) => {
                    let (ia, ib) = (DAYS.iter().position(|d| *d == a), DAYS.iter().position(|d| *d == b));
                    match (ia, ib) {
                        (Some(ia), Some(ib)) if ia <= ib => DAYS[ia..=ib].to_vec(),
                        _ => bail!("--hours {h:?}: {days:?} is not a day range like mon-fri"),
                    }
                }
                None => match DAYS.iter().find(|d| **d == days) {
                    Some(d) => vec![*d],
                    None => bail!("--hours {h:?}: {days:?} is not a day (mon..sun)"),
                },
            };
            for d in selected {
                weekly.entry(d).or_default().extend(ranges.split(',').map(|r| r.trim().to_owned()));
            }
        }
        let take = |d: &str| weekly.get(d).cloned().unwrap_or_default();
        Ok(LocationSpec {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            digit: self.digit.clone(),
            numbers: self.numbers.clone(),
            // One phone keeps the old form, so the spec reads as before.
            phone: if self.phones.len() == 1 { self.phones[0].clone() } else { String::new() },
            phones: if self.phones.len() == 1 { Vec::new() } else { self.phones.clone() },
            ring: if self.ring == "all_at_once" {
                crate::domain::Ring::AllAtOnce
            } else {
                crate::domain::Ring::InOrder
            },
            caller_id: self.caller_id.clone(),
            show_caller_number: self.show_caller_number,
            lines: self.lines,
            hours: HoursSpec {
                time_zone: self.time_zone.clone(),
                weekly: WeeklySpec {
                    mon: take("mon"),
                    tue: take("tue"),
                    wed: take("wed"),
                    thu: take("thu"),
                    fri: take("fri"),
                    sat: take("sat"),
                    sun: take("sun"),
                },
                holidays: self.holidays.iter().map(|h| HolidaySpec::from_text(h)).collect(),
                closures: Vec::new(),
            },
            transcribe: self.transcribe,
            notify_email: self.notify_email.clone(),
            notify_webhook: self.notify_webhook.clone(),
            screening: self.screening,
            screening_timeout_secs: self.screening_timeout_secs,
            screening_caller_name: self.screening_caller_name,
            amd: self.amd,
            announce_every_secs: self.announce_every_secs,
            hold_music: self.hold_music.clone(),
            comfort_messages: self.comfort_messages.clone(),
            overflow: self.overflow.clone(),
            overflow_after_secs: self.overflow_after_secs,
            language: self.language.clone(),
            voice: self.voice.clone(),
            translations: Default::default(),
            closing_policy: match self.closing_policy.as_deref() {
                Some("callback") => crate::domain::ClosingPolicy::Callback,
                Some("overflow") => crate::domain::ClosingPolicy::Overflow,
                _ => crate::domain::ClosingPolicy::Voicemail,
            },
            callback: self.callback.then(|| {
                let d = crate::domain::CallbackSpec::default();
                crate::domain::CallbackSpec {
                    offer_after_secs: self.callback_after_secs.unwrap_or(d.offer_after_secs),
                    tries: self.callback_tries.unwrap_or(d.tries),
                    at_closing: match self.callback_at_closing.as_deref() {
                        Some("cancel") => crate::domain::AtClosing::Cancel,
                        Some("voicemail-list") => crate::domain::AtClosing::VoicemailList,
                        _ => crate::domain::AtClosing::NextOpening,
                    },
                }
            }),
        })
    }
}

/// How long a stopping `serve` still answers (with `Connection: close`)
/// before it stops accepting and closes idle connections: long enough for a
/// busy keep-alive client's next request. Without it, a client that sends on
/// an idle connection just as the server closes it gets no answer.
const KEEP_ALIVE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);
// A SIGTERM at once after the start still finds the dispatcher begun (see
// `app::STARTUP_GRACE`), so the first webhooks' dials are sent by this process.
const _: () = assert!(KEEP_ALIVE_GRACE.as_millis() > crate::app::STARTUP_GRACE.as_millis());

/// `call-router serve`.
pub async fn run_serve(config_path: Option<&Path>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Checking the locations' time zones opens the time-zone database, which
    // lists the system's zoneinfo directory (a few hundred files) first: that
    // runs on a thread of its own while the config file is read and parsed.
    std::thread::spawn(|| {
        let _ = jiff::tz::db();
    });
    let settings = Settings::load(config_path)?;
    let listening = crate::listen::open(settings.listen)?;
    let server = crate::app::Server::start(settings, listening.listener).await?;
    let reload =
        tokio::spawn(crate::app::reload_on_hangup(config_path.map(Path::to_path_buf), server.state.store().clone()));
    tracing::info!(startup_ms = started.elapsed().as_millis() as u64, url = %server.url(), "ready");
    crate::app::shutdown_signal().await;
    reload.abort();
    tracing::info!("shutting down");
    // A second signal means: do not wait for the drain.
    tokio::select! {
        result = server.shutdown_after(KEEP_ALIVE_GRACE) => result,
        () = crate::app::shutdown_signal() => {
            tracing::warn!("a second signal: exiting without finishing the drain");
            Ok(())
        }
    }
}

/// `call-router sandbox`: serves the emulator until Ctrl-C.
pub async fn run_sandbox(
    listen: std::net::SocketAddr,
    time_scale: f64,
    seed: u64,
    numbers: &[String],
    env_file: Option<&Path>,
) -> anyhow::Result<()> {
    if !(time_scale.is_finite() && time_scale > 0.0) {
        bail!("--time-scale must be a positive number, got {time_scale}");
    }
    let numbers = numbers
        .iter()
        .map(|n| twilio::E164::parse(n).map_err(|e| anyhow::anyhow!("--number: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the sandbox is listening beyond loopback");
    }
    let (sandbox_config, made_up) = sandbox::Config::from_env_or_random(time_scale, seed);
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen} (--listen)"))?;
    let sandbox = sandbox::start(sandbox_config, listener).await?;
    let url = sandbox.url();
    let twilio = crate::twilio_api::TwilioClient::new(&config::TwilioSettings {
        account_sid: sandbox.account_sid().clone(),
        auth_token: sandbox.auth_token().to_owned().into(),
        api_base_url: url.clone(),
        taskrouter_base_url: url.clone(),
        workspace_sid: None,
        workflow_sid: None,
        request_timeout_ms: 5_000,
        tls_roots: config::TlsRoots::default(),
    })?;
    for n in &numbers {
        let mut p = twilio::Params::new();
        p.push("PhoneNumber", n.as_str());
        let path = twilio.account_path("IncomingPhoneNumbers.json");
        twilio.create(crate::twilio_api::Api::Core, &path, &p).await.with_context(|| format!("adding number {n}"))?;
    }
    let lines = SandboxEnv {
        url: &url,
        time_scale,
        seed,
        account_sid: sandbox.account_sid().as_str(),
        made_up_token: made_up.then(|| sandbox.auth_token()),
        numbers: &numbers,
    }
    .shell_lines();
    if let Some(path) = env_file {
        write_private(path, &lines).with_context(|| format!("writing {} (--env-file)", path.display()))?;
    }
    print!("{lines}");
    crate::app::shutdown_signal().await;
    sandbox.shutdown().await;
    if let Some(path) = env_file {
        // A stale file would name a port and a token that no longer work.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// What `call-router sandbox` prints: lines a POSIX shell can run as they are.
#[derive(Debug)]
pub struct SandboxEnv<'a> {
    pub url: &'a str,
    pub time_scale: f64,
    pub seed: u64,
    pub account_sid: &'a str,
    /// The token, when the sandbox made it up; one from the environment may be a real
    /// account's, so it is not printed.
    pub made_up_token: Option<&'a str>,
    pub numbers: &'a [twilio::E164],
}

impl SandboxEnv<'_> {
    /// `export NAME=value` lines, each value quoted for the shell, and `#` comments.
    pub fn shell_lines(&self) -> String {
        use std::fmt::Write as _;
        let url = self.url;
        let mut out =
            format!("# call-router sandbox listening on {url} (time scale {}, seed {})\n", self.time_scale, self.seed);
        let mut export = |name: &str, value: &str| {
            let _ = writeln!(out, "export {name}={}", shell_quote(value));
        };
        export(config::env::API_BASE_URL, url);
        export(config::env::TASKROUTER_BASE_URL, url);
        export(config::env::ACCOUNT_SID, self.account_sid);
        match self.made_up_token {
            // A made-up sandbox credential, not a secret of anyone's: the user needs it to connect.
            Some(token) => {
                export(config::env::AUTH_TOKEN, token);
                let _ = writeln!(
                    out,
                    "# the account SID and token are made up; set both variables before starting the sandbox to choose your own"
                );
            }
            None => {
                let _ =
                    writeln!(out, "# {} as set in the sandbox's environment (not printed)", config::env::AUTH_TOKEN);
            }
        }
        for n in self.numbers {
            let _ = writeln!(out, "# owns {n}");
        }
        let _ = writeln!(out, "# inspect: GET {url}/sandbox/log and {url}/sandbox/state (basic auth); Ctrl-C stops");
        out
    }
}

/// `value` as one shell word: unchanged when it holds only characters no shell treats
/// specially, else in single quotes (a `'` inside becomes `'\''`).
pub fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:/@%+=".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Writes `text` to `path` readable by its owner only, through a file beside it that is
/// renamed into place, so a reader never sees half of it.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `call-router bench`, or the baseline server it starts as a child process.
pub async fn run_bench(
    duration_secs: u64,
    connections: usize,
    json: bool,
    database_url: Option<String>,
    instances: u16,
    serve_baseline: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    if let Some(addr) = serve_baseline {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        return crate::bench::serve_baseline(listener).await;
    }
    if duration_secs == 0 || connections == 0 {
        bail!("--duration-secs and --connections must be at least 1");
    }
    let on_postgres = database_url
        .as_deref()
        .is_some_and(|u| crate::store::Backend::of(u).ok() == Some(crate::store::Backend::Postgres));
    if instances > 1 && !on_postgres {
        bail!("--instances {instances} needs --database-url postgres://… (SQLite serves one instance)");
    }
    crate::bench::run(crate::bench::BenchOptions {
        duration: std::time::Duration::from_secs(duration_secs),
        connections,
        json,
        database_url,
        instances: usize::from(instances),
    })
    .await
}

/// The environment variable names, for help text.
pub fn env_help() -> String {
    use config::env::*;
    format!(
        "Environment: {ACCOUNT_SID}, {AUTH_TOKEN}, {PUBLIC_URL}, {LISTEN}, {DATABASE_URL}, {API_BASE_URL}, \
         {TASKROUTER_BASE_URL}, {WORKSPACE_SID}, {WORKFLOW_SID}, {INSECURE_SKIP_SIGNATURES}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICS: &str = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261225\r\nSUMMARY:Christmas\r\n\
                       RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    /// A calendar server on loopback: one good file, and every way a fetch can go wrong.
    async fn calendar_server() -> std::net::SocketAddr {
        use axum::routing::get;
        let chunks = || {
            let chunk = || Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1000]));
            axum::body::Body::from_stream(futures_util::stream::iter((0..10).map(move |_| chunk())))
        };
        let app = axum::Router::new()
            .route("/holidays.ics", get(|| async { ICS }))
            .route("/big.ics", get(|| async { "x".repeat(10_000) }))
            .route("/streamed.ics", get(move || async move { chunks() }))
            .route("/binary.ics", get(|| async { vec![b'B', 0xff, 0xfe] }))
            .route("/missing.ics", get(|| async { (http::StatusCode::NOT_FOUND, "no such calendar") }))
            .route("/slow.ics", get(std::future::pending::<&'static str>));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn calendars_are_read_from_urls_and_files_within_limits() {
        let addr = calendar_server().await;
        let read = |source: String, timeout_ms: u64| async move {
            read_calendar_source(&source, std::time::Duration::from_millis(timeout_ms), 4096).await
        };
        let url = |path: &str| format!("http://{addr}{path}");
        assert_eq!(read(url("/holidays.ics"), 5000).await.unwrap(), ICS);
        let failure = |r: anyhow::Result<String>| format!("{:#}", r.unwrap_err());
        let cases = [
            ("/big.ics", "larger than 4 KiB"),
            ("/streamed.ics", "larger than 4 KiB"),
            ("/binary.ics", "not UTF-8 text (byte 1)"),
            ("/missing.ics", "404"),
        ];
        for (path, want) in cases {
            let e = failure(read(url(path), 5000).await);
            assert!(e.contains(want) && e.contains(path), "{path}: {e}");
        }
        // A server that never answers is given up on.
        let e = failure(read(url("/slow.ics"), 200).await);
        assert!(e.contains("no complete answer within 0.2 s"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("holidays.ics");
        std::fs::write(&file, ICS).unwrap();
        assert_eq!(read(file.display().to_string(), 5000).await.unwrap(), ICS);
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        assert!(failure(read(file.display().to_string(), 5000).await).contains("larger than 4 KiB"));
        let e = failure(read(dir.path().join("none.ics").display().to_string(), 5000).await);
        assert!(e.contains("none.ics"), "{e}");
    }

    #[tokio::test]
    async fn locations_holidays_adds_a_calendar_to_the_stored_location() {
        let addr = calendar_server().await;
        let dir = tempfile::tempdir().unwrap();
        let db = DbArgs { config: None, database_url: Some(format!("sqlite://{}", dir.path().join("t.db").display())) };
        let store = Store::connect(db.database_url.as_deref().unwrap()).await.unwrap();
        let spec = LocationSpec::new(
            "north",
            &["+12025550143"],
            "+14155550123",
            HoursSpec { time_zone: "America/New_York".into(), ..HoursSpec::default() },
        );
        import(&store, std::slice::from_ref(&spec)).await.unwrap();
        let holidays = |name: &str, dry_run: bool| LocationsCommand::Holidays {
            name: name.into(),
            ical: format!("http://{addr}/holidays.ics"),
            dry_run,
        };
        run_locations(&db, &holidays("north", true)).await.unwrap();
        assert!(store.location_specs().await.unwrap()[0].hours.holidays.is_empty(), "a dry run changes nothing");
        run_locations(&db, &holidays("north", false)).await.unwrap();
        run_locations(&db, &holidays("north", false)).await.unwrap();
        let stored = &store.location_specs().await.unwrap()[0];
        let christmas =
            HolidaySpec { date: "--12-25".into(), name: Some("Christmas".into()), ..HolidaySpec::default() };
        assert_eq!(stored.hours.holidays, [christmas], "added once");
        let e = run_locations(&db, &holidays("south", false)).await.unwrap_err();
        assert_eq!(e.to_string(), "no location named \"south\"");
    }

    #[test]
    fn added_entries_print_as_toml_to_paste() {
        let before = HoursSpec { time_zone: "UTC".into(), ..HoursSpec::default() };
        let mut after = before.clone();
        after.holidays.push(HolidaySpec::from_text("4th thu nov"));
        after.holidays[0].name = Some("Thanksgiving".into());
        after.closures.push(crate::hours::ClosureSpec {
            from: "2026-03-10T10:00".into(),
            to: "2026-03-10T12:00".into(),
            reason: Some("Training".into()),
            message: None,
        });
        let text = added_entries_toml(&before, &after).unwrap();
        let back: HoursSpec = toml::from_str(&format!("time_zone = \"UTC\"\n{text}")).unwrap();
        assert_eq!(back, after, "{text}");
    }

    /// Runs `script` in bash, then prints the named variables one per line.
    fn eval_in_bash(script: &str, names: &[&str]) -> Vec<String> {
        let print: String = names.iter().map(|n| format!("printf '%s\\n' \"${n}\"; ")).collect();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -eu; eval \"$1\"; {print}"))
            .arg("bash")
            .arg(script)
            .output()
            .expect("running bash");
        assert!(out.status.success(), "bash failed: {}\n{script}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
    }

    #[test]
    fn locations_add_takes_several_phones_in_order() {
        let spec = |phones: &[&str]| {
            let mut args = vec!["call-router", "locations", "add", "--name", "north", "--number", "+12025550143"];
            for p in phones {
                args.extend_from_slice(&["--phone", p]);
            }
            args.extend_from_slice(&["--time-zone", "UTC"]);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Locations { command: LocationsCommand::Add(add), .. }) => Ok(add.to_spec().unwrap()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let one = spec(&["+14155550101"]).unwrap();
        assert_eq!((one.phone.as_str(), one.phones.len()), ("+14155550101", 0), "one phone keeps the old form");
        let two = spec(&["+14155550101", "+14155550102"]).unwrap();
        assert_eq!(two.phone_list(), ["+14155550101", "+14155550102"]);
        assert!(two.phone.is_empty());
        two.validate_shape().unwrap();
        let twice = spec(&["+14155550101", "+14155550101"]).unwrap();
        assert_eq!(twice.validate_shape().unwrap_err().field, "phones[1]");
        assert!(spec(&[]).unwrap_err().contains("--phone"));
        assert_eq!(two.ring, crate::domain::Ring::InOrder);
    }

    #[test]
    fn locations_add_screens_new_locations_unless_told_not_to() {
        let spec = |extra: &[&str]| {
            let mut args = vec![
                "call-router",
                "locations",
                "add",
                "--name",
                "north",
                "--number",
                "+12025550143",
                "--phone",
                "+14155550101",
                "--time-zone",
                "UTC",
            ];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).unwrap().command {
                Command::Locations { command: LocationsCommand::Add(add), .. } => add.to_spec().unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let new = spec(&[]);
        assert!(new.screening && !new.amd(), "{new:?}");
        let off = spec(&["--screening", "false"]);
        assert!(!off.screening && off.amd(), "{off:?}");
        let kept = spec(&["--amd", "true", "--screening-timeout-secs", "12", "--screening-caller-name"]);
        assert!(kept.amd() && kept.screening_caller_name && kept.screening_timeout_secs == Some(12), "{kept:?}");
        // Without screening, AMD is what protects callers: it cannot be turned off.
        assert!(spec(&["--screening", "false", "--amd", "false"]).validate_shape().is_err());
    }

    #[test]
    fn locations_add_takes_a_callback_policy() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["call-router", "locations", "add", "--name", "north", "--number", "+12025550143"];
            args.extend_from_slice(&["--phone", "+14155550101", "--time-zone", "UTC"]);
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Locations { command: LocationsCommand::Add(add), .. }) => Ok(add.to_spec().unwrap()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        use crate::domain::{AtClosing, CallbackSpec};
        assert_eq!(parse(&[]).unwrap().callback, None);
        assert_eq!(parse(&["--callback"]).unwrap().callback, Some(CallbackSpec::default()));
        let cancel = parse(&["--callback", "--callback-tries", "3", "--callback-at-closing", "cancel"]).unwrap();
        assert_eq!(cancel.callback.map(|c| (c.tries, c.at_closing)), Some((3, AtClosing::Cancel)));
        let next = parse(&["--callback", "--callback-at-closing", "next-opening"]).unwrap();
        assert_eq!(next.callback.map(|c| c.at_closing), Some(AtClosing::NextOpening));
        let listed = parse(&["--callback", "--callback-at-closing", "voicemail-list"]).unwrap();
        assert_eq!(listed.callback.map(|c| c.at_closing), Some(AtClosing::VoicemailList));
        let bad = parse(&["--callback", "--callback-at-closing", "never"]).unwrap_err();
        assert!(bad.contains("next-opening") && bad.contains("cancel") && bad.contains("voicemail-list"), "{bad}");
        // The policy needs a callback.
        assert!(parse(&["--callback-at-closing", "cancel"]).unwrap_err().contains("--callback"));
        let closing = parse(&["--callback", "--closing-policy", "callback"]).unwrap();
        assert_eq!(closing.closing_policy, crate::domain::ClosingPolicy::Callback);
        closing.validate_shape().unwrap();
        let without = parse(&["--closing-policy", "callback"]).unwrap();
        assert_eq!(without.validate_shape().unwrap_err().field, "closing_policy");
        // The overflow policy needs an overflow location.
        let transfer = parse(&["--overflow", "south", "--closing-policy", "overflow"]).unwrap();
        assert_eq!(transfer.closing_policy, crate::domain::ClosingPolicy::Overflow);
        transfer.validate_shape().unwrap();
        let nowhere = parse(&["--closing-policy", "overflow"]).unwrap();
        assert_eq!(nowhere.validate_shape().unwrap_err().field, "closing_policy");
        let bad = parse(&["--closing-policy", "transfer"]).unwrap_err();
        assert!(bad.contains("voicemail") && bad.contains("overflow"), "{bad}");
    }

    #[test]
    fn shell_quote_survives_a_shell_for_awkward_values() {
        let values = ["plain-value_1.2", "", "it's", "a b", "$HOME `x` \"y\" \\z", "[::1]:8081", "*", "~user", "#x"];
        let script: String = values.iter().enumerate().map(|(i, v)| format!("V{i}={}\n", shell_quote(v))).collect();
        let names: Vec<String> = (0..values.len()).map(|i| format!("V{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(eval_in_bash(&script, &names), values);
        assert_eq!(shell_quote("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
    }

    #[test]
    fn sandbox_lines_evaluate_to_the_credentials_and_urls() {
        let numbers = [twilio::E164::parse("+12025550143").unwrap()];
        let env = SandboxEnv {
            url: "http://[::1]:8081",
            time_scale: 100.0,
            seed: 3,
            account_sid: "AC00000000000000000000000000000a11",
            made_up_token: Some("tok'en $x"),
            numbers: &numbers,
        };
        let text = env.shell_lines();
        let got = eval_in_bash(
            &text,
            &[
                config::env::API_BASE_URL,
                config::env::TASKROUTER_BASE_URL,
                config::env::ACCOUNT_SID,
                config::env::AUTH_TOKEN,
            ],
        );
        assert_eq!(got, ["http://[::1]:8081", "http://[::1]:8081", "AC00000000000000000000000000000a11", "tok'en $x"]);
        // Every line is an export or a comment: nothing else reaches a shell that evaluates it.
        for line in text.lines() {
            assert!(line.starts_with("export ") || line.starts_with("# "), "{line:?}");
        }
        assert!(text.contains("# owns +12025550143"), "{text}");

        // A token from the environment may be a real one: it is not printed.
        let from_env = SandboxEnv { made_up_token: None, ..env }.shell_lines();
        assert!(!from_env.contains("tok'en"), "{from_env}");
        assert!(!from_env.contains(&format!("export {}", config::env::AUTH_TOKEN)), "{from_env}");
        eval_in_bash(&from_env, &[config::env::ACCOUNT_SID]);
    }
}
