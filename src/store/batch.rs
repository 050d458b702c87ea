//! Group commit for the frequent writes: every journey delivery, the
//! dispatcher's claims and results, and the audit rows beside them.
//!
//! A writer takes the first queued request, gets ready to write (on
//! PostgreSQL: a pooled connection), then drains whatever else has queued
//! meanwhile (up to [`MAX_BATCH`]) and writes
//! them all, in order, in one transaction: one COMMIT per batch instead of
//! one per request (on PostgreSQL, one fsync; SQLite in WAL mode with
//! `synchronous = NORMAL` syncs only at checkpoints, so a committed batch
//! survives a crash of this process, not a power cut). Each caller is
//! answered only after COMMIT, as when each request had its own; if
//! anything in the batch fails, the transaction rolls back and each request
//! is written again alone, so one bad write fails only its own caller. On
//! PostgreSQL several writers take turns at the one queue and write their
//! batches side by side; on SQLite there is one.
//!
//! Two kinds of writer share this loop ([`run`]): [`SqlxWriter`] over sqlx (on the
//! runtime, for PostgreSQL and in-memory SQLite) and [`LiteWriter`] (on a
//! thread of its own, for a SQLite file: see [`super::lite`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{AnyPool, Connection as _};
use tokio::sync::{mpsc, oneshot};

use super::journeys::{self, Audit, Delivered, Delivery, Finish};
use super::lite::LiteConn;
use super::now_ms;
use super::outbox::{self, Desk, Handed, Lease, Orphans};
use super::sql::{Conn, args};
use crate::journey::{Command, Policy};
use crate::outbox::{Lane, OutboxRow};

/// The most requests written in one transaction: small enough that one
/// slow batch does not hold the writer for long.
pub(super) const MAX_BATCH: usize = 256;

/// How many requests may wait for the writer before callers wait to queue
/// (back-pressure rather than unbounded memory).
pub(super) const QUEUE: usize = MAX_BATCH * 8;

/// The queue the writers share: each takes a batch from it in turn (on
/// SQLite there is one writer; on PostgreSQL several, see
/// `open::postgres_writers`).
pub(super) type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Op>>>;

/// A queue for writers to share, and its sending side.
pub(super) fn queue() -> (mpsc::Sender<Op>, Queue) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

