//! The test harness: a real VoidVM (in-process on port 0, or as the `voidvm` binary for
//! kill-and-restart tests) on a fresh PostgreSQL database, real QEMU under TCG, and a client with
//! one method per endpoint. Everything a test starts is torn down when its `TestApp` drops: its
//! servers stop (their loops end, their connections close), then its QEMU processes are killed,
//! then its database is dropped. Logs show only with `TEST_LOG=1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use voidvm::config::Settings;
use voidvm::hypervisor::accel::AccelSetting;

use crate::processes::{kill_machines, test_log, test_run, InProcess};

pub const ADMIN: (&str, &str) = ("admin", "admin123");
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0001";
const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
/// Pooled PostgreSQL connections each test node may hold: half the default, since the suite runs
/// two tests at once, some with several nodes, against the machine's 100 connections.
const TEST_CONNECTIONS: u32 = 16;

/// Where `scripts/setup.sh` puts the test guest.
pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/images")
}

fn require_guest() {
    let kernel = images_dir().join("busybox/vmlinuz");
    assert!(
        kernel.exists(),
        "the test guest is missing ({}); run scripts/setup.sh first",
        kernel.display()
    );
}

/// A fresh database and data dir, shared by the in-process and the process-based servers.
pub struct Env {
    pub db_name: String,
    pub database_url: String,
    pub data_dir: PathBuf,
    /// This test's own NATS subjects and stream, so parallel tests never see each other.
    pub nats_prefix: String,
    pub nats_stream: String,
    /// Where the server reaches NATS (a test may put a proxy in between).
    pub nats_url: String,
    /// Extra `VOIDVM_*` variables for the `voidvm` binary.
    pub extra_vars: Vec<(String, String)>,
}

impl Env {
    pub async fn new() -> Env {
        require_guest();
        require_nats().await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("voidvm_test_{id}");
        let mut conn = connect_admin().await;
        sqlx::Executor::execute(
            &mut conn,
            format!(r#"CREATE DATABASE "{db_name}""#).as_str(),
        )
        .await
        .expect("the test database could not be created");
        let data_dir = std::env::temp_dir().join(format!("voidvm-test-{}{id}", test_run()));
        std::fs::create_dir_all(&data_dir).expect("the test data dir could not be created");
        let short = &id[..12];
        Env {
            database_url: format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            db_name,
            data_dir,
            nats_prefix: format!("t{short}"),
            // The run id too: test.sh looks for streams of its run once the suite has ended.
            nats_stream: format!("T{}{short}", test_run()),
            nats_url: NATS_URL.to_string(),
            extra_vars: Vec::new(),
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            listen: "127.0.0.1:0".parse().expect("a literal address"),
            database_url: self.database_url.clone(),
            database_connections: TEST_CONNECTIONS,
            data_dir: self.data_dir.clone(),
            images_dir: Some(images_dir()),
            accel: AccelSetting::Tcg,
            jwt_secret: Some(JWT_SECRET.to_string()),
            workers: 2,
            default_stop_timeout_secs: 10,
            nats_url: self.nats_url.clone(),
            nats: voidvm::config::NatsSettings {
                prefix: self.nats_prefix.clone(),
                stream: self.nats_stream.clone(),
                retention_secs: 3600,
                ..Default::default()
            },
            // Tests make many requests quickly; the rate-limit tests lower it through /config.
            rate_limit: voidvm::config::RateLimitSettings {
                requests_per_minute: 1_000_000,
                login_failures: 1_000_000,
                ..Default::default()
            },
            // The tests' webhook receivers listen on 127.0.0.1.
            webhooks: voidvm::config::WebhookSettings {
                allow_private: true,
                ..Default::default()
            },
            // The tests' image servers listen on 127.0.0.1 too.
            images: voidvm::config::ImageSettings {
                allow_private: true,
                ..Default::default()
            },
            ..Settings::default()
        }
    }

    /// The same settings as environment variables, for the `voidvm` binary.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        vec![
            ("VOIDVM_LISTEN".into(), "127.0.0.1:0".into()),
            ("VOIDVM_DATABASE_URL".into(), self.database_url.clone()),
            (
                "VOIDVM_DATABASE_CONNECTIONS".into(),
                TEST_CONNECTIONS.to_string(),
            ),
            (
                "VOIDVM_DATA_DIR".into(),
                self.data_dir.display().to_string(),
            ),
            (
                "VOIDVM_IMAGES_DIR".into(),
                images_dir().display().to_string(),
            ),
            ("VOIDVM_ACCEL".into(), "tcg".into()),
            ("VOIDVM_JWT_SECRET".into(), JWT_SECRET.into()),
            ("VOIDVM_WORKERS".into(), "2".into()),
            ("VOIDVM_DEFAULT_STOP_TIMEOUT_SECS".into(), "10".into()),
            ("VOIDVM_NATS_URL".into(), self.nats_url.clone()),
            ("VOIDVM_NATS__PREFIX".into(), self.nats_prefix.clone()),
            ("VOIDVM_NATS__STREAM".into(), self.nats_stream.clone()),
            ("VOIDVM_NATS__RETENTION_SECS".into(), "3600".into()),
            (
                "VOIDVM_RATE_LIMIT__REQUESTS_PER_MINUTE".into(),
                "1000000".into(),
            ),
            ("VOIDVM_RATE_LIMIT__LOGIN_FAILURES".into(), "1000000".into()),
            ("VOIDVM_WEBHOOKS__ALLOW_PRIVATE".into(), "true".into()),
            ("VOIDVM_IMAGES__ALLOW_PRIVATE".into(), "true".into()),
        ]
        .into_iter()
        .chain(self.extra_vars.iter().cloned())
        .collect()
    }
}

