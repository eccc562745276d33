//! PostgreSQL: the event log (our repository over sqlx), and the tables derived from it.

use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub mod accounts;
pub mod append;
pub mod audit;
pub mod batches;
pub mod cloud_init;
pub mod conditions;
pub mod deliveries;
pub mod event_store;
pub mod feed;
pub mod idempotency;
pub mod images;
pub mod jobs;
pub mod load_batch;
pub mod log_identity;
pub mod metadata;
pub mod ports;
pub mod quota;
pub mod record;
pub mod record_batch;
pub mod repository;
pub mod solo;
pub mod system_samples;
pub mod system_stats;
pub mod upcasters;
pub mod users;
pub mod visible;
pub mod vm_cache;
pub mod vm_reads;
pub mod vm_view;
pub mod warm;
pub mod webhooks;

pub use event_store::{VmEventStore, VmState};
pub use metadata::{CommandMeta, EventMetadata, Via};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached; a retry may work.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another writer changed the same stream first.
    #[error("another change to the same virtual machine was recorded first")]
    Conflict,
    /// The owner already has a VM of that name; nothing was recorded.
    #[error("the owner already has a virtual machine named '{name}'")]
    NameTaken { name: String },
    /// Another VM holds a host port this VM's network forwards; nothing was recorded.
    #[error("host port {port}/{} is forwarded to another virtual machine", .protocol.as_str())]
    PortTaken {
        protocol: crate::vm::Protocol,
        port: u16,
    },
    /// A cancel found its job no longer queued (a worker took it); nothing was recorded.
    #[error("job {job_id} is {status}")]
    JobNotQueued { job_id: String, status: String },
    /// The user's idempotency key was taken by another request first; nothing was recorded.
    #[error("the idempotency key was already used")]
    KeyTaken,
    /// The change would take its owner past a quota; nothing was recorded.
    #[error("{0}")]
    QuotaExceeded(QuotaExceeded),
    /// The VM's image was deleted before the VM's creation committed; nothing was recorded.
    #[error("the image '{0}' was deleted")]
    ImageGone(String),
    /// The VM's owner (a new VM's creator, or the user it is handed to) was deleted before the
    /// change committed; nothing was recorded.
    #[error("user {0} was deleted")]
    OwnerGone(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Which quota a change would exceed, its limit, what the owner uses and what the change adds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The {resource} quota is {limit}{unit}: {used}{unit} in use, and this asks for {requested}{unit} more.", unit = resource.unit())]
pub struct QuotaExceeded {
    pub resource: crate::accounts::QuotaResource,
    pub limit: u64,
    pub used: u64,
    pub requested: u64,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
            other => StoreError::Unexpected(anyhow::Error::new(other).context("a query failed")),
        }
    }
}

/// `pool.begin()`, safe to cancel. sqlx 0.8 counts a transaction as begun only once `BEGIN`'s
/// answer is read; a future dropped between sending `BEGIN` and reading the answer (an HTTP
/// handler whose client went away) returns its connection to the pool inside an open
/// transaction that nothing ends. Every later statement on that connection, such as a command's
/// single-statement commit, then stays uncommitted and holds its locks. Here `BEGIN` runs in a
/// task of its own that always finishes, so a transaction nobody takes is rolled back as any
/// dropped transaction is.
pub async fn begin(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| {
            StoreError::Unexpected(anyhow::Error::new(e).context("a transaction could not begin"))
        })?
        .map_err(StoreError::from)
}

/// The fewest connections a node works with: two for its own pool's work, two for its HTTP
/// workers.
pub const MIN_CONNECTIONS: u32 = 4;

/// The node's `LISTEN` connections (the relay, the webhook dispatcher, the job workers, the auth
/// cache, the job-end waiters). sqlx's `PgListener` keeps one connection of the pool it is made
/// from for good, so the node's pool holds these on top of its share of the work.
pub const LISTENERS: u32 = 5;

