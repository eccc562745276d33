//! Disk (and memory) snapshots of VMs (`/vms/{id}/snapshots`) through the real test guest under
//! TCG: taken, listed and deleted with `qemu-img` on a stopped VM; a disk-only snapshot taken
//! live, then restored on the stopped VM, undoes what the guest wrote to its disk since; a memory
//! snapshot restored on the running VM puts the guest back where it was without a reboot; and
//! the refusals (names, duplicates, unknown snapshots, states, permissions). These are qcow2
//! snapshots of the VM's disk; `snapshots.rs` is about the event store's aggregate snapshots.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use voidvm::hypervisor::{DiskSnapshots, QemuConfig, QemuDiskSnapshots};
use voidvm::vm::SnapshotName;

use crate::guest_shell::GuestShell;
use crate::helpers::{spawn_app, TestApp};

/// How long the guest may take to boot under TCG.
const BOOT_SECS: u64 = 180;

async fn snapshots_call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call(method, &format!("/api/v1/vms/{path}"), body).await
}

/// Sends a snapshot change and waits for its `snapshot` job to succeed.
async fn change_and_wait(app: &TestApp, method: Method, path: &str, body: Option<Value>) {
    let (status, accepted) = snapshots_call(app, method, path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {accepted}");
    let job = app
        .wait_job(accepted["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{path}: {job}");
    assert_eq!(job["kind"], "snapshot", "{job}");
}

async fn list(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = snapshots_call(app, Method::GET, &format!("{id}/snapshots"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().expect("a list").clone()
}

/// The snapshot names `qemu-img` finds on the VM's disk.
fn tags_on_disk(app: &TestApp, id: &str) -> String {
    let disk = app.env.data_dir.join("vms").join(id).join("disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["snapshot", "-l", "-U"])
        .arg(Path::new(&disk))
        .output()
        .expect("qemu-img runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test guest without a NIC (nothing but the console to wait for), provisioned.
async fn guest(app: &TestApp, name: &str) -> String {
    let (status, created) = app
        .create_vm(
            json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": "busybox",
            "network": {"mode": "none"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("an id").to_string();
    let job = app
        .wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    id
}

/// The snapshot operations a worker runs, on the test's machines: calling them again is what a
/// job retried after its worker died does.
fn worker_side(app: &TestApp) -> QemuDiskSnapshots {
    QemuDiskSnapshots::new(&QemuConfig {
        data_dir: app.env.data_dir.clone(),
        ..QemuConfig::default()
    })
}

fn created_at(snapshot: &Value) -> chrono::DateTime<chrono::Utc> {
    snapshot["createdAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| panic!("no createdAt in {snapshot}"))
}

/// Starts QEMU's `snapshot-save` job `job_id` for `tag` on the VM's QMP monitor and hangs up
/// without waiting for it: what a worker killed in the middle of a memory snapshot leaves.
async fn start_qemu_snapshot_job(app: &TestApp, id: &str, job_id: &str, tag: &str) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let socket = app.env.data_dir.join("vms").join(id).join("qmp.sock");
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("the QMP monitor");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    qmp_answer(&mut lines).await; // the greeting
    for command in [
        json!({"execute": "qmp_capabilities"}),
        json!({"execute": "snapshot-save", "arguments": {
            "job-id": job_id, "tag": tag, "vmstate": "vd0", "devices": ["vd0"]}}),
    ] {
        write
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("QMP writes");
        let got = qmp_answer(&mut lines).await;
        assert!(got.get("return").is_some(), "{command}: {got}");
    }
}

/// The next QMP message that is not an event.
async fn qmp_answer(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Value {
    loop {
        let line = lines.next_line().await.expect("QMP reads").expect("a line");
        let message: Value = serde_json::from_str(&line).expect("QMP JSON");
        if message.get("event").is_none() {
            return message;
        }
    }
}

fn event_types(events: &Value) -> Vec<String> {
    events["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Writes `mark` at the start of the guest's disk and reads it back.
async fn write_mark(shell: &mut GuestShell, mark: &str) {
    let write = format!("echo {mark} | dd of=/dev/vda bs=512 count=1 conv=sync 2>/dev/null; sync");
    shell.run(&write, 60).await;
    assert_eq!(read_mark(shell).await, mark);
}

async fn read_mark(shell: &mut GuestShell) -> String {
    shell
        .value(
            "echo \"V\"\"AL=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 6)\"",
            60,
        )
        .await
}

#[actix_rt::test]
async fn a_stopped_vm_takes_lists_restores_and_deletes_snapshots_with_qemu_img() {
    let app = spawn_app().await;
    let id = guest(&app, "snap-stopped").await;
    assert!(list(&app, &id).await.is_empty());

    change_and_wait(
        &app,
        Method::POST,
        &format!("{id}/snapshots"),
        Some(json!({"name": "first", "description": "before the upgrade"})),
    )
    .await;
    let snapshots = list(&app, &id).await;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let first = &snapshots[0];
    assert_eq!(first["name"], "first");
    assert_eq!(first["description"], "before the upgrade");
    assert_eq!(first["memory"], false);
    assert_eq!(first["vmStatus"], "stopped");
    assert_eq!(first["vmStateSize"], 0);
    assert!(first["createdAt"].is_string(), "{first}");
    assert!(tags_on_disk(&app, &id).contains("first"));
    // A retried take finds the snapshot on the disk and reports it as it was taken.
    let first_name = SnapshotName::parse("first").expect("a name");
    let again = worker_side(&app)
        .take(&id, &first_name, false)
        .await
        .expect("a retried take");
    assert_eq!(again.created_at, created_at(first));
    assert_eq!(tags_on_disk(&app, &id).matches("first").count(), 1);
    let (_, vm) = app.get_vm(&id).await;
    assert_eq!(vm["data"]["status"], "stopped", "{vm}");
    assert_eq!(vm["data"]["snapshots"][0]["name"], "first", "{vm}");

    // A memory snapshot needs a running machine.
    let (status, body) = snapshots_call(
        &app,
        Method::POST,
        &format!("{id}/snapshots"),
        Some(json!({"name": "mem", "memory": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "VM_NOT_RUNNING", "{body}");

    change_and_wait(
        &app,
        Method::POST,
        &format!("{id}/snapshots/first/restore"),
        None,
    )
    .await;
    change_and_wait(&app, Method::DELETE, &format!("{id}/snapshots/first"), None).await;
    assert!(list(&app, &id).await.is_empty());
    assert!(!tags_on_disk(&app, &id).contains("first"));
    worker_side(&app)
        .delete(&id, &first_name)
        .await
        .expect("a retried delete of what is gone succeeds");

    // The log has each request and outcome, and the history shows the snapshot while it was.
    let (_, events) = app.vm_events(&id, "").await;
    let types = event_types(&events);
    for want in [
        "SnapshotRequested",
        "SnapshotTaken",
        "SnapshotRestoreRequested",
        "SnapshotRestored",
        "SnapshotDeleteRequested",
        "SnapshotDeleted",
    ] {
        assert!(types.iter().any(|t| t == want), "{want} not in {types:?}");
    }
    let taken_at = events["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["type"] == "SnapshotTaken")
        .and_then(|e| e["sequence"].as_i64())
        .expect("SnapshotTaken's sequence");
    let (status, then) = app.history(&id, &taken_at.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(
        then["data"]["state"]["snapshots"][0]["name"], "first",
        "{then}"
    );
    let (_, now) = app
        .call(Method::GET, &format!("/api/v1/vms/{id}/history"), None)
        .await;
    assert_eq!(now["data"]["state"]["snapshots"], json!([]), "{now}");
}

#[actix_rt::test]
async fn a_disk_snapshot_taken_live_and_restored_stopped_undoes_the_guest_s_writes() {
    let app = spawn_app().await;
    let id = guest(&app, "snap-disk").await;
    app.act_and_wait(&id, "start", None).await;
    let mut shell = GuestShell::open(&app, &id, BOOT_SECS).await;
    write_mark(&mut shell, "MARK-1").await;

    change_and_wait(
        &app,
        Method::POST,
        &format!("{id}/snapshots"),
        Some(json!({"name": "disk-1"})),
    )
    .await;
    let snapshots = list(&app, &id).await;
    assert_eq!(snapshots[0]["vmStatus"], "running", "{snapshots:?}");
    assert_eq!(snapshots[0]["memory"], false, "{snapshots:?}");
    write_mark(&mut shell, "MARK-2").await;

    // A disk-only snapshot goes back on a stopped VM only.
    let (status, body) = snapshots_call(
        &app,
        Method::POST,
        &format!("{id}/snapshots/disk-1/restore"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "VM_NOT_STOPPED", "{body}");
    drop(shell);
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    change_and_wait(
        &app,
        Method::POST,
        &format!("{id}/snapshots/disk-1/restore"),
        None,
    )
    .await;
    assert_eq!(app.status_of(&id).await, "stopped");

    app.act_and_wait(&id, "start", None).await;
    let mut shell = GuestShell::open(&app, &id, BOOT_SECS).await;
    assert_eq!(read_mark(&mut shell).await, "MARK-1");
    drop(shell);
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[actix_rt::test]
async fn a_memory_snapshot_puts_the_running_guest_back_without_a_reboot() {
    let app = spawn_app().await;
    let id = guest(&app, "snap-memory").await;
    app.act_and_wait(&id, "start", None).await;
    let pid = app.pid_of(&id).expect("QEMU runs");
    let mut shell = GuestShell::open(&app, &id, BOOT_SECS).await;
    let read = "echo \"V\"\"AL=$(cat /tmp/m)\"";
    shell.run("echo before > /tmp/m", 60).await;
    assert_eq!(shell.value(read, 60).await, "before");

    change_and_wait(
        &app,
        Method::POST,
        &format!("{id}/snapshots"),
        Some(json!({"name": "mem-1", "memory": true})),
    )
    .await;
    let snapshots = list(&app, &id).await;
    assert_eq!(snapshots[0]["memory"], true, "{snapshots:?}");
    assert!(
        snapshots[0]["vmStateSize"].as_u64().unwrap_or(0) > 0,
        "{snapshots:?}"
    );
    assert_eq!(app.status_of(&id).await, "running");
    // A retried live take finds it on the disk: no second snapshot, the same time.
    let mem_name = SnapshotName::parse("mem-1").expect("a name");
    let again = worker_side(&app)
        .take(&id, &mem_name, true)
        .await
        .expect("a retried take");
    assert_eq!(again.created_at, created_at(&snapshots[0]));
    assert_eq!(tags_on_disk(&app, &id).matches("mem-1").count(), 1);

    shell.run("echo after > /tmp/m", 60).await;
    assert_eq!(shell.value(read, 60).await, "after");
    change_and_wait(
        &app,
        Method::POST,
        &format!("{id}/snapshots/mem-1/restore"),
        None,
    )
    .await;
    assert_eq!(app.status_of(&id).await, "running");
    assert_eq!(shell.value(read, 60).await, "before");
    // The same QEMU process, and the guest booted once: it went on from the snapshot.
    assert_eq!(app.pid_of(&id), Some(pid));
    let log = app.serial_log(&id);
    assert_eq!(log.matches("VOIDVM-GUEST-READY").count(), 1, "{log}");

    change_and_wait(&app, Method::DELETE, &format!("{id}/snapshots/mem-1"), None).await;
    assert!(list(&app, &id).await.is_empty());

    // A worker killed mid-snapshot left QEMU's job behind: the retried job waits for it,
    // dismisses it, and finds the snapshot it made.
    start_qemu_snapshot_job(&app, &id, "snapsave-mem-2", "mem-2").await;
    change_and_wait(
        &app,
        Method::POST,
        &format!("{id}/snapshots"),
        Some(json!({"name": "mem-2", "memory": true})),
    )
    .await;
    assert_eq!(tags_on_disk(&app, &id).matches("mem-2").count(), 1);
    assert_eq!(list(&app, &id).await[0]["name"], "mem-2");
    drop(shell);
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[actix_rt::test]
async fn snapshot_requests_are_checked_and_need_vm_update() {
    let app = spawn_app().await;
    let id = guest(&app, "snap-errors").await;
    let path = format!("{id}/snapshots");
    change_and_wait(&app, Method::POST, &path, Some(json!({"name": "dup"}))).await;

    let (status, body) =
        snapshots_call(&app, Method::POST, &path, Some(json!({"name": "dup"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "SNAPSHOT_EXISTS", "{body}");

    for (method, sub) in [(Method::POST, "nope/restore"), (Method::DELETE, "nope")] {
        let (status, body) = snapshots_call(&app, method, &format!("{path}/{sub}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "SNAPSHOT_NOT_FOUND", "{body}");
    }

    let long = "x".repeat(64);
    for (bad, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "-rf"}), "name"),
        (json!({"name": "a b"}), "name"),
        (json!({"name": "2"}), "name"),
        (json!({"name": long}), "name"),
        (json!({}), "name"),
        (json!({"name": "ok", "memory": "yes"}), "memory"),
        (
            json!({"name": "ok", "description": "d".repeat(1025)}),
            "description",
        ),
        (json!({"name": "ok", "colour": "red"}), "colour"),
    ] {
        let (status, body) = snapshots_call(&app, Method::POST, &path, Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{bad}: {body}");
        assert_eq!(body["error"]["field"], field, "{bad}: {body}");
    }
    let (status, body) =
        snapshots_call(&app, Method::POST, &format!("{path}/-rf/restore"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "name", "{body}");
    let (status, body) = snapshots_call(&app, Method::GET, "vm-nosuchvm/snapshots", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "VM_NOT_FOUND", "{body}");

    // A viewer reads the snapshots but changes none.
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "vic", "password": "password1", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let viewer = app.login_token("vic", "password1").await;
    let url = format!("/api/v1/vms/{path}");
    let (status, body) = app.call_as(&viewer, Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["name"], "dup", "{body}");
    let (status, body) = app
        .call_as(&viewer, Method::POST, &url, Some(json!({"name": "v"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
    let (status, body) = app
        .call_as(&viewer, Method::DELETE, &format!("{url}/dup"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // A user snapshots their own VM, and does not see the administrator's.
    let alice = app.create_user("alice").await;
    let (status, body) = app.call_as(&alice, Method::GET, &url, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, created) = app
        .call_as(
            &alice,
            Method::POST,
            "/api/v1/vms",
            Some(
                json!({"name": "mine", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox",
                "network": {"mode": "none"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let own = created["data"]["id"].as_str().expect("an id").to_string();
    app.wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;
    let (status, body) = app
        .call_as(
            &alice,
            Method::POST,
            &format!("/api/v1/vms/{own}/snapshots"),
            Some(json!({"name": "mine-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app
        .wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
}
