//! Notifications leave the commands' transactions (`src/notifier.rs`). PostgreSQL serialises the
//! commits of every transaction that sent a `NOTIFY`, so a VM's events notify nobody from the
//! transaction that records them: the node that committed them notifies after the commit. The
//! other streams' triggers (users, roles, configuration, webhooks, images) still notify. A
//! notification is a hint: `/jobs/{id}/wait` finds a job whose end was never told on its own,
//! even while other jobs' ends keep arriving.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgListener, PgNotification};
use sqlx::PgPool;

use crate::helpers::{spawn_app, spawn_app_with};

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

#[actix_rt::test]
async fn a_wait_finds_a_job_whose_end_was_never_told_while_other_jobs_end() {
    // No workers: the VM's provisioning job stays queued until the test ends it by hand.
    let app = spawn_app_with(|s| s.workers = 0).await;
    let pool = PgPool::connect(&app.env.database_url).await.unwrap();
    let (status, body) = app
        .create_vm(json!({"name": "untold", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job = body["data"]["jobId"].as_str().unwrap().to_string();
    let waiting = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/api/v1/jobs/{job}/wait?timeout=60")),
            app.token.clone(),
        );
        tokio::spawn(async move {
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<serde_json::Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The job ends with no notification (as when its node died before sending it), while
    // other jobs' ends keep arriving, more often than the wait's recheck.
    sqlx::query("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1")
        .bind(&job)
        .execute(&pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // The wait reads its job again every second without news: 8 s is ample, and far from the
    // wait's own 60 s timeout (whose last read would find the job too).
    while !waiting.is_finished() && started.elapsed() < Duration::from_secs(8) {
        sqlx::query("SELECT pg_notify('voidvm_job_done', 'job-someone-else')")
            .execute(&pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        waiting.is_finished(),
        "the wait did not find the ended job while other jobs' ends kept arriving"
    );
    let body = waiting.await.unwrap();
    assert_eq!(body["data"]["finished"], true, "{body}");
    assert_eq!(body["data"]["status"], "succeeded", "{body}");
    pool.close().await;
}
