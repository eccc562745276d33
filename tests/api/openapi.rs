//! The OpenAPI document against the code. `schemas/openapi.json` is the document the code
//! generates and the server serves; and every answer any test gets through `TestApp` is checked
//! against the operation it came from ([`check_answer`]): an undocumented path, method or success
//! status, or a body that does not match its schema, fails the test that met it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{schema_errors, schema_validator, spawn_app, TestApp};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/openapi.json")
}

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(voidvm::api::openapi::document()).expect("the document is JSON")
    })
}

/// Whether `path` (no query) fits the template, and how many segments it had to match as
/// parameters (fewer is a closer fit).
fn fits(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = 0;
    for (t, p) in t.iter().zip(&p) {
        if t.starts_with('{') && t.ends_with('}') {
            if p.is_empty() {
                return None;
            }
            params += 1;
        } else if t != p {
            return None;
        }
    }
    Some(params)
}

fn template_of(path: &str) -> Option<&'static str> {
    let paths = document()["paths"].as_object().expect("paths");
    paths
        .keys()
        .filter_map(|t| fits(t, path).map(|n| (n, t.as_str())))
        .min()
        .map(|(_, t)| t)
}

/// The schema at `pointer` in the document.
fn validator(pointer: &str) -> Arc<jsonschema::Validator> {
    schema_validator(&format!("openapi.json#{pointer}"), || {
        let doc = document();
        let schema = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("the document has nothing at {pointer}"));
        // The components ride along so that `#/components/schemas/...` references resolve.
        json!({ "components": doc["components"], "allOf": [schema] })
    })
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn assert_matches(pointer: &str, body: &Value, what: &str) {
    let errors = schema_errors(&validator(pointer), body);
    assert!(
        errors.is_empty(),
        "{what} does not match the OpenAPI document ({pointer}):\n  {}\nbody: {body}",
        errors.join("\n  ")
    );
}

const ERROR_ENVELOPE: &str = "/components/schemas/ErrorEnvelope";

/// Checks one answer against the document. `body` is `None` when the answer was not JSON.
pub fn check_answer(
    method: &Method,
    url_path: &str,
    status: StatusCode,
    content_type: &str,
    body: Option<&Value>,
) {
    let path = url_path.split('?').next().unwrap_or(url_path);
    let what = format!("{method} {path} → {}", status.as_u16());
    let Some(template) = template_of(path) else {
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{what}: the path is not in the OpenAPI document"
        );
        assert_matches(ERROR_ENVELOPE, body.expect("a JSON error"), &what);
        return;
    };
    let verb = method.as_str().to_lowercase();
    let operation = format!("/paths/{}/{verb}", escape(template));
    if document().pointer(&operation).is_none() {
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{what}: the method is not in the OpenAPI document for {template}"
        );
        assert_matches(ERROR_ENVELOPE, body.expect("a JSON error"), &what);
        return;
    }
    let documented = format!("{operation}/responses/{}", status.as_u16());
    let response = if document().pointer(&documented).is_some() {
        documented
    } else {
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{what}: the status is not in the OpenAPI document"
        );
        format!("{operation}/responses/default")
    };
    let media = content_type.split(';').next().unwrap_or("").trim();
    let content = format!("{response}/content");
    let Some(types) = document().pointer(&content).and_then(Value::as_object) else {
        return; // Nothing documented to check, e.g. the WebSocket upgrade.
    };
    assert!(
        types.contains_key(media),
        "{what}: the content type {media:?} is not documented (documented: {:?})",
        types.keys().collect::<Vec<_>>()
    );
    if let Some(body) = body {
        assert_matches(&format!("{content}/{}/schema", escape(media)), body, &what);
    }
}