pub(super) enum Op {
    /// With the desk of this instance's dial lane, when it runs.
    Deliver(Box<Delivery>, Option<Arc<Desk>>, oneshot::Sender<anyhow::Result<Delivered>>),
    Finish(Finish, oneshot::Sender<anyhow::Result<()>>),
    /// Claims up to this many pending commands of the lane, under the lease.
    Claim(Lane, i64, Lease, oneshot::Sender<anyhow::Result<Vec<OutboxRow>>>),
    /// Takes over commands whose sender is gone: (requeued, unknown).
    TakeOver(Orphans, Lease, Policy, oneshot::Sender<anyhow::Result<(u64, u64)>>),
    /// Takes or renews a named lease for `ms`; true when held.
    Hold {
        name: &'static str,
        owner: std::sync::Arc<str>,
        ms: i64,
        reply: oneshot::Sender<anyhow::Result<bool>>,
    },
    /// Gives a named lease up.
    Release {
        name: &'static str,
        owner: std::sync::Arc<str>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    /// Keeps a webhook that concerns no journey.
    Audit(Audit, oneshot::Sender<anyhow::Result<()>>),
    /// A recording's URL for the caller's `calls` row.
    Recording {
        call: String,
        url: String,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    /// Queues a command outside any journey; true when it was new.
    Enqueue(Box<Command>, oneshot::Sender<anyhow::Result<bool>>),
}

pub(super) enum Reply {
    Delivered(Delivered, Vec<Handed>),
    Done,
    Claimed(Vec<OutboxRow>),
    Inserted(bool),
    Held(bool),
    TookOver(u64, u64),
}

impl Reply {
    /// Whether this write left the outbox a command to send.
    fn queued_work(&self) -> bool {
        match self {
            // Dials handed to the lane are this instance's already.
            Reply::Delivered(d, _) => d.queued > d.handed,
            Reply::Inserted(new) => *new,
            Reply::TookOver(requeued, _) => *requeued > 0,
            Reply::Done | Reply::Claimed(_) | Reply::Held(_) => false,
        }
    }
}

impl Op {
    fn fail(self, message: &str) {
        let e = || anyhow::anyhow!("{message}");
        // A caller that went away no longer needs its answer.
        match self {
            Op::Deliver(_, _, reply) => drop(reply.send(Err(e()))),
            Op::Finish(_, reply) | Op::Audit(_, reply) | Op::Recording { reply, .. } | Op::Release { reply, .. } => {
                drop(reply.send(Err(e())))
            }
            Op::Claim(_, _, _, reply) => drop(reply.send(Err(e()))),
            Op::Enqueue(_, reply) | Op::Hold { reply, .. } => drop(reply.send(Err(e()))),
            Op::TakeOver(_, _, _, reply) => drop(reply.send(Err(e()))),
        }
    }

    fn answer(self, reply: Reply) {
        match (self, reply) {
            (Op::Deliver(_, desk, tx), Reply::Delivered(d, handed)) => {
                // To the lane whether or not the webhook still waits: the rows are claimed.
                if let Some(desk) = desk.filter(|_| !handed.is_empty()) {
                    desk.hand(handed);
                }
                // Counted here, after the COMMIT and whether or not the caller still
                // waits: a batch written again answers only with the second writing.
                if let Some(s) = &d.settled {
                    crate::stats::call_settled(s.outcome, s.location.as_deref());
                }
                drop(tx.send(Ok(d)))
            }
            (
                Op::Finish(_, tx) | Op::Audit(_, tx) | Op::Recording { reply: tx, .. } | Op::Release { reply: tx, .. },
                Reply::Done,
            ) => drop(tx.send(Ok(()))),
            (Op::Claim(_, _, _, tx), Reply::Claimed(rows)) => drop(tx.send(Ok(rows))),
            (Op::Enqueue(_, tx), Reply::Inserted(new)) => drop(tx.send(Ok(new))),
            (Op::Hold { reply: tx, .. }, Reply::Held(held)) => drop(tx.send(Ok(held))),
            (Op::TakeOver(_, _, _, tx), Reply::TookOver(r, u)) => drop(tx.send(Ok((r, u)))),
            (op, _) => op.fail("internal error: a write got another write's answer"),
        }
    }
}

/// The dial keyed `key`, taken out of what the batch's earlier deliveries
/// handed over. Their `handed` counts stay: the row is done, and no lane
/// need be woken for it.
fn take_back(replies: &mut [Reply], key: &str) -> Option<Handed> {
    replies.iter_mut().find_map(|r| match r {
        Reply::Delivered(_, handed) => handed.iter().position(|h| h.row.key == key).map(|i| handed.remove(i)),
        _ => None,
    })
}

/// Writes `ops` in order inside the caller's transaction.
async fn write_ops<C: Conn>(c: &mut C, ops: &[Op], now: i64) -> anyhow::Result<Vec<Reply>> {
    if c.postgres() {
        // Another instance's writer may lock the same journeys: in one order (see `lock_in_order`).
        let deliveries = ops.iter().filter_map(|op| match op {
            Op::Deliver(d, _, _) => Some(&**d),
            _ => None,
        });
        journeys::lock_in_order(c, deliveries).await.context("locking the batch's journeys")?;
    }
    let mut replies = Vec::with_capacity(ops.len());
    for op in ops {
        let reply = match op {
            Op::Deliver(d, desk, _) => {
                // A dial that an earlier delivery of this batch handed over may be withdrawn by this one.
                let mut take_back = |key: &str| take_back(&mut replies, key);
                let (delivered, handed) = journeys::deliver_in(c, d, desk.as_deref(), &mut take_back, now)
                    .await
                    .context("delivering an event")?;
                Reply::Delivered(delivered, handed)
            }
            Op::Finish(f, _) => {
                outbox::finish_in(c, f, now).await.context("recording a command's result")?;
                Reply::Done
            }
            Op::Claim(lane, limit, lease, _) => {
                Reply::Claimed(outbox::claim(c, *lane, *limit, lease, now).await.context("claiming commands")?)
            }
            Op::TakeOver(which, lease, policy, _) => {
                let (requeued, unknown) = outbox::take_over(c, *which, lease, *policy, now)
                    .await
                    .context("taking over commands whose sender stopped")?;
                Reply::TookOver(requeued, unknown)
            }
            Op::Hold { name, owner, ms, .. } => {
                Reply::Held(outbox::hold(c, name, owner, *ms, now).await.context("holding a lease")?)
            }
            Op::Release { name, owner, .. } => {
                outbox::release(c, name, owner).await.context("releasing a lease")?;
                Reply::Done
            }
            Op::Audit(a, _) => {
                journeys::insert_audit(c, a, now).await.context("keeping a webhook")?;
                Reply::Done
            }
            Op::Recording { call, url, .. } => {
                c.execute(
                    "UPDATE calls SET recording_url = $2, updated_at_ms = $3 WHERE call_sid = $1",
                    args![call, url, now],
                )
                .await
                .context("recording a voicemail's URL")?;
                Reply::Done
            }
            Op::Enqueue(command, _) => {
                Reply::Inserted(outbox::insert_command(c, command, None, now).await.context("queueing a command")?)
            }
        };
        replies.push(reply);
    }
    Ok(replies)
}

/// What writes a batch in one transaction.
pub(super) trait Writer {
    /// Gets ready to write, before the batch is drained, so that what queues
    /// meanwhile joins it.
    async fn ready(&mut self) -> anyhow::Result<()>;

    /// Writes the batch in one transaction; nothing of it is kept on error.
    async fn transact(&mut self, ops: &[Op]) -> anyhow::Result<Vec<Reply>>;

    /// Upkeep after a batch is answered (the SQLite writer's part of the
    /// checkpoints), before the next one is written.
    fn upkeep(&mut self) {}

    /// Of the dials a batch handed over before its COMMIT failed, those the
    /// COMMIT wrote all the same (its answer was lost): claimed rows that
    /// no lane got. Only a database across a connection loses answers.
    async fn landed(&mut self, in_doubt: Vec<(Arc<Desk>, Handed)>) -> Vec<(Arc<Desk>, Handed)> {
        drop(in_doubt);
        Vec::new()
    }
}

/// How long a writer waits, in all, for the database to take connections
/// again once it stopped taking them, before it fails batches at once: a
/// restart or failover of PostgreSQL (0.2 s in the chaos test) is then a
/// short wait for the webhooks of the moment, not a 5xx each.
pub(super) const OUTAGE_WAIT: Duration = Duration::from_millis(1500);

/// Between two tries to connect during that wait.
const RECONNECT_EVERY: Duration = Duration::from_millis(100);

/// Writes through sqlx: PostgreSQL, and SQLite in memory.
pub(super) struct SqlxWriter {
    pool: AnyPool,
    begin: &'static str,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    /// When the database last stopped giving this writer a connection; None
    /// while it gives them.
    down_since: Option<Instant>,
}

impl SqlxWriter {
    pub(super) fn new(pool: AnyPool, begin: &'static str) -> Self {
        SqlxWriter { pool, begin, conn: None, down_since: None }
    }
}

impl Writer for SqlxWriter {
    async fn landed(&mut self, in_doubt: Vec<(Arc<Desk>, Handed)>) -> Vec<(Arc<Desk>, Handed)> {
        let mut landed = Vec::new();
        for (desk, h) in in_doubt {
            match self.still_handed(&h, desk.owner()).await {
                Ok(true) => landed.push((desk, h)),
                // Not written: the batch written again queued it anew, or never did.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(key = %h.row.key, error = %crate::telemetry::chain(e.as_ref()), "could not tell whether a dial handed over by a batch whose COMMIT failed was written; if it was, it is taken over after its lease");
                }
            }
        }
        landed
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        while self.conn.is_none() {
            match self.pool.acquire().await {
                Ok(conn) => {
                    if let Some(since) = self.down_since.take() {
                        tracing::info!(
                            down_ms = since.elapsed().as_millis() as u64,
                            "the database takes connections again"
                        );
                    }
                    self.conn = Some(conn);
                }
                // Within the outage's first moments: wait and try again. Past them, every
                // batch fails at once (one try each) until a connection opens.
                Err(e @ sqlx::Error::PoolClosed) => return Err(e).context("the store is closed"),
                Err(e) => {
                    let since = *self.down_since.get_or_insert_with(|| {
                        tracing::warn!(error = %crate::telemetry::chain(&e), "the database gives no connection; waiting briefly for it");
                        Instant::now()
                    });
                    if since.elapsed() + RECONNECT_EVERY > OUTAGE_WAIT {
                        return Err(e).context("no database connection for a batch of writes");
                    }
                    tokio::time::sleep(RECONNECT_EVERY).await;
                }
            }
        }
        Ok(())
    }

    async fn transact(&mut self, ops: &[Op]) -> anyhow::Result<Vec<Reply>> {
        self.ready().await?;
        let Some(conn) = self.conn.as_mut() else { anyhow::bail!("internal error: no connection") };
        let written = async {
            let mut tx = conn.begin_with(self.begin).await?;
            let replies = write_ops(&mut *tx, ops, now_ms()).await?;
            if tx.postgres() && replies.iter().any(Reply::queued_work) {
                // Wakes every instance's dispatcher at COMMIT (see `dispatch`).
                tx.execute("SELECT pg_notify($1, '')", args![super::NOTIFY_CHANNEL]).await?;
            }
            if let Err(e) = tx.commit().await {
                // Its answer may be lost and the COMMIT landed: what it handed over is in doubt.
                return Err(anyhow::Error::new(e).context(InDoubt::of(ops, replies)));
            }
            Ok(replies)
        }
        .await;
        // Back to the pool between batches: on in-memory SQLite the readers
        // share this one connection.
        self.conn = None;
        written
    }
}

impl SqlxWriter {
    /// Whether the dial handed over as `h`, under `owner`'s lease, is a
    /// committed row still claimed for its first send.
    async fn still_handed(&mut self, h: &Handed, owner: &str) -> anyhow::Result<bool> {
        self.ready().await?;
        let Some(conn) = self.conn.as_mut() else { anyhow::bail!("internal error: no connection") };
        let row = conn
            .fetch_optional(
                "SELECT id FROM outbox WHERE id = $1 AND state = 'sending' AND attempts = 1 AND lease_owner = $2",
                args![h.row.id, owner],
            )
            .await;
        self.conn = None;
        Ok(row?.is_some())
    }
}

/// Writes through the SQLite writer thread's own connection.
pub(super) struct LiteWriter {
    conn: rusqlite::Connection,
    checkpoints: Arc<Checkpoints>,
}

impl LiteWriter {
    fn new(conn: rusqlite::Connection, checkpoints: Arc<Checkpoints>) -> Self {
        LiteWriter { conn, checkpoints }
    }
}

impl Writer for LiteWriter {
    async fn ready(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn transact(&mut self, ops: &[Op]) -> anyhow::Result<Vec<Reply>> {
        // IMMEDIATE: a second process on the same file (a rolling restart)
        // waits its turn in the busy handler rather than failing with
        // SQLITE_BUSY when it upgrades from a read.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let replies = write_ops(&mut LiteConn(&tx), ops, now_ms()).await?;
        tx.commit().context("committing a batch of writes")?;
        self.checkpoints.written.store(true, Ordering::Release);
        Ok(replies)
    }

    fn upkeep(&mut self) {
        if self.checkpoints.caught_up.swap(false, Ordering::AcqRel) {
            // Only what was written while the checkpointer copied, waiting
            // briefly for readers of older snapshots to finish, so that the
            // next batch can start the WAL over.
            let waits = self.conn.busy_timeout(READERS_WAIT);
            let _ = checkpoint(&self.conn, "the writer", RESTART);
            if waits.and_then(|()| self.conn.busy_timeout(super::lite::BUSY_TIMEOUT)).is_err() {
                tracing::warn!("could not set the writer's busy timeout");
            }
        }
    }
}

/// How the WAL gets back into the database file while the writer writes.
///
/// A checkpointer thread copies the WAL back, beside the writer, every
/// [`CheckpointPace::every`]. SQLite starts the WAL over from its beginning only
/// when a write transaction begins with every frame copied back; beside a
/// busy writer a checkpoint on another connection never catches up, so under
/// sustained load the WAL never restarted: under the bench it grew by
/// ~65 MB/s (760 MB in 12 s) and kept that size on disk. Under light load
/// the checkpointer catches up in the first lull and nothing more is needed.
///
/// So when the WAL has grown past [`CheckpointPace::restart_at`] frames, and the
/// checkpointer has copied all it saw, the writer, between two batches,
/// copies what was written meanwhile. With no COMMIT landing during that, it
/// copies every frame, waiting up to [`READERS_WAIT`] for readers of older
/// snapshots (which a PASSIVE checkpoint cannot copy past), and the next
/// batch starts the WAL over. Before its turn, the checkpointer catches up
/// on what came in during its long pass ([`catch_up`]), so the writer copies
/// only the last few hundred frames: its checkpoint costs that batch's
/// webhooks mostly the two fsyncs (median 5.3 ms under the bench, where
/// copying all that came in during the long pass made it 8–11 ms); the
/// whole WAL copied on the writer's thread stalled them 20–70 ms, which is
/// why the bulk stays off it.
#[derive(Default)]
struct Checkpoints {
    /// The writer committed since the checkpointer last began.
    written: AtomicBool,
    /// The checkpointer copied every frame it saw of a long WAL: the writer's turn.
    caught_up: AtomicBool,
}

/// When checkpoints run (see [`Checkpoints`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct CheckpointPace {
    /// How often the checkpointer looks for frames to copy.
    pub(super) every: Duration,
    /// How long the WAL may grow, in frames (pages), before the writer helps
    /// the checkpointer start it over.
    pub(super) restart_at: i64,
}

/// Four looks a second; the WAL starts over past ~40 MB.
pub(super) const CHECKPOINT_PACE: CheckpointPace =
    CheckpointPace { every: Duration::from_millis(250), restart_at: 10_000 };

/// How long the writer's checkpoint waits for readers of older snapshots.
const READERS_WAIT: Duration = Duration::from_millis(3);

/// The checkpointer's checkpoint: it waits for nobody.
const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";

/// The writer's: it also waits (the busy timeout) for readers of older
/// snapshots to finish.
const RESTART: &str = "PRAGMA wal_checkpoint(RESTART)";

/// A checkpoint on `conn` ([`PASSIVE`] or [`RESTART`]): the frames in the
/// WAL when it copied every frame it saw, None when it did not.
fn checkpoint(conn: &rusqlite::Connection, on: &str, sql: &'static str) -> Option<i64> {
    let started = Instant::now();
    let done = conn.query_row(sql, [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match done {
        Ok((0, frames, copied)) if copied == frames => {
            tracing::trace!(on, frames, ms, "WAL checkpointed");
            Some(frames)
        }
        // A reader still reads an older snapshot, or another checkpoint runs.
        Ok((busy, frames, copied)) => {
            tracing::debug!(on, busy, frames, copied, ms, "WAL checkpoint did not copy every frame; will retry");
            None
        }
        Err(e) => {
            tracing::warn!(on, error = %e, "WAL checkpoint failed; will retry");
            None
        }
    }
}

/// At most this many frames are left for the writer's checkpoint to copy,
/// when the checkpointer can manage it in [`CATCH_UP_PASSES`].
const LEFT_FOR_THE_WRITER: i64 = 300;

/// How many more passes the checkpointer makes before the writer's turn.
const CATCH_UP_PASSES: usize = 3;

/// After a pass over a long WAL (`frames` of it), copies what the writer
/// added meanwhile, pass after pass, until what is new since the last pass
/// is at most [`LEFT_FOR_THE_WRITER`] frames: the writer's own checkpoint
/// then copies only that, between two batches, instead of all that came in
/// during the long pass (1,100–1,500 frames under the bench; 43–218 were
/// left after catching up). Each pass here (median 3.7 ms) costs the writer
/// nothing but the cores it shares. A pass that does not copy everything (a
/// reader on an older snapshot) ends it: the writer's checkpoint copies the
/// rest as before.
fn catch_up(conn: &rusqlite::Connection, frames: i64) {
    catch_up_with(frames, || checkpoint(conn, "the checkpointer, catching up", PASSIVE));
}

/// [`catch_up`]'s passes, each `pass` returning the frames it copied (all of
/// the WAL it saw) or None; how many it made.
fn catch_up_with(frames: i64, mut pass: impl FnMut() -> Option<i64>) -> usize {
    let mut seen = frames;
    for made in 1..=CATCH_UP_PASSES {
        match pass() {
            Some(now) if now - seen > LEFT_FOR_THE_WRITER => seen = now,
            _ => return made,
        }
    }
    CATCH_UP_PASSES
}

/// The checkpointer's loop, on a thread and connection of its own. Stops
/// when the writer is gone.
fn run_checkpointer(path: &Path, checkpoints: Weak<Checkpoints>, pace: CheckpointPace) {
    let mut conn = None;
    let mut warned = false;
    loop {
        std::thread::sleep(pace.every);
        let Some(shared) = checkpoints.upgrade() else { return };
        // Opened here, off the path to the first webhook; tried again each
        // round until it opens (the WAL only grows meanwhile).
        let conn = match &mut conn {
            Some(conn) => conn,
            None => match super::lite::open(path) {
                Ok(opened) => {
                    if warned {
                        tracing::info!("WAL checkpoints resumed");
                    }
                    conn.insert(opened)
                }
                Err(e) => {
                    if !warned {
                        tracing::error!(
                            error = %crate::telemetry::chain(e.as_ref()),
                            "no connection for WAL checkpoints; the WAL grows until one opens"
                        );
                        warned = true;
                    }
                    continue;
                }
            },
        };
        if !shared.written.swap(false, Ordering::AcqRel) {
            continue;
        }
        match checkpoint(conn, "the checkpointer", PASSIVE) {
            Some(frames) if frames >= pace.restart_at => {
                catch_up(conn, frames);
                shared.caught_up.store(true, Ordering::Release);
            }
            Some(_) => {}
            None => shared.written.store(true, Ordering::Release),
        }
    }
}

/// Runs until every sender (every `Store` clone) is gone.
pub(super) async fn run(mut writer: impl Writer, queue: Queue) {
    let mut stats = Stats::default();
    loop {
        // One writer at a time takes a batch; the others write theirs meanwhile.
        let (ops, ready) = {
            let mut rx = queue.lock().await;
            let Some(first) = rx.recv().await else { break };
            let ready = writer.ready().await;
            let mut ops = vec![first];
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            (ops, ready)
        };
        if let Err(e) = ready {
            let message = format!("{} ({} writes)", crate::telemetry::chain(e.as_ref()), ops.len());
            ops.into_iter().for_each(|op| op.fail(&message));
            continue;
        }
        let started = Instant::now();
        let mut written = writer.transact(&ops).await;
        if let Err(e) = &written
            && connection_lost(e)
        {
            // The database cut the connection (a restart, a failover): written again on a
            // new one, which `ready` waits for briefly. A COMMIT whose answer was lost may
            // have landed; writing the batch again is then a webhook delivered twice, which
            // Twilio does too (the journeys take an event twice; the outbox keeps one
            // command per key).
            tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), writes = ops.len(), "the database connection was lost during a batch of writes; writing it again");
            let in_doubt = InDoubt::take(e);
            written = writer.transact(&ops).await;
            // Written again, a delivery whose COMMIT had landed finds its dial queued
            // already and hands nothing over: the lane gets the one handed the first time.
            if written.is_ok() && !in_doubt.is_empty() {
                for (desk, h) in writer.landed(in_doubt).await {
                    tracing::info!(key = %h.row.key, "a dial handed over by a COMMIT whose answer was lost goes to the lane");
                    desk.hand(vec![h]);
                }
            }
        }
        if ops.len() == 1 {
            written = again_if_raced(&mut writer, &ops, written).await;
        }
        stats.add(ops.len(), started.elapsed());
        match written {
            Ok(replies) => ops.into_iter().zip(replies).for_each(|(op, r)| op.answer(r)),
            // The batch was rolled back whole, so nothing of it is kept: write each request
            // alone, so that one bad write fails only its own webhook, not its neighbours'.
            Err(e) if ops.len() > 1 => {
                tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), writes = ops.len(), "a batch of writes failed; writing each alone");
                for op in ops {
                    let alone = writer.transact(std::slice::from_ref(&op)).await;
                    match again_if_raced(&mut writer, std::slice::from_ref(&op), alone).await {
                        Ok(mut replies) => match replies.pop() {
                            Some(r) => op.answer(r),
                            None => op.fail("internal error: no answer"),
                        },
                        Err(e) => {
                            tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "a write failed");
                            op.fail(&crate::telemetry::chain(e.as_ref()).to_string());
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(e.as_ref()), "a write failed");
                let message = crate::telemetry::chain(e.as_ref()).to_string();
                ops.into_iter().for_each(|op| op.fail(&message));
            }
        }
        writer.upkeep();
    }
}

