//! The `calls` rows (one per caller, the journey's projection), the
//! outbound legs' status callbacks, and the raw events kept for audit.

use anyhow::Context as _;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Audit, Store, batch};
use crate::domain::Outcome;

/// `SELECT … FROM calls` followed by the given clause, as a literal (every
/// statement is a literal; every value is bound).
macro_rules! select_calls {
    ($tail:literal) => {
        concat!(
            "SELECT call_sid, from_number, to_number, location, task_sid, reservation_sid, outbound_call_sid, ",
            "answered_by, recording_url, outcome, created_at_ms, updated_at_ms FROM calls ",
            $tail
        )
    };
}

/// One inbound call as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRecord {
    pub call_sid: String,
    pub from_number: String,
    pub to_number: String,
    pub location: Option<String>,
    pub task_sid: Option<String>,
    pub reservation_sid: Option<String>,
    pub outbound_call_sid: Option<String>,
    pub answered_by: Option<String>,
    pub recording_url: Option<String>,
    pub outcome: Outcome,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One status callback of an outbound leg.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusRecord {
    pub call_sid: String,
    pub inbound_call_sid: Option<String>,
    pub status: String,
    pub sequence_number: Option<i64>,
    pub call_duration: Option<i64>,
    pub answered_by: Option<String>,
    pub sip_response_code: Option<i64>,
}

impl Store {
    /// Keeps a recording's URL on the caller's `calls` row (batched).
    pub async fn set_recording(&self, call_sid: &str, url: &str) -> anyhow::Result<()> {
        let (call, url) = (call_sid.to_owned(), url.to_owned());
        self.batched(|reply| batch::Op::Recording { call, url, reply }).await
    }

    /// Keeps a webhook that concerns no journey, for audit (batched).
    pub async fn record_event(
        &self,
        source: &'static str,
        event_type: &str,
        resource_sid: Option<&str>,
        payload: &str,
    ) -> anyhow::Result<()> {
        let audit = Audit {
            source,
            event_type: event_type.to_owned(),
            resource_sid: resource_sid.map(str::to_owned),
            payload: payload.to_owned(),
        };
        self.batched(|reply| batch::Op::Audit(audit, reply)).await
    }

    pub async fn statuses(&self, call_sid: &str) -> anyhow::Result<Vec<StatusRecord>> {
        let rows = sqlx::query(
            "SELECT call_sid, inbound_call_sid, status, sequence_number, call_duration, answered_by, sip_response_code
             FROM call_statuses WHERE call_sid = $1 ORDER BY id",
        )
        .bind(call_sid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StatusRecord {
                    call_sid: r.try_get("call_sid")?,
                    inbound_call_sid: r.try_get("inbound_call_sid")?,
                    status: r.try_get("status")?,
                    sequence_number: r.try_get("sequence_number")?,
                    call_duration: r.try_get("call_duration")?,
                    answered_by: r.try_get("answered_by")?,
                    sip_response_code: r.try_get("sip_response_code")?,
                })
            })
            .collect()
    }

    pub async fn call(&self, call_sid: &str) -> anyhow::Result<Option<CallRecord>> {
        let row = sqlx::query(select_calls!("WHERE call_sid = $1")).bind(call_sid).fetch_optional(&self.pool).await?;
        row.map(|r| call_record(&r)).transpose()
    }

    pub async fn calls(&self) -> anyhow::Result<Vec<CallRecord>> {
        let rows = sqlx::query(select_calls!("ORDER BY created_at_ms, call_sid")).fetch_all(&self.pool).await?;
        rows.iter().map(call_record).collect()
    }

    pub async fn event_count(&self, event_type: &str) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

pub(super) fn call_record(r: &AnyRow) -> anyhow::Result<CallRecord> {
    let outcome: String = r.try_get("outcome")?;
    Ok(CallRecord {
        call_sid: r.try_get("call_sid")?,
        from_number: r.try_get("from_number")?,
        to_number: r.try_get("to_number")?,
        location: r.try_get("location")?,
        task_sid: r.try_get("task_sid")?,
        reservation_sid: r.try_get("reservation_sid")?,
        outbound_call_sid: r.try_get("outbound_call_sid")?,
        answered_by: r.try_get("answered_by")?,
        recording_url: r.try_get("recording_url")?,
        outcome: Outcome::parse(&outcome).with_context(|| format!("unknown outcome {outcome:?} in calls"))?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}
