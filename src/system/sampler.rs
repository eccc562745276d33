//! The background task that samples the host for `/system/stats`: every
//! `VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS` it reads CPU and memory (`monitor::HostMonitor`), keeps the
//! reading as this node's latest, and writes it to `system_samples`. Once an hour (and at start)
//! it deletes samples older than [`RETENTION`], so the table stays bounded. A database that does
//! not answer costs that sample, nothing more.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::SystemState;
use crate::monitor::{HostMonitor, HostSample};
use crate::store::system_samples;

/// How long samples are kept: the longest period `/system/stats` shows.
pub const RETENTION: chrono::Duration = chrono::Duration::days(30);
/// How often old samples are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// Samples every `every` until `shutdown`.
pub async fn run(
    state: Arc<SystemState>,
    pool: PgPool,
    every: Duration,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = sample_forever(&state, &pool, every) => {}
        () = shutdown.cancelled() => tracing::debug!("host sampler stopped"),
    }
}

async fn sample_forever(state: &SystemState, pool: &PgPool, every: Duration) {
    let mut monitor = HostMonitor::new(state.data_dir.clone());
    // The first reading only primes the CPU figure (it is measured between two readings).
    monitor.sample();
    // Settings are validated to at least 100 ms; a zero would stop the timer from working.
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    let mut prune_at = Instant::now();
    loop {
        if Instant::now() >= prune_at {
            prune_at = Instant::now() + PRUNE_EVERY;
            prune(pool).await;
        }
        tick.tick().await;
        let sample = monitor.sample();
        record(state, pool, &sample).await;
        state.set_latest(sample);
    }
}

async fn prune(pool: &PgPool) {
    match system_samples::prune(pool, Utc::now() - RETENTION).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(deleted = n, "old host samples deleted"),
        Err(e) => {
            tracing::debug!(error = %crate::telemetry::chain(&e), "old host samples could not be deleted")
        }
    }
}

async fn record(state: &SystemState, pool: &PgPool, sample: &HostSample) {
    let written = system_samples::insert(
        pool,
        &state.node,
        Utc::now(),
        f64::from(sample.cpu.percent),
        memory_percent(sample),
    )
    .await;
    if let Err(e) = written {
        tracing::debug!(error = %crate::telemetry::chain(&e), "a host sample could not be written");
    }
}

/// Memory in use over total, in percent (0 when the host says nothing).
pub fn memory_percent(sample: &HostSample) -> f64 {
    let m = &sample.memory;
    if m.total_bytes == 0 {
        return 0.0;
    }
    (m.used_bytes as f64 / m.total_bytes as f64 * 100.0).clamp(0.0, 100.0)
}
