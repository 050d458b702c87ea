//! call-router: routes callers on one Twilio number to the right location's phone line.
//!
//! # Layout
//! - [`config`]: settings from a TOML file and the environment, checked at start.
//! - [`domain`]: checked types: locations, task attributes, call outcomes.
//! - [`hours`]: business hours in a location's time zone (pure).
//! - [`clock`]: the business clock hours are read at: the wall clock, or an offset from it in tests and demos.
//! - [`ivr`]: which TwiML the caller gets (pure).
//! - [`store`]: SQLite or PostgreSQL (sqlx Any) persistence: locations, journeys and their `calls` rows, events, outbox.
//! - [`journey`]: one inbound call's lifecycle as a pure state machine; it alone decides.
//! - [`timers`]: ticks for journeys whose wake-up time has come.
//! - [`outbox`]: the Twilio requests we owe, written before a webhook answers.
//! - [`dispatch`]: the worker that carries out the outbox against Twilio.
//! - [`twilio_api`]: the REST client.
//! - [`http`]: the webhook server (the only module that knows axum).
//! - [`provision`]: creates and repairs the Twilio resources the locations need.
//! - [`reconcile`]: what Twilio says happened, fed to the journeys at start-up and periodically.
//! - [`app`]: wiring of the above into a running server.
//! - [`listen`]: the listening socket: socket activation or `SO_REUSEPORT`.
//! - [`drain`]: stopping without dropping work: the stop signal, requests in flight.
//! - [`check`]: `call-router check`, whether a deployment can serve (config, database, Twilio, provisioning).
//! - [`demo`]: `call-router demo`, a simulated business end to end against the sandbox.
//! - [`bench`]: `call-router bench`, the speed figures beside a bare server's.
//! - [`telemetry`]: logging set-up.

// The test databases (SQLite, PostgreSQL) and `on_both_backends!`, shared
// with the integration tests.
#[cfg(test)]
#[macro_use]
#[path = "../tests/common/backends.rs"]
mod test_backends;

pub mod announce;
pub mod api;
pub mod app;
pub mod balance;
pub mod bench;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod drain;
pub mod hours;
pub mod http;
pub mod ical_import;
pub mod ivr;
pub mod journey;
pub mod listen;
pub mod notify;
pub mod outbox;
pub mod prompts;
pub mod provision;
pub mod reconcile;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod timers;
pub mod twilio_api;
