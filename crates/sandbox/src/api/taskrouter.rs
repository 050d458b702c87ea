//! TaskRouter's REST resources (`/v1/Workspaces/…`): workspaces, activities,
//! task queues, workers and their channels, workflows, tasks, reservations.
//!
//! Handlers validate input, change the state through [`crate::engine`] under
//! the lock, then hand the engine's effects to the rim.

use std::sync::Arc;

use axum::http::Method;
use serde_json::{Value, json};
use twilio::ErrorBody;

use super::{
    ApiResult, Req, bad, created, method_not_allowed, no_content, ok, paginate, parse_bool, parse_num, tr_page, truthy,
};
use crate::Shared;
use crate::clock::{VMs, iso8601};
use crate::engine::{self, Effects};
use crate::state::{Activity, Compiled, Filter, ResStatus, State, Target, TaskQueue, TaskStatus, Worker, Workflow};

pub(super) fn route(shared: &Arc<Shared>, path: &str, segs: &[&str], req: &Req) -> ApiResult {
    let m = &req.method;
    let (reply, fx) = shared.with(|st, now| -> Result<(super::Reply, Effects), ErrorBody> {
        let cx = Cx {
            clock: &shared.clock,
            base: &shared.base_url,
            account: shared.config.account_sid.as_str(),
            now,
            path,
            req,
        };
        let none = |r: ApiResult| r.map(|r| (r, Effects::default()));
        match segs {
            ["Workspaces"] if m == Method::GET => none(cx.list_workspaces(st)),
            ["Workspaces"] if m == Method::POST => none(cx.create_workspace(st)),
            ["Workspaces", ws] => {
                cx.ws(st, ws)?;
                match *m {
                    Method::GET => none(ok(cx.ws_json(st, ws))),
                    Method::POST => none(cx.update_workspace(st, ws)),
                    Method::DELETE => {
                        st.workspaces.remove(ws);
                        none(no_content())
                    }
                    _ => Err(method_not_allowed(m)),
                }
            }
            ["Workspaces", ws, rest @ ..] => {
                cx.ws(st, ws)?;
                cx.in_workspace(st, ws, rest)
            }
            _ => Err(super::not_found(path)),
        }
    })?;
    shared.apply(fx);
    Ok(reply)
}

struct Cx<'a> {
    clock: &'a crate::clock::Clock,
    base: &'a str,
    account: &'a str,
    now: VMs,
    path: &'a str,
    req: &'a Req,
}

type FxResult = Result<(super::Reply, Effects), ErrorBody>;

fn with_fx(r: ApiResult, fx: Effects) -> FxResult {
    r.map(|r| (r, fx))
}

