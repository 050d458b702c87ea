//! REST resources at the HTTP level: auth, CRUD, error bodies, paging.

mod common;

use serde_json::Value;

#[tokio::test]
async fn auth_is_required_everywhere() {
    let t = common::start(1.0).await;
    for url in [t.core("IncomingPhoneNumbers.json"), t.tr("Workspaces"), format!("{}/sandbox/state", t.url)] {
        let r = t.http.get(&url).send().await.unwrap();
        let (s, body) = common::read(r).await;
        assert_eq!(s, 401, "{url}");
        assert_eq!(body["code"], 20003);
        assert_eq!(body["status"], 401);
        let r = t.http.get(&url).basic_auth(&t.sid, Some("wrong")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
}

#[tokio::test]
async fn incoming_numbers_crud_and_errors() {
    let t = common::start(1.0).await;
    let (s, n) = t
        .post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", "+14155550100"), ("VoiceUrl", "http://x/in")])
        .await;
    assert_eq!(s, 201, "{n}");
    let sid = n["sid"].as_str().unwrap();
    assert!(sid.starts_with("PN"));
    assert_eq!(n["voice_url"], "http://x/in");
    assert_eq!(n["account_sid"], t.sid.as_str());
    assert!(n["date_created"].as_str().unwrap().ends_with("+0000"));

    let (s, e) = t.post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", "+14155550100")]).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(21422)));
    let (s, e) = t.post(&t.core("IncomingPhoneNumbers.json"), &[("VoiceUrl", "http://x")]).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(21452)));

    let (s, n2) = t
        .post(
            &t.core(&format!("IncomingPhoneNumbers/{sid}.json")),
            &[("VoiceUrl", "http://y/in"), ("VoiceMethod", "GET")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!((n2["voice_url"].as_str(), n2["voice_method"].as_str()), (Some("http://y/in"), Some("GET")));

    let (s, l) = t.get(&t.core("IncomingPhoneNumbers.json?PhoneNumber=%2B14155550100")).await;
    assert_eq!(s, 200);
    assert_eq!(l["incoming_phone_numbers"].as_array().unwrap().len(), 1);
    let (_, l) = t.get(&t.core("IncomingPhoneNumbers.json?PhoneNumber=%2B19995550100")).await;
    assert_eq!(l["incoming_phone_numbers"].as_array().unwrap().len(), 0);

    let (s, _) = t.delete(&t.core(&format!("IncomingPhoneNumbers/{sid}.json"))).await;
    assert_eq!(s, 204);
    let (s, e) = t.get(&t.core(&format!("IncomingPhoneNumbers/{sid}.json"))).await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(20404)));
    assert!(e["more_info"].as_str().unwrap().contains("20404"));
    let (s, _) = t
        .http
        .patch(t.core("IncomingPhoneNumbers.json"))
        .basic_auth(&t.sid, Some(&t.token))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(s, 405);
}

