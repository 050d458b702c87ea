//! TaskRouter's routing, pure: state and a virtual time in, changes, events
//! to deliver and timers to arm out.
//!
//! Nothing here sleeps or sends. The IO rim (`lib.rs`) delivers the events
//! (`events.rs`) and arms the timers, and calls [`fire`] when one is due; a
//! timer that no longer applies (the reservation was accepted, the task moved
//! on) does nothing.

use serde_json::Value;
use twilio::{ErrorBody, Params};

use crate::clock::VMs;
use crate::expr::Context;
use crate::state::{Activity, Compiled, ResStatus, Reservation, State, Target, Task, TaskStatus, Worker, Workspace};

/// An event for the workspace's `EventCallbackUrl`.
#[derive(Debug, Clone)]
pub struct Event {
    pub workspace_sid: String,
    pub event_type: String,
    pub params: Params,
}

/// Something that must happen at a virtual instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    ReservationTimeout { reservation: String, at: VMs },
    TaskTtl { task: String, at: VMs },
    TargetTimeout { task: String, generation: u64, at: VMs },
}

impl Timer {
    pub fn at(&self) -> VMs {
        match self {
            Timer::ReservationTimeout { at, .. } | Timer::TaskTtl { at, .. } | Timer::TargetTimeout { at, .. } => *at,
        }
    }
}

/// What an operation asks the rim to do.
#[derive(Debug, Default)]
pub struct Effects {
    pub events: Vec<Event>,
    pub timers: Vec<Timer>,
    /// Live calls to move to new TwiML: (call SID, URL fetched with POST), as
    /// a reservation's `Instruction=redirect` asks.
    pub redirects: Vec<(String, String)>,
}

impl Effects {
    pub fn extend(&mut self, other: Effects) {
        self.events.extend(other.events);
        self.timers.extend(other.timers);
        self.redirects.extend(other.redirects);
    }
}

pub type ApiResult<T> = Result<T, ErrorBody>;

pub fn bad_request(code: u32, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(400, code, msg)
}

pub fn not_found(what: &str, sid: &str) -> ErrorBody {
    ErrorBody::new(404, 20404, format!("The requested resource {what} {sid} was not found"))
}

/// The default TaskRouter reservation timeout, in seconds.
pub const DEFAULT_RESERVATION_TIMEOUT: u64 = 120;
/// The default task TTL, in seconds.
pub const DEFAULT_TASK_TTL: u64 = 86_400;

/// Makes a workspace with Twilio's default activities: Offline (default and
/// timeout activity), Available, Unavailable.
pub fn create_workspace(st: &mut State, now: VMs, friendly_name: &str) -> String {
    let sid = st.sid("WS");
    let mut acts = Vec::new();
    for (name, available) in [("Offline", false), ("Available", true), ("Unavailable", false)] {
        let a = st.sid("WA");
        st.activities.insert(
            a.clone(),
            Activity {
                sid: a.clone(),
                workspace_sid: sid.clone(),
                friendly_name: name.into(),
                available,
                created: now,
                updated: now,
            },
        );
        acts.push(a);
    }
    st.workspaces.insert(
        sid.clone(),
        Workspace {
            sid: sid.clone(),
            friendly_name: friendly_name.into(),
            event_callback_url: None,
            events_filter: None,
            default_activity_sid: acts[0].clone(),
            timeout_activity_sid: acts[0].clone(),
            // Twilio's API description says `MultiTaskEnabled` defaults to true
            // ("all workspaces should be created as multi-tasking"); its older
            // examples show false. The description is the normative text and the
            // current behaviour, so a workspace multitasks unless told otherwise.
            // A worker's voice capacity (1 by default) still bounds its tasks.
            multi_task_enabled: true,
            prioritize_queue_order: "FIFO".into(),
            created: now,
            updated: now,
            workers: Vec::new(),
            pending: Vec::new(),
        },
    );
    sid
}

/// Whether a worker can take one more voice task now.
fn worker_free(st: &State, w: &Worker) -> bool {
    let available = st.activities.get(&w.activity_sid).is_some_and(|a| a.available);
    let multi = st.workspaces.get(&w.workspace_sid).is_none_or(|ws| ws.multi_task_enabled);
    let capacity = if multi { w.capacity } else { w.capacity.min(1) };
    available && w.channel_available && w.in_use < capacity
}

/// Whether a worker is "available" as TaskRouter reports it (its activity).
pub fn worker_available(st: &State, w: &Worker) -> bool {
    st.activities.get(&w.activity_sid).is_some_and(|a| a.available)
}

fn eval(c: &Compiled, attributes: &Value, task: Option<&Value>, worker: Option<&Value>) -> bool {
    c.expr.eval(&Context { attributes, task, worker })
}

/// Picks the workflow's routing steps for a task: the first filter whose
/// expression matches the task's attributes, else the default filter.
pub fn route(st: &State, workflow_sid: &str, attributes: &Value) -> Vec<Target> {
    let Some(wf) = st.workflows.get(workflow_sid) else {
        return Vec::new();
    };
    for f in &wf.filters {
        if eval(&f.expression, attributes, Some(attributes), None) {
            return f.targets.clone();
        }
    }
    wf.default_target.clone().into_iter().collect()
}

