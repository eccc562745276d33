//! pgbench as a harness's baseline: what PostgreSQL itself commits or reads on this machine, in
//! the same run, through its own C client, with no VoidVM code in the way.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One pgbench run: transactions per second and the latency of each transaction.
pub struct PgbenchRun {
    pub tps: f64,
    pub transactions: usize,
    pub p50: Duration,
    pub p99: Duration,
    /// WAL bytes per transaction, and how long commits stalled (`super::wal`).
    pub wal_per_transaction: f64,
    pub stalled: Duration,
}

/// Runs `script` (pgbench's script language) against `database` with `clients` connections for
/// `seconds`, prepared statements, no vacuum. Panics with pgbench's own words when it fails.
pub fn run(database: &str, script: &str, clients: usize, seconds: u64, work: &Path) -> PgbenchRun {
    std::fs::create_dir_all(work).expect("the pgbench work dir");
    let script_file = work.join("script.sql");
    std::fs::write(&script_file, script).expect("the pgbench script");
    let prefix = work.join("latency");
    for entry in std::fs::read_dir(work)
        .expect("the pgbench work dir")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("latency") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let wal_before = super::wal::bytes();
    let output = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
        ])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-l",
        ])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg("-f")
        .arg(&script_file)
        .arg(database)
        .current_dir(work)
        // The server's sqlx pool talks to PostgreSQL in plain TCP (sqlx is built without TLS);
        // libpq would otherwise negotiate TLS with a server that offers it, and the baseline
        // would pay for encryption the server does not.
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap_or_else(|e| {
            panic!("pgbench could not be run ({e}); it comes with PostgreSQL's client packages")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pgbench failed: {stdout}\n{stderr}"
    );
    let wal = super::wal::bytes().saturating_sub(wal_before);
    let tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("pgbench printed no tps: {stdout}"));
    let mut latencies = Vec::new();
    let mut ends = Vec::new();
    for entry in std::fs::read_dir(work).expect("the pgbench logs").flatten() {
        if !entry.file_name().to_string_lossy().starts_with("latency") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("a pgbench log");
        // client_id transaction_no time_us script_no time_epoch time_us_fraction
        for line in text.lines() {
            let fields: Option<Vec<u64>> =
                line.split_whitespace().map(|f| f.parse().ok()).collect();
            if let Some([_, _, took, _, epoch, micros, ..]) = fields.as_deref() {
                let (took, epoch, micros) = (*took, *epoch, *micros);
                latencies.push(Duration::from_micros(took));
                ends.push(Duration::from_secs(epoch) + Duration::from_micros(micros));
            }
        }
    }
    assert!(!latencies.is_empty(), "pgbench logged no transaction");
    let transactions = latencies.len();
    let (p50, p99) = super::percentiles(&mut latencies);
    PgbenchRun {
        tps,
        transactions,
        p50,
        p99,
        wal_per_transaction: wal as f64 / transactions as f64,
        stalled: super::wal::stalled(&ends),
    }
}