#[tokio::test]
async fn paging_core_and_taskrouter() {
    let t = common::start(1.0).await;
    for i in 0..5 {
        let n = format!("+1415555010{i}");
        assert_eq!(t.post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", &n)]).await.0, 201);
    }
    let (_, p) = t.get(&t.core("IncomingPhoneNumbers.json?PageSize=2")).await;
    assert_eq!(p["incoming_phone_numbers"].as_array().unwrap().len(), 2);
    assert_eq!(p["page_size"], 2);
    let mut next = p["next_page_uri"].as_str().unwrap().to_owned();
    let mut seen = 2;
    loop {
        let (_, p) = t.get(&format!("{}{next}", t.url)).await;
        seen += p["incoming_phone_numbers"].as_array().unwrap().len();
        match p["next_page_uri"].as_str() {
            Some(n) => next = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, 5);

    let (ws, _, _) = t.workspace(None).await;
    for i in 0..3 {
        let (s, w) = t.post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", &format!("w{i}"))]).await;
        assert_eq!(s, 201, "{w}");
    }
    let (_, p) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers?PageSize=2"))).await;
    assert_eq!(p["workers"].as_array().unwrap().len(), 2);
    assert_eq!(p["meta"]["key"], "workers");
    let next = p["meta"]["next_page_url"].as_str().unwrap();
    let (_, p2) = t.get(next).await;
    assert_eq!(p2["workers"].as_array().unwrap().len(), 1);
    assert_eq!(p2["meta"]["next_page_url"], Value::Null);
}

#[tokio::test]
async fn taskrouter_resources_and_validation() {
    let t = common::start(1.0).await;
    let (ws, available, offline) = t.workspace(Some("http://127.0.0.1:9/events")).await;
    let (_, w) = t.get(&t.tr(&format!("Workspaces/{ws}"))).await;
    assert_eq!(w["default_activity_name"], "Offline");
    assert_eq!(w["timeout_activity_sid"], offline.as_str());
    assert!(w["date_created"].as_str().unwrap().ends_with('Z'));

    let (s, q) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/TaskQueues")),
            &[("FriendlyName", "q"), ("TargetWorkers", "location == \"north\"")],
        )
        .await;
    assert_eq!(s, 201, "{q}");
    let q = q["sid"].as_str().unwrap().to_owned();
    let (s, e) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/TaskQueues")),
            &[("FriendlyName", "bad"), ("TargetWorkers", "location ==")],
        )
        .await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)), "{e}");

    let cfg = format!(
        r#"{{"task_routing":{{"filters":[{{"filter_friendly_name":"f","expression":"1==1","targets":[{{"queue":"{q}"}}]}}],"default_filter":{{"queue":"{q}"}}}}}}"#
    );
    let (s, wf) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Workflows")),
            &[("FriendlyName", "wf"), ("Configuration", &cfg), ("TaskReservationTimeout", "30")],
        )
        .await;
    assert_eq!(s, 201, "{wf}");
    assert_eq!(wf["task_reservation_timeout"], 30);
    let bad_cfg = cfg.replace("1==1", "==");
    let (s, e) = t
        .post(&t.tr(&format!("Workspaces/{ws}/Workflows")), &[("FriendlyName", "wf2"), ("Configuration", &bad_cfg)])
        .await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)), "{e}");
    let (s, _) = t
        .post(&t.tr(&format!("Workspaces/{ws}/Workflows")), &[("FriendlyName", "wf3"), ("Configuration", "{not json")])
        .await;
    assert_eq!(s, 400);

    let (s, wk) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Workers")),
            &[("FriendlyName", "north"), ("Attributes", r#"{"location":"north"}"#), ("ActivitySid", &available)],
        )
        .await;
    assert_eq!(s, 201, "{wk}");
    assert_eq!(wk["available"], true);
    assert_eq!(wk["activity_name"], "Available");
    let wk = wk["sid"].as_str().unwrap().to_owned();
    let (s, e) =
        t.post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "x"), ("Attributes", "[1]")]).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)));

    let (_, ch) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers/{wk}/Channels"))).await;
    assert_eq!(ch["channels"][0]["task_channel_unique_name"], "voice");
    let (s, ch) = t.post(&t.tr(&format!("Workspaces/{ws}/Workers/{wk}/Channels/voice")), &[("Capacity", "3")]).await;
    assert_eq!((s, ch["configured_capacity"].as_u64()), (200, Some(3)));

    let (_, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers?Available=true"))).await;
    assert_eq!(l["workers"].as_array().unwrap().len(), 1);
    let (_, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Workers?ActivityName=Offline"))).await;
    assert_eq!(l["workers"].as_array().unwrap().len(), 0);
    let (_, l) = t.get(&t.tr(&format!("Workspaces/{ws}/TaskQueues?FriendlyName=q"))).await;
    assert_eq!(l["task_queues"].as_array().unwrap().len(), 1);

    let (s, task) = t.post(&t.tr(&format!("Workspaces/{ws}/Tasks")), &[("Attributes", r#"{"a":1}"#)]).await;
    assert_eq!(s, 201, "{task}");
    let task_sid = task["sid"].as_str().unwrap().to_owned();
    let (_, task) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks/{task_sid}"))).await;
    assert_eq!(task["assignment_status"], "reserved");
    let (_, rs) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks/{task_sid}/Reservations"))).await;
    let res = rs["reservations"][0]["sid"].as_str().unwrap().to_owned();
    assert_eq!(rs["reservations"][0]["worker_sid"], wk.as_str());
    let (s, r) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Tasks/{task_sid}/Reservations/{res}")),
            &[("ReservationStatus", "accepted")],
        )
        .await;
    assert_eq!((s, r["reservation_status"].as_str()), (200, Some("accepted")));
    let (_, l) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks?AssignmentStatus=assigned"))).await;
    assert_eq!(l["tasks"].as_array().unwrap().len(), 1);
    let (s, e) = t.post(&t.tr(&format!("Workspaces/{ws}/Tasks/{task_sid}")), &[("AssignmentStatus", "pending")]).await;
    assert_eq!((s, e["code"].as_u64()), (400, Some(20001)));
    let (s, task) = t
        .post(
            &t.tr(&format!("Workspaces/{ws}/Tasks/{task_sid}")),
            &[("AssignmentStatus", "completed"), ("Reason", "done")],
        )
        .await;
    assert_eq!(
        (s, task["assignment_status"].as_str(), task["reason"].as_str()),
        (200, Some("completed"), Some("done"))
    );
    let (s, _) = t.delete(&t.tr(&format!("Workspaces/{ws}/Tasks/{task_sid}"))).await;
    assert_eq!(s, 204);
    let (s, e) = t.get(&t.tr(&format!("Workspaces/{ws}/Tasks/{task_sid}"))).await;
    assert_eq!((s, e["code"].as_u64()), (404, Some(20404)));
    let (s, _) = t.get(&t.tr("Workspaces/WS00000000000000000000000000000000/Workers")).await;
    assert_eq!(s, 404);

    let (s, st) = t.get(&format!("{}/sandbox/state", t.url)).await;
    assert_eq!(s, 200);
    assert_eq!(st["workers"].as_array().unwrap().len(), 1);
    let (s, log) = t.get(&format!("{}/sandbox/log?since=0", t.url)).await;
    assert_eq!(s, 200);
    let n = log["entries"].as_array().unwrap().len();
    assert!(n > 10, "{n}");
    assert!(log["next"].as_u64().unwrap() >= n as u64);
    t.sb.shutdown().await;
}

#[tokio::test]
async fn same_seed_same_sids() {
    async fn sids(seed: u64) -> Vec<String> {
        let cfg = call_router_sandbox::Config::random(1.0, seed);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sb = call_router_sandbox::start(cfg, listener).await.unwrap();
        let t = common::T {
            url: sb.url(),
            sid: sb.account_sid().to_string(),
            token: sb.auth_token().to_owned(),
            http: reqwest::Client::new(),
            sb,
        };
        let (ws, available, _) = t.workspace(None).await;
        let (_, w) = t.post(&t.tr(&format!("Workspaces/{ws}/Workers")), &[("FriendlyName", "w")]).await;
        let (_, n) = t.post(&t.core("IncomingPhoneNumbers.json"), &[("PhoneNumber", "+14155550100")]).await;
        vec![ws, available, w["sid"].as_str().unwrap().into(), n["sid"].as_str().unwrap().into()]
    }
    assert_eq!(sids(42).await, sids(42).await);
    assert_ne!(sids(42).await, sids(43).await);
}