impl Cx<'_> {
    fn date(&self, at: VMs, _st: &State) -> String {
        iso8601(self.clock.wall(at))
    }

    fn ws(&self, st: &State, ws: &str) -> Result<(), ErrorBody> {
        st.workspaces.get(ws).map(|_| ()).ok_or_else(|| super::not_found(self.path))
    }

    fn list(&self, key: &str, items: Vec<Value>) -> ApiResult {
        ok(tr_page(self.base, self.req, self.path, key, paginate(self.req, items)?))
    }

    fn name_filter(&self, name: &str) -> bool {
        self.req.query.get("FriendlyName").is_none_or(|f| f == name)
    }

    fn list_workspaces(&self, st: &State) -> ApiResult {
        let items = st
            .workspaces
            .iter()
            .filter(|w| self.name_filter(&w.friendly_name))
            .map(|w| self.ws_json(st, &w.sid))
            .collect();
        self.list("workspaces", items)
    }

    fn create_workspace(&self, st: &mut State) -> ApiResult {
        let name = self
            .req
            .get("FriendlyName")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(20001, "Missing required parameter FriendlyName in the post body"))?;
        let sid = engine::create_workspace(st, self.now, name);
        if let Err(e) = self.apply_workspace(st, &sid) {
            st.workspaces.remove(&sid);
            return Err(e);
        }
        created(self.ws_json(st, &sid))
    }

    fn update_workspace(&self, st: &mut State, ws: &str) -> ApiResult {
        self.apply_workspace(st, ws)?;
        ok(self.ws_json(st, ws))
    }

    fn apply_workspace(&self, st: &mut State, ws: &str) -> Result<(), ErrorBody> {
        let r = self.req;
        for key in ["DefaultActivitySid", "TimeoutActivitySid"] {
            if let Some(a) = r.get(key)
                && st.activities.get(a).is_none_or(|a| a.workspace_sid != ws)
            {
                return Err(bad(20001, format!("{key} {a} is not an activity of this workspace")));
            }
        }
        if let Some(u) = r.get("EventCallbackUrl")
            && !u.is_empty()
            && !super::valid_url(u)
        {
            return Err(bad(20001, format!("EventCallbackUrl {u:?} is not a valid URL")));
        }
        let multi = r.get("MultiTaskEnabled").map(|v| parse_bool("MultiTaskEnabled", v)).transpose()?;
        let Some(w) = st.workspaces.get_mut(ws) else {
            return Ok(());
        };
        if let Some(n) = r.get("FriendlyName") {
            w.friendly_name = n.into();
        }
        if let Some(u) = r.get("EventCallbackUrl") {
            w.event_callback_url = (!u.is_empty()).then(|| u.to_owned());
        }
        if let Some(f) = r.get("EventsFilter") {
            w.events_filter = (!f.is_empty()).then(|| f.to_owned());
        }
        if let Some(a) = r.get("DefaultActivitySid") {
            w.default_activity_sid = a.into();
        }
        if let Some(a) = r.get("TimeoutActivitySid") {
            w.timeout_activity_sid = a.into();
        }
        if let Some(m) = multi {
            w.multi_task_enabled = m;
        }
        if let Some(o) = r.get("PrioritizeQueueOrder") {
            w.prioritize_queue_order = o.into();
        }
        w.updated = self.now;
        Ok(())
    }

    fn ws_json(&self, st: &State, ws: &str) -> Value {
        let Some(w) = st.workspaces.get(ws) else {
            return Value::Null;
        };
        let name = |a: &str| st.activities.get(a).map(|a| a.friendly_name.clone());
        let url = format!("{}/v1/Workspaces/{}", self.base, w.sid);
        json!({
            "account_sid": self.account,
            "sid": w.sid,
            "friendly_name": w.friendly_name,
            "event_callback_url": w.event_callback_url,
            "events_filter": w.events_filter,
            "default_activity_sid": w.default_activity_sid,
            "default_activity_name": name(&w.default_activity_sid),
            "timeout_activity_sid": w.timeout_activity_sid,
            "timeout_activity_name": name(&w.timeout_activity_sid),
            "multi_task_enabled": w.multi_task_enabled,
            "prioritize_queue_order": w.prioritize_queue_order,
            "date_created": self.date(w.created, st),
            "date_updated": self.date(w.updated, st),
            "url": url,
            "links": {
                "activities": format!("{url}/Activities"),
                "statistics": format!("{url}/Statistics"),
                "real_time_statistics": format!("{url}/RealTimeStatistics"),
                "cumulative_statistics": format!("{url}/CumulativeStatistics"),
                "task_queues": format!("{url}/TaskQueues"),
                "tasks": format!("{url}/Tasks"),
                "workers": format!("{url}/Workers"),
                "workflows": format!("{url}/Workflows"),
                "task_channels": format!("{url}/TaskChannels"),
                "events": format!("{url}/Events"),
            },
        })
    }

    fn in_workspace(&self, st: &mut State, ws: &str, rest: &[&str]) -> FxResult {
        let m = &self.req.method;
        let none = |r: ApiResult| r.map(|r| (r, Effects::default()));
        match rest {
            ["Activities"] if m == Method::GET => none(self.list_activities(st, ws)),
            ["Activities"] if m == Method::POST => none(self.create_activity(st, ws)),
            ["Activities", a] => none(self.activity(st, ws, a)),
            ["TaskQueues"] if m == Method::GET => none(self.list_queues(st, ws)),
            ["TaskQueues"] if m == Method::POST => none(self.create_queue(st, ws)),
            ["TaskQueues", q] => none(self.queue(st, ws, q)),
            ["Workers"] if m == Method::GET => none(self.list_workers(st, ws)),
            ["Workers"] if m == Method::POST => self.create_worker(st, ws),
            ["Workers", w] => self.worker(st, ws, w),
            ["Workers", w, "Channels"] if m == Method::GET => {
                let wk = self.worker_of(st, ws, w)?;
                let items = vec![self.channel_json(st, &wk)];
                none(self.list("channels", items))
            }
            ["Workers", w, "Channels", c] => self.channel(st, ws, w, c),
            ["Workers", w, "Reservations"] if m == Method::GET => {
                self.worker_of(st, ws, w)?;
                none(self.list_reservations(st, |r| r.worker_sid == *w))
            }
            ["Workers", w, "Reservations", r] => self.reservation(st, ws, r, |res| res.worker_sid == *w),
            ["Workflows"] if m == Method::GET => none(self.list_workflows(st, ws)),
            ["Workflows"] if m == Method::POST => none(self.create_workflow(st, ws)),
            ["Workflows", wf] => none(self.workflow(st, ws, wf)),
            ["Tasks"] if m == Method::GET => none(self.list_tasks(st, ws)),
            ["Tasks"] if m == Method::POST => self.create_task(st, ws),
            ["Tasks", t] => self.task(st, ws, t),
            ["Tasks", t, "Reservations"] if m == Method::GET => {
                self.task_of(st, ws, t)?;
                none(self.list_reservations(st, |r| r.task_sid == *t))
            }
            ["Tasks", t, "Reservations", r] => self.reservation(st, ws, r, |res| res.task_sid == *t),
            ["TaskChannels"] if m == Method::GET => {
                let item = self.task_channel_json(st, ws);
                none(self.list("channels", vec![item]))
            }
            ["TaskChannels", c] if m == Method::GET => {
                if *c != "voice" && *c != voice_channel_sid(ws) {
                    return Err(super::not_found(self.path));
                }
                none(ok(self.task_channel_json(st, ws)))
            }
            [x] if matches!(*x, "Activities" | "TaskQueues" | "Workers" | "Workflows" | "Tasks") => {
                Err(method_not_allowed(m))
            }
            _ => Err(super::not_found(self.path)),
        }
    }

    fn ws_url(&self, ws: &str) -> String {
        format!("{}/v1/Workspaces/{ws}", self.base)
    }

    /// The workspace's one task channel, `voice` (see [`voice_channel_sid`]).
    fn task_channel_json(&self, st: &State, ws: &str) -> Value {
        let (created, updated) = st.workspaces.get(ws).map_or((0, 0), |w| (w.created, w.created));
        let ws_url = self.ws_url(ws);
        json!({
            "account_sid": self.account, "workspace_sid": ws, "sid": voice_channel_sid(ws),
            "unique_name": "voice", "friendly_name": "Voice", "channel_optimized_routing": false,
            "date_created": self.date(created, st), "date_updated": self.date(updated, st),
            "url": format!("{ws_url}/TaskChannels/{}", voice_channel_sid(ws)),
            "links": { "workspace": ws_url },
        })
    }

    // -- activities ------------------------------------------------------------

    fn act_json(&self, st: &State, a: &Activity) -> Value {
        json!({
            "account_sid": self.account, "workspace_sid": a.workspace_sid, "sid": a.sid,
            "friendly_name": a.friendly_name, "available": a.available,
            "date_created": self.date(a.created, st), "date_updated": self.date(a.updated, st),
            "url": format!("{}/Activities/{}", self.ws_url(&a.workspace_sid), a.sid),
            "links": { "workspace": self.ws_url(&a.workspace_sid) },
        })
    }

    fn list_activities(&self, st: &State, ws: &str) -> ApiResult {
        let avail = self.req.query.get("Available").map(truthy);
        let items = st
            .activities
            .iter()
            .filter(|a| a.workspace_sid == ws && self.name_filter(&a.friendly_name))
            .filter(|a| avail.is_none_or(|v| a.available == v))
            .map(|a| self.act_json(st, a))
            .collect();
        self.list("activities", items)
    }

    fn create_activity(&self, st: &mut State, ws: &str) -> ApiResult {
        let name = self
            .req
            .get("FriendlyName")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(20001, "Missing required parameter FriendlyName in the post body"))?;
        if st.activities.iter().any(|a| a.workspace_sid == ws && a.friendly_name == name) {
            return Err(ErrorBody::new(409, 20001, format!("An activity named {name} already exists")));
        }
        let available = self.req.get("Available").map(|v| parse_bool("Available", v)).transpose()?.unwrap_or(false);
        let sid = st.sid("WA");
        let a = Activity {
            sid: sid.clone(),
            workspace_sid: ws.into(),
            friendly_name: name.into(),
            available,
            created: self.now,
            updated: self.now,
        };
        let v = self.act_json(st, &a);
        st.activities.insert(sid, a);
        created(v)
    }

    fn activity(&self, st: &mut State, ws: &str, sid: &str) -> ApiResult {
        if st.activities.get(sid).is_none_or(|a| a.workspace_sid != ws) {
            return Err(super::not_found(self.path));
        }
        match self.req.method {
            Method::GET => {}
            Method::POST => {
                if let (Some(n), Some(a)) = (self.req.get("FriendlyName"), st.activities.get_mut(sid)) {
                    a.friendly_name = n.into();
                    a.updated = self.now;
                }
            }
            Method::DELETE => {
                let in_use = st.workers.iter().any(|w| w.activity_sid == sid)
                    || st
                        .workspaces
                        .get(ws)
                        .is_some_and(|w| w.default_activity_sid == sid || w.timeout_activity_sid == sid);
                if in_use {
                    return Err(bad(20001, "The activity is in use and cannot be deleted"));
                }
                st.activities.remove(sid);
                return no_content();
            }
            _ => return Err(method_not_allowed(&self.req.method)),
        }
        let a = st.activities.get(sid).cloned().ok_or_else(|| super::not_found(self.path))?;
        ok(self.act_json(st, &a))
    }

    // -- task queues -----------------------------------------------------------

    fn queue_json(&self, st: &State, q: &TaskQueue) -> Value {
        let name = |a: &Option<String>| a.as_ref().and_then(|a| st.activities.get(a)).map(|a| a.friendly_name.clone());
        let ws_url = self.ws_url(&q.workspace_sid);
        let url = format!("{ws_url}/TaskQueues/{}", q.sid);
        let mut links = json!({
            "workspace": ws_url,
            "statistics": format!("{url}/Statistics"),
            "real_time_statistics": format!("{url}/RealTimeStatistics"),
            "cumulative_statistics": format!("{url}/CumulativeStatistics"),
            "list_statistics": format!("{ws_url}/TaskQueues/Statistics"),
            "bulk_real_time_statistics": format!("{ws_url}/TaskQueues/RealTimeStatistics"),
        });
        for (key, activity) in
            [("assignment_activity", &q.assignment_activity_sid), ("reservation_activity", &q.reservation_activity_sid)]
        {
            if let Some(a) = activity {
                links[key] = Value::String(format!("{ws_url}/Activities/{a}"));
            }
        }
        json!({
            "account_sid": self.account, "workspace_sid": q.workspace_sid, "sid": q.sid,
            "friendly_name": q.friendly_name, "target_workers": q.target_workers,
            "assignment_activity_sid": q.assignment_activity_sid, "assignment_activity_name": name(&q.assignment_activity_sid),
            "reservation_activity_sid": q.reservation_activity_sid, "reservation_activity_name": name(&q.reservation_activity_sid),
            "max_reserved_workers": q.max_reserved_workers, "task_order": q.task_order,
            "date_created": self.date(q.created, st), "date_updated": self.date(q.updated, st),
            "url": url,
            "links": links,
        })
    }

    /// `GET TaskQueues`, by `FriendlyName`, and by the queues a worker is
    /// eligible for: `WorkerSid` (that worker's attributes) or
    /// `EvaluateWorkerAttributes` (a JSON object of attributes).
    fn list_queues(&self, st: &State, ws: &str) -> ApiResult {
        let q = &self.req.query;
        let mut attributes = Vec::new();
        if let Some(w) = q.get("WorkerSid") {
            // An unknown worker is eligible for nothing, so the list is empty.
            attributes.push(st.workers.get(w).filter(|w| w.workspace_sid == ws).map(|w| w.attributes.clone()));
        }
        if let Some(raw) = q.get("EvaluateWorkerAttributes") {
            let (v, _) = parse_attributes(Some(raw))
                .map_err(|_| bad(20001, "EvaluateWorkerAttributes must be a JSON object"))?;
            attributes.push(Some(v));
        }
        let items = st
            .queues
            .iter()
            .filter(|q| q.workspace_sid == ws && self.name_filter(&q.friendly_name))
            .filter(|q| attributes.iter().all(|a| a.as_ref().is_some_and(|a| eligible(q, a))))
            .map(|q| self.queue_json(st, q))
            .collect();
        self.list("task_queues", items)
    }

    fn apply_queue(&self, st: &State, ws: &str, q: &mut TaskQueue) -> Result<(), ErrorBody> {
        let r = self.req;
        if let Some(n) = r.get("FriendlyName") {
            q.friendly_name = n.into();
        }
        if let Some(t) = r.get("TargetWorkers") {
            q.target_expr = Compiled::parse(t).map_err(|e| bad(20001, format!("TargetWorkers is invalid: {e}")))?;
            q.target_workers = t.into();
        }
        for (key, slot) in [
            ("AssignmentActivitySid", &mut q.assignment_activity_sid),
            ("ReservationActivitySid", &mut q.reservation_activity_sid),
        ] {
            if let Some(a) = r.get(key) {
                if st.activities.get(a).is_none_or(|a| a.workspace_sid != ws) {
                    return Err(bad(20001, format!("{key} {a} is not an activity of this workspace")));
                }
                *slot = Some(a.into());
            }
        }
        if let Some(m) = parse_num::<u32>("MaxReservedWorkers", r.get("MaxReservedWorkers"))? {
            if !(1..=50).contains(&m) {
                return Err(bad(20001, format!("MaxReservedWorkers {m} must be between 1 and 50")));
            }
            q.max_reserved_workers = m;
        }
        if let Some(o) = r.get("TaskOrder") {
            if !matches!(o, "FIFO" | "LIFO") {
                return Err(bad(20001, format!("TaskOrder {o:?} must be FIFO or LIFO")));
            }
            q.task_order = o.into();
        }
        q.updated = self.now;
        Ok(())
    }

    fn create_queue(&self, st: &mut State, ws: &str) -> ApiResult {
        if self.req.get("FriendlyName").is_none_or(str::is_empty) {
            return Err(bad(20001, "Missing required parameter FriendlyName in the post body"));
        }
        let sid = st.sid("WQ");
        let mut q = TaskQueue {
            sid: sid.clone(),
            workspace_sid: ws.into(),
            friendly_name: String::new(),
            target_workers: "1==1".into(),
            target_expr: Compiled::parse("1==1").map_err(|e| bad(20001, e))?,
            assignment_activity_sid: None,
            reservation_activity_sid: None,
            max_reserved_workers: 1,
            task_order: "FIFO".into(),
            created: self.now,
            updated: self.now,
        };
        self.apply_queue(st, ws, &mut q)?;
        let v = self.queue_json(st, &q);
        st.queues.insert(sid, q);
        created(v)
    }

    fn queue(&self, st: &mut State, ws: &str, sid: &str) -> ApiResult {
        let mut q =
            st.queues.get(sid).filter(|q| q.workspace_sid == ws).cloned().ok_or_else(|| super::not_found(self.path))?;
        match self.req.method {
            Method::GET => {}
            Method::POST => {
                self.apply_queue(st, ws, &mut q)?;
                st.queues.insert(sid.into(), q.clone());
            }
            Method::DELETE => {
                st.queues.remove(sid);
                return no_content();
            }
            _ => return Err(method_not_allowed(&self.req.method)),
        }
        ok(self.queue_json(st, &q))
    }

    // -- workers ---------------------------------------------------------------

    fn worker_json(&self, st: &State, w: &Worker) -> Value {
        let act = st.activities.get(&w.activity_sid);
        let ws_url = self.ws_url(&w.workspace_sid);
        let url = format!("{ws_url}/Workers/{}", w.sid);
        json!({
            "account_sid": self.account, "workspace_sid": w.workspace_sid, "sid": w.sid,
            "friendly_name": w.friendly_name, "attributes": w.attributes_raw,
            "activity_sid": w.activity_sid, "activity_name": act.map(|a| a.friendly_name.clone()),
            "available": act.is_some_and(|a| a.available),
            "date_created": self.date(w.created, st), "date_updated": self.date(w.updated, st),
            "date_status_changed": self.date(w.status_changed, st),
            "url": url,
            "links": {
                "channels": format!("{url}/Channels"),
                "activity": format!("{ws_url}/Activities/{}", w.activity_sid),
                "workspace": ws_url,
                "statistics": format!("{ws_url}/Workers/Statistics"),
                "real_time_statistics": format!("{ws_url}/Workers/RealTimeStatistics"),
                "cumulative_statistics": format!("{ws_url}/Workers/CumulativeStatistics"),
                "worker_statistics": format!("{url}/Statistics"),
                "worker_channels": format!("{url}/Channels"),
                "reservations": format!("{url}/Reservations"),
            },
        })
    }

    /// `GET Workers`, by `FriendlyName`, `Available` (`true`, `1` or `yes`;
    /// anything else lists the unavailable), `ActivityName`, `ActivitySid`,
    /// `TargetWorkersExpression`, and `TaskQueueSid` / `TaskQueueName`: the
    /// workers that queue's `TargetWorkers` expression selects.
    fn list_workers(&self, st: &State, ws: &str) -> ApiResult {
        let q = &self.req.query;
        let avail = q.get("Available").map(truthy);
        // Each queue filter names one queue (or none, if no queue matches,
        // and then no worker is eligible).
        let mut queues: Vec<Option<&TaskQueue>> = Vec::new();
        if let Some(sid) = q.get("TaskQueueSid") {
            queues.push(st.queues.get(sid).filter(|x| x.workspace_sid == ws));
        }
        if let Some(name) = q.get("TaskQueueName") {
            queues.push(st.queues.iter().find(|x| x.workspace_sid == ws && x.friendly_name == name));
        }
        let target = q
            .get("TargetWorkersExpression")
            .map(|e| Compiled::parse(e).map_err(|e| bad(20001, format!("TargetWorkersExpression is invalid: {e}"))))
            .transpose()?;
        let items = st
            .workers
            .iter()
            .filter(|w| w.workspace_sid == ws && self.name_filter(&w.friendly_name))
            .filter(|w| {
                let act = st.activities.get(&w.activity_sid);
                avail.is_none_or(|v| act.is_some_and(|a| a.available) == v)
                    && q.get("ActivityName").is_none_or(|n| act.is_some_and(|a| a.friendly_name == n))
                    && q.get("ActivitySid").is_none_or(|s| w.activity_sid == s)
                    && target.as_ref().is_none_or(|t| {
                        t.expr.eval(&crate::expr::Context {
                            attributes: &w.attributes,
                            task: None,
                            worker: Some(&w.attributes),
                        })
                    })
                    && queues.iter().all(|queue| queue.is_some_and(|queue| eligible(queue, &w.attributes)))
            })
            .map(|w| self.worker_json(st, w))
            .collect();
        self.list("workers", items)
    }

    fn create_worker(&self, st: &mut State, ws: &str) -> FxResult {
        let r = self.req;
        let name = r
            .get("FriendlyName")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(20001, "Missing required parameter FriendlyName in the post body"))?;
        if st.workers.iter().any(|w| w.workspace_sid == ws && w.friendly_name == name) {
            return Err(ErrorBody::new(409, 20001, format!("A worker named {name} already exists")));
        }
        let (attributes, raw) = parse_attributes(r.get("Attributes"))?;
        let default = st.workspaces.get(ws).map(|w| w.default_activity_sid.clone()).unwrap_or_default();
        let activity = r.get("ActivitySid").unwrap_or(&default).to_owned();
        if st.activities.get(&activity).is_none_or(|a| a.workspace_sid != ws) {
            return Err(bad(20001, format!("ActivitySid {activity} is not an activity of this workspace")));
        }
        let sid = st.sid("WK");
        let channel_sid = st.sid("WC");
        let w = Worker {
            sid: sid.clone(),
            workspace_sid: ws.into(),
            friendly_name: name.into(),
            attributes,
            attributes_raw: raw,
            activity_sid: activity,
            status_changed: self.now,
            created: self.now,
            updated: self.now,
            channel_sid,
            capacity: 1,
            channel_available: true,
            in_use: 0,
            last_reserved: None,
        };
        st.workers.insert(sid.clone(), w);
        if let Some(w) = st.workspaces.get_mut(ws) {
            w.workers.push(sid.clone());
        }
        let fx = engine::assign(st, self.now, ws);
        let w = st.workers.get(&sid).cloned().ok_or_else(|| super::not_found(self.path))?;
        with_fx(created(self.worker_json(st, &w)), fx)
    }

    fn worker_of(&self, st: &State, ws: &str, sid: &str) -> Result<Worker, ErrorBody> {
        st.workers.get(sid).filter(|w| w.workspace_sid == ws).cloned().ok_or_else(|| super::not_found(self.path))
    }

    fn worker(&self, st: &mut State, ws: &str, sid: &str) -> FxResult {
        let w = self.worker_of(st, ws, sid)?;
        let mut fx = Effects::default();
        match self.req.method {
            Method::GET => {}
            Method::POST => {
                let r = self.req;
                if let Some(a) = r.get("ActivitySid")
                    && st.activities.get(a).is_none_or(|act| act.workspace_sid != ws)
                {
                    return Err(bad(20001, format!("ActivitySid {a} is not an activity of this workspace")));
                }
                let attrs = r.get("Attributes").map(|a| parse_attributes(Some(a))).transpose()?;
                let reject = r
                    .get("RejectPendingReservations")
                    .map(|v| parse_bool("RejectPendingReservations", v))
                    .transpose()?
                    .unwrap_or(false);
                // Twilio: valid only with a move to an activity that is not available.
                if reject && r.get("ActivitySid").and_then(|a| st.activities.get(a)).is_none_or(|a| a.available) {
                    return Err(bad(
                        20001,
                        "RejectPendingReservations needs an ActivitySid whose activity is not available",
                    ));
                }
                if let Some(wk) = st.workers.get_mut(sid) {
                    if let Some(n) = r.get("FriendlyName") {
                        wk.friendly_name = n.into();
                    }
                    if let Some((v, raw)) = attrs {
                        wk.attributes = v;
                        wk.attributes_raw = raw;
                    }
                    wk.updated = self.now;
                }
                if r.has("Attributes") {
                    fx.events.push(engine::event(
                        st,
                        self.now,
                        "worker.attributes.update",
                        "Worker attributes updated",
                        None,
                        None,
                        Some(sid),
                    ));
                }
                if reject {
                    fx.extend(engine::reject_pending_reservations(st, self.now, sid));
                }
                match r.get("ActivitySid") {
                    Some(a) => fx.extend(engine::set_activity(st, self.now, sid, a)),
                    None => fx.extend(engine::assign(st, self.now, ws)),
                }
                if reject {
                    // The rejected tasks wait again; route them even if the activity did not change.
                    fx.extend(engine::assign(st, self.now, ws));
                }
            }
            Method::DELETE => {
                if w.in_use > 0 {
                    return Err(bad(20001, "The worker has reservations and cannot be deleted"));
                }
                st.workers.remove(sid);
                if let Some(x) = st.workspaces.get_mut(ws) {
                    x.workers.retain(|s| s != sid);
                }
                return no_content().map(|r| (r, fx));
            }
            _ => return Err(method_not_allowed(&self.req.method)),
        }
        let w = self.worker_of(st, ws, sid)?;
        with_fx(ok(self.worker_json(st, &w)), fx)
    }

    fn channel_json(&self, st: &State, w: &Worker) -> Value {
        let _ = st;
        let free = w.capacity.saturating_sub(w.in_use);
        json!({
            "account_sid": self.account, "workspace_sid": w.workspace_sid, "worker_sid": w.sid,
            "sid": w.channel_sid, "task_channel_sid": voice_channel_sid(&w.workspace_sid),
            "task_channel_unique_name": "voice", "configured_capacity": w.capacity,
            "assigned_tasks": w.in_use, "available": w.channel_available,
            "available_capacity_percentage": (free * 100).checked_div(w.capacity).unwrap_or(0),
            "date_created": self.date(w.created, st), "date_updated": self.date(w.updated, st),
            "url": format!("{}/v1/Workspaces/{}/Workers/{}/Channels/{}", self.base, w.workspace_sid, w.sid, w.channel_sid),
        })
    }

    fn channel(&self, st: &mut State, ws: &str, wsid: &str, c: &str) -> FxResult {
        let w = self.worker_of(st, ws, wsid)?;
        if c != "voice" && c != w.channel_sid && c != voice_channel_sid(ws) {
            return Err(super::not_found(self.path));
        }
        let mut fx = Effects::default();
        match self.req.method {
            Method::GET => {}
            Method::POST => {
                let cap = parse_num::<u32>("Capacity", self.req.get("Capacity"))?;
                let avail = self.req.get("Available").map(|v| parse_bool("Available", v)).transpose()?;
                if cap.is_some_and(|c| c > WORKER_CHANNEL_CAPACITY_MAX) {
                    return Err(bad(20001, format!("Capacity must be between 0 and {WORKER_CHANNEL_CAPACITY_MAX}")));
                }
                if let Some(wk) = st.workers.get_mut(wsid) {
                    if let Some(c) = cap {
                        wk.capacity = c;
                    }
                    if let Some(a) = avail {
                        wk.channel_available = a;
                    }
                    wk.updated = self.now;
                }
                fx.extend(engine::assign(st, self.now, ws));
            }
            _ => return Err(method_not_allowed(&self.req.method)),
        }
        let w = self.worker_of(st, ws, wsid)?;
        with_fx(ok(self.channel_json(st, &w)), fx)
    }

    // -- workflows -------------------------------------------------------------

    fn wf_json(&self, st: &State, w: &Workflow) -> Value {
        let url = format!("{}/Workflows/{}", self.ws_url(&w.workspace_sid), w.sid);
        json!({
            "account_sid": self.account, "workspace_sid": w.workspace_sid, "sid": w.sid,
            "friendly_name": w.friendly_name, "configuration": w.configuration,
            "assignment_callback_url": w.assignment_callback_url,
            "fallback_assignment_callback_url": w.fallback_assignment_callback_url,
            "task_reservation_timeout": w.task_reservation_timeout,
            "document_content_type": "application/json",
            "date_created": self.date(w.created, st), "date_updated": self.date(w.updated, st),
            "url": url,
            "links": {
                "statistics": format!("{url}/Statistics"),
                "real_time_statistics": format!("{url}/RealTimeStatistics"),
                "cumulative_statistics": format!("{url}/CumulativeStatistics"),
            },
        })
    }

    fn list_workflows(&self, st: &State, ws: &str) -> ApiResult {
        let items = st
            .workflows
            .iter()
            .filter(|w| w.workspace_sid == ws && self.name_filter(&w.friendly_name))
            .map(|w| self.wf_json(st, w))
            .collect();
        self.list("workflows", items)
    }

    fn apply_workflow(&self, st: &State, ws: &str, w: &mut Workflow) -> Result<(), ErrorBody> {
        let r = self.req;
        if let Some(n) = r.get("FriendlyName") {
            w.friendly_name = n.into();
        }
        if let Some(c) = r.get("Configuration") {
            let (filters, default) = parse_configuration(st, ws, c)?;
            w.configuration = c.into();
            w.filters = filters;
            w.default_target = default;
        }
        for (key, slot) in [
            ("AssignmentCallbackUrl", &mut w.assignment_callback_url),
            ("FallbackAssignmentCallbackUrl", &mut w.fallback_assignment_callback_url),
        ] {
            if let Some(u) = r.get(key) {
                if !u.is_empty() && !super::valid_url(u) {
                    return Err(bad(20001, format!("{key} {u:?} is not a valid URL")));
                }
                *slot = (!u.is_empty()).then(|| u.to_owned());
            }
        }
        if let Some(t) = parse_num::<u64>("TaskReservationTimeout", r.get("TaskReservationTimeout"))? {
            if !(1..=86_400).contains(&t) {
                return Err(bad(20001, "TaskReservationTimeout must be between 1 and 86400"));
            }
            w.task_reservation_timeout = t;
        }
        w.updated = self.now;
        Ok(())
    }

    fn create_workflow(&self, st: &mut State, ws: &str) -> ApiResult {
        for key in ["FriendlyName", "Configuration"] {
            if self.req.get(key).is_none_or(str::is_empty) {
                return Err(bad(20001, format!("Missing required parameter {key} in the post body")));
            }
        }
        let sid = st.sid("WW");
        let mut w = Workflow {
            sid: sid.clone(),
            workspace_sid: ws.into(),
            friendly_name: String::new(),
            configuration: String::new(),
            filters: Vec::new(),
            default_target: None,
            assignment_callback_url: None,
            fallback_assignment_callback_url: None,
            task_reservation_timeout: engine::DEFAULT_RESERVATION_TIMEOUT,
            created: self.now,
            updated: self.now,
        };
        self.apply_workflow(st, ws, &mut w)?;
        let v = self.wf_json(st, &w);
        st.workflows.insert(sid, w);
        created(v)
    }

    fn workflow(&self, st: &mut State, ws: &str, sid: &str) -> ApiResult {
        let mut w = st
            .workflows
            .get(sid)
            .filter(|w| w.workspace_sid == ws)
            .cloned()
            .ok_or_else(|| super::not_found(self.path))?;
        match self.req.method {
            Method::GET => {}
            Method::POST => {
                self.apply_workflow(st, ws, &mut w)?;
                st.workflows.insert(sid.into(), w.clone());
            }
            Method::DELETE => {
                st.workflows.remove(sid);
                return no_content();
            }
            _ => return Err(method_not_allowed(&self.req.method)),
        }
        ok(self.wf_json(st, &w))
    }

    // -- tasks -----------------------------------------------------------------

    fn task_json(&self, st: &State, t: &crate::state::Task) -> Value {
        let q = t.queue_sid.as_ref().and_then(|q| st.queues.get(q));
        let ws_url = self.ws_url(&t.workspace_sid);
        let url = format!("{ws_url}/Tasks/{}", t.sid);
        let mut links = json!({
            "workflow": format!("{ws_url}/Workflows/{}", t.workflow_sid),
            "workspace": ws_url,
            "reservations": format!("{url}/Reservations"),
        });
        if let Some(q) = &t.queue_sid {
            links["task_queue"] = Value::String(format!("{ws_url}/TaskQueues/{q}"));
        }
        json!({
            "account_sid": self.account, "workspace_sid": t.workspace_sid, "sid": t.sid,
            "attributes": t.attributes_raw, "assignment_status": t.status.as_str(),
            "age": self.now.saturating_sub(t.created) / 1000, "priority": t.priority, "reason": t.reason,
            "timeout": t.timeout_secs,
            "task_queue_sid": t.queue_sid, "task_queue_friendly_name": q.map(|q| q.friendly_name.clone()),
            "task_queue_entered_date": t.queue_entered.map(|e| self.date(e, st)),
            "task_channel_sid": voice_channel_sid(&t.workspace_sid), "task_channel_unique_name": "voice",
            "workflow_sid": t.workflow_sid,
            "workflow_friendly_name": st.workflows.get(&t.workflow_sid).map(|w| w.friendly_name.clone()),
            "date_created": self.date(t.created, st), "date_updated": self.date(t.updated, st),
            "virtual_start_time": iso8601(self.clock.wall(0).saturating_add(jiff::SignedDuration::from_millis(t.virtual_start)).unwrap_or(self.clock.wall(0))),
            "addons": "{}", "ignore_capacity": false, "routing_target": null,
            "url": url,
            "links": links,
        })
    }

    /// `GET Tasks`, by `AssignmentStatus` (comma-separated or repeated),
    /// `Priority`, `WorkflowSid`, `WorkflowName`, `TaskQueueSid`,
    /// `TaskQueueName`, `EvaluateTaskAttributes` (an expression over the
    /// attributes) and `HasAddons` (no sandbox task has add-ons), in the order
    /// `Ordering` gives (creation order by default).
    fn list_tasks(&self, st: &State, ws: &str) -> ApiResult {
        let q = &self.req.query;
        let statuses: Vec<&str> =
            q.get_all("AssignmentStatus").flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()).collect();
        if let Some(s) = statuses.iter().find(|s| TaskStatus::parse(s).is_none()) {
            return Err(bad(20001, format!("AssignmentStatus {s:?} is not a task status")));
        }
        let priority = parse_num::<i64>("Priority", q.get("Priority"))?;
        let evaluate = q
            .get("EvaluateTaskAttributes")
            .map(|e| Compiled::parse(e).map_err(|e| bad(20001, format!("EvaluateTaskAttributes is invalid: {e}"))))
            .transpose()?;
        let addons = q.get("HasAddons").map(|v| parse_bool("HasAddons", v)).transpose()?;
        let order = q.get("Ordering").map(parse_task_ordering).transpose()?.unwrap_or_default();
        let queue_name = |t: &crate::state::Task| {
            t.queue_sid.as_ref().and_then(|s| st.queues.get(s)).map(|q| q.friendly_name.as_str())
        };
        let workflow_name =
            |t: &crate::state::Task| st.workflows.get(&t.workflow_sid).map(|w| w.friendly_name.as_str());
        let mut tasks: Vec<&crate::state::Task> = st
            .tasks
            .iter()
            .filter(|t| t.workspace_sid == ws)
            .filter(|t| statuses.is_empty() || statuses.contains(&t.status.as_str()))
            .filter(|t| priority.is_none_or(|p| t.priority == p))
            .filter(|t| q.get("WorkflowSid").is_none_or(|w| t.workflow_sid == w))
            .filter(|t| q.get("WorkflowName").is_none_or(|w| workflow_name(t) == Some(w)))
            .filter(|t| q.get("TaskQueueSid").is_none_or(|w| t.queue_sid.as_deref() == Some(w)))
            .filter(|t| q.get("TaskQueueName").is_none_or(|w| queue_name(t) == Some(w)))
            .filter(|t| {
                evaluate.as_ref().is_none_or(|e| {
                    e.expr.eval(&crate::expr::Context {
                        attributes: &t.attributes,
                        task: Some(&t.attributes),
                        worker: None,
                    })
                })
            })
            .filter(|_| addons != Some(true))
            .collect();
        // A stable sort over creation order, so ties keep it.
        tasks.sort_by(|a, b| {
            order.iter().fold(std::cmp::Ordering::Equal, |acc, (key, desc)| {
                acc.then_with(|| {
                    let o = match key {
                        TaskKey::Priority => a.priority.cmp(&b.priority),
                        TaskKey::DateCreated => a.created.cmp(&b.created),
                        TaskKey::VirtualStartTime => a.virtual_start.cmp(&b.virtual_start),
                    };
                    if *desc { o.reverse() } else { o }
                })
            })
        });
        let items = tasks.into_iter().map(|t| self.task_json(st, t)).collect();
        self.list("tasks", items)
    }

    fn create_task(&self, st: &mut State, ws: &str) -> FxResult {
        let r = self.req;
        let workflow = match r.get("WorkflowSid") {
            Some(w) => w.to_owned(),
            None => {
                // Twilio picks the workspace's only workflow when there is one.
                let mut wfs = st.workflows.iter().filter(|w| w.workspace_sid == ws);
                match (wfs.next(), wfs.next()) {
                    (Some(w), None) => w.sid.clone(),
                    _ => return Err(bad(20001, "Missing required parameter WorkflowSid in the post body")),
                }
            }
        };
        let priority = task_priority(r.get("Priority"))?;
        let timeout = parse_num::<u64>("Timeout", r.get("Timeout"))?;
        if let Some(t) = timeout
            && !(1..=MAX_TASK_TIMEOUT).contains(&t)
        {
            return Err(bad(20001, format!("Timeout {t} must be between 1 and {MAX_TASK_TIMEOUT} seconds")));
        }
        // The task's age for routing: a callback keeps the caller's place.
        let virtual_start = match r.get("VirtualStartTime") {
            None => None,
            Some(v) => {
                let at: jiff::Timestamp = v
                    .parse()
                    .map_err(|_| bad(20001, format!("VirtualStartTime {v:?} is not an ISO 8601 date-time")))?;
                let ms = at.duration_since(self.clock.wall(0)).as_millis();
                Some(i64::try_from(ms).unwrap_or(i64::MIN).min(i64::try_from(self.now).unwrap_or(i64::MAX)))
            }
        };
        let (sid, fx) =
            engine::create_task(st, self.now, ws, &workflow, r.get("Attributes").unwrap_or("{}"), priority, timeout)?;
        if let (Some(v), Some(t)) = (virtual_start, st.tasks.get_mut(&sid)) {
            t.virtual_start = v;
        }
        let t = st.tasks.get(&sid).cloned().ok_or_else(|| super::not_found(self.path))?;
        with_fx(created(self.task_json(st, &t)), fx)
    }

    fn task_of(&self, st: &State, ws: &str, sid: &str) -> Result<crate::state::Task, ErrorBody> {
        st.tasks.get(sid).filter(|t| t.workspace_sid == ws).cloned().ok_or_else(|| super::not_found(self.path))
    }

    fn task(&self, st: &mut State, ws: &str, sid: &str) -> FxResult {
        self.task_of(st, ws, sid)?;
        let fx = match self.req.method {
            Method::GET => Effects::default(),
            Method::POST => {
                let r = self.req;
                if let Some(p) = task_priority(r.get("Priority"))?
                    && let Some(t) = st.tasks.get_mut(sid)
                {
                    t.priority = p;
                }
                engine::update_task(st, self.now, sid, r.get("AssignmentStatus"), r.get("Reason"), r.get("Attributes"))?
            }
            Method::DELETE => {
                let fx = engine::delete_task(st, self.now, sid)?;
                return no_content().map(|r| (r, fx));
            }
            _ => return Err(method_not_allowed(&self.req.method)),
        };
        let t = self.task_of(st, ws, sid)?;
        with_fx(ok(self.task_json(st, &t)), fx)
    }

    // -- reservations ----------------------------------------------------------

    /// A reservation as the path it was reached by shows it: its `url` is
    /// under the worker for `/Workers/{WK}/Reservations`, else under the task.
    fn res_json(&self, st: &State, r: &crate::state::Reservation) -> Value {
        let ws_url = self.ws_url(&r.workspace_sid);
        let task = format!("{ws_url}/Tasks/{}", r.task_sid);
        let worker = format!("{ws_url}/Workers/{}", r.worker_sid);
        let url = if self.path.contains("/Workers/") {
            format!("{worker}/Reservations/{}", r.sid)
        } else {
            format!("{task}/Reservations/{}", r.sid)
        };
        json!({
            "account_sid": self.account, "workspace_sid": r.workspace_sid, "sid": r.sid,
            "task_sid": r.task_sid, "worker_sid": r.worker_sid,
            "worker_name": st.workers.get(&r.worker_sid).map(|w| w.friendly_name.clone()),
            "reservation_status": r.status.as_str(),
            "date_created": self.date(r.created, st), "date_updated": self.date(r.updated, st),
            "url": url,
            "links": { "task": task, "worker": worker, "workspace": ws_url },
        })
    }

    /// A reservations list, by `ReservationStatus` and, for a task's
    /// reservations, `WorkerSid`.
    fn list_reservations(&self, st: &State, keep: impl Fn(&crate::state::Reservation) -> bool) -> ApiResult {
        let status = self.req.query.get("ReservationStatus");
        if let Some(s) = status
            && ResStatus::parse(s).is_none()
        {
            return Err(bad(20001, format!("ReservationStatus {s:?} is not a reservation status")));
        }
        let worker = self.req.query.get("WorkerSid").filter(|_| !self.path.contains("/Workers/"));
        let items = st
            .reservations
            .iter()
            .filter(|r| keep(r) && status.is_none_or(|s| r.status.as_str() == s))
            .filter(|r| worker.is_none_or(|w| r.worker_sid == w))
            .map(|r| self.res_json(st, r))
            .collect();
        self.list("reservations", items)
    }

    fn reservation(
        &self,
        st: &mut State,
        ws: &str,
        sid: &str,
        belongs: impl Fn(&crate::state::Reservation) -> bool,
    ) -> FxResult {
        let ok_res = st.reservations.get(sid).is_some_and(|r| r.workspace_sid == ws && belongs(r));
        if !ok_res {
            return Err(super::not_found(self.path));
        }
        let fx = match self.req.method {
            Method::GET => Effects::default(),
            Method::POST => self.update_reservation(st, sid)?,
            _ => return Err(method_not_allowed(&self.req.method)),
        };
        let r = st.reservations.get(sid).cloned().ok_or_else(|| super::not_found(self.path))?;
        with_fx(ok(self.res_json(st, &r)), fx)
    }
}