/// Creates a task and routes it.
pub fn create_task(
    st: &mut State,
    now: VMs,
    workspace_sid: &str,
    workflow_sid: &str,
    attributes_raw: &str,
    priority: Option<i64>,
    timeout: Option<u64>,
) -> ApiResult<(String, Effects)> {
    if st.workspaces.get(workspace_sid).is_none() {
        return Err(not_found("Workspace", workspace_sid));
    }
    match st.workflows.get(workflow_sid) {
        Some(wf) if wf.workspace_sid == workspace_sid => {}
        _ => {
            return Err(bad_request(20001, format!("WorkflowSid {workflow_sid} is not a workflow of this workspace")));
        }
    }
    let raw = if attributes_raw.trim().is_empty() { "{}" } else { attributes_raw };
    let attributes: Value = serde_json::from_str(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| bad_request(20001, "Attributes must be a JSON object"))?;
    let targets = route(st, workflow_sid, &attributes);
    let sid = st.sid("WT");
    let timeout_secs = timeout.unwrap_or(DEFAULT_TASK_TTL).clamp(1, 365 * 86_400);
    let first = targets.first().cloned();
    let task = Task {
        sid: sid.clone(),
        workspace_sid: workspace_sid.into(),
        workflow_sid: workflow_sid.into(),
        attributes,
        attributes_raw: raw.into(),
        status: TaskStatus::Pending,
        reason: None,
        priority: priority.or_else(|| first.as_ref().and_then(|t| t.priority)).unwrap_or(0),
        timeout_secs,
        created: now,
        updated: now,
        virtual_start: i64::try_from(now).unwrap_or(i64::MAX),
        targets,
        target_index: 0,
        queue_sid: first.as_ref().map(|t| t.queue.clone()),
        queue_entered: first.as_ref().map(|_| now),
        generation: 0,
        offers: Vec::new(),
        reservation_sid: None,
    };
    st.tasks.insert(sid.clone(), task);
    if let Some(ws) = st.workspaces.get_mut(workspace_sid) {
        ws.pending.push(sid.clone());
    }
    let mut fx = Effects::default();
    fx.events.push(event(st, now, "task.created", "Task created", Some(&sid), None, None));
    if first.is_some() {
        fx.events.push(event(st, now, "task-queue.entered", "Task entered a queue", Some(&sid), None, None));
    }
    fx.timers.push(Timer::TaskTtl { task: sid.clone(), at: now.saturating_add(timeout_secs * 1000) });
    arm_target_timeout(st, now, &sid, &mut fx);
    fx.extend(assign(st, now, workspace_sid));
    Ok((sid, fx))
}

fn arm_target_timeout(st: &State, now: VMs, task_sid: &str, fx: &mut Effects) {
    if let Some(t) = st.tasks.get(task_sid)
        && let Some(secs) = t.targets.get(t.target_index).and_then(|tg| tg.timeout_secs)
    {
        fx.timers.push(Timer::TargetTimeout {
            task: task_sid.into(),
            generation: t.generation,
            at: now.saturating_add(secs.saturating_mul(1000)),
        });
    }
}

/// Offers waiting tasks of a workspace to free, matching workers: highest
/// priority first, then oldest; among workers, the one idle longest, then
/// the oldest worker. A task waits until a reservation is accepted, and holds
/// up to its queue's `MaxReservedWorkers` pending reservations at once, one
/// per worker; a worker whose reservation of it ended without acceptance may
/// be offered it again (Twilio's documented way to avoid that is moving the
/// worker with `WorkerActivitySid`).
pub fn assign(st: &mut State, now: VMs, workspace_sid: &str) -> Effects {
    let mut fx = Effects::default();
    let Some(ws) = st.workspaces.get(workspace_sid) else {
        return fx;
    };
    if ws.pending.is_empty() {
        return fx;
    }
    let mut free: Vec<String> =
        ws.workers.iter().filter(|w| st.workers.get(w).is_some_and(|w| worker_free(st, w))).cloned().collect();
    if free.is_empty() {
        return fx;
    }
    // Priority first, then age: the oldest `VirtualStartTime` first.
    let mut pending: Vec<(i64, i64, String)> = ws
        .pending
        .iter()
        .filter_map(|t| st.tasks.get(t))
        .map(|t| (-t.priority, t.virtual_start, t.sid.clone()))
        .collect();
    pending.sort();
    for (_, _, task_sid) in pending {
        while !free.is_empty() {
            let Some(task) = st.tasks.get(&task_sid) else { break };
            if !matches!(task.status, TaskStatus::Pending | TaskStatus::Reserved) {
                break;
            }
            let Some(queue) = task.queue_sid.as_ref().and_then(|q| st.queues.get(q)) else {
                break;
            };
            if task.offers.len() >= queue.max_reserved_workers.max(1) as usize {
                break;
            }
            let offered: Vec<&str> =
                task.offers.iter().filter_map(|r| st.reservations.get(r)).map(|r| r.worker_sid.as_str()).collect();
            let target_expr = task.targets.get(task.target_index).and_then(|t| t.expression.clone());
            // Never reserved (None) counts as idle longest of all.
            let mut best: Option<(Option<VMs>, usize)> = None;
            for (i, wsid) in free.iter().enumerate() {
                // A nested routing (a reservation activity) may have used the worker up.
                let Some(w) = st.workers.get(wsid).filter(|w| worker_free(st, w)) else { continue };
                if offered.contains(&wsid.as_str()) {
                    continue;
                }
                if !eval(&queue.target_expr, &w.attributes, Some(&task.attributes), Some(&w.attributes)) {
                    continue;
                }
                if let Some(e) = &target_expr
                    && !eval(e, &w.attributes, Some(&task.attributes), Some(&w.attributes))
                {
                    continue;
                }
                let idle_since = w.last_reserved;
                if best.is_none_or(|(b, _)| idle_since < b) {
                    best = Some((idle_since, i));
                }
            }
            let Some((_, i)) = best else { break };
            let worker_sid = free[i].clone();
            fx.extend(reserve(st, now, &task_sid, &worker_sid));
            if !st.workers.get(&worker_sid).is_some_and(|w| worker_free(st, w)) {
                free.remove(i);
            }
        }
        if free.is_empty() {
            break;
        }
    }
    fx
}

fn reserve(st: &mut State, now: VMs, task_sid: &str, worker_sid: &str) -> Effects {
    let mut fx = Effects::default();
    let res_sid = st.sid("WR");
    let Some(task) = st.tasks.get_mut(task_sid) else {
        return fx;
    };
    task.status = TaskStatus::Reserved;
    task.updated = now;
    task.offers.push(res_sid.clone());
    let ws_sid = task.workspace_sid.clone();
    let queue_sid = task.queue_sid.clone();
    let workflow_sid = task.workflow_sid.clone();
    st.reservations.insert(
        res_sid.clone(),
        Reservation {
            sid: res_sid.clone(),
            workspace_sid: ws_sid,
            task_sid: task_sid.into(),
            worker_sid: worker_sid.into(),
            status: ResStatus::Pending,
            created: now,
            updated: now,
        },
    );
    if let Some(w) = st.workers.get_mut(worker_sid) {
        w.in_use += 1;
        w.last_reserved = Some(now);
    }
    let reservation_activity =
        queue_sid.and_then(|q| st.queues.get(&q)).and_then(|q| q.reservation_activity_sid.clone());
    fx.events.push(event(st, now, "reservation.created", "Reservation created", Some(task_sid), Some(&res_sid), None));
    if let Some(a) = reservation_activity {
        fx.extend(set_activity(st, now, worker_sid, &a));
    }
    let timeout = st.workflows.get(&workflow_sid).map_or(DEFAULT_RESERVATION_TIMEOUT, |w| w.task_reservation_timeout);
    fx.timers
        .push(Timer::ReservationTimeout { reservation: res_sid, at: now.saturating_add(timeout.saturating_mul(1000)) });
    fx
}

