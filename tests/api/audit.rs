//! The audit log: filters, paging that never skips while writers append, who may read what,
//! history at any point, old event versions, the human log, and a streaming export.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_server, utf8_percent_encode, Env, TestApp};

fn items(body: &Value) -> Vec<Value> {
    body["data"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn blank_vm(app: &TestApp, name: &str) -> (String, String) {
    let (status, body) = app
        .create_vm(json!({"name": name, "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job = body["data"]["jobId"].as_str().unwrap().to_string();
    app.wait_job(&job).await;
    (body["data"]["id"].as_str().unwrap().to_string(), job)
}

#[actix_rt::test]
async fn filters_work_alone_and_combined() {
    let app = spawn_app().await;
    let (a, a_job) = blank_vm(&app, "a").await;
    let (b, _) = blank_vm(&app, "b").await;
    for cpu in [2, 3] {
        assert_eq!(
            app.patch_vm(&a, json!({"cpu": cpu})).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(app.patch_vm(&b, json!({"cpu": 2})).await.0, StatusCode::OK);

    let (_, all) = app.events("?limit=1000&streamType=vm").await;
    let all = items(&all);
    assert_eq!(all.len(), 7);
    // Without it, the account streams too: the first start created the admin.
    let (_, everything) = app.events("?limit=1000").await;
    assert_eq!(items(&everything).len(), 8);
    assert_eq!(items(&everything)[0]["type"], "UserCreated");

    let (_, body) = app.events(&format!("?vmId={a}")).await;
    assert_eq!(items(&body).len(), 4);
    assert!(items(&body).iter().all(|e| e["vmId"] == a.as_str()));

    let (_, body) = app.events("?type=VmReconfigured").await;
    assert_eq!(items(&body).len(), 3);
    let (_, body) = app.events("?type=VmCreated,VmProvisioned").await;
    assert_eq!(items(&body).len(), 4);
    let (_, repeated) = app.events("?type=VmCreated&type=VmProvisioned").await;
    assert_eq!(
        items(&repeated),
        items(&body),
        "a repeated key reads as the comma list"
    );

    let (_, body) = app.events("?actor=admin").await;
    assert!(items(&body).iter().all(|e| e["actor"]["name"] == "admin"));
    assert_eq!(items(&body).len(), 5, "{body}");
    let (_, body) = app.events("?actor=job%20worker").await;
    assert_eq!(items(&body).len(), 2);

    let (_, body) = app.events(&format!("?jobId={a_job}")).await;
    let types: Vec<_> = items(&body).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, vec![json!("VmCreated"), json!("VmProvisioned")]);

    let (_, body) = app.events(&format!("?vmId={a}&type=VmReconfigured")).await;
    assert_eq!(items(&body).len(), 2);
    let (_, body) = app.events(&format!("?vmId={b}&actor=job%20worker")).await;
    assert_eq!(items(&body).len(), 1);

    // Time: [from, to) holds the events recorded between two known ones.
    let t = |i: usize| all[i]["recordedAt"].as_str().unwrap().to_string();
    let (_, body) = app
        .events(&format!(
            "?from={}&to={}",
            utf8_percent_encode(&t(2)),
            utf8_percent_encode(&t(5))
        ))
        .await;
    let positions: Vec<_> = items(&body).iter().map(|e| e["position"].clone()).collect();
    let expected: Vec<_> = all[2..5].iter().map(|e| e["position"].clone()).collect();
    assert_eq!(positions, expected);

    // Positions: after and before are exclusive.
    let p = |i: usize| all[i]["position"].as_i64().unwrap();
    let (_, body) = app
        .events(&format!("?after={}&before={}", p(1), p(4)))
        .await;
    let positions: Vec<_> = items(&body)
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, vec![p(2), p(3)]);

    // Bad filters name their field.
    for (query, field) in [
        ("?type=NoSuchEvent", "type"),
        ("?from=yesterday", "from"),
        ("?limit=0", "limit"),
        ("?after=-1", "after"),
        ("?format=xml", "format"),
    ] {
        let (status, body) = app.events(query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
}

#[actix_rt::test]
async fn paging_never_skips_or_repeats_while_16_writers_append() {
    let app = spawn_app().await;
    let mut vms = Vec::new();
    for i in 0..16 {
        vms.push(blank_vm(&app, &format!("w{i}")).await.0);
    }
    let done = AtomicBool::new(false);
    let app = &app;
    let writers = async {
        let writers = vms.iter().map(|vm| async move {
            for n in 0..8 {
                let (status, body) = app
                    .patch_vm(vm, json!({"description": format!("edit {n}")}))
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        });
        futures::future::join_all(writers).await;
        done.store(true, Ordering::SeqCst);
    };
    let reader = async {
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            let (status, body) = app
                .events(&format!("?after={cursor}&limit=7&streamType=vm"))
                .await;
            assert_eq!(status, StatusCode::OK);
            let page = items(&body);
            seen.extend(page.iter().map(|e| e["position"].as_i64().unwrap()));
            cursor = body["data"]["next"].as_i64().unwrap();
            if page.is_empty() && finished {
                return seen;
            }
        }
    };
    let ((), seen) = futures::join!(writers, reader);
    let pool = sqlx::PgPool::connect(&app.env.database_url).await.unwrap();
    let all: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM events WHERE aggregate_type = 'vm' ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(all.len(), 16 * 2 + 16 * 8);
    assert_eq!(seen, all, "the reader skipped or repeated events");
}

#[actix_rt::test]
async fn a_user_cannot_read_another_users_events() {
    let app = spawn_app().await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let (status, body) = app
        .call_as(
            &alice,
            Method::POST,
            "/api/v1/vms",
            Some(json!({"name": "secret", "cpu": 1, "memory": 128, "disk": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let vm = body["data"]["id"].as_str().unwrap().to_string();
    app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;

    let (_, mine) = app
        .call_as(&alice, Method::GET, "/api/v1/events", None)
        .await;
    assert_eq!(items(&mine).len(), 2, "{mine}");
    for path in [
        "/api/v1/events".to_string(),
        format!("/api/v1/events?vmId={vm}"),
        "/api/v1/logs".to_string(),
    ] {
        let (status, body) = app.call_as(&bob, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(items(&body).is_empty(), "{path}: {body}");
    }
    for path in [
        format!("/api/v1/vms/{vm}/events"),
        format!("/api/v1/vms/{vm}/history?at=1"),
    ] {
        let (status, _) = app.call_as(&bob, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let export = app
        .client
        .get(app.url("/api/v1/events?format=ndjson"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.is_empty(), "{export}");
    // The export checks the page size it does not use, as the page does.
    for limit in [0, 5000] {
        let (status, body) = app
            .call_as(
                &bob,
                Method::GET,
                &format!("/api/v1/events?format=ndjson&limit={limit}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], "limit", "{body}");
    }
}

/// The status a VM holds while the job an event opened runs.
fn transitional(event_type: &str) -> Option<&'static str> {
    match event_type {
        "StartRequested" => Some("starting"),
        "StopRequested" => Some("stopping"),
        "PauseRequested" => Some("pausing"),
        "ResumeRequested" => Some("resuming"),
        "RestartRequested" | "ResetRequested" => Some("rebooting"),
        "DeleteRequested" => Some("deleting"),
        "VmCreated" => Some("creating"),
        _ => None,
    }
}

#[actix_rt::test]
async fn history_matches_the_state_the_vm_had_at_every_sequence() {
    let app = spawn_app().await;
    let (id, _) = blank_vm(&app, "hist").await;
    let mut seen: BTreeMap<i64, Value> = BTreeMap::new();
    let mut record = async |app: &TestApp| {
        let (_, body) = app.get_vm(&id).await;
        seen.insert(
            body["data"]["version"].as_i64().unwrap(),
            body["data"].clone(),
        );
    };
    record(&app).await;
    app.patch_vm(&id, json!({"cpu": 2})).await;
    record(&app).await;
    app.act_and_wait(&id, "start", None).await;
    record(&app).await;
    app.act_and_wait(&id, "pause", None).await;
    record(&app).await;
    app.act_and_wait(&id, "resume", None).await;
    record(&app).await;
    app.patch_vm(&id, json!({"memory": 256})).await;
    record(&app).await;
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    record(&app).await;
    app.patch_vm(&id, json!({"name": "hist-2"})).await;
    record(&app).await;

    let (_, events) = app.vm_events(&id, "?limit=100").await;
    let events = items(&events);
    assert_eq!(events.len(), 13);
    for event in &events {
        let n = event["sequence"].as_i64().unwrap();
        let (status, body) = app.history(&id, &n.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let state = &body["data"]["state"];
        assert_eq!(state["version"], n);
        match seen.get(&n) {
            Some(real) => {
                for field in ["status", "cpu", "memory", "name", "requiresRestart", "pid"] {
                    assert_eq!(state[field], real[field], "{field} at {n}");
                }
            }
            None => {
                let t = event["type"].as_str().unwrap();
                assert_eq!(
                    state["status"].as_str(),
                    transitional(t),
                    "status at {n} ({t})"
                );
            }
        }
        // The same point named by its time.
        let at = event["recordedAt"].as_str().unwrap();
        let (_, by_time) = app.history(&id, at).await;
        assert_eq!(by_time["data"]["at"]["sequence"], n, "{by_time}");
    }
    let (status, body) = app.history(&id, "2000-01-01T00:00:00Z").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "at");
}

#[actix_rt::test]
async fn an_event_stored_in_an_old_shape_still_loads() {
    let app = spawn_app().await;
    let (id, _) = blank_vm(&app, "old").await;
    let pool = sqlx::PgPool::connect(&app.env.database_url).await.unwrap();
    // Metadata as an older version might have written it: no owner or status, a key this version
    // no longer knows and a channel it has no name for. It reads, keeping what it knows.
    let meta = json!({"actor_id": "system", "actor_name": "an older VoidVM", "via": "fax",
                      "job_id": "job-old", "retired_key": "x"});
    for (seq, ty, version, payload) in [
        (
            3,
            "StartRequested",
            "1",
            json!({"StartRequested": {"jobId": "job-old"}}),
        ),
        // Version 1 had no `attempts`.
        (
            4,
            "OperationFailed",
            "1",
            json!({"OperationFailed": {"jobId": "job-old", "operation": "start", "reason": "An old failure."}}),
        ),
    ] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('vm', $1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(seq as i64)
        .bind(ty)
        .bind(version)
        .bind(payload)
        .bind(&meta)
        .execute(&pool)
        .await
        .unwrap();
    }
    let (status, body) = app.history(&id, "4").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["state"]["status"], "error");
    assert_eq!(body["data"]["state"]["statusReason"], "An old failure.");
    // The actor, holding state from before those rows, loses the race, reloads through the
    // upcaster, and decides on the VM as it really is: errored, so it may start.
    app.act_and_wait(&id, "start", None).await;
    assert_eq!(app.status_of(&id).await, "running");
    // The log keeps the stored shape and says which version it is.
    let (_, body) = app
        .events(&format!("?vmId={id}&type=OperationFailed"))
        .await;
    let old = &items(&body)[0];
    assert_eq!(old["version"], "1");
    assert_eq!(old["actor"]["name"], "an older VoidVM", "{body}");
    assert_eq!(old["actor"]["via"], Value::Null, "{body}");
    assert_eq!(old["jobId"], "job-old", "{body}");
    let (status, body) = app.logs("?level=error").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(items(&body)[0]["jobId"], "job-old", "{body}");
}

#[actix_rt::test]
async fn the_log_for_people_has_levels() {
    let app = spawn_app().await;
    let (id, _) = blank_vm(&app, "lv").await;
    app.act_and_wait(&id, "start", None).await;
    let pid = app.pid_of(&id).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    app.await_status(&id, "crashed", 5).await;
    let (status, body) = app.logs("?level=error").await;
    assert_eq!(status, StatusCode::OK);
    let errors = items(&body);
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["type"], "VmCrashed");
    assert!(errors[0]["message"].as_str().unwrap().contains("crashed"));
    // A retried attempt (as a worker records it) is a warning.
    let pool = sqlx::PgPool::connect(&app.env.database_url).await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('vm', $1, 6, 'OperationRetried', '1', $2, $3)",
    )
    .bind(&id)
    .bind(json!({"OperationRetried": {"jobId": "job-r", "operation": "start", "attempt": 1,
                                      "reason": "QMP is not up yet.", "retryInMs": 500}}))
    .bind(json!({"actor_id": "system", "actor_name": "job worker", "via": "system", "job_id": "job-r"}))
    .execute(&pool)
    .await
    .unwrap();
    let (_, body) = app.logs("?level=warn").await;
    let warns = items(&body);
    assert_eq!(warns.len(), 2, "{body}");
    assert_eq!(warns[0]["level"], "warn");
    assert!(
        warns[0]["message"]
            .as_str()
            .unwrap()
            .contains("will be retried"),
        "{body}"
    );
    assert_eq!(warns[0]["jobId"], "job-r");
    let (_, body) = app.logs("?level=error").await;
    assert_eq!(items(&body).len(), 1);

    let (_, body) = app.logs("?level=info&limit=100&streamType=vm").await;
    assert_eq!(body["data"]["pagination"]["total"], 6, "{body}");
    // Newest first.
    assert_eq!(items(&body)[0]["type"], "OperationRetried");
    assert_eq!(items(&body)[1]["type"], "VmCrashed");
    let (status, body) = app.logs("?level=loud").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "level");
}

#[actix_rt::test]
async fn the_export_streams_a_large_range_in_bounded_memory() {
    const EVENTS: i64 = 300_000;
    let app = spawn_server(Env::new().await).await;
    let pool = sqlx::PgPool::connect(&app.env.database_url).await.unwrap();
    // A transaction records at most 65,536 events (positions), so the bulk goes in chunks.
    const CHUNK: i64 = 50_000;
    for first in (1..=EVENTS).step_by(CHUNK as usize) {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'vm', 'vm-bulk', n, 'VmReconfigured', '1',
                    jsonb_build_object('VmReconfigured', jsonb_build_object(
                        'name', null, 'cpu', null, 'memory', null, 'requiresRestart', false,
                        'description', repeat('x', 300))),
                    '{\"actor_id\": \"system\", \"actor_name\": \"bulk\", \"via\": \"system\"}'
             FROM generate_series($1, $2) AS n",
        )
        .bind(first)
        .bind((first + CHUNK - 1).min(EVENTS))
        .execute(&pool)
        .await
        .unwrap();
    }
    let before = app.server_peak_kib();
    // The whole body may take longer than the shared client's 120 s on a busy machine; what
    // this test bounds is memory, not time.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .expect("a client");
    let resp = client
        .get(app.url("/api/v1/events?vmId=vm-bulk"))
        .header("Accept", "application/x-ndjson")
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.bytes_stream();
    let (mut lines, mut bytes, mut last) = (0i64, 0u64, Vec::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as i64;
        last = chunk.to_vec();
    }
    assert_eq!(lines, EVENTS);
    let tail = String::from_utf8_lossy(&last);
    let last_line: Value =
        serde_json::from_str(tail.trim_end().rsplit('\n').next().unwrap()).unwrap();
    assert_eq!(last_line["sequence"], EVENTS);
    let grew_kib = app.server_peak_kib().saturating_sub(before);
    assert!(
        grew_kib * 1024 < bytes / 4,
        "the server's peak memory grew {grew_kib} KiB while streaming {} KiB",
        bytes / 1024
    );
}
