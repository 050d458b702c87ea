//! The outbox in the database: commands queued by journeys, claimed by a
//! dispatcher under a lease, finished with their result, and taken over
//! when the instance that claimed them is gone.
//!
//! At most once for call creation: a dial that was being sent when its
//! instance died is never sent again; it is marked `unknown` and its journey
//! hears `DialUnknown`, so it looks the call up. An update is idempotent and
//! simply goes back to `pending`.

use anyhow::Context as _;

use super::journeys::{self, Delivery, Finish, Route};
use super::sql::{Conn, args};
use crate::journey::{Command, Event, Policy};
use crate::outbox::{Lane, OutboxRow, OutboxState};

/// Who claims, and for how long.
#[derive(Debug, Clone)]
pub struct Lease {
    /// This instance (see [`super::Store::owned_by`]).
    pub owner: std::sync::Arc<str>,
    pub ms: i64,
}

/// Records how an outbox row ended, or when to send it again.
pub(super) async fn finish_in<C: Conn>(c: &mut C, f: &Finish, now: i64) -> anyhow::Result<()> {
    c.execute(
        "UPDATE outbox SET state = $2, result = $3, last_error = $4, not_before_ms = $5, updated_at_ms = $6,
             lease_owner = NULL, lease_until_ms = NULL
         WHERE id = $1",
        args![f.id, f.state.as_str(), &f.result, &f.error, f.not_before_ms, now],
    )
    .await?;
    Ok(())
}

/// Drops a dial that has not been claimed. True when it was still pending.
pub(super) async fn withdraw<C: Conn>(c: &mut C, key: &str, now: i64) -> anyhow::Result<bool> {
    let done = c
        .execute(
            "UPDATE outbox SET state = $2, last_error = $3, updated_at_ms = $4 WHERE dedupe_key = $1 AND state = $5",
            args![
                key,
                OutboxState::Done.as_str(),
                "withdrawn: the reservation ended or the caller left before the dial went out",
                now,
                OutboxState::Pending.as_str()
            ],
        )
        .await?;
    Ok(done > 0)
}

/// Queues a command; false when one with its key exists already.
pub(super) async fn insert_command<C: Conn>(
    c: &mut C,
    command: &Command,
    journey_id: Option<i64>,
    now: i64,
) -> anyhow::Result<bool> {
    insert_command_at(c, command, journey_id, 0, now).await
}

/// Queues a command not to be sent before `not_before_ms`; false when one
/// with its key exists already.
pub(super) async fn insert_command_at<C: Conn>(
    c: &mut C,
    command: &Command,
    journey_id: Option<i64>,
    not_before_ms: i64,
    now: i64,
) -> anyhow::Result<bool> {
    let payload = serde_json::to_string(command)?;
    let key = command.key();
    let done = c
        .execute(
            "INSERT INTO outbox (dedupe_key, kind, payload, state, attempts, not_before_ms, journey_id, created_at_ms,
                 updated_at_ms)
             VALUES ($1, $2, $3, $4, 0, $7, $5, $6, $6) ON CONFLICT (dedupe_key) DO NOTHING",
            args![&key, command.kind(), &payload, OutboxState::Pending.as_str(), journey_id, now, not_before_ms],
        )
        .await?;
    Ok(done > 0)
}