/// Moves a worker to an activity, with `worker.activity.update`.
pub fn set_activity(st: &mut State, now: VMs, worker_sid: &str, activity_sid: &str) -> Effects {
    let mut fx = Effects::default();
    let Some(w) = st.workers.get_mut(worker_sid) else {
        return fx;
    };
    if w.activity_sid == activity_sid {
        return fx;
    }
    w.activity_sid = activity_sid.into();
    w.status_changed = now;
    w.updated = now;
    let ws = w.workspace_sid.clone();
    fx.events.push(event(st, now, "worker.activity.update", "Worker activity changed", None, None, Some(worker_sid)));
    fx.extend(assign(st, now, &ws));
    fx
}

/// Releases the worker's slot held by a reservation.
fn release(st: &mut State, worker_sid: &str) {
    if let Some(w) = st.workers.get_mut(worker_sid) {
        w.in_use = w.in_use.saturating_sub(1);
    }
}

/// Ends a pending reservation without acceptance (`status`: timeout,
/// rejected): frees the worker's slot and takes the offer off its task, which
/// is pending again once it has no offer left and stays in its queue. Events
/// and re-routing are the caller's. `None` if the reservation was not pending.
fn end_offer(st: &mut State, now: VMs, res_sid: &str, status: ResStatus) -> Option<Reservation> {
    let res = st.reservations.get(res_sid).filter(|r| r.status == ResStatus::Pending)?.clone();
    set_res(st, now, res_sid, status);
    release(st, &res.worker_sid);
    if let Some(t) = st.tasks.get_mut(&res.task_sid) {
        t.offers.retain(|r| r != res_sid);
        if t.offers.is_empty() && t.status == TaskStatus::Reserved {
            t.status = TaskStatus::Pending;
            t.updated = now;
        }
    }
    Some(res)
}

/// Sets a reservation's status (the Reservations resource's update), and
/// moves its worker to `worker_activity` (`WorkerActivitySid`) when the
/// reservation is accepted or rejected. A rejected task goes back to its
/// queue and is offered again, to the same worker too unless the move made
/// it unavailable; accepting one reservation rescinds the task's others.
pub fn update_reservation(
    st: &mut State,
    now: VMs,
    res_sid: &str,
    status: &str,
    worker_activity: Option<&str>,
) -> ApiResult<Effects> {
    let res = st.reservations.get(res_sid).ok_or_else(|| not_found("Reservation", res_sid))?.clone();
    let new = ResStatus::parse(status)
        .ok_or_else(|| bad_request(20001, format!("ReservationStatus {status:?} is invalid")))?;
    if let Some(a) = worker_activity
        && st.activities.get(a).is_none_or(|a| a.workspace_sid != res.workspace_sid)
    {
        return Err(bad_request(20001, format!("WorkerActivitySid {a} is not an activity of this workspace")));
    }
    let mut fx = Effects::default();
    let conflict =
        || bad_request(20001, format!("Reservation {res_sid} is {} and cannot become {status}", res.status.as_str()));
    match (res.status, new) {
        (ResStatus::Pending, ResStatus::Accepted) => {
            set_res(st, now, res_sid, ResStatus::Accepted);
            let queue = set_task(st, now, &res.task_sid, TaskStatus::Assigned, None);
            let others = match st.tasks.get_mut(&res.task_sid) {
                Some(t) => {
                    t.reservation_sid = Some(res_sid.into());
                    let mut others = std::mem::take(&mut t.offers);
                    others.retain(|r| r != res_sid);
                    others
                }
                None => Vec::new(),
            };
            if let Some(ws) = st.workspaces.get_mut(&res.workspace_sid) {
                ws.pending.retain(|t| *t != res.task_sid);
            }
            fx.events.push(event(
                st,
                now,
                "reservation.accepted",
                "Reservation accepted",
                Some(&res.task_sid),
                Some(res_sid),
                None,
            ));
            for other in &others {
                let Some(o) = st.reservations.get(other).filter(|o| o.status == ResStatus::Pending).cloned() else {
                    continue;
                };
                set_res(st, now, other, ResStatus::Rescinded);
                release(st, &o.worker_sid);
                fx.events.push(event(
                    st,
                    now,
                    "reservation.rescinded",
                    "Reservation rescinded",
                    Some(&res.task_sid),
                    Some(other),
                    None,
                ));
            }
            if let Some(a) = queue.and_then(|q| st.queues.get(&q)).and_then(|q| q.assignment_activity_sid.clone()) {
                fx.extend(set_activity(st, now, &res.worker_sid, &a));
            }
            if let Some(a) = worker_activity {
                fx.extend(set_activity(st, now, &res.worker_sid, a));
            }
            if !others.is_empty() {
                fx.extend(assign(st, now, &res.workspace_sid));
            }
        }
        (ResStatus::Pending, ResStatus::Rejected) => {
            end_offer(st, now, res_sid, ResStatus::Rejected);
            fx.events.push(event(
                st,
                now,
                "reservation.rejected",
                "Reservation rejected",
                Some(&res.task_sid),
                Some(res_sid),
                None,
            ));
            if let Some(a) = worker_activity {
                fx.extend(set_activity(st, now, &res.worker_sid, a));
            }
            fx.extend(next_target_if_due(st, now, &res.task_sid));
            fx.extend(assign(st, now, &res.workspace_sid));
        }
        (ResStatus::Accepted, ResStatus::Wrapping) => {
            fx.extend(wrapup(st, now, &res.task_sid));
        }
        (ResStatus::Accepted | ResStatus::Wrapping, ResStatus::Completed) => {
            fx.extend(update_task(st, now, &res.task_sid, Some("completed"), Some("reservation completed"), None)?);
        }
        (a, b) if a == b => {}
        _ => return Err(conflict()),
    }
    Ok(fx)
}

/// Rejects every pending reservation of a worker (the Workers resource's
/// `RejectPendingReservations`), with `reservation.rejected` each. The tasks
/// go back to their queues; the caller moves the worker, then re-routes.
pub fn reject_pending_reservations(st: &mut State, now: VMs, worker_sid: &str) -> Effects {
    let mut fx = Effects::default();
    let pending: Vec<String> = st
        .reservations
        .iter()
        .filter(|r| r.worker_sid == worker_sid && r.status == ResStatus::Pending)
        .map(|r| r.sid.clone())
        .collect();
    for r in pending {
        if let Some(res) = end_offer(st, now, &r, ResStatus::Rejected) {
            fx.events.push(event(
                st,
                now,
                "reservation.rejected",
                "Reservation rejected",
                Some(&res.task_sid),
                Some(&r),
                None,
            ));
            fx.extend(next_target_if_due(st, now, &res.task_sid));
        }
    }
    fx
}

