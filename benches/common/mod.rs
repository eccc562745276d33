//! What the load harnesses share: percentiles and milliseconds for their tables, a database of
//! their own, what they leave behind (a NATS stream, a data dir, processes) removed at the end,
//! a login, a node started and stopped, and pgbench as a baseline. Each harness uses a part of it.
#![allow(dead_code)]

pub mod lean_client;
pub mod pgbench;
pub mod wal;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// The server binary's allocator (`src/main.rs`): a harness that runs the server in its own
/// process measures what `voidvm serve` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub const NATS_URL: &str = "nats://127.0.0.1:4222";

/// p50 and p99 of `times` (sorted in place).
pub fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database for one run, dropped (with its connections) when the guard goes, also when
/// the run fails.
pub struct BenchDb {
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(name: String) -> BenchDb {
        use sqlx::{Connection, Executor};
        let mut admin = sqlx::PgConnection::connect(ADMIN_URL)
            .await
            .expect("PostgreSQL must be running on 127.0.0.1:5432");
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("the bench database");
        let _ = admin.close().await;
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        BenchDb { name, url }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        on_own_runtime(async move {
            use sqlx::{Connection, Executor};
            if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_URL).await {
                let _ = admin
                    .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
                    .await;
            }
        });
    }
}

/// Runs `work` to its end on a runtime and thread of its own: a `Drop` may run inside a harness's
/// runtime, which cannot be blocked on.
pub fn on_own_runtime(work: impl Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}

/// What a run leaves behind, removed when it ends, also when it fails: the processes it started
/// by hand and any VM's QEMU still running in its data dir, the data dir, and its NATS stream.
pub struct Leftovers {
    pub stream: String,
    pub data_dir: PathBuf,
    pub pids: Vec<u32>,
}

impl Leftovers {
    pub fn new(stream: String, data_dir: PathBuf) -> Leftovers {
        Leftovers {
            stream,
            data_dir,
            pids: Vec::new(),
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let vm_pids = std::fs::read_dir(self.data_dir.join("vms"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("qemu.pid")).ok())
            .filter_map(|p| p.trim().parse::<u32>().ok());
        for pid in self.pids.iter().copied().chain(vm_pids) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let stream = self.stream.clone();
        on_own_runtime(async move {
            if let Ok(client) = async_nats::connect(NATS_URL).await {
                let js = async_nats::jetstream::new(client);
                let _ = js.delete_stream(&stream).await;
                if js.get_stream(&stream).await.is_ok() {
                    eprintln!("warning: the JetStream stream {stream} could not be deleted");
                }
            }
        });
    }
}

/// What each harness starts from: its id, its database, and its own NATS stream and data dir
/// (named from the id, removed at the end, also when it fails), so that it never meets another
/// run, a test, or a real server on the same NATS (whose default stream it would otherwise take).
pub struct Run {
    pub id: String,
    /// The id's first 12 characters, for names with a length limit (stream, subjects).
    pub short: String,
    pub db: BenchDb,
    pub cleanup: Leftovers,
}

impl Run {
    pub async fn new() -> Run {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let short = id[..12].to_string();
        let db = BenchDb::create(format!("voidvm_bench_{id}")).await;
        let cleanup = Leftovers::new(
            stream_name(&short),
            std::env::temp_dir().join(format!("voidvm-bench-{id}")),
        );
        Run {
            id,
            short,
            db,
            cleanup,
        }
    }
}

/// The NATS stream of a bench run: `B`, the suite run's id when `scripts/test.sh` runs it
/// (`TEST_RUN`: it looks for streams of its run once the suite has ended), and `short`.
pub fn stream_name(short: &str) -> String {
    let run = std::env::var("TEST_RUN")
        .ok()
        .filter(|r| r.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_default();
    format!("B{run}{short}")
}

/// A server on an ephemeral port, on `db`, with `data_dir`, the test guest's images, TCG, and a
/// NATS stream and prefix of this run's own ([`stream_name`], `b<short>`).
pub fn server_settings(
    db: &BenchDb,
    short: &str,
    data_dir: &std::path::Path,
) -> voidvm::config::Settings {
    voidvm::config::Settings {
        listen: "127.0.0.1:0".parse().expect("an address"),
        database_url: db.url.clone(),
        data_dir: data_dir.to_path_buf(),
        images_dir: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/images")),
        accel: voidvm::hypervisor::accel::AccelSetting::Tcg,
        jwt_secret: Some("bench-secret-bench-secret-bench-secret-00".into()),
        nats_url: NATS_URL.to_string(),
        nats: voidvm::config::NatsSettings {
            prefix: format!("b{short}"),
            stream: stream_name(short),
            retention_secs: 3600,
            ..voidvm::config::NatsSettings::default()
        },
        // A load harness is one user sending as fast as it can; it measures throughput, not the
        // per-user budget (whose own cost is part of every request all the same).
        rate_limit: voidvm::config::RateLimitSettings {
            requests_per_minute: 100_000_000,
            ..voidvm::config::RateLimitSettings::default()
        },
        ..voidvm::config::Settings::default()
    }
}

/// A node the bench runs on its own actix system.
pub struct Node {
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    server: actix_rt::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Builds and runs a node with `settings`.
    pub async fn start(settings: voidvm::config::Settings) -> Node {
        let app = voidvm::startup::Application::build(settings).await.expect(
            "the application (PostgreSQL on 127.0.0.1:5432 and NATS with JetStream on \
                 127.0.0.1:4222 must be running)",
        );
        Node {
            addr: app.addr(),
            stop: app.stop_token(),
            server: actix_rt::spawn(app.run_until_stopped()),
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops the node as SIGTERM would and waits until it has: its connections to PostgreSQL and
    /// NATS are closed, and nothing of it writes to its database or stream any more, which may
    /// then go.
    pub async fn stop(self) {
        self.stop.cancel();
        self.server
            .await
            .expect("the node's task")
            .expect("the node stopped cleanly");
    }
}

/// Logs in as the first-start admin and returns the token.
pub async fn login(http: &reqwest::Client, base: &str) -> String {
    let resp = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": "admin123"}))
        .send()
        .await
        .expect("login");
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("login body");
    assert!(status.is_success(), "login failed ({status}): {body}");
    body["token"].as_str().expect("a token").to_string()
}
