//! A change that finds its resource already as asked: a PUT or PATCH of users, roles, webhooks
//! and the configuration that changes nothing answers 200 with the resource as it is and records
//! nothing, as `PATCH /vms/{id}` does, so a client that puts back what it read, or retries, is
//! not told it sent a bad request. A field left as it is does not stop the others from changing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// How many events the whole log holds.
async fn logged(app: &TestApp) -> usize {
    let (status, page) = app.events("?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"]["items"].as_array().map_or(0, Vec::len)
}

/// Sends `body` to `path` and expects a 200 that changed nothing: the log as it was, the answer
/// the resource as `before` shows it.
async fn unchanged(app: &TestApp, method: Method, path: &str, body: Value, before: &Value) {
    let events = logged(app).await;
    let (status, answer) = app.call(method.clone(), path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{method} {path} {body}: {answer}");
    assert_eq!(answer["message"], "Nothing to change.", "{answer}");
    assert_eq!(&answer["data"], before, "{method} {path} {body}");
    assert_eq!(
        logged(app).await,
        events,
        "{method} {path} {body} recorded an event"
    );
}

#[actix_rt::test]
async fn a_user_put_back_as_it_is_answers_the_user_and_records_nothing() {
    let app = spawn_app().await;
    let body = json!({"username": "ursula", "password": "password1", "role": "user",
                      "email": "ursula@example.com"});
    let (status, created) = app.call(Method::POST, "/api/v1/users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("an id").to_string();
    let path = format!("/api/v1/users/{id}");
    let (_, before) = app.call(Method::GET, &path, None).await;
    let before = before["data"].clone();

    unchanged(&app, Method::PUT, &path, json!({}), &before).await;
    let same = json!({"email": "ursula@example.com", "role": "user", "status": "active",
                      "rateLimit": before["rateLimit"]});
    unchanged(&app, Method::PUT, &path, same, &before).await;

    // An unchanged email beside a new password: the password changes.
    let both = json!({"email": "ursula@example.com", "password": "password2"});
    let (status, answer) = app.call(Method::PUT, &path, Some(both)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["message"], "User changed.", "{answer}");
    assert_eq!(
        app.login("ursula", "password1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.login("ursula", "password2").await.0, StatusCode::OK);

    // A user that does not exist is still not found.
    let (status, answer) = app
        .call(
            Method::PUT,
            "/api/v1/users/user-nobody00000",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[actix_rt::test]
async fn a_role_put_back_as_it_is_answers_the_role_and_records_nothing() {
    let app = spawn_app().await;
    let role = json!({"id": "auditor", "name": "Auditor", "description": "reads",
                      "permissions": ["vm:read"], "scope": "all"});
    let (status, created) = app.call(Method::POST, "/api/v1/roles", Some(role)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let before = created["data"].clone();
    let path = "/api/v1/roles/auditor";

    unchanged(&app, Method::PUT, path, json!({}), &before).await;
    let same = json!({"name": "Auditor", "description": "reads", "permissions": ["vm:read"],
                      "scope": "all"});
    unchanged(&app, Method::PUT, path, same, &before).await;

    let (status, answer) = app
        .call(Method::PUT, path, Some(json!({"description": "reads VMs"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["message"], "Role changed.", "{answer}");
    assert_eq!(answer["data"]["description"], "reads VMs", "{answer}");
    let (status, answer) = app
        .call(Method::PUT, "/api/v1/roles/nobody", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[actix_rt::test]
async fn a_webhook_patched_as_it_is_answers_the_webhook_and_records_nothing() {
    let app = spawn_app().await;
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["VmStarted"]});
    let (status, created) = app.call(Method::POST, "/api/v1/webhooks", Some(hook)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("an id").to_string();
    let path = format!("/api/v1/webhooks/{id}");
    let (_, before) = app.call(Method::GET, &path, None).await;
    let before = before["data"].clone();

    unchanged(&app, Method::PATCH, &path, json!({}), &before).await;
    let same = json!({"url": "http://127.0.0.1:9/hook", "events": ["VmStarted"],
                      "active": true});
    unchanged(&app, Method::PATCH, &path, same, &before).await;

    let (status, answer) = app
        .call(Method::PATCH, &path, Some(json!({"active": false})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["message"], "Webhook changed.", "{answer}");
}

#[actix_rt::test]
async fn the_config_put_back_as_it_was_read_answers_it_and_records_nothing() {
    let app = spawn_app().await;
    let (status, config) = app.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    let before = config["data"].clone();
    let sections: serde_json::Map<String, Value> = ["system", "limits", "network", "storage"]
        .iter()
        .map(|s| (s.to_string(), before[*s].clone()))
        .collect();

    unchanged(&app, Method::PUT, "/api/v1/config", json!({}), &before).await;
    // Sections given as null, which the document allows, are as if absent.
    unchanged(
        &app,
        Method::PUT,
        "/api/v1/config",
        json!({"system": null, "limits": null, "network": null, "storage": null}),
        &before,
    )
    .await;
    // Every section as read, fields that need a restart included: accepted. The live fields
    // are now set here rather than taken from the server's settings (a new version of the
    // config), with the same values; the same PUT again changes nothing.
    let (status, answer) = app
        .call(
            Method::PUT,
            "/api/v1/config",
            Some(Value::Object(sections.clone())),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let pinned = answer["data"].clone();
    for section in sections.keys() {
        assert_eq!(pinned[section], before[section], "{section}: {answer}");
    }
    unchanged(
        &app,
        Method::PUT,
        "/api/v1/config",
        Value::Object(sections.clone()),
        &pinned,
    )
    .await;

    // The same with a live field changed: it changes; a field that needs a restart, changed,
    // is still refused, naming it.
    let mut changed = sections.clone();
    changed["system"]["maxVmsPerUser"] = json!(7);
    let (status, answer) = app
        .call(Method::PUT, "/api/v1/config", Some(Value::Object(changed)))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["system"]["maxVmsPerUser"], 7, "{answer}");
    let mut moved = sections;
    moved["network"]["listen"] = json!("127.0.0.1:1");
    let (status, answer) = app
        .call(Method::PUT, "/api/v1/config", Some(Value::Object(moved)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "network.listen", "{answer}");
}
