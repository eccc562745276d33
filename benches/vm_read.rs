//! `GET /api/v1/vms/{id}` against a bare PostgreSQL primary-key read of the same row, in the same
//! run: how much the API (HTTP, authentication, JSON) costs on top of the one query it makes.
//!
//! `cargo bench --bench vm_read` runs 16 concurrent clients for each side and prints reads per
//! second, p50 and p99, and the ratio (the issue asks for at least 0.7x). It also measures
//! `GET /health` (an HTTP round trip through the same middleware, no query) and prints the
//! cap a read would have with one query per read: the HTTP round trip and the read, added up.
//! The clients read 64 VMs round robin (both sides the same ones).
//! Authentication comes from the node's cache (`src/auth/cache.rs`). A node alone on its
//! database answers the read from memory (`src/store/solo.rs`); the bench also measures the read
//! while another session holds the solo-writer lock shared, as a second node would, so that the
//! row comes from PostgreSQL, and prints how many reads each way the node counted and how many
//! transactions the database committed meanwhile (the node batches reads, `store::vm_reads`).
//! Under `cargo test` (no `--bench`) it runs the same code at a small scale, as a smoke test.

mod common;
use common::{ms, percentiles, server_settings, Node, Run};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use voidvm::config::{NatsSettings, Settings};

const CLIENTS: usize = 16;
/// How many VMs the clients read, round robin.
const VMS: usize = 64;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let per_client = if bench { 2_000 } else { 10 };
    let system = actix_rt::System::new();
    system.block_on(run(per_client));
}

/// Reads per second over all clients, and every read's latency.
struct Figures {
    per_second: f64,
    times: Vec<Duration>,
}

impl Figures {
    fn print(&mut self, what: &str) {
        let (p50, p99) = percentiles(&mut self.times);
        println!(
            "{what:<34} {:>9.0} reads/s   p50 {:>6.3} ms   p99 {:>6.3} ms",
            self.per_second,
            ms(p50),
            ms(p99)
        );
    }
}