/// Checks that the answer carries every header the document declares `required` for it, each
/// with a value its schema allows. A path or method the document does not have was refused by
/// [`check_answer`] already; such answers declare no header.
pub fn check_headers(
    method: &Method,
    url_path: &str,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
) {
    let path = url_path.split('?').next().unwrap_or(url_path);
    let what = format!("{method} {path} → {}", status.as_u16());
    let Some(template) = template_of(path) else {
        return;
    };
    let operation = format!(
        "/paths/{}/{}/responses",
        escape(template),
        method.as_str().to_lowercase()
    );
    let Some(responses) = document().pointer(&operation) else {
        return;
    };
    let answer = if responses.get(status.as_str()).is_some() {
        status.as_str()
    } else {
        "default"
    };
    let Some(response) = responses.get(answer) else {
        return;
    };
    for (name, declared) in response["headers"].as_object().into_iter().flatten() {
        let pointer = match declared["$ref"].as_str() {
            Some(r) => r.trim_start_matches('#').to_string(),
            None => format!("{operation}/{answer}/headers/{}", escape(name)),
        };
        let declared = document()
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("{what}: {pointer} resolves to nothing"));
        let Some(value) = headers.get(name.as_str()) else {
            assert!(
                declared["required"] != Value::Bool(true),
                "{what}: the answer lacks the header {name}, which the document requires"
            );
            continue;
        };
        let text = value
            .to_str()
            .unwrap_or_else(|_| panic!("{what}: the header {name} is not text"));
        let as_json = match declared["schema"]["type"].as_str() {
            Some("integer") => serde_json::from_str::<Value>(text)
                .ok()
                .filter(Value::is_i64)
                .unwrap_or_else(|| {
                    panic!("{what}: the header {name} ({text:?}) is not an integer")
                }),
            Some("boolean") => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => panic!("{what}: the header {name} ({text:?}) is not a boolean"),
            },
            _ => Value::String(text.to_string()),
        };
        assert!(
            validator(&format!("{pointer}/schema")).is_valid(&as_json),
            "{what}: the header {name} ({text:?}) does not match its schema"
        );
    }
}

#[test]
fn the_committed_document_is_the_one_the_code_generates() {
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    let generated = voidvm::api::openapi::document();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "schemas/openapi.json is not what the code generates; if the change is meant, run\n  \
         cargo run -q -- openapi > schemas/openapi.json"
    );
}

/// The patterns the document gives list filters name exactly the values the server knows.
#[test]
fn status_filters_list_the_statuses_the_code_has() {
    let doc: Value = serde_json::from_str(voidvm::api::openapi::document()).expect("JSON");
    let pattern = |path: &str, name: &str| -> String {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["schema"]["pattern"].as_str())
            .unwrap_or_else(|| panic!("{path} has no pattern for {name}"))
            .to_string()
    };
    let alternatives = |names: Vec<&str>| format!("^({})$", names.join("|"));
    assert_eq!(
        pattern("/api/v1/vms", "status"),
        alternatives(
            voidvm::vm::VmStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect()
        )
    );
    assert_eq!(
        pattern("/api/v1/jobs", "status"),
        alternatives(
            voidvm::store::jobs::JobStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect()
        )
    );
}