fn set_res(st: &mut State, now: VMs, res_sid: &str, status: ResStatus) {
    if let Some(r) = st.reservations.get_mut(res_sid) {
        r.status = status;
        r.updated = now;
    }
}

/// Sets a task's status; returns its queue.
fn set_task(st: &mut State, now: VMs, task_sid: &str, status: TaskStatus, reason: Option<&str>) -> Option<String> {
    let t = st.tasks.get_mut(task_sid)?;
    t.status = status;
    t.updated = now;
    t.generation += 1;
    if let Some(r) = reason {
        t.reason = Some(r.into());
    }
    t.queue_sid.clone()
}

/// The bridged call ended: task and reservation to wrapping.
pub fn wrapup(st: &mut State, now: VMs, task_sid: &str) -> Effects {
    let mut fx = Effects::default();
    let Some(t) = st.tasks.get(task_sid) else { return fx };
    if t.status != TaskStatus::Assigned {
        return fx;
    }
    let res = t.reservation_sid.clone();
    set_task(st, now, task_sid, TaskStatus::Wrapping, None);
    fx.events.push(event(st, now, "task.wrapup", "Task wrapping up", Some(task_sid), res.as_deref(), None));
    if let Some(r) = res {
        set_res(st, now, &r, ResStatus::Wrapping);
        fx.events.push(event(st, now, "reservation.wrapup", "Reservation wrapping up", Some(task_sid), Some(&r), None));
    }
    fx
}

/// The Tasks resource's update: `AssignmentStatus` (+ `Reason`), `Attributes`, `Priority`.
///
/// Canceling a task does not touch the call that `<Enqueue>` created it for:
/// Twilio documents that the caller stays in the queue ("the task may time
/// out with a TTL exceeded message even though the call remains active", in
/// TaskRouter's "Timeout evaluation" page), and that the application should
/// listen for `task.canceled` and update the call itself.
pub fn update_task(
    st: &mut State,
    now: VMs,
    task_sid: &str,
    status: Option<&str>,
    reason: Option<&str>,
    attributes: Option<&str>,
) -> ApiResult<Effects> {
    let task = st.tasks.get(task_sid).ok_or_else(|| not_found("Task", task_sid))?.clone();
    let mut fx = Effects::default();
    if let Some(raw) = attributes {
        let v: Value = serde_json::from_str(raw)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| bad_request(20001, "Attributes must be a JSON object"))?;
        if let Some(t) = st.tasks.get_mut(task_sid) {
            t.attributes = v;
            t.attributes_raw = raw.into();
            t.updated = now;
        }
        fx.events.push(event(st, now, "task.updated", "Task updated", Some(task_sid), None, None));
    }
    let Some(status) = status else { return Ok(fx) };
    let new = TaskStatus::parse(status)
        .ok_or_else(|| bad_request(20001, format!("AssignmentStatus {status:?} is invalid")))?;
    let res = task.reservation_sid.clone();
    let worker = res.as_ref().and_then(|r| st.reservations.get(r)).map(|r| r.worker_sid.clone());
    use TaskStatus::*;
    match (task.status, new) {
        (Pending | Reserved, Canceled) => {
            set_task(st, now, task_sid, Canceled, Some(reason.unwrap_or("canceled")));
            let offers = st.tasks.get_mut(task_sid).map(|t| std::mem::take(&mut t.offers)).unwrap_or_default();
            drop_pending(st, &task);
            fx.events.push(event(st, now, "task.canceled", "Task canceled", Some(task_sid), None, None));
            fx.extend(cancel_offers(st, now, task_sid, &offers));
            if !offers.is_empty() {
                fx.extend(assign(st, now, &task.workspace_sid));
            }
        }
        (Assigned, Wrapping) => fx.extend(wrapup(st, now, task_sid)),
        (Assigned | Wrapping, Completed) => {
            set_task(st, now, task_sid, Completed, Some(reason.unwrap_or("completed")));
            if let (Some(r), Some(w)) = (&res, &worker) {
                set_res(st, now, r, ResStatus::Completed);
                release(st, w);
            }
            fx.events.push(event(st, now, "task.completed", "Task completed", Some(task_sid), res.as_deref(), None));
            if let Some(r) = &res {
                fx.events.push(event(
                    st,
                    now,
                    "reservation.completed",
                    "Reservation completed",
                    Some(task_sid),
                    Some(r),
                    None,
                ));
            }
            fx.extend(assign(st, now, &task.workspace_sid));
        }
        (a, b) if a == b => {}
        (a, b) => {
            return Err(bad_request(
                20001,
                format!("Task {task_sid} is {} and cannot become {}", a.as_str(), b.as_str()),
            ));
        }
    }
    Ok(fx)
}

/// Cancels a task's pending reservations, with `reservation.canceled` each,
/// and frees their workers' slots.
fn cancel_offers(st: &mut State, now: VMs, task_sid: &str, offers: &[String]) -> Effects {
    let mut fx = Effects::default();
    for r in offers {
        let Some(res) = st.reservations.get(r).filter(|r| r.status == ResStatus::Pending).cloned() else {
            continue;
        };
        set_res(st, now, r, ResStatus::Canceled);
        release(st, &res.worker_sid);
        fx.events.push(event(st, now, "reservation.canceled", "Reservation canceled", Some(task_sid), Some(r), None));
    }
    fx
}

fn drop_pending(st: &mut State, task: &Task) {
    if let Some(ws) = st.workspaces.get_mut(&task.workspace_sid) {
        ws.pending.retain(|t| *t != task.sid);
    }
}

/// Deletes a task, releasing whatever it held.
pub fn delete_task(st: &mut State, now: VMs, task_sid: &str) -> ApiResult<Effects> {
    let task = st.tasks.get(task_sid).ok_or_else(|| not_found("Task", task_sid))?.clone();
    let mut fx = cancel_offers(st, now, task_sid, &task.offers);
    if let Some(r) = &task.reservation_sid
        && let Some(res) = st.reservations.get(r).cloned()
        && matches!(res.status, ResStatus::Accepted | ResStatus::Wrapping)
    {
        release(st, &res.worker_sid);
        set_res(st, now, r, ResStatus::Canceled);
    }
    drop_pending(st, &task);
    fx.events.push(event(st, now, "task.deleted", "Task deleted", Some(task_sid), None, None));
    st.tasks.remove(task_sid);
    fx.extend(assign(st, now, &task.workspace_sid));
    Ok(fx)
}

