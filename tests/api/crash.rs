//! Nothing is lost when processes die: a killed QEMU is recorded, a killed server finds its VMs
//! and finishes the jobs it had accepted.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{alive, eventually, spawn_app, spawn_server, Env};

#[actix_rt::test]
async fn a_killed_qemu_is_recorded_as_crashed() {
    let app = spawn_app().await;
    let id = app.create_guest("victim").await;
    app.act_and_wait(&id, "start", None).await;
    let pid = app.pid_of(&id).expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    app.await_status(&id, "crashed", 5).await;
    let (_, body) = app.get_vm(&id).await;
    assert!(
        body["data"]["statusReason"]
            .as_str()
            .unwrap()
            .contains("QEMU"),
        "{body}"
    );
    // A crashed VM starts again.
    app.act_and_wait(&id, "start", None).await;
    assert_eq!(app.status_of(&id).await, "running");
}

#[actix_rt::test]
async fn a_restarted_server_reattaches_its_running_vms() {
    let mut app = spawn_server(Env::new().await).await;
    let id = app.create_guest("survivor").await;
    app.act_and_wait(&id, "start", None).await;
    let pid = app.pid_of(&id).expect("a pid");

    app.kill_server();
    assert!(alive(pid), "QEMU outlives the server");
    app.restart_server().await;

    assert_eq!(app.status_of(&id).await, "running");
    app.act_and_wait(&id, "pause", None).await;
    app.act_and_wait(&id, "resume", None).await;
    // After the restart the new watcher still sees the machine die.
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    assert_eq!(app.status_of(&id).await, "stopped");
    eventually(5, "QEMU exiting", || !alive(pid)).await;
}

#[actix_rt::test]
async fn a_vm_that_died_while_the_server_was_down_is_recorded() {
    let mut app = spawn_server(Env::new().await).await;
    let id = app.create_guest("lonely").await;
    app.act_and_wait(&id, "start", None).await;
    let pid = app.pid_of(&id).expect("a pid");
    app.kill_server();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(5, "QEMU dying", || !alive(pid)).await;
    app.restart_server().await;
    let (_, body) = app.get_vm(&id).await;
    assert_eq!(body["data"]["status"], "crashed", "{body}");
}

#[actix_rt::test]
async fn a_job_accepted_before_the_server_died_is_carried_out_after_restart() {
    let mut app = spawn_server(Env::new().await).await;
    let id = app.create_guest("orphan").await;
    let (status, body) = app.vm_action(&id, "start", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job_id = body["data"]["jobId"].as_str().unwrap().to_string();
    // Kill at once: the job is queued or half-done.
    app.kill_server();
    app.restart_server().await;
    let job = app.wait_job(&job_id).await;
    assert!(
        job["status"] == "succeeded"
            || (job["status"] == "failed" && job["error"].as_str().is_some_and(|e| !e.is_empty())),
        "{job}"
    );
    if job["status"] == "succeeded" {
        assert_eq!(app.status_of(&id).await, "running");
        assert!(app.pid_of(&id).is_some_and(alive));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}
