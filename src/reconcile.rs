//! The reconciler's reads: what Twilio says happened, as journey events.
//!
//! At start-up and periodically the server compares Twilio's state with its
//! own and feeds what it sees into the journeys (issue 8). This module holds
//! the parts that do not touch the store:
//!
//! - a pure core: [`observe_task`] (a task and its reservations → events),
//!   [`attribute_dial`] (a Calls list → the leg a dial in doubt created, or
//!   proof that it created none) and [`unseen_inbound`] (inbound calls the
//!   server never heard of);
//! - a thin IO rim over [`TwilioClient`]: [`sweep_tasks`], [`find_dial`],
//!   [`inbound_calls`]. Every list is capped in pages, so one pass costs a
//!   bounded number of requests.
//!
//! The journey is level-triggered, so an observation of a fact it already
//! knows owes nothing new; the reconciler may repeat itself freely.

mod run;

pub use run::Reconciler;

use jiff::Timestamp;
use std::collections::BTreeMap;
use twilio::E164;

use twilio::sid::{CallSid, ReservationSid, TaskSid, WorkerSid, WorkspaceSid};

use crate::domain::TaskAttributes;
use crate::journey::{CallStatus, Command, DialTarget, Event, ReservationStatus, TaskStatus};
use crate::twilio_api::{
    ApiError, CallFilter, CallRecordResource, Listing, ReservationResource, TaskResource, TimeBound, TwilioClient,
};

/// One observation, with the SIDs that route it to a journey.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The caller's call SID (from the task's attributes, when `<Enqueue>`
    /// put it there), the task's SID and, for a reservation, its SID.
    pub keys: Vec<String>,
    pub event: Event,
    /// Whether the event may start a journey no key finds. Only a pending
    /// reservation may: it is a `reservation.created` we missed while down.
    pub create: bool,
}

/// Reads one task and its reservations as events, or says why the task is
/// skipped (its attributes are not ours, or a status this version does not
/// know).
///
/// A pending reservation becomes `ReservationCreated` (built from the task's
/// attributes, `create: true`); any other becomes `ReservationSeen`; the task
/// becomes `TaskSeen`. Reservation events come first, pending ones before
/// the others, and the task's last: when a pending reservation starts a
/// journey, the observations after it find that journey.
///
/// `worker_locations` names the location of the workers of pending
/// reservations, where known: a task with an overflow location dials the
/// overflow location for a reservation of its worker.
pub fn observe_task(
    task: &TaskResource,
    reservations: &[ReservationResource],
    worker_locations: &BTreeMap<WorkerSid, String>,
) -> Result<Vec<Observed>, String> {
    let attrs: TaskAttributes = serde_json::from_str(&task.attributes)
        .map_err(|e| format!("task attributes are not a call-router task: {e}"))?;
    let status = TaskStatus::parse(&task.assignment_status)
        .ok_or_else(|| format!("unknown assignment status {:?}", task.assignment_status))?;
    let mut keys: Vec<String> = attrs.call_sid.iter().map(ToString::to_string).collect();
    keys.push(task.sid.to_string());

    let mut created = Vec::new();
    let mut seen = Vec::new();
    for r in reservations.iter().filter(|r| r.task_sid == task.sid) {
        let status = ReservationStatus::parse(&r.reservation_status)
            .ok_or_else(|| format!("reservation {}: unknown reservation status {:?}", r.sid, r.reservation_status))?;
        let mut keys = keys.clone();
        keys.push(r.sid.to_string());
        if status == ReservationStatus::Pending {
            let event = Event::ReservationCreated {
                task: task.sid.clone(),
                reservation: r.sid.clone(),
                caller: attrs.call_sid.clone(),
                target: DialTarget::for_worker(
                    &attrs,
                    r.worker_sid.as_ref().and_then(|w| worker_locations.get(w)).map(String::as_str),
                ),
            };
            created.push(Observed { keys, event, create: true });
        } else {
            let event = Event::ReservationSeen { task: task.sid.clone(), reservation: r.sid.clone(), status };
            seen.push(Observed { keys, event, create: false });
        }
    }
    created.extend(seen);
    created.push(Observed { keys, event: Event::TaskSeen { task: task.sid.clone(), status }, create: false });
    Ok(created)
}

