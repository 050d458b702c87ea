//! Reads for the history API (`src/api/`): calls page by page, one call's
//! timeline, and what the location board counts. Nothing here writes.
//!
//! Every query is one static statement with `$N` placeholders; a filter
//! that is not set is bound as a typed NULL and skipped by `$N IS NULL OR …`.
//! Each runs on an index (migration 0005): calls newest first on
//! `(created_at_ms, call_sid)`, a call's webhooks on `events.resource_sid`,
//! its leg statuses on `call_statuses.call_sid`, its commands on
//! `outbox.journey_id`, today's counts on `(location, created_at_ms)`.

use std::str::FromStr;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::calls::call_record;
use super::{CallRecord, Store};
use crate::domain::Outcome;
use crate::journey::{CallerState, Journey};
use crate::outbox::OutboxState;

/// Which calls a page lists, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Started at or after (ms).
    pub from_ms: Option<i64>,
    /// Started before (ms).
    pub to_ms: Option<i64>,
    pub location: Option<String>,
    pub outcome: Option<Outcome>,
    /// The caller's number, exactly.
    pub caller: Option<String>,
    /// Only calls after this one in the order (older, or as old with a
    /// smaller SID): the previous page's last `(created_at_ms, call_sid)`.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// One call as the history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryCall {
    pub call: CallRecord,
    /// When the caller's leg ended (its final status), or, without one,
    /// when its journey closed.
    pub ended_at_ms: Option<i64>,
    /// Seconds in the queue, as Twilio reported them when the caller left it.
    pub wait_secs: Option<i64>,
}

/// The journey behind a call.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyRow {
    pub id: i64,
    pub state_json: String,
    pub closed: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A webhook kept in `events`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub id: i64,
    pub source: String,
    pub event_type: String,
    pub resource_sid: Option<String>,
    pub payload: String,
    pub received_at_ms: i64,
}

/// One status callback with when it came.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub id: i64,
    pub call_sid: String,
    pub status: String,
    pub sequence_number: Option<i64>,
    pub call_duration: Option<i64>,
    pub answered_by: Option<String>,
    pub sip_response_code: Option<i64>,
    pub received_at_ms: i64,
}

/// One command of a journey's outbox, with how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRow {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub payload: String,
    pub state: OutboxState,
    pub attempts: i64,
    pub result: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Callers of one location now, counted from the open journeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCallers {
    pub location: String,
    pub waiting: i64,
    pub bridged: i64,
    /// When the longest-waiting caller was enqueued (ms; the journey's start
    /// for one stored before journeys kept that).
    pub oldest_waiting_ms: Option<i64>,
}

/// The calls columns of `select_calls!`, with the end and the queue's
/// report, for one call or a page.
macro_rules! select_history {
    ($tail:literal) => {
        concat!(
            "SELECT c.call_sid, c.from_number, c.to_number, c.location, c.task_sid, c.reservation_sid, ",
            "c.outbound_call_sid, c.answered_by, c.recording_url, c.outcome, c.created_at_ms, c.updated_at_ms, ",
            "(SELECT MIN(s.received_at_ms) FROM call_statuses s WHERE s.call_sid = c.call_sid ",
            "AND s.status IN ('completed', 'busy', 'failed', 'no-answer', 'canceled')) AS ended_at_ms, ",
            "(SELECT CASE WHEN j.closed = 1 THEN j.updated_at_ms END FROM journey_keys k ",
            "JOIN journeys j ON j.id = k.journey_id WHERE k.sid = c.call_sid) AS closed_at_ms, ",
            "(SELECT e.payload FROM events e WHERE e.resource_sid = c.call_sid AND e.event_type LIKE 'queue.%' ",
            "ORDER BY e.id DESC LIMIT 1) AS queue_payload ",
            "FROM calls c ",
            $tail
        )
    };
}