/// Whether a queue's `TargetWorkers` expression selects a worker with these
/// attributes. Without a task, `task.` names resolve to nothing, so an
/// expression that needs the task selects no one.
fn eligible(queue: &TaskQueue, attributes: &Value) -> bool {
    queue.target_expr.expr.eval(&crate::expr::Context { attributes, task: None, worker: Some(attributes) })
}

/// Twilio's longest task TTL: two weeks.
const MAX_TASK_TIMEOUT: u64 = 1_209_600;

/// A task's `Priority`: 0 to 2³¹−1.
fn task_priority(v: Option<&str>) -> Result<Option<i64>, ErrorBody> {
    let p = parse_num::<i64>("Priority", v)?;
    match p {
        Some(p) if !(0..=i64::from(i32::MAX)).contains(&p) => {
            Err(bad(20001, format!("Priority {p} must be between 0 and {}", i32::MAX)))
        }
        _ => Ok(p),
    }
}

/// What `Ordering` can sort tasks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskKey {
    DateCreated,
    Priority,
    VirtualStartTime,
}

/// Parses a task list's `Ordering`: `Attribute:asc|desc`, comma-separated
/// (`Priority:desc,DateCreated:asc`). `DateCreated` and `VirtualStartTime`
/// may not be combined. Returns (key, descending) pairs, most significant
/// first.
fn parse_task_ordering(v: &str) -> Result<Vec<(TaskKey, bool)>, ErrorBody> {
    let invalid = |why: String| bad(20001, format!("Ordering {v:?} is invalid: {why}"));
    let mut out: Vec<(TaskKey, bool)> = Vec::new();
    for part in v.split(',').map(str::trim) {
        let (attr, dir) = part.split_once(':').ok_or_else(|| invalid(format!("{part:?} is not Attribute:Order")))?;
        let key = match attr.trim() {
            "DateCreated" => TaskKey::DateCreated,
            "Priority" => TaskKey::Priority,
            "VirtualStartTime" => TaskKey::VirtualStartTime,
            a => return Err(invalid(format!("{a:?} is not DateCreated, Priority or VirtualStartTime"))),
        };
        let desc = match dir.trim() {
            "asc" => false,
            "desc" => true,
            d => return Err(invalid(format!("{d:?} is not asc or desc"))),
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(invalid(format!("{attr} is given twice")));
        }
        out.push((key, desc));
    }
    let has = |k| out.iter().any(|(x, _)| *x == k);
    if has(TaskKey::DateCreated) && has(TaskKey::VirtualStartTime) {
        return Err(invalid("DateCreated and VirtualStartTime cannot be combined".into()));
    }
    Ok(out)
}