/// The fields of [`Command::FindDial`] the lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindDial {
    pub reservation: ReservationSid,
    pub attempt: u32,
    pub to: E164,
    /// When the journey owed the dial; the create request left after that.
    pub placed_after_ms: i64,
}

impl FindDial {
    pub fn from_command(command: &Command) -> Option<Self> {
        match command {
            Command::FindDial { reservation, attempt, to, placed_after_ms, .. } => Some(FindDial {
                reservation: reservation.clone(),
                attempt: *attempt,
                to: to.clone(),
                placed_after_ms: *placed_after_ms,
            }),
            _ => None,
        }
    }

    /// The earliest `date_created` a call of this attempt can show.
    pub fn window_start_ms(&self) -> i64 {
        self.placed_after_ms.saturating_sub(CREATED_SLACK_MS)
    }
}

/// How far before `placed_after_ms` a call's `date_created` may read and
/// still be this dial's. `placed_after_ms` is the journey's clock when it
/// owed the dial, so the request, and Twilio's creation of the call, came
/// later; a call can read earlier only because Twilio writes
/// `date_created` in whole seconds, rounded down (up to 999 ms early), and
/// because Twilio's clock and ours differ (NTP keeps hosts within tens of
/// milliseconds; a second is allowed). Wider would only admit more calls of
/// other dials to the same phone.
pub const CREATED_SLACK_MS: i64 = 2_000;

/// The direction of a call created by `POST Calls.json`.
const OUTBOUND_API: &str = "outbound-api";

/// Whether `call` may be the leg this dial created: to the same phone,
/// created through the REST API, no earlier than the window, and not a leg
/// a journey already knows.
fn candidate(find: &FindDial, call: &CallRecordResource, is_known_leg: &impl Fn(&str) -> bool) -> Option<i64> {
    let created = call.date_created?.as_millisecond();
    let fits = call.to == find.to.as_str()
        && call.direction.as_deref() == Some(OUTBOUND_API)
        && created >= find.window_start_ms()
        && !is_known_leg(call.sid.as_str());
    fits.then_some(created)
}

/// Attributes a dial in doubt from a complete Calls list (any order): among
/// the calls to `find.to` with direction `outbound-api`, created at or after
/// [`FindDial::window_start_ms`] and not already a leg of any journey, the
/// oldest is taken as this attempt's leg (`LegSeen`); with none, the attempt
/// created no call (`DialAbsent`). Ties in `date_created` (one second) go to
/// the call listed last: Twilio lists newest first.
///
/// A status this version does not know reads as `queued`: the leg exists
/// and is not final, which is all the journey needs to stop it if it must,
/// and a later status callback moves it forward.
///
/// Residual risk: another dial to the same phone that is also in doubt
/// (another caller's reservation for the same location, its answer lost as
/// well) within the same window. Both lookups then see the same two unknown
/// calls and each takes the oldest, so one journey can own the other's leg
/// while its own leg stays unowned until its status callbacks name it. It
/// needs two lost answers for one phone within a few seconds; the calls
/// still exist (no double dial follows), only their attribution may be
/// swapped or shared.
pub fn attribute_dial(find: &FindDial, calls: &[CallRecordResource], is_known_leg: impl Fn(&str) -> bool) -> Event {
    let oldest = calls
        .iter()
        .enumerate()
        .filter_map(|(i, c)| candidate(find, c, &is_known_leg).map(|created| (created, i, c)))
        .min_by_key(|(created, i, _)| (*created, std::cmp::Reverse(*i)));
    match oldest {
        Some((_, _, call)) => Event::LegSeen {
            reservation: find.reservation.clone(),
            attempt: Some(find.attempt),
            leg: call.sid.clone(),
            status: CallStatus::parse(&call.status).unwrap_or(CallStatus::Queued),
        },
        None => Event::DialAbsent { reservation: find.reservation.clone(), attempt: find.attempt },
    }
}

/// An inbound call to one of our numbers that the server never heard of.
#[derive(Debug, Clone, PartialEq)]
pub struct UnseenInbound {
    pub call: CallSid,
    pub from: String,
    pub to: E164,
    pub status: CallStatus,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
}

