//! Signed delivery of TaskRouter events to a workspace's `EventCallbackUrl`.
//!
//! Each workspace has its own delivery lanes: an event goes to the lane its
//! task (or, for worker events, its worker) hashes to, and each lane sends
//! one request at a time. So a task's events arrive in the order they
//! happened (task.created before reservation.created before
//! reservation.wrapup), while one slow request for one task does not hold up
//! every other call in the workspace. The API never waits on a receiver. A
//! delivery is retried as the URL's connection overrides say (by default,
//! once after a failed connection: see [`crate::webhook`]), then dropped
//! (and logged).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use twilio::Params;

use crate::Shared;
use crate::webhook::Hook;

/// Delivery lanes per workspace.
const LANES: u64 = 16;

pub(crate) struct Delivery {
    pub url: String,
    pub params: Params,
}

#[derive(Default)]
pub(crate) struct EventBus {
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>,
}

impl EventBus {
    /// Queues a delivery for a workspace, starting its delivery task on first use.
    pub(crate) fn send(&self, shared: &Arc<Shared>, workspace_sid: &str, d: Delivery) {
        let key = d.params.get("TaskSid").or_else(|| d.params.get("WorkerSid")).unwrap_or_default();
        let lane = format!("{workspace_sid}/{}", fnv1a(key) % LANES);
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let tx = queues.entry(lane).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(deliver_all(Arc::downgrade(shared), rx));
            tx
        });
        // The receiver lives as long as the sandbox; a send error means it is shutting down.
        let _ = tx.send(d);
    }
}

async fn deliver_all(shared: std::sync::Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Delivery>) {
    while let Some(d) = rx.recv().await {
        let Some(shared) = shared.upgrade() else { return };
        let event_type = d.params.get("EventType").unwrap_or_default().to_owned();
        match shared.webhook(Hook::Notify, "POST", &d.url, &d.params).await {
            Ok((status, _)) if (200..300).contains(&status) => {}
            Ok((status, _)) => tracing::warn!(%event_type, status, "event callback answered {status}; not delivered"),
            Err(e) => tracing::warn!(%event_type, "event callback failed ({e}); not delivered"),
        }
    }
}

/// Whether a workspace's `EventsFilter` lets an event type through.
pub(crate) fn wanted(filter: Option<&str>, event_type: &str) -> bool {
    match filter.map(str::trim) {
        None | Some("") => true,
        Some(f) => f.split(',').any(|t| t.trim() == event_type),
    }
}

/// A stable hash (FNV-1a), so lanes do not depend on a per-process seed.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
