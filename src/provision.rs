//! `call-router provision`: makes Twilio's TaskRouter resources and phone numbers match the locations.
//!
//! # Layout
//! A pure core and an IO rim, in that order in this file:
//! - [`Desired`] is what the locations and settings ask for; [`Actual`] is
//!   what Twilio has (read with GETs only); [`plan`] compares them and returns
//!   one [`Change`] per resource, in the order they must be applied. No IO.
//! - [`run`] is the rim: it checks the configuration and every stored
//!   location before any request, reads the actual state, plans, and (unless
//!   `--dry-run`) applies the changes, printing one line per resource.
//!
//! # What it manages
//! One workspace (FriendlyName from `provision.workspace_name`), its
//! Available/Offline/Unavailable activities, and per location a task queue
//! (`TargetWorkers = location == "<name>"`, `MaxReservedWorkers = 1`) and
//! its workers (attributes `location`, `phone`, `managed_by`; Available),
//! one workflow routing on the task's `location` attribute, and each Twilio
//! number's voice and status callback URLs.
//!
//! # Lines and workers
//! TaskRouter holds at most `provision.worker_capacity` (by default its limit,
//! [`crate::domain::WORKER_CAPACITY_MAX`], 50) calls per worker, so a location's `lines` are
//! split as evenly as possible over `ceil(lines / capacity)` workers
//! ([`worker_shares`]): 120 lines are three workers of 40. The first is
//! `<workspace_name>/<location>` (key `<location>`, as before), the others
//! `<workspace_name>/<location>/<n>` (key `<location>/<n>`, attribute
//! `worker_index: n`). They all carry `location`, so the queue's
//! `TargetWorkers` matches every one, and nothing in the server is keyed by
//! worker. Changing `lines` resizes the workers, adds the missing ones and
//! deletes the surplus (marked ones only; its voice channel is made
//! unavailable first, so it takes no new call). The queue's
//! `MaxReservedWorkers` is held at 1: above it, one caller would be offered
//! to several workers of the same location at once.
//!
//! # The marker
//! Everything provision creates is marked: queues, workers and the workflow
//! are named `<workspace_name>/<location>` (the workflow
//! `<workspace_name>/by-location`), and workers also carry the attribute
//! `"managed_by": "call-router"`. `--prune` deletes only marked resources
//! (a queue whose name has the prefix, a worker with the attribute) of
//! locations that are no longer in the database; anything else is left
//! alone and said so. Phone numbers are never released.
//!
//! # The timeout activity
//! A reservation times out only when nothing settled it within the
//! workflow's `TaskReservationTimeout` (ring time + answering-machine
//! detection time + screening, once per phone for a location that rings
//! several in order, + a margin): a location that does not answer is reported
//! by the dial's status callback, and the server cancels the task before
//! that. So a timeout means the dial never happened or its outcome never
//! arrived (the server was down, or a webhook was lost). Twilio's default
//! then moves the worker to Offline, which strands every later caller for
//! that location until someone sets it back by hand: the old Node script's
//! failure. The workspace's `TimeoutActivitySid` is therefore
//! **Available**: routing keeps working once the cause is gone. The cost:
//! while the cause lasts, each caller is reserved and waits for a dial that
//! does not come, until `ivr.max_queue_secs` sends them to voicemail; with
//! Offline they would wait just as long with no reservation at all, and keep
//! waiting after the cause is gone. Hours in the IVR, not TaskRouter, are
//! what keep callers away from a closed location.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value, json};
use twilio::{E164, Params};

use crate::config::Settings;
use crate::domain::{Location, LocationSpec, check_unique};
use crate::store::Store;
use crate::twilio_api::{
    ActivityResource, ApiError, IncomingNumberResource, TaskQueueResource, TwilioClient, WorkerChannelResource,
    WorkerResource, WorkflowResource, WorkspaceResource,
};

/// The worker attribute that marks a worker as provision's own.
pub const MANAGED_BY: &str = "call-router";
/// The activities provision relies on: (FriendlyName, Available).
pub const ACTIVITIES: [(&str, bool); 3] = [("Available", true), ("Offline", false), ("Unavailable", false)];
/// The activity workers are set to, and the workspace's timeout activity
/// (see the module documentation for why).
pub const AVAILABLE: &str = "Available";
/// Exactly the workspace events `/tr-event-handler` acts on (see
/// `http::events`); anything else would be stored and ignored.
pub const EVENTS: [&str; 11] = [
    "reservation.created",
    "reservation.accepted",
    "reservation.rejected",
    "reservation.timeout",
    "reservation.canceled",
    "reservation.rescinded",
    "reservation.wrapup",
    "reservation.completed",
    "task.wrapup",
    "task.canceled",
    "task.completed",
];
/// Seconds added to ring time plus answering-machine detection time, for
/// the dispatcher's latency and Twilio's call set-up.
pub const RESERVATION_MARGIN_SECS: u32 = 15;

/// Seconds a screening prompt takes to say, at most (the caller's name
/// and number included).
pub const SCREENING_SAY_SECS: u32 = 10;

/// How long a location's screening may hold its reservation: the prompt
/// and its wait, twice (a wrong key repeats it). None without screening.
pub fn screening_secs(location: &Location) -> u32 {
    location.spec.screening().map_or(0, |s| crate::journey::SCREEN_PROMPTS * (s.timeout_secs + SCREENING_SAY_SECS))
}

/// How long one phone's leg may hold the reservation: it rings, is
/// answered and listened to by answering-machine detection, and screened.
fn ring_secs_per_phone(settings: &Settings, screening: u32) -> u32 {
    settings.dialing.ring_timeout_secs + settings.dialing.machine_detection_timeout_secs + screening
}

/// How long a reservation of `location` may take before its outcome is
/// known: every phone in turn when they are rung in order, so TaskRouter
/// does not time the reservation out between two of them; one phone's time
/// when they ring all at once.
pub fn ring_secs(settings: &Settings, location: &Location) -> u32 {
    let phones = match location.ring {
        crate::domain::Ring::InOrder => u32::try_from(location.phones.len()).unwrap_or(u32::MAX).max(1),
        crate::domain::Ring::AllAtOnce => 1,
    };
    phones
        .saturating_mul(ring_secs_per_phone(settings, screening_secs(location)))
        .saturating_add((phones - 1).saturating_mul(NEXT_PHONE_SECS))
}

/// Between one phone's leg ending and the next one's dial: the status
/// callback, the journey and the dispatcher.
pub const NEXT_PHONE_SECS: u32 = 5;

// ===========================================================================
// The pure core.
// ===========================================================================

/// A location's lines split over its workers: `ceil(lines / capacity)`
/// workers, the larger shares first, no two differing by more than one.
/// Zero lines (never a checked location's) still get one worker of 0.
pub fn worker_shares(lines: u32, capacity: u32) -> Vec<u32> {
    let capacity = capacity.max(1);
    let n = lines.div_ceil(capacity).max(1);
    (0..n).map(|i| lines / n + u32::from(i < lines % n)).collect()
}

/// A location's `n`th worker (from 1) as `provision` names and stores it:
/// `north`, `north/2`, `north/3`, …
pub fn worker_key(location: &str, index: u32) -> String {
    if index <= 1 { location.to_owned() } else { format!("{location}/{index}") }
}

/// The worker attribute that numbers a location's second and later workers.
pub const WORKER_INDEX: &str = "worker_index";

