//! Observations name their process: what a VM's former QEMU process did, seen late, changes
//! nothing. Both races are forced by delivering the old process's observation at a chosen moment
//! through the app's observation channel, as its watcher would have delivered it.

use serde_json::{json, Value};
use voidvm::hypervisor::{process, MachineEvent, Observation, ObservationSender};
use voidvm::vm::MachineProcess;

use crate::helpers::{alive, eventually, spawn_app_with_observations, TestApp};

/// The VM's live QEMU process, named by pid and start time.
fn process_of(app: &TestApp, id: &str) -> MachineProcess {
    let pid = app.pid_of(id).expect("a pid file");
    process::identify(u32::try_from(pid).expect("a positive pid")).expect("a live QEMU")
}

fn deliver_exit(seam: &ObservationSender, id: &str, process: MachineProcess, clean: bool) {
    seam.send(MachineEvent {
        vm_id: id.to_string(),
        process,
        observation: Observation::Exited {
            clean,
            reason: "QEMU exited without shutting down (killed or crashed)".into(),
        },
    })
    .expect("the app's observer listens");
}

async fn events_of(app: &TestApp, id: &str) -> Vec<Value> {
    let (_, body) = app.vm_events(id, "?limit=100").await;
    body["data"]["items"].as_array().expect("items").clone()
}

/// The `StaleObservationIgnored` events about `process`.
async fn ignored_about(app: &TestApp, id: &str, process: MachineProcess) -> usize {
    events_of(app, id)
        .await
        .iter()
        .filter(|e| {
            e["type"] == "StaleObservationIgnored"
                && e["data"]["pid"] == process.pid
                && e["data"]["processStart"] == json!(process.start)
        })
        .count()
}

async fn await_ignored(app: &TestApp, id: &str, process: MachineProcess, count: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while ignored_about(app, id, process).await < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late observation was not recorded as ignored: {:?}",
            events_of(app, id).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn the_late_exit_of_the_process_a_restart_replaced_changes_nothing() {
    let (app, seam) = spawn_app_with_observations(|_| {}).await;
    let id = app.create_guest("phoenix").await;
    app.act_and_wait(&id, "start", None).await;
    let p1 = process_of(&app, &id);
    app.act_and_wait(&id, "restart", None).await;
    let p2 = process_of(&app, &id);
    assert_ne!(p1, p2);
    // The real watcher may already have seen P1 exit after P2 started (then it was ignored too).
    let before = ignored_about(&app, &id, p1).await;

    // P1's exit, seen after P2 started: before the fix it was recorded as the VM's crash.
    deliver_exit(&seam, &id, p1, false);
    await_ignored(&app, &id, p1, before + 1).await;
    assert_eq!(app.status_of(&id).await, "running");
    assert!(
        alive(i32::try_from(p2.pid).unwrap()),
        "the new QEMU runs on"
    );
    let after_restart: Vec<Value> = events_of(&app, &id)
        .await
        .into_iter()
        .skip_while(|e| e["type"] != "VmRestarted")
        .collect();
    assert!(
        after_restart
            .iter()
            .all(|e| e["type"] == "VmRestarted" || e["type"] == "StaleObservationIgnored"),
        "{after_restart:?}"
    );
    let (_, logs) = app.logs("?level=warn").await;
    assert!(
        logs["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["type"] == "StaleObservationIgnored" && l["level"] == "warn"),
        "{logs}"
    );

    // The new process is watched on its own: its death is recorded.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(p2.pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    app.await_status(&id, "crashed", 10).await;
}

#[actix_rt::test]
async fn the_old_exit_seen_around_the_next_start_does_not_fail_or_stop_it() {
    let (app, seam) = spawn_app_with_observations(|_| {}).await;
    let id = app.create_guest("lazarus").await;
    app.act_and_wait(&id, "start", None).await;
    let p1 = process_of(&app, &id);
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    eventually(5, "the old QEMU exiting", || {
        !alive(i32::try_from(p1.pid).unwrap())
    })
    .await;

    // While the next start is queued (new jobs are not due for an hour), P1's exit arrives.
    let db = sqlx::PgPool::connect(&app.env.database_url).await.unwrap();
    sqlx::query("ALTER TABLE jobs ALTER COLUMN run_after SET DEFAULT now() + interval '1 hour'")
        .execute(&db)
        .await
        .unwrap();
    let (_, body) = app.vm_action(&id, "start", None).await;
    let job = body["data"]["jobId"].as_str().expect("a job").to_string();
    assert_eq!(app.status_of(&id).await, "starting");
    deliver_exit(&seam, &id, p1, true);
    await_ignored(&app, &id, p1, 1).await;
    assert_eq!(app.status_of(&id).await, "starting");
    sqlx::query("ALTER TABLE jobs ALTER COLUMN run_after SET DEFAULT now()")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET run_after = now() WHERE id = $1")
        .bind(&job)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('voidvm_jobs', $1)")
        .bind(&job)
        .execute(&db)
        .await
        .unwrap();
    let done = app.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let p2 = process_of(&app, &id);
    assert_ne!(p1, p2);

    // And once more after the start: P1's exit neither stops nor crashes the VM.
    deliver_exit(&seam, &id, p1, false);
    await_ignored(&app, &id, p1, 2).await;
    assert_eq!(app.status_of(&id).await, "running");
    assert!(alive(i32::try_from(p2.pid).unwrap()));
    let (_, vm) = app.get_vm(&id).await;
    assert_eq!(vm["data"]["pid"], p2.pid, "{vm}");
}
