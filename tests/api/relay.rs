//! The relay from the event log to NATS, against the real NATS (JetStream) and PostgreSQL: in
//! order, nothing skipped under concurrent writers, nothing lost across a NATS outage or a crash
//! between commit and publish.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, spawn_server, Env, TestApp};
use crate::ws_client::{positions, stream_events, NatsProxy};

fn stream_positions(messages: &[(String, Value)]) -> Vec<i64> {
    messages
        .iter()
        .map(|(_, body)| body["position"].as_i64().expect("a position"))
        .collect()
}

/// Waits until the stream holds exactly the log, in order, and returns its messages.
pub async fn stream_matches_log(app: &TestApp, secs: u64) -> Vec<(String, Value)> {
    let expected = app.log_positions(&app.token, 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let messages = stream_events(app).await;
        let got = stream_positions(&messages);
        if got == expected {
            return messages;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream does not hold the log after {secs} s:\n stream {got:?}\n log    {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn describe(app: &TestApp, id: &str, n: usize) {
    let (status, body) = app
        .patch_vm(id, json!({"description": format!("change {n}")}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}

#[actix_rt::test]
async fn every_event_reaches_nats_in_order_on_its_documented_subject() {
    let app = spawn_app().await;
    let id = app.create_guest("on-the-bus").await;
    app.act_and_wait(&id, "start", None).await;
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    let messages = stream_matches_log(&app, 30).await;
    let prefix = &app.env.nats_prefix;
    for (subject, body) in &messages {
        assert_eq!(
            *subject,
            format!(
                "{prefix}.events.{id}.{}",
                body["type"].as_str().expect("a type")
            ),
        );
        assert_eq!(body["vmId"], id.as_str());
        assert!(body["owner"].is_string(), "{body}");
        crate::ws_client::assert_schema("feed-event", body);
    }
    // Job messages sit on their own subjects.
    let client = async_nats::connect(crate::helpers::NATS_URL)
        .await
        .expect("NATS");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(&app.env.nats_stream)
        .await
        .expect("the stream");
    let (_, jobs) = app.list_jobs(&format!("?vmId={id}")).await;
    let last_job = jobs["data"]["items"][0]["id"]
        .as_str()
        .expect("a job")
        .to_string();
    let message = stream
        .get_last_raw_message_by_subject(&format!("{prefix}.jobs.{id}.{last_job}"))
        .await
        .expect("the job's message");
    let body: Value = serde_json::from_slice(&message.payload).expect("json");
    crate::ws_client::assert_schema("job-update", &body);
    assert_eq!(body["jobId"], last_job.as_str());
    assert_eq!(body["status"], "succeeded", "{body}");
}

#[actix_rt::test]
async fn sixteen_writers_never_make_a_resuming_reader_skip_an_event() {
    writers_never_make_a_resuming_reader_skip_an_event(16, 12).await;
}

#[actix_rt::test]
async fn sixty_four_writers_never_make_a_resuming_reader_skip_an_event() {
    writers_never_make_a_resuming_reader_skip_an_event(64, 6).await;
}

/// `writers` clients each change their own VM `edits` times at once, while a WebSocket reader
/// keeps dropping and resuming from the last position it saw: it sees every event exactly once,
/// in log order, and the stream ends up holding exactly the log.
async fn writers_never_make_a_resuming_reader_skip_an_event(count: usize, edits: usize) {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..count {
        let (status, body) = app
            .create_vm(json!({"name": format!("writer-{i}"), "cpu": 1, "memory": 128, "disk": 1}))
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        app.wait_job(body["data"]["jobId"].as_str().expect("a job"))
            .await;
        ids.push(body["data"]["id"].as_str().expect("an id").to_string());
    }
    let start = *app
        .log_positions(&app.token, 0)
        .await
        .last()
        .expect("events");

    // A reader that keeps dropping and resuming while sixteen writers commit at once.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let app = &app;
        let done = done.clone();
        async move {
            let mut cursor = start;
            let mut seen = Vec::new();
            let mut sessions = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let mut ws = app.ws(&app.token).await;
                sessions += 1;
                let (replay, _) = ws
                    .subscribe(json!({"topic": "vm-status-all", "since": cursor}))
                    .await;
                let mut got = positions(&replay);
                // Some live frames, then away again.
                while let Some(Some(frame)) = ws.next_within_ms(50).await {
                    if let Some(p) = frame["data"]["position"].as_i64() {
                        got.push(p);
                    }
                    if got.len() > 25 {
                        break;
                    }
                }
                if let Some(last) = got.last() {
                    cursor = *last;
                }
                seen.extend(got);
                ws.close().await;
                if finished {
                    return (seen, sessions);
                }
            }
        }
    };
    let writers = async {
        let mut all = Vec::new();
        for (w, id) in ids.iter().enumerate() {
            let app = &app;
            all.push(async move {
                for n in 0..edits {
                    describe(app, id, w * 100 + n).await;
                }
            });
        }
        futures::future::join_all(all).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let ((seen, sessions), ()) = futures::join!(reader, writers);
    let expected: Vec<i64> = app
        .log_positions(&app.token, 0)
        .await
        .into_iter()
        .filter(|p| *p > start)
        .collect();
    assert_eq!(expected.len(), count * edits);
    assert!(sessions > 1, "the reader resumed {sessions} times");
    assert_eq!(seen, expected, "the reader saw every event once, in order");
    stream_matches_log(&app, 60).await;
}

#[actix_rt::test]
async fn nothing_is_lost_while_nats_is_unreachable() {
    let proxy = NatsProxy::start().await;
    let url = proxy.url.clone();
    let app = spawn_app_with(move |s| s.nats_url = url).await;
    let id = app.create_guest("through-the-outage").await;
    let mut ws = app.ws(&app.token).await;
    ws.subscribe(json!({"topic": "vm-status", "vmId": id}))
        .await;
    describe(&app, &id, 0).await;
    let before = ws.next_of("vm-status").await;
    let seam = before["data"]["position"].as_i64().expect("a position");
    stream_matches_log(&app, 30).await;

    proxy.cut();
    for n in 1..=5 {
        describe(&app, &id, n).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = stream_positions(&stream_events(&app).await);
    assert_eq!(
        during.last(),
        Some(&seam),
        "nothing can be published while NATS is unreachable"
    );

    proxy.restore();
    let mut after = Vec::new();
    while after.len() < 5 {
        let frame = ws.next_of("vm-status").await;
        if let Some(p) = frame["data"]["position"].as_i64() {
            after.push(p);
        }
    }
    let expected: Vec<i64> = app
        .log_positions(&app.token, 0)
        .await
        .into_iter()
        .filter(|p| *p > seam)
        .collect();
    assert_eq!(
        after, expected,
        "the live feed resumed with every event, in order"
    );
    stream_matches_log(&app, 30).await;
}

#[actix_rt::test]
async fn an_event_committed_before_a_crash_is_published_after_the_restart() {
    let mut env = Env::new().await;
    // This server commits but never publishes: it dies "between commit and publish".
    env.extra_vars
        .push(("VOIDVM_NATS__RELAY".into(), "false".into()));
    let mut app = spawn_server(env).await;
    let (status, created) = app
        .create_vm(
            json!({"name": "unpublished", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
    app.wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert!(app.log_positions(&app.token, 0).await.len() >= 2);
    assert!(
        stream_events(&app).await.is_empty(),
        "nothing was published yet"
    );

    app.kill_server();
    app.env.extra_vars.clear();
    app.restart_server().await;
    let messages = stream_matches_log(&app, 30).await;
    let id = created["data"]["id"].as_str().expect("an id");
    assert_eq!(messages[0].1["vmId"], id);
    assert_eq!(messages[0].1["type"], "VmCreated");

    // And once more with the relay running: killed, restarted, still exactly once each.
    let (status, _) = app
        .patch_vm(id, json!({"description": "after the restart"}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    app.kill_server();
    app.restart_server().await;
    let (status, _) = app.patch_vm(id, json!({"description": "and again"})).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    stream_matches_log(&app, 30).await;
}
