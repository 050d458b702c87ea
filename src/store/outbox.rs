//! The outbox in the database: commands queued by journeys, claimed by a
//! dispatcher under a lease, finished with their result, and taken over
//! when the instance that claimed them is gone.
//!
//! At most once for call creation: a dial that was being sent when its
//! instance died is never sent again; it is marked `unknown` and its journey
//! hears `DialUnknown`, so it looks the call up. An update is idempotent and
//! simply goes back to `pending`.

use std::str::FromStr;

use anyhow::Context as _;
use sqlx::Row;

use super::journeys::{self, Delivery, Finish, Route};
use super::sql::{Conn, args, insert};
use crate::journey::{Command, Event, Policy};
use crate::outbox::{Lane, OutboxRow, OutboxState};

/// Who claims, and for how long.
#[derive(Debug, Clone)]
pub struct Lease {
    /// This instance (see [`super::Store::owned_by`]).
    pub owner: std::sync::Arc<str>,
    pub ms: i64,
}

/// Where the writer hands dials to this instance's dial lane. A dial a
/// delivery queues while the lane has a free slot is written already
/// claimed (`sending`, under the lane's lease, its first send) and handed
/// over with that slot after the COMMIT: the lane neither claims it (a
/// write) nor waits to be woken. A dial written while no slot is free
/// waits in the outbox as `pending`, for the lane's claim, as before.
///
/// A handed dial that never reaches the lane (the process killed, the lane
/// stopped meanwhile) is a claimed row whose sender is gone: after its
/// lease it is taken over like any other, and looked up, not sent again.
/// One whose COMMIT lost its answer (PostgreSQL's connection cut) is found
/// written when the batch is written again, and handed over then
/// (`batch::InDoubt`).
#[derive(Debug)]
pub struct Desk {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    handed: tokio::sync::mpsc::UnboundedSender<Handed>,
    lease: Lease,
}

/// A dial handed to the lane: its claimed row, and the lane's slot it runs in.
#[derive(Debug)]
pub struct Handed {
    pub row: OutboxRow,
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

/// What a lane receives from its desk. The queue ends once the desk is
/// closed (or replaced) and the writes under way that could still hand it
/// a dial are answered.
#[derive(Debug)]
pub struct DeskQueue {
    handed: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    /// Which desk it is, for closing this one and no other.
    pub(super) desk: std::sync::Weak<Desk>,
}

impl DeskQueue {
    /// The next dial handed over; None once the queue has ended.
    pub async fn recv(&mut self) -> Option<Handed> {
        self.handed.recv().await
    }

    /// A dial handed over already, if any.
    pub fn try_recv(&mut self) -> Option<Handed> {
        self.handed.try_recv().ok()
    }
}

impl Desk {
    /// A desk for the lane whose slots these are; the lane receives what
    /// is handed to it from the returned queue.
    pub(super) fn open(
        slots: std::sync::Arc<tokio::sync::Semaphore>,
        lease: Lease,
    ) -> (std::sync::Arc<Desk>, DeskQueue) {
        let (handed, rx) = tokio::sync::mpsc::unbounded_channel();
        let desk = std::sync::Arc::new(Desk { slots, handed, lease });
        let queue = DeskQueue { handed: rx, desk: std::sync::Arc::downgrade(&desk) };
        (desk, queue)
    }

