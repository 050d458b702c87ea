//! The outbox: Twilio requests we owe, stored before the webhook that caused
//! them is answered, then carried out by one background worker.
//!
//! Writing the intent first means a crash between answering Twilio and
//! calling Twilio loses nothing; the dedupe key means a repeated or late event
//! cannot make us act twice (one dial per reservation, one completion per
//! task). Creating a call is the one action that is not idempotent: after an
//! interruption it is marked `unknown`, never re-sent blindly.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use twilio::E164;

/// What we owe Twilio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Place the outbound call to the location for a reservation.
    Dial(Dial),
    /// Send an enqueued caller to new TwiML (voicemail, an apology).
    RedirectCaller { call_sid: String, url: String },
    /// Cancel a task that can no longer be served.
    CancelTask { task_sid: String, reason: String },
    /// Complete a task after wrap-up.
    CompleteTask { task_sid: String, reason: String },
    /// Stop an outbound call that is still ringing or in progress.
    HangUpCall { call_sid: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dial {
    pub reservation_sid: String,
    pub task_sid: String,
    pub inbound_call_sid: Option<String>,
    pub location: String,
    pub to: E164,
    pub from: E164,
    pub call_token: Option<String>,
}

impl Action {
    /// The key that makes this action happen at most once.
    pub fn dedupe_key(&self) -> String {
        match self {
            Action::Dial(d) => format!("dial:{}", d.reservation_sid),
            Action::RedirectCaller { call_sid, .. } => format!("redirect:{call_sid}"),
            Action::CancelTask { task_sid, .. } => format!("cancel-task:{task_sid}"),
            Action::CompleteTask { task_sid, .. } => format!("complete-task:{task_sid}"),
            Action::HangUpCall { call_sid } => format!("hang-up:{call_sid}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Dial(_) => "dial",
            Action::RedirectCaller { .. } => "redirect_caller",
            Action::CancelTask { .. } => "cancel_task",
            Action::CompleteTask { .. } => "complete_task",
            Action::HangUpCall { .. } => "hang_up_call",
        }
    }

    /// The SIDs this action is about, for log spans: (call, task, reservation). The call is
    /// the caller's inbound leg where known, else the leg the action acts on.
    pub fn sids(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        match self {
            Action::Dial(d) => {
                (d.inbound_call_sid.as_deref(), Some(d.task_sid.as_str()), Some(d.reservation_sid.as_str()))
            }
            Action::RedirectCaller { call_sid, .. } | Action::HangUpCall { call_sid } => {
                (Some(call_sid.as_str()), None, None)
            }
            Action::CancelTask { task_sid, .. } | Action::CompleteTask { task_sid, .. } => {
                (None, Some(task_sid.as_str()), None)
            }
        }
    }

    /// Whether sending it twice has the same effect as sending it once.
    pub fn is_idempotent(&self) -> bool {
        !matches!(self, Action::Dial(_))
    }
}

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

/// A claimed action.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub action: Action,
    pub attempts: i64,
}
