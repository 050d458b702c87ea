//! Conformance with Twilio's OpenAPI description (`<repo>/../shared/twilio-oai`).
//!
//! One walk sends every operation the sandbox serves (core: IncomingPhoneNumbers,
//! Calls, Recordings; TaskRouter: Workspaces, Activities, TaskQueues, Workers and
//! their Channels, Workflows, Tasks, Reservations by task and by worker,
//! TaskChannels) and checks each answer against that operation's response in the
//! spec, `$ref`s resolved: a documented status, every property present and none
//! other, the JSON type, `nullable`, enums, list envelopes; and `links` /
//! `subresource_uris` with every key the spec's examples show. Every mismatch is
//! collected, and the test fails listing them all.

mod common;

use common::twiml;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};

const CORE: &str = "/2010-04-01/Accounts/{AccountSid}";
const TR: &str = "/v1/Workspaces";
const NUMBER: &str = "+14155550100";
const PHONE: &str = "+14155550201";

/// The spec folder: the repository sits beside `shared/`, locally and in CI.
fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/twilio-oai")
}

fn load(file: &str) -> Value {
    let path = spec_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read Twilio's OpenAPI description {} ({e}); the conformance test needs twilio-oai \
             in shared/ beside the repository (CI's clone has it)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Follows `$ref`s (`#/components/schemas/…`) to the schema they name.