/// The dispatcher's claim: up to `limit` pending rows of `lane` whose time
/// has come, oldest first, marked `sending` and leased to `lease.owner`.
pub(super) async fn claim<C: Conn>(
    c: &mut C,
    lane: Lane,
    limit: i64,
    lease: &Lease,
    now: i64,
) -> anyhow::Result<Vec<OutboxRow>> {
    // `state = $1` again outside the subquery: a row another claimer took
    // meanwhile is skipped, not taken twice. On PostgreSQL, SKIP LOCKED lets
    // two instances claim side by side without waiting for each other.
    let sql = match (lane, c.postgres()) {
        (Lane::Dial, false) => {
            "UPDATE outbox SET state = $2, attempts = attempts + 1, updated_at_ms = $3, lease_owner = $5,
                 lease_until_ms = $6
             WHERE state = $1 AND id IN (SELECT id FROM outbox WHERE state = $1 AND kind = 'dial'
                 AND not_before_ms <= $3 ORDER BY id LIMIT $4)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
        (Lane::Other, false) => {
            "UPDATE outbox SET state = $2, attempts = attempts + 1, updated_at_ms = $3, lease_owner = $5,
                 lease_until_ms = $6
             WHERE state = $1 AND id IN (SELECT id FROM outbox WHERE state = $1 AND kind <> 'dial'
                 AND not_before_ms <= $3 ORDER BY id LIMIT $4)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
        (Lane::Dial, true) => {
            "UPDATE outbox SET state = $2, attempts = attempts + 1, updated_at_ms = $3, lease_owner = $5,
                 lease_until_ms = $6
             WHERE state = $1 AND id IN (SELECT id FROM outbox WHERE state = $1 AND kind = 'dial'
                 AND not_before_ms <= $3 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
        (Lane::Other, true) => {
            "UPDATE outbox SET state = $2, attempts = attempts + 1, updated_at_ms = $3, lease_owner = $5,
                 lease_until_ms = $6
             WHERE state = $1 AND id IN (SELECT id FROM outbox WHERE state = $1 AND kind <> 'dial'
                 AND not_before_ms <= $3 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
    };
    let until = now + lease.ms;
    let rows = c
        .fetch(
            sql,
            args![OutboxState::Pending.as_str(), OutboxState::Sending.as_str(), now, limit, &*lease.owner, until],
        )
        .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            let id = r.int(0)?;
            let payload = r.text(2)?;
            Ok(OutboxRow {
                id,
                key: r.text(1)?,
                command: serde_json::from_str(&payload).with_context(|| format!("outbox row {id} payload"))?,
                attempts: r.int(3)?,
                journey_id: r.opt_int(4)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // RETURNING's order is not defined.
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// Which rows being sent to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// Rows whose lease has expired: their instance died or hangs.
    Expired,
    /// Those, and the rows this instance's name still holds: at start-up,
    /// they are what a previous run of it left.
    ExpiredAndMine,
}

/// How many rows a take-over handles in one transaction.
const TAKE_OVER_BATCH: i64 = 64;

/// Takes over rows being sent by an instance that is gone (see the module's
/// docs). Returns (requeued, unknown).
pub(super) async fn take_over<C: Conn>(
    c: &mut C,
    which: Orphans,
    lease: &Lease,
    policy: Policy,
    now: i64,
) -> anyhow::Result<(u64, u64)> {
    let mine = match which {
        Orphans::Expired => "",
        Orphans::ExpiredAndMine => &*lease.owner,
    };
    let sql = if c.postgres() {
        "SELECT id, payload, journey_id FROM outbox
         WHERE state = $1 AND (lease_until_ms IS NULL OR lease_until_ms < $2 OR lease_owner = $3)
         ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED"
    } else {
        "SELECT id, payload, journey_id FROM outbox
         WHERE state = $1 AND (lease_until_ms IS NULL OR lease_until_ms < $2 OR lease_owner = $3)
         ORDER BY id LIMIT $4"
    };
    let rows = c.fetch(sql, args![OutboxState::Sending.as_str(), now, mine, TAKE_OVER_BATCH]).await?;
    let (mut requeued, mut unknown) = (0, 0);
    for r in rows {
        let id = r.int(0)?;
        let journey = r.opt_int(2)?;
        let command: Command = serde_json::from_str(&r.text(1)?).with_context(|| format!("outbox row {id} payload"))?;
        let error = Some("interrupted: the instance sending it stopped".to_owned());
        let finish = |state| Finish { id, state, result: None, error: error.clone(), not_before_ms: 0 };
        match (&command, journey) {
            (Command::Dial { reservation, attempt, .. }, Some(journey)) => {
                unknown += 1;
                let event = Event::DialUnknown { reservation: reservation.clone(), attempt: *attempt };
                let mut d = Delivery::new(Route::Id(journey), vec![event], policy);
                d.finish = Some(finish(OutboxState::Unknown));
                journeys::deliver_in(c, &d, now).await?;
            }
            (Command::Dial { .. }, None) => {
                unknown += 1;
                finish_in(c, &finish(OutboxState::Unknown), now).await?;
            }
            _ => {
                requeued += 1;
                finish_in(c, &finish(OutboxState::Pending), now).await?;
            }
        }
    }
    Ok((requeued, unknown))
}

/// Takes, renews or keeps a named lease: true when `owner` holds it until
/// `now + ms` (it was free, expired, or already `owner`'s).
pub(super) async fn hold<C: Conn>(c: &mut C, name: &str, owner: &str, ms: i64, now: i64) -> anyhow::Result<bool> {
    let rows = c
        .fetch(
            "INSERT INTO leases (name, owner, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms
             WHERE leases.owner = excluded.owner OR leases.until_ms < $4
             RETURNING owner",
            args![name, owner, now + ms, now],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Gives a named lease up, if `owner` holds it.
pub(super) async fn release<C: Conn>(c: &mut C, name: &str, owner: &str) -> anyhow::Result<()> {
    c.execute("DELETE FROM leases WHERE name = $1 AND owner = $2", args![name, owner]).await?;
    Ok(())
}
