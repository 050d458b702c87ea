//! `call-router demo`: a whole business on this machine, no Twilio account.
//!
//! One process starts the sandbox (a Twilio emulator) and the server pointed
//! at it, provisions a business, places the scenario's calls concurrently,
//! waits for each to end, and reports how every call ended. This module is
//! the only place outside the tests that knows the sandbox.
//!
//! # Layout
//! - [`scenario`]: the scenario format, its checks and the built-in scenarios (pure).
//! - [`report`]: the table and the JSON document (pure).
//! - here: the command-line arguments and options.
//! - `run`: the orchestration, in one place: [`run`] and [`run_cli`].

mod live;
pub mod report;
mod run;
pub mod scenario;

pub use live::{DashboardInfo, fresh_token, run_dashboard};
pub use run::{Business, fault_counts, run, run_cli, sandbox_behaviour};

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use report::CallRow;
use scenario::Scenario;

/// `call-router demo --help`.
pub const LONG_HELP: &str = "Run a simulated business end to end on this machine: no Twilio account needed.\n\n\
        Starts a local Twilio emulator (the sandbox) and the server pointed at it, provisions an example \
        business (three locations behind a menu on one number, one with its own number, one closed), \
        places the scenario's calls at once and prints how each call ended: its location, outcome, \
        AnsweredBy, wait and talk time (in the sandbox's virtual seconds), then totals per outcome.\n\n\
        With no arguments it runs the built-in mix: a person answers, voicemail answers, the line is busy, \
        and a caller hangs up while the location rings.\n\n\
        Built-in scenarios (--scenario NAME): mix, happy-path, busy, voicemail, caller-hangs-up, after-hours, \
        burst, unreachable, queue-timeout, not-in-service, faults (Twilio failing: resets, 500s, duplicated and late webhooks), \
        closing (a location closes while callers wait). A scenario file is TOML; see examples/scenarios/README.md.\n\n\
        Exits non-zero if any call did not end, ended without an outcome, or ended other than its \
        scenario expected.\n\n\
        With --dashboard it keeps the business running instead, at a watchable time scale (5 unless \
        --time-scale says otherwise), with the scenario's callers arriving a few seconds apart, over and \
        over, and prints the dashboard's URL and a fresh admin token to sign in with. Ctrl-C stops it.";

/// `call-router demo`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// A scenario file, or the name of a built-in scenario (default: mix).
    #[arg(long, short, value_name = "FILE|NAME")]
    pub scenario: Option<String>,
    /// How many callers a burst has (the scenario's `burst = true` callers); alone, runs the built-in burst.
    #[arg(long, value_name = "N")]
    pub calls: Option<u32>,
    /// Virtual seconds per real second in the sandbox; larger runs faster [default: 200, or 5 with
    /// --dashboard].
    #[arg(long, value_name = "X")]
    pub time_scale: Option<f64>,
    /// Seed for the sandbox's random choices (SIDs, timings), for repeatable runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the server's database here instead of a temporary file (sqlite://demo.db); locations not in the
    /// scenario are removed from it.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Give up on calls still running after this many real seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Keep the business running with callers arriving, and serve the dashboard (prints its URL and
    /// token); Ctrl-C stops.
    #[arg(long, conflicts_with_all = ["json", "calls"])]
    pub dashboard: bool,
}

impl DemoArgs {
    /// The time scale asked for, or the mode's default.
    pub fn time_scale(&self) -> f64 {
        self.time_scale.unwrap_or(if self.dashboard { 5.0 } else { 200.0 })
    }
}

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Options {
    pub time_scale: f64,
    pub seed: u64,
    /// `None`: a fresh SQLite file in a temporary directory.
    pub database_url: Option<String>,
    /// Real time allowed from the first call to the last end.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { time_scale: 200.0, seed: 1, database_url: None, timeout: Duration::from_secs(60) }
    }
}

/// What [`run`] tells its caller while calls are under way.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// Everything is up; the calls are about to be placed.
    Ready { sandbox_url: &'a str, server_url: &'a str, calls: usize },
    /// One call ended (or was given up on).
    CallEnded { done: usize, total: usize, row: &'a CallRow },
}

/// Picks the scenario the arguments name: a file, a built-in name, or the
/// default mix (the built-in burst when only `--calls` is given).
pub fn load_scenario(args: &DemoArgs) -> anyhow::Result<Scenario> {
    let mut s = match args.scenario.as_deref() {
        None if args.calls.is_some() => scenario::built_in("burst").expect("burst is built in"),
        None => scenario::built_in("mix").expect("mix is built in"),
        Some(arg) if Path::new(arg).is_file() => {
            let text = std::fs::read_to_string(arg).with_context(|| format!("reading scenario {arg}"))?;
            Scenario::parse(&text, arg)?
        }
        Some(arg) => match scenario::built_in(arg) {
            Some(s) => s,
            None => {
                let names: Vec<&str> = scenario::BUILT_IN.iter().map(|(n, _)| *n).collect();
                bail!("--scenario {arg}: no such file, nor a built-in scenario (one of: {})", names.join(", "))
            }
        },
    };
    if let Some(n) = args.calls {
        s.scale_bursts(n).map_err(anyhow::Error::msg)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(scenario: Option<&str>, calls: Option<u32>) -> DemoArgs {
        DemoArgs {
            scenario: scenario.map(Into::into),
            calls,
            time_scale: None,
            seed: 1,
            database_url: None,
            timeout: 60,
            json: false,
            dashboard: false,
        }
    }

    #[test]
    fn arguments_pick_the_scenario() {
        assert_eq!(load_scenario(&args(None, None)).unwrap().name, "mix");
        let burst = load_scenario(&args(None, Some(9))).unwrap();
        assert_eq!((burst.name.as_str(), burst.plan().len()), ("burst", 9));
        assert_eq!(load_scenario(&args(Some("busy"), None)).unwrap().name, "busy");

        let dir = std::env::temp_dir().join(format!("call-router-demo-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mine.toml");
        std::fs::write(&file, "[[callers]]\nlocation = 'east'\ncount = 2\nburst = true\n").unwrap();
        let path = file.display().to_string();
        assert_eq!(load_scenario(&args(Some(&path), Some(4))).unwrap().plan().len(), 4);
        std::fs::write(&file, "[[callers]]\nlocation = 'nowhere'\n").unwrap();
        let e = load_scenario(&args(Some(&path), None)).unwrap_err().to_string();
        assert!(e.contains("mine.toml: callers[0].location"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        let e = load_scenario(&args(Some("nope"), None)).unwrap_err().to_string();
        assert!(e.contains("mix, happy-path"), "{e}");
        let e = load_scenario(&args(Some("busy"), Some(3))).unwrap_err().to_string();
        assert!(e.contains("no burst group"), "{e}");
    }
}
