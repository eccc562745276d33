//! Load harness for the write path, against a live VoidVM on a fresh
//! database, each next to what PostgreSQL itself does on this machine in the same run.
//!
//! `cargo bench --bench command_load` reports, at 64 connections, commands accepted per second
//! and their p50/p99: `PATCH /vms/{id}` (one `VmReconfigured`) and `POST /vms/{id}/start` on
//! distinct stopped VMs (one event that opens a job), against pgbench committing the same row
//! writes (the event row, with its job for a start, and the VM's list row) with no lock of ours,
//! in two shapes: a transaction of two statements, and the one statement VoidVM itself sends.
//! The same commands are measured again at 16 connections (PATCH, and starts of held VMs)
//! against pgbench's transaction at 16: on 2 cores, 64 connections saturate the machine and
//! most of a command's time there is its place in the queue, which these rows show.
//! (`GET /vms/{id}` against a primary-key read is `benches/vm_read.rs`.)
//!
//! The starts are accepted by a node with no job workers (an API node; its jobs stay queued), so
//! the figure is the cost of accepting a command, not of booting QEMU. They are measured twice,
//! on two sets of VMs: VMs the node has not served yet (each start first loads the VM's state, as
//! right after a node starts), then VMs whose actors the node already holds (each was changed
//! once through the node before), as on a node that has been running. The clients run in this
//! process, on the same cores as the server and PostgreSQL, each one connection opened before the
//! clock starts (`common::lean_client`); pgbench's client is C.
//! Under `cargo test` (no `--bench`) it runs the same path at a small scale, as a smoke test.

mod common;
use common::lean_client::{self, Call, MakeCall, Measured};
use common::pgbench::{self, PgbenchRun};
use common::{login, ms, percentiles, server_settings, wal, BenchDb, Node, Run};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use voidvm::config::Settings;

struct Scale {
    connections: usize,
    /// VMs created; each is started once, and patched round robin.
    vms: usize,
    patches: usize,
    /// Fewer connections, for the same commands at a load the machine is not saturated by.
    few: usize,
    /// VMs started at `few` connections.
    few_vms: usize,
    pgbench_secs: u64,
}

/// VMs created at once while the harness sets up.
const CREATING_AT_ONCE: usize = 16;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench {
        Scale {
            connections: 64,
            vms: 8_192,
            patches: 20_000,
            few: 16,
            few_vms: 4_096,
            pgbench_secs: 10,
        }
    } else {
        Scale {
            connections: 8,
            vms: 16,
            patches: 64,
            few: 2,
            few_vms: 8,
            pgbench_secs: 1,
        }
    };
    let clients = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("command-load-client")
        .build()
        .expect("the clients' runtime");
    let system = actix_rt::System::new();
    system.block_on(run(scale, clients.handle().clone()));
    clients.shutdown_timeout(Duration::from_secs(5));
}

fn settings(db: &BenchDb, short: &str, data_dir: &Path, workers: usize) -> Settings {
    Settings {
        workers,
        ..server_settings(db, short, data_dir)
    }
}

