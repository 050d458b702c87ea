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
pub(super) async fn withdraw<C: Conn>(c: &mut C, key: &str, why: &str, now: i64) -> anyhow::Result<bool> {
    let done = c
        .execute(
            "UPDATE outbox SET state = $2, last_error = $3, updated_at_ms = $4 WHERE dedupe_key = $1 AND state = $5",
            args![key, OutboxState::Done.as_str(), why, now, OutboxState::Pending.as_str()],
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
    let until = now + lease.ms;
    let rows = c.fetch(claim_sql(lane, c.postgres()), args![now, limit, &*lease.owner, until]).await?;
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

/// The claim's statement. `state = 'pending'` again outside the subquery:
/// a row another claimer took meanwhile is skipped, not taken twice. On
/// PostgreSQL, SKIP LOCKED lets two instances claim side by side without
/// waiting for each other.
///
/// On SQLite, nothing the planner peeks at is bound: it looks at the value
/// bound to a column that a partial index filters on (`outbox_sending`,
/// `WHERE state = 'sending'`) and at a bound `LIMIT`, and each new binding of
/// either made SQLite prepare the statement again, on every claim (a sixth
/// of the writer thread's time under the bench's load). So the states are
/// written into the SQL, and the limit is an expression (`$2 + 0`), which
/// the planner does not read.
pub(super) fn claim_sql(lane: Lane, postgres: bool) -> &'static str {
    match (lane, postgres) {
        (Lane::Dial, false) => {
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at_ms = $1, lease_owner = $3,
                 lease_until_ms = $4
             WHERE state = 'pending' AND id IN (SELECT id FROM outbox WHERE state = 'pending' AND kind = 'dial'
                 AND not_before_ms <= $1 ORDER BY id LIMIT $2 + 0)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
        (Lane::Other, false) => {
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at_ms = $1, lease_owner = $3,
                 lease_until_ms = $4
             WHERE state = 'pending' AND id IN (SELECT id FROM outbox WHERE state = 'pending' AND kind <> 'dial'
                 AND not_before_ms <= $1 ORDER BY id LIMIT $2 + 0)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
        (Lane::Dial, true) => {
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at_ms = $1, lease_owner = $3,
                 lease_until_ms = $4
             WHERE state = 'pending' AND id IN (SELECT id FROM outbox WHERE state = 'pending' AND kind = 'dial'
                 AND not_before_ms <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
        (Lane::Other, true) => {
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at_ms = $1, lease_owner = $3,
                 lease_until_ms = $4
             WHERE state = 'pending' AND id IN (SELECT id FROM outbox WHERE state = 'pending' AND kind <> 'dial'
                 AND not_before_ms <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, dedupe_key, payload, attempts, journey_id"
        }
    }
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

#[cfg(test)]
mod tests {
    use super::super::lite::LiteConn;
    use super::*;

    /// A SQLite database in memory with the server's schema.
    pub(super) fn migrated() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            conn.execute_batch(&std::fs::read_to_string(&f).unwrap()).unwrap();
        }
        conn
    }

    fn ready<T>(f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a rusqlite future was not ready"),
        }
    }

    #[test]
    fn a_claim_on_sqlite_is_prepared_once_whatever_it_binds() {
        let conn = migrated();
        for (i, kind) in ["dial", "dial", "hang_up"].iter().enumerate() {
            conn.execute(
                "INSERT INTO outbox (dedupe_key, kind, payload, state, attempts, not_before_ms, created_at_ms,
                     updated_at_ms) VALUES (?1, ?2, '{}', 'pending', 0, 0, 0, 0)",
                rusqlite::params![format!("k{i}"), kind],
            )
            .unwrap();
        }
        let lease = Lease { owner: "bench-a".into(), ms: 1_000 };
        let other = Lease { owner: "bench-b".into(), ms: 5_000 };
        let mut c = LiteConn(&conn);
        // Each claim binds other values: its time, limit, owner and lease expiry. (The rows'
        // payloads are no commands: only the statement is looked at here.)
        let sql = claim_sql(Lane::Dial, false);
        let first = ready(c.fetch(sql, args![10i64, 1i64, &*lease.owner, 1_010i64])).unwrap();
        let second = ready(c.fetch(sql, args![20i64, 5i64, &*other.owner, 5_020i64])).unwrap();
        let third = ready(c.fetch(sql, args![30i64, 5i64, &*lease.owner, 1_030i64])).unwrap();
        assert_eq!((first.len(), second.len(), third.len()), (1, 1, 0), "each pending dial is claimed once");
        let st = conn.prepare_cached(sql).unwrap();
        assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0, "the claim was prepared again");
        drop(st);
        // The control: the same claim with its states bound is prepared again, so the count
        // above would see it.
        let bound = "UPDATE outbox SET state = $5, updated_at_ms = $1, lease_owner = $3, lease_until_ms = $4
             WHERE state = $6 AND id IN (SELECT id FROM outbox WHERE state = $6 AND kind = 'dial'
                 AND not_before_ms <= $1 ORDER BY id LIMIT $2 + 0)
             RETURNING id";
        for now in [40i64, 50] {
            ready(c.fetch(bound, args![now, 1i64, &*lease.owner, now + 1_000, "sending", "pending"])).unwrap();
        }
        let st = conn.prepare_cached(bound).unwrap();
        assert!(st.get_status(rusqlite::StatementStatus::RePrepare) > 0, "a bound state no longer re-prepares");
        drop(st);
        let owners: Vec<(String, String, i64)> = conn
            .prepare("SELECT dedupe_key, state, lease_until_ms FROM outbox WHERE kind = 'dial' ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(owners, [("k0".into(), "sending".into(), 1_010), ("k1".into(), "sending".into(), 5_020)]);
    }
}