/// The calls in `calls` that came in (`inbound`, no parent) to one of
/// `numbers`, have ended, and that `is_known_caller` does not know: callers
/// Twilio took while the server could not answer (an outage), whose
/// outcome is for the caller to record. A call still live is left out: its
/// `/incoming-call` may be on its way; a later pass sees it once it ends.
pub fn unseen_inbound(
    calls: &[CallRecordResource],
    numbers: &[E164],
    is_known_caller: impl Fn(&str) -> bool,
) -> Vec<UnseenInbound> {
    calls
        .iter()
        .filter(|c| c.direction.as_deref() == Some("inbound") && c.parent_call_sid.is_none())
        .filter(|c| !is_known_caller(c.sid.as_str()))
        .filter_map(|c| {
            let to = numbers.iter().find(|n| n.as_str() == c.to)?;
            let status = CallStatus::parse(&c.status).filter(|s| s.is_final())?;
            Some(UnseenInbound {
                call: c.sid.clone(),
                from: c.from.clone(),
                to: to.clone(),
                status,
                start_time: c.start_time,
                end_time: c.end_time,
            })
        })
        .collect()
}

// -- IO ----------------------------------------------------------------------

/// The task statuses a sweep lists. Pending tasks are included: a pending
/// task may hold a reservation whose timeout we missed while its dial was
/// going out. Final tasks are not listed (there are many, and TaskRouter
/// drops them after a while); a journey that still believes its task open
/// can [`TwilioClient::fetch_task`] it and pass it to [`observe_task`].
pub const SWEPT_STATUSES: [&str; 4] = ["pending", "reserved", "assigned", "wrapping"];

/// Tasks a page when sweeping.
pub const SWEEP_PAGE_SIZE: u32 = 200;

/// Every open task of the workspace and its reservations, as observations,
/// and the tasks skipped with the reason. Costs at most `max_pages` task
/// pages plus one reservations request per task listed.
pub async fn sweep_tasks(
    client: &TwilioClient,
    workspace: &WorkspaceSid,
    max_pages: u32,
) -> Result<(Vec<Observed>, Vec<(TaskSid, String)>), ApiError> {
    sweep_tasks_paged(client, workspace, SWEEP_PAGE_SIZE, max_pages).await
}