impl Cx<'_> {
    /// A reservation's update: `ReservationStatus`, or an `Instruction`
    /// (`accept`, `reject`, `redirect`; the others place calls or conferences
    /// and are not simulated), with `WorkerActivitySid` moving the worker.
    fn update_reservation(&self, st: &mut State, sid: &str) -> Result<Effects, ErrorBody> {
        let r = self.req;
        let status = r.get("ReservationStatus");
        let agree = |wanted: &'static str| match status {
            Some(s) if s != wanted => {
                Err(bad(20001, format!("ReservationStatus {s} contradicts the instruction, which means {wanted}")))
            }
            _ => Ok(Some(wanted)),
        };
        let mut fx = Effects::default();
        let target = match r.get("Instruction") {
            None => status,
            Some("accept") => agree("accepted")?,
            Some("reject") => agree("rejected")?,
            Some("redirect") => {
                let call = r
                    .get("RedirectCallSid")
                    .ok_or_else(|| bad(20001, "Missing required parameter RedirectCallSid in the post body"))?;
                if st.calls.get(call).is_none_or(|c| c.is_final()) {
                    return Err(bad(20001, format!("RedirectCallSid {call} is not a live call")));
                }
                let url = r
                    .get("RedirectUrl")
                    .filter(|u| super::valid_url(u))
                    .ok_or_else(|| bad(20001, "RedirectUrl must be a valid URL"))?;
                let accept = r.get("RedirectAccept").map(|v| parse_bool("RedirectAccept", v)).transpose()?;
                fx.redirects.push((call.to_owned(), url.to_owned()));
                if accept == Some(true) { agree("accepted")? } else { status }
            }
            Some(other) => {
                return Err(bad(
                    20001,
                    format!("Instruction {other:?} is not supported by the sandbox (accept, reject and redirect are)"),
                ));
            }
        };
        if let Some(s) = target {
            let mut done = engine::update_reservation(st, self.now, sid, s, r.get("WorkerActivitySid"))?;
            done.extend(fx);
            fx = done;
        }
        Ok(fx)
    }
}

