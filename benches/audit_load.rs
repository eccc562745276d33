//! Load harness for the audit log, against a live VoidVM on a fresh database.
//!
//! `cargo bench --bench audit_load` seeds 1,000,000 events and reports p50/p99 latency of a
//! filtered `GET /events` page (by VM, type, actor, time) through HTTP, next to the same figures
//! for `GET /health` measured in the same run (the baseline: a bare request through the same
//! server and client). It then replays one VM of 10,000 events with and without a snapshot.
//! Under `cargo test` (no `--bench`) it runs the same code at a small scale, as a smoke test.

mod common;
use common::{ms, percentiles, server_settings, Node, Run};

use std::time::Instant;

use serde_json::json;
use voidvm::config::Settings;
use voidvm::store::{self, CommandMeta, VmEventStore};
use voidvm::vm::{JobResult, Owner, Reconfiguration, VmCommand, VmSpec};

struct Scale {
    events: i64,
    vms: i64,
    samples: usize,
    replay_events: usize,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench {
        Scale {
            events: 1_000_000,
            vms: 1_000,
            samples: 300,
            replay_events: 10_000,
        }
    } else {
        Scale {
            events: 5_000,
            vms: 50,
            samples: 5,
            replay_events: 120,
        }
    };
    let system = actix_rt::System::new();
    system.block_on(run(scale));
}

async fn run(scale: Scale) {
    // Its own stream too: the relay publishes the seeded events.
    let Run {
        short, db, cleanup, ..
    } = Run::new().await;
    let url = db.url.clone();
    let settings = Settings {
        // One user sending as fast as it can: the per-user budget is not what is measured.
        rate_limit: voidvm::config::RateLimitSettings {
            requests_per_minute: 100_000_000,
            login_failures: 100_000_000,
            ..voidvm::config::RateLimitSettings::default()
        },
        ..server_settings(&db, &short, &cleanup.data_dir)
    };
    let pool = store::connect_and_migrate(&url, 16)
        .await
        .expect("the pool");
    // The first start's admin, made as the server makes it: the replay below records its VM's
    // owner, and a log that already holds a user is not a first start (no default admin then).
    voidvm::auth::ensure_admin(&pool)
        .await
        .expect("the first admin");
    // Replay first: its VM's provision job is closed before any worker could race for it.
    let replay_report = replay(&pool, &scale).await;
    let node = Node::start(settings).await;
    let base = format!("http://{}", node.addr());

    let seeded = Instant::now();
    seed(&pool, &scale).await;
    println!(
        "seeded {} events over {} VMs in {:.1} s",
        scale.events,
        scale.vms,
        seeded.elapsed().as_secs_f64()
    );

    let client = reqwest::Client::new();
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": "admin123"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login body");
    let token = login["token"].as_str().expect("a token").to_string();

    let max_position = scale.events;
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    // A fixed seed, so every run asks the same questions.
    let mut rng: u64 = 0x5eed;
    let mut queries: Vec<(&str, PathMaker)> = vec![
        (
            "GET /health (baseline)",
            Box::new(|_| "/health".to_string()),
        ),
        (
            "events by VM",
            Box::new(move |r| {
                format!(
                    "/api/v1/events?vmId=vm-b{}&limit=100",
                    next(r) % scale.vms as u64
                )
            }),
        ),
        (
            "events by type",
            Box::new(move |r| {
                format!(
                    "/api/v1/events?type=VmPaused&after={}&limit=100",
                    next(r) % max_position as u64
                )
            }),
        ),
        (
            "events by actor",
            Box::new(move |r| {
                format!(
                    "/api/v1/events?actor=user{}&after={}&limit=100",
                    next(r) % 10,
                    next(r) % max_position as u64
                )
            }),
        ),
        (
            "events by time (1 h)",
            Box::new(move |r| {
                let from = start + chrono::Duration::seconds((next(r) % (29 * 86_400)) as i64);
                let to = from + chrono::Duration::hours(1);
                format!(
                    "/api/v1/events?from={}&to={}&limit=100",
                    encode(&from.to_rfc3339()),
                    encode(&to.to_rfc3339())
                )
            }),
        ),
    ];

    println!(
        "\n{:<24} {:>10} {:>10} {:>12}",
        "request", "p50 ms", "p99 ms", "p50 / base"
    );
    let mut baseline = None;
    for (name, make) in queries.iter_mut() {
        let mut times = Vec::with_capacity(scale.samples);
        for _ in 0..scale.samples {
            let path = make(&mut rng);
            let t = Instant::now();
            let resp = client
                .get(format!("{base}{path}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("a request");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let _ = resp.bytes().await.expect("a body");
            times.push(t.elapsed());
        }
        let (p50, p99) = percentiles(&mut times);
        let base_p50 = *baseline.get_or_insert(p50);
        println!(
            "{:<24} {:>10.2} {:>10.2} {:>11.1}x",
            name,
            ms(p50),
            ms(p99),
            p50.as_secs_f64() / base_p50.as_secs_f64()
        );
    }

    println!("\n{replay_report}");

    pool.close().await;
    // Stopped before its database and stream go.
    node.stop().await;
    drop(db);
    drop(cleanup);
}

/// Writes `events` raw events spread over `vms` VMs, six types, ten actors and thirty days, in
/// transactions of at most 65,536 events (the most one transaction may record).
async fn seed(pool: &sqlx::PgPool, scale: &Scale) {
    const CHUNK: i64 = 65_536;
    for first in (0..scale.events).step_by(CHUNK as usize) {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata, recorded_at)
             SELECT 'vm', 'vm-b' || (n % $2), n / $2 + 1,
                    (ARRAY['VmReconfigured','StartRequested','VmStarted','StopRequested','VmStopped','VmPaused'])[n % 6 + 1],
                    '1',
                    jsonb_build_object('VmReconfigured', jsonb_build_object('description', 'bench ' || n)),
                    jsonb_build_object('actor_id', 'user-' || (n % 10), 'actor_name', 'user' || (n % 10),
                                       'via', 'rest', 'request_id', 'req-' || n),
                    now() - interval '30 days' + n * (interval '30 days' / $1)
             FROM generate_series($3::bigint, $4::bigint) AS n",
        )
        .bind(scale.events)
        .bind(scale.vms)
        .bind(first)
        .bind((first + CHUNK).min(scale.events) - 1)
        .execute(pool)
        .await
        .expect("seeding");
    }
    sqlx::query("VACUUM ANALYZE events")
        .execute(pool)
        .await
        .expect("analyze");
}

