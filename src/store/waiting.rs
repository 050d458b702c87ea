//! Reads for what a waiting caller is told (`crate::announce`): their place
//! in the location's queue and the handle times of its recent connected
//! calls. Nothing here writes.
//!
//! The place is counted by the database from the journeys' `location`,
//! `caller_state` and `waiting_since_ms` columns (written beside
//! `state_json`: migration 0011) on the partial index `journeys_waiting`
//! (migration 0007); the handle times walk
//! `calls_location_started` newest first.

use sqlx::Row;

use super::Store;
use crate::announce::Standing;
use crate::domain::Outcome;
use crate::journey::CallerState;

impl Store {
    /// Where the caller of `call_sid` stands in their location's queue: the
    /// open journeys of the same location still queued that began to wait
    /// before theirs (ties by journey id), and the location's callers
    /// connected now. `None` when that journey is not waiting for a location.
    /// `lines` is the location's, passed through.
    pub async fn standing(&self, call_sid: &str, lines: u32) -> anyhow::Result<Option<Standing>> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM journeys o
                 WHERE o.closed = 0 AND o.location = me.location AND o.caller_state = $2
                   AND (o.waiting_since_ms < me.waiting_since_ms
                        OR (o.waiting_since_ms = me.waiting_since_ms AND o.id < me.id))) AS ahead,
               (SELECT COUNT(*) FROM journeys b
                 WHERE b.closed = 0 AND b.location = me.location AND b.caller_state = $3) AS in_use
             FROM journey_keys k JOIN journeys me ON me.id = k.journey_id
             WHERE k.sid = $1 AND me.location IS NOT NULL AND me.waiting_since_ms IS NOT NULL
               AND me.caller_state = $2",
        )
        .bind(call_sid)
        .bind(CallerState::Queued.as_str())
        .bind(CallerState::Bridged.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let count = |col: &str| -> anyhow::Result<u32> {
            let n: i64 = r.try_get(col)?;
            Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
        };
        Ok(Some(Standing { ahead: count("ahead")?, lines, in_use: count("in_use")? }))
    }

    /// How long (seconds) the location's leg of each of the last `limit`
    /// connected calls of `location` that started at or after `since_ms`
    /// lasted, newest first: the `CallDuration` of its `completed` status
    /// callback. Calls without one (still under way) are left out.
    pub async fn handle_times(&self, location: &str, since_ms: i64, limit: i64) -> anyhow::Result<Vec<u32>> {
        let rows = sqlx::query(
            "SELECT d FROM (
               SELECT c.created_at_ms AS at,
                      (SELECT MAX(s.call_duration) FROM call_statuses s
                        WHERE s.call_sid = c.outbound_call_sid AND s.status = 'completed') AS d
               FROM calls c WHERE c.location = $1 AND c.created_at_ms >= $2 AND c.outcome = $3
             ) AS handled
             WHERE d IS NOT NULL ORDER BY at DESC LIMIT $4",
        )
        .bind(location)
        .bind(since_ms)
        .bind(Outcome::Connected.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let d: i64 = r.try_get("d")?;
                Ok(u32::try_from(d.max(0)).unwrap_or(u32::MAX))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{POLICY, arrived, connected, created, sid, store};
    use super::super::{Delivery, StatusRecord, now_ms};
    use crate::journey::Event;
    use crate::test_backends::Backend;

    on_both_backends!(a_callers_place_counts_those_waiting_before_them_and_handled_calls_give_their_length,);

    async fn a_callers_place_counts_those_waiting_before_them_and_handled_calls_give_their_length(backend: Backend) {
        use crate::announce::Standing;
        use crate::journey::CallStatus;
        let Some((s, _d)) = store(backend).await else { return };
        for c in 1..=3 {
            s.deliver(arrived(c)).await.unwrap();
        }
        let ca = |n: usize| sid::<twilio::sid::CallSid>("CA", n).to_string();
        let standing = |ahead, in_use| Some(Standing { ahead, lines: 2, in_use });
        assert_eq!(s.standing(&ca(1), 2).await.unwrap(), standing(0, 0));
        assert_eq!(s.standing(&ca(2), 2).await.unwrap(), standing(1, 0));
        assert_eq!(s.standing(&ca(3), 2).await.unwrap(), standing(2, 0));
        assert_eq!(s.standing(&ca(9), 2).await.unwrap(), None, "a call with no journey");
        assert!(s.handle_times("north", 0, 20).await.unwrap().is_empty());

        // The first caller is connected: it holds a line and is no longer ahead of anyone.
        s.deliver(created(1, 1)).await.unwrap();
        s.deliver(connected(1)).await.unwrap();
        let (res, leg): (twilio::sid::ReservationSid, twilio::sid::CallSid) = (sid("WR", 1), sid("CA", 101));
        assert_eq!(s.standing(&ca(1), 2).await.unwrap(), None, "connected, not waiting");
        assert_eq!(s.standing(&ca(2), 2).await.unwrap(), standing(0, 1));
        assert_eq!(s.standing(&ca(3), 2).await.unwrap(), standing(1, 1));
        assert!(s.handle_times("north", 0, 20).await.unwrap().is_empty(), "still under way");

        // Its location leg ends after 125 s: a handled call of that length.
        let status = Event::LegStatus {
            reservation: res.clone(),
            attempt: Some(1),
            leg: leg.clone(),
            status: CallStatus::Completed,
            sequence: Some(3),
        };
        let mut d = Delivery::to_keys([res.to_string(), leg.to_string()], vec![status], POLICY);
        d.status = Some(StatusRecord {
            call_sid: leg.to_string(),
            inbound_call_sid: Some(ca(1)),
            status: "completed".into(),
            sequence_number: Some(3),
            call_duration: Some(125),
            answered_by: None,
            sip_response_code: None,
        });
        s.deliver(d).await.unwrap();
        assert_eq!(s.handle_times("north", 0, 20).await.unwrap(), [125]);
        assert!(s.handle_times("north", now_ms() + 1, 20).await.unwrap().is_empty(), "outside the window");
        assert!(s.handle_times("south", 0, 20).await.unwrap().is_empty());
        assert!(s.handle_times("north", 0, 0).await.unwrap().is_empty());
    }
}