/// The dials a batch handed over, when its COMMIT failed. Across a lost
/// connection the COMMIT may have landed all the same, leaving each a row
/// claimed under this instance's lease that no lane got; see
/// [`Writer::landed`]. Shown as the COMMIT's failure.
#[derive(Debug, thiserror::Error)]
#[error("committing a batch of writes")]
pub(super) struct InDoubt(std::sync::Mutex<Vec<(Arc<Desk>, Handed)>>);

impl InDoubt {
    /// What `ops` handed over, from their `replies`.
    pub(super) fn of(ops: &[Op], replies: Vec<Reply>) -> Self {
        let mut handed = Vec::new();
        for (op, reply) in ops.iter().zip(replies) {
            if let (Op::Deliver(_, Some(desk), _), Reply::Delivered(_, h)) = (op, reply) {
                handed.extend(h.into_iter().map(|h| (desk.clone(), h)));
            }
        }
        InDoubt(std::sync::Mutex::new(handed))
    }

    /// The dials `e` carries, if it is a failed COMMIT's.
    fn take(e: &anyhow::Error) -> Vec<(Arc<Desk>, Handed)> {
        match e.downcast_ref::<InDoubt>() {
            Some(d) => std::mem::take(&mut *d.0.lock().unwrap_or_else(|e| e.into_inner())),
            None => Vec::new(),
        }
    }
}

