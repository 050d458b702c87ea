//! The sandbox's resources, held in one `State` behind a `std::sync::Mutex`.
//!
//! Each kind lives in a [`Table`]: a map by SID plus the creation order, so
//! listings are stable and nothing depends on hash iteration order. Critical
//! sections are short and never span an `.await`.

use std::collections::{BTreeMap, HashMap};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::VMs;
use crate::expr::Expr;

/// A parsed TaskRouter expression with its source, shareable across clones.
#[derive(Clone)]
pub struct Compiled {
    pub src: String,
    pub expr: std::sync::Arc<Expr>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.src)
    }
}

impl Compiled {
    /// Parses `src`; an empty expression is taken as "1==1", as Twilio does.
    pub fn parse(src: &str) -> Result<Self, String> {
        let text = if src.trim().is_empty() { "1==1" } else { src };
        Expr::parse(text).map(|e| Self { src: src.to_owned(), expr: std::sync::Arc::new(e) }).map_err(|e| e.to_string())
    }
}

/// Resources of one kind: by SID, and in creation order.
#[derive(Debug)]
pub struct Table<T> {
    map: HashMap<String, T>,
    order: Vec<String>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self { map: HashMap::new(), order: Vec::new() }
    }
}

impl<T> Table<T> {
    pub fn insert(&mut self, sid: String, v: T) {
        if self.map.insert(sid.clone(), v).is_none() {
            self.order.push(sid);
        }
    }
    pub fn get(&self, sid: &str) -> Option<&T> {
        self.map.get(sid)
    }
    pub fn get_mut(&mut self, sid: &str) -> Option<&mut T> {
        self.map.get_mut(sid)
    }
    pub fn remove(&mut self, sid: &str) -> Option<T> {
        let v = self.map.remove(sid)?;
        // Deletions are rare (provisioning clean-up), so a scan is fine here.
        self.order.retain(|s| s != sid);
        Some(v)
    }
    /// Every item in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.order.iter().filter_map(|s| self.map.get(s))
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// An IncomingPhoneNumber: every setting the resource accepts, stored so it
/// reads back as written. Only the voice settings change what a call does.
#[derive(Debug, Clone)]
pub struct PhoneNumber {
    pub sid: String,
    pub phone_number: String,
    pub friendly_name: String,
    pub api_version: String,
    pub voice_url: Option<String>,
    pub voice_method: String,
    /// Where a call goes when `voice_url` fails, and with which method.
    pub voice_fallback_url: Option<String>,
    pub voice_fallback_method: String,
    pub voice_caller_id_lookup: bool,
    pub voice_application_sid: Option<String>,
    /// `voice` or `fax`.
    pub voice_receive_mode: String,
    pub status_callback: Option<String>,
    pub status_callback_method: String,
    pub sms_url: Option<String>,
    pub sms_method: String,
    pub sms_fallback_url: Option<String>,
    pub sms_fallback_method: String,
    pub sms_application_sid: Option<String>,
    pub trunk_sid: Option<String>,
    pub identity_sid: Option<String>,
    pub address_sid: Option<String>,
    pub bundle_sid: Option<String>,
    /// `Active` or `Inactive`.
    pub emergency_status: String,
    pub emergency_address_sid: Option<String>,
    pub created: VMs,
    pub updated: VMs,
}

impl PhoneNumber {
    /// A number with Twilio's defaults: nothing configured, every method POST.
    pub fn new(sid: String, phone_number: String, friendly_name: String, now: VMs) -> Self {
        Self {
            sid,
            phone_number,
            friendly_name,
            api_version: "2010-04-01".into(),
            voice_url: None,
            voice_method: "POST".into(),
            voice_fallback_url: None,
            voice_fallback_method: "POST".into(),
            voice_caller_id_lookup: false,
            voice_application_sid: None,
            voice_receive_mode: "voice".into(),
            status_callback: None,
            status_callback_method: "POST".into(),
            sms_url: None,
            sms_method: "POST".into(),
            sms_fallback_url: None,
            sms_fallback_method: "POST".into(),
            sms_application_sid: None,
            trunk_sid: None,
            identity_sid: None,
            address_sid: None,
            bundle_sid: None,
            emergency_status: "Inactive".into(),
            emergency_address_sid: None,
            created: now,
            updated: now,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Workspace {
    pub sid: String,
    pub friendly_name: String,
    pub event_callback_url: Option<String>,
    pub events_filter: Option<String>,
    pub default_activity_sid: String,
    pub timeout_activity_sid: String,
    pub multi_task_enabled: bool,
    pub prioritize_queue_order: String,
    pub created: VMs,
    pub updated: VMs,
    /// Worker SIDs in creation order: the order reservations are offered in.
    pub workers: Vec<String>,
    /// Pending task SIDs, in creation order.
    pub pending: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Activity {
    pub sid: String,
    pub workspace_sid: String,
    pub friendly_name: String,
    pub available: bool,
    pub created: VMs,
    pub updated: VMs,
}

#[derive(Debug, Clone)]
pub struct TaskQueue {
    pub sid: String,
    pub workspace_sid: String,
    pub friendly_name: String,
    pub target_workers: String,
    pub target_expr: Compiled,
    pub assignment_activity_sid: Option<String>,
    pub reservation_activity_sid: Option<String>,
    pub max_reserved_workers: u32,
    pub task_order: String,
    pub created: VMs,
    pub updated: VMs,
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub sid: String,
    pub workspace_sid: String,
    pub friendly_name: String,
    pub attributes: Value,
    pub attributes_raw: String,
    pub activity_sid: String,
    pub status_changed: VMs,
    pub created: VMs,
    pub updated: VMs,
    /// The voice channel.
    pub channel_sid: String,
    pub capacity: u32,
    pub channel_available: bool,
    /// Reservations pending or accepted and not yet completed, on voice.
    pub in_use: u32,
    /// When the worker was last given a reservation: the longest idle goes first.
    pub last_reserved: Option<VMs>,
}

/// One routing step: a queue, an optional worker expression, and how long to
/// wait there before the next step.
#[derive(Debug, Clone)]
pub struct Target {
    pub queue: String,
    pub expression: Option<Compiled>,
    pub timeout_secs: Option<u64>,
    pub priority: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub name: String,
    pub expression: Compiled,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone)]
pub struct Workflow {
    pub sid: String,
    pub workspace_sid: String,
    pub friendly_name: String,
    pub configuration: String,
    pub filters: Vec<Filter>,
    pub default_target: Option<Target>,
    pub assignment_callback_url: Option<String>,
    pub fallback_assignment_callback_url: Option<String>,
    pub task_reservation_timeout: u64,
    pub created: VMs,
    pub updated: VMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Reserved,
    Assigned,
    Wrapping,
    Completed,
    Canceled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Reserved => "reserved",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Wrapping => "wrapping",
            TaskStatus::Completed => "completed",
            TaskStatus::Canceled => "canceled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Canceled)
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    pub sid: String,
    pub workspace_sid: String,
    pub workflow_sid: String,
    pub attributes: Value,
    pub attributes_raw: String,
    pub status: TaskStatus,
    pub reason: Option<String>,
    pub priority: i64,
    pub timeout_secs: u64,
    pub created: VMs,
    pub updated: VMs,
    /// Its age for routing (virtual ms, before the sandbox's start when
    /// negative): the creation time unless `VirtualStartTime` said otherwise.
    pub virtual_start: i64,
    /// The routing steps chosen by the workflow, and the current one.
    pub targets: Vec<Target>,
    pub target_index: usize,
    pub queue_sid: Option<String>,
    pub queue_entered: Option<VMs>,
    /// Bumped whenever the task moves on, so stale timers do nothing.
    pub generation: u64,
    /// The pending reservations: the task's live offers, at most its queue's
    /// `MaxReservedWorkers`, one per worker. A reservation that ends without
    /// acceptance leaves this list, and the task is offered again, possibly to
    /// the same worker (as Twilio does).
    pub offers: Vec<String>,
    /// The accepted reservation, kept through wrap-up and completion.
    pub reservation_sid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResStatus {
    Pending,
    Accepted,
    Rejected,
    Timeout,
    Canceled,
    Rescinded,
    Wrapping,
    Completed,
}

impl ResStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResStatus::Pending => "pending",
            ResStatus::Accepted => "accepted",
            ResStatus::Rejected => "rejected",
            ResStatus::Timeout => "timeout",
            ResStatus::Canceled => "canceled",
            ResStatus::Rescinded => "rescinded",
            ResStatus::Wrapping => "wrapping",
            ResStatus::Completed => "completed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub sid: String,
    pub workspace_sid: String,
    pub task_sid: String,
    pub worker_sid: String,
    pub status: ResStatus,
    pub created: VMs,
    pub updated: VMs,
}

/// A voice call queue (the Queues resource): callers wait in it by name
/// after `<Enqueue>name</Enqueue>`, oldest first, until a `<Dial><Queue>`
/// takes them out.
#[derive(Debug, Clone)]
pub struct CallQueue {
    pub sid: String,
    pub friendly_name: String,
    pub max_size: usize,
    pub created: VMs,
    /// (call SID, when it joined), oldest first.
    pub members: Vec<(String, VMs)>,
}

/// A simulated phone's behaviour when called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "behaviour", rename_all = "snake_case")]
pub enum Behaviour {
    Person {
        #[serde(default = "one")]
        rings: u32,
        #[serde(default = "thirty")]
        talk_secs: u64,
        #[serde(default)]
        digits: Option<String>,
    },
    Voicemail {
        #[serde(default = "three")]
        rings: u32,
        #[serde(default)]
        digits: Option<String>,
        /// How long its greeting speaks before the beep (default 10 s): what
        /// `DetectMessageEnd` waits for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        greeting_secs: Option<u64>,
    },
    Busy,
    NoAnswer,
    Fail,
}

fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn thirty() -> u64 {
    30
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::Person { rings: 1, talk_secs: 30, digits: None }
    }
}

/// A call leg as the Calls resource shows it, plus the sandbox's own notes.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub sid: String,
    pub parent_call_sid: Option<String>,
    pub from: String,
    pub to: String,
    pub status: String,
    /// `inbound`, `outbound-api` or `outbound-dial`.
    pub direction: String,
    pub answered_by: Option<String>,
    pub phone_number_sid: Option<String>,
    pub created: VMs,
    pub updated: VMs,
    pub start: Option<VMs>,
    pub answered: Option<VMs>,
    pub end: Option<VMs>,
    /// Time in queues so far, all of them (a call may be enqueued again).
    pub queue_time_ms: Option<u64>,
    pub enqueued: Option<VMs>,
    pub bridge_start: Option<VMs>,
    pub bridge_end: Option<VMs>,
    pub linked_leg: Option<String>,
    pub task_sid: Option<String>,
    pub reservation_sid: Option<String>,
    pub recording_url: Option<String>,
    pub error_code: Option<u32>,
    pub error_message: Option<String>,
    pub queue_result: Option<String>,
    /// (virtual ms, what happened), in order.
    pub timeline: Vec<(VMs, String)>,
    /// What this leg's party heard from its own TwiML, in order: each `<Say>`
    /// (its text) and `<Play>` (its URL), noted when it began.
    pub heard: Vec<Heard>,
}

/// One prompt a party heard: `verb` is `say` or `play`, `what` its text or URL;
/// a `<Say>`'s `language` and `voice` attributes as the TwiML gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heard {
    pub at_ms: VMs,
    pub verb: &'static str,
    pub what: String,
    pub language: Option<String>,
    pub voice: Option<String>,
}

impl Call {
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "busy" | "failed" | "no-answer" | "canceled")
    }
    pub fn note(&mut self, at: VMs, what: impl Into<String>) {
        self.timeline.push((at, what.into()));
    }
}