/// A timer came due.
pub fn fire(st: &mut State, now: VMs, timer: &Timer) -> Effects {
    let mut fx = Effects::default();
    match timer {
        Timer::ReservationTimeout { reservation, .. } => {
            let Some(res) = end_offer(st, now, reservation, ResStatus::Timeout) else {
                return fx;
            };
            fx.events.push(event(
                st,
                now,
                "reservation.timeout",
                "Reservation timed out",
                Some(&res.task_sid),
                Some(reservation),
                None,
            ));
            let timeout_activity = st.workspaces.get(&res.workspace_sid).map(|w| w.timeout_activity_sid.clone());
            if let Some(a) = timeout_activity {
                fx.extend(set_activity(st, now, &res.worker_sid, &a));
            }
            fx.extend(next_target_if_due(st, now, &res.task_sid));
            fx.extend(assign(st, now, &res.workspace_sid));
        }
        Timer::TaskTtl { task, .. } => {
            let Some(t) = st.tasks.get(task) else { return fx };
            if t.status.is_final() || !matches!(t.status, TaskStatus::Pending | TaskStatus::Reserved) {
                return fx;
            }
            if let Ok(more) = update_task(st, now, task, Some("canceled"), Some("Task TTL Exceeded"), None) {
                fx.extend(more);
            }
        }
        Timer::TargetTimeout { task, generation, .. } => {
            if st.tasks.get(task).is_some_and(|t| t.generation == *generation) {
                fx.extend(next_target_if_due(st, now, task));
            }
        }
    }
    fx
}

/// Moves a waiting task on to its workflow's next target once the current
/// target's timeout has passed. A task reserved at that moment moves when its
/// reservations end without acceptance (Twilio's "Timeout evaluation": the
/// task re-evaluates after the reservation timeout).
fn next_target_if_due(st: &mut State, now: VMs, task_sid: &str) -> Effects {
    let mut fx = Effects::default();
    let Some(t) = st.tasks.get_mut(task_sid) else { return fx };
    let due = t
        .targets
        .get(t.target_index)
        .and_then(|tg| tg.timeout_secs)
        .zip(t.queue_entered)
        .is_some_and(|(secs, entered)| entered.saturating_add(secs.saturating_mul(1000)) <= now);
    if !due || t.status != TaskStatus::Pending || t.target_index + 1 >= t.targets.len() {
        return fx;
    }
    t.target_index += 1;
    t.generation += 1;
    t.queue_sid = Some(t.targets[t.target_index].queue.clone());
    t.queue_entered = Some(now);
    if let Some(p) = t.targets[t.target_index].priority {
        t.priority = p;
    }
    let ws = t.workspace_sid.clone();
    fx.events.push(event(st, now, "task-queue.moved", "Task moved to the next target", Some(task_sid), None, None));
    arm_target_timeout(st, now, task_sid, &mut fx);
    fx.extend(assign(st, now, &ws));
    fx
}