/// Fails the test, with the reason, unless NATS with JetStream answers.
async fn require_nats() {
    let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(NATS_URL))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("NATS must be running on {NATS_URL} for the tests"));
    // A stream that does not exist: JetStream answers "not found"; without JetStream nobody does.
    if let Err(e) = async_nats::jetstream::new(client)
        .get_stream("VOIDVM_PROBE_NONE")
        .await
    {
        if !e.to_string().contains("not found") {
            panic!("NATS on {NATS_URL} must have JetStream enabled (-js) for the tests ({e})");
        }
    }
}

async fn connect_admin() -> sqlx::PgConnection {
    use sqlx::ConnectOptions;
    // Dropping a database takes a while: that is no slow statement to warn about.
    PG_ADMIN_URL
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("a literal URL")
        .disable_statement_logging()
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL must be running on 127.0.0.1:5432 for the tests ({e})")
        })
}

/// Kills every QEMU the test started and drops its database.
impl Drop for Env {
    fn drop(&mut self) {
        kill_machines(&self.data_dir);
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let db = self.db_name.clone();
        let stream = self.nats_stream.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut conn = connect_admin().await;
                let _ = sqlx::Executor::execute(
                    &mut conn,
                    format!(r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#).as_str(),
                )
                .await;
                if let Ok(client) = async_nats::connect(NATS_URL).await {
                    let _ = async_nats::jetstream::new(client)
                        .delete_stream(&stream)
                        .await;
                }
            });
        })
        .join();
    }
}

pub fn qemu_pid(data_dir: &Path, vm_id: &str) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("vms").join(vm_id).join("qemu.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub token: String,
    pub env: Env,
    server: Option<std::process::Child>,
    /// In-process servers on this test's database (stopped before it is dropped).
    nodes: Mutex<Vec<InProcess>>,
}

/// VoidVM in this process, on a free port, logged in as admin.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// `spawn_app` with settings changed by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_observations(tweak).await.0
}

/// VoidVM in this process on an environment the test prepared first.
pub async fn spawn_on(env: Env) -> TestApp {
    let (address, node) = InProcess::start(env.settings()).await;
    let app = TestApp::connect(address, env, None).await;
    app.lock_nodes().push(node);
    app
}

/// `spawn_on`, running `before` (given the database's URL) once the node has started and
/// before the first request (the login) reaches it.
pub async fn spawn_on_then<F, Fut, T>(env: Env, before: F) -> (TestApp, T)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let (address, node) = InProcess::start(env.settings()).await;
    // Holding the node: it stops before the database is dropped, whatever `before` does.
    let mut app = TestApp::unconnected(address, env, None);
    app.lock_nodes().push(node);
    let seen = before(app.env.database_url.clone()).await;
    app.token = app.login_token(ADMIN.0, ADMIN.1).await;
    (app, seen)
}