/// One VM with `replay_events` real events, loaded from a snapshot plus its tail versus
/// replayed from the first event.
async fn replay(pool: &sqlx::PgPool, scale: &Scale) -> String {
    let store = VmEventStore::new(pool.clone(), 100);
    let meta = CommandMeta::system("bench");
    let id = "vm-replay";
    let mut state = store.load(id).await.expect("load");
    // The VM's owner: a creation holds its owner's row.
    let owner = voidvm::accounts::UserCommand::Create {
        username: "u".to_string(),
        email: None,
        role: "user".to_string(),
        quota: Default::default(),
        rate_limit: None,
    };
    let mut tx = pool.begin().await.expect("a transaction");
    voidvm::store::accounts::create_user(&mut tx, &meta, "u", owner, "not a hash: no login")
        .await
        .expect("the owner");
    tx.commit().await.expect("the owner commits");
    let create = VmCommand::Create {
        vm_id: id.into(),
        spec: VmSpec {
            name: "replay".into(),
            description: None,
            cpu: 1,
            memory: 128,
            disk: 1,
            os: "ubuntu20.04".into(),
            network: Default::default(),
            cloud_init: None,
            boot_order: Vec::new(),
        },
        owner: Owner {
            id: "u".into(),
            name: "u".into(),
        },
        image_present: false,
        job_id: "j".into(),
    };
    store
        .execute(&mut state, create, &meta)
        .await
        .expect("create");
    let provisioned = VmCommand::CompleteJob {
        job_id: "j".into(),
        result: JobResult::Provisioned,
    };
    store
        .execute(&mut state, provisioned, &meta)
        .await
        .expect("provisioned");
    for _ in 2..scale.replay_events {
        let change = VmCommand::Reconfigure(Reconfiguration {
            description: Some(format!("edit {}", state.version)),
            ..Reconfiguration::default()
        });
        store
            .execute(&mut state, change, &meta)
            .await
            .expect("edit");
    }
    let rounds = 20;
    let mut with_snapshot = Vec::new();
    let mut full_replay = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let loaded = store.load(id).await.expect("load");
        with_snapshot.push(t.elapsed());
        let t = Instant::now();
        let replayed = store.state_at(id, state.version).await.expect("replay");
        full_replay.push(t.elapsed());
        assert_eq!(loaded.vm, replayed);
    }
    let (snap, _) = percentiles(&mut with_snapshot);
    let (full, _) = percentiles(&mut full_replay);
    format!(
        "replay of one VM with {} events: from a snapshot {:.2} ms, from the first event {:.2} ms ({:.1}x)",
        state.version,
        ms(snap),
        ms(full),
        full.as_secs_f64() / snap.as_secs_f64()
    )
}

fn encode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Makes the path of the next sampled request from the random state.
type PathMaker = Box<dyn FnMut(&mut u64) -> String>;

/// xorshift: a small deterministic generator.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