#[test]
fn the_document_describes_every_route_with_its_answers() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], voidvm::api::API_VERSION);
    let expected = [
        ("post", "/api/v1/auth/login"),
        ("get", "/api/v1/auth/me"),
        ("post", "/api/v1/auth/logout"),
        ("post", "/api/v1/auth/password"),
        ("get", "/api/v1/vms"),
        ("post", "/api/v1/vms"),
        ("get", "/api/v1/vms/{id}"),
        ("patch", "/api/v1/vms/{id}"),
        ("delete", "/api/v1/vms/{id}"),
        ("post", "/api/v1/vms/{id}/start"),
        ("post", "/api/v1/vms/{id}/stop"),
        ("post", "/api/v1/vms/{id}/restart"),
        ("post", "/api/v1/vms/{id}/pause"),
        ("post", "/api/v1/vms/{id}/resume"),
        ("post", "/api/v1/vms/{id}/reset"),
        ("post", "/api/v1/vms/{id}/iso"),
        ("delete", "/api/v1/vms/{id}/iso"),
        ("get", "/api/v1/vms/{id}/console"),
        ("get", "/api/v1/vms/{id}/vnc"),
        ("get", "/api/v1/vms/{id}/snapshots"),
        ("post", "/api/v1/vms/{id}/snapshots"),
        ("post", "/api/v1/vms/{id}/snapshots/{name}/restore"),
        ("delete", "/api/v1/vms/{id}/snapshots/{name}"),
        ("get", "/api/v1/vms/{id}/events"),
        ("get", "/api/v1/vms/{id}/history"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/logs"),
        ("get", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/{id}"),
        ("get", "/api/v1/jobs/{id}/wait"),
        ("post", "/api/v1/jobs/{id}/cancel"),
        ("get", "/api/v1/users"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users/{id}"),
        ("put", "/api/v1/users/{id}"),
        ("delete", "/api/v1/users/{id}"),
        ("get", "/api/v1/permissions"),
        ("get", "/api/v1/roles"),
        ("post", "/api/v1/roles"),
        ("put", "/api/v1/roles/{id}"),
        ("delete", "/api/v1/roles/{id}"),
        ("get", "/api/v1/config"),
        ("put", "/api/v1/config"),
        ("get", "/api/v1/system/info"),
        ("get", "/api/v1/system/stats"),
        ("get", "/api/v1/webhooks"),
        ("post", "/api/v1/webhooks"),
        ("get", "/api/v1/webhooks/{id}"),
        ("patch", "/api/v1/webhooks/{id}"),
        ("delete", "/api/v1/webhooks/{id}"),
        ("get", "/api/v1/webhooks/{id}/deliveries"),
        (
            "post",
            "/api/v1/webhooks/{id}/deliveries/{deliveryId}/redeliver",
        ),
        ("get", "/api/v1/images"),
        ("post", "/api/v1/images"),
        ("get", "/api/v1/images/{name}"),
        ("delete", "/api/v1/images/{name}"),
        ("put", "/api/v1/images/{name}/upload"),
        ("get", "/metrics"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/docs"),
        ("get", "/ws"),
        ("get", "/health"),
        ("get", "/ready"),
    ];
    for (verb, path) in expected {
        let op = &doc["paths"][path][verb];
        assert!(op.is_object(), "{verb} {path} is not documented");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2') || s == "101"),
            "{verb} {path} documents no success"
        );
        assert!(
            responses.contains_key("default"),
            "{verb} {path} has no default error"
        );
        let public = matches!(
            path,
            "/api/v1/auth/login"
                | "/api/v1/openapi.json"
                | "/api/v1/docs"
                | "/ws"
                | "/health"
                | "/ready"
                | "/metrics"
        );
        assert_eq!(
            op["security"].is_array(),
            !public,
            "{verb} {path}: the bearer requirement is wrong"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        expected.len(),
        "an operation is documented twice or unexpectedly"
    );
}

/// Every `$ref` string below `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_in_the_document_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(doc, &mut found);
    assert!(found.len() > 20, "the document uses references");
    let dangling: Vec<&&str> = found
        .iter()
        .filter(|r| {
            r.strip_prefix('#')
                .is_none_or(|pointer| doc.pointer(pointer).is_none())
        })
        .collect();
    assert!(dangling.is_empty(), "references to nothing: {dangling:?}");
}

#[test]
fn the_checker_refuses_what_the_document_does_not_say() {
    let vm = json!({"success": true, "data": {"id": "vm-1"}, "message": "m", "timestamp": "t"});
    let refused = |f: fn(&Value)| std::panic::catch_unwind(|| f(&vm)).is_err();
    assert!(refused(|vm| check_answer(
        &Method::GET,
        "/api/v1/vms/vm-1",
        StatusCode::OK,
        "application/json",
        Some(vm)
    )));
    assert!(refused(|_| check_answer(
        &Method::GET,
        "/api/v1/undocumented",
        StatusCode::OK,
        "application/json",
        Some(&json!({}))
    )));
    assert!(refused(|_| check_answer(
        &Method::POST,
        "/api/v1/vms/vm-1/start",
        StatusCode::OK,
        "application/json",
        Some(&json!({}))
    )));
    // A declared header that is missing or malformed.
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, reqwest::header::HeaderValue::from_static(value));
        }
        map
    };
    let complete = [
        ("x-request-id", "r-1"),
        ("x-api-version", "1.0.0"),
        ("x-ratelimit-limit", "100"),
        ("x-ratelimit-remaining", "99"),
        ("x-ratelimit-reset", "60"),
    ];
    check_headers(
        &Method::GET,
        "/api/v1/vms",
        StatusCode::OK,
        &headers(&complete),
    );
    assert!(std::panic::catch_unwind(|| check_headers(
        &Method::GET,
        "/api/v1/vms",
        StatusCode::OK,
        &headers(&complete[..4])
    ))
    .is_err());
    let mut negative = complete;
    negative[3] = ("x-ratelimit-remaining", "-1");
    assert!(std::panic::catch_unwind(|| check_headers(
        &Method::GET,
        "/api/v1/vms",
        StatusCode::OK,
        &headers(&negative)
    ))
    .is_err());
    // A 429 also says when to try again.
    assert!(std::panic::catch_unwind(|| check_headers(
        &Method::GET,
        "/api/v1/vms",
        StatusCode::TOO_MANY_REQUESTS,
        &headers(&complete)
    ))
    .is_err());
    // And accepts a documented error answer.
    check_answer(
        &Method::GET,
        "/api/v1/vms/vm-1",
        StatusCode::NOT_FOUND,
        "application/json",
        Some(&json!({
            "success": false,
            "error": {"code": "VM_NOT_FOUND", "message": "m", "details": "d"},
            "timestamp": "t"
        })),
    );
}

