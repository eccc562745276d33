//! Users, roles, permissions, quotas, rate limits and the live configuration, through REST and
//! `/ws`, against a real server and database: each rule of issue 10 has its test here.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_second_node, TestApp};

/// Creates a user through the API (as the admin) and logs them in.
async fn user_with(app: &TestApp, username: &str, role: &str, extra: Value) -> (String, String) {
    let mut body = json!({"username": username, "password": "password1", "role": role});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let (status, created) = app.call(Method::POST, "/api/v1/users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["data"]["id"].as_str().expect("an id").to_string();
    (id, app.login_token(username, "password1").await)
}

/// A custom role with exactly `permissions` over everyone's VMs.
async fn role_with(app: &TestApp, id: &str, permissions: &[&str]) {
    let body = json!({"id": id, "name": id, "permissions": permissions, "scope": "all"});
    let (status, created) = app.call(Method::POST, "/api/v1/roles", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[actix_rt::test]
async fn an_admin_creates_lists_changes_and_deletes_users_and_the_log_keeps_no_secret() {
    let app = spawn_app().await;
    let (id, token) = user_with(&app, "alice", "user", json!({"email": "alice@example.com"})).await;
    let (status, me) = app
        .call_as(&token, Method::GET, "/api/v1/auth/me", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["data"]["role"], "user");
    assert_eq!(me["data"]["quota"]["vms"], 5, "the default quota: {me}");

    // The same name again, a bad role, a short password: refused, naming what.
    let again = json!({"username": "alice", "password": "password1", "role": "user"});
    let (status, body) = app.call(Method::POST, "/api/v1/users", Some(again)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "USERNAME_TAKEN"),
        "{body}"
    );
    let bad_role = json!({"username": "bob", "password": "password1", "role": "emperor"});
    let (status, body) = app
        .call(Method::POST, "/api/v1/users", Some(bad_role))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("role")),
        "{body}"
    );
    let short = json!({"username": "bob", "password": "short", "role": "user"});
    let (status, body) = app.call(Method::POST, "/api/v1/users", Some(short)).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("password")),
        "{body}"
    );

    let (status, page) = app
        .call(Method::GET, "/api/v1/users?role=user&status=active", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let names: Vec<&str> = page["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["alice"]);

    let change = json!({"email": null, "quota": {"vms": 2}, "password": "another-secret-9"});
    let (status, body) = app
        .call(Method::PUT, &format!("/api/v1/users/{id}"), Some(change))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["quota"]["vms"], 2);
    assert!(body["data"]["email"].is_null());
    // The new password ended the old token.
    let (status, _) = app
        .call_as(&token, Method::GET, "/api/v1/auth/me", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = app
        .call(Method::DELETE, &format!("/api/v1/users/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(Method::GET, &format!("/api/v1/users/{id}"), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "USER_NOT_FOUND")
    );

    // Every change is in the log, in order, with its actor; no password or hash is.
    let (status, log) = app
        .events("?type=UserCreated,UserChanged,UserPasswordChanged,UserDeleted")
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let items = log["data"]["items"].as_array().expect("items");
    let of_alice: Vec<&str> = items
        .iter()
        .filter(|e| e["streamId"] == id.as_str())
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        of_alice,
        [
            "UserCreated",
            "UserChanged",
            "UserPasswordChanged",
            "UserDeleted"
        ]
    );
    assert!(items.iter().all(
        |e| e["streamType"] == "user" && e["actor"]["name"] == "admin"
            || e["streamId"] != id.as_str()
    ));
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the database");
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE payload::text ILIKE '%password1%' OR payload::text ILIKE '%another-secret%'
            OR payload::text LIKE '%$argon2%' OR metadata::text LIKE '%$argon2%'",
    )
    .fetch_one(&pool)
    .await
    .expect("the query");
    assert_eq!(leaked, 0, "a password or a hash entered the log");
    let (status, logs) = app.logs("?limit=100").await;
    assert_eq!(status, StatusCode::OK);
    assert!(logs.to_string().contains("deleted user"), "{logs}");
}

