//! `Idempotency-Key` on the commands that are not a VM's: users, roles, the configuration,
//! webhooks and images. A retry with the same key gets the first answer (the same generated
//! webhook secret, the same import job, a delete's answer even though the thing is gone) and
//! records nothing more; the same key with another request is 422.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::images::{app_with, kernel, sha256, FileServer, Images};

/// An answer: its status, whether it was a replay, and its body (null when it has none).
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Value,
}

async fn keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
    raw: Option<Vec<u8>>,
) -> Answer {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .bearer_auth(&app.token)
        .header("Idempotency-Key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    if let Some(raw) = raw {
        req = req
            .header("Content-Type", "application/octet-stream")
            .body(raw);
    }
    let resp = req.send().await.expect("the request failed");
    let status = resp.status();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.bytes().await.expect("a body");
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON answer")
    };
    let url_path = path.split('?').next().unwrap_or(path);
    crate::openapi::check_answer(
        &method,
        url_path,
        status,
        &content_type,
        (!bytes.is_empty()).then_some(&body),
    );
    Answer {
        status,
        replayed,
        body,
    }
}

/// Sends the request twice with one key: the second answer is the first, replayed.
async fn twice(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Answer {
    let key = uuid::Uuid::new_v4().to_string();
    let first = keyed(app, method.clone(), path, &key, body.clone(), None).await;
    assert!(first.status.is_success(), "{path}: {first:?}");
    assert!(!first.replayed, "{path}: {first:?}");
    let second = keyed(app, method.clone(), path, &key, body.clone(), None).await;
    assert!(
        second.replayed,
        "{path}: the retry was decided again: {second:?}"
    );
    assert_eq!(
        (second.status, &second.body),
        (first.status, &first.body),
        "{path}"
    );
    if method != Method::DELETE {
        let other = keyed(app, method, path, &key, Some(json!({"other": true})), None).await;
        assert_eq!(
            other.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {other:?}"
        );
        assert_eq!(
            other.body["error"]["code"], "IDEMPOTENCY_KEY_REUSED",
            "{path}"
        );
    }
    first
}

/// How many events of `type` the log holds for stream `id` of `stream_type`.
async fn recorded(app: &TestApp, stream_type: &str, id: &str, event_type: &str) -> usize {
    let (status, page) = app
        .events(&format!(
            "?streamType={stream_type}&type={event_type}&limit=100"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["streamId"] == id)
        .count()
}

#[tokio::test]
async fn account_and_webhook_commands_answer_a_retry_with_the_first_answer() {
    let images = Images::new();
    let app = app_with(&images).await;

    let user = twice(
        &app,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "kim", "password": "kim-password-1", "role": "user"})),
    )
    .await;
    let user_id = user.body["data"]["id"].as_str().expect("an id").to_string();
    assert_eq!(recorded(&app, "user", &user_id, "UserCreated").await, 1);
    twice(
        &app,
        Method::PUT,
        &format!("/api/v1/users/{user_id}"),
        Some(json!({"email": "kim@example.com"})),
    )
    .await;
    assert_eq!(recorded(&app, "user", &user_id, "UserChanged").await, 1);

    twice(
        &app,
        Method::POST,
        "/api/v1/roles",
        Some(json!({"id": "auditor", "name": "Auditor", "permissions": ["vm:read"]})),
    )
    .await;
    twice(
        &app,
        Method::PUT,
        "/api/v1/roles/auditor",
        Some(json!({"description": "reads VMs"})),
    )
    .await;
    let config = twice(
        &app,
        Method::PUT,
        "/api/v1/config",
        Some(json!({"system": {"maxVmsPerUser": 7}})),
    )
    .await;
    assert_eq!(recorded(&app, "config", "config", "ConfigChanged").await, 1);
    assert_eq!(config.body["data"]["system"]["maxVmsPerUser"], 7);

    // The secret is generated once: the retry shows the same one.
    let hook = twice(
        &app,
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({"url": "https://example.com/hook", "events": ["VmStarted"]})),
    )
    .await;
    let hook_id = hook.body["data"]["id"].as_str().expect("an id").to_string();
    assert!(hook.body["data"]["secret"].is_string(), "{hook:?}");
    twice(
        &app,
        Method::PATCH,
        &format!("/api/v1/webhooks/{hook_id}"),
        Some(json!({"active": false})),
    )
    .await;

    // Deletes: the retry gets the first answer, though the thing is gone; a new key gets 404.
    for path in [
        format!("/api/v1/webhooks/{hook_id}"),
        format!("/api/v1/users/{user_id}"),
        "/api/v1/roles/auditor".to_string(),
    ] {
        twice(&app, Method::DELETE, &path, None).await;
        let fresh = keyed(&app, Method::DELETE, &path, "another-key", None, None).await;
        assert_eq!(fresh.status, StatusCode::NOT_FOUND, "{path}: {fresh:?}");
    }
    assert_eq!(recorded(&app, "user", &user_id, "UserDeleted").await, 1);
}

#[tokio::test]
async fn image_commands_answer_a_retry_with_the_first_answer() {
    let images = Images::new();
    let app = app_with(&images).await;
    let bytes = kernel();
    let server = FileServer::start(HashMap::from([("vmlinuz".to_string(), bytes.clone())])).await;

    // An import: the retry names the same job, and only one import was requested.
    let import = twice(
        &app,
        Method::POST,
        "/api/v1/images",
        Some(json!({"name": "keyed-kernel", "url": server.url("/file/vmlinuz"), "kind": "kernel"})),
    )
    .await;
    let job_id = import.body["data"]["job"]["id"].as_str().expect("a job");
    assert_eq!(app.wait_job(job_id).await["status"], "succeeded");
    assert_eq!(
        recorded(&app, "image", "keyed-kernel", "ImageImportRequested").await,
        1
    );

    // An upload: the key covers the path and query (with the checksum), not the bytes.
    let path = format!(
        "/api/v1/images/keyed-upload/upload?kind=kernel&sha256={}",
        sha256(&bytes)
    );
    let first = keyed(
        &app,
        Method::PUT,
        &path,
        "upload-key",
        None,
        Some(bytes.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = keyed(
        &app,
        Method::PUT,
        &path,
        "upload-key",
        None,
        Some(bytes.clone()),
    )
    .await;
    assert_eq!(
        (again.status, again.replayed),
        (StatusCode::CREATED, true),
        "{again:?}"
    );
    assert_eq!(again.body, first.body);
    let other = keyed(
        &app,
        Method::PUT,
        "/api/v1/images/keyed-upload/upload?kind=iso",
        "upload-key",
        None,
        Some(bytes.clone()),
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{other:?}");

    // A delete answers 204 again, though the image is gone.
    for name in ["keyed-kernel", "keyed-upload"] {
        let path = format!("/api/v1/images/{name}");
        let deleted = twice(&app, Method::DELETE, &path, None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(recorded(&app, "image", name, "ImageDeleted").await, 1);
    }
}
