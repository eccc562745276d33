//! Notifications leave the commands' transactions (`src/notifier.rs`). PostgreSQL serialises the
//! commits of every transaction that sent a `NOTIFY`, so a VM's events notify nobody from the
//! transaction that records them: the node that committed them notifies after the commit. The
//! other streams' triggers (users, roles, configuration, webhooks, images) still notify.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgListener, PgNotification};
use sqlx::PgPool;

use crate::helpers::spawn_app;

async fn next(listener: &mut PgListener) -> PgNotification {
    tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the listener's connection")
}

/// Reads notifications until one on `channel` with `payload`.
async fn until(listener: &mut PgListener, channel: &str, payload: &str) {
    loop {
        let n = next(listener).await;
        if n.channel() == channel && n.payload() == payload {
            return;
        }
    }
}

#[actix_rt::test]
async fn vm_events_notify_after_their_commit_and_not_from_it() {
    let app = spawn_app().await;
    let pool = PgPool::connect(&app.env.database_url).await.unwrap();
    let mut listener = PgListener::connect(&app.env.database_url).await.unwrap();
    listener
        .listen_all(["voidvm_events", "voidvm_jobs", "voidvm_job_done"])
        .await
        .unwrap();

    // A VM's event written as a command's transaction writes it: its commit notifies nobody.
    // Notifications arrive in commit order, so the marker sent after it must come first.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('vm', 'vm-quiet', 1, 'StartRequested', '1', $1, $2)",
    )
    .bind(json!({"StartRequested": {"jobId": "job-quiet"}}))
    .bind(json!({"actor_id": "system", "actor_name": "a test", "job_id": "job-quiet"}))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('voidvm_events', 'marker')")
        .execute(&pool)
        .await
        .unwrap();
    let first = next(&mut listener).await;
    assert_eq!(
        (first.channel(), first.payload()),
        ("voidvm_events", "marker"),
        "a VM event's own transaction notified"
    );

    // Another stream's event still notifies from its trigger, at commit.
    app.create_user("notified").await;
    let n = next(&mut listener).await;
    assert_eq!((n.channel(), n.payload()), ("voidvm_events", ""));

    // A VM command: the node tells of its new job once it committed, and of the job's end.
    let (status, body) = app
        .create_vm(json!({"name": "told", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job = body["data"]["jobId"].as_str().unwrap();
    until(&mut listener, "voidvm_jobs", job).await;
    until(&mut listener, "voidvm_job_done", job).await;
    pool.close().await;
}