/// `spawn_app_with`, also returning where the app's machine watchers deliver observations, so a
/// test can deliver one as a watcher would, at the moment it chooses.
pub async fn spawn_app_with_observations(
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, voidvm::hypervisor::ObservationSender) {
    let env = Env::new().await;
    let mut settings = env.settings();
    tweak(&mut settings);
    let (address, node) = InProcess::start(settings).await;
    let observations = node.observations.clone();
    let app = TestApp::connect(address, env, None).await;
    app.lock_nodes().push(node);
    (app, observations)
}

/// A second VoidVM node in this process, on the same database and NATS subjects as `app`;
/// returns its address.
pub async fn spawn_second_node(app: &TestApp) -> String {
    let mut settings = app.env.settings();
    // Its own node id: the data dir (and so the kept id) is the first node's.
    settings.node_id = Some(format!("second-{}", uuid::Uuid::new_v4().simple()));
    let (address, node) = InProcess::start(settings).await;
    app.lock_nodes().push(node);
    address
}

/// VoidVM as its own process (`voidvm serve`), so a test can SIGKILL and restart it.
pub async fn spawn_server(env: Env) -> TestApp {
    let (address, child) = start_binary(&env).await;
    TestApp::connect(address, env, Some(child)).await
}

async fn start_binary(env: &Env) -> (String, std::process::Child) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_voidvm"))
        .arg("serve")
        .envs(env.env_vars())
        .stdout(Stdio::piped())
        .stderr(if test_log() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("the voidvm binary could not be started");
    let stdout = child.stdout.take().expect("stdout is piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        line
    })
    .await
    .expect("the stdout reader failed");
    let address = line
        .trim()
        .strip_prefix("VoidVM listening on ")
        .unwrap_or_else(|| panic!("voidvm did not report its address: {line:?}"))
        .to_string();
    (address, child)
}

impl TestApp {
    async fn connect(address: String, env: Env, server: Option<std::process::Child>) -> TestApp {
        let mut app = TestApp::unconnected(address, env, server);
        app.token = app.login_token(ADMIN.0, ADMIN.1).await;
        app
    }

    /// Not logged in yet.
    fn unconnected(address: String, env: Env, server: Option<std::process::Child>) -> TestApp {
        // Idle connections are dropped before the server's keep-alive (5 s) closes them: a
        // request sent on a connection the server is closing fails with `IncompleteMessage`.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("a client");
        TestApp {
            address,
            client,
            token: String::new(),
            env,
            server,
            nodes: Mutex::default(),
        }
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, Vec<InProcess>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGKILLs the server process (not its VMs).
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the server process and waits for it to exit.
    pub async fn terminate_server(&mut self) -> std::process::ExitStatus {
        let mut child = self.server.take().expect("a server process");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("the waiter")
            .expect("the exit status")
    }

    /// Starts the server process again on the same database and data dir, and logs the admin in.
    pub async fn restart_server(&mut self) {
        self.restart_process().await;
        self.token = self.login_token(ADMIN.0, ADMIN.1).await;
    }

    /// Kills the server process and starts it again on the same database and data dir; the
    /// admin's token stays as it was.
    pub async fn restart_process(&mut self) {
        self.kill_server();
        let (address, child) = start_binary(&self.env).await;
        self.address = address;
        self.server = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Any request, with the admin token; returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.token.clone(), method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method.clone(), self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the request failed");
        checked(&method, path, resp).await
    }

    pub async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("login request failed");
        checked(&Method::POST, "/api/v1/auth/login", resp).await
    }

    pub async fn login_token(&self, username: &str, password: &str) -> String {
        let (status, body) = self.login(username, password).await;
        assert_eq!(status, StatusCode::OK, "login failed: {body}");
        body["token"].as_str().expect("a token").to_string()
    }

    /// Creates a user straight in the database (the users API comes later) and logs in.
    pub async fn create_user(&self, username: &str) -> String {
        let pool = sqlx::PgPool::connect(&self.env.database_url)
            .await
            .expect("the test database");
        let hash = voidvm::auth::password::hash("password1".into())
            .await
            .expect("a hash");
        insert_user(&pool, &format!("user-{username}"), username, &hash).await;
        self.login_token(username, "password1").await
    }

    pub async fn me(&self) -> (StatusCode, Value) {
        self.call(Method::GET, "/api/v1/auth/me", None).await
    }

