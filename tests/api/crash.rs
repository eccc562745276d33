//! Nothing is lost when processes die: a killed QEMU is recorded, a killed server finds its VMs
//! and finishes the jobs it had accepted, also when it is killed 50 times under load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{alive, eventually, spawn_app, spawn_server, Env, TestApp};
use crate::processes::processes_in;

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

/// Kills in the CI run; `CRASH_KILLS=300 cargo test --test api crash` runs a longer one.
const KILLS: usize = 50;
const CLIENTS: usize = 8;
const MACHINES: usize = 3;

/// One lifecycle command, chosen at random: start, stop (forced or with a short graceful
/// timeout), restart, pause, resume.
fn random_command() -> (&'static str, Option<Value>) {
    match rand::random_range(0..6) {
        0 => ("start", None),
        1 => ("stop", Some(json!({"force": true}))),
        2 => ("stop", Some(json!({"timeout": 1}))),
        3 => ("restart", None),
        4 => ("pause", None),
        _ => ("resume", None),
    }
}

/// A client that keeps sending commands while the server dies and comes back, and records what
/// it acknowledged: a 2xx with a `jobId`. A refused connection or a cut answer is no
/// acknowledgement.
async fn client(
    address: Arc<Mutex<String>>,
    token: String,
    vms: Arc<Vec<String>>,
    done: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    while !done.load(Ordering::SeqCst) {
        let vm = &vms[rand::random_range(0..vms.len())];
        let (verb, body) = random_command();
        let base = address.lock().expect("the address").clone();
        let mut request = http
            .post(format!("{base}/api/v1/vms/{vm}/{verb}"))
            .bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Ok(resp) = request.send().await {
            if resp.status().is_success() {
                if let Ok(body) = resp.json::<Value>().await {
                    if let Some(job) = body["data"]["jobId"].as_str() {
                        acked.lock().expect("acked").push(job.to_string());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(20..150))).await;
    }
}

/// Waits for every job still queued or running to end.
async fn drain_jobs(app: &TestApp) {
    loop {
        let mut open = Vec::new();
        for status in ["queued", "running"] {
            let (code, page) = app.list_jobs(&format!("?status={status}&limit=100")).await;
            assert_eq!(code, StatusCode::OK, "{page}");
            for job in page["data"]["items"].as_array().expect("items") {
                open.push(job["id"].as_str().expect("an id").to_string());
            }
        }
        if open.is_empty() {
            return;
        }
        for id in open {
            app.wait_job(&id).await;
        }
    }
}

/// The VM a QEMU process belongs to, from the data dir on its command line.
fn vm_of(data_dir: &std::path::Path, cmdline: &str) -> Option<String> {
    let marker = format!("{}/vms/", data_dir.display());
    let rest = &cmdline[cmdline.find(&marker)? + marker.len()..];
    Some(rest.split('/').next()?.to_string())
}

#[actix_rt::test]
async fn fifty_server_kills_under_eight_clients_lose_nothing() {
    let kills = std::env::var("CRASH_KILLS")
        .ok()
        .map(|n| n.parse::<usize>().expect("CRASH_KILLS is a number"))
        .unwrap_or(KILLS);
    let mut app = spawn_server(Env::new().await).await;
    let mut vms = Vec::new();
    for i in 0..MACHINES {
        vms.push(app.create_guest(&format!("chaos-{i}")).await);
    }
    let vms = Arc::new(vms);
    let address = Arc::new(Mutex::new(app.address.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients = futures::future::join_all((0..CLIENTS).map(|_| {
        client(
            address.clone(),
            app.token.clone(),
            vms.clone(),
            done.clone(),
            acked.clone(),
        )
    }));
    let killer = async {
        for _ in 0..kills {
            tokio::time::sleep(Duration::from_millis(rand::random_range(100..1500))).await;
            app.restart_server().await;
            *address.lock().expect("the address") = app.address.clone();
        }
        done.store(true, Ordering::SeqCst);
    };
    futures::join!(clients, killer);

    // Every acknowledged job exists and ends; so does every other job.
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() >= kills,
        "only {} commands were acknowledged",
        acked.len()
    );
    for id in &acked {
        let (status, job) = app.get_job(id).await;
        assert_eq!(status, StatusCode::OK, "acknowledged job {id}: {job}");
    }
    drain_jobs(&app).await;
    let mut started = 0;
    for id in &acked {
        let job = app.wait_job(id).await;
        assert!(
            ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or("")),
            "{job}"
        );
        if job["kind"] == "start" && job["status"] == "succeeded" {
            started += 1;
        }
    }
    assert!(
        started > 0,
        "no acknowledged start succeeded: no QEMU was exercised"
    );

    // No VM is left half-way, and the QEMUs are exactly those of the VMs that run.
    let mut said_to_run = BTreeMap::new();
    for id in vms.iter() {
        let (_, body) = app.get_vm(id).await;
        let vm = &body["data"];
        let status = vm["status"].as_str().expect("a status");
        assert!(
            ["stopped", "running", "paused", "crashed", "error"].contains(&status),
            "{id} is left {status}: {vm}"
        );
        if status == "running" || status == "paused" {
            let pid = vm["pid"].as_i64().expect("a running VM has a pid");
            said_to_run.insert(id.clone(), pid);
        }
    }
    let mut running: Vec<(String, i64)> = processes_in(&app.env.data_dir)
        .into_iter()
        .map(|(pid, cmdline)| {
            let vm = vm_of(&app.env.data_dir, &cmdline)
                .unwrap_or_else(|| panic!("a process of no VM: {cmdline}"));
            (vm, i64::from(pid))
        })
        .collect();
    running.sort();
    let said_to_run: Vec<(String, i64)> = said_to_run.into_iter().collect();
    assert_eq!(
        running, said_to_run,
        "QEMU processes (by VM dir) against the API"
    );

    // The stream holds the log exactly once, in order.
    crate::relay::stream_matches_log(&app, 60).await;
}