impl Store {
    /// A page of calls, newest first (by start, then SID).
    pub async fn history_calls(&self, f: &CallFilter) -> anyhow::Result<Vec<HistoryCall>> {
        let (after_ms, after_sid) = match &f.after {
            Some((ms, sid)) => (Some(*ms), Some(sid.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query(select_history!(
            "WHERE ($1 IS NULL OR c.created_at_ms >= $1) AND ($2 IS NULL OR c.created_at_ms < $2)
               AND ($3 IS NULL OR c.location = $3) AND ($4 IS NULL OR c.outcome = $4)
               AND ($5 IS NULL OR c.from_number = $5)
               AND ($6 IS NULL OR c.created_at_ms < $6 OR (c.created_at_ms = $6 AND c.call_sid < $7))
             ORDER BY c.created_at_ms DESC, c.call_sid DESC LIMIT $8"
        ))
        .bind(f.from_ms)
        .bind(f.to_ms)
        .bind(f.location.as_deref())
        .bind(f.outcome.map(Outcome::as_str))
        .bind(f.caller.as_deref())
        .bind(after_ms)
        .bind(after_sid)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(history_call).collect()
    }

    /// One call, by its SID.
    pub async fn history_call(&self, call_sid: &str) -> anyhow::Result<Option<HistoryCall>> {
        let row =
            sqlx::query(select_history!("WHERE c.call_sid = $1")).bind(call_sid).fetch_optional(&self.pool).await?;
        row.as_ref().map(history_call).transpose()
    }

    /// The journey a SID routes to.
    pub async fn journey_of(&self, sid: &str) -> anyhow::Result<Option<JourneyRow>> {
        let row = sqlx::query(
            "SELECT j.id, j.state_json, j.closed, j.created_at_ms, j.updated_at_ms
             FROM journey_keys k JOIN journeys j ON j.id = k.journey_id WHERE k.sid = $1",
        )
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(JourneyRow {
                id: r.try_get("id")?,
                state_json: r.try_get("state_json")?,
                closed: r.try_get::<i64, _>("closed")? != 0,
                created_at_ms: r.try_get("created_at_ms")?,
                updated_at_ms: r.try_get("updated_at_ms")?,
            })
        })
        .transpose()
    }

    /// The webhooks kept that name any of `sids`, oldest first.
    pub async fn events_for(&self, sids: &[String]) -> anyhow::Result<Vec<EventRow>> {
        let mut out = Vec::new();
        for sid in sids {
            let rows = sqlx::query(
                "SELECT id, source, event_type, resource_sid, payload, received_at_ms FROM events
                 WHERE resource_sid = $1",
            )
            .bind(sid)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(EventRow {
                    id: r.try_get("id")?,
                    source: r.try_get("source")?,
                    event_type: r.try_get("event_type")?,
                    resource_sid: r.try_get("resource_sid")?,
                    payload: r.try_get("payload")?,
                    received_at_ms: r.try_get("received_at_ms")?,
                });
            }
        }
        out.sort_by_key(|e| e.id);
        out.dedup_by_key(|e| e.id);
        Ok(out)
    }

    /// The status callbacks of any of these legs, oldest first.
    pub async fn statuses_for(&self, sids: &[String]) -> anyhow::Result<Vec<StatusRow>> {
        let mut out = Vec::new();
        for sid in sids {
            let rows = sqlx::query(
                "SELECT id, call_sid, status, sequence_number, call_duration, answered_by, sip_response_code,
                     received_at_ms
                 FROM call_statuses WHERE call_sid = $1",
            )
            .bind(sid)
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(StatusRow {
                    id: r.try_get("id")?,
                    call_sid: r.try_get("call_sid")?,
                    status: r.try_get("status")?,
                    sequence_number: r.try_get("sequence_number")?,
                    call_duration: r.try_get("call_duration")?,
                    answered_by: r.try_get("answered_by")?,
                    sip_response_code: r.try_get("sip_response_code")?,
                    received_at_ms: r.try_get("received_at_ms")?,
                });
            }
        }
        out.sort_by_key(|s| s.id);
        out.dedup_by_key(|s| s.id);
        Ok(out)
    }

    /// A journey's commands, in the order they were queued.
    pub async fn actions_of(&self, journey_id: i64) -> anyhow::Result<Vec<ActionRow>> {
        let rows = sqlx::query(
            "SELECT id, dedupe_key, kind, payload, state, attempts, result, last_error, created_at_ms, updated_at_ms
             FROM outbox WHERE journey_id = $1 ORDER BY id",
        )
        .bind(journey_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(ActionRow {
                    id: r.try_get("id")?,
                    key: r.try_get("dedupe_key")?,
                    kind: r.try_get("kind")?,
                    payload: r.try_get("payload")?,
                    state: OutboxState::from_str(&state)?,
                    attempts: r.try_get("attempts")?,
                    result: r.try_get("result")?,
                    last_error: r.try_get("last_error")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    updated_at_ms: r.try_get("updated_at_ms")?,
                })
            })
            .collect()
    }

    /// Callers waiting and bridged now, by location, among at most `limit`
    /// open journeys, with when the longest-waiting one's journey began.
    /// Counted by the database from the journeys' `location` and
    /// `caller_state` columns (written beside `state_json`), so no journey is loaded (the metrics'
    /// [`Store::live_callers`] reads the same).
    pub async fn live_board(&self, limit: i64) -> anyhow::Result<Vec<LiveCallers>> {
        let rows = sqlx::query(
            "SELECT location,
                    SUM(CASE WHEN caller_state = $1 THEN 1 ELSE 0 END) AS waiting,
                    SUM(CASE WHEN caller_state = $2 THEN 1 ELSE 0 END) AS bridged,
                    MIN(CASE WHEN caller_state = $1 THEN COALESCE(waiting_since_ms, created_at_ms) END) AS oldest_waiting
             FROM (SELECT location, caller_state, created_at_ms, waiting_since_ms FROM journeys WHERE closed = 0 LIMIT $3)
                 AS open
             WHERE location IS NOT NULL AND caller_state IN ($1, $2)
             GROUP BY location",
        )
        .bind(CallerState::Queued.as_str())
        .bind(CallerState::Bridged.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveCallers {
                    location: r.try_get("location")?,
                    waiting: r.try_get("waiting")?,
                    bridged: r.try_get("bridged")?,
                    oldest_waiting_ms: r.try_get("oldest_waiting")?,
                })
            })
            .collect()
    }

    /// Finished calls of `location` that started at or after `since_ms`, by
    /// outcome (calls still under way are not counted).
    pub async fn outcomes_since(&self, location: &str, since_ms: i64) -> anyhow::Result<Vec<(Outcome, i64)>> {
        let rows = sqlx::query(
            "SELECT outcome, COUNT(*) AS n FROM calls WHERE location = $1 AND created_at_ms >= $2 AND outcome <> $3
             GROUP BY outcome ORDER BY outcome",
        )
        .bind(location)
        .bind(since_ms)
        .bind(Outcome::Pending.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let outcome: String = r.try_get("outcome")?;
                let outcome =
                    Outcome::parse(&outcome).ok_or_else(|| anyhow::anyhow!("unknown outcome {outcome:?} in calls"))?;
                Ok((outcome, r.try_get("n")?))
            })
            .collect()
    }
}

