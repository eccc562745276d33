//! The series read at scrape time rather than counted: VMs by status, jobs by kind and status
//! with a histogram of their durations (claimed to finished, read from the `jobs` rows, so it
//! holds every node's jobs and survives restarts), the queue (jobs queued), the relay's lag (VM
//! events not yet confirmed on NATS, counted), the webhook deliveries pending, and this node's
//! open WebSocket connections. The
//! database figures are of the whole database: every node reports the same ones, so aggregate
//! them with `max`, not `sum`. If the database does not answer, they are left out and
//! `voidvm_scrape_database_up` says 0.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::app::AppState;
use crate::store::system_stats::{self, JobCounts};
use crate::store::StoreError;
use crate::vm::VmStatus;

/// Upper bounds of the job duration buckets, in seconds.
pub const JOB_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// What one scrape read.
#[derive(Debug, Default)]
pub struct Figures {
    /// `None` when the database did not answer.
    database: Option<DatabaseFigures>,
    websockets: usize,
    /// Whether this node writes alone (and so may answer VM reads from memory).
    solo: bool,
    /// VM reads answered from memory and from the database.
    vm_reads: (u64, u64),
    /// The queries the reads from the database took.
    vm_read_queries: u64,
}

#[derive(Debug, Default)]
struct DatabaseFigures {
    /// Every status, 0 when no VM has it.
    vms: Vec<(&'static str, i64)>,
    jobs: Vec<JobCounts>,
    unrelayed: i64,
    webhooks_pending: i64,
}

impl Figures {
    /// Reads the figures for one scrape.
    pub async fn read(state: &AppState) -> Figures {
        let database = match read_database(state).await {
            Ok(figures) => Some(figures),
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "/metrics could not read the database");
                None
            }
        };
        Figures {
            database,
            websockets: state.ws_limits.open_total(),
            solo: state.solo.role() == crate::store::solo::Role::Solo,
            vm_reads: state.solo.cache().reads(),
            vm_read_queries: state.solo.cache().queries(),
        }
    }

    /// Appends these series in the Prometheus text format.
    pub fn encode(self, out: &mut String) -> std::fmt::Result {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        prometheus_client::encoding::prometheus_text::encode(out, &registry)
    }
}

