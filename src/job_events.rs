//! One PostgreSQL listener for "a job ended" (`NOTIFY voidvm_job_done`, sent after the job's end
//! committed: see `crate::notifier`), fanned out in-process so that any number of
//! `/jobs/{id}/wait` calls share one connection.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub fn channel() -> broadcast::Sender<String> {
    broadcast::channel(1024).0
}

/// Relays job-end notifications until `shutdown` is cancelled.
pub async fn relay(pool: PgPool, sender: broadcast::Sender<String>, shutdown: CancellationToken) {
    tokio::select! {
        () = relay_forever(pool, sender) => {}
        () = shutdown.cancelled() => tracing::debug!("job-end listener stopped"),
    }
}

async fn relay_forever(pool: PgPool, sender: broadcast::Sender<String>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %crate::telemetry::chain(&e), "the job-end listener could not connect");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(crate::notifier::JOB_ENDED).await {
            tracing::error!(error = %crate::telemetry::chain(&e), "the job-end listener could not LISTEN");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(n) => {
                    let _ = sender.send(n.payload().to_string());
                }
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "the job-end listener lost its connection");
                    // Waiters re-read their job on a lag; tell them something may have ended.
                    let _ = sender.send(String::new());
                    break;
                }
            }
        }
    }
}