/// The SIDs a journey's webhooks and statuses are kept under: its own keys,
/// or the call's alone when the journey does not parse.
pub fn journey_sids(call_sid: &str, journey: Option<&JourneyRow>) -> Vec<String> {
    let mut sids: Vec<String> =
        journey.and_then(|j| serde_json::from_str::<Journey>(&j.state_json).ok()).map(|j| j.keys()).unwrap_or_default();
    if !sids.iter().any(|s| s == call_sid) {
        sids.insert(0, call_sid.to_owned());
    }
    sids
}

fn history_call(r: &AnyRow) -> anyhow::Result<HistoryCall> {
    let call = call_record(r)?;
    let ended: Option<i64> = r.try_get("ended_at_ms")?;
    let closed: Option<i64> = r.try_get("closed_at_ms")?;
    let payload: Option<String> = r.try_get("queue_payload")?;
    let wait_secs = payload.as_deref().and_then(queue_time);
    Ok(HistoryCall { call, ended_at_ms: ended.or(closed), wait_secs })
}

/// `QueueTime` of a kept `/enqueue-action` webhook (its parameters as a JSON object).
fn queue_time(payload: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    v.get("QueueTime")?.as_str()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_time_comes_from_the_kept_parameters() {
        assert_eq!(queue_time(r#"{"QueueTime":"42","QueueResult":"hangup"}"#), Some(42));
        assert_eq!(queue_time(r#"{"QueueResult":"hangup"}"#), None);
        assert_eq!(queue_time(r#"{"QueueTime":"soon"}"#), None);
        assert_eq!(queue_time("not json"), None);
    }

    #[test]
    fn a_journey_without_keys_still_names_its_call() {
        assert_eq!(journey_sids("CA1", None), ["CA1"]);
    }
}

#[cfg(test)]
mod store_tests {
    use super::super::testing::{POLICY, after_hours, arrived, created, sid, store};
    use super::super::{Delivery, StatusRecord, now_ms};
    use super::*;
    use crate::journey::Event;
    use crate::test_backends::Backend;

    on_both_backends!(
        history_pages_newest_first_and_filters,
        history_reads_a_calls_webhooks_statuses_and_actions,
        the_board_counts_callers_and_todays_outcomes,
    );

    async fn history_pages_newest_first_and_filters(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let t0 = now_ms();
        for i in 1..=5 {
            s.deliver(arrived(i)).await.unwrap();
        }
        s.deliver(after_hours(6, "+14155550166")).await.unwrap();
        let all = s.history_calls(&CallFilter { limit: 50, ..CallFilter::default() }).await.unwrap();
        assert_eq!(all.len(), 6);
        let order: Vec<(i64, &str)> = all.iter().map(|h| (h.call.created_at_ms, h.call.call_sid.as_str())).collect();
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(order, sorted, "newest first, then by SID");
        // Two at a time through the keyset: nothing repeated or missed.
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = s.history_calls(&CallFilter { limit: 2, after: after.clone(), ..CallFilter::default() }).await;
            let page = page.unwrap();
            if page.is_empty() {
                break;
            }
            let last = &page.last().unwrap().call;
            after = Some((last.created_at_ms, last.call_sid.clone()));
            seen.extend(page.into_iter().map(|h| h.call.call_sid));
        }
        assert_eq!(seen, all.iter().map(|h| h.call.call_sid.clone()).collect::<Vec<_>>());
        let count = |f: CallFilter| {
            let s = s.clone();
            async move { s.history_calls(&CallFilter { limit: 50, ..f }).await.unwrap().len() }
        };
        assert_eq!(count(CallFilter { location: Some("north".into()), ..Default::default() }).await, 6);
        assert_eq!(count(CallFilter { location: Some("south".into()), ..Default::default() }).await, 0);
        assert_eq!(count(CallFilter { outcome: Some(Outcome::AfterHours), ..Default::default() }).await, 1);
        assert_eq!(count(CallFilter { outcome: Some(Outcome::Pending), ..Default::default() }).await, 5);
        assert_eq!(count(CallFilter { caller: Some("+14155550166".into()), ..Default::default() }).await, 1);
        assert_eq!(count(CallFilter { from_ms: Some(t0), ..Default::default() }).await, 6);
        assert_eq!(count(CallFilter { to_ms: Some(t0), ..Default::default() }).await, 0);
        assert_eq!(count(CallFilter { from_ms: Some(now_ms() + 1), ..Default::default() }).await, 0);
    }

    async fn history_reads_a_calls_webhooks_statuses_and_actions(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let caller = sid::<twilio::sid::CallSid>("CA", 7).to_string();
        let reservation = sid::<twilio::sid::ReservationSid>("WR", 7).to_string();
        s.deliver(arrived(7)).await.unwrap();
        let mut d = created(7, 7);
        d.audit.as_mut().unwrap().resource_sid = Some(reservation.clone());
        s.deliver(d).await.unwrap();
        let mut left = Delivery::to_keys(
            [caller.clone()],
            vec![Event::QueueExit { result: crate::journey::QueueResult::Hangup, queue: None }],
            POLICY,
        )
        .with_audit("voice", "queue.hangup", Some(&caller), r#"{"QueueTime":"12"}"#.into());
        left.status = None;
        s.deliver(left).await.unwrap();
        let mut ended = Delivery::to_keys(
            [caller.clone()],
            vec![Event::CallerStatus { status: crate::journey::CallStatus::Completed, sequence: Some(3) }],
            POLICY,
        );
        ended.status = Some(StatusRecord {
            call_sid: caller.clone(),
            inbound_call_sid: None,
            status: "completed".into(),
            sequence_number: Some(3),
            call_duration: Some(30),
            answered_by: None,
            sip_response_code: None,
        });
        s.deliver(ended).await.unwrap();

        let call = s.history_call(&caller).await.unwrap().unwrap();
        assert_eq!((call.wait_secs, call.call.outcome), (Some(12), Outcome::CallerHungUp));
        assert!(call.ended_at_ms.is_some_and(|t| t >= call.call.created_at_ms), "{call:?}");
        assert!(s.history_call("CA-none").await.unwrap().is_none());

        let journey = s.journey_of(&caller).await.unwrap().unwrap();
        let sids = journey_sids(&caller, Some(&journey));
        assert!(sids.contains(&reservation) && sids.contains(&caller), "{sids:?}");
        let events = s.events_for(&sids).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(kinds, ["reservation.created", "queue.hangup"]);
        let statuses = s.statuses_for(&sids).await.unwrap();
        assert_eq!(statuses.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["completed"]);
        assert_eq!(statuses[0].call_duration, Some(30));
        let actions = s.actions_of(journey.id).await.unwrap();
        assert!(actions.iter().any(|a| a.kind == "dial" && a.key == format!("dial:{reservation}")), "{actions:?}");
        assert!(s.actions_of(journey.id + 1000).await.unwrap().is_empty());
    }

    async fn the_board_counts_callers_and_todays_outcomes(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let t0 = now_ms();
        assert!(s.live_board(100).await.unwrap().is_empty());
        s.deliver(arrived(1)).await.unwrap();
        s.deliver(arrived(2)).await.unwrap();
        s.deliver(after_hours(3, "+14155550103")).await.unwrap();
        let board = s.live_board(100).await.unwrap();
        assert_eq!(board.len(), 1, "{board:?}");
        let north = &board[0];
        assert_eq!((north.location.as_str(), north.waiting, north.bridged), ("north", 2, 0));
        assert!(north.oldest_waiting_ms.is_some_and(|t| t >= t0 && t <= now_ms()), "{north:?}");
        assert_eq!(s.live_callers(100).await.unwrap(), [("north".to_owned(), 2, 0)], "the metrics read the same");
        assert_eq!(s.outcomes_since("north", t0).await.unwrap(), [(Outcome::AfterHours, 1)], "pending not counted");
        assert!(s.outcomes_since("north", now_ms() + 1).await.unwrap().is_empty());
        assert!(s.outcomes_since("south", t0).await.unwrap().is_empty());
    }
}
