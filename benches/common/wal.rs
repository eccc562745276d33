//! What PostgreSQL's write-ahead log did during a phase, for both sides of a comparison: the
//! bytes it wrote per command (how far the cluster's WAL insert position moved; nothing else
//! writes during a phase), and how long completions stalled. Not `pg_stat_wal`: a backend that
//! stays connected, as a pool's do, reports its WAL there only every second or more.
//!
//! At 64 connections a p99 is mostly where the stretches fall in which few requests complete:
//! each delays every request in flight at once. Some are PostgreSQL's own (a WAL segment created
//! under load: 16 MiB of zeros written and synced while every commit waits, `IO:WALInitWrite`),
//! and pgbench meets them too; counting them on both sides says whose a tail is.

use std::process::Command;
use std::time::Duration;

/// Where the cluster's WAL insert position is, in bytes.
pub fn bytes() -> u64 {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atc",
        ])
        .arg("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap_or_else(|e| panic!("psql could not be run ({e}); it comes with PostgreSQL"));
    assert!(
        output.status.success(),
        "the WAL position could not be read: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("the WAL position is {text:?}: {e}")) as u64
}

/// Width of the windows completions are counted in.
const WINDOW: Duration = Duration::from_millis(10);
/// Windows left out at each end (the clients starting and draining).
const EDGE: usize = 5;

/// How long, of the windows between the edges, completions ran below a fifth of the phase's
/// median rate; `ends` are when each request completed, from any fixed origin.
pub fn stalled(ends: &[Duration]) -> Duration {
    let (Some(first), Some(last)) = (ends.iter().min(), ends.iter().max()) else {
        return Duration::ZERO;
    };
    let window = WINDOW.as_micros();
    let count = ((*last - *first).as_micros() / window) as usize + 1;
    let mut per_window = vec![0u32; count];
    for end in ends {
        per_window[((*end - *first).as_micros() / window) as usize] += 1;
    }
    if count <= 2 * EDGE {
        return Duration::ZERO;
    }
    let inner = &per_window[EDGE..count - EDGE];
    let mut sorted = inner.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let low = inner.iter().filter(|&&n| n * 5 < median).count() as u32;
    WINDOW * low
}
