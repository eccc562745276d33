//! Every error a client can trigger answers in the envelope, with the right status and code.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::spawn_app;

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["details"].is_string(), "{body}");
    assert!(body["timestamp"].is_string(), "{body}");
}

#[actix_rt::test]
async fn health_and_ready_answer_in_the_envelope_with_the_api_version() {
    let app = spawn_app().await;
    for path in ["/health", "/ready"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-api-version"], "1.0.0");
        assert!(resp.headers().contains_key("x-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["success"], true);
    }
}

#[actix_rt::test]
async fn a_client_request_id_is_echoed() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/health"))
        .header("X-Request-Id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
}

#[actix_rt::test]
async fn an_unknown_route_is_a_404_envelope() {
    let app = spawn_app().await;
    let (status, body) = app.call(Method::GET, "/api/v1/nothing-here", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[actix_rt::test]
async fn a_wrong_method_is_a_405_envelope() {
    let app = spawn_app().await;
    let (status, body) = app.call(Method::PUT, "/api/v1/vms", None).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
}

/// POSTs `text` as it is, as JSON; the answer's status and body.
async fn post_text(app: &crate::helpers::TestApp, path: &str, text: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.token)
        .header("Content-Type", "application/json")
        .body(text.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[actix_rt::test]
async fn malformed_json_is_a_400_envelope() {
    let app = spawn_app().await;
    let (status, body) = post_text(&app, "/api/v1/vms", "{\"name\": ").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "INVALID_JSON");
}

#[actix_rt::test]
async fn a_key_named_twice_is_invalid_json_and_nothing_is_created() {
    let app = spawn_app().await;
    let bodies = [
        r#"{"name":"first","name":"second","cpu":1,"memory":128,"disk":1,"os":"busybox"}"#,
        r#"{"name":"nested","cpu":1,"memory":128,"disk":1,"os":"busybox",
            "cloudInit":{"hostname":"a","hostname":"b"}}"#,
    ];
    for text in bodies {
        let (status, body) = post_text(&app, "/api/v1/vms", text).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "INVALID_JSON");
        let details = body["error"]["details"].as_str().unwrap_or_default();
        assert!(details.contains("appears twice"), "{body}");
    }
    let (_, list) = app.call(reqwest::Method::GET, "/api/v1/vms", None).await;
    assert_eq!(list["data"]["pagination"]["total"], 0, "{list}");

    // A WebSocket frame too.
    let mut ws = app.ws(&app.token).await;
    ws.send_text(r#"{"type":"ping","id":"a","id":"b"}"#).await;
    let error = ws.next_of("error").await;
    assert_eq!(error["data"]["code"], "INVALID_JSON", "{error}");
}

#[actix_rt::test]
async fn a_stop_body_of_null_is_no_body_as_the_document_says() {
    let app = spawn_app().await;
    let id = app.create_blank("null-stop").await;
    let (status, body) = post_text(&app, &format!("/api/v1/vms/{id}/stop"), "null").await;
    // Read as no body: the stopped VM's own refusal, not a complaint about the body.
    assert_error(status, &body, StatusCode::CONFLICT, "VM_NOT_RUNNING");
}

#[actix_rt::test]
async fn whole_numbers_written_with_a_fraction_are_integers_and_fractions_are_named() {
    let app = spawn_app().await;
    let (status, body) = app
        .create_vm(serde_json::json!({"name": "floaty", "cpu": 1.0, "memory": 128.0, "disk": 1.0}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .create_vm(serde_json::json!({"name": "half", "cpu": 1.5, "memory": 128, "disk": 1}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(body["error"]["field"], "cpu", "{body}");
}

#[actix_rt::test]
async fn a_wrong_content_type_is_a_415_envelope() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/api/v1/vms"))
        .bearer_auth(&app.token)
        .header("Content-Type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    );
}

#[actix_rt::test]
async fn a_body_too_large_is_a_413_envelope() {
    let app = spawn_app().await;
    let big = json!({ "name": "x".repeat(100_000), "cpu": 1, "memory": 128, "disk": 1 });
    let (status, body) = app.create_vm(big).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
}

#[actix_rt::test]
async fn each_invalid_field_is_named() {
    let app = spawn_app().await;
    let base = json!({ "name": "ok-1", "cpu": 2, "memory": 2048, "disk": 20, "os": "ubuntu20.04" });
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!("../etc/passwd")),
        ("name", json!("")),
        ("name", json!("x".repeat(64))),
        ("cpu", json!(0)),
        ("cpu", json!(1000)),
        ("cpu", json!("two")),
        ("cpu", json!(-1)),
        ("memory", json!(1)),
        ("disk", json!(0)),
        ("os", json!("windows95")),
    ];
    for (field, value) in cases {
        let mut body = base.clone();
        body[field] = value.clone();
        let (status, resp) = app.create_vm(body).await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(resp["error"]["field"], field, "{field}={value}: {resp}");
        assert!(
            resp["error"]["details"].as_str().unwrap().contains(field),
            "{resp}"
        );
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("cpu");
    let (status, resp) = app.create_vm(missing).await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(resp["error"]["field"], "cpu");
    // Nothing half-written: no VM exists after all those refusals.
    let (_, list) = app.list_vms("").await;
    assert_eq!(list["data"]["pagination"]["total"], 0, "{list}");
}

#[actix_rt::test]
async fn an_unknown_vm_is_the_contracts_404() {
    let app = spawn_app().await;
    let (status, body) = app.get_vm("vm-001").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "VM_NOT_FOUND");
    assert_eq!(
        body["error"]["details"],
        "Virtual machine with ID 'vm-001' was not found"
    );
    let (status, body) = app.vm_action("vm-001", "start", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "VM_NOT_FOUND");
    let (status, body) = app.get_job("job-nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "JOB_NOT_FOUND");
}

#[actix_rt::test]
async fn bad_query_parameters_are_named() {
    let app = spawn_app().await;
    let (status, body) = app.list_vms("?limit=1000").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(body["error"]["field"], "limit");
    let (status, body) = app.list_vms("?status=flying").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(body["error"]["field"], "status");
    let (status, body) = app.list_vms("?page=abc").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
}

/// Every list's `page` is served up to the `maximum` the document declares, and refused (named)
/// past it.
#[actix_rt::test]
async fn a_page_past_the_declared_maximum_is_refused_on_every_list() {
    let app = spawn_app().await;
    let doc: Value =
        serde_json::from_str(voidvm::api::openapi::document()).expect("the document is JSON");
    let mut lists = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let Some(parameters) = item["get"]["parameters"].as_array() else {
            continue;
        };
        let Some(page) = parameters.iter().find(|p| p["name"] == "page") else {
            continue;
        };
        if path.contains('{') {
            continue; // Lists under a resource need one; the top-level ones share the same check.
        }
        lists += 1;
        let max = page["schema"]["maximum"]
            .as_u64()
            .expect("a declared maximum");
        let (status, body) = app
            .call(Method::GET, &format!("{path}?page={max}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{path} page {max}: {body}");
        let (status, body) = app
            .call(Method::GET, &format!("{path}?page={}", max + 1), None)
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], "page", "{path}: {body}");
        // A value that is not a number of the right kind is named too.
        for (query, field) in [
            ("page=-1", "page"),
            ("page=1.5", "page"),
            ("page=4294967296", "page"),
            ("page=", "page"),
            ("limit=abc", "limit"),
        ] {
            let (status, body) = app
                .call(Method::GET, &format!("{path}?{query}"), None)
                .await;
            assert_error(status, &body, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
            assert_eq!(body["error"]["field"], field, "{path}?{query}: {body}");
        }
    }
    assert!(lists >= 4, "only {lists} lists have a page");
}

#[actix_rt::test]
async fn a_state_conflict_is_a_409_with_a_stable_code() {
    let app = spawn_app().await;
    let (status, body) = app
        .create_vm(json!({"name": "c1", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    let (status, body) = app.vm_action(&id, "pause", None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "VM_NOT_RUNNING");
    let (status, body) = app
        .create_vm(json!({"name": "c1", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "VM_NAME_TAKEN");
}