/// How often a write that lost the race to make a journey is written again.
const RACE_RETRIES: usize = 2;

/// `ops`, written once already (`written`), written again while they lost
/// the race to make a new call's journey to another writer
/// ([`journeys::MadeMeanwhile`]): that writer's COMMIT has landed when the
/// loss shows, so the next try finds its journey and delivers to it.
async fn again_if_raced(
    writer: &mut impl Writer,
    ops: &[Op],
    mut written: anyhow::Result<Vec<Reply>>,
) -> anyhow::Result<Vec<Reply>> {
    for _ in 0..RACE_RETRIES {
        match &written {
            Err(e) if e.chain().any(|c| c.is::<journeys::MadeMeanwhile>()) => {
                tracing::info!(error = %crate::telemetry::chain(e.as_ref()), "a write lost the race to make a journey");
                written = writer.transact(ops).await;
            }
            _ => break,
        }
    }
    written
}

/// Whether `e` says the database connection was lost rather than that the
/// writes were wrong: an IO error on the connection, or PostgreSQL ending it
/// (SQLSTATE class 57P: an administrator's shutdown, a crash, a server not
/// yet accepting connections). The transaction was then rolled back, unless
/// the COMMIT itself was under way.
fn connection_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| match cause.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Io(_)) => true,
        Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| code.starts_with("57P")),
        _ => false,
    })
}