    pub async fn create_vm(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/vms", Some(body)).await
    }

    pub async fn list_vms(&self, query: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/v1/vms{query}"), None)
            .await
    }

    pub async fn get_vm(&self, id: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/v1/vms/{id}"), None)
            .await
    }

    pub async fn patch_vm(&self, id: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, &format!("/api/v1/vms/{id}"), Some(body))
            .await
    }

    pub async fn delete_vm(&self, id: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, &format!("/api/v1/vms/{id}"), None)
            .await
    }

    /// `POST /vms/{id}/{verb}`.
    pub async fn vm_action(
        &self,
        id: &str,
        verb: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/api/v1/vms/{id}/{verb}"), body)
            .await
    }

    pub async fn vm_events(&self, id: &str, query: &str) -> (StatusCode, Value) {
        self.call(
            Method::GET,
            &format!("/api/v1/vms/{id}/events{query}"),
            None,
        )
        .await
    }

    /// `GET /events`.
    pub async fn events(&self, query: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/v1/events{query}"), None)
            .await
    }

    /// `GET /logs`.
    pub async fn logs(&self, query: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/v1/logs{query}"), None)
            .await
    }

    /// `GET /vms/{id}/history?at=`.
    pub async fn history(&self, id: &str, at: &str) -> (StatusCode, Value) {
        let at = utf8_percent_encode(at);
        self.call(
            Method::GET,
            &format!("/api/v1/vms/{id}/history?at={at}"),
            None,
        )
        .await
    }

    /// The server process's peak resident memory in KiB (process-based servers only).
    pub fn server_peak_kib(&self) -> u64 {
        let pid = self.server.as_ref().expect("a server process").id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("the server's /proc status")
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    pub async fn get_job(&self, id: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/v1/jobs/{id}"), None)
            .await
    }

    pub async fn list_jobs(&self, query: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/api/v1/jobs{query}"), None)
            .await
    }

    pub async fn cancel_job(&self, id: &str) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), None)
            .await
    }

    /// Waits for a job to end and returns it; fails the test if it does not end in 90 s.
    pub async fn wait_job(&self, id: &str) -> Value {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/api/v1/jobs/{id}/wait?timeout=90"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "wait failed: {body}");
        assert_eq!(
            body["data"]["finished"], true,
            "job {id} did not end: {body}"
        );
        body["data"].clone()
    }

    /// Submits a verb, waits for its job, and asserts it succeeded.
    pub async fn act_and_wait(&self, id: &str, verb: &str, body: Option<Value>) -> Value {
        let (status, resp) = self.vm_action(id, verb, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{verb}: {resp}");
        let job = self
            .wait_job(resp["data"]["jobId"].as_str().expect("a job id"))
            .await;
        assert_eq!(job["status"], "succeeded", "{verb}: {job}");
        job
    }

    /// Creates a VM from the test guest and waits until it is provisioned.
    pub async fn create_guest(&self, name: &str) -> String {
        self.create_and_provision(
            json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}),
        )
        .await
    }

    /// A VM on a blank disk (its image is not on the host; its firmware finds nothing to boot
    /// and ignores ACPI), created and provisioned.
    pub async fn create_blank(&self, name: &str) -> String {
        self.create_and_provision(json!({"name": name, "cpu": 1, "memory": 128, "disk": 1}))
            .await
    }

    /// Creates the VM `body` describes and waits for its provisioning to succeed; its id.
    pub async fn create_and_provision(&self, body: Value) -> String {
        let (status, body) = self.create_vm(body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["data"]["id"].as_str().expect("an id").to_string();
        let job = self
            .wait_job(body["data"]["jobId"].as_str().expect("a job"))
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
        id
    }

    pub async fn status_of(&self, id: &str) -> String {
        let (_, body) = self.get_vm(id).await;
        body["data"]["status"].as_str().unwrap_or("?").to_string()
    }

    /// Polls until the VM reaches `status`, up to `secs`.
    pub async fn await_status(&self, id: &str, status: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let now = self.status_of(id).await;
            if now == status {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "VM {id} did not become {status} within {secs} s (it is {now})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Positions of every VM event after `after` that `GET /events` shows this token, oldest
    /// first (the stream and the feed carry VM streams; the account streams are in the log only).
    pub async fn log_positions(&self, token: &str, after: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let (_, page) = self
                .call_as(
                    token,
                    Method::GET,
                    &format!("/api/v1/events?after={cursor}&limit=1000"),
                    None,
                )
                .await;
            let items = page["data"]["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if items.is_empty() {
                return out;
            }
            for item in items {
                cursor = item["position"].as_i64().expect("a position");
                if item["streamType"] == "vm" {
                    out.push(cursor);
                }
            }
        }
    }

    pub fn serial_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.env.data_dir.join("vms").join(id).join("serial.log"))
            .unwrap_or_default()
    }

    pub fn pid_of(&self, id: &str) -> Option<i32> {
        qemu_pid(&self.env.data_dir, id)
    }
}

