//! `GET /metrics`: after some traffic, the scrape parses as the Prometheus text format (with a
//! strict parser of it) and carries every series the README lists, labelled by route pattern,
//! never by path.

use std::time::Duration;

use prom_text_format_parser::{Metric, Scrape, Type, ValueType};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

async fn scrape(app: &TestApp) -> Scrape {
    let resp = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("the scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.expect("the body");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("not the Prometheus text format: {e:?}\n{text}"))
}

fn metric<'a>(scrape: &'a Scrape, name: &str, kind: Type) -> &'a Metric {
    let m = scrape
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} is missing"));
    assert_eq!(m.kind, kind, "{name}");
    assert!(m.help_desc.is_some(), "{name} has no HELP");
    m
}

fn label<'a>(sample: &'a prom_text_format_parser::Sample, key: &str) -> Option<&'a str> {
    sample
        .labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.value.as_str())
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, kind: Type, labels: &[(&str, &str)]) -> Option<f64> {
    metric(scrape, name, kind)
        .samples
        .iter()
        .filter(|s| s.value.value_type == ValueType::Sample)
        .find(|s| labels.iter().all(|(k, v)| label(s, k) == Some(*v)))
        .map(|s| s.value.value.as_f64())
}

#[actix_rt::test]
async fn the_scrape_has_every_series_after_some_traffic() {
    let app = spawn_app().await;
    assert_eq!(app.me().await.0, StatusCode::OK);
    assert_eq!(app.get_vm("vm-not-there").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(Method::GET, "/api/v1/no-such-thing", None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = app
        .create_vm(json!({"name": "metered", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    let ws = app.ws(&app.token).await;

    let s = scrape(&app).await;

    // HTTP requests, by route pattern, method and status.
    let requests = metric(&s, "voidvm_http_requests_total", Type::Counter);
    for sample in &requests.samples {
        for key in ["route", "method", "status"] {
            assert!(label(sample, key).is_some(), "{key} missing: {sample:?}");
        }
        let route = label(sample, "route").unwrap_or_default();
        assert!(
            !route.contains("vm-not-there") && !route.contains("no-such-thing"),
            "a raw path became a label: {route}"
        );
    }
    let get = |route: &str, status: &str| {
        value(
            &s,
            "voidvm_http_requests_total",
            Type::Counter,
            &[("route", route), ("method", "GET"), ("status", status)],
        )
    };
    assert!(get("/api/v1/auth/me", "200") >= Some(1.0));
    assert!(get("/api/v1/vms/{id}", "404") >= Some(1.0));
    assert!(get("unmatched", "404") >= Some(1.0));
    assert!(
        value(
            &s,
            "voidvm_http_requests_total",
            Type::Counter,
            &[
                ("route", "/api/v1/vms"),
                ("method", "POST"),
                ("status", "201")
            ]
        ) == Some(1.0)
    );

    // Their latency: buckets, sum and count for the same labels.
    let latency = metric(&s, "voidvm_http_request_duration_seconds", Type::Histogram);
    let me = |t: ValueType| {
        latency.samples.iter().any(|x| {
            x.value.value_type == t
                && label(x, "route") == Some("/api/v1/auth/me")
                && label(x, "method") == Some("GET")
                && label(x, "status") == Some("200")
        })
    };
    assert!(me(ValueType::Sample) && me(ValueType::Sum) && me(ValueType::Count));
    assert!(latency
        .samples
        .iter()
        .any(|x| label(x, "le") == Some("+Inf")));

    // VMs by status: every status, and the one VM.
    let vms: f64 = voidvm::vm::VmStatus::ALL
        .iter()
        .map(|st| {
            value(&s, "voidvm_vms", Type::Gauge, &[("status", st.as_str())])
                .unwrap_or_else(|| panic!("voidvm_vms{{status={st:?}}} is missing"))
        })
        .sum();
    assert_eq!(vms, 1.0);
    assert_eq!(
        value(&s, "voidvm_vms", Type::Gauge, &[("status", "stopped")]),
        Some(1.0)
    );

    // Jobs by kind and status, and how long the finished ones took.
    assert_eq!(
        value(
            &s,
            "voidvm_jobs",
            Type::Gauge,
            &[("kind", "provision"), ("status", "succeeded")]
        ),
        Some(1.0)
    );
    let durations = metric(&s, "voidvm_job_duration_seconds", Type::Histogram);
    let count = durations
        .samples
        .iter()
        .find(|x| {
            x.value.value_type == ValueType::Count
                && label(x, "kind") == Some("provision")
                && label(x, "status") == Some("succeeded")
        })
        .map(|x| x.value.value.as_f64());
    assert_eq!(count, Some(1.0), "{durations:?}");
    assert!(value(&s, "voidvm_job_queue_depth", Type::Gauge, &[]).is_some());
    let lag = value(&s, "voidvm_relay_lag_events", Type::Gauge, &[]).expect("relay lag");
    assert!(lag >= 0.0);
    assert_eq!(
        value(&s, "voidvm_scrape_database_up", Type::Gauge, &[]),
        Some(1.0)
    );

    // WebSocket connections, counted while open.
    assert_eq!(
        value(&s, "voidvm_websocket_connections", Type::Gauge, &[]),
        Some(1.0)
    );
    ws.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(&app).await;
        if value(&s, "voidvm_websocket_connections", Type::Gauge, &[]) == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed WebSocket is still counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The rate limiter's counter, at 0 for both kinds.
    for kind in ["request", "login"] {
        assert_eq!(
            value(
                &s,
                "voidvm_rate_limited_total",
                Type::Counter,
                &[("kind", kind)]
            ),
            Some(0.0),
            "{kind}"
        );
    }
}

#[actix_rt::test]
async fn the_scrape_needs_no_token_and_refuses_other_methods() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("the scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, body) = app.call(Method::POST, "/metrics", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    // The refused POST is counted under its route.
    let s = scrape(&app).await;
    assert_eq!(
        value(
            &s,
            "voidvm_http_requests_total",
            Type::Counter,
            &[("route", "/metrics"), ("method", "POST"), ("status", "405")]
        ),
        Some(1.0)
    );
}