async fn run(scale: Scale, clients: tokio::runtime::Handle) {
    let Run {
        id,
        short,
        db,
        cleanup,
    } = Run::new().await;
    let baseline_db = BenchDb::create(format!("voidvm_bench_{id}_pg")).await;

    // A node with job workers creates and provisions the VMs, then takes the PATCH load.
    let node = Node::start(settings(&db, &short, &cleanup.data_dir, 2)).await;
    let app_addr = node.addr();
    let base = format!("http://{app_addr}");
    let http = client(scale.connections);
    let token = clients
        .spawn({
            let (http, base) = (http.clone(), base.clone());
            async move { login(&http, &base).await }
        })
        .await
        .expect("login");
    let created = Instant::now();
    // Two sets of `scale.vms` (started on VMs new to the API node, and on VMs it holds), one of
    // `scale.few_vms` (started at `scale.few` connections, held), and one more VM per
    // connection, started during the API node's warm-up (see below).
    let total = 2 * scale.vms + scale.few_vms + scale.connections;
    let mut vms = clients
        .spawn(create_vms(http.clone(), base.clone(), token.clone(), total))
        .await
        .expect("the VMs");
    let warmers = Arc::new(vms.split_off(2 * scale.vms + scale.few_vms));
    let few_held = Arc::new(vms.split_off(2 * scale.vms));
    let held = Arc::new(vms.split_off(scale.vms));
    println!(
        "{total} VMs created and provisioned in {:.1} s",
        created.elapsed().as_secs_f64()
    );
    let vms = Arc::new(vms);
    let patches = |connections: usize, requests: usize, vms: &Arc<Vec<String>>| {
        let (token, vms) = (token.clone(), vms.clone());
        clients.spawn(async move {
            let make: MakeCall = Arc::new(move |n| Call {
                method: hyper::Method::PATCH,
                path: format!("/api/v1/vms/{}", vms[n % vms.len()]),
                json: Some(
                    json!({ "description": format!("load {n}") })
                        .to_string()
                        .into(),
                ),
            });
            lean_client::load(app_addr, &token, connections, requests, make, 200).await
        })
    };
    let patch = logged(|| patches(scale.connections, scale.patches, &vms))
        .await
        .expect("the PATCH load");
    // On the VMs started at fewer connections later, not on `vms`: the PATCH load's commits per
    // transaction, counted on `vms` below, are then those of the 64-connection phase alone.
    let patch_few = logged(|| patches(scale.few, scale.patches / 2, &few_held))
        .await
        .expect("the PATCH load at fewer connections");
    // Progress, for whoever samples PostgreSQL or the processes by phase.
    println!("PATCH phase done; the API node takes the starts");
    // Stopped as SIGTERM would: its HTTP workers' and pools' connections close before the API
    // node opens its own.
    node.stop().await;

    // An API node (no workers) accepts one start per VM; the jobs stay queued.
    let api_node = Node::start(settings(&db, &short, &cleanup.data_dir, 0)).await;
    let api_addr = api_node.addr();
    let base = format!("http://{api_addr}");
    let token = clients
        .spawn({
            let (http, base) = (http.clone(), base.clone());
            async move { login(&http, &base).await }
        })
        .await
        .expect("login");
    // Like pgbench, which connects before its clock starts: the new node's HTTP connections and
    // its HTTP workers' database connections are opened by a round of list reads first, and the
    // VM actors' connections by a round of starts of VMs the measured load does not touch (its
    // VMs' actors are still to be loaded, as on a node that never served them).
    let lists: MakeCall = Arc::new(|_| Call {
        method: hyper::Method::GET,
        path: "/api/v1/vms?limit=1".into(),
        json: None,
    });
    let phase_at = |connections: usize, requests: usize, make: MakeCall, expect: u16| {
        let token = token.clone();
        clients.spawn(async move {
            lean_client::load(api_addr, &token, connections, requests, make, expect).await
        })
    };
    let phase = |requests: usize, make: MakeCall, expect: u16| {
        phase_at(scale.connections, requests, make, expect)
    };
    phase(scale.connections * 4, lists, 200)
        .await
        .expect("the warm-up");
    phase(warmers.len(), start_each(&warmers), 202)
        .await
        .expect("the actors' warm-up");
    println!("warm-up done; start phase");
    let start = logged(|| phase(vms.len(), start_each(&vms), 202))
        .await
        .expect("the start load");
    println!("start phase done");
    // The node's actors of the other sets are loaded by one change of each (not measured).
    let describe = |set: &Arc<Vec<String>>| -> MakeCall {
        let set = set.clone();
        Arc::new(move |n| Call {
            method: hyper::Method::PATCH,
            path: format!("/api/v1/vms/{}", set[n]),
            json: Some(json!({ "description": "held" }).to_string().into()),
        })
    };
    phase(held.len(), describe(&held), 200)
        .await
        .expect("the held VMs' loads");
    println!("held VMs loaded; start phase on them");
    let start_held = logged(|| phase(held.len(), start_each(&held), 202))
        .await
        .expect("the start load on held VMs");
    println!("held start phase done");
    phase(few_held.len(), describe(&few_held), 200)
        .await
        .expect("the loads of the VMs started at fewer connections");
    let start_few = logged(|| phase_at(scale.few, few_held.len(), start_each(&few_held), 202))
        .await
        .expect("the start load at fewer connections");
    println!("start phase at fewer connections done");
    let templates = templates(&db.url, &vms[0]).await;
    let grouped = grouping(
        &db.url,
        [
            ("VmReconfigured", &vms[..]),
            ("StartRequested", &vms[..]),
            ("StartRequested", &held[..]),
            ("StartRequested", &few_held[..]),
        ],
    )
    .await;
    api_node.stop().await;
    let few = format!("start (held, {} connections)", scale.few);
    for ((name, Phase { measured: m, .. }), per_transaction) in [
        ("PATCH", &patch),
        ("start (new to the node)", &start),
        ("start (held)", &start_held),
        (few.as_str(), &start_few),
    ]
    .iter()
    .zip(grouped)
    {
        println!(
            "{name}: {} requests in {:.2} s, {per_transaction:.1} commands per transaction",
            m.requests,
            m.wall.as_secs_f64()
        );
    }
    // pgbench's 64 connections need the slots the two nodes' pools still hold: dropping their
    // database (WITH FORCE) ends those connections.
    drop(db);

    // The baselines: the same rows, written and read by pgbench on the same schema.
    let baseline_pool = voidvm::store::connect_and_migrate(&baseline_db.url, 16)
        .await
        .expect("the baseline database");
    prepare_baseline(&baseline_pool, &templates, scale.vms).await;
    baseline_pool.close().await;
    let work = cleanup.data_dir.join("pgbench");
    let (name, secs) = (baseline_db.name.clone(), scale.pgbench_secs);
    let (many, few) = (scale.connections, scale.few);
    let vms_n = scale.vms;
    let baselines = tokio::task::spawn_blocking(move || {
        let run = |kind: &str, shape: Shape, c: usize| {
            pgbench::run(&name, &write_script(kind, shape, vms_n), c, secs, &work)
        };
        [
            run("patch", Shape::Transaction, many),
            run("patch", Shape::Statement, many),
            run("start", Shape::Transaction, many),
            run("start", Shape::Statement, many),
            run("patch", Shape::Transaction, few),
            run("start", Shape::Transaction, few),
        ]
    })
    .await
    .expect("pgbench");

    report(
        &scale,
        &[
            (
                "PATCH /vms/{id}",
                &patch,
                &baselines[0],
                "pgbench: event + list row, BEGIN; INSERT; UPDATE; COMMIT",
            ),
            (
                "PATCH /vms/{id}",
                &patch,
                &baselines[1],
                "pgbench: event + list row, one statement (as VoidVM writes them)",
            ),
            (
                "start, VM new to node",
                &start,
                &baselines[2],
                "pgbench: event + job + list row, BEGIN; INSERT; INSERT; UPDATE; COMMIT",
            ),
            (
                "start, VM new to node",
                &start,
                &baselines[3],
                "pgbench: event + job + list row, one statement (as VoidVM writes them)",
            ),
            (
                "start, VM held by node",
                &start_held,
                &baselines[2],
                "pgbench: event + job + list row, BEGIN; INSERT; INSERT; UPDATE; COMMIT",
            ),
            (
                "start, VM held by node",
                &start_held,
                &baselines[3],
                "pgbench: event + job + list row, one statement (as VoidVM writes them)",
            ),
        ],
    );
    // The same commands at fewer connections: the machine is busy but not saturated, so what a
    // command waits for is mostly its own work, where at 64 connections it is mostly the queue.
    report_at(
        scale.few,
        &[
            (
                "PATCH /vms/{id}",
                &patch_few,
                &baselines[4],
                "pgbench: event + list row, BEGIN; INSERT; UPDATE; COMMIT",
            ),
            (
                "start, VM held by node",
                &start_few,
                &baselines[5],
                "pgbench: event + job + list row, BEGIN; INSERT; INSERT; UPDATE; COMMIT",
            ),
        ],
    );
    drop(cleanup);
    drop(baseline_db);
}