    /// One of the lane's slots, when one is free and the lane still takes
    /// what is handed to it (a lane that ended without closing its desk, a
    /// panic, takes nothing: its dials wait as `pending` for a claim).
    pub(super) fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.handed.is_closed() {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Whose lease the dials handed here are under.
    pub(super) fn owner(&self) -> &str {
        &self.lease.owner
    }

    /// Hands committed dials to the lane. One the lane can no longer take
    /// (it stopped) waits for its lease to end, like a claim of a stopped
    /// instance.
    pub(super) fn hand(&self, handed: Vec<Handed>) {
        for h in handed {
            if let Err(e) = self.handed.send(h) {
                tracing::warn!(key = %e.0.row.key, "the dial lane stopped before a dial handed to it; it is taken over after its lease");
            }
        }
    }
}

/// Queues a dial already claimed by the desk's lane, in the slot given;
/// None when one with its key exists already (the slot is then dropped).
/// The state is written into the SQL, not bound (see [`claim_sql`]).
pub(super) async fn insert_handed<C: Conn>(
    c: &mut C,
    command: &Command,
    journey_id: i64,
    desk: &Desk,
    slot: tokio::sync::OwnedSemaphorePermit,
    now: i64,
) -> anyhow::Result<Option<Handed>> {
    let payload = serde_json::to_string(command)?;
    let key = command.key();
    let id = c
        .insert_id(
            insert!(
                "INSERT INTO outbox (dedupe_key, kind, payload, state, attempts, not_before_ms, journey_id, created_at_ms,
                     updated_at_ms, lease_owner, lease_until_ms)
                 VALUES ($1, $2, $3, 'sending', 1, 0, $4, $5, $5, $6, $7) ON CONFLICT (dedupe_key) DO NOTHING"
            ),
            args![&key, command.kind(), &payload, journey_id, now, &*desk.lease.owner, now + desk.lease.ms],
        )
        .await?;
    let Some(id) = id else { return Ok(None) };
    let row = OutboxRow { id, key, command: command.clone(), attempts: 1, journey_id: Some(journey_id) };
    Ok(Some(Handed { row, slot }))
}

/// Withdraws a dial that an earlier delivery of the same batch handed to
/// the lane: not yet committed, so the lane has not seen it. Dropping the
/// [`Handed`] gives its slot back.
pub(super) async fn withdraw_handed<C: Conn>(c: &mut C, handed: Handed, why: &str, now: i64) -> anyhow::Result<()> {
    c.execute(
        "UPDATE outbox SET state = 'done', last_error = $2, updated_at_ms = $3, lease_owner = NULL, lease_until_ms = NULL
         WHERE id = $1",
        args![handed.row.id, why, now],
    )
    .await?;
    Ok(())
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
/// The states are written into the SQL, not bound (see [`claim_sql`]).
pub(super) async fn withdraw<C: Conn>(c: &mut C, key: &str, why: &str, now: i64) -> anyhow::Result<bool> {
    let done = c
        .execute(
            "UPDATE outbox SET state = 'done', last_error = $2, updated_at_ms = $3
             WHERE dedupe_key = $1 AND state = 'pending'",
            args![key, why, now],
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
                // Hands nothing over, and takes back nothing another write handed over.
                journeys::deliver_in(c, &d, None, &mut |_: &str| None, now).await?;
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

impl super::Store {
    /// Queues one command outside any journey (tests, tools); false when one
    /// with its key exists already.
    pub async fn enqueue_command(&self, command: &Command) -> anyhow::Result<bool> {
        let command = Box::new(command.clone());
        self.batched(|reply| super::batch::Op::Enqueue(command, reply)).await
    }

    /// Claims up to `limit` pending commands of `lane` whose time has come,
    /// marking them `sending`, oldest first. Through the batcher: the claim
    /// shares a transaction (one commit) with the writes queued beside it,
    /// and sees the commands they queued.
    pub async fn claim(&self, lane: Lane, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        let lease = self.lease.clone();
        self.batched(|reply| super::batch::Op::Claim(lane, limit, lease, reply)).await
    }

    /// Records how a command ended, or when to send it again (batched).
    pub async fn finish(&self, finish: Finish) -> anyhow::Result<()> {
        self.batched(|reply| super::batch::Op::Finish(finish, reply)).await
    }

    /// Takes over commands being sent by an instance that is gone: updates
    /// (idempotent) go back to pending; a dial, which must not be sent twice,
    /// is marked `unknown` and its journey hears `DialUnknown`, so it looks
    /// the call up instead. With [`Orphans::ExpiredAndMine`] (at start-up),
    /// also what this instance's name still holds from a previous run.
    /// Returns (requeued, unknown).
    pub async fn take_over(&self, which: Orphans, policy: Policy) -> anyhow::Result<(u64, u64)> {
        let (mut requeued, mut unknown) = (0, 0);
        loop {
            let lease = self.lease.clone();
            let (r, u) = self.batched(|reply| super::batch::Op::TakeOver(which, lease, policy, reply)).await?;
            (requeued, unknown) = (requeued + r, unknown + u);
            if r + u == 0 {
                return Ok((requeued, unknown));
            }
        }
    }

    /// Takes or renews the named lease for `ms` as this instance: true when
    /// this instance holds it (one reconciler among several instances).
    pub async fn hold_lease(&self, name: &'static str, ms: i64) -> anyhow::Result<bool> {
        let owner = self.lease.owner.clone();
        self.batched(|reply| super::batch::Op::Hold { name, owner, ms, reply }).await
    }

    /// Gives the named lease up, if this instance holds it.
    pub async fn release_lease(&self, name: &'static str) -> anyhow::Result<()> {
        let owner = self.lease.owner.clone();
        self.batched(|reply| super::batch::Op::Release { name, owner, reply }).await
    }

    /// Every command with its state (for tests and inspection).
    pub async fn actions(&self) -> anyhow::Result<Vec<(String, OutboxState, Option<String>)>> {
        let rows =
            sqlx::query("SELECT dedupe_key, state, last_error FROM outbox ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((r.try_get("dedupe_key")?, OutboxState::from_str(&state)?, r.try_get("last_error")?))
            })
            .collect()
    }

    /// The outbox's commands not yet carried out (pending, also waiting out a
    /// back-off, or being sent), by kind: (kind, how many, the oldest's
    /// `created_at_ms`). For the metrics.
    pub async fn outbox_backlog(&self) -> anyhow::Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) AS n, MIN(created_at_ms) AS oldest FROM outbox WHERE state IN ($1, $2)
             GROUP BY kind",
        )
        .bind(OutboxState::Pending.as_str())
        .bind(OutboxState::Sending.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("n")?, r.try_get("oldest")?))).collect()
    }
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

