//! Every setting the README documents works: the `voidvm` binary starts with each of them, once
//! as `VOIDVM_*` environment variables and once as keys of a `--config` file, and each is checked
//! to take effect where that is cheap (otherwise that the server starts and answers `/health`).
//! A setting the README documents but this table lacks fails the test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{images_dir, Env, NATS_URL};

const SECRET: &str = "settings-test-secret-settings-test-secret";

/// One setting: its variable, its value as a variable and as TOML (`None`: from the test's `Env`).
struct Setting {
    var: &'static str,
    env: &'static str,
    toml: &'static str,
}

const fn s(var: &'static str, env: &'static str, toml: &'static str) -> Setting {
    Setting { var, env, toml }
}

/// Each documented setting with a value other than its default where that can be seen.
const SETTINGS: &[Setting] = &[
    s("VOIDVM_LISTEN", "127.0.0.1:0", "\"127.0.0.1:0\""),
    s(
        "VOIDVM_QEMU",
        "/usr/bin/qemu-system-x86_64",
        "\"/usr/bin/qemu-system-x86_64\"",
    ),
    s(
        "VOIDVM_QEMU_IMG",
        "/usr/bin/qemu-img",
        "\"/usr/bin/qemu-img\"",
    ),
    s("VOIDVM_ACCEL", "tcg", "\"tcg\""),
    s(
        "VOIDVM_JWT_SECRET",
        SECRET,
        "\"settings-test-secret-settings-test-secret\"",
    ),
    s("VOIDVM_TOKEN_TTL_SECS", "600", "600"),
    s("VOIDVM_DATABASE_CONNECTIONS", "8", "8"),
    s("VOIDVM_WORKERS", "1", "1"),
    s("VOIDVM_NODE_ID", "settings-node", "\"settings-node\""),
    s("VOIDVM_JOB_LEASE_SECS", "12", "12"),
    s("VOIDVM_JOB_MAX_ATTEMPTS", "2", "2"),
    s("VOIDVM_SNAPSHOT_EVERY", "7", "7"),
    s("VOIDVM_ACTOR_IDLE_SECS", "60", "60"),
    s("VOIDVM_DEFAULT_STOP_TIMEOUT_SECS", "5", "5"),
    s("VOIDVM_LIMITS__CPU_MAX", "3", "3"),
    s("VOIDVM_LIMITS__MEMORY_MIN_MIB", "100", "100"),
    s("VOIDVM_LIMITS__MEMORY_MAX_MIB", "4096", "4096"),
    s("VOIDVM_LIMITS__DISK_MIN_GIB", "2", "2"),
    s("VOIDVM_LIMITS__DISK_MAX_GIB", "50", "50"),
    s("VOIDVM_LIMITS__NAME_MAX_LEN", "10", "10"),
    s("VOIDVM_LIMITS__STOP_TIMEOUT_MAX_SECS", "100", "100"),
    s("VOIDVM_LIMITS__KNOWN_IMAGES", "[plan9]", "[\"plan9\"]"),
    s("VOIDVM_QUOTAS__VMS", "3", "3"),
    s("VOIDVM_QUOTAS__VCPUS", "9", "9"),
    s("VOIDVM_QUOTAS__MEMORY_MIB", "8192", "8192"),
    s("VOIDVM_QUOTAS__DISK_GIB", "40", "40"),
    s("VOIDVM_RATE_LIMIT__REQUESTS_PER_MINUTE", "5000", "5000"),
    s("VOIDVM_RATE_LIMIT__LOGIN_FAILURES", "7", "7"),
    s("VOIDVM_RATE_LIMIT__LOGIN_LOCKOUT_SECS", "60", "60"),
    s("VOIDVM_NATS_URL", NATS_URL, "\"nats://127.0.0.1:4222\""),
    s("VOIDVM_NATS__RETENTION_SECS", "1800", "1800"),
    s("VOIDVM_NATS__RELAY", "true", "true"),
    s("VOIDVM_NATS__RELAY_BATCH", "16", "16"),
    s("VOIDVM_WS__MAX_CONNECTIONS_PER_USER", "1", "1"),
    s("VOIDVM_WS__SEND_QUEUE", "64", "64"),
    s("VOIDVM_WS__SLOW_AFTER_MS", "5000", "5000"),
    s("VOIDVM_WS__PING_INTERVAL_SECS", "5", "5"),
    s("VOIDVM_WS__IDLE_TIMEOUT_SECS", "20", "20"),
    s("VOIDVM_WS__AUTH_TIMEOUT_SECS", "1", "1"),
    s("VOIDVM_WS__MONITOR_MIN_INTERVAL_MS", "200", "200"),
    s("VOIDVM_WS__MONITOR_MAX_INTERVAL_MS", "10000", "10000"),
    s("VOIDVM_WS__USAGE_INTERVAL_MS", "1000", "1000"),
    s("VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS", "300", "300"),
    s("VOIDVM_LOG_FORMAT", "json", "\"json\""),
    s("VOIDVM_NETWORK__PORT_RANGE_START", "40000", "40000"),
    s("VOIDVM_NETWORK__PORT_RANGE_END", "40099", "40099"),
    s("VOIDVM_NETWORK__BRIDGES", "[br-voidvm]", "[\"br-voidvm\"]"),
];

