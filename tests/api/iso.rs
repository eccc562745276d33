//! ISO attach and detach through the real test guest under TCG: an ISO attached to a stopped VM
//! is in its CD-ROM at the next start, one detached from or attached to a running VM changes the
//! medium live (the guest sees the marker file, then an empty tray, then the file again), an
//! unknown image is 404 `IMAGE_NOT_FOUND`, and an image in a CD-ROM cannot be deleted.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::guest_shell::GuestShell;
use crate::helpers::{eventually, images_dir, spawn_app_with, TestApp};

/// An images dir of this test's own: the test guest (linked) and an image holding only an ISO
/// with a marker file. Removed when dropped.
struct Images {
    dir: PathBuf,
    iso_image: String,
    marker: String,
}

impl Images {
    async fn new() -> Images {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("voidvm-iso-test-{id}"));
        std::fs::create_dir_all(&dir).expect("the images dir");
        std::os::unix::fs::symlink(images_dir().join("busybox"), dir.join("busybox"))
            .expect("the test guest, linked");
        let iso_image = format!("tools-{}", &id[..8]);
        let marker = format!("MARK-{id}");
        std::fs::create_dir_all(dir.join(&iso_image)).expect("the image's dir");
        let writer = voidvm::hypervisor::seed::GenIsoImage;
        voidvm::hypervisor::seed::IsoWriter::write(
            &writer,
            "TOOLS",
            &[("marker.txt", format!("{marker}\n").as_bytes())],
            &dir.join(&iso_image).join("image.iso"),
        )
        .await
        .expect("the ISO");
        Images {
            dir,
            iso_image,
            marker,
        }
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn iso_call(
    app: &TestApp,
    method: Method,
    id: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call(method, &format!("/api/v1/vms/{id}/iso"), body)
        .await
}

/// Sends an ISO change and waits for its job to succeed.
async fn change_and_wait(app: &TestApp, method: Method, id: &str, body: Option<Value>) {
    let (status, accepted) = iso_call(app, method, id, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job = app
        .wait_job(accepted["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "media", "{job}");
}

/// Runs `line` in the guest's shell (on its serial console) and checks what it printed holds
/// `want` (which the typed line itself does not).
async fn ask_guest(app: &TestApp, id: &str, line: &str, want: &str) {
    let mut shell = GuestShell::open(app, id, 180).await;
    let out = shell.run(line, 120).await;
    assert!(out.contains(want), "{want} not in:\n{out}");
}

#[tokio::test]
async fn an_iso_reaches_the_guest_and_changes_live() {
    let images = Images::new().await;
    let dir = images.dir.clone();
    let app = spawn_app_with(move |s| s.images_dir = Some(dir)).await;
    let (status, created) = app
        .create_vm(
            json!({"name": "iso", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox",
            "network": {"mode": "none"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("an id").to_string();
    app.wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;

    // Unknown images and bad input are refused before anything is recorded.
    let (status, body) = iso_call(&app, Method::POST, &id, Some(json!({"image": "nope"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "IMAGE_NOT_FOUND", "{body}");
    let (status, body) = iso_call(&app, Method::POST, &id, Some(json!({"image": ""}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "image", "{body}");
    let (status, body) = iso_call(&app, Method::POST, &id, Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "image", "{body}");
    // (The busybox image has no ISO.)
    let (status, body) = iso_call(&app, Method::POST, &id, Some(json!({"image": "busybox"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Attached to a stopped VM: recorded, and in the CD-ROM at the next start.
    change_and_wait(
        &app,
        Method::POST,
        &id,
        Some(json!({"image": images.iso_image})),
    )
    .await;
    let (_, got) = app.get_vm(&id).await;
    assert_eq!(got["data"]["iso"], images.iso_image.as_str(), "{got}");
    assert_eq!(got["data"]["status"], "stopped", "{got}");
    app.act_and_wait(&id, "start", None).await;
    let pid = app.pid_of(&id).expect("QEMU runs");
    let cmdline = String::from_utf8_lossy(
        &std::fs::read(format!("/proc/{pid}/cmdline")).expect("its command line"),
    )
    .replace('\0', " ");
    assert!(cmdline.contains("image.iso"), "{cmdline}");
    eventually(180, "the guest's shell", || {
        app.serial_log(&id).contains("built-in shell")
    })
    .await;
    // The marker file is read from the CD-ROM (the typed line does not hold the marker).
    let read_marker = "mkdir -p /mnt; for d in /dev/sr*; do mount -t iso9660 -o ro $d /mnt 2>/dev/null && sed 's/^/ISO-/' /mnt/marker.txt && umount /mnt; done";
    let seen = format!("ISO-{}", images.marker);
    ask_guest(&app, &id, read_marker, &seen).await;

    // Detached from the running VM: the tray is empty.
    change_and_wait(&app, Method::DELETE, &id, None).await;
    let (_, got) = app.get_vm(&id).await;
    assert_eq!(got["data"]["iso"], Value::Null, "{got}");
    assert_eq!(got["data"]["status"], "running", "{got}");
    let tray = "echo TRAY-$(dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null && echo full || echo empty)";
    ask_guest(&app, &id, tray, "TRAY-empty").await;

    // Attached to the running VM: the guest sees the file again.
    change_and_wait(
        &app,
        Method::POST,
        &id,
        Some(json!({"image": images.iso_image})),
    )
    .await;
    ask_guest(&app, &id, read_marker, &seen).await;
    let (_, events) = app.vm_events(&id, "").await;
    let text = events.to_string();
    assert!(
        text.contains("IsoChangeRequested") && text.contains("VmIsoChanged"),
        "{text}"
    );

    // An image in a CD-ROM is in use: it cannot be deleted until it is detached.
    let image_url = format!("/api/v1/images/{}", images.iso_image);
    let (status, body) = app.call(Method::DELETE, &image_url, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "IMAGE_IN_USE", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .is_some_and(|d| d.contains(&id)),
        "{body}"
    );
    change_and_wait(&app, Method::DELETE, &id, None).await;
    let (status, body) = app.call(Method::DELETE, &image_url, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}