/// TaskRouter's default "Channel Capacity per Worker": the most tasks one
/// worker takes on one task channel (Twilio's TaskRouter resource limits).
/// Above it, a channel update is refused as TaskRouter refuses an invalid
/// parameter: 400, code 20001.
pub(crate) const WORKER_CHANNEL_CAPACITY_MAX: u32 = 50;

/// The workspace's voice task channel: one per workspace, derived from its SID
/// so it needs no storage.
fn voice_channel_sid(ws: &str) -> String {
    format!("TC{}", ws.get(2..).unwrap_or_default())
}

fn parse_attributes(raw: Option<&str>) -> Result<(Value, String), ErrorBody> {
    let raw = raw.filter(|r| !r.trim().is_empty()).unwrap_or("{}");
    let v: Value = serde_json::from_str(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| bad(20001, "Attributes must be a JSON object"))?;
    Ok((v, raw.to_owned()))
}

/// Parses and checks a workflow's `Configuration`.
fn parse_configuration(st: &State, ws: &str, raw: &str) -> Result<(Vec<Filter>, Option<Target>), ErrorBody> {
    let invalid = |m: String| bad(20001, format!("Configuration is invalid: {m}"));
    let v: Value = serde_json::from_str(raw).map_err(|e| invalid(e.to_string()))?;
    let routing = v.get("task_routing").ok_or_else(|| invalid("no task_routing".into()))?;
    let target = |t: &Value| -> Result<Target, ErrorBody> {
        let queue = t.get("queue").and_then(Value::as_str).ok_or_else(|| invalid("a target has no queue".into()))?;
        if st.queues.get(queue).is_none_or(|q| q.workspace_sid != ws) {
            return Err(invalid(format!("queue {queue} is not a task queue of this workspace")));
        }
        let expression = t
            .get("expression")
            .and_then(Value::as_str)
            .map(|e| Compiled::parse(e).map_err(|e| invalid(format!("target expression: {e}"))))
            .transpose()?;
        Ok(Target {
            queue: queue.into(),
            expression,
            timeout_secs: t.get("timeout").and_then(Value::as_u64),
            priority: t.get("priority").and_then(Value::as_i64),
        })
    };
    let mut filters = Vec::new();
    for f in routing.get("filters").and_then(Value::as_array).into_iter().flatten() {
        let expr = f.get("expression").and_then(Value::as_str).unwrap_or("1==1");
        let expression = Compiled::parse(expr).map_err(|e| invalid(format!("filter expression {expr:?}: {e}")))?;
        let targets = f
            .get("targets")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("a filter has no targets".into()))?
            .iter()
            .map(target)
            .collect::<Result<Vec<_>, _>>()?;
        filters.push(Filter {
            name: f.get("filter_friendly_name").and_then(Value::as_str).unwrap_or_default().into(),
            expression,
            targets,
        });
    }
    let default = routing.get("default_filter").map(target).transpose()?;
    Ok((filters, default))
}
