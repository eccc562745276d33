//! The whole lifecycle through HTTP against real QEMU, and commands racing on one VM.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{alive, eventually, spawn_app, spawn_app_with};

fn event_types(body: &Value) -> Vec<String> {
    body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[actix_rt::test]
async fn a_vm_lives_its_whole_life_through_the_api() {
    let app = spawn_app().await;

    // The seed's quick start: create answers 201 at once, with the job that provisions it.
    let (status, body) = app
        .create_vm(json!({"name": "test-vm", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let vm = &body["data"];
    assert_eq!(vm["status"], "creating");
    assert_eq!(vm["image"], json!({"name": "busybox", "present": true}));
    let id = vm["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("vm-"));
    let job = app.wait_job(vm["jobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "provision");
    assert_eq!(app.status_of(&id).await, "stopped");

    // Start: QEMU really runs and the guest boots.
    app.act_and_wait(&id, "start", None).await;
    assert_eq!(app.status_of(&id).await, "running");
    let pid = app.pid_of(&id).expect("a pid file");
    assert!(alive(pid));
    let (_, body) = app.get_vm(&id).await;
    assert_eq!(body["data"]["pid"], pid);
    assert_eq!(body["data"]["accel"], "tcg");
    eventually(60, "the guest booting", || {
        app.serial_log(&id).contains("VOIDVM-GUEST-READY")
    })
    .await;

    app.act_and_wait(&id, "pause", None).await;
    assert_eq!(app.status_of(&id).await, "paused");
    app.act_and_wait(&id, "resume", None).await;
    assert_eq!(app.status_of(&id).await, "running");
    app.act_and_wait(&id, "reset", None).await;
    assert_eq!(app.status_of(&id).await, "running");

    // PATCH while running: memory needs a restart, which starts a new QEMU.
    let (status, body) = app.patch_vm(&id, json!({"memory": 160})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["requiresRestart"], true);
    app.act_and_wait(&id, "restart", None).await;
    let (_, body) = app.get_vm(&id).await;
    assert_eq!(body["data"]["status"], "running");
    assert_eq!(body["data"]["requiresRestart"], false);
    assert_eq!(body["data"]["memory"], 160);
    let new_pid = app.pid_of(&id).expect("a pid file");
    assert_ne!(new_pid, pid);
    assert!(!alive(pid), "the old QEMU is gone");

    // A graceful stop: the guest powers off on ACPI.
    eventually(60, "the guest booting again", || {
        app.serial_log(&id).contains("VOIDVM-GUEST-READY")
    })
    .await;
    app.act_and_wait(&id, "stop", Some(json!({"force": false, "timeout": 30})))
        .await;
    let (_, body) = app.get_vm(&id).await;
    assert_eq!(body["data"]["status"], "stopped");
    assert_eq!(body["data"]["statusReason"], "The guest powered off.");
    eventually(5, "QEMU exiting", || !alive(new_pid)).await;

    // Delete removes the machine; its history stays.
    let (status, body) = app.delete_vm(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(app.get_vm(&id).await.0, StatusCode::NOT_FOUND);
    assert!(!app.env.data_dir.join("vms").join(&id).exists());

    let (status, body) = app.vm_events(&id, "?limit=100").await;
    assert_eq!(status, StatusCode::OK);
    // The old process of the restart may be seen exiting after the new one started: that is
    // recorded as ignored (and is tested on its own in `processes`).
    let types: Vec<String> = event_types(&body)
        .into_iter()
        .filter(|t| t != "StaleObservationIgnored")
        .collect();
    let expected = [
        "VmCreated",
        "VmProvisioned",
        "StartRequested",
        "VmStarted",
        "PauseRequested",
        "VmPaused",
        "ResumeRequested",
        "VmResumed",
        "ResetRequested",
        "VmReset",
        "VmReconfigured",
        "RestartRequested",
        "VmRestarted",
        "StopRequested",
        "VmStopped",
        "DeleteRequested",
        "VmDeleted",
    ];
    assert_eq!(types, expected, "{body}");
    // Every event names who acted and how.
    for e in body["data"]["items"].as_array().unwrap() {
        assert!(e["actor"]["id"].is_string(), "{e}");
        assert!(e["position"].is_i64(), "{e}");
    }
    assert_eq!(body["data"]["items"][0]["actor"]["name"], "admin");
    assert_eq!(body["data"]["items"][0]["actor"]["via"], "rest");
    assert!(body["data"]["items"][0]["requestId"].is_string());
    // Outcomes are the system acting on the job's behalf.
    assert_eq!(body["data"]["items"][1]["actor"]["via"], "system");
    // A deleted VM's history stays queryable.
    let (status, body) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/vms/{id}/history?at=4"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["state"]["status"], "running");
}

#[actix_rt::test]
async fn a_vm_without_its_image_gets_a_blank_disk_and_still_runs() {
    let app = spawn_app().await;
    // The seed's SDK example sends no `os`.
    let (status, body) = app
        .create_vm(json!({"name": "my-vm", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["os"], "ubuntu20.04");
    assert_eq!(body["data"]["image"]["present"], false);
    let id = body["data"]["id"].as_str().unwrap().to_string();
    app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    app.act_and_wait(&id, "start", None).await;
    assert_eq!(app.status_of(&id).await, "running");
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    assert_eq!(app.status_of(&id).await, "stopped");
}

#[actix_rt::test]
async fn a_vm_larger_than_the_host_fails_its_start_saying_so_and_starts_once_it_fits() {
    let app = spawn_app().await;
    let host_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .expect("the host's MemTotal")
        / 1024;
    let (status, body) = app
        .create_vm(json!({"name": "too-big", "cpu": 1, "memory": host_mib + 1024, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    let (status, body) = app.vm_action(&id, "start", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{} MiB", host_mib + 1024)) && error.contains("this host has"),
        "{job}"
    );
    assert_eq!(
        app.status_of(&id).await,
        "error",
        "a failed start leaves the VM in error"
    );
    // Given memory that fits, the same VM starts.
    let (status, body) = app.patch_vm(&id, json!({"memory": 128})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.act_and_wait(&id, "start", None).await;
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[actix_rt::test]
async fn twenty_concurrent_starts_have_one_effect() {
    let app = spawn_app().await;
    let id = app.create_guest("racer").await;
    let calls = (0..20).map(|_| app.vm_action(&id, "start", None));
    let results = futures::future::join_all(calls).await;
    let accepted: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(accepted.len(), 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::ACCEPTED) {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        let code = body["error"]["code"].as_str().unwrap();
        assert!(code == "VM_BUSY" || code == "VM_ALREADY_RUNNING", "{body}");
    }
    let job = app
        .wait_job(accepted[0]["data"]["jobId"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded");
    let (_, body) = app.vm_events(&id, "").await;
    let starts = event_types(&body)
        .iter()
        .filter(|t| *t == "StartRequested")
        .count();
    assert_eq!(starts, 1);
    let (_, jobs) = app.list_jobs(&format!("?vmId={id}")).await;
    assert_eq!(jobs["data"]["pagination"]["total"], 2, "{jobs}");
}

#[actix_rt::test]
async fn a_finished_job_cannot_be_cancelled() {
    let app = spawn_app().await;
    let (_, body) = app
        .create_vm(json!({"name": "c", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    let job_id = body["data"]["jobId"].as_str().unwrap().to_string();
    app.wait_job(&job_id).await;
    let (status, body) = app.cancel_job(&job_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "JOB_NOT_CANCELLABLE");
}

/// REST and `/ws` `vm-control` share one parser: the settings bound a stop's timeout on both,
/// each naming the field as its client sent it, and a refused stop records nothing.
#[actix_rt::test]
async fn a_stop_timeout_over_the_bound_is_refused_over_rest_and_ws_alike() {
    let app = spawn_app_with(|s| s.limits.stop_timeout_max_secs = 60).await;
    let id = app.create_guest("bounded-stop").await;
    let job = app.act_and_wait(&id, "start", None).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let (status, body) = app
        .vm_action(&id, "stop", Some(json!({"timeout": 61})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{body}");
    assert_eq!(body["error"]["field"], "timeout", "{body}");

    let mut ws = app.ws(&app.token).await;
    ws.send(
        "vm-control",
        json!({"vmId": id, "action": "stop", "timeout": 61}),
        json!("s1"),
    )
    .await;
    let error = ws.next_of("error").await;
    assert_eq!(error["id"], "s1", "{error}");
    assert_eq!(error["data"]["code"], "VALIDATION_ERROR", "{error}");
    assert_eq!(error["data"]["field"], "data.timeout", "{error}");

    let (_, events) = app.vm_events(&id, "").await;
    assert!(
        !event_types(&events).contains(&"StopRequested".to_string()),
        "{events}"
    );
    assert_eq!(app.status_of(&id).await, "running");

    // At the bound, the same stop is accepted over the WebSocket and carried out.
    ws.send(
        "vm-control",
        json!({"vmId": id, "action": "stop", "force": true, "timeout": 60}),
        json!("s2"),
    )
    .await;
    let answer = ws.next_of("vm-control-response").await;
    assert_eq!(answer["id"], "s2", "{answer}");
    assert_eq!(answer["data"]["action"], "stop", "{answer}");
    let job = app
        .wait_job(answer["data"]["jobId"].as_str().expect("a job id"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(app.status_of(&id).await, "stopped");
}
