//! Safe retries: `Idempotency-Key` (the first answer again, once committed; 422 for another
//! request) and `If-Match` against the `ETag` of `GET /vms/{id}` (412 when stale, nothing
//! written).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// An answer with the headers these tests look at.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    replayed: bool,
    etag: Option<String>,
    body: Value,
}

async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("the request failed");
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let etag = header("etag");
    let content_type = header("content-type").unwrap_or_default();
    let body: Value = resp.json().await.expect("a JSON answer");
    crate::openapi::check_answer(&method, path, status, &content_type, Some(&body));
    Answer {
        status,
        replayed,
        etag,
        body,
    }
}

fn guest(name: &str) -> Value {
    json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"})
}

async fn event_types(app: &TestApp, id: &str) -> Vec<String> {
    let (status, body) = app.vm_events(id, "?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["items"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn etag_of(app: &TestApp, id: &str) -> String {
    let got = send(
        app,
        &app.token,
        Method::GET,
        &format!("/api/v1/vms/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let etag = got.etag.expect("an ETag");
    assert_eq!(etag, format!("\"{}\"", got.body["data"]["version"]));
    etag
}

#[actix_rt::test]
async fn a_retry_gets_the_first_answer_and_commits_once() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "create-1")];
    let first = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("once")),
        &key,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(!first.replayed);
    let again = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("once")),
        &key,
    )
    .await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body);
    assert!(again.replayed);
    let (_, list) = app.list_vms("").await;
    assert_eq!(list["data"]["pagination"]["total"], 1, "{list}");
    let id = first.body["data"]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    app.wait_job(first.body["data"]["jobId"].as_str().expect("a job"))
        .await;

    // A lifecycle verb: one job, one event, the same jobId.
    let path = format!("/api/v1/vms/{id}/start");
    let key = [("Idempotency-Key", "start-1")];
    let first = send(&app, &app.token, Method::POST, &path, None, &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let again = send(&app, &app.token, Method::POST, &path, None, &key).await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert!(again.replayed);
    assert!(first.body["data"]["jobId"].is_string());
    let (_, jobs) = app.list_jobs(&format!("?vmId={id}")).await;
    assert_eq!(jobs["data"]["pagination"]["total"], 2, "{jobs}");
    let starts = event_types(&app, &id).await;
    assert_eq!(
        starts.iter().filter(|t| *t == "StartRequested").count(),
        1,
        "{starts:?}"
    );
    app.wait_job(first.body["data"]["jobId"].as_str().expect("a job"))
        .await;
}

#[actix_rt::test]
async fn the_same_key_with_another_request_is_refused() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "k")];
    let first = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("a")),
        &key,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let other = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("b")),
        &key,
    )
    .await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.body
    );
    assert_eq!(other.body["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    let id = first.body["data"]["id"].as_str().expect("an id");
    let elsewhere = send(
        &app,
        &app.token,
        Method::PATCH,
        &format!("/api/v1/vms/{id}"),
        Some(json!({"description": "x"})),
        &key,
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, list) = app.list_vms("").await;
    assert_eq!(list["data"]["pagination"]["total"], 1, "{list}");

    // A key that is not 1..=255 printable ASCII characters is a validation error naming it.
    let long = "k".repeat(256);
    let bad = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("c")),
        &[("Idempotency-Key", long.as_str())],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body["error"]["field"], "Idempotency-Key",
        "{}",
        bad.body
    );
}

#[actix_rt::test]
async fn concurrent_requests_with_one_key_commit_once() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "race-create")];
    let creates = (0..8).map(|_| {
        send(
            &app,
            &app.token,
            Method::POST,
            "/api/v1/vms",
            Some(guest("raced")),
            &key,
        )
    });
    let answers = futures::future::join_all(creates).await;
    assert_eq!(
        answers[0].status,
        StatusCode::CREATED,
        "{}",
        answers[0].body
    );
    for a in &answers {
        assert_eq!((a.status, &a.body), (answers[0].status, &answers[0].body));
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    let (_, list) = app.list_vms("").await;
    assert_eq!(list["data"]["pagination"]["total"], 1, "{list}");
    let id = answers[0].body["data"]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    app.wait_job(answers[0].body["data"]["jobId"].as_str().expect("a job"))
        .await;

    // The same on one VM's actor.
    let path = format!("/api/v1/vms/{id}");
    let key = [("Idempotency-Key", "race-patch")];
    let patches = (0..8).map(|_| {
        send(
            &app,
            &app.token,
            Method::PATCH,
            &path,
            Some(json!({"description": "once"})),
            &key,
        )
    });
    let answers = futures::future::join_all(patches).await;
    assert_eq!(answers[0].status, StatusCode::OK, "{}", answers[0].body);
    for a in &answers {
        assert_eq!((a.status, &a.body), (answers[0].status, &answers[0].body));
    }
    let types = event_types(&app, &id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "VmReconfigured").count(),
        1,
        "{types:?}"
    );
}

