//! Webhooks against a real server, database and HTTP receiver: deliveries come from the log by
//! position, signed, in order per VM, only of the owner's VMs, retried past failures and slow
//! answers, and resumed after the server is killed while the receiver is away.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use voidvm::webhooks::signature::verify;

use crate::helpers::{eventually, spawn_app, spawn_app_with, spawn_server, Env, TestApp};
use crate::receiver::{Answer, Received, Receiver};

const SECRET: &str = "test-webhook-secret-0001";

/// Waits as long as a delivery may take with the test settings below.
const WAIT: u64 = 60;

fn fast_retries(settings: &mut voidvm::config::Settings) {
    settings.webhooks.backoff_base_ms = 100;
    settings.webhooks.backoff_max_ms = 400;
    settings.webhooks.timeout_ms = 700;
    settings.webhooks.max_attempts = 6;
}

async fn add_webhook(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, created) = app
        .call_as(token, Method::POST, "/api/v1/webhooks", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["data"].clone()
}

async fn user_token(app: &TestApp, username: &str) -> (String, String) {
    let body = json!({"username": username, "password": "password1", "role": "user"});
    let (status, created) = app.call(Method::POST, "/api/v1/users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("an id").to_string();
    (id, app.login_token(username, "password1").await)
}

async fn new_vm(app: &TestApp, token: &str, name: &str) -> String {
    let body = json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"});
    let (status, created) = app
        .call_as(token, Method::POST, "/api/v1/vms", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["data"]["id"].as_str().expect("an id").to_string()
}

/// Fails unless the request is signed with `secret` over its body and timestamp, the timestamp
/// is fresh, the headers agree with the body, and the body matches its schema.
fn assert_signed(r: &Received, secret: &str) {
    let timestamp: i64 = r
        .header("x-voidvm-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("a timestamp header");
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300);
    let signature = r.header("x-voidvm-signature").expect("a signature header");
    assert!(
        verify(secret, timestamp, &r.body, signature),
        "the signature does not verify"
    );
    assert!(!verify(
        "another-secret-entirely",
        timestamp,
        &r.body,
        signature
    ));
    let body = r.json();
    crate::ws_client::assert_schema("webhook-delivery", &body);
    assert_eq!(
        r.header("x-voidvm-event"),
        body["event"]["type"].as_str(),
        "{body}"
    );
    assert_eq!(
        r.header("x-voidvm-position"),
        Some(body["event"]["position"].to_string().as_str())
    );
    assert_eq!(
        r.header("x-voidvm-delivery"),
        Some(body["id"].to_string().as_str())
    );
}

/// Each VM's positions, in the order they were accepted; fails if any VM's go backwards.
fn accepted_in_order(received: &[Received]) -> BTreeMap<String, Vec<i64>> {
    let mut per_vm: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in received.iter().filter(|r| r.accepted) {
        let body = r.json();
        let vm = body["event"]["vmId"].as_str().expect("a VM").to_string();
        let position = body["event"]["position"].as_i64().expect("a position");
        let seen = per_vm.entry(vm.clone()).or_default();
        if seen.last() == Some(&position) {
            continue; // A repeat (at least once).
        }
        assert!(
            seen.last().is_none_or(|last| *last < position),
            "VM {vm}'s events arrived out of order: {seen:?} then {position}"
        );
        seen.push(position);
    }
    per_vm
}

/// The positions of `vm`'s events in the log.
async fn log_of(app: &TestApp, vm: &str) -> Vec<i64> {
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/api/v1/vms/{vm}/events?limit=100"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["position"].as_i64().expect("a position"))
        .collect()
}

#[actix_rt::test]
async fn deliveries_are_signed_in_order_per_vm_and_only_of_the_owners_vms() {
    let app = spawn_app().await;
    let alice_hook = Receiver::start().await;
    let admin_hook = Receiver::start().await;
    let (_alice, alice) = user_token(&app, "alice").await;
    let mine = add_webhook(
        &app,
        &alice,
        json!({"url": alice_hook.url("/hook"), "events": ["*"], "secret": SECRET}),
    )
    .await;
    assert_eq!(mine["secret"], SECRET, "the answer shows the secret once");
    let admins = add_webhook(
        &app,
        &app.token,
        json!({"url": admin_hook.url("/"), "events": ["VmCreated"]}),
    )
    .await;
    let admin_secret = admins["secret"]
        .as_str()
        .expect("a made secret")
        .to_string();
    assert!(admin_secret.starts_with("whsec_"));

    let a1 = new_vm(&app, &alice, "a1").await;
    let a2 = new_vm(&app, &alice, "a2").await;
    let other = new_vm(&app, &app.token, "other").await;
    for vm in [&a1, &a2, &other] {
        app.await_status(vm, "stopped", WAIT).await;
    }
    let expected: BTreeSet<i64> = [log_of(&app, &a1).await, log_of(&app, &a2).await]
        .concat()
        .into_iter()
        .collect();
    eventually(WAIT, "alice's deliveries", || {
        accepted_in_order(&alice_hook.received())
            .values()
            .flatten()
            .count()
            >= expected.len()
    })
    .await;
    eventually(WAIT, "the admin's deliveries", || {
        admin_hook.accepted().len() >= 3
    })
    .await;

    // Alice's webhook got every event of her VMs, and none of the admin's.
    let alice_got = alice_hook.received();
    for r in &alice_got {
        assert_signed(r, SECRET);
    }
    let per_vm = accepted_in_order(&alice_got);
    assert_eq!(per_vm.keys().collect::<Vec<_>>(), {
        let mut v = vec![&a1, &a2];
        v.sort();
        v
    });
    let got: BTreeSet<i64> = per_vm.values().flatten().copied().collect();
    assert_eq!(got, expected);
    // The admin's webhook sees every owner's VMs, but only the type it chose.
    for r in admin_hook.received() {
        assert_signed(&r, &admin_secret);
        assert_eq!(r.json()["event"]["type"], "VmCreated");
    }
    let admin_vms: BTreeSet<String> = admin_hook
        .received()
        .iter()
        .map(|r| {
            r.json()["event"]["vmId"]
                .as_str()
                .expect("a VM")
                .to_string()
        })
        .collect();
    assert_eq!(admin_vms, [a1, a2, other].into_iter().collect());

    // The deliveries say so, and the secret is shown nowhere else.
    let id = mine["id"].as_str().expect("an id");
    let (status, page) = app
        .call_as(
            &alice,
            Method::GET,
            &format!("/api/v1/webhooks/{id}/deliveries?status=delivered&limit=100"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"]["pagination"]["total"], expected.len());
    for d in page["data"]["items"].as_array().expect("items") {
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["responseStatus"], 204, "{d}");
    }
    let (_, one) = app
        .call_as(&alice, Method::GET, &format!("/api/v1/webhooks/{id}"), None)
        .await;
    assert!(one["data"].get("secret").is_none(), "{one}");
    assert_eq!(one["data"]["deliveries"]["delivered"], expected.len());
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let in_log: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'
                                        OR metadata::text LIKE '%' || $1 || '%'",
    )
    .bind(SECRET)
    .fetch_one(&pool)
    .await
    .expect("a count");
    assert_eq!(in_log, 0, "the secret is in the event log");
    let (_, log) = app
        .call(Method::GET, "/api/v1/events?streamType=webhook", None)
        .await;
    let types: Vec<&str> = log["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["WebhookCreated", "WebhookCreated"]);

    // Each sees their own; another's webhook is not found.
    let (_, listed) = app
        .call_as(&alice, Method::GET, "/api/v1/webhooks", None)
        .await;
    assert_eq!(listed["data"].as_array().expect("a list").len(), 1);
    let (_, listed) = app.call(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(listed["data"].as_array().expect("a list").len(), 2);
    let theirs = admins["id"].as_str().expect("an id");
    for (method, path) in [
        (Method::GET, format!("/api/v1/webhooks/{theirs}")),
        (Method::DELETE, format!("/api/v1/webhooks/{theirs}")),
        (Method::GET, format!("/api/v1/webhooks/{theirs}/deliveries")),
    ] {
        let (status, body) = app.call_as(&alice, method, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "WEBHOOK_NOT_FOUND");
    }
    drop(pool);
}

#[actix_rt::test]
async fn failures_and_slow_answers_are_retried_and_a_vm_waits_for_its_earlier_event() {
    let app = spawn_app_with(fast_retries).await;
    let receiver = Receiver::start().await;
    // Three failures, then an answer slower than the server waits, then acceptance.
    receiver.script(&[
        Answer::Fail(500),
        Answer::Fail(503),
        Answer::Fail(404),
        Answer::Slow(Duration::from_millis(1500)),
    ]);
    let hook = add_webhook(
        &app,
        &app.token,
        json!({"url": receiver.url("/in"), "events": ["*"], "secret": SECRET}),
    )
    .await;
    let vm = new_vm(&app, &app.token, "retried").await;
    app.await_status(&vm, "stopped", WAIT).await;
    let log = log_of(&app, &vm).await;
    eventually(WAIT, "every event delivered", || {
        accepted_in_order(&receiver.received())
            .get(&vm)
            .is_some_and(|p| *p == log)
    })
    .await;
    // Nothing of the VM went out before its first event was accepted.
    let received = receiver.received();
    let first_accepted = received
        .iter()
        .position(|r| r.accepted)
        .expect("an accepted delivery");
    assert!(received[..first_accepted]
        .iter()
        .all(|r| r.json()["event"]["position"] == log[0]));
    assert_eq!(first_accepted, 4, "3 failures and 1 timeout first");
    let attempts: Vec<i64> = received[..=first_accepted]
        .iter()
        .map(|r| r.json()["attempt"].as_i64().expect("an attempt"))
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    let id = hook["id"].as_str().expect("an id");
    let (_, page) = app
        .call(
            Method::GET,
            &format!("/api/v1/webhooks/{id}/deliveries?limit=100"),
            None,
        )
        .await;
    let first = page["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|d| d["position"] == log[0])
        .expect("the first event's delivery")
        .clone();
    assert_eq!(first["status"], "delivered", "{first}");
    assert_eq!(first["attempts"], 5, "{first}");

    // A receiver that never accepts: each delivery is given up after max_attempts, and the
    // VM's next one goes on.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let broken = Receiver::start().await;
    broken.script(&[Answer::Fail(500); 64]);
    let hook = add_webhook(
        &app,
        &app.token,
        json!({"url": broken.url("/"), "events": ["VmReconfigured"], "secret": SECRET}),
    )
    .await;
    let id = hook["id"].as_str().expect("an id");
    for memory in [256, 384] {
        let (status, body) = app.patch_vm(&vm, json!({ "memory": memory })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut failed = Value::Null;
    for _ in 0..(WAIT * 10) {
        let (_, page) = app
            .call(
                Method::GET,
                &format!("/api/v1/webhooks/{id}/deliveries?status=failed"),
                None,
            )
            .await;
        if page["data"]["pagination"]["total"] == 2 {
            failed = page["data"]["items"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = failed.as_array().expect("two failed deliveries");
    for d in failed {
        assert_eq!(d["attempts"], 6, "{d}");
        assert_eq!(d["responseStatus"], 500, "{d}");
        assert!(d["error"].as_str().expect("an error").contains("500"));
    }
    assert_eq!(broken.received().len(), 12);
}

#[actix_rt::test]
async fn deliveries_resume_after_a_crash_while_the_receiver_was_away() {
    let mut env = Env::new().await;
    env.extra_vars = vec![
        ("VOIDVM_WEBHOOKS__BACKOFF_BASE_MS".into(), "100".into()),
        ("VOIDVM_WEBHOOKS__BACKOFF_MAX_MS".into(), "300".into()),
        ("VOIDVM_WEBHOOKS__MAX_ATTEMPTS".into(), "1000".into()),
    ];
    let mut app = spawn_server(env).await;
    let port = Receiver::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let hook = add_webhook(
        &app,
        &app.token.clone(),
        json!({"url": url, "events": ["*"], "secret": SECRET}),
    )
    .await;
    let id = hook["id"].as_str().expect("an id").to_string();
    let before: Vec<String> = vec![
        new_vm(&app, &app.token.clone(), "before-1").await,
        new_vm(&app, &app.token.clone(), "before-2").await,
    ];
    // The receiver is away: attempts fail and are recorded.
    let mut refused = false;
    for _ in 0..(WAIT * 10) {
        let (_, page) = app
            .call(
                Method::GET,
                &format!("/api/v1/webhooks/{id}/deliveries"),
                None,
            )
            .await;
        refused = page["data"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|d| d["status"] == "pending" && d["attempts"].as_i64() > Some(0));
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "no failed attempt was recorded");
    assert!(pending_gauge(&app).await >= 1.0);

    app.kill_server();
    app.restart_server().await;
    let after = new_vm(&app, &app.token.clone(), "after").await;
    let receiver = Receiver::start_on(port).await;
    let mut vms = before.clone();
    vms.push(after);
    for vm in &vms {
        app.await_status(vm, "stopped", WAIT).await;
    }
    let mut expected = BTreeMap::new();
    for vm in &vms {
        expected.insert(vm.clone(), log_of(&app, vm).await);
    }
    eventually(WAIT, "every event of every VM delivered", || {
        accepted_in_order(&receiver.received()) == expected
    })
    .await;
    for r in receiver.received() {
        assert_signed(&r, SECRET);
    }
    // Recorded as delivered once each answer is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(WAIT);
    while pending_gauge(&app).await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries stay pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `voidvm_webhook_deliveries_pending` from `/metrics`.
async fn pending_gauge(app: &TestApp) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("a scrape")
        .text()
        .await
        .expect("a body");
    text.lines()
        .find_map(|l| l.strip_prefix("voidvm_webhook_deliveries_pending "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pending gauge in {text}"))
}

#[actix_rt::test]
async fn bad_webhooks_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let ok = "http://127.0.0.1:9/hook";
    let cases = [
        (json!({"url": "ftp://example.com/", "events": ["*"]}), "url"),
        (
            json!({"url": "http://u:p@example.com/", "events": ["*"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (json!({"url": ok, "events": []}), "events"),
        (json!({"url": ok, "events": ["VmFlew"]}), "events"),
        (
            json!({"url": ok, "events": ["*"], "secret": "short"}),
            "secret",
        ),
        (json!({"url": ok, "events": ["*"], "extra": 1}), "extra"),
        (json!({"events": ["*"]}), "url"),
        (json!({"url": ok, "events": "VmStarted"}), "events"),
    ];
    for (body, field) in cases {
        let (status, answer) = app
            .call(Method::POST, "/api/v1/webhooks", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "VALIDATION_ERROR", "{answer}");
        assert!(
            answer["error"]["details"]
                .as_str()
                .is_some_and(|d| d.contains(field)),
            "{body} → {answer} does not name {field}"
        );
    }
    let hook = add_webhook(&app, &app.token, json!({"url": ok, "events": ["*"]})).await;
    let id = hook["id"].as_str().expect("an id");
    let (status, answer) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(json!({"active": true})),
        )
        .await;
    // Already active: nothing to change, which is not a bad request (tests/api/unchanged.rs).
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["message"], "Nothing to change.", "{answer}");
    let (status, answer) = app
        .call(
            Method::GET,
            &format!("/api/v1/webhooks/{id}/deliveries?status=lost"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _) = app
        .call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = app
        .call(Method::GET, &format!("/api/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    // A deleted user's webhooks go with them, each recorded as deleted.
    let (bob, token) = user_token(&app, "bob").await;
    let theirs = add_webhook(&app, &token, json!({"url": ok, "events": ["*"]})).await;
    let (status, answer) = app
        .call(Method::DELETE, &format!("/api/v1/users/{bob}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, listed) = app.call(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(listed["data"], json!([]));
    let (_, log) = app
        .call(Method::GET, "/api/v1/events?streamType=webhook", None)
        .await;
    let of_theirs: Vec<&str> = log["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["streamId"] == theirs["id"])
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(of_theirs, ["WebhookCreated", "WebhookDeleted"]);
}

#[actix_rt::test]
async fn private_receivers_are_refused_unless_allowed() {
    let app = spawn_app_with(|s| s.webhooks.allow_private = false).await;
    for url in [
        "http://127.0.0.1:5432/",
        "http://localhost:8080/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let (status, answer) = app
            .call(
                Method::POST,
                "/api/v1/webhooks",
                Some(json!({"url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url} → {answer}");
        assert!(
            answer["error"]["details"]
                .as_str()
                .is_some_and(|d| d.starts_with("url:") && d.contains("private")),
            "{answer}"
        );
    }
}