fn resolve<'a>(spec: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("a non-local $ref {r}"));
        schema = spec.pointer(pointer).unwrap_or_else(|| panic!("an unresolvable $ref {r}"));
    }
    schema
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks `v` against `schema`, adding one line per mismatch to `errs`.
fn check(spec: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let s = resolve(spec, schema);
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if s.get(keyword).is_some() {
            errs.push(format!("{at}: the schema uses {keyword}, which this checker does not read"));
            return;
        }
    }
    if v.is_null() {
        if s.get("nullable") != Some(&Value::Bool(true)) {
            errs.push(format!("{at}: null, but the spec does not make it nullable"));
        }
        return;
    }
    if let Some(ty) = s.get("type").and_then(Value::as_str) {
        let fits = match ty {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            other => {
                errs.push(format!("{at}: the spec's type {other:?} is unknown to this checker"));
                true
            }
        };
        if !fits {
            errs.push(format!("{at}: {} {v}, but the spec's type is {ty}", kind(v)));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        errs.push(format!("{at}: {v} is not one of the spec's {}", Value::Array(allowed.clone())));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        let Some(obj) = v.as_object() else {
            errs.push(format!("{at}: {} {v}, but the spec describes an object", kind(v)));
            return;
        };
        for (k, p) in props {
            match obj.get(k) {
                None => errs.push(format!("{at}.{k}: missing")),
                Some(x) => check(spec, p, x, &format!("{at}.{k}"), errs),
            }
        }
        if s.get("additionalProperties") != Some(&Value::Bool(true)) {
            for k in obj.keys().filter(|k| !props.contains_key(*k)) {
                errs.push(format!("{at}.{k}: not a property in the spec"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(spec, items, x, &format!("{at}[{i}]"), errs);
        }
    }
}

/// The keys the spec's examples show in `links` and `subresource_uris` (both
/// `uri-map`s, which the schema leaves open) must all be in the answer, except
/// a link to an optional related resource that is not set: `task_queue` when
/// `task_queue_sid` is null, `assignment_activity` when
/// `assignment_activity_sid` is, and so on. The examples show those set.
fn example_links(example: &Value, actual: &Value, at: &str, errs: &mut Vec<String>) {
    match (example, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let Some(av) = a.get(k) else { continue };
                match (k.as_str(), ev.as_object(), av.as_object()) {
                    ("links" | "subresource_uris", Some(eo), Some(ao)) => {
                        let unset = |key: &str| a.get(&format!("{key}_sid")).is_some_and(Value::is_null);
                        for key in eo.keys().filter(|key| !ao.contains_key(*key) && !unset(key)) {
                            errs.push(format!("{at}.{k}: no {key:?}, which the spec's example shows"));
                        }
                    }
                    _ => example_links(ev, av, &format!("{at}.{k}"), errs),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                for (i, x) in a.iter().enumerate() {
                    example_links(first, x, &format!("{at}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// Checks one answer against an operation's documented responses.
fn check_answer(spec: &Value, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
    let Some(op) = spec["paths"].get(path).and_then(|p| p.get(method.to_ascii_lowercase())) else {
        return vec!["the spec has no such operation".into()];
    };
    let responses = op["responses"].as_object().cloned().unwrap_or_default();
    let Some(resp) = responses.get(&status.to_string()) else {
        let documented: Vec<&String> = responses.keys().collect();
        return vec![format!("answered {status} ({body}), the spec documents {documented:?}")];
    };
    let mut errs = Vec::new();
    match resp.pointer("/content/application~1json") {
        None => {
            if !matches!(body, Value::String(s) if s.is_empty()) {
                errs.push(format!("a body ({body}), the spec documents none"));
            }
        }
        Some(content) => {
            check(spec, &content["schema"], body, "", &mut errs);
            for ex in content.get("examples").and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
                example_links(&ex["value"], body, "", &mut errs);
            }
        }
    }
    let unique: BTreeSet<String> = errs.into_iter().collect();
    unique.into_iter().collect()
}

/// Every operation the sandbox serves; the walk must send each.
fn served() -> BTreeSet<String> {
    let core = |m: &str, p: &str| format!("{m} {CORE}/{p}");
    let tr = |m: &str, p: &str| if p.is_empty() { format!("{m} {TR}") } else { format!("{m} {TR}/{p}") };
    let mut ops: BTreeSet<String> = [
        core("POST", "IncomingPhoneNumbers.json"),
        core("GET", "IncomingPhoneNumbers.json"),
        core("GET", "IncomingPhoneNumbers/{Sid}.json"),
        core("POST", "IncomingPhoneNumbers/{Sid}.json"),
        core("DELETE", "IncomingPhoneNumbers/{Sid}.json"),
        core("POST", "Calls.json"),
        core("GET", "Calls.json"),
        core("GET", "Calls/{Sid}.json"),
        core("POST", "Calls/{Sid}.json"),
        core("DELETE", "Calls/{Sid}.json"),
        core("GET", "Calls/{CallSid}/Recordings.json"),
        core("GET", "Calls/{CallSid}/Recordings/{Sid}.json"),
        core("GET", "Recordings/{Sid}.json"),
        tr("GET", ""),
        tr("POST", ""),
        tr("GET", "{Sid}"),
        tr("POST", "{Sid}"),
        tr("DELETE", "{Sid}"),
        tr("GET", "{WorkspaceSid}/Workers/{WorkerSid}/Channels"),
        tr("GET", "{WorkspaceSid}/Workers/{WorkerSid}/Channels/{Sid}"),
        tr("POST", "{WorkspaceSid}/Workers/{WorkerSid}/Channels/{Sid}"),
        tr("GET", "{WorkspaceSid}/Tasks/{TaskSid}/Reservations"),
        tr("GET", "{WorkspaceSid}/Tasks/{TaskSid}/Reservations/{Sid}"),
        tr("POST", "{WorkspaceSid}/Tasks/{TaskSid}/Reservations/{Sid}"),
        tr("GET", "{WorkspaceSid}/Workers/{WorkerSid}/Reservations"),
        tr("GET", "{WorkspaceSid}/Workers/{WorkerSid}/Reservations/{Sid}"),
        tr("POST", "{WorkspaceSid}/Workers/{WorkerSid}/Reservations/{Sid}"),
        tr("GET", "{WorkspaceSid}/TaskChannels"),
        tr("GET", "{WorkspaceSid}/TaskChannels/{Sid}"),
    ]
    .into_iter()
    .collect();
    for kind in ["Activities", "TaskQueues", "Workers", "Workflows", "Tasks"] {
        ops.insert(tr("GET", &format!("{{WorkspaceSid}}/{kind}")));
        ops.insert(tr("POST", &format!("{{WorkspaceSid}}/{kind}")));
        for m in ["GET", "POST", "DELETE"] {
            ops.insert(tr(m, &format!("{{WorkspaceSid}}/{kind}/{{Sid}}")));
        }
    }
    ops
}

struct Walk {
    t: common::T,
    core: Value,
    tr: Value,
    mismatches: Vec<String>,
    walked: BTreeSet<String>,
}

impl Walk {
    /// Sends one request and checks the answer against the operation at
    /// `path` (a path of the spec) in the matching spec file.
    async fn op(&mut self, method: &str, path: &str, url: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = match method {
            "GET" => self.t.get(url).await,
            "POST" => self.t.post(url, form).await,
            "DELETE" => self.t.delete(url).await,
            m => panic!("no such method {m}"),
        };
        let spec = if path.starts_with(TR) { &self.tr } else { &self.core };
        let name = format!("{method} {path}");
        for e in check_answer(spec, method, path, status, &body) {
            self.mismatches.push(format!("{name}: {e}"));
        }
        self.walked.insert(name);
        body
    }

    async fn core(&mut self, method: &str, path: &str, rest: &str, form: &[(&str, &str)]) -> Value {
        let url = self.t.core(rest);
        self.op(method, &format!("{CORE}/{path}"), &url, form).await
    }

    async fn tr(&mut self, method: &str, path: &str, rest: &str, form: &[(&str, &str)]) -> Value {
        let url = self.t.tr(&format!("Workspaces{rest}"));
        self.op(method, &format!("{TR}{path}"), &url, form).await
    }
}

fn sid(v: &Value) -> String {
    v["sid"].as_str().unwrap_or_else(|| panic!("no sid in {v}")).to_owned()
}

#[tokio::test]
async fn every_served_operation_matches_twilio_oai() {
    let (core, tr) = (load("twilio_api_v2010.json"), load("twilio_taskrouter_v1.json"));
    // 100 virtual seconds per real one: a ring is 60 ms, a held call lasts long
    // enough to be updated.
    let t = common::start(100.0).await;
    let (app, _) = common::receiver(t.token.clone(), |path, _| match path {
        // Without an action, <Record> would request this document again.
        "/record" => twiml(r#"<Record maxLength="2" action="/done"/>"#),
        "/hold" => twiml(r#"<Pause length="3600"/>"#),
        _ => twiml("<Hangup/>"),
    })
    .await;
    let mut w = Walk { t, core, tr, mismatches: Vec::new(), walked: BTreeSet::new() };

    // -- IncomingPhoneNumbers -------------------------------------------------
    let voice = format!("{app}/hold");
    let fallback = format!("{app}/fallback");
    let n = w
        .core(
            "POST",
            "IncomingPhoneNumbers.json",
            "IncomingPhoneNumbers.json",
            &[("PhoneNumber", NUMBER), ("VoiceUrl", &voice), ("VoiceFallbackUrl", &fallback), ("SmsUrl", &fallback)],
        )
        .await;
    let pn = sid(&n);
    w.core("GET", "IncomingPhoneNumbers/{Sid}.json", &format!("IncomingPhoneNumbers/{pn}.json"), &[]).await;
    w.core(
        "POST",
        "IncomingPhoneNumbers/{Sid}.json",
        &format!("IncomingPhoneNumbers/{pn}.json"),
        &[("FriendlyName", "main"), ("VoiceFallbackMethod", "GET")],
    )
    .await;
    let spare = w
        .core("POST", "IncomingPhoneNumbers.json", "IncomingPhoneNumbers.json", &[("PhoneNumber", "+14155550109")])
        .await;
    w.core("GET", "IncomingPhoneNumbers.json", "IncomingPhoneNumbers.json", &[]).await;
    w.core("DELETE", "IncomingPhoneNumbers/{Sid}.json", &format!("IncomingPhoneNumbers/{}.json", sid(&spare)), &[])
        .await;

    // -- Calls and Recordings -------------------------------------------------
    let record = format!("{app}/record");
    let a = w.core("POST", "Calls.json", "Calls.json", &[("To", PHONE), ("From", NUMBER), ("Url", &record)]).await;
    let a = sid(&a);
    let (s, end) = w.t.get(&format!("{}/sandbox/calls/{a}?wait_final_ms=20000", w.t.url)).await;
    assert_eq!((s, &end["final"]), (200, &json!(true)), "the recorded call did not end: {}", end["status"]);
    w.core("GET", "Calls/{Sid}.json", &format!("Calls/{a}.json"), &[]).await;
    let recs = w.core("GET", "Calls/{CallSid}/Recordings.json", &format!("Calls/{a}/Recordings.json"), &[]).await;
    let re = recs["recordings"].get(0).map(sid).unwrap_or_else(|| panic!("the call recorded nothing: {recs}"));
    w.core("GET", "Calls/{CallSid}/Recordings/{Sid}.json", &format!("Calls/{a}/Recordings/{re}.json"), &[]).await;
    w.core("GET", "Recordings/{Sid}.json", &format!("Recordings/{re}.json"), &[]).await;

    let b = w.core("POST", "Calls.json", "Calls.json", &[("To", PHONE), ("From", NUMBER), ("Url", &voice)]).await;
    let b = sid(&b);
    let live = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (_, c) = w.t.get(&w.t.core(&format!("Calls/{b}.json"))).await;
            if c["status"] == "in-progress" || std::time::Instant::now() > deadline {
                break c["status"] == "in-progress";
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    assert!(live, "the held call never went in-progress");
    w.core("POST", "Calls/{Sid}.json", &format!("Calls/{b}.json"), &[("Url", &voice)]).await;
    w.core("POST", "Calls/{Sid}.json", &format!("Calls/{b}.json"), &[("Status", "completed")]).await;
    w.t.get(&format!("{}/sandbox/calls/{b}?wait_final_ms=20000", w.t.url)).await;
    w.core("GET", "Calls.json", "Calls.json", &[]).await;
    w.core("DELETE", "Calls/{Sid}.json", &format!("Calls/{b}.json"), &[]).await;

    // -- Workspaces and Activities ------------------------------------------
    let ws = sid(&w.tr("POST", "", "", &[("FriendlyName", "conformance")]).await);
    let spare_ws = sid(&w.tr("POST", "", "", &[("FriendlyName", "spare")]).await);
    w.tr("GET", "", "", &[]).await;
    w.tr("GET", "/{Sid}", &format!("/{ws}"), &[]).await;
    w.tr("POST", "/{Sid}", &format!("/{ws}"), &[("FriendlyName", "conformance 2")]).await;
    w.tr("DELETE", "/{Sid}", &format!("/{spare_ws}"), &[]).await;

    let acts = w.tr("GET", "/{WorkspaceSid}/Activities", &format!("/{ws}/Activities"), &[]).await;
    let available = acts["activities"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["friendly_name"] == "Available"))
        .map(sid)
        .unwrap_or_else(|| panic!("no Available activity: {acts}"));
    let brk = w
        .tr(
            "POST",
            "/{WorkspaceSid}/Activities",
            &format!("/{ws}/Activities"),
            &[("FriendlyName", "Break"), ("Available", "false")],
        )
        .await;
    let brk = sid(&brk);
    let one = format!("/{ws}/Activities/{brk}");
    w.tr("GET", "/{WorkspaceSid}/Activities/{Sid}", &one, &[]).await;
    w.tr("POST", "/{WorkspaceSid}/Activities/{Sid}", &one, &[("FriendlyName", "Lunch")]).await;
    w.tr("DELETE", "/{WorkspaceSid}/Activities/{Sid}", &one, &[]).await;

    // -- TaskQueues and Workflows ---------------------------------------------
    let queue_form = [
        ("TargetWorkers", "skill == \"voice\""),
        ("AssignmentActivitySid", &available),
        ("ReservationActivitySid", &available),
    ];
    let mut form = vec![("FriendlyName", "q")];
    form.extend(queue_form);
    let q = sid(&w.tr("POST", "/{WorkspaceSid}/TaskQueues", &format!("/{ws}/TaskQueues"), &form).await);
    let spare_q =
        sid(&w.tr("POST", "/{WorkspaceSid}/TaskQueues", &format!("/{ws}/TaskQueues"), &[("FriendlyName", "q2")]).await);
    w.tr("GET", "/{WorkspaceSid}/TaskQueues", &format!("/{ws}/TaskQueues"), &[]).await;
    w.tr("GET", "/{WorkspaceSid}/TaskQueues/{Sid}", &format!("/{ws}/TaskQueues/{q}"), &[]).await;
    w.tr("POST", "/{WorkspaceSid}/TaskQueues/{Sid}", &format!("/{ws}/TaskQueues/{q}"), &[("TaskOrder", "FIFO")]).await;
    w.tr("DELETE", "/{WorkspaceSid}/TaskQueues/{Sid}", &format!("/{ws}/TaskQueues/{spare_q}"), &[]).await;

    let cfg = json!({"task_routing": {"filters": [], "default_filter": {"queue": q}}}).to_string();
    let wf_form = [("Configuration", cfg.as_str()), ("TaskReservationTimeout", "3600")];
    let mut form = vec![("FriendlyName", "wf")];
    form.extend(wf_form);
    let wf = sid(&w.tr("POST", "/{WorkspaceSid}/Workflows", &format!("/{ws}/Workflows"), &form).await);
    let mut form = vec![("FriendlyName", "wf2")];
    form.extend(wf_form);
    let spare_wf = sid(&w.tr("POST", "/{WorkspaceSid}/Workflows", &format!("/{ws}/Workflows"), &form).await);
    w.tr("GET", "/{WorkspaceSid}/Workflows", &format!("/{ws}/Workflows"), &[]).await;
    w.tr("GET", "/{WorkspaceSid}/Workflows/{Sid}", &format!("/{ws}/Workflows/{wf}"), &[]).await;
    w.tr("POST", "/{WorkspaceSid}/Workflows/{Sid}", &format!("/{ws}/Workflows/{wf}"), &[("FriendlyName", "wf1")]).await;
    w.tr("DELETE", "/{WorkspaceSid}/Workflows/{Sid}", &format!("/{ws}/Workflows/{spare_wf}"), &[]).await;

    // -- Workers and their Channels -------------------------------------------
    let wk = w
        .tr(
            "POST",
            "/{WorkspaceSid}/Workers",
            &format!("/{ws}/Workers"),
            &[("FriendlyName", "agent"), ("Attributes", r#"{"skill":"voice"}"#), ("ActivitySid", &available)],
        )
        .await;
    let wk = sid(&wk);
    let spare_wk =
        sid(&w.tr("POST", "/{WorkspaceSid}/Workers", &format!("/{ws}/Workers"), &[("FriendlyName", "spare")]).await);
    w.tr("GET", "/{WorkspaceSid}/Workers", &format!("/{ws}/Workers"), &[]).await;
    w.tr("GET", "/{WorkspaceSid}/Workers/{Sid}", &format!("/{ws}/Workers/{wk}"), &[]).await;
    w.tr(
        "POST",
        "/{WorkspaceSid}/Workers/{Sid}",
        &format!("/{ws}/Workers/{wk}"),
        &[("Attributes", r#"{"skill":"voice","level":2}"#)],
    )
    .await;
    w.tr("DELETE", "/{WorkspaceSid}/Workers/{Sid}", &format!("/{ws}/Workers/{spare_wk}"), &[]).await;
    let chans =
        w.tr("GET", "/{WorkspaceSid}/Workers/{WorkerSid}/Channels", &format!("/{ws}/Workers/{wk}/Channels"), &[]).await;
    let wc = chans["channels"].get(0).map(sid).unwrap_or_else(|| panic!("no worker channel: {chans}"));
    let chan = format!("/{ws}/Workers/{wk}/Channels/{wc}");
    w.tr("GET", "/{WorkspaceSid}/Workers/{WorkerSid}/Channels/{Sid}", &chan, &[]).await;
    w.tr("POST", "/{WorkspaceSid}/Workers/{WorkerSid}/Channels/{Sid}", &chan, &[("Capacity", "1")]).await;

    // -- Tasks and Reservations -----------------------------------------------
    let task = w
        .tr(
            "POST",
            "/{WorkspaceSid}/Tasks",
            &format!("/{ws}/Tasks"),
            &[("WorkflowSid", &wf), ("Attributes", r#"{"type":"call"}"#)],
        )
        .await;
    let wt = sid(&task);
    // The worker is busy with the first task, so the second waits: pending.
    let spare_wt = sid(&w
        .tr("POST", "/{WorkspaceSid}/Tasks", &format!("/{ws}/Tasks"), &[("WorkflowSid", &wf), ("Priority", "3")])
        .await);
    w.tr("GET", "/{WorkspaceSid}/Tasks", &format!("/{ws}/Tasks"), &[]).await;
    w.tr("GET", "/{WorkspaceSid}/Tasks/{Sid}", &format!("/{ws}/Tasks/{wt}"), &[]).await;
    w.tr("POST", "/{WorkspaceSid}/Tasks/{Sid}", &format!("/{ws}/Tasks/{wt}"), &[("Attributes", r#"{"type":"call2"}"#)])
        .await;

    let by_task = w
        .tr("GET", "/{WorkspaceSid}/Tasks/{TaskSid}/Reservations", &format!("/{ws}/Tasks/{wt}/Reservations"), &[])
        .await;
    let wr = by_task["reservations"].get(0).map(sid).unwrap_or_else(|| panic!("the task was not reserved: {by_task}"));
    let via_task = format!("/{ws}/Tasks/{wt}/Reservations/{wr}");
    w.tr("GET", "/{WorkspaceSid}/Tasks/{TaskSid}/Reservations/{Sid}", &via_task, &[]).await;
    w.tr("POST", "/{WorkspaceSid}/Tasks/{TaskSid}/Reservations/{Sid}", &via_task, &[("ReservationStatus", "accepted")])
        .await;
    w.tr("GET", "/{WorkspaceSid}/Workers/{WorkerSid}/Reservations", &format!("/{ws}/Workers/{wk}/Reservations"), &[])
        .await;
    let via_worker = format!("/{ws}/Workers/{wk}/Reservations/{wr}");
    w.tr("GET", "/{WorkspaceSid}/Workers/{WorkerSid}/Reservations/{Sid}", &via_worker, &[]).await;
    // An update that changes nothing: the answer's shape is what is checked.
    w.tr("POST", "/{WorkspaceSid}/Workers/{WorkerSid}/Reservations/{Sid}", &via_worker, &[]).await;
    w.tr("DELETE", "/{WorkspaceSid}/Tasks/{Sid}", &format!("/{ws}/Tasks/{spare_wt}"), &[]).await;

    let tcs = w.tr("GET", "/{WorkspaceSid}/TaskChannels", &format!("/{ws}/TaskChannels"), &[]).await;
    let tc = tcs["channels"].get(0).map(sid).unwrap_or_else(|| panic!("no task channel: {tcs}"));
    w.tr("GET", "/{WorkspaceSid}/TaskChannels/{Sid}", &format!("/{ws}/TaskChannels/{tc}"), &[]).await;

    let mut mismatches = std::mem::take(&mut w.mismatches);
    for missed in served().difference(&w.walked) {
        mismatches.push(format!("{missed}: served, but the walk never sent it"));
    }
    w.t.sb.shutdown().await;
    assert!(mismatches.is_empty(), "{} mismatches with twilio-oai:\n  {}", mismatches.len(), mismatches.join("\n  "));
}

/// The checker itself finds each kind of mismatch, so a pass means something.
#[test]
fn the_checker_reports_each_kind_of_mismatch() {
    let spec = json!({
        "components": {"schemas": {
            "status": {"type": "string", "enum": ["a", "b"]},
            "thing": {"type": "object", "properties": {
                "sid": {"type": "string", "nullable": true},
                "count": {"type": "integer"},
                "status": {"$ref": "#/components/schemas/status"},
                "links": {"type": "object", "format": "uri-map", "nullable": true},
                "children_sid": {"type": "string", "nullable": true},
            }},
        }},
        "paths": {"/things/{Sid}": {"get": {"responses": {"200": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/thing"},
            "examples": {"fetch": {"value": {"links": {"parent": "x", "children": "y"}}}},
        }}}}}}},
    });
    let good =
        json!({"sid": null, "count": 1, "status": "a", "links": {"parent": "x", "children": "y"}, "children_sid": "C"});
    assert_eq!(check_answer(&spec, "GET", "/things/{Sid}", 200, &good), Vec::<String>::new());
    // No link to children that are not set.
    let unset = json!({"sid": null, "count": 1, "status": "a", "links": {"parent": "x"}, "children_sid": null});
    assert_eq!(check_answer(&spec, "GET", "/things/{Sid}", 200, &unset), Vec::<String>::new());
    let bad = json!({"count": "1", "status": "c", "links": {"parent": "x"}, "children_sid": "C", "extra": true});
    let errs = check_answer(&spec, "GET", "/things/{Sid}", 200, &bad);
    for want in [
        ".sid: missing",
        ".count: string \"1\", but the spec's type is integer",
        ".status: \"c\" is not one of the spec's [\"a\",\"b\"]",
        ".extra: not a property in the spec",
        ".links: no \"children\", which the spec's example shows",
    ] {
        assert!(errs.iter().any(|e| e == want), "{want:?} not in {errs:#?}");
    }
    let errs = check_answer(
        &spec,
        "GET",
        "/things/{Sid}",
        200,
        &json!({"sid": "x", "count": null, "status": null, "links": null, "children_sid": null}),
    );
    assert!(errs.iter().any(|e| e == ".count: null, but the spec does not make it nullable"), "{errs:#?}");
    assert!(errs.iter().any(|e| e == ".status: null, but the spec does not make it nullable"), "{errs:#?}");
    assert_eq!(check_answer(&spec, "GET", "/things/{Sid}", 404, &json!({})).len(), 1);
    assert_eq!(check_answer(&spec, "DELETE", "/things/{Sid}", 204, &json!("")), vec!["the spec has no such operation"]);
}