/// The name of the SQLite writer's thread (`bench` reads its CPU time by it).
pub const WRITER_THREAD: &str = "sqlite-writer";

/// The name of the SQLite checkpointer's thread.
pub const CHECKPOINTER_THREAD: &str = "wal-checkpoints";

// Linux keeps 15 bytes of a thread's name: a longer one would not be found by it.
const _: () = assert!(WRITER_THREAD.len() <= 15 && CHECKPOINTER_THREAD.len() <= 15);

/// Starts the SQLite writer on a thread of its own, and its checkpointer
/// (see [`Checkpoints`]) on another, with a connection to `path` it opens
/// there. The writer's loop is [`run`], driven by a single-threaded runtime
/// that has nothing else to do: every statement blocks that thread, never
/// the server's.
pub(super) fn spawn_lite(
    conn: rusqlite::Connection,
    path: &Path,
    pace: CheckpointPace,
    rx: Queue,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().context("starting the writer's runtime")?;
    let checkpoints = Arc::new(Checkpoints::default());
    let weak = Arc::downgrade(&checkpoints);
    std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || runtime.block_on(run(LiteWriter::new(conn, checkpoints), rx)))
        .context("starting the writer's thread")?;
    let path = path.to_owned();
    std::thread::Builder::new()
        .name(CHECKPOINTER_THREAD.into())
        .spawn(move || run_checkpointer(&path, weak, pace))
        .context("starting the checkpointer's thread")?;
    Ok(())
}

