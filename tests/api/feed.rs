//! The real-time feed: `/ws` against the real NATS, PostgreSQL and QEMU.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with};
use crate::ws_client::{positions, RawFrame, RawWs};

#[actix_rt::test]
async fn lifecycle_events_arrive_in_order_with_their_positions() {
    let app = spawn_app().await;
    let mut ws = app.ws(&app.token).await;
    let (replay, ack) = ws.subscribe(json!({"topic": "vm-status-all"})).await;
    assert!(replay.is_empty(), "no since, no replay: {replay:?}");
    assert!(ack["data"]["position"].is_i64(), "{ack}");
    let (_, jobs_ack) = ws.subscribe(json!({"topic": "jobs"})).await;
    assert_eq!(jobs_ack["data"]["topic"], "jobs");

    let id = app.create_guest("feed-order").await;
    app.act_and_wait(&id, "start", None).await;
    app.act_and_wait(&id, "stop", Some(json!({"force": true}))).await;
    let (_, deleted) = app.delete_vm(&id).await;
    app.wait_job(deleted["data"]["jobId"].as_str().expect("a job")).await;

    let mut statuses: Vec<Value> = Vec::new();
    let mut jobs = Vec::new();
    // Until the VM is gone and its four jobs (provision, start, stop, delete) were queued and
    // ended.
    while statuses.last().map(|f| f["data"]["type"].clone()) != Some(json!("VmDeleted"))
        || jobs.len() < 8
    {
        let frame = ws.next().await.expect("the feed closed");
        match frame["type"].as_str() {
            Some("vm-status") if frame["data"]["position"].is_i64() => {
                assert_eq!(frame["data"]["vmId"], id.as_str());
                statuses.push(frame);
            }
            Some("job-update") => jobs.push(frame),
            _ => {}
        }
    }
    // Exactly the VM's own history, in order.
    let (_, history) = app.vm_events(&id, "?limit=100").await;
    let expected: Vec<Value> = history["data"]["items"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    let got: Vec<Value> = statuses.iter().map(|f| f["data"]["type"].clone()).collect();
    assert_eq!(got, expected);
    let pos = positions(&statuses);
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "positions rise: {pos:?}");
    // Each frame says what the event left the VM as.
    let status_after: Vec<&str> = statuses
        .iter()
        .map(|f| f["data"]["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(status_after.first(), Some(&"creating"));
    assert!(status_after.contains(&"running"), "{status_after:?}");
    assert_eq!(status_after.last(), Some(&"deleted"));
    // Each job queued, then succeeded.
    for frame in &jobs {
        assert_eq!(frame["data"]["vmId"], id.as_str());
    }
    let queued = jobs.iter().filter(|f| f["data"]["status"] == "queued").count();
    let succeeded = jobs.iter().filter(|f| f["data"]["status"] == "succeeded").count();
    assert_eq!((queued, succeeded), (4, 4), "{jobs:?}");
}

#[actix_rt::test]
async fn a_token_can_come_in_an_auth_frame_and_requests_are_echoed() {
    let app = spawn_app().await;
    let mut ws = app.ws_anonymous().await;
    ws.send("auth", json!({"token": app.token}), json!("a1")).await;
    let hello = ws.next().await.expect("an answer");
    assert_eq!(hello["type"], "authenticated", "{hello}");
    assert_eq!(hello["id"], "a1");
    assert_eq!(hello["data"]["username"], "admin");
    assert!(hello["timestamp"].is_string());

    ws.send("ping", json!({}), json!(17)).await;
    let pong = ws.next_of("pong").await;
    assert_eq!(pong["id"], 17);
}

#[actix_rt::test]
async fn a_bad_token_is_refused_before_and_after_the_upgrade() {
    let app = spawn_app().await;
    let refused = app.try_ws("not-a-token").await.err().expect("a refusal");
    assert_eq!(refused.0, 401);
    assert_eq!(refused.1["error"]["code"], "UNAUTHORIZED", "{}", refused.1);

    let mut ws = app.ws_anonymous().await;
    ws.send("auth", json!({"token": "forged"}), json!("x")).await;
    let error = ws.next().await.expect("an error frame");
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "x");
    assert_eq!(error["data"]["code"], "UNAUTHORIZED");
    let closed = ws.closed(10).await;
    assert_eq!(closed.code, 1008, "{closed:?}");

    // Anything but auth first is refused too.
    let mut ws = app.ws_anonymous().await;
    ws.send("subscribe", json!({"topic": "jobs"}), json!(1)).await;
    let error = ws.next().await.expect("an error frame");
    assert_eq!(error["data"]["code"], "UNAUTHORIZED", "{error}");
    assert_eq!(ws.closed(10).await.code, 1008);
}

#[actix_rt::test]
async fn malformed_frames_get_error_frames_naming_the_field() {
    let app = spawn_app().await;
    let mut ws = app.ws(&app.token).await;
    let cases = [
        (json!({"type": "subscribe", "data": {"topic": "weather"}, "id": 1}), "data.topic"),
        (json!({"type": "subscribe", "data": {"topic": "vm-status"}, "id": 2}), "data.vmId"),
        (json!({"type": "subscribe", "data": {"topic": "system-monitor", "interval": 5}, "id": 3}), "data.interval"),
        (json!({"type": "subscribe", "data": {"topic": "jobs", "since": "soon"}, "id": 4}), "data.since"),
        (json!({"type": "vm-control", "data": {"vmId": "vm-x", "action": "fly"}, "id": 5}), "data.action"),
        (json!({"type": "dance", "id": 6}), "type"),
    ];
    for (frame, field) in cases {
        ws.send_text(&frame.to_string()).await;
        let error = ws.next_of("error").await;
        assert_eq!(error["id"], frame["id"], "{error}");
        assert_eq!(error["data"]["code"], "VALIDATION_ERROR", "{error}");
        assert_eq!(error["data"]["field"], field, "{error}");
    }
    ws.send_text("{not json").await;
    let error = ws.next_of("error").await;
    assert_eq!(error["data"]["code"], "INVALID_JSON");
    // The connection survives all of that.
    ws.send("ping", json!({}), json!("still")).await;
    assert_eq!(ws.next_of("pong").await["id"], "still");
}

#[actix_rt::test]
async fn vm_control_answers_with_the_job_id() {
    let app = spawn_app().await;
    let id = app.create_guest("ws-control").await;
    let mut ws = app.ws(&app.token).await;
    ws.send("vm-control", json!({"vmId": id, "action": "start"}), json!("c1")).await;
    let answer = ws.next_of("vm-control-response").await;
    assert_eq!(answer["id"], "c1");
    assert_eq!(answer["data"]["action"], "start");
    let job = app.wait_job(answer["data"]["jobId"].as_str().expect("a job id")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(app.status_of(&id).await, "running");

    // The audit log records that it came over the WebSocket.
    let (_, events) = app.vm_events(&id, "").await;
    let started = events["data"]["items"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "StartRequested")
        .cloned()
        .expect("a StartRequested");
    assert_eq!(started["actor"]["via"], "websocket", "{started}");

    // A state conflict is an error frame with the API's code.
    ws.send("vm-control", json!({"vmId": id, "action": "start"}), json!("c2")).await;
    let error = ws.next_of("error").await;
    assert_eq!(error["id"], "c2");
    assert_eq!(error["data"]["code"], "VM_ALREADY_RUNNING", "{error}");
    ws.send("vm-control", json!({"vmId": "vm-nope", "action": "stop"}), json!("c3")).await;
    assert_eq!(ws.next_of("error").await["data"]["code"], "VM_NOT_FOUND");
}

#[actix_rt::test]
async fn the_system_monitor_reports_the_host_to_admins_only() {
    let app = spawn_app().await;
    let mut ws = app.ws(&app.token).await;
    let (_, ack) = ws.subscribe(json!({"topic": "system-monitor", "interval": 500})).await;
    assert_eq!(ack["data"]["interval"], 500);
    let sample = ws.next_of("system-monitor").await;
    let data = &sample["data"];
    assert!(data["cpu"]["cores"].as_u64().unwrap_or(0) >= 1, "{sample}");
    let total = data["memory"]["totalBytes"].as_u64().unwrap_or(0);
    assert!(total > 0 && data["memory"]["usedBytes"].as_u64().unwrap_or(u64::MAX) <= total, "{sample}");
    assert!(data["disk"]["totalBytes"].as_u64().unwrap_or(0) > 0, "{sample}");
    assert!(data["network"]["rxBytes"].is_u64(), "{sample}");
    ws.send("unsubscribe", json!({"topic": "system-monitor"}), json!("u")).await;
    let done = ws.next_of("unsubscribed").await;
    assert_eq!(done["data"]["removed"], 1);

    let user = app.create_user("monitor-user").await;
    let mut ws = app.ws(&user).await;
    ws.send("subscribe", json!({"topic": "system-monitor"}), json!(1)).await;
    assert_eq!(ws.next_of("error").await["data"]["code"], "FORBIDDEN");
}

#[actix_rt::test]
async fn an_expired_token_closes_the_connection() {
    let app = spawn_app_with(|s| s.token_ttl_secs = 2).await;
    let token = app.login_token("admin", "admin123").await;
    let mut ws = app.ws(&token).await;
    let closed = ws.closed(30).await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    assert!(closed.reason.contains("token expired"), "{closed:?}");
}

#[actix_rt::test]
async fn a_silent_client_is_closed_by_the_heartbeat() {
    let app = spawn_app_with(|s| {
        s.ws.ping_interval_secs = 1;
        s.ws.idle_timeout_secs = 2;
    })
    .await;
    // A client that answers no ping and sends nothing.
    let mut silent = RawWs::connect(&app, &app.token).await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match silent.next().await {
                Some(RawFrame::Close(code, reason)) => return (code, reason),
                Some(_) => continue,
                None => panic!("the connection ended without a close frame"),
            }
        }
    })
    .await
    .expect("the silent client was not closed within 30 s");
    assert_eq!(closed.0, 1008, "{closed:?}");
    assert!(closed.1.contains("heartbeat"), "{closed:?}");
    // A client that keeps talking stays.
    let mut ws = app.ws(&app.token).await;
    for i in 0..5 {
        ws.send("ping", json!({}), json!(i)).await;
        assert_eq!(ws.next_of("pong").await["id"], i);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    let (status, _) = app.call(Method::GET, "/health", None).await;
    assert!(status.is_success());
}
