//! `/system/info` and `/system/stats`: every field of the answer with sane values, the host
//! samples kept in PostgreSQL (real ones from a fast sampler, across a restart, and synthetic ones
//! to check the averaging per bucket), and the permission `system:read`.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use voidvm::system::series::{bucket_of, Period, MAX_POINTS};

use crate::helpers::{spawn_app, spawn_app_with, spawn_server, Env, TestApp};

const INFO: &str = "/api/v1/system/info";

fn stats(period: &str) -> String {
    format!("/api/v1/system/stats?period={period}")
}

fn node_id(app: &TestApp) -> String {
    std::fs::read_to_string(app.env.data_dir.join("node-id"))
        .expect("the node id file")
        .trim()
        .to_string()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("{value} is not an RFC 3339 time"))
}

async fn samples_of(pool: &sqlx::PgPool, node: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM system_samples WHERE node_id = $1")
        .bind(node)
        .fetch_one(pool)
        .await
        .expect("the samples")
}

/// Waits until the node has written at least `n` samples.
async fn await_samples(pool: &sqlx::PgPool, node: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while samples_of(pool, node).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sampler did not write {n} samples within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_percent(value: &Value, what: &str) {
    let v = value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"));
    assert!((0.0..=100.0).contains(&v), "{what} = {v}");
}

#[actix_rt::test]
async fn info_describes_the_server_the_node_the_host_and_qemu() {
    let app = spawn_app().await;
    let qemu = std::path::Path::new("qemu-system-x86_64");
    let ((status, body), probe) = tokio::join!(
        app.call(Method::GET, INFO, None),
        voidvm::hypervisor::accel::probe_kvm(qemu)
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let d = &body["data"];
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    let built = time(&d["buildTime"]);
    assert!(built <= Utc::now(), "{built}");
    assert!(d["uptime"].as_u64().is_some(), "{d}");
    assert_eq!(d["apiVersion"], "1.0.0");
    assert_eq!(d["apiVersion"], voidvm::api::API_VERSION);
    assert_eq!(d["node"], node_id(&app));
    for field in ["os", "arch", "kernel", "hostname"] {
        let v = d["system"][field].as_str().unwrap_or_default();
        assert!(!v.is_empty(), "system.{field} is empty: {d}");
    }
    assert_eq!(d["system"]["arch"], std::env::consts::ARCH);

    let cpu = &d["resources"]["cpu"];
    assert!(cpu["cores"].as_u64().unwrap_or(0) >= 1, "{cpu}");
    assert!(cpu["model"].is_string(), "{cpu}");
    assert_percent(&cpu["usage"], "cpu.usage");
    for (name, resource) in [
        ("memory", &d["resources"]["memory"]),
        ("disk", &d["resources"]["disk"]),
    ] {
        let total = resource["total"].as_u64().unwrap_or(0);
        let used = resource["used"].as_u64().unwrap_or(u64::MAX);
        let free = resource["free"].as_u64().unwrap_or(u64::MAX);
        assert!(total > used, "{name}: {resource}");
        assert!(free <= total, "{name}: {resource}");
        assert_percent(&resource["usage"], &format!("{name}.usage"));
    }
    // The disk is the filesystem of the data dir.
    let data_dir = app.env.data_dir.canonicalize().expect("the data dir");
    let mount = d["resources"]["disk"]["path"].as_str().unwrap_or("?");
    assert!(
        data_dir.starts_with(mount),
        "{mount} does not hold {data_dir:?}"
    );

    let q = &d["qemu"];
    let version = q["version"].as_str().unwrap_or_default();
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "qemu.version: {q}"
    );
    // Whatever the accelerator probe says here (on this machine: no, nested KVM hangs).
    assert_eq!(q["kvmSupport"], probe.is_ok(), "{q} (probe: {probe:?})");
    let archs: Vec<&str> = q["supportedArchs"]
        .as_array()
        .expect("supportedArchs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(archs.contains(&"x86_64"), "{archs:?}");
    assert!(!archs.iter().any(|a| a.contains('-')), "{archs:?}");

    // Without a token.
    for path in [INFO.to_string(), stats("1h")] {
        let resp = app
            .client
            .get(app.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{body}");
    }
}

#[actix_rt::test]
async fn a_role_without_system_read_is_refused_and_told_which_permission() {
    let app = spawn_app().await;
    let token = app.create_user("plainuser").await;
    for path in [
        INFO.to_string(),
        stats("1h"),
        // The permission is checked before the query is read.
        stats("nonsense"),
    ] {
        let (status, body) = app.call_as(&token, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
        let details = body["error"]["details"].as_str().unwrap_or_default();
        assert!(details.contains("system:read"), "{path}: {body}");
    }
}

#[actix_rt::test]
async fn stats_count_vms_and_events_and_chart_real_samples_for_every_period() {
    let app = spawn_app_with(|s| s.system_sample_interval_ms = 200).await;
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let node = node_id(&app);

    let (status, before) = app.call(Method::GET, &stats("24h"), None).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["data"]["vms"]["total"], 0, "{before}");
    let events_before = before["data"]["events"]["total"].as_i64().unwrap_or(-1);
    for name in ["stat-a", "stat-b"] {
        let (status, body) = app
            .create_vm(json!({"name": name, "cpu": 1, "memory": 128, "disk": 1}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    await_samples(&pool, &node, 3).await;

    for period in ["1h", "24h", "7d", "30d"] {
        let asked = Utc::now();
        let (status, body) = app.call(Method::GET, &stats(period), None).await;
        assert_eq!(status, StatusCode::OK, "{period}: {body}");
        let d = &body["data"];
        assert_eq!(d["period"], period);
        assert_eq!(d["node"], node);

        let vms = &d["vms"];
        assert_eq!(vms["total"], 2, "{vms}");
        let creating = vms["creating"].as_i64().unwrap_or(-1);
        let stopped = vms["stopped"].as_i64().unwrap_or(-1);
        assert_eq!(creating + stopped, 2, "{vms}");
        for status in voidvm::vm::VmStatus::ALL {
            assert!(vms[status.as_str()].is_i64(), "{status:?} missing: {vms}");
        }

        let events = &d["events"];
        let total = events["total"].as_i64().unwrap_or(-1);
        assert!(
            total >= events_before + 2,
            "two VmCreated at least: {events}"
        );
        let flagged =
            events["errors"].as_i64().unwrap_or(-1) + events["warnings"].as_i64().unwrap_or(-1);
        assert!((0..=total).contains(&flagged), "{events}");

        let start = Period::parse(period).expect("a period").start(asked);
        for series in ["cpuUsage", "memoryUsage"] {
            let points = d["resources"][series].as_array().expect(series);
            assert!(!points.is_empty(), "{period} {series}: {body}");
            assert!(points.len() as i64 <= MAX_POINTS);
            for point in points {
                let at = time(&point["timestamp"]);
                assert!(
                    at >= start && at <= Utc::now(),
                    "{period} {series}: {at} is not in the period"
                );
                assert_percent(&point["value"], series);
            }
        }
    }

    for bad in ["2h", "", "1H", "30d%00"] {
        let (status, body) = app.call(Method::GET, &stats(bad), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{body}");
        assert_eq!(body["error"]["field"], "period", "{bad:?}: {body}");
    }
    let (status, body) = app
        .call(Method::GET, "/api/v1/system/stats?periods=1h", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "periods", "{body}");
    // No period: the last 24 hours.
    let (status, body) = app.call(Method::GET, "/api/v1/system/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["period"], "24h");
}

#[actix_rt::test]
async fn samples_survive_a_restart_of_the_server() {
    let mut env = Env::new().await;
    env.extra_vars
        .push(("VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS".into(), "200".into()));
    let mut app = spawn_server(env).await;
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let node = node_id(&app);
    await_samples(&pool, &node, 3).await;

    // The restarted server samples no more during the test: what it shows is what was kept.
    app.env.extra_vars = vec![("VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS".into(), "3600000".into())];
    app.kill_server();
    let killed = Utc::now();
    let kept = samples_of(&pool, &node).await;
    app.restart_server().await;
    assert_eq!(node_id(&app), node, "the node keeps its id");

    let (status, body) = app.call(Method::GET, &stats("1h"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let points = body["data"]["resources"]["cpuUsage"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!points.is_empty(), "the samples were lost: {body}");
    assert!(
        points.iter().all(|p| time(&p["timestamp"]) <= killed),
        "{body}"
    );
    assert!(samples_of(&pool, &node).await >= kept);
}

/// Synthetic samples over 31 days: each series is cut into at most MAX_POINTS buckets whose
/// values are the average of their samples, and samples older than 30 days are pruned.
#[actix_rt::test]
async fn stats_average_each_bucket_and_old_samples_are_pruned() {
    // The server's own sampler stays out of the way.
    let app = spawn_app_with(|s| s.system_sample_interval_ms = 3_600_000).await;
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let node = node_id(&app);
    let now = Utc::now();
    let insert = |at: DateTime<Utc>, cpu: f64, memory: f64| {
        let pool = pool.clone();
        let node = node.clone();
        async move {
            voidvm::store::system_samples::insert(&pool, &node, at, cpu, memory)
                .await
                .expect("a sample");
        }
    };
    // One sample every 20 minutes over 31 days.
    let mut at = now - chrono::Duration::days(31);
    while at < now - chrono::Duration::hours(3) {
        insert(at, 10.0, 50.0).await;
        at += chrono::Duration::minutes(20);
    }
    // Two samples in one bucket of the 24-hour chart: that point is their average.
    let width = Period::Day.bucket_secs();
    let bucket = bucket_of(now - chrono::Duration::hours(2), width);
    let first = Utc.timestamp_opt(bucket * width + 10, 0).unwrap();
    let second = Utc.timestamp_opt(bucket * width + 20, 0).unwrap();
    insert(first, 20.0, 60.0).await;
    insert(second, 40.0, 80.0).await;

    let (status, body) = app.call(Method::GET, &stats("24h"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cpu = body["data"]["resources"]["cpuUsage"].as_array().unwrap();
    let memory = body["data"]["resources"]["memoryUsage"].as_array().unwrap();
    let mean = Utc.timestamp_opt(bucket * width + 15, 0).unwrap();
    let at_mean = |points: &Vec<Value>| {
        points
            .iter()
            .find(|p| time(&p["timestamp"]) == mean)
            .map(|p| p["value"].clone())
    };
    assert_eq!(at_mean(cpu), Some(json!(30.0)), "{body}");
    assert_eq!(at_mean(memory), Some(json!(70.0)), "{body}");

    let (status, body) = app.call(Method::GET, &stats("30d"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cpu = body["data"]["resources"]["cpuUsage"].as_array().unwrap();
    assert!(
        (100..=MAX_POINTS as usize).contains(&cpu.len()),
        "{} points",
        cpu.len()
    );
    let start = Period::Month.start(now);
    assert!(cpu.iter().all(|p| time(&p["timestamp"]) >= start));

    let pruned = voidvm::store::system_samples::prune(
        &pool,
        Utc::now() - voidvm::system::sampler::RETENTION,
    )
    .await
    .expect("pruned");
    assert!((60..=80).contains(&pruned), "a day of samples: {pruned}");
    let oldest: DateTime<Utc> =
        sqlx::query_scalar("SELECT min(sampled_at) FROM system_samples WHERE node_id = $1")
            .bind(&node)
            .fetch_one(&pool)
            .await
            .expect("the oldest sample");
    assert!(oldest >= now - chrono::Duration::days(30));
}