/// Runs `CLIENTS` tasks, each calling `read` `per_client` times.
async fn measure<F, Fut>(per_client: usize, read: F) -> Figures
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let read = read.clone();
            actix_rt::spawn(async move {
                let mut times = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    read().await;
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.expect("a client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    Figures {
        per_second: times.len() as f64 / elapsed,
        times,
    }
}

async fn run(per_client: usize) {
    // Its own stream too: a node makes its stream at start even without a relay.
    let Run {
        short, db, cleanup, ..
    } = Run::new().await;
    let base_settings = server_settings(&db, &short, &cleanup.data_dir);
    let settings = Settings {
        // One user sending as fast as it can: the per-user budget is not what is measured.
        rate_limit: voidvm::config::RateLimitSettings {
            requests_per_minute: 100_000_000,
            login_failures: 100_000_000,
            ..voidvm::config::RateLimitSettings::default()
        },
        // Nothing to publish.
        nats: NatsSettings {
            relay: false,
            ..base_settings.nats.clone()
        },
        ..base_settings
    };
    let node = Node::start(settings).await;
    let base = format!("http://{}", node.addr());

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("a client");
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": "admin123"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("JSON");
    let token = login["token"].as_str().expect("a token").to_string();
    // Reads go round robin over several VMs, as many clients reading their own VMs would, so
    // that no two reads in flight at once are of one row by construction.
    let mut ids = Vec::with_capacity(VMS);
    for n in 0..VMS {
        let created: serde_json::Value = client
            .post(format!("{base}/api/v1/vms"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("read-me-{n}"), "cpu": 1, "memory": 128, "disk": 1}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("JSON");
        ids.push(created["data"]["id"].as_str().expect("a VM id").to_string());
    }

    // The server's own pool options (no ping before each query of a connection in use).
    let pool = voidvm::store::pool_options()
        .max_connections(CLIENTS as u32)
        .connect(&db.url)
        .await
        .expect("the pool");
    let urls: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| format!("{base}/api/v1/vms/{id}"))
            .collect(),
    );
    let token = Arc::new(token);
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));

    let api = {
        let (client, urls, token, next) =
            (client.clone(), urls.clone(), token.clone(), next.clone());
        move || {
            let (client, token) = (client.clone(), token.clone());
            let url = urls[next.fetch_add(1, Ordering::Relaxed) % VMS].clone();
            async move {
                let resp = client
                    .get(url.as_str())
                    .bearer_auth(token.as_str())
                    .send()
                    .await
                    .expect("a read");
                assert!(resp.status().is_success(), "GET answered {}", resp.status());
                resp.bytes().await.expect("the body");
            }
        }
    };
    let bare = {
        let (pool, ids, next) = (pool.clone(), ids.clone(), next.clone());
        move || {
            let pool = pool.clone();
            let id = ids[next.fetch_add(1, Ordering::Relaxed) % VMS].clone();
            async move {
                sqlx::query("SELECT version, state, created_at, updated_at FROM vms WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_one(&pool)
                    .await
                    .expect("the row");
            }
        }
    };
    // The floor under any API read: an HTTP round trip through the same middleware, with no
    // authentication and no query (`GET /health`).
    let floor = {
        let (client, url) = (client.clone(), Arc::new(format!("{base}/health")));
        move || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let resp = client.get(url.as_str()).send().await.expect("a read");
                assert!(resp.status().is_success(), "GET answered {}", resp.status());
                resp.bytes().await.expect("the body");
            }
        }
    };
    // Warm both paths (connections, the auth cache), then measure each twice, interleaved.
    measure(10, api.clone()).await;
    measure(10, bare.clone()).await;
    let mut baseline = measure(per_client, bare.clone()).await;
    let mut through_api = measure(per_client, api.clone()).await;
    let baseline_again = measure(per_client, bare).await;
    let api_again = measure(per_client, api.clone()).await;
    let api_shared = api;
    let mut http_floor = measure(per_client, floor).await;
    let counted_alone = vm_reads(&client, &base).await;
    // As if a second node shared the database: the row comes from PostgreSQL.
    let mut other_node = sqlx::PgConnection::connect(&db.url)
        .await
        .expect("a session");
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(voidvm::store::solo::SOLO_LOCK)
        .execute(&mut other_node)
        .await
        .expect("the solo-writer lock, shared");
    let mut shared = measure(per_client, api_shared).await;
    let counted_shared = vm_reads(&client, &base).await;
    other_node.close().await.expect("the session ends");
    baseline.per_second = (baseline.per_second + baseline_again.per_second) / 2.0;
    baseline.times.extend(baseline_again.times);
    through_api.per_second = (through_api.per_second + api_again.per_second) / 2.0;
    through_api.times.extend(api_again.times);
    println!(
        "{CLIENTS} concurrent clients, {} reads each side",
        baseline.times.len()
    );
    baseline.print("PostgreSQL primary-key read");
    through_api.print("GET /api/v1/vms/{id}");
    shared.print("  the same, database shared");
    http_floor.print("GET /health (HTTP alone, no query)");
    println!(
        "ratio (API / bare read): {:.2}x (node alone; {:.0} of its reads from memory, {:.0} from \
         PostgreSQL)",
        through_api.per_second / baseline.per_second,
        counted_alone.0,
        counted_alone.1
    );
    let from_database = counted_shared.1 - counted_alone.1;
    let queries = counted_shared.2 - counted_alone.2;
    println!(
        "ratio with the database shared: {:.2}x ({from_database:.0} more reads from PostgreSQL, \
         in {queries:.0} queries: {:.1} reads a query)",
        shared.per_second / baseline.per_second,
        from_database / queries.max(1.0)
    );
    // With one query per read, an API read from PostgreSQL is at least an HTTP round trip and
    // the same query, one after the other, on the same cores: it could not beat both costs added
    // up. The node batches the reads that queue up behind one query (`src/store/vm_reads.rs`).
    let ceiling = 1.0 / (1.0 / http_floor.per_second + 1.0 / baseline.per_second);
    println!(
        "one query per read would cap it at (HTTP + read) {ceiling:.0} reads/s = {:.2}x of the \
         bare read; with the database shared the API does {:.0}% of that",
        ceiling / baseline.per_second,
        100.0 * shared.per_second / ceiling
    );
    pool.close().await;
    // Stopped before its database and stream go.
    node.stop().await;
    drop(db);
    drop(cleanup);
}

/// The node's count of VM reads answered from memory and from PostgreSQL, and of the queries
/// those from PostgreSQL took (`/metrics`).
async fn vm_reads(client: &reqwest::Client, base: &str) -> (f64, f64, f64) {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics text");
    let count = |series: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{series} is missing from /metrics"))
    };
    (
        count(r#"voidvm_vm_reads_total{from="memory"}"#),
        count(r#"voidvm_vm_reads_total{from="database"}"#),
        count("voidvm_vm_read_queries_total"),
    )
}
