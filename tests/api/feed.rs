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
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    let (_, deleted) = app.delete_vm(&id).await;
    app.wait_job(deleted["data"]["jobId"].as_str().expect("a job"))
        .await;

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
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "positions rise: {pos:?}"
    );
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
    let queued = jobs
        .iter()
        .filter(|f| f["data"]["status"] == "queued")
        .count();
    let succeeded = jobs
        .iter()
        .filter(|f| f["data"]["status"] == "succeeded")
        .count();
    assert_eq!((queued, succeeded), (4, 4), "{jobs:?}");
}

#[actix_rt::test]
async fn a_token_can_come_in_an_auth_frame_and_requests_are_echoed() {
    let app = spawn_app().await;
    let mut ws = app.ws_anonymous().await;
    ws.send("auth", json!({"token": app.token}), json!("a1"))
        .await;
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
    ws.send("auth", json!({"token": "forged"}), json!("x"))
        .await;
    let error = ws.next().await.expect("an error frame");
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "x");
    assert_eq!(error["data"]["code"], "UNAUTHORIZED");
    let closed = ws.closed(10).await;
    assert_eq!(closed.code, 1008, "{closed:?}");

    // Anything but auth first is refused too.
    let mut ws = app.ws_anonymous().await;
    ws.send("subscribe", json!({"topic": "jobs"}), json!(1))
        .await;
    let error = ws.next().await.expect("an error frame");
    assert_eq!(error["data"]["code"], "UNAUTHORIZED", "{error}");
    assert_eq!(ws.closed(10).await.code, 1008);
}