/// [`sweep_tasks`] with its page size (tests page with small ones).
pub async fn sweep_tasks_paged(
    client: &TwilioClient,
    workspace: &WorkspaceSid,
    page_size: u32,
    max_pages: u32,
) -> Result<(Vec<Observed>, Vec<(TaskSid, String)>), ApiError> {
    let tasks = client.list_tasks(workspace, &SWEPT_STATUSES, page_size, max_pages).await?;
    let mut observed = Vec::new();
    let mut skipped = Vec::new();
    for task in &tasks.items {
        let reservations = match client.list_task_reservations(workspace, &task.sid).await {
            Ok(r) => r,
            // Deleted since the list (TaskRouter drops ended tasks).
            Err(e) if e.status() == Some(404) => {
                skipped.push((task.sid.clone(), format!("task gone before its reservations were listed: {e}")));
                continue;
            }
            Err(e) => return Err(e),
        };
        let workers = match worker_locations(client, workspace, task, &reservations.items).await {
            Ok(w) => w,
            Err(e) if e.status() == Some(404) => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        match observe_task(task, &reservations.items, &workers) {
            Ok(o) => observed.extend(o),
            Err(why) => skipped.push((task.sid.clone(), why)),
        }
    }
    Ok((observed, skipped))
}

/// Calls a page in a dial lookup, and pages at most.
const FIND_PAGE_SIZE: u32 = 1000;
const FIND_MAX_PAGES: u32 = 3;

/// Looks up a dial in doubt: the calls to `find.to` that started on or after
/// the UTC day of [`FindDial::window_start_ms`] (`StartTime>`, which Twilio
/// documents by the day), plus those to `find.to` still `queued` (a call
/// not yet dialled has no start time, so a `StartTime` filter hides it),
/// then [`attribute_dial`].
///
/// `None` when a list was cut by its page cap: what was not read may hold
/// the leg (or an older candidate), so the lookup proves nothing and the
/// attempt stays in doubt, which never dials again.
pub async fn find_dial(
    client: &TwilioClient,
    find: &FindDial,
    is_known_leg: impl Fn(&str) -> bool,
) -> Result<Option<Event>, ApiError> {
    Ok(dial_candidates(client, find).await?.map(|calls| attribute_dial(find, &calls, is_known_leg)))
}

/// The calls [`find_dial`] attributes among: both lists, each call once;
/// `None` when a page cap cut one of them. For a caller that looks up which
/// of them are known legs before [`attribute_dial`].
pub async fn dial_candidates(
    client: &TwilioClient,
    find: &FindDial,
) -> Result<Option<Vec<CallRecordResource>>, ApiError> {
    let window = Timestamp::from_millisecond(find.window_start_ms()).unwrap_or(Timestamp::UNIX_EPOCH);
    let started = CallFilter {
        to: Some(find.to.to_string()),
        start_time_from: Some(TimeBound::day_of(window)),
        page_size: FIND_PAGE_SIZE,
        max_pages: FIND_MAX_PAGES,
        ..CallFilter::default()
    };
    let queued = CallFilter {
        to: Some(find.to.to_string()),
        status: Some("queued".into()),
        page_size: FIND_PAGE_SIZE,
        max_pages: 1,
        ..CallFilter::default()
    };
    let started = client.list_calls(&started).await?;
    let queued = client.list_calls(&queued).await?;
    if !started.complete || !queued.complete {
        return Ok(None);
    }
    Ok(Some(merge(started, queued)))
}

/// Two listings' calls, each SID once (the first listing's copy kept).
fn merge(first: Listing<CallRecordResource>, second: Listing<CallRecordResource>) -> Vec<CallRecordResource> {
    let mut calls = first.items;
    for c in second.items {
        if !calls.iter().any(|k| k.sid == c.sid) {
            calls.push(c);
        }
    }
    calls
}

/// Inbound calls to `numbers` that started at or after `since`, one Calls
/// list per number (`To`, `StartTime>` the UTC day of `since`, then cut to
/// `since` here), up to `max_pages` pages each; `complete` is false when a
/// cap cut one. Feed them to [`unseen_inbound`].
pub async fn inbound_calls(
    client: &TwilioClient,
    numbers: &[E164],
    since: Timestamp,
    max_pages: u32,
) -> Result<Listing<CallRecordResource>, ApiError> {
    let mut out = Listing { items: Vec::new(), pages: 0, complete: true };
    for n in numbers {
        let filter = CallFilter {
            to: Some(n.to_string()),
            start_time_from: Some(TimeBound::day_of(since)),
            page_size: FIND_PAGE_SIZE,
            max_pages,
            ..CallFilter::default()
        };
        let listed = client.list_calls(&filter).await?;
        out.pages += listed.pages;
        out.complete &= listed.complete;
        out.items.extend(
            listed
                .items
                .into_iter()
                .filter(|c| c.direction.as_deref() == Some("inbound"))
                .filter(|c| c.start_time.is_some_and(|t| t >= since)),
        );
    }
    Ok(out)
}

/// A task as [`TwilioClient::fetch_task`] returns it, with its reservations,
/// as observations: for a journey whose task the sweep no longer lists.
pub async fn observe_one_task(
    client: &TwilioClient,
    workspace: &WorkspaceSid,
    task: &TaskSid,
) -> Result<Result<Vec<Observed>, String>, ApiError> {
    let t = client.fetch_task(workspace, task).await?;
    let reservations = client.list_task_reservations(workspace, task).await?;
    let workers = worker_locations(client, workspace, &t, &reservations.items).await?;
    Ok(observe_task(&t, &reservations.items, &workers))
}

/// The locations of the workers of a task's pending reservations, fetched
/// only for a task with an overflow location (otherwise every reservation
/// dials the task's own location).
async fn worker_locations(
    client: &TwilioClient,
    workspace: &WorkspaceSid,
    task: &TaskResource,
    reservations: &[ReservationResource],
) -> Result<BTreeMap<WorkerSid, String>, ApiError> {
    let overflow = serde_json::from_str::<TaskAttributes>(&task.attributes).is_ok_and(|a| a.overflow.is_some());
    let mut out = BTreeMap::new();
    if !overflow {
        return Ok(out);
    }
    let pending = reservations.iter().filter(|r| r.task_sid == task.sid && r.reservation_status == "pending");
    for w in pending.filter_map(|r| r.worker_sid.as_ref()) {
        if !out.contains_key(w)
            && let Some(location) = client.worker_location(workspace, w).await?
        {
            out.insert(w.clone(), location);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
