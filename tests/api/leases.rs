//! Jobs belong to a node, and a wait for a guest holds no worker: graceful stops are parked while
//! the guest has time to power off; a node's running jobs stay its own while it renews its lease,
//! and are taken over when it is gone.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use voidvm::startup::Application;

use crate::helpers::{spawn_app_with, spawn_server, Env, TestApp};

/// A VM on a blank disk: its firmware ignores ACPI, so a graceful stop always waits for its
/// whole timeout.
async fn deaf_vm(app: &TestApp, name: &str) -> String {
    app.create_blank(name).await
}

async fn graceful_stop(app: &TestApp, id: &str, timeout: u64) -> String {
    let (status, body) = app
        .vm_action(
            id,
            "stop",
            Some(json!({"force": false, "timeout": timeout})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["data"]["jobId"].as_str().unwrap().to_string()
}

/// The node a job is on and whether it is parked (waiting without a worker).
async fn placement(db: &PgPool, job: &str) -> (Option<String>, String, bool) {
    sqlx::query_as("SELECT node_id, status, wake_at IS NOT NULL FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn await_parked(db: &PgPool, jobs: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut parked = 0;
        for job in jobs {
            if placement(db, job).await.2 {
                parked += 1;
            }
        }
        if parked == jobs.len() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {parked} of {} stops are waiting for their guests",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A second node on `app`'s database and data dir, with its own id.
async fn node(app: &TestApp, id: &str, lease_secs: u64) -> String {
    let mut settings = app.env.settings();
    settings.node_id = Some(id.to_string());
    settings.job_lease_secs = lease_secs;
    let node = Application::build(settings)
        .await
        .expect("the node failed to build");
    let address = format!("http://{}", node.addr());
    actix_web::rt::spawn(node.run_until_stopped());
    address
}

#[actix_rt::test]
async fn twice_as_many_graceful_stops_as_workers_all_wait_at_once_and_end() {
    let workers = 2;
    let app = spawn_app_with(|s| s.workers = workers).await;
    let db = PgPool::connect(&app.env.database_url).await.unwrap();
    let mut vms = Vec::new();
    for i in 0..2 * workers {
        let id = deaf_vm(&app, &format!("deaf-{i}")).await;
        app.act_and_wait(&id, "start", None).await;
        vms.push(id);
    }
    let other = deaf_vm(&app, "other").await;

    let mut stops = Vec::new();
    for id in &vms {
        stops.push(graceful_stop(&app, id, 30).await);
    }
    // Every stop waits for its guest at the same time, none holding a worker...
    await_parked(&db, &stops).await;
    // ...so the workers still take other jobs meanwhile.
    app.act_and_wait(&other, "start", None).await;
    for job in &stops {
        assert_eq!(
            app.get_job(job).await.1["data"]["status"],
            "running",
            "a stop ended before its guest's timeout"
        );
    }
    for (job, id) in stops.iter().zip(&vms) {
        let done = app.wait_job(job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let (_, vm) = app.get_vm(id).await;
        assert_eq!(vm["data"]["status"], "stopped");
        assert_eq!(vm["data"]["statusReason"], "QEMU was told to quit.");
        assert_eq!(done["attempt"], 1, "{done}");
    }
}

#[actix_rt::test]
async fn a_running_job_is_not_taken_by_another_node_while_its_lease_is_renewed() {
    let app = spawn_app_with(|s| {
        s.node_id = Some("node-a".into());
        s.job_lease_secs = 3;
    })
    .await;
    let db = PgPool::connect(&app.env.database_url).await.unwrap();
    let id = deaf_vm(&app, "owned").await;
    app.act_and_wait(&id, "start", None).await;
    let job = graceful_stop(&app, &id, 12).await;
    await_parked(&db, std::slice::from_ref(&job)).await;

    // Node B starts (and re-queues what it finds abandoned) and looks for expired leases for
    // several lease lengths, until the job ends: node A's job stays A's.
    node(&app, "node-b", 3).await;
    loop {
        let (node, status, _) = placement(&db, &job).await;
        if status != "running" {
            break;
        }
        assert_eq!(node.as_deref(), Some("node-a"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = app.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 1, "the job ran once: {done}");
    assert_eq!(placement(&db, &job).await.0.as_deref(), Some("node-a"));
    let (_, events) = app.vm_events(&id, "").await;
    let stopped = events["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "VmStopped")
        .count();
    assert_eq!(stopped, 1, "{events}");
}

#[actix_rt::test]
async fn the_job_of_a_node_that_died_is_taken_over_when_its_lease_expires() {
    let mut env = Env::new().await;
    env.extra_vars = vec![
        ("VOIDVM_NODE_ID".into(), "doomed".into()),
        ("VOIDVM_JOB_LEASE_SECS".into(), "2".into()),
    ];
    let mut app = spawn_server(env).await;
    let db = PgPool::connect(&app.env.database_url).await.unwrap();
    let id = deaf_vm(&app, "orphan").await;
    app.act_and_wait(&id, "start", None).await;
    let job = graceful_stop(&app, &id, 6).await;
    await_parked(&db, std::slice::from_ref(&job)).await;
    assert_eq!(placement(&db, &job).await.0.as_deref(), Some("doomed"));

    app.kill_server();
    app.address = node(&app, "heir", 2).await;
    let done = app.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(placement(&db, &job).await.0.as_deref(), Some("heir"));
    assert_eq!(app.status_of(&id).await, "stopped");
}
