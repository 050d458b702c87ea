//! The request log: every request the sandbox received or sent, in order.
//!
//! Entries carry a sequence number so a reader can ask for what is new
//! (`since`). The log is bounded: the oldest entries are dropped first, so a
//! long benchmark cannot exhaust memory.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Bodies longer than this are cut, to keep the log small.
const MAX_BODY: usize = 4096;
/// Entries kept before the oldest are dropped.
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: u64,
    /// `in` for requests the sandbox received, `out` for those it sent.
    pub direction: &'static str,
    pub method: String,
    pub url: String,
    pub params: Vec<(String, String)>,
    /// 0 when no response arrived (a transport error).
    pub status: u16,
    pub response: String,
    pub error: Option<String>,
    /// The injected fault that shaped this request, as `reset (rule 2)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// For a webhook: which try of its delivery this was, from 1.
    pub attempt: u32,
    /// Virtual milliseconds since the sandbox started.
    pub at_ms: u64,
}

#[derive(Debug, Default)]
pub struct RequestLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    entries: VecDeque<Entry>,
}

/// Cuts a string to at most `MAX_BODY` bytes on a character boundary.
pub fn truncate(s: &str) -> String {
    if s.len() <= MAX_BODY {
        return s.to_owned();
    }
    let mut end = MAX_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl RequestLog {
    pub fn push(&self, mut entry: Entry) {
        entry.response = truncate(&entry.response);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        entry.seq = inner.next;
        inner.next += 1;
        inner.entries.push_back(entry);
        if inner.entries.len() > MAX_ENTRIES {
            inner.entries.pop_front();
        }
    }

    /// Entries with `seq >= since` (at most `limit`) and the next `since`.
    pub fn since(&self, since: u64, limit: usize) -> (Vec<Entry>, u64) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first = inner.entries.front().map_or(inner.next, |e| e.seq);
        let skip = since.saturating_sub(first) as usize;
        let out: Vec<Entry> = inner.entries.iter().skip(skip).take(limit).cloned().collect();
        let next = out.last().map_or(since.max(first).min(inner.next), |e| e.seq + 1);
        (out, next)
    }
}