/// A measured phase, with what PostgreSQL's WAL did during it (`common::wal`).
struct Phase {
    measured: Measured,
    wal_per_command: f64,
    stalled: Duration,
}

/// Runs the phase `start` spawns, reading the cluster's WAL bytes before and after it.
async fn logged(
    start: impl FnOnce() -> tokio::task::JoinHandle<Measured>,
) -> Result<Phase, tokio::task::JoinError> {
    // psql, off the runtime the node's own tasks share.
    let before = tokio::task::spawn_blocking(wal::bytes).await?;
    let measured = start().await?;
    let after = tokio::task::spawn_blocking(wal::bytes).await?;
    let wal_per_command = after.saturating_sub(before) as f64 / measured.requests as f64;
    let ends: Vec<Duration> = measured
        .trace
        .iter()
        .map(|(_, at, took)| *at + *took)
        .collect();
    Ok(Phase {
        stalled: wal::stalled(&ends),
        measured,
        wal_per_command,
    })
}

fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client")
}

/// Creates `count` VMs of the test guest and waits for each one's provisioning job.
async fn create_vms(
    http: reqwest::Client,
    base: String,
    token: String,
    count: usize,
) -> Vec<String> {
    futures::stream::iter(0..count)
        .map(|n| {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            async move {
                let resp = http
                    .post(format!("{base}/api/v1/vms"))
                    .bearer_auth(&token)
                    .json(
                        &json!({"name": format!("load-{n}"), "cpu": 1, "memory": 128,
                                  "disk": 1, "os": "busybox"}),
                    )
                    .send()
                    .await
                    .expect("POST /vms");
                let body: Value = resp.json().await.expect("the created VM");
                let vm = body["data"]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no VM: {body}"));
                let job = body["data"]["jobId"].as_str().expect("a job id");
                let waited: Value = http
                    .get(format!("{base}/api/v1/jobs/{job}/wait?timeout=120"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("GET /jobs/{id}/wait")
                    .json()
                    .await
                    .expect("the job");
                assert_eq!(
                    waited["data"]["status"], "succeeded",
                    "provisioning: {waited}"
                );
                vm.to_string()
            }
        })
        .buffer_unordered(CREATING_AT_ONCE)
        .collect()
        .await
}

/// `POST /vms/{id}/start` of the `n`th of `vms` for request `n`.
fn start_each(vms: &Arc<Vec<String>>) -> MakeCall {
    let vms = vms.clone();
    Arc::new(move |n| Call {
        method: hyper::Method::POST,
        path: format!("/api/v1/vms/{}/start", vms[n]),
        json: None,
    })
}

/// Rows as the server wrote them, to give pgbench the same shapes and sizes.
struct Templates {
    patch: (Value, Value),
    start: (Value, Value),
    state: Value,
}

/// How many commands the server committed per transaction (`src/store/record_batch.rs`), for
/// each phase given as the events of one type on one set of VMs (a phase's `VmReconfigured` or
/// `StartRequested` events, not the warm-ups'), against the transactions that hold them (an
/// event's position is its transaction's id shifted left 16 bits).
async fn grouping<const N: usize>(url: &str, phases: [(&str, &[String]); N]) -> [f64; N] {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("the bench database");
    let mut ratios = [0.0; N];
    for (ratio, (event_type, set)) in ratios.iter_mut().zip(phases) {
        let (events, transactions): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT position >> 16) FROM events
             WHERE event_type = $1 AND aggregate_id = ANY($2)",
        )
        .bind(event_type)
        .bind(set)
        .fetch_one(&pool)
        .await
        .expect("the events per transaction");
        *ratio = events as f64 / transactions.max(1) as f64;
    }
    pool.close().await;
    ratios
}