/// Batch sizes and times, logged at debug level once a second.
#[derive(Default)]
struct Stats {
    since: Option<Instant>,
    batches: u64,
    writes: u64,
    busy: Duration,
    longest: Duration,
}

impl Stats {
    fn add(&mut self, writes: usize, took: Duration) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        self.batches += 1;
        self.writes += writes as u64;
        self.busy += took;
        self.longest = self.longest.max(took);
        if since.elapsed() >= Duration::from_secs(1) {
            tracing::debug!(
                batches = self.batches,
                writes = self.writes,
                mean_writes = self.writes as f64 / self.batches as f64,
                mean_ms = self.busy.as_secs_f64() * 1e3 / self.batches as f64,
                longest_ms = self.longest.as_secs_f64() * 1e3,
                busy = self.busy.as_secs_f64() / since.elapsed().as_secs_f64(),
                "database writer"
            );
            *self = Stats::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_told_from_a_bad_write() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(connection_lost(&anyhow::Error::new(sqlx::Error::Io(io())).context("delivering an event")));
        assert!(!connection_lost(&anyhow::Error::new(sqlx::Error::RowNotFound).context("delivering an event")));
        assert!(!connection_lost(&anyhow::Error::new(journeys::MadeMeanwhile("CA1".into()))));
    }

    /// A database that takes no connection: the writer waits for it briefly
    /// (a restart), then fails each batch at once until it is back, so a
    /// long outage does not hold every batch for the wait.
    #[tokio::test]
    async fn a_writer_waits_briefly_for_a_database_that_gives_no_connection_then_fails_at_once() {
        sqlx::any::install_default_drivers();
        // Port 1 on loopback: every connection is refused.
        let pool = sqlx::any::AnyPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let mut writer = SqlxWriter::new(pool, "BEGIN");
        let started = Instant::now();
        let first = writer.ready().await.unwrap_err();
        let waited = started.elapsed();
        assert!(format!("{first:#}").contains("no database connection"), "{first:#}");
        assert!(waited >= OUTAGE_WAIT - RECONNECT_EVERY * 2, "gave up after {waited:?}");
        let started = Instant::now();
        assert!(writer.ready().await.is_err());
        assert!(started.elapsed() < OUTAGE_WAIT / 2, "waited again: {:?}", started.elapsed());
    }

    /// The WAL header's checkpoint sequence number, which SQLite raises
    /// each time the WAL starts over (0 before there is one).
    fn wal_restarts(db: &Path) -> u32 {
        match std::fs::read(db.with_extension("db-wal")) {
            Ok(wal) if wal.len() >= 16 => u32::from_be_bytes(wal[12..16].try_into().unwrap()),
            _ => 0,
        }
    }