/// Settings whose value comes from the test's own `Env` (its database, data dir, stream).
const FROM_ENV: &[&str] = &[
    "VOIDVM_DATABASE_URL",
    "VOIDVM_DATA_DIR",
    "VOIDVM_IMAGES_DIR",
    "VOIDVM_NATS__PREFIX",
    "VOIDVM_NATS__STREAM",
];

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README")
}

/// Every `VOIDVM_*` setting the README's settings table names; a `VOIDVM_GROUP__*` row expands
/// to the keys it lists in backticks.
fn documented() -> Vec<String> {
    let mut out = Vec::new();
    for line in readme().lines().filter(|l| l.starts_with("| `VOIDVM_")) {
        let cells: Vec<&str> = line.split('|').collect();
        let names = cells.get(1).copied().unwrap_or("");
        for name in names.split('`').filter(|n| n.starts_with("VOIDVM_")) {
            match name.strip_suffix('*') {
                Some(group) => {
                    let listed = cells.get(3).copied().unwrap_or("");
                    for key in listed.split('`').skip(1).step_by(2) {
                        for key in key.split('/') {
                            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                                out.push(format!("{group}{}", key.to_uppercase()));
                            }
                        }
                    }
                }
                None => out.push(name.to_string()),
            }
        }
    }
    out
}

#[test]
fn the_test_covers_every_setting_the_readme_documents() {
    let documented = documented();
    assert!(
        documented.len() > 30,
        "the README's table was read: {documented:?}"
    );
    for name in &documented {
        assert!(
            SETTINGS.iter().any(|s| s.var == name) || FROM_ENV.contains(&name.as_str()),
            "the README documents {name}, which this test does not start the server with"
        );
    }
    for s in SETTINGS {
        assert!(
            documented.iter().any(|d| d == s.var),
            "{} is not in the README",
            s.var
        );
    }
}

