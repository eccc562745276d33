//! cloud-init through the real test guest under TCG: the NoCloud seed's hostname and SSH keys
//! arrive in the guest, a change on a running VM waits for a restart and then arrives, passwords
//! and user-data never enter the event log (nor `GET /vms/{id}`), and bad input names its field.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::{eventually, spawn_app, TestApp};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// How many rows of `table` hold `needle` anywhere in their text.
async fn rows_holding(app: &TestApp, table: &str, needle: &str) -> i64 {
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let count: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} t WHERE strpos(t::text, $1) > 0"
    ))
    .bind(needle)
    .fetch_one(&pool)
    .await
    .expect("a count");
    pool.close().await;
    count
}

/// The VM's serial console, held open: QEMU drops what the guest has not read yet when the
/// connection closes.
async fn console(app: &TestApp, id: &str) -> tokio::net::UnixStream {
    let path = app.env.data_dir.join("vms").join(id).join("console.sock");
    tokio::net::UnixStream::connect(&path)
        .await
        .expect("the serial console")
}

async fn created(app: &TestApp, body: Value) -> String {
    let (status, created) = app.create_vm(body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let job = app
        .wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    created["data"]["id"].as_str().expect("an id").to_string()
}

#[tokio::test]
async fn the_seed_reaches_the_guest_and_secrets_stay_out_of_the_log() {
    let app = spawn_app().await;
    let hostname = unique("seeded-");
    let password = unique("pw-secret-");
    let key_body = format!("AAAAC3NzaC1lZDI1NTE5{}", unique("K"));
    let key = format!("ssh-ed25519 {key_body} tester@voidvm");
    let id = created(
        &app,
        json!({"name": "seeded", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox",
            "network": {"mode": "none"},
            "cloudInit": {"hostname": hostname, "users": [
                {"name": "root", "sshAuthorizedKeys": [key], "password": password},
                {"name": "alice", "sshAuthorizedKeys": [key]}]}}),
    )
    .await;

    // The VM shows what the log shows: the password only as set.
    let (_, got) = app.get_vm(&id).await;
    let cloud = &got["data"]["cloudInit"];
    assert_eq!(cloud["hostname"], hostname.as_str(), "{got}");
    assert_eq!(cloud["users"][0]["passwordSet"], true, "{got}");
    assert_eq!(cloud["users"][1]["passwordSet"], false, "{got}");
    assert_eq!(cloud["users"][0]["sshAuthorizedKeys"][0], key.as_str());
    assert!(!got.to_string().contains(&password), "{got}");

    app.act_and_wait(&id, "start", None).await;
    let want = format!("hostname={hostname}");
    eventually(180, "the guest reading its seed", || {
        app.serial_log(&id).contains(&want)
    })
    .await;
    eventually(30, "the guest writing both users' keys", || {
        let log = app.serial_log(&id);
        log.contains("VOIDVM-SEED key user=root file=/root/.ssh/authorized_keys")
            && log.contains("VOIDVM-SEED key user=alice file=/home/alice/.ssh/authorized_keys")
    })
    .await;
    // The hostname and the key are really there, asked on the guest's console (the typed line,
    // echoed, holds neither). Typed again until answered: input typed before the shell reads its
    // console is lost.
    eventually(120, "the shell's prompt", || {
        app.serial_log(&id).contains("built-in shell")
    })
    .await;
    let (host_line, key_line) = (format!("HOST-{hostname}"), format!("ROOTKEY-{key_body}"));
    let answered = |app: &TestApp| {
        let log = app.serial_log(&id);
        log.contains(&host_line) && log.contains(&key_line)
    };
    let mut tty = console(&app, &id).await;
    for _ in 0..24 {
        if answered(&app) {
            break;
        }
        tty.write_all(
            b"echo HOST-$(hostname); cut -d' ' -f2 /root/.ssh/authorized_keys | sed 's/^/ROOTKEY-/'\n",
        )
        .await
        .expect("typed");
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    drop(tty);
    assert!(answered(&app), "{}", app.serial_log(&id));

    // A change on a running VM waits for the restart; a new password stays out of the log too.
    let new_hostname = unique("renamed-");
    let new_password = unique("pw-new-");
    let (status, patched) = app
        .patch_vm(
            &id,
            json!({"cloudInit": {"hostname": new_hostname, "users": [
                {"name": "root", "sshAuthorizedKeys": [key], "password": new_password}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["requiresRestart"], true, "{patched}");
    assert_eq!(
        patched["data"]["vm"]["cloudInit"]["hostname"],
        new_hostname.as_str()
    );
    app.act_and_wait(&id, "restart", None).await;
    let want = format!("instance={id}-2 hostname={new_hostname}");
    eventually(180, "the guest reading its new seed", || {
        app.serial_log(&id).contains(&want)
    })
    .await;

    // Neither password is anywhere in the log or its snapshots; the secrets table holds hashes.
    for secret in [&password, &new_password] {
        assert_eq!(rows_holding(&app, "events", secret).await, 0, "{secret}");
        assert_eq!(rows_holding(&app, "snapshots", secret).await, 0);
        assert_eq!(rows_holding(&app, "vm_cloud_init_secrets", secret).await, 0);
    }
    assert_eq!(rows_holding(&app, "vm_cloud_init_secrets", "$6$").await, 1);
    let (_, events) = app.vm_events(&id, "").await;
    let text = events.to_string();
    assert!(text.contains("\"passwordSet\":true"), "{text}");
    assert!(!text.contains(&password), "{text}");
    assert!(!text.contains(&new_password), "{text}");
}

#[tokio::test]
async fn user_data_is_a_secret_and_bad_input_names_its_field() {
    let app = spawn_app().await;
    let marker = unique("userdata-secret-");
    let id = created(
        &app,
        json!({"name": "ud", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox",
            "bootOrder": ["cdrom", "disk"],
            "cloudInit": {"userData": format!("#cloud-config\npassword: {marker}\n"),
                "networkConfig": "version: 2\n"}}),
    )
    .await;
    let (_, got) = app.get_vm(&id).await;
    assert_eq!(got["data"]["cloudInit"]["userDataSet"], true, "{got}");
    assert_eq!(got["data"]["cloudInit"]["networkConfig"], "version: 2\n");
    assert_eq!(got["data"]["bootOrder"], json!(["cdrom", "disk"]));
    assert!(!got.to_string().contains(&marker));
    assert_eq!(rows_holding(&app, "events", &marker).await, 0);
    assert_eq!(
        rows_holding(&app, "vm_cloud_init_secrets", &marker).await,
        1
    );

    let base = json!({"name": "bad", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"});
    let with = |extra: Value| {
        let mut body = base.clone();
        for (k, v) in extra.as_object().expect("an object") {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (json!({"bootOrder": ["floppy"]}), "bootOrder[0]"),
        (json!({"bootOrder": ["disk", "disk"]}), "bootOrder[1]"),
        (
            json!({"cloudInit": {"userData": "x".repeat(33 * 1024)}}),
            "cloudInit.userData",
        ),
        (
            json!({"cloudInit": {"users": [{"name": "Bad User"}]}}),
            "cloudInit.users[0].name",
        ),
        (
            json!({"cloudInit": {"users": [{"name": "a", "sshAuthorizedKeys": ["not a key"]}]}}),
            "cloudInit.users[0].sshAuthorizedKeys[0]",
        ),
        (
            json!({"cloudInit": {"hostname": "under_score"}}),
            "cloudInit.hostname",
        ),
        (
            json!({"cloudInit": {"userData": "#cloud-config\n", "users": [{"name": "a"}]}}),
            "cloudInit.userData",
        ),
    ];
    for (extra, field) in cases {
        let (status, body) = app.create_vm(with(extra.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {body}");
        assert_eq!(body["error"]["field"], field, "{extra}: {body}");
        let (status, body) = app.patch_vm(&id, extra.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "PATCH {extra}: {body}");
        assert_eq!(body["error"]["field"], field, "PATCH {extra}: {body}");
    }
}

#[tokio::test]
async fn the_boot_order_reaches_qemu_for_a_disk_boot() {
    let app = spawn_app().await;
    let id = created(
        &app,
        json!({"name": "blank", "cpu": 1, "memory": 128, "disk": 1,
            "bootOrder": ["network", "disk"], "network": {"mode": "none"}}),
    )
    .await;
    app.act_and_wait(&id, "start", None).await;
    let cmdline = |app: &TestApp| {
        let pid = app.pid_of(&id).expect("QEMU runs");
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
    };
    assert!(
        cmdline(&app).contains("-boot order=nc"),
        "{}",
        cmdline(&app)
    );
    assert!(!cmdline(&app).contains("seed.iso"), "no cloudInit, no seed");
    let (status, patched) = app
        .patch_vm(&id, json!({"bootOrder": ["cdrom", "disk"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["requiresRestart"], true, "{patched}");
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    app.act_and_wait(&id, "start", None).await;
    assert!(
        cmdline(&app).contains("-boot order=dc"),
        "{}",
        cmdline(&app)
    );
}