async fn templates(url: &str, vm: &str) -> Templates {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("the bench database");
    let event = |ty: &'static str| {
        let pool = pool.clone();
        async move {
            let row: (Value, Value) = sqlx::query_as(
                "SELECT payload, metadata FROM events WHERE aggregate_id = $1 AND event_type = $2
                 ORDER BY sequence DESC LIMIT 1",
            )
            .bind(vm)
            .bind(ty)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("no {ty} event of {vm}: {e}"));
            row
        }
    };
    let patch = event("VmReconfigured").await;
    let start = event("StartRequested").await;
    let state: Value = sqlx::query_scalar("SELECT state FROM vms WHERE id = $1")
        .bind(vm)
        .fetch_one(&pool)
        .await
        .expect("the VM's row");
    pool.close().await;
    Templates {
        patch,
        start,
        state,
    }
}

/// The baseline database: the same schema (all migrations), the templates, and `vms` list rows.
async fn prepare_baseline(pool: &sqlx::PgPool, t: &Templates, vms: usize) {
    // pgbench's variables (`:name`) cannot sit inside JSON literals, so the rows' JSON comes from
    // a one-row-per-kind table read by primary key.
    sqlx::query(
        "CREATE TABLE pgb_template (kind text PRIMARY KEY, payload jsonb, metadata jsonb, state jsonb)",
    )
    .execute(pool)
    .await
    .expect("the template table");
    for (kind, (payload, metadata)) in [("patch", &t.patch), ("start", &t.start)] {
        sqlx::query("INSERT INTO pgb_template VALUES ($1, $2, $3, $4)")
            .bind(kind)
            .bind(payload)
            .bind(metadata)
            .bind(&t.state)
            .execute(pool)
            .await
            .expect("a template");
    }
    sqlx::query(
        "INSERT INTO vms (id, owner_id, owner_name, name, status, version, state, created_at, updated_at)
         SELECT 'pgb-' || n, 'owner', 'admin', 'load-' || n, 'stopped', 1, t.state, now(), now()
         FROM generate_series(0, $1 - 1) n, pgb_template t WHERE t.kind = 'patch'",
    )
    .bind(vms as i64)
    .execute(pool)
    .await
    .expect("the list rows");
}

