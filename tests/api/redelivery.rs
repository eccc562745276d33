//! Sending a webhook delivery again by hand (`POST /webhooks/{id}/deliveries/{deliveryId}/redeliver`),
//! against a real server, database and HTTP receiver: a failed delivery goes out again with its
//! own id and a fresh set of attempts, so does a delivered one, one still pending is refused, and
//! each request is in the log under the webhook's stream.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app_with, TestApp};
use crate::receiver::{Answer, Receiver};

const SECRET: &str = "test-webhook-secret-0002";
const WAIT: u64 = 60;

fn two_quick_attempts(settings: &mut voidvm::config::Settings) {
    settings.webhooks.backoff_base_ms = 100;
    settings.webhooks.backoff_max_ms = 200;
    settings.webhooks.timeout_ms = 700;
    settings.webhooks.max_attempts = 2;
}

async fn redeliver(app: &TestApp, token: &str, hook: &str, delivery: &str) -> (StatusCode, Value) {
    app.call_as(
        token,
        Method::POST,
        &format!("/api/v1/webhooks/{hook}/deliveries/{delivery}/redeliver"),
        None,
    )
    .await
}

/// The webhook's one delivery, once its outbox holds it.
async fn the_delivery(app: &TestApp, hook: &str) -> Value {
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/api/v1/webhooks/{hook}/deliveries"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["data"]["items"].as_array().expect("items");
    assert!(items.len() <= 1, "one delivery at most: {page}");
    items.first().cloned().unwrap_or(Value::Null)
}

/// The webhook's one delivery once it has `status`.
async fn delivery_becomes(app: &TestApp, hook: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(WAIT);
    loop {
        let delivery = the_delivery(app, hook).await;
        if delivery["status"] == status {
            return delivery;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery is not {status} after {WAIT} s: {delivery}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn set_active(app: &TestApp, hook: &str, active: bool) {
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/webhooks/{hook}"),
            Some(json!({ "active": active })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[actix_rt::test]
async fn a_delivery_is_sent_again_on_request_with_its_id_and_fresh_attempts() {
    let app = spawn_app_with(two_quick_attempts).await;
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Fail(500), Answer::Fail(502)]);
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": receiver.url("/in"), "events": ["VmCreated"], "secret": SECRET})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let hook = created["data"]["id"].as_str().expect("an id").to_string();
    let (status, vm) = app
        .call(
            Method::POST,
            "/api/v1/vms",
            Some(
                json!({"name": "redelivered", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{vm}");

    // Both attempts fail: the delivery is given up.
    let failed = delivery_becomes(&app, &hook, "failed").await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert_eq!(receiver.received().len(), 2);
    let id = failed["id"].as_i64().expect("a delivery id").to_string();

    // Sent again: pending at once, the same delivery, a fresh count; the receiver now accepts.
    let (status, answer) = redeliver(&app, &app.token, &hook, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let requeued = &answer["data"];
    assert_eq!(requeued["id"], failed["id"], "{answer}");
    assert_eq!(requeued["position"], failed["position"], "{answer}");
    assert_eq!(requeued["status"], "pending", "{answer}");
    assert_eq!(requeued["attempts"], 0, "{answer}");
    assert!(requeued["nextAttemptAt"].is_string(), "{answer}");
    eventually(WAIT, "the delivery accepted", || {
        receiver.accepted().len() == 1
    })
    .await;
    let sent = &receiver.accepted()[0];
    assert_eq!(sent.header("x-voidvm-delivery"), Some(id.as_str()));
    assert_eq!(sent.json()["id"], failed["id"]);
    assert_eq!(sent.json()["attempt"], 1);
    assert_eq!(sent.json()["event"]["position"], failed["position"]);
    let delivered = delivery_becomes(&app, &hook, "delivered").await;
    assert_eq!(delivered["attempts"], 1, "{delivered}");

    // One delivered can be sent again too. While the webhook is inactive nothing is sent, so
    // the delivery stays pending, and asking again is refused.
    set_active(&app, &hook, false).await;
    let (status, answer) = redeliver(&app, &app.token, &hook, &id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, answer) = redeliver(&app, &app.token, &hook, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "DELIVERY_PENDING", "{answer}");
    set_active(&app, &hook, true).await;
    eventually(WAIT, "the delivery accepted again", || {
        receiver.accepted().len() == 2
    })
    .await;
    assert_eq!(
        receiver.accepted()[1].header("x-voidvm-delivery"),
        Some(id.as_str())
    );

    // Each request is in the log, by whom, under the webhook's stream.
    let (status, log) = app
        .call(
            Method::GET,
            "/api/v1/events?streamType=webhook&type=WebhookDeliveryRequeued",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let items = log["data"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{log}");
    for e in items {
        assert_eq!(e["streamId"], hook.as_str(), "{e}");
        assert_eq!(e["data"]["deliveryId"], failed["id"], "{e}");
        assert_eq!(e["data"]["position"], failed["position"], "{e}");
        assert_eq!(e["actor"]["name"], "admin", "{e}");
    }
}

#[actix_rt::test]
async fn a_redelivery_names_what_is_wrong() {
    let app = spawn_app_with(two_quick_attempts).await;
    let receiver = Receiver::start().await;
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": receiver.url("/"), "events": ["*"], "secret": SECRET})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let hook = created["data"]["id"].as_str().expect("an id").to_string();

    for bad in ["abc", "0", "-1", "1.5", "99999999999999999999"] {
        let (status, body) = redeliver(&app, &app.token, &hook, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "deliveryId", "{bad}: {body}");
    }
    let (status, body) = redeliver(&app, &app.token, &hook, "424242").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "DELIVERY_NOT_FOUND", "{body}");
    let (status, body) = redeliver(&app, &app.token, "wh-none", "1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "WEBHOOK_NOT_FOUND", "{body}");

    // Another user's webhook is not found for them, whatever the delivery.
    let (status, user) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "mallory", "password": "password1", "role": "user"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let mallory = app.login_token("mallory", "password1").await;
    let (status, body) = redeliver(&app, &mallory, &hook, "1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "WEBHOOK_NOT_FOUND", "{body}");
    let (_, log) = app
        .call(
            Method::GET,
            "/api/v1/events?streamType=webhook&type=WebhookDeliveryRequeued",
            None,
        )
        .await;
    assert_eq!(log["data"]["items"], json!([]), "{log}");
}