#[actix_rt::test]
async fn a_disabled_user_is_refused_at_once_on_rest_and_on_open_websockets() {
    let app = spawn_app().await;
    let (id, token) = user_with(&app, "carol", "user", json!({})).await;
    let mut ws = app.ws(&token).await;
    let disable = json!({"status": "disabled"});
    let (status, body) = app
        .call(Method::PUT, &format!("/api/v1/users/{id}"), Some(disable))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.call_as(&token, Method::GET, "/api/v1/vms", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{body}"
    );
    let closed = loop {
        match ws.next_within(30).await {
            Some(Some(_frame)) => continue,
            Some(None) => break true,
            None => break false,
        }
    };
    assert!(closed, "the WebSocket of a disabled user stayed open");
    let (status, _) = app.login("carol", "password1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Enabled again: they log in; the token from before the disable stays refused.
    let enable = json!({"status": "active"});
    app.call(Method::PUT, &format!("/api/v1/users/{id}"), Some(enable))
        .await;
    let fresh = app.login_token("carol", "password1").await;
    let (status, body) = app.call_as(&fresh, Method::GET, "/api/v1/vms", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.call_as(&token, Method::GET, "/api/v1/vms", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[actix_rt::test]
async fn a_user_who_owns_vms_is_deleted_only_by_handing_them_to_another() {
    let app = spawn_app().await;
    let (dave, token) = user_with(&app, "dave", "user", json!({})).await;
    let (erin, _) = user_with(&app, "erin", "user", json!({})).await;
    let spec = json!({"name": "web", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"});
    let (status, vm) = app
        .call_as(&token, Method::POST, "/api/v1/vms", Some(spec))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{vm}");
    let vm_id = vm["data"]["id"].as_str().expect("an id").to_string();

    let (status, body) = app
        .call(Method::DELETE, &format!("/api/v1/users/{dave}"), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "USER_HAS_VMS"),
        "{body}"
    );
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{dave}?transferTo=nobody"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("transferTo")),
        "{body}"
    );
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{dave}?transferTo=erin"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (_, vm) = app.get_vm(&vm_id).await;
    assert_eq!(vm["data"]["owner"], "erin", "{vm}");
    let (_, events) = app.vm_events(&vm_id, "").await;
    assert!(events.to_string().contains("VmOwnerChanged"), "{events}");
    let (_, log) = app.events("?type=UserDeleted").await;
    assert_eq!(
        log["data"]["items"][0]["data"]["transferredTo"],
        erin.as_str(),
        "{log}"
    );
}

#[actix_rt::test]
async fn roles_list_the_catalog_and_a_viewer_reads_but_changes_nothing() {
    let app = spawn_app().await;
    let (status, perms) = app.call(Method::GET, "/api/v1/permissions", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = perms["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"vm:create") && ids.contains(&"config:update"),
        "{perms}"
    );
    assert!(perms["data"]
        .as_array()
        .expect("a list")
        .iter()
        .all(|p| p["category"].is_string() && p["name"].is_string()));
    let (_, roles) = app.call(Method::GET, "/api/v1/roles", None).await;
    let builtin: Vec<&str> = roles["data"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(builtin, ["admin", "user", "viewer"]);

    let vm = app
        .create_vm(json!({"name": "v1", "cpu": 1, "memory": 128, "disk": 1}))
        .await
        .1;
    let vm_id = vm["data"]["id"].as_str().expect("an id");
    let (_, viewer) = user_with(&app, "vic", "viewer", json!({})).await;
    let (status, got) = app
        .call_as(&viewer, Method::GET, &format!("/api/v1/vms/{vm_id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "a viewer reads every VM: {got}");
    let (status, body) = app
        .call_as(
            &viewer,
            Method::POST,
            &format!("/api/v1/vms/{vm_id}/start"),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("vm:start"),
        "{body}"
    );
    // Over /ws too.
    let mut ws = app.ws(&viewer).await;
    ws.send(
        "vm-control",
        json!({"vmId": vm_id, "action": "start"}),
        json!(7),
    )
    .await;
    let error = ws.next_of("error").await;
    assert_eq!(error["data"]["code"], "FORBIDDEN", "{error}");
    assert!(error.to_string().contains("vm:start"), "{error}");

    // Built-in roles keep their permissions; a role in use stays.
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/roles/viewer",
            Some(json!({"permissions": ["*"]})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "ROLE_BUILT_IN"),
        "{body}"
    );
    role_with(&app, "starter", &["vm:read", "vm:start"]).await;
    let (starter_id, _) = user_with(&app, "sam", "starter", json!({})).await;
    let (status, body) = app
        .call(Method::DELETE, "/api/v1/roles/starter", None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "ROLE_IN_USE"),
        "{body}"
    );
    app.call(Method::DELETE, &format!("/api/v1/users/{starter_id}"), None)
        .await;
    let (status, body) = app
        .call(Method::DELETE, "/api/v1/roles/starter", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bad = json!({"id": "odd", "name": "Odd", "permissions": ["vm:fly"]});
    let (status, body) = app.call(Method::POST, "/api/v1/roles", Some(bad)).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("permissions")),
        "{body}"
    );
}

/// Fills `{…}` path parameters with a placeholder.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') {
                "x-placeholder"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[actix_rt::test]
async fn every_operation_is_guarded_by_the_permission_the_document_declares() {
    let app = spawn_app().await;
    let doc: Value = serde_json::from_str(voidvm::api::openapi::document()).expect("the document");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("an item") {
            let public = op["security"].is_null();
            match op["x-permission"].as_str() {
                Some(permission) => {
                    operations.push((method.to_uppercase(), path.clone(), permission.to_string()))
                }
                None => assert!(
                    public
                        || matches!(
                            path.as_str(),
                            "/api/v1/auth/me" | "/api/v1/auth/logout" | "/api/v1/auth/password"
                        ),
                    "{method} {path} needs a token but declares no x-permission"
                ),
            }
        }
    }
    assert!(operations.len() >= 30, "{operations:?}");
    let all: Vec<String> = voidvm::auth::Permission::ALL
        .iter()
        .map(|p| p.id().to_string())
        .collect();
    for (n, (method, path, permission)) in operations.iter().enumerate() {
        // Every permission but the declared one: refused, naming it.
        let others: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|p| p != permission)
            .collect();
        let role = format!("without-{n}");
        role_with(&app, &role, &others).await;
        let (_, token) = user_with(&app, &format!("walker{n}"), &role, json!({})).await;
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let url = concrete(path);
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let (status, answer) = app
            .call_as(&token, method.clone(), &url, body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} without {permission}: {answer}"
        );
        let details = answer["error"]["details"].as_str().unwrap_or_default();
        assert!(
            details.contains(permission.as_str()),
            "{method} {path}: {details}"
        );
        // Only the declared one: not refused for want of a permission.
        let role = format!("only-{n}");
        role_with(&app, &role, &[permission.as_str()]).await;
        let (_, token) = user_with(&app, &format!("holder{n}"), &role, json!({})).await;
        let (status, answer) = app.call_as(&token, method.clone(), &url, body).await;
        assert!(
            status != StatusCode::FORBIDDEN || code(&answer) != "FORBIDDEN",
            "{method} {path} with only {permission}: {answer}"
        );
    }
}

#[actix_rt::test]
async fn the_101st_request_in_a_minute_is_refused_with_the_headers_and_the_budget_comes_back() {
    let app = spawn_app().await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/config",
            Some(json!({"limits": {"requestsPerMinute": 100}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, token) = user_with(&app, "rita", "user", json!({})).await;
    let get = || async {
        app.client
            .get(app.url("/api/v1/vms"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("a request")
    };
    let header = |r: &reqwest::Response, name: &str| -> u64 {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    // The login spent none of the user's budget (it counts against the address).
    for i in 0..100u64 {
        let r = get().await;
        assert_eq!(r.status(), StatusCode::OK, "request {}", i + 1);
        assert_eq!(header(&r, "x-ratelimit-limit"), 100);
        assert_eq!(header(&r, "x-ratelimit-remaining"), 99 - i);
        assert!(header(&r, "x-ratelimit-reset") <= 60);
    }
    let refused = get().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = header(&refused, "retry-after");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), 0);
    let body: Value = refused.json().await.expect("an envelope");
    assert_eq!(code(&body), "RATE_LIMITED");
    // Another user is not held up; the admin's budget is their own.
    let (status, _) = app.call(Method::GET, "/api/v1/vms", None).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        get().await.status(),
        StatusCode::OK,
        "the budget did not come back"
    );
}

#[actix_rt::test]
async fn failed_logins_lock_the_name_and_the_address_for_a_while() {
    let app = spawn_app().await;
    let limits = json!({"limits": {"loginFailures": 3, "loginLockoutSeconds": 5}});
    let (status, body) = app.call(Method::PUT, "/api/v1/config", Some(limits)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    user_with(&app, "tom", "user", json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            app.login("tom", "wrong-guess").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked: even the right password, and any name from this address.
    let (status, body) = app.login("tom", "password1").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
        "{body}"
    );
    assert_eq!(
        app.login("admin", "admin123").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(
        body["error"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("failed logins")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let (status, body) = app.login("tom", "password1").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A token is no way around it: wrong current passwords count the same, then even the right
    // one is refused until the period passed.
    let token = body["data"]["token"].as_str().expect("a token").to_string();
    let change =
        |current: &str| json!({"currentPassword": current, "newPassword": "a-new-password-1"});
    for _ in 0..3 {
        let (status, body) = app
            .call_as(
                &token,
                Method::POST,
                "/api/v1/auth/password",
                Some(change("guess")),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], "currentPassword", "{body}");
    }
    let (status, body) = app
        .call_as(
            &token,
            Method::POST,
            "/api/v1/auth/password",
            Some(change("password1")),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let (status, body) = app
        .call_as(
            &token,
            Method::POST,
            "/api/v1/auth/password",
            Some(change("password1")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[actix_rt::test]
async fn twenty_concurrent_creates_never_pass_the_quota() {
    let app = spawn_app().await;
    let (_, token) = user_with(&app, "quinn", "user", json!({"quota": {"vms": 3}})).await;
    let creates = (0..20).map(|i| {
        let spec = json!({"name": format!("q{i}"), "cpu": 1, "memory": 128, "disk": 1});
        let token = token.clone();
        let app = &app;
        async move {
            app.call_as(&token, Method::POST, "/api/v1/vms", Some(spec))
                .await
        }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 3, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(
            (*status, code(body)),
            (StatusCode::FORBIDDEN, "QUOTA_EXCEEDED"),
            "{body}"
        );
        assert!(
            body["error"]["details"]
                .as_str()
                .unwrap_or_default()
                .contains("vms"),
            "{body}"
        );
    }
    let (_, me) = app
        .call_as(&token, Method::GET, "/api/v1/auth/me", None)
        .await;
    assert_eq!(me["data"]["usage"]["vms"], 3, "{me}");
    assert_eq!(me["data"]["quota"]["vms"], 3, "{me}");
    // vCPUs: the default quota is 16; 3 already used.
    let big = json!({"name": "big", "cpu": 14, "memory": 128, "disk": 1});
    app.call(
        Method::PUT,
        "/api/v1/config",
        Some(json!({"system": {"maxVmsPerUser": 10}})),
    )
    .await;
    let (_, me) = app
        .call_as(&token, Method::GET, "/api/v1/auth/me", None)
        .await;
    assert_eq!(
        me["data"]["quota"]["vms"], 3,
        "the user's own quota stays over the default: {me}"
    );
    let (_, other) = user_with(&app, "uma", "user", json!({})).await;
    for i in 0..2 {
        let spec = json!({"name": format!("u{i}"), "cpu": 8, "memory": 128, "disk": 1});
        assert_eq!(
            app.call_as(&other, Method::POST, "/api/v1/vms", Some(spec))
                .await
                .0,
            StatusCode::CREATED
        );
    }
    let (status, body) = app
        .call_as(&other, Method::POST, "/api/v1/vms", Some(big))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "QUOTA_EXCEEDED"),
        "{body}"
    );
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("vcpus"),
        "{body}"
    );
}

#[actix_rt::test]
async fn a_config_change_takes_effect_on_another_node_without_a_restart() {
    let app = spawn_app().await;
    let other = spawn_second_node(&app).await;
    let (status, config) = app.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["data"]["system"]["maxVmsPerUser"], 5);
    assert!(config["data"]["restartRequired"]
        .to_string()
        .contains("network.listen"));
    // A field that needs a restart, an unknown one, a bad value: refused, naming it.
    for (body, field) in [
        (
            json!({"network": {"listen": "0.0.0.0:1"}}),
            "network.listen",
        ),
        (json!({"system": {"colour": 1}}), "system.colour"),
        (
            json!({"limits": {"requestsPerMinute": 0}}),
            "limits.requestsPerMinute",
        ),
    ] {
        let (status, answer) = app.call(Method::PUT, "/api/v1/config", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let named = answer["error"]["field"].as_str().unwrap_or_default();
        assert!(
            field.ends_with(named) || named == field,
            "{field}: {answer}"
        );
    }
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/config",
            Some(json!({"system": {"maxVmsPerUser": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, token) = user_with(&app, "nora", "user", json!({})).await;
    let client = reqwest::Client::new();
    let mut seen = false;
    for _ in 0..150 {
        let got: Value = client
            .get(format!("{other}/api/v1/config"))
            .bearer_auth(&app.token)
            .send()
            .await
            .expect("the other node")
            .json()
            .await
            .expect("JSON");
        if got["data"]["system"]["maxVmsPerUser"] == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the other node did not take the change");
    let create = |name: &str| {
        client
            .post(format!("{other}/api/v1/vms"))
            .bearer_auth(&token)
            .json(&json!({"name": name, "cpu": 1, "memory": 128, "disk": 1}))
            .send()
    };
    assert_eq!(
        create("n1").await.expect("a create").status(),
        StatusCode::CREATED
    );
    let second = create("n2").await.expect("a create");
    assert_eq!(second.status(), StatusCode::FORBIDDEN);
    let (_, log) = app.events("?type=ConfigChanged").await;
    assert_eq!(
        log["data"]["items"].as_array().map(Vec::len),
        Some(1),
        "{log}"
    );
}

#[actix_rt::test]
async fn a_limited_user_cannot_raise_their_own_quota_or_request_rate() {
    let app = spawn_app().await;
    role_with(&app, "usermgr", &["user:read", "user:update"]).await;
    let limits = json!({"quota": {"vms": 1}, "rateLimit": 50});
    let (id, token) = user_with(&app, "ursula", "usermgr", limits).await;
    let (_, me) = app.me().await;
    let admin_id = me["data"]["id"]
        .as_str()
        .expect("the admin's id")
        .to_string();
    for (who, token, change) in [
        (&id, &token, json!({"rateLimit": 100_000})),
        (&id, &token, json!({"quota": {"vms": 100}})),
    ] {
        let path = format!("/api/v1/users/{who}");
        let (status, body) = app
            .call_as(token, Method::PUT, &path, Some(change.clone()))
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::CONFLICT, "CANNOT_CHANGE_SELF"),
            "{change}: {body}"
        );
    }
    let (_, ursula) = app
        .call(Method::GET, &format!("/api/v1/users/{id}"), None)
        .await;
    assert_eq!(ursula["data"]["rateLimit"], 50, "{ursula}");
    assert_eq!(ursula["data"]["quota"]["vms"], 1, "{ursula}");
    // What is theirs stays theirs; and another administrator may change the rest.
    let (status, body) = app
        .call_as(
            &token,
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            Some(json!({"email": "ursula@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/v1/users/{id}"),
            Some(json!({"rateLimit": 200, "quota": {"vms": 2}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["rateLimit"], 200, "{body}");
    // A role that grants everything may set its holder's own rate, as it may set anyone's.
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/v1/users/{admin_id}"),
            Some(json!({"rateLimit": 100_000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[actix_rt::test]
async fn no_one_can_give_or_manage_more_than_their_own_role_holds() {
    let app = spawn_app().await;
    let managers = [
        "user:read",
        "user:create",
        "user:update",
        "user:delete",
        "role:read",
        "role:create",
        "role:update",
        "vm:read",
    ];
    role_with(&app, "helpdesk", &managers).await;
    let (_, token) = user_with(&app, "hank", "helpdesk", json!({})).await;
    let (_, me) = app
        .call_as(&token, Method::GET, "/api/v1/auth/me", None)
        .await;
    let admin_id = app.me().await.1["data"]["id"]
        .as_str()
        .expect("an id")
        .to_string();
    assert!(
        me["data"]["permissions"]
            .as_array()
            .is_some_and(|p| p.len() == managers.len()),
        "{me}"
    );

    let as_admin = json!({"username": "mallory", "password": "password1", "role": "admin"});
    let (status, body) = app
        .call_as(&token, Method::POST, "/api/v1/users", Some(as_admin))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{body}"
    );
    let takeover = json!({"password": "taken-over-1"});
    let (status, body) = app
        .call_as(
            &token,
            Method::PUT,
            &format!("/api/v1/users/{admin_id}"),
            Some(takeover),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .call_as(
            &token,
            Method::DELETE,
            &format!("/api/v1/users/{admin_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .call_as(
            &token,
            Method::PUT,
            "/api/v1/roles/helpdesk",
            Some(json!({"permissions": ["*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let wider =
        json!({"id": "wider", "name": "Wider", "permissions": ["vm:start"], "scope": "all"});
    let (status, body) = app
        .call_as(&token, Method::POST, "/api/v1/roles", Some(wider))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Within their own: allowed.
    let narrower =
        json!({"id": "reader", "name": "Reader", "permissions": ["vm:read"], "scope": "all"});
    let (status, body) = app
        .call_as(&token, Method::POST, "/api/v1/roles", Some(narrower))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let reader = json!({"username": "rhea", "password": "password1", "role": "reader"});
    let (status, body) = app
        .call_as(&token, Method::POST, "/api/v1/users", Some(reader))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The admin is untouched.
    app.login_token("admin", "admin123").await;
}