/// Stops every server of the test (then `Env` kills its QEMUs and drops its database).
impl Drop for TestApp {
    fn drop(&mut self) {
        // Idle keep-alive connections would hold a graceful stop up.
        self.client = reqwest::Client::new();
        let mut nodes = std::mem::take(&mut *self.lock_nodes());
        for node in nodes.iter_mut().rev() {
            node.stop();
        }
        self.kill_server();
    }
}

/// Polls `check` until it holds, up to `secs`.
/// The answer's status and JSON body (`null` when it is not JSON), after checking it against the
/// OpenAPI document.
async fn checked(method: &Method, path: &str, resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    crate::openapi::check_headers(method, path, status, resp.headers());
    let bytes = resp.bytes().await.expect("the answer's body");
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let json = content_type.starts_with("application/json");
    crate::openapi::check_answer(
        method,
        path,
        status,
        &content_type,
        body.as_ref().filter(|_| json),
    );
    (status, body.unwrap_or(Value::Null))
}

/// A JSON Schema (draft 2020-12) compiled once per test run; `key` names it, in failures too.
pub fn schema_validator(key: &str, schema: impl FnOnce() -> Value) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache
        .entry(key.to_string())
        .or_insert_with(|| {
            Arc::new(
                jsonschema::draft202012::new(&schema())
                    .unwrap_or_else(|e| panic!("{key} is not a valid schema: {e}")),
            )
        })
        .clone()
}

/// Why `instance` does not match, one line per reason.
pub fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

pub async fn eventually<F: FnMut() -> bool>(secs: u64, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`eventually`] with a check that must wait for an answer (an HTTP request, a query).
pub async fn eventually_async<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enough escaping for the values tests put in query strings (RFC 3339 times carry `+` and `:`).
pub fn utf8_percent_encode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

/// The command that creates a small busybox VM `vm_id`, named `name`, owned by user `u`, whose
/// provisioning job is `job_id`: for tests that drive the event store directly.
/// Adds user "u", the owner [`create_command`] names, for tests that drive the event store
/// directly (a VM's creation holds its owner's row, and refuses an owner who does not exist).
pub async fn add_owner(pool: &sqlx::PgPool) {
    insert_user(pool, "u", "u", "not a hash: no login").await;
}

/// Adds a user with role `user` and `hash` as their password's hash, as the API would.
async fn insert_user(pool: &sqlx::PgPool, id: &str, username: &str, hash: &str) {
    let create = voidvm::accounts::UserCommand::Create {
        username: username.to_string(),
        email: None,
        role: "user".to_string(),
        quota: Default::default(),
        rate_limit: None,
    };
    let meta = voidvm::store::CommandMeta::system("test");
    let mut tx = pool.begin().await.expect("a transaction");
    voidvm::store::accounts::create_user(&mut tx, &meta, id, create, hash)
        .await
        .expect("the user");
    tx.commit().await.expect("the user commits");
}

pub fn create_command(vm_id: &str, name: &str, job_id: &str) -> voidvm::vm::VmCommand {
    voidvm::vm::VmCommand::Create {
        vm_id: vm_id.into(),
        spec: voidvm::vm::VmSpec {
            name: name.into(),
            description: None,
            cpu: 1,
            memory: 128,
            disk: 1,
            os: "busybox".into(),
            network: Default::default(),
            cloud_init: None,
            boot_order: Vec::new(),
        },
        owner: voidvm::vm::Owner {
            id: "u".into(),
            name: "u".into(),
        },
        image_present: true,
        job_id: job_id.into(),
    }
}