/// How a baseline writes a command's rows.
#[derive(Clone, Copy)]
enum Shape {
    /// `BEGIN; INSERT; UPDATE; COMMIT` (a start's job inserted after its event): four round
    /// trips, five for a start.
    Transaction,
    /// One statement, the event inserted in a data-modifying `WITH` (what VoidVM sends for a
    /// command that writes only its events and the VM's row, `src/store/record.rs`; under load
    /// VoidVM sends several commands of different VMs as one such statement,
    /// `src/store/record_batch.rs`, where pgbench sends one command per transaction, as a client
    /// of PostgreSQL without a server in front would).
    Statement,
}

/// One command's row writes: its event, a start's job (the row the server writes beside the
/// event, `src/store/record.rs`), then the VM's list row, in one transaction. The event's
/// position is given, as the server's statement gives it (migration 0021), so the position
/// trigger does not run on either side.
fn write_script(kind: &str, shape: Shape, vms: usize) -> String {
    let insert = format!(
        "INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
  SELECT pg_current_xact_id()::text::bigint << 16, 'vm', 'pgb-' || :vm, :seq, 'Bench', '1', t.payload,
         jsonb_set(t.metadata, '{{job_id}}', to_jsonb('pgb-' || :seq::text))
  FROM pgb_template t WHERE t.kind = '{kind}'"
    );
    let job = (kind == "start").then(|| {
        format!(
            "INSERT INTO jobs (id, vm_id, stream_type, kind, params, actor_id, created_at, updated_at)
  SELECT 'pgb-' || :seq, 'pgb-' || :vm, 'vm', t.metadata ->> 'job_kind', t.payload,
         t.metadata ->> 'actor_id', now(), now()
  FROM pgb_template t WHERE t.kind = '{kind}'
  ON CONFLICT (id) DO NOTHING"
        )
    });
    let update = format!(
        "UPDATE vms SET status = 'stopped', version = version + 1,
       state = (SELECT state FROM pgb_template WHERE kind = '{kind}'), updated_at = now()
  WHERE id = 'pgb-' || :vm"
    );
    let body = match shape {
        Shape::Transaction => {
            let job = job.map(|j| format!("{j};\n")).unwrap_or_default();
            format!("BEGIN;\n{insert};\n{job}{update};\nCOMMIT;\n")
        }
        Shape::Statement => {
            let job = job
                .map(|j| format!(", opened AS ({j} RETURNING 1)"))
                .unwrap_or_default();
            format!(
                "WITH recorded AS ({insert} RETURNING 1){job}\n{update} RETURNING created_at;\n"
            )
        }
    };
    format!(
        "\\set vm random(0, {last})\n\\set seq random(1, 1000000000000)\n{body}",
        last = vms - 1
    )
}

