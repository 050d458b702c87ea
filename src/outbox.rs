//! The outbox: Twilio requests we owe, stored in the same transaction as the
//! journey that owes them, before the webhook that caused them is answered,
//! then carried out by the dispatcher.
//!
//! Writing the intent first means a crash between answering Twilio and
//! calling Twilio loses nothing; the dedupe key ([`Command::key`]) means a
//! repeated or late event cannot make us act twice (one dial per attempt of a
//! reservation, one completion per task and round). Creating a call is the one
//! request that is not idempotent: after an interruption it is marked
//! `unknown` and its journey hears `DialUnknown`; it is never re-sent blindly.

use std::str::FromStr;

use crate::journey::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Sending,
    Done,
    Failed,
    /// Interrupted while creating a call: whether Twilio acted is unknown.
    Unknown,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sending => "sending",
            OutboxState::Done => "done",
            OutboxState::Failed => "failed",
            OutboxState::Unknown => "unknown",
        }
    }
}

impl FromStr for OutboxState {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "pending" => OutboxState::Pending,
            "sending" => OutboxState::Sending,
            "done" => OutboxState::Done,
            "failed" => OutboxState::Failed,
            "unknown" => OutboxState::Unknown,
            other => anyhow::bail!("unknown outbox state {other:?}"),
        })
    }
}

/// The dispatcher's lanes: dials have their own capacity, so that slow
/// housekeeping (hang-ups, task updates, look-ups) never holds a dial back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Dial,
    Other,
}

impl Lane {
    pub fn of(command: &Command) -> Lane {
        match command {
            Command::Dial { .. } => Lane::Dial,
            _ => Lane::Other,
        }
    }
}

/// A claimed command.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub command: Command,
    /// Sends so far, this one included.
    pub attempts: i64,
    /// The journey that owes it (none for rows written before journeys).
    pub journey_id: Option<i64>,
}