/// A `voidvm serve` process, killed when dropped; its stderr lines are kept.
struct Server {
    child: Child,
    address: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_values(env: &Env) -> Vec<(String, String)> {
    vec![
        ("VOIDVM_DATABASE_URL".into(), env.database_url.clone()),
        (
            "VOIDVM_DATA_DIR".into(),
            env.data_dir.join("node").display().to_string(),
        ),
        (
            "VOIDVM_IMAGES_DIR".into(),
            images_dir().display().to_string(),
        ),
        ("VOIDVM_NATS__PREFIX".into(), env.nats_prefix.clone()),
        ("VOIDVM_NATS__STREAM".into(), env.nats_stream.clone()),
    ]
}

/// The settings as a TOML file (keys in lower case, `__` as tables).
fn toml_file(env: &Env) -> std::path::PathBuf {
    let mut top = String::new();
    let mut tables: std::collections::BTreeMap<String, String> = Default::default();
    let literal = |v: &str| format!("{v:?}");
    let entries = SETTINGS
        .iter()
        .map(|s| (s.var.to_string(), s.toml.to_string()))
        .chain(env_values(env).into_iter().map(|(k, v)| (k, literal(&v))));
    for (var, value) in entries {
        let key = var.trim_start_matches("VOIDVM_").to_lowercase();
        match key.split_once("__") {
            Some((table, key)) => {
                let t = tables.entry(table.to_string()).or_default();
                t.push_str(&format!("{key} = {value}\n"));
            }
            None => top.push_str(&format!("{key} = {value}\n")),
        }
    }
    for (table, body) in tables {
        top.push_str(&format!("\n[{table}]\n{body}"));
    }
    let path = env.data_dir.join("voidvm.toml");
    std::fs::write(&path, top).expect("the config file");
    path
}

async fn start(env: &Env, config: Option<&std::path::Path>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voidvm"));
    cmd.arg("serve");
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("VOIDVM_")) {
        cmd.env_remove(name);
    }
    match config {
        Some(file) => {
            cmd.arg("--config").arg(file);
        }
        None => {
            cmd.envs(SETTINGS.iter().map(|s| (s.var, s.env)));
            cmd.envs(env_values(env));
        }
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the voidvm binary");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let line = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        std::thread::spawn(move || for _ in reader.lines() {});
        line
    })
    .await
    .expect("the stdout reader");
    let stderr = lines.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    let address = line
        .trim()
        .strip_prefix("VoidVM listening on ")
        .unwrap_or_else(|| panic!("voidvm did not start: {line:?}\n{stderr}"))
        .to_string();
    Server {
        child,
        address,
        stderr: lines,
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("the request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Checks that each setting took effect on the server at `server.address`.
async fn check_effects(env: &Env, server: &Server) {
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.address);
    let get = |path: &str| client.get(url(path)).send();
    assert_eq!(
        get("/health").await.expect("health").status(),
        StatusCode::OK
    );
    let ready: Value = get("/ready")
        .await
        .expect("ready")
        .json()
        .await
        .expect("JSON");
    assert_eq!(ready["data"]["accel"], "tcg", "VOIDVM_ACCEL: {ready}");
    assert!(env.data_dir.join("node").is_dir(), "VOIDVM_DATA_DIR");

    // The database, the secret and the token lifetime.
    let login: Value = client
        .post(url("/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": "admin123"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("JSON");
    let token = login["token"].as_str().expect("a token").to_string();
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .expect("VOIDVM_JWT_SECRET signs the tokens")
    .claims;
    let ttl = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(ttl, 600, "VOIDVM_TOKEN_TTL_SECS");
    let pool = sqlx::PgPool::connect(&env.database_url).await.expect("db");
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE username = 'admin'")
        .fetch_one(&pool)
        .await
        .expect("users");
    assert_eq!(admins, 1, "VOIDVM_DATABASE_URL");

    // The connections: a burst of reads makes the HTTP workers open all they may of the 8, and
    // the node's listeners and locks hold theirs besides.
    let reads = (0..48).map(|_| {
        client
            .get(url("/api/v1/vms?limit=100"))
            .bearer_auth(&token)
            .send()
    });
    for answer in futures::future::join_all(reads).await {
        assert_eq!(answer.expect("a read").status(), StatusCode::OK);
    }
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .expect("pg_stat_activity");
    let ours = i64::from(pool.size());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let allowed = i64::from(voidvm::store::ConnectionBudget::new(8, cores).most(cores));
    assert!(
        held - ours <= allowed,
        "VOIDVM_DATABASE_CONNECTIONS: the server holds {} connections, more than {allowed}",
        held - ours
    );

    // The limits.
    let vms = url("/api/v1/vms");
    let ok = json!({"name": "a1", "cpu": 1, "memory": 128, "disk": 2, "os": "busybox"});
    let refusals = [
        ("cpu", json!(4)),
        ("memory", json!(99)),
        ("memory", json!(4097)),
        ("disk", json!(1)),
        ("disk", json!(51)),
        ("name", json!("a-long-name")),
        ("os", json!("ubuntu20.04")),
    ];
    for (field, value) in refusals {
        let mut body = ok.clone();
        body[field] = value.clone();
        let (status, resp) = call(
            &client,
            reqwest::Method::POST,
            vms.clone(),
            &token,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {resp}");
        assert_eq!(resp["error"]["field"], field, "{resp}");
    }
    let (status, resp) = call(
        &client,
        reqwest::Method::POST,
        url("/api/v1/vms/vm-x/stop"),
        &token,
        Some(json!({"timeout": 101})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "stop_timeout_max_secs: {resp}"
    );
    let mut plan9 = ok.clone();
    plan9["name"] = json!("p9");
    plan9["os"] = json!("plan9");
    let (status, resp) = call(
        &client,
        reqwest::Method::POST,
        vms.clone(),
        &token,
        Some(plan9),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "known_images: {resp}");
    // The images dir: the test guest's files are there.
    let (status, resp) = call(
        &client,
        reqwest::Method::POST,
        vms.clone(),
        &token,
        Some(ok),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    assert_eq!(
        resp["data"]["image"]["present"], true,
        "VOIDVM_IMAGES_DIR: {resp}"
    );
    // The node id: the provisioning jobs were claimed by this node, under its name.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let claimed: Vec<String> =
            sqlx::query_scalar("SELECT node_id FROM jobs WHERE node_id IS NOT NULL")
                .fetch_all(&pool)
                .await
                .expect("jobs");
        if !claimed.is_empty() {
            assert!(
                claimed.iter().all(|n| n == "settings-node"),
                "VOIDVM_NODE_ID: {claimed:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job was claimed by the node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The host sampler writes this node's samples every 300 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let samples: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM system_samples WHERE node_id = 'settings-node'",
        )
        .fetch_one(&pool)
        .await
        .expect("system_samples");
        if samples >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS: no samples were written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // NATS: the stream, its retention, and the relay filling it.
    let js = async_nats::jetstream::new(async_nats::connect(NATS_URL).await.expect("NATS"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = js.get_stream(&env.nats_stream).await {
            let info = stream.info().await.expect("the stream's info");
            assert_eq!(
                info.config.max_age,
                Duration::from_secs(1800),
                "retention_secs"
            );
            assert!(
                info.config
                    .subjects
                    .iter()
                    .all(|s| s.starts_with(&env.nats_prefix)),
                "VOIDVM_NATS__PREFIX: {:?}",
                info.config.subjects
            );
            if info.state.messages > 0 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not publish to the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The feed: one connection per user, and the auth frame's deadline.
    let ws = url("/ws").replacen("http", "ws", 1);
    let (_first, _) = tokio_tungstenite::connect_async(format!("{ws}?token={token}"))
        .await
        .expect("the first WebSocket");
    match tokio_tungstenite::connect_async(format!("{ws}?token={token}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429, "max_connections_per_user")
        }
        other => panic!(
            "the second WebSocket was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    let (mut anonymous, _) = tokio_tungstenite::connect_async(ws)
        .await
        .expect("a WebSocket");
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match anonymous.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("auth_timeout_secs: the silent connection was not closed");
    let reason = closed.map(|f| f.reason.to_string()).unwrap_or_default();
    assert!(
        reason.contains("no auth frame"),
        "auth_timeout_secs: {reason}"
    );

    // The log format.
    let lines = server
        .stderr
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert!(
        !lines.is_empty(),
        "RUST_LOG=info: the server logged nothing"
    );
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "VOIDVM_LOG_FORMAT=json: not a JSON line: {line}"
        );
    }
}

#[actix_rt::test]
async fn every_documented_setting_works_as_an_environment_variable() {
    let env = Env::new().await;
    let server = start(&env, None).await;
    check_effects(&env, &server).await;
    drop(server);
}

#[actix_rt::test]
async fn every_documented_setting_works_in_the_config_file() {
    let env = Env::new().await;
    let file = toml_file(&env);
    let server = start(&env, Some(&file)).await;
    check_effects(&env, &server).await;
    drop(server);
}
