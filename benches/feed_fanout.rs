//! CPU cost of fanning one committed event out to many WebSocket connections, with criterion.
//!
//! `cargo bench --bench feed_fanout` compares, for 100 and 1,000 connections following one VM:
//! the frame made once and shared (what `/ws` does: `ws::protocol::status_frame`), and a frame
//! made for each connection (what sharing saves), against a baseline measured in the same run:
//! serialising the event's JSON once. Under `cargo test` each case runs once, as a smoke test.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;
use voidvm::bus::FeedEvent;
use voidvm::store::audit::AuditRow;
use voidvm::store::feed::FeedRow;
use voidvm::ws::protocol::status_frame;

/// A typical event on the feed: a VM's description changed through the API.
fn event() -> FeedEvent {
    FeedEvent::from_row(&FeedRow {
        row: AuditRow {
            position: 1_234_567,
            aggregate_type: "vm".into(),
            aggregate_id: "vm-k3j9x0w2p7qa".into(),
            sequence: 42,
            event_type: "VmReconfigured".into(),
            version: "1".into(),
            payload: json!({"VmReconfigured": {
                "name": null, "description": "web front end, second replica", "cpu": null,
                "memory": null, "requiresRestart": false
            }}),
            metadata: serde_json::from_value(json!({
                "actor_id": "user-4f1c2d", "actor_name": "ann", "via": "rest",
                "request_id": "6f0e1b8e-3c52-4a57-9d3e-0c1f3b2a9e11", "client_addr": "10.0.0.12",
                "owner_id": "user-4f1c2d", "status": "running"
            }))
            .expect("stored metadata reads"),
            recorded_at: chrono::Utc::now(),
            level: "info".into(),
        },
        owner_id: Some("user-4f1c2d".into()),
    })
    .expect("a VM event")
}

/// The same event as it arrives from NATS: nothing rendered yet.
fn fresh(event: &FeedEvent) -> FeedEvent {
    FeedEvent {
        frames: Arc::default(),
        ..event.clone()
    }
}

fn fan_out(c: &mut Criterion) {
    let base = event();
    let mut group = c.benchmark_group("fan-out of one event");
    group.bench_function("baseline: serialise the event once", |b| {
        b.iter(|| serde_json::to_string(black_box(&*base.body)))
    });
    for connections in [100usize, 1000] {
        group.bench_with_input(
            BenchmarkId::new("one frame shared", connections),
            &connections,
            |b, &n| {
                b.iter(|| {
                    let event = fresh(&base);
                    for _ in 0..n {
                        black_box(status_frame(&event, || None));
                    }
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("a frame per connection", connections),
            &connections,
            |b, &n| {
                b.iter(|| {
                    for _ in 0..n {
                        black_box(status_frame(&fresh(&base), || None));
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