#[cfg(test)]
mod store_tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::super::testing::{POLICY, arrived, created, sid, store};
    use super::super::{Orphans, now_ms};
    use super::*;
    use crate::journey::ReservationEnd;
    use crate::test_backends::Backend;

    on_both_backends!(
        an_interrupted_dial_is_never_resent_but_an_update_is,
        a_retry_waits_in_the_outbox_not_in_a_slot_and_lanes_are_separate,
        concurrent_claims_hand_out_each_pending_action_once,
        a_claim_whose_lease_expired_is_taken_over_by_another_instance,
        one_instance_at_a_time_holds_a_named_lease,
        a_dial_written_while_the_lane_has_a_free_slot_is_handed_to_it_claimed,
        a_handed_dial_that_never_reached_its_lane_is_taken_over_and_looked_up,
        a_lane_closes_its_own_desk_and_not_the_one_opened_after_it,
        a_lane_gone_without_closing_its_desk_is_handed_nothing,
        a_dial_handed_and_withdrawn_in_one_batch_is_taken_back_before_the_commit,
    );

    async fn a_dial_handed_and_withdrawn_in_one_batch_is_taken_back_before_the_commit(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        let mut lane = s.open_desk(slots.clone());
        // Hold the writers (as in `batch`'s tests) so that what follows
        // queues into one batch: a first write that may go alone, then the
        // reservation that hands its dial over and, behind it, its end. On
        // PostgreSQL, every connection its writers take turns with.
        let mut held = Vec::new();
        for _ in 0..s.writer.options().get_max_connections() {
            held.push(s.writer.acquire().await.unwrap());
        }
        if backend == Backend::Sqlite {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *held[0]).await.unwrap();
        }
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        let first = tokio::spawn({
            let s = s.clone();
            async move { s.deliver(arrived(11)).await }
        });
        settle().await;
        let handing = tokio::spawn({
            let s = s.clone();
            async move { s.deliver(created(10, 10)).await }
        });
        settle().await;
        let (task, reservation) = (sid("WT", 10), sid::<twilio::sid::ReservationSid>("WR", 10));
        let ended = Event::ReservationEnded { task, reservation: reservation.clone(), why: ReservationEnd::Timeout };
        let ending = tokio::spawn({
            let s = s.clone();
            async move { s.deliver(Delivery::to_keys([reservation.to_string()], vec![ended], POLICY)).await }
        });
        settle().await;
        if backend == Backend::Sqlite {
            sqlx::query("ROLLBACK").execute(&mut *held[0]).await.unwrap();
        }
        drop(held);
        first.await.unwrap().unwrap();
        let (handing, ending) = (handing.await.unwrap().unwrap(), ending.await.unwrap().unwrap());
        assert_eq!((handing.queued_dials, ending.queued), (1, 0), "{handing:?} {ending:?}");
        assert!(lane.try_recv().is_none(), "the lane never gets the withdrawn dial");
        assert_eq!(slots.available_permits(), 4, "its slot is back");
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| k.starts_with("dial:")).unwrap();
        assert_eq!(*state, OutboxState::Done, "{actions:?}");
        assert!(why.as_deref().unwrap().starts_with("withdrawn"), "{why:?}");
        let other = s.clone().owned_by("other", 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(other.take_over(Orphans::Expired, POLICY).await.unwrap(), (0, 0), "no lease left on it");
        let json = s.journey_json(sid::<twilio::sid::CallSid>("CA", 10).as_str()).await.unwrap().unwrap();
        assert!(json.contains("not_placed"), "the journey knows the attempt made no call: {json}");
    }

    async fn a_dial_written_while_the_lane_has_a_free_slot_is_handed_to_it_claimed(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let s = s.owned_by("here", 60_000);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let mut lane = s.open_desk(slots.clone());
        s.deliver(arrived(1)).await.unwrap();
        let d = s.deliver(created(1, 1)).await.unwrap();
        assert_eq!((d.queued, d.queued_dials, d.handed), (1, 1, 1), "{d:?}");
        let h = lane.try_recv().expect("handed to the lane at the COMMIT");
        assert_eq!(h.row.key, format!("dial:{}", sid::<twilio::sid::ReservationSid>("WR", 1)));
        assert_eq!((h.row.attempts, h.row.journey_id), (1, d.journey), "its first send");
        assert!(matches!(h.row.command, Command::Dial { .. }), "{:?}", h.row.command);
        assert_eq!(slots.available_permits(), 0, "it holds the lane's slot");
        let actions = s.actions().await.unwrap();
        let state = actions.iter().find(|(k, _, _)| *k == h.row.key).map(|(_, st, _)| *st);
        assert_eq!(state, Some(OutboxState::Sending), "{actions:?}");
        assert!(s.claim(Lane::Dial, 10).await.unwrap().is_empty(), "claimed already: no claim takes it again");
        // Under this instance's lease: no other instance takes it over while it is sent.
        let other = s.clone().owned_by("other", 60_000);
        assert_eq!(other.take_over(Orphans::Expired, POLICY).await.unwrap(), (0, 0));
        // The lane's one slot is busy: the next dial waits in the outbox for a claim.
        s.deliver(arrived(2)).await.unwrap();
        let d = s.deliver(created(2, 2)).await.unwrap();
        assert_eq!((d.queued, d.queued_dials, d.handed), (1, 1, 0), "{d:?}");
        assert!(lane.try_recv().is_none());
        let claimed = s.claim(Lane::Dial, 10).await.unwrap();
        assert_eq!(claimed.len(), 1, "the pending dial");
        assert_eq!(claimed[0].key, format!("dial:{}", sid::<twilio::sid::ReservationSid>("WR", 2)));
        // A desk that closed hands nothing, whatever slots are free.
        drop(h);
        s.close_desk(&lane);
        s.deliver(arrived(3)).await.unwrap();
        let d = s.deliver(created(3, 3)).await.unwrap();
        assert_eq!((d.queued_dials, d.handed), (1, 0));
        assert!(lane.recv().await.is_none(), "the lane's queue ends with its desk");
    }

    async fn a_lane_gone_without_closing_its_desk_is_handed_nothing(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // The lane's task ended (a panic) and dropped its queue; its desk is still open.
        drop(s.open_desk(std::sync::Arc::new(tokio::sync::Semaphore::new(4))));
        s.deliver(arrived(8)).await.unwrap();
        let d = s.deliver(created(8, 8)).await.unwrap();
        assert_eq!((d.queued_dials, d.handed), (1, 0), "{d:?}");
        assert_eq!(s.claim(Lane::Dial, 10).await.unwrap().len(), 1, "pending, for a claim");
    }

    async fn a_lane_closes_its_own_desk_and_not_the_one_opened_after_it(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // A dispatcher that stops while the next one has started on the same store.
        let old = s.open_desk(std::sync::Arc::new(tokio::sync::Semaphore::new(4)));
        let mut new = s.open_desk(std::sync::Arc::new(tokio::sync::Semaphore::new(4)));
        s.close_desk(&old);
        s.deliver(arrived(7)).await.unwrap();
        assert_eq!(s.deliver(created(7, 7)).await.unwrap().handed, 1, "the new desk is open");
        assert!(new.try_recv().is_some());
    }

    async fn a_handed_dial_that_never_reached_its_lane_is_taken_over_and_looked_up(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // An instance whose claims last 1 ms hands a dial to its lane, and
        // dies before the lane starts it.
        let dead = s.clone().owned_by("dead", 1);
        let mut lane = dead.open_desk(std::sync::Arc::new(tokio::sync::Semaphore::new(4)));
        dead.deliver(arrived(6)).await.unwrap();
        assert_eq!(dead.deliver(created(6, 6)).await.unwrap().handed, 1);
        drop(lane.try_recv().expect("handed"));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let alive = s.clone().owned_by("alive", 60_000);
        assert_eq!(
            alive.take_over(Orphans::Expired, POLICY).await.unwrap(),
            (0, 1),
            "the dial is unknown, not requeued"
        );
        assert!(alive.claim(Lane::Dial, 10).await.unwrap().is_empty(), "never sent again");
        let json = s.journey_json(sid::<twilio::sid::CallSid>("CA", 6).as_str()).await.unwrap().unwrap();
        assert!(json.contains("\"unknown\""), "the journey looks the call up instead: {json}");
    }

    async fn an_interrupted_dial_is_never_resent_but_an_update_is(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(4)).await.unwrap();
        s.deliver(created(4, 4)).await.unwrap();
        let hang_up = Command::HangUp { leg: sid("CA", 99), round: 1 };
        s.enqueue_command(&hang_up).await.unwrap();
        assert_eq!(s.claim(Lane::Dial, 10).await.unwrap().len(), 1);
        assert_eq!(s.claim(Lane::Other, 10).await.unwrap().len(), 1);
        // Another instance on the same database: the claims are not yet
        // expired and not its own, so it leaves them alone.
        let other = s.clone().owned_by("other", 60_000);
        assert_eq!(other.take_over(Orphans::Expired, POLICY).await.unwrap(), (0, 0));
        assert_eq!(other.take_over(Orphans::ExpiredAndMine, POLICY).await.unwrap(), (0, 0));
        // This instance's name after a restart takes back what it held.
        assert_eq!(s.take_over(Orphans::ExpiredAndMine, POLICY).await.unwrap(), (1, 1));
        let actions = s.actions().await.unwrap();
        assert!(actions.iter().any(|(k, st, _)| k.starts_with("dial:") && *st == OutboxState::Unknown), "{actions:?}");
        assert!(actions.iter().any(|(k, st, _)| k.starts_with("hang-up:") && *st == OutboxState::Pending));
        let json = s.journey_json(sid::<twilio::sid::CallSid>("CA", 4).as_str()).await.unwrap().unwrap();
        assert!(json.contains("\"unknown\""), "the journey looks the call up instead: {json}");
        assert_eq!(s.due_journeys(now_ms() + 60_000, 10).await.unwrap().len(), 1, "it wants a tick for the lookup");
    }

    async fn a_claim_whose_lease_expired_is_taken_over_by_another_instance(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(5)).await.unwrap();
        s.deliver(created(5, 5)).await.unwrap();
        s.enqueue_command(&Command::HangUp { leg: sid("CA", 98), round: 1 }).await.unwrap();
        // The first instance's claims last 1 ms; it then "dies".
        let dead = s.clone().owned_by("dead", 1);
        assert_eq!(dead.claim(Lane::Dial, 10).await.unwrap().len(), 1);
        assert_eq!(dead.claim(Lane::Other, 10).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let alive = s.clone().owned_by("alive", 60_000);
        assert_eq!(alive.take_over(Orphans::Expired, POLICY).await.unwrap(), (1, 1));
        assert_eq!(alive.take_over(Orphans::Expired, POLICY).await.unwrap(), (0, 0), "once only");
        // The update is claimed again by the live instance; the dial never is.
        let again = alive.claim(Lane::Other, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert!(alive.claim(Lane::Dial, 10).await.unwrap().is_empty());
        // A live instance's claim is left alone by the others.
        assert_eq!(dead.take_over(Orphans::ExpiredAndMine, POLICY).await.unwrap(), (0, 0));
    }

    async fn one_instance_at_a_time_holds_a_named_lease(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let (a, b) = (s.clone().owned_by("a", 60_000), s.clone().owned_by("b", 60_000));
        assert!(a.hold_lease("reconciler", 60_000).await.unwrap());
        assert!(!b.hold_lease("reconciler", 60_000).await.unwrap(), "held by a");
        assert!(a.hold_lease("reconciler", 60_000).await.unwrap(), "a renews");
        a.release_lease("reconciler").await.unwrap();
        assert!(b.hold_lease("reconciler", 1).await.unwrap(), "free once a gives it up");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(a.hold_lease("reconciler", 60_000).await.unwrap(), "b's lease expired");
        assert!(!b.hold_lease("reconciler", 60_000).await.unwrap());
    }

    async fn a_retry_waits_in_the_outbox_not_in_a_slot_and_lanes_are_separate(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.enqueue_command(&Command::HangUp { leg: sid("CA", 5), round: 1 }).await.unwrap();
        let rows = s.claim(Lane::Other, 10).await.unwrap();
        let later = now_ms() + 60_000;
        let retry = Finish {
            id: rows[0].id,
            state: OutboxState::Pending,
            result: None,
            error: Some("500".into()),
            not_before_ms: later,
        };
        s.finish(retry).await.unwrap();
        assert!(s.claim(Lane::Other, 10).await.unwrap().is_empty(), "not before its time");
        sqlx::query("UPDATE outbox SET not_before_ms = 0").execute(&s.writer).await.unwrap();
        assert!(s.claim(Lane::Dial, 10).await.unwrap().is_empty(), "a hang-up is not in the dial lane");
        let again = s.claim(Lane::Other, 10).await.unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));
    }

    async fn concurrent_claims_hand_out_each_pending_action_once(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        for i in 0..100 {
            s.enqueue_command(&Command::HangUp { leg: sid("CA", i), round: 1 }).await.unwrap();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let rows = s.claim(Lane::Other, 7).await.unwrap();
                    if rows.is_empty() {
                        return mine;
                    }
                    assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
                    assert!(rows.iter().all(|r| r.attempts == 1));
                    mine.extend(rows.into_iter().map(|r| r.key));
                }
            });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r.unwrap());
        }
        all.sort();
        let unique: HashSet<_> = all.iter().cloned().collect();
        assert_eq!(all.len(), 100, "no action is handed out twice");
        assert_eq!(unique.len(), 100, "every action is handed out");
        assert!(s.actions().await.unwrap().iter().all(|(_, st, _)| *st == OutboxState::Sending));
    }
}
