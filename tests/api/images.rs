//! Images: imports from a local HTTP server serving the test guest's files (and a raw disk made
//! here), checked on the job, in the log and on disk; failed imports (a wrong checksum, a 404, a
//! server that stops mid-download) fail clearly and leave nothing behind; uploads stream past
//! the JSON body limit; a VM's disk overlays its image, which cannot be deleted while the VM
//! exists. Each test has its own images dir, holding a link to the test guest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{eventually, images_dir, spawn_app_with, spawn_server, Env, TestApp};

/// A tiny HTTP server: `/file/<key>` serves a file, `/cut/<key>` announces the whole file and
/// closes after half of it, anything else is a 404. While `stalled`, `/file/<key>` sends half
/// the file and then nothing more.
pub(crate) struct FileServer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
    stalled: Arc<AtomicBool>,
}

impl FileServer {
    pub(crate) async fn start(files: HashMap<String, Vec<u8>>) -> FileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let files = Arc::new(files);
        let stalled = Arc::new(AtomicBool::new(false));
        let stall = stalled.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let files = files.clone();
                let stall = stall.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request).to_string();
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (cut, key) = match (path.strip_prefix("/file/"), path.strip_prefix("/cut/"))
                    {
                        (Some(k), _) => (false, k.to_string()),
                        (_, Some(k)) => (true, k.to_string()),
                        _ => (false, String::new()),
                    };
                    let Some(bytes) = files.get(&key) else {
                        let _ = socket
                            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        bytes.len()
                    );
                    let body = if cut || stall {
                        &bytes[..bytes.len() / 2]
                    } else {
                        &bytes[..]
                    };
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body).await;
                    if stall {
                        // Held open, as a server that hangs.
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        FileServer {
            port,
            task,
            stalled,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// While on, `/file/<key>` sends half the file and then hangs.
    pub(crate) fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An images dir of the test's own, holding the test guest (a link to the built one).
pub(crate) struct Images {
    pub(crate) dir: PathBuf,
}

impl Images {
    pub(crate) fn new() -> Images {
        let dir = std::env::temp_dir().join(format!(
            "voidvm-test-images-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("the images dir");
        std::os::unix::fs::symlink(images_dir().join("busybox"), dir.join("busybox"))
            .expect("a link to the test guest");
        Images { dir }
    }

    /// What the images dir holds, but the test guest.
    pub(crate) fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("the images dir")
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != "busybox")
            .collect();
        names.sort();
        names
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn app_with(images: &Images) -> TestApp {
    let dir = images.dir.clone();
    spawn_app_with(move |s| s.images_dir = Some(dir)).await
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bytes the server reads as an ISO: zeros with an ISO 9660 volume descriptor at sector 16.
pub(crate) fn fake_iso() -> Vec<u8> {
    let mut iso = vec![0u8; 40_000];
    iso[32769..32774].copy_from_slice(b"CD001");
    iso
}

pub(crate) fn kernel() -> Vec<u8> {
    std::fs::read(images_dir().join("busybox/vmlinuz")).expect("the test guest's kernel")
}

pub(crate) async fn import(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.call(Method::POST, "/api/v1/images", Some(body)).await
}

/// Imports and waits for the job; returns the job as it ended.
pub(crate) async fn import_and_wait(app: &TestApp, body: Value) -> Value {
    let (status, answer) = import(app, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["data"]["status"], "importing", "{answer}");
    assert_eq!(answer["data"]["job"]["kind"], "import_image", "{answer}");
    let job_id = answer["data"]["job"]["id"].as_str().expect("a job id");
    app.wait_job(job_id).await
}

/// Uploads `body` to `path` (with its query), checking the answer against the document.
pub(crate) async fn upload(app: &TestApp, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = app
        .client
        .put(app.url(path))
        .bearer_auth(&app.token)
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("the upload");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    crate::openapi::check_answer(&Method::PUT, path, status, "application/json", Some(&body));
    (status, body)
}

pub(crate) async fn image(app: &TestApp, name: &str) -> (StatusCode, Value) {
    app.call(Method::GET, &format!("/api/v1/images/{name}"), None)
        .await
}

fn qemu_img_info(path: &Path) -> Value {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img info's JSON")
}

#[tokio::test]
async fn an_imported_kernel_shows_its_progress_and_is_listed_with_the_host_images() {
    let images = Images::new();
    let app = app_with(&images).await;
    let bytes = kernel();
    let server = FileServer::start(HashMap::from([("vmlinuz".to_string(), bytes.clone())])).await;

    let job = import_and_wait(
        &app,
        json!({"name": "imported-kernel", "url": server.url("/file/vmlinuz"), "kind": "kernel",
               "sha256": sha256(&bytes)}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["vmId"], Value::Null, "{job}");
    assert_eq!(job["image"], "imported-kernel", "{job}");
    let size = bytes.len() as u64;
    assert_eq!(job["progress"]["bytesDone"], size, "{job}");
    assert_eq!(job["progress"]["bytesTotal"], size, "{job}");

    let (status, body) = image(&app, "imported-kernel").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "ready");
    assert_eq!(body["data"]["kind"], "kernel");
    assert_eq!(body["data"]["source"], "url");
    assert_eq!(body["data"]["sha256"], sha256(&bytes));
    assert_eq!(body["data"]["sizeBytes"], size);
    let installed = std::fs::read(images.dir.join("imported-kernel/vmlinuz")).expect("installed");
    assert_eq!(sha256(&installed), sha256(&bytes));
    assert_eq!(
        images.entries(),
        vec!["imported-kernel"],
        "nothing else is left"
    );

    let (_, list) = app.call(Method::GET, "/api/v1/images", None).await;
    let listed: Vec<(String, String)> = list["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or("").to_string(),
                i["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("busybox".to_string(), "host".to_string()),
            ("imported-kernel".to_string(), "url".to_string())
        ]
    );

    // The import's events, in order, in the log.
    let (status, log) = app.events("?streamType=image").await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let mut items: Vec<Value> = log["data"]["items"].as_array().expect("items").clone();
    items.sort_by_key(|e| e["position"].as_i64());
    let types: Vec<&str> = items.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"ImageImportRequested"), "{types:?}");
    assert_eq!(types.last(), Some(&"ImageImported"), "{types:?}");
    assert!(types.contains(&"ImageImportProgressed"), "{types:?}");
    let last_progress = items
        .iter()
        .rfind(|e| e["type"] == "ImageImportProgressed")
        .expect("a progress event");
    assert_eq!(last_progress["data"]["bytesDone"], size, "{last_progress}");
    assert_eq!(last_progress["data"]["bytesTotal"], size, "{last_progress}");

    // The name is taken now, and so is the test guest's.
    for name in ["imported-kernel", "busybox"] {
        let (status, body) = import(
            &app,
            json!({"name": name, "url": server.url("/file/vmlinuz"), "kind": "kernel"}),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "IMAGE_EXISTS", "{body}");
    }
}

#[tokio::test]
async fn failed_imports_say_why_and_leave_nothing_behind() {
    let images = Images::new();
    let app = app_with(&images).await;
    let bytes = kernel();
    let server = FileServer::start(HashMap::from([("vmlinuz".to_string(), bytes.clone())])).await;

    let cases = [
        (
            "wrong-sum",
            server.url("/file/vmlinuz"),
            Some("0".repeat(64)),
            "checksum does not match",
        ),
        ("not-there", server.url("/file/nothing"), None, "HTTP 404"),
        ("cut-short", server.url("/cut/vmlinuz"), None, "broke after"),
        // A kernel is not an ISO.
        (
            "not-an-iso",
            server.url("/file/vmlinuz"),
            None,
            "not an ISO image",
        ),
    ];
    for (name, url, sum, why) in cases {
        let kind = if name == "not-an-iso" {
            "iso"
        } else {
            "kernel"
        };
        let job = import_and_wait(
            &app,
            json!({"name": name, "url": url, "kind": kind, "sha256": sum}),
        )
        .await;
        assert_eq!(job["status"], "failed", "{name}: {job}");
        let error = job["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{name}: {error}");
        let (status, body) = image(&app, name).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["status"], "failed", "{name}: {body}");
        assert_eq!(body["data"]["error"], error, "{name}: {body}");
        assert!(
            images.entries().is_empty(),
            "{name} left {:?} in the images dir",
            images.entries()
        );
    }
    let (_, log) = app.events("?streamType=image&type=ImageImportFailed").await;
    assert_eq!(
        log["data"]["items"].as_array().map(Vec::len),
        Some(4),
        "{log}"
    );

    // A failed name can be used again.
    let job = import_and_wait(
        &app,
        json!({"name": "wrong-sum", "url": server.url("/file/vmlinuz"), "kind": "kernel",
               "sha256": sha256(&bytes)}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(images.entries(), vec!["wrong-sum"]);
}

#[tokio::test]
async fn a_vm_disk_overlays_its_imported_image_which_cannot_go_while_the_vm_exists() {
    let images = Images::new();
    let app = app_with(&images).await;
    // A small raw disk, converted to qcow2 by the import.
    let raw = images.dir.join(".raw-source");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg("4M")
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let bytes = std::fs::read(&raw).expect("the raw disk");
    std::fs::remove_file(&raw).expect("removed");
    let server = FileServer::start(HashMap::from([("disk.raw".to_string(), bytes.clone())])).await;

    let job = import_and_wait(
        &app,
        json!({"name": "tiny-disk", "url": server.url("/file/disk.raw"), "kind": "disk",
               "format": "raw", "sha256": sha256(&bytes)}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let base = images.dir.join("tiny-disk/disk.qcow2");
    assert_eq!(qemu_img_info(&base)["format"], "qcow2");

    let (status, body) = app
        .create_vm(
            json!({"name": "on-tiny", "cpu": 1, "memory": 128, "disk": 1, "os": "tiny-disk"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let vm_id = body["data"]["id"].as_str().expect("an id").to_string();
    let job = app
        .wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let disk = app.env.data_dir.join("vms").join(&vm_id).join("disk.qcow2");
    let info = qemu_img_info(&disk);
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(
        info["virtual-size"],
        1u64 << 30,
        "grown to the VM's 1 GiB: {info}"
    );
    assert_eq!(
        info["full-backing-filename"],
        std::fs::canonicalize(&base)
            .expect("the base")
            .display()
            .to_string(),
        "{info}"
    );

    let (status, body) = app
        .call(Method::DELETE, "/api/v1/images/tiny-disk", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "IMAGE_IN_USE", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .contains(&vm_id),
        "names the VM: {body}"
    );
    assert!(base.exists(), "a refused delete keeps the files");

    let (status, body) = app.delete_vm(&vm_id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app
        .wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, body) = app
        .call(Method::DELETE, "/api/v1/images/tiny-disk", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(images.entries().is_empty(), "{:?}", images.entries());
    let (status, body) = image(&app, "tiny-disk").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "IMAGE_NOT_FOUND", "{body}");
    // A VM can no longer be made from it.
    let (status, body) = app
        .create_vm(json!({"name": "late", "cpu": 1, "memory": 128, "disk": 1, "os": "tiny-disk"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "os", "{body}");
}

#[tokio::test]
async fn an_upload_streams_past_the_body_limit_and_is_checked() {
    let images = Images::new();
    let app = app_with(&images).await;
    let bytes = kernel();
    assert!(bytes.len() > 1 << 20, "larger than any JSON body");
    let upload_as_uploaded = |query: String, body: Vec<u8>| {
        let app = &app;
        async move { upload(app, &format!("/api/v1/images/uploaded/upload{query}"), body).await }
    };

    let (status, body) = upload_as_uploaded(
        format!("?kind=kernel&sha256={}", "1".repeat(64)),
        bytes.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "sha256", "{body}");
    assert!(images.entries().is_empty(), "{:?}", images.entries());

    let (status, body) = upload_as_uploaded("?kind=floppy".to_string(), Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "kind", "{body}");

    // A file whose first bytes are not of its kind is refused, and nothing stays.
    for (kind, what) in [("iso", "not an ISO image"), ("kernel", "not a kernel")] {
        let (status, body) = upload_as_uploaded(format!("?kind={kind}"), vec![b'x'; 40_000]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], "body", "{body}");
        let message = body["error"]["details"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{body}");
        assert!(images.entries().is_empty(), "{:?}", images.entries());
    }

    let (status, body) = upload_as_uploaded(
        format!("?kind=kernel&sha256={}", sha256(&bytes)),
        bytes.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["status"], "ready", "{body}");
    assert_eq!(body["data"]["source"], "upload", "{body}");
    assert_eq!(body["data"]["sizeBytes"], bytes.len() as u64, "{body}");
    let installed = std::fs::read(images.dir.join("uploaded/vmlinuz")).expect("installed");
    assert_eq!(installed, bytes);
    let (_, log) = app.events("?streamType=image&type=ImageUploaded").await;
    assert_eq!(
        log["data"]["items"].as_array().map(Vec::len),
        Some(1),
        "{log}"
    );

    let (status, body) = upload_as_uploaded("?kind=kernel".to_string(), bytes).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "IMAGE_EXISTS", "{body}");

    // A compressed body would be stored compressed: refused, naming the header.
    let resp = app
        .client
        .put(app.url("/api/v1/images/zipped/upload?kind=iso"))
        .bearer_auth(&app.token)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Encoding", "gzip")
        .body(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0])
        .send()
        .await
        .expect("the upload");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["field"], "Content-Encoding", "{body}");

    // A disk qemu-img cannot read as qcow2: refused, saying why without naming a host path.
    let (status, body) = upload(
        &app,
        "/api/v1/images/bad-disk/upload?kind=disk&format=qcow2",
        b"QFI\xfbnot really a qcow2".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let details = body["error"]["details"].as_str().unwrap_or_default();
    assert!(details.contains("qemu-img"), "{body}");
    assert!(!details.contains(".staging-"), "{body}");
    assert!(!details.contains(&*images.dir.to_string_lossy()), "{body}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_only_admins_add_images() {
    let images = Images::new();
    let app = app_with(&images).await;
    let good = json!({"name": "fine", "url": "http://127.0.0.1:9/x.img", "kind": "disk"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        ("name", with("name", json!("Has Capitals"))),
        ("name", with("name", json!(".hidden"))),
        ("name", with("name", json!("a".repeat(64)))),
        ("url", with("url", json!("ftp://example.com/x"))),
        ("url", with("url", json!("https://user:pw@example.com/x"))),
        ("kind", with("kind", json!("floppy"))),
        ("sha256", with("sha256", json!("abc"))),
        ("format", with("format", json!("qed2"))),
    ];
    for (field, body) in cases {
        let (status, answer) = import(&app, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "VALIDATION_ERROR", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let mut iso = with("kind", json!("iso"));
    iso["format"] = json!("raw");
    let (status, answer) = import(&app, iso).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "format", "{answer}");

    let (status, body) = image(&app, "nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "IMAGE_NOT_FOUND", "{body}");
    let (status, body) = app
        .call(Method::DELETE, "/api/v1/images/nothing-here", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Users read images but do not add or delete them.
    let user = app.create_user("imagereader").await;
    let (status, body) = app
        .call_as(&user, Method::GET, "/api/v1/images", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call_as(&user, Method::POST, "/api/v1/images", Some(good))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("image:create"),
        "{body}"
    );
    let (status, body) = app
        .call_as(&user, Method::DELETE, "/api/v1/images/busybox", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(images.dir.join("busybox").exists());
}

#[tokio::test]
async fn the_settings_refuse_private_urls_and_images_over_the_size_bound() {
    let images = Images::new();
    let dir = images.dir.clone();
    let app = spawn_app_with(move |s| {
        s.images_dir = Some(dir);
        s.images.allow_private = false;
        s.images.max_bytes = 1024 * 1024;
    })
    .await;
    for url in [
        "http://127.0.0.1:9/x.img",
        "http://localhost:9/x.img",
        "http://10.1.2.3/x.img",
    ] {
        let (status, body) =
            import(&app, json!({"name": "private", "url": url, "kind": "disk"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["field"], "url", "{url}: {body}");
    }
    let (status, _) = image(&app, "private").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let path = "/api/v1/images/too-big/upload?kind=kernel";
    let (status, body) = upload(&app, path, kernel()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE", "{body}");
    assert!(images.entries().is_empty(), "{:?}", images.entries());
}

#[tokio::test]
async fn a_vm_creation_racing_the_delete_of_its_image_never_both_win() {
    let images = Images::new();
    let app = app_with(&images).await;
    // Not really a kernel, but a file with a bzImage's header signature.
    let mut kernel = vec![0u8; 1024];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    for round in 0..6 {
        let name = format!("racy-{round}");
        let resp = app
            .client
            .put(app.url(&format!("/api/v1/images/{name}/upload?kind=kernel")))
            .bearer_auth(&app.token)
            .body(kernel.clone())
            .send()
            .await
            .expect("the upload");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let create = app.create_vm(
            json!({"name": format!("on-{name}"), "cpu": 1, "memory": 128, "disk": 1, "os": name}),
        );
        let path = format!("/api/v1/images/{name}");
        let delete = app.call(Method::DELETE, &path, None);
        let ((created, vm), (deleted, gone)) = tokio::join!(create, delete);
        let created = created == StatusCode::CREATED;
        let deleted = deleted == StatusCode::NO_CONTENT;
        assert!(
            created != deleted,
            "round {round}: exactly one may win: create {vm}, delete {gone}"
        );
        if created {
            assert_eq!(gone["error"]["code"], "IMAGE_IN_USE", "{gone}");
        } else {
            assert_eq!(vm["error"]["field"], "os", "{vm}");
        }
    }
}

#[tokio::test]
async fn a_server_killed_mid_download_leaves_no_image_and_the_import_starts_over() {
    let images = Images::new();
    let mut env = Env::new().await;
    env.extra_vars = vec![("VOIDVM_IMAGES_DIR".into(), images.dir.display().to_string())];
    let mut app = spawn_server(env).await;
    let bytes = kernel();
    let server = FileServer::start(HashMap::from([("vmlinuz".to_string(), bytes.clone())])).await;
    server.stalled.store(true, Ordering::SeqCst);

    let (status, answer) = import(
        &app,
        json!({"name": "survivor", "url": server.url("/file/vmlinuz"), "kind": "kernel",
               "sha256": sha256(&bytes)}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job_id = answer["data"]["job"]["id"]
        .as_str()
        .expect("a job")
        .to_string();
    let staging = images
        .dir
        .join(format!(".staging-import-{job_id}/download"));
    let half = (bytes.len() / 2) as u64;
    eventually(30, "half the image received", || {
        std::fs::metadata(&staging).is_ok_and(|m| m.len() == half)
    })
    .await;

    app.kill_server();
    assert!(
        !images.dir.join("survivor").exists(),
        "nothing is under the image's name"
    );
    server.stalled.store(false, Ordering::SeqCst);
    app.restart_server().await;

    let job = app.wait_job(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    assert_eq!(
        images.entries(),
        vec!["survivor"],
        "the staging dir is gone"
    );
    let installed = std::fs::read(images.dir.join("survivor/vmlinuz")).expect("installed");
    assert_eq!(sha256(&installed), sha256(&bytes));
}

#[tokio::test]
async fn an_upload_cut_off_mid_body_leaves_nothing_and_a_crashs_staging_is_swept_at_start() {
    use tokio::io::AsyncWriteExt;
    let images = Images::new();
    // What a process killed mid-upload leaves behind: its staging directory and lock file,
    // nobody holding the lock.
    std::fs::create_dir_all(images.dir.join(".staging-upload-dead")).unwrap();
    std::fs::write(images.dir.join(".staging-upload-dead/download"), b"half").unwrap();
    std::fs::write(images.dir.join(".staging-upload-dead.lock"), b"").unwrap();
    let app = app_with(&images).await;
    assert!(images.entries().is_empty(), "{:?}", images.entries());

    // An upload announcing 10 MB that sends 64 KiB and goes away.
    let host = app.address.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "PUT /api/v1/images/cut/upload?kind=kernel HTTP/1.1\r\nHost: {host}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 10000000\r\n\r\n",
        app.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&vec![7u8; 64 * 1024]).await.unwrap();
    // The staging directory exists while the body streams in...
    eventually(10, "the upload is staged", || {
        images
            .entries()
            .iter()
            .any(|e| e.starts_with(".staging-upload-"))
    })
    .await;
    drop(socket);
    // ...and is gone once its client is.
    eventually(10, "the cut-off upload's staging is removed", || {
        images.entries().is_empty()
    })
    .await;
    let (status, body) = image(&app, "cut").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A chunked body whose framing breaks at once (the parser ends the connection while the
    // handler is still making its staging directory): nothing is left, however often.
    for _ in 0..20 {
        let mut socket = tokio::net::TcpStream::connect(&host).await.unwrap();
        let request = format!(
            "PUT /api/v1/images/broken/upload?kind=iso HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             10\r\naaaaaaaaaaaaaaaa\r\nzz\r\n",
            app.token
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut answer).await;
    }
    eventually(10, "no staging is left by broken uploads", || {
        images.entries().is_empty()
    })
    .await;
    let (status, body) = image(&app, "broken").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// A fresh node's images dir is not there until something is put in it: the first upload makes
/// it (it answered 500, the staging's lock file having nowhere to go; a fuzzer over the OpenAPI
/// document found it on a fresh data dir).
#[tokio::test]
async fn the_first_upload_of_a_fresh_node_makes_its_images_dir() {
    let images = Images::new();
    let fresh = images.dir.join("not-made-yet");
    let app = {
        let fresh = fresh.clone();
        spawn_app_with(move |s| s.images_dir = Some(fresh)).await
    };
    let bytes = fake_iso();
    let path = format!(
        "/api/v1/images/first/upload?kind=iso&sha256={}",
        sha256(&bytes)
    );
    let (status, body) = upload(&app, &path, bytes).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["status"], "ready", "{body}");
    let installed = std::fs::read_dir(fresh.join("first"))
        .expect("the image's dir")
        .count();
    assert_eq!(installed, 1, "one file in the image's dir");
}