#[actix_rt::test]
async fn the_server_serves_the_document_and_its_reference_page() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("the document");
    assert_eq!(resp.status(), StatusCode::OK);
    let served: Value = resp.json().await.expect("JSON");
    assert_eq!(&served, document());

    let resp = app
        .client
        .get(app.url("/api/v1/docs"))
        .send()
        .await
        .expect("the page");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("a content type")
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = resp.text().await.expect("HTML");
    assert!(html.contains("VoidVM API"), "the page carries the document");
}

/// The links the document declares on `verb path`'s `status` answer: (target operation's method
/// and path template, parameter, JSON pointer into the answer).
fn links_of(verb: &str, path: &str, status: &str) -> Vec<(String, String, String, String)> {
    let doc = document();
    let mut where_is = std::collections::HashMap::new();
    for (p, item) in doc["paths"].as_object().expect("paths") {
        for (m, op) in item.as_object().expect("an item") {
            if let Some(id) = op["operationId"].as_str() {
                where_is.insert(id.to_string(), (m.clone(), p.clone()));
            }
        }
    }
    let answer = &doc["paths"][path][verb]["responses"][status];
    let mut out = Vec::new();
    for link in answer["links"].as_object().expect("links").values() {
        let (m, p) = where_is[link["operationId"].as_str().expect("an id")].clone();
        for (parameter, expression) in link["parameters"].as_object().expect("parameters") {
            let pointer = expression
                .as_str()
                .and_then(|e| e.strip_prefix("$response.body#"))
                .expect("a body expression");
            out.push((m.clone(), p.clone(), parameter.clone(), pointer.to_string()));
        }
    }
    out
}