    /// Writes 6,000 rows of ~2 KB (12 MB and more of WAL) with every write
    /// queued at once and the answers awaited only at the end, so the writer
    /// never waits for work and the checkpointer alone would never catch up;
    /// `readers` threads count the rows meanwhile without a pause (each a
    /// scan of the growing table, so a snapshot is often held). Returns
    /// how often the WAL started over, and its size in MB.
    ///
    /// The file is in memory (`/dev/shm`, where there is one), so that its
    /// checkpoints' fsyncs cost nothing: what is measured is the writer, the
    /// checkpointer and the readers sharing the cores. On a disk that other
    /// processes keep busy with fsyncs (a `dd … conv=fsync` loop beside it;
    /// PostgreSQL's tests in CI) each checkpoint waited on the disk, and the
    /// WAL grew to 12–26 MB, restarting 0–4 times, with the writer's part as
    /// it is.
    async fn sustained_writes(readers: usize) -> (u32, f64) {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
        let path = dir.path().join("w.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        assert!(super::super::lite::migrate_new_file(&conn, &super::super::SQLITE_MIGRATIONS).unwrap());
        drop(conn);
        let (batcher, rx) = queue();
        let pace = CheckpointPace { every: Duration::from_millis(20), restart_at: 200 };
        spawn_lite(super::super::lite::open(&path).unwrap(), &path, pace, rx).unwrap();
        let before = wal_restarts(&path);
        let stop = Arc::new(AtomicBool::new(false));
        let reading: Vec<_> = (0..readers)
            .map(|_| {
                let (path, stop) = (path.clone(), stop.clone());
                std::thread::spawn(move || {
                    let conn = super::super::lite::open(&path).unwrap();
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _: Option<i64> = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let mut answers = Vec::new();
        for n in 0..6_000u64 {
            let audit = Audit {
                source: "test",
                event_type: "load".into(),
                resource_sid: Some(format!("WR{n:032x}")),
                payload: "x".repeat(2000),
            };
            let (tx, answer) = oneshot::channel();
            batcher.send(Op::Audit(audit, tx)).await.unwrap();
            answers.push(answer);
        }
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in reading {
            assert!(r.join().unwrap() > 0, "a reader never read");
        }
        let restarts = wal_restarts(&path).wrapping_sub(before);
        let wal_mb = std::fs::metadata(path.with_extension("db-wal")).unwrap().len() as f64 / 1e6;
        (restarts, wal_mb)
    }

    /// Passes that return the WAL's frames in turn (None: not all copied).
    fn passes(frames: &[Option<i64>]) -> (usize, usize) {
        let mut it = frames.iter().copied();
        let mut asked = 0;
        let made = catch_up_with(10_000, || {
            asked += 1;
            it.next().flatten()
        });
        (made, asked)
    }

    #[test]
    fn the_checkpointer_catches_up_until_little_is_new_and_no_further() {
        // Nothing written since the long pass: one look, and the writer's turn.
        assert_eq!(passes(&[Some(10_000)]), (1, 1));
        // 1,200 frames came in during the long pass, then 350, then 90.
        assert_eq!(passes(&[Some(11_200), Some(11_550), Some(11_640)]), (3, 3));
        // Exactly the limit left: that is little enough.
        assert_eq!(passes(&[Some(10_000 + LEFT_FOR_THE_WRITER)]), (1, 1));
        // The writer outpaces it: it stops after its passes.
        assert_eq!(passes(&[Some(12_000), Some(14_000), Some(16_000), Some(18_000)]), (CATCH_UP_PASSES, 3));
        // A pass a reader held back ends it; the writer's checkpoint copies the rest.
        assert_eq!(passes(&[Some(12_000), None, Some(12_100)]), (2, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_sustained_writes_the_wal_still_starts_over() {
        let (restarts, wal_mb) = sustained_writes(0).await;
        let said = format!("the WAL started over {restarts} times under 6,000 writes; it is {wal_mb:.1} MB");
        assert!(restarts >= 2, "{said}");
        // Without the writer's part it reached 20-43 MB; with it, 3-7 MB.
        assert!(wal_mb < 12.0, "{said}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_sustained_writes_and_reads_the_wal_still_starts_over() {
        let (restarts, wal_mb) = sustained_writes(2).await;
        let said = format!("the WAL started over {restarts} times under 6,000 writes and reads; it is {wal_mb:.1} MB");
        assert!(restarts >= 2, "{said}");
        assert!(wal_mb < 12.0, "{said}");
    }
}

#[cfg(test)]
mod store_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::Store;
    use super::super::outbox::{Desk, Handed, Lease};
    use super::super::testing::{arrived, created, sid, store};
    use crate::test_backends::Backend;

    /// A writer whose first COMMIT lands but loses its answer, as when the
    /// connection to PostgreSQL drops just then.
    struct LosesAnAnswer {
        inner: super::SqlxWriter,
        lost: bool,
    }

    impl super::Writer for LosesAnAnswer {
        async fn ready(&mut self) -> anyhow::Result<()> {
            self.inner.ready().await
        }

        async fn transact(&mut self, ops: &[super::Op]) -> anyhow::Result<Vec<super::Reply>> {
            let replies = self.inner.transact(ops).await?;
            if !std::mem::take(&mut self.lost) {
                return Ok(replies);
            }
            let lost = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the answer to COMMIT was lost");
            Err(anyhow::Error::new(sqlx::Error::Io(lost)).context(super::InDoubt::of(ops, replies)))
        }

        async fn landed(&mut self, in_doubt: Vec<(Arc<Desk>, Handed)>) -> Vec<(Arc<Desk>, Handed)> {
            self.inner.landed(in_doubt).await
        }
    }

    fn desk(slots: &Arc<tokio::sync::Semaphore>) -> (Arc<Desk>, super::super::DeskQueue) {
        Desk::open(slots.clone(), Lease { owner: "here".into(), ms: 60_000 })
    }

    #[tokio::test]
    async fn on_postgres_a_dial_handed_over_by_a_commit_whose_answer_was_lost_still_reaches_the_lane() {
        let Some((s, _db)) = store(Backend::Postgres).await else { return };
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let (desk, mut lane) = desk(&slots);
        let (tx, rx) = super::queue();
        let writer = LosesAnAnswer { inner: super::SqlxWriter::new(s.writer.clone(), "BEGIN"), lost: true };
        tokio::spawn(super::run(writer, rx));
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(super::Op::Deliver(Box::new(created(1, 1)), Some(desk), reply)).await.unwrap();
        let d = answer.await.unwrap().unwrap();
        // Written again, the delivery found its reservation known and queued nothing anew.
        assert_eq!((d.queued, d.handed), (0, 0), "{d:?}");
        let h = lane.try_recv().expect("the dial the first COMMIT wrote goes to the lane");
        assert_eq!(h.row.key, format!("dial:{}", sid::<twilio::sid::ReservationSid>("WR", 1)));
        assert_eq!(slots.available_permits(), 3, "in one slot");
        assert!(lane.try_recv().is_none());
        let actions = s.actions().await.unwrap();
        assert_eq!(actions.len(), 1, "one dial, {actions:?}");
        assert_eq!(actions[0].1, crate::outbox::OutboxState::Sending);
    }

    #[tokio::test]
    async fn on_postgres_a_dial_handed_over_by_a_commit_that_did_not_land_is_not_handed_again() {
        let Some((s, _db)) = store(Backend::Postgres).await else { return };
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let (desk, _lane) = desk(&slots);
        // Another instance's claim, a pending row, and no row at all: none is this desk's handed dial.
        s.deliver(created(1, 1)).await.unwrap();
        let other = s.clone().owned_by("other", 60_000);
        let claimed = other.claim(crate::outbox::Lane::Dial, 1).await.unwrap().pop().unwrap();
        s.deliver(created(2, 2)).await.unwrap();
        let pending = s.claim(crate::outbox::Lane::Dial, 1).await.unwrap().pop().unwrap();
        sqlx::query("UPDATE outbox SET state = 'pending', lease_owner = NULL WHERE id = $1")
            .bind(pending.id)
            .execute(&s.writer)
            .await
            .unwrap();
        let gone = crate::outbox::OutboxRow { id: pending.id + 1_000, ..pending.clone() };
        let mut writer = super::SqlxWriter::new(s.writer.clone(), "BEGIN");
        let in_doubt = [claimed, pending, gone]
            .into_iter()
            .map(|row| (desk.clone(), Handed { row, slot: slots.clone().try_acquire_owned().unwrap() }))
            .collect();
        use super::Writer as _;
        assert!(writer.landed(in_doubt).await.is_empty());
        assert_eq!(slots.available_permits(), 4, "their slots are free again");
    }

    on_both_backends!(
        a_failed_batch_is_written_again_one_by_one_so_only_the_bad_write_fails,
        a_closed_database_is_an_error_for_every_caller,
        a_database_that_refuses_writes_is_an_error_for_every_caller,
    );

    #[tokio::test]
    async fn on_postgres_a_delivery_that_lost_the_race_to_make_a_journey_is_written_again() {
        use sqlx::Connection as _;
        let Some((s, db)) = store(Backend::Postgres).await else { return };
        s.deliver(arrived(2)).await.unwrap();
        // Another session gives caller 1's SID to a journey, uncommitted, as another
        // instance's batch does to the journey it made for caller 1 (caller 2's stands in).
        let (one, two): (twilio::sid::CallSid, twilio::sid::CallSid) = (sid("CA", 1), sid("CA", 2));
        let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query(
            "INSERT INTO journey_keys (sid, journey_id) SELECT $1, journey_id FROM journey_keys WHERE sid = $2",
        )
        .bind(one.to_string())
        .bind(two.to_string())
        .execute(&mut other)
        .await
        .unwrap();
        // This instance finds no journey for caller 1, makes one, and its key waits for the other's.
        let racing = tokio::spawn({
            let s = s.clone();
            async move { s.deliver(arrived(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!racing.is_finished(), "caller 1's key waits for the other session's");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        let delivered = racing.await.unwrap();
        assert!(delivered.is_ok(), "the webhook failed: {:#}", delivered.unwrap_err());
        // Written again, into the journey the other session's key leads to.
        let ids: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT journey_id FROM journey_keys WHERE sid IN ($1, $2)")
            .bind(one.to_string())
            .bind(two.to_string())
            .fetch_all(&s.writer)
            .await
            .unwrap();
        assert_eq!((ids.len(), delivered.unwrap().journey), (1, Some(ids[0])));
    }

    #[tokio::test]
    async fn on_postgres_a_batch_waiting_for_a_lock_does_not_hold_up_the_others() {
        use sqlx::Connection as _;
        let Some((s, db)) = store(Backend::Postgres).await else { return };
        assert!(super::super::open::postgres_writers(super::super::PoolSettings::default().max_connections) > 1);
        s.deliver(arrived(1)).await.unwrap();
        // Another session holds caller 1's journey, as another instance's batch would.
        let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query("SELECT id FROM journeys FOR UPDATE").execute(&mut other).await.unwrap();
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.deliver(created(1, 1)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "caller 1's delivery waits for the lock");
        // Caller 2's journey is written meanwhile, by another writer.
        let other_caller = tokio::time::timeout(Duration::from_secs(3), s.deliver(arrived(2))).await;
        assert!(other_caller.expect("not held up by the batch that waits").is_ok());
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
        assert_eq!(waiting.await.unwrap().unwrap().queued, 1, "the first, once the lock is free");
    }

    async fn a_failed_batch_is_written_again_one_by_one_so_only_the_bad_write_fails(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // One poisoned event makes its whole transaction fail.
        let trigger: &[&'static str] = match backend {
            Backend::Sqlite => &["CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.payload = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END"],
            Backend::Postgres => &[
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.payload = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
                "CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom()",
            ],
        };
        for sql in trigger {
            sqlx::query(*sql).execute(&s.writer).await.unwrap();
        }
        // Hold the writer so that the requests queue into one batch: on
        // PostgreSQL its pooled connection; on a SQLite file, whose writer is
        // a thread with its own connection, the database's write lock.
        let mut held = s.writer.acquire().await.unwrap();
        if backend == Backend::Sqlite {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *held).await.unwrap();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let s = s.clone();
            tasks.spawn(async move {
                let mut d = created(100 + i, 100 + i);
                if i == 7 {
                    d.audit.as_mut().unwrap().payload = "boom".into();
                }
                s.deliver(d).await
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if backend == Backend::Sqlite {
            sqlx::query("ROLLBACK").execute(&mut *held).await.unwrap();
        }
        drop(held);
        let (mut errors, mut queued) = (0, 0);
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(d) => queued += d.queued,
                Err(e) => {
                    assert!(format!("{e:#}").contains("boom"), "{e:#}");
                    errors += 1;
                }
            }
        }
        assert_eq!((errors, queued), (1, 19), "only the poisoned write fails");
        let actions = s.actions().await.unwrap();
        assert_eq!(actions.len(), 19, "{actions:?}");
        let poisoned = format!("dial:{}", sid::<twilio::sid::ReservationSid>("WR", 107));
        assert!(!actions.iter().any(|(k, _, _)| *k == poisoned), "nothing of the failed write was kept");
        assert_eq!(s.event_count("reservation.created").await.unwrap(), 19);
        assert_eq!(s.calls().await.unwrap().len(), 19);
        // The writer carries on with the next batch.
        assert_eq!(s.deliver(created(200, 200)).await.unwrap().queued, 1);
    }

    async fn a_closed_database_is_an_error_for_every_caller(backend: Backend) {
        // The batches go through sqlx's writer pool, which is closed here: on
        // PostgreSQL, and on SQLite in memory (a SQLite file's writer is its
        // own thread: see the next test).
        let (s, _d) = match backend {
            Backend::Sqlite => (Store::connect("sqlite::memory:").await.unwrap(), None),
            Backend::Postgres => match store(backend).await {
                Some((s, d)) => (s, Some(d)),
                None => return,
            },
        };
        s.writer.close().await;
        let (a, b) = tokio::join!(s.deliver(created(1, 1)), s.deliver(created(2, 2)));
        assert!(a.is_err() && b.is_err());
    }

    async fn a_database_that_refuses_writes_is_an_error_for_every_caller(backend: Backend) {
        // A table the writer writes to is gone, so every write of the batch,
        // and each written again alone, fails.
        let Some((s, _d)) = store(backend).await else { return };
        sqlx::query("DROP TABLE call_statuses").execute(&s.pool).await.unwrap();
        sqlx::query("DROP TABLE events").execute(&s.pool).await.unwrap();
        let (a, b) = tokio::join!(s.deliver(created(1, 1)), s.deliver(created(2, 2)));
        let (a, b) = (format!("{:#}", a.unwrap_err()), format!("{:#}", b.unwrap_err()));
        assert!(a.contains("events"), "{a}");
        assert!(b.contains("events"), "{b}");
        // Nothing of either was kept.
        assert!(s.actions().await.unwrap().is_empty());
    }
}