async fn read_database(state: &AppState) -> Result<DatabaseFigures, StoreError> {
    let pool = &state.pool;
    let counted = system_stats::vms_by_status(pool).await?;
    let vms = VmStatus::ALL
        .into_iter()
        .map(|status| {
            let n = counted
                .iter()
                .filter(|(s, _)| s == status.as_str())
                .map(|(_, n)| *n)
                .sum();
            (status.as_str(), n)
        })
        .collect();
    Ok(DatabaseFigures {
        vms,
        jobs: system_stats::jobs(pool, &JOB_BUCKETS).await?,
        unrelayed: system_stats::unrelayed_events(pool, crate::bus::relay::OFFSET_NAME).await?,
        webhooks_pending: crate::store::deliveries::pending(pool).await?,
    })
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut encoder,
            "voidvm_websocket_connections",
            "WebSocket connections open on this node.",
            self.websockets as i64,
        )?;
        gauge(
            &mut encoder,
            "voidvm_node_writes_alone",
            "Whether this node is the only one writing to its database (1; it then answers VM reads from memory) or shares it (0).",
            i64::from(self.solo),
        )?;
        let mut reads = encoder.encode_descriptor(
            "voidvm_vm_reads",
            "Reads of one VM's row (GET /vms/{id} and others) by where they were answered from.",
            None,
            MetricType::Counter,
        )?;
        for (from, n) in [("memory", self.vm_reads.0), ("database", self.vm_reads.1)] {
            reads
                .encode_family(&[("from", from)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        encoder
            .encode_descriptor(
                "voidvm_vm_read_queries",
                "Queries that read VM rows for the reads answered from the database; reads that \
                 arrive together share one.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.vm_read_queries, None)?;
        gauge(
            &mut encoder,
            "voidvm_scrape_database_up",
            "Whether this scrape could read the database (1) or not (0; the database series are left out).",
            i64::from(self.database.is_some()),
        )?;
        let Some(db) = &self.database else {
            return Ok(());
        };
        let mut vms = encoder.encode_descriptor(
            "voidvm_vms",
            "Virtual machines by status (deleted ones included), from the VM list.",
            None,
            MetricType::Gauge,
        )?;
        for (status, n) in &db.vms {
            let labels = [("status", *status)];
            vms.encode_family(&labels)?.encode_gauge(n)?;
        }
        // A family with no series yet (no job at all, none finished) is left out: strict
        // parsers refuse a HELP and a TYPE without a sample.
        if !db.jobs.is_empty() {
            let mut jobs = encoder.encode_descriptor(
                "voidvm_jobs",
                "Jobs by kind and status, from the jobs table.",
                None,
                MetricType::Gauge,
            )?;
            for job in &db.jobs {
                let labels = [("kind", job.kind.as_str()), ("status", job.status.as_str())];
                jobs.encode_family(&labels)?.encode_gauge(&job.jobs)?;
            }
        }
        if db.jobs.iter().any(|j| j.timed > 0) {
            let mut durations = encoder.encode_descriptor(
                "voidvm_job_duration_seconds",
                "How long jobs ran, from claimed to finished, by kind and outcome (read from the jobs table at scrape).",
                None,
                MetricType::Histogram,
            )?;
            for job in db.jobs.iter().filter(|j| j.timed > 0) {
                let labels = [("kind", job.kind.as_str()), ("status", job.status.as_str())];
                durations
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        job.seconds,
                        count(job.timed),
                        &buckets(&job.at_or_below),
                        None,
                    )?;
            }
        }
        let queued: i64 = db
            .jobs
            .iter()
            .filter(|j| j.status == "queued")
            .map(|j| j.jobs)
            .sum();
        gauge(
            &mut encoder,
            "voidvm_job_queue_depth",
            "Jobs queued, waiting for a worker.",
            queued,
        )?;
        gauge(
            &mut encoder,
            "voidvm_relay_lag_events",
            "VM events committed to the log but not yet confirmed on NATS by the relay.",
            db.unrelayed,
        )?;
        gauge(
            &mut encoder,
            "voidvm_webhook_deliveries_pending",
            "Webhook deliveries not yet accepted by their receiver (nor given up).",
            db.webhooks_pending,
        )
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    metric.encode_gauge(&value)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Cumulative counts at each bound as the per-bucket counts the encoder adds up.
fn buckets(at_or_below: &[i64]) -> Vec<(f64, u64)> {
    let mut previous = 0;
    JOB_BUCKETS
        .iter()
        .zip(at_or_below)
        .map(|(bound, n)| {
            let this = count(*n).saturating_sub(previous);
            previous = count(*n).max(previous);
            (*bound, this)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_counts_become_bucket_counts() {
        assert_eq!(
            buckets(&[1, 1, 3, 3, 4]),
            vec![(0.1, 1), (0.25, 0), (0.5, 2), (1.0, 0), (2.5, 1)]
        );
    }

    #[test]
    fn figures_render_every_series_and_the_histogram_is_cumulative() {
        let figures = Figures {
            database: Some(DatabaseFigures {
                vms: vec![("running", 2), ("stopped", 0)],
                jobs: vec![
                    JobCounts {
                        kind: "start".into(),
                        status: "succeeded".into(),
                        jobs: 3,
                        timed: 3,
                        seconds: 1.5,
                        at_or_below: vec![0, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
                    },
                    JobCounts {
                        kind: "stop".into(),
                        status: "queued".into(),
                        jobs: 2,
                        timed: 0,
                        seconds: 0.0,
                        at_or_below: vec![0; 13],
                    },
                ],
                unrelayed: 4,
                webhooks_pending: 7,
            }),
            websockets: 1,
            solo: true,
            vm_reads: (5, 2),
            vm_read_queries: 1,
        };
        let mut out = String::new();
        figures.encode(&mut out).unwrap();
        for line in [
            r#"voidvm_vms{status="running"} 2"#,
            r#"voidvm_jobs{kind="stop",status="queued"} 2"#,
            r#"voidvm_job_duration_seconds_bucket{kind="start",status="succeeded",le="0.25"} 1"#,
            r#"voidvm_job_duration_seconds_bucket{kind="start",status="succeeded",le="0.5"} 3"#,
            r#"voidvm_job_duration_seconds_bucket{kind="start",status="succeeded",le="+Inf"} 3"#,
            r#"voidvm_job_duration_seconds_count{kind="start",status="succeeded"} 3"#,
            "voidvm_job_queue_depth 2",
            "voidvm_relay_lag_events 4",
            "voidvm_webhook_deliveries_pending 7",
            "voidvm_websocket_connections 1",
            "voidvm_node_writes_alone 1",
            r#"voidvm_vm_reads_total{from="memory"} 5"#,
            r#"voidvm_vm_reads_total{from="database"} 2"#,
            "voidvm_vm_read_queries_total 1",
            "voidvm_scrape_database_up 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} is missing:\n{out}");
        }
    }
}