#[actix_rt::test]
async fn malformed_frames_get_error_frames_naming_the_field() {
    let app = spawn_app().await;
    let mut ws = app.ws(&app.token).await;
    let cases = [
        (
            json!({"type": "subscribe", "data": {"topic": "weather"}, "id": 1}),
            "data.topic",
        ),
        (
            json!({"type": "subscribe", "data": {"topic": "vm-status"}, "id": 2}),
            "data.vmId",
        ),
        (
            json!({"type": "subscribe", "data": {"topic": "system-monitor", "interval": 5}, "id": 3}),
            "data.interval",
        ),
        (
            json!({"type": "subscribe", "data": {"topic": "jobs", "since": "soon"}, "id": 4}),
            "data.since",
        ),
        (
            json!({"type": "vm-control", "data": {"vmId": "vm-x", "action": "fly"}, "id": 5}),
            "data.action",
        ),
        // A position the log has not reached (it would silently skip everything until then).
        (
            json!({"type": "subscribe", "data": {"topic": "vm-status-all", "since": 9_007_199_254_740_993_i64}, "id": 7}),
            "data.since",
        ),
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
    ws.send(
        "vm-control",
        json!({"vmId": id, "action": "start"}),
        json!("c1"),
    )
    .await;
    let answer = ws.next_of("vm-control-response").await;
    assert_eq!(answer["id"], "c1");
    assert_eq!(answer["data"]["action"], "start");
    let job = app
        .wait_job(answer["data"]["jobId"].as_str().expect("a job id"))
        .await;
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
    ws.send(
        "vm-control",
        json!({"vmId": id, "action": "start"}),
        json!("c2"),
    )
    .await;
    let error = ws.next_of("error").await;
    assert_eq!(error["id"], "c2");
    assert_eq!(error["data"]["code"], "VM_ALREADY_RUNNING", "{error}");
    ws.send(
        "vm-control",
        json!({"vmId": "vm-nope", "action": "stop"}),
        json!("c3"),
    )
    .await;
    assert_eq!(ws.next_of("error").await["data"]["code"], "VM_NOT_FOUND");
}

#[actix_rt::test]
async fn the_system_monitor_reports_the_host_to_admins_only() {
    let app = spawn_app().await;
    let mut ws = app.ws(&app.token).await;
    let (_, ack) = ws
        .subscribe(json!({"topic": "system-monitor", "interval": 500}))
        .await;
    assert_eq!(ack["data"]["interval"], 500);
    let sample = ws.next_of("system-monitor").await;
    let data = &sample["data"];
    assert!(data["cpu"]["cores"].as_u64().unwrap_or(0) >= 1, "{sample}");
    let total = data["memory"]["totalBytes"].as_u64().unwrap_or(0);
    assert!(
        total > 0 && data["memory"]["usedBytes"].as_u64().unwrap_or(u64::MAX) <= total,
        "{sample}"
    );
    assert!(
        data["disk"]["totalBytes"].as_u64().unwrap_or(0) > 0,
        "{sample}"
    );
    assert!(data["network"]["rxBytes"].is_u64(), "{sample}");
    ws.send(
        "unsubscribe",
        json!({"topic": "system-monitor"}),
        json!("u"),
    )
    .await;
    let done = ws.next_of("unsubscribed").await;
    assert_eq!(done["data"]["removed"], 1);

    let user = app.create_user("monitor-user").await;
    let mut ws = app.ws(&user).await;
    ws.send("subscribe", json!({"topic": "system-monitor"}), json!(1))
        .await;
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
async fn logging_out_closes_the_tokens_connections() {
    let app = spawn_app_with(|s| {
        s.ws.ping_interval_secs = 1;
        s.ws.idle_timeout_secs = 30;
    })
    .await;
    let token = app.login_token("admin", "admin123").await;
    let mut ws = app.ws(&token).await;
    let (status, _) = app
        .call_as(&token, Method::POST, "/api/v1/auth/logout", None)
        .await;
    assert!(status.is_success());
    let closed = ws.closed(30).await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    assert!(closed.reason.contains("token revoked"), "{closed:?}");
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

/// Changes a VM's description (one `VmReconfigured` event, no job).
async fn touch(app: &crate::helpers::TestApp, token: &str, id: &str, n: usize) {
    let (status, body) = app
        .call_as(
            token,
            Method::PATCH,
            &format!("/api/v1/vms/{id}"),
            Some(json!({"description": format!("step {n}")})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}

#[actix_rt::test]
async fn a_client_that_resumes_with_since_gets_exactly_what_it_missed() {
    let app = spawn_app().await;
    let id = app.create_guest("resume-me").await;
    let mut ws = app.ws(&app.token).await;
    ws.subscribe(json!({"topic": "vm-status-all"})).await;
    touch(&app, &app.token, &id, 1).await;
    touch(&app, &app.token, &id, 2).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = ws.next_of("vm-status").await;
        if let Some(p) = frame["data"]["position"].as_i64() {
            seen.push(p);
        }
    }
    let last = *seen.last().expect("two positions");
    ws.close().await;

    // Missed while away: three changes and a whole new VM.
    for n in 3..6 {
        touch(&app, &app.token, &id, n).await;
    }
    let other = app.create_guest("born-while-away").await;
    let missed = app.log_positions(&app.token, last).await;
    assert!(missed.len() >= 5, "{missed:?}");

    let mut ws = app.ws(&app.token).await;
    let (replay, ack) = ws
        .subscribe(json!({"topic": "vm-status-all", "since": last}))
        .await;
    assert_eq!(
        positions(&replay),
        missed,
        "the replay is exactly the missed events"
    );
    assert_eq!(ack["data"]["replayed"], missed.len());
    assert_eq!(ack["data"]["position"], *missed.last().expect("missed"));
    assert!(replay.iter().any(|f| f["data"]["vmId"] == other.as_str()));

    // Then live, with nothing repeated at the seam.
    touch(&app, &app.token, &id, 6).await;
    let live = loop {
        let frame = ws.next_of("vm-status").await;
        if frame["data"]["position"].is_i64() {
            break frame;
        }
    };
    let head = app
        .log_positions(&app.token, *missed.last().expect("missed"))
        .await;
    assert_eq!(head.len(), 1, "{head:?}");
    assert_eq!(live["data"]["position"], head[0]);
    assert_eq!(live["data"]["type"], "VmReconfigured");

    // A single VM's subscription replays only that VM.
    let mut ws = app.ws(&app.token).await;
    let (replay, _) = ws
        .subscribe(json!({"topic": "vm-status", "vmId": other, "since": 0}))
        .await;
    assert!(!replay.is_empty());
    assert!(replay.iter().all(|f| f["data"]["vmId"] == other.as_str()));
}

#[actix_rt::test]
async fn the_eleventh_connection_of_a_user_is_refused() {
    let app = spawn_app().await;
    let user = app.create_user("many-tabs").await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(app.ws(&user).await);
    }
    let (status, body) = app.try_ws(&user).await.err().expect("the 11th is refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap_or("")
            .contains("10 WebSocket connections"),
        "{body}"
    );
    // The same through an auth frame: an error frame, then a close with the reason.
    let mut late = app.ws_anonymous().await;
    late.send("auth", json!({"token": user}), json!("late"))
        .await;
    let error = late.next().await.expect("an error frame");
    assert_eq!(error["data"]["code"], "RATE_LIMITED", "{error}");
    let closed = late.closed(10).await;
    assert_eq!(closed.code, 1008);
    assert!(
        closed.reason.contains("10 WebSocket connections"),
        "{closed:?}"
    );

    // Other users are not affected.
    app.ws(&app.token).await;
    // Closing one frees its place.
    open.pop().expect("a connection").close().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match app.try_ws(&user).await {
            Ok(_) => break,
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("a place was not freed: {e:?}"),
        }
    }
}

#[actix_rt::test]
async fn a_user_never_sees_another_users_vm_events() {
    let app = spawn_app().await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let mut bob_ws = app.ws(&bob).await;
    bob_ws.subscribe(json!({"topic": "vm-status-all"})).await;
    bob_ws.subscribe(json!({"topic": "jobs"})).await;
    let mut admin_ws = app.ws(&app.token).await;
    admin_ws.subscribe(json!({"topic": "vm-status-all"})).await;

    let create = |token: &str, name: &str| {
        let body = json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"});
        let token = token.to_string();
        let app = &app;
        async move {
            let (status, body) = app
                .call_as(&token, Method::POST, "/api/v1/vms", Some(body))
                .await;
            assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
            let job = body["data"]["jobId"].as_str().expect("a job").to_string();
            app.wait_job(&job).await;
            body["data"]["id"].as_str().expect("an id").to_string()
        }
    };
    let alices = create(&alice, "secret-plans").await;
    let bobs = create(&bob, "bobs-box").await;

    // Bob's feed: his VM's two events and its job, nothing of Alice's.
    let mut bob_frames = Vec::new();
    while !bob_frames
        .iter()
        .any(|f: &Value| f["type"] == "job-update" && f["data"]["status"] == "succeeded")
        || bob_frames
            .iter()
            .filter(|f| f["type"] == "vm-status")
            .count()
            < 2
    {
        bob_frames.push(bob_ws.next().await.expect("bob's feed closed"));
    }
    // Anything of Alice's would have come before Bob's later events.
    while let Some(Some(frame)) = bob_ws.next_within(1).await {
        bob_frames.push(frame);
    }
    assert!(
        bob_frames
            .iter()
            .all(|f| f["data"]["vmId"] != alices.as_str()),
        "bob saw alice's VM: {bob_frames:?}"
    );
    assert!(bob_frames
        .iter()
        .any(|f| f["data"]["vmId"] == bobs.as_str()));

    // The admin sees both.
    let mut admin_vms = std::collections::HashSet::new();
    while admin_vms.len() < 2 {
        let frame = admin_ws.next_of("vm-status").await;
        admin_vms.insert(
            frame["data"]["vmId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(admin_vms.contains(&alices) && admin_vms.contains(&bobs));

    // Nor through a replay, a single-VM subscription or a command.
    let mut bob_ws = app.ws(&bob).await;
    let (replay, _) = bob_ws
        .subscribe(json!({"topic": "vm-status-all", "since": 0}))
        .await;
    assert!(!replay.is_empty());
    assert!(
        replay.iter().all(|f| f["data"]["vmId"] == bobs.as_str()),
        "{replay:?}"
    );
    bob_ws
        .send(
            "subscribe",
            json!({"topic": "vm-status", "vmId": alices}),
            json!("peek"),
        )
        .await;
    assert_eq!(
        bob_ws.next_of("error").await["data"]["code"],
        "VM_NOT_FOUND"
    );
    bob_ws
        .send(
            "vm-control",
            json!({"vmId": alices, "action": "start"}),
            json!("poke"),
        )
        .await;
    assert_eq!(
        bob_ws.next_of("error").await["data"]["code"],
        "VM_NOT_FOUND"
    );
    bob_ws
        .send("subscribe", json!({"topic": "system-event"}), json!("sys"))
        .await;
    assert_eq!(bob_ws.next_of("error").await["data"]["code"], "FORBIDDEN");
}

#[actix_rt::test]
async fn a_slow_client_is_cut_off_without_delaying_a_fast_one() {
    let app = spawn_app_with(|s| {
        s.ws.send_queue = 16;
        s.ws.slow_after_ms = 1000;
    })
    .await;
    // A long history: 20,000 events of one VM, written straight into the log.
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'vm', 'vm-longhistory', g, 'VmReconfigured', '1',
                jsonb_build_object('VmReconfigured', jsonb_build_object('description', 'step ' || g)),
                jsonb_build_object('actor_id', 'bulk', 'actor_name', 'bulk', 'via', 'system',
                                   'owner_id', 'bulk', 'status', 'stopped')
         FROM generate_series(1, 20000) g",
    )
    .execute(&pool)
    .await
    .expect("the history");
    let total = 20_000usize;

    // The slow client asks for all of it and then reads nothing.
    let mut slow = RawWs::connect(&app, &app.token).await;
    slow.send(
        &json!({"type": "subscribe", "data": {"topic": "vm-status-all", "since": 0}, "id": "s"}),
    )
    .await;

    // The fast client gets all of it, then a live event, while the slow one is stuck.
    let mut fast = app.ws(&app.token).await;
    let (replay, _) = fast
        .subscribe(json!({"topic": "vm-status-all", "since": 0}))
        .await;
    assert_eq!(replay.len(), total);
    let (status, created) = app
        .create_vm(
            json!({"name": "while-slow", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
    let live = fast.next_of("vm-status").await;
    assert_eq!(live["data"]["vmId"], created["data"]["id"]);

    // The slow client finds part of the history, then a close that says where to resume.
    let mut got: Vec<i64> = Vec::new();
    let (code, reason) = loop {
        match slow.next().await {
            Some(RawFrame::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).expect("a frame");
                if let Some(p) = frame["data"]["position"].as_i64() {
                    got.push(p);
                }
            }
            Some(RawFrame::Close(code, reason)) => break (code, reason),
            Some(RawFrame::Other) => {}
            None => panic!(
                "the slow client was dropped without a close frame after {} frames",
                got.len()
            ),
        }
    };
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("too slow"), "{reason}");
    assert!(
        !got.is_empty() && got.len() < total,
        "cut off part-way: {} frames",
        got.len()
    );
    let last = *got.last().expect("some frames");
    assert!(
        reason.ends_with(&format!("since={last}")),
        "{reason} (last received {last})"
    );

    // Resuming from there gives the rest, exactly.
    let mut again = app.ws(&app.token).await;
    let (rest, _) = again
        .subscribe(json!({"topic": "vm-status-all", "since": last}))
        .await;
    let mut all = got.clone();
    all.extend(positions(&rest));
    assert_eq!(all, app.log_positions(&app.token, 0).await);
}

#[actix_rt::test]
async fn nodes_on_one_log_see_each_others_events_and_system_events() {
    let app = spawn_app().await;
    let mut ws = app.ws(&app.token).await;
    ws.subscribe(json!({"topic": "system-event"})).await;
    ws.subscribe(json!({"topic": "vm-status-all"})).await;

    let second = crate::helpers::spawn_second_node(&app).await;
    let started = ws.next_of("system-event").await;
    assert_eq!(started["data"]["kind"], "node-started", "{started}");
    assert!(started["data"]["node"].is_string());

    // A VM created through the second node shows up on the first node's feed, once.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/vms",
            Some(json!({"name": "via-node-two", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let first_id = body["data"]["id"].as_str().expect("an id").to_string();
    let resp = app
        .client
        .post(format!("{second}/api/v1/vms"))
        .bearer_auth(&app.token)
        .json(&json!({"name": "on-node-two", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}))
        .send()
        .await
        .expect("the second node answers");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let body: Value = resp.json().await.expect("json");
    let second_id = body["data"]["id"].as_str().expect("an id").to_string();
    let mut created = Vec::new();
    while created.len() < 2 {
        let frame = ws.next_of("vm-status").await;
        if frame["data"]["type"] == "VmCreated" {
            created.push(
                frame["data"]["vmId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    assert_eq!(created, vec![first_id, second_id]);
}

#[actix_rt::test]
async fn a_running_vm_reports_its_cpu_and_memory() {
    let app = spawn_app_with(|s| s.ws.usage_interval_ms = 500).await;
    let id = app.create_guest("busy-bee").await;
    let mut ws = app.ws(&app.token).await;
    ws.subscribe(json!({"topic": "vm-status", "vmId": id}))
        .await;
    app.act_and_wait(&id, "start", None).await;
    // The usage board samples the QEMU process; its figures arrive without a position.
    let usage = loop {
        let frame = ws.next_of("vm-status").await;
        if frame["data"]["usage"].is_object() && frame["data"]["position"].is_null() {
            break frame;
        }
    };
    assert_eq!(usage["data"]["vmId"], id.as_str());
    assert_eq!(usage["data"]["status"], "running");
    let memory = usage["data"]["usage"]["memoryBytes"].as_u64().unwrap_or(0);
    assert!(
        memory > 16 * 1024 * 1024,
        "QEMU with a 128 MiB guest: {usage}"
    );
    assert!(
        usage["data"]["usage"]["cpuPercent"].as_f64().is_some(),
        "{usage}"
    );

    // Once it stops, no more figures for it.
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    let stopped = loop {
        let frame = ws.next_of("vm-status").await;
        if frame["data"]["type"] == "VmStopped" {
            break frame;
        }
    };
    assert_eq!(stopped["data"]["status"], "stopped");
    assert!(stopped["data"]["usage"].is_null(), "{stopped}");
    // The board drops it at its next sample (every 500 ms here).
    let settle = tokio::time::Instant::now() + std::time::Duration::from_millis(1200);
    while tokio::time::Instant::now() < settle {
        let _ = ws.next_within_ms(100).await;
    }
    while let Some(Some(frame)) = ws.next_within(2).await {
        assert!(
            frame["data"]["usage"].is_null(),
            "figures after the stop: {frame}"
        );
    }
}

#[actix_rt::test]
async fn a_stopping_server_says_goodbye_and_exits_cleanly() {
    let env = crate::helpers::Env::new().await;
    let mut app = crate::helpers::spawn_server(env).await;
    let mut ws = app.ws(&app.token).await;
    ws.subscribe(json!({"topic": "vm-status-all"})).await;
    let status = app.terminate_server().await;
    let closed = ws.closed(30).await;
    assert_eq!(closed.code, 1001, "{closed:?}");
    assert!(closed.reason.contains("stopping"), "{closed:?}");
    assert!(status.success(), "the server exited with {status}");
}