#[derive(Debug, Clone)]
pub struct Recording {
    pub sid: String,
    pub call_sid: String,
    pub duration_secs: u64,
    pub created: VMs,
}

/// Everything the sandbox knows.
pub struct State {
    pub rng: StdRng,
    pub numbers: Table<PhoneNumber>,
    pub workspaces: Table<Workspace>,
    pub activities: Table<Activity>,
    pub queues: Table<TaskQueue>,
    pub workers: Table<Worker>,
    pub workflows: Table<Workflow>,
    pub tasks: Table<Task>,
    pub reservations: Table<Reservation>,
    pub calls: Table<Call>,
    pub recordings: Table<Recording>,
    /// Phone behaviours by E.164 number; BTreeMap so dumps are ordered.
    pub phones: BTreeMap<String, Behaviour>,
    /// Numbers by E.164, to find a number's VoiceUrl without a scan.
    pub number_by_e164: HashMap<String, String>,
    /// The enqueued call of each task created by `<Enqueue>`.
    pub call_by_task: HashMap<String, String>,
    /// Named voice queues, and their SIDs by name.
    pub call_queues: Table<CallQueue>,
    pub queue_by_name: HashMap<String, String>,
    /// The `<Queue url>` a dequeuing leg asked to run on a waiting caller
    /// before the bridge, by the caller's SID: (URL, method).
    pub bridge_urls: HashMap<String, (String, String)>,
    /// The account's rate for dialling calls created over the API (Twilio's
    /// CPS); `None` dials each at once. See [`State::dial_slot`].
    pub calls_per_second: Option<f64>,
    /// When the next API-created call may leave the queue.
    pub next_dial_ms: VMs,
}