fn report(scale: &Scale, rows: &[(&str, &Phase, &PgbenchRun, &str)]) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("\n{} VMs, {cores} cores", scale.vms);
    report_at(scale.connections, rows);
}

/// The rows of commands measured at `connections`, each next to its baseline, then what the
/// WAL did in each. With `BENCH_TRACE_DIR` set, each phase's requests (connection, sent at, took;
/// times in µs) are written there as CSV, for a look at when the slow ones came; a first line
/// (`#`) gives when the phase's clock started, to line it up with samples taken outside.
fn report_at(connections: usize, rows: &[(&str, &Phase, &PgbenchRun, &str)]) {
    println!(
        "\n{connections} connections\n{:<22} {:>9} {:>8} {:>8} | {:>9} {:>8} {:>8} | {:>7}",
        "request", "req/s", "p50 ms", "p99 ms", "base/s", "p50 ms", "p99 ms", "ratio"
    );
    for (name, phase, base, what) in rows {
        let m = &phase.measured;
        if let Ok(dir) = std::env::var("BENCH_TRACE_DIR") {
            let file = format!(
                "{dir}/{connections}-{}.csv",
                name.replace([' ', '/', ','], "_")
            );
            let began = m
                .began_at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let lines: String = std::iter::once(format!(
                "# began at {} µs since the epoch\n",
                began.as_micros()
            ))
            .chain(m.trace.iter().map(|(connection, at, took)| {
                format!("{connection},{},{}\n", at.as_micros(), took.as_micros())
            }))
            .collect();
            std::fs::write(&file, lines).expect("the trace is written");
        }
        let mut times = m.latencies.clone();
        let (p50, p99) = percentiles(&mut times);
        println!(
            "{:<22} {:>9.0} {:>8.2} {:>8.2} | {:>9.0} {:>8.2} {:>8.2} | {:>6.2}x  ({what}, {} txns)",
            name,
            m.per_second(),
            ms(p50),
            ms(p99),
            base.tps,
            ms(base.p50),
            ms(base.p99),
            m.per_second() / base.tps,
            base.transactions,
        );
    }
    println!(
        "ratio = VoidVM's requests per second / pgbench's transactions per second, both at \
         {connections} connections, measured in this run."
    );
    println!(
        "\n{:<22} {:>13} {:>11} | {:>13} {:>11}",
        "WAL", "bytes/command", "stalled ms", "bytes/txn", "stalled ms"
    );
    for (name, phase, base, _) in rows {
        println!(
            "{:<22} {:>13.0} {:>6.0} of {:>4.0} | {:>13.0} {:>6.0} of {:>4.0}",
            name,
            phase.wal_per_command,
            ms(phase.stalled),
            ms(phase.measured.wall),
            base.wal_per_transaction,
            ms(base.stalled),
            base.transactions as f64 / base.tps * 1000.0,
        );
    }
    println!(
        "stalled = 10 ms windows in which fewer than a fifth of the phase's median completed; \
         WAL bytes are the whole cluster's (benches/common/wal.rs)."
    );
}