/// Follows every `GET` link of `answer` (to an operation without other parameters) and expects
/// it found; every link's value must be in the answer.
async fn follow(
    app: &crate::helpers::TestApp,
    links: &[(String, String, String, String)],
    answer: &Value,
) {
    assert!(!links.is_empty());
    for (method, template, parameter, pointer) in links {
        let value = answer
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} is not in the answer {answer}"));
        let path = template.replace(&format!("{{{parameter}}}"), value);
        if method == "get"
            && !path.contains('{')
            && !path.ends_with("/console")
            && !path.ends_with("/vnc")
            && !path.ends_with("/wait")
        {
            let (status, body) = app.call(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
    }
}

#[actix_rt::test]
async fn the_links_lead_from_real_answers_to_what_they_name() {
    let app = spawn_app().await;
    let (status, created) = app
        .create_vm(json!({"name": "linked", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    follow(&app, &links_of("post", "/api/v1/vms", "201"), &created).await;
    let job = app
        .wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = created["data"]["id"].as_str().expect("an id");
    let (status, accepted) = app
        .call(
            Method::POST,
            &format!("/api/v1/vms/{id}/snapshots"),
            Some(json!({"name": "s1"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    follow(
        &app,
        &links_of("post", "/api/v1/vms/{id}/snapshots", "202"),
        &accepted,
    )
    .await;
    let (status, user) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "linked-user", "password": "a-long-password", "role": "user"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    follow(&app, &links_of("post", "/api/v1/users", "201"), &user).await;
    app.wait_job(accepted["data"]["jobId"].as_str().expect("a job"))
        .await;
}

/// A provisioned VM made from `vm`, a webhook of every event, and a role `role` that may read
/// VMs: what the tests of changes below change. The VM's and the webhook's ids.
async fn vm_webhook_and_role(app: &TestApp, vm: Value, role: &str) -> (String, String) {
    let vm = app.create_and_provision(vm).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://example.com/hook", "events": ["*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let hook = body["data"]["id"]
        .as_str()
        .expect("a webhook id")
        .to_string();
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/roles",
            Some(json!({"id": role, "name": role, "permissions": ["vm:read"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (vm, hook)
}

/// An optional array in a request that the server reads as absent when it is `null` (serde's
/// `Option`) is documented as taking `null`, like the other optional fields. A fuzzer over the
/// document had `PUT /roles/{id}` accept `"permissions": null`, documented as an array only.
#[actix_rt::test]
async fn optional_request_arrays_the_server_takes_as_null_are_documented_nullable() {
    for (schema, property) in [
        ("CreateVm", "bootOrder"),
        ("PatchVm", "bootOrder"),
        ("WebhookUpdate", "events"),
        ("RoleUpdate", "permissions"),
    ] {
        let documented = validator(&format!(
            "/components/schemas/{schema}/properties/{property}"
        ));
        assert!(
            documented.is_valid(&Value::Null),
            "{schema}.{property} is documented without null"
        );
    }
    let app = spawn_app().await;
    let vm = json!({"name": "nulls", "cpu": 1, "memory": 128, "disk": 1, "bootOrder": null});
    let (vm, hook) = vm_webhook_and_role(&app, vm, "nulls").await;
    let (status, body) = app
        .patch_vm(
            &vm,
            json!({"bootOrder": null, "description": "arrays as null"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/webhooks/{hook}"),
            Some(json!({"events": null, "active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["events"], json!(["*"]), "{body}");
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/roles/nulls",
            Some(json!({"permissions": null, "description": "kept"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["permissions"], json!(["vm:read"]), "{body}");
}

/// A change with no fields is a change of nothing: the server answers the resource as it is (a
/// client that puts back what it read gets a 200), and the document allows the empty object. It
/// said `minProperties: 1`, and a fuzzer over it had `PUT /roles/{id}` accept `{}`.
#[actix_rt::test]
async fn an_empty_change_is_documented_and_answers_the_resource_as_it_is() {
    for schema in ["PatchVm", "WebhookUpdate", "RoleUpdate", "UserUpdate"] {
        let documented = validator(&format!("/components/schemas/{schema}"));
        assert!(
            documented.is_valid(&json!({})),
            "{schema} is documented without the empty object"
        );
    }
    let app = spawn_app().await;
    let vm = json!({"name": "empty", "cpu": 1, "memory": 128, "disk": 1});
    let (vm, hook) = vm_webhook_and_role(&app, vm, "empty").await;
    app.create_user("emptychange").await;
    let user = "user-emptychange";
    for (method, path) in [
        (Method::PATCH, format!("/api/v1/vms/{vm}")),
        (Method::PATCH, format!("/api/v1/webhooks/{hook}")),
        (Method::PUT, "/api/v1/roles/empty".to_string()),
        (Method::PUT, format!("/api/v1/users/{user}")),
    ] {
        let (status, body) = app.call(method.clone(), &path, Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
        assert_eq!(
            body["message"], "Nothing to change.",
            "{method} {path}: {body}"
        );
    }
}