impl State {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            numbers: Table::default(),
            workspaces: Table::default(),
            activities: Table::default(),
            queues: Table::default(),
            workers: Table::default(),
            workflows: Table::default(),
            tasks: Table::default(),
            reservations: Table::default(),
            calls: Table::default(),
            recordings: Table::default(),
            phones: BTreeMap::new(),
            number_by_e164: HashMap::new(),
            call_by_task: HashMap::new(),
            call_queues: Table::default(),
            queue_by_name: HashMap::new(),
            bridge_urls: HashMap::new(),
            calls_per_second: None,
            next_dial_ms: 0,
        }
    }

    /// When a call created over the API at `now` is dialled: at once without
    /// a rate, else in the account's queue, one call each `1 / calls_per_second`
    /// virtual seconds in creation order. Until then the call is `queued`,
    /// with no `start_time`, as Twilio's are.
    pub fn dial_slot(&mut self, now: VMs) -> VMs {
        let Some(cps) = self.calls_per_second.filter(|c| c.is_finite() && *c > 0.0) else { return now };
        let at = now.max(self.next_dial_ms);
        self.next_dial_ms = at.saturating_add((1000.0 / cps).ceil() as VMs);
        at
    }

    /// A fresh SID with the given two-letter prefix, from the seeded RNG.
    pub fn sid(&mut self, prefix: &str) -> String {
        use rand::Rng;
        let bytes: [u8; 16] = self.rng.random();
        let mut s = String::with_capacity(34);
        s.push_str(prefix);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn behaviour(&self, number: &str) -> Behaviour {
        self.phones.get(number).cloned().unwrap_or_default()
    }

    /// Puts a call at the back of the named queue, creating the queue on first
    /// use as `<Enqueue>` does. Returns the queue's SID, or `None` when the
    /// queue is full.
    pub fn join_queue(&mut self, name: &str, call_sid: &str, now: VMs) -> Option<String> {
        let sid = match self.queue_by_name.get(name) {
            Some(s) => s.clone(),
            None => {
                let sid = self.sid("QU");
                let q = CallQueue {
                    sid: sid.clone(),
                    friendly_name: name.to_owned(),
                    max_size: DEFAULT_QUEUE_SIZE,
                    created: now,
                    members: Vec::new(),
                };
                self.call_queues.insert(sid.clone(), q);
                self.queue_by_name.insert(name.to_owned(), sid.clone());
                sid
            }
        };
        let q = self.call_queues.get_mut(&sid)?;
        if q.members.len() >= q.max_size {
            return None;
        }
        q.members.push((call_sid.to_owned(), now));
        Some(sid)
    }

    /// Takes a call out of a queue (it left, or was dequeued).
    pub fn leave_queue(&mut self, queue_sid: &str, call_sid: &str) {
        if let Some(q) = self.call_queues.get_mut(queue_sid) {
            q.members.retain(|(c, _)| c != call_sid);
        }
    }

    /// Takes the oldest caller out of the named queue: `None` when there is
    /// no such queue, `Some(None)` when it is empty.
    pub fn pop_queue(&mut self, name: &str) -> Option<Option<(String, String, VMs)>> {
        let sid = self.queue_by_name.get(name)?.clone();
        let q = self.call_queues.get_mut(&sid)?;
        if q.members.is_empty() {
            return Some(None);
        }
        let (call, joined) = q.members.remove(0);
        Some(Some((sid, call, joined)))
    }
}

/// The default `MaxSize` of a queue `<Enqueue>` creates (Twilio's TwiML
/// reference for `<Enqueue>`).
pub const DEFAULT_QUEUE_SIZE: usize = 1000;