/// Builds an event's form parameters from the current state.
pub fn event(
    st: &mut State,
    now: VMs,
    event_type: &str,
    description: &str,
    task_sid: Option<&str>,
    res_sid: Option<&str>,
    worker_sid: Option<&str>,
) -> Event {
    let sid = st.sid("EV");
    let task = task_sid.and_then(|t| st.tasks.get(t));
    let res = res_sid.and_then(|r| st.reservations.get(r));
    let worker_sid = worker_sid.map(str::to_owned).or_else(|| res.map(|r| r.worker_sid.clone()));
    let worker = worker_sid.as_deref().and_then(|w| st.workers.get(w));
    let ws_sid =
        task.map(|t| t.workspace_sid.clone()).or_else(|| worker.map(|w| w.workspace_sid.clone())).unwrap_or_default();
    let ws_name = st.workspaces.get(&ws_sid).map(|w| w.friendly_name.clone()).unwrap_or_default();
    let (resource_type, resource_sid) = if let Some(r) = res_sid {
        ("reservation", r.to_owned())
    } else if let Some(t) = task_sid {
        ("task", t.to_owned())
    } else {
        ("worker", worker_sid.clone().unwrap_or_default())
    };
    let mut p = Params::new();
    p.push("Sid", &sid)
        .push("EventType", event_type)
        .push("EventDescription", description)
        .push("ResourceType", resource_type)
        .push("ResourceSid", resource_sid)
        .push("WorkspaceSid", &ws_sid)
        .push("WorkspaceName", ws_name)
        // Virtual seconds and ms since start; the rim turns them into Unix time.
        .push("Timestamp", (now / 1000).to_string())
        .push("TimestampMs", now.to_string());
    if let Some(t) = task {
        let queue = t.queue_sid.as_ref().and_then(|q| st.queues.get(q));
        let wf = st.workflows.get(&t.workflow_sid);
        p.push("TaskSid", &t.sid)
            .push("TaskAttributes", &t.attributes_raw)
            .push("TaskAssignmentStatus", t.status.as_str())
            .push("TaskAge", (now.saturating_sub(t.created) / 1000).to_string())
            .push("TaskPriority", t.priority.to_string())
            .push("TaskDateCreated", (t.created / 1000).to_string())
            .push("TaskTimeout", t.timeout_secs.to_string())
            .push("TaskChannelUniqueName", "voice")
            .push_opt("TaskCanceledReason", t.reason.clone().filter(|_| t.status == TaskStatus::Canceled))
            .push_opt("TaskCompletedReason", t.reason.clone().filter(|_| t.status == TaskStatus::Completed))
            .push_opt("TaskQueueSid", queue.map(|q| q.sid.clone()))
            .push_opt("TaskQueueName", queue.map(|q| q.friendly_name.clone()))
            .push_opt("TaskQueueTargetExpression", queue.map(|q| q.target_workers.clone()))
            .push("WorkflowSid", &t.workflow_sid)
            .push_opt("WorkflowName", wf.map(|w| w.friendly_name.clone()));
    }
    if let Some(r) = res {
        p.push("ReservationSid", &r.sid).push("ReservationStatus", r.status.as_str());
    }
    if let Some(w) = worker {
        let act = st.activities.get(&w.activity_sid);
        p.push("WorkerSid", &w.sid)
            .push("WorkerName", &w.friendly_name)
            .push("WorkerAttributes", &w.attributes_raw)
            .push("WorkerActivitySid", &w.activity_sid)
            .push_opt("WorkerActivityName", act.map(|a| a.friendly_name.clone()))
            .push("WorkerAvailable", act.is_some_and(|a| a.available).to_string())
            .push("WorkerChannelAvailable", w.channel_available.to_string())
            .push("WorkerChannelAvailableCapacity", w.capacity.saturating_sub(w.in_use).to_string());
    }
    Event { workspace_sid: ws_sid, event_type: event_type.into(), params: p }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{TaskQueue, Workflow};

    /// A workspace with one queue (all workers), a workflow with a 30 s
    /// reservation timeout, and `n` available workers.
    fn setup(n: usize) -> (State, String, String, Vec<String>) {
        let mut st = State::new(1);
        let ws = create_workspace(&mut st, 0, "ws");
        let available = st.activities.iter().find(|a| a.available).unwrap().sid.clone();
        let q = st.sid("WQ");
        st.queues.insert(
            q.clone(),
            TaskQueue {
                sid: q.clone(),
                workspace_sid: ws.clone(),
                friendly_name: "q".into(),
                target_workers: "1==1".into(),
                target_expr: Compiled::parse("1==1").unwrap(),
                assignment_activity_sid: None,
                reservation_activity_sid: None,
                max_reserved_workers: 1,
                task_order: "FIFO".into(),
                created: 0,
                updated: 0,
            },
        );
        let wf = st.sid("WW");
        st.workflows.insert(
            wf.clone(),
            Workflow {
                sid: wf.clone(),
                workspace_sid: ws.clone(),
                friendly_name: "wf".into(),
                configuration: String::new(),
                filters: Vec::new(),
                default_target: Some(Target { queue: q, expression: None, timeout_secs: None, priority: None }),
                assignment_callback_url: None,
                fallback_assignment_callback_url: None,
                task_reservation_timeout: 30,
                created: 0,
                updated: 0,
            },
        );
        let mut workers = Vec::new();
        for i in 0..n {
            let sid = st.sid("WK");
            let channel_sid = st.sid("WC");
            st.workers.insert(
                sid.clone(),
                Worker {
                    sid: sid.clone(),
                    workspace_sid: ws.clone(),
                    friendly_name: format!("w{i}"),
                    attributes: serde_json::json!({}),
                    attributes_raw: "{}".into(),
                    activity_sid: available.clone(),
                    status_changed: 0,
                    created: 0,
                    updated: 0,
                    channel_sid,
                    capacity: 1,
                    channel_available: true,
                    in_use: 0,
                    last_reserved: None,
                },
            );
            st.workspaces.get_mut(&ws).unwrap().workers.push(sid.clone());
            workers.push(sid);
        }
        (st, ws, wf, workers)
    }

    fn types(fx: &Effects) -> Vec<&str> {
        fx.events.iter().map(|e| e.event_type.as_str()).collect()
    }

    #[test]
    fn reservation_timeout_reroutes_to_the_next_worker() {
        let (mut st, ws, wf, workers) = setup(2);
        let (task, fx) = create_task(&mut st, 1_000, &ws, &wf, "{}", None, None).unwrap();
        assert_eq!(types(&fx), ["task.created", "task-queue.entered", "reservation.created"]);
        let timer = fx.timers.iter().find(|t| matches!(t, Timer::ReservationTimeout { .. })).unwrap().clone();
        assert_eq!(timer.at(), 31_000);
        let fx = fire(&mut st, timer.at(), &timer);
        assert_eq!(types(&fx), ["reservation.timeout", "worker.activity.update", "reservation.created"]);
        let t = st.tasks.get(&task).unwrap();
        assert_eq!(t.status, TaskStatus::Reserved);
        let res = st.reservations.get(&t.offers[0]).unwrap();
        assert_eq!(res.worker_sid, workers[1]);
        // The first worker went to the timeout activity (Offline) and holds nothing.
        let w0 = st.workers.get(&workers[0]).unwrap();
        assert_eq!((w0.in_use, worker_available(&st, w0)), (0, false));
        // A stale timer does nothing once the reservation was accepted.
        let res_sid = res.sid.clone();
        update_reservation(&mut st, 40_000, &res_sid, "accepted", None).unwrap();
        let again = Timer::ReservationTimeout { reservation: res_sid, at: 61_000 };
        assert!(fire(&mut st, 61_000, &again).events.is_empty());
    }

    #[test]
    fn ttl_cancels_a_waiting_task_and_capacity_is_released_on_completion() {
        let (mut st, ws, wf, _) = setup(1);
        let (t1, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let (t2, fx) = create_task(&mut st, 0, &ws, &wf, "{}", None, Some(10)).unwrap();
        assert_eq!(st.tasks.get(&t2).unwrap().status, TaskStatus::Pending);
        let ttl = fx.timers.iter().find(|t| matches!(t, Timer::TaskTtl { .. })).unwrap().clone();
        let fx = fire(&mut st, ttl.at(), &ttl);
        assert_eq!(types(&fx), ["task.canceled"]);
        assert_eq!(st.tasks.get(&t2).unwrap().reason.as_deref(), Some("Task TTL Exceeded"));
        // Completing the first task frees the worker for a third.
        let (t3, _) = create_task(&mut st, 20_000, &ws, &wf, "{}", Some(5), None).unwrap();
        let res = st.tasks.get(&t1).unwrap().offers[0].clone();
        update_reservation(&mut st, 21_000, &res, "accepted", None).unwrap();
        let fx = update_task(&mut st, 22_000, &t1, Some("completed"), Some("done"), None).unwrap();
        assert_eq!(types(&fx), ["task.completed", "reservation.completed", "reservation.created"]);
        assert_eq!(st.tasks.get(&t3).unwrap().status, TaskStatus::Reserved);
    }

    /// The SIDs of the task's pending reservations and their workers.
    fn offers(st: &State, task: &str) -> Vec<(String, String)> {
        let t = st.tasks.get(task).unwrap();
        t.offers.iter().map(|r| (r.clone(), st.reservations.get(r).unwrap().worker_sid.clone())).collect()
    }

    fn activity(st: &State, name: &str) -> String {
        st.activities.iter().find(|a| a.friendly_name == name).unwrap().sid.clone()
    }

    fn timeout_timer(fx: &Effects, res: &str) -> Timer {
        fx.timers
            .iter()
            .find(|t| matches!(t, Timer::ReservationTimeout { reservation, .. } if reservation == res))
            .unwrap_or_else(|| panic!("no timeout timer for {res} in {:?}", fx.timers))
            .clone()
    }

    #[test]
    fn a_timed_out_reservation_is_offered_again_to_the_same_available_worker() {
        let (mut st, ws, wf, workers) = setup(1);
        // As call-router provisions it: a worker that lets a reservation time out stays Available.
        let available = activity(&st, "Available");
        st.workspaces.get_mut(&ws).unwrap().timeout_activity_sid = available;
        let (task, fx) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let (first, worker) = offers(&st, &task).remove(0);
        assert_eq!(worker, workers[0]);
        let fx = fire(&mut st, 30_000, &timeout_timer(&fx, &first));
        assert_eq!(types(&fx), ["reservation.timeout", "reservation.created"]);
        let (second, worker) = offers(&st, &task).remove(0);
        assert_ne!(second, first, "a re-offer is a new reservation");
        assert_eq!(worker, workers[0]);
        assert_eq!(st.reservations.get(&first).unwrap().status, ResStatus::Timeout);
        assert_eq!(st.tasks.get(&task).unwrap().status, TaskStatus::Reserved);
        assert_eq!(st.workers.get(&workers[0]).unwrap().in_use, 1, "the old slot was released, the new one taken");
        let created = fx.events.iter().find(|e| e.event_type == "reservation.created").unwrap();
        assert_eq!(created.params.get("ReservationSid"), Some(second.as_str()));
        // The new reservation has its own timeout; the old timer is spent.
        let again = fire(&mut st, 60_000, &timeout_timer(&fx, &second));
        assert_eq!(types(&again), ["reservation.timeout", "reservation.created"]);
        assert!(fire(&mut st, 60_000, &Timer::ReservationTimeout { reservation: first, at: 30_000 }).events.is_empty());
    }

    #[test]
    fn a_rejected_task_goes_to_the_next_worker_and_back_to_the_first() {
        let (mut st, ws, wf, workers) = setup(2);
        let (task, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let (first, worker) = offers(&st, &task).remove(0);
        assert_eq!(worker, workers[0]);
        let fx = update_reservation(&mut st, 1_000, &first, "rejected", None).unwrap();
        assert_eq!(types(&fx), ["reservation.rejected", "reservation.created"]);
        let (second, worker) = offers(&st, &task).remove(0);
        assert_eq!(worker, workers[1], "the worker idle longest goes next");
        // The first worker stayed available: when the second rejects too, it is offered the task again.
        let fx = update_reservation(&mut st, 2_000, &second, "rejected", None).unwrap();
        assert_eq!(types(&fx), ["reservation.rejected", "reservation.created"]);
        assert_eq!(offers(&st, &task)[0].1, workers[0]);
        // A reservation that is over cannot be rejected again.
        assert_eq!(update_reservation(&mut st, 3_000, &first, "accepted", None).unwrap_err().status, 400);
    }

    #[test]
    fn worker_activity_sid_moves_a_rejecting_worker_out_of_routing() {
        let (mut st, ws, wf, workers) = setup(1);
        let unavailable = activity(&st, "Unavailable");
        let (task, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let (res, _) = offers(&st, &task).remove(0);
        let fx = update_reservation(&mut st, 1_000, &res, "rejected", Some(&unavailable)).unwrap();
        assert_eq!(types(&fx), ["reservation.rejected", "worker.activity.update"]);
        let w = st.workers.get(&workers[0]).unwrap();
        assert_eq!((w.activity_sid.as_str(), w.in_use), (unavailable.as_str(), 0));
        let t = st.tasks.get(&task).unwrap();
        assert_eq!((t.status, t.offers.len()), (TaskStatus::Pending, 0));
        // Back to Available: offered again at once.
        let available = activity(&st, "Available");
        let fx = set_activity(&mut st, 2_000, &workers[0], &available);
        assert_eq!(types(&fx), ["worker.activity.update", "reservation.created"]);
        // An activity of another workspace is refused, and nothing changes.
        let (res, _) = offers(&st, &task).remove(0);
        let other = create_workspace(&mut st, 0, "other");
        let foreign = st.activities.iter().find(|a| a.workspace_sid == other).unwrap().sid.clone();
        assert_eq!(update_reservation(&mut st, 3_000, &res, "rejected", Some(&foreign)).unwrap_err().status, 400);
        assert_eq!(st.reservations.get(&res).unwrap().status, ResStatus::Pending);
    }

    #[test]
    fn max_reserved_workers_offers_in_parallel_and_acceptance_rescinds_the_rest() {
        let (mut st, ws, wf, workers) = setup(3);
        let q = st.queues.iter().next().unwrap().sid.clone();
        st.queues.get_mut(&q).unwrap().max_reserved_workers = 2;
        let (task, fx) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        assert_eq!(types(&fx), ["task.created", "task-queue.entered", "reservation.created", "reservation.created"]);
        let offered = offers(&st, &task);
        assert_eq!(offered.iter().map(|(_, w)| w.clone()).collect::<Vec<_>>(), workers[..2]);
        // One times out: the task keeps its other offer and gains one for the third worker.
        let timer = timeout_timer(&fx, &offered[0].0);
        let more = fire(&mut st, 30_000, &timer);
        assert!(types(&more).contains(&"reservation.created"), "{:?}", types(&more));
        let now_offered = offers(&st, &task);
        assert_eq!(now_offered.len(), 2);
        assert!(now_offered.iter().any(|(_, w)| *w == workers[2]));
        // Accepting one rescinds the other, and frees its worker.
        let (winner, winner_worker) = now_offered[0].clone();
        let (loser, loser_worker) = now_offered[1].clone();
        let fx = update_reservation(&mut st, 31_000, &winner, "accepted", None).unwrap();
        assert_eq!(&types(&fx)[..2], ["reservation.accepted", "reservation.rescinded"]);
        let rescinded = &fx.events[1];
        assert_eq!(rescinded.params.get("ReservationSid"), Some(loser.as_str()));
        assert_eq!(rescinded.params.get("ReservationStatus"), Some("rescinded"));
        assert_eq!(rescinded.params.get("TaskAssignmentStatus"), Some("assigned"));
        assert_eq!(st.reservations.get(&loser).unwrap().status, ResStatus::Rescinded);
        assert_eq!(st.workers.get(&loser_worker).unwrap().in_use, 0);
        assert_eq!(st.workers.get(&winner_worker).unwrap().in_use, 1);
        let t = st.tasks.get(&task).unwrap();
        assert_eq!(
            (t.status, t.reservation_sid.as_deref(), t.offers.len()),
            (TaskStatus::Assigned, Some(winner.as_str()), 0)
        );
        assert!(!st.workspaces.get(&ws).unwrap().pending.contains(&task));
        // The rescinded reservation cannot be accepted any more (Dial->Queue's 14215).
        assert!(update_reservation(&mut st, 32_000, &loser, "accepted", None).is_err());
        // Completing releases the winner.
        update_task(&mut st, 40_000, &task, Some("completed"), None, None).unwrap();
        assert_eq!(st.workers.get(&winner_worker).unwrap().in_use, 0);
    }

    #[test]
    fn canceling_a_task_with_parallel_offers_cancels_each() {
        let (mut st, ws, wf, workers) = setup(2);
        let q = st.queues.iter().next().unwrap().sid.clone();
        st.queues.get_mut(&q).unwrap().max_reserved_workers = 5;
        let (task, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        assert_eq!(offers(&st, &task).len(), 2, "one offer per free worker, up to the maximum");
        let fx = update_task(&mut st, 1_000, &task, Some("canceled"), Some("gone"), None).unwrap();
        assert_eq!(types(&fx), ["task.canceled", "reservation.canceled", "reservation.canceled"]);
        assert!(workers.iter().all(|w| st.workers.get(w).unwrap().in_use == 0));
    }

    #[test]
    fn reject_pending_reservations_rejects_and_reroutes() {
        let (mut st, ws, wf, workers) = setup(2);
        let offline = activity(&st, "Offline");
        // Worker 0 gets the first task; worker 1 the second.
        let (t1, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let (t2, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        assert_eq!(offers(&st, &t1)[0].1, workers[0]);
        assert_eq!(offers(&st, &t2)[0].1, workers[1]);
        let res = offers(&st, &t1)[0].0.clone();
        let mut fx = reject_pending_reservations(&mut st, 1_000, &workers[0]);
        fx.extend(set_activity(&mut st, 1_000, &workers[0], &offline));
        assert_eq!(types(&fx), ["reservation.rejected", "worker.activity.update"]);
        assert_eq!(st.reservations.get(&res).unwrap().status, ResStatus::Rejected);
        assert_eq!(st.tasks.get(&t1).unwrap().status, TaskStatus::Pending, "no other worker is free");
        // Worker 1 frees up: the rejected task is offered to it, never to the offline worker.
        let r2 = offers(&st, &t2)[0].0.clone();
        update_reservation(&mut st, 2_000, &r2, "accepted", None).unwrap();
        let fx = update_task(&mut st, 3_000, &t2, Some("completed"), None, None).unwrap();
        assert!(types(&fx).contains(&"reservation.created"));
        assert_eq!(offers(&st, &t1)[0].1, workers[1]);
        // Nothing pending: nothing to reject.
        assert!(reject_pending_reservations(&mut st, 4_000, &workers[0]).events.is_empty());
    }

    #[test]
    fn workspaces_multitask_by_default() {
        let (mut st, ws, wf, workers) = setup(1);
        assert!(st.workspaces.get(&ws).unwrap().multi_task_enabled);
        st.workers.get_mut(&workers[0]).unwrap().capacity = 2;
        let (t1, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let (t2, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        assert_eq!(st.tasks.get(&t1).unwrap().status, TaskStatus::Reserved);
        assert_eq!(st.tasks.get(&t2).unwrap().status, TaskStatus::Reserved, "a capacity of 2 takes two tasks");
        // Single-tasking, the same worker takes one task at a time.
        st.workspaces.get_mut(&ws).unwrap().multi_task_enabled = false;
        let (t3, _) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let r1 = offers(&st, &t1)[0].0.clone();
        update_reservation(&mut st, 1_000, &r1, "rejected", None).unwrap();
        assert_eq!(st.tasks.get(&t3).unwrap().status, TaskStatus::Pending);
    }

    #[test]
    fn a_reserved_task_moves_to_its_next_target_when_the_reservation_ends() {
        use crate::state::Filter;
        let (mut st, ws, wf, workers) = setup(2);
        let q1 = st.queues.iter().next().unwrap().sid.clone();
        let mut second = st.queues.get(&q1).unwrap().clone();
        second.sid = st.sid("WQ");
        let q2 = second.sid.clone();
        st.queues.insert(q2.clone(), second);
        for (q, n) in [(&q1, 1), (&q2, 2)] {
            st.queues.get_mut(q).unwrap().target_expr = Compiled::parse(&format!("q == {n}")).unwrap();
        }
        for (w, n) in workers.iter().zip([1, 2]) {
            st.workers.get_mut(w).unwrap().attributes = serde_json::json!({ "q": n });
        }
        let target =
            |queue: &str, timeout_secs| Target { queue: queue.into(), expression: None, timeout_secs, priority: None };
        let flow = st.workflows.get_mut(&wf).unwrap();
        flow.default_target = None;
        flow.filters = vec![Filter {
            name: "f".into(),
            expression: Compiled::parse("1==1").unwrap(),
            targets: vec![target(&q1, Some(10)), target(&q2, None)],
        }];
        let (task, fx) = create_task(&mut st, 0, &ws, &wf, "{}", None, None).unwrap();
        let (res, worker) = offers(&st, &task).remove(0);
        assert_eq!(worker, workers[0]);
        // The first target's 10 s pass while the task is reserved: it stays.
        let target_timer = fx.timers.iter().find(|t| matches!(t, Timer::TargetTimeout { .. })).unwrap().clone();
        assert!(fire(&mut st, target_timer.at(), &target_timer).events.is_empty());
        assert_eq!(st.tasks.get(&task).unwrap().queue_sid.as_deref(), Some(q1.as_str()));
        // The reservation times out at 30 s: the task re-evaluates and moves on.
        let fx = fire(&mut st, 30_000, &timeout_timer(&fx, &res));
        assert_eq!(
            types(&fx),
            ["reservation.timeout", "worker.activity.update", "task-queue.moved", "reservation.created"]
        );
        assert_eq!(st.tasks.get(&task).unwrap().queue_sid.as_deref(), Some(q2.as_str()));
        assert_eq!(offers(&st, &task)[0].1, workers[1]);
    }
}