/// What the configuration asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The FriendlyName prefix that marks resources as provision's own,
    /// `<workspace_name>/`.
    pub prefix: String,
    /// Delete marked resources of locations that are gone.
    pub prune: bool,
    pub workspace: DesiredWorkspace,
    pub queues: Vec<DesiredQueue>,
    pub workers: Vec<DesiredWorker>,
    pub workflow: DesiredWorkflow,
    pub numbers: Vec<DesiredNumber>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredWorkspace {
    pub friendly_name: String,
    pub event_callback_url: String,
    pub events_filter: Vec<String>,
    pub timeout_activity: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredQueue {
    pub location: String,
    pub friendly_name: String,
    pub target_workers: String,
    /// Always 1: a caller is offered to one worker at a time.
    pub max_reserved_workers: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredWorker {
    pub location: String,
    /// Which of the location's workers, from 1.
    pub index: u32,
    /// [`worker_key`]: how the plan and the database name it.
    pub key: String,
    pub friendly_name: String,
    /// The attributes provision owns; others a person added are kept.
    pub attributes: Map<String, Value>,
    pub activity: String,
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredWorkflow {
    pub friendly_name: String,
    /// One filter per location, sorted by location.
    pub routes: Vec<Route>,
    pub reservation_timeout_secs: u32,
}

/// A workflow filter: tasks whose `location` is `location` go to its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub location: String,
    pub expression: String,
    /// The overflow location and the seconds a task waits for this one
    /// first (a second workflow target).
    pub overflow: Option<(String, u32)>,
}

impl Route {
    /// The targets as [`route_diffs`] shows them: `queue north for 60 s+queue south`.
    fn shown(&self) -> String {
        match &self.overflow {
            Some((to, secs)) => format!("queue {} for {secs} s+queue {to}", self.location),
            None => format!("queue {}", self.location),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DesiredNumber {
    pub number: E164,
    pub voice_url: String,
    pub status_callback: String,
    /// `VoiceFallbackUrl`; empty for none.
    pub voice_fallback_url: String,
}

impl Desired {
    /// The desired state for these (checked) locations.
    pub fn new(settings: &Settings, locations: &[Location], prune: bool) -> Desired {
        let name = &settings.provision.workspace_name;
        let prefix = format!("{name}/");
        let mut locations: Vec<&Location> = locations.iter().collect();
        locations.sort_by(|a, b| a.name.cmp(&b.name));
        let expression = |loc: &str| format!("location == {}", json!(loc));
        let queues = locations
            .iter()
            .map(|l| DesiredQueue {
                location: l.name.clone(),
                friendly_name: format!("{prefix}{}", l.name),
                target_workers: expression(&l.name),
                max_reserved_workers: 1,
            })
            .collect();
        let workers = locations
            .iter()
            .flat_map(|l| {
                let shares = worker_shares(l.lines, settings.provision.worker_capacity);
                let prefix = &prefix;
                shares.into_iter().zip(1u32..).map(move |(capacity, index)| {
                    let mut attributes = Map::new();
                    attributes.insert("location".into(), json!(l.name));
                    attributes.insert("phone".into(), json!(l.phone.as_str()));
                    attributes.insert("managed_by".into(), json!(MANAGED_BY));
                    if index > 1 {
                        attributes.insert(WORKER_INDEX.into(), json!(index));
                    }
                    let key = worker_key(&l.name, index);
                    DesiredWorker {
                        location: l.name.clone(),
                        index,
                        friendly_name: format!("{prefix}{key}"),
                        key,
                        attributes,
                        activity: AVAILABLE.into(),
                        capacity,
                    }
                })
            })
            .collect();
        let names: BTreeSet<&str> = locations.iter().map(|l| l.name.as_str()).collect();
        let routes = locations
            .iter()
            .map(|l| Route {
                location: l.name.clone(),
                expression: expression(&l.name),
                overflow: match (&l.spec.overflow, l.spec.overflow_after_secs) {
                    (Some(to), Some(secs)) if names.contains(to.as_str()) => Some((to.clone(), secs)),
                    _ => None,
                },
            })
            .collect();
        let numbers: BTreeSet<&E164> = locations.iter().flat_map(|l| l.numbers.iter()).collect();
        let base = &settings.public_url;
        Desired {
            prefix: prefix.clone(),
            prune,
            workspace: DesiredWorkspace {
                friendly_name: name.clone(),
                event_callback_url: settings.provision.webhook_url(format!("{base}/tr-event-handler")),
                events_filter: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
                timeout_activity: AVAILABLE.into(),
            },
            queues,
            workers,
            workflow: DesiredWorkflow {
                friendly_name: format!("{prefix}by-location"),
                routes,
                reservation_timeout_secs: RESERVATION_MARGIN_SECS
                    + locations
                        .iter()
                        .map(|l| ring_secs(settings, l))
                        .max()
                        .unwrap_or(ring_secs_per_phone(settings, 0)),
            },
            numbers: numbers
                .into_iter()
                .map(|n| DesiredNumber {
                    number: n.clone(),
                    voice_url: settings.provision.webhook_url(format!("{base}/incoming-call")),
                    status_callback: settings.provision.webhook_url(format!("{base}/status-callback")),
                    voice_fallback_url: settings.provision.voice_fallback_url.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    fn workflow_params(&self, queue_sids: &BTreeMap<String, String>) -> Result<Params, String> {
        let mut filters = Vec::new();
        for r in &self.workflow.routes {
            let sid = |l: &str| queue_sids.get(l).ok_or_else(|| format!("queue {l} has no SID"));
            let queue = sid(&r.location)?;
            let targets = match &r.overflow {
                Some((to, secs)) => json!([{"queue": queue, "timeout": secs}, {"queue": sid(to)?}]),
                None => json!([{"queue": queue}]),
            };
            filters.push(json!({
                "filter_friendly_name": r.location,
                "expression": r.expression,
                "targets": targets,
            }));
        }
        let config = json!({"task_routing": {"filters": filters}});
        let mut p = Params::new();
        p.push("FriendlyName", &self.workflow.friendly_name)
            .push("Configuration", config.to_string())
            .push("TaskReservationTimeout", self.workflow.reservation_timeout_secs.to_string());
        Ok(p)
    }
}

/// What Twilio has, as read by [`read_actual`]. `stored` is the database's
/// `twilio_resources` table, keyed by (kind, key).
#[derive(Debug, Clone, Default)]
pub struct Actual {
    pub workspace: Option<WorkspaceResource>,
    pub activities: Vec<ActivityResource>,
    pub queues: Vec<TaskQueueResource>,
    pub workers: Vec<ActualWorker>,
    pub workflows: Vec<WorkflowResource>,
    /// Each desired number: the account's resource, `None` when the
    /// account does not own it, or the error reading it.
    pub numbers: BTreeMap<String, Result<Option<IncomingNumberResource>, String>>,
    pub stored: BTreeMap<(String, String), String>,
    /// A workflow SID pinned in the configuration.
    pub pinned_workflow: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ActualWorker {
    pub worker: WorkerResource,
    /// The worker's `voice` channel, when it was read.
    pub voice: Option<WorkerChannelResource>,
}

impl ActualWorker {
    fn attributes(&self) -> Map<String, Value> {
        self.worker
            .attributes
            .as_deref()
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    }

    /// Whether provision created this worker: its marker attribute.
    fn is_marked(&self) -> bool {
        self.attributes().get("managed_by").and_then(Value::as_str) == Some(MANAGED_BY)
    }

    /// Its `location` attribute.
    fn location(&self) -> Option<String> {
        self.attributes().get("location").and_then(Value::as_str).map(str::to_owned)
    }

    /// Which of its location's workers it is: its `worker_index`, else 1.
    fn index(&self) -> u32 {
        self.attributes().get(WORKER_INDEX).and_then(Value::as_u64).and_then(|i| u32::try_from(i).ok()).unwrap_or(1)
    }
}

/// The kinds of resource, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Workspace,
    Activity,
    Queue,
    Worker,
    Workflow,
    Number,
}

impl Kind {
    /// The name in reports and in the database's `twilio_resources.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workspace => "workspace",
            Kind::Activity => "activity",
            Kind::Queue => "queue",
            Kind::Worker => "worker",
            Kind::Workflow => "workflow",
            Kind::Number => "number",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field that differs: `activity Offline -> Available`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub field: String,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.field, self.from, self.to)
    }
}

/// What happens to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create,
    Update(Vec<Diff>),
    /// A marked resource of a location that is gone, with `--prune`.
    Delete,
    /// A marked worker its location's lines no longer need.
    Surplus,
    Unchanged,
    /// A marked resource of a location that is gone, without `--prune`.
    Orphan,
    /// With `--prune`: a resource provision did not create, left alone.
    Foreign,
    /// Cannot be provisioned (a number the account does not own).
    Invalid(String),
}

/// One resource's change. `key` is the location name, the activity name,
/// the number, or the workspace's or workflow's FriendlyName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub key: String,
    pub sid: Option<String>,
    pub op: Op,
    /// What a created worker will hold: `capacity 40`.
    pub note: Option<String>,
}

impl Change {
    fn new(kind: Kind, key: impl Into<String>, sid: Option<&str>, op: Op) -> Change {
        Change { kind, key: key.into(), sid: sid.map(str::to_owned), op, note: None }
    }

    /// Whether applying it writes anything to Twilio.
    pub fn is_write(&self) -> bool {
        matches!(self.op, Op::Create | Op::Update(_) | Op::Delete | Op::Surplus)
    }

    /// The report line for the plan (`--dry-run`) or a success.
    pub fn line(&self) -> String {
        let (k, key) = (self.kind, &self.key);
        match &self.op {
            Op::Create => match &self.note {
                Some(note) => format!("+ create {k} {key} ({note})"),
                None => format!("+ create {k} {key}"),
            },
            Op::Update(diffs) => {
                format!("~ update {k} {key}: {}", diffs.iter().map(Diff::to_string).collect::<Vec<_>>().join(", "))
            }
            Op::Delete => format!("- delete {k} {key} (pruned)"),
            Op::Surplus => format!("- delete {k} {key} (its location's lines need fewer workers)"),
            Op::Unchanged => format!("= {k} {key} unchanged"),
            Op::Orphan => format!("? {k} {key}: its location is gone; run with --prune to delete it"),
            Op::Foreign => format!("  keep {k} {key}: not created by call-router"),
            Op::Invalid(why) => format!("! {k} {key}: {why}"),
        }
    }
}

/// Compares what is wanted with what is there. The changes come in the
/// order they must be applied: workspace, activities, queues, workers, the
/// workflow, then deletions (after the workflow stops routing to them),
/// then numbers, then notes about resources left alone.
pub fn plan(desired: &Desired, actual: &Actual) -> Vec<Change> {
    let mut out = Vec::new();
    let stored = |kind: Kind, key: &str| actual.stored.get(&(kind.as_str().to_owned(), key.to_owned())).cloned();

    // Workspace.
    let activity_name = |sid: &str| actual.activities.iter().find(|a| a.sid == sid).map(|a| a.friendly_name.clone());
    match &actual.workspace {
        None => out.push(Change::new(Kind::Workspace, &desired.workspace.friendly_name, None, Op::Create)),
        Some(ws) => {
            let d = &desired.workspace;
            let mut diffs = Vec::new();
            diff(&mut diffs, "name", &ws.friendly_name, &d.friendly_name);
            diff(
                &mut diffs,
                "event_callback_url",
                ws.event_callback_url.as_deref().unwrap_or(""),
                &d.event_callback_url,
            );
            let have: BTreeSet<&str> =
                ws.events_filter.as_deref().unwrap_or("").split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
            let want: BTreeSet<&str> = d.events_filter.iter().map(String::as_str).collect();
            if have != want {
                diffs.push(Diff {
                    field: "events_filter".into(),
                    from: show(&have.iter().copied().collect::<Vec<_>>().join(",")),
                    to: want.iter().copied().collect::<Vec<_>>().join(","),
                });
            }
            if ws.multi_task_enabled != Some(true) {
                diffs.push(Diff { field: "multi_task_enabled".into(), from: "false".into(), to: "true".into() });
            }
            let timeout =
                ws.timeout_activity_name.clone().or_else(|| ws.timeout_activity_sid.as_deref().and_then(activity_name));
            diff(&mut diffs, "timeout_activity", timeout.as_deref().unwrap_or(""), &d.timeout_activity);
            out.push(Change::new(Kind::Workspace, &d.friendly_name, Some(&ws.sid), update_or_unchanged(diffs)));
        }
    }

    // Activities: reused by name (Twilio creates them with the workspace).
    for (name, _) in ACTIVITIES {
        match actual.activities.iter().find(|a| a.friendly_name == name) {
            Some(a) => out.push(Change::new(Kind::Activity, name, Some(&a.sid), Op::Unchanged)),
            None => out.push(Change::new(Kind::Activity, name, None, Op::Create)),
        }
    }

    // Queues: matched by stored SID, else by name.
    let mut matched_queues: BTreeSet<&str> = BTreeSet::new();
    let mut queue_location: BTreeMap<&str, &str> = BTreeMap::new();
    for q in &desired.queues {
        let by_sid = stored(Kind::Queue, &q.location).and_then(|sid| actual.queues.iter().find(|a| a.sid == sid));
        let found = by_sid.or_else(|| {
            actual
                .queues
                .iter()
                .find(|a| a.friendly_name == q.friendly_name && !matched_queues.contains(a.sid.as_str()))
        });
        match found {
            None => out.push(Change::new(Kind::Queue, &q.location, None, Op::Create)),
            Some(a) => {
                matched_queues.insert(&a.sid);
                queue_location.insert(&a.sid, &q.location);
                let mut diffs = Vec::new();
                diff(&mut diffs, "name", &a.friendly_name, &q.friendly_name);
                diff(&mut diffs, "target_workers", a.target_workers.as_deref().unwrap_or(""), &q.target_workers);
                if let Some(m) = a.max_reserved_workers {
                    diff(&mut diffs, "max_reserved_workers", &m.to_string(), &q.max_reserved_workers.to_string());
                }
                out.push(Change::new(Kind::Queue, &q.location, Some(&a.sid), update_or_unchanged(diffs)));
            }
        }
    }

    // Workers: matched by stored SID, else by name, else by marker,
    // location and index.
    let mut matched_workers: BTreeSet<&str> = BTreeSet::new();
    for w in &desired.workers {
        let free = |a: &&ActualWorker| !matched_workers.contains(a.worker.sid.as_str());
        let by_sid = stored(Kind::Worker, &w.key)
            .and_then(|sid| actual.workers.iter().filter(free).find(|a| a.worker.sid == sid));
        let found = by_sid
            .or_else(|| actual.workers.iter().filter(free).find(|a| a.worker.friendly_name == w.friendly_name))
            .or_else(|| {
                actual.workers.iter().filter(free).find(|a| {
                    a.is_marked() && a.location().as_deref() == Some(w.location.as_str()) && a.index() == w.index
                })
            });
        match found {
            None => {
                let mut c = Change::new(Kind::Worker, &w.key, None, Op::Create);
                c.note = Some(format!("capacity {}", w.capacity));
                out.push(c);
            }
            Some(a) => {
                matched_workers.insert(&a.worker.sid);
                out.push(Change::new(
                    Kind::Worker,
                    &w.key,
                    Some(&a.worker.sid),
                    update_or_unchanged(worker_diffs(w, a)),
                ));
            }
        }
    }
    // Marked workers of a location that is still here, beyond what its lines
    // need (lines went down, or a run that failed half-way made one twice).
    let wanted: BTreeSet<&str> = desired.workers.iter().map(|w| w.location.as_str()).collect();
    let surplus: Vec<&ActualWorker> = actual
        .workers
        .iter()
        .filter(|a| !matched_workers.contains(a.worker.sid.as_str()) && a.is_marked())
        .filter(|a| a.location().is_some_and(|l| wanted.contains(l.as_str())))
        .collect();
    for a in surplus {
        let key = worker_key(&a.location().unwrap_or_default(), a.index());
        out.push(Change::new(Kind::Worker, key, Some(&a.worker.sid), Op::Surplus));
        matched_workers.insert(&a.worker.sid);
    }

    // The workflow: pinned in the config, else stored, else by name.
    let workflow = actual
        .pinned_workflow
        .clone()
        .or_else(|| stored(Kind::Workflow, "main"))
        .and_then(|sid| actual.workflows.iter().find(|w| w.sid == sid))
        .or_else(|| actual.workflows.iter().find(|w| w.friendly_name == desired.workflow.friendly_name));
    match workflow {
        None => out.push(Change::new(Kind::Workflow, &desired.workflow.friendly_name, None, Op::Create)),
        Some(wf) => {
            let d = &desired.workflow;
            let mut diffs = Vec::new();
            diff(&mut diffs, "name", &wf.friendly_name, &d.friendly_name);
            diff(
                &mut diffs,
                "task_reservation_timeout",
                &wf.task_reservation_timeout.map(|t| t.to_string()).unwrap_or_default(),
                &d.reservation_timeout_secs.to_string(),
            );
            diffs.extend(route_diffs(d, wf.configuration.as_deref().unwrap_or(""), &queue_location));
            out.push(Change::new(Kind::Workflow, &d.friendly_name, Some(&wf.sid), update_or_unchanged(diffs)));
        }
    }

    // What is left over: marked resources are pruned (or noted), others
    // are only mentioned when pruning, to say they were left alone.
    let mut notes = Vec::new();
    for w in actual.workers.iter().filter(|a| !matched_workers.contains(a.worker.sid.as_str())) {
        let key = w.location().map(|l| worker_key(&l, w.index())).unwrap_or_else(|| w.worker.friendly_name.clone());
        if w.is_marked() {
            let op = if desired.prune { Op::Delete } else { Op::Orphan };
            let change = Change::new(Kind::Worker, key, Some(&w.worker.sid), op);
            if desired.prune { out.push(change) } else { notes.push(change) }
        } else if desired.prune {
            notes.push(Change::new(Kind::Worker, &w.worker.friendly_name, Some(&w.worker.sid), Op::Foreign));
        }
    }
    for q in actual.queues.iter().filter(|a| !matched_queues.contains(a.sid.as_str())) {
        match q.friendly_name.strip_prefix(&desired.prefix) {
            Some(location) => {
                let op = if desired.prune { Op::Delete } else { Op::Orphan };
                let change = Change::new(Kind::Queue, location, Some(&q.sid), op);
                if desired.prune { out.push(change) } else { notes.push(change) }
            }
            None if desired.prune => notes.push(Change::new(Kind::Queue, &q.friendly_name, Some(&q.sid), Op::Foreign)),
            None => {}
        }
    }

    // Numbers.
    for n in &desired.numbers {
        let key = n.number.as_str();
        match actual.numbers.get(key) {
            None | Some(Ok(None)) => out.push(Change::new(
                Kind::Number,
                key,
                None,
                Op::Invalid("not a number of this account (buy it, or fix the location's numbers)".into()),
            )),
            Some(Err(e)) => out.push(Change::new(Kind::Number, key, None, Op::Invalid(e.clone()))),
            Some(Ok(Some(a))) => {
                let mut diffs = Vec::new();
                diff(&mut diffs, "voice_url", a.voice_url.as_deref().unwrap_or(""), &n.voice_url);
                diff_method(&mut diffs, "voice_method", a.voice_method.as_deref());
                diff(&mut diffs, "status_callback", a.status_callback.as_deref().unwrap_or(""), &n.status_callback);
                diff(
                    &mut diffs,
                    "voice_fallback_url",
                    a.voice_fallback_url.as_deref().unwrap_or(""),
                    &n.voice_fallback_url,
                );
                diff_method(&mut diffs, "status_callback_method", a.status_callback_method.as_deref());
                // A voice application overrides VoiceUrl.
                if let Some(app) = a.voice_application_sid.as_deref().filter(|s| !s.is_empty()) {
                    diffs.push(Diff { field: "voice_application_sid".into(), from: app.into(), to: "(none)".into() });
                }
                out.push(Change::new(Kind::Number, key, Some(&a.sid), update_or_unchanged(diffs)));
            }
        }
    }
    out.extend(notes);
    out
}

fn show(s: &str) -> String {
    if s.is_empty() { "(none)".to_owned() } else { s.to_owned() }
}

fn diff(diffs: &mut Vec<Diff>, field: &str, from: &str, to: &str) {
    if from != to {
        diffs.push(Diff { field: field.into(), from: show(from), to: show(to) });
    }
}

fn diff_method(diffs: &mut Vec<Diff>, field: &str, from: Option<&str>) {
    if !from.is_some_and(|m| m.eq_ignore_ascii_case("POST")) {
        diffs.push(Diff { field: field.into(), from: show(from.unwrap_or("")), to: "POST".into() });
    }
}

fn update_or_unchanged(diffs: Vec<Diff>) -> Op {
    if diffs.is_empty() { Op::Unchanged } else { Op::Update(diffs) }
}

fn worker_diffs(w: &DesiredWorker, a: &ActualWorker) -> Vec<Diff> {
    let mut diffs = Vec::new();
    diff(&mut diffs, "name", &a.worker.friendly_name, &w.friendly_name);
    let attrs = a.attributes();
    for (k, v) in &w.attributes {
        let have = attrs.get(k).map(|v| v.to_string()).unwrap_or_default();
        diff(&mut diffs, &format!("attributes.{k}"), &have, &v.to_string());
    }
    diff(&mut diffs, "activity", a.worker.activity_name.as_deref().unwrap_or(""), &w.activity);
    match &a.voice {
        None => diffs.push(Diff { field: "voice channel".into(), from: "(missing)".into(), to: "(present)".into() }),
        Some(ch) => {
            let cap = ch.configured_capacity.map(|c| c.to_string()).unwrap_or_default();
            diff(&mut diffs, "capacity", &cap, &w.capacity.to_string());
            if ch.available == Some(false) {
                diffs.push(Diff { field: "voice channel available".into(), from: "false".into(), to: "true".into() });
            }
        }
    }
    diffs
}

/// The workflow's filters as `expression -> queue`, naming queues by
/// location where the queue is known.
fn route_diffs(d: &DesiredWorkflow, configuration: &str, queue_location: &BTreeMap<&str, &str>) -> Vec<Diff> {
    let config: Value = serde_json::from_str(configuration).unwrap_or(Value::Null);
    let mut have: BTreeMap<String, String> = BTreeMap::new();
    let filters = config.pointer("/task_routing/filters").and_then(Value::as_array).cloned().unwrap_or_default();
    for f in &filters {
        let expr = f.get("expression").and_then(Value::as_str).unwrap_or("").to_owned();
        let queues: Vec<String> = f
            .get("targets")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| Some((t.get("queue").and_then(Value::as_str)?, t.get("timeout"))))
                    .map(|(sid, timeout)| {
                        let queue = match queue_location.get(sid) {
                            Some(loc) => format!("queue {loc}"),
                            None => format!("queue {sid} (not ours or gone)"),
                        };
                        match timeout.and_then(Value::as_u64) {
                            Some(t) => format!("{queue} for {t} s"),
                            None => queue,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        have.insert(expr, queues.join("+"));
    }
    let default = config.pointer("/task_routing/default_filter").filter(|v| !v.is_null());
    let want: BTreeMap<String, String> = d.routes.iter().map(|r| (r.expression.clone(), r.shown())).collect();
    let mut diffs = Vec::new();
    for (expr, to) in &want {
        let from = have.get(expr).cloned().unwrap_or_default();
        diff(&mut diffs, &format!("route [{expr}]"), &from, to);
    }
    for (expr, from) in &have {
        if !want.contains_key(expr) {
            diffs.push(Diff { field: format!("route [{expr}]"), from: show(from), to: "(none)".into() });
        }
    }
    if let Some(def) = default {
        diffs.push(Diff { field: "default_filter".into(), from: def.to_string(), to: "(none)".into() });
    }
    diffs
}

// ===========================================================================
// The IO rim.
// ===========================================================================

/// Why provision stopped or failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The configuration or a stored location is invalid; nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// The current state could not be read; nothing was changed.
    #[error("reading the current state from Twilio: {0}")]
    Read(String),
    /// Some resources could not be provisioned; the others were.
    #[error("{failed} resource(s) could not be provisioned (see the lines starting with '!')")]
    Failed { failed: usize },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// What `provision` was asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub prune: bool,
}

/// The per-resource report, printed as it is written when `echo` is set.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub echo: bool,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub failed: usize,
}

impl Report {
    fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        if self.echo {
            println!("{line}");
        }
        self.lines.push(line);
    }

    fn fail(&mut self, kind: Kind, key: &str, why: impl fmt::Display) {
        self.failed += 1;
        self.say(format!("! {kind} {key}: {why}"));
    }

    /// Reports a change that was carried out (or found unnecessary), with
    /// the SID of what was created.
    fn done(&mut self, c: &Change, sid: &str) {
        match c.op {
            Op::Create => {
                self.created += 1;
                self.say(format!("{} ({sid})", c.line()));
                return;
            }
            Op::Update(_) => self.updated += 1,
            Op::Delete | Op::Surplus => self.deleted += 1,
            Op::Unchanged => self.unchanged += 1,
            _ => {}
        }
        self.say(c.line());
    }

    fn count_plan(&mut self, changes: &[Change]) {
        for c in changes {
            match c.op {
                Op::Create => self.created += 1,
                Op::Update(_) => self.updated += 1,
                Op::Delete | Op::Surplus => self.deleted += 1,
                Op::Unchanged => self.unchanged += 1,
                Op::Invalid(_) => self.failed += 1,
                Op::Orphan | Op::Foreign => {}
            }
        }
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Twilio's code and message when it sent them, else the whole error.
fn describe(e: &ApiError) -> String {
    match e {
        ApiError::Twilio { body, .. } => format!("Twilio error {}: {}", body.code, body.message),
        other => other.to_string(),
    }
}

/// `call-router provision`: loads the config, runs, prints, and turns
/// failures into an error for a non-zero exit status.
pub async fn run_command(config: Option<&Path>, options: Options) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    // A dry run writes nothing to the database either (see `dry_run_store`).
    let store = if options.dry_run {
        dry_run_store(&settings).await?
    } else {
        Store::connect_with(&settings.database_url, settings.database).await?
    };
    let mut report = Report { echo: true, ..Report::default() };
    run(&settings, &store, options, &mut report).await?;
    Ok(())
}

/// The store a dry run plans against, having written nothing: not a new database file, not
/// a migration. A database that does not exist yet, or has no tables yet, is planned against
/// as empty (in memory); one whose later migrations are not applied yet, as it is.
async fn dry_run_store(settings: &Settings) -> anyhow::Result<Store> {
    let url = &settings.database_url;
    let empty = || Store::connect_with("sqlite::memory:", settings.database);
    if let Some(path) = crate::store::sqlite_path(url)
        && !path.exists()
    {
        println!("dry run: {} does not exist yet; planning as if it were empty", path.display());
        return empty().await;
    }
    if url.contains(":memory:") {
        return Store::connect_with(url, settings.database).await;
    }
    let shown = crate::store::redact_url(url);
    match crate::check::schema_of(url).await? {
        crate::check::Schema::Current => Store::connect_with(url, settings.database).await,
        crate::check::Schema::Empty => {
            println!("dry run: {shown} has no tables yet (a real run creates them); planning as if it were empty");
            empty().await
        }
        crate::check::Schema::Behind(missing) => {
            println!(
                "dry run: {shown} lacks migrations {} (a real run applies them first); planning against it as it is",
                missing.join(", ")
            );
            Store::connect_unmigrated(url, settings.database).await
        }
    }
}

/// Checks the file's locations together with the database's, before
/// anything is written or sent. Returns every location to provision: the
/// database's, with the file's replacing those of the same name.
pub async fn checked_locations(settings: &Settings, store: &Store) -> Result<Vec<Location>, ProvisionError> {
    let stored = store.location_specs().await.context("reading locations from the database")?;
    let mut all: Vec<LocationSpec> =
        stored.into_iter().filter(|s| !settings.locations.iter().any(|f| f.name == s.name)).collect();
    all.extend(settings.locations.iter().cloned());
    let mut locations = Vec::new();
    for spec in &all {
        let from_file = settings.locations.iter().any(|f| f.name == spec.name);
        let loc = Location::from_spec(spec.clone()).map_err(|e| {
            let origin = if from_file { "config file" } else { "database" };
            ProvisionError::Invalid(format!("location {:?} ({origin}): {e}", spec.name))
        })?;
        locations.push(loc);
    }
    check_unique(&all).map_err(|e| ProvisionError::Invalid(format!("locations: {e}")))?;
    // Twilio limits FriendlyName to 64 characters; queues and workers are
    // named `<workspace_name>/<location>`, a location's further workers
    // `<workspace_name>/<location>/<n>`.
    let prefix = settings.provision.workspace_name.len() + 1;
    let longest = |l: &Location| {
        let workers = worker_shares(l.lines, settings.provision.worker_capacity).len() as u32;
        worker_key(&l.name, workers).len()
    };
    if let Some(long) = locations.iter().find(|l| prefix + longest(l) > 64) {
        let suffix = longest(long) - long.name.len();
        return Err(ProvisionError::Invalid(format!(
            "location {:?}: name: too long for Twilio's 64-character names once prefixed with \
             provision.workspace_name ({:?}){}; use at most {} characters",
            long.name,
            settings.provision.workspace_name,
            if suffix > 0 {
                let workers = worker_shares(long.lines, settings.provision.worker_capacity).len();
                format!(" and suffixed with its workers' numbers (up to /{workers})")
            } else {
                String::new()
            },
            64 - prefix - suffix
        )));
    }
    if locations.is_empty() {
        return Err(ProvisionError::Invalid(
            "locations: none in the config file or the database; add [[locations]] to the config".into(),
        ));
    }
    Ok(locations)
}

/// Refuses a public URL Twilio cannot reach when the base URLs are
/// Twilio's own: webhooks to a loopback address would never arrive.
pub fn check_public_url(settings: &Settings) -> Result<(), ProvisionError> {
    let real_twilio = settings.twilio.api_base_url == crate::config::DEFAULT_API_BASE_URL
        || settings.twilio.taskrouter_base_url == crate::config::DEFAULT_TASKROUTER_BASE_URL;
    let rest = settings.public_url.split_once("://").map_or(settings.public_url.as_str(), |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if real_twilio && loopback {
        return Err(ProvisionError::Invalid(format!(
            "public_url: {} is not reachable from Twilio; use the server's public address (or a tunnel)",
            settings.public_url
        )));
    }
    Ok(())
}

/// Provisions: check, read, plan, apply (unless dry run), report.
pub async fn run(
    settings: &Settings,
    store: &Store,
    options: Options,
    report: &mut Report,
) -> Result<(), ProvisionError> {
    check_public_url(settings)?;
    let locations = checked_locations(settings, store).await?;
    if !options.dry_run {
        crate::cli::import(store, &settings.locations).await.map_err(|e| ProvisionError::Invalid(format!("{e:#}")))?;
    }
    if options.prune {
        let in_file: BTreeSet<&str> = settings.locations.iter().map(|l| l.name.as_str()).collect();
        for l in locations.iter().filter(|l| !in_file.contains(l.name.as_str())) {
            report.say(format!(
                "note: location {} is in the database but not in the config file; it stays provisioned \
                 (remove it with `call-router locations remove {}` to prune it)",
                l.name, l.name
            ));
        }
    }
    let desired = Desired::new(settings, &locations, options.prune);
    let client = TwilioClient::new(&settings.twilio).context("building the Twilio client")?;
    let actual = read_actual(&client, settings, store, &desired).await?;
    let changes = plan(&desired, &actual);
    if options.dry_run {
        report.say("dry run: nothing will be written");
    }
    if options.dry_run {
        for c in &changes {
            report.say(c.line());
        }
        report.count_plan(&changes);
    } else {
        apply(&client, store, &desired, &actual, &changes, report).await?;
    }
    if report.created + report.updated + report.deleted + report.failed == 0 {
        report.say(format!("nothing to change ({} resources checked)", report.unchanged));
    } else {
        let verb = if options.dry_run { "would " } else { "" };
        report.say(format!(
            "summary: {verb}create {}, {verb}update {}, {verb}delete {}, {} unchanged, {} failed",
            report.created, report.updated, report.deleted, report.unchanged, report.failed
        ));
    }
    if report.failed > 0 {
        return Err(ProvisionError::Failed { failed: report.failed });
    }
    Ok(())
}

/// Reads everything `plan` compares, with GET requests only.
pub async fn read_actual(
    client: &TwilioClient,
    settings: &Settings,
    store: &Store,
    desired: &Desired,
) -> Result<Actual, ProvisionError> {
    let read = |e: ApiError| ProvisionError::Read(describe_full(&e));
    let mut actual = Actual {
        stored: store
            .resources()
            .await
            .context("reading resource SIDs from the database")?
            .into_iter()
            .map(|(kind, key, sid)| ((kind, key), sid))
            .collect(),
        pinned_workflow: settings.twilio.workflow_sid.as_ref().map(|s| s.to_string()),
        ..Actual::default()
    };

    // The workspace: pinned in the config, else stored, else by name.
    if let Some(pinned) = &settings.twilio.workspace_sid {
        match client.fetch_workspace(pinned.as_str()).await {
            Ok(ws) => actual.workspace = Some(ws),
            Err(e) if e.status() == Some(404) => {
                return Err(ProvisionError::Invalid(format!(
                    "twilio.workspace_sid: workspace {pinned} does not exist"
                )));
            }
            Err(e) => return Err(read(e)),
        }
    }
    if actual.workspace.is_none()
        && let Some(sid) = actual.stored.get(&("workspace".to_owned(), "main".to_owned()))
    {
        match client.fetch_workspace(sid).await {
            Ok(ws) => actual.workspace = Some(ws),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(read(e)),
        }
    }
    if actual.workspace.is_none() {
        let name = &desired.workspace.friendly_name;
        let mut found: Vec<WorkspaceResource> = client
            .list_workspaces(Some(name))
            .await
            .map_err(read)?
            .into_iter()
            .filter(|w| &w.friendly_name == name)
            .collect();
        if found.len() > 1 {
            return Err(ProvisionError::Invalid(format!(
                "provision.workspace_name: {} workspaces are named {name:?}; set twilio.workspace_sid to the one to use",
                found.len()
            )));
        }
        actual.workspace = found.pop();
    }

    if let Some(ws) = actual.workspace.clone() {
        let ws = ws.sid.as_str();
        actual.activities = client.list_activities(ws).await.map_err(read)?;
        actual.queues = client.list_task_queues(ws).await.map_err(read)?;
        actual.workflows = client.list_workflows(ws).await.map_err(read)?;
        // The server uses a pinned workflow over the database's, so one
        // that is not there cannot be replaced by a new one.
        if let Some(pinned) = &actual.pinned_workflow
            && !actual.workflows.iter().any(|w| &w.sid == pinned)
        {
            return Err(ProvisionError::Invalid(format!(
                "twilio.workflow_sid: workflow {pinned} is not in workspace {ws}"
            )));
        }
        let stored_workers: BTreeSet<&String> =
            actual.stored.iter().filter(|((k, _), _)| k == "worker").map(|(_, sid)| sid).collect();
        for worker in client.list_workers(ws).await.map_err(read)? {
            let mut w = ActualWorker { worker, voice: None };
            // Channels are read only for workers provision may touch.
            let candidate = w.is_marked()
                || w.worker.friendly_name.starts_with(&desired.prefix)
                || stored_workers.contains(&w.worker.sid);
            if candidate {
                let channels = client.list_worker_channels(ws, &w.worker.sid).await.map_err(read)?;
                w.voice = channels.into_iter().find(|c| c.task_channel_unique_name.as_deref() == Some("voice"));
            }
            actual.workers.push(w);
        }
    }

    for n in &desired.numbers {
        let found = match client.find_incoming_numbers(&n.number).await {
            Ok(mut v) => Ok(v.pop()),
            Err(e) => Err(describe(&e)),
        };
        actual.numbers.insert(n.number.as_str().to_owned(), found);
    }
    Ok(actual)
}

fn describe_full(e: &ApiError) -> String {
    match e {
        ApiError::Twilio { method, path, body } => {
            format!("{method} {}: Twilio error {}: {}", path.split('?').next().unwrap_or(path), body.code, body.message)
        }
        other => other.to_string(),
    }
}

/// SIDs known so far while applying, for the resources that depend on them.
#[derive(Default)]
struct Resolved {
    workspace: Option<String>,
    activities: BTreeMap<String, String>,
    queues: BTreeMap<String, String>,
    /// Twilio's activities of a workspace it just created, read once.
    fresh_activities: Option<Vec<ActivityResource>>,
}

async fn remember(store: &Store, actual: &Actual, kind: Kind, key: &str, sid: &str) -> anyhow::Result<()> {
    let before = actual.stored.get(&(kind.as_str().to_owned(), key.to_owned()));
    if before.is_some_and(|b| b != sid) && matches!(kind, Kind::Workspace | Kind::Workflow) {
        // A running server caches these two SIDs.
        tracing::warn!(%kind, "{kind} SID changed; restart `call-router serve` to use the new one");
    }
    if before.map(String::as_str) != Some(sid) {
        store
            .set_resource(kind.as_str(), key, sid)
            .await
            .with_context(|| format!("storing the SID of {kind} {key}"))?;
    }
    Ok(())
}

/// Applies the changes in order; a failure is reported and the
/// independent resources still go ahead.
async fn apply(
    client: &TwilioClient,
    store: &Store,
    desired: &Desired,
    actual: &Actual,
    changes: &[Change],
    report: &mut Report,
) -> Result<(), ProvisionError> {
    let mut r = Resolved::default();
    let ws_change = changes.iter().find(|c| c.kind == Kind::Workspace).cloned();
    let workspace_params = |with_timeout: Option<&str>| {
        let d = &desired.workspace;
        let mut p = Params::new();
        p.push("FriendlyName", &d.friendly_name)
            .push("EventCallbackUrl", &d.event_callback_url)
            .push("EventsFilter", d.events_filter.join(","))
            .push("MultiTaskEnabled", "true");
        p.push_opt("TimeoutActivitySid", with_timeout);
        p
    };

    // 1. The workspace exists (its settings that need activities come after them).
    if let Some(c) = &ws_change {
        match &c.op {
            Op::Create => match client.create_workspace(&workspace_params(None)).await {
                Ok(ws) => {
                    remember(store, actual, Kind::Workspace, "main", &ws.sid).await?;
                    report.done(c, &ws.sid);
                    r.workspace = Some(ws.sid);
                }
                Err(e) => report.fail(Kind::Workspace, &c.key, describe(&e)),
            },
            _ => {
                if let Some(sid) = &c.sid {
                    remember(store, actual, Kind::Workspace, "main", sid).await?;
                    r.workspace = c.sid.clone();
                    if c.op == Op::Unchanged {
                        report.done(c, sid);
                    }
                }
            }
        }
    }

    for c in changes {
        if c.kind == Kind::Number {
            apply_number(client, store, desired, actual, c, report).await?;
            continue;
        }
        if matches!(c.op, Op::Orphan | Op::Foreign) {
            report.say(c.line());
            continue;
        }
        if c.kind == Kind::Workspace {
            continue;
        }
        let Some(ws) = r.workspace.clone() else {
            report.fail(c.kind, &c.key, "skipped: the workspace could not be provisioned");
            continue;
        };
        match c.kind {
            Kind::Activity => {
                apply_activity(client, store, actual, c, &ws, &mut r, report).await?;
                // Once every activity is known, the workspace's own settings.
                let last = changes.iter().rposition(|x| x.kind == Kind::Activity).map(|i| std::ptr::eq(&changes[i], c));
                if last == Some(true)
                    && let Some(wc) = &ws_change
                {
                    apply_workspace_settings(client, wc, &ws, &r, report, &workspace_params).await;
                }
            }
            Kind::Queue => apply_queue(client, store, desired, actual, c, &ws, &mut r, report).await?,
            Kind::Worker => apply_worker(client, store, desired, actual, c, &ws, &r, report).await?,
            Kind::Workflow => apply_workflow(client, store, desired, actual, c, &ws, &r, report).await?,
            Kind::Workspace | Kind::Number => {}
        }
    }
    Ok(())
}

async fn apply_workspace_settings(
    client: &TwilioClient,
    c: &Change,
    ws: &str,
    r: &Resolved,
    report: &mut Report,
    params: &impl Fn(Option<&str>) -> Params,
) {
    if matches!(c.op, Op::Unchanged) {
        return;
    }
    // A new workspace gets its timeout activity here, once the activities
    // are known; its creation was already reported.
    let Some(timeout) = r.activities.get(AVAILABLE) else {
        report.fail(Kind::Workspace, &c.key, format!("no {AVAILABLE} activity for its timeout activity"));
        return;
    };
    match client.update_workspace(ws, &params(Some(timeout))).await {
        Ok(_) if c.op == Op::Create => {}
        Ok(_) => report.done(c, ws),
        Err(e) => report.fail(
            Kind::Workspace,
            &c.key,
            format!("setting its timeout activity and callbacks: {}", describe(&e)),
        ),
    }
}

async fn apply_activity(
    client: &TwilioClient,
    store: &Store,
    actual: &Actual,
    c: &Change,
    ws: &str,
    r: &mut Resolved,
    report: &mut Report,
) -> Result<(), ProvisionError> {
    if let Some(sid) = &c.sid {
        r.activities.insert(c.key.clone(), sid.clone());
        remember(store, actual, Kind::Activity, &c.key.to_ascii_lowercase(), sid).await?;
        report.done(c, sid);
        return Ok(());
    }
    // A new workspace comes with Twilio's activities: reuse them.
    if r.fresh_activities.is_none() {
        match client.list_activities(ws).await {
            Ok(list) => r.fresh_activities = Some(list),
            Err(e) => {
                report.fail(Kind::Activity, &c.key, describe(&e));
                return Ok(());
            }
        }
    }
    let existing = r.fresh_activities.as_ref().and_then(|l| l.iter().find(|a| a.friendly_name == c.key)).cloned();
    let available = ACTIVITIES.iter().find(|(n, _)| *n == c.key).is_some_and(|(_, a)| *a);
    let result = match existing {
        Some(a) => Ok((a, false)),
        None => client.create_activity(ws, &c.key, available).await.map(|a| (a, true)),
    };
    match result {
        Ok((a, created)) => {
            remember(store, actual, Kind::Activity, &c.key.to_ascii_lowercase(), &a.sid).await?;
            if created {
                report.done(c, &a.sid);
            } else {
                report.unchanged += 1;
                report.say(format!("= activity {} (created with the workspace)", c.key));
            }
            r.activities.insert(c.key.clone(), a.sid);
        }
        Err(e) => report.fail(Kind::Activity, &c.key, describe(&e)),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn apply_queue(
    client: &TwilioClient,
    store: &Store,
    desired: &Desired,
    actual: &Actual,
    c: &Change,
    ws: &str,
    r: &mut Resolved,
    report: &mut Report,
) -> Result<(), ProvisionError> {
    if c.op == Op::Delete {
        let sid = c.sid.as_deref().unwrap_or_default();
        let marked = actual.queues.iter().any(|q| q.sid == sid && q.friendly_name.starts_with(&desired.prefix));
        return delete_marked(store, actual, c, Kind::Queue, marked, client.delete_task_queue(ws, sid), report).await;
    }
    let Some(q) = desired.queues.iter().find(|q| q.location == c.key) else {
        return Ok(());
    };
    let mut p = Params::new();
    p.push("FriendlyName", &q.friendly_name)
        .push("TargetWorkers", &q.target_workers)
        .push("MaxReservedWorkers", q.max_reserved_workers.to_string());
    let result = match (&c.op, &c.sid) {
        (Op::Create, _) => client.create_task_queue(ws, &p).await.map(|x| x.sid),
        (Op::Update(_), Some(sid)) => client.update_task_queue(ws, sid, &p).await.map(|x| x.sid),
        (_, Some(sid)) => Ok(sid.clone()),
        (_, None) => return Ok(()),
    };
    match result {
        Ok(sid) => {
            remember(store, actual, Kind::Queue, &c.key, &sid).await?;
            report.done(c, &sid);
            r.queues.insert(c.key.clone(), sid);
        }
        Err(e) => {
            // An update that failed leaves a queue the workflow can still use.
            if let Some(sid) = &c.sid {
                r.queues.insert(c.key.clone(), sid.clone());
            }
            report.fail(Kind::Queue, &c.key, describe(&e));
        }
    }
    Ok(())
}

/// Deletes a resource of a location that is gone, but only when it carries call-router's
/// mark, checked again right before deleting. `delete` is the request, not yet sent.
async fn delete_marked(
    store: &Store,
    actual: &Actual,
    c: &Change,
    kind: Kind,
    marked: bool,
    delete: impl std::future::Future<Output = Result<(), ApiError>>,
    report: &mut Report,
) -> Result<(), ProvisionError> {
    let sid = c.sid.as_deref().unwrap_or_default();
    if !marked {
        report.fail(kind, &c.key, "not deleted: it does not carry call-router's mark");
        return Ok(());
    }
    match delete.await {
        Ok(()) => {
            forget(store, actual, kind, &c.key, sid).await?;
            report.done(c, sid);
        }
        Err(e) => report.fail(kind, &c.key, describe(&e)),
    }
    Ok(())
}

async fn forget(store: &Store, actual: &Actual, kind: Kind, key: &str, sid: &str) -> anyhow::Result<()> {
    if actual.stored.get(&(kind.as_str().to_owned(), key.to_owned())).map(String::as_str) == Some(sid) {
        store.remove_resource(kind.as_str(), key).await.with_context(|| format!("forgetting {kind} {key}"))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn apply_worker(
    client: &TwilioClient,
    store: &Store,
    desired: &Desired,
    actual: &Actual,
    c: &Change,
    ws: &str,
    r: &Resolved,
    report: &mut Report,
) -> Result<(), ProvisionError> {
    if c.op == Op::Delete {
        let sid = c.sid.as_deref().unwrap_or_default();
        let marked = actual.workers.iter().any(|w| w.worker.sid == sid && w.is_marked());
        return delete_marked(store, actual, c, Kind::Worker, marked, client.delete_worker(ws, sid), report).await;
    }
    if c.op == Op::Surplus {
        let sid = c.sid.as_deref().unwrap_or_default();
        let Some(a) = actual.workers.iter().find(|w| w.worker.sid == sid && w.is_marked()) else {
            report.fail(Kind::Worker, &c.key, "not deleted: it does not carry call-router's mark");
            return Ok(());
        };
        // No new call for it while it is deleted (or if Twilio refuses to
        // delete it while it still has one).
        if let Some(ch) = a.voice.as_ref().filter(|ch| ch.available != Some(false)) {
            let mut p = Params::new();
            p.push("Available", "false");
            if let Err(e) = client.update_worker_channel(ws, sid, &ch.sid, &p).await {
                report.fail(Kind::Worker, &c.key, format!("not deleted: closing its voice channel: {}", describe(&e)));
                return Ok(());
            }
        }
        return delete_marked(store, actual, c, Kind::Worker, true, client.delete_worker(ws, sid), report).await;
    }
    let Some(w) = desired.workers.iter().find(|w| w.key == c.key) else {
        return Ok(());
    };
    let Some(available) = r.activities.get(&w.activity) else {
        report.fail(Kind::Worker, &c.key, format!("skipped: no {} activity", w.activity));
        return Ok(());
    };
    let existing = c.sid.as_ref().and_then(|sid| actual.workers.iter().find(|a| &a.worker.sid == sid));
    // Attributes a person added to the worker are kept.
    let mut attributes = existing.map(ActualWorker::attributes).unwrap_or_default();
    attributes.extend(w.attributes.clone());
    let attributes = Value::Object(attributes).to_string();
    let result: Result<String, ApiError> = async {
        let (sid, channel) = match (&c.op, existing) {
            (Op::Create, _) => {
                let mut p = Params::new();
                p.push("FriendlyName", &w.friendly_name).push("ActivitySid", available).push("Attributes", &attributes);
                (client.create_worker(ws, &p).await?.sid, None)
            }
            (Op::Update(diffs), Some(a)) => {
                let mut p = Params::new();
                if diffs.iter().any(|d| d.field == "name") {
                    p.push("FriendlyName", &w.friendly_name);
                }
                if diffs.iter().any(|d| d.field.starts_with("attributes.")) {
                    p.push("Attributes", &attributes);
                }
                if diffs.iter().any(|d| d.field == "activity") {
                    p.push("ActivitySid", available);
                }
                if !p.is_empty() {
                    client.update_worker(ws, &a.worker.sid, &p).await?;
                }
                (a.worker.sid.clone(), a.voice.clone())
            }
            (_, Some(a)) => return Ok(a.worker.sid.clone()),
            (_, None) => return Ok(String::new()),
        };
        // The voice channel: a new worker's is read after creating it.
        let channel = match channel {
            Some(ch) => Some(ch),
            None => client
                .list_worker_channels(ws, &sid)
                .await?
                .into_iter()
                .find(|ch| ch.task_channel_unique_name.as_deref() == Some("voice")),
        };
        let Some(ch) = channel else {
            return Err(ApiError::Decode {
                method: "GET",
                path: format!("/v1/Workspaces/{ws}/Workers/{sid}/Channels"),
                message: "the worker has no voice channel".into(),
            });
        };
        if ch.configured_capacity != Some(w.capacity) || ch.available == Some(false) {
            let mut p = Params::new();
            p.push("Capacity", w.capacity.to_string()).push("Available", "true");
            client.update_worker_channel(ws, &sid, &ch.sid, &p).await?;
        }
        Ok(sid)
    }
    .await;
    match result {
        Ok(sid) if !sid.is_empty() => {
            remember(store, actual, Kind::Worker, &c.key, &sid).await?;
            report.done(c, &sid);
        }
        Ok(_) => {}
        Err(e) => report.fail(Kind::Worker, &c.key, describe(&e)),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn apply_workflow(
    client: &TwilioClient,
    store: &Store,
    desired: &Desired,
    actual: &Actual,
    c: &Change,
    ws: &str,
    r: &Resolved,
    report: &mut Report,
) -> Result<(), ProvisionError> {
    if c.op == Op::Unchanged {
        if let Some(sid) = &c.sid {
            remember(store, actual, Kind::Workflow, "main", sid).await?;
        }
        report.done(c, "");
        return Ok(());
    }
    // Routing to a queue that does not exist would lose callers: a workflow
    // is only written when every location's queue is there.
    let params = match desired.workflow_params(&r.queues) {
        Ok(p) => p,
        Err(why) => {
            report.fail(Kind::Workflow, &c.key, format!("skipped: {why} (its queue could not be provisioned)"));
            return Ok(());
        }
    };
    let result = match (&c.op, &c.sid) {
        (Op::Create, _) => client.create_workflow(ws, &params).await.map(|w| w.sid),
        (_, Some(sid)) => client.update_workflow(ws, sid, &params).await.map(|w| w.sid),
        (_, None) => return Ok(()),
    };
    match result {
        Ok(sid) => {
            remember(store, actual, Kind::Workflow, "main", &sid).await?;
            report.done(c, &sid);
        }
        Err(e) => report.fail(Kind::Workflow, &c.key, describe(&e)),
    }
    Ok(())
}

async fn apply_number(
    client: &TwilioClient,
    store: &Store,
    desired: &Desired,
    actual: &Actual,
    c: &Change,
    report: &mut Report,
) -> Result<(), ProvisionError> {
    let sid = match (&c.op, &c.sid) {
        (Op::Invalid(why), _) => {
            report.fail(Kind::Number, &c.key, why);
            return Ok(());
        }
        (_, Some(sid)) => sid.clone(),
        (_, None) => return Ok(()),
    };
    if let Op::Update(diffs) = &c.op {
        let Some(n) = desired.numbers.iter().find(|n| n.number.as_str() == c.key) else {
            return Ok(());
        };
        let mut p = Params::new();
        p.push("VoiceUrl", &n.voice_url)
            .push("VoiceMethod", "POST")
            .push("StatusCallback", &n.status_callback)
            .push("StatusCallbackMethod", "POST")
            .push("VoiceFallbackUrl", &n.voice_fallback_url)
            .push("VoiceFallbackMethod", "POST");
        if diffs.iter().any(|d| d.field == "voice_application_sid") {
            p.push("VoiceApplicationSid", "");
        }
        if let Err(e) = client.update_incoming_number(&sid, &p).await {
            report.fail(Kind::Number, &c.key, describe(&e));
            return Ok(());
        }
    }
    remember(store, actual, Kind::Number, &c.key, &sid).await?;
    report.done(c, &sid);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WORKER_CAPACITY_MAX;

    fn settings() -> Settings {
        Settings::from_toml(
            r#"
public_url = "https://router.example.com"
[twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "secret"
"#,
            |_| None,
        )
        .unwrap()
    }

    /// The desired state, built by hand so that these tests need no
    /// numbering plan or hours parsing.
    fn desired(locations: &[(&str, u32)], prune: bool) -> Desired {
        let prefix = "call-router/".to_owned();
        let expr = |l: &str| format!("location == \"{l}\"");
        Desired {
            prefix: prefix.clone(),
            prune,
            workspace: DesiredWorkspace {
                friendly_name: "call-router".into(),
                event_callback_url: "https://r/tr-event-handler".into(),
                events_filter: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
                timeout_activity: AVAILABLE.into(),
            },
            queues: locations
                .iter()
                .map(|(l, _)| DesiredQueue {
                    location: (*l).into(),
                    friendly_name: format!("{prefix}{l}"),
                    target_workers: expr(l),
                    max_reserved_workers: 1,
                })
                .collect(),
            workers: locations
                .iter()
                .flat_map(|(l, lines)| {
                    let prefix = prefix.clone();
                    worker_shares(*lines, WORKER_CAPACITY_MAX).into_iter().zip(1u32..).map(move |(capacity, index)| {
                        let mut attributes = json!({"location": l, "phone": "+14155550123", "managed_by": MANAGED_BY});
                        if index > 1 {
                            attributes[WORKER_INDEX] = json!(index);
                        }
                        DesiredWorker {
                            location: (*l).into(),
                            index,
                            key: worker_key(l, index),
                            friendly_name: format!("{prefix}{}", worker_key(l, index)),
                            attributes: attributes.as_object().cloned().unwrap(),
                            activity: AVAILABLE.into(),
                            capacity,
                        }
                    })
                })
                .collect(),
            workflow: DesiredWorkflow {
                friendly_name: format!("{prefix}by-location"),
                routes: locations
                    .iter()
                    .map(|(l, _)| Route { location: (*l).into(), expression: expr(l), overflow: None })
                    .collect(),
                reservation_timeout_secs: 65,
            },
            numbers: vec![DesiredNumber {
                number: E164::parse("+12025550143").unwrap(),
                voice_url: "https://r/incoming-call".into(),
                status_callback: "https://r/status-callback".into(),
                voice_fallback_url: String::new(),
            }],
        }
    }

    /// An actual state exactly like `d`.
    fn in_sync(d: &Desired) -> Actual {
        let activities: Vec<ActivityResource> = ACTIVITIES
            .iter()
            .enumerate()
            .map(|(i, (n, a))| ActivityResource { sid: format!("WA{i}"), friendly_name: (*n).into(), available: *a })
            .collect();
        let queues: Vec<TaskQueueResource> = d
            .queues
            .iter()
            .map(|q| TaskQueueResource {
                sid: format!("WQ-{}", q.location),
                friendly_name: q.friendly_name.clone(),
                target_workers: Some(q.target_workers.clone()),
                max_reserved_workers: Some(1),
            })
            .collect();
        let workers = d
            .workers
            .iter()
            .map(|w| ActualWorker {
                worker: WorkerResource {
                    sid: format!("WK-{}", w.key),
                    friendly_name: w.friendly_name.clone(),
                    attributes: Some(Value::Object(w.attributes.clone()).to_string()),
                    activity_sid: Some("WA0".into()),
                    activity_name: Some(AVAILABLE.into()),
                },
                voice: Some(WorkerChannelResource {
                    sid: format!("WC-{}", w.key),
                    task_channel_unique_name: Some("voice".into()),
                    configured_capacity: Some(w.capacity),
                    available: Some(true),
                }),
            })
            .collect();
        let qsids: BTreeMap<String, String> = queues.iter().map(|q| (q.sid[3..].to_owned(), q.sid.clone())).collect();
        let config = d.workflow_params(&qsids).unwrap().get("Configuration").unwrap().to_owned();
        Actual {
            workspace: Some(WorkspaceResource {
                sid: "WS1".into(),
                friendly_name: "call-router".into(),
                event_callback_url: Some(d.workspace.event_callback_url.clone()),
                // Twilio may echo the list in another order, with spaces.
                events_filter: Some(EVENTS.iter().rev().copied().collect::<Vec<_>>().join(", ")),
                multi_task_enabled: Some(true),
                timeout_activity_sid: Some("WA0".into()),
                timeout_activity_name: None,
            }),
            activities,
            queues,
            workers,
            workflows: vec![WorkflowResource {
                sid: "WW1".into(),
                friendly_name: d.workflow.friendly_name.clone(),
                configuration: Some(config),
                task_reservation_timeout: Some(d.workflow.reservation_timeout_secs),
            }],
            numbers: d
                .numbers
                .iter()
                .map(|n| {
                    (
                        n.number.as_str().to_owned(),
                        Ok(Some(IncomingNumberResource {
                            sid: "PN1".into(),
                            phone_number: n.number.as_str().into(),
                            voice_url: Some(n.voice_url.clone()),
                            voice_method: Some("POST".into()),
                            status_callback: Some(n.status_callback.clone()),
                            status_callback_method: Some("POST".into()),
                            voice_fallback_url: Some(n.voice_fallback_url.clone()),
                            voice_application_sid: None,
                        })),
                    )
                })
                .collect(),
            stored: BTreeMap::new(),
            pinned_workflow: None,
        }
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes.iter().map(Change::line).collect()
    }

    fn worker<'a>(a: &'a mut Actual, loc: &str) -> &'a mut ActualWorker {
        a.workers.iter_mut().find(|w| w.worker.sid == format!("WK-{loc}")).unwrap()
    }

    #[test]
    fn in_sync_state_changes_nothing() {
        let d = desired(&[("north", 1), ("south", 2)], false);
        let changes = plan(&d, &in_sync(&d));
        assert!(changes.iter().all(|c| c.op == Op::Unchanged), "{:#?}", lines(&changes));
        assert_eq!(changes.len(), 1 + 3 + 2 + 2 + 1 + 1);
    }

    #[test]
    fn empty_account_creates_everything_in_dependency_order() {
        let d = desired(&[("north", 1)], false);
        let a = Actual { numbers: in_sync(&d).numbers, ..Actual::default() };
        let got: Vec<(Kind, Op)> = plan(&d, &a).into_iter().map(|c| (c.kind, c.op)).collect();
        let want = vec![
            (Kind::Workspace, Op::Create),
            (Kind::Activity, Op::Create),
            (Kind::Activity, Op::Create),
            (Kind::Activity, Op::Create),
            (Kind::Queue, Op::Create),
            (Kind::Worker, Op::Create),
            (Kind::Workflow, Op::Create),
            (Kind::Number, Op::Unchanged),
        ];
        assert_eq!(got, want);
    }

    /// Drift: (what a person changed, the line provision prints).
    #[test]
    fn drift_is_shown_field_by_field() {
        type Mutate = fn(&mut Actual);
        let cases: Vec<(&str, Mutate, &str)> = vec![
            (
                "worker set offline by hand",
                |a| worker(a, "north").worker.activity_name = Some("Offline".into()),
                "~ update worker north: activity Offline -> Available",
            ),
            (
                "capacity changed",
                |a| worker(a, "north").voice.as_mut().unwrap().configured_capacity = Some(3),
                "~ update worker north: capacity 3 -> 1",
            ),
            (
                "voice channel switched off",
                |a| worker(a, "north").voice.as_mut().unwrap().available = Some(false),
                "~ update worker north: voice channel available false -> true",
            ),
            (
                "attribute changed",
                |a| {
                    worker(a, "north").worker.attributes =
                        Some(r#"{"location":"north","phone":"+1","managed_by":"call-router"}"#.into())
                },
                "~ update worker north: attributes.phone \"+1\" -> \"+14155550123\"",
            ),
            (
                "voice url changed",
                |a| {
                    let n = a.numbers.values_mut().next().unwrap().as_mut().unwrap().as_mut().unwrap();
                    n.voice_url = Some("https://old/voice".into());
                },
                "~ update number +12025550143: voice_url https://old/voice -> https://r/incoming-call",
            ),
            (
                "voice application set",
                |a| {
                    let n = a.numbers.values_mut().next().unwrap().as_mut().unwrap().as_mut().unwrap();
                    n.voice_application_sid = Some("AP1".into());
                },
                "~ update number +12025550143: voice_application_sid AP1 -> (none)",
            ),
            (
                "event callback changed",
                |a| a.workspace.as_mut().unwrap().event_callback_url = Some("https://old/x".into()),
                "~ update workspace call-router: event_callback_url https://old/x -> https://r/tr-event-handler",
            ),
            (
                "timeout activity offline",
                |a| a.workspace.as_mut().unwrap().timeout_activity_sid = Some("WA1".into()),
                "~ update workspace call-router: timeout_activity Offline -> Available",
            ),
            (
                "queue expression changed",
                |a| a.queues[0].target_workers = Some("1 == 1".into()),
                "~ update queue north: target_workers 1 == 1 -> location == \"north\"",
            ),
            (
                "reservation timeout changed",
                |a| a.workflows[0].task_reservation_timeout = Some(120),
                "~ update workflow call-router/by-location: task_reservation_timeout 120 -> 65",
            ),
        ];
        for (name, mutate, want) in cases {
            let d = desired(&[("north", 1)], false);
            let mut a = in_sync(&d);
            mutate(&mut a);
            let got = lines(&plan(&d, &a));
            assert!(got.iter().any(|l| l == want), "{name}: {got:#?}");
            assert_eq!(got.iter().filter(|l| !l.starts_with('=')).count(), 1, "{name}: {got:#?}");
        }
    }

    #[test]
    fn a_deleted_queue_is_recreated_and_the_workflow_repointed() {
        let d = desired(&[("north", 1), ("south", 1)], false);
        let mut a = in_sync(&d);
        a.queues.retain(|q| q.sid != "WQ-south");
        let got = lines(&plan(&d, &a));
        assert!(got.contains(&"+ create queue south".to_owned()), "{got:#?}");
        let wf = got.iter().find(|l| l.contains("workflow")).unwrap();
        assert!(wf.contains("route [location == \"south\"] queue WQ-south (not ours or gone) -> queue south"), "{wf}");
    }

    #[test]
    fn extra_attributes_and_case_of_methods_are_not_drift() {
        let d = desired(&[("north", 1)], false);
        let mut a = in_sync(&d);
        worker(&mut a, "north").worker.attributes = Some(
            r#"{"managed_by":"call-router","phone":"+14155550123","location":"north","note":"front desk"}"#.into(),
        );
        a.numbers.values_mut().next().unwrap().as_mut().unwrap().as_mut().unwrap().voice_method = Some("post".into());
        assert!(plan(&d, &a).iter().all(|c| c.op == Op::Unchanged));
    }

    #[test]
    fn prune_deletes_only_marked_resources_of_gone_locations() {
        let before = desired(&[("north", 1), ("old", 1)], false);
        let mut a = in_sync(&before);
        // A worker and a queue made by hand, which provision must not touch.
        a.workers.push(ActualWorker {
            worker: WorkerResource {
                sid: "WK-bob".into(),
                friendly_name: "bob".into(),
                attributes: Some(r#"{"location":"old"}"#.into()),
                activity_sid: None,
                activity_name: Some("Offline".into()),
            },
            voice: None,
        });
        a.queues.push(TaskQueueResource {
            sid: "WQ-hand".into(),
            friendly_name: "support".into(),
            target_workers: None,
            max_reserved_workers: None,
        });

        let without = lines(&plan(&desired(&[("north", 1)], false), &a));
        assert!(without.contains(&"? worker old: its location is gone; run with --prune to delete it".to_owned()));
        assert!(!without.iter().any(|l| l.starts_with('-') || l.contains("bob")), "{without:#?}");

        let with = plan(&desired(&[("north", 1)], true), &a);
        let deleted: Vec<_> = with.iter().filter(|c| c.op == Op::Delete).map(|c| c.sid.clone().unwrap()).collect();
        assert_eq!(deleted, ["WK-old", "WQ-old"]);
        let kept: Vec<_> = with.iter().filter(|c| c.op == Op::Foreign).map(|c| c.sid.clone().unwrap()).collect();
        assert_eq!(kept, ["WK-bob", "WQ-hand"]);
        // Deletions come after the workflow stops routing to the queue.
        let wf = with.iter().position(|c| c.kind == Kind::Workflow).unwrap();
        let first_delete = with.iter().position(|c| c.op == Op::Delete).unwrap();
        assert!(wf < first_delete);
        assert!(matches!(&with[wf].op, Op::Update(d) if d.iter().any(|d| d.to == "(none)")));
    }

    #[test]
    fn stored_sids_win_over_names() {
        let d = desired(&[("north", 1)], false);
        let mut a = in_sync(&d);
        // Renamed by hand; the database still knows it.
        a.queues[0].friendly_name = "renamed".into();
        a.stored.insert(("queue".into(), "north".into()), "WQ-north".into());
        let got = lines(&plan(&d, &a));
        assert!(got.contains(&"~ update queue north: name renamed -> call-router/north".to_owned()), "{got:#?}");
    }

    #[test]
    fn unowned_number_is_an_error_for_that_number_only() {
        let d = desired(&[("north", 1)], false);
        let mut a = in_sync(&d);
        a.numbers.insert("+12025550143".into(), Ok(None));
        let changes = plan(&d, &a);
        let bad: Vec<_> = changes.iter().filter(|c| matches!(c.op, Op::Invalid(_))).collect();
        assert_eq!(bad.len(), 1);
        assert!(bad[0].line().starts_with("! number +12025550143: not a number of this account"), "{}", bad[0].line());
    }

    #[test]
    fn desired_state_follows_the_settings() {
        let s = settings();
        let built = Desired::new(&s, &[], false);
        // Webhook URLs carry the connection overrides, so Twilio retries through a restart.
        assert_eq!(built.workspace.event_callback_url, "https://router.example.com/tr-event-handler#rc=3&rp=ct,5xx");
        assert_eq!(built.workspace.events_filter.len(), EVENTS.len());
        // Ring time plus answering-machine detection, with a margin.
        assert_eq!(built.workflow.reservation_timeout_secs, 20 + 30 + RESERVATION_MARGIN_SECS);
        assert_eq!(built.prefix, "call-router/");
        assert_eq!(built.workflow.friendly_name, "call-router/by-location");
    }

    #[test]
    fn phones_rung_in_order_lengthen_the_reservation_timeout_and_the_plan_says_so() {
        let built = |phones: &[&str], ring: &str| {
            let list: Vec<String> = phones.iter().map(|p| format!("{p:?}")).collect();
            let text = format!(
                "public_url = \"https://router.example.com\"\n[twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
                 auth_token = \"secret\"\n[[locations]]\nname = \"north\"\nnumbers = [\"+12025550143\"]\n\
                 phones = [{}]\nring = {ring:?}\nhours = {{ time_zone = \"UTC\" }}\n",
                list.join(", ")
            );
            let s = Settings::from_toml(&text, |_| None).unwrap();
            let locations: Vec<Location> =
                s.locations.iter().map(|l| Location::from_stored(l.clone()).unwrap()).collect();
            Desired::new(&s, &locations, false)
        };
        let one = built(&["+14155550101"], "in_order");
        assert_eq!(one.workflow.reservation_timeout_secs, 20 + 30 + RESERVATION_MARGIN_SECS);
        let three = built(&["+14155550101", "+14155550102", "+14155550103"], "in_order");
        let want = 3 * (20 + 30) + 2 * NEXT_PHONE_SECS + RESERVATION_MARGIN_SECS;
        assert_eq!(three.workflow.reservation_timeout_secs, want);
        // A workflow provisioned for one phone is updated, and the plan shows it.
        let got = lines(&plan(&three, &in_sync(&one)));
        let line = format!("~ update workflow call-router/by-location: task_reservation_timeout 65 -> {want}");
        assert!(got.contains(&line), "{got:#?}");
        // Rung all at once, they take one phone's time.
        let together = built(&["+14155550101", "+14155550102", "+14155550103"], "all_at_once");
        assert_eq!(together.workflow.reservation_timeout_secs, 20 + 30 + RESERVATION_MARGIN_SECS);
    }

    #[test]
    fn a_screening_location_lengthens_the_reservation_timeout() {
        let text = |screening: bool| {
            format!(
                "public_url = \"https://router.example.com\"\n[twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
                 auth_token = \"secret\"\n[[locations]]\nname = \"north\"\nnumbers = [\"+12025550143\"]\n\
                 phone = \"+14155550101\"\nscreening = {screening}\nscreening_timeout_secs = 12\n\
                 hours = {{ time_zone = \"UTC\" }}\n"
            )
        };
        let timeout = |screening: bool| {
            let s = Settings::from_toml(&text(screening), |_| None).unwrap();
            let locations: Vec<Location> =
                s.locations.iter().map(|l| Location::from_stored(l.clone()).unwrap()).collect();
            Desired::new(&s, &locations, false).workflow.reservation_timeout_secs
        };
        assert_eq!(timeout(false), 20 + 30 + RESERVATION_MARGIN_SECS);
        // Said and waited for twice: a wrong key repeats the prompt.
        assert_eq!(timeout(true), 20 + 30 + RESERVATION_MARGIN_SECS + 2 * (12 + SCREENING_SAY_SECS));
    }

    #[test]
    fn a_loopback_public_url_is_refused_only_for_real_twilio() {
        let with = |public: &str, base: &str| {
            let mut s = settings();
            s.public_url = public.into();
            s.twilio.api_base_url = base.into();
            s.twilio.taskrouter_base_url = base.into();
            check_public_url(&s).map_err(|e| e.to_string())
        };
        let twilio = crate::config::DEFAULT_API_BASE_URL;
        let cases = [
            ("http://127.0.0.1:8080", twilio, false),
            ("http://localhost", twilio, false),
            ("http://[::1]:80/x", twilio, false),
            ("https://router.example.com", twilio, true),
            ("http://127.0.0.1:8080", "http://127.0.0.1:4000", true),
        ];
        for (public, base, ok) in cases {
            let got = with(public, base);
            assert_eq!(got.is_ok(), ok, "{public} with {base}: {got:?}");
            if let Err(e) = got {
                assert!(e.starts_with("public_url: "), "{e}");
            }
        }
    }

    #[test]
    fn twilio_errors_are_reported_with_code_and_message() {
        let e = ApiError::Twilio {
            method: "POST",
            path: "/v1/Workspaces/WS1/Workers".into(),
            body: twilio::ErrorBody::new(409, 20001, "A worker named x already exists"),
        };
        assert_eq!(describe(&e), "Twilio error 20001: A worker named x already exists");
        let mut report = Report::default();
        report.fail(Kind::Worker, "east", describe(&e));
        assert_eq!(report.lines, ["! worker east: Twilio error 20001: A worker named x already exists"]);
        assert_eq!(report.failed, 1);
    }

    #[test]
    fn workflow_configuration_routes_each_location_to_its_queue() {
        let d = desired(&[("north", 1), ("south", 1)], false);
        let sids = BTreeMap::from([("north".to_owned(), "WQn".to_owned()), ("south".to_owned(), "WQs".to_owned())]);
        let p = d.workflow_params(&sids).unwrap();
        let config: Value = serde_json::from_str(p.get("Configuration").unwrap()).unwrap();
        assert_eq!(config["task_routing"]["filters"][1]["expression"], "location == \"south\"");
        assert_eq!(config["task_routing"]["filters"][1]["targets"][0]["queue"], "WQs");
        assert_eq!(p.get("TaskReservationTimeout"), Some("65"));
        let missing = d.workflow_params(&BTreeMap::new()).unwrap_err();
        assert!(missing.contains("north"), "{missing}");
    }

    #[test]
    fn an_overflow_after_some_seconds_is_a_second_workflow_target() {
        let mut d = desired(&[("north", 1), ("south", 1)], false);
        d.workflow.routes[0].overflow = Some(("south".into(), 60));
        let sids = BTreeMap::from([("north".to_owned(), "WQn".to_owned()), ("south".to_owned(), "WQs".to_owned())]);
        let config = d.workflow_params(&sids).unwrap().get("Configuration").unwrap().to_owned();
        let v: Value = serde_json::from_str(&config).unwrap();
        assert_eq!(
            v["task_routing"]["filters"][0]["targets"],
            json!([{"queue": "WQn", "timeout": 60}, {"queue": "WQs"}])
        );
        assert_eq!(v["task_routing"]["filters"][1]["targets"], json!([{"queue": "WQs"}]));
        // Read back, the same configuration is no change; a plain one is.
        let queues = BTreeMap::from([("WQn", "north"), ("WQs", "south")]);
        assert_eq!(route_diffs(&d.workflow, &config, &queues), []);
        let plain = desired(&[("north", 1), ("south", 1)], false);
        let plain_config = plain.workflow_params(&sids).unwrap().get("Configuration").unwrap().to_owned();
        let diffs = route_diffs(&d.workflow, &plain_config, &queues);
        assert_eq!(diffs.len(), 1, "{diffs:?}");
        assert_eq!((diffs[0].from.as_str(), diffs[0].to.as_str()), ("queue north", "queue north for 60 s+queue south"));
    }

    #[test]
    fn lines_are_split_evenly_over_as_few_workers_as_hold_them() {
        let cases: [(u32, u32, &[u32]); 8] = [
            (1, 50, &[1]),
            (50, 50, &[50]),
            (51, 50, &[26, 25]),
            (100, 50, &[50, 50]),
            (101, 50, &[34, 34, 33]),
            (120, 50, &[40, 40, 40]),
            (500, 50, &[50; 10]),
            (5, 2, &[2, 2, 1]),
        ];
        for (lines, capacity, want) in cases {
            assert_eq!(worker_shares(lines, capacity), want, "{lines} lines, {capacity} a worker");
        }
        assert_eq!([worker_key("north", 1), worker_key("north", 2)], ["north", "north/2"]);
    }

    proptest::proptest! {
        #[test]
        fn worker_shares_hold_every_line_within_the_capacity(lines in 1u32..=2000, capacity in 1u32..=50) {
            let shares = worker_shares(lines, capacity);
            proptest::prop_assert_eq!(shares.iter().sum::<u32>(), lines);
            proptest::prop_assert_eq!(shares.len() as u32, lines.div_ceil(capacity));
            proptest::prop_assert!(shares.iter().all(|&s| (1..=capacity).contains(&s)));
            proptest::prop_assert!(shares.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
        }
    }

    fn ops(changes: &[Change], kind: Kind) -> Vec<(String, Op)> {
        changes.iter().filter(|c| c.kind == kind).map(|c| (c.key.clone(), c.op.clone())).collect()
    }

    #[test]
    fn more_lines_than_a_worker_holds_make_several_workers() {
        let d = desired(&[("north", 120)], false);
        let got: Vec<_> = d.workers.iter().map(|w| (w.friendly_name.as_str(), w.capacity)).collect();
        assert_eq!(got, [("call-router/north", 40), ("call-router/north/2", 40), ("call-router/north/3", 40)]);
        assert!(d.workers.iter().all(|w| w.attributes["location"] == "north"), "the queue's expression matches all");
        assert_eq!(d.workers[2].attributes[WORKER_INDEX], 3);
        assert!(!d.workers[0].attributes.contains_key(WORKER_INDEX), "the first worker is named as before");

        let a = Actual { numbers: in_sync(&d).numbers, ..Actual::default() };
        let changes = plan(&d, &a);
        let workers: Vec<String> = lines(&changes).into_iter().filter(|l| l.contains(" worker ")).collect();
        assert_eq!(
            workers,
            [
                "+ create worker north (capacity 40)",
                "+ create worker north/2 (capacity 40)",
                "+ create worker north/3 (capacity 40)"
            ]
        );
        // Provisioned, a second plan changes nothing.
        assert!(plan(&d, &in_sync(&d)).iter().all(|c| c.op == Op::Unchanged));
    }

    #[test]
    fn changing_lines_resizes_adds_and_removes_workers() {
        let before = desired(&[("north", 150)], false);
        let a = in_sync(&before);
        // Down: 150 (3 x 50) to 60 (2 x 30): two resized, one surplus.
        let down = plan(&desired(&[("north", 60)], false), &a);
        let capacity = |from: u32, to: u32| {
            Op::Update(vec![Diff { field: "capacity".into(), from: from.to_string(), to: to.to_string() }])
        };
        assert_eq!(
            ops(&down, Kind::Worker),
            [("north".into(), capacity(50, 30)), ("north/2".into(), capacity(50, 30)), ("north/3".into(), Op::Surplus)]
        );
        let surplus = down.iter().find(|c| c.op == Op::Surplus).unwrap();
        assert_eq!(surplus.sid.as_deref(), Some("WK-north/3"));
        assert_eq!(surplus.line(), "- delete worker north/3 (its location's lines need fewer workers)");
        assert!(surplus.is_write());
        // Up: 150 to 160 (4 x 40): three resized, one created.
        let up = plan(&desired(&[("north", 160)], false), &a);
        assert_eq!(
            ops(&up, Kind::Worker),
            [
                ("north".into(), capacity(50, 40)),
                ("north/2".into(), capacity(50, 40)),
                ("north/3".into(), capacity(50, 40)),
                ("north/4".into(), Op::Create)
            ]
        );
        // Down to one worker, without --prune: a surplus worker is not a gone location's.
        let one = plan(&desired(&[("north", 10)], false), &a);
        assert_eq!(ops(&one, Kind::Worker).iter().filter(|(_, op)| *op == Op::Surplus).count(), 2);
        assert!(!lines(&one).iter().any(|l| l.starts_with('?')), "{:#?}", lines(&one));
    }

    #[test]
    fn workers_are_found_by_location_and_index_and_strangers_are_not_surplus() {
        let d = desired(&[("north", 100)], false);
        let mut a = in_sync(&d);
        // Renamed by hand: found again by marker, location and index.
        worker(&mut a, "north/2").worker.friendly_name = "front desk 2".into();
        // A worker a person made for the location: not ours to delete.
        a.workers.push(ActualWorker {
            worker: WorkerResource {
                sid: "WK-person".into(),
                friendly_name: "reception".into(),
                attributes: Some(r#"{"location":"north"}"#.into()),
                activity_sid: None,
                activity_name: Some(AVAILABLE.into()),
            },
            voice: None,
        });
        // A duplicate a failed run left behind: marked, so surplus.
        let mut twin = a.workers[0].clone();
        twin.worker.sid = "WK-twin".into();
        twin.worker.friendly_name = "call-router/north-old".into();
        a.workers.push(twin);
        let changes = plan(&d, &a);
        assert_eq!(
            ops(&changes, Kind::Worker),
            [
                ("north".into(), Op::Unchanged),
                (
                    "north/2".into(),
                    Op::Update(vec![Diff {
                        field: "name".into(),
                        from: "front desk 2".into(),
                        to: "call-router/north/2".into()
                    }])
                ),
                ("north".into(), Op::Surplus),
            ]
        );
        assert_eq!(changes.iter().find(|c| c.op == Op::Surplus).unwrap().sid.as_deref(), Some("WK-twin"));
    }

    #[test]
    fn a_queue_offering_a_caller_to_several_workers_is_set_back_to_one() {
        let d = desired(&[("north", 100)], false);
        let mut a = in_sync(&d);
        a.queues[0].max_reserved_workers = Some(3);
        let got = lines(&plan(&d, &a));
        assert!(got.contains(&"~ update queue north: max_reserved_workers 3 -> 1".to_owned()), "{got:#?}");
    }

    use crate::test_backends::Backend;

    on_both_backends!(a_dry_run_neither_creates_tables_nor_migrates);

    /// A dry run writes nothing to the database either: a database with no
    /// tables yet is planned against as empty and keeps none, and one whose
    /// last migration is not applied yet is planned against as it is (its
    /// stored locations included) and stays unmigrated.
    async fn a_dry_run_neither_creates_tables_nor_migrates(backend: Backend) {
        use crate::check::{Schema, schema_of};
        let Some(db) = backend.database().await else { return };
        if let Some(path) = crate::store::sqlite_path(&db.url) {
            std::fs::write(&path, b"").unwrap();
        }
        let mut settings = settings();
        settings.database_url = db.url.clone();
        let store = dry_run_store(&settings).await.unwrap();
        assert!(store.location_specs().await.unwrap().is_empty());
        assert_eq!(schema_of(&db.url).await.unwrap(), Schema::Empty, "the dry run made tables");

        // All but the last migration, and a location stored meanwhile.
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let migrator = match backend {
            Backend::Sqlite => &crate::store::SQLITE_MIGRATIONS,
            Backend::Postgres => &crate::store::POSTGRES_MIGRATIONS,
        };
        let last = migrator.iter().map(|m| m.version).max().unwrap();
        migrator.run_to(last - 1, &pool).await.unwrap();
        pool.close().await;
        let stored = crate::bench::bench_locations()[..1].to_vec();
        crate::cli::import(&Store::connect_unmigrated(&db.url, settings.database).await.unwrap(), &stored)
            .await
            .unwrap();
        let behind = schema_of(&db.url).await.unwrap();
        assert!(matches!(&behind, Schema::Behind(missing) if missing.len() == 1), "{behind:?}");

        let store = dry_run_store(&settings).await.unwrap();
        assert_eq!(store.location_specs().await.unwrap(), stored);
        assert_eq!(schema_of(&db.url).await.unwrap(), behind, "the dry run migrated");
        // A real open migrates it.
        drop(store);
        Store::connect_with(&db.url, settings.database).await.unwrap();
        assert_eq!(schema_of(&db.url).await.unwrap(), Schema::Current);
    }
}
