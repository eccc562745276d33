//! The NATS stream belongs to one event log: a server whose stream carries another database's
//! log, or a stream ahead of its own log (a database restored from a backup), never takes the
//! stream's position as already published. It refuses to relay, says so on `/ready`, and once an
//! operator runs `voidvm stream reset` every event of its own log reaches NATS and `/ws`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_server, Env, TestApp};
use crate::relay::stream_matches_log;
use crate::ws_client::stream_events;

async fn log_id(env: &Env) -> String {
    let pool = sqlx::PgPool::connect(&env.database_url)
        .await
        .expect("the test database");
    let id: uuid::Uuid = sqlx::query_scalar("SELECT log_id FROM event_log_identity")
        .fetch_one(&pool)
        .await
        .expect("the log id");
    pool.close().await;
    id.to_string()
}

async fn ready(app: &TestApp) -> (StatusCode, Value) {
    let resp = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .expect("/ready");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `/ready` until it answers `want`; returns the last body.
async fn await_ready(app: &TestApp, want: StatusCode) -> Value {
    await_ready_saying(app, want, "").await
}

/// Polls `/ready` until it answers `want` with `text` in the body; returns the body.
async fn await_ready_saying(app: &TestApp, want: StatusCode, text: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(app).await;
        if status == want && body.to_string().contains(text) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready did not answer {want} with {text:?} within 20 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `voidvm stream <action>` against `env`'s database and stream: exit status and stdout.
fn stream_command(env: &Env, action: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voidvm"))
        .args(["stream", action])
        .envs(env.env_vars())
        .output()
        .expect("voidvm stream");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn describe(app: &TestApp, id: &str, text: &str) {
    let (status, body) = app.patch_vm(id, json!({ "description": text })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Until the live feed (NATS -> hub -> `/ws`) delivers: changes the VM until a live frame of it
/// arrives, then starts it and checks that every event of the start arrives live, in order.
async fn live_feed_carries(app: &TestApp, id: &str) {
    let mut ws = app.ws(&app.token).await;
    let (replay, _) = ws
        .subscribe(json!({"topic": "vm-status", "vmId": id}))
        .await;
    assert!(replay.is_empty(), "no replay without `since`: {replay:?}");
    let mut n = 0;
    loop {
        n += 1;
        assert!(n <= 40, "no live frame arrived after {} changes", n - 1);
        describe(app, id, &format!("probe {n}")).await;
        if let Some(Some(frame)) = ws.next_within_ms(500).await {
            assert!(frame["data"]["position"].is_i64(), "{frame}");
            break;
        }
    }
    // Drain the probes' frames, then start: its events arrive live, each once, in order.
    while ws.next_within_ms(300).await.is_some() {}
    let before = *app
        .log_positions(&app.token, 0)
        .await
        .last()
        .expect("events");
    app.act_and_wait(id, "start", None).await;
    let (_, events) = app.vm_events(id, "?limit=100").await;
    let expected: Vec<i64> = events["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["position"].as_i64())
        .filter(|p| *p > before)
        .collect();
    assert!(expected.len() >= 2, "{events}");
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let frame = ws
            .next_within(20)
            .await
            .flatten()
            .unwrap_or_else(|| panic!("live frames stopped at {got:?}, expected {expected:?}"));
        if let Some(p) = frame["data"]["position"].as_i64() {
            got.push(p);
        }
    }
    got.sort_unstable();
    assert_eq!(got, expected, "every event of the start arrived live once");
    app.act_and_wait(id, "stop", Some(json!({"force": true})))
        .await;
}

#[actix_rt::test]
async fn a_second_database_on_the_same_stream_name_relays_all_of_its_log_once_reset() {
    let env_a = Env::new().await;
    let mut a = spawn_server(env_a).await;
    let vm_a = a.create_guest("first-log").await;
    stream_matches_log(&a, 30).await;
    let published_by_a = stream_events(&a).await.len();
    a.kill_server();

    let mut env_b = Env::new().await;
    env_b.nats_prefix = a.env.nats_prefix.clone();
    env_b.nats_stream = a.env.nats_stream.clone();
    let b = spawn_server(env_b).await;
    let vm_b = b.create_guest("second-log").await;

    // B says so plainly, naming the stream and both logs, and relays nothing.
    let body = await_ready(&b, StatusCode::SERVICE_UNAVAILABLE).await;
    let details = body["error"]["details"].as_str().unwrap_or_default();
    let (ours, theirs) = (log_id(&b.env).await, log_id(&a.env).await);
    for part in [&b.env.nats_stream, &ours, &theirs] {
        assert!(details.contains(part.as_str()), "{part} missing: {body}");
    }
    let (ok, out) = stream_command(&b.env, "status");
    assert!(!ok && out.contains(&theirs), "{out}");
    let held = stream_events(&b).await;
    assert_eq!(held.len(), published_by_a, "B published nothing");
    assert!(held.iter().all(|(_, e)| e["vmId"] == vm_a.as_str()));

    // The operator resets the stream: B's whole log reaches NATS, from its first position, once.
    let (ok, out) = stream_command(&b.env, "reset");
    assert!(ok, "{out}");
    await_ready(&b, StatusCode::OK).await;
    let messages = stream_matches_log(&b, 30).await;
    let pool = sqlx::PgPool::connect(&b.env.database_url)
        .await
        .expect("B's database");
    let first: i64 =
        sqlx::query_scalar("SELECT min(position) FROM events WHERE aggregate_type = 'vm'")
            .fetch_one(&pool)
            .await
            .expect("B's first position");
    pool.close().await;
    assert_eq!(messages[0].1["position"], first);
    assert!(messages.iter().all(|(_, e)| e["vmId"] == vm_b.as_str()));
    let (ok, out) = stream_command(&b.env, "status");
    assert!(ok, "{out}");
    live_feed_carries(&b, &vm_b).await;
    stream_matches_log(&b, 30).await;
}

#[actix_rt::test]
async fn a_database_restored_from_a_backup_never_skips_the_positions_it_reuses() {
    let mut app = spawn_server(Env::new().await).await;
    let id = app.create_guest("restored").await;
    stream_matches_log(&app, 30).await;
    app.kill_server();
    let db = app.env.db_name.clone();
    let backup = format!("{db}_backup");
    admin(&format!(r#"CREATE DATABASE "{backup}" TEMPLATE "{db}""#)).await;

    // Life goes on after the backup: three more events reach the stream.
    app.restart_server().await;
    for n in 1..=3 {
        describe(&app, &id, &format!("before the restore {n}")).await;
    }
    let lost = stream_matches_log(&app, 30).await;
    app.kill_server();

    // The restore: the stream's last position is not in the log.
    admin(&format!(r#"DROP DATABASE "{db}" WITH (FORCE)"#)).await;
    admin(&format!(r#"ALTER DATABASE "{backup}" RENAME TO "{db}""#)).await;
    app.restart_server().await;
    let body = await_ready(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    let details = body["error"]["details"].as_str().unwrap_or_default();
    assert!(details.contains("does not have"), "{body}");
    assert!(details.contains(&app.env.nats_stream), "{body}");

    // New events (with positions of their own, past the stream's: positions come from
    // transaction ids) are not taken as published...
    for n in 1..=3 {
        describe(&app, &id, &format!("after the restore {n}")).await;
    }
    await_ready_saying(&app, StatusCode::SERVICE_UNAVAILABLE, "does not have").await;
    let held = stream_events(&app).await;
    assert_eq!(held, lost, "nothing was relayed into the old stream");

    // ...and after the reset the stream holds the restored log, the new events included.
    let (ok, out) = stream_command(&app.env, "reset");
    assert!(ok, "{out}");
    await_ready(&app, StatusCode::OK).await;
    let messages = stream_matches_log(&app, 30).await;
    assert_eq!(
        messages.last().expect("events").1["data"]["description"],
        "after the restore 3"
    );
    live_feed_carries(&app, &id).await;
}

#[actix_rt::test]
async fn a_restart_whose_stream_ends_with_an_image_event_goes_on_relaying() {
    // An images dir of the test's own, for the ISO it uploads.
    let images = crate::images::Images::new();
    let mut env = Env::new().await;
    env.extra_vars = vec![("VOIDVM_IMAGES_DIR".into(), images.dir.display().to_string())];
    let mut app = spawn_server(env).await;
    let id = app.create_blank("after-image").await;
    // The log's (and the stream's) last event is an image's: it names no VM.
    let iso = crate::images::fake_iso();
    let resp = app
        .client
        .put(app.url("/api/v1/images/relayed-iso/upload?kind=iso"))
        .bearer_auth(&app.token)
        .body(iso)
        .send()
        .await
        .expect("the upload");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let before = last_relayed(&app, "ImageUploaded").await;
    app.kill_server();
    app.restart_server().await;
    await_ready(&app, StatusCode::OK).await;
    describe(&app, &id, "after the restart").await;
    let after = last_relayed(&app, "VmReconfigured").await;
    assert_eq!(after, before + 1);
}

/// Waits until the stream's last event message is a `want`; returns how many it holds.
async fn last_relayed(app: &TestApp, want: &str) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let messages = stream_events(app).await;
        if messages
            .last()
            .is_some_and(|(subject, _)| subject.ends_with(want))
        {
            return messages.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's last message is not {want}: {messages:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin(sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("PostgreSQL");
    // A killed server's sessions take a moment to end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sqlx::Executor::execute(&mut conn, sql).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}