#[actix_rt::test]
async fn a_key_is_per_user() {
    let app = spawn_app().await;
    let other = app.create_user("keyholder").await;
    let key = [("Idempotency-Key", "shared")];
    let mine = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("mine")),
        &key,
    )
    .await;
    let theirs = send(
        &app,
        &other,
        Method::POST,
        "/api/v1/vms",
        Some(guest("theirs")),
        &key,
    )
    .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);
    assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.body);
    assert!(!theirs.replayed);
    assert_ne!(mine.body["data"]["id"], theirs.body["data"]["id"]);

    // Login records nothing: the header is accepted and ignored.
    let login = json!({"username": "keyholder", "password": "password1"});
    for _ in 0..2 {
        let answer = send(
            &app,
            "",
            Method::POST,
            "/api/v1/auth/login",
            Some(login.clone()),
            &key,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(!answer.replayed);
    }
}

#[actix_rt::test]
async fn if_match_guards_changes_by_version() {
    let app = spawn_app().await;
    let (status, created) = app.create_vm(guest("guarded")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("an id").to_string();
    app.wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;
    let path = format!("/api/v1/vms/{id}");
    let etag = etag_of(&app, &id).await;

    // A current ETag (among others) is accepted, and the ETag changes.
    let list = format!("\"999\", {etag}");
    let patched = send(
        &app,
        &app.token,
        Method::PATCH,
        &path,
        Some(json!({"description": "first"})),
        &[("If-Match", list.as_str())],
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let newer = etag_of(&app, &id).await;
    assert_ne!(newer, etag);

    // The old one is stale now: 412, and nothing is written.
    let before = event_types(&app, &id).await;
    let (_, jobs_before) = app.list_jobs(&format!("?vmId={id}")).await;
    for (method, verb_path, body) in [
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"description": "second"})),
        ),
        (Method::POST, format!("{path}/start"), None),
        (Method::DELETE, path.clone(), None),
    ] {
        let stale = send(
            &app,
            &app.token,
            method,
            &verb_path,
            body,
            &[("If-Match", etag.as_str())],
        )
        .await;
        assert_eq!(
            stale.status,
            StatusCode::PRECONDITION_FAILED,
            "{}",
            stale.body
        );
        assert_eq!(stale.body["error"]["code"], "PRECONDITION_FAILED");
    }
    assert_eq!(event_types(&app, &id).await, before);
    let (_, jobs_after) = app.list_jobs(&format!("?vmId={id}")).await;
    assert_eq!(
        jobs_after["data"]["pagination"]["total"],
        jobs_before["data"]["pagination"]["total"]
    );
    assert_eq!(etag_of(&app, &id).await, newer);

    // A weak tag never matches; a malformed one is a validation error naming the header.
    let weak = format!("W/{newer}");
    let answer = send(
        &app,
        &app.token,
        Method::PATCH,
        &path,
        Some(json!({"description": "w"})),
        &[("If-Match", weak.as_str())],
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        answer.body
    );
    let answer = send(
        &app,
        &app.token,
        Method::PATCH,
        &path,
        Some(json!({"description": "m"})),
        &[("If-Match", "7")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.body["error"]["field"], "If-Match");

    // `*` matches any version of a VM that exists.
    let star = send(
        &app,
        &app.token,
        Method::PATCH,
        &path,
        Some(json!({"description": "star"})),
        &[("If-Match", "*")],
    )
    .await;
    assert_eq!(star.status, StatusCode::OK, "{}", star.body);
}

#[actix_rt::test]
async fn vm_control_over_the_websocket_is_unaffected() {
    let app = spawn_app().await;
    let id = app.create_guest("ws-unaffected").await;
    let etag = etag_of(&app, &id).await;
    let mut ws = app.ws(&app.token).await;
    ws.send(
        "vm-control",
        json!({"vmId": id, "action": "start"}),
        json!("c1"),
    )
    .await;
    let answer = ws.next_of("vm-control-response").await;
    let job = app
        .wait_job(answer["data"]["jobId"].as_str().expect("a job id"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // The WebSocket's command moved the version like any other.
    assert_ne!(etag_of(&app, &id).await, etag);
    let stale = send(
        &app,
        &app.token,
        Method::POST,
        &format!("/api/v1/vms/{id}/stop"),
        Some(json!({"force": true})),
        &[("If-Match", etag.as_str())],
    )
    .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[actix_rt::test]
async fn a_key_is_forgotten_after_24_hours() {
    let app = spawn_app().await;
    let key = [("Idempotency-Key", "old")];
    let first = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("day-one")),
        &key,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let aged = sqlx::query(
        "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE key = 'old'",
    )
    .execute(&pool)
    .await
    .expect("the key aged");
    assert_eq!(aged.rows_affected(), 1);
    // Another request with the expired key is decided afresh, and takes the key again.
    let later = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("day-two")),
        &key,
    )
    .await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.body);
    assert!(!later.replayed);
    let again = send(
        &app,
        &app.token,
        Method::POST,
        "/api/v1/vms",
        Some(guest("day-two")),
        &key,
    )
    .await;
    assert!(again.replayed);
    assert_eq!(again.body, later.body);
    pool.close().await;
}
