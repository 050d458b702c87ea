//! Persistence: locations, journeys (and the `calls` rows that show them),
//! raw events and the outbox.
//!
//! Queries are plain SQL over sqlx's `Any` driver with `$N` placeholders and
//! only integer (BIGINT) and text columns, so the same code runs on SQLite
//! (the embedded default) and PostgreSQL. What differs by backend is set up
//! when a store opens ([`open`]: the pool, the migrations in
//! `migrations/sqlite` and `migrations/postgres`, how a write transaction
//! begins) and in the writer ([`batch`], [`lite`]: SQLite's own writer
//! thread and its WAL checkpoints). SQLite runs in WAL mode with
//! `synchronous=NORMAL`: a committed row survives a crash of this process.
//!
//! One module per thing stored, each with its part of [`Store`]'s methods:
//! [`locations`] (and the Twilio resources' SIDs), [`journeys`], [`calls`]
//! (and the raw events), [`outbox`] (and the leases), [`voicemails`]; the
//! reads for the history API and the callers' places in [`history`] and
//! [`waiting`]; the group commit in [`batch`].

mod batch;
mod calls;
mod history;
mod journeys;
mod lite;
mod locations;
mod open;
mod outbox;
mod sql;
#[cfg(test)]
pub(crate) mod testing;
mod voicemails;
mod waiting;

pub use batch::{CHECKPOINTER_THREAD, WRITER_THREAD};
pub use calls::{CallRecord, StatusRecord};
pub use history::{ActionRow, CallFilter, EventRow, HistoryCall, JourneyRow, LiveCallers, StatusRow, journey_sids};
pub use journeys::{Audit, Delivered, Delivery, Finish, NewCall, Route, Settled};
pub use open::{Backend, PoolSettings, SQLITE_READERS, redact_url, sqlite_path};
pub(crate) use open::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
pub use outbox::{Desk, DeskQueue, Handed, Lease, Orphans};
pub use voicemails::{
    NewVoicemail, Transcription, Voicemail, VoicemailFilter, VoicemailKind, callback_request_id, is_callback_request_id,
};

use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

/// The PostgreSQL channel a write that queued a command notifies, and every
/// instance's dispatcher listens on.
pub const NOTIFY_CHANNEL: &str = "call_router_outbox";

/// How long an instance's claim on a command lasts unless set with
/// [`Store::owned_by`].
const DEFAULT_LEASE_MS: i64 = 60_000;

/// Milliseconds since the Unix epoch, the one time format in the database.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A handle to the database; cheap to clone.
///
/// SQLite takes one writer at a time; several connections writing at once
/// wait on each other inside SQLite's busy handler, which sleeps in steps of
/// milliseconds. So reads go to `pool` and every write to `writer`, a pool
/// of one connection, where writers queue in order without sleeping. WAL
/// mode lets the reads run beside the write. The frequent writes
/// (`reservation.created`, the dispatcher's results) go through `batcher`, a
/// task that writes whatever has queued in one transaction (see [`batch`]).
/// PostgreSQL keeps the same shape with several writers on the one queue
/// (see `open::postgres_writers`) and a larger read pool.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    writer: AnyPool,
    batcher: mpsc::Sender<batch::Op>,
    /// This instance's name and how long its claims on the outbox last.
    lease: Lease,
    backend: Backend,
    /// Where the writer hands new dials to this instance's dial lane, while
    /// one runs (see [`Desk`]); shared by the store's clones.
    desk: Arc<std::sync::Mutex<Option<Arc<Desk>>>>,
}

impl Store {
    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Hands one write to the batcher and waits for its answer, which comes
    /// after the batch's COMMIT.
    async fn batched<T>(&self, op: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> batch::Op) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        let stopped = || anyhow::anyhow!("the database writer has stopped");
        self.batcher.send(op(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Opens the desk of this instance's dial lane, whose slots these are,
    /// under this store's lease: the dials written from now on while a slot
    /// is free come from the returned queue, claimed (see [`Desk`]). Replaces
    /// a desk opened before.
    pub fn open_desk(&self, slots: Arc<tokio::sync::Semaphore>) -> DeskQueue {
        let (desk, queue) = Desk::open(slots, self.lease.clone());
        *self.desk.lock().unwrap_or_else(|e| e.into_inner()) = Some(desk);
        queue
    }

    /// Closes the desk `queue` comes from, if it is still the open one:
    /// dials written from now on wait in the outbox. Writes under way may
    /// still hand theirs; the queue ends once they are answered.
    pub fn close_desk(&self, queue: &DeskQueue) {
        let mut desk = self.desk.lock().unwrap_or_else(|e| e.into_inner());
        if desk.as_ref().is_some_and(|d| std::ptr::eq(Arc::as_ptr(d), queue.desk.as_ptr())) {
            desk.take();
        }
    }

    fn desk(&self) -> Option<Arc<Desk>> {
        self.desk.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The same store, claiming the outbox's commands as `owner` for `lease_ms`
    /// (an instance's name: see [`Orphans`]).
    pub fn owned_by(mut self, owner: &str, lease_ms: i64) -> Store {
        self.lease = Lease { owner: owner.into(), ms: lease_ms };
        // Another instance: its own dial lane, its own desk.
        self.desk = Arc::default();
        self
    }

    /// This instance's name, as it claims commands and leases.
    pub fn owner(&self) -> &str {
        &self.lease.owner
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