/// Connections a node holds outside its pools: the relay's and the webhook dispatcher's leader
/// locks, and the solo-writer lock.
pub const LOCK_CONNECTIONS: u32 = 3;

/// How a node's `database_connections` are shared. By default (32) a node holds at most 40 of
/// PostgreSQL's default 100 connections with its listeners and locks, leaving room for a second
/// node, or for pgbench's 64 clients measuring the database beside it. Commands go through the
/// node's own pool (the actors'); the HTTP workers' connections serve reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// The node's own pool: the VM actors, the job workers, the background loops and the
    /// [`LISTENERS`].
    pub node: u32,
    /// Each HTTP worker's pool.
    pub per_http_worker: u32,
}

impl ConnectionBudget {
    /// Half of `total` for the node's own pool's work (its listeners come on top), the rest
    /// shared by `http_workers` (at least one each, so a node with more HTTP workers than
    /// connections holds a few more than `total`).
    pub fn new(total: u32, http_workers: usize) -> ConnectionBudget {
        let total = total.max(MIN_CONNECTIONS);
        let work = total / 2;
        let workers = u32::try_from(http_workers.max(1)).unwrap_or(u32::MAX);
        ConnectionBudget {
            node: work + LISTENERS,
            per_http_worker: ((total - work) / workers).max(1),
        }
    }

    /// Every connection the node may hold with `http_workers` HTTP workers, its listeners and
    /// its locks included.
    pub fn most(&self, http_workers: usize) -> u32 {
        let workers = u32::try_from(http_workers).unwrap_or(u32::MAX);
        self.node + self.per_http_worker.saturating_mul(workers) + LOCK_CONNECTIONS
    }
}

/// An HTTP worker's own pool, opened lazily: its connections are made on first use, by the
/// worker's own runtime (see `app::AppState`). One idle for a minute is closed.
pub fn worker_pool(options: sqlx::postgres::PgConnectOptions, max: u32) -> PgPool {
    pool_options()
        .max_connections(max)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options)
}

/// How long a pooled connection may sit idle before it is checked (a round trip) on its way out.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The pool's options: a connection that has been idle for a while is pinged before it is handed
/// out (one that broke while idle, e.g. across a PostgreSQL restart, is replaced), but one in
/// steady use is not: sqlx's default pings on every acquire, a round trip before every query.
pub fn pool_options() -> PgPoolOptions {
    use sqlx::Connection;
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Connects (creating the database when it does not exist yet) and applies `migrations/`; the
/// pool holds at most `max` connections.
pub async fn connect_and_migrate(url: &str, max: u32) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    if !sqlx::Postgres::database_exists(url)
        .await
        .context("PostgreSQL could not be reached to check that the database exists")?
    {
        sqlx::Postgres::create_database(url)
            .await
            .context("the database could not be created")?;
    }
    let pool = pool_options()
        .max_connections(max)
        .connect(url)
        .await
        .context("PostgreSQL refused the connection")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("the migrations could not be applied")?;
    visible::check_positions_ahead(&pool).await?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_connections_are_the_nodes_and_the_rest_the_http_workers() {
        let default = ConnectionBudget::new(32, 2);
        assert_eq!((default.node, default.per_http_worker), (16 + LISTENERS, 8));
        assert_eq!(default.most(2), 16 + LISTENERS + 16 + LOCK_CONNECTIONS);
        let odd = ConnectionBudget::new(9, 2);
        assert_eq!((odd.node, odd.per_http_worker), (4 + LISTENERS, 2));
    }

    #[test]
    fn each_http_worker_gets_one_at_least_and_the_node_two() {
        let many = ConnectionBudget::new(8, 64);
        assert_eq!((many.node, many.per_http_worker), (4 + LISTENERS, 1));
        let too_few = ConnectionBudget::new(0, 1);
        assert_eq!((too_few.node, too_few.per_http_worker), (2 + LISTENERS, 2));
    }
}
