//! `voidvm jobs ...`, and [`follow`]: waiting for a job with progress on stderr, which every
//! `--wait` uses.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::args::JobsCommand;
use super::client::{CliError, CliResult, Client};
use super::output::{Column, Output};

pub const JOB_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("VM", "/vmId"),
    ("KIND", "/kind"),
    ("STATUS", "/status"),
    ("ATTEMPT", "/attempt"),
    ("CREATED", "/createdAt"),
    ("FINISHED", "/finishedAt"),
    ("ERROR", "/error"),
];

/// Each long poll asks the server to hold the request at most this long, so a status change
/// (queued → running) shows within it.
const POLL: Duration = Duration::from_secs(5);

pub async fn run(client: &Client, out: Output, command: Option<JobsCommand>) -> CliResult<()> {
    let command = command.unwrap_or(JobsCommand::List {
        status: None,
        vm: None,
        page: 1,
        limit: 20,
    });
    match command {
        JobsCommand::List {
            status,
            vm,
            page,
            limit,
        } => {
            let mut query = vec![("page", page.to_string()), ("limit", limit.to_string())];
            query.extend(status.map(|s| ("status", s)));
            query.extend(vm.map(|v| ("vmId", v)));
            let data = client.get("/jobs", &query).await?;
            out.list(&data, items(&data), JOB_COLUMNS)
        }
        JobsCommand::Get { id } => {
            let data = client.get(&format!("/jobs/{}", seg(&id)), &[]).await?;
            out.object(&data, JOB_COLUMNS)
        }
        JobsCommand::Wait { id, timeout } => {
            let job = follow(client, &id, Duration::from_secs(timeout)).await?;
            out.object(&job, JOB_COLUMNS)
        }
        JobsCommand::Cancel { id } => {
            let data = client
                .post(&format!("/jobs/{}/cancel", seg(&id)), None)
                .await?;
            out.done(&data, &format!("Cancelled job {id}."))
        }
    }
}

/// A page's `items` (empty when absent).
pub fn items(data: &Value) -> &[Value] {
    data["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A path segment, percent-encoded.
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Waits for job `id` to end, printing each status it passes through to stderr; answers the
/// ended job if it succeeded, else [`CliError::JobFailed`].
pub async fn follow(client: &Client, id: &str, limit: Duration) -> CliResult<Value> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let poll = left.min(POLL);
        let job = client
            .get_long(
                &format!("/jobs/{}/wait", seg(id)),
                &[("timeout", poll.as_secs().max(1).to_string())],
                poll,
            )
            .await?;
        let status = job["status"].as_str().unwrap_or("?").to_string();
        if status != last {
            eprintln!(
                "job {id} ({}): {status} [{:.1}s]",
                job["kind"].as_str().unwrap_or("?"),
                started.elapsed().as_secs_f64()
            );
            last = status;
        }
        if job["finished"] == Value::Bool(true) {
            return match last.as_str() {
                "succeeded" => Ok(job),
                other => Err(CliError::JobFailed {
                    id: id.to_string(),
                    outcome: match job["error"].as_str() {
                        Some(e) => format!("ended {other}: {e}"),
                        None => format!("ended {other}"),
                    },
                }),
            };
        }
        if started.elapsed() >= limit {
            return Err(CliError::JobFailed {
                id: id.to_string(),
                outcome: format!(
                    "did not end within {} s (it is {last}; `voidvm jobs wait {id}` follows it further)",
                    limit.as_secs()
                ),
            });
        }
    }
}
